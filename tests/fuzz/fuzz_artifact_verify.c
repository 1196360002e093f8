/*
 * fuzz_artifact_verify.c: libFuzzer target for kw_artifact_verify()
 * (client/artifact.c), the offline check of an artifact signature. Its
 * signature document and key set come from wherever the artifact was
 * downloaded: both are untrusted.
 *
 * The input is the signature document, a newline, then the key set (the
 * rest of the input). keywardd writes both as one compact line, so a seed
 * is the two answers, one per line; a newline is whitespace to JSON, so
 * the split keeps nothing from the parser but a newline in the signature
 * document. A NUL ends either part early, as it would for a C caller.
 *
 * The artifact is a fixed file, written once to a temporary directory.
 * The valid seeds in corpus/artifact_verify/ sign exactly its bytes
 * (tests/fuzz/make_artifact_corpus.py, which holds the same ARTIFACT), so
 * that the fuzzer starts on the path of a signature that verifies.
 *
 * Checked on every input: the result is one of the documented codes (the
 * artifact is always readable: never KW_ERR_IO), err is a terminated
 * sentence whenever the result is not KW_OK, and a signature accepted is
 * one of the artifact's digest with alg ES256.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyward.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The artifact every valid seed signs; make_artifact_corpus.py has the
 * same bytes. */
static const char ARTIFACT[] =
    "keyward artifact_verify fuzz target: the signed artifact\n";

static char dir[PATH_MAX] = "";
/* dir and "/artifact": room for any dir (gcc -O3 checks the bound). */
static char path[PATH_MAX + sizeof "/artifact"] = "";
static char digest[7 + 64 + 1]; /* "sha256:<hex>" of ARTIFACT */

static void
check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr,
		    "fuzz_artifact_verify: invariant violated: %s\n", what);
		abort();
	}
}

static void
cleanup(void)
{
	if (path[0] != '\0')
		unlink(path);
	if (dir[0] != '\0')
		rmdir(dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char hex[] = "0123456789abcdef";
	const char *tmp = getenv("TMPDIR");
	unsigned char md[32];
	FILE *f;

	(void)argc;
	(void)argv;
	if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > PATH_MAX / 2)
		tmp = "/tmp";
	snprintf(dir, sizeof dir, "%s/kw-fuzz-artifact.XXXXXX", tmp);
	check(mkdtemp(dir) != NULL, "a temporary directory");
	snprintf(path, sizeof path, "%s/artifact", dir);
	atexit(cleanup);
	f = fopen(path, "wbx");
	check(f != NULL &&
	        fwrite(ARTIFACT, 1, sizeof ARTIFACT - 1, f) ==
	            sizeof ARTIFACT - 1 &&
	        fclose(f) == 0,
	    "the artifact written");
	check(EVP_Digest(ARTIFACT, sizeof ARTIFACT - 1, md, NULL, EVP_sha256(),
	          NULL) == 1,
	    "SHA-256 of the artifact");
	memcpy(digest, "sha256:", 7);
	for (size_t i = 0; i < sizeof md; i++) {
		digest[7 + 2 * i] = hex[md[i] >> 4];
		digest[7 + 2 * i + 1] = hex[md[i] & 15];
	}
	digest[sizeof digest - 1] = '\0';
	return 0;
}

static void
check_accepted(const char *sig)
{
	json_t *root = json_loads(sig, JSON_REJECT_DUPLICATES, NULL);
	const char *d = json_string_value(json_object_get(root, "digest"));
	const char *alg = json_string_value(json_object_get(root, "alg"));

	check(d != NULL && strcmp(d, digest) == 0,
	    "an accepted signature is one of the artifact's digest");
	check(alg != NULL && strcmp(alg, "ES256") == 0,
	    "an accepted signature is ES256");
	json_decref(root);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t siglen = nl != NULL ? (size_t)(nl - data) : size;
	char *sig, *keys, err[256];
	int rc;

	sig = strndup((const char *)data, siglen);
	keys = nl != NULL ? strndup((const char *)nl + 1, size - siglen - 1)
	                  : strdup("");
	if (sig == NULL || keys == NULL) {
		free(sig);
		free(keys);
		return 0;
	}
	memset(err, 'x', sizeof err);
	rc = kw_artifact_verify(path, sig, keys, err, sizeof err);
	check(rc == KW_OK || rc == KW_ERR_AUTH || rc == KW_ERR_INVALID ||
	        rc == KW_ERR_CRYPTO || rc == KW_ERR_NOMEM,
	    "a documented result (and never KW_ERR_IO)");
	check(memchr(err, '\0', sizeof err) != NULL, "err is terminated");
	check(rc == KW_OK || err[0] != '\0', "a failure says why");
	if (rc == KW_OK)
		check_accepted(sig);
	free(sig);
	free(keys);
	return 0;
}

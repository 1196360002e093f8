/*
 * fuzz_request.c: libFuzzer target for kwd_req_parse().
 *
 * The first input byte selects the kind (modulo the number of kinds), the
 * rest is the body, exactly as the front hands it over (not
 * NUL-terminated). An accepted request must hold request.h's guarantees;
 * a refused one must leave the output untouched and explain itself. A
 * violation aborts, which the fuzzer reports as a crash.
 *
 * Built with -fsanitize=fuzzer (KW_FUZZ=ON) or with tests/fuzz/replay.c
 * (any compiler) to replay the corpus.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "name.h"
#include "request.h"
#include "store.h"

#define NKINDS 10

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_request: invariant violated: %s\n", what);
		abort();
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int fd;

	(void)argc;
	(void)argv;
	fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (fd >= 0)
		kw_log_set_fd(fd);
	return 0;
}

/* A NUL within cap bytes, and the string before it no longer than max. */
static size_t
bounded(const char *s, size_t cap, size_t max, const char *what)
{
	const char *nul = memchr(s, '\0', cap);

	check(nul != NULL, what);
	check((size_t)(nul - s) <= max, what);
	return (size_t)(nul - s);
}

static void
check_ctx(const struct kwd_req *r)
{
	struct kwd_ctx_pair pairs[KWD_CTX_MAX_PAIRS];

	check(r->nctx <= KWD_CTX_MAX_PAIRS, "nctx <= 32");
	check(kwd_req_ctx(r, pairs) == r->nctx, "kwd_req_ctx count");
	for (size_t i = 0; i < r->nctx; i++) {
		size_t klen = bounded(r->ctx_key[i], sizeof r->ctx_key[i],
		    KWD_REQ_CTX_KEY_MAX, "context key bounded");
		size_t vlen = bounded(r->ctx_val[i], sizeof r->ctx_val[i],
		    KWD_REQ_CTX_VAL_MAX, "context value bounded");
		const unsigned char *v = (const unsigned char *)r->ctx_val[i];

		check(klen >= 1, "context key not empty");
		check(r->ctx_key[i][0] >= 'a' && r->ctx_key[i][0] <= 'z',
		    "context key starts with a-z");
		for (size_t k = 0; k < klen; k++) {
			char c = r->ctx_key[i][k];

			check((c >= 'a' && c <= 'z') ||
			        (c >= '0' && c <= '9') || c == '_' ||
			        c == '.' || c == '-',
			    "context key alphabet");
		}
		for (size_t k = 0; k < vlen; k++)
			check(v[k] >= 0x20 && v[k] != 0x7f,
			    "context value without control bytes");
		for (size_t j = 0; j < i; j++)
			check(strcmp(r->ctx_key[i], r->ctx_key[j]) != 0,
			    "context keys unique");
		check(pairs[i].key == r->ctx_key[i] &&
		        pairs[i].value == r->ctx_val[i],
		    "kwd_req_ctx pairs point into the request");
	}
}

static void
check_req(enum kwd_req_kind kind, const struct kwd_req *r)
{
	size_t nlen =
	    bounded(r->name, sizeof r->name, KW_NAME_MAX, "name bounded");

	check(r->wrapped_len <= KWD_BLOB_MAX, "wrapped_len <= KWD_BLOB_MAX");
	check(r->rotation_period == UINT64_MAX ||
	        r->rotation_period <= 315360000ULL,
	    "rotation_period in range");
	check(r->state == -1 || r->state == KWD_KEY_DECRYPT_ONLY ||
	        r->state == KWD_KEY_DISABLED,
	    "state -1, decrypt-only or disabled");
	check_ctx(r);
	switch (kind) {
	case KWD_REQ_KEY_CREATE:
		check(kw_name_valid(r->name), "create: canonical name");
		check(r->state == -1 && r->version == 0 &&
		        r->min_decrypt_version == 0 && r->nctx == 0 &&
		        r->wrapped_len == 0,
		    "create: only name and rotation_period");
		break;
	case KWD_REQ_KEY_PATCH:
		check(nlen == 0, "patch: no name");
		check((r->state >= 0) == (r->version != 0),
		    "patch: state and version together");
		check(r->min_decrypt_version != 0 || r->version != 0 ||
		        r->rotation_period != UINT64_MAX,
		    "patch: at least one change");
		check(r->nctx == 0 && r->wrapped_len == 0,
		    "patch: no context or blob");
		break;
	case KWD_REQ_EMPTY:
		check(nlen == 0 && r->state == -1 && r->version == 0 &&
		        r->min_decrypt_version == 0 &&
		        r->rotation_period == UINT64_MAX && r->nctx == 0 &&
		        r->wrapped_len == 0,
		    "empty: nothing set");
		break;
	case KWD_REQ_DATAKEY:
		check(nlen == 0 && r->wrapped_len == 0,
		    "datakey: context only");
		break;
	case KWD_REQ_UNWRAP:
		check(r->wrapped_len >= 1, "unwrap: a blob");
		check(nlen == 0, "unwrap: no name");
		break;
	case KWD_REQ_TOKEN:
		check(r->audience[0] != '\0', "token: an audience");
		check(r->nscopes >= 1 && r->nscopes <= KWD_REQ_SCOPES_MAX,
		    "token: 1 to 32 scopes");
		for (size_t i = 0; i < r->nscopes; i++) {
			check(memchr(r->scopes[i], '\0', sizeof r->scopes[i]) !=
			        NULL,
			    "token: scope terminated");
			check(strchr(r->scopes[i], '*') == NULL,
			    "token: no glob in a requested scope");
			for (size_t j = 0; j < i; j++)
				check(strcmp(r->scopes[i], r->scopes[j]) != 0,
				    "token: scopes unique");
		}
		check(r->ttl <= KWD_REQ_TTL_MAX, "token: ttl in range");
		check(nlen == 0 && r->nctx == 0 && r->wrapped_len == 0,
		    "token: nothing else");
		break;
	case KWD_REQ_REVOKE:
		check((r->jti[0] != '\0') != (r->sub[0] != '\0'),
		    "revoke: one of jti and sub");
		check(strlen(r->jti) == 0 ||
		        (strlen(r->jti) >= 16 && strlen(r->jti) <= 64),
		    "revoke: jti length");
		check(memchr(r->sub, '\0', sizeof r->sub) != NULL,
		    "revoke: sub terminated");
		break;
	case KWD_REQ_CERT:
		check(r->csr[0] != '\0' &&
		        memchr(r->csr, '\0', sizeof r->csr) != NULL,
		    "cert: a terminated CSR");
		check(r->ttl <= 7 * 24 * 3600, "cert: ttl in range");
		break;
	case KWD_REQ_SIGN:
		check(kw_name_valid(r->name), "sign: a canonical key name");
		check(r->nctx == 0 && r->wrapped_len == 0,
		    "sign: nothing else");
		break;
	case KWD_REQ_INTROSPECT:
		check(r->token[0] != '\0' &&
		        memchr(r->token, '\0', sizeof r->token) != NULL,
		    "introspect: a terminated token");
		for (const char *p = r->token; *p; p++)
			check((*p >= 'A' && *p <= 'Z') ||
			        (*p >= 'a' && *p <= 'z') ||
			        (*p >= '0' && *p <= '9') || *p == '-' ||
			        *p == '_' || *p == '.',
			    "introspect: base64url and dots");
		break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct kwd_req req, before;
	enum kwd_req_kind kind;
	char err[256];
	int rv;

	if (size == 0)
		return 0;
	kind = (enum kwd_req_kind)(data[0] % NKINDS);
	memset(&req, 0x5a, sizeof req);
	memcpy(&before, &req, sizeof req);
	memset(err, 0, sizeof err);
	rv = kwd_req_parse(kind, (const char *)data + 1, size - 1, &req, err,
	    sizeof err);
	if (rv == KW_OK) {
		check_req(kind, &req);
		return 0;
	}
	check(rv == KW_ERR_INVALID || rv == KW_ERR_TOO_LARGE ||
	        rv == KW_ERR_NOMEM,
	    "failure is INVALID, TOO_LARGE or NOMEM");
	check(memcmp(&req, &before, sizeof req) == 0,
	    "a refused request leaves the output untouched");
	check(memchr(err, '\0', sizeof err) != NULL, "error NUL-terminated");
	if (rv == KW_ERR_INVALID) {
		check(err[0] != '\0', "KW_ERR_INVALID explains itself");
		/* Client-facing text: printable ASCII only. */
		for (const char *p = err; *p; p++)
			check(*p >= 0x20 && *p < 0x7f,
			    "error text printable ASCII");
	}
	return 0;
}

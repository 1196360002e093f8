/*
 * fuzz_p11_token.c: libFuzzer target for kwd_p11_parse_token(), the check
 * of pkcs11.token (a plain label or an RFC 7512 URI, parsed by p11-kit).
 *
 * The input becomes a NUL-terminated string in a heap buffer of exactly
 * size + 1 bytes (so ASan catches any read past the terminator); an input
 * with an embedded NUL is cut there, as a C string would be.
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
#include "p11.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_p11_token: invariant violated: %s\n",
		    what);
		abort();
	}
}

static void
silence_logs(void)
{
	static int done;
	int fd;

	if (done)
		return;
	done = 1;
	fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (fd >= 0)
		kw_log_set_fd(fd);
	kw_log_set_level(KW_LOG_DEBUG);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	silence_logs();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *sel;
	size_t len;
	int rv;

	silence_logs();
	sel = malloc(size + 1);
	if (sel == NULL)
		return 0;
	if (size > 0)
		memcpy(sel, data, size);
	sel[size] = '\0';
	len = strlen(sel);
	rv = kwd_p11_parse_token(sel);
	check(rv == KW_OK || rv == KW_ERR_CONFIG || rv == KW_ERR_NOMEM,
	    "result is KW_OK, KW_ERR_CONFIG or KW_ERR_NOMEM");
	/* A plain label (no "pkcs11:" scheme) is accepted iff it has 1 to 32
	 * bytes (CK_TOKEN_INFO.label). */
	if (strncmp(sel, "pkcs11:", 7) != 0 && rv != KW_ERR_NOMEM)
		check((rv == KW_OK) == (len >= 1 && len <= 32),
		    "plain label accepted iff 1..32 bytes");
	free(sel);
	return 0;
}

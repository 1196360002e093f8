/*
 * fuzz_config.c: libFuzzer target for kwd_config_parse().
 *
 * Every input is parsed with an error buffer and the result is freed, so
 * ASan/LSan see the whole life cycle. An accepted configuration must hold
 * the schema's guarantees (docs/CONFIG.md, broker/config.h); a violation
 * is a bug and aborts, which the fuzzer reports as a crash.
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

#include "config.h"
#include "log.h"

#define STR_LIMIT 4096 /* config.c's STR_MAX */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_config: invariant violated: %s\n", what);
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
	/* Keep the log code running (it escapes hostile strings: worth
	 * fuzzing too) but send its lines nowhere. */
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

static void
check_path(const char *p, const char *what)
{
	if (p == NULL)
		return;
	check(p[0] == '/', what);
	check(strlen(p) <= STR_LIMIT, what);
}

static void
check_env_name(const char *s, const char *what)
{
	check(s != NULL && s[0] != '\0', what);
	for (const char *c = s; *c; c++)
		check((*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
		        *c == '_',
		    what);
	check(!(s[0] >= '0' && s[0] <= '9'), what);
	check(strncmp(s, "LD_", 3) != 0 && strncmp(s, "GLIBC_", 6) != 0, what);
}

static void
check_config(const struct kwd_config *c)
{
	int tls_set;

	check((c->p11.pin_file == NULL) != (c->p11.pin_env == NULL),
	    "exactly one of pkcs11.pin_file / pkcs11.pin_env");
	check(c->p11.module != NULL, "pkcs11.module set");
	check(c->p11.token != NULL && c->p11.token[0] != '\0',
	    "pkcs11.token set");
	check_path(c->p11.module, "pkcs11.module absolute");
	check_path(c->p11.pin_file, "pkcs11.pin_file absolute");
	check_path(c->tls_cert, "tls.cert absolute");
	check_path(c->tls_key, "tls.key absolute");
	check_path(c->tls_client_ca, "tls.client_ca absolute");
	check_path(c->database, "database absolute");
	check_path(c->policy, "policy absolute");
	check_path(c->audit_log, "audit_log absolute");
	if (c->p11.pin_env != NULL)
		check_env_name(c->p11.pin_env, "pkcs11.pin_env allowed name");
	/* The tls object's three fields are all required. */
	tls_set = (c->tls_cert != NULL) + (c->tls_key != NULL) +
	    (c->tls_client_ca != NULL);
	check(tls_set == 0 || tls_set == 3, "tls: all of cert/key/client_ca");
	check(c->p11_nenv <= KWD_CONFIG_MAX_ENV, "p11_nenv <= MAX_ENV");
	for (size_t i = 0; i < c->p11_nenv && i < KWD_CONFIG_MAX_ENV; i++) {
		check_env_name(c->p11_env_names[i], "pkcs11.env allowed name");
		check(c->p11_env_values[i] != NULL, "pkcs11.env value set");
		check(strlen(c->p11_env_values[i]) <= STR_LIMIT,
		    "pkcs11.env value length");
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kwd_config *cfg = NULL;
	char err[256];
	int rv;

	silence_logs();
	memset(err, 0, sizeof err);
	rv = kwd_config_parse((const char *)data, size, &cfg, err, sizeof err);
	if (rv == KW_OK) {
		check(cfg != NULL, "KW_OK returns a configuration");
		check_config(cfg);
	} else {
		check(cfg == NULL, "a failure returns no configuration");
		check(rv == KW_ERR_CONFIG || rv == KW_ERR_NOMEM,
		    "failure is KW_ERR_CONFIG or KW_ERR_NOMEM");
		if (rv == KW_ERR_CONFIG)
			check(err[0] != '\0', "KW_ERR_CONFIG explains itself");
		check(memchr(err, '\0', sizeof err) != NULL,
		    "error message NUL-terminated");
	}
	kwd_config_free(cfg);
	return 0;
}

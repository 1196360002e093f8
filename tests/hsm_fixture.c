/*
 * hsm_fixture.c: see hsm_fixture.h.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "hsm_fixture.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "secret.h"

void
kwt_write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void
random_pin(const char *path)
{
	unsigned char raw[16];
	char hex[33];

	randombytes_buf(raw, sizeof raw);
	sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
	hex[32] = '\n';
	kwt_write_file(path, hex, 33);
	sodium_memzero(hex, sizeof hex);
}

bool
kwt_token_make(struct kwt_token *t, bool faulty)
{
	struct kw_secret *so = NULL, *user = NULL;
	const char *softhsm = getenv("KW_SOFTHSM_MODULE");
	const char *fault = getenv("KW_FAULT_MODULE");
	char buf[PATH_MAX + 128], tokens[PATH_MAX + 8];
	unsigned char r[4];

	memset(t, 0, sizeof *t);
	if (softhsm == NULL)
		softhsm = "/usr/lib/softhsm/libsofthsm2.so";
	if (access(softhsm, R_OK) != 0) {
		fprintf(stderr,
		    "SKIP: SoftHSMv2 module %s not found "
		    "(apt-get install softhsm2)\n",
		    softhsm);
		return false;
	}
	if (faulty && (fault == NULL || access(fault, R_OK) != 0)) {
		fprintf(stderr,
		    "SKIP: fault module not found (KW_FAULT_MODULE "
		    "unset or missing)\n");
		return false;
	}
	assert_int_equal(kw_secure_init(0), KW_OK);
	snprintf(t->dir, sizeof t->dir, "/tmp/kwtest.XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(tokens, sizeof tokens, "%s/tokens", t->dir);
	assert_int_equal(mkdir(tokens, 0700), 0);
	snprintf(t->conf, sizeof t->conf, "%s/softhsm2.conf", t->dir);
	snprintf(buf, sizeof buf,
	    "directories.tokendir = %s\nobjectstore.backend = file\n"
	    "log.level = ERROR\nslots.removable = false\n",
	    tokens);
	kwt_write_file(t->conf, buf, strlen(buf));
	assert_int_equal(setenv("SOFTHSM2_CONF", t->conf, 1), 0);
	snprintf(t->pin_path, sizeof t->pin_path, "%s/pin", t->dir);
	snprintf(t->so_pin_path, sizeof t->so_pin_path, "%s/so-pin", t->dir);
	random_pin(t->pin_path);
	random_pin(t->so_pin_path);
	randombytes_buf(r, sizeof r);
	snprintf(t->label, sizeof t->label, "kwtest-%02x%02x%02x%02x", r[0],
	    r[1], r[2], r[3]);
	snprintf(t->selector, sizeof t->selector, "pkcs11:token=%s", t->label);
	snprintf(t->softhsm, sizeof t->softhsm, "%s", softhsm);
	snprintf(t->module, sizeof t->module, "%s", faulty ? fault : softhsm);
	t->faulty = faulty;
	if (faulty) {
		snprintf(t->fault_file, sizeof t->fault_file, "%s/fault",
		    t->dir);
		assert_int_equal(setenv("KWFAULT_FILE", t->fault_file, 1), 0);
		assert_int_equal(setenv("KWFAULT_MODULE", softhsm, 1), 0);
		unsetenv("KWFAULT_FUNC");
	}
	assert_int_equal(kw_secret_read_file(t->so_pin_path, 64, &so), KW_OK);
	assert_int_equal(kw_secret_read_file(t->pin_path, 64, &user), KW_OK);
	assert_int_equal(kwd_p11_token_init(softhsm, t->selector, so, user),
	    KW_OK);
	kw_secret_free(so);
	kw_secret_free(user);
	return true;
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void
kwt_token_remove(struct kwt_token *t)
{
	if (t->dir[0] != '\0')
		nftw(t->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	t->dir[0] = '\0';
}

void
kwt_config(const struct kwt_token *t, struct kwd_p11_config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->module = t->module;
	cfg->token = t->selector;
	cfg->pin_file = t->pin_path;
}

void
kwt_fault(struct kwt_token *t, const char *rule)
{
	char tmp[PATH_MAX + 8];

	assert_true(t->faulty);
	snprintf(tmp, sizeof tmp, "%s.new", t->fault_file);
	kwt_write_file(tmp, rule, strlen(rule));
	assert_int_equal(rename(tmp, t->fault_file), 0);
}

static void *
shim_sym(const struct kwt_token *t, const char *name)
{
	void *dl = dlopen(t->module, RTLD_NOW | RTLD_NOLOAD);
	void *sym;

	assert_non_null(dl);
	sym = dlsym(dl, name);
	dlclose(dl);
	assert_non_null(sym);
	return sym;
}

unsigned long
kwt_fault_calls(const struct kwt_token *t, const char *fn)
{
	unsigned long (*calls)(const char *);

	*(void **)&calls = shim_sym(t, "kwfault_calls");
	return calls(fn);
}

void
kwt_fault_reset_calls(const struct kwt_token *t)
{
	void (*reset)(void);

	*(void **)&reset = shim_sym(t, "kwfault_reset_calls");
	reset();
}

CK_FUNCTION_LIST_PTR
kwt_raw(const struct kwt_token *t)
{
	CK_RV (*gfl)(CK_FUNCTION_LIST_PTR_PTR);
	CK_FUNCTION_LIST_PTR f = NULL;
	void *dl = dlopen(t->softhsm, RTLD_NOW | RTLD_NOLOAD);

	assert_non_null(dl);
	*(void **)&gfl = dlsym(dl, "C_GetFunctionList");
	dlclose(dl);
	assert_non_null(gfl);
	assert_int_equal(gfl(&f), CKR_OK);
	return f;
}

/*
 * p11_bench.c: what keyward's PKCS#11 layer costs on top of the module.
 *
 * Two operations, each measured two ways in the same process against the
 * same loaded module, token and key objects:
 *
 *   direct  the module's own function list, doing per operation exactly
 *           the calls kwd_p11_gcm_seal / kwd_p11_ecdsa_sign make
 *           (kw_random_buf + C_EncryptInit(CKM_AES_GCM) + C_Encrypt;
 *           C_SignInit(CKM_ECDSA) + C_Sign), with the key handles found
 *           once before timing;
 *   layer   kwd_p11_gcm_seal and kwd_p11_ecdsa_sign through one worker.
 *
 * The difference is the layer's own work (handle cache lookup, state and
 * session checks). The machine is shared and noisy, so the two are
 * interleaved: every round runs both for the same fixed duration, the one
 * going first alternating between rounds, and the figure that matters is
 * the median of the per-round ratios layer/direct, which cancels the drift
 * that separate runs would not.
 *
 * Everything lives in a private temporary SoftHSM token directory,
 * removed at exit. Single-threaded on purpose: the question is the
 * per-call overhead, not how the module scales.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/evp.h>
#include <p11-kit/pkcs11.h>
#include <signal.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "p11.h"
#include "secret.h"

#ifndef KW_SOFTHSM_MODULE_DEFAULT
#define KW_SOFTHSM_MODULE_DEFAULT "/usr/lib/softhsm/libsofthsm2.so"
#endif

#define PROG "p11_bench"
#define TOKEN_LABEL "kw-bench"
#define KEY_NAME "bench"
#define KEY_VERSION 1
#define KEK_LABEL "kek/" KEY_NAME "/1"
#define SIG_LABEL "sig/" KEY_NAME "/1"

#define GOAL 0.90 /* layer/direct: reported, enforced only by --check */
#define PT_LEN 32 /* a wrapped data key */
#define AAD_LEN 16
#define BATCH 64 /* operations between two clock reads */
#define MAX_ROUNDS 1000
#define MAX_SECONDS 3600.0
#define WARMUP_SECONDS 0.25

/* Exit codes: 1 is kept for a missed goal under --check. */
#define EXIT_GOAL 1
#define EXIT_USAGE 2
#define EXIT_ERROR 3

struct bench {
	struct kwd_p11 *p11;
	struct kwd_p11_worker *w;
	/* The direct baseline: the same module, its own session. */
	void *dl;
	CK_FUNCTION_LIST_PTR f;
	CK_SESSION_HANDLE s;
	bool have_s;
	CK_OBJECT_HANDLE kek;
	CK_OBJECT_HANDLE sig;
	/* Inputs, the same for both sides. */
	unsigned char aad[AAD_LEN];
	unsigned char pt[PT_LEN];
	unsigned char digest[32];
	/* The first failure inside a timed loop, for the report. */
	char err[160];
};

typedef int (*op_fn)(struct bench *b);

enum op_kind { OP_GCM, OP_SIGN, OP_COUNT };

struct op_result {
	const char *name;
	double direct[MAX_ROUNDS];
	double layer[MAX_ROUNDS];
	double ratio[MAX_ROUNDS];
	bool layer_first[MAX_ROUNDS];
	double direct_med;
	double layer_med;
	double ratio_med;
	double ratio_min;
	double ratio_max;
	double overhead_us;
	bool pass;
};

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
	stop_signal = sig;
}

/* ---- the four measured operations ---- */

static int
direct_gcm(struct bench *b)
{
	unsigned char nonce[KWD_P11_NONCE_LEN];
	unsigned char out[PT_LEN + KWD_P11_TAG_LEN];
	CK_GCM_PARAMS gp;
	CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof gp};
	CK_ULONG olen = sizeof out;
	CK_RV r;

	/* What kwd_p11_gcm_seal does, call for call: the nonce draw is part
	 * of the cost of a seal, so the baseline pays it too. */
	kw_random_buf(nonce, sizeof nonce);
	gp.pIv = nonce;
	gp.ulIvLen = sizeof nonce;
	gp.ulIvBits = sizeof nonce * 8;
	gp.pAAD = b->aad;
	gp.ulAADLen = sizeof b->aad;
	gp.ulTagBits = KWD_P11_TAG_LEN * 8;
	r = b->f->C_EncryptInit(b->s, &m, b->kek);
	if (r != CKR_OK) {
		snprintf(b->err, sizeof b->err, "direct C_EncryptInit: %s",
		    kwd_p11_ckr_name(r));
		return -1;
	}
	r = b->f->C_Encrypt(b->s, b->pt, sizeof b->pt, out, &olen);
	if (r != CKR_OK || olen != sizeof out) {
		snprintf(b->err, sizeof b->err, "direct C_Encrypt: %s",
		    kwd_p11_ckr_name(r));
		return -1;
	}
	return 0;
}

static int
layer_gcm(struct bench *b)
{
	unsigned char nonce[KWD_P11_NONCE_LEN];
	unsigned char out[PT_LEN + KWD_P11_TAG_LEN];
	size_t olen;
	int rv;

	rv = kwd_p11_gcm_seal(b->w, KEY_NAME, KEY_VERSION, b->aad,
	    sizeof b->aad, b->pt, sizeof b->pt, nonce, out, sizeof out, &olen);
	if (rv != KW_OK) {
		snprintf(b->err, sizeof b->err, "kwd_p11_gcm_seal: %s",
		    kw_error_name(rv));
		return -1;
	}
	return 0;
}

static int
direct_sign(struct bench *b)
{
	CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
	unsigned char sig[64];
	CK_ULONG slen = sizeof sig;
	CK_RV r;

	r = b->f->C_SignInit(b->s, &m, b->sig);
	if (r != CKR_OK) {
		snprintf(b->err, sizeof b->err, "direct C_SignInit: %s",
		    kwd_p11_ckr_name(r));
		return -1;
	}
	r = b->f->C_Sign(b->s, b->digest, sizeof b->digest, sig, &slen);
	if (r != CKR_OK || slen != sizeof sig) {
		snprintf(b->err, sizeof b->err, "direct C_Sign: %s",
		    kwd_p11_ckr_name(r));
		return -1;
	}
	return 0;
}

static int
layer_sign(struct bench *b)
{
	unsigned char sig[64];
	int rv;

	rv = kwd_p11_ecdsa_sign(b->w, KEY_NAME, KEY_VERSION, b->digest, sig);
	if (rv != KW_OK) {
		snprintf(b->err, sizeof b->err, "kwd_p11_ecdsa_sign: %s",
		    kw_error_name(rv));
		return -1;
	}
	return 0;
}

/* ---- timing ---- */

static double
seconds_between(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) +
	    (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/*
 * Operations per second over a fixed duration. The clock is read once per
 * BATCH operations so that reading it costs nothing measurable next to a
 * PKCS#11 call; the duration overshoots by less than one batch, and the
 * rate uses the time really elapsed. Any failed operation ends the run:
 * a failing call is fast and would flatter whichever side it hit.
 */
static int
run_for(struct bench *b, op_fn fn, double secs, double *ret_rate)
{
	struct timespec t0, t1;
	uint64_t n = 0;
	double el;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		for (int i = 0; i < BATCH; i++)
			if (fn(b) != 0)
				return -1;
		n += BATCH;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		el = seconds_between(&t0, &t1);
		if (el >= secs)
			break;
		if (stop_signal != 0)
			return -1;
	}
	*ret_rate = (double)n / el;
	return 0;
}

static int
cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return (a > b) - (a < b);
}

static double
median(const double *v, int n)
{
	double s[MAX_ROUNDS];

	memcpy(s, v, (size_t)n * sizeof *v);
	qsort(s, (size_t)n, sizeof *s, cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static void
summarize(struct op_result *o, int rounds)
{
	o->direct_med = median(o->direct, rounds);
	o->layer_med = median(o->layer, rounds);
	o->ratio_med = median(o->ratio, rounds);
	o->ratio_min = o->ratio_max = o->ratio[0];
	for (int i = 1; i < rounds; i++) {
		if (o->ratio[i] < o->ratio_min)
			o->ratio_min = o->ratio[i];
		if (o->ratio[i] > o->ratio_max)
			o->ratio_max = o->ratio[i];
	}
	o->overhead_us = 1e6 / o->layer_med - 1e6 / o->direct_med;
	o->pass = o->ratio_med >= GOAL;
}

/* ---- setup: a private token ---- */

static int
write_private_file(const char *path, const void *data, size_t len)
{
	int fd;
	ssize_t n;

	/* O_EXCL in a directory only we can write: nobody can have planted
	 * a file or a link there first. */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd < 0)
		return -1;
	n = write(fd, data, len);
	if (close(fd) != 0 || n < 0 || (size_t)n != len)
		return -1;
	return 0;
}

/*
 * A random PIN as 32 hex characters in secure memory, and also in a 0600
 * file in the temporary directory (kwd_p11_open reads the user PIN from
 * there: never from argv, never from the environment).
 */
static int
make_pin(const char *dir, const char *fname, struct kw_secret **ret_pin)
{
	unsigned char raw[16];
	char path[PATH_MAX];
	struct kw_secret *pin = NULL;
	int rv;

	rv = kw_secret_new(2 * sizeof raw + 1, &pin);
	if (rv != KW_OK)
		return -1;
	randombytes_buf(raw, sizeof raw);
	sodium_bin2hex((char *)kw_secret_data(pin), kw_secret_len(pin), raw,
	    sizeof raw);
	kw_memzero(raw, sizeof raw);
	kw_secret_truncate(pin, 2 * sizeof raw);
	if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, fname) >=
	        sizeof path ||
	    write_private_file(path, kw_secret_data(pin), kw_secret_len(pin)) !=
	        0) {
		fprintf(stderr, PROG ": cannot write %s/%s: %s\n", dir, fname,
		    strerror(errno));
		kw_secret_free(pin);
		return -1;
	}
	*ret_pin = pin;
	return 0;
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) != 0)
		fprintf(stderr, PROG ": cannot remove %s: %s\n", path,
		    strerror(errno));
	return 0;
}

static void
remove_tree(const char *dir)
{
	/* FTW_PHYS: never follow a link out of the directory. */
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/*
 * The SoftHSM configuration must be in the environment before anything
 * loads the module: SoftHSM reads it in C_Initialize, and a token store
 * outside the temporary directory would leave keys behind.
 */
static int
make_token_dir(char *dir, char *ret_conf, size_t cap)
{
	char tokens[PATH_MAX], buf[PATH_MAX + 128];
	int n;

	if (mkdtemp(dir) == NULL) {
		fprintf(stderr, PROG ": mkdtemp %s: %s\n", dir,
		    strerror(errno));
		return -1;
	}
	if ((size_t)snprintf(tokens, sizeof tokens, "%s/tokens", dir) >=
	        sizeof tokens ||
	    mkdir(tokens, 0700) != 0) {
		fprintf(stderr, PROG ": mkdir %s/tokens: %s\n", dir,
		    strerror(errno));
		return -1;
	}
	n = snprintf(buf, sizeof buf,
	    "directories.tokendir = %s\n"
	    "objectstore.backend = file\n"
	    "log.level = ERROR\n"
	    "slots.removable = false\n",
	    tokens);
	if (n < 0 || (size_t)n >= sizeof buf ||
	    (size_t)snprintf(ret_conf, cap, "%s/softhsm2.conf", dir) >= cap ||
	    write_private_file(ret_conf, buf, (size_t)n) != 0 ||
	    setenv("SOFTHSM2_CONF", ret_conf, 1) != 0) {
		fprintf(stderr, PROG ": cannot write %s/softhsm2.conf: %s\n",
		    dir, strerror(errno));
		return -1;
	}
	return 0;
}

static int
find_one(struct bench *b, CK_OBJECT_CLASS oc, const char *label,
    CK_OBJECT_HANDLE *ret)
{
	CK_ATTRIBUTE t[] = {
	    {CKA_CLASS, &oc, sizeof oc},
	    {CKA_LABEL, (void *)label, strlen(label)},
	};
	CK_OBJECT_HANDLE h[2];
	CK_ULONG n = 0;
	CK_RV r;

	r = b->f->C_FindObjectsInit(b->s, t, 2);
	if (r == CKR_OK) {
		r = b->f->C_FindObjects(b->s, h, 2, &n);
		b->f->C_FindObjectsFinal(b->s);
	}
	if (r != CKR_OK || n != 1) {
		fprintf(stderr, PROG ": finding %s: %s, %lu object(s)\n", label,
		    kwd_p11_ckr_name(r), (unsigned long)n);
		return -1;
	}
	*ret = h[0];
	return 0;
}

/*
 * The baseline uses the module the layer loaded: dlopen of the same path
 * with RTLD_NOLOAD returns that very handle (or fails, which would mean
 * the two sides are not measuring the same thing). The module is already
 * initialized, and login state is per application in PKCS#11, so a new
 * session of ours sees the private keys without a C_Login.
 */
static int
direct_setup(struct bench *b, const char *module)
{
	CK_C_GetFunctionList gfl;
	struct kwd_p11_token_info ti;
	CK_SESSION_INFO si;
	CK_RV r;

	b->dl = dlopen(module, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
	if (b->dl == NULL) {
		fprintf(stderr, PROG ": %s is not the loaded module: %s\n",
		    module, dlerror());
		return -1;
	}
	*(void **)&gfl = dlsym(b->dl, "C_GetFunctionList");
	if (gfl == NULL || gfl(&b->f) != CKR_OK || b->f == NULL) {
		fprintf(stderr, PROG ": C_GetFunctionList failed\n");
		return -1;
	}
	kwd_p11_token(b->p11, &ti);
	/* The same session flags as a layer worker: a read-only session
	 * could take another path in the module. */
	r = b->f->C_OpenSession(ti.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
	    NULL, NULL, &b->s);
	if (r != CKR_OK) {
		fprintf(stderr, PROG ": C_OpenSession: %s\n",
		    kwd_p11_ckr_name(r));
		return -1;
	}
	b->have_s = true;
	r = b->f->C_GetSessionInfo(b->s, &si);
	if (r != CKR_OK || si.state != CKS_RW_USER_FUNCTIONS) {
		fprintf(stderr,
		    PROG ": the direct session is not logged in "
		         "(%s, state %lu)\n",
		    kwd_p11_ckr_name(r), (unsigned long)si.state);
		return -1;
	}
	if (find_one(b, CKO_SECRET_KEY, KEK_LABEL, &b->kek) != 0 ||
	    find_one(b, CKO_PRIVATE_KEY, SIG_LABEL, &b->sig) != 0)
		return -1;
	return 0;
}

static bool
verify_sig(EVP_PKEY *pub, const unsigned char digest[32],
    const unsigned char sig[64])
{
	unsigned char der[80];
	size_t dlen;
	EVP_PKEY_CTX *ctx;
	bool ok = false;

	if (kwd_p11_ecdsa_der(sig, der, sizeof der, &dlen) != KW_OK)
		return false;
	ctx = EVP_PKEY_CTX_new(pub, NULL);
	if (ctx != NULL && EVP_PKEY_verify_init(ctx) == 1 &&
	    EVP_PKEY_verify(ctx, der, dlen, digest, 32) == 1)
		ok = true;
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

/*
 * Before timing, prove that both sides compute the same thing with the
 * same keys: a direct ciphertext opens through the layer under the same
 * AAD, and a direct signature verifies under the layer's public key.
 * Otherwise the ratio would compare two different operations.
 */
static int
cross_check(struct bench *b)
{
	unsigned char nonce[KWD_P11_NONCE_LEN];
	unsigned char ct[PT_LEN + KWD_P11_TAG_LEN], sig[64];
	CK_GCM_PARAMS gp;
	CK_MECHANISM gm = {CKM_AES_GCM, &gp, sizeof gp};
	CK_MECHANISM sm = {CKM_ECDSA, NULL, 0};
	CK_ULONG len = sizeof ct;
	struct kw_secret *pt = NULL;
	EVP_PKEY *pub = NULL;
	bool ok;
	CK_RV r;

	randombytes_buf(nonce, sizeof nonce);
	gp.pIv = nonce;
	gp.ulIvLen = sizeof nonce;
	gp.ulIvBits = sizeof nonce * 8;
	gp.pAAD = b->aad;
	gp.ulAADLen = sizeof b->aad;
	gp.ulTagBits = KWD_P11_TAG_LEN * 8;
	r = b->f->C_EncryptInit(b->s, &gm, b->kek);
	if (r == CKR_OK)
		r = b->f->C_Encrypt(b->s, b->pt, sizeof b->pt, ct, &len);
	ok = r == CKR_OK && len == sizeof ct &&
	    kwd_p11_gcm_open(b->w, KEY_NAME, KEY_VERSION, b->aad, sizeof b->aad,
	        nonce, ct, len, &pt) == KW_OK &&
	    kw_secret_len(pt) == sizeof b->pt &&
	    memcmp(kw_secret_data(pt), b->pt, sizeof b->pt) == 0;
	kw_secret_free(pt);
	if (!ok) {
		fprintf(stderr,
		    PROG ": a direct GCM ciphertext does not open "
		         "through the layer\n");
		return -1;
	}
	len = sizeof sig;
	r = b->f->C_SignInit(b->s, &sm, b->sig);
	if (r == CKR_OK)
		r = b->f->C_Sign(b->s, b->digest, sizeof b->digest, sig, &len);
	ok = r == CKR_OK && len == sizeof sig &&
	    kwd_p11_ec_public(b->w, KEY_NAME, KEY_VERSION, &pub) == KW_OK &&
	    verify_sig(pub, b->digest, sig);
	if (ok)
		ok = kwd_p11_ecdsa_sign(b->w, KEY_NAME, KEY_VERSION, b->digest,
		         sig) == KW_OK &&
		    verify_sig(pub, b->digest, sig);
	EVP_PKEY_free(pub);
	if (!ok) {
		fprintf(stderr,
		    PROG ": a signature does not verify under the "
		         "signer's public key\n");
		return -1;
	}
	return 0;
}

static int
bench_open(struct bench *b, const char *dir, const char *module)
{
	struct kw_secret *so_pin = NULL, *user_pin = NULL;
	char pin_path[PATH_MAX];
	struct kwd_p11_config cfg = {.module = module,
	    .token = TOKEN_LABEL,
	    .pin_file = pin_path};
	int rv;

	if ((size_t)snprintf(pin_path, sizeof pin_path, "%s/pin", dir) >=
	        sizeof pin_path ||
	    make_pin(dir, "so-pin", &so_pin) != 0 ||
	    make_pin(dir, "pin", &user_pin) != 0) {
		rv = KW_ERR_IO;
		goto out;
	}
	rv = kwd_p11_token_init(module, TOKEN_LABEL, so_pin, user_pin);
	if (rv != KW_OK) {
		fprintf(stderr, PROG ": kwd_p11_token_init: %s\n",
		    kw_error_name(rv));
		goto out;
	}
	rv = kwd_p11_open(&cfg, &b->p11);
	if (rv == KW_OK)
		rv = kwd_p11_worker_new(b->p11, &b->w);
	if (rv == KW_OK)
		rv = kwd_p11_kek_generate(b->w, KEY_NAME, KEY_VERSION, NULL,
		    NULL);
	if (rv == KW_OK)
		rv = kwd_p11_ec_generate(b->w, KEY_NAME, KEY_VERSION, NULL,
		    NULL);
	if (rv != KW_OK) {
		fprintf(stderr, PROG ": opening the token: %s: %s\n",
		    kw_error_name(rv), kw_strerror(rv));
		goto out;
	}
	if (direct_setup(b, module) != 0 || cross_check(b) != 0)
		rv = KW_ERR_HSM;
out:
	kw_secret_free(so_pin);
	kw_secret_free(user_pin);
	return rv;
}

static void
bench_close(struct bench *b)
{
	if (b->have_s)
		b->f->C_CloseSession(b->s);
	/* Our reference only: the layer still holds its own. */
	if (b->dl != NULL)
		dlclose(b->dl);
	kwd_p11_worker_free(b->w);
	kwd_p11_free(b->p11);
}

/* ---- output ---- */

static void
json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void
print_json(const struct op_result *ops, int rounds, double secs,
    const char *module, bool pass)
{
	printf("{\n  \"module\": ");
	json_str(module);
	printf(",\n  \"rounds\": %d,\n  \"seconds\": %.3f,\n"
	       "  \"threads\": 1,\n  \"goal\": %.2f,\n  \"ops\": [",
	    rounds, secs, GOAL);
	for (int k = 0; k < OP_COUNT; k++) {
		const struct op_result *o = &ops[k];

		printf("%s\n    {\n      \"name\": \"%s\",\n"
		       "      \"direct_ops_per_s\": %.1f,\n"
		       "      \"layer_ops_per_s\": %.1f,\n"
		       "      \"ratio\": %.4f,\n      \"ratio_min\": %.4f,\n"
		       "      \"ratio_max\": %.4f,\n"
		       "      \"overhead_us\": %.3f,\n      \"pass\": %s,\n"
		       "      \"rounds\": [",
		    k ? "," : "", o->name, o->direct_med, o->layer_med,
		    o->ratio_med, o->ratio_min, o->ratio_max, o->overhead_us,
		    o->pass ? "true" : "false");
		for (int i = 0; i < rounds; i++)
			printf("%s\n        {\"first\": \"%s\", "
			       "\"direct\": %.1f, \"layer\": %.1f, "
			       "\"ratio\": %.4f}",
			    i ? "," : "",
			    o->layer_first[i] ? "layer" : "direct",
			    o->direct[i], o->layer[i], o->ratio[i]);
		printf("\n      ]\n    }");
	}
	printf("\n  ],\n  \"pass\": %s\n}\n", pass ? "true" : "false");
}

static void
print_text(const struct op_result *ops)
{
	printf("\n%-11s %12s %12s %7s %7s %7s %10s\n", "op", "direct/s",
	    "layer/s", "ratio", "min", "max", "overhead");
	for (int k = 0; k < OP_COUNT; k++) {
		const struct op_result *o = &ops[k];

		printf("%-11s %12.0f %12.0f %7.3f %7.3f %7.3f %7.2f µs\n",
		    o->name, o->direct_med, o->layer_med, o->ratio_med,
		    o->ratio_min, o->ratio_max, o->overhead_us);
	}
	printf("\n");
	for (int k = 0; k < OP_COUNT; k++) {
		const struct op_result *o = &ops[k];

		printf("%s: direct %.0f/s layer %.0f/s ratio %.3f "
		       "(goal >= %.2f) %s\n",
		    o->name, o->direct_med, o->layer_med, o->ratio_med, GOAL,
		    o->pass ? "PASS" : "FAIL");
	}
}

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "Usage: " PROG " [-r ROUNDS] [-t SECONDS] [--json] [--check]\n"
	    "\n"
	    "Throughput of keyward's PKCS#11 layer against direct calls to\n"
	    "the same module (SoftHSMv2 in a private temporary token), one\n"
	    "thread, interleaved rounds.\n"
	    "\n"
	    "  -r, --rounds ROUNDS    rounds (default 7, at most %d)\n"
	    "  -t, --seconds SECONDS  seconds per side per round (default 1)\n"
	    "      --json             print the figures as JSON\n"
	    "      --check            exit 1 if a ratio misses the goal "
	    "(%.2f)\n"
	    "\n"
	    "Environment: KW_SOFTHSM_MODULE overrides the module (default\n"
	    "%s).\n",
	    MAX_ROUNDS, GOAL, KW_SOFTHSM_MODULE_DEFAULT);
}

static int
parse_args(int argc, char **argv, int *rounds, double *secs, bool *json,
    bool *check)
{
	static const struct option lopts[] = {
	    {"rounds", required_argument, NULL, 'r'},
	    {"seconds", required_argument, NULL, 't'},
	    {"json", no_argument, NULL, 'j'},
	    {"check", no_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char *end;
	long l;
	int c;

	while ((c = getopt_long(argc, argv, "r:t:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'r':
			errno = 0;
			l = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || l < 1 ||
			    l > MAX_ROUNDS) {
				fprintf(stderr,
				    PROG ": -r wants 1..%d rounds\n",
				    MAX_ROUNDS);
				return -1;
			}
			*rounds = (int)l;
			break;
		case 't':
			errno = 0;
			*secs = strtod(optarg, &end);
			/* The negated test also refuses NaN. */
			if (errno || end == optarg || *end ||
			    !(*secs >= 0.01 && *secs <= MAX_SECONDS)) {
				fprintf(stderr,
				    PROG ": -t wants 0.01..%.0f seconds\n",
				    MAX_SECONDS);
				return -1;
			}
			break;
		case 'j':
			*json = true;
			break;
		case 'c':
			*check = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return -1;
	}
	return 0;
}

/* ---- main ---- */

static int
measure(struct bench *b, struct op_result *ops, int rounds, double secs,
    bool json)
{
	static const op_fn direct[OP_COUNT] = {direct_gcm, direct_sign};
	static const op_fn layer[OP_COUNT] = {layer_gcm, layer_sign};
	double warm = secs < WARMUP_SECONDS ? secs : WARMUP_SECONDS, dummy;

	/* Untimed: the worker's session, the module's key caches, the CPU
	 * clock ramp; none of these belongs in round one. */
	for (int k = 0; k < OP_COUNT; k++)
		if (run_for(b, direct[k], warm, &dummy) != 0 ||
		    run_for(b, layer[k], warm, &dummy) != 0)
			return -1;
	for (int i = 0; i < rounds; i++) {
		for (int k = 0; k < OP_COUNT; k++) {
			struct op_result *o = &ops[k];
			bool lf = i % 2 == 1;
			op_fn first = lf ? layer[k] : direct[k];
			op_fn second = lf ? direct[k] : layer[k];
			double *r1 = lf ? &o->layer[i] : &o->direct[i];
			double *r2 = lf ? &o->direct[i] : &o->layer[i];

			o->layer_first[i] = lf;
			if (run_for(b, first, secs, r1) != 0 ||
			    run_for(b, second, secs, r2) != 0)
				return -1;
			o->ratio[i] = o->layer[i] / o->direct[i];
			if (!json)
				printf("round %d/%d %-11s direct %9.0f/s "
				       "layer %9.0f/s ratio %.3f (%s first)\n",
				    i + 1, rounds, o->name, o->direct[i],
				    o->layer[i], o->ratio[i],
				    lf ? "layer" : "direct");
		}
		if (!json)
			fflush(stdout);
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static struct op_result ops[OP_COUNT] = {
	    [OP_GCM] = {.name = "gcm_wrap32"},
	    [OP_SIGN] = {.name = "ecdsa_sign"},
	};
	struct bench b = {0};
	struct sigaction sa;
	const char *module, *tmp;
	char dir[PATH_MAX], conf[PATH_MAX];
	bool json = false, check = false, dir_made = false, pass = true;
	double secs = 1.0;
	int rounds = 7, rv, status = EXIT_ERROR;

	if (parse_args(argc, argv, &rounds, &secs, &json, &check) != 0)
		return EXIT_USAGE;
	module = getenv("KW_SOFTHSM_MODULE");
	if (module == NULL || *module == '\0')
		module = KW_SOFTHSM_MODULE_DEFAULT;
	tmp = getenv("TMPDIR");
	if (tmp == NULL || *tmp != '/')
		tmp = "/tmp";
	if ((size_t)snprintf(dir, sizeof dir, "%s/p11_bench.XXXXXX", tmp) >=
	    sizeof dir) {
		fprintf(stderr, PROG ": TMPDIR is too long\n");
		return EXIT_ERROR;
	}

	/* Ctrl-C ends the current batch and still removes the token. */
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	rv = kw_secure_init(0);
	if (rv != KW_OK) {
		fprintf(stderr, PROG ": kw_secure_init: %s\n", kw_strerror(rv));
		return EXIT_ERROR;
	}
	/* The layer's info lines ("HSM token ready") are not figures. */
	kw_log_set_level(KW_LOG_WARN);
	randombytes_buf(b.aad, sizeof b.aad);
	randombytes_buf(b.pt, sizeof b.pt);
	randombytes_buf(b.digest, sizeof b.digest);

	umask(077);
	if (make_token_dir(dir, conf, sizeof conf) != 0)
		goto out;
	dir_made = true;
	if (bench_open(&b, dir, module) != KW_OK)
		goto out;
	if (!json)
		printf(PROG ": %s, token %s, %d round(s) x %.2f s per side, "
		            "1 thread\n",
		    module, dir, rounds, secs);
	if (measure(&b, ops, rounds, secs, json) != 0) {
		if (stop_signal == 0)
			fprintf(stderr, PROG ": %s\n", b.err);
		goto out;
	}
	for (int k = 0; k < OP_COUNT; k++) {
		summarize(&ops[k], rounds);
		pass = pass && ops[k].pass;
	}
	if (json)
		print_json(ops, rounds, secs, module, pass);
	else
		print_text(ops);
	status = check && !pass ? EXIT_GOAL : 0;
out:
	bench_close(&b);
	if (dir_made)
		remove_tree(dir);
	if (stop_signal != 0) {
		fprintf(stderr, PROG ": interrupted\n");
		status = 128 + stop_signal;
	}
	return status;
}

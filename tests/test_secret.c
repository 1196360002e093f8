/*
 * test_secret.c: the secure arena, secret files and secrets taken from the
 * environment.
 *
 * The arena's init state is global and /proc/self/environ shows only the
 * environment a process was started with, so a few checks run in a fresh
 * copy of this program: main() has hidden child modes, selected by argv[1],
 * that the tests start with fork + execve("/proc/self/exe") and judge by
 * exit status (0: passed; 77: a precondition of the environment is missing;
 * anything else names the step that failed).
 *
 * Canaries (fake secrets) are drawn at run time so that no expected secret
 * value is ever a constant of the test.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "secret.h"

extern char **environ;

/* The documented default arena size, kw_secure_init(0). */
#define DEFAULT_CAP ((size_t)4 * 1024 * 1024)
/* The arena hands out 32-byte blocks (secret.c BLOCK_SIZE). */
#define BLOCK 32
#define CAP_IPC_LOCK_BIT 14
#define NOBODY 65534
#define CHILD_SKIP 77
#define CANARY_HEX 32

/* ---- helpers ---- */

/* nchars random hex characters and a NUL; nchars is even. */
static void
random_hex(char *out, size_t nchars)
{
	unsigned char raw[128];

	assert_true(nchars % 2 == 0 && nchars / 2 <= sizeof raw);
	randombytes_buf(raw, nchars / 2);
	sodium_bin2hex(out, nchars + 1, raw, nchars / 2);
	sodium_memzero(raw, sizeof raw);
}

/* Random bytes with at least one non-zero byte, so that a wipe shows. */
static void
random_nonzero(unsigned char *p, size_t len)
{
	do
		randombytes_buf(p, len);
	while (sodium_is_zero(p, len));
}

static bool
all_zero(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != 0)
			return false;
	return true;
}

static void
init_ok(void)
{
	assert_int_equal(kw_secure_init(0), KW_OK);
}

/* A field of /proc/self/status as a number ("VmLck", "CapEff"). */
static bool
status_field(const char *name, int base, unsigned long long *ret)
{
	char line[256];
	size_t n = strlen(name);
	bool found = false;
	FILE *f = fopen("/proc/self/status", "re");

	if (f == NULL)
		return false;
	while (fgets(line, sizeof line, f) != NULL) {
		if (strncmp(line, name, n) == 0 && line[n] == ':') {
			*ret = strtoull(line + n + 1, NULL, base);
			found = true;
			break;
		}
	}
	fclose(f);
	return found;
}

static bool
have_cap_ipc_lock(void)
{
	unsigned long long caps = 0;

	if (!status_field("CapEff", 16, &caps))
		return true; /* unknown: assume the worst for the test */
	return (caps >> CAP_IPC_LOCK_BIT) & 1;
}

/* The whole of /proc/self/environ; *ret_len bytes, caller frees. */
static unsigned char *
read_environ(size_t *ret_len)
{
	size_t cap = 4096, len = 0;
	unsigned char *buf = malloc(cap);
	int fd = open("/proc/self/environ", O_RDONLY | O_CLOEXEC);

	if (buf == NULL || fd < 0) {
		free(buf);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	for (;;) {
		ssize_t r;

		if (len == cap) {
			unsigned char *nb = realloc(buf, cap * 2);

			if (nb == NULL)
				break;
			buf = nb;
			cap *= 2;
		}
		r = read(fd, buf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	*ret_len = len;
	return buf;
}

/* Run this program again with argv and envp; returns the wait status. */
static int
run_self(char *const argv[], char *const envp[])
{
	int status = -1;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execve("/proc/self/exe", argv, envp);
		_exit(126);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static void
assert_child_passed(int status)
{
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == CHILD_SKIP)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- hidden child modes (a fresh process each) ---- */

/* Without CAP_IPC_LOCK and with a 64 KiB RLIMIT_MEMLOCK, init must fail. */
static int
child_memlock(void)
{
	struct rlimit rl;
	struct kw_secret *s = NULL;

	/* Root has CAP_IPC_LOCK, which overrides the limit: become nobody,
	 * which clears every capability. */
	if (geteuid() == 0) {
		if (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 ||
		    setuid(NOBODY) != 0)
			return 2;
	}
	if (have_cap_ipc_lock())
		return CHILD_SKIP;
	if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0)
		return 3;
	rl.rlim_cur = 64 * 1024;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < rl.rlim_cur)
		rl.rlim_cur = rl.rlim_max;
	rl.rlim_max = rl.rlim_cur;
	if (setrlimit(RLIMIT_MEMLOCK, &rl) != 0)
		return 4;
	if (kw_secure_init(0) != KW_ERR_MEMLOCK)
		return 1;
	/* Later calls return the first result, and nothing is handed out. */
	if (kw_secure_init(0) != KW_ERR_MEMLOCK)
		return 5;
	if (kw_secret_new(BLOCK, &s) != KW_ERR_MEMLOCK || s != NULL)
		return 6;
	return 0;
}

/*
 * KW_TEST_PIN holds a canary; argv carries only its SHA-256. After
 * kw_secret_take_env the secret holds the canary, the variable is gone and
 * /proc/self/environ no longer shows the value.
 */
static int
child_env(const char *want_sha256_hex)
{
	unsigned char h[crypto_hash_sha256_BYTES];
	char hex[2 * crypto_hash_sha256_BYTES + 1];
	struct kw_secret *s = NULL;
	unsigned char *env;
	char *v;
	size_t n = 0;
	bool found;

	if (kw_secure_init(0) != KW_OK)
		return 2;
	v = getenv("KW_TEST_PIN");
	if (v == NULL || strlen(v) != CANARY_HEX)
		return 3;
	/* Positive control: before the move, the value is visible there. */
	env = read_environ(&n);
	if (env == NULL)
		return 4;
	found = memmem(env, n, v, CANARY_HEX / 2) != NULL;
	sodium_memzero(env, n);
	free(env);
	if (!found)
		return 5;

	if (kw_secret_take_env("KW_TEST_PIN", 256, &s) != KW_OK || s == NULL)
		return 6;
	if (kw_secret_len(s) != CANARY_HEX)
		return 7;
	crypto_hash_sha256(h, kw_secret_data(s), kw_secret_len(s));
	sodium_bin2hex(hex, sizeof hex, h, sizeof h);
	if (strcmp(hex, want_sha256_hex) != 0)
		return 8;
	if (getenv("KW_TEST_PIN") != NULL)
		return 9;
	/* The bytes where the value lived are overwritten, not just
	 * unlinked from environ[]. */
	if (!all_zero((const unsigned char *)v, CANARY_HEX))
		return 10;
	env = read_environ(&n);
	if (env == NULL)
		return 11;
	found = memmem(env, n, kw_secret_data(s), CANARY_HEX / 2) != NULL;
	free(env);
	kw_secret_free(s);
	return found ? 12 : 0;
}

/* Before kw_secure_init nothing is handed out; the first result sticks. */
static int
child_uninit(void)
{
	struct kw_secret *s = NULL;

	if (kw_secret_new(BLOCK, &s) != KW_ERR_INTERNAL || s != NULL)
		return 1;
	if (kw_secure_init(0) != KW_OK)
		return 2;
	if (kw_secure_init(12345) != KW_OK)
		return 3;
	if (kw_secret_new(BLOCK, &s) != KW_OK || s == NULL)
		return 4;
	kw_secret_free(s);
	return 0;
}

/* ---- init and hardening ---- */

static void
test_secret_init_succeeds(void **state)
{
	(void)state;
	assert_int_equal(kw_secure_init(0), KW_OK);
	/* Later calls are no-ops returning the first result. */
	assert_int_equal(kw_secure_init(0), KW_OK);
}

static void
test_secret_init_locks_memory(void **state)
{
	unsigned long long vmlck = 0;

	(void)state;
	init_ok();
#if defined(__SANITIZE_ADDRESS__)
	/* ASan intercepts mlock() and makes it a no-op that returns 0, so
	 * VmLck stays 0 however correct the arena is. */
	skip();
#endif
	assert_true(status_field("VmLck", 10, &vmlck));
	assert_true(vmlck >= 1024);
}

static void
test_secret_init_fails_without_memlock(void **state)
{
	char *argv[] = {"test_secret", "--child-memlock", NULL};

	(void)state;
	assert_child_passed(run_self(argv, environ));
}

static void
test_secret_uninit_refuses(void **state)
{
	char *argv[] = {"test_secret", "--child-uninit", NULL};

	(void)state;
	assert_child_passed(run_self(argv, environ));
}

static void
test_secret_process_harden(void **state)
{
	int status = -1;
	pid_t pid;

	(void)state;
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit rl;

		/* Start from the opposite of what harden must reach, so both
		 * checks below can fail. */
		if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0 ||
		    getrlimit(RLIMIT_CORE, &rl) != 0)
			_exit(2);
		rl.rlim_cur =
		    rl.rlim_max == RLIM_INFINITY ? 1024 * 1024 : rl.rlim_max;
		if (rl.rlim_cur == 0)
			_exit(CHILD_SKIP);
		if (setrlimit(RLIMIT_CORE, &rl) != 0 ||
		    prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 1)
			_exit(3);
		if (kw_process_harden() != KW_OK)
			_exit(4);
		if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
			_exit(5);
		if (getrlimit(RLIMIT_CORE, &rl) != 0 || rl.rlim_cur != 0 ||
		    rl.rlim_max != 0)
			_exit(6);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_child_passed(status);
}

/* ---- allocation ---- */

static void
test_secret_new_zeroed_with_length(void **state)
{
	const size_t sizes[] = {1, 31, 32, 33, 100, 4096, KW_SECRET_MAX};

	(void)state;
	init_ok();
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		struct kw_secret *s = NULL;

		assert_int_equal(kw_secret_new(sizes[i], &s), KW_OK);
		assert_non_null(s);
		assert_int_equal(kw_secret_len(s), sizes[i]);
		assert_non_null(kw_secret_data(s));
		assert_true(all_zero(kw_secret_data(s), sizes[i]));
		kw_secret_free(s);
	}
}

static void
test_secret_new_rejects_bad_length(void **state)
{
	struct kw_secret *s = NULL;

	(void)state;
	init_ok();
	assert_int_equal(kw_secret_new(0, &s), KW_ERR_INVALID);
	assert_null(s);
	assert_int_equal(kw_secret_new(KW_SECRET_MAX + 1, &s),
	    KW_ERR_TOO_LARGE);
	assert_null(s);
	assert_int_equal(kw_secret_new(SIZE_MAX, &s), KW_ERR_TOO_LARGE);
	assert_null(s);
}

static void
test_secret_free_wipes(void **state)
{
	struct kw_secret *s = NULL;
	unsigned char *p;
	const size_t len = 100;

	(void)state;
	init_ok();
	assert_int_equal(kw_secret_new(len, &s), KW_OK);
	p = kw_secret_data(s);
	random_nonzero(p, len);
	assert_false(all_zero(p, len));
	kw_secret_free(s);
	/* The arena stays mapped: the freed bytes can still be read. */
	assert_true(all_zero(p, len));
	kw_secret_free(NULL);
}

static void
test_secret_stats_count(void **state)
{
	struct kw_secure_stats before, during, after;
	struct kw_secret *s = NULL;

	(void)state;
	init_ok();
	kw_secure_stats(&before);
	assert_true(before.chunks >= 1);
	assert_true(before.bytes_total >= before.bytes_used);
	/* 33 bytes take two 32-byte blocks. */
	assert_int_equal(kw_secret_new(33, &s), KW_OK);
	kw_secure_stats(&during);
	assert_int_equal(during.live, before.live + 1);
	assert_int_equal(during.bytes_used, before.bytes_used + 2 * BLOCK);
	kw_secret_free(s);
	kw_secure_stats(&after);
	assert_int_equal(after.live, before.live);
	assert_int_equal(after.bytes_used, before.bytes_used);
}

static void
test_secret_many_live(void **state)
{
	const size_t n = 100000;
	struct kw_secret **v = calloc(n, sizeof *v);
	struct kw_secure_stats st;

	(void)state;
	assert_non_null(v);
	init_ok();
	kw_secure_stats(&st);
	assert_int_equal(st.live, 0);
	for (size_t i = 0; i < n; i++) {
		uint32_t tag = (uint32_t)i;

		assert_int_equal(kw_secret_new(BLOCK, &v[i]), KW_OK);
		/* Each secret carries its own index: overlapping secrets
		 * would overwrite one another. */
		memcpy(kw_secret_data(v[i]), &tag, sizeof tag);
	}
	kw_secure_stats(&st);
	assert_int_equal(st.live, n);
	assert_int_equal(st.bytes_used, n * BLOCK);
	assert_true(st.bytes_total >= n * BLOCK);
	for (size_t i = 0; i < n; i++) {
		uint32_t tag;

		memcpy(&tag, kw_secret_data(v[i]), sizeof tag);
		assert_int_equal(tag, (uint32_t)i);
	}
	for (size_t i = 0; i < n; i++)
		kw_secret_free(v[i]);
	kw_secure_stats(&st);
	assert_int_equal(st.live, 0);
	assert_int_equal(st.bytes_used, 0);
	free(v);
}

static void
test_secret_cap_nomem_then_recovers(void **state)
{
	const size_t want = DEFAULT_CAP / KW_SECRET_MAX;
	struct kw_secret *v[64] = {NULL};
	struct kw_secret *small = NULL;
	struct kw_secure_stats st;
	size_t got = 0;
	int rv = KW_OK;

	(void)state;
	init_ok();
	kw_secure_stats(&st);
	assert_int_equal(st.live, 0);
	while (got < sizeof v / sizeof v[0]) {
		rv = kw_secret_new(KW_SECRET_MAX, &v[got]);
		if (rv != KW_OK)
			break;
		got++;
	}
	assert_int_equal(rv, KW_ERR_NOMEM);
	assert_null(v[got]);
	assert_int_equal(got, want);
	kw_secure_stats(&st);
	assert_int_equal(st.bytes_total, DEFAULT_CAP);
	assert_int_equal(st.bytes_used, DEFAULT_CAP);
	/* Full: even one byte is refused. */
	assert_int_equal(kw_secret_new(1, &small), KW_ERR_NOMEM);
	assert_null(small);

	/* Freeing makes room again. */
	kw_secret_free(v[got / 2]);
	v[got / 2] = NULL;
	assert_int_equal(kw_secret_new(1, &small), KW_OK);
	random_nonzero(kw_secret_data(small), 1);
	kw_secret_free(small);
	assert_int_equal(kw_secret_new(KW_SECRET_MAX, &v[got / 2]), KW_OK);
	for (size_t i = 0; i < got; i++)
		kw_secret_free(v[i]);
	kw_secure_stats(&st);
	assert_int_equal(st.live, 0);
	assert_int_equal(st.bytes_used, 0);
}

static void
test_secret_truncate_wipes_tail(void **state)
{
	struct kw_secret *s = NULL;
	unsigned char copy[64];
	unsigned char *p;

	(void)state;
	init_ok();
	assert_int_equal(kw_secret_new(sizeof copy, &s), KW_OK);
	p = kw_secret_data(s);
	random_nonzero(p + 10, sizeof copy - 10);
	random_nonzero(p, 10);
	memcpy(copy, p, sizeof copy);

	/* Not shorter: a no-op. */
	kw_secret_truncate(s, sizeof copy);
	kw_secret_truncate(s, sizeof copy + 10);
	assert_int_equal(kw_secret_len(s), sizeof copy);
	assert_memory_equal(p, copy, sizeof copy);

	kw_secret_truncate(s, 10);
	assert_int_equal(kw_secret_len(s), 10);
	assert_memory_equal(p, copy, 10);
	assert_true(all_zero(p + 10, sizeof copy - 10));
	sodium_memzero(copy, sizeof copy);
	kw_secret_free(s);
}

static void
test_secret_equal(void **state)
{
	struct kw_secret *a = NULL, *b = NULL, *c = NULL;
	const size_t len = 48;

	(void)state;
	init_ok();
	assert_int_equal(kw_secret_new(len, &a), KW_OK);
	assert_int_equal(kw_secret_new(len, &b), KW_OK);
	assert_int_equal(kw_secret_new(len + 1, &c), KW_OK);
	random_nonzero(kw_secret_data(a), len);
	memcpy(kw_secret_data(b), kw_secret_data(a), len);
	memcpy(kw_secret_data(c), kw_secret_data(a), len);
	assert_true(kw_secret_equal(a, b));
	assert_true(kw_secret_equal(b, a));
	assert_true(kw_secret_equal(a, a));
	/* Same prefix, different length. */
	assert_false(kw_secret_equal(a, c));
	kw_secret_truncate(c, len);
	assert_true(kw_secret_equal(a, c));
	/* One bit anywhere. */
	for (size_t i = 0; i < len; i++) {
		kw_secret_data(b)[i] ^= 0x01;
		assert_false(kw_secret_equal(a, b));
		kw_secret_data(b)[i] ^= 0x01;
	}
	assert_true(kw_secret_equal(a, b));
	kw_secret_free(a);
	kw_secret_free(b);
	kw_secret_free(c);
}

static void
test_secret_memeq(void **state)
{
	unsigned char x[40], y[40];

	(void)state;
	random_nonzero(x, sizeof x);
	memcpy(y, x, sizeof x);
	assert_true(kw_memeq(x, y, sizeof x));
	assert_true(kw_memeq(x, y, 0));
	y[sizeof y - 1] ^= 0x80;
	assert_false(kw_memeq(x, y, sizeof x));
	/* Only len bytes are compared. */
	assert_true(kw_memeq(x, y, sizeof x - 1));
	y[0] ^= 0x01;
	assert_false(kw_memeq(x, y, 1));
	kw_memzero(x, sizeof x);
	assert_true(all_zero(x, sizeof x));
}

/* ---- kw_secret_read_file ---- */

struct tmp {
	char dir[64];
	char path[128];
};

static int
tmp_setup(void **state)
{
	struct tmp *t = calloc(1, sizeof *t);

	if (t == NULL)
		return -1;
	snprintf(t->dir, sizeof t->dir, "/tmp/kw-test-secret-XXXXXX");
	if (mkdtemp(t->dir) == NULL) {
		free(t);
		return -1;
	}
	*state = t;
	return 0;
}

static int
tmp_teardown(void **state)
{
	struct tmp *t = *state;
	DIR *d = opendir(t->dir);
	struct dirent *e;

	while (d != NULL && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) != 0)
			unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR);
	}
	if (d != NULL)
		closedir(d);
	rmdir(t->dir);
	free(t);
	return 0;
}

/* Write len bytes to dir/name with exactly mode (umask aside). */
static const char *
tmp_file(struct tmp *t, const char *name, const void *data, size_t len,
    mode_t mode)
{
	int fd;

	snprintf(t->path, sizeof t->path, "%s/%s", t->dir, name);
	fd = open(t->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(close(fd), 0);
	return t->path;
}

/* Read a file holding canary || suffix; expect canary || kept. */
static void
check_trim(struct tmp *t, const char *suffix, const char *kept)
{
	char canary[17], content[64], want[64], got[64];
	struct kw_secret *s = NULL;
	const char *path;
	size_t len = 0;
	int rv;

	random_hex(canary, 16);
	snprintf(content, sizeof content, "%s%s", canary, suffix);
	snprintf(want, sizeof want, "%s%s", canary, kept);
	path = tmp_file(t, "trim", content, strlen(content), 0600);
	rv = kw_secret_read_file(path, 64, &s);
	/* Copy out and free before asserting: a failed assertion jumps out
	 * of this function and would leak the secret. */
	if (rv == KW_OK && s != NULL) {
		len = kw_secret_len(s);
		memcpy(got, kw_secret_data(s),
		    len < sizeof got ? len : sizeof got);
		kw_secret_free(s);
	}
	assert_int_equal(rv, KW_OK);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(got, want, len);
}

static void
test_secret_read_file_trims_one_newline(void **state)
{
	struct tmp *t = *state;
	char canary[17], content[40];
	struct kw_secret *s = NULL;
	const char *path;

	init_ok();
	check_trim(t, "", "");
	check_trim(t, "\n", "");
	check_trim(t, "\r\n", "");
	check_trim(t, "\n\n", "\n");
	check_trim(t, "\r\n\r\n", "\r\n");
	check_trim(t, "\n\r\n", "\n");
	check_trim(t, "\r\r\n", "\r");
	check_trim(t, " \n", " ");

	/* Leading and inner newlines are part of the value. */
	random_hex(canary, 16);
	snprintf(content, sizeof content, "\n%.8s\n%s\n", canary, canary + 8);
	path = tmp_file(t, "inner", content, strlen(content), 0600);
	assert_int_equal(kw_secret_read_file(path, 64, &s), KW_OK);
	assert_int_equal(kw_secret_len(s), strlen(content) - 1);
	assert_memory_equal(kw_secret_data(s), content, strlen(content) - 1);
	kw_secret_free(s);
}

/* A lone trailing "\r" is part of the value: only "\n" or "\r\n" go. */
static void
test_secret_read_file_keeps_lone_cr(void **state)
{
	init_ok();
	check_trim(*state, "\r", "\r");
}

static void
test_secret_read_file_rejects_group_other(void **state)
{
	struct tmp *t = *state;
	const mode_t bad[] = {0644, 0640, 0604, 0660, 0620, 0602, 0610, 0601,
	    0666, 0700 | 0040};
	char canary[33];
	struct kw_secret *s = NULL;
	const char *path;

	init_ok();
	random_hex(canary, 32);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		path = tmp_file(t, "perm", canary, strlen(canary), bad[i]);
		assert_int_equal(kw_secret_read_file(path, 64, &s),
		    KW_ERR_PERM);
		assert_null(s);
	}
	/* Owner-only modes are accepted. */
	path = tmp_file(t, "perm", canary, strlen(canary), 0600);
	assert_int_equal(kw_secret_read_file(path, 64, &s), KW_OK);
	kw_secret_free(s);
	s = NULL;
	path = tmp_file(t, "perm", canary, strlen(canary), 0400);
	assert_int_equal(kw_secret_read_file(path, 64, &s), KW_OK);
	assert_memory_equal(kw_secret_data(s), canary, strlen(canary));
	kw_secret_free(s);
}

static void
test_secret_read_file_rejects_empty(void **state)
{
	struct tmp *t = *state;
	const char *contents[] = {"", "\n", "\r\n"};
	struct kw_secret *s = NULL;
	const char *path;

	init_ok();
	for (size_t i = 0; i < sizeof contents / sizeof contents[0]; i++) {
		path = tmp_file(t, "empty", contents[i], strlen(contents[i]),
		    0600);
		assert_int_equal(kw_secret_read_file(path, 64, &s),
		    KW_ERR_INVALID);
		assert_null(s);
	}
}

static void
test_secret_read_file_size_limit(void **state)
{
	struct tmp *t = *state;
	const size_t max = 16;
	char canary[65], content[80];
	struct kw_secret *s = NULL;
	const char *path;
	unsigned char *big;
	const size_t bigsz = 100000;

	init_ok();
	random_hex(canary, 64);
	/* Exactly max, bare and with either line end: accepted. */
	snprintf(content, sizeof content, "%.16s", canary);
	path = tmp_file(t, "size", content, strlen(content), 0600);
	assert_int_equal(kw_secret_read_file(path, max, &s), KW_OK);
	assert_int_equal(kw_secret_len(s), max);
	kw_secret_free(s);
	s = NULL;
	snprintf(content, sizeof content, "%.16s\r\n", canary);
	path = tmp_file(t, "size", content, strlen(content), 0600);
	assert_int_equal(kw_secret_read_file(path, max, &s), KW_OK);
	assert_int_equal(kw_secret_len(s), max);
	assert_memory_equal(kw_secret_data(s), canary, max);
	kw_secret_free(s);
	s = NULL;

	/* One byte more, with or without line ends, and far more. */
	snprintf(content, sizeof content, "%.17s", canary);
	path = tmp_file(t, "size", content, strlen(content), 0600);
	assert_int_equal(kw_secret_read_file(path, max, &s), KW_ERR_TOO_LARGE);
	assert_null(s);
	snprintf(content, sizeof content, "%.17s\r\n", canary);
	path = tmp_file(t, "size", content, strlen(content), 0600);
	assert_int_equal(kw_secret_read_file(path, max, &s), KW_ERR_TOO_LARGE);
	assert_null(s);
	snprintf(content, sizeof content, "%.16s\r\n\n", canary);
	path = tmp_file(t, "size", content, strlen(content), 0600);
	assert_int_equal(kw_secret_read_file(path, max, &s), KW_ERR_TOO_LARGE);
	assert_null(s);
	big = malloc(bigsz);
	assert_non_null(big);
	memset(big, 'x', bigsz);
	path = tmp_file(t, "size", big, bigsz, 0600);
	free(big);
	assert_int_equal(kw_secret_read_file(path, max, &s), KW_ERR_TOO_LARGE);
	assert_null(s);

	/* max itself is checked. */
	assert_int_equal(kw_secret_read_file(path, 0, &s), KW_ERR_INVALID);
	assert_int_equal(kw_secret_read_file(path, SIZE_MAX, &s),
	    KW_ERR_INVALID);
	assert_null(s);
}

/*
 * The largest max is KW_SECRET_MAX - 3: the read needs room for a
 * trailing "\r\n" and one byte more to detect an oversized file. One more
 * is an invalid argument, not a failed read.
 */
static void
test_secret_read_file_largest_max(void **state)
{
	struct tmp *t = *state;
	char canary[33];
	struct kw_secret *s = NULL;
	const char *path;

	init_ok();
	random_hex(canary, 32);
	path = tmp_file(t, "max", canary, strlen(canary), 0600);
	assert_int_equal(kw_secret_read_file(path, KW_SECRET_MAX - 3, &s),
	    KW_OK);
	assert_non_null(s);
	assert_memory_equal(kw_secret_data(s), canary, strlen(canary));
	kw_secret_free(s);
	s = NULL;
	assert_int_equal(kw_secret_read_file(path, KW_SECRET_MAX - 2, &s),
	    KW_ERR_INVALID);
	assert_null(s);
}

static void
test_secret_read_file_not_regular(void **state)
{
	struct tmp *t = *state;
	struct kw_secret *s = NULL;
	char path[160];

	init_ok();
	snprintf(path, sizeof path, "%s/missing", t->dir);
	assert_int_equal(kw_secret_read_file(path, 64, &s), KW_ERR_NOT_FOUND);
	snprintf(path, sizeof path, "%s/dir", t->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(kw_secret_read_file(path, 64, &s), KW_ERR_IO);
	assert_int_equal(kw_secret_read_file("/dev/null", 64, &s), KW_ERR_IO);
	assert_null(s);
}

/* ---- kw_secret_take_env ---- */

static void
test_secret_take_env_moves(void **state)
{
	char canary[CANARY_HEX + 1];
	struct kw_secret *s = NULL;

	(void)state;
	init_ok();
	random_hex(canary, CANARY_HEX);
	assert_int_equal(setenv("KW_TEST_TAKE", canary, 1), 0);
	assert_int_equal(kw_secret_take_env("KW_TEST_TAKE", 256, &s), KW_OK);
	assert_non_null(s);
	assert_int_equal(kw_secret_len(s), CANARY_HEX);
	assert_memory_equal(kw_secret_data(s), canary, CANARY_HEX);
	assert_null(getenv("KW_TEST_TAKE"));
	/* Taken once: a second take finds nothing. */
	kw_secret_free(s);
	s = NULL;
	assert_int_equal(kw_secret_take_env("KW_TEST_TAKE", 256, &s),
	    KW_ERR_NOT_FOUND);
	assert_null(s);
	sodium_memzero(canary, sizeof canary);
}

static void
test_secret_take_env_missing_or_empty(void **state)
{
	struct kw_secret *s = NULL;

	(void)state;
	init_ok();
	assert_int_equal(unsetenv("KW_TEST_TAKE"), 0);
	assert_int_equal(kw_secret_take_env("KW_TEST_TAKE", 256, &s),
	    KW_ERR_NOT_FOUND);
	assert_int_equal(setenv("KW_TEST_TAKE", "", 1), 0);
	assert_int_equal(kw_secret_take_env("KW_TEST_TAKE", 256, &s),
	    KW_ERR_NOT_FOUND);
	assert_null(s);
	unsetenv("KW_TEST_TAKE");
}

static void
test_secret_take_env_too_long(void **state)
{
	char canary[CANARY_HEX + 1];
	struct kw_secret *s = NULL;

	(void)state;
	init_ok();
	random_hex(canary, CANARY_HEX);
	assert_int_equal(setenv("KW_TEST_TAKE", canary, 1), 0);
	assert_int_equal(kw_secret_take_env("KW_TEST_TAKE", CANARY_HEX - 1, &s),
	    KW_ERR_TOO_LARGE);
	assert_null(s);
	/* A refused value must not linger for a child to inherit. */
	assert_null(getenv("KW_TEST_TAKE"));
	sodium_memzero(canary, sizeof canary);
}

static void
test_secret_take_env_scrubs_initial_environ(void **state)
{
	char canary[CANARY_HEX + 1];
	unsigned char h[crypto_hash_sha256_BYTES];
	char hash_hex[2 * crypto_hash_sha256_BYTES + 1];
	char pin[sizeof "KW_TEST_PIN=" + CANARY_HEX];
	char *argv[] = {"test_secret", "--child-env", hash_hex, NULL};
	/* The child's environment: the PIN, and the sanitizer settings CTest
	 * gives us, nothing else. */
	char *envp[8] = {pin, NULL};
	size_t ne = 1;

	(void)state;
	random_hex(canary, CANARY_HEX);
	crypto_hash_sha256(h, (const unsigned char *)canary, CANARY_HEX);
	sodium_bin2hex(hash_hex, sizeof hash_hex, h, sizeof h);
	snprintf(pin, sizeof pin, "KW_TEST_PIN=%s", canary);
	for (char **e = environ; *e != NULL && ne + 1 < 8; e++)
		if (strncmp(*e, "ASAN_OPTIONS=", 13) == 0 ||
		    strncmp(*e, "LSAN_OPTIONS=", 13) == 0 ||
		    strncmp(*e, "UBSAN_OPTIONS=", 14) == 0)
			envp[ne++] = *e;
	envp[ne] = NULL;
	assert_child_passed(run_self(argv, envp));
	sodium_memzero(canary, sizeof canary);
	sodium_memzero(pin, sizeof pin);
}

/* ---- kw_random_buf ---- */

static void
test_secret_random_distinct_and_spread(void **state)
{
	static unsigned char big[3 * 1000 + 7];
	unsigned char a[12], b[12], zero[12] = {0};
	size_t seen[256] = {0};

	(void)state;
	kw_random_buf(a, sizeof a);
	kw_random_buf(b, sizeof b);
	assert_memory_not_equal(a, b, sizeof a);
	assert_memory_not_equal(a, zero, sizeof a);
	kw_random_buf(NULL, 0);
	/* Draws larger than one refill, and odd sizes across refills. */
	memset(big, 0, sizeof big);
	kw_random_buf(big, sizeof big);
	for (size_t off = 0; off < sizeof big; off += 11)
		kw_random_buf(big + off,
		    sizeof big - off < 11 ? sizeof big - off : 11);
	for (size_t i = 0; i < sizeof big; i++)
		seen[big[i]]++;
	/* 3007 bytes: every value about 12 times; none at 0 or above 40
	 * happens with probability far below 1e-9 for uniform bytes. */
	for (size_t v = 0; v < 256; v++)
		if (seen[v] == 0 || seen[v] > 40)
			fail_msg("byte value %zu seen %zu times", v, seen[v]);
	/* 1000 nonces of 12 bytes, none repeated. */
	{
		static unsigned char n[1000][12];

		for (size_t i = 0; i < 1000; i++)
			kw_random_buf(n[i], 12);
		for (size_t i = 0; i < 1000; i++)
			for (size_t j = i + 1; j < 1000; j++)
				assert_memory_not_equal(n[i], n[j], 12);
	}
}

/* A forked child must not replay its parent's stream: with a copied
 * state, parent and child would produce the same GCM nonces. */
static void
test_secret_random_fork_reseeds(void **state)
{
	unsigned char parent[32], child[32];
	int fds[2], st = 0;
	pid_t pid;

	(void)state;
	kw_random_buf(parent, 8); /* this thread's state exists */
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		unsigned char c[32];

		kw_random_buf(c, sizeof c);
		_exit(write(fds[1], c, sizeof c) == (ssize_t)sizeof c ? 0 : 1);
	}
	kw_random_buf(parent, sizeof parent);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(read(fds[0], child, sizeof child), sizeof child);
	assert_memory_not_equal(parent, child, sizeof parent);
	close(fds[0]);
	close(fds[1]);
}

static void *
random_thread(void *arg)
{
	kw_random_buf(arg, 32);
	return NULL;
}

/* Threads have their own streams, each keyed from the kernel. */
static void
test_secret_random_per_thread(void **state)
{
	unsigned char out[4][32];
	pthread_t t[4];

	(void)state;
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, random_thread,
		                     out[i]),
		    0);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	for (size_t i = 0; i < 4; i++)
		for (size_t j = i + 1; j < 4; j++)
			assert_memory_not_equal(out[i], out[j], 32);
}

/* Past KW_RANDOM_RESEED_BYTES the generator is keyed again: seen here
 * as a run of draws that keeps working across the boundary. */
static void
test_secret_random_across_reseed(void **state)
{
	static unsigned char buf[64 * 1024];
	unsigned char last[16], now[16];

	(void)state;
	memset(last, 0, sizeof last);
	for (size_t done = 0; done < 2 * KW_RANDOM_RESEED_BYTES;
	     done += sizeof buf) {
		kw_random_buf(buf, sizeof buf);
		memcpy(now, buf + sizeof buf - sizeof now, sizeof now);
		assert_memory_not_equal(now, last, sizeof now);
		memcpy(last, now, sizeof now);
	}
}

#define T(f) cmocka_unit_test(f)
#define TF(f) cmocka_unit_test_setup_teardown(f, tmp_setup, tmp_teardown)

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    T(test_secret_init_succeeds),
	    T(test_secret_init_locks_memory),
	    T(test_secret_init_fails_without_memlock),
	    T(test_secret_uninit_refuses),
	    T(test_secret_process_harden),
	    T(test_secret_new_zeroed_with_length),
	    T(test_secret_new_rejects_bad_length),
	    T(test_secret_free_wipes),
	    T(test_secret_stats_count),
	    T(test_secret_many_live),
	    T(test_secret_cap_nomem_then_recovers),
	    T(test_secret_truncate_wipes_tail),
	    T(test_secret_equal),
	    T(test_secret_memeq),
	    TF(test_secret_read_file_trims_one_newline),
	    TF(test_secret_read_file_keeps_lone_cr),
	    TF(test_secret_read_file_rejects_group_other),
	    TF(test_secret_read_file_rejects_empty),
	    TF(test_secret_read_file_size_limit),
	    TF(test_secret_read_file_largest_max),
	    TF(test_secret_read_file_not_regular),
	    T(test_secret_take_env_moves),
	    T(test_secret_take_env_missing_or_empty),
	    T(test_secret_take_env_too_long),
	    T(test_secret_take_env_scrubs_initial_environ),
	    T(test_secret_random_distinct_and_spread),
	    T(test_secret_random_fork_reseeds),
	    T(test_secret_random_per_thread),
	    T(test_secret_random_across_reseed),
	};

	if (argc >= 2 && strcmp(argv[1], "--child-memlock") == 0) {
		/* _exit: after the switch to nobody the process is not
		 * dumpable, and LeakSanitizer's exit-time scan cannot attach
		 * to a non-dumpable process. */
		fflush(NULL);
		_exit(child_memlock());
	}
	if (argc >= 3 && strcmp(argv[1], "--child-env") == 0)
		return child_env(argv[2]);
	if (argc >= 2 && strcmp(argv[1], "--child-uninit") == 0)
		return child_uninit();
	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}

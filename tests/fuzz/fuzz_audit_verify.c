/*
 * fuzz_audit_verify.c: libFuzzer target for kwd_audit_verify() (and the
 * last-line check of kwd_audit_open()).
 *
 * kwd_audit_verify takes a path, so each input is written to one memfd
 * per process, reached through /proc/self/fd: nothing is left behind when
 * the fuzzer is killed. Whatever the input, verify
 * must return. When it says KW_OK, an independent check that shares no
 * code with audit.c (and hashes with libsodium, not OpenSSL) must agree
 * that the input is a chain of that many lines, and kwd_audit_open must
 * accept the file; a disagreement aborts, which the fuzzer reports.
 *
 * Built with -fsanitize=fuzzer (KW_FUZZ=ON) or with tests/fuzz/replay.c
 * (any compiler) to replay the corpus.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int file_fd = -1;
static char file_path[64];

static void
check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_audit_verify: invariant violated: %s\n",
		    what);
		abort();
	}
}

static void
init_once(void)
{
	int fd;

	if (file_fd >= 0)
		return;
	/* Keep the log code running (verify's messages are built from
	 * hostile bytes) but send its lines nowhere. */
	fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (fd >= 0)
		kw_log_set_fd(fd);
	kw_log_set_level(KW_LOG_DEBUG);
	/* In memory: a disk file truncated and rewritten for every input
	 * makes ext4 flush it on each close (auto_da_alloc), at a few
	 * hundred inputs a second. 0600, as kwd_audit_open requires. */
	file_fd = memfd_create("fuzz_audit_verify", MFD_CLOEXEC);
	check(file_fd >= 0, "memfd_create");
	check(fchmod(file_fd, 0600) == 0, "fchmod");
	snprintf(file_path, sizeof file_path, "/proc/self/fd/%d", file_fd);
	check(sodium_init() >= 0, "sodium_init");
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	init_once();
	return 0;
}

static int
unhex(const uint8_t *s, unsigned char *out, size_t n)
{
	for (size_t i = 0; i < 2 * n; i++) {
		int v;

		if (s[i] >= '0' && s[i] <= '9')
			v = s[i] - '0';
		else if (s[i] >= 'a' && s[i] <= 'f')
			v = s[i] - 'a' + 10;
		else
			return -1;
		if (i % 2 == 0)
			out[i / 2] = (unsigned char)(v << 4);
		else
			out[i / 2] |= (unsigned char)v;
	}
	return 0;
}

/*
 * The minimal chain check: every line starts {"seq":<its number>, and
 * ends ,"prev":"<hex>","hash":"<hex>"}, prev is the previous line's hash
 * (zeros first), and hash = SHA-256(prev || the line up to ,"hash":).
 */
static void
check_chain(const uint8_t *d, size_t n, uint64_t count)
{
	static const char prev_key[] = ",\"prev\":\"";
	static const char hash_key[] = "\",\"hash\":\"";
	unsigned char prev[32], claimed_prev[32], hash[32], computed[32];
	crypto_hash_sha256_state st;
	uint64_t lineno = 0;
	size_t pos = 0;

	memset(prev, 0, sizeof prev);
	check(n == 0 || d[n - 1] == '\n', "KW_OK: ends in a newline");
	while (pos < n) {
		const uint8_t *line = d + pos, *nl, *t;
		char head[40];
		size_t len, hl;

		nl = memchr(line, '\n', n - pos);
		len = (size_t)(nl - line);
		lineno++;
		hl = (size_t)snprintf(head, sizeof head,
		    "{\"seq\":%" PRIu64 ",", lineno);
		check(len > hl + 149, "KW_OK: line long enough");
		check(memcmp(line, head, hl) == 0,
		    "KW_OK: seq is the line number");
		/* ,"prev":"<64>","hash":"<64>"} is the last 149 bytes. */
		t = line + len - 149;
		check(memcmp(t, prev_key, 9) == 0, "KW_OK: prev before hash");
		check(unhex(t + 9, claimed_prev, 32) == 0,
		    "KW_OK: prev is hex");
		check(memcmp(t + 73, hash_key, 10) == 0, "KW_OK: hash last");
		check(unhex(t + 83, hash, 32) == 0, "KW_OK: hash is hex");
		check(memcmp(t + 147, "\"}", 2) == 0, "KW_OK: object closed");
		check(memcmp(claimed_prev, prev, 32) == 0,
		    "KW_OK: prev links to the previous hash");
		crypto_hash_sha256_init(&st);
		crypto_hash_sha256_update(&st, prev, 32);
		crypto_hash_sha256_update(&st, line, len - 75);
		crypto_hash_sha256_final(&st, computed);
		check(memcmp(computed, hash, 32) == 0, "KW_OK: hash matches");
		memcpy(prev, hash, 32);
		pos += len + 1;
	}
	check(lineno == count, "KW_OK: count is the number of lines");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kwd_audit *a = NULL;
	uint64_t count = UINT64_MAX, bad = UINT64_MAX;
	size_t lines = 1;
	char err[256];
	int rv;

	init_once();
	check(ftruncate(file_fd, 0) == 0, "ftruncate");
	check(size == 0 || pwrite(file_fd, data, size, 0) == (ssize_t)size,
	    "pwrite");
	memset(err, 'x', sizeof err);
	rv = kwd_audit_verify(file_path, &count, &bad, err, sizeof err);
	check(memchr(err, '\0', sizeof err) != NULL, "err NUL-terminated");
	if (rv == KW_OK) {
		check(bad == UINT64_MAX, "KW_OK names no bad line");
		check(err[0] == '\0', "KW_OK has an empty message");
		check_chain(data, size, count);
		/* What verify accepts, open continues. */
		rv = kwd_audit_open(file_path, 60000, &a);
		check(rv == KW_OK, "open accepts a verified log");
		kwd_audit_free(a);
	} else {
		check(rv == KW_ERR_AUTH, "a bad log is KW_ERR_AUTH");
		check(count == UINT64_MAX, "a failure returns no count");
		for (size_t i = 0; i < size; i++)
			lines += data[i] == '\n';
		check(bad >= 1 && bad <= lines, "the bad line is in the file");
		check(err[0] != '\0', "KW_ERR_AUTH explains itself");
		for (const char *p = err; *p != '\0'; p++)
			check(*p >= 0x20 && *p < 0x7f, "message printable");
	}
	return 0;
}

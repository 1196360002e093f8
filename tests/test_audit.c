/*
 * test_audit.c: the audit log (broker/audit.h, docs/AUDIT.md): line
 * format and escaping, field caps, the chain across reopen, detection of
 * deleted, swapped, edited, inserted and truncated lines, refusal of a bad
 * last line at open, fail closed on a full disk, a failed fdatasync and a
 * replaced file, durability calls, threads, and that a record holds the
 * fields given and nothing else.
 *
 * Each test works in its own temp dir and sends keyward's log lines to a
 * file there, so that it can check what was logged. fdatasync is defined
 * here: the static kwbroker library then calls this one, which counts
 * calls and can fail on demand.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "audit.h"
#include "log.h"

/* audit.c's limits, restated: a test of them must not share them. */
#define LINE_LIMIT 16384
#define CAP_IDENTITY 255
#define CAP_OP 64
#define CAP_RESOURCE 255
#define CAP_REASON 512
#define CAP_REMOTE 64
#define CAP_CTX_KEY 128
#define CAP_CTX_VALUE 256
#define CTX_PAIRS_MAX 32
#define ZEROS "0000000000000000000000000000000000000000000000000000000000000000"

/* ---- fdatasync, interposed -------------------------------------------- */

static atomic_int datasync_calls;
static atomic_int datasync_errno; /* nonzero: fail with it */

int
fdatasync(int fd)
{
	int e = atomic_load(&datasync_errno);

	atomic_fetch_add(&datasync_calls, 1);
	if (e != 0) {
		errno = e;
		return -1;
	}
	return (int)syscall(SYS_fdatasync, fd);
}

/* ---- fixture ---------------------------------------------------------- */

struct fx {
	char dir[64];
	char path[128]; /* dir/audit.log, not created */
	char logpath[128]; /* keyward's log lines */
	char mnt[128]; /* a tmpfs, when a test mounts one */
	bool mounted;
	int logfd;
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof f->dir, "/tmp/kw_test_audit.XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof f->path, "%s/audit.log", f->dir);
	snprintf(f->logpath, sizeof f->logpath, "%s/keyward.log", f->dir);
	f->logfd =
	    open(f->logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (f->logfd < 0) {
		rmdir(f->dir);
		free(f);
		return -1;
	}
	kw_log_set_fd(f->logfd);
	kw_log_set_level(KW_LOG_INFO);
	atomic_store(&datasync_calls, 0);
	atomic_store(&datasync_errno, 0);
	*state = f;
	return 0;
}

static int
rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static int
teardown(void **state)
{
	struct fx *f = *state;

	kw_log_set_fd(STDERR_FILENO);
	atomic_store(&datasync_errno, 0);
	if (f->mounted)
		umount2(f->mnt, MNT_DETACH);
	close(f->logfd);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* ---- helpers ---------------------------------------------------------- */

/* The whole file, NUL-terminated (the NUL not counted in *ret_len). */
static char *
slurp(const char *path, size_t *ret_len)
{
	FILE *fp = fopen(path, "rb");
	char *buf;
	long n;

	assert_non_null(fp);
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	n = ftell(fp);
	assert_true(n >= 0);
	rewind(fp);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	buf[n] = '\0';
	fclose(fp);
	if (ret_len != NULL)
		*ret_len = (size_t)n;
	return buf;
}

static void
spit(const char *path, const char *buf, size_t len)
{
	int fd;

	/* A new file rather than O_TRUNC: ext4 flushes a file truncated and
	 * rewritten at close (auto_da_alloc), at some ms per call. */
	assert_true(unlink(path) == 0 || errno == ENOENT);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

static size_t
count(const char *hay, size_t len, const char *needle, size_t nlen)
{
	size_t n = 0;
	const char *h = hay, *end = hay + len;

	while ((h = memmem(h, (size_t)(end - h), needle, nlen)) != NULL) {
		n++;
		h++;
	}
	return n;
}

static size_t
count_in_file(const char *path, const char *needle)
{
	size_t len, n;
	char *buf = slurp(path, &len);

	n = count(buf, len, needle, strlen(needle));
	free(buf);
	return n;
}

/* A file's lines: start offsets and lengths (without '\n'). */
struct lines {
	char *buf;
	size_t len;
	size_t n;
	size_t off[20000];
	size_t llen[20000];
};

static struct lines *
split(const char *path)
{
	struct lines *l = calloc(1, sizeof *l);
	size_t start = 0;

	assert_non_null(l);
	l->buf = slurp(path, &l->len);
	for (size_t i = 0; i < l->len; i++) {
		if (l->buf[i] != '\n')
			continue;
		assert_true(l->n < 20000);
		l->off[l->n] = start;
		l->llen[l->n] = i - start;
		l->n++;
		start = i + 1;
	}
	assert_int_equal(start, l->len); /* ends in '\n' */
	return l;
}

static void
lines_free(struct lines *l)
{
	free(l->buf);
	free(l);
}

/* Write lines in the given order (indexes into l) to path. */
static void
rewrite(const char *path, const struct lines *l, const size_t *order, size_t n)
{
	FILE *fp = fopen(path, "wb");

	assert_non_null(fp);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(fwrite(l->buf + l->off[order[i]], 1,
		                     l->llen[order[i]] + 1, fp),
		    l->llen[order[i]] + 1);
	}
	fclose(fp);
}

static json_t *
parse_line(const struct lines *l, size_t i)
{
	json_error_t jerr;
	json_t *o = json_loadb(l->buf + l->off[i], l->llen[i],
	    JSON_REJECT_DUPLICATES, &jerr);

	if (o == NULL)
		fail_msg("line %zu is not JSON: %s", i + 1, jerr.text);
	assert_true(json_is_object(o));
	return o;
}

static int
verify(const char *path, uint64_t *ret_count, uint64_t *ret_bad)
{
	char err[256] = "";
	uint64_t n = UINT64_MAX, bad = 0;
	int rv = kwd_audit_verify(path, &n, &bad, err, sizeof err);

	if (rv == KW_OK)
		assert_string_equal(err, "");
	else
		assert_true(err[0] != '\0');
	if (ret_count != NULL)
		*ret_count = n;
	if (ret_bad != NULL)
		*ret_bad = bad;
	return rv;
}

static void
assert_verifies(const char *path, uint64_t want)
{
	char err[256] = "";
	uint64_t n = 0, bad = 0;
	int rv = kwd_audit_verify(path, &n, &bad, err, sizeof err);

	if (rv != KW_OK)
		fail_msg("verify: %d at line %" PRIu64 ": %s", rv, bad, err);
	assert_int_equal(n, want);
}

/* verify fails with KW_ERR_AUTH at line want. */
static void
assert_bad_at(const char *path, uint64_t want, const char *what)
{
	char err[256] = "";
	uint64_t n = 0, bad = 0;
	int rv = kwd_audit_verify(path, &n, &bad, err, sizeof err);

	if (rv != KW_ERR_AUTH || bad != want)
		fail_msg("%s: verify gave %d at line %" PRIu64 " (%s), "
		         "expected KW_ERR_AUTH at line %" PRIu64,
		    what, rv, bad, err, want);
}

static const struct kwd_ctx_pair ctx2[] = {{"dataset", "imagenet-2026"},
    {"job", "train-7"}};

static struct kwd_audit_rec
plain_rec(uint64_t rid)
{
	struct kwd_audit_rec r = {
	    .rid = rid,
	    .identity = "spiffe://keyward.dev/job/7",
	    .op = "decrypt",
	    .resource = "datasets",
	    .ctx = ctx2,
	    .nctx = 2,
	    .outcome = "allowed",
	    .reason = "rule 0 grant 1",
	    .status = 200,
	    .latency_us = 153,
	    .remote = "127.0.0.1",
	};
	return r;
}

/* A log of n plain records at path. */
static void
make_log(const char *path, size_t n)
{
	struct kwd_audit *a = NULL;

	assert_int_equal(kwd_audit_open(path, 60000, &a), KW_OK);
	for (size_t i = 0; i < n; i++) {
		struct kwd_audit_rec r = plain_rec(i + 1);

		/* Vary the optional fields so that every shape is covered. */
		if (i % 3 == 1) {
			r.identity = NULL;
			r.nctx = 0;
		}
		if (i % 3 == 2) {
			r.resource = NULL;
			r.remote = NULL;
			r.outcome = "denied";
			r.status = 403;
		}
		assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	}
	kwd_audit_free(a);
}

/* The keys a record's line must have, in order. */
static void
assert_key_order(json_t *o, const struct kwd_audit_rec *r)
{
	const char *want[14], *k;
	size_t n = 0, i = 0;
	json_t *v;

	want[n++] = "seq";
	want[n++] = "time";
	want[n++] = "rid";
	if (r->identity != NULL)
		want[n++] = "identity";
	want[n++] = "op";
	if (r->resource != NULL)
		want[n++] = "resource";
	if (r->nctx > 0)
		want[n++] = "context";
	want[n++] = "outcome";
	want[n++] = "reason";
	want[n++] = "status";
	want[n++] = "latency_us";
	if (r->remote != NULL)
		want[n++] = "remote";
	want[n++] = "prev";
	want[n++] = "hash";
	json_object_foreach (o, k, v) {
		assert_true(i < n);
		assert_string_equal(k, want[i]);
		i++;
	}
	assert_int_equal(i, n);
}

/* The raw (escaped) content of a top-level string field in a line. */
static size_t
raw_len(const char *line, size_t len, const char *key)
{
	char pat[64];
	const char *p, *end = line + len;
	size_t n = 0;

	snprintf(pat, sizeof pat, "\"%s\":\"", key);
	p = memmem(line, len, pat, strlen(pat));
	assert_non_null(p);
	p += strlen(pat);
	while (p < end && *p != '"') {
		size_t step = *p == '\\' ? 2 : 1;

		p += step;
		n += step;
	}
	assert_true(p < end);
	return n;
}

static char *
repeat(const char *unit, size_t n)
{
	size_t ul = strlen(unit);
	char *s = malloc(ul * n + 1);

	assert_non_null(s);
	for (size_t i = 0; i < n; i++)
		memcpy(s + i * ul, unit, ul);
	s[ul * n] = '\0';
	return s;
}

/* ---- format ----------------------------------------------------------- */

static void
test_audit_exact_escaping(void **state)
{
	struct fx *f = *state;
	struct kwd_audit *a = NULL;
	struct kwd_audit_rec r = plain_rec(0xab);
	struct lines *l;
	json_t *o;
	/* quote, backslash, newline, tab, \x01, DEL, an invalid byte, é,
	 * U+2028 and a 4-byte character. */
	static const char id[] = "a\"b\\c\nd\te\x01\x7f\xff\xc3\xa9"
	                         "\xe2\x80\xa8\xf0\x9f\x94\x91z";
	static const char want[] =
	    "\"identity\":\"a\\\"b\\\\c\\u000ad\\u0009e\\u0001\\u007f"
	    "\xef\xbf\xbd\xc3\xa9\\u2028\xf0\x9f\x94\x91z\",";
	static const char want_line[] =
	    "\"rid\":\"00000000000000ab\",\"identity\":";

	r.identity = id;
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	kwd_audit_free(a);
	l = split(f->path);
	assert_int_equal(l->n, 1);
	assert_non_null(strstr(l->buf, want));
	assert_non_null(strstr(l->buf, want_line));
	/* {"seq":1,"time":"YYYY-MM-DDTHH:MM:SS.uuuuuuZ","rid": */
	assert_memory_equal(l->buf, "{\"seq\":1,\"time\":\"", 17);
	for (size_t i = 0; i < 27; i++) {
		const char *pat = "dddd-dd-ddTdd:dd:dd.ddddddZ";
		char c = l->buf[17 + i];

		if (pat[i] == 'd')
			assert_true(c >= '0' && c <= '9');
		else
			assert_int_equal(c, pat[i]);
	}
	assert_non_null(strstr(l->buf, ",\"prev\":\"" ZEROS "\",\"hash\":\""));
	o = parse_line(l, 0);
	assert_key_order(o, &r);
	assert_string_equal(json_string_value(json_object_get(o, "identity")),
	    "a\"b\\c\nd\te\x01\x7f\xef\xbf\xbd\xc3\xa9\xe2\x80\xa8"
	    "\xf0\x9f\x94\x91z");
	assert_string_equal(json_string_value(
	                        json_object_get(json_object_get(o, "context"),
	                            "dataset")),
	    "imagenet-2026");
	json_decref(o);
	lines_free(l);
	assert_verifies(f->path, 1);
}

/* Strings that a writer must survive: each is used in every field. */
static const char *const odd[] = {
    "plain",
    "quote\" and backslash\\ and \"\\\"",
    "new\nline\ttab\rcr\x01\x1f\x7f",
    "bad\xff\xfe\xc3(\xe2\x82\xed\xa0\x80\xf4\x90\x80\x80\xc0\xaf end",
    "\xc3\xbcn\xc3\xaf"
    "c\xc3\xb8"
    "d\xc3\xa9 \xe2\x9c\x93 \xf0\x9d\x84\x9e",
    "sep\xe2\x80\xa8para\xe2\x80\xa9 c1\xc2\x85\xc2\x9b",
    "",
};

static void
test_audit_lines_are_json(void **state)
{
	struct fx *f = *state;
	struct kwd_audit *a = NULL;
	const size_t nodd = sizeof odd / sizeof odd[0];
	const size_t n = 120;
	char *big_x = repeat("x", 10240), *big_nl = repeat("\n", 10240);
	char *big_bad = repeat("\xff", 10240),
	     *big_e = repeat("\xc3\xa9", 5120);
	const char *const bigs[] = {big_x, big_nl, big_bad, big_e};
	struct kwd_audit_rec *recs = calloc(n, sizeof *recs);
	struct kwd_ctx_pair ctx[3];
	struct lines *l;

	assert_non_null(recs);
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	for (size_t i = 0; i < n; i++) {
		struct kwd_audit_rec *r = &recs[i];
		const char *s = i % 5 == 4 ? bigs[i / 5 % 4] : odd[i % nodd];

		*r = plain_rec(i * 0x0101010101ULL);
		r->identity = i % 4 == 1 ? NULL : s;
		r->op = s;
		r->resource = i % 4 == 2 ? NULL : s;
		r->reason = s;
		r->remote = i % 4 == 3 ? NULL : s;
		r->outcome = (const char *[]){"allowed", "denied", "rejected",
		    "failed"}[i % 4];
		r->status = (int)(i * 7) - 100;
		r->latency_us = i == 7 ? UINT64_MAX : i * 1000;
		ctx[0].key = s;
		ctx[0].value = odd[(i + 1) % nodd];
		ctx[1].key = "k2";
		ctx[1].value = s;
		ctx[2].key = odd[(i + 2) % nodd];
		ctx[2].value = "v";
		r->ctx = ctx;
		r->nctx = i % 6 == 0 ? 0 : 3;
		assert_int_equal(kwd_audit_write(a, r), KW_OK);
		r->ctx =
		    NULL; /* ctx is reused: keep only whether there was one */
	}
	kwd_audit_free(a);

	l = split(f->path);
	assert_int_equal(l->n, n);
	for (size_t i = 0; i < n; i++) {
		json_t *o = parse_line(l, i);
		const char *prev;

		assert_true(l->llen[i] + 1 <= LINE_LIMIT);
		/* Escaped content: no raw control byte anywhere. */
		for (size_t j = 0; j < l->llen[i]; j++)
			assert_true(
			    (unsigned char)l->buf[l->off[i] + j] >= 0x20);
		assert_key_order(o, &recs[i]);
		assert_int_equal(json_integer_value(json_object_get(o, "seq")),
		    i + 1);
		assert_int_equal(json_integer_value(
		                     json_object_get(o, "status")),
		    recs[i].status);
		assert_int_equal(json_integer_value(
		                     json_object_get(o, "latency_us")),
		    i == 7 ? INT64_MAX : (json_int_t)(i * 1000));
		assert_string_equal(json_string_value(
		                        json_object_get(o, "outcome")),
		    recs[i].outcome);
		/* Short well-formed strings come back exactly. */
		if (recs[i].op == odd[0] || recs[i].op == odd[1] ||
		    recs[i].op == odd[4])
			assert_string_equal(json_string_value(
			                        json_object_get(o, "op")),
			    recs[i].op);
		if (recs[i].op == odd[3])
			assert_int_equal(count(json_string_value(
			                           json_object_get(o,
			                               "reason")),
			                     strlen(json_string_value(
			                         json_object_get(o, "reason"))),
			                     "\xef\xbf\xbd", 3),
			    14);
		prev = json_string_value(json_object_get(o, "prev"));
		if (i == 0)
			assert_string_equal(prev, ZEROS);
		json_decref(o);
	}
	lines_free(l);
	assert_verifies(f->path, n);
	free(recs);
	free(big_x);
	free(big_nl);
	free(big_bad);
	free(big_e);
}

static void
test_audit_field_caps(void **state)
{
	struct fx *f = *state;
	struct kwd_audit *a = NULL;
	struct kwd_audit_rec r = plain_rec(1);
	struct kwd_ctx_pair ctx[40];
	char *big_x = repeat("x", 10240), *big_nl = repeat("\n", 10240);
	char *big_e = repeat("\xc3\xa9", 5120);
	char *keys[40];
	struct lines *l;
	json_t *o, *c;
	const char *k;
	json_t *v;
	size_t i = 0;

	for (size_t j = 0; j < 40; j++) {
		/* 10 KiB keys that differ only past the cap: all collide. */
		keys[j] = repeat("k", 10240);
		keys[j][10239] = (char)('A' + j);
		ctx[j].key = keys[j];
		ctx[j].value = j % 2 ? big_nl : big_e;
	}
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	for (int round = 0; round < 3; round++) {
		const char *s = round == 0 ? big_x
		    : round == 1           ? big_nl
		                           : big_e;

		r.identity = r.op = r.resource = r.reason = r.remote = s;
		r.ctx = ctx;
		r.nctx = 40;
		r.status = INT32_MIN;
		r.latency_us = UINT64_MAX;
		r.rid = UINT64_MAX;
		assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	}
	kwd_audit_free(a);

	l = split(f->path);
	assert_int_equal(l->n, 3);
	for (size_t li = 0; li < l->n; li++) {
		const char *line = l->buf + l->off[li];
		size_t len = l->llen[li];

		assert_true(len + 1 <= LINE_LIMIT);
		assert_true(raw_len(line, len, "identity") <= CAP_IDENTITY);
		assert_true(raw_len(line, len, "op") <= CAP_OP);
		assert_true(raw_len(line, len, "resource") <= CAP_RESOURCE);
		assert_true(raw_len(line, len, "reason") <= CAP_REASON);
		assert_true(raw_len(line, len, "remote") <= CAP_REMOTE);
		/* Close to the cap: cut, not emptied. */
		assert_true(raw_len(line, len, "reason") >= CAP_REASON - 6);
		o = parse_line(l, li);
		assert_non_null(
		    strstr(json_string_value(json_object_get(o, "reason")),
		        "..."));
		assert_string_equal(json_string_value(
		                        json_object_get(o, "rid")),
		    "ffffffffffffffff");
		c = json_object_get(o, "context");
		assert_int_equal(json_object_size(c), CTX_PAIRS_MAX);
		i = 0;
		json_object_foreach (c, k, v) {
			assert_true(strlen(k) <= CAP_CTX_KEY);
			assert_true(
			    strlen(json_string_value(v)) <= CAP_CTX_VALUE);
			if (i == 0)
				assert_int_equal(strlen(k), CAP_CTX_KEY);
			i++;
		}
		assert_string_equal(json_string_value(
		                        json_object_get(c, "...")),
		    "9 more pairs not recorded");
		json_decref(o);
	}
	lines_free(l);
	assert_verifies(f->path, 3);
	for (size_t j = 0; j < 40; j++)
		free(keys[j]);
	free(big_x);
	free(big_nl);
	free(big_e);
}

/* Duplicate keys from the caller, and keys equal after the cut. */
static void
test_audit_context_keys_unique(void **state)
{
	struct fx *f = *state;
	struct kwd_audit *a = NULL;
	struct kwd_audit_rec r = plain_rec(1);
	char *long1 = repeat("k", 300), *long2 = repeat("k", 301);
	struct kwd_ctx_pair ctx[] = {{"a", "1"}, {"a", "2"}, {"a...#1", "3"},
	    {"a", "4"}, {long1, "5"}, {long2, "6"}, {"\xff", "7"},
	    {"\xfe", "8"}, {"\xef\xbf\xbd", "9"}};
	struct lines *l;
	json_t *o, *c;
	char key[CAP_CTX_KEY + 1];

	r.ctx = ctx;
	r.nctx = sizeof ctx / sizeof ctx[0];
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	kwd_audit_free(a);
	l = split(f->path);
	o = parse_line(l, 0); /* JSON_REJECT_DUPLICATES */
	c = json_object_get(o, "context");
	assert_int_equal(json_object_size(c), r.nctx);
	assert_string_equal(json_string_value(json_object_get(c, "a")), "1");
	assert_string_equal(json_string_value(json_object_get(c, "a...#1")),
	    "2");
	/* The caller's own "a...#1" came next and had to move on. */
	assert_string_equal(json_string_value(
	                        json_object_get(c, "a...#1...#2")),
	    "3");
	assert_string_equal(json_string_value(json_object_get(c, "a...#3")),
	    "4");
	/* Long keys: cut to the cap, the second one marked. */
	memset(key, 'k', 125);
	strcpy(key + 125, "...");
	assert_string_equal(json_string_value(json_object_get(c, key)), "5");
	strcpy(key + 123, "...#5");
	assert_string_equal(json_string_value(json_object_get(c, key)), "6");
	/* Invalid bytes become U+FFFD, and then collide. */
	assert_string_equal(json_string_value(
	                        json_object_get(c, "\xef\xbf\xbd")),
	    "7");
	assert_string_equal(json_string_value(
	                        json_object_get(c, "\xef\xbf\xbd...#7")),
	    "8");
	assert_string_equal(json_string_value(
	                        json_object_get(c, "\xef\xbf\xbd...#8")),
	    "9");
	json_decref(o);
	lines_free(l);
	assert_verifies(f->path, 1);
	free(long1);
	free(long2);
}

/* ---- chain ------------------------------------------------------------ */

static void
test_audit_reopen_continues(void **state)
{
	struct fx *f = *state;
	struct kwd_audit *a = NULL;
	struct kwd_audit_rec r = plain_rec(9);
	struct lines *l;
	json_t *last, *first;
	struct stat st;

	/* Large enough that open reads only the tail (64 KiB). */
	make_log(f->path, 400);
	assert_int_equal(stat(f->path, &st), 0);
	assert_true(st.st_size > 2 * 65536);
	assert_verifies(f->path, 400);
	for (int round = 0; round < 3; round++) {
		assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
		for (int i = 0; i < 5; i++)
			assert_int_equal(kwd_audit_write(a, &r), KW_OK);
		kwd_audit_free(a);
	}
	l = split(f->path);
	assert_int_equal(l->n, 415);
	last = parse_line(l, 399);
	first = parse_line(l, 400);
	assert_int_equal(json_integer_value(json_object_get(first, "seq")),
	    401);
	assert_string_equal(json_string_value(json_object_get(first, "prev")),
	    json_string_value(json_object_get(last, "hash")));
	json_decref(last);
	json_decref(first);
	lines_free(l);
	assert_verifies(f->path, 415);
}

static void
test_audit_new_and_empty(void **state)
{
	struct fx *f = *state;
	struct kwd_audit *a = NULL;
	struct kwd_audit_rec r = plain_rec(1);
	struct stat st;
	mode_t old = umask(0);

	/* A new file is 0600 whatever the umask. */
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	umask(old);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, 0);
	kwd_audit_free(a);
	assert_verifies(f->path, 0);
	/* An existing empty file starts at seq 1 too. */
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	kwd_audit_free(a);
	assert_int_equal(count_in_file(f->path, "{\"seq\":1,"), 1);
	assert_int_equal(count_in_file(f->path, "\"prev\":\"" ZEROS "\""), 1);
	assert_verifies(f->path, 1);
}

/* ---- tampering -------------------------------------------------------- */

static void
test_audit_tamper_delete(void **state)
{
	struct fx *f = *state;
	struct lines *l;
	size_t order[8], n;

	make_log(f->path, 6);
	l = split(f->path);
	for (size_t del = 0; del < 5; del++) {
		n = 0;
		for (size_t i = 0; i < 6; i++)
			if (i != del)
				order[n++] = i;
		rewrite(f->path, l, order, n);
		assert_bad_at(f->path, del + 1, "deleted line");
	}
	/* Two lines deleted in the middle. */
	order[0] = 0, order[1] = 1, order[2] = 4, order[3] = 5;
	rewrite(f->path, l, order, 4);
	assert_bad_at(f->path, 3, "two deleted lines");
	/*
	 * Whole lines cut from the end leave a valid shorter chain: only an
	 * anchor outside the file (the checkpoint, docs/AUDIT.md) shows that.
	 */
	for (size_t i = 0; i < 5; i++)
		order[i] = i;
	rewrite(f->path, l, order, 5);
	assert_verifies(f->path, 5);
	lines_free(l);
}

static void
test_audit_tamper_reorder(void **state)
{
	struct fx *f = *state;
	struct lines *l;
	size_t order[6];

	make_log(f->path, 6);
	l = split(f->path);
	for (size_t k = 0; k < 5; k++) {
		for (size_t i = 0; i < 6; i++)
			order[i] = i;
		order[k] = k + 1;
		order[k + 1] = k;
		rewrite(f->path, l, order, 6);
		assert_bad_at(f->path, k + 1, "swapped lines");
	}
	/* The first line moved to the end. */
	for (size_t i = 0; i < 6; i++)
		order[i] = (i + 1) % 6;
	rewrite(f->path, l, order, 6);
	assert_bad_at(f->path, 1, "rotated lines");
	lines_free(l);
}

static void
test_audit_tamper_insert(void **state)
{
	struct fx *f = *state;
	struct lines *l;
	size_t order[8];

	make_log(f->path, 6);
	l = split(f->path);
	/* A copy of line 2 after line 4. */
	size_t a[] = {0, 1, 2, 3, 1, 4, 5};
	memcpy(order, a, sizeof a);
	rewrite(f->path, l, order, 7);
	assert_bad_at(f->path, 5, "copied line inserted");
	/* A line repeated right after itself. */
	size_t b[] = {0, 1, 2, 2, 3, 4, 5};
	memcpy(order, b, sizeof b);
	rewrite(f->path, l, order, 7);
	assert_bad_at(f->path, 4, "repeated line");
	/* A copy of the last line appended. */
	size_t c[] = {0, 1, 2, 3, 4, 5, 5};
	memcpy(order, c, sizeof c);
	rewrite(f->path, l, order, 7);
	assert_bad_at(f->path, 7, "last line repeated");
	/* Line 1 of another log of the same shape. */
	size_t d[] = {0, 0, 1, 2, 3, 4, 5};
	memcpy(order, d, sizeof d);
	rewrite(f->path, l, order, 7);
	assert_bad_at(f->path, 2, "first line repeated");
	lines_free(l);
}

/* Every byte of a line, changed two ways: the change is found there. */
static void
edit_every_byte(const char *path, const struct lines *l, size_t line)
{
	char *buf = malloc(l->len);
	char what[64];

	assert_non_null(buf);
	for (size_t pos = 0; pos <= l->llen[line]; pos++) {
		for (int way = 0; way < 2; way++) {
			size_t at = l->off[line] + pos;
			char c = l->buf[at];

			memcpy(buf, l->buf, l->len);
			/* ^1 keeps digits digits and letters letters; ^0x20
			 * changes case (upper-case hex) or flips a digit to a
			 * control byte. */
			buf[at] = (char)(c ^ (way == 0 ? 0x01 : 0x20));
			spit(path, buf, l->len);
			snprintf(what, sizeof what, "line %zu byte %zu way %d",
			    line + 1, pos + 1, way);
			assert_bad_at(path, line + 1, what);
		}
	}
	free(buf);
}

static void
test_audit_tamper_edit(void **state)
{
	struct fx *f = *state;
	struct lines *l;

	make_log(f->path, 6);
	l = split(f->path);
	/* Lines of each shape (make_log varies the fields by i % 3) and
	 * the last one, whose '\n' is the end of the file. */
	edit_every_byte(f->path, l, 0);
	edit_every_byte(f->path, l, 1);
	edit_every_byte(f->path, l, 2);
	edit_every_byte(f->path, l, 5);
	lines_free(l);
}

/* Line 2 of l replaced by mid[0..midlen), the rest as it was. */
static void
replace_line2(const char *path, const struct lines *l, const char *mid,
    size_t midlen)
{
	size_t tail = l->off[2], len = l->llen[0] + 1 + midlen + l->len - tail;
	char *buf = malloc(len);

	assert_non_null(buf);
	memcpy(buf, l->buf, l->llen[0] + 1);
	memcpy(buf + l->llen[0] + 1, mid, midlen);
	memcpy(buf + l->llen[0] + 1 + midlen, l->buf + tail, l->len - tail);
	spit(path, buf, len);
	free(buf);
}

/* The same JSON values in other bytes, with the old hash. */
static void
test_audit_tamper_reformat(void **state)
{
	struct fx *f = *state;
	struct lines *l;
	const char *line2;
	char *p, *buf;
	size_t len2, at;
	json_t *o;

	make_log(f->path, 3);
	l = split(f->path);
	line2 = l->buf + l->off[1];
	len2 = l->llen[1];
	buf = malloc(len2 + 64);
	assert_non_null(buf);

	/* Re-serialized by jansson: ", " and ": " between items. */
	o = parse_line(l, 1);
	p = json_dumps(o, JSON_PRESERVE_ORDER);
	assert_non_null(p);
	json_decref(o);
	len2 = strlen(p);
	p[len2] = '\n'; /* over the NUL: the length is what counts */
	replace_line2(f->path, l, p, len2 + 1);
	assert_bad_at(f->path, 2, "re-serialized line");
	free(p);

	/* Trailing whitespace, which JSON allows. */
	len2 = l->llen[1];
	memcpy(buf, line2, len2);
	memcpy(buf + len2, " \n", 2);
	replace_line2(f->path, l, buf, len2 + 2);
	assert_bad_at(f->path, 2, "trailing space");

	/* "\u0064ecrypt" for "decrypt". */
	p = memmem(line2, len2, "decrypt", 7);
	assert_non_null(p);
	at = (size_t)(p - line2);
	memcpy(buf, line2, at);
	memcpy(buf + at, "\\u0064", 6);
	memcpy(buf + at + 6, line2 + at + 1, len2 - at - 1);
	buf[len2 + 5] = '\n';
	replace_line2(f->path, l, buf, len2 + 6);
	assert_bad_at(f->path, 2, "escaped look-alike");

	/* jansson's compact output of a plain record is keyward's line
	 * (an independent writer agrees), but with "op" moved first it is
	 * not. */
	o = parse_line(l, 1);
	p = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	assert_non_null(p);
	assert_int_equal(strlen(p), len2);
	assert_memory_equal(p, line2, len2);
	free(p);
	{
		json_t *moved = json_object(), *v;
		const char *k;

		assert_non_null(moved);
		json_object_set(moved, "op", json_object_get(o, "op"));
		json_object_foreach (o, k, v) {
			if (strcmp(k, "op") != 0)
				json_object_set(moved, k, v);
		}
		p = json_dumps(moved, JSON_COMPACT | JSON_PRESERVE_ORDER);
		assert_non_null(p);
		json_decref(moved);
	}
	json_decref(o);
	len2 = strlen(p);
	p[len2] = '\n';
	replace_line2(f->path, l, p, len2 + 1);
	assert_bad_at(f->path, 2, "keys reordered");
	free(p);
	free(buf);
	lines_free(l);
}

static void
test_audit_tamper_truncate(void **state)
{
	struct fx *f = *state;
	struct lines *l;

	make_log(f->path, 4);
	l = split(f->path);
	/* Cut anywhere inside the last line, its '\n' included. */
	for (size_t keep = 0; keep < l->llen[3] + 1; keep += 7) {
		spit(f->path, l->buf, l->off[3] + keep);
		if (keep == 0)
			assert_verifies(f->path, 3); /* a whole line gone */
		else
			assert_bad_at(f->path, 4, "truncated last line");
	}
	spit(f->path, l->buf, l->len - 1);
	assert_bad_at(f->path, 4, "no final newline");
	/* A line cut short in the middle, the rest intact. */
	{
		size_t cut = l->off[1] + l->llen[1] / 2;
		char *buf = malloc(l->len);

		assert_non_null(buf);
		memcpy(buf, l->buf, cut);
		memcpy(buf + cut, l->buf + l->off[1] + l->llen[1],
		    l->len - (l->off[1] + l->llen[1]));
		spit(f->path, buf, cut + l->len - (l->off[1] + l->llen[1]));
		assert_bad_at(f->path, 2, "line cut in the middle");
		free(buf);
	}
	lines_free(l);
}

/* ---- open ------------------------------------------------------------- */

static void
test_audit_open_refuses_bad_tail(void **state)
{
	struct fx *f = *state;
	struct kwd_audit *a = NULL;
	struct lines *l;
	char *buf, *big;
	size_t at;

	make_log(f->path, 5);
	l = split(f->path);
	buf = malloc(l->len + 70000);
	assert_non_null(buf);

	/* One byte of the last line changed. */
	memcpy(buf, l->buf, l->len);
	at = l->off[4] + 40;
	buf[at] ^= 1;
	spit(f->path, buf, l->len);
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_ERR_AUTH);
	assert_true(count_in_file(f->logpath, "fails its check") >= 1);

	/* A torn last line: the operator is told to truncate it. */
	spit(f->path, l->buf, l->len - 20);
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_ERR_AUTH);
	assert_true(count_in_file(f->logpath,
	                "truncate it after its last "
	                "complete line") >= 1);
	/* Once truncated back to a whole line, the chain goes on. */
	spit(f->path, l->buf, l->off[4]);
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	{
		struct kwd_audit_rec r = plain_rec(5);

		assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	}
	kwd_audit_free(a);
	assert_verifies(f->path, 5);

	/* Garbage, an empty line, a non-object. */
	const char *const junk[] = {"garbage\n", "\n", "[1,2]\n", "{}\n",
	    "{\"seq\":6}\n"};
	for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
		memcpy(buf, l->buf, l->len);
		memcpy(buf + l->len, junk[i], strlen(junk[i]));
		spit(f->path, buf, l->len + strlen(junk[i]));
		assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_ERR_AUTH);
	}

	/* A last line over 64 KiB. */
	big = repeat("x", 70000);
	memcpy(buf, l->buf, l->len);
	memcpy(buf + l->len, big, 69999);
	buf[l->len + 69999] = '\n';
	spit(f->path, buf, l->len + 70000);
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_ERR_AUTH);
	free(big);

	/*
	 * The documented limit: open checks the last line alone. A bad line
	 * earlier is found by verify, not by open.
	 */
	memcpy(buf, l->buf, l->len);
	buf[l->off[1] + 30] ^= 1;
	spit(f->path, buf, l->len);
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	kwd_audit_free(a);
	assert_bad_at(f->path, 2, "earlier edit");
	free(buf);
	lines_free(l);
}

static void
test_audit_open_checks_file(void **state)
{
	struct fx *f = *state;
	struct kwd_audit *a = NULL, *b = NULL;
	char p[160];

	/* Not a regular file. */
	assert_int_not_equal(kwd_audit_open(f->dir, 0, &a), KW_OK);
	assert_null(a);
	/* No such directory. */
	snprintf(p, sizeof p, "%s/nope/audit.log", f->dir);
	assert_int_equal(kwd_audit_open(p, 0, &a), KW_ERR_IO);
	/* Writable by others: their edits would be history. */
	make_log(f->path, 1);
	assert_int_equal(chmod(f->path, 0620), 0);
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_ERR_PERM);
	assert_int_equal(chmod(f->path, 0602), 0);
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_ERR_PERM);
	/* Readable by a group (a log shipper) is fine. */
	assert_int_equal(chmod(f->path, 0640), 0);
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	/* One writer at a time. */
	assert_int_equal(kwd_audit_open(f->path, 0, &b), KW_ERR_UNAVAILABLE);
	assert_null(b);
	kwd_audit_free(a);
	assert_int_equal(kwd_audit_open(f->path, 0, &b), KW_OK);
	kwd_audit_free(b);
	/* A symlink to a regular file is followed (operators use them). */
	snprintf(p, sizeof p, "%s/link.log", f->dir);
	assert_int_equal(symlink(f->path, p), 0);
	assert_int_equal(kwd_audit_open(p, 0, &a), KW_OK);
	kwd_audit_free(a);
}

static void
test_audit_invalid_args(void **state)
{
	struct fx *f = *state;
	struct kwd_audit *a = NULL;
	struct kwd_audit_rec r = plain_rec(1);
	struct kwd_ctx_pair bad_ctx[] = {{"k", NULL}};
	char reason[64];
	uint64_t n;

	assert_int_equal(kwd_audit_open(NULL, 0, &a), KW_ERR_INVALID);
	assert_int_equal(kwd_audit_open(f->path, 0, NULL), KW_ERR_INVALID);
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	assert_int_equal(kwd_audit_write(NULL, &r), KW_ERR_INVALID);
	assert_int_equal(kwd_audit_write(a, NULL), KW_ERR_INVALID);
	r.op = NULL;
	assert_int_equal(kwd_audit_write(a, &r), KW_ERR_INVALID);
	r = plain_rec(1);
	r.outcome = "maybe";
	assert_int_equal(kwd_audit_write(a, &r), KW_ERR_INVALID);
	r.outcome = NULL;
	assert_int_equal(kwd_audit_write(a, &r), KW_ERR_INVALID);
	r = plain_rec(1);
	r.ctx = NULL;
	assert_int_equal(kwd_audit_write(a, &r), KW_ERR_INVALID);
	r.ctx = bad_ctx;
	r.nctx = 1;
	assert_int_equal(kwd_audit_write(a, &r), KW_ERR_INVALID);
	/* A caller's mistake is not the log's failure. */
	assert_true(kwd_audit_ok(a, reason, sizeof reason));
	assert_string_equal(reason, "");
	r = plain_rec(1);
	r.reason = NULL; /* written as "" */
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	kwd_audit_free(a);
	kwd_audit_free(NULL);
	assert_false(kwd_audit_ok(NULL, reason, sizeof reason));
	assert_int_equal(kwd_audit_sync(NULL), KW_ERR_INVALID);
	assert_int_equal(kwd_audit_verify(NULL, &n, NULL, NULL, 0),
	    KW_ERR_INVALID);
	assert_int_equal(count_in_file(f->path, "\"reason\":\"\""), 1);
	assert_verifies(f->path, 1);
}

/* ---- verify ----------------------------------------------------------- */

static void
test_audit_verify_limits(void **state)
{
	struct fx *f = *state;
	char err[256], *big, *buf;
	uint64_t n = 77, bad = 77;
	struct lines *l;

	/* Missing file, a directory: I/O errors, no line named. */
	assert_int_equal(kwd_audit_verify(f->path, &n, &bad, err, sizeof err),
	    KW_ERR_IO);
	assert_int_equal(n, 77);
	assert_int_equal(bad, 77);
	assert_non_null(strstr(err, "No such file"));
	assert_int_equal(kwd_audit_verify(f->dir, &n, &bad, err, sizeof err),
	    KW_ERR_IO);
	/* Output buffers are optional. */
	make_log(f->path, 2);
	assert_int_equal(kwd_audit_verify(f->path, NULL, NULL, NULL, 0), KW_OK);
	/* A line longer than 64 KiB, with and without a newline. */
	l = split(f->path);
	big = repeat("{", 200000);
	buf = malloc(l->len + 200001);
	assert_non_null(buf);
	memcpy(buf, l->buf, l->len);
	memcpy(buf + l->len, big, 200000);
	spit(f->path, buf, l->len + 200000);
	assert_bad_at(f->path, 3, "long line without newline");
	buf[l->len + 199999] = '\n';
	spit(f->path, buf, l->len + 200000);
	assert_bad_at(f->path, 3, "long line");
	assert_int_equal(kwd_audit_verify(f->path, &n, &bad, err, sizeof err),
	    KW_ERR_AUTH);
	assert_non_null(strstr(err, "64 KiB"));
	/* Deep nesting is jansson's to refuse, within 64 KiB. */
	memcpy(buf, l->buf, l->len);
	memcpy(buf + l->len, big, 60000);
	buf[l->len + 60000] = '\n';
	spit(f->path, buf, l->len + 60001);
	assert_bad_at(f->path, 3, "deep nesting");
	/* An unknown field, with control bytes in its name: the message
	 * stays printable. */
	{
		static const char esc[] = "{\"seq\":1,\"\\u001b[31mx\":1}\n";

		spit(f->path, esc, strlen(esc));
	}
	assert_int_equal(kwd_audit_verify(f->path, &n, &bad, err, sizeof err),
	    KW_ERR_AUTH);
	assert_non_null(strstr(err, "unknown field"));
	for (char *p = err; *p; p++)
		assert_true(*p >= 0x20 && *p < 0x7f);
	/* A NUL byte, a tiny error buffer. */
	spit(f->path, "{\"seq\":1}\0\n", 11);
	assert_int_equal(kwd_audit_verify(f->path, &n, &bad, err, 4),
	    KW_ERR_AUTH);
	assert_int_equal(strlen(err), 3);
	/* An empty file is an empty log. */
	spit(f->path, "", 0);
	assert_verifies(f->path, 0);
	free(big);
	free(buf);
	lines_free(l);
}

/* ---- durability and failure ------------------------------------------- */

static void
test_audit_sync_calls(void **state)
{
	struct fx *f = *state;
	struct kwd_audit *a = NULL;
	struct kwd_audit_rec r = plain_rec(1);
	struct timespec ms250 = {0, 250 * 1000 * 1000};
	struct timespec ms200 = {0, 200 * 1000 * 1000};

	/* sync_ms 0: one fdatasync per record, before write returns. */
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	atomic_store(&datasync_calls, 0);
	for (int i = 1; i <= 10; i++) {
		assert_int_equal(kwd_audit_write(a, &r), KW_OK);
		assert_int_equal(atomic_load(&datasync_calls), i);
	}
	/* Nothing left to sync. */
	assert_int_equal(kwd_audit_sync(a), KW_OK);
	assert_int_equal(atomic_load(&datasync_calls), 10);
	kwd_audit_free(a);
	assert_int_equal(atomic_load(&datasync_calls), 10);

	/* A long interval: the timer's kwd_audit_sync does it. */
	assert_int_equal(kwd_audit_open(f->path, 60000, &a), KW_OK);
	atomic_store(&datasync_calls, 0);
	for (int i = 0; i < 10; i++)
		assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	assert_int_equal(atomic_load(&datasync_calls), 0);
	assert_int_equal(kwd_audit_sync(a), KW_OK);
	assert_int_equal(atomic_load(&datasync_calls), 1);
	assert_int_equal(kwd_audit_sync(a), KW_OK);
	assert_int_equal(atomic_load(&datasync_calls), 1);
	/* free syncs what the owner left unsynced. */
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	kwd_audit_free(a);
	assert_int_equal(atomic_load(&datasync_calls), 2);

	/* A short interval: the owner's timer is late once twice the
	 * interval has passed, and then a write syncs. */
	assert_int_equal(kwd_audit_open(f->path, 200, &a), KW_OK);
	atomic_store(&datasync_calls, 0);
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	assert_int_equal(atomic_load(&datasync_calls), 0);
	nanosleep(&ms250, NULL); /* past the interval, not twice it */
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	assert_int_equal(atomic_load(&datasync_calls), 0);
	nanosleep(&ms200, NULL); /* past twice the interval */
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	assert_int_equal(atomic_load(&datasync_calls), 1);
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	assert_int_equal(atomic_load(&datasync_calls), 1);
	kwd_audit_free(a);
	assert_verifies(f->path, 25);
}

static void
test_audit_fdatasync_failure_fails_closed(void **state)
{
	struct fx *f = *state;
	struct kwd_audit *a = NULL;
	struct kwd_audit_rec r = plain_rec(1);
	char reason[256];

	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	atomic_store(&datasync_errno, EIO);
	assert_int_equal(kwd_audit_write(a, &r), KW_ERR_IO);
	atomic_store(&datasync_errno, 0);
	assert_false(kwd_audit_ok(a, reason, sizeof reason));
	assert_non_null(strstr(reason, "fdatasync"));
	assert_non_null(strstr(reason, "Input/output error"));
	/* Broken for good, even once the disk recovers. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(kwd_audit_write(a, &r), KW_ERR_IO);
	assert_int_equal(kwd_audit_sync(a), KW_ERR_IO);
	assert_false(kwd_audit_ok(a, NULL, 0));
	kwd_audit_free(a);
	assert_int_equal(count_in_file(f->logpath, "event=audit.broken"), 1);
	/* The failed record was written, not acknowledged: still a chain. */
	assert_verifies(f->path, 2);

	/* With an interval, the timer's sync is where it fails. */
	assert_int_equal(kwd_audit_open(f->path, 60000, &a), KW_OK);
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	atomic_store(&datasync_errno, ENOSPC);
	assert_int_equal(kwd_audit_sync(a), KW_ERR_IO);
	atomic_store(&datasync_errno, 0);
	assert_false(kwd_audit_ok(a, reason, sizeof reason));
	assert_non_null(strstr(reason, "No space"));
	assert_int_equal(kwd_audit_write(a, &r), KW_ERR_IO);
	kwd_audit_free(a);
	assert_int_equal(count_in_file(f->logpath, "event=audit.broken"), 2);
}

static void
test_audit_full_disk_fails_closed(void **state)
{
	struct fx *f = *state;
	struct kwd_audit *a = NULL;
	struct kwd_audit_rec r = plain_rec(1);
	char path[192], filler[192], reason[256], block[4096];
	uint64_t n = 0, bad = 0;
	int rv = KW_OK, fd, written = 0;

	snprintf(f->mnt, sizeof f->mnt, "%s/mnt", f->dir);
	assert_int_equal(mkdir(f->mnt, 0700), 0);
	if (mount("tmpfs", f->mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=16k") !=
	    0) {
		fprintf(stderr,
		    "SKIP: test_audit_full_disk_fails_closed: "
		    "cannot mount a tmpfs (%s): needs root or "
		    "CAP_SYS_ADMIN\n",
		    strerror(errno));
		skip();
	}
	f->mounted = true;
	snprintf(path, sizeof path, "%s/audit.log", f->mnt);
	snprintf(filler, sizeof filler, "%s/filler", f->mnt);
	/* Some space taken by another file, freed later. */
	memset(block, 'f', sizeof block);
	fd = open(filler, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, block, sizeof block), sizeof block);
	close(fd);

	assert_int_equal(kwd_audit_open(path, 0, &a), KW_OK);
	for (int i = 0; i < 1000 && rv == KW_OK; i++) {
		rv = kwd_audit_write(a, &r);
		if (rv == KW_OK)
			written++;
	}
	assert_int_equal(rv, KW_ERR_IO);
	assert_true(written > 0);
	assert_false(kwd_audit_ok(a, reason, sizeof reason));
	if (strstr(reason, "No space") == NULL)
		fail_msg("reason: %s", reason);
	/* Space again: the log stays broken. */
	assert_int_equal(unlink(filler), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(kwd_audit_write(a, &r), KW_ERR_IO);
	assert_int_equal(kwd_audit_sync(a), KW_ERR_IO);
	assert_false(kwd_audit_ok(a, NULL, 0));
	kwd_audit_free(a);
	assert_int_equal(count_in_file(f->logpath, "event=audit.broken"), 1);

	/* What is on disk: the acknowledged records, then maybe a partial
	 * line, which verify reports and open refuses. */
	rv = verify(path, &n, &bad);
	if (rv == KW_OK) {
		assert_int_equal(n, written);
	} else {
		assert_int_equal(rv, KW_ERR_AUTH);
		assert_int_equal(bad, written + 1);
		assert_int_equal(kwd_audit_open(path, 0, &a), KW_ERR_AUTH);
	}
}

static void
test_audit_file_replaced_after_open(void **state)
{
	struct fx *f = *state;
	struct kwd_audit *a = NULL;
	struct kwd_audit_rec r = plain_rec(1);
	char moved[160], reason[256];

	snprintf(moved, sizeof moved, "%s.moved", f->path);

	/* Made read-only after open: the open descriptor still writes, as
	 * with any file (permissions are checked at open). */
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	assert_int_equal(chmod(f->path, 0400), 0);
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	assert_true(kwd_audit_ok(a, NULL, 0));
	kwd_audit_free(a);
	assert_int_equal(chmod(f->path, 0600), 0);
	assert_verifies(f->path, 1);

	/* Replaced by a directory: records would go to a file no one
	 * reads; the next sync finds out (sync_ms 0: the same write). */
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	assert_int_equal(rename(f->path, moved), 0);
	assert_int_equal(mkdir(f->path, 0700), 0);
	assert_int_equal(kwd_audit_write(a, &r), KW_ERR_IO);
	assert_false(kwd_audit_ok(a, reason, sizeof reason));
	assert_non_null(strstr(reason, "replaced"));
	assert_int_equal(rmdir(f->path), 0);
	assert_int_equal(rename(moved, f->path), 0);
	/* Even back in place: broken until restarted. */
	assert_int_equal(kwd_audit_write(a, &r), KW_ERR_IO);
	kwd_audit_free(a);

	/* Removed, with an interval: the timer's sync finds out. */
	assert_int_equal(kwd_audit_open(f->path, 60000, &a), KW_OK);
	assert_int_equal(rename(f->path, moved), 0);
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	assert_int_equal(kwd_audit_sync(a), KW_ERR_IO);
	assert_false(kwd_audit_ok(a, reason, sizeof reason));
	assert_non_null(strstr(reason, "moved or removed"));
	kwd_audit_free(a);
	assert_verifies(moved, 3);
}

/* ---- threads ---------------------------------------------------------- */

#define THREADS 4
#define PER_THREAD 2500

struct worker {
	struct kwd_audit *a;
	unsigned id;
	int failures;
};

static void *
worker_run(void *arg)
{
	struct worker *w = arg;
	struct kwd_audit_rec r = plain_rec(0);
	char reason[64];

	for (unsigned i = 0; i < PER_THREAD; i++) {
		r.rid = (uint64_t)w->id << 32 | i;
		snprintf(reason, sizeof reason, "thread %u record %u", w->id,
		    i);
		r.reason = reason;
		if (kwd_audit_write(w->a, &r) != KW_OK)
			w->failures++;
	}
	return NULL;
}

static void
test_audit_threads(void **state)
{
	struct fx *f = *state;
	struct worker w[THREADS];
	pthread_t t[THREADS];
	struct kwd_audit *a = NULL;
	struct lines *l;
	unsigned seen[THREADS] = {0};

	/* sync_ms 0: writers share fdatasyncs (group commit). */
	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	atomic_store(&datasync_calls, 0);
	for (unsigned i = 0; i < THREADS; i++) {
		w[i] = (struct worker){a, i, 0};
		assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w[i]),
		    0);
	}
	for (unsigned i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(w[i].failures, 0);
	}
	assert_true(atomic_load(&datasync_calls) <= THREADS * PER_THREAD);
	print_message("threads: %d fdatasyncs for %d records\n",
	    atomic_load(&datasync_calls), THREADS * PER_THREAD);
	kwd_audit_free(a);
	assert_verifies(f->path, THREADS * PER_THREAD);
	/* Each thread's records all there, in its own order. */
	l = split(f->path);
	for (size_t i = 0; i < l->n; i++) {
		json_t *o = parse_line(l, i);
		const char *rid = json_string_value(json_object_get(o, "rid"));
		unsigned long long v = strtoull(rid, NULL, 16);
		unsigned id = (unsigned)(v >> 32), n = (unsigned)v;

		assert_true(id < THREADS);
		assert_int_equal(n, seen[id]);
		seen[id]++;
		json_decref(o);
	}
	for (unsigned i = 0; i < THREADS; i++)
		assert_int_equal(seen[i], PER_THREAD);
	lines_free(l);
}

/* ---- secrets ---------------------------------------------------------- */

static void
test_audit_only_given_fields(void **state)
{
	struct fx *f = *state;
	struct kwd_audit *a = NULL;
	struct kwd_audit_rec r = plain_rec(0x1234);
	unsigned char rnd[16];
	char canary[80], escaped[96];
	struct lines *l;
	json_t *o, *c;
	size_t len;
	char *all;

	/* Made at run time: a literal would be found in the binary. */
	assert_int_equal(getrandom(rnd, sizeof rnd, 0), sizeof rnd);
	len = (size_t)snprintf(canary, sizeof canary, "canary-");
	for (size_t i = 0; i < 8; i++)
		len += (size_t)snprintf(canary + len, sizeof canary - len,
		    "%02x", rnd[i]);
	canary[len++] = '"';
	for (size_t i = 8; i < 16; i++)
		len += (size_t)snprintf(canary + len, sizeof canary - len,
		    "%02x", rnd[i]);
	memcpy(escaped, canary, 23);
	escaped[23] = '\\';
	memcpy(escaped + 24, canary + 23, strlen(canary + 23) + 1);

	assert_int_equal(kwd_audit_open(f->path, 0, &a), KW_OK);
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	r.identity = canary;
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	r = plain_rec(0x1234);
	assert_int_equal(kwd_audit_write(a, &r), KW_OK);
	kwd_audit_free(a);

	all = slurp(f->path, &len);
	assert_int_equal(count(all, len, escaped, strlen(escaped)), 1);
	assert_int_equal(count(all, len, canary, strlen(canary)), 0);
	assert_int_equal(count(all, len, canary, 23), 1); /* the prefix */
	free(all);
	assert_int_equal(count_in_file(f->logpath, canary + 7), 0);

	/* The line holds the record's fields, with their values, and the
	 * chain's: nothing else. */
	l = split(f->path);
	o = parse_line(l, 1);
	assert_int_equal(json_object_size(o), 14);
	assert_int_equal(json_integer_value(json_object_get(o, "seq")), 2);
	assert_string_equal(json_string_value(json_object_get(o, "rid")),
	    "0000000000001234");
	assert_string_equal(json_string_value(json_object_get(o, "identity")),
	    canary);
	assert_string_equal(json_string_value(json_object_get(o, "op")),
	    "decrypt");
	assert_string_equal(json_string_value(json_object_get(o, "resource")),
	    "datasets");
	c = json_object_get(o, "context");
	assert_int_equal(json_object_size(c), 2);
	assert_string_equal(json_string_value(json_object_get(c, "dataset")),
	    "imagenet-2026");
	assert_string_equal(json_string_value(json_object_get(c, "job")),
	    "train-7");
	assert_string_equal(json_string_value(json_object_get(o, "outcome")),
	    "allowed");
	assert_string_equal(json_string_value(json_object_get(o, "reason")),
	    "rule 0 grant 1");
	assert_int_equal(json_integer_value(json_object_get(o, "status")), 200);
	assert_int_equal(json_integer_value(json_object_get(o, "latency_us")),
	    153);
	assert_string_equal(json_string_value(json_object_get(o, "remote")),
	    "127.0.0.1");
	assert_true(json_is_string(json_object_get(o, "time")));
	assert_true(json_is_string(json_object_get(o, "prev")));
	assert_true(json_is_string(json_object_get(o, "hash")));
	json_decref(o);
	lines_free(l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_audit_exact_escaping, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_audit_lines_are_json, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_audit_field_caps, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_audit_context_keys_unique,
	        setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_reopen_continues, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_audit_new_and_empty, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_audit_tamper_delete, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_audit_tamper_reorder, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_audit_tamper_insert, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_audit_tamper_edit, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_audit_tamper_reformat, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_audit_tamper_truncate, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_audit_open_refuses_bad_tail,
	        setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_open_checks_file, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_audit_invalid_args, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_audit_verify_limits, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_audit_sync_calls, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(
	        test_audit_fdatasync_failure_fails_closed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_full_disk_fails_closed,
	        setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_file_replaced_after_open,
	        setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_threads, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_audit_only_given_fields, setup,
	        teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

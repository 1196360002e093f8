/*
 * audit.c: the hash-chained audit log (audit.h, docs/AUDIT.md).
 *
 * Lines are built here byte by byte, not with jansson: the hash covers
 * the exact bytes and the key order is part of the format. The verifier
 * parses a line with jansson (duplicate keys refused), renders the values
 * again with the same writer and compares bytes, so only a line keyward
 * itself could have written passes, whatever JSON look-alike (other
 * whitespace, escapes or key order) an editor produces.
 *
 * Locking: a->mu covers the chain (seq, prev), the write(2) and the sync
 * bookkeeping. A record's body is rendered before taking it, its head
 * (seq, time) and its tail (prev, hash) under it. fdatasync runs without
 * the lock so that other writers keep appending meanwhile, and writers
 * that wait for durability at the same time share one fdatasync (group
 * commit, DESIGN.md section 5).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define HASH_LEN 32
#define HEX_LEN (2 * HASH_LEN)
#define TIME_LEN 27 /* 2026-11-22T05:12:04.123456Z */
#define RID_LEN 16

/*
 * Caps on a field's escaped content (between its quotes), "..." included.
 * Counting escaped bytes rather than input bytes is what bounds the line:
 * a control byte takes 6 bytes escaped and an invalid byte 3.
 */
#define CAP_IDENTITY 255
#define CAP_OP 64
#define CAP_RESOURCE 255
#define CAP_OUTCOME 16
#define CAP_REASON 512
#define CAP_REMOTE 64
#define CAP_CTX_KEY 128
#define CAP_CTX_VALUE 256
#define CTX_PAIRS_MAX 32

/* A written line, '\n' included, never exceeds this. */
#define LINE_MAX_BYTES (16 * 1024)
/* The longest line (without its '\n') that open and verify read. */
#define READ_LINE_MAX (64 * 1024)
/* verify's read buffer: large, so that moving a partial line to its
 * front happens once per many lines. */
#define VERIFY_BUF (4 * READ_LINE_MAX)

/* Worst cases, to prove that LINE_MAX_BYTES holds. ,"name":"<cap>" */
#define SFIELD(namelen, cap) ((namelen) + (cap) + 6)
/* {"seq":<20 digits>,"time":"<TIME_LEN>" */
#define HEAD_MAX (7 + 20 + 9 + TIME_LEN + 1)
/* "key":"value", */
#define PAIR_MAX (CAP_CTX_KEY + CAP_CTX_VALUE + 6)
#define BODY_MAX                                                            \
	(SFIELD(3, RID_LEN) + SFIELD(8, CAP_IDENTITY) + SFIELD(2, CAP_OP) + \
	    SFIELD(8, CAP_RESOURCE) + 12 + CTX_PAIRS_MAX * PAIR_MAX + 1 +   \
	    SFIELD(7, CAP_OUTCOME) + SFIELD(6, CAP_REASON) + 10 + 11 + 14 + \
	    20 + SFIELD(6, CAP_REMOTE))
/* ,"prev":"<hex>" and ,"hash":"<hex>"} and '\n' */
#define PREV_PART_LEN (9 + HEX_LEN + 1)
#define HASH_PART_LEN (9 + HEX_LEN + 2)
#define TAIL_MAX (PREV_PART_LEN + HASH_PART_LEN + 1)
_Static_assert(HEAD_MAX + BODY_MAX + TAIL_MAX <= LINE_MAX_BYTES,
    "an audit line can exceed LINE_MAX_BYTES");

struct hasher {
	EVP_MD *md;
	EVP_MD_CTX *ctx;
};

struct kwd_audit {
	pthread_mutex_t mu;
	pthread_cond_t cv; /* a sync finished */
	char *path;
	int fd;
	dev_t dev;
	ino_t ino;
	unsigned sync_ms;
	struct hasher h;
	/* The chain: last record written and its hash. */
	uint64_t seq;
	unsigned char prev[HASH_LEN];
	/* Durability: records up to synced_seq are on disk. */
	uint64_t synced_seq;
	bool syncing;
	struct timespec last_sync; /* CLOCK_MONOTONIC */
	bool broken;
	char reason[256];
};

/* ---- small helpers ---------------------------------------------------- */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Messages may quote file contents: keep them one printable line. */
static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	for (char *p = err; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
}

/* A thread-safe strerror (the GNU strerror_r, as _GNU_SOURCE is set). */
static const char *
errstr(int e, char *buf, size_t len)
{
	return strerror_r(e, buf, len);
}

static void
to_hex(const unsigned char *b, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 0xf];
	}
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* upper case too: the format is lower case only */
}

/* Exactly 2 * n lower-case hex digits. */
static bool
from_hex(const char *s, size_t slen, unsigned char *out, size_t n)
{
	if (slen != 2 * n)
		return false;
	for (size_t i = 0; i < n; i++) {
		int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return true;
}

static int
hasher_init(struct hasher *h)
{
	h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
	h->ctx = EVP_MD_CTX_new();
	if (h->md == NULL || h->ctx == NULL)
		return KW_ERR_CRYPTO;
	return KW_OK;
}

static void
hasher_clear(struct hasher *h)
{
	EVP_MD_CTX_free(h->ctx);
	EVP_MD_free(h->md);
	h->ctx = NULL;
	h->md = NULL;
}

/* The chain link of audit.h: SHA-256(prev hash bytes || text). */
static int
link_hash(struct hasher *h, const unsigned char prev[HASH_LEN],
    const char *text, size_t len, unsigned char out[HASH_LEN])
{
	unsigned int n = 0;

	if (EVP_DigestInit_ex2(h->ctx, h->md, NULL) != 1 ||
	    EVP_DigestUpdate(h->ctx, prev, HASH_LEN) != 1 ||
	    EVP_DigestUpdate(h->ctx, text, len) != 1 ||
	    EVP_DigestFinal_ex(h->ctx, out, &n) != 1 || n != HASH_LEN)
		return KW_ERR_CRYPTO;
	return KW_OK;
}

/* ---- the line writer -------------------------------------------------- */

/* A bounded output buffer; a write that does not fit sets overflow. */
struct out {
	char *buf;
	size_t len;
	size_t cap;
	bool overflow;
};

static void
put(struct out *o, const char *s, size_t n)
{
	if (o->overflow || n > o->cap - o->len) {
		o->overflow = true;
		return;
	}
	memcpy(o->buf + o->len, s, n);
	o->len += n;
}

static void
put_lit(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

static void
put_u64(struct out *o, uint64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof num, "%" PRIu64, v);

	put(o, num, (size_t)n);
}

static void
put_int(struct out *o, int v)
{
	char num[16];
	int n = snprintf(num, sizeof num, "%d", v);

	put(o, num, (size_t)n);
}

/*
 * utf8_decode: the length of the well-formed UTF-8 sequence at s (RFC
 * 3629 section 4: no overlong forms, no surrogates, nothing above
 * U+10FFFF) with its code point in *ret_cp, or 0. The NUL that ends s is
 * not a continuation byte, so a sequence cut short by it is rejected
 * without reading past it.
 */
static size_t
utf8_decode(const unsigned char *s, uint32_t *ret_cp)
{
	uint32_t cp, min;
	size_t n;

	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		n = 2;
		cp = s[0] & 0x1f;
		min = 0x80;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3;
		cp = s[0] & 0x0f;
		min = 0x800;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4;
		cp = s[0] & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	*ret_cp = cp;
	return n;
}

static size_t
uescape(char *u, uint32_t cp)
{
	static const char digits[] = "0123456789abcdef";

	u[0] = '\\';
	u[1] = 'u';
	u[2] = digits[cp >> 12 & 0xf];
	u[3] = digits[cp >> 8 & 0xf];
	u[4] = digits[cp >> 4 & 0xf];
	u[5] = digits[cp & 0xf];
	return 6;
}

#define UNIT_MAX 6

/*
 * escape_unit: the JSON form of the character at s (not NUL) in u; returns
 * its length and sets *ret_adv to the input bytes it stands for. RFC 8259
 * section 7 requires escaping '"', '\\' and U+0000..U+001F; DEL, the C1
 * controls and U+2028/U+2029 are escaped too, so that a record cannot
 * drive a terminal or break a line in a viewer. A byte that does not
 * start a well-formed UTF-8 sequence becomes U+FFFD on its own, so that a
 * line is valid JSON whatever the caller passed. Every string has exactly
 * one escaped form (the verifier relies on that).
 */
static size_t
escape_unit(const unsigned char *s, char *u, size_t *ret_adv)
{
	uint32_t cp = 0;
	size_t n;

	*ret_adv = 1;
	if (s[0] < 0x80) {
		if (s[0] == '"' || s[0] == '\\') {
			u[0] = '\\';
			u[1] = (char)s[0];
			return 2;
		}
		if (s[0] < 0x20 || s[0] == 0x7f)
			return uescape(u, s[0]);
		u[0] = (char)s[0];
		return 1;
	}
	n = utf8_decode(s, &cp);
	if (n == 0) {
		memcpy(u, "\xef\xbf\xbd", 3);
		return 3;
	}
	*ret_adv = n;
	if (cp <= 0x9f || cp == 0x2028 || cp == 0x2029)
		return uescape(u, cp);
	memcpy(u, s, n);
	return n;
}

/*
 * put_escaped: s as a JSON string whose content (between the quotes) is
 * at most cap bytes. A string that does not fit is cut at a character
 * boundary and ends with "...". With a suffix, the string is always cut
 * so that "..." and the suffix fit (used to make context keys unique).
 */
static void
put_escaped(struct out *o, const char *str, size_t cap, const char *suffix)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t reserve = suffix != NULL ? 3 + strlen(suffix) : 0;
	size_t start, keep;
	bool cut = false;

	put(o, "\"", 1);
	start = keep = o->len;
	while (*s != '\0') {
		char u[UNIT_MAX];
		size_t adv, n = escape_unit(s, u, &adv);
		size_t used = o->len - start;

		if (used + n + reserve > cap) {
			cut = true;
			break;
		}
		put(o, u, n);
		/* The last place where "..." could still follow. */
		if (used + n + 3 <= cap)
			keep = o->len;
		s += adv;
	}
	if (cut && suffix == NULL)
		o->len = keep;
	if (cut || suffix != NULL)
		put(o, "...", 3);
	if (suffix != NULL)
		put_lit(o, suffix);
	put(o, "\"", 1);
}

/*
 * put_ctx_key: pair i's key, unique within the object. Keys that are the
 * same after escaping and cutting (two long keys with one prefix, or
 * duplicates from the caller) would make the line invalid for strict
 * parsers, so a repeat becomes "<cut key>...#i" or "...#i.t": these
 * candidates differ from each other (the text after the last '#' is "i"
 * or "i.t"), and at most CTX_PAIRS_MAX - 1 earlier keys can take them, so
 * one of the first CTX_PAIRS_MAX is free.
 */
static void
put_ctx_key(struct out *o, const char *key, size_t i, size_t *off, size_t *len)
{
	size_t at = o->len;
	char suffix[48];

	put_escaped(o, key, CAP_CTX_KEY, NULL);
	for (size_t t = 0; t < CTX_PAIRS_MAX && !o->overflow; t++) {
		bool dup = false;

		for (size_t j = 0; j < i && !dup; j++)
			dup = len[j] == o->len - at &&
			    memcmp(o->buf + off[j], o->buf + at, len[j]) == 0;
		if (!dup)
			break;
		o->len = at;
		if (t == 0)
			snprintf(suffix, sizeof suffix, "#%zu", i);
		else
			snprintf(suffix, sizeof suffix, "#%zu.%zu", i, t);
		put_escaped(o, key, CAP_CTX_KEY, suffix);
	}
	off[i] = at;
	len[i] = o->len - at;
}

/*
 * put_context: at most CTX_PAIRS_MAX pairs, in the caller's order. When
 * there are more, the last place says how many were left out rather than
 * dropping them silently.
 */
static void
put_context(struct out *o, const struct kwd_ctx_pair *ctx, size_t nctx)
{
	size_t off[CTX_PAIRS_MAX], len[CTX_PAIRS_MAX];
	size_t nuser = nctx > CTX_PAIRS_MAX ? CTX_PAIRS_MAX - 1 : nctx;
	size_t nout = nctx > CTX_PAIRS_MAX ? CTX_PAIRS_MAX : nctx;
	char more[64];

	put_lit(o, ",\"context\":{");
	for (size_t i = 0; i < nout; i++) {
		const char *k = "...", *v = more;

		if (i < nuser) {
			k = ctx[i].key;
			v = ctx[i].value;
		} else {
			snprintf(more, sizeof more,
			    "%zu more pairs not recorded", nctx - nuser);
		}
		if (i > 0)
			put(o, ",", 1);
		put_ctx_key(o, k, i, off, len);
		put(o, ":", 1);
		put_escaped(o, v, CAP_CTX_VALUE, NULL);
	}
	put(o, "}", 1);
}

/* {"seq":N,"time":"T" */
static void
put_head(struct out *o, uint64_t seq, const char *time)
{
	put_lit(o, "{\"seq\":");
	put_u64(o, seq);
	put_lit(o, ",\"time\":\"");
	put(o, time, TIME_LEN);
	put(o, "\"", 1);
}

/* From ,"rid" to the last field before prev. */
static void
put_body(struct out *o, const struct kwd_audit_rec *rec)
{
	char rid[RID_LEN + 1];

	snprintf(rid, sizeof rid, "%016" PRIx64, rec->rid);
	put_lit(o, ",\"rid\":\"");
	put(o, rid, RID_LEN);
	put(o, "\"", 1);
	if (rec->identity != NULL) {
		put_lit(o, ",\"identity\":");
		put_escaped(o, rec->identity, CAP_IDENTITY, NULL);
	}
	put_lit(o, ",\"op\":");
	put_escaped(o, rec->op, CAP_OP, NULL);
	if (rec->resource != NULL) {
		put_lit(o, ",\"resource\":");
		put_escaped(o, rec->resource, CAP_RESOURCE, NULL);
	}
	if (rec->nctx > 0)
		put_context(o, rec->ctx, rec->nctx);
	put_lit(o, ",\"outcome\":");
	put_escaped(o, rec->outcome, CAP_OUTCOME, NULL);
	put_lit(o, ",\"reason\":");
	put_escaped(o, rec->reason != NULL ? rec->reason : "", CAP_REASON,
	    NULL);
	put_lit(o, ",\"status\":");
	put_int(o, rec->status);
	/* JSON readers (jansson included) keep integers in an int64. */
	put_lit(o, ",\"latency_us\":");
	put_u64(o, rec->latency_us > INT64_MAX ? INT64_MAX : rec->latency_us);
	if (rec->remote != NULL) {
		put_lit(o, ",\"remote\":");
		put_escaped(o, rec->remote, CAP_REMOTE, NULL);
	}
}

static void
put_prev(struct out *o, const unsigned char prev[HASH_LEN])
{
	char hex[HEX_LEN];

	to_hex(prev, HASH_LEN, hex);
	put_lit(o, ",\"prev\":\"");
	put(o, hex, HEX_LEN);
	put(o, "\"", 1);
}

static void
put_hash(struct out *o, const unsigned char hash[HASH_LEN])
{
	char hex[HEX_LEN];

	to_hex(hash, HASH_LEN, hex);
	put_lit(o, ",\"hash\":\"");
	put(o, hex, HEX_LEN);
	put_lit(o, "\"}");
}

static const char *const outcomes[] = {"allowed", "denied", "rejected",
    "failed"};

static bool
outcome_valid(const char *s)
{
	for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++)
		if (strcmp(s, outcomes[i]) == 0)
			return true;
	return false;
}

static bool
rec_valid(const struct kwd_audit_rec *rec)
{
	if (rec == NULL || rec->op == NULL || rec->outcome == NULL ||
	    !outcome_valid(rec->outcome) || (rec->nctx > 0 && rec->ctx == NULL))
		return false;
	for (size_t i = 0; i < rec->nctx; i++)
		if (rec->ctx[i].key == NULL || rec->ctx[i].value == NULL)
			return false;
	return true;
}

/* RFC 3339 UTC with microseconds. */
static int
format_time(char out[TIME_LEN + 1])
{
	struct timespec ts;
	struct tm tm;
	char buf[64];
	int n;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0 ||
	    gmtime_r(&ts.tv_sec, &tm) == NULL)
		return KW_ERR_INTERNAL;
	n = snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	    tm.tm_sec, ts.tv_nsec / 1000);
	if (n != TIME_LEN) /* a year past 9999 */
		return KW_ERR_INTERNAL;
	memcpy(out, buf, TIME_LEN + 1);
	return KW_OK;
}

/* ---- the line checker (open and verify) ------------------------------- */

struct line_info {
	uint64_t seq;
	unsigned char prev[HASH_LEN];
	unsigned char hash[HASH_LEN];
};

struct checker {
	struct hasher h;
	char render[LINE_MAX_BYTES];
};

static const char *const known_keys[] = {"seq", "time", "rid", "identity", "op",
    "resource", "context", "outcome", "reason", "status", "latency_us",
    "remote", "prev", "hash"};

static bool
known_key(const char *k)
{
	for (size_t i = 0; i < sizeof known_keys / sizeof known_keys[0]; i++)
		if (strcmp(k, known_keys[i]) == 0)
			return true;
	return false;
}

/* A string field; *ret_s is NULL when an optional field is absent. */
static int
get_str(json_t *obj, const char *key, bool required, const char **ret_s,
    char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, key);

	if (v == NULL && !required) {
		*ret_s = NULL;
		return KW_OK;
	}
	if (v == NULL) {
		seterr(err, errlen, "field \"%s\" is missing", key);
		return KW_ERR_AUTH;
	}
	if (!json_is_string(v)) {
		seterr(err, errlen, "field \"%s\" is not a string", key);
		return KW_ERR_AUTH;
	}
	*ret_s = json_string_value(v);
	return KW_OK;
}

static int
get_int(json_t *obj, const char *key, json_int_t min, json_int_t max,
    json_int_t *ret_v, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, key);

	if (v == NULL) {
		seterr(err, errlen, "field \"%s\" is missing", key);
		return KW_ERR_AUTH;
	}
	if (!json_is_integer(v) || json_integer_value(v) < min ||
	    json_integer_value(v) > max) {
		seterr(err, errlen,
		    "field \"%s\" is not an integer in %lld..%lld", key,
		    (long long)min, (long long)max);
		return KW_ERR_AUTH;
	}
	*ret_v = json_integer_value(v);
	return KW_OK;
}

static bool
time_valid(const char *t)
{
	static const char pat[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";

	if (strlen(t) != TIME_LEN)
		return false;
	for (size_t i = 0; i < TIME_LEN; i++)
		if (pat[i] == 'd' ? t[i] < '0' || t[i] > '9' : t[i] != pat[i])
			return false;
	return true;
}

static int
get_context(json_t *obj, struct kwd_ctx_pair *pairs, size_t *ret_n, char *err,
    size_t errlen)
{
	json_t *c = json_object_get(obj, "context"), *v;
	const char *k;
	size_t n = 0;

	if (c == NULL) {
		*ret_n = 0;
		return KW_OK;
	}
	if (!json_is_object(c)) {
		seterr(err, errlen, "field \"context\" is not an object");
		return KW_ERR_AUTH;
	}
	if (json_object_size(c) > CTX_PAIRS_MAX) {
		seterr(err, errlen, "field \"context\" has more than %d pairs",
		    CTX_PAIRS_MAX);
		return KW_ERR_AUTH;
	}
	/* jansson keeps an object's keys in their order in the text. */
	json_object_foreach (c, k, v) {
		if (!json_is_string(v)) {
			seterr(err, errlen, "a context value is not a string");
			return KW_ERR_AUTH;
		}
		pairs[n].key = k;
		pairs[n].value = json_string_value(v);
		n++;
	}
	*ret_n = n;
	return KW_OK;
}

/*
 * check_line: line[0..len) (no '\n') is a record keyward wrote, whose hash
 * matches its own bytes and prev. Fills *ret_info. KW_ERR_AUTH with err
 * saying why; KW_ERR_NOMEM or KW_ERR_CRYPTO if it could not tell.
 */
static int
check_line(struct checker *c, const char *line, size_t len,
    struct line_info *ret_info, char *err, size_t errlen)
{
	struct kwd_ctx_pair pairs[CTX_PAIRS_MAX];
	struct kwd_audit_rec rec;
	struct line_info info;
	struct out o = {c->render, 0, sizeof c->render, false};
	unsigned char computed[HASH_LEN];
	const char *k, *time = NULL, *rid = NULL, *prev = NULL, *hash = NULL;
	json_int_t seq = 0, status = 0, latency = 0;
	json_error_t jerr;
	json_t *root = NULL, *v;
	int rv = KW_ERR_AUTH;

	memset(&rec, 0, sizeof rec);
	root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		seterr(err, errlen, "not valid JSON (column %d: %s)",
		    jerr.column, jerr.text);
		goto out;
	}
	if (!json_is_object(root)) {
		seterr(err, errlen, "not a JSON object");
		goto out;
	}
	json_object_foreach (root, k, v) {
		if (!known_key(k)) {
			seterr(err, errlen, "unknown field \"%.40s\"", k);
			goto out;
		}
	}
	if ((rv = get_int(root, "seq", 1, INT64_MAX, &seq, err, errlen)) != 0 ||
	    (rv = get_str(root, "time", true, &time, err, errlen)) != 0 ||
	    (rv = get_str(root, "rid", true, &rid, err, errlen)) != 0 ||
	    (rv = get_str(root, "identity", false, &rec.identity, err,
	         errlen)) != 0 ||
	    (rv = get_str(root, "op", true, &rec.op, err, errlen)) != 0 ||
	    (rv = get_str(root, "resource", false, &rec.resource, err,
	         errlen)) != 0 ||
	    (rv = get_context(root, pairs, &rec.nctx, err, errlen)) != 0 ||
	    (rv = get_str(root, "outcome", true, &rec.outcome, err, errlen)) !=
	        0 ||
	    (rv = get_str(root, "reason", true, &rec.reason, err, errlen)) !=
	        0 ||
	    (rv = get_int(root, "status", INT_MIN, INT_MAX, &status, err,
	         errlen)) != 0 ||
	    (rv = get_int(root, "latency_us", 0, INT64_MAX, &latency, err,
	         errlen)) != 0 ||
	    (rv = get_str(root, "remote", false, &rec.remote, err, errlen)) !=
	        0 ||
	    (rv = get_str(root, "prev", true, &prev, err, errlen)) != 0 ||
	    (rv = get_str(root, "hash", true, &hash, err, errlen)) != 0)
		goto out;
	rv = KW_ERR_AUTH;
	if (!time_valid(time)) {
		seterr(err, errlen,
		    "field \"time\" is not RFC 3339 UTC with "
		    "microseconds");
		goto out;
	}
	rec.rid = 0;
	for (size_t i = 0; i <= RID_LEN; i++) {
		if (i == RID_LEN ? rid[i] != '\0' : hex_value(rid[i]) < 0) {
			seterr(err, errlen,
			    "field \"rid\" is not 16 lower-case "
			    "hex digits");
			goto out;
		}
		if (i < RID_LEN)
			rec.rid = rec.rid << 4 | (uint64_t)hex_value(rid[i]);
	}
	if (!outcome_valid(rec.outcome)) {
		seterr(err, errlen,
		    "field \"outcome\" is not one of allowed, "
		    "denied, rejected, failed");
		goto out;
	}
	if (!from_hex(prev, strlen(prev), info.prev, HASH_LEN)) {
		seterr(err, errlen,
		    "field \"prev\" is not 64 lower-case hex "
		    "digits");
		goto out;
	}
	if (!from_hex(hash, strlen(hash), info.hash, HASH_LEN)) {
		seterr(err, errlen,
		    "field \"hash\" is not 64 lower-case hex "
		    "digits");
		goto out;
	}
	rec.ctx = pairs;
	rec.status = (int)status;
	rec.latency_us = (uint64_t)latency;
	info.seq = (uint64_t)seq;

	put_head(&o, info.seq, time);
	put_body(&o, &rec);
	put_prev(&o, info.prev);
	put_hash(&o, info.hash);
	if (o.overflow || o.len != len || memcmp(o.buf, line, len) != 0) {
		size_t at = 0;

		while (at < len && at < o.len && o.buf[at] == line[at])
			at++;
		seterr(err, errlen,
		    "not as keyward writes it (from byte %zu: "
		    "whitespace, escaping, key order or field "
		    "length differ)",
		    at + 1);
		goto out;
	}
	/* The bytes are canonical: the hash covers all but the hash part. */
	if ((rv = link_hash(&c->h, info.prev, line, len - HASH_PART_LEN,
	         computed)) != KW_OK)
		goto out;
	rv = KW_ERR_AUTH;
	if (memcmp(computed, info.hash, HASH_LEN) != 0) {
		seterr(err, errlen, "hash mismatch: the line was altered");
		goto out;
	}
	*ret_info = info;
	rv = KW_OK;
out:
	json_decref(root);
	return rv;
}

static int
checker_new(struct checker **ret_c)
{
	/* malloc, not calloc: zeroing the render buffer is wasted work. */
	struct checker *c = malloc(sizeof *c);
	int rv;

	if (c == NULL)
		return KW_ERR_NOMEM;
	c->h.md = NULL;
	c->h.ctx = NULL;
	if ((rv = hasher_init(&c->h)) != KW_OK) {
		hasher_clear(&c->h);
		free(c);
		return rv;
	}
	*ret_c = c;
	return KW_OK;
}

static void
checker_free(struct checker *c)
{
	if (c == NULL)
		return;
	hasher_clear(&c->h);
	free(c);
}

/* ---- open ------------------------------------------------------------- */

/* pread exactly n bytes at off. */
static int
pread_full(int fd, char *buf, size_t n, off_t off)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = pread(fd, buf + got, n - got, off + (off_t)got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/*
 * read_tail: the chain state after an existing log's last line. Only that
 * line is read (at most READ_LINE_MAX bytes from the end), and only its
 * own hash can be checked: whether its prev matches the line before, and
 * everything earlier, is kwd_audit_verify's job.
 */
static int
read_tail(const char *path, int fd, off_t size, uint64_t *ret_seq,
    unsigned char ret_prev[HASH_LEN])
{
	struct checker *c = NULL;
	struct line_info info;
	char *buf = NULL, err[256], ebuf[64];
	size_t n, start;
	int rv;

	if (size == 0) {
		*ret_seq = 0;
		memset(ret_prev, 0, HASH_LEN);
		return KW_OK;
	}
	n = size > READ_LINE_MAX ? READ_LINE_MAX : (size_t)size;
	if ((buf = malloc(n)) == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	if (pread_full(fd, buf, n, size - (off_t)n) != 0) {
		int e = errno;

		kw_log(KW_LOG_ERR, "audit.open", "cannot read the audit log",
		    KW_F("path", path),
		    KW_F("error", errstr(e, ebuf, sizeof ebuf)));
		rv = KW_ERR_IO;
		goto out;
	}
	if (buf[n - 1] != '\n') {
		kw_log(KW_LOG_ERR, "audit.open",
		    "the audit log ends in a partial line (a write torn by a "
		    "crash or a full disk?): inspect it, keep a copy, truncate "
		    "it after its last complete line, run `keyward audit "
		    "verify` and restart",
		    KW_F("path", path), KW_F("size", (long long)size));
		rv = KW_ERR_AUTH;
		goto out;
	}
	start = n - 1;
	while (start > 0 && buf[start - 1] != '\n')
		start--;
	if (start == 0 && (off_t)n < size) {
		kw_log(KW_LOG_ERR, "audit.open",
		    "the audit log's last line is longer than 64 KiB: keyward "
		    "did not write it; inspect the log and run `keyward audit "
		    "verify`",
		    KW_F("path", path));
		rv = KW_ERR_AUTH;
		goto out;
	}
	if ((rv = checker_new(&c)) != KW_OK)
		goto out;
	rv = check_line(c, buf + start, n - 1 - start, &info, err, sizeof err);
	if (rv == KW_ERR_AUTH)
		kw_log(KW_LOG_ERR, "audit.open",
		    "the audit log's last line fails its check: keyward does "
		    "not extend a chain it cannot vouch for; inspect the log "
		    "and run `keyward audit verify`",
		    KW_F("path", path), KW_F("error", err));
	if (rv != KW_OK)
		goto out;
	*ret_seq = info.seq;
	memcpy(ret_prev, info.hash, HASH_LEN);
out:
	checker_free(c);
	free(buf);
	return rv;
}

/* Make a new file's directory entry durable, as fdatasync does not. */
static int
sync_dir(const char *path)
{
	char *dir = strdup(path), *slash;
	int fd = -1, rv = KW_ERR_IO;

	if (dir == NULL)
		return KW_ERR_NOMEM;
	slash = strrchr(dir, '/');
	if (slash == NULL)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0 && fsync(fd) == 0)
		rv = KW_OK;
	if (fd >= 0)
		close(fd);
	free(dir);
	return rv;
}

static int
open_file(const char *path, int *ret_fd, bool *ret_created)
{
	int fd;

	/* O_EXCL first, to know whether the directory must be synced. */
	fd = open(path,
	    O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd >= 0) {
		*ret_fd = fd;
		*ret_created = true;
		return KW_OK;
	}
	if (errno == EEXIST)
		fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return errno == EACCES || errno == EPERM ? KW_ERR_PERM
		                                         : KW_ERR_IO;
	*ret_fd = fd;
	*ret_created = false;
	return KW_OK;
}

int
kwd_audit_open(const char *path, unsigned sync_ms, struct kwd_audit **ret_audit)
{
	struct kwd_audit *a = NULL;
	struct stat st;
	bool created = false, mu = false, cv = false;
	char ebuf[64];
	int fd = -1, rv;

	if (path == NULL || ret_audit == NULL)
		return KW_ERR_INVALID;
	if ((rv = open_file(path, &fd, &created)) != KW_OK) {
		int e = errno;

		kw_log(KW_LOG_ERR, "audit.open", "cannot open the audit log",
		    KW_F("path", path),
		    KW_F("error", errstr(e, ebuf, sizeof ebuf)));
		goto out;
	}
	rv = KW_ERR_IO;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		kw_log(KW_LOG_ERR, "audit.open",
		    "the audit log is not a regular file", KW_F("path", path));
		goto out;
	}
	/* Another user able to write the file could rewrite its history
	 * (the chain would show it, but only on the next verify). */
	if (st.st_uid != geteuid() || (st.st_mode & 022) != 0) {
		kw_log(KW_LOG_ERR, "audit.open",
		    "the audit log must be owned by keywardd's user and "
		    "writable by no one else (chmod 600)",
		    KW_F("path", path), KW_F("uid", (unsigned)st.st_uid),
		    KW_F("mode", (unsigned)(st.st_mode & 07777)));
		rv = KW_ERR_PERM;
		goto out;
	}
	/* Two writers would fork the chain. */
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		kw_log(KW_LOG_ERR, "audit.open",
		    "the audit log is in use by another process",
		    KW_F("path", path));
		rv = KW_ERR_UNAVAILABLE;
		goto out;
	}
	if ((a = calloc(1, sizeof *a)) == NULL ||
	    (a->path = strdup(path)) == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	if ((rv = read_tail(path, fd, st.st_size, &a->seq, a->prev)) != KW_OK)
		goto out;
	if (created && (rv = sync_dir(path)) != KW_OK) {
		kw_log(KW_LOG_ERR, "audit.open",
		    "cannot sync the audit log's directory",
		    KW_F("path", path));
		goto out;
	}
	if ((rv = hasher_init(&a->h)) != KW_OK)
		goto out;
	rv = KW_ERR_INTERNAL;
	if (pthread_mutex_init(&a->mu, NULL) != 0)
		goto out;
	mu = true;
	if (pthread_cond_init(&a->cv, NULL) != 0)
		goto out;
	cv = true;
	a->fd = fd;
	a->dev = st.st_dev;
	a->ino = st.st_ino;
	a->sync_ms = sync_ms;
	a->synced_seq = a->seq;
	clock_gettime(CLOCK_MONOTONIC, &a->last_sync);
	kw_log(KW_LOG_INFO, "audit.open", "audit log open", KW_F("path", path),
	    KW_F("next_seq", (unsigned long long)a->seq + 1),
	    KW_F("sync_ms", sync_ms));
	fd = -1;
	*ret_audit = a;
	a = NULL;
	rv = KW_OK;
out:
	if (a != NULL) {
		if (cv)
			pthread_cond_destroy(&a->cv);
		if (mu)
			pthread_mutex_destroy(&a->mu);
		hasher_clear(&a->h);
		free(a->path);
		free(a);
	}
	if (fd >= 0)
		close(fd);
	return rv;
}

/* ---- write and sync --------------------------------------------------- */

/* Under a->mu. The first failure wins and is logged once. */
static void set_broken(struct kwd_audit *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
set_broken(struct kwd_audit *a, const char *fmt, ...)
{
	va_list ap;

	if (a->broken)
		return;
	a->broken = true;
	va_start(ap, fmt);
	vsnprintf(a->reason, sizeof a->reason, fmt, ap);
	va_end(ap);
	kw_log(KW_LOG_ERR, "audit.broken",
	    "the audit log cannot be written: key operations are refused "
	    "until keywardd is restarted with a writable log",
	    KW_F("path", a->path), KW_F("reason", a->reason));
	pthread_cond_broadcast(&a->cv);
}

/* Under a->mu: one write(2) of the whole line, or the log is broken. */
static int
write_line(struct kwd_audit *a, const char *line, size_t len)
{
	char ebuf[64];
	ssize_t n, m;

	do
		n = write(a->fd, line, len);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		set_broken(a, "write: %s", errstr(errno, ebuf, sizeof ebuf));
		return KW_ERR_IO;
	}
	if ((size_t)n == len)
		return KW_OK;
	/*
	 * A short write leaves a partial line (the next open refuses it).
	 * The kernel tells why only on the next call: ask once, so that the
	 * reason names the cause ("No space left on device"). The log is
	 * broken whatever that call does.
	 */
	m = write(a->fd, line + n, len - (size_t)n);
	if (m < 0)
		set_broken(a,
		    "write: %s (after %zd of %zu bytes: the log ends "
		    "in a partial line)",
		    errstr(errno, ebuf, sizeof ebuf), n, len);
	else
		set_broken(a, "write: short write (%zd of %zu bytes)", n, len);
	return KW_ERR_IO;
}

static long long
ms_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long long)(now.tv_sec - t->tv_sec) * 1000 +
	    (now.tv_nsec - t->tv_nsec) / 1000000;
}

/*
 * still_ours: the path still names the file we append to. A log moved,
 * removed or replaced (by a directory, by logrotate) would keep taking
 * records that no one will ever read or verify: checked before each sync,
 * so that records are only called durable where they can be found.
 */
static int
still_ours(struct kwd_audit *a, char *why, size_t whylen)
{
	struct stat st;
	char ebuf[64];

	if (stat(a->path, &st) != 0) {
		snprintf(why, whylen, "the log file was moved or removed: %s",
		    errstr(errno, ebuf, sizeof ebuf));
		return KW_ERR_IO;
	}
	if (st.st_dev != a->dev || st.st_ino != a->ino) {
		snprintf(why, whylen,
		    "the log file was replaced: its path "
		    "names another file now");
		return KW_ERR_IO;
	}
	return KW_OK;
}

/*
 * sync_upto: under a->mu, make records up to target durable. One caller
 * at a time runs fdatasync, without the lock, for everything written so
 * far; the others wait for it and find their record covered (group
 * commit). Succeeds if target is durable, even if the log broke since.
 */
static int
sync_upto(struct kwd_audit *a, uint64_t target)
{
	while (a->synced_seq < target && !a->broken) {
		char why[160], ebuf[64];
		uint64_t upto;
		int r, e = 0;

		if (a->syncing) {
			pthread_cond_wait(&a->cv, &a->mu);
			continue;
		}
		a->syncing = true;
		upto = a->seq;
		pthread_mutex_unlock(&a->mu);
		r = still_ours(a, why, sizeof why);
		if (r == KW_OK && fdatasync(a->fd) != 0) {
			e = errno;
			r = KW_ERR_IO;
		}
		pthread_mutex_lock(&a->mu);
		a->syncing = false;
		if (r == KW_OK) {
			if (upto > a->synced_seq)
				a->synced_seq = upto;
			clock_gettime(CLOCK_MONOTONIC, &a->last_sync);
		} else if (e != 0) {
			set_broken(a, "fdatasync: %s",
			    errstr(e, ebuf, sizeof ebuf));
		} else {
			set_broken(a, "%s", why);
		}
		pthread_cond_broadcast(&a->cv);
	}
	return a->synced_seq >= target ? KW_OK : KW_ERR_IO;
}

int
kwd_audit_write(struct kwd_audit *a, const struct kwd_audit_rec *rec)
{
	char line[LINE_MAX_BYTES], head[HEAD_MAX + 1], time[TIME_LEN + 1];
	struct out o = {line, HEAD_MAX, LINE_MAX_BYTES - TAIL_MAX, false};
	struct out h = {head, 0, sizeof head, false};
	unsigned char hash[HASH_LEN];
	size_t start;
	uint64_t seq;
	int rv;

	if (a == NULL || !rec_valid(rec))
		return KW_ERR_INVALID;
	/* The body first, without the lock: it is most of the work. */
	put_body(&o, rec);
	if (o.overflow)
		return KW_ERR_INTERNAL; /* cannot happen: see BODY_MAX */
	o.cap = LINE_MAX_BYTES;

	pthread_mutex_lock(&a->mu);
	if (a->broken) {
		rv = KW_ERR_IO;
		goto out;
	}
	if (a->seq >= INT64_MAX) {
		rv = KW_ERR_TOO_LARGE;
		goto out;
	}
	seq = a->seq + 1;
	/* Time under the lock: times then grow with seq (clock steps
	 * aside). */
	if ((rv = format_time(time)) != KW_OK)
		goto out;
	put_head(&h, seq, time);
	start = HEAD_MAX - h.len;
	memcpy(line + start, head, h.len);
	put_prev(&o, a->prev);
	if ((rv = link_hash(&a->h, a->prev, line + start, o.len - start,
	         hash)) != KW_OK)
		goto out;
	put_hash(&o, hash);
	put(&o, "\n", 1);
	if (o.overflow || h.overflow) {
		rv = KW_ERR_INTERNAL;
		goto out;
	}
	if ((rv = write_line(a, line + start, o.len - start)) != KW_OK)
		goto out;
	a->seq = seq;
	memcpy(a->prev, hash, HASH_LEN);
	if (a->sync_ms == 0)
		rv = sync_upto(a, seq);
	else if (!a->syncing && a->synced_seq < a->seq &&
	    ms_since(&a->last_sync) >= 2 * (long long)a->sync_ms)
		/* The owner's timer is late: the write does it. */
		rv = sync_upto(a, a->seq);
out:
	pthread_mutex_unlock(&a->mu);
	return rv;
}

int
kwd_audit_sync(struct kwd_audit *a)
{
	int rv;

	if (a == NULL)
		return KW_ERR_INVALID;
	pthread_mutex_lock(&a->mu);
	rv = a->broken ? KW_ERR_IO : sync_upto(a, a->seq);
	pthread_mutex_unlock(&a->mu);
	return rv;
}

bool
kwd_audit_ok(struct kwd_audit *a, char *reason, size_t reasonlen)
{
	bool ok;

	if (a == NULL) {
		if (reason != NULL && reasonlen > 0)
			snprintf(reason, reasonlen, "no audit log");
		return false;
	}
	pthread_mutex_lock(&a->mu);
	ok = !a->broken;
	if (reason != NULL && reasonlen > 0)
		snprintf(reason, reasonlen, "%s", ok ? "" : a->reason);
	pthread_mutex_unlock(&a->mu);
	return ok;
}

void
kwd_audit_free(struct kwd_audit *a)
{
	char ebuf[64];

	if (a == NULL)
		return;
	/* The owner syncs at exit; this is the last chance if it did not. */
	if (!a->broken && a->synced_seq < a->seq && fdatasync(a->fd) != 0)
		kw_log(KW_LOG_ERR, "audit.close",
		    "fdatasync of the audit log failed at close: the last "
		    "records may be lost",
		    KW_F("path", a->path),
		    KW_F("error", errstr(errno, ebuf, sizeof ebuf)));
	close(a->fd);
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mu);
	hasher_clear(&a->h);
	free(a->path);
	free(a);
}

/* ---- verify ----------------------------------------------------------- */

/* One line of a log being verified, with the chain so far in *v. */
struct verify_state {
	struct checker *c;
	uint64_t lineno;
	unsigned char prev[HASH_LEN];
};

static int
verify_line(struct verify_state *v, const char *line, size_t len, char *err,
    size_t errlen)
{
	struct line_info info;
	int rv;

	v->lineno++;
	if (len > READ_LINE_MAX) {
		seterr(err, errlen, "line longer than 64 KiB");
		return KW_ERR_AUTH;
	}
	if ((rv = check_line(v->c, line, len, &info, err, errlen)) != KW_OK)
		return rv;
	if (info.seq != v->lineno) {
		seterr(err, errlen,
		    "seq %" PRIu64 " where %" PRIu64 " was expected: a line "
		    "was deleted, inserted or moved",
		    info.seq, v->lineno);
		return KW_ERR_AUTH;
	}
	if (memcmp(info.prev, v->prev, HASH_LEN) != 0) {
		seterr(err, errlen,
		    "prev does not match the previous line's "
		    "hash: a line was deleted, inserted or moved");
		return KW_ERR_AUTH;
	}
	memcpy(v->prev, info.hash, HASH_LEN);
	return KW_OK;
}

int
kwd_audit_verify(const char *path, uint64_t *ret_count, uint64_t *ret_bad_line,
    char *err, size_t errlen)
{
	struct verify_state v;
	struct stat st;
	char *buf = NULL, ebuf[64];
	size_t have = 0, cap = VERIFY_BUF;
	ssize_t r;
	int fd = -1, rv;

	if (path == NULL)
		return KW_ERR_INVALID;
	memset(&v, 0, sizeof v);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		seterr(err, errlen, "open: %s",
		    errstr(errno, ebuf, sizeof ebuf));
		rv = KW_ERR_IO;
		goto out;
	}
	if ((rv = checker_new(&v.c)) != KW_OK)
		goto out;
	/* A small log gets a small buffer; it grows if the file does. */
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    st.st_size < VERIFY_BUF)
		cap = (size_t)st.st_size < 4096 ? 4096 : (size_t)st.st_size + 1;
	if ((buf = malloc(cap)) == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	/* Streaming: memory stays VERIFY_BUF whatever the log's size. */
	for (;;) {
		size_t pos = 0;
		char *nl;

		if (have == cap) {
			char *nb = realloc(buf, VERIFY_BUF);

			if (nb == NULL) {
				rv = KW_ERR_NOMEM;
				goto out;
			}
			buf = nb;
			cap = VERIFY_BUF;
		}
		do
			r = read(fd, buf + have, cap - have);
		while (r < 0 && errno == EINTR);
		if (r < 0) {
			seterr(err, errlen, "read: %s",
			    errstr(errno, ebuf, sizeof ebuf));
			rv = KW_ERR_IO;
			goto out;
		}
		if (r == 0)
			break;
		have += (size_t)r;
		while ((nl = memchr(buf + pos, '\n', have - pos)) != NULL) {
			size_t len = (size_t)(nl - (buf + pos));

			if ((rv = verify_line(&v, buf + pos, len, err,
			         errlen)) != KW_OK)
				goto out;
			pos += len + 1;
		}
		/* A line with no end in sight: its number is the next one. */
		if (have - pos > READ_LINE_MAX) {
			rv =
			    verify_line(&v, buf + pos, have - pos, err, errlen);
			goto out;
		}
		memmove(buf, buf + pos, have - pos);
		have -= pos;
	}
	if (have > 0) {
		v.lineno++;
		seterr(err, errlen,
		    "the last line has no final newline: a "
		    "torn write or a truncated file");
		rv = KW_ERR_AUTH;
		goto out;
	}
	if (ret_count != NULL)
		*ret_count = v.lineno;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	rv = KW_OK;
out:
	/* Only an integrity failure names a line; KW_ERR_NOMEM and
	 * KW_ERR_CRYPTO from check_line say nothing about it. */
	if (rv == KW_ERR_AUTH && ret_bad_line != NULL)
		*ret_bad_line = v.lineno;
	checker_free(v.c);
	free(buf);
	if (fd >= 0)
		close(fd);
	return rv;
}

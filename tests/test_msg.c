/*
 * test_msg.c: the front <-> keeper frames and their transport.
 *
 * The field rules are written out again below (specs[]) from the protocol
 * description rather than taken from msg.c, so a wrong rule in the table
 * fails here. Frames are built by a writer of their own (struct frame),
 * independent of the builder under test, and compared with the builder's
 * output byte for byte.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "msg.h"

#define NTAGS 64
#define MAXF (KWD_MSG_MAX / 6 + 1)
#define RID 0x0123456789abcdefULL

/* The tag table, from msg.h's X-macro: kinds and length bounds. */
struct tinfo {
	bool known;
	enum kwd_field_kind kind;
	uint32_t minl, maxl;
	const char *name;
};

static const struct tinfo tags[NTAGS] = {
#define X(name, tag, kind, minl, maxl) [tag] = {true, kind, minl, maxl, #name},
    KWD_MSG_TAGS(X)
#undef X
};

/* The rules as the protocol states them. */
struct srule {
	uint16_t tag;
	unsigned min, max;
};

#define NRULES 10

struct spec {
	uint16_t type;
	enum kwd_msg_dir dir;
	struct srule r[NRULES];
};

/* clang-format off */
#define RR(t, lo, hi) {KWD_TAG_##t, lo, hi}
#define FRONT(t, ...) {KWD_MSG_##t, KWD_FROM_FRONT, {__VA_ARGS__}}
#define KEEPER(t, ...) {KWD_MSG_##t, KWD_FROM_KEEPER, {__VA_ARGS__}}
#define CTX RR(CTX_KEY, 0, 32), RR(CTX_VAL, 0, 32)
#define AUTH RR(IDENTITY, 0, 1), RR(BEARER, 0, 1), RR(CNF, 0, 1)
static const struct spec specs[] = {
	FRONT(KEY_CREATE, AUTH, RR(KEY, 1, 1),
	    RR(ROTATION, 0, 1), RR(REMOTE, 0, 1)),
	FRONT(KEY_LIST, AUTH, RR(REMOTE, 0, 1)),
	FRONT(KEY_SHOW, AUTH, RR(KEY, 1, 1), RR(REMOTE, 0, 1)),
	FRONT(KEY_ROTATE, AUTH, RR(KEY, 1, 1), RR(REMOTE, 0, 1)),
	FRONT(KEY_PATCH, AUTH, RR(KEY, 1, 1),
	    RR(MIN_DECRYPT, 0, 1), RR(VERSION, 0, 1), RR(STATE, 0, 1),
	    RR(ROTATION, 0, 1), RR(REMOTE, 0, 1)),
	FRONT(DATAKEY, AUTH, RR(KEY, 1, 1), CTX,
	    RR(PLAINTEXT, 1, 1), RR(REMOTE, 0, 1)),
	FRONT(DECRYPT, AUTH, RR(KEY, 1, 1), CTX,
	    RR(BLOB, 1, 1), RR(REMOTE, 0, 1)),
	FRONT(REWRAP, AUTH, RR(KEY, 1, 1), CTX,
	    RR(BLOB, 1, 1), RR(REMOTE, 0, 1)),
	FRONT(HEALTH, {0, 0, 0}),
	FRONT(STATS, {0, 0, 0}),
	FRONT(AUDIT_EVENT, RR(IDENTITY, 0, 1), RR(OP, 1, 1),
	    RR(RESOURCE, 0, 1), RR(OUTCOME, 1, 1), RR(REASON, 1, 1),
	    RR(REMOTE, 0, 1), RR(LATENCY_US, 0, 1), RR(STATUS, 0, 1)),
	FRONT(TOKEN_ISSUE, RR(IDENTITY, 1, 1), RR(AUDIENCE, 1, 1),
	    RR(SCOPE, 1, 32), RR(TTL, 1, 1), RR(CNF, 0, 1), RR(REMOTE, 0, 1)),
	FRONT(JWKS, RR(REMOTE, 0, 1)),
	FRONT(TOKEN_REVOKE, AUTH, RR(JTI, 0, 1),
	    RR(SUBJECT, 0, 1), RR(REMOTE, 0, 1)),
	FRONT(TOKEN_INTROSPECT, AUTH, RR(TOKEN, 1, 1),
	    RR(REMOTE, 0, 1)),
	FRONT(SIGNER_SHOW, AUTH, RR(KEY, 1, 1), RR(REMOTE, 0, 1)),
	FRONT(SIGNER_ROTATE, AUTH, RR(KEY, 1, 1), RR(REMOTE, 0, 1)),
	FRONT(ARTIFACT_SIGN, AUTH, RR(KEY, 1, 1), RR(DIGEST, 1, 1),
	    RR(REMOTE, 0, 1)),
	FRONT(CERT_ISSUE, AUTH, RR(CSR, 1, 1), RR(TTL, 1, 1), RR(REMOTE, 0, 1)),
	KEEPER(R_ERROR, RR(STATUS, 1, 1), RR(MESSAGE, 1, 1)),
	KEEPER(R_OK, {0, 0, 0}),
	KEEPER(R_KEY, RR(KEY, 1, 1), RR(MIN_DECRYPT, 1, 1), RR(CREATED, 1, 1),
	    RR(ROTATION, 0, 1), RR(VERSION, 1, 1), RR(VERREC, 0, 1000)),
	KEEPER(R_KEY_LIST, RR(KEY, 0, 1000), RR(VERSION, 0, 1000)),
	KEEPER(R_DATAKEY, RR(KEY, 1, 1), RR(VERSION, 1, 1), RR(BLOB, 1, 1),
	    RR(DEK, 0, 1)),
	KEEPER(R_DECRYPT, RR(DEK, 1, 1)),
	KEEPER(R_REWRAP, RR(KEY, 1, 1), RR(VERSION, 1, 1), RR(BLOB, 1, 1)),
	KEEPER(R_HEALTH, RR(HSM_OK, 1, 1), RR(AUDIT_OK, 1, 1),
	    RR(REASON, 0, 1)),
	KEEPER(R_STATS, RR(TEXT, 1, 1)),
	KEEPER(R_TOKEN, RR(TOKEN, 1, 1), RR(EXPIRES, 1, 1)),
	KEEPER(R_JWKS, RR(JSON, 1, 1)),
	KEEPER(R_INTROSPECT, RR(JSON, 1, 1)),
	KEEPER(R_SIGNER, RR(JSON, 1, 1)),
	KEEPER(R_SIGNATURE, RR(JSON, 1, 1)),
	KEEPER(R_CERT, RR(JSON, 1, 1)),
};
#undef RR
#undef FRONT
#undef KEEPER
#undef CTX
#undef AUTH
/* clang-format on */
#define NSPECS (sizeof specs / sizeof specs[0])

static const struct spec *
spec_of(uint16_t type)
{
	for (size_t i = 0; i < NSPECS; i++)
		if (specs[i].type == type)
			return &specs[i];
	return NULL;
}

static const struct srule *
rule_of(const struct spec *s, uint16_t tag)
{
	for (size_t i = 0; i < NRULES && s->r[i].tag != 0; i++)
		if (s->r[i].tag == tag)
			return &s->r[i];
	return NULL;
}

static enum kwd_msg_dir
other_dir(enum kwd_msg_dir d)
{
	return d == KWD_FROM_FRONT ? KWD_FROM_KEEPER : KWD_FROM_FRONT;
}

/* A frame writer that knows no rule: it writes what it is told. */
struct frame {
	unsigned char b[KWD_MSG_MAX + 64];
	size_t len;
	size_t nf;
	uint16_t ftag[MAXF];
	size_t foff[MAXF]; /* of the value */
	uint32_t flen[MAXF];
};

static void
be16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static void
be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void
be64(unsigned char *p, uint64_t v)
{
	be32(p, (uint32_t)(v >> 32));
	be32(p + 4, (uint32_t)v);
}

static uint32_t
rd32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

static void
f_begin(struct frame *f, uint16_t type, uint16_t flags, uint64_t rid)
{
	be32(f->b, 0);
	be16(f->b + 4, type);
	be16(f->b + 6, flags);
	be64(f->b + 8, rid);
	f->len = KWD_MSG_HDR;
	f->nf = 0;
}

/* A field header announcing alen, then len bytes of p. */
static void
f_raw(struct frame *f, uint16_t tag, uint32_t alen, const void *p, size_t len)
{
	assert_true(f->len + 6 + len <= sizeof f->b);
	assert_true(f->nf < MAXF);
	be16(f->b + f->len, tag);
	be32(f->b + f->len + 2, alen);
	f->ftag[f->nf] = tag;
	f->foff[f->nf] = f->len + 6;
	f->flen[f->nf] = (uint32_t)len;
	f->nf++;
	if (len > 0)
		memcpy(f->b + f->len + 6, p, len);
	f->len += 6 + len;
}

static void
f_field(struct frame *f, uint16_t tag, const void *p, size_t len)
{
	f_raw(f, tag, (uint32_t)len, p, len);
}

static void
f_str(struct frame *f, uint16_t tag, const char *s)
{
	f_field(f, tag, s, strlen(s));
}

static void
f_u8(struct frame *f, uint16_t tag, uint8_t v)
{
	f_field(f, tag, &v, 1);
}

static void
f_u32(struct frame *f, uint16_t tag, uint32_t v)
{
	unsigned char p[4];

	be32(p, v);
	f_field(f, tag, p, 4);
}

static void
f_end(struct frame *f)
{
	be32(f->b, (uint32_t)f->len);
}

/*
 * A valid value of len bytes for tag, different for each idx (context
 * keys must be unique: their first byte differs for idx < 94).
 */
static void
sample(uint16_t tag, unsigned idx, size_t len, unsigned char *out)
{
	static const char alnum[] = "abcdefghijklmnopqrstuvwxyz0123456789";

	for (size_t i = 0; i < len; i++) {
		switch (tags[tag].kind) {
		case KWD_FK_U8:
			if (tag == KWD_TAG_STATE)
				out[i] = (unsigned char)(1 + (idx + i) % 4);
			else
				out[i] = (unsigned char)((idx + i) % 2);
			break;
		case KWD_FK_STR:
			out[i] =
			    (unsigned char)(0x21 + (idx * 31 + i * 7) % 94);
			break;
		case KWD_FK_NAME:
			out[i] = (unsigned char)alnum[(idx + i) % 36];
			break;
		default:
			out[i] = (unsigned char)(idx * 37 + i * 11 + tag);
			break;
		}
	}
}

static size_t
deflen(uint16_t tag)
{
	size_t l = 8;

	if (l < tags[tag].minl)
		l = tags[tag].minl;
	if (l > tags[tag].maxl)
		l = tags[tag].maxl;
	return l;
}

/* What to put in a frame: how many of each tag, how long, which header. */
struct plan {
	uint16_t flags;
	unsigned count[NTAGS];
	size_t len[NTAGS]; /* SIZE_MAX: deflen() */
};

/* Every allowed tag (full: at least once, repeated ones 3 times). */
static void
plan_init(struct plan *pl, const struct spec *s, bool full)
{
	memset(pl, 0, sizeof *pl);
	for (size_t t = 0; t < NTAGS; t++)
		pl->len[t] = SIZE_MAX;
	for (size_t i = 0; i < NRULES && s->r[i].tag != 0; i++) {
		const struct srule *r = &s->r[i];

		pl->count[r->tag] = r->min;
		if (full)
			pl->count[r->tag] = r->max > 1 ? 3 : 1;
	}
}

static void
emit(struct frame *f, struct kwd_msgbuf *b, const struct plan *pl, uint16_t tag,
    unsigned idx)
{
	static unsigned char v[KWD_MSG_MAX];
	size_t len = pl->len[tag] != SIZE_MAX ? pl->len[tag] : deflen(tag);

	sample(tag, idx, len, v);
	f_field(f, tag, v, len);
	if (b != NULL)
		kwd_msg_put(b, tag, v, len);
}

/* Context keys and values go in pairs, then any surplus. */
static void
emit_tag(struct frame *f, struct kwd_msgbuf *b, const struct plan *pl,
    uint16_t tag)
{
	unsigned nk = pl->count[KWD_TAG_CTX_KEY];
	unsigned nv = pl->count[KWD_TAG_CTX_VAL];
	unsigned np = nk < nv ? nk : nv;

	if (tag == KWD_TAG_CTX_KEY) {
		for (unsigned i = 0; i < np; i++) {
			emit(f, b, pl, KWD_TAG_CTX_KEY, i);
			emit(f, b, pl, KWD_TAG_CTX_VAL, i);
		}
		for (unsigned i = np; i < nk; i++)
			emit(f, b, pl, KWD_TAG_CTX_KEY, i);
	} else if (tag == KWD_TAG_CTX_VAL) {
		for (unsigned i = np; i < nv; i++)
			emit(f, b, pl, KWD_TAG_CTX_VAL, i);
	} else {
		for (unsigned i = 0; i < pl->count[tag]; i++)
			emit(f, b, pl, tag, i);
	}
}

/* The fields in rule order, then any tag the type does not allow. */
static void
build(const struct spec *s, const struct plan *pl, struct frame *f,
    struct kwd_msgbuf *b)
{
	f_begin(f, s->type, pl->flags, RID);
	if (b != NULL)
		kwd_msg_begin(b, (enum kwd_msg_type)s->type, RID);
	for (size_t i = 0; i < NRULES && s->r[i].tag != 0; i++)
		emit_tag(f, b, pl, s->r[i].tag);
	for (uint16_t t = 0; t < NTAGS; t++)
		if (rule_of(s, t) == NULL && pl->count[t] > 0)
			emit_tag(f, b, pl, t);
	f_end(f);
}

static struct frame fr; /* the frame of the current test */
static struct kwd_msgbuf mb; /* the builder's */
static struct kwd_msg dm; /* decoded */

static int
decode_plan(const struct spec *s, const struct plan *pl)
{
	build(s, pl, &fr, NULL);
	return kwd_msg_decode(fr.b, fr.len, s->dir, &dm);
}

static void
expect(int got, int want, const struct spec *s, const char *what, uint16_t tag,
    long n)
{
	if (got != want)
		fail_msg("%s %s tag %s (%ld): got %d, want %d",
		    kwd_msg_type_name(s->type), what,
		    tag < NTAGS && tags[tag].name ? tags[tag].name : "?", n,
		    got, want);
}

static void
test_msg_spec_covers_every_type(void **state)
{
	size_t n = 0;

	(void)state;
#define X(name, id, from)                                              \
	assert_non_null(spec_of(KWD_MSG_##name));                      \
	assert_int_equal(spec_of(KWD_MSG_##name)->dir, from);          \
	assert_string_equal(kwd_msg_type_name(KWD_MSG_##name), #name); \
	n++;
	KWD_MSG_TYPES(X)
#undef X
	assert_int_equal(n, NSPECS);
}

/* Build with the builder and the writer, compare, decode, read back. */
static void
round_trip(const struct spec *s, const struct plan *pl)
{
	unsigned seen[NTAGS] = {0};

	build(s, pl, &fr, &mb);
	expect(kwd_msg_end(&mb), KW_OK, s, "builder end", 0, 0);
	assert_int_equal(mb.len, fr.len);
	assert_memory_equal(mb.buf, fr.b, fr.len);
	memset(&dm, 0xa5, sizeof dm);
	expect(kwd_msg_decode(mb.buf, mb.len, s->dir, &dm), KW_OK, s, "decode",
	    0, 0);
	assert_int_equal(dm.type, s->type);
	assert_true(dm.rid == RID);
	assert_int_equal(dm.nfields, fr.nf);
	for (size_t i = 0; i < fr.nf; i++) {
		const struct kwd_field *fd = &dm.fields[i];
		uint16_t tag = fr.ftag[i];

		assert_int_equal(fd->tag, tag);
		assert_int_equal(fd->len, fr.flen[i]);
		/* Pointing into the buffer decoded, not a copy. */
		assert_ptr_equal(fd->p, mb.buf + fr.foff[i]);
		assert_ptr_equal(kwd_msg_get(&dm, tag, seen[tag]), fd);
		seen[tag]++;
	}
	for (uint16_t t = 1; t < NTAGS; t++) {
		uint8_t v8;
		uint32_t v32;
		uint64_t v64;
		char str[600];
		const struct kwd_field *fd;

		assert_int_equal(kwd_msg_count(&dm, t), seen[t]);
		assert_null(kwd_msg_get(&dm, t, seen[t]));
		if (seen[t] == 0 || !tags[t].known)
			continue;
		fd = kwd_msg_get(&dm, t, 0);
		switch (tags[t].kind) {
		case KWD_FK_U8:
			assert_true(kwd_msg_u8(&dm, t, &v8));
			assert_int_equal(v8, fd->p[0]);
			break;
		case KWD_FK_U32:
			assert_true(kwd_msg_u32(&dm, t, &v32));
			assert_int_equal(v32, rd32(fd->p));
			break;
		case KWD_FK_U64:
			assert_true(kwd_msg_u64(&dm, t, &v64));
			assert_true(v64 ==
			    ((uint64_t)rd32(fd->p) << 32 | rd32(fd->p + 4)));
			break;
		case KWD_FK_STR:
		case KWD_FK_NAME:
			for (size_t k = 0; k < seen[t]; k++) {
				fd = kwd_msg_get(&dm, t, k);
				assert_true(
				    kwd_msg_str(&dm, t, k, str, sizeof str));
				assert_int_equal(strlen(str), fd->len);
				assert_memory_equal(str, fd->p, fd->len);
			}
			break;
		case KWD_FK_BYTES:
			break;
		}
	}
}

static void
test_msg_round_trip_every_type(void **state)
{
	struct plan pl;

	(void)state;
	for (size_t i = 0; i < NSPECS; i++) {
		plan_init(&pl, &specs[i], true);
		round_trip(&specs[i], &pl);
		plan_init(&pl, &specs[i], false);
		round_trip(&specs[i], &pl);
	}
}

static void
test_msg_round_trip_utf8_strings(void **state)
{
	static const char *s[] = {"caf\xc3\xa9", "\xe2\x82\xac 5",
	    "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf",
	    "\xee\x80\x80", "\xc2\x80\xc2\x9f", " ~"};
	char out[64];

	(void)state;
	for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
		kwd_msg_begin(&mb, KWD_MSG_KEY_SHOW, 7);
		kwd_msg_put_str(&mb, KWD_TAG_IDENTITY, s[i]);
		kwd_msg_put_str(&mb, KWD_TAG_KEY, "k");
		assert_int_equal(kwd_msg_end(&mb), KW_OK);
		assert_int_equal(kwd_msg_decode(mb.buf, mb.len, KWD_FROM_FRONT,
		                     &dm),
		    KW_OK);
		assert_true(
		    kwd_msg_str(&dm, KWD_TAG_IDENTITY, 0, out, sizeof out));
		assert_string_equal(out, s[i]);
	}
}

static void
test_msg_missing_required(void **state)
{
	struct plan pl;
	size_t n = 0;

	(void)state;
	for (size_t i = 0; i < NSPECS; i++) {
		const struct spec *s = &specs[i];

		for (size_t k = 0; k < NRULES && s->r[k].tag != 0; k++) {
			if (s->r[k].min == 0)
				continue;
			plan_init(&pl, s, true);
			pl.count[s->r[k].tag] = s->r[k].min - 1;
			expect(decode_plan(s, &pl), KW_ERR_INVALID, s,
			    "missing", s->r[k].tag, 0);
			/* And the minimal frame without it. */
			plan_init(&pl, s, false);
			pl.count[s->r[k].tag] = s->r[k].min - 1;
			expect(decode_plan(s, &pl), KW_ERR_INVALID, s,
			    "missing from minimal", s->r[k].tag, 0);
			n++;
		}
	}
	assert_true(n >= 30);
}

static void
test_msg_duplicate_single_field(void **state)
{
	struct plan pl;
	size_t n = 0;

	(void)state;
	for (size_t i = 0; i < NSPECS; i++) {
		const struct spec *s = &specs[i];

		for (size_t k = 0; k < NRULES && s->r[k].tag != 0; k++) {
			if (s->r[k].max != 1)
				continue;
			plan_init(&pl, s, true);
			pl.count[s->r[k].tag] = 2;
			expect(decode_plan(s, &pl), KW_ERR_INVALID, s, "twice",
			    s->r[k].tag, 0);
			n++;
		}
	}
	assert_true(n >= 50);
}

/* Repeated tags: exactly the maximum passes, one more fails. */
static void
test_msg_repeat_limits(void **state)
{
	struct plan pl;
	size_t n = 0;

	(void)state;
	for (size_t i = 0; i < NSPECS; i++) {
		const struct spec *s = &specs[i];

		for (size_t k = 0; k < NRULES && s->r[k].tag != 0; k++) {
			uint16_t tag = s->r[k].tag;
			/* Counts that must stay equal move together. */
			uint16_t twin = tag == KWD_TAG_CTX_KEY ? KWD_TAG_CTX_VAL
			    : tag == KWD_TAG_CTX_VAL           ? KWD_TAG_CTX_KEY
			    : s->type == KWD_MSG_R_KEY_LIST
			    ? (tag == KWD_TAG_KEY ? KWD_TAG_VERSION
			                          : KWD_TAG_KEY)
			    : 0;

			if (s->r[k].max == 1)
				continue;
			plan_init(&pl, s, true);
			pl.count[tag] = s->r[k].max;
			if (twin)
				pl.count[twin] = s->r[k].max;
			expect(decode_plan(s, &pl), KW_OK, s, "max", tag,
			    s->r[k].max);
			pl.count[tag] = s->r[k].max + 1;
			if (twin)
				pl.count[twin] = s->r[k].max + 1;
			expect(decode_plan(s, &pl), KW_ERR_INVALID, s, "max+1",
			    tag, s->r[k].max + 1);
			n++;
		}
	}
	/* Every repeatable field of the table was exercised. */
	assert_int_equal(n, 10);
}

static void
test_msg_field_not_allowed(void **state)
{
	struct plan pl;
	size_t n = 0;

	(void)state;
	for (size_t i = 0; i < NSPECS; i++) {
		const struct spec *s = &specs[i];

		for (uint16_t t = 1; t < NTAGS; t++) {
			if (!tags[t].known || rule_of(s, t) != NULL)
				continue;
			plan_init(&pl, s, true);
			pl.count[t] = 1;
			/* A whole pair, so that only the tag is wrong. */
			if (t == KWD_TAG_CTX_KEY || t == KWD_TAG_CTX_VAL)
				pl.count[KWD_TAG_CTX_KEY] =
				    pl.count[KWD_TAG_CTX_VAL] = 1;
			expect(decode_plan(s, &pl), KW_ERR_INVALID, s,
			    "not allowed", t, 0);
			n++;
		}
	}
	assert_true(n > 300);
}

static void
test_msg_unknown_tag(void **state)
{
	static const uint16_t bad[] = {0, 25, 26, 63, 64, 255, 256, 0xffff};
	const struct spec *s = spec_of(KWD_MSG_KEY_LIST);
	struct plan pl;

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (bad[i] < NTAGS && tags[bad[i]].known)
			continue; /* appended since */
		plan_init(&pl, s, true);
		build(s, &pl, &fr, NULL);
		f_field(&fr, bad[i], "x", 1);
		f_end(&fr);
		assert_int_equal(kwd_msg_decode(fr.b, fr.len, KWD_FROM_FRONT,
		                     &dm),
		    KW_ERR_INVALID);
	}
}

/* Each tag at its minimum and maximum length, and one byte outside. */
static void
test_msg_field_length_bounds(void **state)
{
	struct plan pl;
	size_t n = 0;

	(void)state;
	for (uint16_t t = 1; t < NTAGS; t++) {
		const struct spec *s = NULL;

		if (!tags[t].known)
			continue;
		for (size_t i = 0; i < NSPECS && s == NULL; i++)
			if (rule_of(&specs[i], t) != NULL)
				s = &specs[i];
		assert_non_null(s);
		plan_init(&pl, s, true);
		pl.len[t] = tags[t].minl;
		expect(decode_plan(s, &pl), KW_OK, s, "minlen", t,
		    (long)pl.len[t]);
		pl.len[t] = tags[t].maxl;
		expect(decode_plan(s, &pl), KW_OK, s, "maxlen", t,
		    (long)pl.len[t]);
		pl.len[t] = tags[t].maxl + 1;
		expect(decode_plan(s, &pl), KW_ERR_INVALID, s, "maxlen+1", t,
		    (long)pl.len[t]);
		if (tags[t].minl > 0) {
			pl.len[t] = tags[t].minl - 1;
			expect(decode_plan(s, &pl), KW_ERR_INVALID, s,
			    "minlen-1", t, (long)pl.len[t]);
		}
		n++;
	}
	/* Every tag of the table was exercised. */
	assert_int_equal(n, 36);
}

static void
test_msg_wrong_direction(void **state)
{
	struct plan pl;

	(void)state;
	for (size_t i = 0; i < NSPECS; i++) {
		const struct spec *s = &specs[i];

		plan_init(&pl, s, true);
		build(s, &pl, &fr, NULL);
		assert_int_equal(kwd_msg_decode(fr.b, fr.len, s->dir, &dm),
		    KW_OK);
		expect(kwd_msg_decode(fr.b, fr.len, other_dir(s->dir), &dm),
		    KW_ERR_INVALID, s, "wrong direction", 0, 0);
		expect(kwd_msg_decode(fr.b, fr.len, (enum kwd_msg_dir)0, &dm),
		    KW_ERR_INVALID, s, "direction 0", 0, 0);
		expect(kwd_msg_decode(fr.b, fr.len, (enum kwd_msg_dir)3, &dm),
		    KW_ERR_INVALID, s, "direction 3", 0, 0);
	}
}

static void
test_msg_unknown_type(void **state)
{
	static const uint16_t bad[] = {0, 12, 13, 63, 73, 74, 0x100, 0x8001,
	    0xffff};

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (spec_of(bad[i]) != NULL)
			continue; /* appended since */
		f_begin(&fr, bad[i], 0, 1);
		f_end(&fr);
		assert_int_equal(kwd_msg_decode(fr.b, fr.len, KWD_FROM_FRONT,
		                     &dm),
		    KW_ERR_INVALID);
		assert_int_equal(kwd_msg_decode(fr.b, fr.len, KWD_FROM_KEEPER,
		                     &dm),
		    KW_ERR_INVALID);
		assert_string_equal(kwd_msg_type_name(bad[i]), "UNKNOWN");
		/* Nor will the builder finish one. */
		kwd_msg_begin(&mb, (enum kwd_msg_type)bad[i], 1);
		assert_int_equal(mb.err, KW_ERR_INVALID);
		assert_int_equal(kwd_msg_end(&mb), KW_ERR_INVALID);
	}
	/* The same frame with a known type is fine: the type decided. */
	f_begin(&fr, KWD_MSG_HEALTH, 0, 1);
	f_end(&fr);
	assert_int_equal(kwd_msg_decode(fr.b, fr.len, KWD_FROM_FRONT, &dm),
	    KW_OK);
}

static void
test_msg_flags_nonzero(void **state)
{
	static const uint16_t bad[] = {1, 2, 0x80, 0x8000, 0xffff};
	const struct spec *s = spec_of(KWD_MSG_DECRYPT);
	struct plan pl;

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (bad[i] < NTAGS && tags[bad[i]].known)
			continue; /* appended since */
		plan_init(&pl, s, true);
		pl.flags = bad[i];
		expect(decode_plan(s, &pl), KW_ERR_INVALID, s, "flags", 0,
		    bad[i]);
	}
}

static void
test_msg_announced_length_mismatch(void **state)
{
	const struct spec *s = spec_of(KWD_MSG_DATAKEY);
	static const long delta[] = {-1, 1, -6, 6, -100};
	static const uint32_t odd[] = {0, 15, 16, KWD_MSG_MAX + 1, 0xffffffff};
	struct plan pl;

	(void)state;
	plan_init(&pl, s, true);
	build(s, &pl, &fr, NULL);
	assert_int_equal(kwd_msg_decode(fr.b, fr.len, s->dir, &dm), KW_OK);
	for (size_t i = 0; i < sizeof delta / sizeof delta[0]; i++) {
		be32(fr.b, (uint32_t)((long)fr.len + delta[i]));
		assert_int_equal(kwd_msg_decode(fr.b, fr.len, s->dir, &dm),
		    KW_ERR_INVALID);
	}
	for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
		be32(fr.b, odd[i]);
		assert_int_equal(kwd_msg_decode(fr.b, fr.len, s->dir, &dm),
		    KW_ERR_INVALID);
	}
	/* The announced length right, but the buffer handed over longer
	 * (or shorter) than the frame. */
	f_end(&fr);
	memset(fr.b + fr.len, 0, 8);
	assert_int_equal(kwd_msg_decode(fr.b, fr.len + 1, s->dir, &dm),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_msg_decode(fr.b, fr.len + 8, s->dir, &dm),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_msg_decode(fr.b, fr.len - 1, s->dir, &dm),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_msg_decode(fr.b, fr.len, s->dir, &dm), KW_OK);
}

/* Bytes after the last field, inside the announced length. */
static void
test_msg_trailing_bytes(void **state)
{
	const struct spec *s = spec_of(KWD_MSG_KEY_SHOW);
	struct plan pl;

	(void)state;
	for (size_t extra = 1; extra <= 5; extra++) {
		plan_init(&pl, s, true);
		build(s, &pl, &fr, NULL);
		memset(fr.b + fr.len, 0, extra);
		fr.len += extra;
		f_end(&fr);
		assert_int_equal(kwd_msg_decode(fr.b, fr.len, s->dir, &dm),
		    KW_ERR_INVALID);
	}
	/* Six zero bytes are a whole field header: tag 0, unknown. */
	plan_init(&pl, s, true);
	build(s, &pl, &fr, NULL);
	memset(fr.b + fr.len, 0, 6);
	fr.len += 6;
	f_end(&fr);
	assert_int_equal(kwd_msg_decode(fr.b, fr.len, s->dir, &dm),
	    KW_ERR_INVALID);
}

static void
test_msg_truncated_header(void **state)
{
	(void)state;
	f_begin(&fr, KWD_MSG_HEALTH, 0, 1);
	f_end(&fr);
	for (size_t len = 0; len < KWD_MSG_HDR; len++) {
		/* Announcing exactly what is there, too. */
		be32(fr.b, (uint32_t)len);
		assert_int_equal(kwd_msg_decode(fr.b, len, KWD_FROM_FRONT, &dm),
		    KW_ERR_INVALID);
		assert_int_equal(kwd_msg_frame_len(fr.b), 0);
	}
	assert_int_equal(kwd_msg_decode(NULL, 0, KWD_FROM_FRONT, &dm),
	    KW_ERR_INVALID);
}

/* A field header cut short, then a value that runs past the end. */
static void
test_msg_truncated_field(void **state)
{
	const struct spec *s = spec_of(KWD_MSG_KEY_SHOW);
	static const uint32_t alen[] = {2, 3, 100, 0x10000, 0x7fffffff,
	    0xfffffffe, 0xffffffff};
	struct plan pl;
	size_t base;

	(void)state;
	plan_init(&pl, s, true);
	pl.count[KWD_TAG_REMOTE] = 0; /* put last below */
	build(s, &pl, &fr, NULL);
	base = fr.len;
	/* The last field's header cut at every byte. */
	for (size_t cut = 1; cut < 6; cut++) {
		fr.len = base;
		f_raw(&fr, KWD_TAG_REMOTE, 1, "x", 1);
		fr.len -= 7 - cut;
		f_end(&fr);
		assert_int_equal(kwd_msg_decode(fr.b, fr.len, s->dir, &dm),
		    KW_ERR_INVALID);
	}
	/* REMOTE announcing more than the 1 byte that follows. */
	for (size_t i = 0; i < sizeof alen / sizeof alen[0]; i++) {
		fr.len = base;
		f_raw(&fr, KWD_TAG_REMOTE, alen[i], "x", 1);
		f_end(&fr);
		assert_int_equal(kwd_msg_decode(fr.b, fr.len, s->dir, &dm),
		    KW_ERR_INVALID);
	}
	/* The same field with its true length is fine. */
	fr.len = base;
	f_raw(&fr, KWD_TAG_REMOTE, 1, "x", 1);
	f_end(&fr);
	assert_int_equal(kwd_msg_decode(fr.b, fr.len, s->dir, &dm), KW_OK);
}

static void
test_msg_frame_len(void **state)
{
	unsigned char h[KWD_MSG_HDR] = {0};

	(void)state;
	be32(h, KWD_MSG_HDR);
	assert_int_equal(kwd_msg_frame_len(h), KWD_MSG_HDR);
	be32(h, 1000);
	assert_int_equal(kwd_msg_frame_len(h), 1000);
	be32(h, KWD_MSG_MAX);
	assert_int_equal(kwd_msg_frame_len(h), KWD_MSG_MAX);
	be32(h, KWD_MSG_MAX + 1);
	assert_int_equal(kwd_msg_frame_len(h), 0);
	be32(h, KWD_MSG_HDR - 1);
	assert_int_equal(kwd_msg_frame_len(h), 0);
	be32(h, 0);
	assert_int_equal(kwd_msg_frame_len(h), 0);
	be32(h, 0xffffffff);
	assert_int_equal(kwd_msg_frame_len(h), 0);
}

/* IDENTITY of a KEY_SHOW carrying s. */
static int
decode_identity(const char *s, size_t len)
{
	f_begin(&fr, KWD_MSG_KEY_SHOW, 0, 1);
	f_str(&fr, KWD_TAG_KEY, "k");
	f_field(&fr, KWD_TAG_IDENTITY, s, len);
	f_end(&fr);
	/* Continuation bytes past the end: a sequence cut by the end of the
	 * frame must not be completed from beyond it. */
	memset(fr.b + fr.len, 0x80, 4);
	return kwd_msg_decode(fr.b, fr.len, KWD_FROM_FRONT, &dm);
}

static void
test_msg_str_rejects_bad_utf8(void **state)
{
	static const char *bad[] = {
	    "\x80", /* lone continuation */
	    "a\xbf", /* lone continuation */
	    "\xc0\x80", /* overlong NUL */
	    "\xc1\xbf", /* overlong U+007F */
	    "\xe0\x80\x80", /* overlong */
	    "\xe0\x9f\xbf", /* overlong U+07FF */
	    "\xf0\x80\x80\x80", /* overlong */
	    "\xf0\x8f\xbf\xbf", /* overlong U+FFFF */
	    "\xed\xa0\x80", /* U+D800 */
	    "\xed\xbf\xbf", /* U+DFFF */
	    "\xed\xa0\xbd\xed\xb8\x80", /* CESU-8 pair */
	    "\xf4\x90\x80\x80", /* U+110000 */
	    "\xf5\x80\x80\x80", /* beyond */
	    "\xf7\xbf\xbf\xbf",
	    "\xf8\x88\x80\x80\x80", /* 5-byte form */
	    "\xfc\x84\x80\x80\x80\x80",
	    "\xfe",
	    "\xff",
	    "\xc3", /* cut */
	    "\xe2\x82", /* cut */
	    "\xf0\x9f\x98", /* cut */
	    "\xc3\x28", /* bad continuation */
	    "\xe2\x28\xa1",
	    "\xe2\x82\x28",
	    "\xf0\x28\x8c\xbc",
	    "\xf0\x90\x28\xbc",
	    "\xf0\x90\x8c\x28",
	    "ok\xc3",
	};

	(void)state;
	assert_int_equal(decode_identity("ok", 2), KW_OK);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (decode_identity(bad[i], strlen(bad[i])) != KW_ERR_INVALID)
			fail_msg("bad UTF-8 sample %zu accepted", i);
}

static void
test_msg_str_rejects_control_bytes(void **state)
{
	char s[4] = "a?b";

	(void)state;
	for (int c = 0; c < 0x100; c++) {
		int want = (c < 0x20 || c == 0x7f || c >= 0x80) ? KW_ERR_INVALID
		                                                : KW_OK;

		s[1] = (char)c;
		if (decode_identity(s, 3) != want)
			fail_msg("byte 0x%02x: want %d", c, want);
	}
	/* A NUL at either end, too. */
	assert_int_equal(decode_identity("\0a", 2), KW_ERR_INVALID);
	assert_int_equal(decode_identity("a\0", 2), KW_ERR_INVALID);
}

/* KEY (a NAME) of a KEY_SHOW carrying s. */
static int
decode_key(const char *s, size_t len)
{
	f_begin(&fr, KWD_MSG_KEY_SHOW, 0, 1);
	f_str(&fr, KWD_TAG_IDENTITY, "spiffe://x/y");
	f_field(&fr, KWD_TAG_KEY, s, len);
	f_end(&fr);
	return kwd_msg_decode(fr.b, fr.len, KWD_FROM_FRONT, &dm);
}

static void
test_msg_name_canonical(void **state)
{
	static const char *bad[] = {"A", "Key", ".a", "-a", "_a", "a/b", "a..b",
	    "..", "a b", "a\tb", "caf\xc3\xa9", "a:b", "a@b", "a\\b", "*",
	    "a*"};
	static const char *good[] = {"a", "0", "imagenet-2026", "a.b_c-d",
	    "a."};

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (decode_key(bad[i], strlen(bad[i])) != KW_ERR_INVALID)
			fail_msg("name \"%s\" accepted", bad[i]);
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		assert_int_equal(decode_key(good[i], strlen(good[i])), KW_OK);
	assert_int_equal(decode_key("a\0b", 3), KW_ERR_INVALID);
}

/* A DATAKEY whose context part is given as a string: k/v per field. */
static int
decode_ctx(const char *order, int dup)
{
	unsigned nk = 0, nv = 0;

	f_begin(&fr, KWD_MSG_DATAKEY, 0, 1);
	f_str(&fr, KWD_TAG_IDENTITY, "id");
	f_str(&fr, KWD_TAG_KEY, "k");
	for (const char *c = order; *c; c++) {
		char v[16];

		switch (*c) {
		case 'k':
			/* dup: key number dup repeats key 0. */
			snprintf(v, sizeof v, "key%u",
			    dup && nk == (unsigned)dup ? 0 : nk);
			f_str(&fr, KWD_TAG_CTX_KEY, v);
			nk++;
			break;
		case 'v':
			snprintf(v, sizeof v, "v%u", nv++);
			f_str(&fr, KWD_TAG_CTX_VAL, v);
			break;
		case 'r':
			f_str(&fr, KWD_TAG_REMOTE, "10.0.0.1");
			break;
		}
	}
	f_u8(&fr, KWD_TAG_PLAINTEXT, 1);
	f_end(&fr);
	return kwd_msg_decode(fr.b, fr.len, KWD_FROM_FRONT, &dm);
}

static void
test_msg_ctx_order(void **state)
{
	static const char *good[] = {"", "kv", "kvkv", "kvkvkv", "kvrkv",
	    "rkv"};
	static const char *bad[] = {"k", "v", "vk", "kkvv", "kvk", "kvv",
	    "kvvk", "vkkv", "krv", "kvkrv", "kvkkvv"};

	(void)state;
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		if (decode_ctx(good[i], 0) != KW_OK)
			fail_msg("context order \"%s\" refused", good[i]);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (decode_ctx(bad[i], 0) != KW_ERR_INVALID)
			fail_msg("context order \"%s\" accepted", bad[i]);
}

static void
test_msg_ctx_duplicate_keys(void **state)
{
	char order[2 * 32 + 1];

	(void)state;
	assert_int_equal(decode_ctx("kvkv", 0), KW_OK);
	assert_int_equal(decode_ctx("kvkv", 1), KW_ERR_INVALID);
	for (size_t i = 0; i < 32; i++)
		memcpy(order + 2 * i, "kv", 2);
	order[64] = '\0';
	assert_int_equal(decode_ctx(order, 0), KW_OK);
	/* The last of 32 repeating the first. */
	assert_int_equal(decode_ctx(order, 31), KW_ERR_INVALID);
	assert_int_equal(decode_ctx(order, 16), KW_ERR_INVALID);
	/* A prefix is another key. */
	f_begin(&fr, KWD_MSG_DECRYPT, 0, 1);
	f_str(&fr, KWD_TAG_IDENTITY, "id");
	f_str(&fr, KWD_TAG_KEY, "k");
	f_str(&fr, KWD_TAG_CTX_KEY, "ab");
	f_str(&fr, KWD_TAG_CTX_VAL, "");
	f_str(&fr, KWD_TAG_CTX_KEY, "a");
	f_str(&fr, KWD_TAG_CTX_VAL, "");
	f_str(&fr, KWD_TAG_BLOB, "b");
	f_end(&fr);
	assert_int_equal(kwd_msg_decode(fr.b, fr.len, KWD_FROM_FRONT, &dm),
	    KW_OK);
	/* Equal keys, different values. */
	f_begin(&fr, KWD_MSG_DECRYPT, 0, 1);
	f_str(&fr, KWD_TAG_IDENTITY, "id");
	f_str(&fr, KWD_TAG_KEY, "k");
	f_str(&fr, KWD_TAG_CTX_KEY, "dataset");
	f_str(&fr, KWD_TAG_CTX_VAL, "imagenet");
	f_str(&fr, KWD_TAG_CTX_KEY, "dataset");
	f_str(&fr, KWD_TAG_CTX_VAL, "laion");
	f_str(&fr, KWD_TAG_BLOB, "b");
	f_end(&fr);
	assert_int_equal(kwd_msg_decode(fr.b, fr.len, KWD_FROM_FRONT, &dm),
	    KW_ERR_INVALID);
}

/* KEY_PATCH with STATE v, DATAKEY with PLAINTEXT v, R_HEALTH with v. */
static int
decode_u8(uint16_t tag, uint8_t v)
{
	switch (tag) {
	case KWD_TAG_STATE:
		f_begin(&fr, KWD_MSG_KEY_PATCH, 0, 1);
		f_str(&fr, KWD_TAG_IDENTITY, "id");
		f_str(&fr, KWD_TAG_KEY, "k");
		f_u8(&fr, KWD_TAG_STATE, v);
		f_u32(&fr, KWD_TAG_VERSION, 2);
		break;
	case KWD_TAG_PLAINTEXT:
		f_begin(&fr, KWD_MSG_DATAKEY, 0, 1);
		f_str(&fr, KWD_TAG_IDENTITY, "id");
		f_str(&fr, KWD_TAG_KEY, "k");
		f_u8(&fr, KWD_TAG_PLAINTEXT, v);
		break;
	default:
		f_begin(&fr, KWD_MSG_R_HEALTH, 0, 1);
		f_u8(&fr, KWD_TAG_HSM_OK, tag == KWD_TAG_HSM_OK ? v : 1);
		f_u8(&fr, KWD_TAG_AUDIT_OK, tag == KWD_TAG_AUDIT_OK ? v : 1);
		break;
	}
	f_end(&fr);
	return kwd_msg_decode(fr.b, fr.len,
	    tag == KWD_TAG_STATE || tag == KWD_TAG_PLAINTEXT ? KWD_FROM_FRONT
	                                                     : KWD_FROM_KEEPER,
	    &dm);
}

static void
test_msg_u8_ranges(void **state)
{
	(void)state;
	for (unsigned v = 0; v < 256; v++) {
		int want = v >= 1 && v <= 4 ? KW_OK : KW_ERR_INVALID;

		if (decode_u8(KWD_TAG_STATE, (uint8_t)v) != want)
			fail_msg("STATE %u", v);
		want = v <= 1 ? KW_OK : KW_ERR_INVALID;
		if (decode_u8(KWD_TAG_PLAINTEXT, (uint8_t)v) != want)
			fail_msg("PLAINTEXT %u", v);
		if (decode_u8(KWD_TAG_HSM_OK, (uint8_t)v) != want)
			fail_msg("HSM_OK %u", v);
		if (decode_u8(KWD_TAG_AUDIT_OK, (uint8_t)v) != want)
			fail_msg("AUDIT_OK %u", v);
	}
	assert_int_equal(decode_u8(KWD_TAG_STATE, 0), KW_ERR_INVALID);
	assert_int_equal(decode_u8(KWD_TAG_STATE, 5), KW_ERR_INVALID);
	assert_int_equal(decode_u8(KWD_TAG_PLAINTEXT, 2), KW_ERR_INVALID);
}

static void
test_msg_key_list_counts_equal(void **state)
{
	const struct spec *s = spec_of(KWD_MSG_R_KEY_LIST);
	struct plan pl;

	(void)state;
	plan_init(&pl, s, false);
	assert_int_equal(decode_plan(s, &pl), KW_OK); /* an empty list */
	pl.count[KWD_TAG_KEY] = 2;
	pl.count[KWD_TAG_VERSION] = 1;
	assert_int_equal(decode_plan(s, &pl), KW_ERR_INVALID);
	pl.count[KWD_TAG_VERSION] = 3;
	assert_int_equal(decode_plan(s, &pl), KW_ERR_INVALID);
	pl.count[KWD_TAG_KEY] = 0;
	pl.count[KWD_TAG_VERSION] = 1;
	assert_int_equal(decode_plan(s, &pl), KW_ERR_INVALID);
	pl.count[KWD_TAG_KEY] = 3;
	pl.count[KWD_TAG_VERSION] = 3;
	assert_int_equal(decode_plan(s, &pl), KW_OK);
}

/*
 * An R_KEY_LIST of 1000 keys and versions whose key lengths add up to
 * total bytes: 1000 * (6 + 6 + 4) + sum of the key lengths.
 */
static void
big_key_list(struct frame *f, struct kwd_msgbuf *b, size_t total)
{
	size_t names = total - KWD_MSG_HDR - 1000 * 16;
	unsigned char name[64];

	f_begin(f, KWD_MSG_R_KEY_LIST, 0, 9);
	if (b != NULL)
		kwd_msg_begin(b, KWD_MSG_R_KEY_LIST, 9);
	for (unsigned i = 0; i < 1000; i++) {
		size_t l = names / 1000 + (i < names % 1000);

		sample(KWD_TAG_KEY, i, l, name);
		f_field(f, KWD_TAG_KEY, name, l);
		if (b != NULL)
			kwd_msg_put(b, KWD_TAG_KEY, name, l);
	}
	for (unsigned i = 0; i < 1000; i++) {
		f_u32(f, KWD_TAG_VERSION, i);
		if (b != NULL)
			kwd_msg_put_u32(b, KWD_TAG_VERSION, i);
	}
	f_end(f);
}

static void
test_msg_frame_of_max_size(void **state)
{
	(void)state;
	big_key_list(&fr, &mb, KWD_MSG_MAX);
	assert_int_equal(fr.len, KWD_MSG_MAX);
	assert_int_equal(kwd_msg_frame_len(fr.b), KWD_MSG_MAX);
	assert_int_equal(kwd_msg_decode(fr.b, fr.len, KWD_FROM_KEEPER, &dm),
	    KW_OK);
	assert_int_equal(dm.nfields, 2000);
	assert_int_equal(kwd_msg_end(&mb), KW_OK);
	assert_int_equal(mb.len, KWD_MSG_MAX);
	assert_memory_equal(mb.buf, fr.b, fr.len);
	/* Not one byte more: not even an empty field fits. */
	kwd_msg_put(&mb, KWD_TAG_VERSION, NULL, 0);
	assert_int_equal(mb.err, KW_ERR_TOO_LARGE);
	assert_int_equal(mb.len, KWD_MSG_MAX);
	assert_int_equal(kwd_msg_end(&mb), KW_ERR_TOO_LARGE);

	big_key_list(&fr, NULL, KWD_MSG_MAX + 1);
	assert_int_equal(fr.len, KWD_MSG_MAX + 1);
	assert_int_equal(kwd_msg_frame_len(fr.b), 0);
	assert_int_equal(kwd_msg_decode(fr.b, fr.len, KWD_FROM_KEEPER, &dm),
	    KW_ERR_TOO_LARGE);
}

/* 2000 fields is the most a valid frame can hold; decoding stays fast. */
static void
test_msg_decode_many_fields_linear(void **state)
{
	struct timespec t0, t1;
	double ms;

	(void)state;
	big_key_list(&fr, NULL, KWD_MSG_MAX);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(kwd_msg_decode(fr.b, fr.len, KWD_FROM_KEEPER,
		                     &dm),
		    KW_OK);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
	    (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	/* About 2 ms for 100 decodes on the reference machine; a quadratic
	 * scan over 2000 fields would take seconds. Generous for ASan. */
	if (ms > 1000)
		fail_msg("100 decodes of 2000 fields took %.0f ms", ms);
}

static void
test_msg_decode_leaves_output_on_failure(void **state)
{
	const struct spec *s = spec_of(KWD_MSG_R_KEY);
	struct plan pl;
	static struct kwd_msg before;

	(void)state;
	plan_init(&pl, s, true);
	pl.count[KWD_TAG_CREATED] = 0;
	memset(&dm, 0x5a, sizeof dm);
	memcpy(&before, &dm, sizeof dm);
	assert_int_equal(decode_plan(s, &pl), KW_ERR_INVALID);
	assert_memory_equal(&dm, &before, sizeof dm);
}

static void
test_msg_builder_refuses_invalid(void **state)
{
	int fds[2];

	(void)state;
	/* R_ERROR without MESSAGE. */
	kwd_msg_begin(&mb, KWD_MSG_R_ERROR, 1);
	kwd_msg_put_u32(&mb, KWD_TAG_STATUS, 3);
	assert_int_equal(kwd_msg_end(&mb), KW_ERR_INVALID);
	assert_int_equal(mb.err, KW_ERR_INVALID);
	assert_int_equal(kwd_msg_end(&mb), KW_ERR_INVALID); /* sticks */
	/* A later put does not clear it. */
	kwd_msg_put_str(&mb, KWD_TAG_MESSAGE, "try again");
	assert_int_equal(kwd_msg_end(&mb), KW_ERR_INVALID);
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, fds), 0);
	assert_int_equal(kwd_ipc_send(fds[0], &mb), KW_ERR_INVALID);
	/* Begun again, the same frame completed is fine. */
	kwd_msg_begin(&mb, KWD_MSG_R_ERROR, 1);
	kwd_msg_put_u32(&mb, KWD_TAG_STATUS, 3);
	kwd_msg_put_str(&mb, KWD_TAG_MESSAGE, "try again");
	assert_int_equal(kwd_msg_end(&mb), KW_OK);
	assert_int_equal(kwd_ipc_send(fds[0], &mb), KW_OK);
	close(fds[0]);
	close(fds[1]);

	/* Values the receiver would refuse. */
	kwd_msg_begin(&mb, KWD_MSG_KEY_SHOW, 1);
	kwd_msg_put_str(&mb, KWD_TAG_IDENTITY, "id\n");
	kwd_msg_put_str(&mb, KWD_TAG_KEY, "k");
	assert_int_equal(kwd_msg_end(&mb), KW_ERR_INVALID);
	kwd_msg_begin(&mb, KWD_MSG_KEY_SHOW, 1);
	kwd_msg_put_str(&mb, KWD_TAG_IDENTITY, "id");
	kwd_msg_put_str(&mb, KWD_TAG_KEY, "Key");
	assert_int_equal(kwd_msg_end(&mb), KW_ERR_INVALID);
	kwd_msg_begin(&mb, KWD_MSG_KEY_SHOW, 1);
	kwd_msg_put_str(&mb, KWD_TAG_IDENTITY, "id");
	kwd_msg_put_str(&mb, KWD_TAG_KEY, "k");
	kwd_msg_put_str(&mb, KWD_TAG_BLOB, "b"); /* not in KEY_SHOW */
	assert_int_equal(kwd_msg_end(&mb), KW_ERR_INVALID);
	kwd_msg_begin(&mb, KWD_MSG_DATAKEY, 1);
	kwd_msg_put_str(&mb, KWD_TAG_IDENTITY, "id");
	kwd_msg_put_str(&mb, KWD_TAG_KEY, "k");
	kwd_msg_put_str(&mb, KWD_TAG_CTX_VAL, "v"); /* before its key */
	kwd_msg_put_str(&mb, KWD_TAG_CTX_KEY, "k");
	kwd_msg_put_u8(&mb, KWD_TAG_PLAINTEXT, 1);
	assert_int_equal(kwd_msg_end(&mb), KW_ERR_INVALID);
	/* A NULL string. */
	kwd_msg_begin(&mb, KWD_MSG_KEY_SHOW, 1);
	kwd_msg_put_str(&mb, KWD_TAG_IDENTITY, NULL);
	assert_int_equal(mb.err, KW_ERR_INVALID);
	kwd_msg_put_str(&mb, KWD_TAG_IDENTITY, "id");
	kwd_msg_put_str(&mb, KWD_TAG_KEY, "k");
	assert_int_equal(kwd_msg_end(&mb), KW_ERR_INVALID);
	/* NULL bytes with a length. */
	kwd_msg_begin(&mb, KWD_MSG_R_DECRYPT, 1);
	kwd_msg_put(&mb, KWD_TAG_DEK, NULL, 32);
	assert_int_equal(kwd_msg_end(&mb), KW_ERR_INVALID);
}

static void
test_msg_builder_overflow(void **state)
{
	static unsigned char text[60000];
	size_t len;

	(void)state;
	memset(text, 'x', sizeof text);
	kwd_msg_begin(&mb, KWD_MSG_R_STATS, 1);
	kwd_msg_put(&mb, KWD_TAG_TEXT, text, sizeof text);
	assert_int_equal(mb.err, KW_OK);
	len = mb.len;
	kwd_msg_put(&mb, KWD_TAG_TEXT, text, sizeof text);
	assert_int_equal(mb.err, KW_ERR_TOO_LARGE);
	assert_int_equal(mb.len, len);
	/* Errors stick: later fields that would fit are ignored. */
	kwd_msg_put_u8(&mb, KWD_TAG_HSM_OK, 1);
	assert_int_equal(mb.len, len);
	assert_int_equal(kwd_msg_end(&mb), KW_ERR_TOO_LARGE);
	/* A length that would wrap a size_t. */
	kwd_msg_begin(&mb, KWD_MSG_R_STATS, 1);
	kwd_msg_put(&mb, KWD_TAG_TEXT, text, SIZE_MAX - 2);
	assert_int_equal(mb.err, KW_ERR_TOO_LARGE);
	assert_int_equal(mb.len, KWD_MSG_HDR);
	/* One byte more than fits, counting the field header. */
	kwd_msg_begin(&mb, KWD_MSG_R_STATS, 1);
	kwd_msg_put(&mb, KWD_TAG_TEXT, text, 60000);
	kwd_msg_put(&mb, KWD_TAG_TEXT, text,
	    KWD_MSG_MAX - KWD_MSG_HDR - 60006 - 6 + 1);
	assert_int_equal(mb.err, KW_ERR_TOO_LARGE);
	assert_int_equal(mb.len, KWD_MSG_HDR + 60006);
	/* The largest field that fits, which TEXT's bound then refuses. */
	kwd_msg_begin(&mb, KWD_MSG_R_STATS, 1);
	kwd_msg_put(&mb, KWD_TAG_TEXT, text, 60000);
	kwd_msg_put(&mb, KWD_TAG_TEXT, text,
	    KWD_MSG_MAX - KWD_MSG_HDR - 60006 - 6);
	assert_int_equal(mb.err, KW_OK);
	assert_int_equal(mb.len, KWD_MSG_MAX);
	assert_int_equal(kwd_msg_end(&mb), KW_ERR_INVALID);
}

static void
test_msg_builder_header(void **state)
{
	(void)state;
	kwd_msg_begin(&mb, KWD_MSG_R_OK, 0xfedcba9876543210ULL);
	assert_int_equal(kwd_msg_end(&mb), KW_OK);
	assert_int_equal(mb.len, KWD_MSG_HDR);
	assert_memory_equal(mb.buf,
	    "\0\0\0\x10\0\x48\0\0\xfe\xdc\xba\x98\x76\x54\x32\x10",
	    KWD_MSG_HDR);
	assert_int_equal(kwd_msg_decode(mb.buf, mb.len, KWD_FROM_KEEPER, &dm),
	    KW_OK);
	assert_true(dm.rid == 0xfedcba9876543210ULL);
	assert_int_equal(dm.nfields, 0);
}

static void
test_msg_wipe(void **state)
{
	static const unsigned char zero[KWD_MSG_MAX];
	unsigned char dek[32];
	int fds[2];

	(void)state;
	memset(dek, 0xee, sizeof dek);
	kwd_msg_begin(&mb, KWD_MSG_R_DECRYPT, 1);
	kwd_msg_put(&mb, KWD_TAG_DEK, dek, sizeof dek);
	assert_int_equal(kwd_msg_end(&mb), KW_OK);
	/* A longer frame's tail survives a shorter one begun over it. */
	memset(mb.buf + 1000, 0xee, 100);
	kwd_msg_wipe(&mb);
	assert_memory_equal(mb.buf, zero, sizeof zero);
	assert_int_equal(mb.len, 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, fds), 0);
	assert_int_not_equal(kwd_ipc_send(fds[0], &mb), KW_OK);
	close(fds[0]);
	close(fds[1]);
}

static void
test_msg_accessors(void **state)
{
	uint8_t v8 = 42;
	uint32_t v32 = 42;
	uint64_t v64 = 42;
	char s[16] = "unchanged";

	(void)state;
	kwd_msg_begin(&mb, KWD_MSG_R_KEY, 5);
	kwd_msg_put_str(&mb, KWD_TAG_KEY, "datasets");
	kwd_msg_put_u32(&mb, KWD_TAG_MIN_DECRYPT, 0x01020304);
	kwd_msg_put_u64(&mb, KWD_TAG_CREATED, 0x0102030405060708ULL);
	kwd_msg_put_u32(&mb, KWD_TAG_VERSION, 0);
	kwd_msg_put(&mb, KWD_TAG_VERREC, "0123456789abc", 13);
	kwd_msg_put(&mb, KWD_TAG_VERREC, "abcdefghijklm", 13);
	assert_int_equal(kwd_msg_end(&mb), KW_OK);
	assert_int_equal(kwd_msg_decode(mb.buf, mb.len, KWD_FROM_KEEPER, &dm),
	    KW_OK);
	assert_true(kwd_msg_u32(&dm, KWD_TAG_MIN_DECRYPT, &v32));
	assert_int_equal(v32, 0x01020304);
	assert_true(kwd_msg_u64(&dm, KWD_TAG_CREATED, &v64));
	assert_true(v64 == 0x0102030405060708ULL);
	assert_true(kwd_msg_u32(&dm, KWD_TAG_VERSION, &v32));
	assert_int_equal(v32, 0);
	/* Absent, or of another width: false, output untouched. */
	v32 = 42;
	v64 = 42;
	assert_false(kwd_msg_u64(&dm, KWD_TAG_ROTATION, &v64));
	assert_true(v64 == 42);
	assert_false(kwd_msg_u8(&dm, KWD_TAG_MIN_DECRYPT, &v8));
	assert_int_equal(v8, 42);
	assert_false(kwd_msg_u32(&dm, KWD_TAG_CREATED, &v32));
	assert_int_equal(v32, 42);
	assert_int_equal(kwd_msg_count(&dm, KWD_TAG_VERREC), 2);
	assert_memory_equal(kwd_msg_get(&dm, KWD_TAG_VERREC, 1)->p,
	    "abcdefghijklm", 13);
	assert_null(kwd_msg_get(&dm, KWD_TAG_VERREC, 2));
	assert_null(kwd_msg_get(&dm, KWD_TAG_ROTATION, 0));
	/* Strings: exact fit needs room for the NUL. */
	assert_false(kwd_msg_str(&dm, KWD_TAG_KEY, 0, s, 8));
	assert_string_equal(s, "unchanged");
	assert_true(kwd_msg_str(&dm, KWD_TAG_KEY, 0, s, 9));
	assert_string_equal(s, "datasets");
	assert_false(kwd_msg_str(&dm, KWD_TAG_KEY, 1, s, sizeof s));
	/* Opaque bytes are no string. */
	assert_false(kwd_msg_str(&dm, KWD_TAG_VERREC, 0, s, sizeof s));
	assert_false(kwd_msg_str(&dm, KWD_TAG_KEY, 0, NULL, 0));
}

static double
elapsed_ms(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 +
	    (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static void
pair(int fds[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0,
	                     fds),
	    0);
}

static void
test_msg_ipc_round_trip(void **state)
{
	static unsigned char buf[KWD_MSG_MAX];
	size_t len = 0;
	int fds[2];

	(void)state;
	pair(fds);
	kwd_msg_begin(&mb, KWD_MSG_DATAKEY, 77);
	kwd_msg_put_str(&mb, KWD_TAG_IDENTITY, "spiffe://ml/train");
	kwd_msg_put_str(&mb, KWD_TAG_KEY, "datasets");
	kwd_msg_put_str(&mb, KWD_TAG_CTX_KEY, "dataset");
	kwd_msg_put_str(&mb, KWD_TAG_CTX_VAL, "imagenet-2026");
	kwd_msg_put_u8(&mb, KWD_TAG_PLAINTEXT, 1);
	assert_int_equal(kwd_msg_end(&mb), KW_OK);
	assert_int_equal(kwd_ipc_send(fds[0], &mb), KW_OK);
	/* Two frames queued stay two packets. */
	assert_int_equal(kwd_ipc_send(fds[0], &mb), KW_OK);
	for (int i = 0; i < 2; i++) {
		len = 0;
		assert_int_equal(kwd_ipc_recv(fds[1], buf, &len, 1000), KW_OK);
		assert_int_equal(len, mb.len);
		assert_memory_equal(buf, mb.buf, len);
		assert_int_equal(kwd_msg_decode(buf, len, KWD_FROM_FRONT, &dm),
		    KW_OK);
		assert_true(dm.rid == 77);
	}
	/* And the answer the other way, waiting forever. */
	kwd_msg_begin(&mb, KWD_MSG_R_OK, 77);
	assert_int_equal(kwd_msg_end(&mb), KW_OK);
	assert_int_equal(kwd_ipc_send(fds[1], &mb), KW_OK);
	assert_int_equal(kwd_ipc_recv(fds[0], buf, &len, -1), KW_OK);
	assert_int_equal(len, KWD_MSG_HDR);
	close(fds[0]);
	close(fds[1]);
}

static void
test_msg_ipc_timeout(void **state)
{
	static unsigned char buf[KWD_MSG_MAX];
	static const int tmo[] = {0, 1, 50, 200};
	struct timespec t0;
	size_t len = 12345;
	int fds[2];

	(void)state;
	pair(fds);
	for (size_t i = 0; i < sizeof tmo / sizeof tmo[0]; i++) {
		double ms;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		assert_int_equal(kwd_ipc_recv(fds[0], buf, &len, tmo[i]),
		    KW_ERR_TIMEOUT);
		ms = elapsed_ms(&t0);
		if (ms < tmo[i] || ms > tmo[i] + 100)
			fail_msg("timeout %d ms took %.1f ms", tmo[i], ms);
		assert_int_equal(len, 12345);
	}
	close(fds[0]);
	close(fds[1]);
}

static volatile sig_atomic_t nalarms;

static void
on_alarm(int sig)
{
	struct itimerval stop = {{0, 0}, {0, 0}};

	(void)sig;
	if (++nalarms == 8)
		setitimer(ITIMER_REAL, &stop, NULL);
}

/* Signals during the wait neither end it early nor stretch it. */
static void
test_msg_ipc_timeout_with_signals(void **state)
{
	static unsigned char buf[KWD_MSG_MAX];
	struct itimerval every = {{0, 15000}, {0, 15000}};
	struct itimerval stop = {{0, 0}, {0, 0}};
	struct sigaction sa, old;
	struct timespec t0;
	size_t len;
	double ms;
	int fds[2], rv;

	(void)state;
	pair(fds);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm; /* no SA_RESTART: poll gets EINTR */
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	nalarms = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(setitimer(ITIMER_REAL, &every, NULL), 0);
	rv = kwd_ipc_recv(fds[0], buf, &len, 200);
	ms = elapsed_ms(&t0);
	setitimer(ITIMER_REAL, &stop, NULL);
	sigaction(SIGALRM, &old, NULL);
	assert_int_equal(rv, KW_ERR_TIMEOUT);
	assert_true(nalarms >= 5);
	/* Restarting the full wait after each signal would take 320 ms. */
	if (ms < 200 || ms > 290)
		fail_msg("200 ms timeout with signals took %.1f ms", ms);
	close(fds[0]);
	close(fds[1]);
}

static void
test_msg_ipc_peer_closed(void **state)
{
	static unsigned char buf[KWD_MSG_MAX];
	size_t len = 12345;
	int fds[2];

	(void)state;
	/* Nothing queued: the end is reported at once, not at timeout. */
	pair(fds);
	close(fds[1]);
	assert_int_equal(kwd_ipc_recv(fds[0], buf, &len, 5000), KW_ERR_IO);
	assert_int_equal(len, 12345);
	/* Sending to it: an error, not SIGPIPE (which would kill us). */
	kwd_msg_begin(&mb, KWD_MSG_HEALTH, 1);
	assert_int_equal(kwd_msg_end(&mb), KW_OK);
	assert_int_equal(kwd_ipc_send(fds[0], &mb), KW_ERR_IO);
	close(fds[0]);
	/* Linux raises no SIGPIPE on a SEQPACKET socket, but does on a
	 * stream one: there, only MSG_NOSIGNAL keeps this process alive. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	close(fds[1]);
	assert_int_equal(kwd_ipc_send(fds[0], &mb), KW_ERR_IO);
	close(fds[0]);

	/* A packet queued before the close is still delivered first. */
	pair(fds);
	assert_int_equal(kwd_ipc_send(fds[1], &mb), KW_OK);
	close(fds[1]);
	assert_int_equal(kwd_ipc_recv(fds[0], buf, &len, 1000), KW_OK);
	assert_int_equal(len, KWD_MSG_HDR);
	len = 12345;
	assert_int_equal(kwd_ipc_recv(fds[0], buf, &len, 1000), KW_ERR_IO);
	close(fds[0]);

	/* A closed descriptor, and no descriptor at all. */
	assert_int_equal(kwd_ipc_recv(fds[0], buf, &len, 10), KW_ERR_IO);
	assert_int_equal(kwd_ipc_send(fds[0], &mb), KW_ERR_IO);
	assert_int_equal(kwd_ipc_recv(-1, buf, &len, 10), KW_ERR_INVALID);
	assert_int_equal(kwd_ipc_send(-1, &mb), KW_ERR_INVALID);
	assert_int_equal(len, 12345);
}

static void
test_msg_ipc_oversized_packet(void **state)
{
	static unsigned char out[KWD_MSG_MAX + 2];
	static unsigned char buf[KWD_MSG_MAX];
	size_t len = 12345;
	int fds[2];

	(void)state;
	pair(fds);
	memset(out, 0x41, sizeof out);
	assert_int_equal(send(fds[1], out, KWD_MSG_MAX + 1, 0),
	    KWD_MSG_MAX + 1);
	assert_int_equal(kwd_ipc_recv(fds[0], buf, &len, 1000),
	    KW_ERR_TOO_LARGE);
	assert_int_equal(len, 12345);
	/* Exactly the maximum passes, and the boundary held: this is the
	 * next packet, not the rest of the oversized one. */
	out[0] = 0x42;
	assert_int_equal(send(fds[1], out, KWD_MSG_MAX, 0), KWD_MSG_MAX);
	assert_int_equal(kwd_ipc_recv(fds[0], buf, &len, 1000), KW_OK);
	assert_int_equal(len, KWD_MSG_MAX);
	assert_int_equal(buf[0], 0x42);
	/* And a whole valid frame of the maximum size. */
	big_key_list(&fr, &mb, KWD_MSG_MAX);
	assert_int_equal(kwd_msg_end(&mb), KW_OK);
	assert_int_equal(kwd_ipc_send(fds[1], &mb), KW_OK);
	assert_int_equal(kwd_ipc_recv(fds[0], buf, &len, 1000), KW_OK);
	assert_int_equal(kwd_msg_decode(buf, len, KWD_FROM_KEEPER, &dm), KW_OK);
	close(fds[0]);
	close(fds[1]);
}

/* Descriptors passed along a frame are no part of the protocol. */
static void
test_msg_ipc_refuses_passed_fds(void **state)
{
	static unsigned char buf[KWD_MSG_MAX];
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov;
	struct msghdr mh;
	struct cmsghdr *c;
	size_t len = 12345;
	int fds[2], passed;

	(void)state;
	pair(fds);
	passed = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(passed >= 0);
	kwd_msg_begin(&mb, KWD_MSG_HEALTH, 1);
	assert_int_equal(kwd_msg_end(&mb), KW_OK);
	iov.iov_base = mb.buf;
	iov.iov_len = mb.len;
	memset(&mh, 0, sizeof mh);
	memset(&ctl, 0, sizeof ctl);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = ctl.b;
	mh.msg_controllen = sizeof ctl.b;
	c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &passed, sizeof passed);
	assert_int_equal(sendmsg(fds[1], &mh, 0), (ssize_t)mb.len);
	assert_int_equal(kwd_ipc_recv(fds[0], buf, &len, 1000), KW_ERR_INVALID);
	assert_int_equal(len, 12345);
	close(passed);
	close(fds[0]);
	close(fds[1]);
}

static void
test_msg_ipc_send_refuses_unended(void **state)
{
	int fds[2];

	(void)state;
	pair(fds);
	kwd_msg_begin(&mb, KWD_MSG_HEALTH, 1);
	assert_int_equal(kwd_ipc_send(fds[0], &mb), KW_ERR_INVALID);
	assert_int_equal(kwd_msg_end(&mb), KW_OK);
	/* A field put after kwd_msg_end, never checked. */
	kwd_msg_put_str(&mb, KWD_TAG_TEXT, "x");
	assert_int_equal(kwd_ipc_send(fds[0], &mb), KW_ERR_INVALID);
	assert_int_equal(kwd_msg_end(&mb), KW_ERR_INVALID);
	assert_int_equal(kwd_ipc_send(fds[0], &mb), KW_ERR_INVALID);
	close(fds[0]);
	close(fds[1]);
}

/* ---- channels: blocking receive with a tick (kwd_ipc_chan_*) ---- */

#define TICK_MS 20

static void
chan_pair(int fds[2])
{
	pair(fds);
	assert_int_equal(kwd_ipc_chan_init(fds[0], TICK_MS), KW_OK);
	assert_int_equal(kwd_ipc_chan_init(fds[1], TICK_MS), KW_OK);
}

static void
test_msg_chan_init_sets_blocking_and_tick(void **state)
{
	struct timeval tv;
	socklen_t tvlen = sizeof tv;
	int fds[2], fl;

	(void)state;
	pair(fds);
	fl = fcntl(fds[0], F_GETFL);
	assert_int_equal(fcntl(fds[0], F_SETFL, fl | O_NONBLOCK), 0);
	assert_int_equal(kwd_ipc_chan_init(fds[0], 1500), KW_OK);
	assert_int_equal(fcntl(fds[0], F_GETFL) & O_NONBLOCK, 0);
	assert_int_equal(getsockopt(fds[0], SOL_SOCKET, SO_RCVTIMEO, &tv,
	                     &tvlen),
	    0);
	assert_int_equal(tv.tv_sec, 1);
	assert_int_equal(tv.tv_usec, 500000);
	assert_int_equal(kwd_ipc_chan_init(fds[0], 0), KW_ERR_INVALID);
	assert_int_equal(kwd_ipc_chan_init(-1, 100), KW_ERR_INVALID);
	close(fds[0]);
	close(fds[1]);
	/* Not a socket: no receive timeout to set. */
	assert_int_equal(pipe(fds), 0);
	assert_int_not_equal(kwd_ipc_chan_init(fds[0], 100), KW_OK);
	close(fds[0]);
	close(fds[1]);
}

static void
test_msg_chan_round_trip(void **state)
{
	static unsigned char buf[KWD_MSG_MAX];
	size_t len = 0;
	int fds[2];

	(void)state;
	chan_pair(fds);
	kwd_msg_begin(&mb, KWD_MSG_DATAKEY, 78);
	kwd_msg_put_str(&mb, KWD_TAG_IDENTITY, "spiffe://ml/train");
	kwd_msg_put_str(&mb, KWD_TAG_KEY, "datasets");
	kwd_msg_put_u8(&mb, KWD_TAG_PLAINTEXT, 1);
	assert_int_equal(kwd_msg_end(&mb), KW_OK);
	assert_int_equal(kwd_ipc_send_nowait(fds[0], &mb), KW_OK);
	assert_int_equal(kwd_ipc_send(fds[0], &mb), KW_OK);
	/* Queued: taken at once, whatever the timeout (0 included). */
	assert_int_equal(kwd_ipc_chan_recv(fds[1], buf, &len, 0), KW_OK);
	assert_int_equal(len, mb.len);
	assert_memory_equal(buf, mb.buf, len);
	assert_int_equal(kwd_ipc_chan_recv(fds[1], buf, &len, -1), KW_OK);
	assert_int_equal(kwd_msg_decode(buf, len, KWD_FROM_FRONT, &dm), KW_OK);
	assert_true(dm.rid == 78);
	close(fds[0]);
	close(fds[1]);
}

struct late_send {
	int fd;
	int delay_ms;
};

static void *
late_sender(void *arg)
{
	const struct late_send *ls = arg;
	struct kwd_msgbuf *b = calloc(1, sizeof *b);

	if (b == NULL)
		return NULL;
	usleep((useconds_t)ls->delay_ms * 1000);
	kwd_msg_begin(b, KWD_MSG_R_OK, 9);
	if (kwd_msg_end(b) == KW_OK)
		(void)!kwd_ipc_send(ls->fd, b);
	free(b);
	return NULL;
}

/* An answer arriving between ticks is taken when it comes, not at the
 * next tick, and a wait across several ticks still gets it. */
static void
test_msg_chan_wakes_on_arrival(void **state)
{
	static unsigned char buf[KWD_MSG_MAX];
	struct late_send ls;
	struct timespec t0;
	pthread_t t;
	size_t len = 0;
	double ms;
	int fds[2];

	(void)state;
	pair(fds);
	/* A long tick: an answer seen only at the tick would take 1 s. */
	assert_int_equal(kwd_ipc_chan_init(fds[0], 1000), KW_OK);
	ls.fd = fds[1];
	ls.delay_ms = 30;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(pthread_create(&t, NULL, late_sender, &ls), 0);
	assert_int_equal(kwd_ipc_chan_recv(fds[0], buf, &len, 5000), KW_OK);
	ms = elapsed_ms(&t0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(len, KWD_MSG_HDR);
	if (ms < 30 || ms > 500)
		fail_msg("an answer sent after 30 ms arrived after %.1f ms",
		    ms);
	close(fds[0]);
	/* Several ticks (20 ms) before it comes: still one answer. */
	assert_int_equal(kwd_ipc_chan_init(fds[1], TICK_MS), KW_OK);
	close(fds[1]);
	chan_pair(fds);
	ls.fd = fds[1];
	ls.delay_ms = 5 * TICK_MS;
	assert_int_equal(pthread_create(&t, NULL, late_sender, &ls), 0);
	assert_int_equal(kwd_ipc_chan_recv(fds[0], buf, &len, 5000), KW_OK);
	assert_int_equal(pthread_join(t, NULL), 0);
	/* And forever (-1) across ticks too. */
	assert_int_equal(pthread_create(&t, NULL, late_sender, &ls), 0);
	assert_int_equal(kwd_ipc_chan_recv(fds[0], buf, &len, -1), KW_OK);
	assert_int_equal(pthread_join(t, NULL), 0);
	close(fds[0]);
	close(fds[1]);
}

/* The timeout holds to within one tick: never early, at most a tick
 * late (the keeper's stop check, the front's keeper deadline). */
static void
test_msg_chan_timeout(void **state)
{
	static unsigned char buf[KWD_MSG_MAX];
	static const int tmo[] = {0, 1, TICK_MS / 2, TICK_MS, 3 * TICK_MS + 5,
	    200};
	struct timespec t0;
	size_t len = 12345;
	int fds[2];

	(void)state;
	chan_pair(fds);
	for (size_t i = 0; i < sizeof tmo / sizeof tmo[0]; i++) {
		double ms;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		assert_int_equal(kwd_ipc_chan_recv(fds[0], buf, &len, tmo[i]),
		    KW_ERR_TIMEOUT);
		ms = elapsed_ms(&t0);
		/* One tick late at most, plus scheduling slack. */
		if (ms < tmo[i] || ms > tmo[i] + TICK_MS + 100)
			fail_msg("timeout %d ms (tick %d) took %.1f ms", tmo[i],
			    TICK_MS, ms);
		if (tmo[i] == 0 && ms > 10)
			fail_msg("timeout 0 waited %.1f ms", ms);
		assert_int_equal(len, 12345);
	}
	close(fds[0]);
	close(fds[1]);
}

/* Signals (EINTR from the blocked recvmsg) neither end the wait early
 * nor stretch it. */
static void
test_msg_chan_timeout_with_signals(void **state)
{
	static unsigned char buf[KWD_MSG_MAX];
	struct itimerval every = {{0, 7000}, {0, 7000}};
	struct itimerval stop = {{0, 0}, {0, 0}};
	struct sigaction sa, old;
	struct timespec t0;
	size_t len;
	double ms;
	int fds[2], rv;

	(void)state;
	chan_pair(fds);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm; /* no SA_RESTART: recvmsg gets EINTR */
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	nalarms = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(setitimer(ITIMER_REAL, &every, NULL), 0);
	rv = kwd_ipc_chan_recv(fds[0], buf, &len, 200);
	ms = elapsed_ms(&t0);
	setitimer(ITIMER_REAL, &stop, NULL);
	sigaction(SIGALRM, &old, NULL);
	assert_int_equal(rv, KW_ERR_TIMEOUT);
	assert_true(nalarms >= 5);
	if (ms < 200 || ms > 200 + TICK_MS + 90)
		fail_msg("200 ms timeout with signals took %.1f ms", ms);
	close(fds[0]);
	close(fds[1]);
}

static void
test_msg_chan_peer_closed(void **state)
{
	static unsigned char buf[KWD_MSG_MAX];
	struct timespec t0;
	size_t len = 12345;
	int fds[2];

	(void)state;
	/* The end is reported at once, not at the tick or the timeout. */
	chan_pair(fds);
	close(fds[1]);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(kwd_ipc_chan_recv(fds[0], buf, &len, 5000), KW_ERR_IO);
	assert_int_equal(kwd_ipc_chan_recv(fds[0], buf, &len, -1), KW_ERR_IO);
	assert_true(elapsed_ms(&t0) < TICK_MS);
	assert_int_equal(len, 12345);
	kwd_msg_begin(&mb, KWD_MSG_HEALTH, 1);
	assert_int_equal(kwd_msg_end(&mb), KW_OK);
	assert_int_equal(kwd_ipc_send_nowait(fds[0], &mb), KW_ERR_IO);
	close(fds[0]);
	/* A packet queued before the close is delivered first. */
	chan_pair(fds);
	assert_int_equal(kwd_ipc_send(fds[1], &mb), KW_OK);
	close(fds[1]);
	assert_int_equal(kwd_ipc_chan_recv(fds[0], buf, &len, 1000), KW_OK);
	assert_int_equal(len, KWD_MSG_HDR);
	assert_int_equal(kwd_ipc_chan_recv(fds[0], buf, &len, 1000), KW_ERR_IO);
	close(fds[0]);
	/* A closed descriptor, and no descriptor at all. */
	assert_int_equal(kwd_ipc_chan_recv(fds[0], buf, &len, 10), KW_ERR_IO);
	assert_int_equal(kwd_ipc_chan_recv(-1, buf, &len, 10), KW_ERR_INVALID);
	assert_int_equal(kwd_ipc_send_nowait(-1, &mb), KW_ERR_INVALID);
}

/* Oversized packets and passed descriptors: as kwd_ipc_recv. */
static void
test_msg_chan_refuses_what_recv_refuses(void **state)
{
	static unsigned char out[KWD_MSG_MAX + 2];
	static unsigned char buf[KWD_MSG_MAX];
	size_t len = 12345;
	int fds[2];

	(void)state;
	chan_pair(fds);
	memset(out, 0x41, sizeof out);
	assert_int_equal(send(fds[1], out, KWD_MSG_MAX + 1, 0),
	    KWD_MSG_MAX + 1);
	assert_int_equal(kwd_ipc_chan_recv(fds[0], buf, &len, 1000),
	    KW_ERR_TOO_LARGE);
	assert_int_equal(len, 12345);
	out[0] = 0x42;
	assert_int_equal(send(fds[1], out, KWD_MSG_MAX, 0), KWD_MSG_MAX);
	assert_int_equal(kwd_ipc_chan_recv(fds[0], buf, &len, 1000), KW_OK);
	assert_int_equal(len, KWD_MSG_MAX);
	assert_int_equal(buf[0], 0x42);
	close(fds[0]);
	close(fds[1]);
}

/* A channel nobody reads fills up: the sender is told at once
 * (the front answers 503) instead of blocking a server thread. */
static void
test_msg_chan_send_nowait_full(void **state)
{
	struct timespec t0;
	int fds[2], rv = KW_OK;

	(void)state;
	chan_pair(fds);
	kwd_msg_begin(&mb, KWD_MSG_HEALTH, 1);
	assert_int_equal(kwd_msg_end(&mb), KW_OK);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 1000000 && rv == KW_OK; i++)
		rv = kwd_ipc_send_nowait(fds[0], &mb);
	assert_int_equal(rv, KW_ERR_UNAVAILABLE);
	assert_true(elapsed_ms(&t0) < 5000);
	/* The descriptor itself stays blocking for receives. */
	assert_int_equal(fcntl(fds[0], F_GETFL) & O_NONBLOCK, 0);
	close(fds[0]);
	close(fds[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_msg_spec_covers_every_type),
	    cmocka_unit_test(test_msg_round_trip_every_type),
	    cmocka_unit_test(test_msg_round_trip_utf8_strings),
	    cmocka_unit_test(test_msg_missing_required),
	    cmocka_unit_test(test_msg_duplicate_single_field),
	    cmocka_unit_test(test_msg_repeat_limits),
	    cmocka_unit_test(test_msg_field_not_allowed),
	    cmocka_unit_test(test_msg_unknown_tag),
	    cmocka_unit_test(test_msg_field_length_bounds),
	    cmocka_unit_test(test_msg_wrong_direction),
	    cmocka_unit_test(test_msg_unknown_type),
	    cmocka_unit_test(test_msg_flags_nonzero),
	    cmocka_unit_test(test_msg_announced_length_mismatch),
	    cmocka_unit_test(test_msg_trailing_bytes),
	    cmocka_unit_test(test_msg_truncated_header),
	    cmocka_unit_test(test_msg_truncated_field),
	    cmocka_unit_test(test_msg_frame_len),
	    cmocka_unit_test(test_msg_str_rejects_bad_utf8),
	    cmocka_unit_test(test_msg_str_rejects_control_bytes),
	    cmocka_unit_test(test_msg_name_canonical),
	    cmocka_unit_test(test_msg_ctx_order),
	    cmocka_unit_test(test_msg_ctx_duplicate_keys),
	    cmocka_unit_test(test_msg_u8_ranges),
	    cmocka_unit_test(test_msg_key_list_counts_equal),
	    cmocka_unit_test(test_msg_frame_of_max_size),
	    cmocka_unit_test(test_msg_decode_many_fields_linear),
	    cmocka_unit_test(test_msg_decode_leaves_output_on_failure),
	    cmocka_unit_test(test_msg_builder_refuses_invalid),
	    cmocka_unit_test(test_msg_builder_overflow),
	    cmocka_unit_test(test_msg_builder_header),
	    cmocka_unit_test(test_msg_wipe),
	    cmocka_unit_test(test_msg_accessors),
	    cmocka_unit_test(test_msg_ipc_round_trip),
	    cmocka_unit_test(test_msg_ipc_timeout),
	    cmocka_unit_test(test_msg_ipc_timeout_with_signals),
	    cmocka_unit_test(test_msg_ipc_peer_closed),
	    cmocka_unit_test(test_msg_ipc_oversized_packet),
	    cmocka_unit_test(test_msg_ipc_refuses_passed_fds),
	    cmocka_unit_test(test_msg_ipc_send_refuses_unended),
	    cmocka_unit_test(test_msg_chan_init_sets_blocking_and_tick),
	    cmocka_unit_test(test_msg_chan_round_trip),
	    cmocka_unit_test(test_msg_chan_wakes_on_arrival),
	    cmocka_unit_test(test_msg_chan_timeout),
	    cmocka_unit_test(test_msg_chan_timeout_with_signals),
	    cmocka_unit_test(test_msg_chan_peer_closed),
	    cmocka_unit_test(test_msg_chan_refuses_what_recv_refuses),
	    cmocka_unit_test(test_msg_chan_send_nowait_full),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * msg.c: the front <-> keeper frames: one table of field rules per type,
 * a decoder that checks every byte before the caller sees the message, a
 * builder that refuses to finish a frame the other side would reject, and
 * the SOCK_SEQPACKET transport.
 *
 * The decoder walks the frame twice: once to validate it (nothing is
 * stored), once to record the fields. So ret_msg is written only when the
 * whole frame is valid, without a second 32 KiB struct on the stack, and
 * both walks are O(n) in the frame size. It never allocates.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "msg.h"

#include <errno.h>
#include <poll.h>
#include <sodium.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include "name.h"

#define FIELD_HDR 6 /* u16 tag, u32 len */
#define MAX_RULES 10 /* most tags one type allows (KEY_PATCH) */
#define CTX_MAX 32 /* context pairs in one request */

/*
 * One past the largest type id and tag, computed from the X-macros: a
 * union of char arrays of size id + 1 is as big as the largest of them.
 * Appending a type or a tag resizes the tables below by itself.
 */
union type_limit {
#define X(name, id, dir) char name[(id) + 1];
	KWD_MSG_TYPES(X)
#undef X
};
#define TYPE_LIMIT sizeof(union type_limit)

union tag_limit {
#define X(name, tag, kind, minl, maxl) char name[(tag) + 1];
	KWD_MSG_TAGS(X)
#undef X
};
#define TAG_LIMIT sizeof(union tag_limit)

/*
 * The tag table must agree with the kinds: an integer kind has exactly
 * its width, a name fits kw_name_valid, and every field fits a frame.
 */
#define X(name, tag, kind, minl, maxl)                                       \
	_Static_assert((tag) > 0 && (minl) <= (maxl), #name);                \
	_Static_assert((maxl) <= KWD_MSG_MAX - KWD_MSG_HDR - FIELD_HDR,      \
	    #name);                                                          \
	_Static_assert((kind) != KWD_FK_U8 || ((minl) == 1 && (maxl) == 1),  \
	    #name);                                                          \
	_Static_assert((kind) != KWD_FK_U32 || ((minl) == 4 && (maxl) == 4), \
	    #name);                                                          \
	_Static_assert((kind) != KWD_FK_U64 || ((minl) == 8 && (maxl) == 8), \
	    #name);                                                          \
	_Static_assert((kind) != KWD_FK_NAME ||                              \
	        ((minl) >= 1 && (maxl) <= KW_NAME_MAX),                      \
	    #name);
KWD_MSG_TAGS(X)
#undef X

struct type_info {
	const char *name; /* NULL: no such type */
	enum kwd_msg_dir dir;
};

static const struct type_info types[TYPE_LIMIT] = {
#define X(name, id, d) [id] = {#name, d},
    KWD_MSG_TYPES(X)
#undef X
};

struct tag_info {
	bool known;
	enum kwd_field_kind kind;
	uint32_t minlen;
	uint32_t maxlen;
};

static const struct tag_info tags[TAG_LIMIT] = {
#define X(name, tag, k, minl, maxl) [tag] = {true, k, minl, maxl},
    KWD_MSG_TAGS(X)
#undef X
};

/* A tag a type allows, and how many times (tag 0 ends a list). */
struct rule {
	uint16_t tag;
	uint16_t min;
	uint16_t max;
};

struct type_rules {
	struct rule r[MAX_RULES];
	/* Two tags whose counts must be equal (0: none). */
	uint16_t same_count[2];
};

/* Kept on one line: clang-format would spread it over four. */
/* clang-format off */
#define R(t, lo, hi) {KWD_TAG_##t, lo, hi}
/* clang-format on */
#define CTX_RULES R(CTX_KEY, 0, CTX_MAX), R(CTX_VAL, 0, CTX_MAX)
/* Who asks: a certificate's IDENTITY, or a BEARER token (with the CNF of
 * the certificate presented beside it, if any); the keeper requires
 * exactly one of IDENTITY and BEARER. */
#define AUTH_RULES R(IDENTITY, 0, 1), R(BEARER, 0, 1), R(CNF, 0, 1)

/*
 * The field rules: every tag a type may carry, with its occurrence
 * bounds. A tag not listed is refused. This is the keeper's permit table
 * for requests and the front's check of every answer.
 */
static const struct type_rules rules[TYPE_LIMIT] = {
    [KWD_MSG_KEY_CREATE] = {.r = {AUTH_RULES, R(KEY, 1, 1), R(ROTATION, 0, 1),
                                R(REMOTE, 0, 1)}},
    [KWD_MSG_KEY_LIST] = {.r = {AUTH_RULES, R(REMOTE, 0, 1)}},
    [KWD_MSG_KEY_SHOW] = {.r = {AUTH_RULES, R(KEY, 1, 1), R(REMOTE, 0, 1)}},
    [KWD_MSG_KEY_ROTATE] = {.r = {AUTH_RULES, R(KEY, 1, 1), R(REMOTE, 0, 1)}},
    [KWD_MSG_KEY_PATCH] = {.r = {AUTH_RULES, R(KEY, 1, 1), R(MIN_DECRYPT, 0, 1),
                               R(VERSION, 0, 1), R(STATE, 0, 1),
                               R(ROTATION, 0, 1), R(REMOTE, 0, 1)}},
    [KWD_MSG_DATAKEY] = {.r = {AUTH_RULES, R(KEY, 1, 1), CTX_RULES,
                             R(PLAINTEXT, 1, 1), R(REMOTE, 0, 1)}},
    [KWD_MSG_DECRYPT] = {.r = {AUTH_RULES, R(KEY, 1, 1), CTX_RULES,
                             R(BLOB, 1, 1), R(REMOTE, 0, 1)}},
    [KWD_MSG_REWRAP] = {.r = {AUTH_RULES, R(KEY, 1, 1), CTX_RULES,
                            R(BLOB, 1, 1), R(REMOTE, 0, 1)}},
    [KWD_MSG_HEALTH] = {.r = {{0, 0, 0}}}, /* no fields */
    [KWD_MSG_STATS] = {.r = {{0, 0, 0}}},
    [KWD_MSG_AUDIT_EVENT] = {.r = {R(IDENTITY, 0, 1), R(OP, 1, 1),
                                 R(RESOURCE, 0, 1), R(OUTCOME, 1, 1),
                                 R(REASON, 1, 1), R(REMOTE, 0, 1),
                                 R(LATENCY_US, 0, 1), R(STATUS, 0, 1)}},
    [KWD_MSG_TOKEN_ISSUE] = {.r = {R(IDENTITY, 1, 1), R(AUDIENCE, 1, 1),
                                 R(SCOPE, 1, 32), R(TTL, 1, 1), R(CNF, 0, 1),
                                 R(REMOTE, 0, 1)}},
    /* The JWKS is public: no identity. */
    [KWD_MSG_JWKS] = {.r = {R(REMOTE, 0, 1)}},
    /* One of JTI and SUBJECT (the keeper checks). */
    [KWD_MSG_TOKEN_REVOKE] = {.r = {AUTH_RULES, R(JTI, 0, 1), R(SUBJECT, 0, 1),
                                  R(REMOTE, 0, 1)}},
    [KWD_MSG_SIGNER_SHOW] = {.r = {AUTH_RULES, R(KEY, 1, 1), R(REMOTE, 0, 1)}},
    [KWD_MSG_SIGNER_ROTATE] = {.r = {AUTH_RULES, R(KEY, 1, 1),
                                   R(REMOTE, 0, 1)}},
    [KWD_MSG_ARTIFACT_SIGN] = {.r = {AUTH_RULES, R(KEY, 1, 1), R(DIGEST, 1, 1),
                                   R(REMOTE, 0, 1)}},
    [KWD_MSG_CERT_ISSUE] = {.r = {AUTH_RULES, R(CSR, 1, 1), R(TTL, 1, 1),
                                R(REMOTE, 0, 1)}},
    [KWD_MSG_TOKEN_INTROSPECT] = {.r = {AUTH_RULES, R(TOKEN, 1, 1),
                                      R(REMOTE, 0, 1)}},
    [KWD_MSG_R_ERROR] = {.r = {R(STATUS, 1, 1), R(MESSAGE, 1, 1)}},
    [KWD_MSG_R_OK] = {.r = {{0, 0, 0}}},
    /* VERSION: the active version, 0 if none. */
    [KWD_MSG_R_KEY] = {.r = {R(KEY, 1, 1), R(MIN_DECRYPT, 1, 1),
                           R(CREATED, 1, 1), R(ROTATION, 0, 1),
                           R(VERSION, 1, 1), R(VERREC, 0, 1000)}},
    /* Each KEY with its active VERSION (0 if none). */
    [KWD_MSG_R_KEY_LIST] = {.r = {R(KEY, 0, 1000), R(VERSION, 0, 1000)},
        .same_count = {KWD_TAG_KEY, KWD_TAG_VERSION}},
    [KWD_MSG_R_DATAKEY] = {.r = {R(KEY, 1, 1), R(VERSION, 1, 1), R(BLOB, 1, 1),
                               R(DEK, 0, 1)}},
    [KWD_MSG_R_DECRYPT] = {.r = {R(DEK, 1, 1)}},
    [KWD_MSG_R_REWRAP] = {.r = {R(KEY, 1, 1), R(VERSION, 1, 1), R(BLOB, 1, 1)}},
    [KWD_MSG_R_HEALTH] = {.r = {R(HSM_OK, 1, 1), R(AUDIT_OK, 1, 1),
                              R(REASON, 0, 1)}},
    [KWD_MSG_R_STATS] = {.r = {R(TEXT, 1, 1)}},
    [KWD_MSG_R_TOKEN] = {.r = {R(TOKEN, 1, 1), R(EXPIRES, 1, 1)}},
    [KWD_MSG_R_JWKS] = {.r = {R(JSON, 1, 1)}},
    [KWD_MSG_R_INTROSPECT] = {.r = {R(JSON, 1, 1)}},
    [KWD_MSG_R_SIGNER] = {.r = {R(JSON, 1, 1)}},
    [KWD_MSG_R_SIGNATURE] = {.r = {R(JSON, 1, 1)}},
    [KWD_MSG_R_CERT] = {.r = {R(JSON, 1, 1)}},
};

#undef R
#undef CTX_RULES
#undef AUTH_RULES

static uint16_t
get16(const unsigned char *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t
get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

static uint64_t
get64(const unsigned char *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void
put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static void
put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void
put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static bool
type_known(uint16_t type)
{
	return type < TYPE_LIMIT && types[type].name != NULL;
}

static bool
tag_known(uint16_t tag)
{
	return tag < TAG_LIMIT && tags[tag].known;
}

/*
 * UTF-8 as RFC 3629 section 4 defines it: no overlong forms, no
 * surrogates (U+D800..U+DFFF), nothing above U+10FFFF. On top of that no
 * C0 control byte (NUL, newline, ESC) and no DEL, which would cut a C
 * string short or forge lines wherever the text is shown. C1 controls
 * (U+0080..U+009F) pass: the log escapes every byte from 0x7f up.
 */
static bool
str_ok(const unsigned char *p, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = p[i];
		unsigned char lo = 0x80, hi = 0xbf;
		size_t n;

		if (c < 0x80) {
			if (c < 0x20 || c == 0x7f)
				return false;
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			if (c == 0xe0)
				lo = 0xa0; /* overlong below U+0800 */
			else if (c == 0xed)
				hi = 0x9f; /* surrogates */
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			if (c == 0xf0)
				lo = 0x90; /* overlong below U+10000 */
			else if (c == 0xf4)
				hi = 0x8f; /* above U+10FFFF */
		} else {
			/* A continuation byte, 0xc0/0xc1 (always
			 * overlong) or 0xf5.. (beyond U+10FFFF). */
			return false;
		}
		if (len - i - 1 < n)
			return false;
		if (p[i + 1] < lo || p[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= n; k++)
			if (p[i + k] < 0x80 || p[i + k] > 0xbf)
				return false;
		i += n + 1;
	}
	return true;
}

/*
 * The values a one-byte field may take. A U8 tag without a range here is
 * refused: a new flag must say what it accepts before it is used.
 */
static bool
u8_ok(uint16_t tag, uint8_t v)
{
	switch (tag) {
	case KWD_TAG_STATE:
		return v >= 1 && v <= 4; /* enum kwd_key_state, not PENDING */
	case KWD_TAG_PLAINTEXT:
	case KWD_TAG_HSM_OK:
	case KWD_TAG_AUDIT_OK:
		return v <= 1;
	default:
		return false;
	}
}

static bool
content_ok(uint16_t tag, const unsigned char *p, uint32_t len)
{
	const struct tag_info *t = &tags[tag];

	if (len < t->minlen || len > t->maxlen)
		return false;
	switch (t->kind) {
	case KWD_FK_U8:
		return u8_ok(tag, p[0]);
	case KWD_FK_U32:
	case KWD_FK_U64:
	case KWD_FK_BYTES:
		return true; /* the length is the whole check */
	case KWD_FK_STR:
		return str_ok(p, len);
	case KWD_FK_NAME:
		return kw_name_valid_n((const char *)p, len);
	}
	return false;
}

/*
 * Context keys must be unique: the context is canonicalized into AAD and
 * matched against policy, and two values for one key would let the two
 * sides read different contexts. At most CTX_MAX keys, so the quadratic
 * compare is bounded (496 compares of at most 128 bytes).
 */
static bool
ctx_keys_unique(const unsigned char *buf, const uint32_t *off,
    const uint32_t *len, size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (len[i] == len[j] &&
			    memcmp(buf + off[i], buf + off[j], len[i]) == 0)
				return false;
	return true;
}

/*
 * validate: the whole frame buf[0..len) as sent by from, storing nothing.
 * Shared by the decoder and by kwd_msg_end, so both sides apply one rule.
 */
static int
validate(const unsigned char *buf, size_t len, enum kwd_msg_dir from)
{
	uint16_t maxc[TAG_LIMIT] = {0};
	uint16_t count[TAG_LIMIT] = {0};
	uint32_t ctx_off[CTX_MAX], ctx_len[CTX_MAX];
	const struct type_rules *tr;
	size_t off, nfields = 0, nctx = 0;
	uint16_t type, prev = 0;

	if (len > KWD_MSG_MAX)
		return KW_ERR_TOO_LARGE;
	if (len < KWD_MSG_HDR || get32(buf) != len)
		return KW_ERR_INVALID;
	type = get16(buf + 4);
	if (!type_known(type) || types[type].dir != from)
		return KW_ERR_INVALID;
	if (get16(buf + 6) != 0)
		return KW_ERR_INVALID;

	tr = &rules[type];
	for (size_t i = 0; i < MAX_RULES && tr->r[i].tag != 0; i++)
		maxc[tr->r[i].tag] = tr->r[i].max;

	for (off = KWD_MSG_HDR; off < len;) {
		uint16_t tag;
		uint32_t flen;

		if (len - off < FIELD_HDR)
			return KW_ERR_INVALID;
		tag = get16(buf + off);
		flen = get32(buf + off + 2);
		off += FIELD_HDR;
		if (flen > len - off)
			return KW_ERR_INVALID;
		/* maxc is 0 for a tag the type does not allow. */
		if (tag >= TAG_LIMIT || count[tag] >= maxc[tag])
			return KW_ERR_INVALID;
		count[tag]++;
		if (++nfields > KWD_MSG_MAX_FIELDS)
			return KW_ERR_INVALID;
		if (!content_ok(tag, buf + off, flen))
			return KW_ERR_INVALID;
		/* Pairs in order: each value right after its key. */
		if (tag == KWD_TAG_CTX_VAL && prev != KWD_TAG_CTX_KEY)
			return KW_ERR_INVALID;
		if (tag == KWD_TAG_CTX_KEY) {
			if (nctx == CTX_MAX)
				return KW_ERR_INVALID;
			ctx_off[nctx] = (uint32_t)off;
			ctx_len[nctx] = flen;
			nctx++;
		}
		prev = tag;
		off += flen;
	}

	for (size_t i = 0; i < MAX_RULES && tr->r[i].tag != 0; i++)
		if (count[tr->r[i].tag] < tr->r[i].min)
			return KW_ERR_INVALID;
	if (tr->same_count[0] != 0 &&
	    count[tr->same_count[0]] != count[tr->same_count[1]])
		return KW_ERR_INVALID;
	/* With each value right after a key: strict alternation. */
	if (count[KWD_TAG_CTX_KEY] != count[KWD_TAG_CTX_VAL])
		return KW_ERR_INVALID;
	if (!ctx_keys_unique(buf, ctx_off, ctx_len, nctx))
		return KW_ERR_INVALID;
	return KW_OK;
}

int
kwd_msg_decode(const unsigned char *buf, size_t len, enum kwd_msg_dir from,
    struct kwd_msg *ret_msg)
{
	size_t off, n = 0;
	int rv;

	if (buf == NULL || ret_msg == NULL)
		return KW_ERR_INVALID;
	rv = validate(buf, len, from);
	if (rv != KW_OK)
		return rv;
	/* Valid: every field header is in bounds, at most MAX_FIELDS. */
	for (off = KWD_MSG_HDR; off < len; n++) {
		ret_msg->fields[n].tag = get16(buf + off);
		ret_msg->fields[n].len = get32(buf + off + 2);
		ret_msg->fields[n].p = buf + off + FIELD_HDR;
		off += FIELD_HDR + ret_msg->fields[n].len;
	}
	ret_msg->nfields = n;
	ret_msg->type = get16(buf + 4);
	ret_msg->rid = get64(buf + 8);
	return KW_OK;
}

size_t
kwd_msg_frame_len(const unsigned char hdr[KWD_MSG_HDR])
{
	uint32_t len = get32(hdr);

	if (len < KWD_MSG_HDR || len > KWD_MSG_MAX)
		return 0;
	return len;
}

const struct kwd_field *
kwd_msg_get(const struct kwd_msg *m, uint16_t tag, size_t idx)
{
	for (size_t i = 0; i < m->nfields && i < KWD_MSG_MAX_FIELDS; i++)
		if (m->fields[i].tag == tag && idx-- == 0)
			return &m->fields[i];
	return NULL;
}

size_t
kwd_msg_count(const struct kwd_msg *m, uint16_t tag)
{
	size_t n = 0;

	for (size_t i = 0; i < m->nfields && i < KWD_MSG_MAX_FIELDS; i++)
		if (m->fields[i].tag == tag)
			n++;
	return n;
}

/* The first occurrence of tag if it is exactly width bytes long. */
static const unsigned char *
fixed(const struct kwd_msg *m, uint16_t tag, uint32_t width)
{
	const struct kwd_field *f = kwd_msg_get(m, tag, 0);

	return f != NULL && f->len == width ? f->p : NULL;
}

bool
kwd_msg_u8(const struct kwd_msg *m, uint16_t tag, uint8_t *ret_v)
{
	const unsigned char *p = fixed(m, tag, 1);

	if (p == NULL)
		return false;
	*ret_v = p[0];
	return true;
}

bool
kwd_msg_u32(const struct kwd_msg *m, uint16_t tag, uint32_t *ret_v)
{
	const unsigned char *p = fixed(m, tag, 4);

	if (p == NULL)
		return false;
	*ret_v = get32(p);
	return true;
}

bool
kwd_msg_u64(const struct kwd_msg *m, uint16_t tag, uint64_t *ret_v)
{
	const unsigned char *p = fixed(m, tag, 8);

	if (p == NULL)
		return false;
	*ret_v = get64(p);
	return true;
}

bool
kwd_msg_str(const struct kwd_msg *m, uint16_t tag, size_t idx, char *buf,
    size_t cap)
{
	const struct kwd_field *f;

	if (buf == NULL || !tag_known(tag) ||
	    (tags[tag].kind != KWD_FK_STR && tags[tag].kind != KWD_FK_NAME))
		return false;
	f = kwd_msg_get(m, tag, idx);
	/* A decoded string holds no NUL; a hand-made message might, and the
	 * C string would then say less than the field. */
	if (f == NULL || f->len >= cap || memchr(f->p, '\0', f->len) != NULL)
		return false;
	memcpy(buf, f->p, f->len);
	buf[f->len] = '\0';
	return true;
}

void
kwd_msg_begin(struct kwd_msgbuf *b, enum kwd_msg_type type, uint64_t rid)
{
	/* Length 0 until kwd_msg_end: kwd_ipc_send refuses an unended frame. */
	put32(b->buf, 0);
	put16(b->buf + 4, (uint16_t)type);
	put16(b->buf + 6, 0);
	put64(b->buf + 8, rid);
	b->len = KWD_MSG_HDR;
	if (b->hw < b->len)
		b->hw = b->len;
	b->err = type_known((uint16_t)type) ? KW_OK : KW_ERR_INVALID;
}

void
kwd_msg_put(struct kwd_msgbuf *b, uint16_t tag, const void *p, size_t len)
{
	if (b->err != KW_OK)
		return;
	if (b->len < KWD_MSG_HDR || b->len > KWD_MSG_MAX ||
	    (p == NULL && len > 0)) {
		b->err = KW_ERR_INVALID;
		return;
	}
	if (b->len > KWD_MSG_MAX - FIELD_HDR ||
	    len > KWD_MSG_MAX - FIELD_HDR - b->len) {
		b->err = KW_ERR_TOO_LARGE;
		return;
	}
	put16(b->buf + b->len, tag);
	put32(b->buf + b->len + 2, (uint32_t)len);
	if (len > 0)
		memcpy(b->buf + b->len + FIELD_HDR, p, len);
	b->len += FIELD_HDR + len;
	if (b->hw < b->len)
		b->hw = b->len;
}

void
kwd_msg_put_str(struct kwd_msgbuf *b, uint16_t tag, const char *s)
{
	if (s == NULL) {
		if (b->err == KW_OK)
			b->err = KW_ERR_INVALID;
		return;
	}
	kwd_msg_put(b, tag, s, strlen(s));
}

void
kwd_msg_put_u8(struct kwd_msgbuf *b, uint16_t tag, uint8_t v)
{
	kwd_msg_put(b, tag, &v, 1);
}

void
kwd_msg_put_u32(struct kwd_msgbuf *b, uint16_t tag, uint32_t v)
{
	unsigned char p[4];

	put32(p, v);
	kwd_msg_put(b, tag, p, sizeof p);
}

void
kwd_msg_put_u64(struct kwd_msgbuf *b, uint16_t tag, uint64_t v)
{
	unsigned char p[8];

	put64(p, v);
	kwd_msg_put(b, tag, p, sizeof p);
}

int
kwd_msg_end(struct kwd_msgbuf *b)
{
	uint16_t type;
	int rv;

	if (b->err != KW_OK)
		return b->err;
	if (b->len < KWD_MSG_HDR || b->len > KWD_MSG_MAX) {
		b->err = KW_ERR_INVALID;
		return b->err;
	}
	put32(b->buf, (uint32_t)b->len);
	type = get16(b->buf + 4);
	/* Checked as the receiving side will: a sender never emits a frame
	 * its peer would reject (and close the channel over). */
	rv = validate(b->buf, b->len,
	    type_known(type) ? types[type].dir : (enum kwd_msg_dir)0);
	if (rv != KW_OK)
		b->err = rv;
	return rv;
}

void
kwd_msg_wipe(struct kwd_msgbuf *b)
{
	/* Up to the high-water mark, not b->len: a shorter frame begun over
	 * a longer one leaves the older bytes past its end. Wiping 64 KiB
	 * per request would cost more than the rest of the hop. */
	sodium_memzero(b->buf, b->hw <= sizeof b->buf ? b->hw : sizeof b->buf);
	b->hw = 0;
	b->len = 0;
	b->err = KW_ERR_INVALID;
}

const char *
kwd_msg_type_name(uint16_t type)
{
	return type_known(type) ? types[type].name : "UNKNOWN";
}

static int
ipc_send(int fd, const struct kwd_msgbuf *b, int flags)
{
	ssize_t n;

	if (fd < 0)
		return KW_ERR_INVALID;
	if (b->err != KW_OK)
		return b->err;
	if (b->len < KWD_MSG_HDR || b->len > KWD_MSG_MAX ||
	    get32(b->buf) != b->len)
		return KW_ERR_INVALID; /* not ended since the last put */
	do {
		/* MSG_NOSIGNAL: a dead peer is an error, not a SIGPIPE. */
		n = send(fd, b->buf, b->len, MSG_NOSIGNAL | flags);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return KW_ERR_UNAVAILABLE;
	/* SEQPACKET sends all or nothing; anything else is a broken peer. */
	if (n < 0 || (size_t)n != b->len)
		return KW_ERR_IO;
	return KW_OK;
}

int
kwd_ipc_send(int fd, const struct kwd_msgbuf *b)
{
	return ipc_send(fd, b, 0);
}

int
kwd_ipc_send_nowait(int fd, const struct kwd_msgbuf *b)
{
	return ipc_send(fd, b, MSG_DONTWAIT);
}

static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Wait until fd is readable. The remaining time is recomputed after every
 * interruption, so signals cannot stretch the deadline.
 */
static int
wait_readable(int fd, int timeout_ms, int64_t deadline)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	int rv, wait = timeout_ms;

	for (;;) {
		if (timeout_ms >= 0) {
			int64_t left = deadline - now_ns();

			/* Rounded up: never give up before the deadline. */
			wait = left > 0 ? (int)((left + 999999) / 1000000) : 0;
		}
		rv = poll(&pfd, 1, wait);
		if (rv > 0)
			break;
		if (rv == 0)
			return KW_ERR_TIMEOUT;
		if (errno != EINTR)
			return KW_ERR_IO;
	}
	if (pfd.revents & POLLNVAL)
		return KW_ERR_IO;
	/* POLLHUP or POLLERR: recvmsg reports the end or the error, after
	 * any packet still queued. */
	return KW_OK;
}

/*
 * What recvmsg returned (n, with mh's flags) as kwd_ipc_recv's result.
 * Shared by both receive paths, so that they judge a packet alike.
 */
static int
received(ssize_t n, const struct msghdr *mh, unsigned char *buf,
    size_t *ret_len)
{
	if (n == 0)
		return KW_ERR_IO; /* peer closed (or sent an empty packet) */
	if (mh->msg_flags & MSG_TRUNC) {
		/* Bigger than any valid frame; drop the partial copy, which
		 * may hold anything. */
		sodium_memzero(buf, KWD_MSG_MAX);
		return KW_ERR_TOO_LARGE;
	}
	if (mh->msg_flags & MSG_CTRUNC) {
		/* Ancillary data (passed descriptors) is never part of the
		 * protocol; the kernel has closed them, the sender is
		 * misbehaving. */
		sodium_memzero(buf, (size_t)n);
		return KW_ERR_INVALID;
	}
	*ret_len = (size_t)n;
	return KW_OK;
}

int
kwd_ipc_recv(int fd, unsigned char *buf, size_t *ret_len, int timeout_ms)
{
	struct iovec iov = {.iov_base = buf, .iov_len = KWD_MSG_MAX};
	struct msghdr mh;
	int64_t deadline = 0;
	ssize_t n;
	int rv;

	/* poll() would ignore a negative fd and just time out. */
	if (fd < 0 || buf == NULL || ret_len == NULL)
		return KW_ERR_INVALID;
	if (timeout_ms >= 0)
		deadline = now_ns() + (int64_t)timeout_ms * 1000000;
	for (;;) {
		memset(&mh, 0, sizeof mh);
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		/* Try first, wait only when nothing is there: under load the
		 * next frame is usually queued already, and a poll() per
		 * frame would be a system call for nothing. MSG_DONTWAIT also
		 * covers another reader taking the packet after a poll. */
		n = recvmsg(fd, &mh, MSG_DONTWAIT);
		if (n >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return KW_ERR_IO;
		rv = wait_readable(fd, timeout_ms, deadline);
		if (rv != KW_OK)
			return rv;
	}
	return received(n, &mh, buf, ret_len);
}

int
kwd_ipc_chan_init(int fd, int tick_ms)
{
	struct timeval tv;
	int off = 0;

	if (fd < 0 || tick_ms <= 0)
		return KW_ERR_INVALID;
	tv.tv_sec = tick_ms / 1000;
	tv.tv_usec = (tick_ms % 1000) * 1000;
	/* FIONBIO rather than fcntl(): <fcntl.h> defines R_OK, a message
	 * name here. */
	if (ioctl(fd, FIONBIO, &off) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
		return KW_ERR_IO;
	return KW_OK;
}

int
kwd_ipc_chan_recv(int fd, unsigned char *buf, size_t *ret_len, int timeout_ms)
{
	struct iovec iov = {.iov_base = buf, .iov_len = KWD_MSG_MAX};
	struct msghdr mh;
	int64_t deadline = 0;
	ssize_t n;

	if (fd < 0 || buf == NULL || ret_len == NULL)
		return KW_ERR_INVALID;
	if (timeout_ms > 0)
		deadline = now_ns() + (int64_t)timeout_ms * 1000000;
	for (;;) {
		memset(&mh, 0, sizeof mh);
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		/* Blocks until a packet, the end of the channel, a signal
		 * or the tick (EAGAIN); 0 asks only for what is queued. */
		n = recvmsg(fd, &mh, timeout_ms == 0 ? MSG_DONTWAIT : 0);
		if (n >= 0)
			break;
		if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
			return KW_ERR_IO;
		/* A tick or a signal: the deadline decides, so that
		 * neither ends the wait early nor stretches it. */
		if (errno == EINTR && timeout_ms == 0)
			continue;
		if (timeout_ms == 0 || (timeout_ms > 0 && now_ns() >= deadline))
			return KW_ERR_TIMEOUT;
	}
	return received(n, &mh, buf, ret_len);
}

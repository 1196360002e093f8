/*
 * token.c: keyward tokens (compact JWS, ES256); see token.h and
 * docs/TOKENS.md.
 *
 * The verifier runs its checks from the cheapest and least exposed to the
 * most: byte alphabet and length, strict base64url of every part, the
 * header (a handful of bytes, flat), the signature's shape, then the
 * signature itself, and only then the payload's JSON, so that an
 * unauthenticated sender reaches the claims parser only with bytes the
 * broker signed. Every refusal names its reason in err for the audit log;
 * the return code is the same for all of them.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "token.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p11.h"
#include "policy.h"
#include "text.h"

/* A header is ~100 bytes; anything much larger is not ours. */
#define HEADER_MAX 256
/* The payload can take what remains of KWD_TOKEN_MAX, decoded. */
#define PAYLOAD_MAX (KWD_TOKEN_MAX / 4 * 3)
/* base64url of r || s, 64 bytes: 86 characters. */
#define SIG_B64_LEN 86
/* Decoded before the header says which algorithm it claims to be (so
 * that the audit reason names a wrong alg rather than a wrong length). */
#define SIG_MAX 132
/* The header is flat; the payload has one nested object, cnf. */
#define HEADER_DEPTH 1
#define PAYLOAD_DEPTH 2
/*
 * Commas outside strings, counted before parsing: a header has 2 or 3
 * members (a few more are let through to be named in the reason), a
 * payload 8 or 9 claims and cnf's one member.
 */
#define HEADER_COMMAS 4
#define PAYLOAD_COMMAS 16
/* How much of a refused value a reason quotes. */
#define QUOTE_MAX 32

#define HEADER_FMT "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"JWT\"}"

/* The order n of the P-256 group (SEC 2 section 2.4.2), big-endian. */
static const unsigned char p256_n[32] = {0xff, 0xff, 0xff, 0xff, 0x00, 0x00,
    0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6,
    0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
    0x25, 0x51};

static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The 6-bit value of a base64url character (RFC 4648 section 5), or -1. */
static int
b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

static size_t
b64len(size_t n)
{
	return (4 * n + 2) / 3;
}

int
kwd_token_b64url_encode(const unsigned char *in, size_t len, char *out,
    size_t cap)
{
	size_t o = 0, i;

	if (out == NULL || (in == NULL && len > 0))
		return KW_ERR_INVALID;
	if (len > (SIZE_MAX - 2) / 4 || cap < b64len(len) + 1)
		return KW_ERR_TOO_LARGE;
	for (i = 0; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
		    in[i + 2];

		out[o++] = b64url[v >> 18];
		out[o++] = b64url[(v >> 12) & 63];
		out[o++] = b64url[(v >> 6) & 63];
		out[o++] = b64url[v & 63];
	}
	if (len - i == 1) {
		out[o++] = b64url[in[i] >> 2];
		out[o++] = b64url[(in[i] & 3) << 4];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 8 | in[i + 1];

		out[o++] = b64url[v >> 10];
		out[o++] = b64url[(v >> 4) & 63];
		out[o++] = b64url[(v & 15) << 2];
	}
	out[o] = '\0';
	return KW_OK;
}

int
kwd_token_b64url_decode(const char *in, size_t len, unsigned char *out,
    size_t cap, size_t *ret_len)
{
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t o = 0;

	if (in == NULL || ret_len == NULL || (out == NULL && cap > 0))
		return KW_ERR_INVALID;
	/* One leftover character holds 6 bits: not even a byte. */
	if (len % 4 == 1)
		return KW_ERR_INVALID;
	if (len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0) > cap)
		return KW_ERR_TOO_LARGE;
	for (size_t i = 0; i < len; i++) {
		int v = b64val((unsigned char)in[i]);

		if (v < 0)
			return KW_ERR_INVALID;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	/*
	 * 0, 2 or 4 unused bits remain; they must be zero (RFC 4648 section
	 * 3.5), or two strings would decode to the same bytes.
	 */
	if (acc != 0)
		return KW_ERR_INVALID;
	*ret_len = o;
	return KW_OK;
}

/* [A-Za-z0-9_-]{min,max} over s[0..len). */
static bool
b64chars_n(const char *s, size_t len, size_t min, size_t max)
{
	if (len < min || len > max)
		return false;
	for (size_t i = 0; i < len; i++)
		if (b64val((unsigned char)s[i]) < 0)
			return false;
	return true;
}

bool
kwd_token_id_valid(const char *s, size_t len)
{
	return s != NULL &&
	    b64chars_n(s, len, KWD_TOKEN_JTI_MIN, KWD_TOKEN_JTI_MAX);
}

bool
kwd_token_chars_valid(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] != '.' && b64val((unsigned char)s[i]) < 0)
			return false;
	return true;
}

static bool
kid_valid(const char *s)
{
	return s != NULL &&
	    b64chars_n(s, strnlen(s, KWD_TOKEN_KID_MAX + 1), 1,
	        KWD_TOKEN_KID_MAX);
}

/* 43 characters of canonical base64url: a SHA-256 thumbprint. */
static bool
thumb_valid(const char *s)
{
	unsigned char raw[32];
	size_t n;

	return s != NULL &&
	    strnlen(s, KWD_TOKEN_THUMB_LEN + 1) == KWD_TOKEN_THUMB_LEN &&
	    kwd_token_b64url_decode(s, KWD_TOKEN_THUMB_LEN, raw, sizeof raw,
	        &n) == KW_OK &&
	    n == sizeof raw;
}

/* 1..KWD_TOKEN_STR_MAX bytes of printable ASCII, in a buffer of cap. */
static bool
str_valid(const char *s, size_t cap)
{
	size_t n;

	if (s == NULL)
		return false;
	n = strnlen(s, cap);
	if (n == 0 || n > KWD_TOKEN_STR_MAX || n == cap)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

static bool
scope_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
	    c == '_' || c == ':' || c == '/' || c == '*' || c == '-';
}

/*
 * Calls fn on each scope of a valid scope string; stops at the first
 * false. Returns false if s is not valid (then fn may have run on a
 * prefix).
 */
static bool
scope_walk(const char *s, bool (*fn)(const char *, size_t, void *), void *arg)
{
	const char *seen[KWD_TOKEN_SCOPES_MAX];
	size_t lens[KWD_TOKEN_SCOPES_MAX], n = 0;

	if (s == NULL)
		return false;
	for (;;) {
		size_t l = 0;

		while (l <= KWD_TOKEN_SCOPE_MAX && scope_char(s[l]))
			l++;
		if (l == 0 || l > KWD_TOKEN_SCOPE_MAX ||
		    n == KWD_TOKEN_SCOPES_MAX)
			return false;
		/* A repeated scope is not canonical: refuse, not fold. */
		for (size_t i = 0; i < n; i++)
			if (lens[i] == l && memcmp(seen[i], s, l) == 0)
				return false;
		if (fn != NULL && !fn(s, l, arg))
			return false;
		seen[n] = s;
		lens[n++] = l;
		s += l;
		if (*s == '\0')
			return true;
		if (*s != ' ')
			return false;
		s++;
	}
}

bool
kwd_token_scope_valid(const char *s)
{
	return s != NULL &&
	    strnlen(s, KWD_TOKEN_SCOPE_LEN + 1) <= KWD_TOKEN_SCOPE_LEN &&
	    scope_walk(s, NULL, NULL);
}

struct subset_arg {
	const char *const *allowed;
	size_t nallowed;
};

static bool
scope_allowed(const char *s, size_t len, void *arg)
{
	const struct subset_arg *a = arg;
	char one[KWD_TOKEN_SCOPE_MAX + 1];

	memcpy(one, s, len);
	one[len] = '\0';
	for (size_t i = 0; i < a->nallowed; i++)
		if (kwd_policy_glob(a->allowed[i], one))
			return true;
	return false;
}

bool
kwd_token_scopes_subset(const char *requested, const char *const *allowed,
    size_t nallowed)
{
	struct subset_arg a = {allowed, nallowed};

	if (allowed == NULL && nallowed > 0)
		return false;
	return kwd_token_scope_valid(requested) &&
	    scope_walk(requested, scope_allowed, &a);
}

/*
 * The rules every token obeys, issued or received, apart from what the
 * verifier compares with its options: syntax of every field, exp after
 * iat and nbf, a lifetime of at most KWD_TOKEN_TTL_MAX. code is the error
 * to return.
 */
static int
claims_check(const struct kwd_token_claims *c, int code, char *err,
    size_t errlen)
{
	if (!str_valid(c->iss, sizeof c->iss))
		return kw_errorf(code, err, errlen,
		    "claims: iss is not 1 to %d bytes of printable ASCII",
		    KWD_TOKEN_STR_MAX);
	if (!str_valid(c->sub, sizeof c->sub))
		return kw_errorf(code, err, errlen,
		    "claims: sub is not 1 to %d bytes of printable ASCII",
		    KWD_TOKEN_STR_MAX);
	if (!str_valid(c->aud, sizeof c->aud))
		return kw_errorf(code, err, errlen,
		    "claims: aud is not 1 to %d bytes of printable ASCII",
		    KWD_TOKEN_STR_MAX);
	if (c->iat < 0 || c->iat > KWD_TOKEN_TIME_MAX || c->nbf < 0 ||
	    c->nbf > KWD_TOKEN_TIME_MAX || c->exp < 0 ||
	    c->exp > KWD_TOKEN_TIME_MAX)
		return kw_errorf(code, err, errlen,
		    "claims: a time is outside 0..%lld",
		    (long long)KWD_TOKEN_TIME_MAX);
	if (c->exp <= c->iat || c->exp <= c->nbf)
		return kw_errorf(code, err, errlen,
		    "claims: exp is not after iat and nbf");
	if (c->exp - c->iat > KWD_TOKEN_TTL_MAX)
		return kw_errorf(code, err, errlen,
		    "claims: lifetime over %d s", KWD_TOKEN_TTL_MAX);
	if (!b64chars_n(c->jti, strnlen(c->jti, sizeof c->jti),
	        KWD_TOKEN_JTI_MIN, KWD_TOKEN_JTI_MAX))
		return kw_errorf(code, err, errlen,
		    "claims: jti is not %d to %d base64url characters",
		    KWD_TOKEN_JTI_MIN, KWD_TOKEN_JTI_MAX);
	if (strnlen(c->scope, sizeof c->scope) == sizeof c->scope ||
	    !kwd_token_scope_valid(c->scope))
		return kw_errorf(code, err, errlen,
		    "claims: scope is not 1 to %d distinct scopes of "
		    "[a-z0-9._:/*-]{1,%d} separated by single spaces",
		    KWD_TOKEN_SCOPES_MAX, KWD_TOKEN_SCOPE_MAX);
	if (strnlen(c->cnf, sizeof c->cnf) != 0 && !thumb_valid(c->cnf))
		return kw_errorf(code, err, errlen,
		    "claims: cnf x5t#S256 is not a base64url SHA-256");
	return KW_OK;
}

static int
sha256(const void *buf, size_t len, unsigned char md[32])
{
	unsigned int mdlen = 0;

	if (EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL) != 1 ||
	    mdlen != 32) {
		ERR_clear_error();
		return KW_ERR_CRYPTO;
	}
	return KW_OK;
}

/* x in [1, n-1]: big-endian bytes compare as the numbers do. */
static bool
scalar_valid(const unsigned char x[32])
{
	unsigned char any = 0;

	for (size_t i = 0; i < 32; i++)
		any |= x[i];
	return any != 0 && memcmp(x, p256_n, 32) < 0;
}

int
kwd_token_build(const struct kwd_token_claims *c, const char *kid,
    kwd_token_sign_fn sign, void *arg, char **ret_jws)
{
	char header[sizeof HEADER_FMT + KWD_TOKEN_KID_MAX];
	unsigned char digest[32], sig[64];
	json_t *p = NULL, *cnf;
	char *payload = NULL, *jws = NULL;
	size_t hlen, plen, need = 0, off;
	int rv;

	if (c == NULL || sign == NULL || ret_jws == NULL || !kid_valid(kid))
		return KW_ERR_INVALID;
	rv = claims_check(c, KW_ERR_INVALID, NULL, 0);
	if (rv != KW_OK)
		return rv;
	/* Exactly what jansson would write, sorted and compact. */
	hlen = (size_t)snprintf(header, sizeof header, HEADER_FMT, kid);
	p = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s}", "iss", c->iss,
	    "sub", c->sub, "aud", c->aud, "iat", (json_int_t)c->iat, "nbf",
	    (json_int_t)c->nbf, "exp", (json_int_t)c->exp, "jti", c->jti,
	    "scope", c->scope);
	if (p == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	if (c->cnf[0] != '\0') {
		cnf = json_pack("{s:s}", "x5t#S256", c->cnf);
		if (cnf == NULL || json_object_set_new(p, "cnf", cnf) != 0) {
			rv = KW_ERR_NOMEM;
			goto out;
		}
	}
	payload = json_dumps(p, JSON_COMPACT | JSON_SORT_KEYS);
	if (payload == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	plen = strlen(payload);
	need = b64len(hlen) + 1 + b64len(plen) + 1 + SIG_B64_LEN;
	if (need > KWD_TOKEN_MAX) {
		rv = KW_ERR_TOO_LARGE;
		need = 0;
		goto out;
	}
	jws = malloc(need + 1);
	if (jws == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	if (kwd_token_b64url_encode((const unsigned char *)header, hlen, jws,
	        need + 1) != KW_OK)
		goto bug;
	off = b64len(hlen);
	jws[off++] = '.';
	if (kwd_token_b64url_encode((const unsigned char *)payload, plen,
	        jws + off, need + 1 - off) != KW_OK)
		goto bug;
	off += b64len(plen);
	/* RFC 7515 section 5.1: the signing input is the ASCII text. */
	rv = sha256(jws, off, digest);
	if (rv != KW_OK)
		goto out;
	rv = sign(digest, sig, arg);
	if (rv != KW_OK)
		goto out;
	/* A signer that returns garbage must not yield a token. */
	if (!scalar_valid(sig) || !scalar_valid(sig + 32)) {
		rv = KW_ERR_CRYPTO;
		goto out;
	}
	jws[off++] = '.';
	if (kwd_token_b64url_encode(sig, sizeof sig, jws + off,
	        need + 1 - off) != KW_OK)
		goto bug;
	*ret_jws = jws;
	jws = NULL;
	rv = KW_OK;
	goto out;
bug:
	rv = KW_ERR_INTERNAL;
out:
	if (jws != NULL) {
		sodium_memzero(jws, need + 1);
		free(jws);
	}
	free(payload);
	json_decref(p);
	return rv;
}

void
kwd_token_free(char *jws)
{
	if (jws == NULL)
		return;
	sodium_memzero(jws, strlen(jws));
	free(jws);
}

/*
 * Depth and width before jansson sees the bytes: a depth bomb or a flat
 * array of thousands of numbers is refused without allocating. Strings
 * are skipped (a bracket or comma inside one is data).
 */
static bool
shape_valid(const unsigned char *s, size_t len, size_t maxdepth,
    size_t maxcommas)
{
	size_t depth = 0, commas = 0;
	bool in_str = false;

	for (size_t i = 0; i < len; i++) {
		if (in_str) {
			if (s[i] == '\\')
				i++;
			else if (s[i] == '"')
				in_str = false;
			continue;
		}
		switch (s[i]) {
		case '"':
			in_str = true;
			break;
		case '{':
		case '[':
			if (++depth > maxdepth)
				return false;
			break;
		case '}':
		case ']':
			if (depth > 0)
				depth--;
			break;
		case ',':
			if (++commas > maxcommas)
				return false;
			break;
		default:
			break;
		}
	}
	return true;
}

/*
 * A JSON object with no duplicate keys (RFC 8259 section 4 leaves them to
 * the reader; two readers picking different ones is a smuggling trick).
 * NULL with err filled, or *ret_nomem set on allocation failure.
 */
static json_t *
load_object(const unsigned char *buf, size_t len, const char *what,
    int *ret_nomem, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root;

	root = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &je);
	if (root == NULL) {
		if (json_error_code(&je) == json_error_out_of_memory)
			*ret_nomem = 1;
		else if (json_error_code(&je) == json_error_duplicate_key)
			kw_errorf(0, err, errlen, "%s: a key appears twice",
			    what);
		else
			kw_errorf(0, err, errlen,
			    "%s: not valid JSON (column %d)", what, je.column);
		return NULL;
	}
	if (!json_is_object(root)) {
		kw_errorf(0, err, errlen, "%s: not a JSON object", what);
		json_decref(root);
		return NULL;
	}
	return root;
}

/* A JSON string equal to lit (jansson strings may hold NUL: use length). */
static bool
json_str_is(const json_t *v, const char *lit)
{
	size_t n = strlen(lit);

	return json_is_string(v) && json_string_length(v) == n &&
	    memcmp(json_string_value(v), lit, n) == 0;
}

static const char *
quote(const json_t *v, char buf[QUOTE_MAX + 4])
{
	if (!json_is_string(v))
		return "(not a string)";
	return kw_defang(json_string_value(v), QUOTE_MAX, buf);
}

static int
parse_header(const unsigned char *buf, size_t len,
    char kid[KWD_TOKEN_KID_MAX + 1], char *err, size_t errlen)
{
	char q[QUOTE_MAX + 4];
	bool have_alg = false, have_kid = false;
	const char *k;
	json_t *root, *v;
	int nomem = 0, rv = KW_ERR_UNAUTHENTICATED;

	if (!shape_valid(buf, len, HEADER_DEPTH, HEADER_COMMAS))
		return kw_errorf(rv, err, errlen,
		    "header: nested or wider than a flat object of %d members",
		    HEADER_COMMAS + 1);
	root = load_object(buf, len, "header", &nomem, err, errlen);
	if (root == NULL)
		return nomem ? KW_ERR_NOMEM : rv;
	json_object_foreach (root, k, v) {
		if (strcmp(k, "alg") == 0) {
			/* RFC 8725 section 3.1: one algorithm, not the
			 * header's choice: none, HS256 and the rest are
			 * refused before any key is looked at. */
			if (!json_str_is(v, "ES256")) {
				kw_errorf(rv, err, errlen,
				    "header: alg \"%s\" is not ES256",
				    quote(v, q));
				goto out;
			}
			have_alg = true;
		} else if (strcmp(k, "kid") == 0) {
			if (!json_is_string(v) ||
			    !b64chars_n(json_string_value(v),
			        json_string_length(v), 1, KWD_TOKEN_KID_MAX)) {
				kw_errorf(rv, err, errlen,
				    "header: kid \"%s\" is not 1 to %d "
				    "characters of [A-Za-z0-9_-]",
				    quote(v, q), KWD_TOKEN_KID_MAX);
				goto out;
			}
			memcpy(kid, json_string_value(v),
			    json_string_length(v) + 1);
			have_kid = true;
		} else if (strcmp(k, "typ") == 0) {
			if (!json_str_is(v, "JWT")) {
				kw_errorf(rv, err, errlen,
				    "header: typ \"%s\" is not JWT",
				    quote(v, q));
				goto out;
			}
		} else {
			/* crit, jku, jwk, x5u...: none is ours to honour. */
			kw_errorf(rv, err, errlen,
			    "header: unknown parameter \"%s\"",
			    kw_defang(k, QUOTE_MAX, q));
			goto out;
		}
	}
	if (!have_alg)
		kw_errorf(rv, err, errlen, "header: no alg");
	else if (!have_kid)
		kw_errorf(rv, err, errlen, "header: no kid");
	else
		rv = KW_OK;
out:
	json_decref(root);
	return rv;
}

enum claim_kind { CLAIM_STR, CLAIM_TIME, CLAIM_CNF };

struct claim {
	const char *name;
	enum claim_kind kind;
	size_t off; /* of the field in struct kwd_token_claims */
	size_t cap; /* its size */
	bool required;
};

/* Where a claim goes: its offset and size in struct kwd_token_claims. */
#define FIELD(f)                              \
	offsetof(struct kwd_token_claims, f), \
	    sizeof(((struct kwd_token_claims *)0)->f)

static const struct claim claims[] = {
    {"iss", CLAIM_STR, FIELD(iss), true},
    {"sub", CLAIM_STR, FIELD(sub), true},
    {"aud", CLAIM_STR, FIELD(aud), true},
    {"iat", CLAIM_TIME, FIELD(iat), true},
    {"nbf", CLAIM_TIME, FIELD(nbf), true},
    {"exp", CLAIM_TIME, FIELD(exp), true},
    {"jti", CLAIM_STR, FIELD(jti), true},
    {"scope", CLAIM_STR, FIELD(scope), true},
    {"cnf", CLAIM_CNF, FIELD(cnf), false},
};
#define NCLAIMS (sizeof claims / sizeof claims[0])

static int
parse_claims(const unsigned char *buf, size_t len, struct kwd_token_claims *c,
    char *err, size_t errlen)
{
	char q[QUOTE_MAX + 4];
	unsigned seen = 0;
	const char *k;
	json_t *root, *v, *t;
	int nomem = 0, rv = KW_ERR_UNAUTHENTICATED;

	if (!shape_valid(buf, len, PAYLOAD_DEPTH, PAYLOAD_COMMAS))
		return kw_errorf(rv, err, errlen,
		    "payload: nested deeper than %d or wider than %d members",
		    PAYLOAD_DEPTH, PAYLOAD_COMMAS + 1);
	root = load_object(buf, len, "payload", &nomem, err, errlen);
	if (root == NULL)
		return nomem ? KW_ERR_NOMEM : rv;
	memset(c, 0, sizeof *c);
	json_object_foreach (root, k, v) {
		const struct claim *cl = NULL;
		char *field;
		size_t i;

		for (i = 0; i < NCLAIMS && cl == NULL; i++)
			if (strcmp(k, claims[i].name) == 0)
				cl = &claims[i];
		if (cl == NULL) {
			kw_errorf(rv, err, errlen,
			    "payload: unknown claim \"%s\"",
			    kw_defang(k, QUOTE_MAX, q));
			goto out;
		}
		seen |= 1u << (cl - claims);
		field = (char *)c + cl->off;
		switch (cl->kind) {
		case CLAIM_TIME:
			/* An integer: 1.7e9 and "1700000000" are not. */
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > KWD_TOKEN_TIME_MAX) {
				kw_errorf(rv, err, errlen,
				    "payload: %s is not an integer in 0..%lld",
				    cl->name, (long long)KWD_TOKEN_TIME_MAX);
				goto out;
			}
			*(int64_t *)(void *)field =
			    (int64_t)json_integer_value(v);
			break;
		case CLAIM_CNF:
			t = json_object_get(v, "x5t#S256");
			if (!json_is_object(v) || json_object_size(v) != 1 ||
			    !json_is_string(t) ||
			    json_string_length(t) != KWD_TOKEN_THUMB_LEN) {
				kw_errorf(rv, err, errlen,
				    "payload: cnf is not {\"x5t#S256\": "
				    "thumbprint}");
				goto out;
			}
			v = t;
			/* FALLTHROUGH */
		case CLAIM_STR:
			/* aud as an array is refused here: one audience. */
			if (!json_is_string(v) ||
			    json_string_length(v) >= cl->cap) {
				kw_errorf(rv, err, errlen,
				    "payload: %s is not a string of at most "
				    "%zu bytes",
				    cl->name, cl->cap - 1);
				goto out;
			}
			memcpy(field, json_string_value(v),
			    json_string_length(v) + 1);
			break;
		}
	}
	for (size_t i = 0; i < NCLAIMS; i++)
		if (claims[i].required && !(seen & 1u << i)) {
			kw_errorf(rv, err, errlen, "payload: no %s",
			    claims[i].name);
			goto out;
		}
	rv = claims_check(c, rv, err, errlen);
out:
	json_decref(root);
	return rv;
}

static bool
is_p256(EVP_PKEY *k)
{
	char group[64];
	size_t glen = 0;

	if (k == NULL || !EVP_PKEY_is_a(k, "EC") ||
	    EVP_PKEY_get_group_name(k, group, sizeof group, &glen) != 1) {
		ERR_clear_error();
		return false;
	}
	return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
}

static bool
opts_valid(const struct kwd_token_verify_opts *o)
{
	return str_valid(o->issuer, KWD_TOKEN_STR_MAX + 1) &&
	    str_valid(o->audience, KWD_TOKEN_STR_MAX + 1) && o->now >= 0 &&
	    o->now <= KWD_TOKEN_TIME_MAX && o->leeway >= 0 &&
	    o->leeway <= KWD_TOKEN_LEEWAY_MAX && o->max_ttl >= 1 &&
	    o->max_ttl <= KWD_TOKEN_TTL_MAX &&
	    (o->cert_thumbprint == NULL || thumb_valid(o->cert_thumbprint));
}

#define REFUSE(...)                                                 \
	do {                                                        \
		rv = kw_errorf(KW_ERR_UNAUTHENTICATED, err, errlen, \
		    __VA_ARGS__);                                   \
		goto out;                                           \
	} while (0)

int
kwd_token_verify(const char *jws, size_t len,
    const struct kwd_token_verify_opts *o, kwd_token_key_fn lookup, void *arg,
    struct kwd_token_claims *ret, char *err, size_t errlen)
{
	unsigned char hdr[HEADER_MAX], pay[PAYLOAD_MAX], sig[SIG_MAX], der[80];
	char kid[KWD_TOKEN_KID_MAX + 1];
	struct kwd_token_claims c;
	const char *part[3];
	size_t plen[3], hlen, paylen, siglen, derlen, ndots = 0;
	EVP_PKEY *key = NULL;
	EVP_MD_CTX *md = NULL;
	int rv, ok;

	memset(kid, 0, sizeof kid);
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (jws == NULL || o == NULL || lookup == NULL || ret == NULL ||
	    !opts_valid(o))
		return kw_errorf(KW_ERR_INVALID, err, errlen,
		    "token verifier: invalid options");

	/* 1. Size, alphabet, three parts, strict base64url. */
	if (len == 0 || len > KWD_TOKEN_MAX)
		REFUSE("token: %zu bytes, not 1 to %d", len, KWD_TOKEN_MAX);
	part[0] = jws;
	for (size_t i = 0; i < len; i++) {
		if (jws[i] == '.') {
			if (ndots == 2)
				REFUSE("token: more than three parts");
			plen[ndots] = (size_t)(jws + i - part[ndots]);
			part[++ndots] = jws + i + 1;
		} else if (b64val((unsigned char)jws[i]) < 0) {
			REFUSE("token: byte 0x%02x at offset %zu is not "
			       "base64url",
			    (unsigned char)jws[i], i);
		}
	}
	if (ndots != 2)
		REFUSE("token: %zu part%s, not 3", ndots + 1, ndots ? "s" : "");
	plen[2] = (size_t)(jws + len - part[2]);
	if (plen[0] == 0 || plen[1] == 0 || plen[2] == 0)
		REFUSE("token: an empty part");
	if (kwd_token_b64url_decode(part[0], plen[0], hdr, sizeof hdr, &hlen) !=
	    KW_OK)
		REFUSE("header: not canonical base64url of at most %d bytes",
		    HEADER_MAX);
	if (kwd_token_b64url_decode(part[1], plen[1], pay, sizeof pay,
	        &paylen) != KW_OK)
		REFUSE("payload: not canonical base64url");
	if (kwd_token_b64url_decode(part[2], plen[2], sig, sizeof sig,
	        &siglen) != KW_OK)
		REFUSE("signature: not canonical base64url of at most %d "
		       "bytes",
		    SIG_MAX);

	/* 2. Header. */
	rv = parse_header(hdr, hlen, kid, err, errlen);
	if (rv != KW_OK)
		goto out;
	if (siglen != 64)
		REFUSE("signature: %zu bytes, not 64", siglen);

	/*
	 * 3. r and s in [1, n-1] (SEC 1 section 4.1.4 step 1), before any
	 * conversion: a zero or an out-of-range value is refused here and
	 * not left to the library (CVE-2022-21449 accepted r = s = 0).
	 */
	if (!scalar_valid(sig))
		REFUSE("signature: r is not in [1, n-1]");
	if (!scalar_valid(sig + 32))
		REFUSE("signature: s is not in [1, n-1]");

	/* 4. The key and the signature. */
	rv = lookup(kid, arg, &key);
	if (rv == KW_ERR_NOT_FOUND) {
		key = NULL;
		REFUSE("header: unknown kid \"%s\"", kid);
	}
	if (rv != KW_OK) {
		key = NULL;
		kw_errorf(rv, err, errlen,
		    "token key lookup for kid \"%s\": %s", kid,
		    kw_strerror(rv));
		goto out;
	}
	if (!is_p256(key))
		REFUSE("header: kid \"%s\" does not name a P-256 key", kid);
	rv = kwd_p11_ecdsa_der(sig, der, sizeof der, &derlen);
	if (rv != KW_OK)
		goto out;
	md = EVP_MD_CTX_new();
	if (md == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) != 1) {
		rv = kw_errorf(KW_ERR_CRYPTO, err, errlen,
		    "token key for kid \"%s\" cannot verify", kid);
		goto out;
	}
	ok = EVP_DigestVerify(md, der, derlen, (const unsigned char *)jws,
	    plen[0] + 1 + plen[1]);
	if (ok != 1)
		REFUSE("signature: does not verify under kid \"%s\"", kid);

	/* 5. Claims: types, syntax, nothing unknown. */
	rv = parse_claims(pay, paylen, &c, err, errlen);
	if (rv != KW_OK)
		goto out;

	/* 6. Who issued it, for whom. */
	if (strcmp(c.iss, o->issuer) != 0)
		REFUSE("claims: iss \"%.*s\" is not the expected issuer",
		    QUOTE_MAX, c.iss);
	if (strcmp(c.aud, o->audience) != 0)
		REFUSE("claims: aud \"%.*s\" is not this audience", QUOTE_MAX,
		    c.aud);

	/* 7. Times (all within KWD_TOKEN_TIME_MAX: no overflow). */
	if (c.exp - c.iat > o->max_ttl)
		REFUSE("claims: lifetime %lld s over the maximum %lld s",
		    (long long)(c.exp - c.iat), (long long)o->max_ttl);
	if (c.iat > o->now + o->leeway)
		REFUSE("claims: issued %lld s in the future",
		    (long long)(c.iat - o->now));
	if (o->now < c.nbf - o->leeway)
		REFUSE("claims: not valid for another %lld s",
		    (long long)(c.nbf - o->now));
	if (o->now >= c.exp + o->leeway)
		REFUSE("claims: expired %lld s ago",
		    (long long)(o->now - c.exp));

	/* 8. Certificate binding (RFC 8705 section 3). */
	if (c.cnf[0] != '\0') {
		if (o->cert_thumbprint == NULL)
			REFUSE("claims: bound to a client certificate, and "
			       "none was presented");
		if (sodium_memcmp(c.cnf, o->cert_thumbprint,
		        KWD_TOKEN_THUMB_LEN) != 0)
			REFUSE("claims: bound to another client certificate");
	}

	memcpy(c.kid, kid, sizeof c.kid);
	*ret = c;
	rv = KW_OK;
out:
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(key);
	ERR_clear_error();
	return rv;
}

/* The affine coordinates of a P-256 public key, 32 bytes each. */
static int
ec_xy(EVP_PKEY *pub, unsigned char x[32], unsigned char y[32])
{
	BIGNUM *bx = NULL, *by = NULL;
	int rv = KW_ERR_CRYPTO;

	if (!is_p256(pub))
		return KW_ERR_INVALID;
	if (EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_EC_PUB_X, &bx) != 1 ||
	    EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_EC_PUB_Y, &by) != 1 ||
	    BN_bn2binpad(bx, x, 32) != 32 || BN_bn2binpad(by, y, 32) != 32)
		goto out;
	rv = KW_OK;
out:
	BN_free(bx);
	BN_free(by);
	ERR_clear_error();
	return rv;
}

int
kwd_token_kid(EVP_PKEY *pub, char out[KWD_TOKEN_THUMB_LEN + 1])
{
	unsigned char x[32], y[32], md[32];
	char bx[44], by[44], jwk[128];
	int rv, n;

	if (out == NULL)
		return KW_ERR_INVALID;
	rv = ec_xy(pub, x, y);
	if (rv != KW_OK)
		return rv;
	if (kwd_token_b64url_encode(x, 32, bx, sizeof bx) != KW_OK ||
	    kwd_token_b64url_encode(y, 32, by, sizeof by) != KW_OK)
		return KW_ERR_INTERNAL;
	/* RFC 7638 section 3.2: required members only, sorted, no space. */
	n = snprintf(jwk, sizeof jwk,
	    "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", bx,
	    by);
	if (n < 0 || (size_t)n >= sizeof jwk)
		return KW_ERR_INTERNAL;
	rv = sha256(jwk, (size_t)n, md);
	if (rv != KW_OK)
		return rv;
	return kwd_token_b64url_encode(md, sizeof md, out,
	    KWD_TOKEN_THUMB_LEN + 1);
}

int
kwd_token_jwk(EVP_PKEY *pub, const char *kid, json_t **ret)
{
	unsigned char x[32], y[32];
	char bx[44], by[44], thumb[KWD_TOKEN_THUMB_LEN + 1];
	json_t *j;
	int rv;

	if (ret == NULL || (kid != NULL && !kid_valid(kid)))
		return KW_ERR_INVALID;
	rv = ec_xy(pub, x, y);
	if (rv != KW_OK)
		return rv;
	if (kid == NULL) {
		rv = kwd_token_kid(pub, thumb);
		if (rv != KW_OK)
			return rv;
		kid = thumb;
	}
	if (kwd_token_b64url_encode(x, 32, bx, sizeof bx) != KW_OK ||
	    kwd_token_b64url_encode(y, 32, by, sizeof by) != KW_OK)
		return KW_ERR_INTERNAL;
	j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "crv",
	    "P-256", "x", bx, "y", by, "kid", kid, "use", "sig", "alg",
	    "ES256");
	if (j == NULL)
		return KW_ERR_NOMEM;
	*ret = j;
	return KW_OK;
}

int
kwd_token_cert_thumbprint(const unsigned char *der, size_t len,
    char out[KWD_TOKEN_THUMB_LEN + 1])
{
	unsigned char md[32];
	int rv;

	if (der == NULL || len == 0 || out == NULL)
		return KW_ERR_INVALID;
	rv = sha256(der, len, md);
	if (rv != KW_OK)
		return rv;
	return kwd_token_b64url_encode(md, sizeof md, out,
	    KWD_TOKEN_THUMB_LEN + 1);
}

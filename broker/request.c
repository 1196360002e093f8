/*
 * request.c: strict schemas for the JSON bodies of the HTTP API.
 *
 * The body is untrusted and reaches this code before any key operation,
 * so every check is made in an order that bounds the work: size first,
 * then a byte scan for nesting depth and width (before jansson allocates
 * anything), then jansson with duplicate keys refused (RFC 8259 section 4
 * leaves duplicates to the implementation; two readers disagreeing on
 * which one wins is a classic smuggling trick), then the schema itself.
 *
 * Error texts go to the client as they are: they name the field and say
 * what is expected, in our own words. A jansson message never leaves this
 * file (it could change between versions and may quote the input).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "request.h"

#include <jansson.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "name.h"
#include "store.h"
#include "text.h"
#include "token.h"

/*
 * Hard caps of the parser itself; the front applies the (smaller)
 * configured body limit before a body is even read. The largest valid
 * body (32 context pairs of 256 bytes, all written as \uXXXX escapes, and a
 * wrapped blob) is well under 64 KiB.
 */
#define BODY_MAX (1024 * 1024)
#define DEPTH_MAX 4
/* Commas outside strings: the widest valid body has 4 + 32 members. */
#define COMMAS_MAX 64
#define ROTATION_MAX 315360000ULL /* ten years, in seconds */
/* Base64 of KWD_BLOB_MAX bytes, padded (RFC 4648 section 4). */
#define B64_MAX (4 * ((KWD_BLOB_MAX + 2) / 3))

#define fail(err, errlen, ...) \
	kw_errorf(KW_ERR_INVALID, err, errlen, __VA_ARGS__)

/*
 * A client's field name, fit for an error message: at most 32 bytes of
 * printable ASCII (anything else shown as '?'), so that an error cannot
 * carry markup, escapes or a megabyte of text back.
 */
static const char *
shown(const char *s, char buf[40])
{
	size_t i;

	for (i = 0; s[i] != '\0' && i < 32; i++)
		buf[i] =
		    (s[i] > 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\')
		    ? s[i]
		    : '?';
	if (s[i] != '\0') {
		memcpy(buf + i, "...", 3);
		i += 3;
	}
	buf[i] = '\0';
	return buf;
}

/*
 * Depth and width before parsing: a body of 64 KiB of '[' would make
 * jansson recurse 65536 levels deep, and a flat array of 30000 numbers
 * would make it allocate 30000 objects; neither is a valid request, and
 * both are refused after one pass over the bytes without allocating.
 * Strings are skipped (a bracket or comma inside one is data).
 */
static int
prescan(const char *body, size_t len, char *err, size_t errlen)
{
	size_t depth = 0, commas = 0;
	bool in_str = false;

	for (size_t i = 0; i < len; i++) {
		char c = body[i];

		if (in_str) {
			if (c == '\\')
				i++; /* the escaped byte cannot end the string */
			else if (c == '"')
				in_str = false;
			continue;
		}
		switch (c) {
		case '"':
			in_str = true;
			break;
		case '{':
		case '[':
			if (++depth > DEPTH_MAX)
				return fail(err, errlen,
				    "body: nested deeper than %d levels",
				    DEPTH_MAX);
			break;
		case '}':
		case ']':
			if (depth > 0)
				depth--;
			break;
		case ',':
			if (++commas > COMMAS_MAX)
				return fail(err, errlen,
				    "body: more than %d members", COMMAS_MAX);
			break;
		default:
			break;
		}
	}
	return KW_OK;
}

static int
load(const char *body, size_t len, json_t **ret_root, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root;
	int rv;

	rv = prescan(body, len, err, errlen);
	if (rv != KW_OK)
		return rv;
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (root == NULL) {
		switch (json_error_code(&je)) {
		case json_error_duplicate_key:
			return fail(err, errlen,
			    "body: a key appears twice (line %d, column %d)",
			    je.line, je.column);
		case json_error_invalid_utf8:
			return fail(err, errlen, "body: not valid UTF-8");
		case json_error_null_character:
			return fail(err, errlen,
			    "body: NUL characters are not allowed");
		case json_error_numeric_overflow:
			return fail(err, errlen,
			    "body: a number is out of range (line %d, column "
			    "%d)",
			    je.line, je.column);
		case json_error_out_of_memory:
			return KW_ERR_NOMEM;
		default:
			return fail(err, errlen,
			    "body: expected one JSON object (error at line "
			    "%d, column %d)",
			    je.line, je.column);
		}
	}
	if (!json_is_object(root)) {
		json_decref(root);
		return fail(err, errlen, "body: expected a JSON object");
	}
	*ret_root = root;
	return KW_OK;
}

/* Every member of obj must be one of the NULL-terminated names. */
static int
only_fields(json_t *obj, const char *const *names, char *err, size_t errlen)
{
	const char *key;
	json_t *v;
	char kbuf[40];

	json_object_foreach (obj, key, v) {
		bool known = false;

		(void)v;
		for (size_t i = 0; names[i] != NULL && !known; i++)
			known = strcmp(key, names[i]) == 0;
		if (!known)
			return fail(err, errlen, "%s: unknown field",
			    shown(key, kbuf));
	}
	return KW_OK;
}

static int
get_uint(json_t *obj, const char *field, unsigned long long lo,
    unsigned long long hi, bool *ret_present, unsigned long long *ret_v,
    char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, field);
	json_int_t n;

	if (v == NULL) {
		*ret_present = false;
		return KW_OK;
	}
	/* 1.0 and 1e3 are reals in JSON terms: an integer field takes only
	 * the integer grammar, so that every reader agrees on the value. */
	if (!json_is_integer(v))
		return fail(err, errlen,
		    "%s: expected an integer from %llu to "
		    "%llu",
		    field, lo, hi);
	n = json_integer_value(v);
	if (n < 0 || (unsigned long long)n < lo || (unsigned long long)n > hi)
		return fail(err, errlen,
		    "%s: expected an integer from %llu to "
		    "%llu",
		    field, lo, hi);
	*ret_present = true;
	*ret_v = (unsigned long long)n;
	return KW_OK;
}

/* A context key: ^[a-z][a-z0-9_.-]{0,63}$. */
static bool
ctx_key_ok(const char *s, size_t len)
{
	if (len == 0 || len > KWD_REQ_CTX_KEY_MAX ||
	    !(s[0] >= 'a' && s[0] <= 'z'))
		return false;
	for (size_t i = 1; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		        c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/*
 * A context value: jansson has checked UTF-8 and refused NUL; refused
 * here are the C0 controls, DEL and the C1 controls (U+0080..U+009F,
 * encoded C2 80..C2 9F), which could split or rewrite a log or audit line
 * where the value is shown.
 */
static bool
ctx_val_ok(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;

	if (len > KWD_REQ_CTX_VAL_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (p[i] < 0x20 || p[i] == 0x7f)
			return false;
		if (p[i] == 0xc2 && i + 1 < len && p[i + 1] >= 0x80 &&
		    p[i + 1] <= 0x9f)
			return false;
	}
	return true;
}

static int
get_context(json_t *obj, struct kwd_req *req, char *err, size_t errlen)
{
	json_t *ctx = json_object_get(obj, "context");
	const char *key;
	json_t *v;

	if (ctx == NULL)
		return fail(err, errlen,
		    "context: required (an object of string values, {} for "
		    "none)");
	if (!json_is_object(ctx))
		return fail(err, errlen,
		    "context: expected an object of at most %d string values",
		    KWD_CTX_MAX_PAIRS);
	if (json_object_size(ctx) > KWD_CTX_MAX_PAIRS)
		return fail(err, errlen, "context: at most %d keys",
		    KWD_CTX_MAX_PAIRS);
	json_object_foreach (ctx, key, v) {
		size_t klen = strlen(key), vlen;
		const char *s;

		/* jansson refuses NUL in keys without JSON_ALLOW_NUL, so
		 * strlen is the key's whole length. */
		if (!ctx_key_ok(key, klen))
			return fail(err, errlen,
			    "context: keys must be 1 to %d bytes of a-z, 0-9, "
			    "'_', '.', '-', starting with a-z",
			    KWD_REQ_CTX_KEY_MAX);
		if (!json_is_string(v))
			return fail(err, errlen,
			    "context.%s: expected a string of at most %d "
			    "bytes",
			    key, KWD_REQ_CTX_VAL_MAX);
		s = json_string_value(v);
		vlen = json_string_length(v);
		if (vlen > KWD_REQ_CTX_VAL_MAX)
			return fail(err, errlen,
			    "context.%s: expected a string of at most %d "
			    "bytes",
			    key, KWD_REQ_CTX_VAL_MAX);
		if (!ctx_val_ok(s, vlen))
			return fail(err, errlen,
			    "context.%s: control characters are not allowed",
			    key);
		if (req->nctx >= KWD_CTX_MAX_PAIRS)
			return fail(err, errlen, "context: at most %d keys",
			    KWD_CTX_MAX_PAIRS);
		memcpy(req->ctx_key[req->nctx], key, klen + 1);
		memcpy(req->ctx_val[req->nctx], s, vlen);
		req->ctx_val[req->nctx][vlen] = '\0';
		req->nctx++;
	}
	return KW_OK;
}

/*
 * Strict base64 (RFC 4648 section 4): the standard alphabet, padded, no
 * whitespace or line breaks, and canonical. Section 3.5 lets a decoder
 * ignore non-zero pad bits, so "QR==" and "QQ==" decode alike; accepting
 * both would give one blob two spellings (and two audit or cache keys).
 * Re-encoding and comparing refuses every non-canonical form at once.
 */
static int
get_wrapped(json_t *obj, struct kwd_req *req, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, "wrapped");
	unsigned char bin[B64_MAX / 4 * 3];
	char again[B64_MAX + 1];
	const char *s, *end = NULL;
	size_t len, binlen = 0;

	if (v == NULL)
		return fail(err, errlen,
		    "wrapped: required (the wrapped key, base64)");
	if (!json_is_string(v))
		return fail(err, errlen,
		    "wrapped: expected a base64 string (RFC 4648, padded)");
	s = json_string_value(v);
	len = json_string_length(v);
	if (len == 0 || len > B64_MAX)
		return fail(err, errlen,
		    "wrapped: expected base64 of 1 to %d bytes", KWD_BLOB_MAX);
	/* Room for what B64_MAX characters can hold, so that an oversized
	 * blob is told apart from a malformed one. */
	if (sodium_base642bin(bin, sizeof bin, s, len, NULL, &binlen, &end,
	        sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    end != s + len || binlen == 0)
		return fail(err, errlen,
		    "wrapped: not valid base64 (standard alphabet, padded, "
		    "no whitespace)");
	if (binlen > KWD_BLOB_MAX)
		return fail(err, errlen,
		    "wrapped: expected base64 of 1 to %d bytes", KWD_BLOB_MAX);
	sodium_bin2base64(again, sizeof again, bin, binlen,
	    sodium_base64_VARIANT_ORIGINAL);
	if (strlen(again) != len || memcmp(again, s, len) != 0)
		return fail(err, errlen,
		    "wrapped: not canonical base64 (non-zero padding bits)");
	memcpy(req->wrapped, bin, binlen);
	req->wrapped_len = binlen;
	return KW_OK;
}

static int
parse_create(json_t *root, struct kwd_req *req, char *err, size_t errlen)
{
	static const char *const fields[] = {"name", "rotation_period", NULL};
	unsigned long long n = 0;
	const char *name;
	json_t *v;
	bool have = false;
	int rv;

	if ((rv = only_fields(root, fields, err, errlen)) != KW_OK)
		return rv;
	v = json_object_get(root, "name");
	if (v == NULL)
		return fail(err, errlen, "name: required");
	if (!json_is_string(v) ||
	    !kw_name_valid_n(json_string_value(v), json_string_length(v)))
		return fail(err, errlen,
		    "name: expected a key name: 1 to %d of a-z, 0-9, '.', "
		    "'_', '-', starting with a-z or 0-9, without \"..\"",
		    KW_NAME_MAX);
	name = json_string_value(v);
	memcpy(req->name, name, json_string_length(v) + 1);
	rv = get_uint(root, "rotation_period", 0, ROTATION_MAX, &have, &n, err,
	    errlen);
	if (rv != KW_OK)
		return rv;
	if (have)
		req->rotation_period = n;
	return KW_OK;
}

/* One lowercase hex digit, or -1. */
static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* A scope: ^[a-z0-9._:/-]{1,128}$ (no '*': a token names what it holds). */
static bool
scope_ok(const char *s, size_t len)
{
	if (len == 0 || len > KWD_REQ_SCOPE_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		        ch == '.' || ch == '_' || ch == ':' || ch == '/' ||
		        ch == '-'))
			return false;
	}
	return true;
}

static int
parse_token(json_t *root, struct kwd_req *req, char *err, size_t errlen)
{
	static const char *const fields[] = {"audience", "scope", "ttl", "bind",
	    NULL};
	unsigned long long n = 0;
	json_t *v, *e;
	bool have = false;
	size_t i, len;
	int rv;

	if ((rv = only_fields(root, fields, err, errlen)) != KW_OK)
		return rv;
	v = json_object_get(root, "audience");
	if (v == NULL)
		return fail(err, errlen,
		    "audience: required (who the token is for)");
	len = json_is_string(v) ? json_string_length(v) : 0;
	if (len == 0 || len >= sizeof req->audience ||
	    !ctx_val_ok(json_string_value(v), len))
		return fail(err, errlen,
		    "audience: expected a string of 1 to %zu printable "
		    "characters",
		    sizeof req->audience - 1);
	memcpy(req->audience, json_string_value(v), len + 1);
	v = json_object_get(root, "scope");
	if (v == NULL)
		return fail(err, errlen,
		    "scope: required (an array of the scopes asked for)");
	if (!json_is_array(v) || json_array_size(v) == 0 ||
	    json_array_size(v) > KWD_REQ_SCOPES_MAX)
		return fail(err, errlen,
		    "scope: expected an array of 1 to %d "
		    "scopes",
		    KWD_REQ_SCOPES_MAX);
	json_array_foreach (v, i, e) {
		len = json_is_string(e) ? json_string_length(e) : 0;
		if (!scope_ok(json_string_value(e), len))
			return fail(err, errlen,
			    "scope[%zu]: expected 1 to %d of a-z 0-9 . _ : / -",
			    i, KWD_REQ_SCOPE_MAX);
		for (size_t j = 0; j < req->nscopes; j++)
			if (strcmp(req->scopes[j], json_string_value(e)) == 0)
				return fail(err, errlen,
				    "scope[%zu]: given twice", i);
		memcpy(req->scopes[req->nscopes++], json_string_value(e),
		    len + 1);
	}
	rv = get_uint(root, "ttl", 1, KWD_REQ_TTL_MAX, &have, &n, err, errlen);
	if (rv != KW_OK)
		return rv;
	if (have)
		req->ttl = (uint32_t)n;
	v = json_object_get(root, "bind");
	if (v != NULL) {
		if (!json_is_boolean(v))
			return fail(err, errlen,
			    "bind: expected true or false");
		req->bind = json_is_true(v);
	}
	return KW_OK;
}

static int
parse_revoke(json_t *root, struct kwd_req *req, char *err, size_t errlen)
{
	static const char *const fields[] = {"jti", "sub", NULL};
	json_t *j, *s;
	size_t len;
	int rv;

	if ((rv = only_fields(root, fields, err, errlen)) != KW_OK)
		return rv;
	j = json_object_get(root, "jti");
	s = json_object_get(root, "sub");
	if ((j == NULL) == (s == NULL))
		return fail(err, errlen,
		    "expected one of jti (a token) and sub (every token of a "
		    "subject)");
	if (j != NULL) {
		len = json_is_string(j) ? json_string_length(j) : 0;
		if (!kwd_token_id_valid(json_string_value(j), len))
			return fail(err, errlen,
			    "jti: expected a token id (16 to 64 of A-Z a-z 0-9 "
			    "- _)");
		memcpy(req->jti, json_string_value(j), len + 1);
		return KW_OK;
	}
	len = json_is_string(s) ? json_string_length(s) : 0;
	if (len == 0 || len >= sizeof req->sub ||
	    !ctx_val_ok(json_string_value(s), len))
		return fail(err, errlen,
		    "sub: expected an identity of 1 to %zu printable "
		    "characters",
		    sizeof req->sub - 1);
	memcpy(req->sub, json_string_value(s), len + 1);
	return KW_OK;
}

static int
parse_sign(json_t *root, struct kwd_req *req, char *err, size_t errlen)
{
	static const char *const fields[] = {"key", "digest", NULL};
	const char *d;
	json_t *v;
	int rv;

	if ((rv = only_fields(root, fields, err, errlen)) != KW_OK)
		return rv;
	v = json_object_get(root, "key");
	if (v == NULL || !json_is_string(v) ||
	    !kw_name_valid_n(json_string_value(v), json_string_length(v)))
		return fail(err, errlen,
		    "key: required, the name of a signing key");
	memcpy(req->name, json_string_value(v), json_string_length(v) + 1);
	v = json_object_get(root, "digest");
	d = json_string_value(v);
	if (d == NULL || json_string_length(v) != 7 + 64 ||
	    strncmp(d, "sha256:", 7) != 0)
		return fail(err, errlen,
		    "digest: expected \"sha256:\" and 64 lowercase hex digits");
	for (size_t i = 0; i < 32; i++) {
		int hi = hexval(d[7 + 2 * i]), lo = hexval(d[8 + 2 * i]);

		if (hi < 0 || lo < 0)
			return fail(err, errlen,
			    "digest: expected \"sha256:\" and 64 lowercase "
			    "hex digits");
		req->digest[i] = (unsigned char)(hi << 4 | lo);
	}
	return KW_OK;
}

static int
parse_cert(json_t *root, struct kwd_req *req, char *err, size_t errlen)
{
	static const char *const fields[] = {"csr", "ttl", NULL};
	unsigned long long n = 0;
	bool have = false;
	json_t *v;
	size_t len;
	int rv;

	if ((rv = only_fields(root, fields, err, errlen)) != KW_OK)
		return rv;
	v = json_object_get(root, "csr");
	len = json_is_string(v) ? json_string_length(v) : 0;
	/* The PEM itself is judged by the keeper (cert.c). */
	if (len == 0 || len > KWD_REQ_CSR_MAX ||
	    memchr(json_string_value(v), '\0', len) != NULL)
		return fail(err, errlen,
		    "csr: expected a PEM certificate request of at most %d "
		    "bytes",
		    KWD_REQ_CSR_MAX);
	memcpy(req->csr, json_string_value(v), len + 1);
	rv = get_uint(root, "ttl", 1, 7 * 24 * 3600, &have, &n, err, errlen);
	if (rv != KW_OK)
		return rv;
	if (have)
		req->ttl = (uint32_t)n;
	return KW_OK;
}

static int
parse_introspect(json_t *root, struct kwd_req *req, char *err, size_t errlen)
{
	static const char *const fields[] = {"token", NULL};
	json_t *t;
	size_t len;
	int rv;

	if ((rv = only_fields(root, fields, err, errlen)) != KW_OK)
		return rv;
	t = json_object_get(root, "token");
	len = json_is_string(t) ? json_string_length(t) : 0;
	/* The token itself is judged by the keeper; here only its size and
	 * alphabet (base64url and dots), so nothing else crosses over. */
	if (len == 0 || len > KWD_REQ_TOKEN_MAX)
		return fail(err, errlen,
		    "token: expected a token of 1 to %d characters",
		    KWD_REQ_TOKEN_MAX);
	if (!kwd_token_chars_valid(json_string_value(t), len))
		return fail(err, errlen, "token: expected base64url and dots");
	memcpy(req->token, json_string_value(t), len + 1);
	/* jansson's copy, in its heap: wiped before it is freed. */
	sodium_memzero((char *)json_string_value(t), len);
	return KW_OK;
}

static int
parse_patch(json_t *root, struct kwd_req *req, char *err, size_t errlen)
{
	static const char *const fields[] = {"min_decrypt_version",
	    "rotation_period", "version", "state", NULL};
	enum kwd_key_state st;
	unsigned long long n = 0;
	json_t *v;
	bool have = false;
	int rv;

	if ((rv = only_fields(root, fields, err, errlen)) != KW_OK)
		return rv;
	if (json_object_size(root) == 0)
		return fail(err, errlen,
		    "body: expected at least one of min_decrypt_version, "
		    "rotation_period, version and state");
	rv = get_uint(root, "min_decrypt_version", 1, UINT32_MAX, &have, &n,
	    err, errlen);
	if (rv != KW_OK)
		return rv;
	if (have)
		req->min_decrypt_version = (uint32_t)n;
	rv = get_uint(root, "rotation_period", 0, ROTATION_MAX, &have, &n, err,
	    errlen);
	if (rv != KW_OK)
		return rv;
	if (have)
		req->rotation_period = n;
	rv = get_uint(root, "version", 1, UINT32_MAX, &have, &n, err, errlen);
	if (rv != KW_OK)
		return rv;
	if (have)
		req->version = (uint32_t)n;
	v = json_object_get(root, "state");
	if (v != NULL) {
		/* Only the two states an operator may set: "active" comes
		 * from rotation, "destroyed" is not reversible. */
		if (!json_is_string(v) ||
		    kwd_key_state_parse(json_string_value(v), &st) != KW_OK ||
		    (st != KWD_KEY_DECRYPT_ONLY && st != KWD_KEY_DISABLED))
			return fail(err, errlen,
			    "state: expected \"decrypt-only\" or "
			    "\"disabled\"");
		req->state = (int)st;
	}
	if (req->state >= 0 && req->version == 0)
		return fail(err, errlen,
		    "state: needs version (the version to change)");
	if (req->version != 0 && req->state < 0)
		return fail(err, errlen,
		    "version: only with state (the state to give it)");
	return KW_OK;
}

/*
 * Every field empty or "not given". Not all of it is zeroed: the token
 * and CSR buffers (24 KiB of the struct) are C strings that only their
 * kinds fill, and zeroing, copying and wiping the whole struct per
 * request was a visible share of the front's time.
 */
static void
req_reset(struct kwd_req *r)
{
	memset(r, 0, offsetof(struct kwd_req, token));
	r->token[0] = '\0';
	memset(r->digest, 0, sizeof r->digest);
	r->csr[0] = '\0';
	r->rotation_period = UINT64_MAX;
	r->state = -1;
}

/* A parsed request out: the large buffers up to their terminating NUL. */
static void
req_copy(struct kwd_req *dst, const struct kwd_req *src)
{
	/* token, digest and csr are the last members, in this order. */
	_Static_assert(offsetof(struct kwd_req, digest) ==
	        offsetof(struct kwd_req, token) + KWD_REQ_TOKEN_MAX + 1,
	    "digest follows token");
	_Static_assert(offsetof(struct kwd_req, csr) ==
	        offsetof(struct kwd_req, digest) + 32,
	    "csr follows digest");
	_Static_assert(sizeof(struct kwd_req) -
	            (offsetof(struct kwd_req, csr) + KWD_REQ_CSR_MAX + 1) <
	        _Alignof(struct kwd_req),
	    "csr is the last member");
	memcpy(dst, src, offsetof(struct kwd_req, token));
	memcpy(dst->token, src->token, strlen(src->token) + 1);
	memcpy(dst->digest, src->digest, sizeof dst->digest);
	memcpy(dst->csr, src->csr, strlen(src->csr) + 1);
}

int
kwd_req_parse(enum kwd_req_kind kind, const char *body, size_t len,
    struct kwd_req *ret_req, char *err, size_t errlen)
{
	static const char *const no_fields[] = {NULL};
	static const char *const datakey_fields[] = {"context", NULL};
	static const char *const unwrap_fields[] = {"wrapped", "context", NULL};
	struct kwd_req *req = NULL;
	json_t *root = NULL;
	int rv;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (ret_req == NULL || (body == NULL && len > 0)) {
		rv = KW_ERR_INVALID;
		goto out;
	}
	if (len > BODY_MAX) {
		fail(err, errlen, "body: larger than %d bytes", BODY_MAX);
		rv = KW_ERR_TOO_LARGE;
		goto out;
	}
	/* About 28 KiB: on the heap, so that a parser called from a server
	 * thread does not need a large stack; ret_req is written only on
	 * success. */
	req = malloc(sizeof *req);
	if (req == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	req_reset(req);
	if (kind == KWD_REQ_EMPTY && len == 0) {
		rv = KW_OK;
		goto done;
	}
	if (len == 0) {
		rv = fail(err, errlen, "body: expected a JSON object");
		goto out;
	}
	rv = load(body, len, &root, err, errlen);
	if (rv != KW_OK)
		goto out;
	switch (kind) {
	case KWD_REQ_KEY_CREATE:
		rv = parse_create(root, req, err, errlen);
		break;
	case KWD_REQ_KEY_PATCH:
		rv = parse_patch(root, req, err, errlen);
		break;
	case KWD_REQ_EMPTY:
		rv = only_fields(root, no_fields, err, errlen);
		break;
	case KWD_REQ_DATAKEY:
		rv = only_fields(root, datakey_fields, err, errlen);
		if (rv == KW_OK)
			rv = get_context(root, req, err, errlen);
		break;
	case KWD_REQ_TOKEN:
		rv = parse_token(root, req, err, errlen);
		break;
	case KWD_REQ_REVOKE:
		rv = parse_revoke(root, req, err, errlen);
		break;
	case KWD_REQ_INTROSPECT:
		rv = parse_introspect(root, req, err, errlen);
		break;
	case KWD_REQ_SIGN:
		rv = parse_sign(root, req, err, errlen);
		break;
	case KWD_REQ_CERT:
		rv = parse_cert(root, req, err, errlen);
		break;
	case KWD_REQ_UNWRAP:
		rv = only_fields(root, unwrap_fields, err, errlen);
		if (rv == KW_OK)
			rv = get_wrapped(root, req, err, errlen);
		if (rv == KW_OK)
			rv = get_context(root, req, err, errlen);
		break;
	default:
		rv = KW_ERR_INVALID;
		break;
	}
	if (rv != KW_OK)
		goto out;
done:
	req_copy(ret_req, req);
	rv = KW_OK;
out:
	json_decref(root);
	if (req != NULL) {
		/* A token to introspect (a credential). */
		if (kind == KWD_REQ_INTROSPECT)
			sodium_memzero(req->token, sizeof req->token);
		free(req);
	}
	return rv;
}

size_t
kwd_req_ctx(const struct kwd_req *req,
    struct kwd_ctx_pair pairs[KWD_CTX_MAX_PAIRS])
{
	size_t n =
	    req->nctx < KWD_CTX_MAX_PAIRS ? req->nctx : KWD_CTX_MAX_PAIRS;

	for (size_t i = 0; i < n; i++) {
		pairs[i].key = req->ctx_key[i];
		pairs[i].value = req->ctx_val[i];
	}
	return n;
}

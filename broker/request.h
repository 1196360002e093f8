/*
 * request.h: the JSON bodies of the HTTP API, validated against strict
 * schemas before anything else looks at them. Used by the front only.
 *
 * Every parser: body at most max bytes, nesting depth checked before
 * parsing (at most 4), duplicate keys refused, unknown fields refused,
 * wrong types refused, names in canonical form (kw_name_valid), context a
 * flat object of at most 32 string pairs (keys ^[a-z][a-z0-9_.-]{0,63}$,
 * values printable UTF-8 without control bytes, at most 256 bytes),
 * base64 strict (RFC 4648 section 4, padded, no whitespace). On
 * KW_ERR_INVALID, err says which field and what is expected, in words fit
 * for a client (no library text).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWD_REQUEST_H
#define KWD_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blob.h"
#include "keyward.h"
#include "policy.h"

#define KWD_REQ_CTX_KEY_MAX 64
#define KWD_REQ_CTX_VAL_MAX 256
#define KWD_REQ_SCOPES_MAX 32
#define KWD_REQ_SCOPE_MAX 128
#define KWD_REQ_TTL_MAX 31536000
#define KWD_REQ_TOKEN_MAX 8192
#define KWD_REQ_CSR_MAX 16384

struct kwd_req {
	char name[64]; /* POST /v1/keys */
	uint64_t rotation_period; /* UINT64_MAX: not given */
	uint32_t min_decrypt_version; /* 0: not given */
	uint32_t version; /* 0: not given */
	int state; /* -1: not given; enum kwd_key_state */
	size_t nctx;
	char ctx_key[KWD_CTX_MAX_PAIRS][KWD_REQ_CTX_KEY_MAX + 1];
	char ctx_val[KWD_CTX_MAX_PAIRS][KWD_REQ_CTX_VAL_MAX + 1];
	unsigned char wrapped[KWD_BLOB_MAX];
	size_t wrapped_len; /* 0: not given */
	/* POST /v1/tokens */
	char audience[256];
	size_t nscopes;
	char scopes[KWD_REQ_SCOPES_MAX][KWD_REQ_SCOPE_MAX + 1];
	uint32_t ttl; /* 0: not given */
	bool bind; /* bind to the caller's certificate (RFC 8705) */
	/* POST /v1/tokens/revoke: one of jti and sub */
	char jti[65];
	char sub[256];
	/* The last three members, in this order (request.c copies them up
	 * to their end). POST /v1/tokens/introspect (a credential: wiped
	 * after use) */
	char token[KWD_REQ_TOKEN_MAX + 1];
	/* POST /v1/artifacts/sign: name is the signing key */
	unsigned char digest[32];
	/* POST /v1/certs (ttl above) */
	char csr[KWD_REQ_CSR_MAX + 1];
};

enum kwd_req_kind {
	KWD_REQ_KEY_CREATE, /* {"name", "rotation_period"?} */
	KWD_REQ_KEY_PATCH, /* {"min_decrypt_version"?, "rotation_period"?,
			       "version"?, "state"?}: at least one; state
			       needs version; state is "decrypt-only" or
			       "disabled" */
	KWD_REQ_EMPTY, /* rotate: empty body or {} */
	KWD_REQ_DATAKEY, /* {"context"} */
	KWD_REQ_UNWRAP, /* decrypt, rewrap: {"wrapped", "context"} */
	KWD_REQ_TOKEN, /* {"audience", "scope": [..], "ttl"?, "bind"?} */
	KWD_REQ_REVOKE, /* {"jti"} or {"sub"} */
	KWD_REQ_INTROSPECT, /* {"token"} (RFC 7662 takes a form; JSON here) */
	KWD_REQ_SIGN, /* {"key", "digest": "sha256:<64 lowercase hex>"} */
	KWD_REQ_CERT, /* {"csr": PEM, "ttl"?} */
};

KW_WUR int kwd_req_parse(enum kwd_req_kind kind, const char *body, size_t len,
    struct kwd_req *ret_req, char *err, size_t errlen);

/* kwd_req_ctx: the context as pairs pointing into req. */
size_t kwd_req_ctx(const struct kwd_req *req,
    struct kwd_ctx_pair pairs[KWD_CTX_MAX_PAIRS]);

#endif /* KWD_REQUEST_H */

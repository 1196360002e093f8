/*
 * token.h: keyward tokens, compact JWS (RFC 7515) signed with ES256
 * (RFC 7518 section 3.4), carrying JWT claims (RFC 7519). docs/TOKENS.md.
 *
 *   BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(r || s)
 *
 *   header   {"alg":"ES256","kid":"<kid>","typ":"JWT"}
 *   payload  {"aud":..,"cnf":{"x5t#S256":..},"exp":..,"iat":..,"iss":..,
 *             "jti":..,"nbf":..,"scope":"a b c","sub":..}  (cnf optional)
 *
 * Pure code: no HSM, no I/O, no clock. The private key stays behind a
 * signing callback (the keeper passes kwd_p11_ecdsa_sign); public keys
 * come from a lookup callback by kid. Revocation is not checked here: the
 * keeper checks jti and sub against its store.
 *
 * Error policy of kwd_token_verify: every fault of the token itself, from
 * a stray byte to a wrong audience, returns KW_ERR_UNAUTHENTICATED, and
 * only err says which check refused it. err is for the audit log and the
 * journal, never for the client (an oracle telling which check failed
 * helps an attacker forge); it never holds the token, its signature or
 * its jti, and quotes other values defanged and cut short.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWD_TOKEN_H
#define KWD_TOKEN_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward.h"

/* The longest token issued or accepted, in bytes; checked first. */
#define KWD_TOKEN_MAX 8192
/* kid: ^[A-Za-z0-9_-]{1,64}$ (a JWK thumbprint is 43 of them). */
#define KWD_TOKEN_KID_MAX 64
/* iss, sub, aud: 1 to 255 bytes of printable ASCII (0x20..0x7e). */
#define KWD_TOKEN_STR_MAX 255
/* jti: ^[A-Za-z0-9_-]{16,64}$. */
#define KWD_TOKEN_JTI_MIN 16
#define KWD_TOKEN_JTI_MAX 64
/* scope: 1 to 32 scopes of ^[/a-z0-9._:*-]{1,128}$, one space between. */
#define KWD_TOKEN_SCOPE_MAX 128
#define KWD_TOKEN_SCOPES_MAX 32
#define KWD_TOKEN_SCOPE_LEN \
	(KWD_TOKEN_SCOPES_MAX * (KWD_TOKEN_SCOPE_MAX + 1) - 1)
/* A SHA-256 thumbprint in base64url, without padding: 43 characters. */
#define KWD_TOKEN_THUMB_LEN 43
/* Limits on the verifier's options. */
#define KWD_TOKEN_LEEWAY_MAX 30
#define KWD_TOKEN_TTL_MAX 31536000 /* one year, as policy's max_ttl */
/* Times are seconds since the epoch in [0, 9999-12-31T23:59:59Z]. */
#define KWD_TOKEN_TIME_MAX INT64_C(253402300799)

/*
 * The claims, in fixed buffers: nothing to free, bounded size. Strings are
 * NUL-terminated. kwd_token_build reads every field but kid;
 * kwd_token_verify writes every field.
 */
struct kwd_token_claims {
	char iss[KWD_TOKEN_STR_MAX + 1]; /* issuer: the broker's URL or name */
	char sub[KWD_TOKEN_STR_MAX + 1]; /* subject: the caller's identity */
	char aud[KWD_TOKEN_STR_MAX + 1]; /* audience: one string, see below */
	int64_t iat; /* issued at */
	int64_t nbf; /* not before */
	int64_t exp; /* expires at (not valid from this second on) */
	/*
	 * jti: chosen by the issuer, at least 128 random bits in base64url
	 * (kw_random_buf of 16 bytes or more, then kwd_token_b64url_encode):
	 * the handle of revocation, so it must never repeat.
	 */
	char jti[KWD_TOKEN_JTI_MAX + 1];
	/* scope: space-separated (RFC 8693 section 4.2), no duplicates. */
	char scope[KWD_TOKEN_SCOPE_LEN + 1];
	/*
	 * cnf: "" for a bearer token, or the x5t#S256 thumbprint of the client
	 * certificate the token is bound to (RFC 8705 section 3.1): see
	 * kwd_token_cert_thumbprint.
	 */
	char cnf[KWD_TOKEN_THUMB_LEN + 1];
	/* kid: written by kwd_token_verify (the key that verified). */
	char kid[KWD_TOKEN_KID_MAX + 1];
};

/*
 * kwd_token_sign_fn: sign a SHA-256 digest with ECDSA P-256 and write
 * the raw signature r || s (32 bytes each, big-endian), as
 * kwd_p11_ecdsa_sign does. Returns KW_OK or a KW_ERR_* that
 * kwd_token_build passes on unchanged (KW_ERR_HSM_DOWN: no token is
 * issued, and there is no software fallback).
 */
typedef int (*kwd_token_sign_fn)(const unsigned char digest[32],
    unsigned char ret_sig[64], void *arg);

/*
 * kwd_token_key_fn: the public key named kid, for kwd_token_verify. On
 * KW_OK *ret_key is a reference that the verifier releases with
 * EVP_PKEY_free() (hand out a shared key with EVP_PKEY_up_ref()). Unknown
 * kid: KW_ERR_NOT_FOUND (the token is refused). Any other code is passed
 * on unchanged by kwd_token_verify (KW_ERR_UNAVAILABLE: the front answers
 * 503, the token is not judged). kid is already known to match
 * ^[A-Za-z0-9_-]{1,64}$.
 */
typedef int (*kwd_token_key_fn)(const char *kid, void *arg, EVP_PKEY **ret_key);

/*
 * kwd_token_build: issue a token for claims c, signed through sign under
 * the key named kid. The claims are checked with the rules that
 * kwd_token_verify applies (syntax, exp > iat, exp > nbf, lifetime at most
 * KWD_TOKEN_TTL_MAX), so that keyward never issues a token it would
 * refuse; policy's caps (scopes, max_ttl) are the caller's job. The
 * payload is canonical JSON (compact, keys sorted). *ret_jws is the NUL-
 * terminated compact JWS, a bearer credential: free it with
 * kwd_token_free().
 *
 * Returns KW_OK; KW_ERR_INVALID for bad claims or kid; KW_ERR_TOO_LARGE
 * when the token would exceed KWD_TOKEN_MAX (a guard: the largest valid
 * claims and kid make 8077 bytes); KW_ERR_CRYPTO when the signer returned
 * r or s outside [1, n-1]; KW_ERR_NOMEM; or sign's error.
 */
KW_WUR int kwd_token_build(const struct kwd_token_claims *c, const char *kid,
    kwd_token_sign_fn sign, void *arg, char **ret_jws);

/* kwd_token_free: wipes and frees a token from kwd_token_build (NULL: ok). */
void kwd_token_free(char *jws);

/* Options of kwd_token_verify. */
struct kwd_token_verify_opts {
	const char *issuer; /* iss must equal it (bytewise); required */
	const char *audience; /* aud must equal it (bytewise); required */
	int64_t now; /* the caller's clock, seconds since the epoch */
	int64_t leeway; /* clock skew allowed, 0..KWD_TOKEN_LEEWAY_MAX s */
	int64_t max_ttl; /* exp - iat at most this, 1..KWD_TOKEN_TTL_MAX s */
	/*
	 * The x5t#S256 thumbprint of the certificate the caller presented on
	 * this connection (kwd_token_cert_thumbprint), or NULL if none. A
	 * token with cnf is accepted only when it is equal; a token without
	 * cnf is accepted with or without a certificate.
	 */
	const char *cert_thumbprint;
};

/*
 * kwd_token_verify: parse and verify the len bytes at jws (no NUL needed)
 * and check its claims against o. The checks, in order (each one refuses
 * before the next runs; docs/TOKENS.md):
 *
 *  1. 1 to KWD_TOKEN_MAX bytes; only [A-Za-z0-9_-] and exactly two dots;
 *     three non-empty parts, each strict, canonical base64url (no padding,
 *     no whitespace, zero trailing bits);
 *  2. header: a flat JSON object, no duplicate keys, only alg, kid, typ;
 *     alg exactly "ES256"; kid matching ^[A-Za-z0-9_-]{1,64}$; typ, if
 *     present, exactly "JWT";
 *  3. signature: exactly 64 bytes, r and s each in [1, n-1] of P-256;
 *  4. lookup(kid): a P-256 public key; the ECDSA signature over the first
 *     two parts verifies (SHA-256);
 *  5. payload: a JSON object at most 2 deep, no duplicate keys, only the
 *     claims of struct kwd_token_claims, all of them (cnf optional) with
 *     their types and syntax; aud is a single string (an array of
 *     audiences is refused: one token, one audience, no confused deputy);
 *  6. iss == o->issuer, aud == o->audience;
 *  7. exp - iat <= o->max_ttl; iat <= now + leeway; nbf - leeway <= now;
 *     now < exp + leeway;
 *  8. cnf, when present, equals o->cert_thumbprint (constant time).
 *
 * On KW_OK *ret holds the claims (jti, sub and exp for the revocation
 * check). A token that fails any check: KW_ERR_UNAUTHENTICATED, and err
 * (when not NULL) gets the reason, for the audit log only. Bad options or
 * NULL arguments: KW_ERR_INVALID (a caller bug; the token is not judged).
 * lookup's errors other than KW_ERR_NOT_FOUND, and KW_ERR_NOMEM, are
 * passed on. Memory: a few KiB of stack and jansson's objects for at most
 * KWD_TOKEN_MAX bytes of input.
 */
KW_WUR int kwd_token_verify(const char *jws, size_t len,
    const struct kwd_token_verify_opts *o, kwd_token_key_fn lookup, void *arg,
    struct kwd_token_claims *ret, char *err, size_t errlen);

/*
 * kwd_token_jwk: the public JWK (RFC 7517, RFC 7518 section 6.2) of a
 * P-256 key: {"alg":"ES256","crv":"P-256","kid":..,"kty":"EC","use":"sig",
 * "x":..,"y":..}. kid NULL: kwd_token_kid(pub). KW_ERR_INVALID if pub is
 * not a P-256 key or kid is not ^[A-Za-z0-9_-]{1,64}$.
 */
KW_WUR int kwd_token_jwk(EVP_PKEY *pub, const char *kid, json_t **ret);

/*
 * kwd_token_kid: the RFC 7638 JWK thumbprint of a P-256 key, base64url of
 * the SHA-256 of {"crv":"P-256","kty":"EC","x":"..","y":".."}: 43
 * characters and a NUL. Stable (the same key, the same kid, whatever the
 * HSM label or version) and path-safe. KW_ERR_INVALID if not P-256.
 */
KW_WUR int kwd_token_kid(EVP_PKEY *pub, char out[KWD_TOKEN_THUMB_LEN + 1]);

/*
 * kwd_token_cert_thumbprint: x5t#S256 (RFC 8705 section 3.1) of a
 * certificate: base64url of the SHA-256 of its DER, 43 characters and a
 * NUL. The DER is not parsed.
 */
KW_WUR int kwd_token_cert_thumbprint(const unsigned char *der, size_t len,
    char out[KWD_TOKEN_THUMB_LEN + 1]);

/*
 * kwd_token_scope_valid: s is 1 to KWD_TOKEN_SCOPES_MAX scopes of
 * ^[/a-z0-9._:*-]{1,128}$ separated by single spaces, none repeated.
 */
bool kwd_token_scope_valid(const char *s);

/* kwd_token_id_valid: s[0..len) is a jti: 16 to 64 of [A-Za-z0-9_-]. */
bool kwd_token_id_valid(const char *s, size_t len);
/* kwd_token_chars_valid: s[0..len) holds only base64url and '.', the
 * alphabet of a compact JWS (its length is the caller's check). */
bool kwd_token_chars_valid(const char *s, size_t len);

/*
 * kwd_token_scopes_subset: true if requested is a valid scope string
 * (kwd_token_scope_valid) and each of its scopes matches at least one of
 * the nallowed globs in allowed, with policy's matcher (kwd_policy_glob:
 * '*' matches any run of bytes). A '*' in a requested scope is matched as
 * a literal byte, and only a star of the allowed glob can absorb it, so a
 * requested glob passes only if everything it could stand for is allowed.
 */
bool kwd_token_scopes_subset(const char *requested, const char *const *allowed,
    size_t nallowed);

/*
 * kwd_token_b64url_encode: base64url without padding (RFC 4648 section 5,
 * RFC 7515 section 2) of len bytes into out, NUL-terminated; cap must hold
 * (4 * len + 2) / 3 + 1 bytes, else KW_ERR_TOO_LARGE.
 */
KW_WUR int kwd_token_b64url_encode(const unsigned char *in, size_t len,
    char *out, size_t cap);

/*
 * kwd_token_b64url_decode: the strict inverse: only [A-Za-z0-9_-], no
 * padding, no whitespace, a length that is not 1 mod 4, and zero unused
 * trailing bits, so that exactly one string decodes to given bytes.
 * KW_ERR_INVALID, or KW_ERR_TOO_LARGE if the result exceeds cap.
 */
KW_WUR int kwd_token_b64url_decode(const char *in, size_t len,
    unsigned char *out, size_t cap, size_t *ret_len);

#endif /* KWD_TOKEN_H */

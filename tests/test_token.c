/*
 * test_token.c: keyward tokens (broker/token.c), with software P-256 keys
 * standing in for the HSM. Every refusal is checked for its code and for
 * the reason given to the audit log, so that a test cannot pass because
 * the token was refused by an earlier, unrelated check.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <setjmp.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "token.h"

#define NOW INT64_C(1700000000)
#define ISS "https://keyward.test"
#define AUD "api.keyward.test"
#define SUB "spiffe://keyward.dev/job/train-llama"
#define SCOPE "model:llama-70b:infer datasets/imagenet:read"

static EVP_PKEY *key1, *key2, *key384;
static char last_err[256];

/* ------------------------------------------------------------------ */
/* Software signer and key ring.                                        */

/* ECDSA over a digest with a software key; raw r || s of clen each. */
static int
soft_sign_n(EVP_PKEY *k, const unsigned char *digest, size_t dlen,
    unsigned char *sig, int clen)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(k, NULL);
	unsigned char der[160];
	const unsigned char *p = der;
	size_t derlen = sizeof der;
	ECDSA_SIG *es = NULL;
	int rv = KW_ERR_CRYPTO;

	if (ctx != NULL && EVP_PKEY_sign_init(ctx) == 1 &&
	    EVP_PKEY_sign(ctx, der, &derlen, digest, dlen) == 1 &&
	    (es = d2i_ECDSA_SIG(NULL, &p, (long)derlen)) != NULL &&
	    BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, clen) == clen &&
	    BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + clen, clen) == clen)
		rv = KW_OK;
	ECDSA_SIG_free(es);
	EVP_PKEY_CTX_free(ctx);
	return rv;
}

static int
soft_sign(const unsigned char digest[32], unsigned char sig[64], void *arg)
{
	return soft_sign_n(arg, digest, 32, sig, 32);
}

static int
failing_sign(const unsigned char digest[32], unsigned char sig[64], void *arg)
{
	(void)digest;
	(void)sig;
	return *(int *)arg;
}

static int
zero_r_sign(const unsigned char digest[32], unsigned char sig[64], void *arg)
{
	int rv = soft_sign(digest, sig, arg);

	memset(sig, 0, 32);
	return rv;
}

struct ring {
	const char *kid[4];
	EVP_PKEY *key[4];
	int n;
	int calls;
	int fail; /* returned instead of looking up, when not 0 */
};

static struct ring ring;

static int
lookup(const char *kid, void *arg, EVP_PKEY **ret_key)
{
	struct ring *r = arg;

	r->calls++;
	if (r->fail != 0)
		return r->fail;
	for (int i = 0; i < r->n; i++)
		if (strcmp(r->kid[i], kid) == 0) {
			EVP_PKEY_up_ref(r->key[i]);
			*ret_key = r->key[i];
			return KW_OK;
		}
	return KW_ERR_NOT_FOUND;
}

static void
ring_reset(void)
{
	memset(&ring, 0, sizeof ring);
	ring.kid[0] = "k1";
	ring.key[0] = key1;
	ring.kid[1] = "k2";
	ring.key[1] = key2;
	ring.kid[2] = "p384";
	ring.key[2] = key384;
	ring.n = 3;
}

/* ------------------------------------------------------------------ */
/* Tokens, good and forged.                                             */

static struct kwd_token_claims
good_claims(void)
{
	struct kwd_token_claims c;

	memset(&c, 0, sizeof c);
	strcpy(c.iss, ISS);
	strcpy(c.sub, SUB);
	strcpy(c.aud, AUD);
	c.iat = NOW - 10;
	c.nbf = NOW - 10;
	c.exp = NOW + 600;
	strcpy(c.jti, "q7Hk2v_Xw-9aLmN3pR5sTg");
	strcpy(c.scope, SCOPE);
	return c;
}

static struct kwd_token_verify_opts
good_opts(void)
{
	struct kwd_token_verify_opts o = {
	    .issuer = ISS,
	    .audience = AUD,
	    .now = NOW,
	    .leeway = 5,
	    .max_ttl = 3600,
	    .cert_thumbprint = NULL,
	};

	return o;
}

/* Not inlined: gcc 12 then mistakes the token for a pointer to the
 * local that kwd_token_build wrote it through (-Wdangling-pointer). */
static __attribute__((noinline)) char *
issue(const struct kwd_token_claims *c, const char *kid, EVP_PKEY *k)
{
	char *jws = NULL;

	assert_int_equal(kwd_token_build(c, kid, soft_sign, k, &jws), KW_OK);
	return jws;
}

static char *
b64(const void *buf, size_t len)
{
	char *out = malloc(4 * len / 3 + 4);

	assert_non_null(out);
	assert_int_equal(kwd_token_b64url_encode(buf, len, out,
	                     4 * len / 3 + 4),
	    KW_OK);
	return out;
}

static char *
b64s(const char *str)
{
	return b64(str, strlen(str));
}

/* The longest scope string: 32 distinct scopes of 128 bytes. */
static void
big_scope(char out[KWD_TOKEN_SCOPE_LEN + 1])
{
	size_t off = 0;

	for (int i = 0; i < KWD_TOKEN_SCOPES_MAX; i++) {
		memset(out + off, 'a' + i % 26, KWD_TOKEN_SCOPE_MAX);
		out[off + KWD_TOKEN_SCOPE_MAX - 1] = (char)('0' + i / 26);
		off += KWD_TOKEN_SCOPE_MAX;
		out[off++] = ' ';
	}
	out[off - 1] = '\0';
}

/* h64 "." p64 "." base64url(sig), with a P-256 signature by k. */
static char *
forge_parts(const char *h64, const char *p64, EVP_PKEY *k)
{
	size_t n = strlen(h64) + strlen(p64) + 1;
	unsigned char md[32], sig[64];
	char *tok = malloc(n + 90), *s64;

	assert_non_null(tok);
	snprintf(tok, n + 1, "%s.%s", h64, p64);
	crypto_hash_sha256(md, (unsigned char *)tok, n);
	assert_int_equal(soft_sign(md, sig, k), KW_OK);
	s64 = b64(sig, sizeof sig);
	strcat(tok, ".");
	strcat(tok, s64);
	free(s64);
	return tok;
}

static char *
forge(const char *hdr, const char *pay, EVP_PKEY *k)
{
	char *h64 = b64(hdr, strlen(hdr)), *p64 = b64(pay, strlen(pay));
	char *tok = forge_parts(h64, p64, k);

	free(h64);
	free(p64);
	return tok;
}

#define HDR_K1 "{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"JWT\"}"

static json_t *
claims_json(void)
{
	json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s}", "iss",
	    ISS, "sub", SUB, "aud", AUD, "iat", (json_int_t)(NOW - 10), "nbf",
	    (json_int_t)(NOW - 10), "exp", (json_int_t)(NOW + 600), "jti",
	    "q7Hk2v_Xw-9aLmN3pR5sTg", "scope", SCOPE);

	assert_non_null(j);
	return j;
}

/* Takes pay. */
static char *
forge_json(const char *hdr, json_t *pay)
{
	char *p = json_dumps(pay, JSON_COMPACT), *tok;

	assert_non_null(p);
	tok = forge(hdr, p, key1);
	free(p);
	json_decref(pay);
	return tok;
}

/* The token with its signature part replaced by sig. */
static char *
with_sig(const char *tok, const unsigned char sig[64])
{
	const char *dot = strrchr(tok, '.');
	char *s64 = b64(sig, 64), *out = malloc(strlen(tok) + 90);

	assert_non_null(out);
	snprintf(out, strlen(tok) + 90, "%.*s.%s", (int)(dot - tok), tok, s64);
	free(s64);
	return out;
}

static void
sig_of(const char *tok, unsigned char sig[64])
{
	size_t n;

	assert_int_equal(kwd_token_b64url_decode(strrchr(tok, '.') + 1, 86, sig,
	                     64, &n),
	    KW_OK);
	assert_int_equal(n, 64);
}

static int
verify_o(const char *tok, const struct kwd_token_verify_opts *o,
    struct kwd_token_claims *c)
{
	return kwd_token_verify(tok, strlen(tok), o, lookup, &ring, c, last_err,
	    sizeof last_err);
}

static void
accepted_o(const char *tok, const struct kwd_token_verify_opts *o)
{
	struct kwd_token_claims c;
	int rv = verify_o(tok, o, &c);

	if (rv != KW_OK)
		fail_msg("refused (%d): %s", rv, last_err);
}

static void
accepted(const char *tok)
{
	struct kwd_token_verify_opts o = good_opts();

	accepted_o(tok, &o);
}

/* Refused with KW_ERR_UNAUTHENTICATED, for a reason that names why. */
static void
refused_o(const char *tok, size_t len, const struct kwd_token_verify_opts *o,
    const char *why)
{
	struct kwd_token_claims c, before;
	int rv;

	memset(&c, 0xa5, sizeof c);
	before = c;
	rv = kwd_token_verify(tok, len, o, lookup, &ring, &c, last_err,
	    sizeof last_err);
	if (rv != KW_ERR_UNAUTHENTICATED)
		fail_msg("expected a refusal for \"%s\", got %d (%s)", why, rv,
		    last_err);
	if (why != NULL && strstr(last_err, why) == NULL)
		fail_msg("refused for \"%s\", expected \"%s\"", last_err, why);
	/* ret_* is written only on success. */
	assert_memory_equal(&c, &before, sizeof c);
}

static void
refused(const char *tok, const char *why)
{
	struct kwd_token_verify_opts o = good_opts();

	refused_o(tok, strlen(tok), &o, why);
}

static void
refused_free(char *tok, const char *why)
{
	refused(tok, why);
	free(tok);
}

/* ------------------------------------------------------------------ */

static void
test_token_roundtrip(void **state)
{
	struct kwd_token_claims c = good_claims(), got;
	struct kwd_token_verify_opts o = good_opts();
	unsigned char buf[1024];
	char *tok, *dot1, *dot2;
	size_t n;

	(void)state;
	ring_reset();
	tok = issue(&c, "k1", key1);
	dot1 = strchr(tok, '.');
	dot2 = strrchr(tok, '.');
	assert_int_equal(strlen(dot2 + 1), 86);
	/* The header, exactly. */
	assert_int_equal(kwd_token_b64url_decode(tok, (size_t)(dot1 - tok), buf,
	                     sizeof buf, &n),
	    KW_OK);
	assert_int_equal(n, strlen(HDR_K1));
	assert_memory_equal(buf, HDR_K1, n);
	/* The payload: canonical JSON, sorted and compact. */
	assert_int_equal(kwd_token_b64url_decode(dot1 + 1,
	                     (size_t)(dot2 - dot1 - 1), buf, sizeof buf, &n),
	    KW_OK);
	buf[n] = '\0';
	assert_string_equal((char *)buf,
	    "{\"aud\":\"" AUD "\",\"exp\":1700000600,\"iat\":1699999990,"
	    "\"iss\":\"" ISS "\",\"jti\":\"q7Hk2v_Xw-9aLmN3pR5sTg\","
	    "\"nbf\":1699999990,\"scope\":\"" SCOPE "\",\"sub\":\"" SUB "\"}");

	memset(&got, 0, sizeof got);
	assert_int_equal(verify_o(tok, &o, &got), KW_OK);
	assert_string_equal(last_err, "");
	assert_int_equal(ring.calls, 1);
	assert_string_equal(got.iss, ISS);
	assert_string_equal(got.sub, SUB);
	assert_string_equal(got.aud, AUD);
	assert_string_equal(got.jti, c.jti);
	assert_string_equal(got.scope, SCOPE);
	assert_string_equal(got.cnf, "");
	assert_string_equal(got.kid, "k1");
	assert_true(got.iat == c.iat && got.nbf == c.nbf && got.exp == c.exp);

	/* Not NUL-terminated: len is what counts. */
	n = strlen(tok);
	memcpy(buf, tok, n);
	buf[n] = 'x';
	assert_int_equal(kwd_token_verify((char *)buf, n, &o, lookup, &ring,
	                     &got, NULL, 0),
	    KW_OK);
	kwd_token_free(tok);

	/* A token from another key, under k1's kid: refused. */
	tok = issue(&c, "k1", key2);
	refused(tok, "does not verify under kid \"k1\"");
	kwd_token_free(tok);
	tok = issue(&c, "k2", key2);
	accepted(tok);
	kwd_token_free(tok);
	kwd_token_free(NULL);
}

static void
test_token_bound_to_certificate(void **state)
{
	struct kwd_token_claims c = good_claims(), got;
	struct kwd_token_verify_opts o = good_opts();
	unsigned char certa[300], certb[300];
	char ta[KWD_TOKEN_THUMB_LEN + 1], tb[KWD_TOKEN_THUMB_LEN + 1];
	char *tok;

	(void)state;
	ring_reset();
	randombytes_buf(certa, sizeof certa);
	memcpy(certb, certa, sizeof certb);
	certb[299] ^= 1;
	assert_int_equal(kwd_token_cert_thumbprint(certa, sizeof certa, ta),
	    KW_OK);
	assert_int_equal(kwd_token_cert_thumbprint(certb, sizeof certb, tb),
	    KW_OK);
	strcpy(c.cnf, ta);
	tok = issue(&c, "k1", key1);

	o.cert_thumbprint = ta;
	assert_int_equal(verify_o(tok, &o, &got), KW_OK);
	assert_string_equal(got.cnf, ta);
	o.cert_thumbprint = tb;
	refused_o(tok, strlen(tok), &o, "bound to another client certificate");
	o.cert_thumbprint = NULL;
	refused_o(tok, strlen(tok), &o, "none was presented");
	kwd_token_free(tok);

	/* A bearer token is accepted with or without a certificate. */
	c.cnf[0] = '\0';
	tok = issue(&c, "k1", key1);
	o.cert_thumbprint = ta;
	accepted_o(tok, &o);
	o.cert_thumbprint = NULL;
	accepted_o(tok, &o);
	kwd_token_free(tok);
}

static void
test_token_alg_other_than_es256_refused(void **state)
{
	static const char *const hdrs[] = {
	    "{\"alg\":\"none\",\"kid\":\"k1\",\"typ\":\"JWT\"}",
	    "{\"alg\":\"HS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}",
	    "{\"alg\":\"ES384\",\"kid\":\"k1\",\"typ\":\"JWT\"}",
	    "{\"alg\":\"ES256K\",\"kid\":\"k1\",\"typ\":\"JWT\"}",
	    "{\"alg\":\"es256\",\"kid\":\"k1\",\"typ\":\"JWT\"}",
	    "{\"alg\":\"ES256 \",\"kid\":\"k1\",\"typ\":\"JWT\"}",
	    "{\"alg\":\"ES256\\u0000\",\"kid\":\"k1\",\"typ\":\"JWT\"}",
	    "{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}",
	    "{\"alg\":\"PS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}",
	    "{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"typ\":\"JWT\"}",
	    "{\"alg\":null,\"kid\":\"k1\",\"typ\":\"JWT\"}",
	    "{\"alg\":256,\"kid\":\"k1\",\"typ\":\"JWT\"}",
	};
	json_t *pay = claims_json();
	char *p = json_dumps(pay, JSON_COMPACT), *tok, *h64, *p64, *s64, *pem;
	unsigned char mac[32], md[48], sig[96];
	crypto_auth_hmacsha256_state st;
	BIO *bio;
	long pemlen;

	(void)state;
	ring_reset();
	for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++) {
		const char *why = strstr(hdrs[i], "\\u0000") ? "not valid JSON"
		                                             : "is not ES256";

		tok = forge(hdrs[i], p, key1);
		refused_free(tok, why);
	}
	/* Missing alg. */
	refused_free(forge("{\"kid\":\"k1\",\"typ\":\"JWT\"}", p, key1),
	    "no alg");
	assert_int_equal(ring.calls, 0);

	/* "none" the usual way: an empty signature, with or without the
	 * last dot. */
	h64 = b64s("{\"alg\":\"none\",\"typ\":\"JWT\"}");
	p64 = b64(p, strlen(p));
	tok = malloc(strlen(h64) + strlen(p64) + 3);
	sprintf(tok, "%s.%s.", h64, p64);
	refused(tok, "empty part");
	tok[strlen(tok) - 1] = '\0';
	refused(tok, "2 parts, not 3");
	free(tok);

	/* HS256 keyed with the verifier's public key (PEM), the classic
	 * algorithm confusion: a valid MAC, refused for its alg. */
	bio = BIO_new(BIO_s_mem());
	assert_non_null(bio);
	assert_int_equal(PEM_write_bio_PUBKEY(bio, key1), 1);
	pemlen = BIO_get_mem_data(bio, &pem);
	free(h64);
	h64 = b64s("{\"alg\":\"HS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}");
	tok = malloc(strlen(h64) + strlen(p64) + 50);
	sprintf(tok, "%s.%s", h64, p64);
	crypto_auth_hmacsha256_init(&st, (unsigned char *)pem, (size_t)pemlen);
	crypto_auth_hmacsha256_update(&st, (unsigned char *)tok, strlen(tok));
	crypto_auth_hmacsha256_final(&st, mac);
	s64 = b64(mac, sizeof mac);
	strcat(tok, ".");
	strcat(tok, s64);
	refused(tok, "alg \"HS256\" is not ES256");
	free(tok);
	free(s64);
	BIO_free(bio);

	/* ES384, signed for real with a P-384 key the ring knows. */
	free(h64);
	h64 = b64s("{\"alg\":\"ES384\",\"kid\":\"p384\",\"typ\":\"JWT\"}");
	tok = malloc(strlen(h64) + strlen(p64) + 140);
	sprintf(tok, "%s.%s", h64, p64);
	assert_int_equal(EVP_Digest(tok, strlen(tok), md, NULL, EVP_sha384(),
	                     NULL),
	    1);
	assert_int_equal(soft_sign_n(key384, md, 48, sig, 48), KW_OK);
	s64 = b64(sig, sizeof sig);
	strcat(tok, ".");
	strcat(tok, s64);
	refused(tok, "alg \"ES384\" is not ES256");
	free(tok);
	free(s64);
	assert_int_equal(ring.calls, 0);

	/* ES256 under a kid that names a P-384 key. */
	free(h64);
	h64 = b64s("{\"alg\":\"ES256\",\"kid\":\"p384\",\"typ\":\"JWT\"}");
	refused_free(forge_parts(h64, p64, key1), "not name a P-256 key");
	free(h64);
	free(p64);
	free(p);
	json_decref(pay);
}

static void
test_token_kid_refused(void **state)
{
	static const char *const bad[] = {
	    "\"../x\"",
	    "\"a/b\"",
	    "\"a.b\"",
	    "\"..\"",
	    "\"\"",
	    "\"k1 \"",
	    "\"k1\\n\"",
	    "\"k%31\"",
	    "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "A\"",
	    "1",
	    "null",
	};
	json_t *pay = claims_json();
	char *p = json_dumps(pay, JSON_COMPACT), hdr[200], *tok;

	(void)state;
	ring_reset();
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(hdr, sizeof hdr,
		    "{\"alg\":\"ES256\",\"kid\":%s,\"typ\":\"JWT\"}", bad[i]);
		refused_free(forge(hdr, p, key1), "header: kid");
	}
	refused_free(forge("{\"alg\":\"ES256\",\"typ\":\"JWT\"}", p, key1),
	    "no kid");
	/* None of them reached the key ring. */
	assert_int_equal(ring.calls, 0);
	refused_free(forge("{\"alg\":\"ES256\",\"kid\":\"k9\",\"typ\":\"JWT\"}",
	                 p, key1),
	    "unknown kid \"k9\"");
	assert_int_equal(ring.calls, 1);
	/* 64 characters is the longest kid. */
	ring.kid[0] =
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
	snprintf(hdr, sizeof hdr,
	    "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"JWT\"}", ring.kid[0]);
	tok = forge(hdr, p, key1);
	accepted(tok);
	free(tok);
	free(p);
	json_decref(pay);
}

static void
test_token_header_strict(void **state)
{
	static const struct {
		const char *hdr, *why;
	} cases[] = {
	    {"{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"JWT\",\"crit\":"
	     "\"exp\"}",
	        "unknown parameter \"crit\""},
	    {"{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"JWT\",\"crit\":["
	     "\"x\"]}",
	        "nested or wider"},
	    {"{\"alg\":\"ES256\",\"kid\":\"k1\",\"jku\":\"https://evil\"}",
	        "unknown parameter \"jku\""},
	    {"{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"jwt\"}",
	        "typ \"jwt\" is not JWT"},
	    {"{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"at+jwt\"}",
	        "is not JWT"},
	    {"[\"ES256\",\"k1\"]", "not a JSON object"},
	    {"\"ES256\"", "header: not valid JSON"},
	    {"{\"alg\":\"ES256\",\"kid\":\"k1\"", "not valid JSON"},
	    {"{\"alg\":\"ES256\",\"kid\":\"k1\"} ", NULL},
	    {"{\"alg\":\"ES256\",\"kid\":\"k1\"}x", "not valid JSON"},
	    {"{\"alg\":\"ES256\",\"alg\":\"none\",\"kid\":\"k1\"}",
	        "a key appears twice"},
	    {"{\"alg\":\"ES256\",\"kid\":\"k1\",\"kid\":\"k2\"}",
	        "a key appears twice"},
	    {"{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"JWT\",\"typ\":"
	     "\"JWT\"}",
	        "a key appears twice"},
	    {"{\"alg\":\"ES256\",\"kid\":\"k1\",\"x\":{}}", "nested or wider"},
	    {"{\"alg\":\"ES256\",\"kid\":\"k1\",\"\\u0000\":1}", "not valid"},
	    {"{\"alg\":\"ES256\",\"kid\":\"k1\"\xff}", "not valid JSON"},
	};
	json_t *pay = claims_json();
	char *p = json_dumps(pay, JSON_COMPACT), *tok;

	(void)state;
	ring_reset();
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		tok = forge(cases[i].hdr, p, key1);
		if (cases[i].why == NULL)
			accepted(tok); /* JSON whitespace is JSON */
		else
			refused(tok, cases[i].why);
		free(tok);
	}
	/* typ is optional; the order of members is free. */
	tok = forge("{\"kid\":\"k1\",\"alg\":\"ES256\"}", p, key1);
	accepted(tok);
	free(tok);
	free(p);
	json_decref(pay);
}

static void
test_token_lookup_errors_passed_on(void **state)
{
	struct kwd_token_claims c = good_claims(), got;
	struct kwd_token_verify_opts o = good_opts();
	char *tok;

	(void)state;
	ring_reset();
	tok = issue(&c, "k1", key1);
	ring.fail = KW_ERR_UNAVAILABLE;
	assert_int_equal(verify_o(tok, &o, &got), KW_ERR_UNAVAILABLE);
	assert_non_null(strstr(last_err, "lookup"));
	ring.fail = KW_ERR_NOT_FOUND;
	refused(tok, "unknown kid");
	ring.fail = 0;
	/* A ring that swapped keys: the signature is what counts. */
	ring.key[0] = key2;
	refused(tok, "does not verify");
	kwd_token_free(tok);
}

static void
test_token_every_bit_flip_refused(void **state)
{
	struct kwd_token_claims c = good_claims();
	char *tok, *bad;
	size_t len, nflips = 0;

	(void)state;
	ring_reset();
	strcpy(c.cnf, "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU");
	tok = issue(&c, "k1", key1);
	len = strlen(tok);
	bad = malloc(len + 1);
	assert_non_null(bad);
	for (size_t i = 0; i < len; i++)
		for (int b = 0; b < 8; b++) {
			struct kwd_token_verify_opts o = good_opts();

			o.cert_thumbprint = c.cnf;
			memcpy(bad, tok, len + 1);
			bad[i] ^= (char)(1 << b);
			refused_o(bad, len, &o, NULL);
			nflips++;
		}
	assert_int_equal(nflips, 8 * len);
	free(bad);
	kwd_token_free(tok);
}

static void
test_token_every_truncation_refused(void **state)
{
	struct kwd_token_claims c = good_claims();
	struct kwd_token_verify_opts o = good_opts();
	char *tok, *longer;
	size_t len;

	(void)state;
	ring_reset();
	tok = issue(&c, "k1", key1);
	len = strlen(tok);
	for (size_t l = 0; l < len; l++)
		refused_o(tok, l, &o, NULL);
	/* And from the front. */
	for (size_t l = 1; l < len; l++)
		refused_o(tok + l, len - l, &o, NULL);
	/* Extended by one character or one dot. */
	longer = malloc(len + 3);
	assert_non_null(longer);
	snprintf(longer, len + 3, "%sA", tok);
	refused(longer, "signature: 65 bytes, not 64");
	snprintf(longer, len + 3, "%sAA", tok);
	refused(longer, "signature: 66 bytes, not 64");
	snprintf(longer, len + 3, "%s.", tok);
	refused(longer, "more than three parts");
	free(longer);
	kwd_token_free(tok);
}

/* x = n + d (d small, may be negative), 32 bytes big-endian. */
static void
n_plus(int d, unsigned char out[32])
{
	BIGNUM *n = BN_new();
	EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);

	assert_non_null(n);
	assert_non_null(g);
	assert_int_equal(BN_copy(n, EC_GROUP_get0_order(g)) != NULL, 1);
	if (d >= 0)
		assert_int_equal(BN_add_word(n, (BN_ULONG)d), 1);
	else
		assert_int_equal(BN_sub_word(n, (BN_ULONG)-d), 1);
	assert_int_equal(BN_bn2binpad(n, out, 32), 32);
	BN_free(n);
	EC_GROUP_free(g);
}

static void
test_token_signature_scalars_checked(void **state)
{
	struct kwd_token_claims c = good_claims();
	unsigned char good[64], sig[64], n[32], n1[32], nm1[32];
	char *tok, *bad;
	BIGNUM *s, *ns;

	(void)state;
	ring_reset();
	tok = issue(&c, "k1", key1);
	sig_of(tok, good);
	n_plus(0, n);
	n_plus(1, n1);
	n_plus(-1, nm1);
	static const struct {
		int which; /* 0: r, 1: s */
		int val; /* 0: zero, 1: n, 2: n + 1, 3: all ones */
		const char *why;
	} cases[] = {
	    {0, 0, "r is not in [1, n-1]"},
	    {1, 0, "s is not in [1, n-1]"},
	    {0, 1, "r is not in [1, n-1]"},
	    {1, 1, "s is not in [1, n-1]"},
	    {0, 2, "r is not in [1, n-1]"},
	    {1, 2, "s is not in [1, n-1]"},
	    {0, 3, "r is not in [1, n-1]"},
	    {1, 3, "s is not in [1, n-1]"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		unsigned char *x = sig + 32 * cases[i].which;

		memcpy(sig, good, 64);
		if (cases[i].val == 0)
			memset(x, 0, 32);
		else if (cases[i].val == 1)
			memcpy(x, n, 32);
		else if (cases[i].val == 2)
			memcpy(x, n1, 32);
		else
			memset(x, 0xff, 32);
		refused_free(with_sig(tok, sig), cases[i].why);
	}
	/* r = s = 0 (CVE-2022-21449). */
	memset(sig, 0, 64);
	refused_free(with_sig(tok, sig), "r is not in [1, n-1]");
	/* n - 1 is in range and simply does not verify. */
	memcpy(sig, good, 64);
	memcpy(sig + 32, nm1, 32);
	refused_free(with_sig(tok, sig), "does not verify");
	memcpy(sig, nm1, 32);
	refused_free(with_sig(tok, sig), "does not verify");

	/* (r, n - s) is the other valid signature of the same input: JWS
	 * does not ask for low s, and PyJWT and HSMs make both halves, so
	 * it is accepted (the jti, not the signature, names a token). */
	s = BN_bin2bn(good + 32, 32, NULL);
	ns = BN_bin2bn(n, 32, NULL);
	assert_non_null(s);
	assert_non_null(ns);
	assert_int_equal(BN_sub(ns, ns, s), 1);
	memcpy(sig, good, 32);
	assert_int_equal(BN_bn2binpad(ns, sig + 32, 32), 32);
	bad = with_sig(tok, sig);
	accepted(bad);
	free(bad);
	BN_free(s);
	BN_free(ns);
	kwd_token_free(tok);
}

static void
test_token_times_checked(void **state)
{
	struct kwd_token_claims c = good_claims();
	struct kwd_token_verify_opts o = good_opts();
	char *tok;

	(void)state;
	ring_reset();
	c.iat = NOW;
	c.nbf = NOW + 100;
	c.exp = NOW + 1000;
	tok = issue(&c, "k1", key1);
	/* nbf - leeway <= now < exp + leeway, edges included/excluded. */
	o.leeway = 5;
	o.now = NOW + 100 - 5;
	accepted_o(tok, &o);
	o.now = NOW + 100 - 6;
	refused_o(tok, strlen(tok), &o, "not valid for another 6 s");
	o.now = NOW + 1000 + 5 - 1;
	accepted_o(tok, &o);
	o.now = NOW + 1000 + 5;
	refused_o(tok, strlen(tok), &o, "expired 5 s ago");
	o.leeway = 0;
	o.now = NOW + 100;
	accepted_o(tok, &o);
	o.now = NOW + 99;
	refused_o(tok, strlen(tok), &o, "not valid for another");
	o.now = NOW + 999;
	accepted_o(tok, &o);
	o.now = NOW + 1000;
	refused_o(tok, strlen(tok), &o, "expired");
	o.leeway = 30;
	o.now = NOW + 1029;
	accepted_o(tok, &o);
	o.now = NOW + 1030;
	refused_o(tok, strlen(tok), &o, "expired");
	/* Lifetime exp - iat = 1000: a max_ttl of 999 refuses it. */
	o = good_opts();
	o.now = NOW + 200;
	o.max_ttl = 1000;
	accepted_o(tok, &o);
	o.max_ttl = 999;
	refused_o(tok, strlen(tok), &o, "lifetime 1000 s over the maximum");
	/* iat in the future beyond the leeway. */
	o = good_opts();
	o.leeway = 5;
	o.now = NOW - 5;
	refused_o(tok, strlen(tok), &o, "not valid for another");
	kwd_token_free(tok);
	c.iat = NOW + 6;
	c.nbf = NOW;
	c.exp = NOW + 100;
	tok = issue(&c, "k1", key1);
	o.now = NOW;
	refused_o(tok, strlen(tok), &o, "issued 6 s in the future");
	o.now = NOW + 1;
	accepted_o(tok, &o);
	kwd_token_free(tok);
}

static void
test_token_iss_aud_checked(void **state)
{
	struct kwd_token_claims c = good_claims();
	struct kwd_token_verify_opts o = good_opts();
	json_t *pay;
	char *tok;

	(void)state;
	ring_reset();
	tok = issue(&c, "k1", key1);
	o.audience = "api.keyward.test2";
	refused_o(tok, strlen(tok), &o, "aud \"api.keyward.test\" is not");
	o = good_opts();
	o.audience = "API.keyward.test";
	refused_o(tok, strlen(tok), &o, "is not this audience");
	o = good_opts();
	o.issuer = "https://keyward.test/";
	refused_o(tok, strlen(tok), &o, "is not the expected issuer");
	kwd_token_free(tok);
	/* An array of audiences, even holding ours, is refused. */
	pay = claims_json();
	json_object_set_new(pay, "aud", json_pack("[s]", AUD));
	refused_free(forge_json(HDR_K1, pay), "aud is not a string");
}

static void
test_token_claims_strict(void **state)
{
	static const char *const required[] = {"iss", "sub", "aud", "iat",
	    "nbf", "exp", "jti", "scope"};
	static const struct {
		const char *claim, *value, *why;
	} bad[] = {
	    {"iat", "\"1699999990\"", "iat is not an integer"},
	    {"iat", "1699999990.0", "iat is not an integer"},
	    {"nbf", "1.69999999e9", "nbf is not an integer"},
	    {"exp", "true", "exp is not an integer"},
	    {"exp", "null", "exp is not an integer"},
	    {"exp", "-1", "exp is not an integer"},
	    {"exp", "253402300800", "exp is not an integer"},
	    {"exp", "99999999999999999999999", "not valid JSON"},
	    {"iss", "1", "iss is not a string"},
	    {"sub", "{}", "sub is not a string"},
	    {"sub", "\"\"", "sub is not 1 to"},
	    {"sub", "\"a\\nb\"", "sub is not 1 to"},
	    {"sub", "\"caf\\u00e9\"", "sub is not 1 to"},
	    {"sub", "\"a\\u0000b\"", "not valid JSON"},
	    {"jti", "\"short\"", "jti is not 16 to 64"},
	    {"jti", "\"q7Hk2v/Xw+9aLmN3pR5sTg\"", "jti is not 16 to 64"},
	    {"jti", "123456789012345678", "jti is not a string"},
	    {"scope", "[\"a\",\"b\"]", "scope is not a string"},
	    {"scope", "\"\"", "scope is not 1 to 32"},
	    {"cnf", "\"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU\"",
	        "cnf is not"},
	    {"cnf",
	        "{\"x5t#S256\":\"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU\","
	        "\"jkt\":\"x\"}",
	        "cnf is not"},
	    {"cnf", "{\"x5t\":\"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU\"}",
	        "cnf is not"},
	    {"cnf",
	        "{\"x5t#S256\":\"47DEQpj8HBSa+/"
	        "TImW-5JCeuQeRkm5NMpJWZG3hSuFU\"}",
	        "cnf x5t#S256 is not"},
	    {"cnf",
	        "{\"x5t#S256\":\"47DEQpj8HBSa-_TImW-"
	        "5JCeuQeRkm5NMpJWZG3hSuFV\"}",
	        "cnf x5t#S256 is not"},
	    {"cnf", "{}", "cnf is not"},
	    {"admin", "true", "unknown claim \"admin\""},
	    {"act", "{\"sub\":\"x\"}", "unknown claim \"act\""},
	};
	char buf[512], *p, *tok;
	json_t *pay;

	(void)state;
	ring_reset();
	for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
		char why[32];

		pay = claims_json();
		assert_int_equal(json_object_del(pay, required[i]), 0);
		snprintf(why, sizeof why, "payload: no %s", required[i]);
		refused_free(forge_json(HDR_K1, pay), why);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		/* The good claims, one of them replaced (or one added). */
		pay = claims_json();
		json_object_del(pay, bad[i].claim);
		p = json_dumps(pay, JSON_COMPACT);
		assert_non_null(p);
		snprintf(buf, sizeof buf, "{\"%s\":%s,%s", bad[i].claim,
		    bad[i].value, p + 1);
		tok = forge(HDR_K1, buf, key1);
		refused_free(tok, bad[i].why);
		free(p);
		json_decref(pay);
	}
	/* Times in the wrong order. */
	pay = claims_json();
	json_object_set_new(pay, "exp", json_integer(NOW - 10));
	refused_free(forge_json(HDR_K1, pay), "exp is not after iat and nbf");
	pay = claims_json();
	json_object_set_new(pay, "nbf", json_integer(NOW + 600));
	refused_free(forge_json(HDR_K1, pay), "exp is not after iat and nbf");
	/* The payload must be an object. */
	refused_free(forge(HDR_K1, "[1,2]", key1),
	    "payload: not a JSON object");
	refused_free(forge(HDR_K1, "\"x\"", key1), "payload: not valid JSON");
	refused_free(forge(HDR_K1, "{", key1), "payload: not valid JSON");
	refused_free(forge(HDR_K1, "{}", key1), "payload: no iss");
}

static void
test_token_scope_syntax(void **state)
{
	static const char *const good[] = {
	    "a",
	    "model:llama-70b:infer",
	    "datasets/imagenet-2026:read secrets.read admin:*",
	    "a b c",
	};
	static const char *const bad[] = {
	    "",
	    " a",
	    "a ",
	    "a  b",
	    "a\tb",
	    "Model:read",
	    "a b a",
	    "caf\xc3\xa9",
	    "a,b",
	    "a\"b",
	    "a\\b",
	    "a\nb",
	};
	char big[KWD_TOKEN_SCOPE_LEN + 10], one[KWD_TOKEN_SCOPE_MAX + 2];
	struct kwd_token_claims c;
	json_t *pay;
	char *jws;
	size_t off = 0;

	(void)state;
	ring_reset();
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		assert_true(kwd_token_scope_valid(good[i]));
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_false(kwd_token_scope_valid(bad[i]));
		c = good_claims();
		strcpy(c.scope, bad[i]);
		assert_int_equal(kwd_token_build(&c, "k1", soft_sign, key1,
		                     &jws),
		    KW_ERR_INVALID);
		pay = claims_json();
		assert_int_equal(json_object_set_new(pay, "scope",
		                     json_string(bad[i])),
		    0);
		refused_free(forge_json(HDR_K1, pay), "scope is not");
	}
	assert_false(kwd_token_scope_valid(NULL));
	/* 128 bytes is the longest scope; 32 the most scopes. */
	memset(one, 'a', KWD_TOKEN_SCOPE_MAX);
	one[KWD_TOKEN_SCOPE_MAX] = '\0';
	assert_true(kwd_token_scope_valid(one));
	one[KWD_TOKEN_SCOPE_MAX] = 'a';
	one[KWD_TOKEN_SCOPE_MAX + 1] = '\0';
	assert_false(kwd_token_scope_valid(one));
	big_scope(big);
	off = strlen(big);
	assert_int_equal(off, KWD_TOKEN_SCOPE_LEN);
	assert_true(kwd_token_scope_valid(big));
	/* The largest scope fits in a token. */
	c = good_claims();
	strcpy(c.scope, big);
	jws = issue(&c, "k1", key1);
	accepted(jws);
	kwd_token_free(jws);
	big[off++] = ' ';
	big[off++] = 'z';
	big[off] = '\0';
	assert_false(kwd_token_scope_valid(big));
}

static void
test_token_scopes_subset(void **state)
{
	const char *const allowed[] = {"model:llama-70b:*", "datasets/*:read",
	    "secrets.read"};

	(void)state;
	assert_true(
	    kwd_token_scopes_subset("model:llama-70b:infer", allowed, 3));
	assert_true(kwd_token_scopes_subset(
	    "model:llama-70b:infer datasets/imagenet:read secrets.read",
	    allowed, 3));
	assert_true(kwd_token_scopes_subset("model:llama-70b:*", allowed, 3));
	assert_false(
	    kwd_token_scopes_subset("model:llama-8b:infer", allowed, 3));
	assert_false(
	    kwd_token_scopes_subset("model:llama-70b:infer secrets.write",
	        allowed, 3));
	assert_false(kwd_token_scopes_subset("datasets/x:write", allowed, 3));
	/* A requested glob only if all it stands for is allowed. */
	assert_false(kwd_token_scopes_subset("model:*", allowed, 3));
	assert_false(kwd_token_scopes_subset("*", allowed, 3));
	assert_false(kwd_token_scopes_subset("secrets.*", allowed, 3));
	assert_true(kwd_token_scopes_subset("datasets/a*:read", allowed, 3));
	/* Invalid requests, empty allow lists. */
	assert_false(kwd_token_scopes_subset("", allowed, 3));
	assert_false(
	    kwd_token_scopes_subset("secrets.read secrets.read", allowed, 3));
	assert_false(kwd_token_scopes_subset("secrets.read", allowed, 0));
	assert_false(kwd_token_scopes_subset("secrets.read", NULL, 1));
	assert_false(kwd_token_scopes_subset(NULL, allowed, 3));
}

static void
test_token_base64_strict(void **state)
{
	struct kwd_token_claims c = good_claims();
	char *tok, *parts[3], *dot1, *dot2;
	size_t plen[3];
	const char *why[3] = {"header: not canonical", "payload: not canonical",
	    "signature: not canonical"};

	(void)state;
	ring_reset();
	/* A jti whose length leaves the payload's base64 with leftover
	 * bits, so that every part has some to tamper with. */
	for (;;) {
		tok = issue(&c, "k1", key1);
		dot1 = strchr(tok, '.');
		dot2 = strrchr(tok, '.');
		if ((dot2 - dot1 - 1) % 4 != 0)
			break;
		kwd_token_free(tok);
		strcat(c.jti, "x");
	}
	parts[0] = strndup(tok, (size_t)(dot1 - tok));
	parts[1] = strndup(dot1 + 1, (size_t)(dot2 - dot1 - 1));
	parts[2] = strdup(dot2 + 1);
	kwd_token_free(tok);
	for (int i = 0; i < 3; i++) {
		assert_non_null(parts[i]);
		plen[i] = strlen(parts[i]);
		/* Every part here has leftover bits to tamper with. */
		assert_int_not_equal(plen[i] % 4, 0);
	}
	for (int i = 0; i < 3; i++) {
		static const char *const inserts[] = {"=", "==", " ", "\n",
		    "\t", "+", "/", "\r\n", "%3D"};
		char *p[3];

		/* Characters outside the alphabet, anywhere in the part. */
		for (size_t k = 0; k < sizeof inserts / sizeof inserts[0];
		     k++) {
			for (int at = 0; at < 2; at++) {
				size_t pos = at ? plen[i] : plen[i] / 2;
				char *m = malloc(plen[i] + 8);

				assert_non_null(m);
				snprintf(m, plen[i] + 8, "%.*s%s%s", (int)pos,
				    parts[i], inserts[k], parts[i] + pos);
				p[0] = parts[0];
				p[1] = parts[1];
				p[2] = parts[2];
				p[i] = m;
				if (i < 2)
					tok = forge_parts(p[0], p[1], key1);
				else {
					tok = malloc(strlen(p[0]) +
					    strlen(p[1]) + strlen(p[2]) + 3);
					sprintf(tok, "%s.%s.%s", p[0], p[1],
					    p[2]);
				}
				refused_free(tok, "not base64url");
				free(m);
			}
		}
		/* The standard alphabet in place of the URL-safe one. */
		p[0] = parts[0];
		p[1] = parts[1];
		p[2] = parts[2];
		{
			char *m = strdup(parts[i]);

			assert_non_null(m);
			m[0] = '+';
			m[1] = '/';
			p[i] = m;
			if (i < 2)
				tok = forge_parts(p[0], p[1], key1);
			else {
				tok = malloc(strlen(p[0]) + strlen(p[1]) +
				    strlen(p[2]) + 3);
				sprintf(tok, "%s.%s.%s", p[0], p[1], p[2]);
			}
			refused_free(tok, "byte 0x2b at offset");
			free(m);
		}
		/*
		 * Non-zero unused trailing bits: a lenient decoder reads the
		 * same bytes, so the signature still verifies over what a
		 * lenient verifier would see; we refuse the spelling.
		 */
		for (int v = 1; v < (plen[i] % 4 == 2 ? 16 : 4); v++) {
			char *m = strdup(parts[i]), *q;
			int val;

			assert_non_null(m);
			q = m + plen[i] - 1;
			val = *q >= 'A' && *q <= 'Z' ? *q - 'A'
			    : *q >= 'a' && *q <= 'z' ? *q - 'a' + 26
			    : *q >= '0' && *q <= '9' ? *q - '0' + 52
			    : *q == '-'              ? 62
			                             : 63;
			*q = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvw"
			     "xyz"
			     "0123456789-_"[val | v];
			p[0] = parts[0];
			p[1] = parts[1];
			p[2] = parts[2];
			p[i] = m;
			if (i < 2)
				tok = forge_parts(p[0], p[1], key1);
			else {
				tok = malloc(strlen(p[0]) + strlen(p[1]) +
				    strlen(p[2]) + 3);
				sprintf(tok, "%s.%s.%s", p[0], p[1], p[2]);
			}
			refused_free(tok, why[i]);
			free(m);
		}
	}
	for (int i = 0; i < 3; i++)
		free(parts[i]);
}

static void
test_token_duplicate_keys_refused(void **state)
{
	json_t *pay = claims_json();
	char *p = json_dumps(pay, JSON_COMPACT), buf[1024];

	(void)state;
	ring_reset();
	/* In the payload: a second sub, aud, or exp (first or last wins in
	 * other readers). */
	snprintf(buf, sizeof buf, "{\"sub\":\"admin\",%s", p + 1);
	refused_free(forge(HDR_K1, buf, key1), "payload: a key appears twice");
	snprintf(buf, sizeof buf, "%.*s,\"exp\":9999999999}",
	    (int)strlen(p) - 1, p);
	refused_free(forge(HDR_K1, buf, key1), "payload: a key appears twice");
	/* In cnf. */
	snprintf(buf, sizeof buf,
	    "{\"cnf\":{\"x5t#S256\":\"47DEQpj8HBSa-_TImW-"
	    "5JCeuQeRkm5NMpJWZG3hSuFU\","
	    "\"x5t#S256\":\"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU\"},%s",
	    p + 1);
	refused_free(forge(HDR_K1, buf, key1), "payload: a key appears twice");
	/* In the header. */
	refused_free(forge("{\"alg\":\"ES256\",\"kid\":\"k2\",\"kid\":\"k1\"}",
	                 p, key1),
	    "header: a key appears twice");
	free(p);
	json_decref(pay);
}

static void
test_token_depth_and_width_bombs_refused(void **state)
{
	json_t *pay = claims_json();
	char *p = json_dumps(pay, JSON_COMPACT), *buf, *tok;
	size_t n = 0;

	(void)state;
	ring_reset();
	buf = malloc(8192);
	assert_non_null(buf);
	/* A claim nested 1500 deep (refused before jansson recurses). */
	n = (size_t)snprintf(buf, 8192, "{\"x\":");
	for (int i = 0; i < 1500; i++)
		buf[n++] = '[';
	for (int i = 0; i < 1500; i++)
		buf[n++] = ']';
	snprintf(buf + n, 8192 - n, ",%s", p + 1);
	refused_free(forge(HDR_K1, buf, key1), "payload: nested deeper");
	/* Three levels of objects, under cnf. */
	snprintf(buf, 8192, "{\"cnf\":{\"x5t#S256\":{\"a\":{}}},%s", p + 1);
	refused_free(forge(HDR_K1, buf, key1), "payload: nested deeper");
	/* Wide: a hundred members. */
	n = (size_t)snprintf(buf, 8192, "{");
	for (int i = 0; i < 100; i++)
		n += (size_t)snprintf(buf + n, 8192 - n, "\"%d\":0,", i);
	snprintf(buf + n, 8192 - n, "%s", p + 1);
	refused_free(forge(HDR_K1, buf, key1), "payload: nested deeper");
	/* In the header. */
	snprintf(buf, 8192,
	    "{\"alg\":\"ES256\",\"kid\":\"k1\",\"x\":[[[[[[]]]]]]}");
	refused_free(forge(buf, p, key1), "header: nested or wider");
	/* Brackets and commas inside strings are data. */
	json_object_set_new(pay, "sub",
	    json_string("[[[[{{{{,,,,,,,,,,,,,,,,,,\\\"[[[["));
	tok = forge_json(HDR_K1, json_incref(pay));
	accepted(tok);
	free(tok);
	free(buf);
	free(p);
	json_decref(pay);
}

static void
test_token_length_capped(void **state)
{
	struct kwd_token_claims c = good_claims();
	struct kwd_token_verify_opts o = good_opts();
	char *tok, *big;
	size_t len;

	(void)state;
	ring_reset();
	tok = issue(&c, "k1", key1);
	len = strlen(tok);
	/* 8193 bytes: refused by length alone, whatever they hold. */
	big = malloc(KWD_TOKEN_MAX + 2);
	assert_non_null(big);
	memset(big, 'A', KWD_TOKEN_MAX + 1);
	memcpy(big, tok, len);
	big[KWD_TOKEN_MAX + 1] = '\0';
	refused(big, "token: 8193 bytes, not 1 to 8192");
	refused_o(big, 0, &o, "token: 0 bytes");
	/* A header over 256 bytes, signed: refused before JSON. */
	memset(big, 'A', 400);
	big[400] = '\0';
	free(tok);
	tok = forge_parts(big, "e30", key1);
	refused(tok, "header: not canonical base64url of at most 256 bytes");
	free(tok);
	free(big);
}

static void
test_token_b64url_codec(void **state)
{
	unsigned char in[100], out[100];
	char mine[200], ref[200];
	size_t n;
	static const char *const bad[] = {"A", "AAAAA", "AB", "AAB",
	    "AA==", "AA=", "A+", "A/", "AA AA", "AA\n", "QUJD\0", "_w==", "_x"};

	(void)state;
	for (size_t len = 0; len <= sizeof in; len++) {
		randombytes_buf(in, len);
		assert_int_equal(kwd_token_b64url_encode(in, len, mine,
		                     sizeof mine),
		    KW_OK);
		sodium_bin2base64(ref, sizeof ref, in, len,
		    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
		assert_string_equal(mine, ref);
		assert_int_equal(kwd_token_b64url_decode(mine, strlen(mine),
		                     out, sizeof out, &n),
		    KW_OK);
		assert_int_equal(n, len);
		assert_memory_equal(out, in, len);
		/* Exactly the room it needs, not a byte less. */
		if (len > 0) {
			assert_int_equal(kwd_token_b64url_decode(mine,
			                     strlen(mine), out, len - 1, &n),
			    KW_ERR_TOO_LARGE);
			assert_int_equal(kwd_token_b64url_encode(in, len, mine,
			                     strlen(ref)),
			    KW_ERR_TOO_LARGE);
		}
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(kwd_token_b64url_decode(bad[i],
		                     strlen(bad[i]) + (bad[i][0] == 'Q'), out,
		                     sizeof out, &n),
		    KW_ERR_INVALID);
	/* "_w" is 0xff; "_x" has a stray trailing bit. */
	assert_int_equal(kwd_token_b64url_decode("_w", 2, out, sizeof out, &n),
	    KW_OK);
	assert_int_equal(n, 1);
	assert_int_equal(out[0], 0xff);
	assert_int_equal(kwd_token_b64url_decode("", 0, out, 0, &n), KW_OK);
	assert_int_equal(n, 0);
}

static void
test_token_build_refuses(void **state)
{
	struct kwd_token_claims c = good_claims();
	int down = KW_ERR_HSM_DOWN;
	char *jws = (char *)"unchanged";

	(void)state;
	ring_reset();
	/* kid syntax. */
	assert_int_equal(kwd_token_build(&c, "../x", soft_sign, key1, &jws),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_token_build(&c, "", soft_sign, key1, &jws),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_token_build(&c, NULL, soft_sign, key1, &jws),
	    KW_ERR_INVALID);
	/* Claims that the verifier would refuse. */
	c.exp = c.iat;
	assert_int_equal(kwd_token_build(&c, "k1", soft_sign, key1, &jws),
	    KW_ERR_INVALID);
	c = good_claims();
	c.exp = c.iat + KWD_TOKEN_TTL_MAX + 1;
	assert_int_equal(kwd_token_build(&c, "k1", soft_sign, key1, &jws),
	    KW_ERR_INVALID);
	c = good_claims();
	strcpy(c.jti, "tooshort");
	assert_int_equal(kwd_token_build(&c, "k1", soft_sign, key1, &jws),
	    KW_ERR_INVALID);
	c = good_claims();
	strcpy(c.sub, "a\"b\nc");
	assert_int_equal(kwd_token_build(&c, "k1", soft_sign, key1, &jws),
	    KW_ERR_INVALID);
	c = good_claims();
	strcpy(c.cnf, "not-a-thumbprint");
	assert_int_equal(kwd_token_build(&c, "k1", soft_sign, key1, &jws),
	    KW_ERR_INVALID);
	c = good_claims();
	memset(c.iss, 'a', sizeof c.iss); /* not NUL-terminated */
	assert_int_equal(kwd_token_build(&c, "k1", soft_sign, key1, &jws),
	    KW_ERR_INVALID);
	c = good_claims();
	c.iat = -1;
	assert_int_equal(kwd_token_build(&c, "k1", soft_sign, key1, &jws),
	    KW_ERR_INVALID);
	/* The signer's error, unchanged: no fallback. */
	c = good_claims();
	assert_int_equal(kwd_token_build(&c, "k1", failing_sign, &down, &jws),
	    KW_ERR_HSM_DOWN);
	/* A signer returning r = 0 yields no token. */
	assert_int_equal(kwd_token_build(&c, "k1", zero_r_sign, key1, &jws),
	    KW_ERR_CRYPTO);
	assert_string_equal(jws, "unchanged");
}

/*
 * The largest claims (every string at its longest, made of the bytes
 * JSON escapes, 32 scopes of 128 bytes, a 64-byte jti and kid, a binding)
 * still make a token within KWD_TOKEN_MAX, which the verifier accepts:
 * nothing that can be issued is refused for its size.
 */
static void
test_token_largest_claims_fit(void **state)
{
	struct kwd_token_claims c = good_claims(), got;
	struct kwd_token_verify_opts o = good_opts();
	char kid[KWD_TOKEN_KID_MAX + 1];
	char *jws = NULL;

	(void)state;
	ring_reset();
	memset(kid, 'K', KWD_TOKEN_KID_MAX);
	kid[KWD_TOKEN_KID_MAX] = '\0';
	ring.kid[0] = kid;
	memset(c.iss, '"', KWD_TOKEN_STR_MAX);
	c.iss[KWD_TOKEN_STR_MAX] = '\0';
	memset(c.sub, '\\', KWD_TOKEN_STR_MAX);
	c.sub[KWD_TOKEN_STR_MAX] = '\0';
	memset(c.aud, '"', KWD_TOKEN_STR_MAX);
	c.aud[KWD_TOKEN_STR_MAX] = '\0';
	big_scope(c.scope);
	memset(c.jti, 'J', KWD_TOKEN_JTI_MAX);
	c.jti[KWD_TOKEN_JTI_MAX] = '\0';
	strcpy(c.cnf, "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU");
	c.iat = c.nbf = KWD_TOKEN_TIME_MAX - KWD_TOKEN_TTL_MAX;
	c.exp = KWD_TOKEN_TIME_MAX;
	assert_int_equal(kwd_token_build(&c, kid, soft_sign, key1, &jws),
	    KW_OK);
	assert_true(strlen(jws) <= KWD_TOKEN_MAX);
	assert_true(strlen(jws) > KWD_TOKEN_MAX - 200);
	o.issuer = c.iss;
	o.audience = c.aud;
	o.now = c.iat;
	o.max_ttl = KWD_TOKEN_TTL_MAX;
	o.cert_thumbprint = c.cnf;
	assert_int_equal(verify_o(jws, &o, &got), KW_OK);
	assert_string_equal(got.sub, c.sub);
	assert_string_equal(got.scope, c.scope);
	kwd_token_free(jws);
}

static void
test_token_jwk_and_kid(void **state)
{
	char kid1[KWD_TOKEN_THUMB_LEN + 1], kid2[KWD_TOKEN_THUMB_LEN + 1];
	char again[KWD_TOKEN_THUMB_LEN + 1], canon[200], want[44];
	unsigned char md[32], *der = NULL;
	const unsigned char *p;
	EVP_PKEY *pub;
	json_t *jwk;
	int derlen;

	(void)state;
	assert_int_equal(kwd_token_kid(key1, kid1), KW_OK);
	assert_int_equal(kwd_token_kid(key2, kid2), KW_OK);
	assert_int_equal(strlen(kid1), 43);
	assert_string_not_equal(kid1, kid2);
	assert_int_equal(kwd_token_kid(key384, kid2), KW_ERR_INVALID);
	assert_int_equal(kwd_token_jwk(key384, NULL, &jwk), KW_ERR_INVALID);

	/* The public half alone, re-imported: the same kid. */
	derlen = i2d_PUBKEY(key1, &der);
	assert_true(derlen > 0);
	p = der;
	pub = d2i_PUBKEY(NULL, &p, derlen);
	assert_non_null(pub);
	assert_int_equal(kwd_token_kid(pub, again), KW_OK);
	assert_string_equal(again, kid1);

	/* The JWK, and RFC 7638 recomputed from its members. */
	assert_int_equal(kwd_token_jwk(pub, NULL, &jwk), KW_OK);
	assert_int_equal(json_object_size(jwk), 7);
	assert_string_equal(json_string_value(json_object_get(jwk, "kty")),
	    "EC");
	assert_string_equal(json_string_value(json_object_get(jwk, "crv")),
	    "P-256");
	assert_string_equal(json_string_value(json_object_get(jwk, "alg")),
	    "ES256");
	assert_string_equal(json_string_value(json_object_get(jwk, "use")),
	    "sig");
	assert_string_equal(json_string_value(json_object_get(jwk, "kid")),
	    kid1);
	assert_int_equal(strlen(json_string_value(json_object_get(jwk, "x"))),
	    43);
	snprintf(canon, sizeof canon,
	    "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
	    json_string_value(json_object_get(jwk, "x")),
	    json_string_value(json_object_get(jwk, "y")));
	crypto_hash_sha256(md, (unsigned char *)canon, strlen(canon));
	sodium_bin2base64(want, sizeof want, md, sizeof md,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	assert_string_equal(want, kid1);
	json_decref(jwk);
	assert_int_equal(kwd_token_jwk(pub, "signing-3", &jwk), KW_OK);
	assert_string_equal(json_string_value(json_object_get(jwk, "kid")),
	    "signing-3");
	json_decref(jwk);
	assert_int_equal(kwd_token_jwk(pub, "a/b", &jwk), KW_ERR_INVALID);
	EVP_PKEY_free(pub);
	OPENSSL_free(der);
}

static void
test_token_cert_thumbprint(void **state)
{
	unsigned char der[777], md[32];
	char t[KWD_TOKEN_THUMB_LEN + 1], want[44];

	(void)state;
	randombytes_buf(der, sizeof der);
	assert_int_equal(kwd_token_cert_thumbprint(der, sizeof der, t), KW_OK);
	crypto_hash_sha256(md, der, sizeof der);
	sodium_bin2base64(want, sizeof want, md, sizeof md,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	assert_string_equal(t, want);
	assert_int_equal(kwd_token_cert_thumbprint(der, 0, t), KW_ERR_INVALID);
	assert_int_equal(kwd_token_cert_thumbprint(NULL, 1, t), KW_ERR_INVALID);
}

static void
test_token_bad_options_invalid(void **state)
{
	struct kwd_token_claims c = good_claims(), got;
	struct kwd_token_verify_opts o;
	char *tok;

	(void)state;
	ring_reset();
	tok = issue(&c, "k1", key1);
	o = good_opts();
	o.leeway = KWD_TOKEN_LEEWAY_MAX + 1;
	assert_int_equal(verify_o(tok, &o, &got), KW_ERR_INVALID);
	o = good_opts();
	o.leeway = -1;
	assert_int_equal(verify_o(tok, &o, &got), KW_ERR_INVALID);
	o = good_opts();
	o.max_ttl = 0;
	assert_int_equal(verify_o(tok, &o, &got), KW_ERR_INVALID);
	o = good_opts();
	o.max_ttl = KWD_TOKEN_TTL_MAX + 1;
	assert_int_equal(verify_o(tok, &o, &got), KW_ERR_INVALID);
	o = good_opts();
	o.issuer = NULL;
	assert_int_equal(verify_o(tok, &o, &got), KW_ERR_INVALID);
	o = good_opts();
	o.audience = "";
	assert_int_equal(verify_o(tok, &o, &got), KW_ERR_INVALID);
	o = good_opts();
	o.cert_thumbprint = "short";
	assert_int_equal(verify_o(tok, &o, &got), KW_ERR_INVALID);
	o = good_opts();
	o.now = -1;
	assert_int_equal(verify_o(tok, &o, &got), KW_ERR_INVALID);
	o = good_opts();
	assert_int_equal(kwd_token_verify(tok, strlen(tok), &o, NULL, NULL,
	                     &got, NULL, 0),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_token_verify(NULL, 0, &o, lookup, &ring, &got,
	                     NULL, 0),
	    KW_ERR_INVALID);
	assert_int_equal(ring.calls, 0);
	accepted_o(tok, &o);
	kwd_token_free(tok);
}

/* The alphabet checks the front and the request validator share. */
static void
test_token_id_and_chars(void **state)
{
	(void)state;
	assert_true(kwd_token_id_valid("kBBNE8D14FZE7GONI8iUyg", 22));
	assert_true(kwd_token_id_valid("aaaaaaaaaaaaaaaa", 16));
	assert_false(kwd_token_id_valid("aaaaaaaaaaaaaaa", 15));
	assert_true(kwd_token_id_valid(
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	    64));
	assert_false(kwd_token_id_valid(
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	    65));
	assert_false(kwd_token_id_valid("aaaaaaaaaaaaaaa.", 16));
	assert_false(kwd_token_id_valid("aaaaaaaaaaaaaaa=", 16));
	assert_false(kwd_token_id_valid(NULL, 16));
	assert_true(kwd_token_chars_valid("eyJh.bc-_.Z09", 13));
	assert_true(kwd_token_chars_valid("", 0));
	assert_false(kwd_token_chars_valid("a b", 3));
	assert_false(kwd_token_chars_valid("a+b", 3));
	assert_false(kwd_token_chars_valid("a/b", 3));
	assert_false(kwd_token_chars_valid("ab=", 3));
	assert_false(kwd_token_chars_valid("a\0b", 3));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_token_roundtrip),
	    cmocka_unit_test(test_token_id_and_chars),
	    cmocka_unit_test(test_token_bound_to_certificate),
	    cmocka_unit_test(test_token_alg_other_than_es256_refused),
	    cmocka_unit_test(test_token_kid_refused),
	    cmocka_unit_test(test_token_header_strict),
	    cmocka_unit_test(test_token_lookup_errors_passed_on),
	    cmocka_unit_test(test_token_every_bit_flip_refused),
	    cmocka_unit_test(test_token_every_truncation_refused),
	    cmocka_unit_test(test_token_signature_scalars_checked),
	    cmocka_unit_test(test_token_times_checked),
	    cmocka_unit_test(test_token_iss_aud_checked),
	    cmocka_unit_test(test_token_claims_strict),
	    cmocka_unit_test(test_token_scope_syntax),
	    cmocka_unit_test(test_token_scopes_subset),
	    cmocka_unit_test(test_token_base64_strict),
	    cmocka_unit_test(test_token_duplicate_keys_refused),
	    cmocka_unit_test(test_token_depth_and_width_bombs_refused),
	    cmocka_unit_test(test_token_length_capped),
	    cmocka_unit_test(test_token_b64url_codec),
	    cmocka_unit_test(test_token_build_refuses),
	    cmocka_unit_test(test_token_largest_claims_fit),
	    cmocka_unit_test(test_token_jwk_and_kid),
	    cmocka_unit_test(test_token_cert_thumbprint),
	    cmocka_unit_test(test_token_bad_options_invalid),
	};
	int rv;

	if (sodium_init() < 0)
		return 1;
	key1 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	key2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	key384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	if (key1 == NULL || key2 == NULL || key384 == NULL)
		return 1;
	rv = cmocka_run_group_tests(tests, NULL, NULL);
	EVP_PKEY_free(key1);
	EVP_PKEY_free(key2);
	EVP_PKEY_free(key384);
	return rv;
}

/*
 * fuzz_token.c: libFuzzer target for kwd_token_verify(), with a fixed key,
 * clock, issuer, audience and client certificate (token_key.h).
 *
 * A mutated token almost never keeps a valid signature, so the claims
 * parser would stay out of reach; the input picks one of three modes:
 *
 *   '{' ...          JSON claims: signed under the fixed header and key by
 *                    the target, then verified (the claims parser, fuzzed)
 *   '#' HDR '\n' PAY a header and claims, both signed by the target
 *   anything else    a token, verified as it is
 *
 * Every accepted token must satisfy the checks' own promises (times,
 * syntax), and its claims, re-issued by kwd_token_build and verified
 * again, must come back equal: the issuer and the verifier agree.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "token.h"
#include "token_key.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static EVP_PKEY *key;
static char cert[KWD_TOKEN_THUMB_LEN + 1];

#define HEADER \
	"{\"alg\":\"ES256\",\"kid\":\"" TOKEN_FUZZ_KID "\",\"typ\":\"JWT\"}"

static int
soft_sign(const unsigned char digest[32], unsigned char sig[64], void *arg)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(arg, NULL);
	unsigned char der[80];
	const unsigned char *p = der;
	size_t derlen = sizeof der;
	ECDSA_SIG *es = NULL;
	int rv = KW_ERR_CRYPTO;

	if (ctx != NULL && EVP_PKEY_sign_init(ctx) == 1 &&
	    EVP_PKEY_sign(ctx, der, &derlen, digest, 32) == 1 &&
	    (es = d2i_ECDSA_SIG(NULL, &p, (long)derlen)) != NULL &&
	    BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32) == 32 &&
	    BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32) == 32)
		rv = KW_OK;
	ECDSA_SIG_free(es);
	EVP_PKEY_CTX_free(ctx);
	return rv;
}

static int
lookup(const char *kid, void *arg, EVP_PKEY **ret_key)
{
	(void)arg;
	if (strcmp(kid, TOKEN_FUZZ_KID) != 0)
		return KW_ERR_NOT_FOUND;
	EVP_PKEY_up_ref(key);
	*ret_key = key;
	return KW_OK;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	BIO *b;

	(void)argc;
	(void)argv;
	if (sodium_init() < 0)
		abort();
	b = BIO_new_mem_buf(token_fuzz_key_pem, -1);
	key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (key == NULL ||
	    kwd_token_cert_thumbprint((const unsigned char *)TOKEN_FUZZ_CERT,
	        strlen(TOKEN_FUZZ_CERT), cert) != KW_OK)
		abort();
	return 0;
}

/* base64url(hdr) "." base64url(pay) "." base64url(sig), into out. */
static size_t
sign_parts(const uint8_t *hdr, size_t hlen, const uint8_t *pay, size_t plen,
    char *out, size_t cap)
{
	unsigned char md[32], sig[64];
	size_t n;

	if (kwd_token_b64url_encode(hdr, hlen, out, cap) != KW_OK)
		return 0;
	n = strlen(out);
	out[n++] = '.';
	if (kwd_token_b64url_encode(pay, plen, out + n, cap - n) != KW_OK)
		return 0;
	n += strlen(out + n);
	crypto_hash_sha256(md, (unsigned char *)out, n);
	if (soft_sign(md, sig, key) != KW_OK)
		abort();
	out[n++] = '.';
	if (kwd_token_b64url_encode(sig, sizeof sig, out + n, cap - n) != KW_OK)
		return 0;
	return n + strlen(out + n);
}

static void
check(const struct kwd_token_claims *c, const struct kwd_token_verify_opts *o)
{
	struct kwd_token_claims again;
	char err[256], *jws = NULL;

	if (strcmp(c->kid, TOKEN_FUZZ_KID) != 0 ||
	    strcmp(c->iss, TOKEN_FUZZ_ISS) != 0 ||
	    strcmp(c->aud, TOKEN_FUZZ_AUD) != 0 ||
	    !kwd_token_scope_valid(c->scope) || c->exp <= c->iat ||
	    c->exp - c->iat > o->max_ttl || o->now >= c->exp + o->leeway ||
	    o->now < c->nbf - o->leeway || c->iat > o->now + o->leeway ||
	    (c->cnf[0] != '\0' && strcmp(c->cnf, cert) != 0)) {
		fprintf(stderr, "fuzz_token: accepted claims break a rule\n");
		abort();
	}
	if (kwd_token_build(c, c->kid, soft_sign, key, &jws) != KW_OK ||
	    kwd_token_verify(jws, strlen(jws), o, lookup, NULL, &again, err,
	        sizeof err) != KW_OK ||
	    strcmp(again.iss, c->iss) != 0 || strcmp(again.sub, c->sub) != 0 ||
	    strcmp(again.aud, c->aud) != 0 || again.iat != c->iat ||
	    again.nbf != c->nbf || again.exp != c->exp ||
	    strcmp(again.jti, c->jti) != 0 ||
	    strcmp(again.scope, c->scope) != 0 ||
	    strcmp(again.cnf, c->cnf) != 0 || strcmp(again.kid, c->kid) != 0) {
		fprintf(stderr, "fuzz_token: re-issued claims differ (%s)\n",
		    err);
		abort();
	}
	kwd_token_free(jws);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kwd_token_verify_opts o = {
	    .issuer = TOKEN_FUZZ_ISS,
	    .audience = TOKEN_FUZZ_AUD,
	    .now = TOKEN_FUZZ_NOW,
	    .leeway = 30,
	    .max_ttl = 86400,
	    .cert_thumbprint = cert,
	};
	struct kwd_token_claims c;
	char err[256], *buf;
	const char *tok = (const char *)data;
	size_t len = size, cap = 2 * size + 256;
	const uint8_t *nl;

	if (size > 4 * KWD_TOKEN_MAX)
		return 0;
	buf = malloc(cap);
	if (buf == NULL)
		return 0;
	if (size > 0 && data[0] == '{') {
		len = sign_parts((const uint8_t *)HEADER, strlen(HEADER), data,
		    size, buf, cap);
		tok = buf;
	} else if (size > 0 && data[0] == '#' &&
	    (nl = memchr(data, '\n', size)) != NULL) {
		len = sign_parts(data + 1, (size_t)(nl - data - 1), nl + 1,
		    size - (size_t)(nl + 1 - data), buf, cap);
		tok = buf;
	}
	if (kwd_token_verify(tok, len, &o, lookup, NULL, &c, err, sizeof err) ==
	    KW_OK)
		check(&c, &o);
	/* The same bytes without a certificate: never accepted if bound. */
	o.cert_thumbprint = NULL;
	if (kwd_token_verify(tok, len, &o, lookup, NULL, &c, err, sizeof err) ==
	        KW_OK &&
	    c.cnf[0] != '\0') {
		fprintf(stderr,
		    "fuzz_token: bound token without certificate\n");
		abort();
	}
	free(buf);
	return 0;
}

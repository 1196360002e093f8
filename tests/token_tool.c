/*
 * token_tool.c: a test helper around broker/token.c with a software P-256
 * key, for the interoperability test with PyJWT
 * (tests/integration/test_token_pyjwt.sh) and for the fuzz seed corpus.
 * Never installed: the broker signs only in the HSM.
 *
 *   token_tool keygen KEY.pem
 *       a new P-256 private key (PKCS#8 PEM, mode 0600)
 *   token_tool issue KEY.pem ISS SUB AUD SCOPE TTL [X5T_S256]
 *       prints a token (kid: the key's RFC 7638 thumbprint; iat = nbf =
 *       now, exp = now + TTL; bound to X5T_S256 if given), then on a
 *       second line the JWKS {"keys":[jwk]}
 *   token_tool verify KEY.pem ISS AUD MAX_TTL [X5T_S256] < TOKEN
 *       verifies the token on stdin (one line) now, leeway 5 s; prints its
 *       claims as JSON and exits 0, or "refused: REASON" and exits 1
 *   token_tool thumbprint CERT.pem
 *       prints the certificate's x5t#S256
 *   token_tool corpus DIR
 *       writes the seed corpus of tests/fuzz/fuzz_token.c into DIR
 *
 * Exit status 2: usage; 3: any other failure.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuzz/token_key.h"
#include "token.h"

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

struct one_key {
	const char *kid;
	EVP_PKEY *key;
};

static int
lookup(const char *kid, void *arg, EVP_PKEY **ret_key)
{
	struct one_key *k = arg;

	if (strcmp(kid, k->kid) != 0)
		return KW_ERR_NOT_FOUND;
	EVP_PKEY_up_ref(k->key);
	*ret_key = k->key;
	return KW_OK;
}

static EVP_PKEY *
load_key(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *k;

	if (f == NULL) {
		fprintf(stderr, "token_tool: %s: %s\n", path, strerror(errno));
		exit(3);
	}
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (k == NULL) {
		fprintf(stderr, "token_tool: %s: not a PEM private key\n",
		    path);
		exit(3);
	}
	return k;
}

static EVP_PKEY *
fixed_key(void)
{
	BIO *b = BIO_new_mem_buf(token_fuzz_key_pem, -1);
	EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;

	BIO_free(b);
	if (k == NULL) {
		fprintf(stderr, "token_tool: the fixed key does not load\n");
		exit(3);
	}
	return k;
}

static void
random_jti(char jti[KWD_TOKEN_JTI_MAX + 1])
{
	unsigned char r[16]; /* 128 bits */

	randombytes_buf(r, sizeof r);
	if (kwd_token_b64url_encode(r, sizeof r, jti, KWD_TOKEN_JTI_MAX + 1) !=
	    KW_OK)
		exit(3);
}

static void
copy(char *dst, size_t cap, const char *src)
{
	if (strlen(src) >= cap) {
		fprintf(stderr, "token_tool: \"%.20s...\" is too long\n", src);
		exit(2);
	}
	strcpy(dst, src);
}

static int
cmd_keygen(const char *path)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;

	if (k == NULL || f == NULL ||
	    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) != 1) {
		fprintf(stderr, "token_tool: cannot write %s\n", path);
		return 3;
	}
	fclose(f);
	EVP_PKEY_free(k);
	return 0;
}

static int
cmd_issue(int argc, char **argv)
{
	struct kwd_token_claims c;
	char kid[KWD_TOKEN_THUMB_LEN + 1], *jws = NULL, *keys;
	EVP_PKEY *k = load_key(argv[2]);
	json_t *jwk, *jwks;
	long long ttl = strtoll(argv[7], NULL, 10);
	int rv;

	memset(&c, 0, sizeof c);
	copy(c.iss, sizeof c.iss, argv[3]);
	copy(c.sub, sizeof c.sub, argv[4]);
	copy(c.aud, sizeof c.aud, argv[5]);
	copy(c.scope, sizeof c.scope, argv[6]);
	if (argc > 8)
		copy(c.cnf, sizeof c.cnf, argv[8]);
	c.iat = c.nbf = (int64_t)time(NULL);
	c.exp = c.iat + ttl;
	random_jti(c.jti);
	if (kwd_token_kid(k, kid) != KW_OK ||
	    kwd_token_jwk(k, kid, &jwk) != KW_OK)
		return 3;
	rv = kwd_token_build(&c, kid, soft_sign, k, &jws);
	if (rv != KW_OK) {
		fprintf(stderr, "token_tool: build: %s\n", kw_strerror(rv));
		return 3;
	}
	jwks = json_pack("{s:[o]}", "keys", jwk);
	keys = jwks ? json_dumps(jwks, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	if (keys == NULL)
		return 3;
	printf("%s\n%s\n", jws, keys);
	free(keys);
	json_decref(jwks);
	kwd_token_free(jws);
	EVP_PKEY_free(k);
	return 0;
}

static int
cmd_verify(int argc, char **argv)
{
	struct kwd_token_verify_opts o;
	struct kwd_token_claims c;
	char kid[KWD_TOKEN_THUMB_LEN + 1], err[256], *out;
	struct one_key ok;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	json_t *j;
	int rv;

	ok.key = load_key(argv[2]);
	if (kwd_token_kid(ok.key, kid) != KW_OK)
		return 3;
	ok.kid = kid;
	n = getline(&line, &cap, stdin);
	if (n < 0)
		return 3;
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	memset(&o, 0, sizeof o);
	o.issuer = argv[3];
	o.audience = argv[4];
	o.max_ttl = strtoll(argv[5], NULL, 10);
	o.now = (int64_t)time(NULL);
	o.leeway = 5;
	o.cert_thumbprint = argc > 6 ? argv[6] : NULL;
	rv = kwd_token_verify(line, (size_t)n, &o, lookup, &ok, &c, err,
	    sizeof err);
	free(line);
	EVP_PKEY_free(ok.key);
	if (rv == KW_ERR_UNAUTHENTICATED) {
		printf("refused: %s\n", err);
		return 1;
	}
	if (rv != KW_OK) {
		fprintf(stderr, "token_tool: verify: %s (%s)\n",
		    kw_strerror(rv), err);
		return 3;
	}
	j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:s, s:s}",
	    "iss", c.iss, "sub", c.sub, "aud", c.aud, "iat", (json_int_t)c.iat,
	    "nbf", (json_int_t)c.nbf, "exp", (json_int_t)c.exp, "jti", c.jti,
	    "scope", c.scope, "cnf", c.cnf, "kid", c.kid);
	out = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	if (out == NULL)
		return 3;
	printf("%s\n", out);
	free(out);
	json_decref(j);
	return 0;
}

static int
cmd_thumbprint(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	unsigned char *der = NULL;
	char t[KWD_TOKEN_THUMB_LEN + 1];
	int len;

	if (f != NULL)
		fclose(f);
	if (x == NULL || (len = i2d_X509(x, &der)) <= 0 ||
	    kwd_token_cert_thumbprint(der, (size_t)len, t) != KW_OK) {
		fprintf(stderr, "token_tool: %s: not a PEM certificate\n",
		    path);
		return 3;
	}
	printf("%s\n", t);
	OPENSSL_free(der);
	X509_free(x);
	return 0;
}

/* ------------------------------------------------------------------ */
/* The fuzz seed corpus.                                                */

static void
put(const char *dir, const char *name, const char *data, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	f = fopen(path, "w");
	if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
		fprintf(stderr, "token_tool: cannot write %s\n", path);
		exit(3);
	}
}

static void
put_s(const char *dir, const char *name, const char *s)
{
	put(dir, name, s, strlen(s));
}

static struct kwd_token_claims
seed_claims(void)
{
	struct kwd_token_claims c;

	memset(&c, 0, sizeof c);
	strcpy(c.iss, TOKEN_FUZZ_ISS);
	strcpy(c.sub, "spiffe://keyward.dev/job/train-llama");
	strcpy(c.aud, TOKEN_FUZZ_AUD);
	c.iat = c.nbf = TOKEN_FUZZ_IAT;
	c.exp = TOKEN_FUZZ_IAT + 3600;
	strcpy(c.jti, "fuzzJti0123456789abcdef");
	strcpy(c.scope, "model:llama-70b:infer datasets/imagenet:read");
	return c;
}

static void
put_token(const char *dir, const char *name, const struct kwd_token_claims *c,
    const char *kid, EVP_PKEY *k)
{
	char *jws = NULL;

	if (kwd_token_build(c, kid, soft_sign, k, &jws) != KW_OK) {
		fprintf(stderr, "token_tool: cannot build seed %s\n", name);
		exit(3);
	}
	put_s(dir, name, jws);
	kwd_token_free(jws);
}

/* A token from raw header and payload JSON, signed by k. */
static void
put_forged(const char *dir, const char *name, const char *hdr, const char *pay,
    EVP_PKEY *k)
{
	char buf[KWD_TOKEN_MAX * 2];
	unsigned char md[32], sig[64];
	size_t n;

	if (kwd_token_b64url_encode((const unsigned char *)hdr, strlen(hdr),
	        buf, sizeof buf) != KW_OK)
		exit(3);
	n = strlen(buf);
	buf[n++] = '.';
	if (kwd_token_b64url_encode((const unsigned char *)pay, strlen(pay),
	        buf + n, sizeof buf - n) != KW_OK)
		exit(3);
	n += strlen(buf + n);
	crypto_hash_sha256(md, (unsigned char *)buf, n);
	if (soft_sign(md, sig, k) != KW_OK)
		exit(3);
	buf[n++] = '.';
	if (kwd_token_b64url_encode(sig, sizeof sig, buf + n, sizeof buf - n) !=
	    KW_OK)
		exit(3);
	put_s(dir, name, buf);
}

static int
cmd_corpus(const char *dir)
{
	static const char hdr[] = "{\"alg\":\"ES256\",\"kid\":\"" TOKEN_FUZZ_KID
	                          "\",\"typ\":\"JWT\"}";
	static const char pay[] =
	    "{\"aud\":\"" TOKEN_FUZZ_AUD "\",\"exp\":1700003600,"
	    "\"iat\":1700000000,\"iss\":\"" TOKEN_FUZZ_ISS "\","
	    "\"jti\":\"fuzzJti0123456789abcdef\",\"nbf\":1700000000,"
	    "\"scope\":\"model:llama-70b:infer\",\"sub\":\"job\"}";
	struct kwd_token_claims c = seed_claims();
	EVP_PKEY *k = fixed_key();
	char cert[KWD_TOKEN_THUMB_LEN + 1], buf[2048], *jws = NULL;
	size_t n;

	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		return 3;
	if (kwd_token_cert_thumbprint((const unsigned char *)TOKEN_FUZZ_CERT,
	        strlen(TOKEN_FUZZ_CERT), cert) != KW_OK)
		return 3;

	/* Raw tokens. */
	put_token(dir, "valid-bearer", &c, TOKEN_FUZZ_KID, k);
	strcpy(c.cnf, cert);
	put_token(dir, "valid-bound", &c, TOKEN_FUZZ_KID, k);
	strcpy(c.cnf, "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU");
	put_token(dir, "bound-other-cert", &c, TOKEN_FUZZ_KID, k);
	c = seed_claims();
	c.iat = c.nbf = TOKEN_FUZZ_IAT - 7200;
	c.exp = TOKEN_FUZZ_IAT - 3600;
	put_token(dir, "expired", &c, TOKEN_FUZZ_KID, k);
	c = seed_claims();
	c.nbf = TOKEN_FUZZ_NOW + 600;
	put_token(dir, "not-yet-valid", &c, TOKEN_FUZZ_KID, k);
	c = seed_claims();
	c.exp = c.iat + 200000;
	put_token(dir, "ttl-too-long", &c, TOKEN_FUZZ_KID, k);
	c = seed_claims();
	strcpy(c.aud, "other.audience");
	put_token(dir, "wrong-aud", &c, TOKEN_FUZZ_KID, k);
	c = seed_claims();
	strcpy(c.iss, "https://evil.test");
	put_token(dir, "wrong-iss", &c, TOKEN_FUZZ_KID, k);
	c = seed_claims();
	put_token(dir, "unknown-kid", &c, "other-kid", k);
	c = seed_claims();
	for (int i = 0; i < KWD_TOKEN_SCOPES_MAX; i++) {
		memset(c.scope + i * (KWD_TOKEN_SCOPE_MAX + 1), 'a' + i % 26,
		    KWD_TOKEN_SCOPE_MAX);
		c.scope[i * (KWD_TOKEN_SCOPE_MAX + 1) + KWD_TOKEN_SCOPE_MAX -
		    1] = (char)('0' + i / 26);
		c.scope[i * (KWD_TOKEN_SCOPE_MAX + 1) + KWD_TOKEN_SCOPE_MAX] =
		    ' ';
	}
	c.scope[KWD_TOKEN_SCOPE_LEN] = '\0';
	put_token(dir, "valid-max-scopes", &c, TOKEN_FUZZ_KID, k);

	put_forged(dir, "alg-none",
	    "{\"alg\":\"none\",\"kid\":\"" TOKEN_FUZZ_KID "\"}", pay, k);
	put_forged(dir, "alg-hs256",
	    "{\"alg\":\"HS256\",\"kid\":\"" TOKEN_FUZZ_KID "\"}", pay, k);
	put_forged(dir, "kid-path", "{\"alg\":\"ES256\",\"kid\":\"../x\"}", pay,
	    k);
	put_forged(dir, "header-dup",
	    "{\"alg\":\"ES256\",\"alg\":\"none\",\"kid\":\"" TOKEN_FUZZ_KID
	    "\"}",
	    pay, k);
	put_forged(dir, "header-no-typ",
	    "{\"kid\":\"" TOKEN_FUZZ_KID "\",\"alg\":\"ES256\"}", pay, k);
	put_forged(dir, "payload-aud-array", hdr,
	    "{\"aud\":[\"" TOKEN_FUZZ_AUD "\"],\"exp\":1700003600,"
	    "\"iat\":1700000000,\"iss\":\"" TOKEN_FUZZ_ISS "\","
	    "\"jti\":\"fuzzJti0123456789abcdef\",\"nbf\":1700000000,"
	    "\"scope\":\"a\",\"sub\":\"job\"}",
	    k);
	put_forged(dir, "payload-valid-unsorted", hdr,
	    "{\"sub\":\"job\",\"scope\":\"a b\",\"nbf\":1700000000,"
	    "\"jti\":\"fuzzJti0123456789abcdef\",\"iss\":\"" TOKEN_FUZZ_ISS
	    "\",\"iat\":1700000000,\"exp\":1700003600,\"aud\":\"" TOKEN_FUZZ_AUD
	    "\"}",
	    k);
	put_s(dir, "alg-none-unsigned", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.");
	put_s(dir, "padded", "eyJhbGciOiJFUzI1NiJ9.e30=.AAAA");
	put_s(dir, "empty", "");

	/* r = 0 and s = n on the valid bearer token. */
	c = seed_claims();
	if (kwd_token_build(&c, TOKEN_FUZZ_KID, soft_sign, k, &jws) != KW_OK)
		return 3;
	n = (size_t)(strrchr(jws, '.') - jws);
	snprintf(buf, sizeof buf, "%.*s.%s", (int)n, jws,
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAA");
	put_s(dir, "sig-zero", buf);
	{
		/* The order n of P-256 (SEC 2 section 2.4.2). */
		static const unsigned char p256_n[32] = {0xff, 0xff, 0xff, 0xff,
		    0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		    0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84,
		    0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};
		unsigned char sig[64];
		size_t slen;

		if (kwd_token_b64url_decode(jws + n + 1, strlen(jws + n + 1),
		        sig, sizeof sig, &slen) != KW_OK)
			return 3;
		memcpy(sig + 32, p256_n, 32);
		memcpy(buf, jws, n + 1);
		if (kwd_token_b64url_encode(sig, sizeof sig, buf + n + 1,
		        sizeof buf - n - 1) != KW_OK)
			return 3;
		put_s(dir, "sig-s-is-n", buf);
	}
	snprintf(buf, sizeof buf, "%.*s", (int)(strlen(jws) - 5), jws);
	put_s(dir, "truncated", buf);
	kwd_token_free(jws);

	/* Payload mode: '{' then JSON claims, signed by the target. */
	put_s(dir, "p-valid", pay);
	snprintf(buf, sizeof buf,
	    "{\"aud\":\"" TOKEN_FUZZ_AUD "\",\"cnf\":{\"x5t#S256\":\"%s\"},"
	    "\"exp\":1700003600,\"iat\":1700000000,\"iss\":\"" TOKEN_FUZZ_ISS
	    "\",\"jti\":\"fuzzJti0123456789abcdef\",\"nbf\":1700000000,"
	    "\"scope\":\"model:* a/b:c\",\"sub\":\"job\"}",
	    cert);
	put_s(dir, "p-bound", buf);
	put_s(dir, "p-unknown-claim",
	    "{\"admin\":true,\"aud\":\"" TOKEN_FUZZ_AUD "\",\"exp\":1700003600,"
	    "\"iat\":1700000000,\"iss\":\"" TOKEN_FUZZ_ISS "\","
	    "\"jti\":\"fuzzJti0123456789abcdef\",\"nbf\":1700000000,"
	    "\"scope\":\"a\",\"sub\":\"job\"}");
	put_s(dir, "p-dup", "{\"sub\":\"a\",\"sub\":\"b\"}");
	put_s(dir, "p-types",
	    "{\"aud\":\"" TOKEN_FUZZ_AUD "\",\"exp\":1.7e9,\"iat\":\"1\","
	    "\"iss\":1,\"jti\":null,\"nbf\":true,\"scope\":[],\"sub\":{}}");
	put_s(dir, "p-deep",
	    "{\"a\":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}");
	put_s(dir, "p-escapes",
	    "{\"aud\":\"api.keyward.t\\u0065st\",\"exp\":1700003600,"
	    "\"iat\":1700000000,\"iss\":\"" TOKEN_FUZZ_ISS "\","
	    "\"jti\":\"fuzzJti0123456789abcdef\",\"nbf\":1700000000,"
	    "\"scope\":\"a\",\"sub\":\"j\\\"o\\\\b\"}");
	/* Header mode: '#', header JSON, '\n', payload JSON. */
	snprintf(buf, sizeof buf, "#%s\n%s", hdr, pay);
	put_s(dir, "h-valid", buf);
	snprintf(buf, sizeof buf,
	    "#{\"alg\":\"ES256\",\"kid\":\"" TOKEN_FUZZ_KID
	    "\",\"typ\":\"JWT\",\"crit\":[\"exp\"]}\n%s",
	    pay);
	put_s(dir, "h-crit", buf);
	snprintf(buf, sizeof buf,
	    "#{\"alg\":\"ES256\",\"kid\":\"" TOKEN_FUZZ_KID
	    "\",\"typ\":\"JWT\"} \n%s",
	    pay);
	put_s(dir, "h-space", buf);
	EVP_PKEY_free(k);
	return 0;
}

int
main(int argc, char **argv)
{
	if (sodium_init() < 0)
		return 3;
	if (argc == 3 && strcmp(argv[1], "keygen") == 0)
		return cmd_keygen(argv[2]);
	if ((argc == 8 || argc == 9) && strcmp(argv[1], "issue") == 0)
		return cmd_issue(argc, argv);
	if ((argc == 6 || argc == 7) && strcmp(argv[1], "verify") == 0)
		return cmd_verify(argc, argv);
	if (argc == 3 && strcmp(argv[1], "thumbprint") == 0)
		return cmd_thumbprint(argv[2]);
	if (argc == 3 && strcmp(argv[1], "corpus") == 0)
		return cmd_corpus(argv[2]);
	fprintf(stderr,
	    "usage: token_tool keygen KEY.pem\n"
	    "       token_tool issue KEY.pem ISS SUB AUD SCOPE TTL [X5T_S256]\n"
	    "       token_tool verify KEY.pem ISS AUD MAX_TTL [X5T_S256] "
	    "< TOKEN\n"
	    "       token_tool thumbprint CERT.pem\n"
	    "       token_tool corpus DIR\n");
	return 2;
}

/*
 * artifact.c: artifact signatures (POST /v1/artifacts/sign) and their
 * offline verification against the signing key's public keys (GET
 * /v1/signing-keys/{name}, or a JWKS).
 *
 * The server signs the file's SHA-256 with ES256 (ECDSA P-256 over the
 * SHA-256 of the file: RFC 7518 section 3.4), the signature as raw r || s
 * in base64url. Verification needs no server and no client: the public
 * key is rebuilt from the JWK (RFC 7518 section 6.2.1), checked to lie on
 * the curve, r and s are checked to lie in [1, n-1] and converted to the
 * DER ECDSA-Sig-Value OpenSSL verifies.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client_internal.h"
#include "keyward.h"
#include "secret.h"

#define DIGEST_PREFIX "sha256:"
#define DIGEST_TEXT_LEN (sizeof DIGEST_PREFIX - 1 + 64)
#define SIG_LEN 64
#define SIG_B64_LEN 86
#define COORD_LEN 32
#define COORD_B64_LEN 43
#define READ_CHUNK (256u << 10)

/* The order n of P-256 (SEC 2 section 2.4.2, FIPS 186-4 D.1.2.3). */
static const unsigned char p256_order[32] = {0xff, 0xff, 0xff, 0xff, 0x00, 0x00,
    0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6,
    0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
    0x25, 0x51};

__attribute__((format(printf, 4, 5))) static int
seterr(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/*
 * file_sha256: the SHA-256 of the file at path, read in chunks, as
 * "sha256:<64 lowercase hex>" into out (DIGEST_TEXT_LEN + 1 bytes).
 */
static int
file_sha256(const char *path, char *out, char *err, size_t errlen)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[32], *buf = NULL;
	EVP_MD_CTX *ctx = NULL;
	unsigned mdlen = 0;
	struct stat st;
	int fd = -1, rc = KW_ERR_CRYPTO;
	ssize_t n;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return seterr(err, errlen, KW_ERR_IO, "%s: %s", path,
		    strerror(errno));
	if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
		close(fd);
		return seterr(err, errlen, KW_ERR_IO, "%s: not a file", path);
	}
	buf = malloc(READ_CHUNK);
	ctx = EVP_MD_CTX_new();
	if (buf == NULL || ctx == NULL) {
		rc = seterr(err, errlen, KW_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		goto crypto;
	for (;;) {
		n = read(fd, buf, READ_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = seterr(err, errlen, KW_ERR_IO, "%s: %s", path,
			    strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
			goto crypto;
	}
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != sizeof md)
		goto crypto;
	memcpy(out, DIGEST_PREFIX, sizeof DIGEST_PREFIX - 1);
	for (size_t i = 0; i < sizeof md; i++) {
		out[sizeof DIGEST_PREFIX - 1 + 2 * i] = hex[md[i] >> 4];
		out[sizeof DIGEST_PREFIX - 1 + 2 * i + 1] = hex[md[i] & 15];
	}
	out[DIGEST_TEXT_LEN] = '\0';
	rc = KW_OK;
	goto out;
crypto:
	rc = seterr(err, errlen, KW_ERR_CRYPTO, "SHA-256 failed in OpenSSL");
out:
	EVP_MD_CTX_free(ctx);
	free(buf);
	close(fd);
	return rc;
}

static bool
digest_ok(const char *s)
{
	if (s == NULL || strlen(s) != DIGEST_TEXT_LEN ||
	    strncmp(s, DIGEST_PREFIX, sizeof DIGEST_PREFIX - 1) != 0)
		return false;
	for (size_t i = sizeof DIGEST_PREFIX - 1; i < DIGEST_TEXT_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		        (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static bool
kid_ok(const char *s)
{
	size_t len = s != NULL ? strlen(s) : 0;

	if (len == 0 || len > 64)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		        (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
			return false;
	}
	return true;
}

/*
 * b64url: strict base64url without padding (RFC 4648 section 5) of
 * exactly outlen bytes: the text must be the one canonical spelling of
 * them (decoding and re-encoding give the same text).
 */
static bool
b64url(const char *s, size_t b64len, unsigned char *out, size_t outlen)
{
	char again[128];
	size_t n = 0;

	if (s == NULL || strlen(s) != b64len || b64len + 1 > sizeof again)
		return false;
	if (sodium_base642bin(out, outlen, s, b64len, NULL, &n, NULL,
	        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
	    n != outlen)
		return false;
	sodium_bin2base64(again, sizeof again, out, outlen,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return strcmp(again, s) == 0;
}

/* sig_answer_ok: the fields of a signature document, checked. */
static bool
sig_fields(json_t *root, const char **ret_key, json_int_t *ret_version,
    const char **ret_kid, const char **ret_digest, unsigned char sig[SIG_LEN])
{
	const char *alg = json_string_value(json_object_get(root, "alg"));
	json_t *v = json_object_get(root, "version");

	*ret_key = json_string_value(json_object_get(root, "key"));
	*ret_kid = json_string_value(json_object_get(root, "kid"));
	*ret_digest = json_string_value(json_object_get(root, "digest"));
	if (!json_is_object(root) || *ret_key == NULL || *ret_kid == NULL ||
	    !kid_ok(*ret_kid) || alg == NULL || strcmp(alg, "ES256") != 0 ||
	    !digest_ok(*ret_digest) || !json_is_integer(v) ||
	    json_integer_value(v) < 1)
		return false;
	*ret_version = json_integer_value(v);
	return b64url(json_string_value(json_object_get(root, "signature")),
	    SIG_B64_LEN, sig, SIG_LEN);
}

int
kw_artifact_sign(kw_client *c, const char *key, const char *path,
    char **ret_sig_json)
{
	char digest[DIGEST_TEXT_LEN + 1], err[256];
	unsigned char sig[SIG_LEN];
	const char *akey, *kid, *adigest;
	json_int_t version;
	json_t *obj, *root = NULL;
	char *body, *ans = NULL;
	size_t len = 0;
	int rc;

	if (c == NULL || ret_sig_json == NULL || path == NULL)
		return KW_ERR_INVALID;
	kw_client_clear(c);
	if (!kw_key_name_ok(c, key))
		return KW_ERR_INVALID;
	rc = file_sha256(path, digest, err, sizeof err);
	if (rc != KW_OK)
		return kw_client_fail(c, rc, "%s", err);
	obj = json_pack("{s:s,s:s}", "key", key, "digest", digest);
	body = obj != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
	if (body == NULL)
		return kw_client_fail(c, KW_ERR_NOMEM, "out of memory");
	/* A second signature of the same digest changes nothing. */
	rc = kw_call(c, KW_CALL_SAFE, "POST", "/v1/artifacts/sign", body, false,
	    NULL, &ans, &len);
	free(body);
	if (rc != KW_OK)
		return rc;
	root = json_loadb(ans, len, JSON_REJECT_DUPLICATES, NULL);
	if (!sig_fields(root, &akey, &version, &kid, &adigest, sig) ||
	    strcmp(akey, key) != 0 || strcmp(adigest, digest) != 0) {
		json_decref(root);
		free(ans);
		return kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer is not a signature of this file's digest by "
		    "key %s",
		    key);
	}
	json_decref(root);
	*ret_sig_json = ans;
	return KW_OK;
}

/* find_jwk: the JWK of keys with kid kid, or NULL. */
static json_t *
find_jwk(json_t *keys, const char *kid)
{
	json_t *k;
	size_t i;

	json_array_foreach (keys, i, k) {
		const char *s = json_string_value(json_object_get(k, "kid"));

		if (s != NULL && strcmp(s, kid) == 0)
			return k;
	}
	return NULL;
}

static bool
member_is(json_t *o, const char *k, const char *want, bool required)
{
	json_t *v = json_object_get(o, k);

	if (v == NULL)
		return !required;
	return json_is_string(v) && strcmp(json_string_value(v), want) == 0;
}

/* jwk_pkey: the P-256 public key of an EC JWK, on the curve. */
static int
jwk_pkey(json_t *jwk, EVP_PKEY **ret_pkey, char *err, size_t errlen)
{
	unsigned char point[1 + 2 * COORD_LEN];
	OSSL_PARAM params[3];
	EVP_PKEY_CTX *ctx = NULL, *check = NULL;
	EVP_PKEY *pkey = NULL;
	int rc = KW_ERR_INVALID;

	point[0] = 0x04; /* uncompressed (SEC 1 section 2.3.3) */
	if (!b64url(json_string_value(json_object_get(jwk, "x")), COORD_B64_LEN,
	        point + 1, COORD_LEN) ||
	    !b64url(json_string_value(json_object_get(jwk, "y")), COORD_B64_LEN,
	        point + 1 + COORD_LEN, COORD_LEN))
		return seterr(err, errlen, KW_ERR_INVALID,
		    "key set: the key's x and y are not 32-byte base64url "
		    "coordinates");
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
	    (char *)"prime256v1", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY,
	    point, sizeof point);
	params[2] = OSSL_PARAM_construct_end();
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
		rc = seterr(err, errlen, KW_ERR_INVALID,
		    "key set: the key's point is not on P-256");
		goto out;
	}
	check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (check == NULL || EVP_PKEY_public_check(check) != 1) {
		rc = seterr(err, errlen, KW_ERR_INVALID,
		    "key set: the key's point is not on P-256");
		goto out;
	}
	*ret_pkey = pkey;
	pkey = NULL;
	rc = KW_OK;
out:
	EVP_PKEY_CTX_free(check);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pkey);
	return rc;
}

/*
 * thumbprint_ok: kid is the RFC 7638 thumbprint of the JWK (section 3.2:
 * SHA-256 of the required members crv, kty, x, y in lexical order, no
 * whitespace), as keywardd makes it: a key set whose kid names another
 * key is refused.
 */
static bool
thumbprint_ok(json_t *jwk, const char *kid)
{
	char canon[160], b64[64];
	unsigned char md[32];
	int n;

	n = snprintf(canon, sizeof canon,
	    "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
	    json_string_value(json_object_get(jwk, "x")),
	    json_string_value(json_object_get(jwk, "y")));
	if (n < 0 || (size_t)n >= sizeof canon ||
	    EVP_Digest(canon, (size_t)n, md, NULL, EVP_sha256(), NULL) != 1)
		return false;
	sodium_bin2base64(b64, sizeof b64, md, sizeof md,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return strcmp(b64, kid) == 0;
}

/* scalar_ok: 1 <= v <= n - 1 for a 32-byte big-endian v. */
static bool
scalar_ok(const unsigned char *v)
{
	bool zero = true;

	for (size_t i = 0; i < 32; i++)
		zero = zero && v[i] == 0;
	return !zero && memcmp(v, p256_order, 32) < 0;
}

/* es256_verify: raw r || s over the SHA-256 digest md, with pkey. */
static int
es256_verify(EVP_PKEY *pkey, const unsigned char md[32],
    const unsigned char sig[SIG_LEN], char *err, size_t errlen)
{
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *s = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	unsigned char *der = NULL;
	int derlen, rc = KW_ERR_CRYPTO, v;

	if (!scalar_ok(sig) || !scalar_ok(sig + 32))
		return seterr(err, errlen, KW_ERR_AUTH,
		    "bad signature: r or s is not in [1, n-1]");
	es = ECDSA_SIG_new();
	r = BN_bin2bn(sig, 32, NULL);
	s = BN_bin2bn(sig + 32, 32, NULL);
	if (es == NULL || r == NULL || s == NULL ||
	    ECDSA_SIG_set0(es, r, s) != 1) {
		BN_free(r);
		BN_free(s);
		goto crypto;
	}
	/* es owns r and s now. */
	derlen = i2d_ECDSA_SIG(es, &der);
	if (derlen <= 0)
		goto crypto;
	ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (ctx == NULL || EVP_PKEY_verify_init(ctx) != 1 ||
	    EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) != 1)
		goto crypto;
	v = EVP_PKEY_verify(ctx, der, (size_t)derlen, md, 32);
	rc = v == 1 ? KW_OK
	            : seterr(err, errlen, KW_ERR_AUTH,
	                  "bad signature: it does not verify with the key");
	goto out;
crypto:
	rc = seterr(err, errlen, KW_ERR_CRYPTO,
	    "OpenSSL failed to set up the verification");
out:
	EVP_PKEY_CTX_free(ctx);
	OPENSSL_free(der);
	ECDSA_SIG_free(es);
	return rc;
}

static int
hex_digest(const char *text, unsigned char md[32])
{
	size_t n = 0;

	if (sodium_hex2bin(md, 32, text + sizeof DIGEST_PREFIX - 1, 64, NULL,
	        &n, NULL) != 0 ||
	    n != 32)
		return KW_ERR_INVALID;
	return KW_OK;
}

int
kw_artifact_verify(const char *path, const char *sig_json,
    const char *keys_json, char *err, size_t errlen)
{
	char digest[DIGEST_TEXT_LEN + 1];
	unsigned char sig[SIG_LEN], md[32];
	const char *key, *kid, *sdigest, *setname;
	json_t *sroot = NULL, *kroot = NULL, *keys, *jwk, *jv;
	json_int_t version;
	EVP_PKEY *pkey = NULL;
	int rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (path == NULL || sig_json == NULL || keys_json == NULL)
		return seterr(err, errlen, KW_ERR_INVALID,
		    "a file, a signature and a key set are needed");
	sroot = json_loads(sig_json, JSON_REJECT_DUPLICATES, NULL);
	if (!sig_fields(sroot, &key, &version, &kid, &sdigest, sig)) {
		rc = seterr(err, errlen, KW_ERR_AUTH,
		    "the signature is not a keyward signature document (key, "
		    "version, kid, alg ES256, digest sha256:<hex>, a 64-byte "
		    "base64url signature)");
		goto out;
	}
	kroot = json_loads(keys_json, JSON_REJECT_DUPLICATES, NULL);
	keys = json_object_get(kroot, "keys");
	if (!json_is_array(keys)) {
		rc = seterr(err, errlen, KW_ERR_INVALID,
		    "the key set is not a signing key ({\"name\",\"keys\"}) "
		    "nor a JWKS ({\"keys\":[...]})");
		goto out;
	}
	setname = json_string_value(json_object_get(kroot, "name"));
	if (setname != NULL && strcmp(setname, key) != 0) {
		rc = seterr(err, errlen, KW_ERR_AUTH,
		    "unknown key: signed by key %.63s, the key set is of key "
		    "%.63s",
		    key, setname);
		goto out;
	}
	jwk = find_jwk(keys, kid);
	if (jwk == NULL) {
		rc = seterr(err, errlen, KW_ERR_AUTH,
		    "unknown kid %s: not in the key set", kid);
		goto out;
	}
	jv = json_object_get(jwk, "version");
	if (!member_is(jwk, "kty", "EC", true) ||
	    !member_is(jwk, "crv", "P-256", true) ||
	    !member_is(jwk, "alg", "ES256", false) ||
	    !member_is(jwk, "use", "sig", false) ||
	    (jv != NULL &&
	        (!json_is_integer(jv) || json_integer_value(jv) != version))) {
		rc = seterr(err, errlen, KW_ERR_AUTH,
		    "kid %s: the key set's key is not an ES256 P-256 signing "
		    "key of version %lld",
		    kid, (long long)version);
		goto out;
	}
	jv = json_object_get(jwk, "state");
	if (jv != NULL && !member_is(jwk, "state", "active", true) &&
	    !member_is(jwk, "state", "retired", true)) {
		rc = seterr(err, errlen, KW_ERR_AUTH,
		    "kid %s: the key is neither active nor retired", kid);
		goto out;
	}
	rc = jwk_pkey(jwk, &pkey, err, errlen);
	if (rc != KW_OK)
		goto out;
	if (!thumbprint_ok(jwk, kid)) {
		rc = seterr(err, errlen, KW_ERR_INVALID,
		    "key set: kid %s is not the RFC 7638 thumbprint of its key",
		    kid);
		goto out;
	}
	rc = file_sha256(path, digest, err, errlen);
	if (rc != KW_OK)
		goto out;
	if (strcmp(digest, sdigest) != 0) {
		rc = seterr(err, errlen, KW_ERR_AUTH,
		    "digest mismatch: the file's SHA-256 is %s, the "
		    "signature is for %s",
		    digest + sizeof DIGEST_PREFIX - 1,
		    sdigest + sizeof DIGEST_PREFIX - 1);
		goto out;
	}
	if (hex_digest(digest, md) != KW_OK) {
		rc = seterr(err, errlen, KW_ERR_INTERNAL, "digest decoding");
		goto out;
	}
	rc = es256_verify(pkey, md, sig, err, errlen);
out:
	EVP_PKEY_free(pkey);
	json_decref(sroot);
	json_decref(kroot);
	return rc;
}

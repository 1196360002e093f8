/*
 * test_cert.c: client certificates from CSRs (THREATS E), with a software
 * CA key. tests/test_cert_hsm.c signs with an HSM key;
 * tests/integration/test_cert_openssl.sh checks the result with the
 * openssl CLI.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cert.h"
#include "front.h"
#include "log.h"

/* Keys are slow to make (RSA): made once, shared by the tests. */
static EVP_PKEY *ca_key, *p256, *p384, *ed25519, *rsa2048;
static X509 *ca;

static const char ident[] = "spiffe://prod.example/ns/ml/sa/trainer";

static int
setup_all(void **state)
{
	(void)state;
	kw_log_set_level(KW_LOG_ERR);
	ca_key = EVP_EC_gen("P-256");
	p256 = EVP_EC_gen("P-256");
	p384 = EVP_EC_gen("P-384");
	ed25519 = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	rsa2048 = EVP_RSA_gen(2048);
	if (ca_key == NULL || p256 == NULL || p384 == NULL || ed25519 == NULL ||
	    rsa2048 == NULL)
		return -1;
	return kwd_cert_ca_self_sign(ca_key, "keyward test CA", 30, &ca) ==
	        KW_OK
	    ? 0
	    : -1;
}

static int
teardown_all(void **state)
{
	(void)state;
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(p256);
	EVP_PKEY_free(p384);
	EVP_PKEY_free(ed25519);
	EVP_PKEY_free(rsa2048);
	return 0;
}

/* ---- making CSRs ---- */

static void
add_ext_req(X509_REQ *req, const char *const *exts)
{
	STACK_OF(X509_EXTENSION) *sk = sk_X509_EXTENSION_new_null();
	X509V3_CTX v3;

	assert_non_null(sk);
	X509V3_set_ctx(&v3, NULL, NULL, req, NULL, 0);
	for (; *exts != NULL; exts += 2) {
		X509_EXTENSION *e =
		    X509V3_EXT_conf(NULL, &v3, exts[0], exts[1]);

		assert_non_null(e);
		sk_X509_EXTENSION_push(sk, e);
	}
	assert_int_equal(X509_REQ_add_extensions(req, sk), 1);
	sk_X509_EXTENSION_pop_free(sk, X509_EXTENSION_free);
}

/* A CSR for key signed by signer (key itself if NULL) with md. */
static X509_REQ *
make_req(EVP_PKEY *key, EVP_PKEY *signer, const EVP_MD *md, const char *cn,
    const char *const *exts)
{
	X509_REQ *req = X509_REQ_new();
	X509_NAME *n = X509_REQ_get_subject_name(req);

	assert_non_null(req);
	assert_int_equal(X509_REQ_set_version(req, X509_REQ_VERSION_1), 1);
	assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
	                     (const unsigned char *)cn, -1, -1, 0),
	    1);
	assert_int_equal(X509_REQ_set_pubkey(req, key), 1);
	if (exts != NULL)
		add_ext_req(req, exts);
	assert_true(X509_REQ_sign(req, signer ? signer : key, md) > 0);
	return req;
}

static unsigned char *
req_der(X509_REQ *req, size_t *ret_len)
{
	unsigned char *der = NULL;
	int len = i2d_X509_REQ(req, &der);

	assert_true(len > 0);
	*ret_len = (size_t)len;
	return der;
}

/* PEM of arbitrary DER under the CSR label, 64-column base64. */
static char *
pem_of(const unsigned char *der, size_t len, const char *label)
{
	size_t cap = len * 2 + 200, off = 0;
	char *pem = malloc(cap), b64[(64 / 4 * 3) * 2];

	assert_non_null(pem);
	off += (size_t)snprintf(pem + off, cap - off, "-----BEGIN %s-----\n",
	    label);
	for (size_t i = 0; i < len; i += 48) {
		size_t n = len - i < 48 ? len - i : 48;
		int m = EVP_EncodeBlock((unsigned char *)b64, der + i, (int)n);

		off += (size_t)snprintf(pem + off, cap - off, "%.*s\n", m, b64);
	}
	snprintf(pem + off, cap - off, "-----END %s-----\n", label);
	return pem;
}

static char *
req_pem(X509_REQ *req)
{
	size_t len;
	unsigned char *der = req_der(req, &len);
	char *pem = pem_of(der, len, "CERTIFICATE REQUEST");

	OPENSSL_free(der);
	return pem;
}

static int
parse(const char *pem, X509_REQ **ret, char *err, size_t errlen)
{
	return kwd_cert_csr_parse(pem, strlen(pem), ret, err, errlen);
}

/* The CSR is refused with a reason containing want. */
static void
refused(const char *pem, int rv, const char *want)
{
	X509_REQ *req = NULL;
	char err[256];

	assert_int_equal(parse(pem, &req, err, sizeof err), rv);
	assert_null(req);
	if (strstr(err, want) == NULL)
		fail_msg("reason \"%s\" lacks \"%s\"", err, want);
}

static void
req_refused(X509_REQ *req, const char *want)
{
	char *pem = req_pem(req);

	refused(pem, KW_ERR_INVALID, want);
	free(pem);
}

static X509_REQ *
parsed(const char *pem)
{
	X509_REQ *req = NULL;
	char err[256] = "";

	if (parse(pem, &req, err, sizeof err) != KW_OK)
		fail_msg("CSR refused: %s", err);
	return req;
}

static struct kwd_cert_template
tmpl(const char *identity)
{
	struct kwd_cert_template t = {
	    .organization = "keyward test",
	    .identity = identity,
	    .ttl = 3600,
	    .max_ttl = 86400,
	    .backdate = 300,
	};

	return t;
}

/* ---- DER crafting: TLVs with valid signatures ---- */

struct der {
	unsigned char p[4096];
	size_t n;
};

static void
put(struct der *d, const void *p, size_t n)
{
	assert_true(d->n + n <= sizeof d->p);
	memcpy(d->p + d->n, p, n);
	d->n += n;
}

static void
put_tlv(struct der *d, unsigned char tag, const void *c, size_t n)
{
	unsigned char h[4] = {tag};
	size_t hl;

	if (n < 0x80) {
		h[1] = (unsigned char)n;
		hl = 2;
	} else if (n < 0x100) {
		h[1] = 0x81;
		h[2] = (unsigned char)n;
		hl = 3;
	} else {
		h[1] = 0x82;
		h[2] = (unsigned char)(n >> 8);
		h[3] = (unsigned char)n;
		hl = 4;
	}
	put(d, h, hl);
	put(d, c, n);
}

/* The encoded SubjectPublicKeyInfo of key. */
static void
put_spki(struct der *d, EVP_PKEY *key)
{
	unsigned char *spki = NULL;
	int n = i2d_PUBKEY(key, &spki);

	assert_true(n > 0);
	put(d, spki, (size_t)n);
	OPENSSL_free(spki);
}

/* A CSR around tbs, signed ECDSA SHA-256 by an EC key. */
static char *
sign_tbs(EVP_PKEY *key, const struct der *tbs, bool indefinite)
{
	static const unsigned char alg[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
	    0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
	unsigned char sig[160];
	size_t siglen = sizeof sig - 1;
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	struct der body = {.n = 0}, bits = {.n = 0}, out = {.n = 0};

	assert_non_null(mc);
	assert_int_equal(EVP_DigestSignInit(mc, NULL, EVP_sha256(), NULL, key),
	    1);
	sig[0] = 0; /* unused bits */
	assert_int_equal(EVP_DigestSign(mc, sig + 1, &siglen, tbs->p, tbs->n),
	    1);
	EVP_MD_CTX_free(mc);
	put(&body, tbs->p, tbs->n);
	put(&body, alg, sizeof alg);
	put_tlv(&bits, 0x03, sig, siglen + 1);
	put(&body, bits.p, bits.n);
	if (indefinite) {
		put(&out, "\x30\x80", 2);
		put(&out, body.p, body.n);
		put(&out, "\0\0", 2);
	} else {
		put_tlv(&out, 0x30, body.p, body.n);
	}
	return pem_of(out.p, out.n, "CERTIFICATE REQUEST");
}

/* tbs = SEQUENCE { version, subject, spki, [0] {} } from given parts. */
static void
make_tbs(struct der *tbs, const void *version, size_t vlen, const void *subject,
    size_t slen, EVP_PKEY *key)
{
	struct der c = {.n = 0};

	put(&c, version, vlen);
	put(&c, subject, slen);
	put_spki(&c, key);
	put(&c, "\xa0\x00", 2);
	tbs->n = 0;
	put_tlv(tbs, 0x30, c.p, c.n);
}

/* ---- looking at certificates ---- */

static time_t
asn1_time_t(const ASN1_TIME *at)
{
	struct tm tm;

	assert_int_equal(ASN1_TIME_to_tm(at, &tm), 1);
	return timegm(&tm);
}

static void
assert_verifies(X509 *x)
{
	X509_STORE *st = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();

	assert_non_null(st);
	assert_non_null(ctx);
	assert_int_equal(X509_STORE_add_cert(st, ca), 1);
	assert_int_equal(X509_STORE_CTX_init(ctx, st, x, NULL), 1);
	assert_int_equal(X509_STORE_CTX_set_purpose(ctx,
	                     X509_PURPOSE_SSL_CLIENT),
	    1);
	X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(ctx),
	    X509_V_FLAG_X509_STRICT);
	if (X509_verify_cert(ctx) != 1)
		fail_msg("verify: %s",
		    X509_verify_cert_error_string(
		        X509_STORE_CTX_get_error(ctx)));
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(st);
}

/* The front reads back exactly identity, and its leaf checks pass. */
static void
assert_front_accepts(X509 *x, const char *identity)
{
	unsigned char *der = NULL;
	int len = i2d_X509(x, &der);
	gnutls_x509_crt_t crt;
	gnutls_datum_t d = {der, (unsigned)len};
	char id[KWD_IDENTITY_MAX + 1], reason[256] = "";

	assert_true(len > 0);
	assert_int_equal(gnutls_x509_crt_init(&crt), 0);
	assert_int_equal(gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER),
	    0);
	if (kwd_front_identity(crt, id, sizeof id, reason, sizeof reason) !=
	    KW_OK)
		fail_msg("front identity: %s", reason);
	assert_string_equal(id, identity);
	if (kwd_front_check_leaf(crt, time(NULL), reason, sizeof reason) !=
	    KW_OK)
		fail_msg("front leaf check: %s", reason);
	gnutls_x509_crt_deinit(crt);
	OPENSSL_free(der);
}

static const char *
name_text(const X509_NAME *n, int nid)
{
	static char buf[300];
	int i = X509_NAME_get_index_by_NID(n, nid, -1);

	if (i < 0)
		return NULL;
	assert_true(X509_NAME_get_index_by_NID(n, nid, i) < 0);
	snprintf(buf, sizeof buf, "%s",
	    (const char *)ASN1_STRING_get0_data(
	        X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, i))));
	return buf;
}

/*
 * Exactly the template: version 3, subject O + CN, issuer, the CSR's key,
 * and these six extensions in this order, nothing else.
 */
static void
assert_template(X509 *x, EVP_PKEY *key, const char *identity, const char *cn,
    bool uri)
{
	static const int nids[] = {NID_basic_constraints, NID_key_usage,
	    NID_ext_key_usage, NID_subject_key_identifier,
	    NID_authority_key_identifier, NID_subject_alt_name};
	static const int crit[] = {1, 1, 0, 0, 0, 0};
	const X509_NAME *subj = X509_get_subject_name(x);
	BASIC_CONSTRAINTS *bc;
	EXTENDED_KEY_USAGE *eku;
	GENERAL_NAMES *gens;
	GENERAL_NAME *g;
	AUTHORITY_KEYID *akid;
	const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
	int type;

	assert_int_equal(X509_get_version(x), X509_VERSION_3);
	assert_int_equal(X509_NAME_entry_count(subj), 2);
	assert_string_equal(name_text(subj, NID_organizationName),
	    "keyward test");
	assert_string_equal(name_text(subj, NID_commonName), cn);
	assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(x),
	                     X509_get_subject_name(ca)),
	    0);
	assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(x), key), 1);
	assert_int_equal(ASN1_STRING_type(serial), V_ASN1_INTEGER);
	assert_int_equal(ASN1_STRING_length(serial), KWD_CERT_SERIAL_LEN);
	assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);

	assert_int_equal(X509_get_ext_count(x), 6);
	for (int i = 0; i < 6; i++) {
		X509_EXTENSION *e = X509_get_ext(x, i);

		assert_int_equal(OBJ_obj2nid(X509_EXTENSION_get_object(e)),
		    nids[i]);
		assert_int_equal(X509_EXTENSION_get_critical(e), crit[i]);
	}
	bc = X509_get_ext_d2i(x, NID_basic_constraints, NULL, NULL);
	assert_non_null(bc);
	assert_int_equal(bc->ca, 0);
	assert_null(bc->pathlen);
	BASIC_CONSTRAINTS_free(bc);
	assert_int_equal(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE);
	eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
	assert_non_null(eku);
	assert_int_equal(sk_ASN1_OBJECT_num(eku), 1);
	assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)),
	    NID_client_auth);
	sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
	gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	assert_non_null(gens);
	assert_int_equal(sk_GENERAL_NAME_num(gens), 1);
	g = sk_GENERAL_NAME_value(gens, 0);
	{
		ASN1_IA5STRING *s = GENERAL_NAME_get0_value(g, &type);

		assert_int_equal(type, uri ? GEN_URI : GEN_DNS);
		assert_int_equal(ASN1_STRING_length(s), strlen(identity));
		assert_memory_equal(ASN1_STRING_get0_data(s), identity,
		    strlen(identity));
	}
	GENERAL_NAMES_free(gens);
	akid = X509_get_ext_d2i(x, NID_authority_key_identifier, NULL, NULL);
	assert_non_null(akid);
	assert_int_equal(ASN1_OCTET_STRING_cmp(akid->keyid,
	                     X509_get0_subject_key_id(ca)),
	    0);
	assert_null(akid->issuer);
	assert_null(akid->serial);
	AUTHORITY_KEYID_free(akid);
	{
		unsigned char md[20];
		unsigned mdlen;
		const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(x);

		assert_int_equal(X509_pubkey_digest(x, EVP_sha1(), md, &mdlen),
		    1);
		assert_non_null(ski);
		assert_int_equal(ASN1_STRING_length(ski), 20);
		assert_memory_equal(ASN1_STRING_get0_data(ski), md, 20);
	}
}

static X509 *
issue_ok(X509_REQ *req, const struct kwd_cert_template *t)
{
	X509 *x = NULL;

	assert_int_equal(kwd_cert_issue(req, t, ca, ca_key, &x), KW_OK);
	assert_non_null(x);
	return x;
}

/* ---- tests ---- */

static void
test_cert_accepted_key_types_issue_and_verify(void **state)
{
	struct {
		EVP_PKEY **key;
		const EVP_MD *md;
	} cases[] = {
	    {&p256, EVP_sha256()},
	    {&p256, EVP_sha512()},
	    {&p384, EVP_sha384()},
	    {&ed25519, NULL},
	    {&rsa2048, EVP_sha256()},
	    {&rsa2048, EVP_sha384()},
	};

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct kwd_cert_template t = tmpl(ident);
		X509_REQ *req =
		    make_req(*cases[i].key, NULL, cases[i].md, "x", NULL);
		char *pem = req_pem(req);
		X509_REQ *p = parsed(pem);
		X509 *x = issue_ok(p, &t);

		assert_template(x, *cases[i].key, ident, "trainer", true);
		assert_verifies(x);
		assert_front_accepts(x, ident);
		X509_free(x);
		X509_REQ_free(p);
		X509_REQ_free(req);
		free(pem);
	}
}

static void
test_cert_csr_requests_ignored(void **state)
{
	/* Everything a CSR can ask for that is not ours to give. */
	static const char *const exts[] = {
	    "basicConstraints",
	    "critical,CA:TRUE,pathlen:5",
	    "keyUsage",
	    "critical,keyCertSign,cRLSign,digitalSignature",
	    "extendedKeyUsage",
	    "serverAuth,codeSigning,clientAuth,anyExtendedKeyUsage",
	    "subjectAltName",
	    "DNS:admin.example,URI:spiffe://prod.example/admin,"
	    "email:root@example.com,IP:10.0.0.1",
	    "nameConstraints",
	    "permitted;DNS:example",
	    "nsComment",
	    "not ours",
	    NULL,
	    NULL,
	};
	struct kwd_cert_template t = tmpl("worker-7.ml.example");
	X509_REQ *req = make_req(p256, NULL, EVP_sha256(), "admin", exts);
	X509_NAME *n = X509_REQ_get_subject_name(req);
	X509_REQ *p;
	X509 *x;
	char *pem;

	(void)state;
	/* A weird subject too: more CNs, an O, an e-mail, a NUL byte. */
	assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	                     (const unsigned char
	                             *)"spiffe://prod.example/admin",
	                     -1, -1, 0),
	    1);
	assert_int_equal(X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC,
	                     (const unsigned char *)"keyward", -1, -1, 0),
	    1);
	assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	                     (const unsigned char *)"a\0b", 3, -1, 0),
	    1);
	assert_int_equal(X509_NAME_add_entry_by_txt(n, "emailAddress",
	                     MBSTRING_ASC,
	                     (const unsigned char *)"root@example.com", -1, -1,
	                     0),
	    1);
	assert_int_equal(X509_REQ_add1_attr_by_NID(req,
	                     NID_pkcs9_challengePassword, MBSTRING_ASC,
	                     (const unsigned char *)"pw", -1),
	    1);
	assert_true(X509_REQ_sign(req, p256, EVP_sha256()) > 0);
	pem = req_pem(req);
	p = parsed(pem);
	x = issue_ok(p, &t);
	assert_template(x, p256, "worker-7.ml.example", "worker-7.ml.example",
	    false);
	assert_verifies(x);
	assert_front_accepts(x, "worker-7.ml.example");
	X509_free(x);
	X509_REQ_free(p);
	X509_REQ_free(req);
	free(pem);
}

static void
test_cert_no_proof_of_possession(void **state)
{
	EVP_PKEY *other = EVP_EC_gen("P-256");
	X509_REQ *req = make_req(p256, NULL, EVP_sha256(), "x", NULL);
	unsigned char *der;
	size_t len;
	char *pem;

	(void)state;
	assert_non_null(other);
	/* A flipped byte in the signature. */
	der = req_der(req, &len);
	der[len - 5] ^= 0x01;
	pem = pem_of(der, len, "CERTIFICATE REQUEST");
	refused(pem, KW_ERR_INVALID, "no proof of possession");
	free(pem);
	/* A flipped byte in the signed part (the CN "x" -> "y"). */
	der[len - 5] ^= 0x01;
	{
		size_t at = 0;

		while (at < len && der[at] != 'x')
			at++;
		assert_true(at < len);
		der[at] = 'y';
	}
	pem = pem_of(der, len, "CERTIFICATE REQUEST");
	refused(pem, KW_ERR_INVALID, "no proof of possession");
	free(pem);
	OPENSSL_free(der);
	X509_REQ_free(req);
	/* Signed by one key, asking for another's certificate. */
	req = make_req(other, p256, EVP_sha256(), "x", NULL);
	req_refused(req, "no proof of possession");
	X509_REQ_free(req);
	/* A valid CSR whose key is swapped afterwards. */
	req = make_req(p256, NULL, EVP_sha256(), "x", NULL);
	assert_int_equal(X509_REQ_set_pubkey(req, other), 1);
	req_refused(req, "no proof of possession");
	X509_REQ_free(req);
	EVP_PKEY_free(other);
}

static EVP_PKEY *
rsa_key(unsigned bits, unsigned long e)
{
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	BIGNUM *bn = BN_new();
	EVP_PKEY *k = NULL;

	assert_non_null(c);
	assert_non_null(bn);
	assert_int_equal(BN_set_word(bn, e), 1);
	assert_int_equal(EVP_PKEY_keygen_init(c), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_keygen_bits(c, (int)bits), 1);
	assert_int_equal(EVP_PKEY_CTX_set1_rsa_keygen_pubexp(c, bn), 1);
	assert_int_equal(EVP_PKEY_keygen(c, &k), 1);
	BN_free(bn);
	EVP_PKEY_CTX_free(c);
	return k;
}

static EVP_PKEY *
pss_key(void)
{
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, "RSA-PSS", NULL);
	EVP_PKEY *k = NULL;

	assert_non_null(c);
	assert_int_equal(EVP_PKEY_keygen_init(c), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_keygen_bits(c, 2048), 1);
	assert_int_equal(EVP_PKEY_keygen(c, &k), 1);
	EVP_PKEY_CTX_free(c);
	return k;
}

static void
test_cert_weak_keys_refused(void **state)
{
	struct {
		EVP_PKEY *key;
		const EVP_MD *md;
		const char *want;
	} cases[] = {
	    {rsa_key(1024, 65537), EVP_sha256(), "RSA key of 1024 bits"},
	    {rsa_key(2048, 3), EVP_sha256(), "exponent is not 65537"},
	    {EVP_EC_gen("P-224"), EVP_sha256(), "curve secp224r1"},
	    {EVP_EC_gen("secp256k1"), EVP_sha256(), "curve secp256k1"},
	    {EVP_EC_gen("P-521"), EVP_sha512(), "curve secp521r1"},
	    {EVP_EC_gen("P-256"), EVP_sha256(), "explicit"},
	    {EVP_EC_gen("P-256"), EVP_sha256(), "uncompressed"},
	    {EVP_PKEY_Q_keygen(NULL, NULL, "ED448"), NULL, "ED448"},
	    {pss_key(), EVP_sha256(), "RSASSA-PSS keys"},
	};
	size_t n = sizeof cases / sizeof cases[0];

	(void)state;
	/* The same P-256 key with explicit parameters, then with a
	 * compressed point. */
	assert_int_equal(EVP_PKEY_set_utf8_string_param(cases[5].key,
	                     OSSL_PKEY_PARAM_EC_ENCODING,
	                     OSSL_PKEY_EC_ENCODING_EXPLICIT),
	    1);
	assert_int_equal(EVP_PKEY_set_utf8_string_param(cases[6].key,
	                     OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
	                     OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_COMPRESSED),
	    1);
	for (size_t i = 0; i < n; i++) {
		X509_REQ *req;

		assert_non_null(cases[i].key);
		req = make_req(cases[i].key, NULL, cases[i].md, "x", NULL);
		req_refused(req, cases[i].want);
		/* And issuing from an unparsed CSR checks the key too. */
		{
			struct kwd_cert_template t = tmpl(ident);
			X509 *x = NULL;

			assert_int_equal(kwd_cert_issue(req, &t, ca, ca_key,
			                     &x),
			    KW_ERR_INVALID);
			assert_null(x);
		}
		X509_REQ_free(req);
		EVP_PKEY_free(cases[i].key);
	}
}

static void
test_cert_weak_signatures_refused(void **state)
{
	struct {
		EVP_PKEY *key;
		const EVP_MD *md;
		const char *want;
	} cases[] = {
	    {p256, EVP_sha1(), "ecdsa-with-SHA1 is too weak"},
	    {rsa2048, EVP_sha1(), "RSA-SHA1 is too weak"},
	    {rsa2048, EVP_md5(), "RSA-MD5 is too weak"},
	    {p256, EVP_sha224(), "ecdsa-with-SHA224 is too weak"},
	    {p256, EVP_sha3_256(), "not accepted"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		X509_REQ *req =
		    make_req(cases[i].key, NULL, cases[i].md, "x", NULL);

		req_refused(req, cases[i].want);
		X509_REQ_free(req);
	}
	/* RSASSA-PSS signatures (from an rsaEncryption key). */
	{
		X509_REQ *req = X509_REQ_new();
		EVP_MD_CTX *mc = EVP_MD_CTX_new();
		EVP_PKEY_CTX *pc = NULL;

		assert_int_equal(X509_REQ_set_pubkey(req, rsa2048), 1);
		assert_int_equal(EVP_DigestSignInit(mc, &pc, EVP_sha256(), NULL,
		                     rsa2048),
		    1);
		assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pc,
		                     RSA_PKCS1_PSS_PADDING),
		    1);
		assert_true(X509_REQ_sign_ctx(req, mc) > 0);
		req_refused(req, "RSASSA-PSS is not accepted");
		EVP_MD_CTX_free(mc);
		X509_REQ_free(req);
	}
}

static void
test_cert_pem_strict(void **state)
{
	X509_REQ *req = make_req(p256, NULL, EVP_sha256(), "x", NULL);
	char *pem = req_pem(req), *buf, *p;
	size_t len = strlen(pem), cap = len * 3 + 64;
	X509_REQ *ok;

	(void)state;
	buf = malloc(cap);
	assert_non_null(buf);
	/* Accepted: surrounding whitespace, CRLF, no final newline. */
	snprintf(buf, cap, " \n\t%s\n\n", pem);
	ok = parsed(buf);
	X509_REQ_free(ok);
	{
		size_t o = 0;

		for (size_t i = 0; i < len; i++) {
			if (pem[i] == '\n')
				buf[o++] = '\r';
			buf[o++] = pem[i];
		}
		buf[o] = '\0';
		ok = parsed(buf);
		X509_REQ_free(ok);
	}
	snprintf(buf, cap, "%.*s", (int)len - 1, pem);
	ok = parsed(buf);
	X509_REQ_free(ok);

	snprintf(buf, cap, "%s%s", pem, pem);
	refused(buf, KW_ERR_INVALID, "exactly one PEM block");
	snprintf(buf, cap, "%sjunk\n", pem);
	refused(buf, KW_ERR_INVALID, "text after the END line");
	snprintf(buf, cap, "junk\n%s", pem);
	refused(buf, KW_ERR_INVALID, "must be PEM");
	refused("", KW_ERR_INVALID, "must be PEM");
	refused("-----BEGIN CERTIFICATE REQUEST-----\n"
	        "-----END CERTIFICATE REQUEST-----\n",
	    KW_ERR_INVALID, "empty");
	/* Other labels. */
	snprintf(buf, cap, "%s", pem);
	p = strstr(buf, "BEGIN ");
	memcpy(p + 6, "CERTIFICATE-REQUEST", 19);
	refused(buf, KW_ERR_INVALID, "must be PEM");
	{
		char *n = pem_of((const unsigned char *)"\x30\x00", 2,
		    "NEW CERTIFICATE REQUEST");

		refused(n, KW_ERR_INVALID, "must be PEM");
		free(n);
	}
	/* A character outside base64; a PEM header; bad padding; bits
	 * after the padding point. */
	snprintf(buf, cap, "%s", pem);
	p = strchr(buf, '\n') + 10;
	*p = '!';
	refused(buf, KW_ERR_INVALID, "outside base64");
	snprintf(buf, cap,
	    "-----BEGIN CERTIFICATE REQUEST-----\nProc-Type: 4,ENCRYPTED\n%s",
	    strchr(pem, '\n') + 1);
	refused(buf, KW_ERR_INVALID, "outside base64");
	refused("-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n=\n"
	        "-----END CERTIFICATE REQUEST-----\n",
	    KW_ERR_INVALID, "padding");
	refused("-----BEGIN CERTIFICATE REQUEST-----\nMA=A\n"
	        "-----END CERTIFICATE REQUEST-----\n",
	    KW_ERR_INVALID, "after '='");
	refused("-----BEGIN CERTIFICATE REQUEST-----\nMAA\n"
	        "-----END CERTIFICATE REQUEST-----\n",
	    KW_ERR_INVALID, "padding");
	refused("-----BEGIN CERTIFICATE REQUEST-----\nMAB=\n"
	        "-----END CERTIFICATE REQUEST-----\n",
	    KW_ERR_INVALID, "not canonical");
	/* A NUL byte. */
	{
		X509_REQ *r = NULL;
		char err[128];

		memcpy(buf, pem, len + 1);
		buf[len - 3] = '\0';
		assert_int_equal(kwd_cert_csr_parse(buf, len, &r, err,
		                     sizeof err),
		    KW_ERR_INVALID);
		assert_non_null(strstr(err, "NUL"));
	}
	/* Not a CSR: a certificate under the CSR label. */
	{
		unsigned char *der = NULL;
		int dl = i2d_X509(ca, &der);
		char *n = pem_of(der, (size_t)dl, "CERTIFICATE REQUEST");

		refused(n, KW_ERR_INVALID, "not a PKCS#10");
		free(n);
		OPENSSL_free(der);
	}
	free(buf);
	free(pem);
	X509_REQ_free(req);
}

static void
test_cert_der_strict(void **state)
{
	X509_REQ *req = make_req(p256, NULL, EVP_sha256(), "x", NULL);
	unsigned char *der, *big;
	size_t len;
	char *pem;
	/* RDN { O=bb, CN=aa } in one SET: DER sorts CN first. */
	static const unsigned char atv_cn[] = {0x30, 0x09, 0x06, 0x03, 0x55,
	    0x04, 0x03, 0x0c, 0x02, 'a', 'a'};
	static const unsigned char atv_o[] = {0x30, 0x09, 0x06, 0x03, 0x55,
	    0x04, 0x0a, 0x0c, 0x02, 'b', 'b'};
	struct der set = {.n = 0}, name = {.n = 0}, rdn = {.n = 0},
	           tbs = {.n = 0};
	X509_REQ *ok;

	(void)state;
	der = req_der(req, &len);
	/* Trailing bytes after the request, inside the base64. */
	big = malloc(len + 2);
	memcpy(big, der, len);
	memcpy(big + len, "\x05\x00", 2);
	pem = pem_of(big, len + 2, "CERTIFICATE REQUEST");
	refused(pem, KW_ERR_INVALID, "after the request");
	free(pem);
	pem = pem_of(big, len + 1, "CERTIFICATE REQUEST");
	refused(pem, KW_ERR_INVALID, "truncated");
	free(pem);
	/* Truncated. */
	pem = pem_of(der, len - 1, "CERTIFICATE REQUEST");
	refused(pem, KW_ERR_INVALID, "runs past");
	free(pem);
	free(big);
	OPENSSL_free(der);

	/* Hand-made requests, correctly signed, to show that it is the
	 * DER check that refuses them. First the control. */
	put(&rdn, atv_cn, sizeof atv_cn);
	put(&rdn, atv_o, sizeof atv_o);
	put_tlv(&set, 0x31, rdn.p, rdn.n);
	put_tlv(&name, 0x30, set.p, set.n);
	make_tbs(&tbs, "\x02\x01\x00", 3, name.p, name.n, p256);
	pem = sign_tbs(p256, &tbs, false);
	ok = parsed(pem);
	X509_REQ_free(ok);
	free(pem);
	/* Indefinite length (BER). */
	pem = sign_tbs(p256, &tbs, true);
	refused(pem, KW_ERR_INVALID, "indefinite length");
	free(pem);
	/* Long form for a short length: version as 02 81 01 00. */
	make_tbs(&tbs, "\x02\x81\x01\x00", 4, name.p, name.n, p256);
	pem = sign_tbs(p256, &tbs, false);
	refused(pem, KW_ERR_INVALID, "long form for a short length");
	free(pem);
	/* Version 2. */
	make_tbs(&tbs, "\x02\x01\x01", 3, name.p, name.n, p256);
	pem = sign_tbs(p256, &tbs, false);
	refused(pem, KW_ERR_INVALID, "version is not 1");
	free(pem);
	/* A multi-valued RDN out of DER order. */
	rdn.n = set.n = name.n = 0;
	put(&rdn, atv_o, sizeof atv_o);
	put(&rdn, atv_cn, sizeof atv_cn);
	put_tlv(&set, 0x31, rdn.p, rdn.n);
	put_tlv(&name, 0x30, set.p, set.n);
	make_tbs(&tbs, "\x02\x01\x00", 3, name.p, name.n, p256);
	pem = sign_tbs(p256, &tbs, false);
	refused(pem, KW_ERR_INVALID, "subject is not in canonical DER");
	free(pem);
	X509_REQ_free(req);
}

static void
test_cert_size_cap(void **state)
{
	X509_REQ *req = make_req(p256, NULL, EVP_sha256(), "x", NULL);
	char *pem = req_pem(req), *buf = malloc(KWD_CERT_CSR_MAX + 2);
	size_t len = strlen(pem);
	X509_REQ *ok = NULL;
	char err[128];

	(void)state;
	assert_non_null(buf);
	/* Exactly at the cap: padded with trailing newlines, accepted. */
	memcpy(buf, pem, len);
	memset(buf + len, '\n', KWD_CERT_CSR_MAX - len);
	assert_int_equal(kwd_cert_csr_parse(buf, KWD_CERT_CSR_MAX, &ok, err,
	                     sizeof err),
	    KW_OK);
	X509_REQ_free(ok);
	ok = NULL;
	/* One byte over: refused before anything is read. */
	buf[KWD_CERT_CSR_MAX] = '\n';
	assert_int_equal(kwd_cert_csr_parse(buf, KWD_CERT_CSR_MAX + 1, &ok, err,
	                     sizeof err),
	    KW_ERR_TOO_LARGE);
	assert_null(ok);
	assert_non_null(strstr(err, "at most 16384"));
	/* A CSR that is large in itself (hundreds of SANs asked for). */
	{
		static char sans[KWD_CERT_CSR_MAX];
		const char *exts[] = {"subjectAltName", sans, NULL, NULL};
		size_t o = 0;
		X509_REQ *r2;
		char *p2;

		for (int i = 0; o < sizeof sans - 64; i++)
			o += (size_t)snprintf(sans + o, sizeof sans - o,
			    "%sDNS:host-%d.example", i ? "," : "", i);
		r2 = make_req(p256, NULL, EVP_sha256(), "x", exts);
		p2 = req_pem(r2);
		assert_true(strlen(p2) > KWD_CERT_CSR_MAX);
		assert_int_equal(parse(p2, &ok, err, sizeof err),
		    KW_ERR_TOO_LARGE);
		free(p2);
		X509_REQ_free(r2);
	}
	free(buf);
	free(pem);
	X509_REQ_free(req);
}

static void
test_cert_template_limits(void **state)
{
	X509_REQ *req = make_req(p256, NULL, EVP_sha256(), "x", NULL);
	struct kwd_cert_template t;
	X509 *x = NULL;
	char longorg[KWD_CERT_NAME_MAX + 2];

	(void)state;
	memset(longorg, 'o', sizeof longorg - 1);
	longorg[sizeof longorg - 1] = '\0';
#define REFUSED(field, value)                                             \
	do {                                                              \
		t = tmpl(ident);                                          \
		t.field = value;                                          \
		assert_int_equal(kwd_cert_issue(req, &t, ca, ca_key, &x), \
		    KW_ERR_INVALID);                                      \
		assert_null(x);                                           \
	} while (0)
	REFUSED(ttl, 86401); /* over the template's maximum */
	REFUSED(ttl, 0);
	REFUSED(max_ttl, KWD_CERT_TTL_CEILING + 1);
	REFUSED(max_ttl, 0);
	REFUSED(backdate, KWD_CERT_BACKDATE_MAX + 1);
	REFUSED(organization, "");
	REFUSED(organization, NULL);
	REFUSED(organization, longorg);
	REFUSED(organization, "tab\there");
	REFUSED(organization, " lead");
#undef REFUSED
	/* At the limits: accepted. */
	t = tmpl(ident);
	t.ttl = t.max_ttl = KWD_CERT_TTL_CEILING;
	t.backdate = KWD_CERT_BACKDATE_MAX;
	longorg[KWD_CERT_NAME_MAX] = '\0';
	t.organization = longorg;
	x = issue_ok(req, &t);
	X509_free(x);
	X509_REQ_free(req);
}

static void
test_cert_identities(void **state)
{
	static const char *const bad[] = {
	    "",
	    "Host.example",
	    "host..example",
	    "-host.example",
	    "host-.example",
	    "*.example",
	    "a b",
	    "user@example",
	    "host.example.",
	    "spiffe://",
	    "spiffe:///path",
	    "spiffe://Prod.example/x",
	    "spiffe://prod.example/",
	    "spiffe://prod.example/a/../b",
	    "spiffe://prod.example/a//b",
	    "spiffe://prod.example/a?b",
	    "spiffe://prod.example:443/a",
	    "SPIFFE://prod.example/a",
	    "https://prod.example/a",
	};
	struct {
		const char *id, *cn;
		bool uri;
	} good[] = {
	    {"spiffe://prod.example", "prod.example", true},
	    {"spiffe://prod.example/ns/ml/sa/Trainer_2", "Trainer_2", true},
	    {"db", "db", false},
	    {"worker-1.ml.example", "worker-1.ml.example", false},
	    {NULL, NULL, false}, /* long DNS name: first label */
	    {NULL, NULL, true}, /* long SPIFFE segment: cut to 64 */
	};
	X509_REQ *req = make_req(p384, NULL, EVP_sha384(), "x", NULL);
	char longdns[200], longseg[200], label[64], seg[65], too_long[300];

	(void)state;
	snprintf(label, sizeof label, "%s", "node-0123456789abcdef");
	snprintf(longdns, sizeof longdns, "%s.%s.%s.example", label,
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
	good[4].id = longdns;
	good[4].cn = label;
	memset(seg, 's', 64);
	seg[64] = '\0';
	snprintf(longseg, sizeof longseg, "spiffe://td.example/%s%s", seg,
	    "tail");
	good[5].id = longseg;
	good[5].cn = seg;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct kwd_cert_template t = tmpl(bad[i]);
		X509 *x = NULL;

		if (kwd_cert_issue(req, &t, ca, ca_key, &x) != KW_ERR_INVALID)
			fail_msg("identity \"%s\" accepted", bad[i]);
	}
	{
		struct kwd_cert_template t = tmpl(NULL);
		X509 *x = NULL;

		assert_int_equal(kwd_cert_issue(req, &t, ca, ca_key, &x),
		    KW_ERR_INVALID);
		/* 256 bytes: one over the front's limit. */
		memset(too_long, 'a', 256);
		too_long[256] = '\0';
		for (int i = 60; i < 256; i += 61)
			too_long[i] = '.';
		t = tmpl(too_long);
		assert_int_equal(kwd_cert_issue(req, &t, ca, ca_key, &x),
		    KW_ERR_INVALID);
	}
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		struct kwd_cert_template t = tmpl(good[i].id);
		X509 *x = issue_ok(req, &t);

		assert_template(x, p384, good[i].id, good[i].cn, good[i].uri);
		if (strlen(good[i].id) <= KWD_IDENTITY_MAX)
			assert_front_accepts(x, good[i].id);
		X509_free(x);
	}
	assert_int_equal(KWD_CERT_IDENTITY_MAX, KWD_IDENTITY_MAX);
	X509_REQ_free(req);
}

static void
test_cert_validity_window(void **state)
{
	X509_REQ *req = make_req(p256, NULL, EVP_sha256(), "x", NULL);
	struct kwd_cert_template t = tmpl(ident);
	time_t now = time(NULL);
	X509 *x;

	(void)state;
	t.now = now;
	t.ttl = 900;
	x = issue_ok(req, &t);
	assert_int_equal(asn1_time_t(X509_get0_notBefore(x)), now - 300);
	assert_int_equal(asn1_time_t(X509_get0_notAfter(x)), now + 900);
	X509_free(x);
	t.backdate = 0;
	t.ttl = 1;
	x = issue_ok(req, &t);
	assert_int_equal(asn1_time_t(X509_get0_notBefore(x)), now);
	assert_int_equal(asn1_time_t(X509_get0_notAfter(x)), now + 1);
	X509_free(x);
	/* Never outliving the CA (valid 30 days), never before it. */
	x = NULL;
	t = tmpl(ident);
	t.now = asn1_time_t(X509_get0_notAfter(ca)) - 3600;
	t.ttl = 3601;
	assert_int_equal(kwd_cert_issue(req, &t, ca, ca_key, &x),
	    KW_ERR_CONFIG);
	t.ttl = 3599;
	x = issue_ok(req, &t);
	X509_free(x);
	x = NULL;
	t.now = asn1_time_t(X509_get0_notBefore(ca)) - 1;
	t.ttl = 60;
	assert_int_equal(kwd_cert_issue(req, &t, ca, ca_key, &x),
	    KW_ERR_CONFIG);
	assert_null(x);
	X509_REQ_free(req);
}

static int
cmp16(const void *a, const void *b)
{
	return memcmp(a, b, KWD_CERT_SERIAL_LEN);
}

static void
test_cert_serials_unique_and_random(void **state)
{
	enum { N = 1000 };
	static unsigned char serials[N][KWD_CERT_SERIAL_LEN];
	unsigned ones[KWD_CERT_SERIAL_LEN * 8] = {0};
	X509_REQ *req = make_req(p256, NULL, EVP_sha256(), "x", NULL);
	struct kwd_cert_template t = tmpl(ident);

	(void)state;
	for (int i = 0; i < N; i++) {
		X509 *x = issue_ok(req, &t);
		const ASN1_INTEGER *s = X509_get0_serialNumber(x);

		/* Positive, exactly 16 bytes, non-zero. */
		assert_int_equal(ASN1_STRING_type(s), V_ASN1_INTEGER);
		assert_int_equal(ASN1_STRING_length(s), KWD_CERT_SERIAL_LEN);
		memcpy(serials[i], ASN1_STRING_get0_data(s),
		    KWD_CERT_SERIAL_LEN);
		assert_int_equal(serials[i][0] & 0xc0, 0x40);
		for (int b = 0; b < KWD_CERT_SERIAL_LEN * 8; b++)
			ones[b] += (serials[i][b / 8] >> (7 - b % 8)) & 1;
		X509_free(x);
	}
	qsort(serials, N, sizeof serials[0], cmp16);
	for (int i = 1; i < N; i++)
		assert_true(memcmp(serials[i - 1], serials[i],
		                KWD_CERT_SERIAL_LEN) != 0);
	/* Every bit but the two fixed ones is random: about half ones (the
	 * bounds are 9.5 standard deviations out). So well over 64 random
	 * bits per serial. */
	assert_int_equal(ones[0], 0);
	assert_int_equal(ones[1], N);
	for (int b = 2; b < KWD_CERT_SERIAL_LEN * 8; b++)
		if (ones[b] < 350 || ones[b] > 650)
			fail_msg("serial bit %d set %u times in %d", b, ones[b],
			    N);
	X509_REQ_free(req);
}

static void
test_cert_ca_self_sign_and_check(void **state)
{
	EVP_PKEY *k384 = EVP_EC_gen("P-384"), *k224 = EVP_EC_gen("P-224");
	X509 *c384 = NULL, *x = NULL;
	BASIC_CONSTRAINTS *bc;
	X509_REQ *req = make_req(p256, NULL, EVP_sha256(), "x", NULL);
	struct kwd_cert_template t = tmpl(ident);

	(void)state;
	/* The shared CA: CA:TRUE pathlen 0, keyCertSign and cRLSign. */
	assert_int_equal(X509_get_version(ca), X509_VERSION_3);
	bc = X509_get_ext_d2i(ca, NID_basic_constraints, NULL, NULL);
	assert_non_null(bc);
	assert_int_not_equal(bc->ca, 0);
	assert_int_equal(ASN1_INTEGER_get(bc->pathlen), 0);
	BASIC_CONSTRAINTS_free(bc);
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(ca,
	                     X509_get_ext_by_NID(ca, NID_basic_constraints,
	                         -1))),
	    1);
	assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(ca,
	                     X509_get_ext_by_NID(ca, NID_key_usage, -1))),
	    1);
	assert_int_equal(X509_get_key_usage(ca),
	    KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	assert_int_equal(ASN1_STRING_length(X509_get0_serialNumber(ca)),
	    KWD_CERT_SERIAL_LEN);
	assert_int_equal(X509_verify(ca, ca_key), 1);
	assert_int_equal(X509_check_issued(ca, ca), X509_V_OK);
	assert_string_equal(name_text(X509_get_subject_name(ca),
	                        NID_commonName),
	    "keyward test CA");
	assert_int_equal(kwd_cert_ca_check(ca, ca_key), KW_OK);

	/* P-384: signs with SHA-384, also what it issues. */
	assert_int_equal(kwd_cert_ca_self_sign(k384, "p384 CA", 1, &c384),
	    KW_OK);
	assert_int_equal(X509_get_signature_nid(c384), NID_ecdsa_with_SHA384);
	assert_int_equal(kwd_cert_ca_check(c384, k384), KW_OK);
	assert_int_equal(kwd_cert_issue(req, &t, c384, k384, &x), KW_OK);
	assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA384);
	assert_int_equal(X509_verify(x, k384), 1);
	X509_free(x);
	x = NULL;

	/* Mismatches and non-CAs. */
	assert_int_equal(kwd_cert_ca_check(ca, k384), KW_ERR_CONFIG);
	assert_int_equal(kwd_cert_ca_check(c384, ca_key), KW_ERR_CONFIG);
	assert_int_equal(kwd_cert_issue(req, &t, ca, k384, &x), KW_ERR_CONFIG);
	assert_int_equal(kwd_cert_issue(req, &t, c384, ca_key, &x),
	    KW_ERR_CONFIG);
	x = issue_ok(req, &t);
	assert_int_equal(kwd_cert_ca_check(x, p256), KW_ERR_CONFIG);
	{
		X509 *y = NULL;

		assert_int_equal(kwd_cert_issue(req, &t, x, p256, &y),
		    KW_ERR_CONFIG);
		assert_null(y);
	}
	X509_free(x);
	x = NULL;

	/* CA keys other than P-256 and P-384; bad arguments. */
	assert_int_equal(kwd_cert_ca_self_sign(k224, "CA", 1, &x),
	    KW_ERR_CONFIG);
	assert_int_equal(kwd_cert_ca_self_sign(rsa2048, "CA", 1, &x),
	    KW_ERR_CONFIG);
	assert_int_equal(kwd_cert_ca_self_sign(ed25519, "CA", 1, &x),
	    KW_ERR_CONFIG);
	assert_int_equal(kwd_cert_ca_self_sign(ca_key, "CA", 0, &x),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_cert_ca_self_sign(ca_key, "CA",
	                     KWD_CERT_CA_DAYS_MAX + 1, &x),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_cert_ca_self_sign(ca_key, "", 1, &x),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_cert_ca_self_sign(ca_key, "new\nline", 1, &x),
	    KW_ERR_INVALID);
	assert_null(x);
	assert_int_equal(kwd_cert_ca_check(NULL, ca_key), KW_ERR_CONFIG);
	assert_int_equal(kwd_cert_ca_check(ca, NULL), KW_ERR_CONFIG);

	X509_free(c384);
	X509_REQ_free(req);
	EVP_PKEY_free(k384);
	EVP_PKEY_free(k224);
}

/* An expired CA and a version 1 "CA" are refused by ca_check. */
static void
test_cert_ca_check_expired_and_v1(void **state)
{
	X509 *x = X509_dup(ca);
	time_t past = time(NULL) - 10 * 86400;

	(void)state;
	assert_non_null(x);
	assert_non_null(X509_time_adj_ex(X509_getm_notBefore(x), 0, 0, &past));
	assert_non_null(X509_time_adj_ex(X509_getm_notAfter(x), 1, 0, &past));
	assert_true(X509_sign(x, ca_key, EVP_sha256()) > 0);
	assert_int_equal(kwd_cert_ca_check(x, ca_key), KW_ERR_CONFIG);
	X509_free(x);
	x = X509_dup(ca);
	while (X509_get_ext_count(x) > 0)
		X509_EXTENSION_free(X509_delete_ext(x, 0));
	assert_int_equal(X509_set_version(x, X509_VERSION_1), 1);
	assert_true(X509_sign(x, ca_key, EVP_sha256()) > 0);
	assert_int_equal(kwd_cert_ca_check(x, ca_key), KW_ERR_CONFIG);
	X509_free(x);
}

static void
test_cert_pem_output(void **state)
{
	X509_REQ *req = make_req(ed25519, NULL, NULL, "x", NULL);
	struct kwd_cert_template t = tmpl("db");
	X509 *x = issue_ok(req, &t), *back;
	char *pem = NULL;
	BIO *bio;

	(void)state;
	assert_int_equal(kwd_cert_pem(x, &pem), KW_OK);
	assert_memory_equal(pem, "-----BEGIN CERTIFICATE-----\n", 28);
	bio = BIO_new_mem_buf(pem, -1);
	back = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	assert_non_null(back);
	assert_int_equal(X509_cmp(x, back), 0);
	assert_null(PEM_read_bio_X509(bio, NULL, NULL, NULL));
	ERR_clear_error();
	BIO_free(bio);
	X509_free(back);
	free(pem);
	X509_free(x);
	X509_REQ_free(req);
	assert_int_equal(kwd_cert_pem(NULL, &pem), KW_ERR_INVALID);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cert_accepted_key_types_issue_and_verify),
	    cmocka_unit_test(test_cert_csr_requests_ignored),
	    cmocka_unit_test(test_cert_no_proof_of_possession),
	    cmocka_unit_test(test_cert_weak_keys_refused),
	    cmocka_unit_test(test_cert_weak_signatures_refused),
	    cmocka_unit_test(test_cert_pem_strict),
	    cmocka_unit_test(test_cert_der_strict),
	    cmocka_unit_test(test_cert_size_cap),
	    cmocka_unit_test(test_cert_template_limits),
	    cmocka_unit_test(test_cert_identities),
	    cmocka_unit_test(test_cert_validity_window),
	    cmocka_unit_test(test_cert_serials_unique_and_random),
	    cmocka_unit_test(test_cert_ca_self_sign_and_check),
	    cmocka_unit_test(test_cert_ca_check_expired_and_v1),
	    cmocka_unit_test(test_cert_pem_output),
	};

	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}

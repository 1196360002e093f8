/*
 * test_p11.c: the PKCS#11 layer against a real SoftHSMv2 token (one fresh
 * token per test), and against the fault module wrapping it.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <setjmp.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <dlfcn.h>

#include "hsm_fixture.h"
#include "log.h"
#include "p11.h"
#include "secret.h"

struct fx {
	struct kwt_token tok;
	struct kwd_p11 *p11;
	struct kwd_p11_worker *w;
};

static int
setup_common(void **state, bool faulty)
{
	struct fx *fx = calloc(1, sizeof *fx);
	struct kwd_p11_config cfg;

	assert_non_null(fx);
	if (!kwt_token_make(&fx->tok, faulty)) {
		free(fx);
		/* cmocka's skip() is not allowed in a setup; tests check. */
		*state = NULL;
		return 0;
	}
	if (faulty)
		kwt_fault(&fx->tok, "");
	kwt_config(&fx->tok, &cfg);
	assert_int_equal(kwd_p11_open(&cfg, &fx->p11), KW_OK);
	assert_int_equal(kwd_p11_worker_new(fx->p11, &fx->w), KW_OK);
	*state = fx;
	return 0;
}

static int
setup(void **state)
{
	return setup_common(state, false);
}

static int
setup_faulty(void **state)
{
	return setup_common(state, true);
}

static int
teardown(void **state)
{
	struct fx *fx = *state;

	if (fx == NULL)
		return 0;
	kwd_p11_worker_free(fx->w);
	kwd_p11_free(fx->p11);
	kwt_token_remove(&fx->tok);
	free(fx);
	return 0;
}

#define FX(state)                      \
	({                             \
		if (*(state) == NULL)  \
			skip();        \
		(struct fx *)*(state); \
	})

static const unsigned char aad[] = "{\"dataset\":\"imagenet-2026\"}";
#define AADLEN (sizeof aad - 1)

static CK_OBJECT_HANDLE
find_one(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, const char *label,
    CK_OBJECT_CLASS oc)
{
	CK_ATTRIBUTE t[] = {{CKA_LABEL, (void *)label, strlen(label)},
	    {CKA_CLASS, &oc, sizeof oc}};
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_ULONG n = 0;

	assert_int_equal(f->C_FindObjectsInit(s, t, 2), CKR_OK);
	assert_int_equal(f->C_FindObjects(s, &h, 1, &n), CKR_OK);
	assert_int_equal(f->C_FindObjectsFinal(s), CKR_OK);
	assert_int_equal(n, 1);
	return h;
}

static void
test_p11_kek_attributes(void **state)
{
	struct fx *fx = FX(state);
	CK_FUNCTION_LIST_PTR f = kwt_raw(&fx->tok);
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE kek, wrapper;
	CK_BBOOL sens = CK_FALSE, extr = CK_TRUE, wrap = CK_TRUE,
	         unwrap = CK_TRUE, sign = CK_TRUE, derive = CK_TRUE,
	         modif = CK_TRUE, enc = CK_FALSE, dec = CK_FALSE;
	unsigned char value[64], id[KWD_P11_ID_LEN], ckid[32], out[256];
	CK_ATTRIBUTE a[] = {
	    {CKA_SENSITIVE, &sens, sizeof sens},
	    {CKA_EXTRACTABLE, &extr, sizeof extr},
	    {CKA_WRAP, &wrap, sizeof wrap},
	    {CKA_UNWRAP, &unwrap, sizeof unwrap},
	    {CKA_SIGN, &sign, sizeof sign},
	    {CKA_DERIVE, &derive, sizeof derive},
	    {CKA_MODIFIABLE, &modif, sizeof modif},
	    {CKA_ENCRYPT, &enc, sizeof enc},
	    {CKA_DECRYPT, &dec, sizeof dec},
	    {CKA_ID, ckid, sizeof ckid},
	};
	CK_ATTRIBUTE va = {CKA_VALUE, value, sizeof value};
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG len32 = 32, outlen = sizeof out;
	CK_OBJECT_CLASS sk = CKO_SECRET_KEY;
	CK_KEY_TYPE aes = CKK_AES;
	CK_ATTRIBUTE wt[] = {
	    {CKA_CLASS, &sk, sizeof sk},
	    {CKA_KEY_TYPE, &aes, sizeof aes},
	    {CKA_VALUE_LEN, &len32, sizeof len32},
	    {CKA_TOKEN, &no, sizeof no},
	    {CKA_WRAP, &yes, sizeof yes},
	    {CKA_EXTRACTABLE, &yes, sizeof yes},
	};
	CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
	CK_MECHANISM kw = {CKM_AES_KEY_WRAP_PAD, NULL, 0};

	assert_int_equal(kwd_p11_kek_generate(fx->w, "datasets", 1, NULL, id),
	    KW_OK);
	{
		struct kwd_p11_token_info ti;

		kwd_p11_token(fx->p11, &ti);
		assert_int_equal(f->C_OpenSession(ti.slot,
		                     CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
		                     NULL, &s),
		    CKR_OK);
	}
	kek = find_one(f, s, "kek/datasets/1", CKO_SECRET_KEY);
	assert_int_equal(f->C_GetAttributeValue(s, kek, a, 10), CKR_OK);
	assert_true(sens);
	assert_false(extr);
	assert_false(wrap);
	assert_false(unwrap);
	assert_false(sign);
	assert_false(derive);
	assert_false(modif);
	assert_true(enc);
	assert_true(dec);
	assert_int_equal(a[9].ulValueLen, KWD_P11_ID_LEN);
	assert_memory_equal(ckid, id, KWD_P11_ID_LEN);
	/* The key's bytes can be neither read... */
	assert_int_equal(f->C_GetAttributeValue(s, kek, &va, 1),
	    CKR_ATTRIBUTE_SENSITIVE);
	/* ...nor exported wrapped under another key. */
	assert_int_equal(f->C_GenerateKey(s, &gen, wt, 6, &wrapper), CKR_OK);
	assert_int_not_equal(f->C_WrapKey(s, &kw, wrapper, kek, out, &outlen),
	    CKR_OK);
	/* Nor made extractable after the fact. */
	{
		CK_ATTRIBUTE set = {CKA_EXTRACTABLE, &yes, sizeof yes};

		assert_int_not_equal(f->C_SetAttributeValue(s, kek, &set, 1),
		    CKR_OK);
	}
	f->C_CloseSession(s);
}

static void
test_p11_gcm_roundtrip(void **state)
{
	struct fx *fx = FX(state);
	static const size_t sizes[] = {1, 32, 1000, 4096};
	unsigned char pt[4096], nonce[12], ct[4096 + 16];
	struct kw_secret *back = NULL;
	size_t clen;

	assert_int_equal(kwd_p11_kek_generate(fx->w, "k", 1, NULL, NULL),
	    KW_OK);
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		randombytes_buf(pt, sizes[i]);
		assert_int_equal(kwd_p11_gcm_seal(fx->w, "k", 1, aad, AADLEN,
		                     pt, sizes[i], nonce, ct, sizeof ct, &clen),
		    KW_OK);
		assert_int_equal(clen, sizes[i] + 16);
		assert_int_equal(kwd_p11_gcm_open(fx->w, "k", 1, aad, AADLEN,
		                     nonce, ct, clen, &back),
		    KW_OK);
		assert_int_equal(kw_secret_len(back), sizes[i]);
		assert_memory_equal(kw_secret_data(back), pt, sizes[i]);
		kw_secret_free(back);
		back = NULL;
	}
	/* No AAD is allowed too, and is not the same as some AAD. */
	assert_int_equal(kwd_p11_gcm_seal(fx->w, "k", 1, NULL, 0, pt, 32, nonce,
	                     ct, sizeof ct, &clen),
	    KW_OK);
	assert_int_equal(kwd_p11_gcm_open(fx->w, "k", 1, NULL, 0, nonce, ct,
	                     clen, &back),
	    KW_OK);
	kw_secret_free(back);
	back = NULL;
	assert_int_equal(kwd_p11_gcm_open(fx->w, "k", 1, aad, AADLEN, nonce, ct,
	                     clen, &back),
	    KW_ERR_AUTH);
	assert_null(back);
	/* Output buffer too small and empty input are refused up front. */
	assert_int_equal(kwd_p11_gcm_seal(fx->w, "k", 1, aad, AADLEN, pt, 32,
	                     nonce, ct, 47, &clen),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_p11_gcm_seal(fx->w, "k", 1, aad, AADLEN, pt, 0,
	                     nonce, ct, sizeof ct, &clen),
	    KW_ERR_INVALID);
}

static void
test_p11_gcm_nonces_unique(void **state)
{
	struct fx *fx = FX(state);
	unsigned char pt[32] = {0}, ct[48], nonces[200][12];
	size_t clen;

	assert_int_equal(kwd_p11_kek_generate(fx->w, "k", 1, NULL, NULL),
	    KW_OK);
	for (int i = 0; i < 200; i++) {
		assert_int_equal(kwd_p11_gcm_seal(fx->w, "k", 1, aad, AADLEN,
		                     pt, 32, nonces[i], ct, sizeof ct, &clen),
		    KW_OK);
		for (int j = 0; j < i; j++)
			assert_memory_not_equal(nonces[i], nonces[j], 12);
	}
}

static void
test_p11_gcm_wrong_aad_then_recovers(void **state)
{
	struct fx *fx = FX(state);
	unsigned char pt[32], nonce[12], ct[48];
	unsigned char other[AADLEN];
	struct kw_secret *back = NULL;
	size_t clen;

	randombytes_buf(pt, sizeof pt);
	assert_int_equal(kwd_p11_kek_generate(fx->w, "k", 1, NULL, NULL),
	    KW_OK);
	assert_int_equal(kwd_p11_gcm_seal(fx->w, "k", 1, aad, AADLEN, pt, 32,
	                     nonce, ct, sizeof ct, &clen),
	    KW_OK);
	memcpy(other, aad, AADLEN);
	other[AADLEN - 2] ^= 1; /* "imagenet-2027" */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(kwd_p11_gcm_open(fx->w, "k", 1, other, AADLEN,
		                     nonce, ct, clen, &back),
		    KW_ERR_AUTH);
		assert_null(back);
	}
	/* A refused tag is the data's fault: the HSM stays up and the same
	 * worker keeps working. */
	assert_true(kwd_p11_healthy(fx->p11));
	assert_int_equal(kwd_p11_gcm_open(fx->w, "k", 1, aad, AADLEN, nonce, ct,
	                     clen, &back),
	    KW_OK);
	assert_memory_equal(kw_secret_data(back), pt, 32);
	kw_secret_free(back);
	/* Shorter AAD (a truncated context) fails as well. */
	back = NULL;
	assert_int_equal(kwd_p11_gcm_open(fx->w, "k", 1, aad, AADLEN - 1, nonce,
	                     ct, clen, &back),
	    KW_ERR_AUTH);
}

static void
test_p11_gcm_every_bitflip_fails(void **state)
{
	struct fx *fx = FX(state);
	unsigned char pt[32], nonce[12], ct[48], bad[48], badn[12];
	struct kw_secret *back = NULL;
	size_t clen;
	int n = 0;

	randombytes_buf(pt, sizeof pt);
	assert_int_equal(kwd_p11_kek_generate(fx->w, "k", 1, NULL, NULL),
	    KW_OK);
	assert_int_equal(kwd_p11_gcm_seal(fx->w, "k", 1, aad, AADLEN, pt, 32,
	                     nonce, ct, sizeof ct, &clen),
	    KW_OK);
	for (size_t bit = 0; bit < clen * 8; bit++, n++) {
		memcpy(bad, ct, clen);
		bad[bit / 8] ^= (unsigned char)(1u << (bit % 8));
		assert_int_equal(kwd_p11_gcm_open(fx->w, "k", 1, aad, AADLEN,
		                     nonce, bad, clen, &back),
		    KW_ERR_AUTH);
	}
	for (size_t bit = 0; bit < sizeof nonce * 8; bit++, n++) {
		memcpy(badn, nonce, sizeof nonce);
		badn[bit / 8] ^= (unsigned char)(1u << (bit % 8));
		assert_int_equal(kwd_p11_gcm_open(fx->w, "k", 1, aad, AADLEN,
		                     badn, ct, clen, &back),
		    KW_ERR_AUTH);
	}
	assert_int_equal(n, 48 * 8 + 96);
	/* Truncated ciphertext (tag cut) fails too. */
	assert_int_equal(kwd_p11_gcm_open(fx->w, "k", 1, aad, AADLEN, nonce, ct,
	                     clen - 1, &back),
	    KW_ERR_AUTH);
	assert_true(kwd_p11_healthy(fx->p11));
}

static void
test_p11_gcm_wrong_key_or_version(void **state)
{
	struct fx *fx = FX(state);
	unsigned char pt[32] = {1}, nonce[12], ct[48];
	struct kw_secret *back = NULL;
	size_t clen;

	assert_int_equal(kwd_p11_kek_generate(fx->w, "a", 1, NULL, NULL),
	    KW_OK);
	assert_int_equal(kwd_p11_kek_generate(fx->w, "a", 2, NULL, NULL),
	    KW_OK);
	assert_int_equal(kwd_p11_kek_generate(fx->w, "b", 1, NULL, NULL),
	    KW_OK);
	assert_int_equal(kwd_p11_gcm_seal(fx->w, "a", 1, aad, AADLEN, pt, 32,
	                     nonce, ct, sizeof ct, &clen),
	    KW_OK);
	assert_int_equal(kwd_p11_gcm_open(fx->w, "a", 2, aad, AADLEN, nonce, ct,
	                     clen, &back),
	    KW_ERR_AUTH);
	assert_int_equal(kwd_p11_gcm_open(fx->w, "b", 1, aad, AADLEN, nonce, ct,
	                     clen, &back),
	    KW_ERR_AUTH);
	/* Unknown keys are answered from the cache, never searched for. */
	assert_int_equal(kwd_p11_gcm_open(fx->w, "a", 3, aad, AADLEN, nonce, ct,
	                     clen, &back),
	    KW_ERR_HSM_KEY);
	assert_int_equal(kwd_p11_gcm_open(fx->w, "Bad/Name", 1, aad, AADLEN,
	                     nonce, ct, clen, &back),
	    KW_ERR_INVALID);
	assert_null(back);
}

struct thread_arg {
	struct kwd_p11 *p11;
	int ops;
	int errors;
};

static void *
thread_main(void *p)
{
	struct thread_arg *ta = p;
	struct kwd_p11_worker *w = NULL;
	unsigned char pt[32], nonce[12], ct[48];
	struct kw_secret *back;
	size_t clen;

	if (kwd_p11_worker_new(ta->p11, &w) != KW_OK) {
		ta->errors = ta->ops;
		return NULL;
	}
	for (int i = 0; i < ta->ops; i += 2) {
		randombytes_buf(pt, sizeof pt);
		back = NULL;
		if (kwd_p11_gcm_seal(w, "k", 1, aad, AADLEN, pt, 32, nonce, ct,
		        sizeof ct, &clen) != KW_OK ||
		    kwd_p11_gcm_open(w, "k", 1, aad, AADLEN, nonce, ct, clen,
		        &back) != KW_OK ||
		    !kw_memeq(kw_secret_data(back), pt, 32))
			ta->errors++;
		kw_secret_free(back);
	}
	kwd_p11_worker_free(w);
	return NULL;
}

static void
test_p11_two_threads_10000_ops(void **state)
{
	struct fx *fx = FX(state);
	struct thread_arg ta[2] = {{fx->p11, 10000, 0}, {fx->p11, 10000, 0}};
	pthread_t th[2];

	assert_int_equal(kwd_p11_kek_generate(fx->w, "k", 1, NULL, NULL),
	    KW_OK);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, thread_main,
		                     &ta[i]),
		    0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	assert_int_equal(ta[0].errors, 0);
	assert_int_equal(ta[1].errors, 0);
}

static void
test_p11_no_find_objects_on_hot_path(void **state)
{
	struct fx *fx = FX(state);
	unsigned char pt[32] = {0}, nonce[12], ct[48], dg[32] = {0}, sig[64];
	struct kw_secret *back = NULL;
	size_t clen;

	assert_int_equal(kwd_p11_kek_generate(fx->w, "k", 1, NULL, NULL),
	    KW_OK);
	assert_int_equal(kwd_p11_ec_generate(fx->w, "s", 1, NULL, NULL), KW_OK);
	kwt_fault_reset_calls(&fx->tok);
	for (int i = 0; i < 100; i++) {
		assert_int_equal(kwd_p11_gcm_seal(fx->w, "k", 1, aad, AADLEN,
		                     pt, 32, nonce, ct, sizeof ct, &clen),
		    KW_OK);
		assert_int_equal(kwd_p11_gcm_open(fx->w, "k", 1, aad, AADLEN,
		                     nonce, ct, clen, &back),
		    KW_OK);
		kw_secret_free(back);
		back = NULL;
		assert_int_equal(kwd_p11_ecdsa_sign(fx->w, "s", 1, dg, sig),
		    KW_OK);
		assert_int_equal(kwd_p11_random(fx->w, dg, sizeof dg), KW_OK);
	}
	assert_int_equal(kwt_fault_calls(&fx->tok, "C_Encrypt"), 100);
	assert_int_equal(kwt_fault_calls(&fx->tok, "C_Sign"), 100);
	assert_int_equal(kwt_fault_calls(&fx->tok, "C_FindObjectsInit"), 0);
	assert_int_equal(kwt_fault_calls(&fx->tok, "C_FindObjects"), 0);
	/* One long-lived session: none opened or closed per operation. */
	assert_int_equal(kwt_fault_calls(&fx->tok, "C_OpenSession"), 0);
	assert_int_equal(kwt_fault_calls(&fx->tok, "C_CloseSession"), 0);
}

static void
test_p11_ecdsa_sign_verifies(void **state)
{
	struct fx *fx = FX(state);
	unsigned char dg[32], sig[64], der[80];
	EVP_PKEY *pub = NULL;
	EVP_PKEY_CTX *vc;
	size_t dlen;

	assert_int_equal(kwd_p11_ec_generate(fx->w, "tok", 1, NULL, NULL),
	    KW_OK);
	assert_int_equal(kwd_p11_ec_generate(fx->w, "tok", 1, NULL, NULL),
	    KW_ERR_EXISTS);
	randombytes_buf(dg, sizeof dg);
	assert_int_equal(kwd_p11_ecdsa_sign(fx->w, "tok", 1, dg, sig), KW_OK);
	assert_int_equal(kwd_p11_ecdsa_der(sig, der, sizeof der, &dlen), KW_OK);
	assert_int_equal(kwd_p11_ec_public(fx->w, "tok", 1, &pub), KW_OK);
	vc = EVP_PKEY_CTX_new(pub, NULL);
	assert_non_null(vc);
	assert_int_equal(EVP_PKEY_verify_init(vc), 1);
	assert_int_equal(EVP_PKEY_verify(vc, der, dlen, dg, sizeof dg), 1);
	dg[0] ^= 1;
	assert_int_not_equal(EVP_PKEY_verify(vc, der, dlen, dg, sizeof dg), 1);
	EVP_PKEY_CTX_free(vc);
	EVP_PKEY_free(pub);
	/* Signing with a KEK's name as a signer is refused. */
	assert_int_equal(kwd_p11_kek_generate(fx->w, "kek", 1, NULL, NULL),
	    KW_OK);
	assert_int_equal(kwd_p11_ecdsa_sign(fx->w, "kek", 1, dg, sig),
	    KW_ERR_HSM_KEY);
}

static X509 *
make_cert(EVP_PKEY *subject_key, const char *cn, X509 *issuer, EVP_PKEY *signer,
    bool ca)
{
	X509 *x = X509_new();
	X509_NAME *n = X509_NAME_new();
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	unsigned char serial[16];
	BIGNUM *bn;

	assert_non_null(x);
	assert_int_equal(X509_set_version(x, 2), 1);
	randombytes_buf(serial, sizeof serial);
	serial[0] &= 0x7f;
	bn = BN_bin2bn(serial, sizeof serial, NULL);
	BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	BN_free(bn);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0);
	X509_set_subject_name(x, n);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
	X509_NAME_free(n);
	assert_int_equal(X509_set_pubkey(x, subject_key), 1);
	X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
	    ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_key_usage,
	    ca ? "critical,keyCertSign" : "critical,digitalSignature");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	ext =
	    X509V3_EXT_conf_nid(NULL, &v3, NID_subject_key_identifier, "hash");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_authority_key_identifier,
	    "keyid:always");
	assert_non_null(ext);
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	assert_true(X509_sign(x, signer, EVP_sha256()) > 0);
	return x;
}

static void
write_pem(const char *path, X509 *x)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, x), 1);
	assert_int_equal(fclose(f), 0);
}

static void
test_p11_libp11_signs_x509_openssl_verifies(void **state)
{
	struct fx *fx = FX(state);
	EVP_PKEY *ca_priv = NULL, *ca_pub = NULL, *leaf_key;
	X509 *ca, *leaf;
	char ca_path[PATH_MAX + 16], leaf_path[PATH_MAX + 16],
	    cmd[3 * PATH_MAX];

	if (system("command -v openssl >/dev/null 2>&1") != 0) {
		fprintf(stderr, "SKIP: openssl command not found\n");
		skip();
	}
	assert_int_equal(kwd_p11_ec_generate(fx->w, "ca", 1, NULL, NULL),
	    KW_OK);
	assert_int_equal(kwd_p11_evp_private(fx->p11, "ca", 1, &ca_priv),
	    KW_OK);
	assert_int_equal(kwd_p11_ec_public(fx->w, "ca", 1, &ca_pub), KW_OK);
	assert_int_equal(kwd_p11_evp_private(fx->p11, "ca", 2, &leaf_key),
	    KW_ERR_HSM_KEY);
	/* A CA certificate self-signed in the HSM, then a leaf (software
	 * key) issued by it, also signed in the HSM. */
	ca = make_cert(ca_pub, "keyward test CA", NULL, ca_priv, true);
	leaf_key = EVP_EC_gen("P-256");
	assert_non_null(leaf_key);
	leaf = make_cert(leaf_key, "leaf", ca, ca_priv, false);
	assert_int_equal(X509_verify(leaf, ca_pub), 1);
	snprintf(ca_path, sizeof ca_path, "%s/ca.pem", fx->tok.dir);
	snprintf(leaf_path, sizeof leaf_path, "%s/leaf.pem", fx->tok.dir);
	write_pem(ca_path, ca);
	write_pem(leaf_path, leaf);
	snprintf(cmd, sizeof cmd,
	    "openssl verify -x509_strict -CAfile '%s' '%s' >/dev/null", ca_path,
	    leaf_path);
	assert_int_equal(system(cmd), 0);
	/* And openssl does reject a leaf not from this CA (the check can
	 * fail). */
	X509_free(leaf);
	{
		EVP_PKEY *other = EVP_EC_gen("P-256");

		leaf = make_cert(leaf_key, "leaf", ca, other, false);
		EVP_PKEY_free(other);
	}
	write_pem(leaf_path, leaf);
	assert_int_not_equal(system(cmd), 0);
	X509_free(leaf);
	X509_free(ca);
	EVP_PKEY_free(leaf_key);
	EVP_PKEY_free(ca_pub);
	EVP_PKEY_free(ca_priv);
}

static void
test_p11_list_destroy(void **state)
{
	struct fx *fx = FX(state);
	struct kwd_p11_object *objs = NULL;
	unsigned char id[KWD_P11_ID_LEN], pt[32] = {0}, nonce[12], ct[48];
	size_t n = 0, clen;

	memset(id, 0xab, sizeof id);
	assert_int_equal(kwd_p11_kek_generate(fx->w, "ds-b", 2, NULL, NULL),
	    KW_OK);
	assert_int_equal(kwd_p11_kek_generate(fx->w, "ds-b", 1, id, NULL),
	    KW_OK);
	assert_int_equal(kwd_p11_kek_generate(fx->w, "ds-a", 1, NULL, NULL),
	    KW_OK);
	assert_int_equal(kwd_p11_kek_generate(fx->w, "other", 1, NULL, NULL),
	    KW_OK);
	assert_int_equal(kwd_p11_ec_generate(fx->w, "ds-sig", 1, NULL, NULL),
	    KW_OK);
	assert_int_equal(kwd_p11_kek_generate(fx->w, "ds-a", 1, NULL, NULL),
	    KW_ERR_EXISTS);
	assert_int_equal(kwd_p11_list(fx->w, KWD_P11_KEK, "ds-", &objs, &n),
	    KW_OK);
	assert_int_equal(n, 3);
	assert_string_equal(objs[0].name, "ds-a");
	assert_string_equal(objs[1].name, "ds-b");
	assert_int_equal(objs[1].version, 1);
	assert_int_equal(objs[1].id_len, KWD_P11_ID_LEN);
	assert_memory_equal(objs[1].id, id, sizeof id);
	assert_int_equal(objs[2].version, 2);
	free(objs);
	assert_int_equal(kwd_p11_list(fx->w, KWD_P11_SIGNER, "", &objs, &n),
	    KW_OK);
	assert_int_equal(n, 1);
	free(objs);
	assert_int_equal(kwd_p11_destroy(fx->w, KWD_P11_KEK, "ds-b", 1), KW_OK);
	assert_int_equal(kwd_p11_destroy(fx->w, KWD_P11_KEK, "ds-b", 1),
	    KW_ERR_NOT_FOUND);
	assert_int_equal(kwd_p11_gcm_seal(fx->w, "ds-b", 1, aad, AADLEN, pt, 32,
	                     nonce, ct, sizeof ct, &clen),
	    KW_ERR_HSM_KEY);
	assert_int_equal(kwd_p11_gcm_seal(fx->w, "ds-b", 2, aad, AADLEN, pt, 32,
	                     nonce, ct, sizeof ct, &clen),
	    KW_OK);
	assert_int_equal(kwd_p11_destroy(fx->w, KWD_P11_SIGNER, "ds-sig", 1),
	    KW_OK);
	assert_int_equal(kwd_p11_list(fx->w, KWD_P11_KEK, "ds-", &objs, &n),
	    KW_OK);
	assert_int_equal(n, 2);
	free(objs);
	assert_int_equal(kwd_p11_list(fx->w, KWD_P11_SIGNER, "", &objs, &n),
	    KW_OK);
	assert_int_equal(n, 0);
	free(objs);
}

static void
test_p11_cache_survives_reopen(void **state)
{
	struct fx *fx = FX(state);
	struct kwd_p11_config cfg;
	unsigned char pt[32] = {7}, nonce[12], ct[48];
	struct kw_secret *back = NULL;
	size_t clen;

	assert_int_equal(kwd_p11_kek_generate(fx->w, "k", 4, NULL, NULL),
	    KW_OK);
	assert_int_equal(kwd_p11_gcm_seal(fx->w, "k", 4, aad, AADLEN, pt, 32,
	                     nonce, ct, sizeof ct, &clen),
	    KW_OK);
	kwd_p11_worker_free(fx->w);
	kwd_p11_free(fx->p11);
	fx->w = NULL;
	fx->p11 = NULL;
	/* A new process would do this: the handle cache is rebuilt. */
	kwt_config(&fx->tok, &cfg);
	assert_int_equal(kwd_p11_open(&cfg, &fx->p11), KW_OK);
	assert_int_equal(kwd_p11_worker_new(fx->p11, &fx->w), KW_OK);
	assert_int_equal(kwd_p11_gcm_open(fx->w, "k", 4, aad, AADLEN, nonce, ct,
	                     clen, &back),
	    KW_OK);
	assert_memory_equal(kw_secret_data(back), pt, 32);
	kw_secret_free(back);
}

static void
test_p11_random(void **state)
{
	struct fx *fx = FX(state);
	unsigned char a[32] = {0}, b[32] = {0}, zero[32] = {0};

	assert_int_equal(kwd_p11_random(fx->w, a, sizeof a), KW_OK);
	assert_int_equal(kwd_p11_random(fx->w, b, sizeof b), KW_OK);
	assert_memory_not_equal(a, zero, 32);
	assert_memory_not_equal(a, b, 32);
	assert_int_equal(kwd_p11_random(fx->w, a, 0), KW_ERR_INVALID);
}

/* ---- configuration and login failures ---- */

static int
open_with(const struct kwd_p11_config *cfg)
{
	struct kwd_p11 *p = NULL;
	int rv = kwd_p11_open(cfg, &p);

	if (rv == KW_OK)
		kwd_p11_free(p);
	else
		assert_null(p);
	return rv;
}

static void
test_p11_token_selection(void **state)
{
	struct fx *fx = FX(state);
	struct kwd_p11_config cfg;
	struct kwd_p11_token_info ti;
	char sel[256];

	kwd_p11_token(fx->p11, &ti);
	kwt_config(&fx->tok, &cfg);
	cfg.token = fx->tok.label; /* a plain label */
	assert_int_equal(open_with(&cfg), KW_OK);
	snprintf(sel, sizeof sel,
	    "pkcs11:token=%s;manufacturer=SoftHSM%%20project;serial=%s",
	    fx->tok.label, ti.serial);
	cfg.token = sel;
	assert_int_equal(open_with(&cfg), KW_OK);
	snprintf(sel, sizeof sel, "pkcs11:token=%s;serial=0000", fx->tok.label);
	assert_int_equal(open_with(&cfg), KW_ERR_HSM_TOKEN);
	cfg.token = "pkcs11:token=no-such-token";
	assert_int_equal(open_with(&cfg), KW_ERR_HSM_TOKEN);
	snprintf(sel, sizeof sel, "pkcs11:token=%s;pin-value=1234",
	    fx->tok.label);
	cfg.token = sel;
	assert_int_equal(open_with(&cfg), KW_ERR_CONFIG);
	/* Every initialized token matches "pkcs11:"; here there is one. */
	cfg.token = "pkcs11:";
	assert_int_equal(open_with(&cfg), KW_OK);
}

static void
test_p11_missing_module(void **state)
{
	struct fx *fx = FX(state);
	struct kwd_p11_config cfg;
	char path[PATH_MAX + 16];

	kwt_config(&fx->tok, &cfg);
	cfg.module = "/nonexistent/libpkcs11.so";
	assert_int_equal(open_with(&cfg), KW_ERR_HSM_MODULE);
	/* A shared object that is not a PKCS#11 module. */
	cfg.module = "libsodium.so.23";
	assert_int_equal(open_with(&cfg), KW_ERR_HSM_MODULE);
	/* A file that is not a shared object at all. */
	snprintf(path, sizeof path, "%s/pin", fx->tok.dir);
	cfg.module = path;
	assert_int_equal(open_with(&cfg), KW_ERR_HSM_MODULE);
	cfg.module = "";
	assert_int_equal(open_with(&cfg), KW_ERR_CONFIG);
}

static void
test_p11_wrong_pin_one_attempt(void **state)
{
	struct fx *fx = FX(state);
	struct kwd_p11_config cfg;
	struct kwd_p11 *p = NULL;
	char wrong_path[PATH_MAX + 16];
	unsigned char raw[16];
	char hex[33];
	void *hold;

	snprintf(wrong_path, sizeof wrong_path, "%s/wrong-pin", fx->tok.dir);
	randombytes_buf(raw, sizeof raw);
	sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
	kwt_write_file(wrong_path, hex, 32);
	kwd_p11_worker_free(fx->w);
	kwd_p11_free(fx->p11);
	fx->w = NULL;
	fx->p11 = NULL;
	/* Keep the fault module loaded so that its counters survive the
	 * layer's dlclose(). */
	hold = dlopen(fx->tok.module, RTLD_NOW);
	assert_non_null(hold);
	kwt_fault_reset_calls(&fx->tok);
	kwt_config(&fx->tok, &cfg);
	cfg.pin_file = wrong_path;
	assert_int_equal(kwd_p11_open(&cfg, &p), KW_ERR_HSM_PIN);
	assert_null(p);
	assert_int_equal(kwt_fault_calls(&fx->tok, "C_Login"), 1);
	/* The right PIN still works: one failure did not lock it. */
	kwt_config(&fx->tok, &cfg);
	assert_int_equal(kwd_p11_open(&cfg, &fx->p11), KW_OK);
	assert_int_equal(kwd_p11_worker_new(fx->p11, &fx->w), KW_OK);
	assert_int_equal(kwt_fault_calls(&fx->tok, "C_Login"), 2);
	dlclose(hold);
}

static void
test_p11_wrong_pin_never_retried(void **state)
{
	struct fx *fx = FX(state);
	CK_FUNCTION_LIST_PTR f = kwt_raw(&fx->tok);
	struct kwd_p11_token_info ti;
	CK_SESSION_HANDLE s;
	unsigned char pt[32] = {0}, nonce[12], ct[48], raw[16];
	char hex[33];
	size_t clen;
	int rv;

	assert_int_equal(kwd_p11_kek_generate(fx->w, "k", 1, NULL, NULL),
	    KW_OK);
	/* The PIN file now holds a wrong PIN, and the token logs out
	 * behind the layer's back: the layer must log in again. */
	randombytes_buf(raw, sizeof raw);
	sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
	kwt_write_file(fx->tok.pin_path, hex, 32);
	kwd_p11_token(fx->p11, &ti);
	assert_int_equal(f->C_OpenSession(ti.slot, CKF_SERIAL_SESSION, NULL,
	                     NULL, &s),
	    CKR_OK);
	assert_int_equal(f->C_Logout(s), CKR_OK);
	f->C_CloseSession(s);
	kwt_fault_reset_calls(&fx->tok);
	/* First operation fails: not logged in. */
	rv = kwd_p11_gcm_seal(fx->w, "k", 1, aad, AADLEN, pt, 32, nonce, ct,
	    sizeof ct, &clen);
	assert_int_not_equal(rv, KW_OK);
	/* The next ones try to reconnect: one login, refused, never again. */
	for (int i = 0; i < 20; i++) {
		rv = kwd_p11_gcm_seal(fx->w, "k", 1, aad, AADLEN, pt, 32, nonce,
		    ct, sizeof ct, &clen);
		assert_int_not_equal(rv, KW_OK);
		usleep(5000);
	}
	assert_int_equal(rv, KW_ERR_HSM_PIN);
	assert_false(kwd_p11_healthy(fx->p11));
	assert_int_equal(kwt_fault_calls(&fx->tok, "C_Login"), 1);
}

static void
test_p11_pin_from_env(void **state)
{
	struct fx *fx = FX(state);
	struct kwd_p11_config cfg;
	struct kw_secret *pin = NULL;
	char buf[64];

	assert_int_equal(kw_secret_read_file(fx->tok.pin_path, 64, &pin),
	    KW_OK);
	memcpy(buf, kw_secret_data(pin), kw_secret_len(pin));
	buf[kw_secret_len(pin)] = '\0';
	kw_secret_free(pin);
	assert_int_equal(setenv("KWTEST_PIN", buf, 1), 0);
	sodium_memzero(buf, sizeof buf);
	kwt_config(&fx->tok, &cfg);
	cfg.pin_file = NULL;
	cfg.pin_env = "KWTEST_PIN";
	assert_int_equal(open_with(&cfg), KW_OK);
	/* Taken out of the environment. */
	assert_null(getenv("KWTEST_PIN"));
	assert_int_equal(open_with(&cfg), KW_ERR_HSM_PIN);
	/* Both or neither source is a configuration error. */
	cfg.pin_file = fx->tok.pin_path;
	assert_int_equal(open_with(&cfg), KW_ERR_CONFIG);
	cfg.pin_file = NULL;
	cfg.pin_env = NULL;
	assert_int_equal(open_with(&cfg), KW_ERR_CONFIG);
}

static void
test_p11_pin_file_unsafe_mode(void **state)
{
	struct fx *fx = FX(state);
	struct kwd_p11_config cfg;

	assert_int_equal(chmod(fx->tok.pin_path, 0644), 0);
	kwt_config(&fx->tok, &cfg);
	assert_int_equal(open_with(&cfg), KW_ERR_HSM_PIN);
	assert_int_equal(chmod(fx->tok.pin_path, 0600), 0);
	assert_int_equal(open_with(&cfg), KW_OK);
}

/* ---- faults (fault module wrapping SoftHSM) ---- */

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
roundtrip(struct kwd_p11_worker *w)
{
	unsigned char pt[32], nonce[12], ct[48];
	struct kw_secret *back = NULL;
	size_t clen;
	int rv;

	randombytes_buf(pt, sizeof pt);
	rv = kwd_p11_gcm_seal(w, "k", 1, aad, AADLEN, pt, 32, nonce, ct,
	    sizeof ct, &clen);
	if (rv != KW_OK)
		return rv;
	rv = kwd_p11_gcm_open(w, "k", 1, aad, AADLEN, nonce, ct, clen, &back);
	if (rv == KW_OK && !kw_memeq(kw_secret_data(back), pt, 32))
		rv = KW_ERR_INTERNAL;
	kw_secret_free(back);
	return rv;
}

struct fault_case {
	const char *ckr;
	const char *func;
	int expect; /* KW_ERR_* of the first failing operation */
	bool down; /* token-wide: health reports it */
};

static void
run_fault_case(struct fx *fx, const struct fault_case *fc)
{
	char rule[128];
	double t0, worst = 0;
	int rv, first;

	assert_int_equal(roundtrip(fx->w), KW_OK);
	snprintf(rule, sizeof rule, "func=%s\nrv=%s\n", fc->func, fc->ckr);
	kwt_fault(&fx->tok, rule);
	first = roundtrip(fx->w);
	assert_int_equal(first, fc->expect);
	assert_int_equal(kwd_p11_healthy(fx->p11), !fc->down);
	/* While the fault lasts: errors, fast, no crash, no hang. */
	for (int i = 0; i < 30; i++) {
		t0 = now_s();
		rv = roundtrip(fx->w);
		if (now_s() - t0 > worst)
			worst = now_s() - t0;
		assert_int_not_equal(rv, KW_OK);
		usleep(10000);
	}
	assert_true(worst < 0.5);
	/* The fault clears: the layer recovers on its own within 5 s. */
	kwt_fault(&fx->tok, "");
	t0 = now_s();
	while ((rv = roundtrip(fx->w)) != KW_OK && now_s() - t0 < 5.0)
		usleep(20000);
	if (rv != KW_OK)
		fail_msg("%s: no recovery after 5 s (last %s)", fc->ckr,
		    kw_error_name(rv));
	assert_true(kwd_p11_healthy(fx->p11));
	for (int i = 0; i < 10; i++)
		assert_int_equal(roundtrip(fx->w), KW_OK);
}

static void
test_p11_faults_recover(void **state)
{
	static const struct fault_case cases[] = {
	    {"CKR_DEVICE_ERROR", "*", KW_ERR_HSM_DOWN, true},
	    {"CKR_DEVICE_REMOVED", "*", KW_ERR_HSM_DOWN, true},
	    {"CKR_TOKEN_NOT_PRESENT", "*", KW_ERR_HSM_DOWN, true},
	    {"CKR_SESSION_HANDLE_INVALID", "*", KW_ERR_HSM_DOWN, false},
	    {"CKR_FUNCTION_FAILED", "*", KW_ERR_HSM, false},
	    /* The same faults on the operation itself only. */
	    {"CKR_DEVICE_ERROR", "C_EncryptInit", KW_ERR_HSM_DOWN, true},
	    {"CKR_DEVICE_REMOVED", "C_Encrypt", KW_ERR_HSM_DOWN, true},
	    {"CKR_TOKEN_NOT_PRESENT", "C_EncryptInit", KW_ERR_HSM_DOWN, true},
	    {"CKR_SESSION_HANDLE_INVALID", "C_Encrypt", KW_ERR_HSM_DOWN, false},
	    {"CKR_FUNCTION_FAILED", "C_EncryptInit", KW_ERR_HSM, false},
	    /* A device error while decrypting is not an integrity failure. */
	    {"CKR_DEVICE_ERROR", "C_Decrypt", KW_ERR_HSM_DOWN, true},
	};
	struct fx *fx = FX(state);

	assert_int_equal(kwd_p11_kek_generate(fx->w, "k", 1, NULL, NULL),
	    KW_OK);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		run_fault_case(fx, &cases[i]);
}

static void
test_p11_fault_at_open(void **state)
{
	struct fx *fx = FX(state);
	struct kwd_p11_config cfg;

	kwt_config(&fx->tok, &cfg);
	kwt_fault(&fx->tok, "func=C_GetSlotList\nrv=CKR_DEVICE_ERROR\n");
	assert_int_equal(open_with(&cfg), KW_ERR_HSM_DOWN);
	kwt_fault(&fx->tok, "func=C_Initialize\nrv=CKR_DEVICE_ERROR\n");
	assert_int_equal(open_with(&cfg), KW_ERR_HSM_MODULE);
	kwt_fault(&fx->tok, "func=C_Login\nrv=CKR_PIN_LOCKED\n");
	assert_int_equal(open_with(&cfg), KW_ERR_HSM_PIN);
	kwt_fault(&fx->tok, "");
	assert_int_equal(open_with(&cfg), KW_OK);
}

static void
test_p11_slow_call_bounded(void **state)
{
	struct fx *fx = FX(state);
	double t0;

	assert_int_equal(kwd_p11_kek_generate(fx->w, "k", 1, NULL, NULL),
	    KW_OK);
	/* A slow HSM answers late but correctly. */
	kwt_fault(&fx->tok, "func=C_Encrypt\nsleep_ms=200\ntimes=1\n");
	t0 = now_s();
	assert_int_equal(roundtrip(fx->w), KW_OK);
	assert_true(now_s() - t0 >= 0.19);
	kwt_fault(&fx->tok, "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_p11_kek_attributes, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_p11_gcm_roundtrip, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_p11_gcm_nonces_unique, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(
	        test_p11_gcm_wrong_aad_then_recovers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_p11_gcm_every_bitflip_fails,
	        setup, teardown),
	    cmocka_unit_test_setup_teardown(test_p11_gcm_wrong_key_or_version,
	        setup, teardown),
	    cmocka_unit_test_setup_teardown(test_p11_two_threads_10000_ops,
	        setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_p11_no_find_objects_on_hot_path, setup_faulty, teardown),
	    cmocka_unit_test_setup_teardown(test_p11_ecdsa_sign_verifies, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(
	        test_p11_libp11_signs_x509_openssl_verifies, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_p11_list_destroy, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_p11_cache_survives_reopen,
	        setup, teardown),
	    cmocka_unit_test_setup_teardown(test_p11_random, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_p11_token_selection, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_p11_missing_module, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_p11_wrong_pin_one_attempt,
	        setup_faulty, teardown),
	    cmocka_unit_test_setup_teardown(test_p11_wrong_pin_never_retried,
	        setup_faulty, teardown),
	    cmocka_unit_test_setup_teardown(test_p11_pin_from_env, setup,
	        teardown),
	    cmocka_unit_test_setup_teardown(test_p11_pin_file_unsafe_mode,
	        setup, teardown),
	    cmocka_unit_test_setup_teardown(test_p11_faults_recover,
	        setup_faulty, teardown),
	    cmocka_unit_test_setup_teardown(test_p11_fault_at_open,
	        setup_faulty, teardown),
	    cmocka_unit_test_setup_teardown(test_p11_slow_call_bounded,
	        setup_faulty, teardown),
	};

	/* Failures are logged by the layer; keep the test output readable
	 * unless asked. */
	if (getenv("KW_TEST_VERBOSE") == NULL)
		kw_log_set_level(KW_LOG_ERR);
	if (getenv("KW_TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("KW_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}

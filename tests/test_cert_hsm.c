/*
 * test_cert_hsm.c: broker/cert.c with its CA key in a SoftHSMv2 token
 * (kwd_p11_evp_private through libp11), as the keeper uses it: the CA
 * certificate is self-signed in the HSM, a client certificate is issued
 * in the HSM, and OpenSSL verifies both against the HSM's public key.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cert.h"
#include "hsm_fixture.h"
#include "p11.h"

static void
test_cert_hsm_ca_issues_openssl_verifies(void **state)
{
	struct kwt_token tok;
	struct kwd_p11_config cfg;
	struct kwd_p11 *p11 = NULL;
	struct kwd_p11_worker *w = NULL;
	EVP_PKEY *ca_priv = NULL, *ca_pub = NULL, *client;
	X509 *ca = NULL, *leaf = NULL;
	X509_REQ *req, *parsed = NULL;
	X509_STORE *st;
	X509_STORE_CTX *ctx;
	char *pem, err[256] = "";
	size_t len;
	struct kwd_cert_template t = {
	    .organization = "keyward test",
	    .identity = "spiffe://prod.example/ns/ml/sa/trainer",
	    .ttl = 600,
	    .max_ttl = 3600,
	    .backdate = 60,
	};

	(void)state;
	if (!kwt_token_make(&tok, false))
		skip();
	kwt_config(&tok, &cfg);
	assert_int_equal(kwd_p11_open(&cfg, &p11), KW_OK);
	assert_int_equal(kwd_p11_worker_new(p11, &w), KW_OK);
	assert_int_equal(kwd_p11_ec_generate(w, "ca", 1, NULL, NULL), KW_OK);
	assert_int_equal(kwd_p11_evp_private(p11, "ca", 1, &ca_priv), KW_OK);
	assert_int_equal(kwd_p11_ec_public(w, "ca", 1, &ca_pub), KW_OK);

	/* The CA certificate, self-signed in the HSM. */
	assert_int_equal(kwd_cert_ca_self_sign(ca_priv, "keyward HSM CA", 1,
	                     &ca),
	    KW_OK);
	assert_int_equal(X509_verify(ca, ca_pub), 1);
	assert_int_equal(kwd_cert_ca_check(ca, ca_priv), KW_OK);

	/* A client's CSR, a certificate signed in the HSM. */
	client = EVP_EC_gen("P-256");
	assert_non_null(client);
	req = X509_REQ_new();
	assert_non_null(req);
	assert_int_equal(X509_REQ_set_pubkey(req, client), 1);
	assert_true(X509_REQ_sign(req, client, EVP_sha256()) > 0);
	{
		BIO *b = BIO_new(BIO_s_mem());
		char *data;

		assert_int_equal(PEM_write_bio_X509_REQ(b, req), 1);
		len = (size_t)BIO_get_mem_data(b, &data);
		pem = strndup(data, len);
		BIO_free(b);
	}
	if (kwd_cert_csr_parse(pem, len, &parsed, err, sizeof err) != KW_OK)
		fail_msg("CSR refused: %s", err);
	assert_int_equal(kwd_cert_issue(parsed, &t, ca, ca_priv, &leaf), KW_OK);
	assert_int_equal(X509_verify(leaf, ca_pub), 1);

	st = X509_STORE_new();
	ctx = X509_STORE_CTX_new();
	assert_int_equal(X509_STORE_add_cert(st, ca), 1);
	assert_int_equal(X509_STORE_CTX_init(ctx, st, leaf, NULL), 1);
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

	/* The HSM key is not the key of another CA certificate. */
	{
		EVP_PKEY *other = EVP_EC_gen("P-256");
		X509 *oca = NULL, *x = NULL;

		assert_int_equal(kwd_cert_ca_self_sign(other, "other", 1, &oca),
		    KW_OK);
		assert_int_equal(kwd_cert_ca_check(oca, ca_priv),
		    KW_ERR_CONFIG);
		assert_int_equal(kwd_cert_issue(parsed, &t, oca, ca_priv, &x),
		    KW_ERR_CONFIG);
		X509_free(oca);
		EVP_PKEY_free(other);
	}

	free(pem);
	X509_free(leaf);
	X509_REQ_free(parsed);
	X509_REQ_free(req);
	EVP_PKEY_free(client);
	X509_free(ca);
	EVP_PKEY_free(ca_pub);
	EVP_PKEY_free(ca_priv);
	kwd_p11_worker_free(w);
	kwd_p11_free(p11);
	kwt_token_remove(&tok);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cert_hsm_ca_issues_openssl_verifies),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * fuzz_csr.c: libFuzzer target for kwd_cert_csr_parse(), the parser of
 * the CSRs that clients send to POST /v1/certs. A CSR that parses is
 * issued by a fixed software CA (made once), and the certificate must
 * carry the CSR's key and the template's six extensions.
 *
 * An input starting with 0x30 (a DER SEQUENCE) is taken as DER and
 * wrapped in PEM first, so that the fuzzer can mutate the DER directly
 * rather than through base64; the corpus has both forms.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cert.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static EVP_PKEY *ca_key;
static X509 *ca;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	kw_log_set_level(KW_LOG_ERR);
	ca_key = EVP_EC_gen("P-256");
	if (ca_key == NULL ||
	    kwd_cert_ca_self_sign(ca_key, "fuzz CA", 30, &ca) != KW_OK) {
		fprintf(stderr, "fuzz_csr: cannot make the CA\n");
		abort();
	}
	return 0;
}

/* DER to one PEM block, 64 columns; NULL if too large to matter. */
static char *
pem_wrap(const uint8_t *der, size_t len, size_t *ret_len)
{
	static const char begin[] = "-----BEGIN CERTIFICATE REQUEST-----\n",
	                  end[] = "-----END CERTIFICATE REQUEST-----\n";
	size_t cap = sizeof begin + sizeof end + len / 48 * 66 + 70, off;
	char *pem;

	if (len > KWD_CERT_CSR_MAX)
		return NULL;
	if ((pem = malloc(cap)) == NULL)
		return NULL;
	memcpy(pem, begin, sizeof begin - 1);
	off = sizeof begin - 1;
	for (size_t i = 0; i < len; i += 48) {
		size_t n = len - i < 48 ? len - i : 48;

		off += (size_t)EVP_EncodeBlock((unsigned char *)pem + off,
		    der + i, (int)n);
		pem[off++] = '\n';
	}
	memcpy(pem + off, end, sizeof end - 1);
	*ret_len = off + sizeof end - 1;
	return pem;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kwd_cert_template t = {
	    .organization = "fuzz",
	    .identity = "spiffe://fuzz.example/job",
	    .ttl = 60,
	    .max_ttl = 60,
	    .backdate = 0,
	};
	X509_REQ *req = NULL;
	X509 *x = NULL;
	char err[256], *pem = NULL, *wrapped = NULL;
	int rv;

	if (size > 0 && data[0] == 0x30) {
		wrapped = pem_wrap(data, size, &size);
		if (wrapped == NULL)
			return 0;
		data = (const uint8_t *)wrapped;
	}
	rv =
	    kwd_cert_csr_parse((const char *)data, size, &req, err, sizeof err);
	free(wrapped);
	if (rv != KW_OK) {
		if (req != NULL ||
		    ((rv == KW_ERR_INVALID || rv == KW_ERR_TOO_LARGE) &&
		        strlen(err) == 0)) {
			fprintf(stderr, "fuzz_csr: refusal without reason\n");
			abort();
		}
		return 0;
	}
	rv = kwd_cert_issue(req, &t, ca, ca_key, &x);
	if (rv != KW_OK) {
		fprintf(stderr, "fuzz_csr: parsed CSR not issued: %d\n", rv);
		abort();
	}
	if (EVP_PKEY_eq(X509_get0_pubkey(x), X509_REQ_get0_pubkey(req)) != 1 ||
	    X509_get_ext_count(x) != 6 || X509_verify(x, ca_key) != 1 ||
	    kwd_cert_pem(x, &pem) != KW_OK) {
		fprintf(stderr, "fuzz_csr: certificate not as issued\n");
		abort();
	}
	free(pem);
	X509_free(x);
	X509_REQ_free(req);
	return 0;
}

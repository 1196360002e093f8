/*
 * cert_tool.c: a test-only driver of broker/cert.c with a software CA, for
 * tests/integration/test_cert_openssl.sh (the openssl CLI then checks what
 * it made).
 *
 *   cert_tool ca KEY_OUT CERT_OUT [CURVE]
 *       a new EC CA key (P-256 unless CURVE is P-384) and its self-signed
 *       certificate from kwd_cert_ca_self_sign()
 *   cert_tool issue KEY CERT CSR IDENTITY TTL MAX_TTL
 *       parse CSR with kwd_cert_csr_parse(), issue with the template
 *       O="keyward test", IDENTITY, TTL, MAX_TTL, 300 s backdate; the
 *       certificate in PEM on stdout
 *
 * Exit status: 0; 3 if the CSR is refused (reason on stderr); 4 if issuing
 * is refused (the KW_ERR_* name on stderr); 1 on other errors; 2 usage.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cert.h"
#include "keyward.h"

static int
usage(void)
{
	fprintf(stderr,
	    "usage: cert_tool ca KEY_OUT CERT_OUT [P-256|P-384]\n"
	    "       cert_tool issue KEY CERT CSR IDENTITY TTL "
	    "MAX_TTL\n");
	return 2;
}

static int
ca(int argc, char **argv)
{
	const char *curve = argc > 4 ? argv[4] : "P-256";
	EVP_PKEY *key = EVP_EC_gen(curve);
	X509 *x = NULL;
	FILE *f;
	int rv;

	if (key == NULL) {
		fprintf(stderr, "cert_tool: cannot make a %s key\n", curve);
		return 1;
	}
	rv = kwd_cert_ca_self_sign(key, "keyward test CA", 30, &x);
	if (rv != KW_OK) {
		fprintf(stderr, "cert_tool: ca_self_sign: %s\n",
		    kw_error_name(rv));
		EVP_PKEY_free(key);
		return 1;
	}
	rv = 1;
	if ((f = fopen(argv[2], "w")) != NULL) {
		if (PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) ==
		        1 &&
		    fclose(f) == 0 && (f = fopen(argv[3], "w")) != NULL) {
			if (PEM_write_X509(f, x) == 1 && fclose(f) == 0)
				rv = 0;
		}
	}
	if (rv != 0)
		fprintf(stderr, "cert_tool: cannot write the CA files\n");
	X509_free(x);
	EVP_PKEY_free(key);
	return rv;
}

static char *
slurp(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (f == NULL)
		return NULL;
	do {
		if (len == cap) {
			char *nb = realloc(buf, cap = cap ? cap * 2 : 4096);

			if (nb == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	fclose(f);
	*ret_len = len;
	return buf;
}

static int
issue(char **argv)
{
	struct kwd_cert_template t = {
	    .organization = "keyward test",
	    .identity = argv[5],
	    .ttl = (unsigned)strtoul(argv[6], NULL, 10),
	    .max_ttl = (unsigned)strtoul(argv[7], NULL, 10),
	    .backdate = 300,
	};
	EVP_PKEY *key = NULL;
	X509 *cacert = NULL, *x = NULL;
	X509_REQ *req = NULL;
	char err[256], *csr = NULL, *pem = NULL;
	size_t len = 0;
	FILE *f;
	int rv, status = 1;

	if ((f = fopen(argv[2], "r")) != NULL) {
		key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	}
	if ((f = fopen(argv[3], "r")) != NULL) {
		cacert = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
	}
	csr = slurp(argv[4], &len);
	if (key == NULL || cacert == NULL || csr == NULL) {
		fprintf(stderr, "cert_tool: cannot read the CA or the CSR\n");
		goto out;
	}
	rv = kwd_cert_csr_parse(csr, len, &req, err, sizeof err);
	if (rv != KW_OK) {
		fprintf(stderr, "cert_tool: CSR refused: %s: %s\n",
		    kw_error_name(rv), err);
		status = 3;
		goto out;
	}
	rv = kwd_cert_issue(req, &t, cacert, key, &x);
	if (rv != KW_OK) {
		fprintf(stderr, "cert_tool: issue refused: %s\n",
		    kw_error_name(rv));
		status = 4;
		goto out;
	}
	if (kwd_cert_pem(x, &pem) != KW_OK || fputs(pem, stdout) == EOF)
		goto out;
	status = 0;
out:
	free(pem);
	free(csr);
	X509_free(x);
	X509_REQ_free(req);
	X509_free(cacert);
	EVP_PKEY_free(key);
	return status;
}

int
main(int argc, char **argv)
{
	if (argc >= 4 && argc <= 5 && strcmp(argv[1], "ca") == 0)
		return ca(argc, argv);
	if (argc == 8 && strcmp(argv[1], "issue") == 0)
		return issue(argv);
	return usage();
}

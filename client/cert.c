/*
 * cert.c: short-lived client certificates (POST /v1/certs, docs/API.md,
 * docs/CERTS.md).
 *
 * The key pair is made here, with OpenSSL, and only the CSR leaves the
 * machine: it carries the public key and proves possession of the
 * private one by its signature (RFC 2986). The server takes nothing else
 * from it; the identity in the certificate is the caller's.
 *
 * The private key's PEM goes through an OpenSSL secure-memory BIO (wiped
 * when freed) straight into a file created 0600; OpenSSL's own key
 * structures are freed with their clearing frees. Every file is written
 * beside its target and renamed over it, after the server's answer has
 * been checked (the certificate holds our key and is signed by the CA it
 * came with), and all three temporary files are written before the
 * first rename, so that a failure leaves the old files in place.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "keyward.h"
#include "secret.h"
#include "text.h"

#define CA_SUFFIX ".ca.pem"
#define PEM_MAX (64u << 10)
#define CERT_TTL_MAX 604800u

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

/* A file being written: its temporary path and descriptor. */
struct out {
	const char *path;
	char tmp[4096];
	int fd;
};

static int
out_open(kw_client *c, struct out *o, const char *path, mode_t mode)
{
	char pbuf[132], *copy, *base;
	int n;

	o->path = path;
	o->fd = -1;
	copy = strdup(path);
	if (copy == NULL)
		return kw_client_fail(c, KW_ERR_NOMEM, "out of memory");
	base = basename(copy);
	n = snprintf(o->tmp, sizeof o->tmp, "%.*s.%s.XXXXXX",
	    (int)(strlen(path) - strlen(base)), path, base);
	free(copy);
	if (n < 0 || (size_t)n >= sizeof o->tmp)
		return kw_client_fail(c, KW_ERR_INVALID, "%s: path too long",
		    kw_defang(path, 128, pbuf));
	o->fd = mkostemp(o->tmp, O_CLOEXEC); /* mode 0600 */
	if (o->fd < 0) {
		o->tmp[0] = '\0';
		return kw_client_fail(c, KW_ERR_IO,
		    "%s: cannot create a file beside it: %s",
		    kw_defang(path, 128, pbuf), strerror(errno));
	}
	if (mode != 0600 && fchmod(o->fd, mode) != 0)
		return kw_client_fail(c, KW_ERR_IO, "%s: %s",
		    kw_defang(path, 128, pbuf), strerror(errno));
	return KW_OK;
}

static int
out_write(kw_client *c, struct out *o, const void *data, size_t len)
{
	const char *p = data;
	char pbuf[132];

	while (len > 0) {
		ssize_t n = write(o->fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return kw_client_fail(c, KW_ERR_IO, "%s: %s",
			    kw_defang(o->path, 128, pbuf),
			    n < 0 ? strerror(errno) : "short write");
		p += n;
		len -= (size_t)n;
	}
	if (fsync(o->fd) != 0)
		return kw_client_fail(c, KW_ERR_IO, "%s: %s",
		    kw_defang(o->path, 128, pbuf), strerror(errno));
	return KW_OK;
}

static int
out_commit(kw_client *c, struct out *o)
{
	char pbuf[132], *copy;
	int dfd;

	if (rename(o->tmp, o->path) != 0)
		return kw_client_fail(c, KW_ERR_IO, "%s: %s",
		    kw_defang(o->path, 128, pbuf), strerror(errno));
	o->tmp[0] = '\0';
	copy = strdup(o->path);
	if (copy != NULL) {
		dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			(void)fsync(dfd);
			close(dfd);
		}
		free(copy);
	}
	return KW_OK;
}

/* out_abandon: the temporary file removed, if still there. */
static void
out_abandon(struct out *o)
{
	if (o->fd >= 0)
		close(o->fd);
	o->fd = -1;
	if (o->tmp[0] != '\0')
		(void)unlink(o->tmp);
	o->tmp[0] = '\0';
}

/* make_csr: a PKCS#10 request for pkey, signed with SHA-256, as PEM. */
static int
make_csr(kw_client *c, EVP_PKEY *pkey, char **ret_pem)
{
	X509_REQ *req = NULL;
	BIO *bio = NULL;
	char *data, *pem = NULL;
	long len;
	int rc = KW_ERR_CRYPTO;

	/* No subject, no attributes: the server uses the public key only
	 * and fills in the rest from its template (docs/CERTS.md). */
	req = X509_REQ_new();
	bio = BIO_new(BIO_s_mem());
	if (req == NULL || bio == NULL || X509_REQ_set_version(req, 0) != 1 ||
	    X509_REQ_set_pubkey(req, pkey) != 1 ||
	    X509_REQ_sign(req, pkey, EVP_sha256()) <= 0 ||
	    PEM_write_bio_X509_REQ(bio, req) != 1)
		goto out;
	len = BIO_get_mem_data(bio, &data);
	if (len <= 0)
		goto out;
	pem = strndup(data, (size_t)len);
	if (pem == NULL) {
		rc = KW_ERR_NOMEM;
		goto out;
	}
	*ret_pem = pem;
	rc = KW_OK;
out:
	BIO_free(bio);
	X509_REQ_free(req);
	if (rc != KW_OK)
		return kw_client_fail(c, rc, "cannot make the CSR: %s",
		    rc == KW_ERR_NOMEM ? "out of memory" : "OpenSSL failed");
	return KW_OK;
}

/* one_cert: the single certificate in pem, or NULL. */
static X509 *
one_cert(const char *pem)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	X509 *x = NULL, *extra = NULL;

	if (bio == NULL)
		return NULL;
	x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	if (x != NULL) {
		extra = PEM_read_bio_X509(bio, NULL, NULL, NULL);
		if (extra != NULL) {
			X509_free(extra);
			X509_free(x);
			x = NULL;
		}
	}
	BIO_free(bio);
	return x;
}

/* key_pem: the private key as PKCS#8 PEM in wiped memory. */
static int
key_pem(kw_client *c, EVP_PKEY *pkey, BIO **ret_bio)
{
	BIO *bio = BIO_new(BIO_s_secmem());

	if (bio == NULL ||
	    PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) !=
	        1) {
		BIO_free(bio);
		return kw_client_fail(c, KW_ERR_CRYPTO,
		    "cannot encode the private key (OpenSSL)");
	}
	*ret_bio = bio;
	return KW_OK;
}

int
kw_cert_request(kw_client *c, const char *key_out, const char *cert_out,
    unsigned ttl, char *err, size_t errlen)
{
	struct out okey = {.fd = -1}, ocert = {.fd = -1}, oca = {.fd = -1};
	const char *cert_pem, *ca_pem;
	char *csr = NULL, *body = NULL, *ans = NULL, *ca_path = NULL;
	EVP_PKEY *pkey = NULL;
	X509 *cert = NULL, *ca = NULL;
	BIO *kbio = NULL;
	json_t *obj = NULL, *root = NULL, *exp;
	size_t len = 0;
	char *kdata;
	long klen;
	int rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (c == NULL)
		return seterr(err, errlen, KW_ERR_INVALID, "no client");
	kw_client_clear(c);
	if (key_out == NULL || cert_out == NULL || key_out[0] == '\0' ||
	    cert_out[0] == '\0') {
		rc = kw_client_fail(c, KW_ERR_INVALID,
		    "a key file and a certificate file are needed");
		goto out;
	}
	if (strcmp(key_out, cert_out) == 0) {
		rc = kw_client_fail(c, KW_ERR_INVALID,
		    "the key and the certificate need files of their own");
		goto out;
	}
	if (ttl > CERT_TTL_MAX) {
		rc = kw_client_fail(c, KW_ERR_INVALID,
		    "ttl: at most %u seconds (7 days)", CERT_TTL_MAX);
		goto out;
	}
	if (asprintf(&ca_path, "%s%s", cert_out, CA_SUFFIX) < 0) {
		ca_path = NULL;
		rc = kw_client_fail(c, KW_ERR_NOMEM, "out of memory");
		goto out;
	}

	/* P-256, named curve, uncompressed point: what the server's key
	 * policy asks for (docs/CERTS.md "Key policy"). */
	pkey = EVP_EC_gen("P-256");
	if (pkey == NULL) {
		rc = kw_client_fail(c, KW_ERR_CRYPTO,
		    "cannot make a P-256 key (OpenSSL)");
		goto out;
	}
	rc = make_csr(c, pkey, &csr);
	if (rc != KW_OK)
		goto out;
	obj = json_pack("{s:s}", "csr", csr);
	if (obj != NULL && ttl > 0)
		json_object_set_new(obj, "ttl", json_integer((json_int_t)ttl));
	body = obj != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;
	if (body == NULL) {
		rc = kw_client_fail(c, KW_ERR_NOMEM, "out of memory");
		goto out;
	}
	rc = kw_call(c, KW_CALL_WRITE, "POST", "/v1/certs", body, false, NULL,
	    &ans, &len);
	if (rc != KW_OK)
		goto out;
	root = json_loadb(ans, len, JSON_REJECT_DUPLICATES, NULL);
	cert_pem = json_string_value(json_object_get(root, "certificate"));
	ca_pem = json_string_value(json_object_get(root, "ca"));
	exp = json_object_get(root, "expires_at");
	if (cert_pem == NULL || ca_pem == NULL || !json_is_integer(exp) ||
	    strlen(cert_pem) > PEM_MAX || strlen(ca_pem) > PEM_MAX) {
		rc = kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer is not the JSON the API describes");
		goto out;
	}
	cert = one_cert(cert_pem);
	ca = one_cert(ca_pem);
	if (cert == NULL || ca == NULL) {
		rc = kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer's certificate or CA is not one PEM "
		    "certificate");
		goto out;
	}
	if (EVP_PKEY_eq(X509_get0_pubkey(cert), pkey) != 1) {
		rc = kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the certificate does not hold the key we sent");
		goto out;
	}
	if (X509_verify(cert, X509_get0_pubkey(ca)) != 1) {
		rc = kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the certificate is not signed by the CA it came with");
		goto out;
	}

	rc = key_pem(c, pkey, &kbio);
	if (rc != KW_OK)
		goto out;
	klen = BIO_get_mem_data(kbio, &kdata);
	rc = out_open(c, &okey, key_out, 0600);
	if (rc == KW_OK)
		rc = out_write(c, &okey, kdata, klen > 0 ? (size_t)klen : 0);
	if (rc == KW_OK)
		rc = out_open(c, &ocert, cert_out, 0644);
	if (rc == KW_OK)
		rc = out_write(c, &ocert, cert_pem, strlen(cert_pem));
	if (rc == KW_OK)
		rc = out_open(c, &oca, ca_path, 0644);
	if (rc == KW_OK)
		rc = out_write(c, &oca, ca_pem, strlen(ca_pem));
	/* The key first: a reader that finds the new certificate finds
	 * its key too. */
	if (rc == KW_OK)
		rc = out_commit(c, &okey);
	if (rc == KW_OK)
		rc = out_commit(c, &ocert);
	if (rc == KW_OK)
		rc = out_commit(c, &oca);
out:
	out_abandon(&okey);
	out_abandon(&ocert);
	out_abandon(&oca);
	BIO_free(kbio);
	json_decref(root);
	json_decref(obj);
	X509_free(cert);
	X509_free(ca);
	EVP_PKEY_free(pkey);
	free(ans);
	free(body);
	free(csr);
	free(ca_path);
	if (rc != KW_OK)
		seterr(err, errlen, rc, "%s",
		    kw_client_message(c)[0] != '\0' ? kw_client_message(c)
		                                    : kw_strerror(rc));
	return rc;
}

static int
no_password(char *buf, int size, int rwflag, void *arg)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)arg;
	return -1; /* an encrypted key is not ours: never prompt */
}

int
kw_cert_check(const char *key_path, const char *cert_path,
    unsigned long long *ret_not_after, char *err, size_t errlen)
{
	char pbuf[132], kbuf[132];
	struct tm tm;
	struct stat st;
	FILE *f = NULL;
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	time_t na;
	int rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (key_path == NULL || cert_path == NULL)
		return seterr(err, errlen, KW_ERR_INVALID,
		    "a key file and a certificate file are needed");
	f = fopen(cert_path, "re");
	if (f == NULL)
		return seterr(err, errlen,
		    errno == ENOENT ? KW_ERR_NOT_FOUND : KW_ERR_IO, "%s: %s",
		    kw_defang(cert_path, 128, pbuf), strerror(errno));
	cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (cert == NULL)
		return seterr(err, errlen, KW_ERR_INVALID,
		    "%s: not a PEM certificate",
		    kw_defang(cert_path, 128, pbuf));
	f = fopen(key_path, "re");
	if (f == NULL) {
		rc = seterr(err, errlen,
		    errno == ENOENT ? KW_ERR_NOT_FOUND : KW_ERR_IO, "%s: %s",
		    kw_defang(key_path, 128, pbuf), strerror(errno));
		goto out;
	}
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) ||
	    (st.st_mode & 077) != 0) {
		fclose(f);
		rc = seterr(err, errlen, KW_ERR_PERM,
		    "%s: a private key must be a regular file readable by its "
		    "owner only (chmod 0600)",
		    kw_defang(key_path, 128, pbuf));
		goto out;
	}
	key = PEM_read_PrivateKey(f, NULL, no_password, NULL);
	fclose(f);
	if (key == NULL) {
		rc = seterr(err, errlen, KW_ERR_INVALID,
		    "%s: not an unencrypted PEM private key",
		    kw_defang(key_path, 128, pbuf));
		goto out;
	}
	if (EVP_PKEY_eq(X509_get0_pubkey(cert), key) != 1) {
		rc = seterr(err, errlen, KW_ERR_AUTH,
		    "%s does not hold the public key of %s",
		    kw_defang(cert_path, 128, pbuf),
		    kw_defang(key_path, 128, kbuf));
		goto out;
	}
	if (X509_cmp_current_time(X509_get0_notBefore(cert)) >= 0) {
		rc = seterr(err, errlen, KW_ERR_AUTH,
		    "%s: not valid yet (check the clock)",
		    kw_defang(cert_path, 128, pbuf));
		goto out;
	}
	if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0) {
		rc = seterr(err, errlen, KW_ERR_AUTH, "%s: expired",
		    kw_defang(cert_path, 128, pbuf));
		goto out;
	}
	if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1 ||
	    (na = timegm(&tm)) == (time_t)-1) {
		rc = seterr(err, errlen, KW_ERR_INVALID,
		    "%s: unreadable notAfter", kw_defang(cert_path, 128, pbuf));
		goto out;
	}
	if (ret_not_after != NULL)
		*ret_not_after = (unsigned long long)na;
	rc = KW_OK;
out:
	EVP_PKEY_free(key);
	X509_free(cert);
	return rc;
}

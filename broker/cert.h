/*
 * cert.h: short-lived X.509 client certificates issued from a CSR by the
 * keeper's CA key (docs/CERTS.md).
 *
 * Pure OpenSSL. The CA key is an EVP_PKEY: in keywardd the HSM key from
 * kwd_p11_evp_private() (every signature is made in the HSM), in tests a
 * software key. The CA key is EC P-256 (signed with ECDSA SHA-256) or
 * P-384 (ECDSA SHA-384).
 *
 * From a CSR only the public key is taken, after the CSR proved that its
 * holder has the private key. Subject, extensions, validity and serial
 * come from struct kwd_cert_template and the CA; the identity in it is
 * the one the keeper's policy allows the caller, never a name the CSR
 * asks for.
 *
 * Errors: KW_ERR_INVALID (the CSR or the template is refused; for a CSR,
 * err says why, in words fit for the client who sent it), KW_ERR_TOO_LARGE
 * (CSR over KWD_CERT_CSR_MAX), KW_ERR_CONFIG (the CA certificate or key is
 * unusable: wrong type, not a CA, not matching, expired, or the leaf would
 * outlive the CA), KW_ERR_RANDOM (no serial), KW_ERR_CRYPTO (OpenSSL
 * failed, including a signature the HSM refused: check kwd_p11_healthy()),
 * KW_ERR_NOMEM.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWD_CERT_H
#define KWD_CERT_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <time.h>

#include "keyward.h"

/* A CSR is refused before parsing above this many bytes of PEM. */
#define KWD_CERT_CSR_MAX 16384
/* Identities as the front derives them (KWD_IDENTITY_MAX in front.h). */
#define KWD_CERT_IDENTITY_MAX 255
/* Subject O and a CA's CN: RFC 5280 ub-organization-name, ub-common-name. */
#define KWD_CERT_NAME_MAX 64
/* No template may allow more than this (a week): certificates here are
 * short-lived credentials, not long-term identities. */
#define KWD_CERT_TTL_CEILING (7u * 24 * 3600)
/* notBefore is moved back at most this much, for clients' clock skew. */
#define KWD_CERT_BACKDATE_MAX 300u
/* Serial numbers: 16 bytes, 126 of them random bits (see cert.c). */
#define KWD_CERT_SERIAL_LEN 16
/* A CA certificate is valid for 1 to this many days. */
#define KWD_CERT_CA_DAYS_MAX 3650u

struct kwd_cert_template {
	/* Subject O, printable ASCII, 1..KWD_CERT_NAME_MAX bytes. */
	const char *organization;
	/*
	 * The identity the certificate names, as policy allowed it: a SPIFFE
	 * ID ("spiffe://trust.domain/path", one URI SAN) or a lower-case DNS
	 * name (one DNS SAN), under the rules by which the front reads
	 * identities back (kwd_front_identity()). The subject CN is its short
	 * form: the last path segment of a SPIFFE ID (the trust domain if
	 * there is no path), a DNS name whole, each cut to 64 bytes (a DNS
	 * name longer than 64 bytes gives its first label). The CN is a label
	 * for people; identity is always taken from the SAN.
	 */
	const char *identity;
	unsigned ttl; /* seconds, 1..max_ttl: notAfter = now + ttl */
	unsigned max_ttl; /* seconds, 1..KWD_CERT_TTL_CEILING */
	unsigned backdate; /* seconds, 0..KWD_CERT_BACKDATE_MAX */
	time_t now; /* 0: time(NULL); tests set a clock */
};

/*
 * kwd_cert_csr_parse: a PKCS#10 CSR (RFC 2986) as sent by a client.
 *
 * Accepted: at most KWD_CERT_CSR_MAX bytes holding exactly one PEM block
 * "-----BEGIN CERTIFICATE REQUEST-----" (RFC 7468 section 7), optionally
 * surrounded by whitespace, strict base64 inside, no PEM headers; DER
 * (definite, minimal lengths, nothing after the request, re-encoding to
 * the same bytes); version 1; a public key that is EC P-256 or P-384 as a
 * named curve with an uncompressed point, Ed25519, or RSA (rsaEncryption)
 * of 2048 to 8192 bits with e = 65537; a signature by that key (proof of
 * possession) with ECDSA SHA-256/384/512, Ed25519, or RSA PKCS#1 v1.5
 * SHA-256/384/512. Everything else is KW_ERR_INVALID (KW_ERR_TOO_LARGE over
 * the cap) with the reason in err (always NUL-terminated if errlen > 0).
 * Subject, attributes and requested extensions are parsed but ignored.
 * *ret_csr is freed with X509_REQ_free().
 */
KW_WUR int kwd_cert_csr_parse(const char *pem, size_t len, X509_REQ **ret_csr,
    char *err, size_t errlen);

/*
 * kwd_cert_issue: a certificate for the CSR's public key, built from the
 * template only: version 3; serial of KWD_CERT_SERIAL_LEN bytes from
 * RAND_bytes(); issuer = subject of ca_cert; subject O=organization,
 * CN=short form of identity; notBefore = now - backdate, notAfter = now +
 * ttl; extensions basicConstraints (critical) CA:FALSE, keyUsage
 * (critical) digitalSignature, extendedKeyUsage clientAuth,
 * subjectKeyIdentifier, authorityKeyIdentifier (the CA's key id) and
 * subjectAltName with exactly the identity; signed by ca_key and checked
 * against ca_cert's key before it is returned. csr must come from
 * kwd_cert_csr_parse() (its key is checked again, its signature is not).
 * The caller frees *ret_cert with X509_free().
 */
KW_WUR int kwd_cert_issue(X509_REQ *csr, const struct kwd_cert_template *t,
    X509 *ca_cert, EVP_PKEY *ca_key, X509 **ret_cert);

/* kwd_cert_pem: the certificate in PEM, NUL-terminated; free() it. */
KW_WUR int kwd_cert_pem(X509 *cert, char **ret_pem);

/*
 * kwd_cert_ca_self_sign: a self-signed CA certificate for ca_key (EC P-256
 * or P-384), so that a deployment can trust the keeper's CA: subject and
 * issuer CN=cn (printable ASCII, 1..64 bytes), random serial, valid from
 * 5 minutes ago for days (1..KWD_CERT_CA_DAYS_MAX) days, basicConstraints
 * (critical) CA:TRUE pathlen 0, keyUsage (critical) keyCertSign cRLSign,
 * subjectKeyIdentifier, authorityKeyIdentifier (its own key id).
 */
KW_WUR int kwd_cert_ca_self_sign(EVP_PKEY *ca_key, const char *cn,
    unsigned days, X509 **ret_ca);

/*
 * kwd_cert_ca_check: whether ca can issue with ca_key: its public key is
 * ca_key's, ca_key is EC P-256 or P-384, it is a version 3 CA
 * (basicConstraints CA:TRUE, keyUsage with keyCertSign if present) and
 * valid now. KW_ERR_CONFIG, logged with the reason, if not.
 */
KW_WUR int kwd_cert_ca_check(X509 *ca, EVP_PKEY *ca_key);

#endif /* KWD_CERT_H */

/*
 * cert.c: short-lived client certificates from a CSR (docs/CERTS.md).
 *
 * The CSR is untrusted input from a client. It is read in steps, each
 * bounding the next: a length cap, a strict PEM and base64 decoder of our
 * own, a walk over the DER that refuses indefinite and non-minimal
 * lengths, OpenSSL's decoder, a re-encoding compared byte for byte, the
 * key and signature policy, and last the proof of possession. The
 * certificate is then made from the template and the CA alone.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "cert.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static const char pem_begin[] = "-----BEGIN CERTIFICATE REQUEST-----";
static const char pem_end[] = "-----END CERTIFICATE REQUEST-----";
static const char spiffe_scheme[] = "spiffe://";

/* Nesting in a CSR: Certificate request, info, attributes, attribute, set,
 * extensions, extension... 32 is far more than any real one needs. */
#define DER_DEPTH_MAX 32

static int refuse(char *err, size_t errlen, int rv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
refuse(char *err, size_t errlen, int rv, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	/* Nothing OpenSSL queued for a refused input concerns anyone. */
	ERR_clear_error();
	return rv;
}

/* ---- PEM and base64 (RFC 7468, RFC 4648 section 4) ---- */

static bool
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int
b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Decode s[0..len) (base64 with whitespace between characters allowed)
 * into out, which holds at least len * 3 / 4 bytes. Strict: only the
 * alphabet, padding only at the end and only as much as the length needs,
 * and the bits the padding leaves unused must be zero (one encoding per
 * byte string).
 */
static int
b64_decode(const char *s, size_t len, unsigned char *out, size_t *ret_len,
    char *err, size_t errlen)
{
	uint32_t acc = 0;
	size_t n = 0, chars = 0, pad = 0;
	unsigned bits = 0;

	for (size_t i = 0; i < len; i++) {
		int v;

		if (is_space(s[i]))
			continue;
		if (s[i] == '=') {
			pad++;
			continue;
		}
		if (pad > 0)
			return refuse(err, errlen, KW_ERR_INVALID,
			    "CSR base64 has data after '=' padding");
		v = b64_value(s[i]);
		if (v < 0)
			return refuse(err, errlen, KW_ERR_INVALID,
			    "CSR PEM body has a character outside base64");
		chars++;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (chars == 0)
		return refuse(err, errlen, KW_ERR_INVALID,
		    "CSR PEM block is empty");
	if ((chars + pad) % 4 != 0 || pad > 2 || (chars % 4 == 2 && pad != 2) ||
	    (chars % 4 == 3 && pad != 1) || chars % 4 == 1)
		return refuse(err, errlen, KW_ERR_INVALID,
		    "CSR base64 has a bad length or padding");
	if (acc != 0)
		return refuse(err, errlen, KW_ERR_INVALID,
		    "CSR base64 is not canonical (non-zero bits before "
		    "padding)");
	*ret_len = n;
	return KW_OK;
}

/*
 * The one PEM block of pem[0..len): whitespace, the BEGIN line, base64,
 * the END line, whitespace. No PEM headers (RFC 7468 section 2 forbids
 * them; RFC 1421 ones would show up as characters outside base64).
 */
static int
pem_body(const char *pem, size_t len, const char **ret_body,
    size_t *ret_bodylen, char *err, size_t errlen)
{
	size_t i = 0, start, blen = sizeof pem_begin - 1,
	       elen = sizeof pem_end - 1;

	while (i < len && is_space(pem[i]))
		i++;
	if (len - i < blen || memcmp(pem + i, pem_begin, blen) != 0)
		return refuse(err, errlen, KW_ERR_INVALID,
		    "CSR must be PEM starting with \"%s\"", pem_begin);
	i += blen;
	if (i < len && pem[i] == '\r')
		i++;
	if (i >= len || pem[i] != '\n')
		return refuse(err, errlen, KW_ERR_INVALID,
		    "CSR PEM BEGIN line is not followed by a line break");
	start = ++i;
	/* The body runs to the next dashes; what it holds is for the
	 * base64 decoder to judge. */
	while (i < len && !(len - i >= 5 && memcmp(pem + i, "-----", 5) == 0))
		i++;
	if (len - i < elen || memcmp(pem + i, pem_end, elen) != 0)
		return refuse(err, errlen, KW_ERR_INVALID,
		    "CSR PEM has no \"%s\" line after the base64", pem_end);
	*ret_body = pem + start;
	*ret_bodylen = i - start;
	for (i += elen; i < len; i++)
		if (!is_space(pem[i]))
			return refuse(err, errlen, KW_ERR_INVALID,
			    "CSR PEM has text after the END line (exactly "
			    "one PEM block expected)");
	return KW_OK;
}

/* ---- DER ---- */

/*
 * Walk the TLVs that fill p[0..len) exactly, and the contents of every
 * constructed one: definite lengths only, in their shortest form, tags
 * in their shortest form, nothing running past its parent (X.690
 * section 10.1). Primitive contents are left to OpenSSL and to the
 * re-encoding check.
 */
static int
der_walk(const unsigned char *p, size_t len, int depth, char *err,
    size_t errlen)
{
	if (depth > DER_DEPTH_MAX)
		return refuse(err, errlen, KW_ERR_INVALID,
		    "CSR DER is nested deeper than %d", DER_DEPTH_MAX);
	while (len > 0) {
		unsigned char tag = p[0];
		size_t off = 1, clen;

		if ((tag & 0x1f) == 0x1f) {
			/* High tag number: base 128, no leading 0x80, at
			 * least 31, and small. */
			uint32_t num = 0;
			size_t k = 0;

			do {
				if (off >= len || k == 4 ||
				    (k == 0 && p[off] == 0x80))
					return refuse(err, errlen,
					    KW_ERR_INVALID,
					    "CSR DER has a malformed tag");
				num = num << 7 | (p[off] & 0x7f);
				k++;
			} while (p[off++] & 0x80);
			if (num < 31)
				return refuse(err, errlen, KW_ERR_INVALID,
				    "CSR DER has a malformed tag");
		}
		if (off >= len)
			return refuse(err, errlen, KW_ERR_INVALID,
			    "CSR DER is truncated");
		if (p[off] < 0x80) {
			clen = p[off++];
		} else if (p[off] == 0x80) {
			return refuse(err, errlen, KW_ERR_INVALID,
			    "CSR is BER, not DER (indefinite length)");
		} else {
			size_t nb = p[off++] & 0x7f;

			if (nb > 3 || nb > len - off)
				return refuse(err, errlen, KW_ERR_INVALID,
				    "CSR DER has an impossible length");
			if (p[off] == 0)
				return refuse(err, errlen, KW_ERR_INVALID,
				    "CSR is BER, not DER (length with "
				    "leading zero)");
			clen = 0;
			for (size_t k = 0; k < nb; k++)
				clen = clen << 8 | p[off++];
			if (clen < 0x80)
				return refuse(err, errlen, KW_ERR_INVALID,
				    "CSR is BER, not DER (long form for a "
				    "short length)");
		}
		if (clen > len - off)
			return refuse(err, errlen, KW_ERR_INVALID,
			    "CSR DER length runs past its end");
		if (tag & 0x20) {
			int rv =
			    der_walk(p + off, clen, depth + 1, err, errlen);

			if (rv != KW_OK)
				return rv;
		}
		p += off + clen;
		len -= off + clen;
	}
	return KW_OK;
}

/* Whether two DER encodings (from i2d_*, lengths <= 0 on failure) are
 * the same bytes. */
static bool
same_der(const unsigned char *a, int alen, const unsigned char *b, int blen)
{
	return alen > 0 && blen > 0 && alen == blen &&
	    memcmp(a, b, (size_t)alen) == 0;
}

/*
 * The subject name as OpenSSL would encode it from its entries. OpenSSL
 * keeps the name's received bytes and writes them back unchanged, so a
 * re-encoded request alone does not show a name that is not DER (an
 * unsorted multi-valued RDN, for one).
 */
static bool
name_is_der(const X509_NAME *name)
{
	X509_NAME *copy = X509_NAME_new();
	unsigned char *a = NULL, *b = NULL;
	int prev = -1, alen, blen;
	bool ok = false;

	if (copy == NULL)
		return false;
	for (int i = 0; i < X509_NAME_entry_count(name); i++) {
		X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
		int set = X509_NAME_ENTRY_set(e);

		if (!X509_NAME_add_entry(copy, e, -1,
		        i > 0 && set == prev ? -1 : 0))
			goto out;
		prev = set;
	}
	alen = i2d_X509_NAME(name, &a);
	blen = i2d_X509_NAME(copy, &b);
	ok = same_der(a, alen, b, blen);
out:
	OPENSSL_free(a);
	OPENSSL_free(b);
	X509_NAME_free(copy);
	return ok;
}

/* ---- key and signature policy ---- */

/*
 * The public key of a CSR, by the encoding the CSR carries (not only by
 * what OpenSSL made of it: an explicit-parameter curve that happens to be
 * P-256 is still refused, and the certificate will carry a named curve).
 */
static int
key_ok(X509_REQ *req, char *err, size_t errlen)
{
	X509_PUBKEY *xpk = X509_REQ_get_X509_PUBKEY(req);
	EVP_PKEY *pkey = X509_REQ_get0_pubkey(req);
	ASN1_OBJECT *alg = NULL;
	const unsigned char *pk = NULL;
	int pklen = 0, nid;
	X509_ALGOR *pa = NULL;

	if (xpk == NULL || !X509_PUBKEY_get0_param(&alg, &pk, &pklen, &pa, xpk))
		return refuse(err, errlen, KW_ERR_INVALID,
		    "CSR public key cannot be read");
	nid = OBJ_obj2nid(alg);
	switch (nid) {
	case NID_X9_62_id_ecPublicKey: {
		const void *pval = NULL;
		int ptype = V_ASN1_UNDEF, curve;
		EVP_PKEY_CTX *ctx;
		int ok;

		X509_ALGOR_get0(NULL, &ptype, &pval, pa);
		if (ptype != V_ASN1_OBJECT)
			return refuse(err, errlen, KW_ERR_INVALID,
			    "EC key with explicit or no curve parameters "
			    "(a named curve, P-256 or P-384, is required)");
		curve = OBJ_obj2nid(pval);
		if (curve != NID_X9_62_prime256v1 && curve != NID_secp384r1)
			return refuse(err, errlen, KW_ERR_INVALID,
			    "EC key on curve %s (P-256 or P-384 required)",
			    curve != NID_undef ? OBJ_nid2sn(curve) : "unknown");
		/* RFC 5480 section 2.2: uncompressed is the form every
		 * relying party supports. */
		if (pklen < 1 || pk[0] != 0x04)
			return refuse(err, errlen, KW_ERR_INVALID,
			    "EC point is not in uncompressed form");
		if (pkey == NULL || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC)
			return refuse(err, errlen, KW_ERR_INVALID,
			    "EC public key cannot be decoded");
		ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
		if (ctx == NULL)
			return refuse(err, errlen, KW_ERR_CRYPTO,
			    "EC key check failed");
		ok = EVP_PKEY_public_check(ctx);
		EVP_PKEY_CTX_free(ctx);
		if (ok != 1)
			return refuse(err, errlen, KW_ERR_INVALID,
			    "EC public key is not a valid point of its curve");
		return KW_OK;
	}
	case NID_ED25519:
		if (pkey == NULL ||
		    EVP_PKEY_get_base_id(pkey) != EVP_PKEY_ED25519)
			return refuse(err, errlen, KW_ERR_INVALID,
			    "Ed25519 public key cannot be decoded");
		return KW_OK;
	case NID_rsaEncryption: {
		BIGNUM *n = NULL, *e = NULL;
		int bits, rv = KW_OK;

		if (pkey == NULL || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA)
			return refuse(err, errlen, KW_ERR_INVALID,
			    "RSA public key cannot be decoded");
		bits = EVP_PKEY_get_bits(pkey);
		if (bits < 2048 || bits > 8192)
			return refuse(err, errlen, KW_ERR_INVALID,
			    "RSA key of %d bits (2048 to 8192 required)", bits);
		if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) ||
		    !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e))
			rv = refuse(err, errlen, KW_ERR_INVALID,
			    "RSA public key cannot be read");
		else if (!BN_is_word(e, 65537))
			rv = refuse(err, errlen, KW_ERR_INVALID,
			    "RSA public exponent is not 65537");
		else if (!BN_is_odd(n))
			rv = refuse(err, errlen, KW_ERR_INVALID,
			    "RSA modulus is even");
		BN_free(n);
		BN_free(e);
		return rv;
	}
	case NID_rsassaPss:
		return refuse(err, errlen, KW_ERR_INVALID,
		    "RSASSA-PSS keys are not accepted (use an rsaEncryption "
		    "key)");
	default:
		return refuse(err, errlen, KW_ERR_INVALID,
		    "public key algorithm %s is not accepted (EC P-256, "
		    "P-384, Ed25519 or RSA 2048 to 8192 bits)",
		    nid != NID_undef ? OBJ_nid2sn(nid) : "unknown");
	}
}

/* The CSR's signature algorithm: SHA-2 or Ed25519, and the key's kind. */
static int
sigalg_ok(X509_REQ *req, char *err, size_t errlen)
{
	const ASN1_BIT_STRING *sig = NULL;
	const X509_ALGOR *salg = NULL;
	const ASN1_OBJECT *obj = NULL;
	int ptype = V_ASN1_UNDEF, nid, md = NID_undef, pk = NID_undef, keyid;
	const void *pval = NULL;
	bool null_ok = false;

	X509_REQ_get0_signature(req, &sig, &salg);
	if (salg == NULL)
		return refuse(err, errlen, KW_ERR_INVALID,
		    "CSR signature algorithm cannot be read");
	X509_ALGOR_get0(&obj, &ptype, &pval, salg);
	nid = OBJ_obj2nid(obj);
	keyid = EVP_PKEY_get_base_id(X509_REQ_get0_pubkey(req));
	switch (nid) {
	case NID_ecdsa_with_SHA256:
	case NID_ecdsa_with_SHA384:
	case NID_ecdsa_with_SHA512:
		pk = EVP_PKEY_EC;
		break;
	case NID_sha256WithRSAEncryption:
	case NID_sha384WithRSAEncryption:
	case NID_sha512WithRSAEncryption:
		/* RFC 4055 section 5: parameters NULL (some encoders omit
		 * them). */
		pk = EVP_PKEY_RSA;
		null_ok = true;
		break;
	case NID_ED25519:
		pk = EVP_PKEY_ED25519;
		break;
	default:
		if (nid != NID_undef && OBJ_find_sigid_algs(nid, &md, NULL) &&
		    (md == NID_sha1 || md == NID_md5 || md == NID_md4 ||
		        md == NID_md2 || md == NID_mdc2 ||
		        md == NID_ripemd160 || md == NID_sha224))
			return refuse(err, errlen, KW_ERR_INVALID,
			    "CSR signature algorithm %s is too weak "
			    "(SHA-256 or better required)",
			    OBJ_nid2sn(nid));
		return refuse(err, errlen, KW_ERR_INVALID,
		    "CSR signature algorithm %s is not accepted (ECDSA or "
		    "RSA PKCS#1 v1.5 with SHA-256/384/512, or Ed25519)",
		    nid != NID_undef ? OBJ_nid2sn(nid) : "unknown");
	}
	if (keyid != pk)
		return refuse(err, errlen, KW_ERR_INVALID,
		    "CSR signature algorithm %s does not fit its public key",
		    OBJ_nid2sn(nid));
	/* RFC 5758 section 3.2, RFC 8410 section 3: no parameters. */
	if (!(ptype == V_ASN1_UNDEF || (null_ok && ptype == V_ASN1_NULL)))
		return refuse(err, errlen, KW_ERR_INVALID,
		    "CSR signature algorithm has unexpected parameters");
	return KW_OK;
}

/* ---- CSR ---- */

/*
 * The DER of a decoded request against OpenSSL's own encoding of it: the
 * request with its info re-encoded from the parsed fields, the subject
 * name from its entries, and the public key from the decoded key (which
 * is also what the certificate will carry).
 */
static int
der_matches(X509_REQ *req, const unsigned char *der, size_t derlen, char *err,
    size_t errlen)
{
	unsigned char *re = NULL, *a = NULL, *b = NULL;
	int rv = KW_OK, relen, alen, blen;

	/* Drop the cached encoding of the request info. */
	if (i2d_re_X509_REQ_tbs(req, NULL) <= 0)
		return refuse(err, errlen, KW_ERR_INVALID,
		    "CSR cannot be re-encoded");
	relen = i2d_X509_REQ(req, &re);
	if (derlen > INT_MAX || !same_der(re, relen, der, (int)derlen)) {
		rv = refuse(err, errlen, KW_ERR_INVALID,
		    "CSR is not in canonical DER (re-encoding differs)");
		goto out;
	}
	if (!name_is_der(X509_REQ_get_subject_name(req))) {
		rv = refuse(err, errlen, KW_ERR_INVALID,
		    "CSR subject is not in canonical DER");
		goto out;
	}
	alen = i2d_X509_PUBKEY(X509_REQ_get_X509_PUBKEY(req), &a);
	blen = i2d_PUBKEY(X509_REQ_get0_pubkey(req), &b);
	if (!same_der(a, alen, b, blen))
		rv = refuse(err, errlen, KW_ERR_INVALID,
		    "CSR public key is not in canonical DER");
out:
	OPENSSL_free(re);
	OPENSSL_free(a);
	OPENSSL_free(b);
	return rv;
}

int
kwd_cert_csr_parse(const char *pem, size_t len, X509_REQ **ret_csr, char *err,
    size_t errlen)
{
	unsigned char *der = NULL;
	const unsigned char *p;
	const char *body = NULL;
	size_t bodylen = 0, derlen = 0;
	X509_REQ *req = NULL;
	EVP_PKEY *pkey;
	int rv;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (pem == NULL || ret_csr == NULL)
		return KW_ERR_INVALID;
	/* The cap comes before any other look at the bytes. */
	if (len > KWD_CERT_CSR_MAX)
		return refuse(err, errlen, KW_ERR_TOO_LARGE,
		    "CSR of %zu bytes (at most %d)", len, KWD_CERT_CSR_MAX);
	if (memchr(pem, '\0', len) != NULL)
		return refuse(err, errlen, KW_ERR_INVALID,
		    "CSR contains a NUL byte");
	if ((rv = pem_body(pem, len, &body, &bodylen, err, errlen)) != KW_OK)
		return rv;
	der = malloc(bodylen / 4 * 3 + 3);
	if (der == NULL)
		return KW_ERR_NOMEM;
	if ((rv = b64_decode(body, bodylen, der, &derlen, err, errlen)) !=
	    KW_OK)
		goto out;
	if ((rv = der_walk(der, derlen, 0, err, errlen)) != KW_OK)
		goto out;
	p = der;
	req = d2i_X509_REQ(NULL, &p, (long)derlen);
	if (req == NULL) {
		rv = refuse(err, errlen, KW_ERR_INVALID,
		    "CSR is not a PKCS#10 certification request");
		goto out;
	}
	if ((size_t)(p - der) != derlen) {
		rv = refuse(err, errlen, KW_ERR_INVALID,
		    "CSR DER has %zu bytes after the request",
		    derlen - (size_t)(p - der));
		goto out;
	}
	if (X509_REQ_get_version(req) != X509_REQ_VERSION_1) {
		rv = refuse(err, errlen, KW_ERR_INVALID,
		    "CSR version is not 1 (RFC 2986 section 4.1)");
		goto out;
	}
	if ((rv = key_ok(req, err, errlen)) != KW_OK)
		goto out;
	if ((rv = der_matches(req, der, derlen, err, errlen)) != KW_OK)
		goto out;
	if ((rv = sigalg_ok(req, err, errlen)) != KW_OK)
		goto out;
	/* Proof of possession (RFC 2986 section 3): the request is signed
	 * by the private half of the key it asks a certificate for. */
	pkey = X509_REQ_get0_pubkey(req);
	if (X509_REQ_verify(req, pkey) != 1) {
		rv = refuse(err, errlen, KW_ERR_INVALID,
		    "CSR signature does not verify with its own public key "
		    "(no proof of possession)");
		goto out;
	}
	*ret_csr = req;
	req = NULL;
	rv = KW_OK;
out:
	X509_REQ_free(req);
	free(der);
	return rv;
}

/* ---- identity ---- */

static bool
lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* The front's rule for a DNS identity (RFC 1123 section 2.1, lower case,
 * no wildcard). */
static bool
dns_ok(const char *s, size_t len)
{
	size_t label = 0;

	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!lower_alnum(c) && c != '-')
			return false;
		if (label == 0 && c == '-')
			return false;
		if (++label > 63)
			return false;
	}
	return label != 0 && s[len - 1] != '-';
}

/* The front's rule for a SPIFFE ID ("SPIFFE-ID" section 2): lower-case
 * trust domain, path segments of letters, digits, '.', '-', '_', none
 * empty, "." or "..". */
static bool
spiffe_ok(const char *s, size_t len)
{
	size_t i = sizeof spiffe_scheme - 1, seg;

	if (len < i || memcmp(s, spiffe_scheme, i) != 0)
		return false;
	for (seg = 0; i < len && s[i] != '/'; i++, seg++)
		if (!lower_alnum(s[i]) && s[i] != '.' && s[i] != '-' &&
		    s[i] != '_')
			return false;
	if (seg == 0)
		return false;
	while (i < len) {
		size_t start = ++i;

		for (; i < len && s[i] != '/'; i++) {
			char c = s[i];

			if (!lower_alnum(c) && !(c >= 'A' && c <= 'Z') &&
			    c != '.' && c != '-' && c != '_')
				return false;
		}
		seg = i - start;
		if (seg == 0 || (seg == 1 && s[start] == '.') ||
		    (seg == 2 && s[start] == '.' && s[start + 1] == '.'))
			return false;
	}
	return true;
}

/* *ret_uri: a SPIFFE ID (one URI SAN), else a DNS name (one DNS SAN). */
static bool
identity_ok(const char *id, bool *ret_uri)
{
	size_t len;

	if (id == NULL)
		return false;
	len = strnlen(id, KWD_CERT_IDENTITY_MAX + 1);
	if (len == 0 || len > KWD_CERT_IDENTITY_MAX)
		return false;
	if (strncmp(id, spiffe_scheme, sizeof spiffe_scheme - 1) == 0) {
		*ret_uri = true;
		return spiffe_ok(id, len);
	}
	*ret_uri = false;
	return dns_ok(id, len);
}

/* The CN: see struct kwd_cert_template in cert.h. */
static void
short_form(const char *id, bool uri, char out[KWD_CERT_NAME_MAX + 1])
{
	const char *s = id;
	size_t len = strlen(id);

	if (uri) {
		const char *td = id + sizeof spiffe_scheme - 1,
		           *slash = strrchr(td, '/');

		s = slash != NULL ? slash + 1 : td;
		len = strlen(s);
	} else if (len > KWD_CERT_NAME_MAX) {
		const char *dot = strchr(id, '.');

		len = dot != NULL ? (size_t)(dot - id) : len;
	}
	if (len > KWD_CERT_NAME_MAX)
		len = KWD_CERT_NAME_MAX;
	memcpy(out, s, len);
	out[len] = '\0';
}

/* Printable ASCII (spaces allowed inside), 1..64 bytes. */
static bool
name_ok(const char *s)
{
	size_t len;

	if (s == NULL)
		return false;
	len = strnlen(s, KWD_CERT_NAME_MAX + 1);
	if (len == 0 || len > KWD_CERT_NAME_MAX || s[0] == ' ' ||
	    s[len - 1] == ' ')
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] < 0x20 || s[i] >= 0x7f)
			return false;
	return true;
}

/* ---- certificates ---- */

/*
 * The digest for a CA key: EC P-256 signs with SHA-256, P-384 with
 * SHA-384 (RFC 5480 section 4). The curve is read from the public key
 * given (for an HSM key that is its public half).
 */
static const EVP_MD *
ca_md(EVP_PKEY *pub)
{
	char group[64];
	size_t glen = 0;

	if (pub == NULL || EVP_PKEY_get_base_id(pub) != EVP_PKEY_EC ||
	    !EVP_PKEY_get_group_name(pub, group, sizeof group, &glen))
		return NULL;
	if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
		return EVP_sha256();
	if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
		return EVP_sha384();
	return NULL;
}

/*
 * The serial: 16 bytes from the CSPRNG, the top bit cleared (positive,
 * RFC 5280 section 4.1.2.2) and the next one set, so that the DER INTEGER
 * is always exactly 16 bytes and never zero: 126 random bits, well over
 * the 64 that THREATS E and the CA/Browser Forum ask for.
 */
static int
set_serial(X509 *x)
{
	unsigned char buf[KWD_CERT_SERIAL_LEN];
	BIGNUM *bn;
	int ok;

	if (RAND_bytes(buf, sizeof buf) != 1) {
		ERR_clear_error();
		return KW_ERR_RANDOM;
	}
	buf[0] = (unsigned char)((buf[0] & 0x7f) | 0x40);
	bn = BN_bin2bn(buf, sizeof buf, NULL);
	ok = bn != NULL &&
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
	BN_free(bn);
	OPENSSL_cleanse(buf, sizeof buf);
	return ok ? KW_OK : KW_ERR_CRYPTO;
}

static bool
add_key_usage(X509 *x, const int *bits, size_t nbits)
{
	ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
	bool ok = ku != NULL;

	for (size_t i = 0; ok && i < nbits; i++)
		ok = ASN1_BIT_STRING_set_bit(ku, bits[i], 1) == 1;
	ok = ok &&
	    X509_add1_ext_i2d(x, NID_key_usage, ku, 1, X509V3_ADD_DEFAULT) == 1;
	ASN1_BIT_STRING_free(ku);
	return ok;
}

static bool
add_basic_constraints(X509 *x, bool ca)
{
	BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
	bool ok = bc != NULL;

	if (ok && ca) {
		bc->ca = 0xff;
		bc->pathlen = ASN1_INTEGER_new();
		ok = bc->pathlen != NULL && ASN1_INTEGER_set(bc->pathlen, 0);
	}
	ok = ok &&
	    X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1,
	        X509V3_ADD_DEFAULT) == 1;
	BASIC_CONSTRAINTS_free(bc);
	return ok;
}

/* RFC 5280 section 4.2.1.2, method (1): SHA-1 of the subjectPublicKey
 * bits. */
static ASN1_OCTET_STRING *
key_id(const X509 *x)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	ASN1_OCTET_STRING *s;

	if (!X509_pubkey_digest(x, EVP_sha1(), md, &mdlen))
		return NULL;
	s = ASN1_OCTET_STRING_new();
	if (s != NULL && !ASN1_OCTET_STRING_set(s, md, (int)mdlen)) {
		ASN1_OCTET_STRING_free(s);
		s = NULL;
	}
	return s;
}

/* subjectKeyIdentifier of x, and authorityKeyIdentifier: the issuer's
 * subjectKeyIdentifier, or its key's hash if it has none. */
static bool
add_key_ids(X509 *x, X509 *issuer)
{
	ASN1_OCTET_STRING *ski = key_id(x);
	AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
	const ASN1_OCTET_STRING *iski;
	bool ok = ski != NULL && akid != NULL;

	if (ok) {
		iski = issuer == x ? ski : X509_get0_subject_key_id(issuer);
		akid->keyid =
		    iski != NULL ? ASN1_OCTET_STRING_dup(iski) : key_id(issuer);
		ok = akid->keyid != NULL &&
		    X509_add1_ext_i2d(x, NID_subject_key_identifier, ski, 0,
		        X509V3_ADD_DEFAULT) == 1 &&
		    X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0,
		        X509V3_ADD_DEFAULT) == 1;
	}
	ASN1_OCTET_STRING_free(ski);
	AUTHORITY_KEYID_free(akid);
	return ok;
}

static bool
add_client_eku(X509 *x)
{
	EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
	bool ok = eku != NULL &&
	    sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth)) > 0 &&
	    X509_add1_ext_i2d(x, NID_ext_key_usage, eku, 0,
	        X509V3_ADD_DEFAULT) == 1;

	sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
	return ok;
}

/* One SAN: the identity, as a URI or a DNS name. Not critical: the
 * subject is not empty (RFC 5280 section 4.2.1.6). */
static bool
add_san(X509 *x, const char *id, bool uri)
{
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();
	bool ok = false;

	if (gens == NULL || g == NULL || s == NULL ||
	    !ASN1_STRING_set(s, id, (int)strlen(id)))
		goto out;
	GENERAL_NAME_set0_value(g, uri ? GEN_URI : GEN_DNS, s);
	s = NULL;
	if (sk_GENERAL_NAME_push(gens, g) <= 0)
		goto out;
	g = NULL;
	ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0,
	         X509V3_ADD_DEFAULT) == 1;
out:
	ASN1_IA5STRING_free(s);
	GENERAL_NAME_free(g);
	GENERAL_NAMES_free(gens);
	return ok;
}

static bool
name_add(X509_NAME *n, int nid, const char *v)
{
	return X509_NAME_add_entry_by_NID(n, nid, MBSTRING_UTF8,
	           (const unsigned char *)v, -1, -1, 0) == 1;
}

/* Why ca cannot issue with ca_key at now, or NULL. */
static const char *
ca_problem(X509 *ca, EVP_PKEY *ca_key, time_t now)
{
	EVP_PKEY *pub;
	uint32_t flags;

	if (ca == NULL || ca_key == NULL)
		return "no CA certificate or key";
	pub = X509_get0_pubkey(ca);
	if (pub == NULL)
		return "CA certificate public key cannot be read";
	if (ca_md(pub) == NULL)
		return "CA key is not EC P-256 or P-384";
	if (EVP_PKEY_eq(pub, ca_key) != 1)
		return "CA certificate does not match the CA key";
	if (X509_get_version(ca) != X509_VERSION_3)
		return "CA certificate is not version 3";
	flags = X509_get_extension_flags(ca);
	if ((flags & EXFLAG_INVALID) != 0)
		return "CA certificate has invalid extensions";
	if ((flags & EXFLAG_BCONS) == 0 || (flags & EXFLAG_CA) == 0)
		return "CA certificate is not a CA (basicConstraints)";
	if ((flags & EXFLAG_KUSAGE) != 0 &&
	    (X509_get_key_usage(ca) & KU_KEY_CERT_SIGN) == 0)
		return "CA certificate keyUsage lacks keyCertSign";
	if (X509_cmp_time(X509_get0_notBefore(ca), &now) >= 0)
		return "CA certificate is not valid yet";
	if (X509_cmp_time(X509_get0_notAfter(ca), &now) <= 0)
		return "CA certificate has expired";
	return NULL;
}

int
kwd_cert_ca_check(X509 *ca, EVP_PKEY *ca_key)
{
	const char *why = ca_problem(ca, ca_key, time(NULL));

	ERR_clear_error();
	if (why != NULL) {
		kw_log(KW_LOG_ERR, "cert.ca", why, );
		return KW_ERR_CONFIG;
	}
	return KW_OK;
}

int
kwd_cert_issue(X509_REQ *csr, const struct kwd_cert_template *t, X509 *ca_cert,
    EVP_PKEY *ca_key, X509 **ret_cert)
{
	X509 *x = NULL;
	X509_NAME *subj = NULL;
	const EVP_MD *md;
	char cn[KWD_CERT_NAME_MAX + 1];
	time_t now, not_after;
	bool uri = false;
	int rv;
	static const int ku_leaf[] = {0}; /* digitalSignature */

	if (csr == NULL || t == NULL || ret_cert == NULL)
		return KW_ERR_INVALID;
	if (!name_ok(t->organization) || !identity_ok(t->identity, &uri) ||
	    t->max_ttl == 0 || t->max_ttl > KWD_CERT_TTL_CEILING ||
	    t->ttl == 0 || t->ttl > t->max_ttl ||
	    t->backdate > KWD_CERT_BACKDATE_MAX)
		return KW_ERR_INVALID;
	/* The CSR's key, checked again: csr may not have been parsed by us
	 * in this process. */
	if (key_ok(csr, NULL, 0) != KW_OK)
		return KW_ERR_INVALID;
	now = t->now != 0 ? t->now : time(NULL);
	not_after = now + (time_t)t->ttl;
	if (ca_problem(ca_cert, ca_key, now) != NULL) {
		ERR_clear_error();
		return KW_ERR_CONFIG;
	}
	/* A leaf outliving its CA would not verify for its last part. */
	if (X509_cmp_time(X509_get0_notAfter(ca_cert), &not_after) <= 0) {
		ERR_clear_error();
		return KW_ERR_CONFIG;
	}
	md = ca_md(X509_get0_pubkey(ca_cert));

	rv = KW_ERR_CRYPTO;
	if ((x = X509_new()) == NULL || (subj = X509_NAME_new()) == NULL)
		goto out;
	if (!X509_set_version(x, X509_VERSION_3))
		goto out;
	if ((rv = set_serial(x)) != KW_OK)
		goto out;
	rv = KW_ERR_CRYPTO;
	short_form(t->identity, uri, cn);
	if (!name_add(subj, NID_organizationName, t->organization) ||
	    !name_add(subj, NID_commonName, cn) ||
	    !X509_set_subject_name(x, subj) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(ca_cert)))
		goto out;
	if (X509_time_adj_ex(X509_getm_notBefore(x), 0, -(long)t->backdate,
	        &now) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), 0, (long)t->ttl, &now) ==
	        NULL)
		goto out;
	/* The only thing taken from the CSR. */
	if (!X509_set_pubkey(x, X509_REQ_get0_pubkey(csr)))
		goto out;
	if (!add_basic_constraints(x, false) || !add_key_usage(x, ku_leaf, 1) ||
	    !add_client_eku(x) || !add_key_ids(x, ca_cert) ||
	    !add_san(x, t->identity, uri))
		goto out;
	if (X509_sign(x, ca_key, md) <= 0)
		goto out;
	/* A bad signature from the HSM is caught here, not by a client. */
	if (X509_verify(x, X509_get0_pubkey(ca_cert)) != 1)
		goto out;
	*ret_cert = x;
	x = NULL;
	rv = KW_OK;
out:
	ERR_clear_error();
	X509_NAME_free(subj);
	X509_free(x);
	return rv;
}

int
kwd_cert_ca_self_sign(EVP_PKEY *ca_key, const char *cn, unsigned days,
    X509 **ret_ca)
{
	X509 *x = NULL;
	X509_NAME *subj = NULL;
	EVP_PKEY *pub = NULL;
	const EVP_MD *md;
	time_t now = time(NULL);
	int rv = KW_ERR_CRYPTO;
	static const int ku_ca[] = {5, 6}; /* keyCertSign, cRLSign */

	if (ca_key == NULL || ret_ca == NULL || !name_ok(cn) || days == 0 ||
	    days > KWD_CERT_CA_DAYS_MAX)
		return KW_ERR_INVALID;
	if ((x = X509_new()) == NULL || (subj = X509_NAME_new()) == NULL)
		goto out;
	if (!X509_set_version(x, X509_VERSION_3) ||
	    !X509_set_pubkey(x, ca_key) || (pub = X509_get0_pubkey(x)) == NULL)
		goto out;
	if ((md = ca_md(pub)) == NULL) {
		rv = KW_ERR_CONFIG;
		goto out;
	}
	if ((rv = set_serial(x)) != KW_OK)
		goto out;
	rv = KW_ERR_CRYPTO;
	if (!name_add(subj, NID_commonName, cn) ||
	    !X509_set_subject_name(x, subj) || !X509_set_issuer_name(x, subj))
		goto out;
	if (X509_time_adj_ex(X509_getm_notBefore(x), 0,
	        -(long)KWD_CERT_BACKDATE_MAX, &now) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, &now) == NULL)
		goto out;
	if (!add_basic_constraints(x, true) || !add_key_usage(x, ku_ca, 2) ||
	    !add_key_ids(x, x))
		goto out;
	if (X509_sign(x, ca_key, md) <= 0 || X509_verify(x, pub) != 1)
		goto out;
	*ret_ca = x;
	x = NULL;
	rv = KW_OK;
out:
	ERR_clear_error();
	X509_NAME_free(subj);
	X509_free(x);
	return rv;
}

int
kwd_cert_pem(X509 *cert, char **ret_pem)
{
	BIO *bio;
	char *data = NULL, *pem;
	long len;

	if (cert == NULL || ret_pem == NULL)
		return KW_ERR_INVALID;
	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		return KW_ERR_NOMEM;
	if (PEM_write_bio_X509(bio, cert) != 1 ||
	    (len = BIO_get_mem_data(bio, &data)) <= 0) {
		BIO_free(bio);
		ERR_clear_error();
		return KW_ERR_CRYPTO;
	}
	pem = malloc((size_t)len + 1);
	if (pem == NULL) {
		BIO_free(bio);
		return KW_ERR_NOMEM;
	}
	memcpy(pem, data, (size_t)len);
	pem[len] = '\0';
	BIO_free(bio);
	*ret_pem = pem;
	return KW_OK;
}

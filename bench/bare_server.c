/*
 * bare_server.c: the baseline that keywardd's request path is measured
 * against (DESIGN.md section 5: datakey and decrypt at >= 80 % of "a bare
 * libmicrohttpd+GnuTLS loop doing the same PKCS#11 calls per request").
 *
 * A libmicrohttpd server over GnuTLS set up as keywardd's front is (its
 * TLS priorities, a client certificate requested and verified once per
 * connection, epoll, a thread pool of the configuration's workers, its
 * connection limits and memory pool) whose handler does per request
 * exactly the PKCS#11 work of keywardd, through keyward's own PKCS#11
 * layer:
 *
 *   POST /v1/keys/bench/datakey  32 bytes from the token's RNG
 *                                (kwd_p11_random), sealed under KEK
 *                                bench/1 (kwd_p11_gcm_seal) with an AAD
 *                                of the size of keywardd's
 *   POST /v1/keys/bench/decrypt  kwd_p11_gcm_open of the "wrapped" field
 *                                under the same AAD
 *   POST /v1/tokens              a JWT as keywardd issues one
 *                                (docs/TOKENS.md): header and claims
 *                                JSON (iss, sub, aud, iat, nbf, exp, a
 *                                jti of 16 random bytes, scope),
 *                                base64url, SHA-256, one ECDSA P-256
 *                                sign in the HSM with signer bench/1
 *                                (kwd_p11_ecdsa_sign)
 *   GET  /v1/health              nothing: TLS and HTTP alone
 *
 * and answers a JSON body of about keywardd's size. What it leaves out is
 * what keywardd is judged on: no JSON schema, no identity rules, no
 * policy, no audit record, no front-to-keeper hop. The wrapped key is just
 * nonce || ciphertext || tag; the context is not read (the AAD is fixed).
 * A token's audience, scopes and ttl are picked out of the body by a
 * search for each field, not a JSON parser; its subject is the client
 * certificate's first URI SAN (else DNS SAN, else CN), read once per
 * connection.
 *
 * One PKCS#11 worker (session) per libmicrohttpd thread, created on the
 * thread's first request, as keywardd has one keeper worker per front
 * thread.
 *
 * It reads a keywardd configuration (-c) for the TLS files and the token
 * (its pkcs11.env is exported first), listens on 127.0.0.1:PORT (-p; 0
 * picks a free port, printed on stdout), creates KEK bench/1 and signer
 * bench/1 in the token if they are missing, and serves until SIGTERM or
 * SIGINT.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "p11.h"
#include "secret.h"

#define PROG "bare_server"
#define KEY_NAME "bench"
#define KEY_VERSION 1
#define DEK_LEN 32
#define WRAPPED_LEN (KWD_P11_NONCE_LEN + DEK_LEN + KWD_P11_TAG_LEN)
#define BODY_MAX 2048 /* a decrypt body is about 150 bytes */
/*
 * Tokens: keywardd's defaults (issuer "keyward", the dev grant's max_ttl
 * when the request has no ttl) and limits (docs/TOKENS.md: strings of at
 * most 255 bytes, a 43-character kid).
 */
#define TOKEN_ISSUER "keyward"
#define TOKEN_TTL 3600
#define TOKEN_TTL_MAX (7 * 24 * 3600)
#define TOKEN_STR_MAX 255
#define KID_LEN 43
#define JTI_BYTES 16
/* The claims of the largest body: aud, sub and scopes at most BODY_MAX. */
#define CLAIMS_MAX (BODY_MAX + 2 * TOKEN_STR_MAX + 256)
#define JWS_MAX (CLAIMS_MAX * 4 / 3 + 256)
#define TLS_FILE_MAX (1024 * 1024)
#define MAX_THREADS 64
/*
 * keywardd's TLS settings (broker/front.c's PRIORITIES), so that both
 * servers negotiate the same protocol, suite and group with the same
 * client (loadgen prints what was negotiated; daemon_bench compares).
 */
#define TLS_PRIORITIES                                                \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:"                 \
	"-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:"   \
	"-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:"             \
	"-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:" \
	"+GROUP-SECP521R1:"                                           \
	"-SIGN-RSA-SHA1:-SIGN-ECDSA-SHA1:-SIGN-DSA-SHA1:%SERVER_PRECEDENCE"
/* keywardd's per-connection memory pool (front.c's MEM_LIMIT). */
#define MEM_LIMIT (16 * 1024)

#define EXIT_USAGE 2
#define EXIT_ERROR 3

/*
 * The AAD, about as long as keywardd's for key "datasets" version 1 with
 * context dataset=imagenet-1k: the blob header (magic, format, algorithm,
 * u16-prefixed key name, u32 version), then the canonical context as
 * u16-prefixed key and value. GCM's cost grows with the AAD, so the size
 * matters, not the bytes.
 */
static const unsigned char aad[] = "KWD\x01"
                                   "\x01"
                                   "\x01"
                                   "\x00\x08"
                                   "datasets"
                                   "\x00\x00\x00\x01"
                                   "\x00\x07"
                                   "dataset"
                                   "\x00\x0b"
                                   "imagenet-1k";
#define AAD_LEN (sizeof aad - 1)

enum route { R_NONE, R_DATAKEY, R_DECRYPT, R_TOKEN, R_HEALTH, R_COUNT };

/* Per connection: libmicrohttpd serves one request at a time on it, so
 * the request's body buffer lives here and costs no allocation per
 * request. */
struct conn {
	int verified; /* 0: not yet, 1: the client certificate is good */
	char sub[TOKEN_STR_MAX + 1]; /* its identity, a token's subject */
	enum route route;
	size_t blen;
	bool too_large;
	char body[BODY_MAX];
};

struct server {
	struct kwd_p11 *p11;
	char kid[KID_LEN + 1]; /* RFC 7638 thumbprint of signer bench/1 */
	pthread_mutex_t mu;
	struct kwd_p11_worker *workers[MAX_THREADS];
	size_t nworkers;
	atomic_ulong served[R_COUNT];
	atomic_ulong failed;
	atomic_ulong refused; /* bad or missing client certificate */
};

static _Thread_local struct kwd_p11_worker *tl_worker;

static void log_mhd(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void
log_mhd(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	fputs(PROG ": libmicrohttpd: ", stderr);
	vfprintf(stderr, fmt, ap);
}

/* The thread's PKCS#11 worker: a long-lived session, opened on the
 * thread's first request and kept until the server stops. */
static struct kwd_p11_worker *
thread_worker(struct server *s)
{
	struct kwd_p11_worker *w = NULL;

	if (tl_worker != NULL)
		return tl_worker;
	if (kwd_p11_worker_new(s->p11, &w) != KW_OK)
		return NULL;
	pthread_mutex_lock(&s->mu);
	if (s->nworkers == MAX_THREADS) {
		pthread_mutex_unlock(&s->mu);
		kwd_p11_worker_free(w);
		return NULL;
	}
	s->workers[s->nworkers++] = w;
	pthread_mutex_unlock(&s->mu);
	tl_worker = w;
	return w;
}

static enum MHD_Result
reply(struct MHD_Connection *c, unsigned int status, const char *body,
    size_t len)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(len, (void *)body,
	    MHD_RESPMEM_MUST_COPY);
	if (r == NULL)
		return MHD_NO;
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
	        "application/json") != MHD_YES) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
reply_error(struct MHD_Connection *c, unsigned int status, const char *code,
    const char *msg)
{
	char buf[256];
	int n;

	n = snprintf(buf, sizeof buf,
	    "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, msg);
	return reply(c, status, buf, (size_t)n);
}

static void
b64(const unsigned char *bin, size_t len, char *out, size_t cap)
{
	sodium_bin2base64(out, cap, bin, len, sodium_base64_VARIANT_ORIGINAL);
}

/* base64url without padding (RFC 7515 section 2); the length written. */
static size_t
b64url(const void *bin, size_t len, char *out, size_t cap)
{
	sodium_bin2base64(out, cap, bin, len,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return sodium_base64_ENCODED_LEN(len,
	           sodium_base64_VARIANT_URLSAFE_NO_PADDING) -
	    1;
}

static enum MHD_Result
do_datakey(struct server *s, struct MHD_Connection *c)
{
	struct kwd_p11_worker *w = thread_worker(s);
	unsigned char dek[DEK_LEN], wrapped[WRAPPED_LEN];
	char wb64[sodium_base64_ENCODED_LEN(WRAPPED_LEN,
	    sodium_base64_VARIANT_ORIGINAL)];
	char pb64[sodium_base64_ENCODED_LEN(DEK_LEN,
	    sodium_base64_VARIANT_ORIGINAL)];
	char json[384];
	size_t ctlen;
	enum MHD_Result ret;
	int n;

	if (w == NULL || kwd_p11_random(w, dek, sizeof dek) != KW_OK ||
	    kwd_p11_gcm_seal(w, KEY_NAME, KEY_VERSION, aad, AAD_LEN, dek,
	        sizeof dek, wrapped, wrapped + KWD_P11_NONCE_LEN,
	        sizeof wrapped - KWD_P11_NONCE_LEN, &ctlen) != KW_OK ||
	    ctlen != DEK_LEN + KWD_P11_TAG_LEN) {
		kw_memzero(dek, sizeof dek);
		atomic_fetch_add(&s->failed, 1);
		return reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE,
		    "hsm_unavailable", "the HSM operation failed");
	}
	b64(wrapped, sizeof wrapped, wb64, sizeof wb64);
	b64(dek, sizeof dek, pb64, sizeof pb64);
	n = snprintf(json, sizeof json,
	    "{\"key\":\"" KEY_NAME "\",\"version\":%d,\"wrapped\":\"%s\","
	    "\"plaintext\":\"%s\"}",
	    KEY_VERSION, wb64, pb64);
	ret = reply(c, MHD_HTTP_OK, json, (size_t)n);
	/* libmicrohttpd made its own copy; ours go now. */
	kw_memzero(dek, sizeof dek);
	kw_memzero(pb64, sizeof pb64);
	kw_memzero(json, sizeof json);
	atomic_fetch_add(&s->served[R_DATAKEY], 1);
	return ret;
}

/*
 * Where the value of member name ("\"wrapped\"", quotes included) starts
 * in the body, NULL if it is not there: a search for the one field, not a
 * JSON parser (that work is keywardd's).
 */
static const char *
find_field(const struct conn *cn, const char *name)
{
	const char *p, *end = cn->body + cn->blen;
	size_t n = strlen(name);

	p = memmem(cn->body, cn->blen, name, n);
	if (p == NULL)
		return NULL;
	p += n;
	while (p < end && (*p == ' ' || *p == ':'))
		p++;
	return p < end ? p : NULL;
}

/*
 * The string at p (its opening quote): its bytes up to the closing quote,
 * which must be printable ASCII without a backslash, so that they go into
 * the claims as they are. *ret_next: past the closing quote.
 */
static bool
take_string(const struct conn *cn, const char *p, char *out, size_t cap,
    const char **ret_next)
{
	const char *end = cn->body + cn->blen;
	size_t n = 0;

	if (p == NULL || p == end || *p++ != '"')
		return false;
	for (; p < end && *p != '"'; p++) {
		if (*p < 0x20 || *p > 0x7e || *p == '\\' || n + 1 >= cap)
			return false;
		out[n++] = *p;
	}
	if (p == end || n == 0)
		return false;
	out[n] = '\0';
	*ret_next = p + 1;
	return true;
}

/* The "wrapped" string of the body, base64-decoded. */
static bool
find_wrapped(const struct conn *cn, unsigned char *out, size_t cap,
    size_t *ret_len)
{
	const char *p = find_field(cn, "\"wrapped\""), *q;

	if (p == NULL || *p++ != '"')
		return false;
	q = memchr(p, '"', (size_t)(cn->body + cn->blen - p));
	if (q == NULL)
		return false;
	return sodium_base642bin(out, cap, p, (size_t)(q - p), NULL, ret_len,
	           NULL, sodium_base64_VARIANT_ORIGINAL) == 0;
}

static enum MHD_Result
do_decrypt(struct server *s, struct MHD_Connection *c, struct conn *cn)
{
	struct kwd_p11_worker *w;
	unsigned char wrapped[WRAPPED_LEN + 1];
	char pb64[sodium_base64_ENCODED_LEN(DEK_LEN,
	    sodium_base64_VARIANT_ORIGINAL)];
	char json[128];
	struct kw_secret *pt = NULL;
	size_t len;
	enum MHD_Result ret;
	int rv, n;

	if (!find_wrapped(cn, wrapped, sizeof wrapped, &len) ||
	    len != WRAPPED_LEN) {
		atomic_fetch_add(&s->failed, 1);
		return reply_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request",
		    "\"wrapped\" is missing or malformed");
	}
	w = thread_worker(s);
	rv = w == NULL ? KW_ERR_HSM_DOWN
	               : kwd_p11_gcm_open(w, KEY_NAME, KEY_VERSION, aad,
	                     AAD_LEN, wrapped, wrapped + KWD_P11_NONCE_LEN,
	                     WRAPPED_LEN - KWD_P11_NONCE_LEN, &pt);
	if (rv == KW_ERR_AUTH ||
	    (rv == KW_OK && kw_secret_len(pt) != DEK_LEN)) {
		kw_secret_free(pt);
		atomic_fetch_add(&s->failed, 1);
		return reply_error(c, MHD_HTTP_BAD_REQUEST, "invalid_wrapped",
		    "the wrapped key does not open under this key");
	}
	if (rv != KW_OK) {
		atomic_fetch_add(&s->failed, 1);
		return reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE,
		    "hsm_unavailable", "the HSM operation failed");
	}
	b64(kw_secret_data(pt), kw_secret_len(pt), pb64, sizeof pb64);
	kw_secret_free(pt);
	n = snprintf(json, sizeof json, "{\"plaintext\":\"%s\"}", pb64);
	ret = reply(c, MHD_HTTP_OK, json, (size_t)n);
	kw_memzero(pb64, sizeof pb64);
	kw_memzero(json, sizeof json);
	atomic_fetch_add(&s->served[R_DECRYPT], 1);
	return ret;
}

/*
 * A token request's fields: "audience" (a string), "scope" (an array of
 * strings, joined with spaces as the claim has them) and "ttl" (an
 * optional integer, 1 to 7 days).
 */
static bool
token_fields(const struct conn *cn, char *aud, size_t audcap, char *scope,
    size_t scopecap, long *ret_ttl)
{
	const char *end = cn->body + cn->blen, *p;
	size_t off = 0;
	long ttl = TOKEN_TTL;

	if (!take_string(cn, find_field(cn, "\"audience\""), aud, audcap, &p))
		return false;
	p = find_field(cn, "\"scope\"");
	if (p == NULL || *p++ != '[')
		return false;
	for (;;) {
		while (p < end && *p == ' ')
			p++;
		if (off > 0 && p < end && *p == ',')
			p++;
		while (p < end && *p == ' ')
			p++;
		if (p < end && *p == ']' && off > 0)
			break;
		if (off > 0)
			scope[off++] = ' ';
		if (off >= scopecap ||
		    !take_string(cn, p, scope + off, scopecap - off, &p))
			return false;
		off += strlen(scope + off);
	}
	p = find_field(cn, "\"ttl\"");
	if (p != NULL) {
		ttl = 0;
		for (; p < end && *p >= '0' && *p <= '9'; p++)
			if ((ttl = ttl * 10 + (*p - '0')) > TOKEN_TTL_MAX)
				return false;
		if (ttl == 0)
			return false;
	}
	*ret_ttl = ttl;
	return true;
}

/*
 * POST /v1/tokens: what keywardd does per token (broker/token.c,
 * kwd_token_build) once the policy has allowed it: the header and the
 * claims as compact JSON with sorted keys, both base64url, the SHA-256 of
 * the signing input, one ECDSA sign in the HSM, the signature's
 * base64url. The answer has keywardd's members.
 */
static enum MHD_Result
do_token(struct server *s, struct MHD_Connection *c, struct conn *cn)
{
	struct kwd_p11_worker *w;
	char aud[TOKEN_STR_MAX + 1], scope[BODY_MAX];
	char header[96], claims[CLAIMS_MAX], jws[JWS_MAX], json[JWS_MAX + 96];
	char jti[sodium_base64_ENCODED_LEN(JTI_BYTES,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
	unsigned char rnd[JTI_BYTES], digest[32], sig[64];
	long long now = (long long)time(NULL);
	size_t off, hlen, clen;
	long ttl;
	enum MHD_Result ret;
	int n;

	if (!token_fields(cn, aud, sizeof aud, scope, sizeof scope, &ttl)) {
		atomic_fetch_add(&s->failed, 1);
		return reply_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request",
		    "\"audience\", \"scope\" or \"ttl\" is missing or "
		    "malformed");
	}
	/* 128 random bits, as keywardd draws them (docs/TOKENS.md). */
	kw_random_buf(rnd, sizeof rnd);
	b64url(rnd, sizeof rnd, jti, sizeof jti);
	hlen = (size_t)snprintf(header, sizeof header,
	    "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"JWT\"}", s->kid);
	n = snprintf(claims, sizeof claims,
	    "{\"aud\":\"%s\",\"exp\":%lld,\"iat\":%lld,\"iss\":\"" TOKEN_ISSUER
	    "\",\"jti\":\"%s\",\"nbf\":%lld,\"scope\":\"%s\",\"sub\":\"%s\"}",
	    aud, now + ttl, now, jti, now, scope, cn->sub);
	if (n < 0 || (size_t)n >= sizeof claims) {
		atomic_fetch_add(&s->failed, 1);
		return reply_error(c, MHD_HTTP_BAD_REQUEST, "invalid_request",
		    "the claims are too large");
	}
	clen = (size_t)n;
	off = b64url(header, hlen, jws, sizeof jws);
	jws[off++] = '.';
	off += b64url(claims, clen, jws + off, sizeof jws - off);
	/* RFC 7515 section 5.1: the signing input is the ASCII text. */
	crypto_hash_sha256(digest, (const unsigned char *)jws, off);
	w = thread_worker(s);
	if (w == NULL ||
	    kwd_p11_ecdsa_sign(w, KEY_NAME, KEY_VERSION, digest, sig) !=
	        KW_OK) {
		atomic_fetch_add(&s->failed, 1);
		return reply_error(c, MHD_HTTP_SERVICE_UNAVAILABLE,
		    "hsm_unavailable", "the HSM operation failed");
	}
	jws[off++] = '.';
	b64url(sig, sizeof sig, jws + off, sizeof jws - off);
	n = snprintf(json, sizeof json,
	    "{\"token\":\"%s\",\"token_type\":\"Bearer\",\"expires_at\":%lld}",
	    jws, now + ttl);
	ret = reply(c, MHD_HTTP_OK, json, (size_t)n);
	/* A token is a credential: libmicrohttpd has its own copy. */
	kw_memzero(jws, sizeof jws);
	kw_memzero(json, sizeof json);
	atomic_fetch_add(&s->served[R_TOKEN], 1);
	return ret;
}

/*
 * The identity keywardd would give the connection (DESIGN.md: URI SAN,
 * else DNS SAN, else subject CN), as a token's subject; printable ASCII
 * without quotes or backslashes, so that it goes into the claims as it
 * is. "" if there is none: a token request then fails.
 */
static void
peer_identity(gnutls_session_t ts, char *out, size_t cap)
{
	const gnutls_datum_t *certs;
	gnutls_x509_crt_t crt = NULL;
	unsigned int n = 0;
	char dns[TOKEN_STR_MAX + 1] = "";
	size_t size;
	int type;

	out[0] = '\0';
	certs = gnutls_certificate_get_peers(ts, &n);
	if (certs == NULL || n == 0 || gnutls_x509_crt_init(&crt) < 0)
		return;
	if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) < 0)
		goto out;
	for (unsigned int i = 0;; i++) {
		char san[TOKEN_STR_MAX + 1];

		size = sizeof san - 1;
		type = gnutls_x509_crt_get_subject_alt_name(crt, i, san, &size,
		    NULL);
		if (type == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
			break;
		if (type < 0)
			continue;
		san[size] = '\0';
		if (type == GNUTLS_SAN_URI) {
			snprintf(out, cap, "%s", san);
			break;
		}
		if (type == GNUTLS_SAN_DNSNAME && dns[0] == '\0')
			snprintf(dns, sizeof dns, "%s", san);
	}
	if (out[0] == '\0' && dns[0] != '\0')
		snprintf(out, cap, "%s", dns);
	size = cap;
	if (out[0] == '\0' &&
	    gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0,
	        0, out, &size) < 0)
		out[0] = '\0';
	for (size_t i = 0; out[i] != '\0'; i++)
		if (out[i] < 0x20 || out[i] > 0x7e || out[i] == '"' ||
		    out[i] == '\\')
			out[0] = '\0';
out:
	gnutls_x509_crt_deinit(crt);
}

/*
 * With MHD_OPTION_HTTPS_MEM_TRUST, libmicrohttpd asks for a client
 * certificate but lets a connection without one, or with one from another
 * CA, reach the handler (THREATS.md): check it here, once per connection,
 * as keywardd does. Both the return code and the status must be clean.
 */
static bool
client_verified(struct MHD_Connection *c, struct conn *cn)
{
	const union MHD_ConnectionInfo *ci;
	unsigned int status = 0;

	if (cn->verified)
		return true;
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	if (ci == NULL || ci->tls_session == NULL ||
	    gnutls_certificate_type_get(ci->tls_session) != GNUTLS_CRT_X509 ||
	    gnutls_certificate_verify_peers2(ci->tls_session, &status) != 0 ||
	    status != 0)
		return false;
	peer_identity(ci->tls_session, cn->sub, sizeof cn->sub);
	cn->verified = 1;
	return true;
}

static enum route
route_of(const char *method, const char *url)
{
	if (strcmp(method, MHD_HTTP_METHOD_POST) == 0) {
		if (strcmp(url, "/v1/keys/" KEY_NAME "/datakey") == 0)
			return R_DATAKEY;
		if (strcmp(url, "/v1/keys/" KEY_NAME "/decrypt") == 0)
			return R_DECRYPT;
		if (strcmp(url, "/v1/tokens") == 0)
			return R_TOKEN;
	} else if (strcmp(method, MHD_HTTP_METHOD_GET) == 0 &&
	    strcmp(url, "/v1/health") == 0) {
		return R_HEALTH;
	}
	return R_NONE;
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
    const char *version, const char *upload, size_t *upload_size,
    void **req_cls)
{
	struct server *s = cls;
	struct conn *cn = *req_cls;
	const union MHD_ConnectionInfo *ci;

	(void)version;
	if (cn == NULL) {
		/* First call: headers only. */
		ci = MHD_get_connection_info(c,
		    MHD_CONNECTION_INFO_SOCKET_CONTEXT);
		if (ci == NULL || ci->socket_context == NULL)
			return MHD_NO;
		cn = ci->socket_context;
		cn->blen = 0;
		cn->too_large = false;
		cn->route = route_of(method, url);
		*req_cls = cn;
		if (!client_verified(c, cn)) {
			atomic_fetch_add(&s->refused, 1);
			return reply_error(c, MHD_HTTP_FORBIDDEN, "forbidden",
			    "a valid client certificate is required");
		}
		return MHD_YES;
	}
	if (*upload_size != 0) {
		if (cn->blen + *upload_size > sizeof cn->body)
			cn->too_large = true;
		else
			memcpy(cn->body + cn->blen, upload, *upload_size);
		if (!cn->too_large)
			cn->blen += *upload_size;
		*upload_size = 0;
		return MHD_YES;
	}
	if (cn->too_large)
		return reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "too_large",
		    "the body is too large");
	switch (cn->route) {
	case R_DATAKEY:
		return do_datakey(s, c);
	case R_DECRYPT:
		return do_decrypt(s, c, cn);
	case R_TOKEN:
		return do_token(s, c, cn);
	case R_HEALTH:
		atomic_fetch_add(&s->served[R_HEALTH], 1);
		return reply(c, MHD_HTTP_OK, "{\"status\":\"ok\"}", 15);
	default:
		return reply_error(c, MHD_HTTP_NOT_FOUND, "not_found",
		    "no such endpoint here (bare_server knows "
		    "/v1/keys/" KEY_NAME "/datakey, /decrypt, "
		    "/v1/tokens and /v1/health)");
	}
}

static void
on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
    enum MHD_ConnectionNotificationCode toe)
{
	(void)cls;
	(void)c;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		/* NULL makes handle() refuse the connection's requests. */
		*socket_context = calloc(1, sizeof(struct conn));
	} else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
		free(*socket_context);
		*socket_context = NULL;
	}
}

/* ---- setup ---- */

/* A whole PEM file as a NUL-terminated string for libmicrohttpd. */
static char *
read_text(const char *path)
{
	char *buf = NULL;
	size_t len = 0;
	struct stat st;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_size <= 0 || st.st_size > TLS_FILE_MAX) {
		fprintf(stderr, PROG ": cannot read %s: %s\n", path,
		    fd < 0 || errno ? strerror(errno) : "not a small file");
		goto fail;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL)
		goto fail;
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, PROG ": cannot read %s\n", path);
			goto fail;
		}
		len += (size_t)n;
	}
	buf[len] = '\0';
	close(fd);
	return buf;
fail:
	free(buf);
	if (fd >= 0)
		close(fd);
	return NULL;
}

static void
free_text(char *s)
{
	if (s != NULL) {
		kw_memzero(s, strlen(s));
		free(s);
	}
}

/*
 * KEK bench/1, created if missing (kwd_p11_list first: a run on a token
 * that has it must not fail), then one seal and open through the layer,
 * so that a broken token stops the server before any figure is taken.
 */
static int
ensure_kek(struct kwd_p11 *p11)
{
	struct kwd_p11_worker *w = NULL;
	struct kwd_p11_object *objs = NULL;
	struct kw_secret *pt = NULL;
	unsigned char dek[DEK_LEN], nonce[KWD_P11_NONCE_LEN];
	unsigned char ct[DEK_LEN + KWD_P11_TAG_LEN];
	size_t n = 0, ctlen;
	bool have = false;
	int rv;

	rv = kwd_p11_worker_new(p11, &w);
	if (rv == KW_OK)
		rv = kwd_p11_list(w, KWD_P11_KEK, KEY_NAME, &objs, &n);
	for (size_t i = 0; rv == KW_OK && i < n; i++)
		if (strcmp(objs[i].name, KEY_NAME) == 0 &&
		    objs[i].version == KEY_VERSION)
			have = true;
	if (rv == KW_OK && !have) {
		rv = kwd_p11_kek_generate(w, KEY_NAME, KEY_VERSION, NULL, NULL);
		if (rv == KW_OK)
			fprintf(stderr, PROG ": created KEK %s/%d\n", KEY_NAME,
			    KEY_VERSION);
	}
	if (rv != KW_OK) {
		fprintf(stderr, PROG ": KEK %s/%d: %s: %s\n", KEY_NAME,
		    KEY_VERSION, kw_error_name(rv), kw_strerror(rv));
		goto out;
	}
	randombytes_buf(dek, sizeof dek);
	rv = kwd_p11_gcm_seal(w, KEY_NAME, KEY_VERSION, aad, AAD_LEN, dek,
	    sizeof dek, nonce, ct, sizeof ct, &ctlen);
	if (rv == KW_OK)
		rv = kwd_p11_gcm_open(w, KEY_NAME, KEY_VERSION, aad, AAD_LEN,
		    nonce, ct, ctlen, &pt);
	if (rv == KW_OK &&
	    (kw_secret_len(pt) != sizeof dek ||
	        memcmp(kw_secret_data(pt), dek, sizeof dek)))
		rv = KW_ERR_INTERNAL;
	if (rv != KW_OK)
		fprintf(stderr, PROG ": seal and open under %s/%d: %s\n",
		    KEY_NAME, KEY_VERSION, kw_error_name(rv));
out:
	kw_memzero(dek, sizeof dek);
	kw_secret_free(pt);
	free(objs);
	kwd_p11_worker_free(w);
	return rv;
}

/*
 * kid: the RFC 7638 thumbprint of a P-256 public key, as keywardd names
 * its token signer's versions (kwd_token_kid): base64url of the SHA-256
 * of {"crv":"P-256","kty":"EC","x":..,"y":..}.
 */
static int
thumbprint(EVP_PKEY *pub, char kid[KID_LEN + 1])
{
	unsigned char pt[65], digest[32];
	char x[44], y[44], jwk[128];
	size_t len = 0;
	int n;

	if (EVP_PKEY_get_octet_string_param(pub,
	        OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pt, sizeof pt, &len) != 1 ||
	    len != sizeof pt || pt[0] != 0x04)
		return KW_ERR_CRYPTO;
	b64url(pt + 1, 32, x, sizeof x);
	b64url(pt + 33, 32, y, sizeof y);
	n = snprintf(jwk, sizeof jwk,
	    "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x,
	    y);
	crypto_hash_sha256(digest, (const unsigned char *)jwk, (size_t)n);
	b64url(digest, sizeof digest, kid, KID_LEN + 1);
	return KW_OK;
}

/*
 * Signer bench/1, created if missing, its kid, and one sign through the
 * layer checked against its public key, so that a broken token stops the
 * server before any figure is taken.
 */
static int
ensure_signer(struct server *s)
{
	struct kwd_p11_worker *w = NULL;
	struct kwd_p11_object *objs = NULL;
	EVP_PKEY *pub = NULL;
	EVP_PKEY_CTX *vctx = NULL;
	unsigned char digest[32], sig[64], der[80];
	size_t n = 0, dlen = 0;
	bool have = false;
	int rv;

	rv = kwd_p11_worker_new(s->p11, &w);
	if (rv == KW_OK)
		rv = kwd_p11_list(w, KWD_P11_SIGNER, KEY_NAME, &objs, &n);
	for (size_t i = 0; rv == KW_OK && i < n; i++)
		if (strcmp(objs[i].name, KEY_NAME) == 0 &&
		    objs[i].version == KEY_VERSION)
			have = true;
	if (rv == KW_OK && !have) {
		rv = kwd_p11_ec_generate(w, KEY_NAME, KEY_VERSION, NULL, NULL);
		if (rv == KW_OK)
			fprintf(stderr, PROG ": created signer %s/%d\n",
			    KEY_NAME, KEY_VERSION);
	}
	if (rv == KW_OK)
		rv = kwd_p11_ec_public(w, KEY_NAME, KEY_VERSION, &pub);
	if (rv != KW_OK) {
		fprintf(stderr, PROG ": signer %s/%d: %s: %s\n", KEY_NAME,
		    KEY_VERSION, kw_error_name(rv), kw_strerror(rv));
		goto out;
	}
	rv = thumbprint(pub, s->kid);
	randombytes_buf(digest, sizeof digest);
	if (rv == KW_OK)
		rv = kwd_p11_ecdsa_sign(w, KEY_NAME, KEY_VERSION, digest, sig);
	if (rv == KW_OK)
		rv = kwd_p11_ecdsa_der(sig, der, sizeof der, &dlen);
	if (rv == KW_OK &&
	    ((vctx = EVP_PKEY_CTX_new(pub, NULL)) == NULL ||
	        EVP_PKEY_verify_init(vctx) != 1 ||
	        EVP_PKEY_verify(vctx, der, dlen, digest, sizeof digest) != 1))
		rv = KW_ERR_CRYPTO;
	if (rv != KW_OK)
		fprintf(stderr, PROG ": sign and verify with %s/%d: %s\n",
		    KEY_NAME, KEY_VERSION, kw_error_name(rv));
out:
	EVP_PKEY_CTX_free(vctx);
	EVP_PKEY_free(pub);
	free(objs);
	kwd_p11_worker_free(w);
	return rv;
}

static int
listen_loopback(unsigned int port, unsigned int *ret_port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t len = sizeof sin;
	int fd, one = 1;

	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
	    listen(fd, 1024) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
		fprintf(stderr, PROG ": cannot listen on 127.0.0.1:%u: %s\n",
		    port, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*ret_port = ntohs(sin.sin_port);
	return fd;
}

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "Usage: " PROG " -c KEYWARDD_JSON -p PORT [-t THREADS]\n"
	    "\n"
	    "The baseline for keywardd's datakey, decrypt and token: "
	    "libmicrohttpd +\n"
	    "GnuTLS (mTLS, TLS 1.3) doing per request only the PKCS#11 work "
	    "(and a\n"
	    "token's JSON and base64url), on 127.0.0.1.\n"
	    "\n"
	    "  -c, --config FILE   keywardd configuration: tls.*, pkcs11.*\n"
	    "  -p, --port PORT     port on 127.0.0.1 (0: any free one, "
	    "printed)\n"
	    "  -t, --threads N     libmicrohttpd threads, one PKCS#11 "
	    "session each\n"
	    "                      (default: the configuration's workers)\n"
	    "\n"
	    "Endpoints: POST /v1/keys/" KEY_NAME "/datakey, POST "
	    "/v1/keys/" KEY_NAME "/decrypt,\n"
	    "POST /v1/tokens, GET /v1/health. Runs until SIGTERM or "
	    "SIGINT.\n");
}

static int
parse_args(int argc, char **argv, const char **config, long *port,
    long *threads)
{
	static const struct option lopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"port", required_argument, NULL, 'p'},
	    {"threads", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "c:p:t:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			*config = optarg;
			break;
		case 'p':
			errno = 0;
			*port = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || *port < 0 ||
			    *port > 65535) {
				fprintf(stderr, PROG ": -p wants 0..65535\n");
				return -1;
			}
			break;
		case 't':
			errno = 0;
			*threads = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || *threads < 1 ||
			    *threads > MAX_THREADS) {
				fprintf(stderr, PROG ": -t wants 1..%d\n",
				    MAX_THREADS);
				return -1;
			}
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc || *config == NULL || *port < 0) {
		usage(stderr);
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static struct server s = {.mu = PTHREAD_MUTEX_INITIALIZER};
	const char *config = NULL;
	struct kwd_config *cfg = NULL;
	struct MHD_Daemon *d = NULL;
	char *cert = NULL, *key = NULL, *ca = NULL, err[256];
	long port = -1, threads = 0;
	unsigned int bound;
	sigset_t sigs;
	int fd, sig, rv, status = EXIT_ERROR;

	if (parse_args(argc, argv, &config, &port, &threads) != 0)
		return EXIT_USAGE;

	/* Blocked before any thread starts, so that every libmicrohttpd
	 * thread inherits the mask and sigwait() below gets them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	rv = kw_secure_init(0);
	if (rv != KW_OK) {
		fprintf(stderr, PROG ": kw_secure_init: %s\n", kw_strerror(rv));
		return EXIT_ERROR;
	}
	kw_log_set_level(KW_LOG_WARN);
	rv = kwd_config_load(config, &cfg, err, sizeof err);
	if (rv != KW_OK) {
		fprintf(stderr, PROG ": %s\n", err);
		return EXIT_ERROR;
	}
	if (cfg->tls_cert == NULL || cfg->tls_key == NULL ||
	    cfg->tls_client_ca == NULL) {
		fprintf(stderr, PROG ": %s has no tls section\n", config);
		goto out;
	}
	if (threads == 0)
		threads = (long)cfg->workers;
	if (threads < 1 || threads > MAX_THREADS)
		threads = 1;
	cert = read_text(cfg->tls_cert);
	key = read_text(cfg->tls_key);
	ca = read_text(cfg->tls_client_ca);
	if (cert == NULL || key == NULL || ca == NULL)
		goto out;
	/* The module reads its own configuration (SOFTHSM2_CONF) when it is
	 * loaded. */
	if (kwd_config_apply_env(cfg) != KW_OK)
		goto out;
	rv = kwd_p11_open(&cfg->p11, &s.p11);
	if (rv != KW_OK) {
		fprintf(stderr, PROG ": opening the token: %s: %s\n",
		    kw_error_name(rv), kw_strerror(rv));
		goto out;
	}
	if (ensure_kek(s.p11) != KW_OK || ensure_signer(&s) != KW_OK)
		goto out;
	fd = listen_loopback((unsigned int)port, &bound);
	if (fd < 0)
		goto out;
	/* One option and its value(s) per line. */
	/* clang-format off */
	d = MHD_start_daemon(
	    MHD_USE_TLS | MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG,
	    0, NULL, NULL, handle, &s,
	    /* First, or the options before it log the default way. */
	    MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL,
	    MHD_OPTION_LISTEN_SOCKET, fd,
	    MHD_OPTION_HTTPS_MEM_CERT, cert,
	    MHD_OPTION_HTTPS_MEM_KEY, key,
	    MHD_OPTION_HTTPS_MEM_TRUST, ca,
	    MHD_OPTION_HTTPS_PRIORITIES, TLS_PRIORITIES,
	    MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)threads,
	    MHD_OPTION_CONNECTION_LIMIT,
	        (unsigned int)cfg->limits.max_connections,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT,
	        (unsigned int)cfg->limits.per_ip_connections,
	    MHD_OPTION_CONNECTION_TIMEOUT,
	        (unsigned int)cfg->limits.idle_timeout_s,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MEM_LIMIT,
	    MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
	    MHD_OPTION_END);
	/* clang-format on */
	if (d == NULL) {
		fprintf(stderr, PROG ": MHD_start_daemon failed\n");
		close(fd);
		goto out;
	}
	printf(PROG ": listening on 127.0.0.1:%u, %ld thread(s), KEK %s/%d, "
	            "signer %s/%d (kid %s)\n",
	    bound, threads, KEY_NAME, KEY_VERSION, KEY_NAME, KEY_VERSION,
	    s.kid);
	fflush(stdout);

	do
		rv = sigwait(&sigs, &sig);
	while (rv == 0 && sig == SIGHUP);
	MHD_stop_daemon(d);
	fprintf(stderr,
	    PROG ": stopped by signal %d; served %lu datakey, %lu decrypt, "
	         "%lu token, %lu health; %lu failed, %lu refused\n",
	    sig, atomic_load(&s.served[R_DATAKEY]),
	    atomic_load(&s.served[R_DECRYPT]), atomic_load(&s.served[R_TOKEN]),
	    atomic_load(&s.served[R_HEALTH]), atomic_load(&s.failed),
	    atomic_load(&s.refused));
	status = 0;
out:
	/* The threads are gone: their sessions can close. */
	for (size_t i = 0; i < s.nworkers; i++)
		kwd_p11_worker_free(s.workers[i]);
	kwd_p11_free(s.p11);
	/* libmicrohttpd keeps pointers to these until it stops. */
	free_text(cert);
	free_text(key);
	free_text(ca);
	kwd_config_free(cfg);
	return status;
}

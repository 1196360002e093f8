/*
 * client.c: libkeyward's HTTP side (docs/CLIENT.md).
 *
 * One libcurl easy handle per client, kept between calls so that the
 * TLS connection is reused (HTTP/1.1 keep-alive). Every call gets a
 * deadline; transient failures (the server cannot be reached, or answers
 * 503) are retried with jittered exponential backoff; 4xx never are.
 *
 * Answers that carry a DEK are received straight into locked memory
 * (kw_secret) and their base64 is decoded there; see datakey.c. The
 * bearer token, when there is one, lives in locked memory too and reaches
 * libcurl as a header list node that points at it, so no unlocked copy
 * is made here (libcurl and OpenSSL still copy it into their own send
 * buffers: that is beyond a library's reach, see docs/CLIENT.md).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "keyward.h"
#include "name.h"
#include "secret.h"
#include "text.h"

#define DEFAULT_TIMEOUT_MS 10000L
#define DEFAULT_RETRIES 3
#define MAX_RETRIES 10
#define BACKOFF_BASE_MS 100L
#define BACKOFF_CAP_MS 2000L
#define CONNECT_TIMEOUT_MS 5000L
#define TOKEN_MAX 8192
#define ADDR_MAX 512
#define MSG_MAX 512
/* Locked memory for the library: DEKs, answers that carry them, the
 * token. Small, so that the default RLIMIT_MEMLOCK (8 MiB) is plenty. */
#define SECURE_POOL (1u << 20)

struct kw_client {
	CURL *curl;
	char base[ADDR_MAX + 16]; /* "https://host:port" */
	char *cert, *key, *ca;
	struct kw_secret *auth; /* "Authorization: Bearer <token>" */
	long timeout_ms;
	int retries;

	/* Header list nodes: built once, pointing at the strings above. */
	struct curl_slist h_json, h_accept, h_expect, h_auth;

	/* The answer being received. */
	bool secure;
	struct kw_secret *sbuf; /* secure: KW_SECURE_ANSWER_MAX + 1 bytes */
	char *pbuf;
	size_t len, cap;
	bool overflow;

	int status;
	char msg[MSG_MAX];
	char curl_err[CURL_ERROR_SIZE];
};

/* ---- once per process ---- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc = KW_ERR_INTERNAL;

static void
init_process(void)
{
	/* libcurl >= 7.84 makes curl_global_init thread-safe; calling it
	 * once here is right for older ones as long as the application does
	 * not race us with its own first call. */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		init_rc = KW_ERR_INTERNAL;
		return;
	}
	if (sodium_init() < 0) {
		init_rc = KW_ERR_CRYPTO;
		return;
	}
	init_rc = kw_secure_init(SECURE_POOL);
}

int
kw_client_secure_init(void)
{
	if (pthread_once(&init_once, init_process) != 0)
		return KW_ERR_INTERNAL;
	return init_rc;
}

/* ---- messages ---- */

void
kw_client_clear(kw_client *c)
{
	c->msg[0] = '\0';
}

int
kw_client_fail(kw_client *c, int code, const char *fmt, ...)
{
	va_list ap;

	if (c == NULL)
		return code;
	va_start(ap, fmt);
	vsnprintf(c->msg, sizeof c->msg, fmt, ap);
	va_end(ap);
	return code;
}

const char *
kw_client_message(const kw_client *c)
{
	return c == NULL ? "no client" : c->msg;
}

int
kw_client_status(const kw_client *c)
{
	return c == NULL ? 0 : c->status;
}

void
kw_free(void *p)
{
	free(p);
}

/* ---- options ---- */

static const char *
pick(const char *opt, const char *env)
{
	const char *v;

	if (opt != NULL && opt[0] != '\0')
		return opt;
	v = getenv(env);
	return v != NULL && v[0] != '\0' ? v : NULL;
}

/*
 * set_base: "host:port", "https://host:port" or "https://host:port/".
 * Plain http is refused: every call carries credentials or keys.
 */
static int
set_base(kw_client *c, const char *addr)
{
	const char *hostport = addr;
	size_t len;

	if (addr == NULL)
		return kw_client_fail(c, KW_ERR_CONFIG,
		    "no server address: set KEYWARD_ADDR (host:port) or the "
		    "addr option");
	if (strncmp(addr, "http://", 7) == 0)
		return kw_client_fail(c, KW_ERR_CONFIG,
		    "KEYWARD_ADDR: plain http is refused; keywardd speaks "
		    "https only");
	if (strncmp(addr, "https://", 8) == 0)
		hostport = addr + 8;
	len = strlen(hostport);
	if (len > 0 && hostport[len - 1] == '/')
		len--;
	if (len == 0 || len > ADDR_MAX)
		return kw_client_fail(c, KW_ERR_CONFIG,
		    "KEYWARD_ADDR: expected host:port or https://host:port");
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)hostport[i];

		/* Host names, IPv4, [IPv6] and a port: nothing that could
		 * add a path, a query, credentials or a second URL. */
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		        (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' ||
		        ch == ':' || ch == '[' || ch == ']'))
			return kw_client_fail(c, KW_ERR_CONFIG,
			    "KEYWARD_ADDR: expected host:port or "
			    "https://host:port");
	}
	snprintf(c->base, sizeof c->base, "https://%.*s", (int)len, hostport);
	return KW_OK;
}

static int
readable_file(kw_client *c, const char *what, const char *path, char **ret_copy)
{
	struct stat st;
	char *copy;

	if (path == NULL) {
		*ret_copy = NULL;
		return KW_OK;
	}
	if (stat(path, &st) != 0)
		return kw_client_fail(c, KW_ERR_CONFIG, "%s: %s: %s", what,
		    path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return kw_client_fail(c, KW_ERR_CONFIG,
		    "%s: %s: not a regular file", what, path);
	if (access(path, R_OK) != 0)
		return kw_client_fail(c, KW_ERR_CONFIG, "%s: %s: %s", what,
		    path, strerror(errno));
	copy = strdup(path);
	if (copy == NULL)
		return KW_ERR_NOMEM;
	*ret_copy = copy;
	return KW_OK;
}

static int
set_token(kw_client *c, const char *token)
{
	static const char prefix[] = "Authorization: Bearer ";
	size_t len;
	int rc;

	if (token == NULL)
		return KW_OK;
	len = strlen(token);
	if (len == 0 || len > TOKEN_MAX)
		return kw_client_fail(c, KW_ERR_CONFIG,
		    "KEYWARD_TOKEN: expected a token of 1 to %d bytes",
		    TOKEN_MAX);
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)token[i];

		/* A compact JWS is base64url and dots: anything else would
		 * let the value inject header lines. */
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		        (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
		        ch == '.'))
			return kw_client_fail(c, KW_ERR_CONFIG,
			    "KEYWARD_TOKEN: not a token (base64url and dots "
			    "only)");
	}
	rc = kw_secret_new(sizeof prefix + len, &c->auth);
	if (rc != KW_OK)
		return kw_client_fail(c, rc,
		    "no locked memory for the token: %s", kw_strerror(rc));
	memcpy(kw_secret_data(c->auth), prefix, sizeof prefix - 1);
	memcpy(kw_secret_data(c->auth) + sizeof prefix - 1, token, len);
	kw_secret_data(c->auth)[sizeof prefix - 1 + len] = '\0';
	return KW_OK;
}

/* ---- receiving ---- */

static size_t
on_body(char *data, size_t size, size_t n, void *arg)
{
	kw_client *c = arg;
	size_t len = size * n;
	size_t max = c->secure ? KW_SECURE_ANSWER_MAX : KW_PLAIN_ANSWER_MAX;

	if (len > max - c->len) {
		c->overflow = true;
		return 0; /* libcurl stops with CURLE_WRITE_ERROR */
	}
	if (c->secure) {
		memcpy(kw_secret_data(c->sbuf) + c->len, data, len);
	} else {
		if (c->len + len + 1 > c->cap) {
			size_t cap = c->cap == 0 ? 4096 : c->cap;
			char *p;

			while (cap < c->len + len + 1)
				cap *= 2;
			if (cap > KW_PLAIN_ANSWER_MAX + 1)
				cap = KW_PLAIN_ANSWER_MAX + 1;
			p = realloc(c->pbuf, cap);
			if (p == NULL)
				return 0;
			c->pbuf = p;
			c->cap = cap;
		}
		memcpy(c->pbuf + c->len, data, len);
	}
	c->len += len;
	return len;
}

static const char *
answer(const kw_client *c)
{
	return c->secure ? (const char *)kw_secret_data(c->sbuf) : c->pbuf;
}

static void
answer_reset(kw_client *c)
{
	/* Only the secure buffer can hold a DEK; c->len counts the bytes
	 * of the current mode's buffer. */
	if (c->secure && c->sbuf != NULL && c->len > 0)
		sodium_memzero(kw_secret_data(c->sbuf), c->len);
	c->len = 0;
	c->overflow = false;
}

/* ---- the client ---- */

int
kw_client_new(const struct kw_client_options *opt, kw_client **ret_client,
    char *err, size_t errlen)
{
	struct kw_client_options none = {0};
	kw_client *c = NULL;
	int rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (ret_client == NULL)
		return KW_ERR_INVALID;
	if (opt == NULL)
		opt = &none;
	rc = kw_client_secure_init();
	if (rc != KW_OK) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s%s", kw_strerror(rc),
			    rc == KW_ERR_MEMLOCK
			        ? " (raise the locked-memory limit: ulimit -l)"
			        : "");
		return rc;
	}
	c = calloc(1, sizeof *c);
	if (c == NULL)
		return KW_ERR_NOMEM;
	c->timeout_ms =
	    opt->timeout_ms > 0 ? opt->timeout_ms : DEFAULT_TIMEOUT_MS;
	c->retries = opt->retries < 0 ? 0
	    : opt->retries == 0       ? DEFAULT_RETRIES
	                              : opt->retries;
	if (c->retries > MAX_RETRIES)
		c->retries = MAX_RETRIES;

	rc = set_base(c, pick(opt->addr, "KEYWARD_ADDR"));
	if (rc == KW_OK)
		rc = readable_file(c, "KEYWARD_CERT",
		    pick(opt->cert, "KEYWARD_CERT"), &c->cert);
	if (rc == KW_OK)
		rc = readable_file(c, "KEYWARD_KEY",
		    pick(opt->key, "KEYWARD_KEY"), &c->key);
	if (rc == KW_OK)
		rc = readable_file(c, "KEYWARD_CA", pick(opt->ca, "KEYWARD_CA"),
		    &c->ca);
	if (rc == KW_OK)
		rc = set_token(c, pick(opt->token, "KEYWARD_TOKEN"));
	if (rc == KW_OK && (c->cert == NULL) != (c->key == NULL))
		rc = kw_client_fail(c, KW_ERR_CONFIG,
		    "KEYWARD_CERT and KEYWARD_KEY go together: set both");
	if (rc == KW_OK && c->cert == NULL && c->auth == NULL)
		rc = kw_client_fail(c, KW_ERR_CONFIG,
		    "no credentials: set KEYWARD_CERT and KEYWARD_KEY (a "
		    "client certificate) or KEYWARD_TOKEN");
	if (rc != KW_OK)
		goto out;
	rc = kw_secret_new(KW_SECURE_ANSWER_MAX + 1, &c->sbuf);
	if (rc != KW_OK)
		goto out;

	c->curl = curl_easy_init();
	if (c->curl == NULL) {
		rc = KW_ERR_NOMEM;
		goto out;
	}
	c->h_json.data = "Content-Type: application/json";
	c->h_accept.data = "Accept: application/json";
	c->h_expect.data = "Expect:"; /* no 100-continue round trip */
	c->h_json.next = &c->h_accept;
	c->h_accept.next = &c->h_expect;
	if (c->auth != NULL) {
		c->h_auth.data = (char *)kw_secret_data(c->auth);
		c->h_expect.next = &c->h_auth;
	}

	/* Set once; per call only the URL, method and body change. */
	CURL *h = c->curl;
	CURLcode cc = CURLE_OK;
#define SET(opt, val)                                       \
	do {                                                \
		if (cc == CURLE_OK)                         \
			cc = curl_easy_setopt(h, opt, val); \
	} while (0)
	SET(CURLOPT_PROTOCOLS_STR, "https");
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_TCP_NODELAY, 1L);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->ca != NULL)
		SET(CURLOPT_CAINFO, c->ca);
	if (c->cert != NULL) {
		SET(CURLOPT_SSLCERT, c->cert);
		SET(CURLOPT_SSLCERTTYPE, "PEM");
		SET(CURLOPT_SSLKEY, c->key);
		SET(CURLOPT_SSLKEYTYPE, "PEM");
	}
	SET(CURLOPT_HTTPHEADER, &c->h_json);
	SET(CURLOPT_USERAGENT, "libkeyward/" KW_VERSION_STRING);
	SET(CURLOPT_WRITEFUNCTION, on_body);
	SET(CURLOPT_WRITEDATA, c);
	SET(CURLOPT_ERRORBUFFER, c->curl_err);
	SET(CURLOPT_TIMEOUT_MS, c->timeout_ms);
	SET(CURLOPT_CONNECTTIMEOUT_MS,
	    c->timeout_ms < CONNECT_TIMEOUT_MS ? c->timeout_ms
	                                       : CONNECT_TIMEOUT_MS);
#undef SET
	if (cc != CURLE_OK) {
		rc = kw_client_fail(c, KW_ERR_INTERNAL,
		    "libcurl refused an option: %s", curl_easy_strerror(cc));
		goto out;
	}
	*ret_client = c;
	c = NULL;
	rc = KW_OK;
out:
	if (c != NULL && err != NULL && errlen > 0)
		snprintf(err, errlen, "%s",
		    c->msg[0] != '\0' ? c->msg : kw_strerror(rc));
	kw_client_free(c);
	return rc;
}

void
kw_client_free(kw_client *c)
{
	if (c == NULL)
		return;
	if (c->curl != NULL)
		curl_easy_cleanup(c->curl);
	kw_secret_free(c->sbuf);
	kw_secret_free(c->auth);
	free(c->pbuf);
	free(c->cert);
	free(c->key);
	free(c->ca);
	free(c);
}

/* ---- one call ---- */

/* The API's error codes (docs/API.md "Errors") and what they mean here. */
static const struct {
	const char *code;
	int err;
} api_errors[] = {
    {"invalid_request", KW_ERR_INVALID},
    {"decrypt_failed", KW_ERR_AUTH},
    {"unauthenticated", KW_ERR_UNAUTHENTICATED},
    {"forbidden", KW_ERR_DENIED},
    {"not_found", KW_ERR_NOT_FOUND},
    {"method_not_allowed", KW_ERR_INVALID},
    {"conflict", KW_ERR_EXISTS},
    {"length_required", KW_ERR_PROTOCOL},
    {"too_large", KW_ERR_TOO_LARGE},
    {"unsupported_media_type", KW_ERR_PROTOCOL},
    {"rate_limited", KW_ERR_RATE_LIMITED},
    {"internal", KW_ERR_INTERNAL},
    {"unavailable", KW_ERR_UNAVAILABLE},
};

static int
status_error(int status)
{
	switch (status) {
	case 400:
		return KW_ERR_INVALID;
	case 401:
		return KW_ERR_UNAUTHENTICATED;
	case 403:
		return KW_ERR_DENIED;
	case 404:
		return KW_ERR_NOT_FOUND;
	case 409:
		return KW_ERR_EXISTS;
	case 413:
	case 414:
	case 431:
		return KW_ERR_TOO_LARGE;
	case 429:
		return KW_ERR_RATE_LIMITED;
	case 503:
		return KW_ERR_UNAVAILABLE;
	default:
		return status >= 500 ? KW_ERR_INTERNAL : KW_ERR_PROTOCOL;
	}
}

/*
 * http_error: the KW_ERR_* and message of a non-2xx answer, from its
 * {"error":{"code","message","request_id"}} body when it has one. The
 * server's message is written for clients; it is still shown defanged
 * (control bytes would otherwise reach the user's terminal).
 */
static int
http_error(kw_client *c)
{
	char mbuf[260], cbuf[68], rbuf[36];
	const char *code = NULL, *message = NULL, *rid = NULL;
	json_t *root = NULL, *e;
	int err = status_error(c->status);

	if (c->len > 0 && !c->overflow)
		root =
		    json_loadb(answer(c), c->len, JSON_REJECT_DUPLICATES, NULL);
	e = json_object_get(root, "error");
	if (json_is_object(e)) {
		code = json_string_value(json_object_get(e, "code"));
		message = json_string_value(json_object_get(e, "message"));
		rid = json_string_value(json_object_get(e, "request_id"));
	}
	if (code != NULL)
		for (size_t i = 0; i < sizeof api_errors / sizeof api_errors[0];
		     i++)
			if (strcmp(code, api_errors[i].code) == 0) {
				err = api_errors[i].err;
				break;
			}
	kw_client_fail(c, err, "keywardd answered %d%s%s: %s%s%s%s", c->status,
	    code != NULL ? " " : "",
	    code != NULL ? kw_defang(code, 64, cbuf) : "",
	    message != NULL ? kw_defang(message, 256, mbuf) : kw_strerror(err),
	    rid != NULL ? " (request id " : "",
	    rid != NULL ? kw_defang(rid, 32, rbuf) : "",
	    rid != NULL ? ")" : "");
	json_decref(root);
	return err;
}

/* transport_error: the KW_ERR_* of a libcurl failure; *ret_sent says
 * whether the request may have reached the server. */
static int
transport_error(kw_client *c, CURLcode cc, bool *ret_sent)
{
	char ebuf[CURL_ERROR_SIZE + 4];
	const char *detail = c->curl_err[0] != '\0'
	    ? kw_defang(c->curl_err, CURL_ERROR_SIZE - 1, ebuf)
	    : curl_easy_strerror(cc);

	*ret_sent = true;
	switch (cc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
		*ret_sent = false;
		return kw_client_fail(c, KW_ERR_CONNECT,
		    "cannot reach keywardd at %s: %s", c->base, detail);
	case CURLE_OPERATION_TIMEDOUT:
		return kw_client_fail(c, KW_ERR_TIMEOUT,
		    "keywardd at %s did not answer within %ld ms: %s", c->base,
		    c->timeout_ms, detail);
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
		*ret_sent = false;
		return kw_client_fail(c, KW_ERR_CONFIG,
		    "the server's certificate is not trusted (check KEYWARD_CA "
		    "and the host name in KEYWARD_ADDR): %s",
		    detail);
	case CURLE_SSL_CERTPROBLEM:
		*ret_sent = false;
		return kw_client_fail(c, KW_ERR_CONFIG,
		    "the client certificate or key cannot be used (check "
		    "KEYWARD_CERT and KEYWARD_KEY): %s",
		    detail);
	case CURLE_SSL_CONNECT_ERROR:
		*ret_sent = false;
		return kw_client_fail(c, KW_ERR_CONNECT,
		    "TLS handshake with %s failed: %s", c->base, detail);
	case CURLE_WRITE_ERROR:
		if (c->overflow)
			return kw_client_fail(c, KW_ERR_PROTOCOL,
			    "the answer is larger than %u bytes: check that "
			    "KEYWARD_ADDR points at keywardd",
			    c->secure ? KW_SECURE_ANSWER_MAX
			              : KW_PLAIN_ANSWER_MAX);
		return kw_client_fail(c, KW_ERR_NOMEM,
		    "out of memory receiving the answer");
	case CURLE_OUT_OF_MEMORY:
		return kw_client_fail(c, KW_ERR_NOMEM, "out of memory: %s",
		    detail);
	default:
		return kw_client_fail(c, KW_ERR_IO, "talking to %s: %s",
		    c->base, detail);
	}
}

/* retry_after_ms: the server's Retry-After (seconds), 0 if none. */
static long
retry_after_ms(kw_client *c)
{
	struct curl_header *hd = NULL;
	char *end;
	long s;

	if (curl_easy_header(c->curl, "Retry-After", 0, CURLH_HEADER, -1,
	        &hd) != CURLHE_OK)
		return 0;
	errno = 0;
	s = strtol(hd->value, &end, 10);
	if (errno != 0 || end == hd->value || *end != '\0' || s < 0)
		return 0;
	return s > BACKOFF_CAP_MS / 1000 ? BACKOFF_CAP_MS : s * 1000;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* backoff_ms: full jitter over an exponential ceiling (attempt from 0). */
static long
backoff_ms(int attempt)
{
	long ceil = BACKOFF_BASE_MS << (attempt < 5 ? attempt : 5);

	if (ceil > BACKOFF_CAP_MS)
		ceil = BACKOFF_CAP_MS;
	return ceil / 2 + (long)randombytes_uniform((uint32_t)(ceil / 2) + 1);
}

static int
perform(kw_client *c, const char *method, const char *url, const char *body,
    bool *ret_transient, bool *ret_sent)
{
	CURLcode cc;
	long status = 0;

	*ret_transient = false;
	*ret_sent = true;
	answer_reset(c);
	c->curl_err[0] = '\0';
	c->status = 0;
	cc = curl_easy_setopt(c->curl, CURLOPT_URL, url);
	if (cc == CURLE_OK)
		cc = curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
	if (cc == CURLE_OK && body != NULL) {
		cc = curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE,
		    (long)strlen(body));
		if (cc == CURLE_OK)
			cc =
			    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
	} else if (cc == CURLE_OK) {
		/* No body: back to a plain GET-style request. */
		cc = curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
		if (cc == CURLE_OK)
			cc = curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST,
			    method);
	}
	if (cc != CURLE_OK)
		return kw_client_fail(c, KW_ERR_INTERNAL,
		    "libcurl refused the request: %s", curl_easy_strerror(cc));
	cc = curl_easy_perform(c->curl);
	if (cc != CURLE_OK) {
		int rc = transport_error(c, cc, ret_sent);

		*ret_transient = rc == KW_ERR_CONNECT || rc == KW_ERR_TIMEOUT ||
		    rc == KW_ERR_IO;
		return rc;
	}
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
	c->status = (int)status;
	if (status >= 200 && status < 300)
		return KW_OK;
	*ret_transient = status == 503;
	*ret_sent = status != 503; /* 503: the server did nothing */
	return http_error(c);
}

int
kw_call(kw_client *c, enum kw_call_kind kind, const char *method,
    const char *path, const char *json_body, bool secure,
    struct kw_secret **ret_secure, char **ret_plain, size_t *ret_len)
{
	char url[sizeof c->base + 512];
	bool transient, sent;
	int rc, attempt;

	kw_client_clear(c);
	if (strlen(path) >= 512 || path[0] != '/')
		return kw_client_fail(c, KW_ERR_INVALID, "bad API path");
	snprintf(url, sizeof url, "%s%s", c->base, path);
	c->secure = secure;
	for (attempt = 0;; attempt++) {
		long wait;

		rc = perform(c, method, url, json_body, &transient, &sent);
		if (rc == KW_OK || !transient || attempt >= c->retries)
			break;
		/* A request that may have been carried out is repeated only
		 * if repeating it changes nothing. */
		if (sent && kind != KW_CALL_SAFE && c->status != 503)
			break;
		wait = backoff_ms(attempt);
		if (c->status == 503) {
			long ra = retry_after_ms(c);

			if (ra > wait)
				wait = ra;
		}
		sleep_ms(wait);
	}
	if (rc != KW_OK) {
		answer_reset(c);
		return rc;
	}
	if (secure) {
		struct kw_secret *s = NULL;

		rc = kw_secret_new(c->len + 1, &s);
		if (rc != KW_OK) {
			answer_reset(c);
			return kw_client_fail(c, rc, "no locked memory: %s",
			    kw_strerror(rc));
		}
		memcpy(kw_secret_data(s), kw_secret_data(c->sbuf), c->len);
		kw_secret_data(s)[c->len] = '\0';
		*ret_secure = s;
	} else {
		char *p = malloc(c->len + 1);

		if (p == NULL) {
			answer_reset(c);
			return kw_client_fail(c, KW_ERR_NOMEM, "out of memory");
		}
		if (c->len > 0)
			memcpy(p, c->pbuf, c->len);
		p[c->len] = '\0';
		*ret_plain = p;
	}
	*ret_len = c->len;
	answer_reset(c);
	return KW_OK;
}

int
kw_client_request(kw_client *c, const char *method, const char *path,
    const char *json_body, char **ret_body)
{
	size_t len;
	enum kw_call_kind kind;

	if (c == NULL || method == NULL || path == NULL || ret_body == NULL)
		return KW_ERR_INVALID;
	kind = strcmp(method, "GET") == 0 ? KW_CALL_SAFE : KW_CALL_WRITE;
	return kw_call(c, kind, method, path, json_body, false, NULL, ret_body,
	    &len);
}

/* ---- helpers for the typed calls ---- */

bool
kw_key_name_ok(kw_client *c, const char *name)
{
	char buf[68];

	if (name != NULL && kw_name_valid(name))
		return true;
	kw_client_fail(c, KW_ERR_INVALID,
	    "key name %s%s%s: expected 1 to 63 of a-z 0-9 . _ -, starting "
	    "with a letter or digit",
	    name != NULL ? "\"" : "",
	    name != NULL ? kw_defang(name, 63, buf) : "(none)",
	    name != NULL ? "\"" : "");
	return false;
}

bool
kw_answer_top_level(const char *s, const char *at)
{
	bool in_string = false;
	long depth = 0;

	for (const char *p = s; p < at; p++) {
		if (in_string) {
			if (*p == '\\')
				p++; /* the escaped byte; at itself if it is next */
			else if (*p == '"')
				in_string = false;
		} else if (*p == '"') {
			in_string = true;
		} else if (*p == '{' || *p == '[') {
			depth++;
		} else if (*p == '}' || *p == ']') {
			depth--;
		}
	}
	return !in_string && depth == 1 && at[0] == '"';
}

bool
kw_answer_blanked(json_t *root, const char *name, size_t len)
{
	const char *s = json_string_value(json_object_get(root, name));

	if (s == NULL || strlen(s) != len)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] != 'A')
			return false;
	return true;
}

static bool
context_key_ok(const char *k)
{
	size_t len = strlen(k);

	if (len == 0 || len > 64 || !(k[0] >= 'a' && k[0] <= 'z'))
		return false;
	for (size_t i = 1; i < len; i++) {
		char ch = k[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		        ch == '_' || ch == '.' || ch == '-'))
			return false;
	}
	return true;
}

int
kw_context_json(kw_client *c, const struct kw_context_pair *ctx, size_t nctx,
    json_t **ret_obj)
{
	char buf[68];
	json_t *obj;

	if (nctx > 32)
		return kw_client_fail(c, KW_ERR_INVALID,
		    "context: at most 32 pairs");
	if (nctx > 0 && ctx == NULL)
		return kw_client_fail(c, KW_ERR_INVALID, "context: missing");
	obj = json_object();
	if (obj == NULL)
		return kw_client_fail(c, KW_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < nctx; i++) {
		const char *k = ctx[i].key, *v = ctx[i].value;

		if (k == NULL || v == NULL || !context_key_ok(k)) {
			json_decref(obj);
			return kw_client_fail(c, KW_ERR_INVALID,
			    "context key %s: expected ^[a-z][a-z0-9_.-]{0,63}$",
			    k != NULL ? kw_defang(k, 64, buf) : "(none)");
		}
		if (strlen(v) > 256) {
			json_decref(obj);
			return kw_client_fail(c, KW_ERR_INVALID,
			    "context.%s: at most 256 bytes", k);
		}
		if (json_object_get(obj, k) != NULL) {
			json_decref(obj);
			return kw_client_fail(c, KW_ERR_INVALID,
			    "context.%s: given twice", k);
		}
		/* json_string refuses invalid UTF-8; the server refuses
		 * control characters with a message naming the field. */
		if (json_object_set_new(obj, k, json_string(v)) != 0) {
			json_decref(obj);
			return kw_client_fail(c, KW_ERR_INVALID,
			    "context.%s: not valid UTF-8", k);
		}
	}
	*ret_obj = obj;
	return KW_OK;
}

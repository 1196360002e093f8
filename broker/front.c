/*
 * front.c: the network-facing process (see front.h and docs/API.md).
 *
 * libmicrohttpd (0.9.75, over GnuTLS) does TLS and HTTP parsing; it is
 * lenient in ways a key broker cannot be, so this file re-checks what it
 * lets through before any key operation (THREATS.md "Facts about our
 * stack", sections A, B, C, J):
 *
 * - MHD requests a client certificate but lets a connection without one
 *   (or with one from a look-alike CA) reach the handler: every
 *   connection is authenticated here, once, before any routing;
 * - MHD accepts two Content-Length headers, Content-Length with
 *   Transfer-Encoding, bare LF and folded header lines: the header block
 *   is re-checked (check_framing) and such requests get 400 and a closed
 *   connection, so nothing pipelined behind them is read;
 * - MHD's timeout is an inactivity timeout: a watchdog thread enforces an
 *   absolute deadline per request phase and shuts down the socket of a
 *   connection that misses it.
 *
 * Threads: the event loops (KWD_FRONT_LOOPS, each running an MHD daemon in
 * external epoll mode and its share of the API channels; a request's
 * connection is suspended while the keeper works on it), MHD's metrics
 * thread (the last channel, requests synchronous on it), the watchdog,
 * and the main thread, which waits for signals.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "front.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "msg.h"
#include "name.h"
#include "request.h"
#include "sandbox.h"
#include "secret.h"
#include "store.h"
#include "token.h"

/*
 * Per-connection memory of MHD (request line, headers, read buffer).
 * 16 KiB holds any request this API accepts; a larger header block gets
 * 431 (414 for a longer request line) from MHD itself, which also keeps
 * 1,000 idle connections within the memory goal (DESIGN.md section 5).
 * Measured with 0.9.75 over TLS: a 15,000-byte header field is served,
 * 17,000 bytes get 431, a 17,000-byte request target 414, 600 small
 * header fields 431 (their records share the pool).
 */
#define MEM_LIMIT (16 * 1024)
#define IPC_TIMEOUT_MS 5000
#define HEALTH_TIMEOUT_MS 1000
/* How often a wait for the keeper looks at its deadline: a timeout
 * fires at most this much late. */
#define IPC_TICK_MS 50
#define ABANDONED_MAX 8
#define TLS_FILE_MAX (1024 * 1024)
#define METRICS_CONN_LIMIT 16
#define METRICS_IDLE_S 10
#define SIG_TICK_MS 200

/* Token bucket per identity: limits.rate_per_s and limits.rate_burst. */
#define RATE_PER_S ((double)F.cfg->limits.rate_per_s)
#define RATE_BURST ((double)F.cfg->limits.rate_burst)
#define RL_SETS 256
#define RL_WAYS 8

/*
 * TLS 1.3, and TLS 1.2 only with ECDHE and AEAD ciphers: no CBC, no RSA
 * key exchange, no finite-field DHE, no SSL 3.0 / TLS 1.0 / 1.1, no SHA-1
 * handshake signatures (RFC 9325 section 4).
 */
#define PRIORITIES                                                    \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:"                 \
	"-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:"   \
	"-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:"             \
	"-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:" \
	"+GROUP-SECP521R1:"                                           \
	"-SIGN-RSA-SHA1:-SIGN-ECDSA-SHA1:-SIGN-DSA-SHA1:%SERVER_PRECEDENCE"

/* ---- routes ---- */

enum route {
	RT_NONE, /* not routed (yet): rejected before, or unknown */
	RT_KEYS_LIST,
	RT_KEYS_CREATE,
	RT_KEY_SHOW,
	RT_KEY_PATCH,
	RT_KEY_ROTATE,
	RT_DATAKEY,
	RT_DECRYPT,
	RT_REWRAP,
	RT_METRICS,
	RT_HEALTH,
	RT_TOKENS,
	RT_JWKS,
	RT_TOKEN_REVOKE,
	RT_TOKEN_INTROSPECT,
	RT_SIGNER_SHOW,
	RT_SIGNER_ROTATE,
	RT_ARTIFACT_SIGN,
	RT_CERTS,
	RT__COUNT
};

enum body_rule {
	BODY_NONE, /* GET: no body */
	BODY_OPTIONAL, /* rotate: empty or {} */
	BODY_REQUIRED,
};

struct route_info {
	const char *label; /* metrics */
	const char *op; /* audit (policy operation names) */
	enum kwd_msg_type type;
	uint16_t answer;
	enum kwd_req_kind kind;
	enum body_rule body;
	unsigned ok_status;
};

static const struct route_info routes[RT__COUNT] = {
    [RT_NONE] = {"none", "http", 0, 0, KWD_REQ_EMPTY, BODY_NONE, 0},
    [RT_KEYS_LIST] = {"keys_list", "admin.list", KWD_MSG_KEY_LIST,
        KWD_MSG_R_KEY_LIST, KWD_REQ_EMPTY, BODY_NONE, 200},
    [RT_KEYS_CREATE] = {"keys_create", "admin.create", KWD_MSG_KEY_CREATE,
        KWD_MSG_R_KEY, KWD_REQ_KEY_CREATE, BODY_REQUIRED, 201},
    [RT_KEY_SHOW] = {"key_show", "admin.read", KWD_MSG_KEY_SHOW, KWD_MSG_R_KEY,
        KWD_REQ_EMPTY, BODY_NONE, 200},
    [RT_KEY_PATCH] = {"key_patch", "admin.patch", KWD_MSG_KEY_PATCH,
        KWD_MSG_R_KEY, KWD_REQ_KEY_PATCH, BODY_REQUIRED, 200},
    [RT_KEY_ROTATE] = {"key_rotate", "admin.rotate", KWD_MSG_KEY_ROTATE,
        KWD_MSG_R_KEY, KWD_REQ_EMPTY, BODY_OPTIONAL, 200},
    [RT_DATAKEY] = {"datakey", "datakey", KWD_MSG_DATAKEY, KWD_MSG_R_DATAKEY,
        KWD_REQ_DATAKEY, BODY_REQUIRED, 200},
    [RT_DECRYPT] = {"decrypt", "decrypt", KWD_MSG_DECRYPT, KWD_MSG_R_DECRYPT,
        KWD_REQ_UNWRAP, BODY_REQUIRED, 200},
    [RT_REWRAP] = {"rewrap", "rewrap", KWD_MSG_REWRAP, KWD_MSG_R_REWRAP,
        KWD_REQ_UNWRAP, BODY_REQUIRED, 200},
    [RT_METRICS] = {"metrics", "metrics", KWD_MSG_STATS, KWD_MSG_R_STATS,
        KWD_REQ_EMPTY, BODY_NONE, 200},
    [RT_HEALTH] = {"health", "health", KWD_MSG_HEALTH, KWD_MSG_R_HEALTH,
        KWD_REQ_EMPTY, BODY_NONE, 200},
    [RT_TOKENS] = {"tokens", "token", KWD_MSG_TOKEN_ISSUE, KWD_MSG_R_TOKEN,
        KWD_REQ_TOKEN, BODY_REQUIRED, 200},
    [RT_JWKS] = {"jwks", "jwks", KWD_MSG_JWKS, KWD_MSG_R_JWKS, KWD_REQ_EMPTY,
        BODY_NONE, 200},
    [RT_TOKEN_REVOKE] = {"token_revoke", "admin.revoke", KWD_MSG_TOKEN_REVOKE,
        KWD_MSG_R_OK, KWD_REQ_REVOKE, BODY_REQUIRED, 200},
    [RT_TOKEN_INTROSPECT] = {"token_introspect", "introspect",
        KWD_MSG_TOKEN_INTROSPECT, KWD_MSG_R_INTROSPECT, KWD_REQ_INTROSPECT,
        BODY_REQUIRED, 200},
    [RT_SIGNER_SHOW] = {"signer_show", "signer.read", KWD_MSG_SIGNER_SHOW,
        KWD_MSG_R_SIGNER, KWD_REQ_EMPTY, BODY_NONE, 200},
    [RT_SIGNER_ROTATE] = {"signer_rotate", "admin.rotate",
        KWD_MSG_SIGNER_ROTATE, KWD_MSG_R_SIGNER, KWD_REQ_EMPTY, BODY_OPTIONAL,
        200},
    [RT_ARTIFACT_SIGN] = {"artifact_sign", "sign", KWD_MSG_ARTIFACT_SIGN,
        KWD_MSG_R_SIGNATURE, KWD_REQ_SIGN, BODY_REQUIRED, 200},
    [RT_CERTS] = {"certs", "cert", KWD_MSG_CERT_ISSUE, KWD_MSG_R_CERT,
        KWD_REQ_CERT, BODY_REQUIRED, 200},
};

/* The one route a client without a certificate may use. */
#define JWKS_PATH "/.well-known/jwks.json"

/* ---- metrics ---- */

static const unsigned statuses[] = {200, 201, 400, 401, 403, 404, 405, 409, 411,
    413, 415, 429, 500, 503};
#define NSTATUS (sizeof statuses / sizeof statuses[0])

/* Upper bounds of the latency histogram, microseconds. */
static const uint64_t buckets_us[] = {500, 1000, 2500, 5000, 10000, 25000,
    50000, 100000, 250000, 500000, 1000000};
#define NBUCKET (sizeof buckets_us / sizeof buckets_us[0])

enum reject_reason {
	RJ_NO_CERT,
	RJ_UNTRUSTED,
	RJ_LEAF,
	RJ_IDENTITY,
	RJ_FRAMING,
	RJ_HEADER_TIMEOUT,
	RJ_BODY_TIMEOUT,
	RJ_IDLE_TIMEOUT,
	RJ__COUNT
};

static const char *const reject_names[RJ__COUNT] = {"no_certificate",
    "certificate_untrusted", "certificate_rejected", "identity_rejected",
    "framing", "header_timeout", "body_timeout", "idle_timeout"};

struct metrics {
	_Atomic uint64_t requests[RT__COUNT][NSTATUS + 1]; /* +1: other */
	_Atomic uint64_t hist[RT__COUNT][NBUCKET]; /* not cumulative */
	_Atomic uint64_t hist_sum_us[RT__COUNT];
	_Atomic uint64_t hist_count[RT__COUNT];
	_Atomic uint64_t rejected[RJ__COUNT];
};

/* ---- connections and requests ---- */

/* Phases of a connection, for the watchdog. */
enum phase {
	PH_WAIT, /* connected, TLS, request line not complete */
	PH_HEADERS, /* request line received, header block not complete */
	PH_BODY, /* in the handler, reading the body */
	PH_BUSY, /* answering: no deadline */
	PH_IDLE, /* between requests (keep-alive) */
};

enum req_state {
	RS_NEW, /* uri_log seen, handler not yet called */
	RS_BODY, /* first call made and passed: reading the body */
	RS_DONE, /* answered (or answering) */
};

struct conn;

/* What goes with a response besides its status and body. */
struct extra {
	const char *allow;
	unsigned retry_after; /* seconds, 0: none */
	bool close;
};

struct req {
	struct conn *conn;
	enum req_state state;
	uint64_t rid;
	char rid_hex[17];
	int64_t t0_ns;
	enum route route;
	unsigned status; /* the one we answered with; 0: none (yet) */
	const char *uri; /* as MHD saw it, in its buffer */
	size_t uri_len;
	bool has_query;
	bool query_long;
	char query[24];
	char name[KW_NAME_MAX + 1]; /* key name from the path */
	bool plaintext;
	const char *bearer; /* the Authorization token, in MHD's pool */
	unsigned retry_after; /* > 0: rate-limited, answer 429 at the end */
	bool discard; /* drop the body (rate-limited) */
	char *body;
	size_t body_len, body_cap;
	/* Waiting for the keeper: the connection is suspended. */
	bool failed; /* no response could be queued: close */
	/* A refusal whose audit record is on its way (THEN_REJECT). */
	unsigned rj_status;
	const char *rj_code;
	struct extra rj_x;
	char rj_msg[513];
};

struct conn {
	struct conn *prev, *next; /* registry, under reg_lock */
	int fd;
	bool api; /* false: the metrics listener */
	_Atomic int phase;
	_Atomic int64_t deadline_ms; /* 0: none */
	_Atomic bool cut;
	/* The rest belongs to the connection's MHD thread. */
	int auth; /* 0: not yet checked, 1: good, -1: refused */
	uint64_t nreq;
	char identity[KWD_IDENTITY_MAX + 1];
	char x5t[KWD_TOKEN_THUMB_LEN + 1]; /* x5t#S256 of the client cert */
	char remote[INET6_ADDRSTRLEN];
	uint64_t ip_key; /* counted in F.ips (ip_counted) */
	bool ip_counted;
	struct req req; /* HTTP/1.1: one request at a time */
};

/* What the answer of a keeper request is for. */
enum then {
	THEN_ANSWER, /* the API answer of the route */
	THEN_REJECT, /* an audited refusal: then the stored error */
	THEN_HEALTH, /* GET /v1/health */
};

/*
 * A request in flight on an API channel. The keeper answers a channel in
 * order, so the answer that comes is the oldest one's. mc NULL: given up
 * (answered 503 at its deadline); its answer is still to come and is
 * dropped.
 */
struct pend {
	uint64_t rid;
	struct MHD_Connection *mc;
	struct req *r;
	int64_t deadline_ms;
	uint16_t want;
	uint8_t then;
};

/* One keeper channel; used by one thread only. */
struct chan {
	int fd;
	/* API channels: the requests in flight, a ring, oldest first. */
	struct pend *q;
	size_t qcap, qhead, qlen;
	/* The metrics channel (blocking calls): answers given up on. */
	uint64_t abandoned[ABANDONED_MAX];
	size_t nabandoned;
	size_t inlen;
	struct kwd_msgbuf out;
	unsigned char in[KWD_MSG_MAX];
	struct kwd_msg msg;
	struct kwd_req req;
};

struct ip_slot {
	uint64_t key; /* keyed hash of the address */
	unsigned n; /* its connections; 0: free */
};

struct rl_entry {
	uint64_t key; /* keyed hash of the identity; 0: free */
	double tokens;
	int64_t last_ns;
	int64_t logged_s;
};

struct rl_set {
	pthread_mutex_t lock;
	struct rl_entry e[RL_WAYS];
};

/*
 * An event loop: one thread runs one MHD daemon (external epoll mode) and
 * the keeper channels i with i % nloops == idx, in one epoll set, so that
 * the thread that reads a request also reads its answer: under load it
 * goes from one to the next without sleeping, and so does the keeper.
 */
struct loop {
	size_t idx;
	struct MHD_Daemon *d;
	int efd; /* epoll: MHD's epoll descriptor and the channels */
	pthread_t thread;
	bool started;
	int64_t next_sweep_ms;
};

static struct {
	const struct kwd_config *cfg;
	struct chan *chans; /* sodium_malloc: may hold DEKs */
	size_t nchan;
	size_t napi; /* API channels: 0 .. napi-1 */
	struct loop *loops;
	size_t nloops;
	int metrics_chan; /* -1: none */
	_Atomic int fatal; /* 0, or the exit status to stop with */
	_Atomic bool starting;
	_Atomic bool stopping; /* SIGTERM seen: a closing keeper is fine */
	_Atomic bool stop;
	pthread_mutex_t reg_lock;
	struct conn *reg;
	/* Connections per address, across loops (per_ip_take). */
	pthread_mutex_t ip_lock;
	struct ip_slot *ips;
	size_t nips;
	struct rl_set *rl;
	unsigned char rl_key[crypto_shorthash_KEYBYTES];
	struct metrics *m;
} F;

static _Thread_local struct loop *my_loop;

static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
now_ms(void)
{
	return now_ns() / 1000000;
}

static void
set_fatal(const char *why)
{
	int expected = 0;

	/* Stopping on SIGTERM, the master stops the keeper too. */
	if (atomic_load(&F.stopping))
		return;
	if (atomic_compare_exchange_strong(&F.fatal, &expected, 1))
		kw_log(KW_LOG_ERR, "front.fatal",
		    "stopping the front; the master restarts it",
		    KW_F("reason", why));
}

static void
set_phase(struct conn *c, enum phase ph, int64_t deadline_ms)
{
	atomic_store(&c->deadline_ms, deadline_ms);
	atomic_store(&c->phase, (int)ph);
}

static void
count_reject(enum reject_reason r)
{
	atomic_fetch_add(&F.m->rejected[r], 1);
}

/* ---- client identity (front.h) ---- */

__attribute__((format(printf, 3, 4))) static int
deny(char *reason, size_t reasonlen, const char *fmt, ...)
{
	va_list ap;

	if (reason != NULL && reasonlen > 0) {
		va_start(ap, fmt);
		vsnprintf(reason, reasonlen, fmt, ap);
		va_end(ap);
	}
	return KW_ERR_DENIED;
}

static bool
lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool
has_upper(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] >= 'A' && s[i] <= 'Z')
			return true;
	return false;
}

/* Printable ASCII without space: what an identity may hold at all. */
static bool
printable(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] <= 0x20 || s[i] >= 0x7f)
			return false;
	return true;
}

/*
 * A DNS name as a hostname (RFC 1123 section 2.1): labels of 1 to 63
 * letters, digits and hyphens, not starting or ending with a hyphen, at
 * most 253 bytes. Lower case only, so that one client has one spelling;
 * no wildcard (a client certificate names one host).
 */
static int
dns_ok(const char *s, size_t len, char *reason, size_t reasonlen)
{
	size_t label = 0;

	if (len == 0 || len > 253)
		return deny(reason, reasonlen,
		    "DNS subjectAltName of %zu bytes (1 to 253 expected)", len);
	if (has_upper(s, len))
		return deny(reason, reasonlen,
		    "DNS subjectAltName has upper case letters");
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return deny(reason, reasonlen,
				    "DNS subjectAltName has an empty or "
				    "malformed label");
			label = 0;
			continue;
		}
		if (!lower_alnum(c) && c != '-')
			return deny(reason, reasonlen,
			    "DNS subjectAltName has a character outside "
			    "a-z, 0-9, '-', '.'");
		if (label == 0 && c == '-')
			return deny(reason, reasonlen,
			    "DNS subjectAltName label starts with '-'");
		if (++label > 63)
			return deny(reason, reasonlen,
			    "DNS subjectAltName label longer than 63 bytes");
	}
	if (label == 0 || s[len - 1] == '-')
		return deny(reason, reasonlen,
		    "DNS subjectAltName has an empty or malformed label");
	return KW_OK;
}

/*
 * A SPIFFE ID (SPIFFE standard, "SPIFFE-ID" section 2): "spiffe://",
 * a trust domain of lower-case letters, digits, '.', '-', '_', then an
 * optional path of segments of letters, digits, '.', '-', '_' that are
 * neither "." nor "..", no empty segment and no trailing slash, no
 * query, fragment, port, user info or percent-encoding.
 */
static int
spiffe_ok(const char *s, size_t len, char *reason, size_t reasonlen)
{
	static const char scheme[] = "spiffe://";
	size_t i = sizeof scheme - 1, seg;

	if (len < i || memcmp(s, scheme, i) != 0)
		return deny(reason, reasonlen,
		    "URI subjectAltName is not a SPIFFE ID (spiffe://...)");
	for (seg = 0; i < len && s[i] != '/'; i++, seg++) {
		char c = s[i];

		if (c >= 'A' && c <= 'Z')
			return deny(reason, reasonlen,
			    "SPIFFE trust domain has upper case letters");
		if (!lower_alnum(c) && c != '.' && c != '-' && c != '_')
			return deny(reason, reasonlen,
			    "SPIFFE trust domain has a character outside "
			    "a-z, 0-9, '.', '-', '_'");
	}
	if (seg == 0)
		return deny(reason, reasonlen, "SPIFFE ID has no trust domain");
	while (i < len) {
		size_t start = ++i; /* past the '/' */

		for (; i < len && s[i] != '/'; i++) {
			char c = s[i];

			if (!lower_alnum(c) && !(c >= 'A' && c <= 'Z') &&
			    c != '.' && c != '-' && c != '_')
				return deny(reason, reasonlen,
				    "SPIFFE ID path has a character outside "
				    "letters, digits, '.', '-', '_'");
		}
		seg = i - start;
		if (seg == 0 || (seg == 1 && s[start] == '.') ||
		    (seg == 2 && s[start] == '.' && s[start + 1] == '.'))
			return deny(reason, reasonlen,
			    "SPIFFE ID path has an empty, \".\" or \"..\" "
			    "segment");
	}
	return KW_OK;
}

int
kwd_front_identity(gnutls_x509_crt_t leaf, char *buf, size_t cap, char *reason,
    size_t reasonlen)
{
	char san[1024], uri[KWD_IDENTITY_MAX + 2], dns[KWD_IDENTITY_MAX + 2];
	char cn[KWD_IDENTITY_MAX + 2];
	size_t nuri = 0, ndns = 0, urilen = 0, dnslen = 0, cnlen;
	const char *id;
	size_t idlen;
	int rv;

	if (leaf == NULL || buf == NULL || cap == 0)
		return KW_ERR_INVALID;
	for (unsigned seq = 0;; seq++) {
		size_t size = sizeof san - 1;
		unsigned type = 0;

		rv = gnutls_x509_crt_get_subject_alt_name2(leaf, seq, san,
		    &size, &type, NULL);
		if (rv == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
			break;
		if (rv == GNUTLS_E_SHORT_MEMORY_BUFFER)
			return deny(reason, reasonlen,
			    "a subjectAltName is longer than %zu bytes",
			    sizeof san - 1);
		if (rv < 0)
			return deny(reason, reasonlen,
			    "subjectAltName cannot be read");
		if (rv != GNUTLS_SAN_URI && rv != GNUTLS_SAN_DNSNAME)
			continue; /* IP, e-mail...: not identities here */
		/* The length is GnuTLS's; a NUL inside would make the C
		 * string name someone else ("a.example\0.evil"). */
		if (memchr(san, '\0', size) != NULL)
			return deny(reason, reasonlen,
			    "a subjectAltName contains a NUL byte");
		if (rv == GNUTLS_SAN_URI) {
			if (nuri++ == 0 && size <= KWD_IDENTITY_MAX) {
				memcpy(uri, san, size);
				urilen = size;
			} else if (nuri == 1) {
				urilen = size; /* too long: refused below */
			}
		} else {
			if (ndns++ == 0 && size <= KWD_IDENTITY_MAX) {
				memcpy(dns, san, size);
				dnslen = size;
			} else if (ndns == 1) {
				dnslen = size;
			}
		}
	}
	if (nuri > 0) {
		if (nuri != 1)
			return deny(reason, reasonlen,
			    "%zu URI subjectAltNames (exactly one expected)",
			    nuri);
		if (urilen > KWD_IDENTITY_MAX)
			return deny(reason, reasonlen,
			    "URI subjectAltName longer than %d bytes",
			    KWD_IDENTITY_MAX);
		if (!printable(uri, urilen))
			return deny(reason, reasonlen,
			    "URI subjectAltName is not printable ASCII "
			    "without spaces");
		if ((rv = spiffe_ok(uri, urilen, reason, reasonlen)) != KW_OK)
			return rv;
		id = uri;
		idlen = urilen;
	} else if (ndns > 0) {
		if (ndns != 1)
			return deny(reason, reasonlen,
			    "%zu DNS subjectAltNames (exactly one expected)",
			    ndns);
		if (dnslen > KWD_IDENTITY_MAX)
			return deny(reason, reasonlen,
			    "DNS subjectAltName longer than %d bytes",
			    KWD_IDENTITY_MAX);
		if ((rv = dns_ok(dns, dnslen, reason, reasonlen)) != KW_OK)
			return rv;
		id = dns;
		idlen = dnslen;
	} else {
		size_t size = sizeof cn - 1;

		rv = gnutls_x509_crt_get_dn_by_oid(leaf,
		    GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &size);
		if (rv == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
			return deny(reason, reasonlen,
			    "no URI or DNS subjectAltName and no subject CN");
		if (rv == GNUTLS_E_SHORT_MEMORY_BUFFER)
			return deny(reason, reasonlen,
			    "subject CN longer than %d bytes",
			    KWD_IDENTITY_MAX);
		if (rv < 0)
			return deny(reason, reasonlen,
			    "subject CN cannot be read");
		cnlen = size;
		{
			char second[8];
			size_t size2 = sizeof second;

			rv = gnutls_x509_crt_get_dn_by_oid(leaf,
			    GNUTLS_OID_X520_COMMON_NAME, 1, 0, second, &size2);
			if (rv != GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
				return deny(reason, reasonlen,
				    "more than one subject CN");
		}
		if (cnlen == 0 || cnlen > KWD_IDENTITY_MAX)
			return deny(reason, reasonlen,
			    "subject CN of %zu bytes (1 to %d expected)", cnlen,
			    KWD_IDENTITY_MAX);
		if (memchr(cn, '\0', cnlen) != NULL)
			return deny(reason, reasonlen,
			    "subject CN contains a NUL byte");
		if (!printable(cn, cnlen))
			return deny(reason, reasonlen,
			    "subject CN is not printable ASCII without spaces");
		if (has_upper(cn, cnlen))
			return deny(reason, reasonlen,
			    "subject CN has upper case letters");
		id = cn;
		idlen = cnlen;
	}
	if (idlen >= cap)
		return deny(reason, reasonlen,
		    "identity longer than the %zu bytes available", cap - 1);
	memcpy(buf, id, idlen);
	buf[idlen] = '\0';
	return KW_OK;
}

int
kwd_front_check_leaf(gnutls_x509_crt_t leaf, time_t now, char *reason,
    size_t reasonlen)
{
	unsigned crit = 0, ca = 0, usage = 0, bits = 0;
	bool client = false;
	int rv, pk, sign;
	time_t t;

	if (leaf == NULL)
		return KW_ERR_INVALID;

	/* RFC 5280 section 4.2.1.9: absent means not a CA. */
	rv = gnutls_x509_crt_get_basic_constraints(leaf, &crit, &ca, NULL);
	if (rv < 0 && rv != GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
		return deny(reason, reasonlen,
		    "basicConstraints cannot be read");
	if (rv >= 0 && ca != 0)
		return deny(reason, reasonlen,
		    "certificate is a CA (basicConstraints CA:TRUE)");

	/* RFC 5280 section 4.2.1.3: a TLS client signs the handshake. */
	rv = gnutls_x509_crt_get_key_usage(leaf, &usage, &crit);
	if (rv < 0 && rv != GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
		return deny(reason, reasonlen, "keyUsage cannot be read");
	if (rv >= 0 && !(usage & GNUTLS_KEY_DIGITAL_SIGNATURE))
		return deny(reason, reasonlen,
		    "keyUsage without digitalSignature");

	/* RFC 5280 section 4.2.1.12: required here, and with clientAuth
	 * (anyExtendedKeyUsage is not enough for a key broker). */
	for (unsigned i = 0;; i++) {
		char oid[128];
		size_t size = sizeof oid;

		rv = gnutls_x509_crt_get_key_purpose_oid(leaf, i, oid, &size,
		    &crit);
		if (rv == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
			break;
		if (rv == GNUTLS_E_SHORT_MEMORY_BUFFER)
			continue;
		if (rv < 0)
			return deny(reason, reasonlen,
			    "extendedKeyUsage cannot be read");
		if (strcmp(oid, GNUTLS_KP_TLS_WWW_CLIENT) == 0)
			client = true;
	}
	if (!client)
		return deny(reason, reasonlen,
		    "extendedKeyUsage without clientAuth");

	pk = gnutls_x509_crt_get_pk_algorithm(leaf, &bits);
	switch (pk) {
	case GNUTLS_PK_RSA:
	case GNUTLS_PK_RSA_PSS:
		if (bits < 2048)
			return deny(reason, reasonlen,
			    "RSA key of %u bits (at least 2048 expected)",
			    bits);
		break;
	case GNUTLS_PK_ECDSA: {
		gnutls_ecc_curve_t curve = GNUTLS_ECC_CURVE_INVALID;
		gnutls_datum_t x = {NULL, 0}, y = {NULL, 0};

		rv = gnutls_x509_crt_get_pk_ecc_raw(leaf, &curve, &x, &y);
		gnutls_free(x.data);
		gnutls_free(y.data);
		if (rv < 0)
			return deny(reason, reasonlen, "EC key cannot be read");
		if (curve != GNUTLS_ECC_CURVE_SECP256R1 &&
		    curve != GNUTLS_ECC_CURVE_SECP384R1 &&
		    curve != GNUTLS_ECC_CURVE_SECP521R1)
			return deny(reason, reasonlen,
			    "EC key on curve %s (P-256, P-384 or P-521 "
			    "expected)",
			    gnutls_ecc_curve_get_name(curve) != NULL
			        ? gnutls_ecc_curve_get_name(curve)
			        : "unknown");
		break;
	}
	case GNUTLS_PK_EDDSA_ED25519:
	case GNUTLS_PK_EDDSA_ED448:
		break;
	default:
		return deny(reason, reasonlen,
		    "public key algorithm %s is not accepted",
		    gnutls_pk_get_name((gnutls_pk_algorithm_t)pk) != NULL
		        ? gnutls_pk_get_name((gnutls_pk_algorithm_t)pk)
		        : "unknown");
	}

	sign = gnutls_x509_crt_get_signature_algorithm(leaf);
	if (sign <= 0)
		return deny(reason, reasonlen, "unknown signature algorithm");
	switch (gnutls_sign_get_hash_algorithm((gnutls_sign_algorithm_t)sign)) {
	case GNUTLS_DIG_MD5:
	case GNUTLS_DIG_MD2:
	case GNUTLS_DIG_SHA1:
	case GNUTLS_DIG_RMD160:
		return deny(reason, reasonlen,
		    "signature algorithm %s is too weak",
		    gnutls_sign_get_name((gnutls_sign_algorithm_t)sign));
	default:
		break;
	}
	if (!gnutls_sign_is_secure2((gnutls_sign_algorithm_t)sign,
	        GNUTLS_SIGN_FLAG_SECURE_FOR_CERTS))
		return deny(reason, reasonlen,
		    "signature algorithm is not secure for certificates");

	t = gnutls_x509_crt_get_activation_time(leaf);
	if (t == (time_t)-1)
		return deny(reason, reasonlen, "notBefore cannot be read");
	if (now < t)
		return deny(reason, reasonlen, "certificate not yet valid");
	t = gnutls_x509_crt_get_expiration_time(leaf);
	if (t == (time_t)-1)
		return deny(reason, reasonlen, "notAfter cannot be read");
	if (now > t)
		return deny(reason, reasonlen, "certificate expired");
	return KW_OK;
}

/* ---- keeper channels ---- */

/*
 * The calling loop's channel with the fewest requests in flight (its
 * keeper worker has the least queued); NULL outside a loop.
 */
static struct chan *
pick_chan(void)
{
	struct chan *best = NULL;

	if (my_loop == NULL)
		return NULL;
	for (size_t i = my_loop->idx; i < F.napi; i += F.nloops) {
		struct chan *ch = &F.chans[i];

		if (best == NULL || ch->qlen < best->qlen)
			best = ch;
	}
	return best;
}

static bool
abandoned_take(struct chan *ch, uint64_t rid)
{
	for (size_t i = 0; i < ch->nabandoned; i++) {
		if (ch->abandoned[i] == rid) {
			ch->abandoned[i] = ch->abandoned[--ch->nabandoned];
			return true;
		}
	}
	return false;
}

static void
abandoned_add(struct chan *ch, uint64_t rid)
{
	/* Full: forget the oldest; should its answer still come, it is a
	 * mismatch and the front restarts (the keeper is stuck anyway). */
	if (ch->nabandoned == ABANDONED_MAX) {
		memmove(ch->abandoned, ch->abandoned + 1,
		    (ABANDONED_MAX - 1) * sizeof ch->abandoned[0]);
		ch->nabandoned--;
	}
	ch->abandoned[ch->nabandoned++] = rid;
}

static void
chan_wipe_in(struct chan *ch)
{
	/* Answers may carry a DEK. */
	if (ch->inlen > 0)
		sodium_memzero(ch->in, ch->inlen);
	ch->inlen = 0;
}

/*
 * ask: send ch->out (begun by the caller) for request R of connection
 * MC, which is then suspended until its loop has the answer or the
 * deadline passes (conclude). KW_OK: suspended, return MHD_YES;
 * otherwise nothing was sent and the caller answers now
 * (KW_ERR_UNAVAILABLE: 503).
 */
static int
ask(struct MHD_Connection *mc, struct req *r, struct chan *ch, uint16_t want,
    enum then then, int timeout_ms)
{
	struct pend *p;
	int rv;

	rv = kwd_msg_end(&ch->out);
	if (rv != KW_OK) {
		kw_log(KW_LOG_ERR, "front.ipc_build",
		    "a request to the keeper could not be built",
		    KW_F("type", kwd_msg_type_name(want)),
		    KW_F("error", kw_error_name(rv)));
		kwd_msg_wipe(&ch->out);
		return KW_ERR_INTERNAL;
	}
	if (ch->qlen == ch->qcap) {
		kwd_msg_wipe(&ch->out);
		return KW_ERR_UNAVAILABLE; /* the keeper lags far behind */
	}
	rv = kwd_ipc_send_nowait(ch->fd, &ch->out);
	kwd_msg_wipe(&ch->out);
	if (rv == KW_ERR_UNAVAILABLE)
		return KW_ERR_UNAVAILABLE; /* channel full: the keeper lags */
	if (rv != KW_OK) {
		set_fatal("the keeper channel is closed (send)");
		return KW_ERR_UNAVAILABLE;
	}
	p = &ch->q[(ch->qhead + ch->qlen++) % ch->qcap];
	*p = (struct pend){.rid = r->rid,
	    .mc = mc,
	    .r = r,
	    .deadline_ms = now_ms() + timeout_ms,
	    .want = want,
	    .then = (uint8_t)then};
	/* The answer is read by this same thread, after the handler has
	 * returned: no race with the suspension. */
	MHD_suspend_connection(mc);
	return KW_OK;
}

/*
 * After a receive on CH that gave RV (not KW_ERR_TIMEOUT): KW_OK and the
 * answer decoded into ch->msg, or KW_ERR_UNAVAILABLE and the front
 * stopping (set_fatal): the channel is closed or the answer unreadable.
 */
static int
decode_answer(struct chan *ch, int rv)
{
	if (rv != KW_OK) {
		ch->inlen = 0;
		set_fatal(rv == KW_ERR_IO
		        ? "the keeper channel is closed (receive)"
		        : "unreadable answer from the keeper");
		return KW_ERR_UNAVAILABLE;
	}
	if (kwd_msg_decode(ch->in, ch->inlen, KWD_FROM_KEEPER, &ch->msg) !=
	    KW_OK) {
		chan_wipe_in(ch);
		set_fatal("malformed answer from the keeper");
		return KW_ERR_UNAVAILABLE;
	}
	return KW_OK;
}

/*
 * call: send ch->out (begun by the caller) and wait for the answer with
 * the same rid into ch->msg (the metrics listener's channel, whose
 * thread has nothing else to do). KW_ERR_TIMEOUT or KW_ERR_UNAVAILABLE:
 * answer 503. Anything that breaks the protocol stops the front
 * (set_fatal).
 */
static int
call(struct chan *ch, uint64_t rid, uint16_t want, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	int rv;

	chan_wipe_in(ch);
	rv = kwd_msg_end(&ch->out);
	if (rv != KW_OK) {
		kw_log(KW_LOG_ERR, "front.ipc_build",
		    "a request to the keeper could not be built",
		    KW_F("type", kwd_msg_type_name(want)),
		    KW_F("error", kw_error_name(rv)));
		kwd_msg_wipe(&ch->out);
		return KW_ERR_INTERNAL;
	}
	rv = kwd_ipc_send_nowait(ch->fd, &ch->out);
	kwd_msg_wipe(&ch->out);
	if (rv == KW_ERR_UNAVAILABLE)
		return KW_ERR_UNAVAILABLE; /* channel full: the keeper lags */
	if (rv != KW_OK) {
		set_fatal("the keeper channel is closed (send)");
		return KW_ERR_UNAVAILABLE;
	}
	for (;;) {
		int64_t left = deadline - now_ms();

		if (left < 0)
			left = 0;
		rv = kwd_ipc_chan_recv(ch->fd, ch->in, &ch->inlen, (int)left);
		if (rv == KW_ERR_TIMEOUT) {
			abandoned_add(ch, rid);
			kw_log(KW_LOG_WARN, "front.ipc_timeout",
			    "the keeper did not answer in time",
			    KW_F("timeout_ms", timeout_ms));
			return KW_ERR_TIMEOUT;
		}
		if (decode_answer(ch, rv) != KW_OK)
			return KW_ERR_UNAVAILABLE;
		if (ch->msg.rid != rid) {
			if (abandoned_take(ch, ch->msg.rid)) {
				/* The late answer of a timed-out request. */
				chan_wipe_in(ch);
				continue;
			}
			chan_wipe_in(ch);
			set_fatal("answer from the keeper with a request id "
			          "that was not asked for");
			return KW_ERR_UNAVAILABLE;
		}
		if (ch->msg.type != want && ch->msg.type != KWD_MSG_R_ERROR) {
			chan_wipe_in(ch);
			set_fatal("answer from the keeper of the wrong type");
			return KW_ERR_UNAVAILABLE;
		}
		return KW_OK;
	}
}

/* ---- responses ---- */

/* A response buffer wiped before it is freed (it may hold a DEK). */
struct wbuf {
	size_t cap;
	char data[];
};

static void
wbuf_free(void *p)
{
	struct wbuf *w;

	if (p == NULL)
		return;
	w = (struct wbuf *)((char *)p - offsetof(struct wbuf, data));
	sodium_memzero(w->data, w->cap);
	free(w);
}

static char *
wbuf_new(size_t cap)
{
	struct wbuf *w = malloc(sizeof *w + cap);

	if (w == NULL)
		return NULL;
	w->cap = cap;
	memset(w->data, 0, cap);
	return w->data;
}

static void
count_request(struct req *r)
{
	size_t si = NSTATUS;
	uint64_t us;

	if (r->status == 0)
		return;
	for (size_t i = 0; i < NSTATUS; i++)
		if (statuses[i] == r->status)
			si = i;
	atomic_fetch_add(&F.m->requests[r->route][si], 1);
	us = (uint64_t)(now_ns() - r->t0_ns) / 1000;
	for (size_t i = 0; i < NBUCKET; i++) {
		if (us <= buckets_us[i]) {
			atomic_fetch_add(&F.m->hist[r->route][i], 1);
			break;
		}
	}
	atomic_fetch_add(&F.m->hist_sum_us[r->route], us);
	atomic_fetch_add(&F.m->hist_count[r->route], 1);
}

/*
 * Queue body (len bytes) with status. secret: body is a wbuf and is
 * wiped when MHD is done with it; otherwise it came from malloc. The
 * body is owned by the response (or freed here on failure).
 */
static enum MHD_Result
send_body(struct MHD_Connection *mc, struct req *r, unsigned status, char *body,
    size_t len, bool secret, const struct extra *x)
{
	struct MHD_Response *resp;
	enum MHD_Result ok;
	char num[16];

	if (secret)
		resp = MHD_create_response_from_buffer_with_free_callback(len,
		    body, wbuf_free);
	else
		resp = MHD_create_response_from_buffer(len, body,
		    MHD_RESPMEM_MUST_FREE);
	if (resp == NULL) {
		if (secret)
			wbuf_free(body);
		else
			free(body);
		return MHD_NO;
	}
	ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	    "application/json");
	if (ok == MHD_YES)
		ok = MHD_add_response_header(resp, "X-Request-Id", r->rid_hex);
	/* Answers may carry keys: never stored by a cache on the way. */
	if (ok == MHD_YES)
		ok = MHD_add_response_header(resp,
		    MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (ok == MHD_YES && x != NULL && x->allow != NULL)
		ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
		    x->allow);
	if (ok == MHD_YES && x != NULL && x->retry_after > 0) {
		snprintf(num, sizeof num, "%u", x->retry_after);
		ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER,
		    num);
	}
	/* RFC 9112 section 9.6: after a framing error the rest of the
	 * stream cannot be trusted; nothing pipelined behind it is read. */
	if (ok == MHD_YES && x != NULL && x->close)
		ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION,
		    "close");
	if (ok == MHD_YES)
		ok = MHD_queue_response(mc, status, resp);
	MHD_destroy_response(resp);
	if (ok == MHD_YES)
		r->status = status;
	return ok;
}

static enum MHD_Result
send_json(struct MHD_Connection *mc, struct req *r, unsigned status,
    json_t *obj, const struct extra *x)
{
	char *s;

	if (obj == NULL)
		return MHD_NO;
	s = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	if (s == NULL)
		return MHD_NO;
	return send_body(mc, r, status, s, strlen(s), false, x);
}

static enum MHD_Result
send_error(struct MHD_Connection *mc, struct req *r, unsigned status,
    const char *code, const char *message, const struct extra *x)
{
	return send_json(mc, r, status,
	    json_pack("{s:{s:s,s:s,s:s}}", "error", "code", code, "message",
	        message, "request_id", r->rid_hex),
	    x);
}

static enum MHD_Result
send_close(struct MHD_Connection *mc, struct req *r, unsigned status,
    const char *code, const char *message)
{
	struct extra x = {.close = true};

	return send_error(mc, r, status, code, message, &x);
}

static enum MHD_Result
send_unavailable(struct MHD_Connection *mc, struct req *r)
{
	struct extra x = {.retry_after = 1};

	return send_error(mc, r, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
	    "the service is temporarily unavailable; retry later", &x);
}

static enum MHD_Result
send_internal(struct MHD_Connection *mc, struct req *r)
{
	return send_error(mc, r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
	    "internal error; report the request id", NULL);
}

/* A keeper R_ERROR as the client's error (its MESSAGE is for clients). */
static enum MHD_Result
send_keeper_error(struct MHD_Connection *mc, struct req *r,
    const struct kwd_msg *m)
{
	struct extra x = {0};
	char message[513];
	const char *code;
	uint32_t st = 0;
	unsigned status;

	if (!kwd_msg_u32(m, KWD_TAG_STATUS, &st) ||
	    !kwd_msg_str(m, KWD_TAG_MESSAGE, 0, message, sizeof message))
		return send_internal(mc, r);
	switch (-(int64_t)st) {
	case KW_ERR_INVALID:
		status = 400;
		code = "invalid_request";
		break;
	case KW_ERR_TOO_LARGE:
		status = 413;
		code = "too_large";
		break;
	case KW_ERR_NOT_FOUND:
		status = 404;
		code = "not_found";
		break;
	case KW_ERR_EXISTS:
		status = 409;
		code = "conflict";
		break;
	case KW_ERR_AUTH:
		status = 400;
		code = "decrypt_failed";
		break;
	case KW_ERR_DENIED:
		status = 403;
		code = "forbidden";
		break;
	case KW_ERR_UNAUTHENTICATED:
		status = 401;
		code = "unauthenticated";
		break;
	case KW_ERR_UNAVAILABLE:
	case KW_ERR_HSM_DOWN:
	case KW_ERR_HSM_PIN:
	case KW_ERR_RANDOM:
	case KW_ERR_TIMEOUT:
		status = 503;
		code = "unavailable";
		x.retry_after = 1;
		break;
	default:
		status = 500;
		code = "internal";
		break;
	}
	return send_error(mc, r, status, code, message, &x);
}

/* ---- answers to JSON ---- */

static bool
rfc3339(uint64_t t, char buf[32])
{
	struct tm tm;
	time_t tt;

	/* Year 9999 at most: RFC 3339 section 5.6 has four year digits. */
	if (t > 253402300799ULL)
		return false;
	tt = (time_t)t;
	if (gmtime_r(&tt, &tm) == NULL)
		return false;
	return strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) > 0;
}

static uint32_t
be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

static uint64_t
be64(const unsigned char *p)
{
	return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static json_t *
key_json(const struct kwd_msg *m)
{
	char name[KW_NAME_MAX + 1], created[32];
	uint64_t ctime = 0, rot = 0;
	uint32_t mdv = 0, active = 0;
	json_t *versions = NULL, *obj = NULL;
	size_t n = kwd_msg_count(m, KWD_TAG_VERREC);

	if (!kwd_msg_str(m, KWD_TAG_KEY, 0, name, sizeof name) ||
	    !kwd_msg_u64(m, KWD_TAG_CREATED, &ctime) ||
	    !kwd_msg_u32(m, KWD_TAG_MIN_DECRYPT, &mdv) ||
	    !kwd_msg_u32(m, KWD_TAG_VERSION, &active) ||
	    !rfc3339(ctime, created))
		return NULL;
	(void)kwd_msg_u64(m, KWD_TAG_ROTATION, &rot);
	if (rot > (uint64_t)INT64_MAX)
		return NULL;
	versions = json_array();
	if (versions == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		const struct kwd_field *f = kwd_msg_get(m, KWD_TAG_VERREC, i);
		char vcreated[32];
		json_t *v;

		/* u32 version, u8 state, u64 created (msg.h). */
		if (f == NULL || f->len != 13 ||
		    !rfc3339(be64(f->p + 5), vcreated))
			goto fail;
		v = json_pack("{s:I,s:s,s:s}", "version",
		    (json_int_t)be32(f->p), "state",
		    kwd_key_state_name((enum kwd_key_state)f->p[4]), "created",
		    vcreated);
		if (v == NULL || json_array_append_new(versions, v) != 0)
			goto fail;
	}
	obj = json_pack("{s:s,s:s,s:I,s:I,s:I,s:o}", "name", name, "created",
	    created, "min_decrypt_version", (json_int_t)mdv, "rotation_period",
	    (json_int_t)rot, "active_version", (json_int_t)active, "versions",
	    versions);
	return obj; /* json_pack "o" took versions, even on failure */
fail:
	json_decref(versions);
	return NULL;
}

static json_t *
list_json(const struct kwd_msg *m)
{
	size_t n = kwd_msg_count(m, KWD_TAG_KEY);
	json_t *keys = json_array();

	if (keys == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		const struct kwd_field *f = kwd_msg_get(m, KWD_TAG_VERSION, i);
		char name[KW_NAME_MAX + 1];
		json_t *k;

		if (f == NULL || f->len != 4 ||
		    !kwd_msg_str(m, KWD_TAG_KEY, i, name, sizeof name))
			goto fail;
		k = json_pack("{s:s,s:I}", "name", name, "active_version",
		    (json_int_t)be32(f->p));
		if (k == NULL || json_array_append_new(keys, k) != 0)
			goto fail;
	}
	return json_pack("{s:o}", "keys", keys);
fail:
	json_decref(keys);
	return NULL;
}

/*
 * {"key":..,"version":..,"wrapped":..,"plaintext":..} written by hand
 * into a wiped buffer: through jansson the DEK's base64 would pass
 * through allocations nobody wipes. The name is canonical and base64
 * needs no escaping, so nothing here needs JSON escaping.
 */
static char *
dek_json(const struct kwd_msg *m, bool with_key, bool want_dek, size_t *ret_len)
{
	const struct kwd_field *blob = kwd_msg_get(m, KWD_TAG_BLOB, 0);
	const struct kwd_field *dek =
	    want_dek ? kwd_msg_get(m, KWD_TAG_DEK, 0) : NULL;
	char name[KW_NAME_MAX + 1];
	uint32_t version = 0;
	size_t cap, off = 0;
	char *out;
	int n;

	if (with_key &&
	    (!kwd_msg_str(m, KWD_TAG_KEY, 0, name, sizeof name) ||
	        !kwd_msg_u32(m, KWD_TAG_VERSION, &version) || blob == NULL))
		return NULL;
	/* The keeper must answer what was asked, no more, no less; a DEK
	 * sent without being asked for is not passed on. */
	if (want_dek && dek == NULL)
		return NULL;
	cap = 128 + sizeof name;
	if (blob != NULL)
		cap += sodium_base64_ENCODED_LEN(blob->len,
		    sodium_base64_VARIANT_ORIGINAL);
	if (dek != NULL)
		cap += sodium_base64_ENCODED_LEN(dek->len,
		    sodium_base64_VARIANT_ORIGINAL);
	out = wbuf_new(cap);
	if (out == NULL)
		return NULL;
	n = with_key
	    ? snprintf(out, cap,
	          "{\"key\":\"%s\",\"version\":%" PRIu32 ",\"wrapped\":\"",
	          name, version)
	    : snprintf(out, cap, "{");
	if (n < 0 || (size_t)n >= cap)
		goto fail;
	off = (size_t)n;
	if (with_key) {
		sodium_bin2base64(out + off, cap - off, blob->p, blob->len,
		    sodium_base64_VARIANT_ORIGINAL);
		off += strlen(out + off);
		if (cap - off < 3)
			goto fail;
		memcpy(out + off, "\"", 1);
		off += 1;
	}
	if (dek != NULL) {
		static const char open[] = "\"plaintext\":\"";
		const char *sep = with_key ? "," : "";

		if (cap - off < strlen(sep) + sizeof open)
			goto fail;
		memcpy(out + off, sep, strlen(sep));
		off += strlen(sep);
		memcpy(out + off, open, sizeof open - 1);
		off += sizeof open - 1;
		sodium_bin2base64(out + off, cap - off, dek->p, dek->len,
		    sodium_base64_VARIANT_ORIGINAL);
		off += strlen(out + off);
		if (cap - off < 2)
			goto fail;
		memcpy(out + off, "\"", 1);
		off += 1;
	}
	if (cap - off < 2)
		goto fail;
	memcpy(out + off, "}", 1);
	off += 1;
	*ret_len = off;
	return out;
fail:
	wbuf_free(out);
	return NULL;
}

/* ---- audit of front rejections ---- */

/*
 * refuse: a 4xx decided here. One AUDIT_EVENT for it goes to the keeper
 * first, so that the audit log has a record of it too (THREATS.md K,
 * audited under OP, or the route's operation, with AUDIT_REASON), and
 * the answer (STATUS, CODE, MESSAGE, X) goes out when the keeper has
 * taken it (conclude). Rate-limited requests are not sent one by one: a
 * flood would become an audit-log flood (see rate_take).
 */
static enum MHD_Result
refuse(struct MHD_Connection *mc, struct req *r, const char *op,
    const char *audit_reason, unsigned status, const char *code,
    const char *message, const struct extra *x)
{
	struct conn *c = r->conn;
	struct chan *ch = c->api ? pick_chan() : NULL;
	char why[513];

	if (ch == NULL)
		return send_error(mc, r, status, code, message, x);
	/* REASON is a protocol STR of at most 512 bytes: kept to printable
	 * ASCII, so that the cut cannot split a UTF-8 sequence. */
	snprintf(why, sizeof why, "%s", audit_reason);
	for (char *p = why; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	kwd_msg_begin(&ch->out, KWD_MSG_AUDIT_EVENT, r->rid);
	if (c->identity[0] != '\0')
		kwd_msg_put_str(&ch->out, KWD_TAG_IDENTITY, c->identity);
	kwd_msg_put_str(&ch->out, KWD_TAG_OP,
	    op != NULL ? op : routes[r->route].op);
	if (r->name[0] != '\0')
		kwd_msg_put_str(&ch->out, KWD_TAG_RESOURCE, r->name);
	kwd_msg_put_str(&ch->out, KWD_TAG_OUTCOME, "rejected");
	kwd_msg_put_str(&ch->out, KWD_TAG_REASON, why[0] ? why : "rejected");
	if (c->remote[0] != '\0')
		kwd_msg_put_str(&ch->out, KWD_TAG_REMOTE, c->remote);
	kwd_msg_put_u32(&ch->out, KWD_TAG_STATUS, status);
	kwd_msg_put_u64(&ch->out, KWD_TAG_LATENCY_US,
	    (uint64_t)(now_ns() - r->t0_ns) / 1000);
	r->rj_status = status;
	r->rj_code = code;
	snprintf(r->rj_msg, sizeof r->rj_msg, "%s", message);
	r->rj_x = x != NULL ? *x : (struct extra){0};
	if (ask(mc, r, ch, KWD_MSG_R_OK, THEN_REJECT, IPC_TIMEOUT_MS) == KW_OK)
		return MHD_YES;
	/* Not sent (the keeper lags): answered without the record. */
	return send_error(mc, r, status, code, message, x);
}

/* A 4xx decided here: audited, logged at debug, answered. */
static enum MHD_Result
reject(struct MHD_Connection *mc, struct req *r, unsigned status,
    const char *code, const char *message, const struct extra *x)
{
	struct conn *c = r->conn;

	kw_log(KW_LOG_DEBUG, "front.reject", message, KW_F("rid", r->rid_hex),
	    KW_F("status", status), KW_F("identity", c->identity),
	    KW_F("path", r->uri != NULL ? r->uri : ""));
	return refuse(mc, r, NULL, message, status, code, message, x);
}

static enum MHD_Result
reject_close(struct MHD_Connection *mc, struct req *r, unsigned status,
    const char *code, const char *message)
{
	struct extra x = {.close = true};

	return reject(mc, r, status, code, message, &x);
}

/* ---- client authentication ---- */

static int
authenticate(struct conn *c, struct MHD_Connection *mc, char *reason,
    size_t reasonlen, enum reject_reason *ret_metric)
{
	const union MHD_ConnectionInfo *ci;
	const gnutls_datum_t *certs;
	gnutls_x509_crt_t leaf = NULL;
	gnutls_session_t s;
	gnutls_datum_t out = {NULL, 0};
	unsigned n = 0, status = 0;
	int rv, g;

	*ret_metric = RJ_NO_CERT;
	ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	if (ci == NULL || ci->tls_session == NULL)
		return deny(reason, reasonlen, "no TLS session");
	s = (gnutls_session_t)ci->tls_session;
	if (gnutls_certificate_type_get(s) != GNUTLS_CRT_X509)
		return deny(reason, reasonlen,
		    "client credential is not an X.509 certificate");
	certs = gnutls_certificate_get_peers(s, &n);
	if (certs == NULL || n == 0)
		return deny(reason, reasonlen, "no client certificate");
	/*
	 * THREATS.md: with MHD's trust list GnuTLS only requests a
	 * certificate, and a chain from a look-alike CA (same subject,
	 * another key) gives ret 0 with GNUTLS_CERT_INVALID |
	 * GNUTLS_CERT_SIGNER_NOT_FOUND in status. Both must be clean.
	 */
	*ret_metric = RJ_UNTRUSTED;
	g = gnutls_certificate_verify_peers2(s, &status);
	if (g < 0)
		return deny(reason, reasonlen,
		    "certificate verification failed: %s", gnutls_strerror(g));
	if (status != 0) {
		if (gnutls_certificate_verification_status_print(status,
		        GNUTLS_CRT_X509, &out, 0) == 0 &&
		    out.data != NULL) {
			rv = deny(reason, reasonlen,
			    "certificate not trusted: %s", (char *)out.data);
			gnutls_free(out.data);
			return rv;
		}
		return deny(reason, reasonlen,
		    "certificate not trusted (status 0x%x)", status);
	}
	*ret_metric = RJ_LEAF;
	if (gnutls_x509_crt_init(&leaf) < 0)
		return KW_ERR_NOMEM;
	if (gnutls_x509_crt_import(leaf, &certs[0], GNUTLS_X509_FMT_DER) < 0) {
		rv = deny(reason, reasonlen, "certificate cannot be parsed");
		goto out;
	}
	rv = kwd_front_check_leaf(leaf, time(NULL), reason, reasonlen);
	if (rv != KW_OK)
		goto out;
	*ret_metric = RJ_IDENTITY;
	rv = kwd_front_identity(leaf, c->identity, sizeof c->identity, reason,
	    reasonlen);
	if (rv == KW_OK) {
		/* RFC 8705 section 3.1: SHA-256 of the certificate's DER,
		 * for tokens bound to it. GnuTLS hashes: OpenSSL is not
		 * set up in this process (its first use may open files). */
		unsigned char h[32];
		size_t hlen = sizeof h;

		if (gnutls_fingerprint(GNUTLS_DIG_SHA256, &certs[0], h, &hlen) <
		        0 ||
		    hlen != sizeof h ||
		    kwd_token_b64url_encode(h, hlen, c->x5t, sizeof c->x5t) !=
		        KW_OK)
			rv = deny(reason, reasonlen,
			    "certificate cannot be hashed");
	}
out:
	if (rv != KW_OK) {
		c->identity[0] = '\0';
		c->x5t[0] = '\0';
	}
	gnutls_x509_crt_deinit(leaf);
	return rv;
}

/*
 * bearer_ok: "Bearer " (RFC 6750 section 2.1, scheme case-insensitive)
 * then a compact JWS: base64url and dots, at most KWD_TOKEN_MAX bytes.
 */
static bool
bearer_ok(const char *v)
{
	size_t len;

	if (strncasecmp(v, "Bearer ", 7) != 0)
		return false;
	v += 7;
	len = strlen(v);
	return len > 0 && len <= KWD_TOKEN_MAX && kwd_token_chars_valid(v, len);
}

/* ---- HTTP hygiene ---- */

/* RFC 9110 section 5.6.2: tchar. */
static bool
token_ok(const char *s, size_t len)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";

	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		        (c >= '0' && c <= '9') ||
		        (c != '\0' && strchr(extra, c) != NULL)))
			return false;
	}
	return true;
}

struct hdr_walk {
	uintptr_t expect; /* where the next line must start */
	const char *why; /* NULL: fine so far */
	unsigned n_cl, n_te, n_host, n_ct;
	const char *cl, *ct;
};

/*
 * MHD keeps the header block in its read buffer and hands out pointers
 * into it: each line "name:OWS value" with its CR and LF overwritten by
 * NULs. So the pointers show how each line ended: a line that ends in
 * CRLF puts the next name exactly value + length + 2 further on. A bare
 * LF (one byte), a NUL inside a line (MHD's strings stop early) or an
 * obs-fold continuation (MHD copies the joined value elsewhere) breaks
 * the chain. RFC 9112 sections 2.2 and 5.2 allow a server to reject all
 * three with 400. This relies on how MHD 0.9.75 lays out the block; a
 * change there makes every request fail here, loudly, not silently
 * accept more.
 */
static enum MHD_Result
walk_header(void *cls, enum MHD_ValueKind kind, const char *key,
    size_t key_size, const char *value, size_t value_size)
{
	struct hdr_walk *w = cls;
	uintptr_t k = (uintptr_t)key, v = (uintptr_t)value;

	(void)kind;
	if (k != w->expect) {
		w->why = "malformed header block (line endings must be CRLF, "
		         "no folded lines, no NUL bytes)";
		return MHD_NO;
	}
	if (!token_ok(key, key_size)) {
		w->why = "malformed header field name";
		return MHD_NO;
	}
	if (v < k + key_size + 1) {
		w->why = "malformed header field";
		return MHD_NO;
	}
	/* Between the colon and the value: optional whitespace only. */
	for (uintptr_t p = k + key_size + 1; p < v; p++) {
		char c = key[p - k];

		if (c != ' ' && c != '\t') {
			w->why = "malformed header field";
			return MHD_NO;
		}
	}
	for (size_t i = 0; i < value_size; i++) {
		unsigned char c = (unsigned char)value[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			w->why = "control character in a header field value";
			return MHD_NO;
		}
	}
	w->expect = v + value_size + 2;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		w->n_cl++;
		w->cl = value;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		w->n_te++;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
		w->n_host++;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_TYPE) == 0) {
		w->n_ct++;
		w->ct = value;
	}
	return MHD_YES;
}

enum framing {
	FR_OK,
	FR_BAD, /* 400, close */
	FR_LENGTH, /* 411, close */
};

/*
 * check_framing: the request line "METHOD SP target SP version CRLF" and
 * the header block as sent, and the headers that decide where the body
 * ends (RFC 9112 section 6). ret_len: Content-Length, or -1 if absent.
 */
static enum framing
check_framing(struct MHD_Connection *mc, struct req *r, const char *url,
    const char *method, const char *version, long long *ret_len,
    const char **ret_ct, const char **ret_why)
{
	const union MHD_ConnectionInfo *ci;
	struct hdr_walk w = {0};
	uintptr_t m = (uintptr_t)method, u = (uintptr_t)r->uri;
	uintptr_t v = (uintptr_t)version;
	long long len = -1;

	*ret_why = "malformed request line";
	if (r->uri == NULL || url != r->uri || u != m + strlen(method) + 1 ||
	    v != u + r->uri_len + 1)
		return FR_BAD;
	/*
	 * RFC 9112 section 3.2: no whitespace or control in the target (MHD
	 * keeps "/a b" and a trailing space as part of it). The NULs are
	 * MHD's own, where it split the query at '?', '&' and '=': a NUL
	 * sent by the client ended uri_len already.
	 */
	for (size_t i = 0; i < r->uri_len; i++) {
		unsigned char ch = (unsigned char)r->uri[i];

		if (ch != '\0' && (ch <= 0x20 || ch == 0x7f))
			return FR_BAD;
	}
	ci = MHD_get_connection_info(mc,
	    MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
	if (ci == NULL)
		return FR_BAD;
	w.expect = v + strlen(version) + 2;
	MHD_get_connection_values_n(mc, MHD_HEADER_KIND, walk_header, &w);
	if (w.why != NULL) {
		*ret_why = w.why;
		return FR_BAD;
	}
	/* The empty line that ends the block: CRLF too. */
	if (w.expect + 2 != m + ci->header_size) {
		*ret_why = "malformed header block (line endings must be "
		           "CRLF)";
		return FR_BAD;
	}
	if (w.n_host != 1) {
		*ret_why = "exactly one Host header is required";
		return FR_BAD;
	}
	if (w.n_cl > 1) {
		*ret_why = "more than one Content-Length header";
		return FR_BAD;
	}
	if (w.n_te > 0 && w.n_cl > 0) {
		*ret_why = "Content-Length together with Transfer-Encoding";
		return FR_BAD;
	}
	if (w.n_te > 0) {
		*ret_why = "Transfer-Encoding is not accepted; send the body "
		           "with a Content-Length";
		return FR_LENGTH;
	}
	if (w.n_cl == 1) {
		const char *p = w.cl;

		/* RFC 9110 section 8.6: 1*DIGIT, nothing else. More than
		 * 15 digits is over any body limit: 413, not an overflow. */
		len = 0;
		if (*p == '\0') {
			*ret_why = "malformed Content-Length";
			return FR_BAD;
		}
		for (size_t i = 0; p[i] != '\0'; i++) {
			if (p[i] < '0' || p[i] > '9') {
				*ret_why = "malformed Content-Length";
				return FR_BAD;
			}
			len = i < 15 ? len * 10 + (p[i] - '0') : LLONG_MAX;
		}
	}
	if (w.n_ct > 1) {
		*ret_why = "more than one Content-Type header";
		return FR_BAD;
	}
	*ret_len = len;
	*ret_ct = w.ct;
	return FR_OK;
}

/* application/json, optionally with charset=utf-8 (RFC 8259 section 11). */
static bool
json_media_type(const char *v)
{
	static const char base[] = "application/json";
	size_t n = sizeof base - 1;

	if (v == NULL || strncasecmp(v, base, n) != 0)
		return false;
	v += n;
	while (*v == ' ' || *v == '\t')
		v++;
	if (*v == '\0')
		return true;
	if (*v++ != ';')
		return false;
	while (*v == ' ' || *v == '\t')
		v++;
	if (strncasecmp(v, "charset=", 8) != 0)
		return false;
	v += 8;
	if (strncasecmp(v, "utf-8", 5) == 0)
		v += 5;
	else if (strncasecmp(v, "\"utf-8\"", 7) == 0)
		v += 7;
	else
		return false;
	while (*v == ' ' || *v == '\t')
		v++;
	return *v == '\0';
}

/*
 * The routes of one fixed path and one method. DESIGN.md section 3 lists
 * health with the API too: the same answer as on the metrics listener,
 * for authenticated clients.
 */
static const struct {
	const char *path;
	const char *method;
	enum route route;
} fixed_routes[] = {
    {"/v1/health", "GET", RT_HEALTH},
    {"/v1/tokens", "POST", RT_TOKENS},
    {"/v1/tokens/revoke", "POST", RT_TOKEN_REVOKE},
    {"/v1/tokens/introspect", "POST", RT_TOKEN_INTROSPECT},
    {"/v1/certs", "POST", RT_CERTS},
    {"/v1/artifacts/sign", "POST", RT_ARTIFACT_SIGN},
    {JWKS_PATH, "GET", RT_JWKS},
};

/*
 * The name segment at P (up to the next '/' or the end) into NAME
 * (KW_NAME_MAX + 1 bytes); *ret_slash: that '/', or NULL at the end.
 * false: not a valid name.
 */
static bool
path_name(const char *p, char *name, const char **ret_slash)
{
	const char *slash = strchr(p, '/');
	size_t n = slash != NULL ? (size_t)(slash - p) : strlen(p);

	if (!kw_name_valid_n(p, n))
		return false;
	memcpy(name, p, n);
	name[n] = '\0';
	*ret_slash = slash;
	return true;
}

/*
 * route_path: the raw path (MHD does not decode it: unescape_raw) to a
 * route. Anything not in canonical form is unknown, hence 404: '%' (no
 * encoded form is canonical), "..", "//", a trailing slash and any name
 * kw_name_valid refuses. allow gets the methods of a known path.
 */
static enum route
route_path(const char *path, const char *method, bool metrics, char *name,
    const char **allow)
{
	static const char keys[] = "/v1/keys";
	static const char signers[] = "/v1/signing-keys/";
	bool get = strcmp(method, "GET") == 0;
	bool post = strcmp(method, "POST") == 0;
	bool patch = strcmp(method, "PATCH") == 0;
	const char *p, *slash;

	*allow = NULL;
	if (metrics) {
		if (strcmp(path, "/metrics") == 0 ||
		    strcmp(path, "/v1/health") == 0) {
			*allow = "GET";
			if (!get)
				return RT_NONE;
			return path[1] == 'm' ? RT_METRICS : RT_HEALTH;
		}
		return RT_NONE;
	}
	for (size_t i = 0; i < sizeof fixed_routes / sizeof fixed_routes[0];
	     i++) {
		if (strcmp(path, fixed_routes[i].path) == 0) {
			*allow = fixed_routes[i].method;
			return strcmp(method, fixed_routes[i].method) == 0
			    ? fixed_routes[i].route
			    : RT_NONE;
		}
	}
	if (strncmp(path, signers, sizeof signers - 1) == 0) {
		if (!path_name(path + sizeof signers - 1, name, &slash))
			return RT_NONE;
		if (slash == NULL) {
			*allow = "GET";
			return get ? RT_SIGNER_SHOW : RT_NONE;
		}
		if (strcmp(slash, "/rotate") != 0)
			return RT_NONE;
		*allow = "POST";
		return post ? RT_SIGNER_ROTATE : RT_NONE;
	}
	if (strncmp(path, keys, sizeof keys - 1) != 0)
		return RT_NONE;
	p = path + sizeof keys - 1;
	if (*p == '\0') {
		*allow = "GET, POST";
		return get ? RT_KEYS_LIST : post ? RT_KEYS_CREATE : RT_NONE;
	}
	if (*p++ != '/' || !path_name(p, name, &slash))
		return RT_NONE;
	if (slash == NULL) {
		*allow = "GET, PATCH";
		return get ? RT_KEY_SHOW : patch ? RT_KEY_PATCH : RT_NONE;
	}
	p = slash + 1;
	if (strcmp(p, "rotate") == 0 || strcmp(p, "datakey") == 0 ||
	    strcmp(p, "decrypt") == 0 || strcmp(p, "rewrap") == 0) {
		*allow = "POST";
		if (!post)
			return RT_NONE;
		switch (p[1]) {
		case 'o':
			return RT_KEY_ROTATE;
		case 'a':
			return RT_DATAKEY;
		case 'e':
			return p[2] == 'c' ? RT_DECRYPT : RT_REWRAP;
		default:
			return RT_NONE;
		}
	}
	return RT_NONE;
}

/* ---- rate limit ---- */

/*
 * rate_take: one token from identity's bucket (RATE_PER_S, RATE_BURST).
 * A fixed table of RL_SETS x RL_WAYS entries keyed by a keyed hash of the
 * identity: memory is bounded whatever the number of identities; a new
 * identity evicts the least recently used entry of its set. Returns 0,
 * or the seconds to wait (Retry-After).
 */
static unsigned
rate_take(const char *identity, bool *ret_log)
{
	int64_t now = now_ns();
	struct rl_set *set;
	struct rl_entry *e = NULL;
	uint64_t key;
	unsigned wait = 0;

	crypto_shorthash((unsigned char *)&key, (const unsigned char *)identity,
	    strlen(identity), F.rl_key);
	if (key == 0)
		key = 1;
	set = &F.rl[key % RL_SETS];
	pthread_mutex_lock(&set->lock);
	for (size_t i = 0; i < RL_WAYS && e == NULL; i++)
		if (set->e[i].key == key)
			e = &set->e[i];
	if (e == NULL) {
		e = &set->e[0];
		for (size_t i = 1; i < RL_WAYS; i++)
			if (set->e[i].last_ns < e->last_ns)
				e = &set->e[i];
		e->key = key;
		e->tokens = RATE_BURST;
		e->last_ns = now;
		e->logged_s = 0;
	}
	e->tokens += (double)(now - e->last_ns) * RATE_PER_S / 1e9;
	if (e->tokens > RATE_BURST)
		e->tokens = RATE_BURST;
	e->last_ns = now;
	*ret_log = false;
	if (e->tokens >= 1.0) {
		e->tokens -= 1.0;
	} else {
		double s = (1.0 - e->tokens) / RATE_PER_S;

		wait = (unsigned)s + 1;
		/* One log line per identity and second at most. */
		if (e->logged_s != now / 1000000000) {
			e->logged_s = now / 1000000000;
			*ret_log = true;
		}
	}
	pthread_mutex_unlock(&set->lock);
	return wait;
}

/* ---- MHD callbacks ---- */

static size_t
unescape_raw(void *cls, struct MHD_Connection *mc, char *s)
{
	/* Keep the target as sent: %2e, %2f and %00 reach route_path,
	 * which refuses them, instead of being decoded into "..", "/" and
	 * a NUL that ends the C string early. */
	(void)cls;
	(void)mc;
	return strlen(s);
}

static void
remote_of(struct MHD_Connection *mc, char *buf, size_t cap)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci != NULL ? ci->client_addr : NULL;

	buf[0] = '\0';
	if (sa == NULL)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET,
		    &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
		    buf, (socklen_t)cap);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6,
		    &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
		    buf, (socklen_t)cap);
}

static void
register_conn(struct conn *c)
{
	pthread_mutex_lock(&F.reg_lock);
	c->prev = NULL;
	c->next = F.reg;
	if (F.reg != NULL)
		F.reg->prev = c;
	F.reg = c;
	pthread_mutex_unlock(&F.reg_lock);
}

static void
unregister_conn(struct conn *c)
{
	pthread_mutex_lock(&F.reg_lock);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		F.reg = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&F.reg_lock);
}

/*
 * MHD's per-address limit holds per daemon, and with several event
 * loops there are several: the limit across them is kept here. At most
 * max_connections addresses have connections, so a scan of that many
 * slots finds the address or a free slot. false: C is over the limit.
 */
static bool
per_ip_take(struct conn *c)
{
	struct ip_slot *free_slot = NULL, *slot = NULL;
	bool ok;

	_Static_assert(crypto_shorthash_BYTES == sizeof c->ip_key,
	    "a short hash is 64 bits");
	crypto_shorthash((unsigned char *)&c->ip_key,
	    (const unsigned char *)c->remote, strlen(c->remote), F.rl_key);
	pthread_mutex_lock(&F.ip_lock);
	for (size_t i = 0; i < F.nips && slot == NULL; i++) {
		if (F.ips[i].n > 0 && F.ips[i].key == c->ip_key)
			slot = &F.ips[i];
		else if (F.ips[i].n == 0 && free_slot == NULL)
			free_slot = &F.ips[i];
	}
	if (slot == NULL && free_slot != NULL) {
		slot = free_slot;
		slot->key = c->ip_key;
	}
	ok = slot != NULL && slot->n < F.cfg->limits.per_ip_connections;
	if (ok) {
		slot->n++;
		c->ip_counted = true;
	}
	pthread_mutex_unlock(&F.ip_lock);
	return ok;
}

static void
per_ip_give(struct conn *c)
{
	if (!c->ip_counted)
		return;
	pthread_mutex_lock(&F.ip_lock);
	for (size_t i = 0; i < F.nips; i++) {
		if (F.ips[i].n > 0 && F.ips[i].key == c->ip_key) {
			F.ips[i].n--;
			break;
		}
	}
	pthread_mutex_unlock(&F.ip_lock);
	c->ip_counted = false;
}

static void
notify_conn(void *cls, struct MHD_Connection *mc, void **socket_context,
    enum MHD_ConnectionNotificationCode toe)
{
	const bool *api = cls;
	struct conn *c;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci;

		c = calloc(1, sizeof *c);
		*socket_context = c;
		if (c == NULL)
			return; /* uri_log returns NULL: the handler closes */
		ci = MHD_get_connection_info(mc,
		    MHD_CONNECTION_INFO_CONNECTION_FD);
		c->fd = ci != NULL ? ci->connect_fd : -1;
		c->api = *api;
		remote_of(mc, c->remote, sizeof c->remote);
		/* The TLS handshake and the first request's header block
		 * share one deadline. */
		set_phase(c, PH_WAIT,
		    now_ms() + (int64_t)F.cfg->limits.header_timeout_ms);
		if (c->fd >= 0)
			register_conn(c);
		if (c->api && F.ips != NULL && !per_ip_take(c) && c->fd >= 0) {
			/* MHD sees the end of the stream in the handshake
			 * and closes. */
			kw_log(KW_LOG_DEBUG, "front.per_ip",
			    "connection refused: too many from this address",
			    KW_F("remote", c->remote));
			atomic_store(&c->cut, true);
			shutdown(c->fd, SHUT_RDWR);
		}
		return;
	}
	c = *socket_context;
	if (c == NULL)
		return;
	per_ip_give(c);
	if (c->fd >= 0)
		unregister_conn(c);
	free(c->req.body);
	free(c);
	*socket_context = NULL;
}

static void *
uri_log(void *cls, const char *uri, struct MHD_Connection *mc)
{
	const union MHD_ConnectionInfo *ci;
	struct conn *c;
	struct req *r;
	const char *q;

	(void)cls;
	ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	c = ci != NULL ? ci->socket_context : NULL;
	if (c == NULL)
		return NULL;
	r = &c->req;
	if (r->body != NULL)
		sodium_memzero(r->body, r->body_cap);
	free(r->body);
	memset(r, 0, sizeof *r);
	r->conn = c;
	r->state = RS_NEW;
	r->t0_ns = now_ns();
	r->plaintext = true;
	/* Unique and unguessable, without a getrandom(2) per request. */
	kw_random_buf(&r->rid, sizeof r->rid);
	snprintf(r->rid_hex, sizeof r->rid_hex, "%016" PRIx64, r->rid);
	/* Before MHD splits off the query: the target as sent. */
	r->uri = uri;
	r->uri_len = uri != NULL ? strlen(uri) : 0;
	q = uri != NULL ? strchr(uri, '?') : NULL;
	if (q != NULL) {
		size_t qlen = strlen(q + 1);

		r->has_query = true;
		r->query_long = qlen >= sizeof r->query;
		if (!r->query_long)
			memcpy(r->query, q + 1, qlen + 1);
	}
	/* The first request keeps the connection's deadline (handshake
	 * included); a later one gets its own from its request line on. */
	if (c->nreq++ > 0)
		set_phase(c, PH_HEADERS,
		    now_ms() + (int64_t)F.cfg->limits.header_timeout_ms);
	else
		atomic_store(&c->phase, PH_HEADERS);
	return r;
}

static void
completed(void *cls, struct MHD_Connection *mc, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct req *r = *con_cls;
	struct conn *c;

	(void)cls;
	(void)mc;
	(void)toe;
	if (r == NULL)
		return;
	c = r->conn;
	count_request(r);
	/* A body may carry a credential (a token to introspect). */
	if (r->body != NULL)
		sodium_memzero(r->body, r->body_cap);
	free(r->body);
	r->body = NULL;
	r->body_len = r->body_cap = 0;
	r->state = RS_DONE;
	/*
	 * Between requests the watchdog allows idle_timeout_s in all,
	 * request line included (MHD's own timeout restarts with every
	 * byte, so a request line dripped a byte at a time would stay).
	 */
	set_phase(c, PH_IDLE,
	    now_ms() + (int64_t)F.cfg->limits.idle_timeout_s * 1000);
	*con_cls = NULL;
}

__attribute__((format(printf, 2, 0))) static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
	char buf[512];
	size_t n;

	(void)cls;
	vsnprintf(buf, sizeof buf, fmt, ap);
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	/* At run time MHD reports per-connection trouble (a client that
	 * went away, a TLS alert): debug. While starting, its messages
	 * explain why a daemon does not start. */
	kw_log(atomic_load(&F.starting) ? KW_LOG_ERR : KW_LOG_DEBUG,
	    "front.mhd", buf, );
}

/* ---- the API ---- */

static enum MHD_Result
first_call(struct MHD_Connection *mc, struct req *r, const char *url,
    const char *method, const char *version)
{
	struct conn *c = r->conn;
	const struct route_info *ri;
	enum reject_reason metric;
	const char *why = NULL, *ct = NULL, *allow = NULL, *authz;
	bool jwks;
	char reason[512];
	long long clen = -1;
	enum framing fr;
	unsigned wait;
	bool log;

	jwks = strcmp(method, "GET") == 0 && strcmp(url, JWKS_PATH) == 0;
	authz = MHD_lookup_connection_value(mc, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_AUTHORIZATION);
	if (authz != NULL) {
		if (!bearer_ok(authz)) {
			struct extra x = {.close = true};

			count_reject(RJ_NO_CERT);
			return refuse(mc, r, "authenticate",
			    "Authorization is not Bearer and a token",
			    MHD_HTTP_UNAUTHORIZED, "unauthenticated",
			    "Authorization must be \"Bearer\" and a keyward "
			    "token",
			    &x);
		}
		r->bearer = authz + 7;
	}
	if (c->auth == 0) {
		c->auth =
		    authenticate(c, mc, reason, sizeof reason, &metric) == KW_OK
		    ? 1
		    : -1;
		/* Without a certificate: the JWKS is public (verifiers
		 * fetch it), and a token may stand for a certificate (the
		 * keeper verifies it). Served, and the connection judged
		 * again at its next request. A certificate that is there
		 * but not good is refused even with a token. */
		if (c->auth < 0 &&
		    (jwks || (r->bearer != NULL && metric == RJ_NO_CERT)))
			c->auth = 0;
		else if (c->auth < 0) {
			struct extra x = {.close = true};

			count_reject(metric);
			kw_log(KW_LOG_INFO, "front.unauthenticated", reason,
			    KW_F("remote", c->remote), KW_F("rid", r->rid_hex));
			return refuse(mc, r, "authenticate", reason,
			    MHD_HTTP_UNAUTHORIZED, "unauthenticated",
			    "a valid client certificate is required", &x);
		}
	}
	if (c->auth < 0) /* not reached: the connection was closed */
		return MHD_NO;
	if (c->auth == 0 && !jwks && r->bearer == NULL)
		return MHD_NO; /* not reached: judged just above */

	fr = check_framing(mc, r, url, method, version, &clen, &ct, &why);
	if (fr != FR_OK) {
		count_reject(RJ_FRAMING);
		return reject_close(mc, r,
		    fr == FR_LENGTH ? MHD_HTTP_LENGTH_REQUIRED
		                    : MHD_HTTP_BAD_REQUEST,
		    fr == FR_LENGTH ? "length_required" : "invalid_request",
		    why);
	}

	/*
	 * Before routing or parsing: a flood costs as little as it can.
	 * MHD 0.9.75 closes every connection whose answer is queued before
	 * the body is read; a closed connection would make the flooding
	 * client come back with a new TLS handshake, which costs far more
	 * than reading and dropping a small body. So the 429 is answered
	 * after the (bounded, unparsed) body, on a kept-alive connection.
	 */
	/* Callers without a certificate share their address's bucket: the
	 * subject of a token is not known before the keeper verifies it. */
	wait =
	    rate_take(c->identity[0] != '\0' ? c->identity : c->remote, &log);
	if (wait > 0) {
		if (log)
			kw_log(KW_LOG_WARN, "front.rate_limited",
			    "requests refused: over the rate limit",
			    KW_F("identity", c->identity));
		if (clen > (long long)F.cfg->limits.max_body_bytes) {
			struct extra x = {.retry_after = wait, .close = true};

			return send_error(mc, r, MHD_HTTP_TOO_MANY_REQUESTS,
			    "rate_limited", "too many requests; retry later",
			    &x);
		}
		r->retry_after = wait;
		r->discard = clen > 0;
		return MHD_YES;
	}

	r->route = route_path(url, method, false, r->name, &allow);
	if (r->route == RT_NONE) {
		if (allow != NULL) {
			struct extra x = {.allow = allow};

			return reject(mc, r, MHD_HTTP_METHOD_NOT_ALLOWED,
			    "method_not_allowed",
			    "method not allowed on this path", &x);
		}
		r->name[0] = '\0';
		return reject(mc, r, MHD_HTTP_NOT_FOUND, "not_found",
		    "no such route", NULL);
	}
	ri = &routes[r->route];

	if (r->has_query) {
		if (r->route != RT_DATAKEY || r->query_long ||
		    (strcmp(r->query, "plaintext=true") != 0 &&
		        strcmp(r->query, "plaintext=false") != 0))
			return reject(mc, r, MHD_HTTP_BAD_REQUEST,
			    "invalid_request",
			    r->route == RT_DATAKEY
			        ? "the only query parameter is plaintext=true "
			          "or plaintext=false"
			        : "this route takes no query parameters",
			    NULL);
		r->plaintext = strcmp(r->query, "plaintext=true") == 0;
	}

	if (clen > (long long)F.cfg->limits.max_body_bytes) {
		char msg[96];

		snprintf(msg, sizeof msg, "request body larger than %lu bytes",
		    F.cfg->limits.max_body_bytes);
		/* A body is pending: MHD closes the connection. */
		return reject_close(mc, r, MHD_HTTP_CONTENT_TOO_LARGE,
		    "too_large", msg);
	}
	if (ri->body == BODY_NONE && clen > 0)
		return reject_close(mc, r, MHD_HTTP_BAD_REQUEST,
		    "invalid_request", "this request takes no body");
	if (ri->body == BODY_REQUIRED && clen < 0)
		return reject(mc, r, MHD_HTTP_LENGTH_REQUIRED,
		    "length_required",
		    "this request needs a JSON body with a Content-Length",
		    NULL);
	if (clen > 0 && !json_media_type(ct))
		return reject_close(mc, r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
		    "unsupported_media_type",
		    "the body must be application/json");
	if (clen > 0) {
		r->body = malloc((size_t)clen);
		if (r->body == NULL)
			return MHD_NO;
		r->body_cap = (size_t)clen;
	}
	return MHD_YES;
}

/*
 * token_json: {"token","token_type","expires_at"} in wiped memory (the
 * token is a credential).
 */
static char *
token_json(const struct kwd_msg *m, size_t *ret_len)
{
	const struct kwd_field *t = kwd_msg_get(m, KWD_TAG_TOKEN, 0);
	uint64_t exp = 0;
	size_t cap;
	char *out;
	int n;

	if (t == NULL || !kwd_msg_u64(m, KWD_TAG_EXPIRES, &exp))
		return NULL;
	cap = t->len + 96;
	out = wbuf_new(cap);
	if (out == NULL)
		return NULL;
	n = snprintf(out, cap,
	    "{\"token\":\"%.*s\",\"token_type\":\"Bearer\","
	    "\"expires_at\":%" PRIu64 "}",
	    (int)t->len, (const char *)t->p, exp);
	if (n < 0 || (size_t)n >= cap) {
		wbuf_free(out);
		return NULL;
	}
	*ret_len = (size_t)n;
	return out;
}

static enum MHD_Result
answer(struct MHD_Connection *mc, struct req *r, const struct kwd_msg *m)
{
	const struct route_info *ri = &routes[r->route];
	enum MHD_Result ok;
	size_t len = 0;
	char *body;

	if (m->type == KWD_MSG_R_ERROR)
		return send_keeper_error(mc, r, m);
	switch (r->route) {
	case RT_KEYS_LIST:
		return send_json(mc, r, ri->ok_status, list_json(m), NULL);
	case RT_TOKENS:
		body = token_json(m, &len);
		if (body == NULL)
			return send_internal(mc, r);
		return send_body(mc, r, ri->ok_status, body, len, true, NULL);
	case RT_TOKEN_REVOKE:
		body = strdup("{\"revoked\":true}");
		if (body == NULL)
			return send_internal(mc, r);
		return send_body(mc, r, ri->ok_status, body, strlen(body),
		    false, NULL);
	case RT_TOKEN_INTROSPECT:
	case RT_SIGNER_SHOW:
	case RT_SIGNER_ROTATE:
	case RT_ARTIFACT_SIGN:
	case RT_CERTS:
	case RT_JWKS: {
		const struct kwd_field *f = kwd_msg_get(m, KWD_TAG_JSON, 0);

		body = f != NULL ? malloc(f->len) : NULL;
		if (body == NULL)
			return send_internal(mc, r);
		memcpy(body, f->p, f->len);
		return send_body(mc, r, ri->ok_status, body, f->len, false,
		    NULL);
	}
	case RT_KEYS_CREATE:
	case RT_KEY_SHOW:
	case RT_KEY_PATCH:
	case RT_KEY_ROTATE:
		ok = send_json(mc, r, ri->ok_status, key_json(m), NULL);
		break;
	case RT_DATAKEY:
	case RT_REWRAP:
	case RT_DECRYPT:
		body = dek_json(m, r->route != RT_DECRYPT,
		    r->route == RT_DECRYPT ||
		        (r->route == RT_DATAKEY && r->plaintext),
		    &len);
		if (body == NULL)
			return send_internal(mc, r);
		return send_body(mc, r, ri->ok_status, body, len, true, NULL);
	default:
		ok = MHD_NO;
		break;
	}
	if (ok != MHD_YES)
		return send_internal(mc, r);
	return ok;
}

static enum MHD_Result health_answer(struct MHD_Connection *mc, struct req *r,
    const struct kwd_msg *m);

static enum MHD_Result
process(struct MHD_Connection *mc, struct req *r)
{
	const struct route_info *ri = &routes[r->route];
	struct conn *c = r->conn;
	struct kwd_req *q;
	struct chan *ch;
	char err[256];
	int rv;

	ch = pick_chan();
	if (ch == NULL)
		return send_unavailable(mc, r);
	if (r->route == RT_HEALTH) {
		kwd_msg_begin(&ch->out, KWD_MSG_HEALTH, r->rid);
		if (ask(mc, r, ch, KWD_MSG_R_HEALTH, THEN_HEALTH,
		        HEALTH_TIMEOUT_MS) == KW_OK)
			return MHD_YES;
		return health_answer(mc, r, NULL);
	}
	q = &ch->req;
	rv = kwd_req_parse(ri->kind, r->body, r->body_len, q, err, sizeof err);
	if (rv == KW_ERR_TOO_LARGE)
		return reject(mc, r, MHD_HTTP_CONTENT_TOO_LARGE, "too_large",
		    err, NULL);
	if (rv == KW_ERR_NOMEM)
		return send_unavailable(mc, r);
	if (rv != KW_OK)
		return reject(mc, r, MHD_HTTP_BAD_REQUEST, "invalid_request",
		    err[0] ? err : "invalid request body", NULL);

	if (r->bearer != NULL && r->route == RT_TOKENS)
		return reject(mc, r, MHD_HTTP_FORBIDDEN, "forbidden",
		    "tokens are obtained with a client certificate, not with "
		    "a token",
		    NULL);
	kwd_msg_begin(&ch->out, ri->type, r->rid);
	if (r->route != RT_JWKS && r->bearer != NULL) {
		kwd_msg_put_str(&ch->out, KWD_TAG_BEARER, r->bearer);
		if (c->auth == 1)
			kwd_msg_put_str(&ch->out, KWD_TAG_CNF, c->x5t);
	} else if (r->route != RT_JWKS) {
		kwd_msg_put_str(&ch->out, KWD_TAG_IDENTITY, c->identity);
	}
	switch (r->route) {
	case RT_JWKS:
		break;
	case RT_TOKENS:
		kwd_msg_put_str(&ch->out, KWD_TAG_AUDIENCE, q->audience);
		for (size_t i = 0; i < q->nscopes; i++)
			kwd_msg_put_str(&ch->out, KWD_TAG_SCOPE, q->scopes[i]);
		kwd_msg_put_u32(&ch->out, KWD_TAG_TTL, q->ttl);
		if (q->bind)
			kwd_msg_put_str(&ch->out, KWD_TAG_CNF, c->x5t);
		break;
	case RT_TOKEN_REVOKE:
		if (q->jti[0] != '\0')
			kwd_msg_put_str(&ch->out, KWD_TAG_JTI, q->jti);
		else
			kwd_msg_put_str(&ch->out, KWD_TAG_SUBJECT, q->sub);
		break;
	case RT_TOKEN_INTROSPECT:
		kwd_msg_put_str(&ch->out, KWD_TAG_TOKEN, q->token);
		sodium_memzero(q->token, sizeof q->token);
		break;
	case RT_SIGNER_SHOW:
	case RT_SIGNER_ROTATE:
		kwd_msg_put_str(&ch->out, KWD_TAG_KEY, r->name);
		break;
	case RT_CERTS:
		kwd_msg_put(&ch->out, KWD_TAG_CSR,
		    (const unsigned char *)q->csr, strlen(q->csr));
		kwd_msg_put_u32(&ch->out, KWD_TAG_TTL, q->ttl);
		break;
	case RT_ARTIFACT_SIGN:
		kwd_msg_put_str(&ch->out, KWD_TAG_KEY, q->name);
		kwd_msg_put(&ch->out, KWD_TAG_DIGEST, q->digest,
		    sizeof q->digest);
		break;
	case RT_KEYS_CREATE:
		kwd_msg_put_str(&ch->out, KWD_TAG_KEY, q->name);
		if (q->rotation_period != UINT64_MAX)
			kwd_msg_put_u64(&ch->out, KWD_TAG_ROTATION,
			    q->rotation_period);
		break;
	case RT_KEYS_LIST:
		break;
	case RT_KEY_SHOW:
	case RT_KEY_ROTATE:
		kwd_msg_put_str(&ch->out, KWD_TAG_KEY, r->name);
		break;
	case RT_KEY_PATCH:
		kwd_msg_put_str(&ch->out, KWD_TAG_KEY, r->name);
		if (q->min_decrypt_version != 0)
			kwd_msg_put_u32(&ch->out, KWD_TAG_MIN_DECRYPT,
			    q->min_decrypt_version);
		if (q->rotation_period != UINT64_MAX)
			kwd_msg_put_u64(&ch->out, KWD_TAG_ROTATION,
			    q->rotation_period);
		if (q->version != 0) {
			kwd_msg_put_u32(&ch->out, KWD_TAG_VERSION, q->version);
			kwd_msg_put_u8(&ch->out, KWD_TAG_STATE,
			    (uint8_t)q->state);
		}
		break;
	case RT_DATAKEY:
	case RT_DECRYPT:
	case RT_REWRAP:
		kwd_msg_put_str(&ch->out, KWD_TAG_KEY, r->name);
		for (size_t i = 0; i < q->nctx && i < KWD_CTX_MAX_PAIRS; i++) {
			kwd_msg_put_str(&ch->out, KWD_TAG_CTX_KEY,
			    q->ctx_key[i]);
			kwd_msg_put_str(&ch->out, KWD_TAG_CTX_VAL,
			    q->ctx_val[i]);
		}
		if (r->route == RT_DATAKEY)
			kwd_msg_put_u8(&ch->out, KWD_TAG_PLAINTEXT,
			    r->plaintext ? 1 : 0);
		else
			kwd_msg_put(&ch->out, KWD_TAG_BLOB, q->wrapped,
			    q->wrapped_len);
		break;
	default:
		kwd_msg_wipe(&ch->out);
		return send_internal(mc, r);
	}
	if (c->remote[0] != '\0')
		kwd_msg_put_str(&ch->out, KWD_TAG_REMOTE, c->remote);
	rv = ask(mc, r, ch, ri->answer, THEN_ANSWER, IPC_TIMEOUT_MS);
	if (rv == KW_OK)
		return MHD_YES; /* conclude() answers */
	if (rv == KW_ERR_INTERNAL)
		return send_internal(mc, r);
	return send_unavailable(mc, r);
}

/* ---- the event loops ---- */

/*
 * conclude: answer the suspended request of P with the keeper's answer M
 * (rv KW_OK) or without one (KW_ERR_TIMEOUT: its deadline passed;
 * KW_ERR_UNAVAILABLE: the front is stopping), and resume its connection.
 * MHD allows a response to be queued on a suspended connection; MHD then
 * sends it without calling the handler again, unless none could be
 * queued (r->failed: the handler closes the connection).
 */
static void
conclude(struct pend *p, const struct kwd_msg *m, int rv)
{
	struct MHD_Connection *mc = p->mc;
	struct req *r = p->r;
	enum MHD_Result ok;

	p->mc = NULL;
	p->r = NULL;
	switch (p->then) {
	case THEN_ANSWER:
		if (rv != KW_OK) {
			ok = send_unavailable(mc, r);
			break;
		}
		ok = answer(mc, r, m);
		kw_log(KW_LOG_DEBUG, "front.request", routes[r->route].label,
		    KW_F("rid", r->rid_hex),
		    KW_F("identity", r->conn->identity), KW_F("path", r->uri),
		    KW_F("status", r->status));
		break;
	case THEN_REJECT:
		if (rv == KW_OK && m->type == KWD_MSG_R_ERROR)
			kw_log(KW_LOG_WARN, "front.audit",
			    "the keeper refused an audit event",
			    KW_F("rid", r->rid_hex));
		ok = send_error(mc, r, r->rj_status, r->rj_code, r->rj_msg,
		    &r->rj_x);
		break;
	default:
		ok = health_answer(mc, r, rv == KW_OK ? m : NULL);
		break;
	}
	r->failed = ok != MHD_YES;
	MHD_resume_connection(mc);
}

/*
 * Read every answer queued on CH and conclude its request. true: a
 * connection was resumed (MHD has work). A broken protocol stops the
 * front.
 */
static bool
drain(struct chan *ch)
{
	bool resumed = false;

	for (;;) {
		struct pend *p;
		int rv;

		rv = kwd_ipc_chan_recv(ch->fd, ch->in, &ch->inlen, 0);
		if (rv == KW_ERR_TIMEOUT)
			return resumed; /* nothing more queued */
		if (decode_answer(ch, rv) != KW_OK)
			return resumed;
		p = ch->qlen > 0 ? &ch->q[ch->qhead] : NULL;
		if (p == NULL || ch->msg.rid != p->rid) {
			chan_wipe_in(ch);
			set_fatal("answer from the keeper with a request id "
			          "that was not asked for");
			return resumed;
		}
		if (ch->msg.type != p->want &&
		    ch->msg.type != KWD_MSG_R_ERROR) {
			chan_wipe_in(ch);
			set_fatal("answer from the keeper of the wrong type");
			return resumed;
		}
		ch->qhead = (ch->qhead + 1) % ch->qcap;
		ch->qlen--;
		if (p->mc != NULL) {
			conclude(p, &ch->msg, KW_OK);
			resumed = true;
		}
		/* Answers may carry a DEK: gone before the next one. */
		chan_wipe_in(ch);
	}
}

/* Answer 503 to the requests of L whose deadline has passed. */
static bool
sweep(struct loop *l, int64_t now)
{
	bool resumed = false;

	for (size_t i = l->idx; i < F.napi; i += F.nloops) {
		struct chan *ch = &F.chans[i];

		for (size_t j = 0; j < ch->qlen; j++) {
			struct pend *p = &ch->q[(ch->qhead + j) % ch->qcap];

			if (p->mc == NULL || now < p->deadline_ms)
				continue;
			kw_log(KW_LOG_WARN, "front.ipc_timeout",
			    "the keeper did not answer in time",
			    KW_F("rid", p->r->rid_hex),
			    KW_F("type", kwd_msg_type_name(p->want)));
			conclude(p, NULL, KW_ERR_TIMEOUT);
			resumed = true;
		}
	}
	return resumed;
}

#define LOOP_EVENTS 32
#define LOOP_MHD UINT64_MAX /* epoll data of MHD's own descriptor */

static void *
loop_main(void *arg)
{
	struct loop *l = arg;
	struct epoll_event ev[LOOP_EVENTS];

	my_loop = l;
	while (!atomic_load(&F.stop) && atomic_load(&F.fatal) == 0) {
		MHD_UNSIGNED_LONG_LONG mt;
		int timeout = IPC_TICK_MS, n;
		bool run = false;
		int64_t now;

		if (MHD_get_timeout(l->d, &mt) == MHD_YES &&
		    mt < (MHD_UNSIGNED_LONG_LONG)timeout)
			timeout = (int)mt;
		n = epoll_wait(l->efd, ev, LOOP_EVENTS, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			set_fatal("epoll_wait failed in an event loop");
			break;
		}
		/* Nothing ready: a timeout of MHD's may be due. */
		run = n == 0 || timeout == 0;
		for (int i = 0; i < n; i++) {
			if (ev[i].data.u64 == LOOP_MHD)
				run = true;
			else if (drain(&F.chans[ev[i].data.u64]))
				run = true;
		}
		now = now_ms();
		if (now >= l->next_sweep_ms) {
			run = sweep(l, now) || run;
			l->next_sweep_ms = now + IPC_TICK_MS;
		}
		/* Resumed connections, and requests that arrived. */
		if (run && MHD_run(l->d) != MHD_YES) {
			set_fatal("MHD_run failed in an event loop");
			break;
		}
	}
	return NULL;
}

static enum MHD_Result
take_body(struct req *r, const char *data, size_t *size)
{
	if (r->discard) {
		*size = 0;
		return MHD_YES;
	}
	/* MHD passes at most Content-Length bytes in all; checked anyway. */
	if (r->body == NULL || *size > r->body_cap - r->body_len)
		return MHD_NO;
	memcpy(r->body + r->body_len, data, *size);
	r->body_len += *size;
	*size = 0;
	return MHD_YES;
}

static enum MHD_Result
api_handler(void *cls, struct MHD_Connection *mc, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_size, void **con_cls)
{
	struct req *r = *con_cls;

	(void)cls;
	if (r == NULL)
		return MHD_NO; /* out of memory at connection start */
	if (r->failed)
		return MHD_NO; /* resumed without a response: close */
	if (r->state == RS_NEW) {
		r->state = RS_BODY;
		/* The whole body within one more header_timeout_ms. */
		set_phase(r->conn, PH_BODY,
		    now_ms() + (int64_t)F.cfg->limits.header_timeout_ms);
		return first_call(mc, r, url, method, version);
	}
	if (*upload_size > 0)
		return take_body(r, upload, upload_size);
	if (r->state != RS_BODY)
		return MHD_YES;
	r->state = RS_DONE;
	set_phase(r->conn, PH_BUSY, 0);
	if (r->retry_after > 0) {
		struct extra x = {.retry_after = r->retry_after};

		return send_error(mc, r, MHD_HTTP_TOO_MANY_REQUESTS,
		    "rate_limited", "too many requests; retry later", &x);
	}
	return process(mc, r);
}

/* ---- the metrics listener ---- */

struct text {
	char *buf;
	size_t len, cap;
	bool failed;
};

__attribute__((format(printf, 2, 3))) static void
out(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->failed = true;
			return;
		}
		if ((size_t)n < t->cap - t->len) {
			t->len += (size_t)n;
			return;
		}
		{
			size_t ncap = t->cap * 2 + (size_t)n;
			char *nb = realloc(t->buf, ncap);

			if (nb == NULL) {
				t->failed = true;
				return;
			}
			t->buf = nb;
			t->cap = ncap;
		}
	}
}

static void
metrics_text(struct text *t)
{
	out(t,
	    "# HELP keyward_requests_total HTTP requests answered by the "
	    "front, by route and status.\n"
	    "# TYPE keyward_requests_total counter\n");
	for (size_t rt = 0; rt < RT__COUNT; rt++) {
		for (size_t s = 0; s <= NSTATUS; s++) {
			uint64_t v = atomic_load(&F.m->requests[rt][s]);

			if (v == 0)
				continue;
			if (s < NSTATUS)
				out(t,
				    "keyward_requests_total{route=\"%s\","
				    "code=\"%u\"} %" PRIu64 "\n",
				    routes[rt].label, statuses[s], v);
			else
				out(t,
				    "keyward_requests_total{route=\"%s\","
				    "code=\"other\"} %" PRIu64 "\n",
				    routes[rt].label, v);
		}
	}
	out(t,
	    "# HELP keyward_request_duration_seconds Time from the "
	    "request line to the answer.\n"
	    "# TYPE keyward_request_duration_seconds histogram\n");
	for (size_t rt = 0; rt < RT__COUNT; rt++) {
		uint64_t cum = 0, count = atomic_load(&F.m->hist_count[rt]);

		if (count == 0)
			continue;
		for (size_t b = 0; b < NBUCKET; b++) {
			cum += atomic_load(&F.m->hist[rt][b]);
			out(t,
			    "keyward_request_duration_seconds_bucket{route="
			    "\"%s\",le=\"%g\"} %" PRIu64 "\n",
			    routes[rt].label, (double)buckets_us[b] / 1e6, cum);
		}
		out(t,
		    "keyward_request_duration_seconds_bucket{route=\"%s\","
		    "le=\"+Inf\"} %" PRIu64 "\n",
		    routes[rt].label, count);
		out(t,
		    "keyward_request_duration_seconds_sum{route=\"%s\"} "
		    "%.6f\n",
		    routes[rt].label,
		    (double)atomic_load(&F.m->hist_sum_us[rt]) / 1e6);
		out(t,
		    "keyward_request_duration_seconds_count{route=\"%s\"} "
		    "%" PRIu64 "\n",
		    routes[rt].label, count);
	}
	out(t,
	    "# HELP keyward_connections_rejected_total Connections or "
	    "requests refused by the front before routing, by reason.\n"
	    "# TYPE keyward_connections_rejected_total counter\n");
	for (size_t i = 0; i < RJ__COUNT; i++)
		out(t,
		    "keyward_connections_rejected_total{reason=\"%s\"} "
		    "%" PRIu64 "\n",
		    reject_names[i], atomic_load(&F.m->rejected[i]));
}

static enum MHD_Result
send_text(struct MHD_Connection *mc, struct req *r, char *body, size_t len)
{
	struct MHD_Response *resp;
	enum MHD_Result ok;

	resp =
	    MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL) {
		free(body);
		return MHD_NO;
	}
	ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	    "text/plain; version=0.0.4; charset=utf-8");
	if (ok == MHD_YES)
		ok = MHD_add_response_header(resp, "X-Request-Id", r->rid_hex);
	if (ok == MHD_YES)
		ok = MHD_queue_response(mc, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	if (ok == MHD_YES)
		r->status = MHD_HTTP_OK;
	return ok;
}

static enum MHD_Result
do_metrics(struct MHD_Connection *mc, struct req *r, struct chan *ch)
{
	struct text t = {NULL, 0, 0, false};
	const struct kwd_field *f;

	t.cap = 16384;
	t.buf = malloc(t.cap);
	if (t.buf == NULL)
		return send_unavailable(mc, r);
	metrics_text(&t);
	if (ch != NULL) {
		kwd_msg_begin(&ch->out, KWD_MSG_STATS, r->rid);
		if (call(ch, r->rid, KWD_MSG_R_STATS, HEALTH_TIMEOUT_MS) ==
		        KW_OK &&
		    ch->msg.type == KWD_MSG_R_STATS &&
		    (f = kwd_msg_get(&ch->msg, KWD_TAG_TEXT, 0)) != NULL) {
			/* The keeper's text is appended as it is: it is
			 * Prometheus text of its own making. */
			out(&t, "%.*s", (int)f->len, (const char *)f->p);
		} else {
			out(&t, "# keeper statistics unavailable\n");
		}
		chan_wipe_in(ch);
	}
	if (t.failed) {
		free(t.buf);
		return send_unavailable(mc, r);
	}
	return send_text(mc, r, t.buf, t.len);
}

/* The health answer from the keeper's HEALTH answer M (NULL: none). */
static enum MHD_Result
health_answer(struct MHD_Connection *mc, struct req *r, const struct kwd_msg *m)
{
	struct extra x = {.retry_after = 1};
	uint8_t hsm = 0, aud = 0;
	char reason[513] = "";

	if (m == NULL || m->type != KWD_MSG_R_HEALTH ||
	    !kwd_msg_u8(m, KWD_TAG_HSM_OK, &hsm) ||
	    !kwd_msg_u8(m, KWD_TAG_AUDIT_OK, &aud))
		return send_json(mc, r, MHD_HTTP_SERVICE_UNAVAILABLE,
		    json_pack("{s:s,s:s,s:s,s:s}", "status", "unavailable",
		        "hsm", "unknown", "audit", "unknown", "reason",
		        "the keeper did not answer within 1 s"),
		    &x);
	(void)kwd_msg_str(m, KWD_TAG_REASON, 0, reason, sizeof reason);
	if (hsm && aud)
		return send_json(mc, r, MHD_HTTP_OK,
		    json_pack("{s:s,s:s,s:s}", "status", "ok", "hsm", "ok",
		        "audit", "ok"),
		    NULL);
	return send_json(mc, r, MHD_HTTP_SERVICE_UNAVAILABLE,
	    json_pack("{s:s,s:s,s:s,s:s}", "status", "unavailable", "hsm",
	        hsm ? "ok" : "down", "audit", aud ? "ok" : "failed", "reason",
	        reason[0] ? reason
	                  : (!hsm ? "the HSM is unavailable"
	                          : "the audit log cannot be written")),
	    &x);
}

/* GET /v1/health on the metrics listener: a blocking call on CH. */
static enum MHD_Result
do_health(struct MHD_Connection *mc, struct req *r, struct chan *ch)
{
	enum MHD_Result ok;

	if (ch == NULL)
		return health_answer(mc, r, NULL);
	kwd_msg_begin(&ch->out, KWD_MSG_HEALTH, r->rid);
	if (call(ch, r->rid, KWD_MSG_R_HEALTH, HEALTH_TIMEOUT_MS) != KW_OK)
		return health_answer(mc, r, NULL);
	ok = health_answer(mc, r, &ch->msg);
	chan_wipe_in(ch);
	return ok;
}

static enum MHD_Result
metrics_handler(void *cls, struct MHD_Connection *mc, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_size, void **con_cls)
{
	struct req *r = *con_cls;
	struct chan *ch;
	const char *allow = NULL, *ct = NULL, *why = NULL;
	long long clen = -1;

	(void)cls;
	(void)upload;
	if (r == NULL)
		return MHD_NO;
	if (r->state == RS_NEW) {
		r->state = RS_BODY;
		set_phase(r->conn, PH_BODY,
		    now_ms() + (int64_t)F.cfg->limits.header_timeout_ms);
		if (check_framing(mc, r, url, method, version, &clen, &ct,
		        &why) != FR_OK) {
			count_reject(RJ_FRAMING);
			return send_close(mc, r, MHD_HTTP_BAD_REQUEST,
			    "invalid_request", why);
		}
		if (clen > 0)
			return send_close(mc, r, MHD_HTTP_BAD_REQUEST,
			    "invalid_request", "this request takes no body");
		r->route = route_path(url, method, true, r->name, &allow);
		if (r->route == RT_NONE) {
			struct extra x = {.allow = allow};

			return allow != NULL
			    ? send_error(mc, r, MHD_HTTP_METHOD_NOT_ALLOWED,
			          "method_not_allowed",
			          "method not allowed on this path", &x)
			    : send_error(mc, r, MHD_HTTP_NOT_FOUND, "not_found",
			          "no such route", NULL);
		}
		if (r->has_query)
			return send_error(mc, r, MHD_HTTP_BAD_REQUEST,
			    "invalid_request",
			    "this route takes no query parameters", NULL);
		return MHD_YES;
	}
	if (*upload_size > 0)
		return MHD_NO; /* not announced: cannot happen */
	if (r->state != RS_BODY)
		return MHD_YES;
	r->state = RS_DONE;
	set_phase(r->conn, PH_BUSY, 0);
	ch = F.metrics_chan >= 0 ? &F.chans[F.metrics_chan] : NULL;
	if (r->route == RT_METRICS)
		return do_metrics(mc, r, ch);
	return do_health(mc, r, ch);
}

/* ---- the watchdog ---- */

static void *
watchdog_main(void *arg)
{
	struct pollfd *pfd = arg;
	int tick = (int)(F.cfg->limits.header_timeout_ms / 10);

	if (tick < 10)
		tick = 10;
	if (tick > 100)
		tick = 100;
	while (!atomic_load(&F.stop)) {
		int64_t now;
		int n;

		/* events 0: only POLLHUP/POLLERR, which poll always
		 * reports; answers queued on a channel are not taken. */
		for (size_t i = 0; i < F.nchan; i++) {
			pfd[i].events = 0;
			pfd[i].revents = 0;
		}
		n = poll(pfd, F.nchan, tick);
		if (n < 0 && errno != EINTR) {
			set_fatal("watchdog poll failed");
			break;
		}
		if (n > 0) {
			bool hup = false;

			for (size_t i = 0; i < F.nchan; i++)
				hup = hup ||
				    (pfd[i].revents &
				        (POLLHUP | POLLERR | POLLNVAL)) != 0;
			if (hup) {
				/* The keeper is gone: stop (the main thread
				 * sees it); a closed channel would make
				 * poll return at once from now on. */
				set_fatal("a keeper channel was closed");
				break;
			}
		}
		now = now_ms();
		pthread_mutex_lock(&F.reg_lock);
		for (struct conn *c = F.reg; c != NULL; c = c->next) {
			int64_t d = atomic_load(&c->deadline_ms);
			int ph;

			if (d == 0 || now < d || atomic_load(&c->cut))
				continue;
			atomic_store(&c->cut, true);
			ph = atomic_load(&c->phase);
			count_reject(ph == PH_BODY ? RJ_BODY_TIMEOUT
			        : ph == PH_IDLE    ? RJ_IDLE_TIMEOUT
			                           : RJ_HEADER_TIMEOUT);
			/* The descriptor stays open until MHD's
			 * NOTIFY_CLOSED, which needs reg_lock: no reuse
			 * race. MHD sees the end of stream and closes. */
			shutdown(c->fd, SHUT_RDWR);
		}
		pthread_mutex_unlock(&F.reg_lock);
	}
	return NULL;
}

/* ---- start and stop ---- */

/*
 * A TLS file, NUL-terminated (MHD takes C strings). secret: the private
 * key, in guarded memory (sodium_malloc) that is wiped when freed.
 */
static int
read_tls_file(const char *path, bool secret, char **ret_buf)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int fd, rv;

	if (path == NULL)
		return KW_ERR_CONFIG;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		kw_log(KW_LOG_ERR, "front.tls_file", strerror(errno),
		    KW_F("path", path));
		return KW_ERR_IO;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    st.st_size > TLS_FILE_MAX) {
		kw_log(KW_LOG_ERR, "front.tls_file",
		    "not a regular file of at most 1 MiB", KW_F("path", path));
		rv = KW_ERR_IO;
		goto out;
	}
	if (secret && (st.st_mode & 077) != 0)
		kw_log(KW_LOG_WARN, "front.tls_key_mode",
		    "the TLS private key is readable by group or others",
		    KW_F("path", path));
	buf = secret ? sodium_malloc((size_t)st.st_size + 1)
	             : malloc((size_t)st.st_size + 1);
	if (buf == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			kw_log(KW_LOG_ERR, "front.tls_file", "short read",
			    KW_F("path", path));
			rv = KW_ERR_IO;
			goto out;
		}
		got += (size_t)n;
	}
	buf[got] = '\0';
	if (strlen(buf) != got) {
		kw_log(KW_LOG_ERR, "front.tls_file",
		    "expected PEM text (the file holds a NUL byte)",
		    KW_F("path", path));
		rv = KW_ERR_IO;
		goto out;
	}
	*ret_buf = buf;
	buf = NULL;
	rv = KW_OK;
out:
	if (buf != NULL) {
		if (secret)
			sodium_free(buf);
		else
			free(buf);
	}
	close(fd);
	return rv;
}

static void
free_tls(char *cert, char *key, char *ca)
{
	free(cert);
	free(ca);
	if (key != NULL)
		sodium_free(key); /* wipes */
}

static int
init_state(const struct kwd_front_args *args)
{
	const struct kwd_config *cfg = args->cfg;
	size_t api = KWD_API_CHANNELS(cfg);
	size_t need = api + (args->metrics_fd >= 0 ? 1 : 0);

	memset(&F, 0, sizeof F);
	F.cfg = cfg;
	F.napi = api;
	F.nloops = KWD_FRONT_LOOPS(cfg);
	if (F.nloops > api)
		F.nloops = api;
	F.nchan = args->nchan;
	F.metrics_chan = args->metrics_fd >= 0 ? (int)args->nchan - 1 : -1;
	atomic_store(&F.starting, true);
	if (api == 0 || args->chan == NULL || args->nchan < need ||
	    (args->metrics_fd >= 0 && args->nchan - 1 < api)) {
		kw_log(KW_LOG_ERR, "front.channels",
		    "fewer keeper channels than server threads",
		    KW_F("channels", (unsigned long)args->nchan),
		    KW_F("workers", cfg->workers));
		return KW_ERR_CONFIG;
	}
	if (pthread_mutex_init(&F.reg_lock, NULL) != 0 ||
	    pthread_mutex_init(&F.ip_lock, NULL) != 0)
		return KW_ERR_NOMEM;
	if (F.nloops > 1) {
		F.nips = (size_t)cfg->limits.max_connections;
		F.ips = calloc(F.nips, sizeof *F.ips);
		if (F.ips == NULL)
			return KW_ERR_NOMEM;
	}
	/* Guarded, locked, not in core dumps: answers carry DEKs. */
	F.chans = sodium_malloc(args->nchan * sizeof *F.chans);
	F.rl = calloc(RL_SETS, sizeof *F.rl);
	F.m = calloc(1, sizeof *F.m);
	if (F.chans == NULL || F.rl == NULL || F.m == NULL)
		return KW_ERR_NOMEM;
	memset(F.chans, 0, args->nchan * sizeof *F.chans);
	F.loops = calloc(F.nloops, sizeof *F.loops);
	if (F.loops == NULL)
		return KW_ERR_NOMEM;
	for (size_t i = 0; i < F.nloops; i++) {
		F.loops[i].idx = i;
		F.loops[i].efd = -1;
	}
	for (size_t i = 0; i < args->nchan; i++) {
		F.chans[i].fd = args->chan[i];
		if (i < api) {
			/* A connection has one request in flight at most;
			 * room for as many given up on. */
			F.chans[i].qcap =
			    2 * (size_t)cfg->limits.max_connections + 16;
			F.chans[i].q =
			    calloc(F.chans[i].qcap, sizeof *F.chans[i].q);
			if (F.chans[i].q == NULL)
				return KW_ERR_NOMEM;
		}
		/* Blocking receives bounded by IPC_TICK_MS (msg.h): one
		 * recvmsg per answer. Sends never block (a keeper that
		 * stopped reading gets 503, not a hung server thread):
		 * kwd_ipc_send_nowait. */
		if (kwd_ipc_chan_init(args->chan[i], IPC_TICK_MS) != KW_OK) {
			kw_log(KW_LOG_ERR, "front.channels", strerror(errno), );
			return KW_ERR_IO;
		}
	}
	for (size_t i = 0; i < RL_SETS; i++)
		if (pthread_mutex_init(&F.rl[i].lock, NULL) != 0)
			return KW_ERR_NOMEM;
	randombytes_buf(F.rl_key, sizeof F.rl_key);
	return KW_OK;
}

static void
free_state(void)
{
	if (F.chans != NULL) {
		for (size_t i = 0; i < F.nchan; i++)
			free(F.chans[i].q);
		sodium_free(F.chans);
	}
	if (F.loops != NULL)
		for (size_t i = 0; i < F.nloops; i++)
			if (F.loops[i].efd >= 0)
				close(F.loops[i].efd);
	free(F.loops);
	F.loops = NULL;
	free(F.ips);
	F.ips = NULL;
	free(F.rl);
	free(F.m);
	F.chans = NULL;
	F.rl = NULL;
	F.m = NULL;
}

/*
 * An event loop's MHD daemon: external epoll mode (the loop runs it), on
 * the shared listening socket (every loop accepts), and its epoll set.
 */
static int
start_loop(struct loop *l, const struct kwd_front_args *args, const char *cert,
    const char *key, const char *ca)
{
	static const bool api = true;
	const struct kwd_config *cfg = args->cfg;
	unsigned limit = (unsigned)(cfg->limits.max_connections / F.nloops);
	const union MHD_DaemonInfo *di;
	struct epoll_event ev;

	if (limit == 0)
		limit = 1;
	l->d = MHD_start_daemon(MHD_USE_TLS | MHD_USE_EPOLL |
	        MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
	    0, NULL, NULL, api_handler, NULL,
	    /* First: MHD logs the options that follow through it. */
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
	    MHD_OPTION_LISTEN_SOCKET, (MHD_socket)args->api_fd,
	    MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_HTTPS_MEM_CERT, cert,
	    /* The trust list makes GnuTLS request (not require) a client
	     * certificate: authenticate() does the rest. */
	    MHD_OPTION_HTTPS_MEM_TRUST, ca, MHD_OPTION_HTTPS_PRIORITIES,
	    PRIORITIES, MHD_OPTION_CONNECTION_LIMIT, limit,
	    /* Per daemon; across loops, per_ip_take() counts. */
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT,
	    (unsigned int)cfg->limits.per_ip_connections,
	    MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned int)cfg->limits.idle_timeout_s,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MEM_LIMIT,
	    MHD_OPTION_UNESCAPE_CALLBACK, unescape_raw, NULL,
	    MHD_OPTION_NOTIFY_CONNECTION, notify_conn, (void *)&api,
	    MHD_OPTION_URI_LOG_CALLBACK, uri_log, NULL,
	    MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_END);
	if (l->d == NULL)
		return KW_ERR_IO;
	di = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_EPOLL_FD);
	l->efd = epoll_create1(EPOLL_CLOEXEC);
	if (di == NULL || l->efd < 0)
		return KW_ERR_IO;
	memset(&ev, 0, sizeof ev);
	ev.events = EPOLLIN;
	ev.data.u64 = LOOP_MHD;
	if (epoll_ctl(l->efd, EPOLL_CTL_ADD, di->epoll_fd, &ev) != 0)
		return KW_ERR_IO;
	for (size_t i = l->idx; i < F.napi; i += F.nloops) {
		ev.events = EPOLLIN;
		ev.data.u64 = i;
		if (epoll_ctl(l->efd, EPOLL_CTL_ADD, F.chans[i].fd, &ev) != 0)
			return KW_ERR_IO;
	}
	return KW_OK;
}

static struct MHD_Daemon *
start_metrics(const struct kwd_front_args *args)
{
	static const bool api = false;

	return MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC |
	        MHD_USE_ERROR_LOG,
	    0, NULL, NULL, metrics_handler, NULL, MHD_OPTION_EXTERNAL_LOGGER,
	    mhd_logger, NULL, MHD_OPTION_LISTEN_SOCKET,
	    (MHD_socket)args->metrics_fd, MHD_OPTION_CONNECTION_LIMIT,
	    (unsigned int)METRICS_CONN_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned int)METRICS_IDLE_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
	    (size_t)MEM_LIMIT, MHD_OPTION_UNESCAPE_CALLBACK, unescape_raw, NULL,
	    MHD_OPTION_NOTIFY_CONNECTION, notify_conn, (void *)&api,
	    MHD_OPTION_URI_LOG_CALLBACK, uri_log, NULL,
	    MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_END);
}

/*
 * MHD_stop_daemon() would shutdown(2) the listening socket, which it
 * shares with the master (and the next front): quiesced first, MHD hands
 * the descriptor back, and closing our copy leaves the socket listening.
 */
static void
stop_daemon(struct MHD_Daemon *d)
{
	MHD_socket fd;

	if (d == NULL)
		return;
	fd = MHD_quiesce_daemon(d);
	MHD_stop_daemon(d);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
}

/*
 * Stop the event loops (F.stop is set), answer what still waits for the
 * keeper with 503 (MHD refuses to stop with suspended connections) and
 * stop their daemons.
 */
static void
stop_loops(void)
{
	if (F.loops == NULL)
		return;
	for (size_t i = 0; i < F.nloops; i++)
		if (F.loops[i].started)
			pthread_join(F.loops[i].thread, NULL);
	for (size_t i = 0; i < F.napi && F.chans != NULL; i++) {
		struct chan *ch = &F.chans[i];

		for (size_t j = 0; j < ch->qlen; j++) {
			struct pend *p = &ch->q[(ch->qhead + j) % ch->qcap];

			if (p->mc != NULL)
				conclude(p, NULL, KW_ERR_UNAVAILABLE);
		}
		ch->qlen = 0;
	}
	for (size_t i = 0; i < F.nloops; i++) {
		stop_daemon(F.loops[i].d);
		F.loops[i].d = NULL;
	}
}

/* Wait for SIGTERM/SIGINT (0) or a fatal condition (1). */
static int
wait_signals(const sigset_t *set)
{
	struct timespec ts = {0, SIG_TICK_MS * 1000000L};

	for (;;) {
		siginfo_t si;
		int sig;

		if (atomic_load(&F.fatal) != 0)
			return atomic_load(&F.fatal);
		sig = sigtimedwait(set, &si, &ts);
		if (sig == SIGTERM || sig == SIGINT) {
			atomic_store(&F.stopping, true);
			kw_log(KW_LOG_INFO, "front.stop", "stopping",
			    KW_F("signal", sig));
			return 0;
		}
		/* SIGHUP: the master reloads; SIGPIPE: never wanted. */
	}
}

int
kwd_front_run(const struct kwd_front_args *args)
{
	struct MHD_Daemon *met = NULL;
	char *cert = NULL, *key = NULL, *ca = NULL;
	struct pollfd *pfd = NULL;
	pthread_t wd;
	bool wd_started = false;
	sigset_t set;
	int status = 1, rv;

	if (args == NULL || args->cfg == NULL)
		return 1;
	/* sandbox.h's order: harden, read files, drop, threads, seccomp. */
	if (kwd_sandbox_harden() != KW_OK) {
		kw_log(KW_LOG_ERR, "front.sandbox", "hardening failed", );
		return 1;
	}
	if (sodium_init() < 0) {
		kw_log(KW_LOG_ERR, "front.start", "libsodium cannot start", );
		return 1;
	}
	rv = init_state(args);
	if (rv != KW_OK)
		goto out;
	if (read_tls_file(args->cfg->tls_cert, false, &cert) != KW_OK ||
	    read_tls_file(args->cfg->tls_key, true, &key) != KW_OK ||
	    read_tls_file(args->cfg->tls_client_ca, false, &ca) != KW_OK)
		goto out;
	if (kwd_sandbox_drop(args->cfg->front_user, args->cfg->front_chroot) !=
	    KW_OK) {
		kw_log(KW_LOG_ERR, "front.sandbox",
		    "dropping privileges failed", );
		goto out;
	}

	/* Before any thread: every thread inherits the mask, and only the
	 * main thread takes these signals (sigtimedwait). */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGPIPE);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
		goto out;

	pfd = calloc(F.nchan, sizeof *pfd);
	if (pfd == NULL)
		goto out;
	for (size_t i = 0; i < F.nchan; i++)
		pfd[i].fd = F.chans[i].fd;
	if (pthread_create(&wd, NULL, watchdog_main, pfd) != 0)
		goto out;
	wd_started = true;

	for (size_t i = 0; i < F.nloops; i++) {
		if (start_loop(&F.loops[i], args, cert, key, ca) != KW_OK) {
			kw_log(KW_LOG_ERR, "front.start",
			    "the API listener cannot start", );
			goto out;
		}
	}
	if (args->metrics_fd >= 0) {
		met = start_metrics(args);
		if (met == NULL) {
			kw_log(KW_LOG_ERR, "front.start",
			    "the metrics listener cannot start", );
			goto out;
		}
	}
	/* GnuTLS holds its own copies now. */
	free_tls(cert, key, ca);
	cert = key = ca = NULL;
	for (size_t i = 0; i < F.nloops; i++) {
		if (pthread_create(&F.loops[i].thread, NULL, loop_main,
		        &F.loops[i]) != 0) {
			kw_log(KW_LOG_ERR, "front.start",
			    "an event loop cannot start", );
			goto out;
		}
		F.loops[i].started = true;
	}

	if (kwd_sandbox_seccomp_front() != KW_OK) {
		kw_log(KW_LOG_ERR, "front.sandbox",
		    "the seccomp filter cannot be applied", );
		goto out;
	}
	atomic_store(&F.starting, false);
	kw_log(KW_LOG_INFO, "front.ready", "serving",
	    KW_F("threads", (unsigned long)F.nloops),
	    KW_F("channels", (unsigned long)F.napi),
	    KW_F("metrics", args->metrics_fd >= 0 ? "on" : "off"));
	status = wait_signals(&set);
out:
	stop_daemon(met);
	atomic_store(&F.stop, true);
	stop_loops();
	if (wd_started)
		pthread_join(wd, NULL);
	free(pfd);
	free_tls(cert, key, ca);
	free_state();
	return status;
}

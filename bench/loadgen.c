/*
 * loadgen.c: a keep-alive mTLS load generator for keyward's HTTP API.
 *
 * N persistent HTTP/1.1 connections over TLS 1.3 with a client
 * certificate, shared among one or a few threads, each with its own epoll
 * set and non-blocking OpenSSL connections, so that hundreds of
 * connections cost little. Every connection is a closed loop: it sends one
 * request, reads the whole response (status line, headers, a
 * Content-Length body), records the latency and sends the next. Nothing is
 * pipelined.
 *
 * A run has four phases on CLOCK_MONOTONIC:
 *   setup    every connection connects and finishes its handshake, so
 *            that handshakes are never part of the figures;
 *   warm-up  requests as in the window, not recorded (-w);
 *   window   the measured seconds (-d);
 *   drain    no new requests; those in flight finish or time out.
 *
 * What is counted:
 *   rate     2xx responses completed inside the window, divided by its
 *            length;
 *   latency  every request started inside the window and answered,
 *            whatever the status, from its first byte written to the
 *            last byte of its response read; exact nearest-rank
 *            percentiles over the stored samples;
 *   status   the answers to the requests started inside the window;
 *   errors   every failure from setup to the end of the drain:
 *            connection refused or reset, TLS failure, timeout, malformed
 *            HTTP. A failed request never counts as throughput, and a run
 *            with errors is not a valid figure (exit status 1).
 *
 * Before the run, one preflight request on its own connection checks
 * that the server answers the operation with 2xx (for decrypt, a datakey
 * first gives the wrapped key that every request then decrypts, and the
 * preflight decrypt must return that datakey's plaintext; for token, the
 * answer must hold a token that looks like a compact JWS).
 *
 * With --handshakes, connections are not kept: each one is a loop of
 * whole connections instead of requests. Connect, a full TLS 1.3
 * handshake (no session is ever resumed), one request sent with
 * "Connection: close" (or none, with --op none: our close_notify right
 * after the handshake), then read until the server closes, close, and
 * connect again at once. What is counted is then connections: the rate of
 * those completed inside the window (a 2xx answer, or with --op none the
 * server's close), the latency of each from connect() to the server's
 * close, and the client's CPU time per handshake. There is no setup phase:
 * the handshakes are what is measured.
 *
 * This machine may only load-test itself: the URL must name a loopback
 * address (127.0.0.0/8 or ::1) as a literal, or "localhost", which means
 * 127.0.0.1; no name is ever resolved.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROG "loadgen"

#define MAX_CONNS 4096
#define MAX_THREADS 8
#define MAX_SECONDS 3600.0
#define MAX_CTX 32
#define MAX_IDS 256 /* client certificates */
#define RESP_MAX (16 * 1024) /* largest response accepted, headers included */
#define REQ_MAX (8 * 1024)
#define KEYNAME_MAX 63
/* Token requests (docs/API.md): an audience of 1-255 printable
 * characters, 1-32 scopes of 1-128 of [a-z0-9._:/-]. */
#define AUDIENCE_MAX 255
#define MAX_SCOPES 32
#define SCOPE_MAX 128
#define TTL_MAX (7 * 24 * 3600)
/* A compact JWS's header, decoded (docs/TOKENS.md), and its ES256
 * signature in base64url (64 bytes). */
#define JWS_HEADER_MAX 256
#define JWS_SIG_B64 86
#define DEFAULT_TIMEOUT_MS 2000
/* Latency samples are uint32 nanoseconds (4.29 s): a request slower than
 * the timeout is an error, not a sample, so the timeout bounds them. */
#define MAX_TIMEOUT_MS 4000
#define DEFAULT_MAX_SAMPLES ((size_t)16 << 20) /* 64 MiB of samples */
#define RETRY_NS (100 * NS_PER_MS) /* wait before reconnecting */
#define SWEEP_NS (10 * NS_PER_MS) /* timeouts and retries resolution */
#define NS_PER_MS 1000000ull
#define NS_PER_S 1000000000ull
#define EVENTS 256
#define SETUP_BATCH 32 /* handshakes under way at once during setup */

/* Exit codes, as p11_bench: 1 means the figures were printed but some
 * requests failed. */
#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_ERROR 3

enum op { OP_DATAKEY, OP_DECRYPT, OP_HEALTH, OP_TOKEN, OP_NONE };
static const char *const op_names[] = {"datakey", "decrypt", "health", "token",
    "none"};

enum err_kind { E_CONNECT, E_TLS, E_IO, E_TIMEOUT, E_HTTP, E_COUNT };
static const char *const err_names[E_COUNT] = {"connect", "tls", "io",
    "timeout", "http"};

struct opts {
	const char *url;
	/* Client identities: connection i uses pair i mod nids. */
	const char *cert[MAX_IDS];
	const char *key[MAX_IDS];
	int ncert;
	int nkey;
	const char *cacert;
	char host[INET6_ADDRSTRLEN]; /* the literal address */
	char hosthdr[INET6_ADDRSTRLEN + 8]; /* the Host header */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	bool localhost; /* verify the name "localhost", not the address */
	int conns;
	int threads;
	double secs;
	double warmup;
	double rate; /* requests/s over all connections, 0: closed loop */
	int timeout_ms;
	enum op op;
	const char *keyname;
	int nctx;
	char *ctx_k[MAX_CTX];
	const char *ctx_v[MAX_CTX];
	const char *audience;
	const char *scope[MAX_SCOPES];
	int nscope;
	long ttl; /* 0: none in the request (the grant's max_ttl) */
	bool handshakes; /* a new connection per request, see above */
	bool json;
	bool nodelay;
	size_t max_samples;
};

struct stats {
	uint64_t ok_window; /* 2xx completed inside the window */
	uint64_t answered; /* requests started in the window, answered */
	uint64_t answered_run; /* every answer of the run, warm-up and drain
	                          included: the count a server's CPU time over
	                          the run is divided by */
	uint64_t status[600];
	uint64_t err[E_COUNT];
	uint64_t reconnects;
	uint64_t handshakes; /* completed, whole run (--handshakes) */
	/* Latency samples in ns; past cap, a uniform reservoir. */
	uint32_t *samples;
	size_t n;
	size_t cap;
	size_t max;
	uint64_t seen;
	uint64_t lat_max;
	uint64_t lat_sum;
	uint64_t rng;
};

struct run {
	const struct opts *o;
	SSL_CTX *tls[MAX_IDS]; /* one per client identity */
	char *req;
	size_t req_len;
	/* Written by one thread between the two setup barriers. */
	uint64_t t_start;
	uint64_t t_measure;
	uint64_t t_end;
	uint64_t timeout_ns;
	uint64_t interval_ns; /* per connection with --rate, else 0 */
	pthread_barrier_t barrier;
	atomic_int ready;
	bool abort;
};

enum cstate {
	C_CLOSED,
	C_CONNECTING,
	C_HANDSHAKE,
	C_READY,
	C_SEND,
	C_RECV,
	C_CLOSING, /* --handshakes: waiting for the server to close */
};

struct worker;

struct conn {
	struct worker *w;
	SSL_CTX *tls; /* its client identity */
	int fd;
	SSL *ssl;
	enum cstate st;
	uint32_t events; /* the epoll mask, 0 when not registered */
	uint64_t t0; /* request start, or connect start */
	uint64_t tc; /* --handshakes: when this connection's connect began */
	uint64_t retry_at; /* C_CLOSED: when to reconnect, 0: never */
	uint64_t next_at; /* with --rate: when the next request is due */
	int idx; /* among all connections */
	size_t len;
	size_t need; /* whole response size, 0 until the head is parsed */
	int status;
	bool close_after;
	bool bye_sent; /* --op none: our close_notify went out */
	char buf[RESP_MAX];
};

struct worker {
	struct run *run;
	pthread_t tid;
	int ep;
	struct conn *conns;
	int nconns;
	int inflight; /* connections in C_SEND or C_RECV */
	struct stats st;
	char tls[128]; /* what the first handshake negotiated */
	char first_err[192];
	/* Setup: wall time, this thread's CPU time, handshakes done. */
	uint64_t setup_ns;
	uint64_t setup_cpu_ns;
	int setup_ready;
	uint64_t run_cpu_ns; /* this thread's CPU time after setup */
};

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
	stop_signal = sig;
}

static uint64_t
clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static uint64_t
now_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

/* ---- HTTP responses ---- */

static bool
header_is(const char *line, size_t len, const char *name, const char **val,
    size_t *vlen)
{
	size_t n = strlen(name);

	if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0)
		return false;
	line += n + 1;
	len -= n + 1;
	while (len > 0 && (*line == ' ' || *line == '\t')) {
		line++;
		len--;
	}
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	*val = line;
	*vlen = len;
	return true;
}

/* A comma-separated header value contains token (case-insensitive). */
static bool
has_token(const char *v, size_t len, const char *token)
{
	size_t n = strlen(token);

	while (len > 0) {
		const char *comma = memchr(v, ',', len);
		size_t item = comma != NULL ? (size_t)(comma - v) : len;
		const char *p = v;
		size_t l = item;

		while (l > 0 && (*p == ' ' || *p == '\t')) {
			p++;
			l--;
		}
		while (l > 0 && (p[l - 1] == ' ' || p[l - 1] == '\t'))
			l--;
		if (l == n && strncasecmp(p, token, n) == 0)
			return true;
		if (comma == NULL)
			break;
		v += item + 1;
		len -= item + 1;
	}
	return false;
}

/*
 * parse_head: the status line and the headers of a response in buf.
 * 1: done, *ret_need is the whole response's size; 0: the head is not
 * complete yet; -1: malformed or unsupported, why says what. Only what a
 * closed-loop client needs: no chunked encoding (keyward always sends
 * Content-Length), no body delimited by the end of the connection.
 */
static int
parse_head(const char *buf, size_t len, int *ret_status, size_t *ret_need,
    bool *ret_close, char *why, size_t whylen)
{
	const char *end, *p, *eol, *v;
	size_t vlen, head, clen = 0;
	bool have_clen = false, close = false, http10;
	int status;

	end = memmem(buf, len, "\r\n\r\n", 4);
	if (end == NULL) {
		if (len >= RESP_MAX) {
			snprintf(why, whylen, "response head over %d bytes",
			    RESP_MAX);
			return -1;
		}
		return 0;
	}
	head = (size_t)(end - buf) + 4;
	if (head < 14 ||
	    (memcmp(buf, "HTTP/1.1 ", 9) != 0 &&
	        memcmp(buf, "HTTP/1.0 ", 9) != 0) ||
	    buf[9] < '1' || buf[9] > '5' || buf[10] < '0' || buf[10] > '9' ||
	    buf[11] < '0' || buf[11] > '9' ||
	    (buf[12] != ' ' && buf[12] != '\r')) {
		snprintf(why, whylen, "malformed status line");
		return -1;
	}
	http10 = buf[7] == '0';
	status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	p = (const char *)memchr(buf, '\n', head) + 1;
	while (p < end + 2) {
		eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
		if (eol == NULL)
			break;
		if (header_is(p, (size_t)(eol - p), "content-length", &v,
		        &vlen)) {
			size_t n = 0;

			if (vlen == 0 || vlen > 9) {
				snprintf(why, whylen, "bad Content-Length");
				return -1;
			}
			for (size_t i = 0; i < vlen; i++) {
				if (v[i] < '0' || v[i] > '9') {
					snprintf(why, whylen,
					    "bad Content-Length");
					return -1;
				}
				n = n * 10 + (size_t)(v[i] - '0');
			}
			if (have_clen && n != clen) {
				snprintf(why, whylen,
				    "two different Content-Length headers");
				return -1;
			}
			clen = n;
			have_clen = true;
		} else if (header_is(p, (size_t)(eol - p), "transfer-encoding",
		               &v, &vlen)) {
			snprintf(why, whylen,
			    "Transfer-Encoding is not supported");
			return -1;
		} else if (header_is(p, (size_t)(eol - p), "connection", &v,
		               &vlen)) {
			if (has_token(v, vlen, "close"))
				close = true;
			else if (has_token(v, vlen, "keep-alive"))
				http10 = false;
		}
		p = eol + 2;
	}
	if (status < 200) {
		/* No Expect: 100-continue is ever sent. */
		snprintf(why, whylen, "unexpected status %d", status);
		return -1;
	}
	if (!have_clen && status != 204 && status != 304) {
		snprintf(why, whylen, "status %d without Content-Length",
		    status);
		return -1;
	}
	if (head + clen > RESP_MAX) {
		snprintf(why, whylen, "response over %d bytes", RESP_MAX);
		return -1;
	}
	*ret_status = status;
	*ret_need = head + clen;
	*ret_close = close || http10;
	return 1;
}

/* ---- statistics ---- */

static void
sample_add(struct stats *st, uint64_t lat)
{
	uint32_t v = lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat;

	st->seen++;
	st->lat_sum += lat;
	if (lat > st->lat_max)
		st->lat_max = lat;
	if (st->n == st->cap && st->cap < st->max) {
		size_t ncap = st->cap ? st->cap * 2 : (size_t)1 << 16;
		uint32_t *s;

		if (ncap > st->max)
			ncap = st->max;
		s = realloc(st->samples, ncap * sizeof *s);
		if (s != NULL) {
			st->samples = s;
			st->cap = ncap;
		} else {
			/* Keep what we have as the reservoir. */
			st->max = st->cap;
		}
	}
	if (st->n < st->cap) {
		st->samples[st->n++] = v;
	} else if (st->n > 0) {
		uint64_t j;

		/* Algorithm R: every sample seen so far is kept with the
		 * same probability n/seen. xorshift64 is plenty here. */
		st->rng ^= st->rng << 13;
		st->rng ^= st->rng >> 7;
		st->rng ^= st->rng << 17;
		j = st->rng % st->seen;
		if (j < st->n)
			st->samples[j] = v;
	}
}

/* Radix sort, two 16-bit passes: a few times faster than qsort on tens of
 * millions of samples. */
static int
sort_u32(uint32_t *a, size_t n)
{
	uint32_t *tmp = malloc(n * sizeof *tmp);
	size_t *cnt = malloc(65536 * sizeof *cnt);

	if (tmp == NULL || cnt == NULL) {
		free(tmp);
		free(cnt);
		return -1;
	}
	for (int shift = 0; shift < 32; shift += 16) {
		uint32_t *src = shift ? tmp : a, *dst = shift ? a : tmp;
		size_t sum = 0;

		memset(cnt, 0, 65536 * sizeof *cnt);
		for (size_t i = 0; i < n; i++)
			cnt[(src[i] >> shift) & 0xffff]++;
		for (size_t i = 0; i < 65536; i++) {
			size_t c = cnt[i];

			cnt[i] = sum;
			sum += c;
		}
		for (size_t i = 0; i < n; i++)
			dst[cnt[(src[i] >> shift) & 0xffff]++] = src[i];
	}
	free(tmp);
	free(cnt);
	return 0;
}

/* Nearest rank: the smallest sample with at least p of them at or below
 * it. */
static double
pct_us(const uint32_t *s, size_t n, double p)
{
	size_t rank = (size_t)ceil(p * (double)n);

	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)s[rank - 1] / 1e3;
}

/* ---- connections ---- */

static void
watch(struct conn *c, uint32_t ev)
{
	struct epoll_event e = {.events = ev, .data.ptr = c};

	if (c->events == ev)
		return;
	/* Cannot fail for a valid fd but with ENOMEM; then the timeout
	 * sweep ends the connection. */
	if (epoll_ctl(c->w->ep, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
	        c->fd, &e) == 0)
		c->events = ev;
}

/*
 * In flight: a request (C_SEND, C_RECV), or with --handshakes a whole
 * connection from connect() to the server's close.
 */
static bool
in_flight(const struct conn *c)
{
	if (c->w->run->o->handshakes)
		return c->st != C_CLOSED;
	return c->st == C_SEND || c->st == C_RECV;
}

static void
conn_close(struct conn *c, bool graceful)
{
	if (in_flight(c))
		c->w->inflight--;
	if (c->ssl != NULL) {
		/* One non-blocking close_notify, so that the server logs a
		 * clean end rather than a reset. */
		if (graceful)
			SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->events = 0;
	c->st = C_CLOSED;
	c->retry_at = 0;
	c->bye_sent = false;
	ERR_clear_error();
}

static void
ssl_reason(int sslerr, char *buf, size_t len)
{
	unsigned long e = ERR_peek_error();

	if (e != 0)
		ERR_error_string_n(e, buf, len);
	else if (sslerr == SSL_ERROR_SYSCALL && errno != 0)
		snprintf(buf, len, "%s", strerror(errno));
	else if (sslerr == SSL_ERROR_SYSCALL || sslerr == SSL_ERROR_ZERO_RETURN)
		snprintf(buf, len, "connection closed by the server");
	else
		snprintf(buf, len, "SSL error %d", sslerr);
}

static void conn_fail(struct conn *c, enum err_kind k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
conn_fail(struct conn *c, enum err_kind k, const char *fmt, ...)
{
	struct worker *w = c->w;
	va_list ap;

	w->st.err[k]++;
	if (w->first_err[0] == '\0') {
		int n = snprintf(w->first_err, sizeof w->first_err,
		    "%s: ", err_names[k]);

		va_start(ap, fmt);
		vsnprintf(w->first_err + n, sizeof w->first_err - (size_t)n,
		    fmt, ap);
		va_end(ap);
	}
	conn_close(c, false);
	c->retry_at = now_ns() + RETRY_NS;
}

static bool
running(const struct run *r, uint64_t now)
{
	return now >= r->t_start && now < r->t_end;
}

static void conn_handshake(struct conn *c);
static void request_start(struct conn *c, uint64_t now);
static void conn_closing(struct conn *c);

/* The connection's next request, if the run is on and, when paced
 * (--rate), its time has come. */
static void
next_request(struct conn *c, uint64_t now)
{
	if (running(c->w->run, now) && now >= c->next_at)
		request_start(c, now);
}

static void
conn_start(struct conn *c, uint64_t now)
{
	const struct opts *o = c->w->run->o;
	int one = 1;

	c->t0 = now;
	c->retry_at = 0;
	/* Before anything can fail: conn_close counts it out of flight. */
	c->st = C_CONNECTING;
	if (o->handshakes) {
		c->tc = now;
		c->w->inflight++;
	}
	c->fd = socket(o->addr.ss_family,
	    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		conn_fail(c, E_CONNECT, "socket: %s", strerror(errno));
		return;
	}
	/* Without it, Nagle holds the request written right after the
	 * handshake's Finished until the server's delayed ACK (~40 ms). */
	if (o->nodelay &&
	    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) !=
	        0) {
		conn_fail(c, E_CONNECT, "TCP_NODELAY: %s", strerror(errno));
		return;
	}
	if (connect(c->fd, (const struct sockaddr *)&o->addr, o->addrlen) ==
	    0) {
		c->st = C_HANDSHAKE;
		conn_handshake(c);
		return;
	}
	if (errno != EINPROGRESS) {
		conn_fail(c, E_CONNECT, "connect: %s", strerror(errno));
		return;
	}
	c->st = C_CONNECTING;
	watch(c, EPOLLOUT);
}

static void
conn_connected(struct conn *c)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = errno;
	if (err == EINPROGRESS)
		return;
	if (err != 0) {
		conn_fail(c, E_CONNECT, "connect: %s", strerror(err));
		return;
	}
	c->st = C_HANDSHAKE;
	conn_handshake(c);
}

static void
describe_tls(struct worker *w, SSL *ssl)
{
	int group = SSL_get_negotiated_group(ssl);
	const char *gname =
	    group > 0 ? OBJ_nid2sn(group & ~TLSEXT_nid_unknown) : NULL;

	snprintf(w->tls, sizeof w->tls, "%s %s %s", SSL_get_version(ssl),
	    SSL_get_cipher_name(ssl), gname != NULL ? gname : "?");
}

static void
conn_handshake(struct conn *c)
{
	struct worker *w = c->w;
	char why[160];
	int r, e;

	if (c->ssl == NULL) {
		c->ssl = SSL_new(c->tls);
		if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
			ssl_reason(SSL_ERROR_SSL, why, sizeof why);
			conn_fail(c, E_TLS, "SSL_new: %s", why);
			return;
		}
		SSL_set_connect_state(c->ssl);
	}
	ERR_clear_error();
	r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		uint64_t now = now_ns();

		w->st.handshakes++;
		if (w->tls[0] == '\0')
			describe_tls(w, c->ssl);
		c->st = C_READY;
		watch(c, EPOLLIN);
		if (!w->run->o->handshakes) {
			next_request(c, now);
		} else if (w->run->o->op != OP_NONE) {
			/* The connection's one request, even in the drain:
			 * it was started in the run. */
			request_start(c, now);
		} else {
			c->st = C_CLOSING;
			c->t0 = now;
			conn_closing(c);
		}
		return;
	}
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		watch(c, EPOLLIN);
	} else if (e == SSL_ERROR_WANT_WRITE) {
		watch(c, EPOLLOUT);
	} else {
		ssl_reason(e, why, sizeof why);
		conn_fail(c, E_TLS, "handshake: %s", why);
	}
}

/*
 * A ready connection that becomes readable: TLS 1.3 session tickets,
 * which SSL_read consumes, or the server closing it. Application data
 * here would be an answer to nothing.
 */
static void
conn_idle_read(struct conn *c)
{
	char why[160];
	int r, e;

	ERR_clear_error();
	r = SSL_read(c->ssl, c->buf, sizeof c->buf);
	if (r > 0) {
		conn_fail(c, E_HTTP, "%d bytes between responses", r);
		return;
	}
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		watch(c, EPOLLIN);
	} else if (e == SSL_ERROR_WANT_WRITE) {
		watch(c, EPOLLOUT);
	} else {
		ssl_reason(e, why, sizeof why);
		conn_fail(c, E_IO, "idle connection: %s", why);
	}
}

static void
conn_send(struct conn *c)
{
	const struct run *r = c->w->run;
	char why[160];
	int n, e;

	/* No SSL_MODE_ENABLE_PARTIAL_WRITE: the request goes out whole or
	 * not at all, and a retry repeats the same call, as OpenSSL
	 * requires. */
	ERR_clear_error();
	n = SSL_write(c->ssl, r->req, (int)r->req_len);
	if (n > 0) {
		c->st = C_RECV;
		watch(c, EPOLLIN);
		return;
	}
	e = SSL_get_error(c->ssl, n);
	if (e == SSL_ERROR_WANT_WRITE) {
		watch(c, EPOLLOUT);
	} else if (e == SSL_ERROR_WANT_READ) {
		watch(c, EPOLLIN);
	} else {
		ssl_reason(e, why, sizeof why);
		conn_fail(c, E_IO, "sending a request: %s", why);
	}
}

static void
request_start(struct conn *c, uint64_t now)
{
	c->t0 = now;
	c->len = 0;
	c->need = 0;
	c->st = C_SEND;
	if (!c->w->run->o->handshakes)
		c->w->inflight++;
	conn_send(c);
}

/*
 * --handshakes: the connection is done when the server has closed it
 * (its close_notify, or the end of the stream). It counts as one
 * connection if it started inside the window, and as one completed in the
 * window if it ended there with a 2xx answer (--op none: no answer).
 */
static void
cycle_done(struct conn *c)
{
	struct worker *w = c->w;
	const struct run *r = w->run;
	uint64_t now = now_ns();
	bool ok = r->o->op == OP_NONE || (c->status >= 200 && c->status <= 299);

	if (ok && now >= r->t_measure && now <= r->t_end)
		w->st.ok_window++;
	if (c->tc >= r->t_measure && c->tc < r->t_end) {
		w->st.answered++;
		sample_add(&w->st, now - c->tc);
	}
	conn_close(c, false);
	if (running(r, now))
		conn_start(c, now);
}

/*
 * --handshakes, C_CLOSING: with --op none, our close_notify first (right
 * after the handshake, so that the server reads it and closes); then read
 * until the server closes. Session tickets are read and dropped; any
 * application data is an error, as it answers nothing.
 */
static void
conn_closing(struct conn *c)
{
	char why[160];
	int r, e;

	if (c->w->run->o->op == OP_NONE && !c->bye_sent) {
		ERR_clear_error();
		r = SSL_shutdown(c->ssl);
		if (r < 0) {
			e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_WANT_WRITE) {
				watch(c, EPOLLOUT);
				return;
			}
			if (e != SSL_ERROR_WANT_READ) {
				ssl_reason(e, why, sizeof why);
				conn_fail(c, E_IO, "sending close_notify: %s",
				    why);
				return;
			}
		}
		c->bye_sent = true;
	}
	for (;;) {
		ERR_clear_error();
		r = SSL_read(c->ssl, c->buf, sizeof c->buf);
		if (r > 0) {
			conn_fail(c, E_HTTP, "%d bytes before the close", r);
			return;
		}
		e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_ZERO_RETURN) {
			cycle_done(c);
			return;
		}
		if (e == SSL_ERROR_WANT_READ) {
			watch(c, EPOLLIN);
		} else if (e == SSL_ERROR_WANT_WRITE) {
			watch(c, EPOLLOUT);
		} else {
			ssl_reason(e, why, sizeof why);
			conn_fail(c, E_IO,
			    "waiting for the server to close: %s", why);
		}
		return;
	}
}

static void
response_done(struct conn *c)
{
	struct worker *w = c->w;
	const struct run *r = w->run;
	uint64_t now = now_ns();

	if (!r->o->handshakes && c->status >= 200 && c->status <= 299 &&
	    now >= r->t_measure && now <= r->t_end)
		w->st.ok_window++;
	w->st.answered_run++;
	if (r->o->handshakes) {
		/* The connection's one answer: now its end. */
		if (c->tc >= r->t_measure && c->tc < r->t_end)
			w->st.status[c->status]++;
		c->st = C_CLOSING;
		c->t0 = now;
		conn_closing(c);
		return;
	}
	if (c->t0 >= r->t_measure && c->t0 < r->t_end) {
		w->st.answered++;
		w->st.status[c->status]++;
		sample_add(&w->st, now - c->t0);
	}
	w->inflight--;
	c->st = C_READY;
	if (r->interval_ns != 0) {
		/* Paced: one interval after this request's due time, or now
		 * if that has passed already (no burst to catch up). */
		c->next_at += r->interval_ns;
		if (c->next_at < now)
			c->next_at = now;
	}
	if (c->close_after) {
		/* The server chose to close: not a failure, but the next
		 * request pays a handshake. */
		conn_close(c, true);
		if (running(r, now)) {
			w->st.reconnects++;
			conn_start(c, now);
		}
	} else {
		next_request(c, now);
	}
}

static void
conn_recv(struct conn *c)
{
	char why[160];
	int n, e;

	for (;;) {
		if (c->len == sizeof c->buf) {
			conn_fail(c, E_HTTP, "response over %d bytes",
			    RESP_MAX);
			return;
		}
		ERR_clear_error();
		n = SSL_read(c->ssl, c->buf + c->len,
		    (int)(sizeof c->buf - c->len));
		if (n <= 0) {
			e = SSL_get_error(c->ssl, n);
			if (e == SSL_ERROR_WANT_READ) {
				watch(c, EPOLLIN);
			} else if (e == SSL_ERROR_WANT_WRITE) {
				watch(c, EPOLLOUT);
			} else {
				ssl_reason(e, why, sizeof why);
				conn_fail(c, E_IO, "%s: %s",
				    c->len ? "in the middle of a response"
				           : "waiting for a response",
				    why);
			}
			return;
		}
		c->len += (size_t)n;
		if (c->need == 0) {
			int rv = parse_head(c->buf, c->len, &c->status,
			    &c->need, &c->close_after, why, sizeof why);

			if (rv < 0) {
				conn_fail(c, E_HTTP, "%s", why);
				return;
			}
			if (rv == 0)
				continue;
		}
		if (c->len < c->need)
			continue;
		if (c->len > c->need) {
			/* Nothing was pipelined: these answer nothing. */
			conn_fail(c, E_HTTP, "bytes after a response");
			return;
		}
		response_done(c);
		return;
	}
}

static void
conn_event(struct conn *c)
{
	switch (c->st) {
	case C_CONNECTING:
		conn_connected(c);
		break;
	case C_HANDSHAKE:
		conn_handshake(c);
		break;
	case C_READY:
		conn_idle_read(c);
		break;
	case C_SEND:
		conn_send(c);
		break;
	case C_RECV:
		conn_recv(c);
		break;
	case C_CLOSING:
		conn_closing(c);
		break;
	case C_CLOSED:
		break;
	}
}

/* Timeouts and reconnections, every SWEEP_NS: a scan of the worker's
 * connections costs less than keeping a timer per request. */
static void
sweep(struct worker *w, uint64_t now)
{
	const struct run *r = w->run;

	for (int i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];
		bool late = now > c->t0 && now - c->t0 > r->timeout_ns;

		switch (c->st) {
		case C_CONNECTING:
			if (late)
				conn_fail(c, E_CONNECT, "connect timed out");
			break;
		case C_HANDSHAKE:
			if (late)
				conn_fail(c, E_TLS, "handshake timed out");
			break;
		case C_SEND:
		case C_RECV:
			if (late)
				conn_fail(c, E_TIMEOUT,
				    "no complete response within %d ms",
				    r->o->timeout_ms);
			break;
		case C_CLOSED:
			if (c->retry_at != 0 && now >= c->retry_at &&
			    running(r, now)) {
				w->st.reconnects++;
				conn_start(c, now);
			}
			break;
		case C_CLOSING:
			if (late)
				conn_fail(c, E_TIMEOUT,
				    "the server did not close within %d ms",
				    r->o->timeout_ms);
			break;
		case C_READY:
			next_request(c, now);
			break;
		}
	}
}

static void
poll_once(struct worker *w, int timeout_ms)
{
	struct epoll_event ev[EVENTS];
	int n;

	n = epoll_wait(w->ep, ev, EVENTS, timeout_ms);
	for (int i = 0; i < n; i++)
		conn_event(ev[i].data.ptr);
}

/*
 * Setup: connect everything and wait until every connection is ready or
 * has failed (a failed one retries once the run starts). At most
 * SETUP_BATCH handshakes are under way at once: a thousand at the same
 * instant would queue in the server for longer than the timeout, and a
 * connection's timeout counts from its own start.
 */
static void
worker_setup(struct worker *w)
{
	uint64_t now = now_ns(), last = now, t0 = now;
	uint64_t cpu0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	int ready = 0, next = 0;

	while (stop_signal == 0) {
		int pending = 0;

		for (int i = 0; i < next; i++)
			if (w->conns[i].st == C_CONNECTING ||
			    w->conns[i].st == C_HANDSHAKE)
				pending++;
		if (pending == 0 && next == w->nconns)
			break;
		now = now_ns();
		for (; pending < SETUP_BATCH && next < w->nconns; pending++)
			conn_start(&w->conns[next++], now);
		poll_once(w, 10);
		now = now_ns();
		if (now - last >= SWEEP_NS) {
			sweep(w, now);
			last = now;
		}
	}
	/* The client's share of a full handshake: OpenSSL's key exchange,
	 * its check of the server's chain and its CertificateVerify. */
	w->setup_cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
	w->setup_ns = now_ns() - t0;
	for (int i = 0; i < w->nconns; i++)
		if (w->conns[i].st == C_READY)
			ready++;
	w->setup_ready = ready;
	atomic_fetch_add(&w->run->ready, ready);
}

/*
 * With --rate: start the requests that are due, and shorten the wait to
 * the next one due (epoll_wait counts in milliseconds: a request may go
 * out up to 1 ms late, which its latency does not include).
 */
static int
pace(struct worker *w, uint64_t now, int wait_ms)
{
	for (int i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];
		uint64_t ms;

		if (c->st != C_READY)
			continue;
		next_request(c, now);
		if (c->st != C_READY || c->next_at <= now)
			continue;
		ms = (c->next_at - now + NS_PER_MS - 1) / NS_PER_MS;
		if (ms < (uint64_t)wait_ms)
			wait_ms = (int)ms;
	}
	return wait_ms;
}

static void
worker_run(struct worker *w)
{
	struct run *r = w->run;
	uint64_t now = now_ns(), last = now;
	bool ended = false;

	for (int i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];

		/* Paced connections start spread over one interval. */
		if (r->interval_ns != 0)
			c->next_at = r->t_start +
			    r->interval_ns * (uint64_t)c->idx /
			        (uint64_t)r->o->conns;
		if (r->o->handshakes)
			conn_start(c, now);
		else if (c->st == C_READY)
			next_request(c, now);
	}
	while (stop_signal == 0) {
		int wait_ms = (int)(SWEEP_NS / NS_PER_MS);

		now = now_ns();
		if (!ended && now >= r->t_end) {
			/* The drain: only requests (or, with --handshakes,
			 * connections) in flight remain. */
			ended = true;
			for (int i = 0; i < w->nconns; i++)
				if (!in_flight(&w->conns[i]))
					conn_close(&w->conns[i], true);
		}
		if (ended && w->inflight == 0)
			break;
		if (!ended && r->t_end - now < SWEEP_NS)
			wait_ms = (int)((r->t_end - now) / NS_PER_MS) + 1;
		if (r->interval_ns != 0 && !ended)
			wait_ms = pace(w, now, wait_ms);
		poll_once(w, wait_ms);
		now = now_ns();
		if (now - last >= SWEEP_NS) {
			sweep(w, now);
			last = now;
		}
	}
	for (int i = 0; i < w->nconns; i++)
		if (w->conns[i].st != C_CLOSED)
			conn_close(&w->conns[i], true);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct run *r = w->run;
	uint64_t cpu0;

	/* --handshakes: no connection is made before the run. */
	if (r->o->handshakes)
		atomic_fetch_add(&r->ready, w->nconns);
	else
		worker_setup(w);
	if (pthread_barrier_wait(&r->barrier) ==
	    PTHREAD_BARRIER_SERIAL_THREAD) {
		uint64_t now = now_ns();

		r->abort = atomic_load(&r->ready) == 0;
		r->t_start = now;
		r->t_measure = now + (uint64_t)(r->o->warmup * 1e9);
		r->t_end = r->t_measure + (uint64_t)(r->o->secs * 1e9);
	}
	pthread_barrier_wait(&r->barrier);
	cpu0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	if (!r->abort && stop_signal == 0)
		worker_run(w);
	w->run_cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
	for (int i = 0; i < w->nconns; i++)
		if (w->conns[i].st != C_CLOSED)
			conn_close(&w->conns[i], false);
	return NULL;
}

/* ---- the preflight: one blocking request on its own connection ---- */

static int
blocking_request(const struct run *r, const char *req, size_t req_len,
    int *ret_status, char **ret_body, char *why, size_t whylen)
{
	const struct opts *o = r->o;
	struct timeval tv = {o->timeout_ms / 1000,
	    (o->timeout_ms % 1000) * 1000};
	char *buf = NULL, *body;
	size_t len = 0, need = 0;
	SSL *ssl = NULL;
	bool close_after;
	int fd, n, status = 0, rv = -1;

	fd = socket(o->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, whylen, "socket: %s", strerror(errno));
		return -1;
	}
	/* A blocking socket whose connect, reads and writes time out. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0 ||
	    connect(fd, (const struct sockaddr *)&o->addr, o->addrlen) != 0) {
		snprintf(why, whylen, "connect: %s", strerror(errno));
		goto out;
	}
	ERR_clear_error();
	ssl = SSL_new(r->tls[0]);
	if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
		ssl_reason(SSL_ERROR_SSL, why, whylen);
		goto out;
	}
	n = SSL_connect(ssl);
	if (n != 1) {
		ssl_reason(SSL_get_error(ssl, n), why, whylen);
		goto out;
	}
	n = SSL_write(ssl, req, (int)req_len);
	if (n != (int)req_len) {
		ssl_reason(SSL_get_error(ssl, n), why, whylen);
		goto out;
	}
	buf = malloc(RESP_MAX + 1);
	if (buf == NULL) {
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	while (need == 0 || len < need) {
		if (len == RESP_MAX) {
			snprintf(why, whylen, "response over %d bytes",
			    RESP_MAX);
			goto out;
		}
		n = SSL_read(ssl, buf + len, (int)(RESP_MAX - len));
		if (n <= 0) {
			ssl_reason(SSL_get_error(ssl, n), why, whylen);
			goto out;
		}
		len += (size_t)n;
		if (need == 0 &&
		    parse_head(buf, len, &status, &need, &close_after, why,
		        whylen) < 0)
			goto out;
	}
	if (len != need) {
		snprintf(why, whylen, "bytes after the response");
		goto out;
	}
	body = memmem(buf, len, "\r\n\r\n", 4) + 4;
	memmove(buf, body, (size_t)(buf + len - body));
	buf[buf + len - body] = '\0';
	*ret_status = status;
	*ret_body = buf;
	buf = NULL;
	rv = 0;
out:
	if (ssl != NULL) {
		SSL_shutdown(ssl);
		SSL_free(ssl);
	}
	close(fd);
	free(buf);
	ERR_clear_error();
	return rv;
}

static char *
build_request(const struct opts *o, const char *path, const char *body,
    size_t *ret_len)
{
	/* --handshakes: one request per connection, which the server then
	 * closes (RFC 9112 section 9.6). */
	const char *conn = o->handshakes ? "Connection: close\r\n" : "";
	char *req = malloc(REQ_MAX);
	int n;

	if (req == NULL)
		return NULL;
	if (body == NULL)
		n = snprintf(req, REQ_MAX,
		    "GET %s HTTP/1.1\r\nHost: %s\r\n"
		    "User-Agent: keyward-loadgen\r\n%s"
		    "Accept: application/json\r\n\r\n",
		    path, o->hosthdr, conn);
	else
		n = snprintf(req, REQ_MAX,
		    "POST %s HTTP/1.1\r\nHost: %s\r\n"
		    "User-Agent: keyward-loadgen\r\n%s"
		    "Accept: application/json\r\n"
		    "Content-Type: application/json\r\n"
		    "Content-Length: %zu\r\n\r\n%s",
		    path, o->hosthdr, conn, strlen(body), body);
	if (n < 0 || n >= REQ_MAX) {
		free(req);
		return NULL;
	}
	*ret_len = (size_t)n;
	return req;
}

/* The body of a datakey or decrypt: {"wrapped"?, "context"}. */
static char *
build_body(const struct opts *o, const char *wrapped)
{
	json_t *root = json_object(), *ctx = json_object();
	char *s = NULL;

	if (root == NULL || ctx == NULL)
		goto out;
	for (int i = 0; i < o->nctx; i++)
		if (json_object_set_new(ctx, o->ctx_k[i],
		        json_string(o->ctx_v[i])) != 0)
			goto out;
	if (wrapped != NULL &&
	    json_object_set_new(root, "wrapped", json_string(wrapped)) != 0)
		goto out;
	if (json_object_set(root, "context", ctx) != 0)
		goto out;
	s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
out:
	json_decref(ctx);
	json_decref(root);
	return s;
}

/* The body of a token request: {"audience", "scope", "ttl"?}. */
static char *
build_token_body(const struct opts *o)
{
	json_t *root = json_object(), *sc = json_array();
	char *s = NULL;

	if (root == NULL || sc == NULL)
		goto out;
	for (int i = 0; i < o->nscope; i++)
		if (json_array_append_new(sc, json_string(o->scope[i])) != 0)
			goto out;
	if (json_object_set_new(root, "audience", json_string(o->audience)) !=
	        0 ||
	    json_object_set(root, "scope", sc) != 0 ||
	    (o->ttl > 0 &&
	        json_object_set_new(root, "ttl", json_integer(o->ttl)) != 0))
		goto out;
	s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
out:
	json_decref(sc);
	json_decref(root);
	return s;
}

static bool
b64url_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/*
 * jws_ok: t looks like a token keyward issues (docs/TOKENS.md): three
 * non-empty base64url parts, a header that decodes to a JSON object with
 * "alg" "ES256" and a "kid", and a 64-byte signature (86 characters). The
 * signature is not verified: the preflight only makes sure that the
 * server answers with the work being measured.
 */
static bool
jws_ok(const char *t, char *why, size_t whylen)
{
	const char *dot1 = strchr(t, '.'), *dot2, *alg;
	unsigned char hdr[JWS_HEADER_MAX + 3];
	char b64[(JWS_HEADER_MAX + 2) / 3 * 4 + 4];
	size_t hlen, n;
	json_t *j;
	int dec;
	bool ok;

	dot2 = dot1 != NULL ? strchr(dot1 + 1, '.') : NULL;
	if (dot1 == NULL || dot2 == NULL || strchr(dot2 + 1, '.') != NULL ||
	    dot1 == t || dot2 == dot1 + 1) {
		snprintf(why, whylen, "not three parts separated by dots");
		return false;
	}
	for (const char *p = t; *p != '\0'; p++)
		if (*p != '.' && !b64url_char(*p)) {
			snprintf(why, whylen, "a character outside base64url");
			return false;
		}
	if (strlen(dot2 + 1) != JWS_SIG_B64) {
		snprintf(why, whylen, "the signature is not %d characters",
		    JWS_SIG_B64);
		return false;
	}
	/* base64url to base64 with padding, for EVP_DecodeBlock. */
	hlen = (size_t)(dot1 - t);
	if (hlen % 4 == 1 || hlen > sizeof b64 - 4) {
		snprintf(why, whylen,
		    "the header is not base64url of at "
		    "most 256 bytes");
		return false;
	}
	for (n = 0; n < hlen; n++)
		b64[n] = t[n] == '-' ? '+' : t[n] == '_' ? '/' : t[n];
	while (n % 4 != 0)
		b64[n++] = '=';
	dec = EVP_DecodeBlock(hdr, (const unsigned char *)b64, (int)n);
	if (dec < 0) {
		snprintf(why, whylen, "the header is not base64url");
		return false;
	}
	/* EVP_DecodeBlock counts the padding's zero bytes too. */
	dec -= (int)(n - hlen);
	hdr[dec] = '\0';
	j = json_loadb((const char *)hdr, (size_t)dec, 0, NULL);
	alg = json_string_value(json_object_get(j, "alg"));
	ok = alg != NULL && strcmp(alg, "ES256") == 0 &&
	    json_string_value(json_object_get(j, "kid")) != NULL;
	json_decref(j);
	if (!ok)
		snprintf(why, whylen,
		    "the header is not ES256 with a kid: %.100s",
		    (const char *)hdr);
	return ok;
}

static void
print_body(const char *what, int status, const char *body)
{
	fprintf(stderr, PROG ": preflight %s answered %d: %.300s\n", what,
	    status, body);
}

/*
 * Prepare the request every connection sends, and check once that the
 * server answers it with 2xx. For decrypt: a datakey first, whose wrapped
 * key all the decrypts then unwrap, and whose plaintext the preflight
 * decrypt must give back (a server that answers 200 with the wrong key is
 * not being measured).
 */
static int
prepare(struct run *r)
{
	const struct opts *o = r->o;
	char path[128], why[192], *body = NULL, *resp = NULL, *req = NULL;
	char *wrapped = NULL, *plain = NULL;
	/* --op none sends nothing: its preflight is a health request. */
	const char *first = o->op == OP_HEALTH || o->op == OP_NONE ? "health"
	    : o->op == OP_TOKEN                                    ? "token"
	                                                           : "datakey";
	json_t *j = NULL;
	json_error_t jerr;
	size_t len;
	int status, rv = -1;

	if (o->op == OP_HEALTH || o->op == OP_NONE) {
		snprintf(path, sizeof path, "/v1/health");
	} else if (o->op == OP_TOKEN) {
		snprintf(path, sizeof path, "/v1/tokens");
		body = build_token_body(o);
		if (body == NULL)
			goto oom;
	} else {
		snprintf(path, sizeof path, "/v1/keys/%s/datakey", o->keyname);
		body = build_body(o, NULL);
		if (body == NULL)
			goto oom;
	}
	req = build_request(o, path, body, &len);
	if (req == NULL)
		goto oom;
	if (blocking_request(r, req, len, &status, &resp, why, sizeof why) !=
	    0) {
		fprintf(stderr, PROG ": preflight %s: %s\n", first, why);
		goto out;
	}
	if (status < 200 || status > 299) {
		print_body(first, status, resp);
		goto out;
	}
	if (o->op == OP_TOKEN) {
		const char *t;

		j = json_loads(resp, 0, &jerr);
		t = json_string_value(json_object_get(j, "token"));
		if (t == NULL || !jws_ok(t, why, sizeof why)) {
			fprintf(stderr,
			    PROG ": the preflight token answer has no token "
			         "that looks like a compact JWS (%s)\n",
			    t == NULL ? "no \"token\" string" : why);
			goto out;
		}
	}
	if (o->op == OP_DECRYPT) {
		const char *w, *p;

		/* Both NULL-safe: no object, no member, or not a string. */
		j = json_loads(resp, 0, &jerr);
		w = json_string_value(json_object_get(j, "wrapped"));
		p = json_string_value(json_object_get(j, "plaintext"));
		if (w == NULL || p == NULL) {
			fprintf(stderr,
			    PROG ": the datakey answer has no \"wrapped\" "
			         "or \"plaintext\" string: %.300s\n",
			    resp);
			goto out;
		}
		wrapped = strdup(w);
		plain = strdup(p);
		json_decref(j);
		j = NULL;
		free(body);
		free(req);
		free(resp);
		body = req = resp = NULL;
		if (wrapped == NULL || plain == NULL)
			goto oom;
		snprintf(path, sizeof path, "/v1/keys/%s/decrypt", o->keyname);
		body = build_body(o, wrapped);
		if (body == NULL)
			goto oom;
		req = build_request(o, path, body, &len);
		if (req == NULL)
			goto oom;
		if (blocking_request(r, req, len, &status, &resp, why,
		        sizeof why) != 0) {
			fprintf(stderr, PROG ": preflight decrypt: %s\n", why);
			goto out;
		}
		if (status < 200 || status > 299) {
			print_body("decrypt", status, resp);
			goto out;
		}
		j = json_loads(resp, 0, &jerr);
		p = json_string_value(json_object_get(j, "plaintext"));
		if (p == NULL || strcmp(p, plain) != 0) {
			fprintf(stderr,
			    PROG ": the preflight decrypt did not return "
			         "the datakey's plaintext\n");
			goto out;
		}
	}
	if (o->op != OP_NONE) {
		r->req = req;
		r->req_len = len;
		req = NULL;
	}
	rv = 0;
	goto out;
oom:
	fprintf(stderr, PROG ": out of memory, or a request over %d bytes\n",
	    REQ_MAX);
out:
	json_decref(j);
	/* The preflight saw a data key: not worth keeping around. */
	if (plain != NULL)
		OPENSSL_cleanse(plain, strlen(plain));
	if (resp != NULL)
		OPENSSL_cleanse(resp, strlen(resp));
	free(plain);
	free(wrapped);
	free(resp);
	free(body);
	free(req);
	return rv;
}

/* ---- TLS ---- */

static SSL_CTX *
make_ctx(const struct opts *o, const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char why[256];
	X509_VERIFY_PARAM *vp;

	if (ctx == NULL)
		goto fail;
	/* keyward speaks TLS 1.3 only. */
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1)
		goto fail;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		fprintf(stderr, PROG ": cannot use certificate %s\n", cert);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		fprintf(stderr, PROG ": cannot use key %s with %s\n", key,
		    cert);
		goto fail;
	}
	if (SSL_CTX_load_verify_locations(ctx, o->cacert, NULL) != 1) {
		fprintf(stderr, PROG ": cannot load CA %s\n", o->cacert);
		goto fail;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	vp = SSL_CTX_get0_param(ctx);
	if ((o->localhost ? X509_VERIFY_PARAM_set1_host(vp, "localhost", 0)
	                  : X509_VERIFY_PARAM_set1_ip_asc(vp, o->host)) != 1)
		goto fail;
	/* Every connection makes a full handshake: a resumed session
	 * would make setup, not the figures, cheaper, and reconnections
	 * must cost what a new client costs. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	/* --handshakes waits for the server's close: libmicrohttpd may end
	 * the stream without a close_notify after "Connection: close", and
	 * that is the end of a connection here, not a truncation. */
	if (o->handshakes)
		SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	return ctx;
fail:
	ERR_error_string_n(ERR_get_error(), why, sizeof why);
	fprintf(stderr, PROG ": TLS setup: %s\n", why);
	SSL_CTX_free(ctx);
	return NULL;
}

/* ---- options ---- */

/*
 * https://HOST[:PORT][/], HOST a loopback literal (127.0.0.0/8, [::1]) or
 * "localhost". Nothing is resolved, so nothing but this machine can be
 * named.
 */
static int
parse_url(struct opts *o)
{
	const char *p = o->url, *hend, *port = NULL;
	char host[INET6_ADDRSTRLEN];
	unsigned long pn = 443;
	size_t hlen;
	bool v6 = false;

	if (strncmp(p, "https://", 8) != 0) {
		fprintf(stderr, PROG ": --url must start with https://\n");
		return -1;
	}
	p += 8;
	if (*p == '[') {
		v6 = true;
		hend = strchr(++p, ']');
		if (hend == NULL)
			goto bad;
		port = hend[1] == ':' ? hend + 2 : NULL;
		if (hend[1] != ':' && hend[1] != '\0' && hend[1] != '/')
			goto bad;
	} else {
		hend = p + strcspn(p, ":/");
		port = *hend == ':' ? hend + 1 : NULL;
	}
	hlen = (size_t)(hend - p);
	if (hlen == 0 || hlen >= sizeof host)
		goto bad;
	memcpy(host, p, hlen);
	host[hlen] = '\0';
	if (port != NULL) {
		char *end;

		errno = 0;
		pn = strtoul(port, &end, 10);
		if (errno || end == port || pn < 1 || pn > 65535 ||
		    (*end != '\0' && strcmp(end, "/") != 0))
			goto bad;
	} else if (hend[v6] != '\0' && strcmp(hend + v6, "/") != 0) {
		goto bad;
	}
	if (!v6 && strcmp(host, "localhost") == 0) {
		o->localhost = true;
		snprintf(host, sizeof host, "127.0.0.1");
	}
	memset(&o->addr, 0, sizeof o->addr);
	if (!v6) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&o->addr;

		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			goto notlocal;
		if ((ntohl(sin->sin_addr.s_addr) >> 24) != 127)
			goto notlocal;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)pn);
		o->addrlen = sizeof *sin;
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&o->addr;

		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1 ||
		    !IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
			goto notlocal;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)pn);
		o->addrlen = sizeof *sin6;
	}
	snprintf(o->host, sizeof o->host, "%s", host);
	snprintf(o->hosthdr, sizeof o->hosthdr, v6 ? "[%s]:%lu" : "%s:%lu",
	    o->localhost ? "localhost" : host, pn);
	return 0;
bad:
	fprintf(stderr, PROG ": cannot parse --url %s (https://HOST:PORT)\n",
	    o->url);
	return -1;
notlocal:
	fprintf(stderr,
	    PROG ": %s is not a loopback address: this tool only "
	         "load-tests the machine it runs on (127.0.0.0/8, [::1], "
	         "localhost)\n",
	    host);
	return -1;
}

static bool
keyname_ok(const char *s)
{
	size_t n = strlen(s);

	/* Goes into the path unescaped: keyward's name characters only. */
	if (n == 0 || n > KEYNAME_MAX)
		return false;
	return strspn(s,
	           "abcdefghijklmnopqrstuvwxyz"
	           "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* A token's audience: 1..AUDIENCE_MAX printable ASCII characters. */
static bool
audience_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > AUDIENCE_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

/* A scope as keywardd accepts it in a request (no '*'). */
static bool
scope_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > SCOPE_MAX)
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789._:/-") == n;
}

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "Usage: " PROG " --url https://127.0.0.1:PORT --cert CERT "
	    "--key KEY --cacert CA\n"
	    "       [-c CONNS] [-d SECONDS] [-w SECONDS] [-t THREADS]\n"
	    "       [--op datakey|decrypt|token|health|none] [--key-name NAME] "
	    "[--context K=V]...\n"
	    "       [--audience A] [--scope S]... [--ttl S] [--handshakes]\n"
	    "       [--rate R] [--timeout MS] [--max-samples N] [--no-nodelay] "
	    "[--json]\n"
	    "\n"
	    "Closed-loop load over CONNS keep-alive mTLS connections "
	    "(TLS 1.3) to\n"
	    "keyward's HTTP API on this machine (loopback only).\n"
	    "\n"
	    "  --url URL            https://HOST[:PORT], HOST 127.x.x.x, "
	    "[::1] or localhost\n"
	    "  --cert, --key FILE   client certificate (chain) and key, "
	    "PEM; repeat\n"
	    "                       both for several identities "
	    "(connection i uses\n"
	    "                       pair i mod N; at most %d)\n"
	    "  --cacert FILE        CA that the server's certificate "
	    "chains to\n"
	    "  -c, --connections N  connections (default 64, at most %d)\n"
	    "  -d, --duration S     measured seconds (default 10)\n"
	    "  -w, --warmup S       unrecorded seconds first (default 0)\n"
	    "  -t, --threads N      threads (default 1, at most %d)\n"
	    "  --op OP              datakey (default), decrypt (of one "
	    "wrapped key\n"
	    "                       from a datakey), token (POST "
	    "/v1/tokens), health\n"
	    "                       (GET /v1/health), none (with "
	    "--handshakes: no\n"
	    "                       request, the handshake alone)\n"
	    "  --key-name NAME      the key (default datasets)\n"
	    "  --context K=V        an encryption context pair, "
	    "repeatable\n"
	    "                       (default dataset=imagenet-1k)\n"
	    "  --audience A         a token's audience (default "
	    "inference-gw)\n"
	    "  --scope S            a token's scope, repeatable (default\n"
	    "                       model:llama-70b:infer)\n"
	    "  --ttl S              a token's lifetime (default: none "
	    "asked, the\n"
	    "                       grant's max_ttl)\n"
	    "  --handshakes         a new connection per request: connect, "
	    "full\n"
	    "                       handshake, one request with "
	    "Connection: close\n"
	    "                       (or none), the server's close; "
	    "counts connections/s\n"
	    "  --rate R             pace the requests at R/s in all (each "
	    "connection\n"
	    "                       still has one at a time): latency "
	    "at a load\n"
	    "                       below capacity (default: closed loop, "
	    "flat out)\n"
	    "  --timeout MS         per request, connect and handshake "
	    "(default %d,\n"
	    "                       at most %d)\n"
	    "  --max-samples N      latency samples kept; past it a uniform "
	    "sample\n"
	    "                       (default %zu)\n"
	    "  --no-nodelay         leave Nagle's algorithm on (to see "
	    "what it costs)\n"
	    "  --json               the figures as one JSON document\n"
	    "\n"
	    "Exit status: 0 every request answered 2xx; 1 some failed or "
	    "were not 2xx\n"
	    "(figures printed); 2 usage; 3 could not run; 128+N signal N.\n",
	    MAX_IDS, MAX_CONNS, MAX_THREADS, DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS,
	    DEFAULT_MAX_SAMPLES);
}

static int
parse_double(const char *s, double lo, double hi, double *ret)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	/* The negated test also refuses NaN. */
	if (errno || end == s || *end || !(v >= lo && v <= hi))
		return -1;
	*ret = v;
	return 0;
}

static int
parse_long(const char *s, long lo, long hi, long *ret)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*ret = v;
	return 0;
}

enum {
	O_URL = 256,
	O_CERT,
	O_KEY,
	O_CACERT,
	O_OP,
	O_KEYNAME,
	O_CONTEXT,
	O_TIMEOUT,
	O_RATE,
	O_SAMPLES,
	O_NONODELAY,
	O_JSON,
	O_AUDIENCE,
	O_SCOPE,
	O_TTL,
	O_HANDSHAKES,
};

static int
parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lopts[] = {
	    {"url", required_argument, NULL, O_URL},
	    {"cert", required_argument, NULL, O_CERT},
	    {"key", required_argument, NULL, O_KEY},
	    {"cacert", required_argument, NULL, O_CACERT},
	    {"connections", required_argument, NULL, 'c'},
	    {"duration", required_argument, NULL, 'd'},
	    {"warmup", required_argument, NULL, 'w'},
	    {"threads", required_argument, NULL, 't'},
	    {"op", required_argument, NULL, O_OP},
	    {"key-name", required_argument, NULL, O_KEYNAME},
	    {"context", required_argument, NULL, O_CONTEXT},
	    {"timeout", required_argument, NULL, O_TIMEOUT},
	    {"rate", required_argument, NULL, O_RATE},
	    {"max-samples", required_argument, NULL, O_SAMPLES},
	    {"no-nodelay", no_argument, NULL, O_NONODELAY},
	    {"json", no_argument, NULL, O_JSON},
	    {"audience", required_argument, NULL, O_AUDIENCE},
	    {"scope", required_argument, NULL, O_SCOPE},
	    {"ttl", required_argument, NULL, O_TTL},
	    {"handshakes", no_argument, NULL, O_HANDSHAKES},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	long l;
	int c;

	while ((c = getopt_long(argc, argv, "c:d:w:t:h", lopts, NULL)) != -1) {
		switch (c) {
		case O_URL:
			o->url = optarg;
			break;
		case O_CERT:
		case O_KEY:
			if ((c == O_CERT ? o->ncert : o->nkey) == MAX_IDS) {
				fprintf(stderr,
				    PROG ": at most %d --cert and --key\n",
				    MAX_IDS);
				return -1;
			}
			if (c == O_CERT)
				o->cert[o->ncert++] = optarg;
			else
				o->key[o->nkey++] = optarg;
			break;
		case O_CACERT:
			o->cacert = optarg;
			break;
		case 'c':
			if (parse_long(optarg, 1, MAX_CONNS, &l) != 0) {
				fprintf(stderr,
				    PROG ": -c wants 1..%d connections\n",
				    MAX_CONNS);
				return -1;
			}
			o->conns = (int)l;
			break;
		case 'd':
			if (parse_double(optarg, 0.01, MAX_SECONDS, &o->secs) !=
			    0) {
				fprintf(stderr,
				    PROG ": -d wants 0.01..%.0f seconds\n",
				    MAX_SECONDS);
				return -1;
			}
			break;
		case 'w':
			if (parse_double(optarg, 0, MAX_SECONDS, &o->warmup) !=
			    0) {
				fprintf(stderr,
				    PROG ": -w wants 0..%.0f seconds\n",
				    MAX_SECONDS);
				return -1;
			}
			break;
		case 't':
			if (parse_long(optarg, 1, MAX_THREADS, &l) != 0) {
				fprintf(stderr,
				    PROG ": -t wants 1..%d threads\n",
				    MAX_THREADS);
				return -1;
			}
			o->threads = (int)l;
			break;
		case O_OP:
			if (strcmp(optarg, "datakey") == 0) {
				o->op = OP_DATAKEY;
			} else if (strcmp(optarg, "decrypt") == 0) {
				o->op = OP_DECRYPT;
			} else if (strcmp(optarg, "health") == 0) {
				o->op = OP_HEALTH;
			} else if (strcmp(optarg, "token") == 0) {
				o->op = OP_TOKEN;
			} else if (strcmp(optarg, "none") == 0) {
				o->op = OP_NONE;
			} else {
				fprintf(stderr,
				    PROG ": --op wants datakey, decrypt, "
				         "token, health or none\n");
				return -1;
			}
			break;
		case O_AUDIENCE:
			if (!audience_ok(optarg)) {
				fprintf(stderr,
				    PROG ": --audience wants 1..%d printable "
				         "characters\n",
				    AUDIENCE_MAX);
				return -1;
			}
			o->audience = optarg;
			break;
		case O_SCOPE:
			if (!scope_ok(optarg) || o->nscope == MAX_SCOPES) {
				fprintf(stderr,
				    PROG ": --scope wants 1..%d of "
				         "[a-z0-9._:/-] (at most %d)\n",
				    SCOPE_MAX, MAX_SCOPES);
				return -1;
			}
			o->scope[o->nscope++] = optarg;
			break;
		case O_TTL:
			if (parse_long(optarg, 1, TTL_MAX, &o->ttl) != 0) {
				fprintf(stderr,
				    PROG ": --ttl wants 1..%d seconds\n",
				    TTL_MAX);
				return -1;
			}
			break;
		case O_HANDSHAKES:
			o->handshakes = true;
			break;
		case O_KEYNAME:
			if (!keyname_ok(optarg)) {
				fprintf(stderr,
				    PROG ": --key-name wants 1..%d of "
				         "[A-Za-z0-9._-]\n",
				    KEYNAME_MAX);
				return -1;
			}
			o->keyname = optarg;
			break;
		case O_CONTEXT: {
			const char *eq = strchr(optarg, '=');

			if (eq == NULL || eq == optarg || o->nctx == MAX_CTX) {
				fprintf(stderr,
				    PROG ": --context wants K=V (at most "
				         "%d)\n",
				    MAX_CTX);
				return -1;
			}
			o->ctx_k[o->nctx] =
			    strndup(optarg, (size_t)(eq - optarg));
			if (o->ctx_k[o->nctx] == NULL)
				return -1;
			o->ctx_v[o->nctx++] = eq + 1;
			break;
		}
		case O_TIMEOUT:
			if (parse_long(optarg, 10, MAX_TIMEOUT_MS, &l) != 0) {
				fprintf(stderr,
				    PROG ": --timeout wants 10..%d ms\n",
				    MAX_TIMEOUT_MS);
				return -1;
			}
			o->timeout_ms = (int)l;
			break;
		case O_RATE:
			if (parse_double(optarg, 0.1, 1e7, &o->rate) != 0) {
				fprintf(stderr,
				    PROG
				    ": --rate wants 0.1..1e7 requests/s\n");
				return -1;
			}
			break;
		case O_SAMPLES:
			if (parse_long(optarg, 1000, 1L << 30, &l) != 0) {
				fprintf(stderr,
				    PROG ": --max-samples wants 1000..%ld\n",
				    1L << 30);
				return -1;
			}
			o->max_samples = (size_t)l;
			break;
		case O_NONODELAY:
			o->nodelay = false;
			break;
		case O_JSON:
			o->json = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc || o->url == NULL || o->ncert == 0 ||
	    o->cacert == NULL) {
		usage(stderr);
		return -1;
	}
	if (o->nkey != o->ncert) {
		fprintf(stderr, PROG ": one --key per --cert, in order\n");
		return -1;
	}
	if (o->op == OP_NONE && !o->handshakes) {
		fprintf(stderr, PROG ": --op none goes with --handshakes\n");
		return -1;
	}
	if (o->handshakes && o->rate > 0) {
		fprintf(stderr,
		    PROG ": --rate does not go with --handshakes (each "
		         "connection runs flat out)\n");
		return -1;
	}
	if (o->nscope == 0)
		o->scope[o->nscope++] = "model:llama-70b:infer";
	if (o->nctx == 0) {
		o->ctx_k[0] = strdup("dataset");
		if (o->ctx_k[0] == NULL)
			return -1;
		o->ctx_v[0] = "imagenet-1k";
		o->nctx = 1;
	}
	if (o->threads > o->conns)
		o->threads = o->conns;
	return parse_url(o);
}

/* Each connection is a descriptor; the default soft limit (1024) is too
 * low for the largest runs. */
static int
raise_nofile(int need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return -1;
	if (rl.rlim_cur >= (rlim_t)need)
		return 0;
	if (rl.rlim_max < (rlim_t)need) {
		fprintf(stderr,
		    PROG ": %d descriptors needed, the hard limit is %lu\n",
		    need, (unsigned long)rl.rlim_max);
		return -1;
	}
	rl.rlim_cur = (rlim_t)need;
	return setrlimit(RLIMIT_NOFILE, &rl);
}

/* ---- report ---- */

struct report {
	uint64_t ok_window;
	uint64_t answered;
	uint64_t answered_run;
	uint64_t ok;
	uint64_t status[600];
	uint64_t err[E_COUNT];
	uint64_t errors;
	uint64_t reconnects;
	uint64_t seen;
	size_t n;
	bool have_lat;
	double p50, p90, p99, p999, max, mean, rps;
	int handshakes;
	double setup_s;
	double setup_cpu_ms; /* client CPU per handshake */
	/* --handshakes: all those completed in the run (warm-up and drain
	 * included), and the client's CPU per handshake over the run. */
	uint64_t run_handshakes;
	double run_cpu_ms;
	const char *tls;
	const char *first_err;
};

static int
summarize(struct worker *ws, int nw, const struct opts *o, struct report *rep)
{
	uint32_t *all;
	size_t n = 0;
	uint64_t sum = 0, max = 0;

	memset(rep, 0, sizeof *rep);
	rep->tls = "";
	rep->first_err = NULL;
	for (int i = 0; i < nw; i++) {
		const struct stats *st = &ws[i].st;

		rep->ok_window += st->ok_window;
		rep->answered += st->answered;
		rep->answered_run += st->answered_run;
		rep->reconnects += st->reconnects;
		rep->seen += st->seen;
		for (int s = 0; s < 600; s++)
			rep->status[s] += st->status[s];
		for (int k = 0; k < E_COUNT; k++)
			rep->err[k] += st->err[k];
		n += st->n;
		sum += st->lat_sum;
		rep->handshakes += ws[i].setup_ready;
		if ((double)ws[i].setup_ns / 1e9 > rep->setup_s)
			rep->setup_s = (double)ws[i].setup_ns / 1e9;
		rep->setup_cpu_ms += (double)ws[i].setup_cpu_ns / 1e6;
		rep->run_handshakes += st->handshakes;
		rep->run_cpu_ms += (double)ws[i].run_cpu_ns / 1e6;
		if (st->lat_max > max)
			max = st->lat_max;
		if (rep->tls[0] == '\0')
			rep->tls = ws[i].tls;
		if (rep->first_err == NULL && ws[i].first_err[0] != '\0')
			rep->first_err = ws[i].first_err;
	}
	for (int s = 200; s < 300; s++)
		rep->ok += rep->status[s];
	/* --op none: a connection the server closed is the success. */
	if (o->op == OP_NONE)
		rep->ok = rep->answered;
	for (int k = 0; k < E_COUNT; k++)
		rep->errors += rep->err[k];
	rep->rps = (double)rep->ok_window / o->secs;
	if (rep->handshakes > 0)
		rep->setup_cpu_ms /= rep->handshakes;
	if (o->handshakes && rep->run_handshakes > 0)
		rep->run_cpu_ms /= (double)rep->run_handshakes;
	else
		rep->run_cpu_ms = 0;
	rep->n = n;
	if (n == 0)
		return 0;
	all = malloc(n * sizeof *all);
	if (all == NULL)
		return -1;
	n = 0;
	for (int i = 0; i < nw; i++) {
		memcpy(all + n, ws[i].st.samples, ws[i].st.n * sizeof *all);
		n += ws[i].st.n;
	}
	if (sort_u32(all, n) != 0) {
		free(all);
		return -1;
	}
	rep->have_lat = true;
	rep->p50 = pct_us(all, n, 0.50);
	rep->p90 = pct_us(all, n, 0.90);
	rep->p99 = pct_us(all, n, 0.99);
	rep->p999 = pct_us(all, n, 0.999);
	rep->max = (double)max / 1e3;
	rep->mean = (double)sum / (double)rep->seen / 1e3;
	free(all);
	return 0;
}

static void
json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void
print_json(const struct opts *o, const struct report *rep)
{
	bool first = true;

	printf("{\n  \"url\": ");
	json_str(o->url);
	printf(",\n  \"op\": \"%s\",\n  \"mode\": \"%s\",\n  \"key\": ",
	    op_names[o->op], o->handshakes ? "handshakes" : "keep-alive");
	json_str(o->keyname);
	if (o->op == OP_TOKEN) {
		printf(",\n  \"audience\": ");
		json_str(o->audience);
		printf(",\n  \"scope\": [");
		for (int i = 0; i < o->nscope; i++) {
			printf("%s", i ? ", " : "");
			json_str(o->scope[i]);
		}
		printf("]");
	}
	printf(",\n  \"identities\": %d", o->ncert);
	if (o->rate > 0)
		printf(",\n  \"rate_target\": %.1f", o->rate);
	else
		printf(",\n  \"rate_target\": null");
	printf(",\n  \"connections\": %d,\n  \"threads\": %d,\n"
	       "  \"seconds\": %.3f,\n  \"warmup\": %.3f,\n"
	       "  \"timeout_ms\": %d,\n  \"nodelay\": %s,\n  \"tls\": ",
	    o->conns, o->threads, o->secs, o->warmup, o->timeout_ms,
	    o->nodelay ? "true" : "false");
	json_str(rep->tls);
	printf(",\n  \"rps\": %.1f,\n  \"requests\": %" PRIu64
	       ",\n  \"requests_run\": %" PRIu64 ",\n  \"ok\": %" PRIu64
	       ",\n  \"non_2xx\": %" PRIu64 ",\n  \"status\": {",
	    rep->rps, rep->answered, rep->answered_run, rep->ok,
	    rep->answered - rep->ok);
	for (int s = 0; s < 600; s++) {
		if (rep->status[s] == 0)
			continue;
		printf("%s\"%d\": %" PRIu64, first ? "" : ", ", s,
		    rep->status[s]);
		first = false;
	}
	printf("},\n  \"errors\": %" PRIu64 ",\n  \"error_kinds\": {",
	    rep->errors);
	for (int k = 0; k < E_COUNT; k++)
		printf("%s\"%s\": %" PRIu64, k ? ", " : "", err_names[k],
		    rep->err[k]);
	printf("},\n  \"first_error\": ");
	if (rep->first_err != NULL)
		json_str(rep->first_err);
	else
		printf("null");
	printf(",\n  \"reconnects\": %" PRIu64
	       ",\n  \"setup\": {\"handshakes\": %d, \"seconds\": %.4f, "
	       "\"client_cpu_ms_per_handshake\": %.3f}",
	    rep->reconnects, rep->handshakes, rep->setup_s, rep->setup_cpu_ms);
	if (o->handshakes)
		printf(",\n  \"handshakes\": {\"completed\": %" PRIu64
		       ", \"client_cpu_ms_per_handshake\": %.3f}",
		    rep->run_handshakes, rep->run_cpu_ms);
	else
		printf(",\n  \"handshakes\": null");
	printf(",\n  \"latency_us\": ");
	if (rep->have_lat)
		printf("{\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, "
		       "\"p999\": %.1f, \"max\": %.1f, \"mean\": %.1f}",
		    rep->p50, rep->p90, rep->p99, rep->p999, rep->max,
		    rep->mean);
	else
		printf("null");
	printf(",\n  \"samples\": %zu,\n  \"sampled\": %s\n}\n", rep->n,
	    rep->n < rep->seen ? "true" : "false");
}

static void
print_text(const struct opts *o, const struct report *rep)
{
	/* What the request names: a key, a token's audience, or nothing. */
	const char *what = o->op == OP_TOKEN             ? " audience="
	    : o->op == OP_DATAKEY || o->op == OP_DECRYPT ? " key="
	                                                 : "";
	const char *name = o->op == OP_TOKEN ? o->audience
	    : *what != '\0'                  ? o->keyname
	                                     : "";

	printf(PROG ": %s%s %s%s%s, %d connection(s), %d identit%s, "
	            "%d thread(s), %.2f s (+%.2f s warm-up)%s\n",
	    op_names[o->op], o->handshakes ? " (a new connection each)" : "",
	    o->url, what, name, o->conns, o->ncert, o->ncert == 1 ? "y" : "ies",
	    o->threads, o->secs, o->warmup, o->nodelay ? "" : ", Nagle on");
	if (o->rate > 0)
		printf("paced     %.1f req/s in all (one request at a time per "
		       "connection)\n",
		    o->rate);
	printf("tls       %s\n", rep->tls[0] ? rep->tls : "(no handshake)");
	if (o->handshakes) {
		printf("handshakes %" PRIu64 " in the run; client CPU %.3f ms "
		       "each\n",
		    rep->run_handshakes, rep->run_cpu_ms);
		printf("rate      %.1f connections/s (handshake%s and the "
		       "server's close, completed in the window)\n",
		    rep->rps, o->op == OP_NONE ? "" : ", one 2xx answer");
	} else {
		printf("setup     %d handshake(s) in %.3f s, %d at a time per "
		       "thread; client CPU %.3f ms each\n",
		    rep->handshakes, rep->setup_s, SETUP_BATCH,
		    rep->setup_cpu_ms);
		printf("rate      %.1f req/s (2xx completed in the window)\n",
		    rep->rps);
	}
	printf("requests  %" PRIu64 " answered: %" PRIu64 " 2xx, %" PRIu64
	       " non-2xx",
	    rep->answered, rep->ok, rep->answered - rep->ok);
	for (int s = 0; s < 600; s++)
		if (rep->status[s] != 0 && (s < 200 || s > 299))
			printf(" [%d: %" PRIu64 "]", s, rep->status[s]);
	printf("\nerrors    %" PRIu64, rep->errors);
	for (int k = 0; k < E_COUNT; k++)
		if (rep->err[k] != 0)
			printf(" [%s: %" PRIu64 "]", err_names[k], rep->err[k]);
	if (rep->reconnects != 0)
		printf(", %" PRIu64 " reconnection(s)", rep->reconnects);
	printf("\n");
	if (rep->first_err != NULL)
		printf("first     %s\n", rep->first_err);
	if (rep->have_lat)
		printf("latency   p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  "
		       "p99.9 %.3f ms  max %.3f ms  mean %.3f ms%s\n",
		    rep->p50 / 1e3, rep->p90 / 1e3, rep->p99 / 1e3,
		    rep->p999 / 1e3, rep->max / 1e3, rep->mean / 1e3,
		    rep->n < rep->seen ? " (sampled)" : "");
	else
		printf("latency   no request answered\n");
}

/* ---- main ---- */

int
main(int argc, char **argv)
{
	struct opts o = {
	    .conns = 64,
	    .threads = 1,
	    .secs = 10.0,
	    .timeout_ms = DEFAULT_TIMEOUT_MS,
	    .op = OP_DATAKEY,
	    .keyname = "datasets",
	    .audience = "inference-gw",
	    .nodelay = true,
	    .max_samples = DEFAULT_MAX_SAMPLES,
	};
	struct run r = {.o = &o};
	struct worker *ws = NULL;
	struct report rep;
	struct sigaction sa;
	int status = EXIT_ERROR, started = 0, g = 0;
	bool barrier = false;

	if (parse_args(argc, argv, &o) != 0)
		return EXIT_USAGE;
	if (raise_nofile(o.conns + 32) != 0)
		return EXIT_USAGE;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	/* A write to a connection the server reset must fail, not kill. */
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);

	r.timeout_ns = (uint64_t)o.timeout_ms * NS_PER_MS;
	if (o.rate > 0)
		r.interval_ns = (uint64_t)((double)o.conns / o.rate * 1e9);
	r.t_start = r.t_measure = r.t_end = UINT64_MAX;
	for (int i = 0; i < o.ncert; i++)
		if ((r.tls[i] = make_ctx(&o, o.cert[i], o.key[i])) == NULL)
			goto out;
	if (prepare(&r) != 0)
		goto out;

	ws = calloc((size_t)o.threads, sizeof *ws);
	if (ws == NULL ||
	    pthread_barrier_init(&r.barrier, NULL, (unsigned)o.threads) != 0)
		goto out;
	barrier = true;
	for (int i = 0; i < o.threads; i++)
		ws[i].ep = -1;
	for (int i = 0; i < o.threads; i++) {
		struct worker *w = &ws[i];

		w->run = &r;
		w->nconns = o.conns / o.threads + (i < o.conns % o.threads);
		w->conns = calloc((size_t)w->nconns, sizeof *w->conns);
		w->ep = epoll_create1(EPOLL_CLOEXEC);
		w->st.max = o.max_samples / (size_t)o.threads;
		w->st.rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)i;
		if (w->conns == NULL || w->ep < 0) {
			fprintf(stderr, PROG ": out of memory\n");
			goto out;
		}
		for (int k = 0; k < w->nconns; k++) {
			w->conns[k].w = w;
			w->conns[k].idx = g;
			w->conns[k].tls = r.tls[g++ % o.ncert];
			w->conns[k].fd = -1;
		}
	}
	for (; started < o.threads; started++)
		if (pthread_create(&ws[started].tid, NULL, worker_main,
		        &ws[started]) != 0) {
			/* The barrier would wait forever for it. */
			fprintf(stderr, PROG ": cannot start a thread\n");
			exit(EXIT_ERROR);
		}
	for (int i = 0; i < o.threads; i++)
		pthread_join(ws[i].tid, NULL);
	if (stop_signal != 0)
		goto out;
	if (r.abort) {
		const char *e = NULL;

		for (int i = 0; i < o.threads && e == NULL; i++)
			if (ws[i].first_err[0] != '\0')
				e = ws[i].first_err;
		fprintf(stderr, PROG ": no connection could be set up%s%s\n",
		    e ? ": " : "", e ? e : "");
		goto out;
	}
	if (summarize(ws, o.threads, &o, &rep) != 0) {
		fprintf(stderr, PROG ": out of memory for the percentiles\n");
		goto out;
	}
	if (o.json)
		print_json(&o, &rep);
	else
		print_text(&o, &rep);
	status = rep.errors == 0 && rep.ok == rep.answered && rep.ok > 0
	    ? 0
	    : EXIT_FAILED;
out:
	if (ws != NULL) {
		for (int i = 0; i < o.threads; i++) {
			free(ws[i].conns);
			free(ws[i].st.samples);
			if (ws[i].ep >= 0)
				close(ws[i].ep);
		}
		free(ws);
	}
	if (barrier)
		pthread_barrier_destroy(&r.barrier);
	free(r.req);
	for (int i = 0; i < o.ncert; i++)
		SSL_CTX_free(r.tls[i]);
	for (int i = 0; i < o.nctx; i++)
		free(o.ctx_k[i]);
	if (stop_signal != 0) {
		fprintf(stderr, PROG ": interrupted\n");
		status = 128 + stop_signal;
	}
	return status;
}

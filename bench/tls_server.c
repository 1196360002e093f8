/*
 * tls_server.c: GnuTLS's own rate of full mTLS handshakes, the baseline
 * that keywardd's is measured against (DESIGN.md section 5: "full mTLS
 * handshakes >= 80 % of GnuTLS's own rate").
 *
 * A plain GnuTLS server, no HTTP library: one thread per core (-t), each
 * with its own epoll set, all accepting from one listening socket, every
 * connection non-blocking. Its TLS is set up as keywardd's front sets up
 * libmicrohttpd 0.9.75's (broker/front.c): the same certificate, key and
 * client CA from the keywardd configuration, the same priority string,
 * gnutls_init() with GNUTLS_SERVER | GNUTLS_NO_SIGNAL | GNUTLS_NONBLOCK
 * as libmicrohttpd calls it, a client certificate requested
 * (GNUTLS_CERT_REQUEST, as MHD_OPTION_HTTPS_MEM_TRUST does) and no session
 * resumption (no ticket key, no session cache). Per connection:
 *
 *   1. the full handshake (gnutls_handshake);
 *   2. the client certificate checked, as keywardd's front does on a
 *      connection's first request: an X.509 chain, and
 *      gnutls_certificate_verify_peers2() returning 0 with status 0
 *      (a connection that fails is closed and counted as refused);
 *   3. then whatever the client does first: its close_notify (or the end
 *      of its stream), after which the server sends its own and closes;
 *      or one HTTP request, whose head is read up to its empty line and
 *      answered with a fixed "200 {"status":"ok",...}" of the size of
 *      keywardd's health answer (404 for any other request line), with
 *      "Connection: close", then the server's close_notify and close.
 *
 * That is the least a server can do for a client that connects,
 * authenticates and goes: what keywardd's front does on top (libmicrohttpd's
 * connection and HTTP handling, the leaf's checks and identity, the
 * keeper's health answer) is what the ratio is about.
 *
 * It reads a keywardd configuration (-c) for the TLS files, listens on
 * 127.0.0.1:PORT (-p; 0 picks a free port, printed on stdout) and serves
 * until SIGTERM or SIGINT, then prints what it did on stderr.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "secret.h"

#define PROG "tls_server"
#define MAX_THREADS 64
#define TLS_FILE_MAX (1024 * 1024)
#define HEAD_MAX 4096 /* a request head larger than this is refused */
#define EVENTS 64
#define ACCEPT_BATCH \
	16 /* accepts per wake-up, so that one thread does
                           not take every new connection */
/* A connection that has not finished in this time is dropped (a client
 * that died mid-handshake must not hold a descriptor until the end). */
#define CONN_TIMEOUT_NS (10ull * 1000000000ull)
#define SWEEP_MS 1000

#define EXIT_USAGE 2
#define EXIT_ERROR 3

/* keywardd's TLS settings (broker/front.c's PRIORITIES). */
#define TLS_PRIORITIES                                                \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:"                 \
	"-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:"   \
	"-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:"             \
	"-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:" \
	"+GROUP-SECP521R1:"                                           \
	"-SIGN-RSA-SHA1:-SIGN-ECDSA-SHA1:-SIGN-DSA-SHA1:%SERVER_PRECEDENCE"

/* keywardd's health answer is {"status":"ok","hsm":"ok","audit":"ok"}. */
#define HEALTH_BODY "{\"status\":\"ok\",\"hsm\":\"ok\",\"audit\":\"ok\"}"
#define NOT_FOUND_BODY \
	"{\"error\":{\"code\":\"not_found\",\"message\":\"no such route\"}}"
#define ANSWER_MAX 256

enum cstate { S_HANDSHAKE, S_READ, S_WRITE, S_BYE };

struct conn {
	struct conn *prev, *next; /* the thread's connections */
	int fd;
	gnutls_session_t ts;
	enum cstate st;
	uint32_t events; /* the epoll mask */
	uint64_t t0;
	const char *out; /* the answer, while being written */
	size_t outlen;
	size_t off;
	size_t len;
	char head[HEAD_MAX];
};

enum counter {
	N_ACCEPTED,
	N_HANDSHAKES, /* completed handshakes */
	N_REFUSED, /* client certificate missing or not trusted */
	N_FAILED, /* TLS errors and resets */
	N_ANSWERED, /* HTTP requests answered */
	N_CLOSED, /* connections closed cleanly after the client's close */
	N_TIMEOUT,
	N_COUNT
};
static const char *const counter_names[N_COUNT] = {"accepted", "handshakes",
    "refused", "failed", "answered", "closed", "timed out"};

struct server {
	gnutls_certificate_credentials_t cred;
	gnutls_priority_t prio;
	int lfd;
	int stopfd; /* an eventfd: readable once the server stops */
	atomic_ulong n[N_COUNT];
};

struct thread {
	struct server *s;
	pthread_t tid;
	int ep;
	struct conn *conns;
};

/* The two answers, made once at start (make_answer). */
static char answer_health[ANSWER_MAX];
static char answer_not_found[ANSWER_MAX];
static size_t answer_health_len;
static size_t answer_not_found_len;

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void
count(struct server *s, enum counter k)
{
	atomic_fetch_add_explicit(&s->n[k], 1, memory_order_relaxed);
}

static void
watch(struct thread *t, struct conn *c, uint32_t ev)
{
	struct epoll_event e = {.events = ev, .data.ptr = c};

	if (c->events == ev)
		return;
	if (epoll_ctl(t->ep, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd,
	        &e) == 0)
		c->events = ev;
}

/* Wait for what GnuTLS was doing when it returned GNUTLS_E_AGAIN. */
static void
watch_tls(struct thread *t, struct conn *c)
{
	watch(t, c, gnutls_record_get_direction(c->ts) ? EPOLLOUT : EPOLLIN);
}

static void
conn_free(struct thread *t, struct conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		t->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	/* close() takes the descriptor out of the epoll set. */
	close(c->fd);
	gnutls_deinit(c->ts);
	free(c);
}

static void
conn_fail(struct thread *t, struct conn *c, enum counter k)
{
	count(t->s, k);
	conn_free(t, c);
}

/*
 * The client certificate, as keywardd's front checks it: GnuTLS has
 * asked for one and checked the client's signature in the handshake; the
 * chain to the trusted CA is checked here (with a trust list but no
 * verification function, a chain from an unknown CA completes the
 * handshake: THREATS.md). Both the return code and the status must be
 * clean.
 */
static bool
client_verified(gnutls_session_t ts)
{
	const gnutls_datum_t *certs;
	unsigned int n = 0, status = 0;

	if (gnutls_certificate_type_get(ts) != GNUTLS_CRT_X509)
		return false;
	certs = gnutls_certificate_get_peers(ts, &n);
	if (certs == NULL || n == 0)
		return false;
	return gnutls_certificate_verify_peers2(ts, &status) == 0 &&
	    status == 0;
}

static void conn_step(struct thread *t, struct conn *c);

static void
conn_bye(struct thread *t, struct conn *c)
{
	int rv = gnutls_bye(c->ts, GNUTLS_SHUT_WR);

	if (rv == GNUTLS_E_AGAIN || rv == GNUTLS_E_INTERRUPTED) {
		watch_tls(t, c);
		return;
	}
	/* Sent, or the client has gone already: the connection is done
	 * either way. */
	conn_free(t, c);
}

/* A request head: "GET /v1/health " gets the health answer. */
static void
conn_answer(struct thread *t, struct conn *c)
{
	static const char line[] = "GET /v1/health ";

	if (c->len >= sizeof line - 1 &&
	    memcmp(c->head, line, sizeof line - 1) == 0) {
		c->out = answer_health;
		c->outlen = answer_health_len;
	} else {
		c->out = answer_not_found;
		c->outlen = answer_not_found_len;
	}
	c->off = 0;
	c->st = S_WRITE;
	count(t->s, N_ANSWERED);
	conn_step(t, c);
}

static void
conn_step(struct thread *t, struct conn *c)
{
	ssize_t n;
	int rv;

	switch (c->st) {
	case S_HANDSHAKE:
		do
			rv = gnutls_handshake(c->ts);
		while (rv < 0 && rv != GNUTLS_E_AGAIN &&
		    !gnutls_error_is_fatal(rv));
		if (rv == GNUTLS_E_AGAIN) {
			watch_tls(t, c);
			return;
		}
		if (rv < 0) {
			conn_fail(t, c, N_FAILED);
			return;
		}
		count(t->s, N_HANDSHAKES);
		if (!client_verified(c->ts)) {
			conn_fail(t, c, N_REFUSED);
			return;
		}
		c->st = S_READ;
		/* FALLTHROUGH */
	case S_READ:
		for (;;) {
			if (c->len == sizeof c->head) {
				conn_fail(t, c, N_FAILED);
				return;
			}
			n = gnutls_record_recv(c->ts, c->head + c->len,
			    sizeof c->head - c->len);
			if (n == GNUTLS_E_AGAIN) {
				watch_tls(t, c);
				return;
			}
			if (n == GNUTLS_E_INTERRUPTED)
				continue;
			if (n == 0 || n == GNUTLS_E_PREMATURE_TERMINATION) {
				/* The client's close_notify, or its
				 * stream's end: ours, then close. */
				count(t->s, N_CLOSED);
				c->st = S_BYE;
				conn_bye(t, c);
				return;
			}
			if (n < 0) {
				conn_fail(t, c, N_FAILED);
				return;
			}
			c->len += (size_t)n;
			if (memmem(c->head, c->len, "\r\n\r\n", 4) != NULL) {
				conn_answer(t, c);
				return;
			}
		}
	case S_WRITE:
		while (c->off < c->outlen) {
			n = gnutls_record_send(c->ts, c->out + c->off,
			    c->outlen - c->off);
			if (n == GNUTLS_E_AGAIN) {
				watch_tls(t, c);
				return;
			}
			if (n == GNUTLS_E_INTERRUPTED)
				continue;
			if (n < 0) {
				conn_fail(t, c, N_FAILED);
				return;
			}
			c->off += (size_t)n;
		}
		c->st = S_BYE;
		/* FALLTHROUGH */
	case S_BYE:
		conn_bye(t, c);
		return;
	}
}

static void
conn_new(struct thread *t, int fd)
{
	struct server *s = t->s;
	struct conn *c = calloc(1, sizeof *c);
	int one = 1;

	if (c == NULL ||
	    gnutls_init(&c->ts,
	        GNUTLS_SERVER | GNUTLS_NO_SIGNAL | GNUTLS_NONBLOCK) < 0) {
		free(c);
		close(fd);
		count(s, N_FAILED);
		return;
	}
	c->fd = fd;
	c->t0 = now_ns();
	c->st = S_HANDSHAKE;
	c->next = t->conns;
	if (t->conns != NULL)
		t->conns->prev = c;
	t->conns = c;
	count(s, N_ACCEPTED);
	/* The answer and the close_notify after it are two writes: the
	 * second must not wait for the client's ACK of the first.
	 * (libmicrohttpd gets there with TCP_CORK, then TCP_NODELAY, around
	 * each answer: two calls per connection where this makes one.) */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (gnutls_priority_set(c->ts, s->prio) < 0 ||
	    gnutls_credentials_set(c->ts, GNUTLS_CRD_CERTIFICATE, s->cred) <
	        0) {
		conn_fail(t, c, N_FAILED);
		return;
	}
	gnutls_certificate_server_set_request(c->ts, GNUTLS_CERT_REQUEST);
	gnutls_transport_set_int(c->ts, fd);
	conn_step(t, c);
}

static void
accept_some(struct thread *t)
{
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd = accept4(t->s->lfd, NULL, NULL,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
			return; /* EAGAIN: another thread took it */
		conn_new(t, fd);
	}
}

static void
sweep(struct thread *t, uint64_t now)
{
	struct conn *c = t->conns, *next;

	for (; c != NULL; c = next) {
		next = c->next;
		if (now - c->t0 > CONN_TIMEOUT_NS)
			conn_fail(t, c, N_TIMEOUT);
	}
}

static void *
thread_main(void *arg)
{
	struct thread *t = arg;
	struct server *s = t->s;
	struct epoll_event ev[EVENTS];
	/* The listening socket: one thread is woken per connection. */
	struct epoll_event le = {.events = EPOLLIN | EPOLLEXCLUSIVE,
	    .data.ptr = NULL};
	struct epoll_event se = {.events = EPOLLIN, .data.ptr = &s->stopfd};
	uint64_t last = now_ns();

	if (epoll_ctl(t->ep, EPOLL_CTL_ADD, s->lfd, &le) != 0 ||
	    epoll_ctl(t->ep, EPOLL_CTL_ADD, s->stopfd, &se) != 0) {
		fprintf(stderr, PROG ": epoll_ctl: %s\n", strerror(errno));
		return NULL;
	}
	for (;;) {
		int n = epoll_wait(t->ep, ev, EVENTS, SWEEP_MS);
		uint64_t now;

		for (int i = 0; i < n; i++) {
			if (ev[i].data.ptr == &s->stopfd)
				goto out;
			if (ev[i].data.ptr == NULL)
				accept_some(t);
			else
				conn_step(t, ev[i].data.ptr);
		}
		now = now_ns();
		if (now - last >= (uint64_t)SWEEP_MS * 1000000ull) {
			sweep(t, now);
			last = now;
		}
	}
out:
	while (t->conns != NULL)
		conn_free(t, t->conns);
	return NULL;
}

/* ---- setup ---- */

static size_t
make_answer(char *buf, const char *status, const char *body)
{
	int n = snprintf(buf, ANSWER_MAX,
	    "HTTP/1.1 %s\r\nConnection: close\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
	    status, strlen(body), body);

	return n > 0 && n < ANSWER_MAX ? (size_t)n : 0;
}

/* A whole PEM file, for GnuTLS. */
static int
read_datum(const char *path, gnutls_datum_t *ret)
{
	unsigned char *buf = NULL;
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
	buf = malloc((size_t)st.st_size);
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
	close(fd);
	ret->data = buf;
	ret->size = (unsigned int)len;
	return 0;
fail:
	free(buf);
	if (fd >= 0)
		close(fd);
	return -1;
}

static void
free_datum(gnutls_datum_t *d)
{
	if (d->data != NULL) {
		kw_memzero(d->data, d->size);
		free(d->data);
	}
	d->data = NULL;
}

static int
setup_tls(struct server *s, const struct kwd_config *cfg)
{
	gnutls_datum_t cert = {NULL, 0}, key = {NULL, 0}, ca = {NULL, 0};
	const char *where = NULL;
	int rv = -1, g;

	if (read_datum(cfg->tls_cert, &cert) != 0 ||
	    read_datum(cfg->tls_key, &key) != 0 ||
	    read_datum(cfg->tls_client_ca, &ca) != 0)
		goto out;
	g = gnutls_certificate_allocate_credentials(&s->cred);
	if (g < 0) {
		where = "gnutls_certificate_allocate_credentials";
		goto tls;
	}
	g = gnutls_certificate_set_x509_key_mem(s->cred, &cert, &key,
	    GNUTLS_X509_FMT_PEM);
	if (g < 0) {
		where = "the certificate and key";
		goto tls;
	}
	g = gnutls_certificate_set_x509_trust_mem(s->cred, &ca,
	    GNUTLS_X509_FMT_PEM);
	if (g <= 0) {
		where = "the client CA";
		goto tls;
	}
	g = gnutls_priority_init(&s->prio, TLS_PRIORITIES, NULL);
	if (g < 0) {
		where = "the priority string";
		goto tls;
	}
	rv = 0;
	goto out;
tls:
	fprintf(stderr, PROG ": %s: %s\n", where,
	    g == 0 ? "no certificate" : gnutls_strerror(g));
out:
	free_datum(&cert);
	free_datum(&key);
	free_datum(&ca);
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
	/* Non-blocking: every thread tries to accept, most find nothing. */
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
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
	    "The baseline for keywardd's full mTLS handshakes: a plain "
	    "GnuTLS server\n"
	    "with keywardd's certificate, client CA and TLS priorities, on "
	    "127.0.0.1.\n"
	    "Per connection: the handshake, the client certificate "
	    "verified, then\n"
	    "the client's close_notify or one request (GET /v1/health gets "
	    "200), and\n"
	    "the server closes.\n"
	    "\n"
	    "  -c, --config FILE   keywardd configuration: tls.*\n"
	    "  -p, --port PORT     port on 127.0.0.1 (0: any free one, "
	    "printed)\n"
	    "  -t, --threads N     threads, each accepting and handshaking "
	    "(default:\n"
	    "                      one per core)\n"
	    "\n"
	    "Runs until SIGTERM or SIGINT.\n");
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
	static struct server s = {.lfd = -1, .stopfd = -1};
	static struct thread th[MAX_THREADS];
	const char *config = NULL;
	struct kwd_config *cfg = NULL;
	char err[256];
	long port = -1, threads = 0;
	unsigned int bound = 0;
	uint64_t one = 1;
	sigset_t sigs;
	int started = 0, sig, rv, status = EXIT_ERROR;

	if (parse_args(argc, argv, &config, &port, &threads) != 0)
		return EXIT_USAGE;

	/* Blocked before any thread starts: sigwait() below gets them. */
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
	answer_health_len = make_answer(answer_health, "200 OK", HEALTH_BODY);
	answer_not_found_len =
	    make_answer(answer_not_found, "404 Not Found", NOT_FOUND_BODY);
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
	if (threads == 0) {
		threads = sysconf(_SC_NPROCESSORS_ONLN);
		if (threads < 1 || threads > MAX_THREADS)
			threads = 1;
	}
	if (gnutls_global_init() < 0 || setup_tls(&s, cfg) != 0)
		goto out;
	s.lfd = listen_loopback((unsigned int)port, &bound);
	s.stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s.lfd < 0 || s.stopfd < 0)
		goto out;
	for (; started < threads; started++) {
		th[started].s = &s;
		th[started].ep = epoll_create1(EPOLL_CLOEXEC);
		if (th[started].ep < 0 ||
		    pthread_create(&th[started].tid, NULL, thread_main,
		        &th[started]) != 0) {
			fprintf(stderr, PROG ": cannot start a thread\n");
			if (th[started].ep >= 0)
				close(th[started].ep);
			goto stop;
		}
	}
	printf(PROG ": listening on 127.0.0.1:%u, %ld thread(s)\n", bound,
	    threads);
	fflush(stdout);

	do
		rv = sigwait(&sigs, &sig);
	while (rv == 0 && sig == SIGHUP);
	status = 0;
stop:
	/* Readable for good: every thread sees it and leaves. */
	if (write(s.stopfd, &one, sizeof one) != sizeof one)
		status = EXIT_ERROR;
	for (int i = 0; i < started; i++) {
		pthread_join(th[i].tid, NULL);
		close(th[i].ep);
	}
	if (status == 0) {
		fprintf(stderr, PROG ": stopped by signal %d;", sig);
		for (int k = 0; k < N_COUNT; k++)
			fprintf(stderr, "%s %lu %s", k ? "," : "",
			    atomic_load(&s.n[k]), counter_names[k]);
		fprintf(stderr, "\n");
	}
out:
	if (s.lfd >= 0)
		close(s.lfd);
	if (s.stopfd >= 0)
		close(s.stopfd);
	if (s.prio != NULL)
		gnutls_priority_deinit(s.prio);
	if (s.cred != NULL)
		gnutls_certificate_free_credentials(s.cred);
	kwd_config_free(cfg);
	return status;
}

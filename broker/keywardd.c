/*
 * keywardd: the master process.
 *
 *   keywardd -c CONFIG          run in the foreground (systemd Type=notify)
 *   keywardd -t -c CONFIG       check the configuration and policy, exit
 *   keywardd --verify-audit LOG check an audit log's hash chain, exit
 *
 * The master binds the listening sockets, makes the front <-> keeper
 * channels (SOCK_SEQPACKET socketpairs), forks the keeper and the front,
 * and supervises them: if either dies, the other is stopped and both are
 * started again with fresh channels (their channels are made in pairs). It
 * never parses network input and never loads the PKCS#11 module. SIGHUP
 * checks the policy file and has the keeper reload it; SIGTERM stops
 * everything. Readiness, reloads, stopping and the watchdog are reported
 * to systemd over $NOTIFY_SOCKET (sd_notify protocol, written here: one
 * datagram).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "config.h"
#include "front.h"
#include "keeper.h"
#include "log.h"
#include "policy.h"
#include "sandbox.h"

/* The API channels for 16 workers, and the metrics channel. */
#define MAX_CHAN (16 * KWD_FRONT_PER_WORKER + 1)
#define STOP_GRACE_MS 5000
#define READY_WAIT_MS 15000

struct children {
	pid_t keeper;
	pid_t front;
	unsigned restarts;
	time_t window_start;
};

static const char usage_text[] =
    "usage: keywardd -c CONFIG          run (foreground)\n"
    "       keywardd -t -c CONFIG       check configuration and policy\n"
    "       keywardd --verify-audit LOG verify an audit log's hash chain\n";

/* ---- systemd notification (sd_notify(3) protocol) ---- */

static void
notify(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa;
	socklen_t salen;
	size_t len;
	int fd;

	if (path == NULL || (path[0] != '/' && path[0] != '@'))
		return;
	len = strlen(path);
	if (len >= sizeof sa.sun_path)
		return;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, len);
	if (path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract namespace */
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	(void)sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
	    salen);
	close(fd);
}

static long
watchdog_ms(void)
{
	const char *s = getenv("WATCHDOG_USEC");
	long long us;

	if (s == NULL)
		return 0;
	us = atoll(s);
	return us > 0 ? (long)(us / 2000) : 0;
}

/* ---- listening sockets ---- */

static int
listen_on(const char *addr, const char *what)
{
	struct addrinfo hints, *res = NULL;
	char host[256];
	const char *colon = strrchr(addr, ':');
	size_t hl;
	int fd = -1, one = 1, rv;

	hl = (size_t)(colon - addr);
	if (hl >= sizeof host)
		return -1;
	memcpy(host, addr, hl);
	host[hl] = '\0';
	/* [::1]:8443 */
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	rv = getaddrinfo(host, colon + 1, &hints, &res);
	if (rv != 0) {
		kw_log(KW_LOG_ERR, "master.listen",
		    "listen address must be a numeric IP and port",
		    KW_F("what", what), KW_F("address", addr));
		return -1;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) != 0 ||
	    listen(fd, 1024) != 0) {
		kw_log(KW_LOG_ERR, "master.listen", strerror(errno),
		    KW_F("what", what), KW_F("address", addr));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

/*
 * Socket activation (sd_listen_fds(3)): systemd made the listening
 * sockets and passes them from fd 3 on. Each is matched to listen or
 * metrics_listen by its address, so the unit and the configuration must
 * agree; a missing one is an error. Returns 1 if activated, 0 if not, -1
 * on error.
 */
static int
take_listen_fds(const struct kwd_config *cfg, int *api_fd, int *metrics_fd)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	long n;

	if (pid == NULL || fds == NULL || atol(pid) != (long)getpid())
		return 0;
	n = atol(fds);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	for (int fd = 3; fd < 3 + n && fd < 64; fd++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		char host[INET6_ADDRSTRLEN + 2], serv[16], addr[96];

		fcntl(fd, F_SETFD, FD_CLOEXEC);
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 ||
		    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host,
		        serv, sizeof serv,
		        NI_NUMERICHOST | NI_NUMERICSERV) != 0)
			continue;
		snprintf(addr, sizeof addr,
		    ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
		if (strcmp(addr, cfg->listen) == 0)
			*api_fd = fd;
		else if (cfg->metrics_listen != NULL &&
		    strcmp(addr, cfg->metrics_listen) == 0)
			*metrics_fd = fd;
		else
			kw_log(KW_LOG_WARN, "master.listen_fds",
			    "a socket passed by systemd matches neither listen "
			    "nor metrics_listen",
			    KW_F("address", addr));
	}
	if (*api_fd < 0 || (cfg->metrics_listen != NULL && *metrics_fd < 0)) {
		kw_log(KW_LOG_ERR, "master.listen_fds",
		    "socket activation: the sockets passed by systemd must "
		    "match listen and metrics_listen",
		    KW_F("listen", cfg->listen));
		return -1;
	}
	return 1;
}

static int
relisten(const struct kwd_config *cfg, int *api_fd, int *metrics_fd)
{
	close(*api_fd);
	*api_fd = listen_on(cfg->listen, "listen");
	if (*metrics_fd >= 0) {
		close(*metrics_fd);
		*metrics_fd = listen_on(cfg->metrics_listen, "metrics_listen");
	}
	return *api_fd >= 0 && (cfg->metrics_listen == NULL || *metrics_fd >= 0)
	    ? 0
	    : -1;
}

/* ---- children ---- */

static void
child_signals(void)
{
	sigset_t set;

	/* The master blocks these for its signalfd; children start clean
	 * and set up their own handling. */
	sigemptyset(&set);
	sigprocmask(SIG_SETMASK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static int
start(const struct kwd_config *cfg, int api_fd, int metrics_fd,
    struct children *ch)
{
	int front_end[MAX_CHAN], keeper_end[MAX_CHAN], ready[2];
	size_t n = KWD_API_CHANNELS(cfg) + 1;
	char c;
	pid_t pid;
	int rv = -1;

	for (size_t i = 0; i < n; i++) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) !=
		    0) {
			kw_log(KW_LOG_ERR, "master.socketpair",
			    strerror(errno), );
			for (size_t j = 0; j < i; j++) {
				close(front_end[j]);
				close(keeper_end[j]);
			}
			return -1;
		}
		front_end[i] = sv[0];
		keeper_end[i] = sv[1];
	}
	if (pipe2(ready, O_CLOEXEC) != 0)
		goto out;
	pid = fork();
	if (pid == 0) {
		struct kwd_keeper_args ka = {cfg, keeper_end, n, ready[1]};

		child_signals();
		close(ready[0]);
		close(api_fd);
		if (metrics_fd >= 0)
			close(metrics_fd);
		for (size_t i = 0; i < n; i++)
			close(front_end[i]);
		_exit(kwd_keeper_run(&ka));
	}
	if (pid < 0)
		goto out_ready;
	ch->keeper = pid;
	close(ready[1]);
	ready[1] = -1;
	pid = fork();
	if (pid == 0) {
		struct kwd_front_args fa = {cfg, api_fd, metrics_fd, front_end,
		    n};

		child_signals();
		close(ready[0]);
		for (size_t i = 0; i < n; i++)
			close(keeper_end[i]);
		_exit(kwd_front_run(&fa));
	}
	if (pid < 0)
		goto out_ready;
	ch->front = pid;
	/* Ready when the keeper says so (HSM opened or being retried). */
	{
		struct pollfd pfd = {ready[0], POLLIN, 0};

		if (poll(&pfd, 1, READY_WAIT_MS) == 1 &&
		    read(ready[0], &c, 1) == 1)
			rv = 0;
		else
			kw_log(KW_LOG_ERR, "master.start",
			    "the keeper did not become ready", );
	}
out_ready:
	if (ready[1] >= 0)
		close(ready[1]);
	close(ready[0]);
out:
	for (size_t i = 0; i < n; i++) {
		close(front_end[i]);
		close(keeper_end[i]);
	}
	return rv;
}

static void
stop_children(struct children *ch)
{
	pid_t pids[2] = {ch->front, ch->keeper};
	int waited = 0;

	for (int i = 0; i < 2; i++)
		if (pids[i] > 0)
			kill(pids[i], SIGTERM);
	while (waited < STOP_GRACE_MS && (pids[0] > 0 || pids[1] > 0)) {
		for (int i = 0; i < 2; i++)
			if (pids[i] > 0 &&
			    waitpid(pids[i], NULL, WNOHANG) == pids[i])
				pids[i] = 0;
		if (pids[0] > 0 || pids[1] > 0) {
			usleep(20000);
			waited += 20;
		}
	}
	for (int i = 0; i < 2; i++) {
		if (pids[i] > 0) {
			kill(pids[i], SIGKILL);
			waitpid(pids[i], NULL, 0);
		}
	}
	ch->front = ch->keeper = 0;
}

static const char *
describe(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exit %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "signal %d", WTERMSIG(status));
	else
		snprintf(buf, len, "status %d", status);
	return buf;
}

/* ---- modes ---- */

static int
check_config(const char *path, struct kwd_config **ret_cfg)
{
	struct kwd_config *cfg = NULL;
	struct kwd_policy *pol = NULL;
	char err[512];
	int rv;

	rv = kwd_config_load(path, &cfg, err, sizeof err);
	if (rv != KW_OK) {
		fprintf(stderr, "keywardd: %s: %s\n", path,
		    rv == KW_ERR_CONFIG ? err : kw_strerror(rv));
		return 1;
	}
	if (cfg->listen == NULL || cfg->tls_cert == NULL ||
	    cfg->database == NULL || cfg->policy == NULL ||
	    cfg->audit_log == NULL) {
		fprintf(stderr,
		    "keywardd: %s: listen, tls, database, policy "
		    "and audit_log are required to run the "
		    "daemon\n",
		    path);
		kwd_config_free(cfg);
		return 1;
	}
	err[0] = '\0';
	rv = kwd_policy_load(cfg->policy, &pol, err, sizeof err);
	if (rv != KW_OK) {
		fprintf(stderr, "keywardd: policy %s: %s\n", cfg->policy,
		    err[0] != '\0' ? err : kw_strerror(rv));
		kwd_config_free(cfg);
		return 1;
	}
	kwd_policy_free(pol);
	if (access(cfg->tls_cert, R_OK) != 0 ||
	    access(cfg->tls_key, R_OK) != 0 ||
	    access(cfg->tls_client_ca, R_OK) != 0) {
		fprintf(stderr, "keywardd: %s: a tls file is not readable\n",
		    path);
		kwd_config_free(cfg);
		return 1;
	}
	*ret_cfg = cfg;
	return 0;
}

static int
verify_audit(const char *path)
{
	uint64_t count = 0, bad = 0;
	char err[512] = "";
	int rv;

	rv = kwd_audit_verify(path, &count, &bad, err, sizeof err);
	if (rv == KW_OK) {
		printf("%s: %llu records, hash chain intact\n", path,
		    (unsigned long long)count);
		return 0;
	}
	if (rv == KW_ERR_AUTH)
		printf("%s: TAMPERED or damaged at line %llu: %s\n", path,
		    (unsigned long long)bad, err);
	else
		printf("%s: cannot verify: %s\n", path, kw_strerror(rv));
	return 1;
}

static int
run(struct kwd_config *cfg, const char *config_path)
{
	struct children ch = {0, 0, 0, 0};
	int api_fd = -1, metrics_fd = -1, sfd, status = 1, activated = 0;
	long wd = watchdog_ms();
	sigset_t set;

	if (kwd_sandbox_harden() != KW_OK)
		return 1;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0)
		return 1;
	api_fd = -1;
	activated = take_listen_fds(cfg, &api_fd, &metrics_fd);
	if (activated < 0)
		goto out;
	if (!activated) {
		api_fd = listen_on(cfg->listen, "listen");
		if (api_fd < 0)
			goto out;
	}
	if (!activated && cfg->metrics_listen != NULL) {
		metrics_fd = listen_on(cfg->metrics_listen, "metrics_listen");
		if (metrics_fd < 0)
			goto out;
	}
	if (start(cfg, api_fd, metrics_fd, &ch) != 0) {
		stop_children(&ch);
		goto out;
	}
	notify("READY=1\nSTATUS=serving");
	kw_log(KW_LOG_INFO, "master.ready", "keywardd serving",
	    KW_F("listen", cfg->listen), KW_F("keeper", (long)ch.keeper),
	    KW_F("front", (long)ch.front));
	for (;;) {
		struct pollfd pfd = {sfd, POLLIN, 0};
		struct signalfd_siginfo si;
		int n = poll(&pfd, 1, wd > 0 ? (int)wd : 1000);

		if (wd > 0)
			notify("WATCHDOG=1");
		if (n <= 0 || read(sfd, &si, sizeof si) != sizeof si)
			continue;
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			notify("STOPPING=1");
			kw_log(KW_LOG_INFO, "master.stop", "stopping", );
			stop_children(&ch);
			status = 0;
			break;
		}
		if (si.ssi_signo == SIGHUP) {
			struct kwd_policy *pol = NULL;
			char err[512];

			notify("RELOADING=1");
			if (kwd_policy_load(cfg->policy, &pol, err,
			        sizeof err) != KW_OK)
				kw_log(KW_LOG_ERR, "master.reload",
				    "policy refused; the previous one stays",
				    KW_F("path", cfg->policy),
				    KW_F("error", err));
			else if (ch.keeper > 0)
				kill(ch.keeper, SIGHUP);
			kwd_policy_free(pol);
			notify("READY=1");
			continue;
		}
		/* SIGCHLD: reap; a lost child restarts the pair. */
		for (;;) {
			char how[64];
			int st;
			pid_t pid = waitpid(-1, &st, WNOHANG);

			if (pid <= 0)
				break;
			if (pid != ch.keeper && pid != ch.front)
				continue;
			kw_log(KW_LOG_ERR, "master.child_exit",
			    "a child stopped; restarting front and keeper",
			    KW_F("child",
			        pid == ch.keeper ? "keeper" : "front"),
			    KW_F("how", describe(st, how, sizeof how)));
			if (pid == ch.keeper)
				ch.keeper = 0;
			else
				ch.front = 0;
			stop_children(&ch);
			if (time(NULL) - ch.window_start > 10) {
				ch.window_start = time(NULL);
				ch.restarts = 0;
			}
			/* Crash loop: slow down rather than spin. */
			if (++ch.restarts > 5)
				sleep(1);
			/* Fresh listening sockets: the old front shared them
			 * and could have shut them down (a clean front
			 * quiesces instead; a compromised one might not).
			 * Under socket activation there is no network to
			 * bind in: the systemd sockets are kept. */
			if (!activated &&
			    relisten(cfg, &api_fd, &metrics_fd) != 0) {
				stop_children(&ch);
				goto out;
			}
			if (start(cfg, api_fd, metrics_fd, &ch) != 0)
				kw_log(KW_LOG_ERR, "master.restart",
				    "restart incomplete; will retry on the "
				    "next "
				    "exit",
				    KW_F("config", config_path));
		}
	}
out:
	if (api_fd >= 0)
		close(api_fd);
	if (metrics_fd >= 0)
		close(metrics_fd);
	close(sfd);
	return status;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"test", no_argument, NULL, 't'},
	    {"verify-audit", required_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *config = NULL;
	struct kwd_config *cfg = NULL;
	bool test = false;
	int opt, status;

	while ((opt = getopt_long(argc, argv, "c:th", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config = optarg;
			break;
		case 't':
			test = true;
			break;
		case 'V':
			return verify_audit(optarg);
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		default:
			fputs(usage_text, stderr);
			return 2;
		}
	}
	if (config == NULL || optind != argc) {
		fputs(usage_text, stderr);
		return 2;
	}
	if (check_config(config, &cfg) != 0)
		return 1;
	if (test) {
		printf("keywardd: %s: configuration and policy OK\n", config);
		kwd_config_free(cfg);
		return 0;
	}
	status = run(cfg, config);
	kwd_config_free(cfg);
	return status;
}

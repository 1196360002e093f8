/*
 * sandbox.c: how keyward's processes narrow themselves (see sandbox.h for
 * the order). Every step is checked after it is taken: a sandbox that
 * silently did not apply is worse than none, because the rest of the code
 * is written as if it had.
 *
 * The seccomp allow-list of the front was derived by tracing a
 * libmicrohttpd TLS daemon set up exactly like the front (epoll, internal
 * thread pool, GnuTLS, client certificates, listening socket passed in)
 * with strace -f while curl and hand-made clients exercised keep-alive,
 * new connections, large bodies, aborted handshakes and idle timeouts;
 * docs/HARDENING.md keeps the evidence.
 *
 * Neither filter writes a core dump when it kills: kwd_sandbox_harden()
 * set RLIMIT_CORE to 0 and, more to the point, PR_SET_DUMPABLE to 0, which
 * makes the kernel skip the dump whatever core_pattern says (a pipe to
 * systemd-coredump ignores RLIMIT_CORE, it does not ignore dumpable).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* getpwnam_r buffer: start here, double on ERANGE up to the cap. */
#define PWBUF_MIN 4096
#define PWBUF_MAX (1024 * 1024)

/*
 * The malloc warm-up below allocates WARM_TOTAL in blocks just under the
 * smallest mmap threshold (128 KiB, so they come from the thread's arena
 * heap), then frees them in reverse order: the freed top of the heap then
 * exceeds any trim threshold glibc can reach (at most 2 * 32 MiB). About
 * 25 ms, once per front start.
 */
#define WARM_BLOCK (120 * 1024)
#define WARM_TOTAL ((size_t)64 * 1024 * 1024)

int
kwd_sandbox_harden(void)
{
	struct rlimit rl = {0, 0};
	int rv = KW_ERR_INTERNAL;

	/* A seccomp kill, an abort or a crash must not write the memory of a
	 * process that holds keys, DEKs or the PIN to disk. */
	if (setrlimit(RLIMIT_CORE, &rl) != 0 ||
	    getrlimit(RLIMIT_CORE, &rl) != 0 || rl.rlim_cur != 0 ||
	    rl.rlim_max != 0) {
		kw_log(KW_LOG_ERR, "sandbox.harden", "cannot set RLIMIT_CORE 0",
		    KW_F("errno", errno));
		goto out;
	}
	/* Not dumpable: no core dump even through a core_pattern pipe, and a
	 * same-uid process cannot ptrace us or read /proc/<pid>/mem. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 ||
	    prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) {
		kw_log(KW_LOG_ERR, "sandbox.harden",
		    "cannot clear PR_SET_DUMPABLE", KW_F("errno", errno));
		goto out;
	}
	/* No setuid binary, file capability or LSM transition can give this
	 * process or its children more than it has now; seccomp filters
	 * need it too when loaded without CAP_SYS_ADMIN. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) {
		kw_log(KW_LOG_ERR, "sandbox.harden",
		    "cannot set PR_SET_NO_NEW_PRIVS", KW_F("errno", errno));
		goto out;
	}
	rv = KW_OK;
out:
	return rv;
}

/* The uid and gid of user, through NSS (so before any chroot). */
static int
lookup_user(const char *user, uid_t *ret_uid, gid_t *ret_gid)
{
	struct passwd pw, *found = NULL;
	char *buf = NULL, *nbuf;
	size_t len = PWBUF_MIN;
	int e, rv = KW_ERR_CONFIG;

	for (;;) {
		nbuf = realloc(buf, len);
		if (nbuf == NULL) {
			rv = KW_ERR_NOMEM;
			goto out;
		}
		buf = nbuf;
		e = getpwnam_r(user, &pw, buf, len, &found);
		if (e != ERANGE || len >= PWBUF_MAX)
			break;
		len *= 2;
	}
	if (e != 0 || found == NULL) {
		kw_log(KW_LOG_ERR, "sandbox.drop",
		    "no such user: create it or fix front_user/keeper_user",
		    KW_F("user", user), KW_F("errno", e));
		goto out;
	}
	/* Dropping "to root" would drop nothing and fail the check that
	 * root cannot be regained: say what is wrong instead. */
	if (pw.pw_uid == 0 || pw.pw_gid == 0) {
		kw_log(KW_LOG_ERR, "sandbox.drop",
		    "the user to drop to must not have uid or gid 0",
		    KW_F("user", user));
		goto out;
	}
	*ret_uid = pw.pw_uid;
	*ret_gid = pw.pw_gid;
	rv = KW_OK;
out:
	free(buf);
	return rv;
}

/* Is the directory open at fd empty (nothing but "." and "..")? */
static int
dir_is_empty(int fd, bool *ret_empty)
{
	struct dirent *de;
	DIR *d = NULL;
	bool empty = true;
	int dfd, rv = KW_ERR_IO;

	/* closedir() closes the fd it was given: give it a copy. */
	dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (dfd < 0)
		goto out;
	d = fdopendir(dfd);
	if (d == NULL) {
		close(dfd);
		goto out;
	}
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0) {
			empty = false;
			break;
		}
	}
	if (empty && errno != 0)
		goto out;
	*ret_empty = empty;
	rv = KW_OK;
out:
	if (d != NULL)
		closedir(d);
	return rv;
}

/*
 * Open the chroot directory and check it through the open descriptor, so
 * that the checks and the chroot apply to the same inode even if the path
 * is swapped meanwhile: a directory (not a symlink), owned by root, not
 * writable by group or others (else an unprivileged user could put files,
 * devices or setuid helpers into our root), and empty.
 */
static int
open_chroot_dir(const char *path, int *ret_fd)
{
	struct stat st;
	bool empty = false;
	int fd, rv = KW_ERR_CONFIG;

	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		kw_log(KW_LOG_ERR, "sandbox.drop",
		    "front_chroot must be an existing directory (not a "
		    "symlink)",
		    KW_F("path", path), KW_F("errno", errno));
		goto out;
	}
	if (fstat(fd, &st) != 0) {
		rv = KW_ERR_IO;
		goto out;
	}
	if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		kw_log(KW_LOG_ERR, "sandbox.drop",
		    "front_chroot must be owned by root and not writable by "
		    "group or others (chown root: and chmod 0755 it)",
		    KW_F("path", path), KW_F("uid", (unsigned)st.st_uid),
		    KW_F("mode", (unsigned)(st.st_mode & 07777)));
		rv = KW_ERR_PERM;
		goto out;
	}
	rv = dir_is_empty(fd, &empty);
	if (rv != KW_OK)
		goto out;
	if (!empty) {
		kw_log(KW_LOG_ERR, "sandbox.drop",
		    "front_chroot must be an empty directory",
		    KW_F("path", path));
		rv = KW_ERR_CONFIG;
		goto out;
	}
	*ret_fd = fd;
	fd = -1;
	rv = KW_OK;
out:
	if (fd >= 0)
		close(fd);
	return rv;
}

/* After setresuid: nothing of root is left, and none can come back. */
static int
check_dropped(uid_t uid, gid_t gid)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg;

	/* setuid(0) must fail; if it does not, this process is root again
	 * and the caller must exit, which KW_ERR_INTERNAL makes it do. */
	if (setuid(0) != -1 || setgid(0) != -1)
		return KW_ERR_INTERNAL;
	if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0)
		return KW_ERR_INTERNAL;
	if (ru != uid || eu != uid || su != uid || ru == 0 || eu == 0 ||
	    su == 0)
		return KW_ERR_INTERNAL;
	if (rg != gid || eg != gid || sg != gid)
		return KW_ERR_INTERNAL;
	if (getgroups(0, NULL) != 0)
		return KW_ERR_INTERNAL;
	return KW_OK;
}

int
kwd_sandbox_drop(const char *user, const char *chroot_dir)
{
	uid_t uid = 0;
	gid_t gid = 0;
	int dirfd = -1, rv = KW_OK;

	if (user == NULL && chroot_dir == NULL)
		goto out;
	if (geteuid() != 0) {
		kw_log(KW_LOG_ERR, "sandbox.drop",
		    "changing user or chroot needs root: run keywardd as root "
		    "or remove front_user, keeper_user and front_chroot from "
		    "the configuration",
		    KW_F("user", user != NULL ? user : "-"),
		    KW_F("chroot", chroot_dir != NULL ? chroot_dir : "-"),
		    KW_F("euid", (unsigned)geteuid()));
		rv = KW_ERR_DENIED;
		goto out;
	}
	/* The user database is outside the chroot: look it up first. */
	if (user != NULL) {
		rv = lookup_user(user, &uid, &gid);
		if (rv != KW_OK)
			goto out;
	}
	if (chroot_dir != NULL) {
		rv = open_chroot_dir(chroot_dir, &dirfd);
		if (rv != KW_OK)
			goto out;
		/* chroot(".") after fchdir() roots us at the inode that was
		 * checked; chdir("/") leaves no handle on the old tree. */
		if (fchdir(dirfd) != 0 || chroot(".") != 0 || chdir("/") != 0) {
			kw_log(KW_LOG_ERR, "sandbox.drop", "chroot failed",
			    KW_F("path", chroot_dir), KW_F("errno", errno));
			rv = KW_ERR_INTERNAL;
			goto out;
		}
		if (user == NULL)
			kw_log(KW_LOG_WARN, "sandbox.drop",
			    "chroot without a user to drop to: root can leave "
			    "a chroot, set front_user",
			    KW_F("chroot", chroot_dir));
	}
	if (user != NULL) {
		/* Groups first: once the uid is gone, so is the right to
		 * change them (OpenBSD's and OpenSSH's order). */
		if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 ||
		    setresuid(uid, uid, uid) != 0) {
			kw_log(KW_LOG_ERR, "sandbox.drop",
			    "cannot change to the configured user",
			    KW_F("user", user), KW_F("errno", errno));
			rv = KW_ERR_INTERNAL;
			goto out;
		}
		rv = check_dropped(uid, gid);
		if (rv != KW_OK) {
			kw_log(KW_LOG_ERR, "sandbox.drop",
			    "root privileges are still reachable after the "
			    "drop",
			    KW_F("user", user));
			goto out;
		}
	}
	/* A credential change resets the dumpable flag to the
	 * fs.suid_dumpable sysctl, which may be 1 or 2: clear it again. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 ||
	    prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) {
		kw_log(KW_LOG_ERR, "sandbox.drop",
		    "cannot clear PR_SET_DUMPABLE after the drop",
		    KW_F("errno", errno));
		rv = KW_ERR_INTERNAL;
		goto out;
	}
	kw_log(KW_LOG_INFO, "sandbox.drop", "privileges dropped",
	    KW_F("user", user != NULL ? user : "-"), KW_F("uid", (unsigned)uid),
	    KW_F("chroot", chroot_dir != NULL ? chroot_dir : "-"));
out:
	if (dirfd >= 0)
		close(dirfd);
	return rv;
}

/*
 * Rules are added through this table so that a failure names the system
 * call, and so that a name this libseccomp or architecture does not know
 * is skipped (with a debug line) instead of failing start-up: a system
 * call that does not exist cannot be made.
 */
struct rule {
	const char *name;
	unsigned ncmp;
	struct scmp_arg_cmp cmp[2];
};

/*
 * Table entries. ARG() names every field of the comparison: libseccomp's
 * own SCMP_A0()... leave datum_b to the compiler, which clang's -Wextra
 * refuses.
 */
/* clang-format off */
#define ARG(n, cmp, a) \
	{.arg = (n), .op = (cmp), .datum_a = (scmp_datum_t)(a), .datum_b = 0}
#define ARG_MASKED(n, mask, val) \
	{.arg = (n), .op = SCMP_CMP_MASKED_EQ, \
	    .datum_a = (scmp_datum_t)(mask), .datum_b = (scmp_datum_t)(val)}
#define RULE(n) {.name = (n), .ncmp = 0}
#define RULE1(n, c) {.name = (n), .ncmp = 1, .cmp = {c}}
#define RULE2(n, c1, c2) {.name = (n), .ncmp = 2, .cmp = {c1, c2}}
/* clang-format on */

static int
add_rules(scmp_filter_ctx ctx, uint32_t action, const struct rule *rules,
    size_t n, const char *filter)
{
	int nr, e;

	for (size_t i = 0; i < n; i++) {
		nr = seccomp_syscall_resolve_name(rules[i].name);
		if (nr == __NR_SCMP_ERROR) {
			kw_log(KW_LOG_DEBUG, "sandbox.seccomp",
			    "system call unknown here, skipped",
			    KW_F("filter", filter),
			    KW_F("syscall", rules[i].name));
			continue;
		}
		e = seccomp_rule_add_array(ctx, action, nr, rules[i].ncmp,
		    rules[i].cmp);
		if (e != 0) {
			kw_log(KW_LOG_ERR, "sandbox.seccomp",
			    "cannot add a rule", KW_F("filter", filter),
			    KW_F("syscall", rules[i].name), KW_F("error", e));
			return KW_ERR_INTERNAL;
		}
	}
	return KW_OK;
}

/* Kill the whole process on a bad architecture (x32, int 0x80) as well. */
static int
filter_new(uint32_t def_action, const char *filter, scmp_filter_ctx *ret_ctx)
{
	scmp_filter_ctx ctx;
	int e;

	ctx = seccomp_init(def_action);
	if (ctx == NULL) {
		kw_log(KW_LOG_ERR, "sandbox.seccomp", "seccomp_init failed",
		    KW_F("filter", filter));
		return KW_ERR_INTERNAL;
	}
	/* TSYNC: the filter covers every thread that exists (the front's
	 * MHD workers, the keeper's PKCS#11 workers), or the load fails. */
	if ((e = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)) != 0 ||
	    (e = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1)) != 0 ||
	    (e = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH,
	         SCMP_ACT_KILL_PROCESS)) != 0) {
		kw_log(KW_LOG_ERR, "sandbox.seccomp",
		    "cannot set filter attributes", KW_F("filter", filter),
		    KW_F("error", e));
		seccomp_release(ctx);
		return KW_ERR_INTERNAL;
	}
	*ret_ctx = ctx;
	return KW_OK;
}

static int
filter_load(scmp_filter_ctx ctx, const char *filter)
{
	int e;

	e = seccomp_load(ctx);
	if (e != 0) {
		kw_log(KW_LOG_ERR, "sandbox.seccomp",
		    "cannot load the filter (a thread with another filter?)",
		    KW_F("filter", filter), KW_F("error", e));
		return KW_ERR_INTERNAL;
	}
	return KW_OK;
}

static void *
malloc_warm_thread(void *arg)
{
	enum { N = WARM_TOTAL / WARM_BLOCK };
	void **blocks = arg;

	for (size_t i = 0; i < N; i++)
		blocks[i] = malloc(WARM_BLOCK);
	for (size_t i = N; i-- > 0;)
		free(blocks[i]);
	return NULL;
}

/*
 * Library state that is set up lazily by reading a file, and would be set
 * up for the first time after the filter (and killed by it) if we did not
 * set it up now. Each one was seen in the strace of the front:
 *
 * - glibc's time zone: the first gmtime_r() (every log line) opens
 *   /etc/localtime once; tzset() does it now (in a chroot it finds no
 *   file and settles on UTC, which is what the logs use anyway).
 * - jansson's hash seed: the first json_object() reads /dev/urandom
 *   (absent in the chroot, where jansson would fall back to a seed from
 *   the time and pid, which helps hash-flooding). Seed it from
 *   getrandom(2); a no-op if the master already seeded it before fork.
 * - glibc malloc: the first time a thread's (non-main) arena heap shrinks,
 *   it reads /proc/sys/vm/overcommit_memory once and caches the answer.
 *   Under load that happens at a random moment (the trace caught it on a
 *   2 MiB request body), so make it happen now, in a short-lived thread
 *   that fills and frees its own arena. Under ASan malloc is ASan's and
 *   this is harmless.
 */
static int
front_warm_up(void)
{
	pthread_t t;
	void **blocks = NULL;
	uint32_t seed = 0;
	int rv = KW_ERR_INTERNAL;

	tzset();
	if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
		seed = 0;
	/* 0 asks jansson to find its own seed (from /dev/urandom). */
	json_object_seed(seed);

	blocks = calloc(WARM_TOTAL / WARM_BLOCK, sizeof *blocks);
	if (blocks == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	if (pthread_create(&t, NULL, malloc_warm_thread, blocks) != 0 ||
	    pthread_join(t, NULL) != 0) {
		kw_log(KW_LOG_ERR, "sandbox.seccomp",
		    "cannot run the malloc warm-up thread", );
		goto out;
	}
	rv = KW_OK;
out:
	free(blocks);
	return rv;
}

int
kwd_sandbox_seccomp_front(void)
{
	/* Filled in at run time: tgkill may only target this process. */
	const struct scmp_arg_cmp self =
	    ARG(0, SCMP_CMP_EQ, (scmp_datum_t)getpid());
	const struct scmp_arg_cmp noexec = ARG_MASKED(2, PROT_EXEC, 0);
	const struct rule allow[] = {
	    /* I/O on descriptors that exist: client sockets, the keeper
	     * channels, MHD's eventfd, stderr. No open(), so no new ones
	     * but those accept4() makes. */
	    RULE("read"),
	    RULE("write"),
	    RULE("readv"),
	    RULE("writev"),
	    RULE("recvfrom"),
	    RULE("recvmsg"),
	    RULE("sendto"),
	    RULE("sendmsg"),
	    RULE("close"),
	    /* The listening socket was bound and passed in by the master:
	     * accepting on it is the front's job; socket(), bind(),
	     * listen() and connect() stay out. */
	    RULE("accept4"),
	    RULE("shutdown"),
	    RULE("getsockname"),
	    RULE("getpeername"),
	    RULE("getsockopt"),
	    /* MHD sets only TCP_NODELAY and TCP_CORK after start-up;
	     * SO_LINGER lets the front reset a connection it refuses.
	     * Nothing that attaches BPF (SO_ATTACH_*) or kernel TLS
	     * (TCP_ULP). */
	    RULE2("setsockopt", ARG(1, SCMP_CMP_EQ, IPPROTO_TCP),
	        ARG(2, SCMP_CMP_EQ, TCP_NODELAY)),
	    RULE2("setsockopt", ARG(1, SCMP_CMP_EQ, IPPROTO_TCP),
	        ARG(2, SCMP_CMP_EQ, TCP_CORK)),
	    RULE2("setsockopt", ARG(1, SCMP_CMP_EQ, SOL_SOCKET),
	        ARG(2, SCMP_CMP_EQ, SO_LINGER)),
	    /* MHD makes sockets non-blocking and close-on-exec with fcntl
	     * when accept4() flags are not available. */
	    RULE1("fcntl", ARG(1, SCMP_CMP_EQ, F_GETFL)),
	    RULE1("fcntl", ARG(1, SCMP_CMP_EQ, F_SETFL)),
	    RULE1("fcntl", ARG(1, SCMP_CMP_EQ, F_GETFD)),
	    RULE1("fcntl", ARG(1, SCMP_CMP_EQ, F_SETFD)),
	    /* Event loops: MHD's epoll workers, poll() on keeper channels. */
	    RULE("epoll_wait"),
	    RULE("epoll_pwait"),
	    RULE("epoll_ctl"),
	    RULE("poll"),
	    RULE("ppoll"),
	    /* Memory: malloc, the secure arena (sodium_malloc locks and
	     * guards its pages). Never executable: no code is made at run
	     * time, so a writable page can never become code. */
	    RULE1("mmap", noexec),
	    RULE1("mprotect", noexec),
	    RULE("munmap"),
	    RULE("mremap"),
	    RULE("brk"),
	    RULE("madvise"),
	    RULE("mlock"),
	    RULE("munlock"),
	    /* Threads that exist: locks, and the last steps of a thread's
	     * own start-up (MHD_start_daemon() returns before its workers
	     * have run, so the filter can land while they register rseq
	     * and robust futexes and name themselves). No clone(): MHD
	     * makes no thread per connection in this mode. */
	    RULE("futex"),
	    RULE("sched_yield"),
	    RULE("set_robust_list"),
	    RULE("rseq"),
	    RULE1("prctl", ARG(0, SCMP_CMP_EQ, PR_SET_NAME)),
	    /* glibc malloc sizes its arena limit from the CPU set once
	     * more than eight arenas exist; qsort() sizes its buffer from
	     * sysinfo(). */
	    RULE("sched_getaffinity"),
	    RULE("sysinfo"),
	    /* Time and randomness (GnuTLS, libsodium, jansson, the logs);
	     * the vDSO answers most clock calls without a system call. */
	    RULE("clock_gettime"),
	    RULE("clock_getres"),
	    RULE("clock_nanosleep"),
	    RULE("nanosleep"),
	    RULE("gettimeofday"),
	    RULE("time"),
	    RULE("getrandom"),
	    /* Signals: SIGTERM through sigwait, returns from handlers,
	     * and abort(), which may only signal this process. */
	    RULE("rt_sigprocmask"),
	    RULE("rt_sigreturn"),
	    RULE("rt_sigtimedwait"),
	    RULE("sigaltstack"),
	    RULE("getpid"),
	    RULE("gettid"),
	    RULE1("tgkill", self),
	    RULE("restart_syscall"),
	    RULE("exit"),
	    RULE("exit_group"),
	};
	scmp_filter_ctx ctx = NULL;
	int rv;

	rv = front_warm_up();
	if (rv != KW_OK)
		goto out;
	rv = filter_new(SCMP_ACT_KILL_PROCESS, "front", &ctx);
	if (rv != KW_OK)
		goto out;
	rv = add_rules(ctx, SCMP_ACT_ALLOW, allow,
	    sizeof allow / sizeof allow[0], "front");
	if (rv != KW_OK)
		goto out;
	/* From here on nothing is logged: the filter is live on return. */
	rv = filter_load(ctx, "front");
out:
	if (ctx != NULL)
		seccomp_release(ctx);
	return rv;
}

int
kwd_sandbox_seccomp_keeper(void)
{
	const struct rule kill[] = {
	    /* The keeper talks to the front and journald over AF_UNIX and
	     * never to the network (a network HSM will need a config
	     * option that adds AF_INET/AF_INET6 here). The address family
	     * of an existing fd is invisible to seccomp, so the family is
	     * checked where a socket is made; connect(), bind(), listen()
	     * and accept() then only ever see AF_UNIX sockets, provided
	     * the keeper inherits no network socket from the master. */
	    RULE1("socket", ARG(0, SCMP_CMP_NE, AF_UNIX)),
	    RULE1("socketpair", ARG(0, SCMP_CMP_NE, AF_UNIX)),
	    /* io_uring can create sockets and open files without going
	     * through the system calls filtered here. */
	    RULE("io_uring_setup"),
	    RULE("io_uring_enter"),
	    RULE("io_uring_register"),
	    /* No new programs, no reading or writing other processes. */
	    RULE("execve"),
	    RULE("execveat"),
	    RULE("ptrace"),
	    RULE("process_vm_readv"),
	    RULE("process_vm_writev"),
	    /* No new namespaces (a user namespace hands out every
	     * capability inside it): clone() is checked by flag below,
	     * clone3() hides its flags in memory, so it gets ENOSYS and
	     * glibc falls back to clone(). */
	    RULE("unshare"),
	    RULE("setns"),
	    /* Whole-system operations the keeper never needs; most need
	     * privileges it does not have, and trying is an attack. */
	    RULE("mount"),
	    RULE("umount2"),
	    RULE("pivot_root"),
	    RULE("chroot"),
	    RULE("fsopen"),
	    RULE("fsmount"),
	    RULE("fsconfig"),
	    RULE("fspick"),
	    RULE("move_mount"),
	    RULE("open_tree"),
	    RULE("mount_setattr"),
	    RULE("init_module"),
	    RULE("finit_module"),
	    RULE("delete_module"),
	    RULE("kexec_load"),
	    RULE("kexec_file_load"),
	    RULE("bpf"),
	    RULE("perf_event_open"),
	    RULE("keyctl"),
	    RULE("add_key"),
	    RULE("request_key"),
	    RULE("userfaultfd"),
	    RULE("personality"),
	    RULE("swapon"),
	    RULE("swapoff"),
	    RULE("reboot"),
	    RULE("iopl"),
	    RULE("ioperm"),
	};
	const unsigned long ns_flags[] = {CLONE_NEWNS, CLONE_NEWUSER,
	    CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWUTS, CLONE_NEWIPC,
	    CLONE_NEWCGROUP};
	scmp_filter_ctx ctx = NULL;
	int rv, e;

	rv = filter_new(SCMP_ACT_ALLOW, "keeper", &ctx);
	if (rv != KW_OK)
		goto out;
	rv = add_rules(ctx, SCMP_ACT_KILL_PROCESS, kill,
	    sizeof kill / sizeof kill[0], "keeper");
	if (rv != KW_OK)
		goto out;
	for (size_t i = 0; i < sizeof ns_flags / sizeof ns_flags[0]; i++) {
		e = seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS,
		    SCMP_SYS(clone), 1,
		    SCMP_A0(SCMP_CMP_MASKED_EQ, ns_flags[i], ns_flags[i]));
		if (e != 0) {
			kw_log(KW_LOG_ERR, "sandbox.seccomp",
			    "cannot add a rule", KW_F("filter", "keeper"),
			    KW_F("syscall", "clone"), KW_F("error", e));
			rv = KW_ERR_INTERNAL;
			goto out;
		}
	}
	e = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (e != 0) {
		kw_log(KW_LOG_ERR, "sandbox.seccomp", "cannot add a rule",
		    KW_F("filter", "keeper"), KW_F("syscall", "clone3"),
		    KW_F("error", e));
		rv = KW_ERR_INTERNAL;
		goto out;
	}
	rv = filter_load(ctx, "keeper");
out:
	if (ctx != NULL)
		seccomp_release(ctx);
	return rv;
}

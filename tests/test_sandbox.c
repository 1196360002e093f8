/*
 * test_sandbox.c: the process sandbox (broker/sandbox.c).
 *
 * Every test that changes the process (limits, filters, users, root
 * directory) does it in a forked child and judges the child by its exit
 * status or the signal that ended it; the child reports a failed check by
 * exiting with the number of the check. Tests that need root skip loudly
 * when run without it.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "sandbox.h"

#if defined(__SANITIZE_ADDRESS__)
#define KW_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KW_ASAN 1
#endif
#endif

/* A check in a child: exit with its line number if it fails. */
#define CHECK(cond)                                \
	do {                                       \
		if (!(cond))                       \
			_exit(__LINE__ % 250 + 1); \
	} while (0)

static int null_fd = -1;

static int
group_setup(void **state)
{
	(void)state;
	null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (null_fd < 0)
		return -1;
	/* Refusals are logged on purpose; keep them off the test output. */
	kw_log_set_fd(null_fd);
	return 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	kw_log_set_fd(2);
	close(null_fd);
	return 0;
}

/*
 * Run fn in a child and return its wait status. The child leaves with
 * _exit() only: no atexit handlers, no stdio flush of the parent's
 * buffers, and no LeakSanitizer pass (which would need ptrace and clone,
 * both of which the filters kill).
 */
static int
in_child(void (*fn)(void *), void *arg)
{
	static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGSYS,
	    SIGABRT};
	int status = -1;
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* cmocka's handlers would longjmp into the parent's state. */
		for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
			signal(sigs[i], SIG_DFL);
		fn(arg);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static void
assert_exited_ok(int status)
{
	if (WIFSIGNALED(status))
		print_error("child killed by signal %d\n", WTERMSIG(status));
	else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
		print_error("child check failed (code %d: line %% 250 + 1)\n",
		    WEXITSTATUS(status));
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void
assert_killed_by_sigsys(int status)
{
	if (WIFEXITED(status))
		print_error("child exited with %d instead of dying\n",
		    WEXITSTATUS(status));
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSYS);
	/* harden() ran first: the kill must not have dumped core. */
	assert_false(WCOREDUMP(status));
}

static bool
is_root(void)
{
	return geteuid() == 0;
}

static void
skip_unless_root(const char *what)
{
	if (!is_root()) {
		print_message("SKIP: %s needs root (run the suite as root to "
		              "test privilege dropping)\n",
		    what);
		skip();
	}
}

static void
make_temp_dir(char *buf, size_t len)
{
	assert_true(
	    (size_t)snprintf(buf, len, "%s/kw-sandbox-XXXXXX",
	        getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp") < len);
	assert_non_null(mkdtemp(buf));
}

static size_t
dir_entries(const char *path)
{
	struct dirent *de;
	size_t n = 0;
	DIR *d;

	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/* Remove the files in path (one level), then path itself. */
static void
remove_dir(const char *path)
{
	struct dirent *de;
	char p[4096];
	DIR *d;

	d = opendir(path);
	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof p, "%s/%s", path, de->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(path);
}

/* ---- harden ---- */

static void
child_harden(void *arg)
{
	struct rlimit rl;

	(void)arg;
	CHECK(kwd_sandbox_harden() == KW_OK);
	CHECK(getrlimit(RLIMIT_CORE, &rl) == 0);
	CHECK(rl.rlim_cur == 0 && rl.rlim_max == 0);
	CHECK(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0);
	CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);
	/* The hard limit is 0 too: the core limit cannot be raised again. */
	rl.rlim_cur = rl.rlim_max = 1024 * 1024;
	CHECK(setrlimit(RLIMIT_CORE, &rl) != 0);
	/* Twice is fine (the master and its children both call it). */
	CHECK(kwd_sandbox_harden() == KW_OK);
}

static void
test_sandbox_harden_sets_properties(void **state)
{
	(void)state;
	assert_exited_ok(in_child(child_harden, NULL));
}

/* ---- the front's allow-list ---- */

static void
child_front_basics(void *arg)
{
	unsigned char rnd[64], buf[64];
	struct timespec ts, d = {0, 1000000};
	struct pollfd pfd;
	int p[2], sp[2];
	void *big;

	(void)arg;
	/* Descriptors exist before the filter, as in the front. */
	CHECK(pipe2(p, O_CLOEXEC) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == 0);
	CHECK(kwd_sandbox_harden() == KW_OK);
	CHECK(kwd_sandbox_seccomp_front() == KW_OK);

	CHECK(write(p[1], "ping", 4) == 4);
	CHECK(read(p[0], buf, sizeof buf) == 4);
	CHECK(memcmp(buf, "ping", 4) == 0);
	CHECK(send(sp[0], "req", 3, MSG_NOSIGNAL) == 3);
	pfd.fd = sp[1];
	pfd.events = POLLIN;
	CHECK(poll(&pfd, 1, 1000) == 1);
	CHECK(recv(sp[1], buf, sizeof buf, 0) == 3);
	CHECK(clock_gettime(CLOCK_REALTIME, &ts) == 0 && ts.tv_sec > 0);
	CHECK(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
	CHECK(time(NULL) > 0);
	CHECK(nanosleep(&d, NULL) == 0);
	CHECK(getrandom(rnd, sizeof rnd, 0) == (ssize_t)sizeof rnd);
	/* A log line: time formatting and one write(2). */
	kw_log(KW_LOG_ERR, "test.sandbox", "logging under the filter",
	    KW_F("n", 1));
	/* malloc large enough to be mmap()ed, then unmapped. */
	big = malloc(4 * 1024 * 1024);
	CHECK(big != NULL);
	memset(big, 1, 4 * 1024 * 1024);
	free(big);
	CHECK(sched_yield() == 0);
	CHECK(close(p[0]) == 0 && close(p[1]) == 0);
}

static void
test_sandbox_front_allows_io_time_random(void **state)
{
	(void)state;
	assert_exited_ok(in_child(child_front_basics, NULL));
}

static void
act_open(void)
{
	(void)open("/etc/hostname", O_RDONLY);
}

static void
act_openat(void)
{
	(void)openat(AT_FDCWD, "/etc/passwd", O_RDONLY | O_CLOEXEC);
}

static void
act_socket_inet(void)
{
	(void)socket(AF_INET, SOCK_STREAM, 0);
}

static void
act_socket_unix(void)
{
	(void)socket(AF_UNIX, SOCK_STREAM, 0);
}

static void
act_execve(void)
{
	char *const argv[] = {"true", NULL};
	char *const envp[] = {NULL};

	(void)execve("/bin/true", argv, envp);
}

static void
act_fork(void)
{
	if (fork() == 0)
		_exit(0);
}

static void *
noop_thread(void *arg)
{
	return arg;
}

static void
act_thread(void)
{
	pthread_t t;

	/* The return value is never seen: clone/clone3 kills first. */
	if (pthread_create(&t, NULL, noop_thread, NULL) == 0)
		pthread_join(t, NULL);
}

static void
act_mmap_exec(void)
{
	(void)mmap(NULL, 4096, PROT_READ | PROT_EXEC,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

static void
act_mprotect_exec(void)
{
	void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p != MAP_FAILED)
		(void)mprotect(p, 4096, PROT_READ | PROT_EXEC);
}

static void
act_ptrace(void)
{
	(void)ptrace(PTRACE_TRACEME, 0, NULL, NULL);
}

static void
act_kill_parent(void)
{
	(void)kill(getppid(), 0);
}

static void
act_dumpable(void)
{
	(void)prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

static void
act_fcntl_dup(void)
{
	(void)fcntl(0, F_DUPFD_CLOEXEC, 0);
}

static void
act_ioctl(void)
{
	int n;

	(void)syscall(SYS_ioctl, 0, 0x541B /* FIONREAD */, &n);
}

struct action {
	const char *name;
	void (*fn)(void);
};

static void
child_front_act(void *arg)
{
	const struct action *a = arg;

	CHECK(kwd_sandbox_harden() == KW_OK);
	CHECK(kwd_sandbox_seccomp_front() == KW_OK);
	a->fn();
	/* Still alive: the filter let it through. */
	_exit(99);
}

static void
test_sandbox_front_kills_forbidden(void **state)
{
	static const struct action acts[] = {
	    {"open", act_open},
	    {"openat", act_openat},
	    {"socket(AF_INET)", act_socket_inet},
	    {"socket(AF_UNIX)", act_socket_unix},
	    {"execve", act_execve},
	    {"fork", act_fork},
	    {"pthread_create", act_thread},
	    {"mmap(PROT_EXEC)", act_mmap_exec},
	    {"mprotect(PROT_EXEC)", act_mprotect_exec},
	    {"ptrace", act_ptrace},
	    {"kill(parent)", act_kill_parent},
	    {"prctl(PR_SET_DUMPABLE)", act_dumpable},
	    {"fcntl(F_DUPFD)", act_fcntl_dup},
	    {"ioctl", act_ioctl},
	};

	(void)state;
	for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) {
		int status = in_child(child_front_act, (void *)&acts[i]);

		if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSYS)
			print_error("front filter let %s through\n",
			    acts[i].name);
		assert_killed_by_sigsys(status);
	}
}

struct core_case {
	const char *dir;
	bool harden;
};

static void
child_front_open_in(void *arg)
{
	const struct core_case *c = arg;
	struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};

	CHECK(chdir(c->dir) == 0);
	if (c->harden)
		CHECK(kwd_sandbox_harden() == KW_OK);
	else
		(void)setrlimit(RLIMIT_CORE, &rl);
	CHECK(kwd_sandbox_seccomp_front() == KW_OK);
	act_open();
	_exit(99);
}

#ifndef KW_ASAN
/* Does the kernel write cores as plain files named core* in the cwd? */
static bool
core_pattern_is_local(void)
{
	char buf[256] = "";
	FILE *f;

	f = fopen("/proc/sys/kernel/core_pattern", "re");
	if (f == NULL)
		return false;
	if (fgets(buf, sizeof buf, f) == NULL)
		buf[0] = '\0';
	fclose(f);
	return strncmp(buf, "core", 4) == 0 && strchr(buf, '/') == NULL;
}
#endif

static void
test_sandbox_front_kill_writes_no_core(void **state)
{
	struct core_case c = {NULL, true};
	char dir[256];
	int status;

	(void)state;
	make_temp_dir(dir, sizeof dir);
	c.dir = dir;
	status = in_child(child_front_open_in, &c);
	assert_killed_by_sigsys(status);
	assert_int_equal(dir_entries(dir), 0);

	/*
	 * Control: the same kill without harden() does dump core here, so
	 * the empty directory above means something. Only where cores are
	 * plain files in the cwd, and not under ASan, which sets
	 * RLIMIT_CORE 0 itself at start (disable_coredump) and would make
	 * the control fail for the wrong reason.
	 */
#ifdef KW_ASAN
	print_message("SKIP (control only): core dump control under ASan, "
	              "which disables core dumps itself\n");
#else
	if (!core_pattern_is_local()) {
		print_message("SKIP (control only): kernel.core_pattern is not "
		              "a plain core file in the cwd\n");
	} else {
		c.harden = false;
		status = in_child(child_front_open_in, &c);
		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), SIGSYS);
		assert_true(WCOREDUMP(status));
		assert_int_equal(dir_entries(dir), 1);
	}
#endif
	remove_dir(dir);
}

struct threads {
	int go[2];
	int fail;
	bool bad_open;
};

/*
 * A worker made before the filter, as MHD's are: it names itself and
 * churns malloc in its own arena after the filter lands (heap growth,
 * trimming, the first shrink of its heap), or tries to open a file.
 */
static void *
worker(void *arg)
{
	struct threads *t = arg;
	enum { N = 512 };
	static __thread void *blocks[N];
	char c;

	if (read(t->go[0], &c, 1) != 1) {
		t->fail = 1;
		return NULL;
	}
	if (t->bad_open) {
		act_open();
		t->fail = 2;
		return NULL;
	}
	(void)prctl(PR_SET_NAME, "kw-worker", 0, 0, 0);
	for (int round = 0; round < 8; round++) {
		for (size_t i = 0; i < N; i++) {
			blocks[i] = malloc(32 * 1024);
			if (blocks[i] == NULL) {
				t->fail = 3;
				return NULL;
			}
			memset(blocks[i], round, 64);
		}
		for (size_t i = N; i-- > 0;)
			free(blocks[i]);
	}
	return NULL;
}

static void
child_front_threads(void *arg)
{
	struct threads t = {{-1, -1}, 0, *(bool *)arg};
	pthread_t th[2];

	CHECK(pipe2(t.go, O_CLOEXEC) == 0);
	CHECK(kwd_sandbox_harden() == KW_OK);
	for (int i = 0; i < 2; i++)
		CHECK(pthread_create(&th[i], NULL, worker, &t) == 0);
	CHECK(kwd_sandbox_seccomp_front() == KW_OK);
	CHECK(write(t.go[1], "gg", 2) == 2);
	for (int i = 0; i < 2; i++)
		CHECK(pthread_join(th[i], NULL) == 0);
	CHECK(t.fail == 0);
}

static void
test_sandbox_front_threads_keep_working(void **state)
{
	bool bad_open = false;

	(void)state;
	assert_exited_ok(in_child(child_front_threads, &bad_open));
}

static void
test_sandbox_front_covers_all_threads(void **state)
{
	bool bad_open = true;

	(void)state;
	/* TSYNC: a worker's open() kills the whole process. */
	assert_killed_by_sigsys(in_child(child_front_threads, &bad_open));
}

/* ---- the keeper's deny-list ---- */

static void
child_keeper_basics(void *arg)
{
	const char *path = arg;
	pthread_t t;
	int fd, sp[2];
	pid_t pid;
	int status;

	CHECK(kwd_sandbox_harden() == KW_OK);
	CHECK(kwd_sandbox_seccomp_keeper() == KW_OK);
	fd = open(path, O_RDWR | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(write(fd, "x", 1) == 1);
	CHECK(close(fd) == 0);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0);
	CHECK(close(fd) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == 0);
	/* Threads: clone3 answers ENOSYS and glibc falls back to clone. */
	CHECK(pthread_create(&t, NULL, noop_thread, NULL) == 0);
	CHECK(pthread_join(t, NULL) == 0);
	/* A plain fork (no namespace flags) is allowed. */
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		_exit(7);
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 7);
}

static void
test_sandbox_keeper_allows_files_and_unix_sockets(void **state)
{
	char dir[256], path[300];
	int fd;

	(void)state;
	make_temp_dir(dir, sizeof dir);
	snprintf(path, sizeof path, "%s/store", dir);
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_exited_ok(in_child(child_keeper_basics, path));
	remove_dir(dir);
}

static void
act_socket_inet6(void)
{
	(void)socket(AF_INET6, SOCK_DGRAM, 0);
}

static void
act_socket_netlink(void)
{
	(void)socket(AF_NETLINK, SOCK_RAW, 0);
}

static void
act_socketpair_inet(void)
{
	int sp[2];

	(void)socketpair(AF_INET, SOCK_STREAM, 0, sp);
}

static void
act_unshare_user(void)
{
	(void)unshare(CLONE_NEWUSER);
}

static void
act_clone_newuser(void)
{
	long pid =
	    syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, NULL);

	if (pid == 0)
		_exit(0);
}

static void
act_io_uring(void)
{
	char params[120] = {0};

	(void)syscall(425 /* io_uring_setup */, 4, params);
}

static void
act_bpf(void)
{
	(void)syscall(SYS_bpf, 0, NULL, 0);
}

static void
act_keyctl(void)
{
	(void)syscall(SYS_keyctl, 0, 0, 0, 0, 0);
}

static void
act_personality(void)
{
	(void)syscall(SYS_personality, 0xffffffffUL);
}

static void
act_mount(void)
{
	(void)syscall(SYS_mount, "none", "/mnt", "tmpfs", 0UL, NULL);
}

static void
child_keeper_act(void *arg)
{
	const struct action *a = arg;

	CHECK(kwd_sandbox_harden() == KW_OK);
	CHECK(kwd_sandbox_seccomp_keeper() == KW_OK);
	a->fn();
	_exit(99);
}

static void
test_sandbox_keeper_kills_forbidden(void **state)
{
	static const struct action acts[] = {
	    {"socket(AF_INET)", act_socket_inet},
	    {"socket(AF_INET6)", act_socket_inet6},
	    {"socket(AF_NETLINK)", act_socket_netlink},
	    {"socketpair(AF_INET)", act_socketpair_inet},
	    {"execve", act_execve},
	    {"ptrace", act_ptrace},
	    {"unshare(CLONE_NEWUSER)", act_unshare_user},
	    {"clone(CLONE_NEWUSER)", act_clone_newuser},
	    {"io_uring_setup", act_io_uring},
	    {"bpf", act_bpf},
	    {"keyctl", act_keyctl},
	    {"personality", act_personality},
	    {"mount", act_mount},
	};

	(void)state;
	for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) {
		int status = in_child(child_keeper_act, (void *)&acts[i]);

		if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSYS)
			print_error("keeper filter let %s through\n",
			    acts[i].name);
		assert_killed_by_sigsys(status);
	}
}

/* ---- drop ---- */

struct drop_case {
	const char *user;
	const char *chroot_dir;
	const char *outside; /* a file that exists outside the chroot */
	ino_t root_ino;
	uid_t uid;
	gid_t gid;
	int expect;
};

static void
child_drop_ok(void *arg)
{
	const struct drop_case *c = arg;
	struct stat st;
	char cwd[64];

	CHECK(kwd_sandbox_harden() == KW_OK);
	CHECK(kwd_sandbox_drop(c->user, c->chroot_dir) == KW_OK);
	CHECK(getuid() == c->uid && geteuid() == c->uid);
	CHECK(getgid() == c->gid && getegid() == c->gid);
	CHECK(getgroups(0, NULL) == 0);
	CHECK(setuid(0) == -1 && errno == EPERM);
	CHECK(setgid(0) == -1);
	/* "/" is the chroot: the file outside is gone, the inode matches. */
	CHECK(stat(c->outside, &st) == -1 && errno == ENOENT);
	CHECK(stat("/", &st) == 0 && st.st_ino == c->root_ino);
	CHECK(getcwd(cwd, sizeof cwd) != NULL && strcmp(cwd, "/") == 0);
	CHECK(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0);
	CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);
}

static void
lookup_nobody(uid_t *uid, gid_t *gid)
{
	struct passwd *pw = getpwnam("nobody");

	if (pw == NULL) {
		print_message("SKIP: no user \"nobody\" on this system\n");
		skip();
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
}

static void
test_sandbox_drop_to_nobody_in_chroot(void **state)
{
	struct drop_case c = {.user = "nobody"};
	char dir[256], outside[300];
	struct stat st;
	int fd;

	(void)state;
	skip_unless_root("dropping to nobody in a chroot");
	lookup_nobody(&c.uid, &c.gid);
	make_temp_dir(dir, sizeof dir);
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_uid, 0);
	snprintf(outside, sizeof outside, "%s.outside", dir);
	fd = open(outside, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	close(fd);
	c.chroot_dir = dir;
	c.outside = outside;
	c.root_ino = st.st_ino;
	assert_int_equal(c.uid, 65534); /* Debian's nobody */
	assert_exited_ok(in_child(child_drop_ok, &c));
	unlink(outside);
	remove_dir(dir);
}

static void
child_drop_refused(void *arg)
{
	const struct drop_case *c = arg;
	struct stat st;

	CHECK(kwd_sandbox_drop(c->user, c->chroot_dir) == c->expect);
	/* Refused before anything changed: still root, same root. */
	CHECK(getuid() == 0 && geteuid() == 0);
	CHECK(stat(c->outside, &st) == 0);
}

/* chroot without a user: allowed (with a warning), still root. */
static void
child_chroot_only(void *arg)
{
	const struct drop_case *c = arg;
	struct stat st;

	CHECK(kwd_sandbox_drop(NULL, c->chroot_dir) == KW_OK);
	CHECK(getuid() == 0);
	CHECK(stat(c->outside, &st) == -1 && errno == ENOENT);
}

static void
test_sandbox_drop_refuses_bad_chroot(void **state)
{
	struct drop_case c = {.user = "nobody"};
	char dir[256], outside[300], sub[300], link[300];
	struct passwd *pw;
	int fd;

	(void)state;
	skip_unless_root("checking chroot directories");
	pw = getpwnam("nobody");
	make_temp_dir(dir, sizeof dir);
	snprintf(outside, sizeof outside, "%s.outside", dir);
	fd = open(outside, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	close(fd);
	c.outside = outside;
	c.chroot_dir = dir;

	/* Writable by others, then by group. */
	assert_int_equal(chmod(dir, 0757), 0);
	c.expect = KW_ERR_PERM;
	assert_exited_ok(in_child(child_drop_refused, &c));
	assert_int_equal(chmod(dir, 0777), 0);
	assert_exited_ok(in_child(child_drop_refused, &c));
	assert_int_equal(chmod(dir, 0775), 0);
	assert_exited_ok(in_child(child_drop_refused, &c));

	/* Not owned by root. */
	assert_int_equal(chmod(dir, 0755), 0);
	if (pw != NULL) {
		assert_int_equal(chown(dir, pw->pw_uid, 0), 0);
		assert_exited_ok(in_child(child_drop_refused, &c));
		assert_int_equal(chown(dir, 0, 0), 0);
	}

	/* Not empty. */
	snprintf(sub, sizeof sub, "%s/leftover", dir);
	fd = open(sub, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	c.expect = KW_ERR_CONFIG;
	assert_exited_ok(in_child(child_drop_refused, &c));
	unlink(sub);

	/* Missing, a regular file, a symlink to a good directory. */
	snprintf(sub, sizeof sub, "%s/missing", dir);
	c.chroot_dir = sub;
	assert_exited_ok(in_child(child_drop_refused, &c));
	c.chroot_dir = outside;
	assert_exited_ok(in_child(child_drop_refused, &c));
	snprintf(link, sizeof link, "%s.link", dir);
	assert_int_equal(symlink(dir, link), 0);
	c.chroot_dir = link;
	assert_exited_ok(in_child(child_drop_refused, &c));
	unlink(link);

	/* Control: the same directory, now fine, is accepted. */
	c.chroot_dir = dir;
	c.user = NULL;
	assert_exited_ok(in_child(child_chroot_only, &c));
	unlink(outside);
	remove_dir(dir);
}

static void
child_drop_bad_user(void *arg)
{
	(void)arg;
	CHECK(kwd_sandbox_drop("kw-no-such-user-7f3a", NULL) == KW_ERR_CONFIG);
	/* Dropping "to root" drops nothing: refused, not pretended. */
	CHECK(kwd_sandbox_drop("root", NULL) == KW_ERR_CONFIG);
	CHECK(getuid() == 0);
}

static void
test_sandbox_drop_refuses_bad_user(void **state)
{
	(void)state;
	skip_unless_root("looking up the user to drop to");
	assert_exited_ok(in_child(child_drop_bad_user, NULL));
}

static void
child_drop_not_root(void *arg)
{
	const char *logpath = arg;
	char buf[4096];
	ssize_t n;
	int fd;

	fd = open(logpath, O_RDWR | O_CLOEXEC);
	CHECK(fd >= 0);
	kw_log_set_fd(fd);
	if (geteuid() == 0) {
		struct passwd *pw = getpwnam("nobody");

		/* Become an unprivileged user by hand first. */
		CHECK(pw != NULL);
		CHECK(setgroups(0, NULL) == 0);
		CHECK(setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) == 0);
		CHECK(setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) == 0);
	}
	CHECK(geteuid() != 0);
	CHECK(kwd_sandbox_drop("nobody", NULL) == KW_ERR_DENIED);
	CHECK(kwd_sandbox_drop(NULL, "/tmp") == KW_ERR_DENIED);
	/* Nothing configured: fine for development. */
	CHECK(kwd_sandbox_drop(NULL, NULL) == KW_OK);
	n = pread(fd, buf, sizeof buf - 1, 0);
	CHECK(n > 0);
	buf[n] = '\0';
	CHECK(strstr(buf, "level=error event=sandbox.drop") != NULL);
	CHECK(strstr(buf, "run keywardd as root") != NULL);
	CHECK(strstr(buf, "remove front_user") != NULL);
}

static void
test_sandbox_drop_not_root_denied(void **state)
{
	char dir[256], path[300];
	int fd;

	(void)state;
	make_temp_dir(dir, sizeof dir);
	snprintf(path, sizeof path, "%s/log", dir);
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_exited_ok(in_child(child_drop_not_root, path));
	remove_dir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sandbox_harden_sets_properties),
	    cmocka_unit_test(test_sandbox_front_allows_io_time_random),
	    cmocka_unit_test(test_sandbox_front_kills_forbidden),
	    cmocka_unit_test(test_sandbox_front_kill_writes_no_core),
	    cmocka_unit_test(test_sandbox_front_threads_keep_working),
	    cmocka_unit_test(test_sandbox_front_covers_all_threads),
	    cmocka_unit_test(test_sandbox_keeper_allows_files_and_unix_sockets),
	    cmocka_unit_test(test_sandbox_keeper_kills_forbidden),
	    cmocka_unit_test(test_sandbox_drop_to_nobody_in_chroot),
	    cmocka_unit_test(test_sandbox_drop_refuses_bad_chroot),
	    cmocka_unit_test(test_sandbox_drop_refuses_bad_user),
	    cmocka_unit_test(test_sandbox_drop_not_root_denied),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

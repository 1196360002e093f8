/*
 * sandbox.h: how keyward's processes narrow themselves.
 *
 * Order, in each child after fork: kwd_sandbox_harden() first (no core
 * dumps, not dumpable, no_new_privs), then load what it needs from the
 * filesystem, then kwd_sandbox_drop() (chroot, then groups, gid, uid), then
 * start threads, then the seccomp filter (applied to every thread).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWD_SANDBOX_H
#define KWD_SANDBOX_H

#include "keyward.h"

/* RLIMIT_CORE 0, PR_SET_DUMPABLE 0, PR_SET_NO_NEW_PRIVS 1. */
KW_WUR int kwd_sandbox_harden(void);

/*
 * kwd_sandbox_drop: when running as root: chroot to chroot_dir (if not
 * NULL; it must be an empty directory not writable by user), then
 * setgroups to none, setgid and setuid to user's ids (if user is not NULL),
 * then check that root cannot be regained. When not root: a configured
 * user or chroot is KW_ERR_DENIED (logged), NULLs are fine (development).
 */
KW_WUR int kwd_sandbox_drop(const char *user, const char *chroot_dir);

/*
 * Seccomp allow-list of the front (TLS, HTTP, epoll, IPC over the
 * inherited sockets): no open of files, no exec, no new sockets, no
 * ptrace. A violation kills the process (SECCOMP_RET_KILL_PROCESS) without
 * a core dump. Applied to all threads (TSYNC).
 */
KW_WUR int kwd_sandbox_seccomp_front(void);

/*
 * Seccomp filter of the keeper: it must keep the filesystem (SQLite, the
 * audit log, the PKCS#11 module's files), so this is a deny-list of what
 * it never needs: sockets other than AF_UNIX, bind/listen/accept/connect
 * on them, exec, ptrace, mount, kernel modules, bpf, keyctl...
 */
KW_WUR int kwd_sandbox_seccomp_keeper(void);

#endif /* KWD_SANDBOX_H */

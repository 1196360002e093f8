/*
 * keeper.h: the process that holds the keys. It alone loads the PKCS#11
 * module (after fork), reads the store, writes the audit log and decides:
 * every request from the front is re-validated and re-authorized here.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWD_KEEPER_H
#define KWD_KEEPER_H

#include <stddef.h>

#include "config.h"

struct kwd_keeper_args {
	const struct kwd_config *cfg;
	/* SOCK_SEQPACKET channels from the front, one worker thread each. */
	const int *chan;
	size_t nchan;
	int ready_fd; /* written once when serving (then closed); -1: none */
};

/*
 * kwd_keeper_run: sandbox, open the audit log, the policy, the store and
 * the HSM, finish or abandon interrupted key creations, then serve until
 * SIGTERM or until the front goes away. SIGHUP reloads the policy (kept if
 * the new file is invalid). Returns the process exit status.
 */
int kwd_keeper_run(const struct kwd_keeper_args *args);

#endif /* KWD_KEEPER_H */

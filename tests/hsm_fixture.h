/*
 * hsm_fixture.h: a private SoftHSMv2 token in a temp dir, per test.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWT_HSM_FIXTURE_H
#define KWT_HSM_FIXTURE_H

#include <limits.h>
#include <p11-kit/pkcs11.h>
#include <stdbool.h>

#include "p11.h"

struct kwt_token {
	char dir[256];
	char conf[PATH_MAX];
	char pin_path[PATH_MAX];
	char so_pin_path[PATH_MAX];
	char fault_file[PATH_MAX];
	char module[PATH_MAX]; /* what the layer loads */
	char softhsm[PATH_MAX];
	char label[33];
	char selector[64];
	bool faulty;
};

/*
 * kwt_token_make: a fresh token. With faulty, the layer loads the fault
 * module (tests/fault/kwfault.c) wrapping SoftHSM, driven by fault_file.
 * Returns false, after printing why, if SoftHSM (or the fault module) is
 * missing; the caller then skips.
 */
bool kwt_token_make(struct kwt_token *t, bool faulty);
void kwt_token_remove(struct kwt_token *t);

/* kwt_config: the layer's configuration for this token (pin_file). */
void kwt_config(const struct kwt_token *t, struct kwd_p11_config *cfg);

/* kwt_fault: replace the fault rule ("" clears it), atomically. */
void kwt_fault(struct kwt_token *t, const char *rule);
/* kwt_fault_calls: calls of fn through the fault module since reset. */
unsigned long kwt_fault_calls(const struct kwt_token *t, const char *fn);
void kwt_fault_reset_calls(const struct kwt_token *t);

/* kwt_raw: the loaded module's own function list, for checks that must
 * not go through the layer under test. */
CK_FUNCTION_LIST_PTR kwt_raw(const struct kwt_token *t);

/* kwt_write_file: write a file with mode 0600. */
void kwt_write_file(const char *path, const void *buf, size_t len);

#endif

/*
 * p11_internal.h: shared between the files of pkcs11/ only.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWD_P11_INTERNAL_H
#define KWD_P11_INTERNAL_H

#include "p11.h"

#include <p11-kit/pkcs11.h>
#include <pthread.h>

enum p11_action {
	P11_ACT_NONE, /* the call's input or data: nothing to repair */
	P11_ACT_SESSION, /* this worker's session is suspect: reopen it */
	P11_ACT_RECONNECT, /* token-wide: reselect, log in, rebuild cache */
	P11_ACT_PIN, /* the PIN was refused: never try it again */
};

struct kwd_p11_rv_info {
	CK_RV rv;
	const char *name;
	int err;
	enum p11_action action;
};

const struct kwd_p11_rv_info *kwd_p11_rv_info(CK_RV rv);
size_t kwd_p11_rv_table(const struct kwd_p11_rv_info **ret_table);

/* For p11_evp.c. */
const char *kwd_p11_module_path(const struct kwd_p11 *p11);
pthread_mutex_t *kwd_p11_evp_lock(struct kwd_p11 *p11);
void **kwd_p11_evp_slot(struct kwd_p11 *p11);
void kwd_p11_evp_release(struct kwd_p11 *p11, void **slot);
int kwd_p11_ec_point(struct kwd_p11_worker *w, const char *name,
    uint32_t version, unsigned char point[65]);
#endif /* KWD_P11_INTERNAL_H */

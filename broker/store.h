/*
 * store.h: key metadata in SQLite (WAL), owned by the keeper.
 *
 * Key material lives in the HSM; the store records names, versions,
 * states, CKA_IDs and settings. Every write is one transaction committed
 * (synchronous=FULL) before it returns, so that an acknowledged change
 * survives a crash or power loss.
 *
 * Creation and rotation are two-phase so that a crash at any point leaves
 * the old or the new state, never a lost key and never two active
 * versions:
 *   1. kwd_store_version_begin(): a new version row in state PENDING with
 *      a fresh random CKA_ID, committed;
 *   2. the caller creates the HSM object with that label and CKA_ID;
 *   3. kwd_store_version_commit(): in one transaction the PENDING version
 *      becomes ACTIVE and the previously active one DECRYPT_ONLY.
 * At start, kwd_store_pending() lists PENDING versions: the keeper commits
 * those whose HSM object exists (with the recorded CKA_ID) and abandons
 * (kwd_store_version_abandon) the others.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWD_STORE_H
#define KWD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward.h"

#define KWD_STORE_ID_LEN 16
#define KWD_STORE_MAX_VERSIONS 1000

enum kwd_key_state {
	KWD_KEY_PENDING = 0, /* being created: never used */
	KWD_KEY_ACTIVE = 1, /* wraps new DEKs; exactly one per key */
	KWD_KEY_DECRYPT_ONLY = 2, /* unwraps only */
	KWD_KEY_DISABLED = 3, /* refuses everything, can be re-enabled */
	KWD_KEY_DESTROYED = 4, /* gone from the HSM (later issue) */
};

const char *kwd_key_state_name(enum kwd_key_state s); /* "decrypt-only" */
/* kwd_key_state_parse: "active" etc.; KW_ERR_INVALID otherwise. */
KW_WUR int kwd_key_state_parse(const char *s, enum kwd_key_state *ret);

/*
 * What a key is: an AES-256 KEK (HSM labels kek/NAME/VERSION) or an EC
 * P-256 signing key pair (sig/NAME/VERSION) for tokens, certificates or
 * artifacts. Both kinds share one name space.
 */
enum kwd_key_kind {
	KWD_KIND_KEK = 0,
	KWD_KIND_SIGNER = 1,
};

struct kwd_key_version {
	uint32_t version;
	enum kwd_key_state state;
	uint64_t created; /* unix seconds */
	uint64_t retired; /* when it stopped being ACTIVE; 0: never active
	                     or still active */
	unsigned char ckaid[KWD_STORE_ID_LEN];
};

struct kwd_key {
	char name[64];
	enum kwd_key_kind kind;
	uint64_t created;
	uint32_t min_decrypt_version; /* versions below it never unwrap */
	uint64_t rotation_period; /* seconds, 0 = manual only */
	uint32_t active; /* the ACTIVE version, 0 if none */
	size_t nversions;
	struct kwd_key_version versions[KWD_STORE_MAX_VERSIONS];
};

struct kwd_store;

/*
 * kwd_store_open: open or create the database, apply pending schema
 * migrations (each in its own transaction, recorded in a schema_version
 * table), run PRAGMA quick_check (KW_ERR_IO, logged, on corruption), set
 * WAL and synchronous=FULL. The file is created mode 0600.
 */
KW_WUR int kwd_store_open(const char *path, struct kwd_store **ret_store);
void kwd_store_free(struct kwd_store *st);

/*
 * kwd_store_version_begin: phase 1 of creating key name (when it does not
 * exist: then created with rotation_period) or of rotating it. Returns the
 * new version number and the CKA_ID to give the HSM object. KW_ERR_EXISTS
 * if create is true and the key exists, KW_ERR_NOT_FOUND if create is
 * false and it does not; KW_ERR_UNAVAILABLE if a PENDING version exists
 * already for this key (another rotation is in flight).
 */
KW_WUR int kwd_store_version_begin(struct kwd_store *st, const char *name,
    bool create, uint64_t rotation_period, uint32_t *ret_version,
    unsigned char ret_ckaid[KWD_STORE_ID_LEN]);
/* kwd_store_version_commit: phase 3 (see above). */
KW_WUR int kwd_store_version_commit(struct kwd_store *st, const char *name,
    uint32_t version);
/* kwd_store_version_abandon: drop a PENDING version (and the key if it
 * had no other version). */
KW_WUR int kwd_store_version_abandon(struct kwd_store *st, const char *name,
    uint32_t version);

/* kwd_store_pending: every PENDING version (name, version, ckaid). */
struct kwd_pending {
	char name[64];
	enum kwd_key_kind kind;
	uint32_t version;
	unsigned char ckaid[KWD_STORE_ID_LEN];
};
KW_WUR int kwd_store_pending(struct kwd_store *st,
    struct kwd_pending **ret_list, size_t *ret_n);

/* kwd_store_key_get: KW_ERR_NOT_FOUND if absent. PENDING versions are not
 * listed. ret_key is large: allocate it (malloc) rather than on a stack. */
KW_WUR int kwd_store_key_get(struct kwd_store *st, const char *name,
    struct kwd_key *ret_key);

/* kwd_store_key_list: names and active versions, sorted by name. */
struct kwd_key_summary {
	char name[64];
	uint32_t active;
};
KW_WUR int kwd_store_key_list(struct kwd_store *st,
    struct kwd_key_summary **ret_list, size_t *ret_n);
/* kwd_store_key_list_kind: as kwd_store_key_list (which lists KEKs), for
 * either kind. */
KW_WUR int kwd_store_key_list_kind(struct kwd_store *st, enum kwd_key_kind kind,
    struct kwd_key_summary **ret_list, size_t *ret_n);

/*
 * kwd_store_version_begin_kind: as kwd_store_version_begin (which makes
 * KEKs), for either kind. Rotating a name of the other kind is
 * KW_ERR_NOT_FOUND.
 */
KW_WUR int kwd_store_version_begin_kind(struct kwd_store *st, const char *name,
    enum kwd_key_kind kind, bool create, uint64_t rotation_period,
    uint32_t *ret_version, unsigned char ret_ckaid[KWD_STORE_ID_LEN]);

/*
 * Token revocations. kwd_store_revoke_jti: the token with this id is
 * revoked until exp (its own expiry: it cannot be used after anyway).
 * kwd_store_revoke_sub: every token of subject sub issued before `before`
 * (unix seconds) is revoked, remembered until `until` (the latest expiry
 * such a token can have). Both commit before returning.
 */
KW_WUR int kwd_store_revoke_jti(struct kwd_store *st, const char *jti,
    uint64_t exp);
KW_WUR int kwd_store_revoke_sub(struct kwd_store *st, const char *sub,
    uint64_t before, uint64_t until);

/*
 * kwd_store_revocations: drops entries that ended before now_s, then calls
 * fn for each one left: (jti, NULL, exp, 0) or (NULL, sub, until, before).
 * A negative return from fn stops and is returned.
 */
typedef int (*kwd_store_revocation_fn)(void *arg, const char *jti,
    const char *sub, uint64_t until, uint64_t before);
KW_WUR int kwd_store_revocations(struct kwd_store *st, uint64_t now_s,
    kwd_store_revocation_fn fn, void *arg);

/*
 * kwd_store_key_patch: change min_decrypt_version (0: unchanged; may not
 * exceed the active version), rotation period (UINT64_MAX: unchanged),
 * and/or the state of one non-active version (version 0: none) to
 * DECRYPT_ONLY or DISABLED. The active version cannot be disabled here:
 * rotate first. KW_ERR_INVALID with no change made for a refused request.
 */
KW_WUR int kwd_store_key_patch(struct kwd_store *st, const char *name,
    uint32_t min_decrypt_version, uint64_t rotation_period, uint32_t version,
    enum kwd_key_state state);

/*
 * The certificate of version `version` of the CA signing key, PEM
 * (malloc'd). kwd_store_ca_put keeps a certificate already stored for that
 * version (the first one wins: read it back).
 */
KW_WUR int kwd_store_ca_get(struct kwd_store *st, uint32_t version,
    char **ret_pem);
KW_WUR int kwd_store_ca_put(struct kwd_store *st, uint32_t version,
    const char *pem);

#endif /* KWD_STORE_H */

/*
 * keeper.c: the key-holding process.
 *
 * One worker thread per channel from the front, each with its own PKCS#11
 * session. A request is validated by the message table (msg.c), then
 * authorized here against the policy (default deny), then executed, then
 * audited, then answered: no answer leaves before its audit record is
 * written. The store is serialized by one mutex (key administration is
 * rare; data-key traffic reads it once per request).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "keeper.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "blob.h"
#include "log.h"
#include "msg.h"
#include "p11.h"
#include "policy.h"
#include "sandbox.h"
#include "secret.h"
#include "store.h"
#include "token.h"
#include "cert.h"

#include <openssl/pem.h>

#define HSM_RETRY_MS 1000
#define META_BUCKETS 256
#define RECV_TICK_MS 100
/* The signing key of tokens, a signer (sig/token/N) in the HSM. */
#define TOKEN_SIGNER "token"
/* Versions published in the JWKS: the active one and retired ones that
 * may still have signed unexpired tokens (newest first). */
#define TOKEN_KEYS_MAX 16

/* Latency buckets for HSM operations, seconds. */
static const double hsm_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
    0.005, 0.01, 0.1, 1};
#define NBUCKETS (sizeof hsm_buckets / sizeof hsm_buckets[0])

struct meta;
struct keeper;

static void meta_forget(struct keeper *k, const char *name);

struct keeper {
	const struct kwd_config *cfg;

	pthread_rwlock_t policy_lock;
	struct kwd_policy *policy;

	pthread_mutex_t store_lock;
	struct kwd_store *store;

	pthread_rwlock_t meta_lock;
	struct meta *meta[META_BUCKETS];

	struct kwd_audit *audit; /* NULL: could not be opened */
	char audit_open_reason[160];

	/* The token signer's public keys (JWKS and verification), rebuilt
	 * after its rotation. */
	pthread_mutex_t tok_lock;
	bool tok_valid;
	size_t tok_n;
	struct tokkey {
		uint32_t version;
		char kid[KWD_TOKEN_THUMB_LEN + 1];
		EVP_PKEY *pub;
	} tok[TOKEN_KEYS_MAX];
	uint32_t tok_active;
	char *tok_jwks;

	pthread_mutex_t ca_lock;
	uint32_t ca_version;
	X509 *ca_cert;
	EVP_PKEY *ca_key; /* in the HSM (libp11) */
	char *ca_pem;

	pthread_rwlock_t rev_lock;
	struct revoked *rev;
	size_t nrev, caprev;

	pthread_mutex_t p11_lock;
	struct kwd_p11_config p11cfg; /* the configuration's, PIN read */
	struct kw_secret *pin;
	struct kwd_p11 *p11; /* NULL until the HSM could be opened */
	int p11_fatal; /* KW_ERR_HSM_PIN etc.: no more retries */
	struct timespec p11_next;

	_Atomic bool stop;
	_Atomic size_t live_chans;
	_Atomic uint64_t requests_ok, requests_denied, requests_failed;
	_Atomic uint64_t hsm_ops, hsm_errors;
	_Atomic uint64_t hsm_hist[NBUCKETS + 1];
	_Atomic uint64_t hsm_sum_ns;
};

/* One worker serves one channel: an API one, or the metrics one. */
struct worker {
	struct keeper *k;
	int fd; /* -1: closed */
	struct kwd_p11_worker *w;
	pthread_t thread;
	unsigned char in[KWD_MSG_MAX];
	struct kwd_msg msg;
	struct kwd_msgbuf out;
};

/* A request's context, copied out of the frame as C strings. */
struct ctx {
	size_t n;
	char keys[KWD_CTX_MAX_PAIRS][129];
	char vals[KWD_CTX_MAX_PAIRS][257];
	struct kwd_ctx_pair pairs[KWD_CTX_MAX_PAIRS];
};

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
hsm_observe(struct keeper *k, uint64_t t0, int rv)
{
	uint64_t d = now_ns() - t0;
	double s = (double)d / 1e9;
	size_t i;

	atomic_fetch_add(&k->hsm_ops, 1);
	if (rv != KW_OK && rv != KW_ERR_AUTH)
		atomic_fetch_add(&k->hsm_errors, 1);
	for (i = 0; i < NBUCKETS && s > hsm_buckets[i]; i++)
		;
	atomic_fetch_add(&k->hsm_hist[i], 1);
	atomic_fetch_add(&k->hsm_sum_ns, d);
}

/* The HTTP status an error becomes at the front, for the audit record. */
static int
http_status(int err)
{
	switch (err) {
	case KW_OK:
		return 200;
	case KW_ERR_INVALID:
	case KW_ERR_AUTH:
		return 400;
	case KW_ERR_UNAUTHENTICATED:
		return 401;
	case KW_ERR_DENIED:
		return 403;
	case KW_ERR_NOT_FOUND:
		return 404;
	case KW_ERR_EXISTS:
		return 409;
	case KW_ERR_TOO_LARGE:
		return 413;
	case KW_ERR_UNAVAILABLE:
	case KW_ERR_HSM_DOWN:
	case KW_ERR_HSM_PIN:
	case KW_ERR_RANDOM:
	case KW_ERR_TIMEOUT:
		return 503;
	default:
		return 500;
	}
}

/* ---- the HSM, opened lazily so that an HSM down at start is survived ---- */

static struct kwd_p11 *
keeper_p11(struct keeper *k, int *ret_err)
{
	struct kwd_p11 *p;
	struct timespec now;
	int rv;

	pthread_mutex_lock(&k->p11_lock);
	p = k->p11;
	if (p != NULL || k->p11_fatal != KW_OK)
		goto out;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (now.tv_sec < k->p11_next.tv_sec ||
	    (now.tv_sec == k->p11_next.tv_sec &&
	        now.tv_nsec < k->p11_next.tv_nsec))
		goto out;
	rv = kwd_p11_open(&k->p11cfg, &k->p11);
	if (rv == KW_OK) {
		p = k->p11;
		goto out;
	}
	if (rv == KW_ERR_HSM_PIN || rv == KW_ERR_CONFIG ||
	    rv == KW_ERR_HSM_MODULE)
		k->p11_fatal = rv;
	k->p11_next = now;
	k->p11_next.tv_sec += HSM_RETRY_MS / 1000;
out:
	*ret_err = p != NULL        ? KW_OK
	    : k->p11_fatal != KW_OK ? k->p11_fatal
	                            : KW_ERR_HSM_DOWN;
	pthread_mutex_unlock(&k->p11_lock);
	return p;
}

static int
worker_p11(struct worker *wk)
{
	struct kwd_p11 *p;
	int rv;

	if (wk->w != NULL)
		return KW_OK;
	p = keeper_p11(wk->k, &rv);
	if (p == NULL)
		return rv;
	return kwd_p11_worker_new(p, &wk->w);
}

/*
 * Finish what a crash interrupted: a PENDING version whose HSM object
 * exists with the recorded CKA_ID was created; commit it. One without its
 * object never existed; abandon it. Nothing is destroyed in the HSM.
 */
static int
reconcile(struct keeper *k, struct kwd_p11_worker *w)
{
	struct kwd_pending *pend = NULL;
	size_t n = 0;
	int rv;

	rv = kwd_store_pending(k->store, &pend, &n);
	if (rv != KW_OK)
		return rv;
	for (size_t i = 0; i < n && rv == KW_OK; i++) {
		struct kwd_p11_object *objs = NULL;
		size_t no = 0;
		bool found = false;

		rv = kwd_p11_list(w,
		    pend[i].kind == KWD_KIND_SIGNER ? KWD_P11_SIGNER
		                                    : KWD_P11_KEK,
		    pend[i].name, &objs, &no);
		if (rv != KW_OK)
			break;
		for (size_t j = 0; j < no; j++)
			if (strcmp(objs[j].name, pend[i].name) == 0 &&
			    objs[j].version == pend[i].version &&
			    objs[j].id_len == KWD_STORE_ID_LEN &&
			    memcmp(objs[j].id, pend[i].ckaid,
			        KWD_STORE_ID_LEN) == 0)
				found = true;
		free(objs);
		if (found)
			rv = kwd_store_version_commit(k->store, pend[i].name,
			    pend[i].version);
		else
			rv = kwd_store_version_abandon(k->store, pend[i].name,
			    pend[i].version);
		kw_log(KW_LOG_WARN, "keeper.reconcile",
		    found ? "completed a key version interrupted by a crash"
		          : "dropped a key version interrupted by a crash "
		            "before its HSM object existed",
		    KW_F("key", pend[i].name), KW_F("version", pend[i].version),
		    KW_F("error", kw_error_name(rv)));
	}
	free(pend);
	return rv;
}

/* ---- helpers for requests ---- */

static void
reply_error(struct worker *wk, uint64_t rid, int err, const char *message)
{
	kwd_msg_begin(&wk->out, KWD_MSG_R_ERROR, rid);
	kwd_msg_put_u32(&wk->out, KWD_TAG_STATUS, (uint32_t)-err);
	kwd_msg_put_str(&wk->out, KWD_TAG_MESSAGE, message);
}

static const char *
error_message(int err)
{
	switch (err) {
	case KW_ERR_UNAUTHENTICATED:
		return "a valid client certificate or token is required";
	case KW_ERR_DENIED:
		return "not permitted: the policy does not grant this "
		       "operation on this key for this context";
	case KW_ERR_NOT_FOUND:
		return "no such key";
	case KW_ERR_EXISTS:
		return "a key with this name exists already";
	case KW_ERR_AUTH:
		return "decryption failed: the wrapped key does not match "
		       "this key, version or context";
	case KW_ERR_INVALID:
		return "invalid request";
	case KW_ERR_HSM_DOWN:
	case KW_ERR_HSM_PIN:
	case KW_ERR_UNAVAILABLE:
	case KW_ERR_RANDOM:
	case KW_ERR_TIMEOUT:
		return "temporarily unavailable: retry later";
	default:
		return "internal error: report the request id";
	}
}

static bool
read_ctx(const struct kwd_msg *m, struct ctx *c)
{
	c->n = kwd_msg_count(m, KWD_TAG_CTX_KEY);
	if (c->n > KWD_CTX_MAX_PAIRS ||
	    c->n != kwd_msg_count(m, KWD_TAG_CTX_VAL))
		return false;
	for (size_t i = 0; i < c->n; i++) {
		if (!kwd_msg_str(m, KWD_TAG_CTX_KEY, i, c->keys[i],
		        sizeof c->keys[i]) ||
		    !kwd_msg_str(m, KWD_TAG_CTX_VAL, i, c->vals[i],
		        sizeof c->vals[i]))
			return false;
		c->pairs[i].key = c->keys[i];
		c->pairs[i].value = c->vals[i];
	}
	return true;
}

static enum kwd_policy_op
policy_op(uint16_t type)
{
	switch (type) {
	case KWD_MSG_KEY_CREATE:
		return KWD_OP_ADMIN_CREATE;
	case KWD_MSG_KEY_LIST:
		return KWD_OP_ADMIN_LIST;
	case KWD_MSG_KEY_SHOW:
		return KWD_OP_ADMIN_READ;
	case KWD_MSG_KEY_ROTATE:
		return KWD_OP_ADMIN_ROTATE;
	case KWD_MSG_KEY_PATCH:
		return KWD_OP_ADMIN_PATCH;
	case KWD_MSG_DATAKEY:
		return KWD_OP_DATAKEY;
	case KWD_MSG_DECRYPT:
		return KWD_OP_DECRYPT;
	case KWD_MSG_TOKEN_ISSUE:
		return KWD_OP_TOKEN;
	case KWD_MSG_TOKEN_REVOKE:
		return KWD_OP_ADMIN_REVOKE;
	case KWD_MSG_TOKEN_INTROSPECT:
		return KWD_OP_INTROSPECT;
	case KWD_MSG_SIGNER_SHOW:
		return KWD_OP_ADMIN_READ;
	case KWD_MSG_SIGNER_ROTATE:
		return KWD_OP_ADMIN_ROTATE;
	case KWD_MSG_ARTIFACT_SIGN:
		return KWD_OP_SIGN;
	case KWD_MSG_CERT_ISSUE:
		return KWD_OP_CERT;
	default:
		return KWD_OP_REWRAP;
	}
}

static bool
allowed(struct keeper *k, const char *identity, enum kwd_policy_op op,
    const char *resource, const struct ctx *c, char *reason, size_t len)
{
	bool ok;

	pthread_rwlock_rdlock(&k->policy_lock);
	ok = kwd_policy_check(k->policy, identity, op, resource,
	    c ? c->pairs : NULL, c ? c->n : 0, reason, len);
	pthread_rwlock_unlock(&k->policy_lock);
	return ok;
}

static bool
audit_ok(struct keeper *k)
{
	return k->audit != NULL && kwd_audit_ok(k->audit, NULL, 0);
}

static void
put_key(struct kwd_msgbuf *b, const struct kwd_key *key)
{
	kwd_msg_put_str(b, KWD_TAG_KEY, key->name);
	kwd_msg_put_u32(b, KWD_TAG_MIN_DECRYPT, key->min_decrypt_version);
	kwd_msg_put_u64(b, KWD_TAG_CREATED, key->created);
	kwd_msg_put_u64(b, KWD_TAG_ROTATION, key->rotation_period);
	kwd_msg_put_u32(b, KWD_TAG_VERSION, key->active);
	for (size_t i = 0; i < key->nversions; i++) {
		unsigned char rec[13];
		const struct kwd_key_version *v = &key->versions[i];

		for (int j = 0; j < 4; j++)
			rec[j] = (unsigned char)(v->version >> (24 - 8 * j));
		rec[4] = (unsigned char)v->state;
		for (int j = 0; j < 8; j++)
			rec[5 + j] =
			    (unsigned char)(v->created >> (56 - 8 * j));
		kwd_msg_put(b, KWD_TAG_VERREC, rec, sizeof rec);
	}
}

/* ---- key administration ---- */

static int
key_reply(struct worker *wk, uint64_t rid, const char *name)
{
	struct kwd_key *key = malloc(sizeof *key);
	int rv;

	if (key == NULL)
		return KW_ERR_NOMEM;
	pthread_mutex_lock(&wk->k->store_lock);
	rv = kwd_store_key_get(wk->k->store, name, key);
	pthread_mutex_unlock(&wk->k->store_lock);
	/* Signing keys are not served by the key API. */
	if (rv == KW_OK && key->kind != KWD_KIND_KEK)
		rv = KW_ERR_NOT_FOUND;
	if (rv == KW_OK) {
		kwd_msg_begin(&wk->out, KWD_MSG_R_KEY, rid);
		put_key(&wk->out, key);
	}
	free(key);
	return rv;
}

/*
 * Create or rotate: the two-phase protocol of store.h around the HSM
 * object. The store lock is held throughout so that two rotations of one
 * key cannot interleave.
 */
static void tokkeys_forget(struct keeper *k);

static int
new_version(struct worker *wk, const char *name, enum kwd_key_kind kind,
    bool create, uint64_t rotation, char *reason, size_t rlen)
{
	struct keeper *k = wk->k;
	unsigned char ckaid[KWD_STORE_ID_LEN];
	uint32_t version;
	uint64_t t0;
	int rv, rv2;

	rv = worker_p11(wk);
	if (rv != KW_OK) {
		snprintf(reason, rlen, "HSM unavailable");
		return rv;
	}
	pthread_mutex_lock(&k->store_lock);
	rv = kwd_store_version_begin_kind(k->store, name, kind, create,
	    rotation, &version, ckaid);
	if (rv != KW_OK) {
		snprintf(reason, rlen, "store: %s", kw_error_name(rv));
		goto out;
	}
	t0 = now_ns();
	rv = kind == KWD_KIND_SIGNER
	    ? kwd_p11_ec_generate(wk->w, name, version, ckaid, NULL)
	    : kwd_p11_kek_generate(wk->w, name, version, ckaid, NULL);
	hsm_observe(k, t0, rv);
	if (rv != KW_OK) {
		/* The object may or may not exist (an error after the HSM
		 * created it): a PENDING row left in place would be settled
		 * by the next start; settle it now while we know. */
		snprintf(reason, rlen, "HSM key generation: %s",
		    kw_error_name(rv));
		if (rv == KW_ERR_EXISTS) {
			kw_log(KW_LOG_ERR, "keeper.orphan",
			    "the HSM holds an object for this key version "
			    "that the store does not know (restored "
			    "database?); resolve it by hand",
			    KW_F("key", name), KW_F("version", version));
			rv = KW_ERR_INTERNAL;
		}
		rv2 = kwd_store_version_abandon(k->store, name, version);
		if (rv2 != KW_OK)
			kw_log(KW_LOG_ERR, "keeper.abandon",
			    "a pending key version stays until restart",
			    KW_F("key", name),
			    KW_F("error", kw_error_name(rv2)));
		goto out;
	}
	rv = kwd_store_version_commit(k->store, name, version);
	meta_forget(k, name);
	if (kind == KWD_KIND_SIGNER)
		tokkeys_forget(k);
	if (rv != KW_OK)
		snprintf(reason, rlen, "store commit: %s", kw_error_name(rv));
	else
		snprintf(reason, rlen, "version %u active", version);
out:
	pthread_mutex_unlock(&k->store_lock);
	return rv;
}

static int
do_key_list(struct worker *wk, uint64_t rid, const char *identity)
{
	struct kwd_key_summary *list = NULL;
	size_t n = 0;
	char why[256];
	int rv;

	pthread_mutex_lock(&wk->k->store_lock);
	rv = kwd_store_key_list(wk->k->store, &list, &n);
	pthread_mutex_unlock(&wk->k->store_lock);
	if (rv != KW_OK)
		return rv;
	kwd_msg_begin(&wk->out, KWD_MSG_R_KEY_LIST, rid);
	/* Only the keys this caller may list: the others stay unseen. */
	for (size_t i = 0; i < n && i < 1000; i++) {
		if (!allowed(wk->k, identity, KWD_OP_ADMIN_LIST, list[i].name,
		        NULL, why, sizeof why))
			continue;
		kwd_msg_put_str(&wk->out, KWD_TAG_KEY, list[i].name);
		kwd_msg_put_u32(&wk->out, KWD_TAG_VERSION, list[i].active);
	}
	free(list);
	return KW_OK;
}

/* ---- data keys ---- */

/*
 * Key metadata cache. Every data-key request needs the key's active
 * version or a version's state; reading them from SQLite costs a read
 * transaction (several system calls) under the store lock, which would
 * funnel every worker through one mutex. The keeper is the store's only
 * writer, so a cache is exact if it is filled and invalidated under the
 * store lock: a load cannot interleave with a write.
 */
struct meta_ver {
	uint32_t version;
	uint8_t state;
};

struct meta {
	struct meta *next;
	char name[64];
	uint32_t active;
	uint32_t min_decrypt;
	size_t n;
	struct meta_ver v[]; /* all versions but PENDING */
};

static size_t
meta_bucket(const char *name)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 1099511628211ull;
	return (size_t)(h % META_BUCKETS);
}

/* Called with k->meta_lock held (read or write). */
static struct meta *
meta_find(struct keeper *k, const char *name)
{
	struct meta *m = k->meta[meta_bucket(name)];

	while (m != NULL && strcmp(m->name, name) != 0)
		m = m->next;
	return m;
}

/* Drop name's entry; the caller holds k->store_lock. */
static void
meta_forget(struct keeper *k, const char *name)
{
	struct meta **pp;

	pthread_rwlock_wrlock(&k->meta_lock);
	for (pp = &k->meta[meta_bucket(name)]; *pp != NULL; pp = &(*pp)->next) {
		if (strcmp((*pp)->name, name) == 0) {
			struct meta *m = *pp;

			*pp = m->next;
			free(m);
			break;
		}
	}
	pthread_rwlock_unlock(&k->meta_lock);
}

/* Load name from the store into the cache; the caller holds store_lock. */
static int
meta_load(struct keeper *k, const char *name)
{
	struct kwd_key *key = malloc(sizeof *key);
	struct meta *m = NULL;
	size_t b;
	int rv;

	if (key == NULL)
		return KW_ERR_NOMEM;
	rv = kwd_store_key_get(k->store, name, key);
	if (rv != KW_OK)
		goto out;
	/* The data-key cache holds KEKs only: a signing key's name is "no
	 * such key" to datakey, decrypt and rewrap. */
	if (key->kind != KWD_KIND_KEK) {
		rv = KW_ERR_NOT_FOUND;
		goto out;
	}
	m = malloc(sizeof *m + key->nversions * sizeof m->v[0]);
	if (m == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	snprintf(m->name, sizeof m->name, "%s", key->name);
	m->active = key->active;
	m->min_decrypt = key->min_decrypt_version;
	m->n = key->nversions;
	for (size_t i = 0; i < key->nversions; i++) {
		m->v[i].version = key->versions[i].version;
		m->v[i].state = (uint8_t)key->versions[i].state;
	}
	pthread_rwlock_wrlock(&k->meta_lock);
	if (meta_find(k, name) == NULL) {
		b = meta_bucket(name);
		m->next = k->meta[b];
		k->meta[b] = m;
		m = NULL;
	}
	pthread_rwlock_unlock(&k->meta_lock);
out:
	free(m);
	free(key);
	return rv;
}

static void
meta_clear(struct keeper *k)
{
	for (size_t b = 0; b < META_BUCKETS; b++) {
		while (k->meta[b] != NULL) {
			struct meta *m = k->meta[b];

			k->meta[b] = m->next;
			free(m);
		}
	}
}

/* Decide from a cache entry; called with k->meta_lock held. */
static int
meta_decide(const struct meta *m, uint32_t want, bool for_wrap,
    uint32_t *ret_version, char *reason, size_t rlen)
{
	if (for_wrap) {
		if (m->active == 0) {
			snprintf(reason, rlen, "no active version");
			return KW_ERR_UNAVAILABLE;
		}
		*ret_version = m->active;
		return KW_OK;
	}
	for (size_t i = 0; i < m->n; i++) {
		if (m->v[i].version != want)
			continue;
		if (want < m->min_decrypt) {
			snprintf(reason, rlen,
			    "version %u is below min_decrypt_version %u", want,
			    m->min_decrypt);
			return KW_ERR_DENIED;
		}
		if (m->v[i].state != KWD_KEY_ACTIVE &&
		    m->v[i].state != KWD_KEY_DECRYPT_ONLY) {
			snprintf(reason, rlen, "version %u is %s", want,
			    kwd_key_state_name(m->v[i].state));
			return KW_ERR_DENIED;
		}
		snprintf(reason, rlen, "version %u", want);
		*ret_version = want;
		return KW_OK;
	}
	snprintf(reason, rlen, "version %u unknown", want);
	return KW_ERR_DENIED;
}

/* The key and version a request may use: the active one to wrap, or
 * want if its state allows unwrapping. */
static int
usable_version(struct keeper *k, const char *name, uint32_t want, bool for_wrap,
    uint32_t *ret_version, char *reason, size_t rlen)
{
	const struct meta *m;
	int rv;

	for (int pass = 0; pass < 2; pass++) {
		pthread_rwlock_rdlock(&k->meta_lock);
		m = meta_find(k, name);
		if (m != NULL) {
			rv = meta_decide(m, want, for_wrap, ret_version, reason,
			    rlen);
			pthread_rwlock_unlock(&k->meta_lock);
			return rv;
		}
		pthread_rwlock_unlock(&k->meta_lock);
		if (pass == 1)
			break;
		pthread_mutex_lock(&k->store_lock);
		rv = meta_load(k, name);
		pthread_mutex_unlock(&k->store_lock);
		if (rv != KW_OK) {
			snprintf(reason, rlen, "no such key");
			return rv;
		}
	}
	/* Loaded, then forgotten by a concurrent write: rare; retry later. */
	snprintf(reason, rlen, "key changed during the request");
	return KW_ERR_UNAVAILABLE;
}

/* Wrap a fresh or given DEK under name's active version. */
static int
wrap(struct worker *wk, const char *name, uint32_t version, const struct ctx *c,
    const unsigned char dek[32], unsigned char *blob, size_t *ret_bloblen)
{
	unsigned char aad[1024], ct[48];
	struct kwd_blob b;
	size_t aadlen, ctlen;
	uint64_t t0;
	int rv;

	memset(&b, 0, sizeof b);
	b.alg = 1;
	snprintf(b.key, sizeof b.key, "%s", name);
	b.version = version;
	rv = kwd_blob_aad(&b, c->pairs, c->n, aad, sizeof aad, &aadlen);
	if (rv != KW_OK)
		return rv;
	t0 = now_ns();
	rv = kwd_p11_gcm_seal(wk->w, name, version, aad, aadlen, dek, 32,
	    b.nonce, ct, sizeof ct, &ctlen);
	hsm_observe(wk->k, t0, rv);
	if (rv != KW_OK)
		return rv;
	b.ct = ct;
	b.ctlen = ctlen;
	return kwd_blob_encode(&b, blob, KWD_BLOB_MAX, ret_bloblen);
}

static int
unwrap(struct worker *wk, const char *name, const struct ctx *c,
    const struct kwd_field *blobf, struct kw_secret **ret_dek, char *reason,
    size_t rlen)
{
	unsigned char aad[1024];
	struct kwd_blob b;
	size_t aadlen;
	uint32_t version;
	uint64_t t0;
	int rv;

	rv = kwd_blob_parse(blobf->p, blobf->len, &b);
	if (rv != KW_OK) {
		snprintf(reason, rlen, "wrapped key malformed");
		return KW_ERR_AUTH;
	}
	/* A blob of another key is refused before the HSM is asked. */
	if (strcmp(b.key, name) != 0) {
		snprintf(reason, rlen, "wrapped key belongs to another key");
		return KW_ERR_AUTH;
	}
	rv = usable_version(wk->k, name, b.version, false, &version, reason,
	    rlen);
	if (rv != KW_OK)
		return rv;
	rv = kwd_blob_aad(&b, c->pairs, c->n, aad, sizeof aad, &aadlen);
	if (rv != KW_OK)
		return rv;
	t0 = now_ns();
	rv = kwd_p11_gcm_open(wk->w, name, version, aad, aadlen, b.nonce, b.ct,
	    b.ctlen, ret_dek);
	hsm_observe(wk->k, t0, rv);
	if (rv == KW_ERR_AUTH)
		snprintf(reason, rlen,
		    "authentication failed (context, key "
		    "or data do not match)");
	else if (rv != KW_OK)
		snprintf(reason, rlen, "HSM: %s", kw_error_name(rv));
	else if (kw_secret_len(*ret_dek) != 32) {
		kw_secret_free(*ret_dek);
		*ret_dek = NULL;
		snprintf(reason, rlen, "unwrapped key has the wrong size");
		rv = KW_ERR_AUTH;
	}
	return rv;
}

static int
do_datakey(struct worker *wk, uint64_t rid, const char *name,
    const struct ctx *c, bool plaintext, char *reason, size_t rlen)
{
	struct kw_secret *dek = NULL;
	unsigned char blob[KWD_BLOB_MAX];
	size_t bloblen;
	uint32_t version;
	uint64_t t0;
	int rv;

	rv = usable_version(wk->k, name, 0, true, &version, reason, rlen);
	if (rv != KW_OK)
		return rv;
	rv = kw_secret_new(32, &dek);
	if (rv != KW_OK)
		return rv;
	t0 = now_ns();
	rv = kwd_p11_random(wk->w, kw_secret_data(dek), 32);
	hsm_observe(wk->k, t0, rv);
	if (rv != KW_OK) {
		/* Never a zero or partial key: no key at all. */
		snprintf(reason, rlen, "HSM random: %s", kw_error_name(rv));
		rv = rv == KW_ERR_HSM ? KW_ERR_RANDOM : rv;
		goto out;
	}
	rv = wrap(wk, name, version, c, kw_secret_data(dek), blob, &bloblen);
	if (rv != KW_OK) {
		snprintf(reason, rlen, "HSM wrap: %s", kw_error_name(rv));
		goto out;
	}
	kwd_msg_begin(&wk->out, KWD_MSG_R_DATAKEY, rid);
	kwd_msg_put_str(&wk->out, KWD_TAG_KEY, name);
	kwd_msg_put_u32(&wk->out, KWD_TAG_VERSION, version);
	kwd_msg_put(&wk->out, KWD_TAG_BLOB, blob, bloblen);
	if (plaintext)
		kwd_msg_put(&wk->out, KWD_TAG_DEK, kw_secret_data(dek), 32);
	snprintf(reason, rlen, "version %u", version);
out:
	kw_secret_free(dek);
	return rv;
}

static int
do_unwrap(struct worker *wk, uint64_t rid, uint16_t type, const char *name,
    const struct ctx *c, const struct kwd_field *blobf, char *reason,
    size_t rlen)
{
	struct kw_secret *dek = NULL;
	unsigned char blob[KWD_BLOB_MAX];
	size_t bloblen;
	uint32_t version;
	int rv;

	rv = unwrap(wk, name, c, blobf, &dek, reason, rlen);
	if (rv != KW_OK)
		return rv;
	if (type == KWD_MSG_DECRYPT) {
		kwd_msg_begin(&wk->out, KWD_MSG_R_DECRYPT, rid);
		kwd_msg_put(&wk->out, KWD_TAG_DEK, kw_secret_data(dek), 32);
		goto out;
	}
	/* Rewrap: the same DEK under the active version; no plaintext out. */
	rv = usable_version(wk->k, name, 0, true, &version, reason, rlen);
	if (rv == KW_OK)
		rv = wrap(wk, name, version, c, kw_secret_data(dek), blob,
		    &bloblen);
	if (rv != KW_OK)
		goto out;
	kwd_msg_begin(&wk->out, KWD_MSG_R_REWRAP, rid);
	kwd_msg_put_str(&wk->out, KWD_TAG_KEY, name);
	kwd_msg_put_u32(&wk->out, KWD_TAG_VERSION, version);
	kwd_msg_put(&wk->out, KWD_TAG_BLOB, blob, bloblen);
	snprintf(reason, rlen, "rewrapped to version %u", version);
out:
	kw_secret_free(dek);
	return rv;
}

/* ---- tokens (docs/TOKENS.md) ---- */

/* The longest a token may live, whatever the policy says; also how long
 * a retired signing key stays in the JWKS. */
#define TOKEN_TTL_CAP (7 * 24 * 3600)

/* tokkeys_clear: drop the cached keys; tok_lock held. */
static void
tokkeys_clear(struct keeper *k)
{
	for (size_t i = 0; i < k->tok_n; i++)
		EVP_PKEY_free(k->tok[i].pub);
	k->tok_n = 0;
	free(k->tok_jwks);
	k->tok_jwks = NULL;
	k->tok_active = 0;
	k->tok_valid = false;
}

static void
tokkeys_forget(struct keeper *k)
{
	pthread_mutex_lock(&k->tok_lock);
	tokkeys_clear(k);
	pthread_mutex_unlock(&k->tok_lock);
}

/*
 * signer_public: the public key of version `version` of signer name, its
 * kid (RFC 7638) and, when ret_jwk is not NULL, its JWK. *ret_pub (when
 * not NULL) is the caller's on success; nothing is on failure.
 */
static int
signer_public(struct kwd_p11_worker *w, const char *name, uint32_t version,
    EVP_PKEY **ret_pub, char kid[KWD_TOKEN_THUMB_LEN + 1], json_t **ret_jwk)
{
	EVP_PKEY *pub = NULL;
	int rv;

	rv = kwd_p11_ec_public(w, name, version, &pub);
	if (rv == KW_OK)
		rv = kwd_token_kid(pub, kid);
	if (rv == KW_OK && ret_jwk != NULL)
		rv = kwd_token_jwk(pub, kid, ret_jwk);
	if (rv == KW_OK && ret_pub != NULL) {
		*ret_pub = pub;
		pub = NULL;
	}
	EVP_PKEY_free(pub);
	return rv;
}

/*
 * tokkeys_load: the token signer's published versions (the active one and
 * retired ones younger than TOKEN_TTL_CAP, newest first), each with its
 * kid and public key, and the JWKS made of them. tok_lock held.
 * KW_ERR_NOT_FOUND: there is no token signer yet.
 */
static int
tokkeys_load(struct keeper *k, struct kwd_p11_worker *w)
{
	uint64_t now = (uint64_t)time(NULL);
	struct kwd_key *key = NULL;
	json_t *keys = NULL, *doc = NULL;
	int rv;

	if (k->tok_valid)
		return KW_OK;
	key = malloc(sizeof *key);
	keys = json_array();
	if (key == NULL || keys == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	pthread_mutex_lock(&k->store_lock);
	rv = kwd_store_key_get(k->store, TOKEN_SIGNER, key);
	pthread_mutex_unlock(&k->store_lock);
	if (rv == KW_OK && key->kind != KWD_KIND_SIGNER) {
		kw_log(KW_LOG_ERR, "keeper.token_key",
		    "a KEK is named \"" TOKEN_SIGNER "\", the name of the "
		    "token signing key: no tokens can be issued", );
		rv = KW_ERR_CONFIG;
	}
	if (rv != KW_OK)
		goto out;
	for (size_t i = key->nversions; i-- > 0 && k->tok_n < TOKEN_KEYS_MAX;) {
		const struct kwd_key_version *v = &key->versions[i];
		struct tokkey *t = &k->tok[k->tok_n];
		json_t *jwk = NULL;

		if (v->state != KWD_KEY_ACTIVE &&
		    !(v->state == KWD_KEY_DECRYPT_ONLY &&
		        v->retired + TOKEN_TTL_CAP + KWD_TOKEN_LEEWAY_MAX >
		            now))
			continue;
		rv = signer_public(w, TOKEN_SIGNER, v->version, &t->pub, t->kid,
		    &jwk);
		if (rv != KW_OK)
			goto out;
		t->version = v->version;
		k->tok_n++;
		if (json_array_append_new(keys, jwk) != 0) {
			rv = KW_ERR_NOMEM;
			goto out;
		}
		if (v->state == KWD_KEY_ACTIVE)
			k->tok_active = v->version;
	}
	doc = json_pack("{s:O}", "keys", keys);
	k->tok_jwks = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
	if (k->tok_jwks == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	k->tok_valid = true;
	rv = KW_OK;
out:
	if (rv != KW_OK)
		tokkeys_clear(k);
	json_decref(doc);
	json_decref(keys);
	free(key);
	return rv;
}

struct signarg {
	struct keeper *k;
	struct kwd_p11_worker *w;
	uint32_t version;
};

static int
token_sign(const unsigned char digest[32], unsigned char ret_sig[64], void *arg)
{
	struct signarg *sa = arg;
	uint64_t t0 = now_ns();
	int rv;

	rv = kwd_p11_ecdsa_sign(sa->w, TOKEN_SIGNER, sa->version, digest,
	    ret_sig);
	hsm_observe(sa->k, t0, rv);
	return rv;
}

/*
 * do_token_issue: POST /v1/tokens. The policy caps the scopes and the
 * lifetime (kwd_policy_token); the token is signed in the HSM with the
 * active version of the token signer, which is made on first use.
 */
static int
do_token_issue(struct worker *wk, const struct kwd_msg *m, const char *identity,
    char *aud, size_t audlen, char *reason, size_t rlen)
{
	struct keeper *k = wk->k;
	char sbuf[KWD_TOKEN_SCOPES_MAX][KWD_TOKEN_SCOPE_MAX + 1];
	const char *scopes[KWD_TOKEN_SCOPES_MAX];
	unsigned char jti[16];
	struct kwd_token_claims *cl = NULL;
	struct signarg sa = {.k = k, .w = wk->w};
	char kid[KWD_TOKEN_THUMB_LEN + 1], *jws = NULL;
	size_t ns = kwd_msg_count(m, KWD_TAG_SCOPE), off = 0;
	uint32_t ttl = 0, grant_ttl = 0;
	int64_t t = (int64_t)time(NULL);
	bool ok;
	int rv;

	if (!kwd_msg_str(m, KWD_TAG_AUDIENCE, 0, aud, audlen) || ns == 0 ||
	    ns > KWD_TOKEN_SCOPES_MAX) {
		snprintf(reason, rlen, "malformed token request");
		return KW_ERR_INVALID;
	}
	for (size_t i = 0; i < ns; i++) {
		if (!kwd_msg_str(m, KWD_TAG_SCOPE, i, sbuf[i],
		        sizeof sbuf[i]) ||
		    !kwd_token_scope_valid(sbuf[i])) {
			snprintf(reason, rlen, "malformed scope");
			return KW_ERR_INVALID;
		}
		scopes[i] = sbuf[i];
	}
	kwd_msg_u32(m, KWD_TAG_TTL, &ttl);
	if (ttl > TOKEN_TTL_CAP) {
		snprintf(reason, rlen, "ttl over %d s", TOKEN_TTL_CAP);
		return KW_ERR_INVALID;
	}
	pthread_rwlock_rdlock(&k->policy_lock);
	ok = kwd_policy_token(k->policy, identity, scopes, ns, ttl, &grant_ttl,
	    reason, rlen);
	pthread_rwlock_unlock(&k->policy_lock);
	if (!ok)
		return KW_ERR_DENIED;
	if (grant_ttl > TOKEN_TTL_CAP)
		grant_ttl = TOKEN_TTL_CAP;

	pthread_mutex_lock(&k->tok_lock);
	rv = tokkeys_load(k, wk->w);
	pthread_mutex_unlock(&k->tok_lock);
	if (rv == KW_ERR_NOT_FOUND) {
		/* First token: make the signing key (two-phase, as any
		 * key). Another worker may be making it too. */
		rv = new_version(wk, TOKEN_SIGNER, KWD_KIND_SIGNER, true, 0,
		    reason, rlen);
		if (rv == KW_OK || rv == KW_ERR_EXISTS ||
		    rv == KW_ERR_UNAVAILABLE) {
			pthread_mutex_lock(&k->tok_lock);
			rv = tokkeys_load(k, wk->w);
			pthread_mutex_unlock(&k->tok_lock);
		}
	}
	pthread_mutex_lock(&k->tok_lock);
	if (rv == KW_OK && k->tok_active == 0)
		rv = KW_ERR_UNAVAILABLE;
	if (rv == KW_OK) {
		sa.version = k->tok_active;
		for (size_t i = 0; i < k->tok_n; i++)
			if (k->tok[i].version == sa.version)
				memcpy(kid, k->tok[i].kid, sizeof kid);
	}
	pthread_mutex_unlock(&k->tok_lock);
	if (rv != KW_OK) {
		snprintf(reason, rlen, "token signing key: %s",
		    kw_error_name(rv));
		return rv == KW_ERR_CONFIG ? KW_ERR_UNAVAILABLE : rv;
	}

	cl = calloc(1, sizeof *cl);
	if (cl == NULL)
		return KW_ERR_NOMEM;
	snprintf(cl->iss, sizeof cl->iss, "%s",
	    k->cfg->token_issuer != NULL ? k->cfg->token_issuer : "keyward");
	snprintf(cl->sub, sizeof cl->sub, "%s", identity);
	snprintf(cl->aud, sizeof cl->aud, "%s", aud);
	cl->iat = cl->nbf = t;
	cl->exp = t + (int64_t)grant_ttl;
	kw_random_buf(jti, sizeof jti);
	rv = kwd_token_b64url_encode(jti, sizeof jti, cl->jti, sizeof cl->jti);
	for (size_t i = 0; rv == KW_OK && i < ns; i++) {
		size_t len = strlen(scopes[i]);

		if (off + len + 2 > sizeof cl->scope) {
			rv = KW_ERR_TOO_LARGE;
			break;
		}
		if (i > 0)
			cl->scope[off++] = ' ';
		memcpy(cl->scope + off, scopes[i], len + 1);
		off += len;
	}
	if (rv == KW_OK && kwd_msg_count(m, KWD_TAG_CNF) == 1 &&
	    !kwd_msg_str(m, KWD_TAG_CNF, 0, cl->cnf, sizeof cl->cnf))
		rv = KW_ERR_INVALID;
	if (rv == KW_OK)
		rv = kwd_token_build(cl, kid, token_sign, &sa, &jws);
	if (rv != KW_OK) {
		snprintf(reason, rlen, "token not issued: %s",
		    kw_error_name(rv));
		goto out;
	}
	kwd_msg_begin(&wk->out, KWD_MSG_R_TOKEN, m->rid);
	kwd_msg_put_str(&wk->out, KWD_TAG_TOKEN, jws);
	kwd_msg_put_u64(&wk->out, KWD_TAG_EXPIRES, (uint64_t)cl->exp);
	/* The jti names the token for revocation; the token itself is
	 * never logged. */
	/* Scopes can be long: the reason (and audit line) shows a cut. */
	snprintf(reason, rlen, "issued jti=%s kid=%s ttl=%u%s scope=%.256s",
	    cl->jti, kid, grant_ttl, cl->cnf[0] != '\0' ? " bound" : "",
	    cl->scope);
out:
	kwd_token_free(jws);
	sodium_memzero(cl, sizeof *cl);
	free(cl);
	return rv;
}

/* do_jwks: GET /.well-known/jwks.json, public; {"keys":[]} before the
 * first token. */
static void
do_jwks(struct worker *wk, uint64_t rid)
{
	struct keeper *k = wk->k;
	int rv;

	rv = worker_p11(wk);
	pthread_mutex_lock(&k->tok_lock);
	if (rv == KW_OK)
		rv = tokkeys_load(k, wk->w);
	if (rv == KW_OK) {
		kwd_msg_begin(&wk->out, KWD_MSG_R_JWKS, rid);
		kwd_msg_put(&wk->out, KWD_TAG_JSON,
		    (const unsigned char *)k->tok_jwks, strlen(k->tok_jwks));
	} else if (rv == KW_ERR_NOT_FOUND) {
		static const char empty[] = "{\"keys\":[]}";

		kwd_msg_begin(&wk->out, KWD_MSG_R_JWKS, rid);
		kwd_msg_put(&wk->out, KWD_TAG_JSON,
		    (const unsigned char *)empty, sizeof empty - 1);
	} else {
		reply_error(wk, rid, KW_ERR_UNAVAILABLE,
		    error_message(KW_ERR_UNAVAILABLE));
	}
	pthread_mutex_unlock(&k->tok_lock);
}

/* ---- token verification and revocation ---- */

/* Revocations in memory (loaded at start, added to before a revoke is
 * answered, so that it holds for the next request). */
struct revoked {
	char jti[KWD_TOKEN_JTI_MAX + 1]; /* "" for a subject entry */
	char sub[KWD_TOKEN_STR_MAX + 1];
	uint64_t until; /* forgotten after: no token it covers lives on */
	uint64_t before; /* subject entries: tokens issued before this */
};

/* rev_add: rev_lock held for writing. Expired entries are dropped. */
static int
rev_add(struct keeper *k, const char *jti, const char *sub, uint64_t until,
    uint64_t before)
{
	uint64_t now = (uint64_t)time(NULL);
	size_t j = 0;

	for (size_t i = 0; i < k->nrev; i++)
		if (k->rev[i].until >= now)
			k->rev[j++] = k->rev[i];
	k->nrev = j;
	for (size_t i = 0; i < k->nrev; i++) {
		struct revoked *r = &k->rev[i];

		if (jti != NULL && strcmp(r->jti, jti) == 0)
			return KW_OK;
		if (sub != NULL && r->jti[0] == '\0' &&
		    strcmp(r->sub, sub) == 0) {
			if (before > r->before)
				r->before = before;
			if (until > r->until)
				r->until = until;
			return KW_OK;
		}
	}
	if (k->nrev == k->caprev) {
		size_t cap = k->caprev == 0 ? 64 : k->caprev * 2;
		struct revoked *p = realloc(k->rev, cap * sizeof *p);

		if (p == NULL)
			return KW_ERR_NOMEM;
		k->rev = p;
		k->caprev = cap;
	}
	memset(&k->rev[k->nrev], 0, sizeof k->rev[0]);
	if (jti != NULL)
		snprintf(k->rev[k->nrev].jti, sizeof k->rev[0].jti, "%s", jti);
	else
		snprintf(k->rev[k->nrev].sub, sizeof k->rev[0].sub, "%s", sub);
	k->rev[k->nrev].until = until;
	k->rev[k->nrev].before = before;
	k->nrev++;
	return KW_OK;
}

static int
rev_load(void *arg, const char *jti, const char *sub, uint64_t until,
    uint64_t before)
{
	return rev_add(arg, jti, sub, until, before);
}

static bool
rev_check(struct keeper *k, const struct kwd_token_claims *cl)
{
	bool revoked = false;

	pthread_rwlock_rdlock(&k->rev_lock);
	for (size_t i = 0; i < k->nrev && !revoked; i++) {
		const struct revoked *r = &k->rev[i];

		if (r->jti[0] != '\0')
			revoked = strcmp(r->jti, cl->jti) == 0;
		else
			revoked = strcmp(r->sub, cl->sub) == 0 &&
			    (uint64_t)cl->iat < r->before;
	}
	pthread_rwlock_unlock(&k->rev_lock);
	return revoked;
}

static int
tok_lookup(const char *kid, void *arg, EVP_PKEY **ret_key)
{
	struct worker *wk = arg;
	struct keeper *k = wk->k;
	int rv;

	pthread_mutex_lock(&k->tok_lock);
	rv = tokkeys_load(k, wk->w);
	if (rv == KW_OK) {
		rv = KW_ERR_NOT_FOUND;
		for (size_t i = 0; i < k->tok_n; i++)
			if (strcmp(k->tok[i].kid, kid) == 0 &&
			    EVP_PKEY_up_ref(k->tok[i].pub) == 1) {
				*ret_key = k->tok[i].pub;
				rv = KW_OK;
				break;
			}
	}
	pthread_mutex_unlock(&k->tok_lock);
	return rv;
}

/*
 * token_check: a keyward token, verified (TOKENS.md: signature under a
 * published kid, claims, iss, aud, time with 30 s leeway, lifetime cap,
 * certificate binding against x5t, the presented certificate's
 * thumbprint or NULL) and not revoked. KW_ERR_UNAUTHENTICATED with the
 * reason for the audit record otherwise.
 */
static int
token_check(struct worker *wk, const char *jws, const char *aud,
    const char *x5t, struct kwd_token_claims *cl, char *reason, size_t rlen)
{
	struct keeper *k = wk->k;
	struct kwd_token_verify_opts o = {
	    .issuer =
	        k->cfg->token_issuer != NULL ? k->cfg->token_issuer : "keyward",
	    .audience = aud,
	    .now = (int64_t)time(NULL),
	    .leeway = KWD_TOKEN_LEEWAY_MAX,
	    .max_ttl = TOKEN_TTL_CAP,
	    .cert_thumbprint = x5t,
	};
	int rv;

	rv = worker_p11(wk);
	if (rv != KW_OK) {
		snprintf(reason, rlen, "HSM unavailable: %s",
		    kw_error_name(rv));
		return rv;
	}
	rv = kwd_token_verify(jws, strlen(jws), &o, tok_lookup, wk, cl, reason,
	    rlen);
	if (rv == KW_ERR_NOT_FOUND) /* no token key yet: nothing we issued */
		rv = KW_ERR_UNAUTHENTICATED;
	if (rv == KW_OK && rev_check(k, cl)) {
		snprintf(reason, rlen, "token revoked (jti=%s)", cl->jti);
		rv = KW_ERR_UNAUTHENTICATED;
	}
	return rv;
}

/*
 * peek_aud: the aud claim of a token, and its cnf thumbprint if any,
 * unverified: introspection verifies for the audience the token names,
 * and returns cnf for the resource server to compare with its client's
 * certificate (RFC 8705 section 3.2).
 */
static bool
peek_aud(const char *jws, char *aud, size_t audlen, char *cnf, size_t cnflen)
{
	const char *p = strchr(jws, '.'), *q;
	unsigned char *buf = NULL;
	size_t len = 0;
	json_t *root = NULL;
	const char *a;
	bool ok = false;

	if (p == NULL || (q = strchr(p + 1, '.')) == NULL ||
	    (size_t)(q - p - 1) > KWD_TOKEN_MAX)
		return false;
	buf = malloc(KWD_TOKEN_MAX);
	if (buf == NULL)
		return false;
	if (kwd_token_b64url_decode(p + 1, (size_t)(q - p - 1), buf,
	        KWD_TOKEN_MAX, &len) == KW_OK)
		root = json_loadb((const char *)buf, len,
		    JSON_REJECT_DUPLICATES, NULL);
	a = json_string_value(json_object_get(root, "aud"));
	if (a != NULL && strlen(a) < audlen) {
		snprintf(aud, audlen, "%s", a);
		ok = true;
	}
	a = json_string_value(
	    json_object_get(json_object_get(root, "cnf"), "x5t#S256"));
	cnf[0] = '\0';
	if (a != NULL && strlen(a) < cnflen)
		snprintf(cnf, cnflen, "%s", a);
	json_decref(root);
	free(buf);
	return ok;
}

/*
 * do_introspect: RFC 7662 section 2.2. The caller needs "introspect" on
 * the token's audience; a token that is not active gets {"active":false}
 * and nothing else.
 */
static int
do_introspect(struct worker *wk, const struct kwd_msg *m, const char *identity,
    char *aud, size_t audlen, char *reason, size_t rlen)
{
	char *jws = NULL, *text = NULL;
	struct kwd_token_claims *cl = NULL;
	const struct kwd_field *f = kwd_msg_get(m, KWD_TAG_TOKEN, 0);
	json_t *doc = NULL;
	char why[256] = "", cnf[KWD_TOKEN_THUMB_LEN + 1];
	int rv;

	if (f == NULL || (jws = malloc(f->len + 1)) == NULL ||
	    (cl = calloc(1, sizeof *cl)) == NULL) {
		free(jws);
		return KW_ERR_NOMEM;
	}
	memcpy(jws, f->p, f->len);
	jws[f->len] = '\0';
	if (!peek_aud(jws, aud, audlen, cnf, sizeof cnf)) {
		aud[0] = '\0';
		snprintf(why, sizeof why, "not a token");
		rv = KW_ERR_UNAUTHENTICATED;
	} else if (!allowed(wk->k, identity, KWD_OP_INTROSPECT, aud, NULL,
	               reason, rlen)) {
		rv = KW_ERR_DENIED;
		goto out;
	} else {
		rv = token_check(wk, jws, aud, cnf[0] != '\0' ? cnf : NULL, cl,
		    why, sizeof why);
	}
	if (rv == KW_OK) {
		doc = json_pack("{s:b,s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:s,s:s}",
		    "active", 1, "scope", cl->scope, "sub", cl->sub, "aud",
		    cl->aud, "iss", cl->iss, "exp", (json_int_t)cl->exp, "iat",
		    (json_int_t)cl->iat, "nbf", (json_int_t)cl->nbf, "jti",
		    cl->jti, "token_type", "Bearer");
		if (doc != NULL && cl->cnf[0] != '\0')
			json_object_set_new(doc, "cnf",
			    json_pack("{s:s}", "x5t#S256", cl->cnf));
		snprintf(reason, rlen, "active jti=%s", cl->jti);
	} else if (rv == KW_ERR_UNAUTHENTICATED) {
		doc = json_pack("{s:b}", "active", 0);
		snprintf(reason, rlen, "inactive: %s", why);
		rv = KW_OK;
	} else {
		snprintf(reason, rlen, "%s", why);
		goto out;
	}
	text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
	if (text == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	kwd_msg_begin(&wk->out, KWD_MSG_R_INTROSPECT, m->rid);
	kwd_msg_put(&wk->out, KWD_TAG_JSON, (const unsigned char *)text,
	    strlen(text));
out:
	free(text);
	json_decref(doc);
	sodium_memzero(jws, f->len);
	free(jws);
	sodium_memzero(cl, sizeof *cl);
	free(cl);
	return rv;
}

/*
 * do_revoke: by jti (until the longest a token can live) or by subject
 * (every token issued to it until now). Committed to the store, then in
 * memory, then answered: effective for the next request, and after a
 * restart.
 */
static int
do_revoke(struct worker *wk, const struct kwd_msg *m, char *reason, size_t rlen)
{
	struct keeper *k = wk->k;
	char jti[KWD_TOKEN_JTI_MAX + 1] = "", sub[KWD_TOKEN_STR_MAX + 1] = "";
	uint64_t now = (uint64_t)time(NULL);
	uint64_t until = now + TOKEN_TTL_CAP + KWD_TOKEN_LEEWAY_MAX;
	bool by_jti = kwd_msg_str(m, KWD_TAG_JTI, 0, jti, sizeof jti);
	bool by_sub = kwd_msg_str(m, KWD_TAG_SUBJECT, 0, sub, sizeof sub);
	int rv;

	if (by_jti == by_sub) {
		snprintf(reason, rlen, "one of jti and sub");
		return KW_ERR_INVALID;
	}
	pthread_mutex_lock(&k->store_lock);
	rv = by_jti ? kwd_store_revoke_jti(k->store, jti, until)
	            /* A token issued in this very second is covered too. */
	            : kwd_store_revoke_sub(k->store, sub, now + 1, until);
	pthread_mutex_unlock(&k->store_lock);
	if (rv == KW_OK) {
		pthread_rwlock_wrlock(&k->rev_lock);
		rv = by_jti ? rev_add(k, jti, NULL, until, 0)
		            : rev_add(k, NULL, sub, until, now + 1);
		pthread_rwlock_unlock(&k->rev_lock);
	}
	if (rv != KW_OK) {
		snprintf(reason, rlen, "revocation not recorded: %s",
		    kw_error_name(rv));
		return rv;
	}
	snprintf(reason, rlen, "revoked %s=%s", by_jti ? "jti" : "sub",
	    by_jti ? jti : sub);
	kwd_msg_begin(&wk->out, KWD_MSG_R_OK, m->rid);
	return KW_OK;
}

/* ---- health, stats, audit events ---- */

static void
do_health(struct worker *wk, uint64_t rid)
{
	struct keeper *k = wk->k;
	char reason[200] = "";
	bool hsm = false, aud;
	int err;

	if (keeper_p11(k, &err) != NULL)
		hsm = kwd_p11_healthy(k->p11);
	aud = k->audit != NULL && kwd_audit_ok(k->audit, reason, sizeof reason);
	if (k->audit == NULL)
		snprintf(reason, sizeof reason, "audit log: %s",
		    k->audit_open_reason);
	if (!hsm && reason[0] == '\0')
		snprintf(reason, sizeof reason, "HSM: %s",
		    kw_strerror(err != KW_OK ? err : KW_ERR_HSM_DOWN));
	kwd_msg_begin(&wk->out, KWD_MSG_R_HEALTH, rid);
	kwd_msg_put_u8(&wk->out, KWD_TAG_HSM_OK, hsm);
	kwd_msg_put_u8(&wk->out, KWD_TAG_AUDIT_OK, aud);
	if (reason[0] != '\0')
		kwd_msg_put_str(&wk->out, KWD_TAG_REASON, reason);
}

static void
do_stats(struct worker *wk, uint64_t rid)
{
	struct keeper *k = wk->k;
	char text[4096];
	size_t off = 0;
	uint64_t cum = 0;
	int err;

#define OUT(...)                                                               \
	do {                                                                   \
		int n_ = snprintf(text + off, sizeof text - off, __VA_ARGS__); \
		if (n_ > 0 && (size_t)n_ < sizeof text - off)                  \
			off += (size_t)n_;                                     \
	} while (0)
	OUT("# TYPE keyward_keeper_requests_total counter\n");
	OUT("keyward_keeper_requests_total{result=\"ok\"} %llu\n",
	    (unsigned long long)atomic_load(&k->requests_ok));
	OUT("keyward_keeper_requests_total{result=\"denied\"} %llu\n",
	    (unsigned long long)atomic_load(&k->requests_denied));
	OUT("keyward_keeper_requests_total{result=\"failed\"} %llu\n",
	    (unsigned long long)atomic_load(&k->requests_failed));
	OUT("# TYPE keyward_hsm_errors_total counter\n");
	OUT("keyward_hsm_errors_total %llu\n",
	    (unsigned long long)atomic_load(&k->hsm_errors));
	OUT("# TYPE keyward_hsm_operation_seconds histogram\n");
	for (size_t i = 0; i <= NBUCKETS; i++) {
		cum += atomic_load(&k->hsm_hist[i]);
		if (i < NBUCKETS)
			OUT("keyward_hsm_operation_seconds_bucket{le=\"%g\"} "
			    "%llu\n",
			    hsm_buckets[i], (unsigned long long)cum);
		else
			OUT("keyward_hsm_operation_seconds_bucket{le=\"+Inf\"} "
			    "%llu\n",
			    (unsigned long long)cum);
	}
	OUT("keyward_hsm_operation_seconds_sum %.6f\n",
	    (double)atomic_load(&k->hsm_sum_ns) / 1e9);
	OUT("keyward_hsm_operation_seconds_count %llu\n",
	    (unsigned long long)atomic_load(&k->hsm_ops));
	OUT("# TYPE keyward_hsm_up gauge\nkeyward_hsm_up %d\n",
	    keeper_p11(k, &err) != NULL && kwd_p11_healthy(k->p11));
	OUT("# TYPE keyward_audit_ok gauge\nkeyward_audit_ok %d\n",
	    audit_ok(k));
#undef OUT
	kwd_msg_begin(&wk->out, KWD_MSG_R_STATS, rid);
	kwd_msg_put(&wk->out, KWD_TAG_TEXT, text, off);
}

static void
audit_event(struct worker *wk, const struct kwd_msg *m)
{
	char identity[256], op[65], resource[256], outcome[33], reason[513],
	    remote[65];
	struct kwd_audit_rec rec;
	uint32_t status = 0;
	uint64_t lat = 0;

	memset(&rec, 0, sizeof rec);
	rec.rid = m->rid;
	rec.identity =
	    kwd_msg_str(m, KWD_TAG_IDENTITY, 0, identity, sizeof identity)
	    ? identity
	    : NULL;
	rec.op = kwd_msg_str(m, KWD_TAG_OP, 0, op, sizeof op) ? op : "?";
	rec.resource =
	    kwd_msg_str(m, KWD_TAG_RESOURCE, 0, resource, sizeof resource)
	    ? resource
	    : NULL;
	rec.outcome =
	    kwd_msg_str(m, KWD_TAG_OUTCOME, 0, outcome, sizeof outcome)
	    ? outcome
	    : "rejected";
	rec.reason = kwd_msg_str(m, KWD_TAG_REASON, 0, reason, sizeof reason)
	    ? reason
	    : "";
	rec.remote = kwd_msg_str(m, KWD_TAG_REMOTE, 0, remote, sizeof remote)
	    ? remote
	    : NULL;
	kwd_msg_u32(m, KWD_TAG_STATUS, &status);
	kwd_msg_u64(m, KWD_TAG_LATENCY_US, &lat);
	rec.status = (int)status;
	rec.latency_us = lat;
	if (wk->k->audit == NULL ||
	    kwd_audit_write(wk->k->audit, &rec) != KW_OK)
		kw_log(KW_LOG_ERR, "audit.lost",
		    "a front rejection could not be audited", );
	kwd_msg_begin(&wk->out, KWD_MSG_R_OK, m->rid);
}

/* ---- signing keys and artifact signatures ---- */

/* Signers with a purpose of their own: not for artifacts. */
#define CA_SIGNER "ca"

/*
 * signer_active: the active version of signing key name. KW_ERR_NOT_FOUND
 * if there is none, or name is a KEK.
 */
static int
signer_active(struct keeper *k, const char *name, uint32_t *ret_version)
{
	struct kwd_key *key = malloc(sizeof *key);
	int rv;

	if (key == NULL)
		return KW_ERR_NOMEM;
	pthread_mutex_lock(&k->store_lock);
	rv = kwd_store_key_get(k->store, name, key);
	pthread_mutex_unlock(&k->store_lock);
	if (rv == KW_OK && (key->kind != KWD_KIND_SIGNER || key->active == 0))
		rv = KW_ERR_NOT_FOUND;
	if (rv == KW_OK)
		*ret_version = key->active;
	free(key);
	return rv;
}

/*
 * signer_doc: {"name","active_version","keys":[JWK + version + state]}:
 * the public keys of every version that is active or retired (kept, so
 * that what they signed still verifies).
 */
static int
signer_doc(struct worker *wk, const char *name, char **ret_text)
{
	struct keeper *k = wk->k;
	struct kwd_key *key = malloc(sizeof *key);
	json_t *keys = json_array(), *doc = NULL;
	char *text = NULL;
	int rv;

	if (key == NULL || keys == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	pthread_mutex_lock(&k->store_lock);
	rv = kwd_store_key_get(k->store, name, key);
	pthread_mutex_unlock(&k->store_lock);
	if (rv == KW_OK && key->kind != KWD_KIND_SIGNER)
		rv = KW_ERR_NOT_FOUND;
	if (rv != KW_OK)
		goto out;
	for (size_t i = 0; i < key->nversions; i++) {
		const struct kwd_key_version *v = &key->versions[i];
		char kid[KWD_TOKEN_THUMB_LEN + 1];
		json_t *jwk = NULL;

		if (v->state != KWD_KEY_ACTIVE &&
		    v->state != KWD_KEY_DECRYPT_ONLY)
			continue;
		rv = signer_public(wk->w, name, v->version, NULL, kid, &jwk);
		if (rv != KW_OK)
			goto out;
		json_object_set_new(jwk, "version", json_integer(v->version));
		json_object_set_new(jwk, "state",
		    json_string(
		        v->state == KWD_KEY_ACTIVE ? "active" : "retired"));
		json_array_append_new(keys, jwk);
	}
	doc = json_pack("{s:s,s:I,s:O}", "name", name, "active_version",
	    (json_int_t)key->active, "keys", keys);
	text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
	if (text == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	*ret_text = text;
	rv = KW_OK;
out:
	json_decref(doc);
	json_decref(keys);
	free(key);
	return rv;
}

static int
reply_json(struct worker *wk, uint16_t type, uint64_t rid, char *text)
{
	kwd_msg_begin(&wk->out, type, rid);
	kwd_msg_put(&wk->out, KWD_TAG_JSON, (const unsigned char *)text,
	    strlen(text));
	free(text);
	return KW_OK;
}

/* do_signer_rotate: a new version of a signing key, made if missing. */
static int
do_signer_rotate(struct worker *wk, const char *name, char *reason, size_t rlen)
{
	struct kwd_key *key = malloc(sizeof *key);
	bool exists;
	int rv;

	if (key == NULL)
		return KW_ERR_NOMEM;
	pthread_mutex_lock(&wk->k->store_lock);
	rv = kwd_store_key_get(wk->k->store, name, key);
	pthread_mutex_unlock(&wk->k->store_lock);
	exists = rv == KW_OK;
	free(key);
	if (rv != KW_OK && rv != KW_ERR_NOT_FOUND)
		return rv;
	/* A KEK of that name: "exists" on create (409). */
	return new_version(wk, name, KWD_KIND_SIGNER, !exists, 0, reason, rlen);
}

/* do_artifact_sign: ES256 over a SHA-256 digest with the active version
 * of an artifact signing key, in the HSM. */
static int
do_artifact_sign(struct worker *wk, uint64_t rid, const struct kwd_msg *m,
    const char *name, char *reason, size_t rlen)
{
	struct keeper *k = wk->k;
	const struct kwd_field *d = kwd_msg_get(m, KWD_TAG_DIGEST, 0);
	unsigned char sig[64];
	char kid[KWD_TOKEN_THUMB_LEN + 1], b64[90], hex[65];
	json_t *doc = NULL;
	char *text;
	uint64_t t0;
	uint32_t ver;
	int rv;

	if (strcmp(name, TOKEN_SIGNER) == 0 || strcmp(name, CA_SIGNER) == 0) {
		snprintf(reason, rlen, "%s is not an artifact signing key",
		    name);
		return KW_ERR_NOT_FOUND;
	}
	if (d == NULL || d->len != 32)
		return KW_ERR_INVALID;
	rv = signer_active(k, name, &ver);
	if (rv != KW_OK)
		return rv;
	t0 = now_ns();
	rv = kwd_p11_ecdsa_sign(wk->w, name, ver, d->p, sig);
	hsm_observe(k, t0, rv);
	if (rv == KW_OK)
		rv = signer_public(wk->w, name, ver, NULL, kid, NULL);
	if (rv == KW_OK)
		rv = kwd_token_b64url_encode(sig, sizeof sig, b64, sizeof b64);
	if (rv != KW_OK) {
		snprintf(reason, rlen, "signing: %s", kw_error_name(rv));
		return rv;
	}
	for (size_t i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d->p[i]);
	doc = json_pack("{s:s,s:I,s:s,s:s,s:s+,s:s}", "key", name, "version",
	    (json_int_t)ver, "kid", kid, "alg", "ES256", "digest",
	    "sha256:", hex, "signature", b64);
	text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	if (text == NULL)
		return KW_ERR_NOMEM;
	snprintf(reason, rlen, "signed sha256:%.16s... with version %u", hex,
	    ver);
	return reply_json(wk, KWD_MSG_R_SIGNATURE, rid, text);
}

/* ---- short-lived client certificates (docs/CERTS.md) ---- */

#define CERT_TTL_DEFAULT (24 * 3600)
#define CA_DAYS 3650

/*
 * ca_load: the active version of the CA signing key (made on first use),
 * its HSM-backed EVP_PKEY and its certificate (self-signed once per
 * version and kept in the store, so that it stays the same across
 * restarts). ca_lock held.
 */
static int
ca_load(struct worker *wk, char *reason, size_t rlen)
{
	struct keeper *k = wk->k;
	EVP_PKEY *pk = NULL;
	X509 *x = NULL;
	char *pem = NULL;
	BIO *bio = NULL;
	uint32_t ver = 0;
	int rv;

	rv = signer_active(k, CA_SIGNER, &ver);
	if (rv == KW_ERR_NOT_FOUND) {
		/* First certificate: make the CA key. (A KEK named "ca"
		 * makes this fail with KW_ERR_EXISTS.) */
		rv = new_version(wk, CA_SIGNER, KWD_KIND_SIGNER, true, 0,
		    reason, rlen);
		if (rv == KW_OK || rv == KW_ERR_EXISTS)
			rv = signer_active(k, CA_SIGNER, &ver);
	}
	if (rv != KW_OK)
		return rv == KW_ERR_NOT_FOUND ? KW_ERR_UNAVAILABLE : rv;
	if (k->ca_version == ver && k->ca_cert != NULL)
		return KW_OK;
	rv = kwd_p11_evp_private(k->p11, CA_SIGNER, ver, &pk);
	if (rv != KW_OK)
		goto out;
	pthread_mutex_lock(&k->store_lock);
	rv = kwd_store_ca_get(k->store, ver, &pem);
	pthread_mutex_unlock(&k->store_lock);
	if (rv == KW_ERR_NOT_FOUND) {
		rv = kwd_cert_ca_self_sign(pk, "keyward CA", CA_DAYS, &x);
		if (rv == KW_OK)
			rv = kwd_cert_pem(x, &pem);
		X509_free(x);
		x = NULL;
		if (rv == KW_OK) {
			pthread_mutex_lock(&k->store_lock);
			rv = kwd_store_ca_put(k->store, ver, pem);
			free(pem);
			pem = NULL;
			if (rv == KW_OK)
				rv = kwd_store_ca_get(k->store, ver, &pem);
			pthread_mutex_unlock(&k->store_lock);
		}
	}
	if (rv != KW_OK)
		goto out;
	bio = BIO_new_mem_buf(pem, -1);
	x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	if (x == NULL || kwd_cert_ca_check(x, pk) != KW_OK) {
		rv = KW_ERR_CONFIG;
		goto out;
	}
	X509_free(k->ca_cert);
	EVP_PKEY_free(k->ca_key);
	free(k->ca_pem);
	k->ca_cert = x;
	k->ca_key = pk;
	k->ca_pem = pem;
	k->ca_version = ver;
	x = NULL;
	pk = NULL;
	pem = NULL;
out:
	BIO_free(bio);
	X509_free(x);
	EVP_PKEY_free(pk);
	free(pem);
	if (rv != KW_OK)
		snprintf(reason, rlen, "certificate authority: %s",
		    kw_error_name(rv));
	return rv;
}

/*
 * do_cert_issue: POST /v1/certs. The certificate names the caller's own
 * identity (from its certificate or token), from the template only; its
 * lifetime is capped by the grant's max_ttl (default one day) and 7 days.
 */
static int
do_cert_issue(struct worker *wk, const struct kwd_msg *m, const char *identity,
    char *cmsg, size_t cmlen, char *reason, size_t rlen)
{
	struct keeper *k = wk->k;
	const struct kwd_field *f = kwd_msg_get(m, KWD_TAG_CSR, 0);
	X509_REQ *csr = NULL;
	X509 *cert = NULL;
	char *pem = NULL, *text = NULL;
	json_t *doc = NULL;
	uint32_t ttl = 0, max;
	time_t t = time(NULL);
	int rv;

	kwd_msg_u32(m, KWD_TAG_TTL, &ttl);
	pthread_rwlock_rdlock(&k->policy_lock);
	max = kwd_policy_max_ttl(k->policy, identity, KWD_OP_CERT, CA_SIGNER);
	pthread_rwlock_unlock(&k->policy_lock);
	if (max == 0)
		max = CERT_TTL_DEFAULT;
	if (max > KWD_CERT_TTL_CEILING)
		max = KWD_CERT_TTL_CEILING;
	if (ttl > max) {
		snprintf(reason, rlen, "ttl %u over the grant's maximum %u",
		    ttl, max);
		snprintf(cmsg, cmlen, "ttl: at most %u seconds for this caller",
		    max);
		return KW_ERR_DENIED;
	}
	if (ttl == 0)
		ttl = max;
	rv = kwd_cert_csr_parse((const char *)f->p, f->len, &csr, cmsg, cmlen);
	if (rv != KW_OK) {
		snprintf(reason, rlen, "csr: %s", cmsg);
		return rv;
	}
	pthread_mutex_lock(&k->ca_lock);
	rv = ca_load(wk, reason, rlen);
	if (rv == KW_OK) {
		struct kwd_cert_template tp = {
		    .organization = "keyward",
		    .identity = identity,
		    .ttl = ttl,
		    .max_ttl = max,
		    .backdate = KWD_CERT_BACKDATE_MAX,
		    .now = t,
		};

		rv = kwd_cert_issue(csr, &tp, k->ca_cert, k->ca_key, &cert);
		if (rv == KW_ERR_INVALID)
			snprintf(cmsg, cmlen,
			    "this identity cannot be put in a certificate "
			    "(a SPIFFE ID or a DNS name is needed)");
		if (rv == KW_OK)
			rv = kwd_cert_pem(cert, &pem);
		if (rv == KW_OK)
			doc =
			    json_pack("{s:s,s:s,s:I}", "certificate", pem, "ca",
			        k->ca_pem, "expires_at", (json_int_t)(t + ttl));
	}
	pthread_mutex_unlock(&k->ca_lock);
	if (rv == KW_OK) {
		text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
		rv = text != NULL ? KW_OK : KW_ERR_NOMEM;
	}
	if (rv == KW_OK) {
		ASN1_INTEGER *sn = X509_get_serialNumber(cert);
		BIGNUM *bn = ASN1_INTEGER_to_BN(sn, NULL);
		char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;

		snprintf(reason, rlen, "issued serial=%s ttl=%u",
		    hex != NULL ? hex : "?", ttl);
		OPENSSL_free(hex);
		BN_free(bn);
		reply_json(wk, KWD_MSG_R_CERT, m->rid, text);
		text = NULL;
	} else if (reason[0] == '\0') {
		snprintf(reason, rlen, "certificate not issued: %s",
		    kw_error_name(rv));
	}
	free(text);
	json_decref(doc);
	free(pem);
	X509_free(cert);
	X509_REQ_free(csr);
	return rv;
}

/* ---- requests authenticated by a token ---- */

/* bearer_auth: the BEARER token of m, verified for this broker's own
 * audience (its issuer name), bound to the certificate presented beside
 * it when it says so, not revoked. */
static int
bearer_auth(struct worker *wk, const struct kwd_msg *m,
    struct kwd_token_claims *cl, char *reason, size_t rlen)
{
	const struct kwd_field *f = kwd_msg_get(m, KWD_TAG_BEARER, 0);
	const char *self = wk->k->cfg->token_issuer != NULL
	    ? wk->k->cfg->token_issuer
	    : "keyward";
	char cnf[KWD_TOKEN_THUMB_LEN + 1], *jws;
	bool has_cnf = kwd_msg_str(m, KWD_TAG_CNF, 0, cnf, sizeof cnf);
	int rv;

	if (f == NULL || (jws = malloc(f->len + 1)) == NULL)
		return KW_ERR_NOMEM;
	memcpy(jws, f->p, f->len);
	jws[f->len] = '\0';
	rv = token_check(wk, jws, self, has_cnf ? cnf : NULL, cl, reason, rlen);
	sodium_memzero(jws, f->len);
	free(jws);
	if (rv == KW_OK)
		return KW_OK;
	if (rv == KW_ERR_UNAUTHENTICATED) {
		char tmp[300];

		/* The reason goes to the audit record only. */
		snprintf(tmp, sizeof tmp, "token: %s", reason);
		snprintf(reason, rlen, "%s", tmp);
	}
	return rv;
}

/* scope_allows: "kw:OP:KEY" (or "kw:OP" without a key) among scopes. */
static bool
scope_allows(const char *scopes, enum kwd_policy_op op, const char *key)
{
	char want[KWD_TOKEN_SCOPE_MAX + 1];
	size_t wl;
	int n;

	n = snprintf(want, sizeof want, "kw:%s%s%s", kwd_policy_op_name(op),
	    key[0] ? ":" : "", key);
	if (n < 0 || (size_t)n >= sizeof want)
		return false;
	wl = (size_t)n;
	for (const char *p = scopes; *p != '\0';) {
		const char *e = strchr(p, ' ');
		size_t len = e != NULL ? (size_t)(e - p) : strlen(p);

		if (len == wl && memcmp(p, want, wl) == 0)
			return true;
		p += len;
		while (*p == ' ')
			p++;
	}
	return false;
}

/* ---- dispatch ---- */

static const char *
op_name(uint16_t type)
{
	return kwd_policy_op_name(policy_op(type));
}

/*
 * One request: authorize, execute, audit, build the answer in wk->out.
 * Returns false only when the answer could not be built (a bug).
 */
static void
handle(struct worker *wk)
{
	struct keeper *k = wk->k;
	const struct kwd_msg *m = &wk->msg;
	struct ctx *c = NULL, cbuf;
	char identity[256], name[64] = "", remote[65], reason[512] = "";
	char aud[256] = "", cmsg[256] = "";
	struct kwd_token_claims *via = NULL;
	struct kwd_audit_rec rec;
	enum kwd_policy_op op;
	uint64_t t0 = now_ns(), rot = 0;
	uint8_t plain = 1;
	int rv;

	switch (m->type) {
	case KWD_MSG_HEALTH:
		do_health(wk, m->rid);
		return;
	case KWD_MSG_STATS:
		do_stats(wk, m->rid);
		return;
	case KWD_MSG_AUDIT_EVENT:
		audit_event(wk, m);
		return;
	case KWD_MSG_JWKS:
		do_jwks(wk, m->rid);
		return;
	default:
		break;
	}
	if (kwd_msg_count(m, KWD_TAG_BEARER) == 1 &&
	    kwd_msg_count(m, KWD_TAG_IDENTITY) == 0) {
		/* A token instead of a certificate: verified here, the
		 * identity is its subject, its scopes narrow the policy. */
		via = calloc(1, sizeof *via);
		if (via == NULL) {
			reply_error(wk, m->rid, KW_ERR_NOMEM,
			    error_message(KW_ERR_NOMEM));
			return;
		}
		identity[0] = '\0';
	} else if (kwd_msg_count(m, KWD_TAG_BEARER) != 0 ||
	    !kwd_msg_str(m, KWD_TAG_IDENTITY, 0, identity, sizeof identity)) {
		reply_error(wk, m->rid, KW_ERR_INVALID,
		    error_message(KW_ERR_INVALID));
		return;
	}
	if (!kwd_msg_str(m, KWD_TAG_REMOTE, 0, remote, sizeof remote))
		remote[0] = '\0';
	if (via != NULL) {
		rv = bearer_auth(wk, m, via, reason, sizeof reason);
		if (rv != KW_OK)
			goto done;
		snprintf(identity, sizeof identity, "%s", via->sub);
	}
	kwd_msg_str(m, KWD_TAG_KEY, 0, name, sizeof name);
	if (kwd_msg_count(m, KWD_TAG_CTX_KEY) > 0 ||
	    m->type == KWD_MSG_DATAKEY || m->type == KWD_MSG_DECRYPT ||
	    m->type == KWD_MSG_REWRAP) {
		if (!read_ctx(m, &cbuf)) {
			rv = KW_ERR_INVALID;
			snprintf(reason, sizeof reason, "malformed context");
			goto done;
		}
		c = &cbuf;
	}
	op = policy_op(m->type);
	/* Authorization first: a caller without a grant learns nothing,
	 * not even whether the key exists. A listing is filtered key by
	 * key instead (do_key_list). */
	/* Public keys (SIGNER_SHOW) are for any authenticated caller. */
	if (m->type != KWD_MSG_KEY_LIST && m->type != KWD_MSG_TOKEN_ISSUE &&
	    m->type != KWD_MSG_TOKEN_INTROSPECT &&
	    m->type != KWD_MSG_SIGNER_SHOW &&
	    !allowed(k, identity, op,
	        m->type == KWD_MSG_TOKEN_REVOKE     ? "token"
	            : m->type == KWD_MSG_CERT_ISSUE ? CA_SIGNER
	                                            : name,
	        c, reason, sizeof reason)) {
		rv = KW_ERR_DENIED;
		goto done;
	}
	/* A token narrows: its scopes must name this operation on this
	 * key, "kw:OP:KEY" ("kw:OP" for operations without a key). */
	if (via != NULL && !scope_allows(via->scope, op, name)) {
		snprintf(reason, sizeof reason,
		    "token jti=%s lacks scope kw:%s%s%s", via->jti,
		    kwd_policy_op_name(op), name[0] ? ":" : "", name);
		rv = KW_ERR_DENIED;
		goto done;
	}
	/* Fail closed: no key operation without a working audit log. */
	if (!audit_ok(k)) {
		rv = KW_ERR_UNAVAILABLE;
		snprintf(reason, sizeof reason, "audit log unavailable");
		goto done;
	}
	if (m->type != KWD_MSG_KEY_LIST && m->type != KWD_MSG_KEY_SHOW &&
	    m->type != KWD_MSG_KEY_PATCH) {
		rv = worker_p11(wk);
		if (rv != KW_OK) {
			snprintf(reason, sizeof reason, "HSM unavailable: %s",
			    kw_error_name(rv));
			goto done;
		}
	}
	switch (m->type) {
	case KWD_MSG_KEY_CREATE:
		kwd_msg_u64(m, KWD_TAG_ROTATION, &rot);
		rv = new_version(wk, name, KWD_KIND_KEK, true, rot, reason,
		    sizeof reason);
		if (rv == KW_OK)
			rv = key_reply(wk, m->rid, name);
		break;
	case KWD_MSG_KEY_ROTATE:
		rv = new_version(wk, name, KWD_KIND_KEK, false, 0, reason,
		    sizeof reason);
		if (rv == KW_OK)
			rv = key_reply(wk, m->rid, name);
		break;
	case KWD_MSG_KEY_SHOW:
		rv = key_reply(wk, m->rid, name);
		break;
	case KWD_MSG_KEY_LIST:
		rv = do_key_list(wk, m->rid, identity);
		break;
	case KWD_MSG_KEY_PATCH: {
		uint32_t mdv = 0, ver = 0;
		uint8_t st = 0;
		uint64_t rp = UINT64_MAX;

		kwd_msg_u32(m, KWD_TAG_MIN_DECRYPT, &mdv);
		kwd_msg_u32(m, KWD_TAG_VERSION, &ver);
		kwd_msg_u8(m, KWD_TAG_STATE, &st);
		kwd_msg_u64(m, KWD_TAG_ROTATION, &rp);
		if ((st != 0) != (ver != 0)) {
			rv = KW_ERR_INVALID;
			break;
		}
		pthread_mutex_lock(&k->store_lock);
		rv = kwd_store_key_patch(k->store, name, mdv, rp, ver,
		    (enum kwd_key_state)st);
		meta_forget(k, name);
		pthread_mutex_unlock(&k->store_lock);
		if (rv == KW_OK)
			rv = key_reply(wk, m->rid, name);
		break;
	}
	case KWD_MSG_DATAKEY:
		kwd_msg_u8(m, KWD_TAG_PLAINTEXT, &plain);
		rv = do_datakey(wk, m->rid, name, c, plain != 0, reason,
		    sizeof reason);
		break;
	case KWD_MSG_DECRYPT:
	case KWD_MSG_REWRAP:
		rv = do_unwrap(wk, m->rid, m->type, name, c,
		    kwd_msg_get(m, KWD_TAG_BLOB, 0), reason, sizeof reason);
		break;
	case KWD_MSG_TOKEN_ISSUE:
		/* Authorized inside (scopes and lifetime); the audience is
		 * the audited resource. */
		rv = do_token_issue(wk, m, identity, aud, sizeof aud, reason,
		    sizeof reason);
		break;
	case KWD_MSG_TOKEN_INTROSPECT:
		rv = do_introspect(wk, m, identity, aud, sizeof aud, reason,
		    sizeof reason);
		break;
	case KWD_MSG_TOKEN_REVOKE:
		rv = do_revoke(wk, m, reason, sizeof reason);
		break;
	case KWD_MSG_SIGNER_ROTATE:
		rv = do_signer_rotate(wk, name, reason, sizeof reason);
		if (rv != KW_OK)
			break;
		/* Answered with the key set, as SIGNER_SHOW. */
		__attribute__((fallthrough));
	case KWD_MSG_SIGNER_SHOW: {
		char *text = NULL;
		char keep[sizeof reason];

		snprintf(keep, sizeof keep, "%s", reason);
		rv = signer_doc(wk, name, &text);
		if (rv == KW_OK)
			rv = reply_json(wk, KWD_MSG_R_SIGNER, m->rid, text);
		snprintf(reason, sizeof reason, "%s", keep);
		break;
	}
	case KWD_MSG_ARTIFACT_SIGN:
		rv = do_artifact_sign(wk, m->rid, m, name, reason,
		    sizeof reason);
		break;
	case KWD_MSG_CERT_ISSUE:
		rv = do_cert_issue(wk, m, identity, cmsg, sizeof cmsg, reason,
		    sizeof reason);
		break;
	default:
		rv = KW_ERR_INVALID;
		break;
	}
done:
	if (reason[0] == '\0')
		snprintf(reason, sizeof reason, "%s", kw_error_name(rv));
	memset(&rec, 0, sizeof rec);
	rec.rid = m->rid;
	rec.identity = identity[0] ? identity : NULL;
	if (via != NULL && via->jti[0] != '\0' &&
	    rv != KW_ERR_UNAUTHENTICATED) {
		size_t rl = strlen(reason);

		snprintf(reason + rl, sizeof reason - rl, " (token jti=%s)",
		    via->jti);
	}
	rec.op = op_name(m->type);
	rec.resource = aud[0] ? aud : name[0] ? name : NULL;
	rec.ctx = c ? c->pairs : NULL;
	rec.nctx = c ? c->n : 0;
	rec.outcome = rv == KW_OK ? "allowed"
	    : rv == KW_ERR_DENIED ? "denied"
	                          : "failed";
	rec.reason = reason;
	rec.status = http_status(rv);
	rec.latency_us = (now_ns() - t0) / 1000;
	rec.remote = remote[0] ? remote : NULL;
	/* The record goes first: an answer whose record failed is an
	 * error, and a DEK built for it is wiped unsent. */
	if (k->audit == NULL || kwd_audit_write(k->audit, &rec) != KW_OK) {
		kwd_msg_wipe(&wk->out);
		rv = KW_ERR_UNAVAILABLE;
		kw_log(KW_LOG_ERR, "keeper.audit_failed",
		    "request refused: its audit record could not be written",
		    KW_F("op", rec.op));
	}
	if (rv == KW_OK)
		atomic_fetch_add(&k->requests_ok, 1);
	else if (rv == KW_ERR_DENIED)
		atomic_fetch_add(&k->requests_denied, 1);
	else
		atomic_fetch_add(&k->requests_failed, 1);
	if (rv != KW_OK) {
		kwd_msg_wipe(&wk->out);
		/* cmsg: a message about the caller's own input (its CSR). */
		reply_error(wk, m->rid, rv,
		    cmsg[0] != '\0' && rv != KW_ERR_UNAVAILABLE
		        ? cmsg
		        : error_message(rv));
	}
	if (via != NULL) {
		sodium_memzero(via, sizeof *via);
		free(via);
	}
}

/*
 * One request received on fd into wk->in: validate, handle, answer.
 * false: the channel must close (malformed frame, broken channel).
 */
static bool
serve(struct worker *wk, int fd, size_t len)
{
	int rv;

	rv = kwd_msg_decode(wk->in, len, KWD_FROM_FRONT, &wk->msg);
	if (rv != KW_OK) {
		/* The front is not trusted: a malformed message ends this
		 * channel (the master restarts the front). */
		kw_log(KW_LOG_ERR, "keeper.malformed",
		    "malformed message from the front; closing its channel",
		    KW_F("bytes", (unsigned long)len));
		sodium_memzero(wk->in, len);
		return false;
	}
	handle(wk);
	sodium_memzero(wk->in, len);
	rv = kwd_msg_end(&wk->out);
	if (rv != KW_OK) {
		kw_log(KW_LOG_ERR, "keeper.reply", "could not build an answer",
		    KW_F("type", kwd_msg_type_name(wk->msg.type)));
		reply_error(wk, wk->msg.rid, KW_ERR_INTERNAL,
		    error_message(KW_ERR_INTERNAL));
		if (kwd_msg_end(&wk->out) != KW_OK) {
			kwd_msg_wipe(&wk->out);
			return false;
		}
	}
	rv = kwd_ipc_send(fd, &wk->out);
	kwd_msg_wipe(&wk->out);
	return rv == KW_OK;
}

static void
close_chan(struct worker *wk)
{
	struct keeper *k = wk->k;

	close(wk->fd);
	wk->fd = -1;
	/* Once the front is gone, every channel ends and so does the
	 * keeper (the master then starts a new pair). */
	if (atomic_fetch_sub(&k->live_chans, 1) == 1)
		atomic_store(&k->stop, true);
}

/*
 * A worker's loop: one blocking receive per request. The front does not
 * wait for an answer before it sends its next request, so under load the
 * next one is queued when an answer has gone and the worker goes on
 * without sleeping; idle, it wakes every RECV_TICK_MS for the stop flag
 * (the main thread syncs the audit log).
 */
static void *
worker_main(void *arg)
{
	struct worker *wk = arg;
	struct keeper *k = wk->k;
	size_t len;
	int rv;

	while (!atomic_load(&k->stop) && wk->fd >= 0) {
		rv = kwd_ipc_chan_recv(wk->fd, wk->in, &len, RECV_TICK_MS);
		if (rv != KW_OK && rv != KW_ERR_TIMEOUT)
			close_chan(wk);
		else if (rv == KW_OK && !serve(wk, wk->fd, len))
			close_chan(wk);
	}
	if (wk->fd >= 0)
		close_chan(wk);
	return NULL;
}

static void
reload_policy(struct keeper *k)
{
	struct kwd_policy *np = NULL, *old;
	char err[256];
	int rv;

	rv = kwd_policy_load(k->cfg->policy, &np, err, sizeof err);
	if (rv != KW_OK) {
		kw_log(KW_LOG_ERR, "keeper.policy_reload",
		    "new policy refused; the previous one stays",
		    KW_F("path", k->cfg->policy), KW_F("error", err));
		return;
	}
	pthread_rwlock_wrlock(&k->policy_lock);
	old = k->policy;
	k->policy = np;
	pthread_rwlock_unlock(&k->policy_lock);
	kwd_policy_free(old);
	kw_log(KW_LOG_INFO, "keeper.policy_reload", "policy reloaded",
	    KW_F("path", k->cfg->policy));
}

static int
keeper_open(struct keeper *k, const struct kwd_config *cfg)
{
	char err[256];
	int rv;

	rv = kwd_policy_load(cfg->policy, &k->policy, err, sizeof err);
	if (rv != KW_OK) {
		kw_log(KW_LOG_ERR, "keeper.policy", "policy refused",
		    KW_F("path", cfg->policy), KW_F("error", err));
		return rv;
	}
	rv = kwd_store_open(cfg->database, &k->store);
	if (rv != KW_OK) {
		kw_log(KW_LOG_ERR, "keeper.store", "cannot open the store",
		    KW_F("path", cfg->database),
		    KW_F("error", kw_error_name(rv)));
		return rv;
	}
	rv = kwd_audit_open(cfg->audit_log, (unsigned)cfg->audit_sync_ms,
	    &k->audit);
	if (rv != KW_OK) {
		/* Serve health and refuse key operations (fail closed). */
		snprintf(k->audit_open_reason, sizeof k->audit_open_reason,
		    "cannot open %s: %s", cfg->audit_log, kw_strerror(rv));
		kw_log(KW_LOG_ERR, "keeper.audit",
		    "audit log unavailable; key operations are refused",
		    KW_F("path", cfg->audit_log),
		    KW_F("error", kw_error_name(rv)));
		k->audit = NULL;
	}
	rv = kwd_config_apply_env(cfg);
	if (rv != KW_OK)
		return rv;
	return KW_OK;
}

int
kwd_keeper_run(const struct kwd_keeper_args *a)
{
	struct keeper k;
	struct worker *wks = NULL;
	struct kwd_p11_worker *w0 = NULL;
	size_t napi = 0, nwk = 0, nstarted = 0;
	int tick;
	sigset_t set;
	int sfd = -1, status = 1, rv, err;

	memset(&k, 0, sizeof k);
	k.cfg = a->cfg;
	pthread_rwlock_init(&k.policy_lock, NULL);
	pthread_mutex_init(&k.store_lock, NULL);
	pthread_rwlock_init(&k.meta_lock, NULL);
	pthread_mutex_init(&k.p11_lock, NULL);
	pthread_mutex_init(&k.tok_lock, NULL);
	pthread_rwlock_init(&k.rev_lock, NULL);
	pthread_mutex_init(&k.ca_lock, NULL);

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0)
		goto out;

	if (kwd_sandbox_harden() != KW_OK)
		goto out;
	rv = kw_secure_init(0);
	if (rv != KW_OK) {
		kw_log(KW_LOG_ERR, "keeper.memlock", kw_strerror(rv), );
		goto out;
	}
	/* A PIN file is read before the drop: systemd credentials are
	 * readable by root only. The layer keeps it in locked memory for
	 * the logins a reconnect needs. */
	k.p11cfg = a->cfg->p11;
	if (k.p11cfg.pin_file != NULL) {
		rv = kw_secret_read_file(k.p11cfg.pin_file, KWD_P11_PIN_MAX,
		    &k.pin);
		if (rv != KW_OK) {
			kw_log(KW_LOG_ERR, "keeper.pin", kw_strerror(rv),
			    KW_F("path", k.p11cfg.pin_file));
			goto out;
		}
		k.p11cfg.pin_file = NULL;
		k.p11cfg.pin = k.pin;
	}
	if (kwd_sandbox_drop(a->cfg->keeper_user, NULL) != KW_OK)
		goto out;
	if (keeper_open(&k, a->cfg) != KW_OK)
		goto out;
	/* Revoked tokens stay revoked across restarts. */
	rv = kwd_store_revocations(k.store, (uint64_t)time(NULL), rev_load, &k);
	if (rv != KW_OK) {
		kw_log(KW_LOG_ERR, "keeper.revocations",
		    "cannot load token revocations",
		    KW_F("error", kw_error_name(rv)));
		goto out;
	}
	if (kwd_sandbox_seccomp_keeper() != KW_OK) {
		kw_log(KW_LOG_ERR, "keeper.seccomp",
		    "cannot install the filter", );
		goto out;
	}
	/* The HSM: open it now if it is there; if not, serve "unavailable"
	 * and keep trying. Interrupted rotations are settled first. */
	if (keeper_p11(&k, &err) != NULL &&
	    kwd_p11_worker_new(k.p11, &w0) == KW_OK) {
		rv = reconcile(&k, w0);
		if (rv != KW_OK)
			kw_log(KW_LOG_ERR, "keeper.reconcile",
			    "could not settle interrupted key versions",
			    KW_F("error", kw_error_name(rv)));
		kwd_p11_worker_free(w0);
	} else {
		kw_log(KW_LOG_ERR, "keeper.hsm",
		    "HSM not available at start; retrying",
		    KW_F("error", kw_error_name(err)));
	}

	/* API channel i goes to worker i (KWD_FRONT_PER_WORKER is one);
	 * the last channel, the metrics listener's, to a worker of its
	 * own. */
	napi = a->nchan > 0 ? a->nchan - 1 : 0;
	nwk = napi;
	if (nwk == 0 || nwk != KWD_API_CHANNELS(a->cfg)) {
		kw_log(KW_LOG_ERR, "keeper.channels",
		    "channels and workers do not match",
		    KW_F("channels", (unsigned long)a->nchan),
		    KW_F("workers", a->cfg->workers));
		goto out;
	}
	nwk++;
	wks = calloc(nwk, sizeof *wks);
	if (wks == NULL)
		goto out;
	/* Blocking receives that wake every RECV_TICK_MS to look at the
	 * stop flag and sync the audit log. */
	for (size_t i = 0; i < a->nchan; i++) {
		if (kwd_ipc_chan_init(a->chan[i], RECV_TICK_MS) != KW_OK) {
			kw_log(KW_LOG_ERR, "keeper.channels",
			    "cannot set up a channel", );
			goto out;
		}
	}
	atomic_store(&k.live_chans, a->nchan);
	for (size_t i = 0; i < a->nchan; i++) {
		wks[i].k = &k;
		wks[i].fd = a->chan[i];
	}
	for (size_t i = 0; i < nwk; i++) {
		if (pthread_create(&wks[i].thread, NULL, worker_main,
		        &wks[i]) != 0) {
			atomic_store(&k.stop, true);
			for (size_t j = 0; j < i; j++)
				pthread_join(wks[j].thread, NULL);
			nstarted = 0;
			goto out;
		}
		nstarted++;
	}
	if (a->ready_fd >= 0) {
		(void)!write(a->ready_fd, "R", 1);
		close(a->ready_fd);
	}
	kw_log(KW_LOG_INFO, "keeper.ready", "serving",
	    KW_F("workers", (unsigned long)nwk),
	    KW_F("channels", (unsigned long)a->nchan));
	/* The audit log's periodic sync runs here, off the request path
	 * (a write syncs itself only when this timer is late). */
	tick = a->cfg->audit_sync_ms > 0 && a->cfg->audit_sync_ms < 200
	    ? (int)a->cfg->audit_sync_ms
	    : 200;
	while (!atomic_load(&k.stop)) {
		struct pollfd pfd = {sfd, POLLIN, 0};
		struct signalfd_siginfo si;

		if (poll(&pfd, 1, tick) <= 0) {
			if (k.audit != NULL)
				(void)!kwd_audit_sync(k.audit);
			continue;
		}
		if (read(sfd, &si, sizeof si) != sizeof si)
			continue;
		if (si.ssi_signo == SIGHUP)
			reload_policy(&k);
		else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
			atomic_store(&k.stop, true);
	}
	for (size_t i = 0; i < nstarted; i++)
		pthread_join(wks[i].thread, NULL);
	status = 0;
out:
	if (wks != NULL) {
		for (size_t i = 0; i < nwk; i++)
			kwd_p11_worker_free(wks[i].w);
		free(wks);
	}
	if (k.audit != NULL) {
		(void)!kwd_audit_sync(k.audit);
		kwd_audit_free(k.audit);
	}
	kwd_p11_free(k.p11);
	kw_secret_free(k.pin);
	kwd_store_free(k.store);
	meta_clear(&k);
	kwd_policy_free(k.policy);
	if (sfd >= 0)
		close(sfd);
	kw_log(KW_LOG_INFO, "keeper.exit", "keeper stopped",
	    KW_F("status", status));
	return status;
}

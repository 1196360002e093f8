/*
 * p11.c: module, token, login, reconnect, handle cache, sessions and key
 * operations.
 *
 * Locking: p11->lock guards the connection state (slot, control session,
 * backoff, PIN source); p11->cache_lock (a rwlock) guards the handle cache;
 * p11->state and p11->generation are atomics read without a lock on the hot
 * path. A worker is used by one thread at a time and needs no lock.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "p11_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <p11-kit/uri.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "name.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000

enum p11_state { P11_UP, P11_DOWN, P11_PIN_FAILED };

struct cache_entry {
	char *label; /* NULL: empty slot */
	CK_OBJECT_HANDLE key; /* secret or private key */
	CK_OBJECT_HANDLE pub; /* public key of a signer */
};

struct cache {
	struct cache_entry *tab;
	size_t cap; /* power of two */
	size_t n;
};

struct kwd_p11 {
	void *dl;
	CK_FUNCTION_LIST_PTR f;
	char *module;
	P11KitUri *uri;
	char *pin_file;
	struct kw_secret *pin_kept; /* from pin_env: needed to log in again */

	pthread_mutex_t lock;
	_Atomic int state;
	int fatal_err;
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE ctl;
	bool have_ctl;
	struct kwd_p11_token_info token;
	_Atomic uint64_t generation;
	struct timespec next_try;
	unsigned backoff_ms;

	pthread_rwlock_t cache_lock;
	struct cache cache;

	pthread_mutex_t evp_lock;
	void *lp11; /* libp11 context, see p11_evp.c */
};

struct kwd_p11_worker {
	struct kwd_p11 *p11;
	CK_SESSION_HANDLE s;
	bool open;
	uint64_t gen;
};

static const char *const class_tag[] =
    {[KWD_P11_KEK] = "kek", [KWD_P11_SIGNER] = "sig"};

/* DER of OID 1.2.840.10045.3.1.7 (prime256v1), the CKA_EC_PARAMS value. */
static const unsigned char p256_oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07};

const char *
kwd_p11_ckr_name(unsigned long rv)
{
	return kwd_p11_rv_info(rv)->name;
}

int
kwd_p11_ckr_error(unsigned long rv)
{
	return kwd_p11_rv_info(rv)->err;
}

const char *
kwd_p11_module_path(const struct kwd_p11 *p11)
{
	return p11->module;
}

int
kwd_p11_label(enum kwd_p11_class cls, const char *name, uint32_t version,
    char *buf, size_t cap)
{
	int n;

	if ((unsigned)cls > KWD_P11_SIGNER || !kw_name_valid(name) ||
	    version == 0)
		return KW_ERR_INVALID;
	n = snprintf(buf, cap, "%s/%s/%u", class_tag[cls], name, version);
	if (n < 0 || (size_t)n >= cap)
		return KW_ERR_INVALID;
	return KW_OK;
}

/* Parse "<class>/<name>/<version>"; false for anything else. */
static bool
label_parse(const char *label, size_t len, enum kwd_p11_class *ret_cls,
    char *name, size_t namecap, uint32_t *ret_version)
{
	const char *s1, *s2, *end = label + len;
	unsigned long v = 0;
	int cls;

	s1 = memchr(label, '/', len);
	if (s1 == NULL)
		return false;
	for (cls = 0; cls <= KWD_P11_SIGNER; cls++)
		if ((size_t)(s1 - label) == strlen(class_tag[cls]) &&
		    memcmp(label, class_tag[cls], (size_t)(s1 - label)) == 0)
			break;
	if (cls > KWD_P11_SIGNER)
		return false;
	s2 = memchr(s1 + 1, '/', (size_t)(end - s1 - 1));
	if (s2 == NULL || !kw_name_valid_n(s1 + 1, (size_t)(s2 - s1 - 1)) ||
	    (size_t)(s2 - s1 - 1) >= namecap)
		return false;
	if (s2 + 1 == end || s2[1] == '0' || end - s2 - 1 > 10)
		return false;
	for (const char *c = s2 + 1; c < end; c++) {
		if (*c < '0' || *c > '9')
			return false;
		v = v * 10 + (unsigned long)(*c - '0');
	}
	if (v == 0 || v > UINT32_MAX)
		return false;
	memcpy(name, s1 + 1, (size_t)(s2 - s1 - 1));
	name[s2 - s1 - 1] = '\0';
	*ret_cls = (enum kwd_p11_class)cls;
	*ret_version = (uint32_t)v;
	return true;
}

/* ---- handle cache (open addressing, linear probing) ---- */

static uint64_t
hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

static struct cache_entry *
cache_slot(const struct cache *c, const char *label)
{
	size_t i;

	if (c->cap == 0)
		return NULL;
	i = (size_t)hash_str(label) & (c->cap - 1);
	while (c->tab[i].label != NULL && strcmp(c->tab[i].label, label) != 0)
		i = (i + 1) & (c->cap - 1);
	return &c->tab[i];
}

static void
cache_clear(struct cache *c)
{
	for (size_t i = 0; i < c->cap; i++)
		free(c->tab[i].label);
	free(c->tab);
	memset(c, 0, sizeof *c);
}

static int
cache_grow(struct cache *c)
{
	struct cache nc = {NULL, c->cap ? c->cap * 2 : 64, 0};

	nc.tab = calloc(nc.cap, sizeof *nc.tab);
	if (nc.tab == NULL)
		return KW_ERR_NOMEM;
	for (size_t i = 0; i < c->cap; i++) {
		if (c->tab[i].label == NULL)
			continue;
		*cache_slot(&nc, c->tab[i].label) = c->tab[i];
		nc.n++;
	}
	free(c->tab);
	*c = nc;
	return KW_OK;
}

/*
 * Insert or update. A second object with a label already seen (a leftover
 * of an interrupted write) keeps the first and is reported: reconciliation
 * by CKA_ID belongs to the key store, not to this cache.
 */
static int
cache_put(struct cache *c, const char *label, CK_OBJECT_HANDLE key,
    CK_OBJECT_HANDLE pub)
{
	struct cache_entry *e;

	if ((c->n + 1) * 2 > c->cap && cache_grow(c) != KW_OK)
		return KW_ERR_NOMEM;
	e = cache_slot(c, label);
	if (e->label == NULL) {
		e->label = strdup(label);
		if (e->label == NULL)
			return KW_ERR_NOMEM;
		e->key = CK_INVALID_HANDLE;
		e->pub = CK_INVALID_HANDLE;
		c->n++;
	}
	if (key != CK_INVALID_HANDLE) {
		if (e->key != CK_INVALID_HANDLE && e->key != key)
			kw_log(KW_LOG_WARN, "p11.duplicate_label",
			    "two key objects share a label; using the first",
			    KW_F("label", label));
		else
			e->key = key;
	}
	if (pub != CK_INVALID_HANDLE && e->pub == CK_INVALID_HANDLE)
		e->pub = pub;
	return KW_OK;
}

static void
cache_del(struct cache *c, const char *label)
{
	struct cache_entry *e = cache_slot(c, label);
	struct cache nc = {NULL, 0, 0};

	if (e == NULL || e->label == NULL)
		return;
	free(e->label);
	e->label = NULL;
	c->n--;
	/* Deletions are rare (key destruction): rebuild rather than keep
	 * tombstones in the probe sequences. */
	nc.cap = c->cap;
	nc.tab = calloc(nc.cap, sizeof *nc.tab);
	if (nc.tab == NULL) {
		/* Keep probing correct without the rebuild: re-insert the
		 * entries that followed the hole. */
		size_t i = (size_t)(e - c->tab);

		for (i = (i + 1) & (c->cap - 1); c->tab[i].label != NULL;
		     i = (i + 1) & (c->cap - 1)) {
			struct cache_entry tmp = c->tab[i];

			c->tab[i].label = NULL;
			*cache_slot(c, tmp.label) = tmp;
		}
		return;
	}
	for (size_t i = 0; i < c->cap; i++) {
		if (c->tab[i].label == NULL)
			continue;
		*cache_slot(&nc, c->tab[i].label) = c->tab[i];
		nc.n++;
	}
	free(c->tab);
	*c = nc;
}

static int
cache_get(struct kwd_p11 *p, enum kwd_p11_class cls, const char *name,
    uint32_t version, CK_OBJECT_HANDLE *ret_key, CK_OBJECT_HANDLE *ret_pub)
{
	char label[KWD_P11_LABEL_MAX];
	struct cache_entry *e;
	int rv;

	rv = kwd_p11_label(cls, name, version, label, sizeof label);
	if (rv != KW_OK)
		return rv;
	pthread_rwlock_rdlock(&p->cache_lock);
	e = cache_slot(&p->cache, label);
	if (e == NULL || e->label == NULL ||
	    (ret_key && e->key == CK_INVALID_HANDLE) ||
	    (ret_pub && e->pub == CK_INVALID_HANDLE)) {
		rv = KW_ERR_HSM_KEY;
	} else {
		if (ret_key)
			*ret_key = e->key;
		if (ret_pub)
			*ret_pub = e->pub;
	}
	pthread_rwlock_unlock(&p->cache_lock);
	return rv;
}

/* ---- connection state ---- */

static void
now_plus_ms(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static bool
time_reached(const struct timespec *ts)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > ts->tv_sec ||
	    (now.tv_sec == ts->tv_sec && now.tv_nsec >= ts->tv_nsec);
}

static void
log_ckr(enum kw_log_level lvl, const char *event, const char *fn, CK_RV rv)
{
	const struct kwd_p11_rv_info *ri = kwd_p11_rv_info(rv);

	kw_log(lvl, event, kw_strerror(ri->err), KW_F("call", fn),
	    KW_F("ckr", ri->name), KW_F("ckr_value", (unsigned long)rv),
	    KW_F("error", kw_error_name(ri->err)));
}

/* Called with p->lock held. */
static void
mark_down_locked(struct kwd_p11 *p)
{
	if (atomic_load(&p->state) != P11_UP)
		return;
	atomic_store(&p->state, P11_DOWN);
	/* The first reconnect attempt is immediate: the next operation. */
	clock_gettime(CLOCK_MONOTONIC, &p->next_try);
	p->backoff_ms = BACKOFF_MIN_MS;
	kw_log(KW_LOG_ERR, "p11.down",
	    "HSM unavailable; operations fail until it reconnects",
	    KW_F("token", p->token.label));
}

static void
mark_pin_failed_locked(struct kwd_p11 *p, int err)
{
	atomic_store(&p->state, P11_PIN_FAILED);
	p->fatal_err = err;
	kw_log(KW_LOG_ERR, "p11.pin_refused", kw_strerror(err),
	    KW_F("token", p->token.label));
}

static void
copy_padded(char *dst, size_t dstcap, const unsigned char *src, size_t len)
{
	while (len > 0 && (src[len - 1] == ' ' || src[len - 1] == '\0'))
		len--;
	if (len >= dstcap)
		len = dstcap - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

/*
 * Select the one initialized token that the URI matches. Called with
 * p->lock held (or before the object is shared).
 */
static int
select_token(struct kwd_p11 *p, CK_RV *ret_ckr)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG nslots = 0;
	CK_TOKEN_INFO ti, found_ti;
	CK_SLOT_INFO si;
	CK_SLOT_ID found = 0;
	int matches = 0, rv;
	CK_RV r;

	*ret_ckr = CKR_OK;
	r = p->f->C_GetSlotList(CK_TRUE, NULL, &nslots);
	if (r == CKR_OK && nslots > 0) {
		slots = calloc(nslots, sizeof *slots);
		if (slots == NULL)
			return KW_ERR_NOMEM;
		r = p->f->C_GetSlotList(CK_TRUE, slots, &nslots);
	}
	if (r != CKR_OK) {
		*ret_ckr = r;
		log_ckr(KW_LOG_ERR, "p11.call_failed", "C_GetSlotList", r);
		rv = kwd_p11_ckr_error(r);
		goto out;
	}
	for (CK_ULONG i = 0; i < nslots; i++) {
		if (p->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK ||
		    p->f->C_GetSlotInfo(slots[i], &si) != CKR_OK)
			continue;
		if (!(ti.flags & CKF_TOKEN_INITIALIZED))
			continue;
		if (!p11_kit_uri_match_token_info(p->uri, &ti) ||
		    !p11_kit_uri_match_slot_info(p->uri, &si))
			continue;
		if (p11_kit_uri_get_slot_id(p->uri) != (CK_SLOT_ID)-1 &&
		    p11_kit_uri_get_slot_id(p->uri) != slots[i])
			continue;
		if (matches++ == 0) {
			found = slots[i];
			found_ti = ti;
		}
	}
	if (matches == 0) {
		rv = KW_ERR_HSM_TOKEN;
		goto out;
	}
	if (matches > 1) {
		kw_log(KW_LOG_ERR, "p11.token_ambiguous",
		    "several tokens match the token selector; add serial= to "
		    "the PKCS#11 URI",
		    KW_F("matches", matches));
		rv = KW_ERR_CONFIG;
		goto out;
	}
	p->slot = found;
	memset(&p->token, 0, sizeof p->token);
	copy_padded(p->token.label, sizeof p->token.label, found_ti.label,
	    sizeof found_ti.label);
	copy_padded(p->token.manufacturer, sizeof p->token.manufacturer,
	    found_ti.manufacturerID, sizeof found_ti.manufacturerID);
	copy_padded(p->token.model, sizeof p->token.model, found_ti.model,
	    sizeof found_ti.model);
	copy_padded(p->token.serial, sizeof p->token.serial,
	    found_ti.serialNumber, sizeof found_ti.serialNumber);
	p->token.slot = found;
	if (found_ti.flags & CKF_USER_PIN_LOCKED) {
		rv = KW_ERR_HSM_PIN;
		goto out;
	}
	if (found_ti.flags & CKF_USER_PIN_FINAL_TRY)
		kw_log(KW_LOG_WARN, "p11.pin_final_try",
		    "the token will lock the user PIN after one more failure",
		    KW_F("token", p->token.label));
	rv = KW_OK;
out:
	free(slots);
	return rv;
}

static int
read_pin(struct kwd_p11 *p, struct kw_secret **ret_pin)
{
	int rv;

	if (p->pin_kept != NULL) {
		rv = kw_secret_new(kw_secret_len(p->pin_kept), ret_pin);
		if (rv == KW_OK)
			memcpy(kw_secret_data(*ret_pin),
			    kw_secret_data(p->pin_kept),
			    kw_secret_len(p->pin_kept));
		return rv;
	}
	rv = kw_secret_read_file(p->pin_file, KWD_P11_PIN_MAX, ret_pin);
	if (rv != KW_OK)
		kw_log(KW_LOG_ERR, "p11.pin_file", kw_strerror(rv),
		    KW_F("path", p->pin_file));
	return rv;
}

/* Exactly one C_Login per PIN read; a refused PIN is never retried. */
static int
login_locked(struct kwd_p11 *p)
{
	struct kw_secret *pin = NULL;
	const struct kwd_p11_rv_info *ri;
	CK_RV r;
	int rv;

	rv = read_pin(p, &pin);
	if (rv != KW_OK)
		return rv == KW_ERR_NOMEM ? rv : KW_ERR_HSM_PIN;
	r = p->f->C_Login(p->ctl, CKU_USER, kw_secret_data(pin),
	    kw_secret_len(pin));
	kw_secret_free(pin);
	if (r == CKR_OK || r == CKR_USER_ALREADY_LOGGED_IN)
		return KW_OK;
	ri = kwd_p11_rv_info(r);
	log_ckr(KW_LOG_ERR, "p11.call_failed", "C_Login", r);
	if (ri->action == P11_ACT_PIN)
		mark_pin_failed_locked(p, ri->err);
	return ri->err;
}

static int
read_attr_str(struct kwd_p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
    CK_ATTRIBUTE_TYPE type, char *buf, size_t cap, size_t *ret_len)
{
	CK_ATTRIBUTE a = {type, buf, cap - 1};
	CK_RV r = p->f->C_GetAttributeValue(s, o, &a, 1);

	if (r != CKR_OK || a.ulValueLen == CK_UNAVAILABLE_INFORMATION ||
	    a.ulValueLen >= cap)
		return KW_ERR_HSM;
	buf[a.ulValueLen] = '\0';
	*ret_len = a.ulValueLen;
	return KW_OK;
}

/*
 * Every keyward object on the token, through session s. Calls back for
 * each one whose label parses. Used by the cache rebuild and by list.
 */
typedef int (*object_cb)(void *arg, CK_OBJECT_HANDLE o, CK_OBJECT_CLASS oc,
    const char *label, enum kwd_p11_class cls, const char *name,
    uint32_t version);

static int
for_each_object(struct kwd_p11 *p, CK_SESSION_HANDLE s, CK_RV *ret_ckr,
    object_cb cb, void *arg)
{
	CK_BBOOL yes = CK_TRUE;
	CK_ATTRIBUTE tmpl[] = {{CKA_TOKEN, &yes, sizeof yes}};
	CK_OBJECT_HANDLE batch[64];
	CK_ULONG n;
	CK_RV r;
	int rv = KW_OK;

	*ret_ckr = CKR_OK;
	r = p->f->C_FindObjectsInit(s, tmpl, 1);
	if (r != CKR_OK) {
		*ret_ckr = r;
		return kwd_p11_ckr_error(r);
	}
	for (;;) {
		r = p->f->C_FindObjects(s, batch, 64, &n);
		if (r != CKR_OK) {
			*ret_ckr = r;
			rv = kwd_p11_ckr_error(r);
			break;
		}
		if (n == 0)
			break;
		for (CK_ULONG i = 0; i < n && rv == KW_OK; i++) {
			char label[KWD_P11_LABEL_MAX], name[KW_NAME_MAX + 1];
			CK_OBJECT_CLASS oc;
			CK_ATTRIBUTE ca = {CKA_CLASS, &oc, sizeof oc};
			enum kwd_p11_class cls;
			uint32_t ver;
			size_t len;

			if (read_attr_str(p, s, batch[i], CKA_LABEL, label,
			        sizeof label, &len) != KW_OK)
				continue;
			if (!label_parse(label, len, &cls, name, sizeof name,
			        &ver))
				continue;
			if (p->f->C_GetAttributeValue(s, batch[i], &ca, 1) !=
			    CKR_OK)
				continue;
			rv = cb(arg, batch[i], oc, label, cls, name, ver);
		}
		if (rv != KW_OK)
			break;
	}
	p->f->C_FindObjectsFinal(s);
	return rv;
}

static int
cache_object_cb(void *arg, CK_OBJECT_HANDLE o, CK_OBJECT_CLASS oc,
    const char *label, enum kwd_p11_class cls, const char *name,
    uint32_t version)
{
	struct cache *c = arg;

	(void)name;
	(void)version;
	if (cls == KWD_P11_KEK && oc == CKO_SECRET_KEY)
		return cache_put(c, label, o, CK_INVALID_HANDLE);
	if (cls == KWD_P11_SIGNER && oc == CKO_PRIVATE_KEY)
		return cache_put(c, label, o, CK_INVALID_HANDLE);
	if (cls == KWD_P11_SIGNER && oc == CKO_PUBLIC_KEY)
		return cache_put(c, label, CK_INVALID_HANDLE, o);
	return KW_OK;
}

static int
cache_rebuild_locked(struct kwd_p11 *p, CK_RV *ret_ckr)
{
	struct cache c = {NULL, 0, 0};
	int rv;

	rv = for_each_object(p, p->ctl, ret_ckr, cache_object_cb, &c);
	if (rv != KW_OK) {
		cache_clear(&c);
		return rv;
	}
	pthread_rwlock_wrlock(&p->cache_lock);
	cache_clear(&p->cache);
	p->cache = c;
	pthread_rwlock_unlock(&p->cache_lock);
	return KW_OK;
}

/*
 * (Re)connect: select the token, open the control session (it keeps the
 * login alive), log in, rebuild the handle cache. Called with p->lock held.
 */
static int
connect_locked(struct kwd_p11 *p)
{
	CK_RV r = CKR_OK;
	int rv;

	if (p->have_ctl) {
		p->f->C_CloseSession(p->ctl);
		p->have_ctl = false;
	}
	rv = select_token(p, &r);
	if (r == CKR_CRYPTOKI_NOT_INITIALIZED) {
		/* The module lost its state (a reset behind our back). */
		CK_C_INITIALIZE_ARGS ia = {.flags = CKF_OS_LOCKING_OK};

		r = p->f->C_Initialize(&ia);
		if (r == CKR_OK || r == CKR_CRYPTOKI_ALREADY_INITIALIZED)
			rv = select_token(p, &r);
	}
	if (rv != KW_OK)
		return rv;
	r = p->f->C_OpenSession(p->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
	    NULL, NULL, &p->ctl);
	if (r != CKR_OK) {
		log_ckr(KW_LOG_ERR, "p11.call_failed", "C_OpenSession", r);
		return kwd_p11_ckr_error(r);
	}
	p->have_ctl = true;
	rv = login_locked(p);
	if (rv != KW_OK)
		return rv;
	rv = cache_rebuild_locked(p, &r);
	if (rv != KW_OK) {
		if (r != CKR_OK)
			log_ckr(KW_LOG_ERR, "p11.call_failed", "C_FindObjects",
			    r);
		return rv;
	}
	atomic_fetch_add(&p->generation, 1);
	atomic_store(&p->state, P11_UP);
	p->backoff_ms = BACKOFF_MIN_MS;
	return KW_OK;
}

/* Fast path: one atomic load. Slow path: fail fast or reconnect. */
static int
ensure_up(struct kwd_p11 *p)
{
	int rv;

	if (atomic_load_explicit(&p->state, memory_order_acquire) == P11_UP)
		return KW_OK;
	/* Another thread reconnecting: fail fast rather than queue. */
	if (pthread_mutex_trylock(&p->lock) != 0)
		return KW_ERR_HSM_DOWN;
	switch (atomic_load(&p->state)) {
	case P11_UP:
		rv = KW_OK;
		break;
	case P11_PIN_FAILED:
		rv = p->fatal_err;
		break;
	default:
		if (!time_reached(&p->next_try)) {
			rv = KW_ERR_HSM_DOWN;
			break;
		}
		rv = connect_locked(p);
		if (rv == KW_OK) {
			kw_log(KW_LOG_INFO, "p11.up", "HSM reconnected",
			    KW_F("token", p->token.label),
			    KW_F("slot", p->token.slot));
			break;
		}
		if (atomic_load(&p->state) == P11_PIN_FAILED) {
			rv = p->fatal_err;
			break;
		}
		now_plus_ms(&p->next_try,
		    p->backoff_ms / 2 + randombytes_uniform(p->backoff_ms));
		p->backoff_ms = p->backoff_ms * 2 > BACKOFF_MAX_MS
		    ? BACKOFF_MAX_MS
		    : p->backoff_ms * 2;
		rv = KW_ERR_HSM_DOWN;
		break;
	}
	pthread_mutex_unlock(&p->lock);
	return rv;
}

static void
worker_close(struct kwd_p11_worker *w)
{
	if (w->open)
		w->p11->f->C_CloseSession(w->s);
	w->open = false;
}

/* Classify a failed call, repair what it calls for, return its KW_ERR. */
static int
op_fail(struct kwd_p11_worker *w, const char *fn, CK_RV r)
{
	const struct kwd_p11_rv_info *ri = kwd_p11_rv_info(r);
	struct kwd_p11 *p = w->p11;

	log_ckr(ri->action == P11_ACT_NONE ? KW_LOG_INFO : KW_LOG_WARN,
	    "p11.call_failed", fn, r);
	switch (ri->action) {
	case P11_ACT_NONE:
		break;
	case P11_ACT_SESSION:
		worker_close(w);
		break;
	case P11_ACT_RECONNECT:
		/* The session is abandoned, not closed: the token may be
		 * gone, and a close would only fail the same way. */
		w->open = false;
		pthread_mutex_lock(&p->lock);
		mark_down_locked(p);
		pthread_mutex_unlock(&p->lock);
		break;
	case P11_ACT_PIN:
		w->open = false;
		pthread_mutex_lock(&p->lock);
		mark_pin_failed_locked(p, ri->err);
		pthread_mutex_unlock(&p->lock);
		break;
	}
	return ri->err;
}

static int
worker_ready(struct kwd_p11_worker *w)
{
	struct kwd_p11 *p = w->p11;
	uint64_t gen;
	CK_SLOT_ID slot;
	CK_RV r;
	int rv;

	rv = ensure_up(p);
	if (rv != KW_OK)
		return rv;
	gen = atomic_load(&p->generation);
	if (w->open && w->gen == gen)
		return KW_OK;
	worker_close(w);
	pthread_mutex_lock(&p->lock);
	slot = p->slot;
	pthread_mutex_unlock(&p->lock);
	r = p->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
	    NULL, &w->s);
	if (r != CKR_OK)
		return op_fail(w, "C_OpenSession", r);
	w->open = true;
	w->gen = gen;
	return KW_OK;
}

/* ---- open / free ---- */

/*
 * RFC 7512: an attribute may appear only once. p11-kit keeps the last
 * one silently; refuse instead, so that what a reader of the config sees
 * first is not overridden further along the line.
 */
static bool
attributes_unique(const char *s)
{
	const char *end = strchr(s, '?');
	const char *names[32];
	size_t lens[32], n = 0;

	if (end == NULL)
		end = s + strlen(s);
	while (s < end) {
		const char *semi = memchr(s, ';', (size_t)(end - s));
		const char *stop = semi ? semi : end;
		const char *eq = memchr(s, '=', (size_t)(stop - s));
		size_t len = (size_t)((eq ? eq : stop) - s);

		for (size_t i = 0; i < n; i++)
			if (lens[i] == len && memcmp(names[i], s, len) == 0)
				return false;
		if (n == sizeof names / sizeof names[0])
			return false;
		names[n] = s;
		lens[n++] = len;
		s = semi ? semi + 1 : end;
	}
	return true;
}

static int
parse_token_selector(const char *sel, P11KitUri **ret_uri)
{
	P11KitUri *uri = p11_kit_uri_new();
	CK_ATTRIBUTE *attrs;
	CK_ULONG nattrs = 0;
	int rv = KW_ERR_CONFIG, ur;

	if (uri == NULL)
		return KW_ERR_NOMEM;
	if (sel == NULL || *sel == '\0') {
		kw_log(KW_LOG_ERR, "config.pkcs11_token",
		    "pkcs11.token is required (a label or pkcs11: URI)", );
		goto out;
	}
	if (strncmp(sel, "pkcs11:", 7) != 0) {
		/* A plain label: the same as pkcs11:token=<label>. */
		CK_TOKEN_INFO *ti = p11_kit_uri_get_token_info(uri);
		size_t len = strlen(sel);

		if (len > sizeof ti->label) {
			kw_log(KW_LOG_ERR, "config.pkcs11_token",
			    "token label longer than 32 bytes", );
			goto out;
		}
		memset(ti->label, ' ', sizeof ti->label);
		memcpy(ti->label, sel, len);
		*ret_uri = uri;
		uri = NULL;
		rv = KW_OK;
		goto out;
	}
	if (!attributes_unique(sel + 7)) {
		kw_log(KW_LOG_ERR, "config.pkcs11_token",
		    "an attribute appears twice in pkcs11.token (RFC 7512 "
		    "section 2.3 forbids it)", );
		goto out;
	}
	ur = p11_kit_uri_parse(sel, P11_KIT_URI_FOR_ANY, uri);
	if (ur != P11_KIT_URI_OK) {
		kw_log(KW_LOG_ERR, "config.pkcs11_token",
		    "pkcs11.token is not a valid PKCS#11 URI (RFC 7512)",
		    KW_F("detail", p11_kit_uri_message(ur)));
		goto out;
	}
	attrs = p11_kit_uri_get_attributes(uri, &nattrs);
	(void)attrs;
	if (p11_kit_uri_get_pin_value(uri) != NULL ||
	    p11_kit_uri_get_pin_source(uri) != NULL) {
		/* A PIN in the config file, or a second PIN source. */
		kw_log(KW_LOG_ERR, "config.pkcs11_token",
		    "pin-value and pin-source are refused in pkcs11.token; use "
		    "pkcs11.pin_file or pkcs11.pin_env", );
		goto out;
	}
	if (nattrs > 0 || p11_kit_uri_any_unrecognized(uri) ||
	    p11_kit_uri_get_module_name(uri) != NULL ||
	    p11_kit_uri_get_module_path(uri) != NULL) {
		kw_log(KW_LOG_ERR, "config.pkcs11_token",
		    "pkcs11.token may name only a token, slot or library "
		    "(object, id, type, module-* and unknown attributes are "
		    "refused)", );
		goto out;
	}
	*ret_uri = uri;
	uri = NULL;
	rv = KW_OK;
out:
	if (uri != NULL)
		p11_kit_uri_free(uri);
	return rv;
}

int
kwd_p11_parse_token(const char *sel)
{
	P11KitUri *uri = NULL;
	int rv = parse_token_selector(sel, &uri);

	if (uri != NULL)
		p11_kit_uri_free(uri);
	return rv;
}

static int
load_module(const char *path, void **ret_dl, CK_FUNCTION_LIST_PTR *ret_f)
{
	CK_C_GetFunctionList gfl;
	CK_FUNCTION_LIST_PTR f = NULL;
	void *dl;

	/* RTLD_LOCAL: the module's symbols must not satisfy anyone else's. */
	dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (dl == NULL) {
		kw_log(KW_LOG_ERR, "p11.module_load",
		    "cannot load the PKCS#11 module", KW_F("path", path),
		    KW_F("detail", dlerror()));
		return KW_ERR_HSM_MODULE;
	}
	*(void **)&gfl = dlsym(dl, "C_GetFunctionList");
	if (gfl == NULL || gfl(&f) != CKR_OK || f == NULL) {
		kw_log(KW_LOG_ERR, "p11.module_load",
		    "the file is not a PKCS#11 module (no usable "
		    "C_GetFunctionList)",
		    KW_F("path", path));
		dlclose(dl);
		return KW_ERR_HSM_MODULE;
	}
	*ret_dl = dl;
	*ret_f = f;
	return KW_OK;
}

static int
init_module(CK_FUNCTION_LIST_PTR f, const char *path)
{
	/* No mutex callbacks, OS locking allowed: the module uses its own
	 * native locks (PKCS#11 v2.40 section 5.4, C_Initialize). */
	CK_C_INITIALIZE_ARGS ia = {.flags = CKF_OS_LOCKING_OK};
	CK_RV r = f->C_Initialize(&ia);

	if (r != CKR_OK && r != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		log_ckr(KW_LOG_ERR, "p11.call_failed", "C_Initialize", r);
		kw_log(KW_LOG_ERR, "p11.module_init",
		    "the PKCS#11 module failed to initialize",
		    KW_F("path", path));
		return r == CKR_PIN_INCORRECT ? KW_ERR_HSM_PIN
		                              : KW_ERR_HSM_MODULE;
	}
	return KW_OK;
}

int
kwd_p11_open(const struct kwd_p11_config *cfg, struct kwd_p11 **ret_p11)
{
	struct kwd_p11 *p = NULL;
	int rv;

	if (cfg->module == NULL || *cfg->module == '\0') {
		kw_log(KW_LOG_ERR, "config.pkcs11_module",
		    "pkcs11.module is required", );
		return KW_ERR_CONFIG;
	}
	if ((cfg->pin_file != NULL) + (cfg->pin_env != NULL) +
	        (cfg->pin != NULL) !=
	    1) {
		kw_log(KW_LOG_ERR, "config.pkcs11_pin",
		    "exactly one of pkcs11.pin_file and pkcs11.pin_env is "
		    "required", );
		return KW_ERR_CONFIG;
	}
	p = calloc(1, sizeof *p);
	if (p == NULL)
		return KW_ERR_NOMEM;
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->evp_lock, NULL);
	pthread_rwlock_init(&p->cache_lock, NULL);
	atomic_init(&p->state, P11_DOWN);
	atomic_init(&p->generation, 0);
	p->backoff_ms = BACKOFF_MIN_MS;
	p->module = strdup(cfg->module);
	if (p->module == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	rv = parse_token_selector(cfg->token, &p->uri);
	if (rv != KW_OK)
		goto out;
	if (cfg->pin != NULL) {
		rv = kw_secret_new(kw_secret_len(cfg->pin), &p->pin_kept);
		if (rv != KW_OK)
			goto out;
		memcpy(kw_secret_data(p->pin_kept), kw_secret_data(cfg->pin),
		    kw_secret_len(cfg->pin));
	} else if (cfg->pin_file != NULL) {
		p->pin_file = strdup(cfg->pin_file);
		if (p->pin_file == NULL) {
			rv = KW_ERR_NOMEM;
			goto out;
		}
	} else {
		rv = kw_secret_take_env(cfg->pin_env, KWD_P11_PIN_MAX,
		    &p->pin_kept);
		if (rv != KW_OK) {
			kw_log(KW_LOG_ERR, "p11.pin_env",
			    "the PIN environment variable is unset, empty or "
			    "too long",
			    KW_F("variable", cfg->pin_env));
			rv = KW_ERR_HSM_PIN;
			goto out;
		}
	}
	rv = load_module(p->module, &p->dl, &p->f);
	if (rv != KW_OK)
		goto out;
	rv = init_module(p->f, p->module);
	if (rv != KW_OK) {
		dlclose(p->dl);
		p->dl = NULL;
		goto out;
	}
	pthread_mutex_lock(&p->lock);
	rv = connect_locked(p);
	pthread_mutex_unlock(&p->lock);
	if (rv == KW_ERR_HSM_TOKEN)
		kw_log(KW_LOG_ERR, "p11.token_not_found",
		    "no initialized token matches pkcs11.token",
		    KW_F("token", cfg->token));
	if (rv != KW_OK)
		goto out;
	kw_log(KW_LOG_INFO, "p11.open", "HSM token ready",
	    KW_F("token", p->token.label), KW_F("serial", p->token.serial),
	    KW_F("slot", p->token.slot), KW_F("keys", p->cache.n));
	*ret_p11 = p;
	p = NULL;
out:
	kwd_p11_free(p);
	return rv;
}

pthread_mutex_t *
kwd_p11_evp_lock(struct kwd_p11 *p)
{
	return &p->evp_lock;
}

void **
kwd_p11_evp_slot(struct kwd_p11 *p)
{
	return &p->lp11;
}

void
kwd_p11_free(struct kwd_p11 *p)
{
	if (p == NULL)
		return;
	/* libp11 finalizes the module when its context goes: first. */
	kwd_p11_evp_release(p, &p->lp11);
	if (p->f != NULL) {
		if (p->have_ctl)
			p->f->C_CloseSession(p->ctl);
		p->f->C_Finalize(NULL);
	}
	if (p->dl != NULL)
		dlclose(p->dl);
	cache_clear(&p->cache);
	if (p->uri != NULL)
		p11_kit_uri_free(p->uri);
	kw_secret_free(p->pin_kept);
	free(p->pin_file);
	free(p->module);
	pthread_rwlock_destroy(&p->cache_lock);
	pthread_mutex_destroy(&p->evp_lock);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void
kwd_p11_token(struct kwd_p11 *p, struct kwd_p11_token_info *ret_info)
{
	pthread_mutex_lock(&p->lock);
	*ret_info = p->token;
	pthread_mutex_unlock(&p->lock);
}

bool
kwd_p11_healthy(struct kwd_p11 *p)
{
	return atomic_load(&p->state) == P11_UP;
}

int
kwd_p11_worker_new(struct kwd_p11 *p, struct kwd_p11_worker **ret_worker)
{
	struct kwd_p11_worker *w = calloc(1, sizeof *w);

	if (w == NULL)
		return KW_ERR_NOMEM;
	w->p11 = p;
	/* The session opens on first use, so that a worker can be made
	 * while the HSM is down. */
	*ret_worker = w;
	return KW_OK;
}

void
kwd_p11_worker_free(struct kwd_p11_worker *w)
{
	if (w == NULL)
		return;
	worker_close(w);
	free(w);
}

/* ---- key generation ---- */

static int
check_absent(struct kwd_p11 *p, const char *label)
{
	struct cache_entry *e;
	int rv = KW_OK;

	pthread_rwlock_rdlock(&p->cache_lock);
	e = cache_slot(&p->cache, label);
	if (e != NULL && e->label != NULL)
		rv = KW_ERR_EXISTS;
	pthread_rwlock_unlock(&p->cache_lock);
	return rv;
}

static int
cache_insert(struct kwd_p11 *p, const char *label, CK_OBJECT_HANDLE key,
    CK_OBJECT_HANDLE pub)
{
	int rv;

	pthread_rwlock_wrlock(&p->cache_lock);
	rv = cache_put(&p->cache, label, key, pub);
	pthread_rwlock_unlock(&p->cache_lock);
	return rv;
}

/*
 * The common start of a key generation: the label, a live session, no
 * object with that label yet, and the CKA_ID to use.
 */
static int
gen_begin(struct kwd_p11_worker *w, enum kwd_p11_class cls, const char *name,
    uint32_t version, const unsigned char *id, char label[KWD_P11_LABEL_MAX],
    unsigned char ckid[KWD_P11_ID_LEN])
{
	int rv;

	rv = kwd_p11_label(cls, name, version, label, KWD_P11_LABEL_MAX);
	if (rv != KW_OK)
		return rv;
	rv = worker_ready(w);
	if (rv != KW_OK)
		return rv;
	rv = check_absent(w->p11, label);
	if (rv != KW_OK)
		return rv;
	if (id != NULL)
		memcpy(ckid, id, KWD_P11_ID_LEN);
	else
		randombytes_buf(ckid, KWD_P11_ID_LEN);
	return KW_OK;
}

/* The common end: cache the new handles, report the CKA_ID used. */
static int
gen_end(struct kwd_p11 *p, const char *label, CK_OBJECT_HANDLE key,
    CK_OBJECT_HANDLE pub, const unsigned char ckid[KWD_P11_ID_LEN],
    unsigned char *ret_id)
{
	int rv = cache_insert(p, label, key, pub);

	if (rv == KW_OK && ret_id != NULL)
		memcpy(ret_id, ckid, KWD_P11_ID_LEN);
	return rv;
}

int
kwd_p11_kek_generate(struct kwd_p11_worker *w, const char *name,
    uint32_t version, const unsigned char *id, unsigned char *ret_id)
{
	struct kwd_p11 *p = w->p11;
	char label[KWD_P11_LABEL_MAX];
	unsigned char ckid[KWD_P11_ID_LEN];
	CK_OBJECT_CLASS oc = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_ULONG len = 32;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
	CK_OBJECT_HANDLE h;
	CK_RV r;
	int rv;

	rv = gen_begin(w, KWD_P11_KEK, name, version, id, label, ckid);
	if (rv != KW_OK)
		return rv;
	{
		/* Only what a KEK needs: encrypt and decrypt inside the HSM.
		 * Never readable (sensitive), never exportable, not even
		 * wrapped (extractable false), attributes frozen. */
		CK_ATTRIBUTE t[] = {
		    {CKA_CLASS, &oc, sizeof oc},
		    {CKA_KEY_TYPE, &kt, sizeof kt},
		    {CKA_VALUE_LEN, &len, sizeof len},
		    {CKA_TOKEN, &yes, sizeof yes},
		    {CKA_PRIVATE, &yes, sizeof yes},
		    {CKA_SENSITIVE, &yes, sizeof yes},
		    {CKA_EXTRACTABLE, &no, sizeof no},
		    {CKA_ENCRYPT, &yes, sizeof yes},
		    {CKA_DECRYPT, &yes, sizeof yes},
		    {CKA_WRAP, &no, sizeof no},
		    {CKA_UNWRAP, &no, sizeof no},
		    {CKA_SIGN, &no, sizeof no},
		    {CKA_VERIFY, &no, sizeof no},
		    {CKA_DERIVE, &no, sizeof no},
		    {CKA_MODIFIABLE, &no, sizeof no},
		    {CKA_COPYABLE, &no, sizeof no},
		    {CKA_LABEL, label, strlen(label)},
		    {CKA_ID, ckid, sizeof ckid},
		};

		r = p->f->C_GenerateKey(w->s, &m, t, sizeof t / sizeof t[0],
		    &h);
	}
	if (r != CKR_OK)
		return op_fail(w, "C_GenerateKey", r);
	return gen_end(p, label, h, CK_INVALID_HANDLE, ckid, ret_id);
}

int
kwd_p11_ec_generate(struct kwd_p11_worker *w, const char *name,
    uint32_t version, const unsigned char *id, unsigned char *ret_id)
{
	struct kwd_p11 *p = w->p11;
	char label[KWD_P11_LABEL_MAX];
	unsigned char ckid[KWD_P11_ID_LEN];
	CK_KEY_TYPE kt = CKK_EC;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_MECHANISM m = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
	CK_OBJECT_HANDLE pub, priv;
	CK_RV r;
	int rv;

	rv = gen_begin(w, KWD_P11_SIGNER, name, version, id, label, ckid);
	if (rv != KW_OK)
		return rv;
	{
		CK_ATTRIBUTE pt[] = {
		    {CKA_KEY_TYPE, &kt, sizeof kt},
		    {CKA_EC_PARAMS, (void *)p256_oid, sizeof p256_oid},
		    {CKA_TOKEN, &yes, sizeof yes},
		    {CKA_PRIVATE, &no, sizeof no},
		    {CKA_VERIFY, &yes, sizeof yes},
		    {CKA_ENCRYPT, &no, sizeof no},
		    {CKA_WRAP, &no, sizeof no},
		    {CKA_DERIVE, &no, sizeof no},
		    {CKA_MODIFIABLE, &no, sizeof no},
		    {CKA_LABEL, label, strlen(label)},
		    {CKA_ID, ckid, sizeof ckid},
		};
		CK_ATTRIBUTE st[] = {
		    {CKA_KEY_TYPE, &kt, sizeof kt},
		    {CKA_TOKEN, &yes, sizeof yes},
		    {CKA_PRIVATE, &yes, sizeof yes},
		    {CKA_SENSITIVE, &yes, sizeof yes},
		    {CKA_EXTRACTABLE, &no, sizeof no},
		    {CKA_SIGN, &yes, sizeof yes},
		    {CKA_DECRYPT, &no, sizeof no},
		    {CKA_UNWRAP, &no, sizeof no},
		    {CKA_DERIVE, &no, sizeof no},
		    {CKA_MODIFIABLE, &no, sizeof no},
		    {CKA_COPYABLE, &no, sizeof no},
		    {CKA_LABEL, label, strlen(label)},
		    {CKA_ID, ckid, sizeof ckid},
		};

		r = p->f->C_GenerateKeyPair(w->s, &m, pt,
		    sizeof pt / sizeof pt[0], st, sizeof st / sizeof st[0],
		    &pub, &priv);
	}
	if (r != CKR_OK)
		return op_fail(w, "C_GenerateKeyPair", r);
	return gen_end(p, label, priv, pub, ckid, ret_id);
}

/* ---- operations ---- */

int
kwd_p11_gcm_seal(struct kwd_p11_worker *w, const char *name, uint32_t version,
    const unsigned char *aad, size_t aadlen, const unsigned char *pt,
    size_t ptlen, unsigned char ret_nonce[KWD_P11_NONCE_LEN],
    unsigned char *out, size_t outcap, size_t *ret_len)
{
	struct kwd_p11 *p = w->p11;
	unsigned char nonce[KWD_P11_NONCE_LEN];
	CK_GCM_PARAMS gp;
	CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof gp};
	CK_OBJECT_HANDLE h;
	CK_ULONG olen = outcap;
	CK_RV r;
	int rv;

	if (ptlen == 0 || outcap < ptlen + KWD_P11_TAG_LEN ||
	    (aad == NULL && aadlen > 0))
		return KW_ERR_INVALID;
	rv = cache_get(p, KWD_P11_KEK, name, version, &h, NULL);
	if (rv != KW_OK)
		return rv;
	rv = worker_ready(w);
	if (rv != KW_OK)
		return rv;
	/* A random 96-bit nonce per call (NIST SP 800-38D 8.2.2); callers
	 * bound the number of calls per key version. kw_random_buf: a
	 * ChaCha20 stream keyed from the kernel per thread and again after
	 * fork (secret.h), as unpredictable and as unlikely to repeat as the
	 * kernel's own bytes, without a getrandom(2) per seal. */
	kw_random_buf(nonce, sizeof nonce);
	gp.pIv = nonce;
	gp.ulIvLen = sizeof nonce;
	gp.ulIvBits = sizeof nonce * 8;
	gp.pAAD = (unsigned char *)aad;
	gp.ulAADLen = aadlen;
	gp.ulTagBits = KWD_P11_TAG_LEN * 8;
	r = p->f->C_EncryptInit(w->s, &m, h);
	if (r != CKR_OK)
		return op_fail(w, "C_EncryptInit", r);
	r = p->f->C_Encrypt(w->s, (unsigned char *)pt, ptlen, out, &olen);
	if (r != CKR_OK)
		return op_fail(w, "C_Encrypt", r);
	if (olen != ptlen + KWD_P11_TAG_LEN) {
		sodium_memzero(out, outcap);
		return KW_ERR_HSM;
	}
	memcpy(ret_nonce, nonce, sizeof nonce);
	*ret_len = olen;
	return KW_OK;
}

/*
 * A wrong tag is not reported the same way by every module: SoftHSM 2.6
 * answers CKR_GENERAL_ERROR, which PKCS#11 reserves for unrecoverable
 * errors. Taking it at its word would let anyone holding a corrupted blob
 * mark the HSM down. So for the values a module may use for a bad tag,
 * ask the session whether it is still alive (one cheap call, on the
 * failure path only): if it is, the data was at fault and the caller sees
 * one generic KW_ERR_AUTH; if not, the probe's own answer is handled.
 */
static int
decrypt_failed(struct kwd_p11_worker *w, CK_RV r)
{
	CK_SESSION_INFO si;
	CK_RV pr;

	switch (r) {
	case CKR_ENCRYPTED_DATA_INVALID:
	case CKR_ENCRYPTED_DATA_LEN_RANGE:
	case CKR_DATA_INVALID:
	case CKR_DATA_LEN_RANGE:
	case CKR_GENERAL_ERROR:
	case CKR_FUNCTION_FAILED:
		pr = w->p11->f->C_GetSessionInfo(w->s, &si);
		if (pr == CKR_OK) {
			kw_log(KW_LOG_DEBUG, "p11.decrypt_refused",
			    "authentication tag did not verify",
			    KW_F("ckr", kwd_p11_ckr_name(r)));
			return KW_ERR_AUTH;
		}
		return op_fail(w, "C_GetSessionInfo", pr);
	default:
		return op_fail(w, "C_Decrypt", r);
	}
}

int
kwd_p11_gcm_open(struct kwd_p11_worker *w, const char *name, uint32_t version,
    const unsigned char *aad, size_t aadlen,
    const unsigned char nonce[KWD_P11_NONCE_LEN], const unsigned char *ct,
    size_t ctlen, struct kw_secret **ret_pt)
{
	struct kwd_p11 *p = w->p11;
	struct kw_secret *pt = NULL;
	unsigned char iv[KWD_P11_NONCE_LEN];
	CK_GCM_PARAMS gp;
	CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof gp};
	CK_OBJECT_HANDLE h;
	CK_ULONG olen;
	CK_RV r;
	int rv;

	if (ctlen <= KWD_P11_TAG_LEN || ctlen > KW_SECRET_MAX ||
	    (aad == NULL && aadlen > 0))
		return KW_ERR_INVALID;
	rv = cache_get(p, KWD_P11_KEK, name, version, &h, NULL);
	if (rv != KW_OK)
		return rv;
	rv = worker_ready(w);
	if (rv != KW_OK)
		return rv;
	/* Some modules buffer the whole ciphertext and want room for it. */
	rv = kw_secret_new(ctlen, &pt);
	if (rv != KW_OK)
		return rv;
	memcpy(iv, nonce, sizeof iv);
	gp.pIv = iv;
	gp.ulIvLen = sizeof iv;
	gp.ulIvBits = sizeof iv * 8;
	gp.pAAD = (unsigned char *)aad;
	gp.ulAADLen = aadlen;
	gp.ulTagBits = KWD_P11_TAG_LEN * 8;
	r = p->f->C_DecryptInit(w->s, &m, h);
	if (r != CKR_OK) {
		rv = op_fail(w, "C_DecryptInit", r);
		goto out;
	}
	olen = ctlen;
	r = p->f->C_Decrypt(w->s, (unsigned char *)ct, ctlen,
	    kw_secret_data(pt), &olen);
	if (r != CKR_OK) {
		rv = decrypt_failed(w, r);
		goto out;
	}
	if (olen != ctlen - KWD_P11_TAG_LEN) {
		rv = KW_ERR_AUTH;
		goto out;
	}
	kw_secret_truncate(pt, olen);
	*ret_pt = pt;
	pt = NULL;
	rv = KW_OK;
out:
	kw_secret_free(pt);
	return rv;
}

int
kwd_p11_ecdsa_sign(struct kwd_p11_worker *w, const char *name, uint32_t version,
    const unsigned char digest[32], unsigned char sig[64])
{
	struct kwd_p11 *p = w->p11;
	CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
	CK_OBJECT_HANDLE h;
	CK_ULONG slen = 64;
	CK_RV r;
	int rv;

	rv = cache_get(p, KWD_P11_SIGNER, name, version, &h, NULL);
	if (rv != KW_OK)
		return rv;
	rv = worker_ready(w);
	if (rv != KW_OK)
		return rv;
	r = p->f->C_SignInit(w->s, &m, h);
	if (r != CKR_OK)
		return op_fail(w, "C_SignInit", r);
	r = p->f->C_Sign(w->s, (unsigned char *)digest, 32, sig, &slen);
	if (r != CKR_OK)
		return op_fail(w, "C_Sign", r);
	if (slen != 64)
		return KW_ERR_HSM;
	return KW_OK;
}

int
kwd_p11_random(struct kwd_p11_worker *w, unsigned char *buf, size_t len)
{
	CK_RV r;
	int rv;

	if (len == 0)
		return KW_ERR_INVALID;
	rv = worker_ready(w);
	if (rv != KW_OK)
		return rv;
	r = w->p11->f->C_GenerateRandom(w->s, buf, len);
	if (r != CKR_OK) {
		/* Never hand out a buffer the HSM may have left as it was. */
		sodium_memzero(buf, len);
		return op_fail(w, "C_GenerateRandom", r);
	}
	return KW_OK;
}

/* CKA_EC_POINT is a DER OCTET STRING around the uncompressed point. */
static int
ec_point_unwrap(const unsigned char *der, size_t len, unsigned char point[65])
{
	if (len == 67 && der[0] == 0x04 && der[1] == 65 && der[2] == 0x04) {
		memcpy(point, der + 2, 65);
		return KW_OK;
	}
	/* Some modules return the raw point (a v2.20 ambiguity). */
	if (len == 65 && der[0] == 0x04) {
		memcpy(point, der, 65);
		return KW_OK;
	}
	return KW_ERR_HSM_UNSUPPORTED;
}

int
kwd_p11_ec_point(struct kwd_p11_worker *w, const char *name, uint32_t version,
    unsigned char point[65])
{
	struct kwd_p11 *p = w->p11;
	unsigned char der[80];
	CK_ATTRIBUTE a = {CKA_EC_POINT, der, sizeof der};
	CK_OBJECT_HANDLE h;
	CK_RV r;
	int rv;

	rv = cache_get(p, KWD_P11_SIGNER, name, version, NULL, &h);
	if (rv != KW_OK)
		return rv;
	rv = worker_ready(w);
	if (rv != KW_OK)
		return rv;
	r = p->f->C_GetAttributeValue(w->s, h, &a, 1);
	if (r != CKR_OK)
		return op_fail(w, "C_GetAttributeValue", r);
	return ec_point_unwrap(der, a.ulValueLen, point);
}

struct list_acc {
	enum kwd_p11_class cls;
	const char *prefix;
	struct kwd_p11_object *objs;
	size_t n, cap;
	struct kwd_p11 *p;
	CK_SESSION_HANDLE s;
};

static int
list_cb(void *arg, CK_OBJECT_HANDLE o, CK_OBJECT_CLASS oc, const char *label,
    enum kwd_p11_class cls, const char *name, uint32_t version)
{
	struct list_acc *a = arg;
	struct kwd_p11_object *ob;
	CK_ATTRIBUTE ida;

	(void)label;
	if (cls != a->cls || strncmp(name, a->prefix, strlen(a->prefix)) != 0)
		return KW_OK;
	/* A signer is listed once, by its private key. */
	if (oc != (cls == KWD_P11_KEK ? CKO_SECRET_KEY : CKO_PRIVATE_KEY))
		return KW_OK;
	if (a->n == a->cap) {
		size_t ncap = a->cap ? a->cap * 2 : 16;
		struct kwd_p11_object *no =
		    reallocarray(a->objs, ncap, sizeof *no);

		if (no == NULL)
			return KW_ERR_NOMEM;
		a->objs = no;
		a->cap = ncap;
	}
	ob = &a->objs[a->n];
	memset(ob, 0, sizeof *ob);
	ob->cls = cls;
	snprintf(ob->name, sizeof ob->name, "%s", name);
	ob->version = version;
	ida = (CK_ATTRIBUTE){CKA_ID, ob->id, sizeof ob->id};
	if (a->p->f->C_GetAttributeValue(a->s, o, &ida, 1) == CKR_OK &&
	    ida.ulValueLen <= sizeof ob->id)
		ob->id_len = ida.ulValueLen;
	a->n++;
	return KW_OK;
}

static int
object_cmp(const void *x, const void *y)
{
	const struct kwd_p11_object *a = x, *b = y;
	int c = strcmp(a->name, b->name);

	if (c != 0)
		return c;
	return (a->version > b->version) - (a->version < b->version);
}

int
kwd_p11_list(struct kwd_p11_worker *w, enum kwd_p11_class cls,
    const char *prefix, struct kwd_p11_object **ret_objs, size_t *ret_n)
{
	struct list_acc a = {cls, prefix ? prefix : "", NULL, 0, 0, w->p11, 0};
	CK_RV r;
	int rv;

	rv = worker_ready(w);
	if (rv != KW_OK)
		return rv;
	a.s = w->s;
	rv = for_each_object(w->p11, w->s, &r, list_cb, &a);
	if (rv != KW_OK) {
		free(a.objs);
		return r != CKR_OK ? op_fail(w, "C_FindObjects", r) : rv;
	}
	if (a.n > 1)
		qsort(a.objs, a.n, sizeof *a.objs, object_cmp);
	*ret_objs = a.objs;
	*ret_n = a.n;
	return KW_OK;
}

int
kwd_p11_destroy(struct kwd_p11_worker *w, enum kwd_p11_class cls,
    const char *name, uint32_t version)
{
	struct kwd_p11 *p = w->p11;
	char label[KWD_P11_LABEL_MAX];
	CK_OBJECT_HANDLE key = CK_INVALID_HANDLE, pub = CK_INVALID_HANDLE;
	struct cache_entry *e;
	CK_RV r;
	int rv;

	rv = kwd_p11_label(cls, name, version, label, sizeof label);
	if (rv != KW_OK)
		return rv;
	rv = worker_ready(w);
	if (rv != KW_OK)
		return rv;
	pthread_rwlock_rdlock(&p->cache_lock);
	e = cache_slot(&p->cache, label);
	if (e != NULL && e->label != NULL) {
		key = e->key;
		pub = e->pub;
	}
	pthread_rwlock_unlock(&p->cache_lock);
	if (key == CK_INVALID_HANDLE && pub == CK_INVALID_HANDLE)
		return KW_ERR_NOT_FOUND;
	if (key != CK_INVALID_HANDLE) {
		r = p->f->C_DestroyObject(w->s, key);
		if (r != CKR_OK)
			return op_fail(w, "C_DestroyObject", r);
	}
	if (pub != CK_INVALID_HANDLE) {
		r = p->f->C_DestroyObject(w->s, pub);
		if (r != CKR_OK)
			return op_fail(w, "C_DestroyObject", r);
	}
	pthread_rwlock_wrlock(&p->cache_lock);
	cache_del(&p->cache, label);
	pthread_rwlock_unlock(&p->cache_lock);
	return KW_OK;
}

/* ---- token initialization (development and tests) ---- */

int
kwd_p11_token_init(const char *module, const char *selector,
    const struct kw_secret *so_pin, const struct kw_secret *user_pin)
{
	CK_FUNCTION_LIST_PTR f = NULL;
	CK_SLOT_ID *slots = NULL, slot = 0;
	CK_ULONG n = 0;
	CK_SESSION_HANDLE s;
	CK_TOKEN_INFO ti;
	unsigned char plabel[32];
	bool found = false, have_s = false;
	void *dl = NULL;
	CK_RV r;
	int rv;

	P11KitUri *uri = NULL;

	rv = parse_token_selector(selector, &uri);
	if (rv != KW_OK)
		return rv;
	/* p11-kit leaves attributes the URI does not name zeroed. */
	memcpy(plabel, p11_kit_uri_get_token_info(uri)->label, sizeof plabel);
	p11_kit_uri_free(uri);
	if (plabel[0] == '\0') {
		kw_log(KW_LOG_ERR, "p11.token_init",
		    "the token selector names no label (pkcs11:token=...)", );
		return KW_ERR_CONFIG;
	}
	rv = load_module(module, &dl, &f);
	if (rv != KW_OK)
		return rv;
	rv = init_module(f, module);
	if (rv != KW_OK)
		goto out_dl;
	r = f->C_GetSlotList(CK_TRUE, NULL, &n);
	if (r == CKR_OK && n > 0) {
		slots = calloc(n, sizeof *slots);
		if (slots == NULL) {
			rv = KW_ERR_NOMEM;
			goto out;
		}
		r = f->C_GetSlotList(CK_TRUE, slots, &n);
	}
	if (r != CKR_OK)
		goto fail;
	for (CK_ULONG i = 0; i < n; i++) {
		if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		if ((ti.flags & CKF_TOKEN_INITIALIZED) &&
		    memcmp(ti.label, plabel, sizeof plabel) == 0) {
			rv = KW_ERR_EXISTS;
			goto out;
		}
		if (!found && !(ti.flags & CKF_TOKEN_INITIALIZED)) {
			slot = slots[i];
			found = true;
		}
	}
	if (!found) {
		kw_log(KW_LOG_ERR, "p11.token_init",
		    "the module has no uninitialized token", );
		rv = KW_ERR_HSM_TOKEN;
		goto out;
	}
	r = f->C_InitToken(slot, kw_secret_data(so_pin), kw_secret_len(so_pin),
	    plabel);
	if (r != CKR_OK)
		goto fail;
	/* SoftHSM moves the new token to a new slot id; find it by label. */
	free(slots);
	slots = NULL;
	found = false;
	r = f->C_GetSlotList(CK_TRUE, NULL, &n);
	if (r == CKR_OK && n > 0) {
		slots = calloc(n, sizeof *slots);
		if (slots == NULL) {
			rv = KW_ERR_NOMEM;
			goto out;
		}
		r = f->C_GetSlotList(CK_TRUE, slots, &n);
	}
	if (r != CKR_OK)
		goto fail;
	for (CK_ULONG i = 0; i < n && !found; i++) {
		if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
		    (ti.flags & CKF_TOKEN_INITIALIZED) &&
		    memcmp(ti.label, plabel, sizeof plabel) == 0) {
			slot = slots[i];
			found = true;
		}
	}
	if (!found) {
		rv = KW_ERR_HSM_TOKEN;
		goto out;
	}
	r = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
	    NULL, &s);
	if (r != CKR_OK)
		goto fail;
	have_s = true;
	r = f->C_Login(s, CKU_SO, kw_secret_data(so_pin),
	    kw_secret_len(so_pin));
	if (r != CKR_OK)
		goto fail;
	r = f->C_InitPIN(s, kw_secret_data(user_pin), kw_secret_len(user_pin));
	if (r != CKR_OK)
		goto fail;
	f->C_Logout(s);
	rv = KW_OK;
	goto out;
fail:
	log_ckr(KW_LOG_ERR, "p11.call_failed", "token init", r);
	rv = kwd_p11_ckr_error(r);
out:
	if (have_s)
		f->C_CloseSession(s);
	free(slots);
	f->C_Finalize(NULL);
out_dl:
	dlclose(dl);
	return rv;
}

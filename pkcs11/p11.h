/*
 * p11.h: keyward's PKCS#11 layer. Only pkcs11/ includes <pkcs11.h>; the
 * rest of keyward sees this interface.
 *
 * Two objects:
 * - struct kwd_p11: the module (dlopen'd once, C_Initialize with OS
 *   locking), the selected token, the login, and a cache of object handles
 *   keyed by label. Shared by all threads of the process.
 * - struct kwd_p11_worker: one long-lived PKCS#11 session, used by one
 *   thread at a time. Every key operation goes through a worker; none of
 *   them calls C_FindObjects (handles come from the cache, which is built at
 *   open, at reconnect, and updated when a key is generated or destroyed).
 *
 * Keys are named by a class, a key name and a version. The object's
 * CKA_LABEL is "<class>/<name>/<version>", e.g. "kek/datasets/3"; key names
 * follow kw_name_valid().
 *
 * Faults: a failed call returns a KW_ERR_*; the worker reopens its session
 * after session-level errors, and token-level errors (device error or
 * removed, token not present, not logged in...) mark the HSM down. While
 * down, operations fail fast with KW_ERR_HSM_DOWN and the next operation
 * after a backoff (50 ms doubling to 2 s) reconnects: reselect the token,
 * log in again, rebuild the handle cache. A rejected PIN is never retried:
 * every later operation returns KW_ERR_HSM_PIN until the layer is reopened.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWD_P11_H
#define KWD_P11_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward.h"
#include "secret.h"

struct kwd_p11;
struct kwd_p11_worker;

enum kwd_p11_class {
	KWD_P11_KEK, /* AES-256 secret key, encrypt/decrypt only */
	KWD_P11_SIGNER, /* EC P-256 key pair, sign only */
};

#define KWD_P11_ID_LEN 16 /* CKA_ID: random, for reconciliation */
#define KWD_P11_NONCE_LEN 12
#define KWD_P11_TAG_LEN 16
#define KWD_P11_LABEL_MAX 96
#define KWD_P11_PIN_MAX 256

struct kwd_p11_config {
	const char *module; /* path of the PKCS#11 module */
	/* An RFC 7512 PKCS#11 URI selecting one token ("pkcs11:token=x"),
	 * or a plain token label. */
	const char *token;
	/* Where the user PIN comes from: exactly one of these. pin is a PIN
	 * the caller read already (a process that drops privileges reads a
	 * root-only credential first); the layer keeps its own copy. */
	const char *pin_file;
	const char *pin_env;
	const struct kw_secret *pin;
};

struct kwd_p11_object {
	enum kwd_p11_class cls;
	char name[KWD_P11_LABEL_MAX];
	uint32_t version;
	unsigned char id[KWD_P11_ID_LEN];
	size_t id_len;
};

struct kwd_p11_token_info {
	char label[33];
	char manufacturer[33];
	char model[17];
	char serial[17];
	unsigned long slot;
};

/*
 * kwd_p11_open: load the module, select the token, log in, build the
 * handle cache. Call after fork (PKCS#11 modules are not fork-safe) and
 * after kw_secure_init(). The PIN is read from its source, used for
 * C_Login, and wiped; a pin_env variable is removed from the environment
 * and kept in the secure arena, since a reconnect must log in again.
 */
KW_WUR int kwd_p11_open(const struct kwd_p11_config *cfg,
    struct kwd_p11 **ret_p11);
void kwd_p11_free(struct kwd_p11 *p11);

/* kwd_p11_token: the selected token. */
void kwd_p11_token(struct kwd_p11 *p11, struct kwd_p11_token_info *ret_info);

/* kwd_p11_healthy: false while the HSM is down or the PIN was refused. */
bool kwd_p11_healthy(struct kwd_p11 *p11);

KW_WUR int kwd_p11_worker_new(struct kwd_p11 *p11,
    struct kwd_p11_worker **ret_worker);
void kwd_p11_worker_free(struct kwd_p11_worker *w);

/*
 * Key generation. id may be NULL (a random CKA_ID is drawn); ret_id, if
 * not NULL, receives the CKA_ID used. KW_ERR_EXISTS if the label exists.
 */
KW_WUR int kwd_p11_kek_generate(struct kwd_p11_worker *w, const char *name,
    uint32_t version, const unsigned char *id, unsigned char *ret_id);
KW_WUR int kwd_p11_ec_generate(struct kwd_p11_worker *w, const char *name,
    uint32_t version, const unsigned char *id, unsigned char *ret_id);

/*
 * kwd_p11_gcm_seal: AES-256-GCM inside the HSM under KEK name/version.
 * A fresh 96-bit nonce is drawn from the OS CSPRNG into ret_nonce. out
 * receives ciphertext || 16-byte tag (outcap >= ptlen + 16).
 */
KW_WUR int kwd_p11_gcm_seal(struct kwd_p11_worker *w, const char *name,
    uint32_t version, const unsigned char *aad, size_t aadlen,
    const unsigned char *pt, size_t ptlen,
    unsigned char ret_nonce[KWD_P11_NONCE_LEN], unsigned char *out,
    size_t outcap, size_t *ret_len);

/*
 * kwd_p11_gcm_open: the inverse; the plaintext goes to secure memory.
 * Any mismatch (key, nonce, AAD, ciphertext, tag) gives KW_ERR_AUTH.
 */
KW_WUR int kwd_p11_gcm_open(struct kwd_p11_worker *w, const char *name,
    uint32_t version, const unsigned char *aad, size_t aadlen,
    const unsigned char nonce[KWD_P11_NONCE_LEN], const unsigned char *ct,
    size_t ctlen, struct kw_secret **ret_pt);

/* kwd_p11_ecdsa_sign: ECDSA P-256 over a SHA-256 digest; raw r || s. */
KW_WUR int kwd_p11_ecdsa_sign(struct kwd_p11_worker *w, const char *name,
    uint32_t version, const unsigned char digest[32], unsigned char sig[64]);

/* kwd_p11_ecdsa_der: raw r || s to DER (RFC 3279 Ecdsa-Sig-Value). */
KW_WUR int kwd_p11_ecdsa_der(const unsigned char sig[64], unsigned char *der,
    size_t cap, size_t *ret_len);

/* kwd_p11_ec_public: the public half of a signer as an EVP_PKEY. */
KW_WUR int kwd_p11_ec_public(struct kwd_p11_worker *w, const char *name,
    uint32_t version, EVP_PKEY **ret_pkey);

/*
 * kwd_p11_evp_private: an EVP_PKEY whose private operations run in the HSM
 * (through libp11), for OpenSSL APIs such as X509_sign(). Free it with
 * EVP_PKEY_free() before kwd_p11_free().
 */
KW_WUR int kwd_p11_evp_private(struct kwd_p11 *p11, const char *name,
    uint32_t version, EVP_PKEY **ret_pkey);

/* kwd_p11_random: len bytes from the HSM's RNG. */
KW_WUR int kwd_p11_random(struct kwd_p11_worker *w, unsigned char *buf,
    size_t len);

/*
 * kwd_p11_list: keyward objects of a class whose key name starts with
 * prefix ("" for all), read from the token (C_FindObjects: not for a
 * request path). Sorted by name, then version. Free with free().
 */
KW_WUR int kwd_p11_list(struct kwd_p11_worker *w, enum kwd_p11_class cls,
    const char *prefix, struct kwd_p11_object **ret_objs, size_t *ret_n);

/* kwd_p11_destroy: delete the object(s) of a key version. */
KW_WUR int kwd_p11_destroy(struct kwd_p11_worker *w, enum kwd_p11_class cls,
    const char *name, uint32_t version);

/*
 * kwd_p11_token_init: initialize the first uninitialized token of a module
 * with the label that selector (as in kwd_p11_config.token) names, an SO
 * PIN and a user PIN (development and tests; production tokens are set up
 * with the vendor's tools). KW_ERR_EXISTS if a token with that label
 * exists already.
 */
KW_WUR int kwd_p11_token_init(const char *module, const char *selector,
    const struct kw_secret *so_pin, const struct kw_secret *user_pin);

/*
 * kwd_p11_parse_token: check a token selector (a label or an RFC 7512
 * URI naming a token) the way kwd_p11_open() will; KW_ERR_CONFIG, logged,
 * if it is unusable.
 */
KW_WUR int kwd_p11_parse_token(const char *selector);

/* kwd_p11_label: "<class>/<name>/<version>"; KW_ERR_INVALID for a bad name. */
KW_WUR int kwd_p11_label(enum kwd_p11_class cls, const char *name,
    uint32_t version, char *buf, size_t cap);

/* kwd_p11_ckr_name: "CKR_DEVICE_ERROR" etc., for logs and tests. */
const char *kwd_p11_ckr_name(unsigned long rv);
/* kwd_p11_ckr_error: the KW_ERR_* a CK_RV maps to. */
int kwd_p11_ckr_error(unsigned long rv);

#endif /* KWD_P11_H */

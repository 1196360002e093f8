/*
 * p11_evp.c: HSM keys as OpenSSL EVP_PKEYs.
 *
 * The private half goes through libp11, which gives OpenSSL an EC_KEY
 * whose signing calls run C_Sign in the HSM; X509_sign() and friends then
 * work unchanged. libp11 loads the same module path: dlopen() hands back
 * the module already loaded, its C_Initialize answers
 * CKR_CRYPTOKI_ALREADY_INITIALIZED (which libp11 accepts), and the login
 * made by p11.c holds for libp11's sessions too, since PKCS#11 login state
 * belongs to the application, not to a session. libp11 calls C_Finalize
 * when its context is unloaded, so the context lives as long as struct
 * kwd_p11 and goes first in kwd_p11_free().
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "p11_internal.h"

#include <libp11.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/param_build.h>
#include <pthread.h>
#include <string.h>

#include "log.h"

struct lp11 {
	PKCS11_CTX *ctx;
	PKCS11_SLOT *slots;
	unsigned int nslots;
};

void
kwd_p11_evp_release(struct kwd_p11 *p11, void **slot)
{
	struct lp11 *l = *slot;

	(void)p11;
	if (l == NULL)
		return;
	if (l->slots != NULL)
		PKCS11_release_all_slots(l->ctx, l->slots, l->nslots);
	PKCS11_CTX_unload(l->ctx);
	PKCS11_CTX_free(l->ctx);
	free(l);
	*slot = NULL;
}

static int
lp11_load(struct kwd_p11 *p11, struct lp11 **ret)
{
	struct lp11 *l = calloc(1, sizeof *l);

	if (l == NULL)
		return KW_ERR_NOMEM;
	l->ctx = PKCS11_CTX_new();
	if (l->ctx == NULL) {
		free(l);
		return KW_ERR_NOMEM;
	}
	if (PKCS11_CTX_load(l->ctx, kwd_p11_module_path(p11)) != 0) {
		kw_log(KW_LOG_ERR, "p11.libp11",
		    "libp11 cannot load the module",
		    KW_F("path", kwd_p11_module_path(p11)));
		PKCS11_CTX_free(l->ctx);
		free(l);
		return KW_ERR_HSM_MODULE;
	}
	*ret = l;
	return KW_OK;
}

static PKCS11_SLOT *
find_slot(struct lp11 *l, const struct kwd_p11_token_info *ti)
{
	for (unsigned int i = 0; i < l->nslots; i++) {
		PKCS11_TOKEN *t = l->slots[i].token;

		if (t != NULL && t->initialized && t->label != NULL &&
		    strcmp(t->label, ti->label) == 0 && t->serialnr != NULL &&
		    strcmp(t->serialnr, ti->serial) == 0)
			return &l->slots[i];
	}
	return NULL;
}

int
kwd_p11_evp_private(struct kwd_p11 *p11, const char *name, uint32_t version,
    EVP_PKEY **ret_pkey)
{
	struct kwd_p11_token_info ti;
	char label[KWD_P11_LABEL_MAX];
	struct lp11 *l;
	PKCS11_SLOT *slot = NULL;
	PKCS11_KEY *keys = NULL;
	unsigned int nkeys = 0;
	EVP_PKEY *pkey = NULL;
	int rv;

	rv = kwd_p11_label(KWD_P11_SIGNER, name, version, label, sizeof label);
	if (rv != KW_OK)
		return rv;
	if (!kwd_p11_healthy(p11))
		return KW_ERR_HSM_DOWN;
	kwd_p11_token(p11, &ti);
	pthread_mutex_lock(kwd_p11_evp_lock(p11));
	l = *kwd_p11_evp_slot(p11);
	if (l == NULL) {
		rv = lp11_load(p11, &l);
		if (rv != KW_OK)
			goto out;
		*kwd_p11_evp_slot(p11) = l;
	}
	/* Enumerate once: keys handed out earlier point into these slots, so
	 * releasing them would leave those keys signing on whatever slot
	 * the memory holds next. PKCS11_update_slots() adds new slots
	 * without freeing the old ones. */
	if (l->slots == NULL &&
	    PKCS11_enumerate_slots(l->ctx, &l->slots, &l->nslots) != 0) {
		rv = KW_ERR_HSM;
		goto out;
	}
	slot = find_slot(l, &ti);
	if (slot == NULL) {
		/* The token came back under a new slot after a reconnect. */
		if (PKCS11_update_slots(l->ctx, &l->slots, &l->nslots) == 0)
			slot = find_slot(l, &ti);
	}
	if (slot == NULL) {
		rv = KW_ERR_HSM_TOKEN;
		goto out;
	}
	if (PKCS11_enumerate_keys(slot->token, &keys, &nkeys) != 0) {
		rv = KW_ERR_HSM;
		goto out;
	}
	rv = KW_ERR_HSM_KEY;
	for (unsigned int i = 0; i < nkeys; i++) {
		if (keys[i].label == NULL || strcmp(keys[i].label, label) != 0)
			continue;
		pkey = PKCS11_get_private_key(&keys[i]);
		if (pkey != NULL) {
			*ret_pkey = pkey;
			rv = KW_OK;
		}
		break;
	}
out:
	pthread_mutex_unlock(kwd_p11_evp_lock(p11));
	return rv;
}

int
kwd_p11_ec_public(struct kwd_p11_worker *w, const char *name, uint32_t version,
    EVP_PKEY **ret_pkey)
{
	unsigned char point[65];
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	int rv;

	rv = kwd_p11_ec_point(w, name, version, point);
	if (rv != KW_OK)
		return rv;
	rv = KW_ERR_CRYPTO;
	bld = OSSL_PARAM_BLD_new();
	if (bld == NULL ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
	        "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
	        point, sizeof point))
		goto out;
	params = OSSL_PARAM_BLD_to_param(bld);
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		goto out;
	*ret_pkey = pkey;
	rv = KW_OK;
out:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	return rv;
}

int
kwd_p11_ecdsa_der(const unsigned char sig[64], unsigned char *der, size_t cap,
    size_t *ret_len)
{
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, 32, NULL),
	       *s = BN_bin2bn(sig + 32, 32, NULL);
	unsigned char *p = der;
	int len, rv = KW_ERR_CRYPTO;

	if (es == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s))
		goto out;
	r = s = NULL; /* owned by es now */
	len = i2d_ECDSA_SIG(es, NULL);
	if (len <= 0 || (size_t)len > cap) {
		rv = len > 0 ? KW_ERR_TOO_LARGE : KW_ERR_CRYPTO;
		goto out;
	}
	if (i2d_ECDSA_SIG(es, &p) != len)
		goto out;
	*ret_len = (size_t)len;
	rv = KW_OK;
out:
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	return rv;
}

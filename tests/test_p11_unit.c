/*
 * test_p11_unit.c: the parts of the PKCS#11 layer that need no token:
 * the CK_RV table, token selectors, labels, signature encoding.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/ecdsa.h>

#include "log.h"
#include "p11_internal.h"

static void
test_p11_rv_table_complete(void **state)
{
	const struct kwd_p11_rv_info *t;
	size_t n = kwd_p11_rv_table(&t);

	(void)state;
	/* Every return value of PKCS#11 v2.40 that the header defines. */
	assert_true(n >= 93);
	for (size_t i = 0; i < n; i++) {
		assert_true(strncmp(t[i].name, "CKR_", 4) == 0);
		assert_true(t[i].err <= 0);
		assert_true(t[i].rv == CKR_OK || t[i].err < 0);
		for (size_t j = 0; j < i; j++)
			assert_int_not_equal(t[i].rv, t[j].rv);
		assert_ptr_equal(kwd_p11_rv_info(t[i].rv), &t[i]);
		assert_string_not_equal(kw_error_name(t[i].err), "KW_ERR_?");
	}
}

static void
test_p11_rv_classes(void **state)
{
	static const struct {
		CK_RV rv;
		int err;
		enum p11_action act;
	} want[] = {
	    {CKR_DEVICE_ERROR, KW_ERR_HSM_DOWN, P11_ACT_RECONNECT},
	    {CKR_DEVICE_REMOVED, KW_ERR_HSM_DOWN, P11_ACT_RECONNECT},
	    {CKR_TOKEN_NOT_PRESENT, KW_ERR_HSM_DOWN, P11_ACT_RECONNECT},
	    {CKR_USER_NOT_LOGGED_IN, KW_ERR_HSM_DOWN, P11_ACT_RECONNECT},
	    {CKR_CRYPTOKI_NOT_INITIALIZED, KW_ERR_HSM_DOWN, P11_ACT_RECONNECT},
	    {CKR_SESSION_HANDLE_INVALID, KW_ERR_HSM_DOWN, P11_ACT_SESSION},
	    {CKR_SESSION_CLOSED, KW_ERR_HSM_DOWN, P11_ACT_SESSION},
	    {CKR_FUNCTION_FAILED, KW_ERR_HSM, P11_ACT_SESSION},
	    {CKR_OPERATION_ACTIVE, KW_ERR_HSM, P11_ACT_SESSION},
	    {CKR_PIN_INCORRECT, KW_ERR_HSM_PIN, P11_ACT_PIN},
	    {CKR_PIN_LOCKED, KW_ERR_HSM_PIN, P11_ACT_PIN},
	    {CKR_PIN_EXPIRED, KW_ERR_HSM_PIN, P11_ACT_PIN},
	    {CKR_ENCRYPTED_DATA_INVALID, KW_ERR_AUTH, P11_ACT_NONE},
	    {CKR_HOST_MEMORY, KW_ERR_NOMEM, P11_ACT_NONE},
	    {CKR_MECHANISM_INVALID, KW_ERR_HSM_UNSUPPORTED, P11_ACT_NONE},
	    {CKR_RANDOM_NO_RNG, KW_ERR_RANDOM, P11_ACT_NONE},
	    {CKR_ATTRIBUTE_SENSITIVE, KW_ERR_DENIED, P11_ACT_NONE},
	};

	(void)state;
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		const struct kwd_p11_rv_info *ri = kwd_p11_rv_info(want[i].rv);

		assert_int_equal(ri->rv, want[i].rv);
		assert_int_equal(ri->err, want[i].err);
		assert_int_equal(ri->action, want[i].act);
	}
	/* Vendor-defined values: a generic HSM failure, session reset. */
	assert_int_equal(kwd_p11_ckr_error(CKR_VENDOR_DEFINED | 7), KW_ERR_HSM);
	assert_string_equal(kwd_p11_ckr_name(CKR_VENDOR_DEFINED | 7),
	    "CKR_(unknown)");
	assert_string_equal(kwd_p11_ckr_name(CKR_DEVICE_ERROR),
	    "CKR_DEVICE_ERROR");
}

static void
test_p11_token_selectors(void **state)
{
	static const char *const good[] = {
	    "keyward-dev",
	    "a label with spaces",
	    "12345678901234567890123456789012", /* 32 bytes */
	    "pkcs11:token=keyward-dev",
	    "pkcs11:token=keyward%20dev;manufacturer=SoftHSM%20project",
	    "pkcs11:token=x;serial=3a85074f8f540bd8;model=SoftHSM%20v2",
	    "pkcs11:slot-id=3",
	    "pkcs11:library-manufacturer=SoftHSM;token=x",
	    "pkcs11:",
	};
	static const char *const bad[] = {
	    "",
	    "123456789012345678901234567890123", /* 33 bytes */
	    "pkcs11:token=x;pin-value=1234",
	    "pkcs11:token=x?pin-value=1234",
	    "pkcs11:token=x?pin-source=file:/etc/pin",
	    "pkcs11:token=x;object=kek",
	    "pkcs11:token=x;id=%01%02",
	    "pkcs11:token=x;type=secret-key",
	    "pkcs11:token=x?module-path=/tmp/evil.so",
	    "pkcs11:token=x?module-name=evil",
	    "pkcs11:token=x;frobnicate=1",
	    "pkcs11:token=%zz",
	    "pkcs11:token=x;token=y",
	};

	(void)state;
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		if (kwd_p11_parse_token(good[i]) != KW_OK)
			fail_msg("refused good selector '%s'", good[i]);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (kwd_p11_parse_token(bad[i]) != KW_ERR_CONFIG)
			fail_msg("accepted bad selector '%s'", bad[i]);
	assert_int_equal(kwd_p11_parse_token(NULL), KW_ERR_CONFIG);
}

static void
test_p11_labels(void **state)
{
	char buf[KWD_P11_LABEL_MAX];

	(void)state;
	assert_int_equal(kwd_p11_label(KWD_P11_KEK, "datasets", 3, buf,
	                     sizeof buf),
	    KW_OK);
	assert_string_equal(buf, "kek/datasets/3");
	assert_int_equal(kwd_p11_label(KWD_P11_SIGNER, "tokens", 4294967295u,
	                     buf, sizeof buf),
	    KW_OK);
	assert_string_equal(buf, "sig/tokens/4294967295");
	assert_int_equal(kwd_p11_label(KWD_P11_KEK, "datasets", 0, buf,
	                     sizeof buf),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_p11_label(KWD_P11_KEK, "a/b", 1, buf, sizeof buf),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_p11_label(KWD_P11_KEK, "Upper", 1, buf,
	                     sizeof buf),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_p11_label(KWD_P11_KEK, "datasets", 1, buf, 8),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_p11_label((enum kwd_p11_class)7, "d", 1, buf,
	                     sizeof buf),
	    KW_ERR_INVALID);
}

static void
test_p11_ecdsa_der_encoding(void **state)
{
	unsigned char raw[64], der[80];
	const unsigned char *p = der;
	const BIGNUM *r, *s;
	unsigned char back[64];
	ECDSA_SIG *es;
	size_t len;

	(void)state;
	/* High bits set (needs a 0x00 pad) and leading zeros (shorter). */
	memset(raw, 0xff, 32);
	memset(raw + 32, 0, 31);
	raw[63] = 1;
	assert_int_equal(kwd_p11_ecdsa_der(raw, der, sizeof der, &len), KW_OK);
	assert_int_equal(der[0], 0x30);
	es = d2i_ECDSA_SIG(NULL, &p, (long)len);
	assert_non_null(es);
	ECDSA_SIG_get0(es, &r, &s);
	assert_int_equal(BN_bn2binpad(r, back, 32), 32);
	assert_int_equal(BN_bn2binpad(s, back + 32, 32), 32);
	assert_memory_equal(back, raw, 64);
	ECDSA_SIG_free(es);
	assert_int_equal(kwd_p11_ecdsa_der(raw, der, 8, &len),
	    KW_ERR_TOO_LARGE);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_p11_rv_table_complete),
	    cmocka_unit_test(test_p11_rv_classes),
	    cmocka_unit_test(test_p11_token_selectors),
	    cmocka_unit_test(test_p11_labels),
	    cmocka_unit_test(test_p11_ecdsa_der_encoding),
	};

	kw_log_set_level(KW_LOG_ERR - 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_blob.c: the wrapped-DEK blob and the canonical context.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <setjmp.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "blob.h"

static void
sample(struct kwd_blob *b, unsigned char ct[48])
{
	memset(b, 0, sizeof *b);
	b->alg = 1;
	strcpy(b->key, "datasets");
	b->version = 3;
	randombytes_buf(b->nonce, sizeof b->nonce);
	randombytes_buf(ct, 48);
	b->ct = ct;
	b->ctlen = 48;
}

static void
test_blob_roundtrip(void **state)
{
	unsigned char ct[48], buf[KWD_BLOB_MAX];
	struct kwd_blob b, p;
	size_t len;

	(void)state;
	sample(&b, ct);
	assert_int_equal(kwd_blob_encode(&b, buf, sizeof buf, &len), KW_OK);
	assert_int_equal(len, 7 + 8 + 4 + 12 + 2 + 48);
	assert_memory_equal(buf, "KWDK\x01\x01\x08", 7);
	assert_int_equal(kwd_blob_parse(buf, len, &p), KW_OK);
	assert_string_equal(p.key, "datasets");
	assert_int_equal(p.version, 3);
	assert_memory_equal(p.nonce, b.nonce, 12);
	assert_int_equal(p.ctlen, 48);
	assert_memory_equal(p.ct, ct, 48);
}

static void
test_blob_every_truncation_and_extension_refused(void **state)
{
	unsigned char ct[48], buf[KWD_BLOB_MAX + 1];
	struct kwd_blob b, p;
	size_t len;

	(void)state;
	sample(&b, ct);
	assert_int_equal(kwd_blob_encode(&b, buf, sizeof buf, &len), KW_OK);
	for (size_t l = 0; l < len; l++)
		assert_int_equal(kwd_blob_parse(buf, l, &p), KW_ERR_INVALID);
	buf[len] = 0;
	assert_int_equal(kwd_blob_parse(buf, len + 1, &p), KW_ERR_INVALID);
}

static void
test_blob_header_fields_checked(void **state)
{
	unsigned char ct[48], buf[KWD_BLOB_MAX], bad[KWD_BLOB_MAX];
	struct kwd_blob b, p;
	size_t len;
	/* magic, format, alg, name length, a name byte, ct length; a
	 * version or nonce edit parses and fails in the HSM (AAD). */
	static const size_t pos[] = {0, 3, 4, 5, 6, 7, 31, 32};

	(void)state;
	sample(&b, ct);
	assert_int_equal(kwd_blob_encode(&b, buf, sizeof buf, &len), KW_OK);
	for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++) {
		memcpy(bad, buf, len);
		bad[pos[i]] ^= 0x40;
		if (kwd_blob_parse(bad, len, &p) == KW_OK)
			fail_msg("byte %zu edited, still parsed", pos[i]);
	}
	/* Version 0 is not a version. */
	memcpy(bad, buf, len);
	memset(bad + 15, 0, 4);
	assert_int_equal(kwd_blob_parse(bad, len, &p), KW_ERR_INVALID);
	/* Encode refuses what parse would refuse. */
	b.version = 0;
	assert_int_equal(kwd_blob_encode(&b, buf, sizeof buf, &len),
	    KW_ERR_INVALID);
	b.version = 1;
	strcpy(b.key, "Bad");
	assert_int_equal(kwd_blob_encode(&b, buf, sizeof buf, &len),
	    KW_ERR_INVALID);
	strcpy(b.key, "ok");
	b.ctlen = 47;
	assert_int_equal(kwd_blob_encode(&b, buf, sizeof buf, &len),
	    KW_ERR_INVALID);
	b.ctlen = 48;
	assert_int_equal(kwd_blob_encode(&b, buf, 20, &len), KW_ERR_TOO_LARGE);
}

static void
test_blob_aad_canonical(void **state)
{
	struct kwd_ctx_pair c1[] = {{"purpose", "train"},
	    {"dataset", "imagenet-2026"}};
	struct kwd_ctx_pair c2[] = {{"dataset", "imagenet-2026"},
	    {"purpose", "train"}};
	struct kwd_ctx_pair c3[] = {{"dataset", "imagenet-2026purpose"},
	    {"", "train"}};
	struct kwd_ctx_pair c4[] = {{"dataset", "a"}, {"dataset", "b"}};
	struct kwd_ctx_pair c5[] = {{"dataset", "imagenet-2027"},
	    {"purpose", "train"}};
	unsigned char ct[48], a1[512], a2[512];
	size_t l1, l2;
	struct kwd_blob b;

	(void)state;
	sample(&b, ct);
	assert_int_equal(kwd_blob_aad(&b, c1, 2, a1, sizeof a1, &l1), KW_OK);
	assert_int_equal(kwd_blob_aad(&b, c2, 2, a2, sizeof a2, &l2), KW_OK);
	/* Order of pairs does not matter. */
	assert_int_equal(l1, l2);
	assert_memory_equal(a1, a2, l1);
	/* A different value, key version or key name changes the AAD. */
	assert_int_equal(kwd_blob_aad(&b, c5, 2, a2, sizeof a2, &l2), KW_OK);
	assert_true(l1 != l2 || memcmp(a1, a2, l1) != 0);
	b.version = 4;
	assert_int_equal(kwd_blob_aad(&b, c1, 2, a2, sizeof a2, &l2), KW_OK);
	assert_memory_not_equal(a1, a2, l1);
	b.version = 3;
	strcpy(b.key, "datasetz");
	assert_int_equal(kwd_blob_aad(&b, c1, 2, a2, sizeof a2, &l2), KW_OK);
	assert_memory_not_equal(a1, a2, l1);
	/* Length prefixes: no shifting of bytes between key and value. */
	assert_int_equal(kwd_blob_aad(&b, c3, 2, a2, sizeof a2, &l2),
	    KW_ERR_INVALID);
	/* Duplicate keys are refused, not silently merged. */
	assert_int_equal(kwd_blob_aad(&b, c4, 2, a2, sizeof a2, &l2),
	    KW_ERR_INVALID);
	/* Empty context is allowed and differs from a non-empty one. */
	assert_int_equal(kwd_blob_aad(&b, NULL, 0, a2, sizeof a2, &l2), KW_OK);
	assert_int_equal(l2, 7 + 8 + 4);
	assert_int_equal(kwd_blob_aad(&b, c1, 2, a2, 20, &l2),
	    KW_ERR_TOO_LARGE);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_blob_roundtrip),
	    cmocka_unit_test(test_blob_every_truncation_and_extension_refused),
	    cmocka_unit_test(test_blob_header_fields_checked),
	    cmocka_unit_test(test_blob_aad_canonical),
	};

	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}

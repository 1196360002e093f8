/*
 * test_name.c: the canonical form of key names,
 * ^[a-z0-9][a-z0-9._-]{0,62}$ without "..".
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "name.h"

#define FIRST_CHARS "abcdefghijklmnopqrstuvwxyz0123456789"
#define LATER_CHARS FIRST_CHARS "._-"

static void
test_name_accepts_examples(void **state)
{
	const char *good[] = {"a", "0", "datasets", "imagenet-2026", "a.b_c-d",
	    "9lives", "a.", "a-", "a_", "a.b.c"};

	(void)state;
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		assert_true(kw_name_valid(good[i]));
		assert_true(kw_name_valid_n(good[i], strlen(good[i])));
	}
}

static void
test_name_length_limit(void **state)
{
	char s[KW_NAME_MAX + 8];

	(void)state;
	assert_int_equal(KW_NAME_MAX, 63);
	/* Mix the allowed characters so the limit is what decides. */
	for (size_t i = 0; i < sizeof s; i++)
		s[i] = LATER_CHARS[i % (sizeof LATER_CHARS - 1)];
	s[63] = '\0';
	assert_true(kw_name_valid(s));
	assert_true(kw_name_valid_n(s, 63));
	s[63] = 'x';
	s[64] = '\0';
	assert_false(kw_name_valid(s));
	assert_false(kw_name_valid_n(s, 64));
	s[64] = 'y';
	s[sizeof s - 1] = '\0';
	assert_false(kw_name_valid(s));
}

static void
test_name_rejects_examples(void **state)
{
	const char *bad[] = {"", "A", "Datasets", "dataSets", ".a", "-a", "_a",
	    "a/b", "/a", "a/", "a..b", "..", ".", "a b", " a", "a ", "a\tb",
	    "a\nb", "caf\xc3\xa9", "\x80", "a\xff", "a:b", "a+b", "a@b", "a..",
	    "x...y"};

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_false(kw_name_valid(bad[i]));
		assert_false(kw_name_valid_n(bad[i], strlen(bad[i])));
	}
}

static void
test_name_rejects_null(void **state)
{
	(void)state;
	assert_false(kw_name_valid(NULL));
}

static void
test_name_rejects_embedded_nul(void **state)
{
	static const char s[] = {'a', 'b', '\0', 'c', 'd'};

	(void)state;
	assert_false(kw_name_valid_n(s, sizeof s));
	/* The prefix before the NUL alone is fine: the NUL is the cause. */
	assert_true(kw_name_valid_n(s, 2));
	assert_false(kw_name_valid_n("\0a", 2));
}

static void
test_name_valid_n_reads_only_len(void **state)
{
	(void)state;
	/* The byte after len would make the name invalid; it is not read. */
	assert_true(kw_name_valid_n("abc/", 3));
	assert_true(kw_name_valid_n("a..", 2));
	assert_false(kw_name_valid_n("abc", 0));
}

/* Every byte value, alone and after a valid first character. */
static void
test_name_every_byte(void **state)
{
	(void)state;
	for (int c = 0; c < 256; c++) {
		char one[1] = {(char)c};
		char two[2] = {'a', (char)c};
		bool first_ok = c != 0 && strchr(FIRST_CHARS, c) != NULL;
		bool later_ok = c != 0 && strchr(LATER_CHARS, c) != NULL;

		assert_int_equal(kw_name_valid_n(one, 1), first_ok);
		assert_int_equal(kw_name_valid_n(two, 2), later_ok);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_name_accepts_examples),
	    cmocka_unit_test(test_name_length_limit),
	    cmocka_unit_test(test_name_rejects_examples),
	    cmocka_unit_test(test_name_rejects_null),
	    cmocka_unit_test(test_name_rejects_embedded_nul),
	    cmocka_unit_test(test_name_valid_n_reads_only_len),
	    cmocka_unit_test(test_name_every_byte),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

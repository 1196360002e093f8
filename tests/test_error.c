/*
 * test_error.c: the KW_ERR_* names, explanations and the version string.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "keyward.h"

#define UNKNOWN_NAME "KW_ERR_?"
#define UNKNOWN_MSG "unknown error code"

/* The last code keyward.h defines; append-only, so it only moves down. */
#define LAST_CODE KW_ERR_FORMAT

/*
 * Our own code-to-name table, written from keyward.h: it catches a table in
 * error.c that is shifted by one or has two entries swapped.
 */
/* clang-format off */
#define C(code) {code, #code}
/* clang-format on */
static const struct {
	int code;
	const char *name;
} expected_names[] = {
    C(KW_OK),
    C(KW_ERR_INTERNAL),
    C(KW_ERR_NOMEM),
    C(KW_ERR_INVALID),
    C(KW_ERR_TOO_LARGE),
    C(KW_ERR_IO),
    C(KW_ERR_CONFIG),
    C(KW_ERR_MEMLOCK),
    C(KW_ERR_NOT_FOUND),
    C(KW_ERR_EXISTS),
    C(KW_ERR_AUTH),
    C(KW_ERR_DENIED),
    C(KW_ERR_UNAVAILABLE),
    C(KW_ERR_HSM_MODULE),
    C(KW_ERR_HSM_TOKEN),
    C(KW_ERR_HSM_PIN),
    C(KW_ERR_HSM_DOWN),
    C(KW_ERR_HSM),
    C(KW_ERR_HSM_UNSUPPORTED),
    C(KW_ERR_HSM_KEY),
    C(KW_ERR_RANDOM),
    C(KW_ERR_TIMEOUT),
    C(KW_ERR_CRYPTO),
    C(KW_ERR_PERM),
    C(KW_ERR_UNAUTHENTICATED),
    C(KW_ERR_CONNECT),
    C(KW_ERR_PROTOCOL),
    C(KW_ERR_RATE_LIMITED),
    C(KW_ERR_FORMAT),
};
#undef C

static void
test_error_known_codes_end_at_last(void **state)
{
	int code;

	(void)state;
	/* Walk down until the first unknown name; the bound only keeps a
	 * broken lookup from looping forever. */
	for (code = KW_OK; code > -1000; code--)
		if (strcmp(kw_error_name(code), UNKNOWN_NAME) == 0)
			break;
	assert_int_equal(code, LAST_CODE - 1);
}

static void
test_error_names_distinct_and_prefixed(void **state)
{
	const char *names[1 - LAST_CODE];

	(void)state;
	for (int code = KW_OK; code >= LAST_CODE; code--) {
		const char *n = kw_error_name(code);

		assert_non_null(n);
		if (code == KW_OK)
			assert_string_equal(n, "KW_OK");
		else
			assert_int_equal(strncmp(n, "KW_ERR_", 7), 0);
		assert_string_not_equal(n, UNKNOWN_NAME);
		names[-code] = n;
		for (int prev = KW_OK; prev > code; prev--)
			assert_string_not_equal(names[-prev], n);
	}
}

static void
test_error_names_match_header(void **state)
{
	size_t n = sizeof expected_names / sizeof expected_names[0];

	(void)state;
	/* Every code from KW_OK to the last one, in order, is in our table. */
	assert_int_equal(n, (size_t)(1 - LAST_CODE));
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(expected_names[i].code, -(int)i);
		assert_string_equal(kw_error_name(expected_names[i].code),
		    expected_names[i].name);
	}
}

static void
test_error_messages_known(void **state)
{
	(void)state;
	for (int code = KW_OK; code >= LAST_CODE; code--) {
		const char *m = kw_strerror(code);

		assert_non_null(m);
		assert_true(m[0] != '\0');
		assert_string_not_equal(m, UNKNOWN_MSG);
	}
}

static void
test_error_unknown_codes(void **state)
{
	/* Positive codes, the first code past the end, and the extremes
	 * (INT_MIN must not be negated inside the lookup). */
	const int bad[] = {1, 2, 77, INT_MAX, LAST_CODE - 1, LAST_CODE - 2,
	    -1000, INT_MIN + 1, INT_MIN};

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_string_equal(kw_strerror(bad[i]), UNKNOWN_MSG);
		assert_string_equal(kw_error_name(bad[i]), UNKNOWN_NAME);
	}
}

static void
test_error_version_matches_macros(void **state)
{
	char want[64];

	(void)state;
	snprintf(want, sizeof want, "%d.%d.%d", KW_VERSION_MAJOR,
	    KW_VERSION_MINOR, KW_VERSION_PATCH);
	assert_non_null(kw_version());
	assert_string_equal(kw_version(), want);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_error_known_codes_end_at_last),
	    cmocka_unit_test(test_error_names_distinct_and_prefixed),
	    cmocka_unit_test(test_error_names_match_header),
	    cmocka_unit_test(test_error_messages_known),
	    cmocka_unit_test(test_error_unknown_codes),
	    cmocka_unit_test(test_error_version_matches_macros),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

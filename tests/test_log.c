/*
 * test_log.c: logfmt lines: layout, escaping, cutting, levels, errno.
 *
 * Each test points the logger at a pipe and reads back what one kw_log()
 * call wrote: a line is one write(2), so one read gets all of it.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* log.c's line buffer, newline included. */
#define LINE_LIMIT 2048

struct pipe_state {
	int rd;
	int wr;
	char buf[8192];
	size_t len;
};

static int
setup(void **state)
{
	struct pipe_state *p = calloc(1, sizeof *p);
	int fds[2];

	if (p == NULL || pipe2(fds, O_CLOEXEC) != 0) {
		free(p);
		return -1;
	}
	/* Non-blocking: a dropped line must show as "nothing to read", not
	 * hang the test. */
	if (fcntl(fds[0], F_SETFL, O_NONBLOCK) != 0) {
		close(fds[0]);
		close(fds[1]);
		free(p);
		return -1;
	}
	p->rd = fds[0];
	p->wr = fds[1];
	kw_log_set_fd(p->wr);
	kw_log_set_level(KW_LOG_INFO);
	*state = p;
	return 0;
}

static int
teardown(void **state)
{
	struct pipe_state *p = *state;

	kw_log_set_fd(STDERR_FILENO);
	kw_log_set_level(KW_LOG_INFO);
	close(p->rd);
	close(p->wr);
	free(p);
	return 0;
}

/* Read what the logger wrote since the last call; NUL-terminated. */
static size_t
drain(struct pipe_state *p)
{
	ssize_t r;

	p->len = 0;
	for (;;) {
		r = read(p->rd, p->buf + p->len, sizeof p->buf - 1 - p->len);
		if (r <= 0)
			break;
		p->len += (size_t)r;
	}
	assert_true(r == 0 || errno == EAGAIN);
	p->buf[p->len] = '\0';
	return p->len;
}

static size_t
count(const char *hay, size_t len, const char *needle)
{
	size_t n = 0, nl = strlen(needle);
	const char *h = hay, *end = hay + len;

	while ((h = memmem(h, (size_t)(end - h), needle, nl)) != NULL) {
		n++;
		h++;
	}
	return n;
}

/* A line is well-formed: one "\n", at the end, and only printable ASCII. */
static void
assert_one_clean_line(const struct pipe_state *p)
{
	assert_true(p->len > 0);
	assert_true(p->len <= LINE_LIMIT);
	assert_int_equal(p->buf[p->len - 1], '\n');
	for (size_t i = 0; i + 1 < p->len; i++) {
		unsigned char c = (unsigned char)p->buf[i];

		assert_true(c >= 0x20 && c < 0x7f);
	}
}

static const char layout[] =
    "^ts=([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    "\\.[0-9]{3}Z level=info event=test\\.event msg=\"hello world\" "
    "a=1 b=two c=\"x y\"\n$";

static void
test_log_line_layout(void **state)
{
	struct pipe_state *p = *state;
	regex_t re;
	regmatch_t m[7];
	struct tm tm;
	time_t before, after, logged;

	before = time(NULL);
	kw_log(KW_LOG_INFO, "test.event", "hello world", KW_F("a", 1),
	    KW_F("b", "two"), KW_F("c", "x y"));
	after = time(NULL);
	drain(p);
	assert_one_clean_line(p);
	assert_int_equal(regcomp(&re, layout, REG_EXTENDED), 0);
	assert_int_equal(regexec(&re, p->buf, 7, m, 0), 0);
	regfree(&re);
	/* The timestamp is now, in UTC. */
	memset(&tm, 0, sizeof tm);
	tm.tm_year = atoi(p->buf + m[1].rm_so) - 1900;
	tm.tm_mon = atoi(p->buf + m[2].rm_so) - 1;
	tm.tm_mday = atoi(p->buf + m[3].rm_so);
	tm.tm_hour = atoi(p->buf + m[4].rm_so);
	tm.tm_min = atoi(p->buf + m[5].rm_so);
	tm.tm_sec = atoi(p->buf + m[6].rm_so);
	logged = timegm(&tm);
	assert_true(logged >= before - 1 && logged <= after + 1);
}

static void
test_log_fields_in_order(void **state)
{
	struct pipe_state *p = *state;
	const char *keys[] = {" zeta=", " alpha=", " mid=", " omega="};
	const char *prev;

	kw_log(KW_LOG_WARN, "order", "m", KW_F("zeta", 1), KW_F("alpha", 2),
	    KW_F("mid", 3), KW_F("omega", 4));
	drain(p);
	assert_one_clean_line(p);
	assert_non_null(
	    strstr(p->buf, " level=warn event=order msg=m zeta=1 "));
	prev = strstr(p->buf, " msg=");
	assert_non_null(prev);
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		const char *at = strstr(p->buf, keys[i]);

		assert_non_null(at);
		assert_true(at > prev);
		prev = at;
	}
}

static void
test_log_level_names(void **state)
{
	struct pipe_state *p = *state;

	kw_log_set_level(KW_LOG_DEBUG);
	kw_log(KW_LOG_ERR, "e", NULL, );
	drain(p);
	assert_non_null(strstr(p->buf, " level=error event=e\n"));
	kw_log(KW_LOG_WARN, "e", NULL, );
	drain(p);
	assert_non_null(strstr(p->buf, " level=warn event=e\n"));
	kw_log(KW_LOG_DEBUG, "e", NULL, );
	drain(p);
	assert_non_null(strstr(p->buf, " level=debug event=e\n"));
}

static void
test_log_msg_null_omitted(void **state)
{
	struct pipe_state *p = *state;

	kw_log(KW_LOG_INFO, "no.msg", NULL, KW_F("k", "v"));
	drain(p);
	assert_one_clean_line(p);
	assert_null(strstr(p->buf, "msg="));
	assert_non_null(strstr(p->buf, " event=no.msg k=v\n"));
}

static void
test_log_escapes_specials(void **state)
{
	struct pipe_state *p = *state;
	/* quote, backslash, newline, tab, a control byte, DEL, UTF-8. */
	const char v[] = "a\"b\\c\nd\te\x01"
	                 "f\x7fg\xc3\xa9h";
	const char *want = " v=\"a\\\"b\\\\c\\x0ad\\x09e\\x01f\\x7fg"
	                   "\\xc3\\xa9h\"\n";

	kw_log(KW_LOG_INFO, "esc", "m", KW_F("v", v));
	drain(p);
	assert_one_clean_line(p);
	assert_non_null(strstr(p->buf, want));
}

static void
test_log_escapes_msg_and_event(void **state)
{
	struct pipe_state *p = *state;

	kw_log(KW_LOG_INFO, "ev ent\n", "two\nlines", );
	drain(p);
	assert_one_clean_line(p);
	assert_non_null(
	    strstr(p->buf, " event=\"ev ent\\x0a\" msg=\"two\\x0alines\"\n"));
}

static void
test_log_cannot_forge_line(void **state)
{
	struct pipe_state *p = *state;

	kw_log(KW_LOG_INFO, "req", "client said",
	    KW_F("name", "\nlevel=error event=forged"));
	drain(p);
	assert_one_clean_line(p);
	assert_int_equal(count(p->buf, p->len, "\n"), 1);
	assert_int_equal(count(p->buf, p->len, "level="), 2);
	assert_null(strstr(p->buf, " level=error"));
	assert_null(strstr(p->buf, "\nlevel=error"));
	assert_non_null(
	    strstr(p->buf, " name=\"\\x0alevel=error event=forged\"\n"));

	/* With a space instead of a newline the value is quoted as a whole,
	 * so the text inside the quotes is not a field of its own. */
	kw_log(KW_LOG_INFO, "req", "client said",
	    KW_F("other", "x level=error event=forged2"));
	drain(p);
	assert_one_clean_line(p);
	assert_non_null(
	    strstr(p->buf, " other=\"x level=error event=forged2\"\n"));
}

static void
test_log_long_value_cut(void **state)
{
	struct pipe_state *p = *state;
	size_t n = 10000;
	char *v = malloc(n + 1);

	assert_non_null(v);
	memset(v, 'A', n);
	v[n] = '\0';
	kw_log(KW_LOG_INFO, "long", "m", KW_F("v", v), KW_F("after", 7));
	drain(p);
	assert_one_clean_line(p);
	assert_true(p->len <= LINE_LIMIT);
	assert_non_null(strstr(p->buf, "..."));
	/* The value is cut, not dropped. */
	assert_non_null(strstr(p->buf, " v=AAAAAAAAAAAAAAAA"));
	assert_true(count(p->buf, p->len, "A") < n);
	free(v);
}

/*
 * A value whose escapes outgrow the line buffer before VALUE_MAX input
 * bytes (10000 bytes 0x01, 4 output bytes each) is cut visibly: "...",
 * the closing quote, and truncated=1; later fields are dropped.
 */
static void
test_log_long_escaped_value_cut_marked(void **state)
{
	struct pipe_state *p = *state;
	size_t n = 10000;
	char *v = malloc(n + 1);

	assert_non_null(v);
	memset(v, 0x01, n);
	v[n] = '\0';
	kw_log(KW_LOG_INFO, "long", "m", KW_F("v", v), KW_F("after", 7));
	free(v);
	drain(p);
	assert_true(p->len <= LINE_LIMIT);
	assert_int_equal(p->buf[p->len - 1], '\n');
	assert_int_equal(count(p->buf, p->len, "\n"), 1);
	assert_non_null(strstr(p->buf, "...\" truncated=1\n"));
	assert_null(strstr(p->buf, "after="));
}

static void
test_log_integers(void **state)
{
	struct pipe_state *p = *state;
	char want[128];

	kw_log(KW_LOG_INFO, "ints", "m", KW_F("neg", -42), KW_F("zero", 0),
	    KW_F("lmin", (long long)LLONG_MIN), KW_F("umax", ULONG_MAX),
	    KW_F("u", 7u));
	drain(p);
	assert_one_clean_line(p);
	snprintf(want, sizeof want, " neg=-42 zero=0 lmin=%lld umax=%lu u=7\n",
	    (long long)LLONG_MIN, ULONG_MAX);
	assert_non_null(strstr(p->buf, want));
}

static void
test_log_level_filter(void **state)
{
	struct pipe_state *p = *state;

	kw_log_set_level(KW_LOG_INFO);
	kw_log(KW_LOG_DEBUG, "dbg", "hidden", );
	assert_int_equal(drain(p), 0);
	kw_log(KW_LOG_INFO, "inf", "shown", );
	drain(p);
	assert_non_null(strstr(p->buf, " level=info event=inf "));

	kw_log_set_level(KW_LOG_DEBUG);
	kw_log(KW_LOG_DEBUG, "dbg", "shown", );
	drain(p);
	assert_non_null(strstr(p->buf, " level=debug event=dbg "));

	kw_log_set_level(KW_LOG_ERR);
	kw_log(KW_LOG_WARN, "w", "hidden", );
	kw_log(KW_LOG_INFO, "i", "hidden", );
	assert_int_equal(drain(p), 0);
	kw_log(KW_LOG_ERR, "e", "shown", );
	drain(p);
	assert_non_null(strstr(p->buf, " level=error event=e "));
}

static void
test_log_empty_value_quoted(void **state)
{
	struct pipe_state *p = *state;

	kw_log(KW_LOG_INFO, "empty", "m", KW_F("e", ""), KW_F("z", "1"));
	drain(p);
	assert_one_clean_line(p);
	assert_non_null(strstr(p->buf, " e=\"\" z=1\n"));
}

static void
test_log_key_sanitized(void **state)
{
	struct pipe_state *p = *state;

	kw_log(KW_LOG_INFO, "keys", "m", KW_F("Bad Key=\"x\n", "v"),
	    KW_F("ok.k_e-y9", "w"));
	drain(p);
	assert_one_clean_line(p);
	assert_non_null(strstr(p->buf, " _ad__ey__x_=v ok.k_e-y9=w\n"));
}

static void
test_log_preserves_errno(void **state)
{
	struct pipe_state *p = *state;
	int devnull;

	errno = ENOSPC;
	kw_log(KW_LOG_INFO, "errno", "m", KW_F("k", "v"));
	assert_int_equal(errno, ENOSPC);
	drain(p);
	assert_true(p->len > 0);

	/* A failing write sets errno to EBADF inside kw_log. */
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	assert_true(devnull >= 0);
	close(devnull);
	kw_log_set_fd(devnull);
	errno = ERANGE;
	kw_log(KW_LOG_INFO, "errno", "m", KW_F("k", "v"));
	assert_int_equal(errno, ERANGE);

	/* A dropped line too. */
	errno = EDOM;
	kw_log(KW_LOG_DEBUG, "errno", "m", );
	assert_int_equal(errno, EDOM);
	kw_log_set_fd(p->wr);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_log_line_layout),
	    T(test_log_fields_in_order),
	    T(test_log_level_names),
	    T(test_log_msg_null_omitted),
	    T(test_log_escapes_specials),
	    T(test_log_escapes_msg_and_event),
	    T(test_log_cannot_forge_line),
	    T(test_log_long_value_cut),
	    T(test_log_long_escaped_value_cut_marked),
	    T(test_log_integers),
	    T(test_log_level_filter),
	    T(test_log_empty_value_quoted),
	    T(test_log_key_sanitized),
	    T(test_log_preserves_errno),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

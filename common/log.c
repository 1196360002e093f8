/*
 * log.c: logfmt lines, one write(2) each so that lines from several
 * threads or processes sharing stderr never interleave.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_ 2048
#define VALUE_MAX 512

static _Atomic int log_level = KW_LOG_INFO;
static _Atomic int log_fd = STDERR_FILENO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void
kw_log_set_level(enum kw_log_level level)
{
	atomic_store(&log_level, (int)level);
}

void
kw_log_set_fd(int fd)
{
	atomic_store(&log_fd, fd);
}

struct line {
	char buf[LINE_MAX_];
	size_t len;
	bool cut;
};

/*
 * Room kept at the end of the buffer for the marks of a cut line: `..."`
 * closing the value that was cut, ` truncated=1` and the newline.
 */
#define RESERVE 24

/* Append whole or not at all; once a line is cut, nothing more fits. */
static void
put(struct line *l, const char *s, size_t n)
{
	if (l->cut || l->len + n > sizeof l->buf - RESERVE) {
		l->cut = true;
		return;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

/* Append into the reserve (the marks of a cut line). */
static void
put_mark(struct line *l, const char *s)
{
	size_t n = strlen(s);

	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void
puts_(struct line *l, const char *s)
{
	put(l, s, strlen(s));
}

static bool
needs_quotes(const char *s)
{
	if (*s == '\0')
		return true;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f)
			return true;
	}
	return false;
}

/*
 * Values are escaped so that a client-chosen string cannot forge a field
 * or a line: control bytes, quotes, backslashes and non-ASCII become
 * escapes, and long values are cut.
 */
static void
put_value(struct line *l, const char *s)
{
	bool q;
	size_t n = 0;

	if (s == NULL)
		s = "(null)";
	q = needs_quotes(s);
	if (q)
		put(l, "\"", 1);
	for (; *s && n < VALUE_MAX && !l->cut; s++, n++) {
		unsigned char c = (unsigned char)*s;
		char esc[8];

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(l, esc, 2);
		} else if (c < 0x20 || c >= 0x7f) {
			snprintf(esc, sizeof esc, "\\x%02x", c);
			put(l, esc, 4);
		} else {
			put(l, (const char *)&c, 1);
		}
	}
	if (l->cut) {
		/* Close the value so that the line still parses. */
		put_mark(l, q ? "...\"" : "...");
		return;
	}
	if (*s)
		put(l, "...", 3);
	if (q)
		put(l, "\"", 1);
}

static void
put_key(struct line *l, const char *k)
{
	put(l, " ", 1);
	/* Keys are program constants, but keep them well-formed anyway. */
	for (; *k; k++) {
		char c = *k;

		if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '_' || c == '.' || c == '-')
			put(l, &c, 1);
		else
			put(l, "_", 1);
	}
	put(l, "=", 1);
}

void
kw_log_fields(enum kw_log_level level, const char *event, const char *msg,
    const struct kw_log_field *fields, size_t nfields)
{
	struct line l = {.len = 0, .cut = false};
	struct timespec ts;
	struct tm tm;
	char tbuf[64], num[32];
	int saved = errno;

	if ((int)level > atomic_load(&log_level))
		return;
	if ((unsigned)level > KW_LOG_DEBUG)
		level = KW_LOG_ERR;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(tbuf, sizeof tbuf, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	    tm.tm_sec, ts.tv_nsec / 1000000);
	puts_(&l, tbuf);
	put_key(&l, "level");
	puts_(&l, level_names[level]);
	put_key(&l, "event");
	put_value(&l, event);
	if (msg != NULL) {
		put_key(&l, "msg");
		put_value(&l, msg);
	}
	for (size_t i = 0; i < nfields; i++) {
		const struct kw_log_field *f = &fields[i];

		put_key(&l, f->key);
		switch (f->type) {
		case KW_LF_STR:
			put_value(&l, f->v.s);
			break;
		case KW_LF_INT:
			snprintf(num, sizeof num, "%lld", f->v.i);
			puts_(&l, num);
			break;
		case KW_LF_UINT:
			snprintf(num, sizeof num, "%llu", f->v.u);
			puts_(&l, num);
			break;
		}
	}
	if (l.cut)
		put_mark(&l, " truncated=1");
	l.buf[l.len++] = '\n';
	/* One write per line; a short write to a pipe of <= PIPE_BUF bytes
	 * cannot happen, and a failed log write has nowhere to be reported. */
	while (write(atomic_load(&log_fd), l.buf, l.len) < 0 && errno == EINTR)
		;
	errno = saved;
}

/*
 * log.h: one structured line per event, logfmt on stderr (journald keeps
 * each line as one entry):
 *
 *   ts=2026-11-22T05:12:04.123Z level=warn event=p11.reconnect msg="..."
 *
 * Fields are typed by _Generic: strings (char *) and integers only. Secret
 * bytes are unsigned char and struct kw_secret is opaque, so passing either
 * to a log field fails to compile (tests/compile_fail checks that).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KW_LOG_H
#define KW_LOG_H

#include <stddef.h>

enum kw_log_level {
	KW_LOG_ERR = 0,
	KW_LOG_WARN,
	KW_LOG_INFO,
	KW_LOG_DEBUG,
};

enum kw_log_type { KW_LF_STR, KW_LF_INT, KW_LF_UINT };

struct kw_log_field {
	const char *key;
	enum kw_log_type type;
	union {
		const char *s;
		long long i;
		unsigned long long u;
	} v;
};

static inline struct kw_log_field
kw_lf_str(const char *key, const char *v)
{
	return (struct kw_log_field){key, KW_LF_STR, {.s = v}};
}

static inline struct kw_log_field
kw_lf_int(const char *key, long long v)
{
	return (struct kw_log_field){key, KW_LF_INT, {.i = v}};
}

static inline struct kw_log_field
kw_lf_uint(const char *key, unsigned long long v)
{
	return (struct kw_log_field){key, KW_LF_UINT, {.u = v}};
}

/* KW_F("key", value): a field; no association for secret types. */
#define KW_F(k, val) \
	_Generic((val),                                                        \
	    char *: kw_lf_str,                                                 \
	    const char *: kw_lf_str,                                           \
	    int: kw_lf_int,                                                    \
	    long: kw_lf_int,                                                   \
	    long long: kw_lf_int,                                              \
	    unsigned: kw_lf_uint,                                              \
	    unsigned long: kw_lf_uint,                                         \
	    unsigned long long: kw_lf_uint)((k), (val))

void kw_log_fields(enum kw_log_level level, const char *event, const char *msg,
    const struct kw_log_field *fields, size_t nfields);

/* kw_log(level, "event.name", "human message", KW_F(...), ...) */
#define kw_log(level, event, msg, ...)                                 \
	do {                                                           \
		const struct kw_log_field kw_f_[] = {{NULL, KW_LF_INT, \
		                                         {.i = 0}},    \
		    __VA_ARGS__};                                      \
		kw_log_fields((level), (event), (msg), kw_f_ + 1,      \
		    sizeof kw_f_ / sizeof kw_f_[0] - 1);               \
	} while (0)

/* Lines above level are dropped (default KW_LOG_INFO). */
void kw_log_set_level(enum kw_log_level level);
/* Write to fd instead of stderr (tests). */
void kw_log_set_fd(int fd);

#endif /* KW_LOG_H */

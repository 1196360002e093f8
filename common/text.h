/*
 * text.h: one-line error messages, and text from untrusted input made fit
 * to appear in one.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KW_TEXT_H
#define KW_TEXT_H

#include <stddef.h>

/*
 * kw_errorf: format into err (when err is not NULL and errlen > 0) and
 * return code, so that a parser can `return kw_errorf(KW_ERR_CONFIG, ...)`.
 */
__attribute__((format(printf, 4, 5))) int kw_errorf(int code, char *err,
    size_t errlen, const char *fmt, ...);

/*
 * kw_defang: at most max bytes of s, any byte outside printable ASCII
 * shown as '?', then "..." if s was longer. buf holds max + 4 bytes. For
 * keys, values and globs quoted in errors, reasons and logs.
 */
const char *kw_defang(const char *s, size_t max, char *buf);

#endif /* KW_TEXT_H */

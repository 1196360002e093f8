/*
 * text.c: see text.h.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "text.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int
kw_errorf(int code, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

const char *
kw_defang(const char *s, size_t max, char *buf)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i < max; i++)
		buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (s[i] != '\0') {
		memcpy(buf + i, "...", 3);
		i += 3;
	}
	buf[i] = '\0';
	return buf;
}

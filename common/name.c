/*
 * name.c: canonical names.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "name.h"

#include <string.h>

static bool
name_char(unsigned char c, bool first)
{
	if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
		return true;
	return !first && (c == '.' || c == '_' || c == '-');
}

bool
kw_name_valid_n(const char *s, size_t len)
{
	if (len == 0 || len > KW_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!name_char((unsigned char)s[i], i == 0))
			return false;
	/* ".." could read as a path step wherever a name ends up in one. */
	return memmem(s, len, "..", 2) == NULL;
}

bool
kw_name_valid(const char *s)
{
	return s != NULL && kw_name_valid_n(s, strnlen(s, KW_NAME_MAX + 1));
}

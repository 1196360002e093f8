/*
 * name.h: the canonical form of names (key names, for now).
 *
 * A name is 1 to 63 bytes of [a-z0-9._-], starting with [a-z0-9]:
 * ^[a-z0-9][a-z0-9._-]{0,62}$. No upper case (no case-variant twins), no
 * slash (labels use it as separator), no "..".
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KW_NAME_H
#define KW_NAME_H

#include <stdbool.h>
#include <stddef.h>

#define KW_NAME_MAX 63

bool kw_name_valid(const char *s);
/* kw_name_valid_n: the same over s[0..len), which must hold no NUL. */
bool kw_name_valid_n(const char *s, size_t len);

#endif /* KW_NAME_H */

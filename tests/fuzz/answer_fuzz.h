/*
 * answer_fuzz.h: what the fuzz targets of libkeyward's answer parsers
 * (fuzz_datakey_answer.c, fuzz_token_answer.c) share: the invariant
 * check, the library's start, and a substring count. Define FUZZ_NAME
 * (the target's name, for the abort message) before including it.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KW_TEST_ANSWER_FUZZ_H
#define KW_TEST_ANSWER_FUZZ_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "keyward.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, FUZZ_NAME ": invariant violated: %s\n", what);
		abort();
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	check(kw_client_secure_init() == KW_OK, "the library's locked memory");
	return 0;
}

/* count: occurrences of needle (not empty) in s, overlapping ones too. */
static size_t
count(const char *s, const char *needle)
{
	size_t n = 0;

	for (const char *p = strstr(s, needle); p != NULL;
	     p = strstr(p + 1, needle))
		n++;
	return n;
}

#endif /* KW_TEST_ANSWER_FUZZ_H */

/*
 * fuzz_token_answer.c: libFuzzer target for kw_token_parse_answer()
 * (client/token.c), libkeyward's parser of keywardd's answer to
 * POST /v1/tokens, which carries a token (a credential).
 *
 * The input is the answer body as received, at most KW_SECURE_ANSWER_MAX
 * bytes as the client caps it, given to the parser in a heap buffer of
 * its exact length plus the terminating NUL rather than in locked memory
 * (which is a pool ASan does not see into), so that ASan catches any
 * access beyond it.
 *
 * Checked for an accepted answer: the token is a compact JWS (1 to 8192
 * bytes of base64url and exactly two dots), equal to the "token" member
 * of the answer's top-level object (the member the parser blanks must be
 * the one it reads), overwritten in the buffer (one occurrence fewer);
 * token_type is Bearer and the expiry the answer's expires_at, above 0.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_NAME "fuzz_token_answer"
#include "answer_fuzz.h"

#define TOKEN_MAX 8192

static bool
compact_jws(const char *t)
{
	size_t len = strlen(t), dots = 0;

	if (len == 0 || len > TOKEN_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = t[i];

		if (ch == '.')
			dots++;
		else if (!((ch >= 'a' && ch <= 'z') ||
		             (ch >= 'A' && ch <= 'Z') ||
		             (ch >= '0' && ch <= '9') || ch == '-' ||
		             ch == '_'))
			return false;
	}
	return dots == 2;
}

static void
check_accepted(const char *token, unsigned long long exp, const char *orig,
    size_t len, const char *buf)
{
	json_t *root = json_loadb(orig, len, JSON_REJECT_DUPLICATES, NULL);
	const char *t = json_string_value(json_object_get(root, "token"));
	const char *type =
	    json_string_value(json_object_get(root, "token_type"));
	json_t *e = json_object_get(root, "expires_at");

	check(compact_jws(token), "the token is a compact JWS");
	check(t != NULL && strcmp(t, token) == 0,
	    "the token is the top-level token member of the answer");
	check(count(orig, token) == count(buf, token) + 1,
	    "the token is overwritten in the answer");
	check(type != NULL && strcmp(type, "Bearer") == 0, "a Bearer token");
	check(json_is_integer(e) && json_integer_value(e) > 0 &&
	        (unsigned long long)json_integer_value(e) == exp,
	    "the answer's expires_at");
	json_decref(root);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = NULL, *orig = NULL, *token = NULL;
	unsigned long long exp = 0;
	int rc;

	if (size > KW_SECURE_ANSWER_MAX)
		return 0;
	/* As kw_call() gives it: size bytes and a NUL. */
	buf = malloc(size + 1);
	orig = malloc(size + 1);
	if (buf == NULL || orig == NULL)
		goto out;
	memcpy(buf, data, size);
	buf[size] = '\0';
	memcpy(orig, buf, size + 1);

	rc = kw_token_parse_answer(NULL, buf, size, &token, &exp);
	check(rc == KW_OK || rc == KW_ERR_PROTOCOL || rc == KW_ERR_NOMEM,
	    "a documented result");
	check(rc == KW_OK || token == NULL, "nothing returned on failure");
	if (rc == KW_OK)
		check_accepted(token, exp, orig, size, buf);
out:
	kw_token_free(token);
	free(buf);
	free(orig);
	return 0;
}

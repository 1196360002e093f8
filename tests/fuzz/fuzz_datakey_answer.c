/*
 * fuzz_datakey_answer.c: libFuzzer target for kw_datakey_parse_answer()
 * (client/datakey.c), libkeyward's parser of keywardd's answers to
 * datakey and decrypt, which carry a DEK.
 *
 * The input is three parts, each of the first two ended by a newline:
 *
 *   KEY NAME \n WRAPPED \n ANSWER
 *
 * KEY NAME is the key the call was for (inputs with a name the API
 * refuses are skipped, as kw_datakey_generate() refuses them before
 * sending); WRAPPED empty means datakey, otherwise decrypt of WRAPPED;
 * ANSWER is the answer body as received, at most KW_SECURE_ANSWER_MAX
 * bytes as the client caps it. The answer is given to the parser in a
 * heap buffer of its exact length plus the terminating NUL rather than
 * in locked memory (which is a pool ASan does not see into), so that
 * ASan catches any access beyond it.
 *
 * Checked for an accepted answer: a 32-byte DEK, equal to the base64
 * decoding of the "plaintext" member of the answer's top-level object
 * (the member the parser blanks must be the one it reads); that base64
 * overwritten in the buffer (one occurrence fewer); the key name of the
 * call; the wrapped key of the call for decrypt, the answer's for
 * datakey.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <jansson.h>
#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_NAME "fuzz_datakey_answer"
#include "answer_fuzz.h"

#define DEK_LEN 32

static void
check_accepted(const kw_datakey *dk, const char *name, const char *wrapped,
    const char *orig, size_t len, const char *buf)
{
	json_t *root = json_loadb(orig, len, JSON_REJECT_DUPLICATES, NULL);
	const char *p = json_string_value(json_object_get(root, "plaintext"));
	const char *w = json_string_value(json_object_get(root, "wrapped"));
	unsigned char want[DEK_LEN];
	char b64[sodium_base64_ENCODED_LEN(DEK_LEN,
	    sodium_base64_VARIANT_ORIGINAL)];
	const unsigned char *dek;
	size_t n = 0;

	dek = kw_datakey_plaintext(dk, &n);
	check(dek != NULL && n == DEK_LEN, "a 32-byte DEK");
	check(p != NULL &&
	        sodium_base642bin(want, sizeof want, p, strlen(p), NULL, &n,
	            NULL, sodium_base64_VARIANT_ORIGINAL) == 0 &&
	        n == DEK_LEN && memcmp(want, dek, DEK_LEN) == 0,
	    "the DEK is the top-level plaintext member of the answer");
	sodium_bin2base64(b64, sizeof b64, dek, DEK_LEN,
	    sodium_base64_VARIANT_ORIGINAL);
	check(count(orig, b64) == count(buf, b64) + 1,
	    "the DEK's base64 is overwritten in the answer");
	check(strcmp(kw_datakey_key_name(dk), name) == 0, "the call's key");
	if (wrapped != NULL)
		check(strcmp(kw_datakey_wrapped(dk), wrapped) == 0,
		    "decrypt: the call's wrapped key");
	else
		check(w != NULL && strcmp(kw_datakey_wrapped(dk), w) == 0,
		    "datakey: the answer's wrapped key");
	sodium_memzero(want, sizeof want);
	json_decref(root);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl1, *nl2, *ans;
	char name[80], *wrapped = NULL, *buf = NULL, *orig = NULL;
	kw_datakey *dk = NULL;
	size_t len;
	int rc;

	nl1 = memchr(data, '\n', size);
	if (nl1 == NULL || (size_t)(nl1 - data) >= sizeof name)
		return 0;
	nl2 = memchr(nl1 + 1, '\n', size - (size_t)(nl1 + 1 - data));
	if (nl2 == NULL)
		return 0;
	ans = nl2 + 1;
	len = size - (size_t)(ans - data);
	if (len > KW_SECURE_ANSWER_MAX)
		return 0;
	memcpy(name, data, (size_t)(nl1 - data));
	name[nl1 - data] = '\0';
	if (!kw_key_name_ok(NULL, name))
		return 0;
	if (nl2 > nl1 + 1) {
		wrapped =
		    strndup((const char *)nl1 + 1, (size_t)(nl2 - nl1 - 1));
		if (wrapped == NULL)
			return 0;
	}
	/* As kw_call() gives it: len bytes and a NUL. */
	buf = malloc(len + 1);
	orig = malloc(len + 1);
	if (buf == NULL || orig == NULL)
		goto out;
	memcpy(buf, ans, len);
	buf[len] = '\0';
	memcpy(orig, buf, len + 1);

	rc = kw_datakey_parse_answer(NULL, name, wrapped, buf, len, &dk);
	check(rc == KW_OK || rc == KW_ERR_PROTOCOL || rc == KW_ERR_NOMEM,
	    "a documented result");
	check(rc == KW_OK || dk == NULL, "nothing returned on failure");
	if (rc == KW_OK)
		check_accepted(dk, name, wrapped, orig, len, buf);
out:
	kw_datakey_free(dk);
	free(wrapped);
	free(buf);
	free(orig);
	return 0;
}

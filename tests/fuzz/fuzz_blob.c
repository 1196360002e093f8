/*
 * fuzz_blob.c: libFuzzer target for kwd_blob_parse(), the parser of
 * wrapped DEKs that clients send back. A parsed blob must re-encode to
 * exactly the input bytes (there is one encoding of a blob).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *copy = malloc(size ? size : 1), out[KWD_BLOB_MAX];
	unsigned char aad[1024];
	struct kwd_ctx_pair ctx[] = {{"dataset", "x"}};
	struct kwd_blob b;
	size_t len, alen;

	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	if (kwd_blob_parse(copy, size, &b) == KW_OK) {
		if (kwd_blob_encode(&b, out, sizeof out, &len) != KW_OK ||
		    len != size || memcmp(out, copy, size) != 0) {
			fprintf(stderr, "fuzz_blob: parse/encode mismatch\n");
			abort();
		}
		if (kwd_blob_aad(&b, ctx, 1, aad, sizeof aad, &alen) != KW_OK ||
		    memcmp(aad, copy, alen - (2 + 7 + 2 + 1)) != 0) {
			fprintf(stderr, "fuzz_blob: AAD header mismatch\n");
			abort();
		}
	}
	free(copy);
	return 0;
}

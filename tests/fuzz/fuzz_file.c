/*
 * fuzz_file.c: libFuzzer target for the encrypted file format
 * (client/kwfile.c): kwf_header_parse() over the input and, when it
 * parses, a reader over a memfd holding the whole input, opened with a
 * fixed DEK, that reads a few ranges and decrypts the whole file to
 * /dev/null.
 *
 * The seeds in corpus/file/ are files encrypted under the same fixed DEK
 * (kwf_encrypt_fd, chunk size 4096), whole, cut short, extended and
 * edited, so that the fuzzer starts past the header MAC and reaches the
 * chunk code. A parsed header must hold the format's guarantees; the
 * header read back from the memfd must be the same one; a reader opens
 * only on a file of exactly the length its header implies, and a range
 * read returns exactly the bytes asked for that exist. A violation
 * aborts, which the fuzzer reports as a crash.
 *
 * Built with -fsanitize=fuzzer (KW_FUZZ=ON) or with tests/fuzz/replay.c
 * (any compiler) to replay the corpus.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kwfile.h"
#include "name.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The DEK of every seed: bytes 1 to 32. */
static uint8_t dek[KWF_DEK_LEN];
static int memfd = -1;
static int devnull = -1;

static void
check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_file: invariant violated: %s\n", what);
		abort();
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	for (size_t i = 0; i < sizeof dek; i++)
		dek[i] = (uint8_t)(i + 1);
	memfd = memfd_create("fuzz_file", MFD_CLOEXEC);
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	check(memfd >= 0 && devnull >= 0, "memfd and /dev/null");
	return 0;
}

static void
check_header(const struct kwf_header *h, size_t size)
{
	const struct kw_context_pair *ctx;
	uint32_t c = kwf_header_chunk_size(h);
	size_t n;

	check(kwf_header_len(h) <= size && kwf_header_len(h) <= KWF_HEADER_MAX,
	    "header length within the input and the cap");
	check(kw_name_valid(kwf_header_key_name(h)), "canonical key name");
	check(kwf_header_key_version(h) >= 1, "key version >= 1");
	n = strlen(kwf_header_wrapped(h));
	check(n > 0 && n <= KWF_WRAPPED_MAX && n % 4 == 0, "wrapped length");
	check(c >= KWF_CHUNK_MIN && c <= KWF_CHUNK_MAX && (c & (c - 1)) == 0,
	    "chunk size");
	check(kwf_header_file_len(h) >=
	            kwf_header_len(h) + 16 + kwf_header_plaintext_len(h) &&
	        kwf_header_file_len(h) <= (uint64_t)INT64_MAX,
	    "file length");
	n = kwf_header_context(h, &ctx);
	check(n <= KWF_CTX_MAX, "at most 32 pairs");
	for (size_t i = 0; i < n; i++) {
		check(strlen(ctx[i].key) >= 1 &&
		        strlen(ctx[i].key) <= KWF_CTX_KEY_MAX &&
		        strlen(ctx[i].value) <= KWF_CTX_VALUE_MAX,
		    "pair lengths");
		check(i == 0 || strcmp(ctx[i - 1].key, ctx[i].key) < 0,
		    "pairs strictly sorted");
	}
}

/* Reads [off, off+len) and checks the length that came back. */
static void
read_range(struct kwf_reader *r, uint8_t *buf, size_t cap, uint64_t off,
    size_t len)
{
	uint64_t size = kwf_reader_size(r);
	size_t n = (size_t)-1;
	int rv;

	if (len > cap)
		len = cap;
	rv = kwf_reader_pread(r, buf, len, off, &n);
	check(rv == KW_OK || rv == KW_ERR_AUTH, "pread outcome");
	if (rv == KW_OK)
		check(n ==
		        (off >= size               ? 0
		                : size - off < len ? (size_t)(size - off)
		                                   : len),
		    "pread length");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kwf_header *h = NULL, *h2 = NULL;
	struct kwf_reader *r = NULL;
	uint8_t *buf = NULL;
	size_t need = 0;
	uint64_t plen;
	int rv;

	rv = kwf_header_parse(data, size, &h, &need);
	check(rv == KW_OK || rv == KW_ERR_FORMAT || rv == KW_ERR_INVALID ||
	        rv == KW_ERR_TOO_LARGE,
	    "parse outcome");
	if (rv != KW_OK) {
		check(need == 0 || (need > size && need <= KWF_HEADER_MAX),
		    "need");
		return 0;
	}
	check_header(h, size);

	check(ftruncate(memfd, 0) == 0, "ftruncate");
	check(size == 0 || pwrite(memfd, data, size, 0) == (ssize_t)size,
	    "pwrite");
	check(kwf_header_read_fd(memfd, &h2) == KW_OK &&
	        kwf_header_len(h2) == kwf_header_len(h) &&
	        kwf_header_plaintext_len(h2) == kwf_header_plaintext_len(h),
	    "the same header from the fd");
	kwf_header_free(h2);

	rv = kwf_reader_open(memfd, h, dek, &r);
	check(rv == KW_OK || rv == KW_ERR_AUTH, "open outcome");
	if (rv != KW_OK)
		goto out;
	check(kwf_header_file_len(h) == size, "open only at the exact length");
	plen = kwf_reader_size(r);
	buf = malloc(size + 1);
	check(buf != NULL, "malloc");
	read_range(r, buf, size + 1, 0, size + 1);
	read_range(r, buf, size + 1, plen / 2, 100);
	read_range(r, buf, size + 1, plen > 0 ? plen - 1 : 0, 10);
	read_range(r, buf, size + 1,
	    kwf_header_chunk_size(h) - (plen > 1 ? 1 : 0), 2);
	read_range(r, buf, size + 1, plen, 1);
	rv = kwf_reader_decrypt_fd(r, devnull, 0, UINT64_MAX,
	    (unsigned)(size % 2) + 1, NULL, NULL);
	check(rv == KW_OK || rv == KW_ERR_AUTH, "decrypt_fd outcome");
out:
	free(buf);
	kwf_reader_free(r);
	kwf_header_free(h);
	return 0;
}

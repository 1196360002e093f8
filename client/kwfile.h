/*
 * kwfile.h: the encrypted file format (docs/FILE-FORMAT.md), without any
 * network: header build and parse, parallel encryption, and a
 * random-access reader. The client (file.c) obtains and unwraps the DEK;
 * everything here takes the DEK as bytes.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWFILE_H
#define KWFILE_H

#include <stddef.h>
#include <stdint.h>

#include "keyward.h"

#define KWF_DEK_LEN 32
#define KWF_CHUNK_DEFAULT (1u << 20)
#define KWF_CHUNK_MIN 4096u
#define KWF_CHUNK_MAX (64u << 20)
/* A header never exceeds this; a parser refuses more before allocating. */
#define KWF_HEADER_MAX 16384u
/* Limits of the header's fields (docs/FILE-FORMAT.md). */
#define KWF_SALT_LEN 32
#define KWF_WRAPPED_MAX 1024u /* characters of base64 */
#define KWF_CTX_MAX 32u /* pairs */
#define KWF_CTX_KEY_MAX 64u /* bytes */
#define KWF_CTX_VALUE_MAX 256u /* bytes */

/* What the encryptor writes into a header (all copied). */
struct kwf_meta {
	const char *key_name; /* canonical key name */
	uint32_t key_version;
	const char *wrapped; /* the wrapped DEK, base64 as the server gave it */
	const struct kw_context_pair *ctx;
	size_t nctx;
	uint32_t chunk_size; /* 0: KWF_CHUNK_DEFAULT */
};

/* A parsed, not yet authenticated header. */
struct kwf_header;

/*
 * kwf_header_parse: parses a header from the start of buf. KW_ERR_FORMAT:
 * bad magic or unknown version; KW_ERR_INVALID: malformed; KW_ERR_TOO_LARGE:
 * over a limit. If buf holds less than the header, *ret_need (when not NULL)
 * is set to the length needed and KW_ERR_INVALID is returned.
 */
int kwf_header_parse(const uint8_t *buf, size_t len, struct kwf_header **ret_h,
    size_t *ret_need) __attribute__((warn_unused_result));
/* kwf_header_read_fd: reads and parses the header at offset 0 of fd. */
int kwf_header_read_fd(int fd, struct kwf_header **ret_h)
    __attribute__((warn_unused_result));
void kwf_header_free(struct kwf_header *h);

const char *kwf_header_key_name(const struct kwf_header *h);
uint32_t kwf_header_key_version(const struct kwf_header *h);
const char *kwf_header_wrapped(const struct kwf_header *h);
size_t kwf_header_context(const struct kwf_header *h,
    const struct kw_context_pair **ret_ctx);
uint32_t kwf_header_chunk_size(const struct kwf_header *h);
uint64_t kwf_header_plaintext_len(const struct kwf_header *h);
size_t kwf_header_len(const struct kwf_header *h);
/* The exact length of the encrypted file h describes. */
uint64_t kwf_header_file_len(const struct kwf_header *h);

/*
 * kwf_encrypt_fd: encrypts the regular file in_fd (whole) into out_fd
 * (written from offset 0 with pwrite; the caller makes it a temporary file
 * and renames it) under dek, with threads workers (0: online CPUs).
 * progress is called from the calling thread only. On KW_ERR_IO, errno is
 * the error of the read or write that failed, or 0 when in_fd changed
 * size while it was read.
 */
int kwf_encrypt_fd(int in_fd, int out_fd, const struct kwf_meta *m,
    const uint8_t dek[KWF_DEK_LEN], unsigned threads, kw_progress_fn progress,
    void *progress_arg) __attribute__((warn_unused_result));

struct kwf_reader;

/*
 * kwf_reader_open: authenticates h (read from fd) under dek and checks the
 * file's length against it (KW_ERR_AUTH when either fails). fd stays the
 * caller's and must stay open until kwf_reader_free().
 */
int kwf_reader_open(int fd, const struct kwf_header *h,
    const uint8_t dek[KWF_DEK_LEN], struct kwf_reader **ret_r)
    __attribute__((warn_unused_result));
/* Thread-safe. Decrypts only the chunks [off, off+len) touches. */
int kwf_reader_pread(struct kwf_reader *r, void *buf, size_t len, uint64_t off,
    size_t *ret_n) __attribute__((warn_unused_result));
/*
 * kwf_reader_decrypt_fd: writes plaintext [off, off+len) (clamped to the
 * end) to out_fd in order (a pipe is fine), chunks decrypted by threads
 * workers (0: online CPUs). Only authenticated chunks are written; on a
 * failure, chunks before the failed one may have been. progress is called
 * from the calling thread only. On KW_ERR_IO, errno is the error of the
 * write to out_fd that failed, or 0 when reading the encrypted file failed.
 */
int kwf_reader_decrypt_fd(struct kwf_reader *r, int out_fd, uint64_t off,
    uint64_t len, unsigned threads, kw_progress_fn progress, void *progress_arg)
    __attribute__((warn_unused_result));
uint64_t kwf_reader_size(const struct kwf_reader *r);
/* Chunks decrypted so far (tests and benchmarks count them). */
uint64_t kwf_reader_chunks_decrypted(const struct kwf_reader *r);
void kwf_reader_free(struct kwf_reader *r);

/*
 * For tests, the fuzz corpus and benchmarks only: files that kwf_encrypt_fd
 * cannot make (a chosen salt, a 5 GiB plaintext of which two chunks are
 * written, a chunk with the wrong last flag). Not for the client.
 *
 * kwf_test_header_build: the header kwf_encrypt_fd would write for m, dek,
 * salt and a plaintext of plaintext_len bytes, into buf (KWF_HEADER_MAX
 * bytes always suffice).
 */
int kwf_test_header_build(const struct kwf_meta *m,
    const uint8_t dek[KWF_DEK_LEN], const uint8_t salt[KWF_SALT_LEN],
    uint64_t plaintext_len, uint8_t *buf, size_t cap, size_t *ret_len)
    __attribute__((warn_unused_result));
/*
 * kwf_test_chunk_seal: chunk index of the file h describes, sealed under
 * dek with the last-chunk flag given: len ciphertext bytes then the 16-byte
 * tag into out (len + 16 bytes).
 */
int kwf_test_chunk_seal(const struct kwf_header *h,
    const uint8_t dek[KWF_DEK_LEN], uint64_t index, int last, const uint8_t *in,
    size_t len, uint8_t *out) __attribute__((warn_unused_result));

#endif /* KWFILE_H */

/*
 * blob.h: the wrapped DEK, a versioned self-describing blob, and the
 * canonical encryption context.
 *
 * Blob, format 1 (integers big-endian; docs/FORMATS.md):
 *
 *   off    len  field
 *   0      4    magic "KWDK"
 *   4      1    format, 1
 *   5      1    alg: 1 = AES-256-GCM inside the HSM, 96-bit nonce,
 *               128-bit tag
 *   6      1    n, length of the key name (1..63)
 *   7      n    key name (canonical, kw_name_valid)
 *   7+n    4    key version (>= 1)
 *   11+n   12   nonce
 *   23+n   2    m, length of ciphertext || tag (48 for a 32-byte DEK)
 *   25+n   m    ciphertext || tag
 *
 * Nothing may follow. The header (bytes 0 .. 11+n) is part of the AAD, so
 * a blob cannot be moved to another key name, version or algorithm.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWD_BLOB_H
#define KWD_BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "keyward.h"
#include "policy.h"

#define KWD_BLOB_MAX 256
#define KWD_CTX_MAX_PAIRS 32

struct kwd_blob {
	uint8_t alg; /* 1: AES-256-GCM in the HSM */
	char key[64];
	uint32_t version;
	unsigned char nonce[12];
	const unsigned char *ct; /* ciphertext || tag, into the parsed buffer */
	size_t ctlen;
};

KW_WUR int kwd_blob_parse(const unsigned char *buf, size_t len,
    struct kwd_blob *ret_blob);
KW_WUR int kwd_blob_encode(const struct kwd_blob *b, unsigned char *buf,
    size_t cap, size_t *ret_len);

/*
 * kwd_blob_aad: the AAD that binds a wrap to its key, version and
 * context: the blob header (magic, format, alg, key name, version) then
 * the canonical context: pairs sorted by key (bytewise), each as u16 key
 * length, key, u16 value length, value. Duplicate keys are KW_ERR_INVALID.
 */
KW_WUR int kwd_blob_aad(const struct kwd_blob *b,
    const struct kwd_ctx_pair *ctx, size_t nctx, unsigned char *buf, size_t cap,
    size_t *ret_len);

#endif /* KWD_BLOB_H */

/*
 * blob.c: the wrapped-DEK blob and the canonical encryption context.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "blob.h"

#include <stdlib.h>
#include <string.h>

#include "name.h"

static const unsigned char magic[4] = {'K', 'W', 'D', 'K'};

#define FORMAT 1
#define ALG_AES256GCM_HSM 1
#define DEK_CT_LEN (32 + 16)

static void
put_u16(unsigned char *p, size_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static void
put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t
get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

/* The header: everything up to the nonce. */
static size_t
header_len(size_t namelen)
{
	return 4 + 1 + 1 + 1 + namelen + 4;
}

int
kwd_blob_parse(const unsigned char *buf, size_t len, struct kwd_blob *ret_blob)
{
	struct kwd_blob b;
	size_t n, m, off;

	if (len < 7 || len > KWD_BLOB_MAX)
		return KW_ERR_INVALID;
	if (memcmp(buf, magic, sizeof magic) != 0 || buf[4] != FORMAT ||
	    buf[5] != ALG_AES256GCM_HSM)
		return KW_ERR_INVALID;
	n = buf[6];
	if (n == 0 || n > 63 || len < header_len(n) + 12 + 2)
		return KW_ERR_INVALID;
	if (!kw_name_valid_n((const char *)buf + 7, n))
		return KW_ERR_INVALID;
	memset(&b, 0, sizeof b);
	b.alg = buf[5];
	memcpy(b.key, buf + 7, n);
	b.key[n] = '\0';
	off = 7 + n;
	b.version = get_u32(buf + off);
	if (b.version == 0)
		return KW_ERR_INVALID;
	off += 4;
	memcpy(b.nonce, buf + off, sizeof b.nonce);
	off += sizeof b.nonce;
	m = (size_t)buf[off] << 8 | buf[off + 1];
	off += 2;
	/* Exactly one DEK's ciphertext and tag, and nothing after it. */
	if (m != DEK_CT_LEN || len != off + m)
		return KW_ERR_INVALID;
	b.ct = buf + off;
	b.ctlen = m;
	*ret_blob = b;
	return KW_OK;
}

int
kwd_blob_encode(const struct kwd_blob *b, unsigned char *buf, size_t cap,
    size_t *ret_len)
{
	size_t n = strlen(b->key), off, total;

	if (b->alg != ALG_AES256GCM_HSM || !kw_name_valid(b->key) ||
	    b->version == 0 || b->ctlen != DEK_CT_LEN)
		return KW_ERR_INVALID;
	total = header_len(n) + sizeof b->nonce + 2 + b->ctlen;
	if (total > cap || total > KWD_BLOB_MAX)
		return KW_ERR_TOO_LARGE;
	memcpy(buf, magic, sizeof magic);
	buf[4] = FORMAT;
	buf[5] = b->alg;
	buf[6] = (unsigned char)n;
	memcpy(buf + 7, b->key, n);
	off = 7 + n;
	put_u32(buf + off, b->version);
	off += 4;
	memcpy(buf + off, b->nonce, sizeof b->nonce);
	off += sizeof b->nonce;
	put_u16(buf + off, b->ctlen);
	off += 2;
	memcpy(buf + off, b->ct, b->ctlen);
	*ret_len = total;
	return KW_OK;
}

static int
pair_cmp(const void *x, const void *y)
{
	const struct kwd_ctx_pair *a = *(const struct kwd_ctx_pair *const *)x;
	const struct kwd_ctx_pair *b = *(const struct kwd_ctx_pair *const *)y;

	return strcmp(a->key, b->key);
}

int
kwd_blob_aad(const struct kwd_blob *b, const struct kwd_ctx_pair *ctx,
    size_t nctx, unsigned char *buf, size_t cap, size_t *ret_len)
{
	const struct kwd_ctx_pair *sorted[KWD_CTX_MAX_PAIRS];
	size_t n = strlen(b->key), off;

	if (nctx > KWD_CTX_MAX_PAIRS || !kw_name_valid(b->key) ||
	    b->version == 0)
		return KW_ERR_INVALID;
	off = header_len(n);
	if (off > cap)
		return KW_ERR_TOO_LARGE;
	memcpy(buf, magic, sizeof magic);
	buf[4] = FORMAT;
	buf[5] = b->alg;
	buf[6] = (unsigned char)n;
	memcpy(buf + 7, b->key, n);
	put_u32(buf + 7 + n, b->version);
	for (size_t i = 0; i < nctx; i++)
		sorted[i] = &ctx[i];
	/* Sorted so that the same context, in any order, binds the same. */
	qsort(sorted, nctx, sizeof sorted[0], pair_cmp);
	for (size_t i = 0; i < nctx; i++) {
		size_t kl = strlen(sorted[i]->key),
		       vl = strlen(sorted[i]->value);

		if (i > 0 && strcmp(sorted[i - 1]->key, sorted[i]->key) == 0)
			return KW_ERR_INVALID;
		if (kl == 0 || kl > 0xffff || vl > 0xffff)
			return KW_ERR_INVALID;
		if (off + 4 + kl + vl > cap)
			return KW_ERR_TOO_LARGE;
		put_u16(buf + off, kl);
		memcpy(buf + off + 2, sorted[i]->key, kl);
		off += 2 + kl;
		put_u16(buf + off, vl);
		memcpy(buf + off + 2, sorted[i]->value, vl);
		off += 2 + vl;
	}
	*ret_len = off;
	return KW_OK;
}

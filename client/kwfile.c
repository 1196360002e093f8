/*
 * kwfile.c: the encrypted file format, version 1 (docs/FILE-FORMAT.md).
 *
 * A header (fields, then an HMAC-SHA256 over them) and chunks of a fixed
 * plaintext size, each sealed with AES-256-GCM under a key derived from
 * the DEK and the header's random salt. A chunk's nonce and AAD carry its
 * index and a last-chunk flag, and its AAD the header MAC, so that chunks
 * can neither move within a file nor between files under the same DEK.
 *
 * The parser reads the header through a bounded cursor; every length is
 * checked against its cap before anything is allocated or copied. The
 * derived keys live in sodium_malloc() memory; OpenSSL holds its own
 * copies in cipher contexts, which EVP_CIPHER_CTX_free() cleanses.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "kwfile.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "name.h"

static const uint8_t magic[4] = {'K', 'W', 'F', 'E'};

#define VERSION 1
#define SUITE_AES256GCM 1 /* AES-256-GCM chunks, HKDF-SHA256, HMAC-SHA256 */
#define PREFIX_LEN 8 /* magic, version, suite, header length */
#define MAC_LEN 32
#define TAG_LEN 16
#define NONCE_LEN 12
#define KEY_LEN 32
#define AAD_LEN (MAC_LEN + 8 + 1)
/* Every fixed-size field: prefix, chunk size, plaintext length, salt, key
 * version, name length, wrapped length, pair count, MAC. */
#define HDR_FIXED (PREFIX_LEN + 4 + 8 + KWF_SALT_LEN + 4 + 1 + 2 + 1 + MAC_LEN)
#define HDR_MIN (HDR_FIXED + 1 + 4)
#define MAX_THREADS 64

_Static_assert(HDR_FIXED + KW_NAME_MAX + KWF_WRAPPED_MAX +
            KWF_CTX_MAX * (1 + KWF_CTX_KEY_MAX + 2 + KWF_CTX_VALUE_MAX) <=
        KWF_HEADER_MAX,
    "the largest valid header must fit in KWF_HEADER_MAX");
_Static_assert(KWF_HEADER_MAX <= 0xffff, "the header length is a u16");
_Static_assert(KWF_CHUNK_MAX <= INT32_MAX, "EVP lengths are int");

/* HKDF-SHA256 info labels (RFC 5869 section 3.2): one key per purpose. */
static const char info_chunk[] = "keyward file v1 chunk key";
static const char info_mac[] = "keyward file v1 header mac key";

struct kwf_header {
	size_t len; /* header length, MAC included */
	uint32_t chunk_size;
	uint64_t plaintext_len;
	uint64_t nchunks;
	uint32_t key_version;
	uint8_t salt[KWF_SALT_LEN];
	uint8_t mac[MAC_LEN];
	char key_name[KW_NAME_MAX + 1];
	const char *wrapped; /* into mem */
	struct kw_context_pair ctx[KWF_CTX_MAX]; /* strings into mem */
	size_t nctx;
	uint8_t *raw; /* the len bytes parsed, into mem */
	uint8_t mem[]; /* raw, then the NUL-terminated strings */
};

/* Keys derived from the DEK, in guarded, locked memory. */
struct keys {
	uint8_t chunk[KEY_LEN];
	uint8_t mac[KEY_LEN];
};

/* One decryption context (key schedule set) and scratch buffer. */
struct slot {
	EVP_CIPHER_CTX *ctx;
	uint8_t *buf; /* chunk_size bytes, allocated on first use */
	struct slot *next;
};

struct kwf_reader {
	int fd;
	uint64_t hlen;
	uint32_t chunk_size;
	uint64_t plaintext_len;
	uint64_t nchunks;
	uint8_t mac[MAC_LEN];
	struct keys *keys;
	pthread_mutex_t lock; /* guards slots */
	struct slot *slots; /* free ones */
	_Atomic uint64_t decrypted;
};

/* ---------------------------------------------------------------- bytes */

static void
put_u16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void
put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void
put_u64(uint8_t *p, uint64_t v)
{
	put_u32(p, (uint32_t)(v >> 32));
	put_u32(p + 4, (uint32_t)v);
}

static uint32_t
get_u16(const uint8_t *p)
{
	return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t
get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

static uint64_t
get_u64(const uint8_t *p)
{
	return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

/* A bounded cursor: every take is checked against what is left. */
struct cursor {
	const uint8_t *p;
	size_t len;
	size_t off;
};

static const uint8_t *
take(struct cursor *c, size_t n)
{
	const uint8_t *p;

	if (c->len - c->off < n)
		return NULL;
	p = c->p + c->off;
	c->off += n;
	return p;
}

static bool
take_u8(struct cursor *c, uint32_t *ret_v)
{
	const uint8_t *p = take(c, 1);

	if (p == NULL)
		return false;
	*ret_v = p[0];
	return true;
}

static bool
take_u16(struct cursor *c, uint32_t *ret_v)
{
	const uint8_t *p = take(c, 2);

	if (p == NULL)
		return false;
	*ret_v = get_u16(p);
	return true;
}

static bool
take_u32(struct cursor *c, uint32_t *ret_v)
{
	const uint8_t *p = take(c, 4);

	if (p == NULL)
		return false;
	*ret_v = get_u32(p);
	return true;
}

static bool
take_u64(struct cursor *c, uint64_t *ret_v)
{
	const uint8_t *p = take(c, 8);

	if (p == NULL)
		return false;
	*ret_v = get_u64(p);
	return true;
}

/* ----------------------------------------------------------- validation */

static bool
chunk_size_valid(uint32_t c)
{
	return c >= KWF_CHUNK_MIN && c <= KWF_CHUNK_MAX && (c & (c - 1)) == 0;
}

/* A context key: ^[a-z][a-z0-9_.-]{0,63}$. */
static bool
ctx_key_valid(const uint8_t *s, size_t len)
{
	if (len == 0 || len > KWF_CTX_KEY_MAX || s[0] < 'a' || s[0] > 'z')
		return false;
	for (size_t i = 1; i < len; i++) {
		uint8_t c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		        c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/*
 * A context value: well-formed UTF-8 (RFC 3629 section 4: no overlong
 * forms, no surrogates, nothing above U+10FFFF) without C0 controls (NUL
 * included), DEL or C1 controls, which could rewrite a line where the
 * value is shown. The same rule as the broker's.
 */
static bool
ctx_value_valid(const uint8_t *s, size_t len)
{
	size_t i = 0;

	if (len > KWF_CTX_VALUE_MAX)
		return false;
	while (i < len) {
		uint32_t cp, min;
		size_t n;

		if (s[i] < 0x80) {
			if (s[i] < 0x20 || s[i] == 0x7f)
				return false;
			i++;
			continue;
		}
		if (s[i] >= 0xc2 && s[i] <= 0xdf) {
			n = 2;
			cp = s[i] & 0x1f;
			min = 0x80;
		} else if (s[i] >= 0xe0 && s[i] <= 0xef) {
			n = 3;
			cp = s[i] & 0x0f;
			min = 0x800;
		} else if (s[i] >= 0xf0 && s[i] <= 0xf4) {
			n = 4;
			cp = s[i] & 0x07;
			min = 0x10000;
		} else {
			return false;
		}
		if (len - i < n)
			return false;
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp <= 0x9f)
			return false;
		i += n;
	}
	return true;
}

/*
 * The wrapped DEK: strict, canonical base64 (RFC 4648 section 4, padded),
 * as keywardd gives and takes it. Canonical so that one wrapped key has
 * one spelling in a header.
 */
static bool
wrapped_valid(const char *s, size_t len)
{
	unsigned char bin[KWF_WRAPPED_MAX / 4 * 3];
	char again[KWF_WRAPPED_MAX + 1];
	const char *end = NULL;
	size_t binlen = 0;

	if (len == 0 || len > KWF_WRAPPED_MAX)
		return false;
	if (sodium_base642bin(bin, sizeof bin, s, len, NULL, &binlen, &end,
	        sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    end != s + len || binlen == 0)
		return false;
	sodium_bin2base64(again, sizeof again, bin, binlen,
	    sodium_base64_VARIANT_ORIGINAL);
	return strlen(again) == len && memcmp(again, s, len) == 0;
}

/* Bytewise order of keys, shorter first on a common prefix (strcmp's). */
static int
key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static uint64_t
chunk_count(uint64_t plaintext_len, uint32_t chunk_size)
{
	/* An empty file has one (empty) chunk: the last flag needs one. */
	if (plaintext_len == 0)
		return 1;
	return (plaintext_len - 1) / chunk_size + 1;
}

/*
 * The file length: header, plaintext and one tag per chunk. Refuses a
 * plaintext length whose file would not fit in off_t, so that no offset
 * computed from the header can overflow.
 */
static bool
file_len(uint64_t hlen, uint64_t plaintext_len, uint32_t chunk_size,
    uint64_t *ret_len)
{
	uint64_t n;

	if (plaintext_len > (uint64_t)INT64_MAX)
		return false;
	n = chunk_count(plaintext_len, chunk_size);
	/* n <= 2^51 + 1: n * TAG_LEN + hlen < 2^56, the sum < 2^64. */
	n = hlen + plaintext_len + n * TAG_LEN;
	if (n > (uint64_t)INT64_MAX)
		return false;
	*ret_len = n;
	return true;
}

/* ----------------------------------------------------------------- keys */

static int
hkdf(const uint8_t dek[KWF_DEK_LEN], const uint8_t salt[KWF_SALT_LEN],
    const char *info, uint8_t out[KEY_LEN])
{
	EVP_KDF *kdf = NULL;
	EVP_KDF_CTX *kctx = NULL;
	OSSL_PARAM params[5];
	int rv = KW_ERR_CRYPTO;

	kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_HKDF, NULL);
	if (kdf == NULL)
		goto out;
	kctx = EVP_KDF_CTX_new(kdf);
	if (kctx == NULL)
		goto out;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
	    (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
	    (void *)dek, KWF_DEK_LEN);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
	    (void *)salt, KWF_SALT_LEN);
	params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
	    (void *)info, strlen(info));
	params[4] = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(kctx, out, KEY_LEN, params) != 1) {
		sodium_memzero(out, KEY_LEN);
		goto out;
	}
	rv = KW_OK;
out:
	/* Frees (and cleanses) the context's copy of the DEK. */
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	return rv;
}

static void
keys_free(struct keys *k)
{
	if (k == NULL)
		return;
	sodium_memzero(k, sizeof *k);
	sodium_free(k);
}

static int
keys_derive(const uint8_t dek[KWF_DEK_LEN], const uint8_t salt[KWF_SALT_LEN],
    struct keys **ret_k)
{
	struct keys *k;
	int rv;

	if (sodium_init() < 0)
		return KW_ERR_CRYPTO;
	k = sodium_malloc(sizeof *k);
	if (k == NULL)
		return KW_ERR_NOMEM;
	rv = hkdf(dek, salt, info_chunk, k->chunk);
	if (rv == KW_OK)
		rv = hkdf(dek, salt, info_mac, k->mac);
	if (rv != KW_OK) {
		keys_free(k);
		return rv;
	}
	*ret_k = k;
	return KW_OK;
}

static int
header_mac(const struct keys *k, const uint8_t *buf, size_t len,
    uint8_t out[MAC_LEN])
{
	unsigned int n = 0;

	if (HMAC(EVP_sha256(), k->mac, KEY_LEN, buf, len, out, &n) == NULL ||
	    n != MAC_LEN)
		return KW_ERR_CRYPTO;
	return KW_OK;
}

/* --------------------------------------------------------------- chunks */

static EVP_CIPHER_CTX *
gcm_new(const uint8_t key[KEY_LEN], int enc)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();

	if (ctx == NULL)
		return NULL;
	/* The key schedule is set once; each chunk sets only its nonce. */
	if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, NULL, enc) !=
	    1) {
		EVP_CIPHER_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/*
 * Nonce: the chunk index (u64) then three zero bytes and the last flag;
 * unique per chunk under a key that is unique per file (random salt).
 * AAD: the header MAC, the index and the flag.
 */
static void
chunk_nonce_aad(const uint8_t mac[MAC_LEN], uint64_t index, bool last,
    uint8_t nonce[NONCE_LEN], uint8_t aad[AAD_LEN])
{
	put_u64(nonce, index);
	nonce[8] = nonce[9] = nonce[10] = 0;
	nonce[11] = last ? 1 : 0;
	memcpy(aad, mac, MAC_LEN);
	put_u64(aad + MAC_LEN, index);
	aad[MAC_LEN + 8] = last ? 1 : 0;
}

/* Seals len bytes of in into out (may be in) and tag. */
static int
chunk_seal(EVP_CIPHER_CTX *ctx, const uint8_t mac[MAC_LEN], uint64_t index,
    bool last, const uint8_t *in, uint8_t *out, size_t len,
    uint8_t tag[TAG_LEN])
{
	uint8_t nonce[NONCE_LEN], aad[AAD_LEN];
	int n, m;

	chunk_nonce_aad(mac, index, last, nonce, aad);
	if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &n, aad, AAD_LEN) != 1)
		return KW_ERR_CRYPTO;
	n = 0;
	if (len > 0 && EVP_EncryptUpdate(ctx, out, &n, in, (int)len) != 1)
		return KW_ERR_CRYPTO;
	if (EVP_EncryptFinal_ex(ctx, out + n, &m) != 1 ||
	    (size_t)n + (size_t)m != len ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, tag) != 1)
		return KW_ERR_CRYPTO;
	return KW_OK;
}

/* Opens len bytes of in into out (may be in); KW_ERR_AUTH on a bad tag. */
static int
chunk_open(EVP_CIPHER_CTX *ctx, const uint8_t mac[MAC_LEN], uint64_t index,
    bool last, const uint8_t *in, uint8_t *out, size_t len,
    uint8_t tag[TAG_LEN])
{
	uint8_t nonce[NONCE_LEN], aad[AAD_LEN];
	int n, m;

	chunk_nonce_aad(mac, index, last, nonce, aad);
	if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_DecryptUpdate(ctx, NULL, &n, aad, AAD_LEN) != 1)
		return KW_ERR_CRYPTO;
	n = 0;
	if (len > 0 && EVP_DecryptUpdate(ctx, out, &n, in, (int)len) != 1)
		return KW_ERR_CRYPTO;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag) != 1)
		return KW_ERR_CRYPTO;
	if (EVP_DecryptFinal_ex(ctx, out + n, &m) != 1)
		return KW_ERR_AUTH;
	if ((size_t)n + (size_t)m != len)
		return KW_ERR_CRYPTO;
	return KW_OK;
}

/* ------------------------------------------------------------------- io */

/*
 * Reads exactly alen bytes into a then blen into b from offset off, in as
 * few preadv() calls as the kernel allows. The end of the file before
 * that is KW_ERR_AUTH: the file is shorter than its header says.
 */
static int
read_exact(int fd, uint8_t *a, size_t alen, uint8_t *b, size_t blen,
    uint64_t off)
{
	struct iovec iov[2] = {{a, alen}, {b, blen}};
	int i = 0;

	while (i < 2) {
		ssize_t n;

		if (iov[i].iov_len == 0) {
			i++;
			continue;
		}
		n = preadv(fd, iov + i, 2 - i, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return KW_ERR_IO;
		if (n == 0)
			return KW_ERR_AUTH;
		off += (uint64_t)n;
		while (n > 0 && i < 2) {
			size_t t = (size_t)n < iov[i].iov_len ? (size_t)n
			                                      : iov[i].iov_len;

			iov[i].iov_base = (uint8_t *)iov[i].iov_base + t;
			iov[i].iov_len -= t;
			n -= (ssize_t)t;
			if (iov[i].iov_len == 0)
				i++;
		}
	}
	return KW_OK;
}

static int
pwrite_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return KW_ERR_IO;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return KW_OK;
}

static int
write_all(int fd, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return KW_ERR_IO;
		}
		p += n;
		len -= (size_t)n;
	}
	return KW_OK;
}

static unsigned
thread_count(unsigned threads, uint64_t work)
{
	uint64_t t = threads;

	if (t == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		t = n > 0 ? (uint64_t)n : 1;
	}
	if (t > MAX_THREADS)
		t = MAX_THREADS;
	if (t > work)
		t = work;
	return t == 0 ? 1 : (unsigned)t;
}

/* --------------------------------------------------------------- header */

int
kwf_header_parse(const uint8_t *buf, size_t len, struct kwf_header **ret_h,
    size_t *ret_need)
{
	struct kwf_header *h = NULL;
	struct cursor c;
	const uint8_t *p, *prev = NULL;
	uint32_t hlen, chunk, ver, n, w, nctx, prevlen = 0;
	uint64_t plen, flen;
	char *str;
	int rv = KW_ERR_INVALID;

	if ((buf == NULL && len > 0) || ret_h == NULL)
		return KW_ERR_INVALID;
	/* Magic, version and suite first, on whatever prefix is there: a
	 * file that is not ours is told apart from one cut short. */
	if ((len > 0 &&
	        memcmp(buf, magic, len < sizeof magic ? len : sizeof magic) !=
	            0) ||
	    (len > 4 && buf[4] != VERSION) ||
	    (len > 5 && buf[5] != SUITE_AES256GCM))
		return KW_ERR_FORMAT;
	if (len < PREFIX_LEN) {
		if (ret_need != NULL)
			*ret_need = PREFIX_LEN;
		return KW_ERR_INVALID;
	}
	hlen = get_u16(buf + 6);
	if (hlen > KWF_HEADER_MAX)
		return KW_ERR_TOO_LARGE;
	if (hlen < HDR_MIN)
		return KW_ERR_INVALID;
	if (len < hlen) {
		if (ret_need != NULL)
			*ret_need = hlen;
		return KW_ERR_INVALID;
	}

	/* raw, then at most hlen bytes of strings and their NULs. */
	h = calloc(1, sizeof *h + 2 * (size_t)hlen + KWF_CTX_MAX * 2 + 1);
	if (h == NULL)
		return KW_ERR_NOMEM;
	h->len = hlen;
	h->raw = h->mem;
	memcpy(h->raw, buf, hlen);
	str = (char *)h->mem + hlen;
	c.p = h->raw;
	c.len = hlen - MAC_LEN;
	c.off = PREFIX_LEN;

	if (!take_u32(&c, &chunk) || !take_u64(&c, &plen) ||
	    (p = take(&c, KWF_SALT_LEN)) == NULL || !take_u32(&c, &ver) ||
	    !take_u8(&c, &n))
		goto out;
	if (!chunk_size_valid(chunk) || ver == 0)
		goto out;
	memcpy(h->salt, p, KWF_SALT_LEN);
	if (!file_len(hlen, plen, chunk, &flen)) {
		rv = KW_ERR_TOO_LARGE;
		goto out;
	}
	h->chunk_size = chunk;
	h->plaintext_len = plen;
	h->nchunks = chunk_count(plen, chunk);
	h->key_version = ver;

	if ((p = take(&c, n)) == NULL || !kw_name_valid_n((const char *)p, n))
		goto out;
	memcpy(h->key_name, p, n);
	h->key_name[n] = '\0';

	if (!take_u16(&c, &w))
		goto out;
	if (w > KWF_WRAPPED_MAX) {
		rv = KW_ERR_TOO_LARGE;
		goto out;
	}
	if ((p = take(&c, w)) == NULL || !wrapped_valid((const char *)p, w))
		goto out;
	memcpy(str, p, w);
	str[w] = '\0';
	h->wrapped = str;
	str += w + 1;

	if (!take_u8(&c, &nctx))
		goto out;
	if (nctx > KWF_CTX_MAX) {
		rv = KW_ERR_TOO_LARGE;
		goto out;
	}
	for (uint32_t i = 0; i < nctx; i++) {
		const uint8_t *k, *v;
		uint32_t kl, vl;

		if (!take_u8(&c, &kl))
			goto out;
		if (kl > KWF_CTX_KEY_MAX) {
			rv = KW_ERR_TOO_LARGE;
			goto out;
		}
		if ((k = take(&c, kl)) == NULL || !ctx_key_valid(k, kl) ||
		    !take_u16(&c, &vl))
			goto out;
		if (vl > KWF_CTX_VALUE_MAX) {
			rv = KW_ERR_TOO_LARGE;
			goto out;
		}
		if ((v = take(&c, vl)) == NULL || !ctx_value_valid(v, vl))
			goto out;
		/* Canonical: strictly ascending keys, so no duplicates. */
		if (prev != NULL && key_cmp(prev, prevlen, k, kl) >= 0)
			goto out;
		prev = k;
		prevlen = kl;
		memcpy(str, k, kl);
		str[kl] = '\0';
		h->ctx[i].key = str;
		str += kl + 1;
		memcpy(str, v, vl);
		str[vl] = '\0';
		h->ctx[i].value = str;
		str += vl + 1;
	}
	h->nctx = nctx;
	/* Every byte before the MAC belongs to a field. */
	if (c.off != c.len)
		goto out;
	memcpy(h->mac, h->raw + hlen - MAC_LEN, MAC_LEN);
	*ret_h = h;
	h = NULL;
	rv = KW_OK;
out:
	free(h);
	return rv;
}

int
kwf_header_read_fd(int fd, struct kwf_header **ret_h)
{
	uint8_t *buf;
	size_t got = 0, want = PREFIX_LEN;
	int rv = KW_ERR_INVALID;

	if (fd < 0 || ret_h == NULL)
		return KW_ERR_INVALID;
	buf = malloc(KWF_HEADER_MAX);
	if (buf == NULL)
		return KW_ERR_NOMEM;
	/* Two rounds at most: the prefix, which gives the length, then the
	 * rest. */
	for (int round = 0; round < 2; round++) {
		size_t need = 0;
		bool eof = false;

		while (got < want) {
			ssize_t n =
			    pread(fd, buf + got, want - got, (off_t)got);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				rv = KW_ERR_IO;
				goto out;
			}
			if (n == 0) {
				eof = true;
				break;
			}
			got += (size_t)n;
		}
		/* An empty file is no keyward file; a prefix of one is one
		 * cut short (KW_ERR_INVALID). */
		if (eof && got == 0) {
			rv = KW_ERR_FORMAT;
			break;
		}
		rv = kwf_header_parse(buf, got, ret_h, &need);
		if (rv != KW_ERR_INVALID || eof || need <= got ||
		    need > KWF_HEADER_MAX)
			break;
		want = need;
	}
out:
	free(buf);
	return rv;
}

void
kwf_header_free(struct kwf_header *h)
{
	free(h);
}

const char *
kwf_header_key_name(const struct kwf_header *h)
{
	return h->key_name;
}

uint32_t
kwf_header_key_version(const struct kwf_header *h)
{
	return h->key_version;
}

const char *
kwf_header_wrapped(const struct kwf_header *h)
{
	return h->wrapped;
}

size_t
kwf_header_context(const struct kwf_header *h,
    const struct kw_context_pair **ret_ctx)
{
	if (ret_ctx != NULL)
		*ret_ctx = h->ctx;
	return h->nctx;
}

uint32_t
kwf_header_chunk_size(const struct kwf_header *h)
{
	return h->chunk_size;
}

uint64_t
kwf_header_plaintext_len(const struct kwf_header *h)
{
	return h->plaintext_len;
}

size_t
kwf_header_len(const struct kwf_header *h)
{
	return h->len;
}

uint64_t
kwf_header_file_len(const struct kwf_header *h)
{
	uint64_t n = 0;

	/* Cannot fail: the parser checked it. */
	(void)file_len(h->len, h->plaintext_len, h->chunk_size, &n);
	return n;
}

static int
pair_cmp(const void *x, const void *y)
{
	const struct kw_context_pair *a =
	    *(const struct kw_context_pair *const *)x;
	const struct kw_context_pair *b =
	    *(const struct kw_context_pair *const *)y;

	return strcmp(a->key, b->key);
}

/*
 * meta_check: validates m and sorts its context into sorted (canonical
 * order); the chunk size and the header length in *ret_chunk, *ret_hlen.
 */
static int
meta_check(const struct kwf_meta *m,
    const struct kw_context_pair *sorted[KWF_CTX_MAX], uint32_t *ret_chunk,
    size_t *ret_hlen)
{
	uint32_t chunk;
	size_t hlen, w;

	if (m == NULL || !kw_name_valid(m->key_name) || m->key_version == 0 ||
	    m->wrapped == NULL || (m->ctx == NULL && m->nctx > 0))
		return KW_ERR_INVALID;
	if (m->nctx > KWF_CTX_MAX)
		return KW_ERR_TOO_LARGE;
	chunk = m->chunk_size == 0 ? KWF_CHUNK_DEFAULT : m->chunk_size;
	if (!chunk_size_valid(chunk))
		return KW_ERR_INVALID;
	w = strnlen(m->wrapped, KWF_WRAPPED_MAX + 1);
	if (w > KWF_WRAPPED_MAX)
		return KW_ERR_TOO_LARGE;
	if (!wrapped_valid(m->wrapped, w))
		return KW_ERR_INVALID;
	hlen = HDR_FIXED + strlen(m->key_name) + w;
	for (size_t i = 0; i < m->nctx; i++) {
		const struct kw_context_pair *pr = &m->ctx[i];
		size_t kl, vl;

		if (pr->key == NULL || pr->value == NULL)
			return KW_ERR_INVALID;
		kl = strnlen(pr->key, KWF_CTX_KEY_MAX + 1);
		vl = strnlen(pr->value, KWF_CTX_VALUE_MAX + 1);
		if (kl > KWF_CTX_KEY_MAX || vl > KWF_CTX_VALUE_MAX)
			return KW_ERR_TOO_LARGE;
		if (!ctx_key_valid((const uint8_t *)pr->key, kl) ||
		    !ctx_value_valid((const uint8_t *)pr->value, vl))
			return KW_ERR_INVALID;
		hlen += 1 + kl + 2 + vl;
		sorted[i] = pr;
	}
	qsort(sorted, m->nctx, sizeof sorted[0], pair_cmp);
	for (size_t i = 1; i < m->nctx; i++)
		if (strcmp(sorted[i - 1]->key, sorted[i]->key) == 0)
			return KW_ERR_INVALID;
	*ret_chunk = chunk;
	*ret_hlen = hlen;
	return KW_OK;
}

/* Writes the header's hlen bytes into buf, MAC included. */
static int
header_encode(const struct kwf_meta *m,
    const struct kw_context_pair *const *sorted, uint32_t chunk,
    uint64_t plaintext_len, const uint8_t salt[KWF_SALT_LEN],
    const struct keys *k, uint8_t *buf, size_t hlen)
{
	size_t off = 0, n = strlen(m->key_name), w = strlen(m->wrapped);

	memcpy(buf, magic, sizeof magic);
	buf[4] = VERSION;
	buf[5] = SUITE_AES256GCM;
	put_u16(buf + 6, (uint32_t)hlen);
	put_u32(buf + 8, chunk);
	put_u64(buf + 12, plaintext_len);
	memcpy(buf + 20, salt, KWF_SALT_LEN);
	off = 20 + KWF_SALT_LEN;
	put_u32(buf + off, m->key_version);
	buf[off + 4] = (uint8_t)n;
	memcpy(buf + off + 5, m->key_name, n);
	off += 5 + n;
	put_u16(buf + off, (uint32_t)w);
	memcpy(buf + off + 2, m->wrapped, w);
	off += 2 + w;
	buf[off++] = (uint8_t)m->nctx;
	for (size_t i = 0; i < m->nctx; i++) {
		size_t kl = strlen(sorted[i]->key),
		       vl = strlen(sorted[i]->value);

		buf[off] = (uint8_t)kl;
		memcpy(buf + off + 1, sorted[i]->key, kl);
		off += 1 + kl;
		put_u16(buf + off, (uint32_t)vl);
		memcpy(buf + off + 2, sorted[i]->value, vl);
		off += 2 + vl;
	}
	if (off + MAC_LEN != hlen)
		return KW_ERR_INTERNAL;
	return header_mac(k, buf, off, buf + off);
}

/* -------------------------------------------------------------- encrypt */

struct enc_job {
	int in_fd;
	int out_fd;
	const uint8_t *chunk_key;
	uint8_t mac[MAC_LEN];
	uint64_t hlen;
	uint32_t chunk_size;
	uint64_t plaintext_len;
	uint64_t nchunks;
	_Atomic uint64_t next;
	_Atomic uint64_t done;
	pthread_mutex_t lock; /* guards rv and err */
	int rv; /* the first failure */
	int err; /* its errno */
	_Atomic bool failed;
	kw_progress_fn progress; /* calling thread only */
	void *progress_arg;
};

static void
enc_fail(struct enc_job *j, int rv, int err)
{
	pthread_mutex_lock(&j->lock);
	if (j->rv == KW_OK) {
		j->rv = rv;
		j->err = err;
	}
	pthread_mutex_unlock(&j->lock);
	atomic_store(&j->failed, true);
}

/* Reads a whole plaintext chunk; the end of in_fd before it: changed. */
static int
read_plain(int fd, uint8_t *p, size_t len, uint64_t off)
{
	int rv = read_exact(fd, p, len, NULL, 0, off);

	if (rv == KW_ERR_AUTH) {
		errno = 0;
		rv = KW_ERR_IO;
	}
	return rv;
}

/* One worker: claims chunks until none is left or one failed. */
static void
enc_run(struct enc_job *j, bool report)
{
	uint64_t stride = (uint64_t)j->chunk_size + TAG_LEN;
	EVP_CIPHER_CTX *ctx = gcm_new(j->chunk_key, 1);
	uint8_t *buf = malloc(stride);
	int rv = KW_OK;

	if (ctx == NULL || buf == NULL) {
		enc_fail(j, ctx == NULL ? KW_ERR_CRYPTO : KW_ERR_NOMEM, 0);
		goto out;
	}
	while (!atomic_load(&j->failed)) {
		uint64_t i = atomic_fetch_add(&j->next, 1), done;
		size_t len;
		bool last;

		if (i >= j->nchunks)
			break;
		last = i + 1 == j->nchunks;
		len = last ? (size_t)(j->plaintext_len - i * j->chunk_size)
		           : j->chunk_size;
		rv = read_plain(j->in_fd, buf, len, i * j->chunk_size);
		if (rv == KW_OK)
			rv = chunk_seal(ctx, j->mac, i, last, buf, buf, len,
			    buf + len);
		if (rv == KW_OK)
			rv = pwrite_all(j->out_fd, buf, len + TAG_LEN,
			    j->hlen + i * stride);
		if (rv != KW_OK) {
			enc_fail(j, rv, rv == KW_ERR_IO ? errno : 0);
			break;
		}
		done = atomic_fetch_add(&j->done, len) + len;
		if (report && j->progress != NULL)
			j->progress(j->progress_arg, done, j->plaintext_len);
	}
out:
	if (buf != NULL) {
		sodium_memzero(buf, stride);
		free(buf);
	}
	EVP_CIPHER_CTX_free(ctx);
}

static void *
enc_thread(void *arg)
{
	enc_run(arg, false);
	return NULL;
}

int
kwf_encrypt_fd(int in_fd, int out_fd, const struct kwf_meta *m,
    const uint8_t dek[KWF_DEK_LEN], unsigned threads, kw_progress_fn progress,
    void *progress_arg)
{
	const struct kw_context_pair *sorted[KWF_CTX_MAX];
	pthread_t tid[MAX_THREADS];
	struct enc_job j;
	struct keys *k = NULL;
	struct stat st;
	uint8_t salt[KWF_SALT_LEN], *hdr = NULL;
	uint64_t flen;
	unsigned nt = 0, want;
	size_t hlen;
	int rv, err = 0;

	memset(&j, 0, sizeof j);
	if (in_fd < 0 || out_fd < 0 || dek == NULL)
		return KW_ERR_INVALID;
	rv = meta_check(m, sorted, &j.chunk_size, &hlen);
	if (rv != KW_OK)
		return rv;
	if (fstat(in_fd, &st) != 0)
		return KW_ERR_IO;
	if (!S_ISREG(st.st_mode))
		return KW_ERR_INVALID;
	if (!file_len(hlen, (uint64_t)st.st_size, j.chunk_size, &flen))
		return KW_ERR_TOO_LARGE;
	if (RAND_bytes(salt, sizeof salt) != 1)
		return KW_ERR_RANDOM;
	rv = keys_derive(dek, salt, &k);
	if (rv != KW_OK)
		return rv;
	hdr = malloc(hlen);
	if (hdr == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	j.plaintext_len = (uint64_t)st.st_size;
	rv = header_encode(m, sorted, j.chunk_size, j.plaintext_len, salt, k,
	    hdr, hlen);
	if (rv != KW_OK)
		goto out;
	rv = pwrite_all(out_fd, hdr, hlen, 0);
	if (rv != KW_OK) {
		err = errno;
		goto out;
	}
	j.in_fd = in_fd;
	j.out_fd = out_fd;
	j.chunk_key = k->chunk;
	memcpy(j.mac, hdr + hlen - MAC_LEN, MAC_LEN);
	j.hlen = hlen;
	j.nchunks = chunk_count(j.plaintext_len, j.chunk_size);
	j.progress = progress;
	j.progress_arg = progress_arg;
	pthread_mutex_init(&j.lock, NULL);

	/* The calling thread is one of the workers, and the one that reports
	 * progress. A thread that cannot start leaves its share to the
	 * others. */
	want = thread_count(threads, j.nchunks);
	for (nt = 0; nt + 1 < want; nt++)
		if (pthread_create(&tid[nt], NULL, enc_thread, &j) != 0)
			break;
	enc_run(&j, true);
	for (unsigned i = 0; i < nt; i++)
		pthread_join(tid[i], NULL);
	pthread_mutex_destroy(&j.lock);
	rv = j.rv;
	err = j.err;
	if (rv != KW_OK)
		goto out;
	/* A file that grew or shrank while it was read is not what the
	 * header says. */
	if (fstat(in_fd, &st) != 0 || (uint64_t)st.st_size != j.plaintext_len) {
		rv = KW_ERR_IO;
		goto out;
	}
	if (fstat(out_fd, &st) != 0 ||
	    ((uint64_t)st.st_size != flen &&
	        ftruncate(out_fd, (off_t)flen) != 0)) {
		rv = KW_ERR_IO;
		err = errno;
		goto out;
	}
	if (progress != NULL && atomic_load(&j.done) == j.plaintext_len)
		progress(progress_arg, j.plaintext_len, j.plaintext_len);
out:
	free(hdr);
	keys_free(k);
	sodium_memzero(&j, sizeof j);
	if (rv == KW_ERR_IO)
		errno = err;
	return rv;
}

/* --------------------------------------------------------------- reader */

int
kwf_reader_open(int fd, const struct kwf_header *h,
    const uint8_t dek[KWF_DEK_LEN], struct kwf_reader **ret_r)
{
	struct kwf_reader *r = NULL;
	struct keys *k = NULL;
	struct stat st;
	uint8_t mac[MAC_LEN];
	int rv;

	if (fd < 0 || h == NULL || dek == NULL || ret_r == NULL)
		return KW_ERR_INVALID;
	rv = keys_derive(dek, h->salt, &k);
	if (rv != KW_OK)
		return rv;
	rv = header_mac(k, h->raw, h->len - MAC_LEN, mac);
	if (rv != KW_OK)
		goto out;
	if (CRYPTO_memcmp(mac, h->mac, MAC_LEN) != 0) {
		rv = KW_ERR_AUTH;
		goto out;
	}
	/* The header is authentic: the length it implies is exact, so a
	 * dropped, added or cut chunk, or an appended byte, is caught here
	 * before any chunk is read. */
	if (fstat(fd, &st) != 0) {
		rv = KW_ERR_IO;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rv = KW_ERR_INVALID;
		goto out;
	}
	if ((uint64_t)st.st_size != kwf_header_file_len(h)) {
		rv = KW_ERR_AUTH;
		goto out;
	}
	r = calloc(1, sizeof *r);
	if (r == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	if (pthread_mutex_init(&r->lock, NULL) != 0) {
		free(r);
		rv = KW_ERR_NOMEM;
		goto out;
	}
	r->fd = fd;
	r->hlen = h->len;
	r->chunk_size = h->chunk_size;
	r->plaintext_len = h->plaintext_len;
	r->nchunks = h->nchunks;
	memcpy(r->mac, h->mac, MAC_LEN);
	/* The MAC key has done its work; the chunk key stays. */
	sodium_memzero(k->mac, sizeof k->mac);
	r->keys = k;
	k = NULL;
	atomic_init(&r->decrypted, 0);
	*ret_r = r;
	rv = KW_OK;
out:
	keys_free(k);
	return rv;
}

static void
slot_free(struct slot *s, size_t buflen)
{
	if (s == NULL)
		return;
	EVP_CIPHER_CTX_free(s->ctx);
	if (s->buf != NULL) {
		sodium_memzero(s->buf, buflen);
		free(s->buf);
	}
	free(s);
}

/* A free slot, or a new one: one per thread reading at the same time. */
static struct slot *
slot_get(struct kwf_reader *r)
{
	struct slot *s;

	pthread_mutex_lock(&r->lock);
	s = r->slots;
	if (s != NULL)
		r->slots = s->next;
	pthread_mutex_unlock(&r->lock);
	if (s != NULL)
		return s;
	s = calloc(1, sizeof *s);
	if (s == NULL)
		return NULL;
	s->ctx = gcm_new(r->keys->chunk, 0);
	if (s->ctx == NULL) {
		free(s);
		return NULL;
	}
	return s;
}

static void
slot_put(struct kwf_reader *r, struct slot *s)
{
	pthread_mutex_lock(&r->lock);
	s->next = r->slots;
	r->slots = s;
	pthread_mutex_unlock(&r->lock);
}

static size_t
chunk_plain_len(const struct kwf_reader *r, uint64_t i)
{
	if (i + 1 < r->nchunks)
		return r->chunk_size;
	return (size_t)(r->plaintext_len - i * r->chunk_size);
}

/*
 * Reads chunk i into dst and opens it there. On failure dst holds neither
 * ciphertext nor unauthenticated plaintext.
 */
static int
reader_chunk(struct kwf_reader *r, EVP_CIPHER_CTX *ctx, uint64_t i,
    uint8_t *dst)
{
	size_t len = chunk_plain_len(r, i);
	uint8_t tag[TAG_LEN];
	int rv;

	rv = read_exact(r->fd, dst, len, tag, TAG_LEN,
	    r->hlen + i * ((uint64_t)r->chunk_size + TAG_LEN));
	if (rv == KW_OK)
		rv = chunk_open(ctx, r->mac, i, i + 1 == r->nchunks, dst, dst,
		    len, tag);
	if (rv != KW_OK) {
		sodium_memzero(dst, len);
		return rv;
	}
	atomic_fetch_add_explicit(&r->decrypted, 1, memory_order_relaxed);
	return KW_OK;
}

int
kwf_reader_pread(struct kwf_reader *r, void *buf, size_t len, uint64_t off,
    size_t *ret_n)
{
	uint8_t *out = buf;
	struct slot *s;
	size_t n, pos = 0;
	int rv = KW_OK;

	if (r == NULL || (buf == NULL && len > 0) || ret_n == NULL)
		return KW_ERR_INVALID;
	if (len == 0 || off >= r->plaintext_len) {
		*ret_n = 0;
		return KW_OK;
	}
	n = r->plaintext_len - off < len ? (size_t)(r->plaintext_len - off)
	                                 : len;
	s = slot_get(r);
	if (s == NULL)
		return KW_ERR_NOMEM;
	while (pos < n) {
		uint64_t i = (off + pos) / r->chunk_size;
		size_t in = (size_t)(off + pos - i * r->chunk_size);
		size_t clen = chunk_plain_len(r, i);
		size_t t = clen - in < n - pos ? clen - in : n - pos;

		if (in == 0 && t == clen) {
			/* The whole chunk is wanted: read and open it in the
			 * caller's buffer, no copy. */
			rv = reader_chunk(r, s->ctx, i, out + pos);
		} else {
			if (s->buf == NULL)
				s->buf = malloc(r->chunk_size);
			if (s->buf == NULL) {
				rv = KW_ERR_NOMEM;
				break;
			}
			rv = reader_chunk(r, s->ctx, i, s->buf);
			if (rv == KW_OK)
				memcpy(out + pos, s->buf + in, t);
		}
		if (rv != KW_OK)
			break;
		pos += t;
	}
	slot_put(r, s);
	if (rv != KW_OK) {
		/* All or nothing: the caller's range holds no plaintext,
		 * authenticated or not, after a failure. */
		sodium_memzero(out, n);
		return rv;
	}
	*ret_n = n;
	return KW_OK;
}

uint64_t
kwf_reader_size(const struct kwf_reader *r)
{
	return r->plaintext_len;
}

uint64_t
kwf_reader_chunks_decrypted(const struct kwf_reader *r)
{
	return atomic_load_explicit(&((struct kwf_reader *)r)->decrypted,
	    memory_order_relaxed);
}

void
kwf_reader_free(struct kwf_reader *r)
{
	struct slot *s, *next;

	if (r == NULL)
		return;
	for (s = r->slots; s != NULL; s = next) {
		next = s->next;
		slot_free(s, r->chunk_size);
	}
	pthread_mutex_destroy(&r->lock);
	keys_free(r->keys);
	sodium_memzero(r, sizeof *r);
	free(r);
}

/* ------------------------------------------------------- decrypt to fd */

/*
 * Each worker claims the next chunk, opens it in its own buffer, waits for
 * its turn (every chunk before it written), writes it and claims another:
 * writes stay in order, so out_fd may be a pipe, and a worker's one buffer
 * stays in its core's cache. A ring of buffers handed to a writer thread
 * measured slower: the more buffers, the colder they are when reused.
 */
struct dec_job {
	struct kwf_reader *r;
	int out_fd;
	uint64_t off; /* plaintext range [off, end) */
	uint64_t end;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t next; /* next chunk to claim */
	uint64_t last; /* last chunk of the range */
	uint64_t written; /* chunks before this one are written */
	uint64_t done; /* plaintext bytes written */
	int rv; /* first failure */
	int werr; /* errno of a failed write, 0 for a failed read */
	kw_progress_fn progress; /* calling thread only */
	void *progress_arg;
};

/* Called with d->lock held. */
static void
dec_fail(struct dec_job *d, int rv, int werr)
{
	if (d->rv == KW_OK) {
		d->rv = rv;
		d->werr = werr;
	}
	pthread_cond_broadcast(&d->cond);
}

static void
dec_run(struct dec_job *d, bool report)
{
	struct kwf_reader *r = d->r;
	struct slot *s = slot_get(r);

	if (s != NULL && s->buf == NULL)
		s->buf = malloc(r->chunk_size);
	pthread_mutex_lock(&d->lock);
	if (s == NULL || s->buf == NULL)
		dec_fail(d, KW_ERR_NOMEM, 0);
	while (d->rv == KW_OK && d->next <= d->last) {
		uint64_t i = d->next++, start = i * r->chunk_size, done;
		size_t a, b = chunk_plain_len(r, i);
		int rv, werr;

		/* The slice of chunk i in the range. */
		a = d->off > start ? (size_t)(d->off - start) : 0;
		if (d->end < start + b)
			b = (size_t)(d->end - start);
		pthread_mutex_unlock(&d->lock);
		rv = reader_chunk(r, s->ctx, i, s->buf);
		pthread_mutex_lock(&d->lock);
		if (rv != KW_OK) {
			dec_fail(d, rv, 0);
			break;
		}
		while (d->rv == KW_OK && d->written != i)
			pthread_cond_wait(&d->cond, &d->lock);
		if (d->rv != KW_OK)
			break;
		/* Our turn: only this worker writes until written moves. */
		pthread_mutex_unlock(&d->lock);
		rv = write_all(d->out_fd, s->buf + a, b - a);
		werr = errno;
		pthread_mutex_lock(&d->lock);
		if (rv != KW_OK) {
			dec_fail(d, rv, werr);
			break;
		}
		d->written = i + 1;
		d->done += b - a;
		done = d->done;
		pthread_cond_broadcast(&d->cond);
		if (report && d->progress != NULL) {
			pthread_mutex_unlock(&d->lock);
			d->progress(d->progress_arg, done, d->end - d->off);
			pthread_mutex_lock(&d->lock);
		}
	}
	pthread_mutex_unlock(&d->lock);
	if (s != NULL)
		slot_put(r, s);
}

static void *
dec_thread(void *arg)
{
	dec_run(arg, false);
	return NULL;
}

/*
 * The whole of an empty file is its one empty chunk: decrypting it checks
 * that chunk's tag, although it writes nothing.
 */
static int
verify_empty(struct kwf_reader *r)
{
	struct slot *s = slot_get(r);
	uint8_t none[1];
	int rv;

	if (s == NULL)
		return KW_ERR_NOMEM;
	rv = reader_chunk(r, s->ctx, 0, none);
	slot_put(r, s);
	if (rv == KW_ERR_IO)
		errno = 0;
	return rv;
}

int
kwf_reader_decrypt_fd(struct kwf_reader *r, int out_fd, uint64_t off,
    uint64_t len, unsigned threads, kw_progress_fn progress, void *progress_arg)
{
	pthread_t tid[MAX_THREADS];
	struct dec_job d;
	unsigned nt, want;
	int rv;

	if (r == NULL || out_fd < 0)
		return KW_ERR_INVALID;
	if (r->plaintext_len == 0 && off == 0 && len > 0)
		return verify_empty(r);
	if (off >= r->plaintext_len || len == 0)
		return KW_OK;
	memset(&d, 0, sizeof d);
	d.r = r;
	d.out_fd = out_fd;
	d.off = off;
	d.end = r->plaintext_len - off < len ? r->plaintext_len : off + len;
	d.next = off / r->chunk_size;
	d.written = d.next;
	d.last = (d.end - 1) / r->chunk_size;
	d.progress = progress;
	d.progress_arg = progress_arg;
	if (pthread_mutex_init(&d.lock, NULL) != 0)
		return KW_ERR_NOMEM;
	if (pthread_cond_init(&d.cond, NULL) != 0) {
		pthread_mutex_destroy(&d.lock);
		return KW_ERR_NOMEM;
	}
	/* The calling thread is one of the workers, and the one that reports
	 * progress; a thread that cannot start leaves its share to the
	 * others. */
	want = thread_count(threads, d.last - d.next + 1);
	for (nt = 0; nt + 1 < want; nt++)
		if (pthread_create(&tid[nt], NULL, dec_thread, &d) != 0)
			break;
	dec_run(&d, true);
	for (unsigned i = 0; i < nt; i++)
		pthread_join(tid[i], NULL);
	pthread_cond_destroy(&d.cond);
	pthread_mutex_destroy(&d.lock);
	rv = d.rv;
	if (rv == KW_OK && progress != NULL)
		progress(progress_arg, d.done, d.end - d.off);
	/* errno tells a failed write from a failed read (kwfile.h). */
	if (rv == KW_ERR_IO)
		errno = d.werr;
	return rv;
}

/* ----------------------------------------------------------- test hooks */

int
kwf_test_header_build(const struct kwf_meta *m, const uint8_t dek[KWF_DEK_LEN],
    const uint8_t salt[KWF_SALT_LEN], uint64_t plaintext_len, uint8_t *buf,
    size_t cap, size_t *ret_len)
{
	const struct kw_context_pair *sorted[KWF_CTX_MAX];
	struct keys *k = NULL;
	uint32_t chunk;
	uint64_t flen;
	size_t hlen;
	int rv;

	if (dek == NULL || salt == NULL || buf == NULL || ret_len == NULL)
		return KW_ERR_INVALID;
	rv = meta_check(m, sorted, &chunk, &hlen);
	if (rv != KW_OK)
		return rv;
	if (hlen > cap || !file_len(hlen, plaintext_len, chunk, &flen))
		return KW_ERR_TOO_LARGE;
	rv = keys_derive(dek, salt, &k);
	if (rv != KW_OK)
		return rv;
	rv = header_encode(m, sorted, chunk, plaintext_len, salt, k, buf, hlen);
	keys_free(k);
	if (rv != KW_OK)
		return rv;
	*ret_len = hlen;
	return KW_OK;
}

int
kwf_test_chunk_seal(const struct kwf_header *h, const uint8_t dek[KWF_DEK_LEN],
    uint64_t index, int last, const uint8_t *in, size_t len, uint8_t *out)
{
	EVP_CIPHER_CTX *ctx;
	struct keys *k = NULL;
	int rv;

	if (h == NULL || dek == NULL || (in == NULL && len > 0) ||
	    out == NULL || len > KWF_CHUNK_MAX)
		return KW_ERR_INVALID;
	rv = keys_derive(dek, h->salt, &k);
	if (rv != KW_OK)
		return rv;
	ctx = gcm_new(k->chunk, 1);
	if (ctx == NULL) {
		keys_free(k);
		return KW_ERR_CRYPTO;
	}
	rv = chunk_seal(ctx, h->mac, index, last != 0, in, out, len, out + len);
	EVP_CIPHER_CTX_free(ctx);
	keys_free(k);
	return rv;
}

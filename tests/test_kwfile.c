/*
 * test_kwfile.c: the encrypted file format (client/kwfile.c,
 * docs/FILE-FORMAT.md): round trips at every size boundary, every header
 * byte edited, chunks swapped, dropped, duplicated, moved between files,
 * truncation and extension, random ranges, chunk counts, threads, pipes,
 * and offsets beyond 4 GiB in a sparse file.
 *
 * Chunks are 4096 bytes (the minimum) so that many chunks stay cheap under
 * ASan. Files are unnamed (O_TMPFILE) in a mkdtemp() directory removed at
 * the end.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "kwfile.h"

#define C 4096u
#define TAG 16u

static char tmpdir[64];

/* ------------------------------------------------------------- helpers */

/* xorshift64*: a fixed-seed generator, so that a failure replays. */
static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

static uint8_t *
plain_new(size_t len, uint64_t seed)
{
	uint8_t *p = malloc(len ? len : 1);

	assert_non_null(p);
	for (size_t i = 0; i < len; i++) {
		if (i % 8 == 0)
			seed = rnd(&seed) | 1;
		p[i] = (uint8_t)(seed >> (8 * (i % 8)));
	}
	return p;
}

static int
tmp_fd(void)
{
	int fd = open(tmpdir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	return fd;
}

static void
pwrite_ok(int fd, const void *p, size_t len, uint64_t off)
{
	assert_int_equal(pwrite(fd, p, len, (off_t)off), (ssize_t)len);
}

static void
pread_ok(int fd, void *p, size_t len, uint64_t off)
{
	assert_int_equal(pread(fd, p, len, (off_t)off), (ssize_t)len);
}

static int
fd_with(const uint8_t *p, size_t len)
{
	int fd = tmp_fd();

	if (len > 0)
		pwrite_ok(fd, p, len, 0);
	return fd;
}

static uint64_t
fd_size(int fd)
{
	struct stat st;

	assert_int_equal(fstat(fd, &st), 0);
	return (uint64_t)st.st_size;
}

/* The whole file in a new buffer. */
static uint8_t *
fd_bytes(int fd, size_t *ret_len)
{
	size_t len = (size_t)fd_size(fd);
	uint8_t *p = malloc(len ? len : 1);

	assert_non_null(p);
	if (len > 0)
		pread_ok(fd, p, len, 0);
	*ret_len = len;
	return p;
}

static const struct kw_context_pair ctx2[] = {
    {"purpose", "train"},
    {"dataset", "imagenet-1k"},
};

/* A valid, canonical base64 text (bytes 0..15). */
static const char wrapped[] = "AAECAwQFBgcICQoLDA0ODw==";

static struct kwf_meta
meta(uint32_t chunk)
{
	struct kwf_meta m = {
	    .key_name = "datasets",
	    .key_version = 3,
	    .wrapped = wrapped,
	    .ctx = ctx2,
	    .nctx = 2,
	    .chunk_size = chunk,
	};

	return m;
}

static uint64_t
nchunks(uint64_t plen, uint32_t chunk)
{
	return plen == 0 ? 1 : (plen - 1) / chunk + 1;
}

/* An encrypted file of plain (len bytes) under dek, chunk size C. */
static int
encrypt_fd(const uint8_t *plain, size_t len, const uint8_t *dek,
    unsigned threads)
{
	struct kwf_meta m = meta(C);
	int in = fd_with(plain, len), out = tmp_fd();

	assert_int_equal(kwf_encrypt_fd(in, out, &m, dek, threads, NULL, NULL),
	    KW_OK);
	close(in);
	return out;
}

/* kwf_header_read_fd then kwf_reader_open; the first failure. */
static int
open_reader(int fd, const uint8_t *dek, struct kwf_header **ret_h,
    struct kwf_reader **ret_r)
{
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	int rv;

	rv = kwf_header_read_fd(fd, &h);
	if (rv != KW_OK)
		return rv;
	rv = kwf_reader_open(fd, h, dek, &r);
	if (rv != KW_OK) {
		kwf_header_free(h);
		return rv;
	}
	*ret_h = h;
	*ret_r = r;
	return KW_OK;
}

/* Whether the file opens and every byte of it decrypts. */
static int
check_all(int fd, const uint8_t *dek)
{
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	uint8_t *buf;
	size_t n = 0;
	int rv;

	rv = open_reader(fd, dek, &h, &r);
	if (rv != KW_OK)
		return rv;
	buf = malloc(kwf_reader_size(r) + 1);
	assert_non_null(buf);
	rv = kwf_reader_pread(r, buf, kwf_reader_size(r) + 1, 0, &n);
	free(buf);
	kwf_reader_free(r);
	kwf_header_free(h);
	return rv;
}

/* Chunk i's pread from r: KW_OK and its bytes, or the failure. */
static int
pread_chunk(struct kwf_reader *r, uint64_t i, uint8_t *buf, size_t *ret_n)
{
	return kwf_reader_pread(r, buf, C, i * C, ret_n);
}

static uint64_t
chunk_off(const struct kwf_header *h, uint64_t i)
{
	return kwf_header_len(h) + i * (C + TAG);
}

static void
dek_new(uint8_t dek[KWF_DEK_LEN])
{
	randombytes_buf(dek, KWF_DEK_LEN);
}

/* Drains a pipe into a buffer on its own thread. */
struct drain {
	int fd;
	uint8_t *buf;
	size_t len;
	size_t cap;
};

static void *
drain_run(void *arg)
{
	struct drain *d = arg;

	for (;;) {
		ssize_t n;

		if (d->len == d->cap) {
			d->cap = d->cap ? 2 * d->cap : 65536;
			d->buf = realloc(d->buf, d->cap);
			if (d->buf == NULL)
				abort();
		}
		n = read(d->fd, d->buf + d->len, d->cap - d->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		d->len += (size_t)n;
	}
	return NULL;
}

/* kwf_reader_decrypt_fd into a pipe; the bytes that came out of it. */
static int
decrypt_to_pipe(struct kwf_reader *r, uint64_t off, uint64_t len,
    unsigned threads, uint8_t **ret_buf, size_t *ret_len)
{
	struct drain d = {0};
	pthread_t t;
	int p[2], rv;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	d.fd = p[0];
	assert_int_equal(pthread_create(&t, NULL, drain_run, &d), 0);
	rv = kwf_reader_decrypt_fd(r, p[1], off, len, threads, NULL, NULL);
	close(p[1]);
	pthread_join(t, NULL);
	close(p[0]);
	*ret_buf = d.buf;
	*ret_len = d.len;
	return rv;
}

/* --------------------------------------------------------------- tests */

static void
test_kwfile_roundtrip_sizes(void **state)
{
	static const size_t sizes[] = {0, 1, C - 1, C, C + 1, 3 * C + 17,
	    4 * C};
	uint8_t dek[KWF_DEK_LEN];

	(void)state;
	dek_new(dek);
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		for (unsigned threads = 1; threads <= 3; threads += 2) {
			size_t len = sizes[i], n = 99, outlen;
			uint8_t *plain = plain_new(len, i + 1), *buf, *out;
			int fd = encrypt_fd(plain, len, dek, threads);
			struct kwf_header *h = NULL;
			struct kwf_reader *r = NULL;

			assert_int_equal(open_reader(fd, dek, &h, &r), KW_OK);
			assert_int_equal(kwf_header_plaintext_len(h), len);
			assert_int_equal(kwf_header_chunk_size(h), C);
			assert_int_equal(fd_size(fd),
			    kwf_header_len(h) + len + TAG * nchunks(len, C));
			assert_int_equal(kwf_header_file_len(h), fd_size(fd));
			assert_int_equal(kwf_reader_size(r), len);
			buf = malloc(len + 10);
			assert_non_null(buf);
			assert_int_equal(kwf_reader_pread(r, buf, len + 10, 0,
			                     &n),
			    KW_OK);
			assert_int_equal(n, len);
			assert_memory_equal(buf, plain, len);
			assert_int_equal(kwf_reader_chunks_decrypted(r),
			    len == 0 ? 0 : nchunks(len, C));
			assert_int_equal(decrypt_to_pipe(r, 0, UINT64_MAX,
			                     threads, &out, &outlen),
			    KW_OK);
			assert_int_equal(outlen, len);
			if (len > 0)
				assert_memory_equal(out, plain, len);
			free(out);
			free(buf);
			free(plain);
			kwf_reader_free(r);
			kwf_header_free(h);
			close(fd);
		}
	}
}

/*
 * The chunk count: ceil(len / C), and one empty chunk for an empty file.
 * An exact multiple has no trailing empty chunk: its last full chunk
 * carries the last flag.
 */
static void
test_kwfile_chunk_count_rule(void **state)
{
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(2 * C, 7), tag[TAG];
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	int fd;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(plain, 0, dek, 1);
	assert_int_equal(open_reader(fd, dek, &h, &r), KW_OK);
	assert_int_equal(fd_size(fd), kwf_header_len(h) + TAG);
	kwf_reader_free(r);
	kwf_header_free(h);
	close(fd);

	fd = encrypt_fd(plain, 2 * C, dek, 1);
	assert_int_equal(open_reader(fd, dek, &h, &r), KW_OK);
	assert_int_equal(fd_size(fd), kwf_header_len(h) + 2 * (C + TAG));
	kwf_reader_free(r);
	/* An empty chunk appended after the last one is an extension. */
	memset(tag, 0, sizeof tag);
	pwrite_ok(fd, tag, TAG, fd_size(fd));
	assert_int_equal(kwf_reader_open(fd, h, dek, &r), KW_ERR_AUTH);
	kwf_header_free(h);
	close(fd);
	free(plain);
}

/* An empty file's one chunk is checked when the file is decrypted. */
static void
test_kwfile_empty_file_tag_checked(void **state)
{
	uint8_t dek[KWF_DEK_LEN], *out, b;
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	size_t outlen;
	int fd;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(NULL, 0, dek, 1);
	assert_int_equal(open_reader(fd, dek, &h, &r), KW_OK);
	assert_int_equal(decrypt_to_pipe(r, 0, UINT64_MAX, 1, &out, &outlen),
	    KW_OK);
	assert_int_equal(outlen, 0);
	free(out);
	assert_int_equal(kwf_reader_chunks_decrypted(r), 1);
	pread_ok(fd, &b, 1, kwf_header_len(h) + 3);
	b ^= 0x40;
	pwrite_ok(fd, &b, 1, kwf_header_len(h) + 3);
	assert_int_equal(decrypt_to_pipe(r, 0, UINT64_MAX, 1, &out, &outlen),
	    KW_ERR_AUTH);
	free(out);
	kwf_reader_free(r);
	kwf_header_free(h);
	close(fd);
}

static void
test_kwfile_header_fields_and_canonical_context(void **state)
{
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(100, 3), *raw;
	const struct kw_context_pair *ctx;
	struct kwf_header *h = NULL, *h2 = NULL;
	size_t rawlen, need;
	int fd;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(plain, 100, dek, 1);
	assert_int_equal(kwf_header_read_fd(fd, &h), KW_OK);
	assert_string_equal(kwf_header_key_name(h), "datasets");
	assert_int_equal(kwf_header_key_version(h), 3);
	assert_string_equal(kwf_header_wrapped(h), wrapped);
	/* Sorted by key, whatever order the encryptor was given. */
	assert_int_equal(kwf_header_context(h, &ctx), 2);
	assert_string_equal(ctx[0].key, "dataset");
	assert_string_equal(ctx[0].value, "imagenet-1k");
	assert_string_equal(ctx[1].key, "purpose");
	assert_string_equal(ctx[1].value, "train");
	assert_int_equal(kwf_header_len(h),
	    8 + 4 + 8 + 32 + 4 + 1 + 8 + 2 + strlen(wrapped) + 1 +
	        (1 + 7 + 2 + 11) + (1 + 7 + 2 + 5) + 32);

	/* Parsing from memory: every prefix asks for more. */
	raw = fd_bytes(fd, &rawlen);
	assert_memory_equal(raw, "KWFE\x01\x01", 6);
	for (size_t l = 0; l < kwf_header_len(h); l++) {
		need = 0;
		assert_int_equal(kwf_header_parse(raw, l, &h2, &need),
		    KW_ERR_INVALID);
		assert_int_equal(need, l < 8 ? 8 : kwf_header_len(h));
	}
	/* Chunk bytes after the header are not the parser's business. */
	assert_int_equal(kwf_header_parse(raw, rawlen, &h2, NULL), KW_OK);
	assert_int_equal(kwf_header_len(h2), kwf_header_len(h));
	kwf_header_free(h2);
	free(raw);
	kwf_header_free(h);
	close(fd);
	free(plain);
}

static void
test_kwfile_meta_refused(void **state)
{
	static const struct kw_context_pair dup[] = {{"a", "1"}, {"a", "2"}};
	static const struct kw_context_pair upper[] = {{"Dataset", "x"}};
	static const struct kw_context_pair digit[] = {{"1x", "x"}};
	static const struct kw_context_pair ctl[] = {{"a", "x\ny"}};
	static const struct kw_context_pair c1[] = {{"a", "x\xc2\x85y"}};
	static const struct kw_context_pair bad8[] = {{"a", "\xc0\xaf"}};
	static const struct kw_context_pair sur[] = {{"a", "\xed\xa0\x80"}};
	static const struct kw_context_pair cut[] = {{"a", "x\xe2\x82"}};
	char longv[300], longk[70];
	struct kw_context_pair many[33], big[1], bigk[1];
	uint8_t dek[KWF_DEK_LEN], salt[KWF_SALT_LEN], buf[KWF_HEADER_MAX];
	struct kwf_meta m;
	size_t len;
	int in, out;

	(void)state;
	dek_new(dek);
	memset(salt, 1, sizeof salt);
	memset(longv, 'v', sizeof longv - 1);
	longv[sizeof longv - 1] = '\0';
	memset(longk, 'k', sizeof longk - 1);
	longk[sizeof longk - 1] = '\0';
	big[0].key = "a";
	big[0].value = longv;
	bigk[0].key = longk;
	bigk[0].value = "v";
	for (int i = 0; i < 33; i++) {
		static char keys[33][8];

		snprintf(keys[i], sizeof keys[i], "k%02d", i);
		many[i].key = keys[i];
		many[i].value = "v";
	}
#define REFUSED(field, val, code)                                              \
	do {                                                                   \
		m = meta(C);                                                   \
		m.field = val;                                                 \
		assert_int_equal(kwf_test_header_build(&m, dek, salt, 10, buf, \
		                     sizeof buf, &len),                        \
		    code);                                                     \
	} while (0)
	REFUSED(key_name, "Datasets", KW_ERR_INVALID);
	REFUSED(key_name, "a..b", KW_ERR_INVALID);
	REFUSED(key_name, "", KW_ERR_INVALID);
	REFUSED(key_name, NULL, KW_ERR_INVALID);
	REFUSED(key_version, 0, KW_ERR_INVALID);
	REFUSED(wrapped, "", KW_ERR_INVALID);
	REFUSED(wrapped, "AAECAwQFBgcICQoLDA0ODw", KW_ERR_INVALID);
	REFUSED(wrapped, "AAECAwQFBgcICQoLDA0ODx==", KW_ERR_INVALID);
	REFUSED(wrapped, "AAEC AwQF", KW_ERR_INVALID);
	REFUSED(chunk_size, 4095, KW_ERR_INVALID);
	REFUSED(chunk_size, 2048, KW_ERR_INVALID);
	REFUSED(chunk_size, 3 * 4096, KW_ERR_INVALID);
	REFUSED(chunk_size, 128u << 20, KW_ERR_INVALID);
	REFUSED(ctx, dup, KW_ERR_INVALID);
	REFUSED(ctx, upper, KW_ERR_INVALID);
	REFUSED(ctx, digit, KW_ERR_INVALID);
	REFUSED(ctx, ctl, KW_ERR_INVALID);
	REFUSED(ctx, c1, KW_ERR_INVALID);
	REFUSED(ctx, bad8, KW_ERR_INVALID);
	REFUSED(ctx, sur, KW_ERR_INVALID);
	REFUSED(ctx, cut, KW_ERR_INVALID);
	REFUSED(ctx, big, KW_ERR_TOO_LARGE);
	REFUSED(ctx, bigk, KW_ERR_TOO_LARGE);
	m = meta(C);
	m.ctx = many;
	m.nctx = 33;
	assert_int_equal(kwf_test_header_build(&m, dek, salt, 10, buf,
	                     sizeof buf, &len),
	    KW_ERR_TOO_LARGE);
	m.nctx = 32;
	assert_int_equal(kwf_test_header_build(&m, dek, salt, 10, buf,
	                     sizeof buf, &len),
	    KW_OK);
	/* The limits themselves are accepted. */
	longv[256] = '\0';
	longk[64] = '\0';
	m = meta(0);
	big[0].value = longv;
	m.ctx = big;
	m.nctx = 1;
	assert_int_equal(kwf_test_header_build(&m, dek, salt, 10, buf,
	                     sizeof buf, &len),
	    KW_OK);
	m.ctx = bigk;
	assert_int_equal(kwf_test_header_build(&m, dek, salt, 10, buf,
	                     sizeof buf, &len),
	    KW_OK);
	/* The same checks guard kwf_encrypt_fd, which writes nothing then. */
	m = meta(C);
	m.ctx = dup;
	in = fd_with((const uint8_t *)"x", 1);
	out = tmp_fd();
	assert_int_equal(kwf_encrypt_fd(in, out, &m, dek, 1, NULL, NULL),
	    KW_ERR_INVALID);
	assert_int_equal(fd_size(out), 0);
	close(in);
	close(out);
#undef REFUSED
}

static void
test_kwfile_not_a_keyward_file(void **state)
{
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(10, 5), *raw, b;
	struct kwf_header *h = NULL;
	size_t len, need;
	int fd;

	(void)state;
	dek_new(dek);
	fd = tmp_fd();
	assert_int_equal(kwf_header_read_fd(fd, &h), KW_ERR_FORMAT);
	pwrite_ok(fd, "hello, world\n", 13, 0);
	assert_int_equal(kwf_header_read_fd(fd, &h), KW_ERR_FORMAT);
	close(fd);
	assert_int_equal(kwf_header_parse((const uint8_t *)"KWX", 3, &h, &need),
	    KW_ERR_FORMAT);

	fd = encrypt_fd(plain, 10, dek, 1);
	raw = fd_bytes(fd, &len);
	/* Magic, version and suite: FORMAT, not a malformed header. */
	for (size_t i = 0; i < 6; i++) {
		b = raw[i];
		raw[i] ^= 0x20;
		pwrite_ok(fd, &raw[i], 1, i);
		assert_int_equal(kwf_header_read_fd(fd, &h), KW_ERR_FORMAT);
		assert_int_equal(kwf_header_parse(raw, i + 1, &h, &need),
		    KW_ERR_FORMAT);
		raw[i] = b;
		pwrite_ok(fd, &b, 1, i);
	}
	raw[4] = 2;
	assert_int_equal(kwf_header_parse(raw, len, &h, NULL), KW_ERR_FORMAT);
	free(raw);
	close(fd);
	free(plain);
}

/*
 * Every header byte, edited three ways: never accepted. The prefix gives
 * FORMAT, a length or field that no longer parses INVALID or TOO_LARGE,
 * and whatever still parses fails the MAC.
 */
static void
test_kwfile_every_header_byte_edited(void **state)
{
	static const uint8_t flips[] = {0x01, 0x80, 0xff};
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(3 * C + 5, 11), orig;
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	size_t hlen, auth = 0;
	int fd;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(plain, 3 * C + 5, dek, 1);
	assert_int_equal(kwf_header_read_fd(fd, &h), KW_OK);
	hlen = kwf_header_len(h);
	kwf_header_free(h);
	for (size_t off = 0; off < hlen; off++) {
		pread_ok(fd, &orig, 1, off);
		for (size_t f = 0; f < sizeof flips; f++) {
			uint8_t b = orig ^ flips[f];
			int rv;

			pwrite_ok(fd, &b, 1, off);
			rv = open_reader(fd, dek, &h, &r);
			if (rv == KW_OK) {
				fail_msg("header byte %zu ^ 0x%02x accepted",
				    off, flips[f]);
			}
			if (rv != KW_ERR_AUTH && rv != KW_ERR_FORMAT &&
			    rv != KW_ERR_INVALID && rv != KW_ERR_TOO_LARGE)
				fail_msg("header byte %zu: %d", off, rv);
			if (off < 6)
				assert_int_equal(rv, KW_ERR_FORMAT);
			if (off >= hlen - 32)
				assert_int_equal(rv, KW_ERR_AUTH);
			auth += rv == KW_ERR_AUTH;
		}
		pwrite_ok(fd, &orig, 1, off);
	}
	/* The salt, plaintext length and MAC at least reach the MAC. */
	assert_true(auth >= 3 * (32 + 32));
	assert_int_equal(check_all(fd, dek), KW_OK);
	close(fd);
	free(plain);
}

static void
test_kwfile_header_truncated(void **state)
{
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(C, 2);
	struct kwf_header *h = NULL;
	size_t hlen;
	int fd;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(plain, C, dek, 1);
	assert_int_equal(kwf_header_read_fd(fd, &h), KW_OK);
	hlen = kwf_header_len(h);
	kwf_header_free(h);
	for (size_t l = hlen; l-- > 1;) {
		assert_int_equal(ftruncate(fd, (off_t)l), 0);
		assert_int_equal(kwf_header_read_fd(fd, &h), KW_ERR_INVALID);
	}
	close(fd);
	free(plain);
}

static void
test_kwfile_parse_limits(void **state)
{
	static const struct kw_context_pair two[] = {{"ab", "xy"},
	    {"ac", "xz"}};
	uint8_t dek[KWF_DEK_LEN], salt[KWF_SALT_LEN], buf[KWF_HEADER_MAX + 8];
	uint8_t bad[KWF_HEADER_MAX + 8];
	struct kwf_meta m = meta(C);
	struct kwf_header *h = NULL;
	size_t len, p;

	(void)state;
	dek_new(dek);
	memset(salt, 9, sizeof salt);
	m.ctx = two;
	assert_int_equal(kwf_test_header_build(&m, dek, salt, 5, buf,
	                     sizeof buf, &len),
	    KW_OK);
	assert_int_equal(kwf_header_parse(buf, len, &h, NULL), KW_OK);
	kwf_header_free(h);
	/* Pairs start after the pair count; each is 1+2+2+2 bytes here. */
	p = len - 32 - 2 * 7;
	assert_int_equal(buf[p - 1], 2);
	assert_memory_equal(buf + p,
	    "\x02"
	    "ab\x00\x02xy",
	    7);

#define EDIT(stmt, code)                                                      \
	do {                                                                  \
		memcpy(bad, buf, len);                                        \
		stmt;                                                         \
		assert_int_equal(kwf_header_parse(bad, len, &h, NULL), code); \
	} while (0)
	/* Pairs out of order, and a duplicate key. */
	EDIT((memcpy(bad + p, buf + p + 7, 7), memcpy(bad + p + 7, buf + p, 7)),
	    KW_ERR_INVALID);
	EDIT(bad[p + 2 + 7] = 'b', KW_ERR_INVALID);
	/* A control character, bad UTF-8, a bad key. */
	EDIT(bad[p + 5] = '\n', KW_ERR_INVALID);
	EDIT(bad[p + 5] = 0xc0, KW_ERR_INVALID);
	EDIT(bad[p + 1] = 'A', KW_ERR_INVALID);
	/* Over the limits. */
	EDIT(bad[p - 1] = 33, KW_ERR_TOO_LARGE);
	EDIT(bad[p] = 65, KW_ERR_TOO_LARGE);
	EDIT((bad[p + 3] = 0x01, bad[p + 4] = 0x01), KW_ERR_TOO_LARGE);
	EDIT((bad[6] = 0x40, bad[7] = 0x01), KW_ERR_TOO_LARGE);
	EDIT((bad[6] = 0, bad[7] = 20), KW_ERR_INVALID);
	/* Chunk size: a power of two in range. */
	EDIT(bad[10] = 0x30, KW_ERR_INVALID);
	EDIT((bad[8] = 0x08, bad[10] = 0), KW_ERR_INVALID);
	EDIT(bad[10] = 0x08, KW_ERR_INVALID);
	/* A plaintext length no file offset can hold. */
	EDIT(bad[12] = 0x80, KW_ERR_TOO_LARGE);
	EDIT((bad[12] = 0x7f, memset(bad + 13, 0xff, 6)), KW_ERR_TOO_LARGE);
	/* Key version 0, a bad name, a trailing byte before the MAC. */
	EDIT(memset(bad + 52, 0, 4), KW_ERR_INVALID);
	EDIT(bad[57] = '/', KW_ERR_INVALID);
	EDIT(bad[56] = 0, KW_ERR_INVALID);
	EDIT(bad[p - 1] = 1, KW_ERR_INVALID);
#undef EDIT
}

static void
test_kwfile_chunk_swap(void **state)
{
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(4 * C, 13);
	uint8_t a[C + TAG], b[C + TAG], buf[C], *out, *big;
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	size_t n, outlen;
	int fd;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(plain, 4 * C, dek, 1);
	assert_int_equal(kwf_header_read_fd(fd, &h), KW_OK);
	pread_ok(fd, a, sizeof a, chunk_off(h, 1));
	pread_ok(fd, b, sizeof b, chunk_off(h, 2));
	pwrite_ok(fd, b, sizeof b, chunk_off(h, 1));
	pwrite_ok(fd, a, sizeof a, chunk_off(h, 2));
	assert_int_equal(kwf_reader_open(fd, h, dek, &r), KW_OK);
	assert_int_equal(pread_chunk(r, 0, buf, &n), KW_OK);
	assert_memory_equal(buf, plain, C);
	assert_int_equal(pread_chunk(r, 1, buf, &n), KW_ERR_AUTH);
	assert_int_equal(pread_chunk(r, 2, buf, &n), KW_ERR_AUTH);
	assert_int_equal(pread_chunk(r, 3, buf, &n), KW_OK);
	/* All or nothing: on a failure the range is zeroed, whether it
	 * was opened in place (a whole chunk) or copied from scratch. */
	memset(buf, 0xaa, sizeof buf);
	assert_int_equal(kwf_reader_pread(r, buf, 100, C + 10, &n),
	    KW_ERR_AUTH);
	for (size_t i = 0; i < sizeof buf; i++)
		assert_int_equal(buf[i], i < 100 ? 0 : 0xaa);
	big = malloc(3 * C);
	assert_non_null(big);
	memset(big, 0xaa, 3 * C);
	assert_int_equal(kwf_reader_pread(r, big, 3 * C, 0, &n), KW_ERR_AUTH);
	for (size_t i = 0; i < 3 * C; i++)
		assert_int_equal(big[i], 0);
	free(big);
	assert_int_equal(decrypt_to_pipe(r, 0, UINT64_MAX, 2, &out, &outlen),
	    KW_ERR_AUTH);
	assert_true(outlen <= C);
	free(out);
	/* The last chunk moved before the end fails too. */
	kwf_reader_free(r);
	pwrite_ok(fd, a, sizeof a, chunk_off(h, 1));
	pwrite_ok(fd, b, sizeof b, chunk_off(h, 2));
	assert_int_equal(check_all(fd, dek), KW_OK);
	pread_ok(fd, a, sizeof a, chunk_off(h, 3));
	pwrite_ok(fd, a, sizeof a, chunk_off(h, 2));
	assert_int_equal(check_all(fd, dek), KW_ERR_AUTH);
	kwf_header_free(h);
	close(fd);
	free(plain);
}

/* Dropped chunks change the length: refused at open. */
static void
test_kwfile_chunk_dropped(void **state)
{
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(4 * C + 100, 17), *raw;
	struct kwf_header *h = NULL;
	size_t len;
	int fd, fd2;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(plain, 4 * C + 100, dek, 1);
	assert_int_equal(kwf_header_read_fd(fd, &h), KW_OK);
	raw = fd_bytes(fd, &len);
	for (uint64_t i = 0; i < 5; i++) {
		uint64_t a = chunk_off(h, i);
		size_t clen = i == 4 ? 100 + TAG : C + TAG;

		fd2 = fd_with(raw, (size_t)a);
		pwrite_ok(fd2, raw + a + clen, len - a - clen, a);
		assert_int_equal(check_all(fd2, dek), KW_ERR_AUTH);
		close(fd2);
	}
	free(raw);
	kwf_header_free(h);
	close(fd);
	free(plain);
}

static void
test_kwfile_chunk_duplicated(void **state)
{
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(4 * C, 19), *raw;
	uint8_t buf[C];
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	size_t len, n;
	int fd, fd2;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(plain, 4 * C, dek, 1);
	assert_int_equal(kwf_header_read_fd(fd, &h), KW_OK);
	raw = fd_bytes(fd, &len);
	/* Inserted after itself: longer, refused at open. */
	fd2 = fd_with(raw, (size_t)chunk_off(h, 2));
	pwrite_ok(fd2, raw + chunk_off(h, 1), C + TAG, chunk_off(h, 2));
	pwrite_ok(fd2, raw + chunk_off(h, 2), len - chunk_off(h, 2),
	    chunk_off(h, 3));
	assert_int_equal(check_all(fd2, dek), KW_ERR_AUTH);
	close(fd2);
	/* In place of another: same length, the copy fails. */
	fd2 = fd_with(raw, len);
	pwrite_ok(fd2, raw + chunk_off(h, 1), C + TAG, chunk_off(h, 2));
	assert_int_equal(kwf_reader_open(fd2, h, dek, &r), KW_OK);
	assert_int_equal(pread_chunk(r, 1, buf, &n), KW_OK);
	assert_int_equal(pread_chunk(r, 2, buf, &n), KW_ERR_AUTH);
	kwf_reader_free(r);
	close(fd2);
	free(raw);
	kwf_header_free(h);
	close(fd);
	free(plain);
}

/* Cut at every chunk boundary, one byte either side, and mid-chunk. */
static void
test_kwfile_truncated_everywhere(void **state)
{
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(5 * C + 7, 23);
	struct kwf_header *h = NULL;
	uint64_t flen;
	int fd;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(plain, 5 * C + 7, dek, 1);
	assert_int_equal(kwf_header_read_fd(fd, &h), KW_OK);
	flen = fd_size(fd);
	for (uint64_t i = 0; i <= 6; i++) {
		uint64_t b = i == 6 ? flen : chunk_off(h, i);
		const uint64_t cuts[] = {b - 1, b, b + 1, b + C / 2};

		for (size_t k = 0; k < 4; k++) {
			struct kwf_reader *r = NULL;

			if (cuts[k] >= flen)
				continue;
			assert_int_equal(ftruncate(fd, (off_t)cuts[k]), 0);
			assert_int_equal(kwf_reader_open(fd, h, dek, &r),
			    KW_ERR_AUTH);
		}
	}
	kwf_header_free(h);
	close(fd);
	free(plain);
}

/*
 * A file cut short after it was opened: the read that meets the end
 * fails as an integrity failure.
 */
static void
test_kwfile_truncated_while_open(void **state)
{
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(3 * C, 29), buf[C];
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	size_t n;
	int fd;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(plain, 3 * C, dek, 1);
	assert_int_equal(open_reader(fd, dek, &h, &r), KW_OK);
	assert_int_equal(ftruncate(fd, (off_t)chunk_off(h, 2) + 10), 0);
	assert_int_equal(pread_chunk(r, 1, buf, &n), KW_OK);
	assert_int_equal(pread_chunk(r, 2, buf, &n), KW_ERR_AUTH);
	kwf_reader_free(r);
	kwf_header_free(h);
	close(fd);
	free(plain);
}

static void
test_kwfile_extended(void **state)
{
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(2 * C + 3, 31);
	uint8_t chunk[C + TAG];
	struct kwf_header *h = NULL;
	uint64_t flen;
	int fd;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(plain, 2 * C + 3, dek, 1);
	assert_int_equal(kwf_header_read_fd(fd, &h), KW_OK);
	flen = fd_size(fd);
	pwrite_ok(fd, "", 1, flen);
	assert_int_equal(check_all(fd, dek), KW_ERR_AUTH);
	assert_int_equal(ftruncate(fd, (off_t)flen), 0);
	assert_int_equal(check_all(fd, dek), KW_OK);
	pread_ok(fd, chunk, sizeof chunk, chunk_off(h, 0));
	pwrite_ok(fd, chunk, sizeof chunk, flen);
	assert_int_equal(check_all(fd, dek), KW_ERR_AUTH);
	kwf_header_free(h);
	close(fd);
	free(plain);
}

/*
 * Two files under the same DEK and of the same length: a chunk of one in
 * the other fails (other salt, other key, other header MAC in the AAD),
 * and so does one's header over the other's chunks.
 */
static void
test_kwfile_chunk_from_other_file_same_dek(void **state)
{
	uint8_t dek[KWF_DEK_LEN], *pa = plain_new(3 * C, 37);
	uint8_t *pb = plain_new(3 * C, 41), chunk[C + TAG], buf[C];
	struct kwf_header *ha, *hb;
	struct kwf_reader *r = NULL;
	size_t n;
	int fa, fb;

	(void)state;
	dek_new(dek);
	fa = encrypt_fd(pa, 3 * C, dek, 1);
	fb = encrypt_fd(pb, 3 * C, dek, 1);
	assert_int_equal(kwf_header_read_fd(fa, &ha), KW_OK);
	assert_int_equal(kwf_header_read_fd(fb, &hb), KW_OK);
	assert_int_equal(kwf_header_len(ha), kwf_header_len(hb));
	pread_ok(fb, chunk, sizeof chunk, chunk_off(hb, 1));
	pwrite_ok(fa, chunk, sizeof chunk, chunk_off(ha, 1));
	assert_int_equal(kwf_reader_open(fa, ha, dek, &r), KW_OK);
	assert_int_equal(pread_chunk(r, 0, buf, &n), KW_OK);
	assert_int_equal(pread_chunk(r, 1, buf, &n), KW_ERR_AUTH);
	kwf_reader_free(r);
	/* B's header over A's chunks: the header is authentic, A's chunks
	 * are not B's (chunk 1 now is). */
	assert_int_equal(kwf_reader_open(fa, hb, dek, &r), KW_OK);
	assert_int_equal(pread_chunk(r, 0, buf, &n), KW_ERR_AUTH);
	assert_int_equal(pread_chunk(r, 1, buf, &n), KW_OK);
	assert_memory_equal(buf, pb + C, C);
	assert_int_equal(pread_chunk(r, 2, buf, &n), KW_ERR_AUTH);
	kwf_reader_free(r);
	kwf_header_free(ha);
	kwf_header_free(hb);
	close(fa);
	close(fb);
	free(pa);
	free(pb);
}

static void
test_kwfile_wrong_dek(void **state)
{
	uint8_t dek[KWF_DEK_LEN], other[KWF_DEK_LEN];
	uint8_t *plain = plain_new(C + 1, 43);
	int fd;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(plain, C + 1, dek, 1);
	memcpy(other, dek, sizeof other);
	other[31] ^= 1;
	assert_int_equal(check_all(fd, other), KW_ERR_AUTH);
	dek_new(other);
	assert_int_equal(check_all(fd, other), KW_ERR_AUTH);
	assert_int_equal(check_all(fd, dek), KW_OK);
	close(fd);
	free(plain);
}

/*
 * A file built chunk by chunk with the test hooks decrypts exactly like
 * kwf_encrypt_fd's; a chunk sealed with the wrong last flag does not.
 */
static void
test_kwfile_last_flag_bound(void **state)
{
	uint8_t dek[KWF_DEK_LEN], salt[KWF_SALT_LEN], hdr[KWF_HEADER_MAX];
	uint8_t *plain = plain_new(2 * C, 47), ct[C + TAG], buf[C];
	struct kwf_meta m = meta(C);
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	size_t hlen, n;
	int fd = tmp_fd();

	(void)state;
	dek_new(dek);
	randombytes_buf(salt, sizeof salt);
	assert_int_equal(kwf_test_header_build(&m, dek, salt, 2 * C, hdr,
	                     sizeof hdr, &hlen),
	    KW_OK);
	pwrite_ok(fd, hdr, hlen, 0);
	assert_int_equal(kwf_header_parse(hdr, hlen, &h, NULL), KW_OK);
	for (uint64_t i = 0; i < 2; i++) {
		assert_int_equal(kwf_test_chunk_seal(h, dek, i, i == 1,
		                     plain + i * C, C, ct),
		    KW_OK);
		pwrite_ok(fd, ct, sizeof ct, chunk_off(h, i));
	}
	assert_int_equal(check_all(fd, dek), KW_OK);
	/* Chunk 0 marked last: a file that seems to end there. */
	assert_int_equal(kwf_test_chunk_seal(h, dek, 0, 1, plain, C, ct),
	    KW_OK);
	pwrite_ok(fd, ct, sizeof ct, chunk_off(h, 0));
	/* Chunk 1 not marked last: a file that seems to go on. */
	assert_int_equal(kwf_test_chunk_seal(h, dek, 1, 0, plain + C, C, ct),
	    KW_OK);
	pwrite_ok(fd, ct, sizeof ct, chunk_off(h, 1));
	assert_int_equal(kwf_reader_open(fd, h, dek, &r), KW_OK);
	assert_int_equal(pread_chunk(r, 0, buf, &n), KW_ERR_AUTH);
	assert_int_equal(pread_chunk(r, 1, buf, &n), KW_ERR_AUTH);
	kwf_reader_free(r);
	kwf_header_free(h);
	close(fd);
	free(plain);
}

static void
test_kwfile_random_ranges(void **state)
{
	const size_t len = 37 * C + 1234;
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(len, 53), *buf;
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	uint64_t seed = 0x6b657977617264ull;
	int fd;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(plain, len, dek, 2);
	assert_int_equal(open_reader(fd, dek, &h, &r), KW_OK);
	buf = malloc(3 * C + 1);
	assert_non_null(buf);
	for (int k = 0; k < 3000; k++) {
		uint64_t off = rnd(&seed) % (len + 100);
		size_t want = (size_t)(rnd(&seed) % (3 * C + 1)), n = 7, exp;
		uint64_t before = kwf_reader_chunks_decrypted(r), chunks;

		/* Ranges that start or end on chunk boundaries, often. */
		if (k % 4 == 1)
			off -= off % C;
		if (k % 4 == 2)
			want = (size_t)(C - off % C + (rnd(&seed) % 3) * C);
		if (want > 3 * C + 1)
			want = 3 * C + 1;
		exp = off >= len ? 0 : (len - off < want ? len - off : want);
		assert_int_equal(kwf_reader_pread(r, buf, want, off, &n),
		    KW_OK);
		assert_int_equal(n, exp);
		if (exp > 0)
			assert_memory_equal(buf, plain + off, exp);
		chunks = exp == 0 ? 0 : (off + exp - 1) / C - off / C + 1;
		assert_int_equal(kwf_reader_chunks_decrypted(r) - before,
		    chunks);
	}
	free(buf);
	kwf_reader_free(r);
	kwf_header_free(h);
	close(fd);
	free(plain);
}

/* Exactly the chunks a range touches are decrypted, no more. */
static void
test_kwfile_pread_counts_touched_chunks(void **state)
{
	static const struct {
		uint64_t off;
		size_t len;
		uint64_t chunks;
	} cases[] = {
	    {0, 1, 1},
	    {0, C, 1},
	    {0, C + 1, 2},
	    {C - 1, 2, 2},
	    {C, C, 1},
	    {5 * C, 4096, 1},
	    {3 * C + 100, 3 * C, 4},
	    {0, 10 * C + 50, 11},
	    {10 * C + 49, 1, 1},
	    {10 * C + 50, 1, 0},
	    {1ull << 40, 1, 0},
	    {7, 0, 0},
	};
	const size_t len = 10 * C + 50;
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(len, 59), *buf;
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	int fd;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(plain, len, dek, 1);
	assert_int_equal(open_reader(fd, dek, &h, &r), KW_OK);
	assert_int_equal(kwf_reader_chunks_decrypted(r), 0);
	buf = malloc(len + C);
	assert_non_null(buf);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint64_t before = kwf_reader_chunks_decrypted(r);
		size_t n;

		assert_int_equal(kwf_reader_pread(r, buf, cases[i].len,
		                     cases[i].off, &n),
		    KW_OK);
		assert_int_equal(kwf_reader_chunks_decrypted(r) - before,
		    cases[i].chunks);
	}
	free(buf);
	kwf_reader_free(r);
	kwf_header_free(h);
	close(fd);
	free(plain);
}

struct preader {
	struct kwf_reader *r;
	const uint8_t *plain;
	size_t len;
	uint64_t seed;
	uint64_t chunks;
	int bad;
};

static void *
preader_run(void *arg)
{
	struct preader *p = arg;
	uint8_t *buf = malloc(2 * C);

	if (buf == NULL) {
		p->bad++;
		return NULL;
	}
	for (int k = 0; k < 400; k++) {
		uint64_t off = rnd(&p->seed) % p->len;
		size_t want = (size_t)(rnd(&p->seed) % (2 * C)) + 1, n = 0, e;

		e = p->len - off < want ? p->len - off : want;
		if (kwf_reader_pread(p->r, buf, want, off, &n) != KW_OK ||
		    n != e || memcmp(buf, p->plain + off, e) != 0)
			p->bad++;
		p->chunks += (off + e - 1) / C - off / C + 1;
	}
	free(buf);
	return NULL;
}

static void
test_kwfile_concurrent_preads(void **state)
{
	const size_t len = 64 * C + 99;
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(len, 61);
	struct preader p[4];
	pthread_t t[4];
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	uint64_t total = 0;
	int fd;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(plain, len, dek, 4);
	assert_int_equal(open_reader(fd, dek, &h, &r), KW_OK);
	for (int i = 0; i < 4; i++) {
		p[i] = (struct preader){r, plain, len, 1000 + i, 0, 0};
		assert_int_equal(pthread_create(&t[i], NULL, preader_run,
		                     &p[i]),
		    0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(p[i].bad, 0);
		total += p[i].chunks;
	}
	assert_int_equal(kwf_reader_chunks_decrypted(r), total);
	kwf_reader_free(r);
	kwf_header_free(h);
	close(fd);
	free(plain);
}

/*
 * A plaintext over 4 GiB, in a sparse file: the header says 5 GiB + 123
 * bytes, and only the chunks read are written, at their offsets. Offsets
 * beyond 2^32 in both plaintext and file are exercised.
 */
static void
test_kwfile_beyond_4gib_sparse(void **state)
{
	const uint64_t len = (5ull << 30) + 123, four = 1ull << 32;
	const uint64_t k0 = four / C - 1, last = (len - 1) / C;
	uint8_t dek[KWF_DEK_LEN], salt[KWF_SALT_LEN], hdr[KWF_HEADER_MAX];
	uint8_t *plain = plain_new(3 * C, 67), ct[C + TAG], buf[2 * C], *out;
	struct kwf_meta m = meta(C);
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	size_t hlen, n, outlen;
	int fd = tmp_fd();

	(void)state;
	dek_new(dek);
	randombytes_buf(salt, sizeof salt);
	assert_int_equal(kwf_test_header_build(&m, dek, salt, len, hdr,
	                     sizeof hdr, &hlen),
	    KW_OK);
	assert_int_equal(kwf_header_parse(hdr, hlen, &h, NULL), KW_OK);
	assert_int_equal(ftruncate(fd, (off_t)kwf_header_file_len(h)), 0);
	pwrite_ok(fd, hdr, hlen, 0);
	/* Chunks k0 and k0 + 1 meet at plaintext offset 2^32; the last
	 * holds len % C bytes. */
	for (uint64_t i = 0; i < 2; i++) {
		assert_int_equal(kwf_test_chunk_seal(h, dek, k0 + i, 0,
		                     plain + i * C, C, ct),
		    KW_OK);
		pwrite_ok(fd, ct, C + TAG, chunk_off(h, k0 + i));
	}
	assert_true(chunk_off(h, k0 + 1) > four);
	assert_int_equal(kwf_test_chunk_seal(h, dek, last, 1, plain + 2 * C,
	                     (size_t)(len % C), ct),
	    KW_OK);
	pwrite_ok(fd, ct, (size_t)(len % C) + TAG, chunk_off(h, last));
	assert_int_equal(kwf_reader_open(fd, h, dek, &r), KW_OK);
	assert_int_equal(kwf_reader_size(r), len);

	assert_int_equal(kwf_reader_pread(r, buf, 200, four - 100, &n), KW_OK);
	assert_int_equal(n, 200);
	assert_memory_equal(buf, plain + C - 100, 200);
	assert_int_equal(kwf_reader_chunks_decrypted(r), 2);
	assert_int_equal(kwf_reader_pread(r, buf, C, four, &n), KW_OK);
	assert_memory_equal(buf, plain + C, C);
	assert_int_equal(kwf_reader_pread(r, buf, 1000, len - 50, &n), KW_OK);
	assert_int_equal(n, 50);
	assert_memory_equal(buf, plain + 2 * C + len % C - 50, 50);
	assert_int_equal(kwf_reader_pread(r, buf, 10, len, &n), KW_OK);
	assert_int_equal(n, 0);
	/* A hole is no chunk. */
	assert_int_equal(kwf_reader_pread(r, buf, 10, four + C, &n),
	    KW_ERR_AUTH);
	assert_int_equal(decrypt_to_pipe(r, four - 10, 20, 2, &out, &outlen),
	    KW_OK);
	assert_int_equal(outlen, 20);
	assert_memory_equal(out, plain + C - 10, 20);
	free(out);
	assert_int_equal(decrypt_to_pipe(r, len - 7, UINT64_MAX, 1, &out,
	                     &outlen),
	    KW_OK);
	assert_int_equal(outlen, 7);
	assert_memory_equal(out, plain + 2 * C + len % C - 7, 7);
	free(out);
	kwf_reader_free(r);
	kwf_header_free(h);
	close(fd);
	free(plain);
}

struct progress {
	unsigned long long last;
	unsigned long long total;
	int calls;
	int backwards;
	pthread_t thread;
	int other_thread;
};

static void
progress_cb(void *arg, unsigned long long done, unsigned long long total)
{
	struct progress *p = arg;

	if (done < p->last)
		p->backwards++;
	if (!pthread_equal(pthread_self(), p->thread))
		p->other_thread++;
	p->last = done;
	p->total = total;
	p->calls++;
}

static void
test_kwfile_decrypt_fd_pipe_and_ranges(void **state)
{
	static const struct {
		uint64_t off;
		uint64_t len;
	} cases[] = {
	    {0, UINT64_MAX},
	    {C / 2, 30 * C},
	    {C, C},
	    {49 * C, UINT64_MAX},
	    {50 * C + 6, 1},
	    {50 * C + 6, 100},
	    {50 * C + 7, 1},
	    {3, 0},
	    {UINT64_MAX, 5},
	};
	const size_t len = 50 * C + 7;
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(len, 71), *out;
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	size_t outlen;
	int fd;

	(void)state;
	dek_new(dek);
	fd = encrypt_fd(plain, len, dek, 2);
	assert_int_equal(open_reader(fd, dek, &h, &r), KW_OK);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		for (unsigned threads = 1; threads <= 3; threads++) {
			uint64_t off = cases[i].off, exp;

			exp = off >= len               ? 0
			    : len - off < cases[i].len ? len - off
			                               : cases[i].len;
			assert_int_equal(decrypt_to_pipe(r, off, cases[i].len,
			                     threads, &out, &outlen),
			    KW_OK);
			assert_int_equal(outlen, exp);
			if (exp > 0)
				assert_memory_equal(out, plain + off, exp);
			free(out);
		}
	}
	kwf_reader_free(r);
	kwf_header_free(h);
	close(fd);
	free(plain);
}

/*
 * Many threads write what one thread would: every chunk of a file
 * encrypted by 4 threads equals the same chunk sealed alone, and decrypting
 * with 1 or 4 threads writes the same bytes. Progress comes from the
 * calling thread only, in order, and ends at the total.
 */
static void
test_kwfile_threads_identical(void **state)
{
	const size_t len = 40 * C + 333;
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(len, 73), *raw;
	uint8_t ct[C + TAG], *o1, *o4;
	struct kwf_meta m = meta(C);
	struct progress pe = {0}, pd = {0};
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	size_t rawlen, l1, l4;
	int in, fd, o;

	(void)state;
	dek_new(dek);
	in = fd_with(plain, len);
	fd = tmp_fd();
	pe.thread = pthread_self();
	assert_int_equal(kwf_encrypt_fd(in, fd, &m, dek, 4, progress_cb, &pe),
	    KW_OK);
	close(in);
	assert_int_equal(pe.backwards, 0);
	assert_int_equal(pe.other_thread, 0);
	assert_int_equal(pe.last, len);
	assert_int_equal(pe.total, len);
	assert_int_equal(kwf_header_read_fd(fd, &h), KW_OK);
	raw = fd_bytes(fd, &rawlen);
	for (uint64_t i = 0; i < nchunks(len, C); i++) {
		size_t clen = i * C + C <= len ? C : len % C;

		assert_int_equal(kwf_test_chunk_seal(h, dek, i,
		                     i + 1 == nchunks(len, C), plain + i * C,
		                     clen, ct),
		    KW_OK);
		assert_memory_equal(raw + chunk_off(h, i), ct, clen + TAG);
	}
	free(raw);
	assert_int_equal(kwf_reader_open(fd, h, dek, &r), KW_OK);
	assert_int_equal(decrypt_to_pipe(r, 0, UINT64_MAX, 1, &o1, &l1), KW_OK);
	o = tmp_fd();
	pd.thread = pthread_self();
	assert_int_equal(kwf_reader_decrypt_fd(r, o, 0, UINT64_MAX, 4,
	                     progress_cb, &pd),
	    KW_OK);
	o4 = fd_bytes(o, &l4);
	assert_int_equal(l1, len);
	assert_int_equal(l4, len);
	assert_memory_equal(o1, plain, len);
	assert_memory_equal(o4, o1, len);
	assert_int_equal(pd.backwards, 0);
	assert_int_equal(pd.other_thread, 0);
	assert_int_equal(pd.last, len);
	assert_true(pd.calls >= 1);
	free(o1);
	free(o4);
	close(o);
	kwf_reader_free(r);
	kwf_header_free(h);
	close(fd);
	free(plain);
}

static void
test_kwfile_not_regular_and_write_errors(void **state)
{
	uint8_t dek[KWF_DEK_LEN], *plain = plain_new(8 * C, 79);
	struct kwf_meta m = meta(C);
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	int p[2], fd, out;

	(void)state;
	dek_new(dek);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	out = tmp_fd();
	assert_int_equal(kwf_encrypt_fd(p[0], out, &m, dek, 1, NULL, NULL),
	    KW_ERR_INVALID);
	close(out);
	fd = encrypt_fd(plain, 8 * C, dek, 1);
	assert_int_equal(kwf_header_read_fd(fd, &h), KW_OK);
	assert_int_equal(kwf_reader_open(p[0], h, dek, &r), KW_ERR_INVALID);
	assert_int_equal(kwf_reader_open(fd, h, dek, &r), KW_OK);
	/* A pipe nobody reads: the write fails, errno says why. */
	close(p[0]);
	for (unsigned threads = 1; threads <= 2; threads++) {
		errno = 0;
		assert_int_equal(kwf_reader_decrypt_fd(r, p[1], 0, UINT64_MAX,
		                     threads, NULL, NULL),
		    KW_ERR_IO);
		assert_int_equal(errno, EPIPE);
	}
	close(p[1]);
	kwf_reader_free(r);
	kwf_header_free(h);
	close(fd);
	free(plain);
}

/* ---------------------------------------------------------------- main */

static int
group_setup(void **state)
{
	(void)state;
	if (sodium_init() < 0)
		return -1;
	snprintf(tmpdir, sizeof tmpdir, "%s", "/tmp/test_kwfile.XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	/* Every file is unnamed (O_TMPFILE): the directory is empty. */
	return rmdir(tmpdir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_kwfile_roundtrip_sizes),
	    cmocka_unit_test(test_kwfile_chunk_count_rule),
	    cmocka_unit_test(test_kwfile_empty_file_tag_checked),
	    cmocka_unit_test(test_kwfile_header_fields_and_canonical_context),
	    cmocka_unit_test(test_kwfile_meta_refused),
	    cmocka_unit_test(test_kwfile_not_a_keyward_file),
	    cmocka_unit_test(test_kwfile_every_header_byte_edited),
	    cmocka_unit_test(test_kwfile_header_truncated),
	    cmocka_unit_test(test_kwfile_parse_limits),
	    cmocka_unit_test(test_kwfile_chunk_swap),
	    cmocka_unit_test(test_kwfile_chunk_dropped),
	    cmocka_unit_test(test_kwfile_chunk_duplicated),
	    cmocka_unit_test(test_kwfile_truncated_everywhere),
	    cmocka_unit_test(test_kwfile_truncated_while_open),
	    cmocka_unit_test(test_kwfile_extended),
	    cmocka_unit_test(test_kwfile_chunk_from_other_file_same_dek),
	    cmocka_unit_test(test_kwfile_wrong_dek),
	    cmocka_unit_test(test_kwfile_last_flag_bound),
	    cmocka_unit_test(test_kwfile_random_ranges),
	    cmocka_unit_test(test_kwfile_pread_counts_touched_chunks),
	    cmocka_unit_test(test_kwfile_concurrent_preads),
	    cmocka_unit_test(test_kwfile_beyond_4gib_sparse),
	    cmocka_unit_test(test_kwfile_decrypt_fd_pipe_and_ranges),
	    cmocka_unit_test(test_kwfile_threads_identical),
	    cmocka_unit_test(test_kwfile_not_regular_and_write_errors),
	};

	/* A closed pipe is an error to see, not a signal to die of. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

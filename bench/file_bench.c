/*
 * file_bench.c: the encrypted file format's throughput (client/kwfile.c),
 * the measuring half of bench/file_bench, which runs `openssl speed`
 * between rounds and judges the goals of DESIGN.md section 5.
 *
 *   file_bench prepare DIR MIB CHUNK
 *       DIR/plain: MIB MiB of pseudo-random bytes; DIR/enc: it encrypted
 *       with chunk size CHUNK; DIR/out: a file of DIR/enc's size that
 *       encryption runs overwrite (its pages allocated once, here, so
 *       that rounds measure encryption, not tmpfs allocation).
 *
 *   file_bench round DIR THREADS SECONDS
 *       One round, one JSON line on stdout, rates in bytes/s:
 *         evp      in-process AES-256-GCM decryption of one 1 MiB buffer
 *                  in place, over and over (EVP, as `openssl speed` does)
 *         read     reading DIR/enc in 1 MiB preads, nothing else: the
 *                  copy from the page cache every file decryption pays
 *         enc1     kwf_encrypt_fd DIR/plain -> DIR/out, 1 thread
 *         encN     the same, THREADS threads
 *         dec1     kwf_reader_decrypt_fd DIR/enc -> /dev/null, 1 thread
 *         decN     the same, THREADS threads
 *         rand1    random 4 KiB-aligned 4 KiB kwf_reader_preads for
 *                  SECONDS, 1 thread: reads/s, chunks decrypted per read
 *         randN    the same from THREADS threads on one reader
 *
 * The DEK is a constant: the files are throw-away and nothing here is a
 * secret. Plaintext rates count plaintext bytes.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kwfile.h"

#define PROG "file_bench"
#define MIB ((size_t)1 << 20)
#define READ_LEN 4096
#define MAX_THREADS 64

static uint8_t dek[KWF_DEK_LEN];

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *what, int rv)
{
	if (rv != 0)
		fprintf(stderr, "%s: %s: %s\n", PROG, what, kw_strerror(rv));
	else
		fprintf(stderr, "%s: %s: %s\n", PROG, what, strerror(errno));
	exit(3);
}

static int
open_in(const char *dir, const char *name, int flags)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	fd = open(path, flags | O_CLOEXEC, 0600);
	if (fd < 0)
		die(path, 0);
	return fd;
}

static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

static struct kwf_meta
bench_meta(uint32_t chunk)
{
	static const struct kw_context_pair ctx[] = {{"dataset", "bench"}};
	struct kwf_meta m = {
	    .key_name = "bench",
	    .key_version = 1,
	    .wrapped = "AAECAwQFBgcICQoLDA0ODw==",
	    .ctx = ctx,
	    .nctx = 1,
	    .chunk_size = chunk,
	};

	return m;
}

static int
prepare(const char *dir, size_t mib, uint32_t chunk)
{
	struct kwf_meta m = bench_meta(chunk);
	uint64_t seed = 0x66696c6562656e63ull;
	uint8_t *buf = malloc(MIB);
	int in, out, rv;

	if (buf == NULL)
		die("malloc", 0);
	in = open_in(dir, "plain", O_RDWR | O_CREAT | O_TRUNC);
	for (size_t i = 0; i < mib; i++) {
		for (size_t k = 0; k < MIB; k += 8) {
			uint64_t v = rnd(&seed) | 1;

			memcpy(buf + k, &v, 8);
		}
		if (pwrite(in, buf, MIB, (off_t)(i * MIB)) != (ssize_t)MIB)
			die("writing plain", 0);
	}
	free(buf);
	out = open_in(dir, "enc", O_RDWR | O_CREAT | O_TRUNC);
	rv = kwf_encrypt_fd(in, out, &m, dek, 0, NULL, NULL);
	if (rv != KW_OK)
		die("kwf_encrypt_fd", rv);
	close(out);
	out = open_in(dir, "out", O_RDWR | O_CREAT | O_TRUNC);
	rv = kwf_encrypt_fd(in, out, &m, dek, 0, NULL, NULL);
	if (rv != KW_OK)
		die("kwf_encrypt_fd", rv);
	close(out);
	close(in);
	return 0;
}

/* EVP AES-256-GCM, 1 MiB in place, for about secs seconds. */
static double
evp_rate(double secs)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	uint8_t *buf = malloc(MIB), key[32], iv[12], tag[16];
	double t0, t;
	uint64_t n = 0;
	int len;

	if (ctx == NULL || buf == NULL)
		die("EVP", 0);
	memset(buf, 0x5a, MIB);
	memset(key, 0x11, sizeof key);
	memset(iv, 0x22, sizeof iv);
	memset(tag, 0, sizeof tag);
	if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, iv) != 1)
		die("EVP_DecryptInit_ex", 0);
	t0 = now();
	do {
		for (int k = 0; k < 16; k++) {
			/* The tag does not match; the work is done all the
			 * same, as in `openssl speed -decrypt`. */
			if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, iv) !=
			        1 ||
			    EVP_DecryptUpdate(ctx, buf, &len, buf, (int)MIB) !=
			        1 ||
			    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16,
			        tag) != 1)
				die("EVP_DecryptUpdate", 0);
			(void)EVP_DecryptFinal_ex(ctx, buf, &len);
			n++;
		}
		t = now() - t0;
	} while (t < secs);
	EVP_CIPHER_CTX_free(ctx);
	free(buf);
	return (double)n * MIB / t;
}

/* The page-cache copy alone: DIR/enc in 1 MiB preads. */
static double
read_rate(int fd)
{
	uint8_t *buf = malloc(MIB);
	struct stat st;
	uint64_t off = 0;
	double t0;

	if (buf == NULL || fstat(fd, &st) != 0)
		die("read", 0);
	t0 = now();
	while (off < (uint64_t)st.st_size) {
		ssize_t n = pread(fd, buf, MIB, (off_t)off);

		if (n <= 0)
			die("pread", 0);
		off += (uint64_t)n;
	}
	free(buf);
	return (double)off / (now() - t0);
}

static double
enc_rate(const char *dir, unsigned threads, uint32_t chunk)
{
	struct kwf_meta m = bench_meta(chunk);
	int in = open_in(dir, "plain", O_RDONLY);
	int out = open_in(dir, "out", O_RDWR);
	struct stat st;
	double t0, t;
	int rv;

	if (fstat(in, &st) != 0)
		die("fstat", 0);
	t0 = now();
	rv = kwf_encrypt_fd(in, out, &m, dek, threads, NULL, NULL);
	t = now() - t0;
	if (rv != KW_OK)
		die("kwf_encrypt_fd", rv);
	close(in);
	close(out);
	return (double)st.st_size / t;
}

static double
dec_rate(struct kwf_reader *r, int devnull, unsigned threads)
{
	double t0 = now(), t;
	int rv;

	rv = kwf_reader_decrypt_fd(r, devnull, 0, UINT64_MAX, threads, NULL,
	    NULL);
	t = now() - t0;
	if (rv != KW_OK)
		die("kwf_reader_decrypt_fd", rv);
	return (double)kwf_reader_size(r) / t;
}

struct rand_job {
	struct kwf_reader *r;
	double secs;
	uint64_t seed;
	uint64_t reads;
};

static void *
rand_run(void *arg)
{
	struct rand_job *j = arg;
	uint64_t slots = kwf_reader_size(j->r) / READ_LEN;
	uint8_t buf[READ_LEN];
	double t0 = now();

	do {
		for (int k = 0; k < 8; k++) {
			uint64_t off = rnd(&j->seed) % slots * READ_LEN;
			size_t n;
			int rv;

			rv = kwf_reader_pread(j->r, buf, READ_LEN, off, &n);
			if (rv != KW_OK || n != READ_LEN)
				die("kwf_reader_pread", rv);
			j->reads++;
		}
	} while (now() - t0 < j->secs);
	return NULL;
}

/* Random 4 KiB reads from threads threads: reads/s, chunks per read. */
static void
rand_rate(struct kwf_reader *r, unsigned threads, double secs, double *ret_rate,
    double *ret_chunks)
{
	struct rand_job j[MAX_THREADS];
	pthread_t t[MAX_THREADS];
	uint64_t c0 = kwf_reader_chunks_decrypted(r), reads = 0;
	double t0 = now(), el;

	for (unsigned i = 0; i < threads; i++) {
		j[i] = (struct rand_job){r, secs, 0x72616e64ull + i, 0};
		if (pthread_create(&t[i], NULL, rand_run, &j[i]) != 0)
			die("pthread_create", 0);
	}
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		reads += j[i].reads;
	}
	el = now() - t0;
	*ret_rate = (double)reads / el;
	*ret_chunks =
	    (double)(kwf_reader_chunks_decrypted(r) - c0) / (double)reads;
}

static int
round_run(const char *dir, unsigned threads, double secs)
{
	struct kwf_header *h;
	struct kwf_reader *r;
	double evp, rd, e1, en, d1, dn, r1, rc1, rn, rcn;
	uint32_t chunk;
	int fd, devnull, rv;

	fd = open_in(dir, "enc", O_RDONLY);
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (devnull < 0)
		die("/dev/null", 0);
	rv = kwf_header_read_fd(fd, &h);
	if (rv == KW_OK)
		rv = kwf_reader_open(fd, h, dek, &r);
	if (rv != KW_OK)
		die("opening enc", rv);
	chunk = kwf_header_chunk_size(h);

	evp = evp_rate(secs);
	rd = read_rate(fd);
	e1 = enc_rate(dir, 1, chunk);
	en = enc_rate(dir, threads, chunk);
	d1 = dec_rate(r, devnull, 1);
	dn = dec_rate(r, devnull, threads);
	rand_rate(r, 1, secs, &r1, &rc1);
	rand_rate(r, threads, secs, &rn, &rcn);
	printf("{\"threads\": %u, \"chunk\": %u, \"size\": %llu, "
	       "\"evp\": %.0f, \"read\": %.0f, \"enc1\": %.0f, "
	       "\"encN\": %.0f, \"dec1\": %.0f, \"decN\": %.0f, "
	       "\"rand1\": %.1f, \"rand1_chunks\": %.4f, "
	       "\"randN\": %.1f, \"randN_chunks\": %.4f}\n",
	    threads, chunk, (unsigned long long)kwf_reader_size(r), evp, rd, e1,
	    en, d1, dn, r1, rc1, rn, rcn);
	fflush(stdout);
	kwf_reader_free(r);
	kwf_header_free(h);
	close(devnull);
	close(fd);
	return 0;
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: %s prepare DIR MIB CHUNK\n"
	    "       %s round DIR THREADS SECONDS\n"
	    "(bench/file_bench runs both; see bench/README.md)\n",
	    PROG, PROG);
	exit(2);
}

int
main(int argc, char **argv)
{
	memset(dek, 0x42, sizeof dek);
	if (argc == 5 && strcmp(argv[1], "prepare") == 0) {
		long mib = strtol(argv[3], NULL, 10);
		long chunk = strtol(argv[4], NULL, 10);

		if (mib < 1 || mib > (1L << 20) || chunk < KWF_CHUNK_MIN ||
		    chunk > KWF_CHUNK_MAX)
			usage();
		return prepare(argv[2], (size_t)mib, (uint32_t)chunk);
	}
	if (argc == 5 && strcmp(argv[1], "round") == 0) {
		long threads = strtol(argv[3], NULL, 10);
		double secs = strtod(argv[4], NULL);

		if (threads < 1 || threads > MAX_THREADS || !(secs >= 0.05) ||
		    secs > 3600)
			usage();
		return round_run(argv[2], (unsigned)threads, secs);
	}
	usage();
	return 2;
}

/*
 * secret.c: pooled, guarded, locked memory for secret bytes.
 *
 * The arena is a list of 1 MiB chunks, each one sodium_malloc() region
 * (guard pages, canary, MADV_DONTDUMP) whose lock we check ourselves:
 * sodium_malloc() ignores a failed mlock(), which would let a DEK reach swap
 * silently. A chunk is cut into 32-byte blocks tracked by a bitmap; a secret
 * takes a run of contiguous blocks. Freed blocks are wiped before they are
 * marked free.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BLOCK_SIZE 32
#define CHUNK_SIZE ((size_t)1024 * 1024)
#define CHUNK_BLOCKS (CHUNK_SIZE / BLOCK_SIZE)
#define DEFAULT_MAX ((size_t)4 * 1024 * 1024)

_Static_assert(KW_SECRET_MAX <= CHUNK_SIZE, "a secret must fit in a chunk");

struct chunk {
	unsigned char *base;
	uint64_t used[CHUNK_BLOCKS / 64];
	size_t hint; /* first block worth scanning from */
	struct chunk *next;
};

struct kw_secret {
	unsigned char *p;
	size_t len;
	size_t first; /* first block in the chunk */
	size_t nblocks;
	struct chunk *chunk;
};

static struct {
	pthread_mutex_t lock;
	bool ready;
	int init_rv;
	size_t max_chunks;
	size_t nchunks;
	size_t used_blocks;
	size_t live;
	struct chunk *head;
} arena = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- kw_random_buf: a per-thread generator ---- */

#define RNG_KEY 32
#define RNG_OUT 480 /* a refill: one 512-byte ChaCha20 block run */

struct rng {
	unsigned gen; /* rng_gen when keyed; 0: never */
	size_t since_seed; /* bytes produced since the kernel keyed it */
	size_t pos; /* next unused byte of out; RNG_OUT: empty */
	unsigned char key[RNG_KEY];
	unsigned char out[RNG_OUT];
};

static _Thread_local struct rng rng;
/* Bumped in the child of every fork(): a thread state keyed before it
 * (copied into the child with the forking thread) is then keyed again. */
static _Atomic unsigned rng_gen = 1;
static pthread_once_t rng_once = PTHREAD_ONCE_INIT;

static void
rng_forked(void)
{
	atomic_fetch_add(&rng_gen, 1);
}

static void
rng_register(void)
{
	/* Cannot fail but for memory; then a child could replay its
	 * parent's stream, which no keyward process risks: die. */
	if (pthread_atfork(NULL, NULL, rng_forked) != 0)
		abort();
}

static void
rng_refill(struct rng *r)
{
	unsigned char block[RNG_KEY + RNG_OUT];

	randombytes_buf_deterministic(block, sizeof block, r->key);
	memcpy(r->key, block, RNG_KEY);
	memcpy(r->out, block + RNG_KEY, RNG_OUT);
	sodium_memzero(block, sizeof block);
	r->pos = 0;
}

void
kw_random_buf(void *buf, size_t len)
{
	struct rng *r = &rng;
	unsigned char *p = buf;
	unsigned gen;

	/* Registered before the first state exists, so no fork can copy
	 * a state unseen. */
	pthread_once(&rng_once, rng_register);
	gen = atomic_load(&rng_gen);
	if (r->gen != gen || r->since_seed >= KW_RANDOM_RESEED_BYTES) {
		randombytes_buf(r->key, RNG_KEY);
		sodium_memzero(r->out, sizeof r->out);
		r->gen = gen;
		r->since_seed = 0;
		r->pos = RNG_OUT;
	}
	while (len > 0) {
		size_t n;

		if (r->pos == RNG_OUT)
			rng_refill(r);
		n = RNG_OUT - r->pos < len ? RNG_OUT - r->pos : len;
		memcpy(p, r->out + r->pos, n);
		sodium_memzero(r->out + r->pos, n);
		r->pos += n;
		r->since_seed += n;
		p += n;
		len -= n;
	}
}

void
kw_memzero(void *p, size_t len)
{
	sodium_memzero(p, len);
}

bool
kw_memeq(const void *a, const void *b, size_t len)
{
	return sodium_memcmp(a, b, len) == 0;
}

static bool
has_cap_ipc_lock(void)
{
	struct __user_cap_header_struct hdr = {.version =
	                                           _LINUX_CAPABILITY_VERSION_3,
	    .pid = 0};
	struct __user_cap_data_struct data[2];

	memset(data, 0, sizeof data);
	if (syscall(SYS_capget, &hdr, data) != 0)
		return false;
	return (data[CAP_IPC_LOCK / 32].effective &
	           (1u << (CAP_IPC_LOCK % 32))) != 0;
}

/* Called with arena.lock held. */
static int
chunk_add(void)
{
	struct chunk *c;

	if (arena.nchunks >= arena.max_chunks)
		return KW_ERR_NOMEM;
	c = calloc(1, sizeof *c);
	if (c == NULL)
		return KW_ERR_NOMEM;
	c->base = sodium_malloc(CHUNK_SIZE);
	if (c->base == NULL) {
		free(c);
		return KW_ERR_NOMEM;
	}
	/* sodium_malloc() tried mlock() and ignored failure: ask again. */
	if (sodium_mlock(c->base, CHUNK_SIZE) != 0) {
		sodium_free(c->base);
		free(c);
		return KW_ERR_MEMLOCK;
	}
	memset(c->base, 0, CHUNK_SIZE);
	c->next = arena.head;
	arena.head = c;
	arena.nchunks++;
	return KW_OK;
}

int
kw_secure_init(size_t max_bytes)
{
	struct rlimit rl;
	int rv;

	pthread_mutex_lock(&arena.lock);
	if (arena.ready) {
		rv = arena.init_rv;
		goto out;
	}
	if (max_bytes == 0)
		max_bytes = DEFAULT_MAX;
	if (max_bytes < CHUNK_SIZE)
		max_bytes = CHUNK_SIZE;
	if (sodium_init() < 0) {
		rv = KW_ERR_CRYPTO;
		goto done;
	}
	if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0) {
		rv = KW_ERR_MEMLOCK;
		goto done;
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < max_bytes &&
	    !has_cap_ipc_lock()) {
		rv = KW_ERR_MEMLOCK;
		goto done;
	}
	arena.max_chunks = (max_bytes + CHUNK_SIZE - 1) / CHUNK_SIZE;
	rv = chunk_add();
done:
	arena.ready = true;
	arena.init_rv = rv;
out:
	pthread_mutex_unlock(&arena.lock);
	return rv;
}

int
kw_process_harden(void)
{
	struct rlimit rl = {0, 0};

	if (setrlimit(RLIMIT_CORE, &rl) != 0)
		return KW_ERR_INTERNAL;
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		return KW_ERR_INTERNAL;
	return KW_OK;
}

static bool
bit_get(const struct chunk *c, size_t i)
{
	return (c->used[i / 64] >> (i % 64)) & 1;
}

static void
bits_set(struct chunk *c, size_t first, size_t n, bool on)
{
	for (size_t i = first; i < first + n; i++) {
		if (on)
			c->used[i / 64] |= (uint64_t)1 << (i % 64);
		else
			c->used[i / 64] &= ~((uint64_t)1 << (i % 64));
	}
}

/* First fit from the hint; returns CHUNK_BLOCKS when no run is free. */
static size_t
chunk_find(const struct chunk *c, size_t n)
{
	size_t run = 0;

	for (size_t i = c->hint; i < CHUNK_BLOCKS; i++) {
		if (i % 64 == 0 && run == 0 && c->used[i / 64] == UINT64_MAX) {
			i += 63;
			continue;
		}
		if (bit_get(c, i)) {
			run = 0;
			continue;
		}
		if (++run == n)
			return i + 1 - n;
	}
	return CHUNK_BLOCKS;
}

int
kw_secret_new(size_t len, struct kw_secret **ret_secret)
{
	struct kw_secret *s = NULL;
	struct chunk *c;
	size_t n, first = CHUNK_BLOCKS;
	int rv;

	if (len == 0 || len > KW_SECRET_MAX)
		return len == 0 ? KW_ERR_INVALID : KW_ERR_TOO_LARGE;
	s = calloc(1, sizeof *s);
	if (s == NULL)
		return KW_ERR_NOMEM;
	n = (len + BLOCK_SIZE - 1) / BLOCK_SIZE;

	pthread_mutex_lock(&arena.lock);
	if (!arena.ready || arena.init_rv != KW_OK) {
		rv = arena.ready ? arena.init_rv : KW_ERR_INTERNAL;
		goto out;
	}
	for (c = arena.head; c != NULL; c = c->next) {
		first = chunk_find(c, n);
		if (first != CHUNK_BLOCKS)
			break;
	}
	if (c == NULL) {
		rv = chunk_add();
		if (rv != KW_OK)
			goto out;
		c = arena.head;
		first = chunk_find(c, n);
	}
	bits_set(c, first, n, true);
	if (first == c->hint)
		c->hint = first + n;
	arena.used_blocks += n;
	arena.live++;
	s->p = c->base + first * BLOCK_SIZE;
	s->len = len;
	s->first = first;
	s->nblocks = n;
	s->chunk = c;
	*ret_secret = s;
	s = NULL;
	rv = KW_OK;
out:
	pthread_mutex_unlock(&arena.lock);
	free(s);
	return rv;
}

void
kw_secret_free(struct kw_secret *s)
{
	if (s == NULL)
		return;
	sodium_memzero(s->p, s->nblocks * BLOCK_SIZE);
	pthread_mutex_lock(&arena.lock);
	bits_set(s->chunk, s->first, s->nblocks, false);
	if (s->first < s->chunk->hint)
		s->chunk->hint = s->first;
	arena.used_blocks -= s->nblocks;
	arena.live--;
	pthread_mutex_unlock(&arena.lock);
	free(s);
}

unsigned char *
kw_secret_data(const struct kw_secret *s)
{
	return s->p;
}

size_t
kw_secret_len(const struct kw_secret *s)
{
	return s->len;
}

void
kw_secret_truncate(struct kw_secret *s, size_t len)
{
	if (len >= s->len)
		return;
	sodium_memzero(s->p + len, s->len - len);
	s->len = len;
}

bool
kw_secret_equal(const struct kw_secret *a, const struct kw_secret *b)
{
	if (a->len != b->len)
		return false;
	return sodium_memcmp(a->p, b->p, a->len) == 0;
}

void
kw_secure_stats(struct kw_secure_stats *ret_stats)
{
	pthread_mutex_lock(&arena.lock);
	ret_stats->chunks = arena.nchunks;
	ret_stats->bytes_total = arena.nchunks * CHUNK_SIZE;
	ret_stats->bytes_used = arena.used_blocks * BLOCK_SIZE;
	ret_stats->live = arena.live;
	pthread_mutex_unlock(&arena.lock);
}

/* Drop one trailing "\n" or "\r\n". */
static void
trim_newline(struct kw_secret *s)
{
	size_t len = s->len;

	if (len == 0 || s->p[len - 1] != '\n')
		return;
	len--;
	if (len > 0 && s->p[len - 1] == '\r')
		len--;
	kw_secret_truncate(s, len);
}

int
kw_secret_read_file(const char *path, size_t max, struct kw_secret **ret_secret)
{
	struct kw_secret *s = NULL;
	struct stat st;
	size_t cap, got = 0;
	int fd, rv;

	if (max == 0 || max > KW_SECRET_MAX - 3)
		return KW_ERR_INVALID;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return errno == ENOENT ? KW_ERR_NOT_FOUND : KW_ERR_IO;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rv = KW_ERR_IO;
		goto out;
	}
	if ((st.st_mode & 077) != 0) {
		rv = KW_ERR_PERM;
		goto out;
	}
	/* Room for the value and a "\r\n"; one byte more detects overflow. */
	cap = max + 3;
	rv = kw_secret_new(cap, &s);
	if (rv != KW_OK)
		goto out;
	for (;;) {
		ssize_t r = read(fd, s->p + got, cap - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rv = KW_ERR_IO;
			goto out;
		}
		if (r == 0)
			break;
		got += (size_t)r;
		if (got == cap)
			break;
	}
	kw_secret_truncate(s, got);
	trim_newline(s);
	if (s->len > max) {
		rv = KW_ERR_TOO_LARGE;
		goto out;
	}
	if (s->len == 0) {
		rv = KW_ERR_INVALID;
		goto out;
	}
	*ret_secret = s;
	s = NULL;
	rv = KW_OK;
out:
	kw_secret_free(s);
	close(fd);
	return rv;
}

int
kw_secret_take_env(const char *name, size_t max, struct kw_secret **ret_secret)
{
	struct kw_secret *s = NULL;
	char *v = getenv(name);
	size_t len;
	int rv;

	if (v == NULL || *v == '\0')
		return KW_ERR_NOT_FOUND;
	len = strlen(v);
	if (len > max) {
		rv = KW_ERR_TOO_LARGE;
		goto out;
	}
	rv = kw_secret_new(len, &s);
	if (rv != KW_OK)
		goto out;
	memcpy(s->p, v, len);
	*ret_secret = s;
	rv = KW_OK;
out:
	/* Wipe in place: the string may sit in the initial environment block
	 * that /proc/PID/environ shows. */
	sodium_memzero(v, len);
	unsetenv(name);
	return rv;
}

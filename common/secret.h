/*
 * secret.h: the one type for secret bytes (keys, DEKs, PINs, secret values).
 *
 * Secret bytes live in a pooled arena allocated with sodium_malloc: guard
 * pages around it, mlock()ed (checked, not assumed), excluded from core
 * dumps, zeroized on free. One arena instead of one sodium_malloc per secret
 * because every sodium_malloc costs three mappings and the kernel caps a
 * process at vm.max_map_count (65530 by default) of them.
 *
 * The bytes are `unsigned char`: the logging helpers accept `char` strings
 * only, so a secret cannot be handed to a log line without a cast.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KW_SECRET_H
#define KW_SECRET_H

#include <stdbool.h>
#include <stddef.h>

#include "keyward.h"

struct kw_secret;

/* Largest secret one allocation may hold. */
#define KW_SECRET_MAX ((size_t)256 * 1024)

struct kw_secure_stats {
	size_t chunks; /* arena chunks mapped */
	size_t bytes_total; /* bytes of all chunks, all locked */
	size_t bytes_used; /* bytes handed out, in whole blocks */
	size_t live; /* secrets not yet freed */
};

/*
 * kw_secure_init: set up secure memory for up to max_bytes of secrets
 * (0: the default, 4 MiB). Call once at start, before any other kw_secret_*
 * function and before threads start; later calls are no-ops that return the
 * first result. Fails with KW_ERR_MEMLOCK when RLIMIT_MEMLOCK is below
 * max_bytes and the process lacks CAP_IPC_LOCK, or when mlock() fails.
 */
KW_WUR int kw_secure_init(size_t max_bytes);

/*
 * kw_process_harden: for keyward's own processes (not for programs that
 * link libkeyward): no core dumps (RLIMIT_CORE 0), not dumpable and not
 * ptrace-able by same-uid processes (PR_SET_DUMPABLE 0).
 */
KW_WUR int kw_process_harden(void);

/* kw_secret_new: len zeroed secret bytes (1 <= len <= KW_SECRET_MAX). */
KW_WUR int kw_secret_new(size_t len, struct kw_secret **ret_secret);

/* kw_secret_free: zeroize and release; NULL is accepted. */
void kw_secret_free(struct kw_secret *s);

unsigned char *kw_secret_data(const struct kw_secret *s);
size_t kw_secret_len(const struct kw_secret *s);

/* kw_secret_truncate: shorten to len (<= current length), wiping the tail. */
void kw_secret_truncate(struct kw_secret *s, size_t len);

/* kw_secret_equal: constant-time comparison of lengths and contents. */
bool kw_secret_equal(const struct kw_secret *a, const struct kw_secret *b);

/*
 * kw_secret_read_file: read a secret file (a PIN file, a credential from
 * systemd's LoadCredential=). One trailing "\n" or "\r\n" is removed. The
 * file must be a regular file not accessible by group or others
 * (KW_ERR_PERM), non-empty after trimming and at most max bytes
 * (KW_ERR_TOO_LARGE); 1 <= max <= KW_SECRET_MAX - 3.
 */
KW_WUR int kw_secret_read_file(const char *path, size_t max,
    struct kw_secret **ret_secret);

/*
 * kw_secret_take_env: move the value of environment variable name into a
 * secret, then overwrite the variable's bytes in the environment and unset
 * it, so that it cannot be read later from /proc/PID/environ or inherited by
 * a child. KW_ERR_NOT_FOUND if unset or empty.
 */
KW_WUR int kw_secret_take_env(const char *name, size_t max,
    struct kw_secret **ret_secret);

void kw_secure_stats(struct kw_secure_stats *ret_stats);

/*
 * kw_random_buf: len unpredictable bytes without a system call per draw,
 * for values drawn per request that must not repeat or be guessed but are
 * no keys: GCM nonces, request ids. A per-thread ChaCha20 generator
 * (libsodium's randombytes_buf_deterministic) keyed from the kernel
 * (randombytes_buf) on the thread's first draw, again after every fork
 * (a child never replays its parent's stream) and every
 * KW_RANDOM_RESEED_BYTES. Fast key erasure: each refill replaces the key
 * with the first 32 bytes of its own output and every byte handed out
 * is wiped from the buffer, so the state never lets anyone recompute an
 * earlier output. Never fails; not for keys (those come from the HSM).
 */
#define KW_RANDOM_RESEED_BYTES ((size_t)1 << 20)
void kw_random_buf(void *buf, size_t len);

/* kw_memzero: wipe a stack or heap copy in a way the compiler keeps. */
void kw_memzero(void *p, size_t len);

/* kw_memeq: constant-time equality of two buffers of the same length. */
bool kw_memeq(const void *a, const void *b, size_t len);

#endif /* KW_SECRET_H */

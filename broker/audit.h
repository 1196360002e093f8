/*
 * audit.h: the audit log. One JSON line per request, allowed or denied,
 * hash-chained so that a deleted, edited, inserted or reordered line is
 * detected by kwd_audit_verify() (`keyward audit verify` later).
 *
 * A line (keys in this order, compact JSON, one '\n'):
 *
 *   {"seq":12,"time":"2026-11-22T05:12:04.123456Z","rid":"00000000000000ab",
 *    "identity":"spiffe://...","op":"decrypt","resource":"datasets",
 *    "context":{"dataset":"imagenet-2026"},"outcome":"denied",
 *    "reason":"...","status":403,"latency_us":153,"remote":"127.0.0.1",
 *    "prev":"<hex sha256 of the previous line's hash>",
 *    "hash":"<hex sha256>"}
 *
 * hash = SHA-256(prev_hash_bytes || the line's bytes up to, not including,
 * ",\"hash\":"). The first line's prev is 64 zeros. seq starts at 1 and
 * grows by one. Optional fields (identity, resource, context, remote) are
 * left out when unknown. Never a key, a DEK, a PIN, a token or a secret
 * value: the record type has no field that could hold one.
 *
 * Durability: each record is write()n whole (O_APPEND) before the request
 * is answered; fdatasync() runs at most every sync_ms (0: after every
 * record). A failed write or sync marks the log broken: kwd_audit_ok()
 * turns false with a reason, every later write fails, and the keeper then
 * refuses key operations (fail closed) until it is restarted with a
 * writable log.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWD_AUDIT_H
#define KWD_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward.h"
#include "policy.h"

struct kwd_audit;

struct kwd_audit_rec {
	uint64_t rid;
	const char *identity; /* NULL: unknown */
	const char *op;
	const char *resource; /* NULL: none */
	const struct kwd_ctx_pair *ctx;
	size_t nctx;
	const char *outcome; /* "allowed", "denied", "rejected", "failed" */
	const char *reason;
	int status; /* HTTP status */
	uint64_t latency_us;
	const char *remote; /* NULL: unknown */
};

/*
 * kwd_audit_open: open (create 0600) path for appending. An existing log's
 * last line is read to continue its chain (seq and hash); a last line
 * that does not parse or whose hash is wrong is KW_ERR_AUTH (logged):
 * keyward does not extend a chain it cannot vouch for.
 */
KW_WUR int kwd_audit_open(const char *path, unsigned sync_ms,
    struct kwd_audit **ret_audit);
void kwd_audit_free(struct kwd_audit *a);

/* kwd_audit_write: append one record. Thread-safe. */
KW_WUR int kwd_audit_write(struct kwd_audit *a,
    const struct kwd_audit_rec *rec);

/* kwd_audit_sync: fdatasync now if anything is unsynced (called on a
 * timer by the keeper, and at exit). */
KW_WUR int kwd_audit_sync(struct kwd_audit *a);

/* kwd_audit_ok: false once a write or sync failed; reason says why. */
bool kwd_audit_ok(struct kwd_audit *a, char *reason, size_t reasonlen);

/*
 * kwd_audit_verify: check a whole log. KW_OK with ret_count records, or
 * KW_ERR_AUTH with ret_bad_line (1-based) and err saying what is wrong
 * (bad JSON, seq gap, prev mismatch, hash mismatch).
 */
KW_WUR int kwd_audit_verify(const char *path, uint64_t *ret_count,
    uint64_t *ret_bad_line, char *err, size_t errlen);

#endif /* KWD_AUDIT_H */

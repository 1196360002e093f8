/*
 * msg.h: the front <-> keeper protocol. One table (KWD_MSG_TYPES and the
 * per-type field rules in msg.c) defines every message; the enum, the
 * names and the keeper's permit checks come from it.
 *
 * Frame (all integers big-endian):
 *
 *   u32 len      whole frame, header included, <= KWD_MSG_MAX
 *   u16 type     enum kwd_msg_type
 *   u16 flags    0 (reserved, must be 0)
 *   u64 rid      request id, echoed in the answer
 *   fields       u16 tag, u32 len, len bytes; repeated to the end
 *
 * kwd_msg_decode() checks, before anything is used: the length cap and
 * exact length, a known type coming from the permitted side, flags 0, each
 * field's tag allowed for the type, its length within the tag's bounds, its
 * content valid for its kind (strings: UTF-8 without NUL or control bytes;
 * names: kw_name_valid), the number of occurrences of each tag within the
 * rule's bounds, and no trailing bytes. No JSON crosses this boundary.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWD_MSG_H
#define KWD_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward.h"

#define KWD_MSG_MAX (64 * 1024)
#define KWD_MSG_HDR 16
#define KWD_MSG_MAX_FIELDS 2048

/* Who may send a type. */
enum kwd_msg_dir {
	KWD_FROM_FRONT = 1,
	KWD_FROM_KEEPER = 2,
};

/*
 * X(name, id, dir). Requests come from the front; answers from the
 * keeper. Ids are protocol: append only.
 */
#define KWD_MSG_TYPES(X)                        \
	X(KEY_CREATE, 1, KWD_FROM_FRONT)        \
	X(KEY_LIST, 2, KWD_FROM_FRONT)          \
	X(KEY_SHOW, 3, KWD_FROM_FRONT)          \
	X(KEY_ROTATE, 4, KWD_FROM_FRONT)        \
	X(KEY_PATCH, 5, KWD_FROM_FRONT)         \
	X(DATAKEY, 6, KWD_FROM_FRONT)           \
	X(DECRYPT, 7, KWD_FROM_FRONT)           \
	X(REWRAP, 8, KWD_FROM_FRONT)            \
	X(HEALTH, 9, KWD_FROM_FRONT)            \
	X(STATS, 10, KWD_FROM_FRONT)            \
	X(AUDIT_EVENT, 11, KWD_FROM_FRONT)      \
	X(TOKEN_ISSUE, 12, KWD_FROM_FRONT)      \
	X(JWKS, 13, KWD_FROM_FRONT)             \
	X(TOKEN_REVOKE, 14, KWD_FROM_FRONT)     \
	X(TOKEN_INTROSPECT, 15, KWD_FROM_FRONT) \
	X(SIGNER_SHOW, 16, KWD_FROM_FRONT)      \
	X(SIGNER_ROTATE, 17, KWD_FROM_FRONT)    \
	X(ARTIFACT_SIGN, 18, KWD_FROM_FRONT)    \
	X(CERT_ISSUE, 19, KWD_FROM_FRONT)       \
	X(R_ERROR, 64, KWD_FROM_KEEPER)         \
	X(R_KEY, 65, KWD_FROM_KEEPER)           \
	X(R_KEY_LIST, 66, KWD_FROM_KEEPER)      \
	X(R_DATAKEY, 67, KWD_FROM_KEEPER)       \
	X(R_DECRYPT, 68, KWD_FROM_KEEPER)       \
	X(R_REWRAP, 69, KWD_FROM_KEEPER)        \
	X(R_HEALTH, 70, KWD_FROM_KEEPER)        \
	X(R_STATS, 71, KWD_FROM_KEEPER)         \
	X(R_OK, 72, KWD_FROM_KEEPER)            \
	X(R_TOKEN, 73, KWD_FROM_KEEPER)         \
	X(R_JWKS, 74, KWD_FROM_KEEPER)          \
	X(R_INTROSPECT, 75, KWD_FROM_KEEPER)    \
	X(R_SIGNER, 76, KWD_FROM_KEEPER)        \
	X(R_SIGNATURE, 77, KWD_FROM_KEEPER)     \
	X(R_CERT, 78, KWD_FROM_KEEPER)

enum kwd_msg_type {
#define KWD_X(name, id, dir) KWD_MSG_##name = id,
	KWD_MSG_TYPES(KWD_X)
#undef KWD_X
};

/* Field kinds: what the decoder checks beyond the length. */
enum kwd_field_kind {
	KWD_FK_U8,
	KWD_FK_U32,
	KWD_FK_U64,
	KWD_FK_STR, /* printable UTF-8, no NUL or control bytes */
	KWD_FK_NAME, /* kw_name_valid() */
	KWD_FK_BYTES, /* opaque */
};

/*
 * X(name, tag, kind, minlen, maxlen). Tags are protocol: append only.
 */
#define KWD_MSG_TAGS(X)                                                        \
	X(IDENTITY, 1, KWD_FK_STR, 1, 255) /* authenticated caller */          \
	X(KEY, 2, KWD_FK_NAME, 1, 63) /* key name */                           \
	X(CTX_KEY, 3, KWD_FK_STR, 1, 128) /* context key; pairs in order */    \
	X(CTX_VAL, 4, KWD_FK_STR, 0, 256) /* context value */                  \
	X(VERSION, 5, KWD_FK_U32, 4, 4) /* key version */                      \
	X(STATE, 6, KWD_FK_U8, 1, 1) /* enum kwd_key_state */                  \
	X(MIN_DECRYPT, 7, KWD_FK_U32, 4, 4) /* min_decrypt_version */          \
	X(PLAINTEXT, 8, KWD_FK_U8, 1, 1) /* 1: return the DEK */               \
	X(BLOB, 9, KWD_FK_BYTES, 1, 1024) /* wrapped DEK (blob.h) */           \
	X(DEK, 10, KWD_FK_BYTES, 32, 32) /* plaintext DEK */                   \
	X(STATUS, 11, KWD_FK_U32, 4, 4) /* -KW_ERR_* */                        \
	X(MESSAGE, 12, KWD_FK_STR, 1, 512) /* error text for the client */     \
	X(VERREC, 13, KWD_FK_BYTES, 13, 13) /* u32 ver, u8 state, u64 ctime */ \
	X(CREATED, 14, KWD_FK_U64, 8, 8) /* unix seconds */                    \
	X(HSM_OK, 15, KWD_FK_U8, 1, 1)                                         \
	X(AUDIT_OK, 16, KWD_FK_U8, 1, 1)                                       \
	X(REASON, 17, KWD_FK_STR, 1, 512) /* why, for audit and health */      \
	X(OP, 18, KWD_FK_STR, 1, 64) /* operation name, audit */               \
	X(RESOURCE, 19, KWD_FK_STR, 1, 255) /* resource, audit */              \
	X(OUTCOME, 20, KWD_FK_STR, 1, 32) /* allowed/denied/rejected */        \
	X(REMOTE, 21, KWD_FK_STR, 1, 64) /* client address */                  \
	X(LATENCY_US, 22, KWD_FK_U64, 8, 8)                                    \
	X(TEXT, 23, KWD_FK_BYTES, 1, 60000) /* Prometheus text */              \
	X(ROTATION, 24, KWD_FK_U64, 8, 8) /* rotation period, seconds */       \
	X(AUDIENCE, 25, KWD_FK_STR, 1, 255) /* token aud */                    \
	X(SCOPE, 26, KWD_FK_STR, 1, 128) /* one token scope */                 \
	X(TTL, 27, KWD_FK_U32, 4, 4) /* seconds; 0: the policy's maximum */    \
	X(CNF, 28, KWD_FK_STR, 43, 43) /* x5t#S256 of the caller's cert */     \
	X(TOKEN, 29, KWD_FK_STR, 1, 8192) /* compact JWS */                    \
	X(EXPIRES, 30, KWD_FK_U64, 8, 8) /* unix seconds */                    \
	X(JSON, 31, KWD_FK_BYTES, 1, 60000) /* a public JSON document */       \
	X(JTI, 32, KWD_FK_STR, 16, 64) /* a token's id */                      \
	X(SUBJECT, 33, KWD_FK_STR, 1, 255) /* a token's subject */             \
	X(BEARER, 34, KWD_FK_STR, 1,                                           \
	    8192) /* the caller's token, unverified */                         \
	X(DIGEST, 35, KWD_FK_BYTES, 32, 32) /* SHA-256 of an artifact */       \
	X(CSR, 36, KWD_FK_BYTES, 1, 16384) /* PEM certificate request */

enum kwd_msg_tag {
#define KWD_X(name, tag, kind, minl, maxl) KWD_TAG_##name = tag,
	KWD_MSG_TAGS(KWD_X)
#undef KWD_X
};

struct kwd_field {
	uint16_t tag;
	uint32_t len;
	const unsigned char *p; /* into the decoded buffer */
};

struct kwd_msg {
	uint16_t type;
	uint64_t rid;
	size_t nfields;
	struct kwd_field fields[KWD_MSG_MAX_FIELDS];
};

/*
 * kwd_msg_decode: validate buf[0..len) as one whole frame sent by from.
 * KW_ERR_INVALID (or KW_ERR_TOO_LARGE) for anything the table does not
 * allow; on success, ret_msg's fields point into buf.
 */
KW_WUR int kwd_msg_decode(const unsigned char *buf, size_t len,
    enum kwd_msg_dir from, struct kwd_msg *ret_msg);

/* kwd_msg_frame_len: the length a frame header announces (0: invalid). */
size_t kwd_msg_frame_len(const unsigned char hdr[KWD_MSG_HDR]);

/* Accessors: the idx-th occurrence of tag, or NULL / false. */
const struct kwd_field *kwd_msg_get(const struct kwd_msg *m, uint16_t tag,
    size_t idx);
size_t kwd_msg_count(const struct kwd_msg *m, uint16_t tag);
bool kwd_msg_u8(const struct kwd_msg *m, uint16_t tag, uint8_t *ret_v);
bool kwd_msg_u32(const struct kwd_msg *m, uint16_t tag, uint32_t *ret_v);
bool kwd_msg_u64(const struct kwd_msg *m, uint16_t tag, uint64_t *ret_v);
/* A STR/NAME field copied into buf as a C string (false if absent). */
bool kwd_msg_str(const struct kwd_msg *m, uint16_t tag, size_t idx, char *buf,
    size_t cap);

/* Building a frame in a fixed buffer; errors stick until kwd_msg_end. */
struct kwd_msgbuf {
	unsigned char buf[KWD_MSG_MAX];
	size_t len;
	size_t hw; /* bytes written since the last wipe: what a wipe clears */
	int err;
};

void kwd_msg_begin(struct kwd_msgbuf *b, enum kwd_msg_type type, uint64_t rid);
void kwd_msg_put(struct kwd_msgbuf *b, uint16_t tag, const void *p, size_t len);
void kwd_msg_put_str(struct kwd_msgbuf *b, uint16_t tag, const char *s);
void kwd_msg_put_u8(struct kwd_msgbuf *b, uint16_t tag, uint8_t v);
void kwd_msg_put_u32(struct kwd_msgbuf *b, uint16_t tag, uint32_t v);
void kwd_msg_put_u64(struct kwd_msgbuf *b, uint16_t tag, uint64_t v);
/* kwd_msg_end: patch the length; KW_OK or the first error. */
KW_WUR int kwd_msg_end(struct kwd_msgbuf *b);
/* kwd_msg_wipe: zero what was written (frames may carry DEKs). */
void kwd_msg_wipe(struct kwd_msgbuf *b);

const char *kwd_msg_type_name(uint16_t type);

/*
 * IPC over a SOCK_SEQPACKET socketpair: one frame per packet, so a frame
 * boundary can never be lost or forged by a short read.
 */
KW_WUR int kwd_ipc_send(int fd, const struct kwd_msgbuf *b);
/*
 * kwd_ipc_recv: one packet into buf (KWD_MSG_MAX bytes). timeout_ms < 0
 * waits forever. KW_ERR_IO when the peer is gone, KW_ERR_TIMEOUT,
 * KW_ERR_TOO_LARGE for a truncated (oversized) packet.
 */
KW_WUR int kwd_ipc_recv(int fd, unsigned char *buf, size_t *ret_len,
    int timeout_ms);

/*
 * The hot path: a channel end made blocking, with a receive timeout
 * (SO_RCVTIMEO) of tick_ms, by kwd_ipc_chan_init() before the seccomp
 * filter. kwd_ipc_chan_recv() then waits and receives in one recvmsg(2)
 * (kwd_ipc_recv needs three when nothing is queued yet: a receive that
 * fails, poll, the receive), waking every tick_ms to look at its
 * deadline: it waits at least timeout_ms and at most timeout_ms +
 * tick_ms (timeout_ms < 0: forever; 0: only what is queued now), and
 * sets no socket option itself. Its results are kwd_ipc_recv's.
 * kwd_ipc_send_nowait() sends on such a descriptor without ever blocking:
 * KW_ERR_UNAVAILABLE when the channel is full.
 */
KW_WUR int kwd_ipc_chan_init(int fd, int tick_ms);
KW_WUR int kwd_ipc_chan_recv(int fd, unsigned char *buf, size_t *ret_len,
    int timeout_ms);
KW_WUR int kwd_ipc_send_nowait(int fd, const struct kwd_msgbuf *b);

#endif /* KWD_MSG_H */

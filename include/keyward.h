/*
 * keyward.h: the public interface of libkeyward.
 *
 * Every fallible function returns KW_OK (0) or a negative KW_ERR_* code.
 * The numbers are ABI: codes are appended, never renumbered or reused.
 * kw_strerror() explains each one in a sentence that says what to do.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KEYWARD_H
#define KEYWARD_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define KW_EXPORT __attribute__((visibility("default")))
#define KW_WUR __attribute__((warn_unused_result))
#else
#define KW_EXPORT
#define KW_WUR
#endif

#define KW_VERSION_MAJOR 0
#define KW_VERSION_MINOR 1
#define KW_VERSION_PATCH 0
#define KW_VERSION_STRING "0.1.0"

#define KW_OK 0

/* Error codes. Append only. */
enum kw_error {
	KW_ERR_INTERNAL = -1, /* a bug: report it */
	KW_ERR_NOMEM = -2, /* out of memory */
	KW_ERR_INVALID = -3, /* invalid argument or input */
	KW_ERR_TOO_LARGE = -4, /* input over a size limit */
	KW_ERR_IO = -5, /* file or socket I/O failed */
	KW_ERR_CONFIG = -6, /* configuration is invalid */
	KW_ERR_MEMLOCK = -7, /* secure memory cannot be locked */
	KW_ERR_NOT_FOUND = -8, /* no such object */
	KW_ERR_EXISTS = -9, /* object already exists */
	KW_ERR_AUTH = -10, /* integrity check or decryption failed */
	KW_ERR_DENIED = -11, /* not permitted */
	KW_ERR_UNAVAILABLE = -12, /* temporarily unavailable: retry */
	KW_ERR_HSM_MODULE = -13, /* PKCS#11 module cannot be loaded */
	KW_ERR_HSM_TOKEN = -14, /* token not found or not usable */
	KW_ERR_HSM_PIN = -15, /* PIN rejected, locked or expired */
	KW_ERR_HSM_DOWN = -16, /* HSM unreachable: reconnecting */
	KW_ERR_HSM = -17, /* HSM operation failed */
	KW_ERR_HSM_UNSUPPORTED = -18, /* HSM lacks a mechanism or feature */
	KW_ERR_HSM_KEY = -19, /* key missing or unusable in the HSM */
	KW_ERR_RANDOM = -20, /* random number generator failed */
	KW_ERR_TIMEOUT = -21, /* deadline passed */
	KW_ERR_CRYPTO = -22, /* cryptographic library failure */
	KW_ERR_PERM = -23, /* file permissions are unsafe */
	KW_ERR_UNAUTHENTICATED =
	    -24, /* the server did not accept our credentials */
	KW_ERR_CONNECT = -25, /* the server cannot be reached */
	KW_ERR_PROTOCOL =
	    -26, /* the server's answer is not what the API says */
	KW_ERR_RATE_LIMITED =
	    -27, /* over the caller's request rate: slow down */
	KW_ERR_FORMAT =
	    -28, /* not an encrypted keyward file, or an unknown version */
};

/*
 * kw_strerror: a static, human-readable explanation of code (never NULL).
 * Unknown codes yield a generic sentence naming no internals.
 */
KW_EXPORT const char *kw_strerror(int code);

/* kw_error_name: the symbolic name ("KW_ERR_HSM_DOWN"), or "KW_ERR_?". */
KW_EXPORT const char *kw_error_name(int code);

/* kw_version: the library version as "MAJOR.MINOR.PATCH". */
KW_EXPORT const char *kw_version(void);

/* ------------------------------------------------------------------ */
/* Encryption context: key/value pairs bound to a wrapped data key.    */

struct kw_context_pair {
	const char *key; /* ^[a-z][a-z0-9_.-]{0,63}$ */
	const char *value; /* UTF-8, at most 256 bytes, no control characters */
};

/* ------------------------------------------------------------------ */
/* Client. One client is used by one thread at a time.                 */

typedef struct kw_client kw_client;

struct kw_client_options {
	const char
	    *addr; /* "host:port" or "https://host:port"; NULL: $KEYWARD_ADDR */
	const char
	    *cert; /* client certificate (PEM file); NULL: $KEYWARD_CERT */
	const char *key; /* its private key (PEM file); NULL: $KEYWARD_KEY */
	const char
	    *ca; /* CA bundle for the server (PEM file); NULL: $KEYWARD_CA */
	const char *token; /* bearer token; NULL: $KEYWARD_TOKEN */
	long timeout_ms; /* per request, connect included; 0: 10000 */
	int retries; /* on transient errors only; <0: none, 0: 3 */
};

/*
 * kw_client_new: a client from opt (NULL: everything from the
 * environment). Fields left NULL or 0 are taken from the environment or
 * defaults. Nothing is sent before the first call. On failure, err (when
 * not NULL) receives a sentence saying what to fix.
 */
KW_EXPORT KW_WUR int kw_client_new(const struct kw_client_options *opt,
    kw_client **ret_client, char *err, size_t errlen);
KW_EXPORT void kw_client_free(kw_client *c);

/*
 * kw_client_message: the explanation of the last failed call on c: the
 * server's message when it sent one, else a sentence naming what went
 * wrong. Valid until the next call on c; "" after a success.
 */
KW_EXPORT const char *kw_client_message(const kw_client *c);

/* kw_client_status: the HTTP status of the last answer (0: none). */
KW_EXPORT int kw_client_status(const kw_client *c);

/*
 * kw_client_request: one API call with a JSON body (NULL: none); on
 * success (2xx) *ret_body is the answer body, NUL-terminated, to be freed
 * with kw_free(). For the CLI and bindings; prefer the typed calls.
 */
KW_EXPORT KW_WUR int kw_client_request(kw_client *c, const char *method,
    const char *path, const char *json_body, char **ret_body);

/* kw_free: frees memory returned by libkeyward (NULL: nothing). */
KW_EXPORT void kw_free(void *p);

/* ------------------------------------------------------------------ */
/* Data keys. The plaintext lives in locked memory, wiped on free.      */

typedef struct kw_datakey kw_datakey;

/* kw_datakey_generate: a new DEK under KEK key_name bound to ctx. */
KW_EXPORT KW_WUR int kw_datakey_generate(kw_client *c, const char *key_name,
    const struct kw_context_pair *ctx, size_t nctx, kw_datakey **ret_dk);

/*
 * kw_datakey_decrypt: unwraps wrapped (base64 text, as the server and
 * kw_datakey_wrapped() give it) for the same key and context.
 */
KW_EXPORT KW_WUR int kw_datakey_decrypt(kw_client *c, const char *key_name,
    const char *wrapped, const struct kw_context_pair *ctx, size_t nctx,
    kw_datakey **ret_dk);

/* The DEK (32 bytes), valid until kw_datakey_free(). */
KW_EXPORT const unsigned char *kw_datakey_plaintext(const kw_datakey *dk,
    size_t *ret_len);
/* The wrapped DEK in base64 ("" when only the plaintext is known). */
KW_EXPORT const char *kw_datakey_wrapped(const kw_datakey *dk);
KW_EXPORT const char *kw_datakey_key_name(const kw_datakey *dk);
KW_EXPORT unsigned long kw_datakey_key_version(const kw_datakey *dk);
KW_EXPORT void kw_datakey_free(kw_datakey *dk);

/* ------------------------------------------------------------------ */
/* Encrypted files (docs/FILE-FORMAT.md).                               */

typedef void (*kw_progress_fn)(void *arg, unsigned long long done,
    unsigned long long total);

struct kw_file_options {
	unsigned chunk_size; /* bytes, 4096 to 64 MiB, power of two; 0: 1 MiB */
	unsigned threads; /* 0: all online CPUs */
	kw_progress_fn progress; /* NULL: none */
	void *progress_arg;
};

/*
 * kw_file_encrypt: encrypts in_path into out_path (written to a temporary
 * file beside it and renamed, mode 0600) under a new DEK from key_name
 * bound to ctx.
 */
KW_EXPORT KW_WUR int kw_file_encrypt(kw_client *c, const char *in_path,
    const char *out_path, const char *key_name,
    const struct kw_context_pair *ctx, size_t nctx,
    const struct kw_file_options *opt);

/*
 * kw_file_decrypt: decrypts plaintext bytes [off, off+len) of in_path
 * (len UINT64_MAX: to the end) into out_path ("-": stdout), reading only
 * the chunks the range touches. Output written before an integrity
 * failure is removed (a regular file) and the call fails.
 */
KW_EXPORT KW_WUR int kw_file_decrypt(kw_client *c, const char *in_path,
    const char *out_path, unsigned long long off, unsigned long long len,
    const struct kw_file_options *opt);

/* Random-access reader over an encrypted file. Thread-safe for pread. */
typedef struct kw_reader kw_reader;

/*
 * kw_reader_open: reads the header, unwraps its DEK through c. The reader
 * does not use c afterwards and may outlive it.
 */
KW_EXPORT KW_WUR int kw_reader_open(kw_client *c, const char *path,
    kw_reader **ret_reader);
/*
 * kw_reader_pread: up to len plaintext bytes at off into buf, decrypting
 * only the chunks they touch; *ret_n < len only at the end of the file
 * (0 at or past it). KW_ERR_AUTH: a chunk failed its integrity check.
 */
KW_EXPORT KW_WUR int kw_reader_pread(kw_reader *r, void *buf, size_t len,
    unsigned long long off, size_t *ret_n);
KW_EXPORT unsigned long long kw_reader_size(const kw_reader *r);
KW_EXPORT void kw_reader_close(kw_reader *r);

/* ------------------------------------------------------------------ */
/* Audit log (offline, no server needed).                              */

/*
 * kw_audit_verify: checks the hash chain of keywardd's audit log at path.
 * KW_OK with the number of records; KW_ERR_AUTH with the first bad line
 * (1-based) and err saying what is wrong there; KW_ERR_IO if unreadable.
 */
KW_EXPORT KW_WUR int kw_audit_verify(const char *path,
    unsigned long long *ret_records, unsigned long long *ret_bad_line,
    char *err, size_t errlen);

/* ------------------------------------------------------------------ */
/* Tokens (docs/TOKENS.md). A token is a credential: it is returned in  */
/* locked memory and wiped by kw_token_free().                          */

/*
 * kw_token_issue: a token for audience holding scopes[0..n-1] (1 to 32),
 * ttl seconds (0: the grant's max_ttl), bound to the client certificate
 * when bind is non-zero. *ret_token is NUL-terminated, in locked memory,
 * and must be released with kw_token_free() (never kw_free()).
 * ret_expires (may be NULL): the token's expiry, seconds since the epoch.
 */
KW_EXPORT KW_WUR int kw_token_issue(kw_client *c, const char *audience,
    const char *const *scopes, size_t n, unsigned ttl, int bind,
    char **ret_token, unsigned long long *ret_expires);

/* kw_token_free: wipes and releases a token from kw_token_issue (NULL:
 * nothing). */
KW_EXPORT void kw_token_free(char *token);

/* kw_token_revoke: revokes one token by jti, or every token issued so far
 * to subject sub: exactly one of them non-NULL (admin.revoke). */
KW_EXPORT KW_WUR int kw_token_revoke(kw_client *c, const char *jti,
    const char *sub);

/*
 * kw_token_introspect: the server's RFC 7662 answer for token, as JSON
 * text ({"active":false} for a token it does not accept), to be freed
 * with kw_free(). The request body carrying the token is built in locked
 * memory.
 */
KW_EXPORT KW_WUR int kw_token_introspect(kw_client *c, const char *token,
    char **ret_json);

/* ------------------------------------------------------------------ */
/* Artifact signatures (ES256 over a file's SHA-256).                  */

/*
 * kw_artifact_sign: SHA-256 of the file at path, signed by the server
 * with signing key key (operation "sign"). *ret_sig_json is the server's
 * answer as it came (checked: same key and digest, ES256, a 64-byte
 * signature), to be freed with kw_free(); it is the signature document
 * kw_artifact_verify() takes.
 */
KW_EXPORT KW_WUR int kw_artifact_sign(kw_client *c, const char *key,
    const char *path, char **ret_sig_json);

/*
 * kw_artifact_verify: offline, no client: checks the signature document
 * sig_json against the file at path and the public keys in keys_json (the
 * answer of GET /v1/signing-keys/{name}, or a JWKS {"keys":[...]}).
 * KW_OK: the signature is good. KW_ERR_AUTH: it is not (err says why:
 * unknown kid, digest mismatch, bad signature, a malformed document).
 * KW_ERR_INVALID: keys_json is not a key set, or the kid's key is
 * malformed or not matching its kid. KW_ERR_IO: path unreadable.
 */
KW_EXPORT KW_WUR int kw_artifact_verify(const char *path, const char *sig_json,
    const char *keys_json, char *err, size_t errlen);

/* ------------------------------------------------------------------ */
/* Short-lived client certificates (docs/CERTS.md).                    */

/*
 * kw_cert_request: a new P-256 key made here (it never leaves the
 * machine), a CSR for it, POST /v1/certs (ttl seconds, 0: the policy's
 * maximum); the key is written to key_out (mode 0600), the certificate
 * to cert_out and the CA certificate that issued it to cert_out
 * followed by ".ca.pem", each through a temporary file and a rename.
 * On failure, err (when not NULL) says why.
 */
KW_EXPORT KW_WUR int kw_cert_request(kw_client *c, const char *key_out,
    const char *cert_out, unsigned ttl, char *err, size_t errlen);

/*
 * kw_cert_check: offline: the certificate at cert_path is valid now and
 * holds the public key of the private key at key_path. KW_OK with its
 * notAfter (seconds since the epoch) in *ret_not_after (may be NULL);
 * KW_ERR_NOT_FOUND: a file is missing; KW_ERR_AUTH: not valid now or
 * not matching; KW_ERR_INVALID: a file is not PEM of the right kind.
 */
KW_EXPORT KW_WUR int kw_cert_check(const char *key_path, const char *cert_path,
    unsigned long long *ret_not_after, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* KEYWARD_H */

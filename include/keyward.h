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

#ifdef __cplusplus
}
#endif
#endif /* KEYWARD_H */

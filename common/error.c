/*
 * error.c: names and explanations of the KW_ERR_* codes.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "keyward.h"

#include <stddef.h>

/* The most negative code in use; update when appending a code. */
#define KW_ERR_LAST_ KW_ERR_FORMAT

struct err_entry {
	const char *name;
	const char *msg;
};

#define E(code, text) [-(code)] = {#code, text}
static const struct err_entry errors[] = {
    E(KW_OK, "success"),
    E(KW_ERR_INTERNAL,
        "internal error: please report it with the log line "
        "that carries this request's id"),
    E(KW_ERR_NOMEM, "out of memory"),
    E(KW_ERR_INVALID, "invalid argument or malformed input"),
    E(KW_ERR_TOO_LARGE, "input exceeds a size limit"),
    E(KW_ERR_IO, "file or socket I/O failed"),
    E(KW_ERR_CONFIG,
        "the configuration is invalid: run `keywardd -t -c "
        "CONFIG` to see what is wrong"),
    E(KW_ERR_MEMLOCK,
        "secure memory cannot be locked: raise RLIMIT_MEMLOCK "
        "(LimitMEMLOCK= in the unit, ulimit -l) or grant "
        "CAP_IPC_LOCK"),
    E(KW_ERR_NOT_FOUND, "no such object"),
    E(KW_ERR_EXISTS, "the object already exists"),
    E(KW_ERR_AUTH,
        "integrity check failed: the data, its context or its "
        "key does not match"),
    E(KW_ERR_DENIED, "not permitted"),
    E(KW_ERR_UNAVAILABLE, "temporarily unavailable: retry later"),
    E(KW_ERR_HSM_MODULE,
        "the PKCS#11 module cannot be loaded: check the "
        "module path in the configuration"),
    E(KW_ERR_HSM_TOKEN,
        "the HSM token was not found: check the token label "
        "or PKCS#11 URI and that the token is initialized"),
    E(KW_ERR_HSM_PIN,
        "the HSM rejected the PIN (incorrect, locked or "
        "expired); keyward will not retry it: fix the PIN source "
        "and restart"),
    E(KW_ERR_HSM_DOWN,
        "the HSM is unavailable; keyward is reconnecting: "
        "retry later"),
    E(KW_ERR_HSM, "the HSM operation failed"),
    E(KW_ERR_HSM_UNSUPPORTED,
        "the HSM does not support a required "
        "mechanism or attribute"),
    E(KW_ERR_HSM_KEY, "the key is missing or unusable in the HSM"),
    E(KW_ERR_RANDOM, "the random number generator failed"),
    E(KW_ERR_TIMEOUT, "the operation did not finish before its deadline"),
    E(KW_ERR_CRYPTO, "a cryptographic operation failed"),
    E(KW_ERR_PERM,
        "a file holding a secret is readable or writable by "
        "others: chmod 0600 it"),
    E(KW_ERR_UNAUTHENTICATED,
        "the server did not accept the client certificate or token: "
        "check KEYWARD_CERT, KEYWARD_KEY or KEYWARD_TOKEN"),
    E(KW_ERR_CONNECT,
        "the server cannot be reached: check KEYWARD_ADDR and that "
        "keywardd runs"),
    E(KW_ERR_PROTOCOL,
        "the server's answer does not follow the API: check that "
        "KEYWARD_ADDR points at keywardd"),
    E(KW_ERR_RATE_LIMITED,
        "over the request rate allowed to this identity: slow down "
        "and retry"),
    E(KW_ERR_FORMAT,
        "not an encrypted keyward file, or a format version this "
        "library does not know"),
};
#undef E

_Static_assert(sizeof errors / sizeof errors[0] == 1 - KW_ERR_LAST_,
    "every KW_ERR_* code needs a table entry");

static const struct err_entry *
lookup(int code)
{
	if (code > 0 || code < KW_ERR_LAST_ || errors[-code].name == NULL)
		return NULL;
	return &errors[-code];
}

const char *
kw_strerror(int code)
{
	const struct err_entry *e = lookup(code);

	return e ? e->msg : "unknown error code";
}

const char *
kw_error_name(int code)
{
	const struct err_entry *e = lookup(code);

	return e ? e->name : "KW_ERR_?";
}

const char *
kw_version(void)
{
#define STR_(x) #x
#define STR(x) STR_(x)
	return STR(KW_VERSION_MAJOR) "." STR(KW_VERSION_MINOR) "." STR(
	    KW_VERSION_PATCH);
}

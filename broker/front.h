/*
 * front.h: the network-facing process. TLS with client certificates
 * (libmicrohttpd over GnuTLS), HTTP hygiene, JSON validation, rate limits,
 * early rejects; every accepted request becomes one IPC message to the
 * keeper, which decides. The front never loads the PKCS#11 module, never
 * reads the store, never sees a KEK or the PIN.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWD_FRONT_H
#define KWD_FRONT_H

#include <gnutls/x509.h>
#include <stddef.h>

#include "config.h"
#include "keyward.h"

struct kwd_front_args {
	const struct kwd_config *cfg;
	int api_fd; /* listening TCP socket for the mTLS API (bound) */
	int metrics_fd; /* listening TCP socket for /metrics, -1: none */
	/* SOCK_SEQPACKET channels to the keeper: cfg->workers of them for
	 * the API threads (one each), then one for the metrics listener. */
	const int *chan;
	size_t nchan;
};

/*
 * kwd_front_run: read the TLS files, sandbox the process, serve until
 * SIGTERM or SIGINT, or until the keeper goes away. Returns the process
 * exit status.
 */
int kwd_front_run(const struct kwd_front_args *args);

#define KWD_IDENTITY_MAX 255

/*
 * kwd_front_identity: the identity a verified client certificate names,
 * by one rule: if the leaf has URI SANs, exactly one, a spiffe:// URI;
 * else if it has DNS SANs, exactly one; else exactly one subject CN.
 * Identities are printable ASCII without spaces, at most 255 bytes, and
 * DNS names and the SPIFFE trust domain must be lower case; anything else
 * (two URIs, a NUL byte, upper case, no name) is KW_ERR_DENIED with a
 * reason. Exposed for tests.
 */
KW_WUR int kwd_front_identity(gnutls_x509_crt_t leaf, char *buf, size_t cap,
    char *reason, size_t reasonlen);

/*
 * kwd_front_check_leaf: the checks GnuTLS's chain verification does not
 * make: basicConstraints CA false, keyUsage (if present) with
 * digitalSignature, extendedKeyUsage with clientAuth, key at least P-256 or
 * RSA-2048, no SHA-1 or MD5 signature, validity now (with the clock
 * passed in). KW_ERR_DENIED with a reason for the audit log.
 */
KW_WUR int kwd_front_check_leaf(gnutls_x509_crt_t leaf, time_t now,
    char *reason, size_t reasonlen);

#endif /* KWD_FRONT_H */

/*
 * config.h: keywardd's configuration file (JSON, strict schema).
 *
 * Unknown fields, duplicate keys, wrong types and relative paths are
 * errors; the message names the field and says what is expected. See
 * docs/CONFIG.md.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWD_CONFIG_H
#define KWD_CONFIG_H

#include <stddef.h>

#include "keyward.h"
#include "p11.h"

#define KWD_CONFIG_MAX_BYTES (64 * 1024)
#define KWD_CONFIG_MAX_ENV 16

struct kwd_config {
	char *listen;
	char *metrics_listen;
	char *tls_cert;
	char *tls_key;
	char *tls_client_ca;
	struct kwd_p11_config p11; /* strings owned by the config */
	char *p11_env_names[KWD_CONFIG_MAX_ENV];
	char *p11_env_values[KWD_CONFIG_MAX_ENV];
	size_t p11_nenv;
	char *database;
	char *policy;
	char *audit_log;
	char *front_user; /* NULL: keep the current user */
	char *keeper_user; /* NULL: keep the current user */
	char *token_issuer; /* tokens' "iss"; NULL: "keyward" */
	char *front_chroot; /* NULL: no chroot (not root) */
	unsigned long workers; /* keeper workers (HSM sessions) */
	unsigned long audit_sync_ms; /* 0: fdatasync every record */
	struct {
		unsigned long max_body_bytes;
		unsigned long max_connections;
		unsigned long per_ip_connections;
		unsigned long header_timeout_ms; /* absolute, per request */
		unsigned long idle_timeout_s; /* keep-alive inactivity */
		unsigned long rate_per_s; /* requests a second, per identity */
		unsigned long rate_burst; /* bucket size, per identity */
	} limits;
};

/*
 * kwd_config_parse: parse len bytes of JSON. On KW_ERR_CONFIG, err (if not
 * NULL) receives a one-line explanation.
 */
KW_WUR int kwd_config_parse(const char *buf, size_t len,
    struct kwd_config **ret_config, char *err, size_t errlen);
/* kwd_config_load: read path (at most KWD_CONFIG_MAX_BYTES) and parse it. */
KW_WUR int kwd_config_load(const char *path, struct kwd_config **ret_config,
    char *err, size_t errlen);
void kwd_config_free(struct kwd_config *cfg);

/* kwd_config_apply_env: export pkcs11.env (before loading the module). */
KW_WUR int kwd_config_apply_env(const struct kwd_config *cfg);

/*
 * Front-keeper channels per keeper worker, and the front's event loops
 * (threads). Each loop reads requests and the keeper's answers of its
 * channels in one epoll set, without waiting for an answer, so that a
 * worker with one channel finds the next request queued under load
 * (docs/ARCHITECTURE.md). One loop per two workers: a request costs the
 * front less than the keeper.
 */
#define KWD_FRONT_PER_WORKER 1
#define KWD_API_CHANNELS(cfg) ((size_t)(cfg)->workers * KWD_FRONT_PER_WORKER)
#define KWD_FRONT_LOOPS(cfg) (((size_t)(cfg)->workers + 1) / 2)

#endif /* KWD_CONFIG_H */

/*
 * config.c: strict parsing of keywardd's JSON configuration.
 *
 * Each object is described by a table of fields; every key present must be
 * in the table (no silent typos), every required one must be there, and
 * every value must have the table's type. jansson rejects duplicate keys
 * (JSON_REJECT_DUPLICATES), invalid UTF-8 and NUL bytes in strings.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "text.h"

#define STR_MAX 4096

enum ftype {
	F_STRING, /* any non-empty string */
	F_PATH, /* an absolute path */
	F_ADDRESS, /* host:port */
	F_ENVNAME, /* an environment variable name */
	F_UINT, /* an integer within [min, max], unsigned long */
};

struct field {
	const char *name;
	enum ftype type;
	bool required;
	size_t off; /* of the char * (unsigned long) in struct kwd_config */
	unsigned long min, max; /* F_UINT */
};

#define OFF(m) offsetof(struct kwd_config, m), 0, 0
#define UOFF(m, lo, hi) offsetof(struct kwd_config, m), lo, hi

static const struct field top_fields[] = {
    {"listen", F_ADDRESS, false, OFF(listen)},
    {"metrics_listen", F_ADDRESS, false, OFF(metrics_listen)},
    {"database", F_PATH, false, OFF(database)},
    {"policy", F_PATH, false, OFF(policy)},
    {"audit_log", F_PATH, false, OFF(audit_log)},
    {"front_user", F_STRING, false, OFF(front_user)},
    {"keeper_user", F_STRING, false, OFF(keeper_user)},
    {"token_issuer", F_STRING, false, OFF(token_issuer)},
    {"front_chroot", F_PATH, false, OFF(front_chroot)},
    {"workers", F_UINT, false, UOFF(workers, 1, 16)},
    {"audit_sync_ms", F_UINT, false, UOFF(audit_sync_ms, 0, 10000)},
};

static const struct field limit_fields[] = {
    {"max_body_bytes", F_UINT, false,
        UOFF(limits.max_body_bytes, 1024, 16 * 1024 * 1024)},
    {"max_connections", F_UINT, false, UOFF(limits.max_connections, 1, 100000)},
    {"per_ip_connections", F_UINT, false,
        UOFF(limits.per_ip_connections, 1, 100000)},
    {"header_timeout_ms", F_UINT, false,
        UOFF(limits.header_timeout_ms, 100, 600000)},
    {"idle_timeout_s", F_UINT, false, UOFF(limits.idle_timeout_s, 1, 3600)},
    {"rate_per_s", F_UINT, false, UOFF(limits.rate_per_s, 1, 10000000)},
    {"rate_burst", F_UINT, false, UOFF(limits.rate_burst, 1, 10000000)},
};

static const struct field tls_fields[] = {
    {"cert", F_PATH, true, OFF(tls_cert)},
    {"key", F_PATH, true, OFF(tls_key)},
    {"client_ca", F_PATH, true, OFF(tls_client_ca)},
};

static const struct field p11_fields[] = {
    {"module", F_PATH, true, OFF(p11.module)},
    {"token", F_STRING, true, OFF(p11.token)},
    {"pin_file", F_PATH, false, OFF(p11.pin_file)},
    {"pin_env", F_ENVNAME, false, OFF(p11.pin_env)},
};

/* Every error here is a configuration error. */
#define fail(err, errlen, ...) \
	kw_errorf(KW_ERR_CONFIG, err, errlen, __VA_ARGS__)

/* A key from the file, fit for a one-line message. */
#define shown(key, buf) kw_defang(key, 48, buf)

static bool
env_name_ok(const char *s)
{
	if (!((*s >= 'A' && *s <= 'Z') || *s == '_'))
		return false;
	for (const char *c = s; *c; c++)
		if (!((*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
		        *c == '_'))
			return false;
	/* The loader's variables would let a config line inject code into
	 * the process that holds the PIN. */
	return strncmp(s, "LD_", 3) != 0 && strncmp(s, "GLIBC_", 6) != 0;
}

static bool
address_ok(const char *s)
{
	const char *colon = strrchr(s, ':');
	char *end;
	long port;

	if (colon == NULL || colon == s)
		return false;
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	return errno == 0 && *end == '\0' && colon[1] != '\0' && port > 0 &&
	    port < 65536;
}

static int
check_value(const char *where, const char *v, enum ftype t, char *err,
    size_t errlen)
{
	if (*v == '\0' || strlen(v) > STR_MAX)
		return fail(err, errlen,
		    "%s: expected a non-empty string of "
		    "at most %d bytes",
		    where, STR_MAX);
	switch (t) {
	case F_STRING:
		break;
	case F_PATH:
		if (v[0] != '/')
			return fail(err, errlen,
			    "%s: expected an absolute "
			    "path (starting with /)",
			    where);
		break;
	case F_ADDRESS:
		if (!address_ok(v))
			return fail(err, errlen,
			    "%s: expected HOST:PORT, "
			    "e.g. 127.0.0.1:8443",
			    where);
		break;
	case F_UINT: /* handled by set_uint() */
		break;
	case F_ENVNAME:
		if (!env_name_ok(v))
			return fail(err, errlen,
			    "%s: expected an environment "
			    "variable name ([A-Z_][A-Z0-9_]*, not LD_*)",
			    where);
		break;
	}
	return KW_OK;
}

static int
set_uint(struct kwd_config *cfg, const struct field *f, const char *where,
    json_t *v, char *err, size_t errlen)
{
	json_int_t n;

	if (!json_is_integer(v))
		return fail(err, errlen, "%s: expected an integer", where);
	n = json_integer_value(v);
	if (n < 0 || (unsigned long long)n < f->min ||
	    (unsigned long long)n > f->max)
		return fail(err, errlen, "%s: expected %lu to %lu", where,
		    f->min, f->max);
	*(unsigned long *)((char *)cfg + f->off) = (unsigned long)n;
	return KW_OK;
}

/* Values for what the file leaves out. */
static void
set_defaults(struct kwd_config *cfg)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (cfg->audit_sync_ms == ULONG_MAX)
		cfg->audit_sync_ms = 100;
	if (cfg->workers == 0)
		cfg->workers = n < 1 ? 1 : n > 4 ? 4 : (unsigned long)n;
	if (cfg->limits.max_body_bytes == 0)
		cfg->limits.max_body_bytes = 64 * 1024;
	if (cfg->limits.max_connections == 0)
		cfg->limits.max_connections = 1024;
	if (cfg->limits.per_ip_connections == 0)
		cfg->limits.per_ip_connections = 64;
	if (cfg->limits.header_timeout_ms == 0)
		cfg->limits.header_timeout_ms = 10000;
	if (cfg->limits.idle_timeout_s == 0)
		cfg->limits.idle_timeout_s = 60;
	if (cfg->limits.rate_per_s == 0)
		cfg->limits.rate_per_s = 1000;
	if (cfg->limits.rate_burst == 0)
		cfg->limits.rate_burst = 2 * cfg->limits.rate_per_s;
}

/*
 * Fill the string fields of one object. known lists further keys that the
 * caller handles itself (nested objects).
 */
static int
parse_object(struct kwd_config *cfg, json_t *obj, const char *prefix,
    const struct field *fields, size_t nfields, const char *const *known,
    char *err, size_t errlen)
{
	const char *key;
	json_t *v;
	char where[128], kbuf[64];
	int rv;

	json_object_foreach (obj, key, v) {
		bool found = false;

		for (size_t i = 0; known != NULL && known[i] != NULL; i++)
			found = found || strcmp(key, known[i]) == 0;
		for (size_t i = 0; i < nfields && !found; i++) {
			char **dst;

			if (strcmp(key, fields[i].name) != 0)
				continue;
			found = true;
			snprintf(where, sizeof where, "%s%s", prefix, key);
			if (fields[i].type == F_UINT) {
				rv = set_uint(cfg, &fields[i], where, v, err,
				    errlen);
				if (rv != KW_OK)
					return rv;
				continue;
			}
			if (!json_is_string(v))
				return fail(err, errlen,
				    "%s: expected a string", where);
			rv = check_value(where, json_string_value(v),
			    fields[i].type, err, errlen);
			if (rv != KW_OK)
				return rv;
			dst = (char **)((char *)cfg + fields[i].off);
			*dst = strdup(json_string_value(v));
			if (*dst == NULL)
				return KW_ERR_NOMEM;
		}
		if (!found)
			return fail(err, errlen,
			    "%s%s: unknown field (see docs/CONFIG.md)", prefix,
			    shown(key, kbuf));
	}
	for (size_t i = 0; i < nfields; i++)
		if (fields[i].required && fields[i].type != F_UINT &&
		    *(char **)((char *)cfg + fields[i].off) == NULL)
			return fail(err, errlen, "%s%s: required", prefix,
			    fields[i].name);
	return KW_OK;
}

static int
parse_env(struct kwd_config *cfg, json_t *env, char *err, size_t errlen)
{
	const char *key;
	json_t *v;
	char kbuf[64];

	if (!json_is_object(env))
		return fail(err, errlen,
		    "pkcs11.env: expected an object of "
		    "NAME: value strings");
	json_object_foreach (env, key, v) {
		size_t i = cfg->p11_nenv;

		if (i == KWD_CONFIG_MAX_ENV)
			return fail(err, errlen,
			    "pkcs11.env: at most %d "
			    "variables",
			    KWD_CONFIG_MAX_ENV);
		if (!env_name_ok(key))
			return fail(err, errlen,
			    "pkcs11.env.%s: not an allowed environment "
			    "variable name",
			    shown(key, kbuf));
		if (!json_is_string(v) ||
		    strlen(json_string_value(v)) > STR_MAX)
			return fail(err, errlen,
			    "pkcs11.env.%s: expected a "
			    "string",
			    key);
		cfg->p11_env_names[i] = strdup(key);
		cfg->p11_env_values[i] = strdup(json_string_value(v));
		cfg->p11_nenv++;
		if (cfg->p11_env_names[i] == NULL ||
		    cfg->p11_env_values[i] == NULL)
			return KW_ERR_NOMEM;
	}
	return KW_OK;
}

int
kwd_config_parse(const char *buf, size_t len, struct kwd_config **ret_config,
    char *err, size_t errlen)
{
	static const char *const top_known[] = {"tls", "pkcs11", "limits",
	    NULL};
	static const char *const p11_known[] = {"env", NULL};
	struct kwd_config *cfg = NULL;
	char kbuf[64];
	json_error_t je;
	json_t *root = NULL, *o;
	int rv;

	if (len > KWD_CONFIG_MAX_BYTES)
		return fail(err, errlen, "configuration larger than %d bytes",
		    KWD_CONFIG_MAX_BYTES);
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (root == NULL) {
		/* jansson quotes the input in its text: defang it. */
		rv = fail(err, errlen, "line %d column %d: %s", je.line,
		    je.column, shown(je.text, kbuf));
		goto out;
	}
	if (!json_is_object(root)) {
		rv = fail(err, errlen, "expected a JSON object");
		goto out;
	}
	cfg = calloc(1, sizeof *cfg);
	if (cfg == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	/* 0 is a meaningful value here (sync every record): "unset" is
	 * told apart by a value the schema cannot produce. */
	cfg->audit_sync_ms = ULONG_MAX;
	rv = parse_object(cfg, root, "", top_fields,
	    sizeof top_fields / sizeof top_fields[0], top_known, err, errlen);
	if (rv != KW_OK)
		goto out;
	o = json_object_get(root, "tls");
	if (o != NULL) {
		if (!json_is_object(o)) {
			rv = fail(err, errlen, "tls: expected an object");
			goto out;
		}
		rv = parse_object(cfg, o, "tls.", tls_fields,
		    sizeof tls_fields / sizeof tls_fields[0], NULL, err,
		    errlen);
		if (rv != KW_OK)
			goto out;
	}
	o = json_object_get(root, "limits");
	if (o != NULL) {
		if (!json_is_object(o)) {
			rv = fail(err, errlen, "limits: expected an object");
			goto out;
		}
		rv = parse_object(cfg, o, "limits.", limit_fields,
		    sizeof limit_fields / sizeof limit_fields[0], NULL, err,
		    errlen);
		if (rv != KW_OK)
			goto out;
	}
	o = json_object_get(root, "pkcs11");
	if (o == NULL || !json_is_object(o)) {
		rv = fail(err, errlen,
		    "pkcs11: required object (module, "
		    "token, pin_file or pin_env)");
		goto out;
	}
	rv = parse_object(cfg, o, "pkcs11.", p11_fields,
	    sizeof p11_fields / sizeof p11_fields[0], p11_known, err, errlen);
	if (rv != KW_OK)
		goto out;
	if ((cfg->p11.pin_file == NULL) == (cfg->p11.pin_env == NULL)) {
		rv = fail(err, errlen,
		    "pkcs11: exactly one of pin_file and "
		    "pin_env is required (the PIN is never put in the "
		    "configuration or on a command line)");
		goto out;
	}
	if (kwd_p11_parse_token(cfg->p11.token) != KW_OK) {
		rv = fail(err, errlen,
		    "pkcs11.token: expected a token label "
		    "of at most 32 bytes or a PKCS#11 URI naming a token "
		    "(pkcs11:token=...), without PIN or object attributes");
		goto out;
	}
	if ((o = json_object_get(o, "env")) != NULL) {
		rv = parse_env(cfg, o, err, errlen);
		if (rv != KW_OK)
			goto out;
	}
	set_defaults(cfg);
	*ret_config = cfg;
	cfg = NULL;
	rv = KW_OK;
out:
	kwd_config_free(cfg);
	json_decref(root);
	return rv;
}

int
kwd_config_load(const char *path, struct kwd_config **ret_config, char *err,
    size_t errlen)
{
	char *buf = NULL;
	size_t got = 0;
	int fd, rv;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return fail(err, errlen, "%s: %s", path, strerror(errno));
	buf = malloc(KWD_CONFIG_MAX_BYTES + 1);
	if (buf == NULL) {
		close(fd);
		return KW_ERR_NOMEM;
	}
	for (;;) {
		ssize_t r = read(fd, buf + got, KWD_CONFIG_MAX_BYTES + 1 - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rv = fail(err, errlen, "%s: %s", path, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		got += (size_t)r;
		if (got > KWD_CONFIG_MAX_BYTES) {
			rv = fail(err, errlen, "%s: larger than %d bytes", path,
			    KWD_CONFIG_MAX_BYTES);
			goto out;
		}
	}
	rv = kwd_config_parse(buf, got, ret_config, err, errlen);
out:
	free(buf);
	close(fd);
	return rv;
}

void
kwd_config_free(struct kwd_config *cfg)
{
	if (cfg == NULL)
		return;
	free(cfg->listen);
	free(cfg->metrics_listen);
	free(cfg->tls_cert);
	free(cfg->tls_key);
	free(cfg->tls_client_ca);
	free((char *)cfg->p11.module);
	free((char *)cfg->p11.token);
	free((char *)cfg->p11.pin_file);
	free((char *)cfg->p11.pin_env);
	for (size_t i = 0; i < cfg->p11_nenv; i++) {
		free(cfg->p11_env_names[i]);
		free(cfg->p11_env_values[i]);
	}
	free(cfg->database);
	free(cfg->policy);
	free(cfg->audit_log);
	free(cfg->front_user);
	free(cfg->keeper_user);
	free(cfg->token_issuer);
	free(cfg->front_chroot);
	free(cfg);
}

int
kwd_config_apply_env(const struct kwd_config *cfg)
{
	for (size_t i = 0; i < cfg->p11_nenv; i++)
		if (setenv(cfg->p11_env_names[i], cfg->p11_env_values[i], 1) !=
		    0)
			return KW_ERR_NOMEM;
	return KW_OK;
}

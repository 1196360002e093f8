/*
 * policy.h: who may do what, on which keys, for which contexts.
 *
 * The policy file (JSON, docs/POLICY.md):
 *
 *   { "version": 1,
 *     "rules": [
 *       { "identity": "spiffe://keyward.dev/job/train-*",
 *         "grants": [
 *           { "operations": ["datakey", "decrypt"],
 *             "resources": ["datasets", "weights-*"],
 *             "context": { "dataset": "imagenet-*" } } ] } ] }
 *
 * identity, resources and context values are globs where '*' matches any
 * run of characters (including none) and every other byte matches itself.
 * An operation is one of kwd_policy_op's names; "admin.*" grants every
 * admin operation. A grant's context lists required keys: the request's
 * context must have each of them with a matching value (more keys are
 * fine). No rule, no access: default deny.
 *
 * Parsing is strict: unknown fields, duplicate keys, wrong types, empty
 * lists, unknown operations, more than 4096 rules or 64 grants a rule, and
 * files over 1 MiB are refused with a message that names the place.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KWD_POLICY_H
#define KWD_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyward.h"

#define KWD_POLICY_MAX_BYTES (1024 * 1024)

enum kwd_policy_op {
	KWD_OP_DATAKEY,
	KWD_OP_DECRYPT,
	KWD_OP_REWRAP,
	KWD_OP_TOKEN,
	KWD_OP_CERT,
	KWD_OP_SECRET_READ,
	KWD_OP_SECRET_WRITE,
	KWD_OP_ADMIN_CREATE,
	KWD_OP_ADMIN_LIST,
	KWD_OP_ADMIN_READ,
	KWD_OP_ADMIN_ROTATE,
	KWD_OP_ADMIN_PATCH,
	KWD_OP_ADMIN_REVOKE, /* revoke tokens; resource "token" */
	KWD_OP_INTROSPECT, /* introspect tokens; resource: their audience */
	KWD_OP_SIGN, /* sign an artifact digest; resource: the signing key */
	KWD_OP__COUNT
};

/* "datakey", "decrypt", ..., "admin.create", ...: as in the file. */
const char *kwd_policy_op_name(enum kwd_policy_op op);

struct kwd_policy;

struct kwd_ctx_pair {
	const char *key;
	const char *value;
};

/*
 * kwd_policy_parse / _load: on KW_ERR_CONFIG, err gets a one-line
 * explanation naming the rule and field ("rules[2].grants[0].operations[1]:
 * unknown operation \"decrypt2\"").
 */
KW_WUR int kwd_policy_parse(const char *buf, size_t len,
    struct kwd_policy **ret_policy, char *err, size_t errlen);
KW_WUR int kwd_policy_load(const char *path, struct kwd_policy **ret_policy,
    char *err, size_t errlen);
void kwd_policy_free(struct kwd_policy *p);

/*
 * kwd_policy_check: true if identity may perform op on resource with this
 * context. reason (always written, one line, no secrets) says which rule
 * and grant allowed it, or why the closest candidate did not: no rule for
 * the identity, operation not granted, resource not granted, or which
 * required context key was missing or did not match.
 */
bool kwd_policy_check(const struct kwd_policy *p, const char *identity,
    enum kwd_policy_op op, const char *resource, const struct kwd_ctx_pair *ctx,
    size_t nctx, char *reason, size_t reasonlen);

/* kwd_policy_glob: the matcher itself ('*' only), exposed for tests. */
bool kwd_policy_glob(const char *pattern, const char *s);

/*
 * kwd_policy_token: may identity obtain a token with these scopes for ttl
 * seconds (0: the grant's maximum)? True if one grant of operation "token"
 * in a rule matching identity covers every scope (its "scopes" globs) and
 * allows ttl (its "max_ttl", default KWD_POLICY_TOKEN_TTL); *ret_ttl is
 * the ttl to issue. reason says which grant allowed it, or why not.
 */
#define KWD_POLICY_TOKEN_TTL 3600

/*
 * kwd_policy_max_ttl: the max_ttl of the first grant that allows op on
 * resource for identity (context not considered); 0 if none sets one or
 * none allows it.
 */
uint32_t kwd_policy_max_ttl(const struct kwd_policy *p, const char *identity,
    enum kwd_policy_op op, const char *resource);
bool kwd_policy_token(const struct kwd_policy *p, const char *identity,
    const char *const *scopes, size_t nscopes, uint32_t ttl, uint32_t *ret_ttl,
    char *reason, size_t reasonlen);

#endif /* KWD_POLICY_H */

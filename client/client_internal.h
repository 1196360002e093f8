/*
 * client_internal.h: what client.c shares with datakey.c, file.c, token.c,
 * artifact.c, cert.c and audit.c inside libkeyward. Nothing here is
 * exported.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KW_CLIENT_INTERNAL_H
#define KW_CLIENT_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "keyward.h"

struct kw_secret;

/* Answers of calls that carry a DEK are read into locked memory. */
#define KW_SECURE_ANSWER_MAX 16384
/* Other answers (key lists) are capped too: a broken server cannot make
 * the client allocate without bound. */
#define KW_PLAIN_ANSWER_MAX (4u << 20)

/* How a call may be retried (beyond "nothing was sent"). */
enum kw_call_kind {
	KW_CALL_WRITE, /* not idempotent: retried only when nothing was sent or
	                  the server answered 503 */
	KW_CALL_SAFE, /* no state changes on the server: also retried after a
	                 timeout or a connection lost mid-answer */
};

/*
 * kw_call: one API call. json_body may be NULL. On success (2xx), the
 * answer is in *ret_answer: a kw_secret (secure) or a malloc'd string
 * (plain), NUL-terminated, length *ret_len. On failure the client's
 * message and status say why.
 */
int kw_call(kw_client *c, enum kw_call_kind kind, const char *method,
    const char *path, const char *json_body, bool secure,
    struct kw_secret **ret_secure, char **ret_plain, size_t *ret_len);

/* kw_client_fail: sets the client's message and returns code. */
__attribute__((format(printf, 3, 4))) int kw_client_fail(kw_client *c, int code,
    const char *fmt, ...);
void kw_client_clear(kw_client *c);

/* The library's secure memory; once per process. */
int kw_client_secure_init(void);

/*
 * kw_context_json: the {"k":"v",...} object of ctx, checked against the
 * API's limits (KW_ERR_INVALID with the client's message otherwise).
 */
struct json_t;
int kw_context_json(kw_client *c, const struct kw_context_pair *ctx,
    size_t nctx, struct json_t **ret_obj);

/* kw_path_escape_ok: key names go into URL paths only if canonical. */
bool kw_key_name_ok(kw_client *c, const char *name);

/*
 * kw_answer_top_level: whether at, a point of the answer text s (at >= s),
 * is a '"' outside every string and directly inside the outermost object
 * or array. The parsers below find a secret's member by scanning the text
 * for "name":"; in valid JSON such a string there, followed by a colon,
 * is a member name of the top-level object: the member jansson gives
 * them, not one nested deeper nor part of another string. Nothing else
 * of the JSON is checked here; jansson does that.
 */
bool kw_answer_top_level(const char *s, const char *at);

/*
 * kw_answer_blanked: whether the string member NAME of the parsed answer
 * ROOT is the text the scan blanked: LEN bytes, all 'A's (so jansson saw
 * the member the secret was taken from).
 */
bool kw_answer_blanked(struct json_t *root, const char *name, size_t len);

/*
 * The parsers of the answers that carry a secret, apart from the calls
 * that receive them so that tests/fuzz/ reaches them without a server.
 * ans is the answer as kw_call() gives it: len bytes, NUL-terminated
 * (ans[len] == '\0'), in locked memory; the secret's member is blanked in
 * place. c may be NULL (no message is then kept).
 *
 * kw_datakey_parse_answer: the answer of datakey (wrapped NULL) or of
 * decrypt of wrapped, for key key_name.
 */
KW_WUR int kw_datakey_parse_answer(kw_client *c, const char *key_name,
    const char *wrapped, char *ans, size_t len, kw_datakey **ret_dk);

/* kw_token_parse_answer: the answer of POST /v1/tokens. */
KW_WUR int kw_token_parse_answer(kw_client *c, char *ans, size_t len,
    char **ret_token, unsigned long long *ret_expires);

#endif /* KW_CLIENT_INTERNAL_H */

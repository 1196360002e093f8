/*
 * token.c: tokens from keywardd (POST /v1/tokens, /v1/tokens/revoke,
 * /v1/tokens/introspect; docs/API.md, docs/TOKENS.md).
 *
 * A token is a credential. The answer that carries it is received in
 * locked memory (client.c); its "token" member is copied from there into
 * a kw_secret and overwritten with 'A's in place before jansson parses the
 * rest, as datakey.c does with a DEK, so the token never reaches
 * jansson's unlocked heap; that the member blanked is the one jansson
 * reads is checked as there (a member name of the top-level object
 * before, the blanked text after). The caller gets a char * into the
 * kw_secret; kw_token_free() finds the kw_secret again through a header
 * stored just before the token and wipes it.
 *
 * Introspection sends a token: its request body is built in locked
 * memory and handed to libcurl as is (libcurl sends from our buffer;
 * OpenSSL's record buffers are beyond our reach, docs/CLIENT.md).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "keyward.h"
#include "secret.h"

#define TOKEN_MAX 8192
#define SCOPES_MAX 32
#define SCOPE_MAX 128
#define AUDIENCE_MAX 255
#define TTL_MAX 604800u

/* The header before a token handed out: its kw_secret and a magic. */
static const unsigned char token_magic[8] = {'K', 'W', 'T', 'O', 'K', 'E', 'N',
    '1'};
#define TOKEN_HDR (sizeof(struct kw_secret *) + sizeof token_magic)

/* token_char: a compact JWS is base64url and dots (RFC 7515 section 7.1). */
static bool
token_char(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.';
}

static bool
token_ok(const char *t, size_t len)
{
	size_t dots = 0;

	if (len == 0 || len > TOKEN_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!token_char((unsigned char)t[i]))
			return false;
		dots += t[i] == '.';
	}
	return dots == 2;
}

static bool
printable(const char *s, size_t max)
{
	size_t len = strlen(s);

	if (len == 0 || len > max)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

static bool
scope_ok(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > SCOPE_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		        ch == '.' || ch == '_' || ch == ':' || ch == '/' ||
		        ch == '-'))
			return false;
	}
	return true;
}

void
kw_token_free(char *token)
{
	struct kw_secret *s;
	unsigned char *hdr;

	if (token == NULL)
		return;
	hdr = (unsigned char *)token - TOKEN_HDR;
	/* Not one of ours: leaking it is better than freeing a pointer we
	 * did not hand out. */
	if (memcmp(hdr + sizeof s, token_magic, sizeof token_magic) != 0)
		return;
	memcpy(&s, hdr, sizeof s);
	kw_secret_free(s);
}

/*
 * take_token: copies the one "token" member of the answer in buf (locked,
 * NUL-terminated) into a new kw_secret laid out for kw_token_free() and
 * blanks it in buf; *ret_len is the token's length.
 */
static int
take_token(kw_client *c, char *buf, char **ret_token, size_t *ret_len)
{
	static const char member[] = "\"token\":\"";
	struct kw_secret *s = NULL;
	unsigned char *d;
	char *start, *end;
	size_t len;
	int rc;

	start = strstr(buf, member);
	if (start == NULL)
		return kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer has no token: check that KEYWARD_ADDR points "
		    "at keywardd");
	if (strstr(start + 1, member) != NULL)
		return kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer has two tokens");
	if (!kw_answer_top_level(buf, start))
		return kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer's token is not a member of its top-level "
		    "object");
	start += sizeof member - 1;
	end = strchr(start, '"');
	if (end == NULL)
		return kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer is not JSON");
	len = (size_t)(end - start);
	if (!token_ok(start, len)) {
		kw_memzero(start, len);
		return kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer's token is not a compact JWS");
	}
	rc = kw_secret_new(TOKEN_HDR + len + 1, &s);
	if (rc != KW_OK) {
		kw_memzero(start, len);
		return kw_client_fail(c, rc, "no locked memory for the token");
	}
	d = kw_secret_data(s);
	memcpy(d, &s, sizeof s);
	memcpy(d + sizeof s, token_magic, sizeof token_magic);
	memcpy(d + TOKEN_HDR, start, len);
	d[TOKEN_HDR + len] = '\0';
	memset(start, 'A', len);
	*ret_token = (char *)d + TOKEN_HDR;
	*ret_len = len;
	return KW_OK;
}

static int
issue_body(kw_client *c, const char *audience, const char *const *scopes,
    size_t n, unsigned ttl, int bind, char **ret_body)
{
	json_t *obj = NULL, *arr = NULL;
	char *body;

	if (audience == NULL || !printable(audience, AUDIENCE_MAX))
		return kw_client_fail(c, KW_ERR_INVALID,
		    "audience: expected 1 to %d printable ASCII characters",
		    AUDIENCE_MAX);
	if (n == 0 || n > SCOPES_MAX || scopes == NULL)
		return kw_client_fail(c, KW_ERR_INVALID,
		    "scope: expected 1 to %d scopes", SCOPES_MAX);
	for (size_t i = 0; i < n; i++) {
		if (scopes[i] == NULL || !scope_ok(scopes[i]))
			return kw_client_fail(c, KW_ERR_INVALID,
			    "scope %zu: expected 1 to %d of a-z 0-9 . _ : / "
			    "-",
			    i + 1, SCOPE_MAX);
		for (size_t j = 0; j < i; j++)
			if (strcmp(scopes[i], scopes[j]) == 0)
				return kw_client_fail(c, KW_ERR_INVALID,
				    "scope %s: given twice", scopes[i]);
	}
	if (ttl > TTL_MAX)
		return kw_client_fail(c, KW_ERR_INVALID,
		    "ttl: at most %u seconds (7 days)", TTL_MAX);
	obj = json_object();
	arr = json_array();
	if (obj == NULL || arr == NULL)
		goto nomem;
	for (size_t i = 0; i < n; i++)
		if (json_array_append_new(arr, json_string(scopes[i])) != 0)
			goto nomem;
	if (json_object_set_new(obj, "audience", json_string(audience)) != 0 ||
	    json_object_set(obj, "scope", arr) != 0)
		goto nomem;
	if (ttl > 0 &&
	    json_object_set_new(obj, "ttl", json_integer((json_int_t)ttl)) != 0)
		goto nomem;
	if (bind && json_object_set_new(obj, "bind", json_true()) != 0)
		goto nomem;
	body = json_dumps(obj, JSON_COMPACT);
	if (body == NULL)
		goto nomem;
	json_decref(arr);
	json_decref(obj);
	*ret_body = body;
	return KW_OK;
nomem:
	json_decref(arr);
	json_decref(obj);
	return kw_client_fail(c, KW_ERR_NOMEM, "out of memory");
}

int
kw_token_parse_answer(kw_client *c, char *ans, size_t len, char **ret_token,
    unsigned long long *ret_expires)
{
	char *token = NULL;
	json_t *root = NULL, *exp;
	size_t tlen = 0;
	const char *type;
	int rc;

	rc = take_token(c, ans, &token, &tlen);
	if (rc != KW_OK)
		goto out;
	root = json_loadb(ans, len, JSON_REJECT_DUPLICATES, NULL);
	type = json_string_value(json_object_get(root, "token_type"));
	exp = json_object_get(root, "expires_at");
	if (!json_is_object(root) || !kw_answer_blanked(root, "token", tlen) ||
	    type == NULL || strcmp(type, "Bearer") != 0 ||
	    !json_is_integer(exp) || json_integer_value(exp) <= 0) {
		rc = kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer is not the JSON the API describes");
		goto out;
	}
	if (ret_expires != NULL)
		*ret_expires = (unsigned long long)json_integer_value(exp);
	*ret_token = token;
	token = NULL;
	rc = KW_OK;
out:
	json_decref(root);
	kw_token_free(token);
	return rc;
}

int
kw_token_issue(kw_client *c, const char *audience, const char *const *scopes,
    size_t n, unsigned ttl, int bind, char **ret_token,
    unsigned long long *ret_expires)
{
	struct kw_secret *ans = NULL;
	char *body = NULL;
	size_t len = 0;
	int rc;

	if (c == NULL || ret_token == NULL)
		return KW_ERR_INVALID;
	kw_client_clear(c);
	rc = issue_body(c, audience, scopes, n, ttl, bind, &body);
	if (rc != KW_OK)
		return rc;
	rc = kw_call(c, KW_CALL_WRITE, "POST", "/v1/tokens", body, true, &ans,
	    NULL, &len);
	free(body);
	if (rc != KW_OK)
		return rc;
	rc = kw_token_parse_answer(c, (char *)kw_secret_data(ans), len,
	    ret_token, ret_expires);
	kw_secret_free(ans);
	return rc;
}

static bool
jti_ok(const char *s)
{
	size_t len = strlen(s);

	if (len < 16 || len > 64)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		        (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
			return false;
	}
	return true;
}

int
kw_token_revoke(kw_client *c, const char *jti, const char *sub)
{
	json_t *obj = NULL, *root = NULL;
	char *body = NULL, *ans = NULL;
	size_t len = 0;
	int rc;

	if (c == NULL)
		return KW_ERR_INVALID;
	kw_client_clear(c);
	if ((jti == NULL) == (sub == NULL))
		return kw_client_fail(c, KW_ERR_INVALID,
		    "revoke: give exactly one of a jti and a subject");
	if (jti != NULL && !jti_ok(jti))
		return kw_client_fail(c, KW_ERR_INVALID,
		    "jti: expected 16 to 64 of A-Z a-z 0-9 - _");
	if (sub != NULL && !printable(sub, 255))
		return kw_client_fail(c, KW_ERR_INVALID,
		    "sub: expected 1 to 255 printable ASCII characters");
	obj = jti != NULL ? json_pack("{s:s}", "jti", jti)
	                  : json_pack("{s:s}", "sub", sub);
	body = obj != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
	if (body == NULL)
		return kw_client_fail(c, KW_ERR_NOMEM, "out of memory");
	/* Not repeated after a timeout: a repeated revocation by subject
	 * would cover tokens issued in between. */
	rc = kw_call(c, KW_CALL_WRITE, "POST", "/v1/tokens/revoke", body, false,
	    NULL, &ans, &len);
	free(body);
	if (rc != KW_OK)
		return rc;
	root = json_loadb(ans, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_true(json_object_get(root, "revoked")))
		rc = kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer does not say the token is revoked");
	json_decref(root);
	free(ans);
	return rc;
}

int
kw_token_introspect(kw_client *c, const char *token, char **ret_json)
{
	static const char pre[] = "{\"token\":\"", post[] = "\"}";
	struct kw_secret *body = NULL;
	json_t *root = NULL;
	char *ans = NULL;
	unsigned char *d;
	size_t tlen, len = 0;
	int rc;

	if (c == NULL || ret_json == NULL)
		return KW_ERR_INVALID;
	kw_client_clear(c);
	tlen = token != NULL ? strnlen(token, TOKEN_MAX + 1) : 0;
	if (token == NULL || !token_ok(token, tlen))
		return kw_client_fail(c, KW_ERR_INVALID,
		    "token: expected a compact JWS (base64url parts joined "
		    "by two dots, at most %d bytes)",
		    TOKEN_MAX);
	rc = kw_secret_new(sizeof pre - 1 + tlen + sizeof post, &body);
	if (rc != KW_OK)
		return kw_client_fail(c, rc, "no locked memory for the token");
	d = kw_secret_data(body);
	memcpy(d, pre, sizeof pre - 1);
	memcpy(d + sizeof pre - 1, token, tlen);
	memcpy(d + sizeof pre - 1 + tlen, post, sizeof post);
	/* Changes nothing on the server: safe to repeat. */
	rc = kw_call(c, KW_CALL_SAFE, "POST", "/v1/tokens/introspect",
	    (const char *)d, false, NULL, &ans, &len);
	kw_secret_free(body);
	if (rc != KW_OK)
		return rc;
	root = json_loadb(ans, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_boolean(json_object_get(root, "active"))) {
		json_decref(root);
		free(ans);
		return kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer is not an RFC 7662 introspection answer");
	}
	json_decref(root);
	*ret_json = ans;
	return KW_OK;
}

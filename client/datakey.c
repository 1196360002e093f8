/*
 * datakey.c: data keys from keywardd (POST /v1/keys/{name}/datakey and
 * /decrypt, docs/API.md).
 *
 * The answer that carries a DEK arrives in locked memory (client.c). Its
 * "plaintext" member is decoded there, straight into a kw_secret, and the
 * base64 is then overwritten with 'A's in place before the answer is
 * given to jansson for the other members: jansson copies strings into
 * its own, unlocked heap, so it never sees the DEK. That the member found
 * by the scan is the one jansson parses is checked twice: the match must
 * be a member name of the top-level object (kw_answer_top_level), not a
 * nested member nor text inside another string, which a crafted answer
 * could pair with a top-level "plaintext" spelled so that the scan misses
 * it (an escape in the name, a space before the colon); and jansson's
 * "plaintext" must be the blanked text (same length, all 'A's). So a
 * crafted answer cannot make the two disagree.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "keyward.h"
#include "name.h"
#include "secret.h"

#define DEK_LEN 32
#define WRAPPED_MAX_B64 344 /* base64 of the API's 256-byte limit */
#define BLOB_MAGIC "KWDK"

struct kw_datakey {
	struct kw_secret *plain; /* DEK_LEN bytes */
	char *wrapped; /* base64; "" if unknown */
	char key_name[64];
	unsigned long version;
};

void
kw_datakey_free(kw_datakey *dk)
{
	if (dk == NULL)
		return;
	kw_secret_free(dk->plain);
	free(dk->wrapped);
	free(dk);
}

const unsigned char *
kw_datakey_plaintext(const kw_datakey *dk, size_t *ret_len)
{
	if (dk == NULL || dk->plain == NULL) {
		if (ret_len != NULL)
			*ret_len = 0;
		return NULL;
	}
	if (ret_len != NULL)
		*ret_len = kw_secret_len(dk->plain);
	return kw_secret_data(dk->plain);
}

const char *
kw_datakey_wrapped(const kw_datakey *dk)
{
	return dk == NULL || dk->wrapped == NULL ? "" : dk->wrapped;
}

const char *
kw_datakey_key_name(const kw_datakey *dk)
{
	return dk == NULL ? "" : dk->key_name;
}

unsigned long
kw_datakey_key_version(const kw_datakey *dk)
{
	return dk == NULL ? 0 : dk->version;
}

/*
 * b64_chars_ok: s[0..len) is of the base64 alphabet (RFC 4648 section 4),
 * '=' only in the last two places. sodium_base642bin() alone is not
 * enough: libsodium 1.0.18 decodes every byte above 0x7f as the digit 63
 * ('/'), so that a DEK could be read from text that is not base64 (nor
 * UTF-8: the blanking would hide that from jansson).
 */
static bool
b64_chars_ok(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		        (ch >= '0' && ch <= '9') || ch == '+' || ch == '/' ||
		        (ch == '=' && i + 2 >= len)))
			return false;
	}
	return true;
}

/*
 * take_plaintext: decodes the one "plaintext" member of the answer in
 * buf (locked, NUL-terminated) into *ret_dek and blanks it in buf.
 * ret_b64len: the length of the blanked base64, for the check against
 * the parsed answer.
 */
static int
take_plaintext(kw_client *c, char *buf, struct kw_secret **ret_dek,
    size_t *ret_b64len)
{
	static const char member[] = "\"plaintext\":\"";
	struct kw_secret *dek = NULL;
	char *start, *end, *again;
	size_t binlen = 0;
	int rc;

	start = strstr(buf, member);
	if (start == NULL)
		return kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer has no data key: check that KEYWARD_ADDR "
		    "points at keywardd");
	again = strstr(start + 1, member);
	if (again != NULL)
		return kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer has two data keys");
	if (!kw_answer_top_level(buf, start))
		return kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer's data key is not a member of its top-level "
		    "object");
	start += sizeof member - 1;
	end = strchr(start, '"');
	if (end == NULL)
		return kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer is not JSON");
	rc = kw_secret_new(DEK_LEN, &dek);
	if (rc != KW_OK)
		return kw_client_fail(c, rc,
		    "no locked memory for the data key");
	if (!b64_chars_ok(start, (size_t)(end - start)) ||
	    sodium_base642bin(kw_secret_data(dek), DEK_LEN, start,
	        (size_t)(end - start), NULL, &binlen, NULL,
	        sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    binlen != DEK_LEN) {
		sodium_memzero(start, (size_t)(end - start));
		kw_secret_free(dek);
		return kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the data key in the answer is not %d bytes of base64",
		    DEK_LEN);
	}
	memset(start, 'A', (size_t)(end - start));
	*ret_b64len = (size_t)(end - start);
	*ret_dek = dek;
	return KW_OK;
}

/*
 * blob_version: the key name and version in a wrapped DEK's header
 * (docs/FORMATS.md); the wrapped DEK is not secret.
 */
static int
blob_version(const char *wrapped, const char *key_name,
    unsigned long *ret_version)
{
	unsigned char bin[WRAPPED_MAX_B64];
	size_t len = 0, n;

	if (sodium_base642bin(bin, sizeof bin, wrapped, strlen(wrapped), NULL,
	        &len, NULL, sodium_base64_VARIANT_ORIGINAL) != 0)
		return KW_ERR_INVALID;
	if (len < 7 || memcmp(bin, BLOB_MAGIC, 4) != 0)
		return KW_ERR_INVALID;
	n = bin[6];
	if (n == 0 || n > 63 || len < 11 + n)
		return KW_ERR_INVALID;
	if (strlen(key_name) != n || memcmp(bin + 7, key_name, n) != 0)
		return KW_ERR_INVALID;
	*ret_version = (unsigned long)bin[7 + n] << 24 |
	    (unsigned long)bin[8 + n] << 16 | (unsigned long)bin[9 + n] << 8 |
	    bin[10 + n];
	return KW_OK;
}

static bool
wrapped_ok(const char *w)
{
	size_t len = strlen(w);

	if (len == 0 || len > WRAPPED_MAX_B64 || len % 4 != 0)
		return false;
	return b64_chars_ok(w, len);
}

static int
request_body(kw_client *c, const char *wrapped,
    const struct kw_context_pair *ctx, size_t nctx, char **ret_body)
{
	json_t *obj = NULL, *cobj = NULL;
	char *body;
	int rc;

	rc = kw_context_json(c, ctx, nctx, &cobj);
	if (rc != KW_OK)
		return rc;
	obj = json_object();
	if (obj == NULL || json_object_set_new(obj, "context", cobj) != 0) {
		json_decref(obj);
		return kw_client_fail(c, KW_ERR_NOMEM, "out of memory");
	}
	if (wrapped != NULL &&
	    json_object_set_new(obj, "wrapped", json_string(wrapped)) != 0) {
		json_decref(obj);
		return kw_client_fail(c, KW_ERR_NOMEM, "out of memory");
	}
	body = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(obj);
	if (body == NULL)
		return kw_client_fail(c, KW_ERR_NOMEM, "out of memory");
	*ret_body = body;
	return KW_OK;
}

int
kw_datakey_parse_answer(kw_client *c, const char *key_name, const char *wrapped,
    char *ans, size_t len, kw_datakey **ret_dk)
{
	struct kw_secret *dek = NULL;
	kw_datakey *dk = NULL;
	json_t *root = NULL;
	size_t b64len = 0;
	const char *w;
	int rc;

	rc = take_plaintext(c, ans, &dek, &b64len);
	if (rc != KW_OK)
		goto out;
	root = json_loadb(ans, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(root) ||
	    !kw_answer_blanked(root, "plaintext", b64len)) {
		rc = kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer is not the JSON the API describes");
		goto out;
	}
	dk = calloc(1, sizeof *dk);
	if (dk == NULL) {
		rc = kw_client_fail(c, KW_ERR_NOMEM, "out of memory");
		goto out;
	}
	snprintf(dk->key_name, sizeof dk->key_name, "%s", key_name);
	w = wrapped != NULL
	    ? wrapped
	    : json_string_value(json_object_get(root, "wrapped"));
	if (w == NULL || !wrapped_ok(w) ||
	    blob_version(w, key_name, &dk->version) != KW_OK) {
		rc = kw_client_fail(c, KW_ERR_PROTOCOL,
		    "the answer's wrapped key is not one for key %s", key_name);
		goto out;
	}
	dk->wrapped = strdup(w);
	if (dk->wrapped == NULL) {
		rc = kw_client_fail(c, KW_ERR_NOMEM, "out of memory");
		goto out;
	}
	dk->plain = dek;
	dek = NULL;
	*ret_dk = dk;
	dk = NULL;
	rc = KW_OK;
out:
	json_decref(root);
	kw_secret_free(dek);
	kw_datakey_free(dk);
	return rc;
}

static int
datakey_call(kw_client *c, const char *op, const char *key_name,
    const char *wrapped, const struct kw_context_pair *ctx, size_t nctx,
    kw_datakey **ret_dk)
{
	char path[128];
	char *body = NULL;
	struct kw_secret *ans = NULL;
	size_t len = 0;
	int rc;

	if (c == NULL || ret_dk == NULL)
		return KW_ERR_INVALID;
	kw_client_clear(c);
	if (!kw_key_name_ok(c, key_name))
		return KW_ERR_INVALID;
	if (wrapped != NULL && !wrapped_ok(wrapped))
		return kw_client_fail(c, KW_ERR_INVALID,
		    "wrapped: expected the base64 (RFC 4648, padded) of a "
		    "wrapped data key, as datakey returned it");
	rc = request_body(c, wrapped, ctx, nctx, &body);
	if (rc != KW_OK)
		return rc;
	snprintf(path, sizeof path, "/v1/keys/%s/%s", key_name, op);
	/* Neither call changes state on the server: safe to repeat. */
	rc = kw_call(c, KW_CALL_SAFE, "POST", path, body, true, &ans, NULL,
	    &len);
	free(body);
	if (rc != KW_OK)
		return rc;
	rc = kw_datakey_parse_answer(c, key_name, wrapped,
	    (char *)kw_secret_data(ans), len, ret_dk);
	kw_secret_free(ans);
	return rc;
}

int
kw_datakey_generate(kw_client *c, const char *key_name,
    const struct kw_context_pair *ctx, size_t nctx, kw_datakey **ret_dk)
{
	return datakey_call(c, "datakey", key_name, NULL, ctx, nctx, ret_dk);
}

int
kw_datakey_decrypt(kw_client *c, const char *key_name, const char *wrapped,
    const struct kw_context_pair *ctx, size_t nctx, kw_datakey **ret_dk)
{
	if (wrapped == NULL)
		return kw_client_fail(c, KW_ERR_INVALID,
		    "wrapped: required (the wrapped key datakey returned)");
	return datakey_call(c, "decrypt", key_name, wrapped, ctx, nctx, ret_dk);
}

/*
 * policy.c: the access policy, its strict parser and its evaluation.
 *
 * Parsing follows config.c: jansson with JSON_REJECT_DUPLICATES (which also
 * refuses invalid UTF-8 and NUL bytes in strings), a table of fields per
 * object, and a one-line error naming the place ("rules[2].grants[0].
 * operations[1]: ..."). Anything taken from the file and echoed in an
 * error or a reason is defanged first: errors go to the journal, reasons
 * into the audit log, and neither may be forged or flooded by input.
 *
 * Evaluation is default deny and walks the rules in file order; see
 * docs/POLICY.md for the exact semantics and reason texts.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "policy.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "text.h"

#define MAX_RULES 4096
#define MAX_GRANTS 64
#define MAX_OPS 16
#define MAX_RESOURCES 64
#define MAX_CTX 32
#define MAX_SCOPES 64
#define MAX_IDENTITY 255
#define MAX_RESOURCE 255
#define MAX_CTX_KEY 64
#define MAX_CTX_VALUE 256
#define MAX_SCOPE 255
#define MAX_COMMENT 1024
#define MAX_TTL 31536000 /* one year, in seconds */
/* Bytes of a request's value or resource shown in a reason. */
#define REASON_CUT 64
/* A place in the file: "rules[4095].grants[63].context.KEY", with the
 * prefix cut at 128 bytes (it never gets that long) and KEY at 51. */
#define W_MAX 200

#define ADMIN_OPS                                                     \
	((1u << KWD_OP_ADMIN_CREATE) | (1u << KWD_OP_ADMIN_LIST) |    \
	    (1u << KWD_OP_ADMIN_READ) | (1u << KWD_OP_ADMIN_ROTATE) | \
	    (1u << KWD_OP_ADMIN_PATCH) | (1u << KWD_OP_ADMIN_REVOKE))

/*
 * A glob split at its first and last star: the literal head and tail
 * are compared with memcmp before the star-matcher runs on the middle.
 * Policies list many rules that differ only in a few bytes at one end;
 * this turns most of them away in a few instructions.
 */
struct glob {
	char *pat;
	size_t len;
	size_t head; /* bytes before the first star (len if none) */
	size_t tail; /* bytes after the last star (0 if none) */
	bool star;
};

struct req_ctx {
	char *key;
	struct glob value;
};

struct grant {
	uint32_t ops; /* bit (1u << op) per granted operation */
	struct glob *resources; /* NULL: omitted (a token-only grant) */
	size_t nresources;
	struct req_ctx *ctx;
	size_t nctx;
	char **scopes; /* stored for the token code; not evaluated here */
	size_t nscopes;
	uint32_t max_ttl; /* seconds; 0: not set */
};

struct rule {
	struct glob identity;
	struct grant *grants;
	size_t ngrants;
};

struct kwd_policy {
	struct rule *rules;
	size_t nrules;
};

static const char *const op_names[KWD_OP__COUNT] = {
    [KWD_OP_DATAKEY] = "datakey",
    [KWD_OP_DECRYPT] = "decrypt",
    [KWD_OP_REWRAP] = "rewrap",
    [KWD_OP_TOKEN] = "token",
    [KWD_OP_CERT] = "cert",
    [KWD_OP_SECRET_READ] = "secret.read",
    [KWD_OP_SECRET_WRITE] = "secret.write",
    [KWD_OP_ADMIN_CREATE] = "admin.create",
    [KWD_OP_ADMIN_LIST] = "admin.list",
    [KWD_OP_ADMIN_READ] = "admin.read",
    [KWD_OP_ADMIN_ROTATE] = "admin.rotate",
    [KWD_OP_ADMIN_PATCH] = "admin.patch",
    [KWD_OP_ADMIN_REVOKE] = "admin.revoke",
    [KWD_OP_INTROSPECT] = "introspect",
    [KWD_OP_SIGN] = "sign",
};

struct field {
	const char *name;
	bool required;
};

static const struct field top_fields[] = {
    {"version", true},
    {"rules", true},
};

static const struct field rule_fields[] = {
    {"identity", true},
    {"grants", true},
    {"comment", false},
};

/* "resources" is required unless the grant's only operation is token. */
static const struct field grant_fields[] = {
    {"operations", true},
    {"resources", false},
    {"context", false},
    {"scopes", false},
    {"max_ttl", false},
};

#define NFIELDS(t) (sizeof(t) / sizeof((t)[0]))

const char *
kwd_policy_op_name(enum kwd_policy_op op)
{
	if ((unsigned)op >= KWD_OP__COUNT)
		return "?";
	return op_names[op];
}

#define fail(err, errlen, ...) \
	kw_errorf(KW_ERR_CONFIG, err, errlen, __VA_ARGS__)

__attribute__((format(printf, 3, 4))) static void
say(char *reason, size_t reasonlen, const char *fmt, ...)
{
	va_list ap;

	if (reason == NULL || reasonlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(reason, reasonlen, fmt, ap);
	va_end(ap);
}

/* A key or value from the file, fit for a one-line message. */
static const char *
shown(const char *key, char buf[64])
{
	return kw_defang(key, 48, buf);
}

/* A request's value or a policy glob, fit for a reason. */
static const char *
cut(const char *s, char buf[REASON_CUT + 4])
{
	return kw_defang(s, REASON_CUT, buf);
}

/*
 * '*' matches any run of bytes, every other byte itself. On a mismatch
 * only the last star is retried one byte further: an earlier star can
 * never do better, since whatever it would absorb the last one absorbs
 * too. So the cost is O(plen * slen) at worst, never exponential.
 */
static bool
glob_n(const char *p, size_t plen, const char *s, size_t slen)
{
	size_t pi = 0, si = 0, star = 0, resume = 0;
	bool starred = false;

	while (si < slen) {
		if (pi < plen && p[pi] == '*') {
			while (pi < plen && p[pi] == '*')
				pi++;
			if (pi == plen)
				return true;
			starred = true;
			star = pi;
			resume = si;
		} else if (pi < plen && p[pi] == s[si]) {
			pi++;
			si++;
		} else if (starred) {
			pi = star;
			si = ++resume;
		} else {
			return false;
		}
	}
	while (pi < plen && p[pi] == '*')
		pi++;
	return pi == plen;
}

bool
kwd_policy_glob(const char *pattern, const char *s)
{
	if (pattern == NULL || s == NULL)
		return false;
	return glob_n(pattern, strlen(pattern), s, strlen(s));
}

/* Takes pat (NULL: out of memory, noticed by the caller). */
static void
glob_init(struct glob *g, char *pat)
{
	const char *first;

	g->pat = pat;
	if (pat == NULL)
		return;
	first = strchr(pat, '*');
	g->len = strlen(pat);
	g->star = first != NULL;
	g->head = g->star ? (size_t)(first - pat) : g->len;
	g->tail = g->star ? g->len - (size_t)(strrchr(pat, '*') - pat) - 1 : 0;
}

/* The same answer as kwd_policy_glob(g->pat, s), with slen == strlen(s). */
static bool
glob_match(const struct glob *g, const char *s, size_t slen)
{
	if (!g->star)
		return slen == g->len && memcmp(g->pat, s, slen) == 0;
	if (slen < g->head + g->tail)
		return false;
	if (memcmp(g->pat + g->len - g->tail, s + slen - g->tail, g->tail) !=
	        0 ||
	    memcmp(g->pat, s, g->head) != 0)
		return false;
	return glob_n(g->pat + g->head, g->len - g->head - g->tail, s + g->head,
	    slen - g->head - g->tail);
}

static const char *
dot(const char *where)
{
	return where[0] != '\0' ? "." : "";
}

/* Refuse unknown keys, then missing required ones. */
static int
check_fields(json_t *obj, const char *where, const struct field *fields,
    size_t nfields, char *err, size_t errlen)
{
	const char *key;
	json_t *v;
	char kbuf[64];

	json_object_foreach (obj, key, v) {
		bool found = false;

		for (size_t i = 0; i < nfields && !found; i++)
			found = strcmp(key, fields[i].name) == 0;
		if (!found)
			return fail(err, errlen,
			    "%s%s%s: unknown field (see docs/POLICY.md)", where,
			    dot(where), shown(key, kbuf));
	}
	for (size_t i = 0; i < nfields; i++)
		if (fields[i].required &&
		    json_object_get(obj, fields[i].name) == NULL)
			return fail(err, errlen, "%s%s%s: required", where,
			    dot(where), fields[i].name);
	return KW_OK;
}

static int
check_array(json_t *v, const char *where, size_t max, const char *what,
    char *err, size_t errlen)
{
	if (!json_is_array(v))
		return fail(err, errlen, "%s: expected an array of 1 to %zu %s",
		    where, max, what);
	if (json_array_size(v) == 0)
		return fail(err, errlen, "%s: empty (expected 1 to %zu %s)",
		    where, max, what);
	if (json_array_size(v) > max)
		return fail(err, errlen, "%s: at most %zu %s", where, max,
		    what);
	return KW_OK;
}

static bool
printable_ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if (*s < 0x20 || *s >= 0x7f)
			return false;
	return true;
}

static bool
resource_glob_ok(const char *s)
{
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
		        *s == '.' || *s == '_' || *s == '*' || *s == '-'))
			return false;
	return true;
}

static bool
ctx_key_ok(const char *s)
{
	size_t n = 0;

	if (!(*s >= 'a' && *s <= 'z'))
		return false;
	for (; *s != '\0'; s++, n++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
		        *s == '_' || *s == '.' || *s == '-'))
			return false;
	return n <= MAX_CTX_KEY;
}

/*
 * jansson has already checked the UTF-8. Refuse the C0 controls, DEL and
 * the C1 controls (U+0080..U+009F, encoded C2 80..C2 9F): a terminal or a
 * log viewer may act on them.
 */
static bool
ctx_value_ok(const char *s)
{
	const unsigned char *u = (const unsigned char *)s;

	for (; *u != '\0'; u++) {
		if (*u < 0x20 || *u == 0x7f)
			return false;
		if (u[0] == 0xc2 && u[1] >= 0x80 && u[1] <= 0x9f)
			return false;
	}
	return true;
}

static bool
scope_ok(const char *s)
{
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
		        *s == '.' || *s == '_' || *s == ':' || *s == '/' ||
		        *s == '*' || *s == '-'))
			return false;
	return true;
}

static int
parse_ops(struct grant *g, json_t *arr, const char *where, char *err,
    size_t errlen)
{
	char w[W_MAX], vbuf[64];
	json_t *v;
	size_t i;
	int rv;

	rv = check_array(arr, where, MAX_OPS, "operations", err, errlen);
	if (rv != KW_OK)
		return rv;
	json_array_foreach (arr, i, v) {
		const char *name;
		uint32_t bits = 0;

		snprintf(w, sizeof w, "%.128s[%zu]", where, i);
		if (!json_is_string(v))
			return fail(err, errlen,
			    "%s: expected an operation name (a string)", w);
		name = json_string_value(v);
		if (strcmp(name, "admin.*") == 0)
			bits = ADMIN_OPS;
		for (size_t o = 0; o < KWD_OP__COUNT && bits == 0; o++)
			if (strcmp(name, op_names[o]) == 0)
				bits = 1u << o;
		if (bits == 0)
			return fail(err, errlen, "%s: unknown operation \"%s\"",
			    w, shown(name, vbuf));
		/* "admin.*" with "admin.read" is a duplicate too: one of the
		 * two says something the author did not mean. */
		if ((g->ops & bits) != 0)
			return fail(err, errlen,
			    "%s: duplicate operation \"%s\" (already granted "
			    "in this list)",
			    w, name);
		g->ops |= bits;
	}
	return KW_OK;
}

static void
free_strings(char **list, size_t n)
{
	for (size_t i = 0; list != NULL && i < n; i++)
		free(list[i]);
	free(list);
}

/* A list of strings in a grant: what it is called and what it accepts. */
struct strkind {
	const char *noun; /* plural, for "at most 64 resources" */
	const char *item; /* for "... is not a key-name glob" */
	const char *charset; /* the alphabet, as shown in errors */
	size_t max_items;
	size_t max_len;
	bool (*ok)(const char *s);
};

static const struct strkind resource_kind = {"resources", "key-name glob",
    "[a-z0-9._*-]", MAX_RESOURCES, MAX_RESOURCE, resource_glob_ok};

static const struct strkind scope_kind = {"scopes", "scope", "[a-z0-9._:/*-]",
    MAX_SCOPES, MAX_SCOPE, scope_ok};

static int
parse_strings(char ***ret_list, size_t *ret_n, json_t *arr, const char *where,
    const struct strkind *k, char *err, size_t errlen)
{
	char w[W_MAX], vbuf[64];
	char **list = NULL;
	size_t n = 0, i;
	json_t *v;
	int rv;

	rv = check_array(arr, where, k->max_items, k->noun, err, errlen);
	if (rv != KW_OK)
		return rv;
	n = json_array_size(arr);
	list = calloc(n, sizeof *list);
	if (list == NULL)
		return KW_ERR_NOMEM;
	json_array_foreach (arr, i, v) {
		const char *s;
		size_t len;

		snprintf(w, sizeof w, "%.128s[%zu]", where, i);
		if (!json_is_string(v)) {
			rv = fail(err, errlen, "%s: expected a %s (a string)",
			    w, k->item);
			goto out;
		}
		s = json_string_value(v);
		len = strlen(s);
		if (len == 0 || len > k->max_len || !k->ok(s)) {
			rv = fail(err, errlen,
			    "%s: \"%s\" is not a %s (1 to %zu bytes of %s)", w,
			    shown(s, vbuf), k->item, k->max_len, k->charset);
			goto out;
		}
		list[i] = strdup(s);
		if (list[i] == NULL) {
			rv = KW_ERR_NOMEM;
			goto out;
		}
	}
	*ret_list = list;
	*ret_n = n;
	list = NULL;
	rv = KW_OK;
out:
	for (i = 0; list != NULL && i < n; i++)
		free(list[i]);
	free(list);
	return rv;
}

static int
parse_ctx(struct grant *g, json_t *obj, const char *where, char *err,
    size_t errlen)
{
	char w[W_MAX], kbuf[64];
	const char *key;
	json_t *v;
	size_t i = 0;

	if (!json_is_object(obj))
		return fail(err, errlen,
		    "%s: expected an object of key: value-glob strings", where);
	if (json_object_size(obj) > MAX_CTX)
		return fail(err, errlen, "%s: at most %d keys", where, MAX_CTX);
	if (json_object_size(obj) == 0)
		return KW_OK;
	g->ctx = calloc(json_object_size(obj), sizeof *g->ctx);
	if (g->ctx == NULL)
		return KW_ERR_NOMEM;
	json_object_foreach (obj, key, v) {
		const char *s;

		snprintf(w, sizeof w, "%.128s.%s", where, shown(key, kbuf));
		if (!ctx_key_ok(key))
			return fail(err, errlen,
			    "%s: invalid context key (expected "
			    "[a-z][a-z0-9_.-]{0,63})",
			    w);
		if (!json_is_string(v))
			return fail(err, errlen,
			    "%s: expected a value glob (a string)", w);
		s = json_string_value(v);
		if (*s == '\0' || strlen(s) > MAX_CTX_VALUE || !ctx_value_ok(s))
			return fail(err, errlen,
			    "%s: expected a value glob of 1 to %d bytes "
			    "without control characters (\"*\" for any value)",
			    w, MAX_CTX_VALUE);
		g->ctx[i].key = strdup(key);
		glob_init(&g->ctx[i].value, strdup(s));
		g->nctx = ++i;
		if (g->ctx[i - 1].key == NULL ||
		    g->ctx[i - 1].value.pat == NULL)
			return KW_ERR_NOMEM;
	}
	return KW_OK;
}

static int
parse_grant(struct grant *g, json_t *obj, const char *where, char *err,
    size_t errlen)
{
	char w[W_MAX];
	json_t *v;
	int rv;

	if (!json_is_object(obj))
		return fail(err, errlen, "%s: expected a grant (an object)",
		    where);
	rv = check_fields(obj, where, grant_fields, NFIELDS(grant_fields), err,
	    errlen);
	if (rv != KW_OK)
		return rv;
	snprintf(w, sizeof w, "%.128s.operations", where);
	rv = parse_ops(g, json_object_get(obj, "operations"), w, err, errlen);
	if (rv != KW_OK)
		return rv;
	snprintf(w, sizeof w, "%.128s.resources", where);
	if ((v = json_object_get(obj, "resources")) != NULL) {
		char **list = NULL;
		size_t n = 0;

		rv =
		    parse_strings(&list, &n, v, w, &resource_kind, err, errlen);
		if (rv != KW_OK)
			return rv;
		g->resources = calloc(n, sizeof *g->resources);
		if (g->resources == NULL) {
			free_strings(list, n);
			return KW_ERR_NOMEM;
		}
		for (size_t i = 0; i < n; i++)
			glob_init(&g->resources[i], list[i]);
		g->nresources = n;
		free(list);
	} else if (g->ops != (1u << KWD_OP_TOKEN)) {
		return fail(err, errlen,
		    "%s: required (only a grant whose sole operation is "
		    "token may omit it)",
		    w);
	}
	if ((v = json_object_get(obj, "context")) != NULL) {
		snprintf(w, sizeof w, "%.128s.context", where);
		rv = parse_ctx(g, v, w, err, errlen);
		if (rv != KW_OK)
			return rv;
	}
	if ((v = json_object_get(obj, "scopes")) != NULL) {
		snprintf(w, sizeof w, "%.128s.scopes", where);
		/* Scopes restrict tokens only; on any other grant they
		 * would look like a restriction that is not enforced. */
		if ((g->ops & (1u << KWD_OP_TOKEN)) == 0)
			return fail(err, errlen,
			    "%s: only for a grant of the token operation", w);
		rv = parse_strings(&g->scopes, &g->nscopes, v, w, &scope_kind,
		    err, errlen);
		if (rv != KW_OK)
			return rv;
	}
	if ((v = json_object_get(obj, "max_ttl")) != NULL) {
		snprintf(w, sizeof w, "%.128s.max_ttl", where);
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > MAX_TTL)
			return fail(err, errlen,
			    "%s: expected an integer number of seconds from 1 "
			    "to %d",
			    w, MAX_TTL);
		g->max_ttl = (uint32_t)json_integer_value(v);
	}
	return KW_OK;
}

static int
parse_rule(struct rule *r, json_t *obj, const char *where, char *err,
    size_t errlen)
{
	char w[W_MAX];
	const char *s;
	json_t *v, *grants;
	size_t i;
	int rv;

	if (!json_is_object(obj))
		return fail(err, errlen, "%s: expected a rule (an object)",
		    where);
	rv = check_fields(obj, where, rule_fields, NFIELDS(rule_fields), err,
	    errlen);
	if (rv != KW_OK)
		return rv;
	v = json_object_get(obj, "identity");
	if (!json_is_string(v) || (s = json_string_value(v))[0] == '\0' ||
	    strlen(s) > MAX_IDENTITY || !printable_ascii(s))
		return fail(err, errlen,
		    "%s.identity: expected a glob of 1 to %d printable ASCII "
		    "bytes",
		    where, MAX_IDENTITY);
	glob_init(&r->identity, strdup(s));
	if (r->identity.pat == NULL)
		return KW_ERR_NOMEM;
	if ((v = json_object_get(obj, "comment")) != NULL &&
	    (!json_is_string(v) || strlen(json_string_value(v)) > MAX_COMMENT))
		return fail(err, errlen,
		    "%s.comment: expected a string of at most %d bytes", where,
		    MAX_COMMENT);
	grants = json_object_get(obj, "grants");
	snprintf(w, sizeof w, "%.128s.grants", where);
	rv = check_array(grants, w, MAX_GRANTS, "grants", err, errlen);
	if (rv != KW_OK)
		return rv;
	r->grants = calloc(json_array_size(grants), sizeof *r->grants);
	if (r->grants == NULL)
		return KW_ERR_NOMEM;
	r->ngrants = json_array_size(grants);
	json_array_foreach (grants, i, v) {
		snprintf(w, sizeof w, "%.128s.grants[%zu]", where, i);
		rv = parse_grant(&r->grants[i], v, w, err, errlen);
		if (rv != KW_OK)
			return rv;
	}
	return KW_OK;
}

int
kwd_policy_parse(const char *buf, size_t len, struct kwd_policy **ret_policy,
    char *err, size_t errlen)
{
	struct kwd_policy *p = NULL;
	char where[32], tbuf[JSON_ERROR_TEXT_LENGTH + 4];
	json_error_t je;
	json_t *root = NULL, *v, *rules;
	size_t i;
	int rv;

	if (buf == NULL || ret_policy == NULL)
		return KW_ERR_INVALID;
	if (len > KWD_POLICY_MAX_BYTES)
		return fail(err, errlen, "policy larger than %d bytes",
		    KWD_POLICY_MAX_BYTES);
	/* jansson caps nesting (JSON_PARSER_MAX_DEPTH), refuses invalid
	 * UTF-8 and NUL bytes; we add duplicate keys. */
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (root == NULL) {
		/* je.text may quote the input ("near '...'"). */
		rv = fail(err, errlen, "line %d column %d: %s", je.line,
		    je.column,
		    kw_defang(je.text, JSON_ERROR_TEXT_LENGTH, tbuf));
		goto out;
	}
	if (!json_is_object(root)) {
		rv = fail(err, errlen, "expected a JSON object");
		goto out;
	}
	rv = check_fields(root, "", top_fields, NFIELDS(top_fields), err,
	    errlen);
	if (rv != KW_OK)
		goto out;
	v = json_object_get(root, "version");
	if (!json_is_integer(v)) {
		rv = fail(err, errlen, "version: expected the integer 1");
		goto out;
	}
	if (json_integer_value(v) != 1) {
		rv = fail(err, errlen,
		    "version: unsupported version %" JSON_INTEGER_FORMAT
		    " (expected 1)",
		    json_integer_value(v));
		goto out;
	}
	rules = json_object_get(root, "rules");
	rv = check_array(rules, "rules", MAX_RULES, "rules", err, errlen);
	if (rv != KW_OK)
		goto out;
	p = calloc(1, sizeof *p);
	if (p == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	p->rules = calloc(json_array_size(rules), sizeof *p->rules);
	if (p->rules == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	p->nrules = json_array_size(rules);
	json_array_foreach (rules, i, v) {
		snprintf(where, sizeof where, "rules[%zu]", i);
		rv = parse_rule(&p->rules[i], v, where, err, errlen);
		if (rv != KW_OK)
			goto out;
	}
	*ret_policy = p;
	p = NULL;
	rv = KW_OK;
out:
	kwd_policy_free(p);
	json_decref(root);
	return rv;
}

int
kwd_policy_load(const char *path, struct kwd_policy **ret_policy, char *err,
    size_t errlen)
{
	char *buf = NULL;
	struct stat st;
	size_t got = 0;
	int fd, rv;

	/* O_NONBLOCK: a FIFO put in the policy's place must not hang a
	 * reload; it is refused below as not a regular file. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		fail(err, errlen, "%s: %s", path, strerror(errno));
		return KW_ERR_IO;
	}
	if (fstat(fd, &st) != 0) {
		fail(err, errlen, "%s: %s", path, strerror(errno));
		rv = KW_ERR_IO;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rv = fail(err, errlen, "%s: not a regular file", path);
		goto out;
	}
	/* Whoever can write the policy can grant themselves every key. */
	if ((st.st_mode & S_IWOTH) != 0) {
		fail(err, errlen,
		    "%s: writable by everyone; refusing it (chmod o-w)", path);
		rv = KW_ERR_PERM;
		goto out;
	}
	buf = malloc(KWD_POLICY_MAX_BYTES + 1);
	if (buf == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, buf + got, KWD_POLICY_MAX_BYTES + 1 - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fail(err, errlen, "%s: %s", path, strerror(errno));
			rv = KW_ERR_IO;
			goto out;
		}
		if (r == 0)
			break;
		got += (size_t)r;
		if (got > KWD_POLICY_MAX_BYTES) {
			rv = fail(err, errlen, "%s: larger than %d bytes", path,
			    KWD_POLICY_MAX_BYTES);
			goto out;
		}
	}
	rv = kwd_policy_parse(buf, got, ret_policy, err, errlen);
out:
	free(buf);
	close(fd);
	return rv;
}

void
kwd_policy_free(struct kwd_policy *p)
{
	if (p == NULL)
		return;
	for (size_t r = 0; p->rules != NULL && r < p->nrules; r++) {
		struct rule *rule = &p->rules[r];

		for (size_t g = 0; rule->grants != NULL && g < rule->ngrants;
		     g++) {
			struct grant *gr = &rule->grants[g];

			for (size_t i = 0; i < gr->nresources; i++)
				free(gr->resources[i].pat);
			free(gr->resources);
			free_strings(gr->scopes, gr->nscopes);
			for (size_t c = 0; c < gr->nctx; c++) {
				free(gr->ctx[c].key);
				free(gr->ctx[c].value.pat);
			}
			free(gr->ctx);
		}
		free(rule->grants);
		free(rule->identity.pat);
	}
	free(p->rules);
	free(p);
}

/*
 * A grant without resources is a token-only grant (the parser allows the
 * omission nowhere else): it covers any resource.
 */
static bool
resource_ok(const struct grant *g, const char *resource, size_t len)
{
	if (g->resources == NULL)
		return true;
	for (size_t i = 0; i < g->nresources; i++)
		if (glob_match(&g->resources[i], resource, len))
			return true;
	return false;
}

/*
 * Every required key must be present and every occurrence of it must
 * match: the IPC decoder refuses duplicate keys, but if one slipped
 * through, a second value must not be able to vouch for the first. On
 * failure *ret_req is the requirement and *ret_got the offending value
 * (NULL: key missing).
 */
static bool
context_ok(const struct grant *g, const struct kwd_ctx_pair *ctx, size_t nctx,
    const struct req_ctx **ret_req, const char **ret_got)
{
	for (size_t i = 0; i < g->nctx; i++) {
		const struct req_ctx *want = &g->ctx[i];
		bool present = false;
		const char *got;

		for (size_t j = 0; j < nctx; j++) {
			if (ctx[j].key == NULL ||
			    strcmp(ctx[j].key, want->key) != 0)
				continue;
			present = true;
			got = ctx[j].value != NULL ? ctx[j].value : "";
			if (!glob_match(&want->value, got, strlen(got))) {
				*ret_req = want;
				*ret_got = got;
				return false;
			}
		}
		if (!present) {
			*ret_req = want;
			*ret_got = NULL;
			return false;
		}
	}
	return true;
}

bool
kwd_policy_check(const struct kwd_policy *p, const char *identity,
    enum kwd_policy_op op, const char *resource, const struct kwd_ctx_pair *ctx,
    size_t nctx, char *reason, size_t reasonlen)
{
	/* How far the closest candidate got, least to most specific. */
	enum {
		NEAR_NONE,
		NEAR_IDENTITY,
		NEAR_OP,
		NEAR_CONTEXT
	} near = NEAR_NONE;
	const struct req_ctx *near_req = NULL;
	const char *near_got = NULL;
	size_t near_rule = 0, near_grant = 0;
	char b1[REASON_CUT + 4], b2[REASON_CUT + 4];
	size_t idlen, reslen;
	uint32_t bit;

	if (p == NULL) {
		say(reason, reasonlen, "no policy loaded");
		return false;
	}
	if ((unsigned)op >= KWD_OP__COUNT) {
		say(reason, reasonlen, "unknown operation");
		return false;
	}
	/* "*" matches the empty string; an unauthenticated caller must not
	 * ride on a catch-all rule. */
	if (identity == NULL || identity[0] == '\0') {
		say(reason, reasonlen, "no identity");
		return false;
	}
	if (resource == NULL)
		resource = "";
	idlen = strlen(identity);
	reslen = strlen(resource);
	if (ctx == NULL)
		nctx = 0;
	bit = 1u << op;
	for (size_t r = 0; r < p->nrules; r++) {
		const struct rule *rule = &p->rules[r];

		if (!glob_match(&rule->identity, identity, idlen))
			continue;
		if (near < NEAR_IDENTITY)
			near = NEAR_IDENTITY;
		for (size_t g = 0; g < rule->ngrants; g++) {
			const struct grant *gr = &rule->grants[g];
			const struct req_ctx *req = NULL;
			const char *got = NULL;

			if ((gr->ops & bit) == 0)
				continue;
			if (near < NEAR_OP)
				near = NEAR_OP;
			if (!resource_ok(gr, resource, reslen))
				continue;
			if (context_ok(gr, ctx, nctx, &req, &got)) {
				say(reason, reasonlen,
				    "allowed by rules[%zu].grants[%zu]", r, g);
				return true;
			}
			if (near < NEAR_CONTEXT) {
				near = NEAR_CONTEXT;
				near_rule = r;
				near_grant = g;
				near_req = req;
				near_got = got;
			}
		}
	}
	switch (near) {
	case NEAR_CONTEXT:
		if (near_got == NULL)
			say(reason, reasonlen,
			    "rules[%zu].grants[%zu] requires context key "
			    "\"%s\" (missing)",
			    near_rule, near_grant, near_req->key);
		else
			say(reason, reasonlen,
			    "rules[%zu].grants[%zu] requires context %s=%s "
			    "(got %s=%s)",
			    near_rule, near_grant, near_req->key,
			    cut(near_req->value.pat, b1), near_req->key,
			    cut(near_got, b2));
		break;
	case NEAR_OP:
		say(reason, reasonlen, "no grant for %s on \"%s\"",
		    op_names[op], cut(resource, b1));
		break;
	case NEAR_IDENTITY:
		say(reason, reasonlen, "no grant for %s", op_names[op]);
		break;
	case NEAR_NONE:
		say(reason, reasonlen, "no rule for identity");
		break;
	}
	return false;
}

bool
kwd_policy_token(const struct kwd_policy *p, const char *identity,
    const char *const *scopes, size_t nscopes, uint32_t ttl, uint32_t *ret_ttl,
    char *reason, size_t reasonlen)
{
	const uint32_t bit = 1u << KWD_OP_TOKEN;
	bool had_grant = false, had_scopes = false;
	char b1[REASON_CUT + 4];
	const char *missing = NULL;
	size_t idlen;

	if (p == NULL || identity == NULL || identity[0] == '\0' ||
	    nscopes == 0 || scopes == NULL || ret_ttl == NULL) {
		say(reason, reasonlen, "no policy, identity or scope");
		return false;
	}
	idlen = strlen(identity);
	for (size_t r = 0; r < p->nrules; r++) {
		const struct rule *rule = &p->rules[r];

		if (!glob_match(&rule->identity, identity, idlen))
			continue;
		for (size_t g = 0; g < rule->ngrants; g++) {
			const struct grant *gr = &rule->grants[g];
			uint32_t max = gr->max_ttl != 0 ? gr->max_ttl
			                                : KWD_POLICY_TOKEN_TTL;
			size_t i;

			if ((gr->ops & bit) == 0)
				continue;
			had_grant = true;
			for (i = 0; i < nscopes; i++) {
				size_t j;

				for (j = 0; j < gr->nscopes; j++)
					if (kwd_policy_glob(gr->scopes[j],
					        scopes[i]))
						break;
				if (j == gr->nscopes) {
					missing = scopes[i];
					break;
				}
			}
			if (i < nscopes)
				continue;
			had_scopes = true;
			if (ttl > max)
				continue;
			*ret_ttl = ttl != 0 ? ttl : max;
			say(reason, reasonlen,
			    "allowed by rules[%zu].grants[%zu]", r, g);
			return true;
		}
	}
	if (had_scopes)
		say(reason, reasonlen, "ttl %u over the grant's max_ttl", ttl);
	else if (had_grant && missing != NULL)
		say(reason, reasonlen, "scope \"%s\" not granted",
		    cut(missing, b1));
	else
		say(reason, reasonlen, "no token grant for this identity");
	return false;
}

uint32_t
kwd_policy_max_ttl(const struct kwd_policy *p, const char *identity,
    enum kwd_policy_op op, const char *resource)
{
	size_t idlen, reslen;

	if (p == NULL || identity == NULL || identity[0] == '\0' ||
	    resource == NULL || (unsigned)op >= KWD_OP__COUNT)
		return 0;
	idlen = strlen(identity);
	reslen = strlen(resource);
	for (size_t r = 0; r < p->nrules; r++) {
		const struct rule *rule = &p->rules[r];

		if (!glob_match(&rule->identity, identity, idlen))
			continue;
		for (size_t g = 0; g < rule->ngrants; g++) {
			const struct grant *gr = &rule->grants[g];

			if ((gr->ops & (1u << op)) != 0 &&
			    resource_ok(gr, resource, reslen))
				return gr->max_ttl;
		}
	}
	return 0;
}

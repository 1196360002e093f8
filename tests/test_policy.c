/*
 * test_policy.c: the access policy: its strict parser, the glob matcher and
 * the evaluation with its denial reasons (docs/POLICY.md).
 *
 * Every refusal must be KW_ERR_CONFIG with a one-line, printable error that
 * names the place; every check must write a one-line reason.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <libgen.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "policy.h"

#define ID_JOB "spiffe://keyward.dev/job/train-llama"
#define ID_OPERATOR "alice.operators.keyward.dev"
#define ID_APP "spiffe://keyward.dev/app/inference-gw"

/* A policy around one rule, and a rule around one grant. */
#define POLICY(rules) "{\"version\":1,\"rules\":[" rules "]}"
#define RULE(grants) "{\"identity\":\"a\",\"grants\":[" grants "]}"
#define GRANT_OK "{\"operations\":[\"decrypt\"],\"resources\":[\"k\"]}"
#define RULE_OK RULE(GRANT_OK)
/* The grant under test is rules[1].grants[1]: indexes must be right. */
#define IN_GRANT(g) POLICY(RULE_OK "," RULE(GRANT_OK "," g))
#define IN_RULE(r) POLICY(RULE_OK "," r)

static const struct kwd_ctx_pair ctx_imagenet[] = {
    {"dataset", "imagenet-2026"}};
static const struct kwd_ctx_pair ctx_laion[] = {{"dataset", "laion"}};
static const struct kwd_ctx_pair ctx_other[] = {{"purpose", "train"}};
static const struct kwd_ctx_pair ctx_more[] = {{"purpose", "train"},
    {"dataset", "imagenet-2026"}};

static double
now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One line of printable ASCII: what goes into the journal and audit log. */
static void
assert_one_line(const char *s)
{
	assert_true(s[0] != '\0');
	for (const char *c = s; *c != '\0'; c++)
		assert_true(*c >= 0x20 && *c < 0x7f);
}

static struct kwd_policy *
parse_ok_len(const char *buf, size_t len)
{
	struct kwd_policy *p = NULL;
	char err[256] = "";
	int rv = kwd_policy_parse(buf, len, &p, err, sizeof err);

	if (rv != KW_OK)
		print_error("unexpected refusal: %s\n", err);
	assert_int_equal(rv, KW_OK);
	assert_non_null(p);
	return p;
}

static struct kwd_policy *
parse_ok(const char *json)
{
	return parse_ok_len(json, strlen(json));
}

static void
accepted(const char *json)
{
	kwd_policy_free(parse_ok(json));
}

/* Refused with KW_ERR_CONFIG and an error containing expect (if set). */
static void
refused_len(const char *buf, size_t len, const char *expect)
{
	struct kwd_policy *p = NULL;
	char err[256];
	int rv;

	memset(err, 'x', sizeof err);
	rv = kwd_policy_parse(buf, len, &p, err, sizeof err);
	if (rv != KW_ERR_CONFIG)
		print_error("not refused (%d): %.*s\n", rv,
		    (int)(len > 200 ? 200 : len), buf);
	assert_int_equal(rv, KW_ERR_CONFIG);
	assert_null(p);
	assert_non_null(memchr(err, '\0', sizeof err));
	assert_one_line(err);
	if (expect != NULL && strstr(err, expect) == NULL) {
		print_error("error \"%s\" lacks \"%s\"\n", err, expect);
		fail();
	}
}

static void
refused(const char *json, const char *expect)
{
	refused_len(json, strlen(json), expect);
}

static void
verdict(const struct kwd_policy *p, const char *identity, enum kwd_policy_op op,
    const char *resource, const struct kwd_ctx_pair *ctx, size_t nctx,
    bool allowed, const char *reason)
{
	char buf[512];
	bool got;

	memset(buf, 'x', sizeof buf);
	got = kwd_policy_check(p, identity, op, resource, ctx, nctx, buf,
	    sizeof buf);
	assert_non_null(memchr(buf, '\0', sizeof buf));
	assert_one_line(buf);
	if (reason != NULL)
		assert_string_equal(buf, reason);
	if (got != allowed)
		print_error("%s %s on %s: got %s (%s)\n", identity,
		    kwd_policy_op_name(op), resource ? resource : "(null)",
		    got ? "allowed" : "denied", buf);
	assert_int_equal(got, allowed);
	if (allowed)
		assert_int_equal(strncmp(buf, "allowed by rules[", 17), 0);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

/*
 * The policy.json that scripts/dev-setup writes: the here-document after
 * '"$DIR/policy.json" <<'EOF'', read from the script itself so that this
 * test follows it.
 */
static char *
dev_setup_policy(void)
{
	const char *repo = getenv("KW_REPO");
	char path[4096], line[1024];
	char *out = NULL;
	size_t len = 0;
	bool in = false;
	FILE *f;

	/* CTest sets KW_REPO; run by hand, this file's path tells. */
	if (repo != NULL)
		snprintf(path, sizeof path, "%s/scripts/dev-setup", repo);
	else
		snprintf(path, sizeof path, "%s/../scripts/dev-setup",
		    dirname(strdupa(__FILE__)));
	f = fopen(path, "r");
	if (f == NULL)
		print_error("%s: %s\n", path, strerror(errno));
	assert_non_null(f);
	out = calloc(1, 1);
	assert_non_null(out);
	while (fgets(line, sizeof line, f) != NULL) {
		if (!in) {
			in = strstr(line, "\"$DIR/policy.json\" <<'EOF'") !=
			    NULL;
			continue;
		}
		if (strcmp(line, "EOF\n") == 0)
			break;
		out = realloc(out, len + strlen(line) + 1);
		assert_non_null(out);
		memcpy(out + len, line, strlen(line) + 1);
		len += strlen(line);
	}
	fclose(f);
	assert_true(in);
	assert_true(len > 0);
	return out;
}

static int
setup_dev_policy(void **state)
{
	char *text = dev_setup_policy();
	struct kwd_policy *p = NULL;
	char err[256] = "";

	if (kwd_policy_parse(text, strlen(text), &p, err, sizeof err) !=
	    KW_OK) {
		print_error("dev-setup policy refused: %s\n", err);
		free(text);
		return -1;
	}
	free(text);
	*state = p;
	return 0;
}

static int
teardown_dev_policy(void **state)
{
	kwd_policy_free(*state);
	return 0;
}

static void
test_policy_dev_setup_parses(void **state)
{
	assert_non_null(*state);
}

static void
test_policy_dev_setup_train_job(void **state)
{
	const struct kwd_policy *p = *state;

	verdict(p, ID_JOB, KWD_OP_DATAKEY, "datasets", ctx_imagenet, 1, true,
	    "allowed by rules[0].grants[0]");
	verdict(p, ID_JOB, KWD_OP_DECRYPT, "datasets", ctx_imagenet, 1, true,
	    "allowed by rules[0].grants[0]");
	/* Further context keys are fine. */
	verdict(p, ID_JOB, KWD_OP_DECRYPT, "datasets", ctx_more, 2, true, NULL);
	verdict(p, ID_JOB, KWD_OP_DECRYPT, "datasets", ctx_laion, 1, false,
	    "rules[0].grants[0] requires context dataset=imagenet-* "
	    "(got dataset=laion)");
	verdict(p, ID_JOB, KWD_OP_DATAKEY, "datasets", ctx_laion, 1, false,
	    NULL);
	verdict(p, ID_JOB, KWD_OP_DECRYPT, "datasets", NULL, 0, false,
	    "rules[0].grants[0] requires context key \"dataset\" (missing)");
	verdict(p, ID_JOB, KWD_OP_DECRYPT, "datasets", ctx_other, 1, false,
	    "rules[0].grants[0] requires context key \"dataset\" (missing)");
	verdict(p, ID_JOB, KWD_OP_DECRYPT, "weights", ctx_imagenet, 1, false,
	    "no grant for decrypt on \"weights\"");
	verdict(p, ID_JOB, KWD_OP_DATAKEY, "datasets-2", ctx_imagenet, 1, false,
	    "no grant for datakey on \"datasets-2\"");
	verdict(p, ID_JOB, KWD_OP_REWRAP, "datasets", ctx_imagenet, 1, false,
	    "no grant for rewrap");
	verdict(p, ID_JOB, KWD_OP_TOKEN, NULL, NULL, 0, false,
	    "no grant for token");
	for (int op = KWD_OP_ADMIN_CREATE; op <= KWD_OP_ADMIN_PATCH; op++)
		verdict(p, ID_JOB, op, "datasets", ctx_imagenet, 1, false,
		    NULL);
	/* Identities are whole-string matches. */
	verdict(p, ID_JOB "2", KWD_OP_DECRYPT, "datasets", ctx_imagenet, 1,
	    false, "no rule for identity");
	verdict(p, "spiffe://keyward.dev/job/train-llam", KWD_OP_DECRYPT,
	    "datasets", ctx_imagenet, 1, false, "no rule for identity");
}

static void
test_policy_dev_setup_operator(void **state)
{
	const struct kwd_policy *p = *state;
	static const char *const keys[] = {"datasets", "weights-70b", "x",
	    "a.b_c-d"};

	for (int op = KWD_OP_ADMIN_CREATE; op <= KWD_OP_ADMIN_PATCH; op++) {
		for (size_t i = 0; i < N(keys); i++)
			verdict(p, ID_OPERATOR, op, keys[i], NULL, 0, true,
			    "allowed by rules[1].grants[0]");
		/* admin.list names no key: the "*" glob covers that. */
		verdict(p, ID_OPERATOR, op, NULL, NULL, 0, true, NULL);
	}
	verdict(p, ID_OPERATOR, KWD_OP_DECRYPT, "datasets", ctx_imagenet, 1,
	    false, "no grant for decrypt");
	for (int op = KWD_OP_DATAKEY; op <= KWD_OP_SECRET_WRITE; op++)
		verdict(p, ID_OPERATOR, op, "datasets", ctx_imagenet, 1, false,
		    NULL);
}

static void
test_policy_dev_setup_app(void **state)
{
	const struct kwd_policy *p = *state;

	verdict(p, ID_APP, KWD_OP_TOKEN, NULL, NULL, 0, true,
	    "allowed by rules[2].grants[0]");
	verdict(p, ID_APP, KWD_OP_TOKEN, "model-llama", NULL, 0, true,
	    "allowed by rules[2].grants[0]");
	for (int op = 0; op < KWD_OP__COUNT; op++)
		if (op != KWD_OP_TOKEN)
			verdict(p, ID_APP, op, "datasets", ctx_imagenet, 1,
			    false, NULL);
	verdict(p, ID_APP, KWD_OP_DECRYPT, "datasets", ctx_imagenet, 1, false,
	    "no grant for decrypt");
}

static void
test_policy_dev_setup_unknown_identity(void **state)
{
	const struct kwd_policy *p = *state;
	static const char *const ids[] = {"spiffe://keyward.dev/job/other",
	    "bob.operators.keyward.dev", "train-llama", "alice", "*",
	    "spiffe://keyward.dev/app/inference-gw/x"};

	for (size_t i = 0; i < N(ids); i++)
		for (int op = 0; op < KWD_OP__COUNT; op++)
			verdict(p, ids[i], op, "datasets", ctx_imagenet, 1,
			    false, "no rule for identity");
}

static void
test_policy_glob_edges(void **state)
{
	(void)state;
	assert_true(kwd_policy_glob("", ""));
	assert_false(kwd_policy_glob("", "a"));
	assert_false(kwd_policy_glob("a", ""));
	assert_true(kwd_policy_glob("*", ""));
	assert_true(kwd_policy_glob("*", "abc"));
	assert_true(kwd_policy_glob("***", ""));
	assert_true(kwd_policy_glob("a*", "a"));
	assert_true(kwd_policy_glob("a*", "abc"));
	assert_false(kwd_policy_glob("a*", "ba"));
	assert_false(kwd_policy_glob("a*", ""));
	assert_true(kwd_policy_glob("*a", "a"));
	assert_true(kwd_policy_glob("*a", "bca"));
	assert_false(kwd_policy_glob("*a", "ab"));
	assert_true(kwd_policy_glob("a*b*c", "abc"));
	assert_true(kwd_policy_glob("a*b*c", "axbyc"));
	assert_true(kwd_policy_glob("a*b*c", "abcbc"));
	assert_true(kwd_policy_glob("a*b*c", "acbc"));
	assert_false(kwd_policy_glob("a*b*c", "acb"));
	assert_false(kwd_policy_glob("a*b*c", "abcx"));
	assert_true(kwd_policy_glob("a**b", "ab"));
	/* Backtracking over a partial match. */
	assert_true(kwd_policy_glob("*aab", "aaab"));
	assert_true(kwd_policy_glob("a*ab", "aab"));
	assert_true(kwd_policy_glob("*ab*ab", "xabyabab"));
	assert_false(kwd_policy_glob("*ab*abc", "xabyabab"));
	/* Prefixes and suffixes. */
	assert_true(kwd_policy_glob("imagenet-*", "imagenet-"));
	assert_true(kwd_policy_glob("imagenet-*", "imagenet-2026"));
	assert_false(kwd_policy_glob("imagenet-*", "imagenet"));
	assert_false(kwd_policy_glob("imagenet-*", "x-imagenet-2026"));
	assert_true(kwd_policy_glob("*-2026", "imagenet-2026"));
	assert_false(kwd_policy_glob("*-2026", "imagenet-2026x"));
	/* Whole-string, exact, case-sensitive. */
	assert_true(kwd_policy_glob("abc", "abc"));
	assert_false(kwd_policy_glob("abc", "abcd"));
	assert_false(kwd_policy_glob("abc", "ab"));
	assert_false(kwd_policy_glob("abc", "ABC"));
	/* No other metacharacters. */
	assert_false(kwd_policy_glob("a?c", "abc"));
	assert_true(kwd_policy_glob("a?c", "a?c"));
	assert_false(kwd_policy_glob("[ab]", "a"));
	assert_true(kwd_policy_glob("[ab]", "[ab]"));
	assert_false(kwd_policy_glob("a\\*", "ab"));
	assert_true(kwd_policy_glob("a\\*", "a\\b"));
	/* Bytes above 0x7f match themselves. */
	assert_true(kwd_policy_glob("caf\xc3\xa9-*", "caf\xc3\xa9-1"));
	assert_false(kwd_policy_glob("caf\xc3\xa9", "cafe"));
	assert_false(kwd_policy_glob(NULL, "a"));
	assert_false(kwd_policy_glob("*", NULL));
}

static void
test_policy_glob_many_stars(void **state)
{
	char pat[512], s[256], s2[256];
	size_t n = 0;
	double t0, t1;
	int reps = 1000;
	bool r = false;

	(void)state;
	/* "*a*a...*a*b" (100 stars) against 255 a's: a naive recursive
	 * matcher tries C(255, 99) ways before saying no. */
	for (int i = 0; i < 99; i++) {
		pat[n++] = '*';
		pat[n++] = 'a';
	}
	pat[n++] = '*';
	pat[n++] = 'b';
	pat[n] = '\0';
	memset(s, 'a', 255);
	s[255] = '\0';
	memcpy(s2, s, sizeof s2);
	s2[254] = 'b';
	t0 = now_sec();
	assert_false(kwd_policy_glob(pat, s));
	t1 = now_sec();
	/* Generous: linear-ish is microseconds, exponential is never. */
	assert_true(t1 - t0 < 1.0);
	assert_true(kwd_policy_glob(pat, s2));
	t0 = now_sec();
	for (int i = 0; i < reps; i++)
		r |= kwd_policy_glob(pat, s);
	t1 = now_sec();
	assert_false(r);
	print_message("glob: 100-star pattern vs 255 bytes (no match): "
	              "%.2f us per call\n",
	    (t1 - t0) * 1e6 / reps);
	/* 100 bare stars, and 100 "a*" steps. */
	memset(pat, '*', 100);
	pat[100] = '\0';
	assert_true(kwd_policy_glob(pat, s));
	for (int i = 0; i < 100; i++) {
		pat[2 * i] = 'a';
		pat[2 * i + 1] = '*';
	}
	pat[200] = '\0';
	assert_true(kwd_policy_glob(pat, s));
	pat[199] = 'c';
	t0 = now_sec();
	assert_false(kwd_policy_glob(pat, s));
	assert_true(now_sec() - t0 < 1.0);
}

/* The definition, without cleverness: exponential, for short inputs. */
static bool
ref_glob(const char *p, const char *s)
{
	if (*p == '\0')
		return *s == '\0';
	if (*p == '*')
		return ref_glob(p + 1, s) || (*s != '\0' && ref_glob(p, s + 1));
	return *s == *p && ref_glob(p + 1, s + 1);
}

/* i written in base `base` over alphabet, len digits. */
static void
spell(char *out, unsigned i, size_t len, const char *alphabet, unsigned base)
{
	for (size_t k = 0; k < len; k++, i /= base)
		out[k] = alphabet[i % base];
	out[len] = '\0';
}

/*
 * Every pattern over "ab*" up to 6 bytes against every string over "ab"
 * up to 7 bytes: kwd_policy_glob agrees with the definition, and so does
 * the policy check, which matches through globs split at load time.
 */
static void
test_policy_glob_reference(void **state)
{
	char pat[8], str[8], json[256];
	unsigned npat = 0, nmatch = 0;

	(void)state;
	for (size_t plen = 0; plen <= 6; plen++) {
		unsigned pmax = 1;

		for (size_t k = 0; k < plen; k++)
			pmax *= 3;
		for (unsigned pi = 0; pi < pmax; pi++) {
			struct kwd_policy *p = NULL;

			spell(pat, pi, plen, "ab*", 3);
			if (plen > 0) {
				snprintf(json, sizeof json,
				    POLICY("{\"identity\":\"%s\",\"grants\":"
				           "[{\"operations\":[\"decrypt\"],"
				           "\"resources\":[\"%s\"],"
				           "\"context\":{\"c\":\"%s\"}}]}"),
				    pat, pat, pat);
				/* 'a' and 'b' are fine in every position. */
				p = parse_ok(json);
			}
			npat++;
			for (size_t slen = 0; slen <= 7; slen++) {
				for (unsigned si = 0; si < (1u << slen); si++) {
					struct kwd_ctx_pair c[1] = {{"c", str}};
					bool want;

					spell(str, si, slen, "ab", 2);
					want = ref_glob(pat, str);
					nmatch += want;
					if (kwd_policy_glob(pat, str) != want)
						print_error(
						    "glob(\"%s\", \"%s\")"
						    " != %d\n",
						    pat, str, want);
					assert_int_equal(kwd_policy_glob(pat,
					                     str),
					    want);
					if (p == NULL || slen == 0)
						continue;
					/* Identity, resource and context
					 * value all go through the glob. */
					assert_int_equal(kwd_policy_check(p,
					                     str,
					                     KWD_OP_DECRYPT,
					                     str, c, 1, NULL,
					                     0),
					    want);
				}
			}
			kwd_policy_free(p);
		}
	}
	assert_int_equal(npat, 1093);
	assert_true(nmatch > 0);
}

static void
test_policy_op_names(void **state)
{
	static const char *const names[] = {"datakey", "decrypt", "rewrap",
	    "token", "cert", "secret.read", "secret.write", "admin.create",
	    "admin.list", "admin.read", "admin.rotate", "admin.patch",
	    "admin.revoke", "introspect", "sign"};

	(void)state;
	assert_int_equal(N(names), KWD_OP__COUNT);
	for (int op = 0; op < KWD_OP__COUNT; op++)
		assert_string_equal(kwd_policy_op_name(op), names[op]);
	assert_string_equal(kwd_policy_op_name(KWD_OP__COUNT), "?");
	assert_string_equal(kwd_policy_op_name((enum kwd_policy_op) - 1), "?");
}

static void
test_policy_accepts(void **state)
{
	char json[1024], id[256];
	char *big;

	(void)state;
	accepted(POLICY(RULE_OK));
	accepted(POLICY(RULE_OK "," RULE_OK));
	accepted(IN_RULE("{\"identity\":\"x\",\"comment\":\"\",\"grants\":["
	                 "{\"operations\":[\"token\"]}]}"));
	accepted(IN_RULE("{\"comment\":\"first\",\"grants\":[" GRANT_OK
	                 "],\"identity\":\"CN=Jane Doe, O=Example (x)\"}"));
	accepted(IN_GRANT("{\"operations\":[\"token\"],\"scopes\":["
	                  "\"model:llama-70b:infer\",\"a/b*\"],"
	                  "\"max_ttl\":31536000}"));
	accepted(IN_GRANT("{\"operations\":[\"token\",\"cert\"],"
	                  "\"resources\":[\"*\"],\"max_ttl\":1,"
	                  "\"scopes\":[\"x\"]}"));
	accepted(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                  "\"k\"],\"context\":{}}"));
	accepted(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                  "\"k\"],\"context\":{\"a\":\"*\",\"b.c_d-0\":"
	                  "\"caf\\u00e9 \\u2603 *\"}}"));
	accepted(IN_GRANT("{\"operations\":[\"admin.*\",\"datakey\","
	                  "\"decrypt\",\"rewrap\",\"token\",\"cert\","
	                  "\"secret.read\",\"secret.write\"],"
	                  "\"resources\":[\"a\",\"b-*\",\"*.c\",\"d_e\","
	                  "\"0\"]}"));
	accepted(IN_GRANT("{\"operations\":[\"admin.create\",\"admin.list\","
	                  "\"admin.read\",\"admin.rotate\",\"admin.patch\"],"
	                  "\"resources\":[\"*\"]}"));
	/* The identity's length limit reached, not passed. */
	memset(id, 'i', 255);
	id[255] = '\0';
	snprintf(json, sizeof json,
	    POLICY("{\"identity\":\"%s\",\"grants\":[" GRANT_OK "]}"), id);
	accepted(json);
	/* Whitespace padding up to exactly the size limit is fine. */
	big = malloc(KWD_POLICY_MAX_BYTES);
	assert_non_null(big);
	memset(big, ' ', KWD_POLICY_MAX_BYTES);
	memcpy(big, POLICY(RULE_OK), strlen(POLICY(RULE_OK)));
	kwd_policy_free(parse_ok_len(big, KWD_POLICY_MAX_BYTES));
	free(big);
}

static void
test_policy_refuses_top(void **state)
{
	(void)state;
	refused("", "line 1");
	refused("[]", "expected a JSON object");
	refused("\"x\"", NULL);
	refused("{}", "version: required");
	refused("{\"version\":1}", "rules: required");
	refused("{\"rules\":[" RULE_OK "]}", "version: required");
	refused("{\"version\":2,\"rules\":[" RULE_OK "]}",
	    "version: unsupported version 2 (expected 1)");
	refused("{\"version\":0,\"rules\":[" RULE_OK "]}", "version");
	refused("{\"version\":-1,\"rules\":[" RULE_OK "]}", "version");
	refused("{\"version\":\"1\",\"rules\":[" RULE_OK "]}",
	    "version: expected the integer 1");
	refused("{\"version\":1.0,\"rules\":[" RULE_OK "]}",
	    "version: expected the integer 1");
	refused("{\"version\":true,\"rules\":[" RULE_OK "]}", "version");
	refused("{\"version\":null,\"rules\":[" RULE_OK "]}", "version");
	refused("{\"version\":99999999999999999999999,\"rules\":[]}", NULL);
	refused("{\"version\":1,\"rules\":[]}", "rules: empty (expected 1 to");
	refused("{\"version\":1,\"rules\":{}}", "rules: expected an array");
	refused("{\"version\":1,\"rules\":" RULE_OK "}",
	    "rules: expected an array");
	refused("{\"version\":1,\"rules\":null}", "rules: expected an array");
	refused("{\"version\":1,\"rules\":[" RULE_OK "],\"extra\":1}",
	    "extra: unknown field");
	refused("{\"version\":1,\"Rules\":[" RULE_OK "]}",
	    "Rules: unknown field");
	refused("{\"version\":1,\"rules\":[" RULE_OK "]} x", "line 1");
	refused("{\"version\":1,\"rules\":[" RULE_OK "]}{}", NULL);
	/* JSON that is not quite JSON. */
	refused("{\"version\":1,\"rules\":[" RULE_OK ",]}", NULL);
	refused("{'version':1}", NULL);
	refused("{\"version\":1,/* c */\"rules\":[" RULE_OK "]}", NULL);
	refused("\xef\xbb\xbf{\"version\":1,\"rules\":[" RULE_OK "]}", NULL);
}

static void
test_policy_refuses_rule(void **state)
{
	char json[2048], id[300], c[1100], big[4096];

	(void)state;
	refused(IN_RULE("[]"), "rules[1]: expected a rule (an object)");
	refused(IN_RULE("\"a\""), "rules[1]: expected a rule");
	refused(IN_RULE("null"), "rules[1]: expected a rule");
	refused(IN_RULE("{}"), "rules[1].identity: required");
	refused(IN_RULE("{\"identity\":\"a\"}"), "rules[1].grants: required");
	refused(IN_RULE("{\"grants\":[" GRANT_OK "]}"),
	    "rules[1].identity: required");
	refused(IN_RULE(
	            "{\"identity\":\"a\",\"grants\":[" GRANT_OK "],\"id\":1}"),
	    "rules[1].id: unknown field");
	refused(IN_RULE("{\"identity\":\"a\",\"grant\":[" GRANT_OK "]}"),
	    "rules[1].grant: unknown field");
	/* identity */
	refused(IN_RULE("{\"identity\":\"\",\"grants\":[" GRANT_OK "]}"),
	    "rules[1].identity: expected a glob of 1 to 255 printable ASCII");
	refused(IN_RULE("{\"identity\":1,\"grants\":[" GRANT_OK "]}"),
	    "rules[1].identity");
	refused(IN_RULE("{\"identity\":[\"a\"],\"grants\":[" GRANT_OK "]}"),
	    "rules[1].identity");
	refused(IN_RULE("{\"identity\":null,\"grants\":[" GRANT_OK "]}"),
	    "rules[1].identity");
	refused(IN_RULE("{\"identity\":\"a\\tb\",\"grants\":[" GRANT_OK "]}"),
	    "rules[1].identity");
	refused(IN_RULE("{\"identity\":\"a\\nb\",\"grants\":[" GRANT_OK "]}"),
	    "rules[1].identity");
	refused(IN_RULE(
	            "{\"identity\":\"a\\u007fb\",\"grants\":[" GRANT_OK "]}"),
	    "rules[1].identity");
	refused(IN_RULE(
	            "{\"identity\":\"caf\\u00e9\",\"grants\":[" GRANT_OK "]}"),
	    "rules[1].identity");
	memset(id, 'i', 256);
	id[256] = '\0';
	snprintf(json, sizeof json,
	    IN_RULE("{\"identity\":\"%s\",\"grants\":[" GRANT_OK "]}"), id);
	refused(json, "rules[1].identity");
	/* grants */
	refused(IN_RULE("{\"identity\":\"a\",\"grants\":[]}"),
	    "rules[1].grants: empty (expected 1 to");
	refused(IN_RULE("{\"identity\":\"a\",\"grants\":" GRANT_OK "}"),
	    "rules[1].grants: expected an array");
	refused(IN_RULE("{\"identity\":\"a\",\"grants\":\"x\"}"),
	    "rules[1].grants: expected an array");
	/* comment */
	refused(IN_RULE(
	            "{\"identity\":\"a\",\"comment\":1,\"grants\":[" GRANT_OK
	            "]}"),
	    "rules[1].comment: expected a string");
	refused(
	    IN_RULE(
	        "{\"identity\":\"a\",\"comment\":[\"x\"],\"grants\":[" GRANT_OK
	        "]}"),
	    "rules[1].comment");
	/* comment: 1024 bytes fine, 1025 not. */
	memset(c, 'c', 1025);
	c[1025] = '\0';
	snprintf(big, sizeof big,
	    IN_RULE(
	        "{\"identity\":\"a\",\"comment\":\"%s\",\"grants\":[" GRANT_OK
	        "]}"),
	    c);
	refused(big, "rules[1].comment");
	c[1024] = '\0';
	snprintf(big, sizeof big,
	    IN_RULE(
	        "{\"identity\":\"a\",\"comment\":\"%s\",\"grants\":[" GRANT_OK
	        "]}"),
	    c);
	accepted(big);
}

static void
test_policy_refuses_grant(void **state)
{
	(void)state;
	refused(IN_GRANT("[]"), "rules[1].grants[1]: expected a grant");
	refused(IN_GRANT("\"decrypt\""),
	    "rules[1].grants[1]: expected a grant");
	refused(IN_GRANT("{}"), "rules[1].grants[1].operations: required");
	refused(IN_GRANT("{\"resources\":[\"k\"]}"),
	    "rules[1].grants[1].operations: required");
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":[\"k\"],"
	                 "\"ttl\":5}"),
	    "rules[1].grants[1].ttl: unknown field");
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":[\"k\"],"
	                 "\"rate\":{}}"),
	    "rules[1].grants[1].rate: unknown field");
}

static void
test_policy_refuses_operations(void **state)
{
	(void)state;
	refused(IN_GRANT("{\"operations\":[],\"resources\":[\"k\"]}"),
	    "rules[1].grants[1].operations: empty (expected 1 to");
	refused(IN_GRANT("{\"operations\":\"decrypt\",\"resources\":[\"k\"]}"),
	    "rules[1].grants[1].operations: expected an array");
	refused(IN_GRANT("{\"operations\":[\"decrypt\",1],\"resources\":["
	                 "\"k\"]}"),
	    "rules[1].grants[1].operations[1]: expected an operation name");
	refused(IN_GRANT("{\"operations\":[[\"decrypt\"]],\"resources\":["
	                 "\"k\"]}"),
	    "rules[1].grants[1].operations[0]: expected an operation name");
	refused(IN_GRANT("{\"operations\":[\"datakey\",\"decrypt2\"],"
	                 "\"resources\":[\"k\"]}"),
	    "rules[1].grants[1].operations[1]: unknown operation "
	    "\"decrypt2\"");
	refused(IN_GRANT("{\"operations\":[\"Decrypt\"],\"resources\":["
	                 "\"k\"]}"),
	    "operations[0]: unknown operation \"Decrypt\"");
	refused(IN_GRANT("{\"operations\":[\"\"],\"resources\":[\"k\"]}"),
	    "operations[0]: unknown operation \"\"");
	refused(IN_GRANT("{\"operations\":[\"*\"],\"resources\":[\"k\"]}"),
	    "operations[0]: unknown operation \"*\"");
	refused(IN_GRANT("{\"operations\":[\"admin\"],\"resources\":[\"k\"]}"),
	    "operations[0]: unknown operation \"admin\"");
	refused(IN_GRANT("{\"operations\":[\"secret.*\"],\"resources\":["
	                 "\"k\"]}"),
	    "operations[0]: unknown operation \"secret.*\"");
	refused(IN_GRANT("{\"operations\":[\"decrypt \"],\"resources\":["
	                 "\"k\"]}"),
	    "unknown operation");
	/* Duplicates, also through "admin.*". */
	refused(IN_GRANT("{\"operations\":[\"decrypt\",\"decrypt\"],"
	                 "\"resources\":[\"k\"]}"),
	    "rules[1].grants[1].operations[1]: duplicate operation "
	    "\"decrypt\"");
	refused(IN_GRANT("{\"operations\":[\"admin.*\",\"admin.read\"],"
	                 "\"resources\":[\"k\"]}"),
	    "operations[1]: duplicate operation \"admin.read\"");
	refused(IN_GRANT("{\"operations\":[\"admin.list\",\"admin.*\"],"
	                 "\"resources\":[\"k\"]}"),
	    "operations[1]: duplicate operation \"admin.*\"");
	refused(IN_GRANT("{\"operations\":[\"admin.*\",\"admin.*\"],"
	                 "\"resources\":[\"k\"]}"),
	    "operations[1]: duplicate operation");
	/* 17 entries: refused on the count before any name is looked at. */
	refused(IN_GRANT("{\"operations\":[\"a\",\"a\",\"a\",\"a\",\"a\","
	                 "\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\","
	                 "\"a\",\"a\",\"a\",\"a\"],\"resources\":[\"k\"]}"),
	    "rules[1].grants[1].operations: at most 16 operations");
}

static void
test_policy_refuses_resources(void **state)
{
	char json[4096], list[2048];
	size_t n = 0;

	(void)state;
	refused(IN_GRANT("{\"operations\":[\"decrypt\"]}"),
	    "rules[1].grants[1].resources: required (only a grant whose sole "
	    "operation is token may omit it)");
	refused(IN_GRANT("{\"operations\":[\"token\",\"cert\"]}"),
	    "rules[1].grants[1].resources: required");
	refused(IN_GRANT("{\"operations\":[\"admin.*\"]}"),
	    "rules[1].grants[1].resources: required");
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":[]}"),
	    "rules[1].grants[1].resources: empty (expected 1 to");
	refused(IN_GRANT("{\"operations\":[\"token\"],\"resources\":[]}"),
	    "rules[1].grants[1].resources: empty (expected 1 to");
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":\"k\"}"),
	    "rules[1].grants[1].resources: expected an array");
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":[1]}"),
	    "rules[1].grants[1].resources[0]: expected a key-name glob");
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"k\",\"\"]}"),
	    "rules[1].grants[1].resources[1]: \"\" is not a key-name glob");
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"Datasets\"]}"),
	    "resources[0]: \"Datasets\" is not a key-name glob (1 to 255 "
	    "bytes of [a-z0-9._*-])");
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"a/b\"]}"),
	    "resources[0]: \"a/b\" is not");
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"a b\"]}"),
	    "resources[0]");
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"a?\"]}"),
	    "resources[0]");
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"caf\\u00e9\"]}"),
	    "resources[0]: \"caf??\" is not");
	/* 255 bytes fine, 256 not. */
	memset(list, 'r', 256);
	list[256] = '\0';
	snprintf(json, sizeof json,
	    IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":[\"%s\"]}"),
	    list);
	refused(json, "resources[0]");
	list[255] = '\0';
	snprintf(json, sizeof json,
	    IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":[\"%s\"]}"),
	    list);
	accepted(json);
	/* 64 fine, 65 not. */
	for (int i = 0; i < 64; i++)
		n += (size_t)sprintf(list + n, "%s\"k%d\"", i ? "," : "", i);
	snprintf(json, sizeof json,
	    IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":[%s]}"),
	    list);
	accepted(json);
	snprintf(json, sizeof json,
	    IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":[%s,"
	             "\"k\"]}"),
	    list);
	refused(json, "resources: at most 64 resources");
}

static void
test_policy_refuses_context(void **state)
{
	char json[8192], list[4096], k[80];
	size_t n = 0;

	(void)state;
#define CTX_GRANT(c)                                                    \
	IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":[\"k\"]," \
	         "\"context\":" c "}")
	refused(CTX_GRANT("[]"),
	    "rules[1].grants[1].context: expected an "
	    "object");
	refused(CTX_GRANT("\"dataset=x\""), "rules[1].grants[1].context");
	refused(CTX_GRANT("null"), "rules[1].grants[1].context");
	refused(CTX_GRANT("{\"dataset\":1}"),
	    "rules[1].grants[1].context.dataset: expected a value glob");
	refused(CTX_GRANT("{\"dataset\":[\"a\",\"b\"]}"),
	    "rules[1].grants[1].context.dataset: expected a value glob");
	refused(CTX_GRANT("{\"dataset\":null}"), "context.dataset");
	refused(CTX_GRANT("{\"dataset\":\"\"}"),
	    "context.dataset: expected a value glob of 1 to 256 bytes");
	refused(CTX_GRANT("{\"dataset\":\"a\\nb\"}"), "context.dataset");
	refused(CTX_GRANT("{\"dataset\":\"a\\u0001\"}"), "context.dataset");
	refused(CTX_GRANT("{\"dataset\":\"a\\u007f\"}"), "context.dataset");
	refused(CTX_GRANT("{\"dataset\":\"a\\u0085\"}"), "context.dataset");
	refused(CTX_GRANT("{\"dataset\":\"a\\u009b[31m\"}"), "context.dataset");
	accepted(CTX_GRANT("{\"dataset\":\"a\\u00a0\"}"));
	/* Keys */
	refused(CTX_GRANT("{\"Dataset\":\"x\"}"),
	    "rules[1].grants[1].context.Dataset: invalid context key "
	    "(expected [a-z][a-z0-9_.-]{0,63})");
	refused(CTX_GRANT("{\"\":\"x\"}"), "context.: invalid context key");
	refused(CTX_GRANT("{\"1a\":\"x\"}"), "context.1a: invalid");
	refused(CTX_GRANT("{\"_a\":\"x\"}"), "context._a: invalid");
	refused(CTX_GRANT("{\"a b\":\"x\"}"), "context.a b: invalid");
	refused(CTX_GRANT("{\"a\\nb\":\"x\"}"), "context.a?b: invalid");
	refused(CTX_GRANT("{\"caf\\u00e9\":\"x\"}"), "context.caf??: invalid");
	memset(k, 'k', 65);
	k[65] = '\0';
	snprintf(json, sizeof json, CTX_GRANT("{\"%s\":\"x\"}"), k);
	refused(json, "invalid context key");
	k[64] = '\0';
	snprintf(json, sizeof json, CTX_GRANT("{\"%s\":\"x\"}"), k);
	accepted(json);
	/* Value length: 256 fine, 257 not. */
	memset(list, 'v', 257);
	list[257] = '\0';
	snprintf(json, sizeof json, CTX_GRANT("{\"a\":\"%s\"}"), list);
	refused(json, "context.a: expected a value glob");
	list[256] = '\0';
	snprintf(json, sizeof json, CTX_GRANT("{\"a\":\"%s\"}"), list);
	accepted(json);
	/* 32 pairs fine, 33 not. */
	for (int i = 0; i < 32; i++)
		n += (size_t)sprintf(list + n, "%s\"k%d\":\"v\"", i ? "," : "",
		    i);
	snprintf(json, sizeof json, CTX_GRANT("{%s}"), list);
	accepted(json);
	snprintf(json, sizeof json, CTX_GRANT("{%s,\"k\":\"v\"}"), list);
	refused(json, "rules[1].grants[1].context: at most 32 keys");
#undef CTX_GRANT
}

static void
test_policy_refuses_scopes_ttl(void **state)
{
	(void)state;
#define TOKEN_GRANT(f) IN_GRANT("{\"operations\":[\"token\"]," f "}")
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":[\"k\"],"
	                 "\"scopes\":[\"x\"]}"),
	    "rules[1].grants[1].scopes: only for a grant of the token "
	    "operation");
	refused(TOKEN_GRANT("\"scopes\":[]"),
	    "rules[1].grants[1].scopes: empty (expected 1 to");
	refused(TOKEN_GRANT("\"scopes\":\"x\""),
	    "rules[1].grants[1].scopes: expected an array");
	refused(TOKEN_GRANT("\"scopes\":[1]"),
	    "rules[1].grants[1].scopes[0]: expected a scope");
	refused(TOKEN_GRANT("\"scopes\":[\"\"]"),
	    "rules[1].grants[1].scopes[0]: \"\" is not a scope");
	refused(TOKEN_GRANT("\"scopes\":[\"a\",\"A b\"]"),
	    "scopes[1]: \"A b\" is not a scope");
	refused(TOKEN_GRANT("\"max_ttl\":0"),
	    "rules[1].grants[1].max_ttl: expected an integer number of "
	    "seconds from 1 to 31536000");
	refused(TOKEN_GRANT("\"max_ttl\":-5"), "max_ttl");
	refused(TOKEN_GRANT("\"max_ttl\":31536001"), "max_ttl");
	refused(TOKEN_GRANT("\"max_ttl\":3600.0"), "max_ttl");
	refused(TOKEN_GRANT("\"max_ttl\":\"3600\""), "max_ttl");
	refused(TOKEN_GRANT("\"max_ttl\":true"), "max_ttl");
	refused(TOKEN_GRANT("\"max_ttl\":null"), "max_ttl");
	refused(TOKEN_GRANT("\"max_ttl\":9223372036854775807"), "max_ttl");
	refused(TOKEN_GRANT("\"max_ttl\":-9223372036854775808"), "max_ttl");
	accepted(TOKEN_GRANT("\"max_ttl\":1"));
	/* max_ttl on any operation is stored. */
	accepted(IN_GRANT("{\"operations\":[\"cert\"],\"resources\":[\"k\"],"
	                  "\"max_ttl\":86400}"));
#undef TOKEN_GRANT
}

static void
test_policy_refuses_counts(void **state)
{
	size_t cap = 100 * 4200, n;
	char *buf = malloc(cap);

	(void)state;
	assert_non_null(buf);
	/* 4096 rules accepted, 4097 refused. */
	n = (size_t)sprintf(buf, "{\"version\":1,\"rules\":[");
	for (int i = 0; i < 4096; i++)
		n += (size_t)sprintf(buf + n, "%s" RULE_OK, i ? "," : "");
	memcpy(buf + n, "]}", 3);
	kwd_policy_free(parse_ok_len(buf, n + 2));
	n += (size_t)sprintf(buf + n, "," RULE_OK "]}");
	refused_len(buf, n, "rules: at most 4096 rules");
	/* 64 grants accepted, 65 refused. */
	n = (size_t)sprintf(buf,
	    "{\"version\":1,\"rules\":[" RULE_OK
	    ",{\"identity\":\"b\",\"grants\":[");
	for (int i = 0; i < 64; i++)
		n += (size_t)sprintf(buf + n, "%s" GRANT_OK, i ? "," : "");
	memcpy(buf + n, "]}]}", 5);
	kwd_policy_free(parse_ok_len(buf, n + 4));
	n += (size_t)sprintf(buf + n, "," GRANT_OK "]}]}");
	refused_len(buf, n, "rules[1].grants: at most 64 grants");
	free(buf);
}

static void
test_policy_refuses_too_large(void **state)
{
	const char *base = POLICY(RULE_OK);
	char *big = malloc(KWD_POLICY_MAX_BYTES + 1);

	(void)state;
	assert_non_null(big);
	memset(big, ' ', KWD_POLICY_MAX_BYTES + 1);
	memcpy(big, base, strlen(base));
	refused_len(big, KWD_POLICY_MAX_BYTES + 1,
	    "policy larger than 1048576 bytes");
	free(big);
}

static void
test_policy_refuses_deep_nesting(void **state)
{
	const size_t depth = 100000;
	char *buf = malloc(2 * depth + 256);
	size_t n;

	(void)state;
	assert_non_null(buf);
	memset(buf, '[', depth);
	refused_len(buf, depth, NULL);
	memset(buf + depth, ']', depth);
	refused_len(buf, 2 * depth, NULL);
	/* Inside an otherwise valid policy, beyond and within jansson's
	 * depth limit. */
	n = (size_t)sprintf(buf,
	    "{\"version\":1,\"rules\":[{\"identity\":"
	    "\"a\",\"comment\":");
	memset(buf + n, '[', depth);
	memset(buf + n + depth, ']', depth);
	n += 2 * depth;
	n += (size_t)sprintf(buf + n, ",\"grants\":[" GRANT_OK "]}]}");
	refused_len(buf, n, NULL);
	n = (size_t)sprintf(buf,
	    "{\"version\":1,\"rules\":[{\"identity\":"
	    "\"a\",\"comment\":");
	memset(buf + n, '[', 1000);
	memset(buf + n + 1000, ']', 1000);
	n += 2000;
	n += (size_t)sprintf(buf + n, ",\"grants\":[" GRANT_OK "]}]}");
	refused_len(buf, n, "rules[0].comment: expected a string");
	free(buf);
}

static void
test_policy_refuses_nul(void **state)
{
	static const char raw[] = "{\"version\":1,\"rules\":[{\"identity\":"
	                          "\"a\0b\",\"grants\":[" GRANT_OK "]}]}";

	(void)state;
	refused(IN_RULE(
	            "{\"identity\":\"a\\u0000b\",\"grants\":[" GRANT_OK "]}"),
	    NULL);
	refused(IN_GRANT("{\"operations\":[\"decrypt\\u0000x\"],"
	                 "\"resources\":[\"k\"]}"),
	    NULL);
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"k\\u0000\"]}"),
	    NULL);
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"k\"],\"context\":{\"a\\u0000\":\"x\"}}"),
	    NULL);
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"k\"],\"context\":{\"a\":\"x\\u0000*\"}}"),
	    NULL);
	refused_len(POLICY(RULE_OK) "\0", sizeof(POLICY(RULE_OK)), NULL);
	refused_len(raw, sizeof raw - 1, NULL);
	/* Truncated before the NUL, the text is incomplete. */
	refused_len(raw, strlen(raw), NULL);
}

static void
test_policy_refuses_invalid_utf8(void **state)
{
	(void)state;
	refused(IN_RULE("{\"identity\":\"a\xff\",\"grants\":[" GRANT_OK "]}"),
	    NULL);
	refused(IN_RULE("{\"identity\":\"a\xc3\",\"grants\":[" GRANT_OK "]}"),
	    NULL);
	/* Overlong '/', a UTF-16 surrogate, beyond U+10FFFF. */
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"k\"],\"context\":{\"a\":\"\xc0\xaf\"}}"),
	    NULL);
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"k\"],\"context\":{\"a\":\"\xed\xa0\x80\"}}"),
	    NULL);
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"k\"],\"context\":{\"a\":\"\xf4\x90\x80\x80\"}}"),
	    NULL);
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"k\"],\"context\":{\"\xe9t\xe9\":\"x\"}}"),
	    NULL);
	/* A lone escaped surrogate. */
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"k\"],\"context\":{\"a\":\"\\ud800\"}}"),
	    NULL);
	/* Outside strings. */
	refused("{\"version\":1,\"rules\":[" RULE_OK "]\xff}", NULL);
}

static void
test_policy_refuses_duplicates(void **state)
{
	(void)state;
	refused("{\"version\":1,\"version\":1,\"rules\":[" RULE_OK "]}",
	    "duplicate");
	refused("{\"version\":1,\"rules\":[" RULE_OK "],\"rules\":[" RULE_OK
	        "]}",
	    "duplicate");
	refused(
	    IN_RULE(
	        "{\"identity\":\"a\",\"identity\":\"b\",\"grants\":[" GRANT_OK
	        "]}"),
	    "duplicate");
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"operations\":["
	                 "\"datakey\"],\"resources\":[\"k\"]}"),
	    "duplicate");
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"k\"],\"context\":{\"a\":\"x\",\"a\":\"*\"}}"),
	    "duplicate");
	/* The same key spelt with an escape is the same key. */
	refused(IN_GRANT("{\"operations\":[\"decrypt\"],\"resources\":["
	                 "\"k\"],\"context\":{\"a\":\"x\",\"\\u0061\":\"*\"}}"),
	    "duplicate");
}

static void
test_policy_error_messages(void **state)
{
	struct kwd_policy *p = NULL;
	char err[256];

	(void)state;
	assert_int_equal(kwd_policy_parse(POLICY(RULE_OK "," RULE_OK "," RULE(
	                                      "{\"operations\":["
	                                      "\"datakey\",\"decrypt2\"],"
	                                      "\"resources\":[\"k\"]}")),
	                     strlen(POLICY(RULE_OK "," RULE_OK "," RULE(
	                         "{\"operations\":[\"datakey\","
	                         "\"decrypt2\"],\"resources\":["
	                         "\"k\"]}"))),
	                     &p, err, sizeof err),
	    KW_ERR_CONFIG);
	assert_string_equal(err,
	    "rules[2].grants[0].operations[1]: unknown operation \"decrypt2\"");
	/* Keys from the file are cut and defanged. */
	refused(IN_RULE(
	            "{\"identity\":\"a\",\"grants\":[" GRANT_OK "],"
	            "\"\\u001b[2J\\r\\nlevel=err "
	            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\":"
	            "1}"),
	    "rules[1].?[2J??level=err xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...: "
	    "unknown field");
	refused(IN_GRANT("{\"operations\":[\"\\u001b]0;pwned\\u0007\"],"
	                 "\"resources\":[\"k\"]}"),
	    "unknown operation \"?]0;pwned?\"");
	/* jansson's own message quotes the input: defanged too. */
	refused("{\"version\":1,\"rules\":[\"a\nb\"]}", "line 1");
	refused("{\"version\":1,\"rules\":[\"\x1b[31m", NULL);
	refused("{\"version\":1,\"rules\":[x\x1b[31m]}", NULL);
}

static void
test_policy_error_buffer(void **state)
{
	struct kwd_policy *p = NULL;
	char err[8];

	(void)state;
	assert_int_equal(kwd_policy_parse("{}", 2, &p, NULL, 0), KW_ERR_CONFIG);
	assert_null(p);
	memset(err, 'x', sizeof err);
	assert_int_equal(kwd_policy_parse("{}", 2, &p, err, sizeof err),
	    KW_ERR_CONFIG);
	assert_string_equal(err, "version");
	assert_int_equal(kwd_policy_parse(NULL, 0, &p, err, sizeof err),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_policy_parse(POLICY(RULE_OK),
	                     strlen(POLICY(RULE_OK)), NULL, err, sizeof err),
	    KW_ERR_INVALID);
	kwd_policy_free(NULL);
}

/*
 * rules[0] does not apply to "job"; rules[1] applies and has: grants[0]
 * for decrypt on "a-*" needing ctx x=1-*; grants[1] for decrypt on "b"
 * needing x=2 and y=*; grants[2] for datakey on "c". rules[2] also
 * applies, with decrypt on "b" needing x=3.
 */
static const char reasons_policy[] =
    POLICY("{\"identity\":\"other\",\"grants\":[{\"operations\":[\"decrypt\"],"
           "\"resources\":[\"*\"]}]},"
           "{\"identity\":\"j*\",\"grants\":["
           "{\"operations\":[\"decrypt\"],\"resources\":[\"a-*\"],"
           "\"context\":{\"x\":\"1-*\"}},"
           "{\"operations\":[\"decrypt\",\"rewrap\"],\"resources\":[\"b\"],"
           "\"context\":{\"x\":\"2\",\"y\":\"*\"}},"
           "{\"operations\":[\"datakey\"],\"resources\":[\"c\"]}]},"
           "{\"identity\":\"*ob\",\"grants\":["
           "{\"operations\":[\"decrypt\"],\"resources\":[\"b\"],"
           "\"context\":{\"x\":\"3\"}}]}");

static void
test_policy_reasons(void **state)
{
	struct kwd_policy *p = parse_ok(reasons_policy);
	const struct kwd_ctx_pair x1[] = {{"x", "1-a"}};
	const struct kwd_ctx_pair x2[] = {{"x", "2"}};
	const struct kwd_ctx_pair x2y[] = {{"y", ""}, {"x", "2"}};
	const struct kwd_ctx_pair x3[] = {{"x", "3"}};
	const struct kwd_ctx_pair x9[] = {{"x", "9"}};

	(void)state;
	verdict(p, "job", KWD_OP_DECRYPT, "a-1", x1, 1, true,
	    "allowed by rules[1].grants[0]");
	verdict(p, "job", KWD_OP_DECRYPT, "b", x2y, 2, true,
	    "allowed by rules[1].grants[1]");
	verdict(p, "job", KWD_OP_DATAKEY, "c", NULL, 0, true,
	    "allowed by rules[1].grants[2]");
	/* A later rule allows what an earlier one's context refused. */
	verdict(p, "job", KWD_OP_DECRYPT, "b", x3, 1, true,
	    "allowed by rules[2].grants[0]");
	/* Context near-miss: the first such grant in file order is named. */
	verdict(p, "job", KWD_OP_DECRYPT, "b", x9, 1, false,
	    "rules[1].grants[1] requires context x=2 (got x=9)");
	verdict(p, "job", KWD_OP_DECRYPT, "b", x2, 1, false,
	    "rules[1].grants[1] requires context key \"y\" (missing)");
	verdict(p, "job", KWD_OP_DECRYPT, "b", NULL, 0, false,
	    "rules[1].grants[1] requires context key \"x\" (missing)");
	verdict(p, "job", KWD_OP_DECRYPT, "a-1", x9, 1, false,
	    "rules[1].grants[0] requires context x=1-* (got x=9)");
	/* Only rules[2] reaches the context for this identity. */
	verdict(p, "bob", KWD_OP_DECRYPT, "b", x9, 1, false,
	    "rules[2].grants[0] requires context x=3 (got x=9)");
	verdict(p, "bob", KWD_OP_DECRYPT, "b", x3, 1, true,
	    "allowed by rules[2].grants[0]");
	/* Resource near-miss. */
	verdict(p, "job", KWD_OP_DECRYPT, "z", x1, 1, false,
	    "no grant for decrypt on \"z\"");
	verdict(p, "job", KWD_OP_DATAKEY, "a-1", x1, 1, false,
	    "no grant for datakey on \"a-1\"");
	verdict(p, "job", KWD_OP_DATAKEY, NULL, NULL, 0, false,
	    "no grant for datakey on \"\"");
	/* Operation not granted by any applying rule. */
	verdict(p, "job", KWD_OP_TOKEN, "a-1", x1, 1, false,
	    "no grant for token");
	verdict(p, "bob", KWD_OP_REWRAP, "b", x2y, 2, false,
	    "no grant for rewrap");
	/* No rule. */
	verdict(p, "alice", KWD_OP_DECRYPT, "b", x2y, 2, false,
	    "no rule for identity");
	/* "other" may decrypt anything; the "*" resource covers "". */
	verdict(p, "other", KWD_OP_DECRYPT, NULL, NULL, 0, true,
	    "allowed by rules[0].grants[0]");
	/* Inputs the caller should never pass. */
	verdict(NULL, "job", KWD_OP_DECRYPT, "b", x2, 1, false,
	    "no policy loaded");
	verdict(p, NULL, KWD_OP_DECRYPT, "b", x2, 1, false, "no identity");
	verdict(p, "job", KWD_OP__COUNT, "b", x2, 1, false,
	    "unknown operation");
	verdict(p, "job", (enum kwd_policy_op) - 1, "b", x2, 1, false,
	    "unknown operation");
	kwd_policy_free(p);
}

static void
test_policy_reason_defanged(void **state)
{
	struct kwd_policy *p = parse_ok(POLICY(
	    "{\"identity\":\"*\",\"grants\":[{\"operations\":[\"decrypt\"],"
	    "\"resources\":[\"k\"],\"context\":{\"d\":\"caf\\u00e9-"
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xxxxxxxxxx*\"}}]}"));
	char v[1024], res[300], want[512];
	struct kwd_ctx_pair c[1] = {{"d", v}};

	(void)state;
	memset(v, 'v', sizeof v - 1);
	v[sizeof v - 1] = '\0';
	memcpy(v, "\x1b[2J\n", 5);
	/* Pattern and value: at most 64 bytes each, then "...". */
	snprintf(want, sizeof want,
	    "rules[0].grants[0] requires context d=caf?\?-%.58s... "
	    "(got d=?[2J?%.59s...)",
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	    v + 5);
	verdict(p, "x", KWD_OP_DECRYPT, "k", c, 1, false, want);
	assert_true(strlen(want) < 64 * 2 + 80);
	memset(res, 'r', sizeof res - 1);
	res[sizeof res - 1] = '\0';
	res[3] = '\n';
	res[4] = (char)0xff;
	snprintf(want, sizeof want, "no grant for decrypt on \"rrr??%.59s...\"",
	    res + 5);
	verdict(p, "x", KWD_OP_DECRYPT, res, c, 1, false, want);
	/* Exactly 64 bytes are shown whole. */
	res[64] = '\0';
	snprintf(want, sizeof want, "no grant for decrypt on \"rrr??%s\"",
	    res + 5);
	verdict(p, "x", KWD_OP_DECRYPT, res, c, 1, false, want);
	/* A missing key names the policy's key, nothing from the request. */
	verdict(p, "x", KWD_OP_DECRYPT, "k", NULL, 0, false,
	    "rules[0].grants[0] requires context key \"d\" (missing)");
	/* The identity is never echoed. */
	verdict(p, "x\nforged=1", KWD_OP_DATAKEY, "k", c, 1, false,
	    "no grant for datakey");
	kwd_policy_free(p);
}

static void
test_policy_reason_buffer(void **state)
{
	struct kwd_policy *p = parse_ok(POLICY(RULE_OK));
	char small[10];

	(void)state;
	memset(small, 'x', sizeof small);
	assert_true(kwd_policy_check(p, "a", KWD_OP_DECRYPT, "k", NULL, 0,
	    small, sizeof small));
	assert_string_equal(small, "allowed b");
	memset(small, 'x', sizeof small);
	assert_false(kwd_policy_check(p, "b", KWD_OP_DECRYPT, "k", NULL, 0,
	    small, sizeof small));
	assert_string_equal(small, "no rule f");
	/* No buffer: the answer still comes. */
	assert_true(
	    kwd_policy_check(p, "a", KWD_OP_DECRYPT, "k", NULL, 0, NULL, 0));
	assert_false(
	    kwd_policy_check(p, "a", KWD_OP_DATAKEY, "k", NULL, 0, NULL, 0));
	memset(small, 'x', sizeof small);
	assert_true(
	    kwd_policy_check(p, "a", KWD_OP_DECRYPT, "k", NULL, 0, small, 0));
	assert_int_equal(small[0], 'x');
	kwd_policy_free(p);
}

static void
test_policy_request_ctx_odd(void **state)
{
	struct kwd_policy *p = parse_ok(POLICY(
	    "{\"identity\":\"*\",\"grants\":[{\"operations\":[\"decrypt\"],"
	    "\"resources\":[\"k\"],\"context\":{\"d\":\"imagenet-*\"}}]}"));
	const struct kwd_ctx_pair dup_ok[] = {{"d", "imagenet-1"},
	    {"d", "imagenet-2"}};
	const struct kwd_ctx_pair dup_bad[] = {{"d", "imagenet-1"},
	    {"d", "laion"}};
	const struct kwd_ctx_pair dup_bad2[] = {{"d", "laion"},
	    {"d", "imagenet-1"}};
	const struct kwd_ctx_pair nulls[] = {{NULL, "imagenet-1"}, {"e", NULL},
	    {NULL, NULL}};
	const struct kwd_ctx_pair null_val[] = {{"d", NULL}};
	const struct kwd_ctx_pair with_nulls[] = {{NULL, NULL},
	    {"d", "imagenet-1"}, {"e", NULL}};

	(void)state;
	/* A duplicate key cannot vouch for the other value. */
	verdict(p, "x", KWD_OP_DECRYPT, "k", dup_ok, 2, true, NULL);
	verdict(p, "x", KWD_OP_DECRYPT, "k", dup_bad, 2, false,
	    "rules[0].grants[0] requires context d=imagenet-* (got d=laion)");
	verdict(p, "x", KWD_OP_DECRYPT, "k", dup_bad2, 2, false,
	    "rules[0].grants[0] requires context d=imagenet-* (got d=laion)");
	/* NULL members and a NULL array: no crash, no access. */
	verdict(p, "x", KWD_OP_DECRYPT, "k", nulls, 3, false,
	    "rules[0].grants[0] requires context key \"d\" (missing)");
	verdict(p, "x", KWD_OP_DECRYPT, "k", null_val, 1, false,
	    "rules[0].grants[0] requires context d=imagenet-* (got d=)");
	verdict(p, "x", KWD_OP_DECRYPT, "k", with_nulls, 3, true, NULL);
	verdict(p, "x", KWD_OP_DECRYPT, "k", NULL, 5, false, NULL);
	/* An empty identity does not ride on "*". */
	verdict(p, "", KWD_OP_DECRYPT, "k", dup_ok, 2, false, "no identity");
	kwd_policy_free(p);
}

static void
test_policy_token_grants(void **state)
{
	struct kwd_policy *p = parse_ok(POLICY(
	    "{\"identity\":\"t1\",\"grants\":[{\"operations\":[\"token\"]}]},"
	    "{\"identity\":\"t2\",\"grants\":[{\"operations\":[\"token\","
	    "\"datakey\"],\"resources\":[\"m-*\"]}]},"
	    "{\"identity\":\"t3\",\"grants\":[{\"operations\":[\"token\"],"
	    "\"context\":{\"aud\":\"gw\"}}]}"));
	const struct kwd_ctx_pair gw[] = {{"aud", "gw"}};

	(void)state;
	/* Without resources: any resource, or none. */
	verdict(p, "t1", KWD_OP_TOKEN, NULL, NULL, 0, true,
	    "allowed by rules[0].grants[0]");
	verdict(p, "t1", KWD_OP_TOKEN, "anything", NULL, 0, true, NULL);
	verdict(p, "t1", KWD_OP_DATAKEY, "anything", NULL, 0, false,
	    "no grant for datakey");
	/* With resources, token is held to them like any operation. */
	verdict(p, "t2", KWD_OP_TOKEN, "m-1", NULL, 0, true, NULL);
	verdict(p, "t2", KWD_OP_TOKEN, "n-1", NULL, 0, false,
	    "no grant for token on \"n-1\"");
	verdict(p, "t2", KWD_OP_TOKEN, NULL, NULL, 0, false,
	    "no grant for token on \"\"");
	verdict(p, "t3", KWD_OP_TOKEN, NULL, gw, 1, true, NULL);
	verdict(p, "t3", KWD_OP_TOKEN, NULL, NULL, 0, false,
	    "rules[2].grants[0] requires context key \"aud\" (missing)");
	kwd_policy_free(p);
}

static char tmpdir[4096];

static void
write_file(const char *path, const char *text, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void
test_policy_load(void **state)
{
	struct kwd_policy *p = NULL;
	char path[4200], err[256];
	const char *good = POLICY(RULE_OK);
	char *big;

	(void)state;
	snprintf(tmpdir, sizeof tmpdir, "%s/test_policy.XXXXXX",
	    getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	assert_non_null(mkdtemp(tmpdir));
	snprintf(path, sizeof path, "%s/policy.json", tmpdir);
	write_file(path, good, strlen(good), 0640);
	assert_int_equal(kwd_policy_load(path, &p, err, sizeof err), KW_OK);
	assert_true(
	    kwd_policy_check(p, "a", KWD_OP_DECRYPT, "k", NULL, 0, NULL, 0));
	kwd_policy_free(p);
	p = NULL;
	/* Group-writable is the operator's choice; world-writable is not. */
	assert_int_equal(chmod(path, 0666), 0);
	assert_int_equal(kwd_policy_load(path, &p, err, sizeof err),
	    KW_ERR_PERM);
	assert_non_null(strstr(err, "writable by everyone"));
	assert_null(p);
	/* Contents are checked as by kwd_policy_parse. */
	write_file(path, "{\"version\":2}", 13, 0600);
	assert_int_equal(kwd_policy_load(path, &p, err, sizeof err),
	    KW_ERR_CONFIG);
	assert_non_null(strstr(err, "rules: required"));
	big = malloc(KWD_POLICY_MAX_BYTES + 10);
	assert_non_null(big);
	memset(big, ' ', KWD_POLICY_MAX_BYTES + 10);
	memcpy(big, good, strlen(good));
	write_file(path, big, KWD_POLICY_MAX_BYTES, 0600);
	assert_int_equal(kwd_policy_load(path, &p, err, sizeof err), KW_OK);
	kwd_policy_free(p);
	p = NULL;
	write_file(path, big, KWD_POLICY_MAX_BYTES + 10, 0600);
	assert_int_equal(kwd_policy_load(path, &p, err, sizeof err),
	    KW_ERR_CONFIG);
	assert_non_null(strstr(err, "larger than 1048576 bytes"));
	free(big);
	unlink(path);
	assert_int_equal(kwd_policy_load(path, &p, err, sizeof err), KW_ERR_IO);
	assert_non_null(strstr(err, "No such file"));
	/* A directory, and a FIFO that nobody writes to: refused, not
	 * waited on. */
	assert_int_equal(kwd_policy_load(tmpdir, &p, err, sizeof err),
	    KW_ERR_CONFIG);
	assert_non_null(strstr(err, "not a regular file"));
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(kwd_policy_load(path, &p, err, sizeof err),
	    KW_ERR_CONFIG);
	assert_non_null(strstr(err, "not a regular file"));
	assert_null(p);
	unlink(path);
	rmdir(tmpdir);
}

/* 1000 rules; rule i's identity is prefix, then i if numbered. */
static struct kwd_policy *
perf_policy(const char *prefix, bool numbered)
{
	size_t cap = 1000 * 300 + 64, n;
	char *buf = malloc(cap), id[128];
	struct kwd_policy *p;

	assert_non_null(buf);
	n = (size_t)sprintf(buf, "{\"version\":1,\"rules\":[");
	for (int i = 0; i < 1000; i++) {
		if (numbered)
			snprintf(id, sizeof id, "%s%04d", prefix, i);
		else
			snprintf(id, sizeof id, "%s", prefix);
		n += (size_t)sprintf(buf + n,
		    "%s{\"identity\":\"%s\",\"grants\":[{\"operations\":"
		    "[\"admin.*\"],\"resources\":[\"*\"]},{\"operations\":"
		    "[\"datakey\",\"decrypt\"],\"resources\":[\"ds-%04d\","
		    "\"weights-*\"],\"context\":{\"dataset\":\"set-%04d-*\"}}]"
		    "}",
		    i ? "," : "", id, i, i);
	}
	memcpy(buf + n, "]}", 3);
	p = parse_ok_len(buf, n + 2);
	free(buf);
	return p;
}

/* Prints the mean and the best of 40 batches: on a shared machine the
 * best batch is the one the neighbours did not disturb. */
static void
perf_run(const struct kwd_policy *p, const char *what, const char *id,
    bool allowed, const char *reason)
{
	const int batches = 40, reps = 500;
	const struct kwd_ctx_pair c[2] = {{"purpose", "train"},
	    {"dataset", "set-0999-a"}};
	double best = 1e9, total = 0;
	int n = 0;

	verdict(p, id, KWD_OP_DECRYPT, "ds-0999", c, 2, allowed, reason);
	for (int b = 0; b < batches; b++) {
		double t0 = now_sec(), t;

		for (int i = 0; i < reps; i++)
			n += kwd_policy_check(p, id, KWD_OP_DECRYPT, "ds-0999",
			    c, 2, NULL, 0);
		t = now_sec() - t0;
		total += t;
		if (t < best)
			best = t;
	}
	assert_int_equal(n, allowed ? batches * reps : 0);
	print_message("policy: 1000 rules, %s: %.2f us per check (best "
	              "batch %.2f us)\n",
	    what, total * 1e6 / (batches * reps), best * 1e6 / reps);
}

/* Timings are printed, not asserted: they depend on the machine. */
static void
test_policy_perf_1000_rules(void **state)
{
	struct kwd_policy *p;

	(void)state;
	p = perf_policy("spiffe://keyward.dev/job/job-", true);
	perf_run(p, "exact identities, the last applies",
	    "spiffe://keyward.dev/job/job-0999", true,
	    "allowed by rules[999].grants[1]");
	perf_run(p, "exact identities, none applies",
	    "spiffe://keyward.dev/job/job-x", false, "no rule for identity");
	kwd_policy_free(p);
	/* A star to retry after a long shared prefix, in every rule. */
	p = perf_policy("spiffe://keyward.dev/*/job-", true);
	perf_run(p, "starred identities, the last applies",
	    "spiffe://keyward.dev/ns/job-0999", true,
	    "allowed by rules[999].grants[1]");
	perf_run(p, "starred identities, none applies",
	    "spiffe://keyward.dev/ns/job-x", false, "no rule for identity");
	kwd_policy_free(p);
	/* Every rule applies: every grant's resources are tried. */
	p = perf_policy("spiffe://keyward.dev/*", false);
	perf_run(p, "all rules apply, the last grants",
	    "spiffe://keyward.dev/ns/job-0999", true,
	    "allowed by rules[999].grants[1]");
	kwd_policy_free(p);
}

/* Token grants: scopes by glob, lifetime by max_ttl (default 3600). */
static void
test_policy_token_caps(void **state)
{
	static const char pol[] =
	    "{\"version\":1,\"rules\":["
	    "{\"identity\":\"spiffe://x/app/*\",\"grants\":["
	    "{\"operations\":[\"token\"],\"scopes\":[\"model:*:infer\","
	    "\"kw:decrypt:datasets\"],\"max_ttl\":600}]},"
	    "{\"identity\":\"spiffe://x/job\",\"grants\":["
	    "{\"operations\":[\"token\"],\"scopes\":[\"a\"]}]}]}";
	const char *ok[] = {"model:llama:infer", "kw:decrypt:datasets"};
	const char *bad[] = {"model:llama:infer", "model:llama:train"};
	const char *one[] = {"a"};
	struct kwd_policy *p = NULL;
	char reason[256], err[256];
	uint32_t ttl = 0;

	(void)state;
	assert_int_equal(kwd_policy_parse(pol, sizeof pol - 1, &p, err,
	                     sizeof err),
	    KW_OK);
	assert_true(kwd_policy_token(p, "spiffe://x/app/gw", ok, 2, 0, &ttl,
	    reason, sizeof reason));
	assert_int_equal(ttl, 600);
	assert_string_equal(reason, "allowed by rules[0].grants[0]");
	assert_true(kwd_policy_token(p, "spiffe://x/app/gw", ok, 1, 60, &ttl,
	    reason, sizeof reason));
	assert_int_equal(ttl, 60);
	ttl = 7;
	assert_false(kwd_policy_token(p, "spiffe://x/app/gw", ok, 2, 601, &ttl,
	    reason, sizeof reason));
	assert_int_equal(ttl, 7);
	assert_non_null(strstr(reason, "max_ttl"));
	assert_false(kwd_policy_token(p, "spiffe://x/app/gw", bad, 2, 0, &ttl,
	    reason, sizeof reason));
	assert_non_null(strstr(reason, "model:llama:train"));
	assert_false(kwd_policy_token(p, "spiffe://x/other", one, 1, 0, &ttl,
	    reason, sizeof reason));
	assert_string_equal(reason, "no token grant for this identity");
	/* No max_ttl: the default. */
	assert_true(kwd_policy_token(p, "spiffe://x/job", one, 1, 0, &ttl,
	    reason, sizeof reason));
	assert_int_equal(ttl, KWD_POLICY_TOKEN_TTL);
	assert_false(kwd_policy_token(p, "spiffe://x/job", one, 1,
	    KWD_POLICY_TOKEN_TTL + 1, &ttl, reason, sizeof reason));
	assert_false(
	    kwd_policy_token(p, "", one, 1, 0, &ttl, reason, sizeof reason));
	assert_false(kwd_policy_token(p, "spiffe://x/job", one, 0, 0, &ttl,
	    reason, sizeof reason));
	kwd_policy_free(p);
}

int
main(void)
{
	const struct CMUnitTest dev[] = {
	    cmocka_unit_test(test_policy_dev_setup_parses),
	    cmocka_unit_test(test_policy_dev_setup_train_job),
	    cmocka_unit_test(test_policy_dev_setup_operator),
	    cmocka_unit_test(test_policy_dev_setup_app),
	    cmocka_unit_test(test_policy_dev_setup_unknown_identity),
	};
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_policy_glob_edges),
	    cmocka_unit_test(test_policy_glob_many_stars),
	    cmocka_unit_test(test_policy_glob_reference),
	    cmocka_unit_test(test_policy_token_caps),
	    cmocka_unit_test(test_policy_op_names),
	    cmocka_unit_test(test_policy_accepts),
	    cmocka_unit_test(test_policy_refuses_top),
	    cmocka_unit_test(test_policy_refuses_rule),
	    cmocka_unit_test(test_policy_refuses_grant),
	    cmocka_unit_test(test_policy_refuses_operations),
	    cmocka_unit_test(test_policy_refuses_resources),
	    cmocka_unit_test(test_policy_refuses_context),
	    cmocka_unit_test(test_policy_refuses_scopes_ttl),
	    cmocka_unit_test(test_policy_refuses_counts),
	    cmocka_unit_test(test_policy_refuses_too_large),
	    cmocka_unit_test(test_policy_refuses_deep_nesting),
	    cmocka_unit_test(test_policy_refuses_nul),
	    cmocka_unit_test(test_policy_refuses_invalid_utf8),
	    cmocka_unit_test(test_policy_refuses_duplicates),
	    cmocka_unit_test(test_policy_error_messages),
	    cmocka_unit_test(test_policy_error_buffer),
	    cmocka_unit_test(test_policy_reasons),
	    cmocka_unit_test(test_policy_reason_defanged),
	    cmocka_unit_test(test_policy_reason_buffer),
	    cmocka_unit_test(test_policy_request_ctx_odd),
	    cmocka_unit_test(test_policy_token_grants),
	    cmocka_unit_test(test_policy_load),
	    cmocka_unit_test(test_policy_perf_1000_rules),
	};
	int failed;

	failed = cmocka_run_group_tests_name("policy (dev-setup)", dev,
	    setup_dev_policy, teardown_dev_policy);
	failed += cmocka_run_group_tests_name("policy", tests, NULL, NULL);
	return failed;
}

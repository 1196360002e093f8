/*
 * fuzz_policy.c: libFuzzer target for kwd_policy_parse() and, on what it
 * accepts, kwd_policy_check().
 *
 * Every input is parsed with an error buffer and the result is freed, so
 * ASan/LSan see the whole life cycle. A refusal must explain itself in one
 * printable line. An accepted policy is then asked a fixed set of
 * questions (identities, every operation, resources, contexts, including
 * odd ones: NULL resource, duplicate and NULL context members); every
 * answer's reason must be one non-empty printable line, and say "allowed"
 * exactly when access is allowed. A violation aborts, which the fuzzer
 * reports as a crash.
 *
 * Built with -fsanitize=fuzzer (KW_FUZZ=ON) or with tests/fuzz/replay.c
 * (any compiler) to replay the corpus.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

/* The longest reason: a context near-miss with two values cut at 64
 * bytes, and a rule and grant index. */
#define REASON_LIMIT 256

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const identities[] = {
    "spiffe://keyward.dev/job/train-llama",
    "alice.operators.keyward.dev",
    "spiffe://keyward.dev/app/inference-gw",
    "a",
    "*",
    "x\n\x1b[31m\xff",
    "",
    NULL,
};

static const char *const resources[] = {
    "datasets",
    "k",
    "weights-70b",
    "",
    NULL,
};

static const struct kwd_ctx_pair ctx_imagenet[] = {{"dataset", "imagenet-2026"},
    {"purpose", "train"}};
static const struct kwd_ctx_pair ctx_odd[] = {{"dataset",
                                                  "laion\n\x7f\xc2\x9b"
                                                  "xxxxxxxxxxxxxxxx"
                                                  "xxxxxxxxxxxxxxxx"
                                                  "xxxxxxxxxxxxxxxx"
                                                  "xxxxxxxxxxxxxxxx"},
    {"dataset", "imagenet-1"}, {NULL, "x"}, {"a", NULL}};

static const struct {
	const struct kwd_ctx_pair *ctx;
	size_t n;
} contexts[] = {
    {NULL, 0},
    {ctx_imagenet, 2},
    {ctx_odd, 4},
};

static void
check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_policy: invariant violated: %s\n", what);
		abort();
	}
}

static bool
one_line(const char *s, size_t cap)
{
	const char *end = memchr(s, '\0', cap);

	if (end == NULL || end == s)
		return false;
	for (const char *c = s; c < end; c++)
		if (*c < 0x20 || *c >= 0x7f)
			return false;
	return true;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static void
ask(const struct kwd_policy *p)
{
	char reason[REASON_LIMIT + 64];

	for (size_t i = 0; i < sizeof identities / sizeof identities[0]; i++)
		for (int op = 0; op <= KWD_OP__COUNT; op++)
			for (size_t r = 0;
			     r < sizeof resources / sizeof resources[0]; r++)
				for (size_t c = 0;
				     c < sizeof contexts / sizeof contexts[0];
				     c++) {
					bool ok;

					memset(reason, 'x', sizeof reason);
					ok = kwd_policy_check(p, identities[i],
					    op, resources[r], contexts[c].ctx,
					    contexts[c].n, reason,
					    sizeof reason);
					check(one_line(reason, sizeof reason),
					    "reason is one printable line");
					check(strlen(reason) < REASON_LIMIT,
					    "reason is bounded");
					check(ok ==
					        (strncmp(reason,
					             "allowed by "
					             "rules[",
					             17) == 0),
					    "allowed iff the reason says so");
					check(!ok ||
					        (op < KWD_OP__COUNT &&
					            identities[i] != NULL &&
					            identities[i][0] != '\0'),
					    "no access for odd requests");
				}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kwd_policy *p = NULL;
	char err[256];
	int rv;

	memset(err, 0, sizeof err);
	rv = kwd_policy_parse((const char *)data, size, &p, err, sizeof err);
	if (rv == KW_OK) {
		check(p != NULL, "KW_OK returns a policy");
		ask(p);
	} else {
		check(p == NULL, "a failure returns no policy");
		check(rv == KW_ERR_CONFIG || rv == KW_ERR_NOMEM,
		    "failure is KW_ERR_CONFIG or KW_ERR_NOMEM");
		if (rv == KW_ERR_CONFIG)
			check(one_line(err, sizeof err),
			    "KW_ERR_CONFIG explains itself in one line");
	}
	kwd_policy_free(p);
	return 0;
}

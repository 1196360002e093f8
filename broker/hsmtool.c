/*
 * keyward-hsm: inspect and prepare the HSM token without the daemon.
 *
 *   keyward-hsm -c CONFIG info
 *   keyward-hsm -c CONFIG init-token --so-pin-file FILE
 *   keyward-hsm -c CONFIG kek create NAME | kek list [PREFIX]
 *   keyward-hsm -c CONFIG signer create NAME | signer list [PREFIX]
 *   keyward-hsm -c CONFIG selftest KEK [KEY=VALUE...]
 *
 * Exit status: 0 success, 1 failure, 2 usage error, 3 already exists.
 * PINs come from files or the environment named in the configuration,
 * never from the command line.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <getopt.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "name.h"
#include "p11.h"
#include "secret.h"

#define EXIT_USAGE 2
#define EXIT_EXISTS 3

static const char usage_text[] =
    "usage: keyward-hsm -c CONFIG COMMAND [ARGS]\n"
    "\n"
    "Inspect and prepare keyward's HSM token directly (no daemon).\n"
    "\n"
    "commands:\n"
    "  info                          show the selected token and its keys\n"
    "  init-token --so-pin-file FILE initialize a free token with the\n"
    "                                label of pkcs11.token and the user PIN\n"
    "                                of pkcs11.pin_file / pin_env\n"
    "  kek create NAME               generate the next version of KEK NAME\n"
    "  kek list [PREFIX]             list KEK versions\n"
    "  signer create NAME            generate the next EC P-256 signer "
    "version\n"
    "  signer list [PREFIX]          list signer versions\n"
    "  selftest KEK [KEY=VALUE...]   wrap a fresh data key under the newest\n"
    "                                version of KEK for an encryption\n"
    "                                context, unwrap it, and check that\n"
    "                                another context is refused\n"
    "\n"
    "options:\n"
    "  -c, --config FILE   keywardd configuration (required)\n"
    "  -v, --verbose       log debug detail to stderr\n"
    "  -h, --help          this text\n"
    "\n"
    "exit status: 0 success, 1 failure, 2 usage error, 3 already exists\n";

static int
usage(FILE *f, int status)
{
	fputs(usage_text, f);
	return status;
}

static int
die(int rv, const char *what)
{
	fprintf(stderr, "keyward-hsm: %s: %s\n", what, kw_strerror(rv));
	return rv == KW_ERR_EXISTS ? EXIT_EXISTS : EXIT_FAILURE;
}

struct ctx {
	struct kwd_config *cfg;
	struct kwd_p11 *p11;
	struct kwd_p11_worker *w;
};

static int
ctx_open(struct ctx *c)
{
	int rv;

	rv = kwd_p11_open(&c->cfg->p11, &c->p11);
	if (rv != KW_OK)
		return rv;
	return kwd_p11_worker_new(c->p11, &c->w);
}

static int
next_version(struct ctx *c, enum kwd_p11_class cls, const char *name,
    uint32_t *ret_version)
{
	struct kwd_p11_object *objs = NULL;
	size_t n = 0;
	uint32_t v = 0;
	int rv;

	rv = kwd_p11_list(c->w, cls, name, &objs, &n);
	if (rv != KW_OK)
		return rv;
	for (size_t i = 0; i < n; i++)
		if (strcmp(objs[i].name, name) == 0 && objs[i].version > v)
			v = objs[i].version;
	free(objs);
	*ret_version = v + 1;
	return KW_OK;
}

static int
cmd_list(struct ctx *c, enum kwd_p11_class cls, const char *prefix)
{
	struct kwd_p11_object *objs = NULL;
	size_t n = 0;
	int rv;

	rv = kwd_p11_list(c->w, cls, prefix, &objs, &n);
	if (rv != KW_OK)
		return die(rv, "list");
	printf("%-40s %8s  %s\n", "NAME", "VERSION", "CKA_ID");
	for (size_t i = 0; i < n; i++) {
		printf("%-40s %8u  ", objs[i].name, objs[i].version);
		for (size_t j = 0; j < objs[i].id_len; j++)
			printf("%02x", objs[i].id[j]);
		printf("\n");
	}
	free(objs);
	return EXIT_SUCCESS;
}

static int
cmd_create(struct ctx *c, enum kwd_p11_class cls, const char *name)
{
	uint32_t v;
	int rv;

	if (!kw_name_valid(name)) {
		fprintf(stderr,
		    "keyward-hsm: invalid key name '%s': use 1-63 "
		    "of [a-z0-9._-], starting with a letter or "
		    "digit\n",
		    name);
		return EXIT_USAGE;
	}
	rv = next_version(c, cls, name, &v);
	if (rv != KW_OK)
		return die(rv, "list");
	rv = cls == KWD_P11_KEK
	    ? kwd_p11_kek_generate(c->w, name, v, NULL, NULL)
	    : kwd_p11_ec_generate(c->w, name, v, NULL, NULL);
	if (rv != KW_OK)
		return die(rv, "generate");
	printf("created %s %s version %u\n",
	    cls == KWD_P11_KEK ? "KEK" : "signer", name, v);
	return EXIT_SUCCESS;
}

static int
cmd_info(struct ctx *c)
{
	struct kwd_p11_token_info ti;
	struct kwd_p11_object *objs = NULL;
	size_t nk = 0, ns = 0;
	int rv;

	kwd_p11_token(c->p11, &ti);
	printf("token        %s\nmanufacturer %s\nmodel        %s\n"
	       "serial       %s\nslot         %lu\n",
	    ti.label, ti.manufacturer, ti.model, ti.serial, ti.slot);
	rv = kwd_p11_list(c->w, KWD_P11_KEK, "", &objs, &nk);
	if (rv != KW_OK)
		return die(rv, "list");
	free(objs);
	rv = kwd_p11_list(c->w, KWD_P11_SIGNER, "", &objs, &ns);
	if (rv != KW_OK)
		return die(rv, "list");
	free(objs);
	printf("KEK versions %zu\nsigner versions %zu\nlogin        ok\n", nk,
	    ns);
	return EXIT_SUCCESS;
}

/*
 * The encryption context as AAD: a flat JSON object serialized with sorted
 * keys and no whitespace, so that the same context always gives the same
 * bytes.
 */
static int
context_aad(char **kv, int n, char **ret_aad)
{
	json_t *o = json_object();
	char *s = NULL;

	if (o == NULL)
		return KW_ERR_NOMEM;
	for (int i = 0; i < n; i++) {
		char *eq = strchr(kv[i], '=');

		if (eq == NULL || eq == kv[i]) {
			json_decref(o);
			return KW_ERR_INVALID;
		}
		*eq = '\0';
		json_object_set_new(o, kv[i], json_string(eq + 1));
		*eq = '=';
	}
	s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	if (s == NULL)
		return KW_ERR_INVALID;
	*ret_aad = s;
	return KW_OK;
}

static void
print_hex(const char *label, const unsigned char *b, size_t n)
{
	printf("%s", label);
	for (size_t i = 0; i < n; i++)
		printf("%02x", b[i]);
	printf("\n");
}

static int
cmd_selftest(struct ctx *c, const char *kek, char **kv, int n)
{
	struct kw_secret *dek = NULL, *back = NULL;
	unsigned char nonce[KWD_P11_NONCE_LEN], wrapped[64], fp[32];
	char *aad = NULL, *other = NULL;
	size_t wlen = 0;
	uint32_t v;
	int rv, status = EXIT_FAILURE;

	rv = next_version(c, KWD_P11_KEK, kek, &v);
	if (rv != KW_OK)
		return die(rv, "list");
	if (--v == 0) {
		fprintf(stderr,
		    "keyward-hsm: no KEK named '%s': create one "
		    "with `keyward-hsm -c CONFIG kek create %s`\n",
		    kek, kek);
		return EXIT_FAILURE;
	}
	if (context_aad(kv, n, &aad) != KW_OK) {
		fprintf(stderr,
		    "keyward-hsm: context must be KEY=VALUE "
		    "pairs\n");
		return EXIT_USAGE;
	}
	printf("KEK          %s version %u (sensitive, not extractable)\n", kek,
	    v);
	printf("context      %s\n", aad);
	rv = kw_secret_new(32, &dek);
	if (rv == KW_OK)
		rv = kwd_p11_random(c->w, kw_secret_data(dek), 32);
	if (rv != KW_OK) {
		status = die(rv, "generate data key");
		goto out;
	}
	/* A fingerprint shows the two keys match without showing either. */
	EVP_Digest(kw_secret_data(dek), 32, fp, NULL, EVP_sha256(), NULL);
	print_hex("data key     256 bits from the HSM RNG, SHA-256 ", fp, 8);
	rv = kwd_p11_gcm_seal(c->w, kek, v, (unsigned char *)aad, strlen(aad),
	    kw_secret_data(dek), 32, nonce, wrapped, sizeof wrapped, &wlen);
	if (rv != KW_OK) {
		status = die(rv, "wrap");
		goto out;
	}
	print_hex("nonce        ", nonce, sizeof nonce);
	print_hex("wrapped      ", wrapped, wlen);
	rv = kwd_p11_gcm_open(c->w, kek, v, (unsigned char *)aad, strlen(aad),
	    nonce, wrapped, wlen, &back);
	if (rv != KW_OK) {
		status = die(rv, "unwrap");
		goto out;
	}
	if (!kw_secret_equal(dek, back)) {
		fprintf(stderr, "keyward-hsm: unwrapped key differs\n");
		goto out;
	}
	EVP_Digest(kw_secret_data(back), 32, fp, NULL, EVP_sha256(), NULL);
	print_hex("unwrapped    matches, SHA-256 ", fp, 8);
	kw_secret_free(back);
	back = NULL;
	other = malloc(strlen(aad) + 32);
	if (other == NULL)
		goto out;
	sprintf(other, "{\"selftest\":\"other\",%s", aad + 1);
	if (strcmp(aad, "{}") == 0)
		strcpy(other, "{\"selftest\":\"other\"}");
	rv = kwd_p11_gcm_open(c->w, kek, v, (unsigned char *)other,
	    strlen(other), nonce, wrapped, wlen, &back);
	if (rv != KW_ERR_AUTH) {
		fprintf(stderr,
		    "keyward-hsm: unwrap with another context "
		    "gave %s, expected KW_ERR_AUTH\n",
		    kw_error_name(rv));
		goto out;
	}
	printf("other context %s -> refused (%s)\n", other, kw_error_name(rv));
	printf("selftest     ok\n");
	status = EXIT_SUCCESS;
out:
	kw_secret_free(dek);
	kw_secret_free(back);
	free(aad);
	free(other);
	return status;
}

static int
cmd_init_token(struct kwd_config *cfg, const char *so_pin_file)
{
	struct kw_secret *so = NULL, *user = NULL;
	int rv;

	rv = kw_secret_read_file(so_pin_file, KWD_P11_PIN_MAX, &so);
	if (rv != KW_OK)
		return die(rv, so_pin_file);
	if (cfg->p11.pin_file != NULL)
		rv = kw_secret_read_file(cfg->p11.pin_file, KWD_P11_PIN_MAX,
		    &user);
	else
		rv = kw_secret_take_env(cfg->p11.pin_env, KWD_P11_PIN_MAX,
		    &user);
	if (rv != KW_OK) {
		kw_secret_free(so);
		return die(rv, "user PIN");
	}
	rv = kwd_p11_token_init(cfg->p11.module, cfg->p11.token, so, user);
	kw_secret_free(so);
	kw_secret_free(user);
	if (rv == KW_ERR_EXISTS) {
		fprintf(stderr,
		    "keyward-hsm: a token labelled as in "
		    "pkcs11.token exists already\n");
		return EXIT_EXISTS;
	}
	if (rv != KW_OK)
		return die(rv, "init-token");
	printf("initialized token %s\n", cfg->p11.token);
	return EXIT_SUCCESS;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"so-pin-file", required_argument, NULL, 's'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *config = NULL, *so_pin_file = NULL, *cmd;
	struct ctx c = {NULL, NULL, NULL};
	char err[512];
	int opt, rv, status;

	kw_log_set_level(KW_LOG_WARN);
	while ((opt = getopt_long(argc, argv, "+c:vh", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config = optarg;
			break;
		case 's':
			so_pin_file = optarg;
			break;
		case 'v':
			kw_log_set_level(KW_LOG_DEBUG);
			break;
		case 'h':
			return usage(stdout, EXIT_SUCCESS);
		default:
			return usage(stderr, EXIT_USAGE);
		}
	}
	if (config == NULL || optind >= argc)
		return usage(stderr, EXIT_USAGE);
	cmd = argv[optind++];
	/* Options may also follow the command (init-token --so-pin-file). */
	while ((opt = getopt_long(argc, argv, "+vh", opts, NULL)) != -1) {
		if (opt == 's')
			so_pin_file = optarg;
		else if (opt == 'v')
			kw_log_set_level(KW_LOG_DEBUG);
		else if (opt == 'h')
			return usage(stdout, EXIT_SUCCESS);
		else
			return usage(stderr, EXIT_USAGE);
	}
	if (kw_process_harden() != KW_OK)
		return die(KW_ERR_INTERNAL, "process hardening");
	rv = kw_secure_init(0);
	if (rv != KW_OK)
		return die(rv, "secure memory");
	rv = kwd_config_load(config, &c.cfg, err, sizeof err);
	if (rv != KW_OK) {
		fprintf(stderr, "keyward-hsm: %s: %s\n", config,
		    rv == KW_ERR_CONFIG ? err : kw_strerror(rv));
		return EXIT_FAILURE;
	}
	rv = kwd_config_apply_env(c.cfg);
	if (rv != KW_OK) {
		status = die(rv, "pkcs11.env");
		goto out;
	}
	if (strcmp(cmd, "init-token") == 0) {
		if (so_pin_file == NULL || optind != argc) {
			status = usage(stderr, EXIT_USAGE);
			goto out;
		}
		status = cmd_init_token(c.cfg, so_pin_file);
		goto out;
	}
	if (strcmp(cmd, "info") != 0 && strcmp(cmd, "kek") != 0 &&
	    strcmp(cmd, "signer") != 0 && strcmp(cmd, "selftest") != 0) {
		fprintf(stderr, "keyward-hsm: unknown command '%s'\n", cmd);
		status = usage(stderr, EXIT_USAGE);
		goto out;
	}
	rv = ctx_open(&c);
	if (rv != KW_OK) {
		status = die(rv, "open the HSM");
		goto out;
	}
	if (strcmp(cmd, "info") == 0 && optind == argc) {
		status = cmd_info(&c);
	} else if (strcmp(cmd, "selftest") == 0 && optind < argc) {
		status = cmd_selftest(&c, argv[optind], argv + optind + 1,
		    argc - optind - 1);
	} else if (optind < argc &&
	    (strcmp(cmd, "kek") == 0 || strcmp(cmd, "signer") == 0)) {
		enum kwd_p11_class cls =
		    strcmp(cmd, "kek") == 0 ? KWD_P11_KEK : KWD_P11_SIGNER;
		const char *sub = argv[optind];

		if (strcmp(sub, "create") == 0 && argc - optind == 2)
			status = cmd_create(&c, cls, argv[optind + 1]);
		else if (strcmp(sub, "list") == 0 && argc - optind <= 2)
			status = cmd_list(&c, cls,
			    argc - optind == 2 ? argv[optind + 1] : "");
		else
			status = usage(stderr, EXIT_USAGE);
	} else {
		status = usage(stderr, EXIT_USAGE);
	}
out:
	kwd_p11_worker_free(c.w);
	kwd_p11_free(c.p11);
	kwd_config_free(c.cfg);
	return status;
}

/*
 * cli.c: `keyward`, the command line of libkeyward (docs/CLI.md).
 *
 * Every command goes through libkeyward's public API; this file only
 * parses arguments and prints. Exit codes (docs/CLI.md):
 *
 *   0  done
 *   1  the server or the file refused: denied, not found, exists, invalid
 *   2  usage: the command line is wrong
 *   3  cannot work here: configuration, credentials, server unreachable or
 *      unavailable
 *   4  integrity: an encrypted file or an audit log failed its check
 *
 * No secret is ever taken from the command line: the token comes from
 * KEYWARD_TOKEN (wiped from the environment once read) or --token-file.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keyward.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define EXIT_ENV 3
#define EXIT_INTEGRITY 4

#define MAX_CONTEXT 32
#define TOKEN_FILE_MAX 8192

static const char *prog = "keyward";

/* Global options. */
static struct {
	bool json;
	struct kw_client_options copt;
	char token[TOKEN_FILE_MAX + 1];
} g;

static const char usage_main[] =
    "Usage: keyward [OPTIONS] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  key create NAME          create a key (admin)\n"
    "  key list                 list the keys you may see\n"
    "  key show NAME            show a key's versions and states\n"
    "  key rotate NAME          make a new version active (admin)\n"
    "  key set NAME ...         change a key (admin)\n"
    "  datakey KEY -C k=v...    a new data key bound to a context\n"
    "  encrypt FILE -k KEY -C k=v...   encrypt a file\n"
    "  decrypt FILE [--range A-B]      decrypt a file, or a byte range\n"
    "  token issue|revoke|introspect   tokens (see token --help)\n"
    "  signing-key show|rotate NAME    a signing key's public keys\n"
    "  artifact sign FILE --key KEY    sign a file's digest\n"
    "  artifact verify FILE --keys K   check a signature (offline)\n"
    "  cert --key-out K --cert-out C   a short-lived client certificate\n"
    "  audit verify LOG         check an audit log's hash chain (offline)\n"
    "  health                   the server's health\n"
    "  version                  this program's version\n"
    "\n"
    "Options (before the command):\n"
    "  --addr HOST:PORT   server (default $KEYWARD_ADDR)\n"
    "  --cert FILE        client certificate (default $KEYWARD_CERT)\n"
    "  --key FILE         its private key (default $KEYWARD_KEY)\n"
    "  --ca FILE          CA of the server (default $KEYWARD_CA)\n"
    "  --token-file FILE  a token instead of a certificate (default\n"
    "                     $KEYWARD_TOKEN)\n"
    "  --timeout MS       per request (default 10000)\n"
    "  --json             machine-readable output\n"
    "  -h, --help         this text; COMMAND --help for a command's\n"
    "\n"
    "Exit status: 0 done, 1 refused (denied, not found, exists, invalid),\n"
    "2 usage, 3 configuration or server unreachable, 4 integrity failure.\n";

/* ---- output ---- */

__attribute__((format(printf, 1, 2))) static void
errx_msg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int
usage_error(const char *usage, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%s", usage);
	return EXIT_USAGE;
}

/* exit_for: the exit status of a KW_ERR_* code. */
static int
exit_for(int rc)
{
	switch (rc) {
	case KW_OK:
		return 0;
	case KW_ERR_AUTH:
		return EXIT_INTEGRITY;
	case KW_ERR_CONFIG:
	case KW_ERR_CONNECT:
	case KW_ERR_TIMEOUT:
	case KW_ERR_UNAUTHENTICATED:
	case KW_ERR_UNAVAILABLE:
	case KW_ERR_MEMLOCK:
	case KW_ERR_PERM:
	case KW_ERR_PROTOCOL:
	case KW_ERR_NOMEM:
	case KW_ERR_IO:
		return EXIT_ENV;
	default:
		return EXIT_REFUSED;
	}
}

/* fail: prints the client's explanation of rc; returns the exit status. */
static int
fail(kw_client *c, int rc)
{
	const char *m = c != NULL ? kw_client_message(c) : "";

	if (g.json) {
		json_t *o = json_pack("{s:{s:s,s:s}}", "error", "code",
		    kw_error_name(rc), "message",
		    m[0] != '\0' ? m : kw_strerror(rc));

		if (o != NULL) {
			json_dumpf(o, stderr, JSON_COMPACT);
			fputc('\n', stderr);
			json_decref(o);
		}
	} else {
		errx_msg("%s", m[0] != '\0' ? m : kw_strerror(rc));
	}
	return exit_for(rc);
}

static void
print_json(json_t *o)
{
	json_dumpf(o, stdout, JSON_COMPACT);
	fputc('\n', stdout);
}

/* ---- helpers ---- */

static bool
want_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return false;
		if (strcmp(argv[i], "-h") == 0 ||
		    strcmp(argv[i], "--help") == 0)
			return true;
	}
	return false;
}

static bool
parse_u64(const char *s, unsigned long long max, unsigned long long *ret)
{
	unsigned long long v;
	char *end;

	if (s == NULL || s[0] < '0' || s[0] > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > max)
		return false;
	*ret = v;
	return true;
}

/* add_context: "k=v" into ctx (pointers into arg). */
static int
add_context(struct kw_context_pair *ctx, size_t *n, char *arg,
    const char *usage)
{
	char *eq = strchr(arg, '=');

	if (eq == NULL || eq == arg)
		return usage_error(usage, "--context %s: expected KEY=VALUE",
		    arg);
	if (*n == MAX_CONTEXT)
		return usage_error(usage, "at most %d --context pairs",
		    MAX_CONTEXT);
	*eq = '\0';
	ctx[*n].key = arg;
	ctx[*n].value = eq + 1;
	(*n)++;
	return 0;
}

static int
new_client(kw_client **ret)
{
	char err[512];
	int rc;

	rc = kw_client_new(&g.copt, ret, err, sizeof err);
	if (rc != KW_OK) {
		if (g.json) {
			json_t *o = json_pack("{s:{s:s,s:s}}", "error", "code",
			    kw_error_name(rc), "message", err);

			if (o != NULL) {
				json_dumpf(o, stderr, JSON_COMPACT);
				fputc('\n', stderr);
				json_decref(o);
			}
		} else {
			errx_msg("%s", err[0] != '\0' ? err : kw_strerror(rc));
		}
		return exit_for(rc);
	}
	return 0;
}

/* request: one API call; the answer parsed into *ret (may be NULL). */
static int
request(kw_client *c, const char *method, const char *path, json_t *body,
    json_t **ret)
{
	char *text = NULL, *answer = NULL;
	json_t *root;
	int rc;

	if (body != NULL) {
		text = json_dumps(body, JSON_COMPACT);
		if (text == NULL) {
			errx_msg("out of memory");
			return EXIT_ENV;
		}
	}
	rc = kw_client_request(c, method, path, text, &answer);
	free(text);
	if (rc != KW_OK)
		return fail(c, rc);
	root = json_loads(answer, JSON_REJECT_DUPLICATES, NULL);
	kw_free(answer);
	if (root == NULL) {
		errx_msg("the server's answer is not JSON: check that "
		         "KEYWARD_ADDR points at keywardd");
		return EXIT_ENV;
	}
	if (ret != NULL)
		*ret = root;
	else
		json_decref(root);
	return 0;
}

static const char *
jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s != NULL ? s : "-";
}

static void
print_key(json_t *key)
{
	json_t *versions = json_object_get(key, "versions"), *v;
	size_t i;

	printf("key                  %s\n", jstr(key, "name"));
	printf("created              %s\n", jstr(key, "created"));
	printf("active version       %lld\n",
	    (long long)json_integer_value(
	        json_object_get(key, "active_version")));
	printf("min decrypt version  %lld\n",
	    (long long)json_integer_value(
	        json_object_get(key, "min_decrypt_version")));
	printf("rotation period      %lld s%s\n",
	    (long long)json_integer_value(
	        json_object_get(key, "rotation_period")),
	    json_integer_value(json_object_get(key, "rotation_period")) == 0
	        ? " (manual)"
	        : "");
	printf("\n%-8s  %-13s  %s\n", "VERSION", "STATE", "CREATED");
	json_array_foreach (versions, i, v) {
		printf("%-8lld  %-13s  %s\n",
		    (long long)json_integer_value(
		        json_object_get(v, "version")),
		    jstr(v, "state"), jstr(v, "created"));
	}
}

/* ---- key ---- */

static const char usage_key[] =
    "Usage: keyward key create NAME [--rotation-period SECONDS]\n"
    "       keyward key list\n"
    "       keyward key show NAME\n"
    "       keyward key rotate NAME\n"
    "       keyward key set NAME [--min-decrypt-version N]\n"
    "                            [--rotation-period SECONDS]\n"
    "                            [--version N --state decrypt-only|disabled]\n";

static int
cmd_key(kw_client *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"rotation-period", required_argument, NULL, 'p'},
	    {"min-decrypt-version", required_argument, NULL, 'm'},
	    {"version", required_argument, NULL, 'v'},
	    {"state", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *sub, *name = NULL, *state = NULL;
	unsigned long long period = 0, minv = 0, version = 0;
	bool has_period = false, has_min = false, has_version = false;
	char path[128];
	json_t *body = NULL, *ans = NULL;
	int ch, rc;

	if (argc < 2)
		return usage_error(usage_key, "key: which action?");
	sub = argv[1];
	argc--;
	argv++;
	optind = 0; /* glibc: start over */
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'p':
			if (!parse_u64(optarg, 315360000ULL, &period))
				return usage_error(usage_key,
				    "--rotation-period: seconds, 0 to "
				    "315360000");
			has_period = true;
			break;
		case 'm':
			if (!parse_u64(optarg, 4294967295ULL, &minv) ||
			    minv == 0)
				return usage_error(usage_key,
				    "--min-decrypt-version: 1 to 4294967295");
			has_min = true;
			break;
		case 'v':
			if (!parse_u64(optarg, 4294967295ULL, &version) ||
			    version == 0)
				return usage_error(usage_key,
				    "--version: 1 to 4294967295");
			has_version = true;
			break;
		case 's':
			state = optarg;
			if (strcmp(state, "decrypt-only") != 0 &&
			    strcmp(state, "disabled") != 0)
				return usage_error(usage_key,
				    "--state: decrypt-only or disabled");
			break;
		case 'h':
			fputs(usage_key, stdout);
			return 0;
		default:
			fputs(usage_key, stderr);
			return EXIT_USAGE;
		}
	}
	if (strcmp(sub, "list") == 0) {
		if (optind != argc)
			return usage_error(usage_key, "key list: no arguments");
		rc = request(c, "GET", "/v1/keys", NULL, &ans);
		if (rc != 0)
			return rc;
		if (g.json) {
			print_json(ans);
		} else {
			json_t *keys = json_object_get(ans, "keys"), *k;
			size_t i;

			printf("%-40s  %s\n", "NAME", "ACTIVE");
			json_array_foreach (keys, i, k) {
				printf("%-40s  %lld\n", jstr(k, "name"),
				    (long long)json_integer_value(
				        json_object_get(k, "active_version")));
			}
		}
		json_decref(ans);
		return 0;
	}
	if (optind + 1 != argc)
		return usage_error(usage_key, "key %s: expected one NAME", sub);
	name = argv[optind];
	if (strchr(name, '/') != NULL || strchr(name, '?') != NULL ||
	    strchr(name, '%') != NULL || strlen(name) > 63)
		return usage_error(usage_key, "NAME: 1 to 63 of a-z 0-9 . _ -");
	if (strcmp(sub, "create") == 0) {
		if (has_min || has_version || state != NULL)
			return usage_error(usage_key,
			    "key create: only --rotation-period");
		body = json_pack("{s:s}", "name", name);
		if (has_period)
			json_object_set_new(body, "rotation_period",
			    json_integer((json_int_t)period));
		rc = request(c, "POST", "/v1/keys", body, &ans);
	} else if (strcmp(sub, "show") == 0 || strcmp(sub, "rotate") == 0) {
		if (has_period || has_min || has_version || state != NULL)
			return usage_error(usage_key, "key %s: no options",
			    sub);
		snprintf(path, sizeof path, "/v1/keys/%s%s", name,
		    sub[0] == 'r' ? "/rotate" : "");
		rc = request(c, sub[0] == 'r' ? "POST" : "GET", path, NULL,
		    &ans);
	} else if (strcmp(sub, "set") == 0) {
		if (has_version != (state != NULL))
			return usage_error(usage_key,
			    "key set: --version and --state go together");
		if (!has_period && !has_min && !has_version)
			return usage_error(usage_key,
			    "key set: nothing to change");
		body = json_object();
		if (has_min)
			json_object_set_new(body, "min_decrypt_version",
			    json_integer((json_int_t)minv));
		if (has_period)
			json_object_set_new(body, "rotation_period",
			    json_integer((json_int_t)period));
		if (has_version) {
			json_object_set_new(body, "version",
			    json_integer((json_int_t)version));
			json_object_set_new(body, "state", json_string(state));
		}
		snprintf(path, sizeof path, "/v1/keys/%s", name);
		rc = request(c, "PATCH", path, body, &ans);
	} else {
		return usage_error(usage_key, "key: unknown action %s", sub);
	}
	json_decref(body);
	if (rc != 0)
		return rc;
	if (g.json)
		print_json(ans);
	else
		print_key(ans);
	json_decref(ans);
	return 0;
}

/* ---- datakey ---- */

static const char usage_datakey[] =
    "Usage: keyward datakey KEY [-C KEY=VALUE]... [--wrapped-only]\n"
    "\n"
    "A new data key under KEY, bound to the context. Prints the wrapped\n"
    "key and, unless --wrapped-only, the plaintext key (base64): keep it\n"
    "out of files and logs.\n";

static int
cmd_datakey(kw_client *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"context", required_argument, NULL, 'C'},
	    {"wrapped-only", no_argument, NULL, 'w'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct kw_context_pair ctx[MAX_CONTEXT];
	size_t nctx = 0;
	bool wrapped_only = false;
	kw_datakey *dk = NULL;
	int ch, rc;

	optind = 0; /* glibc: start over */
	while ((ch = getopt_long(argc, argv, "C:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'C':
			rc = add_context(ctx, &nctx, optarg, usage_datakey);
			if (rc != 0)
				return rc;
			break;
		case 'w':
			wrapped_only = true;
			break;
		case 'h':
			fputs(usage_datakey, stdout);
			return 0;
		default:
			fputs(usage_datakey, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return usage_error(usage_datakey, "datakey: expected one KEY");
	if (wrapped_only) {
		char path[128];
		json_t *body, *cobj = json_object(), *ans = NULL;

		if (strlen(argv[optind]) > 63 || strchr(argv[optind], '/') ||
		    strchr(argv[optind], '?') || strchr(argv[optind], '%'))
			return usage_error(usage_datakey,
			    "KEY: 1 to 63 of a-z 0-9 . _ -");
		for (size_t i = 0; i < nctx; i++)
			json_object_set_new(cobj, ctx[i].key,
			    json_string(ctx[i].value));
		body = json_pack("{s:o}", "context", cobj);
		snprintf(path, sizeof path,
		    "/v1/keys/%s/datakey?plaintext=false", argv[optind]);
		rc = request(c, "POST", path, body, &ans);
		json_decref(body);
		if (rc != 0)
			return rc;
		if (g.json)
			print_json(ans);
		else
			printf("key      %s\nversion  %lld\nwrapped  %s\n",
			    jstr(ans, "key"),
			    (long long)json_integer_value(
			        json_object_get(ans, "version")),
			    jstr(ans, "wrapped"));
		json_decref(ans);
		return 0;
	}
	rc = kw_datakey_generate(c, argv[optind], ctx, nctx, &dk);
	if (rc != KW_OK)
		return fail(c, rc);
	{
		/* The plaintext is printed from a stack buffer wiped at once;
		 * jansson is not given it. */
		size_t len = 0;
		const unsigned char *p = kw_datakey_plaintext(dk, &len);
		char out[sodium_base64_ENCODED_LEN(64,
		    sodium_base64_VARIANT_ORIGINAL)];

		if (len > 64) {
			kw_datakey_free(dk);
			errx_msg("the data key is longer than expected");
			return EXIT_ENV;
		}
		sodium_bin2base64(out, sizeof out, p, len,
		    sodium_base64_VARIANT_ORIGINAL);
		if (g.json)
			printf("{\"key\":\"%s\",\"version\":%lu,\"wrapped\":\"%"
			       "s\","
			       "\"plaintext\":\"%s\"}\n",
			    kw_datakey_key_name(dk), kw_datakey_key_version(dk),
			    kw_datakey_wrapped(dk), out);
		else
			printf("key        %s\nversion    %lu\nwrapped    %s\n"
			       "plaintext  %s\n",
			    kw_datakey_key_name(dk), kw_datakey_key_version(dk),
			    kw_datakey_wrapped(dk), out);
		fflush(stdout);
		sodium_memzero(out, sizeof out);
	}
	kw_datakey_free(dk);
	return 0;
}

/* ---- progress ---- */

struct progress {
	const char *what;
	struct timespec last;
	bool shown;
};

static void
on_progress(void *arg, unsigned long long done, unsigned long long total)
{
	struct progress *p = arg;
	struct timespec now;
	long ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (now.tv_sec - p->last.tv_sec) * 1000 +
	    (now.tv_nsec - p->last.tv_nsec) / 1000000;
	if (p->shown && ms < 100 && done < total)
		return;
	p->last = now;
	p->shown = true;
	fprintf(stderr, "\r%s: %3llu%% (%llu of %llu MiB)", p->what,
	    total > 0 ? done * 100 / total : 100, done >> 20, total >> 20);
	if (done >= total)
		fputc('\n', stderr);
}

/* want_progress: on a terminal, for humans. */
static bool
want_progress(void)
{
	return !g.json && isatty(STDERR_FILENO);
}

/* ---- encrypt / decrypt ---- */

static const char usage_encrypt[] =
    "Usage: keyward encrypt FILE -k KEY [-C KEY=VALUE]... [-o OUT]\n"
    "                       [--chunk-size BYTES] [--threads N]\n"
    "\n"
    "Encrypts FILE under a new data key from KEY bound to the context,\n"
    "into OUT (default FILE.kw), written whole or not at all.\n";

static bool
parse_threads(const char *s, unsigned *ret)
{
	unsigned long long v;

	if (!parse_u64(s, 1024, &v) || v == 0)
		return false;
	*ret = (unsigned)v;
	return true;
}

static int
cmd_encrypt(kw_client *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"key", required_argument, NULL, 'k'},
	    {"context", required_argument, NULL, 'C'},
	    {"output", required_argument, NULL, 'o'},
	    {"chunk-size", required_argument, NULL, 'c'},
	    {"threads", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct kw_context_pair ctx[MAX_CONTEXT];
	struct kw_file_options fo = {0};
	struct progress prog_state = {.what = "encrypting"};
	size_t nctx = 0;
	const char *key = NULL, *out = NULL;
	char outbuf[PATH_MAX];
	unsigned long long cs;
	int ch, rc;

	optind = 0; /* glibc: start over */
	while ((ch = getopt_long(argc, argv, "k:C:o:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'k':
			key = optarg;
			break;
		case 'C':
			rc = add_context(ctx, &nctx, optarg, usage_encrypt);
			if (rc != 0)
				return rc;
			break;
		case 'o':
			out = optarg;
			break;
		case 'c':
			if (!parse_u64(optarg, 64ULL << 20, &cs) || cs < 4096 ||
			    (cs & (cs - 1)) != 0)
				return usage_error(usage_encrypt,
				    "--chunk-size: a power of two from 4096 to "
				    "67108864");
			fo.chunk_size = (unsigned)cs;
			break;
		case 't':
			if (!parse_threads(optarg, &fo.threads))
				return usage_error(usage_encrypt,
				    "--threads: 1 to 1024");
			break;
		case 'h':
			fputs(usage_encrypt, stdout);
			return 0;
		default:
			fputs(usage_encrypt, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return usage_error(usage_encrypt, "encrypt: expected one FILE");
	if (key == NULL)
		return usage_error(usage_encrypt, "encrypt: --key is required");
	if (out == NULL) {
		if (snprintf(outbuf, sizeof outbuf, "%s.kw", argv[optind]) >=
		    (int)sizeof outbuf)
			return usage_error(usage_encrypt,
			    "FILE: path too long");
		out = outbuf;
	}
	if (want_progress()) {
		fo.progress = on_progress;
		fo.progress_arg = &prog_state;
	}
	rc = kw_file_encrypt(c, argv[optind], out, key, ctx, nctx, &fo);
	if (prog_state.shown && rc != KW_OK)
		fputc('\n', stderr);
	if (rc != KW_OK)
		return fail(c, rc);
	if (g.json) {
		json_t *o = json_pack("{s:s,s:s,s:s}", "input", argv[optind],
		    "output", out, "key", key);

		print_json(o);
		json_decref(o);
	} else if (isatty(STDOUT_FILENO)) {
		printf("%s: encrypted into %s\n", argv[optind], out);
	}
	return 0;
}

static const char usage_decrypt[] =
    "Usage: keyward decrypt FILE [-o OUT] [--range A-B] [--threads N]\n"
    "\n"
    "Decrypts FILE (its key is unwrapped by the server, for the context\n"
    "stored in it) into OUT, or standard output with -o - (the default\n"
    "when FILE does not end in .kw; otherwise FILE without .kw).\n"
    "--range A-B: plaintext bytes A through B (inclusive, as in HTTP\n"
    "Range), A- to the end; only the chunks they touch are read.\n"
    "An integrity failure exits 4 and leaves no OUT file; on standard\n"
    "output, only chunks that passed their check have been written.\n";

static bool
parse_range(const char *s, unsigned long long *off, unsigned long long *len)
{
	char buf[64], *dash;
	unsigned long long a, b;

	if (strlen(s) >= sizeof buf)
		return false;
	strcpy(buf, s);
	dash = strchr(buf, '-');
	if (dash == NULL)
		return false;
	*dash = '\0';
	if (!parse_u64(buf, UINT64_MAX, &a))
		return false;
	if (dash[1] == '\0') {
		*off = a;
		*len = UINT64_MAX;
		return true;
	}
	if (!parse_u64(dash + 1, UINT64_MAX - 1, &b) || b < a)
		return false;
	*off = a;
	*len = b - a + 1;
	return true;
}

static int
cmd_decrypt(kw_client *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"output", required_argument, NULL, 'o'},
	    {"range", required_argument, NULL, 'r'},
	    {"threads", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct kw_file_options fo = {0};
	struct progress prog_state = {.what = "decrypting"};
	unsigned long long off = 0, len = UINT64_MAX;
	const char *out = NULL, *in;
	char outbuf[PATH_MAX];
	size_t inlen;
	int ch, rc;

	optind = 0; /* glibc: start over */
	while ((ch = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'o':
			out = optarg;
			break;
		case 'r':
			if (!parse_range(optarg, &off, &len))
				return usage_error(usage_decrypt,
				    "--range: A-B (bytes A through B) or A-");
			break;
		case 't':
			if (!parse_threads(optarg, &fo.threads))
				return usage_error(usage_decrypt,
				    "--threads: 1 to 1024");
			break;
		case 'h':
			fputs(usage_decrypt, stdout);
			return 0;
		default:
			fputs(usage_decrypt, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return usage_error(usage_decrypt, "decrypt: expected one FILE");
	in = argv[optind];
	inlen = strlen(in);
	if (out == NULL) {
		if (inlen > 3 && strcmp(in + inlen - 3, ".kw") == 0 &&
		    inlen - 3 < sizeof outbuf) {
			memcpy(outbuf, in, inlen - 3);
			outbuf[inlen - 3] = '\0';
			out = outbuf;
		} else {
			out = "-";
		}
	}
	if (strcmp(out, "-") != 0 && want_progress()) {
		fo.progress = on_progress;
		fo.progress_arg = &prog_state;
	}
	rc = kw_file_decrypt(c, in, out, off, len, &fo);
	if (prog_state.shown && rc != KW_OK)
		fputc('\n', stderr);
	if (rc != KW_OK)
		return fail(c, rc);
	if (g.json && strcmp(out, "-") != 0) {
		json_t *o = json_pack("{s:s,s:s}", "input", in, "output", out);

		print_json(o);
		json_decref(o);
	}
	return 0;
}

/* ---- audit, health ---- */

static const char usage_audit[] =
    "Usage: keyward audit verify LOG\n"
    "\n"
    "Checks the hash chain of a keywardd audit log, offline. Exit 0: the\n"
    "chain holds; 4: a record was edited, removed or reordered (the first\n"
    "bad line is named).\n";

static int
cmd_audit(int argc, char **argv)
{
	unsigned long long n = 0, bad = 0;
	char err[256] = "";
	int rc;

	if (want_help(argc, argv)) {
		fputs(usage_audit, stdout);
		return 0;
	}
	if (argc != 3 || strcmp(argv[1], "verify") != 0)
		return usage_error(usage_audit, "audit: expected verify LOG");
	rc = kw_audit_verify(argv[2], &n, &bad, err, sizeof err);
	if (g.json) {
		json_t *o = rc == KW_OK
		    ? json_pack("{s:s,s:b,s:I}", "log", argv[2], "ok", 1,
		          "records", (json_int_t)n)
		    : json_pack("{s:s,s:b,s:I,s:s}", "log", argv[2], "ok", 0,
		          "bad_line", (json_int_t)bad, "error",
		          err[0] != '\0' ? err : kw_strerror(rc));

		print_json(o);
		json_decref(o);
	} else if (rc == KW_OK) {
		printf("%s: chain intact, %llu records\n", argv[2], n);
	} else if (rc == KW_ERR_AUTH) {
		errx_msg("%s: line %llu: %s", argv[2], bad, err);
	} else {
		errx_msg("%s: %s", argv[2],
		    err[0] != '\0' ? err : kw_strerror(rc));
	}
	return rc == KW_ERR_IO ? EXIT_ENV : exit_for(rc);
}

static const char usage_health[] = "Usage: keyward health\n"
                                   "\n"
                                   "The server's health: HSM and audit state. "
                                   "Exit 0 if ok, 3 if not.\n";

static int
cmd_health(kw_client *c, int argc, char **argv)
{
	char *answer = NULL;
	json_t *root;
	int rc;

	if (want_help(argc, argv)) {
		fputs(usage_health, stdout);
		return 0;
	}
	if (argc != 1)
		return usage_error(usage_health, "health: no arguments");
	rc = kw_client_request(c, "GET", "/v1/health", NULL, &answer);
	if (rc != KW_OK && rc != KW_ERR_UNAVAILABLE)
		return fail(c, rc);
	if (rc == KW_ERR_UNAVAILABLE) {
		/* 503 carries the health object's error form: say why. */
		return fail(c, rc);
	}
	root = json_loads(answer, 0, NULL);
	kw_free(answer);
	if (root == NULL) {
		errx_msg("the server's answer is not JSON");
		return EXIT_ENV;
	}
	if (g.json) {
		print_json(root);
	} else {
		const char *k;
		json_t *v;

		json_object_foreach (root, k, v) {
			char *s = json_is_string(v)
			    ? NULL
			    : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

			printf("%-8s %s\n", k,
			    s != NULL ? s : json_string_value(v));
			free(s);
		}
	}
	json_decref(root);
	return 0;
}

/* ---- credentials: tokens, signing keys, artifacts, certificates ---- */

#define SCOPES_MAX 32
#define DOC_MAX (1u << 20)

/* write_all: straight to the descriptor, past stdio's buffers (which are
 * freed unwiped): for tokens. */
static int
write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void
utc(unsigned long long t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%llu", t);
}

/*
 * read_small: a whole file (at most max bytes) into a malloc'd,
 * NUL-terminated buffer; "-" is standard input.
 */
static int
read_small(const char *path, size_t max, char **ret, size_t *ret_len)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);
	int fd = strcmp(path, "-") == 0 ? STDIN_FILENO
	                                : open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || buf == NULL) {
		errx_msg("%s: %s", path,
		    fd < 0 ? strerror(errno) : "no memory");
		free(buf);
		return EXIT_ENV;
	}
	for (;;) {
		ssize_t n;

		if (len + 1 == cap) {
			char *p = cap > max ? NULL : realloc(buf, cap * 2);

			if (p == NULL) {
				errx_msg("%s: larger than %zu bytes", path,
				    max);
				goto fail;
			}
			buf = p;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			errx_msg("%s: %s", path, strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > max) {
		errx_msg("%s: larger than %zu bytes", path, max);
		goto fail;
	}
	buf[len] = '\0';
	if (fd != STDIN_FILENO)
		close(fd);
	*ret = buf;
	if (ret_len != NULL)
		*ret_len = len;
	return 0;
fail:
	if (fd != STDIN_FILENO)
		close(fd);
	free(buf);
	return EXIT_ENV;
}

/*
 * read_token: a token from a file (mode 0600, as --token-file) or, with
 * path NULL, from standard input, into buf (wiped by the caller).
 */
static int
read_token(const char *path, char *buf, size_t cap)
{
	struct stat st;
	size_t len = 0;
	int fd = STDIN_FILENO;

	if (path != NULL) {
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0 || fstat(fd, &st) != 0) {
			errx_msg("--token-file %s: %s", path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return EXIT_ENV;
		}
		if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0) {
			close(fd);
			errx_msg("--token-file %s: must be a regular file "
			         "readable by its owner only (chmod 0600)",
			    path);
			return EXIT_ENV;
		}
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, cap - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			errx_msg("reading the token: %s", strerror(errno));
			break;
		}
		if (n == 0 || (len += (size_t)n) == cap - 1)
			break;
	}
	if (path != NULL)
		close(fd);
	while (len > 0 &&
	    (buf[len - 1] == '\n' || buf[len - 1] == '\r' ||
	        buf[len - 1] == ' '))
		len--;
	buf[len] = '\0';
	if (len == 0 || len >= cap - 1) {
		errx_msg("expected a token of 1 to %zu bytes on %s", cap - 2,
		    path != NULL ? path : "standard input");
		return EXIT_USAGE;
	}
	return 0;
}

static const char usage_token[] =
    "Usage: keyward token issue --audience AUD --scope SCOPE [--scope "
    "SCOPE]...\n"
    "                           [--ttl SECONDS] [--bind]\n"
    "       keyward token revoke (--jti JTI | --sub SUBJECT)\n"
    "       keyward token introspect [--token-file FILE]\n"
    "\n"
    "issue: a token for AUD holding the scopes (kw:OP:KEY for keyward's own\n"
    "API, whose audience is the broker's token_issuer), printed on standard\n"
    "output (--json: with token_type and expires_at). --bind binds it to\n"
    "this client's certificate.\n"
    "revoke: one token by its jti, or every token issued so far to a\n"
    "subject (admin).\n"
    "introspect: reads the token from standard input or FILE (never the\n"
    "command line) and prints the server's RFC 7662 answer; exit 0 if the\n"
    "token is active, 1 if not.\n";

static int
token_issue(kw_client *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"audience", required_argument, NULL, 'a'},
	    {"scope", required_argument, NULL, 's'},
	    {"ttl", required_argument, NULL, 't'},
	    {"bind", no_argument, NULL, 'b'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *aud = NULL, *scopes[SCOPES_MAX];
	unsigned long long ttl = 0, exp = 0;
	size_t n = 0;
	char *tok = NULL, line[96];
	bool bind = false;
	int ch, rc, w;

	optind = 0; /* glibc: start over */
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'a':
			aud = optarg;
			break;
		case 's':
			if (n == SCOPES_MAX)
				return usage_error(usage_token,
				    "at most %d --scope", SCOPES_MAX);
			scopes[n++] = optarg;
			break;
		case 't':
			if (!parse_u64(optarg, 604800, &ttl) || ttl == 0)
				return usage_error(usage_token,
				    "--ttl: seconds, 1 to 604800");
			break;
		case 'b':
			bind = true;
			break;
		case 'h':
			fputs(usage_token, stdout);
			return 0;
		default:
			fputs(usage_token, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc)
		return usage_error(usage_token, "token issue: no arguments");
	if (aud == NULL || n == 0)
		return usage_error(usage_token,
		    "token issue: --audience and --scope are required");
	rc = kw_token_issue(c, aud, scopes, n, (unsigned)ttl, bind, &tok, &exp);
	if (rc != KW_OK)
		return fail(c, rc);
	/* The token goes from locked memory to the descriptor, through no
	 * stdio or jansson buffer. */
	fflush(stdout);
	if (g.json) {
		w = write_all(STDOUT_FILENO, "{\"token\":\"", 10);
		if (w == 0)
			w = write_all(STDOUT_FILENO, tok, strlen(tok));
		snprintf(line, sizeof line,
		    "\",\"token_type\":\"Bearer\",\"expires_at\":%llu}\n", exp);
		if (w == 0)
			w = write_all(STDOUT_FILENO, line, strlen(line));
	} else {
		w = write_all(STDOUT_FILENO, tok, strlen(tok));
		if (w == 0)
			w = write_all(STDOUT_FILENO, "\n", 1);
	}
	kw_token_free(tok);
	if (w != 0) {
		errx_msg("standard output: %s", strerror(errno));
		return EXIT_ENV;
	}
	return 0;
}

static int
token_revoke(kw_client *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"jti", required_argument, NULL, 'j'},
	    {"sub", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *jti = NULL, *sub = NULL;
	int ch, rc;

	optind = 0; /* glibc: start over */
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'j':
			jti = optarg;
			break;
		case 's':
			sub = optarg;
			break;
		case 'h':
			fputs(usage_token, stdout);
			return 0;
		default:
			fputs(usage_token, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc || (jti == NULL) == (sub == NULL))
		return usage_error(usage_token,
		    "token revoke: exactly one of --jti and --sub");
	rc = kw_token_revoke(c, jti, sub);
	if (rc != KW_OK)
		return fail(c, rc);
	if (g.json)
		puts("{\"revoked\":true}");
	else
		printf("revoked %s %s\n", jti != NULL ? "jti" : "subject",
		    jti != NULL ? jti : sub);
	return 0;
}

static int
token_introspect(kw_client *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"token-file", required_argument, NULL, 'T'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char tok[TOKEN_FILE_MAX + 2], *ans = NULL;
	const char *file = NULL;
	json_t *root;
	bool active;
	int ch, rc;

	optind = 0; /* glibc: start over */
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'T':
			file = optarg;
			break;
		case 'h':
			fputs(usage_token, stdout);
			return 0;
		default:
			fputs(usage_token, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc)
		return usage_error(usage_token,
		    "token introspect: the token comes from standard input or "
		    "--token-file, never the command line");
	rc = read_token(file, tok, sizeof tok);
	if (rc == 0) {
		rc = kw_token_introspect(c, tok, &ans);
		rc = rc == KW_OK ? 0 : fail(c, rc);
	}
	sodium_memzero(tok, sizeof tok);
	if (rc != 0)
		return rc;
	root = json_loads(ans, JSON_REJECT_DUPLICATES, NULL);
	kw_free(ans);
	if (root == NULL) {
		errx_msg("the server's answer is not JSON");
		return EXIT_ENV;
	}
	active = json_is_true(json_object_get(root, "active"));
	if (g.json) {
		print_json(root);
	} else {
		const char *k;
		json_t *v;

		json_object_foreach (root, k, v) {
			char *s = json_is_string(v)
			    ? NULL
			    : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
			char when[40] = "";

			if (json_is_integer(v) &&
			    (strcmp(k, "exp") == 0 || strcmp(k, "iat") == 0 ||
			        strcmp(k, "nbf") == 0)) {
				char t[32];

				utc((unsigned long long)json_integer_value(v),
				    t, sizeof t);
				snprintf(when, sizeof when, " (%s)", t);
			}
			printf("%-10s %s%s\n", k,
			    s != NULL ? s : json_string_value(v), when);
			free(s);
		}
	}
	json_decref(root);
	return active ? 0 : EXIT_REFUSED;
}

static int
cmd_token(kw_client *c, int argc, char **argv)
{
	if (argc < 2)
		return usage_error(usage_token, "token: which action?");
	if (strcmp(argv[1], "issue") == 0)
		return token_issue(c, argc - 1, argv + 1);
	if (strcmp(argv[1], "revoke") == 0)
		return token_revoke(c, argc - 1, argv + 1);
	if (strcmp(argv[1], "introspect") == 0)
		return token_introspect(c, argc - 1, argv + 1);
	return usage_error(usage_token, "token: unknown action %s", argv[1]);
}

/* name_ok: a key name that can go into a URL path as is. */
static bool
name_ok(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > 63)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = name[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		        ch == '.' || ch == '_' || ch == '-'))
			return false;
	}
	return true;
}

static const char usage_signing_key[] =
    "Usage: keyward signing-key show NAME\n"
    "       keyward signing-key rotate NAME\n"
    "\n"
    "A signing key's public versions (JWKs with version and state): token\n"
    "(tokens), ca (certificates) or an artifact signing key. rotate (admin)\n"
    "makes a new active version, creating the key if it is missing. With\n"
    "--json, the answer is the key set `artifact verify --keys` takes.\n";

static int
cmd_signing_key(kw_client *c, int argc, char **argv)
{
	char path[128];
	json_t *ans = NULL, *keys, *k;
	size_t i;
	bool rotate;
	int rc;

	if (argc != 3 ||
	    (strcmp(argv[1], "show") != 0 && strcmp(argv[1], "rotate") != 0))
		return usage_error(usage_signing_key,
		    "signing-key: expected show NAME or rotate NAME");
	if (!name_ok(argv[2]))
		return usage_error(usage_signing_key,
		    "NAME: 1 to 63 of a-z 0-9 . _ -");
	rotate = argv[1][0] == 'r';
	snprintf(path, sizeof path, "/v1/signing-keys/%s%s", argv[2],
	    rotate ? "/rotate" : "");
	rc = request(c, rotate ? "POST" : "GET", path, NULL, &ans);
	if (rc != 0)
		return rc;
	if (g.json) {
		print_json(ans);
		json_decref(ans);
		return 0;
	}
	printf("signing key     %s\n", jstr(ans, "name"));
	printf("active version  %lld\n",
	    (long long)json_integer_value(
	        json_object_get(ans, "active_version")));
	printf("\n%-8s  %-8s  %-5s  %s\n", "VERSION", "STATE", "ALG", "KID");
	keys = json_object_get(ans, "keys");
	json_array_foreach (keys, i, k) {
		printf("%-8lld  %-8s  %-5s  %s\n",
		    (long long)json_integer_value(
		        json_object_get(k, "version")),
		    jstr(k, "state"), jstr(k, "alg"), jstr(k, "kid"));
	}
	json_decref(ans);
	return 0;
}

static const char usage_artifact[] =
    "Usage: keyward artifact sign FILE --key KEY [-o SIG]\n"
    "       keyward artifact verify FILE [--sig SIG] --keys KEYS.json\n"
    "\n"
    "sign: the server signs FILE's SHA-256 with signing key KEY (ES256);\n"
    "the signature document is written to SIG (default FILE.sig).\n"
    "verify: offline, no server: checks SIG (default FILE.sig) against FILE\n"
    "and the public keys in KEYS.json (`keyward --json signing-key show\n"
    "KEY`, or a JWKS). Exit 0: good signature; 4: it is not (unknown kid,\n"
    "digest mismatch, bad signature).\n";

/* write_file: data then a newline into path, through a temporary file
 * beside it and a rename (mode 0644). */
static int
write_file(const char *path, const char *data)
{
	char tmp[PATH_MAX + 16];
	int fd, ok;

	if (snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= (int)sizeof tmp) {
		errx_msg("%s: path too long", path);
		return EXIT_USAGE;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		errx_msg("%s: cannot create a file beside it: %s", path,
		    strerror(errno));
		return EXIT_ENV;
	}
	ok = fchmod(fd, 0644) == 0 && write_all(fd, data, strlen(data)) == 0 &&
	    write_all(fd, "\n", 1) == 0 && fsync(fd) == 0;
	if (close(fd) != 0)
		ok = 0;
	if (!ok || rename(tmp, path) != 0) {
		errx_msg("%s: %s", path, strerror(errno));
		(void)unlink(tmp);
		return EXIT_ENV;
	}
	return 0;
}

static int
artifact_sign(kw_client *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"key", required_argument, NULL, 'k'},
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *key = NULL, *out = NULL;
	char outbuf[PATH_MAX], *sig = NULL;
	json_t *doc;
	int ch, rc;

	optind = 0; /* glibc: start over */
	while ((ch = getopt_long(argc, argv, "k:o:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'k':
			key = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		case 'h':
			fputs(usage_artifact, stdout);
			return 0;
		default:
			fputs(usage_artifact, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return usage_error(usage_artifact,
		    "artifact sign: expected one FILE");
	if (key == NULL)
		return usage_error(usage_artifact,
		    "artifact sign: --key is required");
	if (out == NULL) {
		if (snprintf(outbuf, sizeof outbuf, "%s.sig", argv[optind]) >=
		    (int)sizeof outbuf)
			return usage_error(usage_artifact,
			    "FILE: path too long");
		out = outbuf;
	}
	rc = kw_artifact_sign(c, key, argv[optind], &sig);
	if (rc != KW_OK)
		return fail(c, rc);
	rc = write_file(out, sig);
	doc = rc == 0 ? json_loads(sig, 0, NULL) : NULL;
	kw_free(sig);
	if (rc != 0)
		return rc;
	if (g.json) {
		json_t *o = json_pack("{s:s,s:s,s:O}", "input", argv[optind],
		    "output", out, "signature", doc);

		print_json(o);
		json_decref(o);
	} else {
		printf("%s: signed by key %s version %lld (kid %s) into %s\n",
		    argv[optind], jstr(doc, "key"),
		    (long long)json_integer_value(
		        json_object_get(doc, "version")),
		    jstr(doc, "kid"), out);
	}
	json_decref(doc);
	return 0;
}

static int
artifact_verify(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"sig", required_argument, NULL, 's'},
	    {"keys", required_argument, NULL, 'k'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *sigpath = NULL, *keyspath = NULL, *file;
	char sigbuf[PATH_MAX], err[512] = "", *sig = NULL, *keys = NULL;
	json_t *doc;
	int ch, rc;

	optind = 0; /* glibc: start over */
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			sigpath = optarg;
			break;
		case 'k':
			keyspath = optarg;
			break;
		case 'h':
			fputs(usage_artifact, stdout);
			return 0;
		default:
			fputs(usage_artifact, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return usage_error(usage_artifact,
		    "artifact verify: expected one FILE");
	if (keyspath == NULL)
		return usage_error(usage_artifact,
		    "artifact verify: --keys is required (the signing key's "
		    "public keys)");
	file = argv[optind];
	if (sigpath == NULL) {
		if (snprintf(sigbuf, sizeof sigbuf, "%s.sig", file) >=
		    (int)sizeof sigbuf)
			return usage_error(usage_artifact,
			    "FILE: path too long");
		sigpath = sigbuf;
	}
	rc = read_small(sigpath, DOC_MAX, &sig, NULL);
	if (rc == 0)
		rc = read_small(keyspath, DOC_MAX, &keys, NULL);
	if (rc != 0) {
		free(sig);
		return rc;
	}
	rc = kw_artifact_verify(file, sig, keys, err, sizeof err);
	doc = json_loads(sig, 0, NULL);
	free(sig);
	free(keys);
	if (g.json) {
		json_t *o = rc == KW_OK
		    ? json_pack("{s:s,s:b,s:s,s:I,s:s}", "file", file, "ok", 1,
		          "key", jstr(doc, "key"), "version",
		          json_integer_value(json_object_get(doc, "version")),
		          "kid", jstr(doc, "kid"))
		    : json_pack("{s:s,s:b,s:s}", "file", file, "ok", 0, "error",
		          err[0] != '\0' ? err : kw_strerror(rc));

		print_json(o);
		json_decref(o);
	} else if (rc == KW_OK) {
		printf("%s: good signature by key %s version %lld (kid %s)\n",
		    file, jstr(doc, "key"),
		    (long long)json_integer_value(
		        json_object_get(doc, "version")),
		    jstr(doc, "kid"));
	} else {
		errx_msg("%s: %s", file,
		    err[0] != '\0' ? err : kw_strerror(rc));
	}
	json_decref(doc);
	return exit_for(rc);
}

static const char usage_cert[] =
    "Usage: keyward cert --key-out KEY --cert-out CERT [--ttl SECONDS]\n"
    "                    [--renew-before SECONDS]\n"
    "\n"
    "A short-lived client certificate for the caller's identity: a P-256\n"
    "key made here (it never leaves this machine) into KEY (mode 0600),\n"
    "the certificate into CERT and the CA that issued it into CERT.ca.pem,\n"
    "each written whole or not at all. --renew-before: nothing is done\n"
    "(exit 0) if CERT is valid, holds KEY's public key and expires more\n"
    "than SECONDS from now; otherwise a new key and certificate are made.\n";

static int
cmd_cert(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"key-out", required_argument, NULL, 'k'},
	    {"cert-out", required_argument, NULL, 'c'},
	    {"ttl", required_argument, NULL, 't'},
	    {"renew-before", required_argument, NULL, 'r'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *keyout = NULL, *certout = NULL;
	unsigned long long ttl = 0, before = 0, na = 0;
	bool has_before = false, renewed = false;
	char err[512] = "", when[32], why[512] = "";
	kw_client *c = NULL;
	int ch, rc;

	optind = 0; /* glibc: start over */
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'k':
			keyout = optarg;
			break;
		case 'c':
			certout = optarg;
			break;
		case 't':
			if (!parse_u64(optarg, 604800, &ttl) || ttl == 0)
				return usage_error(usage_cert,
				    "--ttl: seconds, 1 to 604800");
			break;
		case 'r':
			if (!parse_u64(optarg, 315360000ULL, &before))
				return usage_error(usage_cert,
				    "--renew-before: seconds, 0 to 315360000");
			has_before = true;
			break;
		case 'h':
			fputs(usage_cert, stdout);
			return 0;
		default:
			fputs(usage_cert, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc)
		return usage_error(usage_cert, "cert: no arguments");
	if (keyout == NULL || certout == NULL)
		return usage_error(usage_cert,
		    "cert: --key-out and --cert-out are required");
	if (has_before) {
		/* Offline: a certificate that still has time needs no
		 * server. */
		rc = kw_cert_check(keyout, certout, &na, why, sizeof why);
		if (rc == KW_OK &&
		    na > (unsigned long long)time(NULL) + before) {
			utc(na, when, sizeof when);
			if (g.json) {
				json_t *o = json_pack("{s:s,s:s,s:I,s:b}",
				    "certificate", certout, "key", keyout,
				    "expires_at", (json_int_t)na, "renewed", 0);

				print_json(o);
				json_decref(o);
			} else {
				printf("%s: valid until %s, more than %llu s "
				       "from now: not renewed\n",
				    certout, when, before);
			}
			return 0;
		}
		if (rc == KW_OK)
			snprintf(why, sizeof why, "expires within %llu s",
			    before);
		renewed = true;
	}
	rc = new_client(&c);
	if (rc != 0)
		return rc;
	rc =
	    kw_cert_request(c, keyout, certout, (unsigned)ttl, err, sizeof err);
	if (rc != KW_OK) {
		rc = fail(c, rc);
		kw_client_free(c);
		return rc;
	}
	kw_client_free(c);
	rc = kw_cert_check(keyout, certout, &na, err, sizeof err);
	if (rc != KW_OK) {
		errx_msg("the new certificate: %s", err);
		return exit_for(rc);
	}
	utc(na, when, sizeof when);
	if (g.json) {
		json_t *o = json_pack("{s:s,s:s,s:s+,s:I,s:b}", "certificate",
		    certout, "key", keyout, "ca", certout, ".ca.pem",
		    "expires_at", (json_int_t)na, "renewed", renewed);

		print_json(o);
		json_decref(o);
	} else {
		if (renewed)
			printf("%s: renewed (%s)\n", certout,
			    why[0] != '\0' ? why : "not usable");
		printf("%s: valid until %s; key in %s, CA in %s.ca.pem\n",
		    certout, when, keyout, certout);
	}
	return 0;
}

static int
artifact_cmd(kw_client *c, int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "sign") == 0)
		return artifact_sign(c, argc - 1, argv + 1);
	return usage_error(usage_artifact, "artifact: expected sign or verify");
}

/* ---- main ---- */

/* harden: no core dump, not ptrace-able by same-uid processes: this
 * process holds DEKs. */
static void
harden(void)
{
	struct rlimit rl = {0, 0};

	(void)setrlimit(RLIMIT_CORE, &rl);
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/* token_from_env: KEYWARD_TOKEN into g.token, wiped from the environment
 * so that it is not inherited nor readable in /proc/PID/environ. */
static int
token_from_env(void)
{
	char *v = getenv("KEYWARD_TOKEN");
	size_t len;

	if (v == NULL || v[0] == '\0')
		return 0;
	len = strlen(v);
	if (len > TOKEN_FILE_MAX) {
		errx_msg("KEYWARD_TOKEN: longer than %d bytes", TOKEN_FILE_MAX);
		return EXIT_ENV;
	}
	memcpy(g.token, v, len + 1);
	sodium_memzero(v, len);
	unsetenv("KEYWARD_TOKEN");
	g.copt.token = g.token;
	return 0;
}

static int
token_from_file(const char *path)
{
	struct stat st;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &st) != 0) {
		errx_msg("--token-file %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return EXIT_ENV;
	}
	if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0) {
		close(fd);
		errx_msg("--token-file %s: must be a regular file readable by "
		         "its owner only (chmod 0600)",
		    path);
		return EXIT_ENV;
	}
	n = read(fd, g.token, TOKEN_FILE_MAX + 1);
	close(fd);
	if (n <= 0 || n > TOKEN_FILE_MAX) {
		errx_msg("--token-file %s: expected 1 to %d bytes", path,
		    TOKEN_FILE_MAX);
		return EXIT_ENV;
	}
	while (n > 0 && (g.token[n - 1] == '\n' || g.token[n - 1] == '\r'))
		n--;
	g.token[n] = '\0';
	g.copt.token = g.token;
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"addr", required_argument, NULL, 'a'},
	    {"cert", required_argument, NULL, 'c'},
	    {"key", required_argument, NULL, 'k'},
	    {"ca", required_argument, NULL, 'C'},
	    {"token-file", required_argument, NULL, 'T'},
	    {"timeout", required_argument, NULL, 't'},
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *token_file = NULL, *cmd;
	unsigned long long ms;
	kw_client *c = NULL;
	int ch, rc;

	harden();
	rc = token_from_env();
	if (rc != 0)
		return rc;
	while ((ch = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (ch) {
		case 'a':
			g.copt.addr = optarg;
			break;
		case 'c':
			g.copt.cert = optarg;
			break;
		case 'k':
			g.copt.key = optarg;
			break;
		case 'C':
			g.copt.ca = optarg;
			break;
		case 'T':
			token_file = optarg;
			break;
		case 't':
			if (!parse_u64(optarg, 3600000, &ms) || ms == 0)
				return usage_error(usage_main,
				    "--timeout: milliseconds, 1 to 3600000");
			g.copt.timeout_ms = (long)ms;
			break;
		case 'j':
			g.json = true;
			break;
		case 'h':
			fputs(usage_main, stdout);
			return 0;
		default:
			fputs(usage_main, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return usage_error(usage_main, "which command?");
	if (token_file != NULL) {
		rc = token_from_file(token_file);
		if (rc != 0)
			return rc;
	}
	cmd = argv[optind];
	argc -= optind;
	argv += optind;

	if (strcmp(cmd, "version") == 0) {
		printf(g.json ? "{\"version\":\"%s\"}\n" : "keyward %s\n",
		    kw_version());
		return 0;
	}
	if (strcmp(cmd, "audit") == 0)
		return cmd_audit(argc, argv);
	if (strcmp(cmd, "cert") == 0)
		return cmd_cert(argc, argv);
	if (strcmp(cmd, "artifact") == 0 && want_help(argc, argv)) {
		fputs(usage_artifact, stdout);
		return 0;
	}
	if (strcmp(cmd, "artifact") == 0 && argc >= 2 &&
	    strcmp(argv[1], "verify") == 0)
		return artifact_verify(argc - 1, argv + 1);
	if (strcmp(cmd, "help") == 0) {
		fputs(usage_main, stdout);
		return 0;
	}
	if (strcmp(cmd, "key") != 0 && strcmp(cmd, "datakey") != 0 &&
	    strcmp(cmd, "encrypt") != 0 && strcmp(cmd, "decrypt") != 0 &&
	    strcmp(cmd, "health") != 0 && strcmp(cmd, "token") != 0 &&
	    strcmp(cmd, "signing-key") != 0 && strcmp(cmd, "artifact") != 0)
		return usage_error(usage_main, "unknown command %s", cmd);
	/* A wrong action is a usage error, found before any server. */
	if ((strcmp(cmd, "token") == 0 &&
	        (argc < 2 ||
	            (strcmp(argv[1], "issue") != 0 &&
	                strcmp(argv[1], "revoke") != 0 &&
	                strcmp(argv[1], "introspect") != 0)) &&
	        !want_help(argc, argv)))
		return usage_error(usage_token,
		    "token: expected issue, revoke "
		    "or introspect");
	if (strcmp(cmd, "artifact") == 0 &&
	    (argc < 2 || strcmp(argv[1], "sign") != 0))
		return usage_error(usage_artifact,
		    "artifact: expected sign or verify");
	/* --help needs no server. */
	if (want_help(argc, argv)) {
		if (strcmp(cmd, "key") == 0)
			fputs(usage_key, stdout);
		else if (strcmp(cmd, "datakey") == 0)
			fputs(usage_datakey, stdout);
		else if (strcmp(cmd, "encrypt") == 0)
			fputs(usage_encrypt, stdout);
		else if (strcmp(cmd, "decrypt") == 0)
			fputs(usage_decrypt, stdout);
		else if (strcmp(cmd, "token") == 0)
			fputs(usage_token, stdout);
		else if (strcmp(cmd, "signing-key") == 0)
			fputs(usage_signing_key, stdout);
		else
			fputs(usage_health, stdout);
		return 0;
	}
	rc = new_client(&c);
	if (rc != 0)
		goto out;
	if (strcmp(cmd, "key") == 0)
		rc = cmd_key(c, argc, argv);
	else if (strcmp(cmd, "datakey") == 0)
		rc = cmd_datakey(c, argc, argv);
	else if (strcmp(cmd, "encrypt") == 0)
		rc = cmd_encrypt(c, argc, argv);
	else if (strcmp(cmd, "decrypt") == 0)
		rc = cmd_decrypt(c, argc, argv);
	else if (strcmp(cmd, "token") == 0)
		rc = cmd_token(c, argc, argv);
	else if (strcmp(cmd, "signing-key") == 0)
		rc = cmd_signing_key(c, argc, argv);
	else if (strcmp(cmd, "artifact") == 0)
		rc = artifact_cmd(c, argc, argv);
	else
		rc = cmd_health(c, argc, argv);
out:
	kw_client_free(c);
	sodium_memzero(g.token, sizeof g.token);
	if (fflush(stdout) != 0 && rc == 0) {
		errx_msg("standard output: %s", strerror(errno));
		rc = EXIT_ENV;
	}
	return rc;
}

/*
 * test_config.c: keywardd's strict JSON configuration.
 *
 * Every refusal must be KW_ERR_CONFIG with an error text that names the
 * field at fault, so that an operator can fix the file from the message.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"

#define MODULE "\"module\":\"/usr/lib/softhsm/libsofthsm2.so\""
#define TOKEN "\"token\":\"pkcs11:token=keyward-dev\""
#define PIN_FILE "\"pin_file\":\"/d/pin\""
/* A minimal valid pkcs11 object body. */
#define P11 MODULE "," TOKEN "," PIN_FILE
static const char full_config[] =
    "{\"listen\":\"127.0.0.1:8443\",\"metrics_listen\":\"127.0.0.1:9443\",\n"
    " \"tls\":{\"cert\":\"/d/tls/server.pem\",\"key\":\"/d/tls/server.key\","
    "\"client_ca\":\"/d/tls/ca.pem\"},\n"
    " \"pkcs11\":{\"module\":\"/usr/lib/softhsm/libsofthsm2.so\","
    "\"token\":\"pkcs11:token=keyward-dev\",\"pin_file\":\"/d/pin\","
    "\"env\":{\"SOFTHSM2_CONF\":\"/d/softhsm2.conf\"}},\n"
    " \"database\":\"/d/keyward.db\",\"policy\":\"/d/policy.json\","
    "\"audit_log\":\"/d/audit.log\"}\n";

static int null_fd = -1;

/* The token parser logs its refusals; keep them off the test output. */
static int
group_setup(void **state)
{
	(void)state;
	if (sodium_init() < 0)
		return -1;
	null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (null_fd < 0)
		return -1;
	kw_log_set_fd(null_fd);
	return 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	kw_log_set_fd(STDERR_FILENO);
	close(null_fd);
	return 0;
}

static int
parse_len(const char *buf, size_t len, char *err, size_t errlen)
{
	struct kwd_config *cfg = NULL;
	int rv = kwd_config_parse(buf, len, &cfg, err, errlen);

	if (rv == KW_OK) {
		assert_non_null(cfg);
		kwd_config_free(cfg);
	} else {
		assert_null(cfg);
	}
	return rv;
}

static int
parse(const char *json, char *err, size_t errlen)
{
	return parse_len(json, strlen(json), err, errlen);
}

static void
accepted(const char *json)
{
	char err[512] = "";
	int rv = parse(json, err, sizeof err);

	if (rv != KW_OK)
		fail_msg("refused (%d: %s): %s", rv, err, json);
}

/* Refused with KW_ERR_CONFIG and an error text containing field. */
static void
refused_len(const char *json, size_t len, const char *field)
{
	char err[512] = "";
	int rv = parse_len(json, len, err, sizeof err);

	if (rv != KW_ERR_CONFIG)
		fail_msg("got %d, not KW_ERR_CONFIG, for: %.200s", rv, json);
	if (err[0] == '\0' || strchr(err, '\n') != NULL)
		fail_msg("error text not one line: \"%s\"", err);
	if (field != NULL && strstr(err, field) == NULL)
		fail_msg("error \"%s\" does not name \"%s\" (input %.200s)",
		    err, field, json);
}

static void
refused(const char *json, const char *field)
{
	refused_len(json, strlen(json), field);
}

/* {<top>,"pkcs11":{P11}} */
static void
refused_top(const char *top, const char *field)
{
	char buf[2048];

	snprintf(buf, sizeof buf, "{%s,\"pkcs11\":{" P11 "}}", top);
	refused(buf, field);
}

static void
accepted_top(const char *top)
{
	char buf[2048];

	snprintf(buf, sizeof buf, "{%s,\"pkcs11\":{" P11 "}}", top);
	accepted(buf);
}

/* {"pkcs11":{<body>}} */
static void
refused_p11(const char *body, const char *field)
{
	char buf[2048];

	snprintf(buf, sizeof buf, "{\"pkcs11\":{%s}}", body);
	refused(buf, field);
}

static void
accepted_p11(const char *body)
{
	char buf[2048];

	snprintf(buf, sizeof buf, "{\"pkcs11\":{%s}}", body);
	accepted(buf);
}

static void
refused_token(const char *token)
{
	char buf[512];

	snprintf(buf, sizeof buf, MODULE ",\"token\":\"%s\"," PIN_FILE, token);
	refused_p11(buf, "pkcs11.token");
}

static void
accepted_token(const char *token)
{
	char buf[512];

	snprintf(buf, sizeof buf, MODULE ",\"token\":\"%s\"," PIN_FILE, token);
	accepted_p11(buf);
}

static void
test_config_full_parses(void **state)
{
	struct kwd_config *cfg = NULL;
	char err[256] = "";

	(void)state;
	assert_int_equal(kwd_config_parse(full_config, strlen(full_config),
	                     &cfg, err, sizeof err),
	    KW_OK);
	assert_non_null(cfg);
	assert_string_equal(cfg->listen, "127.0.0.1:8443");
	assert_string_equal(cfg->metrics_listen, "127.0.0.1:9443");
	assert_string_equal(cfg->tls_cert, "/d/tls/server.pem");
	assert_string_equal(cfg->tls_key, "/d/tls/server.key");
	assert_string_equal(cfg->tls_client_ca, "/d/tls/ca.pem");
	assert_string_equal(cfg->p11.module, "/usr/lib/softhsm/libsofthsm2.so");
	assert_string_equal(cfg->p11.token, "pkcs11:token=keyward-dev");
	assert_string_equal(cfg->p11.pin_file, "/d/pin");
	assert_null(cfg->p11.pin_env);
	assert_int_equal(cfg->p11_nenv, 1);
	assert_string_equal(cfg->p11_env_names[0], "SOFTHSM2_CONF");
	assert_string_equal(cfg->p11_env_values[0], "/d/softhsm2.conf");
	assert_string_equal(cfg->database, "/d/keyward.db");
	assert_string_equal(cfg->policy, "/d/policy.json");
	assert_string_equal(cfg->audit_log, "/d/audit.log");
	kwd_config_free(cfg);
	kwd_config_free(NULL);
}

static void
test_config_minimal_parses(void **state)
{
	struct kwd_config *cfg = NULL;
	const char *json = "{\"pkcs11\":{" MODULE ",\"token\":\"keyward-dev\","
	                   "\"pin_env\":\"KEYWARD_PIN\"}}";

	(void)state;
	assert_int_equal(kwd_config_parse(json, strlen(json), &cfg, NULL, 0),
	    KW_OK);
	/* Optional fields stay unset. */
	assert_null(cfg->listen);
	assert_null(cfg->metrics_listen);
	assert_null(cfg->tls_cert);
	assert_null(cfg->tls_key);
	assert_null(cfg->tls_client_ca);
	assert_null(cfg->database);
	assert_null(cfg->policy);
	assert_null(cfg->audit_log);
	assert_null(cfg->p11.pin_file);
	assert_string_equal(cfg->p11.pin_env, "KEYWARD_PIN");
	assert_string_equal(cfg->p11.token, "keyward-dev");
	assert_int_equal(cfg->p11_nenv, 0);
	/* Defaults of what the file leaves out. */
	assert_int_equal(cfg->audit_sync_ms, 100);
	assert_true(cfg->workers >= 1 && cfg->workers <= 4);
	assert_int_equal(cfg->limits.max_body_bytes, 64 * 1024);
	assert_int_equal(cfg->limits.rate_per_s, 1000);
	assert_int_equal(cfg->limits.rate_burst, 2000);
	kwd_config_free(cfg);
	/* 0 is a value of its own: sync every record. */
	json = "{\"audit_sync_ms\":0,\"pkcs11\":{" MODULE ",\"token\":\"t\","
	       "\"pin_env\":\"KEYWARD_PIN\"}}";
	assert_int_equal(kwd_config_parse(json, strlen(json), &cfg, NULL, 0),
	    KW_OK);
	assert_int_equal(cfg->audit_sync_ms, 0);
	kwd_config_free(cfg);
}

static void
test_config_unknown_fields(void **state)
{
	(void)state;
	refused_top("\"lisen\":\"127.0.0.1:8443\"", "lisen");
	refused_top("\"tls\":{\"cert\":\"/c\",\"key\":\"/k\",\"client_ca\":"
	            "\"/ca\",\"ciphers\":\"x\"}",
	    "tls.ciphers");
	refused_p11(P11 ",\"slot\":\"1\"", "pkcs11.slot");
	/* Keys that are known elsewhere are unknown here. */
	refused_p11(P11 ",\"tls\":{}", "pkcs11.tls");
	refused_top("\"env\":{}", "env");
	/* A key that tries to forge a log line is shown defanged, on one
	 * line, and cut. */
	refused_top("\"a\\nlevel=error event=forged\":1", "a?level=error");
	refused_top("\"k\\u0001\":1", "k?");
	refused_top("\"0123456789012345678901234567890123456789"
	            "0123456789012345678901234567890123456789\":1",
	    "012345678901234567890123456789012345678901234567...:");
	refused_p11(P11 ",\"env\":{\"A\\nB\":\"x\"}", "pkcs11.env.A?B");
}

static void
test_config_duplicate_key(void **state)
{
	(void)state;
	refused_top("\"listen\":\"127.0.0.1:1\",\"listen\":\"127.0.0.1:2\"",
	    "listen");
	refused_p11(P11 ",\"module\":\"/other.so\"", "module");
	refused("{\"pkcs11\":{" P11 "},\"pkcs11\":{" P11 "}}", "pkcs11");
}

static void
test_config_not_an_object(void **state)
{
	(void)state;
	refused("[]", NULL);
	refused("[{\"pkcs11\":{" P11 "}}]", NULL);
	refused("\"pkcs11\"", NULL);
	refused("null", NULL);
	refused("42", NULL);
	refused_len("", 0, NULL);
	refused(" \n", NULL);
	refused("{", NULL);
	refused("{\"pkcs11\":{" P11 "}} {}", NULL);
}

static void
test_config_required(void **state)
{
	(void)state;
	refused("{}", "pkcs11");
	refused("{\"listen\":\"127.0.0.1:8443\"}", "pkcs11");
	refused_p11(TOKEN "," PIN_FILE, "pkcs11.module");
	refused_p11(MODULE "," PIN_FILE, "pkcs11.token");
	refused_top("\"tls\":{\"cert\":\"/c\",\"key\":\"/k\"}",
	    "tls.client_ca");
	refused_top("\"tls\":{\"key\":\"/k\",\"client_ca\":\"/ca\"}",
	    "tls.cert");
}

static void
test_config_pin_source_exactly_one(void **state)
{
	(void)state;
	refused_p11(P11 ",\"pin_env\":\"KEYWARD_PIN\"", "pin_file");
	refused_p11(P11 ",\"pin_env\":\"KEYWARD_PIN\"", "pin_env");
	refused_p11(MODULE "," TOKEN, "pin_file");
	refused_p11(MODULE "," TOKEN, "pin_env");
	accepted_p11(MODULE "," TOKEN ",\"pin_env\":\"KEYWARD_PIN\"");
}

static void
test_config_relative_paths(void **state)
{
	(void)state;
	refused_top("\"database\":\"d/keyward.db\"", "database");
	refused_top("\"policy\":\"policy.json\"", "policy");
	refused_top("\"audit_log\":\"./audit.log\"", "audit_log");
	refused_top("\"tls\":{\"cert\":\"c.pem\",\"key\":\"/k\",\"client_ca\":"
	            "\"/ca\"}",
	    "tls.cert");
	refused_top("\"tls\":{\"cert\":\"/c\",\"key\":\"k\",\"client_ca\":"
	            "\"/ca\"}",
	    "tls.key");
	refused_top("\"tls\":{\"cert\":\"/c\",\"key\":\"/k\",\"client_ca\":"
	            "\"~/ca\"}",
	    "tls.client_ca");
	refused_p11("\"module\":\"libsofthsm2.so\"," TOKEN "," PIN_FILE,
	    "pkcs11.module");
	refused_p11(MODULE "," TOKEN ",\"pin_file\":\"pin\"",
	    "pkcs11.pin_file");
	/* Empty strings are refused for every field. */
	refused_top("\"database\":\"\"", "database");
	refused_top("\"listen\":\"\"", "listen");
}

static void
test_config_listen_addresses(void **state)
{
	const char *bad[] = {"127.0.0.1", ":80", "h:0", "h:65536", "h:8x",
	    "h:", "h:-1", "h:99999999999999999999", "h:80 "};
	const char *good[] = {"127.0.0.1:8443", "localhost:1", "h:65535",
	    "[::1]:8443"};
	char top[256];

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(top, sizeof top, "\"listen\":\"%s\"", bad[i]);
		refused_top(top, "listen");
		snprintf(top, sizeof top, "\"metrics_listen\":\"%s\"", bad[i]);
		refused_top(top, "metrics_listen");
	}
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		snprintf(top, sizeof top, "\"listen\":\"%s\"", good[i]);
		accepted_top(top);
	}
}

static void
test_config_pin_env_name(void **state)
{
	const char *bad[] = {"ld_x", "LD_PRELOAD", "LD_LIBRARY_PATH",
	    "GLIBC_TUNABLES", "1PIN", "PIN-X", "PIN X", "pin"};
	char body[256];

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(body, sizeof body,
		    MODULE "," TOKEN ",\"pin_env\":\"%s\"", bad[i]);
		refused_p11(body, "pkcs11.pin_env");
	}
	accepted_p11(MODULE "," TOKEN ",\"pin_env\":\"_PIN_2\"");
}

static void
test_config_env_entries(void **state)
{
	char body[1024];
	size_t n;
	struct kwd_config *cfg = NULL;
	char json[1100];

	(void)state;
	refused_p11(P11 ",\"env\":{\"LD_PRELOAD\":\"/x.so\"}",
	    "pkcs11.env.LD_PRELOAD");
	refused_p11(P11 ",\"env\":{\"ld_preload\":\"/x.so\"}",
	    "pkcs11.env.ld_preload");
	refused_p11(P11 ",\"env\":{\"GLIBC_TUNABLES\":\"x\"}",
	    "pkcs11.env.GLIBC_TUNABLES");
	refused_p11(P11 ",\"env\":{\"\":\"x\"}", "pkcs11.env");
	refused_p11(P11 ",\"env\":{\"A\":1}", "pkcs11.env.A");
	refused_p11(P11 ",\"env\":[\"A=1\"]", "pkcs11.env");
	refused_p11(P11 ",\"env\":\"A=1\"", "pkcs11.env");

	/* 16 entries are the limit; each lands in order. */
	n = (size_t)snprintf(body, sizeof body, P11 ",\"env\":{");
	for (int i = 0; i < KWD_CONFIG_MAX_ENV; i++)
		n += (size_t)snprintf(body + n, sizeof body - n,
		    "%s\"KW_E%d\":\"v%d\"", i ? "," : "", i, i);
	snprintf(body + n, sizeof body - n, "}");
	snprintf(json, sizeof json, "{\"pkcs11\":{%s}}", body);
	assert_int_equal(kwd_config_parse(json, strlen(json), &cfg, NULL, 0),
	    KW_OK);
	assert_int_equal(cfg->p11_nenv, KWD_CONFIG_MAX_ENV);
	for (int i = 0; i < KWD_CONFIG_MAX_ENV; i++) {
		char name[16], value[16];

		snprintf(name, sizeof name, "KW_E%d", i);
		snprintf(value, sizeof value, "v%d", i);
		assert_string_equal(cfg->p11_env_names[i], name);
		assert_string_equal(cfg->p11_env_values[i], value);
	}
	kwd_config_free(cfg);

	/* One more is refused. */
	snprintf(body + n, sizeof body - n, ",\"KW_E99\":\"x\"}");
	refused_p11(body, "pkcs11.env");
}

static void
test_config_wrong_types(void **state)
{
	(void)state;
	refused_top("\"listen\":8443", "listen");
	refused_top("\"database\":null", "database");
	refused_top("\"policy\":[\"/p\"]", "policy");
	refused_top("\"tls\":\"/d/tls\"", "tls");
	refused_top("\"tls\":null", "tls");
	refused("{\"pkcs11\":\"softhsm\"}", "pkcs11");
	refused("{\"pkcs11\":[]}", "pkcs11");
	refused_p11("\"module\":{}," TOKEN "," PIN_FILE, "pkcs11.module");
	refused_p11(MODULE ",\"token\":true," PIN_FILE, "pkcs11.token");
	refused_p11(MODULE "," TOKEN ",\"pin_file\":7", "pkcs11.pin_file");
}

static void
test_config_token_uri(void **state)
{
	char label[40];

	(void)state;
	refused_token("pkcs11:token=x;pin-value=1234");
	refused_token("pkcs11:token=x?pin-value=1234");
	refused_token("pkcs11:token=x?pin-source=file:/p");
	refused_token("pkcs11:object=k");
	refused_token("pkcs11:token=x;id=%01");
	refused_token("pkcs11:token=x;type=secret-key");
	refused_token("pkcs11:token=x?module-path=/evil.so");
	refused_token("pkcs11:token=%zz");
	refused_token("pkcs11:token=x;bogus-attr=1");

	accepted_token("pkcs11:token=keyward-dev");
	accepted_token("pkcs11:token=a%20b");
	/* Not a pkcs11: URI: a plain label of at most 32 bytes. */
	accepted_token("notauri:token=x");
	memset(label, 'l', 32);
	label[32] = '\0';
	accepted_token(label);
	label[32] = 'l';
	label[33] = '\0';
	refused_token(label);
}

static void
test_config_size_limit(void **state)
{
	const char *json = "{\"pkcs11\":{" P11 "}}";
	size_t len = KWD_CONFIG_MAX_BYTES;
	char *buf = malloc(len + 2);

	(void)state;
	assert_non_null(buf);
	assert_int_equal(KWD_CONFIG_MAX_BYTES, 64 * 1024);
	/* A valid config padded with trailing blanks to exactly the limit is
	 * fine; one byte more is not. */
	memset(buf, ' ', len + 1);
	memcpy(buf, json, strlen(json));
	buf[len + 1] = '\0';
	assert_int_equal(parse_len(buf, len, NULL, 0), KW_OK);
	refused_len(buf, len + 1, "65536");
	free(buf);
}

static void
test_config_nul_in_string(void **state)
{
	(void)state;
	refused_top("\"listen\":\"127.0.0.1:8443\\u0000x\"", NULL);
	refused_p11(MODULE ",\"token\":\"keyward\\u0000dev\"," PIN_FILE, NULL);
	refused_p11(P11 ",\"env\":{\"A\":\"x\\u0000y\"}", NULL);
	/* A raw NUL byte inside the input, not only an escaped one. */
	refused_len("{\"pkcs11\":{\0}}", 14, NULL);
}

static void
test_config_deep_nesting(void **state)
{
	const size_t depth = 100000;
	char *buf = malloc(2 * depth + 32);
	size_t n;

	(void)state;
	assert_non_null(buf);
	memset(buf, '[', depth);
	refused_len(buf, depth, NULL);
	/* Balanced, and inside an otherwise valid config. */
	memset(buf + depth, ']', depth);
	refused_len(buf, 2 * depth, NULL);
	n = (size_t)sprintf(buf, "{\"pkcs11\":");
	memset(buf + n, '[', depth);
	refused_len(buf, n + depth, NULL);
	free(buf);
}

static void
test_config_error_buffer(void **state)
{
	char err[8];

	(void)state;
	/* No buffer at all: still refused, nothing written. */
	assert_int_equal(parse("{}", NULL, 0), KW_ERR_CONFIG);
	/* A short buffer is cut and terminated. */
	memset(err, 'x', sizeof err);
	assert_int_equal(parse("{}", err, sizeof err), KW_ERR_CONFIG);
	assert_int_equal(strlen(err), sizeof err - 1);
	assert_int_equal(strncmp(err, "pkcs11:", 7), 0);
}

/* A file we create and remove; path is under /tmp. */
static void
write_temp(char *path, size_t pathlen, const void *data, size_t len)
{
	int fd;

	snprintf(path, pathlen, "/tmp/kw-test-config-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void
test_config_load(void **state)
{
	struct kwd_config *cfg = NULL;
	char path[64], err[512] = "";

	(void)state;
	write_temp(path, sizeof path, full_config, strlen(full_config));
	assert_int_equal(kwd_config_load(path, &cfg, err, sizeof err), KW_OK);
	assert_string_equal(cfg->audit_log, "/d/audit.log");
	assert_string_equal(cfg->p11_env_values[0], "/d/softhsm2.conf");
	kwd_config_free(cfg);
	cfg = NULL;
	unlink(path);

	/* Now missing. */
	assert_int_equal(kwd_config_load(path, &cfg, err, sizeof err),
	    KW_ERR_CONFIG);
	assert_null(cfg);
	assert_non_null(strstr(err, path));
}

static void
test_config_load_too_large(void **state)
{
	const size_t size = 70 * 1024;
	const char *json = "{\"pkcs11\":{" P11 "}}";
	struct kwd_config *cfg = NULL;
	char path[64], err[512] = "";
	char *buf = malloc(size);

	(void)state;
	assert_non_null(buf);
	/* Valid but for its size: only the limit can refuse it. */
	memset(buf, ' ', size);
	memcpy(buf, json, strlen(json));
	write_temp(path, sizeof path, buf, size);
	free(buf);
	assert_int_equal(kwd_config_load(path, &cfg, err, sizeof err),
	    KW_ERR_CONFIG);
	unlink(path);
	assert_null(cfg);
	assert_non_null(strstr(err, path));
}

static void
test_config_load_directory(void **state)
{
	struct kwd_config *cfg = NULL;
	char err[512] = "";

	(void)state;
	assert_int_equal(kwd_config_load("/tmp", &cfg, err, sizeof err),
	    KW_ERR_CONFIG);
	assert_null(cfg);
	assert_non_null(strstr(err, "/tmp"));
}

static void
test_config_apply_env(void **state)
{
	unsigned char raw[16];
	char a[33], b[33], json[1024];
	struct kwd_config *cfg = NULL;

	(void)state;
	/* Random values: what we read back can only come from apply_env. */
	randombytes_buf(raw, sizeof raw);
	sodium_bin2hex(a, sizeof a, raw, sizeof raw);
	randombytes_buf(raw, sizeof raw);
	sodium_bin2hex(b, sizeof b, raw, sizeof raw);
	snprintf(json, sizeof json,
	    "{\"pkcs11\":{" P11 ",\"env\":{\"KW_TEST_CFG_A\":\"%s\","
	    "\"KW_TEST_CFG_B\":\"%s\"}}}",
	    a, b);
	assert_int_equal(unsetenv("KW_TEST_CFG_A"), 0);
	assert_int_equal(setenv("KW_TEST_CFG_B", "old", 1), 0);
	assert_int_equal(kwd_config_parse(json, strlen(json), &cfg, NULL, 0),
	    KW_OK);
	/* Parsing alone changes nothing. */
	assert_null(getenv("KW_TEST_CFG_A"));
	assert_int_equal(kwd_config_apply_env(cfg), KW_OK);
	kwd_config_free(cfg);
	assert_non_null(getenv("KW_TEST_CFG_A"));
	assert_string_equal(getenv("KW_TEST_CFG_A"), a);
	assert_string_equal(getenv("KW_TEST_CFG_B"), b);
	unsetenv("KW_TEST_CFG_A");
	unsetenv("KW_TEST_CFG_B");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_config_full_parses),
	    cmocka_unit_test(test_config_minimal_parses),
	    cmocka_unit_test(test_config_unknown_fields),
	    cmocka_unit_test(test_config_duplicate_key),
	    cmocka_unit_test(test_config_not_an_object),
	    cmocka_unit_test(test_config_required),
	    cmocka_unit_test(test_config_pin_source_exactly_one),
	    cmocka_unit_test(test_config_relative_paths),
	    cmocka_unit_test(test_config_listen_addresses),
	    cmocka_unit_test(test_config_pin_env_name),
	    cmocka_unit_test(test_config_env_entries),
	    cmocka_unit_test(test_config_wrong_types),
	    cmocka_unit_test(test_config_token_uri),
	    cmocka_unit_test(test_config_size_limit),
	    cmocka_unit_test(test_config_nul_in_string),
	    cmocka_unit_test(test_config_deep_nesting),
	    cmocka_unit_test(test_config_error_buffer),
	    cmocka_unit_test(test_config_load),
	    cmocka_unit_test(test_config_load_too_large),
	    cmocka_unit_test(test_config_load_directory),
	    cmocka_unit_test(test_config_apply_env),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

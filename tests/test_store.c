/*
 * test_store.c: the SQLite key store (broker/store.c).
 *
 * Each test works on a fresh database in its own temporary directory and
 * captures the store's log lines in a file there, so that refusals can be
 * checked for the event they log. The crash tests fork children that use
 * the store and die (by _exit or SIGKILL) between or inside its calls;
 * the parent never holds the store open across a fork.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "store.h"

/* The schema version store.c's migrations reach: bump with each new one. */
#define LATEST_SCHEMA 3

struct fx {
	char dir[256];
	char db[PATH_MAX];
	char log[PATH_MAX];
	char mnt[512]; /* a tmpfs mount point, "" if none */
	int logfd;
};

static int
setup(void **state)
{
	struct fx *fx = calloc(1, sizeof *fx);
	const char *tmp = getenv("TMPDIR");

	if (fx == NULL)
		return -1;
	snprintf(fx->dir, sizeof fx->dir, "%s/kwstore.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (mkdtemp(fx->dir) == NULL) {
		free(fx);
		return -1;
	}
	snprintf(fx->db, sizeof fx->db, "%s/keyward.db", fx->dir);
	snprintf(fx->log, sizeof fx->log, "%s/log", fx->dir);
	fx->logfd =
	    open(fx->log, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fx->logfd < 0) {
		free(fx);
		return -1;
	}
	kw_log_set_fd(fx->logfd);
	kw_log_set_level(KW_LOG_DEBUG);
	*state = fx;
	return 0;
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
teardown(void **state)
{
	struct fx *fx = *state;

	kw_log_set_fd(STDERR_FILENO);
	kw_log_set_level(KW_LOG_INFO);
	if (fx->mnt[0] != '\0')
		umount2(fx->mnt, MNT_DETACH);
	close(fx->logfd);
	nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

/* How many times needle occurs in the captured log. */
static int
log_count(const struct fx *fx, const char *needle)
{
	static char buf[1 << 20];
	ssize_t n;
	int count = 0;

	n = pread(fx->logfd, buf, sizeof buf - 1, 0);
	assert_true(n >= 0);
	buf[n] = '\0';
	for (const char *p = buf; (p = strstr(p, needle)) != NULL; p++)
		count++;
	return count;
}

static struct kwd_store *
open_ok(const struct fx *fx)
{
	struct kwd_store *st = NULL;

	assert_int_equal(kwd_store_open(fx->db, &st), KW_OK);
	assert_non_null(st);
	return st;
}

/* kwd_store_open must fail with want and leave its output alone. */
static void
open_fails(const char *path, int want)
{
	struct kwd_store *st = (struct kwd_store *)&st;

	assert_int_equal(kwd_store_open(path, &st), want);
	assert_ptr_equal(st, (struct kwd_store *)&st);
}

static uint32_t
create_key(struct kwd_store *st, const char *name, uint64_t period)
{
	unsigned char id[KWD_STORE_ID_LEN];
	uint32_t v = 0;

	assert_int_equal(kwd_store_version_begin(st, name, true, period, &v,
	                     id),
	    KW_OK);
	assert_int_equal(v, 1);
	assert_int_equal(kwd_store_version_commit(st, name, v), KW_OK);
	return v;
}

static uint32_t
rotate(struct kwd_store *st, const char *name)
{
	unsigned char id[KWD_STORE_ID_LEN];
	uint32_t v = 0;

	assert_int_equal(kwd_store_version_begin(st, name, false, 0, &v, id),
	    KW_OK);
	assert_int_equal(kwd_store_version_commit(st, name, v), KW_OK);
	return v;
}

static struct kwd_key *
get(struct kwd_store *st, const char *name)
{
	struct kwd_key *k = malloc(sizeof *k);

	assert_non_null(k);
	assert_int_equal(kwd_store_key_get(st, name, k), KW_OK);
	return k;
}

static void
assert_key_equal(const struct kwd_key *a, const struct kwd_key *b)
{
	assert_string_equal(a->name, b->name);
	assert_int_equal(a->created, b->created);
	assert_int_equal(a->min_decrypt_version, b->min_decrypt_version);
	assert_int_equal(a->rotation_period, b->rotation_period);
	assert_int_equal(a->active, b->active);
	assert_int_equal(a->nversions, b->nversions);
	for (size_t i = 0; i < a->nversions; i++) {
		assert_int_equal(a->versions[i].version,
		    b->versions[i].version);
		assert_int_equal(a->versions[i].state, b->versions[i].state);
		assert_int_equal(a->versions[i].created,
		    b->versions[i].created);
		assert_memory_equal(a->versions[i].ckaid, b->versions[i].ckaid,
		    KWD_STORE_ID_LEN);
	}
}

/* Exactly one ACTIVE version, and it is the one key->active names. */
static void
assert_one_active(const struct kwd_key *k)
{
	size_t nactive = 0;

	for (size_t i = 0; i < k->nversions; i++) {
		if (k->versions[i].state == KWD_KEY_ACTIVE) {
			nactive++;
			assert_int_equal(k->versions[i].version, k->active);
		}
	}
	assert_int_equal(nactive, 1);
}

/* Raw SQL on a closed store, as an operator or an attacker could. */
static void
raw_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	char *err = NULL;

	assert_int_equal(sqlite3_open_v2(path, &db,
	                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
	    SQLITE_OK);
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", sql, err);
	sqlite3_close(db);
}

static long long
raw_int(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	long long v;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
	    SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return v;
}

static void
test_store_state_names(void **state)
{
	static const char *const names[] = {"pending", "active", "decrypt-only",
	    "disabled", "destroyed"};
	static const char *const bad[] = {"", "Active", "decrypt_only",
	    "decryptonly", "active ", "enabled", "4"};
	enum kwd_key_state s = KWD_KEY_ACTIVE;

	(void)state;
	for (int i = 0; i <= KWD_KEY_DESTROYED; i++) {
		assert_string_equal(kwd_key_state_name((enum kwd_key_state)i),
		    names[i]);
		assert_int_equal(kwd_key_state_parse(names[i], &s), KW_OK);
		assert_int_equal(s, i);
	}
	s = KWD_KEY_DISABLED;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(kwd_key_state_parse(bad[i], &s),
		    KW_ERR_INVALID);
		assert_int_equal(s, KWD_KEY_DISABLED);
	}
	assert_int_equal(kwd_key_state_parse(NULL, &s), KW_ERR_INVALID);
	assert_int_equal(kwd_key_state_parse("active", NULL), KW_ERR_INVALID);
	assert_string_equal(kwd_key_state_name((enum kwd_key_state)5),
	    "invalid");
}

static void
test_store_create_commit_get(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	struct kwd_key *k = malloc(sizeof *k);
	struct kwd_key_summary *list = NULL;
	struct kwd_pending *pend = NULL;
	unsigned char id[KWD_STORE_ID_LEN], zero[KWD_STORE_ID_LEN] = {0};
	uint32_t v = 0;
	size_t n = 9;
	uint64_t t0 = (uint64_t)time(NULL);

	assert_non_null(k);
	assert_int_equal(kwd_store_version_begin(st, "datasets", true, 86400,
	                     &v, id),
	    KW_OK);
	assert_int_equal(v, 1);
	assert_memory_not_equal(id, zero, sizeof id);

	/* Between the phases the key is invisible but pending. */
	assert_int_equal(kwd_store_key_get(st, "datasets", k),
	    KW_ERR_NOT_FOUND);
	assert_int_equal(kwd_store_key_list(st, &list, &n), KW_OK);
	assert_int_equal(n, 0);
	free(list);
	assert_int_equal(kwd_store_pending(st, &pend, &n), KW_OK);
	assert_int_equal(n, 1);
	assert_string_equal(pend[0].name, "datasets");
	assert_int_equal(pend[0].version, 1);
	assert_memory_equal(pend[0].ckaid, id, sizeof id);
	free(pend);

	assert_int_equal(kwd_store_version_commit(st, "datasets", v), KW_OK);
	assert_int_equal(kwd_store_key_get(st, "datasets", k), KW_OK);
	assert_string_equal(k->name, "datasets");
	assert_int_equal(k->active, 1);
	assert_int_equal(k->nversions, 1);
	assert_int_equal(k->min_decrypt_version, 1);
	assert_int_equal(k->rotation_period, 86400);
	assert_true(k->created >= t0 && k->created <= t0 + 60);
	assert_int_equal(k->versions[0].version, 1);
	assert_int_equal(k->versions[0].state, KWD_KEY_ACTIVE);
	assert_memory_equal(k->versions[0].ckaid, id, sizeof id);
	assert_int_equal(k->versions[0].created, k->created);
	assert_int_equal(kwd_store_pending(st, &pend, &n), KW_OK);
	assert_int_equal(n, 0);
	assert_null(pend);
	free(k);
	kwd_store_free(st);
}

static void
test_store_rotate_three_times(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	struct kwd_key *k;

	create_key(st, "weights", 0);
	for (uint32_t i = 2; i <= 4; i++)
		assert_int_equal(rotate(st, "weights"), i);
	for (int pass = 0; pass < 2; pass++) {
		k = get(st, "weights");
		assert_int_equal(k->nversions, 4);
		assert_int_equal(k->active, 4);
		assert_one_active(k);
		for (size_t i = 0; i < 4; i++) {
			assert_int_equal(k->versions[i].version, i + 1);
			assert_int_equal(k->versions[i].state,
			    i == 3 ? KWD_KEY_ACTIVE : KWD_KEY_DECRYPT_ONLY);
			for (size_t j = 0; j < i; j++)
				assert_memory_not_equal(k->versions[i].ckaid,
				    k->versions[j].ckaid, KWD_STORE_ID_LEN);
		}
		free(k);
		/* The same after a restart. */
		kwd_store_free(st);
		st = open_ok(fx);
	}
	kwd_store_free(st);
}

static void
test_store_begin_twice_unavailable(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	unsigned char id[KWD_STORE_ID_LEN], id2[KWD_STORE_ID_LEN];
	uint32_t v = 0, v2 = 77;
	struct kwd_key *k;

	create_key(st, "k", 0);
	assert_int_equal(kwd_store_version_begin(st, "k", false, 0, &v, id),
	    KW_OK);
	assert_int_equal(v, 2);
	memset(id2, 0xee, sizeof id2);
	assert_int_equal(kwd_store_version_begin(st, "k", false, 0, &v2, id2),
	    KW_ERR_UNAVAILABLE);
	assert_int_equal(v2, 77);
	assert_int_equal(id2[0], 0xee);
	k = get(st, "k");
	assert_int_equal(k->active, 1);
	assert_int_equal(k->nversions, 1);
	free(k);

	/* A creation in flight: the name is taken. */
	assert_int_equal(kwd_store_version_begin(st, "new", true, 0, &v2, id2),
	    KW_OK);
	assert_int_equal(kwd_store_version_begin(st, "new", true, 0, &v2, id2),
	    KW_ERR_EXISTS);
	assert_int_equal(kwd_store_version_begin(st, "new", false, 0, &v2, id2),
	    KW_ERR_UNAVAILABLE);

	assert_int_equal(kwd_store_version_commit(st, "k", v), KW_OK);
	assert_int_equal(rotate(st, "k"), 3);
	kwd_store_free(st);
}

static void
test_store_abandon(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	unsigned char id[KWD_STORE_ID_LEN], id2[KWD_STORE_ID_LEN];
	struct kwd_pending *pend = NULL;
	struct kwd_key *before, *after;
	uint32_t v = 0;
	size_t n = 0;

	/* An abandoned creation leaves no key behind. */
	assert_int_equal(kwd_store_version_begin(st, "gone", true, 0, &v, id),
	    KW_OK);
	assert_int_equal(kwd_store_version_abandon(st, "gone", v), KW_OK);
	after = malloc(sizeof *after);
	assert_non_null(after);
	assert_int_equal(kwd_store_key_get(st, "gone", after),
	    KW_ERR_NOT_FOUND);
	free(after);
	assert_int_equal(kwd_store_version_begin(st, "gone", false, 0, &v, id),
	    KW_ERR_NOT_FOUND);
	assert_int_equal(create_key(st, "gone", 0), 1);

	/* An abandoned rotation leaves the key as it was. */
	create_key(st, "k", 3600);
	before = get(st, "k");
	assert_int_equal(kwd_store_version_begin(st, "k", false, 0, &v, id),
	    KW_OK);
	assert_int_equal(v, 2);
	assert_int_equal(kwd_store_version_abandon(st, "k", v), KW_OK);
	after = get(st, "k");
	assert_key_equal(before, after);
	free(after);
	assert_int_equal(kwd_store_pending(st, &pend, &n), KW_OK);
	assert_int_equal(n, 0);
	free(pend);
	/* The number is free again, with a new CKA_ID. */
	assert_int_equal(kwd_store_version_begin(st, "k", false, 0, &v, id2),
	    KW_OK);
	assert_int_equal(v, 2);
	assert_memory_not_equal(id, id2, sizeof id);

	/* Only a PENDING version can be abandoned or committed. */
	assert_int_equal(kwd_store_version_abandon(st, "k", 1), KW_ERR_INVALID);
	assert_int_equal(kwd_store_version_commit(st, "k", 1), KW_ERR_INVALID);
	assert_int_equal(kwd_store_version_abandon(st, "k", 9),
	    KW_ERR_NOT_FOUND);
	assert_int_equal(kwd_store_version_commit(st, "k", 9),
	    KW_ERR_NOT_FOUND);
	assert_int_equal(kwd_store_version_commit(st, "nokey", 1),
	    KW_ERR_NOT_FOUND);
	assert_true(log_count(fx, "event=store.refused") >= 2);
	after = get(st, "k");
	assert_key_equal(before, after);
	free(after);
	assert_int_equal(kwd_store_version_commit(st, "k", 2), KW_OK);
	assert_int_equal(kwd_store_version_commit(st, "k", 2), KW_ERR_INVALID);
	after = get(st, "k");
	assert_int_equal(after->active, 2);
	assert_int_equal(after->versions[0].state, KWD_KEY_DECRYPT_ONLY);
	assert_memory_equal(after->versions[1].ckaid, id2, sizeof id2);
	free(after);
	free(before);
	kwd_store_free(st);
}

static void
test_store_pending_after_reopen(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	unsigned char id1[KWD_STORE_ID_LEN], id2[KWD_STORE_ID_LEN];
	struct kwd_pending *pend = NULL;
	uint32_t v1 = 0, v2 = 0;
	struct kwd_key *k;
	size_t n = 0;

	create_key(st, "k1", 0);
	assert_int_equal(kwd_store_version_begin(st, "k2", true, 0, &v2, id2),
	    KW_OK);
	assert_int_equal(kwd_store_version_begin(st, "k1", false, 0, &v1, id1),
	    KW_OK);
	/* A crash between the phases. */
	kwd_store_free(st);
	st = open_ok(fx);
	assert_int_equal(kwd_store_pending(st, &pend, &n), KW_OK);
	assert_int_equal(n, 2);
	assert_string_equal(pend[0].name, "k1");
	assert_int_equal(pend[0].version, 2);
	assert_memory_equal(pend[0].ckaid, id1, sizeof id1);
	assert_string_equal(pend[1].name, "k2");
	assert_int_equal(pend[1].version, 1);
	assert_memory_equal(pend[1].ckaid, id2, sizeof id2);
	free(pend);
	k = get(st, "k1");
	assert_int_equal(k->active, 1);
	assert_int_equal(k->nversions, 1);
	assert_int_equal(kwd_store_key_get(st, "k2", k), KW_ERR_NOT_FOUND);

	assert_int_equal(kwd_store_version_commit(st, "k1", v1), KW_OK);
	assert_int_equal(kwd_store_version_commit(st, "k2", v2), KW_OK);
	assert_int_equal(kwd_store_key_get(st, "k1", k), KW_OK);
	assert_int_equal(k->active, 2);
	assert_one_active(k);
	assert_memory_equal(k->versions[1].ckaid, id1, sizeof id1);
	assert_int_equal(kwd_store_key_get(st, "k2", k), KW_OK);
	assert_int_equal(k->active, 1);
	assert_memory_equal(k->versions[0].ckaid, id2, sizeof id2);
	free(k);
	kwd_store_free(st);
}

static void
test_store_create_existing_exists(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	unsigned char id[KWD_STORE_ID_LEN];
	struct kwd_key *before, *after;
	uint32_t v = 55;

	create_key(st, "k", 10);
	before = get(st, "k");
	assert_int_equal(kwd_store_version_begin(st, "k", true, 20, &v, id),
	    KW_ERR_EXISTS);
	assert_int_equal(v, 55);
	after = get(st, "k");
	assert_key_equal(before, after);
	free(before);
	free(after);
	kwd_store_free(st);
}

static void
test_store_rotate_missing_not_found(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	unsigned char id[KWD_STORE_ID_LEN];
	struct kwd_key *k = malloc(sizeof *k);
	uint32_t v = 55;

	assert_non_null(k);
	assert_int_equal(kwd_store_version_begin(st, "nope", false, 0, &v, id),
	    KW_ERR_NOT_FOUND);
	assert_int_equal(v, 55);
	assert_int_equal(kwd_store_key_get(st, "nope", k), KW_ERR_NOT_FOUND);
	assert_int_equal(kwd_store_key_patch(st, "nope", 0, 5, 0, 0),
	    KW_ERR_NOT_FOUND);
	assert_int_equal(kwd_store_version_abandon(st, "nope", 1),
	    KW_ERR_NOT_FOUND);
	/* No key row was left behind by the refusal. */
	assert_int_equal(create_key(st, "nope", 0), 1);
	free(k);
	kwd_store_free(st);
}

static void
test_store_invalid_arguments(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	static const char *const bad[] = {"", "A", "a/b", "..", "-a", "a b",
	    "0123456789012345678901234567890123456789012345678901234567890123"};
	unsigned char id[KWD_STORE_ID_LEN];
	struct kwd_key *k = malloc(sizeof *k);
	struct kwd_pending *pend;
	size_t n;
	uint32_t v;

	assert_non_null(k);
	create_key(st, "k", 0);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(kwd_store_version_begin(st, bad[i], true, 0,
		                     &v, id),
		    KW_ERR_INVALID);
		assert_int_equal(kwd_store_version_commit(st, bad[i], 1),
		    KW_ERR_INVALID);
		assert_int_equal(kwd_store_version_abandon(st, bad[i], 1),
		    KW_ERR_INVALID);
		assert_int_equal(kwd_store_key_get(st, bad[i], k),
		    KW_ERR_INVALID);
		assert_int_equal(kwd_store_key_patch(st, bad[i], 0, 1, 0, 0),
		    KW_ERR_INVALID);
	}
	assert_int_equal(kwd_store_version_begin(st, NULL, true, 0, &v, id),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_store_version_begin(st, "x", true, 0, NULL, id),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_store_version_begin(st, "x", true, 0, &v, NULL),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_store_version_begin(st, "x", true,
	                     (uint64_t)INT64_MAX + 1, &v, id),
	    KW_ERR_INVALID);
	assert_int_equal(kwd_store_version_commit(st, "k", 0), KW_ERR_INVALID);
	assert_int_equal(kwd_store_version_abandon(st, "k", 0), KW_ERR_INVALID);
	assert_int_equal(kwd_store_key_get(st, "k", NULL), KW_ERR_INVALID);
	assert_int_equal(kwd_store_pending(st, NULL, &n), KW_ERR_INVALID);
	assert_int_equal(kwd_store_pending(st, &pend, NULL), KW_ERR_INVALID);
	assert_int_equal(kwd_store_key_get(NULL, "k", k), KW_ERR_INVALID);
	open_fails(NULL, KW_ERR_INVALID);
	open_fails("", KW_ERR_INVALID);
	assert_int_equal(kwd_store_open(fx->db, NULL), KW_ERR_INVALID);
	kwd_store_free(NULL);
	/* Nothing was created by any of these. */
	assert_int_equal(kwd_store_key_get(st, "x", k), KW_ERR_NOT_FOUND);
	free(k);
	kwd_store_free(st);
}

static void
test_store_list_sorted(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	static const char *const names[] = {"zeta", "alpha", "m-1", "m.0",
	    "0num", "beta", "alpha2", "m_2"};
	const size_t nnames = sizeof names / sizeof names[0];
	struct kwd_key_summary *list = NULL;
	unsigned char id[KWD_STORE_ID_LEN];
	size_t n = 99;
	uint32_t v;

	assert_int_equal(kwd_store_key_list(st, &list, &n), KW_OK);
	assert_int_equal(n, 0);
	assert_null(list);
	for (size_t i = 0; i < nnames; i++)
		create_key(st, names[i], 0);
	rotate(st, "beta");
	rotate(st, "beta");
	rotate(st, "m.0");
	/* Neither a key being created nor a rotation in flight shows. */
	assert_int_equal(kwd_store_version_begin(st, "pend", true, 0, &v, id),
	    KW_OK);
	assert_int_equal(kwd_store_version_begin(st, "zeta", false, 0, &v, id),
	    KW_OK);

	assert_int_equal(kwd_store_key_list(st, &list, &n), KW_OK);
	assert_int_equal(n, nnames);
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			assert_true(strcmp(list[i - 1].name, list[i].name) < 0);
		if (strcmp(list[i].name, "beta") == 0)
			assert_int_equal(list[i].active, 3);
		else if (strcmp(list[i].name, "m.0") == 0)
			assert_int_equal(list[i].active, 2);
		else
			assert_int_equal(list[i].active, 1);
	}
	assert_string_equal(list[0].name, "0num");
	assert_string_equal(list[n - 1].name, "zeta");
	free(list);
	kwd_store_free(st);
}

/* Every refused patch must leave the key exactly as it was. */
static void
patch_refused(struct kwd_store *st, const struct kwd_key *before, uint32_t min,
    uint64_t period, uint32_t version, enum kwd_key_state s, int want)
{
	struct kwd_key *after;

	assert_int_equal(kwd_store_key_patch(st, before->name, min, period,
	                     version, s),
	    want);
	after = get(st, before->name);
	assert_key_equal(before, after);
	free(after);
}

static void
test_store_patch_rules(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	unsigned char id[KWD_STORE_ID_LEN];
	struct kwd_key *before, *k;
	uint32_t v;

	create_key(st, "k", 100);
	rotate(st, "k");
	rotate(st, "k");
	rotate(st, "k");
	/* v1-v3 decrypt-only, v4 active, v5 pending, v1 to be destroyed. */
	assert_int_equal(kwd_store_version_begin(st, "k", false, 0, &v, id),
	    KW_OK);
	assert_int_equal(v, 5);
	kwd_store_free(st);
	raw_exec(fx->db,
	    "UPDATE key_versions SET state = 4"
	    " WHERE name = 'k' AND version = 1");
	st = open_ok(fx);
	before = get(st, "k");
	assert_int_equal(before->active, 4);
	assert_int_equal(before->versions[0].state, KWD_KEY_DESTROYED);

	/* min_decrypt_version above the active version. */
	patch_refused(st, before, 5, UINT64_MAX, 0, 0, KW_ERR_INVALID);
	patch_refused(st, before, UINT32_MAX, UINT64_MAX, 0, 0, KW_ERR_INVALID);
	/* The active version, the pending one, a destroyed one. */
	patch_refused(st, before, 0, UINT64_MAX, 4, KWD_KEY_DISABLED,
	    KW_ERR_INVALID);
	patch_refused(st, before, 0, UINT64_MAX, 4, KWD_KEY_DECRYPT_ONLY,
	    KW_ERR_INVALID);
	patch_refused(st, before, 0, UINT64_MAX, 5, KWD_KEY_DISABLED,
	    KW_ERR_INVALID);
	patch_refused(st, before, 0, UINT64_MAX, 1, KWD_KEY_DISABLED,
	    KW_ERR_INVALID);
	/* Target states other than decrypt-only and disabled. */
	patch_refused(st, before, 0, UINT64_MAX, 2, KWD_KEY_ACTIVE,
	    KW_ERR_INVALID);
	patch_refused(st, before, 0, UINT64_MAX, 2, KWD_KEY_PENDING,
	    KW_ERR_INVALID);
	patch_refused(st, before, 0, UINT64_MAX, 2, KWD_KEY_DESTROYED,
	    KW_ERR_INVALID);
	patch_refused(st, before, 0, UINT64_MAX, 2, (enum kwd_key_state)9,
	    KW_ERR_INVALID);
	/* A version that does not exist. */
	patch_refused(st, before, 0, UINT64_MAX, 9, KWD_KEY_DISABLED,
	    KW_ERR_NOT_FOUND);
	/* A period SQLite cannot hold. */
	patch_refused(st, before, 0, (uint64_t)INT64_MAX + 1, 0, 0,
	    KW_ERR_INVALID);
	/* One bad part refuses the whole request. */
	patch_refused(st, before, 2, 7, 4, KWD_KEY_DISABLED, KW_ERR_INVALID);
	patch_refused(st, before, 5, 7, 2, KWD_KEY_DISABLED, KW_ERR_INVALID);
	patch_refused(st, before, 3, 7, 9, KWD_KEY_DISABLED, KW_ERR_NOT_FOUND);
	assert_true(log_count(fx, "event=store.refused") >= 12);
	free(before);

	/* Accepted: everything at once, then each alone. */
	assert_int_equal(kwd_store_key_patch(st, "k", 3, 86400, 2,
	                     KWD_KEY_DISABLED),
	    KW_OK);
	k = get(st, "k");
	assert_int_equal(k->min_decrypt_version, 3);
	assert_int_equal(k->rotation_period, 86400);
	assert_int_equal(k->versions[1].state, KWD_KEY_DISABLED);
	assert_int_equal(k->versions[2].state, KWD_KEY_DECRYPT_ONLY);
	assert_int_equal(k->active, 4);
	assert_int_equal(k->nversions, 4);
	free(k);
	assert_int_equal(kwd_store_key_patch(st, "k", 0, UINT64_MAX, 2,
	                     KWD_KEY_DECRYPT_ONLY),
	    KW_OK);
	assert_int_equal(kwd_store_key_patch(st, "k", 0, UINT64_MAX, 3,
	                     KWD_KEY_DISABLED),
	    KW_OK);
	assert_int_equal(kwd_store_key_patch(st, "k", 4, UINT64_MAX, 0,
	                     KWD_KEY_ACTIVE),
	    KW_OK);
	assert_int_equal(kwd_store_key_patch(st, "k", 1, 0, 0, 0), KW_OK);
	/* Nothing requested: a no-op on an existing key. */
	assert_int_equal(kwd_store_key_patch(st, "k", 0, UINT64_MAX, 0, 0),
	    KW_OK);
	k = get(st, "k");
	assert_int_equal(k->min_decrypt_version, 1);
	assert_int_equal(k->rotation_period, 0);
	assert_int_equal(k->versions[0].state, KWD_KEY_DESTROYED);
	assert_int_equal(k->versions[1].state, KWD_KEY_DECRYPT_ONLY);
	assert_int_equal(k->versions[2].state, KWD_KEY_DISABLED);
	assert_int_equal(k->versions[3].state, KWD_KEY_ACTIVE);
	free(k);
	/* After the pending version is committed, the old active one can be
	 * disabled. */
	assert_int_equal(kwd_store_version_commit(st, "k", 5), KW_OK);
	assert_int_equal(kwd_store_key_patch(st, "k", 5, UINT64_MAX, 4,
	                     KWD_KEY_DISABLED),
	    KW_OK);
	k = get(st, "k");
	assert_int_equal(k->min_decrypt_version, 5);
	assert_int_equal(k->versions[3].state, KWD_KEY_DISABLED);
	assert_int_equal(k->active, 5);
	free(k);
	kwd_store_free(st);
}

/* A key whose versions are all inactive (an edited file) still rotates. */
static void
test_store_rotate_without_active(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	struct kwd_key *k;

	create_key(st, "k", 0);
	kwd_store_free(st);
	raw_exec(fx->db, "UPDATE key_versions SET state = 2");
	st = open_ok(fx);
	k = get(st, "k");
	assert_int_equal(k->active, 0);
	assert_int_equal(kwd_store_key_patch(st, "k", 1, UINT64_MAX, 0, 0),
	    KW_ERR_INVALID);
	free(k);
	assert_int_equal(rotate(st, "k"), 2);
	k = get(st, "k");
	assert_int_equal(k->active, 2);
	assert_one_active(k);
	assert_int_equal(k->versions[0].state, KWD_KEY_DECRYPT_ONLY);
	free(k);
	kwd_store_free(st);
}

static void
test_store_version_limit(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	unsigned char id[KWD_STORE_ID_LEN];
	struct kwd_key *k;
	uint32_t v = 0;

	create_key(st, "k", 0);
	kwd_store_free(st);
	/* Versions 2..1000, decrypt-only, in one go. */
	raw_exec(fx->db,
	    "WITH RECURSIVE n(v) AS (SELECT 2 UNION ALL SELECT v + 1 FROM n"
	    " WHERE v < 1000) INSERT INTO key_versions"
	    " (name, version, state, ckaid, created)"
	    " SELECT 'k', v, 2, randomblob(16), 0 FROM n");
	st = open_ok(fx);
	assert_int_equal(kwd_store_version_begin(st, "k", false, 0, &v, id),
	    KW_ERR_TOO_LARGE);
	k = get(st, "k");
	assert_int_equal(k->nversions, KWD_STORE_MAX_VERSIONS);
	assert_int_equal(k->versions[999].version, 1000);
	assert_int_equal(k->active, 1);
	free(k);
	kwd_store_free(st);
}

static void
test_store_migration_fresh_latest(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);

	kwd_store_free(st);
	assert_int_equal(raw_int(fx->db, "SELECT count(*) FROM schema_version"),
	    1);
	assert_int_equal(raw_int(fx->db, "SELECT version FROM schema_version"),
	    LATEST_SCHEMA);
	assert_int_equal(raw_int(fx->db,
	                     "SELECT count(*) FROM sqlite_schema WHERE name IN"
	                     " ('keys', 'key_versions',"
	                     " 'key_versions_one_active',"
	                     " 'key_versions_one_pending')"),
	    4);
	assert_int_equal(raw_int(fx->db,
	                     "SELECT journal_mode = 'wal'"
	                     " FROM pragma_journal_mode"),
	    1);
	assert_int_equal(log_count(fx, "event=store.migrate"), LATEST_SCHEMA);
	/* A second open has nothing to migrate. */
	st = open_ok(fx);
	kwd_store_free(st);
	assert_int_equal(log_count(fx, "event=store.migrate"), LATEST_SCHEMA);
	assert_int_equal(raw_int(fx->db, "SELECT version FROM schema_version"),
	    LATEST_SCHEMA);
}

static void
test_store_migration_newer_refused(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);

	create_key(st, "k", 0);
	kwd_store_free(st);
	raw_exec(fx->db, "UPDATE schema_version SET version = version + 1");
	open_fails(fx->db, KW_ERR_CONFIG);
	assert_int_equal(log_count(fx, "event=store.schema_newer"), 1);
	/* Refused without a change. */
	assert_int_equal(raw_int(fx->db, "SELECT version FROM schema_version"),
	    LATEST_SCHEMA + 1);
}

/* Another program's database, or an edited schema_version. */
static void
test_store_foreign_db_refused(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st;

	raw_exec(fx->db, "CREATE TABLE foo (x)");
	open_fails(fx->db, KW_ERR_CONFIG);
	assert_int_equal(log_count(fx, "event=store.foreign"), 1);
	assert_int_equal(unlink(fx->db), 0);

	st = open_ok(fx);
	kwd_store_free(st);
	raw_exec(fx->db, "INSERT INTO schema_version VALUES (1)");
	open_fails(fx->db, KW_ERR_CONFIG);
}

static void
write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void
test_store_random_bytes_refused(void **state)
{
	struct fx *fx = *state;
	static unsigned char buf[8192], back[8192];
	int fd;

	randombytes_buf(buf, sizeof buf);
	write_file(fx->db, buf, sizeof buf);
	open_fails(fx->db, KW_ERR_IO);
	assert_int_equal(log_count(fx, "event=store.notadb"), 1);
	/* Short files too. */
	write_file(fx->db, buf, 5);
	open_fails(fx->db, KW_ERR_IO);
	assert_int_equal(log_count(fx, "event=store.notadb"), 2);
	/* The right magic over garbage: SQLite's own checks refuse it. */
	memcpy(buf, "SQLite format 3", 16);
	write_file(fx->db, buf, sizeof buf);
	open_fails(fx->db, KW_ERR_IO);
	/* Refused without a write. */
	fd = open(fx->db, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, back, sizeof back), sizeof back);
	assert_int_equal(close(fd), 0);
	assert_memory_equal(back, buf, sizeof buf);
}

static void
test_store_corrupt_page_refused(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	unsigned char head[100], junk[65536];
	struct stat sb;
	char name[16];
	size_t pagesz;
	int fd;

	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof name, "key%d", i);
		create_key(st, name, 0);
		rotate(st, name);
	}
	/* Closing checkpoints the WAL: every page is in the file. */
	kwd_store_free(st);
	fd = open(fx->db, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, head, sizeof head, 0), sizeof head);
	pagesz = (size_t)head[16] << 8 | head[17];
	assert_true(pagesz >= 512 && pagesz <= sizeof junk);
	assert_int_equal(fstat(fd, &sb), 0);
	assert_true((size_t)sb.st_size >= 3 * pagesz);
	memset(junk, 0xa5, pagesz);
	assert_int_equal(pwrite(fd, junk, pagesz, (off_t)pagesz),
	    (ssize_t)pagesz);
	assert_int_equal(close(fd), 0);

	open_fails(fx->db, KW_ERR_IO);
	assert_true(log_count(fx, "event=store.corrupt") >= 1);
}

static void
assert_mode_0600(const char *path)
{
	struct stat sb;

	assert_int_equal(lstat(path, &sb), 0);
	assert_true(S_ISREG(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0600);
}

static void
test_store_file_mode_0600(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st;
	unsigned char id[KWD_STORE_ID_LEN];
	char path[PATH_MAX + 8], link[PATH_MAX + 8];
	mode_t old = umask(0);
	uint32_t v;

	st = open_ok(fx);
	umask(old);
	assert_int_equal(kwd_store_version_begin(st, "k", true, 0, &v, id),
	    KW_OK);
	assert_mode_0600(fx->db);
	snprintf(path, sizeof path, "%s-wal", fx->db);
	assert_mode_0600(path);
	snprintf(path, sizeof path, "%s-shm", fx->db);
	assert_mode_0600(path);
	kwd_store_free(st);

	/* A file others may write is refused, a symbolic link too. */
	assert_int_equal(chmod(fx->db, 0620), 0);
	open_fails(fx->db, KW_ERR_PERM);
	assert_int_equal(log_count(fx, "event=store.perm"), 1);
	assert_int_equal(chmod(fx->db, 0600), 0);
	snprintf(link, sizeof link, "%s/link.db", fx->dir);
	assert_int_equal(symlink(fx->db, link), 0);
	open_fails(link, KW_ERR_CONFIG);
	assert_int_equal(unlink(link), 0);
	/* A directory is not a database. */
	open_fails(fx->dir, KW_ERR_CONFIG);
	/* A missing directory. */
	snprintf(path, sizeof path, "%s/missing/keyward.db", fx->dir);
	open_fails(path, KW_ERR_IO);
	st = open_ok(fx);
	kwd_store_free(st);
}

/*
 * Mount a tmpfs of size bytes at fx->dir/mnt and point fx->db into it,
 * in a private mount namespace when possible (the mount then disappears
 * with this process whatever happens). false if mounting is not allowed.
 */
static bool
mount_tmpfs(struct fx *fx, size_t size)
{
	static bool unshared;
	char opts[64];

	if (!unshared && unshare(CLONE_NEWNS) == 0) {
		unshared = true;
		(void)mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
	}
	snprintf(fx->mnt, sizeof fx->mnt, "%s/mnt", fx->dir);
	assert_int_equal(mkdir(fx->mnt, 0700), 0);
	snprintf(opts, sizeof opts, "size=%zu,mode=0700", size);
	if (mount("tmpfs", fx->mnt, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) {
		fprintf(stderr, "SKIP: cannot mount a tmpfs (%s): %s\n",
		    strerror(errno),
		    "run as root to test full and read-only file systems");
		fx->mnt[0] = '\0';
		return false;
	}
	snprintf(fx->db, sizeof fx->db, "%s/keyward.db", fx->mnt);
	return true;
}

/* Fill the file system that holds path's directory. */
static void
fill_disk(const char *path)
{
	static char buf[4096];
	ssize_t n;
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	do
		n = write(fd, buf, sizeof buf);
	while (n == (ssize_t)sizeof buf);
	do
		n = write(fd, buf, 1);
	while (n == 1);
	assert_int_equal(errno, ENOSPC);
	assert_int_equal(close(fd), 0);
}

static void
assert_pending(struct kwd_store *st, const char *name, uint32_t version)
{
	struct kwd_pending *pend = NULL;
	size_t n = 0;

	assert_int_equal(kwd_store_pending(st, &pend, &n), KW_OK);
	if (version == 0) {
		assert_int_equal(n, 0);
	} else {
		assert_int_equal(n, 1);
		assert_string_equal(pend[0].name, name);
		assert_int_equal(pend[0].version, version);
	}
	free(pend);
}

static void
test_store_disk_full(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st;
	unsigned char id[KWD_STORE_ID_LEN];
	struct kwd_key *before, *after;
	char filler[PATH_MAX + 8];
	uint32_t v = 0, pending = 0;
	int rv = 0;

	if (!mount_tmpfs(fx, 512 * 1024)) {
		skip();
		return;
	}
	snprintf(filler, sizeof filler, "%s/filler", fx->mnt);
	st = open_ok(fx);
	create_key(st, "k", 0);
	rotate(st, "k");
	create_key(st, "other", 0);
	before = get(st, "k");
	fill_disk(filler);

	for (int i = 0; i < 64 && rv == 0; i++) {
		rv = kwd_store_version_begin(st, "k", false, 0, &v, id);
		if (rv == 0) {
			pending = v;
			rv = kwd_store_version_commit(st, "k", v);
			if (rv == 0) {
				pending = 0;
				free(before);
				before = get(st, "k");
			}
		}
	}
	assert_int_equal(rv, KW_ERR_IO);
	assert_true(log_count(fx, "disk full") >= 1);

	/* Reads still work, and show the last acknowledged state. */
	after = get(st, "k");
	assert_key_equal(before, after);
	free(after);
	assert_pending(st, "k", pending);
	kwd_store_free(st);

	/* A restart on the full disk. */
	st = open_ok(fx);
	after = get(st, "k");
	assert_key_equal(before, after);
	free(after);
	assert_pending(st, "k", pending);
	kwd_store_free(st);

	/* Space back: the same state, and rotation works again. */
	assert_int_equal(unlink(filler), 0);
	st = open_ok(fx);
	after = get(st, "k");
	assert_key_equal(before, after);
	free(after);
	assert_pending(st, "k", pending);
	if (pending != 0)
		assert_int_equal(kwd_store_version_abandon(st, "k", pending),
		    KW_OK);
	assert_int_equal(rotate(st, "k"), before->active + 1);
	after = get(st, "k");
	assert_one_active(after);
	free(after);
	free(before);
	kwd_store_free(st);
}

/* A read-only file system: refused at open, with nothing changed. */
static void
test_store_readonly_fs(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st;
	struct kwd_key *before, *after;

	if (!mount_tmpfs(fx, 1024 * 1024)) {
		skip();
		return;
	}
	st = open_ok(fx);
	create_key(st, "k", 0);
	before = get(st, "k");
	kwd_store_free(st);
	assert_int_equal(mount(NULL, fx->mnt, NULL,
	                     MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
	                     NULL),
	    0);
	open_fails(fx->db, KW_ERR_IO);
	assert_int_equal(mount(NULL, fx->mnt, NULL,
	                     MS_REMOUNT | MS_NOSUID | MS_NODEV, NULL),
	    0);
	st = open_ok(fx);
	after = get(st, "k");
	assert_key_equal(before, after);
	free(before);
	free(after);
	kwd_store_free(st);
}

/*
 * Another connection holds the write lock: after the busy timeout (5 s)
 * the store answers KW_ERR_UNAVAILABLE and changes nothing, and works
 * again once the lock is gone.
 */
static void
test_store_busy_unavailable(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	unsigned char id[KWD_STORE_ID_LEN];
	struct kwd_key *before, *after;
	sqlite3 *db = NULL;
	uint32_t v = 0;

	create_key(st, "k", 0);
	before = get(st, "k");
	assert_int_equal(sqlite3_open_v2(fx->db, &db, SQLITE_OPEN_READWRITE,
	                     NULL),
	    SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL),
	    SQLITE_OK);
	assert_int_equal(kwd_store_version_begin(st, "k", false, 0, &v, id),
	    KW_ERR_UNAVAILABLE);
	assert_int_equal(v, 0);
	assert_true(log_count(fx, "database locked") >= 1);
	/* Readers are not blocked by a writer in WAL mode. */
	after = get(st, "k");
	assert_key_equal(before, after);
	free(after);
	assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(rotate(st, "k"), 2);
	free(before);
	kwd_store_free(st);
}

/* Crash tests. Children report on a pipe; they never return. */
struct ack {
	uint32_t key;
	uint32_t version;
};

static void
child_ack(int fd, uint32_t key, uint32_t version)
{
	struct ack a = {key, version};

	/* 8 bytes to a pipe: atomic (PIPE_BUF). */
	if (write(fd, &a, sizeof a) != (ssize_t)sizeof a)
		_exit(20);
}

static pid_t
fork_child(void)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	return pid;
}

static int
wait_child(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		assert_int_equal(errno, EINTR);
	return status;
}

static void
test_store_crash_between_phases(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	unsigned char id[KWD_STORE_ID_LEN];
	struct kwd_key *k;
	uint32_t v;
	int status;
	pid_t pid;

	create_key(st, "k", 0);
	kwd_store_free(st);

	pid = fork_child();
	if (pid == 0) {
		if (kwd_store_open(fx->db, &st) != 0 ||
		    kwd_store_version_begin(st, "k", false, 0, &v, id) != 0)
			_exit(1);
		_exit(0); /* no commit, no close */
	}
	status = wait_child(pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	st = open_ok(fx);
	assert_pending(st, "k", 2);
	k = get(st, "k");
	assert_int_equal(k->active, 1);
	assert_int_equal(k->nversions, 1);
	/* The keeper's reconciliation, here: the HSM object exists. */
	assert_int_equal(kwd_store_version_commit(st, "k", 2), KW_OK);
	assert_int_equal(kwd_store_key_get(st, "k", k), KW_OK);
	assert_int_equal(k->active, 2);
	assert_one_active(k);
	free(k);
	kwd_store_free(st);
}

static void
test_store_crash_after_commit(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	unsigned char id[KWD_STORE_ID_LEN];
	struct ack a = {0, 0};
	struct kwd_key *k;
	int fds[2], status;
	uint32_t v;
	pid_t pid;

	create_key(st, "k", 0);
	kwd_store_free(st);
	assert_int_equal(pipe(fds), 0);

	pid = fork_child();
	if (pid == 0) {
		close(fds[0]);
		if (kwd_store_open(fx->db, &st) != 0 ||
		    kwd_store_version_begin(st, "k", false, 0, &v, id) != 0 ||
		    kwd_store_version_commit(st, "k", v) != 0)
			_exit(1);
		child_ack(fds[1], 0, v);
		_exit(0); /* no close: the WAL is not checkpointed */
	}
	close(fds[1]);
	status = wait_child(pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(read(fds[0], &a, sizeof a), sizeof a);
	close(fds[0]);
	assert_int_equal(a.version, 2);

	st = open_ok(fx);
	assert_pending(st, "k", 0);
	k = get(st, "k");
	assert_int_equal(k->active, 2);
	assert_one_active(k);
	free(k);
	kwd_store_free(st);
}

#define KILL_ROUNDS 100
#define KILL_KEYS 10

static void
key_name(char buf[32], uint32_t i)
{
	snprintf(buf, 32, "crash-%u", i);
}

/*
 * The child: reconcile what the previous one left pending (commit even
 * versions as if their HSM object existed, abandon odd ones), then rotate
 * key kidx until killed, acknowledging each commit that returned.
 */
static void __attribute__((noreturn))
kill_child(const char *db, int fd, uint32_t kidx)
{
	struct kwd_store *st = NULL;
	struct kwd_pending *pend = NULL;
	unsigned char id[KWD_STORE_ID_LEN];
	uint32_t v, idx;
	char name[32];
	size_t n = 0;
	int rv;

	if (kwd_store_open(db, &st) != 0)
		_exit(10);
	if (kwd_store_pending(st, &pend, &n) != 0)
		_exit(11);
	for (size_t i = 0; i < n; i++) {
		if (sscanf(pend[i].name, "crash-%u", &idx) != 1)
			_exit(12);
		if (pend[i].version % 2 == 0) {
			if (kwd_store_version_commit(st, pend[i].name,
			        pend[i].version) != 0)
				_exit(13);
			child_ack(fd, idx, pend[i].version);
		} else if (kwd_store_version_abandon(st, pend[i].name,
		               pend[i].version) != 0) {
			_exit(14);
		}
	}
	key_name(name, kidx);
	for (;;) {
		rv = kwd_store_version_begin(st, name, true, 0, &v, id);
		if (rv == KW_ERR_EXISTS)
			rv =
			    kwd_store_version_begin(st, name, false, 0, &v, id);
		if (rv == KW_ERR_TOO_LARGE)
			pause();
		if (rv != 0)
			_exit(15);
		if (kwd_store_version_commit(st, name, v) != 0)
			_exit(16);
		child_ack(fd, kidx, v);
	}
}

static void
test_store_crash_kill_rotations(void **state)
{
	struct fx *fx = *state;
	static bool acked[KILL_KEYS][KWD_STORE_MAX_VERSIONS + 1];
	struct kwd_store *st = NULL;
	struct kwd_key *k = malloc(sizeof *k);
	struct ack a;
	char name[32];
	int fds[2], status, rv;
	uint32_t maxack;
	ssize_t n;
	pid_t pid;

	assert_non_null(k);
	memset(acked, 0, sizeof acked);
	/* Create the file; each child then finds a migrated database. */
	st = open_ok(fx);
	kwd_store_free(st);

	for (uint32_t round = 0; round < KILL_ROUNDS; round++) {
		uint32_t kidx = round / (KILL_ROUNDS / KILL_KEYS);

		assert_int_equal(pipe(fds), 0);
		pid = fork_child();
		if (pid == 0) {
			close(fds[0]);
			kill_child(fx->db, fds[1], kidx);
		}
		close(fds[1]);
		usleep(randombytes_uniform(20000));
		assert_int_equal(kill(pid, SIGKILL), 0);
		status = wait_child(pid);
		/* Killed, not dead of an error of its own. */
		if (!WIFSIGNALED(status))
			fail_msg("round %u: the child exited with %d", round,
			    WEXITSTATUS(status));
		while ((n = read(fds[0], &a, sizeof a)) == (ssize_t)sizeof a) {
			assert_true(a.key < KILL_KEYS);
			assert_true(a.version >= 1 &&
			    a.version <= KWD_STORE_MAX_VERSIONS);
			acked[a.key][a.version] = true;
		}
		assert_int_equal(n, 0);
		close(fds[0]);

		st = open_ok(fx);
		for (uint32_t i = 0; i <= kidx; i++) {
			key_name(name, i);
			maxack = 0;
			for (uint32_t j = 1; j <= KWD_STORE_MAX_VERSIONS; j++)
				if (acked[i][j])
					maxack = j;
			rv = kwd_store_key_get(st, name, k);
			if (rv == KW_ERR_NOT_FOUND) {
				/* Its creation never committed. */
				assert_int_equal(maxack, 0);
				continue;
			}
			assert_int_equal(rv, KW_OK);
			assert_one_active(k);
			assert_true(k->active >= maxack);
			/* Versions 1..n, none lost, none pending. */
			for (size_t j = 0; j < k->nversions; j++) {
				assert_int_equal(k->versions[j].version, j + 1);
				assert_true(
				    k->versions[j].state == KWD_KEY_ACTIVE ||
				    k->versions[j].state ==
				        KWD_KEY_DECRYPT_ONLY);
			}
			for (uint32_t j = 1; j <= maxack; j++)
				if (acked[i][j])
					assert_true(j <= k->nversions);
		}
		kwd_store_free(st);
	}
	free(k);
}

/*
 * kill -9 while a fresh database is being created and migrated: the next
 * open must find either no store or a whole one, never refuse it.
 */
static void
test_store_crash_kill_first_open(void **state)
{
	struct fx *fx = *state;
	char wal[PATH_MAX + 8], shm[PATH_MAX + 8];
	struct kwd_store *st = NULL;
	struct kwd_key *k;
	struct ack a;
	int fds[2], status, rv;
	bool acked;
	pid_t pid;

	k = malloc(sizeof *k);
	assert_non_null(k);
	snprintf(wal, sizeof wal, "%s-wal", fx->db);
	snprintf(shm, sizeof shm, "%s-shm", fx->db);
	for (int round = 0; round < 30; round++) {
		unlink(fx->db);
		unlink(wal);
		unlink(shm);
		assert_int_equal(pipe(fds), 0);
		pid = fork_child();
		if (pid == 0) {
			close(fds[0]);
			if (kwd_store_open(fx->db, &st) != 0)
				_exit(1);
			if (kwd_store_version_begin(st, "k", true, 0,
			        &a.version, k->versions[0].ckaid) != 0 ||
			    kwd_store_version_commit(st, "k", a.version) != 0)
				_exit(2);
			child_ack(fds[1], 0, a.version);
			pause();
			_exit(3);
		}
		close(fds[1]);
		usleep(randombytes_uniform(60000));
		assert_int_equal(kill(pid, SIGKILL), 0);
		status = wait_child(pid);
		if (!WIFSIGNALED(status))
			fail_msg("round %d: the child exited with %d", round,
			    WEXITSTATUS(status));
		acked = read(fds[0], &a, sizeof a) == (ssize_t)sizeof a;
		close(fds[0]);

		st = open_ok(fx);
		rv = kwd_store_key_get(st, "k", k);
		if (acked) {
			assert_int_equal(rv, KW_OK);
			assert_int_equal(k->active, 1);
		} else {
			assert_true(rv == KW_OK || rv == KW_ERR_NOT_FOUND);
		}
		kwd_store_free(st);
		assert_int_equal(raw_int(fx->db,
		                     "SELECT version FROM schema_version"),
		    LATEST_SCHEMA);
	}
	free(k);
}

/* Signing keys share the tables but not the KEK paths. */
static void
test_store_signers_apart_from_keks(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	struct kwd_key_summary *list = NULL;
	unsigned char id[KWD_STORE_ID_LEN];
	struct kwd_key *k;
	uint32_t v = 0;
	size_t n = 0;

	create_key(st, "datasets", 0);
	assert_int_equal(kwd_store_version_begin_kind(st, "token",
	                     KWD_KIND_SIGNER, true, 0, &v, id),
	    KW_OK);
	assert_int_equal(kwd_store_version_commit(st, "token", v), KW_OK);
	/* One name space: a KEK may not take a signer's name. */
	assert_int_equal(kwd_store_version_begin(st, "token", true, 0, &v, id),
	    KW_ERR_EXISTS);
	/* Rotating with the wrong kind finds nothing. */
	assert_int_equal(kwd_store_version_begin(st, "token", false, 0, &v, id),
	    KW_ERR_NOT_FOUND);
	assert_int_equal(kwd_store_version_begin_kind(st, "datasets",
	                     KWD_KIND_SIGNER, false, 0, &v, id),
	    KW_ERR_NOT_FOUND);
	assert_int_equal(kwd_store_version_begin_kind(st, "token",
	                     KWD_KIND_SIGNER, false, 0, &v, id),
	    KW_OK);
	assert_int_equal(v, 2);
	assert_int_equal(kwd_store_version_commit(st, "token", v), KW_OK);

	assert_int_equal(kwd_store_key_list(st, &list, &n), KW_OK);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].name, "datasets");
	free(list);
	assert_int_equal(kwd_store_key_list_kind(st, KWD_KIND_SIGNER, &list,
	                     &n),
	    KW_OK);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].name, "token");
	assert_int_equal(list[0].active, 2);
	free(list);

	k = get(st, "token");
	assert_int_equal(k->kind, KWD_KIND_SIGNER);
	assert_int_equal(k->nversions, 2);
	/* The demoted version records when it stopped being active. */
	assert_true(k->versions[0].retired >= k->versions[0].created);
	assert_true(k->versions[0].retired > 0);
	assert_int_equal(k->versions[1].retired, 0);
	free(k);
	k = get(st, "datasets");
	assert_int_equal(k->kind, KWD_KIND_KEK);
	free(k);
	/* PATCH is for KEKs. */
	assert_int_equal(kwd_store_key_patch(st, "token", 2, UINT64_MAX, 0, 0),
	    KW_ERR_NOT_FOUND);

	/* A pending signer is reported with its kind. */
	assert_int_equal(kwd_store_version_begin_kind(st, "token",
	                     KWD_KIND_SIGNER, false, 0, &v, id),
	    KW_OK);
	kwd_store_free(st);
	st = open_ok(fx);
	{
		struct kwd_pending *p = NULL;

		assert_int_equal(kwd_store_pending(st, &p, &n), KW_OK);
		assert_int_equal(n, 1);
		assert_string_equal(p[0].name, "token");
		assert_int_equal(p[0].kind, KWD_KIND_SIGNER);
		assert_int_equal(p[0].version, 3);
		free(p);
	}
	kwd_store_free(st);
}

struct revs {
	int njti, nsub;
	char jti[4][65];
	char sub[4][128];
	uint64_t until[8], before[4];
};

static int
collect_rev(void *arg, const char *jti, const char *sub, uint64_t until,
    uint64_t before)
{
	struct revs *r = arg;

	if (jti != NULL) {
		assert_null(sub);
		assert_true(r->njti < 4);
		snprintf(r->jti[r->njti], sizeof r->jti[0], "%s", jti);
		r->until[r->njti++] = until;
	} else {
		assert_non_null(sub);
		assert_true(r->nsub < 4);
		snprintf(r->sub[r->nsub], sizeof r->sub[0], "%s", sub);
		r->until[4 + r->nsub] = until;
		r->before[r->nsub++] = before;
	}
	return 0;
}

static void
test_store_revocations_persist_and_expire(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	struct revs r;

	assert_int_equal(kwd_store_revoke_jti(st, "aaaaaaaaaaaaaaaaaaaaaa",
	                     2000),
	    KW_OK);
	/* Revoking twice is not an error. */
	assert_int_equal(kwd_store_revoke_jti(st, "aaaaaaaaaaaaaaaaaaaaaa",
	                     2000),
	    KW_OK);
	assert_int_equal(kwd_store_revoke_jti(st, "bbbbbbbbbbbbbbbbbbbbbb",
	                     1000),
	    KW_OK);
	assert_int_equal(kwd_store_revoke_sub(st, "spiffe://x/job/a", 1500,
	                     5000),
	    KW_OK);
	/* A later revocation of the same subject only widens it. */
	assert_int_equal(kwd_store_revoke_sub(st, "spiffe://x/job/a", 1200,
	                     4000),
	    KW_OK);
	assert_int_equal(kwd_store_revoke_jti(st, "", 1), KW_ERR_INVALID);
	assert_int_equal(kwd_store_revoke_sub(st, NULL, 1, 1), KW_ERR_INVALID);
	kwd_store_free(st);

	/* After a restart, at time 1500: the jti that expired at 1000 is
	 * dropped for good. */
	st = open_ok(fx);
	memset(&r, 0, sizeof r);
	assert_int_equal(kwd_store_revocations(st, 1500, collect_rev, &r),
	    KW_OK);
	assert_int_equal(r.njti, 1);
	assert_string_equal(r.jti[0], "aaaaaaaaaaaaaaaaaaaaaa");
	assert_int_equal(r.until[0], 2000);
	assert_int_equal(r.nsub, 1);
	assert_string_equal(r.sub[0], "spiffe://x/job/a");
	assert_int_equal(r.before[0], 1500);
	assert_int_equal(r.until[4], 5000);
	assert_int_equal(raw_int(fx->db, "SELECT count(*) FROM revoked_tokens"),
	    1);
	/* Past every end: nothing is left. */
	memset(&r, 0, sizeof r);
	assert_int_equal(kwd_store_revocations(st, 6000, collect_rev, &r),
	    KW_OK);
	assert_int_equal(r.njti + r.nsub, 0);
	kwd_store_free(st);
}

/* A database of schema 1 with a key migrates to 2, the key a KEK. */
static void
test_store_migration_from_1(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st;
	struct kwd_key *k;

	raw_exec(fx->db,
	    "CREATE TABLE keys (name TEXT PRIMARY KEY NOT NULL,"
	    " created INTEGER NOT NULL, min_decrypt_version INTEGER NOT NULL"
	    " DEFAULT 1, rotation_period INTEGER NOT NULL DEFAULT 0) STRICT;"
	    "CREATE TABLE key_versions (name TEXT NOT NULL REFERENCES keys"
	    " (name), version INTEGER NOT NULL, state INTEGER NOT NULL,"
	    " ckaid BLOB NOT NULL, created INTEGER NOT NULL,"
	    " PRIMARY KEY (name, version)) STRICT;"
	    "CREATE TABLE schema_version (version INTEGER NOT NULL);"
	    "INSERT INTO schema_version VALUES (1);"
	    "INSERT INTO keys (name, created) VALUES ('old', 10);"
	    "INSERT INTO key_versions VALUES ('old', 1, 1,"
	    " x'00112233445566778899aabbccddeeff', 10);");
	st = open_ok(fx);
	k = get(st, "old");
	assert_int_equal(k->kind, KWD_KIND_KEK);
	assert_int_equal(k->active, 1);
	assert_int_equal(k->versions[0].retired, 0);
	free(k);
	kwd_store_free(st);
	assert_int_equal(raw_int(fx->db, "SELECT version FROM schema_version"),
	    LATEST_SCHEMA);
}

static void
test_store_ca_certs(void **state)
{
	struct fx *fx = *state;
	struct kwd_store *st = open_ok(fx);
	char *pem = NULL;

	assert_int_equal(kwd_store_ca_get(st, 1, &pem), KW_ERR_NOT_FOUND);
	assert_null(pem);
	assert_int_equal(kwd_store_ca_put(st, 1, "first"), KW_OK);
	/* The first certificate of a version stays. */
	assert_int_equal(kwd_store_ca_put(st, 1, "second"), KW_OK);
	kwd_store_free(st);
	st = open_ok(fx);
	assert_int_equal(kwd_store_ca_get(st, 1, &pem), KW_OK);
	assert_string_equal(pem, "first");
	free(pem);
	assert_int_equal(kwd_store_ca_put(st, 0, "x"), KW_ERR_INVALID);
	assert_int_equal(kwd_store_ca_put(st, 2, ""), KW_ERR_INVALID);
	kwd_store_free(st);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_store_state_names),
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	    T(test_store_create_commit_get),
	    T(test_store_rotate_three_times),
	    T(test_store_begin_twice_unavailable),
	    T(test_store_abandon),
	    T(test_store_pending_after_reopen),
	    T(test_store_create_existing_exists),
	    T(test_store_rotate_missing_not_found),
	    T(test_store_invalid_arguments),
	    T(test_store_list_sorted),
	    T(test_store_patch_rules),
	    T(test_store_rotate_without_active),
	    T(test_store_version_limit),
	    T(test_store_migration_fresh_latest),
	    T(test_store_migration_newer_refused),
	    T(test_store_foreign_db_refused),
	    T(test_store_random_bytes_refused),
	    T(test_store_corrupt_page_refused),
	    T(test_store_file_mode_0600),
	    T(test_store_disk_full),
	    T(test_store_readonly_fs),
	    T(test_store_busy_unavailable),
	    T(test_store_crash_between_phases),
	    T(test_store_crash_after_commit),
	    T(test_store_crash_kill_rotations),
	    T(test_store_crash_kill_first_open),
	    T(test_store_signers_apart_from_keks),
	    T(test_store_revocations_persist_and_expire),
	    T(test_store_migration_from_1),
	    T(test_store_ca_certs),
#undef T
	};

	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}

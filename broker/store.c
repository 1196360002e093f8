/*
 * store.c: key metadata in SQLite (see store.h and docs/STORE.md).
 *
 * Threading: one connection per store, opened SQLITE_OPEN_NOMUTEX. The
 * store is used by one keeper thread at a time; the keeper serializes
 * every call on a store with its own mutex, so SQLite's per-connection
 * mutex would be pure cost. Never share a store across threads without
 * that mutex, and never across fork(): open a new one in the child.
 *
 * Every statement is a constant string prepared once (no SQL is ever
 * built from data); values are bound. Every change runs in one BEGIN
 * IMMEDIATE transaction and is committed (WAL, synchronous=FULL: the WAL
 * is fsynced on each commit) before the function returns 0.
 *
 * The store holds no secret: names, version numbers, states, CKA_IDs and
 * settings. Hence no secure_delete, and logging the SQLite error text is
 * safe (SQLite never puts bound values in its messages).
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "name.h"

#define BUSY_TIMEOUT_MS 5000

/* The SQL below spells states as numbers (partial indexes need them). */
_Static_assert(KWD_KEY_PENDING == 0 && KWD_KEY_ACTIVE == 1 &&
        KWD_KEY_DECRYPT_ONLY == 2 && KWD_KEY_DISABLED == 3 &&
        KWD_KEY_DESTROYED == 4,
    "store.c SQL hard-codes the key state numbers");

/*
 * Schema migrations, in order: migrations[i] takes the schema from
 * version i to i + 1. Append only: a released entry is never edited (a
 * database that ran it would not run the new text). Each runs in its own
 * BEGIN IMMEDIATE transaction together with the update of schema_version.
 *
 * STRICT tables make SQLite refuse a value of the wrong type instead of
 * storing it; "TEXT PRIMARY KEY" needs an explicit NOT NULL (SQLite lets
 * NULL into non-integer primary keys for backward compatibility).
 */
static const char *const migrations[] = {
    /* 1: keys and their versions. */
    "CREATE TABLE keys ("
    " name TEXT PRIMARY KEY NOT NULL CHECK (length(name) BETWEEN 1 AND 63),"
    " created INTEGER NOT NULL CHECK (created >= 0),"
    " min_decrypt_version INTEGER NOT NULL DEFAULT 1"
    "  CHECK (min_decrypt_version >= 1),"
    " rotation_period INTEGER NOT NULL DEFAULT 0"
    "  CHECK (rotation_period >= 0)"
    ") STRICT;"
    "CREATE TABLE key_versions ("
    " name TEXT NOT NULL REFERENCES keys (name),"
    " version INTEGER NOT NULL CHECK (version >= 1),"
    " state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 4),"
    " ckaid BLOB NOT NULL CHECK (length(ckaid) = 16),"
    " created INTEGER NOT NULL CHECK (created >= 0),"
    " PRIMARY KEY (name, version)"
    ") STRICT;"
    /* At most one ACTIVE and at most one PENDING version per key, whatever
     * the code does. */
    "CREATE UNIQUE INDEX key_versions_one_active ON key_versions (name)"
    " WHERE state = 1;"
    "CREATE UNIQUE INDEX key_versions_one_pending ON key_versions (name)"
    " WHERE state = 0;"
    /* The keeper finds HSM objects by CKA_ID: two versions sharing one
     * would make that ambiguous. */
    "CREATE UNIQUE INDEX key_versions_ckaid ON key_versions (ckaid);",
    /* 2: signing keys (kind 1: EC P-256 key pairs, labels sig/NAME/VER)
     * share the keys tables and their two-phase creation; the time a
     * version stopped being active (JWKS retention); token revocations,
     * by token id and by subject. */
    "ALTER TABLE keys ADD COLUMN kind INTEGER NOT NULL DEFAULT 0"
    " CHECK (kind BETWEEN 0 AND 1);"
    "ALTER TABLE key_versions ADD COLUMN retired INTEGER NOT NULL DEFAULT 0"
    " CHECK (retired >= 0);"
    "CREATE TABLE revoked_tokens ("
    " jti TEXT PRIMARY KEY NOT NULL CHECK (length(jti) BETWEEN 1 AND 64),"
    " exp INTEGER NOT NULL CHECK (exp >= 0),"
    " revoked INTEGER NOT NULL CHECK (revoked >= 0)"
    ") STRICT;"
    "CREATE TABLE revoked_subjects ("
    " sub TEXT PRIMARY KEY NOT NULL CHECK (length(sub) BETWEEN 1 AND 1024),"
    " before INTEGER NOT NULL CHECK (before >= 0),"
    " until INTEGER NOT NULL CHECK (until >= 0)"
    ") STRICT;",
    /* 3: the certificate of each version of the CA signing key. */
    "CREATE TABLE ca_certs ("
    " version INTEGER PRIMARY KEY CHECK (version >= 1),"
    " pem TEXT NOT NULL CHECK (length(pem) BETWEEN 1 AND 16384)"
    ") STRICT;",
};

#define SCHEMA_LATEST ((int64_t)(sizeof migrations / sizeof migrations[0]))

/*
 * Statements used after open, prepared once. A key is visible (get, list,
 * patch) once it has a version that is not PENDING: a key whose creation
 * is in flight exists only for begin (KW_ERR_EXISTS) and pending.
 */
#define STATEMENTS(X)                                                          \
	X(S_BEGIN_WRITE, "BEGIN IMMEDIATE")                                    \
	X(S_BEGIN_READ, "BEGIN DEFERRED")                                      \
	X(S_COMMIT, "COMMIT")                                                  \
	X(S_ROLLBACK, "ROLLBACK")                                              \
	X(S_KEY_GET,                                                           \
	    "SELECT created, min_decrypt_version, rotation_period, kind"       \
	    " FROM keys WHERE name = ?1")                                      \
	X(S_KEY_INSERT,                                                        \
	    "INSERT INTO keys (name, created, rotation_period, kind)"          \
	    " VALUES (?1, ?2, ?3, ?4)")                                        \
	X(S_KEY_KIND, "SELECT kind FROM keys WHERE name = ?1")                 \
	X(S_KEY_DELETE, "DELETE FROM keys WHERE name = ?1")                    \
	X(S_KEY_SET_MIN,                                                       \
	    "UPDATE keys SET min_decrypt_version = ?2 WHERE name = ?1")        \
	X(S_KEY_SET_PERIOD,                                                    \
	    "UPDATE keys SET rotation_period = ?2 WHERE name = ?1")            \
	X(S_KEY_LIST,                                                          \
	    "SELECT k.name, coalesce((SELECT v.version FROM key_versions v"    \
	    " WHERE v.name = k.name AND v.state = 1), 0) FROM keys k"          \
	    " WHERE EXISTS (SELECT 1 FROM key_versions v"                      \
	    " WHERE v.name = k.name AND v.state <> 0) AND k.kind = ?1"         \
	    " ORDER BY k.name")                                                \
	X(S_VER_LIST,                                                          \
	    "SELECT version, state, created, ckaid, retired FROM key_versions" \
	    " WHERE name = ?1 AND state <> 0 ORDER BY version")                \
	X(S_VER_STATE,                                                         \
	    "SELECT state FROM key_versions WHERE name = ?1 AND version = ?2") \
	X(S_VER_ACTIVE,                                                        \
	    "SELECT version FROM key_versions WHERE name = ?1 AND state = 1")  \
	X(S_VER_PENDING,                                                       \
	    "SELECT version FROM key_versions WHERE name = ?1 AND state = 0")  \
	X(S_VER_MAX,                                                           \
	    "SELECT coalesce(max(version), 0) FROM key_versions"               \
	    " WHERE name = ?1")                                                \
	X(S_VER_COUNT, "SELECT count(*) FROM key_versions WHERE name = ?1")    \
	X(S_VER_INSERT,                                                        \
	    "INSERT INTO key_versions (name, version, state, ckaid, created)"  \
	    " VALUES (?1, ?2, 0, ?3, ?4)")                                     \
	X(S_VER_DEMOTE,                                                        \
	    "UPDATE key_versions SET state = 2, retired = ?2"                  \
	    " WHERE name = ?1 AND state = 1")                                  \
	X(S_VER_SET_STATE,                                                     \
	    "UPDATE key_versions SET state = ?3"                               \
	    " WHERE name = ?1 AND version = ?2")                               \
	X(S_VER_DELETE,                                                        \
	    "DELETE FROM key_versions"                                         \
	    " WHERE name = ?1 AND version = ?2 AND state = 0")                 \
	X(S_PENDING_ALL,                                                       \
	    "SELECT v.name, v.version, v.ckaid, k.kind FROM key_versions v"    \
	    " JOIN keys k ON k.name = v.name WHERE v.state = 0"                \
	    " ORDER BY v.name, v.version")                                     \
	X(S_REVOKE_JTI,                                                        \
	    "INSERT INTO revoked_tokens (jti, exp, revoked) VALUES (?1, ?2, "  \
	    "?3)"                                                              \
	    " ON CONFLICT (jti) DO NOTHING")                                   \
	X(S_REVOKE_SUB,                                                        \
	    "INSERT INTO revoked_subjects (sub, before, until)"                \
	    " VALUES (?1, ?2, ?3) ON CONFLICT (sub) DO UPDATE"                 \
	    " SET before = max(before, excluded.before),"                      \
	    " until = max(until, excluded.until)")                             \
	X(S_REVOKED_JTIS,                                                      \
	    "SELECT jti, exp FROM revoked_tokens WHERE exp >= ?1")             \
	X(S_REVOKED_SUBS,                                                      \
	    "SELECT sub, before, until FROM revoked_subjects WHERE until >= "  \
	    "?1")                                                              \
	X(S_PURGE_JTIS, "DELETE FROM revoked_tokens WHERE exp < ?1")           \
	X(S_PURGE_SUBS, "DELETE FROM revoked_subjects WHERE until < ?1")       \
	X(S_CA_GET, "SELECT pem FROM ca_certs WHERE version = ?1")             \
	X(S_CA_PUT,                                                            \
	    "INSERT INTO ca_certs (version, pem) VALUES (?1, ?2)"              \
	    " ON CONFLICT (version) DO NOTHING")

#define STMT_ENUM(id, sql) id,
enum stmt_id { STATEMENTS(STMT_ENUM) S_COUNT };
#undef STMT_ENUM

#define STMT_SQL(id, sql) [id] = sql,
static const char *const stmt_sql[S_COUNT] = {STATEMENTS(STMT_SQL)};
#undef STMT_SQL

struct kwd_store {
	sqlite3 *db;
	sqlite3_stmt *stmt[S_COUNT];
	uint64_t used; /* statements to reset at the end of a transaction */
};

_Static_assert(S_COUNT <= 64, "struct kwd_store.used has 64 bits");

static const char *const state_names[] = {
    [KWD_KEY_PENDING] = "pending",
    [KWD_KEY_ACTIVE] = "active",
    [KWD_KEY_DECRYPT_ONLY] = "decrypt-only",
    [KWD_KEY_DISABLED] = "disabled",
    [KWD_KEY_DESTROYED] = "destroyed",
};

#define NSTATES (sizeof state_names / sizeof state_names[0])

const char *
kwd_key_state_name(enum kwd_key_state s)
{
	if ((unsigned)s >= NSTATES)
		return "invalid";
	return state_names[s];
}

int
kwd_key_state_parse(const char *s, enum kwd_key_state *ret)
{
	if (s == NULL || ret == NULL)
		return KW_ERR_INVALID;
	for (size_t i = 0; i < NSTATES; i++) {
		if (strcmp(s, state_names[i]) == 0) {
			*ret = (enum kwd_key_state)i;
			return KW_OK;
		}
	}
	return KW_ERR_INVALID;
}

/*
 * Map a SQLite result code to a KW_ERR_* and log it: every SQLite failure
 * that reaches here is unexpected. constraint_rv is what a constraint
 * violation means to the caller.
 */
static int
db_error_c(struct kwd_store *st, int rc, const char *op, int constraint_rv)
{
	const char *detail = st->db != NULL ? sqlite3_errmsg(st->db) : "";

	switch (rc & 0xff) {
	case SQLITE_FULL:
		kw_log(KW_LOG_ERR, "store.error",
		    "disk full: the change was not made; free space on the "
		    "database's file system",
		    KW_F("op", op), KW_F("code", rc),
		    KW_F("error", sqlite3_errstr(rc)));
		return KW_ERR_IO;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		kw_log(KW_LOG_WARN, "store.error",
		    "database locked by another connection: retry",
		    KW_F("op", op), KW_F("code", rc),
		    KW_F("error", sqlite3_errstr(rc)), KW_F("detail", detail));
		return KW_ERR_UNAVAILABLE;
	case SQLITE_NOTADB:
		kw_log(KW_LOG_ERR, "store.notadb",
		    "the database file is not a SQLite database: refusing it; "
		    "check the database path",
		    KW_F("op", op), KW_F("code", rc),
		    KW_F("error", sqlite3_errstr(rc)));
		return KW_ERR_IO;
	case SQLITE_CORRUPT:
		kw_log(KW_LOG_ERR, "store.corrupt",
		    "the database is corrupt: restore it from a backup",
		    KW_F("op", op), KW_F("code", rc),
		    KW_F("error", sqlite3_errstr(rc)), KW_F("detail", detail));
		return KW_ERR_IO;
	case SQLITE_NOMEM:
		kw_log(KW_LOG_ERR, "store.error", "out of memory",
		    KW_F("op", op), KW_F("code", rc));
		return KW_ERR_NOMEM;
	case SQLITE_CONSTRAINT:
		kw_log(KW_LOG_WARN, "store.error", "constraint violated",
		    KW_F("op", op), KW_F("code", rc),
		    KW_F("error", sqlite3_errstr(rc)), KW_F("detail", detail));
		return constraint_rv;
	case SQLITE_IOERR:
	case SQLITE_READONLY:
	case SQLITE_CANTOPEN:
	case SQLITE_PERM:
	case SQLITE_PROTOCOL:
		kw_log(KW_LOG_ERR, "store.error",
		    "database I/O failed: check the file, its directory and "
		    "the disk",
		    KW_F("op", op), KW_F("code", rc),
		    KW_F("error", sqlite3_errstr(rc)), KW_F("detail", detail));
		return KW_ERR_IO;
	default:
		kw_log(KW_LOG_ERR, "store.error", "unexpected SQLite error",
		    KW_F("op", op), KW_F("code", rc),
		    KW_F("error", sqlite3_errstr(rc)), KW_F("detail", detail));
		return KW_ERR_INTERNAL;
	}
}

static int
db_error(struct kwd_store *st, int rc, const char *op)
{
	return db_error_c(st, rc, op, KW_ERR_INTERNAL);
}

/* A row the schema should have refused: the file was edited or damaged. */
static int
bad_row(const char *what)
{
	kw_log(KW_LOG_ERR, "store.corrupt",
	    "a database row is out of range: restore it from a backup",
	    KW_F("what", what));
	return KW_ERR_IO;
}

/* A cached statement, reset and unbound. */
static sqlite3_stmt *
use(struct kwd_store *st, enum stmt_id id)
{
	sqlite3_stmt *s = st->stmt[id];

	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	st->used |= (uint64_t)1 << id;
	return s;
}

/*
 * Reset the statements used since the last call: a SELECT left on a row
 * would hold its read snapshot (and stop WAL checkpoints) past the call.
 */
static void
reset_all(struct kwd_store *st)
{
	for (unsigned i = 0; st->used != 0 && i < S_COUNT; i++) {
		if ((st->used & ((uint64_t)1 << i)) != 0) {
			sqlite3_reset(st->stmt[i]);
			sqlite3_clear_bindings(st->stmt[i]);
		}
	}
	st->used = 0;
}

static int
bind_text(struct kwd_store *st, sqlite3_stmt *s, int i, const char *v)
{
	int rc = sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);

	return rc == SQLITE_OK ? 0 : db_error(st, rc, "bind");
}

static int
bind_i64(struct kwd_store *st, sqlite3_stmt *s, int i, int64_t v)
{
	int rc = sqlite3_bind_int64(s, i, v);

	return rc == SQLITE_OK ? 0 : db_error(st, rc, "bind");
}

static int
bind_id(struct kwd_store *st, sqlite3_stmt *s, int i,
    const unsigned char id[KWD_STORE_ID_LEN])
{
	int rc =
	    sqlite3_bind_blob(s, i, id, KWD_STORE_ID_LEN, SQLITE_TRANSIENT);

	return rc == SQLITE_OK ? 0 : db_error(st, rc, "bind");
}

/* 1 for a row, 0 when done, or a negative KW_ERR_*. */
static int
step_c(struct kwd_store *st, sqlite3_stmt *s, const char *op, int constraint_rv)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return db_error_c(st, rc, op, constraint_rv);
}

static int
step(struct kwd_store *st, sqlite3_stmt *s, const char *op)
{
	return step_c(st, s, op, KW_ERR_INTERNAL);
}

/* Run every statement of a constant SQL text, ignoring rows. */
static int
exec_sql(struct kwd_store *st, const char *sql, const char *op)
{
	sqlite3_stmt *s = NULL;
	const char *tail = sql;
	int rc, rv = 0;

	while (*tail != '\0') {
		rc = sqlite3_prepare_v2(st->db, tail, -1, &s, &tail);
		if (rc != SQLITE_OK) {
			rv = db_error(st, rc, op);
			goto out;
		}
		if (s == NULL) /* only white space or a comment left */
			break;
		while ((rv = step(st, s, op)) == 1)
			;
		sqlite3_finalize(s);
		s = NULL;
		if (rv < 0)
			goto out;
	}
out:
	sqlite3_finalize(s);
	return rv;
}

/* The single integer a constant query returns (the first row's first). */
static int
query_i64(struct kwd_store *st, const char *sql, const char *op, int64_t *ret)
{
	sqlite3_stmt *s = NULL;
	int64_t v;
	int rc, rv;

	rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
	if (rc != SQLITE_OK) {
		rv = db_error(st, rc, op);
		goto out;
	}
	if ((rv = step(st, s, op)) < 0)
		goto out;
	if (rv == 0 || sqlite3_column_type(s, 0) != SQLITE_INTEGER) {
		kw_log(KW_LOG_ERR, "store.error", "query returned no integer",
		    KW_F("op", op));
		rv = KW_ERR_INTERNAL;
		goto out;
	}
	v = sqlite3_column_int64(s, 0);
	*ret = v;
	rv = 0;
out:
	sqlite3_finalize(s);
	return rv;
}

/*
 * Transactions. A write transaction starts with BEGIN IMMEDIATE so that
 * the write lock is taken up front: a deferred one could fail with
 * SQLITE_BUSY half way, after its reads. A read transaction gives the
 * statements of one call a single snapshot.
 */
static int
tx_begin(struct kwd_store *st, bool write)
{
	int rv;

	reset_all(st);
	if (!sqlite3_get_autocommit(st->db)) {
		/* A bug left a transaction open: do not build on it. */
		kw_log(KW_LOG_ERR, "store.error",
		    "transaction left open: rolling it back");
		if ((rv = step(st, use(st, S_ROLLBACK), "rollback")) < 0)
			return rv;
	}
	rv = step(st, use(st, write ? S_BEGIN_WRITE : S_BEGIN_READ), "begin");
	return rv < 0 ? rv : 0;
}

/*
 * End the transaction that tx_begin opened: commit if rv is 0, else roll
 * back. Returns rv, or the error of a failed commit. Some errors (full
 * disk, I/O, memory) make SQLite roll back on its own, hence the check.
 */
static int
tx_end(struct kwd_store *st, int rv)
{
	int rc;

	reset_all(st);
	if (sqlite3_get_autocommit(st->db))
		return rv;
	if (rv == 0) {
		rv = step(st, use(st, S_COMMIT), "commit");
		if (rv == 1)
			rv = 0;
		if (rv == 0 || sqlite3_get_autocommit(st->db))
			return rv;
	}
	rc = sqlite3_step(use(st, S_ROLLBACK));
	sqlite3_reset(st->stmt[S_ROLLBACK]);
	if (rc != SQLITE_DONE)
		(void)db_error(st, rc, "rollback");
	return rv;
}

/* Column readers that refuse values the schema should have refused. */
static int
col_u32(sqlite3_stmt *s, int i, uint32_t min, const char *what, uint32_t *ret)
{
	int64_t v;

	if (sqlite3_column_type(s, i) != SQLITE_INTEGER)
		return bad_row(what);
	v = sqlite3_column_int64(s, i);
	if (v < min || v > UINT32_MAX)
		return bad_row(what);
	*ret = (uint32_t)v;
	return 0;
}

static int
col_u64(sqlite3_stmt *s, int i, const char *what, uint64_t *ret)
{
	int64_t v;

	if (sqlite3_column_type(s, i) != SQLITE_INTEGER)
		return bad_row(what);
	v = sqlite3_column_int64(s, i);
	if (v < 0)
		return bad_row(what);
	*ret = (uint64_t)v;
	return 0;
}

static int
col_state(sqlite3_stmt *s, int i, enum kwd_key_state *ret)
{
	uint32_t v;

	if (col_u32(s, i, 0, "state", &v) < 0 || v >= NSTATES)
		return bad_row("state");
	*ret = (enum kwd_key_state)v;
	return 0;
}

static int
col_id(sqlite3_stmt *s, int i, unsigned char ret[KWD_STORE_ID_LEN])
{
	const void *p;

	if (sqlite3_column_type(s, i) != SQLITE_BLOB ||
	    sqlite3_column_bytes(s, i) != KWD_STORE_ID_LEN)
		return bad_row("ckaid");
	p = sqlite3_column_blob(s, i);
	if (p == NULL)
		return bad_row("ckaid");
	memcpy(ret, p, KWD_STORE_ID_LEN);
	return 0;
}

/* Names end up in HSM labels and logs: hold them to the canonical form
 * even when they come from the file. */
static int
col_name(sqlite3_stmt *s, int i, char ret[KW_NAME_MAX + 1])
{
	const unsigned char *p;
	int n;

	if (sqlite3_column_type(s, i) != SQLITE_TEXT)
		return bad_row("name");
	p = sqlite3_column_text(s, i);
	n = sqlite3_column_bytes(s, i);
	if (p == NULL || n < 1 || n > KW_NAME_MAX ||
	    !kw_name_valid_n((const char *)p, (size_t)n))
		return bad_row("name");
	memcpy(ret, p, (size_t)n);
	ret[n] = '\0';
	return 0;
}

static int64_t
now(void)
{
	time_t t = time(NULL);

	return t < 0 ? 0 : (int64_t)t;
}

/*
 * Make sure path is a regular file we may use before SQLite opens it.
 * A missing file is created here, mode 0600 whatever the umask (a umask
 * change around sqlite3_open_v2 would race with other threads), and its
 * directory fsynced so that the entry survives a power loss. SQLite gives
 * the -wal and -shm files it creates the mode of the database file.
 */
static int
sync_dir(const char *path)
{
	char *copy = NULL;
	int fd = -1, rv;

	if ((copy = strdup(path)) == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || (fsync(fd) < 0 && errno != EINVAL)) {
		kw_log(KW_LOG_ERR, "store.error",
		    "cannot sync the database directory", KW_F("path", path),
		    KW_F("errno", errno));
		rv = KW_ERR_IO;
		goto out;
	}
	rv = 0;
out:
	if (fd >= 0)
		close(fd);
	free(copy);
	return rv;
}

static int
check_file(const char *path)
{
	static const char magic[16] = "SQLite format 3";
	char head[sizeof magic], mode[8];
	struct stat sb;
	bool created = false;
	ssize_t n;
	int fd, rv;

	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd >= 0) {
		created = true;
		if (fchmod(fd, 0600) < 0) {
			kw_log(KW_LOG_ERR, "store.error",
			    "cannot set the database file mode",
			    KW_F("path", path), KW_F("errno", errno));
			rv = KW_ERR_IO;
			goto out;
		}
	} else if (errno == EEXIST) {
		fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	}
	if (fd < 0) {
		rv = errno == ELOOP ? KW_ERR_CONFIG : KW_ERR_IO;
		kw_log(KW_LOG_ERR, "store.open",
		    errno == ELOOP ? "the database path is a symbolic link: "
		                     "give the real path"
		                   : "cannot open the database file",
		    KW_F("path", path), KW_F("errno", errno));
		goto out;
	}
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		kw_log(KW_LOG_ERR, "store.open",
		    "the database path is not a regular file",
		    KW_F("path", path));
		rv = KW_ERR_CONFIG;
		goto out;
	}
	/* Whoever may write the file may change key states. */
	if ((sb.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		snprintf(mode, sizeof mode, "%04o",
		    (unsigned)sb.st_mode & 07777);
		kw_log(KW_LOG_ERR, "store.perm",
		    "the database file is writable by group or others: "
		    "chmod 600 it",
		    KW_F("path", path), KW_F("mode", mode));
		rv = KW_ERR_PERM;
		goto out;
	}
	/* An empty file is a new database; anything else must say SQLite,
	 * so that a wrong path fails here rather than in some SQLite call. */
	if (sb.st_size > 0) {
		n = pread(fd, head, sizeof head, 0);
		if (n != (ssize_t)sizeof head ||
		    memcmp(head, magic, sizeof magic) != 0) {
			kw_log(KW_LOG_ERR, "store.notadb",
			    "the database file is not a SQLite database: "
			    "refusing it; check the database path",
			    KW_F("path", path));
			rv = KW_ERR_IO;
			goto out;
		}
	}
	if (created && (rv = sync_dir(path)) < 0)
		goto out;
	rv = 0;
out:
	/* Closed before SQLite opens the file: closing any descriptor of a
	 * file drops every POSIX lock the process holds on it, SQLite's
	 * included. */
	if (fd >= 0)
		close(fd);
	return rv;
}

/*
 * Connection settings that are not stored in the file. DEFENSIVE,
 * trusted_schema off, no triggers and no views: a database file edited by
 * someone else cannot make our statements run code hidden in the schema;
 * no double-quoted string literals (a misspelt column stays an error).
 */
static int
configure(struct kwd_store *st)
{
	static const int off[] = {
	    SQLITE_DBCONFIG_TRUSTED_SCHEMA,
	    SQLITE_DBCONFIG_ENABLE_TRIGGER,
	    SQLITE_DBCONFIG_ENABLE_VIEW,
	    SQLITE_DBCONFIG_DQS_DML,
	    SQLITE_DBCONFIG_DQS_DDL,
	    SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION,
	};
	int rc;

	rc = sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS);
	if (rc != SQLITE_OK)
		return db_error(st, rc, "busy_timeout");
	rc = sqlite3_db_config(st->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	if (rc != SQLITE_OK)
		return db_error(st, rc, "db_config");
	for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) {
		rc = sqlite3_db_config(st->db, off[i], 0, NULL);
		if (rc != SQLITE_OK)
			return db_error(st, rc, "db_config");
	}
	return 0;
}

/*
 * PRAGMA quick_check: every b-tree page, cell and free list, in time
 * linear in the file size (metadata only: a few pages). It skips the
 * index-versus-table comparison of integrity_check.
 */
static int
check_integrity(struct kwd_store *st, const char *path)
{
	sqlite3_stmt *s = NULL;
	const unsigned char *msg;
	int rc, rv, nrows = 0;
	bool ok = false;

	rc = sqlite3_prepare_v2(st->db, "PRAGMA quick_check", -1, &s, NULL);
	if (rc != SQLITE_OK) {
		rv = db_error(st, rc, "quick_check");
		goto out;
	}
	while ((rv = step(st, s, "quick_check")) == 1) {
		msg = sqlite3_column_text(s, 0);
		if (nrows++ == 0 && msg != NULL &&
		    strcmp((const char *)msg, "ok") == 0) {
			ok = true;
			continue;
		}
		ok = false;
		if (nrows <= 3)
			kw_log(KW_LOG_ERR, "store.corrupt",
			    "database integrity check failed: restore it from "
			    "a backup",
			    KW_F("path", path),
			    KW_F("detail",
			        msg != NULL ? (const char *)msg : "(null)"));
	}
	if (rv < 0)
		goto out;
	rv = ok ? 0 : KW_ERR_IO;
out:
	sqlite3_finalize(s);
	return rv;
}

static int
set_pragmas(struct kwd_store *st)
{
	sqlite3_stmt *s = NULL;
	const unsigned char *mode;
	int64_t fk;
	int rc, rv;

	rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s,
	    NULL);
	if (rc != SQLITE_OK) {
		rv = db_error(st, rc, "journal_mode");
		goto out;
	}
	if ((rv = step(st, s, "journal_mode")) < 0)
		goto out;
	mode = rv == 1 ? sqlite3_column_text(s, 0) : NULL;
	if (mode == NULL || strcmp((const char *)mode, "wal") != 0) {
		kw_log(KW_LOG_ERR, "store.error",
		    "cannot put the database in WAL mode",
		    KW_F("mode", mode != NULL ? (const char *)mode : "(none)"));
		rv = KW_ERR_IO;
		goto out;
	}
	/* FULL: the WAL is fsynced at every commit, so an acknowledged change
	 * survives power loss (NORMAL would only keep it consistent). */
	rv = exec_sql(st,
	    "PRAGMA synchronous = FULL;"
	    "PRAGMA foreign_keys = ON;"
	    "PRAGMA trusted_schema = OFF;"
	    "PRAGMA cell_size_check = ON;",
	    "pragma");
	if (rv < 0)
		goto out;
	/* A build without foreign keys ignores the pragma silently. */
	if ((rv = query_i64(st, "PRAGMA foreign_keys", "pragma", &fk)) < 0)
		goto out;
	if (fk != 1) {
		kw_log(KW_LOG_ERR, "store.error",
		    "this SQLite does not enforce foreign keys");
		rv = KW_ERR_CONFIG;
		goto out;
	}
	rv = 0;
out:
	sqlite3_finalize(s);
	return rv;
}

/*
 * The schema version, 0 for an empty database. A database with tables but
 * no schema_version, or a schema_version without exactly one row, is not
 * one of ours (or was edited): refused.
 */
static int
schema_version(struct kwd_store *st, const char *path, int64_t *ret)
{
	int64_t n, v;
	int rv;

	rv = query_i64(st,
	    "SELECT count(*) FROM sqlite_schema"
	    " WHERE type = 'table' AND name = 'schema_version'",
	    "schema_version", &n);
	if (rv < 0)
		return rv;
	if (n == 0) {
		rv = query_i64(st, "SELECT count(*) FROM sqlite_schema",
		    "schema_version", &n);
		if (rv < 0)
			return rv;
		if (n != 0) {
			kw_log(KW_LOG_ERR, "store.foreign",
			    "the database has tables but no schema_version: "
			    "it is not a keyward store",
			    KW_F("path", path));
			return KW_ERR_CONFIG;
		}
		*ret = 0;
		return 0;
	}
	rv = query_i64(st, "SELECT count(*) FROM schema_version",
	    "schema_version", &n);
	if (rv < 0)
		return rv;
	if (n == 1)
		rv = query_i64(st, "SELECT version FROM schema_version",
		    "schema_version", &v);
	if (rv < 0)
		return rv;
	if (n != 1 || v < 1) {
		kw_log(KW_LOG_ERR, "store.error",
		    "schema_version must hold one positive version",
		    KW_F("path", path), KW_F("rows", (long long)n));
		return KW_ERR_CONFIG;
	}
	*ret = v;
	return 0;
}

static int
set_schema_version(struct kwd_store *st, int64_t version)
{
	sqlite3_stmt *s = NULL;
	int rc, rv;

	rv = exec_sql(st,
	    "CREATE TABLE IF NOT EXISTS schema_version"
	    " (version INTEGER NOT NULL) STRICT;"
	    "DELETE FROM schema_version;",
	    "schema_version");
	if (rv < 0)
		goto out;
	rc = sqlite3_prepare_v2(st->db,
	    "INSERT INTO schema_version (version) VALUES (?1)", -1, &s, NULL);
	if (rc != SQLITE_OK) {
		rv = db_error(st, rc, "schema_version");
		goto out;
	}
	if ((rv = bind_i64(st, s, 1, version)) < 0)
		goto out;
	if ((rv = step(st, s, "schema_version")) < 0)
		goto out;
	rv = 0;
out:
	sqlite3_finalize(s);
	return rv;
}

/* The rollback after a failed migration step; its own error is logged. */
static void
rollback_raw(struct kwd_store *st)
{
	if (!sqlite3_get_autocommit(st->db))
		(void)exec_sql(st, "ROLLBACK", "rollback");
}

static int
migrate(struct kwd_store *st, const char *path)
{
	int64_t v;
	int rv;

	for (;;) {
		if ((rv = exec_sql(st, "BEGIN IMMEDIATE", "migrate")) < 0)
			goto out;
		/* Read inside the transaction: another process may have
		 * migrated since. */
		if ((rv = schema_version(st, path, &v)) < 0)
			goto out;
		if (v > SCHEMA_LATEST) {
			kw_log(KW_LOG_ERR, "store.schema_newer",
			    "the database was written by a newer keyward: "
			    "upgrade keyward or restore an older database",
			    KW_F("path", path), KW_F("version", (long long)v),
			    KW_F("supported", (long long)SCHEMA_LATEST));
			rv = KW_ERR_CONFIG;
			goto out;
		}
		if (v == SCHEMA_LATEST)
			break;
		if ((rv = exec_sql(st, migrations[v], "migrate")) < 0 ||
		    (rv = set_schema_version(st, v + 1)) < 0 ||
		    (rv = exec_sql(st, "COMMIT", "migrate")) < 0)
			goto out;
		kw_log(KW_LOG_INFO, "store.migrate", "schema migrated",
		    KW_F("path", path), KW_F("from", (long long)v),
		    KW_F("to", (long long)(v + 1)));
	}
	rv = exec_sql(st, "COMMIT", "migrate");
out:
	if (rv < 0)
		rollback_raw(st);
	return rv;
}

int
kwd_store_open(const char *path, struct kwd_store **ret_store)
{
	struct kwd_store *st = NULL;
	int rc, rv;

	if (path == NULL || *path == '\0' || ret_store == NULL)
		return KW_ERR_INVALID;
	if (sodium_init() < 0) {
		kw_log(KW_LOG_ERR, "store.error", "libsodium failed to start");
		return KW_ERR_CRYPTO;
	}
	if ((rv = check_file(path)) < 0)
		goto out;
	if ((st = calloc(1, sizeof *st)) == NULL) {
		rv = KW_ERR_NOMEM;
		goto out;
	}
	/*
	 * No SQLITE_OPEN_CREATE: check_file made the file with the right
	 * mode, and if it vanished since, SQLite must not recreate it with
	 * the umask's. NOFOLLOW: no symbolic link as the final component.
	 */
	rc = sqlite3_open_v2(path, &st->db,
	    SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX |
	        SQLITE_OPEN_EXRESCODE | SQLITE_OPEN_NOFOLLOW,
	    NULL);
	if (rc != SQLITE_OK) {
		rv = db_error(st, rc, "open");
		goto out;
	}
	/* SQLite falls back to read-only when it cannot write the file;
	 * better to fail now than at the first rotation. */
	if (sqlite3_db_readonly(st->db, "main") != 0) {
		kw_log(KW_LOG_ERR, "store.open",
		    "the database can only be opened read-only: check the "
		    "file system and the file's owner",
		    KW_F("path", path));
		rv = KW_ERR_IO;
		goto out;
	}
	if ((rv = configure(st)) < 0 || (rv = check_integrity(st, path)) < 0 ||
	    (rv = set_pragmas(st)) < 0 || (rv = migrate(st, path)) < 0)
		goto out;
	for (size_t i = 0; i < S_COUNT; i++) {
		rc = sqlite3_prepare_v3(st->db, stmt_sql[i], -1,
		    SQLITE_PREPARE_PERSISTENT, &st->stmt[i], NULL);
		if (rc != SQLITE_OK) {
			rv = db_error(st, rc, "prepare");
			goto out;
		}
	}
	kw_log(KW_LOG_INFO, "store.open", "key store open", KW_F("path", path),
	    KW_F("schema", (long long)SCHEMA_LATEST));
	*ret_store = st;
	st = NULL;
	rv = 0;
out:
	kwd_store_free(st);
	return rv;
}

void
kwd_store_free(struct kwd_store *st)
{
	if (st == NULL)
		return;
	for (size_t i = 0; i < S_COUNT; i++)
		sqlite3_finalize(st->stmt[i]);
	/* The last connection to close checkpoints the WAL into the file. */
	if (sqlite3_close(st->db) != SQLITE_OK)
		kw_log(KW_LOG_ERR, "store.error", "closing the database failed",
		    KW_F("error", sqlite3_errmsg(st->db)));
	free(st);
}

/* The version's state; KW_ERR_NOT_FOUND if there is no such version. */
static int
version_state(struct kwd_store *st, const char *name, uint32_t version,
    enum kwd_key_state *ret)
{
	sqlite3_stmt *s = use(st, S_VER_STATE);
	int rv;

	if ((rv = bind_text(st, s, 1, name)) < 0 ||
	    (rv = bind_i64(st, s, 2, version)) < 0 ||
	    (rv = step(st, s, "version state")) < 0)
		return rv;
	if (rv == 0)
		return KW_ERR_NOT_FOUND;
	return col_state(s, 0, ret);
}

/* One integer column of the first row of a cached statement bound to
 * name; 0 if there is no row. */
static int
name_u32(struct kwd_store *st, enum stmt_id id, const char *name,
    const char *op, uint32_t *ret)
{
	sqlite3_stmt *s = use(st, id);
	int rv;

	if ((rv = bind_text(st, s, 1, name)) < 0 || (rv = step(st, s, op)) < 0)
		return rv;
	if (rv == 0) {
		*ret = 0;
		return 0;
	}
	return col_u32(s, 0, 0, op, ret);
}

static int
key_exists(struct kwd_store *st, const char *name, bool *ret,
    enum kwd_key_kind *ret_kind)
{
	sqlite3_stmt *s = use(st, S_KEY_KIND);
	uint32_t kind = 0;
	int rv;

	if ((rv = bind_text(st, s, 1, name)) < 0 ||
	    (rv = step(st, s, "key lookup")) < 0)
		return rv;
	*ret = rv == 1;
	if (rv == 1 && (rv = col_u32(s, 0, 0, "kind", &kind)) < 0)
		return rv;
	*ret_kind = (enum kwd_key_kind)kind;
	return 0;
}

int
kwd_store_version_begin(struct kwd_store *st, const char *name, bool create,
    uint64_t rotation_period, uint32_t *ret_version,
    unsigned char ret_ckaid[KWD_STORE_ID_LEN])
{
	return kwd_store_version_begin_kind(st, name, KWD_KIND_KEK, create,
	    rotation_period, ret_version, ret_ckaid);
}

int
kwd_store_version_begin_kind(struct kwd_store *st, const char *name,
    enum kwd_key_kind kind, bool create, uint64_t rotation_period,
    uint32_t *ret_version, unsigned char ret_ckaid[KWD_STORE_ID_LEN])
{
	enum kwd_key_kind have = KWD_KIND_KEK;
	unsigned char ckaid[KWD_STORE_ID_LEN];
	sqlite3_stmt *s;
	uint32_t max, pending, version = 0;
	int64_t t = now();
	bool exists;
	int rv;

	if (st == NULL || !kw_name_valid(name) || ret_version == NULL ||
	    ret_ckaid == NULL || (create && rotation_period > INT64_MAX) ||
	    (kind != KWD_KIND_KEK && kind != KWD_KIND_SIGNER))
		return KW_ERR_INVALID;
	if ((rv = tx_begin(st, true)) < 0)
		goto out;
	if ((rv = key_exists(st, name, &exists, &have)) < 0)
		goto out;
	if (create && exists) {
		rv = KW_ERR_EXISTS;
		goto out;
	}
	/* A key of the other kind is not this key. */
	if (!create && (!exists || have != kind)) {
		rv = KW_ERR_NOT_FOUND;
		goto out;
	}
	rv = name_u32(st, S_VER_PENDING, name, "pending lookup", &pending);
	if (rv < 0)
		goto out;
	if (pending != 0) {
		kw_log(KW_LOG_DEBUG, "store.busy",
		    "a new version of this key is already in flight",
		    KW_F("key", name), KW_F("pending", pending));
		rv = KW_ERR_UNAVAILABLE;
		goto out;
	}
	if (create) {
		s = use(st, S_KEY_INSERT);
		if ((rv = bind_text(st, s, 1, name)) < 0 ||
		    (rv = bind_i64(st, s, 2, t)) < 0 ||
		    (rv = bind_i64(st, s, 3, (int64_t)rotation_period)) < 0 ||
		    (rv = bind_i64(st, s, 4, (int64_t)kind)) < 0 ||
		    (rv = step_c(st, s, "key insert", KW_ERR_EXISTS)) < 0)
			goto out;
	}
	if ((rv = name_u32(st, S_VER_MAX, name, "version max", &max)) < 0)
		goto out;
	/* struct kwd_key holds at most KWD_STORE_MAX_VERSIONS versions. */
	if (max >= KWD_STORE_MAX_VERSIONS) {
		kw_log(KW_LOG_WARN, "store.too_many_versions",
		    "the key has reached the maximum number of versions",
		    KW_F("key", name), KW_F("max", KWD_STORE_MAX_VERSIONS));
		rv = KW_ERR_TOO_LARGE;
		goto out;
	}
	version = max + 1;
	randombytes_buf(ckaid, sizeof ckaid);
	s = use(st, S_VER_INSERT);
	if ((rv = bind_text(st, s, 1, name)) < 0 ||
	    (rv = bind_i64(st, s, 2, version)) < 0 ||
	    (rv = bind_id(st, s, 3, ckaid)) < 0 ||
	    (rv = bind_i64(st, s, 4, t)) < 0 ||
	    (rv = step_c(st, s, "version insert", KW_ERR_UNAVAILABLE)) < 0)
		goto out;
	rv = 0;
out:
	rv = tx_end(st, rv);
	if (rv == 0) {
		kw_log(KW_LOG_DEBUG, "store.version_begin",
		    "new version pending", KW_F("key", name),
		    KW_F("version", version));
		*ret_version = version;
		memcpy(ret_ckaid, ckaid, KWD_STORE_ID_LEN);
	}
	return rv;
}

/*
 * Open a write transaction on a version that must be PENDING: the start
 * of both commit and abandon. The caller ends the transaction either way.
 */
static int
pending_begin(struct kwd_store *st, const char *name, uint32_t version,
    const char *what)
{
	enum kwd_key_state state;
	int rv;

	if ((rv = tx_begin(st, true)) < 0)
		return rv;
	if ((rv = version_state(st, name, version, &state)) < 0)
		return rv;
	if (state != KWD_KEY_PENDING) {
		kw_log(KW_LOG_DEBUG, "store.refused",
		    "the version is not pending", KW_F("what", what),
		    KW_F("key", name), KW_F("version", version),
		    KW_F("state", kwd_key_state_name(state)));
		return KW_ERR_INVALID;
	}
	return 0;
}

int
kwd_store_version_commit(struct kwd_store *st, const char *name,
    uint32_t version)
{
	sqlite3_stmt *s;
	int rv;

	if (st == NULL || !kw_name_valid(name) || version == 0)
		return KW_ERR_INVALID;
	if ((rv = pending_begin(st, name, version, "commit")) < 0)
		goto out;
	/* Demote first: the partial unique index allows one ACTIVE row. */
	s = use(st, S_VER_DEMOTE);
	if ((rv = bind_text(st, s, 1, name)) < 0 ||
	    (rv = bind_i64(st, s, 2, now())) < 0 ||
	    (rv = step(st, s, "version demote")) < 0)
		goto out;
	s = use(st, S_VER_SET_STATE);
	if ((rv = bind_text(st, s, 1, name)) < 0 ||
	    (rv = bind_i64(st, s, 2, version)) < 0 ||
	    (rv = bind_i64(st, s, 3, KWD_KEY_ACTIVE)) < 0 ||
	    (rv = step(st, s, "version activate")) < 0)
		goto out;
	rv = 0;
out:
	rv = tx_end(st, rv);
	if (rv == 0)
		kw_log(KW_LOG_DEBUG, "store.version_commit", "version active",
		    KW_F("key", name), KW_F("version", version));
	return rv;
}

int
kwd_store_version_abandon(struct kwd_store *st, const char *name,
    uint32_t version)
{
	sqlite3_stmt *s;
	uint32_t left;
	int rv;

	if (st == NULL || !kw_name_valid(name) || version == 0)
		return KW_ERR_INVALID;
	if ((rv = pending_begin(st, name, version, "abandon")) < 0)
		goto out;
	s = use(st, S_VER_DELETE);
	if ((rv = bind_text(st, s, 1, name)) < 0 ||
	    (rv = bind_i64(st, s, 2, version)) < 0 ||
	    (rv = step(st, s, "version delete")) < 0)
		goto out;
	if ((rv = name_u32(st, S_VER_COUNT, name, "version count", &left)) < 0)
		goto out;
	if (left == 0) {
		s = use(st, S_KEY_DELETE);
		if ((rv = bind_text(st, s, 1, name)) < 0 ||
		    (rv = step(st, s, "key delete")) < 0)
			goto out;
	}
	rv = 0;
out:
	rv = tx_end(st, rv);
	if (rv == 0)
		kw_log(KW_LOG_DEBUG, "store.version_abandon",
		    "pending version dropped", KW_F("key", name),
		    KW_F("version", version));
	return rv;
}

/* Grow *list (of *cap elements of size sz) to hold n + 1 elements. */
static int
grow(void **list, size_t *cap, size_t n, size_t sz)
{
	size_t ncap;
	void *p;

	if (n < *cap)
		return 0;
	ncap = *cap == 0 ? 16 : *cap * 2;
	if (ncap > SIZE_MAX / sz)
		return KW_ERR_NOMEM;
	if ((p = realloc(*list, ncap * sz)) == NULL)
		return KW_ERR_NOMEM;
	*list = p;
	*cap = ncap;
	return 0;
}

int
kwd_store_pending(struct kwd_store *st, struct kwd_pending **ret_list,
    size_t *ret_n)
{
	struct kwd_pending *list = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *s;
	uint32_t kind;
	int rv;

	if (st == NULL || ret_list == NULL || ret_n == NULL)
		return KW_ERR_INVALID;
	if ((rv = tx_begin(st, false)) < 0)
		goto out;
	s = use(st, S_PENDING_ALL);
	while ((rv = step(st, s, "pending list")) == 1) {
		if ((rv = grow((void **)&list, &cap, n, sizeof *list)) < 0)
			goto out;
		memset(&list[n], 0, sizeof list[n]);
		if ((rv = col_name(s, 0, list[n].name)) < 0 ||
		    (rv = col_u32(s, 1, 1, "version", &list[n].version)) < 0 ||
		    (rv = col_id(s, 2, list[n].ckaid)) < 0 ||
		    (rv = col_u32(s, 3, 0, "kind", &kind)) < 0)
			goto out;
		if (kind > KWD_KIND_SIGNER) {
			rv = bad_row("kind");
			goto out;
		}
		list[n].kind = (enum kwd_key_kind)kind;
		n++;
	}
out:
	rv = tx_end(st, rv);
	if (rv == 0) {
		*ret_list = list;
		*ret_n = n;
		list = NULL;
	}
	free(list);
	return rv;
}

/* Fill key (name, settings, versions but pending) inside a transaction. */
static int
load_key(struct kwd_store *st, const char *name, struct kwd_key *key)
{
	struct kwd_key_version *v;
	sqlite3_stmt *s = use(st, S_KEY_GET);
	uint32_t kind;
	int rv;

	if ((rv = bind_text(st, s, 1, name)) < 0 ||
	    (rv = step(st, s, "key get")) < 0)
		return rv;
	if (rv == 0)
		return KW_ERR_NOT_FOUND;
	if ((rv = col_u64(s, 0, "created", &key->created)) < 0 ||
	    (rv = col_u32(s, 1, 1, "min_decrypt_version",
	         &key->min_decrypt_version)) < 0 ||
	    (rv = col_u64(s, 2, "rotation_period", &key->rotation_period)) <
	        0 ||
	    (rv = col_u32(s, 3, 0, "kind", &kind)) < 0)
		return rv;
	if (kind > KWD_KIND_SIGNER)
		return bad_row("kind");
	key->kind = (enum kwd_key_kind)kind;
	snprintf(key->name, sizeof key->name, "%s", name);
	key->active = 0;
	key->nversions = 0;
	s = use(st, S_VER_LIST);
	if ((rv = bind_text(st, s, 1, name)) < 0)
		return rv;
	while ((rv = step(st, s, "version list")) == 1) {
		if (key->nversions == KWD_STORE_MAX_VERSIONS)
			return bad_row("too many versions");
		v = &key->versions[key->nversions];
		if ((rv = col_u32(s, 0, 1, "version", &v->version)) < 0 ||
		    (rv = col_state(s, 1, &v->state)) < 0 ||
		    (rv = col_u64(s, 2, "created", &v->created)) < 0 ||
		    (rv = col_id(s, 3, v->ckaid)) < 0 ||
		    (rv = col_u64(s, 4, "retired", &v->retired)) < 0)
			return rv;
		if (v->state == KWD_KEY_ACTIVE) {
			if (key->active != 0)
				return bad_row("two active versions");
			key->active = v->version;
		}
		key->nversions++;
	}
	if (rv < 0)
		return rv;
	/* Only a PENDING version: the creation is in flight. */
	if (key->nversions == 0)
		return KW_ERR_NOT_FOUND;
	return 0;
}

int
kwd_store_key_get(struct kwd_store *st, const char *name,
    struct kwd_key *ret_key)
{
	struct kwd_key *key = NULL;
	int rv;

	if (st == NULL || !kw_name_valid(name) || ret_key == NULL)
		return KW_ERR_INVALID;
	/* Built aside so that ret_key is written only on success; only the
	 * part in use is copied (the keeper reads keys on its request path). */
	if ((key = malloc(sizeof *key)) == NULL)
		return KW_ERR_NOMEM;
	if ((rv = tx_begin(st, false)) < 0)
		goto out;
	rv = load_key(st, name, key);
out:
	rv = tx_end(st, rv);
	if (rv == 0)
		memcpy(ret_key, key,
		    offsetof(struct kwd_key, versions) +
		        key->nversions * sizeof key->versions[0]);
	free(key);
	return rv;
}

int
kwd_store_key_list(struct kwd_store *st, struct kwd_key_summary **ret_list,
    size_t *ret_n)
{
	return kwd_store_key_list_kind(st, KWD_KIND_KEK, ret_list, ret_n);
}

int
kwd_store_key_list_kind(struct kwd_store *st, enum kwd_key_kind kind,
    struct kwd_key_summary **ret_list, size_t *ret_n)
{
	struct kwd_key_summary *list = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *s;
	int rv;

	if (st == NULL || ret_list == NULL || ret_n == NULL)
		return KW_ERR_INVALID;
	if ((rv = tx_begin(st, false)) < 0)
		goto out;
	s = use(st, S_KEY_LIST);
	if ((rv = bind_i64(st, s, 1, (int64_t)kind)) < 0)
		goto out;
	while ((rv = step(st, s, "key list")) == 1) {
		if ((rv = grow((void **)&list, &cap, n, sizeof *list)) < 0)
			goto out;
		memset(&list[n], 0, sizeof list[n]);
		if ((rv = col_name(s, 0, list[n].name)) < 0 ||
		    (rv = col_u32(s, 1, 0, "active", &list[n].active)) < 0)
			goto out;
		n++;
	}
out:
	rv = tx_end(st, rv);
	if (rv == 0) {
		*ret_list = list;
		*ret_n = n;
		list = NULL;
	}
	free(list);
	return rv;
}

static int
refuse(const char *name, const char *why)
{
	kw_log(KW_LOG_DEBUG, "store.refused", why, KW_F("key", name));
	return KW_ERR_INVALID;
}

int
kwd_store_key_patch(struct kwd_store *st, const char *name,
    uint32_t min_decrypt_version, uint64_t rotation_period, uint32_t version,
    enum kwd_key_state state)
{
	struct kwd_key *key = NULL;
	enum kwd_key_state cur;
	sqlite3_stmt *s;
	int rv;

	if (st == NULL || !kw_name_valid(name))
		return KW_ERR_INVALID;
	if (rotation_period != UINT64_MAX && rotation_period > INT64_MAX)
		return refuse(name, "rotation period out of range");
	if (version != 0 && state != KWD_KEY_DECRYPT_ONLY &&
	    state != KWD_KEY_DISABLED)
		return refuse(name,
		    "a version can only be made decrypt-only or disabled");
	if ((key = calloc(1, sizeof *key)) == NULL)
		return KW_ERR_NOMEM;
	/* Every check below runs inside the transaction that makes the
	 * changes: all of them apply, or none. */
	if ((rv = tx_begin(st, true)) < 0)
		goto out;
	if ((rv = load_key(st, name, key)) < 0)
		goto out;
	/* PATCH is the KEK API: a signing key is not found there. */
	if (key->kind != KWD_KIND_KEK) {
		rv = KW_ERR_NOT_FOUND;
		goto out;
	}
	if (min_decrypt_version != 0 && min_decrypt_version > key->active) {
		rv = refuse(name,
		    "min_decrypt_version may not exceed the active version");
		goto out;
	}
	if (version != 0) {
		if ((rv = version_state(st, name, version, &cur)) < 0)
			goto out;
		if (cur == KWD_KEY_ACTIVE) {
			rv = refuse(name,
			    "the active version cannot change state: rotate "
			    "first");
			goto out;
		}
		if (cur == KWD_KEY_PENDING || cur == KWD_KEY_DESTROYED) {
			rv = refuse(name,
			    "a pending or destroyed version cannot change "
			    "state");
			goto out;
		}
		s = use(st, S_VER_SET_STATE);
		if ((rv = bind_text(st, s, 1, name)) < 0 ||
		    (rv = bind_i64(st, s, 2, version)) < 0 ||
		    (rv = bind_i64(st, s, 3, state)) < 0 ||
		    (rv = step(st, s, "version state")) < 0)
			goto out;
	}
	if (min_decrypt_version != 0) {
		s = use(st, S_KEY_SET_MIN);
		if ((rv = bind_text(st, s, 1, name)) < 0 ||
		    (rv = bind_i64(st, s, 2, min_decrypt_version)) < 0 ||
		    (rv = step(st, s, "key min_decrypt_version")) < 0)
			goto out;
	}
	if (rotation_period != UINT64_MAX) {
		s = use(st, S_KEY_SET_PERIOD);
		if ((rv = bind_text(st, s, 1, name)) < 0 ||
		    (rv = bind_i64(st, s, 2, (int64_t)rotation_period)) < 0 ||
		    (rv = step(st, s, "key rotation_period")) < 0)
			goto out;
	}
	rv = 0;
out:
	rv = tx_end(st, rv);
	free(key);
	return rv;
}

/* ---- token revocations ---- */

int
kwd_store_revoke_jti(struct kwd_store *st, const char *jti, uint64_t exp)
{
	sqlite3_stmt *s;
	size_t len;
	int rv;

	if (st == NULL || jti == NULL || (len = strlen(jti)) == 0 || len > 64 ||
	    exp > INT64_MAX)
		return KW_ERR_INVALID;
	if ((rv = tx_begin(st, true)) < 0)
		goto out;
	s = use(st, S_REVOKE_JTI);
	if ((rv = bind_text(st, s, 1, jti)) < 0 ||
	    (rv = bind_i64(st, s, 2, (int64_t)exp)) < 0 ||
	    (rv = bind_i64(st, s, 3, now())) < 0 ||
	    (rv = step(st, s, "revoke jti")) < 0)
		goto out;
	rv = 0;
out:
	return tx_end(st, rv);
}

int
kwd_store_revoke_sub(struct kwd_store *st, const char *sub, uint64_t before,
    uint64_t until)
{
	sqlite3_stmt *s;
	size_t len;
	int rv;

	if (st == NULL || sub == NULL || (len = strlen(sub)) == 0 ||
	    len > 1024 || before > INT64_MAX || until > INT64_MAX)
		return KW_ERR_INVALID;
	if ((rv = tx_begin(st, true)) < 0)
		goto out;
	s = use(st, S_REVOKE_SUB);
	if ((rv = bind_text(st, s, 1, sub)) < 0 ||
	    (rv = bind_i64(st, s, 2, (int64_t)before)) < 0 ||
	    (rv = bind_i64(st, s, 3, (int64_t)until)) < 0 ||
	    (rv = step(st, s, "revoke sub")) < 0)
		goto out;
	rv = 0;
out:
	return tx_end(st, rv);
}

int
kwd_store_revocations(struct kwd_store *st, uint64_t now_s,
    kwd_store_revocation_fn fn, void *arg)
{
	sqlite3_stmt *s;
	uint64_t a, b;
	const char *text;
	int rv;

	if (st == NULL || fn == NULL || now_s > INT64_MAX)
		return KW_ERR_INVALID;
	if ((rv = tx_begin(st, true)) < 0)
		goto out;
	/* Entries past their end can no longer matter: dropped here, in the
	 * same transaction that reads the others. */
	s = use(st, S_PURGE_JTIS);
	if ((rv = bind_i64(st, s, 1, (int64_t)now_s)) < 0 ||
	    (rv = step(st, s, "purge jtis")) < 0)
		goto out;
	s = use(st, S_PURGE_SUBS);
	if ((rv = bind_i64(st, s, 1, (int64_t)now_s)) < 0 ||
	    (rv = step(st, s, "purge subs")) < 0)
		goto out;
	s = use(st, S_REVOKED_JTIS);
	if ((rv = bind_i64(st, s, 1, (int64_t)now_s)) < 0)
		goto out;
	while ((rv = step(st, s, "revoked jtis")) == 1) {
		text = (const char *)sqlite3_column_text(s, 0);
		if (text == NULL || (rv = col_u64(s, 1, "exp", &a)) < 0) {
			rv = rv < 0 ? rv : bad_row("jti");
			goto out;
		}
		if ((rv = fn(arg, text, NULL, a, 0)) < 0)
			goto out;
	}
	if (rv < 0)
		goto out;
	s = use(st, S_REVOKED_SUBS);
	if ((rv = bind_i64(st, s, 1, (int64_t)now_s)) < 0)
		goto out;
	while ((rv = step(st, s, "revoked subs")) == 1) {
		text = (const char *)sqlite3_column_text(s, 0);
		if (text == NULL || (rv = col_u64(s, 1, "before", &a)) < 0 ||
		    (rv = col_u64(s, 2, "until", &b)) < 0) {
			rv = rv < 0 ? rv : bad_row("sub");
			goto out;
		}
		if ((rv = fn(arg, NULL, text, b, a)) < 0)
			goto out;
	}
	if (rv < 0)
		goto out;
	rv = 0;
out:
	return tx_end(st, rv);
}

/* ---- CA certificates ---- */

int
kwd_store_ca_get(struct kwd_store *st, uint32_t version, char **ret_pem)
{
	const unsigned char *text;
	sqlite3_stmt *s;
	char *pem = NULL;
	int rv;

	if (st == NULL || version == 0 || ret_pem == NULL)
		return KW_ERR_INVALID;
	if ((rv = tx_begin(st, false)) < 0)
		goto out;
	s = use(st, S_CA_GET);
	if ((rv = bind_i64(st, s, 1, version)) < 0 ||
	    (rv = step(st, s, "ca get")) < 0)
		goto out;
	if (rv == 0) {
		rv = KW_ERR_NOT_FOUND;
		goto out;
	}
	text = sqlite3_column_text(s, 0);
	if (text == NULL) {
		rv = bad_row("ca pem");
		goto out;
	}
	pem = strdup((const char *)text);
	rv = pem != NULL ? 0 : KW_ERR_NOMEM;
out:
	rv = tx_end(st, rv);
	if (rv == 0)
		*ret_pem = pem;
	else
		free(pem);
	return rv;
}

int
kwd_store_ca_put(struct kwd_store *st, uint32_t version, const char *pem)
{
	sqlite3_stmt *s;
	int rv;

	if (st == NULL || version == 0 || pem == NULL || pem[0] == '\0' ||
	    strlen(pem) > 16384)
		return KW_ERR_INVALID;
	if ((rv = tx_begin(st, true)) < 0)
		goto out;
	s = use(st, S_CA_PUT);
	if ((rv = bind_i64(st, s, 1, version)) < 0 ||
	    (rv = bind_text(st, s, 2, pem)) < 0 ||
	    (rv = step(st, s, "ca put")) < 0)
		goto out;
	rv = 0;
out:
	return tx_end(st, rv);
}

/* store_fixture.h — what the store's test suites share: an admin
 * connection to the PostgreSQL cluster named by SETTLED_TEST_PG (make unit
 * starts one through tests/with-services), a database of the test's own on
 * it and its URL, and the kv table every store test writes to, with put and
 * count. Used by test_store.c, test_store_pg.c, test_worker_effects.c and
 * ledger_fixture.h. Header-only and static inline: each test file is its
 * own program and uses a part. */
#ifndef SETTLED_STORE_FIXTURE_H
#define SETTLED_STORE_FIXTURE_H

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"

static inline void sfx_quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

static inline PGconn *sfx_pg_admin(void)
{
	PGconn *c = PQconnectdb(getenv("SETTLED_TEST_PG"));

	cr_assert(PQstatus(c) == CONNECTION_OK, "SETTLED_TEST_PG: %s", PQerrorMessage(c));
	PQsetNoticeProcessor(c, sfx_quiet, NULL);
	return c;
}

static inline void sfx_pg_admin_exec(const char *sql)
{
	PGconn *c = sfx_pg_admin();
	PGresult *r = PQexec(c, sql);

	cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s",
		  sql, PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
}

/* The admin URL with its database replaced by db (URI or key=value form). */
static inline void sfx_url_with_db(const char *admin, const char *db, char *out, size_t size)
{
	const char *scheme = strstr(admin, "://");
	const char *path, *query;

	if (!scheme) {
		snprintf(out, size, "%s dbname=%s", admin, db);
		return;
	}
	path = scheme + 3 + strcspn(scheme + 3, "/?");
	query = strchr(path, '?');
	snprintf(out, size, "%.*s/%s%s", (int)(path - admin), admin, db, query ? query : "");
}

/* A new database on the SETTLED_TEST_PG cluster, named prefix_<pid>_<random>
 * (test processes share the cluster): its name in db, a URL
 * for it in url. sfx_pg_drop_db drops it. */
static inline void sfx_pg_create_db(const char *prefix, char *db, size_t db_size, char *url,
				    size_t url_size)
{
	char sql[160];

	snprintf(db, db_size, "%s_%d_%u", prefix, (int)getpid(), (unsigned)rand());
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
	sfx_pg_admin_exec(sql);
	sfx_url_with_db(getenv("SETTLED_TEST_PG"), db, url, url_size);
}

/* Drops database db if it is there, whoever is still connected to it. */
static inline void sfx_pg_drop_db(const char *db)
{
	char sql[160];

	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
	sfx_pg_admin_exec(sql);
}

/* How many deadlocks PostgreSQL has found in database db so far. A
 * backend's counters reach the statistics when it flushes them (when it
 * goes idle or ends), so a count read at once may still be short. */
static inline int64_t sfx_pg_deadlocks(const char *db)
{
	PGconn *c = sfx_pg_admin();
	char sql[200];
	PGresult *r;
	int64_t n;

	r = PQexec(c, "SELECT pg_stat_force_next_flush()");
	PQclear(r);
	snprintf(sql, sizeof(sql), "SELECT deadlocks FROM pg_stat_database WHERE datname = '%s'", db);
	r = PQexec(c, sql);
	cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
	n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	PQfinish(c);
	return n;
}

static inline enum st_rc sfx_create_kv(struct tx *tx, void *arg)
{
	(void)arg;
	return tx_exec(tx,
		       "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT,"
		       " n BIGINT NOT NULL DEFAULT 0 CHECK (n >= 0))",
		       ST_NOARGS, NULL);
}

/* One kv row (k, v = k). */
static inline enum st_rc sfx_insert(struct tx *tx, const char *k)
{
	return tx_exec(tx, "INSERT INTO kv (k, v) VALUES ($1, $1)", ST_ARGS(SV_S(k)), NULL);
}

static inline enum st_rc sfx_put_unit(struct tx *tx, void *arg)
{
	return sfx_insert(tx, arg);
}

static inline void sfx_put(struct store *s, const char *k)
{
	cr_assert_eq(store_run(s, sfx_put_unit, (void *)k), ST_OK, "put %s", k);
}

struct sfx_int_q {
	const char *sql;   /* a string literal (statements are cached by address) */
	const char *param; /* bound as $1 when not NULL */
	int64_t v;
};

static inline enum st_rc sfx_int_unit(struct tx *tx, void *arg)
{
	struct sfx_int_q *q = arg;
	struct st_rows *r = NULL;
	enum st_rc rc = q->param ? tx_query(tx, q->sql, ST_ARGS(SV_S(q->param)), &r)
				 : tx_query(tx, q->sql, ST_NOARGS, &r);

	if (rc)
		return rc;
	q->v = rows_i64(r, 0, 0);
	rows_free(r);
	return ST_OK;
}

/* The first cell of sql's first row as an integer (0 when NULL or no row),
 * read through store_read. */
static inline int64_t sfx_int(struct store *s, const char *sql, const char *param)
{
	struct sfx_int_q q = { sql, param, 0 };
	enum st_rc rc = store_read(s, sfx_int_unit, &q);

	cr_assert_eq(rc, ST_OK, "%s: %s", sql, st_rc_str(rc));
	return q.v;
}

struct sfx_count_q {
	const char *k; /* NULL: all rows */
	int64_t n;
};

/* Rows of kv with key k (NULL: all), inside a unit of the caller's. */
static inline enum st_rc sfx_count_unit(struct tx *tx, void *arg)
{
	struct sfx_count_q *c = arg;
	struct sfx_int_q q = { c->k ? "SELECT count(*) FROM kv WHERE k = $1" : "SELECT count(*) FROM kv",
			       c->k, 0 };
	enum st_rc rc = sfx_int_unit(tx, &q);

	c->n = q.v;
	return rc;
}

/* Rows with key k (NULL: all), read through store_read. */
static inline int64_t sfx_count(struct store *s, const char *k)
{
	struct sfx_count_q q = { .k = k };

	cr_assert_eq(store_read(s, sfx_count_unit, &q), ST_OK);
	return q.n;
}

/* Units that ask a one-statement read (store_read_one) for more than its
 * one statement, which it must refuse with ST_INTERNAL: test_store.c
 * (SQLite) and test_store_pg.c each run them. arg is the count each one
 * asks for (a struct sfx_count_q): two statements of it, or it inside a
 * savepoint. */
static inline enum st_rc sfx_two_statements_read(struct tx *tx, void *arg)
{
	enum st_rc rc = sfx_count_unit(tx, arg);

	if (rc)
		return rc;
	return sfx_count_unit(tx, arg);
}

static inline enum st_rc sfx_nested_read(struct tx *tx, void *arg)
{
	return tx_nested(tx, sfx_count_unit, arg);
}

/* A statement held back for the next one (tx_exec_deferred): a second. */
static inline enum st_rc sfx_deferred_read(struct tx *tx, void *arg)
{
	(void)arg;
	return tx_exec_deferred(tx, "SELECT 1", ST_NOARGS);
}

/* A statement that fails with serialization_failure (40001): PostgreSQL
 * only, for the store's retry rules. */
static inline enum st_rc sfx_raise_40001(struct tx *tx, void *arg)
{
	(void)arg;
	return tx_exec(tx,
		       "DO $$ BEGIN RAISE EXCEPTION 'test conflict' USING ERRCODE = 'serialization_failure'; END $$",
		       ST_NOARGS, NULL);
}

static inline void sfx_need_backend(const struct store *s)
{
	if (!s)
		cr_skip_test("SETTLED_TEST_PG is not set: run under tests/with-services (make unit does)");
}

#endif

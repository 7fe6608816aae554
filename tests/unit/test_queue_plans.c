/* test_queue_plans.c — the queue's hot statements on both stores: the
 * lease fence of every write a lease holder makes, and the plans the
 * claim and the completions get on a table shaped like a busy one (many
 * completed rows kept for their retention, a few due, some running).
 *
 * The plans are read with EXPLAIN (PostgreSQL) and EXPLAIN QUERY PLAN
 * (SQLite) of the very statement texts queue.c runs, with statistics
 * taken by ANALYZE and autovacuum off for the table, so the plan depends
 * on nothing but the data the test wrote. What is asserted is the access
 * path, never a time: a completion that reads the jobs_running partial
 * index end to end (every running job's row visited to find its ids), a
 * claim that joins against a sequential scan of the whole table, are what
 * queue.md "Claiming" says the statements no longer do. Skipped on
 * PostgreSQL without SETTLED_TEST_PG (make unit runs under
 * tests/with-services). */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue.h"
#include "store.h"

#include "ledger_fixture.h"

#include "banned.h"

#define LEASE_MS 30000

struct claim_arg {
	const char *owner;
	int max;
	struct job jobs[256];
	int n;
};

static enum st_rc claim_unit(struct tx *tx, void *arg)
{
	struct claim_arg *c = arg;

	return queue_claim(tx, "plans", c->max, c->owner, LEASE_MS, c->jobs, &c->n);
}

/* Claims up to max due jobs of queue "plans" under owner; their ids in ids. */
static int claim(const char *owner, int max, int64_t *ids)
{
	static struct claim_arg c; /* 256 jobs: too large for the stack */

	memset(&c, 0, sizeof(c));
	c.owner = owner;
	c.max = max;
	cr_assert_eq(store_run(F.s, claim_unit, &c), ST_OK);
	for (int i = 0; i < c.n; i++) {
		ids[i] = c.jobs[i].id;
		job_release(&c.jobs[i]);
	}
	return c.n;
}

/* 3,000 completed jobs (a day's retention), 1,000 due ones, statistics
 * taken with autovacuum off for the table, then 256 claimed under owner
 * "plans#1" (their ids in ids). */
static void busy_table(int64_t *ids)
{
#define GEN(n) "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < " #n ")"
	cr_assert_eq(RAW(GEN(3000) " INSERT INTO jobs (queue, kind, payload, state, run_at, created_at,"
				   " updated_at, finished_at) SELECT 'plans', 'noop', '{}', 'completed', 1, 1,"
				   " 1, 1 FROM g",
			 GEN(1000) " INSERT INTO jobs (queue, kind, payload, state, run_at, created_at,"
				   " updated_at) SELECT 'plans', 'noop', '{}', 'available', 1, 1, 1 FROM g"),
		     ST_OK);
#undef GEN
	if (F.d == ST_PG)
		cr_assert_eq(RAW("ALTER TABLE jobs SET (autovacuum_enabled = false)", "ANALYZE jobs"), ST_OK);
	else
		cr_assert_eq(RAW("ANALYZE"), ST_OK);
	cr_assert_eq(claim("plans#1", 256, ids), 256);
}

struct plan_q {
	const char *sql; /* stable storage: the store caches statements by address */
	int n;
	const struct st_val *v;
	char out[8192];
};

static enum st_rc plan_unit(struct tx *tx, void *arg)
{
	struct plan_q *q = arg;
	struct st_rows *r = NULL;
	int col = F.d == ST_PG ? 0 : 3; /* SQLite: id, parent, notused, detail */
	size_t len = 0;
	enum st_rc rc = tx_query(tx, q->sql, q->n, q->v, &r);

	if (rc)
		return rc;
	q->out[0] = 0;
	for (int i = 0; i < r->nrows && len < sizeof(q->out); i++) {
		int w = snprintf(q->out + len, sizeof(q->out) - len, "%s\n", rows_text(r, i, col));

		if (w < 0)
			break;
		len += (size_t)w;
	}
	rows_free(r);
	return ST_OK;
}

/* The plan of sql with its parameters, one line a plan node, into q->out. */
static void explain(struct plan_q *q, char *buf, size_t size, const char *sql, int n,
		    const struct st_val *v)
{
	snprintf(buf, size, "%s %s", F.d == ST_PG ? "EXPLAIN" : "EXPLAIN QUERY PLAN", sql);
	q->sql = buf;
	q->n = n;
	q->v = v;
	cr_assert_eq(store_run(F.s, plan_unit, q), ST_OK, "%s", buf);
}

/* PostgreSQL's claim: the due rows locked and gathered once, then found by
 * primary key; not `id IN (SELECT ...)`, planned as a hash semi-join over
 * a sequential scan of every row of the table. */
BOTH(queue_plans, the_claim_finds_its_rows_by_primary_key)
{
	static char sql[4096];
	static struct plan_q q;
	int64_t ids[256];
	struct st_val v[5] = { SV_S("plans"), SV_S("plans#2"), SV_I(FX_NOW0 + LEASE_MS), SV_I(FX_NOW0),
			       SV_I(256) };

	busy_table(ids);
	if (F.d != ST_PG)
		return; /* SQLite claims with a SELECT and an UPDATE by rowid (queue.c) */
	explain(&q, sql, sizeof(sql), queue_claim_pg_sql, 5, v);
	cr_assert_null(strstr(q.out, "Seq Scan"), "claim plan:\n%s", q.out);
	cr_assert_not_null(strstr(q.out, "Index Scan using jobs_pkey on jobs "), "claim plan:\n%s", q.out);
	cr_assert_not_null(strstr(q.out, "jobs_ready"), "claim plan:\n%s", q.out);
}

/* The completions name the running jobs by their lease, not by the state
 * literal: the ids are looked up in the primary key (SQLite: the rowid),
 * and the jobs_running index, which holds every running job, is not read. */
BOTH(queue_plans, completions_find_their_jobs_by_primary_key)
{
	static char sql_one[2048], sql_many[2048];
	static struct plan_q one, many;
	int64_t ids[256];
	char list[64];

	busy_table(ids);
	{
		struct st_val v[3] = { SV_I(ids[7]), SV_S("plans#1"), SV_I(FX_NOW0) };

		explain(&one, sql_one, sizeof(sql_one), queue_complete_sql, 3, v);
	}
	cr_assert_null(strstr(one.out, "jobs_running"), "completion plan:\n%s", one.out);
	cr_assert_not_null(strstr(one.out, F.d == ST_PG ? "jobs_pkey" : "INTEGER PRIMARY KEY"),
			   "completion plan:\n%s", one.out);
	if (F.d != ST_PG)
		return; /* SQLite's queue_complete_many: json_each into the rowid (queue.c) */
	snprintf(list, sizeof(list), "{%lld,%lld,%lld}", (long long)ids[0], (long long)ids[1],
		 (long long)ids[2]);
	{
		struct st_val v[3] = { SV_S("plans#1"), SV_S(list), SV_I(FX_NOW0) };

		explain(&many, sql_many, sizeof(sql_many), queue_complete_many_pg_sql, 3, v);
	}
	cr_assert_null(strstr(many.out, "jobs_running"), "completion plan:\n%s", many.out);
	cr_assert_not_null(strstr(many.out, "jobs_pkey"), "completion plan:\n%s", many.out);
}

/* ---- the lease fence, as the statements now spell it ------------------ */

struct fence_arg {
	const int64_t *ids;
	int n;
	const char *owner;
	bool done[8];
	enum st_rc rc;
};

static enum st_rc complete_many_unit(struct tx *tx, void *arg)
{
	struct fence_arg *a = arg;

	return queue_complete_many(tx, a->owner, a->ids, a->n, a->done);
}

static enum st_rc complete_unit(struct tx *tx, void *arg)
{
	struct fence_arg *a = arg;

	return queue_complete(tx, a->ids[0], a->owner);
}

static enum st_rc fail_unit(struct tx *tx, void *arg)
{
	struct fence_arg *a = arg;

	return queue_fail(tx, a->ids[0], a->owner, "boom", 0, false, NULL);
}

static enum st_rc release_unit(struct tx *tx, void *arg)
{
	struct fence_arg *a = arg;

	return queue_release(tx, a->ids[0], a->owner);
}

static enum st_rc sweep_all_unit(struct tx *tx, void *arg)
{
	(void)arg;
	return queue_sweep_leases(tx, 1000, true, NULL, NULL, NULL, NULL);
}

static enum st_rc run1(store_unit_fn *fn, int64_t id, const char *owner)
{
	struct fence_arg a = { .ids = &id, .n = 1, .owner = owner };

	return store_run(F.s, fn, &a);
}

static int64_t state_count(const char *state)
{
	static const char *const sql[] = {
		"SELECT count(*) FROM jobs WHERE queue = 'plans' AND state = 'available'",
		"SELECT count(*) FROM jobs WHERE queue = 'plans' AND state = 'running'",
		"SELECT count(*) FROM jobs WHERE queue = 'plans' AND state = 'completed'",
		"SELECT count(*) FROM jobs WHERE queue = 'plans' AND state = 'dead'",
	};
	int s = job_state_parse(state);

	cr_assert(s >= 0);
	return fx_int(sql[s], NULL);
}

/* Only the current lease holder completes, fails or hands back a job: not
 * another claim's owner, not after the job was completed, handed back or
 * swept. Each refusal changes nothing. */
BOTH(queue_plans, only_the_lease_holder_writes_its_job)
{
	int64_t a[4], b[2];
	struct fence_arg many = { .owner = "plans#1" };

	cr_assert_eq(RAW("INSERT INTO jobs (queue, kind, payload, state, run_at, created_at, updated_at)"
			 " VALUES ('plans', 'noop', '{}', 'available', 1, 1, 1),"
			 " ('plans', 'noop', '{}', 'available', 1, 1, 1),"
			 " ('plans', 'noop', '{}', 'available', 1, 1, 1),"
			 " ('plans', 'noop', '{}', 'available', 1, 1, 1),"
			 " ('plans', 'noop', '{}', 'available', 1, 1, 1),"
			 " ('plans', 'noop', '{}', 'available', 1, 1, 1)"),
		     ST_OK);
	cr_assert_eq(claim("plans#1", 4, a), 4);
	cr_assert_eq(claim("plans#2", 4, b), 2);

	/* Another claim's owner is refused everywhere. */
	cr_assert_eq(run1(complete_unit, a[0], "plans#2"), ST_CONFLICT);
	cr_assert_eq(run1(fail_unit, a[0], "plans#2"), ST_CONFLICT);
	cr_assert_eq(run1(release_unit, a[0], "plans#2"), ST_CONFLICT);
	many.ids = (int64_t[]){ a[0], a[1], b[0] };
	many.n = 3;
	cr_assert_eq(store_run(F.s, complete_many_unit, &many), ST_OK);
	cr_assert(many.done[0] && many.done[1] && !many.done[2]); /* b[0] is plans#2's */
	cr_assert_eq(state_count("running"), 4);
	cr_assert_eq(state_count("completed"), 2);

	/* Completed: no second completion, failure or hand-back. */
	cr_assert_eq(run1(complete_unit, a[0], "plans#1"), ST_CONFLICT);
	cr_assert_eq(run1(fail_unit, a[1], "plans#1"), ST_CONFLICT);
	cr_assert_eq(run1(release_unit, a[1], "plans#1"), ST_CONFLICT);
	many.ids = (int64_t[]){ a[0], a[1] };
	many.n = 2;
	cr_assert_eq(store_run(F.s, complete_many_unit, &many), ST_OK);
	cr_assert(!many.done[0] && !many.done[1]);

	/* Handed back: available, no lease; the old owner is refused. */
	cr_assert_eq(run1(release_unit, a[2], "plans#1"), ST_OK);
	cr_assert_eq(run1(complete_unit, a[2], "plans#1"), ST_CONFLICT);
	cr_assert_eq(run1(fail_unit, a[2], "plans#1"), ST_CONFLICT);
	cr_assert_eq(state_count("available"), 1);

	/* Swept (its lease taken back as a lost worker's): the same. */
	cr_assert_eq(store_run(F.s, sweep_all_unit, NULL), ST_OK);
	cr_assert_eq(run1(complete_unit, a[3], "plans#1"), ST_CONFLICT);
	cr_assert_eq(run1(fail_unit, b[1], "plans#2"), ST_CONFLICT);
	many.ids = (int64_t[]){ a[3] };
	many.n = 1;
	cr_assert_eq(store_run(F.s, complete_many_unit, &many), ST_OK);
	cr_assert(!many.done[0]);
	cr_assert_eq(state_count("running"), 0);
	cr_assert_eq(state_count("completed"), 2);
	cr_assert_eq(state_count("available"), 4);

	/* Claimed again: the new owner completes, fails, hands back. */
	{
		int64_t c[4];

		cr_assert_eq(claim("plans#3", 4, c), 4);
		cr_assert_eq(run1(complete_unit, c[0], "plans#3"), ST_OK);
		cr_assert_eq(run1(fail_unit, c[1], "plans#3"), ST_OK);
		cr_assert_eq(run1(release_unit, c[2], "plans#3"), ST_OK);
	}
	cr_assert_eq(state_count("completed"), 3);
	cr_assert_eq(state_count("running"), 1);
}

/* PostgreSQL's purge of completed jobs: the ids gathered once and found by
 * primary key, as the claim; and it deletes what is due, oldest first,
 * and nothing else (both stores). */
static enum st_rc purge_unit(struct tx *tx, void *arg)
{
	int64_t *deleted = arg;

	return queue_purge_completed(tx, 2, 500, deleted);
}

BOTH(queue_plans, the_purge_finds_its_rows_by_primary_key)
{
	static char sql[2048];
	static struct plan_q q;
	int64_t ids[256], deleted = 0;
	struct st_val v[2] = { SV_I(2), SV_I(500) };

	busy_table(ids); /* 3,000 completed with finished_at 1 */
	cr_assert_eq(RAW("UPDATE jobs SET finished_at = 5 WHERE state = 'completed' AND id > 2900"), ST_OK);
	if (F.d == ST_PG) {
		explain(&q, sql, sizeof(sql), queue_purge_pg_sql, 2, v);
		cr_assert_null(strstr(q.out, "Seq Scan"), "purge plan:\n%s", q.out);
		cr_assert_not_null(strstr(q.out, "Index Scan using jobs_pkey on jobs "), "purge plan:\n%s",
				   q.out);
	}
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(store_run(F.s, purge_unit, &deleted), ST_OK);
		cr_assert_eq(deleted, 500);
	}
	cr_assert_eq(store_run(F.s, purge_unit, &deleted), ST_OK);
	cr_assert_eq(deleted, 400); /* the 100 finished at 5 are not due */
	cr_assert_eq(state_count("completed"), 100);
	cr_assert_eq(state_count("running"), 256);
	cr_assert_eq(state_count("available"), 1000 - 256);
}

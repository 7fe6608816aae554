/* test_store_pg.c — the PostgreSQL store's pipelining.
 *
 * A unit's BEGIN, SAVEPOINT and RELEASE SAVEPOINT are held back and sent in
 * one pipeline with the next statement (or COMMIT), so an error can now
 * come back for a command the unit never waited on. These tests pin down
 * that every such error is still attributed and handled as when each
 * command was its own round trip: failures in a unit's first statement
 * (which carries BEGIN) and in a nested step (which carries its SAVEPOINT),
 * serialization retries, connections found dead by the first pipeline or
 * lost later, read transactions keeping one snapshot, and savepoints that
 * never reach the server. test_store.c holds the contract both backends
 * share. Runs on a fresh database of the cluster named by SETTLED_TEST_PG
 * (`make unit` starts one through tests/with-services); skipped without. */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"
#include "store_fixture.h"

#include "banned.h"

static struct store *S;
static char pg_db[64];
static char pg_url[2048];

/* ---- fixture ----------------------------------------------------------- */

static void setup(void)
{
	const char *admin = getenv("SETTLED_TEST_PG");
	struct store_options o = { 0 };
	struct buf err = BUF_INIT(4096);
	enum st_rc rc;

	S = NULL;
	if (!admin || !*admin)
		return; /* the test body skips */
	sfx_pg_create_db("t_pgpipe", pg_db, sizeof(pg_db), pg_url, sizeof(pg_url));
	o.database_url = pg_url;
	rc = store_open(&o, &S, &err);
	cr_assert_eq(rc, ST_OK, "store_open: %s (%s)", st_rc_str(rc), err.ptr);
	buf_release(&err);
	cr_assert_eq(store_run(S, sfx_create_kv, NULL), ST_OK);
}

static void teardown(void)
{
	store_close(S);
	S = NULL;
	if (pg_db[0])
		sfx_pg_drop_db(pg_db);
}

#define PG_TEST(name) Test(store_pg, name, .init = setup, .fini = teardown, .timeout = 60)

static void need_backend(void)
{
	sfx_need_backend(S);
}

/* ---- helpers ----------------------------------------------------------- */

static enum st_rc insert(struct tx *tx, const char *k)
{
	return sfx_insert(tx, k);
}

static void put(const char *k)
{
	sfx_put(S, k);
}

static int64_t count(const char *k)
{
	return sfx_count(S, k);
}

/* Ends every server connection to the test database but the caller's. */
static void kill_backends(void)
{
	char sql[256];

	snprintf(sql, sizeof(sql),
		 "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
		 " WHERE datname = '%s' AND pid <> pg_backend_pid()",
		 pg_db);
	sfx_pg_admin_exec(sql);
	usleep(100000); /* let the FATAL messages arrive */
}

/* ---- a unit's first statement carries its BEGIN ------------------------ */

static enum st_rc first_fails_unit(struct tx *tx, void *arg)
{
	enum st_rc *seen = arg;

	*seen = insert(tx, "taken");
	if (*seen)
		return *seen;
	return insert(tx, "never");
}

PG_TEST(failing_first_statement_is_its_own_error)
{
	enum st_rc seen = ST_OK;

	need_backend();
	put("taken");
	cr_assert_eq(store_run(S, first_fails_unit, &seen), ST_UNIQUE);
	cr_assert_eq(seen, ST_UNIQUE);
	cr_assert_eq(count("never"), 0);
	/* Every pooled connection is usable afterwards. */
	for (int i = 0; i < 20; i++) {
		char k[32];

		snprintf(k, sizeof(k), "after%02d", i);
		put(k);
	}
	cr_assert_eq(count(NULL), 21);
}

static enum st_rc first_check_unit(struct tx *tx, void *arg)
{
	(void)arg;
	return tx_exec(tx, "INSERT INTO kv (k, n) VALUES ($1, $2)", ST_ARGS(SV_S("neg"), SV_I(-1)), NULL);
}

PG_TEST(failing_first_statement_maps_constraints)
{
	need_backend();
	cr_assert_eq(store_run(S, first_check_unit, NULL), ST_CONFLICT);
	cr_assert_eq(count("neg"), 0);
}

/* A unit that never reaches the server commits (or fails) without a
 * transaction: nothing held back is sent. */
static enum st_rc empty_unit(struct tx *tx, void *arg)
{
	(void)tx;
	return *(enum st_rc *)arg;
}

PG_TEST(unit_without_statements_needs_no_transaction)
{
	enum st_rc ok = ST_OK, nf = ST_NOT_FOUND;

	need_backend();
	for (int i = 0; i < 20; i++) {
		cr_assert_eq(store_run(S, empty_unit, &ok), ST_OK);
		cr_assert_eq(store_run(S, empty_unit, &nf), ST_NOT_FOUND);
	}
	put("still_fine");
	cr_assert_eq(count(NULL), 1);
}

/* ---- deferred statements (tx_exec_deferred) ---------------------------- */

static enum st_rc defer_insert(struct tx *tx, const char *k)
{
	return tx_exec_deferred(tx, "INSERT INTO kv (k, v) VALUES ($1, $1)", ST_ARGS(SV_S(k)));
}

/* A deferred statement is not sent when the unit asks for it: its failure
 * (a key that exists) comes back from the next statement, with its own rc,
 * and the unit rolls back as a whole. */
static enum st_rc defer_then_select_unit(struct tx *tx, void *arg)
{
	enum st_rc *seen = arg;
	struct st_rows *r = NULL;

	seen[0] = defer_insert(tx, "d_new");
	if (seen[0] == ST_OK)
		seen[0] = defer_insert(tx, "d_old");
	if (seen[0])
		return seen[0];
	seen[1] = tx_query(tx, "SELECT 1", ST_NOARGS, &r);
	rows_free(r);
	return seen[1];
}

PG_TEST(deferred_statement_fails_with_the_next_one)
{
	enum st_rc seen[2] = { ST_INTERNAL, ST_INTERNAL };

	need_backend();
	put("d_old");
	cr_assert_eq(store_run(S, defer_then_select_unit, seen), ST_UNIQUE);
	cr_assert_eq(seen[0], ST_OK, "deferred, not run: %s", st_rc_str(seen[0]));
	cr_assert_eq(seen[1], ST_UNIQUE, "the next statement reports it: %s", st_rc_str(seen[1]));
	cr_assert_eq(count("d_new"), 0);
	cr_assert_eq(count(NULL), 1);
}

/* A unit of deferred statements only: they ride with its COMMIT, and one
 * that fails there fails the unit alone, with its own rc. */
static enum st_rc only_deferred_unit(struct tx *tx, void *arg)
{
	const char *const *keys = arg;
	enum st_rc rc = ST_OK;

	for (int i = 0; keys[i] && rc == ST_OK; i++)
		rc = defer_insert(tx, keys[i]);
	return rc;
}

PG_TEST(deferred_statements_ride_with_the_commit)
{
	const char *const ok[] = { "c1", "c2", "c3", NULL };
	const char *const dup[] = { "c4", "c2", NULL };

	need_backend();
	cr_assert_eq(store_run(S, only_deferred_unit, (void *)ok), ST_OK);
	cr_assert_eq(count(NULL), 3);
	cr_assert_eq(store_run(S, only_deferred_unit, (void *)dup), ST_UNIQUE);
	cr_assert_eq(count("c4"), 0, "the failed unit's other statement rolled back");
	put("after"); /* the connection is usable: the aborted transaction ended */
	cr_assert_eq(count(NULL), 4);
}

/* A nested step that fails takes its unsent deferred statements with it
 * (a failing one must not fail the unit), whether its SAVEPOINT was sent
 * or not. */
static enum st_rc defer_dup_step(struct tx *tx, void *arg)
{
	bool sent = *(bool *)arg;
	enum st_rc rc = ST_OK;

	if (sent)
		rc = insert(tx, "n_step"); /* sends the SAVEPOINT */
	if (rc == ST_OK)
		rc = defer_insert(tx, "n_old");
	return rc ? rc : ST_CONFLICT; /* the step refuses */
}

static enum st_rc defer_nested_unit(struct tx *tx, void *arg)
{
	enum st_rc rc = insert(tx, (*(bool *)arg) ? "n_unit1" : "n_unit0");

	if (rc)
		return rc;
	rc = tx_nested(tx, defer_dup_step, arg);
	if (rc != ST_CONFLICT)
		return ST_INTERNAL;
	return defer_insert(tx, (*(bool *)arg) ? "n_after1" : "n_after0");
}

PG_TEST(failed_nested_step_drops_its_deferred_statements)
{
	bool sent = false;

	need_backend();
	put("n_old");
	cr_assert_eq(store_run(S, defer_nested_unit, &sent), ST_OK);
	sent = true;
	cr_assert_eq(store_run(S, defer_nested_unit, &sent), ST_OK);
	cr_assert_eq(count("n_unit0"), 1);
	cr_assert_eq(count("n_after0"), 1);
	cr_assert_eq(count("n_unit1"), 1);
	cr_assert_eq(count("n_after1"), 1);
	cr_assert_eq(count("n_step"), 0);
	cr_assert_eq(count(NULL), 5);
}

/* ---- nested steps carry their SAVEPOINT -------------------------------- */

static enum st_rc nested_dup(struct tx *tx, void *arg)
{
	(void)arg;
	return insert(tx, "dup"); /* the nested step's first statement */
}

static enum st_rc nested_ok(struct tx *tx, void *arg)
{
	return insert(tx, arg);
}

struct nest_res {
	enum st_rc first, second, third;
};

/* tx_nested first thing in the unit: BEGIN, SAVEPOINT and the failing
 * INSERT all travel in one pipeline. */
static enum st_rc nested_first_unit(struct tx *tx, void *arg)
{
	struct nest_res *r = arg;

	r->first = tx_nested(tx, nested_dup, NULL);
	r->second = tx_nested(tx, nested_ok, (void *)"n1");
	r->third = tx_nested(tx, nested_dup, NULL);
	return insert(tx, "outer");
}

PG_TEST(nested_unique_violation_recovers_with_deferred_begin)
{
	struct nest_res r = { ST_OK, ST_INTERNAL, ST_OK };

	need_backend();
	put("dup");
	cr_assert_eq(store_run(S, nested_first_unit, &r), ST_OK);
	cr_assert_eq(r.first, ST_UNIQUE);
	cr_assert_eq(r.second, ST_OK);
	cr_assert_eq(r.third, ST_UNIQUE);
	cr_assert_eq(count("n1"), 1);
	cr_assert_eq(count("outer"), 1);
	cr_assert_eq(count(NULL), 3);
}

/* A nested step that fails its own way, without touching the server: its
 * SAVEPOINT never needs to be sent, nor its ROLLBACK TO or RELEASE. */
static enum st_rc nested_refuses(struct tx *tx, void *arg)
{
	(void)tx;
	(void)arg;
	return ST_NOT_FOUND;
}

static enum st_rc nested_nothing(struct tx *tx, void *arg)
{
	(void)tx;
	(void)arg;
	return ST_OK;
}

static enum st_rc quiet_nested_unit(struct tx *tx, void *arg)
{
	struct nest_res *r = arg;
	enum st_rc rc = insert(tx, "a");

	if (rc)
		return rc;
	r->first = tx_nested(tx, nested_refuses, NULL);
	r->second = tx_nested(tx, nested_nothing, NULL);
	rc = insert(tx, "b");
	if (rc)
		return rc;
	r->third = tx_nested(tx, nested_refuses, NULL);
	return ST_OK; /* COMMIT goes out with nothing held back that matters */
}

PG_TEST(nested_step_that_sends_nothing)
{
	struct nest_res r = { ST_OK, ST_INTERNAL, ST_OK };

	need_backend();
	cr_assert_eq(store_run(S, quiet_nested_unit, &r), ST_OK);
	cr_assert_eq(r.first, ST_NOT_FOUND);
	cr_assert_eq(r.second, ST_OK);
	cr_assert_eq(r.third, ST_NOT_FOUND);
	cr_assert_eq(count(NULL), 2);
}

/* Savepoints deeper than the held-back queue (16) with nothing between
 * them: the queue flushes on its own, the innermost work is kept or undone
 * as asked, and the RELEASEs of every level still go out with COMMIT. */
struct deep {
	int level, depth;
	int fail_at;      /* the level whose step fails after its insert; 0 none */
	enum st_rc rcs[32];
};

static enum st_rc deep_step(struct tx *tx, void *arg)
{
	struct deep *d = arg;
	int level = ++d->level;
	enum st_rc rc = ST_OK;
	char k[32];

	if (level < d->depth)
		d->rcs[level] = tx_nested(tx, deep_step, d);
	snprintf(k, sizeof(k), "lvl%02d", level);
	if (level == d->depth || level == d->fail_at)
		rc = insert(tx, k);
	if (!rc && level == d->fail_at)
		rc = ST_CONFLICT;
	return rc;
}

static enum st_rc deep_unit(struct tx *tx, void *arg)
{
	struct deep *d = arg;

	d->level = 0;
	d->rcs[0] = tx_nested(tx, deep_step, d);
	return insert(tx, "top");
}

PG_TEST(deep_savepoints_overflow_the_queue)
{
	struct deep d = { .depth = 24 };

	need_backend();
	cr_assert_eq(store_run(S, deep_unit, &d), ST_OK);
	for (int i = 0; i < d.depth; i++)
		cr_assert_eq(d.rcs[i], ST_OK, "level %d", i + 1);
	cr_assert_eq(count("lvl24"), 1);
	cr_assert_eq(count("top"), 1);
	cr_assert_eq(count(NULL), 2);
}

static enum st_rc deep_fail_unit(struct tx *tx, void *arg)
{
	struct deep *d = arg;

	d->level = 0;
	d->rcs[0] = tx_nested(tx, deep_step, d);
	return insert(tx, "top2");
}

PG_TEST(deep_savepoint_failure_undoes_only_its_levels)
{
	struct deep d = { .depth = 24, .fail_at = 20 };

	need_backend();
	cr_assert_eq(store_run(S, deep_fail_unit, &d), ST_OK);
	cr_assert_eq(d.rcs[19], ST_CONFLICT, "level 20 failed");
	for (int i = 0; i < 19; i++)
		cr_assert_eq(d.rcs[i], ST_OK, "level %d", i + 1);
	cr_assert_eq(count("lvl20"), 0);
	cr_assert_eq(count("lvl24"), 0);
	cr_assert_eq(count("top2"), 1);
	cr_assert_eq(count(NULL), 1);
}

/* After a swallowed failure PostgreSQL refuses SAVEPOINT: the unit hears
 * it from tx_nested at once (the step does not run), as before. */
struct after_abort {
	enum st_rc nested;
	bool ran;
};

static enum st_rc mark_ran(struct tx *tx, void *arg)
{
	(void)tx;
	((struct after_abort *)arg)->ran = true;
	return ST_OK;
}

static enum st_rc nested_after_abort_unit(struct tx *tx, void *arg)
{
	struct after_abort *a = arg;

	(void)insert(tx, "dup"); /* ST_UNIQUE, ignored: the transaction is aborted */
	a->nested = tx_nested(tx, mark_ran, a);
	return ST_OK;
}

PG_TEST(savepoint_after_a_failure_is_refused_at_once)
{
	struct after_abort a = { ST_OK, false };

	need_backend();
	put("dup");
	cr_assert_eq(store_run(S, nested_after_abort_unit, &a), ST_INTERNAL);
	cr_assert_neq(a.nested, ST_OK);
	cr_assert(!a.ran);
	cr_assert_eq(count(NULL), 1);
}

/* A held-back RELEASE that fails (here the step released its savepoint
 * itself) makes PostgreSQL skip the COMMIT sent behind it: the unit fails
 * as it would have at the RELEASE, nothing commits, and the connection is
 * not left inside the aborted transaction for its next unit. One writer,
 * so the next unit gets that same connection. */
static enum st_rc releases_itself(struct tx *tx, void *arg)
{
	enum st_rc rc = insert(tx, "inside");

	(void)arg;
	return rc ? rc : tx_exec(tx, "RELEASE SAVEPOINT sp1", ST_NOARGS, NULL);
}

static enum st_rc failing_release_unit(struct tx *tx, void *arg)
{
	enum st_rc *nested = arg;

	*nested = tx_nested(tx, releases_itself, NULL);
	return *nested;
}

PG_TEST(failing_held_back_release_fails_the_commit_and_ends_it)
{
	struct store_options o = { .database_url = pg_url, .write_conns = 1, .read_conns = 1 };
	struct buf err = BUF_INIT(1024);
	struct store *one = NULL;
	enum st_rc nested = ST_INTERNAL;

	need_backend();
	cr_assert_eq(store_open(&o, &one, &err), ST_OK, "%s", err.ptr);
	buf_release(&err);
	cr_assert_eq(store_run(one, failing_release_unit, &nested), ST_INTERNAL);
	cr_assert_eq(nested, ST_OK, "the RELEASE was held back");
	for (int i = 0; i < 3; i++)
		cr_assert_eq(store_run(one, sfx_put_unit, (void *)(i ? "next2" : "next")), i < 2 ? ST_OK : ST_UNIQUE);
	store_close(one);
	cr_assert_eq(count("inside"), 0);
	cr_assert_eq(count(NULL), 2);
}

/* ---- retries ----------------------------------------------------------- */

/* Re-runs the store reported by cause (store.on_retry). Set on a store
 * before its first unit; read after the units were answered. */
struct retries {
	atomic_int n[STORE_RETRY_CAUSES];
};

static void count_retry(void *arg, enum store_retry_cause c)
{
	struct retries *r = arg;

	cr_assert(c >= 0 && c < STORE_RETRY_CAUSES);
	atomic_fetch_add(&r->n[c], 1);
}

static void watch_retries(struct store *s, struct retries *r)
{
	for (int i = 0; i < STORE_RETRY_CAUSES; i++)
		atomic_store(&r->n[i], 0);
	s->on_retry = count_retry;
	s->on_retry_arg = r;
}

/* Every cause but want is 0, want is n. */
static void assert_retries(struct retries *r, enum store_retry_cause want, int n)
{
	for (int i = 0; i < STORE_RETRY_CAUSES; i++)
		cr_assert_eq(atomic_load(&r->n[i]), i == (int)want ? n : 0, "retries of cause %s: %d",
			     store_retry_cause_str((enum store_retry_cause)i), atomic_load(&r->n[i]));
}

struct retry_arg {
	atomic_int attempts;
	int fail_until;   /* fail while attempts <= this */
	bool nested;      /* fail inside tx_nested, as the unit's first step */
};

/* The failing statement is the unit's first: it shares a pipeline with
 * BEGIN (and with SAVEPOINT when nested). */
static enum st_rc retry_first_unit(struct tx *tx, void *arg)
{
	struct retry_arg *r = arg;
	int attempt = atomic_fetch_add(&r->attempts, 1) + 1;

	if (attempt <= r->fail_until) {
		if (r->nested)
			(void)tx_nested(tx, sfx_raise_40001, NULL);
		else
			return sfx_raise_40001(tx, NULL);
	}
	return insert(tx, "once");
}

PG_TEST(serialization_failure_in_first_statement_is_retried)
{
	struct retry_arg r = { .fail_until = 2 };
	struct retries n;

	need_backend();
	watch_retries(S, &n);
	cr_assert_eq(store_run(S, retry_first_unit, &r), ST_OK);
	cr_assert_eq(atomic_load(&r.attempts), 3);
	cr_assert_eq(count("once"), 1);
	assert_retries(&n, STORE_RETRY_SERIALIZATION, 2);
}

/* A unit run again is counted once a run, by what PostgreSQL said
 * (settled_store_unit_retries_total): here a deadlock, then a
 * serialization failure, then the unit's own ST_BUSY, then success. */
static enum st_rc raise_state(struct tx *tx, const char *state)
{
	char sql[128];

	snprintf(sql, sizeof(sql), "DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '%s'; END $$", state);
	return tx_exec(tx, sql, ST_NOARGS, NULL);
}

static enum st_rc each_cause_unit(struct tx *tx, void *arg)
{
	struct retry_arg *r = arg;

	switch (atomic_fetch_add(&r->attempts, 1)) {
	case 0:
		return raise_state(tx, "40P01");
	case 1:
		(void)tx_nested(tx, sfx_raise_40001, NULL); /* recovered from: still a re-run */
		return insert(tx, "not_kept");
	case 2:
		return ST_BUSY;
	default:
		return insert(tx, "once");
	}
}

PG_TEST(each_run_again_is_counted_by_its_cause)
{
	struct retry_arg r = { 0 };
	struct retries n;

	need_backend();
	watch_retries(S, &n);
	cr_assert_eq(store_run(S, each_cause_unit, &r), ST_OK);
	cr_assert_eq(atomic_load(&r.attempts), 4);
	cr_assert_eq(atomic_load(&n.n[STORE_RETRY_DEADLOCK]), 1);
	cr_assert_eq(atomic_load(&n.n[STORE_RETRY_SERIALIZATION]), 1);
	cr_assert_eq(atomic_load(&n.n[STORE_RETRY_BUSY]), 1);
	cr_assert_eq(atomic_load(&n.n[STORE_RETRY_LOCK_TIMEOUT]), 0);
	cr_assert_eq(atomic_load(&n.n[STORE_RETRY_BATCH]), 0);
	cr_assert_eq(atomic_load(&n.n[STORE_RETRY_CONNECTION]), 0);
	cr_assert_eq(count("once"), 1);
	cr_assert_eq(count("not_kept"), 0);
}

PG_TEST(serialization_failure_in_first_nested_step_is_retried)
{
	struct retry_arg r = { .fail_until = 1, .nested = true };

	need_backend();
	cr_assert_eq(store_run(S, retry_first_unit, &r), ST_OK);
	cr_assert_eq(atomic_load(&r.attempts), 2);
	cr_assert_eq(count("once"), 1);
}

PG_TEST(serialization_failure_retry_stays_bounded)
{
	struct retry_arg r = { .fail_until = 1000 };
	struct retries n;

	need_backend();
	watch_retries(S, &n);
	cr_assert_eq(store_run(S, retry_first_unit, &r), ST_BUSY);
	cr_assert_eq(atomic_load(&r.attempts), 5);
	cr_assert_eq(count("once"), 0);
	assert_retries(&n, STORE_RETRY_SERIALIZATION, 4); /* the fifth run is the last */
}

/* ---- connections ------------------------------------------------------- */

static enum st_rc counted_put(struct tx *tx, void *arg)
{
	struct retry_arg *r = arg;

	atomic_fetch_add(&r->attempts, 1);
	return insert(tx, "survivor");
}

/* Every pooled connection was killed while idle: the first pipeline (BEGIN
 * + INSERT) finds its connection dead. Nothing of the unit happened, so it
 * is sent again on a new connection before the unit sees any result. */
PG_TEST(dead_connection_before_first_statement_is_retried)
{
	struct retry_arg r = { 0 };

	need_backend();
	put("warm");
	kill_backends();
	cr_assert_eq(store_run(S, counted_put, &r), ST_OK);
	cr_assert_eq(atomic_load(&r.attempts), 1, "the unit itself ran once");
	cr_assert_eq(count("survivor"), 1);
}

static enum st_rc counted_read(struct tx *tx, void *arg)
{
	struct retry_arg *r = arg;
	struct sfx_count_q q = { .k = "warm" };

	atomic_fetch_add(&r->attempts, 1);
	return sfx_count_unit(tx, &q) ? ST_UNAVAILABLE : (q.n == 1 ? ST_OK : ST_NOT_FOUND);
}

PG_TEST(dead_connection_before_first_read_is_retried)
{
	need_backend();
	put("warm");
	cr_assert_eq(count("warm"), 1);
	kill_backends();
	/* Four readers, all dead: each read goes through on a new one. */
	for (int i = 0; i < 8; i++) {
		struct retry_arg r = { 0 };

		cr_assert_eq(store_read(S, counted_read, &r), ST_OK, "read %d", i);
		cr_assert_eq(atomic_load(&r.attempts), 1);
	}
}

/* The connection dies after the first pipeline, before COMMIT: the whole
 * unit is re-run (the server rolled the transaction back). */
static enum st_rc dies_midway_unit(struct tx *tx, void *arg)
{
	struct retry_arg *r = arg;
	int attempt = atomic_fetch_add(&r->attempts, 1) + 1;
	enum st_rc rc = insert(tx, "midway");

	if (rc || attempt > 1)
		return rc;
	rc = tx_exec(tx, "SELECT pg_terminate_backend(pg_backend_pid())", ST_NOARGS, NULL);
	return rc ? rc : ST_INTERNAL; /* the statement cannot succeed */
}

PG_TEST(connection_lost_after_first_statement_reruns_the_unit)
{
	struct retry_arg r = { 0 };

	need_backend();
	cr_assert_eq(store_run(S, dies_midway_unit, &r), ST_OK);
	cr_assert_eq(atomic_load(&r.attempts), 2);
	cr_assert_eq(count("midway"), 1);
}

/* The same when the unit ignores the failure and says ok: it did not
 * commit, so it runs again rather than failing as a unit that went on
 * after an error. */
static enum st_rc swallows_loss_unit(struct tx *tx, void *arg)
{
	struct retry_arg *r = arg;
	int attempt = atomic_fetch_add(&r->attempts, 1) + 1;
	enum st_rc rc = insert(tx, "swallowed");

	if (rc || attempt > 1)
		return rc;
	(void)tx_exec(tx, "SELECT pg_terminate_backend(pg_backend_pid())", ST_NOARGS, NULL);
	return ST_OK;
}

PG_TEST(connection_lost_and_ignored_still_reruns_the_unit)
{
	struct retry_arg r = { 0 };

	need_backend();
	cr_assert_eq(store_run(S, swallows_loss_unit, &r), ST_OK);
	cr_assert_eq(atomic_load(&r.attempts), 2);
	cr_assert_eq(count("swallowed"), 1);
}

/* ---- reads ------------------------------------------------------------- */

/* BEGIN ... REPEATABLE READ goes out with the first SELECT; the snapshot
 * is taken there and held to the end, as before. */
struct snap {
	int64_t before, after;
};

static enum st_rc snapshot_read(struct tx *tx, void *arg)
{
	struct snap *s = arg;
	struct sfx_count_q q = { .k = NULL };
	enum st_rc rc = sfx_count_unit(tx, &q);

	if (rc)
		return rc;
	s->before = q.n;
	put("meanwhile"); /* commits on a writer connection */
	rc = sfx_count_unit(tx, &q);
	s->after = q.n;
	return rc;
}

PG_TEST(read_is_one_snapshot)
{
	struct snap s = { -1, -1 };

	need_backend();
	put("first");
	cr_assert_eq(store_read(S, snapshot_read, &s), ST_OK);
	cr_assert_eq(s.before, 1);
	cr_assert_eq(s.after, 1, "the second SELECT saw a later commit");
	cr_assert_eq(count(NULL), 2);
}

static enum st_rc read_fails_first(struct tx *tx, void *arg)
{
	(void)arg;
	return tx_exec(tx, "SELECT 1 / 0", ST_NOARGS, NULL);
}

static enum st_rc read_write_first(struct tx *tx, void *arg)
{
	(void)arg;
	return insert(tx, "sneaky");
}

PG_TEST(read_whose_first_statement_fails)
{
	need_backend();
	for (int i = 0; i < 8; i++) {
		cr_assert_neq(store_read(S, read_fails_first, NULL), ST_OK);
		cr_assert_neq(store_read(S, read_write_first, NULL), ST_OK);
	}
	cr_assert_eq(count("sneaky"), 0);
	cr_assert_eq(store_read(S, empty_unit, &(enum st_rc){ ST_OK }), ST_OK);
}

/* ---- one-statement reads (store_read_one) ------------------------------ */

/* The statement goes alone, without BEGIN ... COMMIT: it runs in its own
 * implicit transaction, at the session's default isolation level, where a
 * store_read runs inside BEGIN ISOLATION LEVEL REPEATABLE READ. */
struct iso {
	char level[32];
};

static enum st_rc isolation_read(struct tx *tx, void *arg)
{
	struct iso *o = arg;
	struct st_rows *r = NULL;
	enum st_rc rc = tx_query(tx, "SELECT current_setting('transaction_isolation')", ST_NOARGS, &r);

	if (rc)
		return rc;
	snprintf(o->level, sizeof(o->level), "%s", rows_text(r, 0, 0) ? rows_text(r, 0, 0) : "");
	rows_free(r);
	return ST_OK;
}

static enum st_rc count_warm_read(struct tx *tx, void *arg)
{
	struct sfx_count_q *q = arg;

	q->k = "warm";
	return sfx_count_unit(tx, q);
}

PG_TEST(read_one_sends_its_statement_alone)
{
	struct iso a = { "" };

	need_backend();
	put("warm");
	cr_assert_eq(store_read(S, isolation_read, &a), ST_OK);
	cr_assert_str_eq(a.level, "repeatable read");
	for (int i = 0; i < 8; i++) { /* every reader connection, twice */
		struct iso b = { "" };
		struct sfx_count_q q = { .k = NULL };

		cr_assert_eq(store_read_one(S, isolation_read, &b), ST_OK);
		cr_assert_str_eq(b.level, "read committed", "read %d ran inside a BEGIN", i);
		cr_assert_eq(store_read_one(S, count_warm_read, &q), ST_OK);
		cr_assert_eq(q.n, 1);
	}
	/* Nothing was left open on the readers: the REPEATABLE READ of a
	 * store_read still begins on each of them. */
	for (int i = 0; i < 8; i++) {
		memset(&a, 0, sizeof(a));
		cr_assert_eq(store_read(S, isolation_read, &a), ST_OK);
		cr_assert_str_eq(a.level, "repeatable read");
	}
}

/* Without READ ONLY in a BEGIN, the readers' sessions refuse writes. */
PG_TEST(read_one_cannot_write)
{
	need_backend();
	for (int i = 0; i < 8; i++)
		cr_assert_neq(store_read_one(S, read_write_first, NULL), ST_OK, "write %d", i);
	cr_assert_eq(count("sneaky"), 0);
	/* Also on connections made again after they were lost. */
	kill_backends();
	for (int i = 0; i < 8; i++)
		cr_assert_neq(store_read_one(S, read_write_first, NULL), ST_OK, "write %d", i);
	cr_assert_eq(count("sneaky"), 0);
}

/* A unit that asks a one-statement read for more gets ST_INTERNAL (a bug
 * in the unit), and the reader is left as it was. */
PG_TEST(read_one_refuses_a_second_statement)
{
	struct sfx_count_q q = { .k = NULL };

	need_backend();
	put("warm");
	for (int i = 0; i < 8; i++) {
		struct sfx_count_q all = { .k = NULL }, warm = { .k = "warm" };

		cr_assert_eq(store_read_one(S, sfx_two_statements_read, &all), ST_INTERNAL);
		cr_assert_eq(store_read_one(S, sfx_nested_read, &warm), ST_INTERNAL);
		cr_assert_eq(store_read_one(S, sfx_deferred_read, NULL), ST_INTERNAL);
		cr_assert_neq(store_read_one(S, read_fails_first, NULL), ST_OK);
	}
	for (int i = 0; i < 8; i++) {
		struct iso a = { "" };

		cr_assert_eq(store_read_one(S, count_warm_read, &q), ST_OK);
		cr_assert_eq(q.n, 1);
		cr_assert_eq(store_read(S, isolation_read, &a), ST_OK);
		cr_assert_str_eq(a.level, "repeatable read");
	}
}

/* A reader found dead is replaced and the statement sent again, before
 * the unit sees anything. */
PG_TEST(dead_connection_before_a_one_statement_read_is_retried)
{
	need_backend();
	put("warm");
	kill_backends();
	for (int i = 0; i < 8; i++) {
		struct retry_arg r = { 0 };

		cr_assert_eq(store_read_one(S, counted_read, &r), ST_OK, "read %d", i);
		cr_assert_eq(atomic_load(&r.attempts), 1);
	}
}

/* ---- group commit ------------------------------------------------------ */

/* With one writer connection, a gate unit holds the writer while the test
 * queues units from several threads at once; when the gate opens the
 * writer takes everything queued as one batch: one transaction, each unit
 * under its own savepoint, one COMMIT. Each unit records the transaction
 * it ran in, so the tests can tell that the units really shared one. */

struct gate {
	atomic_bool open;
	atomic_bool entered;
};

static enum st_rc gate_unit(struct tx *tx, void *arg)
{
	struct gate *g = arg;

	atomic_store(&g->entered, true);
	while (!atomic_load(&g->open))
		usleep(1000);
	return insert(tx, "gate");
}

enum bu_kind {
	BU_OK,        /* inserts its key */
	BU_DUP,       /* inserts its key, then one that exists: ST_UNIQUE */
	BU_CHECK,     /* inserts its key, then breaks kv's CHECK: ST_CONFLICT */
	BU_SWALLOW,   /* inserts its key, ignores a failed statement, says ok */
	BU_BUSY_ONCE, /* 40001 in a nested step on its first run, recovered */
	BU_DEFERRED,  /* a deferred unique key broken: fails only at COMMIT */
	BU_KILL_ONCE, /* its connection dies on its first run */
	BU_WAITS,     /* inserts its key, then one another transaction holds */
	BU_RELEASES,  /* releases its batch savepoint itself: a bug, found late */
	BU_DEFER_OK,  /* inserts its key, then a second key deferred */
	BU_DEFER_DUP, /* inserts its key, then one that exists, deferred */
	BU_WAITS_NOWAIT, /* inserts its key, then one another transaction holds,
			  * in a tx_nested_nowait step whose failure it ignores */
};

static enum st_rc dk_create_unit(struct tx *tx, void *arg)
{
	(void)arg;
	return tx_exec(tx, "CREATE TABLE dk (k TEXT UNIQUE DEFERRABLE INITIALLY DEFERRED)", ST_NOARGS, NULL);
}

struct bunit {
	enum bu_kind kind;
	char key[32];
	char xid[32];          /* the transaction of its last run */
	char lock_timeout[16]; /* its lock_timeout in that run ("0": none) */
	atomic_int runs;
	atomic_int after;      /* its after-commit work, run count */
	atomic_int done;
	enum st_rc rc;
	enum st_rc step;       /* BU_WAITS_NOWAIT: its step's rc */
};

static enum st_rc insert_locked(struct tx *tx, void *arg)
{
	(void)arg;
	return insert(tx, "locked");
}

static void bunit_after(void *arg, int64_t n)
{
	struct bunit *u = arg;

	(void)n;
	atomic_fetch_add(&u->after, 1);
}

static enum st_rc bunit_fn(struct tx *tx, void *arg)
{
	struct bunit *u = arg;
	int run = atomic_fetch_add(&u->runs, 1) + 1;
	struct st_rows *r = NULL;
	enum st_rc rc;

	rc = tx_query(tx, "SELECT pg_current_xact_id()::text, current_setting('lock_timeout')", ST_NOARGS, &r);
	if (rc)
		return rc;
	rows_copy(r, 0, 0, u->xid, sizeof(u->xid));
	rows_copy(r, 0, 1, u->lock_timeout, sizeof(u->lock_timeout));
	rows_free(r);
	rc = insert(tx, u->key);
	if (!rc)
		rc = tx_after_commit(tx, bunit_after, u, 0);
	if (rc)
		return rc;
	switch (u->kind) {
	case BU_OK:
		return ST_OK;
	case BU_DUP:
		return insert(tx, "gate");
	case BU_CHECK:
		return tx_exec(tx, "UPDATE kv SET n = n - 1 WHERE k = $1", ST_ARGS(SV_S(u->key)), NULL);
	case BU_SWALLOW:
		(void)insert(tx, "gate");
		return ST_OK;
	case BU_BUSY_ONCE:
		if (run == 1)
			(void)tx_nested(tx, sfx_raise_40001, NULL);
		return ST_OK;
	case BU_DEFERRED:
		return tx_exec(tx, "INSERT INTO dk (k) VALUES ('same')", ST_NOARGS, NULL);
	case BU_WAITS:
		return insert(tx, "locked");
	case BU_RELEASES:
		return tx_nested(tx, releases_itself, NULL);
	case BU_DEFER_OK: {
		char k2[40];

		snprintf(k2, sizeof(k2), "%s_2", u->key);
		return defer_insert(tx, k2);
	}
	case BU_DEFER_DUP:
		return defer_insert(tx, "gate");
	case BU_WAITS_NOWAIT:
		u->step = tx_nested_nowait(tx, insert_locked, NULL);
		return ST_OK;
	case BU_KILL_ONCE:
		if (run == 1)
			(void)tx_exec(tx, "SELECT pg_terminate_backend(pg_backend_pid())", ST_NOARGS, NULL);
		return ST_OK;
	}
	return ST_INTERNAL;
}

static void bunit_done(void *arg, enum st_rc rc)
{
	struct bunit *u = arg;

	u->rc = rc;
	atomic_fetch_add(&u->done, 1);
}

struct bsubmit {
	struct store *s;
	struct bunit *units;
	int from, to;
};

static void *bsubmit_main(void *arg)
{
	struct bsubmit *b = arg;

	for (int i = b->from; i < b->to; i++)
		cr_assert_eq(store_submit(b->s, bunit_fn, bunit_done, &b->units[i]), ST_OK);
	return NULL;
}

#define BU_THREADS 4

static void gate_done(void *arg, enum st_rc rc)
{
	struct gate *g = arg;

	cr_assert_eq(rc, ST_OK, "the gate unit: %s", st_rc_str(rc));
	(void)g;
}

/* Queues units[0..n) behind a gate from BU_THREADS threads at once, opens
 * the gate and waits until every unit but units[skip] (-1: none) is
 * answered. */
static void run_gated_batch_but(struct store *s, struct gate *g, struct bunit *units, int n, int skip)
{
	struct bsubmit sub[BU_THREADS];
	pthread_t th[BU_THREADS];

	cr_assert_eq(store_submit(s, gate_unit, gate_done, g), ST_OK);
	while (!atomic_load(&g->entered))
		usleep(1000);
	for (int t = 0; t < BU_THREADS; t++) {
		sub[t] = (struct bsubmit){ s, units, n * t / BU_THREADS, n * (t + 1) / BU_THREADS };
		cr_assert_eq(pthread_create(&th[t], NULL, bsubmit_main, &sub[t]), 0);
	}
	for (int t = 0; t < BU_THREADS; t++)
		pthread_join(th[t], NULL);
	atomic_store(&g->open, true);
	for (int i = 0; i < n; i++)
		while (i != skip && !atomic_load(&units[i].done))
			usleep(1000);
}

static void run_gated_batch(struct store *s, struct gate *g, struct bunit *units, int n)
{
	run_gated_batch_but(s, g, units, n, -1);
}

static struct store *one_writer_batching(unsigned batch_max, int64_t lock_timeout_ms)
{
	struct store_options o = { .database_url = pg_url, .write_conns = 1, .read_conns = 1,
				   .batch_max = batch_max, .lock_timeout_ms = lock_timeout_ms };
	struct buf err = BUF_INIT(1024);
	struct store *one = NULL;

	cr_assert_eq(store_open(&o, &one, &err), ST_OK, "%s", err.ptr);
	buf_release(&err);
	return one;
}

static struct store *one_writer(void)
{
	return one_writer_batching(0, 0);
}

/* One writer, batching, whose units run again alone after their batch
 * wait at most rerun_ms for a lock in each run. */
static struct store *one_writer_reruns(int64_t rerun_ms)
{
	struct store_options o = { .database_url = pg_url, .write_conns = 1, .read_conns = 1,
				   .rerun_lock_timeout_ms = rerun_ms };
	struct buf err = BUF_INIT(1024);
	struct store *one = NULL;

	cr_assert_eq(store_open(&o, &one, &err), ST_OK, "%s", err.ptr);
	buf_release(&err);
	return one;
}

static const struct st_rows_sql kv_pair_rows = {
	.head = "INSERT INTO kv (k, v) VALUES ",
	.row = "($1, $1)",
	.tail = "",
	.width = 1,
};

static enum st_rc put_pair(struct tx *tx, void *arg)
{
	const char *const *keys = arg;

	return tx_exec_rows(tx, &kv_pair_rows, 2, (const struct st_val[]){ SV_S(keys[0]), SV_S(keys[1]) },
			    NULL);
}

/* The same with a multi-row statement (tx_exec_rows) first, whose text
 * the connection's cache made on an earlier unit: the reconnect between
 * the two sends must not free the text the resend uses (it did: a
 * heap-use-after-free under make asan, seen by ThreadSanitizer in
 * test_link_faults' random resets of merged registrations). */
PG_TEST(dead_connection_before_a_multi_row_first_statement_is_retried)
{
	struct store *one;

	need_backend();
	one = one_writer();
	cr_assert_eq(store_run(one, put_pair, (void *)(const char *const[]){ "warm1", "warm2" }), ST_OK);
	kill_backends();
	cr_assert_eq(store_run(one, put_pair, (void *)(const char *const[]){ "pair1", "pair2" }), ST_OK);
	store_close(one);
	cr_assert_eq(count("pair1"), 1);
	cr_assert_eq(count("pair2"), 1);
}

#define BU_N 24

static void bunits_init(struct bunit *units, int n)
{
	for (int i = 0; i < n; i++) {
		units[i] = (struct bunit){ .kind = BU_OK };
		snprintf(units[i].key, sizeof(units[i].key), "u%02d", i);
	}
}

/* Units that fail in the middle of a batch (a unique key, a CHECK, an
 * error ignored) roll back alone, their after-commit work with them, and
 * get their own answers; the others commit together in one transaction
 * and each one's after-commit work runs once. */
PG_TEST(failing_units_in_a_batch_roll_back_alone)
{
	static struct bunit units[BU_N];
	struct gate g = { false, false };
	struct store *one;
	const char *xid = NULL;

	need_backend();
	bunits_init(units, BU_N);
	units[3].kind = BU_DUP;
	units[9].kind = BU_CHECK;
	units[15].kind = BU_SWALLOW;
	units[BU_N - 1].kind = BU_DUP; /* the last: nothing after it */
	one = one_writer();
	run_gated_batch(one, &g, units, BU_N);
	store_close(one);
	for (int i = 0; i < BU_N; i++) {
		struct bunit *u = &units[i];
		enum st_rc want = u->kind == BU_DUP ? ST_UNIQUE : u->kind == BU_CHECK ? ST_CONFLICT
				  : u->kind == BU_SWALLOW ? ST_INTERNAL : ST_OK;

		cr_assert_eq(u->rc, want, "unit %d: %s, want %s", i, st_rc_str(u->rc), st_rc_str(want));
		cr_assert_eq(atomic_load(&u->runs), 1, "unit %d ran %d times", i, atomic_load(&u->runs));
		cr_assert_eq(atomic_load(&u->done), 1);
		cr_assert_eq(count(u->key), want == ST_OK ? 1 : 0, "unit %d", i);
		cr_assert_eq(atomic_load(&u->after), want == ST_OK ? 1 : 0, "unit %d after-commit", i);
		if (!xid)
			xid = u->xid;
		cr_assert_str_eq(u->xid, xid, "unit %d ran in another transaction: not batched", i);
	}
	cr_assert_eq(count("gate"), 1);
	cr_assert_eq(count(NULL), 1 + BU_N - 4);
}

/* store_options.batch_max caps a batch (SETTLED_PG_BATCH_MAX): 24 units
 * queued behind the gate on one writer go as batches of at most 5 (the
 * fewest such); lock_timeout_ms is the batches' lock_timeout. With a cap of 1
 * every unit is a transaction of its own, without a lock_timeout. */
static void check_batches(struct bunit *units, int n, int max, const char *batched_lt)
{
	int groups = 0;

	for (int i = 0; i < n; i++) {
		int size = 0, first = i;

		cr_assert_eq(units[i].rc, ST_OK, "unit %d: %s", i, st_rc_str(units[i].rc));
		cr_assert_eq(atomic_load(&units[i].runs), 1, "unit %d", i);
		cr_assert_eq(count(units[i].key), 1, "unit %d", i);
		cr_assert_str_eq(units[i].lock_timeout, max > 1 ? batched_lt : "0", "unit %d", i);
		for (int j = 0; j < n; j++) {
			if (!strcmp(units[j].xid, units[i].xid)) {
				size++;
				if (j < first)
					first = j;
			}
		}
		cr_assert_leq(size, max, "unit %d: a batch of %d, more than %d", i, size, max);
		if (first == i)
			groups++;
	}
	/* All n were queued before the writer was free: full batches. */
	cr_assert_eq(groups, (n + max - 1) / max);
}

PG_TEST(batch_max_caps_a_batch)
{
	static struct bunit units[BU_N];
	struct gate g = { false, false };
	struct store *one;

	need_backend();
	bunits_init(units, BU_N);
	one = one_writer_batching(5, 250);
	run_gated_batch(one, &g, units, BU_N);
	store_close(one);
	check_batches(units, BU_N, 5, "250ms");
}

PG_TEST(batch_max_1_is_no_group_commit)
{
	static struct bunit units[BU_N];
	struct gate g = { false, false };
	struct store *one;

	need_backend();
	bunits_init(units, BU_N);
	one = one_writer_batching(1, 0);
	run_gated_batch(one, &g, units, BU_N);
	store_close(one);
	check_batches(units, BU_N, 1, NULL);
}

/* A unit that saw 40001 (even in a nested step it recovered from) is
 * rolled back to its savepoint and run again after the batch commits: its
 * rows and its after-commit work once, the batch-mates' once. */
PG_TEST(serialization_failure_in_a_batch_reruns_that_unit_alone)
{
	static struct bunit units[BU_N];
	struct gate g = { false, false };
	struct store *one;

	need_backend();
	bunits_init(units, BU_N);
	units[5].kind = BU_BUSY_ONCE;
	units[6].kind = BU_DUP;
	one = one_writer();
	run_gated_batch(one, &g, units, BU_N);
	store_close(one);
	for (int i = 0; i < BU_N; i++) {
		struct bunit *u = &units[i];
		enum st_rc want = i == 6 ? ST_UNIQUE : ST_OK;

		cr_assert_eq(u->rc, want, "unit %d: %s", i, st_rc_str(u->rc));
		cr_assert_eq(atomic_load(&u->runs), i == 5 ? 2 : 1, "unit %d ran %d times", i,
			     atomic_load(&u->runs));
		cr_assert_eq(count(u->key), want == ST_OK ? 1 : 0, "unit %d", i);
		cr_assert_eq(atomic_load(&u->after), want == ST_OK ? 1 : 0, "unit %d after-commit", i);
		if (i != 5)
			cr_assert_str_eq(u->xid, units[0].xid, "unit %d not batched", i);
	}
	cr_assert_str_neq(units[5].xid, units[0].xid, "the re-run is a transaction of its own");
}

/* A failure only COMMIT finds (a deferred constraint) cannot be pinned on
 * one unit: the batch rolls back and each unit runs again alone, so each
 * gets its own answer; after-commit work runs once, for the committed. */
PG_TEST(failure_at_commit_reruns_each_unit_alone)
{
	static struct bunit units[BU_N];
	struct gate g = { false, false };
	struct store *one;

	need_backend();
	cr_assert_eq(store_run(S, dk_create_unit, NULL), ST_OK);
	bunits_init(units, BU_N);
	units[4].kind = BU_DEFERRED;
	units[17].kind = BU_DEFERRED;
	one = one_writer();
	run_gated_batch(one, &g, units, BU_N);
	store_close(one);
	/* Alone, the first of the two to run (the threads queued them in
	 * either order) commits, and the other breaks the key. */
	cr_assert((units[4].rc == ST_OK) != (units[17].rc == ST_OK), "4: %s, 17: %s",
		  st_rc_str(units[4].rc), st_rc_str(units[17].rc));
	for (int i = 0; i < BU_N; i++) {
		struct bunit *u = &units[i];
		enum st_rc want = u->kind == BU_DEFERRED && u->rc != ST_OK ? ST_UNIQUE : ST_OK;

		cr_assert_eq(u->rc, want, "unit %d: %s", i, st_rc_str(u->rc));
		cr_assert_eq(atomic_load(&u->runs), 2, "unit %d ran %d times", i, atomic_load(&u->runs));
		cr_assert_eq(count(u->key), want == ST_OK ? 1 : 0, "unit %d", i);
		cr_assert_eq(atomic_load(&u->after), want == ST_OK ? 1 : 0, "unit %d after-commit", i);
	}
}

/* The connection dies in the middle of a batch, before COMMIT: nothing of
 * the batch happened, and every unit runs again (alone): each row once,
 * each after-commit work once, failures keep their own answers. */
PG_TEST(connection_lost_in_a_batch_reruns_every_unit)
{
	static struct bunit units[BU_N];
	struct gate g = { false, false };
	struct store *one;

	need_backend();
	bunits_init(units, BU_N);
	units[2].kind = BU_DUP;
	units[11].kind = BU_KILL_ONCE;
	one = one_writer();
	run_gated_batch(one, &g, units, BU_N);
	store_close(one);
	for (int i = 0; i < BU_N; i++) {
		struct bunit *u = &units[i];
		enum st_rc want = i == 2 ? ST_UNIQUE : ST_OK;
		int runs = atomic_load(&u->runs);

		cr_assert_eq(u->rc, want, "unit %d: %s", i, st_rc_str(u->rc));
		/* The units queued before the one that died ran twice, the ones
		 * after it once (the threads queued them in any order). */

		cr_assert(i == 11 ? runs == 2 : runs == 1 || runs == 2, "unit %d ran %d times", i, runs);
		cr_assert_eq(count(u->key), want == ST_OK ? 1 : 0, "unit %d", i);
		cr_assert_eq(atomic_load(&u->after), want == ST_OK ? 1 : 0, "unit %d after-commit", i);
	}
}

/* Another session that has written kv row 'locked' and not committed:
 * until release_locked_row, a unit that writes that row waits. */
static PGconn *hold_locked_row(void)
{
	PGconn *holder = PQconnectdb(pg_url);
	PGresult *r;

	cr_assert(PQstatus(holder) == CONNECTION_OK, "%s", PQerrorMessage(holder));
	r = PQexec(holder, "BEGIN; INSERT INTO kv (k, v) VALUES ('locked', 'x')");
	cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(holder));
	PQclear(r);
	return holder;
}

/* Rolls back and closes hold_locked_row's session: the row is gone. */
static void release_locked_row(PGconn *holder)
{
	PGresult *r = PQexec(holder, "ROLLBACK");

	PQclear(r);
	PQfinish(holder);
}

/* A unit of a batch that waits for a lock another transaction holds does
 * not hold up its batch: after a short lock_timeout it is rolled back to
 * its savepoint, the batch-mates commit and are answered while the lock is
 * still held, and the unit then runs alone, waiting for the lock up to the
 * rerun's bound (here ten minutes: the lock is let go long before). */
PG_TEST(unit_waiting_for_a_lock_leaves_its_batch)
{
	static struct bunit units[BU_N];
	struct gate g = { false, false };
	struct store *one;
	PGconn *holder;
	struct retries n;

	need_backend();
	bunits_init(units, BU_N);
	units[7].kind = BU_WAITS;
	holder = hold_locked_row();
	one = one_writer_reruns(600000);
	watch_retries(one, &n);
	run_gated_batch_but(one, &g, units, BU_N, 7);
	/* Everyone else is answered, and the lock is still held. */
	cr_assert_eq(atomic_load(&units[7].done), 0, "answered while the lock was held");
	for (int i = 0; i < BU_N; i++)
		if (i != 7)
			cr_assert_eq(units[i].rc, ST_OK, "unit %d: %s", i, st_rc_str(units[i].rc));
	release_locked_row(holder);
	while (!atomic_load(&units[7].done))
		usleep(1000);
	store_close(one);
	cr_assert_eq(units[7].rc, ST_OK, "%s", st_rc_str(units[7].rc));
	cr_assert_eq(atomic_load(&units[7].runs), 2);
	assert_retries(&n, STORE_RETRY_LOCK_TIMEOUT, 1);
	for (int i = 0; i < BU_N; i++) {
		cr_assert_eq(count(units[i].key), 1, "unit %d", i);
		cr_assert_eq(atomic_load(&units[i].after), 1, "unit %d after-commit", i);
	}
	cr_assert_eq(count("locked"), 1);
	cr_assert_str_eq(units[7].lock_timeout, "10min", "its run after the batch");
}

static enum st_rc insert_other(struct tx *tx, void *arg)
{
	(void)arg;
	return insert(tx, "other");
}

/* The same unit, when the lock is not let go: its runs after the batch
 * each end after the rerun's lock bound (55P03, a retry), and once it is
 * out of runs (PG_UNIT_ATTEMPTS, 5) it is answered ST_BUSY -- 503 busy,
 * the retryable answer -- while the lock is still held, with nothing of it
 * written; its writer then serves the next unit. It used to wait for the
 * lock as long as it took, holding the store's only writer. */
PG_TEST(a_unit_after_its_batch_that_cannot_get_its_lock_is_busy_and_frees_its_writer)
{
	static struct bunit units[BU_N];
	struct gate g = { false, false };
	struct store *one;
	PGconn *holder;
	struct retries n;

	need_backend();
	bunits_init(units, BU_N);
	units[7].kind = BU_WAITS;
	holder = hold_locked_row();
	one = one_writer_reruns(50);
	watch_retries(one, &n);
	run_gated_batch_but(one, &g, units, BU_N, 7);
	/* The test's own timeout (60 s) fails it if the unit waits on. */
	while (!atomic_load(&units[7].done))
		usleep(1000);
	cr_assert_eq(units[7].rc, ST_BUSY, "%s", st_rc_str(units[7].rc));
	cr_assert_eq(store_run(one, insert_other, NULL), ST_OK, "the writer serves the next unit");
	release_locked_row(holder);
	store_close(one);
	cr_assert_eq(atomic_load(&units[7].runs), 5);
	cr_assert_str_eq(units[7].lock_timeout, "50ms", "its last run");
	assert_retries(&n, STORE_RETRY_LOCK_TIMEOUT, 4); /* out of its batch, then 3 */
	cr_assert_eq(count(units[7].key), 0);
	cr_assert_eq(atomic_load(&units[7].after), 0);
	for (int i = 0; i < BU_N; i++)
		if (i != 7) {
			cr_assert_eq(units[i].rc, ST_OK, "unit %d: %s", i, st_rc_str(units[i].rc));
			cr_assert_eq(count(units[i].key), 1, "unit %d", i);
		}
	cr_assert_eq(count("other"), 1);
	cr_assert_eq(count("locked"), 0);
}

/* A unit that breaks the savepoint nesting (it releases sp1 itself, so its
 * own held-back RELEASE fails, in the next unit's pipeline): the failure is
 * not the next unit's. Nobody's answer may come from it: the batch runs
 * again unit by unit, the culprit gets ST_INTERNAL, the rest commit once. */
PG_TEST(a_units_late_failure_is_not_its_batch_mates)
{
	static struct bunit units[BU_N];
	struct gate g = { false, false };
	struct store *one;
	struct retries n;
	int again = 0;

	need_backend();
	bunits_init(units, BU_N);
	units[8].kind = BU_RELEASES;
	one = one_writer();
	watch_retries(one, &n);
	run_gated_batch(one, &g, units, BU_N);
	store_close(one);
	/* each unit the broken batch had run is counted once as run again */
	for (int i = 0; i < BU_N; i++)
		again += atomic_load(&units[i].runs) == 2;
	cr_assert_gt(again, 0);
	assert_retries(&n, STORE_RETRY_BATCH, again);
	for (int i = 0; i < BU_N; i++) {
		struct bunit *u = &units[i];
		enum st_rc want = i == 8 ? ST_INTERNAL : ST_OK;

		cr_assert_eq(u->rc, want, "unit %d: %s", i, st_rc_str(u->rc));
		cr_assert_eq(count(u->key), want == ST_OK ? 1 : 0, "unit %d", i);
		cr_assert_eq(atomic_load(&u->after), want == ST_OK ? 1 : 0, "unit %d after-commit", i);
	}
}

/* Deferred statements in a batch: each unit's ride with the next unit's
 * first statement (or the COMMIT). One that fails there is not that next
 * unit's failure: every unit gets its own answer (the batch runs again
 * unit by unit), the culprit its own rc, its rows and after-commit work
 * nowhere; everyone else's rows and after-commit work once. */
PG_TEST(deferred_failure_in_a_batch_is_its_own_units)
{
	static struct bunit units[BU_N];
	struct gate g = { false, false };
	struct store *one;
	char k2[40];

	need_backend();
	bunits_init(units, BU_N);
	for (int i = 0; i < BU_N; i++)
		units[i].kind = BU_DEFER_OK;
	units[6].kind = BU_DEFER_DUP;
	units[BU_N - 1].kind = BU_DEFER_DUP; /* the last: fails with the COMMIT */
	one = one_writer();
	run_gated_batch(one, &g, units, BU_N);
	store_close(one);
	for (int i = 0; i < BU_N; i++) {
		struct bunit *u = &units[i];
		enum st_rc want = u->kind == BU_DEFER_DUP ? ST_UNIQUE : ST_OK;

		cr_assert_eq(u->rc, want, "unit %d: %s, want %s", i, st_rc_str(u->rc), st_rc_str(want));
		cr_assert_eq(atomic_load(&u->done), 1);
		cr_assert_eq(count(u->key), want == ST_OK ? 1 : 0, "unit %d", i);
		snprintf(k2, sizeof(k2), "%s_2", u->key);
		cr_assert_eq(count(k2), want == ST_OK ? 1 : 0, "unit %d deferred row", i);
		cr_assert_eq(atomic_load(&u->after), want == ST_OK ? 1 : 0, "unit %d after-commit", i);
	}
	cr_assert_eq(count(NULL), 1 + 2 * (BU_N - 2));
}

/* Deferred statements that succeed keep the batch one transaction. */
PG_TEST(deferred_statements_keep_the_batch_whole)
{
	static struct bunit units[BU_N];
	struct gate g = { false, false };
	struct store *one;

	need_backend();
	bunits_init(units, BU_N);
	for (int i = 0; i < BU_N; i++)
		units[i].kind = BU_DEFER_OK;
	one = one_writer();
	run_gated_batch(one, &g, units, BU_N);
	store_close(one);
	for (int i = 0; i < BU_N; i++) {
		cr_assert_eq(units[i].rc, ST_OK, "unit %d: %s", i, st_rc_str(units[i].rc));
		cr_assert_eq(atomic_load(&units[i].runs), 1, "unit %d ran %d times", i, atomic_load(&units[i].runs));
		cr_assert_str_eq(units[i].xid, units[0].xid, "unit %d not batched", i);
	}
	cr_assert_eq(count(NULL), 1 + 2 * BU_N);
}

/* ---- tx_nested_nowait, and a unit marked for a retry ------------------- */

/* A unit in a batch whose tx_nested_nowait step waits for a lock another
 * transaction holds: the step fails alone after the batch's lock timeout
 * (ST_BUSY), the unit goes on and commits in its batch, once, without
 * the step's row; it does not leave the batch to wait as a unit whose
 * plain statement waits does (unit_waiting_for_a_lock_leaves_its_batch). */
PG_TEST(nowait_step_in_a_batch_fails_alone_and_the_unit_stays)
{
	static struct bunit units[BU_N];
	struct gate g = { false, false };
	struct store *one;
	PGconn *holder;
	struct retries n;

	need_backend();
	bunits_init(units, BU_N);
	units[7].kind = BU_WAITS_NOWAIT;
	holder = hold_locked_row();
	one = one_writer();
	watch_retries(one, &n);
	run_gated_batch(one, &g, units, BU_N); /* all answered while the lock is held */
	release_locked_row(holder);
	store_close(one);
	assert_retries(&n, STORE_RETRY_LOCK_TIMEOUT, 0); /* nothing ran again */
	cr_assert_eq(units[7].step, ST_BUSY, "the step: %s", st_rc_str(units[7].step));
	for (int i = 0; i < BU_N; i++) {
		cr_assert_eq(units[i].rc, ST_OK, "unit %d: %s", i, st_rc_str(units[i].rc));
		cr_assert_eq(atomic_load(&units[i].runs), 1, "unit %d ran %d times", i, atomic_load(&units[i].runs));
		cr_assert_str_eq(units[i].xid, units[0].xid, "unit %d not batched", i);
		cr_assert_eq(count(units[i].key), 1, "unit %d", i);
	}
	cr_assert_eq(count("locked"), 0);
}

/* Two units, each alone on its own connection (no group commit), each
 * locking one row in a step and then, once both hold theirs, the other's
 * row in a second step: the crossing that deadlocked workers' effect
 * units. With tx_nested_nowait steps neither waits longer than the lock
 * timeout (well under PostgreSQL's deadlock_timeout, 1 s), so no deadlock
 * is ever detected and neither unit runs twice: the second step of at
 * least one fails alone with ST_BUSY, each unit commits the rest. Inside
 * a step lock_timeout is the store's; after it the session's again. */
struct cross {
	const char *mine, *theirs;
	atomic_int *holding;   /* units that hold their first row */
	atomic_int runs;
	enum st_rc first, second;
	char in_step[16], after[16];
};

struct bump {
	const char *k;
	char *lock_timeout;    /* current_setting('lock_timeout') in the step, or NULL */
};

static enum st_rc bump_step(struct tx *tx, void *arg)
{
	struct bump *b = arg;
	struct st_rows *r = NULL;
	enum st_rc rc = tx_exec(tx, "UPDATE kv SET n = n + 1 WHERE k = $1", ST_ARGS(SV_S(b->k)), NULL);

	if (rc || !b->lock_timeout)
		return rc;
	rc = tx_query(tx, "SELECT current_setting('lock_timeout')", ST_NOARGS, &r);
	if (rc == ST_OK)
		rows_copy(r, 0, 0, b->lock_timeout, 16);
	rows_free(r);
	return rc;
}

static enum st_rc cross_unit(struct tx *tx, void *arg)
{
	struct cross *c = arg;
	struct bump first = { c->mine, c->in_step }, second = { c->theirs, NULL };
	struct st_rows *r = NULL;
	enum st_rc rc;

	atomic_fetch_add(&c->runs, 1);
	c->first = tx_nested_nowait(tx, bump_step, &first);
	if (c->first)
		return c->first;
	/* Wait until the other unit holds its row too. A second run (after a
	 * deadlock, itself a failure below) finds the count at 2 already;
	 * the 60 s cap is a guard, not a timing: with 2 s, a writer thread
	 * kept off the CPU that long let this unit take the other's row
	 * before it was held, and the test failed "busy >= 1". */
	atomic_fetch_add(c->holding, 1);
	for (int i = 0; i < 60000 && atomic_load(c->holding) < 2; i++)
		usleep(1000);
	c->second = tx_nested_nowait(tx, bump_step, &second);
	rc = tx_query(tx, "SELECT current_setting('lock_timeout')", ST_NOARGS, &r);
	if (rc == ST_OK)
		rows_copy(r, 0, 0, c->after, sizeof(c->after));
	rows_free(r);
	return rc;
}

struct cross_run {
	struct store *s;
	struct cross *c;
	enum st_rc rc;
};

static void *cross_main(void *arg)
{
	struct cross_run *cr = arg;

	cr->rc = store_run(cr->s, cross_unit, cr->c);
	return NULL;
}

PG_TEST(nowait_steps_of_units_alone_never_deadlock)
{
	struct store_options o = { .database_url = pg_url, .write_conns = 2, .read_conns = 1,
				   .batch_max = 1, .lock_timeout_ms = 100 };
	struct buf err = BUF_INIT(1024);
	atomic_int holding = 0;
	struct cross c[2] = { { .mine = "a", .theirs = "b", .holding = &holding },
			      { .mine = "b", .theirs = "a", .holding = &holding } };
	struct cross_run run[2];
	pthread_t th[2];
	struct store *two = NULL;
	int busy = 0;

	need_backend();
	put("a");
	put("b");
	cr_assert_eq(store_open(&o, &two, &err), ST_OK, "%s", err.ptr);
	buf_release(&err);
	for (int i = 0; i < 2; i++) {
		run[i] = (struct cross_run){ two, &c[i], ST_INTERNAL };
		cr_assert_eq(pthread_create(&th[i], NULL, cross_main, &run[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	store_close(two);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(run[i].rc, ST_OK, "unit %d: %s", i, st_rc_str(run[i].rc));
		cr_assert_eq(atomic_load(&c[i].runs), 1, "unit %d ran %d times (a deadlock, retried)", i,
			     atomic_load(&c[i].runs));
		cr_assert_eq(c[i].first, ST_OK);
		cr_assert(c[i].second == ST_OK || c[i].second == ST_BUSY, "unit %d: %s", i,
			  st_rc_str(c[i].second));
		busy += c[i].second == ST_BUSY;
		cr_assert_str_eq(c[i].in_step, "100ms", "unit %d", i);
		cr_assert_str_eq(c[i].after, "0", "unit %d: lock_timeout after the step", i);
	}
	cr_assert_geq(busy, 1, "both second steps got the other's row while it was held");
	cr_assert_eq(sfx_int(S, "SELECT sum(n) FROM kv", NULL), 4 - busy);
	cr_assert_eq(sfx_pg_deadlocks(pg_db), 0);
}

/* A unit whose run will be rolled back and run again (a 40001 in a step it
 * recovered from) sends nothing more: its next statement returns ST_BUSY
 * at once, so the run ends and lets go of its locks instead of taking and
 * waiting for more. The second run writes. */
struct doomed {
	atomic_int runs;
	enum st_rc step, stmt, deferred, second_run;
};

static enum st_rc doomed_unit(struct tx *tx, void *arg)
{
	struct doomed *d = arg;

	if (atomic_fetch_add(&d->runs, 1) == 0) {
		d->step = tx_nested(tx, sfx_raise_40001, NULL);
		d->stmt = insert(tx, "after");
		d->deferred = tx_exec_deferred(tx, "INSERT INTO kv (k, v) VALUES ('deferred', 'x')", ST_NOARGS);
		return d->stmt ? d->stmt : d->deferred;
	}
	d->second_run = insert(tx, "after");
	return d->second_run;
}

PG_TEST(a_unit_marked_for_a_retry_sends_nothing_more)
{
	struct doomed d = { .second_run = ST_INTERNAL };

	need_backend();
	cr_assert_eq(store_run(S, doomed_unit, &d), ST_OK);
	cr_assert_eq(atomic_load(&d.runs), 2);
	cr_assert_eq(d.step, ST_BUSY);
	cr_assert_eq(d.stmt, ST_BUSY, "the doomed run's statement: %s", st_rc_str(d.stmt));
	cr_assert_eq(d.deferred, ST_BUSY, "the doomed run's deferred statement: %s", st_rc_str(d.deferred));
	cr_assert_eq(d.second_run, ST_OK);
	cr_assert_eq(count("after"), 1);
	cr_assert_eq(count("deferred"), 0);
}

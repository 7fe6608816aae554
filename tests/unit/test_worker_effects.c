/* test_worker_effects.c — job_commit_later: effects written in the
 * worker's batch unit, each under its own savepoint, on a real SQLite
 * store and (worker_effects_pg, a fresh database of the cluster named by
 * SETTLED_TEST_PG; skipped without) on PostgreSQL. This file defines its
 * own job kind table (settled_job_kinds), so the linker takes it instead
 * of job_kinds.c's: one kind, `effect`, whose effect records the job in a
 * table of the test's, adds one to a shared row (payload "row":k) and
 * fails for payloads that ask it to. Waits are polls with a deadline. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "job_kinds.h"
#include "metrics.h"
#include "queue.h"
#include "settled.h"
#include "store.h"
#include "worker.h"

#include "store_fixture.h"

#include "banned.h"

static atomic_int after_ok, after_failed, after_calls;

struct effect_arg {
	int64_t id;
	bool fail;
	bool once;  /* fails on the job's first attempt only (not permanently) */
	int row;    /* > 0: the shared row (t_rows) the effect adds one to */
};

static enum st_rc effect_unit(struct tx *tx, void *arg)
{
	struct effect_arg *a = arg;
	enum st_rc rc = tx_exec(tx, "INSERT INTO t_effects (job_id) VALUES ($1)",
				ST_ARGS(SV_I(a->id)), NULL);

	/* A row other jobs' effects update too: its lock is held until the
	 * unit commits, as a wallet's is by a ledger posting. */
	if (rc == ST_OK && a->row)
		rc = tx_exec(tx, "UPDATE t_rows SET n = n + 1 WHERE id = $1", ST_ARGS(SV_I(a->row)), NULL);

	/* The row above is written, then the effect fails: only this job's
	 * savepoint may roll it back. */
	return rc ? rc : a->fail ? ST_INVALID : a->once ? ST_UNPROCESSABLE : ST_OK;
}

static enum st_rc effect_after(struct job_ctx *ctx, void *arg, enum st_rc rc)
{
	bool once = ((struct effect_arg *)arg)->once;

	atomic_fetch_add(&after_calls, 1);
	free(arg);
	if (rc == ST_OK) {
		atomic_fetch_add(&after_ok, 1);
		return ST_OK;
	}
	atomic_fetch_add(&after_failed, 1);
	if (ctx->lost)
		return rc;
	ctx->permanent = !once;
	return job_failf(ctx, rc, "effect failed: %s", st_rc_str(rc));
}

static enum st_rc effect_job(struct job_ctx *ctx)
{
	struct effect_arg *a = calloc(1, sizeof(*a));
	const char *row = strstr(ctx->job->payload, "\"row\":");

	if (!a)
		return job_failf(ctx, ST_NOMEM, "out of memory");
	a->id = ctx->job->id;
	a->fail = strstr(ctx->job->payload, "fail") != NULL;
	a->once = strstr(ctx->job->payload, "once") != NULL && ctx->job->attempts == 0;
	a->row = row ? (int)strtol(row + 6, NULL, 10) : 0;
	return job_commit_later(ctx, effect_unit, a, effect_after);
}

const struct job_kind settled_job_kinds[] = {
	{ "effect", "default", effect_job, 0, false, NULL },
	/* The same handler declared in_store: in embedded mode its jobs are
	 * never leased (worker.h). */
	{ "stored_effect", "stored", effect_job, 0, true, NULL },
};
const size_t settled_njob_kinds = 2;

static struct store *st;
static struct settled app;
static struct config cfg;
static char dir[64];
static char pg_db[64];
static char pg_url[2048];

#define ROWS 4 /* shared rows t_rows 1..ROWS */

static enum st_rc create_unit(struct tx *tx, void *arg)
{
	enum st_rc rc;

	(void)arg;
	rc = tx_exec(tx, "CREATE TABLE t_effects (job_id BIGINT PRIMARY KEY)", ST_NOARGS, NULL);
	if (!rc)
		rc = tx_exec(tx, "CREATE TABLE t_rows (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)", ST_NOARGS, NULL);
	for (int i = 1; !rc && i <= ROWS; i++)
		rc = tx_exec(tx, "INSERT INTO t_rows (id, n) VALUES ($1, 0)", ST_ARGS(SV_I(i)), NULL);
	return rc;
}

static void setup_common(struct store_options *opt)
{
	struct buf err = BUF_INIT(1024);

	cr_assert_eq(store_open(opt, &st, &err), ST_OK, "store_open: %s", err.ptr);
	buf_release(&err);
	cr_assert_eq(store_run(st, create_unit, NULL), ST_OK);
	atomic_store(&after_ok, 0);
	atomic_store(&after_failed, 0);
	atomic_store(&after_calls, 0);
	memset(&cfg, 0, sizeof(cfg));
	cfg.workers = 2;
	cfg.job_lease_ms = 600000;
	cfg.job_base_delay_ms = 1000;
	cfg.job_max_delay_ms = 600000;
	cfg.job_max_attempts = 8;
	memset(&app, 0, sizeof(app));
	app.cfg = &cfg;
	app.store = st;
	cr_assert_eq(randpool_init(&app.rand), ST_OK);
	snprintf(app.instance_id, sizeof(app.instance_id), "test-instance");
	log_init(&app.log, 2, (enum log_level)(LOG_ERROR + 1)); /* quiet: failures are expected */
	app.metrics = metrics_new();
	cr_assert_not_null(app.metrics);
	cr_assert_eq(settled_metrics_init(&app.m, app.metrics), ST_OK);
}

static void setup(void)
{
	struct store_options opt = { 0 };
	char path[128];

	pg_db[0] = '\0';
	snprintf(dir, sizeof(dir), "/tmp/settled-wfx-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/settled.db", dir);
	opt.sqlite_path = path;
	setup_common(&opt);
}

static void setup_pg(void)
{
	const char *admin = getenv("SETTLED_TEST_PG");
	struct store_options opt = { 0 };

	dir[0] = pg_db[0] = '\0';
	st = NULL;
	if (!admin || !*admin)
		return; /* the test body skips */
	sfx_pg_create_db("t_wfx", pg_db, sizeof(pg_db), pg_url, sizeof(pg_url));
	opt.database_url = pg_url;
	setup_common(&opt);
}

static void teardown(void)
{
	char cmd[160];

	store_close(st); /* accepts NULL: closed by the test, or skipped */
	st = NULL;
	if (app.metrics) {
		randpool_destroy(&app.rand);
		metrics_free(app.metrics);
	}
	if (dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		cr_assert_eq(system(cmd), 0);
	}
	if (pg_db[0])
		sfx_pg_drop_db(pg_db);
}

struct enq {
	int n, fail_every;
	bool rows;  /* job i adds one to t_rows (i % ROWS) + 1 */
	int once_every; /* job i (not failing) fails its first attempt only */
	bool in_store;  /* the stored_effect kind */
};

static enum st_rc enqueue_unit(struct tx *tx, void *arg)
{
	struct enq *e = arg;

	for (int i = 1; i <= e->n; i++) {
		bool fail = e->fail_every && i % e->fail_every == 0;
		char payload[32] = "{}";
		enum st_rc rc;

		if (fail)
			snprintf(payload, sizeof(payload), "{\"fail\":1}");
		else if (e->once_every && i % e->once_every == 0)
			snprintf(payload, sizeof(payload), "{\"once\":1}");
		else if (e->rows)
			snprintf(payload, sizeof(payload), "{\"row\":%d}", i % ROWS + 1);
		rc = queue_enqueue(tx, e->in_store ? "stored" : "default",
				   e->in_store ? "stored_effect" : "effect", payload, NULL, 0, 0);

		if (rc)
			return rc;
	}
	return ST_OK;
}

struct seen {
	int64_t completed, dead, running, available, rows, rows_of_dead, attempts;
};

static int64_t one(struct tx *tx, const char *sql)
{
	struct st_rows *rows = NULL;
	int64_t n;

	cr_assert_eq(tx_query(tx, sql, ST_NOARGS, &rows), ST_OK, "%s", sql);
	n = rows_i64(rows, 0, 0);
	rows_free(rows);
	return n;
}

static enum st_rc seen_unit(struct tx *tx, void *arg)
{
	struct seen *s = arg;

	s->completed = one(tx, "SELECT count(*) FROM jobs WHERE state = 'completed'");
	s->dead = one(tx, "SELECT count(*) FROM jobs WHERE state = 'dead'");
	s->running = one(tx, "SELECT count(*) FROM jobs WHERE state = 'running'");
	s->available = one(tx, "SELECT count(*) FROM jobs WHERE state = 'available'");
	s->rows = one(tx, "SELECT count(*) FROM t_effects");
	s->rows_of_dead = one(tx, "SELECT count(*) FROM t_effects e JOIN jobs j ON j.id = e.job_id"
				  " WHERE j.state <> 'completed'");
	s->attempts = one(tx, "SELECT coalesce(sum(attempts), 0) FROM jobs WHERE state = 'completed'");
	return ST_OK;
}

static struct seen seen(void)
{
	struct seen s;

	memset(&s, 0, sizeof(s));
	cr_assert_eq(store_read(st, seen_unit, &s), ST_OK);
	return s;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void drain(int n)
{
	struct worker_pool *p = NULL;
	struct buf err = BUF_INIT(256);
	int waited = 0;

	cr_assert_eq(worker_pool_start(&app, &p, &err), ST_OK, "%s", err.ptr);
	cr_assert_not_null(p);
	while (atomic_load(&after_calls) < n && waited < 60000) {
		sleep_ms(20);
		waited += 20;
	}
	worker_pool_stop(p);
	buf_release(&err);
}

/* Every effect commits with its job's completion, exactly once. */
static void check_effects_commit_with_their_completions(void)
{
	struct enq e = { .n = 1500 };
	struct seen s;

	cr_assert_eq(store_run(st, enqueue_unit, &e), ST_OK);
	drain(e.n);
	s = seen();
	cr_assert_eq(atomic_load(&after_calls), e.n, "after ran once per job");
	cr_assert_eq(atomic_load(&after_ok), e.n);
	cr_assert_eq(s.completed, e.n);
	cr_assert_eq(s.rows, e.n, "one effect per job (the table's key refuses a second)");
	cr_assert_eq(s.attempts, 0);
}

/* An effect that fails inside a batch rolls back alone: its row is not
 * written, its job fails by the usual rules (permanent here: the DLQ), and
 * the other jobs of its batch commit their effects and complete. */
static void check_a_failing_effect_rolls_back_alone(void)
{
	struct enq e = { .n = 1000, .fail_every = 7 };
	int failing = e.n / e.fail_every;
	struct seen s;

	cr_assert_eq(store_run(st, enqueue_unit, &e), ST_OK);
	drain(e.n);
	s = seen();
	cr_assert_eq(atomic_load(&after_calls), e.n, "after ran once per job");
	cr_assert_eq(atomic_load(&after_failed), failing);
	cr_assert_eq(s.dead, failing, "dead: %lld", (long long)s.dead);
	cr_assert_eq(s.completed, e.n - failing);
	cr_assert_eq(s.running + s.available, 0);
	cr_assert_eq(s.rows, e.n - failing, "the failing effects' rows were rolled back");
	cr_assert_eq(s.rows_of_dead, 0);
}

Test(worker_effects, effects_commit_with_their_completions, .init = setup, .fini = teardown)
{
	check_effects_commit_with_their_completions();
}

Test(worker_effects, a_failing_effect_rolls_back_alone, .init = setup, .fini = teardown)
{
	check_a_failing_effect_rolls_back_alone();
}

/* SQLite: records every job that is ever written running. */
static enum st_rc running_trigger_unit(struct tx *tx, void *arg)
{
	enum st_rc rc;

	(void)arg;
	rc = tx_exec(tx, "CREATE TABLE t_running (job_id BIGINT)", ST_NOARGS, NULL);
	if (!rc)
		rc = tx_exec(tx,
			     "CREATE TRIGGER t_running_seen AFTER UPDATE OF state ON jobs"
			     " WHEN NEW.state = 'running' BEGIN"
			     " INSERT INTO t_running (job_id) VALUES (NEW.id); END",
			     ST_NOARGS, NULL);
	return rc;
}

/* An in_store kind: each effect commits once with its job's completion;
 * a failing one rolls back alone and its job goes to the DLQ; one that
 * fails its first attempt has that attempt recorded (attempts, error) and
 * is retried after its backoff, then completes. In embedded mode none of
 * these jobs is ever written running (no lease); on PostgreSQL they are
 * leased as any other. */
static void check_in_store_jobs(bool unleased)
{
	struct enq e = { .n = 700, .fail_every = 7, .once_every = 11, .in_store = true };
	int failing = e.n / e.fail_every, once = 0;
	struct seen s;

	for (int i = 1; i <= e.n; i++)
		once += i % e.fail_every != 0 && i % e.once_every == 0;
	cfg.job_base_delay_ms = 50; /* the retries' backoff: up to 50 ms */
	if (unleased)
		cr_assert_eq(store_run(st, running_trigger_unit, NULL), ST_OK);
	cr_assert_eq(store_run(st, enqueue_unit, &e), ST_OK);
	drain(e.n + once);
	s = seen();
	cr_assert_eq(atomic_load(&after_calls), e.n + once, "after ran once per attempt (%d)",
		     atomic_load(&after_calls));
	cr_assert_eq(atomic_load(&after_failed), failing + once);
	cr_assert_eq(s.dead, failing, "dead: %lld", (long long)s.dead);
	cr_assert_eq(s.completed, e.n - failing);
	cr_assert_eq(s.running + s.available, 0);
	cr_assert_eq(s.rows, e.n - failing, "one effect per completed job, none of the failed");
	cr_assert_eq(s.rows_of_dead, 0);
	cr_assert_eq(s.attempts, once, "each first-attempt failure recorded");
	cr_assert_eq(sfx_int(st, "SELECT count(*) FROM jobs WHERE state = 'completed' AND attempts = 1"
				 " AND last_error = 'effect failed: unprocessable'", NULL),
		     once, "the failed attempt's error kept");
	cr_assert_eq(sfx_int(st, "SELECT count(*) FROM jobs WHERE state = 'dead' AND attempts = 1"
				 " AND last_error = 'effect failed: invalid'", NULL),
		     failing);
	if (unleased)
		cr_assert_eq(sfx_int(st, "SELECT count(*) FROM t_running", NULL), 0,
			     "an in_store job was written running");
}

Test(worker_effects, in_store_jobs_need_no_lease, .init = setup, .fini = teardown, .timeout = 120)
{
	check_in_store_jobs(true);
}

/* PostgreSQL: the same, and effects whose units cross on shared rows. */

static void need_pg(void)
{
	sfx_need_backend(st);
}

Test(worker_effects_pg, effects_commit_with_their_completions, .init = setup_pg, .fini = teardown,
     .timeout = 120)
{
	need_pg();
	check_effects_commit_with_their_completions();
}

Test(worker_effects_pg, a_failing_effect_rolls_back_alone, .init = setup_pg, .fini = teardown,
     .timeout = 120)
{
	need_pg();
	check_a_failing_effect_rolls_back_alone();
}

Test(worker_effects_pg, in_store_jobs_are_leased_as_any, .init = setup_pg, .fini = teardown,
     .timeout = 120)
{
	need_pg();
	check_in_store_jobs(false);
}

/* Every effect also adds one to one of ROWS shared rows, so the batch
 * units of the 4 workers, each holding the rows of its effects until its
 * COMMIT, ask for one another's rows in no common order: the crossing
 * that deadlocked all four PostgreSQL writers again and again (a second
 * each, PostgreSQL's deadlock_timeout) until every write unit of the
 * server queued behind them. An effect now waits only the store's lock
 * timeout in its unit and is committed alone when it would wait longer:
 * every job completes with its effect exactly once, the rows count every
 * effect once, and PostgreSQL never found a deadlock. */
Test(worker_effects_pg, effects_crossing_on_shared_rows_never_deadlock, .init = setup_pg,
     .fini = teardown, .timeout = 120)
{
	struct enq e = { .n = 1000, .rows = true };
	struct seen s;
	int64_t sum;

	need_pg();
	cfg.workers = 4;
	cr_assert_eq(store_run(st, enqueue_unit, &e), ST_OK);
	drain(e.n);
	s = seen();
	sum = sfx_int(st, "SELECT sum(n) FROM t_rows", NULL);
	cr_assert_eq(atomic_load(&after_calls), e.n, "after ran once per job (%d)", atomic_load(&after_calls));
	cr_assert_eq(atomic_load(&after_ok), e.n);
	cr_assert_eq(s.completed, e.n);
	cr_assert_eq(s.rows, e.n, "one effect per job");
	cr_assert_eq(sum, e.n, "each effect counted once on its shared row");
	/* The backends report their counters when they end. */
	store_close(st);
	st = NULL;
	for (int i = 0; i < 50 && sfx_pg_deadlocks(pg_db) == 0; i++)
		sleep_ms(20);
	cr_assert_eq(sfx_pg_deadlocks(pg_db), 0, "PostgreSQL found deadlocks between the effects' units");
}

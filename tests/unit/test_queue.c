/* test_queue.c — the durable job queue on a real SQLite store.
 *
 * Each test opens a fresh store in a temp dir with an injected clock, so
 * lease expiry and backoff are checked by moving the clock, never by
 * sleeping. The backoff arithmetic is checked value by value with an
 * injected random source. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue.h"
#include "settled.h"
#include "store.h"
#include "worker.h"

#include "banned.h"

#define NOW0 INT64_C(1700000000000)
#define LEASE 30000

static struct store *st;
static char dir[64];
static int64_t fake_now;

static int64_t fake_clock(void *arg)
{
	(void)arg;
	return __atomic_load_n(&fake_now, __ATOMIC_SEQ_CST);
}

static void advance(int64_t ms)
{
	__atomic_add_fetch(&fake_now, ms, __ATOMIC_SEQ_CST);
}

static void setup(void)
{
	struct store_options opt = { 0 };
	struct buf err = BUF_INIT(1024);
	char path[128];

	snprintf(dir, sizeof(dir), "/tmp/settled-queue-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/settled.db", dir);
	opt.sqlite_path = path;
	cr_assert_eq(store_open(&opt, &st, &err), ST_OK, "store_open: %s", err.ptr);
	buf_release(&err);
	fake_now = NOW0;
	st->clock_ms = fake_clock;
}

static void teardown(void)
{
	char cmd[128];

	store_close(st);
	st = NULL;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

/* ---- helpers: each runs one write unit through the real writer ---- */

struct enq {
	struct job_spec spec;
	int64_t id;
	bool inserted;
};

static enum st_rc enq_unit(struct tx *tx, void *arg)
{
	struct enq *e = arg;

	return queue_enqueue_spec(tx, &e->spec, &e->id, &e->inserted);
}

static int64_t enqueue(const char *queue, const char *key, int64_t run_at, int max_attempts)
{
	struct enq e = { .spec = { .queue = queue, .kind = "noop", .payload = "{\"n\":1}",
				   .unique_key = key, .run_at = run_at,
				   .max_attempts = max_attempts } };

	cr_assert_eq(store_run(st, enq_unit, &e), ST_OK);
	return e.inserted ? e.id : 0;
}

struct claim {
	const char *queue;
	const char *owner;
	int max;
	struct job jobs[64];
	int n;
};

static enum st_rc claim_unit(struct tx *tx, void *arg)
{
	struct claim *c = arg;

	return queue_claim(tx, c->queue, c->max, c->owner, LEASE, c->jobs, &c->n);
}

static int claim(struct claim *c, const char *queue, const char *owner, int max)
{
	memset(c, 0, sizeof(*c));
	c->queue = queue;
	c->owner = owner;
	c->max = max;
	cr_assert_eq(store_run(st, claim_unit, c), ST_OK);
	return c->n;
}

static void claim_release(struct claim *c)
{
	for (int i = 0; i < c->n; i++)
		job_release(&c->jobs[i]);
}

struct get {
	int64_t id;
	struct job job;
	enum st_rc rc;
};

static enum st_rc get_unit(struct tx *tx, void *arg)
{
	struct get *g = arg;

	g->rc = queue_get(tx, g->id, &g->job);
	return ST_OK;
}

static struct job get_job(int64_t id)
{
	struct get g = { .id = id };

	cr_assert_eq(store_read(st, get_unit, &g), ST_OK);
	cr_assert_eq(g.rc, ST_OK, "job %lld not found", (long long)id);
	return g.job;
}

struct op {
	int64_t id;
	const char *owner;
	const char *error;
	int64_t delay;
	bool permanent;
	enum job_state state;
	int64_t a, b;
	bool all;
};

static enum st_rc complete_unit(struct tx *tx, void *arg)
{
	struct op *o = arg;

	return queue_complete(tx, o->id, o->owner);
}

static enum st_rc fail_unit(struct tx *tx, void *arg)
{
	struct op *o = arg;

	return queue_fail(tx, o->id, o->owner, o->error, o->delay, o->permanent, &o->state);
}

static enum st_rc release_unit(struct tx *tx, void *arg)
{
	struct op *o = arg;

	return queue_release(tx, o->id, o->owner);
}

static enum st_rc sweep_unit(struct tx *tx, void *arg)
{
	struct op *o = arg;

	return queue_sweep_leases(tx, 1000, o->all, NULL, NULL, &o->a, &o->b);
}

static enum st_rc retry_unit(struct tx *tx, void *arg)
{
	struct op *o = arg;

	return queue_dlq_retry(tx, o->id);
}

static enum st_rc delete_unit(struct tx *tx, void *arg)
{
	struct op *o = arg;

	return queue_dlq_delete(tx, o->id);
}

/* The "effect" of a handler: a row in a scratch table. */
static enum st_rc effect_setup_unit(struct tx *tx, void *arg)
{
	(void)arg;
	return tx_exec(tx, "CREATE TABLE IF NOT EXISTS test_effects (job_id INTEGER NOT NULL)",
		       ST_NOARGS, NULL);
}

struct effect {
	int64_t job_id;
	const char *owner;
	int64_t count;
};

/* What worker.c's commit unit does: effect, then the fenced completion. */
static enum st_rc effect_and_complete_unit(struct tx *tx, void *arg)
{
	struct effect *e = arg;
	enum st_rc rc;

	rc = tx_exec(tx, "INSERT INTO test_effects (job_id) VALUES ($1)", ST_ARGS(SV_I(e->job_id)),
		     NULL);
	if (rc)
		return rc;
	return queue_complete(tx, e->job_id, e->owner);
}

static enum st_rc effect_count_unit(struct tx *tx, void *arg)
{
	struct effect *e = arg;
	struct st_rows *rows = NULL;
	enum st_rc rc;

	rc = tx_query(tx, "SELECT count(*) FROM test_effects WHERE job_id = $1",
		      ST_ARGS(SV_I(e->job_id)), &rows);
	if (rc)
		return rc;
	e->count = rows_i64(rows, 0, 0);
	rows_free(rows);
	return ST_OK;
}

static int64_t effects_of(int64_t job_id)
{
	struct effect e = { .job_id = job_id };

	cr_assert_eq(store_read(st, effect_count_unit, &e), ST_OK);
	return e.count;
}

static int64_t count_state(enum job_state s);

/* ---- enqueue ---- */

Test(queue, enqueue_is_idempotent_by_unique_key, .init = setup, .fini = teardown)
{
	int64_t a = enqueue("q", "key-1", 0, 0);
	int64_t b = enqueue("q", "key-1", 0, 0);
	int64_t c = enqueue("q", NULL, 0, 0);
	int64_t d = enqueue("q", NULL, 0, 0);
	struct job j;

	cr_assert_gt(a, 0);
	cr_assert_eq(b, 0, "the same unique key enqueues nothing");
	cr_assert(c > 0 && d > 0 && c != d, "no key: every enqueue inserts");
	cr_assert_eq(count_state(JOB_AVAILABLE), 3);

	j = get_job(a);
	cr_assert_str_eq(j.queue, "q");
	cr_assert_str_eq(j.kind, "noop");
	cr_assert_str_eq(j.payload, "{\"n\":1}");
	cr_assert_str_eq(j.unique_key, "key-1");
	cr_assert_eq(j.state, JOB_AVAILABLE);
	cr_assert_eq(j.attempts, 0);
	cr_assert_eq(j.max_attempts, QUEUE_DEFAULT_MAX_ATTEMPTS);
	cr_assert_eq(j.run_at, NOW0, "run_at 0 means now");
	cr_assert_eq(j.created_at, NOW0);
	cr_assert_null(j.last_error);
	job_release(&j);

	/* The key stays taken after the job finished: still no second job. */
	{
		struct claim c1;
		struct op o = { .id = a };

		claim(&c1, "q", "w#1", 10);
		o.owner = "w#1";
		cr_assert_eq(store_run(st, complete_unit, &o), ST_OK);
		claim_release(&c1);
		cr_assert_eq(enqueue("q", "key-1", 0, 0), 0);
	}
}

static enum st_rc bad_enqueue_unit(struct tx *tx, void *arg)
{
	enum st_rc *rcs = arg;

	rcs[0] = queue_enqueue(tx, "", "noop", "{}", NULL, 0, 0);
	rcs[1] = queue_enqueue(tx, "q", NULL, "{}", NULL, 0, 0);
	rcs[2] = queue_enqueue(tx, "q", "noop", "{not json", NULL, 0, 0);
	rcs[3] = queue_enqueue(tx, "a-queue-name-that-is-far-too-long-to-keep", "noop", "{}", NULL,
			       0, 0);
	return ST_OK;
}

Test(queue, enqueue_refuses_bad_input, .init = setup, .fini = teardown)
{
	enum st_rc rcs[4];

	cr_assert_eq(store_run(st, bad_enqueue_unit, rcs), ST_OK);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(rcs[i], ST_INVALID, "case %d", i);
	cr_assert_eq(count_state(JOB_AVAILABLE), 0);
}

/* The job commits with its cause or not at all. */
static enum st_rc enqueue_then_fail_unit(struct tx *tx, void *arg)
{
	enum st_rc rc = queue_enqueue(tx, "q", "noop", "{}", "doomed", 0, 0);

	(void)arg;
	return rc ? rc : ST_CONFLICT; /* the cause fails: roll everything back */
}

Test(queue, enqueue_rolls_back_with_its_unit, .init = setup, .fini = teardown)
{
	cr_assert_eq(store_run(st, enqueue_then_fail_unit, NULL), ST_CONFLICT);
	cr_assert_eq(count_state(JOB_AVAILABLE), 0);
	cr_assert_gt(enqueue("q", "doomed", 0, 0), 0, "the key was never taken");
}

/* ---- claim ---- */

Test(queue, claim_takes_due_jobs_in_run_at_order, .init = setup, .fini = teardown)
{
	int64_t late = enqueue("q", NULL, NOW0 + 5000, 0);
	int64_t first = enqueue("q", NULL, NOW0 - 2000, 0);
	int64_t second = enqueue("q", NULL, NOW0 - 1000, 0);
	int64_t other = enqueue("other", NULL, 0, 0);
	struct claim c;

	cr_assert_eq(claim(&c, "q", "w#1", 1), 1, "limit honoured");
	cr_assert_eq(c.jobs[0].id, first, "oldest run_at first");
	cr_assert_eq(c.jobs[0].state, JOB_RUNNING);
	cr_assert_str_eq(c.jobs[0].lease_owner, "w#1");
	cr_assert_eq(c.jobs[0].lease_expires_at, NOW0 + LEASE);
	claim_release(&c);

	cr_assert_eq(claim(&c, "q", "w#2", 10), 1, "only due jobs of the queue");
	cr_assert_eq(c.jobs[0].id, second);
	claim_release(&c);
	cr_assert_eq(claim(&c, "q", "w#3", 10), 0, "running jobs are not claimed again");

	advance(5000);
	cr_assert_eq(claim(&c, "q", "w#4", 10), 1);
	cr_assert_eq(c.jobs[0].id, late);
	claim_release(&c);

	cr_assert_eq(claim(&c, "other", "w#5", 10), 1);
	cr_assert_eq(c.jobs[0].id, other);
	claim_release(&c);
}

/* Eight threads claim 400 jobs concurrently: each exactly once. */
struct racer {
	int claimed[400];
	int n;
	int idx;
};

static void *race_main(void *arg)
{
	struct racer *r = arg;
	char owner[32];

	for (int round = 0;; round++) {
		struct claim c;

		snprintf(owner, sizeof(owner), "t%d#%d", r->idx, round);
		if (!claim(&c, "q", owner, 7))
			break;
		for (int i = 0; i < c.n; i++)
			r->claimed[r->n++] = (int)c.jobs[i].id;
		claim_release(&c);
	}
	return NULL;
}

Test(queue, concurrent_claims_never_share_a_job, .init = setup, .fini = teardown)
{
	pthread_t th[8];
	struct racer *rs = calloc(8, sizeof(*rs));
	static char seen[1000];
	int total = 0;

	memset(seen, 0, sizeof(seen));
	for (int i = 0; i < 400; i++)
		enqueue("q", NULL, 0, 0);
	for (int i = 0; i < 8; i++) {
		rs[i].idx = i;
		pthread_create(&th[i], NULL, race_main, &rs[i]);
	}
	for (int i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 8; i++)
		for (int k = 0; k < rs[i].n; k++) {
			cr_assert_eq(seen[rs[i].claimed[k]], 0, "job %d claimed twice", rs[i].claimed[k]);
			seen[rs[i].claimed[k]] = 1;
			total++;
		}
	cr_assert_eq(total, 400);
	free(rs);
}

/* ---- completion fenced by the lease ---- */

Test(queue, complete_needs_the_current_lease, .init = setup, .fini = teardown)
{
	int64_t id = enqueue("q", NULL, 0, 0);
	struct claim a, b;
	struct op o = { .id = id };
	struct effect ea = { .job_id = id, .owner = "A#1" }, eb = { .job_id = id, .owner = "B#1" };
	struct job j;

	cr_assert_eq(store_run(st, effect_setup_unit, NULL), ST_OK);
	cr_assert_eq(claim(&a, "q", "A#1", 1), 1);

	/* A stalls past its lease; the sweeper takes the job back; B claims it. */
	advance(LEASE + 1);
	cr_assert_eq(store_run(st, sweep_unit, &o), ST_OK);
	cr_assert_eq(o.a, 1);
	cr_assert_eq(claim(&b, "q", "B#1", 1), 1);

	/* A wakes up and tries to commit its effect: rolled back whole. */
	cr_assert_eq(store_run(st, effect_and_complete_unit, &ea), ST_CONFLICT);
	cr_assert_eq(effects_of(id), 0, "a stolen job's effect must not commit");
	j = get_job(id);
	cr_assert_eq(j.state, JOB_RUNNING);
	cr_assert_str_eq(j.lease_owner, "B#1");
	job_release(&j);

	/* B, the lease holder, commits effect and completion together, once. */
	cr_assert_eq(store_run(st, effect_and_complete_unit, &eb), ST_OK);
	cr_assert_eq(effects_of(id), 1);
	j = get_job(id);
	cr_assert_eq(j.state, JOB_COMPLETED);
	cr_assert_eq(j.finished_at, fake_now);
	cr_assert_str_eq(j.lease_owner, "");
	job_release(&j);

	/* A retry of B's commit (say, a duplicate delivery) changes nothing. */
	cr_assert_eq(store_run(st, effect_and_complete_unit, &eb), ST_CONFLICT);
	cr_assert_eq(effects_of(id), 1);
	o.owner = "B#1";
	cr_assert_eq(store_run(st, complete_unit, &o), ST_CONFLICT);
	claim_release(&a);
	claim_release(&b);
}

struct many {
	const char *owner;
	int64_t ids[4];
	int n;
	bool done[4];
};

static enum st_rc complete_many_unit(struct tx *tx, void *arg)
{
	struct many *m = arg;

	return queue_complete_many(tx, m->owner, m->ids, m->n, m->done);
}

/* A worker's batch completion: one statement for jobs claimed together,
 * each still fenced by its own lease; a job whose lease is gone is left
 * as it is and reported, the others complete. */
Test(queue, complete_many_fences_each_job_alone, .init = setup, .fini = teardown)
{
	int64_t id1 = enqueue("q", NULL, 0, 0), id2 = enqueue("q", NULL, 0, 0),
		id3 = enqueue("q", NULL, 0, 0);
	struct claim a, b;
	struct many m = { .owner = "A#1", .ids = { id1, id2, id3 }, .n = 3 };
	struct op o = { .id = id2, .owner = "A#1" };
	struct job j;

	cr_assert_eq(claim(&a, "q", "A#1", 3), 3);
	/* id2's lease is lost: handed back and claimed again by B. */
	cr_assert_eq(store_run(st, release_unit, &o), ST_OK);
	cr_assert_eq(claim(&b, "q", "B#1", 1), 1);
	cr_assert_eq(b.jobs[0].id, id2);

	cr_assert_eq(store_run(st, complete_many_unit, &m), ST_OK);
	cr_assert(m.done[0] && !m.done[1] && m.done[2]);
	j = get_job(id1);
	cr_assert_eq(j.state, JOB_COMPLETED);
	cr_assert_eq(j.finished_at, fake_now);
	job_release(&j);
	j = get_job(id2);
	cr_assert_eq(j.state, JOB_RUNNING, "B's job must not be completed by A");
	cr_assert_str_eq(j.lease_owner, "B#1");
	job_release(&j);
	j = get_job(id3);
	cr_assert_eq(j.state, JOB_COMPLETED);
	job_release(&j);

	/* Again (a duplicate): nothing is ours any more, nothing changes. */
	cr_assert_eq(store_run(st, complete_many_unit, &m), ST_OK);
	cr_assert(!m.done[0] && !m.done[1] && !m.done[2]);
	claim_release(&a);
	claim_release(&b);
}

/* The common case, every lease still ours (SQLite completes them with the
 * UPDATE alone): all reported done, all completed, a job of another owner
 * in the same queue untouched. */
Test(queue, complete_many_all_still_ours, .init = setup, .fini = teardown)
{
	int64_t id1 = enqueue("q", NULL, 0, 0), id2 = enqueue("q", NULL, 0, 0),
		id3 = enqueue("q", NULL, 0, 0);
	struct claim a, b;
	struct many m = { .owner = "A#1", .ids = { id1, id2 }, .n = 2 };
	struct job j;

	cr_assert_eq(claim(&a, "q", "A#1", 2), 2);
	cr_assert_eq(claim(&b, "q", "B#1", 1), 1);
	cr_assert_eq(b.jobs[0].id, id3);
	cr_assert_eq(store_run(st, complete_many_unit, &m), ST_OK);
	cr_assert(m.done[0] && m.done[1]);
	for (int i = 0; i < 2; i++) {
		j = get_job(m.ids[i]);
		cr_assert_eq(j.state, JOB_COMPLETED);
		cr_assert_eq(j.finished_at, fake_now);
		job_release(&j);
	}
	j = get_job(id3);
	cr_assert_eq(j.state, JOB_RUNNING);
	cr_assert_str_eq(j.lease_owner, "B#1");
	job_release(&j);
	claim_release(&a);
	claim_release(&b);
}

/* job_commit (worker.c) gives the same guarantee through the worker API. */
static enum st_rc effect_only_unit(struct tx *tx, void *arg)
{
	int64_t *id = arg;

	return tx_exec(tx, "INSERT INTO test_effects (job_id) VALUES ($1)", ST_ARGS(SV_I(*id)), NULL);
}

Test(queue, job_commit_rolls_back_the_effect_of_a_lost_lease, .init = setup, .fini = teardown)
{
	struct settled app;
	int64_t id = enqueue("q", NULL, 0, 0);
	struct claim a, b;
	struct op o = { 0 };
	struct job_ctx ctx;

	memset(&app, 0, sizeof(app));
	app.store = st;
	cr_assert_eq(store_run(st, effect_setup_unit, NULL), ST_OK);
	cr_assert_eq(claim(&a, "q", "A#1", 1), 1);
	advance(LEASE);
	cr_assert_eq(store_run(st, sweep_unit, &o), ST_OK);
	cr_assert_eq(claim(&b, "q", "B#1", 1), 1);

	memset(&ctx, 0, sizeof(ctx));
	ctx.app = &app;
	ctx.job = &a.jobs[0];
	cr_assert_eq(job_commit(&ctx, effect_only_unit, &id), ST_CONFLICT);
	cr_assert(ctx.lost);
	cr_assert_not(ctx.committed);
	cr_assert_eq(effects_of(id), 0);

	memset(&ctx, 0, sizeof(ctx));
	ctx.app = &app;
	ctx.job = &b.jobs[0];
	cr_assert_eq(job_commit(&ctx, effect_only_unit, &id), ST_OK);
	cr_assert(ctx.committed);
	cr_assert_eq(effects_of(id), 1);
	claim_release(&a);
	claim_release(&b);
}

/* ---- failure, backoff, the DLQ ---- */

Test(queue, failures_back_off_then_go_dead, .init = setup, .fini = teardown)
{
	int64_t id = enqueue("q", NULL, 0, 3);
	struct claim c;
	struct op o = { .id = id, .error = "rail: timeout" };
	struct job j;

	/* Attempt 1 fails: available again in 1 s. */
	cr_assert_eq(claim(&c, "q", "w#1", 1), 1);
	o.owner = "w#1";
	o.delay = 1000;
	cr_assert_eq(store_run(st, fail_unit, &o), ST_OK);
	cr_assert_eq(o.state, JOB_AVAILABLE);
	claim_release(&c);
	j = get_job(id);
	cr_assert_eq(j.attempts, 1);
	cr_assert_eq(j.run_at, NOW0 + 1000);
	cr_assert_str_eq(j.last_error, "rail: timeout");
	cr_assert_str_eq(j.lease_owner, "");
	cr_assert_eq(j.finished_at, 0);
	job_release(&j);
	cr_assert_eq(claim(&c, "q", "w#2", 1), 0, "not before the backoff elapsed");
	advance(999);
	cr_assert_eq(claim(&c, "q", "w#2", 1), 0);
	advance(1);

	/* Attempt 2 fails: 2 s. */
	cr_assert_eq(claim(&c, "q", "w#3", 1), 1);
	o.owner = "w#3";
	o.delay = 2000;
	cr_assert_eq(store_run(st, fail_unit, &o), ST_OK);
	cr_assert_eq(o.state, JOB_AVAILABLE);
	claim_release(&c);
	advance(2000);

	/* Attempt 3 of 3 fails: dead, whatever the delay. */
	cr_assert_eq(claim(&c, "q", "w#4", 1), 1);
	o.owner = "w#4";
	o.error = "rail: still down";
	cr_assert_eq(store_run(st, fail_unit, &o), ST_OK);
	cr_assert_eq(o.state, JOB_DEAD);
	claim_release(&c);
	j = get_job(id);
	cr_assert_eq(j.state, JOB_DEAD);
	cr_assert_eq(j.attempts, 3);
	cr_assert_eq(j.finished_at, fake_now);
	cr_assert_str_eq(j.last_error, "rail: still down");
	job_release(&j);
	advance(INT64_C(86400000));
	cr_assert_eq(claim(&c, "q", "w#5", 1), 0, "dead jobs never run by themselves");

	/* A failure report from someone without the lease is refused. */
	o.owner = "w#4";
	cr_assert_eq(store_run(st, fail_unit, &o), ST_CONFLICT);
}

/* ---- unleased jobs: read, then completed or failed fenced by the row ---- */

struct take {
	const char *queue;
	int max;
	int64_t after_run_at, after_id;
	struct job jobs[8];
	int n;
};

static enum st_rc take_unit(struct tx *tx, void *arg)
{
	struct take *t = arg;

	return queue_take_due(tx, t->queue, t->max, t->after_run_at, t->after_id, t->jobs, &t->n);
}

static int take(struct take *t, const char *queue, int max, int64_t after_run_at, int64_t after_id)
{
	memset(t, 0, sizeof(*t));
	t->queue = queue;
	t->max = max;
	t->after_run_at = after_run_at;
	t->after_id = after_id;
	cr_assert_eq(store_read(st, take_unit, t), ST_OK, "a read connection is enough");
	return t->n;
}

static void take_release(struct take *t)
{
	for (int i = 0; i < t->n; i++)
		job_release(&t->jobs[i]);
}

struct unleased_op {
	const struct job *j;
	const char *error;
	int64_t delay;
	bool permanent;
	enum job_state state;
};

static enum st_rc complete_unleased_unit(struct tx *tx, void *arg)
{
	struct unleased_op *o = arg;

	return queue_complete_unleased(tx, o->j);
}

static enum st_rc fail_unleased_unit(struct tx *tx, void *arg)
{
	struct unleased_op *o = arg;

	return queue_fail_unleased(tx, o->j, o->error, o->delay, o->permanent, &o->state);
}

/* What worker.c's commit unit does for an unleased job. */
static enum st_rc effect_and_complete_unleased_unit(struct tx *tx, void *arg)
{
	struct unleased_op *o = arg;
	enum st_rc rc = tx_exec(tx, "INSERT INTO test_effects (job_id) VALUES ($1)",
				ST_ARGS(SV_I(o->j->id)), NULL);

	return rc ? rc : queue_complete_unleased(tx, o->j);
}

Test(queue, unleased_jobs_are_read_past_a_cursor_and_never_written_running,
     .init = setup, .fini = teardown)
{
	int64_t id1 = enqueue("q", NULL, 0, 0), id2 = enqueue("q", NULL, 0, 0);
	int64_t later = enqueue("q", NULL, NOW0 + 5000, 0), other = enqueue("r", NULL, 0, 0);
	struct take t, u;
	struct job j;

	(void)other;
	cr_assert_eq(take(&t, "q", 8, 0, 0), 2, "due jobs of the queue only");
	cr_assert_eq(t.jobs[0].id, id1);
	cr_assert_eq(t.jobs[1].id, id2);
	cr_assert_eq(t.jobs[0].state, JOB_AVAILABLE);
	cr_assert_str_eq(t.jobs[0].lease_owner, "");
	cr_assert_eq(take(&u, "q", 1, 0, 0), 1, "max is honoured");
	take_release(&u);
	/* Past the cursor (the last one handed out): nothing due yet. */
	cr_assert_eq(take(&u, "q", 8, t.jobs[1].run_at, t.jobs[1].id), 0);
	cr_assert_eq(take(&u, "q", 8, t.jobs[0].run_at, t.jobs[0].id), 1);
	cr_assert_eq(u.jobs[0].id, id2);
	take_release(&u);
	advance(5000);
	cr_assert_eq(take(&u, "q", 8, t.jobs[1].run_at, t.jobs[1].id), 1);
	cr_assert_eq(u.jobs[0].id, later);
	take_release(&u);
	/* Reading wrote nothing. */
	j = get_job(id1);
	cr_assert_eq(j.state, JOB_AVAILABLE);
	cr_assert_eq(j.updated_at, NOW0);
	job_release(&j);
	cr_assert_eq(count_state(JOB_RUNNING), 0);
	take_release(&t);
}

Test(queue, unleased_completion_and_failure_are_fenced_by_the_row, .init = setup, .fini = teardown)
{
	int64_t id = enqueue("q", NULL, 0, 3);
	struct take t, stale;
	struct unleased_op o = { .error = "cannot post: busy", .delay = 1000 };
	struct job j;

	cr_assert_eq(store_run(st, effect_setup_unit, NULL), ST_OK);
	cr_assert_eq(take(&stale, "q", 1, 0, 0), 1);

	/* Attempt 1 fails: recorded as for a leased job (attempts, error,
	 * backoff), straight from available. */
	advance(10);
	o.j = &stale.jobs[0];
	cr_assert_eq(store_run(st, fail_unleased_unit, &o), ST_OK);
	cr_assert_eq(o.state, JOB_AVAILABLE);
	j = get_job(id);
	cr_assert_eq(j.state, JOB_AVAILABLE);
	cr_assert_eq(j.attempts, 1);
	cr_assert_eq(j.run_at, NOW0 + 10 + 1000);
	cr_assert_str_eq(j.last_error, "cannot post: busy");
	cr_assert_eq(j.finished_at, 0);
	job_release(&j);

	/* The copy read before the failure can neither fail the job again
	 * nor complete it, and its effect rolls back with the completion. */
	cr_assert_eq(store_run(st, fail_unleased_unit, &o), ST_CONFLICT);
	cr_assert_eq(store_run(st, effect_and_complete_unleased_unit, &o), ST_CONFLICT);
	cr_assert_eq(effects_of(id), 0, "a stale copy's effect must not commit");
	cr_assert_eq(take(&t, "q", 1, 0, 0), 0, "not before the backoff elapsed");
	advance(1000);

	/* The retry, read again, commits its effect and completes, once. */
	cr_assert_eq(take(&t, "q", 1, 0, 0), 1);
	cr_assert_eq(t.jobs[0].attempts, 1);
	o.j = &t.jobs[0];
	cr_assert_eq(store_run(st, effect_and_complete_unleased_unit, &o), ST_OK);
	cr_assert_eq(effects_of(id), 1);
	j = get_job(id);
	cr_assert_eq(j.state, JOB_COMPLETED);
	cr_assert_eq(j.finished_at, fake_now);
	cr_assert_str_eq(j.lease_owner, "");
	job_release(&j);
	cr_assert_eq(store_run(st, effect_and_complete_unleased_unit, &o), ST_CONFLICT);
	cr_assert_eq(store_run(st, complete_unleased_unit, &o), ST_CONFLICT);
	cr_assert_eq(store_run(st, fail_unleased_unit, &o), ST_CONFLICT);
	cr_assert_eq(effects_of(id), 1);
	take_release(&t);
	take_release(&stale);
}

Test(queue, unleased_failures_go_dead_after_max_attempts_or_when_permanent,
     .init = setup, .fini = teardown)
{
	int64_t id = enqueue("q", NULL, 0, 2), perm = enqueue("p", NULL, 0, 8);
	struct take t;
	struct unleased_op o = { .error = "down", .delay = 0 };
	struct job j;

	cr_assert_eq(take(&t, "q", 1, 0, 0), 1);
	o.j = &t.jobs[0];
	cr_assert_eq(store_run(st, fail_unleased_unit, &o), ST_OK);
	cr_assert_eq(o.state, JOB_AVAILABLE);
	take_release(&t);
	advance(1);
	cr_assert_eq(take(&t, "q", 1, 0, 0), 1);
	o.j = &t.jobs[0];
	cr_assert_eq(store_run(st, fail_unleased_unit, &o), ST_OK);
	cr_assert_eq(o.state, JOB_DEAD, "the last attempt goes to the DLQ");
	take_release(&t);
	j = get_job(id);
	cr_assert_eq(j.state, JOB_DEAD);
	cr_assert_eq(j.attempts, 2);
	cr_assert_eq(j.finished_at, fake_now);
	job_release(&j);
	advance(INT64_C(86400000));
	cr_assert_eq(take(&t, "q", 1, 0, 0), 0, "dead jobs are not read");

	cr_assert_eq(take(&t, "p", 1, 0, 0), 1);
	o.j = &t.jobs[0];
	o.permanent = true;
	cr_assert_eq(store_run(st, fail_unleased_unit, &o), ST_OK);
	cr_assert_eq(o.state, JOB_DEAD);
	take_release(&t);
	j = get_job(perm);
	cr_assert_eq(j.attempts, 1);
	cr_assert_eq(j.state, JOB_DEAD);
	job_release(&j);
}

Test(queue, permanent_failure_goes_dead_at_once, .init = setup, .fini = teardown)
{
	int64_t id = enqueue("q", NULL, 0, 8);
	struct claim c;
	struct op o = { .id = id, .owner = "w#1", .error = "bad payload", .permanent = true };

	cr_assert_eq(claim(&c, "q", "w#1", 1), 1);
	cr_assert_eq(store_run(st, fail_unit, &o), ST_OK);
	cr_assert_eq(o.state, JOB_DEAD);
	claim_release(&c);
}

Test(queue, long_errors_are_truncated, .init = setup, .fini = teardown)
{
	int64_t id = enqueue("q", NULL, 0, 0);
	char *longerr = malloc(5000);
	struct claim c;
	struct op o = { .id = id, .owner = "w#1", .delay = 10 };
	struct job j;

	memset(longerr, 'x', 4999);
	longerr[4999] = '\0';
	o.error = longerr;
	cr_assert_eq(claim(&c, "q", "w#1", 1), 1);
	cr_assert_eq(store_run(st, fail_unit, &o), ST_OK);
	j = get_job(id);
	cr_assert_eq(strlen(j.last_error), QUEUE_ERROR_MAX);
	job_release(&j);
	claim_release(&c);
	free(longerr);
}

/* ---- leases ---- */

Test(queue, expired_leases_are_reclaimed_and_counted, .init = setup, .fini = teardown)
{
	int64_t id = enqueue("q", NULL, 0, 2);
	struct claim c;
	struct op o = { 0 };
	struct job j;

	cr_assert_eq(claim(&c, "q", "w#1", 1), 1);
	claim_release(&c);
	advance(LEASE - 1);
	cr_assert_eq(store_run(st, sweep_unit, &o), ST_OK);
	cr_assert_eq(o.a, 0, "a live lease is left alone");
	advance(1);
	cr_assert_eq(store_run(st, sweep_unit, &o), ST_OK);
	cr_assert_eq(o.a, 1);
	cr_assert_eq(o.b, 0);
	j = get_job(id);
	cr_assert_eq(j.state, JOB_AVAILABLE);
	cr_assert_eq(j.attempts, 1, "a lost worker counts as an attempt");
	cr_assert_str_eq(j.lease_owner, "");
	cr_assert_not_null(strstr(j.last_error, "lease expired"));
	job_release(&j);

	/* The second lost lease is the last attempt: dead, not looping. */
	cr_assert_eq(claim(&c, "q", "w#2", 1), 1);
	claim_release(&c);
	advance(LEASE);
	cr_assert_eq(store_run(st, sweep_unit, &o), ST_OK);
	cr_assert_eq(o.a, 1);
	cr_assert_eq(o.b, 1);
	j = get_job(id);
	cr_assert_eq(j.state, JOB_DEAD);
	job_release(&j);
}

Test(queue, sweep_all_takes_every_running_job, .init = setup, .fini = teardown)
{
	struct claim c;
	struct op o = { .all = true };

	enqueue("q", NULL, 0, 0);
	enqueue("q", NULL, 0, 0);
	cr_assert_eq(claim(&c, "q", "w#1", 5), 2);
	claim_release(&c);
	cr_assert_eq(store_run(st, sweep_unit, &o), ST_OK);
	cr_assert_eq(o.a, 2, "embedded restart: leases of the dead process need no expiry");
	cr_assert_eq(count_state(JOB_AVAILABLE), 2);
}

/* queue_sweep_leases hands each job it moved to dead to its dead_fn in
 * the sweep's own transaction: the callback's writes (the kind's on_dead:
 * the webhook event marked failed) commit with the job's death or not at
 * all, and a callback that fails fails the sweep. */
struct dead_seen {
	int calls;
	int64_t id;
	enum job_state state;
	int attempts;
	char kind[QUEUE_KIND_MAX + 1];
	char payload[64];
	char last_error[128];
	enum st_rc fail_with;    /* the callback's rc (after its write) */
	bool then_fail;          /* the unit fails after the sweep */
};

static enum st_rc dead_cb(struct tx *tx, void *arg, const struct job *j)
{
	struct dead_seen *d = arg;
	enum st_rc rc;

	d->calls++;
	d->id = j->id;
	d->state = j->state;
	d->attempts = j->attempts;
	snprintf(d->kind, sizeof(d->kind), "%s", j->kind);
	snprintf(d->payload, sizeof(d->payload), "%s", j->payload);
	snprintf(d->last_error, sizeof(d->last_error), "%s", j->last_error ? j->last_error : "");
	rc = tx_exec(tx, "INSERT INTO test_effects (job_id) VALUES ($1)", ST_ARGS(SV_I(j->id)), NULL);
	return rc ? rc : d->fail_with;
}

static enum st_rc sweep_dead_unit(struct tx *tx, void *arg)
{
	struct dead_seen *d = arg;
	int64_t a = 0, b = 0;
	enum st_rc rc;

	d->calls = 0;
	rc = queue_sweep_leases(tx, 1000, false, dead_cb, d, &a, &b);
	if (rc == ST_OK && (a != 2 || b != 1))
		return ST_INTERNAL;
	return rc ? rc : d->then_fail ? ST_CONFLICT : ST_OK;
}

Test(queue, a_job_swept_to_dead_is_handed_to_dead_fn_in_the_sweeps_unit, .init = setup,
     .fini = teardown)
{
	int64_t last = enqueue("q", NULL, 0, 1);   /* its first lease is its last attempt */
	int64_t other = enqueue("q", NULL, 0, 2);
	struct dead_seen d = { 0 };
	struct claim c;
	struct job j;

	cr_assert_eq(store_run(st, effect_setup_unit, NULL), ST_OK);
	cr_assert_eq(claim(&c, "q", "w#1", 2), 2);
	claim_release(&c);
	advance(LEASE);

	/* The unit fails after the sweep: neither the death nor the note. */
	d.then_fail = true;
	cr_assert_eq(store_run(st, sweep_dead_unit, &d), ST_CONFLICT);
	cr_assert_eq(d.calls, 1);
	cr_assert_eq(count_state(JOB_RUNNING), 2);
	cr_assert_eq(effects_of(last), 0);

	/* The callback fails: so does the sweep, nothing written. */
	d = (struct dead_seen){ .fail_with = ST_UNAVAILABLE };
	cr_assert_eq(store_run(st, sweep_dead_unit, &d), ST_UNAVAILABLE);
	cr_assert_eq(count_state(JOB_RUNNING), 2);
	cr_assert_eq(effects_of(last), 0);

	/* Committed: the dead job and its note together, the job as it now is. */
	d = (struct dead_seen){ 0 };
	cr_assert_eq(store_run(st, sweep_dead_unit, &d), ST_OK);
	cr_assert_eq(d.calls, 1, "only the job moved to dead");
	cr_assert_eq(d.id, last);
	cr_assert_eq(d.state, JOB_DEAD);
	cr_assert_eq(d.attempts, 1);
	cr_assert_str_eq(d.kind, "noop");
	cr_assert_str_eq(d.payload, "{\"n\":1}");
	cr_assert_not_null(strstr(d.last_error, "lease expired"), "%s", d.last_error);
	cr_assert_eq(effects_of(last), 1);
	cr_assert_eq(effects_of(other), 0);
	j = get_job(last);
	cr_assert_eq(j.state, JOB_DEAD);
	job_release(&j);
	j = get_job(other);
	cr_assert_eq(j.state, JOB_AVAILABLE);
	job_release(&j);
}

Test(queue, handing_back_counts_no_attempt, .init = setup, .fini = teardown)
{
	int64_t id = enqueue("q", NULL, NOW0 - 10, 0);
	struct claim c;
	struct op o = { .id = id, .owner = "w#1" };
	struct job j;

	cr_assert_eq(claim(&c, "q", "w#1", 1), 1);
	claim_release(&c);
	cr_assert_eq(store_run(st, release_unit, &o), ST_OK);
	j = get_job(id);
	cr_assert_eq(j.state, JOB_AVAILABLE);
	cr_assert_eq(j.attempts, 0);
	cr_assert_eq(j.run_at, NOW0 - 10, "run_at unchanged: runs again at once");
	job_release(&j);
	cr_assert_eq(store_run(st, release_unit, &o), ST_CONFLICT, "no longer ours");
}

/* ---- the DLQ ---- */

static int64_t make_dead(void)
{
	int64_t id = enqueue("q", NULL, 0, 1);
	struct claim c;
	struct op o = { .id = id, .error = "boom", .delay = 5 };
	char owner[32];

	snprintf(owner, sizeof(owner), "w#%lld", (long long)id);
	o.owner = owner;
	cr_assert_eq(claim(&c, "q", owner, 1), 1);
	cr_assert_eq(c.jobs[0].id, id);
	cr_assert_eq(store_run(st, fail_unit, &o), ST_OK);
	cr_assert_eq(o.state, JOB_DEAD);
	claim_release(&c);
	return id;
}

struct page {
	int64_t after;
	int limit;
	struct job jobs[10];
	int n;
};

static enum st_rc page_unit(struct tx *tx, void *arg)
{
	struct page *p = arg;

	return queue_dlq_list(tx, p->after, p->limit, p->jobs, &p->n);
}

Test(queue, dlq_pages_retry_and_delete, .init = setup, .fini = teardown)
{
	int64_t d1 = make_dead(), d2 = make_dead(), d3 = make_dead();
	int64_t live = enqueue("q", NULL, NOW0 + 100000, 0);
	struct page p = { .after = 0, .limit = 2 };
	struct op o = { 0 };
	struct claim c;
	struct job j;

	cr_assert_eq(store_read(st, page_unit, &p), ST_OK);
	cr_assert_eq(p.n, 2);
	cr_assert_eq(p.jobs[0].id, d1);
	cr_assert_eq(p.jobs[1].id, d2);
	cr_assert_str_eq(p.jobs[0].last_error, "boom");
	for (int i = 0; i < p.n; i++)
		job_release(&p.jobs[i]);
	p.after = d2;
	cr_assert_eq(store_read(st, page_unit, &p), ST_OK);
	cr_assert_eq(p.n, 1);
	cr_assert_eq(p.jobs[0].id, d3);
	job_release(&p.jobs[0]);

	/* Retry: dead -> available now, attempts reset, runs again. */
	advance(500);
	o.id = d1;
	cr_assert_eq(store_run(st, retry_unit, &o), ST_OK);
	j = get_job(d1);
	cr_assert_eq(j.state, JOB_AVAILABLE);
	cr_assert_eq(j.attempts, 0);
	cr_assert_eq(j.run_at, fake_now);
	cr_assert_eq(j.finished_at, 0);
	job_release(&j);
	cr_assert_eq(store_run(st, retry_unit, &o), ST_CONFLICT, "not dead any more");
	cr_assert_eq(claim(&c, "q", "w#9", 10), 1);
	cr_assert_eq(c.jobs[0].id, d1);
	claim_release(&c);

	/* Delete: only dead jobs; unknown ids are not found. */
	o.id = d2;
	cr_assert_eq(store_run(st, delete_unit, &o), ST_OK);
	cr_assert_eq(store_run(st, delete_unit, &o), ST_NOT_FOUND);
	o.id = live;
	cr_assert_eq(store_run(st, delete_unit, &o), ST_CONFLICT);
	cr_assert_eq(store_run(st, retry_unit, &o), ST_CONFLICT);
	o.id = 999999;
	cr_assert_eq(store_run(st, retry_unit, &o), ST_NOT_FOUND);
	cr_assert_eq(count_state(JOB_DEAD), 1);
}

/* ---- counts and retention ---- */

struct counts {
	int64_t by[JOB_STATE_COUNT];
	int calls;
};

static void count_cb(void *arg, const char *queue, enum job_state s, int64_t n)
{
	struct counts *c = arg;

	cr_assert_str_eq(queue, "q");
	c->by[s] += n;
	c->calls++;
}

static enum st_rc counts_unit(struct tx *tx, void *arg)
{
	return queue_counts(tx, count_cb, arg);
}

struct one_count {
	enum job_state s;
	int64_t n;
};

static enum st_rc count_state_unit(struct tx *tx, void *arg)
{
	struct one_count *c = arg;

	return queue_count_state(tx, c->s, &c->n);
}

static int64_t count_state(enum job_state s)
{
	struct one_count c = { .s = s };

	cr_assert_eq(store_read(st, count_state_unit, &c), ST_OK);
	return c.n;
}

static enum st_rc purge_unit(struct tx *tx, void *arg)
{
	int64_t *n = arg;

	return queue_purge_completed(tx, NOW0 + 1000, 100, n);
}

static enum st_rc payload_count_unit(struct tx *tx, void *arg)
{
	int64_t *n = arg;

	return queue_count_payload(tx, "noop", "{\"n\":1}",
				   (1u << JOB_AVAILABLE) | (1u << JOB_RUNNING) | (1u << JOB_DEAD), n);
}

Test(queue, counts_and_purge, .init = setup, .fini = teardown)
{
	struct counts cs;
	struct claim c;
	struct op o = { .owner = "w#1" };
	int64_t purged = 0, live = 0;

	memset(&cs, 0, sizeof(cs));

	make_dead();
	enqueue("q", NULL, 0, 0);
	enqueue("q", NULL, 0, 0);
	cr_assert_eq(claim(&c, "q", "w#1", 1), 1);
	o.id = c.jobs[0].id;
	cr_assert_eq(store_run(st, complete_unit, &o), ST_OK);
	claim_release(&c);
	enqueue("q", NULL, NOW0 + 50, 0);

	cr_assert_eq(store_read(st, counts_unit, &cs), ST_OK);
	cr_assert_eq(cs.by[JOB_DEAD], 1);
	cr_assert_eq(cs.by[JOB_COMPLETED], 1);
	cr_assert_eq(cs.by[JOB_AVAILABLE], 2);
	cr_assert_eq(cs.by[JOB_RUNNING], 0);
	cr_assert_eq(store_read(st, payload_count_unit, &live), ST_OK);
	cr_assert_eq(live, 3, "available + dead jobs with that payload");

	cr_assert_eq(store_run(st, purge_unit, &purged), ST_OK);
	cr_assert_eq(purged, 1, "completed jobs past retention go");
	cr_assert_eq(count_state(JOB_COMPLETED), 0);
	cr_assert_eq(count_state(JOB_DEAD), 1, "dead jobs stay for the operator");
}

/* ---- backoff arithmetic ---- */

static uint64_t rand_max(void *arg)
{
	(void)arg;
	return UINT64_MAX;
}

static uint64_t rand_zero(void *arg)
{
	(void)arg;
	return 0;
}

static uint64_t rand_fixed(void *arg)
{
	return *(uint64_t *)arg;
}

Test(backoff, ceiling_doubles_then_caps)
{
	const int64_t base = 1000, cap = 600000;
	const int64_t want[] = { 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000,
				 512000, 600000, 600000 };

	for (int a = 0; a < (int)(sizeof(want) / sizeof(want[0])); a++)
		cr_assert_eq(queue_backoff_ceiling_ms(a, base, cap), want[a], "attempt %d", a);
	cr_assert_eq(queue_backoff_ceiling_ms(62, base, cap), cap);
	cr_assert_eq(queue_backoff_ceiling_ms(1000000, base, cap), cap, "no shift overflow");
	cr_assert_eq(queue_backoff_ceiling_ms(40, INT64_MAX / 4, INT64_MAX), INT64_MAX,
		     "no multiplication overflow");
	cr_assert_eq(queue_backoff_ceiling_ms(-3, base, cap), base, "negative attempt = first");
	cr_assert_eq(queue_backoff_ceiling_ms(3, base, 500), 500, "cap below base caps all");
	cr_assert_eq(queue_backoff_ceiling_ms(3, 0, cap), 0);
	cr_assert_eq(queue_backoff_ceiling_ms(0, 10, cap), 10, "SETTLED_JOB_BASE_DELAY=10ms");
	cr_assert_eq(queue_backoff_ceiling_ms(3, 10, cap), 80);
}

Test(backoff, full_jitter_spans_zero_to_the_ceiling)
{
	uint64_t v;

	for (int a = 0; a < 20; a++) {
		int64_t ceil = queue_backoff_ceiling_ms(a, 1000, 600000);

		cr_assert_eq(queue_backoff_ms(a, 1000, 600000, rand_zero, NULL), 0);
		/* UINT64_MAX % (ceil + 1): just check the bounds, then exact values. */
		cr_assert_leq(queue_backoff_ms(a, 1000, 600000, rand_max, NULL), ceil);
	}
	/* Exact: r % (ceiling + 1). */
	v = 1000;
	cr_assert_eq(queue_backoff_ms(0, 1000, 600000, rand_fixed, &v), 1000, "the ceiling is included");
	v = 1001;
	cr_assert_eq(queue_backoff_ms(0, 1000, 600000, rand_fixed, &v), 0);
	v = 1500;
	cr_assert_eq(queue_backoff_ms(1, 1000, 600000, rand_fixed, &v), 1500);
	v = 2001 + 7;
	cr_assert_eq(queue_backoff_ms(1, 1000, 600000, rand_fixed, &v), 7);
	v = 123456789;
	cr_assert_eq(queue_backoff_ms(30, 1000, 600000, rand_fixed, &v), 123456789 % 600001);
	cr_assert_eq(queue_backoff_ms(5, 0, 600000, rand_max, NULL), 0, "no base, no delay");
}

/* A counter as the random source: over many draws the delays cover the
 * whole range evenly (full jitter, not equal jitter). */
static uint64_t rand_counter(void *arg)
{
	uint64_t *c = arg;

	return (*c)++;
}

Test(backoff, full_jitter_is_uniform)
{
	uint64_t ctr = 0;
	int64_t lo = 0, hi = 0, n = 8001 * 4;
	int64_t ceil = queue_backoff_ceiling_ms(3, 1000, 600000);

	cr_assert_eq(ceil, 8000);
	for (int64_t i = 0; i < n; i++) {
		int64_t d = queue_backoff_ms(3, 1000, 600000, rand_counter, &ctr);

		cr_assert(d >= 0 && d <= ceil);
		lo += d < ceil / 2;
		hi += d >= ceil / 2;
	}
	cr_assert_eq(lo, 4 * 4000);
	cr_assert_eq(hi, 4 * 4001);
}

Test(backoff, default_source_stays_in_range)
{
	for (int i = 0; i < 1000; i++) {
		int64_t d = queue_backoff_ms(i % 12, 10, 5000, NULL, NULL);

		cr_assert(d >= 0 && d <= queue_backoff_ceiling_ms(i % 12, 10, 5000));
	}
}

Test(queue, state_names_round_trip)
{
	for (int s = 0; s < JOB_STATE_COUNT; s++)
		cr_assert_eq(job_state_parse(job_state_str((enum job_state)s)), s);
	cr_assert_eq(job_state_parse("zombie"), -1);
	cr_assert_eq(job_state_parse(NULL), -1);
	cr_assert_str_eq(job_state_str(JOB_STATE_COUNT), "unknown");
}

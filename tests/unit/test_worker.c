/* test_worker.c — the worker pool end to end on a real SQLite store:
 * draining a queue, graceful shutdown handing unstarted jobs back, the
 * embedded-mode reclaim of jobs a killed process left running, and a batch
 * completion that fails. Uses the built-in `noop` kind; waits are polls
 * with a deadline. Linked with -Wl,--wrap=queue_complete_many (Makefile),
 * so a test can make the worker's batch completion fail, and with wraps of
 * queue_claim and queue_count_due that count the fetcher's calls. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "metrics.h"
#include "queue.h"
#include "settled.h"
#include "store.h"
#include "worker.h"

#include "banned.h"

/* The next complete_many_failures calls of queue_complete_many fail with
 * ST_NOMEM before touching the store, as an allocation failure in it would
 * (the whole batch unit then rolls back). */
static atomic_int complete_many_failures;

enum st_rc __real_queue_complete_many(struct tx *tx, const char *lease_owner, const int64_t *ids,
				      int n, bool *done);
enum st_rc __wrap_queue_complete_many(struct tx *tx, const char *lease_owner, const int64_t *ids,
				      int n, bool *done);

enum st_rc __wrap_queue_complete_many(struct tx *tx, const char *lease_owner, const int64_t *ids,
				      int n, bool *done)
{
	int left = atomic_load(&complete_many_failures);

	while (left > 0)
		if (atomic_compare_exchange_weak(&complete_many_failures, &left, left - 1))
			return ST_NOMEM;
	return __real_queue_complete_many(tx, lease_owner, ids, n, done);
}

/* The fetcher's claims and peeks (counts of due jobs) of queue "default",
 * counted while jobs_to_claim is above zero: each claim's jobs are taken
 * off it. Off (0) unless a test sets it. */
static atomic_int jobs_to_claim, default_claims, default_peeks;

enum st_rc __real_queue_claim(struct tx *tx, const char *queue, int max, const char *lease_owner,
			      int64_t lease_ms, struct job *out, int *n_out);
enum st_rc __wrap_queue_claim(struct tx *tx, const char *queue, int max, const char *lease_owner,
			      int64_t lease_ms, struct job *out, int *n_out);
enum st_rc __real_queue_count_due(struct tx *tx, const char *queue, int64_t limit, int64_t *n);
enum st_rc __wrap_queue_count_due(struct tx *tx, const char *queue, int64_t limit, int64_t *n);

enum st_rc __wrap_queue_claim(struct tx *tx, const char *queue, int max, const char *lease_owner,
			      int64_t lease_ms, struct job *out, int *n_out)
{
	enum st_rc rc = __real_queue_claim(tx, queue, max, lease_owner, lease_ms, out, n_out);

	if (rc == ST_OK && !strcmp(queue, "default") && atomic_load(&jobs_to_claim) > 0) {
		atomic_fetch_add(&default_claims, 1);
		atomic_fetch_sub(&jobs_to_claim, *n_out);
	}
	return rc;
}

enum st_rc __wrap_queue_count_due(struct tx *tx, const char *queue, int64_t limit, int64_t *n)
{
	if (!strcmp(queue, "default") && atomic_load(&jobs_to_claim) > 0)
		atomic_fetch_add(&default_peeks, 1);
	return __real_queue_count_due(tx, queue, limit, n);
}

static struct store *st;
static struct settled app;
static struct config cfg;
static char dir[64];

static void setup(void)
{
	struct store_options opt = { 0 };
	struct buf err = BUF_INIT(1024);
	char path[128];

	snprintf(dir, sizeof(dir), "/tmp/settled-worker-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/settled.db", dir);
	opt.sqlite_path = path;
	cr_assert_eq(store_open(&opt, &st, &err), ST_OK, "store_open: %s", err.ptr);
	buf_release(&err);
	atomic_store(&complete_many_failures, 0);
	atomic_store(&jobs_to_claim, 0);
	atomic_store(&default_claims, 0);
	atomic_store(&default_peeks, 0);
	memset(&cfg, 0, sizeof(cfg));
	cfg.workers = 4;
	cfg.job_base_delay_ms = 1000;
	cfg.job_max_delay_ms = 600000;
	cfg.job_max_attempts = 8;
	memset(&app, 0, sizeof(app));
	app.cfg = &cfg;
	app.store = st;
	snprintf(app.instance_id, sizeof(app.instance_id), "test-instance");
	log_init(&app.log, 2, LOG_ERROR);
	app.metrics = metrics_new();
	cr_assert_not_null(app.metrics);
	cr_assert_eq(settled_metrics_init(&app.m, app.metrics), ST_OK);
}

static void teardown(void)
{
	char cmd[128];

	store_close(st);
	metrics_free(app.metrics);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

static enum st_rc enqueue_unit(struct tx *tx, void *arg)
{
	int *n = arg;

	for (int i = 0; i < *n; i++) {
		enum st_rc rc = queue_enqueue(tx, "default", "noop", "{}", NULL, 0, 0);

		if (rc)
			return rc;
	}
	return ST_OK;
}

static void enqueue(int n)
{
	cr_assert_eq(store_run(st, enqueue_unit, &n), ST_OK);
}

struct states {
	int64_t n[JOB_STATE_COUNT];
	int64_t attempts;
};

static void count_cb(void *arg, const char *queue, enum job_state s, int64_t n)
{
	struct states *c = arg;

	(void)queue;
	c->n[s] += n;
}

static enum st_rc states_unit(struct tx *tx, void *arg)
{
	struct states *c = arg;
	struct st_rows *rows = NULL;
	enum st_rc rc = queue_counts(tx, count_cb, c);

	if (rc)
		return rc;
	rc = tx_query(tx, "SELECT coalesce(sum(attempts), 0) FROM jobs", ST_NOARGS, &rows);
	if (rc)
		return rc;
	c->attempts = rows_i64(rows, 0, 0);
	rows_free(rows);
	return ST_OK;
}

static struct states states(void)
{
	struct states c;

	memset(&c, 0, sizeof(c));
	cr_assert_eq(store_read(st, states_unit, &c), ST_OK);
	return c;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

Test(worker, drains_a_queue, .init = setup, .fini = teardown)
{
	struct worker_pool *p = NULL;
	struct buf err = BUF_INIT(256);
	int waited = 0;

	enqueue(2000);
	cr_assert_eq(worker_pool_start(&app, &p, &err), ST_OK, "%s", err.ptr);
	cr_assert_not_null(p);
	while (states().n[JOB_COMPLETED] < 2000 && waited < 20000) {
		sleep_ms(20);
		waited += 20;
	}
	worker_pool_stop(p);
	cr_assert_eq(states().n[JOB_COMPLETED], 2000, "drained within 20 s");
	cr_assert_eq(states().attempts, 0);
	buf_release(&err);
}

/* After a claim that got every job it asked for, the fetcher claims the
 * queue again without counting its due jobs first (worker.c peek_unit):
 * draining a backlog counts once at the start, not before every claim.
 * The capacity is 2 a worker here (no lease), so the 600 jobs take many
 * claims, and every claim but the last is full. */
Test(worker, a_backlog_is_claimed_without_a_count_before_each_claim, .init = setup,
     .fini = teardown)
{
	struct worker_pool *p = NULL;
	struct buf err = BUF_INIT(256);
	int waited = 0;

	enqueue(600);
	atomic_store(&jobs_to_claim, 600);
	cr_assert_eq(worker_pool_start(&app, &p, &err), ST_OK, "%s", err.ptr);
	while (states().n[JOB_COMPLETED] < 600 && waited < 60000) {
		sleep_ms(20);
		waited += 20;
	}
	worker_pool_stop(p);
	cr_assert_eq(states().n[JOB_COMPLETED], 600);
	cr_assert_eq(states().attempts, 0);
	cr_assert_leq(atomic_load(&jobs_to_claim), 0);
	cr_assert_geq(atomic_load(&default_claims), 600 / 8, "claims: %d", atomic_load(&default_claims));
	/* The first peek, and one after a claim that found fewer than it
	 * asked for (only the last can: all 600 are due from the start). */
	cr_assert_leq(atomic_load(&default_peeks), 2, "peeks: %d for %d claims",
		      atomic_load(&default_peeks), atomic_load(&default_claims));
	buf_release(&err);
}

Test(worker, stop_hands_unstarted_jobs_back, .init = setup, .fini = teardown)
{
	struct worker_pool *p = NULL;
	struct buf err = BUF_INIT(256);
	struct states s;

	enqueue(3000);
	cr_assert_eq(worker_pool_start(&app, &p, &err), ST_OK, "%s", err.ptr);
	sleep_ms(30);
	worker_pool_stop(p);
	s = states();
	cr_assert_eq(s.n[JOB_RUNNING], 0, "nothing left running after a graceful stop");
	cr_assert_eq(s.n[JOB_AVAILABLE] + s.n[JOB_COMPLETED], 3000);
	cr_assert_eq(s.attempts, 0, "handing back counts no attempt");
	buf_release(&err);
}

struct take {
	struct job jobs[16];
	int n;
};

static enum st_rc take_unit(struct tx *tx, void *arg)
{
	struct take *t = arg;

	return queue_claim(tx, "default", 16, "dead-process#1", 30000, t->jobs, &t->n);
}

Test(worker, start_reclaims_jobs_a_killed_process_left_running, .init = setup, .fini = teardown)
{
	struct worker_pool *p = NULL;
	struct buf err = BUF_INIT(256);
	struct take t;
	struct states s;

	enqueue(5);
	memset(&t, 0, sizeof(t));
	cr_assert_eq(store_run(st, take_unit, &t), ST_OK);
	cr_assert_eq(t.n, 5);
	for (int i = 0; i < t.n; i++)
		job_release(&t.jobs[i]);

	/* No workers: only the reclaim runs. */
	cfg.workers = 0;
	cr_assert_eq(worker_pool_start(&app, &p, &err), ST_OK, "%s", err.ptr);
	cr_assert_null(p);
	s = states();
	cr_assert_eq(s.n[JOB_RUNNING], 0);
	cr_assert_eq(s.n[JOB_AVAILABLE], 5);
	cr_assert_eq(s.attempts, 5, "each interrupted run counts as an attempt");
	buf_release(&err);
}

/* A batch whose completion unit fails (an allocation failure in it) wrote
 * nothing: its jobs must still complete now, each in a unit of its own,
 * not sit running under the worker's lease until it expires and the
 * sweeper takes them back with an attempt charged. */
Test(worker, a_failed_batch_completion_completes_each_job_alone, .init = setup, .fini = teardown)
{
	struct worker_pool *p = NULL;
	struct buf err = BUF_INIT(256);
	struct states s;
	int waited = 0;

	cfg.job_lease_ms = 600000; /* what is left to the lease does not come back here */
	atomic_store(&complete_many_failures, 1);
	enqueue(300);
	cr_assert_eq(worker_pool_start(&app, &p, &err), ST_OK, "%s", err.ptr);
	while (states().n[JOB_COMPLETED] < 300 && waited < 20000) {
		sleep_ms(20);
		waited += 20;
	}
	worker_pool_stop(p);
	cr_assert_eq(atomic_load(&complete_many_failures), 0, "the failure was injected");
	s = states();
	cr_assert_eq(s.n[JOB_COMPLETED], 300, "completed: %lld, running: %lld",
		     (long long)s.n[JOB_COMPLETED], (long long)s.n[JOB_RUNNING]);
	cr_assert_eq(s.n[JOB_RUNNING], 0);
	cr_assert_eq(s.attempts, 0, "no attempt charged for a completion that was not written");
	buf_release(&err);
}

/* ---- job_logf / job_log_text: the job's line, short and long messages */

static char *read_all(int fd)
{
	static char out[1 << 16];
	ssize_t n = 0, k;

	while ((k = read(fd, out + n, sizeof(out) - 1 - (size_t)n)) > 0)
		n += k;
	out[n > 0 ? n : 0] = '\0';
	return out;
}

Test(worker_log, job_lines_short_long_and_made)
{
	struct settled a;
	struct job j = { .id = 42 };
	struct job_ctx ctx;
	static char big[3001];
	int p[2];
	char *out, *line2;

	snprintf(j.queue, sizeof(j.queue), "webhooks");
	snprintf(j.kind, sizeof(j.kind), "webhook.process");
	cr_assert_eq(pipe(p), 0);
	memset(&a, 0, sizeof(a));
	log_init(&a.log, p[1], LOG_INFO);
	memset(&ctx, 0, sizeof(ctx));
	ctx.app = &a;
	ctx.job = &j;
	memset(big, 'b', sizeof(big) - 1);
	/* 1000 bytes: on the stack; 3000: past it, through the heap buffer;
	 * a made message as it is; below the level: nothing. */
	job_logf(&ctx, LOG_INFO, "short %s %d", "x", 7);
	job_logf(&ctx, LOG_INFO, "%.*s|%s", 1000, big, "end");
	job_logf(&ctx, LOG_INFO, "%s|%s", big, "end");
	job_log_text(&ctx, LOG_INFO, "made as it is");
	job_logf(&ctx, LOG_DEBUG, "never %d", 1);
	job_log_text(&ctx, LOG_DEBUG, "never");
	close(p[1]);
	out = read_all(p[0]);
	close(p[0]);
	cr_assert_not_null(strstr(out, "\"msg\":\"short x 7\""), "%s", out);
	cr_assert_not_null(strstr(out, "\"job_id\":42,\"queue\":\"webhooks\",\"kind\":\"webhook.process\""),
			   "%s", out);
	line2 = strchr(out, '\n');
	cr_assert_not_null(line2);
	cr_assert_not_null(strstr(line2, "bbbbbbbb|end\""), "the 1000-byte message whole");
	cr_assert_not_null(strstr(out, "\"msg\":\"made as it is\""), "%s", out);
	cr_assert_null(strstr(out, "never"));
	/* The 3000-byte one: whole (a line holds 16 KiB), not replaced by
	 * the error text. */
	cr_assert_null(strstr(out, "message not logged"));
	{
		char *line3 = strchr(line2 + 1, '\n'), want[3000 + 8];

		snprintf(want, sizeof(want), "%s|end\"", big);
		cr_assert_not_null(line3);
		cr_assert_not_null(strstr(line3, want), "the 3000-byte message whole");
	}
	{
		int lines = 0;

		for (char *s = out; (s = strchr(s, '\n')); s++)
			lines++;
		cr_assert_eq(lines, 4, "%s", out);
	}
}

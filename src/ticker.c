/* ticker.c — the housekeeping thread (see ticker.h for the schedule).
 *
 * One thread runs every task in turn, so no two housekeeping units ever
 * race each other; they go through the store's writer like any request
 * (SQLite never sees a second writer). Large sweeps are cut into batches,
 * one write unit each, so the writer is never held for long. */
#include "ticker.h"

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "idempotency.h"
#include "intent.h"
#include "ledger.h"
#include "json_out.h"
#include "log.h"
#include "metrics.h"
#include "queue.h"
#include "reconcile.h"
#include "settled.h"
#include "stuck_sweep.h"
#include "worker.h"
#include "clock.h"
#include "banned.h"

#define SWEEP_BATCH 500
#define IDEM_SWEEP_BATCH 5000
#define FOLD_BATCH 10000
#define MAX_GAUGE_QUEUES 32

enum task { T_LEASES = 0, T_HOLDS, T_STUCK, T_GAUGES, T_IDEM, T_PURGE, T_RECONCILE, T_FOLD, T_COUNT };

struct ticker {
	struct settled *app;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stopping;
	int64_t every[T_COUNT];
	int64_t next[T_COUNT];
	/* queues seen by the gauge task, so a vanished (queue, state) drops to 0 */
	char *seen_queues[MAX_GAUGE_QUEUES];
	int nseen;
	int64_t clock_step_logged; /* the step last logged (ms); 0 = none */
};

/* ---- tasks ---- */

struct leases_call {
	int64_t c[2];
	struct job_dead_notes notes;
};

/* A job the sweep moves to dead gets its kind's on_dead in this unit
 * (job_sweep_dead): the webhook event of a job whose workers kept dying
 * is marked failed with the job's death, not left `stored`. */
static enum st_rc leases_unit(struct tx *tx, void *arg)
{
	struct leases_call *l = arg;

	l->notes = (struct job_dead_notes){ 0 }; /* the store may run a unit again */
	return queue_sweep_leases(tx, SWEEP_BATCH, false, job_sweep_dead, &l->notes, &l->c[0],
				  &l->c[1]);
}

static void task_leases(struct ticker *t)
{
	struct settled *app = t->app;
	struct leases_call l = { { 0, 0 }, { 0 } };

	do {
		if (store_run(app->store, leases_unit, &l))
			return;
		if (l.c[0]) {
			metric_add(metric_series_get(app->m.lease_reclaims, NULL), (double)l.c[0]);
			log_msg(&app->log, LOG_WARN,
				"lease sweeper: %lld expired job leases taken back (%lld now dead)",
				(long long)l.c[0], (long long)l.c[1]);
		}
		if (l.notes.failed)
			log_msg(&app->log, LOG_WARN,
				"lease sweeper: %d dead jobs could not note their failure (job %lld: %s)",
				l.notes.failed, (long long)l.notes.last_id, st_rc_str(l.notes.last_rc));
	} while (l.c[0] == SWEEP_BATCH);
}

static enum st_rc holds_unit(struct tx *tx, void *arg)
{
	int64_t *n = arg;

	return intent_expire(tx, tx_now_ms(tx), SWEEP_BATCH, "sweeper", n);
}

static void task_holds(struct ticker *t)
{
	struct settled *app = t->app;
	int64_t n = 0;
	enum st_rc rc = store_run(app->store, holds_unit, &n);

	if (rc) {
		log_msg(&app->log, LOG_WARN, "hold expiry failed: %s", st_rc_str(rc));
		return;
	}
	if (n) {
		intent_count(app->m.intents, INTENT_FAILED, (double)n);
		log_msg(&app->log, LOG_INFO, "hold expiry: %lld intents failed (hold_expired)",
			(long long)n);
	}
}

static void task_stuck(struct ticker *t)
{
	stuck_sweep_run(t->app, SWEEP_BATCH);
}

struct gauge_row {
	char queue[QUEUE_NAME_MAX + 1];
	int64_t n[JOB_STATE_COUNT];
};

struct gauge_call {
	struct gauge_row rows[MAX_GAUGE_QUEUES];
	int nrows;
	int64_t dead;
};

static void gauge_cb(void *arg, const char *queue, enum job_state s, int64_t n)
{
	struct gauge_call *g = arg;
	int i;

	for (i = 0; i < g->nrows; i++)
		if (!strcmp(g->rows[i].queue, queue))
			break;
	if (i == g->nrows) {
		if (g->nrows == MAX_GAUGE_QUEUES)
			return;
		snprintf(g->rows[g->nrows++].queue, sizeof(g->rows[0].queue), "%s", queue);
	}
	g->rows[i].n[s] += n;
	if (s == JOB_DEAD)
		g->dead += n;
}

static enum st_rc gauge_unit(struct tx *tx, void *arg)
{
	return queue_counts(tx, gauge_cb, arg);
}

static void remember_queue(struct ticker *t, const char *q)
{
	for (int i = 0; i < t->nseen; i++)
		if (!strcmp(t->seen_queues[i], q))
			return;
	if (t->nseen < MAX_GAUGE_QUEUES && (t->seen_queues[t->nseen] = strdup(q)))
		t->nseen++;
}

/* A step of the system clock leaves the server clock where it was (see
 * clock.h): export the gap, and say so once per new step of a second or more,
 * since stored times drift from the system's until the next start. */
static void check_clock_step(struct ticker *t)
{
	struct settled *app = t->app;
	int64_t step = clock_wall_ms() - settled_now_ms(app);

	metric_set(metric_series_get(app->m.clock_step, NULL), (double)step / 1000.0);
	if (llabs(step - t->clock_step_logged) < 1000)
		return;
	t->clock_step_logged = step;
	log_msg(&app->log, LOG_WARN,
		"the system clock was stepped %lld ms from the server clock; settled keeps its own "
		"time (deadlines stay durations) until it is restarted",
		(long long)step);
}

static void task_gauges(struct ticker *t)
{
	struct settled *app = t->app;
	struct gauge_call *g = calloc(1, sizeof(*g));
	const char *known[MAX_GAUGE_QUEUES];
	size_t nknown;

	check_clock_step(t);
	if (!g)
		return;
	if (store_read(app->store, gauge_unit, g)) {
		free(g);
		return;
	}
	nknown = worker_queue_names(known, MAX_GAUGE_QUEUES);
	for (size_t i = 0; i < nknown; i++)
		remember_queue(t, known[i]);
	for (int i = 0; i < g->nrows; i++)
		remember_queue(t, g->rows[i].queue);
	for (int q = 0; q < t->nseen; q++) {
		const struct gauge_row *row = NULL;

		for (int i = 0; i < g->nrows; i++)
			if (!strcmp(g->rows[i].queue, t->seen_queues[q]))
				row = &g->rows[i];
		for (int s = 0; s < JOB_STATE_COUNT; s++) {
			const char *const lv[] = { t->seen_queues[q], job_state_str((enum job_state)s) };

			metrics_set(app->m.jobs, lv, row ? (double)row->n[s] : 0.0);
		}
	}
	metric_set(metric_series_get(app->m.dlq_jobs, NULL), (double)g->dead);
	free(g);
}

static enum st_rc idem_unit(struct tx *tx, void *arg)
{
	return idem_sweep(tx, IDEM_SWEEP_BATCH, arg);
}

static void task_idem(struct ticker *t)
{
	int64_t deleted = 0;

	if (store_run(t->app->store, idem_unit, &deleted) == ST_OK && deleted)
		log_msg(&t->app->log, LOG_INFO, "idempotency sweep deleted %lld expired keys",
			(long long)deleted);
}

struct purge_call {
	int64_t before;
	int64_t deleted;
};

static enum st_rc purge_unit(struct tx *tx, void *arg)
{
	struct purge_call *p = arg;

	return queue_purge_completed(tx, p->before, SWEEP_BATCH, &p->deleted);
}

static void task_purge(struct ticker *t)
{
	struct purge_call p = { .before = settled_now_ms(t->app) - TICKER_JOB_RETENTION_MS };
	int64_t total = 0;

	do {
		p.deleted = 0;
		if (store_run(t->app->store, purge_unit, &p))
			break;
		total += p.deleted;
	} while (p.deleted == SWEEP_BATCH);
	if (total)
		log_msg(&t->app->log, LOG_INFO, "purged %lld completed jobs", (long long)total);
}

void ticker_reconciled(struct settled *app, const struct reconcile_report *r)
{
	int problems = reconcile_problems(r);
	const char *const lv[] = { problems ? "problems" : "ok" };

	metric_set(metric_series_get(app->m.ledger_imbalance, NULL), (double)reconcile_imbalance(r));
	metric_set(metric_series_get(app->m.recon_problems, NULL), (double)problems);
	metrics_inc(app->m.recon_runs, lv);
	metric_set(metric_series_get(app->m.dlq_jobs, NULL), (double)r->jobs[JOB_DEAD]);
	for (int s = 0; s < 4; s++) {
		const char *const st[] = { hold_state_str((enum hold_status)s) };

		metrics_set(app->m.holds, st, (double)r->holds[s]);
	}
	metric_set(metric_series_get(app->m.held_amount, NULL), (double)r->held_total);
}

struct recon_call {
	int64_t stuck_after_ms;
	struct reconcile_report r;
	char *json;
};

static enum st_rc recon_read_unit(struct tx *tx, void *arg)
{
	struct recon_call *c = arg;

	return reconcile_run(tx, c->stuck_after_ms, &c->r);
}

static enum st_rc recon_store_unit(struct tx *tx, void *arg)
{
	struct recon_call *c = arg;

	return reconcile_store(tx, &c->r, c->json);
}

static enum st_rc fold_unit(struct tx *tx, void *arg)
{
	return ledger_fold_deltas(tx, FOLD_BATCH, arg);
}

/* Hot accounts' deltas into their balances (ledger_fold_deltas), a batch
 * at a time until none is left, so the table stays short. */
static void task_fold(struct ticker *t)
{
	struct settled *app = t->app;
	int64_t n = 0;

	for (int i = 0; i < 20; i++) {
		enum st_rc rc = store_run(app->store, fold_unit, &n);

		if (rc) {
			log_msg(&app->log, LOG_WARN, "hot account fold failed: %s", st_rc_str(rc));
			return;
		}
		if (n == 0)
			return;
	}
}

static void task_reconcile(struct ticker *t)
{
	struct settled *app = t->app;
	struct recon_call c = { .stuck_after_ms = app->cfg->stuck_after_ms };
	json_t *j;
	enum st_rc rc = store_read(app->store, recon_read_unit, &c);

	if (rc) {
		const char *const lv[] = { "error" };

		metrics_inc(app->m.recon_runs, lv);
		log_msg(&app->log, LOG_ERROR, "reconciliation could not run: %s", st_rc_str(rc));
		return;
	}
	j = reconcile_report_json(&c.r);
	c.json = json_out_text(j);
	json_decref(j);
	if (!c.json || store_run(app->store, recon_store_unit, &c))
		log_msg(&app->log, LOG_WARN, "reconciliation report could not be stored");
	ticker_reconciled(app, &c.r);
	if (reconcile_problems(&c.r))
		log_msg(&app->log, LOG_ERROR, "reconciliation found %d problems: %s",
			reconcile_problems(&c.r), c.json ? c.json : "(no report)");
	else
		log_msg(&app->log, LOG_DEBUG, "reconciliation ok");
	free(c.json);
}

static void (*const tasks[T_COUNT])(struct ticker *) = {
	[T_LEASES] = task_leases, [T_HOLDS] = task_holds, [T_STUCK] = task_stuck,
	[T_GAUGES] = task_gauges, [T_IDEM] = task_idem, [T_PURGE] = task_purge,
	[T_RECONCILE] = task_reconcile, [T_FOLD] = task_fold,
};

/* ---- the thread ---- */

static void *ticker_main(void *arg)
{
	struct ticker *t = arg;

	pthread_mutex_lock(&t->mu);
	while (!t->stopping) {
		int64_t now = clock_mono_ms(), soonest = INT64_MAX;

		for (int i = 0; i < T_COUNT && !t->stopping; i++) {
			if (t->next[i] > now)
				continue;
			t->next[i] = now + t->every[i];
			pthread_mutex_unlock(&t->mu);
			tasks[i](t);
			pthread_mutex_lock(&t->mu);
			now = clock_mono_ms();
		}
		for (int i = 0; i < T_COUNT; i++)
			if (t->next[i] < soonest)
				soonest = t->next[i];
		if (!t->stopping && soonest > now) {
			struct timespec until;
			int64_t ms = soonest - now;

			clock_gettime(CLOCK_MONOTONIC, &until);
			until.tv_sec += ms / 1000;
			until.tv_nsec += (long)(ms % 1000) * 1000000L;
			if (until.tv_nsec >= 1000000000L) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&t->cv, &t->mu, &until);
		}
	}
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

enum st_rc ticker_start(struct settled *app, struct ticker **out, struct buf *err)
{
	struct ticker *t = calloc(1, sizeof(*t));
	pthread_condattr_t ca;
	int64_t stuck_every, now = clock_mono_ms();

	*out = NULL;
	if (!t)
		return ST_NOMEM;
	t->app = app;
	stuck_every = app->cfg->stuck_after_ms / 4;
	t->every[T_LEASES] = 1000;
	t->every[T_HOLDS] = 1000;
	t->every[T_STUCK] = stuck_every < 250 ? 250 : stuck_every > 10000 ? 10000 : stuck_every;
	t->every[T_GAUGES] = 2000;
	t->every[T_IDEM] = 60000;
	t->every[T_PURGE] = 60000;
	t->every[T_RECONCILE] = 60000;
	t->every[T_FOLD] = 1000;
	/* The sweeps run once right away, the minute-scale cleanups a little
	 * later. The first reconciliation runs here, before the server accepts
	 * a request: a report exists from the start, and its write never
	 * races what the first clients (or tests counting rows) do. */
	for (int i = 0; i < T_COUNT; i++)
		t->next[i] = now;
	t->next[T_IDEM] = now + 5000;
	t->next[T_PURGE] = now + 10000;
	task_reconcile(t);
	t->next[T_RECONCILE] = clock_mono_ms() + t->every[T_RECONCILE];
	pthread_mutex_init(&t->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&t->thread, NULL, ticker_main, t)) {
		buf_puts(err, "cannot start the ticker thread");
		pthread_cond_destroy(&t->cv);
		pthread_mutex_destroy(&t->mu);
		free(t);
		return ST_INTERNAL;
	}
	*out = t;
	return ST_OK;
}

void ticker_stop(struct ticker *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->mu);
	t->stopping = true;
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
	pthread_join(t->thread, NULL);
	for (int i = 0; i < t->nseen; i++)
		free(t->seen_queues[i]);
	pthread_cond_destroy(&t->cv);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

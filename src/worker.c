/* worker.c — the fetcher and worker threads; see worker.h for the design.
 *
 * Invariants, all under pool->mu:
 *   - busy + nready <= capacity: the fetcher never claims more than the
 *     workers can start soon, so a claimed job's lease does not run out while
 *     it waits in the ready list. The capacity adapts to what a job costs
 *     (set_capacity): workers x WORKER_BATCH_MAX when jobs take microseconds,
 *     2 x workers when they take a sizeable part of the lease, so the
 *     expected wait stays under a quarter of the lease. A job that still
 *     waited more than half its lease (the estimate was wrong: a slow job
 *     after fast ones) is handed back unstarted, without an attempt;
 *   - a worker takes a share of the ready list at once (a batch) and, for
 *     the jobs whose handler finished with nothing to commit (ST_OK without
 *     job_commit), writes every completion in ONE write unit after the
 *     batch: one commit instead of one per job. Each completion is still
 *     fenced by its own lease (a lost one changes no row and is reported
 *     alone); jobs with an effect commit it with job_commit, effect and
 *     completion in their own unit, exactly as before;
 *   - the fetcher refills in bulk: only when the ready list ran dry or half
 *     the capacity is free. Refilling one slot per finished job would cost
 *     one claim unit (one commit) per job and make the fetcher, not the
 *     workers, the bottleneck;
 *   - inflight[q] (ready + running jobs of queue q) <= the queue's limit;
 *   - a job is in exactly one place: the ready list, a worker's hands, or
 *     the store (after completion, failure or hand-back);
 *   - no allocation failure leaves a job to its lease: ready-list nodes are
 *     allocated before the claim, and an outcome whose write failed gets a
 *     second try (alone, for a batch; record_outcome).
 * The lease owner is "<instance_id>#<claim sequence>", unique per claim
 * unit (queue.h explains why a per-claim fence matters). */
#include "worker.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fmt.h"
#include "job_kinds.h"
#include "jobguard.h"
#include "log.h"
#include "metrics.h"
#include "settled.h"
#include "banned.h"

#define JOB_LOG_STACK 1024 /* job_logf formats shorter messages on the stack */

#define MAX_QUEUES 16
#define CLAIM_MAX 256          /* jobs of one queue per claim unit */
#define WORKER_BATCH_MAX 256   /* ready jobs per worker, at most, when jobs are cheap */
#define WORKER_EFFECTS_PER_UNIT 16 /* job_commit_later effects per write unit */
#define UNLEASED_RESTART_S 1.0 /* an unleased queue is read from its start at least this often */
#define SAVEPOINTS_AFTER_FAILURE_S 1.0 /* effects in savepoints again this long after one failed */

/* ---- the pool ---- */

struct ready {
	struct job job;
	int qi;
	double claimed_at;        /* mono_s() when it entered the ready list */
	struct ready *next;
};

struct worker_pool {
	struct settled *app;
	pthread_mutex_t mu;
	pthread_cond_t work_cv;   /* workers: a job is ready, or stop */
	pthread_cond_t fetch_cv;  /* fetcher: capacity freed, nudge, or stop */
	struct ready *head, *tail;
	int nready, busy, capacity;
	int nqueues;
	const char *queues[MAX_QUEUES + 1];
	int limit[MAX_QUEUES];
	int inflight[MAX_QUEUES];
	/* Unleased queues (embedded mode, in_store kinds only; worker.h): the
	 * fetcher reads their due jobs without claiming them. While some are
	 * in flight it reads only past the last one it handed out, (run_at,
	 * id) in the jobs_ready index's order, so it never hands a job out
	 * twice; it starts again from the queue's start once none is in
	 * flight, and stops taking more after UNLEASED_RESTART_S so that that
	 * happens at least that often (a job committed behind the cursor, or
	 * a retry due before it, waits at most that long). */
	bool unleased[MAX_QUEUES];
	int64_t cursor_run_at[MAX_QUEUES], cursor_id[MAX_QUEUES];
	double restarted_at[MAX_QUEUES];
	int rr;                   /* round-robin start, for fairness between queues */
	double job_s;             /* moving average of a job's cost in a batch, seconds */
	atomic_bool stopping;     /* set under mu; workers also read it between jobs */
	bool nudged;
	atomic_uint_fast64_t claim_seq;
	/* SQLite: a batch unit's effects run without a savepoint each (the
	 * unit's own rolls back whole) until one fails; then, until this
	 * mono_us(), each has its savepoint again (batch_unit). */
	bool embedded;
	atomic_uint_fast64_t savepoints_until_us;
	/* Embedded mode with unleased queues: each worker names the unleased
	 * job it is working on in its slot of the guard file, so that a
	 * process that dies in it counts the job an attempt at the next start
	 * (jobguard.h; guard_recover). NULL: no guard (PostgreSQL, every queue
	 * leased, or the file could not be used). */
	struct jobguard *guard;
	atomic_uint next_slot;    /* a worker's slot: the order it started in */

	pthread_t fetcher;
	bool fetcher_started;
	pthread_t *threads;
	unsigned nthreads;
};

/* The queues the kind table names, each with its limit and whether every
 * kind in it is in_store (in_store may be NULL). */
static int build_queue_list(const char **out, int *limits, bool *in_store, int pool_size)
{
	int n = 0;

	for (size_t k = 0; k < settled_njob_kinds; k++) {
		const struct job_kind *kind = &settled_job_kinds[k];
		int i;

		for (i = 0; i < n; i++)
			if (!strcmp(out[i], kind->queue))
				break;
		if (i == n) {
			if (n == MAX_QUEUES)
				continue;
			out[n] = kind->queue;
			limits[n] = pool_size;
			if (in_store)
				in_store[n] = true;
			n++;
		}
		if (in_store && !kind->in_store)
			in_store[i] = false;
		if (kind->max_running > 0 && kind->max_running < limits[i])
			limits[i] = kind->max_running;
	}
	out[n] = NULL;
	return n;
}

size_t worker_queue_names(const char **out, size_t max)
{
	const char *names[MAX_QUEUES + 1];
	int limits[MAX_QUEUES];
	size_t n = (size_t)build_queue_list(names, limits, NULL, 1);

	if (n > max)
		n = max;
	memcpy(out, names, n * sizeof(*out));
	return n;
}

static const struct job_kind *kind_find(const char *kind)
{
	for (size_t k = 0; k < settled_njob_kinds; k++)
		if (!strcmp(settled_job_kinds[k].name, kind))
			return &settled_job_kinds[k];
	return NULL;
}

struct dead_call {
	const struct job_kind *kind;
	const struct job *job;
	const char *error;
};

static enum st_rc dead_unit(struct tx *tx, void *arg)
{
	struct dead_call *d = arg;

	return d->kind->on_dead(tx, d->job, d->error);
}

enum st_rc job_note_dead(struct tx *tx, const struct job *job, const char *error)
{
	const struct job_kind *k = kind_find(job->kind);

	if (!k || !k->on_dead)
		return ST_OK;
	return tx_nested(tx, dead_unit, &(struct dead_call){ k, job, error ? error : "" });
}

enum st_rc job_sweep_dead(struct tx *tx, void *arg, const struct job *job)
{
	struct job_dead_notes *n = arg;
	enum st_rc rc = job_note_dead(tx, job, job->last_error);

	if (rc && n) {
		n->failed++;
		n->last_rc = rc;
		n->last_id = job->id;
	}
	return ST_OK;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint_fast64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint_fast64_t)ts.tv_sec * 1000000u + (uint_fast64_t)ts.tv_nsec / 1000u;
}

static void deadline_in(struct timespec *ts, int64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* ---- handler API ---- */

struct commit_call {
	struct job_ctx *ctx;
	store_unit_fn *effect;
	void *arg;
	bool lost;
	const char *trace_context; /* the job's span: jobs the effect enqueues continue it */
};

static enum st_rc commit_unit(struct tx *tx, void *arg)
{
	struct commit_call *c = arg;
	enum st_rc rc;

	c->lost = false;
	if (c->effect) {
		const char *prev = tx_set_trace_context(tx, c->trace_context);

		rc = c->effect(tx, c->arg);
		tx_set_trace_context(tx, prev);
		if (rc)
			return rc;
	}
	/* The fence: only the holder of the current lease may complete the
	 * job, and with it commit the effect; an unleased job only while its
	 * row is as it was read. */
	rc = c->ctx->job->lease_owner[0]
		     ? queue_complete(tx, c->ctx->job->id, c->ctx->job->lease_owner)
		     : queue_complete_unleased(tx, c->ctx->job);
	if (rc == ST_CONFLICT)
		c->lost = true;
	return rc;
}

enum st_rc job_commit(struct job_ctx *ctx, store_unit_fn *effect, void *arg)
{
	struct commit_call c = { .ctx = ctx, .effect = effect, .arg = arg };
	char tc[TRACE_CONTEXT_MAX];
	struct trace_ctx span_ctx;
	int64_t t0 = ctx->span.tr ? trace_now_ns() : 0;
	enum st_rc rc;

	trace_span_ctx(&ctx->span, &span_ctx);
	if (span_ctx.trace_id[0]) { /* a ctx not made by run_job (tests) has no span */
		trace_ctx_format(&span_ctx, tc);
		c.trace_context = tc;
	}
	rc = store_run(ctx->app->store, commit_unit, &c);
	if (t0)
		trace_store_span(ctx->span.tr, &span_ctx, ctx->app->store->ops->name, t0, rc);

	if (rc == ST_OK)
		ctx->committed = true;
	else if (c.lost && rc == ST_CONFLICT)
		ctx->lost = true;
	return rc;
}

enum st_rc job_commit_later(struct job_ctx *ctx, store_unit_fn *effect, void *arg,
			    job_after_fn *after)
{
	if (!ctx->batched || ctx->later_effect)
		return after(ctx, arg, job_commit(ctx, effect, arg));
	ctx->later_effect = effect;
	ctx->later_arg = arg;
	ctx->later_after = after;
	return ST_OK;
}

enum st_rc job_failf(struct job_ctx *ctx, enum st_rc rc, const char *fmt, ...)
{
	va_list ap;

	buf_reset(&ctx->error);
	va_start(ap, fmt);
	buf_vprintf(&ctx->error, fmt, ap);
	va_end(ap);
	return rc;
}

/* ---- running one job ---- */

struct fail_call {
	const struct job *job;
	const char *error;
	int64_t delay_ms;
	bool permanent;
	enum job_state state;
	enum st_rc note_rc;      /* the kind's on_dead, when the job went dead */
};

/* A failed attempt; one that moves the job to dead gives its kind its
 * on_dead in this same unit, so the job and its note (the webhook event
 * marked failed) commit together: never one without the other. */
static enum st_rc fail_unit(struct tx *tx, void *arg)
{
	struct fail_call *f = arg;
	enum st_rc rc;

	f->note_rc = ST_OK; /* the store may run a unit again */
	if (!f->job->lease_owner[0])
		rc = queue_fail_unleased(tx, f->job, f->error, f->delay_ms, f->permanent, &f->state);
	else
		rc = queue_fail(tx, f->job->id, f->job->lease_owner, f->error, f->delay_ms,
				f->permanent, &f->state);
	if (rc == ST_OK && f->state == JOB_DEAD)
		f->note_rc = job_note_dead(tx, f->job, f->error);
	return rc;
}

static void job_log(struct worker_pool *p, enum log_level lvl, const struct job *j,
		    const char *msg, const struct job_ctx *ctx, int64_t delay_ms, int64_t cap_ms)
{
	struct buf f = BUF_INIT(4096);

	if (lvl < p->app->log.min)
		return; /* "job completed" is debug: most jobs' line is never written */
	log_field_int(&f, "job_id", j->id);
	log_field_str(&f, "queue", j->queue);
	log_field_str(&f, "kind", j->kind);
	log_field_int(&f, "attempt", j->attempts + 1);
	log_field_int(&f, "max_attempts", j->max_attempts);
	if (ctx && ctx->error.len)
		log_field_str(&f, "error", ctx->error.ptr);
	if (delay_ms >= 0) {
		log_field_int(&f, "delay_ms", delay_ms);
		log_field_int(&f, "backoff_cap_ms", cap_ms);
	}
	if (ctx && ctx->span.span_id[0])
		log_field_str(&f, "span_id", ctx->span.span_id);
	log_emit(&p->app->log, lvl, NULL, ctx && ctx->span.trace_id[0] ? ctx->span.trace_id : NULL,
		 msg, &f);
	buf_release(&f);
}

/* Emits msg with the job's fields (job_logf, job_log_text). */
static void job_emit(const struct job_ctx *ctx, enum log_level lvl, const char *msg)
{
	struct buf f = BUF_INIT(1024);

	log_field_int(&f, "job_id", ctx->job->id);
	log_field_str(&f, "queue", ctx->job->queue);
	log_field_str(&f, "kind", ctx->job->kind);
	if (ctx->span.span_id[0])
		log_field_str(&f, "span_id", ctx->span.span_id);
	log_emit(&ctx->app->log, lvl, NULL, ctx->span.trace_id[0] ? ctx->span.trace_id : NULL,
		 msg, &f);
	buf_release(&f);
}

void job_logf(const struct job_ctx *ctx, enum log_level lvl, const char *fmt, ...)
{
	/* Formatted once on the stack when it fits (nearly every message):
	 * buf_vprintf measured with one vsnprintf and wrote with a second,
	 * into a heap buffer (~8k of a webhook job's ~27k on its worker). */
	char stack[JOB_LOG_STACK];
	struct buf msg = BUF_INIT(1 << 16);
	va_list ap;
	int n;

	if (lvl < ctx->app->log.min)
		return;
	va_start(ap, fmt);
	n = vsnprintf(stack, sizeof(stack), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(stack)) {
		job_emit(ctx, lvl, stack);
		return;
	}
	va_start(ap, fmt);
	if (n < 0 || buf_vprintf(&msg, fmt, ap)) /* log_emit cuts a long msg to fit the line */
		buf_puts(&msg, "job log: message not logged (too long or out of memory)");
	va_end(ap);
	job_emit(ctx, lvl, msg.ptr);
	buf_release(&msg);
}

void job_log_text(const struct job_ctx *ctx, enum log_level lvl, const char *msg)
{
	if (lvl >= ctx->app->log.min)
		job_emit(ctx, lvl, msg);
}

/* Starts the job's span: CONSUMER, named as the OpenTelemetry messaging
 * conventions name a "process" span, child of the enqueuer's span. */
static void job_span_start(struct job_ctx *ctx)
{
	const struct job *j = ctx->job;
	struct trace_ctx cause;
	char name[QUEUE_NAME_MAX + 16];
	bool has_cause = j->traceparent && trace_ctx_parse(j->traceparent, &cause) == ST_OK;

	unsigned char rnd[TRACE_SPAN_RND];

	/* The ids from the server's pool: one RAND_bytes call per id was a
	 * tenth of a no-op job's cost (randpool.h). */
	randpool_bytes(&ctx->app->rand, rnd, sizeof(rnd)); /* zeroed on failure: hex_id copes */
	snprintf(name, sizeof(name), "process %s", j->queue);
	trace_span_start_rnd(&ctx->span, ctx->app->tracer, name, TRACE_CONSUMER,
			     has_cause ? &cause : NULL, rnd);
	trace_span_set_str(&ctx->span, "messaging.system", "settled");
	trace_span_set_str(&ctx->span, "messaging.operation.type", "process");
	trace_span_set_str(&ctx->span, "messaging.operation.name", "process");
	trace_span_set_str(&ctx->span, "messaging.destination.name", j->queue);
	if (ctx->span.tr) {
		char id[24];

		snprintf(id, sizeof(id), "%lld", (long long)j->id);
		trace_span_set_str(&ctx->span, "messaging.message.id", id);
	}
	trace_span_set_str(&ctx->span, "settled.job.kind", j->kind);
	trace_span_set_int(&ctx->span, "settled.job.attempt", j->attempts + 1);
	trace_span_set_int(&ctx->span, "settled.job.max_attempts", j->max_attempts);
}

static void job_span_end(struct job_ctx *ctx, const char *result)
{
	trace_span_set_str(&ctx->span, "settled.job.result", result);
	if (strcmp(result, "completed"))
		trace_span_set_status(&ctx->span, TRACE_ERROR,
				      ctx->error.len ? ctx->error.ptr : result);
	trace_span_end(&ctx->span);
}

/* One job of a worker's batch, from its start until its outcome is durable. */
enum batch_todo {
	BATCH_DONE = 0,   /* finished: its outcome is written (or it was lost) */
	BATCH_COMPLETE,   /* handler done with nothing to commit: complete it in the batch unit */
	BATCH_HANDBACK,   /* not started (stopping, or waited too long): hand it back */
	BATCH_EFFECT,     /* job_commit_later: its effect and completion go in the batch unit */
};

struct batch_item {
	struct ready *r;
	struct job_ctx ctx;
	double t0;
	enum batch_todo todo;
	bool lost;                /* batch unit: the completion found the lease gone */
	enum st_rc rc;            /* how writing its deferred outcome went */
	enum st_rc effect_rc;     /* BATCH_EFFECT: its savepoint's result in the batch unit */
	char tc[TRACE_CONTEXT_MAX]; /* BATCH_EFFECT: the job's span, for what the effect enqueues */
};

/* Writes a job's outcome (completion, failure, hand-back): each is fenced
 * by the job's lease, so a second try can never apply it twice (a first
 * try that did commit leaves the second nothing to change: ST_CONFLICT).
 * It gets that second try because the alternative is worse: a job whose
 * outcome was not written stays running under our lease, runs again only
 * once the lease expires and the sweeper takes it back, and is charged an
 * attempt it did not fail. One failed write (an allocation, a dropped
 * connection) should not cost that. */
static enum st_rc record_outcome(struct store *st, store_unit_fn *fn, void *arg)
{
	enum st_rc rc = store_run(st, fn, arg);

	if (rc && rc != ST_CONFLICT)
		rc = store_run(st, fn, arg);
	return rc;
}

/* Names an unleased job in the worker's guard slot while code of that job
 * alone runs (its handler, its effect, its after step, its outcome's
 * write), so that a process dying there counts it an attempt at the next
 * start (jobguard.h). A leased job has its lease for that. Memory stores
 * into the mapped file: no syscall, nothing for the store's writer. */
static void guard_mark(struct jobguard *g, unsigned slot, const struct job *j)
{
	if (g && !j->lease_owner[0])
		jobguard_mark(g, slot, j->id, j->attempts, j->updated_at);
}

/* Records the job's duration and ends its span and context. */
static void job_finish(struct worker_pool *p, struct batch_item *b, const char *result)
{
	const struct job *j = &b->r->job;
	const char *const lv[] = { j->queue, j->kind, result };

	metrics_observe(p->app->m.job_duration, lv, mono_s() - b->t0);
	job_span_end(&b->ctx, result);
	buf_release(&b->ctx.error);
}

/* Runs the job's handler. Returns BATCH_COMPLETE when the handler succeeded
 * without committing anything (its completion is left to the batch unit,
 * and b->ctx stays open until then), else records the outcome in its own
 * unit as it always did and returns BATCH_DONE. */
static void job_outcome(struct worker_pool *p, struct batch_item *b, enum st_rc rc);

static enum batch_todo run_job(struct worker_pool *p, struct batch_item *b)
{
	struct settled *app = p->app;
	struct job *j = &b->r->job;
	const struct job_kind *k = kind_find(j->kind);
	struct job_ctx *ctx = &b->ctx;
	enum st_rc rc;

	*ctx = (struct job_ctx){ .app = app, .job = j, .error = BUF_INIT(QUEUE_ERROR_MAX),
				 .batched = true };
	b->t0 = mono_s();
	job_span_start(ctx);
	if (k)
		rc = k->handler(ctx);
	else
		rc = job_failf(ctx, ST_INVALID, "no handler for job kind %s", j->kind);

	if (ctx->later_effect) {
		struct trace_ctx span_ctx;

		if (rc == ST_OK) {
			b->tc[0] = '\0';
			trace_span_ctx(&ctx->span, &span_ctx);
			if (span_ctx.trace_id[0])
				trace_ctx_format(&span_ctx, b->tc);
			return BATCH_EFFECT;
		}
		/* A handler that failed after handing its effect over broke
		 * the contract; its after step still owns arg. */
		rc = ctx->later_after(ctx, ctx->later_arg, rc);
		ctx->later_effect = NULL;
	}
	if (rc == ST_OK && !ctx->committed && !ctx->lost)
		return BATCH_COMPLETE;
	job_outcome(p, b, rc);
	return BATCH_DONE;
}

/* Records what the handler's rc means (its failure in a unit of its own,
 * as it always was) and finishes the job. */
static void job_outcome(struct worker_pool *p, struct batch_item *b, enum st_rc rc)
{
	struct settled *app = p->app;
	const struct config *cfg = app->cfg;
	struct job *j = &b->r->job;
	struct job_ctx *ctx = &b->ctx;
	const char *result;

	if (ctx->lost) {
		result = "lost";
		job_log(p, LOG_WARN, j, "job lease lost: effect rolled back", ctx, -1, 0);
	} else if (rc == ST_OK) {
		result = "completed";
		job_log(p, LOG_DEBUG, j, "job completed", ctx, -1, 0);
	} else {
		struct fail_call f = { .job = j, .permanent = ctx->permanent };
		int64_t cap = queue_backoff_ceiling_ms(j->attempts, cfg->job_base_delay_ms,
						       cfg->job_max_delay_ms);

		if (!ctx->error.len)
			job_failf(ctx, rc, "handler failed: %s", st_rc_str(rc));
		f.error = ctx->error.ptr;
		f.delay_ms = ctx->retry_in_ms > 0 ? ctx->retry_in_ms
			     : queue_backoff_ms(j->attempts, cfg->job_base_delay_ms,
						cfg->job_max_delay_ms, NULL, NULL);
		rc = record_outcome(app->store, fail_unit, &f);
		if (rc) {
			/* The job stays running under our lease; the sweeper
			 * returns it when the lease expires. */
			result = "error";
			job_logf(ctx, LOG_ERROR, "job %lld: cannot record the failure: %s",
				 (long long)j->id, st_rc_str(rc));
		} else if (f.state == JOB_DEAD) {
			result = "dead";
			job_log(p, LOG_ERROR, j, "job failed for good: moved to the dead-letter queue",
				ctx, -1, 0);
			if (f.note_rc)
				job_logf(ctx, LOG_WARN, "job %lld: cannot note its failure: %s",
					 (long long)j->id, st_rc_str(f.note_rc));
		} else {
			const char *const lv[] = { j->queue, j->kind };

			result = "retry";
			metrics_inc(app->m.job_retries, lv);
			job_log(p, LOG_WARN, j, "job failed: retry scheduled", ctx, f.delay_ms,
				ctx->retry_in_ms > 0 ? ctx->retry_in_ms : cap);
		}
	}
	job_finish(p, b, result);
}

struct batch_call {
	struct batch_item *items;
	int n;
	struct jobguard *guard;  /* the pool's, and the slot of the worker whose batch it is */
	unsigned slot;
	bool plain;          /* effects without a savepoint each (SQLite only) */
	bool effect_failed;  /* plain: an effect failed, and with it the unit */
};

/* Every deferred completion and hand-back of a batch in one unit. The
 * completions of jobs claimed together (one lease owner) are one statement
 * (queue_complete_many); each is still fenced by its own lease, and one
 * that finds its lease gone changed no row, so it needs no savepoint: it is
 * reported lost alone and the others commit. */
static enum st_rc batch_unit(struct tx *tx, void *arg)
{
	struct batch_call *c = arg;
	int64_t ids[WORKER_BATCH_MAX];
	bool done[WORKER_BATCH_MAX];

	for (int i = 0; i < c->n; i++)
		c->items[i].lost = false; /* the unit may run again (PostgreSQL retries) */
	/* Effects first, each with its fenced completion under its own
	 * savepoint: one that fails (or finds its lease gone) is rolled back
	 * alone, and run_batch then commits it in a unit of its own. The
	 * effects are independent postings whose rows stay locked until the
	 * unit commits, taken in no common order: on PostgreSQL two such
	 * units (two workers) waiting for each other's rows deadlocked, again
	 * and again, and held every writer. So an effect waits only the
	 * store's short lock timeout (tx_nested_nowait); one that would wait
	 * longer leaves the unit (ST_BUSY) and is committed alone, where it
	 * waits holding nothing else. */
	c->effect_failed = false;
	for (int i = 0; i < c->n; i++) {
		struct batch_item *b = &c->items[i];
		struct commit_call cc = { .ctx = &b->ctx, .effect = b->ctx.later_effect,
					  .arg = b->ctx.later_arg, .trace_context = b->tc[0] ? b->tc : NULL };

		if (b->todo != BATCH_EFFECT)
			continue;
		/* The writer runs this on the worker's behalf (the worker
		 * waits in store_run): a crash in this effect is this job's. */
		guard_mark(c->guard, c->slot, &b->r->job);
		if (!c->plain) {
			b->effect_rc = tx_nested_nowait(tx, commit_unit, &cc);
			continue;
		}
		/* Plain: no savepoint of its own (its SAVEPOINT, RELEASE and
		 * the pages journaled again were ~8k instructions of a webhook
		 * job). One that fails takes the whole unit with it: every
		 * write of this unit is rolled back by the store (each unit
		 * has its own savepoint in the writer's batch), and run_batch
		 * runs it again with savepoints. */
		b->effect_rc = commit_unit(tx, &cc);
		if (b->effect_rc) {
			jobguard_clear(c->guard, c->slot);
			c->effect_failed = true;
			return b->effect_rc;
		}
	}
	/* What follows is the batch's, no one job's. */
	jobguard_clear(c->guard, c->slot);
	for (int i = 0; i < c->n;) {
		struct batch_item *b = &c->items[i];
		const char *owner = b->r->job.lease_owner;
		int k = 0, end = i;
		enum st_rc rc;

		if (b->todo == BATCH_HANDBACK && !owner[0]) {
			i++; /* unleased: it is available already */
			continue;
		}
		if (b->todo == BATCH_HANDBACK || (b->todo == BATCH_COMPLETE && !owner[0])) {
			/* A hand-back, or an unleased completion: fenced by its
			 * row, one by one (rare: a webhook job with nothing
			 * left to do). */
			rc = b->todo == BATCH_HANDBACK ? queue_release(tx, b->r->job.id, owner)
						       : queue_complete_unleased(tx, &b->r->job);
			if (rc == ST_CONFLICT)
				b->lost = true;
			else if (rc)
				return rc;
			i++;
			continue;
		}
		if (b->todo != BATCH_COMPLETE) {
			i++;
			continue;
		}
		/* The run of completions under this owner (claimed together). */
		for (; end < c->n && (c->items[end].todo != BATCH_COMPLETE ||
				      !strcmp(c->items[end].r->job.lease_owner, owner)) &&
		       c->items[end].todo != BATCH_HANDBACK; end++)
			if (c->items[end].todo == BATCH_COMPLETE)
				ids[k++] = c->items[end].r->job.id;
		rc = queue_complete_many(tx, owner, ids, k, done);
		if (rc)
			return rc;
		k = 0;
		for (; i < end; i++)
			if (c->items[i].todo == BATCH_COMPLETE)
				c->items[i].lost = !done[k++];
	}
	return ST_OK;
}

/* A job_commit_later effect after its batch unit: committed with it, or
 * (it failed in its savepoint, or the batch unit failed as a whole) rolled
 * back and now committed alone, exactly as job_commit does, so the job
 * gets the rc a unit of its own gives. Then its after step decides the
 * handler's result, and the job's outcome is recorded as any handler's. */
static void effect_done(struct worker_pool *p, struct batch_item *b, enum st_rc batch_rc)
{
	struct job_ctx *ctx = &b->ctx;
	enum st_rc rc;

	if (batch_rc == ST_OK && b->effect_rc == ST_OK) {
		ctx->committed = true;
		rc = ST_OK;
	} else {
		rc = job_commit(ctx, ctx->later_effect, ctx->later_arg);
	}
	rc = ctx->later_after(ctx, ctx->later_arg, rc);
	ctx->later_effect = NULL;
	if (rc == ST_OK && !ctx->committed)
		rc = job_failf(ctx, ST_INTERNAL, "job %lld: its after step answered ok for an effect"
			       " that was not committed", (long long)b->r->job.id);
	job_outcome(p, b, rc);
}

/* The store span of an effect committed in a batch unit, under the job's
 * span as job_commit's own: the batch unit's time, and the effect's result
 * in it (an effect that failed there gets a second span from the
 * job_commit that runs it alone). */
static void effect_store_span(struct worker_pool *p, struct batch_item *b, int64_t t0,
			      enum st_rc batch_rc)
{
	struct trace_ctx span_ctx;

	if (!b->ctx.span.tr)
		return;
	trace_span_ctx(&b->ctx.span, &span_ctx);
	if (span_ctx.trace_id[0])
		trace_store_span(b->ctx.span.tr, &span_ctx, p->app->store->ops->name, t0,
				 batch_rc ? batch_rc : b->effect_rc);
}

/* Runs a batch taken from the ready list and writes the deferred outcomes
 * in one unit. Returns the batch's cost per job in seconds (handlers and
 * commit), for the capacity estimate. */
static double run_batch(struct worker_pool *p, struct batch_item *items, int n, unsigned slot)
{
	struct batch_call c = { .items = items, .n = n };
	double start = mono_s(), wait_max = (double)p->app->cfg->job_lease_ms / 2000.0;
	int deferred = 0;
	int64_t t0;
	enum st_rc rc;

	for (int i = 0; i < n; i++) {
		struct batch_item *b = &items[i];

		/* Not started: hand back without an attempt when stopping, or
		 * when the lease is half gone before the job could start. */
		if (atomic_load(&p->stopping) ||
		    (wait_max > 0 && b->r->job.lease_owner[0] &&
		     mono_s() - b->r->claimed_at > wait_max))
			b->todo = BATCH_HANDBACK;
		else {
			guard_mark(p->guard, slot, &b->r->job);
			b->todo = run_job(p, b);
			jobguard_clear(p->guard, slot);
		}
		deferred += b->todo != BATCH_DONE;
	}
	if (!deferred)
		return (mono_s() - start) / n;
	/* At most WORKER_EFFECTS_PER_UNIT effects a unit: a unit of 256
	 * ledger postings holds the one SQLite writer for tens of ms, and
	 * every request's unit queued behind it (webhook intake halved in
	 * ops/bench while its jobs drained). The writer also takes at most
	 * one such (background) unit a batch while requests wait (store.h,
	 * store_run). Completions without an effect are cheap: they ride in
	 * the slice their place in the batch falls in. */
	for (int lo = 0; lo < n;) {
		int hi = lo, effects = 0;

		while (hi < n && (items[hi].todo != BATCH_EFFECT || effects < WORKER_EFFECTS_PER_UNIT))
			effects += items[hi++].todo == BATCH_EFFECT;
		c = (struct batch_call){ .items = items + lo, .n = hi - lo,
					 .guard = p->guard, .slot = slot,
					 .plain = p->embedded &&
						  mono_us() >= atomic_load(&p->savepoints_until_us) };
		t0 = trace_now_ns();
		rc = store_run(p->app->store, batch_unit, &c);
		if (rc && c.effect_failed) {
			/* An effect failed without a savepoint of its own, and
			 * nothing of the unit was written: run it again with
			 * one each, so the failing effect rolls back alone and
			 * is committed alone afterwards (effect_done), and the
			 * others commit together. Failures come in runs (an
			 * unknown wallet's retries, a chaos fault): keep the
			 * savepoints for a while rather than pay twice each time. */
			atomic_store(&p->savepoints_until_us,
				     mono_us() + (uint_fast64_t)(SAVEPOINTS_AFTER_FAILURE_S * 1e6));
			c.plain = false;
			rc = store_run(p->app->store, batch_unit, &c);
		}
		for (int i = lo; i < hi; i++) {
			items[i].rc = rc;
			if (items[i].todo == BATCH_EFFECT)
				effect_store_span(p, &items[i], t0, rc);
		}
		if (rc) {
			/* The batch unit failed as a whole: nothing of it was
			 * written. The second try (see record_outcome) is one
			 * unit per job, so that one job's trouble holds up no
			 * other. */
			for (int i = lo; i < hi; i++) {
				struct batch_call one = { .items = &items[i], .n = 1 };

				if (items[i].todo != BATCH_DONE && items[i].todo != BATCH_EFFECT)
					items[i].rc = store_run(p->app->store, batch_unit, &one);
			}
		}
		lo = hi;
	}
	for (int i = 0; i < n; i++) {
		struct batch_item *b = &items[i];
		const struct job *j = &b->r->job;

		rc = b->rc;
		if (b->todo == BATCH_HANDBACK) {
			if (rc == ST_OK && !b->lost)
				job_log(p, LOG_DEBUG, j, "job handed back unstarted", NULL, -1, 0);
			else if (rc)
				job_log(p, LOG_WARN, j, "job could not be handed back: its lease will expire",
					NULL, -1, 0);
			continue;
		}
		if (b->todo == BATCH_EFFECT) {
			guard_mark(p->guard, slot, j);
			effect_done(p, b, rc);
			jobguard_clear(p->guard, slot);
			continue;
		}
		if (b->todo != BATCH_COMPLETE)
			continue;
		if (rc) {
			/* The job stays running under our lease; the sweeper
			 * returns it when the lease expires. */
			job_logf(&b->ctx, LOG_ERROR, "job %lld: cannot record the completion: %s",
				 (long long)j->id, st_rc_str(rc));
			job_finish(p, b, "error");
		} else if (b->lost) {
			job_log(p, LOG_WARN, j, "job lease lost: effect rolled back", &b->ctx, -1, 0);
			job_finish(p, b, "lost");
		} else {
			job_log(p, LOG_DEBUG, j, "job completed", &b->ctx, -1, 0);
			job_finish(p, b, "completed");
		}
	}
	return (mono_s() - start) / n;
}

/* With mu held: folds a batch's cost per job into the average and sizes
 * the ready list so that a job waits at most about a quarter of its lease
 * behind the others (capacity / workers jobs at job_s each). */
static void set_capacity(struct worker_pool *p, double sample_s)
{
	double quarter = (double)p->app->cfg->job_lease_ms / 4000.0, per;
	int workers = (int)p->app->cfg->workers;

	if (sample_s > 0)
		p->job_s = 0.75 * p->job_s + 0.25 * sample_s;
	if (quarter <= 0)
		per = 2; /* no lease to size against (tests): the old 2 x workers */
	else
		per = p->job_s > 0 ? quarter / p->job_s : WORKER_BATCH_MAX;
	if (per > WORKER_BATCH_MAX)
		per = WORKER_BATCH_MAX;
	if (per < 2)
		per = 2;
	p->capacity = workers * (int)per;
}

/* ---- threads ---- */

static void *worker_main(void *arg)
{
	struct worker_pool *p = arg;
	struct batch_item *items = calloc(WORKER_BATCH_MAX, sizeof(*items));
	int workers = (int)p->app->cfg->workers;
	unsigned slot = atomic_fetch_add(&p->next_slot, 1); /* its guard slot */

	if (!items) {
		log_msg(&p->app->log, LOG_ERROR, "job worker: out of memory; this worker does not run");
		return NULL;
	}
	pthread_mutex_lock(&p->mu);
	for (;;) {
		int n = 0, share;
		double cost;

		while (!p->head && !p->stopping)
			pthread_cond_wait(&p->work_cv, &p->mu);
		if (p->stopping)
			break; /* jobs still in the ready list are handed back by stop */
		/* An even share of what is ready, so the other workers get some. */
		share = (p->nready + workers - 1) / workers;
		if (share > WORKER_BATCH_MAX)
			share = WORKER_BATCH_MAX;
		while (p->head && n < share) {
			items[n++].r = p->head;
			p->head = p->head->next;
		}
		if (!p->head)
			p->tail = NULL;
		p->nready -= n;
		p->busy += n;
		pthread_mutex_unlock(&p->mu);

		cost = run_batch(p, items, n, slot);

		pthread_mutex_lock(&p->mu);
		p->busy -= n;
		for (int i = 0; i < n; i++) {
			p->inflight[items[i].r->qi]--;
			job_release(&items[i].r->job);
			free(items[i].r);
			items[i].r = NULL;
		}
		set_capacity(p, cost);
		pthread_cond_signal(&p->fetch_cv);
	}
	pthread_mutex_unlock(&p->mu);
	free(items);
	return NULL;
}

struct claim_call {
	struct worker_pool *p;
	int free_slots;          /* what the pool can take now */
	int room[MAX_QUEUES];    /* what each queue may take under its limit */
	int due[MAX_QUEUES];     /* due jobs seen by the peek, up to room */
	int want[MAX_QUEUES];
	int got[MAX_QUEUES];
	struct job jobs[MAX_QUEUES][CLAIM_MAX];
	char owner[QUEUE_OWNER_MAX + 1];
	struct ready *spare;     /* ready-list nodes allocated ahead of a claim */
	int nspare;
	int64_t cursor_run_at[MAX_QUEUES], cursor_id[MAX_QUEUES]; /* unleased queues' */
	bool any_leased;         /* share_claim: a leased queue is wanted (a claim unit) */
	/* Leased queues whose last claim got every job it asked for: more are
	 * likely due, so the next peek does not count them (see peek_unit). */
	bool full[MAX_QUEUES];
};

static void release_queue(struct claim_call *c, int q, int keep)
{
	while (c->got[q] > keep)
		job_release(&c->jobs[q][--c->got[q]]);
}

/* On a read connection, without the writer: how many jobs are due in each
 * queue that has room (counted up to its room)? An unleased queue's due
 * jobs past its cursor are read here (a count would also see those in
 * flight, which are still available): they are the take, trimmed later
 * to what the pool wants. */
static enum st_rc peek_unit(struct tx *tx, void *arg)
{
	struct claim_call *c = arg;

	for (int q = 0; q < c->p->nqueues; q++) {
		int64_t n = 0;
		enum st_rc rc;

		c->due[q] = 0;
		if (c->p->unleased[q])
			release_queue(c, q, 0); /* a read run again starts from nothing */
		if (c->room[q] <= 0)
			continue;
		if (c->p->unleased[q]) {
			/* No more than the pool can take: what is read past
			 * that is read again next time. */
			rc = queue_take_due(tx, c->p->queues[q],
					    c->room[q] < c->free_slots ? c->room[q] : c->free_slots,
					    c->cursor_run_at[q], c->cursor_id[q], c->jobs[q], &c->got[q]);
			if (rc)
				return rc;
			c->due[q] = c->got[q];
			continue;
		}
		if (c->full[q]) {
			/* Its last claim got all it asked for, so more are
			 * likely due: claim its room without counting. The
			 * count walks jobs_ready from its start, past the
			 * entries of every job claimed since the last vacuum,
			 * and cost PostgreSQL about a quarter of what the claim
			 * does in a drain (queue.md "Claiming"). A claim that
			 * finds fewer ends this, and the next peek counts. */
			c->due[q] = c->room[q];
			continue;
		}
		rc = queue_count_due(tx, c->p->queues[q], c->room[q], &n);
		if (rc)
			return rc;
		c->due[q] = (int)n;
	}
	return ST_OK;
}

/* Frees the jobs a claim holds (a run the store rolled back or re-runs). */
static void claim_release(struct claim_call *c)
{
	for (int q = 0; q < c->p->nqueues; q++) {
		for (int i = 0; i < c->got[q]; i++)
			job_release(&c->jobs[q][i]);
		c->got[q] = 0;
	}
}

/* Frees what a claim took of the leased queues (the unleased ones' jobs
 * were read before it and stay). */
static void claim_release_leased(struct claim_call *c)
{
	for (int q = 0; q < c->p->nqueues; q++) {
		if (c->p->unleased[q])
			continue;
		for (int i = 0; i < c->got[q]; i++)
			job_release(&c->jobs[q][i]);
		c->got[q] = 0;
	}
}

static enum st_rc claim_unit(struct tx *tx, void *arg)
{
	struct claim_call *c = arg;

	/* The store may run a unit more than once (PostgreSQL re-runs it when
	 * the connection died before COMMIT, or when a lost COMMIT turned out
	 * not to have committed): start from nothing each time. */
	claim_release_leased(c);
	for (int q = 0; q < c->p->nqueues; q++) {
		enum st_rc rc;

		if (!c->want[q] || c->p->unleased[q])
			continue;
		rc = queue_claim(tx, c->p->queues[q], c->want[q], c->owner, c->p->app->cfg->job_lease_ms,
				 c->jobs[q], &c->got[q]);
		if (rc) {
			claim_release_leased(c);
			return rc;
		}
	}
	return ST_OK;
}

/* With mu held: the free capacity and each queue's room under its limit.
 * Returns the free capacity, or 0 when it is not worth a claim yet. */
static int plan_claim(struct worker_pool *p, struct claim_call *c)
{
	int free_slots = p->capacity - p->busy - p->nready, any = 0;

	if (p->nready > 0 && free_slots < p->capacity / 2)
		return 0;
	for (int q = 0; q < p->nqueues; q++) {
		int room = p->limit[q] - p->inflight[q];

		if (p->unleased[q]) {
			double now = mono_s();

			if (p->inflight[q] == 0) {
				p->cursor_run_at[q] = p->cursor_id[q] = 0;
				p->restarted_at[q] = now;
			} else if (now - p->restarted_at[q] > UNLEASED_RESTART_S) {
				room = 0; /* let it drain, then read from the start */
			}
			c->cursor_run_at[q] = p->cursor_run_at[q];
			c->cursor_id[q] = p->cursor_id[q];
		}
		c->room[q] = room < 0 ? 0 : room > CLAIM_MAX ? CLAIM_MAX : room;
		any |= c->room[q] > 0;
	}
	c->free_slots = any ? free_slots : 0;
	return c->free_slots;
}

/* Shares the free capacity between the queues with due jobs, starting
 * from a rotating queue so none starves. Returns the total wanted. */
static int share_claim(struct worker_pool *p, struct claim_call *c)
{
	int free_slots = c->free_slots, total = 0;

	memset(c->want, 0, sizeof(c->want));
	c->any_leased = false;
	for (int i = 0; i < p->nqueues && free_slots > 0; i++) {
		int q = (p->rr + i) % p->nqueues;
		int n = c->due[q] < free_slots ? c->due[q] : free_slots;

		if (n <= 0)
			continue;
		c->want[q] = n;
		free_slots -= n;
		total += n;
		if (!p->unleased[q])
			c->any_leased = true;
	}
	p->rr = (p->rr + 1) % (p->nqueues ? p->nqueues : 1);
	return total;
}

/* Allocates the ready-list nodes a claim of `wanted` jobs needs BEFORE the
 * claim, and trims the claim to the nodes it got: a claimed job that found
 * no node would sit unstarted under our lease until the sweeper took it
 * back after the lease expired. Nodes left over stay for the next claim.
 * Returns the number of jobs still wanted. */
static int reserve_nodes(struct worker_pool *p, struct claim_call *c, int wanted)
{
	int left;

	while (c->nspare < wanted) {
		struct ready *r = malloc(sizeof(*r));

		if (!r)
			break;
		r->next = c->spare;
		c->spare = r;
		c->nspare++;
	}
	if (c->nspare >= wanted)
		return wanted;
	left = c->nspare;
	for (int q = 0; q < p->nqueues; q++) {
		if (c->want[q] > left)
			c->want[q] = left;
		left -= c->want[q];
	}
	return c->nspare;
}

static void *fetcher_main(void *arg)
{
	struct worker_pool *p = arg;
	struct claim_call *c = calloc(1, sizeof(*c));

	if (!c) {
		log_msg(&p->app->log, LOG_ERROR, "job fetcher: out of memory; no jobs will run");
		return NULL;
	}
	c->p = p;
	pthread_mutex_lock(&p->mu);
	while (!p->stopping) {
		struct timespec until;
		int wanted = 0, got = 0;
		double now;
		enum st_rc rc = ST_OK;

		p->nudged = false;
		if (plan_claim(p, c)) {
			pthread_mutex_unlock(&p->mu);
			snprintf(c->owner, sizeof(c->owner), "%s#%llu", p->app->instance_id,
				 (unsigned long long)atomic_fetch_add(&p->claim_seq, 1));
			memset(c->got, 0, sizeof(c->got));
			rc = store_read(p->app->store, peek_unit, c);
			if (rc == ST_OK && (wanted = share_claim(p, c)) > 0 &&
			    (wanted = reserve_nodes(p, c, wanted)) == 0)
				rc = ST_NOMEM; /* not one node: claim nothing, try again later */
			for (int q = 0; q < p->nqueues; q++)
				if (p->unleased[q]) /* read by the peek: keep what is wanted */
					release_queue(c, q, rc == ST_OK ? c->want[q] : 0);
			if (rc == ST_OK && wanted > 0 && c->any_leased)
				rc = store_run(p->app->store, claim_unit, c);
			if (rc)
				claim_release(c); /* a run whose COMMIT failed: nothing is ours */
			for (int q = 0; q < p->nqueues; q++)
				if (!p->unleased[q] && (c->want[q] > 0 || c->due[q] == 0))
					c->full[q] = rc == ST_OK && c->want[q] > 0 &&
						     c->got[q] == c->want[q];
			if (rc && !atomic_load(&p->app->stopping))
				log_msg(&p->app->log, LOG_WARN, "job fetcher: claim failed: %s",
					st_rc_str(rc));
			pthread_mutex_lock(&p->mu);
			now = mono_s();
			for (int q = 0; rc == ST_OK && q < p->nqueues; q++) {
				for (int i = 0; i < c->got[q]; i++) {
					/* got <= want <= nspare: every job has its node. */
					struct ready *r = c->spare;

					c->spare = r->next;
					c->nspare--;
					*r = (struct ready){ .job = c->jobs[q][i], .qi = q, .claimed_at = now };
					if (p->unleased[q]) {
						p->cursor_run_at[q] = r->job.run_at;
						p->cursor_id[q] = r->job.id;
					}
					if (p->tail)
						p->tail->next = r;
					else
						p->head = r;
					p->tail = r;
					p->nready++;
					p->inflight[q]++;
					got++;
				}
			}
			if (got)
				pthread_cond_broadcast(&p->work_cv);
			/* A full claim may mean more are due: go again at once. */
			if (got && got == wanted)
				continue;
		}
		if (p->stopping || p->nudged)
			continue;
		deadline_in(&until, WORKER_POLL_MS);
		pthread_cond_timedwait(&p->fetch_cv, &p->mu, &until);
	}
	pthread_mutex_unlock(&p->mu);
	while (c->spare) {
		struct ready *r = c->spare;

		c->spare = r->next;
		free(r);
	}
	free(c);
	return NULL;
}

/* ---- start and stop ---- */

struct reclaim_call {
	int64_t counts[2];
	bool embedded;
	struct job_dead_notes notes;
};

static enum st_rc reclaim_unit(struct tx *tx, void *arg)
{
	struct reclaim_call *r = arg;

	/* Only in embedded mode is every running job an orphan: one process
	 * owns the file. With PostgreSQL other instances may be running theirs;
	 * the lease sweeper waits for expiry there. */
	r->embedded = tx_dialect(tx) == ST_SQLITE;
	r->notes = (struct job_dead_notes){ 0 };
	if (!r->embedded)
		return ST_OK;
	return queue_sweep_leases(tx, INT64_MAX, true, job_sweep_dead, &r->notes, &r->counts[0],
				  &r->counts[1]);
}

/* ---- the crash guard of unleased jobs (jobguard.h) ---- */

#define GUARD_ERROR "process died while running this job"

struct recovered {
	int64_t id;
	char queue[QUEUE_NAME_MAX + 1];
	char kind[QUEUE_KIND_MAX + 1];
	int attempts, max_attempts;  /* attempts before this one */
	int64_t delay_ms;
	enum job_state state;
	enum st_rc note_rc;          /* the kind's on_dead, when it went dead */
};

struct recover_call {
	const struct config *cfg;
	const struct jobguard_mark *marks;
	int n;
	struct recovered *out;       /* n entries */
	int counted;
};

/* Each job the guard names that is still available with the fence it was
 * marked with died with the previous process: a failed attempt, recorded
 * exactly as a handler's (queue_fail_unleased: the same fence, attempts +
 * 1, the error, the backoff, dead after max_attempts). A job that moved
 * since (its effect committed with its completion, its failure recorded,
 * a DLQ retry) fails the fence and is left alone: nothing is counted for
 * a job whose outcome was written. */
static enum st_rc recover_unit(struct tx *tx, void *arg)
{
	struct recover_call *c = arg;

	c->counted = 0; /* the store may run a unit again */
	for (int i = 0; i < c->n; i++) {
		const struct jobguard_mark *m = &c->marks[i];
		const struct job_kind *k;
		struct recovered *r = &c->out[c->counted];
		struct job j;
		enum st_rc rc = queue_get(tx, m->id, &j);

		if (rc == ST_NOT_FOUND)
			continue;
		if (rc)
			return rc;
		k = kind_find(j.kind);
		if (j.state != JOB_AVAILABLE || j.attempts != m->attempts ||
		    j.updated_at != m->updated_at || !k || !k->in_store) {
			job_release(&j);
			continue;
		}
		r->id = j.id;
		fmt_str(r->queue, sizeof(r->queue), j.queue);
		fmt_str(r->kind, sizeof(r->kind), j.kind);
		r->attempts = j.attempts;
		r->max_attempts = j.max_attempts;
		r->delay_ms = queue_backoff_ms(j.attempts, c->cfg->job_base_delay_ms,
					       c->cfg->job_max_delay_ms, NULL, NULL);
		rc = queue_fail_unleased(tx, &j, GUARD_ERROR, r->delay_ms, false, &r->state);
		r->note_rc = ST_OK;
		if (rc == ST_OK && r->state == JOB_DEAD)
			r->note_rc = job_note_dead(tx, &j, GUARD_ERROR);
		job_release(&j);
		if (rc == ST_OK)
			c->counted++;
		else if (rc != ST_CONFLICT)
			return rc;
	}
	return ST_OK;
}

/* The log lines and metrics of a failed attempt (job_outcome's), for the
 * jobs recover_unit counted. */
static void recovered_report(struct settled *app, const struct recover_call *c)
{
	int dead = 0;

	for (int i = 0; i < c->counted; i++) {
		const struct recovered *r = &c->out[i];
		const char *const lv[] = { r->queue, r->kind };
		bool is_dead = r->state == JOB_DEAD;
		struct buf f = BUF_INIT(4096);

		dead += is_dead;
		if (!is_dead)
			metrics_inc(app->m.job_retries, lv);
		log_field_int(&f, "job_id", r->id);
		log_field_str(&f, "queue", r->queue);
		log_field_str(&f, "kind", r->kind);
		log_field_int(&f, "attempt", r->attempts + 1);
		log_field_int(&f, "max_attempts", r->max_attempts);
		log_field_str(&f, "error", GUARD_ERROR);
		if (!is_dead) {
			log_field_int(&f, "delay_ms", r->delay_ms);
			log_field_int(&f, "backoff_cap_ms",
				      queue_backoff_ceiling_ms(r->attempts, app->cfg->job_base_delay_ms,
							       app->cfg->job_max_delay_ms));
		}
		log_emit(&app->log, is_dead ? LOG_ERROR : LOG_WARN, NULL, NULL,
			 is_dead ? "job failed for good: moved to the dead-letter queue"
				 : "job failed: retry scheduled",
			 &f);
		buf_release(&f);
		if (r->note_rc)
			log_msg(&app->log, LOG_WARN, "job %lld (%s): cannot note its failure: %s",
				(long long)r->id, r->kind, st_rc_str(r->note_rc));
	}
	if (c->counted)
		log_msg(&app->log, LOG_WARN,
			"counted an attempt for %d jobs the previous process died running (%d now dead)",
			c->counted, dead);
}

/* Embedded mode with unleased queues: opens the guard file, counts the
 * attempts of what the previous process died running, and arms the file
 * for this one's workers (one slot each). Never stops a start: a guard
 * that cannot be used is logged and the pool runs without one (as before
 * the guard: a crash in an unleased job then counts nothing). NULL then,
 * and when workers is 0 (the guard is only read and emptied). */
static struct jobguard *guard_start(struct settled *app, unsigned workers)
{
	const char *path = app->cfg->db_path;
	struct buf err = BUF_INIT(1024);
	struct jobguard *g = NULL;
	struct recover_call c = { .cfg = app->cfg };
	enum st_rc rc;

	/* No file for an in-memory or URI database (tests). */
	if (!path[0] || !strcmp(path, ":memory:") || !strncmp(path, "file:", 5))
		return NULL;
	rc = jobguard_open(path, &g, &err);
	if (rc) {
		log_msg(&app->log, LOG_WARN,
			"job crash guard off: %s (a crash in a webhook job counts no attempt)", err.ptr);
		goto out;
	}
	c.marks = jobguard_previous(g, &c.n, NULL);
	if (c.n) {
		c.out = calloc((size_t)c.n, sizeof(*c.out));
		rc = c.out ? store_run(app->store, recover_unit, &c) : ST_NOMEM;
		if (rc) {
			/* Not armed: the file keeps its marks for the next start. */
			log_msg(&app->log, LOG_ERROR,
				"job crash guard: cannot count the attempts of the jobs the previous"
				" process died running: %s; the guard is off", st_rc_str(rc));
			jobguard_close(g);
			g = NULL;
			goto out;
		}
		recovered_report(app, &c);
	}
	{
		int invalid = 0;

		jobguard_previous(g, &c.n, &invalid);
		if (invalid)
			log_msg(&app->log, LOG_WARN,
				"job crash guard: %d slots of the previous run were unreadable and were"
				" ignored", invalid);
	}
	rc = jobguard_arm(g, workers ? workers : 1, &err);
	if (rc)
		log_msg(&app->log, LOG_WARN, "job crash guard off: %s", err.ptr);
	if (rc || !workers) {
		jobguard_close(g);
		g = NULL;
	}
out:
	free(c.out);
	buf_release(&err);
	return g;
}

enum st_rc worker_pool_start(struct settled *app, struct worker_pool **out, struct buf *err)
{
	struct worker_pool *p;
	struct reclaim_call rec = { { 0, 0 }, false, { 0 } };
	struct jobguard *guard = NULL;
	int64_t *counts = rec.counts;
	bool in_store[MAX_QUEUES];
	unsigned n = app->cfg->workers;
	enum st_rc rc;

	*out = NULL;
	rc = store_run(app->store, reclaim_unit, &rec);
	if (rc) {
		buf_printf(err, "cannot reclaim the jobs of the previous run: %s", st_rc_str(rc));
		return rc;
	}
	if (counts[0]) {
		metric_add(metric_series_get(app->m.lease_reclaims, NULL), (double)counts[0]);
		log_msg(&app->log, LOG_WARN,
			"took back %lld jobs left running by the previous process (%lld now dead)",
			(long long)counts[0], (long long)counts[1]);
	}
	if (rec.notes.failed)
		log_msg(&app->log, LOG_WARN,
			"%d dead jobs could not note their failure (job %lld: %s)", rec.notes.failed,
			(long long)rec.notes.last_id, st_rc_str(rec.notes.last_rc));
	if (rec.embedded) {
		const char *names[MAX_QUEUES + 1];
		int limits[MAX_QUEUES];
		int nq = build_queue_list(names, limits, in_store, 1);
		bool any_unleased = false;

		for (int q = 0; q < nq; q++)
			any_unleased |= in_store[q];
		if (any_unleased)
			guard = guard_start(app, n);
	}
	if (!n)
		return ST_OK;

	p = calloc(1, sizeof(*p));
	if (!p) {
		jobguard_close(guard);
		return ST_NOMEM;
	}
	p->app = app;
	p->guard = guard;
	/* Until the first batch says what a job costs, assume an eighth of
	 * the lease: a ready list of 2 x workers. Queues without a limit of
	 * their own are bounded by the capacity alone. */
	p->job_s = (double)app->cfg->job_lease_ms / 8000.0;
	set_capacity(p, 0);
	p->nqueues = build_queue_list(p->queues, p->limit, in_store, (int)n * WORKER_BATCH_MAX);
	/* No lease for in_store kinds where one process owns the store: no
	 * other instance can take their jobs, and a crash leaves them
	 * available (worker.h, queue.h). */
	for (int q = 0; q < p->nqueues; q++)
		p->unleased[q] = rec.embedded && in_store[q];
	p->embedded = rec.embedded;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->work_cv, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&p->fetch_cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	p->threads = calloc(n, sizeof(*p->threads));
	if (!p->threads) {
		worker_pool_stop(p);
		return ST_NOMEM;
	}
	for (; p->nthreads < n; p->nthreads++) {
		if (pthread_create(&p->threads[p->nthreads], NULL, worker_main, p)) {
			buf_puts(err, "cannot start a worker thread");
			worker_pool_stop(p);
			return ST_INTERNAL;
		}
	}
	if (pthread_create(&p->fetcher, NULL, fetcher_main, p)) {
		buf_puts(err, "cannot start the job fetcher thread");
		worker_pool_stop(p);
		return ST_INTERNAL;
	}
	p->fetcher_started = true;
	log_msg(&app->log, LOG_INFO, "started %u job workers on %d queues", n, p->nqueues);
	*out = p;
	return ST_OK;
}

void worker_pool_nudge(struct worker_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->nudged = true;
	pthread_cond_signal(&p->fetch_cv);
	pthread_mutex_unlock(&p->mu);
}

struct handback_call {
	struct ready *list;
	int64_t n;
};

static enum st_rc handback_unit(struct tx *tx, void *arg)
{
	struct handback_call *h = arg;

	h->n = 0;
	for (struct ready *r = h->list; r; r = r->next) {
		enum st_rc rc;

		if (!r->job.lease_owner[0])
			continue; /* unleased: available already */
		rc = queue_release(tx, r->job.id, r->job.lease_owner);

		if (rc == ST_OK)
			h->n++;
		else if (rc != ST_CONFLICT)
			return rc;
	}
	return ST_OK;
}

void worker_pool_stop(struct worker_pool *p)
{
	struct handback_call h;

	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = true;
	pthread_cond_broadcast(&p->work_cv);
	pthread_cond_broadcast(&p->fetch_cv);
	pthread_mutex_unlock(&p->mu);
	if (p->fetcher_started)
		pthread_join(p->fetcher, NULL);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);

	/* Claimed but never started: give them back without an attempt. */
	h.list = p->head;
	if (h.list) {
		enum st_rc rc = record_outcome(p->app->store, handback_unit, &h);

		if (rc)
			log_msg(&p->app->log, LOG_WARN,
				"could not hand %d jobs back (%s); their leases will expire", p->nready,
				st_rc_str(rc));
		else
			log_msg(&p->app->log, LOG_INFO, "handed %lld unstarted jobs back", (long long)h.n);
	}
	while (p->head) {
		struct ready *r = p->head;

		p->head = r->next;
		job_release(&r->job);
		free(r);
	}
	/* Every job is finished or handed back: nothing in flight. */
	jobguard_close(p->guard);
	pthread_cond_destroy(&p->work_cv);
	pthread_cond_destroy(&p->fetch_cv);
	pthread_mutex_destroy(&p->mu);
	free(p->threads);
	free(p);
}

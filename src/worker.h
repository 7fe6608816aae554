/* worker.h — job worker threads (SPEC section 10, DESIGN "Threads").
 *
 * One fetcher thread claims due jobs for every queue the handler table
 * names, within each queue's concurrency limit and the pool's free
 * capacity, and hands them to SETTLED_WORKERS worker threads. A worker looks
 * the job's kind up in the kind table (job_kinds.c: one line per kind) and
 * calls its handler on the worker thread, outside any transaction, so a
 * handler may do I/O (ask a rail, deliver a webhook). The handler then
 * commits its effect with job_commit(), which runs the effect and the job's
 * completion in ONE write unit fenced by the lease: if the lease was lost
 * (swept after expiry, the job re-claimed), the completion changes no row
 * and the effect is rolled back. A handler that returns an error (or whose
 * commit failed) records a failed attempt: retry after backoff with full
 * jitter, or the dead-letter queue after max_attempts.
 *
 * In embedded mode the jobs of in_store kinds (struct job_kind) are not
 * claimed at all: the fetcher reads them on a read connection and their
 * completion or failure is fenced by the job's row instead of a lease
 * (queue.h, "Unleased jobs"): no claim unit on the writer, no running
 * state. job_ctx.job->lease_owner is "" for them. What a lease does for a
 * job that kills its process (an attempt counted at the next start, so it
 * ends in the DLQ) the guard file does for them: each worker names the
 * unleased job it is running in a memory-mapped file next to the database
 * (jobguard.h), and worker_pool_start counts such a job a failed attempt
 * before any worker runs.
 *
 * Claiming never blocks the writer for nothing: the fetcher first peeks on a
 * read connection for a due job and only then runs the claim unit. It polls
 * every WORKER_POLL_MS (short, so the sim rail's confirmation delay is
 * honoured closely) and is woken at once by worker_pool_nudge() and by a
 * worker finishing.
 *
 * Shutdown: worker_pool_stop() stops claiming, lets running jobs finish and
 * hands claimed-but-not-started jobs back (available, no attempt counted). */
#ifndef SETTLED_WORKER_H
#define SETTLED_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "log.h"
#include "queue.h"
#include "rc.h"
#include "store.h"
#include "trace.h"

#define WORKER_POLL_MS 50      /* idle poll interval of the fetcher */

struct settled;
struct worker_pool;

struct job_ctx;
/* What runs once a job_commit_later effect is decided: after(ctx, arg, rc)
 * with what job_commit would have returned (ST_OK: effect and completion
 * committed; ST_CONFLICT with ctx->lost: the lease was gone, nothing
 * applied; any other rc: the effect's or the store's, nothing applied, the
 * job still ours). It runs on the worker thread outside any transaction,
 * may log and write like a handler (job_logf, job_failf, ctx->permanent,
 * its own store units), owns arg (frees it), and returns the handler's
 * result: ST_OK, or a failed attempt exactly as a handler's return. */
typedef enum st_rc job_after_fn(struct job_ctx *ctx, void *arg, enum st_rc rc);

/* What a handler gets. */
struct job_ctx {
	struct settled *app;
	const struct job *job;   /* borrowed for the call */
	struct buf error;        /* why the attempt failed (job_failf fills it) */
	int64_t retry_in_ms;     /* > 0: retry after this instead of the backoff */
	bool permanent;          /* the failure cannot heal: straight to the DLQ */
	bool committed;          /* job_commit succeeded: the job is completed */
	bool lost;               /* job_commit found the lease gone: nothing applied */
	/* job_commit_later: the effect the worker writes in its batch unit,
	 * and what runs once that is decided (the worker's, not the handler's) */
	bool batched;            /* run by a worker that can batch effects */
	store_unit_fn *later_effect;
	void *later_arg;
	job_after_fn *later_after;
	/* This run's span (trace.h): a child of the span that enqueued the job
	 * (jobs.traceparent), else a new trace. Its ids are in the job's log
	 * lines (job_logf) even with tracing off; rail calls are its children
	 * (rail_check_traced). */
	struct trace_span span;
};

/* A handler: ST_OK when the job is done (after job_commit, or with nothing
 * to commit: the worker then completes the job alone); any other rc is a
 * failed attempt. Runs on a worker thread, outside any transaction. */
typedef enum st_rc job_handler_fn(struct job_ctx *ctx);

/* What a job's death notes beside it (the webhook event marked failed),
 * run in the very write unit that moves the job to dead, on every path
 * there: a handler's last failed attempt (or a permanent one), a lease
 * swept at its last attempt (the ticker's sweep, the embedded start-up
 * sweep), the crash guard's count at start (jobguard.h). So the job and
 * its note commit together or not at all. Runs under a savepoint of its
 * own; best effort: its failure is logged and the job is dead all the
 * same (the job's state is the source of truth). error is the job's new
 * last_error. */
typedef enum st_rc job_dead_fn(struct tx *tx, const struct job *job, const char *error);

/* A registered job kind: jobs whose kind is name run handler; queue is
 * where they are enqueued. max_running > 0 caps the jobs of that queue
 * running (or waiting to run) at once on this instance. */
struct job_kind {
	const char *name;
	const char *queue;
	job_handler_fn *handler;
	int max_running;
	/* The handler makes no call outside the store (no rail, no network):
	 * what it does is computed from the job and committed in the store.
	 * In embedded mode (one process owns the file) the jobs of a queue
	 * whose kinds are all in_store are never leased: read on a read
	 * connection and completed straight from available, fenced by the
	 * row being unchanged since it was read (queue.h, "Unleased jobs";
	 * docs/internals/queue.md). */
	bool in_store;
	job_dead_fn *on_dead;    /* may be NULL */
};

/* Runs effect(tx, arg) and the job's completion in one write unit. ST_OK:
 * both committed. ST_CONFLICT with ctx->lost set: the lease is gone, the
 * effect was rolled back, and the job is someone else's now (the handler
 * should return the rc; the worker then leaves the job alone). Any other
 * rc is effect's (or the store's): rolled back, the job is still ours. */
enum st_rc job_commit(struct job_ctx *ctx, store_unit_fn *effect, void *arg);

/* job_commit without waiting for the commit: the effect and the fenced
 * completion are written in the worker's batch unit, together with the
 * other jobs of its batch (one commit for all), each job under its own
 * savepoint so an effect that fails rolls back alone; such a job is then
 * committed alone, exactly as job_commit would (so its rc is the one a
 * unit of its own gives). after then runs with the rc. The handler
 * must return this call's result at once and not touch arg again: on
 * ST_OK the worker owns the rest (arg included, through after). A ctx
 * not run by a worker (tests) runs job_commit and after at once. At most
 * one call per handler run. */
enum st_rc job_commit_later(struct job_ctx *ctx, store_unit_fn *effect, void *arg,
			    job_after_fn *after);

/* Sets ctx->error from a format and returns rc, so a handler can write
 * `return job_failf(ctx, ST_UNAVAILABLE, "rail: %s", why);`. */
enum st_rc job_failf(struct job_ctx *ctx, enum st_rc rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A log line in the job's context: msg plus job_id, queue, kind and the
 * trace_id / span_id of the job's span. For handlers instead of log_msg. */
void job_logf(const struct job_ctx *ctx, enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* job_logf with the message already made (NUL-terminated). */
void job_log_text(const struct job_ctx *ctx, enum log_level lvl, const char *msg);

/* In embedded mode, first returns every job left running by a previous
 * process to available (counting the lost attempt), and counts an attempt
 * for each unleased job the previous process died running (the guard
 * file, jobguard.h; a guard that cannot be used is logged, never fatal);
 * then, when
 * app->cfg->workers > 0, starts the fetcher and the workers. *out is NULL
 * when no workers run. The pool uses app->store, metrics, log, cfg. */
enum st_rc worker_pool_start(struct settled *app, struct worker_pool **out, struct buf *err);

/* Wakes the fetcher now (a job was enqueued). Accepts NULL. Thread-safe. */
void worker_pool_nudge(struct worker_pool *p);

/* Stops claiming, waits for running jobs, hands the others back, frees.
 * Call before the store closes. Accepts NULL. */
void worker_pool_stop(struct worker_pool *p);

/* Gives a job just moved to dead its kind's on_dead (job_dead_fn) in tx,
 * under a savepoint; returns the note's rc (ST_OK when the kind has none)
 * without failing the unit: the caller logs it. For paths outside the
 * worker pool that move jobs to dead (the ticker's lease sweep). */
enum st_rc job_note_dead(struct tx *tx, const struct job *job, const char *error);

/* queue_dead_fn for queue_sweep_leases: job_note_dead with the sweep's
 * last_error. arg: a struct job_dead_notes (reset it before each run of
 * the unit: a unit may run again), counting the notes that failed. */
struct job_dead_notes {
	int failed;              /* notes that failed (rolled back alone) */
	enum st_rc last_rc;      /* the last one's rc */
	int64_t last_id;         /* and its job */
};
enum st_rc job_sweep_dead(struct tx *tx, void *arg, const struct job *job);

/* Copies up to max names of the queues the kind table uses (static
 * strings) into out; returns how many. For the settled_jobs gauge. */
size_t worker_queue_names(const char **out, size_t max);

#endif

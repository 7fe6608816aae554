/* queue.h — the durable job queue on the store (SPEC section 10).
 *
 * A job is a row in `jobs`: queue, kind, JSON payload, state, attempts,
 * run_at, lease. Every function here runs inside the caller's transaction
 * (a write unit), so:
 *   - queue_enqueue() commits with the state change that causes the job, or
 *     not at all: never a job without its cause, never a cause without its job;
 *   - a handler's effect and queue_complete() commit in one unit, and
 *     queue_complete() changes the row only while the job is still running
 *     under the caller's lease (ST_CONFLICT otherwise, so the unit rolls the
 *     effect back): a retried or stolen job cannot apply its effect twice.
 *
 * States: available -> running (claimed: lease owner + expiry) -> completed;
 * running -> available (failure: attempts + 1, run_at = now + backoff; or a
 * lease handed back at shutdown, no attempt counted); running -> dead after
 * max_attempts (the dead-letter queue); dead -> available (operator retry).
 * A lease that expires (a crashed worker) is swept back to available and
 * counts as an attempt, so a job that kills its worker ends in the DLQ
 * instead of looping. In embedded mode the jobs of in_store kinds
 * (worker.h) are never leased: available -> completed, or a failed
 * attempt recorded straight from available ("Unleased jobs" below); one
 * the process died running is counted at the next start from the guard
 * file (jobguard.h), with queue_fail_unleased.
 *
 * Lease owners are "<instance_id>#<claim sequence>": unique per claim, so two
 * claims of the same job (after a lease was swept) never share a fence, even
 * on one instance. Claiming: SQLite's single writer makes SELECT + UPDATE
 * atomic; PostgreSQL uses UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP
 * LOCKED LIMIT n) so concurrent instances never claim the same row.
 * docs/internals/queue.md has the details. */
#ifndef SETTLED_QUEUE_H
#define SETTLED_QUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "rc.h"
#include "store.h"

#define QUEUE_DEFAULT_MAX_ATTEMPTS 8
#define QUEUE_NAME_MAX 32
#define QUEUE_KIND_MAX 48
#define QUEUE_OWNER_MAX 64
#define QUEUE_ERROR_MAX 1000     /* last_error is truncated to this many bytes */

enum job_state { JOB_AVAILABLE = 0, JOB_RUNNING, JOB_COMPLETED, JOB_DEAD, JOB_STATE_COUNT };

/* "available", "running", "completed", "dead"; never NULL. */
const char *job_state_str(enum job_state s);
/* Parses the text above; -1 when unknown. */
int job_state_parse(const char *s);

/* A job row as the queue hands it out. Strings are owned by the struct;
 * release with job_release(). */
struct job {
	int64_t id;
	char queue[QUEUE_NAME_MAX + 1];
	char kind[QUEUE_KIND_MAX + 1];
	char lease_owner[QUEUE_OWNER_MAX + 1]; /* "" unless running */
	enum job_state state;
	int attempts;            /* failed attempts so far */
	int max_attempts;
	int64_t run_at;
	int64_t lease_expires_at;/* 0 unless running */
	int64_t created_at;
	int64_t updated_at;
	int64_t finished_at;     /* 0 unless completed or dead */
	char *payload;           /* JSON text, never NULL after a successful read */
	char *unique_key;        /* NULL when none */
	char *last_error;        /* NULL when none */
	char *traceparent;       /* the cause's trace context (trace.h stored form), NULL when none */
};
void job_release(struct job *j); /* frees the strings; accepts NULL */

/* What to enqueue. queue, kind and payload are required; the rest may be
 * 0/NULL: run_at 0 = now (the transaction's clock), max_attempts <= 0 =
 * QUEUE_DEFAULT_MAX_ATTEMPTS, unique_key NULL = no de-duplication. */
struct job_spec {
	const char *queue;
	const char *kind;
	const char *payload;      /* JSON text */
	const char *unique_key;
	int64_t run_at;
	int max_attempts;
	const char *traceparent;  /* NULL = the unit's (tx_trace_context): the cause's trace */
};

/* Inserts the job in tx. If unique_key is set and a job with that key
 * already exists (in any state), nothing is inserted (`ON CONFLICT
 * (unique_key) WHERE unique_key IS NOT NULL DO NOTHING`: the predicate
 * infers today's UNIQUE column and would infer a partial unique index on
 * the keyed rows as well, so the schema can later swap one for the other
 * without breaking this version in a rolling upgrade; queue.md "Storage"):
 * *inserted (may be NULL) says which. *id_out (may be NULL) gets
 * the new id, or 0 when nothing was inserted. ST_INVALID on a missing or
 * over-long queue/kind; store errors otherwise. */
enum st_rc queue_enqueue_spec(struct tx *tx, const struct job_spec *spec, int64_t *id_out,
			      bool *inserted);
/* Inserts specs[0..n) in tx with one multi-row INSERT (a few for n > 64),
 * with the same ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO
 * NOTHING as queue_enqueue_spec; *inserted (may be NULL) gets how
 * many rows were inserted (n when no key existed). For jobs a write unit
 * makes by the dozen (webhook intake merged across requests). Unlike
 * queue_enqueue_spec the payloads are NOT parsed here (that cost ~10k
 * instructions a job on the store's writer): the caller vouches that each
 * is JSON, e.g. made by json_out.h. ST_INVALID on a missing or over-long
 * queue/kind or payload; store errors otherwise. */
enum st_rc queue_enqueue_many(struct tx *tx, const struct job_spec *specs, int n,
			      int64_t *inserted);
/* Shorthand for the common case (see struct job_spec for the 0/NULL meanings). */
enum st_rc queue_enqueue(struct tx *tx, const char *queue, const char *kind,
			 const char *payload_json, const char *unique_key, int64_t run_at,
			 int max_attempts);

/* Claims up to max available jobs of queue with run_at <= now (oldest run_at
 * first), marking them running under lease_owner until now + lease_ms.
 * out[0..*n_out) are filled (caller releases each with job_release); out
 * must hold max entries. lease_owner should be unique per claim (see
 * above); at most QUEUE_OWNER_MAX bytes. */
enum st_rc queue_claim(struct tx *tx, const char *queue, int max, const char *lease_owner,
		       int64_t lease_ms, struct job *out, int *n_out);

/* Marks the job completed if it is still running under lease_owner.
 * ST_CONFLICT when it is not (lease expired and swept, stolen, finished):
 * the caller's unit must then roll its effect back by returning the rc. */
enum st_rc queue_complete(struct tx *tx, int64_t id, const char *lease_owner);

/* queue_complete for n jobs claimed under the same lease_owner, in one
 * statement: done[i] is set when ids[i] was completed, cleared when it was
 * no longer running under lease_owner (the caller treats that job as
 * queue_complete's ST_CONFLICT; the others are unaffected). n <= 1024. */
#define QUEUE_COMPLETE_MAX 1024
enum st_rc queue_complete_many(struct tx *tx, const char *lease_owner, const int64_t *ids, int n,
			       bool *done);

/* The statements of PostgreSQL's claim ($1 queue, $2 lease owner, $3 lease
 * expiry, $4 now, $5 max), queue_complete_many ($1 lease owner, $2 the ids
 * as an array literal, $3 now), queue_complete ($1 id, $2 lease owner,
 * $3 now; both dialects) and PostgreSQL's queue_purge_completed ($1
 * finished before, $2 limit), exported so that tests can EXPLAIN what
 * runs: their plans are part of what makes a job cheap (queue.md
 * "Claiming"). */
extern const char queue_claim_pg_sql[];
extern const char queue_complete_many_pg_sql[];
extern const char queue_complete_sql[];
extern const char queue_purge_pg_sql[];

/* Records a failed attempt of a job running under lease_owner: attempts + 1,
 * last_error = error (truncated), and then dead (with finished_at) when the
 * attempts reach max_attempts or permanent is set, else available again at
 * now + delay_ms. *new_state (may be NULL) gets the resulting state.
 * ST_CONFLICT when the job is no longer ours. */
enum st_rc queue_fail(struct tx *tx, int64_t id, const char *lease_owner, const char *error,
		      int64_t delay_ms, bool permanent, enum job_state *new_state);

/* Unleased jobs (embedded mode, kinds whose handler makes no outside
 * call: worker.h). The fetcher reads them on a read connection without
 * writing them running; the worker's completion or failure is then fenced
 * by the job being still available with the attempts and updated_at it
 * was read with (every write of a job row changes updated_at or
 * attempts): ST_CONFLICT when it moved, and the caller's unit rolls its
 * effect back, as for a lost lease.
 *
 * queue_take_due: up to max available jobs of queue due now, in (run_at,
 * id) order past the cursor (after_run_at, after_id) (0, 0 = from the
 * start), into out; read only. Caller releases each with job_release. */
enum st_rc queue_take_due(struct tx *tx, const char *queue, int max, int64_t after_run_at,
			  int64_t after_id, struct job *out, int *n_out);
/* available -> completed for a job read by queue_take_due. */
enum st_rc queue_complete_unleased(struct tx *tx, const struct job *j);
/* queue_fail for a job read by queue_take_due: the same attempt count,
 * error, backoff and dead-lettering. */
enum st_rc queue_fail_unleased(struct tx *tx, const struct job *j, const char *error,
			       int64_t delay_ms, bool permanent, enum job_state *new_state);

/* Hands a running job back without counting an attempt (graceful shutdown):
 * available, lease cleared, run_at unchanged. ST_CONFLICT when not ours. */
enum st_rc queue_release(struct tx *tx, int64_t id, const char *lease_owner);

/* What queue_sweep_leases calls, in its transaction, for each job it
 * moved to dead (job as it now is: state dead, last_error the sweep's
 * text; borrowed for the call). A non-OK rc fails the sweep (the caller's
 * unit rolls back, the jobs stay running): a note that may fail alone
 * must contain itself (tx_nested). The queue knows no kinds: the caller
 * (worker.h, job_note_dead) gives the kind its on_dead here, so a job and
 * what its death notes are written together or not at all. */
typedef enum st_rc queue_dead_fn(struct tx *tx, void *arg, const struct job *job);

/* The lease sweeper: up to limit running jobs whose lease expired at or
 * before now go back to available (or dead, when that was their last
 * attempt), counting the lost attempt. With all set, every running job is
 * swept whatever its lease (embedded mode at start: one process owns the
 * file, so every running job belongs to a dead predecessor). dead_fn (may
 * be NULL) is called for each job moved to dead. *reclaimed and *dead
 * (may be NULL) get the counts. */
enum st_rc queue_sweep_leases(struct tx *tx, int64_t limit, bool all, queue_dead_fn *dead_fn,
			      void *dead_arg, int64_t *reclaimed, int64_t *dead);

/* Deletes up to limit completed jobs finished before before_ms. */
enum st_rc queue_purge_completed(struct tx *tx, int64_t before_ms, int64_t limit,
				 int64_t *deleted);

/* Reads one job. ST_NOT_FOUND when absent. */
enum st_rc queue_get(struct tx *tx, int64_t id, struct job *out);

/* Dead-letter queue. Lists up to limit dead jobs with id > after_id in id
 * order into out (which holds limit entries); *n_out gets the count. */
enum st_rc queue_dlq_list(struct tx *tx, int64_t after_id, int limit, struct job *out,
			  int *n_out);
/* A dead job goes back to available now with attempts reset (last_error
 * kept for the record). ST_NOT_FOUND when no such job, ST_CONFLICT when it
 * is not dead. */
enum st_rc queue_dlq_retry(struct tx *tx, int64_t id);
/* Deletes a dead job. ST_NOT_FOUND / ST_CONFLICT as queue_dlq_retry. */
enum st_rc queue_dlq_delete(struct tx *tx, int64_t id);

/* Job counts by queue and state, for the settled_jobs gauge. Calls fn once
 * per (queue, state) pair that has jobs. */
typedef void queue_count_fn(void *arg, const char *queue, enum job_state state, int64_t n);
enum st_rc queue_counts(struct tx *tx, queue_count_fn *fn, void *arg);
/* Number of jobs in one state (all queues). */
enum st_rc queue_count_state(struct tx *tx, enum job_state state, int64_t *n);
/* Number of jobs of kind with this exact payload in the given states
 * (a bit mask of 1 << enum job_state): "is there still a job for X". */
enum st_rc queue_count_payload(struct tx *tx, const char *kind, const char *payload,
			       unsigned state_mask, int64_t *n);

/* How many available jobs of queue are due now (run_at <= tx_now_ms),
 * counted up to limit: the fetcher's cheap peek on a read connection. */
enum st_rc queue_count_due(struct tx *tx, const char *queue, int64_t limit, int64_t *n);

/* ---- backoff ---- */

/* A source of uniformly distributed 64-bit values. */
typedef uint64_t queue_rand_fn(void *arg);
/* The default source: OpenSSL's CSPRNG (thread-safe; arg unused). */
uint64_t queue_rand_default(void *arg);

/* Exponential backoff with full jitter: a delay drawn uniformly from
 * [0, min(cap_ms, base_ms * 2^attempt)] (attempt 0 = the first retry).
 * Overflow-safe for any attempt; base_ms <= 0 gives 0; cap_ms < base_ms
 * caps everything at cap_ms. rnd may be NULL for queue_rand_default. */
int64_t queue_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, queue_rand_fn *rnd,
			 void *rnd_arg);
/* The upper bound above: min(cap_ms, base_ms * 2^attempt), overflow-safe. */
int64_t queue_backoff_ceiling_ms(int attempt, int64_t base_ms, int64_t cap_ms);

#endif

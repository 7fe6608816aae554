/* claim_job.h — the claim confirmation job: asks the rail whether a
 * submitted claim's transaction is confirmed and, if so, drives the intent
 * SUBMITTED -> CONFIRMED -> SETTLED (posting the ledger transaction and
 * capturing the hold) in the same write unit that completes the job; a
 * rejected transaction fails the intent and releases the hold instead.
 * A rail error is a failed attempt (retry with backoff, then the DLQ); the
 * intent stays SUBMITTED meanwhile. */
#ifndef SETTLED_CLAIM_JOB_H
#define SETTLED_CLAIM_JOB_H

#include <stdint.h>

#include "ledger.h"
#include "rc.h"
#include "store.h"
#include "worker.h"

#define CLAIM_JOB_KIND "claim.confirm"
#define CLAIM_JOB_QUEUE "claims"
#define CLAIM_JOB_PAYLOAD_MAX 128

struct settled;

/* Writes the job's payload, {"intent_id":"<id>"}, into out: the same bytes
 * for the same intent, so jobs can be found by payload. */
enum st_rc claim_job_payload(const char *intent_id, char out[CLAIM_JOB_PAYLOAD_MAX]); /* ST_NOMEM, ST_TOO_LARGE */

/* Enqueues the confirmation of intent_id in tx (the unit that made it
 * SUBMITTED), to run when the rail expects confirmation (now +
 * rail_confirm_delay_ms; cfg->sim_confirm_ms without a rail), with
 * cfg->job_max_attempts. generation 0 is the first job of the intent
 * (unique key "claim.confirm:<id>", so recording twice cannot enqueue two);
 * the stuck sweeper re-enqueues with generation > 0 (key
 * "claim.confirm:<id>:<generation>"). */
enum st_rc claim_job_enqueue(struct tx *tx, const struct settled *app, const char *intent_id,
			     int64_t generation);

/* The handler (worker.c's table). */
enum st_rc claim_confirm_job(struct job_ctx *ctx);

/* The stuck-intent sweep (SPEC section 10), one batch per call, in the
 * caller's write unit. Looks at up to limit claim intents LOCKED or
 * SUBMITTED with updated_at <= cutoff_ms, after the keyset cursor
 * (*cur_at, cur_id; start with INT64_MIN and ""), oldest first:
 *   - LOCKED: the request that locked it never finished; the chain
 *     transaction was never recorded, so the intent is FAILED
 *     ("stuck_locked") and its hold released;
 *   - SUBMITTED with no confirmation job left (available, running or dead):
 *     the confirmation is enqueued again (generation = now), so the rail
 *     decides; with a live job it is progressing, and with a dead one it
 *     waits for the operator (the DLQ), so neither is touched.
 * Each intent is handled in its own savepoint, so one failure does not
 * undo the others. Advances the cursor; *seen gets how many rows the batch
 * read (< limit: the sweep is done). */
struct claim_sweep {
	int64_t cutoff_ms;
	int64_t cur_at;
	char cur_id[LEDGER_ID_MAX + 1];
	int limit;
	int seen;
	int64_t failed;     /* LOCKED -> FAILED */
	int64_t requeued;   /* SUBMITTED re-enqueued */
};
enum st_rc claim_job_sweep_stuck(struct tx *tx, const struct settled *app, struct claim_sweep *s);

#endif

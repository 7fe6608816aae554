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
 * the stuck sweeper (stuck_sweep.c) re-enqueues with generation > 0 (key
 * "claim.confirm:<id>:<generation>"). */
enum st_rc claim_job_enqueue(struct tx *tx, const struct settled *app, const char *intent_id,
			     int64_t generation);

/* The handler (job_kinds.c's table). */
enum st_rc claim_confirm_job(struct job_ctx *ctx);

#endif

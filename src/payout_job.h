/* payout_job.h — the jobs that carry out an approved payout batch
 * (docs/internals/payouts.md), both on the "payouts" queue:
 *
 *   payout.execute {"batch_id","idx"}   one per item, enqueued by the
 *       approval (unique key "payout.execute:<batch>:<idx>"): creates the
 *       payout intent with its hold on the wallet and submits it to the rail
 *       (PENDING -> LOCKED -> SUBMITTED), the item becomes SUBMITTED and the
 *       confirmation is enqueued, all in one unit with the job's completion.
 *       Insufficient funds or an unregistered wallet fail that item alone
 *       (FAILED with the reason), in the same kind of unit.
 *   payout.confirm {"batch_id","idx","intent_id"}   asks the rail; confirmed:
 *       intent CONFIRMED -> SETTLED (the wallet's hold is captured into
 *       payouts_clearing and passed on to external), the item SETTLED;
 *       rejected: intent FAILED (hold released: the funds are the wallet's
 *       again), the item FAILED "rail_rejected". A rail error is a failed
 *       attempt (retry with backoff, then the DLQ; the funds stay held).
 *
 * Every effect re-reads the item (and intent) inside its unit and does
 * nothing when it already moved on, so a duplicate or retried job applies
 * nothing twice (the job's lease fence is the other guard). Metrics are
 * counted after the unit committed. */
#ifndef SETTLED_PAYOUT_JOB_H
#define SETTLED_PAYOUT_JOB_H

#include <stdint.h>

#include "rc.h"
#include "store.h"
#include "worker.h"

#define PAYOUT_JOB_QUEUE "payouts"
#define PAYOUT_EXECUTE_KIND "payout.execute"
#define PAYOUT_CONFIRM_KIND "payout.confirm"

struct settled;

/* Enqueues payout.execute for items 0..n-1 of batch_id in tx (the approval
 * unit). A job whose unique key exists already is not inserted again;
 * *enqueued (may be NULL) gets how many were. */
enum st_rc payout_job_enqueue_batch(struct tx *tx, const struct settled *app, const char *batch_id,
				    int64_t n, int64_t *enqueued);

/* The handlers (job_kinds.c's table). */
enum st_rc payout_execute_job(struct job_ctx *ctx);
enum st_rc payout_confirm_job(struct job_ctx *ctx);

#endif

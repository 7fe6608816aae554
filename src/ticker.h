/* ticker.h — the housekeeping thread: every periodic write and audit, each
 * a write unit (or a read) on its own schedule (DESIGN "Threads").
 *
 *   every 1 s    lease sweeper: running jobs whose lease expired -> available
 *                (or dead on their last attempt); settled_job_lease_reclaims_total
 *   every 1 s    hold expiry: intents whose hold timed out -> FAILED (intent_expire)
 *   stuck/4      stuck intents (SETTLED_STUCK_AFTER; between 250 ms and 10 s):
 *                LOCKED -> FAILED, SUBMITTED without a job -> re-enqueued;
 *                settled_stuck_intents_total{action}
 *   every 1 s    hot accounts (PostgreSQL): account_deltas folded into the
 *                balances (ledger_fold_deltas), until none is left
 *   every 2 s    settled_jobs{queue,state} and settled_dlq_jobs from a count query
 *   every 60 s   idempotency key expiry; completed jobs older than 24 h purged
 *   every 60 s   reconciliation (and once in ticker_start, before the server
 *                accepts requests): report stored,
 *                settled_ledger_imbalance, settled_reconciliation_runs_total
 *
 * A task that fails is logged and tried again at its next turn. */
#ifndef SETTLED_TICKER_H
#define SETTLED_TICKER_H

#include "buf.h"
#include "rc.h"

struct settled;
struct ticker;
struct reconcile_report;

#define TICKER_JOB_RETENTION_MS (24LL * 3600 * 1000)

/* Starts the thread. app must outlive it. */
enum st_rc ticker_start(struct settled *app, struct ticker **out, struct buf *err);
/* Stops and joins the thread (a task in progress finishes). Accepts NULL. */
void ticker_stop(struct ticker *t);

/* Updates the reconciliation metrics from a report that was just stored
 * (also used by POST /api/admin/reconciliation). */
void ticker_reconciled(struct settled *app, const struct reconcile_report *r);

#endif

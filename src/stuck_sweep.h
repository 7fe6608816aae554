/* stuck_sweep.h — the stuck-intent sweep (SPEC section 10), run by the
 * housekeeping thread (ticker.c) every quarter of SETTLED_STUCK_AFTER.
 *
 * It looks at intents LOCKED (any kind) or SUBMITTED claims whose
 * updated_at is older than SETTLED_STUCK_AFTER:
 *   - LOCKED: the request that locked it never finished; the chain
 *     transaction was never recorded, so the intent is FAILED
 *     ("stuck_locked") and its hold released;
 *   - SUBMITTED with no confirmation job left (available, running or dead):
 *     the confirmation is enqueued again (generation = now), so the rail
 *     decides; with a live job it is progressing, and with a dead one it
 *     waits for the operator (the DLQ), so neither is touched.
 * A stuck payout is not re-confirmed here: its payout.confirm jobs drive it. */
#ifndef SETTLED_STUCK_SWEEP_H
#define SETTLED_STUCK_SWEEP_H

#include <stdint.h>

#include "ledger.h"
#include "rc.h"
#include "store.h"

struct settled;

/* One batch, in the caller's write unit: up to limit intents with
 * updated_at <= cutoff_ms after the keyset cursor (*cur_at, cur_id; start
 * with INT64_MIN and ""), oldest first. Each intent is handled in its own
 * savepoint, so one failure does not undo the others. Advances the cursor;
 * seen gets how many rows the batch read (< limit: the sweep is done). */
struct stuck_sweep {
	int64_t cutoff_ms;
	int64_t cur_at;
	char cur_id[LEDGER_ID_MAX + 1];
	int limit;
	int seen;
	int64_t failed;     /* LOCKED -> FAILED */
	int64_t requeued;   /* SUBMITTED re-enqueued */
};
enum st_rc stuck_sweep_batch(struct tx *tx, const struct settled *app, struct stuck_sweep *s);

/* The whole sweep, batch_size intents per write unit, then its metrics
 * (settled_stuck_intents_total, settled_intents_total) and log line; wakes
 * the workers when it re-enqueued a confirmation. */
void stuck_sweep_run(struct settled *app, int batch_size);

#endif

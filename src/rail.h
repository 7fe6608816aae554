/* rail.h — settlement rails: what confirms a submitted transaction.
 *
 * A rail answers one question for the confirmation job: is the chain
 * transaction of this intent confirmed? Real rails plug in by filling
 * struct rail_ops; the built-in `sim` rail (SPEC section 1) confirms every
 * transaction SETTLED_SIM_CONFIRM_MS after submission and fails a fraction
 * SETTLED_SIM_FAIL_RATE of the checks, so tests can inject faults. The
 * `evm` rail (rail_evm.c) verifies a claim's tx_hash on an EVM chain
 * through JSON-RPC providers (rpc_pool.c). Payout items have a rail of
 * their own (SETTLED_PAYOUT_RAIL): `sim`, or `http` (rail_http.c), which
 * asks the operator's payout service to pay each item.
 *
 * rail_check() runs on a worker thread outside any transaction and may
 * block on I/O; it must be thread-safe (several workers call it at once). */
#ifndef SETTLED_RAIL_H
#define SETTLED_RAIL_H

#include <stdint.h>

#include "buf.h"
#include "queue.h"
#include "rc.h"

#include <jansson.h>

struct config;
struct logger;
struct metrics;
struct trace_span;

enum rail_result {
	RAIL_CONFIRMED = 0, /* final on the chain: settle */
	RAIL_PENDING,       /* not yet: ask again later (a retry, not a verdict) */
	RAIL_REJECTED,      /* the transaction failed for good: fail the intent, release the hold */
	RAIL_ERROR,         /* could not tell (rail down, timeout): a failed attempt, retried */
};

/* What the rail is asked about. Strings are borrowed for the call. */
struct rail_tx {
	const char *intent_id;
	const char *tx_hash;
	const char *wallet;
	int64_t amount;
	const char *ref;        /* payouts: the item's id "<batch>:<idx>"; NULL for claims */
	int64_t submitted_at;   /* ms since the epoch the intent was submitted (0: unknown) */
	/* W3C traceparent of the rail.check span (or of the job's span when
	 * tracing is off), for a rail that calls out over HTTP to send on;
	 * set by rail_check_traced, NULL otherwise. */
	const char *traceparent;
};

struct rail;
struct rail_ops {
	const char *name;
	/* Milliseconds after submission before the first check is worth doing
	 * (the confirmation job is enqueued to run then). */
	int64_t (*confirm_delay_ms)(const struct rail *r);
	/* The verdict on t; why (never NULL) gets a reason for anything but
	 * RAIL_CONFIRMED. *reason (never NULL; NULL on entry) may get a static
	 * failure-reason code for the intent: for RAIL_REJECTED why it was
	 * rejected (NULL: "rail_rejected"); for RAIL_PENDING what the intent
	 * fails with if it stays pending past SETTLED_STUCK_AFTER. */
	enum rail_result (*check)(struct rail *r, const struct rail_tx *t, const char **reason,
				  struct buf *why);
	/* Optional: a JSON object for /health/ready's checks.rail (new
	 * reference); NULL: {"name": ..., "status": "ok"}. */
	json_t *(*health)(struct rail *r);
	void (*free)(struct rail *r);
};
struct rail {
	const struct rail_ops *ops;
};

/* The sim rail. fail_rate in [0, 1]: each check fails (RAIL_ERROR) with
 * that probability, drawn from rnd (NULL = queue_rand_default). */
struct rail *rail_sim_new(int64_t confirm_ms, double fail_rate, queue_rand_fn *rnd, void *rnd_arg);

/* The claims' rail the configuration names (SETTLED_RAIL). The evm rail
 * checks its providers' chain here: ST_INVALID with err when one serves
 * another chain. metrics and log are borrowed for the rail's life. */
enum st_rc rail_new(const struct config *cfg, struct metrics *metrics, const struct logger *log,
		    struct rail **out, struct buf *err);

/* The payout items' rail (SETTLED_PAYOUT_RAIL): sim, or http. */
enum st_rc rail_payout_new(const struct config *cfg, struct rail **out, struct buf *err);

static inline int64_t rail_confirm_delay_ms(const struct rail *r)
{
	return r->ops->confirm_delay_ms(r);
}
static inline enum rail_result rail_check(struct rail *r, const struct rail_tx *t,
					  const char **reason, struct buf *why)
{
	*reason = NULL;
	return r->ops->check(r, t, reason, why);
}

/* /health/ready's checks.rail: the rail's own health object, or
 * {"name": ..., "status": "ok"}. "degraded" never fails readiness. */
json_t *rail_health(struct rail *r);
void rail_free(struct rail *r); /* accepts NULL */

/* rail_check inside a CLIENT span "rail.check" (trace.h), a child of parent
 * (the job's span; NULL: no span), with the rail's name, the intent and
 * the verdict as attributes; RAIL_ERROR marks it failed. The rail gets the
 * span's traceparent in t->traceparent (the job span's when tracing is
 * off), which the http payout rail sends on. */
enum rail_result rail_check_traced(struct rail *r, const struct trace_span *parent,
				   const struct rail_tx *t, const char **reason, struct buf *why);

/* "confirmed", "pending", "rejected", "error". */
const char *rail_result_str(enum rail_result r);

#endif

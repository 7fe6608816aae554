/* rail.h — settlement rails: what confirms a submitted transaction.
 *
 * A rail answers one question for the confirmation job: is the chain
 * transaction of this intent confirmed? Real rails (an RPC node, a payment
 * processor) plug in by filling struct rail_ops; the built-in `sim` rail
 * (SPEC section 1) confirms every transaction SETTLED_SIM_CONFIRM_MS after
 * submission and fails a fraction SETTLED_SIM_FAIL_RATE of the checks, so
 * tests can inject faults.
 *
 * rail_check() runs on a worker thread outside any transaction and may
 * block on I/O; it must be thread-safe (several workers call it at once). */
#ifndef SETTLED_RAIL_H
#define SETTLED_RAIL_H

#include <stdint.h>

#include "buf.h"
#include "queue.h"
#include "rc.h"

struct config;
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
};

struct rail;
struct rail_ops {
	const char *name;
	/* Milliseconds after submission before the first check is worth doing
	 * (the confirmation job is enqueued to run then). */
	int64_t (*confirm_delay_ms)(const struct rail *r);
	/* The verdict on t; why (never NULL) gets a reason for anything but
	 * RAIL_CONFIRMED. */
	enum rail_result (*check)(struct rail *r, const struct rail_tx *t, struct buf *why);
	void (*free)(struct rail *r);
};
struct rail {
	const struct rail_ops *ops;
};

/* The sim rail. fail_rate in [0, 1]: each check fails (RAIL_ERROR) with
 * that probability, drawn from rnd (NULL = queue_rand_default). */
struct rail *rail_sim_new(int64_t confirm_ms, double fail_rate, queue_rand_fn *rnd, void *rnd_arg);

/* The rail the configuration names (today: always sim). NULL on ENOMEM. */
struct rail *rail_new(const struct config *cfg);

static inline int64_t rail_confirm_delay_ms(const struct rail *r)
{
	return r->ops->confirm_delay_ms(r);
}
static inline enum rail_result rail_check(struct rail *r, const struct rail_tx *t, struct buf *why)
{
	return r->ops->check(r, t, why);
}
void rail_free(struct rail *r); /* accepts NULL */

/* rail_check inside a CLIENT span "rail.check" (trace.h), a child of parent
 * (the job's span; NULL: no span), with the rail's name, the intent and
 * the verdict as attributes; RAIL_ERROR marks it failed. A real rail that
 * calls out over HTTP would pass this span on as the request's traceparent. */
enum rail_result rail_check_traced(struct rail *r, const struct trace_span *parent,
				   const struct rail_tx *t, struct buf *why);

/* "confirmed", "pending", "rejected", "error". */
const char *rail_result_str(enum rail_result r);

#endif

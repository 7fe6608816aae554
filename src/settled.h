/* settled.h — the server's context: the one place mutable state lives.
 *
 * main.c builds one struct settled, wires the modules into it and hands a
 * pointer to every thread. Modules keep their own state in the structs they
 * own (reached from here), never in globals. */
#ifndef SETTLED_SETTLED_H
#define SETTLED_SETTLED_H

#include <stdatomic.h>
#include <stdint.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "store.h"

/* Rate-limit policies of SPEC section 5; index into settled.policies. */
enum rl_policy_id {
	RLP_REGISTER_IP = 0,
	RLP_REGISTER_WALLET,
	RLP_CLAIM_WALLET,
	RLP_WEBHOOK,
	RLP_HEALTH,
	RLP_API,
	RLP_COUNT
};

struct idem;
struct http;
struct settled_metrics;

struct settled {
	const struct config *cfg;
	struct logger log;
	struct store *store;
	struct metrics *metrics;
	struct settled_metrics *m;   /* the families modules update, looked up once */
	struct ratelimit *rl;
	struct rl_policy policies[RLP_COUNT];
	struct idem *idem;           /* in-flight idempotency keys of this instance */
	struct http *http;
	char instance_id[40];        /* random per process: owner of leases */
	int64_t started_ms;
	atomic_bool stopping;
	/* Injectable clock (tests); NULL = wall clock. */
	int64_t (*clock_ms)(void *arg);
	void *clock_arg;
};

/* Wall-clock (or injected) milliseconds since the epoch. */
int64_t settled_now_ms(const struct settled *app);

#endif

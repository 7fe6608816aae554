/* ratelimit.h — GCRA rate limiting behind a backend interface.
 *
 * GCRA (the generic cell rate algorithm) keeps one timestamp per key, the
 * theoretical arrival time (TAT). A policy of `limit` per `period` has an
 * emission interval T = period / limit and admits a burst of `limit`; there
 * is no burst at window edges, unlike fixed windows.
 *
 * Backends: rl_memory.c (in process, sharded hash tables so concurrent
 * requests do not serialize on one lock; expired state is reclaimed so
 * memory stays bounded under a flood of distinct keys) and later
 * rl_redis.c (one Lua script per decision). Time is always passed in by the
 * caller (now_ms), so tests inject a clock and never sleep. */
#ifndef SETTLED_RATELIMIT_H
#define SETTLED_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "rc.h"

struct rl_policy {
	const char *name;    /* "register_ip", used in metrics and RateLimit-Policy */
	int64_t limit;       /* requests per period; 0 = policy disabled (always allowed) */
	int64_t period_ms;
	bool fail_open;      /* what to decide when the backend is unavailable */
};

struct rl_decision {
	bool allowed;
	int64_t limit;          /* the policy's limit */
	int64_t remaining;      /* requests still allowed right now (0 when limited) */
	int64_t reset_ms;       /* ms from now until the key is back to a full quota */
	int64_t retry_after_ms; /* when !allowed: ms from now until one request is allowed; else 0 */
};

struct ratelimit;

struct rl_ops {
	const char *name;
	enum st_rc (*check)(struct ratelimit *rl, const struct rl_policy *p, const char *key,
			    size_t key_len, int64_t now_ms, struct rl_decision *out);
	/* Bytes of state held (for the memory bound test and a metric). */
	size_t (*memory)(struct ratelimit *rl);
	void (*free)(struct ratelimit *rl);
};

struct ratelimit {
	const struct rl_ops *ops;
};

/* In-process backend with nshards shards (0 = 64). NULL on ENOMEM. */
struct ratelimit *rl_memory_new(size_t nshards);

/* Decides one request for key under policy p at now_ms. A policy with
 * limit 0 always allows. ST_UNAVAILABLE when the backend is down (the
 * caller applies p->fail_open). Thread-safe. */
static inline enum st_rc rl_check(struct ratelimit *rl, const struct rl_policy *p, const char *key,
				  size_t key_len, int64_t now_ms, struct rl_decision *out)
{
	return rl->ops->check(rl, p, key, key_len, now_ms, out);
}

static inline void rl_free(struct ratelimit *rl)
{
	if (rl)
		rl->ops->free(rl);
}

/* Pure GCRA step, shared by backends and unit-tested on its own: given the
 * key's stored TAT (0 = none) decides at now_ms and returns the new TAT to
 * store (unchanged when limited). */
int64_t rl_gcra(const struct rl_policy *p, int64_t tat_ms, int64_t now_ms, struct rl_decision *out);

#endif

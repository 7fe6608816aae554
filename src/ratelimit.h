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
	/* What check() would decide for the same arguments, recording
	 * nothing: the key's state is left as it was (a fresh key stays
	 * absent). For a gate that only a later event charges (the failed
	 * authentications of an address). Same errors as check(). */
	enum st_rc (*peek)(struct ratelimit *rl, const struct rl_policy *p, const char *key,
			   size_t key_len, int64_t now_ms, struct rl_decision *out);
	/* rl_check_seq in one step (Redis: one script call, one round trip);
	 * NULL: rl_check_seq calls check() for each in turn. */
	enum st_rc (*check_seq)(struct ratelimit *rl, const struct rl_policy *const *p,
				const char *const *keys, const size_t *key_lens, int n, int64_t now_ms,
				struct rl_decision *out, int *decided);
	/* Bytes of state held (for the memory bound test and a metric). */
	size_t (*memory)(struct ratelimit *rl);
	void (*free)(struct ratelimit *rl);
	/* Readiness of an external backend: ST_OK, or ST_UNAVAILABLE with
	 * the reason in err (optional). NULL for a backend that cannot be
	 * down (in process). */
	enum st_rc (*ping)(struct ratelimit *rl, struct buf *err);
};

struct ratelimit {
	const struct rl_ops *ops;
};

/* In-process backend with nshards shards (0 = 64). NULL on ENOMEM.
 * Also NULL if getrandom() fails; nshards above 4096 is taken as 4096.
 * The caller frees it with rl_free(). Its check() returns ST_INVALID for
 * an invalid policy (rl_policy_valid), a NULL name, a NULL key with
 * key_len > 0, or a key/name longer than RL_KEY_MAX/RL_NAME_MAX, and
 * ST_NOMEM when a new key's entry cannot be allocated; *out is set only on
 * ST_OK. A disabled policy (limit 0) stores nothing. memory() counts heap
 * bytes as glibc lays them out: see docs/internals/ratelimit.md. */
struct ratelimit *rl_memory_new(size_t nshards);

/* Redis backend (rl_redis.c): the same GCRA (rl_gcra_exact) in one Lua
 * script per decision, state shared by every instance on the server. */
struct rl_redis_options {
	const char *prefix;      /* of every key; NULL = "settled:rl:"; at most RL_PREFIX_MAX bytes */
	unsigned pool_size;      /* connections; 0 = 8 */
	int connect_timeout_ms;  /* 0 = 200 */
	int command_timeout_ms;  /* 0 = 200 */
	int backoff_max_ms;      /* longest wait between reconnects while down; 0 = 1000 */
	int64_t ttl_slack_ms;    /* keys outlive their TAT by this (clock skew); 0 = 1000 */
};

#define RL_PREFIX_MAX 64

/* Creates the Redis backend for url (redis://[[user]:password@]host[:port][/db],
 * see redisc_url_parse) with options o (NULL = defaults). Connects lazily:
 * it succeeds while Redis is down, and check() answers ST_UNAVAILABLE
 * (quickly: see redisc.h) until Redis is back. NULL on a bad URL or prefix
 * or ENOMEM, with the reason (never the password) in err (optional). Free
 * with rl_free().
 *
 * check() gives the in-process backend's decisions, field for field, for
 * the same sequence of (policy, key, now_ms) (tests/unit/test_rl_redis.c),
 * within these differences (docs/internals/ratelimit.md, "Redis backend"):
 * now_ms must be in [0, RL_REDIS_TIME_MAX] and a policy's limit and period
 * at most RL_REDIS_LIMIT_MAX, so the script's double arithmetic is exact;
 * policy names containing ':' or '#' are ST_INVALID (they would make key
 * names ambiguous); ST_UNAVAILABLE when Redis cannot answer, ST_INTERNAL if
 * the script and rl_gcra_exact() ever disagree. Otherwise the same
 * ST_INVALID cases as rl_memory_new's. memory() counts only the client
 * side; the state lives in Redis. */
struct ratelimit *rl_redis_new(const char *url, const struct rl_redis_options *o,
			       struct buf *err);

struct redisc_stats;

/* The Redis backend's connection pool counters (redisc_stats): connects,
 * failed connects, calls refused during a backoff. For tests and metrics:
 * they show what a down Redis costs without timing it. rl must come from
 * rl_redis_new. */
void rl_redis_stats(struct ratelimit *rl, struct redisc_stats *out);

#define RL_REDIS_TIME_MAX  (INT64_C(1) << 51) /* ms, year ~73000 */
#define RL_REDIS_LIMIT_MAX (INT64_C(1) << 50) /* also the largest period_ms */

/* Decides one request for key under policy p at now_ms. A policy with
 * limit 0 always allows. ST_UNAVAILABLE when the backend is down (the
 * caller applies p->fail_open). Thread-safe. */
static inline enum st_rc rl_check(struct ratelimit *rl, const struct rl_policy *p, const char *key,
				  size_t key_len, int64_t now_ms, struct rl_decision *out)
{
	return rl->ops->check(rl, p, key, key_len, now_ms, out);
}

/* Decides the requests of one client under n policies in order, p[i]
 * for keys[i] (key_lens[i] bytes), as rl_check() for each in turn would,
 * stopping at the first refusal: a policy after it is not charged (an
 * earlier one is). *decided is how many decisions are in out: n, or fewer
 * when the last of them refused, or when the backend failed on
 * p[*decided] (then the error is returned; the Redis backend decides all
 * or none in one script call, so there *decided is 0). n is at most
 * RL_SEQ_MAX (ST_INVALID beyond). Thread-safe. */
#define RL_SEQ_MAX 4
enum st_rc rl_check_seq(struct ratelimit *rl, const struct rl_policy *const *p,
			const char *const *keys, const size_t *key_lens, int n, int64_t now_ms,
			struct rl_decision *out, int *decided);

/* rl_check() without recording the request (see struct rl_ops.peek). */
static inline enum st_rc rl_peek(struct ratelimit *rl, const struct rl_policy *p, const char *key,
				 size_t key_len, int64_t now_ms, struct rl_decision *out)
{
	return rl->ops->peek(rl, p, key, key_len, now_ms, out);
}

/* Whether the backend can decide now: ST_OK for the in-process backend. */
static inline enum st_rc rl_ping(struct ratelimit *rl, struct buf *err)
{
	return rl->ops->ping ? rl->ops->ping(rl, err) : ST_OK;
}

static inline void rl_free(struct ratelimit *rl)
{
	if (rl)
		rl->ops->free(rl);
}

/* Pure GCRA step, shared by backends and unit-tested on its own: given the
 * key's stored TAT (0 = none) decides at now_ms and returns the new TAT to
 * store (unchanged when limited, but see rl_gcra_exact() on clocks that
 * step back).
 *
 * Whole milliseconds only: exact when period_ms % limit == 0 (every SPEC
 * policy). Otherwise the emission interval has a fraction of a ms, which the
 * returned TAT rounds up, so a burst can lose its last request; backends
 * should store a struct rl_tat and call rl_gcra_exact() instead. */
int64_t rl_gcra(const struct rl_policy *p, int64_t tat_ms, int64_t now_ms, struct rl_decision *out);

/* Bounds of a valid policy: products and sums of them fit in int64_t. */
#define RL_LIMIT_MAX  (INT64_C(1) << 53)
#define RL_PERIOD_MAX (INT64_C(1) << 53) /* ms, about 285,000 years */
/* Clock values are clamped to [0, RL_TIME_MAX] (ms). */
#define RL_TIME_MAX   (INT64_C(1) << 61)

/* Whether config may use p: limit == 0 (disabled), or 1 <= limit <=
 * RL_LIMIT_MAX and 1 <= period_ms <= RL_PERIOD_MAX. rl_gcra*() clamp an
 * invalid policy into range instead (a negative limit disables it); a
 * backend's check() returns ST_INVALID for one. NULL is invalid. */
bool rl_policy_valid(const struct rl_policy *p);

/* Exact GCRA state of one key: the TAT is ms + frac / limit milliseconds,
 * with 0 <= frac < limit, so T = period_ms / limit is kept exactly (7 per
 * hour does not drift). {0, 0} means no state. frac is in units of the
 * policy's limit; should the limit change, a frac out of range is rounded
 * up to the next ms (any other error is under 1 ms). */
struct rl_tat {
	int64_t ms;
	int64_t frac;
};

/* The exact GCRA step: decides one request at now_ms and updates *tat in
 * place (unchanged when limited, except that a TAT more than one period in
 * the future, which only a clock stepping back produces, is pulled in to
 * now + period so a key never waits longer than the policy allows).
 * Semantics of *out as in struct rl_decision; limit 0 allows with limit,
 * remaining and reset all 0. Never fails. */
void rl_gcra_exact(const struct rl_policy *p, struct rl_tat *tat, int64_t now_ms,
		   struct rl_decision *out);

/* In-process backend only: largest key_len and strlen(policy name) that
 * check() accepts (ST_INVALID beyond), which bounds the bytes per key. */
#define RL_KEY_MAX  256
#define RL_NAME_MAX 64

#endif

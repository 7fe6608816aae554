/* rpc_pool.h — a pool of JSON-RPC providers with failover and per-provider
 * circuit breakers, for the evm rail (rail_evm.c).
 *
 * A call goes to the healthiest provider first: closed breakers before
 * half-open ones, fewer consecutive failures first, then the lower
 * smoothed latency, then configuration order. A timeout, a connection
 * error, an HTTP 429 or 5xx, an answer that is not the JSON-RPC answer
 * asked for (the caller's validator says so) or a JSON-RPC error object
 * counts as the provider's failure and the call moves on to the next one.
 * After `breaker_failures` consecutive failures a provider's breaker opens:
 * it gets no calls for `breaker_cooldown_ms`, then exactly one caller's
 * call is let through as a probe (half-open); success closes the breaker,
 * failure opens it for another cool-down.
 *
 * A provider must serve the configured chain: before its first call the
 * pool asks it for eth_chainId, and one that names another chain is never
 * used (logged once, up=0). rpc_pool_check_chains() does this for every
 * provider at start.
 *
 * Provider URLs may carry API keys (in the path, the query or userinfo):
 * they are never logged, never put into an error text or a metric label.
 * A provider is named by its label "rpc<index>@<host>[:<port>]".
 *
 * HTTP: libcurl easy handles kept in a free list, so connections (and TLS
 * sessions) are reused across calls; TLS peer and host verification on;
 * no redirects; each request bounded by timeout_ms.
 *
 * Thread-safe: several workers call at once; the providers' state is
 * under one mutex, held only for bookkeeping, never across I/O. */
#ifndef SETTLED_RPC_POOL_H
#define SETTLED_RPC_POOL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "rc.h"

struct metrics;
struct logger;
struct rpc_pool;

#define RPC_LABEL_MAX 300

struct rpc_pool_opts {
	char *const *urls;          /* borrowed; copied */
	size_t nurls;               /* 1.. */
	uint64_t chain_id;          /* the chain every provider must serve */
	int64_t timeout_ms;         /* per HTTP request */
	int breaker_failures;       /* consecutive failures that open a breaker */
	int64_t breaker_cooldown_ms;
	struct metrics *metrics;    /* may be NULL (unit tests) */
	const struct logger *log;   /* may be NULL */
};

/* Checks an answer's shape: true when it is what the caller asked for. */
typedef bool rpc_valid_fn(const json_t *answer, void *arg);

/* Registers settled_rpc_requests_total, settled_rpc_request_duration_seconds
 * and settled_rpc_provider_up in m (idempotent). ST_NOMEM on failure. */
enum st_rc rpc_pool_register_metrics(struct metrics *m);

enum st_rc rpc_pool_new(const struct rpc_pool_opts *o, struct rpc_pool **out, struct buf *err);
void rpc_pool_free(struct rpc_pool *p); /* accepts NULL */

/* Asks every provider for eth_chainId. ST_INVALID (err names the provider
 * by label and both chain ids) when one that answered serves another
 * chain; providers that did not answer are asked again before their first
 * use. */
enum st_rc rpc_pool_check_chains(struct rpc_pool *p, struct buf *err);

/* Sends req (a JSON-RPC request object or a batch array; borrowed) and
 * stores the parsed answer in *answer (caller's reference) from the first
 * provider whose answer passes the HTTP checks, the JSON-RPC checks (every
 * request id answered, no error member) and valid(answer, arg) (NULL: no
 * more checks). method labels the metrics ("eth_getTransactionReceipt",
 * "batch:receipt+tx+head"). ST_UNAVAILABLE when every usable provider
 * failed or none is usable, with the providers' failures (labels only) in
 * why. */
enum st_rc rpc_pool_call(struct rpc_pool *p, const char *method, json_t *req,
			 rpc_valid_fn *valid, void *arg, json_t **answer, struct buf *why);

/* A JSON object describing the providers for /health/ready:
 * {"status": "ok"|"degraded", "providers_up": n, "providers": [
 *   {"provider": label, "up": bool, "breaker": "closed"|"open"|"half_open",
 *    "consecutive_failures": n, "chain": "ok"|"unknown"|"wrong"}]}.
 * degraded: no provider is usable. New reference; NULL on ENOMEM. */
json_t *rpc_pool_health(struct rpc_pool *p);

/* The label of url at index i: "rpc<i>@<host>[:<port>]" (no scheme, path,
 * query or userinfo). */
void rpc_provider_label(const char *url, size_t i, char out[RPC_LABEL_MAX]);

#endif

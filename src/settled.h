/* settled.h — the server's context: the one place mutable state lives.
 *
 * main.c builds one struct settled, wires the modules into it and hands a
 * pointer to every thread. Modules keep their own state in the structs they
 * own (reached from here), never in globals. */
#ifndef SETTLED_SETTLED_H
#define SETTLED_SETTLED_H

#include <stdatomic.h>
#include <stdint.h>

#include "clock.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "randpool.h"
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
	RLP_AUTH_FAIL,      /* failed authentications per address: charged after a 401/403 */
	RLP_COUNT
};

struct idem;
struct http;
struct worker_pool;
struct ticker;
struct rail;
struct tracer;
struct wh_keyring;

/* Metric families every module updates, registered once at start. */
struct settled_metrics {
	struct metric_family *http_requests;     /* http_requests_total{method,route,status} */
	struct metric_family *http_duration;     /* http_request_duration_seconds{method,route,status} */
	struct metric_family *idempotency;       /* settled_idempotency_total{result} */
	struct metric_family *rate_limited;      /* settled_rate_limited_total{policy} */
	struct metric_family *rl_backend_errors; /* settled_rate_limit_backend_errors_total{policy,decision} */
	struct metric_family *auth_failures;     /* settled_auth_failures_total{route,result}: refused | limited */
	struct metric_family *intents;           /* settled_intents_total{status}: intents entering status */
	struct metric_family *settlement_duration; /* settled_settlement_duration_seconds: created -> SETTLED */
	/* jobs, sweeper, reconciliation (worker.c, ticker.c) */
	struct metric_family *jobs;               /* settled_jobs{queue,state} gauge */
	struct metric_family *job_duration;       /* settled_job_duration_seconds{queue,kind,result} */
	struct metric_family *job_retries;        /* settled_job_retries_total{queue,kind} */
	struct metric_family *dlq_jobs;           /* settled_dlq_jobs gauge */
	struct metric_family *lease_reclaims;     /* settled_job_lease_reclaims_total */
	struct metric_family *holds;              /* settled_holds{state} gauge (reconciliation) */
	struct metric_family *held_amount;        /* settled_held_amount gauge (reconciliation) */
	struct metric_family *stuck_intents;      /* settled_stuck_intents_total{action} */
	struct metric_family *ledger_imbalance;   /* settled_ledger_imbalance gauge (must be 0) */
	struct metric_family *store_write_faults; /* settled_store_write_faults_total{reason} */
	struct metric_series *store_commit_units; /* settled_store_commit_units: units a COMMIT made durable */
	struct metric_family *store_unit_retries; /* settled_store_unit_retries_total{cause} */
	struct metric_family *store_gather_waits; /* settled_store_gather_waits_total{end} */
	struct metric_family *clock_step;         /* settled_clock_step_seconds gauge: system - server clock */
	struct metric_family *recon_runs;         /* settled_reconciliation_runs_total{result} */
	struct metric_family *recon_problems;     /* settled_reconciliation_problems gauge */
	/* webhooks (routes_webhooks.c) */
	struct metric_family *webhook_events;     /* settled_webhook_events_total{provider,result} */
	/* API keys and payouts (apikey.c, payout.c) */
	struct metric_family *api_key_requests;   /* settled_api_key_requests_total{key_prefix} */
	struct metric_family *payouts;            /* settled_payouts_total{status}: items finished (SETTLED, FAILED) */
	struct metric_family *payout_approval;    /* settled_payout_approval_latency_seconds: created -> approved */
};

/* Registers the families above in reg. ST_NOMEM on failure. */
enum st_rc settled_metrics_init(struct settled_metrics *m, struct metrics *reg);

struct settled {
	const struct config *cfg;
	struct logger log;
	struct randpool rand;        /* request ids and ids made in write units */
	struct store *store;
	struct metrics *metrics;
	struct settled_metrics m;    /* the families modules update, looked up once */
	struct ratelimit *rl;
	struct rl_policy policies[RLP_COUNT];
	struct idem *idem;           /* in-flight idempotency keys of this instance */
	/* The webhook secrets as keyed MAC states (webhook.h), keyed at start-up,
	 * read-only after (each verification copies the state it uses). */
	struct wh_keyring *wh_keys;
	struct http *http;
	struct rail *rail;           /* the claims' settlement rail (rail.h, SETTLED_RAIL) */
	struct rail *payout_rail;    /* the payout items' rail (SETTLED_PAYOUT_RAIL) */
	struct worker_pool *workers; /* job workers (worker.h); NULL when none */
	struct ticker *ticker;       /* sweepers and reconciliation (ticker.h) */
	struct tracer *tracer;       /* span export (trace.h); NULL when OTEL_EXPORTER_OTLP_ENDPOINT is unset */
	char instance_id[40];        /* random per process: owner of leases */
	/* SHA-256 of cfg->admin_token, made once at start-up by
	 * settled_hash_admin_token (admin_hashed), so an authenticated request
	 * hashes only the token it sent; without it both are hashed each time. */
	bool admin_hashed;
	unsigned char admin_sha256[32];
	int64_t started_ms;
	atomic_bool stopping;
	/* The server's clock (clock.h: anchored at start, deaf to steps of the
	 * system clock), or one a test injects; NULL = the system's wall clock.
	 * main hands the same clock to the store. */
	int64_t (*clock_ms)(void *arg);
	void *clock_arg;
	struct clock_anchor clock;
};

/* The server clock's milliseconds since the epoch. */
int64_t settled_now_ms(const struct settled *app);

/* Hashes app->cfg->admin_token into app->admin_sha256 (nothing without a
 * token). Called once at start-up, before any request. */
void settled_hash_admin_token(struct settled *app);

#endif

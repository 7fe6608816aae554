/* settled.c — the server context's own helpers: clock and shared metrics. */
#include "settled.h"

#include <openssl/evp.h>
#include <string.h>
#include <time.h>

#include "rpc_pool.h"
#include "banned.h"

int64_t settled_now_ms(const struct settled *app)
{
	struct timespec ts;

	if (app->clock_ms)
		return app->clock_ms(app->clock_arg);
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void settled_hash_admin_token(struct settled *app)
{
	const char *t = app->cfg->admin_token;
	unsigned int n = 0;

	app->admin_hashed = t && EVP_Digest(t, strlen(t), app->admin_sha256, &n, EVP_sha256(), NULL) &&
			    n == sizeof(app->admin_sha256);
}

/* The job queue's, sweeper's and reconciliation's families. */
static enum st_rc settled_job_metrics_init(struct settled_metrics *m, struct metrics *reg)
{
	static const char *const queue_state[] = { "queue", "state" };
	static const char *const queue_kind_result[] = { "queue", "kind", "result" };
	static const char *const queue_kind[] = { "queue", "kind" };
	static const char *const action[] = { "action" };
	static const char *const result[] = { "result" };
	static const char *const state[] = { "state" };
	static const double job_buckets[] = { 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120 };

	m->jobs = metrics_gauge(reg, "settled_jobs", "Jobs in the store by queue and state.", 2,
				queue_state);
	m->job_duration = metrics_histogram(reg, "settled_job_duration_seconds",
					    "Time a worker spent on a job attempt, by outcome.", 3,
					    queue_kind_result, job_buckets,
					    sizeof(job_buckets) / sizeof(job_buckets[0]));
	m->job_retries = metrics_counter(reg, "settled_job_retries_total",
					 "Failed job attempts scheduled for a retry.", 2, queue_kind);
	m->dlq_jobs = metrics_gauge(reg, "settled_dlq_jobs", "Jobs in the dead-letter queue.", 0, NULL);
	m->lease_reclaims = metrics_counter(reg, "settled_job_lease_reclaims_total",
					    "Running jobs whose lease expired and were taken back.", 0,
					    NULL);
	m->stuck_intents = metrics_counter(reg, "settled_stuck_intents_total",
					   "Intents found stuck in LOCKED or SUBMITTED, by what was done.",
					   1, action);
	m->ledger_imbalance = metrics_gauge(reg, "settled_ledger_imbalance",
					    "Ledger imbalance found by the last reconciliation (must be 0).",
					    0, NULL);
	m->recon_runs = metrics_counter(reg, "settled_reconciliation_runs_total",
					"Reconciliation runs by result (ok, problems, error).", 1, result);
	m->recon_problems = metrics_gauge(reg, "settled_reconciliation_problems",
					  "Failed checks in the last reconciliation report.", 0, NULL);
	m->holds = metrics_gauge(reg, "settled_holds",
				 "Holds by state (every account type), as of the last reconciliation.", 1,
				 state);
	m->held_amount = metrics_gauge(reg, "settled_held_amount",
				       "Base units held by pending holds over all accounts, as of the last"
				       " reconciliation.",
				       0, NULL);
	if (!m->jobs || !m->job_duration || !m->job_retries || !m->dlq_jobs || !m->lease_reclaims ||
	    !m->stuck_intents || !m->ledger_imbalance || !m->recon_runs || !m->recon_problems ||
	    !m->holds || !m->held_amount)
		return ST_NOMEM;
	return ST_OK;
}

/* API keys and payout batches. */
static enum st_rc settled_payout_metrics_init(struct settled_metrics *m, struct metrics *reg)
{
	static const char *const key_prefix[] = { "key_prefix" };
	static const char *const status[] = { "status" };
	/* Approval waits on a human: seconds to days. */
	static const double approval_buckets[] = { 1, 10, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400 };

	m->api_key_requests = metrics_counter(reg, "settled_api_key_requests_total",
					      "Requests authenticated with an API key, by its public prefix.",
					      1, key_prefix);
	m->payouts = metrics_counter(reg, "settled_payouts_total",
				     "Payout items processed, by final status (SETTLED, FAILED).", 1, status);
	m->payout_approval = metrics_histogram(reg, "settled_payout_approval_latency_seconds",
					       "Time from a payout batch's creation to its approval.", 0,
					       NULL, approval_buckets,
					       sizeof(approval_buckets) / sizeof(approval_buckets[0]));
	if (!m->api_key_requests || !m->payouts || !m->payout_approval)
		return ST_NOMEM;
	return ST_OK;
}

/* Webhook intake. Every provider x result series is created at
 * start, so each reads 0 instead of being absent until its first event. */
static enum st_rc settled_webhook_metrics_init(struct settled_metrics *m, struct metrics *reg)
{
	static const char *const labels[] = { "provider", "result" };
	static const char *const providers[] = { "coinbase", "stripe", "standard" };
	static const char *const results[] = { "accepted", "late", "duplicate", "bad_signature",
					       "stale", "malformed" };

	m->webhook_events = metrics_counter(reg, "settled_webhook_events_total",
					    "Webhook deliveries by provider and outcome.", 2, labels);
	if (!m->webhook_events)
		return ST_NOMEM;
	for (size_t p = 0; p < sizeof(providers) / sizeof(providers[0]); p++)
		for (size_t r = 0; r < sizeof(results) / sizeof(results[0]); r++) {
			const char *const lv[] = { providers[p], results[r] };

			if (!metric_series_get(m->webhook_events, lv))
				return ST_NOMEM;
		}
	return ST_OK;
}

/* Write batches the store refused for want of storage; both reasons
 * exported from the start so an alert sees a 0 before the first fault. */
static enum st_rc settled_store_metrics_init(struct settled_metrics *m, struct metrics *reg)
{
	static const char *const labels[] = { "reason" };
	static const char *const causes[] = { "cause" };
	static const char *const ends[] = { "end" };
	static const char *const end_values[] = { "deadline", "woken" };
	static const enum store_write_fault faults[] = { STORE_WRITE_DISK_FULL, STORE_WRITE_IO_ERROR };
	/* Group commit's batch sizes: 1 is a unit committed alone. */
	static const double unit_buckets[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512 };
	struct metric_family *commit_units;

	m->clock_step = metrics_gauge(reg, "settled_clock_step_seconds",
				      "How far the system clock was stepped from the server clock since start.",
				      0, NULL);
	if (!m->clock_step || !metric_series_get(m->clock_step, NULL))
		return ST_NOMEM;
	m->store_write_faults = metrics_counter(reg, "settled_store_write_faults_total",
						"Write batches refused for want of storage (disk full, I/O error).",
						1, labels);
	if (!m->store_write_faults)
		return ST_NOMEM;
	for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
		const char *const lv[] = { store_write_fault_str(faults[i]) };

		if (!metric_series_get(m->store_write_faults, lv))
			return ST_NOMEM;
	}
	commit_units = metrics_histogram(reg, "settled_store_commit_units",
					 "Write units made durable by one store COMMIT (group commit's batch size).",
					 0, NULL, unit_buckets, sizeof(unit_buckets) / sizeof(unit_buckets[0]));
	if (!commit_units || !(m->store_commit_units = metric_series_get(commit_units, NULL)))
		return ST_NOMEM;
	/* Units run again and why (PostgreSQL): lock waits past a batch's
	 * lock_timeout, deadlocks, serialization failures show up here before
	 * they show up as latency. Every cause exported from the start. */
	m->store_unit_retries = metrics_counter(reg, "settled_store_unit_retries_total",
						"Write units run again by the store, by cause (PostgreSQL).",
						1, causes);
	if (!m->store_unit_retries)
		return ST_NOMEM;
	for (int c = 0; c < STORE_RETRY_CAUSES; c++) {
		const char *const lv[] = { store_retry_cause_str((enum store_retry_cause)c) };

		if (!metric_series_get(m->store_unit_retries, lv))
			return ST_NOMEM;
	}
	/* PostgreSQL writers' gathering (SETTLED_PG_GATHER_US): takes after a
	 * wait, by whether it ran to its bound. Mostly "deadline" under load
	 * means batches are cut by the bound, not by the busy writer's end. */
	m->store_gather_waits = metrics_counter(reg, "settled_store_gather_waits_total",
						"Write batches a PostgreSQL writer took after holding them back "
						"to gather, by how the wait ended (deadline, woken).",
						1, ends);
	if (!m->store_gather_waits)
		return ST_NOMEM;
	for (size_t i = 0; i < sizeof(end_values) / sizeof(end_values[0]); i++) {
		const char *const lv[] = { end_values[i] };

		if (!metric_series_get(m->store_gather_waits, lv))
			return ST_NOMEM;
	}
	return ST_OK;
}

enum st_rc settled_metrics_init(struct settled_metrics *m, struct metrics *reg)
{
	static const char *const http_labels[] = { "method", "route", "status" };
	static const char *const result[] = { "result" };
	static const char *const policy[] = { "policy" };
	static const char *const policy_decision[] = { "policy", "decision" };
	static const char *const route_result[] = { "route", "result" };
	static const char *const intent_status[] = { "status" };
	/* Settlement spans the rail's confirmation: tenths of a second to hours. */
	static const double settle_buckets[] = { 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600, 1800, 3600 };

	m->http_requests = metrics_counter(reg, "http_requests_total", "HTTP requests answered.", 3,
					   http_labels);
	m->http_duration = metrics_histogram(reg, "http_request_duration_seconds",
					     "Time from first byte to response queued.", 3, http_labels,
					     NULL, 0);
	m->idempotency = metrics_counter(reg, "settled_idempotency_total",
					 "Idempotency-Key outcomes: hit, miss, in_use, reused, invalid.", 1,
					 result);
	m->rate_limited = metrics_counter(reg, "settled_rate_limited_total",
					  "Requests refused by a rate-limit policy.", 1, policy);
	m->rl_backend_errors = metrics_counter(reg, "settled_rate_limit_backend_errors_total",
					       "Rate-limit decisions taken while the backend was down.", 2,
					       policy_decision);
	m->auth_failures = metrics_counter(reg, "settled_auth_failures_total",
					   "Failed authentications (401/403) by route; limited: "
					   "answered 429 past RL_AUTH_FAIL_PER_MIN.", 2, route_result);
	m->intents = metrics_counter(reg, "settled_intents_total",
				     "Intents that entered each status.", 1,
				     intent_status);
	m->settlement_duration = metrics_histogram(reg, "settled_settlement_duration_seconds",
						   "Time from a claim's creation to SETTLED.", 0, NULL,
						   settle_buckets,
						   sizeof(settle_buckets) / sizeof(settle_buckets[0]));
	if (!m->http_requests || !m->http_duration || !m->idempotency || !m->rate_limited ||
	    !m->rl_backend_errors || !m->auth_failures || !m->intents || !m->settlement_duration)
		return ST_NOMEM;
	if (settled_job_metrics_init(m, reg))
		return ST_NOMEM;
	if (settled_payout_metrics_init(m, reg))
		return ST_NOMEM;
	if (settled_webhook_metrics_init(m, reg))
		return ST_NOMEM;
	if (settled_store_metrics_init(m, reg))
		return ST_NOMEM;
	/* The evm rail's families exist (empty) with any rail, so dashboards
	 * and alerts see them; rpc_pool_new finds them by name. */
	return rpc_pool_register_metrics(reg);
}

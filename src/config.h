/* config.h — settled's configuration: environment variables (12-factor),
 * each also a --flag, validated into one struct at start.
 *
 * Precedence: built-in default < environment variable < command-line flag.
 * Every option is described once, in the table in config.c, which drives
 * parsing, --help and the start-up log line (secrets redacted). */
#ifndef SETTLED_CONFIG_H
#define SETTLED_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "buf.h"
#include "rc.h"

#define CONFIG_MAX_LIST 16
/* Shortest SETTLED_ADMIN_TOKEN accepted at start (exit 2 below it). */
#define CONFIG_ADMIN_TOKEN_MIN 32
#define CONFIG_ADMIN_TOKEN_MIN_STR "32"

struct config {
	/* network */
	char listen_host[64];       /* SETTLED_LISTEN host part, default 127.0.0.1; always numeric:
				     * IPv4 dotted or IPv6 without brackets ("localhost" -> 127.0.0.1) */
	uint16_t listen_port;       /* SETTLED_LISTEN port part, default 8080; 0 = any free port */
	char port_file[512];        /* --port-file / SETTLED_PORT_FILE: write the bound port here ("" = off) */
	size_t max_body;            /* SETTLED_MAX_BODY bytes, default 1 MiB */
	unsigned http_threads;      /* SETTLED_HTTP_THREADS, default 0 = number of cores */
	unsigned conn_timeout_s;    /* SETTLED_CONN_TIMEOUT seconds, default 30 */
	int64_t shutdown_grace_ms;  /* SETTLED_SHUTDOWN_GRACE, default 30s: http_stop()'s grace at SIGTERM */
	unsigned conn_limit;        /* SETTLED_MAX_CONNECTIONS, default 20000 */
	char *cors_origins[CONFIG_MAX_LIST]; /* SETTLED_CORS_ORIGINS, comma separated */
	size_t n_cors_origins;
	char *trust_proxy[CONFIG_MAX_LIST];  /* SETTLED_TRUST_PROXY: proxy IPs whose X-Forwarded-For is honoured */
	size_t n_trust_proxy;

	/* storage */
	char db_path[512];          /* SETTLED_DB, default ./settled.db */
	char *database_url;         /* SETTLED_DATABASE_URL (secret: contains a password), NULL = embedded */
	char *redis_url;            /* SETTLED_REDIS_URL, NULL = in-process rate limits */
	char *redis_prefix;         /* SETTLED_REDIS_PREFIX, default "settled:rl:" */
	int64_t redis_timeout_ms;   /* SETTLED_REDIS_TIMEOUT 1ms..60s, default 200ms: connect and command */
	/* PostgreSQL group commit (store_pg.c); ignored in embedded mode */
	unsigned pg_write_conns;    /* SETTLED_PG_WRITE_CONNS 1..64, default 4 */
	unsigned pg_batch_max;      /* SETTLED_PG_BATCH_MAX 1..1024, default 128; 1 = no group commit */
	unsigned pg_gather_us;      /* SETTLED_PG_GATHER_US 0..100000, default 2000; 0 = no gathering */
	int64_t pg_lock_timeout_ms; /* SETTLED_PG_LOCK_TIMEOUT 1ms..10s, default 10ms */

	/* auth and secrets (never logged) */
	char *admin_token;          /* SETTLED_ADMIN_TOKEN, NULL = admin routes disabled (401);
	                             * at least CONFIG_ADMIN_TOKEN_MIN characters */
	char *webhook_secrets[CONFIG_MAX_LIST];   /* SETTLED_WEBHOOK_SECRET (Coinbase Commerce) */
	size_t n_webhook_secrets;
	char *stripe_secrets[CONFIG_MAX_LIST];    /* SETTLED_STRIPE_WEBHOOK_SECRET */
	size_t n_stripe_secrets;
	char *standard_secrets[CONFIG_MAX_LIST];  /* SETTLED_STANDARD_WEBHOOK_SECRET (whsec_...) */
	size_t n_standard_secrets;

	/* behaviour */
	unsigned workers;           /* SETTLED_WORKERS, default 4 */
	int log_level;              /* SETTLED_LOG_LEVEL: debug=0 info=1 warn=2 error=3; default info */
	bool log_buffer;            /* SETTLED_LOG_BUFFER, default true: log_buffer_start() (log.h) */
	int64_t idempotency_ttl_ms; /* SETTLED_IDEMPOTENCY_TTL, default 24h; accepts 90s, 15m, 24h, 7d or plain seconds */
	bool require_idempotency_key; /* SETTLED_REQUIRE_IDEMPOTENCY_KEY=1 */
	int64_t treasury_funding;   /* SETTLED_TREASURY_FUNDING base units, default 100000000 */
	char asset[16];             /* SETTLED_ASSET, default USD */
	int64_t commission_bps;     /* SETTLED_COMMISSION_BPS, default 1000 */
	int64_t sim_confirm_ms;     /* SETTLED_SIM_CONFIRM_MS, default 200 */
	double sim_fail_rate;       /* SETTLED_SIM_FAIL_RATE 0..1, default 0 */
	int64_t stuck_after_ms;     /* SETTLED_STUCK_AFTER, default 10m */
	int64_t hold_timeout_ms;    /* SETTLED_HOLD_TIMEOUT, default 1h: claim holds expire after this */
	int64_t claim_max;          /* SETTLED_CLAIM_MAX base units, 0 (default) = no cap on one claim */
	int64_t job_base_delay_ms;  /* SETTLED_JOB_BASE_DELAY, default 1s */
	int64_t job_max_delay_ms;   /* SETTLED_JOB_MAX_DELAY, default 10m */
	int job_max_attempts;       /* SETTLED_JOB_MAX_ATTEMPTS, default 8 */
	int64_t job_lease_ms;       /* SETTLED_JOB_LEASE, default 30s */
	int64_t api_key_grace_ms;   /* SETTLED_API_KEY_GRACE, default 24h */
	char *otel_endpoint;        /* OTEL_EXPORTER_OTLP_ENDPOINT, NULL = tracing off */

	/* rails (rail.h, rail_evm.c, rpc_pool.c, rail_http.c) */
	char rail[8];               /* SETTLED_RAIL: "sim" (default) or "evm" */
	char *evm_rpc_urls[CONFIG_MAX_LIST]; /* SETTLED_EVM_RPC_URLS (secret: may carry API keys) */
	size_t n_evm_rpc_urls;
	int64_t evm_chain_id;       /* SETTLED_EVM_CHAIN_ID, required with the evm rail */
	int evm_confirmations;      /* SETTLED_EVM_CONFIRMATIONS, default 12 */
	char *evm_token;            /* SETTLED_EVM_TOKEN: ERC-20 contract; NULL = native value */
	int evm_decimals;           /* SETTLED_EVM_DECIMALS: chain units = amount x 10^decimals */
	int64_t evm_poll_ms;        /* SETTLED_EVM_POLL_INTERVAL, default 5s */
	int64_t evm_rpc_timeout_ms; /* SETTLED_EVM_RPC_TIMEOUT, default 5s */
	int evm_breaker_failures;   /* SETTLED_EVM_BREAKER_FAILURES, default 3 */
	int64_t evm_breaker_cooldown_ms; /* SETTLED_EVM_BREAKER_COOLDOWN, default 30s */
	char payout_rail[8];        /* SETTLED_PAYOUT_RAIL: "sim" (default) or "http" */
	char *payout_url;           /* SETTLED_PAYOUT_URL (secret: may carry a key) */
	char *payout_secret;        /* SETTLED_PAYOUT_SECRET, whsec_<base64> */
	int64_t payout_timeout_ms;  /* SETTLED_PAYOUT_TIMEOUT, default 10s */

	/* rate limits (SPEC section 5); 0 disables a policy */
	int64_t rl_register_per_hour;      /* RL_REGISTER_PER_HOUR, 5 */
	int64_t rl_register_per_day_wallet;/* RL_REGISTER_PER_DAY_WALLET, 10 */
	int64_t rl_claim_per_hour;         /* RL_CLAIM_PER_HOUR, 60 */
	int64_t rl_webhook_per_min;        /* RL_WEBHOOK_PER_MIN, 100 */
	int64_t rl_health_per_min;         /* RL_HEALTH_PER_MIN, 600 */
	int64_t rl_api_per_min;            /* RL_API_PER_MIN, 1000 */
	int64_t rl_auth_fail_per_min;      /* RL_AUTH_FAIL_PER_MIN, 20: 401/403 per client IP */
	bool rl_fail_open_money;           /* SETTLED_RL_FAIL: "open" / "closed" / default (health open, money closed) */
	bool rl_fail_open_other;
};

/* Fills cfg from defaults, then the environment (envp, NULL-terminated
 * "NAME=value" strings; NULL = none), then argv (argv[0], the program name,
 * is skipped). An empty value means unset: the default applies. On a bad
 * value or unknown flag returns ST_INVALID with a one-line reason in err
 * (e.g. "SETTLED_MAX_BODY: not a size: 12q"; a secret's value is never
 * echoed); ST_NOMEM when memory runs out. On failure cfg is zeroed, so
 * config_release(cfg) is harmless. If argv holds --help or -h,
 * *help_wanted is set and ST_OK returned with cfg holding the defaults only.
 * help_wanted and err may be NULL. cfg owns every string it holds; release
 * with config_release(). */
enum st_rc config_load(struct config *cfg, char **envp, int argc, char **argv,
		       bool *help_wanted, struct buf *err);
/* Frees every string of cfg and zeroes it; cfg may be NULL. */
void config_release(struct config *cfg);

/* Writes the --help text: every option, its env name, flag and default. */
void config_help(FILE *out);

/* Appends the effective configuration as JSON object members (no braces,
 * no leading comma: put one first to use it as log_emit fields), for the
 * start-up log line. Keys are the flag names with '_' ("max_body");
 * durations are strings ("24h"), sizes numbers of bytes. Secrets show as
 * "[redacted]" when set and null when not; URLs keep everything but the
 * password ("postgres://app:***@db/settled"). On error (the cap of out)
 * out is left as it was. */
enum st_rc config_describe(const struct config *cfg, struct buf *out);

/* Parses durations like "90s", "15m", "24h", "7d", "250ms" or bare seconds
 * into milliseconds. ST_INVALID on anything else or overflow. */
enum st_rc config_parse_duration(const char *s, int64_t *ms_out);

#endif

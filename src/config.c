/* config.c — settled's configuration, read once at start.
 *
 * One const table (opts[]) describes every option: its environment name,
 * its --flag, its type, its default, its range and its help text. The same
 * table drives loading (defaults < environment < argv), --help, the
 * effective-configuration log line and config_release(), so an option is
 * added in exactly one place.
 *
 * Invariants:
 *  - A default is a string parsed by the same code as a user's value, so
 *    what --help prints is what is applied.
 *  - An empty value (env or flag) means "unset": the default applies.
 *  - Values of options flagged OPT_SECRET never reach an error message or
 *    the describe output; URLs have their password masked.
 *  - config_load builds into a private struct and copies it out only on
 *    success, so a half-loaded configuration is never seen.
 *
 * Workload: runs once per process (and in tests); clarity beats speed, so
 * lookups are linear scans of the table and of envp. */
#include "config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json_out.h"
#include "log.h"
#include "redisc.h"
#include "webhook.h"
#include "banned.h"

enum opt_type {
	OPT_LISTEN,     /* host:port into listen_host/listen_port */
	OPT_PATH,       /* char array of .size bytes */
	OPT_STR,        /* malloc'd char *, NULL when unset */
	OPT_URL,        /* like OPT_STR; describe masks the password */
	OPT_LIST,       /* char *[CONFIG_MAX_LIST] plus a size_t count at .count_off */
	OPT_SIZE,       /* size_t bytes, k/m suffixes */
	OPT_UINT,       /* unsigned */
	OPT_INT,        /* int */
	OPT_I64,        /* int64_t */
	OPT_DURATION,   /* int64_t milliseconds */
	OPT_DURATION_S, /* unsigned whole seconds, written as a duration */
	OPT_BOOL,       /* bool */
	OPT_LEVEL,      /* int log level */
	OPT_RATE,       /* double in 0..1 */
	OPT_RL_FAIL,    /* the two rl_fail_open_* bools */
};

#define OPT_SECRET 1u /* never echo the value; describe shows "[redacted]" */

/* Returns NULL when val is acceptable, else a short reason. */
typedef const char *opt_check_fn(const char *val);

struct opt {
	const char *env;
	const char *flag;       /* "--listen" */
	enum opt_type type;
	unsigned flags;
	size_t off;             /* offsetof(struct config, field) */
	size_t size;            /* OPT_PATH: sizeof the array */
	size_t count_off;       /* OPT_LIST: offsetof the item count */
	int64_t min, max;       /* numbers: inclusive range; durations in ms */
	opt_check_fn *check;    /* OPT_STR, OPT_URL, OPT_PATH: whole value; OPT_LIST: each item */
	const char *def;        /* default, parsed like a user value; NULL = unset */
	const char *metavar;
	const char *help;
};

static opt_check_fn check_origin, check_ip, check_pg_url, check_redis_url, check_redis_prefix,
	check_http_url, check_asset, check_admin_token, check_rail, check_payout_rail,
	check_address, check_whsec;

#define FIELD(f) offsetof(struct config, f)
#define FIELD_SIZE(f) sizeof(((struct config *)0)->f)
#define SEC 1000LL
#define DAY (86400LL * SEC)

static const struct opt opts[] = {
	/* network */
	{ "SETTLED_LISTEN", "--listen", OPT_LISTEN, 0, FIELD(listen_host), 0, 0, 0, 0, NULL,
	  "127.0.0.1:8080", "HOST:PORT",
	  "address to listen on: IPv4, localhost or [IPv6]; port 0 picks a free port" },
	{ "SETTLED_PORT_FILE", "--port-file", OPT_PATH, 0, FIELD(port_file),
	  FIELD_SIZE(port_file), 0, 0, 0, NULL, NULL, "PATH",
	  "write the bound port to this file once listening" },
	{ "SETTLED_MAX_BODY", "--max-body", OPT_SIZE, 0, FIELD(max_body), 0, 0, 1, 1LL << 30,
	  NULL, "1MiB", "SIZE", "largest request body, bytes or with a k/M (KiB/MiB) suffix" },
	{ "SETTLED_HTTP_THREADS", "--http-threads", OPT_UINT, 0, FIELD(http_threads), 0, 0, 0,
	  1024, NULL, "0", "N", "HTTP threads; 0 = one per core" },
	{ "SETTLED_CONN_TIMEOUT", "--conn-timeout", OPT_DURATION_S, 0, FIELD(conn_timeout_s), 0,
	  0, SEC, DAY, NULL, "30s", "DURATION", "idle/slow connection timeout (whole seconds)" },
	{ "SETTLED_SHUTDOWN_GRACE", "--shutdown-grace", OPT_DURATION, 0, FIELD(shutdown_grace_ms),
	  0, 0, SEC, 3600 * SEC, NULL, "30s", "DURATION",
	  "at SIGTERM/SIGINT, how long in-flight requests may take to finish before their "
	  "connections are closed (a write already queued is always waited for)" },
	{ "SETTLED_MAX_CONNECTIONS", "--max-connections", OPT_UINT, 0, FIELD(conn_limit), 0, 0,
	  1, 1000000, NULL, "20000", "N", "most concurrent connections" },
	{ "SETTLED_CORS_ORIGINS", "--cors-origins", OPT_LIST, 0, FIELD(cors_origins), 0,
	  FIELD(n_cors_origins), 0, 0, check_origin, NULL, "ORIGIN,...",
	  "origins allowed by CORS (https://app.example.com, or *); none when unset" },
	{ "SETTLED_TRUST_PROXY", "--trust-proxy", OPT_LIST, 0, FIELD(trust_proxy), 0,
	  FIELD(n_trust_proxy), 0, 0, check_ip, NULL, "IP,...",
	  "proxy IP addresses whose X-Forwarded-For is honoured; ignored when unset" },

	/* storage */
	{ "SETTLED_DB", "--db", OPT_PATH, 0, FIELD(db_path), FIELD_SIZE(db_path), 0, 0, 0, NULL,
	  "./settled.db", "PATH", "SQLite file of the embedded mode" },
	{ "SETTLED_DATABASE_URL", "--database-url", OPT_URL, OPT_SECRET, FIELD(database_url), 0,
	  0, 0, 0, check_pg_url, NULL, "URL",
	  "postgres://user:pass@host/db: scale-out mode on PostgreSQL; embedded when unset" },
	{ "SETTLED_REDIS_URL", "--redis-url", OPT_URL, OPT_SECRET, FIELD(redis_url), 0, 0, 0, 0,
	  check_redis_url, NULL, "URL",
	  "redis://[:pass@]host:port: shared rate limits; in-process when unset" },
	{ "SETTLED_REDIS_PREFIX", "--redis-prefix", OPT_STR, 0, FIELD(redis_prefix), 0, 0, 0, 0,
	  check_redis_prefix, "settled:rl:", "PREFIX",
	  "prefix of the rate-limit keys in Redis (deployments sharing one Redis)" },
	{ "SETTLED_REDIS_TIMEOUT", "--redis-timeout", OPT_DURATION, 0, FIELD(redis_timeout_ms), 0,
	  0, 1, 60 * SEC, NULL, "200ms", "DURATION",
	  "how long a connect to Redis and a command's answer may take before the call counts "
	  "as Redis unavailable (SETTLED_RL_FAIL then decides)" },
	{ "SETTLED_PG_WRITE_CONNS", "--pg-write-conns", OPT_UINT, 0, FIELD(pg_write_conns), 0, 0,
	  1, 64, NULL, "4", "N",
	  "PostgreSQL: write connections, one writer thread each (ignored in embedded mode)" },
	{ "SETTLED_PG_BATCH_MAX", "--pg-batch-max", OPT_UINT, 0, FIELD(pg_batch_max), 0, 0, 1,
	  1024, NULL, "128", "N",
	  "PostgreSQL: most write units one writer commits together; 1 = no group commit "
	  "(ignored in embedded mode)" },
	{ "SETTLED_PG_GATHER_US", "--pg-gather-us", OPT_UINT, 0, FIELD(pg_gather_us), 0, 0, 0,
	  100000, NULL, "2000", "MICROSECONDS",
	  "PostgreSQL: longest a queued write waits to be committed with later ones while "
	  "writes arrive fast (group commit's gathering); 0 = never waits (ignored in embedded mode)" },
	{ "SETTLED_PG_LOCK_TIMEOUT", "--pg-lock-timeout", OPT_DURATION, 0,
	  FIELD(pg_lock_timeout_ms), 0, 0, 1, 10 * SEC, NULL, "10ms", "DURATION",
	  "PostgreSQL: how long a unit in a group commit waits for a row lock before it is run "
	  "again alone (ignored in embedded mode)" },

	/* auth and secrets */
	{ "SETTLED_ADMIN_TOKEN", "--admin-token", OPT_STR, OPT_SECRET, FIELD(admin_token), 0, 0,
	  0, 0, check_admin_token, NULL, "TOKEN",
	  "bearer token of the admin routes, at least " CONFIG_ADMIN_TOKEN_MIN_STR
	  " characters (openssl rand -hex 32); disabled when unset" },
	{ "SETTLED_WEBHOOK_SECRET", "--webhook-secret", OPT_LIST, OPT_SECRET,
	  FIELD(webhook_secrets), 0, FIELD(n_webhook_secrets), 0, 0, NULL, NULL, "SECRET,...",
	  "Coinbase Commerce webhook secrets (several while rotating)" },
	{ "SETTLED_STRIPE_WEBHOOK_SECRET", "--stripe-webhook-secret", OPT_LIST, OPT_SECRET,
	  FIELD(stripe_secrets), 0, FIELD(n_stripe_secrets), 0, 0, NULL, NULL, "SECRET,...",
	  "Stripe webhook signing secrets (whsec_...)" },
	{ "SETTLED_STANDARD_WEBHOOK_SECRET", "--standard-webhook-secret", OPT_LIST, OPT_SECRET,
	  FIELD(standard_secrets), 0, FIELD(n_standard_secrets), 0, 0, NULL, NULL, "SECRET,...",
	  "Standard Webhooks secrets (whsec_<base64>)" },

	/* behaviour */
	{ "SETTLED_WORKERS", "--workers", OPT_UINT, 0, FIELD(workers), 0, 0, 0, 256, NULL, "4",
	  "N", "job worker threads; 0 = this instance runs no jobs" },
	{ "SETTLED_LOG_LEVEL", "--log-level", OPT_LEVEL, 0, FIELD(log_level), 0, 0, 0, 0, NULL,
	  "info", "LEVEL", "debug, info, warn or error" },
	{ "SETTLED_LOG_BUFFER", "--log-buffer", OPT_BOOL, 0, FIELD(log_buffer), 0, 0, 0, 0, NULL,
	  "true", "BOOL",
	  "batch info/debug lines, written up to 20 ms late (warn/error never wait); "
	  "false: one write per line" },
	{ "SETTLED_IDEMPOTENCY_TTL", "--idempotency-ttl", OPT_DURATION, 0,
	  FIELD(idempotency_ttl_ms), 0, 0, SEC, 365 * DAY, NULL, "24h", "DURATION",
	  "how long idempotency keys are remembered" },
	{ "SETTLED_REQUIRE_IDEMPOTENCY_KEY", "--require-idempotency-key", OPT_BOOL, 0,
	  FIELD(require_idempotency_key), 0, 0, 0, 0, NULL, "false", "BOOL",
	  "reject POSTs without an Idempotency-Key" },
	{ "SETTLED_TREASURY_FUNDING", "--treasury-funding", OPT_I64, 0, FIELD(treasury_funding),
	  0, 0, 0, INT64_MAX, NULL, "100000000", "UNITS",
	  "base units the treasury is funded with at first start" },
	{ "SETTLED_ASSET", "--asset", OPT_PATH, 0, FIELD(asset), FIELD_SIZE(asset), 0, 0, 0,
	  check_asset, "USD", "CODE", "asset code of the ledger (letters and digits)" },
	{ "SETTLED_COMMISSION_BPS", "--commission-bps", OPT_I64, 0, FIELD(commission_bps), 0, 0,
	  0, 10000, NULL, "1000", "BPS", "referrer commission in basis points (1000 = 10%)" },
	{ "SETTLED_SIM_CONFIRM_MS", "--sim-confirm-ms", OPT_I64, 0, FIELD(sim_confirm_ms), 0, 0,
	  0, DAY, NULL, "200", "MS", "sim rail: milliseconds until a transaction confirms" },
	{ "SETTLED_SIM_FAIL_RATE", "--sim-fail-rate", OPT_RATE, 0, FIELD(sim_fail_rate), 0, 0, 0,
	  0, NULL, "0", "0..1", "sim rail: fraction of transactions that fail" },
	{ "SETTLED_STUCK_AFTER", "--stuck-after", OPT_DURATION, 0, FIELD(stuck_after_ms), 0, 0,
	  SEC, 365 * DAY, NULL, "10m", "DURATION",
	  "intents LOCKED or SUBMITTED longer than this are swept" },
	{ "SETTLED_HOLD_TIMEOUT", "--hold-timeout", OPT_DURATION, 0, FIELD(hold_timeout_ms), 0,
	  0, SEC, 365 * DAY, NULL, "1h", "DURATION",
	  "holds expire after this: claims, and POST /api/v2/holds without expires_in" },
	{ "SETTLED_CLAIM_MAX", "--claim-max", OPT_I64, 0, FIELD(claim_max), 0, 0, 0, INT64_MAX,
	  NULL, "0", "UNITS",
	  "largest amount one claim may withdraw, base units (0 = unset: no cap)" },
	{ "SETTLED_JOB_BASE_DELAY", "--job-base-delay", OPT_DURATION, 0,
	  FIELD(job_base_delay_ms), 0, 0, 1, DAY, NULL, "1s", "DURATION",
	  "first retry delay of a failed job (doubles per attempt)" },
	{ "SETTLED_JOB_MAX_DELAY", "--job-max-delay", OPT_DURATION, 0, FIELD(job_max_delay_ms),
	  0, 0, 1, 30 * DAY, NULL, "10m", "DURATION", "cap on a job's retry delay" },
	{ "SETTLED_JOB_MAX_ATTEMPTS", "--job-max-attempts", OPT_INT, 0, FIELD(job_max_attempts),
	  0, 0, 1, 1000, NULL, "8", "N", "attempts before a job goes to the dead-letter queue" },
	{ "SETTLED_JOB_LEASE", "--job-lease", OPT_DURATION, 0, FIELD(job_lease_ms), 0, 0, SEC,
	  3600 * SEC, NULL, "30s", "DURATION",
	  "a claimed job's lease: a crashed instance's jobs run again after it (keep it above the "
	  "longest job)" },
	{ "SETTLED_API_KEY_GRACE", "--api-key-grace", OPT_DURATION, 0, FIELD(api_key_grace_ms),
	  0, 0, 0, 365 * DAY, NULL, "24h", "DURATION",
	  "how long a rotated API key keeps working" },
	{ "OTEL_EXPORTER_OTLP_ENDPOINT", "--otel-exporter-otlp-endpoint", OPT_URL, 0,
	  FIELD(otel_endpoint), 0, 0, 0, 0, check_http_url, NULL, "URL",
	  "OTLP/HTTP endpoint for traces; tracing off when unset" },

	/* rails */
	{ "SETTLED_RAIL", "--rail", OPT_PATH, 0, FIELD(rail), FIELD_SIZE(rail), 0, 0, 0,
	  check_rail, "sim", "sim|evm",
	  "what confirms a claim's tx_hash: sim (test rail) or evm (JSON-RPC providers)" },
	{ "SETTLED_EVM_RPC_URLS", "--evm-rpc-urls", OPT_LIST, OPT_SECRET, FIELD(evm_rpc_urls), 0,
	  FIELD(n_evm_rpc_urls), 0, 0, check_http_url, NULL, "URL,...",
	  "evm rail: JSON-RPC provider URLs (may carry API keys: never logged)" },
	{ "SETTLED_EVM_CHAIN_ID", "--evm-chain-id", OPT_I64, 0, FIELD(evm_chain_id), 0, 0, 0,
	  INT64_MAX, NULL, "0", "ID",
	  "evm rail: the chain id every provider must serve (required with the evm rail)" },
	{ "SETTLED_EVM_CONFIRMATIONS", "--evm-confirmations", OPT_INT, 0,
	  FIELD(evm_confirmations), 0, 0, 1, 10000, NULL, "12", "N",
	  "evm rail: blocks (the transaction's included) before a claim settles" },
	{ "SETTLED_EVM_TOKEN", "--evm-token", OPT_STR, 0, FIELD(evm_token), 0, 0, 0, 0,
	  check_address, NULL, "ADDRESS",
	  "evm rail: ERC-20 contract whose Transfer pays claims; native value when unset" },
	{ "SETTLED_EVM_DECIMALS", "--evm-decimals", OPT_INT, 0, FIELD(evm_decimals), 0, 0, 0, 58,
	  NULL, "0", "N", "evm rail: on-chain amount = ledger amount x 10^N, exactly" },
	{ "SETTLED_EVM_POLL_INTERVAL", "--evm-poll-interval", OPT_DURATION, 0, FIELD(evm_poll_ms),
	  0, 0, 100, 3600 * SEC, NULL, "5s", "DURATION",
	  "evm rail: first check after a claim is recorded; least delay between checks" },
	{ "SETTLED_EVM_RPC_TIMEOUT", "--evm-rpc-timeout", OPT_DURATION, 0,
	  FIELD(evm_rpc_timeout_ms), 0, 0, 100, 300 * SEC, NULL, "5s", "DURATION",
	  "evm rail: timeout of one JSON-RPC request" },
	{ "SETTLED_EVM_BREAKER_FAILURES", "--evm-breaker-failures", OPT_INT, 0,
	  FIELD(evm_breaker_failures), 0, 0, 1, 1000, NULL, "3", "N",
	  "evm rail: consecutive failures that open a provider's circuit" },
	{ "SETTLED_EVM_BREAKER_COOLDOWN", "--evm-breaker-cooldown", OPT_DURATION, 0,
	  FIELD(evm_breaker_cooldown_ms), 0, 0, 100, 3600 * SEC, NULL, "30s", "DURATION",
	  "evm rail: how long an open circuit waits before one probe" },
	{ "SETTLED_PAYOUT_RAIL", "--payout-rail", OPT_PATH, 0, FIELD(payout_rail),
	  FIELD_SIZE(payout_rail), 0, 0, 0, check_payout_rail, "sim", "sim|http",
	  "what pays payout items: sim (test rail) or http (the operator's payout service)" },
	{ "SETTLED_PAYOUT_URL", "--payout-url", OPT_STR, OPT_SECRET, FIELD(payout_url), 0, 0, 0,
	  0, check_http_url, NULL, "URL",
	  "http payout rail: where each item is POSTed (may carry a key: never logged)" },
	{ "SETTLED_PAYOUT_SECRET", "--payout-secret", OPT_STR, OPT_SECRET, FIELD(payout_secret),
	  0, 0, 0, 0, check_whsec, NULL, "SECRET",
	  "http payout rail: Standard Webhooks signing secret (whsec_<base64>)" },
	{ "SETTLED_PAYOUT_TIMEOUT", "--payout-timeout", OPT_DURATION, 0, FIELD(payout_timeout_ms),
	  0, 0, 100, 300 * SEC, NULL, "10s", "DURATION",
	  "http payout rail: timeout of one POST" },

	/* rate limits (SPEC section 5); 0 disables a policy */
	{ "RL_REGISTER_PER_HOUR", "--rl-register-per-hour", OPT_I64, 0,
	  FIELD(rl_register_per_hour), 0, 0, 0, 1000000000, NULL, "5", "N",
	  "registrations per hour per client IP (0 = no limit)" },
	{ "RL_REGISTER_PER_DAY_WALLET", "--rl-register-per-day-wallet", OPT_I64, 0,
	  FIELD(rl_register_per_day_wallet), 0, 0, 0, 1000000000, NULL, "10", "N",
	  "registrations per day per wallet (0 = no limit)" },
	{ "RL_CLAIM_PER_HOUR", "--rl-claim-per-hour", OPT_I64, 0, FIELD(rl_claim_per_hour), 0, 0,
	  0, 1000000000, NULL, "60", "N", "claims per hour per wallet (0 = no limit)" },
	{ "RL_WEBHOOK_PER_MIN", "--rl-webhook-per-min", OPT_I64, 0, FIELD(rl_webhook_per_min), 0,
	  0, 0, 1000000000, NULL, "100", "N", "correctly signed webhook deliveries per minute per source address (0 = no limit)" },
	{ "RL_HEALTH_PER_MIN", "--rl-health-per-min", OPT_I64, 0, FIELD(rl_health_per_min), 0, 0,
	  0, 1000000000, NULL, "600", "N", "health checks per minute per IP (0 = no limit)" },
	{ "RL_API_PER_MIN", "--rl-api-per-min", OPT_I64, 0, FIELD(rl_api_per_min), 0, 0, 0,
	  1000000000, NULL, "1000", "N", "v2 API calls per minute per API key (0 = no limit)" },
	{ "RL_AUTH_FAIL_PER_MIN", "--rl-auth-fail-per-min", OPT_I64, 0, FIELD(rl_auth_fail_per_min),
	  0, 0, 0, 1000000000, NULL, "20", "N",
	  "failed authentications (401/403) per minute per client IP; past it every "
	  "authenticated route answers 429 to that IP (0 = no limit)" },
	{ "SETTLED_RL_FAIL", "--rl-fail", OPT_RL_FAIL, 0, FIELD(rl_fail_open_money), 0, 0, 0, 0,
	  NULL, NULL, "open|closed",
	  "when the rate-limit store is down: allow (open) or refuse (closed); unset = health "
	  "and other routes open, money-moving routes closed" },
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

/* ---- error messages ---------------------------------------------------- */

/* Appends at most 64 bytes of v, printable ASCII only, so a hostile value
 * cannot forge extra lines in the error. */
static void put_echo(struct buf *err, const char *v)
{
	size_t i;

	for (i = 0; v[i] && i < 64; i++) {
		unsigned char c = (unsigned char)v[i];

		buf_putc(err, c >= 0x20 && c < 0x7f ? (char)c : '?');
	}
	if (v[i])
		buf_puts(err, "...");
}

/* "NAME: why: value", or "NAME: why" for a secret. Returns ST_INVALID. */
static enum st_rc bad(struct buf *err, const struct opt *o, const char *name, const char *why,
		      const char *val)
{
	if (!err)
		return ST_INVALID;
	buf_reset(err);
	buf_printf(err, "%s: %s", name, why);
	if (val && !(o && (o->flags & OPT_SECRET))) {
		buf_puts(err, ": ");
		put_echo(err, val);
	}
	return ST_INVALID;
}

static enum st_rc nomem(struct buf *err, const char *name)
{
	if (err) {
		buf_reset(err);
		buf_printf(err, "%s: out of memory", name);
	}
	return ST_NOMEM;
}

/* ---- scalar parsers ---------------------------------------------------- */

/* Consumes decimal digits at *sp. 0 = ok, -1 = no digits, -2 = overflow. */
static int scan_u64(const char **sp, uint64_t *out)
{
	const char *s = *sp;
	uint64_t v = 0;

	if (*s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned d = (unsigned)(*s - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -2;
		v = v * 10 + d;
	}
	*sp = s;
	*out = v;
	return 0;
}

enum st_rc config_parse_duration(const char *s, int64_t *ms_out)
{
	static const struct {
		const char *unit;
		int64_t ms;
	} units[] = {
		{ "", SEC }, { "ms", 1 }, { "s", SEC }, { "m", 60 * SEC },
		{ "h", 3600 * SEC }, { "d", DAY },
	};
	const char *p = s;
	uint64_t v;

	if (!s || scan_u64(&p, &v))
		return ST_INVALID;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(p, units[i].unit))
			continue;
		if (v > (uint64_t)(INT64_MAX / units[i].ms))
			return ST_INVALID;
		*ms_out = (int64_t)v * units[i].ms;
		return ST_OK;
	}
	return ST_INVALID;
}

/* The shortest exact spelling of ms that config_parse_duration reads back. */
static void fmt_duration(int64_t ms, char *out, size_t n)
{
	static const struct {
		const char *unit;
		int64_t ms;
	} units[] = { { "d", DAY }, { "h", 3600 * SEC }, { "m", 60 * SEC }, { "s", SEC } };

	for (size_t i = 0; ms && i < sizeof(units) / sizeof(units[0]); i++) {
		if (ms % units[i].ms == 0) {
			snprintf(out, n, "%" PRId64 "%s", ms / units[i].ms, units[i].unit);
			return;
		}
	}
	snprintf(out, n, "%" PRId64 "%s", ms, ms ? "ms" : "s");
}

/* Bytes with an optional binary suffix: 512, 512k, 64KiB, 1M, 1MiB, 1MB. */
static int parse_size(const char *s, uint64_t *out)
{
	static const struct {
		const char *suffix;
		uint64_t mult;
	} sfx[] = {
		{ "", 1 }, { "b", 1 }, { "k", 1024 }, { "kb", 1024 }, { "kib", 1024 },
		{ "m", 1024 * 1024 }, { "mb", 1024 * 1024 }, { "mib", 1024 * 1024 },
	};
	uint64_t v;
	int r = scan_u64(&s, &v);

	if (r)
		return r;
	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		if (strcasecmp(s, sfx[i].suffix))
			continue;
		if (v > UINT64_MAX / sfx[i].mult)
			return -2;
		*out = v * sfx[i].mult;
		return 0;
	}
	return -1;
}

static int parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1", "true", "yes", "on" };
	static const char *const no[] = { "0", "false", "no", "off" };

	for (size_t i = 0; i < 4; i++) {
		if (!strcasecmp(s, yes[i])) {
			*out = true;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

/* host:port, [v6]:port or localhost:port. listen_host is always numeric. */
static const char *parse_listen(const char *v, struct config *c)
{
	char host[sizeof(c->listen_host)];
	unsigned char addr[16];
	const char *h, *port;
	size_t hlen;
	int family = AF_INET;
	uint64_t p;

	if (v[0] == '[') {
		const char *close = strchr(v, ']');

		if (!close || close[1] != ':')
			return "not [IPv6]:port";
		h = v + 1;
		hlen = (size_t)(close - h);
		port = close + 2;
		family = AF_INET6;
	} else {
		const char *colon = strrchr(v, ':');

		if (!colon)
			return "not host:port";
		h = v;
		hlen = (size_t)(colon - v);
		port = colon + 1;
		if (memchr(h, ':', hlen))
			return "an IPv6 address needs brackets, as in [::1]:8080";
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return "not host:port";
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (family == AF_INET && !strcmp(host, "localhost"))
		snprintf(host, sizeof(host), "127.0.0.1");
	else if (inet_pton(family, host, addr) != 1)
		return "host is not an IPv4 address, [IPv6] address or localhost";
	if (scan_u64(&port, &p) || *port || p > 65535)
		return "port is not 0..65535";
	memcpy(c->listen_host, host, strlen(host) + 1);
	c->listen_port = (uint16_t)p;
	return NULL;
}

/* ---- value checks ------------------------------------------------------ */

static bool has_prefix(const char *s, const char *prefix)
{
	return !strncmp(s, prefix, strlen(prefix));
}

/* An Origin header value: scheme://host[:port], nothing after, or "*". */
static const char *check_origin(const char *v)
{
	const char *host;

	if (!strcmp(v, "*"))
		return NULL;
	if (has_prefix(v, "https://"))
		host = v + 8;
	else if (has_prefix(v, "http://"))
		host = v + 7;
	else
		return "not an origin (scheme://host[:port] or *)";
	if (!*host || strpbrk(host, "/?#@ \t"))
		return "not an origin (scheme://host[:port], no path or trailing slash)";
	return NULL;
}

static const char *check_ip(const char *v)
{
	unsigned char addr[16];

	if (inet_pton(AF_INET, v, addr) == 1 || inet_pton(AF_INET6, v, addr) == 1)
		return NULL;
	return "not an IP address";
}

static const char *check_pg_url(const char *v)
{
	if (has_prefix(v, "postgres://") || has_prefix(v, "postgresql://"))
		return NULL;
	return "not a postgres:// or postgresql:// URL";
}

static const char *check_redis_url(const char *v)
{
	struct redisc_url u;

	/* The parser's reasons are static texts that never name the password,
	 * but the value itself is secret: say only what is wrong. */
	if (has_prefix(v, "rediss://"))
		return "rediss:// (TLS) is not supported by this build";
	if (!has_prefix(v, "redis://"))
		return "not a redis:// URL";
	if (redisc_url_parse(v, &u, NULL))
		return "not a valid redis://[[user]:password@]host[:port][/db] URL";
	explicit_bzero(u.password, sizeof(u.password));
	return NULL;
}

static const char *check_redis_prefix(const char *v)
{
	if (strlen(v) > 64)
		return "longer than 64 bytes";
	for (; *v; v++)
		if (*v <= ' ' || *v > '~')
			return "not printable ASCII without spaces";
	return NULL;
}

static const char *check_http_url(const char *v)
{
	if ((has_prefix(v, "http://") && v[7]) || (has_prefix(v, "https://") && v[8]))
		return NULL;
	return "not an http:// or https:// URL";
}

/* A short admin token can be guessed, throttling or not. */
static const char *check_admin_token(const char *v)
{
	if (strlen(v) < CONFIG_ADMIN_TOKEN_MIN)
		return "shorter than " CONFIG_ADMIN_TOKEN_MIN_STR
		       " characters (generate one with: openssl rand -hex 32)";
	return NULL;
}

static const char *check_rail(const char *v)
{
	return !strcmp(v, "sim") || !strcmp(v, "evm") ? NULL : "not a rail (sim or evm)";
}

static const char *check_payout_rail(const char *v)
{
	return !strcmp(v, "sim") || !strcmp(v, "http") ? NULL : "not a payout rail (sim or http)";
}

/* An EVM address: 0x + 40 hex digits, any case. */
static const char *check_address(const char *v)
{
	if (strlen(v) != 42 || v[0] != '0' || (v[1] != 'x' && v[1] != 'X'))
		return "not an address (0x + 40 hex digits)";
	for (const char *p = v + 2; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F')))
			return "not an address (0x + 40 hex digits)";
	return NULL;
}

static const char *check_whsec(const char *v)
{
	unsigned char key[WEBHOOK_KEY_MAX];
	size_t n = 0;
	enum st_rc rc;

	if (!has_prefix(v, "whsec_"))
		return "not a whsec_<base64> secret";
	rc = webhook_secret_decode(v, key, &n);
	explicit_bzero(key, sizeof(key));
	return rc ? "not a whsec_<base64> secret" : NULL;
}

static const char *check_asset(const char *v)
{
	for (const char *p = v; *p; p++) {
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= '0' && *p <= '9')))
			return "not an asset code (letters and digits)";
	}
	return NULL;
}

/* ---- setting one option ------------------------------------------------ */

static void *field_of(struct config *c, const struct opt *o)
{
	return (char *)c + o->off;
}

static const void *cfield_of(const struct config *c, const struct opt *o)
{
	return (const char *)c + o->off;
}

static void list_clear(char **items, size_t *n)
{
	for (size_t i = 0; i < *n; i++) {
		free(items[i]);
		items[i] = NULL;
	}
	*n = 0;
}

/* Comma separated, spaces around items trimmed, empty items skipped. The
 * old list is replaced only once the whole new one is valid. */
static enum st_rc set_list(struct config *c, const struct opt *o, const char *val,
			   const char *name, struct buf *err)
{
	char **items = field_of(c, o);
	size_t *count = (size_t *)((char *)c + o->count_off);
	char *tmp[CONFIG_MAX_LIST];
	size_t n = 0;
	enum st_rc rc = ST_OK;
	const char *p = val;

	while (*p) {
		const char *end = strchr(p, ',');
		const char *stop = end ? end : p + strlen(p);
		const char *why;

		while (p < stop && (*p == ' ' || *p == '\t'))
			p++;
		while (stop > p && (stop[-1] == ' ' || stop[-1] == '\t'))
			stop--;
		if (stop > p) {
			if (n == CONFIG_MAX_LIST) {
				rc = bad(err, o, name, "too many items (at most 16)", val);
				goto out;
			}
			tmp[n] = strndup(p, (size_t)(stop - p));
			if (!tmp[n]) {
				rc = nomem(err, name);
				goto out;
			}
			n++;
			if (o->check && (why = o->check(tmp[n - 1]))) {
				rc = bad(err, o, name, why, tmp[n - 1]);
				goto out;
			}
		}
		if (!end)
			break;
		p = end + 1;
	}
	list_clear(items, count);
	memcpy(items, tmp, n * sizeof(tmp[0]));
	*count = n;
	n = 0;
out:
	list_clear(tmp, &n);
	return rc;
}

/* Resets o to "unset" (used when its default is NULL). */
static void opt_clear(struct config *c, const struct opt *o)
{
	void *f = field_of(c, o);

	switch (o->type) {
	case OPT_PATH:
		((char *)f)[0] = '\0';
		break;
	case OPT_STR:
	case OPT_URL:
		free(*(char **)f);
		*(char **)f = NULL;
		break;
	case OPT_LIST:
		list_clear(f, (size_t *)((char *)c + o->count_off));
		break;
	case OPT_RL_FAIL:
		c->rl_fail_open_money = false;
		c->rl_fail_open_other = true;
		break;
	default:
		assert(!"option without a default");
	}
}

static const char *range_reason(const struct opt *o, char *out, size_t n)
{
	char lo[32], hi[32];

	if (o->type == OPT_DURATION || o->type == OPT_DURATION_S) {
		fmt_duration(o->min, lo, sizeof(lo));
		fmt_duration(o->max, hi, sizeof(hi));
		snprintf(out, n, "out of range (%s..%s)", lo, hi);
	} else {
		snprintf(out, n, "out of range (%" PRId64 "..%" PRId64 ")", o->min, o->max);
	}
	return out;
}

/* Stores a number already checked against o's range. */
static void store_number(struct config *c, const struct opt *o, int64_t v)
{
	void *f = field_of(c, o);

	switch (o->type) {
	case OPT_SIZE: *(size_t *)f = (size_t)v; break;
	case OPT_UINT: *(unsigned *)f = (unsigned)v; break;
	case OPT_INT: *(int *)f = (int)v; break;
	case OPT_DURATION_S: *(unsigned *)f = (unsigned)(v / SEC); break;
	default: *(int64_t *)f = v; break;
	}
}

/* Sets o from val (NULL or "" = its default) read from name (env or flag). */
static enum st_rc opt_set(struct config *c, const struct opt *o, const char *val,
			  const char *name, struct buf *err)
{
	void *f = field_of(c, o);
	const char *why = NULL;
	char why_buf[96];
	uint64_t u;
	int64_t v;
	int r;

	if (!val || !*val) {
		val = o->def;
		if (!val) {
			opt_clear(c, o);
			return ST_OK;
		}
	}
	switch (o->type) {
	case OPT_LISTEN:
		why = parse_listen(val, c);
		break;
	case OPT_PATH:
		if (strlen(val) >= o->size)
			why = "too long";
		else if (!(o->check && (why = o->check(val))))
			memcpy(f, val, strlen(val) + 1);
		break;
	case OPT_STR:
	case OPT_URL: {
		char *dup;

		if (o->check && (why = o->check(val)))
			break;
		dup = strdup(val);
		if (!dup)
			return nomem(err, name);
		free(*(char **)f);
		*(char **)f = dup;
		break;
	}
	case OPT_LIST:
		return set_list(c, o, val, name, err);
	case OPT_SIZE:
	case OPT_UINT:
	case OPT_INT:
	case OPT_I64:
		if (o->type == OPT_SIZE) {
			r = parse_size(val, &u);
		} else {
			const char *p = val;

			r = scan_u64(&p, &u);
			if (!r && *p)
				r = -1;
		}
		if (r == -1) {
			why = o->type == OPT_SIZE ? "not a size" : "not a non-negative integer";
		} else if (r == -2 || u > (uint64_t)o->max || (int64_t)u < o->min) {
			why = range_reason(o, why_buf, sizeof(why_buf));
		} else {
			store_number(c, o, (int64_t)u);
		}
		break;
	case OPT_DURATION:
	case OPT_DURATION_S:
		if (config_parse_duration(val, &v))
			why = "not a duration (250ms, 90s, 15m, 24h, 7d or seconds)";
		else if (v < o->min || v > o->max)
			why = range_reason(o, why_buf, sizeof(why_buf));
		else if (o->type == OPT_DURATION_S && v % SEC)
			why = "not whole seconds";
		else
			store_number(c, o, v);
		break;
	case OPT_BOOL:
		if (parse_bool(val, f))
			why = "not a boolean (1/0, true/false, yes/no, on/off)";
		break;
	case OPT_LEVEL:
		r = log_level_parse(val);
		if (r < 0)
			why = "not a log level (debug, info, warn, error)";
		else
			*(int *)f = r;
		break;
	case OPT_RATE: {
		char *end;
		double d;

		/* Plain decimals only: strtod would also take "0x1p-1", "nan". */
		if (val[strspn(val, "0123456789.")] || !strpbrk(val, "0123456789")) {
			why = "not a number between 0 and 1";
			break;
		}
		d = strtod(val, &end);
		if (*end || !isfinite(d) || d < 0 || d > 1)
			why = "not a number between 0 and 1";
		else
			*(double *)f = d;
		break;
	}
	case OPT_RL_FAIL:
		if (!strcasecmp(val, "open"))
			c->rl_fail_open_money = c->rl_fail_open_other = true;
		else if (!strcasecmp(val, "closed"))
			c->rl_fail_open_money = c->rl_fail_open_other = false;
		else
			why = "not open or closed";
		break;
	}
	if (why)
		return bad(err, o, name, why, val);
	return ST_OK;
}

/* ---- loading ----------------------------------------------------------- */

/* getenv() over envp: the value of the first NAME=..., or NULL. */
static const char *env_get(char **envp, const char *name)
{
	size_t n = strlen(name);

	for (; envp && *envp; envp++) {
		if (!strncmp(*envp, name, n) && (*envp)[n] == '=')
			return *envp + n + 1;
	}
	return NULL;
}

static const struct opt *opt_by_flag(const char *flag, size_t len)
{
	for (size_t i = 0; i < N_OPTS; i++) {
		if (strlen(opts[i].flag) == len && !strncmp(opts[i].flag, flag, len))
			return &opts[i];
	}
	return NULL;
}

/* --name value, --name=value; a boolean may stand alone (--name = true). */
static enum st_rc load_argv(struct config *c, int argc, char **argv, struct buf *err)
{
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *eq, *val;
		const struct opt *o;
		char flag[64];
		size_t len;
		bool b;
		enum st_rc rc;

		if (!has_prefix(arg, "--") || !arg[2]) {
			if (err) {
				buf_reset(err);
				buf_puts(err, "unexpected argument: ");
				put_echo(err, arg);
			}
			return ST_INVALID;
		}
		eq = strchr(arg, '=');
		len = eq ? (size_t)(eq - arg) : strlen(arg);
		o = opt_by_flag(arg, len);
		if (!o) {
			if (err) {
				buf_reset(err);
				buf_puts(err, "unknown flag: ");
				snprintf(flag, sizeof(flag), "%.*s", (int)(len < 60 ? len : 60), arg);
				put_echo(err, flag);
			}
			return ST_INVALID;
		}
		if (eq) {
			val = eq + 1;
		} else if (o->type == OPT_BOOL && (i + 1 >= argc || parse_bool(argv[i + 1], &b))) {
			val = "true";
		} else if (i + 1 < argc) {
			val = argv[++i];
		} else {
			return bad(err, NULL, o->flag, "missing value", NULL);
		}
		rc = opt_set(c, o, val, o->flag, err);
		if (rc)
			return rc;
	}
	return ST_OK;
}

/* Checks between options, once every value is known. */
static enum st_rc check_cross(const struct config *c, struct buf *err)
{
	if (c->job_base_delay_ms > c->job_max_delay_ms) {
		if (err) {
			buf_reset(err);
			buf_puts(err, "SETTLED_JOB_BASE_DELAY: longer than SETTLED_JOB_MAX_DELAY");
		}
		return ST_INVALID;
	}
	if (!strcmp(c->rail, "evm") && (!c->n_evm_rpc_urls || !c->evm_chain_id)) {
		if (err) {
			buf_reset(err);
			buf_puts(err, "SETTLED_RAIL=evm needs SETTLED_EVM_RPC_URLS and SETTLED_EVM_CHAIN_ID");
		}
		return ST_INVALID;
	}
	if (!strcmp(c->payout_rail, "http") && (!c->payout_url || !c->payout_secret)) {
		if (err) {
			buf_reset(err);
			buf_puts(err, "SETTLED_PAYOUT_RAIL=http needs SETTLED_PAYOUT_URL and SETTLED_PAYOUT_SECRET");
		}
		return ST_INVALID;
	}
	return ST_OK;
}

enum st_rc config_load(struct config *cfg, char **envp, int argc, char **argv,
		       bool *help_wanted, struct buf *err)
{
	struct config c;
	bool help = false;
	enum st_rc rc = ST_OK;

	memset(&c, 0, sizeof(c));
	if (help_wanted)
		*help_wanted = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			help = true;
	}
	for (size_t i = 0; i < N_OPTS && !rc; i++)
		rc = opt_set(&c, &opts[i], NULL, opts[i].env, err);
	assert(rc != ST_INVALID); /* every default in opts[] parses */
	/* With --help the caller only prints and exits: skip user values so
	 * that help works even while the environment holds a bad one. */
	for (size_t i = 0; i < N_OPTS && !rc && !help; i++)
		rc = opt_set(&c, &opts[i], env_get(envp, opts[i].env), opts[i].env, err);
	if (!rc && !help)
		rc = load_argv(&c, argc, argv, err);
	if (!rc && !help)
		rc = check_cross(&c, err);
	if (rc) {
		config_release(&c);
		memset(cfg, 0, sizeof(*cfg));
		return rc;
	}
	*cfg = c;
	if (help_wanted)
		*help_wanted = help;
	return ST_OK;
}

void config_release(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < N_OPTS; i++) {
		const struct opt *o = &opts[i];

		if (o->type == OPT_STR || o->type == OPT_URL || o->type == OPT_LIST)
			opt_clear(cfg, o);
	}
	memset(cfg, 0, sizeof(*cfg));
}

/* ---- --help ------------------------------------------------------------ */

void config_help(FILE *out)
{
	fputs("Usage: settled [--flag value | --flag=value]...\n"
	      "Every flag is also an environment variable; a flag beats the environment,\n"
	      "an empty value means the default. Durations: 250ms, 90s, 15m, 24h, 7d or\n"
	      "seconds. Booleans: 1/0, true/false, yes/no, on/off. Lists: comma separated.\n\n"
	      "  -h, --help\n      print this help and exit\n"
	      "  --version\n      print the version and the git commit, and exit\n"
	      "  backup PATH [--db FILE]\n      copy the embedded store to PATH while the server runs\n"
	      "  restore PATH [--db FILE] [--force]\n      put a backup back (the server stopped)\n"
	      "  migrate [--db FILE]\n      apply pending migrations to the store and exit\n",
	      out);
	for (size_t i = 0; i < N_OPTS; i++) {
		const struct opt *o = &opts[i];
		const char *def = o->def;

		if (o->type == OPT_RL_FAIL)
			def = "health open, money closed";
		fprintf(out, "  %s %s  (%s)\n      %s [default: %s]\n", o->flag, o->metavar, o->env,
			o->help, def && *def ? def : "unset");
	}
}

/* ---- effective configuration ------------------------------------------- */

/* Masks the password of scheme://user:pass@host/...?password=... . Without
 * "://" the whole value is masked: it cannot be parsed safely. The last
 * '@' ends the user part, so an unescaped '@' or '/' in a password over-masks
 * rather than leaks. */
static void put_url(struct json_writer *w, const char *key, const char *url)
{
	struct buf tmp = BUF_INIT(4096);
	const char *auth = strstr(url, "://");
	const char *at, *rest, *q;
	enum st_rc rc;

	if (!auth) {
		jw_str(w, key, "[redacted]");
		return;
	}
	auth += 3;
	at = strrchr(auth, '@');
	rc = buf_append(&tmp, url, (size_t)(auth - url));
	if (at) {
		const char *colon = memchr(auth, ':', (size_t)(at - auth));

		if (!rc && colon)
			rc = buf_append(&tmp, auth, (size_t)(colon - auth + 1));
		if (!rc)
			rc = buf_puts(&tmp, "***@");
	}
	rest = at ? at + 1 : auth;
	q = strchr(rest, '?');
	if (!rc)
		rc = buf_append(&tmp, rest, q ? (size_t)(q - rest + 1) : strlen(rest));
	/* Query parameters such as libpq's ?password= are masked by name. */
	for (const char *p = q ? q + 1 : NULL; p && !rc;) {
		const char *amp = strchr(p, '&');
		size_t plen = amp ? (size_t)(amp - p) : strlen(p);
		const char *eq = memchr(p, '=', plen);
		char key[64];

		snprintf(key, sizeof(key), "%.*s", (int)(eq ? eq - p : 0), p);
		if (eq && (strcasestr(key, "pass") || strcasestr(key, "secret") ||
			   strcasestr(key, "token"))) {
			rc = buf_append(&tmp, p, (size_t)(eq - p + 1));
			if (!rc)
				rc = buf_puts(&tmp, "***");
		} else {
			rc = buf_append(&tmp, p, plen);
		}
		if (!rc && amp)
			rc = buf_putc(&tmp, '&');
		p = amp ? amp + 1 : NULL;
	}
	if (rc)
		jw_fail(w, rc);
	else
		jw_strn(w, key, tmp.ptr, tmp.len);
	buf_release(&tmp);
}

static void put_value(struct json_writer *w, const char *key, const struct config *c,
		      const struct opt *o)
{
	const void *f = cfield_of(c, o);
	char tmp[96];

	switch (o->type) {
	case OPT_LISTEN:
		snprintf(tmp, sizeof(tmp), strchr(c->listen_host, ':') ? "[%s]:%u" : "%s:%u",
			 c->listen_host, (unsigned)c->listen_port);
		jw_str(w, key, tmp);
		return;
	case OPT_PATH:
		jw_str(w, key, f);
		return;
	case OPT_STR:
	case OPT_URL: {
		const char *s = *(char *const *)f;

		if (!s)
			jw_null(w, key);
		else if (o->flags & OPT_SECRET && o->type == OPT_STR)
			jw_str(w, key, "[redacted]");
		else if (o->type == OPT_URL)
			put_url(w, key, s);
		else
			jw_str(w, key, s);
		return;
	}
	case OPT_LIST: {
		char *const *items = f;
		size_t n = *(const size_t *)((const char *)c + o->count_off);

		if (o->flags & OPT_SECRET) {
			if (n)
				jw_str(w, key, "[redacted]");
			else
				jw_null(w, key);
			return;
		}
		jw_array(w, key);
		for (size_t i = 0; i < n; i++)
			jw_str(w, NULL, items[i]);
		jw_close(w);
		return;
	}
	case OPT_SIZE:
		jw_i64(w, key, (int64_t)*(const size_t *)f);
		return;
	case OPT_UINT:
		jw_i64(w, key, *(const unsigned *)f);
		return;
	case OPT_INT:
		jw_i64(w, key, *(const int *)f);
		return;
	case OPT_I64:
		jw_i64(w, key, *(const int64_t *)f);
		return;
	case OPT_DURATION:
		fmt_duration(*(const int64_t *)f, tmp, sizeof(tmp));
		jw_str(w, key, tmp);
		return;
	case OPT_DURATION_S:
		fmt_duration((int64_t)*(const unsigned *)f * SEC, tmp, sizeof(tmp));
		jw_str(w, key, tmp);
		return;
	case OPT_BOOL:
		jw_bool(w, key, *(const bool *)f);
		return;
	case OPT_LEVEL: {
		static const char *const names[] = { "debug", "info", "warn", "error" };
		int l = *(const int *)f;

		jw_str(w, key, l >= 0 && l <= 3 ? names[l] : "unknown");
		return;
	}
	case OPT_RATE:
		jw_raw(w, key, tmp, (size_t)snprintf(tmp, sizeof(tmp), "%g", *(const double *)f));
		return;
	case OPT_RL_FAIL:
		if (c->rl_fail_open_money == c->rl_fail_open_other)
			jw_str(w, key, c->rl_fail_open_money ? "open" : "closed");
		else
			jw_str(w, key, c->rl_fail_open_other ? "default" : "custom");
		return;
	}
	jw_fail(w, ST_INTERNAL);
}

enum st_rc config_describe(const struct config *cfg, struct buf *out)
{
	struct json_writer w;

	jw_members(&w, out, false);
	/* Values come from the environment and the command line, unchecked
	 * bytes: the dump goes into a log line, which must parse. */
	w.esc = JSON_ESC_REPAIR | JSON_ESC_LOWER;
	for (size_t i = 0; i < N_OPTS; i++) {
		char key[64];
		size_t k;

		/* "--rl-claim-per-hour" -> "rl_claim_per_hour" */
		for (k = 0; opts[i].flag[k + 2] && k < sizeof(key) - 1; k++)
			key[k] = opts[i].flag[k + 2] == '-' ? '_' : opts[i].flag[k + 2];
		key[k] = '\0';
		put_value(&w, key, cfg, &opts[i]);
	}
	return jw_end(&w);
}

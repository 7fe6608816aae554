/* test_config.c — defaults, environment, flags, bad values, --help and the
 * redacted description of the configuration. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"

#include "banned.h"

/* String literals are const under -Wwrite-strings; config_load never
 * writes through argv or envp, so casting the arrays is safe. */
#define ARGV_(...) ((const char *[]){ "settled", __VA_ARGS__, NULL })
/* AV("--a", "b") expands to the argc, argv pair. */
#define AV(...) ((int)(sizeof(ARGV_(__VA_ARGS__)) / sizeof(char *)) - 1), \
	((char **)ARGV_(__VA_ARGS__))
#define ENV(...) ((char **)(const char *[]){ __VA_ARGS__, NULL })

static char *no_env[] = { NULL };
static char *no_args[] = { (char *)"settled", NULL };

/* Loads with env and argv; expects ST_OK. */
static void load_ok(struct config *c, char **env, int argc, char **argv)
{
	struct buf err = BUF_INIT(512);
	bool help = true;
	enum st_rc rc = config_load(c, env, argc, argv, &help, &err);

	cr_assert_eq(rc, ST_OK, "config_load: %s (%s)", st_rc_str(rc), err.ptr);
	cr_assert_not(help);
	buf_release(&err);
}

/* Expects ST_INVALID and every NULL-terminated needle in the error line. */
static void load_bad(char **env, int argc, char **argv, const char *const *needles,
		     const char *absent)
{
	struct config c;
	struct buf err = BUF_INIT(512);
	enum st_rc rc;

	memset(&c, 0xab, sizeof(c));
	rc = config_load(&c, env, argc, argv, NULL, &err);
	cr_assert_eq(rc, ST_INVALID, "accepted; err: %s", err.ptr);
	cr_assert_gt(err.len, 0);
	cr_assert_null(strchr(err.ptr, '\n'), "error is not one line: %s", err.ptr);
	for (; needles && *needles; needles++)
		cr_assert_not_null(strstr(err.ptr, *needles), "\"%s\" not in error: %s", *needles,
				   err.ptr);
	if (absent)
		cr_assert_null(strstr(err.ptr, absent), "\"%s\" leaked in error: %s", absent,
			       err.ptr);
	/* A failed load leaves nothing to free. */
	cr_assert_null(c.database_url);
	cr_assert_eq(c.n_cors_origins, 0);
	config_release(&c);
	buf_release(&err);
}

static void env_bad(const char *kv, const char *name, const char *value)
{
	char *env[] = { (char *)kv, NULL };
	const char *const needles[] = { name, value, NULL };

	load_bad(env, 1, no_args, needles, NULL);
}

Test(config, defaults)
{
	struct config c;

	load_ok(&c, no_env, 1, no_args);
	cr_assert_str_eq(c.listen_host, "127.0.0.1");
	cr_assert_eq(c.listen_port, 8080);
	cr_assert_str_eq(c.port_file, "");
	cr_assert_eq(c.max_body, 1024 * 1024);
	cr_assert_eq(c.http_threads, 0);
	cr_assert_eq(c.conn_timeout_s, 30);
	cr_assert_eq(c.conn_limit, 20000);
	cr_assert_eq(c.n_cors_origins, 0);
	cr_assert_eq(c.n_trust_proxy, 0);
	cr_assert_str_eq(c.db_path, "./settled.db");
	cr_assert_null(c.database_url);
	cr_assert_null(c.redis_url);
	cr_assert_null(c.admin_token);
	cr_assert_eq(c.n_webhook_secrets + c.n_stripe_secrets + c.n_standard_secrets, 0);
	cr_assert_eq(c.workers, 4);
	cr_assert_eq(c.log_level, 1);
	cr_assert(c.log_buffer);
	cr_assert_eq(c.idempotency_ttl_ms, 24LL * 3600 * 1000);
	cr_assert_not(c.require_idempotency_key);
	cr_assert_eq(c.treasury_funding, 100000000);
	cr_assert_str_eq(c.asset, "USD");
	cr_assert_eq(c.commission_bps, 1000);
	cr_assert_eq(c.sim_confirm_ms, 200);
	cr_assert_float_eq(c.sim_fail_rate, 0.0, 1e-12);
	cr_assert_eq(c.stuck_after_ms, 10 * 60 * 1000);
	cr_assert_eq(c.hold_timeout_ms, 3600 * 1000);
	cr_assert_eq(c.claim_max, 0); /* no cap */
	cr_assert_eq(c.job_base_delay_ms, 1000);
	cr_assert_eq(c.job_max_delay_ms, 10 * 60 * 1000);
	cr_assert_eq(c.job_max_attempts, 8);
	cr_assert_eq(c.api_key_grace_ms, 24LL * 3600 * 1000);
	cr_assert_eq(c.shutdown_grace_ms, 30 * 1000);
	cr_assert_null(c.otel_endpoint);
	cr_assert_eq(c.rl_register_per_hour, 5);
	cr_assert_eq(c.rl_register_per_day_wallet, 10);
	cr_assert_eq(c.rl_claim_per_hour, 60);
	cr_assert_eq(c.rl_webhook_per_min, 100);
	cr_assert_eq(c.rl_health_per_min, 600);
	cr_assert_eq(c.rl_api_per_min, 1000);
	cr_assert_not(c.rl_fail_open_money);
	cr_assert(c.rl_fail_open_other);
	config_release(&c);
}

Test(config, null_env_and_null_outs)
{
	struct config c;

	cr_assert_eq(config_load(&c, NULL, 1, no_args, NULL, NULL), ST_OK);
	cr_assert_eq(c.listen_port, 8080);
	config_release(&c);
	cr_assert_eq(config_load(&c, NULL, AV("--bogus"), NULL, NULL),
		     ST_INVALID);
	config_release(&c);
	config_release(NULL);
}

Test(config, from_env)
{
	struct config c;
	char **env = ENV("PATH=/usr/bin", "SETTLED_LISTEN=0.0.0.0:9090", "SETTLED_DB=/tmp/x.db",
			 "SETTLED_PORT_FILE=/tmp/port", "SETTLED_MAX_BODY=512k",
			 "SETTLED_HTTP_THREADS=8", "SETTLED_CONN_TIMEOUT=2m",
			 "SETTLED_MAX_CONNECTIONS=100",
			 "SETTLED_CORS_ORIGINS= https://a.example.com , http://localhost:3000,,",
			 "SETTLED_TRUST_PROXY=10.0.0.1,::1",
			 "SETTLED_DATABASE_URL=postgres://app:pw@db:5432/settled",
			 "SETTLED_REDIS_URL=redis://:pw@cache:6379/0", "SETTLED_ADMIN_TOKEN=tok-0123456789abcdef0123456789abcdef",
			 "SETTLED_WEBHOOK_SECRET=s1,s2", "SETTLED_STRIPE_WEBHOOK_SECRET=whsec_a",
			 "SETTLED_STANDARD_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
			 "SETTLED_WORKERS=0", "SETTLED_LOG_LEVEL=debug",
			 "SETTLED_IDEMPOTENCY_TTL=7d", "SETTLED_REQUIRE_IDEMPOTENCY_KEY=yes",
			 "SETTLED_TREASURY_FUNDING=9223372036854775807", "SETTLED_ASSET=EUR",
			 "SETTLED_COMMISSION_BPS=250", "SETTLED_SIM_CONFIRM_MS=0",
			 "SETTLED_SIM_FAIL_RATE=0.25", "SETTLED_STUCK_AFTER=90s",
			 "SETTLED_HOLD_TIMEOUT=15m", "SETTLED_CLAIM_MAX=5000", "SETTLED_JOB_BASE_DELAY=250ms",
			 "SETTLED_JOB_MAX_DELAY=1h", "SETTLED_JOB_MAX_ATTEMPTS=3",
			 "SETTLED_API_KEY_GRACE=0", "SETTLED_SHUTDOWN_GRACE=2s",
			 "OTEL_EXPORTER_OTLP_ENDPOINT=http://otel:4318",
			 "RL_REGISTER_PER_HOUR=0", "RL_REGISTER_PER_DAY_WALLET=11",
			 "RL_CLAIM_PER_HOUR=12", "RL_WEBHOOK_PER_MIN=13", "RL_HEALTH_PER_MIN=14",
			 "RL_API_PER_MIN=15", "SETTLED_RL_FAIL=open");

	load_ok(&c, env, 1, no_args);
	cr_assert_str_eq(c.listen_host, "0.0.0.0");
	cr_assert_eq(c.listen_port, 9090);
	cr_assert_str_eq(c.db_path, "/tmp/x.db");
	cr_assert_str_eq(c.port_file, "/tmp/port");
	cr_assert_eq(c.max_body, 512 * 1024);
	cr_assert_eq(c.http_threads, 8);
	cr_assert_eq(c.conn_timeout_s, 120);
	cr_assert_eq(c.conn_limit, 100);
	cr_assert_eq(c.n_cors_origins, 2);
	cr_assert_str_eq(c.cors_origins[0], "https://a.example.com");
	cr_assert_str_eq(c.cors_origins[1], "http://localhost:3000");
	cr_assert_eq(c.n_trust_proxy, 2);
	cr_assert_str_eq(c.trust_proxy[1], "::1");
	cr_assert_str_eq(c.database_url, "postgres://app:pw@db:5432/settled");
	cr_assert_str_eq(c.redis_url, "redis://:pw@cache:6379/0");
	cr_assert_str_eq(c.admin_token, "tok-0123456789abcdef0123456789abcdef");
	cr_assert_eq(c.n_webhook_secrets, 2);
	cr_assert_str_eq(c.webhook_secrets[1], "s2");
	cr_assert_eq(c.n_stripe_secrets, 1);
	cr_assert_eq(c.n_standard_secrets, 1);
	cr_assert_eq(c.workers, 0);
	cr_assert_eq(c.log_level, 0);
	cr_assert_eq(c.idempotency_ttl_ms, 7LL * 86400 * 1000);
	cr_assert(c.require_idempotency_key);
	cr_assert_eq(c.treasury_funding, INT64_MAX);
	cr_assert_str_eq(c.asset, "EUR");
	cr_assert_eq(c.commission_bps, 250);
	cr_assert_eq(c.sim_confirm_ms, 0);
	cr_assert_float_eq(c.sim_fail_rate, 0.25, 1e-12);
	cr_assert_eq(c.stuck_after_ms, 90000);
	cr_assert_eq(c.hold_timeout_ms, 15 * 60000);
	cr_assert_eq(c.claim_max, 5000);
	cr_assert_eq(c.job_base_delay_ms, 250);
	cr_assert_eq(c.job_max_delay_ms, 3600000);
	cr_assert_eq(c.job_max_attempts, 3);
	cr_assert_eq(c.api_key_grace_ms, 0);
	cr_assert_eq(c.shutdown_grace_ms, 2000);
	cr_assert_str_eq(c.otel_endpoint, "http://otel:4318");
	cr_assert_eq(c.rl_register_per_hour, 0);
	cr_assert_eq(c.rl_register_per_day_wallet, 11);
	cr_assert_eq(c.rl_claim_per_hour, 12);
	cr_assert_eq(c.rl_webhook_per_min, 13);
	cr_assert_eq(c.rl_health_per_min, 14);
	cr_assert_eq(c.rl_api_per_min, 15);
	cr_assert(c.rl_fail_open_money);
	cr_assert(c.rl_fail_open_other);
	config_release(&c);
	cr_assert_null(c.database_url);
	cr_assert_eq(c.n_webhook_secrets, 0);
}

Test(config, pg_group_commit_settings)
{
	struct config c;
	char **env = ENV("SETTLED_PG_WRITE_CONNS=8", "SETTLED_PG_BATCH_MAX=1", "SETTLED_PG_LOCK_TIMEOUT=250ms",
			 "SETTLED_PG_GATHER_US=0");
	char *argv[] = { (char *)"settled", (char *)"--pg-write-conns=64", (char *)"--pg-lock-timeout", (char *)"1ms",
			 (char *)"--pg-gather-us=4500", NULL };

	load_ok(&c, no_env, 1, no_args);
	cr_assert_eq(c.pg_write_conns, 4);
	cr_assert_eq(c.pg_batch_max, 128);
	cr_assert_eq(c.pg_lock_timeout_ms, 10);
	cr_assert_eq(c.pg_gather_us, 2000);
	config_release(&c);
	load_ok(&c, env, 1, no_args);
	cr_assert_eq(c.pg_write_conns, 8);
	cr_assert_eq(c.pg_batch_max, 1);
	cr_assert_eq(c.pg_lock_timeout_ms, 250);
	cr_assert_eq(c.pg_gather_us, 0, "0: never wait");
	config_release(&c);
	load_ok(&c, env, 5, argv);
	cr_assert_eq(c.pg_write_conns, 64);
	cr_assert_eq(c.pg_batch_max, 1);
	cr_assert_eq(c.pg_lock_timeout_ms, 1);
	cr_assert_eq(c.pg_gather_us, 4500);
	config_release(&c);
}

/* SETTLED_REDIS_TIMEOUT: the Redis pool's connect and command timeout
 * (rate_limits_in_redis passes it to rl_redis_new). */
Test(config, redis_timeout)
{
	struct config c;
	char *argv[] = { (char *)"settled", (char *)"--redis-timeout", (char *)"5s", NULL };

	load_ok(&c, no_env, 1, no_args);
	cr_assert_eq(c.redis_timeout_ms, 200);
	config_release(&c);
	load_ok(&c, ENV("SETTLED_REDIS_TIMEOUT=750ms"), 1, no_args);
	cr_assert_eq(c.redis_timeout_ms, 750);
	config_release(&c);
	load_ok(&c, ENV("SETTLED_REDIS_TIMEOUT=750ms"), 3, argv);
	cr_assert_eq(c.redis_timeout_ms, 5000, "the flag wins over the environment");
	config_release(&c);
}

Test(config, empty_env_is_unset)
{
	struct config c;

	load_ok(&c, ENV("SETTLED_LISTEN=", "SETTLED_ADMIN_TOKEN=", "SETTLED_CORS_ORIGINS=",
			"SETTLED_WORKERS=", "SETTLED_RL_FAIL="),
		1, no_args);
	cr_assert_eq(c.listen_port, 8080);
	cr_assert_null(c.admin_token);
	cr_assert_eq(c.n_cors_origins, 0);
	cr_assert_eq(c.workers, 4);
	cr_assert(c.rl_fail_open_other);
	cr_assert_not(c.rl_fail_open_money);
	config_release(&c);
}

Test(config, first_env_entry_wins_like_getenv)
{
	struct config c;

	load_ok(&c, ENV("SETTLED_WORKERS=2", "SETTLED_WORKERS=3", "SETTLED_WORKERSX=9"), 1,
		no_args);
	cr_assert_eq(c.workers, 2);
	config_release(&c);
}

Test(config, flags_override_env)
{
	struct config c;
	char **env = ENV("SETTLED_LISTEN=127.0.0.1:1111", "SETTLED_DB=/env.db",
			 "SETTLED_ADMIN_TOKEN=from-env-0123456789abcdef0123456789", "SETTLED_CORS_ORIGINS=https://env.example",
			 "RL_CLAIM_PER_HOUR=1", "SETTLED_RL_FAIL=open");

	load_ok(&c, env,
		AV("--listen", "[::1]:0", "--db=/flag.db", "--admin-token", "from-flag-0123456789abcdef0123456789",
		   "--cors-origins=https://a.example,https://b.example", "--rl-claim-per-hour", "7",
		   "--port-file", "/tmp/p", "--require-idempotency-key", "--rl-fail=closed",
		   "--otel-exporter-otlp-endpoint=https://otel.example/v1", "--max-body=2MiB",
		   "--idempotency-ttl", "90s"));
	cr_assert_str_eq(c.listen_host, "::1");
	cr_assert_eq(c.listen_port, 0);
	cr_assert_str_eq(c.db_path, "/flag.db");
	cr_assert_str_eq(c.admin_token, "from-flag-0123456789abcdef0123456789");
	cr_assert_eq(c.n_cors_origins, 2);
	cr_assert_str_eq(c.cors_origins[1], "https://b.example");
	cr_assert_eq(c.rl_claim_per_hour, 7);
	cr_assert_str_eq(c.port_file, "/tmp/p");
	cr_assert(c.require_idempotency_key);
	cr_assert_not(c.rl_fail_open_money);
	cr_assert_not(c.rl_fail_open_other);
	cr_assert_str_eq(c.otel_endpoint, "https://otel.example/v1");
	cr_assert_eq(c.max_body, 2 * 1024 * 1024);
	cr_assert_eq(c.idempotency_ttl_ms, 90000);
	config_release(&c);
}

Test(config, bool_flag_forms)
{
	struct config c;

	load_ok(&c, no_env, AV("--require-idempotency-key", "off"));
	cr_assert_not(c.require_idempotency_key);
	config_release(&c);
	load_ok(&c, ENV("SETTLED_REQUIRE_IDEMPOTENCY_KEY=1"),
		AV("--require-idempotency-key=false", "--workers", "2"));
	cr_assert_not(c.require_idempotency_key);
	cr_assert_eq(c.workers, 2);
	config_release(&c);
	load_ok(&c, no_env, AV("--require-idempotency-key", "--workers", "2"));
	cr_assert(c.require_idempotency_key);
	cr_assert_eq(c.workers, 2);
	config_release(&c);
}

Test(config, log_buffer_can_be_turned_off)
{
	struct config c;

	load_ok(&c, ENV("SETTLED_LOG_BUFFER=0"), 1, no_args);
	cr_assert_not(c.log_buffer);
	config_release(&c);
	load_ok(&c, ENV("SETTLED_LOG_BUFFER=0"), AV("--log-buffer"));
	cr_assert(c.log_buffer);
	config_release(&c);
	load_ok(&c, no_env, AV("--log-buffer=off"));
	cr_assert_not(c.log_buffer);
	config_release(&c);
}

Test(config, empty_flag_resets_to_default)
{
	struct config c;

	load_ok(&c, ENV("SETTLED_ADMIN_TOKEN=t0123456789abcdef0123456789abcdef", "SETTLED_WORKERS=9"),
		AV("--admin-token=", "--workers", ""));
	cr_assert_null(c.admin_token);
	cr_assert_eq(c.workers, 4);
	config_release(&c);
}

Test(config, listen_forms)
{
	static const struct {
		const char *env, *host;
		unsigned port;
	} ok[] = {
		{ "SETTLED_LISTEN=127.0.0.1:8080", "127.0.0.1", 8080 },
		{ "SETTLED_LISTEN=localhost:0", "127.0.0.1", 0 },
		{ "SETTLED_LISTEN=[::1]:65535", "::1", 65535 },
		{ "SETTLED_LISTEN=[::]:443", "::", 443 },
		{ "SETTLED_LISTEN=10.1.2.3:1", "10.1.2.3", 1 },
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct config c;
		char *env[] = { (char *)ok[i].env, NULL };

		load_ok(&c, env, 1, no_args);
		cr_assert_str_eq(c.listen_host, ok[i].host);
		cr_assert_eq(c.listen_port, ok[i].port);
		config_release(&c);
	}
}

Test(config, bad_values_name_variable_and_value)
{
	static const struct {
		const char *kv, *name, *value;
	} bad[] = {
		/* listen */
		{ "SETTLED_LISTEN=8080", "SETTLED_LISTEN", "8080" },
		{ "SETTLED_LISTEN=127.0.0.1", "SETTLED_LISTEN", "127.0.0.1" },
		{ "SETTLED_LISTEN=127.0.0.1:", "SETTLED_LISTEN", "127.0.0.1:" },
		{ "SETTLED_LISTEN=127.0.0.1:65536", "SETTLED_LISTEN", "65536" },
		{ "SETTLED_LISTEN=127.0.0.1:-1", "SETTLED_LISTEN", "-1" },
		{ "SETTLED_LISTEN=127.0.0.1:80x", "SETTLED_LISTEN", "80x" },
		{ "SETTLED_LISTEN=example.com:80", "SETTLED_LISTEN", "example.com" },
		{ "SETTLED_LISTEN=256.0.0.1:80", "SETTLED_LISTEN", "256.0.0.1" },
		{ "SETTLED_LISTEN=::1:80", "SETTLED_LISTEN", "::1:80" },
		{ "SETTLED_LISTEN=[::1]", "SETTLED_LISTEN", "[::1]" },
		{ "SETTLED_LISTEN=[nope]:80", "SETTLED_LISTEN", "nope" },
		{ "SETTLED_LISTEN=:8080", "SETTLED_LISTEN", ":8080" },
		/* sizes */
		{ "SETTLED_MAX_BODY=12q", "SETTLED_MAX_BODY", "12q" },
		{ "SETTLED_MAX_BODY=-1", "SETTLED_MAX_BODY", "-1" },
		{ "SETTLED_MAX_BODY=1.5M", "SETTLED_MAX_BODY", "1.5M" },
		{ "SETTLED_MAX_BODY=0", "SETTLED_MAX_BODY", "0" },
		{ "SETTLED_MAX_BODY=2GiB", "SETTLED_MAX_BODY", "2GiB" },
		{ "SETTLED_MAX_BODY=99999999999999999999k", "SETTLED_MAX_BODY", "9999" },
		{ "SETTLED_MAX_BODY=18014398509481984M", "SETTLED_MAX_BODY", "18014398509481984M" },
		{ "SETTLED_MAX_BODY= 1k", "SETTLED_MAX_BODY", " 1k" },
		/* integers */
		{ "SETTLED_WORKERS=four", "SETTLED_WORKERS", "four" },
		{ "SETTLED_PG_WRITE_CONNS=0", "SETTLED_PG_WRITE_CONNS", "(1..64): 0" },
		{ "SETTLED_PG_WRITE_CONNS=65", "SETTLED_PG_WRITE_CONNS", "65" },
		{ "SETTLED_PG_BATCH_MAX=0", "SETTLED_PG_BATCH_MAX", "(1..1024): 0" },
		{ "SETTLED_PG_BATCH_MAX=1025", "SETTLED_PG_BATCH_MAX", "1025" },
		{ "SETTLED_PG_GATHER_US=100001", "SETTLED_PG_GATHER_US", "(0..100000): 100001" },
		{ "SETTLED_PG_GATHER_US=-1", "SETTLED_PG_GATHER_US", "-1" },
		{ "SETTLED_PG_GATHER_US=2ms", "SETTLED_PG_GATHER_US", "2ms" },
		{ "SETTLED_PG_LOCK_TIMEOUT=0", "SETTLED_PG_LOCK_TIMEOUT", "(1ms..10s): 0" },
		{ "SETTLED_PG_LOCK_TIMEOUT=10001ms", "SETTLED_PG_LOCK_TIMEOUT", "10001ms" },
		{ "SETTLED_PG_LOCK_TIMEOUT=soon", "SETTLED_PG_LOCK_TIMEOUT", "soon" },
		{ "SETTLED_REDIS_TIMEOUT=0", "SETTLED_REDIS_TIMEOUT", "(1ms..1m): 0" },
		{ "SETTLED_REDIS_TIMEOUT=61s", "SETTLED_REDIS_TIMEOUT", "61s" },
		{ "SETTLED_REDIS_TIMEOUT=-1s", "SETTLED_REDIS_TIMEOUT", "-1s" },
		{ "SETTLED_REDIS_TIMEOUT=soon", "SETTLED_REDIS_TIMEOUT", "soon" },
		{ "SETTLED_WORKERS=+4", "SETTLED_WORKERS", "+4" },
		{ "SETTLED_WORKERS=-4", "SETTLED_WORKERS", "-4" },
		{ "SETTLED_WORKERS=4 ", "SETTLED_WORKERS", "4 " },
		{ "SETTLED_WORKERS=0x10", "SETTLED_WORKERS", "0x10" },
		{ "SETTLED_WORKERS=100000", "SETTLED_WORKERS", "100000" },
		{ "SETTLED_TREASURY_FUNDING=9223372036854775808", "SETTLED_TREASURY_FUNDING",
		  "9223372036854775808" },
		{ "SETTLED_TREASURY_FUNDING=99999999999999999999999", "SETTLED_TREASURY_FUNDING",
		  "99999999999999999999999" },
		{ "SETTLED_TREASURY_FUNDING=1e6", "SETTLED_TREASURY_FUNDING", "1e6" },
		{ "SETTLED_COMMISSION_BPS=10001", "SETTLED_COMMISSION_BPS", "10001" },
		{ "SETTLED_CLAIM_MAX=-1", "SETTLED_CLAIM_MAX", "-1" },
		{ "SETTLED_CLAIM_MAX=12.50", "SETTLED_CLAIM_MAX", "12.50" },
		{ "SETTLED_CLAIM_MAX=9223372036854775808", "SETTLED_CLAIM_MAX",
		  "9223372036854775808" },
		{ "SETTLED_JOB_MAX_ATTEMPTS=0", "SETTLED_JOB_MAX_ATTEMPTS", "0" },
		{ "SETTLED_HTTP_THREADS=4294967296", "SETTLED_HTTP_THREADS", "4294967296" },
		{ "SETTLED_MAX_CONNECTIONS=0", "SETTLED_MAX_CONNECTIONS", "0" },
		{ "RL_CLAIM_PER_HOUR=-1", "RL_CLAIM_PER_HOUR", "-1" },
		{ "RL_API_PER_MIN=lots", "RL_API_PER_MIN", "lots" },
		{ "SETTLED_SIM_CONFIRM_MS=200ms", "SETTLED_SIM_CONFIRM_MS", "200ms" },
		/* durations */
		{ "SETTLED_IDEMPOTENCY_TTL=1y", "SETTLED_IDEMPOTENCY_TTL", "1y" },
		{ "SETTLED_IDEMPOTENCY_TTL=-5s", "SETTLED_IDEMPOTENCY_TTL", "-5s" },
		{ "SETTLED_IDEMPOTENCY_TTL=0", "SETTLED_IDEMPOTENCY_TTL", "0" },
		{ "SETTLED_IDEMPOTENCY_TTL=400d", "SETTLED_IDEMPOTENCY_TTL", "400d" },
		{ "SETTLED_IDEMPOTENCY_TTL=1.5h", "SETTLED_IDEMPOTENCY_TTL", "1.5h" },
		{ "SETTLED_STUCK_AFTER=h", "SETTLED_STUCK_AFTER", "h" },
		{ "SETTLED_CONN_TIMEOUT=1500ms", "SETTLED_CONN_TIMEOUT", "1500ms" },
		{ "SETTLED_CONN_TIMEOUT=0", "SETTLED_CONN_TIMEOUT", "0" },
		{ "SETTLED_SHUTDOWN_GRACE=0", "SETTLED_SHUTDOWN_GRACE", "0" },
		{ "SETTLED_SHUTDOWN_GRACE=500ms", "SETTLED_SHUTDOWN_GRACE", "500ms" },
		{ "SETTLED_SHUTDOWN_GRACE=2h", "SETTLED_SHUTDOWN_GRACE", "2h" },
		{ "SETTLED_SHUTDOWN_GRACE=-1s", "SETTLED_SHUTDOWN_GRACE", "-1s" },
		{ "SETTLED_SHUTDOWN_GRACE=soon", "SETTLED_SHUTDOWN_GRACE", "soon" },
		/* booleans */
		{ "SETTLED_REQUIRE_IDEMPOTENCY_KEY=2", "SETTLED_REQUIRE_IDEMPOTENCY_KEY", "2" },
		{ "SETTLED_REQUIRE_IDEMPOTENCY_KEY=yep", "SETTLED_REQUIRE_IDEMPOTENCY_KEY", "yep" },
		/* enums and rates */
		{ "SETTLED_LOG_LEVEL=verbose", "SETTLED_LOG_LEVEL", "verbose" },
		{ "SETTLED_RL_FAIL=maybe", "SETTLED_RL_FAIL", "maybe" },
		{ "SETTLED_SIM_FAIL_RATE=1.5", "SETTLED_SIM_FAIL_RATE", "1.5" },
		{ "SETTLED_SIM_FAIL_RATE=-0.1", "SETTLED_SIM_FAIL_RATE", "-0.1" },
		{ "SETTLED_SIM_FAIL_RATE=nan", "SETTLED_SIM_FAIL_RATE", "nan" },
		{ "SETTLED_SIM_FAIL_RATE=0x1p-1", "SETTLED_SIM_FAIL_RATE", "0x1p-1" },
		{ "SETTLED_SIM_FAIL_RATE=half", "SETTLED_SIM_FAIL_RATE", "half" },
		{ "SETTLED_SIM_FAIL_RATE=.", "SETTLED_SIM_FAIL_RATE", "." },
		/* strings, paths and lists */
		{ "SETTLED_ASSET=US-D", "SETTLED_ASSET", "US-D" },
		{ "SETTLED_ASSET=ABCDEFGHIJKLMNOPQ", "SETTLED_ASSET", "ABCDEFGHIJKLMNOPQ" },
		{ "SETTLED_CORS_ORIGINS=https://ok.example,example.com", "SETTLED_CORS_ORIGINS",
		  "example.com" },
		{ "SETTLED_CORS_ORIGINS=https://a.example/", "SETTLED_CORS_ORIGINS",
		  "https://a.example/" },
		{ "SETTLED_TRUST_PROXY=10.0.0.1,10.0.0.x", "SETTLED_TRUST_PROXY", "10.0.0.x" },
		{ "SETTLED_TRUST_PROXY=::1,::2,::3,::4,::5,::6,::7,::8,::9,::a,::b,::c,::d,::e,::f,"
		  "::10,::11",
		  "SETTLED_TRUST_PROXY", "too many" },
		{ "OTEL_EXPORTER_OTLP_ENDPOINT=otel:4318", "OTEL_EXPORTER_OTLP_ENDPOINT",
		  "otel:4318" },
		/* rails */
		{ "SETTLED_RAIL=eth", "SETTLED_RAIL", "eth" },
		{ "SETTLED_PAYOUT_RAIL=ftp", "SETTLED_PAYOUT_RAIL", "ftp" },
		{ "SETTLED_EVM_CHAIN_ID=-1", "SETTLED_EVM_CHAIN_ID", "-1" },
		{ "SETTLED_EVM_CONFIRMATIONS=0", "SETTLED_EVM_CONFIRMATIONS", "0" },
		{ "SETTLED_EVM_CONFIRMATIONS=10001", "SETTLED_EVM_CONFIRMATIONS", "10001" },
		{ "SETTLED_EVM_DECIMALS=59", "SETTLED_EVM_DECIMALS", "59" },
		{ "SETTLED_EVM_DECIMALS=1.5", "SETTLED_EVM_DECIMALS", "1.5" },
		{ "SETTLED_EVM_TOKEN=0x12", "SETTLED_EVM_TOKEN", "0x12" },
		{ "SETTLED_EVM_TOKEN=0xg000000000000000000000000000000000000000", "SETTLED_EVM_TOKEN",
		  "0xg0" },
		{ "SETTLED_EVM_POLL_INTERVAL=50ms", "SETTLED_EVM_POLL_INTERVAL", "50ms" },
		{ "SETTLED_EVM_RPC_TIMEOUT=10m", "SETTLED_EVM_RPC_TIMEOUT", "10m" },
		{ "SETTLED_EVM_BREAKER_FAILURES=0", "SETTLED_EVM_BREAKER_FAILURES", "0" },
		{ "SETTLED_EVM_BREAKER_COOLDOWN=2h", "SETTLED_EVM_BREAKER_COOLDOWN", "2h" },
		{ "SETTLED_PAYOUT_TIMEOUT=0", "SETTLED_PAYOUT_TIMEOUT", "0" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		env_bad(bad[i].kv, bad[i].name, bad[i].value);
}

Test(config, long_path_rejected)
{
	char kv[1024];

	snprintf(kv, sizeof(kv), "SETTLED_DB=/%0600d", 0);
	env_bad(kv, "SETTLED_DB", "too long");
}

Test(config, control_chars_not_echoed)
{
	const char *const needles[] = { "SETTLED_WORKERS", "4?x", NULL };

	load_bad(ENV("SETTLED_WORKERS=4\nx"), 1, no_args, needles, "\n");
}

Test(config, secrets_never_echoed)
{
	static const struct {
		const char *kv, *name, *secret;
	} bad[] = {
		{ "SETTLED_DATABASE_URL=mysql://root:hunter2@db/x", "SETTLED_DATABASE_URL",
		  "hunter2" },
		{ "SETTLED_REDIS_URL=http://:hunter2@cache", "SETTLED_REDIS_URL", "hunter2" },
		{ "SETTLED_WEBHOOK_SECRET=hunter2,a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p",
		  "SETTLED_WEBHOOK_SECRET", "hunter2" },
		{ "SETTLED_STANDARD_WEBHOOK_SECRET=hunter2,a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p",
		  "SETTLED_STANDARD_WEBHOOK_SECRET", "hunter2" },
		/* too short: refused, and still never echoed */
		{ "SETTLED_ADMIN_TOKEN=hunter2", "SETTLED_ADMIN_TOKEN", "hunter2" },
		{ "SETTLED_ADMIN_TOKEN=hunter2-hunter2-hunter2-hunter2", "SETTLED_ADMIN_TOKEN",
		  "hunter2" },
		{ "SETTLED_EVM_RPC_URLS=https://ok.example/v3/hunter2,ftp://x/hunter2",
		  "SETTLED_EVM_RPC_URLS", "hunter2" },
		{ "SETTLED_PAYOUT_URL=ftp://pay.example/hunter2", "SETTLED_PAYOUT_URL", "hunter2" },
		{ "SETTLED_PAYOUT_SECRET=hunter2", "SETTLED_PAYOUT_SECRET", "hunter2" },
		{ "SETTLED_PAYOUT_SECRET=whsec_hunter2!", "SETTLED_PAYOUT_SECRET", "hunter2" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *env[] = { (char *)bad[i].kv, NULL };
		const char *const needles[] = { bad[i].name, NULL };

		load_bad(env, 1, no_args, needles, bad[i].secret);
	}
	{
		const char *const needles[] = { "--database-url", NULL };

		load_bad(no_env, AV("--database-url", "sqlite://hunter2"), needles, "hunter2");
	}
}

/* An admin token under 32 characters is refused at start (exit 2 in main):
 * the line names the variable and the minimum; 32 is enough. */
Test(config, admin_token_at_least_32_characters)
{
	const char *const needles[] = { "SETTLED_ADMIN_TOKEN", "shorter than 32", NULL };
	const char *const flag_needles[] = { "--admin-token", "shorter than 32", NULL };
	struct config c;

	load_bad(ENV("SETTLED_ADMIN_TOKEN=0123456789012345678901234567890"), 1, no_args, needles,
		 "0123456789");
	load_bad(ENV("SETTLED_ADMIN_TOKEN=x"), 1, no_args, needles, NULL);
	load_bad(no_env, AV("--admin-token", "short"), flag_needles, "short:");
	load_ok(&c, ENV("SETTLED_ADMIN_TOKEN=01234567890123456789012345678901"), 1, no_args);
	cr_assert_str_eq(c.admin_token, "01234567890123456789012345678901");
	config_release(&c);
}

Test(config, rails_need_their_settings)
{
	const char *const evm[] = { "SETTLED_RAIL=evm needs SETTLED_EVM_RPC_URLS and "
				    "SETTLED_EVM_CHAIN_ID", NULL };
	const char *const http[] = { "SETTLED_PAYOUT_RAIL=http needs", NULL };
	struct config c;

	load_bad(ENV("SETTLED_RAIL=evm"), 1, no_args, evm, NULL);
	load_bad(ENV("SETTLED_RAIL=evm", "SETTLED_EVM_CHAIN_ID=1"), 1, no_args, evm, NULL);
	load_bad(ENV("SETTLED_RAIL=evm", "SETTLED_EVM_RPC_URLS=http://a/v3/k"), 1, no_args, evm,
		 "v3/k");
	load_bad(ENV("SETTLED_PAYOUT_RAIL=http", "SETTLED_PAYOUT_URL=https://pay.example/k"), 1,
		 no_args, http, "pay.example");
	load_bad(ENV("SETTLED_PAYOUT_RAIL=http", "SETTLED_PAYOUT_SECRET=whsec_c2VjcmV0"), 1,
		 no_args, http, NULL);
	load_ok(&c, ENV("SETTLED_RAIL=evm", "SETTLED_EVM_CHAIN_ID=31337",
			"SETTLED_EVM_RPC_URLS=http://a:8545/k1,https://b.example/v3/k2",
			"SETTLED_EVM_TOKEN=0xAbCdEf0000000000000000000000000000000001",
			"SETTLED_EVM_DECIMALS=58", "SETTLED_EVM_CONFIRMATIONS=1",
			"SETTLED_PAYOUT_RAIL=http", "SETTLED_PAYOUT_URL=https://pay.example/k",
			"SETTLED_PAYOUT_SECRET=whsec_c2VjcmV0", "SETTLED_EVM_POLL_INTERVAL=100ms"),
		1, no_args);
	cr_assert_str_eq(c.rail, "evm");
	cr_assert_eq(c.n_evm_rpc_urls, 2);
	cr_assert_str_eq(c.evm_rpc_urls[1], "https://b.example/v3/k2");
	cr_assert_eq(c.evm_chain_id, 31337);
	cr_assert_eq(c.evm_decimals, 58);
	cr_assert_eq(c.evm_confirmations, 1);
	cr_assert_eq(c.evm_poll_ms, 100);
	cr_assert_str_eq(c.payout_rail, "http");
	config_release(&c);
	load_ok(&c, no_env, 1, no_args);
	cr_assert_str_eq(c.rail, "sim", "sim stays the default");
	cr_assert_str_eq(c.payout_rail, "sim");
	cr_assert_eq(c.evm_confirmations, 12);
	cr_assert_eq(c.evm_breaker_failures, 3);
	cr_assert_eq(c.evm_breaker_cooldown_ms, 30000);
	cr_assert_eq(c.evm_rpc_timeout_ms, 5000);
	cr_assert_null(c.evm_token);
	config_release(&c);
}

Test(config, bad_flags)
{
	const char *const unknown[] = { "unknown flag", "--nope", NULL };
	const char *const unknown_eq[] = { "unknown flag", "--nope", NULL };
	const char *const missing[] = { "--listen", "missing value", NULL };
	const char *const positional[] = { "unexpected argument", "serve", NULL };
	const char *const flag_value[] = { "--workers", "many", NULL };
	const char *const single_dash[] = { "unexpected argument", "-listen", NULL };

	load_bad(no_env, AV("--nope"), unknown, NULL);
	load_bad(no_env, AV("--nope=secretvalue"), unknown_eq,
		 "secretvalue");
	load_bad(no_env, AV("--listen"), missing, NULL);
	load_bad(no_env, AV("serve"), positional, NULL);
	load_bad(no_env, AV("--workers=many"), flag_value, NULL);
	load_bad(no_env, AV("-listen", "x"), single_dash, NULL);
	/* A flag name is exact: no prefixes, no env spelling. */
	load_bad(no_env, AV("--list=1.2.3.4:1"), NULL, NULL);
	load_bad(no_env, AV("--SETTLED_LISTEN=1.2.3.4:1"), NULL, NULL);
	load_bad(no_env, AV("--"), NULL, NULL);
}

Test(config, cross_check_delays)
{
	const char *const needles[] = { "SETTLED_JOB_BASE_DELAY", "SETTLED_JOB_MAX_DELAY", NULL };

	load_bad(ENV("SETTLED_JOB_BASE_DELAY=1h", "SETTLED_JOB_MAX_DELAY=10m"), 1, no_args,
		 needles, NULL);
}

Test(config, help)
{
	struct config c;
	bool help = false;

	/* --help wins even over a bad environment and an unknown flag. */
	cr_assert_eq(config_load(&c, ENV("SETTLED_WORKERS=bad"), AV("--workers", "2", "--help"),
				 &help, NULL),
		     ST_OK);
	cr_assert(help);
	cr_assert_eq(c.workers, 4);
	config_release(&c);

	help = false;
	cr_assert_eq(config_load(&c, no_env, AV("--nope", "-h"),
				 &help, NULL),
		     ST_OK);
	cr_assert(help);
	config_release(&c);
}

/* The help text lists every option with env name, flag and default; each
 * flag is the env name lower-cased, SETTLED_ dropped, '_' -> '-'. */
Test(config, help_text_lists_every_option)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	static const char *const envs[] = {
		"SETTLED_LISTEN", "SETTLED_PORT_FILE", "SETTLED_MAX_BODY", "SETTLED_HTTP_THREADS",
		"SETTLED_CONN_TIMEOUT", "SETTLED_SHUTDOWN_GRACE", "SETTLED_MAX_CONNECTIONS", "SETTLED_CORS_ORIGINS",
		"SETTLED_TRUST_PROXY", "SETTLED_DB", "SETTLED_DATABASE_URL", "SETTLED_REDIS_URL",
		"SETTLED_REDIS_PREFIX", "SETTLED_REDIS_TIMEOUT", "SETTLED_PG_WRITE_CONNS", "SETTLED_PG_BATCH_MAX",
		"SETTLED_PG_GATHER_US", "SETTLED_PG_LOCK_TIMEOUT", "SETTLED_ADMIN_TOKEN", "SETTLED_WEBHOOK_SECRET", "SETTLED_STRIPE_WEBHOOK_SECRET",
		"SETTLED_STANDARD_WEBHOOK_SECRET", "SETTLED_WORKERS", "SETTLED_LOG_LEVEL", "SETTLED_LOG_BUFFER",
		"SETTLED_IDEMPOTENCY_TTL", "SETTLED_REQUIRE_IDEMPOTENCY_KEY",
		"SETTLED_TREASURY_FUNDING", "SETTLED_ASSET", "SETTLED_COMMISSION_BPS",
		"SETTLED_SIM_CONFIRM_MS", "SETTLED_SIM_FAIL_RATE", "SETTLED_STUCK_AFTER",
		"SETTLED_HOLD_TIMEOUT", "SETTLED_CLAIM_MAX", "SETTLED_JOB_BASE_DELAY", "SETTLED_JOB_MAX_DELAY",
		"SETTLED_JOB_MAX_ATTEMPTS", "SETTLED_JOB_LEASE", "SETTLED_API_KEY_GRACE",
		"OTEL_EXPORTER_OTLP_ENDPOINT", "SETTLED_RAIL", "SETTLED_EVM_RPC_URLS",
		"SETTLED_EVM_CHAIN_ID", "SETTLED_EVM_CONFIRMATIONS", "SETTLED_EVM_TOKEN",
		"SETTLED_EVM_DECIMALS", "SETTLED_EVM_POLL_INTERVAL", "SETTLED_EVM_RPC_TIMEOUT",
		"SETTLED_EVM_BREAKER_FAILURES", "SETTLED_EVM_BREAKER_COOLDOWN", "SETTLED_PAYOUT_RAIL",
		"SETTLED_PAYOUT_URL", "SETTLED_PAYOUT_SECRET", "SETTLED_PAYOUT_TIMEOUT",
		"RL_REGISTER_PER_HOUR", "RL_REGISTER_PER_DAY_WALLET", "RL_CLAIM_PER_HOUR",
		"RL_WEBHOOK_PER_MIN", "RL_HEALTH_PER_MIN", "RL_API_PER_MIN", "RL_AUTH_FAIL_PER_MIN",
		"SETTLED_RL_FAIL",
	};
	size_t n_opts = 0;

	cr_assert_not_null(f);
	config_help(f);
	fclose(f);
	cr_assert_not_null(strstr(text, "--help"));
	cr_assert_not_null(strstr(text, "[default: 127.0.0.1:8080]"));
	cr_assert_not_null(strstr(text, "[default: 100000000]"));
	cr_assert_not_null(strstr(text, "[default: 1MiB]"));
	for (size_t i = 0; i < sizeof(envs) / sizeof(envs[0]); i++) {
		char want[128], flag[80];
		const char *e = envs[i];
		size_t k = 0;

		if (!strncmp(e, "SETTLED_", 8))
			e += 8;
		for (; *e && k < sizeof(flag) - 1; e++) {
			if (*e == '_')
				flag[k++] = '-';
			else if (*e >= 'A' && *e <= 'Z')
				flag[k++] = (char)(*e - 'A' + 'a');
			else
				flag[k++] = *e;
		}
		flag[k] = '\0';
		snprintf(want, sizeof(want), "  --%s ", flag);
		cr_expect_not_null(strstr(text, want), "help lacks %s", want);
		snprintf(want, sizeof(want), "(%s)\n", envs[i]);
		cr_expect_not_null(strstr(text, want), "help lacks %s", want);
	}
	/* ... and nothing else: every line naming a flag with its variable
	 * ("  --flag ...  (VAR)") is one of them (the commands --version,
	 * backup and restore have no variable). */
	for (const char *p = text; (p = strstr(p, "\n  --")); p++) {
		const char *eol = strchr(p + 1, '\n');

		if (eol && eol[-1] == ')')
			n_opts++;
	}
	cr_assert_eq(n_opts, sizeof(envs) / sizeof(envs[0]));
	free(text);
}

/* Wraps config_describe in braces and parses it. */
static json_t *describe(const struct config *c, char **raw_out)
{
	struct buf out = BUF_INIT(1 << 16);
	json_error_t e;
	json_t *j;

	cr_assert_eq(buf_puts(&out, "{"), ST_OK);
	cr_assert_eq(config_describe(c, &out), ST_OK);
	cr_assert_eq(buf_puts(&out, "}"), ST_OK);
	j = json_loads(out.ptr, 0, &e);
	cr_assert_not_null(j, "describe is not JSON members (%s): %s", e.text, out.ptr);
	*raw_out = buf_detach(&out, NULL);
	return j;
}

Test(config, describe_defaults)
{
	struct config c;
	char *raw;
	json_t *j;

	load_ok(&c, no_env, 1, no_args);
	j = describe(&c, &raw);
	cr_assert_eq(raw[1], '"', "leading comma: %s", raw);
	cr_assert_str_eq(json_string_value(json_object_get(j, "listen")), "127.0.0.1:8080");
	cr_assert_str_eq(json_string_value(json_object_get(j, "db")), "./settled.db");
	cr_assert_eq(json_integer_value(json_object_get(j, "max_body")), 1048576);
	cr_assert_str_eq(json_string_value(json_object_get(j, "idempotency_ttl")), "1d");
	cr_assert_str_eq(json_string_value(json_object_get(j, "conn_timeout")), "30s");
	cr_assert_str_eq(json_string_value(json_object_get(j, "log_level")), "info");
	cr_assert_str_eq(json_string_value(json_object_get(j, "rl_fail")), "default");
	cr_assert_eq(json_integer_value(json_object_get(j, "treasury_funding")), 100000000);
	cr_assert_eq(json_integer_value(json_object_get(j, "rl_register_per_hour")), 5);
	cr_assert(json_is_false(json_object_get(j, "require_idempotency_key")));
	cr_assert(json_is_true(json_object_get(j, "log_buffer")));
	cr_assert(json_is_null(json_object_get(j, "database_url")));
	cr_assert(json_is_null(json_object_get(j, "admin_token")));
	cr_assert(json_is_null(json_object_get(j, "webhook_secret")));
	cr_assert(json_is_null(json_object_get(j, "otel_exporter_otlp_endpoint")));
	cr_assert(json_is_array(json_object_get(j, "cors_origins")));
	cr_assert_str_eq(json_string_value(json_object_get(j, "job_lease")), "30s");
	cr_assert_str_eq(json_string_value(json_object_get(j, "rail")), "sim");
	cr_assert(json_is_null(json_object_get(j, "evm_rpc_urls")));
	cr_assert_eq(json_integer_value(json_object_get(j, "claim_max")), 0);
	cr_assert_eq(json_integer_value(json_object_get(j, "pg_write_conns")), 4);
	cr_assert_eq(json_integer_value(json_object_get(j, "pg_batch_max")), 128);
	cr_assert_str_eq(json_string_value(json_object_get(j, "pg_lock_timeout")), "10ms");
	cr_assert_eq(json_integer_value(json_object_get(j, "pg_gather_us")), 2000);
	cr_assert_str_eq(json_string_value(json_object_get(j, "redis_timeout")), "200ms");
	cr_assert_str_eq(json_string_value(json_object_get(j, "shutdown_grace")), "30s");
	cr_assert_eq(json_object_size(j), 63);
	json_decref(j);
	free(raw);
	config_release(&c);
}

Test(config, describe_redacts_secrets)
{
	struct config c;
	char *raw;
	json_t *j;
	char **env = ENV(
		"SETTLED_DATABASE_URL=postgresql://app:S3cretPW@db:5432/settled?sslmode=require&password=S3cretQ",
		"SETTLED_REDIS_URL=redis://default:R3disPW@cache:6380/0",
		"SETTLED_ADMIN_TOKEN=AdminTok3n-0123456789abcdef0123456789", "SETTLED_WEBHOOK_SECRET=WhSecretA,WhSecretB",
		"SETTLED_STRIPE_WEBHOOK_SECRET=whsec_Str1pe",
		"SETTLED_STANDARD_WEBHOOK_SECRET=whsec_St4ndard",
		"OTEL_EXPORTER_OTLP_ENDPOINT=https://u:Ot3lPW@otel.example:4318",
		"SETTLED_LISTEN=[::1]:9000", "SETTLED_CORS_ORIGINS=https://a.example",
		"SETTLED_SIM_FAIL_RATE=0.5", "SETTLED_RL_FAIL=closed", "SETTLED_JOB_BASE_DELAY=1500ms",
		"SETTLED_EVM_RPC_URLS=https://rpc.example/v3/RpcK3y,http://u:RpcPW@b:8545/",
		"SETTLED_PAYOUT_URL=https://pay.example/PayK3y", "SETTLED_PAYOUT_SECRET=whsec_UGF5U2Vj");
	static const char *const secrets[] = { "S3cretPW", "S3cretQ", "R3disPW", "AdminTok3n",
					       "WhSecret", "Str1pe", "St4ndard", "Ot3lPW",
					       "RpcK3y", "RpcPW", "PayK3y", "UGF5U2Vj" };

	load_ok(&c, env, 1, no_args);
	j = describe(&c, &raw);
	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
		cr_assert_null(strstr(raw, secrets[i]), "%s leaked: %s", secrets[i], raw);
	cr_assert_str_eq(json_string_value(json_object_get(j, "database_url")),
			 "postgresql://app:***@db:5432/settled?sslmode=require&password=***");
	cr_assert_str_eq(json_string_value(json_object_get(j, "redis_url")),
			 "redis://default:***@cache:6380/0");
	cr_assert_str_eq(json_string_value(json_object_get(j, "otel_exporter_otlp_endpoint")),
			 "https://u:***@otel.example:4318");
	cr_assert_str_eq(json_string_value(json_object_get(j, "admin_token")), "[redacted]");
	cr_assert_str_eq(json_string_value(json_object_get(j, "webhook_secret")), "[redacted]");
	cr_assert_str_eq(json_string_value(json_object_get(j, "stripe_webhook_secret")),
			 "[redacted]");
	cr_assert_str_eq(json_string_value(json_object_get(j, "standard_webhook_secret")),
			 "[redacted]");
	cr_assert_str_eq(json_string_value(json_object_get(j, "evm_rpc_urls")), "[redacted]");
	cr_assert_str_eq(json_string_value(json_object_get(j, "payout_url")), "[redacted]");
	cr_assert_str_eq(json_string_value(json_object_get(j, "payout_secret")), "[redacted]");
	cr_assert_str_eq(json_string_value(json_object_get(j, "listen")), "[::1]:9000");
	cr_assert_str_eq(json_string_value(
				 json_array_get(json_object_get(j, "cors_origins"), 0)),
			 "https://a.example");
	cr_assert_float_eq(json_real_value(json_object_get(j, "sim_fail_rate")), 0.5, 1e-12);
	cr_assert_str_eq(json_string_value(json_object_get(j, "rl_fail")), "closed");
	cr_assert_str_eq(json_string_value(json_object_get(j, "job_base_delay")), "1500ms");
	json_decref(j);
	free(raw);
	config_release(&c);
}

Test(config, describe_url_edge_cases)
{
	static const struct {
		const char *kv, *want, *secret;
	} cases[] = {
		/* The last '@' ends the user part: an unescaped '@' or '/' over-masks. */
		{ "SETTLED_DATABASE_URL=postgres://u:p@ss/w@db/x", "postgres://u:***@db/x", "ss/w" },
		{ "SETTLED_REDIS_URL=redis://:onlypass@cache:6379", "redis://:***@cache:6379",
		  "onlypass" },
		{ "SETTLED_REDIS_URL=redis://lonepass@cache", "redis://***@cache", "lonepass" },
		{ "SETTLED_DATABASE_URL=postgres://db/x?user=a&PassWord=qq1", 
		  "postgres://db/x?user=a&PassWord=***", "qq1" },
		{ "SETTLED_REDIS_URL=redis://cache:6379/0", "redis://cache:6379/0", NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config c;
		char *env[] = { (char *)cases[i].kv, NULL };
		const char *key = strstr(cases[i].kv, "REDIS") ? "redis_url" : "database_url";
		char *raw;
		json_t *j;

		load_ok(&c, env, 1, no_args);
		j = describe(&c, &raw);
		cr_expect_str_eq(json_string_value(json_object_get(j, key)), cases[i].want);
		if (cases[i].secret)
			cr_expect_null(strstr(raw, cases[i].secret), "%s", raw);
		json_decref(j);
		free(raw);
		config_release(&c);
	}
}

Test(config, describe_over_cap_leaves_out_unchanged)
{
	struct config c;
	struct buf out = BUF_INIT(100);

	load_ok(&c, no_env, 1, no_args);
	cr_assert_eq(buf_puts(&out, "{"), ST_OK);
	cr_assert_eq(config_describe(&c, &out), ST_TOO_LARGE);
	cr_assert_str_eq(out.ptr, "{");
	buf_release(&out);
	config_release(&c);
}

Test(config, parse_duration)
{
	static const struct {
		const char *s;
		int64_t ms;
	} ok[] = {
		{ "250ms", 250 }, { "90s", 90000 }, { "15m", 900000 }, { "24h", 86400000 },
		{ "7d", 604800000 }, { "30", 30000 }, { "0", 0 }, { "0ms", 0 }, { "007s", 7000 },
		{ "9223372036854775807ms", INT64_MAX }, { "9223372036854775s", 9223372036854775000 },
	};
	static const char *const bad[] = {
		"", "s", "ms", "-1s", "+1s", " 1s", "1s ", "1 s", "1.5h", "1h30m", "1S", "1w", "1y",
		"10sec", "0x10", "9223372036854775808ms", "9223372036854776s", "106751991167301d",
		"99999999999999999999", "1e3",
	};
	int64_t ms;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ms = -1;
		cr_expect_eq(config_parse_duration(ok[i].s, &ms), ST_OK, "%s", ok[i].s);
		cr_expect_eq(ms, ok[i].ms, "%s -> %lld", ok[i].s, (long long)ms);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ms = 42;
		cr_expect_eq(config_parse_duration(bad[i], &ms), ST_INVALID, "%s", bad[i]);
		cr_expect_eq(ms, 42, "out-parameter set on failure for %s", bad[i]);
	}
	cr_expect_eq(config_parse_duration(NULL, &ms), ST_INVALID);
}

Test(config, sizes)
{
	static const struct {
		const char *kv;
		size_t want;
	} ok[] = {
		{ "SETTLED_MAX_BODY=1", 1 },           { "SETTLED_MAX_BODY=4096", 4096 },
		{ "SETTLED_MAX_BODY=512k", 524288 },    { "SETTLED_MAX_BODY=512K", 524288 },
		{ "SETTLED_MAX_BODY=64KiB", 65536 },    { "SETTLED_MAX_BODY=1m", 1048576 },
		{ "SETTLED_MAX_BODY=1M", 1048576 },     { "SETTLED_MAX_BODY=1MiB", 1048576 },
		{ "SETTLED_MAX_BODY=2MB", 2097152 },    { "SETTLED_MAX_BODY=1024M", 1073741824 },
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct config c;
		char *env[] = { (char *)ok[i].kv, NULL };

		load_ok(&c, env, 1, no_args);
		cr_expect_eq(c.max_body, ok[i].want, "%s -> %zu", ok[i].kv, c.max_body);
		config_release(&c);
	}
}

Test(config, booleans_and_levels)
{
	static const char *const yes[] = { "1", "true", "TRUE", "yes", "on", "On" };
	static const char *const no[] = { "0", "false", "no", "off", "OFF" };
	static const char *const levels[] = { "debug", "info", "warn", "error" };

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]) + sizeof(no) / sizeof(no[0]); i++) {
		struct config c;
		bool want = i < sizeof(yes) / sizeof(yes[0]);
		char kv[64], *env[] = { kv, NULL };

		snprintf(kv, sizeof(kv), "SETTLED_REQUIRE_IDEMPOTENCY_KEY=%s",
			 want ? yes[i] : no[i - sizeof(yes) / sizeof(yes[0])]);
		load_ok(&c, env, 1, no_args);
		cr_expect_eq(c.require_idempotency_key, want, "%s", kv);
		config_release(&c);
	}
	for (int i = 0; i < 4; i++) {
		struct config c;
		char kv[64], *env[] = { kv, NULL };

		snprintf(kv, sizeof(kv), "SETTLED_LOG_LEVEL=%s", levels[i]);
		load_ok(&c, env, 1, no_args);
		cr_expect_eq(c.log_level, i);
		config_release(&c);
	}
}

Test(config, list_limits)
{
	struct config c;

	load_ok(&c, ENV("SETTLED_WEBHOOK_SECRET=a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p"), 1, no_args);
	cr_assert_eq(c.n_webhook_secrets, CONFIG_MAX_LIST);
	cr_assert_str_eq(c.webhook_secrets[15], "p");
	config_release(&c);
	/* A flag replaces the environment's list, it does not append to it. */
	load_ok(&c, ENV("SETTLED_TRUST_PROXY=10.0.0.1,10.0.0.2"),
		AV("--trust-proxy", " 10.0.0.3 "));
	cr_assert_eq(c.n_trust_proxy, 1);
	cr_assert_str_eq(c.trust_proxy[0], "10.0.0.3");
	config_release(&c);
	load_ok(&c, ENV("SETTLED_CORS_ORIGINS= , ,"), 1, no_args);
	cr_assert_eq(c.n_cors_origins, 0);
	config_release(&c);
}

Test(config, sim_fail_rate_bounds)
{
	static const struct {
		const char *kv;
		double want;
	} ok[] = {
		{ "SETTLED_SIM_FAIL_RATE=0", 0 },     { "SETTLED_SIM_FAIL_RATE=1", 1 },
		{ "SETTLED_SIM_FAIL_RATE=0.05", 0.05 }, { "SETTLED_SIM_FAIL_RATE=.5", 0.5 },
		{ "SETTLED_SIM_FAIL_RATE=1.0", 1 },
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct config c;
		char *env[] = { (char *)ok[i].kv, NULL };

		load_ok(&c, env, 1, no_args);
		cr_expect_float_eq(c.sim_fail_rate, ok[i].want, 1e-12, "%s", ok[i].kv);
		config_release(&c);
	}
}

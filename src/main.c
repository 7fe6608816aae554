/* main.c — flags, wiring and signals. No business logic lives here.
 *
 * Start-up order matters: signals are blocked before any thread starts, so
 * SIGTERM/SIGINT reach only the main thread's sigtimedwait(); the store is
 * open and migrated before the server accepts a connection; the port file is
 * written only once the server is listening (tests wait for it). */
#include <errno.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "account.h"
#include "backup.h"
#include "config.h"
#include "hex.h"
#include "http.h"
#include "idempotency.h"
#include "intent.h"
#include "ledger.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "route_table.h"
#include "settled.h"
#include "rail.h"
#include "store.h"
#include "storelock.h"
#include "ticker.h"
#include "trace.h"
#include "version.h"
#include "webhook.h"
#include "worker.h"
#include "banned.h"

extern char **environ;

/* The fd limit bounds how many connections we can hold: raise the soft
 * limit to the hard one; if that is still short of SETTLED_MAX_CONNECTIONS
 * plus what the store and workers need, lower the connection limit to fit
 * (refusing connections beats failing accept() and open() at random) and
 * say so. */
#define FD_RESERVE 256

static void fit_fd_limit(const struct logger *log, unsigned *conn_limit)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) || getrlimit(RLIMIT_NOFILE, &rl))
			log_msg(log, LOG_WARN, "cannot raise the open-file limit: %s", strerror(errno));
	}
	if (rl.rlim_cur >= (rlim_t)*conn_limit + FD_RESERVE)
		return;
	log_msg(log, LOG_WARN,
		"open-file limit %llu is below SETTLED_MAX_CONNECTIONS=%u + %d; serving at most %llu "
		"connections (raise it with ulimit -n)",
		(unsigned long long)rl.rlim_cur, *conn_limit, FD_RESERVE,
		rl.rlim_cur > FD_RESERVE * 2 ? (unsigned long long)(rl.rlim_cur - FD_RESERVE) : 64ULL);
	*conn_limit = rl.rlim_cur > FD_RESERVE * 2 ? (unsigned)(rl.rlim_cur - FD_RESERVE) : 64;
}

static void policies_init(struct settled *app)
{
	const struct config *c = app->cfg;
	const int64_t min = 60 * 1000, hour = 60 * min, day = 24 * hour;

	/* Fail mode: health and other reads fail open, money-moving routes
	 * closed, unless SETTLED_RL_FAIL says otherwise (SPEC section 5). */
	app->policies[RLP_REGISTER_IP] = (struct rl_policy){ "register_ip", c->rl_register_per_hour, hour, c->rl_fail_open_money };
	app->policies[RLP_REGISTER_WALLET] = (struct rl_policy){ "register_wallet", c->rl_register_per_day_wallet, day, c->rl_fail_open_money };
	app->policies[RLP_CLAIM_WALLET] = (struct rl_policy){ "claim_wallet", c->rl_claim_per_hour, hour, c->rl_fail_open_money };
	app->policies[RLP_WEBHOOK] = (struct rl_policy){ "webhook", c->rl_webhook_per_min, min, c->rl_fail_open_money };
	app->policies[RLP_HEALTH] = (struct rl_policy){ "health", c->rl_health_per_min, min, c->rl_fail_open_other };
	app->policies[RLP_API] = (struct rl_policy){ "api", c->rl_api_per_min, min, c->rl_fail_open_other };
	/* Open by default: a limiter outage must not lock everyone out. */
	app->policies[RLP_AUTH_FAIL] = (struct rl_policy){ "auth_fail", c->rl_auth_fail_per_min, min, c->rl_fail_open_other };
}

/* Scale-out rate limits (SPEC section 1): the Redis backend. Redis being
 * down at start is not fatal: decisions follow SETTLED_RL_FAIL and
 * /health/ready says 503 until the pool reconnects. A bad URL is (config
 * validated it already, so this is out of memory or a bug). One pooled
 * connection per HTTP thread, plus one for readiness probes. */
static enum st_rc rate_limits_in_redis(struct settled *app)
{
	const struct config *c = app->cfg;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned threads = c->http_threads ? c->http_threads : cores > 0 ? (unsigned)cores : 1;
	struct rl_redis_options o = { .prefix = c->redis_prefix, .pool_size = threads + 1,
				      .connect_timeout_ms = (int)c->redis_timeout_ms,
				      .command_timeout_ms = (int)c->redis_timeout_ms };
	struct buf err = BUF_INIT(512);

	if (o.pool_size > 64)
		o.pool_size = 64;
	app->rl = rl_redis_new(c->redis_url, &o, &err);
	if (!app->rl) {
		log_msg(&app->log, LOG_ERROR, "cannot set up the Redis rate limiter: %s", err.ptr);
		buf_release(&err);
		return ST_INVALID;
	}
	buf_reset(&err);
	if (rl_ping(app->rl, &err))
		log_msg(&app->log, LOG_WARN,
			"Redis is not reachable yet (%s); rate-limited routes follow SETTLED_RL_FAIL "
			"until it is", err.ptr);
	buf_release(&err);
	return ST_OK;
}

static enum st_rc write_port_file(const char *path, uint16_t port)
{
	char tmp[600];
	FILE *f;

	/* Written to a temp name and renamed, so a reader never sees half a number. */
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return ST_UNAVAILABLE;
	fprintf(f, "%u\n", port);
	if (fclose(f) || rename(tmp, path))
		return ST_UNAVAILABLE;
	return ST_OK;
}

struct bootstrap {
	int64_t treasury_funding;
	bool funded;
};

/* System accounts, then the treasury's one-time funding (SPEC section 6):
 * idempotent, so every start may run it. */
/* The store's writer calls this for each batch refused for want of storage. */
static void count_write_fault(void *arg, enum store_write_fault f)
{
	struct settled *app = arg;
	const char *const lv[] = { store_write_fault_str(f) };

	metrics_inc(app->m.store_write_faults, lv);
}

/* The store's writer calls this after each COMMIT that made units durable. */
static void count_commit(void *arg, unsigned units)
{
	struct settled *app = arg;

	metric_observe(app->m.store_commit_units, units);
}

/* The store's writer calls this each time it runs a unit again. */
static void count_retry(void *arg, enum store_retry_cause c)
{
	struct settled *app = arg;
	const char *const lv[] = { store_retry_cause_str(c) };

	metrics_inc(app->m.store_unit_retries, lv);
}

/* A PostgreSQL writer calls this when it takes units it held back to
 * gather, saying whether the wait ran to its bound. */
static void count_gather(void *arg, bool deadline)
{
	struct settled *app = arg;
	const char *const lv[] = { deadline ? "deadline" : "woken" };

	metrics_inc(app->m.store_gather_waits, lv);
}

static enum st_rc bootstrap_unit(struct tx *tx, void *arg)
{
	struct bootstrap *b = arg;
	enum st_rc rc = account_ensure_system(tx);

	return rc ? rc : ledger_fund_treasury(tx, b->treasury_funding, &b->funded);
}

/* Tracing (trace.h) when OTEL_EXPORTER_OTLP_ENDPOINT is set: the tracer
 * exists before the first span can start and is freed (flushing what it can
 * within 2 s) after the last producer, the store, has stopped. */
static enum st_rc tracing_start(struct settled *app, struct buf *err)
{
	struct trace_options o = { .endpoint = app->cfg->otel_endpoint, .service_name = "settled",
				   .instance_id = app->instance_id, .metrics = app->metrics,
				   .log = &app->log };
	enum st_rc rc;

	if (!app->cfg->otel_endpoint)
		return ST_OK;
	rc = trace_new(&o, &app->tracer, err);
	if (!rc)
		rc = trace_start(app->tracer, err);
	return rc;
}

/* Periodic housekeeping (idempotency expiry, hold expiry, the job and
 * intent sweepers, reconciliation) runs on the ticker thread: ticker.h. */

/* settled migrate [server flags]: applies the pending migrations to the
 * configured store and exits, so that a deployment can migrate once before
 * it starts a fleet of instances (each would otherwise migrate at start,
 * serialised by the backend's lock). Opening the store is what migrates. */
static int migrate_main(int argc, char **argv, char **envp)
{
	struct config cfg;
	struct logger log;
	struct buf err = BUF_INIT(1024);
	struct store *store = NULL;
	struct storelock *lock = NULL;
	bool help = false;
	int code = 1;

	argv[1] = argv[0]; /* config_load sees the server's own flags */
	if (config_load(&cfg, envp, argc - 1, argv + 1, &help, &err)) {
		fprintf(stderr, "settled migrate: %s\n", err.ptr);
		code = 2;
		goto out;
	}
	if (help) {
		printf("usage: settled migrate [--db PATH]\n"
		       "Applies pending migrations to the store that SETTLED_DATABASE_URL (PostgreSQL)\n"
		       "or --db / SETTLED_DB (SQLite) names, then exits.\n");
		code = 0;
		goto out;
	}
	log_init(&log, STDOUT_FILENO, (enum log_level)cfg.log_level);
	/* Not beside a server on an embedded store: a newer binary's
	 * migrations would change the schema under the running one's
	 * statements and code (a server migrates its store itself at start).
	 * And while this runs, a server started on the store refuses. */
	buf_reset(&err);
	if (!cfg.database_url && storelock_take(cfg.db_path, "settled migrate", &lock, &err)) {
		fprintf(stderr, "settled migrate: %s\n", err.ptr);
		goto out;
	}
	{
		struct store_options so = { .sqlite_path = cfg.db_path, .database_url = cfg.database_url,
					    .read_conns = 1, .write_conns = 1, .log = &log };

		buf_reset(&err);
		if (store_open(&so, &store, &err)) {
			fprintf(stderr, "settled migrate: %s\n", err.ptr);
			goto out;
		}
	}
	store_close(store);
	code = 0;
out:
	storelock_free(lock); /* after the store is closed */
	config_release(&cfg);
	buf_release(&err);
	return code;
}

static int serve(struct settled *app, const sigset_t *sigs)
{
	const struct config *cfg = app->cfg;
	struct store_options so = { .sqlite_path = cfg->db_path, .database_url = cfg->database_url, .log = &app->log,
				   .rand = &app->rand, .write_conns = cfg->pg_write_conns,
				   .batch_max = cfg->pg_batch_max, .lock_timeout_ms = cfg->pg_lock_timeout_ms,
				   /* 0 in the configuration is "never wait", not the default */
				   .gather_us = cfg->pg_gather_us ? (int64_t)cfg->pg_gather_us : -1 };
	struct buf err = BUF_INIT(1024), desc = BUF_INIT(16384);
	struct bootstrap boot = { .treasury_funding = cfg->treasury_funding };
	struct storelock *lock = NULL;
	int exit_code = 1;
	enum st_rc rc;

	config_describe(cfg, &desc);
	{
		struct buf f = BUF_INIT(20000);

		buf_putc(&f, ',');
		buf_append(&f, desc.ptr, desc.len);
		log_emit(&app->log, LOG_INFO, NULL, NULL, "starting settled", &f);
		buf_release(&f);
	}

	/* Embedded mode: one process on the store (storelock.h), checked
	 * before anything touches it: no migration, no sweep of "orphaned"
	 * running jobs that are in fact another live server's, no listen. */
	if (!cfg->database_url) {
		rc = storelock_take(cfg->db_path, "settled", &lock, &err);
		if (rc) {
			log_msg(&app->log, LOG_ERROR, "cannot start: %s", err.ptr);
			goto out;
		}
	}
	rc = tracing_start(app, &err);
	if (rc) {
		log_msg(&app->log, LOG_ERROR, "cannot start tracing: %s", err.ptr);
		goto out;
	}
	rc = store_open(&so, &app->store, &err);
	if (rc) {
		log_msg(&app->log, LOG_ERROR, "cannot open the store: %s", err.ptr);
		goto out;
	}
	/* Set before the first unit: the writer reads it after taking a unit
	 * from its locked queue, which orders this store before that read. */
	app->store->on_write_fault = count_write_fault;
	app->store->on_write_fault_arg = app;
	app->store->on_commit = count_commit;
	app->store->on_commit_arg = app;
	app->store->on_retry = count_retry;
	app->store->on_retry_arg = app;
	app->store->on_gather = count_gather;
	app->store->on_gather_arg = app;
	app->store->clock_ms = app->clock_ms;
	app->store->clock_arg = app->clock_arg;
	rc = store_run(app->store, bootstrap_unit, &boot);
	if (rc) {
		log_msg(&app->log, LOG_ERROR, "cannot create the system accounts: %s", st_rc_str(rc));
		goto out;
	}
	if (boot.funded)
		log_msg(&app->log, LOG_INFO, "treasury funded with %lld base units",
			(long long)boot.treasury_funding);
	/* Jobs and housekeeping start once the store is ready, before the
	 * first request can enqueue anything. */
	rc = rail_new(cfg, app->metrics, &app->log, &app->rail, &err);
	if (rc) {
		log_msg(&app->log, LOG_ERROR, "cannot create the settlement rail: %s", err.ptr);
		goto out;
	}
	rc = rail_payout_new(cfg, &app->payout_rail, &err);
	if (rc) {
		log_msg(&app->log, LOG_ERROR, "cannot create the payout rail: %s", err.ptr);
		goto out;
	}
	rc = worker_pool_start(app, &app->workers, &err);
	if (rc) {
		log_msg(&app->log, LOG_ERROR, "cannot start the job workers: %s", err.ptr);
		goto out;
	}
	rc = ticker_start(app, &app->ticker, &err);
	if (rc) {
		log_msg(&app->log, LOG_ERROR, "cannot start the ticker: %s", err.ptr);
		goto out;
	}
	rc = http_start(app, settled_routes, settled_nroutes, &app->http, &err);
	if (rc) {
		log_msg(&app->log, LOG_ERROR, "cannot start the HTTP server: %s", err.ptr);
		goto out;
	}
	if (cfg->port_file[0] && write_port_file(cfg->port_file, http_port(app->http))) {
		log_msg(&app->log, LOG_ERROR, "cannot write the port file %s", cfg->port_file);
		goto out;
	}
	log_msg(&app->log, LOG_INFO, "listening on %s:%u (%s store)", cfg->listen_host,
		http_port(app->http), app->store->ops->name);

	for (;;) {
		struct timespec tick = { 1, 0 };
		int sig = sigtimedwait(sigs, NULL, &tick);

		if (sig == SIGTERM || sig == SIGINT) {
			/* Refusing new requests before saying so: whoever reads
			 * this line (an operator, a test) may count on a request
			 * sent after it being answered 503. Logged first, the
			 * line could leave (the log flusher is another thread)
			 * while this thread waits for a core, and a request
			 * sent meanwhile was served. */
			atomic_store(&app->stopping, true);
			log_msg(&app->log, LOG_INFO, "signal %d: finishing in-flight requests", sig);
			break;
		}
	}
	exit_code = 0;
out:
	atomic_store(&app->stopping, true);
	http_stop(app->http, cfg->shutdown_grace_ms);
	app->http = NULL;
	/* No request can enqueue now. The ticker first (its stuck sweep nudges
	 * the workers), then the workers: stop claiming, let running jobs
	 * finish, hand the rest back; then the store. */
	ticker_stop(app->ticker);
	app->ticker = NULL;
	worker_pool_stop(app->workers);
	app->workers = NULL;
	store_close(app->store);
	app->store = NULL;
	rail_free(app->rail);
	app->rail = NULL;
	rail_free(app->payout_rail);
	app->payout_rail = NULL;
	trace_free(app->tracer);
	app->tracer = NULL;
	/* Last: every connection to the store is closed and the job crash
	 * guard emptied, so the next process finds the store as this one left
	 * it. A process that dies instead loses the lock with its descriptors. */
	storelock_free(lock);
	if (exit_code == 0)
		log_msg(&app->log, LOG_INFO, "stopped cleanly");
	buf_release(&err);
	buf_release(&desc);
	return exit_code;
}

int main(int argc, char **argv)
{
	struct config cfg;
	struct settled app;
	struct buf err = BUF_INIT(1024);
	bool help = false;
	sigset_t sigs;
	unsigned char rnd[8];
	char rnd_hex[2 * sizeof(rnd) + 1];
	enum st_rc rl_rc = ST_OK;
	int code;

	memset(&app, 0, sizeof(app));
	/* The operator's commands come before any server start-up. */
	if (argc >= 2 && !strcmp(argv[1], "--version")) {
		printf("settled %s (commit %s)\n", settled_version, settled_commit);
		return 0;
	}
	if (argc >= 2 && (!strcmp(argv[1], "backup") || !strcmp(argv[1], "restore")))
		return backup_main(argc, argv, environ);
	if (argc >= 2 && !strcmp(argv[1], "migrate"))
		return migrate_main(argc, argv, environ);
	if (config_load(&cfg, environ, argc, argv, &help, &err)) {
		fprintf(stderr, "settled: %s\n", err.ptr);
		fprintf(stderr, "settled: see settled --help\n");
		buf_release(&err);
		config_release(&cfg);
		return 2;
	}
	buf_release(&err);
	if (help) {
		config_help(stdout);
		config_release(&cfg);
		return 0;
	}

	/* Block the shutdown signals in every thread; main waits for them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	app.cfg = &cfg;
	log_init(&app.log, STDOUT_FILENO, (enum log_level)cfg.log_level);
	/* Request lines are batched (up to ~20 ms late; warn/error never wait):
	 * log.h. log_buffer_stop() below is the very last thing main does. */
	if (cfg.log_buffer && log_buffer_start(&app.log))
		log_msg(&app.log, LOG_WARN, "cannot start the log buffer: writing lines one by one");
	fit_fd_limit(&app.log, &cfg.conn_limit);
	clock_anchor_init(&app.clock);
	app.clock_ms = clock_anchor_now_ms;
	app.clock_arg = &app.clock;
	app.started_ms = settled_now_ms(&app);
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		memset(rnd, 0, sizeof(rnd));
	hex_encode(rnd, 8, rnd_hex);
	snprintf(app.instance_id, sizeof(app.instance_id), "%ld-%s", (long)getpid(), rnd_hex);
	policies_init(&app);
	settled_hash_admin_token(&app);

	app.metrics = metrics_new();
	if (cfg.redis_url)
		rl_rc = rate_limits_in_redis(&app);
	else
		app.rl = rl_memory_new(0);
	app.idem = idem_new();
	app.wh_keys = webhook_keyring_new(&cfg);
	if (randpool_init(&app.rand)) {
		fprintf(stderr, "settled: cannot initialise the random pool\n");
		code = 1;
	} else if (rl_rc) {
		code = 1; /* logged */
	} else if (!app.metrics || !app.rl || !app.idem || !app.wh_keys ||
		   settled_metrics_init(&app.m, app.metrics)) {
		fprintf(stderr, "settled: out of memory at start\n");
		code = 1;
	} else {
		code = serve(&app, &sigs);
	}
	randpool_destroy(&app.rand);
	idem_free(app.idem);
	webhook_keyring_free(app.wh_keys);
	rl_free(app.rl);
	metrics_free(app.metrics);
	config_release(&cfg);
	log_buffer_stop(&app.log);
	return code;
}

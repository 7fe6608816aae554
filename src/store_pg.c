/* store_pg.c — the scale-out backend: PostgreSQL through libpq.
 *
 * Writes: a pool of N connections (store_options.write_conns, default 4;
 * SETTLED_PG_WRITE_CONNS),
 * each owned by one worker thread. Workers take write units from one shared
 * FIFO. A worker that finds one unit queued runs it as its own transaction
 * (BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE ... COMMIT); one that
 * finds several takes them all (up to store_options.batch_max, default 128;
 * SETTLED_PG_BATCH_MAX; 1 = never) into one transaction,
 * each under its own savepoint, and commits once (group commit, as the
 * SQLite backend does): one COMMIT round trip and one WAL flush for the
 * batch instead of one each. A unit that fails rolls back to its savepoint
 * alone and its caller gets its own answer; the batch-mates commit. Units
 * on different connections run in parallel, serialised only by the row
 * locks they take. The ledger's invariants live in the schema (CHECK
 * constraints, triggers), uniqueness in unique indexes, so READ COMMITTED
 * is enough: ON CONFLICT and row locks give the right answer under it
 * without serialization failures.
 *
 * What a batch cannot pin on one unit is settled by running the units
 * again, each alone (run_batch): a connection lost before COMMIT (nothing
 * of the batch happened), a failure only COMMIT finds (a deferred
 * constraint), a held-back command of one unit failing in another's
 * pipeline. A unit that saw 40001/40P01, or waited longer than the
 * batch's lock_timeout (55P03) for a lock another transaction holds, is
 * rolled back to its savepoint and run again alone after the batch, where
 * each run waits for a lock at most PG_RERUN_LOCK_TIMEOUT_DEFAULT_MS. A COMMIT whose answer is lost is
 * resolved once for the batch (below): committed, every unit that
 * succeeded in it gets ok; aborted, all run again; unknown, all get
 * ST_UNAVAILABLE (the failed ones too: they failed against batch-mates'
 * writes that may not have committed).
 *
 * Round trips. On loopback a round trip (two context switches and a backend
 * wakeup) costs more CPU than most of our statements, so the commands whose
 * answer nothing waits for -- BEGIN, SAVEPOINT, RELEASE SAVEPOINT -- are
 * held back on the pg_tx and sent in one libpq pipeline with the next
 * statement, or with COMMIT (tx_pipeline). A unit of k statements takes
 * k + 1 round trips instead of k + 2, and a tx_nested step two fewer than
 * before; a nested step that never reaches the server sends nothing at all.
 * A unit's own statements whose result it does not read go the same way
 * (tx_exec_deferred, PEND_EXEC): an audit row, ledger entries before the
 * row that closes them, a record's completion.
 * Errors keep their meaning: PostgreSQL skips the rest of a pipeline after
 * a failure, so the first failure is the one reported, as the failure of
 * the statement it travelled with. COMMIT still waits for its WAL flush
 * (synchronous_commit is left alone); the server commits concurrent
 * transactions in one flush by itself.
 *
 * Retries. A unit is re-run as a whole, on a fresh transaction, when
 *  1. PostgreSQL reports serialization_failure (40001), deadlock_detected
 *     (40P01) or, in a batch, lock_not_available (55P03) anywhere in it,
 *     even inside a tx_nested the unit recovered from (tx_exec returns
 *     ST_BUSY; the flag sticks to the unit's run). From then on the run's
 *     statements fail at once with ST_BUSY without reaching the server:
 *     the run ends and lets go of its locks instead of taking more (a
 *     deadlock victim that went on met the same transactions again). A
 *     55P03 inside a tx_nested_nowait step is that step's failure only
 *     (pg_nested_nowait);
 *  2. the unit itself returns ST_BUSY;
 *  3. the connection died before COMMIT was sent (the server rolls back an
 *     open transaction on disconnect, so nothing of the unit happened).
 *     When the unit's first pipeline (the one carrying BEGIN) finds its
 *     connection dead, that pipeline alone is sent again on a new
 *     connection before the unit sees any result (pg_exec), as BEGIN on
 *     its own used to be.
 * At most PG_UNIT_ATTEMPTS runs, with full-jitter exponential backoff for
 * 1 and 2. A connection lost *during* COMMIT leaves the outcome unknown to
 * us: every write transaction learns its id (pg_current_xact_id, sent with
 * its first statement, no extra round trip), and a COMMIT whose answer is
 * lost is looked up by that id on a new connection (pg_xact_status):
 * committed means the unit succeeded (its client gets its answer, not a
 * false failure); aborted means nothing happened and the unit runs again.
 * When the server restarted meanwhile (pg_postmaster_start_time changed: a
 * crash may hand the same id out again) or stays unreachable, the outcome
 * is unknown: the unit gets ST_UNAVAILABLE and the client's idempotency key
 * sorts it out. Units must therefore be re-runnable: fill outputs from
 * scratch, touch nothing outside tx. Every unit in the tree already is.
 *
 * Reads: a separate pool of read_conns connections (default 4), borrowed
 * by the calling thread for one REPEATABLE READ READ ONLY transaction (one
 * snapshot for the whole read, taken at its first statement, which carries
 * the held-back BEGIN). Separate so that reads never queue behind
 * a burst of writes, and a slow read never holds a writer. A read of one
 * statement (store_read_one: an API key, an idempotency record on a
 * request's path) is sent alone, without BEGIN and COMMIT: a statement is
 * its own transaction and sees one snapshot, so the answer is the same in
 * one round trip instead of two (and one command instead of three).
 *
 * Connections die (PostgreSQL restarts, admin kills, network). A statement
 * that finds its connection gone returns ST_UNAVAILABLE and drops the
 * connection; the next use reconnects at once, and while reconnecting fails
 * it waits out a jittered backoff (100 ms doubling to 1 s) during which
 * units on that connection fail fast with ST_UNAVAILABLE instead of
 * hanging. The first connection anywhere in the store that gets through
 * (often a readiness probe) ends every other's backoff, so the whole pool
 * recovers as soon as the server is back. A writer whose connection is
 * down leaves the queue to workers with a live one. A write refused as
 * read-only (25006: the connection is on a standby after a failover) is
 * treated the same way: dropped, backed off, ST_UNAVAILABLE. Nothing here
 * ever exits the process.
 *
 * Statements are prepared once per connection (PQprepare with no types:
 * PostgreSQL infers them) and cached by the address of their SQL text under
 * generated names; parameters go as text, results come back as text and
 * are materialised into struct st_rows like the SQLite backend's (booleans
 * become "1"/"0" so portable SQL reads the same on both).
 *
 * Migrations: migrations/pg/NNN_*.sql, each in its own transaction that
 * first takes pg_advisory_xact_lock(PG_MIGRATION_LOCK), so instances that
 * start together apply each version exactly once.
 *
 * The connection URL holds a password: it is never logged, and every libpq
 * message passed on is scrubbed of it. */
#include "store.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "clock.h"
#include "banned.h"

/* Four, not eight: on the bench machine 4 writers (larger batches, fewer
 * round trips in flight) were 10-25 % faster than 8 in back-to-back runs
 * (docs/internals/store.md). */
#define PG_WRITE_CONNS_DEFAULT 4
#define PG_READ_CONNS_DEFAULT 4
#define PG_UNIT_ATTEMPTS 5
#define PG_RETRY_BASE_MS 4          /* first retry waits up to 8 ms */
#define PG_RECONNECT_MIN_MS 100
#define PG_RECONNECT_MAX_MS 1000
#define PG_CONNECT_TIMEOUT "5"      /* seconds; the URL may override it */
#define PG_PING_TIMEOUT_MS 2000
#define PG_MIGRATION_LOCK "7310427712" /* pg_advisory_xact_lock key: "settled" */
#define PG_BOOLOID 16
#define PG_BATCH_MAX_DEFAULT 128    /* units a writer takes into one transaction */
/* How long a unit in a batch waits for a row lock another transaction
 * holds before it is rolled back to its savepoint and run again alone after
 * its batch: a batch holds every unit's locks until its COMMIT, so waiting
 * batches would queue behind one another (and deadlock, found only after
 * PostgreSQL's deadlock_timeout, 1 s). A unit alone waits as long as it
 * takes; run again alone after its batch, a bounded while
 * (PG_RERUN_LOCK_TIMEOUT_DEFAULT_MS). store_options.lock_timeout_ms
 * (SETTLED_PG_LOCK_TIMEOUT) sets it. */
#define PG_BATCH_LOCK_TIMEOUT_DEFAULT_MS 10
/* How long a unit run again alone after its batch (run_batch) waits for a
 * row lock in each run. It used to wait as long as it took, on its writer:
 * behind a slow batch (a bad plan, a starved CPU) or a session holding the
 * row, that writer served nothing else meanwhile, and the batches left to
 * the others grew longer (the convoy pgfix12 measured). Past this bound the
 * run ends with 55P03, a retry like any other (jittered backoff), and a unit
 * that runs out of its PG_UNIT_ATTEMPTS answers ST_BUSY: 503 `busy`, its
 * idempotency key released for the client's retry. So a rerun holds its
 * writer for at most about (PG_UNIT_ATTEMPTS - 1) times this. A second is
 * PostgreSQL's default deadlock_timeout: a wait that long is no queue
 * behind a batch any more. A unit alone from the start still waits as
 * long as it takes. store_options.rerun_lock_timeout_ms sets it. */
#define PG_RERUN_LOCK_TIMEOUT_DEFAULT_MS 1000
/* While one writer runs a batch (until its units are answered), the others
 * leave new units queued for the next batch, up to this long (counted from
 * the oldest unit's arrival) or until a full batch (batch_max) waits. Fewer
 * writers in flight make bigger batches: fewer commits and statements
 * (merged runs), less PostgreSQL CPU a unit -- what one writer instead of
 * four measured (docs/internals/store.md) -- while the bound gives slow
 * batches (ledger rows) and a writer stuck on a lock the others' parallelism
 * back. A unit that arrives while no writer runs a batch is taken at once:
 * no wait at low load. store_options.gather_us (SETTLED_PG_GATHER_US) sets
 * it; with several instances on one database each gathers only its own
 * share of the arrivals (docs/internals/store.md, session 13). */
#define PG_GATHER_US_DEFAULT 2000
#define PG_PENDING_MAX 16           /* BEGIN and savepoints held back; more are flushed */

struct pg_store;

struct pg_conn {
	struct pg_store *s;
	PGconn *pg;                /* NULL while down */
	const char *role;          /* "writer", "reader", "ping": for logs */
	unsigned idx;
	bool writer;               /* counted in pg_store.healthy */
	struct stmt_cache stmts;   /* slot id: prepared as "s<id>"; nparams */
	unsigned next_id;
	unsigned drops;            /* times the connection was lost */
	int64_t backoff_ms;        /* 0 while connecting works */
	int64_t next_try_ms;       /* monotonic; no reconnect before this */
	int64_t failed_at_ms;      /* monotonic time of the last failed connect */
	bool down_logged;
	uint64_t rng;
};

/* A command whose result nothing waits for: held back on the pg_tx and
 * sent in one pipeline with the next command that needs an answer.
 * PEND_EXEC is a unit's own statement (tx_exec_deferred). */
/* The write transaction's id and the server's start, sent with its first
 * statement (resolve_commit); prepared on each writer connection under a
 * name stmt_name never makes. */
#define PG_XID_STMT "xid"
#define PG_XID_SQL "SELECT pg_current_xact_id(), pg_postmaster_start_time()"

enum pg_pend_kind { PEND_BEGIN, PEND_XID, PEND_LOCK_TIMEOUT, PEND_LOCK_DEFAULT, PEND_LOCK_RERUN,
		   PEND_SAVEPOINT, PEND_RELEASE, PEND_EXEC };

struct pg_pending {
	enum pg_pend_kind kind;
	int depth;        /* savepoint sp<depth>; 0 for BEGIN */
	/* PEND_EXEC: prepared statement s<id>, its parameters as text in
	 * block (owned; values points into it). */
	unsigned id;
	int nparams;
	const char **values;
	char *block;
};

struct pg_tx {
	struct tx base;
	struct pg_conn *conn;
	bool aborted;   /* a statement failed: PostgreSQL ignores the rest */
	bool retry;     /* 40001 / 40P01 seen: the unit is re-run; its further
			 * statements fail at once (ST_BUSY), so that it ends and
			 * lets go of its locks instead of taking more */
	enum store_retry_cause retry_cause; /* which state set retry first */
	bool begun;     /* BEGIN has been sent: there is something to end */
	unsigned drops; /* conn->drops when the transaction started: if it
			 * moved, the server rolled the transaction back */
	const char *begin; /* the BEGIN command of this kind of transaction */
	char xid[24];      /* the write transaction's id (pg_current_xact_id), "" until known */
	char started[48];  /* pg_postmaster_start_time() as the transaction saw it */
	/* Batches: pending[0..unit_base) were held back before the running
	 * unit began (the previous unit's RELEASE, BEGIN). A failure of one of
	 * them is no failure of this unit: the batch is broken (run_batch). */
	int unit_base;
	bool broken;
	/* store_read_one: no BEGIN; the one statement runs alone (its own
	 * implicit transaction). nstmts counts the statements it was asked. */
	bool single;
	int nstmts;
	bool short_locks;  /* runs with the short lock_timeout (a batch) */
	bool rerun_locks;  /* runs with the rerun's lock_timeout (a unit after its batch) */
	int nowait;        /* depth of the innermost tx_nested_nowait step, 0 if none */
	bool nowait_busy;  /* a lock that step could not get within the timeout */
	int npending;
	struct pg_pending pending[PG_PENDING_MAX];
};

/* One command of a pipeline: a fixed command (sql), or a prepared
 * statement's Prepare, Describe or Execute. Each has exactly one result. */
struct pg_cmd {
	enum { CMD_SQL, CMD_PREPARE, CMD_DESCRIBE, CMD_EXEC } kind;
	const char *sql;           /* CMD_SQL and CMD_PREPARE */
	const char *name;          /* the prepared statement's name */
	int nparams;               /* CMD_EXEC */
	const char *const *values;
	const char *what;          /* for logs */
};

struct pg_worker {
	struct pg_conn conn;
	pthread_t thread;
	bool started;
};

struct pg_store {
	struct store base;
	char *url;
	char *password;            /* scrubbed from messages; NULL if none */

	struct pg_worker *workers;
	unsigned nworkers;
	unsigned batch_max;        /* units a worker takes into one transaction; 1 = no batches */
	int64_t lock_timeout_ms;   /* a batched unit's lock_timeout */
	int64_t rerun_lock_timeout_ms; /* a unit's, run again alone after its batch */
	struct unit_queue queue;   /* store_submit's units, for the workers */
	atomic_uint healthy;       /* writer connections up */
	/* Writers running a batch (from taking it to its answers). While one
	 * is, the others let new units gather for the next batch (a bounded
	 * wait, worker_hold): see PG_GATHER_US_DEFAULT. */
	atomic_int busy;
	int64_t gather_us;         /* that wait's bound; 0: never wait */
	_Atomic int64_t up_at_ms;  /* monotonic time of the last successful connect */

	struct pg_conn *readers;
	unsigned nreaders;
	struct reader_pool rpool;  /* which readers are free */

	struct pg_conn pinger;     /* migrations at open, then /health/ready */
	pthread_mutex_t pmu;
};

static const struct store_ops pg_store_ops;
static const struct tx_ops pg_tx_ops;

static struct pg_store *pg_downcast(struct store *s)
{
	if (s->ops != &pg_store_ops)
		abort(); /* a programmer error: another backend's store */
	return (struct pg_store *)s;
}

static struct pg_tx *pg_tx_downcast(struct tx *tx)
{
	if (tx->ops != &pg_tx_ops)
		abort();
	return (struct pg_tx *)tx;
}

/* ---- clocks, jitter, messages ---- */

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* xorshift64*: jitter only, never security. */
static uint64_t jitter_next(uint64_t *state)
{
	uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ULL;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* A uniformly random wait in [max/2, max]: spread, but never ~0. */
static int64_t jitter_ms(uint64_t *state, int64_t max)
{
	if (max < 2)
		return max;
	return max / 2 + (int64_t)(jitter_next(state) % (uint64_t)(max / 2 + 1));
}

/* Copies a libpq message into out on one line, without the password. */
static void put_message(const struct pg_store *s, struct buf *out, const char *msg)
{
	size_t start = out->len, plen = s->password ? strlen(s->password) : 0;
	const char *p = msg ? msg : "unknown error";

	while (*p) {
		if (plen >= 3 && strncmp(p, s->password, plen) == 0) {
			buf_puts(out, "***");
			p += plen;
			continue;
		}
		buf_putc(out, *p == '\n' || *p == '\r' || *p == '\t' ? ' ' : *p);
		p++;
	}
	while (out->len > start && out->ptr[out->len - 1] == ' ')
		out->ptr[--out->len] = '\0';
}

static void notice_ignore(void *arg, const char *message)
{
	(void)arg;
	(void)message; /* "relation already exists, skipping" and the like */
}

/* ---- connections ---- */

static void conn_init(struct pg_conn *c, struct pg_store *s, const char *role, unsigned idx, bool writer)
{
	memset(c, 0, sizeof(*c));
	c->s = s;
	c->role = role;
	c->idx = idx;
	c->writer = writer;
	c->rng = (uint64_t)clock_mono_ms() * 0x9e3779b97f4a7c15ULL ^ ((uint64_t)idx << 32) ^ (uintptr_t)c;
}

/* Opens a connection. The URL may be a postgres:// URI or a key=value
 * string; our defaults come first, so the URL's own settings win. */
static PGconn *pg_connect(struct pg_store *s, const char *timeout, struct buf *why)
{
	const char *const keys[] = { "connect_timeout", "application_name", "keepalives_idle",
				     "keepalives_interval", "keepalives_count", "dbname", NULL };
	const char *const vals[] = { timeout, "settled", "30", "10", "3", s->url, NULL };
	PGconn *pg = PQconnectdbParams(keys, vals, 1);

	if (!pg) {
		buf_puts(why, "out of memory");
		return NULL;
	}
	if (PQstatus(pg) != CONNECTION_OK) {
		put_message(s, why, PQerrorMessage(pg));
		PQfinish(pg);
		return NULL;
	}
	PQsetNoticeProcessor(pg, notice_ignore, NULL);
	return pg;
}

static void backoff_step(struct pg_conn *c)
{
	c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : PG_RECONNECT_MIN_MS;
	if (c->backoff_ms > PG_RECONNECT_MAX_MS)
		c->backoff_ms = PG_RECONNECT_MAX_MS;
	c->failed_at_ms = clock_mono_ms();
	c->next_try_ms = c->failed_at_ms + jitter_ms(&c->rng, c->backoff_ms);
}

/* Forgets a connection that is gone. Its transaction, if any, is rolled
 * back by the server; its prepared statements went with it. */
static void conn_drop(struct pg_conn *c, const char *why)
{
	if (!c->pg)
		return;
	if (!c->down_logged)
		log_msg(c->s->base.log, LOG_WARN, "postgres: %s connection %u lost: %s", c->role, c->idx,
			why && *why ? why : "connection closed");
	c->down_logged = true;
	PQfinish(c->pg);
	c->pg = NULL;
	c->drops++;
	c->next_try_ms = 0; /* the first reconnect is immediate */
	/* The prepared statements died with the connection; the multi-row
	 * texts did not, and pg_exec may send the one it holds again on the
	 * new connection (stmt_cache_forget). */
	stmt_cache_forget(&c->stmts);
	if (c->writer && atomic_fetch_sub(&c->s->healthy, 1) == 1) {
		/* The last live writer: wake the others so none idles on the
		 * queue waiting for a peer that is gone too. */
		unit_queue_wake_all(&c->s->queue);
	}
}

/* Whether res, the answer to a new connection's set-up command, says it
 * succeeded; if not, what and the server's message go in why. Clears res. */
static bool setup_ok(const struct pg_store *s, PGconn *pg, PGresult *res, const char *what,
		     struct buf *why)
{
	bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;

	if (!ok) {
		buf_puts(why, what);
		put_message(s, why, PQerrorMessage(pg));
	}
	PQclear(res);
	return ok;
}

/* A reader's session refuses writes by default: a one-statement read
 * (store_read_one) has no BEGIN ... READ ONLY of its own. */
static bool session_read_only(const struct pg_store *s, PGconn *pg, struct buf *why)
{
	return setup_ok(s, pg, PQexec(pg, "SET default_transaction_read_only = on"),
			"cannot make the session read-only: ", why);
}

/* A writer's connection prepares the statement every write transaction
 * sends first (its id, for resolve_commit): as a simple query it was parsed
 * and planned in each transaction. */
static bool prepare_xid(const struct pg_store *s, PGconn *pg, struct buf *why)
{
	return setup_ok(s, pg, PQprepare(pg, PG_XID_STMT, PG_XID_SQL, 0, NULL),
			"cannot prepare the transaction id statement: ", why);
}

/* A new connection for c (pool readers' sessions read-only, writers'
 * with their transaction id statement prepared). */
static PGconn *conn_connect(struct pg_conn *c, const char *timeout, struct buf *why)
{
	PGconn *pg = pg_connect(c->s, timeout, why);

	if (pg && !(c->writer ? prepare_xid(c->s, pg, why) : session_read_only(c->s, pg, why))) {
		PQfinish(pg);
		pg = NULL;
	}
	return pg;
}

/* Makes sure c has a live connection: reconnects if it is down and its
 * backoff has passed. ST_UNAVAILABLE otherwise (at once during backoff). */
static enum st_rc conn_ensure(struct pg_conn *c, const char *timeout)
{
	struct pg_store *s = c->s;
	struct buf why = BUF_INIT(1024);
	int64_t now;

	if (c->pg)
		return ST_OK;
	now = clock_mono_ms();
	if (now < c->next_try_ms && atomic_load(&s->up_at_ms) <= c->failed_at_ms)
		return ST_UNAVAILABLE;
	c->pg = conn_connect(c, timeout, &why);
	if (!c->pg) {
		backoff_step(c);
		if (!c->down_logged)
			log_msg(s->base.log, LOG_WARN, "postgres: %s connection %u cannot connect: %s",
				c->role, c->idx, why.ptr);
		c->down_logged = true;
		buf_release(&why);
		return ST_UNAVAILABLE;
	}
	buf_release(&why);
	if (c->down_logged)
		log_msg(s->base.log, LOG_INFO, "postgres: %s connection %u reconnected", c->role, c->idx);
	c->down_logged = false;
	c->backoff_ms = 0;
	atomic_store(&s->up_at_ms, clock_mono_ms());
	if (c->writer)
		atomic_fetch_add(&s->healthy, 1);
	return ST_OK;
}

static void conn_close(struct pg_conn *c)
{
	if (c->pg) {
		PQfinish(c->pg);
		c->pg = NULL;
		if (c->writer)
			atomic_fetch_sub(&c->s->healthy, 1);
	}
	stmt_cache_clear(&c->stmts);
}

/* ---- errors ---- */

static bool sqlstate_is(const char *st, const char *code)
{
	return st && strcmp(st, code) == 0;
}

/* Server states that mean this connection is finished. */
static bool sqlstate_conn_gone(const char *st)
{
	if (!st)
		return false;
	if (st[0] == '0' && st[1] == '8')
		return !sqlstate_is(st, "08P01"); /* protocol violation: our bug, not the link */
	return sqlstate_is(st, "57P01") || sqlstate_is(st, "57P02") || sqlstate_is(st, "57P03");
}

static enum st_rc map_sqlstate(const char *st)
{
	if (!st || strlen(st) != 5)
		return ST_INTERNAL;
	if (sqlstate_is(st, "23505"))
		return ST_UNIQUE;
	if (st[0] == '2' && st[1] == '3')          /* check, fk, not null, exclusion */
		return ST_CONFLICT;
	if (sqlstate_is(st, "P0001"))              /* raise_exception: our triggers */
		return ST_CONFLICT;
	/* numeric_value_out_of_range: BIGINT arithmetic overflowed (a
	 * balance, or held, moved past 2^63-1). The store refusing the write,
	 * as SQLite's CHECK accounts_money_integer does (017), not our bug:
	 * a transfer answers 422 balance_overflow for it, not 500. Our
	 * parameters are formatted from int64s, so no parameter raises it. */
	if (sqlstate_is(st, "22003"))
		return ST_CONFLICT;
	/* 55P03: a batch's unit waited too long for a lock (lock_timeout) */
	if (sqlstate_is(st, "40001") || sqlstate_is(st, "40P01") || sqlstate_is(st, "55P03"))
		return ST_BUSY;
	if (sqlstate_conn_gone(st))
		return ST_UNAVAILABLE;
	if (st[0] == '5' && st[1] == '3')          /* insufficient resources: disk, memory */
		return ST_UNAVAILABLE;
	if (sqlstate_is(st, "57014"))              /* statement timeout, cancel */
		return ST_UNAVAILABLE;
	return ST_INTERNAL;
}

/* Turns one libpq result into a store code, and keeps the transaction's
 * state in step: any failure aborts it on the server; 40001/40P01 mark it
 * for a retry; a dead connection is dropped. res may be NULL. */
static enum st_rc result_rc(struct pg_tx *t, struct pg_conn *c, PGresult *res, const char *what)
{
	ExecStatusType status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	bool wrong_server;
	const char *st;
	enum st_rc rc;

	if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
		return ST_OK;
	st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	rc = map_sqlstate(st);
	if (t)
		t->aborted = true;
	/* A write refused as read-only: this connection reached (or stayed
	 * on) a standby, e.g. after a failover. Drop it and back off, so a
	 * reconnect can find the new primary (target_session_attrs=read-write
	 * in the URL makes libpq pick it). */
	wrong_server = t && !t->base.read_only && sqlstate_is(st, "25006");
	if (PQstatus(c->pg) != CONNECTION_OK || sqlstate_conn_gone(st) || wrong_server) {
		struct buf why = BUF_INIT(1024);

		put_message(c->s, &why, res ? PQresultErrorMessage(res) : PQerrorMessage(c->pg));
		if (!why.len)
			put_message(c->s, &why, PQerrorMessage(c->pg));
		conn_drop(c, why.ptr);
		if (wrong_server)
			backoff_step(c);
		buf_release(&why);
		return ST_UNAVAILABLE;
	}
	if (rc == ST_BUSY && t) {
		/* A lock a tx_nested_nowait step could not get fails that step,
		 * not the unit's run. */
		if (t->nowait && sqlstate_is(st, "55P03")) {
			t->nowait_busy = true;
		} else if (!t->retry) {
			t->retry = true;
			t->retry_cause = sqlstate_is(st, "40P01") ? STORE_RETRY_DEADLOCK
					 : sqlstate_is(st, "40001") ? STORE_RETRY_SERIALIZATION
					 : STORE_RETRY_LOCK_TIMEOUT;
		}
	}
	if (rc == ST_INTERNAL || rc == ST_UNAVAILABLE) {
		struct buf why = BUF_INIT(1024);

		put_message(c->s, &why, res ? PQresultErrorMessage(res) : PQerrorMessage(c->pg));
		log_msg(c->s->base.log, rc == ST_INTERNAL ? LOG_ERROR : LOG_WARN,
			"postgres: %s failed: %s %s", what, st ? st : "-----", why.ptr);
		buf_release(&why);
	}
	return rc;
}

/* ---- pipelines ---- */

/* The text of a held-back command. */
static const char *pending_sql(const struct pg_tx *t, const struct pg_pending *p, char *buf, size_t size)
{
	switch (p->kind) {
	case PEND_BEGIN:
		return t->begin;
	case PEND_XID:
		return PG_XID_SQL;
	case PEND_LOCK_TIMEOUT:
		/* A bare number is milliseconds to lock_timeout. */
		snprintf(buf, size, "SET LOCAL lock_timeout = %lld", (long long)t->conn->s->lock_timeout_ms);
		return buf;
	case PEND_LOCK_DEFAULT:
		/* The transaction's own value again: a rerun's bound, else the
		 * session's (the URL's options may set one). */
		if (!t->rerun_locks)
			return "SET LOCAL lock_timeout = DEFAULT";
		/* fall through */
	case PEND_LOCK_RERUN:
		snprintf(buf, size, "SET LOCAL lock_timeout = %lld",
			 (long long)t->conn->s->rerun_lock_timeout_ms);
		return buf;
	case PEND_SAVEPOINT:
		snprintf(buf, size, "SAVEPOINT sp%d", p->depth);
		return buf;
	case PEND_RELEASE:
		snprintf(buf, size, "RELEASE SAVEPOINT sp%d", p->depth);
		return buf;
	case PEND_EXEC:
		return "deferred statement";
	}
	return "";
}

/* Forgets the held-back commands from index from on (their parameters
 * with them): sent, or undone before they were. */
static void pending_drop(struct pg_tx *t, int from)
{
	for (int i = from; i < t->npending; i++) {
		free(t->pending[i].block);
		t->pending[i].block = NULL;
	}
	if (from < t->npending)
		t->npending = from;
}

static bool pending_has_exec(const struct pg_tx *t)
{
	for (int i = 0; i < t->npending; i++)
		if (t->pending[i].kind == PEND_EXEC)
			return true;
	return false;
}

static void stmt_name(char *name, size_t size, unsigned id);

/* Queues one command; libpq's result: 1 on success. */
static int cmd_send(PGconn *pg, const struct pg_cmd *cmd)
{
	switch (cmd->kind) {
	case CMD_SQL:
		return PQsendQueryParams(pg, cmd->sql, 0, NULL, NULL, NULL, NULL, 0);
	case CMD_PREPARE:
		return PQsendPrepare(pg, cmd->name, cmd->sql, 0, NULL);
	case CMD_DESCRIBE:
		return PQsendDescribePrepared(pg, cmd->name);
	case CMD_EXEC:
		return PQsendQueryPrepared(pg, cmd->name, cmd->nparams, cmd->values, NULL, NULL, 0);
	}
	return 0;
}

/* Sends t's held-back commands, then cmds[0..n), as one pipeline (one round
 * trip instead of one each) and reads every result in order. PostgreSQL
 * skips whatever follows a failure up to the sync point, so the first
 * failure is the only one: it goes through result_rc as if its command had
 * run alone, which keeps t->aborted, t->retry and dead connections in step
 * exactly as before. A held-back command's failure is thus the failure of
 * the command it travelled with. The held-back queue is empty afterwards.
 * On ST_OK, *last (may be NULL) gets cmds[n - 1]'s result; caller PQclears.
 * If libpq's view of the pipeline ever disagrees with ours, nobody can
 * tell what ran: the connection is dropped (ST_UNAVAILABLE). */
static enum st_rc tx_pipeline(struct pg_tx *t, const struct pg_cmd *cmds, int n, PGresult **last)
{
	struct pg_conn *c = t->conn;
	PGconn *pg = c->pg;
	int total = t->npending + n, got = 0;
	PGresult *res, *fail = NULL, *keep = NULL;
	char what[64] = "", text[48], name[24];
	bool in_step = false;
	enum st_rc rc = ST_OK;

	if (!pg)
		return ST_UNAVAILABLE;
	if (!t->npending && n == 1 && cmds[0].kind == CMD_SQL) {
		/* A fixed command on its own (COMMIT, ROLLBACK) goes as a simple
		 * Query: one round trip either way, and less work for the server
		 * than Parse, Bind, Describe and Execute. */
		res = PQexec(pg, cmds[0].sql);
		rc = result_rc(t, c, res, cmds[0].what);
		if (rc || !last)
			PQclear(res);
		else
			*last = res;
		return rc;
	}
	if (!PQenterPipelineMode(pg))
		goto out;
	for (int i = 0; i < total; i++) {
		struct pg_cmd pc = { .kind = CMD_SQL };

		if (i < t->npending && t->pending[i].kind == PEND_EXEC) {
			const struct pg_pending *p = &t->pending[i];

			stmt_name(name, sizeof(name), p->id);
			pc = (struct pg_cmd){ .kind = CMD_EXEC, .name = name, .nparams = p->nparams,
					      .values = p->values };
		} else if (i < t->npending && t->pending[i].kind == PEND_XID) {
			/* Prepared when the writer's connection was made. */
			pc = (struct pg_cmd){ .kind = CMD_EXEC, .name = PG_XID_STMT };
		} else if (i < t->npending) {
			pc.sql = pending_sql(t, &t->pending[i], text, sizeof(text));
			if (t->pending[i].kind == PEND_BEGIN)
				t->begun = true;
		} else {
			pc = cmds[i - t->npending];
		}
		if (!cmd_send(pg, &pc))
			goto out;
	}
	if (!PQpipelineSync(pg))
		goto out;
	for (got = 0; got < total; got++) {
		ExecStatusType status;

		res = PQgetResult(pg);
		if (!res)
			break;
		status = PQresultStatus(res);
		if (status == PGRES_TUPLES_OK && got < t->npending && t->pending[got].kind == PEND_XID &&
		    PQntuples(res) == 1 && PQnfields(res) == 2) {
			snprintf(t->xid, sizeof(t->xid), "%s", PQgetvalue(res, 0, 0));
			snprintf(t->started, sizeof(t->started), "%s", PQgetvalue(res, 0, 1));
		}
		if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
			if (got == total - 1 && last && !fail)
				keep = res;
			else
				PQclear(res);
		} else if (!fail && status != PGRES_PIPELINE_ABORTED) {
			fail = res;
			if (got < t->unit_base)
				t->broken = true;
			if (got < t->npending)
				snprintf(what, sizeof(what), "%s",
					 pending_sql(t, &t->pending[got], text, sizeof(text)));
			else
				snprintf(what, sizeof(what), "%s", cmds[got - t->npending].what);
		} else {
			PQclear(res);
		}
		if (PQstatus(pg) != CONNECTION_OK)
			break; /* lost: no more results will come */
		res = PQgetResult(pg); /* the NULL after each command's result */
		if (res) {
			PQclear(res);
			break;
		}
	}
	if (got == total) {
		res = PQgetResult(pg);
		in_step = res && PQresultStatus(res) == PGRES_PIPELINE_SYNC;
		PQclear(res);
		in_step = in_step && PQexitPipelineMode(pg);
	}
out:
	pending_drop(t, 0);
	t->unit_base = 0;
	if (!in_step && PQstatus(pg) == CONNECTION_OK) {
		t->aborted = true;
		log_msg(c->s->base.log, LOG_ERROR, "postgres: %s connection %u: pipeline out of step (%d of %d results)",
			c->role, c->idx, got, total);
		conn_drop(c, "pipeline out of step");
		rc = ST_UNAVAILABLE;
	} else if (fail || !in_step) {
		rc = result_rc(t, c, fail, what[0] ? what : "pipeline");
	}
	PQclear(fail);
	if (rc) {
		PQclear(keep);
		keep = NULL;
	}
	if (last)
		*last = keep;
	return rc;
}

/* Holds back a command that needs no answer (p's block, if any, becomes
 * t's, whatever happens). A full queue goes out first, on its own. */
static enum st_rc tx_defer_entry(struct pg_tx *t, const struct pg_pending *p)
{
	if (t->npending == PG_PENDING_MAX) {
		enum st_rc rc = tx_pipeline(t, NULL, 0, NULL);

		if (rc) {
			free(p->block);
			return rc;
		}
	}
	t->pending[t->npending++] = *p;
	return ST_OK;
}

static enum st_rc tx_defer(struct pg_tx *t, enum pg_pend_kind kind, int depth)
{
	return tx_defer_entry(t, &(struct pg_pending){ .kind = kind, .depth = depth });
}

/* ---- statement cache (store.c keeps the slots) ---- */

static void stmt_name(char *name, size_t size, unsigned id)
{
	snprintf(name, size, "s%u", id);
}

/* Finds sql's prepared statement on this connection, preparing it (and
 * asking the server how many parameters it takes) the first time: one
 * pipeline with t's held-back commands, so inside the transaction as any
 * statement. */
static enum st_rc conn_stmt(struct pg_tx *t, const char *sql, const struct stmt_slot **out)
{
	struct pg_conn *c = t->conn;
	char name[24];
	PGresult *res = NULL;
	struct stmt_slot *slot;
	enum st_rc rc;
	unsigned id;
	bool found;

	slot = stmt_cache_find(&c->stmts, sql, &found);
	if (!slot)
		return ST_NOMEM;
	if (found) {
		*out = slot;
		return ST_OK;
	}
	id = ++c->next_id;
	stmt_name(name, sizeof(name), id);
	rc = tx_pipeline(t,
			 (const struct pg_cmd[]){
				 { .kind = CMD_PREPARE, .sql = sql, .name = name, .what = "prepare" },
				 { .kind = CMD_DESCRIBE, .name = name, .what = "describe" },
			 },
			 2, &res);
	if (rc)
		return rc;
	slot->id = id;
	slot->nparams = PQnparams(res);
	PQclear(res);
	stmt_cache_fill(&c->stmts, slot, sql);
	*out = slot;
	return ST_OK;
}

/* ---- tx ops ---- */

/* Renders params as NUL-terminated text in one allocation (*block, caller
 * frees). PostgreSQL text cannot hold NUL, so a value with one is refused
 * rather than cut short. */
static enum st_rc params_text(int n, const struct st_val *params, const char ***values, char **block)
{
	size_t size = sizeof(char *) * (size_t)n, off;
	char *b;
	const char **v;

	for (int i = 0; i < n; i++) {
		if (params[i].type == SV_TEXT) {
			if (params[i].len && memchr(params[i].s, '\0', params[i].len))
				return ST_INVALID;
			size += params[i].len + 1;
		} else if (params[i].type == SV_INT) {
			size += 24;
		}
	}
	b = malloc(size ? size : 1);
	if (!b)
		return ST_NOMEM;
	v = (const char **)(void *)b;
	off = sizeof(char *) * (size_t)n;
	for (int i = 0; i < n; i++) {
		char *dst = b + off;

		switch (params[i].type) {
		case SV_INT:
			off += (size_t)snprintf(dst, 24, "%lld", (long long)params[i].i) + 1;
			v[i] = dst;
			break;
		case SV_TEXT:
			if (params[i].len)
				memcpy(dst, params[i].s, params[i].len);
			dst[params[i].len] = '\0';
			off += params[i].len + 1;
			v[i] = dst;
			break;
		default:
			v[i] = NULL;
			break;
		}
	}
	*values = v;
	*block = b;
	return ST_OK;
}

static enum st_rc rows_from_result(PGresult *res, struct st_rows **out)
{
	struct st_rows *r = calloc(1, sizeof(*r));
	int nr = PQntuples(res), nc = PQnfields(res);
	size_t ncells = (size_t)nr * (size_t)nc;

	if (!r)
		return ST_NOMEM;
	r->ncols = nc;
	if (ncells) {
		r->cells = calloc(ncells, sizeof(*r->cells));
		r->lens = calloc(ncells, sizeof(*r->lens));
		if (!r->cells || !r->lens) {
			rows_free(r);
			return ST_NOMEM;
		}
	}
	r->nrows = nr; /* cells are NULL until filled: rows_free copes */
	for (int row = 0; row < nr; row++) {
		for (int col = 0; col < nc; col++) {
			size_t idx = (size_t)row * (size_t)nc + (size_t)col;
			const char *v;
			size_t len;

			if (PQgetisnull(res, row, col))
				continue;
			v = PQgetvalue(res, row, col);
			len = (size_t)PQgetlength(res, row, col);
			if (PQftype(res, col) == PG_BOOLOID) {
				/* SQLite has no booleans: keep SELECT a > b portable. */
				v = v[0] == 't' ? "1" : "0";
				len = 1;
			}
			r->cells[idx] = malloc(len + 1);
			if (!r->cells[idx]) {
				rows_free(r);
				return ST_NOMEM;
			}
			memcpy(r->cells[idx], v, len);
			r->cells[idx][len] = '\0';
			r->lens[idx] = len;
		}
	}
	*out = r;
	return ST_OK;
}

/* sql prepared on t's connection if new (*st), and its parameters as text
 * (*values pointing into *block, which the caller frees). */
static enum st_rc stmt_with_params(struct pg_tx *t, const char *sql, int n,
				   const struct st_val *params, const struct stmt_slot **st,
				   const char ***values, char **block)
{
	enum st_rc rc;

	if (!t->conn->pg)
		return ST_UNAVAILABLE;
	rc = conn_stmt(t, sql, st);
	if (rc)
		return rc;
	if (n < (*st)->nparams) {
		/* SQLite says the same (ST_INTERNAL) for a $k past the params. */
		log_msg(t->conn->s->base.log, LOG_ERROR,
			"postgres: statement takes %d parameters, %d given", (*st)->nparams, n);
		return ST_INTERNAL;
	}
	/* Extra params are fine, as on SQLite; the server only takes its count. */
	return params_text((*st)->nparams, params, values, block);
}

/* One statement: prepared if new, then executed in one pipeline with t's
 * held-back commands. */
static enum st_rc exec_once(struct pg_tx *t, const char *sql, int n, const struct st_val *params,
			    int64_t *changes, struct st_rows **out)
{
	const struct stmt_slot *st;
	const char **values = NULL;
	char *block = NULL, name[24];
	PGresult *res = NULL;
	enum st_rc rc;

	rc = stmt_with_params(t, sql, n, params, &st, &values, &block);
	if (rc)
		return rc;
	stmt_name(name, sizeof(name), st->id);
	rc = tx_pipeline(t,
			 &(struct pg_cmd){ .kind = CMD_EXEC, .name = name, .nparams = st->nparams,
					   .values = values, .what = "statement" },
			 1, &res);
	if (rc)
		goto out;
	if (changes) {
		const char *tuples = PQcmdTuples(res);

		*changes = *tuples ? strtoll(tuples, NULL, 10) : 0;
	}
	if (out)
		rc = rows_from_result(res, out);
out:
	PQclear(res);
	free(block);
	return rc;
}

/* store_read_one's unit asked for more than its one statement (what: the
 * second statement, a savepoint, a deferred statement): a bug in the unit,
 * which must use store_read. Refused before anything is sent. */
static enum st_rc single_misuse(struct pg_tx *t, const char *what)
{
	log_msg(t->conn->s->base.log, LOG_ERROR,
		"postgres: a one-statement read (store_read_one) asked for %s; use store_read", what);
	t->aborted = true;
	return ST_INTERNAL;
}

static enum st_rc pg_exec(struct tx *tx, const char *sql, int n, const struct st_val *params,
			  int64_t *changes, struct st_rows **out)
{
	struct pg_tx *t = pg_tx_downcast(tx);
	struct pg_conn *c = t->conn;
	struct pg_pending held[PG_PENDING_MAX];
	int nheld = t->npending, base = t->unit_base;
	/* (A held-back statement's parameters go with its pipeline: such a
	 * unit is run again as a whole instead, rule 3.) */
	bool first = !t->begun && !pending_has_exec(t);
	unsigned drops = c->drops;
	enum st_rc rc;

	if (t->single && t->nstmts++ > 0)
		return single_misuse(t, "a second statement");
	/* This run is rolled back and run again whatever comes next: end it
	 * now rather than let it take (and wait for) more locks, which other
	 * transactions would then wait on; a deadlock victim that went on to
	 * its next statement could deadlock again, a second each time. */
	if (t->retry)
		return ST_BUSY;
	if (first)
		memcpy(held, t->pending, sizeof(held[0]) * (size_t)nheld);
	rc = exec_once(t, sql, n, params, changes, out);
	/* The first statement carries BEGIN. If it found the connection gone
	 * (the server restarted since the connection's last use), no trace of
	 * the transaction is left anywhere and the caller has seen no result
	 * yet: send it all again on a new connection, as the old code did when
	 * BEGIN alone found the connection dead. */
	if (rc == ST_UNAVAILABLE && first && c->drops != drops && conn_ensure(c, PG_CONNECT_TIMEOUT) == ST_OK) {
		memcpy(t->pending, held, sizeof(held[0]) * (size_t)nheld);
		t->npending = nheld;
		t->unit_base = base;
		t->begun = false;
		t->aborted = false;
		t->broken = false;
		t->drops = c->drops;
		rc = exec_once(t, sql, n, params, changes, out);
	}
	return rc;
}

/* Runs a fixed command (COMMIT, ROLLBACK TO SAVEPOINT ...) on t's
 * connection, after t's held-back ones. tag, if given, gets the command
 * tag ("COMMIT" or "ROLLBACK"). */
static enum st_rc tx_command(struct pg_tx *t, const char *sql, char *tag, size_t tag_size)
{
	PGresult *res = NULL;
	enum st_rc rc;

	rc = tx_pipeline(t, &(struct pg_cmd){ .kind = CMD_SQL, .sql = sql, .what = sql }, 1, &res);
	if (rc == ST_OK && tag)
		snprintf(tag, tag_size, "%s", PQcmdStatus(res));
	PQclear(res);
	return rc;
}

static enum st_rc savepoint_cmd(struct pg_tx *t, const char *verb, int depth)
{
	char sql[64];

	snprintf(sql, sizeof(sql), "%s sp%d", verb, depth);
	return tx_command(t, sql, NULL, 0);
}

static struct pg_pending *last_pending(struct pg_tx *t)
{
	return t->npending ? &t->pending[t->npending - 1] : NULL;
}

/* SAVEPOINT and RELEASE need no answer: they are held back (see
 * tx_pipeline). Not after a failure, though: PostgreSQL refuses them then,
 * and the caller must hear so now, as it did when they were sent at once. */
static enum st_rc pg_savepoint(struct tx *tx, int depth)
{
	struct pg_tx *t = pg_tx_downcast(tx);

	if (t->single)
		return single_misuse(t, "a savepoint (tx_nested)");
	if (!t->conn->pg)
		return ST_UNAVAILABLE;
	if (t->aborted)
		return savepoint_cmd(t, "SAVEPOINT", depth);
	return tx_defer(t, PEND_SAVEPOINT, depth);
}

static enum st_rc pg_rollback_to(struct tx *tx, int depth)
{
	struct pg_tx *t = pg_tx_downcast(tx);
	enum st_rc rc;

	if (!t->conn->pg)
		return ST_UNAVAILABLE;
	/* The savepoint has not even been sent: nothing after it ran either
	 * (statements held back after it are forgotten), so there is nothing
	 * to undo, and t was not aborted when it was held back. */
	for (int i = t->npending - 1; i >= 0; i--) {
		if (t->pending[i].kind == PEND_SAVEPOINT && t->pending[i].depth == depth) {
			pending_drop(t, i + 1);
			return ST_OK;
		}
	}
	/* Sent: whatever is still held back came after it and is undone by
	 * the rollback before it ran (a failing one must not stop it). */
	pending_drop(t, 0);
	rc = savepoint_cmd(t, "ROLLBACK TO SAVEPOINT", depth);
	if (rc == ST_OK)
		t->aborted = false; /* usable again; retry stays set */
	return rc;
}

static enum st_rc pg_release(struct tx *tx, int depth)
{
	struct pg_tx *t = pg_tx_downcast(tx);
	struct pg_pending *p = last_pending(t);

	if (!t->conn->pg)
		return ST_UNAVAILABLE;
	if (p && p->kind == PEND_SAVEPOINT && p->depth == depth) {
		t->npending--; /* nothing ran inside it: neither need be sent */
		return ST_OK;
	}
	if (t->aborted)
		return savepoint_cmd(t, "RELEASE SAVEPOINT", depth);
	if (p && p->kind == PEND_RELEASE && p->depth == depth + 1) {
		p->depth = depth; /* releasing sp<depth> releases the ones inside it */
		return ST_OK;
	}
	return tx_defer(t, PEND_RELEASE, depth);
}

/* A statement whose result the unit does not read: prepared if new (a
 * round trip, once per connection), then held back like a SAVEPOINT and
 * sent in one pipeline with the unit's next statement, or with its
 * RELEASE/COMMIT. Its failure is reported by that command with its own rc
 * (see tx_pipeline); in a batch, by the next unit's first statement, which
 * breaks the batch (run alone, each unit gets its own answer). */
static enum st_rc pg_exec_deferred(struct tx *tx, const char *sql, int n, const struct st_val *params)
{
	struct pg_tx *t = pg_tx_downcast(tx);
	const struct stmt_slot *st;
	const char **values = NULL;
	char *block = NULL;
	enum st_rc rc;

	if (t->single)
		return single_misuse(t, "a deferred statement");
	if (!t->conn->pg)
		return ST_UNAVAILABLE;
	if (t->aborted || t->retry) /* refused now, as it would be at once */
		return pg_exec(tx, sql, n, params, NULL, NULL);
	rc = stmt_with_params(t, sql, n, params, &st, &values, &block);
	if (rc)
		return rc;
	return tx_defer_entry(t, &(struct pg_pending){ .kind = PEND_EXEC, .id = st->id, .nparams = st->nparams,
						       .values = values, .block = block });
}

static struct stmt_cache *pg_stmts(struct tx *tx)
{
	return &pg_tx_downcast(tx)->conn->stmts;
}

/* tx_nested_nowait: a savepoint step whose lock waits end after the
 * store's lock timeout. A batch runs with it already (SET LOCAL in
 * batch_once); a unit alone sets it for the step, held back like the
 * SAVEPOINT, and puts the session's value back when the step is released
 * (a rollback to the savepoint undoes the SET LOCAL by itself). A 55P03
 * inside is the step's failure (result_rc: nowait_busy), not the unit's
 * retry: the unit goes on without the step's work. (A statement the step
 * deferred and left unsent reports its 55P03 after the step, as the
 * unit's: a retry, safe but dearer. Steps end with a statement whose rc
 * they read, as ledger postings and job completions do.) */
static enum st_rc pg_nested_nowait(struct tx *tx, store_unit_fn *fn, void *arg)
{
	struct pg_tx *t = pg_tx_downcast(tx);
	int depth = tx->depth + 1, mark = tx->nafter, outer = t->nowait;
	bool outer_busy = t->nowait_busy, set = !t->short_locks && !outer;
	struct pg_pending *p;
	enum st_rc rc, rc2;

	rc = pg_savepoint(tx, depth);
	if (rc == ST_OK && set)
		rc = tx_defer(t, PEND_LOCK_TIMEOUT, depth);
	if (rc)
		return rc;
	tx->depth = depth;
	t->nowait = depth;
	t->nowait_busy = false;
	rc = fn(tx, arg);
	tx->depth = depth - 1;
	if (rc == ST_OK && t->nowait_busy)
		rc = ST_BUSY; /* fn went on past a lock it did not get */
	t->nowait = outer;
	t->nowait_busy = outer_busy;
	if (rc) {
		tx->nafter = mark; /* its after-commit work goes with its writes */
		rc2 = pg_rollback_to(tx, depth);
		if (rc2)
			return rc2;
	} else if (set) {
		p = last_pending(t);
		if (p && p->kind == PEND_LOCK_TIMEOUT)
			t->npending--; /* nothing ran in the step: the SET need not go either */
		else if ((rc2 = tx_defer(t, PEND_LOCK_DEFAULT, depth)))
			return rc2;
	}
	rc2 = pg_release(tx, depth);
	return rc ? rc : rc2;
}

static const struct tx_ops pg_tx_ops = {
	.stmts = pg_stmts,
	.exec = pg_exec,
	.exec_deferred = pg_exec_deferred,
	.savepoint = pg_savepoint,
	.rollback_to = pg_rollback_to,
	.release = pg_release,
	.nested_nowait = pg_nested_nowait,
};

static void tx_start(struct pg_tx *t, struct pg_store *s, struct pg_conn *c, bool read_only)
{
	memset(t, 0, sizeof(*t));
	t->base.ops = &pg_tx_ops;
	t->base.dialect = ST_PG;
	t->base.read_only = read_only;
	t->base.now_ms = store_clock_ms(&s->base);
	t->base.rand = s->base.rand;
	t->conn = c;
	t->drops = c->drops;
	/* Held back like a savepoint: it goes out with the first statement. */
	t->begin = read_only ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
			     : "BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE";
	t->pending[t->npending++] = (struct pg_pending){ .kind = PEND_BEGIN };
	/* A write transaction learns its id with its first statement, in the
	 * same round trip, so that a COMMIT whose answer is lost can be
	 * resolved (resolve_commit). */
	if (!read_only)
		t->pending[t->npending++] = (struct pg_pending){ .kind = PEND_XID };
}

/* Ends t with COMMIT, sent with the commands still held back (RELEASEs).
 * tag, if given, gets the command tag. A transaction whose BEGIN was never
 * sent ran nothing: there is nothing to commit. */
static enum st_rc tx_commit(struct pg_tx *t, char *tag, size_t tag_size)
{
	enum st_rc rc;

	if (!t->conn->pg)
		return ST_UNAVAILABLE;
	if (!t->begun && !pending_has_exec(t)) {
		pending_drop(t, 0);
		if (tag)
			snprintf(tag, tag_size, "COMMIT");
		return ST_OK;
	}
	rc = tx_command(t, "COMMIT", tag, tag_size);
	/* A held-back command that failed made PostgreSQL skip the COMMIT
	 * behind it, so the transaction is still open (aborted): end it, or
	 * the connection's next unit would start inside it. */
	if (rc && t->conn->pg && PQtransactionStatus(t->conn->pg) != PQTRANS_IDLE)
		tx_command(t, "ROLLBACK", NULL, 0);
	return rc;
}

/* Ends t with ROLLBACK, ignoring errors beyond dropping a dead connection.
 * Held-back commands are dropped: ROLLBACK undoes them anyway. */
static void tx_rollback(struct pg_tx *t)
{
	pending_drop(t, 0);
	if (t->conn->pg && t->begun)
		tx_command(t, "ROLLBACK", NULL, 0);
}

/* ---- writers ---- */

/* What became of a transaction whose COMMIT was sent but whose answer was
 * lost with its connection: the server either committed it before the link
 * went, or rolled it back. Ask, on a new connection, by the transaction's
 * id (pg_xact_status). ST_OK: committed. ST_CONFLICT: it was not (aborted,
 * or rolled back when its connection died): nothing of it happened.
 * ST_UNAVAILABLE: no answer within PG_RESOLVE_MS (the server is down): the
 * outcome stays unknown and the client's idempotency key must decide. */
#define PG_RESOLVE_MS 5000

static enum st_rc resolve_commit(struct pg_conn *c, const char *xid, const char *started)
{
	int64_t deadline = clock_mono_ms() + PG_RESOLVE_MS;
	const char *params[2] = { xid, started };

	while (clock_mono_ms() < deadline) {
		PGresult *res;
		const char *status;
		enum st_rc rc = ST_UNAVAILABLE;
		bool again = true;

		if (conn_ensure(c, PG_CONNECT_TIMEOUT) != ST_OK) {
			sleep_ms(50);
			continue;
		}
		/* A server that restarted since (a crash) may have handed the same
		 * id to a new transaction: ids assigned but not yet in the WAL at
		 * the crash are given out again. Then the status says nothing of
		 * ours, and the outcome stays unknown. */
		res = PQexecParams(c->pg,
				   "SELECT pg_xact_status($1::xid8),"
				   " pg_postmaster_start_time() = $2::timestamptz",
				   2, NULL, params, NULL, NULL, 0);
		if (result_rc(NULL, c, res, "pg_xact_status") == ST_OK && PQntuples(res) == 1) {
			status = PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0);
			if (strcmp(PQgetvalue(res, 0, 1), "t") != 0)
				status = "restarted"; /* unknown: the client's key decides */
			if (!strcmp(status, "committed"))
				rc = ST_OK, again = false;
			else if (!strcmp(status, "aborted"))
				rc = ST_CONFLICT, again = false;
			else if (!strcmp(status, "in progress"))
				again = true; /* its backend is still finishing it */
			else
				again = false; /* too old to know: unknown */
		}
		PQclear(res);
		if (!again) {
			log_msg(c->s->base.log, rc == ST_UNAVAILABLE ? LOG_ERROR : LOG_WARN,
				"postgres: a COMMIT's answer was lost; transaction %s %s", xid,
				rc == ST_OK ? "committed" : rc == ST_CONFLICT ? "did not commit" : "is unknown");
			return rc;
		}
		sleep_ms(20);
	}
	log_msg(c->s->base.log, LOG_ERROR,
		"postgres: a COMMIT's answer was lost and transaction %s could not be looked up", xid);
	return ST_UNAVAILABLE;
}

/* Runs u alone, as its own transaction, with the retries the header
 * comment lists. u->runs counts the runs it had already (in a batch that
 * did not commit): PG_UNIT_ATTEMPTS bounds them all. */
static enum st_rc run_unit(struct pg_conn *c, struct write_unit *u)
{
	struct pg_store *s = c->s;
	enum st_rc rc = ST_UNAVAILABLE;
	/* Run before, in a batch: every run from here waits for a lock at
	 * most rerun_lock_timeout_ms (PG_RERUN_LOCK_TIMEOUT_DEFAULT_MS). */
	bool rerun = u->runs > 0;

	while (u->runs < PG_UNIT_ATTEMPTS) {
		struct pg_tx t;
		unsigned drops = c->drops;
		bool committing = false;
		int attempt = ++u->runs;

		rc = conn_ensure(c, PG_CONNECT_TIMEOUT);
		if (rc)
			return rc;
		tx_start(&t, s, c, false);
		if (rerun) {
			t.pending[t.npending++] = (struct pg_pending){ .kind = PEND_LOCK_RERUN };
			t.rerun_locks = true;
		}
		rc = u->fn(&t.base, u->arg);
		if (c->drops != t.drops) {
			/* Whatever the unit made of it, the connection died under
			 * it before COMMIT: nothing of it happened (rule 3). Its
			 * BEGIN used to find a dead connection before the unit
			 * ran; now the unit's first statement does. */
			rc = ST_UNAVAILABLE;
		} else if (t.retry) {
			rc = ST_BUSY;
		} else if (rc == ST_OK && t.aborted) {
			/* On SQLite this unit would have committed its other
			 * statements; here the failed one aborted them all. */
			log_msg(s->base.log, LOG_ERROR,
				"postgres: a write unit returned ok after a failed statement;"
				" rolled back (contain expected errors with tx_nested)");
			rc = ST_INTERNAL;
		}
		if (rc == ST_OK) {
			char tag[32] = "";

			committing = true;
			rc = tx_commit(&t, tag, sizeof(tag));
			if (rc == ST_OK && strcmp(tag, "COMMIT") != 0)
				rc = ST_INTERNAL; /* the server rolled back */
			if (rc == ST_BUSY)
				committing = false; /* refused, definitely not committed */
			if (rc == ST_UNAVAILABLE && c->drops != drops && t.xid[0] && t.started[0]) {
				/* The link died with the COMMIT: find out instead of
				 * answering a failure that may be false. */
				rc = resolve_commit(c, t.xid, t.started);
				if (rc == ST_CONFLICT) {
					committing = false; /* nothing happened: run it again */
					rc = ST_UNAVAILABLE;
				}
			}
			/* Committed: this run's after-commit work, once. A run that
			 * is retried or rolled back takes its work along. */
			if (rc == ST_OK) {
				tx_after_run(&t.base);
				store_note_commit(&s->base, 1);
			}
		} else {
			tx_rollback(&t);
		}
		tx_after_drop(&t.base); /* a run that did not commit takes its work along */
		if (rc == ST_BUSY && attempt < PG_UNIT_ATTEMPTS) {
			store_note_retry(&s->base, t.retry ? t.retry_cause : STORE_RETRY_BUSY);
			sleep_ms(jitter_ms(&c->rng, PG_RETRY_BASE_MS << attempt));
			continue;
		}
		if (rc == ST_UNAVAILABLE && c->drops != drops && !committing &&
		    attempt < PG_UNIT_ATTEMPTS) {
			/* nothing of it happened: run it on a new connection */
			store_note_retry(&s->base, STORE_RETRY_CONNECTION);
			continue;
		}
		if (rc == ST_BUSY)
			log_msg(s->base.log, LOG_WARN, "postgres: a write unit still conflicted after %d attempts",
				attempt);
		return rc;
	}
	return rc;
}

/* ---- group commit ---- */

/* What became of a batch's transaction (run_batch). */
enum pg_batch_end {
	BATCH_COMMITTED,   /* each unit's rc is its answer */
	BATCH_RERUN,       /* nothing of it happened: run every unit again */
	BATCH_FAILED,      /* not committed, or unknown: every unit gets rc */
};

/* The start of a batch's unit, or of a merged run of units (batch_merged):
 * its clock, no retry asked yet, its own pending statements, and its
 * savepoint sp1. false: the savepoint could not be made (the batch is
 * broken). */
static bool unit_savepoint(struct pg_tx *t)
{
	t->base.now_ms = store_clock_ms(&t->conn->s->base);
	t->retry = false;
	t->unit_base = t->npending;
	if (t->base.ops->savepoint(&t->base, 1))
		return false;
	t->base.depth = 1;
	return true;
}

/* One unit of a batch, under its own savepoint sp1 (its tx_nested steps
 * are sp2 and deeper). A unit that fails, saw 40001/40P01 anywhere, or
 * returned ok after a failed statement is rolled back to sp1 alone, its
 * after-commit work with it; the transaction goes on for the others.
 * false: the batch itself is broken (connection gone, a command of an
 * earlier unit failed, the savepoint could not be rolled back). */
static bool batch_unit(struct pg_tx *t, struct write_unit *u)
{
	struct pg_conn *c = t->conn;
	int mark = t->base.nafter;
	enum st_rc rc;

	u->runs++;
	if (!unit_savepoint(t))
		return false;
	rc = u->fn(&t->base, u->arg);
	t->base.depth = 0;
	if (c->drops != t->drops || t->broken)
		return false;
	u->retry_cause = STORE_RETRY_BUSY; /* the unit's own ST_BUSY, if any */
	if (t->retry) {
		rc = ST_BUSY;
		u->retry_cause = t->retry_cause;
	} else if (rc == ST_OK && t->aborted) {
		log_msg(c->s->base.log, LOG_ERROR,
			"postgres: a write unit returned ok after a failed statement;"
			" rolled back (contain expected errors with tx_nested)");
		rc = ST_INTERNAL;
	}
	u->rc = rc;
	if (rc) {
		t->base.nafter = mark;
		if (t->base.ops->rollback_to(&t->base, 1) || t->broken)
			return false;
	}
	return t->base.ops->release(&t->base, 1) == ST_OK && !t->broken && c->drops == t->drops;
}

/* Most units of one kind batch_merged gives one merge call. */
#define PG_MERGE_MAX 128

/* u and the later units of its kind (store_submit_merged) in the batch
 * that have not run, in one merge call under one savepoint (sp1): a
 * batch of registrations is one multi-row statement or two (the keys'
 * records, the accounts) instead of a SAVEPOINT, a statement and a
 * RELEASE each, which PostgreSQL ran as a subtransaction each. A merge
 * that fails in any way (a finished key, a taken wallet, 40001, a lock
 * timeout, ok after a failed statement) is rolled back to sp1, with its
 * after-commit work, and each of its units runs alone (batch_unit): each
 * still gets its own answer, and a failing one rolls back alone. Every
 * unit of the group is marked ran. false: the batch itself is broken, as
 * batch_unit's. */
static bool batch_merged(struct pg_tx *t, struct write_unit *u)
{
	struct pg_conn *c = t->conn;
	struct write_unit *units[PG_MERGE_MAX];
	void *args[PG_MERGE_MAX];
	int n = 0, mark = t->base.nafter;
	enum st_rc rc;

	for (struct write_unit *v = u; v && n < PG_MERGE_MAX; v = v->next) {
		if (!v->ran && v->merge_kind == u->merge_kind) {
			v->ran = true;
			units[n] = v;
			args[n++] = v->arg;
		}
	}
	if (n > 1) {
		if (!unit_savepoint(t))
			return false;
		rc = units[0]->merge(&t->base, args, n);
		t->base.depth = 0;
		if (c->drops != t->drops || t->broken)
			return false;
		if (rc == ST_OK && !t->retry && !t->aborted) {
			for (int i = 0; i < n; i++) {
				units[i]->runs++;
				units[i]->rc = ST_OK;
			}
			return t->base.ops->release(&t->base, 1) == ST_OK && !t->broken &&
			       c->drops == t->drops;
		}
		t->base.nafter = mark;
		if (t->base.ops->rollback_to(&t->base, 1) || t->broken ||
		    t->base.ops->release(&t->base, 1) || t->broken || c->drops != t->drops)
			return false;
	}
	for (int i = 0; i < n; i++)
		if (!batch_unit(t, units[i]))
			return false;
	return true;
}

/* Runs the units of batch (two or more) in one transaction, each under its
 * own savepoint, and commits once: one round trip and one WAL flush for
 * all instead of one each. Every unit's rc is set; *rc is what units get
 * when the batch ends BATCH_FAILED. */
static enum pg_batch_end batch_once(struct pg_conn *c, struct write_unit *batch, enum st_rc *rc)
{
	struct pg_store *s = c->s;
	struct pg_tx t;
	bool any_ok = false;
	char tag[32] = "";
	enum st_rc crc;

	*rc = conn_ensure(c, PG_CONNECT_TIMEOUT);
	if (*rc)
		return BATCH_FAILED;
	tx_start(&t, s, c, false);
	t.pending[t.npending++] = (struct pg_pending){ .kind = PEND_LOCK_TIMEOUT };
	t.short_locks = true;
	for (struct write_unit *u = batch; u; u = u->next)
		u->ran = false;
	for (struct write_unit *u = batch; u; u = u->next) {
		if (u->ran)
			continue; /* merged with an earlier unit of its kind */
		if (u->merge_kind ? !batch_merged(&t, u) : !batch_unit(&t, u)) {
			tx_rollback(&t);
			tx_after_drop(&t.base);
			return BATCH_RERUN;
		}
	}
	for (struct write_unit *u = batch; u; u = u->next)
		any_ok |= u->rc == ST_OK;
	if (!any_ok) {
		/* Each failed against the committed state and the batch-mates
		 * before it, all rolled back: their answers stand. */
		tx_rollback(&t);
		tx_after_drop(&t.base);
		return BATCH_COMMITTED;
	}
	crc = tx_commit(&t, tag, sizeof(tag));
	if (crc == ST_OK && strcmp(tag, "COMMIT") != 0)
		crc = ST_CONFLICT; /* the server rolled back */
	if (crc == ST_UNAVAILABLE && c->drops != t.drops && t.xid[0] && t.started[0]) {
		/* The link died with the COMMIT: every unit of the batch shares
		 * its outcome. */
		crc = resolve_commit(c, t.xid, t.started);
		if (crc == ST_CONFLICT) {
			tx_after_drop(&t.base);
			return BATCH_RERUN; /* aborted: nothing happened */
		}
	}
	if (crc == ST_OK) {
		unsigned durable = 0;

		tx_after_run(&t.base); /* each committed unit's work, once */
		for (struct write_unit *u = batch; u; u = u->next)
			durable += u->rc == ST_OK;
		store_note_commit(&s->base, durable);
		return BATCH_COMMITTED;
	}
	tx_after_drop(&t.base);
	if (crc == ST_UNAVAILABLE) {
		/* Unknown (the COMMIT's answer is lost and cannot be looked up),
		 * or refused for want of resources: no unit's answer is known to
		 * hold, the failed ones' included (they saw batch-mates' writes
		 * that may not have committed). The clients' keys decide. */
		*rc = ST_UNAVAILABLE;
		return BATCH_FAILED;
	}
	/* Refused at COMMIT (a deferred constraint, 40001): rolled back, but
	 * which unit caused it is unknown. Each runs again alone and gets its
	 * own answer. */
	return BATCH_RERUN;
}

/* Group commit: batch (a list of two or more units) shares one
 * transaction when it can. Units that must run again (a batch that did not
 * commit; 40001/40P01 in a unit) run alone, with run_unit's retries, after
 * the batch; their earlier runs count. Every unit is answered and freed. */
static void run_batch(struct pg_conn *c, struct write_unit *batch)
{
	struct write_unit *again = NULL, **tail = &again;
	enum st_rc rc = ST_OK;
	enum pg_batch_end end = batch_once(c, batch, &rc);

	while (batch) {
		struct write_unit *u = batch;

		batch = u->next;
		u->next = NULL;
		if (end == BATCH_RERUN || (end == BATCH_COMMITTED && u->rc == ST_BUSY)) {
			/* Counted as a run again only if it ran in the batch (a
			 * broken batch may not have reached it) and may run again. */
			if (u->runs > 0 && u->runs < PG_UNIT_ATTEMPTS)
				store_note_retry(&c->s->base, end == BATCH_RERUN ? STORE_RETRY_BATCH
										: u->retry_cause);
			*tail = u;
			tail = &u->next;
			continue;
		}
		write_unit_answer(u, end == BATCH_FAILED ? rc : u->rc);
	}
	while (again) {
		struct write_unit *u = again;

		again = u->next;
		u->next = NULL;
		write_unit_answer(u, run_unit(c, u));
	}
}

/* unit_queue_hold_fn of worker c: down and backing off while another
 * writer is up, it leaves the work to that one (until its next reconnect
 * may be tried) rather than failing units that could succeed. */
static int64_t worker_hold(void *arg, bool closed)
{
	struct pg_conn *c = arg;
	int64_t now = clock_mono_ms();

	if (!c->pg && !closed && atomic_load(&c->s->healthy) > 0 && now < c->next_try_ms)
		return c->next_try_ms * 1000;
	/* Another writer is running a batch: let the units gather for the
	 * next one (bounded: gather_us, or a full batch). */
	return unit_queue_gather_until(&c->s->queue, atomic_load(&c->s->busy) > 0,
				       (int)c->s->batch_max, c->s->gather_us, clock_mono_us());
}

/* Counts writer c in (busy) or out of pg_store.busy; out, it wakes a
 * writer holding units for it (worker_hold) to take them -- every writer
 * while some is down, as pg_submit does: a woken one may decline. */
static void writer_busy(struct pg_conn *c, bool busy)
{
	if (busy) {
		atomic_fetch_add(&c->s->busy, 1);
		return;
	}
	atomic_fetch_sub(&c->s->busy, 1);
	unit_queue_wake_held(&c->s->queue, atomic_load(&c->s->healthy) < c->s->nworkers);
}

static void *worker_main(void *arg)
{
	struct pg_conn *c = arg;
	struct write_unit *batch;
	enum unit_take_held held;

	/* Everything queued, up to batch_max: the group commit. */
	while ((batch = unit_queue_take(&c->s->queue, (int)c->s->batch_max, worker_hold, c, &held))) {
		/* A writer that was down held for its backoff, not to gather. */
		if (held != UNIT_TAKE_AT_ONCE && c->pg)
			store_note_gather(&c->s->base, held == UNIT_TAKE_HELD_DEADLINE);
		writer_busy(c, true);
		if (!batch->next)
			write_unit_answer(batch, run_unit(c, batch));
		else
			run_batch(c, batch);
		writer_busy(c, false);
	}
	return NULL;
}

static enum st_rc pg_submit(struct store *base, store_unit_fn *fn, store_done_fn *done, void *arg)
{
	struct pg_store *s = pg_downcast(base);

	/* While some writer is down, a signal could wake only a worker that
	 * declines the unit (worker_hold); wake them all then. */
	return unit_queue_push(&s->queue, fn, done, arg, atomic_load(&s->healthy) < s->nworkers);
}

/* ---- readers ---- */

/* As pg_submit, merged by batch_merged with the units of its kind that
 * the same batch takes. */
static enum st_rc pg_submit_merged(struct store *base, const void *kind, store_merge_fn *merge,
				   store_unit_fn *fn, store_done_fn *done, void *arg)
{
	struct pg_store *s = pg_downcast(base);

	return unit_queue_push_merged(&s->queue, kind, merge, fn, done, arg,
				      atomic_load(&s->healthy) < s->nworkers);
}

static enum st_rc read_on_reader(struct store *base, store_unit_fn *fn, void *arg, bool single)
{
	struct pg_store *s = pg_downcast(base);
	struct pg_conn *c;
	enum st_rc rc = ST_UNAVAILABLE;
	unsigned idx;

	idx = reader_pool_take(&s->rpool);
	c = &s->readers[idx];

	/* A connection that died since its last use is replaced by the first
	 * statement (pg_exec), before fn sees anything. */
	rc = conn_ensure(c, PG_CONNECT_TIMEOUT);
	if (rc == ST_OK) {
		struct pg_tx t;

		tx_start(&t, s, c, true);
		if (single) {
			/* No BEGIN: the one statement is a transaction by itself,
			 * ended by its pipeline's sync; nothing to COMMIT. */
			t.single = true;
			t.npending = 0;
		}
		rc = fn(&t.base, arg);
		if (rc == ST_OK && !t.aborted)
			tx_commit(&t, NULL, 0);
		else
			tx_rollback(&t);
		tx_after_drop(&t.base); /* reads have no after-commit work */
		if (rc != ST_OK && c->drops != t.drops)
			rc = ST_UNAVAILABLE; /* as when BEGIN found no server */
	}

	reader_pool_give(&s->rpool, idx);
	return rc;
}

static enum st_rc pg_read(struct store *base, store_unit_fn *fn, void *arg)
{
	return read_on_reader(base, fn, arg, false);
}

static enum st_rc pg_read_one(struct store *base, store_unit_fn *fn, void *arg)
{
	return read_on_reader(base, fn, arg, true);
}

/* ---- ping ---- */

/* SELECT 1 with a deadline, so a hung server cannot hang /health/ready. */
static enum st_rc ping_query(struct pg_conn *c, int timeout_ms, struct buf *why)
{
	int64_t deadline = clock_mono_ms() + timeout_ms;
	PGresult *res;
	bool ok = false;

	if (!PQsendQuery(c->pg, "SELECT 1"))
		goto lost;
	while (PQisBusy(c->pg)) {
		struct pollfd pfd = { .fd = PQsocket(c->pg), .events = POLLIN };
		int64_t left = deadline - clock_mono_ms();
		int n;

		if (left <= 0) {
			buf_printf(why, "no answer to SELECT 1 within %d ms", timeout_ms);
			conn_drop(c, why->ptr);
			return ST_UNAVAILABLE;
		}
		n = poll(&pfd, 1, (int)left);
		if (n < 0 && errno != EINTR)
			goto lost;
		if (n > 0 && !PQconsumeInput(c->pg))
			goto lost;
	}
	while ((res = PQgetResult(c->pg))) {
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
			ok = true;
		else if (!why->len)
			put_message(c->s, why, PQresultErrorMessage(res));
		PQclear(res);
	}
	if (ok)
		return ST_OK;
	if (PQstatus(c->pg) == CONNECTION_OK)
		return ST_UNAVAILABLE;
lost:
	if (!why->len)
		put_message(c->s, why, PQerrorMessage(c->pg));
	conn_drop(c, why->ptr);
	return ST_UNAVAILABLE;
}

static enum st_rc pg_ping(struct store *base, struct buf *why)
{
	struct pg_store *s = pg_downcast(base);
	struct buf reason = BUF_INIT(1024);
	struct pg_conn *c = &s->pinger;
	enum st_rc rc;

	pthread_mutex_lock(&s->pmu);
	/* Readiness wants the truth now, so no backoff: probes are rare. */
	c->next_try_ms = 0;
	if (!c->pg) {
		c->pg = pg_connect(s, "2", &reason);
		if (c->pg && c->down_logged)
			log_msg(s->base.log, LOG_INFO, "postgres: ping connection reconnected");
		if (c->pg)
			atomic_store(&s->up_at_ms, clock_mono_ms()); /* the pool may retry now */
		c->down_logged = !c->pg;
	}
	rc = c->pg ? ping_query(c, PG_PING_TIMEOUT_MS, &reason) : ST_UNAVAILABLE;
	pthread_mutex_unlock(&s->pmu);
	if (rc && why)
		buf_printf(why, "postgres: %s", reason.len ? reason.ptr : st_rc_str(rc));
	buf_release(&reason);
	return rc;
}

/* ---- close ---- */

static void pg_close(struct store *base)
{
	struct pg_store *s = pg_downcast(base);

	unit_queue_close(&s->queue); /* workers finish what is queued, then exit */
	for (unsigned i = 0; i < s->nworkers; i++)
		if (s->workers[i].started)
			pthread_join(s->workers[i].thread, NULL);
	for (unsigned i = 0; i < s->nworkers; i++)
		conn_close(&s->workers[i].conn);
	for (unsigned i = 0; i < s->nreaders; i++)
		conn_close(&s->readers[i]);
	conn_close(&s->pinger);
	free(s->workers);
	free(s->readers);
	unit_queue_destroy(&s->queue);
	reader_pool_destroy(&s->rpool);
	pthread_mutex_destroy(&s->pmu);
	free(s->url);
	if (s->password) {
		memset(s->password, 0, strlen(s->password));
		free(s->password);
	}
	free(s);
}

static const struct store_ops pg_store_ops = {
	.name = "postgres",
	.submit = pg_submit,
	.submit_merged = pg_submit_merged,
	.read = pg_read,
	.read_one = pg_read_one,
	.ping = pg_ping,
	.close = pg_close,
};

/* ---- open + migrate ---- */

/* Runs sql on a connection outside any pg_tx; on failure err says why. */
static enum st_rc simple(struct pg_store *s, PGconn *pg, const char *sql, int n, const char *const *params,
			 PGresult **out, struct buf *err)
{
	PGresult *res = n ? PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0) : PQexec(pg, sql);
	ExecStatusType status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;

	if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
		if (out)
			*out = res;
		else
			PQclear(res);
		return ST_OK;
	}
	put_message(s, err, res ? PQresultErrorMessage(res) : PQerrorMessage(pg));
	PQclear(res);
	return PQstatus(pg) == CONNECTION_OK ? ST_INTERNAL : ST_UNAVAILABLE;
}

/* The migration steps (store.c runs them) on the pinger's connection. */
struct pg_migrate {
	struct pg_store *s;
	PGconn *pg;
};

static enum st_rc migrate_begin(void *arg, int *current, struct buf *why)
{
	struct pg_migrate *m = arg;
	PGresult *res = NULL;
	enum st_rc rc = simple(m->s, m->pg, "BEGIN", 0, NULL, NULL, why);

	if (rc)
		return rc;
	rc = simple(m->s, m->pg,
		    "SELECT pg_advisory_xact_lock(" PG_MIGRATION_LOCK ");"
		    "CREATE TABLE IF NOT EXISTS schema_version ("
		    " version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
		    0, NULL, NULL, why);
	if (!rc)
		rc = simple(m->s, m->pg, "SELECT coalesce(max(version), 0) FROM schema_version", 0, NULL,
			    &res, why);
	if (rc) {
		if (PQstatus(m->pg) == CONNECTION_OK)
			PQclear(PQexec(m->pg, "ROLLBACK"));
		return rc;
	}
	*current = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return ST_OK;
}

static enum st_rc migrate_apply(void *arg, const struct st_migration *mig, struct buf *why)
{
	struct pg_migrate *m = arg;
	char version[16];
	const char *params[2] = { version, mig->name };
	enum st_rc rc;

	snprintf(version, sizeof(version), "%d", mig->version);
	rc = simple(m->s, m->pg, mig->sql, 0, NULL, NULL, why);
	if (!rc)
		rc = simple(m->s, m->pg,
			    "INSERT INTO schema_version (version, name, applied_at)"
			    " VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
			    2, params, NULL, why);
	return rc;
}

static enum st_rc migrate_commit(void *arg, struct buf *why)
{
	struct pg_migrate *m = arg;

	return simple(m->s, m->pg, "COMMIT", 0, NULL, NULL, why);
}

static void migrate_rollback(void *arg)
{
	struct pg_migrate *m = arg;

	if (PQstatus(m->pg) == CONNECTION_OK)
		PQclear(PQexec(m->pg, "ROLLBACK"));
}

static const struct st_migrator pg_migrator = {
	.name = "postgres",
	.begin = migrate_begin,
	.apply = migrate_apply,
	.commit = migrate_commit,
	.rollback = migrate_rollback,
};

static enum st_rc migrate(struct pg_store *s, PGconn *pg, struct buf *err)
{
	struct pg_migrate m = { .s = s, .pg = pg };

	return store_migrate(st_migrations_pg, &pg_migrator, &m, s->base.log, err);
}

/* The password, if the URL has one, so that messages can be scrubbed. */
static enum st_rc url_password(const char *url, char **out)
{
	char *errmsg = NULL;
	PQconninfoOption *opts = PQconninfoParse(url, &errmsg);
	enum st_rc rc = ST_OK;

	*out = NULL;
	if (!opts) {
		PQfreemem(errmsg);
		return ST_INVALID;
	}
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (strcmp(o->keyword, "password") == 0 && o->val && *o->val) {
			*out = strdup(o->val);
			if (!*out)
				rc = ST_NOMEM;
		}
	}
	PQconninfoFree(opts);
	return rc;
}

enum st_rc store_pg_open(const struct store_options *opt, struct store **out, struct buf *err)
{
	struct pg_store *s = calloc(1, sizeof(*s));
	struct buf why = BUF_INIT(1024);
	enum st_rc rc;

	if (!s)
		return ST_NOMEM;
	s->base.ops = &pg_store_ops;
	s->base.log = opt->log;
	s->base.rand = opt->rand;
	unit_queue_init(&s->queue);
	reader_pool_init(&s->rpool);
	pthread_mutex_init(&s->pmu, NULL);
	atomic_init(&s->healthy, 0);
	atomic_init(&s->busy, 0);
	atomic_init(&s->up_at_ms, 0);
	conn_init(&s->pinger, s, "ping", 0, false);

	s->url = strdup(opt->database_url);
	if (!s->url) {
		rc = ST_NOMEM;
		goto fail;
	}
	rc = url_password(s->url, &s->password);
	if (rc) {
		/* libpq's parse error may quote the URL: say less. */
		buf_puts(err, rc == ST_NOMEM ? "postgres: out of memory"
					     : "postgres: SETTLED_DATABASE_URL is not a valid connection URL");
		goto fail;
	}
	if (!PQisthreadsafe()) {
		buf_puts(err, "postgres: libpq was built without thread safety");
		rc = ST_INTERNAL;
		goto fail;
	}

	s->pinger.pg = pg_connect(s, PG_CONNECT_TIMEOUT, &why);
	if (!s->pinger.pg) {
		buf_printf(err, "postgres: %s", why.ptr);
		rc = ST_UNAVAILABLE;
		goto fail;
	}
	rc = migrate(s, s->pinger.pg, err);
	if (rc)
		goto fail;

	s->nworkers = opt->write_conns ? opt->write_conns : PG_WRITE_CONNS_DEFAULT;
	s->nreaders = opt->read_conns ? opt->read_conns : PG_READ_CONNS_DEFAULT;
	s->batch_max = opt->batch_max ? opt->batch_max : PG_BATCH_MAX_DEFAULT;
	s->gather_us = opt->gather_us < 0 ? 0 : opt->gather_us ? opt->gather_us : PG_GATHER_US_DEFAULT;
	s->lock_timeout_ms = opt->lock_timeout_ms > 0 ? opt->lock_timeout_ms : PG_BATCH_LOCK_TIMEOUT_DEFAULT_MS;
	s->rerun_lock_timeout_ms = opt->rerun_lock_timeout_ms > 0 ? opt->rerun_lock_timeout_ms
								  : PG_RERUN_LOCK_TIMEOUT_DEFAULT_MS;
	if (s->rerun_lock_timeout_ms < s->lock_timeout_ms)
		s->rerun_lock_timeout_ms = s->lock_timeout_ms;
	s->workers = calloc(s->nworkers, sizeof(*s->workers));
	s->readers = calloc(s->nreaders, sizeof(*s->readers));
	if (!s->workers || !s->readers || reader_pool_fill(&s->rpool, s->nreaders)) {
		rc = ST_NOMEM;
		goto fail;
	}
	/* Connect everything now: a server that cannot get its pool (too
	 * many clients, bad permissions) should say so at start. */
	for (unsigned i = 0; i < s->nreaders; i++)
		conn_init(&s->readers[i], s, "reader", i, false);
	for (unsigned i = 0; i < s->nworkers; i++)
		conn_init(&s->workers[i].conn, s, "writer", i, true);
	for (unsigned i = 0; i < s->nreaders + s->nworkers; i++) {
		struct pg_conn *c = i < s->nreaders ? &s->readers[i] : &s->workers[i - s->nreaders].conn;

		buf_reset(&why);
		c->pg = conn_connect(c, PG_CONNECT_TIMEOUT, &why);
		if (!c->pg) {
			buf_printf(err, "postgres: %s connection %u: %s", c->role, c->idx, why.ptr);
			rc = ST_UNAVAILABLE;
			goto fail;
		}
		if (c->writer)
			atomic_fetch_add(&s->healthy, 1);
	}
	for (unsigned i = 0; i < s->nworkers; i++) {
		if (pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i].conn)) {
			buf_puts(err, "postgres: cannot start the pool threads");
			rc = ST_INTERNAL;
			goto fail;
		}
		s->workers[i].started = true;
	}
	log_msg(s->base.log, LOG_INFO,
		"postgres store: database %s on %s port %s, %u writers, %u readers, batches of up to %u, "
		"lock timeout %lld ms (%lld ms a run after its batch)",
		PQdb(s->pinger.pg), PQhost(s->pinger.pg), PQport(s->pinger.pg), s->nworkers, s->nreaders,
		s->batch_max, (long long)s->lock_timeout_ms, (long long)s->rerun_lock_timeout_ms);
	buf_release(&why);
	*out = &s->base;
	return ST_OK;
fail:
	buf_release(&why);
	pg_close(&s->base);
	return rc;
}

/* store.h — the store interface: transactions and write units over two
 * backends (SQLite embedded, PostgreSQL scale-out), picked by store_open().
 *
 * The one rule (DESIGN.md): a request's effect, its idempotency record and
 * the jobs it causes commit in one transaction or not at all. So callers
 * never BEGIN or COMMIT: they hand the store a *write unit*, a function that
 * runs inside an open transaction and returns ST_OK to commit its work or
 * anything else to roll it back.
 *
 * SQLite: one writer thread takes every queued unit and runs each under its
 * own SAVEPOINT inside one BEGIN IMMEDIATE ... COMMIT (group commit: one
 * fsync per batch); a failing unit rolls back to its savepoint alone. Only
 * that thread writes, so writes never see SQLITE_BUSY. Reads run on a pool
 * of read-only connections (WAL lets them run beside the writer).
 * PostgreSQL: a pool of connections; each takes every queued unit into one
 * transaction, each unit under its own savepoint as on SQLite (a unit alone
 * in the queue is a transaction of its own). A unit is re-run as a whole
 * (up to 5 runs) on serialization failure or deadlock, and when the
 * connection died before COMMIT was sent; once a run is bound to be re-run,
 * its further statements fail at once with ST_BUSY (it ends and lets go of
 * its locks). A unit may therefore run more
 * than once before done() is called: it must fill its outputs from scratch
 * each time and have no effects outside tx (see docs/internals/store.md).
 *
 * SQL is written once where the dialects agree: parameters are $1, $2...
 * (the SQLite backend binds them by name, so order and reuse are free),
 * RETURNING, ON CONFLICT. Where they differ, branch on tx_dialect().
 * Statements are prepared once per connection and cached by their text's
 * address, so pass string literals (or other storage that outlives the
 * store) as sql. */
#ifndef SETTLED_STORE_H
#define SETTLED_STORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "rc.h"

struct store;
struct tx;
struct logger;

enum st_dialect { ST_SQLITE = 1, ST_PG = 2 };

/* A bound parameter. Text is copied by the backend during the call. */
struct st_val {
	enum { SV_NULL = 0, SV_INT, SV_TEXT } type;
	int64_t i;
	const char *s;
	size_t len;
};
#define SV_I(x) ((struct st_val){ .type = SV_INT, .i = (int64_t)(x) })
#define SV_S(x) ((struct st_val){ .type = SV_TEXT, .s = (x), .len = strlen(x) })
#define SV_SN(x, n) ((struct st_val){ .type = SV_TEXT, .s = (x), .len = (n) })
#define SV_NULLV ((struct st_val){ .type = SV_NULL })
/* A string that may be NULL: bound as SQL NULL then. */
#define SV_SOPT(x) ((x) ? SV_S(x) : SV_NULLV)
/* ST_ARGS(v1, v2, ...) expands to the `n, params` pair the tx_* calls take. */
#define ST_ARGS(...) \
	(int)(sizeof((struct st_val[]){ __VA_ARGS__ }) / sizeof(struct st_val)), \
		(struct st_val[]){ __VA_ARGS__ }
#define ST_NOARGS 0, NULL

/* A materialised result: every cell as text (SQL NULL -> NULL pointer).
 * Results are small by construction (keyset pages are capped). */
struct st_rows {
	int nrows;
	int ncols;
	char **cells;   /* nrows * ncols; row-major */
	size_t *lens;
	/* NULL: each cell is its own allocation (PostgreSQL). Else one
	 * allocation per row (SQLite), blocks[row], which that row's cells
	 * point into; rows_free frees these instead of the cells. */
	char **blocks;
};
const char *rows_text(const struct st_rows *r, int row, int col); /* NULL if SQL NULL */
size_t rows_len(const struct st_rows *r, int row, int col);
int64_t rows_i64(const struct st_rows *r, int row, int col);      /* 0 if NULL */
/* Copies a cell into dst (cap bytes, always NUL-terminated, cut to fit);
 * SQL NULL becomes "". For filling the fixed-size fields of row structs. */
void rows_copy(const struct st_rows *r, int row, int col, char *dst, size_t cap);
void rows_free(struct st_rows *r);                                 /* accepts NULL */

/* Runs sql with params. *changes (may be NULL) gets the affected row count.
 * Returns ST_UNIQUE on a unique-constraint violation, ST_CONFLICT on a CHECK
 * or trigger rejection (ledger balance, negative balance), ST_BUSY when the
 * backend says retry, ST_UNAVAILABLE when the connection is gone, ST_INTERNAL
 * otherwise. On PostgreSQL an error aborts the whole transaction, so a unit
 * must return the error rather than carry on (use tx_nested to contain one). */
enum st_rc tx_exec(struct tx *tx, const char *sql, int n, const struct st_val *params,
		   int64_t *changes);
/* As tx_exec for a statement whose result (rows, row count) the unit does
 * not read and whose failure is no answer of its own, only the unit's
 * failure (a transition record, a job, a ledger entry the next statement
 * closes). SQLite runs it at once. PostgreSQL holds it back and sends it in
 * one pipeline with the unit's next statement, or with its RELEASE or
 * COMMIT: one round trip fewer. Its failure is then returned, with its own
 * rc, by that next statement (so choose a next statement whose rc the
 * caller does not read as an answer of its own, e.g. ST_UNIQUE), or makes
 * the unit fail at its end; never another unit's. Always checks rc: a
 * refusal now (connection gone, transaction already aborted) ends the unit
 * like any failed statement. */
enum st_rc tx_exec_deferred(struct tx *tx, const char *sql, int n, const struct st_val *params);
/* As tx_exec, returning rows (caller frees with rows_free). *out is set
 * only on ST_OK. */
enum st_rc tx_query(struct tx *tx, const char *sql, int n, const struct st_val *params,
		    struct st_rows **out);
/* As tx_query for a statement that names one row: ST_NOT_FOUND (and *out
 * NULL) when it returns none; the caller reads row 0 and frees *out. */
enum st_rc tx_query_one(struct tx *tx, const char *sql, int n, const struct st_val *params,
			struct st_rows **out);
/* A multi-row statement: head, then nrows copies of row joined by ", ",
 * then tail. row names its own parameters $1..$width; copy r gets
 * $(k + r * width), so params holds the rows' values one row after the
 * other (nrows * width values). E.g. head "INSERT INTO t (a, b) VALUES ",
 * row "($1, $2)", tail " ON CONFLICT DO NOTHING". The texts are made once
 * per connection and row count, and kept with its prepared statements. */
struct st_rows_sql {
	const char *head;
	const char *row;
	const char *tail;
	int width;
};
/* Runs q for nrows rows (>= 1) as a few statements of at most
 * ST_ROWS_MAX rows each (chunks of 64, 32, ... 1: a handful of texts per
 * connection); *changes (may be NULL) gets the sum. The statements are
 * separate: on a failure the caller rolls the whole unit back. */
#define ST_ROWS_MAX 64
enum st_rc tx_exec_rows(struct tx *tx, const struct st_rows_sql *q, int nrows,
			const struct st_val *params, int64_t *changes);
enum st_dialect tx_dialect(const struct tx *tx);
/* Milliseconds since the epoch, fixed for the whole transaction (the
 * store's clock, injectable in tests). */
int64_t tx_now_ms(const struct tx *tx);

typedef enum st_rc store_unit_fn(struct tx *tx, void *arg);
typedef void store_done_fn(void *arg, enum st_rc rc);
/* Runs n (>= 2) units of one kind together, args in queue order: the same
 * writes as their fns one after the other, done with fewer statements
 * (multi-row INSERTs). ST_OK only when every unit's work is done and each
 * would have returned ST_OK alone; anything else and the store rolls the
 * whole merged run back and runs each unit's fn alone, so a unit that fails
 * still fails alone, with its own rc (see store_submit_merged). */
typedef enum st_rc store_merge_fn(struct tx *tx, void *const *args, int n);

/* Runs fn inside a savepoint of tx: if fn fails, only its work is undone
 * (after-commit work it registered included) and its rc is returned; the
 * enclosing unit may go on. */
enum st_rc tx_nested(struct tx *tx, store_unit_fn *fn, void *arg);

/* As tx_nested, for a step that must not wait long for another
 * transaction's locks while its unit holds locks of its own (several
 * independent effects in one unit: each one's rows locked until COMMIT,
 * taken in no common order, so two such units can wait on each other).
 * On PostgreSQL fn waits at most the store's lock timeout
 * (store_options.lock_timeout_ms) for a row lock, alone or in a batch; a
 * lock it could not get within it fails the step with ST_BUSY (rolled back
 * to its savepoint, even if fn went on) WITHOUT making the unit run again:
 * the unit goes on, and the caller may redo the step in a unit of its own,
 * where it waits as long as it takes. SQLite: tx_nested (one writer, no
 * lock waits). */
enum st_rc tx_nested_nowait(struct tx *tx, store_unit_fn *fn, void *arg);

/* Work that must happen only once the unit's writes are durable: metrics,
 * log lines about the effect, waking a worker. A unit may run more than
 * once (PostgreSQL re-runs it after a serialization failure) and its
 * transaction may still roll back after it returns (a failed batch COMMIT),
 * so nothing observable may happen inside it. tx_after_commit registers
 * fn(arg, n) to run once, on the store's thread, after the COMMIT that makes
 * this run of the unit durable; it is dropped with the work if the unit (or
 * the tx_nested step that registered it) rolls back, if the unit is re-run,
 * or if the COMMIT fails. arg is borrowed until then (a unit's arg lives
 * until its done() callback, which runs after these). ST_NOMEM when it
 * could not be recorded (return it: the unit rolls back). */
typedef void tx_after_fn(void *arg, int64_t n);
enum st_rc tx_after_commit(struct tx *tx, tx_after_fn *fn, void *arg, int64_t n);

struct store_ops {
	const char *name;
	enum st_rc (*submit)(struct store *s, store_unit_fn *fn, store_done_fn *done, void *arg);
	/* store_run's units (workers, the ticker): NULL = submit */
	enum st_rc (*submit_background)(struct store *s, store_unit_fn *fn, store_done_fn *done,
					void *arg);
	/* NULL: store_submit_merged submits the unit alone */
	enum st_rc (*submit_merged)(struct store *s, const void *kind, store_merge_fn *merge,
				    store_unit_fn *fn, store_done_fn *done, void *arg);
	enum st_rc (*read)(struct store *s, store_unit_fn *fn, void *arg);
	enum st_rc (*read_one)(struct store *s, store_unit_fn *fn, void *arg); /* NULL: read */
	enum st_rc (*ping)(struct store *s, struct buf *why);
	void (*close)(struct store *s);
};

struct randpool;

/* Why the store last refused a write for want of storage (SQLite's disk
 * full or I/O error), or STORE_WRITE_OK. Kept so that /health/ready names
 * the store while writes fail and reads still work. */
enum store_write_fault { STORE_WRITE_OK = 0, STORE_WRITE_DISK_FULL, STORE_WRITE_IO_ERROR };
const char *store_write_fault_str(enum store_write_fault f);   /* "disk_full", "io_error", "ok" */

/* Told, on the writer's thread, each time a batch of writes fails for want
 * of storage; the server counts it (settled_store_write_faults_total). */
typedef void store_fault_fn(void *arg, enum store_write_fault f);

/* Told, on the writer's thread, after each COMMIT that made write units
 * durable, how many it made durable (group commit's batch size; units
 * that failed and rolled back alone are not counted); the server observes
 * it (settled_store_commit_units). */
typedef void store_commit_fn(void *arg, unsigned units);

/* Why a write unit was run again (PostgreSQL; SQLite never runs one twice):
 * PostgreSQL refused it with deadlock_detected (40P01), serialization_failure
 * (40001) or, in a batch, lock_not_available (55P03: it waited longer than
 * the batch's lock_timeout for a row another transaction holds); the unit
 * returned ST_BUSY itself; its batch did not commit (broken or refused at
 * COMMIT: every unit runs again alone); its connection died before COMMIT. */
enum store_retry_cause {
	STORE_RETRY_DEADLOCK = 0,
	STORE_RETRY_SERIALIZATION,
	STORE_RETRY_LOCK_TIMEOUT,
	STORE_RETRY_BUSY,
	STORE_RETRY_BATCH,
	STORE_RETRY_CONNECTION,
	STORE_RETRY_CAUSES
};
/* "deadlock", "serialization", "lock_timeout", "busy", "batch", "connection" */
const char *store_retry_cause_str(enum store_retry_cause c);

/* Told, on the writer's thread, each time a unit is about to be run again
 * and why; the server counts it (settled_store_unit_retries_total). */
typedef void store_retry_fn(void *arg, enum store_retry_cause c);

/* Told, on a PostgreSQL writer's thread, each time it takes units it held
 * back to gather (SETTLED_PG_GATHER_US) while another writer ran a batch:
 * deadline when the wait ran to its bound, false when the busy writer's end
 * (or a closing queue) woke it first. The server counts it
 * (settled_store_gather_waits_total{end}). */
typedef void store_gather_fn(void *arg, bool deadline);

struct store {
	const struct store_ops *ops;
	const struct logger *log;
	store_fault_fn *on_write_fault;     /* may be NULL */
	void *on_write_fault_arg;
	store_commit_fn *on_commit;         /* may be NULL */
	void *on_commit_arg;
	store_retry_fn *on_retry;           /* may be NULL */
	void *on_retry_arg;
	store_gather_fn *on_gather;         /* may be NULL */
	void *on_gather_arg;
	_Atomic int write_fault;            /* enum store_write_fault of the last batch */
	int64_t (*clock_ms)(void *clock_arg); /* NULL = wall clock */
	void *clock_arg;
	struct randpool *rand;              /* ids made in units; NULL = RAND_bytes */
	/* A read inside a write unit is cheap and sees every committed write:
	 * the writer's own connection, its page cache warm, inside the write
	 * lock (SQLite). The dispatcher then looks an unknown idempotency key
	 * up there, before the handler's unit (ROUTE_KEY_CHECK_IN_UNIT).
	 * false on PostgreSQL, where it would add a round trip to the unit:
	 * there the key's record insert finds a finished key instead. */
	bool unit_reads_cheap;
	/* Every write unit runs on one thread (SQLite's writer): a read a
	 * unit can do without (an immutable fact a worker can look up on a
	 * read connection first) is worth keeping off it, where on
	 * PostgreSQL it would only add a round trip. */
	bool one_writer;
};

/* For the backends: tells on_commit that a COMMIT made units durable. */
static inline void store_note_commit(struct store *s, unsigned units)
{
	if (units && s->on_commit)
		s->on_commit(s->on_commit_arg, units);
}

/* For the backends: tells on_retry that a unit runs again, and why. */
static inline void store_note_retry(struct store *s, enum store_retry_cause c)
{
	if (s->on_retry)
		s->on_retry(s->on_retry_arg, c);
}

/* For the backends: tells on_gather how a writer's gathering wait ended. */
static inline void store_note_gather(struct store *s, bool deadline)
{
	if (s->on_gather)
		s->on_gather(s->on_gather_arg, deadline);
}

struct store_options {
	const char *sqlite_path;    /* embedded mode */
	const char *database_url;   /* postgres://... selects PostgreSQL */
	unsigned read_conns;        /* read pool size; 0 = 4 */
	unsigned write_conns;       /* PostgreSQL write pool size; 0 = 4 (SQLite: one writer) */
	unsigned batch_max;         /* PostgreSQL: most units one writer commits together;
				     * 0 = 128, 1 = no group commit (SQLite: ignored) */
	int64_t lock_timeout_ms;    /* PostgreSQL: a batched unit's lock wait; 0 = 10 ms (SQLite: ignored) */
	/* PostgreSQL: longest a queued unit is held back for a later batch
	 * while another writer runs one (gathering); 0 = 2000 us, negative =
	 * never held (SQLite: ignored). */
	int64_t gather_us;
	/* PostgreSQL: how long a unit run again alone after its batch (it
	 * waited past lock_timeout_ms there, or the batch did not commit)
	 * waits for a row lock in each of its runs; past it the run ends as a
	 * retry, and a unit out of runs gets ST_BUSY. 0 = 1000 ms, and never
	 * below lock_timeout_ms (SQLite: ignored). */
	int64_t rerun_lock_timeout_ms;
	const struct logger *log;
	struct randpool *rand;      /* borrowed, for tx_random(); may be NULL */
};

/* Opens the backend the options name, applies pending migrations and
 * returns it in *out. ST_UNAVAILABLE when it cannot be reached; err says why. */
enum st_rc store_open(const struct store_options *opt, struct store **out, struct buf *err);

/* Queues fn as a write unit. done(arg, rc) is called exactly once, on a
 * store thread, after the unit's work is durable (rc == ST_OK) or rolled
 * back (rc is fn's error, or the commit's). arg is borrowed until done. */
static inline enum st_rc store_submit(struct store *s, store_unit_fn *fn, store_done_fn *done,
				      void *arg)
{
	return s->ops->submit(s, fn, done, arg);
}

/* As store_submit, for a unit that the writer may run together with the
 * other units of the same kind (a non-NULL token, e.g. the address of a
 * static const object) that it takes in the same batch: merge(tx, args, n)
 * once, under one savepoint, in place of the first of them (a batch's
 * units run in queue order otherwise; units of one kind are independent
 * of one another and of the units they move ahead of, or must not be
 * merged). If merge fails, its work is rolled back and each unit runs
 * alone under its own savepoint, as store_submit would have run it. SQLite
 * only; PostgreSQL runs every unit alone (its batches re-run units one by
 * one on many conditions, see docs/internals/store.md). */
static inline enum st_rc store_submit_merged(struct store *s, const void *kind,
					     store_merge_fn *merge, store_unit_fn *fn,
					     store_done_fn *done, void *arg)
{
	if (!s->ops->submit_merged)
		return s->ops->submit(s, fn, done, arg);
	return s->ops->submit_merged(s, kind, merge, fn, done, arg);
}

/* Synchronous write unit: blocks until committed or rolled back. For
 * workers, the ticker and tests; request threads use store_submit. Its
 * unit is a background one: while units of requests are queued, SQLite's
 * writer takes at most WRITER_BACKGROUND_PER_BATCH background units into a
 * batch (the oldest; the others keep their place for the next batches),
 * so a job backlog cannot fill the batches that answer clients; with no
 * request queued it takes them all, as before (docs/internals/store.md
 * "Who gets the writer"). */
enum st_rc store_run(struct store *s, store_unit_fn *fn, void *arg);

/* Runs fn in a read-only transaction on a read connection (consistent
 * snapshot); writes fail. Blocks the calling thread. */
static inline enum st_rc store_read(struct store *s, store_unit_fn *fn, void *arg)
{
	return s->ops->read(s, fn, arg);
}

/* store_read for a unit that runs exactly one statement (a point lookup on
 * a request's path: an API key, an idempotency record). A single statement
 * sees one snapshot by itself, so PostgreSQL runs it alone, without
 * BEGIN ... COMMIT around it: one round trip and one command instead of two
 * round trips and three. A second statement (or tx_nested) in fn fails with
 * ST_INTERNAL (logged): use store_read. SQLite likewise: no BEGIN/COMMIT on
 * the reader, the statement alone in autocommit mode (two statements less). */
static inline enum st_rc store_read_one(struct store *s, store_unit_fn *fn, void *arg)
{
	return s->ops->read_one ? s->ops->read_one(s, fn, arg) : s->ops->read(s, fn, arg);
}

/* Cheap liveness check for /health/ready. */
static inline enum st_rc store_ping(struct store *s, struct buf *why)
{
	return s->ops->ping(s, why);
}

/* Finishes queued units, then closes. Accepts NULL. */
void store_close(struct store *s);

/* Backends. */
enum st_rc store_sqlite_open(const struct store_options *opt, struct store **out, struct buf *err);
enum st_rc store_pg_open(const struct store_options *opt, struct store **out, struct buf *err);

/* Backend-private: each backend implements these for its struct tx. */
struct tx_ops {
	enum st_rc (*exec)(struct tx *tx, const char *sql, int n, const struct st_val *params,
			   int64_t *changes, struct st_rows **out);
	/* NULL: tx_exec_deferred runs the statement at once */
	enum st_rc (*exec_deferred)(struct tx *tx, const char *sql, int n, const struct st_val *params);
	enum st_rc (*savepoint)(struct tx *tx, int depth);
	enum st_rc (*rollback_to)(struct tx *tx, int depth);
	enum st_rc (*release)(struct tx *tx, int depth);
	/* the statement cache of tx's connection (tx_exec_rows keeps its texts there) */
	struct stmt_cache *(*stmts)(struct tx *tx);
	/* NULL: tx_nested_nowait is tx_nested */
	enum st_rc (*nested_nowait)(struct tx *tx, store_unit_fn *fn, void *arg);
};
struct tx_after {
	tx_after_fn *fn;
	void *arg;
	int64_t n;
};

struct tx {
	const struct tx_ops *ops;
	enum st_dialect dialect;
	int64_t now_ms;
	int depth;       /* savepoint nesting */
	bool read_only;
	const char *trace_context; /* see tx_trace_context(); NULL when none */
	struct randpool *rand;     /* the store's; NULL = RAND_bytes each time */
	/* After-commit work registered (tx_after_commit): on SQLite, that of
	 * every unit of the batch. malloc'd; tx_after_run/_drop free it. */
	struct tx_after *after;
	int nafter, after_cap;
};

/* Backend-private: runs and forgets tx's after-commit work (after its
 * COMMIT succeeded), or forgets it (the transaction rolled back). */
void tx_after_run(struct tx *tx);
void tx_after_drop(struct tx *tx);

/* Fills out with n random bytes for an identifier made inside a unit (from
 * the store's randpool, see randpool.h). On the impossible CSPRNG failure
 * the bytes are zero and the unique constraint on the id catches a clash. */
void tx_random(struct tx *tx, void *out, size_t n);

/* Fills out with prefix + 24 hex digits: 12 of the unit's clock (ms), 12
 * random (ids of accounts, ledger rows, holds and intents). prefix must be
 * short (<= 12 bytes; a longer one is cut). */
#define ST_ID_MAX 40
void tx_new_id(struct tx *tx, const char *prefix, char out[ST_ID_MAX + 1]);

/* The trace context of whatever the running unit works for (a request, a
 * job), in the stored form of trace.h ("00-<trace>-<span>-<flags>[ <state>]"),
 * or NULL. queue_enqueue records it on the jobs the unit enqueues (unless
 * the job_spec names one), so a job's span continues the trace of its
 * cause. Set by whoever submits the unit, around the caller's code only
 * (dispatch.c handler_unit, worker.c commit_unit): tx_set_trace_context returns
 * the previous value, which the setter restores before returning. The
 * string is borrowed for as long as it is set. */
static inline const char *tx_trace_context(const struct tx *tx)
{
	return tx->trace_context;
}
static inline const char *tx_set_trace_context(struct tx *tx, const char *tc)
{
	const char *prev = tx->trace_context;

	tx->trace_context = tc;
	return prev;
}

/* Backend-private: what both backends share. */

/* The store's clock: s->clock_ms when set (tests), else the wall clock, in
 * milliseconds since the epoch. Each transaction's tx_now_ms. */
int64_t store_clock_ms(const struct store *s);

/* A per-connection statement cache keyed by the SQL text's address (open
 * addressing, grown at half full). A slot holds what the backend keeps
 * for a prepared statement: SQLite its handle, PostgreSQL the statement's
 * name number and parameter count. */
struct stmt_slot {
	const char *sql;  /* NULL: empty */
	void *handle;
	unsigned id;
	int nparams;
};
struct stmt_rows_text;
struct stmt_cache {
	struct stmt_slot *slots;
	size_t nslots, used;
	struct stmt_rows_text *texts;  /* tx_exec_rows's statement texts, freed by clear */
};
/* sql's slot: *found says whether it holds a prepared statement; if not,
 * the backend prepares one, fills the slot's fields and calls
 * stmt_cache_fill. NULL: out of memory. The slot is valid until the next
 * lookup or stmt_cache_clear. */
struct stmt_slot *stmt_cache_find(struct stmt_cache *c, const char *sql, bool *found);
void stmt_cache_fill(struct stmt_cache *c, struct stmt_slot *slot, const char *sql);
/* Forgets every slot (the backend has finalised what they held) and frees
 * the texts of tx_exec_rows's statements. */
void stmt_cache_clear(struct stmt_cache *c);
/* Forgets every slot but keeps the texts: for a connection that died and
 * is made again while a statement may be on its way. A caller of
 * tx_exec_rows holds its text's address across the reconnect (the first
 * pipeline is sent again on the new connection), so the texts, which do
 * not depend on the connection, live until stmt_cache_clear. */
void stmt_cache_forget(struct stmt_cache *c);

/* Which of a backend's n read connections are free: a request thread
 * takes an index (waiting while all are busy) and gives it back. */
struct reader_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned *free;   /* stack of indexes */
	unsigned nfree;
};
void reader_pool_init(struct reader_pool *p);                 /* none free yet */
enum st_rc reader_pool_fill(struct reader_pool *p, unsigned n); /* 0..n-1 free; ST_NOMEM */
unsigned reader_pool_take(struct reader_pool *p);
void reader_pool_give(struct reader_pool *p, unsigned idx);
void reader_pool_destroy(struct reader_pool *p);              /* after init, filled or not */

/* The write-unit queue: store_submit's units wait here, first in first
 * out, for the backend's writer thread(s), which take them in batches.
 * The queue allocates each unit (unit_queue_push); a writer that takes a
 * batch owns its units until it answers each once with write_unit_answer,
 * which calls done and frees it. Closing refuses new units; writers still
 * take what is queued and see NULL once it is empty, so every accepted
 * unit is answered. */
struct write_unit {
	store_unit_fn *fn;
	store_done_fn *done;
	void *arg;
	const void *merge_kind;   /* store_submit_merged's kind; NULL: never merged */
	store_merge_fn *merge;
	struct write_unit *next;  /* the queue's, then the taker's batch list */
	enum st_rc rc;            /* the backend's: its answer in the batch that ran it */
	bool ran;                 /* the backend's: run (SQLite: merged with an earlier unit) */
	bool background;          /* store_run's: no client waits for it */
	int runs;                 /* the backend's: runs so far (PostgreSQL runs a unit again) */
	int64_t queued_us;        /* monotonic time it was queued, us (a hold_fn's bound) */
	enum store_retry_cause retry_cause; /* the backend's: why its batch asks a run again */
};
struct unit_queue {
	pthread_mutex_t mu;
	pthread_cond_t cv;        /* CLOCK_MONOTONIC (unit_queue_take's hold) */
	struct write_unit *head, *tail;
	bool closed;
	/* While a unit that is not background is queued, a batch takes at
	 * most this many background units; 0: no limit (unit_queue_init). */
	int background_cap;
	/* Writers waiting in unit_queue_take, and of those the ones a hold
	 * keeps off queued units: a push wakes a writer only when one waits
	 * for units (a held one would look, hold again and sleep: a wake-up
	 * for nothing a unit). */
	int waiting, holding;
};
/* Until when (monotonic us, clock_mono_us) a writer leaves the queued units to the
 * others instead of taking them; 0: take them now. Called with the
 * queue's lock held, only when a unit is queued; closed: unit_queue_close
 * has been called. */
typedef int64_t unit_queue_hold_fn(void *arg, bool closed);

void unit_queue_init(struct unit_queue *q);
/* Queues fn as a unit and wakes one waiting writer (none when every
 * waiting writer is held off by its hold: it looks again at its deadline or
 * when woken by unit_queue_wake_held), or every one when wake_all (a writer
 * that declines units, see unit_queue_hold_fn, might be the one woken).
 * ST_NOMEM; ST_UNAVAILABLE once the queue is closed. */
enum st_rc unit_queue_push(struct unit_queue *q, store_unit_fn *fn, store_done_fn *done, void *arg,
			   bool wake_all);
/* As unit_queue_push for store_submit_merged's unit. */
enum st_rc unit_queue_push_merged(struct unit_queue *q, const void *kind, store_merge_fn *merge,
				  store_unit_fn *fn, store_done_fn *done, void *arg, bool wake_all);
/* As unit_queue_push for a background unit (see q->background_cap). */
enum st_rc unit_queue_push_background(struct unit_queue *q, store_unit_fn *fn, store_done_fn *done,
				      void *arg, bool wake_all);
/* Blocks until units are queued (and hold, when not NULL, returns 0),
 * then takes the oldest ones, at most max, as a list in queue order
 * (skipping background units past q->background_cap while others are
 * queued: those keep their place).
 * NULL: the queue is closed and empty, the writer's signal to exit.
 * held (may be NULL) is set to UNIT_TAKE_AT_ONCE when hold never held the
 * writer off before this take, else to how its last hold ended. */
enum unit_take_held { UNIT_TAKE_AT_ONCE, UNIT_TAKE_HELD_WOKEN, UNIT_TAKE_HELD_DEADLINE };
struct write_unit *unit_queue_take(struct unit_queue *q, int max, unit_queue_hold_fn *hold, void *arg,
				   enum unit_take_held *held);
/* Wakes every waiting writer, for them to look at hold again. It does not
 * take the queue's lock, so a writer just about to wait may miss it: meant
 * for writers held off by hold, whose wait ends by its deadline anyway. */
void unit_queue_wake_all(struct unit_queue *q);
/* For a unit_queue_hold_fn (q's lock held, a unit queued): while another
 * writer is running a batch (others_busy), a writer leaves the queued units
 * to gather for that writer's next batch -- fewer commits, bigger merged
 * runs -- until max are queued or the oldest has waited hold_us (0: never
 * holds). Returns until when (monotonic us) to hold, 0 to take them now. */
int64_t unit_queue_gather_until(const struct unit_queue *q, bool others_busy, int max,
				int64_t hold_us, int64_t now_us);
/* When a unit is queued, wakes one waiting writer (every one when
 * wake_all), under the queue's lock: a writer that has just decided to hold
 * (unit_queue_gather_until) cannot miss it. Nothing queued: nobody. */
void unit_queue_wake_held(struct unit_queue *q, bool wake_all);
/* Refuses new units from now on and wakes every writer. */
void unit_queue_close(struct unit_queue *q);
/* After the writers have exited (the queue is empty), or were never started. */
void unit_queue_destroy(struct unit_queue *q);
/* Calls u's done(arg, rc) and frees u. */
void write_unit_answer(struct write_unit *u, enum st_rc rc);

/* Migrations: NULL-terminated arrays of { version, sql } per dialect,
 * generated at build time from migrations/<dialect>/NNN_name.sql. */
struct st_migration {
	int version;
	const char *name;
	const char *sql;
};
extern const struct st_migration st_migrations_sqlite[];
extern const struct st_migration st_migrations_pg[];

/* How a backend runs the steps of a migration on its migration connection
 * (arg); each fills why on failure. */
struct st_migrator {
	const char *name;  /* for messages: "sqlite", "postgres" */
	/* Begins the migration's transaction (with whatever lock keeps two
	 * processes from migrating at once), creates schema_version if it
	 * is missing and reads the current version. */
	enum st_rc (*begin)(void *arg, int *current, struct buf *why);
	/* Runs m's SQL and records m in schema_version. */
	enum st_rc (*apply)(void *arg, const struct st_migration *m, struct buf *why);
	enum st_rc (*commit)(void *arg, struct buf *why);
	void (*rollback)(void *arg);
};
/* Applies every migration of list newer than the stored version, each in
 * its own transaction, logging each one applied. err says why it failed. */
enum st_rc store_migrate(const struct st_migration *list, const struct st_migrator *mg, void *arg,
			 const struct logger *log, struct buf *err);

#endif

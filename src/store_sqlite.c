/* store_sqlite.c — the embedded backend: SQLite in WAL mode with
 * synchronous=FULL, one writer thread with group commit, a pool of
 * read-only connections.
 *
 * Why one writer thread: SQLite allows one writer at a time; with writers
 * on many threads they would queue on the file lock and fail with
 * SQLITE_BUSY under load. Instead every write unit is queued here and the
 * writer runs whatever is queued as one transaction, each unit under its own
 * SAVEPOINT, and commits once: one fsync for the whole batch. A unit that
 * fails rolls back to its savepoint without touching the others. Units are
 * answered only after COMMIT returns, so an acknowledged write is durable.
 *
 * Statements are prepared once per connection (SQLITE_PREPARE_PERSISTENT)
 * and cached by the address of their SQL text.
 *
 * Checkpoints run on a thread and connection of their own. SQLite's
 * automatic checkpoint would run inside the writer's COMMIT every ~1000
 * pages, copying the WAL into the database file and fsyncing it while every
 * queued unit waits: a few milliseconds that land on the tail latency of
 * whoever is in that batch. A PASSIVE checkpoint on another connection, asked
 * for once per CHECKPOINT_PAGES new pages, never blocks the writer; the WAL
 * restarts from its beginning once a checkpoint has caught up, which under
 * steady writes it never does by itself (a commit lands while it copies).
 * So past CHECKPOINT_BACKSTOP_PAGES the writer finishes the job itself, and
 * only once the checkpointer has left it little to do (see wal_committed):
 * a few frames to copy and a database file already on disk. */
#include "store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "fmt.h"
#include "log.h"
#include "sqlalloc.h"
#include "walbuf.h"
#include "banned.h"

#define WRITER_BATCH_MAX 512
/* Background units (store_run: jobs' effects and completions, the ticker)
 * a batch takes while requests' units are queued: see "Who gets the
 * writer" in docs/internals/store.md. */
#define WRITER_BACKGROUND_PER_BATCH 1
/* The savepoint journal kept in memory up to this size (see store_sqlite_open). */
#define WRITER_JOURNAL_SPILL (4 << 20)
#define CHECKPOINT_PAGES 1000          /* SQLite's own autocheckpoint default */
/* The WAL restarts from its beginning only when a checkpoint has caught up
 * with every frame when the writer begins: under steady writes the
 * checkpointer never quite does. From this size on the writer checkpoints
 * itself, as soon as the checkpointer has copied all but
 * CHECKPOINT_FINISH_GAP frames and synced the database file (it runs again
 * after every commit meanwhile), and at CHECKPOINT_LIMIT_PAGES whatever is
 * left, waiting for the checkpointer's run to end if one holds SQLite's
 * checkpoint lock: the WAL stays bounded. */
#define CHECKPOINT_BACKSTOP_PAGES (4 * CHECKPOINT_PAGES)
#define CHECKPOINT_FINISH_GAP 256
#define CHECKPOINT_LIMIT_PAGES (CHECKPOINT_BACKSTOP_PAGES + CHECKPOINT_PAGES)

struct sqlite_conn {
	sqlite3 *db;
	struct stmt_cache stmts;  /* slot handle: the sqlite3_stmt */
	/* The storage fault (disk full, I/O error) of this connection's last
	 * failed call, kept at the failure: sqlite3_errcode() is undefined
	 * once a later call (a ROLLBACK TO) succeeded. The writer reads and
	 * clears it per batch. */
	enum store_write_fault fault;
	bool migrated; /* the open migration transaction applied a migration */
	/* A savepoint command failed in the open transaction (a ROLLBACK TO
	 * that could not undo a failed unit's writes, on a full disk): what
	 * the transaction holds is no longer what its units say, so nothing
	 * more runs in it and it is rolled back whole (conn_in_tx). Cleared
	 * by each BEGIN. */
	bool tx_broken;
};

struct sqlite_tx {
	struct tx base;
	struct sqlite_conn *conn;
	/* store_read_one: no BEGIN; the one statement runs in SQLite's
	 * autocommit mode, its own read transaction, ended when it is reset.
	 * Anything more is refused (single_misuse), as on PostgreSQL. */
	bool single;
	int nstmts;
	const struct logger *log; /* single: where a misuse is said */
};

struct sqlite_store {
	struct store base;
	char *path;

	struct sqlite_conn writer;
	/* The writer's VFS: its WAL's frames written in one call a commit
	 * (walbuf.h); registered before the writer opens, after it closes
	 * unregistered. */
	struct walbuf_vfs walbuf;
	pthread_t writer_thread;
	struct unit_queue queue;  /* store_submit's units, for the writer */
	int writer_started;

	/* the checkpointer (see the top of the file) */
	struct sqlite_conn checkpointer;
	pthread_t checkpoint_thread;
	pthread_mutex_t cmu;
	pthread_cond_t ccv;
	pthread_cond_t cidle; /* checkpoint_running went to 0 */
	int checkpoint_wanted;
	int checkpoint_running; /* the checkpointer is inside a checkpoint */
	int checkpoint_finishing; /* the WAL is past the backstop: see checkpointer_main */
	int checkpoint_stopping;
	int checkpoint_started;
	int checkpoint_asked_at; /* WAL pages when last asked; the writer's own */
	/* The checkpointer's last run, for the writer: the WAL's frames then,
	 * and how many of them are in the database file and on disk (0 when
	 * it could not say). */
	_Atomic int checkpoint_log;
	_Atomic int checkpoint_done;

	_Atomic int64_t write_fault_at_ms; /* monotonic ms of the last storage fault */

	struct sqlite_conn *readers;
	unsigned nreaders;
	struct reader_pool rpool;  /* which readers are free */
};

static const struct store_ops sqlite_store_ops;
static const struct tx_ops sqlite_tx_ops;

static struct sqlite_store *sqlite_downcast(struct store *s)
{
	if (s->ops != &sqlite_store_ops)
		abort(); /* a programmer error: another backend's store */
	return (struct sqlite_store *)s;
}

static enum st_rc map_sqlite_error(int rc)
{
	switch (rc) {
	case SQLITE_CONSTRAINT_UNIQUE:
	case SQLITE_CONSTRAINT_PRIMARYKEY:
		return ST_UNIQUE;
	case SQLITE_CONSTRAINT_CHECK:
	case SQLITE_CONSTRAINT_TRIGGER:
	case SQLITE_CONSTRAINT_FOREIGNKEY:
	case SQLITE_CONSTRAINT_NOTNULL:
	case SQLITE_CONSTRAINT:
		return ST_CONFLICT;
	case SQLITE_NOMEM:
		return ST_NOMEM;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
	case SQLITE_BUSY_SNAPSHOT:
		return ST_BUSY;
	case SQLITE_IOERR:
	case SQLITE_FULL:
	case SQLITE_CANTOPEN:
	case SQLITE_READONLY:
		return ST_UNAVAILABLE;
	default:
		if ((rc & 0xff) == SQLITE_CONSTRAINT)
			return ST_CONFLICT;
		if ((rc & 0xff) == SQLITE_IOERR)
			return ST_UNAVAILABLE;
		return ST_INTERNAL;
	}
}

/* Maps the connection's last error, remembering a storage fault. */
static enum st_rc conn_error(struct sqlite_conn *c)
{
	int ec = sqlite3_extended_errcode(c->db);

	if ((ec & 0xff) == SQLITE_FULL)
		c->fault = STORE_WRITE_DISK_FULL;
	else if ((ec & 0xff) == SQLITE_IOERR)
		c->fault = STORE_WRITE_IO_ERROR;
	return map_sqlite_error(ec);
}

/* ---- statement cache (store.c keeps the slots) ---- */

/* Whether st's parameters are "$1".."$n" in SQLite's own index order (as
 * in nearly every statement, and always in tx_exec_rows's texts): then
 * parameter i binds params[i - 1] without asking SQLite its name. */
static bool params_in_order(sqlite3_stmt *st)
{
	int count = sqlite3_bind_parameter_count(st);
	char want[16];

	for (int i = 1; i <= count; i++) {
		const char *name = sqlite3_bind_parameter_name(st, i);

		snprintf(want, sizeof(want), "$%d", i);
		if (!name || strcmp(name, want))
			return false;
	}
	return true;
}

/* sql's prepared statement; *in_order (may be NULL) whether its
 * parameters are $1..$n in index order (params_in_order, kept in the
 * slot's nparams: n, or -1). */
static enum st_rc conn_stmt(struct sqlite_conn *c, const char *sql, sqlite3_stmt **out,
			    bool *in_order)
{
	bool found;
	struct stmt_slot *slot = stmt_cache_find(&c->stmts, sql, &found);

	if (!slot)
		return ST_NOMEM;
	if (found) {
		*out = slot->handle;
		if (in_order)
			*in_order = slot->nparams >= 0;
		return ST_OK;
	}
	if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL) != SQLITE_OK)
		return conn_error(c);
	slot->handle = *out;
	slot->nparams = params_in_order(*out) ? sqlite3_bind_parameter_count(*out) : -1;
	if (in_order)
		*in_order = slot->nparams >= 0;
	stmt_cache_fill(&c->stmts, slot, sql);
	return ST_OK;
}

static void conn_close(struct sqlite_conn *c)
{
	for (size_t i = 0; i < c->stmts.nslots; i++)
		if (c->stmts.slots[i].sql)
			sqlite3_finalize(c->stmts.slots[i].handle);
	stmt_cache_clear(&c->stmts);
	if (c->db)
		sqlite3_close(c->db);
	c->db = NULL;
}

/* ---- tx ops ---- */

/* Binds every parameter of st, each time: a statement's values are never
 * carried over from its previous run. Text is bound SQLITE_STATIC, not
 * copied: params outlive the statement's run (sqlite_exec steps and resets
 * it before it returns), and a stale pointer left bound after the reset is
 * never read, because the next run binds every parameter again before it
 * steps. (Copying each text value, then clearing the bindings, cost ~1,000
 * instructions a value: ~10k a keyed register.) */
static enum st_rc bind_params(sqlite3_stmt *st, bool in_order, int n, const struct st_val *params)
{
	int count = sqlite3_bind_parameter_count(st);

	for (int i = 1; i <= count; i++) {
		const char *name = in_order ? NULL : sqlite3_bind_parameter_name(st, i);
		long k;
		const struct st_val *v;
		int rc;

		/* Parameters are "$k": bound by their number, whatever the order.
		 * One digit without strtol: nearly all of them. In index order
		 * (conn_stmt found out once): k is i, no name asked. */
		if (in_order)
			k = i;
		else if (!name || name[0] != '$')
			return ST_INTERNAL;
		else if (name[1] >= '1' && name[1] <= '9' && !name[2])
			k = name[1] - '0';
		else
			k = strtol(name + 1, NULL, 10);
		if (k < 1 || k > n)
			return ST_INTERNAL;
		v = &params[k - 1];
		switch (v->type) {
		case SV_INT: rc = sqlite3_bind_int64(st, i, v->i); break;
		case SV_TEXT: rc = sqlite3_bind_text64(st, i, v->s, v->len, SQLITE_STATIC, SQLITE_UTF8); break;
		default: rc = sqlite3_bind_null(st, i); break;
		}
		if (rc != SQLITE_OK)
			return map_sqlite_error(rc);
	}
	return ST_OK;
}

/* rows_append's marks, between its two passes, of what a cell holds: a
 * column's type is not to be asked again once sqlite3_column_text has
 * converted it (SQLite leaves sqlite3_column_type undefined then). */
static const char integer_cell, text_cell;

/* One row of st into r: its cells in one allocation (r->blocks[row]),
 * each NUL-terminated, instead of one a cell (a job row is 16 columns: 16
 * mallocs and frees). NULL cells point nowhere. On a failed allocation
 * the row is counted with every cell NULL (rows_free frees what there
 * is) and ST_NOMEM returned. */
static enum st_rc rows_append(struct st_rows *r, sqlite3_stmt *st, int *cap)
{
	int nc = r->ncols;
	size_t base = (size_t)r->nrows * (size_t)nc, total = 0, at = 0;
	char num[FMT_I64_LEN];
	char *block;

	if (r->nrows == *cap) {
		int ncap = *cap ? *cap * 2 : 8;
		char **cells = realloc(r->cells, sizeof(char *) * (size_t)ncap * (size_t)nc);
		size_t *lens;
		char **blocks;

		if (!cells)
			return ST_NOMEM;
		r->cells = cells;
		lens = realloc(r->lens, sizeof(size_t) * (size_t)ncap * (size_t)nc);
		if (!lens)
			return ST_NOMEM;
		r->lens = lens;
		blocks = realloc(r->blocks, sizeof(char *) * (size_t)ncap);
		if (!blocks)
			return ST_NOMEM;
		r->blocks = blocks;
		*cap = ncap;
	}
	/* First each cell's kind and length (text: SQLite's bytes once it is
	 * text; an integer: the digits fmt_i64 writes for it), then the
	 * copies into one block. */
	for (int c = 0; c < nc; c++) {
		char **cell = &r->cells[base + (size_t)c];
		size_t *len = &r->lens[base + (size_t)c];

		switch (sqlite3_column_type(st, c)) {
		case SQLITE_NULL:
			*cell = NULL;
			*len = 0;
			continue;
		case SQLITE_INTEGER:
			*cell = (char *)&integer_cell;
			*len = fmt_i64(num, sqlite3_column_int64(st, c));
			break;
		default:
			*cell = (char *)&text_cell;
			/* Converted first, then its length; a NULL pointer (a
			 * conversion that failed) reads as "" as it always did. */
			*len = sqlite3_column_text(st, c) ? (size_t)sqlite3_column_bytes(st, c) : 0;
			break;
		}
		total += *len + 1;
	}
	block = malloc(total ? total : 1);
	r->blocks[r->nrows] = block;
	if (!block) {
		for (int c = 0; c < nc; c++) {
			r->cells[base + (size_t)c] = NULL;
			r->lens[base + (size_t)c] = 0;
		}
		r->nrows++;
		return ST_NOMEM;
	}
	for (int c = 0; c < nc; c++) {
		char **cell = &r->cells[base + (size_t)c];
		size_t len = r->lens[base + (size_t)c];

		if (!*cell)
			continue;
		/* An integer's digits written here are the ones
		 * sqlite3_column_text would give, without SQLite rendering them
		 * into a buffer it allocates for the column (~150 instructions
		 * an integer; a job row has eight). */
		if (*cell == &integer_cell)
			fmt_i64(block + at, sqlite3_column_int64(st, c));
		else if (len)
			memcpy(block + at, sqlite3_column_text(st, c), len);
		block[at + len] = '\0';
		*cell = block + at;
		at += len + 1;
	}
	r->nrows++;
	return ST_OK;
}

/* Every tx runs inside a BEGIN. On some errors (a full disk, an I/O
 * error, out of memory) SQLite rolls the whole transaction back by itself
 * rather than only the statement: the batch's earlier units are undone, and
 * a statement run after that would run in autocommit mode, durable at once,
 * while its unit is told that the batch failed (a 503 whose write stayed).
 * So nothing runs on a connection whose transaction is gone. */
static enum st_rc conn_in_tx(struct sqlite_conn *c)
{
	return c->tx_broken || sqlite3_get_autocommit(c->db) ? ST_UNAVAILABLE : ST_OK;
}

/* store_read_one's unit asked for more than its one statement (what: the
 * second statement, a savepoint, a deferred statement): a bug in the unit,
 * which must use store_read. Refused before it runs: outside a BEGIN each
 * statement would see its own snapshot. */
static enum st_rc single_misuse(struct sqlite_tx *t, const char *what)
{
	log_msg(t->log, LOG_ERROR,
		"sqlite: a one-statement read (store_read_one) asked for %s; use store_read", what);
	return ST_INTERNAL;
}

static enum st_rc sqlite_exec(struct tx *tx, const char *sql, int n, const struct st_val *params,
			      int64_t *changes, struct st_rows **out)
{
	struct sqlite_tx *t = (struct sqlite_tx *)tx;
	sqlite3_stmt *st = NULL;
	struct st_rows *rows = NULL;
	bool in_order = false;
	int cap = 0, rc;
	enum st_rc ret;

	if (t->single) {
		/* In autocommit mode by design (no BEGIN): the statement is its
		 * own read transaction, ended by the sqlite3_reset below. */
		if (t->nstmts++ > 0)
			return single_misuse(t, "a second statement");
		ret = ST_OK;
	} else {
		ret = conn_in_tx(t->conn);
	}
	if (ret)
		return ret;
	ret = conn_stmt(t->conn, sql, &st, &in_order);
	if (ret)
		return ret;
	ret = bind_params(st, in_order, n, params);
	if (ret)
		goto out;
	if (out) {
		rows = calloc(1, sizeof(*rows));
		if (!rows) {
			ret = ST_NOMEM;
			goto out;
		}
		rows->ncols = sqlite3_column_count(st);
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (rows && (ret = rows_append(rows, st, &cap)))
			goto out;
	}
	if (rc != SQLITE_DONE) {
		ret = conn_error(t->conn);
		goto out;
	}
	if (changes)
		*changes = sqlite3_changes64(t->conn->db);
	if (out) {
		*out = rows;
		rows = NULL;
	}
	ret = ST_OK;
out:
	rows_free(rows);
	sqlite3_reset(st);
	return ret;
}

/* Transaction control (BEGIN, COMMIT, SAVEPOINT ...) runs for every unit,
 * so it goes through the statement cache like any other statement:
 * sqlite3_exec would parse the text again on each call, which profiling
 * showed at ~12k instructions a write unit. sql must be a string literal. */
static enum st_rc conn_simple(struct sqlite_conn *c, const char *sql)
{
	sqlite3_stmt *st;
	enum st_rc ret = conn_stmt(c, sql, &st, NULL);
	int rc;

	if (ret)
		return ret;
	rc = sqlite3_step(st);
	ret = rc == SQLITE_DONE || rc == SQLITE_ROW
		      ? ST_OK
		      : conn_error(c);
	sqlite3_reset(st);
	return ret;
}

enum savepoint_verb { SP_OPEN, SP_ROLLBACK_TO, SP_RELEASE };

/* One literal per verb and depth, so each is a cached statement. Units nest
 * a level or two (tx_nested); deeper levels are parsed each time. */
static const char *const savepoint_sql[][3] = {
#define SP(n) { "SAVEPOINT sp" #n, "ROLLBACK TO sp" #n, "RELEASE sp" #n }
	SP(0), SP(1), SP(2), SP(3), SP(4), SP(5), SP(6), SP(7),
#undef SP
};

static enum st_rc savepoint_cmd(struct tx *tx, enum savepoint_verb verb, int depth)
{
	static const char *const verbs[] = { "SAVEPOINT", "ROLLBACK TO", "RELEASE" };
	struct sqlite_tx *t = (struct sqlite_tx *)tx;
	char sql[64];
	enum st_rc ret;
	int rc;

	if (t->single)
		return single_misuse(t, "a savepoint (tx_nested)");
	/* A SAVEPOINT outside a transaction would begin one of its own, and
	 * its RELEASE would commit it (conn_in_tx). */
	if (conn_in_tx(t->conn))
		return ST_UNAVAILABLE;
	if (depth >= 0 && depth < (int)(sizeof(savepoint_sql) / sizeof(savepoint_sql[0]))) {
		ret = conn_simple(t->conn, savepoint_sql[depth][verb]);
	} else {
		snprintf(sql, sizeof(sql), "%s sp%d", verbs[verb], depth);
		rc = sqlite3_exec(t->conn->db, sql, NULL, NULL, NULL);
		ret = rc == SQLITE_OK ? ST_OK : conn_error(t->conn);
	}
	if (ret)
		t->conn->tx_broken = true;
	return ret;
}

static enum st_rc sqlite_savepoint(struct tx *tx, int depth)
{
	return savepoint_cmd(tx, SP_OPEN, depth);
}

static enum st_rc sqlite_rollback_to(struct tx *tx, int depth)
{
	return savepoint_cmd(tx, SP_ROLLBACK_TO, depth);
}

static enum st_rc sqlite_release(struct tx *tx, int depth)
{
	return savepoint_cmd(tx, SP_RELEASE, depth);
}

static struct stmt_cache *sqlite_stmts(struct tx *tx)
{
	return &((struct sqlite_tx *)tx)->conn->stmts;
}

/* At once, as store.c does without this op; a one-statement read refuses
 * it as PostgreSQL's does (held back there, it would not be its one
 * statement's). */
static enum st_rc sqlite_exec_deferred(struct tx *tx, const char *sql, int n,
				       const struct st_val *params)
{
	struct sqlite_tx *t = (struct sqlite_tx *)tx;

	if (t->single)
		return single_misuse(t, "a deferred statement");
	return sqlite_exec(tx, sql, n, params, NULL, NULL);
}

static const struct tx_ops sqlite_tx_ops = {
	.exec = sqlite_exec,
	.exec_deferred = sqlite_exec_deferred,
	.savepoint = sqlite_savepoint,
	.rollback_to = sqlite_rollback_to,
	.release = sqlite_release,
	.stmts = sqlite_stmts,
};

/* ---- writer ---- */

/* After a batch: publishes whether writes are failing for want of storage
 * (for readiness) and tells the server of each failing batch (a metric). A
 * fault seen by a unit whose batch still committed was that unit's alone
 * (SQLite rolled its statement back) and counts too: the disk is full. */
static void note_write_fault(struct sqlite_store *s)
{
	enum store_write_fault f = s->writer.fault;

	if (f != STORE_WRITE_OK)
		atomic_store(&s->write_fault_at_ms, clock_mono_ms());
	atomic_store(&s->base.write_fault, (int)f);
	if (f != STORE_WRITE_OK && s->base.on_write_fault)
		s->base.on_write_fault(s->base.on_write_fault_arg, f);
}

/* The units of one kind that run_batch merges. */
struct merge_group {
	struct write_unit **units;
	void **args;
	int n;
};

static enum st_rc merge_step(struct tx *tx, void *arg)
{
	struct merge_group *g = arg;

	return g->units[0]->merge(tx, g->args, g->n);
}

/* Runs u and the later units of its kind in the batch (u->merge_kind)
 * with one merge call; if there is no other, or the merge fails (then its
 * savepoint is rolled back), each runs alone. Every unit of the group gets
 * its rc and ran = true. */
static void run_merged(struct tx *tx, struct write_unit *u, struct merge_group *g)
{
	enum st_rc rc = ST_INTERNAL;

	g->n = 0;
	for (struct write_unit *v = u; v && g->n < WRITER_BATCH_MAX; v = v->next)
		if (!v->ran && v->merge_kind == u->merge_kind) {
			g->units[g->n] = v;
			g->args[g->n++] = v->arg;
		}
	if (g->n > 1)
		rc = tx_nested(tx, merge_step, g);
	for (int i = 0; i < g->n; i++) {
		tx->depth = 0;
		g->units[i]->rc = rc == ST_OK ? ST_OK : tx_nested(tx, g->units[i]->fn, g->units[i]->arg);
		g->units[i]->ran = true;
	}
}

static void run_batch(struct sqlite_store *s, struct write_unit *batch)
{
	struct write_unit *group_units[WRITER_BATCH_MAX];
	void *group_args[WRITER_BATCH_MAX];
	struct merge_group g = { .units = group_units, .args = group_args };
	struct sqlite_tx t = { .base = { .ops = &sqlite_tx_ops, .dialect = ST_SQLITE, .rand = s->base.rand },
			       .conn = &s->writer };
	enum st_rc rc;
	int any_ok = 0;

	s->writer.fault = STORE_WRITE_OK;
	s->writer.tx_broken = false;
	rc = conn_simple(&s->writer, "BEGIN IMMEDIATE");

	for (struct write_unit *u = batch; u; u = u->next) {
		if (rc) {
			u->rc = rc;
			continue;
		}
		if (u->ran)
			continue; /* merged with an earlier unit of its kind */
		t.base.now_ms = store_clock_ms(&s->base);
		t.base.depth = 0;
		if (u->merge_kind)
			run_merged(&t.base, u, &g);
		else
			u->rc = tx_nested(&t.base, u->fn, u->arg);
	}
	for (struct write_unit *u = batch; u; u = u->next)
		any_ok |= u->rc == ST_OK;
	if (rc == ST_OK) {
		/* conn_in_tx: SQLite may have rolled the batch back itself, and
		 * then there is nothing to commit, or to roll back. */
		if (sqlite3_get_autocommit(s->writer.db))
			rc = any_ok ? ST_UNAVAILABLE : ST_OK;
		else if (s->writer.tx_broken)
			rc = ST_UNAVAILABLE; /* rolled back whole below */
		else
			rc = any_ok ? conn_simple(&s->writer, "COMMIT") : conn_simple(&s->writer, "ROLLBACK");
		if (rc == ST_OK && any_ok)
			s->writer.fault = STORE_WRITE_OK; /* a durable write: storage is back */
		/* The units' after-commit work runs now that it is durable, before
		 * any client hears of it; with a failed COMMIT it never happened. */
		if (rc == ST_OK) {
			unsigned durable = 0;

			tx_after_run(&t.base);
			for (struct write_unit *u = batch; u; u = u->next)
				durable += u->rc == ST_OK;
			store_note_commit(&s->base, durable);
		} else {
			tx_after_drop(&t.base);
		}
		if (rc) {
			log_msg(s->base.log, LOG_ERROR, "sqlite commit failed: %s",
				sqlite3_errmsg(s->writer.db));
			conn_simple(&s->writer, "ROLLBACK");
			/* Nothing of this batch is durable: tell every unit so. */
			for (struct write_unit *u = batch; u; u = u->next)
				if (u->rc == ST_OK)
					u->rc = rc == ST_BUSY ? ST_UNAVAILABLE : rc;
		}
	}
	note_write_fault(s);
	while (batch) {
		struct write_unit *next = batch->next;

		write_unit_answer(batch, batch->rc);
		batch = next;
	}
}

static void *writer_main(void *arg)
{
	struct sqlite_store *s = arg;

	struct write_unit *batch;

	/* Up to WRITER_BATCH_MAX units at a time: the group commit. */
	while ((batch = unit_queue_take(&s->queue, WRITER_BATCH_MAX, NULL, NULL, NULL)))
		run_batch(s, batch);
	return NULL;
}

/* ---- checkpointer ---- */

static void checkpoint_ask(struct sqlite_store *s, bool finishing)
{
	pthread_mutex_lock(&s->cmu);
	s->checkpoint_wanted = 1;
	s->checkpoint_finishing |= finishing;
	pthread_cond_signal(&s->ccv);
	pthread_mutex_unlock(&s->cmu);
}

/* The writer's checkpoint at CHECKPOINT_LIMIT_PAGES, which must not come
 * back BUSY: SQLite's checkpoint lock never waits (not even for a busy
 * handler), and while the checkpointer holds it every commit adds to the
 * WAL. Where fsync costs nothing (tmpfs, a write-back cache) or the
 * checkpointer is starved of CPU, the writer committed thousands of frames
 * during one of its runs and the WAL grew past 120 MB. So the writer waits
 * for that run to end (the batch's answers wait with it: the price of the
 * bound, paid only when the checkpointer has fallen this far behind) and
 * holds cmu through its own checkpoint, so no run starts in between. */
static void wal_checkpoint_now(struct sqlite_store *s, sqlite3 *db)
{
	pthread_mutex_lock(&s->cmu);
	s->checkpoint_wanted = 0; /* this one does the job */
	while (s->checkpoint_running)
		pthread_cond_wait(&s->cidle, &s->cmu);
	sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
	pthread_mutex_unlock(&s->cmu);
}

/* Called by SQLite on the writer after each COMMIT with the WAL's size.
 *
 * Past the backstop the writer checkpoints itself, to restart the WAL: the
 * checkpointer's runs cannot, a commit always lands while one copies. That
 * checkpoint runs while every queued unit waits, and SQLite ends it by
 * syncing the database file, which holds by then every page the
 * checkpointer copied unsynced since the WAL began (SQLite syncs only a run
 * that caught up): ~3 ms, 4.4 ms at worst, five times a second under load.
 * So the writer first asks the checkpointer to sync the file and copy what
 * is new, at every commit, and finishes only when less than
 * CHECKPOINT_FINISH_GAP frames are left to copy and sync. */
static int wal_committed(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct sqlite_store *s = arg;

	(void)name;
	if (pages < s->checkpoint_asked_at)
		s->checkpoint_asked_at = 0; /* the WAL restarted */
	if (pages >= CHECKPOINT_BACKSTOP_PAGES) {
		int log = atomic_load(&s->checkpoint_log), done = atomic_load(&s->checkpoint_done);

		/* log > pages: the figures are from before the WAL restarted.
		 * BUSY while the checkpointer runs; the next commit tries again. */
		if (pages >= CHECKPOINT_LIMIT_PAGES)
			wal_checkpoint_now(s, db);
		else if (log <= pages && done >= pages - CHECKPOINT_FINISH_GAP)
			sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
		else
			checkpoint_ask(s, true);
		return SQLITE_OK;
	}
	/* Below the backstop, once per CHECKPOINT_PAGES new pages, not after
	 * every commit: each run ends with an fsync of the database file.
	 * Asked at every commit, the checkpointer ran ~450 times a second
	 * under load, copying a few frames each time, and its fsyncs delayed
	 * the writer's own (a 35 ms COMMIT now and then: the p99). */
	if (pages < s->checkpoint_asked_at + CHECKPOINT_PAGES)
		return SQLITE_OK;
	s->checkpoint_asked_at = pages;
	checkpoint_ask(s, false);
	return SQLITE_OK;
}

/* Syncs c's database file: what a PASSIVE checkpoint copied into it, when
 * a commit landed while it copied (SQLite then leaves the sync to the run
 * that catches up). Through the connection's own VFS file, on the thread
 * that owns the connection. */
static int conn_sync_db(struct sqlite_conn *c)
{
	sqlite3_file *f = NULL;
	int rc = sqlite3_file_control(c->db, "main", SQLITE_FCNTL_FILE_POINTER, &f);

	if (rc != SQLITE_OK)
		return rc;
	if (!f || !f->pMethods)
		return SQLITE_MISUSE;
	return f->pMethods->xSync(f, SQLITE_SYNC_NORMAL);
}

static void *checkpointer_main(void *arg)
{
	struct sqlite_store *s = arg;

	pthread_mutex_lock(&s->cmu);
	for (;;) {
		int rc, log = -1, done = -1, finishing;

		while (!s->checkpoint_wanted && !s->checkpoint_stopping)
			pthread_cond_wait(&s->ccv, &s->cmu);
		if (s->checkpoint_stopping)
			break;
		finishing = s->checkpoint_finishing;
		s->checkpoint_wanted = 0;
		s->checkpoint_finishing = 0;
		s->checkpoint_running = 1;
		pthread_mutex_unlock(&s->cmu);
		rc = sqlite3_wal_checkpoint_v2(s->checkpointer.db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log,
					       &done);
		/* A run overtaken by a commit (which it cannot tell: log and done
		 * are the frames it saw) left the database file unsynced. The
		 * writer is about to finish the checkpoint, so sync the file here,
		 * off the writer's path; after a run that caught up (SQLite synced
		 * it) this finds nothing to write. */
		if (rc == SQLITE_OK && finishing) {
			rc = conn_sync_db(&s->checkpointer);
			if (rc != SQLITE_OK)
				log_msg(s->base.log, LOG_WARN,
					"sqlite: syncing the database file after a checkpoint failed: %s",
					sqlite3_errstr(rc));
		} else if (rc == SQLITE_OK) {
			done = 0; /* perhaps not on disk */
		} else if (rc != SQLITE_BUSY) {
			/* BUSY: another checkpoint is running (the writer's); the
			 * next commit over the threshold asks again. */
			log_msg(s->base.log, LOG_WARN, "sqlite: checkpoint failed: %s",
				sqlite3_errmsg(s->checkpointer.db));
		}
		atomic_store(&s->checkpoint_log, log);
		atomic_store(&s->checkpoint_done, rc == SQLITE_OK ? done : 0);
		pthread_mutex_lock(&s->cmu);
		s->checkpoint_running = 0;
		pthread_cond_signal(&s->cidle);
	}
	pthread_mutex_unlock(&s->cmu);
	return NULL;
}

static enum st_rc sqlite_submit(struct store *base, store_unit_fn *fn, store_done_fn *done, void *arg)
{
	struct sqlite_store *s = sqlite_downcast(base);

	return unit_queue_push(&s->queue, fn, done, arg, false); /* one writer */
}

static enum st_rc sqlite_submit_background(struct store *base, store_unit_fn *fn,
					   store_done_fn *done, void *arg)
{
	struct sqlite_store *s = sqlite_downcast(base);

	return unit_queue_push_background(&s->queue, fn, done, arg, false);
}

static enum st_rc sqlite_submit_merged(struct store *base, const void *kind, store_merge_fn *merge,
				       store_unit_fn *fn, store_done_fn *done, void *arg)
{
	struct sqlite_store *s = sqlite_downcast(base);

	return unit_queue_push_merged(&s->queue, kind, merge, fn, done, arg, false);
}

/* ---- readers ---- */

/* store_read and store_read_one: single runs fn without BEGIN ... COMMIT,
 * its one statement in autocommit mode (a read transaction of its own,
 * begun by its first step and ended when it is reset, as inside a BEGIN):
 * two statements less for each API key, replay or job-row lookup
 * (ops/profile_drain: a webhook job's payee read took the workers from
 * 21.3k to 20.2k instructions a job). */
static enum st_rc read_on_reader(struct store *base, store_unit_fn *fn, void *arg, bool single)
{
	struct sqlite_store *s = sqlite_downcast(base);
	struct sqlite_tx t = { .base = { .ops = &sqlite_tx_ops, .dialect = ST_SQLITE, .read_only = true,
					  .rand = base->rand },
			       .single = single, .log = base->log };
	unsigned idx;
	enum st_rc rc;

	idx = reader_pool_take(&s->rpool);

	t.conn = &s->readers[idx];
	t.base.now_ms = store_clock_ms(base);
	t.conn->tx_broken = false;
	t.conn->fault = STORE_WRITE_OK;
	rc = single ? ST_OK : conn_simple(t.conn, "BEGIN");
	if (rc == ST_OK) {
		rc = fn(&t.base, arg);
		if (!single)
			conn_simple(t.conn, "COMMIT");
		tx_after_drop(&t.base); /* reads have no after-commit work */
	}
	/* A read the storage refused (the caller answers 503): said once per
	 * failed read, as the writer says each failed commit. */
	if (t.conn->fault != STORE_WRITE_OK)
		log_msg(base->log, LOG_ERROR, "sqlite read failed: %s",
			store_write_fault_str(t.conn->fault));

	reader_pool_give(&s->rpool, idx);
	return rc;
}

static enum st_rc sqlite_read(struct store *base, store_unit_fn *fn, void *arg)
{
	return read_on_reader(base, fn, arg, false);
}

static enum st_rc sqlite_read_one(struct store *base, store_unit_fn *fn, void *arg)
{
	return read_on_reader(base, fn, arg, true);
}

static enum st_rc ping_unit(struct tx *tx, void *arg)
{
	struct st_rows *rows = NULL;
	enum st_rc rc = tx_query(tx, "SELECT count(*) FROM schema_version", ST_NOARGS, &rows);

	(void)arg;
	rows_free(rows);
	return rc;
}

/* Readiness fails while writes fail for want of storage, so a load
 * balancer and an operator see it although reads still work. The fault
 * counts for STORE_FAULT_FRESH_MS after the last failing batch: a probe
 * write of its own would prove little (a one-page write can still fit in
 * the space a failed batch gave back), and without traffic nothing would
 * ever clear it. A committed batch clears it at once. */
#define STORE_FAULT_FRESH_MS 10000

static enum st_rc sqlite_ping(struct store *base, struct buf *why)
{
	struct sqlite_store *s = sqlite_downcast(base);
	enum st_rc rc = sqlite_read(base, ping_unit, NULL);
	enum store_write_fault f = (enum store_write_fault)atomic_load(&base->write_fault);
	int64_t age_ms;

	if (rc) {
		if (why)
			buf_printf(why, "sqlite: %s", st_rc_str(rc));
		return rc;
	}
	age_ms = clock_mono_ms() - atomic_load(&s->write_fault_at_ms);
	if (f == STORE_WRITE_OK || age_ms > STORE_FAULT_FRESH_MS)
		return ST_OK;
	if (why)
		buf_printf(why, "sqlite: writes failing: %s (%lld ms ago)",
			   f == STORE_WRITE_DISK_FULL ? "database or disk is full" : "I/O error",
			   (long long)age_ms);
	return ST_UNAVAILABLE;
}

static void sqlite_close(struct store *base)
{
	struct sqlite_store *s = sqlite_downcast(base);

	if (s->writer_started) {
		unit_queue_close(&s->queue); /* the writer finishes what is queued */
		pthread_join(s->writer_thread, NULL);
	}
	if (s->checkpoint_started) {
		pthread_mutex_lock(&s->cmu);
		s->checkpoint_stopping = 1;
		pthread_cond_signal(&s->ccv);
		pthread_mutex_unlock(&s->cmu);
		pthread_join(s->checkpoint_thread, NULL);
	}
	conn_close(&s->checkpointer);
	for (unsigned i = 0; i < s->nreaders; i++)
		conn_close(&s->readers[i]);
	free(s->readers);
	/* A clean close checkpoints the WAL into the database file. */
	conn_close(&s->writer);
	walbuf_unregister(&s->walbuf);
	unit_queue_destroy(&s->queue);
	reader_pool_destroy(&s->rpool);
	pthread_mutex_destroy(&s->cmu);
	pthread_cond_destroy(&s->ccv);
	pthread_cond_destroy(&s->cidle);
	free(s->path);
	free(s);
}

static const struct store_ops sqlite_store_ops = {
	.name = "sqlite",
	.submit = sqlite_submit,
	.submit_merged = sqlite_submit_merged,
	.submit_background = sqlite_submit_background,
	.read = sqlite_read,
	.read_one = sqlite_read_one,
	.ping = sqlite_ping,
	.close = sqlite_close,
};

/* ---- open + migrate ---- */

/* vfs: a VFS's name, or NULL for the default. */
static enum st_rc conn_open(struct sqlite_conn *c, const char *path, int readonly, const char *vfs,
			    struct buf *err)
{
	int flags = (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
		    SQLITE_OPEN_NOMUTEX;
	static const char *const pragmas =
		"PRAGMA busy_timeout = 5000;"
		"PRAGMA foreign_keys = ON;"
		"PRAGMA synchronous = FULL;";

	if (sqlite3_open_v2(path, &c->db, flags, vfs) != SQLITE_OK) {
		buf_printf(err, "sqlite: cannot open %s: %s", path,
			   c->db ? sqlite3_errmsg(c->db) : "out of memory");
		return ST_UNAVAILABLE;
	}
	sqlite3_extended_result_codes(c->db, 1);
	if (!readonly && sqlite3_exec(c->db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL) != SQLITE_OK) {
		buf_printf(err, "sqlite: cannot enable WAL on %s: %s", path, sqlite3_errmsg(c->db));
		return ST_UNAVAILABLE;
	}
	if (sqlite3_exec(c->db, pragmas, NULL, NULL, NULL) != SQLITE_OK) {
		buf_printf(err, "sqlite: %s", sqlite3_errmsg(c->db));
		return ST_UNAVAILABLE;
	}
	return ST_OK;
}

/* The migration steps (store.c runs them) on the writer's connection,
 * before the writer thread starts. */
static enum st_rc migrate_exec(struct sqlite_conn *c, const char *sql, enum st_rc rc, struct buf *why)
{
	if (sqlite3_exec(c->db, sql, NULL, NULL, NULL) == SQLITE_OK)
		return ST_OK;
	buf_puts(why, sqlite3_errmsg(c->db));
	return rc;
}

/* Migrations run with foreign keys off, as SQLite's own procedure for
 * rebuilding a table asks (https://sqlite.org/lang_altertable.html, "Making
 * Other Kinds Of Table Schema Changes"): DROP TABLE of a table other tables
 * point at would otherwise fail, or delete what points at it. The pragma
 * does nothing inside a transaction, so it is set before BEGIN; a
 * transaction that applied a migration is checked with foreign_key_check
 * before its COMMIT, and foreign keys are on again after every end. */
static void migrate_fk_on(struct sqlite_conn *c)
{
	sqlite3_exec(c->db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL);
}

static enum st_rc migrate_begin(void *arg, int *current, struct buf *why)
{
	struct sqlite_conn *c = arg;
	sqlite3_stmt *st = NULL;
	enum st_rc rc;

	c->migrated = false;
	rc = migrate_exec(c, "PRAGMA foreign_keys = OFF", ST_UNAVAILABLE, why);
	if (!rc)
		rc = migrate_exec(c, "BEGIN IMMEDIATE", ST_UNAVAILABLE, why);

	if (!rc)
		rc = migrate_exec(c,
				  "CREATE TABLE IF NOT EXISTS schema_version ("
				  " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
				  " applied_at INTEGER NOT NULL)",
				  ST_UNAVAILABLE, why);
	if (rc)
		goto out;
	if (sqlite3_prepare_v2(c->db, "SELECT coalesce(max(version), 0) FROM schema_version", -1, &st,
			       NULL) != SQLITE_OK) {
		buf_puts(why, sqlite3_errmsg(c->db));
		rc = ST_UNAVAILABLE;
		goto out;
	}
	*current = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
out:
	sqlite3_finalize(st);
	if (rc) {
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
		migrate_fk_on(c);
	}
	return rc;
}

static enum st_rc migrate_apply(void *arg, const struct st_migration *m, struct buf *why)
{
	struct sqlite_conn *c = arg;
	char record[256];
	enum st_rc rc;

	snprintf(record, sizeof(record),
		 "INSERT INTO schema_version (version, name, applied_at) "
		 "VALUES (%d, '%s', CAST(strftime('%%s','now') AS INTEGER) * 1000)",
		 m->version, m->name);
	c->migrated = true;
	rc = migrate_exec(c, m->sql, ST_INTERNAL, why);
	return rc ? rc : migrate_exec(c, record, ST_INTERNAL, why);
}

static enum st_rc migrate_commit(void *arg, struct buf *why)
{
	struct sqlite_conn *c = arg;
	sqlite3_stmt *st = NULL;
	enum st_rc rc = ST_OK;

	if (c->migrated) {
		int step;

		if (sqlite3_prepare_v2(c->db, "PRAGMA foreign_key_check", -1, &st, NULL) != SQLITE_OK) {
			buf_puts(why, sqlite3_errmsg(c->db));
			return ST_INTERNAL;
		}
		step = sqlite3_step(st);
		if (step == SQLITE_ROW) {
			buf_printf(why, "a row of %s points at a missing row of %s",
				   (const char *)sqlite3_column_text(st, 0),
				   (const char *)sqlite3_column_text(st, 2));
			rc = ST_INTERNAL;
		} else if (step != SQLITE_DONE) {
			buf_puts(why, sqlite3_errmsg(c->db));
			rc = ST_INTERNAL;
		}
		sqlite3_finalize(st);
	}
	if (!rc)
		rc = migrate_exec(c, "COMMIT", ST_UNAVAILABLE, why);
	if (!rc)
		migrate_fk_on(c);
	return rc; /* on failure store_migrate calls migrate_rollback */
}

static void migrate_rollback(void *arg)
{
	struct sqlite_conn *c = arg;

	if (!sqlite3_get_autocommit(c->db))
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
	migrate_fk_on(c);
}

static const struct st_migrator sqlite_migrator = {
	.name = "sqlite",
	.begin = migrate_begin,
	.apply = migrate_apply,
	.commit = migrate_commit,
	.rollback = migrate_rollback,
};

enum st_rc store_sqlite_open(const struct store_options *opt, struct store **out, struct buf *err)
{
	struct sqlite_store *s = calloc(1, sizeof(*s));
	enum st_rc rc;

	if (!s)
		return ST_NOMEM;
	/* SQLite's memory statistics (sqlite3_status, sqlite3_memory_used),
	 * which nothing here reads, cost a process-wide mutex around each of
	 * its allocations (~20 a keyed register on the writer alone), taken by
	 * the writer, the readers and the checkpointer alike. A library-wide
	 * setting, only possible before SQLite's first use in the process;
	 * later calls (a second store, the backup command) are refused
	 * harmlessly (SQLITE_MISUSE) and change nothing. */
	(void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	/* Small blocks from per-thread caches instead of malloc (sqlalloc.h:
	 * this SQLite has no lookaside). Library-wide, before first use. */
	(void)sqlalloc_install();
	/* The writer's savepoint journal (every batch unit, every job effect
	 * and every statement with a trigger runs under a savepoint, and each
	 * keeps the original of every page it changes) in memory up to 4 MiB,
	 * in ONE allocation, and in a temporary file past that. The default,
	 * 64 KiB, spilled to a file in nearly every batch under load; an
	 * in-memory journal (temp_store = MEMORY) is kept in 1 KiB chunks,
	 * four mallocs a page and their frees when the unit's savepoint is
	 * released: ~45k instructions of a webhook job's ~318k (callgrind).
	 * Library-wide and only before SQLite's first use, as above. */
	(void)sqlite3_config(SQLITE_CONFIG_STMTJRNL_SPILL, WRITER_JOURNAL_SPILL);
	s->base.ops = &sqlite_store_ops;
	s->base.rand = opt->rand;
	s->base.log = opt->log;
	s->base.unit_reads_cheap = true;
	s->base.one_writer = true;
	unit_queue_init(&s->queue);
	s->queue.background_cap = WRITER_BACKGROUND_PER_BATCH;
	reader_pool_init(&s->rpool);
	pthread_mutex_init(&s->cmu, NULL);
	pthread_cond_init(&s->ccv, NULL);
	pthread_cond_init(&s->cidle, NULL);
	s->path = strdup(opt->sqlite_path ? opt->sqlite_path : "settled.db");
	if (!s->path) {
		rc = ST_NOMEM;
		goto fail;
	}
	/* Without it (it cannot fail short of SQLite failing to start) the
	 * writer runs on the default VFS: slower, just as correct. */
	if (walbuf_register(&s->walbuf) != SQLITE_OK)
		log_msg(s->base.log, LOG_WARN, "sqlite: cannot register the WAL write VFS");
	rc = conn_open(&s->writer, s->path, 0, walbuf_name(&s->walbuf), err);
	if (rc)
		goto fail;
	rc = store_migrate(st_migrations_sqlite, &sqlite_migrator, &s->writer, opt->log, err);
	if (rc)
		goto fail;

	s->nreaders = opt->read_conns ? opt->read_conns : 4;
	s->readers = calloc(s->nreaders, sizeof(*s->readers));
	if (!s->readers || reader_pool_fill(&s->rpool, s->nreaders)) {
		rc = ST_NOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < s->nreaders; i++) {
		rc = conn_open(&s->readers[i], s->path, 1, NULL, err);
		if (rc)
			goto fail;
	}
	rc = conn_open(&s->checkpointer, s->path, 0, NULL, err);
	if (rc)
		goto fail;
	if (pthread_create(&s->checkpoint_thread, NULL, checkpointer_main, s)) {
		buf_puts(err, "sqlite: cannot start the checkpoint thread");
		rc = ST_INTERNAL;
		goto fail;
	}
	s->checkpoint_started = 1;
	pthread_setname_np(s->checkpoint_thread, "sqlite-ckpt"); /* for top and perf */
	/* Replaces SQLite's automatic checkpoint on the writer (which is
	 * itself a WAL hook) with a request to the checkpointer. */
	sqlite3_wal_hook(s->writer.db, wal_committed, s);
	if (pthread_create(&s->writer_thread, NULL, writer_main, s)) {
		buf_puts(err, "sqlite: cannot start the writer thread");
		rc = ST_INTERNAL;
		goto fail;
	}
	s->writer_started = 1;
	pthread_setname_np(s->writer_thread, "sqlite-writer");
	*out = &s->base;
	return ST_OK;
fail:
	sqlite_close(&s->base);
	return rc;
}

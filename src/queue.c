/* queue.c — the durable job queue: SQL over the store's tx API.
 *
 * Everything runs inside the caller's transaction; see queue.h for the state
 * machine and why completion is fenced by the lease. SQL is written once
 * where SQLite and PostgreSQL agree; claiming and the lease sweep differ
 * (PostgreSQL needs FOR UPDATE SKIP LOCKED so concurrent instances never
 * take the same row; SQLite has one writer, so its SELECT + UPDATE is
 * already atomic). Parameters are never combined arithmetically in SQL
 * (times are computed here), and CASE branches that yield a parameter cast
 * it, so PostgreSQL can infer every parameter's type.
 *
 * Workload: claims and completions are one short statement each; the live
 * part of the table (available, running, dead) is small, completed rows are
 * purged by the ticker after a retention period. */
#include "queue.h"

#include <jansson.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmt.h"

#include "banned.h"

#define JOB_COLS \
	"id, queue, kind, payload, state, attempts, max_attempts, run_at, lease_owner, " \
	"lease_expires_at, last_error, unique_key, traceparent, created_at, updated_at, finished_at"

#define CLAIM_LIST_MAX (1024 * 21 + 2) /* a JSON array of up to 1024 ids */

/* "Still running under this lease", for the WHERE of every write a lease
 * holder makes (complete, fail, hand back). The table's CHECK makes
 * `state = 'running'` the same as both lease columns being set, so this
 * names the same rows without naming the state: a planner that sees the
 * literal may (and PostgreSQL did, EXPLAIN) read the `jobs_running`
 * partial index end to end and filter it by id, every running job's row
 * visited for each completion, rather than look the ids up in the primary
 * key (queue.md "Claiming"). */
#define LEASE_HELD(owner) " lease_owner = " owner " AND lease_expires_at IS NOT NULL"

/* PostgreSQL's claim. The due rows are locked and collected as an array
 * first (an InitPlan, run once), and the UPDATE finds them by primary key:
 * `id IN (SELECT ...)` was planned as a hash semi-join over a sequential
 * scan of the whole table, completed rows included (queue.md "Claiming"). */
const char queue_claim_pg_sql[] =
	"UPDATE jobs SET state = 'running', lease_owner = $2, lease_expires_at = $3,"
	" updated_at = $4"
	" WHERE id = ANY(ARRAY(SELECT id FROM jobs WHERE state = 'available' AND queue = $1"
	"  AND run_at <= $4 ORDER BY run_at, id LIMIT $5 FOR UPDATE SKIP LOCKED))"
	" RETURNING " JOB_COLS;

const char queue_complete_many_pg_sql[] =
	"UPDATE jobs SET state = 'completed', lease_owner = NULL,"
	" lease_expires_at = NULL, finished_at = $3, updated_at = $3"
	" WHERE id = ANY(CAST($2 AS BIGINT[])) AND" LEASE_HELD("$1") " RETURNING id";

const char queue_complete_sql[] =
	"UPDATE jobs SET state = 'completed', lease_owner = NULL, lease_expires_at = NULL,"
	" finished_at = $3, updated_at = $3"
	" WHERE id = $1 AND" LEASE_HELD("$2");

static const char *const state_names[JOB_STATE_COUNT] = { "available", "running", "completed",
							   "dead" };

const char *job_state_str(enum job_state s)
{
	return (unsigned)s < JOB_STATE_COUNT ? state_names[s] : "unknown";
}

int job_state_parse(const char *s)
{
	for (int i = 0; s && i < JOB_STATE_COUNT; i++)
		if (!strcmp(s, state_names[i]))
			return i;
	return -1;
}

void job_release(struct job *j)
{
	if (!j)
		return;
	free(j->payload);
	free(j->unique_key);
	free(j->last_error);
	free(j->traceparent);
	j->payload = j->unique_key = j->last_error = j->traceparent = NULL;
}

static enum st_rc dup_opt(const struct st_rows *r, int row, int col, char **out)
{
	const char *t = rows_text(r, row, col);

	*out = NULL;
	if (!t)
		return ST_OK;
	*out = strdup(t);
	return *out ? ST_OK : ST_NOMEM;
}

/* Fills *j from row `row` of a JOB_COLS result. j is zeroed first. */
static enum st_rc job_from_row(const struct st_rows *r, int row, struct job *j)
{
	int st;

	memset(j, 0, sizeof(*j));
	j->id = rows_i64(r, row, 0);
	rows_copy(r, row, 1, j->queue, sizeof(j->queue));
	rows_copy(r, row, 2, j->kind, sizeof(j->kind));
	st = job_state_parse(rows_text(r, row, 4));
	j->state = st < 0 ? JOB_AVAILABLE : (enum job_state)st;
	j->attempts = (int)rows_i64(r, row, 5);
	j->max_attempts = (int)rows_i64(r, row, 6);
	j->run_at = rows_i64(r, row, 7);
	rows_copy(r, row, 8, j->lease_owner, sizeof(j->lease_owner));
	j->lease_expires_at = rows_i64(r, row, 9);
	j->created_at = rows_i64(r, row, 13);
	j->updated_at = rows_i64(r, row, 14);
	j->finished_at = rows_i64(r, row, 15);
	if (dup_opt(r, row, 3, &j->payload) || dup_opt(r, row, 10, &j->last_error) ||
	    dup_opt(r, row, 11, &j->unique_key) || dup_opt(r, row, 12, &j->traceparent)) {
		job_release(j);
		return ST_NOMEM;
	}
	if (!j->payload && !(j->payload = strdup("{}"))) {
		job_release(j);
		return ST_NOMEM;
	}
	return ST_OK;
}

/* Converts every row of r into out[0..); *n_out gets the count. On error
 * nothing is left allocated. */
static enum st_rc jobs_from_rows(const struct st_rows *r, int max, struct job *out, int *n_out)
{
	int n = r->nrows < max ? r->nrows : max;

	for (int i = 0; i < n; i++) {
		enum st_rc rc = job_from_row(r, i, &out[i]);

		if (rc) {
			while (i--)
				job_release(&out[i]);
			return rc;
		}
	}
	*n_out = n;
	return ST_OK;
}

static bool name_ok(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;

	return n > 0 && n <= max;
}

/* ---- enqueue ---- */

enum st_rc queue_enqueue_spec(struct tx *tx, const struct job_spec *spec, int64_t *id_out,
			      bool *inserted)
{
	struct st_rows *rows = NULL;
	int64_t now = tx_now_ms(tx);
	json_error_t jerr;
	json_t *check;
	enum st_rc rc;

	if (!name_ok(spec->queue, QUEUE_NAME_MAX) || !name_ok(spec->kind, QUEUE_KIND_MAX) ||
	    !spec->payload)
		return ST_INVALID;
	/* A job whose payload cannot be parsed could only ever fail: refuse it
	 * here, with its cause, rather than find it in the DLQ later. */
	check = json_loads(spec->payload, JSON_DECODE_ANY, &jerr);
	if (!check)
		return json_error_code(&jerr) == json_error_out_of_memory ? ST_NOMEM : ST_INVALID;
	json_decref(check);
	rc = tx_query(tx,
		      "INSERT INTO jobs (queue, kind, payload, state, attempts, max_attempts, run_at,"
		      " unique_key, traceparent, created_at, updated_at)"
		      " VALUES ($1, $2, $3, 'available', 0, $4, $5, $6, $7, $8, $8)"
		      " ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING RETURNING id",
		      ST_ARGS(SV_S(spec->queue), SV_S(spec->kind), SV_S(spec->payload),
			      SV_I(spec->max_attempts > 0 ? spec->max_attempts : QUEUE_DEFAULT_MAX_ATTEMPTS),
			      SV_I(spec->run_at > 0 ? spec->run_at : now), SV_SOPT(spec->unique_key),
			      SV_SOPT(spec->traceparent ? spec->traceparent : tx_trace_context(tx)),
			      SV_I(now)),
		      &rows);
	if (rc)
		return rc;
	if (id_out)
		*id_out = rows->nrows ? rows_i64(rows, 0, 0) : 0;
	if (inserted)
		*inserted = rows->nrows > 0;
	rows_free(rows);
	return ST_OK;
}

/* A job row as queue_enqueue_spec writes it, for tx_exec_rows. */
static const struct st_rows_sql enqueue_rows = {
	.head = "INSERT INTO jobs (queue, kind, payload, state, attempts, max_attempts, run_at,"
		" unique_key, traceparent, created_at, updated_at) VALUES ",
	.row = "($1, $2, $3, 'available', 0, $4, $5, $6, $7, $8, $8)",
	/* The predicate infers the column's UNIQUE today and would infer a
	 * partial unique index too (queue.md "Storage"): a later schema can
	 * swap one for the other without breaking this version. */
	.tail = " ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING",
	.width = 8,
};

enum st_rc queue_enqueue_many(struct tx *tx, const struct job_spec *specs, int n,
			      int64_t *inserted)
{
	int64_t now = tx_now_ms(tx);
	struct st_val *v;
	enum st_rc rc;

	if (n <= 0)
		return n == 0 ? ST_OK : ST_INVALID;
	v = malloc((size_t)n * enqueue_rows.width * sizeof(*v));
	if (!v)
		return ST_NOMEM;
	for (int i = 0; i < n; i++) {
		const struct job_spec *spec = &specs[i];
		struct st_val *row = v + (size_t)i * enqueue_rows.width;

		if (!name_ok(spec->queue, QUEUE_NAME_MAX) || !name_ok(spec->kind, QUEUE_KIND_MAX) ||
		    !spec->payload) {
			free(v);
			return ST_INVALID;
		}
		row[0] = SV_S(spec->queue);
		row[1] = SV_S(spec->kind);
		row[2] = SV_S(spec->payload);
		row[3] = SV_I(spec->max_attempts > 0 ? spec->max_attempts : QUEUE_DEFAULT_MAX_ATTEMPTS);
		row[4] = SV_I(spec->run_at > 0 ? spec->run_at : now);
		row[5] = SV_SOPT(spec->unique_key);
		row[6] = SV_SOPT(spec->traceparent ? spec->traceparent : tx_trace_context(tx));
		row[7] = SV_I(now);
	}
	rc = tx_exec_rows(tx, &enqueue_rows, n, v, inserted);
	free(v);
	return rc;
}

enum st_rc queue_enqueue(struct tx *tx, const char *queue, const char *kind,
			 const char *payload_json, const char *unique_key, int64_t run_at,
			 int max_attempts)
{
	struct job_spec spec = { .queue = queue, .kind = kind, .payload = payload_json,
				 .unique_key = unique_key, .run_at = run_at,
				 .max_attempts = max_attempts };

	return queue_enqueue_spec(tx, &spec, NULL, NULL);
}

/* ---- claim, complete, fail, release ---- */

/* ids as one statement parameter: a PostgreSQL array literal, or a JSON
 * array for SQLite's json_each. */
/* The list's i-th id, after a comma unless it is the first: fmt_i64, not
 * buf_printf (vsnprintf was ~2k instructions an id: 3 % of a no-op job,
 * whose id is written in its claim's list and its completion's). */
static enum st_rc id_put(struct buf *list, int i, int64_t id)
{
	char d[FMT_I64_LEN + 1];
	size_t n = 0;

	if (i)
		d[n++] = ',';
	n += fmt_i64(d + n, id);
	return buf_append(list, d, n);
}

static enum st_rc id_list(struct buf *list, bool pg, const int64_t *ids, int n)
{
	enum st_rc rc = buf_putc(list, pg ? '{' : '[');

	for (int i = 0; rc == ST_OK && i < n; i++)
		rc = id_put(list, i, ids[i]);
	return rc ? rc : buf_putc(list, pg ? '}' : ']');
}

/* SQLite: a SELECT of the due jobs, then an UPDATE of exactly those ids,
 * atomic because the writer is the only one (the caller's unit holds it).
 * Not one UPDATE ... RETURNING: SQLite 3.40's RETURNING costs about as
 * much per row as the update itself (callgrind; a claim's rows were half
 * a no-op job's instructions). */
static enum st_rc claim_sqlite(struct tx *tx, const char *queue, int max, const char *lease_owner,
			       int64_t now, int64_t lease_ms, struct job *out, int *n_out)
{
	struct st_rows *rows = NULL;
	struct buf list = BUF_INIT(CLAIM_LIST_MAX);
	int64_t changes = 0;
	int n = 0;
	enum st_rc rc;

	rc = tx_query(tx,
		      "SELECT " JOB_COLS " FROM jobs WHERE state = 'available' AND queue = $1"
		      " AND run_at <= $2 ORDER BY run_at, id LIMIT $3",
		      ST_ARGS(SV_S(queue), SV_I(now), SV_I(max)), &rows);
	if (rc)
		return rc;
	rc = jobs_from_rows(rows, max, out, &n);
	rows_free(rows);
	if (rc || n == 0)
		return rc;
	rc = buf_putc(&list, '[');
	for (int i = 0; rc == ST_OK && i < n; i++)
		rc = id_put(&list, i, out[i].id);
	if (rc == ST_OK)
		rc = buf_putc(&list, ']');
	if (rc == ST_OK)
		rc = tx_exec(tx,
			     "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2,"
			     " updated_at = $3 WHERE id IN (SELECT value FROM json_each($4))"
			     " AND state = 'available'",
			     ST_ARGS(SV_S(lease_owner), SV_I(now + lease_ms), SV_I(now),
				     SV_SN(list.ptr, list.len)),
			     &changes);
	if (rc == ST_OK && changes != n)
		rc = ST_INTERNAL; /* one writer: the rows just read cannot have moved */
	buf_release(&list);
	if (rc) {
		for (int i = 0; i < n; i++)
			job_release(&out[i]);
		return rc;
	}
	for (int i = 0; i < n; i++) {
		out[i].state = JOB_RUNNING;
		fmt_str(out[i].lease_owner, sizeof(out[i].lease_owner), lease_owner);
		out[i].lease_expires_at = now + lease_ms;
		out[i].updated_at = now;
	}
	*n_out = n;
	return ST_OK;
}

enum st_rc queue_claim(struct tx *tx, const char *queue, int max, const char *lease_owner,
		       int64_t lease_ms, struct job *out, int *n_out)
{
	struct st_rows *rows = NULL;
	int64_t now = tx_now_ms(tx);
	enum st_rc rc;

	*n_out = 0;
	if (max <= 0)
		return ST_OK;
	if (!name_ok(lease_owner, QUEUE_OWNER_MAX))
		return ST_INVALID;
	if (tx_dialect(tx) == ST_PG)
		rc = tx_query(tx, queue_claim_pg_sql,
			      ST_ARGS(SV_S(queue), SV_S(lease_owner), SV_I(now + lease_ms), SV_I(now),
				      SV_I(max)),
			      &rows);
	else
		return claim_sqlite(tx, queue, max, lease_owner, now, lease_ms, out, n_out);
	if (rc)
		return rc;
	rc = jobs_from_rows(rows, max, out, n_out);
	rows_free(rows);
	return rc;
}

enum st_rc queue_complete(struct tx *tx, int64_t id, const char *lease_owner)
{
	int64_t changes = 0;
	int64_t now = tx_now_ms(tx);
	enum st_rc rc;

	rc = tx_exec(tx, queue_complete_sql, ST_ARGS(SV_I(id), SV_S(lease_owner), SV_I(now)),
		     &changes);
	if (rc)
		return rc;
	return changes == 1 ? ST_OK : ST_CONFLICT;
}

enum st_rc queue_complete_unleased(struct tx *tx, const struct job *j)
{
	int64_t changes = 0;
	int64_t now = tx_now_ms(tx);
	enum st_rc rc;

	rc = tx_exec(tx,
		     "UPDATE jobs SET state = 'completed', finished_at = $4, updated_at = $4"
		     " WHERE id = $1 AND state = 'available' AND attempts = $2 AND updated_at = $3",
		     ST_ARGS(SV_I(j->id), SV_I(j->attempts), SV_I(j->updated_at), SV_I(now)),
		     &changes);
	if (rc)
		return rc;
	return changes == 1 ? ST_OK : ST_CONFLICT;
}

enum st_rc queue_take_due(struct tx *tx, const char *queue, int max, int64_t after_run_at,
			  int64_t after_id, struct job *out, int *n_out)
{
	struct st_rows *rows = NULL;
	enum st_rc rc;

	*n_out = 0;
	if (max <= 0)
		return ST_OK;
	/* (run_at, id) past the cursor: the jobs_ready index's order, so the
	 * scan starts at the cursor. */
	rc = tx_query(tx,
		      "SELECT " JOB_COLS " FROM jobs WHERE state = 'available' AND queue = $1"
		      " AND run_at <= $2 AND (run_at > $3 OR (run_at = $3 AND id > $4))"
		      " ORDER BY run_at, id LIMIT $5",
		      ST_ARGS(SV_S(queue), SV_I(tx_now_ms(tx)), SV_I(after_run_at), SV_I(after_id),
			      SV_I(max)),
		      &rows);
	if (rc)
		return rc;
	rc = jobs_from_rows(rows, max, out, n_out);
	rows_free(rows);
	return rc;
}

struct complete_all {
	const char *lease_owner;
	const struct buf *list;
	int n;
};

/* SQLite, the common case first: the UPDATE alone, and ST_CONFLICT (its
 * savepoint rolls it back) unless it completed every one. A lease is
 * lost only when a job outlived it, so the SELECT that tells which are
 * still ours (~4k instructions a job, 7 % of a no-op job's) runs only
 * then. */
static enum st_rc complete_all_sqlite(struct tx *tx, void *arg)
{
	const struct complete_all *c = arg;
	int64_t changes = 0;
	enum st_rc rc = tx_exec(tx,
				"UPDATE jobs SET state = 'completed', lease_owner = NULL,"
				" lease_expires_at = NULL, finished_at = $3, updated_at = $3"
				" WHERE id IN (SELECT value FROM json_each($2)) AND state = 'running'"
				" AND lease_owner = $1",
				ST_ARGS(SV_S(c->lease_owner), SV_SN(c->list->ptr, c->list->len),
					SV_I(tx_now_ms(tx))),
				&changes);

	return rc ? rc : changes == c->n ? ST_OK : ST_CONFLICT;
}

enum st_rc queue_complete_many(struct tx *tx, const char *lease_owner, const int64_t *ids, int n,
			       bool *done)
{
	struct st_rows *rows = NULL;
	struct buf list = BUF_INIT(QUEUE_COMPLETE_MAX * 21 + 2);
	bool pg = tx_dialect(tx) == ST_PG;
	enum st_rc rc = ST_OK;

	if (n <= 0)
		return ST_OK;
	if (n > QUEUE_COMPLETE_MAX)
		return ST_INVALID;
	/* The ids travel as one parameter. One statement, one round trip. */
	for (int i = 0; i < n; i++)
		done[i] = false;
	rc = id_list(&list, pg, ids, n);
	if (rc)
		goto out;
	if (pg) {
		rc = tx_query(tx, queue_complete_many_pg_sql,
			      ST_ARGS(SV_S(lease_owner), SV_SN(list.ptr, list.len), SV_I(tx_now_ms(tx))),
			      &rows);
	} else if ((rc = tx_nested(tx, complete_all_sqlite,
				   &(struct complete_all){ lease_owner, &list, n })) == ST_OK) {
		/* Every one was still ours: all done, no SELECT needed. */
		for (int i = 0; i < n; i++)
			done[i] = true;
		goto out;
	} else if (rc != ST_CONFLICT) {
		goto out;
	} else {
		/* One or more leases gone (complete_all_sqlite was rolled
		 * back): which are still ours, then the UPDATE of those (same
		 * WHERE, one writer): cheaper than RETURNING (claim_sqlite says
		 * why). */
		int64_t changes = 0;

		rc = tx_query(tx,
			      "SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each($2))"
			      " AND state = 'running' AND lease_owner = $1",
			      ST_ARGS(SV_S(lease_owner), SV_SN(list.ptr, list.len)), &rows);
		if (rc == ST_OK && rows->nrows > 0)
			rc = tx_exec(tx,
				     "UPDATE jobs SET state = 'completed', lease_owner = NULL,"
				     " lease_expires_at = NULL, finished_at = $3, updated_at = $3"
				     " WHERE id IN (SELECT value FROM json_each($2)) AND state = 'running'"
				     " AND lease_owner = $1",
				     ST_ARGS(SV_S(lease_owner), SV_SN(list.ptr, list.len),
					     SV_I(tx_now_ms(tx))),
				     &changes);
		if (rc == ST_OK && changes != rows->nrows)
			rc = ST_INTERNAL; /* one writer: what was just read cannot have moved */
		if (rc) {
			rows_free(rows);
			goto out;
		}
	}
	if (rc)
		goto out;
	for (int r = 0; r < rows->nrows; r++) {
		int64_t id = rows_i64(rows, r, 0);

		for (int i = 0; i < n; i++)
			if (ids[i] == id)
				done[i] = true;
	}
	rows_free(rows);
out:
	buf_release(&list);
	return rc;
}

/* A failed attempt's UPDATE up to its WHERE. In an UPDATE, `attempts` on
 * the right-hand side is the old value in both dialects, so every CASE
 * sees the same count. $3 error, $4 now, $5 next run_at, $6 permanent. */
#define FAIL_SET \
	"UPDATE jobs SET attempts = attempts + 1, last_error = $3, updated_at = $4," \
	" state = CASE WHEN attempts + 1 >= max_attempts OR $6 = 1 THEN 'dead'" \
	"  ELSE 'available' END," \
	" run_at = CASE WHEN attempts + 1 >= max_attempts OR $6 = 1 THEN run_at" \
	"  ELSE CAST($5 AS BIGINT) END," \
	" finished_at = CASE WHEN attempts + 1 >= max_attempts OR $6 = 1" \
	"  THEN CAST($4 AS BIGINT) ELSE NULL END," \
	" lease_owner = NULL, lease_expires_at = NULL"

/* Runs sql (FAIL_SET and a WHERE naming the job by $1 and $2, and by $7
 * when fence7 is given) for a failed attempt: error cut to
 * QUEUE_ERROR_MAX, retry after delay_ms (0 when negative). */
static enum st_rc fail_run(struct tx *tx, const char *sql, struct st_val key1,
			   struct st_val key2, const int64_t *fence7, const char *error,
			   int64_t delay_ms, bool permanent, enum job_state *new_state)
{
	struct st_rows *rows = NULL;
	int64_t now = tx_now_ms(tx);
	size_t elen = error ? strlen(error) : 0;
	struct st_val v[7];
	enum st_rc rc;

	if (delay_ms < 0)
		delay_ms = 0;
	if (elen > QUEUE_ERROR_MAX)
		elen = QUEUE_ERROR_MAX;
	v[0] = key1;
	v[1] = key2;
	v[2] = SV_SN(error ? error : "", elen);
	v[3] = SV_I(now);
	v[4] = SV_I(now + delay_ms);
	v[5] = SV_I(permanent ? 1 : 0);
	v[6] = SV_I(fence7 ? *fence7 : 0);
	rc = tx_query(tx, sql, fence7 ? 7 : 6, v, &rows);
	if (rc)
		return rc;
	if (rows->nrows != 1) {
		rows_free(rows);
		return ST_CONFLICT;
	}
	if (new_state) {
		int st = job_state_parse(rows_text(rows, 0, 0));

		*new_state = st < 0 ? JOB_AVAILABLE : (enum job_state)st;
	}
	rows_free(rows);
	return ST_OK;
}

enum st_rc queue_fail(struct tx *tx, int64_t id, const char *lease_owner, const char *error,
		      int64_t delay_ms, bool permanent, enum job_state *new_state)
{
	return fail_run(tx, FAIL_SET " WHERE id = $1 AND" LEASE_HELD("$2") " RETURNING state",
			SV_I(id), SV_S(lease_owner), NULL, error, delay_ms, permanent, new_state);
}

enum st_rc queue_fail_unleased(struct tx *tx, const struct job *j, const char *error,
			       int64_t delay_ms, bool permanent, enum job_state *new_state)
{
	return fail_run(tx, FAIL_SET " WHERE id = $1 AND state = 'available' AND attempts = $2"
			" AND updated_at = $7 RETURNING state",
			SV_I(j->id), SV_I(j->attempts), &j->updated_at, error, delay_ms, permanent,
			new_state);
}

enum st_rc queue_release(struct tx *tx, int64_t id, const char *lease_owner)
{
	int64_t changes = 0;
	enum st_rc rc;

	rc = tx_exec(tx,
		     "UPDATE jobs SET state = 'available', lease_owner = NULL, lease_expires_at = NULL,"
		     " updated_at = $3 WHERE id = $1 AND" LEASE_HELD("$2"),
		     ST_ARGS(SV_I(id), SV_S(lease_owner), SV_I(tx_now_ms(tx))), &changes);
	if (rc)
		return rc;
	return changes == 1 ? ST_OK : ST_CONFLICT;
}

/* ---- sweeping ---- */

/* The sweep's UPDATE returns every swept row whole (JOB_COLS): a job it
 * moved to dead is handed to dead_fn as it now is. Sweeps are rare (a
 * lost worker) and small, so RETURNING's per-row cost does not matter. */
#define SWEEP_SET \
	"UPDATE jobs SET attempts = attempts + 1, updated_at = $1," \
	" last_error = 'lease expired: the worker running it was lost'," \
	" state = CASE WHEN attempts + 1 >= max_attempts THEN 'dead' ELSE 'available' END," \
	" finished_at = CASE WHEN attempts + 1 >= max_attempts THEN CAST($1 AS BIGINT)" \
	"  ELSE NULL END," \
	" lease_owner = NULL, lease_expires_at = NULL"

enum st_rc queue_sweep_leases(struct tx *tx, int64_t limit, bool all, queue_dead_fn *dead_fn,
			      void *dead_arg, int64_t *reclaimed, int64_t *dead)
{
	struct st_rows *rows = NULL;
	int64_t now = tx_now_ms(tx), nd = 0;
	enum st_rc rc;

	if (tx_dialect(tx) == ST_PG)
		rc = tx_query(tx,
			      SWEEP_SET
			      " WHERE id IN (SELECT id FROM jobs WHERE state = 'running'"
			      "  AND (lease_expires_at <= $1 OR $3 = 1) ORDER BY lease_expires_at LIMIT $2"
			      "  FOR UPDATE SKIP LOCKED)"
			      " AND state = 'running'"
			      " RETURNING " JOB_COLS,
			      ST_ARGS(SV_I(now), SV_I(limit), SV_I(all ? 1 : 0)), &rows);
	else
		rc = tx_query(tx,
			      SWEEP_SET
			      " WHERE id IN (SELECT id FROM jobs WHERE state = 'running'"
			      "  AND (lease_expires_at <= $1 OR $3 = 1) ORDER BY lease_expires_at LIMIT $2)"
			      " RETURNING " JOB_COLS,
			      ST_ARGS(SV_I(now), SV_I(limit), SV_I(all ? 1 : 0)), &rows);
	if (rc)
		return rc;
	for (int i = 0; rc == ST_OK && i < rows->nrows; i++) {
		struct job j;

		if (job_state_parse(rows_text(rows, i, 4)) != JOB_DEAD)
			continue;
		nd++;
		if (!dead_fn)
			continue;
		rc = job_from_row(rows, i, &j);
		if (rc == ST_OK) {
			rc = dead_fn(tx, dead_arg, &j);
			job_release(&j);
		}
	}
	if (rc == ST_OK) {
		if (reclaimed)
			*reclaimed = rows->nrows;
		if (dead)
			*dead = nd;
	}
	rows_free(rows);
	return rc;
}

/* PostgreSQL's purge: the ids gathered once, then found by primary key,
 * as the claim does (queue_claim_pg_sql): `id IN (SELECT ...)` was planned
 * as a hash semi-join over a sequential scan of the whole table for each
 * batch of SWEEP_BATCH rows. SQLite looks the list up by rowid either way. */
const char queue_purge_pg_sql[] =
	"DELETE FROM jobs WHERE id = ANY(ARRAY(SELECT id FROM jobs WHERE state = 'completed'"
	" AND finished_at < $1 ORDER BY finished_at LIMIT $2))";

enum st_rc queue_purge_completed(struct tx *tx, int64_t before_ms, int64_t limit,
				 int64_t *deleted)
{
	if (tx_dialect(tx) == ST_PG)
		return tx_exec(tx, queue_purge_pg_sql, ST_ARGS(SV_I(before_ms), SV_I(limit)), deleted);
	return tx_exec(tx,
		       "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = 'completed'"
		       " AND finished_at < $1 ORDER BY finished_at LIMIT $2)",
		       ST_ARGS(SV_I(before_ms), SV_I(limit)), deleted);
}

/* ---- reads and the DLQ ---- */

enum st_rc queue_get(struct tx *tx, int64_t id, struct job *out)
{
	struct st_rows *rows = NULL;
	enum st_rc rc;

	rc = tx_query_one(tx, "SELECT " JOB_COLS " FROM jobs WHERE id = $1", ST_ARGS(SV_I(id)), &rows);
	if (rc)
		return rc;
	rc = job_from_row(rows, 0, out);
	rows_free(rows);
	return rc;
}

enum st_rc queue_dlq_list(struct tx *tx, int64_t after_id, int limit, struct job *out,
			  int *n_out)
{
	struct st_rows *rows = NULL;
	enum st_rc rc;

	*n_out = 0;
	if (limit <= 0)
		return ST_OK;
	rc = tx_query(tx,
		      "SELECT " JOB_COLS " FROM jobs WHERE state = 'dead' AND id > $1"
		      " ORDER BY id LIMIT $2",
		      ST_ARGS(SV_I(after_id), SV_I(limit)), &rows);
	if (rc)
		return rc;
	rc = jobs_from_rows(rows, limit, out, n_out);
	rows_free(rows);
	return rc;
}

/* After a conditional change touched nothing: absent or in the wrong state. */
static enum st_rc why_not_dead(struct tx *tx, int64_t id)
{
	struct st_rows *rows = NULL;
	enum st_rc rc;

	rc = tx_query(tx, "SELECT state FROM jobs WHERE id = $1", ST_ARGS(SV_I(id)), &rows);
	if (rc)
		return rc;
	rc = rows->nrows ? ST_CONFLICT : ST_NOT_FOUND;
	rows_free(rows);
	return rc;
}

enum st_rc queue_dlq_retry(struct tx *tx, int64_t id)
{
	int64_t changes = 0, now = tx_now_ms(tx);
	enum st_rc rc;

	rc = tx_exec(tx,
		     "UPDATE jobs SET state = 'available', attempts = 0, run_at = $2, finished_at = NULL,"
		     " updated_at = $2 WHERE id = $1 AND state = 'dead'",
		     ST_ARGS(SV_I(id), SV_I(now)), &changes);
	if (rc)
		return rc;
	return changes == 1 ? ST_OK : why_not_dead(tx, id);
}

enum st_rc queue_dlq_delete(struct tx *tx, int64_t id)
{
	int64_t changes = 0;
	enum st_rc rc;

	rc = tx_exec(tx, "DELETE FROM jobs WHERE id = $1 AND state = 'dead'", ST_ARGS(SV_I(id)),
		     &changes);
	if (rc)
		return rc;
	return changes == 1 ? ST_OK : why_not_dead(tx, id);
}

/* The jobs indexes are partial, one per state (migration 009), and a
 * planner can only use one when the query names its state as a literal:
 * `state = $1` would read the whole table. Hence one statement per state. */
#define STATE_SQL(prefix, suffix) \
	{ prefix "'available'" suffix, prefix "'running'" suffix, prefix "'completed'" suffix, \
	  prefix "'dead'" suffix }

enum st_rc queue_counts(struct tx *tx, queue_count_fn *fn, void *arg)
{
	static const char *const sql[JOB_STATE_COUNT] =
		STATE_SQL("SELECT queue, count(*) FROM jobs WHERE state = ", " GROUP BY queue");

	for (int s = 0; s < JOB_STATE_COUNT; s++) {
		struct st_rows *rows = NULL;
		enum st_rc rc = tx_query(tx, sql[s], ST_NOARGS, &rows);

		if (rc)
			return rc;
		for (int i = 0; i < rows->nrows; i++)
			fn(arg, rows_text(rows, i, 0), (enum job_state)s, rows_i64(rows, i, 1));
		rows_free(rows);
	}
	return ST_OK;
}

enum st_rc queue_count_state(struct tx *tx, enum job_state state, int64_t *n)
{
	static const char *const sql[JOB_STATE_COUNT] =
		STATE_SQL("SELECT count(*) FROM jobs WHERE state = ", "");
	struct st_rows *rows = NULL;
	enum st_rc rc;

	if ((unsigned)state >= JOB_STATE_COUNT)
		return ST_INVALID;
	rc = tx_query(tx, sql[state], ST_NOARGS, &rows);
	if (rc)
		return rc;
	*n = rows_i64(rows, 0, 0);
	rows_free(rows);
	return ST_OK;
}

enum st_rc queue_count_payload(struct tx *tx, const char *kind, const char *payload,
			       unsigned state_mask, int64_t *n)
{
	static const char *const sql[JOB_STATE_COUNT] =
		STATE_SQL("SELECT count(*) FROM jobs WHERE state = ", " AND kind = $1 AND payload = $2");
	int64_t total = 0;

	/* One lookup per state: the live states are small sets (their own
	 * partial indexes), and completed is only scanned when asked for. */
	for (int s = 0; s < JOB_STATE_COUNT; s++) {
		struct st_rows *rows = NULL;
		enum st_rc rc;

		if (!(state_mask & (1u << s)))
			continue;
		rc = tx_query(tx, sql[s], ST_ARGS(SV_S(kind), SV_S(payload)), &rows);
		if (rc)
			return rc;
		total += rows_i64(rows, 0, 0);
		rows_free(rows);
	}
	*n = total;
	return ST_OK;
}

enum st_rc queue_count_due(struct tx *tx, const char *queue, int64_t limit, int64_t *n)
{
	struct st_rows *rows = NULL;
	enum st_rc rc = tx_query(tx,
				 "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'available'"
				 " AND queue = $1 AND run_at <= $2 LIMIT $3) t",
				 ST_ARGS(SV_S(queue), SV_I(tx_now_ms(tx)), SV_I(limit)), &rows);

	if (rc)
		return rc;
	*n = rows_i64(rows, 0, 0);
	rows_free(rows);
	return ST_OK;
}

/* ---- backoff ---- */

uint64_t queue_rand_default(void *arg)
{
	uint64_t v = 0;

	(void)arg;
	if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
		v = 0; /* no entropy: no jitter (the ceiling still bounds the delay) */
	return v;
}

int64_t queue_backoff_ceiling_ms(int attempt, int64_t base_ms, int64_t cap_ms)
{
	if (base_ms <= 0 || cap_ms <= 0)
		return 0;
	if (attempt < 0)
		attempt = 0;
	/* base * 2^attempt > cap  <=>  base > cap >> attempt (for attempt < 63). */
	if (attempt >= 62 || base_ms > (cap_ms >> attempt))
		return cap_ms;
	return base_ms << attempt;
}

int64_t queue_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, queue_rand_fn *rnd,
			 void *rnd_arg)
{
	int64_t ceiling = queue_backoff_ceiling_ms(attempt, base_ms, cap_ms);

	if (ceiling <= 0)
		return 0;
	if (!rnd)
		rnd = queue_rand_default;
	/* Full jitter: uniform over [0, ceiling], both ends included. The
	 * modulo bias is below ceiling / 2^64: immaterial. */
	return (int64_t)(rnd(rnd_arg) % ((uint64_t)ceiling + 1));
}

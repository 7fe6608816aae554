/* reconcile.c — the reconciliation queries and the report (reconcile.h).
 *
 * Every check is one aggregate query over the raw rows, written once for
 * both dialects. Costs are full scans of ledger_entries, accounts, holds
 * and intents: fine once a minute at the sizes an embedded ledger holds;
 * a very large ledger would move to incremental checkpoints (the newest
 * entry id reconciled so far), noted in docs/internals/queue.md. */
#include "reconcile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "intent.h"
#include "queue.h"
#include "banned.h"

static const char *const intent_status_names[6] = { "PENDING", "LOCKED", "SUBMITTED",
						     "CONFIRMED", "SETTLED", "FAILED" };
static const char *const job_state_names[4] = { "available", "running", "completed", "dead" };
static const char *const hold_status_names[4] = { "pending", "captured", "released", "expired" };

/* Holds whose postings break "captured once": a captured hold without
 * exactly one capture transaction taking 1 .. its amount from its
 * account, or another hold with one. */
#define HOLDS_POSTED_WRONG                                                                       \
	"FROM holds h LEFT JOIN ("                                                               \
	" SELECT t.hold_id, count(DISTINCT t.id) AS n,"                                          \
	"  sum(CASE WHEN e.account_id = hh.account_id THEN"                                      \
	"   CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END ELSE 0 END) AS net"   \
	" FROM ledger_tx t JOIN holds hh ON hh.id = t.hold_id"                                   \
	" JOIN ledger_entries e ON e.tx_id = t.id GROUP BY t.hold_id) p ON p.hold_id = h.id"    \
	" WHERE (h.status = 'captured' AND (coalesce(p.n, 0) <> 1 OR p.net < 1 OR p.net > h.amount))" \
	" OR (h.status <> 'captured' AND coalesce(p.n, 0) <> 0)"

/* Pending holds past their expiry by more than the grace ($1 = the
 * cut-off): a client's, or a PENDING intent's (an intent further on waits
 * for the stuck-intent sweep, not for its hold's timeout). */
#define HOLDS_OVERDUE                                                                            \
	"FROM holds h LEFT JOIN intents i ON i.id = h.intent_id"                                 \
	" WHERE h.status = 'pending' AND h.expires_at IS NOT NULL AND h.expires_at <= $1"        \
	" AND (h.intent_id IS NULL OR i.status = 'PENDING')"

static void add_job_count(void *arg, const char *queue, enum job_state state, int64_t n)
{
	int64_t *jobs = arg;

	(void)queue;
	jobs[state] += n;
}

/* One row of integers: out[0..ncols) (0 for SQL NULL). */
static enum st_rc query_ints(struct tx *tx, const char *sql, int n, const struct st_val *params,
			     int64_t *out, int ncols)
{
	struct st_rows *rows = NULL;
	enum st_rc rc = tx_query(tx, sql, n, params, &rows);

	if (rc)
		return rc;
	for (int c = 0; c < ncols; c++)
		out[c] = rows->nrows ? rows_i64(rows, 0, c) : 0;
	rows_free(rows);
	return ST_OK;
}

/* (name, count) rows into out[] by the index of name in names. */
static enum st_rc query_named_counts(struct tx *tx, const char *sql, int n,
				     const struct st_val *params, const char *const *names,
				     int nnames, int64_t *out)
{
	struct st_rows *rows = NULL;
	enum st_rc rc = tx_query(tx, sql, n, params, &rows);

	if (rc)
		return rc;
	for (int i = 0; i < rows->nrows; i++) {
		const char *name = rows_text(rows, i, 0);

		for (int k = 0; name && k < nnames; k++)
			if (!strcmp(name, names[k]))
				out[k] += rows_i64(rows, i, 1);
	}
	rows_free(rows);
	return ST_OK;
}

/* The first RECONCILE_EXAMPLES ids of what a failed check found. Each
 * query repeats its check's condition, selecting ids instead of counting
 * them, and runs only when the count was not zero: a healthy ledger pays
 * nothing for it. $1 of the stuck intents' query is the cut-off. */
static const char *const example_sql[RC_NAMED_CHECKS] = {
	[RC_TRANSACTIONS_BALANCED] =
		"SELECT id FROM ("
		" SELECT tx_id AS id FROM ledger_entries GROUP BY tx_id"
		"  HAVING sum(CASE WHEN direction = 'debit' THEN amount ELSE 0 END)"
		"   <> sum(CASE WHEN direction = 'credit' THEN amount ELSE 0 END) OR count(*) < 2"
		" UNION SELECT t.id FROM ledger_tx t"
		"  WHERE NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.tx_id = t.id)"
		") x ORDER BY id LIMIT 10",
	[RC_BALANCES_MATCH_ENTRIES] =
		"SELECT a.id FROM account_balances a LEFT JOIN ("
		" SELECT account_id, sum(CASE WHEN direction = 'credit' THEN amount ELSE -amount END)"
		"  AS net FROM ledger_entries GROUP BY account_id) e ON e.account_id = a.id"
		" WHERE a.balance <> coalesce(e.net, 0) ORDER BY a.id LIMIT 10",
	[RC_HELD_MATCHES_HOLDS] =
		"SELECT a.id FROM accounts a LEFT JOIN ("
		" SELECT account_id, sum(amount) AS held FROM holds WHERE status = 'pending'"
		" GROUP BY account_id) h ON h.account_id = a.id"
		" WHERE a.held <> coalesce(h.held, 0) ORDER BY a.id LIMIT 10",
	[RC_NO_OVERDRAFT] =
		"SELECT id FROM account_balances WHERE may_go_negative = 0 AND balance - held < 0"
		" ORDER BY id LIMIT 10",
	[RC_HOLDS_MATCH_INTENTS] =
		"SELECT id FROM ("
		" SELECT i.id AS id FROM intents i LEFT JOIN holds h ON h.id = i.hold_id"
		"  WHERE (i.status IN ('PENDING', 'LOCKED', 'SUBMITTED', 'CONFIRMED')"
		"   AND (h.status IS NULL OR h.status <> 'pending'))"
		"  OR (i.status = 'SETTLED' AND (h.status IS NULL OR h.status <> 'captured'))"
		"  OR (i.status = 'FAILED' AND (h.status IS NULL OR h.status NOT IN ('released', 'expired')))"
		" UNION SELECT h.id FROM holds h LEFT JOIN intents i ON i.id = h.intent_id"
		"  WHERE h.status = 'pending' AND h.intent_id IS NOT NULL"
		"  AND (i.id IS NULL OR i.status IN ('SETTLED', 'FAILED'))"
		") x ORDER BY id LIMIT 10",
	[RC_SETTLED_POSTED_ONCE] =
		"SELECT i.id FROM intents i LEFT JOIN ("
		" SELECT intent_id, count(*) AS n FROM ledger_tx WHERE intent_id IS NOT NULL"
		" GROUP BY intent_id) t ON t.intent_id = i.id"
		" WHERE ((i.status = 'SETTLED' AND coalesce(t.n, 0) <> 1)"
		" OR (i.status <> 'SETTLED' AND coalesce(t.n, 0) <> 0))"
		" ORDER BY i.id LIMIT 10",
	[RC_NO_STUCK_INTENTS] =
		"SELECT id FROM intents WHERE status IN ('LOCKED', 'SUBMITTED') AND updated_at <= $1"
		" ORDER BY id LIMIT 10",
	[RC_HOLDS_RESOLVED_ONCE] = "SELECT h.id " HOLDS_POSTED_WRONG " ORDER BY h.id LIMIT 10",
	[RC_NO_OVERDUE_HOLDS] = "SELECT h.id " HOLDS_OVERDUE " ORDER BY h.id LIMIT 10",
};

static enum st_rc query_examples(struct tx *tx, enum reconcile_check c, int64_t stuck_cutoff,
				 int64_t hold_cutoff, struct reconcile_examples *out)
{
	struct st_rows *rows = NULL;
	const struct st_val cutoff = SV_I(c == RC_NO_OVERDUE_HOLDS ? hold_cutoff : stuck_cutoff);
	bool param = c == RC_NO_STUCK_INTENTS || c == RC_NO_OVERDUE_HOLDS;
	enum st_rc rc = tx_query(tx, example_sql[c], param ? 1 : 0, param ? &cutoff : NULL, &rows);

	if (rc)
		return rc;
	out->n = 0;
	for (int i = 0; i < rows->nrows && out->n < RECONCILE_EXAMPLES; i++)
		rows_copy(rows, i, 0, out->id[out->n++], sizeof(out->id[0]));
	rows_free(rows);
	return ST_OK;
}

/* Whether each named check failed, from the counts. */
static bool check_failed(const struct reconcile_report *r, enum reconcile_check c)
{
	switch (c) {
	case RC_TRANSACTIONS_BALANCED:
		return r->unbalanced_tx != 0;
	case RC_BALANCES_MATCH_ENTRIES:
		return r->balance_mismatches != 0;
	case RC_HELD_MATCHES_HOLDS:
		return r->held_mismatches != 0;
	case RC_NO_OVERDRAFT:
		return r->overdrafts != 0;
	case RC_HOLDS_MATCH_INTENTS:
		return r->open_intents_without_pending_hold + r->pending_holds_of_closed_intents +
			       r->settled_without_capture + r->failed_with_open_or_captured_hold !=
		       0;
	case RC_SETTLED_POSTED_ONCE:
		return r->settled_posting_mismatches != 0;
	case RC_NO_STUCK_INTENTS:
		return r->stuck_locked + r->stuck_submitted != 0;
	case RC_HOLDS_RESOLVED_ONCE:
		return r->hold_posting_mismatches != 0;
	case RC_NO_OVERDUE_HOLDS:
		return r->overdue_holds != 0;
	case RC_NAMED_CHECKS:
		break;
	}
	return false;
}

enum st_rc reconcile_run(struct tx *tx, int64_t stuck_after_ms, struct reconcile_report *out)
{
	struct reconcile_report r;
	int64_t v[4];
	int64_t stuck[INTENT_STATUS_COUNT] = { 0 };
	enum st_rc rc;

	memset(&r, 0, sizeof(r));
	r.ran_at = tx_now_ms(tx);
	r.stuck_after_ms = stuck_after_ms;

	/* Transactions: balanced, with >= 2 entries; and none without entries. */
	rc = query_ints(tx,
			"SELECT count(*), coalesce(sum(abs(d - c)), 0) FROM ("
			" SELECT tx_id, sum(CASE WHEN direction = 'debit' THEN amount ELSE 0 END) AS d,"
			"  sum(CASE WHEN direction = 'credit' THEN amount ELSE 0 END) AS c, count(*) AS n"
			" FROM ledger_entries GROUP BY tx_id) t WHERE d <> c OR n < 2",
			ST_NOARGS, v, 2);
	if (rc)
		return rc;
	r.unbalanced_tx = v[0];
	r.unbalanced_amount = v[1];
	rc = query_ints(tx,
			"SELECT count(*) FROM ledger_tx t"
			" WHERE NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.tx_id = t.id)",
			ST_NOARGS, v, 1);
	if (rc)
		return rc;
	r.unbalanced_tx += v[0];

	/* Global sums and sizes. */
	rc = query_ints(tx, "SELECT coalesce(sum(balance), 0), count(*), coalesce(sum(held), 0) FROM account_balances",
			ST_NOARGS, v, 3);
	if (rc)
		return rc;
	r.balance_sum = v[0];
	r.accounts = v[1];
	r.held_total = v[2];
	rc = query_ints(tx,
			"SELECT coalesce(sum(CASE WHEN direction = 'credit' THEN amount ELSE -amount END), 0),"
			" count(*) FROM ledger_entries",
			ST_NOARGS, v, 2);
	if (rc)
		return rc;
	r.entry_sum = v[0];
	r.entries = v[1];
	rc = query_ints(tx, "SELECT count(*) FROM ledger_tx", ST_NOARGS, &r.transactions, 1);
	if (rc)
		return rc;

	/* Per account: balance == its entries, held == its pending holds. */
	rc = query_ints(tx,
			"SELECT count(*) FROM account_balances a LEFT JOIN ("
			" SELECT account_id, sum(CASE WHEN direction = 'credit' THEN amount ELSE -amount END)"
			"  AS net FROM ledger_entries GROUP BY account_id) e ON e.account_id = a.id"
			" WHERE a.balance <> coalesce(e.net, 0)",
			ST_NOARGS, &r.balance_mismatches, 1);
	if (rc)
		return rc;
	rc = query_ints(tx,
			"SELECT count(*) FROM accounts a LEFT JOIN ("
			" SELECT account_id, sum(amount) AS held FROM holds WHERE status = 'pending'"
			" GROUP BY account_id) h ON h.account_id = a.id"
			" WHERE a.held <> coalesce(h.held, 0)",
			ST_NOARGS, &r.held_mismatches, 1);
	if (rc)
		return rc;
	rc = query_ints(tx, "SELECT count(*) FROM account_balances WHERE may_go_negative = 0 AND balance - held < 0",
			ST_NOARGS, &r.overdrafts, 1);
	if (rc)
		return rc;
	rc = query_ints(tx, "SELECT count(*) FROM holds WHERE status = 'pending'", ST_NOARGS,
			&r.pending_holds, 1);
	if (rc)
		return rc;

	/* Holds against intents. */
	rc = query_ints(tx,
			"SELECT"
			" coalesce(sum(CASE WHEN i.status IN ('PENDING', 'LOCKED', 'SUBMITTED', 'CONFIRMED')"
			"  AND (h.status IS NULL OR h.status <> 'pending') THEN 1 ELSE 0 END), 0),"
			" coalesce(sum(CASE WHEN i.status = 'SETTLED'"
			"  AND (h.status IS NULL OR h.status <> 'captured') THEN 1 ELSE 0 END), 0),"
			" coalesce(sum(CASE WHEN i.status = 'FAILED'"
			"  AND (h.status IS NULL OR h.status NOT IN ('released', 'expired')) THEN 1 ELSE 0 END), 0)"
			" FROM intents i LEFT JOIN holds h ON h.id = i.hold_id",
			ST_NOARGS, v, 3);
	if (rc)
		return rc;
	r.open_intents_without_pending_hold = v[0];
	r.settled_without_capture = v[1];
	r.failed_with_open_or_captured_hold = v[2];
	rc = query_ints(tx,
			"SELECT count(*) FROM holds h LEFT JOIN intents i ON i.id = h.intent_id"
			" WHERE h.status = 'pending' AND h.intent_id IS NOT NULL"
			" AND (i.id IS NULL OR i.status IN ('SETTLED', 'FAILED'))",
			ST_NOARGS, &r.pending_holds_of_closed_intents, 1);
	if (rc)
		return rc;

	/* A SETTLED intent posted exactly one transaction; no other intent any. */
	rc = query_ints(tx,
			"SELECT count(*) FROM intents i LEFT JOIN ("
			" SELECT intent_id, count(*) AS n FROM ledger_tx WHERE intent_id IS NOT NULL"
			" GROUP BY intent_id) t ON t.intent_id = i.id"
			" WHERE (i.status = 'SETTLED' AND coalesce(t.n, 0) <> 1)"
			" OR (i.status <> 'SETTLED' AND coalesce(t.n, 0) <> 0)",
			ST_NOARGS, &r.settled_posting_mismatches, 1);
	if (rc)
		return rc;

	/* Every hold resolved once: a captured hold has exactly one posting,
	 * which took 1 .. its amount from its account; other holds none. */
	rc = query_ints(tx, "SELECT count(*) " HOLDS_POSTED_WRONG, ST_NOARGS,
			&r.hold_posting_mismatches, 1);
	if (rc)
		return rc;
	/* Pending past expiry for long: the sweep is not running. Holds of
	 * intents past PENDING wait for the stuck-intent sweep instead. */
	rc = query_ints(tx, "SELECT count(*) " HOLDS_OVERDUE,
			ST_ARGS(SV_I(r.ran_at - RECONCILE_HOLD_GRACE_MS)), &r.overdue_holds, 1);
	if (rc)
		return rc;
	rc = query_named_counts(tx, "SELECT status, count(*) FROM holds GROUP BY status", ST_NOARGS,
				hold_status_names, 4, r.holds);
	if (rc)
		return rc;

	/* Intents by status, the stuck ones, jobs by state. */
	rc = intent_count_by_status(tx, -1, r.intents);
	if (rc)
		return rc;
	rc = intent_count_by_status(tx, r.ran_at - stuck_after_ms, stuck);
	if (rc)
		return rc;
	r.stuck_locked = stuck[INTENT_LOCKED];
	r.stuck_submitted = stuck[INTENT_SUBMITTED];
	for (int c = 0; c < RC_NAMED_CHECKS; c++) {
		if (!check_failed(&r, (enum reconcile_check)c))
			continue;
		rc = query_examples(tx, (enum reconcile_check)c, r.ran_at - stuck_after_ms,
				    r.ran_at - RECONCILE_HOLD_GRACE_MS, &r.examples[c]);
		if (rc)
			return rc;
	}
	rc = queue_counts(tx, add_job_count, r.jobs);
	if (rc)
		return rc;
	*out = r;
	return ST_OK;
}

static int64_t abs64(int64_t v)
{
	return v < 0 ? (v == INT64_MIN ? INT64_MAX : -v) : v;
}

int64_t reconcile_imbalance(const struct reconcile_report *r)
{
	int64_t a = abs64(r->balance_sum), b = abs64(r->entry_sum), c = abs64(r->unbalanced_amount);

	/* Saturating: an overflowing imbalance is still "not zero". */
	if (a > INT64_MAX - b)
		return INT64_MAX;
	a += b;
	return a > INT64_MAX - c ? INT64_MAX : a + c;
}

int reconcile_problems(const struct reconcile_report *r)
{
	return (r->unbalanced_tx != 0) + (r->balance_sum != 0 || r->entry_sum != 0) +
	       (r->balance_mismatches != 0) + (r->held_mismatches != 0) + (r->overdrafts != 0) +
	       (r->open_intents_without_pending_hold + r->pending_holds_of_closed_intents +
			r->settled_without_capture + r->failed_with_open_or_captured_hold != 0) +
	       (r->settled_posting_mismatches != 0) + (r->stuck_locked + r->stuck_submitted != 0) +
	       (r->hold_posting_mismatches != 0) + (r->overdue_holds != 0);
}

static json_t *money(int64_t v)
{
	char s[24];

	snprintf(s, sizeof(s), "%lld", (long long)v);
	return json_string(s);
}

static json_t *check(bool ok, json_t *details)
{
	if (details)
		json_object_set_new(details, "ok", json_boolean(ok));
	return details;
}

/* A named check's object gains "examples": the ids it found wrong. */
static json_t *named_check(const struct reconcile_report *r, enum reconcile_check c, json_t *details)
{
	json_t *ids;

	details = check(!check_failed(r, c), details);
	if (!details || !check_failed(r, c))
		return details;
	ids = json_array();
	for (int i = 0; ids && i < r->examples[c].n; i++)
		json_array_append_new(ids, json_string(r->examples[c].id[i]));
	if (!ids || json_object_set_new(details, "examples", ids)) {
		json_decref(details);
		return NULL;
	}
	return details;
}

json_t *reconcile_report_json(const struct reconcile_report *r)
{
	char ran[RFC3339_LEN];
	json_t *checks, *counts, *intents, *jobs, *holds, *root;

	format_rfc3339(r->ran_at, ran);
	checks = json_pack(
		"{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
		"transactions_balanced",
		named_check(r, RC_TRANSACTIONS_BALANCED, json_pack("{s:I, s:o}", "unbalanced_transactions",
						   (json_int_t)r->unbalanced_tx, "unbalanced_amount",
						   money(r->unbalanced_amount))),
		"global_sum_zero",
		check(!r->balance_sum && !r->entry_sum,
		      json_pack("{s:o, s:o}", "balance_sum", money(r->balance_sum), "entry_sum",
				money(r->entry_sum))),
		"balances_match_entries",
		named_check(r, RC_BALANCES_MATCH_ENTRIES,
		      json_pack("{s:I}", "mismatched_accounts", (json_int_t)r->balance_mismatches)),
		"held_matches_holds",
		named_check(r, RC_HELD_MATCHES_HOLDS,
		      json_pack("{s:I}", "mismatched_accounts", (json_int_t)r->held_mismatches)),
		"no_overdraft",
		named_check(r, RC_NO_OVERDRAFT, json_pack("{s:I}", "overdrawn_accounts", (json_int_t)r->overdrafts)),
		"holds_match_intents",
		named_check(r, RC_HOLDS_MATCH_INTENTS,
		      json_pack("{s:I, s:I, s:I, s:I}", "open_intents_without_pending_hold",
				(json_int_t)r->open_intents_without_pending_hold,
				"pending_holds_of_closed_intents",
				(json_int_t)r->pending_holds_of_closed_intents, "settled_without_capture",
				(json_int_t)r->settled_without_capture, "failed_with_open_or_captured_hold",
				(json_int_t)r->failed_with_open_or_captured_hold)),
		"settled_claims_posted_once",
		named_check(r, RC_SETTLED_POSTED_ONCE,
		      json_pack("{s:I}", "mismatched_intents", (json_int_t)r->settled_posting_mismatches)),
		"no_stuck_intents",
		named_check(r, RC_NO_STUCK_INTENTS,
		      json_pack("{s:I, s:I, s:I}", "locked", (json_int_t)r->stuck_locked, "submitted",
				(json_int_t)r->stuck_submitted, "stuck_after_ms",
				(json_int_t)r->stuck_after_ms)),
		"holds_resolved_once",
		named_check(r, RC_HOLDS_RESOLVED_ONCE,
		      json_pack("{s:I}", "mismatched_holds", (json_int_t)r->hold_posting_mismatches)),
		"no_overdue_holds",
		named_check(r, RC_NO_OVERDUE_HOLDS,
		      json_pack("{s:I, s:I}", "overdue_holds", (json_int_t)r->overdue_holds, "grace_ms",
				(json_int_t)RECONCILE_HOLD_GRACE_MS)));
	intents = json_object();
	for (int i = 0; intents && i < 6; i++)
		json_object_set_new(intents, intent_status_names[i], json_integer(r->intents[i]));
	holds = json_object();
	for (int i = 0; holds && i < 4; i++)
		json_object_set_new(holds, hold_status_names[i], json_integer(r->holds[i]));
	jobs = json_object();
	for (int i = 0; jobs && i < 4; i++)
		json_object_set_new(jobs, job_state_names[i], json_integer(r->jobs[i]));
	counts = json_pack("{s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:I}", "accounts",
			   (json_int_t)r->accounts, "transactions", (json_int_t)r->transactions,
			   "entries", (json_int_t)r->entries, "pending_holds",
			   (json_int_t)r->pending_holds, "held_total", money(r->held_total), "intents",
			   intents ? intents : json_null(), "holds", holds ? holds : json_null(), "jobs",
			   jobs ? jobs : json_null(), "dlq_jobs", (json_int_t)r->jobs[3]);
	root = json_pack("{s:s, s:b, s:i, s:o, s:o, s:o}", "ran_at", ran, "ok",
			 reconcile_problems(r) == 0, "problems", reconcile_problems(r), "imbalance",
			 money(reconcile_imbalance(r)), "checks", checks ? checks : json_null(),
			 "counts", counts ? counts : json_null());
	if (!checks || !counts) {
		json_decref(root);
		return NULL;
	}
	return root;
}

enum st_rc reconcile_store(struct tx *tx, const struct reconcile_report *r, const char *json_text)
{
	enum st_rc rc;

	rc = tx_exec(tx, "INSERT INTO reconciliation_reports (ran_at, ok, report) VALUES ($1, $2, $3)",
		     ST_ARGS(SV_I(r->ran_at), SV_I(reconcile_problems(r) == 0 ? 1 : 0), SV_S(json_text)),
		     NULL);
	if (rc)
		return rc;
	return tx_exec(tx,
		       "DELETE FROM reconciliation_reports WHERE id <= ("
		       " SELECT max(id) FROM reconciliation_reports) - $1",
		       ST_ARGS(SV_I(RECONCILE_KEEP)), NULL);
}

enum st_rc reconcile_latest(struct tx *tx, char **json_out)
{
	struct st_rows *rows = NULL;
	enum st_rc rc;

	rc = tx_query_one(tx, "SELECT report FROM reconciliation_reports ORDER BY id DESC LIMIT 1",
			  ST_NOARGS, &rows);
	if (rc)
		return rc;
	*json_out = strdup(rows_text(rows, 0, 0));
	rows_free(rows);
	return *json_out ? ST_OK : ST_NOMEM;
}

/* test_ledger.c — the double-entry ledger and holds on a real store.
 *
 * Each test opens a fresh store (SQLite; PostgreSQL too under
 * tests/with-services, see ledger_fixture.h) funded with FX_FUNDING, runs
 * write units through store_run and reads back with SQL. The store-side
 * rules are attacked with raw SQL that bypasses ledger.c entirely: an
 * unbalanced or one-legged transaction, entries never closed, an entry
 * appended to a closed transaction, rewrites, a hold "captured" by UPDATE —
 * each must be refused with nothing written. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "ledger.h"
#include "store.h"

#include "ledger_fixture.h"

#include "banned.h"

/* ---- units ------------------------------------------------------------- */

struct post_arg {
	struct ledger_post p;
	char id[LEDGER_ID_MAX + 1];
};

static enum st_rc post_unit(struct tx *tx, void *arg)
{
	struct post_arg *a = arg;

	return ledger_post(tx, &a->p, a->id);
}

static enum st_rc post(const char *from, const char *to, int64_t amount)
{
	struct ledger_entry e[2] = { { from, LEDGER_DEBIT, amount }, { to, LEDGER_CREDIT, amount } };
	struct post_arg a = { .p = { .kind = "test", .n = 2, .entries = e } };

	return store_run(F.s, post_unit, &a);
}

struct hold_arg {
	const char *account;
	int64_t amount;
	int64_t expires_at;
	struct ledger_hold h;
};

static enum st_rc hold_unit(struct tx *tx, void *arg)
{
	struct hold_arg *a = arg;

	return ledger_hold_create(tx, a->account, a->amount, a->expires_at, NULL, &a->h);
}

static enum st_rc hold(const char *account, int64_t amount, int64_t expires_at, struct ledger_hold *out)
{
	struct hold_arg a = { .account = account, .amount = amount, .expires_at = expires_at };
	enum st_rc rc = store_run(F.s, hold_unit, &a);

	if (out)
		*out = a.h;
	return rc;
}

struct hold_op {
	const char *id;
	const char *to;      /* capture target */
	int which;           /* 0 capture, 1 release, 2 expire one, 3 keep */
	char tx_id[LEDGER_ID_MAX + 1];
};

static enum st_rc hold_op_unit(struct tx *tx, void *arg)
{
	struct hold_op *o = arg;

	switch (o->which) {
	case 0: return ledger_hold_capture(tx, o->id, o->to, "test", NULL, o->tx_id);
	case 1: return ledger_hold_release(tx, o->id);
	case 2: return ledger_hold_expire_one(tx, o->id);
	default: return ledger_hold_keep(tx, o->id);
	}
}

static enum st_rc hold_do(const char *id, int which, const char *to)
{
	struct hold_op o = { .id = id, .to = to, .which = which };

	return store_run(F.s, hold_op_unit, &o);
}

static enum st_rc expire_unit(struct tx *tx, void *arg)
{
	return ledger_hold_expire(tx, tx_now_ms(tx), 100, arg);
}

static enum st_rc wallet_unit(struct tx *tx, void *arg)
{
	struct account *a = arg;
	char w[WALLET_LEN + 1];

	memcpy(w, a->wallet, sizeof(w)); /* account_register clears *out first */
	return account_register(tx, w, NULL, a);
}

/* Registers the wallet 0x000...n and returns its account. */
static struct account wallet(unsigned n)
{
	struct account a;

	memset(&a, 0, sizeof(a));
	snprintf(a.wallet, sizeof(a.wallet), "0x%040x", n);
	cr_assert_eq(store_run(F.s, wallet_unit, &a), ST_OK);
	return a;
}

/* ---- ledger_check: the code-side rules --------------------------------- */

Test(ledger_check, rejects_every_malformed_transaction)
{
	struct ledger_entry ok[2] = { { "a", LEDGER_DEBIT, 5 }, { "b", LEDGER_CREDIT, 5 } };
	struct ledger_entry e[3];
	struct ledger_entry many[LEDGER_MAX_ENTRIES + 1];
	struct ledger_post p = { .kind = "t", .n = 2, .entries = e };

	cr_assert_eq(ledger_check(&(struct ledger_post){ .kind = "t", .n = 2, .entries = ok }), ST_OK);
	cr_assert_eq(ledger_check(NULL), ST_INVALID);
	cr_assert_eq(ledger_check(&(struct ledger_post){ .kind = "t", .n = 1, .entries = ok }), ST_INVALID);
	cr_assert_eq(ledger_check(&(struct ledger_post){ .kind = "t", .n = 0, .entries = ok }), ST_INVALID);
	cr_assert_eq(ledger_check(&(struct ledger_post){ .n = 2, .entries = ok }), ST_INVALID, "no kind");

	memcpy(e, ok, sizeof(ok));
	e[1].amount = 4;
	cr_assert_eq(ledger_check(&p), ST_INVALID, "unbalanced");
	memcpy(e, ok, sizeof(ok));
	e[0].amount = e[1].amount = 0;
	cr_assert_eq(ledger_check(&p), ST_INVALID, "zero");
	e[0].amount = e[1].amount = -5;
	cr_assert_eq(ledger_check(&p), ST_INVALID, "negative");
	memcpy(e, ok, sizeof(ok));
	e[1].dir = LEDGER_DEBIT;
	cr_assert_eq(ledger_check(&p), ST_INVALID, "two debits");
	memcpy(e, ok, sizeof(ok));
	e[1].account_id = NULL;
	cr_assert_eq(ledger_check(&p), ST_INVALID, "no account");
	e[1].account_id = "";
	cr_assert_eq(ledger_check(&p), ST_INVALID, "empty account");
	memcpy(e, ok, sizeof(ok));
	e[1].dir = (enum ledger_dir)7;
	cr_assert_eq(ledger_check(&p), ST_INVALID, "bad direction");

	/* Sums that overflow int64_t are refused even when they would "balance"
	 * after wrapping. */
	e[0] = (struct ledger_entry){ "a", LEDGER_DEBIT, INT64_MAX };
	e[1] = (struct ledger_entry){ "b", LEDGER_DEBIT, 2 };
	e[2] = (struct ledger_entry){ "c", LEDGER_CREDIT, 1 };
	p.n = 3;
	cr_assert_eq(ledger_check(&p), ST_INVALID, "debit sum overflow");
	e[0] = (struct ledger_entry){ "a", LEDGER_CREDIT, INT64_MAX };
	e[1] = (struct ledger_entry){ "b", LEDGER_CREDIT, INT64_MAX };
	e[2] = (struct ledger_entry){ "c", LEDGER_DEBIT, INT64_MAX };
	cr_assert_eq(ledger_check(&p), ST_INVALID, "credit sum overflow");
	e[0] = (struct ledger_entry){ "a", LEDGER_DEBIT, INT64_MAX };
	e[1] = (struct ledger_entry){ "b", LEDGER_CREDIT, INT64_MAX - 1 };
	e[2] = (struct ledger_entry){ "c", LEDGER_CREDIT, 1 };
	cr_assert_eq(ledger_check(&p), ST_OK, "INT64_MAX on each side is fine");

	for (size_t i = 0; i < LEDGER_MAX_ENTRIES + 1; i++)
		many[i] = (struct ledger_entry){ "a", i % 2 ? LEDGER_CREDIT : LEDGER_DEBIT, 1 };
	cr_assert_eq(ledger_check(&(struct ledger_post){ .kind = "t", .n = LEDGER_MAX_ENTRIES, .entries = many }),
		     ST_OK);
	cr_assert_eq(ledger_check(&(struct ledger_post){ .kind = "t", .n = LEDGER_MAX_ENTRIES + 1,
							 .entries = many }),
		     ST_INVALID, "too many entries");
}

/* ---- posting ----------------------------------------------------------- */

BOTH(ledger, treasury_is_funded_once)
{
	cr_assert_eq(fx_account(ACCT_TREASURY).balance, FX_FUNDING);
	cr_assert_eq(fx_account(ACCT_EXTERNAL).balance, -FX_FUNDING);
	/* Every later start runs the bootstrap again: nothing more happens. */
	cr_assert_eq(store_run(F.s, fx_bootstrap_unit, &F.funding), ST_OK);
	cr_assert_eq(store_run(F.s, fx_bootstrap_unit, &(int64_t){ 5 }), ST_OK);
	cr_assert_eq(fx_account(ACCT_TREASURY).balance, FX_FUNDING);
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_tx WHERE ref = 'treasury_funding'", NULL), 1);
	fx_assert_ledger_invariants("after funding");
}

BOTH(ledger, balanced_post_moves_balances)
{
	struct account w = wallet(1);
	struct ledger_entry e[3] = {
		{ ACCT_TREASURY, LEDGER_DEBIT, 700 },
		{ w.id, LEDGER_CREDIT, 500 },
		{ ACCT_REVENUE, LEDGER_CREDIT, 200 },
	};
	struct post_arg a = { .p = { .kind = "test", .ref = "r-1", .n = 3, .entries = e } };

	cr_assert_eq(store_run(F.s, post_unit, &a), ST_OK);
	cr_assert_eq(strncmp(a.id, "ltx_", 4), 0);
	cr_assert_eq(fx_account(ACCT_TREASURY).balance, FX_FUNDING - 700);
	cr_assert_eq(fx_account(w.id).balance, 500);
	cr_assert_eq(fx_account(ACCT_REVENUE).balance, 200);
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_entries WHERE tx_id = $1", a.id), 3);
	fx_assert_ledger_invariants("after a 3-entry post");

	/* The same reference again: ST_UNIQUE, nothing written. */
	{
		struct fx_snap s = fx_snapshot();

		cr_assert_eq(store_run(F.s, post_unit, &a), ST_UNIQUE);
		fx_assert_unchanged(&s, "a repeated reference");
	}
}

/* A posting whose caller lets its unit take a failure back (ref_at_close:
 * the webhook job's effect) skips the lookup of its ref; the closing row's
 * UNIQUE index refuses a repeated one all the same, ST_UNIQUE, and the
 * entries and moves written before it go with the unit or the savepoint
 * (without that index the repeat posts a second time: checked). */
struct nested_ref_arg {
	struct post_arg dup, other;
	enum st_rc dup_rc;
};

static enum st_rc nested_ref_unit(struct tx *tx, void *arg)
{
	struct nested_ref_arg *a = arg;

	a->dup_rc = tx_nested(tx, post_unit, &a->dup);
	return post_unit(tx, &a->other);
}

BOTH(ledger, a_repeated_ref_checked_at_close_is_refused_by_the_store)
{
	struct account w = wallet(1);
	struct ledger_entry e[2] = { { ACCT_TREASURY, LEDGER_DEBIT, 300 }, { w.id, LEDGER_CREDIT, 300 } };
	struct ledger_entry e2[2] = { { ACCT_TREASURY, LEDGER_DEBIT, 70 }, { ACCT_REVENUE, LEDGER_CREDIT, 70 } };
	struct post_arg a = { .p = { .kind = "test", .ref = "r-close", .n = 2, .entries = e,
				     .ref_at_close = true } };
	struct nested_ref_arg n = {
		.dup = { .p = { .kind = "test", .ref = "r-close", .n = 2, .entries = e2, .ref_at_close = true } },
		.other = { .p = { .kind = "test", .ref = "r-other", .n = 2, .entries = e2, .ref_at_close = true } },
	};
	struct fx_snap s;
	int64_t revenue;

	cr_assert_eq(store_run(F.s, post_unit, &a), ST_OK);
	cr_assert_eq(fx_account(w.id).balance, 300);

	/* Alone in its unit: refused, nothing of it written. */
	s = fx_snapshot();
	cr_assert_eq(store_run(F.s, post_unit, &n.dup), ST_UNIQUE);
	fx_assert_unchanged(&s, "a repeated reference refused at the closing row");

	/* In a savepoint of a unit that goes on: refused, its entries and
	 * moves taken back, the unit's other posting kept. */
	revenue = fx_account(ACCT_REVENUE).balance;
	cr_assert_eq(store_run(F.s, nested_ref_unit, &n), ST_OK);
	cr_assert_eq(n.dup_rc, ST_UNIQUE);
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_tx WHERE ref = $1", "r-close"), 1);
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_entries WHERE tx_id = $1", n.other.id), 2);
	cr_assert_eq(fx_snapshot().entries, s.entries + 2);
	cr_assert_eq(fx_account(ACCT_REVENUE).balance, revenue + 70);
	cr_assert_eq(fx_account(w.id).balance, 300);
	fx_assert_ledger_invariants("after a repeated reference refused at the closing row");
}

BOTH(ledger, code_rejects_unbalanced_and_writes_nothing)
{
	struct ledger_entry e[2] = { { ACCT_TREASURY, LEDGER_DEBIT, 10 }, { ACCT_REVENUE, LEDGER_CREDIT, 9 } };
	struct post_arg a = { .p = { .kind = "test", .n = 2, .entries = e } };
	struct fx_snap s = fx_snapshot();

	cr_assert_eq(store_run(F.s, post_unit, &a), ST_INVALID);
	e[1].amount = 10;
	a.p.n = 1;
	cr_assert_eq(store_run(F.s, post_unit, &a), ST_INVALID);
	fx_assert_unchanged(&s, "an unbalanced post");
}

BOTH(ledger, store_rejects_unbalanced_raw_sql)
{
	struct fx_snap s = fx_snapshot();

	/* Two entries that do not balance, closed by hand. */
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('raw1', 'treasury', 'debit', 100, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('raw1', 'revenue', 'credit', 99, 0)",
			 "INSERT INTO ledger_tx (id, kind, created_at) VALUES ('raw1', 'raw', 0)"),
		     ST_CONFLICT);
	fx_assert_unchanged(&s, "an unbalanced raw transaction");

	/* One entry only. */
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('raw2', 'treasury', 'debit', 100, 0)",
			 "INSERT INTO ledger_tx (id, kind, created_at) VALUES ('raw2', 'raw', 0)"),
		     ST_CONFLICT);
	/* No entries at all. */
	cr_assert_eq(RAW("INSERT INTO ledger_tx (id, kind, created_at) VALUES ('raw3', 'raw', 0)"), ST_CONFLICT);
	/* A zero or negative amount, even balanced. */
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('raw4', 'treasury', 'debit', -5, 0)"),
		     ST_CONFLICT);
	fx_assert_unchanged(&s, "one-legged raw transactions");

	/* Entries that balance but are never closed: the commit itself fails. */
	cr_assert_neq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			  " VALUES ('raw5', 'treasury', 'debit', 100, 0)",
			  "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			  " VALUES ('raw5', 'revenue', 'credit', 100, 0)"),
		      ST_OK);
	fx_assert_unchanged(&s, "entries never closed");

	/* A balanced raw transaction is accepted and moves the balances... */
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('raw6', 'treasury', 'debit', 100, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('raw6', 'revenue', 'credit', 100, 0)",
			 "INSERT INTO ledger_tx (id, kind, created_at) VALUES ('raw6', 'raw', 0)"),
		     ST_OK);
	cr_assert_eq(fx_account(ACCT_REVENUE).balance, 100);
	/* ...but nothing may be appended to it once closed. */
	s = fx_snapshot();
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('raw6', 'treasury', 'debit', 50, 0)"),
		     ST_CONFLICT);
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('raw6', 'treasury', 'debit', 50, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('raw6', 'revenue', 'credit', 50, 0)"),
		     ST_CONFLICT);
	fx_assert_unchanged(&s, "appending to a closed transaction");
	fx_assert_ledger_invariants("after the raw attacks");
}

/* ---- PostgreSQL: an entry racing the close of its transaction --------- */

static PGconn *pg_conn(void)
{
	char url[2048];
	PGconn *c;

	sfx_url_with_db(getenv("SETTLED_TEST_PG"), F.pg_db, url, sizeof(url));
	c = PQconnectdb(url);
	cr_assert(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
	PQsetNoticeProcessor(c, sfx_quiet, NULL);
	return c;
}

static void pg_ok(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);

	cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s",
		  sql, PQerrorMessage(c));
	PQclear(r);
}

/* The result of c's command sent with PQsendQuery: its SQLSTATE ("" when
 * it succeeded). */
static void pg_finish(PGconn *c, char state[6])
{
	PGresult *r;

	state[0] = 0;
	while ((r = PQgetResult(c))) {
		if (PQresultStatus(r) == PGRES_FATAL_ERROR)
			snprintf(state, 6, "%s", PQresultErrorField(r, PG_DIAG_SQLSTATE));
		PQclear(r);
	}
}

/* Another transaction appends two entries that balance each other (one
 * statement) to a transaction while its writer closes it. The open-transaction trigger
 * cannot see the uncommitted closing row, the deferred foreign key finds
 * it once the closer commits, and the pair keeps the transaction balanced:
 * what refuses the pair is the lock the open-transaction trigger takes on
 * the transaction id (migration 020). Without it both entries commit, and
 * neither ever moves a balance. */
Test(ledger_pg, an_append_racing_the_close_is_refused, .init = fx_open_pg, .fini = fx_close,
     .timeout = 120)
{
	PGconn *closer, *racer, *watch;
	char state[6], sql[200];
	bool blocked = false;
	struct fx_snap s;

	fx_need_backend();
	s = fx_snapshot();
	closer = pg_conn();
	racer = pg_conn();
	watch = pg_conn();
	pg_ok(closer, "BEGIN");
	pg_ok(closer, "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
		      " VALUES ('race1', 'treasury', 'debit', 100, 0)");
	pg_ok(closer, "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
		      " VALUES ('race1', 'revenue', 'credit', 100, 0)");
	pg_ok(closer, "INSERT INTO ledger_tx (id, kind, created_at) VALUES ('race1', 'raw', 0)");

	/* The racer's pair, in one statement, while the closer has not
	 * committed. */
	pg_ok(racer, "BEGIN");
	cr_assert(PQsendQuery(racer, "INSERT INTO ledger_entries (tx_id, account_id, direction, amount,"
				     " created_at) VALUES ('race1', 'treasury', 'debit', 50, 0),"
				     " ('race1', 'revenue', 'credit', 50, 0)"));
	/* Until it either finished (no lock) or waits for the closer's. */
	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM pg_locks WHERE pid = %d AND NOT granted", PQbackendPID(racer));
	for (int i = 0; i < 6000; i++) {
		PGresult *r;

		cr_assert(PQconsumeInput(racer), "%s", PQerrorMessage(racer));
		if (!PQisBusy(racer))
			break;
		r = PQexec(watch, sql);
		blocked = PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "0") != 0;
		PQclear(r);
		if (blocked)
			break;
		usleep(10 * 1000);
	}
	pg_ok(closer, "COMMIT");
	pg_finish(racer, state);
	if (!state[0]) {
		cr_assert(PQsendQuery(racer, "COMMIT"));
		pg_finish(racer, state);
	} else {
		pg_ok(racer, "ROLLBACK");
	}
	cr_assert_str_eq(state, "23514", "the racer's pair: SQLSTATE '%s' (committed when empty)", state);
	cr_assert(blocked, "the racer's entry did not wait for the closer");
	PQfinish(closer);
	PQfinish(racer);
	PQfinish(watch);
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_entries WHERE tx_id = 'race1'", NULL), 2);
	cr_assert_eq(fx_snapshot().entries, s.entries + 2);
	fx_assert_ledger_invariants("after an append racing a close");
}

/* The plan of a balance read once ANALYZE has seen revenue's pending
 * deltas: a single distinct account_id made PostgreSQL estimate that every
 * row matches any account, so the sum became a sequential scan of the whole
 * table for each hold and transfer (migration 024). */
static bool pg_plan_scans_deltas(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	bool seq = false;

	cr_assert(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
	for (int i = 0; i < PQntuples(r); i++)
		seq = seq || strstr(PQgetvalue(r, i, 0), "Seq Scan on account_deltas") != NULL;
	PQclear(r);
	return seq;
}

Test(ledger_pg, a_balance_read_probes_the_deltas_index_after_analyze, .init = fx_open_pg,
     .fini = fx_close)
{
	PGconn *c;
	char sql[120];

	fx_need_backend();
	c = pg_conn();
	snprintf(sql, sizeof(sql), "DELETE FROM account_deltas WHERE id > %lld",
		 (long long)fx_int("SELECT coalesce(max(id), 0) FROM account_deltas", NULL));
	/* a second's worth of transfers into revenue, net zero */
	pg_ok(c, "INSERT INTO account_deltas (account_id, delta) SELECT 'revenue',"
		 " CASE WHEN g % 2 = 0 THEN 1 ELSE -1 END FROM generate_series(1, 2000) g");
	pg_ok(c, "ANALYZE account_deltas");
	/* account.c's lookup (ACCOUNT_COLS) and the view, as prepared
	 * statements are planned: the account id unknown to the subquery */
	cr_assert_not(pg_plan_scans_deltas(c, "EXPLAIN SELECT balance + coalesce((SELECT sum(d.delta)"
					      " FROM account_deltas d WHERE d.account_id = accounts.id), 0)"
					      " FROM accounts WHERE id = 'treasury'"),
		      "the account lookup scans every pending delta");
	cr_assert_not(pg_plan_scans_deltas(c, "EXPLAIN SELECT balance FROM account_balances"
					      " WHERE id = 'treasury'"),
		      "the view scans every pending delta");
	/* account_unfolded()'s query (migration 034), as PL/pgSQL plans it
	 * for the connection once it goes generic: the account a parameter */
	pg_ok(c, "PREPARE unfolded(text) AS SELECT coalesce(sum(d.delta), 0) FROM account_deltas d"
		 " WHERE d.account_id = $1");
	pg_ok(c, "SET plan_cache_mode = force_generic_plan");
	cr_assert_not(pg_plan_scans_deltas(c, "EXPLAIN EXECUTE unfolded('treasury')"),
		      "account_unfolded() scans every pending delta");
	cr_assert_eq(fx_int("SELECT account_unfolded('revenue') - coalesce((SELECT sum(delta) FROM account_deltas"
			    " WHERE account_id = 'revenue'), 0)", NULL),
		     0);
	pg_ok(c, sql); /* ours only: the funding's deltas stay */
	PQfinish(c);
	fx_assert_ledger_invariants("after the plans");
}

/* What the two tests below share: one unit (one connection) makes `early`
 * postings of 10 from treasury into a new wallet while accounts is young,
 * adds 2,000 accounts (prefix1 ...), then posts 1 from the wallet into
 * revenue like a transfer, reading this transaction's own statistics
 * (pg_stat_xact_user_tables) just before and after that last posting: it
 * made no sequential scan of the tables watched. */
struct grown_plan {
	const char *from;      /* the wallet, funded by the early postings */
	int early;             /* postings while accounts is young */
	const char *prefix;    /* of the accounts added */
	const char *scans_sql; /* a literal: the watched tables' sum(seq_scan), sum(seq_tup_read) */
	int64_t scans[2], rows[2]; /* before and after the last posting */
};

static enum st_rc xact_seq_scans(struct tx *tx, const char *sql, int64_t *scans, int64_t *rows)
{
	struct st_rows *r = NULL;
	enum st_rc rc = tx_query(tx, sql, ST_NOARGS, &r);

	if (rc)
		return rc;
	*scans = rows_i64(r, 0, 0);
	*rows = rows_i64(r, 0, 1);
	rows_free(r);
	return ST_OK;
}

static enum st_rc grown_plan_unit(struct tx *tx, void *arg)
{
	struct grown_plan *g = arg;
	struct ledger_entry fund[2] = { { ACCT_TREASURY, LEDGER_DEBIT, 10 }, { g->from, LEDGER_CREDIT, 10 } };
	struct ledger_entry spend[2] = { { g->from, LEDGER_DEBIT, 1 }, { ACCT_REVENUE, LEDGER_CREDIT, 1 } };
	struct ledger_post p = { .kind = "test", .n = 2, .entries = fund };
	enum st_rc rc = ST_OK;

	for (int i = 0; i < g->early && rc == ST_OK; i++)
		rc = ledger_post(tx, &p, NULL);
	if (rc == ST_OK)
		rc = tx_exec(tx, "INSERT INTO accounts (id, kind, may_go_negative, created_at)"
			     " SELECT $1::text || g, 'system', 0, 0 FROM generate_series(1, 2000) g",
			     ST_ARGS(SV_S(g->prefix)), NULL);
	if (rc == ST_OK)
		rc = xact_seq_scans(tx, g->scans_sql, &g->scans[0], &g->rows[0]);
	p.entries = spend;
	if (rc == ST_OK)
		rc = ledger_post(tx, &p, NULL);
	if (rc == ST_OK)
		rc = xact_seq_scans(tx, g->scans_sql, &g->scans[1], &g->rows[1]);
	return rc;
}

/* grown_plan_unit for wallet n: the last posting scanned none of the
 * tables (named in the message), and the wallet and ledger add up. */
static void posting_after_growth_scans_nothing(unsigned n, int early, const char *prefix,
					       const char *scans_sql, const char *tables)
{
	struct account w = wallet(n);
	struct grown_plan g = { .from = w.id, .early = early, .prefix = prefix, .scans_sql = scans_sql };

	cr_assert_eq(store_run(F.s, grown_plan_unit, &g), ST_OK);
	cr_assert_eq(g.scans[1] - g.scans[0], 0, "the posting scanned %s %lld times (%lld rows read)", tables,
		     (long long)(g.scans[1] - g.scans[0]), (long long)(g.rows[1] - g.rows[0]));
	cr_assert_eq(fx_account(w.id).balance, early * 10 - 1);
	fx_assert_ledger_invariants("after the postings");
}

/* A posting's checks look each entry's account and transaction up by
 * primary key, whatever the table held when the connection planned them
 * (migration 035). PL/pgSQL plans the open-transaction trigger's check
 * statement (032) once per connection, and with no parameter that plan is
 * generic: planned against a young accounts table (the bootstrap's
 * posting, five accounts), 032's NOT EXISTS over the statement's entries
 * became a hash anti-join over a sequential scan of accounts, kept for the
 * connection's life, so every later posting on it read every account (the
 * bench: ~50k accounts after its register rows, 11-15 ms an entries
 * statement, batches holding their row locks for up to a second). Here
 * one unit (one connection) posts while accounts is young, adds 2,000
 * accounts, posts again like a transfer into revenue, and counts the
 * second posting's sequential scans of accounts and ledger_tx in this
 * transaction's own statistics (pg_stat_xact_user_tables): none. */
Test(ledger_pg, a_posting_probes_accounts_by_key_whatever_the_cached_plan_saw, .init = fx_open_pg,
     .fini = fx_close)
{
	fx_need_backend();
	posting_after_growth_scans_nothing(9, 1, "young",
					   "SELECT coalesce(sum(seq_scan), 0), coalesce(sum(seq_tup_read), 0)"
					   " FROM pg_stat_xact_user_tables WHERE relname IN ('accounts', 'ledger_tx')",
					   "accounts or ledger_tx");
}

/* The closing trigger's statement (033: the transaction's nets, the moves
 * of the checked accounts by UPDATE ... FROM, the deltas of the others)
 * has a parameter (NEW.id), so PL/pgSQL plans it afresh for its first five
 * runs on a connection, then may keep one generic plan, made with the
 * statistics of that moment, until they change. Made while accounts was
 * young, that plan moved the accounts by a nested loop over a sequential
 * scan of accounts: every later posting on the connection read every
 * account (40 ms a posting with 50,000). Migration 036 plans that
 * function's statements without sequential scans (a key probe whatever
 * the table held). Here one unit (one connection) makes twelve postings
 * while accounts is young, past the five custom plans, adds 2,000
 * accounts, posts a transfer into revenue and counts that posting's
 * sequential scans of accounts: none (one, 2,006 rows read, without 036). */
Test(ledger_pg, a_closing_posting_probes_accounts_by_key_after_its_plan_went_generic,
     .init = fx_open_pg, .fini = fx_close)
{
	fx_need_backend();
	posting_after_growth_scans_nothing(10, 12, "grown",
					   "SELECT coalesce(sum(seq_scan), 0), coalesce(sum(seq_tup_read), 0)"
					   " FROM pg_stat_xact_user_tables WHERE relname = 'accounts'",
					   "accounts");
}

/* Only an account that may go negative has unfolded deltas (postings move
 * the others in place), so a lookup sums them only for such an account: a
 * hold or transfer from a client account no longer reads account_deltas.
 * A delta written by hand to another account is still in the view, where
 * reconciliation looks. */
BOTH(ledger, a_lookup_sums_deltas_only_of_accounts_that_may_go_negative)
{
	int64_t treasury = fx_int("SELECT balance FROM accounts WHERE id = 'treasury'", NULL);
	int64_t revenue = fx_int("SELECT balance FROM account_balances WHERE id = 'revenue'", NULL);

	cr_assert_eq(RAW("INSERT INTO account_deltas (account_id, delta) VALUES ('treasury', 7), ('revenue', 5)"),
		     ST_OK);
	cr_assert_eq(fx_account("treasury").balance, treasury, "a checked account's lookup read a delta");
	cr_assert_eq(fx_account("revenue").balance, revenue + 5, "a hot account's lookup missed its delta");
	cr_assert_eq(fx_int("SELECT balance FROM account_balances WHERE id = 'treasury'", NULL), treasury + 7);
	/* ours, the two newest */
	cr_assert_eq(RAW("DELETE FROM account_deltas WHERE id IN"
			 " (SELECT id FROM account_deltas ORDER BY id DESC LIMIT 2)"),
		     ST_OK);
	fx_assert_ledger_invariants("after the hand-written deltas");
}

/* An entry or a hold naming an account that does not exist is refused,
 * whichever way it is written. On PostgreSQL since migration 031 these
 * references are checked by existence in the triggers (no foreign key, so
 * no KEY SHARE lock on revenue's row from every hold and transfer); on
 * SQLite by the foreign keys. */
/* Every entry of a statement is checked, not only its first: PostgreSQL
 * checks a statement's entries together (one statement-level trigger,
 * migration 032), SQLite each row. Here the second of two entries appends
 * to a closed transaction, and the rest of the unit makes the open one
 * balance and closes it: only the open-transaction check can refuse it. */
BOTH(ledger, each_entry_of_a_statement_is_checked)
{
	struct fx_snap s;

	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('stc', 'treasury', 'debit', 20, 0), ('stc', 'revenue', 'credit', 20, 0)",
			 "INSERT INTO ledger_tx (id, kind, created_at) VALUES ('stc', 'raw', 0)"),
		     ST_OK);
	s = fx_snapshot();
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('sto1', 'treasury', 'debit', 5, 0), ('stc', 'revenue', 'credit', 5, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('sto1', 'revenue', 'credit', 5, 0)",
			 "INSERT INTO ledger_tx (id, kind, created_at) VALUES ('sto1', 'raw', 0)"),
		     ST_CONFLICT, "the second entry of a statement appended to a closed transaction");
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('stc', 'treasury', 'debit', 5, 0), ('sto2', 'revenue', 'credit', 5, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('sto2', 'treasury', 'debit', 5, 0)",
			 "INSERT INTO ledger_tx (id, kind, created_at) VALUES ('sto2', 'raw', 0)"),
		     ST_CONFLICT, "the first entry of a statement appended to a closed transaction");
	fx_assert_unchanged(&s, "entries appended to a closed transaction");
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_entries WHERE tx_id = 'stc'", NULL), 2);
	/* three entries of two open transactions in one statement, closed:
	 * accepted */
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('sto3', 'treasury', 'debit', 5, 0), ('sto3', 'revenue', 'credit', 5, 0),"
			 " ('sto4', 'treasury', 'debit', 7, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('sto4', 'revenue', 'credit', 7, 0)",
			 "INSERT INTO ledger_tx (id, kind, created_at) VALUES ('sto3', 'raw', 0), ('sto4', 'raw', 0)"),
		     ST_OK);
	cr_assert_eq(fx_account(ACCT_REVENUE).balance, 32);
	fx_assert_ledger_invariants("after appends to a closed transaction");
}

/* No account that may not go negative is ever left with less than nothing
 * available (balance - held < 0), whichever column a write changes:
 * PostgreSQL by the trigger accounts_available since migration 032 (a
 * table CHECK before), SQLite by the table CHECK. */
BOTH(ledger, no_account_is_over_committed_however_written)
{
	struct account w = wallet(7);
	struct fx_snap s;

	cr_assert_eq(post(ACCT_REVENUE, w.id, 10), ST_OK);
	cr_assert_eq(hold(w.id, 4, 0, NULL), ST_OK);
	/* a mirror account whose stored balance is below zero (revenue's
	 * moves wait in account_deltas on PostgreSQL) */
	cr_assert_eq(RAW("INSERT INTO accounts (id, name, kind, balance, may_go_negative, created_at)"
			 " VALUES ('ocm', 'ocm', 'system', -6, 1, 0)"),
		     ST_OK);
	s = fx_snapshot();
	cr_assert_eq(RAW("UPDATE accounts SET balance = -1 WHERE id = 'treasury'"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE accounts SET balance = balance - 7 WHERE kind = 'wallet'"), ST_CONFLICT,
		     "below what is held");
	cr_assert_eq(RAW("UPDATE accounts SET held = balance + 1 WHERE id = 'treasury'"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE accounts SET may_go_negative = 0 WHERE id = 'ocm'"), ST_CONFLICT,
		     "a negative mirror account made a checked one");
	cr_assert_eq(RAW("INSERT INTO accounts (id, name, kind, balance, may_go_negative, created_at)"
			 " VALUES ('oc1', 'oc1', 'system', -1, 0, 0)"),
		     ST_CONFLICT);
	cr_assert_eq(RAW("INSERT INTO accounts (id, name, kind, balance, held, may_go_negative, created_at)"
			 " VALUES ('oc2', 'oc2', 'system', 5, 6, 0, 0)"),
		     ST_CONFLICT);
	fx_assert_unchanged(&s, "over-committed accounts");
	cr_assert_eq(fx_int("SELECT count(*) FROM accounts WHERE id IN ('oc1', 'oc2')", NULL), 0);
	/* exactly nothing available is allowed; a mirror account may go below */
	cr_assert_eq(RAW("INSERT INTO accounts (id, name, kind, balance, held, may_go_negative, created_at)"
			 " VALUES ('oc3', 'oc3', 'system', 6, 6, 0, 0)"),
		     ST_OK);
	cr_assert_eq(RAW("UPDATE accounts SET balance = balance - 1 WHERE id = 'ocm'"), ST_OK);
	cr_assert_eq(post(ACCT_REVENUE, w.id, 1), ST_OK);
}

BOTH(ledger, entries_and_holds_naming_no_account_are_refused)
{
	struct fx_snap s = fx_snapshot();

	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('ghost1', 'nosuch', 'debit', 3, 0), ('ghost1', 'revenue', 'credit', 3, 0)",
			 "INSERT INTO ledger_tx (id, kind, created_at) VALUES ('ghost1', 'raw', 0)"),
		     ST_CONFLICT, "an entry debiting no account");
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('ghost2', 'revenue', 'debit', 3, 0), ('ghost2', 'nosuch', 'credit', 3, 0)",
			 "INSERT INTO ledger_tx (id, kind, created_at) VALUES ('ghost2', 'raw', 0)"),
		     ST_CONFLICT, "an entry crediting no account");
	cr_assert_eq(RAW("INSERT INTO holds (id, account_id, amount, created_at)"
			 " VALUES ('ghosth1', 'nosuch', 1, 0)"),
		     ST_CONFLICT, "a hold on no account");
	cr_assert_eq(RAW("INSERT INTO holds (id, account_id, amount, created_at, to_account)"
			 " VALUES ('ghosth2', 'revenue', 1, 0, 'nosuch')"),
		     ST_CONFLICT, "a hold payable to no account");
	fx_assert_unchanged(&s, "references to no account");
	cr_assert_eq(fx_int("SELECT count(*) FROM holds WHERE id LIKE 'ghost%'", NULL), 0);
	/* the same shapes naming accounts that exist are accepted */
	cr_assert_eq(RAW("INSERT INTO holds (id, account_id, amount, created_at, to_account)"
			 " VALUES ('okh1', 'revenue', 1, 0, 'external')"),
		     ST_OK);
	fx_assert_ledger_invariants("after references to no account");
}

/* PostgreSQL: the statements that change one pending hold by id
 * (release, expiry, keep) find it by the primary key, whatever the
 * planner knows of holds. With `AND status = 'pending'` they matched the
 * predicate of the partial index holds_pending_account, and a plan made
 * before holds had statistics (a young database: this one) took it and
 * read every pending hold to find the one id; settled prepares its
 * statements per connection, so that plan stayed. Checked on the very
 * statements settled prepared: each is looked up in this connection's
 * pg_prepared_statements and EXPLAINed by name with the generic plan
 * (what a connection's cached plan becomes) and with a custom one. */
struct hold_plans {
	int n;                 /* statements found */
	char plans[4][1024];   /* generic and custom plan of each, concatenated */
	char sql[2][256];
};

static enum st_rc explain_into(struct tx *tx, const char *sql, char *out, size_t cap)
{
	struct st_rows *r = NULL;
	enum st_rc rc = tx_query(tx, sql, ST_NOARGS, &r);
	size_t len = strlen(out);

	if (rc)
		return rc;
	for (int i = 0; i < r->nrows && len < cap; i++)
		len += (size_t)snprintf(out + len, cap - len, "%s\n", rows_text(r, i, 0));
	rows_free(r);
	return ST_OK;
}

static enum st_rc hold_plans_unit(struct tx *tx, void *arg)
{
	struct hold_plans *p = arg;
	struct ledger_hold h;
	struct st_rows *r = NULL;
	enum st_rc rc;

	memset(p, 0, sizeof(*p));
	rc = ledger_hold_create(tx, ACCT_TREASURY, 5, F.now + 60000, NULL, &h);
	if (rc == ST_OK)
		rc = ledger_hold_keep(tx, h.id);
	if (rc == ST_OK)
		rc = ledger_hold_release(tx, h.id);
	if (rc == ST_OK)
		rc = tx_query(tx, "SELECT name, statement FROM pg_prepared_statements"
			      " WHERE statement LIKE 'UPDATE holds SET %' ORDER BY name",
			      ST_NOARGS, &r);
	if (rc)
		return rc;
	for (int i = 0; i < r->nrows && i < 2 && rc == ST_OK; i++) {
		const char *stmt = rows_text(r, i, 1);
		bool resolve = !strncmp(stmt, "UPDATE holds SET status", 23);
		char sql[160];

		snprintf(p->sql[i], sizeof(p->sql[i]), "%s", stmt);
		snprintf(sql, sizeof(sql), "EXPLAIN EXECUTE %s('%s', %s0)", rows_text(r, i, 0), h.id,
			 resolve ? "'released', " : "");
		rc = tx_exec(tx, "SET LOCAL plan_cache_mode = force_generic_plan", ST_NOARGS, NULL);
		if (rc == ST_OK)
			rc = explain_into(tx, sql, p->plans[i], sizeof(p->plans[i]));
		if (rc == ST_OK)
			rc = tx_exec(tx, "SET LOCAL plan_cache_mode = force_custom_plan", ST_NOARGS, NULL);
		if (rc == ST_OK)
			rc = explain_into(tx, sql, p->plans[i], sizeof(p->plans[i]));
		p->n++;
	}
	rows_free(r);
	return rc;
}

Test(ledger_pg, a_pending_hold_is_changed_through_its_primary_key, .init = fx_open_pg,
     .fini = fx_close)
{
	struct hold_plans p;

	fx_need_backend();
	cr_assert_eq(store_run(F.s, hold_plans_unit, &p), ST_OK);
	cr_assert_eq(p.n, 2, "release and keep were not both prepared in the unit's connection");
	for (int i = 0; i < p.n; i++) {
		cr_assert_not_null(strstr(p.plans[i], "Index Cond: (id = "), "%s\n%s", p.sql[i],
				   p.plans[i]);
		cr_assert_null(strstr(p.plans[i], "holds_pending"), "%s\n%s", p.sql[i], p.plans[i]);
	}
	fx_assert_ledger_invariants("after the plans");
}

/* PostgreSQL (migration 031): the references above are checked without a
 * lock on the account row, which is sound only because an account, once
 * committed, stays: no DELETE, no TRUNCATE, no new id. */
/* ledger_post_many (the merged transfers of one PostgreSQL batch): n
 * postings in a few statements, each its own transaction as if posted
 * alone, or none of them. */
struct many_arg {
	const struct ledger_post *const *posts;
	int n;
	char ids[4][LEDGER_ID_MAX + 1];
};

static enum st_rc many_unit(struct tx *tx, void *arg)
{
	struct many_arg *a = arg;

	return ledger_post_many(tx, a->posts, a->n, a->ids);
}

Test(ledger_pg, many_postings_post_each_as_its_own_transaction, .init = fx_open_pg, .fini = fx_close)
{
	struct account w1, w2;
	struct ledger_entry e1[2], e2[2], e3[4];
	struct ledger_post p1, p2, p3;
	struct many_arg a;
	int64_t t0, w1b, w2b;

	fx_need_backend();
	w1 = wallet(1);
	w2 = wallet(2);
	t0 = fx_int("SELECT balance FROM account_balances WHERE id = 'treasury'", NULL);
	e1[0] = (struct ledger_entry){ ACCT_TREASURY, LEDGER_DEBIT, 10 };
	e1[1] = (struct ledger_entry){ w1.id, LEDGER_CREDIT, 10 };
	e2[0] = (struct ledger_entry){ ACCT_TREASURY, LEDGER_DEBIT, 20 };
	e2[1] = (struct ledger_entry){ w2.id, LEDGER_CREDIT, 20 };
	/* four entries, revenue (a hot account) credited twice */
	e3[0] = (struct ledger_entry){ w1.id, LEDGER_DEBIT, 3 };
	e3[1] = (struct ledger_entry){ ACCT_REVENUE, LEDGER_CREDIT, 3 };
	e3[2] = (struct ledger_entry){ w2.id, LEDGER_DEBIT, 4 };
	e3[3] = (struct ledger_entry){ ACCT_REVENUE, LEDGER_CREDIT, 4 };
	p1 = (struct ledger_post){ .kind = "transfer", .n = 2, .entries = e1, .client_id = "c1" };
	/* passed as array elements: quotes, backslashes, commas, braces */
	p2 = (struct ledger_post){ .kind = "transfer", .n = 2, .entries = e2,
				   .description = "two, {\"x\"} \\ NULL", .metadata = "{\"k\":[1,2]}" };
	p3 = (struct ledger_post){ .kind = "test", .n = 4, .entries = e3 };
	a = (struct many_arg){ .posts = (const struct ledger_post *const[]){ &p1, &p2, &p3 }, .n = 3 };
	cr_assert_eq(store_run(F.s, many_unit, &a), ST_OK);
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < i; j++)
			cr_assert_str_neq(a.ids[i], a.ids[j]);
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_entries WHERE tx_id = $1", a.ids[0]), 2);
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_entries WHERE tx_id = $1", a.ids[1]), 2);
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_entries WHERE tx_id = $1", a.ids[2]), 4);
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_tx WHERE id = $1 AND kind = 'transfer'"
			    " AND client_id = 'c1' AND description IS NULL AND metadata IS NULL",
			    a.ids[0]),
		     1);
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_tx WHERE id = $1 AND client_id IS NULL"
			    " AND description = 'two, {\"x\"} \\ NULL' AND metadata = '{\"k\":[1,2]}'",
			    a.ids[1]),
		     1);
	/* entry ids follow the postings and each posting's entries */
	cr_assert_lt(fx_int("SELECT max(id) FROM ledger_entries WHERE tx_id = $1", a.ids[0]),
		     fx_int("SELECT min(id) FROM ledger_entries WHERE tx_id = $1", a.ids[1]));
	cr_assert_lt(fx_int("SELECT max(id) FROM ledger_entries WHERE tx_id = $1", a.ids[1]),
		     fx_int("SELECT min(id) FROM ledger_entries WHERE tx_id = $1", a.ids[2]));
	cr_assert_eq(fx_int("SELECT count(*) FROM (SELECT account_id, direction, amount,"
			    " row_number() OVER (ORDER BY id) AS k FROM ledger_entries WHERE tx_id = $1) e"
			    " WHERE (k, direction, amount) IN ((1, 'debit', 3), (2, 'credit', 3),"
			    " (3, 'debit', 4), (4, 'credit', 4))",
			    a.ids[2]),
		     4);
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_entries WHERE tx_id = $1 AND account_id = 'revenue'"
			    " AND direction = 'credit'",
			    a.ids[2]),
		     2);
	w1b = fx_int("SELECT balance FROM account_balances WHERE id = $1", w1.id);
	w2b = fx_int("SELECT balance FROM account_balances WHERE id = $1", w2.id);
	cr_assert_eq(w1b, 7);
	cr_assert_eq(w2b, 16);
	cr_assert_eq(fx_int("SELECT balance FROM account_balances WHERE id = 'treasury'", NULL), t0 - 30);
	fx_assert_ledger_invariants("after the postings");
}

Test(ledger_pg, many_postings_are_refused_together, .init = fx_open_pg, .fini = fx_close)
{
	struct account w1;
	struct ledger_entry ok[2], shortf[2], unknown[2], unbalanced[2];
	struct ledger_post pok, pshort, punknown, punbal, pref;
	struct many_arg a;
	struct fx_snap s;

	fx_need_backend();
	w1 = wallet(1);
	ok[0] = (struct ledger_entry){ ACCT_TREASURY, LEDGER_DEBIT, 10 };
	ok[1] = (struct ledger_entry){ w1.id, LEDGER_CREDIT, 10 };
	/* w1 holds nothing before the run: its first posting's 10 are not
	 * enough for 11 (the store's over-commit rule, in the run's order) */
	shortf[0] = (struct ledger_entry){ w1.id, LEDGER_DEBIT, 11 };
	shortf[1] = (struct ledger_entry){ ACCT_REVENUE, LEDGER_CREDIT, 11 };
	unknown[0] = (struct ledger_entry){ ACCT_TREASURY, LEDGER_DEBIT, 1 };
	unknown[1] = (struct ledger_entry){ "acct_nobody", LEDGER_CREDIT, 1 };
	unbalanced[0] = (struct ledger_entry){ ACCT_TREASURY, LEDGER_DEBIT, 2 };
	unbalanced[1] = (struct ledger_entry){ w1.id, LEDGER_CREDIT, 1 };
	pok = (struct ledger_post){ .kind = "transfer", .n = 2, .entries = ok };
	pshort = (struct ledger_post){ .kind = "transfer", .n = 2, .entries = shortf };
	punknown = (struct ledger_post){ .kind = "transfer", .n = 2, .entries = unknown };
	punbal = (struct ledger_post){ .kind = "transfer", .n = 2, .entries = unbalanced };
	pref = (struct ledger_post){ .kind = "transfer", .n = 2, .entries = ok, .ref = "r1" };
	s = fx_snapshot();
	a = (struct many_arg){ .posts = (const struct ledger_post *const[]){ &pok, &pshort }, .n = 2 };
	cr_assert_eq(store_run(F.s, many_unit, &a), ST_CONFLICT, "an over-committed account");
	a = (struct many_arg){ .posts = (const struct ledger_post *const[]){ &pok, &punknown }, .n = 2 };
	cr_assert_eq(store_run(F.s, many_unit, &a), ST_CONFLICT, "an unknown account");
	/* refused before anything is written */
	a = (struct many_arg){ .posts = (const struct ledger_post *const[]){ &pok, &punbal }, .n = 2 };
	cr_assert_eq(store_run(F.s, many_unit, &a), ST_INVALID, "an unbalanced posting");
	a = (struct many_arg){ .posts = (const struct ledger_post *const[]){ &pok, &pref }, .n = 2 };
	cr_assert_eq(store_run(F.s, many_unit, &a), ST_INVALID, "a posting with a reference");
	fx_assert_unchanged(&s, "refused runs");
	fx_assert_ledger_invariants("after the refused runs");
	/* the same two in the other order: w1 is paid first, then pays */
	a = (struct many_arg){ .posts = (const struct ledger_post *const[]){ &pok, &pok }, .n = 2 };
	cr_assert_eq(store_run(F.s, many_unit, &a), ST_OK);
	a = (struct many_arg){ .posts = (const struct ledger_post *const[]){ &pshort }, .n = 1 };
	cr_assert_eq(store_run(F.s, many_unit, &a), ST_OK);
	cr_assert_eq(fx_int("SELECT balance FROM account_balances WHERE id = $1", w1.id), 9);
	fx_assert_ledger_invariants("after the accepted runs");
}

Test(ledger_pg, accounts_are_permanent, .init = fx_open_pg, .fini = fx_close)
{
	struct fx_snap s;

	fx_need_backend();
	cr_assert_eq(RAW("INSERT INTO accounts (id, name, kind, may_go_negative, created_at)"
			 " VALUES ('perm1', 'perm1', 'system', 1, 0)"),
		     ST_OK);
	s = fx_snapshot();
	cr_assert_eq(RAW("DELETE FROM accounts WHERE id = 'perm1'"), ST_CONFLICT, "an unused account deleted");
	cr_assert_eq(RAW("UPDATE accounts SET id = 'perm2' WHERE id = 'perm1'"), ST_CONFLICT,
		     "an account renumbered");
	cr_assert_eq(RAW("UPDATE accounts SET id = 'revenue2' WHERE id = 'revenue'"), ST_CONFLICT,
		     "a used account renumbered");
	cr_assert_neq(RAW("TRUNCATE accounts CASCADE"), ST_OK, "accounts truncated");
	/* what moves an account is untouched */
	cr_assert_eq(RAW("UPDATE accounts SET metadata = '{}' WHERE id = 'perm1'"), ST_OK);
	fx_assert_unchanged(&s, "removing accounts");
	cr_assert_eq(fx_int("SELECT count(*) FROM accounts WHERE id IN ('perm1', 'revenue')", NULL), 2);
	fx_assert_ledger_invariants("after removing accounts");
}

BOTH(ledger, entries_and_transactions_are_append_only)
{
	struct fx_snap s = fx_snapshot();

	cr_assert_eq(RAW("UPDATE ledger_entries SET amount = amount + 1"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE ledger_entries SET account_id = 'revenue'"), ST_CONFLICT);
	cr_assert_eq(RAW("DELETE FROM ledger_entries"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE ledger_tx SET kind = 'x'"), ST_CONFLICT);
	cr_assert_eq(RAW("DELETE FROM ledger_tx"), ST_CONFLICT);
	fx_assert_unchanged(&s, "rewriting the ledger");
	fx_assert_ledger_invariants("after the rewrites");
}

/* What an account is never changes by a balance move, and the store
 * refuses a row that breaks it whichever way it is written (PostgreSQL
 * tests these only when the columns are written: migration 020). */
BOTH(ledger, accounts_refuse_bad_kinds_flags_and_wallets)
{
	int64_t n = fx_int("SELECT count(*) FROM accounts", NULL);
	struct fx_snap s = fx_snapshot();

	cr_assert_eq(RAW("INSERT INTO accounts (id, name, kind, may_go_negative, created_at)"
			 " VALUES ('bad1', 'bad1', 'client', 0, 0)"),
		     ST_CONFLICT);
	cr_assert_eq(RAW("INSERT INTO accounts (id, name, kind, may_go_negative, created_at)"
			 " VALUES ('bad2', 'bad2', 'system', 2, 0)"),
		     ST_CONFLICT);
	cr_assert_eq(RAW("INSERT INTO accounts (id, kind, may_go_negative, created_at)"
			 " VALUES ('bad3', 'wallet', 0, 0)"),
		     ST_CONFLICT);
	cr_assert_eq(RAW("INSERT INTO accounts (id, wallet, kind, may_go_negative, created_at)"
			 " VALUES ('bad4', '0x00000000000000000000000000000000000000b4', 'system', 0, 0)"),
		     ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE accounts SET kind = 'wallet' WHERE id = 'treasury'"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE accounts SET may_go_negative = 7 WHERE id = 'treasury'"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE accounts SET wallet = '0x00000000000000000000000000000000000000b5'"
			 " WHERE id = 'treasury'"),
		     ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE accounts SET balance = balance + 1, may_go_negative = 3"
			 " WHERE id = 'revenue'"),
		     ST_CONFLICT);
	cr_assert_eq(fx_int("SELECT count(*) FROM accounts", NULL), n);
	cr_assert_eq(fx_int("SELECT count(*) FROM accounts WHERE id = 'treasury' AND kind = 'system'"
			    " AND wallet IS NULL AND may_go_negative = 0", NULL),
		     1);
	fx_assert_unchanged(&s, "accounts with a bad kind, flag or wallet");
	/* A good row still goes in, and a balance move still passes. */
	cr_assert_eq(RAW("INSERT INTO accounts (id, name, kind, may_go_negative, created_at)"
			 " VALUES ('good1', 'good1', 'system', 1, 0)"),
		     ST_OK);
	cr_assert_eq(post(ACCT_TREASURY, "good1", 5), ST_OK);
	fx_assert_ledger_invariants("after the refused account rows");
}

BOTH(ledger, no_overdraft_except_mirror_accounts)
{
	struct account w = wallet(2);
	struct fx_snap s = fx_snapshot();

	cr_assert_eq(post(ACCT_TREASURY, w.id, FX_FUNDING + 1), ST_CONFLICT);
	cr_assert_eq(post(w.id, ACCT_TREASURY, 1), ST_CONFLICT, "a wallet never goes negative");
	cr_assert_eq(post(ACCT_PAYOUTS_CLEARING, w.id, 1), ST_CONFLICT);
	fx_assert_unchanged(&s, "overdrafts");
	/* external, revenue and commissions mirror money outside: they may. */
	cr_assert_eq(post(ACCT_REVENUE, w.id, 10), ST_OK);
	cr_assert_eq(post(ACCT_COMMISSIONS, w.id, 10), ST_OK);
	cr_assert_eq(post(ACCT_EXTERNAL, w.id, 10), ST_OK);
	cr_assert_eq(fx_account(ACCT_REVENUE).balance, -10);
	cr_assert_eq(fx_account(w.id).balance, 30);
	/* The whole treasury may go, to the last unit. */
	cr_assert_eq(post(ACCT_TREASURY, w.id, FX_FUNDING), ST_OK);
	cr_assert_eq(fx_account(ACCT_TREASURY).balance, 0);
	fx_assert_ledger_invariants("after the overdraft attempts");
}

BOTH(ledger, balance_overflow_is_refused)
{
	struct account w = wallet(3);
	struct fx_snap s;

	cr_assert_eq(post(ACCT_REVENUE, w.id, INT64_MAX - 5), ST_OK);
	s = fx_snapshot();
	cr_assert_neq(post(ACCT_COMMISSIONS, w.id, 6), ST_OK, "balance past INT64_MAX");
	cr_assert_neq(post(ACCT_REVENUE, w.id, 6), ST_OK, "from an account that may go negative, too");
	fx_assert_unchanged(&s, "overflowing balances");
	cr_assert_eq(fx_account(w.id).balance, INT64_MAX - 5);
	cr_assert_eq(post(ACCT_COMMISSIONS, w.id, 5), ST_OK, "exactly INT64_MAX");
	cr_assert_eq(fx_account(w.id).balance, INT64_MAX);
	/* held + amount overflowing is refused in code. */
	cr_assert_eq(hold(w.id, INT64_MAX, 0, NULL), ST_OK);
	cr_assert_eq(hold(ACCT_EXTERNAL, INT64_MAX, 0, NULL), ST_OK);
	cr_assert_eq(hold(ACCT_EXTERNAL, 1, 0, NULL), ST_UNPROCESSABLE);
}

/* ---- holds ------------------------------------------------------------- */

BOTH(holds, available_is_balance_minus_held)
{
	struct ledger_hold h1, h2;
	struct fx_snap s;

	cr_assert_eq(hold(ACCT_TREASURY, 600000, 0, &h1), ST_OK);
	cr_assert_eq(h1.status, HOLD_PENDING);
	cr_assert_eq(fx_account(ACCT_TREASURY).held, 600000);
	s = fx_snapshot();
	cr_assert_eq(hold(ACCT_TREASURY, 400001, 0, NULL), ST_UNPROCESSABLE);
	cr_assert_eq(hold(ACCT_TREASURY, 0, 0, NULL), ST_INVALID);
	cr_assert_eq(hold(ACCT_TREASURY, -1, 0, NULL), ST_INVALID);
	cr_assert_eq(hold("nope", 1, 0, NULL), ST_NOT_FOUND);
	fx_assert_unchanged(&s, "refused holds");
	cr_assert_eq(hold(ACCT_TREASURY, 400000, 0, &h2), ST_OK);
	cr_assert_eq(fx_account(ACCT_TREASURY).held, FX_FUNDING);
	/* Fully reserved: even a posting from the treasury is refused. */
	cr_assert_eq(post(ACCT_TREASURY, ACCT_REVENUE, 1), ST_CONFLICT);
	/* A raw hold past the available funds is refused by the store. */
	cr_assert_eq(RAW("INSERT INTO holds (id, account_id, amount, status, created_at)"
			 " VALUES ('hraw', 'treasury', 1, 'pending', 0)"),
		     ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE accounts SET held = held - 1 WHERE id = 'treasury'",
			 "UPDATE holds SET amount = 1"),
		     ST_CONFLICT, "a hold's amount is fixed");
	fx_assert_ledger_invariants("fully reserved");
}

BOTH(holds, capture_happens_exactly_once)
{
	struct account w = wallet(4);
	struct ledger_hold h;
	struct hold_op o = { .which = 0 };
	struct fx_snap s;

	cr_assert_eq(hold(ACCT_TREASURY, 250, 0, &h), ST_OK);
	o.id = h.id;
	o.to = w.id;
	cr_assert_eq(store_run(F.s, hold_op_unit, &o), ST_OK);
	cr_assert_eq(fx_account(w.id).balance, 250);
	cr_assert_eq(fx_account(ACCT_TREASURY).balance, FX_FUNDING - 250);
	cr_assert_eq(fx_account(ACCT_TREASURY).held, 0);
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_tx WHERE hold_id = $1", h.id), 1);
	cr_assert_eq(fx_int("SELECT count(*) FROM holds WHERE id = $1 AND status = 'captured'", h.id), 1);

	s = fx_snapshot();
	cr_assert_eq(hold_do(h.id, 0, w.id), ST_CONFLICT, "second capture");
	cr_assert_eq(hold_do(h.id, 1, NULL), ST_CONFLICT, "release after capture");
	cr_assert_eq(hold_do(h.id, 2, NULL), ST_CONFLICT, "expiry after capture");
	cr_assert_eq(hold_do(h.id, 3, NULL), ST_CONFLICT, "keep after capture");
	cr_assert_eq(hold_do("hold_none", 0, w.id), ST_NOT_FOUND);
	fx_assert_unchanged(&s, "a second capture");
	fx_assert_ledger_invariants("after capture");
}

/* A hold is pending exactly when it has no resolved_at, however the row is
 * written (PostgreSQL checks it in the holds triggers since migration 026,
 * SQLite by a CHECK). */
BOTH(holds, rows_keep_status_and_resolved_at_in_step)
{
	struct ledger_hold h;
	struct fx_snap s;

	cr_assert_eq(hold(ACCT_TREASURY, 300, 0, &h), ST_OK);
	s = fx_snapshot();
	cr_assert_eq(RAW("INSERT INTO holds (id, account_id, amount, status, created_at, resolved_at)"
			 " VALUES ('h-early', 'treasury', 1, 'pending', 0, 5)"),
		     ST_CONFLICT);
	cr_assert_eq(RAW("INSERT INTO holds (id, account_id, amount, status, created_at, resolved_at)"
			 " VALUES ('h-done', 'treasury', 1, 'released', 0, 5)"),
		     ST_CONFLICT, "a hold stored resolved");
	cr_assert_eq(RAW("INSERT INTO holds (id, account_id, amount, status, created_at)"
			 " VALUES ('h-took', 'treasury', 1, 'captured', 0)"),
		     ST_CONFLICT, "a hold stored captured");
	cr_assert_eq(RAW("UPDATE holds SET status = 'released' WHERE status = 'pending'"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE holds SET status = 'expired' WHERE status = 'pending'"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE holds SET resolved_at = 5 WHERE status = 'pending'"), ST_CONFLICT);
	fx_assert_unchanged(&s, "holds out of step");
	cr_assert_eq(fx_int("SELECT count(*) FROM holds WHERE status = 'pending' AND resolved_at IS NULL",
			    NULL),
		     1);
	cr_assert_eq(fx_account(ACCT_TREASURY).held, 300);
	/* released with its time: accepted, and the reservation goes */
	cr_assert_eq(RAW("UPDATE holds SET status = 'released', resolved_at = 5 WHERE status = 'pending'"),
		     ST_OK);
	cr_assert_eq(fx_account(ACCT_TREASURY).held, 0);
	fx_assert_ledger_invariants("after holds out of step");
}

/* held is never below zero, on an account that may go negative too (where
 * the over-commit check lets any held through); PostgreSQL checks it by
 * the account_held domain since migration 028. */
BOTH(holds, held_never_goes_below_zero)
{
	struct fx_snap s = fx_snapshot();

	cr_assert_eq(RAW("UPDATE accounts SET held = -1 WHERE id = 'revenue'"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE accounts SET held = held - 1 WHERE id = 'external'"), ST_CONFLICT);
	cr_assert_eq(RAW("INSERT INTO accounts (id, name, kind, held, may_go_negative, created_at)"
			 " VALUES ('neg1', 'neg1', 'system', -5, 1, 0)"),
		     ST_CONFLICT);
	fx_assert_unchanged(&s, "negative held");
	cr_assert_eq(fx_int("SELECT count(*) FROM accounts WHERE held < 0 OR id = 'neg1'", NULL), 0);
	fx_assert_ledger_invariants("after negative held");
}

BOTH(holds, store_refuses_captures_that_bypass_posting)
{
	struct account w = wallet(5);
	struct ledger_hold h;
	struct fx_snap s;

	cr_assert_eq(hold(ACCT_TREASURY, 300, 0, &h), ST_OK);
	s = fx_snapshot();
	cr_assert_eq(RAW("UPDATE holds SET status = 'captured', resolved_at = 1"), ST_CONFLICT);
	cr_assert_eq(RAW("DELETE FROM holds"), ST_CONFLICT);
	cr_assert_eq(RAW("INSERT INTO holds (id, account_id, amount, status, created_at, resolved_at)"
			 " VALUES ('h-done', 'treasury', 1, 'released', 0, 0)"),
		     ST_CONFLICT);
	fx_assert_unchanged(&s, "captures by hand");
	/* Releasing, then capturing the released hold through ledger.c. */
	cr_assert_eq(hold_do(h.id, 1, NULL), ST_OK);
	cr_assert_eq(fx_account(ACCT_TREASURY).held, 0);
	s = fx_snapshot();
	cr_assert_eq(hold_do(h.id, 1, NULL), ST_CONFLICT, "second release");
	cr_assert_eq(hold_do(h.id, 0, w.id), ST_CONFLICT, "capture after release");
	fx_assert_unchanged(&s, "acting on a released hold");
	fx_assert_ledger_invariants("after release");
}

BOTH(holds, expire_past_timeout_exactly_once)
{
	struct ledger_hold a, b, c;
	int64_t n = -1;

	cr_assert_eq(hold(ACCT_TREASURY, 10, FX_NOW0 + 1000, &a), ST_OK);
	cr_assert_eq(hold(ACCT_TREASURY, 20, FX_NOW0 + 2000, &b), ST_OK);
	cr_assert_eq(hold(ACCT_TREASURY, 40, FX_NOW0 + 1000, &c), ST_OK);
	cr_assert_eq(hold_do(c.id, 3, NULL), ST_OK, "keep: c no longer times out");
	cr_assert_eq(store_run(F.s, expire_unit, &n), ST_OK);
	cr_assert_eq(n, 0, "nothing due yet");
	fx_advance(1000);
	cr_assert_eq(store_run(F.s, expire_unit, &n), ST_OK);
	cr_assert_eq(n, 1);
	cr_assert_eq(fx_int("SELECT count(*) FROM holds WHERE id = $1 AND status = 'expired'", a.id), 1);
	cr_assert_eq(fx_account(ACCT_TREASURY).held, 60);
	cr_assert_eq(store_run(F.s, expire_unit, &n), ST_OK);
	cr_assert_eq(n, 0, "expired once");
	fx_advance(1000000);
	cr_assert_eq(store_run(F.s, expire_unit, &n), ST_OK);
	cr_assert_eq(n, 1);
	cr_assert_eq(fx_account(ACCT_TREASURY).held, 40);
	cr_assert_eq(hold_do(a.id, 1, NULL), ST_CONFLICT, "release after expiry");
	fx_assert_ledger_invariants("after expiry");
}

/* ledger_hold_expire_one expires a hold only while it is due by the unit's
 * clock (d900c23): one not due yet, or kept (its timeout dropped, as a
 * claim record does), is ST_CONFLICT with nothing written. On PostgreSQL a
 * sweep that read a hold due can reach its UPDATE after a record kept it;
 * with `resolved_at IS NULL` alone the UPDATE expired the kept hold. */
BOTH(holds, expire_one_expires_only_a_hold_still_due)
{
	struct ledger_hold a, k;
	struct fx_snap s;

	cr_assert_eq(hold(ACCT_TREASURY, 10, FX_NOW0 + 1000, &a), ST_OK);
	cr_assert_eq(hold(ACCT_TREASURY, 20, FX_NOW0 + 1000, &k), ST_OK);
	cr_assert_eq(hold_do(k.id, 3, NULL), ST_OK, "keep");
	s = fx_snapshot();
	cr_assert_eq(hold_do(a.id, 2, NULL), ST_CONFLICT, "expiry before the hold is due");
	cr_assert_eq(hold_do(k.id, 2, NULL), ST_CONFLICT, "expiry of a kept hold");
	fx_advance(1000);
	cr_assert_eq(hold_do(k.id, 2, NULL), ST_CONFLICT, "expiry of a kept hold past its old timeout");
	fx_assert_unchanged(&s, "expiring holds that are not due");
	cr_assert_eq(hold_do(a.id, 2, NULL), ST_OK, "expiry once due");
	cr_assert_eq(fx_int("SELECT count(*) FROM holds WHERE id = $1 AND status = 'expired'", a.id), 1);
	cr_assert_eq(fx_int("SELECT count(*) FROM holds WHERE id = $1 AND status = 'pending'", k.id), 1);
	cr_assert_eq(fx_account(ACCT_TREASURY).held, 20);
	fx_assert_ledger_invariants("after the expiries");
}

/* ---- holds of the Ledger API: destination, owner, part captures ------- */

struct open_arg {
	struct ledger_hold_spec spec;
	struct ledger_hold h;
};

static enum st_rc open_unit(struct tx *tx, void *arg)
{
	struct open_arg *a = arg;

	return ledger_hold_open(tx, &a->spec, &a->h);
}

struct capture_arg {
	const char *id;
	int64_t amount;
	const char *to;
	char tx_id[LEDGER_ID_MAX + 1];
};

static enum st_rc capture_unit(struct tx *tx, void *arg)
{
	struct capture_arg *c = arg;

	return ledger_hold_capture_amount(tx, c->id, c->amount, c->to, "test", NULL, c->tx_id);
}

static enum st_rc capture(const char *id, int64_t amount, const char *to)
{
	struct capture_arg c = { .id = id, .amount = amount, .to = to };

	return store_run(F.s, capture_unit, &c);
}

struct get_arg {
	const char *id;
	struct ledger_hold h;
	char *meta;
};

static enum st_rc get_unit(struct tx *tx, void *arg)
{
	struct get_arg *g = arg;
	enum st_rc rc = ledger_hold_get(tx, g->id, &g->h);

	return rc ? rc : ledger_hold_metadata(tx, g->id, &g->meta);
}

static struct ledger_hold hold_read(const char *id)
{
	struct get_arg g = { .id = id };

	cr_assert_eq(store_read(F.s, get_unit, &g), ST_OK, "hold %s", id);
	free(g.meta);
	return g.h;
}

BOTH(holds, open_keeps_destination_owner_and_metadata)
{
	struct account w = wallet(20);
	struct open_arg a = { .spec = { .account_id = ACCT_TREASURY, .amount = 500, .to_account = w.id,
					.client_id = "key_c1", .metadata = "{\"campaign\":\"x\"}",
					.expires_at = FX_NOW0 + 5000 } };
	struct get_arg g;
	struct fx_snap s;

	cr_assert_eq(store_run(F.s, open_unit, &a), ST_OK);
	g = (struct get_arg){ .id = a.h.id };
	cr_assert_eq(store_read(F.s, get_unit, &g), ST_OK);
	cr_assert_str_eq(g.h.to_account, w.id);
	cr_assert_str_eq(g.h.client_id, "key_c1");
	cr_assert_str_eq(g.meta, "{\"campaign\":\"x\"}");
	cr_assert_eq(g.h.amount, 500);
	cr_assert_eq(g.h.captured, 0);
	cr_assert_eq(g.h.expires_at, FX_NOW0 + 5000);
	cr_assert_str_eq(hold_state_str(g.h.status), "PENDING");
	free(g.meta);
	cr_assert_eq(fx_account(ACCT_TREASURY).held, 500);

	s = fx_snapshot();
	a.spec.to_account = "nope";
	cr_assert_eq(store_run(F.s, open_unit, &a), ST_NOT_FOUND, "unknown destination");
	a.spec.to_account = ACCT_TREASURY;
	cr_assert_eq(store_run(F.s, open_unit, &a), ST_INVALID, "to itself");
	fx_assert_unchanged(&s, "refused holds");

	/* What a hold is, whose and where it goes never change. */
	cr_assert_eq(RAW("UPDATE holds SET client_id = 'key_other'"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE holds SET to_account = 'revenue'"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE holds SET metadata = '{}'"), ST_CONFLICT);
	fx_assert_unchanged(&s, "rewriting a hold");
	fx_assert_ledger_invariants("after opening");
}

BOTH(holds, capture_part_releases_the_rest_once)
{
	struct account w = wallet(21);
	struct open_arg a = { .spec = { .account_id = ACCT_TREASURY, .amount = 1000, .to_account = w.id } };
	struct ledger_hold h;
	struct fx_snap s;

	cr_assert_eq(store_run(F.s, open_unit, &a), ST_OK);
	s = fx_snapshot();
	cr_assert_eq(capture(a.h.id, 1001, NULL), ST_INVALID, "more than it holds");
	cr_assert_eq(capture(a.h.id, -1, NULL), ST_INVALID, "negative");
	cr_assert_eq(capture(a.h.id, 10, ACCT_REVENUE), ST_INVALID, "another destination");
	fx_assert_unchanged(&s, "refused captures");

	cr_assert_eq(capture(a.h.id, 300, NULL), ST_OK);
	h = hold_read(a.h.id);
	cr_assert_eq(h.status, HOLD_CAPTURED);
	cr_assert_eq(h.captured, 300);
	cr_assert_str_eq(hold_state_str(h.status), "CAPTURED");
	cr_assert_eq(fx_account(w.id).balance, 300);
	cr_assert_eq(fx_account(ACCT_TREASURY).balance, FX_FUNDING - 300);
	cr_assert_eq(fx_account(ACCT_TREASURY).held, 0, "the other 700 went back");
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_tx WHERE hold_id = $1", a.h.id), 1);

	s = fx_snapshot();
	cr_assert_eq(capture(a.h.id, 700, NULL), ST_CONFLICT, "the rest cannot be captured later");
	cr_assert_eq(capture(a.h.id, 0, NULL), ST_CONFLICT);
	cr_assert_eq(hold_do(a.h.id, 1, NULL), ST_CONFLICT, "void after capture");
	cr_assert_eq(hold_do(a.h.id, 2, NULL), ST_CONFLICT, "expiry after capture");
	fx_assert_unchanged(&s, "acting on a captured hold");

	/* The whole of it, to a destination named at capture. */
	cr_assert_eq(hold(ACCT_TREASURY, 40, 0, &h), ST_OK);
	cr_assert_eq(capture(h.id, 0, NULL), ST_INVALID, "no destination anywhere");
	cr_assert_eq(capture(h.id, 0, ACCT_REVENUE), ST_OK);
	cr_assert_eq(hold_read(h.id).captured, 40);
	cr_assert_eq(fx_account(ACCT_REVENUE).balance, 40);
	fx_assert_ledger_invariants("after part captures");
}

BOTH(holds, store_refuses_captures_beyond_the_hold_or_elsewhere)
{
	struct account w = wallet(22);
	struct open_arg a = { .spec = { .account_id = ACCT_TREASURY, .amount = 100, .to_account = w.id } };
	char sql_over[512], sql_else[512], sql_zero[512];
	struct fx_snap s;

	cr_assert_eq(store_run(F.s, open_unit, &a), ST_OK);
	snprintf(sql_over, sizeof(sql_over),
		 "INSERT INTO ledger_tx (id, kind, hold_id, created_at) VALUES ('rc1', 'raw', '%s', 0)", a.h.id);
	memcpy(sql_else, sql_over, sizeof(sql_over));
	memcpy(sql_zero, sql_over, sizeof(sql_over));
	s = fx_snapshot();
	/* 101 from a hold of 100. */
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " SELECT 'rc1', 'treasury', 'debit', 101, 0",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " SELECT 'rc1', id, 'credit', 101, 0 FROM accounts WHERE wallet = '0x0000000000000000000000000000000000000016'",
			 sql_over),
		     ST_CONFLICT);
	/* 50 to revenue when the hold goes to the wallet. */
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('rc1', 'treasury', 'debit', 50, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('rc1', 'revenue', 'credit', 50, 0)",
			 sql_else),
		     ST_CONFLICT);
	/* A debit taken back in the same transaction captures nothing. */
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('rc1', 'treasury', 'debit', 50, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('rc1', 'treasury', 'credit', 50, 0)",
			 sql_zero),
		     ST_CONFLICT);
	fx_assert_unchanged(&s, "raw captures");
	/* A raw capture of part of it, to its destination, is what ledger.c does. */
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('rc1', 'treasury', 'debit', 60, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " SELECT 'rc1', id, 'credit', 60, 0 FROM accounts WHERE wallet = '0x0000000000000000000000000000000000000016'",
			 sql_over),
		     ST_OK);
	cr_assert_eq(hold_read(a.h.id).captured, 60);
	cr_assert_eq(fx_account(w.id).balance, 60);
	cr_assert_eq(fx_account(ACCT_TREASURY).held, 0);
	fx_assert_ledger_invariants("after a raw part capture");
}

struct holds_page_arg {
	const char *client;
	const enum hold_status *state;
	char after[LEDGER_ID_MAX + 1];
	int limit;
	struct ledger_hold *v;
	size_t n;
	bool more;
};

static enum st_rc holds_page_unit(struct tx *tx, void *arg)
{
	struct holds_page_arg *p = arg;

	return ledger_holds_page(tx, p->client, p->state, p->after, p->limit, &p->v, &p->n, &p->more);
}

BOTH(holds, expiry_skips_what_was_resolved_and_pages_filter)
{
	struct ledger_hold a, b, c;
	struct open_arg o = { .spec = { .account_id = ACCT_TREASURY, .amount = 7, .client_id = "key_c2",
					.expires_at = FX_NOW0 + 10 } };
	int64_t n = -1;
	enum hold_status pending = HOLD_PENDING;

	cr_assert_eq(store_run(F.s, open_unit, &o), ST_OK);
	a = o.h;
	cr_assert_eq(store_run(F.s, open_unit, &o), ST_OK);
	b = o.h;
	cr_assert_eq(hold(ACCT_TREASURY, 5, FX_NOW0 + 10, &c), ST_OK);
	cr_assert_eq(hold_do(b.id, 1, NULL), ST_OK, "void b");
	fx_advance(10);
	cr_assert_eq(store_run(F.s, expire_unit, &n), ST_OK);
	cr_assert_eq(n, 2, "a and c, once each");
	cr_assert_eq(hold_read(a.id).status, HOLD_EXPIRED);
	cr_assert_eq(hold_read(b.id).status, HOLD_RELEASED);
	cr_assert_str_eq(hold_state_str(HOLD_RELEASED), "VOIDED");
	cr_assert_eq(store_run(F.s, expire_unit, &n), ST_OK);
	cr_assert_eq(n, 0);

	{
		struct ledger_hold h;
		enum hold_status parsed;

		cr_assert(hold_state_parse("VOIDED", &parsed));
		cr_assert_eq(parsed, HOLD_RELEASED);
		cr_assert_not(hold_state_parse("released", &parsed));
		cr_assert_eq(hold(ACCT_TREASURY, 9, 0, &h), ST_OK);
	}

	/* Pages: the client's two, one at a time; everyone's pending one. */
	{
		struct holds_page_arg p = { .client = "key_c2", .limit = 1 };

		cr_assert_eq(store_read(F.s, holds_page_unit, &p), ST_OK);
		cr_assert_eq(p.n, 1);
		cr_assert(p.more);
		cr_assert_str_eq(p.v[0].id, strcmp(a.id, b.id) < 0 ? a.id : b.id);
		snprintf(p.after, sizeof(p.after), "%s", p.v[0].id);
		free(p.v);
		cr_assert_eq(store_read(F.s, holds_page_unit, &p), ST_OK);
		cr_assert_eq(p.n, 1);
		cr_assert_not(p.more);
		free(p.v);
		p = (struct holds_page_arg){ .state = &pending, .limit = 10 };
		cr_assert_eq(store_read(F.s, holds_page_unit, &p), ST_OK);
		cr_assert_eq(p.n, 1, "only the last one is pending");
		cr_assert_eq(p.v[0].amount, 9);
		cr_assert_str_eq(p.v[0].client_id, "");
		free(p.v);
		p = (struct holds_page_arg){ .client = "key_none", .limit = 10 };
		cr_assert_eq(store_read(F.s, holds_page_unit, &p), ST_OK);
		cr_assert_eq(p.n, 0);
		cr_assert_null(p.v);
		p = (struct holds_page_arg){ .limit = LEDGER_PAGE_MAX + 1 };
		cr_assert_eq(store_read(F.s, holds_page_unit, &p), ST_INVALID);
	}
	fx_assert_ledger_invariants("after expiry");
}

/* Many threads reserve the treasury at once: exactly as many holds as the
 * funds cover succeed, the rest are refused, held never exceeds balance. */
#define RACERS 16
#define RACE_HOLDS 25

struct racer {
	int ok, refused, other;
};

static void *race(void *arg)
{
	struct racer *r = arg;

	for (int i = 0; i < RACE_HOLDS; i++) {
		enum st_rc rc = hold(ACCT_TREASURY, FX_FUNDING / 100, 0, NULL);

		if (rc == ST_OK)
			r->ok++;
		else if (rc == ST_UNPROCESSABLE)
			r->refused++;
		else
			r->other++;
	}
	return NULL;
}

BOTH(holds, concurrent_holds_never_over_commit)
{
	pthread_t t[RACERS];
	struct racer r[RACERS];
	int ok = 0, refused = 0;

	memset(r, 0, sizeof(r));
	for (int i = 0; i < RACERS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, race, &r[i]), 0);
	for (int i = 0; i < RACERS; i++) {
		pthread_join(t[i], NULL);
		ok += r[i].ok;
		refused += r[i].refused;
		cr_assert_eq(r[i].other, 0, "racer %d: unexpected result", i);
	}
	cr_assert_eq(ok, 100);
	cr_assert_eq(refused, RACERS * RACE_HOLDS - 100);
	cr_assert_eq(fx_account(ACCT_TREASURY).held, FX_FUNDING);
	fx_assert_ledger_invariants("after the race");
}

/* ---- reads ------------------------------------------------------------- */

struct page_arg {
	const char *account;
	int64_t after;
	int limit;
	struct ledger_entry_row *rows;
	size_t n;
	bool more;
};

static enum st_rc page_unit(struct tx *tx, void *arg)
{
	struct page_arg *p = arg;

	return ledger_entries_page(tx, p->account, p->after, p->limit, &p->rows, &p->n, &p->more);
}

/* The one-column rules of the ledger's rows: amounts > 0, a direction, a
 * hold status, an intent kind and status (PostgreSQL: domains since
 * migration 021, tested where a value is written; SQLite: CHECKs). Each
 * bad row refused, nothing written; good ones still accepted. */
BOTH(ledger, rows_refuse_bad_amounts_directions_and_states)
{
	struct account w = wallet(7);
	struct fx_snap s = fx_snapshot();
	struct ledger_hold h;
	char sql[400];

	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('dom1', 'treasury', 'sideways', 100, 0)"),
		     ST_CONFLICT);
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('dom2', 'treasury', 'debit', 0, 0)"),
		     ST_CONFLICT);
	cr_assert_eq(RAW("INSERT INTO holds (id, account_id, amount, status, created_at)"
			 " VALUES ('hdom1', 'treasury', 0, 'pending', 0)"),
		     ST_CONFLICT);
	cr_assert_eq(RAW("INSERT INTO holds (id, account_id, amount, status, created_at)"
			 " VALUES ('hdom2', 'treasury', -3, 'pending', 0)"),
		     ST_CONFLICT);
	fx_assert_unchanged(&s, "entries and holds with a bad amount or direction");

	/* A pending hold and its intent, written by hand with good values. */
	cr_assert_eq(hold(ACCT_TREASURY, 10, 0, &h), ST_OK);
	snprintf(sql, sizeof(sql),
		 "INSERT INTO intents (id, kind, wallet, amount, status, hold_id, created_at, updated_at)"
		 " VALUES ('idom0', 'claim', '%s', 10, 'PENDING', '%s', 0, 0)", w.wallet, h.id);
	cr_assert_eq(RAW(sql), ST_OK);
	s = fx_snapshot();
	cr_assert_eq(RAW("UPDATE holds SET status = 'lost', resolved_at = 1"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE intents SET status = 'DONE'"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE intents SET kind = 'gift'"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE intents SET amount = 0"), ST_CONFLICT);
	cr_assert_eq(RAW("INSERT INTO intent_transitions (intent_id, from_status, to_status, at, actor)"
			 " VALUES ('idom0', 'PENDING', 'DONE', 0, 'test')"),
		     ST_CONFLICT);
	cr_assert_eq(RAW("INSERT INTO intent_transitions (intent_id, from_status, to_status, at, actor)"
			 " VALUES ('idom0', 'MAYBE', 'PENDING', 0, 'test')"),
		     ST_CONFLICT);
	fx_assert_unchanged(&s, "holds and intents with a bad state");
	cr_assert_eq(fx_int("SELECT count(*) FROM intents WHERE id = 'idom0' AND kind = 'claim'"
			    " AND status = 'PENDING' AND amount = 10", NULL),
		     1);
	/* Good values still pass: a transition with no from, and a release. */
	cr_assert_eq(RAW("INSERT INTO intent_transitions (intent_id, from_status, to_status, at, actor)"
			 " VALUES ('idom0', NULL, 'PENDING', 0, 'test')"),
		     ST_OK);
	cr_assert_eq(hold_do(h.id, 1, NULL), ST_OK);
	cr_assert_eq(hold_read(h.id).status, HOLD_RELEASED);
	fx_assert_ledger_invariants("after the refused rows");
}

/* The jobs table's one-column rules (its state, attempts >= 0,
 * max_attempts >= 1; PostgreSQL: domains since migration 022), attacked
 * with raw SQL here because this fixture opens both stores. */
BOTH(jobs, rows_refuse_bad_states_and_counts)
{
#define JOB_COLS_SQL "INSERT INTO jobs (queue, kind, payload, state, attempts, max_attempts, run_at," \
		     " lease_owner, lease_expires_at, created_at, updated_at) VALUES "
	cr_assert_eq(RAW(JOB_COLS_SQL "('q', 'noop', '{}', 'available', 0, 8, 1, NULL, NULL, 1, 1)"), ST_OK);
	cr_assert_eq(RAW(JOB_COLS_SQL "('q', 'noop', '{}', 'waiting', 0, 8, 1, NULL, NULL, 1, 1)"),
		     ST_CONFLICT);
	cr_assert_eq(RAW(JOB_COLS_SQL "('q', 'noop', '{}', 'available', -1, 8, 1, NULL, NULL, 1, 1)"),
		     ST_CONFLICT);
	cr_assert_eq(RAW(JOB_COLS_SQL "('q', 'noop', '{}', 'available', 0, 0, 1, NULL, NULL, 1, 1)"),
		     ST_CONFLICT);
	/* The state/lease rule is still a table CHECK. */
	cr_assert_eq(RAW(JOB_COLS_SQL "('q', 'noop', '{}', 'running', 0, 8, 1, NULL, NULL, 1, 1)"),
		     ST_CONFLICT);
#undef JOB_COLS_SQL
	cr_assert_eq(RAW("UPDATE jobs SET state = 'lost'"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE jobs SET attempts = attempts - 1"), ST_CONFLICT);
	cr_assert_eq(RAW("UPDATE jobs SET max_attempts = 0"), ST_CONFLICT);
	cr_assert_eq(fx_int("SELECT count(*) FROM jobs WHERE queue = 'q' AND state = 'available'"
			    " AND attempts = 0 AND max_attempts = 8", NULL),
		     1);
	cr_assert_eq(fx_int("SELECT count(*) FROM jobs WHERE queue = 'q'", NULL), 1);
	/* A good move still passes. */
	cr_assert_eq(RAW("UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = 'w',"
			 " lease_expires_at = 9 WHERE queue = 'q'"),
		     ST_OK);
}

/* jobs.unique_key: a second job with a taken key is refused, jobs without
 * a key never conflict, with raw SQL as with queue.c's ON CONFLICT (its
 * predicate), and as an earlier version's enqueue says it (no predicate):
 * a server of the version before still enqueues on this schema during a
 * rolling upgrade (queue.md "Storage": why the partial unique index waits). */
BOTH(jobs, unique_keys_refuse_a_second_keyed_job_only)
{
#define JOB_SQL "INSERT INTO jobs (queue, kind, payload, run_at, unique_key, created_at, updated_at) VALUES "
	cr_assert_eq(RAW(JOB_SQL "('uq', 'noop', '{}', 1, 'k1', 1, 1)"), ST_OK);
	cr_assert_eq(RAW(JOB_SQL "('uq', 'noop', '{}', 1, 'k1', 1, 1)"), ST_UNIQUE);
	cr_assert_eq(RAW(JOB_SQL "('uq', 'noop', '{}', 1, NULL, 1, 1)",
			 JOB_SQL "('uq', 'noop', '{}', 1, NULL, 1, 1)"),
		     ST_OK);
	cr_assert_eq(RAW(JOB_SQL "('uq', 'noop', '{}', 1, 'k2', 1, 1)"
			 " ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING",
			 JOB_SQL "('uq', 'noop', '{}', 1, 'k2', 1, 1)"
			 " ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING"),
		     ST_OK);
	cr_assert_eq(RAW("UPDATE jobs SET unique_key = 'k1' WHERE unique_key = 'k2'"), ST_UNIQUE);
	cr_assert_eq(fx_int("SELECT count(*) FROM jobs WHERE queue = 'uq' AND unique_key IS NULL", NULL), 2);
	cr_assert_eq(RAW(JOB_SQL "('uq', 'noop', '{}', 1, 'k1', 1, 1) ON CONFLICT (unique_key) DO NOTHING"),
		     ST_OK);
#undef JOB_SQL
	cr_assert_eq(fx_int("SELECT count(*) FROM jobs WHERE queue = 'uq'", NULL), 4);
}

/* webhook_events' one-column rules (provider, event id length, status;
 * PostgreSQL: domains since migration 023), attacked with raw SQL here
 * because this fixture opens both stores. */
BOTH(webhooks, rows_refuse_bad_providers_ids_and_states)
{
	/* Two buffers: the store caches a statement by its text's address
	 * (RAW's statements are meant to be literals). */
	char sql256[600], sql255[600];
	char long_id[257];

#define EVENT_SQL "INSERT INTO webhook_events (provider, event_id, type, status, body, received_at) VALUES "
	cr_assert_eq(RAW(EVENT_SQL "('standard', 'msg_ok', 'payment.confirmed', 'stored', '{}', 1)"), ST_OK);
	cr_assert_eq(RAW(EVENT_SQL "('paypal', 'msg_1', 'payment.confirmed', 'stored', '{}', 1)"), ST_CONFLICT);
	cr_assert_eq(RAW(EVENT_SQL "('standard', '', 'payment.confirmed', 'stored', '{}', 1)"), ST_CONFLICT);
	cr_assert_eq(RAW(EVENT_SQL "('standard', 'msg_2', 'payment.confirmed', 'queued', '{}', 1)"),
		     ST_CONFLICT);
	memset(long_id, 'x', 256);
	long_id[256] = 0;
	snprintf(sql256, sizeof(sql256),
		 EVENT_SQL "('standard', '%s', 'payment.confirmed', 'stored', '{}', 1)", long_id);
	cr_assert_eq(RAW(sql256), ST_CONFLICT);
	long_id[255] = 0;
	snprintf(sql255, sizeof(sql255),
		 EVENT_SQL "('standard', '%s', 'payment.confirmed', 'stored', '{}', 1)", long_id);
	cr_assert_eq(RAW(sql255), ST_OK);
	/* processed needs its ledger transaction: still a table CHECK. */
	cr_assert_eq(RAW(EVENT_SQL "('standard', 'msg_3', 'payment.confirmed', 'processed', '{}', 1)"),
		     ST_CONFLICT);
#undef EVENT_SQL
	cr_assert_eq(RAW("UPDATE webhook_events SET status = 'lost' WHERE event_id = 'msg_ok'"), ST_CONFLICT);
	cr_assert_eq(fx_int("SELECT count(*) FROM webhook_events", NULL), 2);
	cr_assert_eq(fx_int("SELECT count(*) FROM webhook_events WHERE event_id = 'msg_ok' AND status = 'stored'",
			    NULL),
		     1);
	cr_assert_eq(RAW("UPDATE webhook_events SET status = 'processed', ledger_tx_id = 'ltx_x'"
			 " WHERE event_id = 'msg_ok'"),
		     ST_OK);
}

BOTH(ledger, keyset_pages_cover_every_entry_once)
{
	struct account w = wallet(6);
	struct page_arg p = { 0 };
	int64_t last = 0, seen = 0, total;

	for (int i = 1; i <= 30; i++)
		cr_assert_eq(post(ACCT_TREASURY, w.id, i), ST_OK);
	total = fx_int("SELECT count(*) FROM ledger_entries", NULL);
	cr_assert_eq(total, 62);
	for (;;) {
		p = (struct page_arg){ .after = last, .limit = 7 };
		cr_assert_eq(store_read(F.s, page_unit, &p), ST_OK);
		for (size_t i = 0; i < p.n; i++) {
			cr_assert_gt(p.rows[i].id, last, "ids ascend across pages");
			last = p.rows[i].id;
			seen++;
		}
		/* Entries posted while paging land after the cursor. */
		if (seen == 14)
			cr_assert_eq(post(ACCT_TREASURY, w.id, 99), ST_OK);
		free(p.rows);
		if (!p.more)
			break;
		cr_assert_eq(p.n, 7);
	}
	cr_assert_eq(seen, total + 2);

	/* One account: the wallet's credits, in order, with their amounts. */
	p = (struct page_arg){ .account = w.id, .after = 0, .limit = 500 };
	cr_assert_eq(store_read(F.s, page_unit, &p), ST_OK);
	cr_assert_eq(p.n, 31);
	cr_assert_not(p.more);
	for (size_t i = 0; i < 30; i++) {
		cr_assert_eq(p.rows[i].amount, (int64_t)i + 1);
		cr_assert_eq(p.rows[i].dir, LEDGER_CREDIT);
		cr_assert_str_eq(p.rows[i].wallet, w.wallet);
		cr_assert_str_eq(p.rows[i].kind, "test");
	}
	free(p.rows);

	p = (struct page_arg){ .limit = 0 };
	cr_assert_eq(store_read(F.s, page_unit, &p), ST_INVALID);
	p = (struct page_arg){ .limit = LEDGER_PAGE_MAX + 1 };
	cr_assert_eq(store_read(F.s, page_unit, &p), ST_INVALID);
	p = (struct page_arg){ .after = INT64_MAX, .limit = 5 };
	cr_assert_eq(store_read(F.s, page_unit, &p), ST_OK);
	cr_assert_eq(p.n, 0);
	cr_assert_null(p.rows);
}

/* SQLite: ledger.c moves a posting's balances itself and flags the closing
 * row (balances_moved = 1); the store checks every move against the
 * entries (migrations/sqlite/012). Each case goes around ledger.c. */
Test(ledger_sqlite, store_checks_the_writers_moves, .init = fx_open_sqlite, .fini = fx_close,
     .timeout = 600)
{
	struct fx_snap s = fx_snapshot();
	int64_t revenue = fx_account(ACCT_REVENUE).balance;

	/* One account of two moved. */
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('wm1', 'treasury', 'debit', 100, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('wm1', 'revenue', 'credit', 100, 0)",
			 "UPDATE accounts SET balance = balance + 100, moved_by = 'wm1', moved_delta = 100"
			 " WHERE id = 'revenue'",
			 "INSERT INTO ledger_tx (id, kind, created_at, balances_moved) VALUES ('wm1', 'raw', 0, 1)"),
		     ST_CONFLICT);
	/* Both moved, one by the wrong amount (marked with it). */
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('wm2', 'treasury', 'debit', 100, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('wm2', 'revenue', 'credit', 100, 0)",
			 "UPDATE accounts SET balance = balance - 100, moved_by = 'wm2', moved_delta = -100"
			 " WHERE id = 'treasury'",
			 "UPDATE accounts SET balance = balance + 99, moved_by = 'wm2', moved_delta = 99"
			 " WHERE id = 'revenue'",
			 "INSERT INTO ledger_tx (id, kind, created_at, balances_moved) VALUES ('wm2', 'raw', 0, 1)"),
		     ST_CONFLICT);
	/* Both moved right, but the closing row does not say so: the store
	 * would move them a second time. */
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('wm3', 'treasury', 'debit', 100, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('wm3', 'revenue', 'credit', 100, 0)",
			 "UPDATE accounts SET balance = balance - 100, moved_by = 'wm3', moved_delta = -100"
			 " WHERE id = 'treasury'",
			 "UPDATE accounts SET balance = balance + 100, moved_by = 'wm3', moved_delta = 100"
			 " WHERE id = 'revenue'",
			 "INSERT INTO ledger_tx (id, kind, created_at) VALUES ('wm3', 'raw', 0)"),
		     ST_CONFLICT);
	/* An account in two entries moved once by its net: refused (a move
	 * must be one entry's own amount). */
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('wm4', 'treasury', 'debit', 100, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('wm4', 'treasury', 'credit', 40, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('wm4', 'revenue', 'credit', 60, 0)",
			 "UPDATE accounts SET balance = balance - 60, moved_by = 'wm4', moved_delta = -60"
			 " WHERE id = 'treasury'",
			 "UPDATE accounts SET balance = balance + 60, moved_by = 'wm4', moved_delta = 60"
			 " WHERE id = 'revenue'",
			 "INSERT INTO ledger_tx (id, kind, created_at, balances_moved) VALUES ('wm4', 'raw', 0, 1)"),
		     ST_CONFLICT);
	/* A flag other than 1. */
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('wm5', 'treasury', 'debit', 100, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('wm5', 'revenue', 'credit', 100, 0)",
			 "INSERT INTO ledger_tx (id, kind, created_at, balances_moved) VALUES ('wm5', 'raw', 0, 0)"),
		     ST_CONFLICT);
	fx_assert_unchanged(&s, "moves that do not match the entries");

	/* Moved right and said so: accepted, moved once. */
	cr_assert_eq(RAW("INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('wm6', 'treasury', 'debit', 100, 0)",
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('wm6', 'revenue', 'credit', 100, 0)",
			 "UPDATE accounts SET balance = balance - 100, moved_by = 'wm6', moved_delta = -100"
			 " WHERE id = 'treasury'",
			 "UPDATE accounts SET balance = balance + 100, moved_by = 'wm6', moved_delta = 100"
			 " WHERE id = 'revenue'",
			 "INSERT INTO ledger_tx (id, kind, created_at, balances_moved) VALUES ('wm6', 'raw', 0, 1)"),
		     ST_OK);
	cr_assert_eq(fx_account(ACCT_REVENUE).balance, revenue + 100);
	fx_assert_ledger_invariants("after the writer's moves");
}

/* ledger.c moves the balances itself only when every entry names another
 * account; one named twice goes the store's way, by its net. */
BOTH(ledger, an_account_in_two_entries_moves_by_its_net)
{
	const struct ledger_entry e[3] = {
		{ ACCT_TREASURY, LEDGER_DEBIT, 100 },
		{ ACCT_TREASURY, LEDGER_CREDIT, 40 },
		{ ACCT_REVENUE, LEDGER_CREDIT, 60 },
	};
	struct post_arg a = { .p = { .kind = "test", .n = 3, .entries = e } };
	int64_t treasury = fx_account(ACCT_TREASURY).balance, revenue = fx_account(ACCT_REVENUE).balance;

	cr_assert_eq(store_run(F.s, post_unit, &a), ST_OK);
	cr_assert_eq(fx_account(ACCT_TREASURY).balance, treasury - 60);
	cr_assert_eq(fx_account(ACCT_REVENUE).balance, revenue + 60);
	fx_assert_ledger_invariants("after a posting naming an account twice");
}

/* SQLite: every check on a closing row, the store's moves and
 * ledger_tx_get find a transaction's entries by ledger_entries_tx, which
 * holds all they read of an entry (migrations/sqlite/025): no entry row is
 * read, and the entries still come in id order without a sort. What the
 * checks refuse is the tests above. */
struct plan_arg {
	const char *sql;
	char detail[512];
};

static enum st_rc plan_unit(struct tx *tx, void *arg)
{
	struct plan_arg *a = arg;
	struct st_rows *r = NULL;
	size_t len = 0;
	enum st_rc rc = tx_query(tx, a->sql, ST_ARGS(SV_S("ltx_x")), &r);

	if (rc)
		return rc;
	a->detail[0] = 0;
	for (int i = 0; i < r->nrows; i++)
		len += (size_t)snprintf(a->detail + len, sizeof(a->detail) - len, "%s;",
					rows_text(r, i, 3));
	rows_free(r);
	return ST_OK;
}

Test(ledger_sqlite, a_transactions_entries_are_read_from_the_index_alone, .init = fx_open_sqlite,
     .fini = fx_close, .timeout = 600)
{
	static const char *const reads[] = {
		/* ledger_tx_close's balance and writer's-moves checks, one
		 * scan (migrations/sqlite/030) */
		"EXPLAIN QUERY PLAN SELECT count(*) < 2 OR sum(CASE e.direction WHEN 'debit' THEN e.amount"
		" ELSE -e.amount END) != 0, max(a.moved_by IS NOT $1 OR a.moved_delta IS NOT"
		" CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END)"
		" FROM ledger_entries e LEFT JOIN accounts a ON $1 IS NOT NULL AND a.id = e.account_id"
		" WHERE e.tx_id = $1",
		/* the store's moves and the capture check (unary +, as there) */
		"EXPLAIN QUERY PLAN SELECT sum(CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END)"
		" FROM ledger_entries e WHERE e.tx_id = $1 AND +e.account_id = 'revenue'",
		/* ledger_tx_get */
		"EXPLAIN QUERY PLAN SELECT account_id, direction, amount FROM ledger_entries"
		" WHERE tx_id = $1 ORDER BY id",
	};

	for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
		struct plan_arg a = { .sql = reads[i] };

		cr_assert_eq(store_run(F.s, plan_unit, &a), ST_OK);
		cr_assert(strstr(a.detail, "USING COVERING INDEX ledger_entries_tx (tx_id=?)"),
			  "read %zu: %s", i, a.detail);
		cr_assert_null(strstr(a.detail, "TEMP B-TREE"), "read %zu: %s", i, a.detail);
	}
}

/* SQLite: one transaction a hold, by a unique index of the captures alone
 * (migrations/sqlite/027): a posting that captures nothing writes no key
 * there. The capture check refuses a second capture first (the hold is no
 * longer pending: capture_happens_exactly_once), so the index is tried
 * here with the triggers that stand before it dropped, inside a unit that
 * fails and takes the drops back with it. */
Test(ledger_sqlite, one_transaction_a_hold_by_an_index_of_captures_alone, .init = fx_open_sqlite,
     .fini = fx_close, .timeout = 600)
{
	static const char *const hold_index =
		"SELECT count(*) FROM pragma_index_list('ledger_tx') l, pragma_index_info(l.name) i"
		" WHERE i.name = 'hold_id' AND l.\"unique\" = 1 AND l.partial = ($1 = 'partial')";
	struct account w = wallet(7);
	struct ledger_hold h;
	struct fx_snap s;
	char sql[3][512];

	cr_assert_eq(fx_int(hold_index, "partial"), 1);
	cr_assert_eq(fx_int(hold_index, "whole"), 0, "a unique index of every row's hold_id");

	cr_assert_eq(hold(ACCT_TREASURY, 100, 0, &h), ST_OK);
	for (int i = 0; i < 2; i++)
		snprintf(sql[i], sizeof(sql[i]),
			 "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
			 " VALUES ('hc%d', 'treasury', 'debit', 10, 0), ('hc%d', 'revenue', 'credit', 10, 0)",
			 i, i);
	snprintf(sql[2], sizeof(sql[2]),
		 "INSERT INTO ledger_tx (id, kind, hold_id, created_at)"
		 " SELECT 'hc' || value, 'raw', '%s', 0 FROM json_each('[0, 1]')", h.id);
	s = fx_snapshot();
	cr_assert_eq(RAW("DROP TRIGGER ledger_tx_close_capture", "DROP TRIGGER ledger_tx_post", sql[0], sql[1],
			 sql[2]),
		     ST_UNIQUE);
	fx_assert_unchanged(&s, "two transactions for one hold");
	cr_assert_eq(fx_int("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = $1",
			    "ledger_tx"),
		     5);
	/* The hold is still captured once, through ledger.c. */
	cr_assert_eq(hold_do(h.id, 0, w.id), ST_OK);
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_tx WHERE hold_id = $1", h.id), 1);
	fx_assert_ledger_invariants("after the capture");
}

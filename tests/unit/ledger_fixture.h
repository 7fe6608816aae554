/* ledger_fixture.h — a fresh ledger store per test, on SQLite and, when
 * SETTLED_TEST_PG names a PostgreSQL cluster (make unit runs under
 * tests/with-services), on PostgreSQL too; shared by test_ledger.c,
 * test_intent.c and test_account.c.
 *
 * BOTH(suite, name) { body } defines <suite>_sqlite/name and
 * <suite>_pg/name; the PostgreSQL half skips without SETTLED_TEST_PG.
 * The store's clock is injected (F.now), so expiry is tested by moving the
 * clock. The store is bootstrapped like main.c does it: system accounts,
 * then treasury funding of FX_FUNDING. Header-only: each test file is
 * its own program. */
#ifndef SETTLED_LEDGER_FIXTURE_H
#define SETTLED_LEDGER_FIXTURE_H

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "account.h"
#include "ledger.h"
#include "store.h"
#include "store_fixture.h"

#define FX_NOW0 INT64_C(1700000000000)
#define FX_FUNDING INT64_C(1000000)

struct fx {
	struct store *s;
	enum st_dialect d;
	char dir[64];
	char pg_db[64];
	int64_t now;
	int64_t funding;
};

static struct fx F;

static inline int64_t fx_clock(void *arg)
{
	return __atomic_load_n(&((struct fx *)arg)->now, __ATOMIC_SEQ_CST);
}

static inline void fx_advance(int64_t ms)
{
	__atomic_add_fetch(&F.now, ms, __ATOMIC_SEQ_CST);
}

static inline enum st_rc fx_bootstrap_unit(struct tx *tx, void *arg)
{
	enum st_rc rc = account_ensure_system(tx);

	return rc ? rc : ledger_fund_treasury(tx, *(int64_t *)arg, NULL);
}

static inline void fx_open(enum st_dialect d, int64_t funding)
{
	struct store_options o = { 0 };
	struct buf err = BUF_INIT(4096);
	char path[128], url[2048];
	const char *admin = getenv("SETTLED_TEST_PG");
	enum st_rc rc;

	memset(&F, 0, sizeof(F));
	F.d = d;
	F.now = FX_NOW0;
	F.funding = funding;
	if (d == ST_SQLITE) {
		snprintf(F.dir, sizeof(F.dir), "/tmp/settled-ledger-XXXXXX");
		cr_assert_not_null(mkdtemp(F.dir));
		snprintf(path, sizeof(path), "%s/settled.db", F.dir);
		o.sqlite_path = path;
	} else {
		if (!admin || !*admin)
			return; /* fx_need_backend() skips the test */
		sfx_pg_create_db("t_ledger", F.pg_db, sizeof(F.pg_db), url, sizeof(url));
		o.database_url = url;
	}
	rc = store_open(&o, &F.s, &err);
	cr_assert_eq(rc, ST_OK, "store_open: %s (%s)", st_rc_str(rc), err.ptr);
	buf_release(&err);
	F.s->clock_ms = fx_clock;
	F.s->clock_arg = &F;
	cr_assert_eq(store_run(F.s, fx_bootstrap_unit, &F.funding), ST_OK);
}

static inline void fx_open_sqlite(void)
{
	fx_open(ST_SQLITE, FX_FUNDING);
}

static inline void fx_open_pg(void)
{
	fx_open(ST_PG, FX_FUNDING);
}

static inline void fx_close(void)
{
	char cmd[160];

	store_close(F.s);
	F.s = NULL;
	if (F.d == ST_SQLITE && F.dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", F.dir);
		cr_assert_eq(system(cmd), 0);
	} else if (F.d == ST_PG && F.pg_db[0]) {
		sfx_pg_drop_db(F.pg_db);
	}
}

static inline void fx_need_backend(void)
{
	if (!F.s)
		cr_skip_test("SETTLED_TEST_PG is not set: run under tests/with-services (make unit does)");
}

/* Raw SQL, run in order in one unit of F.s; the first failure is
 * returned: RAW("UPDATE ...", "DELETE ..."). The texts must be string
 * literals (statements are cached by address). */
struct fx_raw {
	const char *const *sql;
	size_t n;
};

static inline enum st_rc fx_raw_unit(struct tx *tx, void *arg)
{
	const struct fx_raw *r = arg;

	for (size_t i = 0; i < r->n; i++) {
		enum st_rc rc = tx_exec(tx, r->sql[i], ST_NOARGS, NULL);

		if (rc)
			return rc;
	}
	return ST_OK;
}

#define RAW(...)                                                                          \
	store_run(F.s, fx_raw_unit,                                                       \
		  &(struct fx_raw){ (const char *const[]){ __VA_ARGS__ },                 \
				    sizeof((const char *const[]){ __VA_ARGS__ }) / sizeof(char *) })

#define BOTH(suite, name, ...)                                                                  \
	static void name##_body(void);                                                          \
	Test(suite##_sqlite, name, .init = fx_open_sqlite, .fini = fx_close, .timeout = 600,   \
	     ##__VA_ARGS__)                                                                     \
	{                                                                                       \
		name##_body();                                                                  \
	}                                                                                       \
	Test(suite##_pg, name, .init = fx_open_pg, .fini = fx_close, .timeout = 600,           \
	     ##__VA_ARGS__)                                                                     \
	{                                                                                       \
		fx_need_backend();                                                              \
		name##_body();                                                                  \
	}                                                                                       \
	static void name##_body(void)

/* ---- reading what was written ------------------------------------------ */

/* The first cell of sql's first row as an integer (0 when NULL or no row). */
static inline int64_t fx_int(const char *sql, const char *param)
{
	return sfx_int(F.s, sql, param);
}

static inline enum st_rc fx_account_unit(struct tx *tx, void *arg)
{
	struct account *a = arg;

	return account_by_id(tx, a->id, a);
}

static inline struct account fx_account(const char *id)
{
	struct account a;

	memset(&a, 0, sizeof(a));
	snprintf(a.id, sizeof(a.id), "%s", id);
	cr_assert_eq(store_read(F.s, fx_account_unit, &a), ST_OK, "account %s", id);
	return a;
}

/* Row counts of the ledger's tables plus the two treasury figures: equal
 * before and after an operation that must write nothing. */
struct fx_snap {
	int64_t entries, txs, holds_pending, holds, intents, transitions;
	int64_t treasury_balance, treasury_held, balances_sum;
};

static inline struct fx_snap fx_snapshot(void)
{
	struct fx_snap s;
	struct account t = fx_account(ACCT_TREASURY);

	s.entries = fx_int("SELECT count(*) FROM ledger_entries", NULL);
	s.txs = fx_int("SELECT count(*) FROM ledger_tx", NULL);
	s.holds = fx_int("SELECT count(*) FROM holds", NULL);
	s.holds_pending = fx_int("SELECT count(*) FROM holds WHERE status = 'pending'", NULL);
	s.intents = fx_int("SELECT count(*) FROM intents", NULL);
	s.transitions = fx_int("SELECT count(*) FROM intent_transitions", NULL);
	s.balances_sum = fx_int("SELECT coalesce(sum(balance), 0) FROM account_balances", NULL);
	s.treasury_balance = t.balance;
	s.treasury_held = t.held;
	return s;
}

static inline void fx_assert_unchanged(const struct fx_snap *a, const char *what)
{
	struct fx_snap b = fx_snapshot();

	cr_assert(!memcmp(a, &b, sizeof(b)),
		  "%s wrote something: entries %lld->%lld txs %lld->%lld holds %lld->%lld "
		  "intents %lld->%lld transitions %lld->%lld treasury %lld/%lld->%lld/%lld",
		  what, (long long)a->entries, (long long)b.entries, (long long)a->txs,
		  (long long)b.txs, (long long)a->holds, (long long)b.holds, (long long)a->intents,
		  (long long)b.intents, (long long)a->transitions, (long long)b.transitions,
		  (long long)a->treasury_balance, (long long)a->treasury_held,
		  (long long)b.treasury_balance, (long long)b.treasury_held);
}

/* The ledger invariants of SPEC section 6, checked with SQL over the
 * whole store: every tx closed, balanced, with >= 2 entries; balances sum
 * to zero; each balance is the sum of its entries; held is the sum of the
 * pending holds; nothing that may not go negative is over-committed. */
static inline void fx_assert_ledger_invariants(const char *when)
{
	int64_t bad;

	bad = fx_int("SELECT count(*) FROM (SELECT tx_id FROM ledger_entries GROUP BY tx_id"
		     " HAVING count(*) < 2 OR sum(CASE direction WHEN 'debit' THEN amount ELSE 0 END)"
		     " <> sum(CASE direction WHEN 'credit' THEN amount ELSE 0 END)) u",
		     NULL);
	cr_assert_eq(bad, 0, "%s: %lld unbalanced transactions", when, (long long)bad);
	bad = fx_int("SELECT count(*) FROM ledger_entries e"
		     " WHERE NOT EXISTS (SELECT 1 FROM ledger_tx t WHERE t.id = e.tx_id)",
		     NULL);
	cr_assert_eq(bad, 0, "%s: %lld entries of unclosed transactions", when, (long long)bad);
	bad = fx_int("SELECT count(*) FROM ledger_tx t"
		     " WHERE (SELECT count(*) FROM ledger_entries e WHERE e.tx_id = t.id) < 2",
		     NULL);
	cr_assert_eq(bad, 0, "%s: %lld transactions with < 2 entries", when, (long long)bad);
	/* account_balances: a hot account's balance includes its unfolded
	 * deltas (PostgreSQL, migration 008; nothing folds them in these tests). */
	bad = fx_int("SELECT coalesce(sum(balance), 0) FROM account_balances", NULL);
	cr_assert_eq(bad, 0, "%s: balances sum to %lld", when, (long long)bad);
	bad = fx_int("SELECT count(*) FROM account_balances a WHERE a.balance <> coalesce((SELECT"
		     " sum(CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END)"
		     " FROM ledger_entries e WHERE e.account_id = a.id), 0)",
		     NULL);
	cr_assert_eq(bad, 0, "%s: %lld balances differ from their entries", when, (long long)bad);
	bad = fx_int("SELECT count(*) FROM accounts a WHERE a.held <> coalesce((SELECT sum(h.amount)"
		     " FROM holds h WHERE h.account_id = a.id AND h.status = 'pending'), 0)",
		     NULL);
	cr_assert_eq(bad, 0, "%s: %lld held amounts differ from pending holds", when, (long long)bad);
	bad = fx_int("SELECT count(*) FROM account_balances"
		     " WHERE held < 0 OR (may_go_negative = 0 AND (balance < 0 OR held > balance))",
		     NULL);
	cr_assert_eq(bad, 0, "%s: %lld accounts over-committed", when, (long long)bad);
}

#endif

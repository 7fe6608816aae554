/* test_account.c — account_register_recorded: a keyed registration and
 * its idempotency key's record in one PostgreSQL statement. Each outcome
 * on a real store (ledger_fixture.h; skipped without SETTLED_TEST_PG): a new
 * wallet records the success answer, a taken wallet writes nothing (the
 * caller records its refusal), a live record is left alone (and the
 * caller's rollback takes the account it wrote), an expired record is
 * taken over; SQLite refuses the call. The same for
 * account_register_recorded_many (a merged run of them): every row written,
 * or a short count when a key is live (no account written) or
 * a wallet taken (no error: the caller rolls back). */
#include <criterion/criterion.h>
#include <string.h>

#include "account.h"
#include "idempotency.h"
#include "store.h"

#include "ledger_fixture.h"

#include "banned.h"

#define TTL INT64_C(60000)
#define SCOPE "anon POST /api/register"

struct call {
	const char *id, *wallet, *key, *fingerprint;
	const char *ok_body;
	enum st_rc unit_rc;     /* what the unit returns after the call (ST_OK: commit) */
	enum st_rc rc;
	bool registered, recorded;
};

static enum st_rc call_unit(struct tx *tx, void *arg)
{
	struct call *c = arg;
	struct account_new a = { .id = c->id, .wallet = c->wallet, .created_at = tx_now_ms(tx) };
	struct idem_new_record rec = {
		.scope = SCOPE, .key = c->key, .fingerprint = c->fingerprint,
		.ans = { .status = 201, .location = "/api/v2/accounts/x", .body = c->ok_body,
			 .body_len = strlen(c->ok_body) },
	};
	c->rc = account_register_recorded(tx, &a, &rec, "inst", TTL, &c->registered, &c->recorded);
	return c->rc ? c->rc : c->unit_rc;
}

static struct call run(const char *id, const char *wallet, const char *key, const char *fp,
		       enum st_rc unit_rc)
{
	struct call c = { .id = id, .wallet = wallet, .key = key, .fingerprint = fp,
			  .ok_body = "{\"ok\":1}", .unit_rc = unit_rc };

	(void)store_run(F.s, call_unit, &c);
	return c;
}

struct rec_read {
	const char *key;
	struct idem_record r;
	enum st_rc rc;
};

static enum st_rc read_unit(struct tx *tx, void *arg)
{
	struct rec_read *q = arg;

	q->rc = idem_lookup(tx, SCOPE, q->key, "fp-a", &q->r);
	return ST_OK;
}

static struct rec_read record_of(const char *key)
{
	struct rec_read q = { .key = key };

	cr_assert_eq(store_read(F.s, read_unit, &q), ST_OK);
	return q;
}

struct wallet_read {
	const char *wallet;
	enum st_rc rc;
	struct account a;
};

static enum st_rc wallet_unit(struct tx *tx, void *arg)
{
	struct wallet_read *q = arg;

	q->rc = account_by_wallet(tx, q->wallet, &q->a);
	return ST_OK;
}

static enum st_rc account_of(const char *wallet, char id[ACCOUNT_ID_MAX + 1])
{
	struct wallet_read q = { .wallet = wallet };

	cr_assert_eq(store_read(F.s, wallet_unit, &q), ST_OK);
	if (q.rc == ST_OK && id)
		memcpy(id, q.a.id, ACCOUNT_ID_MAX + 1);
	return q.rc;
}

#define W1 "0x00000000000000000000000000000000000000a1"
#define W2 "0x00000000000000000000000000000000000000a2"
#define W3 "0x00000000000000000000000000000000000000a3"

TestSuite(account_pg, .init = fx_open_pg, .fini = fx_close);

Test(account_pg, new_wallet_records_the_success)
{
	struct call c;
	struct rec_read q;
	char id[ACCOUNT_ID_MAX + 1];

	fx_need_backend();
	c = run("acct_1", W1, "k1", "fp-a", ST_OK);
	cr_assert_eq(c.rc, ST_OK, "%s", st_rc_str(c.rc));
	cr_assert(c.registered && c.recorded);
	cr_assert_eq(account_of(W1, id), ST_OK);
	cr_assert_str_eq(id, "acct_1");
	q = record_of("k1");
	cr_assert_eq(q.rc, ST_OK);
	cr_assert_eq(q.r.status, 201);
	cr_assert_str_eq(q.r.body, "{\"ok\":1}");
	cr_assert_str_eq(q.r.location, "/api/v2/accounts/x");
	cr_assert(q.r.same_fingerprint);
	cr_assert_eq(q.r.expires_at, FX_NOW0 + TTL);
	idem_record_release(&q.r);
}

Test(account_pg, taken_wallet_writes_nothing)
{
	struct call c;
	struct rec_read q;
	char id[ACCOUNT_ID_MAX + 1];

	fx_need_backend();
	c = run("acct_1", W1, "k1", "fp-a", ST_OK);
	cr_assert(c.registered && c.recorded);
	c = run("acct_2", W1, "k2", "fp-a", ST_OK);
	cr_assert_eq(c.rc, ST_OK, "%s", st_rc_str(c.rc));
	cr_assert(!c.registered && !c.recorded);
	cr_assert_eq(account_of(W1, id), ST_OK);
	cr_assert_str_eq(id, "acct_1"); /* the first one's, untouched */
	q = record_of("k2");
	cr_assert_eq(q.rc, ST_NOT_FOUND); /* the caller records the refusal */
}

Test(account_pg, live_record_is_left_alone_and_the_rollback_takes_the_account)
{
	struct call c;
	struct rec_read q;

	fx_need_backend();
	c = run("acct_1", W1, "k1", "fp-a", ST_OK);
	cr_assert(c.recorded);
	/* Another body under the live key: the account is written, the record
	 * is not; the caller rolls the unit back (as the dispatcher does). */
	c = run("acct_2", W2, "k1", "fp-b", ST_CONFLICT);
	cr_assert_eq(c.rc, ST_OK, "%s", st_rc_str(c.rc));
	cr_assert(c.registered && !c.recorded);
	cr_assert_eq(account_of(W2, NULL), ST_NOT_FOUND);
	q = record_of("k1");
	cr_assert_eq(q.rc, ST_OK);
	cr_assert_eq(q.r.status, 201);
	cr_assert_str_eq(q.r.fingerprint, "fp-a");
	idem_record_release(&q.r);
}

Test(account_pg, expired_record_is_taken_over)
{
	struct call c;
	struct rec_read q;

	fx_need_backend();
	c = run("acct_1", W1, "k1", "fp-x", ST_OK);
	cr_assert(c.recorded);
	fx_advance(TTL);
	c = run("acct_3", W3, "k1", "fp-a", ST_OK);
	cr_assert_eq(c.rc, ST_OK, "%s", st_rc_str(c.rc));
	cr_assert(c.registered && c.recorded);
	q = record_of("k1");
	cr_assert_eq(q.rc, ST_OK);
	cr_assert_str_eq(q.r.fingerprint, "fp-a");
	cr_assert_eq(q.r.expires_at, FX_NOW0 + 2 * TTL);
	idem_record_release(&q.r);
}

TestSuite(account_sqlite, .init = fx_open_sqlite, .fini = fx_close);

Test(account_sqlite, recorded_registration_is_postgresql_only)
{
	struct call c = run("acct_1", W1, "k1", "fp-a", ST_OK);

	cr_assert_eq(c.rc, ST_INTERNAL);
	cr_assert(!c.registered && !c.recorded);
	cr_assert_eq(account_of(W1, NULL), ST_NOT_FOUND);
}

/* ---- account_register_recorded_many: a merged run of keyed registrations ---- */

#define MANY 5
/* quotes, backslashes, a comma and braces: what an array literal escapes */
#define MANY_BODY "{\"ok\":\"2\\\\,}\"}"

struct many {
	const char *ids[MANY], *wallets[MANY], *keys[MANY];
	int n;
	enum st_rc rc;
	bool all;
	/* read in the unit right after the call, before any rollback */
	int64_t accounts_seen;
	enum st_rc after_rc;   /* a statement after the call: the tx is not aborted */
};

static enum st_rc many_unit(struct tx *tx, void *arg)
{
	struct many *m = arg;
	struct account_new a[MANY];
	struct idem_new_record recs[MANY];
	struct st_rows *rows = NULL;

	for (int i = 0; i < m->n; i++) {
		a[i] = (struct account_new){ .id = m->ids[i], .wallet = m->wallets[i],
					     .created_at = tx_now_ms(tx) };
		recs[i] = (struct idem_new_record){
			.scope = SCOPE, .key = m->keys[i], .fingerprint = "fp-a",
			.ans = { .status = 201, .location = i % 2 ? "/a/\"b\\" : NULL,
				 .body = MANY_BODY, .body_len = sizeof(MANY_BODY) - 1 },
		};
	}
	m->rc = account_register_recorded_many(tx, a, recs, m->n, "inst", TTL, &m->all);
	if (m->rc)
		return m->rc;
	m->after_rc = tx_query(tx, "SELECT count(*) FROM accounts WHERE id LIKE 'acct_m%'", ST_NOARGS,
			       &rows);
	if (m->after_rc == ST_OK) {
		m->accounts_seen = rows_i64(rows, 0, 0);
		rows_free(rows);
	}
	/* As the dispatcher: a short run is rolled back, each runs alone. */
	return m->all ? ST_OK : ST_CONFLICT;
}

static struct many run_many(const char *const *wallets, const char *const *keys)
{
	static const char *const ids[MANY] = { "acct_m1", "acct_m2", "acct_m3", "acct_m4", "acct_m5" };
	struct many m = { .n = MANY };

	for (int i = 0; i < MANY; i++) {
		m.ids[i] = ids[i];
		m.wallets[i] = wallets[i];
		m.keys[i] = keys[i];
	}
	(void)store_run(F.s, many_unit, &m);
	return m;
}

#define W4 "0x00000000000000000000000000000000000000a4"
#define W5 "0x00000000000000000000000000000000000000a5"
#define W6 "0x00000000000000000000000000000000000000a6"

static const char *const many_wallets[MANY] = { W1, W2, W3, W4, W5 };
static const char *const many_keys[MANY] = { "m1", "m2", "m3", "m4", "m5" };

Test(account_pg, many_new_wallets_record_every_success)
{
	struct many m;

	fx_need_backend();
	m = run_many(many_wallets, many_keys);
	cr_assert_eq(m.rc, ST_OK, "%s", st_rc_str(m.rc));
	cr_assert(m.all);
	cr_assert_eq(m.accounts_seen, MANY);
	for (int i = 0; i < MANY; i++) {
		char id[ACCOUNT_ID_MAX + 1];
		struct rec_read q;

		cr_assert_eq(account_of(many_wallets[i], id), ST_OK, "%d", i);
		cr_assert_str_eq(id, m.ids[i]);
		q = record_of(many_keys[i]);
		cr_assert_eq(q.rc, ST_OK, "%d", i);
		cr_assert_eq(q.r.status, 201);
		cr_assert_str_eq(q.r.body, MANY_BODY);
		if (i % 2)
			cr_assert_str_eq(q.r.location, "/a/\"b\\");
		else
			cr_assert_eq(q.r.location, NULL);
		cr_assert_eq(q.r.expires_at, FX_NOW0 + TTL);
		idem_record_release(&q.r);
	}
}

/* A live record of one key: no account is written (the accounts wait for
 * every record), the run reports itself short, and the rollback leaves the
 * live record as it was. */
Test(account_pg, a_live_key_writes_no_account)
{
	struct call c;
	struct many m;
	struct rec_read q;

	fx_need_backend();
	c = run("acct_1", W6, "m3", "fp-a", ST_OK);
	cr_assert(c.recorded);
	m = run_many(many_wallets, many_keys);
	cr_assert_eq(m.rc, ST_OK, "%s", st_rc_str(m.rc));
	cr_assert(!m.all);
	cr_assert_eq(m.after_rc, ST_OK, "%s", st_rc_str(m.after_rc));
	cr_assert_eq(m.accounts_seen, 0, "%lld", (long long)m.accounts_seen);
	for (int i = 0; i < MANY; i++)
		cr_assert_eq(account_of(many_wallets[i], NULL), ST_NOT_FOUND, "%d", i);
	q = record_of("m3");
	cr_assert_eq(q.rc, ST_OK);
	cr_assert_str_eq(q.r.body, "{\"ok\":1}"); /* the first request's answer */
	idem_record_release(&q.r);
	cr_assert_eq(record_of("m1").rc, ST_NOT_FOUND);
}

/* A taken wallet is a short count, not an error: the transaction goes on
 * (the next statement runs), and the rollback takes the rest. */
Test(account_pg, a_taken_wallet_is_a_short_count_not_an_error)
{
	struct call c;
	struct many m;
	char id[ACCOUNT_ID_MAX + 1];

	fx_need_backend();
	c = run("acct_1", W2, "k0", "fp-a", ST_OK);
	cr_assert(c.registered && c.recorded);
	m = run_many(many_wallets, many_keys);
	cr_assert_eq(m.rc, ST_OK, "%s", st_rc_str(m.rc));
	cr_assert(!m.all);
	cr_assert_eq(m.after_rc, ST_OK, "%s", st_rc_str(m.after_rc));
	cr_assert_eq(m.accounts_seen, MANY - 1);
	cr_assert_eq(account_of(W2, id), ST_OK);
	cr_assert_str_eq(id, "acct_1");
	for (int i = 0; i < MANY; i++) {
		if (i != 1)
			cr_assert_eq(account_of(many_wallets[i], NULL), ST_NOT_FOUND, "%d", i);
		cr_assert_eq(record_of(many_keys[i]).rc, ST_NOT_FOUND, "%d", i);
	}
}

/* Two registrations of one wallet in one run (two keys): the second is a
 * short count too (ON CONFLICT sees the row the same statement wrote). */
Test(account_pg, a_wallet_twice_in_one_run_is_a_short_count)
{
	static const char *const twice[MANY] = { W1, W2, W3, W2, W5 };
	struct many m;

	fx_need_backend();
	m = run_many(twice, many_keys);
	cr_assert_eq(m.rc, ST_OK, "%s", st_rc_str(m.rc));
	cr_assert(!m.all);
	cr_assert_eq(m.after_rc, ST_OK, "%s", st_rc_str(m.after_rc));
	cr_assert_eq(m.accounts_seen, MANY - 1);
	for (int i = 0; i < MANY; i++)
		cr_assert_eq(account_of(twice[i], NULL), ST_NOT_FOUND, "%d", i);
}

Test(account_pg, many_take_over_an_expired_record)
{
	struct call c;
	struct many m;
	struct rec_read q;

	fx_need_backend();
	c = run("acct_1", W6, "m4", "fp-x", ST_OK);
	cr_assert(c.recorded);
	fx_advance(TTL);
	m = run_many(many_wallets, many_keys);
	cr_assert_eq(m.rc, ST_OK, "%s", st_rc_str(m.rc));
	cr_assert(m.all);
	q = record_of("m4");
	cr_assert_eq(q.rc, ST_OK);
	cr_assert(q.r.same_fingerprint);
	cr_assert_eq(q.r.expires_at, FX_NOW0 + 2 * TTL);
	idem_record_release(&q.r);
}

Test(account_sqlite, recorded_registrations_are_postgresql_only)
{
	struct many m = run_many(many_wallets, many_keys);

	cr_assert_eq(m.rc, ST_INTERNAL);
	cr_assert(!m.all);
	cr_assert_eq(account_of(W1, NULL), ST_NOT_FOUND);
}

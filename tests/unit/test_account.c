/* test_account.c — account_register_recorded: a keyed registration and
 * its idempotency key's record in one PostgreSQL statement. Each outcome
 * on a real store (ledger_fixture.h; skipped without SETTLED_TEST_PG): a new
 * wallet records the success answer, a taken wallet writes nothing (the
 * caller records its refusal), a live record is left alone (and the
 * caller's rollback takes the account it wrote), an expired record is
 * taken over; SQLite refuses the call. */
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

/* test_payout.c — payout batches (payout.c) and their jobs (payout_job.c)
 * on a real store (SQLite, and PostgreSQL under SETTLED_TEST_PG), with a
 * scripted rail and the store's clock injected (ledger_fixture.h).
 *
 * The handlers are called directly (no worker threads): claim the due jobs
 * of the payouts queue, build a job_ctx, call the handler, then look at the
 * items, the intents, the balances and the ledger invariants. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "intent.h"
#include "ledger_fixture.h"
#include "payout.h"
#include "payout_job.h"
#include "queue.h"
#include "rail.h"
#include "settled.h"
#include "worker.h"

#include "banned.h"

#define RICH "0x00000000000000000000000000000000000000aa"
#define POOR "0x00000000000000000000000000000000000000bb"
#define NOBODY "0x00000000000000000000000000000000000000cc"
#define RAIL_DELAY 250

static struct settled app;
static struct config cfg;

/* A scripted rail: answers `verdict` every time. */
struct script_rail {
	struct rail base;
	enum rail_result verdict;
	int calls;
};

static int64_t script_delay(const struct rail *r)
{
	(void)r;
	return RAIL_DELAY;
}

static enum rail_result script_check(struct rail *r, const struct rail_tx *t, const char **reason,
				     struct buf *why)
{
	struct script_rail *s = (struct script_rail *)r;

	(void)t;
	(void)reason;
	s->calls++;
	if (s->verdict != RAIL_CONFIRMED)
		buf_printf(why, "scripted %s", rail_result_str(s->verdict));
	return s->verdict;
}

static void script_free(struct rail *r)
{
	(void)r;
}

static const struct rail_ops script_ops = { "script", script_delay, script_check, NULL, script_free };
static struct script_rail rail = { { &script_ops }, RAIL_CONFIRMED, 0 };

/* ---- set-up: two registered wallets, RICH funded with 1000 ---- */

static enum st_rc boot_unit(struct tx *tx, void *arg)
{
	struct ledger_entry fund[2] = { { ACCT_EXTERNAL, LEDGER_DEBIT, 1000 },
					{ NULL, LEDGER_CREDIT, 1000 } };
	struct ledger_post p = { .kind = "test_funding", .n = 2, .entries = fund };
	struct account rich, poor;
	enum st_rc rc;

	(void)arg;
	rc = account_register(tx, RICH, NULL, &rich);
	if (!rc)
		rc = account_register(tx, POOR, NULL, &poor);
	if (rc)
		return rc;
	fund[1].account_id = rich.id;
	return ledger_post(tx, &p, NULL);
}

static void boot(void)
{
	memset(&cfg, 0, sizeof(cfg));
	cfg.job_max_attempts = 5;
	cfg.job_base_delay_ms = 1000;
	cfg.job_max_delay_ms = 600000;
	memset(&app, 0, sizeof(app));
	app.cfg = &cfg;
	app.store = F.s;
	app.rail = &rail.base;
	log_init(&app.log, 2, LOG_ERROR);
	rail.verdict = RAIL_CONFIRMED;
	rail.calls = 0;
	cr_assert_eq(store_run(F.s, boot_unit, NULL), ST_OK);
}

/* ---- helpers ---- */

struct batch_op {
	const char *client;
	const char *reference;
	const struct payout_item_in *items;
	size_t n;
	struct payout_batch b;
	int64_t enqueued;
};

static enum st_rc create_unit(struct tx *tx, void *arg)
{
	struct batch_op *o = arg;

	return payout_batch_create(tx, o->client, o->reference, o->items, o->n, &o->b);
}

static enum st_rc approve_unit(struct tx *tx, void *arg)
{
	struct batch_op *o = arg;
	enum st_rc rc = payout_batch_approve(tx, o->b.id, "admin", &o->b);

	return rc ? rc : payout_job_enqueue_batch(tx, &app, o->b.id, o->b.item_count, &o->enqueued);
}

static struct batch_op new_batch(const struct payout_item_in *items, size_t n)
{
	struct batch_op o = { .client = "key_a", .reference = "ref", .items = items, .n = n };

	cr_assert_eq(store_run(F.s, create_unit, &o), ST_OK);
	return o;
}

static void approve(struct batch_op *o)
{
	cr_assert_eq(store_run(F.s, approve_unit, o), ST_OK);
	cr_assert_eq(o->enqueued, (int64_t)o->n);
}

struct jobs_claim {
	struct job jobs[16];
	int n;
};

static enum st_rc take_unit(struct tx *tx, void *arg)
{
	struct jobs_claim *c = arg;
	static int seq;
	char owner[32];

	snprintf(owner, sizeof(owner), "test#%d", ++seq);
	return queue_claim(tx, PAYOUT_JOB_QUEUE, 16, owner, 30000, c->jobs, &c->n);
}

/* Claims the due payout jobs and runs each through its handler; returns
 * how many ran. rcs (may be NULL) gets each handler's rc. */
static int run_due(enum st_rc *rcs)
{
	struct jobs_claim c;

	memset(&c, 0, sizeof(c));
	cr_assert_eq(store_run(F.s, take_unit, &c), ST_OK);
	for (int i = 0; i < c.n; i++) {
		struct job_ctx ctx = { .app = &app, .job = &c.jobs[i] };
		enum st_rc rc;

		buf_init(&ctx.error, QUEUE_ERROR_MAX);
		if (!strcmp(c.jobs[i].kind, PAYOUT_EXECUTE_KIND))
			rc = payout_execute_job(&ctx);
		else
			rc = payout_confirm_job(&ctx);
		if (rcs)
			rcs[i] = rc;
		else
			cr_assert_eq(rc, ST_OK, "%s: %s", c.jobs[i].kind, ctx.error.ptr);
		buf_release(&ctx.error);
		job_release(&c.jobs[i]);
	}
	return c.n;
}

struct item_q {
	const char *batch;
	int64_t idx;
	struct payout_item it;
	struct payout_batch b;
};

static enum st_rc item_unit(struct tx *tx, void *arg)
{
	struct item_q *q = arg;
	enum st_rc rc = payout_item_get(tx, q->batch, q->idx, &q->it);

	return rc ? rc : payout_batch_get(tx, q->batch, &q->b);
}

static struct item_q item(const char *batch, int64_t idx)
{
	struct item_q q = { .batch = batch, .idx = idx };

	cr_assert_eq(store_read(F.s, item_unit, &q), ST_OK);
	return q;
}

struct acct_q {
	const char *wallet;
	struct account a;
};

static enum st_rc acct_unit(struct tx *tx, void *arg)
{
	struct acct_q *q = arg;

	return account_by_wallet(tx, q->wallet, &q->a);
}

static struct account by_wallet(const char *w)
{
	struct acct_q q = { .wallet = w };

	cr_assert_eq(store_read(F.s, acct_unit, &q), ST_OK);
	return q.a;
}

/* ---- tests ---- */

BOTH(payout, create_validates_and_refuses_a_duplicate_reference)
{
	const struct payout_item_in items[] = { { RICH, 1 }, { POOR, 2 } };
	const struct payout_item_in overflow[] = { { RICH, INT64_MAX }, { POOR, 1 } };
	struct batch_op o, dup;

	boot();
	o = new_batch(items, 2);
	cr_assert_eq(o.b.status, PAYOUT_BATCH_PENDING_APPROVAL);
	cr_assert_eq(o.b.item_count, 2);
	cr_assert_eq(o.b.total_amount, 3);
	cr_assert_eq(o.b.remaining, 2);
	cr_assert_eq(item(o.b.id, 1).it.status, PAYOUT_ITEM_PENDING);

	dup = (struct batch_op){ .client = "key_a", .reference = "ref", .items = items, .n = 1 };
	cr_assert_eq(store_run(F.s, create_unit, &dup), ST_CONFLICT);
	dup.client = "key_b";
	cr_assert_eq(store_run(F.s, create_unit, &dup), ST_OK, "references are per client");
	dup = (struct batch_op){ .client = "key_a", .reference = "x", .items = overflow, .n = 2 };
	cr_assert_eq(store_run(F.s, create_unit, &dup), ST_INVALID);
	dup.n = 0;
	cr_assert_eq(store_run(F.s, create_unit, &dup), ST_INVALID);
	cr_assert_eq(fx_int("SELECT count(*) FROM payout_batches", NULL), 2);
	cr_assert_eq(fx_int("SELECT count(*) FROM payout_items", NULL), 3);
}

BOTH(payout, chunked_insert_keeps_every_item)
{
	struct payout_item_in *items = calloc(PAYOUT_MAX_ITEMS, sizeof(*items));
	struct batch_op o;

	boot();
	cr_assert_not_null(items);
	for (int i = 0; i < PAYOUT_MAX_ITEMS; i++) {
		snprintf(items[i].wallet, sizeof(items[i].wallet), "%s", i % 2 ? RICH : POOR);
		items[i].amount = i + 1;
	}
	o = new_batch(items, 250); /* two chunks of 100 and 50 single rows */
	cr_assert_eq(fx_int("SELECT count(*) FROM payout_items", NULL), 250);
	cr_assert_eq(fx_int("SELECT sum(amount) FROM payout_items", NULL), 250 * 251 / 2);
	cr_assert_eq(item(o.b.id, 249).it.amount, 250);
	cr_assert_str_eq(item(o.b.id, 249).it.wallet, RICH);
	o = (struct batch_op){ .client = "c", .reference = "full", .items = items, .n = PAYOUT_MAX_ITEMS };
	cr_assert_eq(store_run(F.s, create_unit, &o), ST_OK);
	cr_assert_eq(fx_int("SELECT count(*) FROM payout_items WHERE batch_id = $1", o.b.id),
		     PAYOUT_MAX_ITEMS);
	o.n = PAYOUT_MAX_ITEMS + 1;
	o.reference = "too big";
	cr_assert_eq(store_run(F.s, create_unit, &o), ST_INVALID);
	free(items);
}

BOTH(payout, items_fail_alone_and_the_rest_settle)
{
	const struct payout_item_in items[] = { { RICH, 300 }, { POOR, 50 }, { NOBODY, 5 }, { RICH, 800 } };
	struct batch_op o;
	struct account rich;
	int64_t ext0;

	boot();
	ext0 = fx_account(ACCT_EXTERNAL).balance;
	o = new_batch(items, 4);
	approve(&o);
	cr_assert_eq(store_run(F.s, approve_unit, &o), ST_CONFLICT, "approving twice");
	cr_assert_eq(fx_int("SELECT count(*) FROM jobs", NULL), 4, "nothing more enqueued");

	cr_assert_eq(run_due(NULL), 4);
	cr_assert_eq(item(o.b.id, 0).it.status, PAYOUT_ITEM_SUBMITTED);
	cr_assert_str_eq(item(o.b.id, 1).it.error, "insufficient_funds");
	cr_assert_eq(item(o.b.id, 1).it.status, PAYOUT_ITEM_FAILED);
	cr_assert_str_eq(item(o.b.id, 2).it.error, "unknown_wallet");
	/* 300 is held; 800 more does not fit in the 700 left available. */
	cr_assert_str_eq(item(o.b.id, 3).it.error, "insufficient_funds");
	rich = by_wallet(RICH);
	cr_assert_eq(rich.balance, 1000);
	cr_assert_eq(rich.held, 300);
	cr_assert_eq(item(o.b.id, 0).b.remaining, 1);
	fx_assert_ledger_invariants("after execution");

	cr_assert_eq(run_due(NULL), 0, "the confirmation waits for the rail's delay");
	fx_advance(RAIL_DELAY);
	cr_assert_eq(run_due(NULL), 1);
	cr_assert_eq(rail.calls, 1);
	cr_assert_eq(item(o.b.id, 0).it.status, PAYOUT_ITEM_SETTLED);
	cr_assert_eq(item(o.b.id, 0).b.status, PAYOUT_BATCH_COMPLETED);
	cr_assert_eq(item(o.b.id, 0).b.remaining, 0);
	cr_assert_eq(item(o.b.id, 0).b.completed_at, FX_NOW0 + RAIL_DELAY);
	rich = by_wallet(RICH);
	cr_assert_eq(rich.balance, 700);
	cr_assert_eq(rich.held, 0);
	cr_assert_eq(fx_account(ACCT_PAYOUTS_CLEARING).balance, 0);
	cr_assert_eq(fx_account(ACCT_EXTERNAL).balance, ext0 + 300);
	/* One posting with the intent (the capture), one hand-over to external. */
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_tx WHERE intent_id = $1",
			    item(o.b.id, 0).it.intent_id), 1);
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_tx WHERE kind = 'payout_out'", NULL), 1);
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_entries WHERE account_id = 'payouts_clearing'",
			    NULL), 2);
	fx_assert_ledger_invariants("after settlement");
}

BOTH(payout, rail_rejection_returns_the_funds)
{
	const struct payout_item_in items[] = { { RICH, 400 } };
	struct batch_op o;
	struct account rich;

	boot();
	o = new_batch(items, 1);
	approve(&o);
	cr_assert_eq(run_due(NULL), 1);
	cr_assert_eq(by_wallet(RICH).held, 400);
	rail.verdict = RAIL_REJECTED;
	fx_advance(RAIL_DELAY);
	cr_assert_eq(run_due(NULL), 1);
	cr_assert_eq(item(o.b.id, 0).it.status, PAYOUT_ITEM_FAILED);
	cr_assert_str_eq(item(o.b.id, 0).it.error, "rail_rejected");
	cr_assert_eq(item(o.b.id, 0).b.status, PAYOUT_BATCH_COMPLETED);
	rich = by_wallet(RICH);
	cr_assert_eq(rich.balance, 1000, "nothing left the wallet");
	cr_assert_eq(rich.held, 0, "the hold is released");
	cr_assert_eq(fx_int("SELECT count(*) FROM ledger_tx WHERE kind IN ('payout', 'payout_out')", NULL), 0);
	fx_assert_ledger_invariants("after the rejection");
}

BOTH(payout, rail_error_keeps_the_funds_held_and_retries)
{
	const struct payout_item_in items[] = { { RICH, 400 } };
	struct batch_op o;
	enum st_rc rcs[4];

	boot();
	o = new_batch(items, 1);
	approve(&o);
	cr_assert_eq(run_due(NULL), 1);
	rail.verdict = RAIL_ERROR;
	fx_advance(RAIL_DELAY);
	cr_assert_eq(run_due(rcs), 1);
	cr_assert_neq(rcs[0], ST_OK, "a failed attempt");
	cr_assert_eq(item(o.b.id, 0).it.status, PAYOUT_ITEM_SUBMITTED);
	cr_assert_eq(by_wallet(RICH).held, 400);
	fx_assert_ledger_invariants("while the rail is down");
}

/* The intent ended without the job (an operator failed it): the job's
 * next run only brings the item in line, asking the rail nothing. */
struct fail_op {
	char id[LEDGER_ID_MAX + 1];
};

static enum st_rc fail_unit(struct tx *tx, void *arg)
{
	struct fail_op *f = arg;

	return intent_fail(tx, f->id, "operator", "cancelled", NULL);
}

BOTH(payout, item_follows_an_intent_ended_elsewhere)
{
	const struct payout_item_in items[] = { { RICH, 100 } };
	struct batch_op o;
	struct fail_op f;

	boot();
	o = new_batch(items, 1);
	approve(&o);
	cr_assert_eq(run_due(NULL), 1);
	snprintf(f.id, sizeof(f.id), "%s", item(o.b.id, 0).it.intent_id);
	cr_assert_eq(store_run(F.s, fail_unit, &f), ST_OK);
	fx_advance(RAIL_DELAY);
	cr_assert_eq(run_due(NULL), 1);
	cr_assert_eq(rail.calls, 0);
	cr_assert_eq(item(o.b.id, 0).it.status, PAYOUT_ITEM_FAILED);
	cr_assert_str_eq(item(o.b.id, 0).it.error, "cancelled");
	cr_assert_eq(item(o.b.id, 0).b.status, PAYOUT_BATCH_COMPLETED);
	cr_assert_eq(by_wallet(RICH).balance, 1000);
	fx_assert_ledger_invariants("after the operator's failure");
}

BOTH(payout, rail_ref_is_a_unique_tx_hash)
{
	char a[TX_HASH_LEN + 1], b[TX_HASH_LEN + 1], c[TX_HASH_LEN + 1], canon[TX_HASH_LEN + 1];

	payout_item_rail_ref("pb_1", 0, a);
	payout_item_rail_ref("pb_1", 1, b);
	payout_item_rail_ref("pb_1", 0, c);
	cr_assert_str_neq(a, b);
	cr_assert_str_eq(a, c);
	cr_assert_eq(parse_tx_hash(a, strlen(a), canon), ST_OK);
	cr_assert_str_eq(a, canon);
}

/* test_claim_job.c — the claim confirmation job and the stuck-intent sweep
 * on a real SQLite store, with scripted rails and an injected clock.
 *
 * The handler is called directly (no worker threads): claim the job, build
 * a job_ctx, call claim_confirm_job, look at the intent, the hold, the
 * ledger and the job. The wallet is paid FUNDS first (revenue -> wallet,
 * as the webhook job does): a claim holds and spends the wallet's own
 * money, and treasury never moves. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "account.h"
#include "claim_job.h"
#include "config.h"
#include "intent.h"
#include "ledger.h"
#include "queue.h"
#include "rail.h"
#include "settled.h"
#include "store.h"
#include "stuck_sweep.h"
#include "worker.h"

#include "banned.h"

#define NOW0 INT64_C(1700000000000)
#define WALLET "0x00000000000000000000000000000000000000aa"
#define FUNDS INT64_C(1000000)
#define TREASURY_FUNDS INT64_C(5000000)

static struct store *st;
static struct settled app;
static struct config cfg;
static char dir[64];
static int64_t fake_now;

/* A scripted rail: answers `verdict` every time. */
struct script_rail {
	struct rail base;
	enum rail_result verdict;
	int calls;
	const char *reason;   /* the rail's failure-reason code (NULL: none) */
};

static int64_t script_delay(const struct rail *r)
{
	(void)r;
	return 250;
}

static enum rail_result script_check(struct rail *r, const struct rail_tx *t, const char **reason,
				     struct buf *why)
{
	struct script_rail *s = (struct script_rail *)r;

	cr_assert_str_eq(t->wallet, WALLET);
	s->calls++;
	*reason = s->reason;
	if (s->verdict != RAIL_CONFIRMED)
		buf_printf(why, "scripted %s", rail_result_str(s->verdict));
	return s->verdict;
}

static void script_free(struct rail *r)
{
	(void)r;
}

static const struct rail_ops script_ops = { "script", script_delay, script_check, NULL, script_free };
static struct script_rail rail = { { &script_ops }, RAIL_CONFIRMED, 0, NULL };

static int64_t fake_clock(void *arg)
{
	(void)arg;
	return fake_now;
}

static enum st_rc boot_unit(struct tx *tx, void *arg)
{
	struct account a;
	enum st_rc rc;

	(void)arg;
	rc = account_ensure_system(tx);
	if (!rc)
		rc = ledger_fund_treasury(tx, TREASURY_FUNDS, NULL);
	if (!rc)
		rc = account_register(tx, WALLET, NULL, &a);
	if (!rc) {
		const struct ledger_entry e[2] = { { ACCT_REVENUE, LEDGER_DEBIT, FUNDS },
						   { a.id, LEDGER_CREDIT, FUNDS } };
		const struct ledger_post p = { .kind = "payment", .n = 2, .entries = e };

		rc = ledger_post(tx, &p, NULL);
	}
	return rc;
}

static void setup(void)
{
	struct store_options opt = { 0 };
	struct buf err = BUF_INIT(1024);
	char path[128];

	snprintf(dir, sizeof(dir), "/tmp/settled-claimjob-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/settled.db", dir);
	opt.sqlite_path = path;
	cr_assert_eq(store_open(&opt, &st, &err), ST_OK, "store_open: %s", err.ptr);
	buf_release(&err);
	fake_now = NOW0;
	st->clock_ms = fake_clock;
	memset(&cfg, 0, sizeof(cfg));
	cfg.job_max_attempts = 5;
	cfg.sim_confirm_ms = 200;
	cfg.job_base_delay_ms = 1000;
	cfg.job_max_delay_ms = 600000;
	memset(&app, 0, sizeof(app));
	app.cfg = &cfg;
	app.store = st;
	app.rail = &rail.base;
	log_init(&app.log, 2, LOG_ERROR);
	rail.verdict = RAIL_CONFIRMED;
	rail.calls = 0;
	rail.reason = NULL;
	cfg.stuck_after_ms = 600000;
	app.clock_ms = fake_clock;
	cr_assert_eq(store_run(st, boot_unit, NULL), ST_OK);
}

static void teardown(void)
{
	char cmd[128];

	store_close(st);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

/* ---- helpers ---- */

struct claim_setup {
	struct intent it;
	bool record;
	bool enqueue;
};

static enum st_rc claim_unit(struct tx *tx, void *arg)
{
	struct claim_setup *c = arg;
	enum st_rc rc;
	char hash[TX_HASH_LEN + 1];

	rc = intent_claim_create(tx, WALLET, 100, 3600000, "test", &c->it, NULL);
	if (rc || !c->record)
		return rc;
	snprintf(hash, sizeof(hash), "0x%064llx", (unsigned long long)(tx_now_ms(tx) + rand()));
	rc = intent_record(tx, c->it.id, hash, "test", &c->it);
	if (rc || !c->enqueue)
		return rc;
	return claim_job_enqueue(tx, &app, c->it.id, 0);
}

/* A SUBMITTED claim with (enqueue) or without its confirmation job. */
static struct intent new_claim(bool enqueue)
{
	struct claim_setup c = { .record = true, .enqueue = enqueue };

	cr_assert_eq(store_run(st, claim_unit, &c), ST_OK);
	return c.it;
}

struct jobs_claim {
	const char *owner;
	struct job jobs[8];
	int n;
};

static enum st_rc take_unit(struct tx *tx, void *arg)
{
	struct jobs_claim *c = arg;

	return queue_claim(tx, CLAIM_JOB_QUEUE, 8, c->owner, 30000, c->jobs, &c->n);
}

static int take(struct jobs_claim *c, const char *owner)
{
	memset(c, 0, sizeof(*c));
	c->owner = owner;
	cr_assert_eq(store_run(st, take_unit, c), ST_OK);
	return c->n;
}

static void take_release(struct jobs_claim *c)
{
	for (int i = 0; i < c->n; i++)
		job_release(&c->jobs[i]);
}

struct look {
	const char *id;
	struct intent it;
	struct ledger_hold h;
	int64_t ltx;
	int64_t jobs_live;
	struct account wallet, treasury;
};

static enum st_rc look_unit(struct tx *tx, void *arg)
{
	struct look *l = arg;
	struct st_rows *rows = NULL;
	char payload[CLAIM_JOB_PAYLOAD_MAX];
	enum st_rc rc;

	rc = intent_get(tx, l->id, &l->it);
	if (!rc)
		rc = ledger_hold_get(tx, l->it.hold_id, &l->h);
	if (!rc)
		rc = account_by_wallet(tx, WALLET, &l->wallet);
	if (!rc)
		rc = account_by_id(tx, ACCT_TREASURY, &l->treasury);
	if (!rc)
		rc = tx_query(tx, "SELECT count(*) FROM ledger_tx WHERE intent_id = $1",
			      ST_ARGS(SV_S(l->id)), &rows);
	if (rc)
		return rc;
	l->ltx = rows_i64(rows, 0, 0);
	rows_free(rows);
	claim_job_payload(l->id, payload);
	return queue_count_payload(tx, CLAIM_JOB_KIND, payload,
				   (1u << JOB_AVAILABLE) | (1u << JOB_RUNNING) | (1u << JOB_DEAD),
				   &l->jobs_live);
}

static struct look look(const char *id)
{
	struct look l = { .id = id };

	cr_assert_eq(store_read(st, look_unit, &l), ST_OK);
	cr_assert_eq(l.treasury.balance, TREASURY_FUNDS, "a claim moved treasury");
	cr_assert_eq(l.treasury.held, 0, "a claim held treasury");
	cr_assert_str_eq(l.h.account_id, l.wallet.id, "the hold is on the wallet's account");
	return l;
}

static enum st_rc run_handler(struct job *j, struct job_ctx *ctx)
{
	memset(ctx, 0, sizeof(*ctx));
	ctx->app = &app;
	ctx->job = j;
	buf_init(&ctx->error, QUEUE_ERROR_MAX);
	return claim_confirm_job(ctx);
}

/* ---- the job ---- */

Test(claim_job, enqueue_waits_for_the_rail_and_is_unique, .init = setup, .fini = teardown)
{
	struct intent it = new_claim(true);
	struct jobs_claim c;
	char payload[CLAIM_JOB_PAYLOAD_MAX];

	cr_assert_eq(take(&c, "w#1"), 0, "not before the rail's confirmation delay");
	fake_now += 250;
	cr_assert_eq(take(&c, "w#1"), 1);
	cr_assert_str_eq(c.jobs[0].kind, CLAIM_JOB_KIND);
	cr_assert_eq(c.jobs[0].max_attempts, 5, "SETTLED_JOB_MAX_ATTEMPTS");
	cr_assert_eq(c.jobs[0].run_at, NOW0 + 250);
	claim_job_payload(it.id, payload);
	cr_assert_str_eq(c.jobs[0].payload, payload);
	cr_assert_not_null(strstr(c.jobs[0].unique_key, it.id));
	take_release(&c);
}

Test(claim_job, confirmed_settles_once_with_the_completion, .init = setup, .fini = teardown)
{
	struct intent it = new_claim(true);
	struct jobs_claim c;
	struct job_ctx ctx;
	struct look l;

	fake_now += 250;
	cr_assert_eq(take(&c, "w#1"), 1);
	cr_assert_eq(run_handler(&c.jobs[0], &ctx), ST_OK);
	cr_assert(ctx.committed);
	buf_release(&ctx.error);
	l = look(it.id);
	cr_assert_eq(l.it.status, INTENT_SETTLED);
	cr_assert_eq(l.h.status, HOLD_CAPTURED);
	cr_assert_eq(l.ltx, 1);
	cr_assert_eq(l.wallet.balance, FUNDS - 100, "the wallet paid out what it claimed");
	cr_assert_eq(l.wallet.held, 0);
	cr_assert_eq(l.jobs_live, 0, "the job completed in the same unit");
	cr_assert_eq(rail.calls, 1);

	/* The same job delivered again (a retry after a lost answer): its
	 * lease is gone, nothing is applied twice. */
	cr_assert_eq(run_handler(&c.jobs[0], &ctx), ST_OK, "intent settled: nothing to do");
	cr_assert_not(ctx.committed);
	buf_release(&ctx.error);
	cr_assert_eq(look(it.id).ltx, 1);
	take_release(&c);
}

Test(claim_job, rail_error_is_a_failed_attempt, .init = setup, .fini = teardown)
{
	struct intent it = new_claim(true);
	struct jobs_claim c;
	struct job_ctx ctx;
	struct look l;

	rail.verdict = RAIL_ERROR;
	fake_now += 250;
	cr_assert_eq(take(&c, "w#1"), 1);
	cr_assert_neq(run_handler(&c.jobs[0], &ctx), ST_OK);
	cr_assert_not(ctx.committed);
	cr_assert_not(ctx.permanent);
	cr_assert_not_null(strstr(ctx.error.ptr, "scripted error"));
	buf_release(&ctx.error);
	l = look(it.id);
	cr_assert_eq(l.it.status, INTENT_SUBMITTED, "the intent waits for the rail");
	cr_assert_eq(l.h.status, HOLD_PENDING);
	cr_assert_eq(l.wallet.held, 100);
	cr_assert_eq(l.ltx, 0);
	take_release(&c);
}

Test(claim_job, the_sim_rail_fails_all_or_nothing_at_the_extremes)
{
	struct rail *always = rail_sim_new(10, 1.0, NULL, NULL);
	struct rail *never = rail_sim_new(10, 0.0, NULL, NULL);
	struct rail_tx t = { .intent_id = "int_x", .tx_hash = "0xabc", .wallet = WALLET, .amount = 1 };
	struct buf why = BUF_INIT(256);
	const char *reason;

	for (int i = 0; i < 200; i++) {
		cr_assert_eq(rail_check(always, &t, &reason, &why), RAIL_ERROR);
		cr_assert_eq(rail_check(never, &t, &reason, &why), RAIL_CONFIRMED);
	}
	cr_assert_not_null(strstr(why.ptr, "injected failure"));
	cr_assert_eq(rail_confirm_delay_ms(always), 10);
	rail_free(always);
	rail_free(never);
	buf_release(&why);
}

static uint64_t step_rand(void *arg)
{
	uint64_t *x = arg;
	uint64_t v = *x;

	*x += UINT64_MAX / 1000 + 1; /* 2^64 / 1000, rounded up: i / 1000 exactly */
	return v;
}

Test(claim_job, sim_rail_fraction_is_exact_with_an_even_source)
{
	uint64_t x = 0;
	struct rail *r = rail_sim_new(10, 0.25, step_rand, &x);
	struct rail_tx t = { .intent_id = "int_x", .tx_hash = "0xabc", .wallet = WALLET, .amount = 1 };
	struct buf why = BUF_INIT(256);
	const char *reason;
	int fails = 0;

	for (int i = 0; i < 1000; i++)
		fails += rail_check(r, &t, &reason, &why) == RAIL_ERROR;
	cr_assert_eq(fails, 250);
	rail_free(r);
	buf_release(&why);
}

Test(claim_job, rejected_fails_the_intent_and_releases_the_hold, .init = setup, .fini = teardown)
{
	struct intent it = new_claim(true);
	struct jobs_claim c;
	struct job_ctx ctx;
	struct look l;

	rail.verdict = RAIL_REJECTED;
	fake_now += 250;
	cr_assert_eq(take(&c, "w#1"), 1);
	cr_assert_eq(run_handler(&c.jobs[0], &ctx), ST_OK);
	cr_assert(ctx.committed);
	buf_release(&ctx.error);
	l = look(it.id);
	cr_assert_eq(l.it.status, INTENT_FAILED);
	cr_assert_str_eq(l.it.failure_reason, "rail_rejected");
	cr_assert_eq(l.h.status, HOLD_RELEASED);
	cr_assert_eq(l.wallet.held, 0, "the wallet's hold is released");
	cr_assert_eq(l.wallet.balance, FUNDS, "and its money is all there");
	cr_assert_eq(l.ltx, 0);
	take_release(&c);
}

Test(claim_job, pending_checks_again_later_without_spending_an_attempt, .init = setup,
     .fini = teardown)
{
	struct intent it = new_claim(true);
	struct jobs_claim c, d;
	struct job_ctx ctx;

	rail.verdict = RAIL_PENDING;
	fake_now += 250;
	cr_assert_eq(take(&c, "w#1"), 1);
	cr_assert_eq(run_handler(&c.jobs[0], &ctx), ST_OK, "pending is not a failed attempt");
	cr_assert(ctx.committed);
	buf_release(&ctx.error);
	cr_assert_eq(look(it.id).it.status, INTENT_SUBMITTED);
	cr_assert_eq(look(it.id).jobs_live, 1, "the next check is enqueued");
	cr_assert_eq(take(&d, "w#2"), 0, "not before the rail's delay");
	fake_now += 250;
	cr_assert_eq(take(&d, "w#2"), 1);
	cr_assert_eq(d.jobs[0].attempts, 0, "a fresh job: no attempt spent");
	cr_assert_neq(d.jobs[0].id, c.jobs[0].id);
	take_release(&c);
	take_release(&d);
}

Test(claim_job, pending_past_stuck_after_fails_with_the_rails_reason, .init = setup,
     .fini = teardown)
{
	struct intent it = new_claim(true);
	struct jobs_claim c;
	struct job_ctx ctx;
	struct look l;

	rail.verdict = RAIL_PENDING;
	rail.reason = "evm_tx_not_found";
	fake_now += cfg.stuck_after_ms;
	cr_assert_eq(take(&c, "w#1"), 1);
	cr_assert_eq(run_handler(&c.jobs[0], &ctx), ST_OK);
	buf_release(&ctx.error);
	l = look(it.id);
	cr_assert_eq(l.it.status, INTENT_FAILED);
	cr_assert_str_eq(l.it.failure_reason, "evm_tx_not_found");
	cr_assert_eq(l.h.status, HOLD_RELEASED);
	cr_assert_eq(l.jobs_live, 0);
	take_release(&c);
}

Test(claim_job, rejected_fails_with_the_rails_reason_code, .init = setup, .fini = teardown)
{
	struct intent it = new_claim(true);
	struct jobs_claim c;
	struct job_ctx ctx;

	rail.verdict = RAIL_REJECTED;
	rail.reason = "evm_wrong_recipient";
	fake_now += 250;
	cr_assert_eq(take(&c, "w#1"), 1);
	cr_assert_eq(run_handler(&c.jobs[0], &ctx), ST_OK);
	buf_release(&ctx.error);
	cr_assert_str_eq(look(it.id).it.failure_reason, "evm_wrong_recipient");
	take_release(&c);
}

static enum st_rc sweep_all_unit(struct tx *tx, void *arg)
{
	(void)arg;
	return queue_sweep_leases(tx, 100, true, NULL, NULL, NULL, NULL);
}

Test(claim_job, a_lost_lease_applies_nothing, .init = setup, .fini = teardown)
{
	struct intent it = new_claim(true);
	struct jobs_claim a, b;
	struct job_ctx ctx;
	struct look l;

	fake_now += 250;
	cr_assert_eq(take(&a, "A#1"), 1);
	cr_assert_eq(store_run(st, sweep_all_unit, NULL), ST_OK);
	cr_assert_eq(take(&b, "B#1"), 1);
	cr_assert_eq(run_handler(&a.jobs[0], &ctx), ST_CONFLICT);
	cr_assert(ctx.lost);
	buf_release(&ctx.error);
	l = look(it.id);
	cr_assert_eq(l.it.status, INTENT_SUBMITTED, "settlement rolled back with the lost completion");
	cr_assert_eq(l.ltx, 0);
	cr_assert_eq(run_handler(&b.jobs[0], &ctx), ST_OK);
	buf_release(&ctx.error);
	l = look(it.id);
	cr_assert_eq(l.it.status, INTENT_SETTLED);
	cr_assert_eq(l.ltx, 1);
	take_release(&a);
	take_release(&b);
}

Test(claim_job, bad_payload_goes_straight_to_the_dlq, .init = setup, .fini = teardown)
{
	struct job j;
	struct job_ctx ctx;

	memset(&j, 0, sizeof(j));
	j.id = 42;
	j.payload = (char *)"{\"nope\":1}";
	cr_assert_neq(run_handler(&j, &ctx), ST_OK);
	cr_assert(ctx.permanent);
	buf_release(&ctx.error);
	j.payload = (char *)"{\"intent_id\":\"int_missing\"}";
	cr_assert_eq(run_handler(&j, &ctx), ST_NOT_FOUND);
	cr_assert(ctx.permanent);
	buf_release(&ctx.error);
}

/* ---- the stuck-intent sweep ---- */

static enum st_rc lock_unit(struct tx *tx, void *arg)
{
	struct claim_setup *c = arg;
	enum st_rc rc = intent_claim_create(tx, WALLET, 100, 3600000, "test", &c->it, NULL);

	if (rc)
		return rc;
	/* LOCKED cannot persist through the API (record goes on to SUBMITTED
	 * in the same unit); a crash mid-way in another implementation could
	 * leave one, so forge it. */
	return tx_exec(tx, "UPDATE intents SET status = 'LOCKED' WHERE id = $1", ST_ARGS(SV_S(c->it.id)),
		       NULL);
}

struct sweep_call {
	struct stuck_sweep s;
};

static enum st_rc sweep_unit(struct tx *tx, void *arg)
{
	struct sweep_call *c = arg;

	return stuck_sweep_batch(tx, &app, &c->s);
}

static struct stuck_sweep sweep(int64_t cutoff, int limit)
{
	struct sweep_call c = { .s = { .cutoff_ms = cutoff, .cur_at = INT64_MIN, .limit = limit } };

	do
		cr_assert_eq(store_run(st, sweep_unit, &c), ST_OK);
	while (c.s.seen == limit);
	return c.s;
}

Test(claim_job, stuck_sweep_fails_locked_and_requeues_orphans, .init = setup, .fini = teardown)
{
	struct claim_setup lk = { 0 };
	struct intent orphan1 = new_claim(false), orphan2 = new_claim(false), tracked = new_claim(true);
	struct stuck_sweep s;
	struct look l;

	cr_assert_eq(store_run(st, lock_unit, &lk), ST_OK);

	/* Nothing is stuck before the cutoff reaches them. */
	s = sweep(NOW0 - 1, 1);
	cr_assert_eq(s.failed + s.requeued, 0);

	fake_now += 1000;
	s = sweep(NOW0, 1); /* limit 1: the keyset cursor walks them all */
	cr_assert_eq(s.failed, 1);
	cr_assert_eq(s.requeued, 2, "only the SUBMITTED intents without a job");
	l = look(lk.it.id);
	cr_assert_eq(l.it.status, INTENT_FAILED);
	cr_assert_str_eq(l.it.failure_reason, "stuck_locked");
	cr_assert_eq(l.h.status, HOLD_RELEASED);
	cr_assert_eq(l.wallet.held, 300, "the stuck claim's 100 is back; three others hold 300");
	cr_assert_eq(l.wallet.balance, FUNDS);
	cr_assert_eq(look(orphan1.id).jobs_live, 1);
	cr_assert_eq(look(orphan2.id).jobs_live, 1);
	cr_assert_eq(look(tracked.id).jobs_live, 1, "a live job is left alone");

	/* A second pass finds their jobs: no duplicates. */
	s = sweep(NOW0, 10);
	cr_assert_eq(s.failed + s.requeued, 0);
	cr_assert_eq(look(orphan1.id).jobs_live, 1);

	/* The re-enqueued job settles the orphan like any other. */
	{
		struct jobs_claim c;
		struct job_ctx ctx;
		int n;

		fake_now += 1000;
		n = take(&c, "w#1");
		cr_assert_eq(n, 3);
		for (int i = 0; i < n; i++) {
			cr_assert_eq(run_handler(&c.jobs[i], &ctx), ST_OK);
			buf_release(&ctx.error);
		}
		take_release(&c);
	}
	cr_assert_eq(look(orphan1.id).it.status, INTENT_SETTLED);
	cr_assert_eq(look(orphan1.id).ltx, 1);
	cr_assert_eq(look(tracked.id).it.status, INTENT_SETTLED);
	l = look(tracked.id);
	cr_assert_eq(l.wallet.balance, FUNDS - 300);
	cr_assert_eq(l.wallet.held, 0);
}

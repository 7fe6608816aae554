/* payout_job.c — payout.execute and payout.confirm (see payout_job.h).
 *
 * As in claim_job.c, the rail is asked on the worker thread outside any
 * transaction, and only the effect runs in a write unit together with the
 * job's completion: job_commit_later, so the worker writes it in its batch
 * unit under the job's own savepoint (one commit for many payouts), and the
 * after step (exec_after, confirm_after) counts, logs and nudges once it is
 * decided. The intent machine and the item's guarded status changes are the
 * second fence: an effect that finds its work done does nothing. */
#include "payout_job.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "intent.h"
#include "json_out.h"
#include "log.h"
#include "payout.h"
#include "queue.h"
#include "rail.h"
#include "settled.h"
#include "banned.h"

#define PAYLOAD_MAX 192

static void actor_of(const struct job_ctx *ctx, char out[INTENT_ACTOR_MAX + 1])
{
	snprintf(out, INTENT_ACTOR_MAX + 1, "job:%lld", (long long)ctx->job->id);
}

static void count_payout(const struct settled *app, enum payout_item_status s)
{
	const char *const lv[] = { payout_item_status_str(s) };

	if (app->m.payouts) /* NULL in unit tests that run handlers without a registry */
		metrics_inc(app->m.payouts, lv);
}

static int64_t confirm_delay(const struct settled *app)
{
	const struct rail *r = app->payout_rail ? app->payout_rail : app->rail;
	int64_t d = r ? rail_confirm_delay_ms(r) : app->cfg->sim_confirm_ms;

	return d > 0 ? d : 0;
}

/* Payloads are built by us, so a payload that does not parse is a bug or
 * tampering: the job goes straight to the DLQ. */
static bool parse_payload(const char *payload, char batch_id[PAYOUT_ID_MAX + 1], int64_t *idx,
			  char intent_id[PAYOUT_INTENT_ID_MAX + 1])
{
	json_t *root = json_loads(payload, 0, NULL);
	json_t *b = json_object_get(root, "batch_id"), *i = json_object_get(root, "idx");
	json_t *it = json_object_get(root, "intent_id");
	bool ok = json_is_string(b) && json_string_length(b) > 0 &&
		  json_string_length(b) <= PAYOUT_ID_MAX && json_is_integer(i) &&
		  json_integer_value(i) >= 0 && json_integer_value(i) < PAYOUT_MAX_ITEMS;

	if (ok && intent_id)
		ok = json_is_string(it) && json_string_length(it) > 0 &&
		     json_string_length(it) <= PAYOUT_INTENT_ID_MAX;
	if (ok) {
		snprintf(batch_id, PAYOUT_ID_MAX + 1, "%s", json_string_value(b));
		*idx = (int64_t)json_integer_value(i);
		if (intent_id)
			snprintf(intent_id, PAYOUT_INTENT_ID_MAX + 1, "%s", json_string_value(it));
	}
	json_decref(root);
	return ok;
}

/* ---- enqueue (the approval unit) ---- */

/* {"batch_id":..,"idx":..} and, for a confirm job, "intent_id" into out
 * (PAYLOAD_MAX bytes with the NUL). */
static enum st_rc payload_of(const char *batch_id, int64_t idx, const char *intent_id,
			     char out[PAYLOAD_MAX])
{
	struct buf b = BUF_INIT(PAYLOAD_MAX - 1);
	struct json_writer w;

	jw_begin(&w, &b);
	jw_str(&w, "batch_id", batch_id);
	jw_i64(&w, "idx", idx);
	if (intent_id)
		jw_str(&w, "intent_id", intent_id);
	return jw_end_copy(&w, out);
}

enum st_rc payout_job_enqueue_batch(struct tx *tx, const struct settled *app, const char *batch_id,
				    int64_t n, int64_t *enqueued)
{
	char payload[PAYLOAD_MAX], key[PAYOUT_ID_MAX + 64];
	struct job_spec spec = {
		.queue = PAYOUT_JOB_QUEUE,
		.kind = PAYOUT_EXECUTE_KIND,
		.payload = payload,
		.unique_key = key,
		.max_attempts = app->cfg->job_max_attempts,
	};
	int64_t count = 0;
	enum st_rc rc = ST_OK;

	for (int64_t i = 0; i < n && rc == ST_OK; i++) {
		bool inserted = false;

		rc = payload_of(batch_id, i, NULL, payload);
		if (rc)
			break;
		snprintf(key, sizeof(key), PAYOUT_EXECUTE_KIND ":%s:%lld", batch_id, (long long)i);
		rc = queue_enqueue_spec(tx, &spec, NULL, &inserted);
		count += inserted;
	}
	if (rc == ST_OK && enqueued)
		*enqueued = count;
	return rc;
}

static enum st_rc enqueue_confirm(struct tx *tx, const struct settled *app, const char *batch_id,
				  int64_t idx, const char *intent_id)
{
	char payload[PAYLOAD_MAX], key[PAYOUT_INTENT_ID_MAX + 32];
	struct job_spec spec = {
		.queue = PAYOUT_JOB_QUEUE,
		.kind = PAYOUT_CONFIRM_KIND,
		.payload = payload,
		.unique_key = key,
		.run_at = tx_now_ms(tx) + confirm_delay(app),
		.max_attempts = app->cfg->job_max_attempts,
	};
	enum st_rc rc = payload_of(batch_id, idx, intent_id, payload);

	if (rc)
		return rc;
	snprintf(key, sizeof(key), PAYOUT_CONFIRM_KIND ":%s", intent_id);
	return queue_enqueue_spec(tx, &spec, NULL, NULL);
}

/* ---- payout.execute ---- */

struct exec_effect {
	const struct settled *app;
	char batch_id[PAYOUT_ID_MAX + 1];
	int64_t idx;
	int64_t job_id;
	char actor[INTENT_ACTOR_MAX + 1];
	struct payout_item item;
	/* what the unit did (reset each run: a unit may run more than once) */
	bool submitted, failed, completed;
	const char *reason;
	struct intent it;
};

/* In a savepoint, so a refusal (or a store error on PostgreSQL) leaves the
 * job's unit usable for recording the item's failure. */
static enum st_rc create_submit_unit(struct tx *tx, void *arg)
{
	struct exec_effect *e = arg;
	char ref[TX_HASH_LEN + 1];
	enum st_rc rc;

	struct payout_batch b;

	rc = intent_payout_create(tx, e->item.wallet, e->item.amount, e->actor, &e->it, NULL);
	if (rc)
		return rc;
	/* The payout's intent is the batch's client's, like the batch. */
	rc = payout_batch_get(tx, e->batch_id, &b);
	if (rc == ST_OK)
		rc = intent_set_owner(tx, e->it.id, b.client_id);
	if (rc)
		return rc;
	payout_item_rail_ref(e->batch_id, e->idx, ref);
	return intent_record(tx, e->it.id, ref, e->actor, &e->it);
}

static enum st_rc exec_effect_unit(struct tx *tx, void *arg)
{
	struct exec_effect *e = arg;
	enum st_rc rc;

	e->submitted = e->failed = e->completed = false;
	e->reason = NULL;
	rc = payout_item_get(tx, e->batch_id, e->idx, &e->item);
	if (rc)
		return rc;
	if (e->item.status != PAYOUT_ITEM_QUEUED)
		return ST_OK; /* executed already (or not approved): nothing to do */
	rc = tx_nested(tx, create_submit_unit, e);
	if (rc == ST_NOT_FOUND)
		e->reason = "unknown_wallet";
	else if (rc == ST_UNPROCESSABLE)
		e->reason = "insufficient_funds";
	else if (rc)
		return rc;
	if (e->reason) {
		rc = payout_item_finish(tx, e->batch_id, e->idx, PAYOUT_ITEM_FAILED, e->reason, e->job_id,
					&e->completed);
		e->failed = rc == ST_OK;
		return rc;
	}
	rc = payout_item_submitted(tx, e->batch_id, e->idx, e->it.id, e->job_id);
	if (rc == ST_OK)
		rc = enqueue_confirm(tx, e->app, e->batch_id, e->idx, e->it.id);
	e->submitted = rc == ST_OK;
	return rc;
}

/* After exec_effect_unit's commit: what job_commit answered. Owns e. */
static enum st_rc exec_after(struct job_ctx *ctx, void *arg, enum st_rc rc)
{
	struct exec_effect *e = arg;
	struct settled *app = ctx->app;

	if (rc) {
		if (!ctx->lost) {
			if (rc == ST_NOT_FOUND)
				ctx->permanent = true;
			rc = job_failf(ctx, rc, "payout %s/%lld: %s", e->batch_id, (long long)e->idx,
				       st_rc_str(rc));
		}
		goto out;
	}
	if (e->submitted) {
		intent_count(app->m.intents, INTENT_PENDING, 1);
		intent_count(app->m.intents, INTENT_LOCKED, 1);
		intent_count(app->m.intents, INTENT_SUBMITTED, 1);
		worker_pool_nudge(app->workers);
	}
	if (e->failed) {
		count_payout(app, PAYOUT_ITEM_FAILED);
		job_logf(ctx, LOG_INFO, "payout %s/%lld failed: %s", e->batch_id, (long long)e->idx,
			 e->reason);
	}
out:
	free(e);
	return rc;
}

enum st_rc payout_execute_job(struct job_ctx *ctx)
{
	struct exec_effect *e = calloc(1, sizeof(*e));

	if (!e)
		return job_failf(ctx, ST_NOMEM, "out of memory");
	e->app = ctx->app;
	e->job_id = ctx->job->id;
	if (!parse_payload(ctx->job->payload, e->batch_id, &e->idx, NULL)) {
		free(e);
		ctx->permanent = true;
		return job_failf(ctx, ST_INVALID, "bad payout.execute payload: %s", ctx->job->payload);
	}
	actor_of(ctx, e->actor);
	/* exec_after runs once the worker's batch unit decided; it owns e. */
	return job_commit_later(ctx, exec_effect_unit, e, exec_after);
}

/* ---- payout.confirm ---- */

struct confirm_effect {
	char batch_id[PAYOUT_ID_MAX + 1];
	int64_t idx;
	char intent_id[PAYOUT_INTENT_ID_MAX + 1];
	char actor[INTENT_ACTOR_MAX + 1];
	bool settle;                 /* the verdict (when the intent still waits for one) */
	const char *reason;
	/* what the unit did */
	bool applied, confirmed, item_done, completed;
	struct intent it;
	struct payout_item item;
};

static enum st_rc read_unit(struct tx *tx, void *arg)
{
	struct confirm_effect *e = arg;
	enum st_rc rc = intent_get(tx, e->intent_id, &e->it);

	return rc ? rc : payout_item_get(tx, e->batch_id, e->idx, &e->item);
}

static bool awaiting_rail(const struct intent *it)
{
	return it->status == INTENT_SUBMITTED || it->status == INTENT_CONFIRMED;
}

/* Applies the verdict if the intent still waits for one, then brings the
 * item in line with the intent's final status (which may have been reached
 * by someone else: an operator, the stuck sweeper). */
static enum st_rc confirm_effect_unit(struct tx *tx, void *arg)
{
	struct confirm_effect *e = arg;
	enum st_rc rc;

	e->item_done = e->completed = false;
	rc = intent_apply_verdict(tx, e->intent_id, e->actor, e->settle, e->reason, &e->it,
				  &e->confirmed, &e->applied);
	if (rc)
		return rc;
	if (!intent_status_terminal(e->it.status))
		return ST_OK;
	rc = payout_item_get(tx, e->batch_id, e->idx, &e->item);
	if (rc || payout_item_terminal(e->item.status))
		return rc;
	if (e->it.status == INTENT_SETTLED)
		rc = payout_item_finish(tx, e->batch_id, e->idx, PAYOUT_ITEM_SETTLED, NULL, 0, &e->completed);
	else
		rc = payout_item_finish(tx, e->batch_id, e->idx, PAYOUT_ITEM_FAILED,
					e->it.failure_reason[0] ? e->it.failure_reason : "failed", 0,
					&e->completed);
	if (rc == ST_OK) {
		e->item_done = true;
		e->item.status = e->it.status == INTENT_SETTLED ? PAYOUT_ITEM_SETTLED : PAYOUT_ITEM_FAILED;
	}
	return rc;
}

/* After confirm_effect_unit's commit: what job_commit answered. Owns e. */
static enum st_rc confirm_after(struct job_ctx *ctx, void *arg, enum st_rc rc)
{
	struct confirm_effect *e = arg;
	struct settled *app = ctx->app;

	if (rc) {
		if (!ctx->lost)
			rc = job_failf(ctx, rc, "cannot %s payout %s/%lld (intent %s): %s",
				       e->settle ? "settle" : "fail", e->batch_id, (long long)e->idx,
				       e->intent_id, st_rc_str(rc));
		goto out;
	}
	if (e->applied) {
		if (e->confirmed)
			intent_count(app->m.intents, INTENT_CONFIRMED, 1);
		/* Not observed in settled_settlement_duration_seconds: that
		 * histogram is the claims' (created -> SETTLED). */
		intent_observe(app->m.intents, NULL, &e->it);
	}
	if (e->item_done)
		count_payout(app, e->item.status);
	if (e->completed)
		job_logf(ctx, LOG_INFO, "payout batch %s completed", e->batch_id);
out:
	free(e);
	return rc;
}

enum st_rc payout_confirm_job(struct job_ctx *ctx)
{
	struct settled *app = ctx->app;
	struct confirm_effect e = { .settle = true }, *l;
	struct buf why = BUF_INIT(512);
	struct rail_tx rt;
	enum rail_result verdict;
	const char *reason = NULL;
	char item_ref[PAYOUT_ID_MAX + 24];
	enum st_rc rc;

	if (!parse_payload(ctx->job->payload, e.batch_id, &e.idx, e.intent_id)) {
		ctx->permanent = true;
		return job_failf(ctx, ST_INVALID, "bad payout.confirm payload: %s", ctx->job->payload);
	}
	actor_of(ctx, e.actor);
	rc = store_read(app->store, read_unit, &e);
	if (rc == ST_NOT_FOUND) {
		ctx->permanent = true;
		return job_failf(ctx, rc, "payout %s/%lld: intent %s or item missing", e.batch_id,
				 (long long)e.idx, e.intent_id);
	}
	if (rc)
		return job_failf(ctx, rc, "cannot read payout %s/%lld: %s", e.batch_id, (long long)e.idx,
				 st_rc_str(rc));

	if (awaiting_rail(&e.it)) {
		snprintf(item_ref, sizeof(item_ref), "%s:%lld", e.batch_id, (long long)e.idx);
		rt = (struct rail_tx){ .intent_id = e.intent_id, .tx_hash = e.it.tx_hash,
				       .wallet = e.it.wallet, .amount = e.it.amount, .ref = item_ref,
				       .submitted_at = e.it.updated_at };
		verdict = rail_check_traced(app->payout_rail ? app->payout_rail : app->rail, &ctx->span,
					    &rt, &reason, &why);
		switch (verdict) {
		case RAIL_CONFIRMED:
			break;
		case RAIL_REJECTED:
			e.settle = false;
			e.reason = reason ? reason : "rail_rejected";
			job_logf(ctx, LOG_WARN, "payout %s rejected: %s", item_ref, why.ptr);
			break;
		case RAIL_PENDING:
			ctx->retry_in_ms = confirm_delay(app) < 100 ? 100 : confirm_delay(app);
			rc = job_failf(ctx, ST_UNAVAILABLE, "rail: not yet confirmed: %s", why.ptr);
			buf_release(&why);
			return rc;
		case RAIL_ERROR:
		default:
			rc = job_failf(ctx, ST_UNAVAILABLE, "%s", why.len ? why.ptr : "rail error");
			buf_release(&why);
			return rc;
		}
	} else if (payout_item_terminal(e.item.status)) {
		buf_release(&why);
		return ST_OK; /* nothing left to do: a duplicate job */
	}
	buf_release(&why);

	/* confirm_after runs once the worker's batch unit decided; it owns
	 * the copy. */
	l = malloc(sizeof(*l));
	if (!l)
		return job_failf(ctx, ST_NOMEM, "out of memory");
	*l = e;
	return job_commit_later(ctx, confirm_effect_unit, l, confirm_after);
}

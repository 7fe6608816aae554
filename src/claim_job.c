/* claim_job.c — the claim confirmation job (see claim_job.h).
 *
 * The rail is asked on the worker thread, outside any transaction (a real
 * rail does network I/O); only the verdict's effect runs in a write unit,
 * together with the job's completion (job_commit_later: in the worker's
 * batch unit, under the job's own savepoint), so it applies at most
 * once even if the job is retried or its lease stolen. The effect re-reads
 * the intent inside the unit and does nothing when it already left
 * SUBMITTED/CONFIRMED (a duplicate job, an operator's failure): the intent
 * state machine is the second fence. */
#include "claim_job.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "intent.h"
#include "json_out.h"
#include "log.h"
#include "queue.h"
#include "rail.h"
#include "settled.h"
#include "banned.h"

enum st_rc claim_job_payload(const char *intent_id, char out[CLAIM_JOB_PAYLOAD_MAX])
{
	struct buf b = BUF_INIT(CLAIM_JOB_PAYLOAD_MAX - 1);
	struct json_writer w;

	jw_begin(&w, &b);
	jw_str(&w, "intent_id", intent_id);
	return jw_end_copy(&w, out);
}

enum st_rc claim_job_enqueue(struct tx *tx, const struct settled *app, const char *intent_id,
			     int64_t generation)
{
	char payload[CLAIM_JOB_PAYLOAD_MAX], key[LEDGER_ID_MAX + 64];
	int64_t delay = app->rail ? rail_confirm_delay_ms(app->rail) : app->cfg->sim_confirm_ms;
	struct job_spec spec = {
		.queue = CLAIM_JOB_QUEUE,
		.kind = CLAIM_JOB_KIND,
		.payload = payload,
		.unique_key = key,
		.run_at = tx_now_ms(tx) + (delay > 0 ? delay : 0),
		.max_attempts = app->cfg->job_max_attempts,
	};

	enum st_rc rc = claim_job_payload(intent_id, payload);

	if (rc)
		return rc;
	if (generation > 0)
		snprintf(key, sizeof(key), CLAIM_JOB_KIND ":%s:%lld", intent_id, (long long)generation);
	else
		snprintf(key, sizeof(key), CLAIM_JOB_KIND ":%s", intent_id);
	return queue_enqueue_spec(tx, &spec, NULL, NULL);
}

/* ---- the handler ---- */

struct claim_effect {
	const char *intent_id;
	char actor[INTENT_ACTOR_MAX + 1];
	bool settle;               /* else: fail with reason */
	const char *reason;
	bool confirmed, applied;   /* what the unit did */
	struct intent it;
};

static enum st_rc read_intent_unit(struct tx *tx, void *arg)
{
	struct claim_effect *e = arg;

	return intent_get(tx, e->intent_id, &e->it);
}

static enum st_rc effect_unit(struct tx *tx, void *arg)
{
	struct claim_effect *e = arg;

	return intent_apply_verdict(tx, e->intent_id, e->actor, e->settle, e->reason, &e->it,
				    &e->confirmed, &e->applied);
}

/* Pending: this job completes and a fresh one is enqueued for later, so
 * waiting for confirmations spends no attempt (attempts and the DLQ are
 * for failures); the wait is bounded by SETTLED_STUCK_AFTER instead. */
struct recheck {
	const struct settled *app;
	const char *intent_id;
	int64_t run_at;
};

static enum st_rc recheck_unit(struct tx *tx, void *arg)
{
	struct recheck *r = arg;
	char payload[CLAIM_JOB_PAYLOAD_MAX], key[LEDGER_ID_MAX + 64];
	struct job_spec spec = {
		.queue = CLAIM_JOB_QUEUE,
		.kind = CLAIM_JOB_KIND,
		.payload = payload,
		.unique_key = key,
		.run_at = r->run_at,
		.max_attempts = r->app->cfg->job_max_attempts,
	};

	claim_job_payload(r->intent_id, payload);
	snprintf(key, sizeof(key), CLAIM_JOB_KIND ":%s:recheck:%lld", r->intent_id,
		 (long long)tx_now_ms(tx));
	return queue_enqueue_spec(tx, &spec, NULL, NULL);
}

/* The next check: at least the rail's delay, then a quarter of the time
 * already waited (exponential in effect), at most a minute. */
static int64_t recheck_delay(int64_t rail_delay, int64_t waited)
{
	int64_t d = waited / 4;

	if (d > 60000)
		d = 60000;
	if (d < rail_delay)
		d = rail_delay;
	return d < 100 ? 100 : d;
}

static bool payload_intent_id(const char *payload, char out[LEDGER_ID_MAX + 1])
{
	json_t *root = json_loads(payload, 0, NULL);
	json_t *id = json_object_get(root, "intent_id");
	bool ok = json_is_string(id) && json_string_length(id) > 0 &&
		  json_string_length(id) <= LEDGER_ID_MAX;

	if (ok)
		snprintf(out, LEDGER_ID_MAX + 1, "%s", json_string_value(id));
	json_decref(root);
	return ok;
}

/* A verdict's effect handed to the worker (job_commit_later): the effect
 * and what its after step needs, owned by claim_after. */
struct claim_later {
	struct claim_effect e;
	char intent_id[LEDGER_ID_MAX + 1];
};

/* After the verdict's unit: what job_commit answered for effect_unit. */
static enum st_rc claim_after(struct job_ctx *ctx, void *arg, enum st_rc rc)
{
	struct claim_later *l = arg;
	struct settled *app = ctx->app;

	if (rc == ST_OK && l->e.applied) {
		if (l->e.confirmed)
			intent_count(app->m.intents, INTENT_CONFIRMED, 1);
		intent_observe(app->m.intents, app->m.settlement_duration, &l->e.it);
	} else if (rc && !ctx->lost) {
		rc = job_failf(ctx, rc, "cannot %s intent %s: %s", l->e.settle ? "settle" : "fail",
			       l->intent_id, st_rc_str(rc));
	}
	free(l);
	return rc;
}

enum st_rc claim_confirm_job(struct job_ctx *ctx)
{
	struct settled *app = ctx->app;
	char intent_id[LEDGER_ID_MAX + 1];
	struct claim_effect e = { .intent_id = intent_id, .settle = true };
	struct claim_later *l;
	struct buf why = BUF_INIT(512);
	struct rail_tx rt;
	enum rail_result verdict;
	const char *reason = NULL;
	int64_t now, waited;
	enum st_rc rc;

	if (!payload_intent_id(ctx->job->payload, intent_id)) {
		ctx->permanent = true;
		return job_failf(ctx, ST_INVALID, "payload has no intent_id: %s", ctx->job->payload);
	}
	snprintf(e.actor, sizeof(e.actor), "job:%lld", (long long)ctx->job->id);
	rc = store_read_one(app->store, read_intent_unit, &e);
	if (rc == ST_NOT_FOUND) {
		ctx->permanent = true;
		return job_failf(ctx, ST_NOT_FOUND, "intent %s does not exist", intent_id);
	}
	if (rc)
		return job_failf(ctx, rc, "cannot read intent %s: %s", intent_id, st_rc_str(rc));
	if (e.it.status != INTENT_SUBMITTED && e.it.status != INTENT_CONFIRMED) {
		job_logf(ctx, LOG_DEBUG, "job %lld: intent %s is %s; nothing to confirm",
			 (long long)ctx->job->id, intent_id, intent_status_str(e.it.status));
		return ST_OK;
	}

	rt = (struct rail_tx){ .intent_id = intent_id, .tx_hash = e.it.tx_hash,
			       .wallet = e.it.wallet, .amount = e.it.amount,
			       .submitted_at = e.it.updated_at };
	verdict = rail_check_traced(app->rail, &ctx->span, &rt, &reason, &why);
	switch (verdict) {
	case RAIL_CONFIRMED:
		break;
	case RAIL_REJECTED:
		e.settle = false;
		e.reason = reason ? reason : "rail_rejected";
		job_logf(ctx, LOG_INFO, "intent %s: rail rejected %s: %s", intent_id, e.it.tx_hash,
			 why.ptr);
		break;
	case RAIL_PENDING:
		/* Not a verdict. Past SETTLED_STUCK_AFTER (since submission) it
		 * becomes one: the intent fails with what it was waiting for. */
		now = settled_now_ms(app);
		waited = now - e.it.updated_at;
		if (waited >= app->cfg->stuck_after_ms) {
			e.settle = false;
			e.reason = reason ? reason : "rail_not_confirmed";
			job_logf(ctx, LOG_INFO, "intent %s: still pending after %lld ms: %s", intent_id,
				 (long long)waited, why.ptr);
			break;
		}
		{
			struct recheck r = { .app = app, .intent_id = intent_id,
					     .run_at = now + recheck_delay(rail_confirm_delay_ms(app->rail),
									   waited) };

			job_logf(ctx, LOG_DEBUG, "intent %s: %s; next check in %lld ms", intent_id, why.ptr,
				 (long long)(r.run_at - now));
			buf_release(&why);
			rc = job_commit(ctx, recheck_unit, &r);
			if (rc && !ctx->lost)
				return job_failf(ctx, rc, "cannot schedule the next check of intent %s: %s",
						 intent_id, st_rc_str(rc));
			return rc;
		}
	case RAIL_ERROR:
	default:
		rc = job_failf(ctx, ST_UNAVAILABLE, "%s", why.len ? why.ptr : "rail error");
		buf_release(&why);
		return rc;
	}
	buf_release(&why);

	/* The verdict's effect goes in the worker's batch unit (one commit
	 * for many claims); claim_after runs once it is decided. */
	l = malloc(sizeof(*l));
	if (!l)
		return job_failf(ctx, ST_NOMEM, "out of memory");
	l->e = e;
	memcpy(l->intent_id, intent_id, sizeof(l->intent_id));
	l->e.intent_id = l->intent_id;
	return job_commit_later(ctx, effect_unit, l, claim_after);
}

/* stuck_sweep.c — the stuck-intent sweep (see stuck_sweep.h). */
#include "stuck_sweep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "claim_job.h"
#include "config.h"
#include "intent.h"
#include "log.h"
#include "metrics.h"
#include "queue.h"
#include "settled.h"
#include "worker.h"
#include "banned.h"

struct stuck_one {
	const struct settled *app;
	const char *id;
	bool locked;
	bool acted;
};

static enum st_rc stuck_one_unit(struct tx *tx, void *arg)
{
	struct stuck_one *o = arg;
	char payload[CLAIM_JOB_PAYLOAD_MAX];
	int64_t live = 0;
	enum st_rc rc;

	o->acted = false;
	if (o->locked) {
		rc = intent_fail(tx, o->id, "sweeper", "stuck_locked", NULL);
		o->acted = rc == ST_OK;
		return rc;
	}
	rc = claim_job_payload(o->id, payload);
	if (rc)
		return rc;
	rc = queue_count_payload(tx, CLAIM_JOB_KIND, payload,
				 (1u << JOB_AVAILABLE) | (1u << JOB_RUNNING) | (1u << JOB_DEAD), &live);
	if (rc || live)
		return rc;
	rc = claim_job_enqueue(tx, o->app, o->id, tx_now_ms(tx));
	o->acted = rc == ST_OK;
	return rc;
}

enum st_rc stuck_sweep_batch(struct tx *tx, const struct settled *app, struct stuck_sweep *s)
{
	struct intent_stuck *v = NULL;
	size_t n = 0;
	enum st_rc rc;

	s->seen = 0;
	rc = intent_list_stuck(tx, s->cutoff_ms, s->cur_at, s->cur_id, s->limit, &v, &n);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		struct stuck_one o = { .app = app, .id = v[i].id, .locked = v[i].locked };

		rc = tx_nested(tx, stuck_one_unit, &o);
		if (rc && rc != ST_CONFLICT && rc != ST_NOT_FOUND) {
			free(v);
			return rc;
		}
		if (o.acted && o.locked)
			s->failed++;
		else if (o.acted)
			s->requeued++;
		s->cur_at = v[i].updated_at;
		snprintf(s->cur_id, sizeof(s->cur_id), "%s", o.id);
	}
	s->seen = (int)n;
	free(v);
	return ST_OK;
}

struct stuck_call {
	const struct settled *app;
	struct stuck_sweep s;
};

static enum st_rc stuck_unit(struct tx *tx, void *arg)
{
	struct stuck_call *c = arg;

	return stuck_sweep_batch(tx, c->app, &c->s);
}

void stuck_sweep_run(struct settled *app, int batch_size)
{
	struct stuck_call c = { .app = app };
	enum st_rc rc;

	c.s.cutoff_ms = settled_now_ms(app) - app->cfg->stuck_after_ms;
	c.s.cur_at = INT64_MIN;
	c.s.limit = batch_size;
	do {
		int64_t failed = c.s.failed;

		rc = store_run(app->store, stuck_unit, &c);
		if (rc) {
			log_msg(&app->log, LOG_WARN, "stuck-intent sweep failed: %s", st_rc_str(rc));
			break;
		}
		if (c.s.failed > failed)
			intent_count(app->m.intents, INTENT_FAILED, (double)(c.s.failed - failed));
	} while (c.s.seen == c.s.limit);
	if (c.s.failed) {
		const char *const lv[] = { "failed" };

		metric_add(metric_series_get(app->m.stuck_intents, lv), (double)c.s.failed);
	}
	if (c.s.requeued) {
		const char *const lv[] = { "requeued" };

		metric_add(metric_series_get(app->m.stuck_intents, lv), (double)c.s.requeued);
		worker_pool_nudge(app->workers);
	}
	if (c.s.failed || c.s.requeued)
		log_msg(&app->log, LOG_WARN,
			"stuck intents: %lld LOCKED failed, %lld SUBMITTED re-enqueued for confirmation",
			(long long)c.s.failed, (long long)c.s.requeued);
}

/* rail.c — the rail registry and the built-in `sim` rail.
 *
 * The sim rail stands in for a chain: by the time the confirmation job runs
 * (enqueued SETTLED_SIM_CONFIRM_MS after submission) every transaction is
 * confirmed, except that each check fails with probability
 * SETTLED_SIM_FAIL_RATE, reported as RAIL_ERROR ("the rail could not be
 * reached"), which the job treats as a failed attempt: retried with backoff,
 * dead-lettered after max attempts. It never rejects a transaction, so the
 * intent stays SUBMITTED until the rail answers (or the operator acts). */
#include "rail.h"

#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "rail_evm.h"
#include "rail_http.h"
#include "trace.h"
#include "banned.h"

struct sim_rail {
	struct rail base;
	int64_t confirm_ms;
	double fail_rate;
	queue_rand_fn *rnd;
	void *rnd_arg;
};

static int64_t sim_confirm_delay(const struct rail *r)
{
	return ((const struct sim_rail *)r)->confirm_ms;
}

static enum rail_result sim_check(struct rail *r, const struct rail_tx *t, const char **reason,
				  struct buf *why)
{
	struct sim_rail *s = (struct sim_rail *)r;
	/* A uniform draw in [0, 1): the top 53 bits of a 64-bit value. */
	double u = (double)(s->rnd(s->rnd_arg) >> 11) * (1.0 / 9007199254740992.0);

	(void)reason;

	if (u < s->fail_rate) {
		buf_printf(why, "sim rail: injected failure for %s (SETTLED_SIM_FAIL_RATE=%g)",
			   t->tx_hash, s->fail_rate);
		return RAIL_ERROR;
	}
	return RAIL_CONFIRMED;
}

static void sim_free(struct rail *r)
{
	free(r);
}

static const struct rail_ops sim_ops = {
	.name = "sim",
	.confirm_delay_ms = sim_confirm_delay,
	.check = sim_check,
	.free = sim_free,
};

struct rail *rail_sim_new(int64_t confirm_ms, double fail_rate, queue_rand_fn *rnd, void *rnd_arg)
{
	struct sim_rail *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->base.ops = &sim_ops;
	s->confirm_ms = confirm_ms > 0 ? confirm_ms : 0;
	s->fail_rate = fail_rate < 0 ? 0 : fail_rate > 1 ? 1 : fail_rate;
	s->rnd = rnd ? rnd : queue_rand_default;
	s->rnd_arg = rnd_arg;
	return &s->base;
}

static enum st_rc sim_from_config(const struct config *cfg, struct rail **out, struct buf *err)
{
	*out = rail_sim_new(cfg->sim_confirm_ms, cfg->sim_fail_rate, NULL, NULL);
	if (*out)
		return ST_OK;
	buf_puts(err, "out of memory");
	return ST_NOMEM;
}

enum st_rc rail_new(const struct config *cfg, struct metrics *metrics, const struct logger *log,
		    struct rail **out, struct buf *err)
{
	*out = NULL;
	if (!strcmp(cfg->rail, "evm"))
		return rail_evm_new(cfg, metrics, log, out, err);
	return sim_from_config(cfg, out, err);
}

enum st_rc rail_payout_new(const struct config *cfg, struct rail **out, struct buf *err)
{
	*out = NULL;
	if (!strcmp(cfg->payout_rail, "http"))
		return rail_http_new(cfg, out, err);
	return sim_from_config(cfg, out, err);
}

json_t *rail_health(struct rail *r)
{
	if (r->ops->health)
		return r->ops->health(r);
	return json_pack("{s:s, s:s}", "name", r->ops->name, "status", "ok");
}

void rail_free(struct rail *r)
{
	if (r)
		r->ops->free(r);
}

const char *rail_result_str(enum rail_result r)
{
	switch (r) {
	case RAIL_CONFIRMED: return "confirmed";
	case RAIL_PENDING: return "pending";
	case RAIL_REJECTED: return "rejected";
	case RAIL_ERROR: return "error";
	}
	return "unknown";
}

/* t with traceparent set from sp: the W3C header alone, without the
 * stored form's tracestate. */
static void with_traceparent(const struct trace_span *sp, const struct rail_tx *t,
			     struct rail_tx *out, char tp[TRACE_CONTEXT_MAX])
{
	struct trace_ctx c;

	*out = *t;
	trace_span_ctx(sp, &c);
	trace_ctx_format(&c, tp);
	tp[TRACE_PARENT_LEN] = '\0';
	out->traceparent = tp;
}

enum rail_result rail_check_traced(struct rail *r, const struct trace_span *parent,
				   const struct rail_tx *t, const char **reason, struct buf *why)
{
	struct trace_span sp;
	struct rail_tx tt;
	char tp[TRACE_CONTEXT_MAX];
	enum rail_result v;

	if (!parent || !parent->span_id[0])
		return rail_check(r, t, reason, why);
	if (!parent->tr) {
		with_traceparent(parent, t, &tt, tp);
		return rail_check(r, &tt, reason, why);
	}
	trace_span_child(&sp, parent, "rail.check", TRACE_CLIENT);
	trace_span_set_str(&sp, "rpc.system", "settled.rail");
	trace_span_set_str(&sp, "rpc.method", "check");
	trace_span_set_str(&sp, "settled.rail.name", r->ops->name);
	trace_span_set_str(&sp, "settled.intent_id", t->intent_id);
	with_traceparent(&sp, t, &tt, tp);
	v = rail_check(r, &tt, reason, why);
	trace_span_set_str(&sp, "settled.rail.result", rail_result_str(v));
	if (v == RAIL_ERROR)
		trace_span_set_status(&sp, TRACE_ERROR, why->len ? why->ptr : "rail error");
	trace_span_end(&sp);
	return v;
}

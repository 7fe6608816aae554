/* routes_webhooks.c — signed webhook intake (SPEC section 9):
 *
 *   POST /api/commerce/webhook   Coinbase Commerce (X-CC-Webhook-Signature)
 *   POST /api/webhooks/stripe    Stripe (Stripe-Signature)
 *   POST /api/webhooks/standard  Standard Webhooks (webhook-id/-timestamp/-signature)
 *
 * Order of checks, each answered at once without a write:
 *   1. signature over the raw body (req_body, never the re-serialized JSON)
 *      against every active secret -> 401 invalid_signature;
 *   2. the signed timestamp (Stripe t, webhook-timestamp) within 5 minutes
 *      either way -> 401 stale_webhook (checked only once the signature is
 *      valid: an unsigned timestamp proves nothing);
 *   3. the event's id and type -> 400 invalid_event; for Coinbase, which
 *      signs no timestamp, event.created_at (RFC 3339) more than 5 minutes
 *      ahead is 401 stale_webhook, and more than 5 minutes behind is
 *      accepted as late (below).
 * Steps 1 and 2 are the handler's signature pass (ROUTE_SIGNED: the
 * dispatcher calls it with req_verifying() true before it parses the body
 * or charges a limit): a failure is charged to the
 * sender's failed authentications (auth_fail, past it 429), and only signed
 * deliveries reach the per-address webhook limit, so unsigned traffic never
 * spends the budget of genuine deliveries (docs/internals/webhooks.md).
 *
 * Late Coinbase events: Coinbase retries a failed delivery for days with
 * the same body, so the same created_at; refusing it as stale would lose
 * the payment. A valid signature proves the provider made the event, and
 * (provider, event id) is unique for ever (rows are never deleted), so
 * accepting it can pay at most once: a first delivery of any age is stored
 * and answered {"status":"accepted","late":true} (metric result "late", a
 * warning in the log); a redelivery of a known event is a duplicate.
 * Then one write unit stores the event (unique on provider + event id) and,
 * for a paying type, enqueues its processing job; 200 {"status":"accepted"}
 * goes out only once that is durable. A redelivery inserts nothing and is
 * answered 200 {"status":"duplicate"}. These routes are not ROUTE_IDEMPOTENT:
 * the provider's event id is the idempotency key.
 *
 * Metrics: settled_webhook_events_total{provider,result}, result one of
 * accepted, duplicate, bad_signature, stale, malformed. accepted and
 * duplicate are counted inside the unit (the request API has no
 * after-commit hook; see routes_claims.c for the same trade-off). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "http.h"
#include "metrics.h"
#include "route_table.h"
#include "settled.h"
#include "webhook.h"
#include "webhook_job.h"
#include "banned.h"

struct wh_req {
	struct settled *app;
	struct wh_intake in;       /* in.raw: req_body, borrowed until the request ends */
	int64_t late_ms;           /* Coinbase: how far created_at is behind; 0: fresh */
};

static void count(struct settled *app, enum wh_provider p, const char *result)
{
	const char *const lv[] = { webhook_provider_str(p), result };

	metrics_inc(app->m.webhook_events, lv);
}

static enum st_rc answer(const struct wh_req *r, bool inserted, struct resp *resp)
{
	struct json_writer w;

	resp_object_begin(resp, &w);
	jw_str(&w, "status", inserted ? "accepted" : "duplicate");
	if (inserted && r->late_ms)
		jw_bool(&w, "late", true);
	return resp_object_end(resp, &w);
}

/* Metrics and the late warning: the last thing a unit does. */
static void counted(const struct wh_req *r, bool inserted)
{
	count(r->app, r->in.p, !inserted ? "duplicate" : r->late_ms ? "late" : "accepted");
	if (inserted && r->late_ms)
		log_msg(&r->app->log, LOG_WARN,
			"webhook %s event %s accepted late: created %lld s before it arrived",
			webhook_provider_str(r->in.p), r->in.ev.id, (long long)(r->late_ms / 1000));
}

static enum st_rc intake_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct wh_req *r = arg;
	bool inserted = false;
	enum st_rc rc;

	rc = webhook_event_store(tx, &r->in, r->app->cfg->job_max_attempts, &inserted);
	if (rc == ST_OK)
		rc = answer(r, inserted, resp);
	if (rc == ST_OK)
		counted(r, inserted);
	return rc;
}

/* Deliveries the store's writer took in one batch, stored with one
 * multi-row INSERT of their events and one of their jobs instead of two
 * statements each (webhook_events_store_new). Only when every one is a new
 * event; a known one (a redelivery) or one event twice in the batch makes
 * this fail, and then each delivery runs intake_unit alone, which answers
 * it accepted or duplicate as before. */
static enum st_rc intake_merge(struct tx *tx, void *const *args, struct resp *const *resps,
			       const char *const *trace_contexts, int n)
{
	const struct wh_intake **in = calloc((size_t)n, sizeof(*in));
	struct wh_req *const *r = (struct wh_req *const *)args;
	enum st_rc rc = ST_NOMEM;

	if (!in)
		return rc;
	for (int i = 0; i < n; i++)
		in[i] = &r[i]->in;
	rc = webhook_events_store_new(tx, in, trace_contexts, n, r[0]->app->cfg->job_max_attempts);
	free(in);
	for (int i = 0; rc == ST_OK && i < n; i++)
		rc = answer(r[i], true, resps[i]);
	for (int i = 0; rc == ST_OK && i < n; i++)
		counted(r[i], true);
	return rc;
}

static const struct req_merge intake_merged = { .run = intake_merge };

static enum st_rc refuse(struct req_ctx *rq, enum wh_provider p, enum wh_verdict v)
{
	if (v == WH_STALE) {
		count(req_app(rq), p, "stale");
		return req_error(rq, ERR_STALE_WEBHOOK, NULL);
	}
	count(req_app(rq), p, "bad_signature");
	return req_error(rq, ERR_INVALID_SIGNATURE, NULL);
}

/* The signature pass (req_verifying): signature and signed timestamp; a
 * refusal is answered, else nothing is. The secrets were keyed at start-up
 * (app->wh_keys, shared read-only; each check works on its own copy). */
static enum st_rc verify(struct req_ctx *rq, enum wh_provider p)
{
	const struct wh_keys *k = &req_app(rq)->wh_keys->p[p];
	int64_t now = req_now_ms(rq);
	enum wh_verdict v;
	const char *raw;
	size_t len = 0;

	raw = req_body(rq, &len);
	switch (p) {
	case WH_COINBASE:
		v = webhook_verify_coinbase_keyed(req_header(rq, "X-CC-Webhook-Signature"), raw,
						  len, k);
		break;
	case WH_STRIPE:
		v = webhook_verify_stripe_keyed(req_header(rq, "Stripe-Signature"), raw, len, k,
						now, NULL);
		break;
	default:
		v = webhook_verify_standard_keyed(req_header(rq, "webhook-id"),
						  req_header(rq, "webhook-timestamp"),
						  req_header(rq, "webhook-signature"), raw, len, k,
						  now);
		break;
	}
	return v == WH_VALID ? ST_OK : refuse(rq, p, v);
}

/* Runs after verify passed and the body parsed as a JSON object. */
static enum st_rc intake(struct req_ctx *rq, enum wh_provider p)
{
	struct settled *app = req_app(rq);
	int64_t now = req_now_ms(rq);
	struct buf why = BUF_INIT(256);
	struct wh_event ev;
	struct wh_payment pay;
	bool have_pay = false;
	struct wh_req *r;
	const char *raw;
	size_t len = 0;
	enum st_rc rc;

	raw = req_body(rq, &len);
	r = req_alloc(rq, sizeof(*r));
	if (!r)
		return ST_NOMEM;
	if (webhook_event_parse(p, req_json(rq), req_header(rq, "webhook-id"), &ev, &why)) {
		count(app, p, "malformed");
		rc = req_error_msg(rq, ERR_INVALID_EVENT, why.ptr, NULL);
		buf_release(&why);
		return rc;
	}
	buf_release(&why);
	r->late_ms = 0;
	if (p == WH_COINBASE && !webhook_fresh(ev.created_ms, now)) {
		if (ev.created_ms > now)
			return refuse(rq, p, WH_STALE); /* from the future: wait for it */
		r->late_ms = now - ev.created_ms;
	}

	r->app = app;
	/* The payment, parsed here once for the processing job (which, when
	 * it does not parse, reads the stored body and fails with why). */
	if (ev.pays) {
		struct buf pay_why = BUF_INIT(256);

		have_pay = !webhook_payment_parse(p, req_json(rq), app->cfg->asset, &pay, &pay_why);
		buf_release(&pay_why);
	}
	rc = webhook_intake_prepare(&r->in, p, &ev, have_pay ? &pay : NULL, raw, len, req_id(rq));
	if (rc)
		return rc;
	return req_commit_merged(rq, &intake_merged, intake_unit, r);
}

enum st_rc route_webhook_coinbase(struct req_ctx *rq)
{
	return req_verifying(rq) ? verify(rq, WH_COINBASE) : intake(rq, WH_COINBASE);
}

enum st_rc route_webhook_stripe(struct req_ctx *rq)
{
	return req_verifying(rq) ? verify(rq, WH_STRIPE) : intake(rq, WH_STRIPE);
}

enum st_rc route_webhook_standard(struct req_ctx *rq)
{
	return req_verifying(rq) ? verify(rq, WH_STANDARD) : intake(rq, WH_STANDARD);
}

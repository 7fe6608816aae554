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
 *      signs no timestamp, event.created_at (RFC 3339) is the timestamp of
 *      step 2 and is checked here.
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
#include <string.h>

#include "http.h"
#include "metrics.h"
#include "routes.h"
#include "settled.h"
#include "webhook.h"
#include "webhook_job.h"
#include "banned.h"

struct wh_req {
	struct settled *app;
	enum wh_provider p;
	struct wh_event ev;
	const char *raw;           /* req_body: borrowed until the request ends */
	size_t len;
	const char *request_id;
};

static void count(struct settled *app, enum wh_provider p, const char *result)
{
	const char *const lv[] = { webhook_provider_str(p), result };

	metrics_inc(app->m.webhook_events, lv);
}

static enum st_rc intake_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct wh_req *r = arg;
	struct json_writer w;
	bool inserted = false;
	enum st_rc rc;

	rc = webhook_event_store(tx, r->p, &r->ev, r->raw, r->len, r->request_id,
				 r->app->cfg->job_max_attempts, &inserted);
	if (rc)
		return rc;
	count(r->app, r->p, inserted ? "accepted" : "duplicate");
	resp_object_begin(resp, &w);
	jw_str(&w, "status", inserted ? "accepted" : "duplicate");
	return resp_object_end(resp, &w, 200);
}

static enum st_rc refuse(struct req_ctx *rq, enum wh_provider p, enum wh_verdict v)
{
	if (v == WH_STALE) {
		count(req_app(rq), p, "stale");
		return req_fail(rq, ST_UNAUTHORIZED, "stale_webhook",
				"the webhook's timestamp is more than 5 minutes away from the server's clock");
	}
	count(req_app(rq), p, "bad_signature");
	return req_fail(rq, ST_UNAUTHORIZED, "invalid_signature",
			"the webhook signature is missing or does not match");
}

static enum st_rc intake(struct req_ctx *rq, enum wh_provider p)
{
	struct settled *app = req_app(rq);
	const struct config *cfg = app->cfg;
	int64_t now = req_now_ms(rq);
	struct buf why = BUF_INIT(256);
	struct wh_req *r;
	enum wh_verdict v;
	const char *raw;
	size_t len = 0;
	enum st_rc rc;

	raw = req_body(rq, &len);
	switch (p) {
	case WH_COINBASE:
		v = webhook_verify_coinbase(req_header(rq, "X-CC-Webhook-Signature"), raw, len,
					    cfg->webhook_secrets, cfg->n_webhook_secrets);
		break;
	case WH_STRIPE:
		v = webhook_verify_stripe(req_header(rq, "Stripe-Signature"), raw, len,
					  cfg->stripe_secrets, cfg->n_stripe_secrets, now, NULL);
		break;
	default:
		v = webhook_verify_standard(req_header(rq, "webhook-id"),
					    req_header(rq, "webhook-timestamp"),
					    req_header(rq, "webhook-signature"), raw, len,
					    cfg->standard_secrets, cfg->n_standard_secrets, now);
		break;
	}
	if (v != WH_VALID)
		return refuse(rq, p, v);

	r = req_alloc(rq, sizeof(*r));
	if (!r)
		return ST_NOMEM;
	if (webhook_event_parse(p, req_json(rq), req_header(rq, "webhook-id"), &r->ev, &why)) {
		count(app, p, "malformed");
		rc = req_fail(rq, ST_INVALID, "invalid_event", why.ptr);
		buf_release(&why);
		return rc;
	}
	buf_release(&why);
	if (p == WH_COINBASE && !webhook_fresh(r->ev.created_ms, now))
		return refuse(rq, p, WH_STALE);

	r->app = app;
	r->p = p;
	r->raw = raw;
	r->len = len;
	r->request_id = req_id(rq);
	return req_commit(rq, intake_unit, r);
}

enum st_rc route_webhook_coinbase(struct req_ctx *rq)
{
	return intake(rq, WH_COINBASE);
}

enum st_rc route_webhook_stripe(struct req_ctx *rq)
{
	return intake(rq, WH_STRIPE);
}

enum st_rc route_webhook_standard(struct req_ctx *rq)
{
	return intake(rq, WH_STANDARD);
}

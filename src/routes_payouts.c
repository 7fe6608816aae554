/* routes_payouts.c — payout batches (SPEC section 8;
 * docs/internals/payouts.md):
 *
 *   POST /api/v2/payouts/batch {reference, items:[{wallet, amount}]}
 *        API key (or admin token) -> 201 the batch, PENDING_APPROVAL
 *   POST /api/v2/payouts/batch/{id}/approve
 *        admin -> 200 the batch, APPROVED, one payout.execute job per item
 *   GET  /api/v2/payouts/batch/{id}?after=&limit=
 *        API key (or admin) -> the batch, totals by item status, the items
 *
 * Every item is validated before anything is stored: the first bad one
 * answers 400 with its index ("index") and field ("field":
 * "items[3].amount"). A batch is visible only to the client that created
 * it (and to the admin): another client gets 404, as if it did not exist,
 * so batch ids leak nothing. Approving twice answers 409
 * invalid_transition and enqueues nothing (the execute jobs' unique keys
 * would refuse duplicates anyway).
 * Error codes: invalid_reference, invalid_items, too_many_items,
 * invalid_item, invalid_wallet, invalid_amount, invalid_parameter (400);
 * batch_not_found (404); duplicate_reference, invalid_transition (409). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "errors.h"
#include "http.h"
#include "input.h"
#include "intent.h"
#include "payout.h"
#include "payout_job.h"
#include "route_table.h"
#include "settled.h"
#include "validate.h"
#include "worker.h"
#include "present.h"
#include "banned.h"

static json_t *batch_json(const struct payout_batch *b)
{
	return json_pack("{s:s, s:s, s:s, s:I, s:o, s:I, s:o, s:o, s:o}", "id", b->id, "reference",
			 b->reference, "status", payout_batch_status_str(b->status), "item_count",
			 (json_int_t)b->item_count, "total_amount", present_amount(b->total_amount),
			 "remaining", (json_int_t)b->remaining, "created_at", present_time(b->created_at),
			 "approved_at", present_time(b->approved_at), "completed_at",
			 present_time(b->completed_at));
}

static enum st_rc batch_not_found(struct resp *resp)
{
	return unit_error(resp, ERR_BATCH_NOT_FOUND, NULL);
}

/* ---- POST /api/v2/payouts/batch ---- */

struct create_req {
	char client_id[PAYOUT_CLIENT_MAX + 1];
	char reference[PAYOUT_REFERENCE_MAX + 1];
	struct payout_item_in *items;
	size_t n;
};

static enum st_rc create_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct create_req *r = arg;
	struct payout_batch b;
	char location[96];
	enum st_rc rc;

	rc = payout_batch_create(tx, r->client_id, r->reference, r->items, r->n, &b);
	if (rc == ST_CONFLICT)
		return unit_error(resp, ERR_DUPLICATE_REFERENCE, json_pack("{s:s}", "reference", r->reference));
	if (rc)
		return rc;
	snprintf(location, sizeof(location), "/api/v2/payouts/batch/%s", b.id);
	rc = resp_location(resp, location);
	return rc ? rc : resp_ok(resp, batch_json(&b));
}

/* A reference: 1..PAYOUT_REFERENCE_MAX bytes, no control characters. */
static bool reference_valid(const char *s, size_t len)
{
	if (len == 0 || len > PAYOUT_REFERENCE_MAX || strlen(s) != len)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

/* Answers e for item i: "field" names the item, or its member (the row's
 * field), as "items[3].amount"; "index" is i. */
static enum st_rc item_fail(struct req_ctx *rq, size_t i, enum err_id e)
{
	const char *member = err_row(e)->field;
	char field[48];

	if (member)
		snprintf(field, sizeof(field), "items[%zu].%s", i, member);
	else
		snprintf(field, sizeof(field), "items[%zu]", i);
	return req_error(rq, e, json_pack("{s:s, s:I}", "field", field, "index", (json_int_t)i));
}

enum st_rc route_payout_batch_create(struct req_ctx *rq)
{
	json_t *body = req_json(rq);
	json_t *ref = json_object_get(body, "reference");
	json_t *items = json_object_get(body, "items");
	struct create_req *r = req_alloc(rq, sizeof(*r));
	int64_t total = 0;
	size_t n;

	if (!r)
		return ST_NOMEM;
	if (!json_is_string(ref) || !reference_valid(json_string_value(ref), json_string_length(ref)))
		return req_error(rq, ERR_INVALID_REFERENCE, NULL);
	if (!json_is_array(items) || json_array_size(items) == 0)
		return req_error(rq, ERR_INVALID_ITEMS, NULL);
	n = json_array_size(items);
	if (n > PAYOUT_MAX_ITEMS)
		return req_error(rq, ERR_TOO_MANY_ITEMS, NULL);
	r->items = req_alloc(rq, n * sizeof(*r->items));
	if (!r->items)
		return ST_NOMEM;
	for (size_t i = 0; i < n; i++) {
		json_t *it = json_array_get(items, i);
		json_t *w = json_object_get(it, "wallet"), *a = json_object_get(it, "amount");

		if (!json_is_object(it))
			return item_fail(rq, i, ERR_INVALID_ITEM);
		if (input_wallet(w, r->items[i].wallet))
			return item_fail(rq, i, ERR_INVALID_WALLET);
		if (input_amount(a, &r->items[i].amount))
			return item_fail(rq, i, ERR_INVALID_AMOUNT);
		if (__builtin_add_overflow(total, r->items[i].amount, &total))
			return item_fail(rq, i, ERR_BATCH_TOTAL_OVERFLOW);
	}
	r->n = n;
	snprintf(r->client_id, sizeof(r->client_id), "%s", req_client_id(rq));
	snprintf(r->reference, sizeof(r->reference), "%s", json_string_value(ref));
	return req_commit(rq, create_unit, r);
}

/* ---- POST /api/v2/payouts/batch/{id}/approve ---- */

struct approve_req {
	char id[PAYOUT_ID_MAX + 1];
	char approver[PAYOUT_CLIENT_MAX + 1];
	const struct settled *app;
};

static enum st_rc approve_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct approve_req *r = arg;
	struct payout_batch b;
	int64_t enqueued = 0;
	json_t *body;
	enum st_rc rc;

	rc = payout_batch_approve(tx, r->id, r->approver, &b);
	if (rc == ST_NOT_FOUND)
		return batch_not_found(resp);
	if (rc == ST_CONFLICT) {
		json_t *extra = json_pack("{s:s, s:s}", "batch_id", r->id, "to", "APPROVED");

		if (payout_batch_get(tx, r->id, &b) == ST_OK)
			json_object_set_new(extra, "status", json_string(payout_batch_status_str(b.status)));
		return unit_error(resp, ERR_BATCH_NOT_PENDING, extra);
	}
	if (rc)
		return rc;
	rc = payout_job_enqueue_batch(tx, r->app, b.id, b.item_count, &enqueued);
	if (rc)
		return rc;
	body = batch_json(&b);
	if (!body)
		return ST_NOMEM;
	json_object_set_new(body, "enqueued", json_integer((json_int_t)enqueued));
	rc = resp_ok(resp, body);
	if (rc == ST_OK) {
		/* Counted before the commit, like the claim routes' metrics. */
		const char *const none[] = { NULL };

		metrics_observe(r->app->m.payout_approval, none,
				(double)(b.approved_at - b.created_at) / 1000.0);
		worker_pool_nudge(r->app->workers);
	}
	return rc;
}

enum st_rc route_payout_batch_approve(struct req_ctx *rq)
{
	const char *id = req_param(rq, "id");
	struct approve_req *r;

	if (!id || !*id || strlen(id) > PAYOUT_ID_MAX)
		return req_error(rq, ERR_BATCH_NOT_FOUND, NULL);
	r = req_alloc(rq, sizeof(*r));
	if (!r)
		return ST_NOMEM;
	snprintf(r->id, sizeof(r->id), "%s", id);
	snprintf(r->approver, sizeof(r->approver), "%s", req_client_id(rq));
	r->app = req_app(rq);
	return req_commit(rq, approve_unit, r);
}

/* ---- GET /api/v2/payouts/batch/{id} ---- */

struct batch_read {
	const char *id;
	const char *client_id;
	int64_t after;
	int64_t limit;
	json_t *out;
};

static json_t *item_json(const struct payout_item *it)
{
	return json_pack("{s:I, s:s, s:o, s:s, s:o, s:o, s:o}", "idx", (json_int_t)it->idx, "wallet",
			 it->wallet, "amount", present_amount(it->amount), "status",
			 payout_item_status_str(it->status), "intent_id",
			 it->intent_id[0] ? json_string(it->intent_id) : json_null(), "error",
			 it->error[0] ? json_string(it->error) : json_null(), "updated_at",
			 present_time(it->updated_at));
}

/* A SUBMITTED item whose intent already ended (its payout.confirm job is
 * still to run, or sits in the DLQ while an operator or the stuck sweeper
 * finished the intent) is shown with the intent's final status: the
 * intent is where the money is. */
static enum st_rc effective_status(struct tx *tx, struct payout_item *it)
{
	struct intent in;
	enum st_rc rc;

	if (it->status != PAYOUT_ITEM_SUBMITTED || !it->intent_id[0])
		return ST_OK;
	rc = intent_get(tx, it->intent_id, &in);
	if (rc)
		return rc == ST_NOT_FOUND ? ST_OK : rc;
	if (in.status == INTENT_SETTLED)
		it->status = PAYOUT_ITEM_SETTLED;
	else if (in.status == INTENT_FAILED) {
		it->status = PAYOUT_ITEM_FAILED;
		snprintf(it->error, sizeof(it->error), "%s", in.failure_reason[0] ? in.failure_reason : "failed");
	}
	return ST_OK;
}

static enum st_rc batch_read_unit(struct tx *tx, void *arg)
{
	struct batch_read *r = arg;
	struct payout_batch b;
	struct payout_item *items = NULL;
	int64_t count[PAYOUT_ITEM_STATUS_COUNT] = { 0 }, amount[PAYOUT_ITEM_STATUS_COUNT] = { 0 };
	json_t *body = NULL, *totals = NULL, *arr = NULL;
	size_t n = 0, shown = 0;
	int64_t last = -1;
	bool more = false;
	enum st_rc rc;

	r->out = NULL;
	/* Another client's batch does not exist, as far as this one knows. */
	rc = payout_batch_get_owned(tx, strcmp(r->client_id, "admin") ? r->client_id : NULL, r->id, &b);
	if (rc)
		return rc;
	rc = payout_items_list(tx, r->id, &items, &n);
	if (rc)
		return rc;
	body = batch_json(&b);
	totals = json_object();
	arr = json_array();
	if (!body || !totals || !arr)
		rc = ST_NOMEM;
	for (size_t i = 0; rc == ST_OK && i < n; i++) {
		rc = effective_status(tx, &items[i]);
		if (rc)
			break;
		count[items[i].status]++;
		amount[items[i].status] += items[i].amount; /* <= the batch total: no overflow */
		if (items[i].idx <= r->after)
			continue;
		if ((int64_t)shown == r->limit) {
			more = true;
			continue;
		}
		if (json_array_append_new(arr, item_json(&items[i])))
			rc = ST_NOMEM;
		shown++;
		last = items[i].idx;
	}
	free(items);
	for (int s = 0; rc == ST_OK && s < PAYOUT_ITEM_STATUS_COUNT; s++)
		if (json_object_set_new(totals, payout_item_status_str((enum payout_item_status)s),
					json_pack("{s:I, s:o}", "count", (json_int_t)count[s], "amount",
						  present_amount(amount[s]))))
			rc = ST_NOMEM;
	if (rc) {
		json_decref(body);
		json_decref(totals);
		json_decref(arr);
		return rc;
	}
	json_object_set_new(body, "totals", totals);
	json_object_set_new(body, "items", arr);
	json_object_set_new(body, "next_after", more ? json_integer((json_int_t)last) : json_null());
	r->out = body;
	return ST_OK;
}

/* A decimal integer in [lo, hi]; false on anything else. */
static bool parse_bounded(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
	int64_t v = 0;
	size_t n = strlen(s);

	if (n == 0 || n > 18)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

enum st_rc route_payout_batch_get(struct req_ctx *rq)
{
	struct batch_read r = { .id = req_param(rq, "id"), .client_id = req_client_id(rq), .after = -1,
				.limit = PAYOUT_MAX_ITEMS };
	const char *after = req_query(rq, "after"), *limit = req_query(rq, "limit");
	enum st_rc rc;

	if (!r.id || !*r.id || strlen(r.id) > PAYOUT_ID_MAX)
		return req_error(rq, ERR_BATCH_NOT_FOUND, NULL);
	if (after && !parse_bounded(after, 0, PAYOUT_MAX_ITEMS, &r.after))
		return req_error(rq, ERR_ITEMS_AFTER, NULL);
	if (limit && !parse_bounded(limit, 1, PAYOUT_MAX_ITEMS, &r.limit))
		return req_error(rq, ERR_LIMIT_TO_10000, NULL);
	rc = store_read(req_app(rq)->store, batch_read_unit, &r);
	if (rc == ST_NOT_FOUND)
		return req_error(rq, ERR_BATCH_NOT_FOUND, NULL);
	if (rc)
		return req_error(rq, ERR_STORE_READ, NULL);
	return req_ok(rq, r.out);
}

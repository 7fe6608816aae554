/* routes_claims.c — the claim flow and its intents (SPEC sections 7, 8):
 *
 *   POST /api/claim/prepare {wallet, amount}     -> 201 intent (PENDING), hold on the wallet
 *   POST /api/claim/record  {intent_id, tx_hash} -> 200 intent (SUBMITTED, via LOCKED)
 *   POST /api/v2/claims {wallet, amount, tx_hash} -> 201 intent (SUBMITTED): both in one
 *   GET  /api/v2/intents/{id}                    -> the intent, its hold and its history
 *
 * The partner API's one-call claim (POST /api/v2/claims) does what prepare
 * and record do in ONE write unit, so a client never sees (or leaves
 * behind) a prepared-but-unrecorded claim: intent_claim_create (PENDING,
 * hold on the wallet's own account), intent_record (LOCKED -> SUBMITTED
 * with tx_hash), claim_job_enqueue (the confirmation job, claim_job.c). Any
 * refusal rolls the whole unit back; it answers 201 with Location
 * /api/v2/intents/{id}, and the claim belongs to the calling client.
 *
 * Handlers validate input and build write units; the dispatcher has
 * already applied auth, rate limits and idempotency (route_table.c). Error
 * codes: invalid_wallet, invalid_amount, invalid_intent_id,
 * invalid_tx_hash (400); unknown_wallet, intent_not_found (404);
 * invalid_transition, tx_hash_already_recorded (409); insufficient_funds,
 * claim_too_large (422).
 *
 * A claim is the wallet withdrawing what it is owed (SPEC section 7): the
 * hold is on the wallet's own account, so a wallet can claim its available
 * balance and nothing more; settling moves it to external. Claims never
 * draw on treasury: operators allocate to wallets with transfers instead.
 *
 * Metrics are registered by the units with intent_count_at_commit: the
 * store counts them once the unit's transaction has committed, never for a
 * run that was rolled back or re-run. Workers count after job_commit. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "claim_job.h"
#include "clock.h"
#include "errors.h"
#include "http.h"
#include "input.h"
#include "intent.h"
#include "ledger.h"
#include "route_table.h"
#include "settled.h"
#include "validate.h"
#include "present.h"
#include "banned.h"

#define ACTOR_PREFIX "req:"

static void set_actor(struct req_ctx *rq, char out[INTENT_ACTOR_MAX + 1])
{
	snprintf(out, INTENT_ACTOR_MAX + 1, ACTOR_PREFIX "%s", req_id(rq));
}

/* Answers 422 claim_too_large (field amount, max) and returns true when
 * amount is over SETTLED_CLAIM_MAX (0: no cap), else returns false.
 * Checked before the unit: the cap is configuration, not state, so the
 * refusal needs no transaction and, like the 400s, stores nothing. */
static bool claim_refuse_over_max(struct req_ctx *rq, int64_t amount)
{
	int64_t max = req_app(rq)->cfg->claim_max;

	if (max <= 0 || amount <= max)
		return false;
	req_error(rq, ERR_CLAIM_TOO_LARGE, json_pack("{s:o}", "max", present_amount(max)));
	return true;
}

/* The input both claim routes take: wallet, amount and (for
 * /api/v2/claims, tx_hash non-NULL) tx_hash, checked in that order, then
 * the configured maximum. True when it has answered the request (an
 * error); the route then returns ST_OK. */
static bool claim_parse(struct req_ctx *rq, char wallet[WALLET_LEN + 1], int64_t *amount,
			char *tx_hash)
{
	json_t *body = req_json(rq);
	enum err_id e;

	/* Amounts are JSON strings of base units (SPEC section 3): a JSON
	 * number is refused like any other malformed amount. */
	if (input_wallet(json_object_get(body, "wallet"), wallet))
		e = ERR_INVALID_WALLET;
	else if (input_amount(json_object_get(body, "amount"), amount))
		e = ERR_INVALID_AMOUNT;
	else if (tx_hash && input_tx_hash(json_object_get(body, "tx_hash"), tx_hash))
		e = ERR_INVALID_TX_HASH;
	else
		return claim_refuse_over_max(rq, *amount);
	req_error(rq, e, NULL);
	return true;
}

/* Turns intent_claim_create's error rc into the unit's answer: 404
 * unknown_wallet, 422 insufficient_funds naming the wallet's account;
 * other codes pass through. */
static enum st_rc claim_create_fail(struct resp *resp, enum st_rc rc, const char *wallet)
{
	if (rc == ST_NOT_FOUND)
		return unit_error(resp, ERR_UNKNOWN_WALLET, json_pack("{s:s}", "wallet", wallet));
	if (rc == ST_UNPROCESSABLE)
		return unit_error(resp, ERR_CLAIM_SHORT, json_pack("{s:s}", "account", wallet));
	return rc;
}

/* The intent as the answer of a write unit: written straight into the
 * response, no jansson tree inside the writer's transaction. */
static enum st_rc answer_intent(struct resp *resp, const struct intent *it)
{
	struct json_writer w;

	resp_object_begin(resp, &w);
	jw_intent_members(&w, it);
	return resp_object_end(resp, &w);
}

/* ---- POST /api/claim/prepare ---- */

struct prepare_req {
	char wallet[WALLET_LEN + 1];
	int64_t amount;
	int64_t hold_timeout_ms;
	char actor[INTENT_ACTOR_MAX + 1];
	struct settled_metrics *m;
};

static enum st_rc prepare_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct prepare_req *r = arg;
	struct intent it;
	struct ledger_hold h;
	struct json_writer w;
	char location[96];
	enum st_rc rc;

	rc = intent_claim_create(tx, r->wallet, r->amount, r->hold_timeout_ms, r->actor, &it, &h);
	if (rc)
		return claim_create_fail(resp, rc, r->wallet);
	snprintf(location, sizeof(location), "/api/v2/intents/%s", it.id);
	rc = resp_location(resp, location);
	if (rc)
		return rc;
	resp_object_begin(resp, &w);
	jw_intent_members(&w, &it);
	jw_time(&w, "expires_at", h.expires_at);
	rc = resp_object_end(resp, &w);
	if (rc == ST_OK)
		rc = intent_count_at_commit(tx, r->m->intents, it.status, 1);
	return rc;
}

enum st_rc route_claim_prepare(struct req_ctx *rq)
{
	struct settled *app = req_app(rq);
	struct prepare_req *r = req_alloc(rq, sizeof(*r));

	if (!r)
		return ST_NOMEM;
	if (claim_parse(rq, r->wallet, &r->amount, NULL))
		return ST_OK;
	r->hold_timeout_ms = app->cfg->hold_timeout_ms;
	r->m = &app->m;
	set_actor(rq, r->actor);
	return req_commit(rq, prepare_unit, r);
}

/* ---- POST /api/claim/record ---- */

struct record_req {
	char intent_id[LEDGER_ID_MAX + 1];
	char tx_hash[TX_HASH_LEN + 1];
	char actor[INTENT_ACTOR_MAX + 1];
	struct settled_metrics *m;
	const struct settled *app;   /* for claim_job_enqueue */
};

static enum st_rc record_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct record_req *r = arg;
	struct intent it;
	enum st_rc rc;

	rc = intent_record(tx, r->intent_id, r->tx_hash, r->actor, &it);
	if (rc == ST_NOT_FOUND)
		return unit_error(resp, ERR_RECORD_INTENT_NOT_FOUND, NULL);
	if (rc == ST_CONFLICT && intent_expire_due(tx, r->intent_id, r->actor, &it) == ST_OK) {
		/* Too late: its hold expires now, as the sweep would have
		 * done, and that is committed with the refusal (intent_record
		 * wrote nothing), so the answer says FAILED. */
		rc = intent_count_at_commit(tx, r->m->intents, INTENT_FAILED, 1);
		if (rc)
			return rc;
		return resp_set_error(resp, ERR_INTENT_NOT_PENDING,
				      json_pack("{s:s, s:s, s:s}", "intent_id", r->intent_id, "to",
						"SUBMITTED", "status", intent_status_str(it.status)));
	}
	if (rc == ST_CONFLICT) {
		json_t *extra = json_pack("{s:s, s:s}", "intent_id", r->intent_id, "to", "SUBMITTED");

		if (intent_get(tx, r->intent_id, &it) == ST_OK)
			json_object_set_new(extra, "status", json_string(intent_status_str(it.status)));
		return unit_error(resp, ERR_INTENT_NOT_PENDING, extra);
	}
	if (rc == ST_UNIQUE)
		return unit_error(resp, ERR_TX_HASH_ALREADY_RECORDED, NULL);
	if (rc)
		return rc;
	/* The confirmation job is enqueued here, in this same unit, so the
	 * intent is SUBMITTED if and only if its job exists. */
	rc = claim_job_enqueue(tx, r->app, it.id, 0);
	if (rc)
		return rc;
	rc = answer_intent(resp, &it);
	if (rc == ST_OK)
		rc = intent_count_at_commit(tx, r->m->intents, INTENT_LOCKED, 1);
	if (rc == ST_OK)
		rc = intent_count_at_commit(tx, r->m->intents, INTENT_SUBMITTED, 1);
	return rc;
}

enum st_rc route_claim_record(struct req_ctx *rq)
{
	json_t *body = req_json(rq);
	json_t *id = json_object_get(body, "intent_id");
	json_t *h = json_object_get(body, "tx_hash");
	struct record_req *r = req_alloc(rq, sizeof(*r));

	if (!r)
		return ST_NOMEM;
	if (!json_is_string(id) || json_string_length(id) == 0)
		return req_error(rq, ERR_INVALID_INTENT_ID, NULL);
	if (json_string_length(id) > LEDGER_ID_MAX || strlen(json_string_value(id)) != json_string_length(id))
		return req_error(rq, ERR_RECORD_INTENT_NOT_FOUND, NULL);
	if (input_tx_hash(h, r->tx_hash))
		return req_error(rq, ERR_INVALID_TX_HASH, NULL);
	snprintf(r->intent_id, sizeof(r->intent_id), "%s", json_string_value(id));
	r->m = &req_app(rq)->m;
	r->app = req_app(rq);
	set_actor(rq, r->actor);
	return req_commit(rq, record_unit, r);
}

/* ---- POST /api/v2/claims ---- */

struct v2_claim_req {
	char wallet[WALLET_LEN + 1];
	int64_t amount;
	char tx_hash[TX_HASH_LEN + 1];
	char actor[INTENT_ACTOR_MAX + 1];
	char client_id[INTENT_ACTOR_MAX + 1];
	const struct settled *app;
};

static enum st_rc v2_claim_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct v2_claim_req *r = arg;
	struct intent it;
	char location[96];
	enum st_rc rc;

	rc = intent_claim_create(tx, r->wallet, r->amount, r->app->cfg->hold_timeout_ms, r->actor, &it,
				 NULL);
	if (rc)
		return claim_create_fail(resp, rc, r->wallet);
	/* The claim is the calling client's (SPEC 13): another's key reads 404. */
	rc = intent_set_owner(tx, it.id, r->client_id);
	if (rc)
		return rc;
	rc = intent_record(tx, it.id, r->tx_hash, r->actor, &it);
	if (rc == ST_UNIQUE)
		return unit_error(resp, ERR_TX_HASH_ALREADY_RECORDED, NULL);
	if (rc)
		return rc;
	rc = claim_job_enqueue(tx, r->app, it.id, 0);
	if (rc)
		return rc;
	snprintf(location, sizeof(location), "/api/v2/intents/%s", it.id);
	rc = resp_location(resp, location);
	if (rc)
		return rc;
	rc = answer_intent(resp, &it);
	/* Counted once the unit has committed (see the top of this file). */
	for (enum intent_status st = INTENT_PENDING; rc == ST_OK && st <= INTENT_SUBMITTED; st++)
		rc = intent_count_at_commit(tx, r->app->m.intents, st, 1);
	return rc;
}

enum st_rc route_v2_claim(struct req_ctx *rq)
{
	struct v2_claim_req *r = req_alloc(rq, sizeof(*r));

	if (!r)
		return ST_NOMEM;
	if (claim_parse(rq, r->wallet, &r->amount, r->tx_hash))
		return ST_OK;
	r->app = req_app(rq);
	snprintf(r->client_id, sizeof(r->client_id), "%s", req_client_id(rq));
	set_actor(rq, r->actor);
	return req_commit(rq, v2_claim_unit, r);
}

/* ---- GET /api/v2/intents/{id} ---- */

struct intent_read {
	const char *id;
	const char *owner;   /* the caller's client id; NULL for the admin token */
	json_t *out;
};

static json_t *history_json(const struct intent_transition *v, size_t n)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < n; i++) {
		json_t *t = json_pack("{s:o, s:s, s:o, s:s}", "from",
				      v[i].from_none ? json_null() : json_string(intent_status_str(v[i].from)),
				      "to", intent_status_str(v[i].to), "at", present_time(v[i].at), "actor",
				      v[i].actor);

		if (!t || json_array_append_new(arr, t)) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

static enum st_rc intent_read_unit(struct tx *tx, void *arg)
{
	struct intent_read *r = arg;
	struct intent it;
	struct ledger_hold h;
	struct intent_transition *hist = NULL;
	size_t n = 0;
	json_t *body = NULL, *hold = NULL, *trans = NULL;
	enum st_rc rc;

	rc = intent_get_owned(tx, r->owner, r->id, &it);
	if (rc)
		return rc;
	rc = ledger_hold_get(tx, it.hold_id, &h);
	if (rc)
		return rc;
	rc = intent_history(tx, r->id, &hist, &n);
	if (rc)
		return rc;
	body = present_intent(&it);
	hold = json_pack("{s:s, s:s, s:o, s:o, s:o}", "id", h.id, "status", hold_status_str(h.status),
			 "amount", present_amount(h.amount), "expires_at", present_time(h.expires_at),
			 "resolved_at", present_time(h.resolved_at));
	trans = history_json(hist, n);
	free(hist);
	if (!body || !hold || !trans) {
		json_decref(body);
		json_decref(hold);
		json_decref(trans);
		return ST_NOMEM;
	}
	json_object_set_new(body, "hold", hold);
	json_object_set_new(body, "transitions", trans);
	r->out = body;
	return ST_OK;
}

enum st_rc route_intent_get(struct req_ctx *rq)
{
	const char *caller = req_client_id(rq);
	struct intent_read r = { .id = req_param(rq, "id"), .owner = strcmp(caller, "admin") ? caller : NULL };
	enum st_rc rc;

	if (!r.id || strlen(r.id) > LEDGER_ID_MAX)
		return req_error(rq, ERR_INTENT_NOT_FOUND, NULL);
	rc = store_read(req_app(rq)->store, intent_read_unit, &r);
	if (rc == ST_NOT_FOUND)
		return req_error(rq, ERR_INTENT_NOT_FOUND, NULL);
	if (rc)
		return req_error(rq, ERR_STORE_READ, NULL);
	return req_ok(rq, r.out);
}

/* routes_v2_claims.c — POST /api/v2/claims {wallet, amount, tx_hash}: the
 * partner API's one-call claim (SPEC section 8, issue 9): what
 * /api/claim/prepare and /api/claim/record do, in ONE write unit, so a
 * client never sees (or leaves behind) a prepared-but-unrecorded claim:
 *
 *   intent_claim_create  -> PENDING, hold on the wallet's own account
 *   intent_record        -> LOCKED -> SUBMITTED with tx_hash
 *   claim_job_enqueue    -> the confirmation job (claim_job.c)
 *
 * Any refusal rolls the whole unit back. Answers 201 with the intent (the
 * same shape as the claim routes) and Location /api/v2/intents/{id}.
 * Authentication (API key or admin token), the v2 rate limit per client and
 * the per-wallet claim limit, and idempotency are the dispatcher's
 * (routes.c). Error codes: invalid_wallet, invalid_amount, invalid_tx_hash
 * (400); unknown_wallet (404); tx_hash_already_recorded (409);
 * insufficient_funds, claim_too_large (422), answered as the claim routes
 * answer them (routes_claims.c). */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "claim_job.h"
#include "clock.h"
#include "errors.h"
#include "http.h"
#include "input.h"
#include "intent.h"
#include "routes.h"
#include "settled.h"
#include "validate.h"
#include "present.h"
#include "banned.h"

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
	rc = resp_json(resp, 201, present_intent(&it));
	/* Counted once the unit has committed (see routes_claims.c). */
	for (enum intent_status st = INTENT_PENDING; rc == ST_OK && st <= INTENT_SUBMITTED; st++)
		rc = intent_count_at_commit(tx, r->app->m.intents, st, 1);
	return rc;
}

enum st_rc route_v2_claim(struct req_ctx *rq)
{
	json_t *body = req_json(rq);
	json_t *w = json_object_get(body, "wallet");
	json_t *a = json_object_get(body, "amount");
	json_t *h = json_object_get(body, "tx_hash");
	struct v2_claim_req *r = req_alloc(rq, sizeof(*r));

	if (!r)
		return ST_NOMEM;
	if (input_wallet(w, r->wallet))
		return req_error(rq, ERR_INVALID_WALLET, NULL);
	if (input_amount(a, &r->amount))
		return req_error(rq, ERR_INVALID_AMOUNT, NULL);
	if (input_tx_hash(h, r->tx_hash))
		return req_error(rq, ERR_INVALID_TX_HASH, NULL);
	if (claim_refuse_over_max(rq, r->amount))
		return ST_OK;
	r->app = req_app(rq);
	snprintf(r->client_id, sizeof(r->client_id), "%s", req_client_id(rq));
	snprintf(r->actor, sizeof(r->actor), "req:%s", req_id(rq));
	return req_commit(rq, v2_claim_unit, r);
}

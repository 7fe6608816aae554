/* routes_register.c — POST /api/register {wallet, referrer?}: creates the
 * wallet's ledger account (SPEC section 8). */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "account.h"
#include "errors.h"
#include "http.h"
#include "input.h"
#include "present.h"
#include "route_table.h"
#include "validate.h"
#include "banned.h"

struct register_req {
	char wallet[WALLET_LEN + 1];
	char referrer[WALLET_LEN + 1];
	bool has_referrer;
};

static enum st_rc register_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct register_req *r = arg;
	struct account a;
	struct json_writer w;
	char location[96];
	enum st_rc rc;

	rc = account_register(tx, r->wallet, r->has_referrer ? r->referrer : NULL, &a);
	if (rc == ST_CONFLICT)
		return unit_error(resp, ERR_ALREADY_REGISTERED, json_pack("{s:s}", "wallet", r->wallet));
	if (rc == ST_NOT_FOUND)
		return unit_error(resp, ERR_UNKNOWN_REFERRER, NULL);
	if (rc == ST_INVALID)
		return unit_error(resp, ERR_SELF_REFERRAL, NULL);
	if (rc)
		return rc;
	snprintf(location, sizeof(location), "/api/v2/accounts/%s", a.wallet);
	rc = resp_location(resp, location);
	if (rc)
		return rc;
	resp_object_begin(resp, &w);
	jw_str(&w, "id", a.id);
	jw_str(&w, "wallet", a.wallet);
	jw_str(&w, "referrer", r->has_referrer ? r->referrer : NULL);
	jw_time(&w, "created_at", a.created_at);
	return resp_object_end(resp, &w);
}

enum st_rc route_register(struct req_ctx *rq)
{
	json_t *body = req_json(rq);
	json_t *w = json_object_get(body, "wallet");
	json_t *ref = json_object_get(body, "referrer");
	struct register_req *r = req_alloc(rq, sizeof(*r));

	if (!r)
		return ST_NOMEM;
	if (input_wallet(w, r->wallet))
		return req_error(rq, ERR_INVALID_WALLET, NULL);
	if (ref && !json_is_null(ref)) {
		if (input_wallet(ref, r->referrer))
			return req_error(rq, ERR_INVALID_REFERRER, NULL);
		r->has_referrer = true;
	}
	return req_commit(rq, register_unit, r);
}

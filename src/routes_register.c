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

/* The 201 of a registration: Location and the account. */
static enum st_rc register_answer(struct resp *resp, const char *id, const char *wallet,
				  const char *referrer, int64_t created_at)
{
	struct json_writer w;
	char location[96];
	enum st_rc rc;

	snprintf(location, sizeof(location), "/api/v2/accounts/%s", wallet);
	rc = resp_location(resp, location);
	if (rc)
		return rc;
	resp_object_begin(resp, &w);
	jw_str(&w, "id", id);
	jw_str(&w, "wallet", wallet);
	jw_str(&w, "referrer", referrer);
	jw_time(&w, "created_at", created_at);
	return resp_object_end(resp, &w);
}

static enum st_rc register_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct register_req *r = arg;
	struct account a;
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
	return register_answer(resp, a.id, a.wallet, r->has_referrer ? r->referrer : NULL,
			       a.created_at);
}

/* The registrations without a referrer that the SQLite writer took in one
 * batch, in one multi-row INSERT: ST_OK only when every one of them is
 * new; else the store registers each alone (register_unit), so a taken
 * wallet still gets its own 409. (A referrer is left out: it must be an
 * account already, which a registration earlier in the same statement
 * would satisfy where running alone, in queue order, might not.) */
static enum st_rc register_merge(struct tx *tx, void *const *args, struct resp *const *resps,
				 const char *const *trace_contexts, int n)
{
	const char **wallets = calloc((size_t)n, sizeof(*wallets));
	char (*ids)[ACCOUNT_ID_MAX + 1] = calloc((size_t)n, sizeof(*ids));
	int64_t created_at = 0;
	enum st_rc rc = ST_NOMEM;

	(void)trace_contexts; /* no jobs */
	if (!wallets || !ids)
		goto out;
	for (int i = 0; i < n; i++)
		wallets[i] = ((const struct register_req *)args[i])->wallet;
	rc = account_register_many(tx, wallets, n, ids, &created_at);
	for (int i = 0; rc == ST_OK && i < n; i++)
		rc = register_answer(resps[i], ids[i], wallets[i], NULL, created_at);
out:
	free(wallets);
	free(ids);
	return rc;
}

static const struct req_merge register_merged = { .run = register_merge, .keyed = true };

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
	if (r->has_referrer)
		return req_commit(rq, register_unit, r);
	return req_commit_merged(rq, &register_merged, register_unit, r);
}

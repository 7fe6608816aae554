/* routes_register.c — POST /api/register {wallet, referrer?}: creates the
 * wallet's ledger account (SPEC section 8). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "errors.h"
#include "fmt.h"
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
	/* a merged run's account, drawn by register_answers ("" until then) */
	char id[ACCOUNT_ID_MAX + 1];
	int64_t created_at;
};

/* The 201 of a registration: Location and the account. */
static enum st_rc register_answer(struct resp *resp, const char *id, const char *wallet,
				  const char *referrer, int64_t created_at)
{
	struct json_writer w;
	char location[96];
	enum st_rc rc;

	/* wallet is WALLET_LEN long (parse_wallet): it fits. */
	fmt_str(stpcpy(location, "/api/v2/accounts/"), sizeof(location) - 17, wallet);
	rc = resp_location(resp, location);
	if (rc)
		return rc;
	/* On the store's writer for every registration: the body put
	 * together directly when it can be (present.h), the same bytes. */
	buf_reset(&resp->body);
	if (present_registered(&resp->body, id, wallet, referrer, created_at)) {
		resp_ok_body(resp);
		return ST_OK;
	}
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

/* Draws the account of each registration of a merged run and answers it
 * (the 201 register_unit would give), writing nothing: keyed runs record
 * the answers before the accounts are written. */
static enum st_rc register_answers(struct tx *tx, void *const *args, struct resp *const *resps,
				   int n)
{
	enum st_rc rc = ST_OK;

	for (int i = 0; rc == ST_OK && i < n; i++) {
		struct register_req *r = args[i];

		tx_new_id(tx, "acct_", r->id);
		r->created_at = tx_now_ms(tx);
		rc = register_answer(resps[i], r->id, r->wallet, NULL, r->created_at);
	}
	return rc;
}

/* The registrations without a referrer that the SQLite writer took in one
 * batch, in one multi-row INSERT: ST_OK only when every one of them is
 * new; else the store registers each alone (register_unit), so a taken
 * wallet still gets its own 409. (A referrer is left out: it must be an
 * account already, which a registration earlier in the same statement
 * would satisfy where running alone, in queue order, might not.) Answers
 * already made by register_answers are kept. */
static enum st_rc register_merge(struct tx *tx, void *const *args, struct resp *const *resps,
				 const char *const *trace_contexts, int n)
{
	struct account_new *accts = calloc((size_t)n, sizeof(*accts));
	enum st_rc rc = ST_NOMEM;

	(void)trace_contexts; /* no jobs */
	if (!accts)
		return rc;
	for (int i = 0; i < n; i++) {
		struct register_req *r = args[i];

		if (!resps[i]->status) { /* not answered yet: unkeyed */
			tx_new_id(tx, "acct_", r->id);
			r->created_at = tx_now_ms(tx);
		}
		accts[i].id = r->id;
		accts[i].wallet = r->wallet;
		accts[i].created_at = r->created_at;
	}
	rc = account_register_many(tx, accts, n);
	for (int i = 0; rc == ST_OK && i < n; i++) {
		const struct register_req *r = args[i];

		if (!resps[i]->status)
			rc = register_answer(resps[i], r->id, r->wallet, NULL, r->created_at);
	}
	free(accts);
	return rc;
}

/* A keyed registration without a referrer on PostgreSQL: the 201 drawn
 * first (its account id), then the account and the key's record holding
 * it in one statement (account_register_recorded). A taken wallet (rare:
 * a retry of a finished request the cache does not know, or a wallet
 * registered under another key) writes nothing there; its 409 is made
 * then and recorded like any refusal (idem_record, a second statement on
 * that path only). resp gets the answer. */
static enum st_rc register_record(struct tx *tx, void *arg, struct resp *resp,
				  const struct idem_new_record *key, const char *owner, int64_t ttl_ms,
				  bool *recorded)
{
	struct register_req *r = arg;
	struct idem_new_record rec = *key;
	struct idem_record found = { 0 };
	enum idem_put put = IDEM_FOUND;
	bool registered = false;
	enum st_rc rc;

	rc = register_answers(tx, (void *const[]){ r }, (struct resp *const[]){ resp }, 1);
	if (rc)
		return rc;
	req_record_answer(resp, &rec.ans);
	rc = account_register_recorded(
		tx, &(struct account_new){ .id = r->id, .wallet = r->wallet, .created_at = r->created_at },
		&rec, owner, ttl_ms, &registered, recorded);
	if (rc || registered)
		return rc;
	resp_release(resp);
	unit_error(resp, ERR_ALREADY_REGISTERED, json_pack("{s:s}", "wallet", r->wallet));
	if (!resp->status)
		return ST_NOMEM;
	req_record_answer(resp, &rec.ans);
	rc = idem_record(tx, rec.scope, rec.key, rec.fingerprint, owner, ttl_ms, &rec.ans, &put, &found);
	idem_record_release(&found); /* a live record: the dispatcher reads and answers it */
	*recorded = rc == ST_OK && put == IDEM_RECORDED;
	return rc;
}

/* A merged keyed run on PostgreSQL: the keys' records and the accounts
 * drawn by register_answers in one statement a chunk
 * (account_register_recorded_many). */
static enum st_rc register_run_recorded(struct tx *tx, void *const *args,
					const struct idem_new_record *recs, int n,
					const char *owner, int64_t ttl_ms, bool *all)
{
	struct account_new *accts = calloc((size_t)n, sizeof(*accts));
	enum st_rc rc;

	*all = false;
	if (!accts)
		return ST_NOMEM;
	for (int i = 0; i < n; i++) {
		const struct register_req *r = args[i];

		accts[i] = (struct account_new){ .id = r->id, .wallet = r->wallet,
						 .created_at = r->created_at };
	}
	rc = account_register_recorded_many(tx, accts, recs, n, owner, ttl_ms, all);
	free(accts);
	return rc;
}

static const struct req_merge register_merged = { .run = register_merge,
						    .answer = register_answers,
						    .record = register_record,
						    .run_recorded = register_run_recorded };

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

/* routes_holds.c — holds of the Ledger API (SPEC section 13):
 *
 *   POST /api/v2/holds {from, to, amount, expires_in?, metadata?}  201 PENDING
 *   POST /api/v2/holds/{id}/capture {amount?}                      200 CAPTURED
 *   POST /api/v2/holds/{id}/void                                   200 VOIDED
 *   GET  /api/v2/holds/{id}                                        the hold
 *   GET  /api/v2/holds?state=&after=&limit=                        a page of holds
 *
 * A hold reserves amount on `from` (available drops, balance does not)
 * until it is captured (all or part, posted from `from` to `to`; the rest
 * goes back), voided, or expires: after expires_in seconds (default
 * SETTLED_HOLD_TIMEOUT), by the ticker's sweep or by the first capture or
 * void that comes too late, whichever is first. Each happens once: the
 * store refuses a second resolution (ledger.h), and the answer to the
 * loser is 409 hold_not_pending with the hold's state.
 *
 * Ownership: a hold belongs to the client whose account it reserves (the
 * caller for a client; for the admin token, the owner of `from` if it is a
 * client account, else nobody). Another client's hold is 404 not_found,
 * exactly as one that does not exist; the admin token sees and acts on all.
 *
 * Authentication, the v2 rate limit, idempotency (scope: client id and the
 * concrete path) and the money-moving flag are the dispatcher's (route_table.c).
 * Who may hold on and capture to which account is account_resolve's
 * (account.h): a client holds on its own accounts and captures to its own,
 * a wallet or revenue; the admin token on and to any.
 * Error codes: unknown_field, invalid_account, invalid_amount,
 * invalid_expires_in, invalid_metadata, invalid_state, invalid_cursor,
 * invalid_parameter (400); not_found (404); hold_not_pending (409);
 * unknown_account (422, with the field), insufficient_funds (422, naming
 * the account). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "errors.h"
#include "http.h"
#include "input.h"
#include "ledger.h"
#include "present.h"
#include "reqcheck.h"
#include "route_table.h"
#include "settled.h"
#include "validate.h"
#include "banned.h"

#define HOLD_EXPIRES_IN_MAX (365LL * 24 * 3600) /* seconds */
#define HOLD_REF_MAX ACCOUNT_QNAME_MAX          /* "<client_id>/<name>" at most */
#define HOLD_PAGE_DEFAULT 50
#define HOLD_PAGE_MAX 100

/* The caller as req_client_id() names it: a client id, or "admin". */
struct caller {
	char id[ACCOUNT_CLIENT_MAX + 1];
	bool admin;
};

static void caller_of(const struct req_ctx *rq, struct caller *c)
{
	snprintf(c->id, sizeof(c->id), "%s", req_client_id(rq));
	c->admin = !strcmp(c->id, "admin");
}

/* ---- presenting ------------------------------------------------------ */

/* A hold as the API shows it; from and to are the caller's names (to ""
 * for a hold that names none: an intent's). metadata is JSON text or NULL. */
static json_t *present_hold(const struct ledger_hold *h, const char *from, const char *to,
			    const char *metadata)
{
	json_t *meta = metadata ? json_loads(metadata, 0, NULL) : NULL;
	json_t *v = json_object();

	if (!v) {
		json_decref(meta);
		return NULL;
	}
	json_object_set_new(v, "id", json_string(h->id));
	json_object_set_new(v, "from", json_string(from));
	json_object_set_new(v, "to", present_opt_str(to));
	json_object_set_new(v, "amount", present_amount(h->amount));
	json_object_set_new(v, "captured", present_amount(h->captured));
	json_object_set_new(v, "state", json_string(hold_state_str(h->status)));
	json_object_set_new(v, "expires_at", present_time(h->expires_at));
	json_object_set_new(v, "created_at", present_time(h->created_at));
	json_object_set_new(v, "resolved_at", present_time(h->resolved_at));
	json_object_set_new(v, "metadata", meta ? meta : json_object());
	return v;
}

/* The hold with its accounts' names (as caller names them) and metadata,
 * read in tx. */
static json_t *present_hold_tx(struct tx *tx, const char *caller, const struct ledger_hold *h,
			       enum st_rc *rc)
{
	struct account from, to;
	char from_ref[ACCOUNT_QNAME_MAX + 1], to_ref[ACCOUNT_QNAME_MAX + 1];
	char *meta = NULL;
	json_t *v;

	to_ref[0] = '\0';
	*rc = account_by_id(tx, h->account_id, &from);
	if (*rc == ST_OK && h->to_account[0]) /* an intent's hold names none */
		*rc = account_by_id(tx, h->to_account, &to);
	if (*rc == ST_OK)
		*rc = ledger_hold_metadata(tx, h->id, &meta);
	if (*rc)
		return NULL;
	account_display_name(&from, caller, from_ref);
	if (h->to_account[0])
		account_display_name(&to, caller, to_ref);
	v = present_hold(h, from_ref, to_ref, meta);
	free(meta);
	if (!v)
		*rc = ST_NOMEM;
	return v;
}

/* Whether the caller may see h: its owner, or the admin token. */
static bool may_see(const struct caller *c, const struct ledger_hold *h)
{
	return c->admin || (h->client_id[0] && !strcmp(h->client_id, c->id));
}

static enum st_rc fail_not_found(struct resp *resp)
{
	return unit_error(resp, ERR_HOLD_NOT_FOUND, NULL);
}

/* 409 hold_not_pending with the state it is in. */
static enum st_rc fail_not_pending(struct resp *resp, enum hold_status s)
{
	return unit_error(resp, ERR_HOLD_NOT_PENDING, json_pack("{s:s}", "state", hold_state_str(s)));
}

/* ---- POST /api/v2/holds ---------------------------------------------- */

struct create_req {
	struct caller c;
	char from[HOLD_REF_MAX + 1];
	char to[HOLD_REF_MAX + 1];
	int64_t amount;
	int64_t expires_in_ms;
	char *metadata;          /* req_alloc'd JSON text, or NULL */
};

static enum st_rc create_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct create_req *r = arg;
	struct account from, to;
	struct ledger_hold h;
	struct ledger_hold_spec spec;
	char location[96];
	char from_ref[ACCOUNT_QNAME_MAX + 1], to_ref[ACCOUNT_QNAME_MAX + 1];
	enum st_rc rc, from_rc, to_rc;
	json_t *body;

	/* Who may hold on what, and capture to what: account_resolve. What a
	 * caller may not use is answered as if it did not exist. */
	rc = account_resolve_two(tx, r->c.id, r->from, ACCOUNT_DEBIT, &from, &from_rc, r->to, ACCOUNT_CREDIT,
				 &to, &to_rc);
	if (rc)
		return rc;
	if (from_rc == ST_NOT_FOUND)
		return unit_error(resp, ERR_HOLD_FROM_UNKNOWN, json_pack("{s:s}", "account", r->from));
	if (to_rc == ST_NOT_FOUND)
		return unit_error(resp, ERR_HOLD_TO_UNKNOWN, json_pack("{s:s}", "account", r->to));
	if (!strcmp(from.id, to.id))
		return unit_error(resp, ERR_HOLD_SAME_ACCOUNT, NULL);
	/* The hold is the owner's of the account it reserves: a client's own,
	 * or, when the operator holds on a client's account, that client's. */
	spec = (struct ledger_hold_spec){
		.account_id = from.id,
		.amount = r->amount,
		.expires_at = tx_now_ms(tx) + r->expires_in_ms,
		.to_account = to.id,
		.client_id = from.client_id[0] ? from.client_id : NULL,
		.metadata = r->metadata,
		.account = &from, /* just read: not read again */
		.to = &to,
	};
	rc = ledger_hold_open(tx, &spec, &h);
	if (rc == ST_UNPROCESSABLE)
		return unit_error(resp, ERR_HOLD_SHORT, json_pack("{s:s}", "account", r->from));
	if (rc)
		return rc;
	/* Presented from what this unit read and wrote (the accounts, the
	 * metadata as stored): reading them again would cost three round
	 * trips on PostgreSQL for the same answer. */
	account_display_name(&from, r->c.id, from_ref);
	account_display_name(&to, r->c.id, to_ref);
	body = present_hold(&h, from_ref, to_ref, r->metadata);
	if (!body)
		return ST_NOMEM;
	snprintf(location, sizeof(location), "/api/v2/holds/%s", h.id);
	rc = resp_location(resp, location);
	if (rc) {
		json_decref(body);
		return rc;
	}
	return resp_ok(resp, body);
}

/* Copies a string field of at most max bytes; false when absent, not a
 * string, empty or too long. */
static bool str_field(const json_t *v, char *out, size_t max)
{
	const char *s = json_string_value(v);
	size_t n = s ? strlen(s) : 0;

	if (!s || n == 0 || n > max || n != json_string_length(v))
		return false;
	memcpy(out, s, n + 1);
	return true;
}

enum st_rc route_hold_create(struct req_ctx *rq)
{
	json_t *body = req_json(rq);
	json_t *exp = json_object_get(body, "expires_in");
	struct create_req *r = req_alloc(rq, sizeof(*r));

	if (!r)
		return ST_NOMEM;
	caller_of(rq, &r->c);
	if (!str_field(json_object_get(body, "from"), r->from, HOLD_REF_MAX))
		return req_error(rq, ERR_HOLD_FROM, NULL);
	if (!str_field(json_object_get(body, "to"), r->to, HOLD_REF_MAX))
		return req_error(rq, ERR_HOLD_TO, NULL);
	if (input_amount(json_object_get(body, "amount"), &r->amount))
		return req_error(rq, ERR_INVALID_AMOUNT, NULL);
	r->expires_in_ms = req_app(rq)->cfg->hold_timeout_ms;
	if (exp) {
		json_int_t s = json_is_integer(exp) ? json_integer_value(exp) : 0;

		if (s < 1 || s > HOLD_EXPIRES_IN_MAX)
			return req_error(rq, ERR_INVALID_EXPIRES_IN, NULL);
		r->expires_in_ms = (int64_t)s * 1000;
	}
	if (reqcheck_metadata(rq, json_object_get(body, "metadata"), &r->metadata))
		return ST_OK;
	return req_commit(rq, create_unit, r);
}

/* ---- POST /api/v2/holds/{id}/capture and /void ------------------------ */

struct resolve_req {
	struct caller c;
	char id[LEDGER_ID_MAX + 1];
	int64_t amount;          /* capture: 0 = all */
	bool capture;
};

static enum st_rc capture_nested(struct tx *tx, void *arg)
{
	const struct resolve_req *r = arg;

	return ledger_hold_capture_amount(tx, r->id, r->amount, NULL, "hold_capture", NULL, NULL);
}

static enum st_rc void_nested(struct tx *tx, void *arg)
{
	const struct resolve_req *r = arg;

	return ledger_hold_release(tx, r->id);
}

static enum st_rc resolve_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct resolve_req *r = arg;
	struct ledger_hold h;
	enum st_rc rc = ledger_hold_get(tx, r->id, &h);
	json_t *body;

	if (rc == ST_NOT_FOUND || (rc == ST_OK && !may_see(&r->c, &h)))
		return fail_not_found(resp);
	if (rc)
		return rc;
	if (h.status == HOLD_PENDING && h.expires_at && h.expires_at <= tx_now_ms(tx)) {
		/* Too late: it expires now, as the sweep would have, and that
		 * is committed with the answer. On PostgreSQL (READ COMMITTED)
		 * the sweep, or a late capture or void on another writer, may
		 * have resolved it since the read above: the expiry then
		 * changes no row (ST_CONFLICT, nothing written, no error
		 * raised, so no savepoint is needed) and the answer is the
		 * state it is in now, not a 500. */
		rc = ledger_hold_expire_one(tx, h.id);
		if (rc == ST_CONFLICT) {
			struct ledger_hold now;

			rc = ledger_hold_get(tx, h.id, &now);
			if (rc)
				return rc;
			if (now.status != HOLD_PENDING)
				return fail_not_pending(resp, now.status);
			return unit_error(resp, ERR_INTERNAL, NULL);
		}
		if (rc)
			return rc;
		return resp_set_error(resp, ERR_HOLD_EXPIRED,
				      json_pack("{s:s}", "state", hold_state_str(HOLD_EXPIRED)));
	}
	if (h.status != HOLD_PENDING)
		return fail_not_pending(resp, h.status);
	if (r->capture && r->amount > h.amount)
		return unit_error(resp, ERR_CAPTURE_OVER_HOLD, NULL);
	/* In a savepoint: on PostgreSQL a unit that committed since the read
	 * above (READ COMMITTED) makes the store refuse this one, and the
	 * answer should still say what became of the hold. */
	rc = tx_nested(tx, r->capture ? capture_nested : void_nested, r);
	if (rc == ST_CONFLICT || rc == ST_UNIQUE) {
		struct ledger_hold now;

		if (ledger_hold_get(tx, h.id, &now) == ST_OK && now.status != HOLD_PENDING)
			return fail_not_pending(resp, now.status);
		/* Refused, yet still pending: no race explains it (the
		 * store's own guards refuse only a hold resolved already), so
		 * it is ours to fix, not the client's: 500, nothing written. */
		return unit_error(resp, ERR_INTERNAL, NULL);
	}
	if (rc)
		return rc;
	rc = ledger_hold_get(tx, h.id, &h);
	if (rc)
		return rc;
	body = present_hold_tx(tx, r->c.id, &h, &rc);
	return body ? resp_ok(resp, body) : rc;
}

static enum st_rc resolve_route(struct req_ctx *rq, bool capture)
{
	json_t *body = req_json(rq);
	struct resolve_req *r = req_alloc(rq, sizeof(*r));
	const char *id = req_param(rq, "id");

	if (!r)
		return ST_NOMEM;
	caller_of(rq, &r->c);
	r->capture = capture;
	if (!id || strlen(id) > LEDGER_ID_MAX)
		return req_error(rq, ERR_HOLD_NOT_FOUND, NULL);
	memcpy(r->id, id, strlen(id) + 1);
	if (capture && json_object_get(body, "amount") &&
	    input_amount(json_object_get(body, "amount"), &r->amount))
		return req_error(rq, ERR_INVALID_AMOUNT, NULL);
	return req_commit(rq, resolve_unit, r);
}

enum st_rc route_hold_capture(struct req_ctx *rq)
{
	return resolve_route(rq, true);
}

enum st_rc route_hold_void(struct req_ctx *rq)
{
	return resolve_route(rq, false);
}

/* ---- GET /api/v2/holds/{id} ------------------------------------------ */

struct read_req {
	struct caller c;
	const char *id;
	json_t *body;
};

static enum st_rc read_unit(struct tx *tx, void *arg)
{
	struct read_req *r = arg;
	struct ledger_hold h;
	enum st_rc rc = ledger_hold_get(tx, r->id, &h);

	if (rc == ST_OK && !may_see(&r->c, &h))
		rc = ST_NOT_FOUND;
	if (rc)
		return rc;
	r->body = present_hold_tx(tx, r->c.id, &h, &rc);
	return rc;
}

enum st_rc route_hold_get(struct req_ctx *rq)
{
	struct read_req r = { .id = req_param(rq, "id") };
	enum st_rc rc;

	caller_of(rq, &r.c);
	if (!r.id || strlen(r.id) > LEDGER_ID_MAX)
		return req_error(rq, ERR_HOLD_NOT_FOUND, NULL);
	rc = store_read(req_app(rq)->store, read_unit, &r);
	if (rc)
		json_decref(r.body);
	if (rc == ST_NOT_FOUND)
		return req_error(rq, ERR_HOLD_NOT_FOUND, NULL);
	if (rc == ST_NOMEM)
		return req_error(rq, ERR_OUT_OF_MEMORY, NULL);
	if (rc)
		return req_error(rq, ERR_STORE_READ, NULL);
	return req_ok(rq, r.body);
}

/* ---- GET /api/v2/holds ----------------------------------------------- */

struct list_req {
	struct caller c;
	const enum hold_status *state;
	const char *after;
	int limit;
	json_t *body;
};

static enum st_rc list_unit(struct tx *tx, void *arg)
{
	struct list_req *r = arg;
	struct ledger_hold *v = NULL;
	size_t n = 0;
	bool more = false;
	json_t *items;
	enum st_rc rc = ledger_holds_page(tx, r->c.admin ? NULL : r->c.id, r->state, r->after,
					  r->limit, &v, &n, &more);

	if (rc)
		return rc;
	items = json_array();
	r->body = json_pack("{s:o}", "data", items);
	if (!items || !r->body)
		rc = ST_NOMEM;
	for (size_t i = 0; i < n && rc == ST_OK; i++) {
		json_t *h = present_hold_tx(tx, r->c.id, &v[i], &rc);

		if (h && json_array_append_new(items, h))
			rc = ST_NOMEM;
	}
	if (rc == ST_OK)
		rc = json_object_set_new(r->body, "next_after",
					 more && n ? json_string(v[n - 1].id) : json_null())
			     ? ST_NOMEM
			     : ST_OK;
	free(v);
	return rc;
}

enum st_rc route_hold_list(struct req_ctx *rq)
{
	struct list_req r = { .after = req_query(rq, "after"), .limit = HOLD_PAGE_DEFAULT };
	const char *state = req_query(rq, "state");
	const char *limit = req_query(rq, "limit");
	enum hold_status st;
	enum st_rc rc;

	caller_of(rq, &r.c);
	if (state) {
		if (!hold_state_parse(state, &st))
			return req_error(rq, ERR_INVALID_HOLD_STATE, NULL);
		r.state = &st;
	}
	if (r.after && strlen(r.after) > LEDGER_ID_MAX)
		return req_error(rq, ERR_INVALID_HOLD_CURSOR, NULL);
	if (limit && reqcheck_limit(rq, limit, HOLD_PAGE_MAX, &r.limit))
		return ST_OK;
	rc = store_read(req_app(rq)->store, list_unit, &r);
	if (rc)
		json_decref(r.body);
	if (rc == ST_NOMEM)
		return req_error(rq, ERR_OUT_OF_MEMORY, NULL);
	if (rc)
		return req_error(rq, ERR_STORE_READ, NULL);
	return req_ok(rq, r.body);
}

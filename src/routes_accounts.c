/* routes_accounts.c — accounts of the Ledger API (SPEC section 13):
 *
 *   POST /api/v2/accounts {name, overdraft?, metadata?}   201 a client account
 *   GET  /api/v2/accounts?after=&limit=                    the caller's, keyset-paginated
 *   GET  /api/v2/accounts/{account}                        one: the caller's by name, a
 *                                                          wallet; admin: a system account
 *   GET  /api/v2/accounts/{client}/{name}                  one client account by its
 *                                                          qualified name (the admin
 *                                                          token's form; a client's own)
 *
 * All take an API key or the admin token (ROUTE_API_KEY). Who may see what
 * is account_resolve's (account.h), in one place: another client's account
 * answers 404 not_found exactly as a missing one does. The admin token has
 * no namespace of its own, so it creates no accounts (403 forbidden: a
 * client's account is the client's to create) and lists every client's,
 * named "<client_id>/<name>".
 *
 * Error codes: invalid_account_name, invalid_metadata, invalid_body,
 * invalid_parameter, invalid_wallet (a malformed 0x name), unknown_field (400); forbidden (403); not_found
 * (404); account_exists (409). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "errors.h"
#include "http.h"
#include "ledger.h"
#include "route_table.h"
#include "reqcheck.h"
#include "settled.h"
#include "present.h"
#include "banned.h"

#define PAGE_DEFAULT 50
#define PAGE_MAX 500

/* An account as every route shows it, named as the caller names it. */
static json_t *account_json(const struct account *a, const char *caller,
			    const struct ledger_balance *b)
{
	char shown[ACCOUNT_QNAME_MAX + 1];
	json_t *meta = NULL, *o;

	account_display_name(a, caller, shown);
	if (a->metadata[0])
		meta = json_loads(a->metadata, 0, NULL);
	o = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:b, s:b, s:o, s:o}", "id", a->id,
		      "name", shown, "kind", account_kind_str(a->kind), "wallet",
		      present_opt_str(a->wallet), "referrer", present_opt_str(a->referrer),
		      "client_id", present_opt_str(a->client_id), "balance", present_amount(b->balance),
		      "held", present_amount(b->held), "available", present_amount(b->available),
		      "overdraft", a->may_go_negative, "may_go_negative", a->may_go_negative, "metadata",
		      meta ? meta : json_null(), "created_at", present_time(a->created_at));
	return o;
}

static struct ledger_balance stored_balance(const struct account *a)
{
	struct ledger_balance b = { a->balance, a->held, a->balance - a->held };

	return b;
}

/* ---- POST /api/v2/accounts ---- */

struct create_req {
	char client_id[ACCOUNT_CLIENT_MAX + 1];
	char name[ACCOUNT_NAME_MAX + 1];
	bool overdraft;
	char *metadata;     /* req_alloc'd compact JSON, or NULL */
};

static enum st_rc create_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct create_req *r = arg;
	struct account a;
	struct ledger_balance b = { 0 };
	char location[64 + ACCOUNT_NAME_MAX];
	enum st_rc rc;

	rc = account_create_client(tx, r->client_id, r->name, r->overdraft, r->metadata, &a);
	if (rc == ST_CONFLICT)
		return unit_error(resp, ERR_ACCOUNT_EXISTS, json_pack("{s:s}", "name", r->name));
	if (rc)
		return rc;
	snprintf(location, sizeof(location), "/api/v2/accounts/%s", a.name);
	rc = resp_location(resp, location);
	return rc ? rc : resp_ok(resp, account_json(&a, r->client_id, &b));
}

enum st_rc route_account_create(struct req_ctx *rq)
{
	json_t *body = req_json(rq);
	json_t *name = json_object_get(body, "name"), *od = json_object_get(body, "overdraft");
	json_t *meta = json_object_get(body, "metadata");
	struct create_req *r;

	if (!strcmp(req_client_id(rq), "admin"))
		return req_error(rq, ERR_ADMIN_HAS_NO_ACCOUNTS, NULL);
	r = req_alloc(rq, sizeof(*r));
	if (!r)
		return ST_NOMEM;
	if (!json_is_string(name) || !account_name_valid(json_string_value(name), json_string_length(name)))
		return req_error(rq, ERR_INVALID_ACCOUNT_NAME, NULL);
	if (od && !json_is_boolean(od))
		return req_error(rq, ERR_INVALID_OVERDRAFT, NULL);
	if (reqcheck_metadata(rq, meta, &r->metadata))
		return ST_OK;
	snprintf(r->name, sizeof(r->name), "%s", json_string_value(name));
	snprintf(r->client_id, sizeof(r->client_id), "%s", req_client_id(rq));
	r->overdraft = od && json_is_true(od);
	return req_commit(rq, create_unit, r);
}

/* ---- GET /api/v2/accounts ---- */

struct list_read {
	const char *client_id;   /* NULL: the admin token, every client's */
	const char *after;
	int limit;
	struct account *rows;
	size_t n;
	bool more;
};

static enum st_rc list_unit(struct tx *tx, void *arg)
{
	struct list_read *r = arg;

	return account_list_client(tx, r->client_id, r->after, r->limit, &r->rows, &r->n, &r->more);
}

enum st_rc route_account_list(struct req_ctx *rq)
{
	const char *caller = req_client_id(rq);
	struct list_read r = { .client_id = strcmp(caller, "admin") ? caller : NULL,
			       .after = req_query(rq, "after"), .limit = PAGE_DEFAULT };
	const char *limit = req_query(rq, "limit");
	char next[ACCOUNT_QNAME_MAX + 1];
	json_t *data, *body;
	enum st_rc rc;

	if (limit && reqcheck_limit(rq, limit, PAGE_MAX, &r.limit))
		return ST_OK;
	rc = store_read(req_app(rq)->store, list_unit, &r);
	if (rc == ST_INVALID)
		return req_error(rq, ERR_ACCOUNTS_AFTER, NULL);
	if (rc)
		return req_error(rq, ERR_STORE_READ, NULL);
	data = json_array();
	for (size_t i = 0; data && i < r.n; i++) {
		struct ledger_balance b = stored_balance(&r.rows[i]);
		json_t *a = account_json(&r.rows[i], caller, &b);

		if (!a || json_array_append_new(data, a)) {
			json_decref(data);
			data = NULL;
		}
	}
	if (r.more && r.n)
		account_display_name(&r.rows[r.n - 1], caller, next);
	body = data ? json_pack("{s:o, s:o, s:i}", "data", data, "next_after",
				r.more && r.n ? json_string(next) : json_null(), "limit", r.limit)
		    : NULL;
	free(r.rows);
	if (!body)
		return req_error(rq, ERR_OUT_OF_MEMORY, NULL);
	return req_ok(rq, body);
}

/* ---- GET /api/v2/accounts/{account} and /{client}/{name} ---- */

struct account_read {
	const char *caller;
	const char *name;
	struct account a;
	struct ledger_balance b;
};

static enum st_rc account_read_unit(struct tx *tx, void *arg)
{
	struct account_read *r = arg;
	enum st_rc rc = account_resolve(tx, r->caller, r->name, ACCOUNT_READ, &r->a);

	return rc ? rc : ledger_balance(tx, r->a.id, &r->b);
}

static enum st_rc reply_account(struct req_ctx *rq, const char *name)
{
	struct account_read r = { .caller = req_client_id(rq), .name = name };
	enum st_rc rc;

	if (!name)
		return req_error(rq, ERR_ACCOUNT_NOT_FOUND, NULL);
	if (name[0] == '0' && (name[1] == 'x' || name[1] == 'X')) {
		char wallet[WALLET_LEN + 1];

		/* A malformed wallet is nobody's account: say what is wrong. */
		if (parse_wallet(name, strlen(name), wallet))
			return req_error(rq, ERR_INVALID_WALLET, json_pack("{s:s}", "field", "account"));
	}
	rc = store_read(req_app(rq)->store, account_read_unit, &r);
	if (rc == ST_NOT_FOUND)
		return req_error(rq, ERR_ACCOUNT_NOT_FOUND, NULL);
	if (rc)
		return req_error(rq, ERR_STORE_READ, NULL);
	return req_ok(rq, account_json(&r.a, r.caller, &r.b));
}

enum st_rc route_account_get(struct req_ctx *rq)
{
	return reply_account(rq, req_param(rq, "account"));
}

enum st_rc route_account_get_qualified(struct req_ctx *rq)
{
	const char *client = req_param(rq, "client"), *name = req_param(rq, "name");
	char *q;
	size_t n;

	if (!client || !name)
		return req_error(rq, ERR_ACCOUNT_NOT_FOUND, NULL);
	n = strlen(client) + strlen(name) + 2;
	q = req_alloc(rq, n);
	if (!q)
		return ST_NOMEM;
	snprintf(q, n, "%s/%s", client, name);
	return reply_account(rq, q);
}

/* routes_ledger.c — ledger reads of the v2 API (SPEC sections 8, 13):
 *
 *   GET /api/v2/ledger/transactions?account=&after=&limit= keyset-paginated entries
 *
 * (The accounts themselves are routes_accounts.c's.) It takes an API key
 * or the admin token (ROUTE_API_KEY) and reads on a read connection
 * (store_read): a consistent snapshot, no writer involved. account= names
 * a wallet (0x + 40 hex, any case) or an account. The admin token reads
 * every entry and names any account (system accounts by name, a client's
 * as <client_id>/<name>, any by id); a client reads the entries of its own
 * accounts (all of them when account= is absent) or of a wallet, and any
 * other name is 404 account_not_found, as a missing one. Amounts are JSON
 * strings.
 *
 * Pagination: entries in id order; `after` is the last id seen (0 or
 * absent: from the start), `limit` 1..500 (default 50; larger values are
 * capped at 500). next_after is the id to pass next, or null on the last
 * page. Ids only grow in commit order, so a page never skips an entry that
 * commits while a client is paging. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "clock.h"
#include "errors.h"
#include "http.h"
#include "ledger.h"
#include "route_table.h"
#include "settled.h"
#include "validate.h"
#include "present.h"
#include "banned.h"

#define PAGE_DEFAULT 50

/* A non-negative decimal integer without sign, spaces or leading zeros
 * (except "0"), fitting in int64_t. */
static bool parse_count(const char *s, int64_t *out)
{
	int64_t v = 0;
	size_t n = strlen(s);

	if (n == 0 || n > 19 || (n > 1 && s[0] == '0'))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, s[i] - '0', &v))
			return false;
	}
	*out = v;
	return true;
}

/* Resolves account= for the caller. The admin token names any account by
 * wallet or id (system accounts by name); a client what account_resolve
 * lets it read (its own accounts, wallets). ST_INVALID: a 0x name that is
 * not a wallet; ST_NOT_FOUND: none the caller may read. */
static enum st_rc find_account(struct tx *tx, const char *caller, const char *name, struct account *out)
{
	char wallet[WALLET_LEN + 1];

	if ((name[0] == '0' && (name[1] == 'x' || name[1] == 'X'))) {
		if (parse_wallet(name, strlen(name), wallet))
			return ST_INVALID;
		return account_by_wallet(tx, wallet, out);
	}
	if (strcmp(caller, "admin"))
		return account_resolve(tx, caller, name, ACCOUNT_READ, out);
	if (strchr(name, '/'))
		return account_resolve(tx, caller, name, ACCOUNT_READ, out);
	if (strlen(name) > ACCOUNT_ID_MAX)
		return ST_NOT_FOUND;
	return account_by_id(tx, name, out);
}

/* ---- GET /api/v2/ledger/transactions ---- */

struct page_read {
	const char *caller;      /* req_client_id */
	const char *account;     /* as given, or NULL */
	int64_t after;
	int limit;
	struct ledger_entry_row *rows;
	size_t n;
	bool more;
};

static enum st_rc page_read_unit(struct tx *tx, void *arg)
{
	struct page_read *r = arg;
	struct account a;
	const char *account_id = NULL;
	enum st_rc rc;

	rc = ledger_page_begin(tx);
	if (rc)
		return rc;
	if (r->account) {
		rc = find_account(tx, r->caller, r->account, &a);
		if (rc)
			return rc;
		account_id = a.id;
	}
	/* A client sees the entries of its own accounts (or of the one it
	 * named); the admin token every entry. */
	return ledger_entries_page_owned(tx, strcmp(r->caller, "admin") ? r->caller : NULL, account_id,
					 r->after, r->limit, &r->rows, &r->n, &r->more);
}

static json_t *entry_json(const struct ledger_entry_row *e)
{
	return json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:o, s:o}", "id", (json_int_t)e->id, "tx_id",
			 e->tx_id, "kind", e->kind, "account", e->wallet[0] ? e->wallet : e->account_id,
			 "account_id", e->account_id, "direction",
			 e->dir == LEDGER_CREDIT ? "credit" : "debit", "amount", present_amount(e->amount),
			 "created_at", present_time(e->created_at));
}

enum st_rc route_ledger_transactions(struct req_ctx *rq)
{
	struct page_read r = { .caller = req_client_id(rq), .account = req_query(rq, "account"),
			       .limit = PAGE_DEFAULT };
	const char *after = req_query(rq, "after"), *limit = req_query(rq, "limit");
	json_t *data, *body;
	int64_t v;
	enum st_rc rc;

	if (limit) {
		if (!parse_count(limit, &v) || v < 1)
			return req_error(rq, ERR_LIMIT_TO_500, NULL);
		r.limit = v > LEDGER_PAGE_MAX ? LEDGER_PAGE_MAX : (int)v;
	}
	if (after && !parse_count(after, &r.after))
		return req_error(rq, ERR_LEDGER_AFTER, NULL);
	if (r.account && !*r.account)
		r.account = NULL;
	rc = store_read(req_app(rq)->store, page_read_unit, &r);
	if (rc == ST_INVALID)
		return req_error(rq, ERR_LEDGER_ACCOUNT, NULL);
	if (rc == ST_NOT_FOUND)
		return req_error(rq, ERR_LEDGER_ACCOUNT_NOT_FOUND, NULL);
	if (rc)
		return req_error(rq, ERR_STORE_READ, NULL);
	data = json_array();
	for (size_t i = 0; data && i < r.n; i++) {
		json_t *e = entry_json(&r.rows[i]);

		if (!e || json_array_append_new(data, e)) {
			json_decref(data);
			data = NULL;
		}
	}
	body = data ? json_pack("{s:o, s:o, s:i}", "data", data, "next_after",
				r.more && r.n ? json_integer((json_int_t)r.rows[r.n - 1].id) : json_null(),
				"limit", r.limit)
		    : NULL;
	free(r.rows);
	if (!body)
		return req_error(rq, ERR_OUT_OF_MEMORY, NULL);
	return req_ok(rq, body);
}

/* routes_admin_lists.c — the operator's lists (the console's and the
 * runbooks'), admin only, newest first, keyset-paginated:
 *
 *   GET /api/admin/intents?wallet=&status=&after=&limit=
 *   GET /api/admin/payouts/batches?status=&after=&limit=
 *   GET /api/admin/api-keys?after=&limit=
 *
 * Each answers {"data": [...], "next_after": id or null, "limit": n}; pass
 * next_after as after for the next page. A page is ordered by (created_at,
 * id) descending and `after` names the last row seen, so rows written
 * meanwhile never shift a page. An `after` that names no row gives an
 * empty page. Details stay with their own routes (GET /api/v2/intents/{id}
 * for an intent's transitions, GET /api/v2/payouts/batch/{id} for items).
 *
 * The three are one table-driven reader: each list is its SQL, its filters
 * and its columns, shown the way present.h shows them (amounts as strings,
 * times RFC 3339, absent text null). API keys show no secret: the hash
 * stays in the store. Error code: invalid_parameter (400, with field). */
#include <jansson.h>
#include <string.h>

#include "errors.h"
#include "http.h"
#include "present.h"
#include "route_table.h"
#include "settled.h"
#include "store.h"
#include "validate.h"
#include "banned.h"

#define PAGE_DEFAULT 50
#define PAGE_MAX 200
#define MAX_FILTERS 2
#define ID_MAX 64

enum col_kind { COL_TEXT, COL_INT, COL_TIME, COL_AMOUNT };

struct list_col {
	const char *name;
	enum col_kind kind;
};

/* A query parameter bound as one SQL parameter (NULL when absent): either
 * one of allowed, or (allowed NULL) a wallet address, canonicalised; err
 * answers any other value. */
struct list_filter {
	const char *param;
	const char *const *allowed;
	enum err_id err;
};

struct list_spec {
	/* $1..$n the filters, $n+1 the cursor id, $n+2 the limit. Column 0 is
	 * the row's id (the cursor). */
	const char *sql;
	struct list_filter filters[MAX_FILTERS];
	int nfilters;
	const struct list_col *cols;
	int ncols;
};

/* The cursor clause for a table: rows strictly after the row named by $k
 * in (created_at DESC, id DESC) order. CASTs type the parameters for
 * PostgreSQL (an untyped parameter compared with NULL has no type). */
#define AFTER(table, k)                                                                            \
	"(CAST($" k " AS TEXT) IS NULL OR created_at < (SELECT created_at FROM " table              \
	" WHERE id = $" k ") OR (created_at = (SELECT created_at FROM " table " WHERE id = $" k    \
	") AND id < $" k "))"
#define FILTER(col, k) "(CAST($" k " AS TEXT) IS NULL OR " col " = $" k ")"

static const char *const intent_statuses[] = { "PENDING", "LOCKED", "SUBMITTED", "CONFIRMED",
					      "SETTLED", "FAILED", NULL };
static const char *const batch_statuses[] = { "PENDING_APPROVAL", "APPROVED", "COMPLETED", NULL };

static const struct list_col intent_cols[] = {
	{ "id", COL_TEXT },	      { "kind", COL_TEXT },	    { "wallet", COL_TEXT },
	{ "amount", COL_AMOUNT },     { "status", COL_TEXT },	    { "tx_hash", COL_TEXT },
	{ "failure_reason", COL_TEXT }, { "created_at", COL_TIME }, { "updated_at", COL_TIME },
};

static const struct list_spec intents_list = {
	.sql = "SELECT id, kind, wallet, amount, status, tx_hash, failure_reason, created_at, updated_at"
	       " FROM intents WHERE " FILTER("wallet", "1") " AND " FILTER("status", "2")
	       " AND " AFTER("intents", "3") " ORDER BY created_at DESC, id DESC LIMIT $4",
	.filters = { { "wallet", NULL, ERR_LIST_WALLET }, { "status", intent_statuses, ERR_LIST_INTENT_STATUS } },
	.nfilters = 2,
	.cols = intent_cols,
	.ncols = sizeof(intent_cols) / sizeof(intent_cols[0]),
};

static const struct list_col batch_cols[] = {
	{ "id", COL_TEXT },	       { "client_id", COL_TEXT },     { "reference", COL_TEXT },
	{ "status", COL_TEXT },	       { "item_count", COL_INT },     { "total_amount", COL_AMOUNT },
	{ "remaining", COL_INT },      { "created_at", COL_TIME },    { "approved_at", COL_TIME },
	{ "approved_by", COL_TEXT },   { "completed_at", COL_TIME },
};

static const struct list_spec batches_list = {
	.sql = "SELECT id, client_id, reference, status, item_count, total_amount, remaining, created_at,"
	       " approved_at, approved_by, completed_at FROM payout_batches WHERE " FILTER("status", "1")
	       " AND " AFTER("payout_batches", "2") " ORDER BY created_at DESC, id DESC LIMIT $3",
	.filters = { { "status", batch_statuses, ERR_LIST_BATCH_STATUS } },
	.nfilters = 1,
	.cols = batch_cols,
	.ncols = sizeof(batch_cols) / sizeof(batch_cols[0]),
};

static const struct list_col key_cols[] = {
	{ "id", COL_TEXT },	    { "client_id", COL_TEXT },	{ "prefix", COL_TEXT },
	{ "name", COL_TEXT },	    { "created_at", COL_TIME }, { "expires_at", COL_TIME },
	{ "revoked_at", COL_TIME }, { "replaced_by", COL_TEXT },
};

static const struct list_spec keys_list = {
	.sql = "SELECT id, client_id, prefix, name, created_at, expires_at, revoked_at, replaced_by"
	       " FROM api_keys WHERE " AFTER("api_keys", "1") " ORDER BY created_at DESC, id DESC LIMIT $2",
	.nfilters = 0,
	.cols = key_cols,
	.ncols = sizeof(key_cols) / sizeof(key_cols[0]),
};

struct list_page {
	const struct list_spec *spec;
	struct st_val params[MAX_FILTERS + 2];
	int nparams;
	struct st_rows *rows;
};

static enum st_rc list_unit(struct tx *tx, void *arg)
{
	struct list_page *p = arg;

	return tx_query(tx, p->spec->sql, p->nparams, p->params, &p->rows);
}

static json_t *cell_json(const struct st_rows *rows, int r, int c, enum col_kind kind)
{
	const char *s = rows_text(rows, r, c);

	if (!s)
		return json_null();
	switch (kind) {
	case COL_INT:
		return json_integer((json_int_t)rows_i64(rows, r, c));
	case COL_TIME:
		return present_time(rows_i64(rows, r, c));
	case COL_AMOUNT:
		return present_amount(rows_i64(rows, r, c));
	case COL_TEXT:
		break;
	}
	return present_opt_str(s);
}

static bool one_of(const char *s, const char *const *allowed)
{
	for (; *allowed; allowed++)
		if (!strcmp(s, *allowed))
			return true;
	return false;
}

/* A non-negative decimal integer of at most 3 digits. */
static bool parse_limit(const char *s, int *out)
{
	size_t n = strlen(s);
	int v = 0;

	if (n == 0 || n > 3)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

static enum st_rc admin_list(struct req_ctx *rq, const struct list_spec *spec)
{
	struct list_page *p = req_alloc(rq, sizeof(*p));
	char *wallet = req_alloc(rq, WALLET_LEN + 1);
	const char *limit_s = req_query(rq, "limit"), *after = req_query(rq, "after");
	json_t *data, *body = NULL;
	int limit = PAGE_DEFAULT, n;
	bool more;
	enum st_rc rc;

	if (!p || !wallet)
		return ST_NOMEM;
	p->spec = spec;
	for (int i = 0; i < spec->nfilters; i++) {
		const struct list_filter *f = &spec->filters[i];
		const char *v = req_query(rq, f->param);

		if (!v || !*v) {
			p->params[p->nparams++] = SV_NULLV;
		} else if (f->allowed ? !one_of(v, f->allowed)
				      : parse_wallet(v, strlen(v), wallet) != ST_OK) {
			return req_error(rq, f->err, NULL);
		} else {
			p->params[p->nparams++] = f->allowed ? SV_S(v) : SV_S(wallet);
		}
	}
	if (limit_s && (!parse_limit(limit_s, &limit) || limit < 1))
		return req_error(rq, ERR_LIMIT_TO_200, NULL);
	if (limit > PAGE_MAX)
		limit = PAGE_MAX;
	if (after && (!*after || strlen(after) > ID_MAX))
		return req_error(rq, ERR_LIST_AFTER, NULL);
	p->params[p->nparams++] = after ? SV_S(after) : SV_NULLV;
	/* One more than asked: tells whether a next page exists. */
	p->params[p->nparams++] = SV_I(limit + 1);
	rc = store_read(req_app(rq)->store, list_unit, p);
	if (rc)
		return req_error(rq, ERR_STORE_READ, NULL);
	more = p->rows->nrows > limit;
	n = more ? limit : p->rows->nrows;
	data = json_array();
	for (int r = 0; data && r < n; r++) {
		json_t *row = json_object();

		for (int c = 0; row && c < spec->ncols; c++)
			if (json_object_set_new(row, spec->cols[c].name,
						cell_json(p->rows, r, c, spec->cols[c].kind))) {
				json_decref(row);
				row = NULL;
			}
		if (!row || json_array_append_new(data, row)) {
			json_decref(data);
			data = NULL;
		}
	}
	if (data)
		body = json_pack("{s:o, s:o, s:i}", "data", data, "next_after",
				 more ? json_string(rows_text(p->rows, n - 1, 0)) : json_null(), "limit",
				 limit);
	rows_free(p->rows);
	if (!body)
		return req_error(rq, ERR_OUT_OF_MEMORY, NULL);
	return req_ok(rq, body);
}

enum st_rc route_admin_intents(struct req_ctx *rq)
{
	return admin_list(rq, &intents_list);
}

enum st_rc route_admin_payout_batches(struct req_ctx *rq)
{
	return admin_list(rq, &batches_list);
}

enum st_rc route_admin_api_keys(struct req_ctx *rq)
{
	return admin_list(rq, &keys_list);
}

/* account.c — the accounts table. See account.h. */
#include "account.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "fmt.h"
#include "banned.h"

static const struct {
	const char *name;
	bool may_go_negative;
} system_accounts[] = {
	/* external, revenue and commissions mirror money outside the system,
	 * so they may go negative (SPEC section 6); the others never may. */
	{ ACCT_EXTERNAL, true },
	{ ACCT_TREASURY, false },
	{ ACCT_REVENUE, true },
	{ ACCT_COMMISSIONS, true },
	{ ACCT_PAYOUTS_CLEARING, false },
};

/* balance: the stored one plus the hot account's deltas not folded yet
 * (migration 008; always none on SQLite and for accounts that may not go
 * negative, which postings move in place). The sum is asked only of an
 * account that may go negative: a client account or wallet paying a hold or
 * a transfer never has a delta, and its lookup summed nothing at the cost
 * of a probe, or of a scan of every pending delta (revenue's) whenever the
 * planner judged account_deltas small (an ANALYZE of a nearly empty table:
 * a hold 0.61M -> 0.83M PostgreSQL instructions with ~250 deltas pending).
 * The account_balances view still sums every account's deltas, so
 * reconciliation sees a delta written by hand to any account. */
#define ACCOUNT_COLS_WITH(unfolded) \
	"id, wallet, referrer, CASE WHEN may_go_negative = 1 THEN balance + " unfolded " ELSE balance END," \
	" held, created_at, may_go_negative, client_id, name, metadata"
#define ACCOUNT_COLS_SQLITE \
	ACCOUNT_COLS_WITH("coalesce((SELECT sum(d.delta) FROM account_deltas d WHERE d.account_id = accounts.id), 0)")
/* PostgreSQL builds every subquery of a plan at each execution, used or
 * not: the sum above cost every lookup ~27k instructions (a hold's 433k)
 * even where the CASE never ran it. The function (migration 034, the same
 * sum on account_deltas_account, its plan kept per connection) costs
 * nothing where it is not called. */
#define ACCOUNT_COLS_PG ACCOUNT_COLS_WITH("account_unfolded(accounts.id)")

/* The same with the balance as stored, for a system account credited by
 * id: summing a hot account's unfolded deltas costs a row each (revenue
 * gathers one per transfer between folds, so a read there grew with the
 * rate of transfers) and nothing that credits an account reads its
 * balance. */
#define ACCOUNT_COLS_STORED \
	"id, wallet, referrer, balance, held, created_at, may_go_negative, client_id, name, metadata"

static const char *const kind_names[] = { "wallet", "system", "client" };

const char *account_kind_str(enum account_kind k)
{
	return (unsigned)k < 3 ? kind_names[k] : "unknown";
}

static void account_from_row_at(const struct st_rows *r, int row, struct account *a)
{
	const char *w = rows_text(r, row, 1), *ref = rows_text(r, row, 2);
	const char *client = rows_text(r, row, 7), *name = rows_text(r, row, 8);
	const char *meta = rows_text(r, row, 9);

	memset(a, 0, sizeof(*a));
	fmt_str(a->id, sizeof(a->id), rows_text(r, row, 0));
	fmt_str(a->wallet, sizeof(a->wallet), w ? w : "");
	fmt_str(a->referrer, sizeof(a->referrer), ref ? ref : "");
	a->balance = rows_i64(r, row, 3);
	a->held = rows_i64(r, row, 4);
	a->created_at = rows_i64(r, row, 5);
	a->may_go_negative = rows_i64(r, row, 6) != 0;
	fmt_str(a->client_id, sizeof(a->client_id), client ? client : "");
	fmt_str(a->metadata, sizeof(a->metadata), meta ? meta : "");
	if (w) {
		a->kind = ACCOUNT_WALLET;
	} else if (client) {
		/* the stored name is "<client_id>/<name>": keep the name */
		size_t n = strlen(client);

		a->kind = ACCOUNT_CLIENT;
		if (name && strlen(name) > n && name[n] == '/')
			fmt_str(a->name, sizeof(a->name), name + n + 1);
	} else {
		a->kind = ACCOUNT_SYSTEM;
		fmt_str(a->name, sizeof(a->name), name ? name : a->id);
	}
}

static void account_from_row(const struct st_rows *r, struct account *a)
{
	account_from_row_at(r, 0, a);
}

static enum st_rc account_query(struct tx *tx, const char *sql, const char *arg, struct account *out)
{
	struct st_rows *rows = NULL;
	enum st_rc rc = tx_query(tx, sql, ST_ARGS(SV_S(arg)), &rows);

	if (rc)
		return rc;
	if (rows->nrows)
		account_from_row(rows, out);
	else
		rc = ST_NOT_FOUND;
	rows_free(rows);
	return rc;
}

enum st_rc account_by_wallet(struct tx *tx, const char *wallet, struct account *out)
{
	return account_query(tx, tx_dialect(tx) == ST_PG
					 ? "SELECT " ACCOUNT_COLS_PG " FROM accounts WHERE wallet = $1"
					 : "SELECT " ACCOUNT_COLS_SQLITE " FROM accounts WHERE wallet = $1",
			     wallet, out);
}

enum st_rc account_payee_by_wallet(struct tx *tx, const char *wallet, struct account_payee *out)
{
	struct st_rows *rows = NULL;
	/* accounts.referrer references accounts(wallet): the join finds it. */
	enum st_rc rc = tx_query_one(tx,
				     "SELECT a.id, a.referrer, r.id FROM accounts a"
				     " LEFT JOIN accounts r ON r.wallet = a.referrer WHERE a.wallet = $1",
				     ST_ARGS(SV_S(wallet)), &rows);

	if (rc)
		return rc;
	rows_copy(rows, 0, 0, out->id, sizeof(out->id));
	rows_copy(rows, 0, 1, out->referrer, sizeof(out->referrer));
	rows_copy(rows, 0, 2, out->referrer_id, sizeof(out->referrer_id));
	rows_free(rows);
	return ST_OK;
}

enum st_rc account_by_id(struct tx *tx, const char *id, struct account *out)
{
	return account_query(tx, tx_dialect(tx) == ST_PG
					 ? "SELECT " ACCOUNT_COLS_PG " FROM accounts WHERE id = $1"
					 : "SELECT " ACCOUNT_COLS_SQLITE " FROM accounts WHERE id = $1",
			     id, out);
}

enum st_rc account_register(struct tx *tx, const char *wallet, const char *referrer,
			    struct account *out)
{
	struct account ref;
	char id[ACCOUNT_ID_MAX + 1];
	enum st_rc rc;

	if (referrer) {
		if (!strcmp(referrer, wallet))
			return ST_INVALID;
		rc = account_by_wallet(tx, referrer, &ref);
		if (rc)
			return rc; /* ST_NOT_FOUND: unknown referrer */
	}
	tx_new_id(tx, "acct_", id);
	/* The unique index on wallet decides a race between two registrations;
	 * we never check first and insert second. */
	rc = tx_exec(tx,
		     "INSERT INTO accounts (id, wallet, name, kind, referrer, created_at)"
		     " VALUES ($1, $2, NULL, 'wallet', $3, $4)",
		     ST_ARGS(SV_S(id), SV_S(wallet), SV_SOPT(referrer), SV_I(tx_now_ms(tx))), NULL);
	if (rc == ST_UNIQUE)
		return ST_CONFLICT;
	if (rc)
		return rc;
	memset(out, 0, sizeof(*out));
	fmt_str(out->id, sizeof(out->id), id);
	fmt_str(out->wallet, sizeof(out->wallet), wallet);
	fmt_str(out->referrer, sizeof(out->referrer), referrer ? referrer : "");
	out->created_at = tx_now_ms(tx);
	return ST_OK;
}

static const struct st_rows_sql register_rows = {
	.head = "INSERT INTO accounts (id, wallet, name, kind, referrer, created_at) VALUES ",
	.row = "($1, $2, NULL, 'wallet', NULL, $3)",
	.tail = "",
	.width = 3,
};

enum st_rc account_register_many(struct tx *tx, const struct account_new *accts, int n)
{
	struct st_val *v = calloc((size_t)n * 3, sizeof(*v));
	int64_t changes = 0;
	enum st_rc rc;

	if (!v)
		return ST_NOMEM;
	for (int i = 0; i < n; i++) {
		v[3 * i] = SV_S(accts[i].id);
		v[3 * i + 1] = SV_S(accts[i].wallet);
		v[3 * i + 2] = SV_I(accts[i].created_at);
	}
	rc = tx_exec_rows(tx, &register_rows, n, v, &changes);
	free(v);
	if (rc == ST_UNIQUE || (rc == ST_OK && changes != n))
		return ST_CONFLICT;
	return rc;
}

/* The account (ON CONFLICT on the wallet instead of a unique violation,
 * which would abort the transaction: a taken wallet is an answer, not a
 * failure), then, if it was written, the key's record: `a` runs first
 * because k reads it. The record's ON CONFLICT is idem_record's: an
 * expired row is taken over, a live one (another request's, committed: a
 * concurrent writer of the key is waited for) left alone, and then k
 * returns no row. */
static const char register_recorded_sql[] =
	"WITH a AS ("
	" INSERT INTO accounts (id, wallet, name, kind, referrer, created_at)"
	" VALUES ($1, $2, NULL, 'wallet', NULL, $3)"
	" ON CONFLICT (wallet) DO NOTHING RETURNING 1),"
	" k AS ("
	" INSERT INTO idempotency_keys"
	" (scope, idem_key, fingerprint, owner, status, location, body, created_at, expires_at)"
	" SELECT $4, $5, $6, $7, CAST($8 AS BIGINT), $9, $10, $3, CAST($11 AS BIGINT)"
	" WHERE EXISTS (SELECT 1 FROM a)"
	" ON CONFLICT (scope, idem_key) DO UPDATE SET"
	"  fingerprint = excluded.fingerprint, owner = excluded.owner,"
	"  status = excluded.status, location = excluded.location, body = excluded.body,"
	"  created_at = excluded.created_at, expires_at = excluded.expires_at"
	" WHERE idempotency_keys.expires_at <= excluded.created_at"
	" RETURNING 1)"
	" SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM k)";

enum st_rc account_register_recorded(struct tx *tx, const struct account_new *a,
				     const struct idem_new_record *rec, const char *owner,
				     int64_t ttl_ms, bool *registered, bool *recorded)
{
	const struct idem_answer *ok = &rec->ans;
	struct st_rows *rows = NULL;
	enum st_rc rc;

	*registered = *recorded = false;
	if (tx_dialect(tx) != ST_PG)
		return ST_INTERNAL;
	rc = tx_query_one(tx, register_recorded_sql,
			  ST_ARGS(SV_S(a->id), SV_S(a->wallet), SV_I(a->created_at), SV_S(rec->scope),
				  SV_S(rec->key), SV_S(rec->fingerprint), SV_S(owner), SV_I(ok->status),
				  SV_SOPT(ok->location), SV_SN(ok->body, ok->body_len),
				  SV_I(a->created_at + ttl_ms)),
			  &rows);
	if (rc)
		return rc;
	*registered = rows_i64(rows, 0, 0) > 0;
	*recorded = rows_i64(rows, 0, 1) > 0;
	rows_free(rows);
	return ST_OK;
}

/* account_register_recorded_many's statement, one for any n: the rows
 * come as one array a column (unnest), not as n rows of parameters, so a
 * merged run of any size is one prepared statement and one round trip
 * (tx_exec_rows' chunks of 64, 32, ... 1 rows would be one round trip
 * each). The records first (k, idem_record's ON CONFLICT: a live row is
 * left alone and returns no row), then the accounts, only when k wrote
 * every row of v (a finished key stops the run before any account is
 * written, as the two-statement way did), ON CONFLICT (wallet) DO NOTHING
 * so a taken wallet is a short count, not an error. The rows it returns
 * are the accounts written: n exactly when all of it was. */
static const char register_recorded_many_sql[] =
	"WITH v AS (SELECT * FROM unnest(CAST($1 AS TEXT[]), CAST($2 AS TEXT[]),"
	" CAST($3 AS TEXT[]), CAST($4 AS BIGINT[]), CAST($5 AS TEXT[]), CAST($6 AS TEXT[]),"
	" CAST($7 AS TEXT[]), CAST($8 AS TEXT[]), CAST($9 AS BIGINT[]))"
	" AS v (scope, idem_key, fingerprint, status, location, body, id, wallet, acct_created_at)),"
	" k AS ("
	" INSERT INTO idempotency_keys"
	" (scope, idem_key, fingerprint, owner, status, location, body, created_at, expires_at)"
	" SELECT scope, idem_key, fingerprint, $10, status, location, body,"
	" CAST($11 AS BIGINT), CAST($12 AS BIGINT) FROM v"
	" ON CONFLICT (scope, idem_key) DO UPDATE SET"
	"  fingerprint = excluded.fingerprint, owner = excluded.owner,"
	"  status = excluded.status, location = excluded.location, body = excluded.body,"
	"  created_at = excluded.created_at, expires_at = excluded.expires_at"
	" WHERE idempotency_keys.expires_at <= excluded.created_at"
	" RETURNING 1),"
	" a AS ("
	" INSERT INTO accounts (id, wallet, name, kind, referrer, created_at)"
	" SELECT id, wallet, NULL, 'wallet', NULL, acct_created_at FROM v"
	" WHERE (SELECT count(*) FROM k) = (SELECT count(*) FROM v)"
	" ON CONFLICT (wallet) DO NOTHING RETURNING 1)"
	" SELECT 1 FROM a";

#define RRM_ARRAYS 9
#define RRM_ARRAY_MAX (64u << 20) /* a column's literal; far above any batch */

enum st_rc account_register_recorded_many(struct tx *tx, const struct account_new *accts,
					  const struct idem_new_record *recs, int n,
					  const char *owner, int64_t ttl_ms, bool *all)
{
	struct buf col[RRM_ARRAYS];
	int64_t now = tx_now_ms(tx), written = 0;
	enum st_rc rc = ST_OK;

	*all = false;
	if (tx_dialect(tx) != ST_PG)
		return ST_INTERNAL;
	for (int c = 0; c < RRM_ARRAYS; c++) {
		buf_init(&col[c], RRM_ARRAY_MAX);
		if (rc == ST_OK)
			rc = buf_putc(&col[c], '{');
	}
	for (int i = 0; rc == ST_OK && i < n; i++) {
		const struct idem_answer *ans = &recs[i].ans;

		rc = buf_pg_array_text(&col[0], recs[i].scope, strlen(recs[i].scope));
		if (rc == ST_OK)
			rc = buf_pg_array_text(&col[1], recs[i].key, strlen(recs[i].key));
		if (rc == ST_OK)
			rc = buf_pg_array_text(&col[2], recs[i].fingerprint, strlen(recs[i].fingerprint));
		if (rc == ST_OK)
			rc = buf_pg_array_int(&col[3], ans->status);
		if (rc == ST_OK)
			rc = buf_pg_array_text(&col[4], ans->location,
					     ans->location ? strlen(ans->location) : 0);
		if (rc == ST_OK)
			rc = buf_pg_array_text(&col[5], ans->body, ans->body_len);
		if (rc == ST_OK)
			rc = buf_pg_array_text(&col[6], accts[i].id, strlen(accts[i].id));
		if (rc == ST_OK)
			rc = buf_pg_array_text(&col[7], accts[i].wallet, strlen(accts[i].wallet));
		if (rc == ST_OK)
			rc = buf_pg_array_int(&col[8], accts[i].created_at);
	}
	for (int c = 0; rc == ST_OK && c < RRM_ARRAYS; c++)
		rc = buf_putc(&col[c], '}');
	/* tx_exec's changes of a SELECT: the rows returned, here the accounts
	 * written. */
	if (rc == ST_OK)
		rc = tx_exec(tx, register_recorded_many_sql,
			     ST_ARGS(SV_SN(col[0].ptr, col[0].len), SV_SN(col[1].ptr, col[1].len),
				     SV_SN(col[2].ptr, col[2].len), SV_SN(col[3].ptr, col[3].len),
				     SV_SN(col[4].ptr, col[4].len), SV_SN(col[5].ptr, col[5].len),
				     SV_SN(col[6].ptr, col[6].len), SV_SN(col[7].ptr, col[7].len),
				     SV_SN(col[8].ptr, col[8].len), SV_S(owner), SV_I(now),
				     SV_I(now + ttl_ms)),
			     &written);
	for (int c = 0; c < RRM_ARRAYS; c++)
		buf_release(&col[c]);
	*all = rc == ST_OK && written == n;
	return rc;
}

enum st_rc account_ensure_system(struct tx *tx)
{
	for (size_t i = 0; i < sizeof(system_accounts) / sizeof(system_accounts[0]); i++) {
		enum st_rc rc = tx_exec(tx,
					"INSERT INTO accounts (id, wallet, name, kind, may_go_negative, created_at)"
					" VALUES ($1, NULL, $1, 'system', $2, $3)"
					" ON CONFLICT (id) DO NOTHING",
					ST_ARGS(SV_S(system_accounts[i].name),
						SV_I(system_accounts[i].may_go_negative),
						SV_I(tx_now_ms(tx))),
					NULL);
		if (rc)
			return rc;
	}
	return ST_OK;
}

/* ---- client accounts (SPEC section 13) ---- */

static bool is_system_name(const char *name)
{
	for (size_t i = 0; i < sizeof(system_accounts) / sizeof(system_accounts[0]); i++)
		if (!strcmp(name, system_accounts[i].name))
			return true;
	return false;
}

bool account_name_valid(const char *name, size_t len)
{
	if (!name || len == 0 || len > ACCOUNT_NAME_MAX || strlen(name) != len)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == ':' || c == '.' || c == '_' || c == '-'))
			return false;
	}
	if (name[0] == '0' && len > 1 && (name[1] == 'x' || name[1] == 'X'))
		return false;
	return !is_system_name(name);
}

/* "<client_id>/<name>" into out; false if it would not fit. */
static bool qualify(const char *client_id, const char *name, char out[ACCOUNT_QNAME_MAX + 1])
{
	size_t c = strlen(client_id), n = strlen(name);

	if (c == 0 || c > ACCOUNT_CLIENT_MAX || n > ACCOUNT_NAME_MAX)
		return false;
	memcpy(out, client_id, c);
	out[c] = '/';
	memcpy(out + c + 1, name, n + 1);
	return true;
}

enum st_rc account_create_client(struct tx *tx, const char *client_id, const char *name,
				 bool overdraft, const char *metadata, struct account *out)
{
	char qname[ACCOUNT_QNAME_MAX + 1], id[ACCOUNT_ID_MAX + 1];
	enum st_rc rc;

	if (!account_name_valid(name, strlen(name)) || !qualify(client_id, name, qname) ||
	    (metadata && strlen(metadata) > ACCOUNT_METADATA_MAX))
		return ST_INVALID;
	tx_new_id(tx, "acct_", id);
	/* UNIQUE (name) of 001 holds "<client_id>/<name>": unique per client. */
	rc = tx_exec(tx,
		     "INSERT INTO accounts (id, wallet, name, kind, may_go_negative, client_id, metadata,"
		     " created_at) VALUES ($1, NULL, $2, 'system', $3, $4, $5, $6)",
		     ST_ARGS(SV_S(id), SV_S(qname), SV_I(overdraft ? 1 : 0), SV_S(client_id),
			     SV_SOPT(metadata), SV_I(tx_now_ms(tx))),
		     NULL);
	if (rc == ST_UNIQUE)
		return ST_CONFLICT;
	if (rc)
		return rc;
	memset(out, 0, sizeof(*out));
	fmt_str(out->id, sizeof(out->id), id);
	out->kind = ACCOUNT_CLIENT;
	fmt_str(out->client_id, sizeof(out->client_id), client_id);
	fmt_str(out->name, sizeof(out->name), name);
	fmt_str(out->metadata, sizeof(out->metadata), metadata ? metadata : "");
	out->may_go_negative = overdraft;
	out->created_at = tx_now_ms(tx);
	return ST_OK;
}

enum st_rc account_list_client(struct tx *tx, const char *client_id, const char *after, int limit,
			       struct account **out, size_t *n_out, bool *more)
{
	char from[ACCOUNT_QNAME_MAX + 1] = "";
	struct st_rows *r = NULL;
	struct account *list = NULL;
	bool pg = tx_dialect(tx) == ST_PG;
	enum st_rc rc;

	*out = NULL;
	*n_out = 0;
	*more = false;
	if (limit < 1 || limit > 500)
		return ST_INVALID;
	if (after && *after) {
		if (client_id ? !qualify(client_id, after, from) : strlen(after) > ACCOUNT_QNAME_MAX)
			return ST_INVALID;
		if (!client_id)
			fmt_str(from, sizeof(from), after);
	}
	/* One client's names share the "<client_id>/" prefix, so ordering by
	 * the stored name orders by the client's own name. */
#define LIST_CLIENT(cols) "SELECT " cols " FROM accounts WHERE client_id = $1 AND name > $2 ORDER BY name LIMIT $3"
#define LIST_ALL(cols) "SELECT " cols " FROM accounts WHERE client_id IS NOT NULL AND name > $1 ORDER BY name LIMIT $2"
	if (client_id)
		rc = tx_query(tx, pg ? LIST_CLIENT(ACCOUNT_COLS_PG) : LIST_CLIENT(ACCOUNT_COLS_SQLITE),
			      ST_ARGS(SV_S(client_id), SV_S(from), SV_I(limit + 1)), &r);
	else
		rc = tx_query(tx, pg ? LIST_ALL(ACCOUNT_COLS_PG) : LIST_ALL(ACCOUNT_COLS_SQLITE),
			      ST_ARGS(SV_S(from), SV_I(limit + 1)), &r);
#undef LIST_CLIENT
#undef LIST_ALL
	if (rc)
		return rc;
	if (r->nrows) {
		int n = r->nrows > limit ? limit : r->nrows;

		list = calloc((size_t)n, sizeof(*list));
		if (!list) {
			rows_free(r);
			return ST_NOMEM;
		}
		for (int i = 0; i < n; i++)
			account_from_row_at(r, i, &list[i]);
		*n_out = (size_t)n;
		*more = r->nrows > limit;
	}
	rows_free(r);
	*out = list;
	return ST_OK;
}

/* Which row a name resolves to (resolve_plan): the rules decide the kind
 * of lookup and its key before anything is read, so that two names can be
 * looked up in one statement (account_resolve_two). */
enum lookup_kind { LK_WALLET = 0, LK_ID, LK_ID_STORED, LK_QNAME, LK_KINDS };

struct lookup {
	enum lookup_kind kind;
	char key[ACCOUNT_QNAME_MAX + 1];
};

/* c: the columns for the dialect (ACCOUNT_COLS_SQLITE or ACCOUNT_COLS_PG). */
#define LK_SQL_WALLET(c, n) "SELECT " c ", " #n " FROM accounts WHERE wallet = $" #n
#define LK_SQL_ID(c, n) "SELECT " c ", " #n " FROM accounts WHERE id = $" #n
/* A system account to credit: its balance as stored (ACCOUNT_COLS_STORED). */
#define LK_SQL_ID_STORED(c, n) "SELECT " ACCOUNT_COLS_STORED ", " #n " FROM accounts WHERE id = $" #n
#define LK_SQL_QNAME(c, n) "SELECT " c ", " #n " FROM accounts WHERE name = $" #n " AND client_id IS NOT NULL"

/* [0] SQLite, [1] PostgreSQL (lookup_dialect). */
#define LK_ONE(c) { LK_SQL_WALLET(c, 1), LK_SQL_ID(c, 1), LK_SQL_ID_STORED(c, 1), LK_SQL_QNAME(c, 1) }
static const char *const lookup_sql[2][LK_KINDS] = {
	LK_ONE(ACCOUNT_COLS_SQLITE), LK_ONE(ACCOUNT_COLS_PG),
};

/* Both lookups in one statement: each row says (its last column, 1 or 2)
 * which one it answers. */
#define LK_PAIR(c, a, b) a(c, 1) " UNION ALL " b(c, 2)
#define LK_PAIRS(c, a) { LK_PAIR(c, a, LK_SQL_WALLET), LK_PAIR(c, a, LK_SQL_ID), \
			 LK_PAIR(c, a, LK_SQL_ID_STORED), LK_PAIR(c, a, LK_SQL_QNAME) }
#define LK_ALL_PAIRS(c) { LK_PAIRS(c, LK_SQL_WALLET), LK_PAIRS(c, LK_SQL_ID), LK_PAIRS(c, LK_SQL_ID_STORED), \
			  LK_PAIRS(c, LK_SQL_QNAME) }
static const char *const lookup_pair_sql[2][LK_KINDS][LK_KINDS] = {
	LK_ALL_PAIRS(ACCOUNT_COLS_SQLITE), LK_ALL_PAIRS(ACCOUNT_COLS_PG),
};

static int lookup_dialect(const struct tx *tx)
{
	return tx_dialect(tx) == ST_PG;
}

static bool lookup_set(struct lookup *l, enum lookup_kind kind, const char *key)
{
	l->kind = kind;
	fmt_str(l->key, sizeof(l->key), key); /* wallets and system names: short */
	return true;
}

/* The rules of SPEC section 13; see account.h. Each branch decides the
 * kind of name first, then whether this caller may use it so. false: the
 * caller may not use name so (ST_NOT_FOUND, nothing to read). */
static bool resolve_plan(const char *caller, const char *name, enum account_use use, struct lookup *l)
{
	bool admin = caller && !strcmp(caller, "admin");
	const char *slash, *client;
	char wallet[WALLET_LEN + 1], cid[ACCOUNT_CLIENT_MAX + 1];

	if (!caller || !name || !*name)
		return false;
	if (name[0] == '0' && (name[1] == 'x' || name[1] == 'X')) {
		/* Wallets are shared: every client reads them and pays into
		 * them; money leaves one only through its claims, payouts, or
		 * the operator. */
		if (parse_wallet(name, strlen(name), wallet) || (use == ACCOUNT_DEBIT && !admin))
			return false;
		return lookup_set(l, LK_WALLET, wallet);
	}
	slash = strchr(name, '/');
	if (slash) {
		size_t n = (size_t)(slash - name);

		if (n == 0 || n > ACCOUNT_CLIENT_MAX)
			return false;
		memcpy(cid, name, n);
		cid[n] = '\0';
		if (!admin && strcmp(cid, caller))
			return false;
		client = cid;
		name = slash + 1;
	} else if (admin) {
		if (!is_system_name(name))
			return false;
		return lookup_set(l, use == ACCOUNT_CREDIT ? LK_ID_STORED : LK_ID, name);
	} else if (!strcmp(name, ACCT_REVENUE)) {
		return use == ACCOUNT_CREDIT && lookup_set(l, LK_ID_STORED, ACCT_REVENUE);
	} else {
		client = caller;
	}
	/* A client's own account by its name. */
	l->kind = LK_QNAME;
	return account_name_valid(name, strlen(name)) && qualify(client, name, l->key);
}

enum st_rc account_resolve(struct tx *tx, const char *caller, const char *name,
			   enum account_use use, struct account *out)
{
	struct lookup l;

	if (!resolve_plan(caller, name, use, &l))
		return ST_NOT_FOUND;
	return account_query(tx, lookup_sql[lookup_dialect(tx)][l.kind], l.key, out);
}

enum st_rc account_resolve_two(struct tx *tx, const char *caller, const char *name1,
			       enum account_use use1, struct account *out1, enum st_rc *rc1,
			       const char *name2, enum account_use use2, struct account *out2,
			       enum st_rc *rc2)
{
	struct lookup l1, l2;
	struct st_rows *rows = NULL;
	bool ok1 = resolve_plan(caller, name1, use1, &l1), ok2 = resolve_plan(caller, name2, use2, &l2);
	enum st_rc rc;

	*rc1 = *rc2 = ST_NOT_FOUND;
	if (!ok1 || !ok2) {
		/* One name is refused by the rules alone: look up the other. */
		rc = ST_OK;
		if (ok1)
			rc = *rc1 = account_query(tx, lookup_sql[lookup_dialect(tx)][l1.kind], l1.key, out1);
		else if (ok2)
			rc = *rc2 = account_query(tx, lookup_sql[lookup_dialect(tx)][l2.kind], l2.key, out2);
		return rc == ST_NOT_FOUND ? ST_OK : rc;
	}
	rc = tx_query(tx, lookup_pair_sql[lookup_dialect(tx)][l1.kind][l2.kind],
		      ST_ARGS(SV_S(l1.key), SV_S(l2.key)), &rows);
	if (rc)
		return rc;
	for (int i = 0; i < rows->nrows; i++) {
		bool first = rows_i64(rows, i, rows->ncols - 1) == 1;

		account_from_row_at(rows, i, first ? out1 : out2);
		*(first ? rc1 : rc2) = ST_OK;
	}
	rows_free(rows);
	return ST_OK;
}

void account_display_name(const struct account *a, const char *caller,
			  char out[ACCOUNT_QNAME_MAX + 1])
{
	switch (a->kind) {
	case ACCOUNT_WALLET:
		fmt_str(out, ACCOUNT_QNAME_MAX + 1, a->wallet);
		return;
	case ACCOUNT_CLIENT:
		if (caller && !strcmp(caller, a->client_id))
			fmt_str(out, ACCOUNT_QNAME_MAX + 1, a->name);
		else if (!qualify(a->client_id, a->name, out))
			fmt_str(out, ACCOUNT_QNAME_MAX + 1, a->id);
		return;
	case ACCOUNT_SYSTEM:
	default:
		fmt_str(out, ACCOUNT_QNAME_MAX + 1, a->name[0] ? a->name : a->id);
		return;
	}
}

/* ledger.c — balanced, append-only transactions and holds. See ledger.h
 * and docs/internals/ledger.md.
 *
 * The code checks every transaction before writing it (ledger_check), and
 * the store checks it again: entries go in first, the ledger_tx row last,
 * and the store's trigger refuses that row unless the entries balance. The
 * same triggers move balances and held amounts; the one exception is
 * moves_sqlite (SQLite, a posting that captures nothing and names each
 * account once), whose moves the store checks against the entries. This
 * file never writes accounts.held.
 *
 * Workload: one claim is a hold (insert) and later a capture (two entries
 * and a tx row) or a release (one update); reads are keyset pages of
 * entries. Everything here is a handful of indexed statements. */
#include "ledger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "fmt.h"
#include "banned.h"

/* Any constant will do: it names "the ledger append lock" on PostgreSQL. */
#define LEDGER_PG_APPEND_LOCK 0x5e771ed

static const char *dir_str(enum ledger_dir d)
{
	return d == LEDGER_CREDIT ? "credit" : "debit";
}

enum st_rc ledger_check(const struct ledger_post *p)
{
	int64_t debits = 0, credits = 0;

	if (!p || !p->kind || !p->entries || p->n < 2 || p->n > LEDGER_MAX_ENTRIES)
		return ST_INVALID;
	for (size_t i = 0; i < p->n; i++) {
		const struct ledger_entry *e = &p->entries[i];
		int64_t *sum = e->dir == LEDGER_CREDIT ? &credits : &debits;

		if (!e->account_id || !*e->account_id || e->amount <= 0 ||
		    (e->dir != LEDGER_DEBIT && e->dir != LEDGER_CREDIT))
			return ST_INVALID;
		if (__builtin_add_overflow(*sum, e->amount, sum))
			return ST_INVALID;
	}
	return debits == credits ? ST_OK : ST_INVALID;
}

/* Does every entry of p name a different account? Then each account's
 * move is its one entry's signed amount (what the store's check on SQLite
 * compares with; see moves_sqlite). */
static bool accounts_distinct(const struct ledger_post *p)
{
	for (size_t i = 1; i < p->n; i++)
		for (size_t k = 0; k < i; k++)
			if (!strcmp(p->entries[i].account_id, p->entries[k].account_id))
				return false;
	return true;
}

/* SQLite: moves every entry's account by its signed amount, marking the
 * account with the transaction id (checked by the store when the closing
 * row says balances_moved = 1: migrations/sqlite/012). An UPDATE by
 * primary key each, instead of the store's trigger, which updates the
 * accounts through an IN (subquery) SQLite materialises in a temporary
 * b-tree (~107k instructions of a two-entry posting's ~250k). The accounts
 * CHECKs refuse an overdraft here (ST_CONFLICT) and, accounts_money_integer,
 * an overflow, as they did inside the trigger. */
static enum st_rc moves_sqlite(struct tx *tx, const struct ledger_post *p, const char *id)
{
	for (size_t i = 0; i < p->n; i++) {
		const struct ledger_entry *e = &p->entries[i];
		int64_t delta = e->dir == LEDGER_CREDIT ? e->amount : -e->amount;
		int64_t changed = 0;
		enum st_rc rc = tx_exec(tx,
					"UPDATE accounts SET balance = balance + $2, moved_by = $3, moved_delta = $2"
					" WHERE id = $1",
					ST_ARGS(SV_S(e->account_id), SV_I(delta), SV_S(id)), &changed);

		if (rc)
			return rc;
		if (changed != 1)
			return ST_CONFLICT; /* unknown account (its entry's FK says the same) */
	}
	return ST_OK;
}

/* The posting itself; p is checked, hold_id may be NULL. */
static enum st_rc post(struct tx *tx, const struct ledger_post *p, const char *hold_id,
		       char tx_id_out[LEDGER_ID_MAX + 1])
{
	char id[LEDGER_ID_MAX + 1];
	int64_t now = tx_now_ms(tx);
	bool sqlite = tx_dialect(tx) == ST_SQLITE;
	/* A capture's balances move in the store's trigger, after its hold
	 * is resolved (the debit may need the reservation released first). */
	bool moved = sqlite && !hold_id && accounts_distinct(p);
	enum st_rc rc;

	if (p->ref && !p->ref_at_close) {
		/* Answer a repeated reference before writing entries: on
		 * PostgreSQL a failing INSERT would abort the whole unit, and on
		 * SQLite the entries and moves before it would stay behind for a
		 * caller that goes on (ledger_fund_treasury). */
		struct st_rows *rows = NULL;

		rc = tx_query(tx, "SELECT 1 FROM ledger_tx WHERE ref = $1", ST_ARGS(SV_S(p->ref)), &rows);
		if (rc)
			return rc;
		rc = rows->nrows ? ST_UNIQUE : ST_OK;
		rows_free(rows);
		if (rc)
			return rc;
	}
	if (!sqlite) {
		/* Entry ids must become visible in id order for keyset pages to
		 * be stable. Writers hold the append lock SHARED until commit, so
		 * they never wait for one another; a page reader takes it
		 * exclusively (ledger_page_begin), so it reads once no append is
		 * in flight and none starts until it is done. Taken before the
		 * first entry's id is drawn. Nothing reads its result: it is
		 * held back and travels with the entries and the closing row
		 * below, one round trip for the whole posting. */
		rc = tx_exec_deferred(tx, "SELECT pg_advisory_xact_lock_shared($1)",
				      ST_ARGS(SV_I(LEDGER_PG_APPEND_LOCK)));
		if (rc)
			return rc;
	}
	if (p->id)
		fmt_str(id, sizeof(id), p->id);
	else
		tx_new_id(tx, "ltx_", id);
	for (size_t i = 0; i < p->n; i++) {
		const struct ledger_entry *e = &p->entries[i];

		/* Deferred (see tx_exec_deferred): an entry's failure (an
		 * unknown account) is reported by the closing row's INSERT,
		 * with the entry's own rc, as it was before. On PostgreSQL
		 * two entries a statement: the store checks an open
		 * transaction once a statement (migration 032), and each
		 * statement is an executor start and a trigger call. */
		if (!sqlite && i + 1 < p->n) {
			const struct ledger_entry *f = &p->entries[i + 1];

			rc = tx_exec_deferred(tx,
					      "INSERT INTO ledger_entries (tx_id, account_id, direction, amount,"
					      " created_at) VALUES ($1, $2, $3, $4, $5), ($1, $6, $7, $8, $5)",
					      ST_ARGS(SV_S(id), SV_S(e->account_id), SV_S(dir_str(e->dir)),
						      SV_I(e->amount), SV_I(now), SV_S(f->account_id),
						      SV_S(dir_str(f->dir)), SV_I(f->amount)));
			if (rc)
				return rc;
			i++;
			continue;
		}
		rc = tx_exec_deferred(tx,
				      "INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
				      " VALUES ($1, $2, $3, $4, $5)",
				      ST_ARGS(SV_S(id), SV_S(e->account_id), SV_S(dir_str(e->dir)),
					      SV_I(e->amount), SV_I(now)));
		if (rc)
			return rc;
	}
	if (moved && (rc = moves_sqlite(tx, p, id)))
		return rc;
	/* Closing the transaction: the store checks the balance here and
	 * moves the balances, or checks the moves made above (and resolves
	 * the captured hold). */
	/* Two statements, not balances_moved as a parameter: PostgreSQL's
	 * ledger_tx has no such column, and on SQLite NULL (not 0) is what
	 * tells the trigger to move the balances itself. */
	rc = tx_exec(tx,
		     moved ? "INSERT INTO ledger_tx (id, kind, ref, intent_id, hold_id, created_at, client_id,"
			     " description, metadata, balances_moved)"
			     " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1)"
			   : "INSERT INTO ledger_tx (id, kind, ref, intent_id, hold_id, created_at, client_id,"
			     " description, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
		     ST_ARGS(SV_S(id), SV_S(p->kind), SV_SOPT(p->ref), SV_SOPT(p->intent_id),
			     SV_SOPT(hold_id), SV_I(now), SV_SOPT(p->client_id), SV_SOPT(p->description),
			     SV_SOPT(p->metadata)),
		     NULL);
	if (rc)
		return rc;
	if (tx_id_out)
		memcpy(tx_id_out, id, sizeof(id));
	return ST_OK;
}

enum st_rc ledger_post(struct tx *tx, const struct ledger_post *p, char tx_id_out[LEDGER_ID_MAX + 1])
{
	enum st_rc rc = ledger_check(p);

	return rc ? rc : post(tx, p, NULL, tx_id_out);
}

/* ledger_post_many's two statements, one each for any n: the rows come as
 * one array a column (unnest ... WITH ORDINALITY, inserted in that order,
 * so entry ids follow the postings and their entries), not as rows of
 * parameters, so a run of any size is one prepared statement each and the
 * open-transaction trigger runs once for all the entries (tx_exec_rows'
 * chunks of 64, 32, ... 1 rows would be one statement and one trigger run
 * each). */
static const char many_entries_sql[] =
	"INSERT INTO ledger_entries (tx_id, account_id, direction, amount, created_at)"
	" SELECT v.tx_id, v.account_id, v.direction, v.amount, CAST($5 AS BIGINT)"
	" FROM unnest(CAST($1 AS TEXT[]), CAST($2 AS TEXT[]), CAST($3 AS TEXT[]),"
	"  CAST($4 AS BIGINT[])) WITH ORDINALITY AS v (tx_id, account_id, direction, amount, n)"
	" ORDER BY v.n";
static const char many_closing_sql[] =
	"INSERT INTO ledger_tx (id, kind, ref, intent_id, hold_id, created_at, client_id, description,"
	" metadata)"
	" SELECT v.id, v.kind, NULL, NULL, NULL, CAST($1 AS BIGINT), v.client_id, v.description,"
	"  v.metadata"
	" FROM unnest(CAST($2 AS TEXT[]), CAST($3 AS TEXT[]), CAST($4 AS TEXT[]), CAST($5 AS TEXT[]),"
	"  CAST($6 AS TEXT[])) WITH ORDINALITY AS v (id, kind, client_id, description, metadata, n)"
	" ORDER BY v.n";

#define MANY_COLS 9 /* entries: tx_id, account, direction, amount; closing: id, kind, client, description, metadata */
#define MANY_ARRAY_MAX (64u << 20)

static enum st_rc many_text(struct buf *b, const char *s)
{
	return buf_pg_array_text(b, s, s ? strlen(s) : 0);
}

enum st_rc ledger_post_many(struct tx *tx, const struct ledger_post *const *posts, int n,
			    char (*ids)[LEDGER_ID_MAX + 1])
{
	int64_t now = tx_now_ms(tx);
	struct buf col[MANY_COLS];
	enum st_rc rc = ST_OK;

	if (tx_dialect(tx) != ST_PG || n < 1)
		return ST_INVALID;
	for (int i = 0; i < n; i++) {
		const struct ledger_post *p = posts[i];

		if (p->ref || p->intent_id || p->id || ledger_check(p) != ST_OK)
			return ST_INVALID;
	}
	for (int c = 0; c < MANY_COLS; c++) {
		buf_init(&col[c], MANY_ARRAY_MAX);
		if (rc == ST_OK)
			rc = buf_putc(&col[c], '{');
	}
	for (int i = 0; rc == ST_OK && i < n; i++) {
		const struct ledger_post *p = posts[i];

		tx_new_id(tx, "ltx_", ids[i]);
		for (size_t j = 0; rc == ST_OK && j < p->n; j++) {
			const struct ledger_entry *e = &p->entries[j];

			rc = many_text(&col[0], ids[i]);
			if (rc == ST_OK)
				rc = many_text(&col[1], e->account_id);
			if (rc == ST_OK)
				rc = many_text(&col[2], dir_str(e->dir));
			if (rc == ST_OK)
				rc = buf_pg_array_int(&col[3], e->amount);
		}
		if (rc == ST_OK)
			rc = many_text(&col[4], ids[i]);
		if (rc == ST_OK)
			rc = many_text(&col[5], p->kind);
		if (rc == ST_OK)
			rc = many_text(&col[6], p->client_id);
		if (rc == ST_OK)
			rc = many_text(&col[7], p->description);
		if (rc == ST_OK)
			rc = many_text(&col[8], p->metadata);
	}
	for (int c = 0; rc == ST_OK && c < MANY_COLS; c++)
		rc = buf_putc(&col[c], '}');
	/* The append lock first, as ledger_post takes it (held shared until
	 * commit, before any entry's id is drawn), then every entry, then
	 * every closing row (a transaction is closed only after all its
	 * entries are in): deferred, the three travel in one round trip, and
	 * an entry's failure is reported by the closing statement. */
	if (rc == ST_OK)
		rc = tx_exec_deferred(tx, "SELECT pg_advisory_xact_lock_shared($1)",
				      ST_ARGS(SV_I(LEDGER_PG_APPEND_LOCK)));
	if (rc == ST_OK)
		rc = tx_exec_deferred(tx, many_entries_sql,
				      ST_ARGS(SV_SN(col[0].ptr, col[0].len), SV_SN(col[1].ptr, col[1].len),
					      SV_SN(col[2].ptr, col[2].len), SV_SN(col[3].ptr, col[3].len),
					      SV_I(now)));
	if (rc == ST_OK)
		rc = tx_exec(tx, many_closing_sql,
			     ST_ARGS(SV_I(now), SV_SN(col[4].ptr, col[4].len), SV_SN(col[5].ptr, col[5].len),
				     SV_SN(col[6].ptr, col[6].len), SV_SN(col[7].ptr, col[7].len),
				     SV_SN(col[8].ptr, col[8].len)),
			     NULL);
	for (int c = 0; c < MANY_COLS; c++)
		buf_release(&col[c]);
	return rc;
}

enum st_rc ledger_tx_get(struct tx *tx, const char *owner, const char *id, struct ledger_tx_view *out)
{
	struct st_rows *r = NULL;
	enum st_rc rc;

	/* The owner filter is part of the query: another client's transaction
	 * is never read, so it cannot be answered differently from none. */
	if (owner)
		rc = tx_query_one(tx,
				  "SELECT id, kind, client_id, description, metadata, created_at"
				  " FROM ledger_tx"
				  " WHERE id = $1 AND client_id = $2",
				  ST_ARGS(SV_S(id), SV_S(owner)), &r);
	else
		rc = tx_query_one(tx,
				  "SELECT id, kind, client_id, description, metadata, created_at"
				  " FROM ledger_tx"
				  " WHERE id = $1",
				  ST_ARGS(SV_S(id)), &r);
	if (rc)
		return rc;
	memset(out, 0, sizeof(*out));
	rows_copy(r, 0, 0, out->id, sizeof(out->id));
	rows_copy(r, 0, 1, out->kind, sizeof(out->kind));
	rows_copy(r, 0, 2, out->client_id, sizeof(out->client_id));
	rows_copy(r, 0, 3, out->description, sizeof(out->description));
	rows_copy(r, 0, 4, out->metadata, sizeof(out->metadata));
	out->created_at = rows_i64(r, 0, 5);
	rows_free(r);
	rc = tx_query(tx, "SELECT account_id, direction, amount FROM ledger_entries WHERE tx_id = $1 ORDER BY id",
		      ST_ARGS(SV_S(id)), &r);
	if (rc)
		return rc;
	for (int i = 0; i < r->nrows && out->n < LEDGER_MAX_ENTRIES; i++, out->n++) {
		rows_copy(r, i, 0, out->entries[out->n].account_id, sizeof(out->entries[0].account_id));
		out->entries[out->n].dir = !strcmp(rows_text(r, i, 1), "credit") ? LEDGER_CREDIT : LEDGER_DEBIT;
		out->entries[out->n].amount = rows_i64(r, i, 2);
	}
	rows_free(r);
	return ST_OK;
}

enum st_rc ledger_fund_treasury(struct tx *tx, int64_t amount, bool *funded)
{
	const struct ledger_entry e[2] = {
		{ ACCT_EXTERNAL, LEDGER_DEBIT, amount },
		{ ACCT_TREASURY, LEDGER_CREDIT, amount },
	};
	const struct ledger_post p = { .kind = "treasury_funding", .ref = LEDGER_TREASURY_FUNDING_REF,
				       .n = 2, .entries = e };
	enum st_rc rc;

	if (funded)
		*funded = false;
	if (amount <= 0)
		return ST_OK;
	rc = ledger_post(tx, &p, NULL);
	if (rc == ST_UNIQUE)
		return ST_OK; /* funded at an earlier start */
	if (rc == ST_OK && funded)
		*funded = true;
	return rc;
}

/* ---- holds ---- */

static const char *const hold_status_names[] = { "pending", "captured", "released", "expired" };
static const char *const hold_state_names[] = { "PENDING", "CAPTURED", "VOIDED", "EXPIRED" };

const char *hold_status_str(enum hold_status s)
{
	return (unsigned)s < 4 ? hold_status_names[s] : "unknown";
}

const char *hold_state_str(enum hold_status s)
{
	return (unsigned)s < 4 ? hold_state_names[s] : "UNKNOWN";
}

bool hold_state_parse(const char *s, enum hold_status *out)
{
	for (int i = 0; i < 4; i++)
		if (s && !strcmp(s, hold_state_names[i])) {
			*out = (enum hold_status)i;
			return true;
		}
	return false;
}

static enum hold_status hold_status_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (s && !strcmp(s, hold_status_names[i]))
			return (enum hold_status)i;
	return HOLD_PENDING; /* the CHECK constraint makes this unreachable */
}

/* The amount captured is not stored: it is the net debit of the hold's
 * account in the one transaction that carries the hold's id. */
#define HOLD_COLS                                                                                \
	"id, account_id, intent_id, amount, status, expires_at, created_at, resolved_at,"        \
	" to_account, client_id, CASE status WHEN 'captured' THEN (SELECT"                       \
	" sum(CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END)"                   \
	" FROM ledger_tx t JOIN ledger_entries e ON e.tx_id = t.id"                              \
	" WHERE t.hold_id = holds.id AND e.account_id = holds.account_id) ELSE 0 END"

static void hold_from_row(const struct st_rows *r, int row, struct ledger_hold *h)
{
	const char *intent = rows_text(r, row, 2);
	const char *to = rows_text(r, row, 8);
	const char *client = rows_text(r, row, 9);

	memset(h, 0, sizeof(*h));
	fmt_str(h->id, sizeof(h->id), rows_text(r, row, 0));
	fmt_str(h->account_id, sizeof(h->account_id), rows_text(r, row, 1));
	fmt_str(h->intent_id, sizeof(h->intent_id), intent ? intent : "");
	h->amount = rows_i64(r, row, 3);
	h->status = hold_status_parse(rows_text(r, row, 4));
	h->expires_at = rows_i64(r, row, 5);
	h->created_at = rows_i64(r, row, 6);
	h->resolved_at = rows_i64(r, row, 7);
	fmt_str(h->to_account, sizeof(h->to_account), to ? to : "");
	fmt_str(h->client_id, sizeof(h->client_id), client ? client : "");
	h->captured = rows_i64(r, row, 10);
}

/* Every row of r as holds: *out malloc'd (NULL when none). */
static enum st_rc holds_from_rows(const struct st_rows *r, int n, struct ledger_hold **out)
{
	struct ledger_hold *v = NULL;

	*out = NULL;
	if (n <= 0)
		return ST_OK;
	v = calloc((size_t)n, sizeof(*v));
	if (!v)
		return ST_NOMEM;
	for (int i = 0; i < n; i++)
		hold_from_row(r, i, &v[i]);
	*out = v;
	return ST_OK;
}

enum st_rc ledger_hold_get(struct tx *tx, const char *hold_id, struct ledger_hold *out)
{
	struct st_rows *rows = NULL;
	enum st_rc rc = tx_query(tx, "SELECT " HOLD_COLS " FROM holds WHERE id = $1",
				 ST_ARGS(SV_S(hold_id)), &rows);

	if (rc)
		return rc;
	if (rows->nrows)
		hold_from_row(rows, 0, out);
	else
		rc = ST_NOT_FOUND;
	rows_free(rows);
	return rc;
}

enum st_rc ledger_hold_metadata(struct tx *tx, const char *hold_id, char **out)
{
	struct st_rows *rows = NULL;
	enum st_rc rc = tx_query_one(tx, "SELECT metadata FROM holds WHERE id = $1",
				     ST_ARGS(SV_S(hold_id)), &rows);
	const char *m;

	*out = NULL;
	if (rc)
		return rc;
	m = rows_text(rows, 0, 0);
	if (m && !(*out = strdup(m)))
		rc = ST_NOMEM;
	rows_free(rows);
	return rc;
}

enum st_rc ledger_hold_open(struct tx *tx, const struct ledger_hold_spec *spec, struct ledger_hold *out)
{
	struct account a, to;
	struct ledger_hold h;
	int64_t held_after, available;
	enum st_rc rc;

	if (spec->amount <= 0 || (spec->metadata && strlen(spec->metadata) > LEDGER_METADATA_MAX) ||
	    (spec->to_account && !strcmp(spec->to_account, spec->account_id)))
		return ST_INVALID;
	if (spec->account)
		a = *spec->account;
	rc = spec->account ? ST_OK : account_by_id(tx, spec->account_id, &a);
	if (rc == ST_OK && spec->to_account && !spec->to)
		rc = account_by_id(tx, spec->to_account, &to);
	if (rc)
		return rc;
	/* Checked here to answer 422 without an error on the store; the
	 * accounts CHECK refuses the same over-commit if two units race
	 * (PostgreSQL), which we report the same way. */
	if (__builtin_add_overflow(a.held, spec->amount, &held_after))
		return ST_UNPROCESSABLE;
	if (!a.may_go_negative &&
	    (__builtin_sub_overflow(a.balance, a.held, &available) || available < spec->amount))
		return ST_UNPROCESSABLE;

	memset(&h, 0, sizeof(h));
	tx_new_id(tx, "hold_", h.id);
	fmt_str(h.account_id, sizeof(h.account_id), spec->account_id);
	fmt_str(h.intent_id, sizeof(h.intent_id), spec->intent_id ? spec->intent_id : "");
	fmt_str(h.to_account, sizeof(h.to_account), spec->to_account ? spec->to_account : "");
	fmt_str(h.client_id, sizeof(h.client_id), spec->client_id ? spec->client_id : "");
	h.amount = spec->amount;
	h.status = HOLD_PENDING;
	h.expires_at = spec->expires_at > 0 ? spec->expires_at : 0;
	h.created_at = tx_now_ms(tx);
	rc = tx_exec(tx,
		     "INSERT INTO holds (id, account_id, amount, status, expires_at, intent_id, created_at,"
		     " to_account, client_id, metadata)"
		     " VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9)",
		     ST_ARGS(SV_S(h.id), SV_S(spec->account_id), SV_I(spec->amount),
			     h.expires_at ? SV_I(h.expires_at) : SV_NULLV, SV_SOPT(spec->intent_id),
			     SV_I(h.created_at), SV_SOPT(spec->to_account), SV_SOPT(spec->client_id),
			     SV_SOPT(spec->metadata)),
		     NULL);
	if (rc == ST_CONFLICT)
		return ST_UNPROCESSABLE; /* the store's over-commit check */
	if (rc)
		return rc;
	*out = h;
	return ST_OK;
}

enum st_rc ledger_hold_create(struct tx *tx, const char *account_id, int64_t amount,
			      int64_t expires_at, const char *intent_id, struct ledger_hold *out)
{
	const struct ledger_hold_spec spec = { .account_id = account_id, .amount = amount,
					       .expires_at = expires_at, .intent_id = intent_id };

	return ledger_hold_open(tx, &spec, out);
}

enum st_rc ledger_hold_create_on_wallet(struct tx *tx, const char *wallet, int64_t amount,
					int64_t expires_at, const char *intent_id, struct ledger_hold *out)
{
	struct st_rows *r = NULL;
	struct ledger_hold h;
	struct account a;
	enum st_rc rc;

	if (amount <= 0)
		return ST_INVALID;
	if (tx_dialect(tx) == ST_SQLITE) {
		/* No round trips to save on SQLite, and there the INSERT ...
		 * SELECT ... RETURNING below costs more than a read and an
		 * INSERT (claim prepare 12.4k -> 8.7k req/s in ops/bench). */
		rc = account_by_wallet(tx, wallet, &a);
		return rc ? rc : ledger_hold_create(tx, a.id, amount, expires_at, intent_id, out);
	}
	memset(&h, 0, sizeof(h));
	tx_new_id(tx, "hold_", h.id);
	fmt_str(h.intent_id, sizeof(h.intent_id), intent_id ? intent_id : "");
	h.amount = amount;
	h.status = HOLD_PENDING;
	h.expires_at = expires_at > 0 ? expires_at : 0;
	h.created_at = tx_now_ms(tx);
	/* ledger_hold_open's checks in the statement: no row when the
	 * wallet is unknown, short (available < amount on an account that
	 * may not go negative; a wallet's balance is never a hot account's)
	 * or held would overflow. The accounts CHECK still decides a race. */
	rc = tx_query(tx,
		      "INSERT INTO holds (id, account_id, amount, status, expires_at, intent_id, created_at)"
		      " SELECT CAST($1 AS TEXT), a.id, CAST($3 AS BIGINT), 'pending', CAST($4 AS BIGINT),"
		      "  CAST($5 AS TEXT), CAST($6 AS BIGINT)"
		      " FROM accounts a WHERE a.wallet = $2 AND a.held <= CAST($7 AS BIGINT) - CAST($3 AS BIGINT)"
		      "  AND (a.may_go_negative = 1 OR a.balance - a.held >= CAST($3 AS BIGINT))"
		      " RETURNING account_id",
		      ST_ARGS(SV_S(h.id), SV_S(wallet), SV_I(amount),
			      h.expires_at ? SV_I(h.expires_at) : SV_NULLV, SV_SOPT(intent_id),
			      SV_I(h.created_at), SV_I(INT64_MAX)),
		      &r);
	if (rc == ST_CONFLICT)
		return ST_UNPROCESSABLE; /* the store's over-commit check */
	if (rc)
		return rc;
	if (r->nrows != 1) {
		/* Refused: unknown, or short (the rare path reads why). */
		rows_free(r);
		rc = account_by_wallet(tx, wallet, &a);
		return rc ? rc : ST_UNPROCESSABLE;
	}
	rows_copy(r, 0, 0, h.account_id, sizeof(h.account_id));
	rows_free(r);
	*out = h;
	return ST_OK;
}

/* A hold is pending exactly when its resolved_at is NULL (SQLite: the
 * table's CHECK; PostgreSQL: holds_resolve_once and holds_reserve, 026 and
 * 032), and the statements below that change one pending hold say so with
 * `resolved_at IS NULL`, not `status = 'pending'`. The status clause
 * matches the predicate of the partial indexes holds_pending_account and
 * holds_pending_expiry, and a PostgreSQL plan made while holds had no
 * statistics (a young database; settled's statements are prepared per
 * connection, and a generic plan stays until an ANALYZE) took
 * holds_pending_account and read every pending hold to find one id (3,000
 * pending: 2,999 rows filtered, 383 buffers for one release). No partial
 * index fits `resolved_at IS NULL`, so the primary key is the one index
 * there is for these (migration 029 did the same for the capture
 * triggers). */

/* Resolves a pending hold with sql (its status, and for an expiry its
 * due guard); exactly one row must change. */
static enum st_rc hold_resolve(struct tx *tx, const char *hold_id, const char *sql)
{
	int64_t changed = 0;
	enum st_rc rc = tx_exec(tx, sql, ST_ARGS(SV_S(hold_id), SV_I(tx_now_ms(tx))), &changed);
	struct ledger_hold h;

	if (rc)
		return rc;
	if (changed == 1)
		return ST_OK;
	rc = ledger_hold_get(tx, hold_id, &h);
	return rc ? rc : ST_CONFLICT;
}

enum st_rc ledger_hold_release(struct tx *tx, const char *hold_id)
{
	return hold_resolve(tx, hold_id,
			    "UPDATE holds SET status = 'released', resolved_at = $2"
			    " WHERE id = $1 AND resolved_at IS NULL");
}

/* Only a hold that is still due expires. Every caller read it due first,
 * but on PostgreSQL (READ COMMITTED) a claim record can commit between that
 * read and this UPDATE, keeping the hold (expires_at NULL): the UPDATE
 * waits for the record's row lock and then re-checks its WHERE on the
 * record's version. With `resolved_at IS NULL` alone it expired the kept
 * hold, the intent's transition then found SUBMITTED, and the sweep's whole
 * transaction rolled back (every due hold waited a tick). With the due
 * guard it changes no row: ST_CONFLICT, nothing written, and the caller
 * skips it (intent_expire) or answers the state it is in. */
enum st_rc ledger_hold_expire_one(struct tx *tx, const char *hold_id)
{
	return hold_resolve(tx, hold_id,
			    "UPDATE holds SET status = 'expired', resolved_at = $2"
			    " WHERE id = $1 AND resolved_at IS NULL"
			    " AND expires_at IS NOT NULL AND expires_at <= $2");
}

enum st_rc ledger_hold_keep(struct tx *tx, const char *hold_id)
{
	int64_t changed = 0;
	struct ledger_hold h;
	enum st_rc rc = tx_exec(tx,
				"UPDATE holds SET expires_at = NULL WHERE id = $1 AND resolved_at IS NULL"
				" AND (expires_at IS NULL OR expires_at > $2)",
				ST_ARGS(SV_S(hold_id), SV_I(tx_now_ms(tx))), &changed);

	if (rc)
		return rc;
	if (changed == 1)
		return ST_OK;
	rc = ledger_hold_get(tx, hold_id, &h);
	return rc ? rc : ST_CONFLICT;
}

enum st_rc ledger_hold_capture_amount(struct tx *tx, const char *hold_id, int64_t amount,
				      const char *to_account, const char *kind,
				      const char *intent_id, char tx_id_out[LEDGER_ID_MAX + 1])
{
	struct ledger_hold h;
	struct ledger_entry e[2];
	struct ledger_post p;
	enum st_rc rc = ledger_hold_get(tx, hold_id, &h);

	if (rc)
		return rc;
	if (h.status != HOLD_PENDING)
		return ST_CONFLICT;
	if (!to_account || !*to_account)
		to_account = h.to_account;
	if (amount == 0)
		amount = h.amount;
	if (amount < 0 || amount > h.amount || !*to_account ||
	    (h.to_account[0] && strcmp(to_account, h.to_account)))
		return ST_INVALID;
	e[0] = (struct ledger_entry){ h.account_id, LEDGER_DEBIT, amount };
	e[1] = (struct ledger_entry){ to_account, LEDGER_CREDIT, amount };
	p = (struct ledger_post){ .kind = kind, .intent_id = intent_id, .n = 2, .entries = e };
	rc = ledger_check(&p);
	if (rc)
		return rc;
	/* The store resolves the hold as 'captured' when this row lands,
	 * releasing all of its reservation, and accepts one such row per hold
	 * (ledger_tx.hold_id is unique). */
	return post(tx, &p, h.id, tx_id_out);
}

enum st_rc ledger_hold_capture(struct tx *tx, const char *hold_id, const char *to_account,
			       const char *kind, const char *intent_id,
			       char tx_id_out[LEDGER_ID_MAX + 1])
{
	return ledger_hold_capture_amount(tx, hold_id, 0, to_account, kind, intent_id, tx_id_out);
}

enum st_rc ledger_holds_due(struct tx *tx, int64_t now_ms, int limit, struct ledger_hold **out,
			    size_t *n_out)
{
	struct st_rows *rows = NULL;
	enum st_rc rc;

	*out = NULL;
	*n_out = 0;
	if (limit < 1)
		return ST_OK;
	rc = tx_query(tx,
		      "SELECT " HOLD_COLS " FROM holds WHERE status = 'pending' AND expires_at IS NOT NULL"
		      " AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2",
		      ST_ARGS(SV_I(now_ms), SV_I(limit)), &rows);
	if (rc)
		return rc;
	rc = holds_from_rows(rows, rows->nrows, out);
	if (rc == ST_OK)
		*n_out = (size_t)rows->nrows;
	rows_free(rows);
	return rc;
}

enum st_rc ledger_hold_expire(struct tx *tx, int64_t now_ms, int limit, int64_t *n_out)
{
	struct ledger_hold *due = NULL;
	size_t n = 0;
	int64_t expired = 0;
	enum st_rc rc;

	*n_out = 0;
	rc = ledger_holds_due(tx, now_ms, limit, &due, &n);
	for (size_t i = 0; i < n && rc == ST_OK; i++) {
		rc = ledger_hold_expire_one(tx, due[i].id);
		expired += rc == ST_OK;
		if (rc == ST_CONFLICT)
			rc = ST_OK; /* resolved since the list was read */
	}
	free(due);
	if (rc == ST_OK)
		*n_out = expired;
	return rc;
}

enum st_rc ledger_holds_page(struct tx *tx, const char *client_id, const enum hold_status *state,
			     const char *after, int limit, struct ledger_hold **out, size_t *n_out,
			     bool *more)
{
	struct st_rows *rows = NULL;
	size_t n;
	enum st_rc rc;

	*out = NULL;
	*n_out = 0;
	*more = false;
	if (limit < 1 || limit > LEDGER_PAGE_MAX)
		return ST_INVALID;
	/* A client's page is a range of the holds_client index; everyone's
	 * walks the primary key. A NULL state matches every state. One row
	 * beyond the page says whether another follows. */
	if (client_id)
		rc = tx_query(tx,
			      "SELECT " HOLD_COLS " FROM holds WHERE client_id = $1"
			      " AND (CAST($2 AS TEXT) IS NULL OR status = $2)"
			      " AND id > $3 ORDER BY client_id, id LIMIT $4",
			      ST_ARGS(SV_S(client_id), state ? SV_S(hold_status_str(*state)) : SV_NULLV,
				      SV_S(after ? after : ""), SV_I(limit + 1)),
			      &rows);
	else
		rc = tx_query(tx,
			      "SELECT " HOLD_COLS " FROM holds"
			      " WHERE (CAST($1 AS TEXT) IS NULL OR status = $1)"
			      " AND id > $2 ORDER BY id LIMIT $3",
			      ST_ARGS(state ? SV_S(hold_status_str(*state)) : SV_NULLV,
				      SV_S(after ? after : ""), SV_I(limit + 1)),
			      &rows);
	if (rc)
		return rc;
	n = rows->nrows > limit ? (size_t)limit : (size_t)rows->nrows;
	rc = holds_from_rows(rows, (int)n, out);
	if (rc == ST_OK) {
		*n_out = n;
		*more = rows->nrows > limit;
	}
	rows_free(rows);
	return rc;
}

/* ---- reads ---- */

#define ENTRY_COLS \
	"e.id, e.tx_id, t.kind, e.account_id, a.wallet, e.direction, e.amount, e.created_at" \
	" FROM ledger_entries e JOIN ledger_tx t ON t.id = e.tx_id JOIN accounts a ON a.id = e.account_id"

enum st_rc ledger_page_begin(struct tx *tx)
{
	enum st_rc rc;

	if (tx_dialect(tx) != ST_PG)
		return ST_OK;
	/* READ COMMITTED, set before any query takes the snapshot: the page's
	 * SELECT then gets a snapshot taken AFTER the lock below is granted,
	 * i.e. after every posting in flight committed (or rolled back). A
	 * REPEATABLE READ snapshot would be taken at the lock statement's
	 * start, before the wait, and miss a posting with a smaller id that
	 * committed during it. */
	rc = tx_exec(tx, "SET TRANSACTION ISOLATION LEVEL READ COMMITTED", ST_NOARGS, NULL);
	if (rc == ST_OK)
		rc = tx_exec(tx, "SELECT pg_advisory_xact_lock($1)", ST_ARGS(SV_I(LEDGER_PG_APPEND_LOCK)),
			     NULL);
	return rc;
}

enum st_rc ledger_entries_page(struct tx *tx, const char *account_id, int64_t after, int limit,
			       struct ledger_entry_row **out, size_t *n_out, bool *more)
{
	return ledger_entries_page_owned(tx, NULL, account_id, after, limit, out, n_out, more);
}

enum st_rc ledger_entries_page_owned(struct tx *tx, const char *owner, const char *account_id,
				     int64_t after, int limit, struct ledger_entry_row **out,
				     size_t *n_out, bool *more)
{
	struct st_rows *rows = NULL;
	struct ledger_entry_row *v = NULL;
	size_t n;
	enum st_rc rc;

	if (limit < 1 || limit > LEDGER_PAGE_MAX || after < 0)
		return ST_INVALID;
	/* One row beyond the page says whether another page follows. */
	if (owner && !account_id)
		rc = tx_query(tx, "SELECT " ENTRY_COLS " WHERE a.client_id = $1 AND e.id > $2"
			      " ORDER BY e.id LIMIT $3",
			      ST_ARGS(SV_S(owner), SV_I(after), SV_I(limit + 1)), &rows);
	else if (account_id)
		rc = tx_query(tx, "SELECT " ENTRY_COLS " WHERE e.account_id = $1 AND e.id > $2"
			      " ORDER BY e.id LIMIT $3",
			      ST_ARGS(SV_S(account_id), SV_I(after), SV_I(limit + 1)), &rows);
	else
		rc = tx_query(tx, "SELECT " ENTRY_COLS " WHERE e.id > $1 ORDER BY e.id LIMIT $2",
			      ST_ARGS(SV_I(after), SV_I(limit + 1)), &rows);
	if (rc)
		return rc;
	n = rows->nrows > limit ? (size_t)limit : (size_t)rows->nrows;
	if (n) {
		v = calloc(n, sizeof(*v));
		if (!v) {
			rows_free(rows);
			return ST_NOMEM;
		}
	}
	for (size_t i = 0; i < n; i++) {
		const char *w = rows_text(rows, (int)i, 4);
		const char *dir = rows_text(rows, (int)i, 5);

		v[i].id = rows_i64(rows, (int)i, 0);
		fmt_str(v[i].tx_id, sizeof(v[i].tx_id), rows_text(rows, (int)i, 1));
		fmt_str(v[i].kind, sizeof(v[i].kind), rows_text(rows, (int)i, 2));
		fmt_str(v[i].account_id, sizeof(v[i].account_id), rows_text(rows, (int)i, 3));
		fmt_str(v[i].wallet, sizeof(v[i].wallet), w ? w : "");
		v[i].dir = dir && !strcmp(dir, "credit") ? LEDGER_CREDIT : LEDGER_DEBIT;
		v[i].amount = rows_i64(rows, (int)i, 6);
		v[i].created_at = rows_i64(rows, (int)i, 7);
	}
	*more = rows->nrows > limit;
	rows_free(rows);
	*out = v;
	*n_out = n;
	return ST_OK;
}

enum st_rc ledger_fold_deltas(struct tx *tx, int limit, int64_t *folded)
{
	int64_t n = 0;
	enum st_rc rc;

	*folded = 0;
	if (tx_dialect(tx) != ST_PG)
		return ST_OK; /* SQLite posts in place: no deltas */
	/* One statement: the oldest deltas leave the table and their sums
	 * join the balances, each hot row locked once for a moment. A second
	 * instance folding at once waits on the same rows and then finds them
	 * gone (READ COMMITTED re-checks a deleted row and skips it), so no
	 * delta is ever counted twice. */
	rc = tx_exec(tx,
		     "WITH moved AS (DELETE FROM account_deltas WHERE id IN"
		     "  (SELECT id FROM account_deltas ORDER BY id LIMIT $1) RETURNING account_id, delta)"
		     " UPDATE accounts a SET balance = a.balance + m.net"
		     " FROM (SELECT account_id, sum(delta) AS net FROM moved GROUP BY account_id) m"
		     " WHERE a.id = m.account_id",
		     ST_ARGS(SV_I(limit)), &n);
	if (rc == ST_OK)
		*folded = n;
	return rc;
}

enum st_rc ledger_balance(struct tx *tx, const char *account_id, struct ledger_balance *out)
{
	struct account a;
	enum st_rc rc = account_by_id(tx, account_id, &a);

	if (rc)
		return rc;
	out->balance = a.balance;
	out->held = a.held;
	if (__builtin_sub_overflow(a.balance, a.held, &out->available))
		return ST_INTERNAL; /* only a may-go-negative account far below zero */
	return ST_OK;
}

/* account.c — the accounts table. See account.h. */
#include "account.h"

#include <stdio.h>
#include <string.h>

#include "fmt.h"
#include "ledger.h"
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

#define ACCOUNT_COLS "id, wallet, referrer, balance, held, created_at, may_go_negative"

static void account_from_row(const struct st_rows *r, struct account *a)
{
	const char *w = rows_text(r, 0, 1), *ref = rows_text(r, 0, 2);

	memset(a, 0, sizeof(*a));
	fmt_str(a->id, sizeof(a->id), rows_text(r, 0, 0));
	fmt_str(a->wallet, sizeof(a->wallet), w ? w : "");
	fmt_str(a->referrer, sizeof(a->referrer), ref ? ref : "");
	a->balance = rows_i64(r, 0, 3);
	a->held = rows_i64(r, 0, 4);
	a->created_at = rows_i64(r, 0, 5);
	a->may_go_negative = rows_i64(r, 0, 6) != 0;
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
	return account_query(tx, "SELECT " ACCOUNT_COLS " FROM accounts WHERE wallet = $1", wallet, out);
}

enum st_rc account_by_id(struct tx *tx, const char *id, struct account *out)
{
	return account_query(tx, "SELECT " ACCOUNT_COLS " FROM accounts WHERE id = $1", id, out);
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
	ledger_new_id(tx, "acct_", id);
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

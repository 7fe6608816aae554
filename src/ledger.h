/* ledger.h — the double-entry ledger: balanced, append-only transactions
 * and holds (two-phase transfers), over the accounts of account.h.
 *
 * Money is int64_t base units. A transaction has >= 2 entries, each a
 * debit or a credit of a positive amount on one account, and
 * sum(debits) == sum(credits). An account's balance is credits - debits
 * of its entries, so the sum of all balances is zero. ledger_post() checks
 * all of this in code, and the store checks it again on its own (triggers
 * of migrations/<dialect>/002_ledger.sql), so no code path -- not even raw
 * SQL -- can commit an unbalanced transaction. Balances and held amounts
 * are maintained by those triggers only; see docs/internals/ledger.md.
 *
 * Holds reserve funds like TigerBeetle's pending transfers: available =
 * balance - held. A hold is captured (a posted transaction debiting the
 * held account), released or expired exactly once.
 *
 * Every function runs inside a write unit's transaction (or a read
 * transaction for the readers) and touches only this module's tables. */
#ifndef SETTLED_LEDGER_H
#define SETTLED_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "account.h"
#include "rc.h"
#include "store.h"

#define LEDGER_ID_MAX 40          /* "ltx_" / "hold_" / "int_" + 24 hex */
#define LEDGER_MAX_ENTRIES 64     /* per transaction */
#define LEDGER_TREASURY_FUNDING_REF "treasury_funding"

/* Fills out with prefix + 24 hex digits: 12 of the unit's clock (ms), 12
 * random (ids of accounts, ledger rows, holds and intents). prefix must be
 * short (<= 12 bytes). */
void ledger_new_id(struct tx *tx, const char *prefix, char out[LEDGER_ID_MAX + 1]);

enum ledger_dir { LEDGER_DEBIT = 0, LEDGER_CREDIT = 1 };

struct ledger_entry {
	const char *account_id;   /* borrowed */
	enum ledger_dir dir;
	int64_t amount;           /* > 0 */
};

/* A transaction to post. Strings are borrowed for the call. */
struct ledger_post {
	const char *kind;         /* "treasury_funding", "claim", ... */
	const char *ref;          /* unique external reference, or NULL */
	const char *intent_id;    /* or NULL */
	size_t n;
	const struct ledger_entry *entries;
};

/* Checks a transaction without writing: 2..LEDGER_MAX_ENTRIES entries,
 * account ids set, amounts > 0, sum(debits) == sum(credits) with neither
 * sum overflowing int64_t. ST_OK or ST_INVALID. */
enum st_rc ledger_check(const struct ledger_post *p);

/* Posts p as one transaction (entries first, the ledger_tx row last; the
 * store re-checks the balance). tx_id_out (may be NULL) gets the new id.
 * ST_INVALID: ledger_check failed. ST_UNIQUE: p->ref was already posted.
 * ST_CONFLICT: the store refused it (an account that may not go negative
 * would drop below its held amount, a balance would overflow, an unknown
 * account). On PostgreSQL an error aborts the enclosing transaction: run
 * inside tx_nested to survive one. */
enum st_rc ledger_post(struct tx *tx, const struct ledger_post *p, char tx_id_out[LEDGER_ID_MAX + 1]);

/* Funds the treasury from external with amount, once: the posting carries
 * the fixed reference LEDGER_TREASURY_FUNDING_REF, so later calls (later
 * starts, other instances) do nothing. amount <= 0 does nothing. *funded
 * (may be NULL) says whether this call posted it. */
enum st_rc ledger_fund_treasury(struct tx *tx, int64_t amount, bool *funded);

/* ---- holds ---- */

enum hold_status { HOLD_PENDING = 0, HOLD_CAPTURED, HOLD_RELEASED, HOLD_EXPIRED };
const char *hold_status_str(enum hold_status s);   /* "pending", ... */

struct ledger_hold {
	char id[LEDGER_ID_MAX + 1];
	char account_id[ACCOUNT_ID_MAX + 1];
	char intent_id[LEDGER_ID_MAX + 1];  /* "" when none */
	int64_t amount;
	enum hold_status status;
	int64_t expires_at;                 /* ms; 0 = no timeout */
	int64_t created_at;
	int64_t resolved_at;                /* 0 while pending */
};

/* Reserves amount on account_id until expires_at (ms since epoch; 0 = no
 * timeout). intent_id may be NULL. Fills *out.
 * ST_INVALID: amount <= 0. ST_NOT_FOUND: no such account.
 * ST_UNPROCESSABLE: available (balance - held) < amount on an account that
 * may not go negative, or held would overflow. */
enum st_rc ledger_hold_create(struct tx *tx, const char *account_id, int64_t amount,
			      int64_t expires_at, const char *intent_id, struct ledger_hold *out);

/* Reads a hold. ST_NOT_FOUND if none. */
enum st_rc ledger_hold_get(struct tx *tx, const char *hold_id, struct ledger_hold *out);

/* Captures a pending hold: posts {debit hold account, credit to_account}
 * of the hold's amount with the hold's id, which the store accepts once per
 * hold and which resolves the hold as 'captured' in the same statement.
 * kind/intent_id as in struct ledger_post. tx_id_out may be NULL.
 * ST_NOT_FOUND: no such hold. ST_CONFLICT: not pending (already captured,
 * released or expired) or the store refused the posting. */
enum st_rc ledger_hold_capture(struct tx *tx, const char *hold_id, const char *to_account,
			       const char *kind, const char *intent_id,
			       char tx_id_out[LEDGER_ID_MAX + 1]);

/* Releases a pending hold (status 'released'); the UPDATE ... WHERE
 * status = 'pending' must change exactly one row. ST_NOT_FOUND, or
 * ST_CONFLICT when it is no longer pending. */
enum st_rc ledger_hold_release(struct tx *tx, const char *hold_id);
/* As ledger_hold_release, resolving it as 'expired'. */
enum st_rc ledger_hold_expire_one(struct tx *tx, const char *hold_id);

/* Drops a pending hold's timeout (the hold then lives until captured or
 * released). ST_NOT_FOUND, or ST_CONFLICT when it is no longer pending. */
enum st_rc ledger_hold_keep(struct tx *tx, const char *hold_id);

/* Up to limit pending holds whose timeout has passed (expires_at <=
 * now_ms), oldest first. *out is malloc'd (caller frees with free(); NULL
 * when *n_out == 0). */
enum st_rc ledger_holds_due(struct tx *tx, int64_t now_ms, int limit, struct ledger_hold **out,
			    size_t *n_out);

/* Expires up to limit due holds (ledger_holds_due). *n_out gets how many.
 * Holds owned by an intent should be expired through intent_expire()
 * instead, which fails the intent with its hold. */
enum st_rc ledger_hold_expire(struct tx *tx, int64_t now_ms, int limit, int64_t *n_out);

/* ---- reads ---- */

/* One entry as listed by ledger_entries_page(). */
struct ledger_entry_row {
	int64_t id;                         /* the keyset cursor */
	char tx_id[LEDGER_ID_MAX + 1];
	char kind[32];
	char account_id[ACCOUNT_ID_MAX + 1];
	char wallet[WALLET_LEN + 1];        /* "" for system accounts */
	enum ledger_dir dir;
	int64_t amount;
	int64_t created_at;
};

#define LEDGER_PAGE_MAX 500

/* Up to limit (1..LEDGER_PAGE_MAX) entries with id > after, in id order,
 * of account_id (NULL = all accounts). *out is malloc'd (caller frees with
 * free(); NULL when *n_out == 0). *more says whether entries follow.
 * Stable under concurrent inserts: ids grow in commit order (SQLite has one
 * writer; on PostgreSQL ledger_post takes a transaction-scoped advisory
 * lock so ids are assigned in commit order). */
enum st_rc ledger_entries_page(struct tx *tx, const char *account_id, int64_t after, int limit,
			       struct ledger_entry_row **out, size_t *n_out, bool *more);

/* An account's balance, held and available (= balance - held). */
struct ledger_balance {
	int64_t balance;
	int64_t held;
	int64_t available;
};
enum st_rc ledger_balance(struct tx *tx, const char *account_id, struct ledger_balance *out);

#endif

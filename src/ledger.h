/* ledger.h — the double-entry ledger: balanced, append-only transactions
 * and holds (two-phase transfers), over the accounts of account.h.
 *
 * Money is int64_t base units. A transaction has >= 2 entries, each a
 * debit or a credit of a positive amount on one account, and
 * sum(debits) == sum(credits). An account's balance is credits - debits
 * of its entries, so the sum of all balances is zero. ledger_post() checks
 * all of this in code, and the store checks it again on its own (triggers
 * of migrations/<dialect>/002_ledger.sql), so no code path -- not even raw
 * SQL -- can commit an unbalanced transaction. Held amounts are maintained
 * by those triggers only, and balances too, except that on SQLite
 * ledger_post() moves a plain posting's balances itself and the store
 * checks each move against the entries (migration 012); see
 * docs/internals/ledger.md ("Who moves the balances").
 *
 * Holds reserve funds like TigerBeetle's pending transfers: available =
 * balance - held. A hold is captured (a posted transaction debiting the
 * held account by all or part of the hold; the rest goes back), released
 * or expired exactly once.
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

#define LEDGER_ID_MAX ST_ID_MAX   /* "ltx_" / "hold_" / "int_" + 24 hex (tx_new_id) */
#define LEDGER_MAX_ENTRIES 64     /* per transaction */
#define LEDGER_TREASURY_FUNDING_REF "treasury_funding"

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
	/* A transfer's (POST /api/v2/transfers) owner, description and
	 * metadata (compact JSON); NULL for the server's own postings. */
	const char *client_id;
	const char *description;
	const char *metadata;
	/* The transaction's id, drawn by the caller in this unit with
	 * tx_new_id(tx, "ltx_", ...) (to write it elsewhere first), or NULL
	 * to draw a new one. */
	const char *id;
	/* How a repeated ref is refused. false: by a lookup before anything
	 * is written, so the unit holds nothing of the posting (ledger_fund_
	 * treasury goes on after ST_UNIQUE). true: by the closing row's
	 * UNIQUE index alone, still ST_UNIQUE, with the entries (and on
	 * SQLite the balance moves) written before it left for the caller's
	 * unit or savepoint to take back: one statement less a posting
	 * (~3.4k instructions on the SQLite writer), for a caller whose
	 * failure rolls its work back anyway (the webhook job's effect). */
	bool ref_at_close;
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

/* PostgreSQL: posts n plain postings (no ref, intent or hold; at most
 * LEDGER_MAX_ENTRIES entries each) as n ledger transactions in a few
 * statements: every entry in multi-row INSERTs, then every closing row in
 * multi-row INSERTs. The store checks each transaction as it checks one
 * posted alone (the open-transaction trigger once a statement, the closing
 * trigger once a row). ids[i] gets posting i's id. ST_INVALID: a posting
 * fails ledger_check or is not plain (nothing written). Any failure of a
 * statement aborts the enclosing transaction, and refuses the whole run:
 * the caller rolls it back and posts each alone to learn which failed. */
enum st_rc ledger_post_many(struct tx *tx, const struct ledger_post *const *posts, int n,
			    char (*ids)[LEDGER_ID_MAX + 1]);

/* A posted transaction as ledger_tx_get reads it back. */
#define LEDGER_DESCRIPTION_MAX 500
struct ledger_tx_view {
	char id[LEDGER_ID_MAX + 1];
	char kind[32];
	char client_id[ACCOUNT_CLIENT_MAX + 1];          /* "" when none */
	char description[LEDGER_DESCRIPTION_MAX + 1];    /* "" when none */
	char metadata[ACCOUNT_METADATA_MAX + 1];         /* JSON text, "" when none */
	int64_t created_at;
	size_t n;
	struct {
		char account_id[ACCOUNT_ID_MAX + 1];
		enum ledger_dir dir;
		int64_t amount;
	} entries[LEDGER_MAX_ENTRIES];               /* in posting order */
};

/* Reads transaction id with its entries. owner: a client id, to see only
 * the transactions that client posted (the filter is in the SQL), or NULL
 * for any (the admin token). ST_NOT_FOUND when there is none, or it is not
 * owner's: the same answer. */
enum st_rc ledger_tx_get(struct tx *tx, const char *owner, const char *id, struct ledger_tx_view *out);

/* Funds the treasury from external with amount, once: the posting carries
 * the fixed reference LEDGER_TREASURY_FUNDING_REF, so later calls (later
 * starts, other instances) do nothing. amount <= 0 does nothing. *funded
 * (may be NULL) says whether this call posted it. */
enum st_rc ledger_fund_treasury(struct tx *tx, int64_t amount, bool *funded);

/* ---- holds ---- */

enum hold_status { HOLD_PENDING = 0, HOLD_CAPTURED, HOLD_RELEASED, HOLD_EXPIRED };
const char *hold_status_str(enum hold_status s);   /* "pending", ... (the store's) */
/* The API's names (SPEC section 13): PENDING, CAPTURED, VOIDED (the
 * store's 'released'), EXPIRED. hold_state_parse is its inverse: false for
 * anything else. */
const char *hold_state_str(enum hold_status s);
bool hold_state_parse(const char *s, enum hold_status *out);

#define LEDGER_CLIENT_MAX 40        /* an API key's client id ("key_" + 24 hex) */
#define LEDGER_METADATA_MAX 4096    /* bytes of a hold's metadata (JSON text) */

struct ledger_hold {
	char id[LEDGER_ID_MAX + 1];
	char account_id[ACCOUNT_ID_MAX + 1];
	char intent_id[LEDGER_ID_MAX + 1];  /* "" when none */
	char to_account[ACCOUNT_ID_MAX + 1]; /* "" when the capture names it */
	char client_id[LEDGER_CLIENT_MAX + 1]; /* owner; "" for the operator's and intents' */
	int64_t amount;
	int64_t captured;                   /* what its capture posted; 0 unless captured */
	enum hold_status status;
	int64_t expires_at;                 /* ms; 0 = no timeout */
	int64_t created_at;
	int64_t resolved_at;                /* 0 while pending */
};

/* What a new hold reserves, where its capture goes and whose it is.
 * Strings are borrowed for the call; NULL for the optional ones. */
struct ledger_hold_spec {
	const char *account_id;   /* reserved on ("from") */
	int64_t amount;           /* > 0 */
	int64_t expires_at;       /* ms since epoch; 0 = no timeout */
	const char *to_account;   /* where a capture posts, or NULL (named then) */
	const char *client_id;    /* owner, or NULL */
	const char *metadata;     /* JSON text (<= LEDGER_METADATA_MAX bytes), or NULL */
	const char *intent_id;    /* or NULL */
	/* The accounts as the caller read them in this unit (account_id's and
	 * to_account's rows), or NULL to read them here: one round trip fewer
	 * each on PostgreSQL. Only the pre-check reads their balances; the
	 * store's CHECK decides a race either way. */
	const struct account *account;
	const struct account *to;
};

/* Reserves spec->amount on spec->account_id (available drops, balance does
 * not). Fills *out.
 * ST_INVALID: amount <= 0, metadata too long, to_account == account_id.
 * ST_NOT_FOUND: no such account (from or to).
 * ST_UNPROCESSABLE: available (balance - held) < amount on an account that
 * may not go negative, or held would overflow. */
enum st_rc ledger_hold_open(struct tx *tx, const struct ledger_hold_spec *spec, struct ledger_hold *out);

/* ledger_hold_open of {account_id, amount, expires_at, intent_id}. */
enum st_rc ledger_hold_create(struct tx *tx, const char *account_id, int64_t amount,
			      int64_t expires_at, const char *intent_id, struct ledger_hold *out);

/* As ledger_hold_create on the account of wallet (canonical), found and
 * reserved on in one statement (one round trip on PostgreSQL): the same
 * answers, ST_NOT_FOUND when no account has that wallet. */
enum st_rc ledger_hold_create_on_wallet(struct tx *tx, const char *wallet, int64_t amount,
					int64_t expires_at, const char *intent_id, struct ledger_hold *out);

/* Reads a hold. ST_NOT_FOUND if none. */
enum st_rc ledger_hold_get(struct tx *tx, const char *hold_id, struct ledger_hold *out);

/* Reads a hold's metadata: *out is malloc'd JSON text (caller frees), or
 * NULL when it has none. ST_NOT_FOUND if no such hold. */
enum st_rc ledger_hold_metadata(struct tx *tx, const char *hold_id, char **out);

/* Captures amount of a pending hold (0: all of it) into to_account (NULL:
 * the hold's own destination): posts {debit hold account, credit
 * to_account} of amount with the hold's id, which the store accepts once
 * per hold and which resolves the hold as 'captured' in the same statement,
 * releasing the whole reservation: what was not captured goes back.
 * kind/intent_id as in struct ledger_post. tx_id_out may be NULL.
 * ST_NOT_FOUND: no such hold. ST_INVALID: amount < 0 or above the hold's,
 * no destination, or a destination other than the hold's.
 * ST_CONFLICT: not pending (already captured, released or expired) or the
 * store refused the posting. Expiry is the caller's: a pending hold past
 * its timeout is captured like any other (see ledger_hold_expire_one). */
enum st_rc ledger_hold_capture_amount(struct tx *tx, const char *hold_id, int64_t amount,
				      const char *to_account, const char *kind,
				      const char *intent_id, char tx_id_out[LEDGER_ID_MAX + 1]);

/* ledger_hold_capture_amount of all of the hold into to_account. */
enum st_rc ledger_hold_capture(struct tx *tx, const char *hold_id, const char *to_account,
			       const char *kind, const char *intent_id,
			       char tx_id_out[LEDGER_ID_MAX + 1]);

/* Releases a pending hold (status 'released'); the UPDATE ... WHERE
 * status = 'pending' must change exactly one row. ST_NOT_FOUND, or
 * ST_CONFLICT when it is no longer pending. */
enum st_rc ledger_hold_release(struct tx *tx, const char *hold_id);
/* As ledger_hold_release, resolving it as 'expired', and only while it is
 * due (expires_at <= now): ST_CONFLICT, writing nothing, for a hold kept
 * (its timeout dropped) or not yet due. */
enum st_rc ledger_hold_expire_one(struct tx *tx, const char *hold_id);

/* Drops a pending hold's timeout (the hold then lives until captured or
 * released). ST_NOT_FOUND, or ST_CONFLICT when it is no longer pending or
 * its time is up (expires_at <= now, the sweep's test): a hold that is due
 * is not brought back to life by a late caller. Writes nothing then. */
enum st_rc ledger_hold_keep(struct tx *tx, const char *hold_id);

/* Up to limit pending holds whose timeout has passed (expires_at <=
 * now_ms), oldest first. *out is malloc'd (caller frees with free(); NULL
 * when *n_out == 0). */
enum st_rc ledger_holds_due(struct tx *tx, int64_t now_ms, int limit, struct ledger_hold **out,
			    size_t *n_out);

/* Expires up to limit due holds (ledger_holds_due). *n_out gets how many.
 * A hold resolved meanwhile (PostgreSQL: captured or released by a unit
 * that committed after the list was read) is skipped, not an error.
 * Holds owned by an intent should be expired through intent_expire()
 * instead, which fails the intent with its hold. */
enum st_rc ledger_hold_expire(struct tx *tx, int64_t now_ms, int limit, int64_t *n_out);

/* A page of holds in id order (ids sort by creation time): client_id's
 * (NULL: everyone's), in state (NULL: any), with id > after (NULL or "":
 * from the first). limit 1..LEDGER_PAGE_MAX. *out is malloc'd (caller
 * frees; NULL when *n_out == 0); *more says whether more follow. */
enum st_rc ledger_holds_page(struct tx *tx, const char *client_id, const enum hold_status *state,
			     const char *after, int limit, struct ledger_hold **out, size_t *n_out,
			     bool *more);

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
/* Call first in a read unit that pages entries (before any other query):
 * on PostgreSQL it waits until no posting is in flight and keeps new ones
 * out until the read ends (ledger_post holds the same lock shared), and
 * switches the read to READ COMMITTED so its snapshot is taken after the
 * wait. Then every entry with an id below the page's last is visible, and
 * a later page never finds one it skipped. A no-op on SQLite (one writer). */
enum st_rc ledger_page_begin(struct tx *tx);

/* As ledger_entries_page for a client: owner (a client id) with
 * account_id NULL lists the entries of owner's accounts only (the filter is
 * in the SQL); with account_id (which the caller resolved with
 * account_resolve, so it may read it) that account's. owner NULL: as
 * ledger_entries_page. */
enum st_rc ledger_entries_page_owned(struct tx *tx, const char *owner, const char *account_id,
				     int64_t after, int limit, struct ledger_entry_row **out,
				     size_t *n_out, bool *more);

/* An account's balance, held and available (= balance - held). */
struct ledger_balance {
	int64_t balance;
	int64_t held;
	int64_t available;
};
enum st_rc ledger_balance(struct tx *tx, const char *account_id, struct ledger_balance *out);

/* Hot accounts (PostgreSQL, migration 008): a posting does not update the
 * balance of an account that may go negative in place (that row lock
 * serialised every writer into revenue, external, ...) but appends its net
 * change to account_deltas; readers add the unfolded deltas (account.c,
 * the account_balances view). This folds up to limit of the oldest deltas
 * into accounts.balance; *folded gets how many accounts it updated. Run by
 * the ticker; safe to run from several instances at once. A no-op on
 * SQLite, whose single writer updates every balance in place. */
enum st_rc ledger_fold_deltas(struct tx *tx, int limit, int64_t *folded);

#endif

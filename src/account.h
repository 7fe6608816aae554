/* account.h — ledger accounts: wallet accounts created by /api/register,
 * the system accounts of SPEC section 6 and the client accounts of SPEC
 * section 13 (POST /api/v2/accounts). This module owns the accounts table
 * and the rules of who may read, debit and credit which account
 * (account_resolve); balances are changed only by the ledger module
 * (ledger.c). A client account's row: kind 'system' (see migration 006),
 * client_id set, name "<client_id>/<name>". */
#ifndef SETTLED_ACCOUNT_H
#define SETTLED_ACCOUNT_H

#include <stdbool.h>
#include <stdint.h>

#include "idempotency.h"
#include "rc.h"
#include "store.h"
#include "validate.h"

#define ACCOUNT_ID_MAX 40

/* System account names. */
#define ACCT_EXTERNAL "external"
#define ACCT_TREASURY "treasury"
#define ACCT_REVENUE "revenue"
#define ACCT_COMMISSIONS "commissions"
#define ACCT_PAYOUTS_CLEARING "payouts_clearing"

#define ACCOUNT_NAME_MAX 128          /* a client account's name (SPEC 13) */
#define ACCOUNT_CLIENT_MAX 40         /* a client id ("key_" + 24 hex) */
#define ACCOUNT_METADATA_MAX 4096     /* bytes of compact JSON */
/* "<client_id>/<name>": how the admin token names a client account. */
#define ACCOUNT_QNAME_MAX (ACCOUNT_CLIENT_MAX + 1 + ACCOUNT_NAME_MAX)

enum account_kind { ACCOUNT_WALLET = 0, ACCOUNT_SYSTEM, ACCOUNT_CLIENT };
const char *account_kind_str(enum account_kind k);  /* "wallet", "system", "client" */

struct account {
	char id[ACCOUNT_ID_MAX + 1];
	enum account_kind kind;
	char wallet[WALLET_LEN + 1];     /* "" unless a wallet */
	char referrer[WALLET_LEN + 1];   /* "" when none */
	char client_id[ACCOUNT_CLIENT_MAX + 1]; /* "" unless a client account */
	char name[ACCOUNT_NAME_MAX + 1]; /* client account: its name; system: its name; wallet: "" */
	char metadata[ACCOUNT_METADATA_MAX + 1]; /* JSON text, "" when none */
	int64_t balance;
	int64_t held;
	int64_t created_at;
	bool may_go_negative;            /* the API's "overdraft" */
};

/* ---- client accounts and who may use what (SPEC section 13) ---- */

/* Is name a client account name: 1..ACCOUNT_NAME_MAX of [A-Za-z0-9:._-],
 * not starting with "0x"/"0X" (wallets are named so) and not a system
 * account's name ("treasury", "revenue", ...), so that a name in a
 * transfer or hold always means one account. */
bool account_name_valid(const char *name, size_t len);

/* Creates client_id's account name (account_name_valid; caller checked).
 * overdraft lets it go negative. metadata: compact JSON object text of at
 * most ACCOUNT_METADATA_MAX bytes, or NULL. Fills *out.
 * ST_CONFLICT: the client has an account of that name (the UNIQUE index
 * decides; never check-then-insert). ST_INVALID: bad name or metadata. */
enum st_rc account_create_client(struct tx *tx, const char *client_id, const char *name,
				 bool overdraft, const char *metadata, struct account *out);

/* Up to limit client accounts whose name sorts after `after` ("" or NULL:
 * from the start), in name order: client_id's own (after is a name of
 * its), or, for client_id NULL (the admin token), every client's, ordered
 * and paged by "<client_id>/<name>" (after is such a qualified name).
 * *out is malloc'd (caller frees with free(); NULL when *n_out == 0);
 * *more says whether accounts follow. limit 1..500. */
enum st_rc account_list_client(struct tx *tx, const char *client_id, const char *after, int limit,
			       struct account **out, size_t *n_out, bool *more);

/* What a caller wants to do with an account it names. */
enum account_use { ACCOUNT_READ = 0, ACCOUNT_DEBIT, ACCOUNT_CREDIT };

/* THE resolution of an account named in a request (path, transfer
 * posting, hold's from/to), for the caller req_client_id() gives:
 * a client id, "admin" for the admin token ("anon" acts as a client with
 * no accounts). This function is the one place SPEC 13's rules live; every
 * route that names an account calls it inside its transaction.
 *
 * Names:  "0x" + 40 hex   a wallet (any case);
 *         "<cid>/<name>"  client cid's account name (a client may name only
 *                         its own this way; the admin token any);
 *         "<name>"        a client: its own account name, or the system
 *                         account "revenue" (credit only);
 *                         the admin token: a system account ("treasury", ...).
 * Uses:   a client reads its own accounts and wallets; debits only its own
 *         accounts; credits its own, a wallet, or revenue. The admin token
 *         reads, debits and credits every account (the operator corrects
 *         and allocates: a transfer from treasury to a wallet or a client's
 *         account).
 * Returns ST_OK with *out (balance and held as stored; to credit a system
 * account, its balance without a hot account's deltas not yet folded,
 * which nothing that credits reads) when the caller may use the account so; ST_NOT_FOUND when the name is malformed, names no
 * account, or names one the caller may not use that way -- another
 * client's account, a system account, a wallet to debit: all the same
 * answer, so nothing tells a client what exists beyond what it may use.
 * Routes answer ST_NOT_FOUND as 404 not_found for a path and 422
 * unknown_account (with the field) for a name in a body. Store errors as
 * they come. */
enum st_rc account_resolve(struct tx *tx, const char *caller, const char *name,
			   enum account_use use, struct account *out);

/* Two account_resolve calls in one statement (one round trip on
 * PostgreSQL): *rc1 and *rc2 get each one's ST_OK or ST_NOT_FOUND (and
 * *out1, *out2 on ST_OK). Returns a store error, or ST_OK. */
enum st_rc account_resolve_two(struct tx *tx, const char *caller, const char *name1,
			       enum account_use use1, struct account *out1, enum st_rc *rc1,
			       const char *name2, enum account_use use2, struct account *out2,
			       enum st_rc *rc2);

/* The name a caller shows for an account it may see: the wallet, a
 * client's own account's name, "<cid>/<name>" for the admin token, a
 * system account's name. out has ACCOUNT_QNAME_MAX + 1 bytes. */
void account_display_name(const struct account *a, const char *caller,
			  char out[ACCOUNT_QNAME_MAX + 1]);

/* Creates the wallet's account. wallet and referrer (may be NULL) must be
 * canonical (parse_wallet). ST_CONFLICT when the wallet exists,
 * ST_NOT_FOUND when the referrer does not, ST_INVALID when a wallet
 * refers itself. Fills *out on success. */
enum st_rc account_register(struct tx *tx, const char *wallet, const char *referrer,
			    struct account *out);

/* The same for n wallets without referrers, with ids drawn by the caller
 * (tx_new_id), in multi-row INSERTs (the SQLite writer's merged units).
 * ST_CONFLICT when any of them exists (or two are the same): then nothing
 * must be kept, the caller rolls back and registers each alone. */
struct account_new {
	const char *id, *wallet;
	int64_t created_at;
};
enum st_rc account_register_many(struct tx *tx, const struct account_new *accts, int n);

/* A keyed registration without a referrer on PostgreSQL, in ONE statement
 * with its idempotency key's record (one round trip, no savepoint): the
 * account a (id and created_at drawn by the caller) unless its wallet is
 * taken, and, when it was written, the key's record (as idem_record)
 * holding rec->ans. *registered says whether the account was written
 * (false: the wallet is taken, nothing was written, and the caller records
 * its refusal itself); *recorded false with *registered true means a live
 * record of the key exists and was left alone: the caller must roll the
 * unit back (the account is written) and answer that record. The record's
 * created_at is a's. PostgreSQL only (SQLite has no writing CTEs:
 * ST_INTERNAL there). */
enum st_rc account_register_recorded(struct tx *tx, const struct account_new *a,
				     const struct idem_new_record *rec, const char *owner,
				     int64_t ttl_ms, bool *registered, bool *recorded);

/* The same for n keyed registrations at once (a merged run of them on
 * PostgreSQL): the keys' records recs[i] (as idem_record_many, created_at
 * the transaction's now) and the accounts accts[i] in one statement a
 * chunk (tx_exec_rows' chunks) instead of two, so a merged run is one round
 * trip, not two. The accounts are written only when every record of the
 * chunk was. *all true: every record and every account written; false: a
 * key has a live record or a wallet is taken (or two are the same), and
 * the caller must roll back and run each alone. PostgreSQL only
 * (ST_INTERNAL on SQLite). */
enum st_rc account_register_recorded_many(struct tx *tx, const struct account_new *accts,
					  const struct idem_new_record *recs, int n,
					  const char *owner, int64_t ttl_ms, bool *all);

/* Looks up a wallet's account (canonical wallet). ST_NOT_FOUND if none. */
enum st_rc account_by_wallet(struct tx *tx, const char *wallet, struct account *out);
/* What a payment to a wallet needs: its account's id and its referrer's
 * wallet and account id ("" when none). */
struct account_payee {
	char id[ACCOUNT_ID_MAX + 1];
	char referrer[WALLET_LEN + 1];
	char referrer_id[ACCOUNT_ID_MAX + 1];
};
/* Looks up wallet's (canonical) account and its referrer's in one
 * statement, reading nothing else (account_by_wallet reads every column,
 * twice for a referred wallet). ST_NOT_FOUND if none. */
enum st_rc account_payee_by_wallet(struct tx *tx, const char *wallet, struct account_payee *out);
/* Looks up any account by id (system accounts: their name). */
enum st_rc account_by_id(struct tx *tx, const char *id, struct account *out);

/* Creates the system accounts if missing (idempotent). */
enum st_rc account_ensure_system(struct tx *tx);

#endif

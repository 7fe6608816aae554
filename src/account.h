/* account.h — ledger accounts: wallet accounts created by /api/register and
 * the system accounts of SPEC section 6. This module owns the accounts
 * table; balances are changed only by the ledger module (ledger.c). */
#ifndef SETTLED_ACCOUNT_H
#define SETTLED_ACCOUNT_H

#include <stdbool.h>
#include <stdint.h>

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

struct account {
	char id[ACCOUNT_ID_MAX + 1];
	char wallet[WALLET_LEN + 1];     /* "" for system accounts */
	char referrer[WALLET_LEN + 1];   /* "" when none */
	int64_t balance;
	int64_t held;
	int64_t created_at;
	bool may_go_negative;
};

/* Creates the wallet's account. wallet and referrer (may be NULL) must be
 * canonical (parse_wallet). ST_CONFLICT when the wallet exists,
 * ST_NOT_FOUND when the referrer does not, ST_INVALID when a wallet
 * refers itself. Fills *out on success. */
enum st_rc account_register(struct tx *tx, const char *wallet, const char *referrer,
			    struct account *out);

/* Looks up a wallet's account (canonical wallet). ST_NOT_FOUND if none. */
enum st_rc account_by_wallet(struct tx *tx, const char *wallet, struct account *out);
/* Looks up any account by id (system accounts: their name). */
enum st_rc account_by_id(struct tx *tx, const char *id, struct account *out);

/* Creates the system accounts if missing (idempotent). */
enum st_rc account_ensure_system(struct tx *tx);

#endif

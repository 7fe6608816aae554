/* reconcile.h — reconciliation: re-derives the ledger's invariants from
 * the raw rows and reports every disagreement (SPEC section 10).
 *
 * The ledger and intent modules enforce their invariants on every write
 * (code and store triggers); reconciliation is the independent audit that
 * would notice if one were ever broken: a bug, a manual SQL edit, a restore
 * gone wrong. It runs in one read transaction (a consistent snapshot) every
 * minute from the ticker and on demand (POST /api/admin/reconciliation);
 * the report is stored in reconciliation_reports and the newest one is
 * served by GET /api/admin/reconciliation.
 *
 * Checks (each "ok" when its count is 0):
 *   transactions_balanced       every ledger tx has >= 2 entries, debits == credits
 *   global_sum_zero             the sum of all balances (and of all entries) is 0
 *   balances_match_entries      each account's balance == credits - debits of its entries
 *   held_matches_holds          each account's held == the sum of its pending holds
 *   no_overdraft                no account that may not go negative has balance - held < 0
 *   holds_match_intents         open intents have a pending hold; SETTLED ones a captured
 *                               hold; FAILED ones a released or expired hold
 *   settled_claims_posted_once  a SETTLED intent has exactly one ledger tx, others none
 *   holds_resolved_once         every hold (claims', payouts', clients'): a captured one
 *                               has exactly one ledger tx, which took 1 .. its amount
 *                               from its account; any other has none
 *   no_overdue_holds            no pending hold (a client's, or a PENDING intent's) past
 *                               its expiry by more than RECONCILE_HOLD_GRACE_MS: the
 *                               ticker expires them every second
 *   no_stuck_intents            no intent LOCKED or SUBMITTED for longer than
 *                               SETTLED_STUCK_AFTER
 * A failed check names what it found in "examples" (ids, reconcile_check).
 * Counts reported alongside (not checks): accounts, transactions, entries,
 * intents by status, holds by state (pending, captured, released, expired)
 * and the amount held, jobs by state, dead-letter jobs. The ticker exports
 * the hold counts as settled_holds{state} and the amount held (every
 * account type) as settled_held_amount.
 *
 * It reads the tables of the ledger, intent and queue modules directly, on
 * purpose: an audit that went through the code it audits would share its
 * bugs. It never writes them. */
#ifndef SETTLED_RECONCILE_H
#define SETTLED_RECONCILE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "rc.h"
#include "store.h"

#define RECONCILE_KEEP 100   /* reports kept in the table */
#define RECONCILE_EXAMPLES 10 /* offending ids a failed check names */
#define RECONCILE_ID_MAX 63

/* The checks that name what they found wrong: which transactions, accounts
 * or intents (up to RECONCILE_EXAMPLES each, in id order), so an operator
 * starts from the rows instead of from a count. */
enum reconcile_check {
	RC_TRANSACTIONS_BALANCED = 0, /* ledger tx ids */
	RC_BALANCES_MATCH_ENTRIES,    /* account ids */
	RC_HELD_MATCHES_HOLDS,        /* account ids */
	RC_NO_OVERDRAFT,              /* account ids */
	RC_HOLDS_MATCH_INTENTS,       /* intent ids, then hold ids of pending holds of closed intents */
	RC_SETTLED_POSTED_ONCE,       /* intent ids */
	RC_NO_STUCK_INTENTS,          /* intent ids */
	RC_HOLDS_RESOLVED_ONCE,       /* hold ids */
	RC_NO_OVERDUE_HOLDS,          /* hold ids */
	RC_NAMED_CHECKS
};
struct reconcile_examples {
	int n;
	char id[RECONCILE_EXAMPLES][RECONCILE_ID_MAX + 1];
};
#define RECONCILE_HOLD_GRACE_MS (5 * 60 * 1000)

struct reconcile_report {
	int64_t ran_at;
	int64_t stuck_after_ms;
	/* checks */
	int64_t unbalanced_tx;
	int64_t unbalanced_amount;      /* sum over unbalanced tx of |debits - credits| */
	int64_t balance_sum;            /* sum of all balances: must be 0 */
	int64_t entry_sum;              /* sum of credits - debits over all entries: must be 0 */
	int64_t balance_mismatches;     /* accounts whose balance != their entries */
	int64_t held_mismatches;        /* accounts whose held != their pending holds */
	int64_t overdrafts;
	int64_t open_intents_without_pending_hold;
	int64_t pending_holds_of_closed_intents;
	int64_t settled_without_capture;
	int64_t failed_with_open_or_captured_hold;
	int64_t settled_posting_mismatches;
	int64_t stuck_locked;
	int64_t stuck_submitted;
	int64_t hold_posting_mismatches;   /* holds whose postings break "captured once" */
	int64_t overdue_holds;
	/* counts */
	int64_t accounts, transactions, entries, pending_holds, held_total;
	int64_t intents[6];             /* by enum intent_status */
	int64_t jobs[4];                /* by enum job_state */
	/* what each failed check found; filled only for a failed check */
	struct reconcile_examples examples[RC_NAMED_CHECKS];
	int64_t holds[4];               /* by enum hold_status */
};

/* The imbalance gauge: |balance_sum| + |entry_sum| + unbalanced_amount, in
 * base units. 0 when the ledger balances. */
int64_t reconcile_imbalance(const struct reconcile_report *r);
/* Number of failed checks (0 = all ok). */
int reconcile_problems(const struct reconcile_report *r);

/* Runs every check in tx (use a read transaction for a consistent view)
 * and fills *out. Intents are stuck when LOCKED or SUBMITTED with
 * updated_at <= now - stuck_after_ms. */
enum st_rc reconcile_run(struct tx *tx, int64_t stuck_after_ms, struct reconcile_report *out);

/* The report as JSON (a new reference; NULL on ENOMEM). */
json_t *reconcile_report_json(const struct reconcile_report *r);

/* Stores a report (JSON text) and drops all but the newest RECONCILE_KEEP. */
enum st_rc reconcile_store(struct tx *tx, const struct reconcile_report *r, const char *json_text);

/* The newest stored report's JSON text in *json_out (malloc'd; caller
 * frees). ST_NOT_FOUND when none was stored yet. */
enum st_rc reconcile_latest(struct tx *tx, char **json_out);

#endif

/* intent.h — intents and their state machine (SPEC section 7).
 *
 *   PENDING -> LOCKED -> SUBMITTED -> CONFIRMED -> SETTLED
 *   and FAILED from any non-terminal state (SETTLED, FAILED are terminal).
 *
 * Every status change goes through one function checked against one table
 * in intent.c (intent_transition_valid() exposes that table); each change
 * is stored in intent_transitions with its time and actor. An invalid
 * change returns ST_CONFLICT and writes nothing (the routes answer 409
 * invalid_transition).
 *
 * A claim is a wallet withdrawing what it is owed (SPEC section 7): an
 * intent to move amount from the wallet's own account to external (the
 * chain). Creating it puts a hold on the wallet's account, so only its
 * available balance can be claimed; SETTLED captures the hold (a posted
 * wallet -> external transaction); FAILED releases it. Nothing leaves
 * treasury or any other account through a claim. A payout is the same
 * machine with the same kind of hold (see intent_payout_create).
 *
 * Every function runs inside a write unit's transaction (reads: any
 * transaction). Actors are short strings naming who acted: "req:<request
 * id>" for requests, "job:<job id>" for jobs, "sweeper" for the ticker.
 *
 * Metrics are not counted here: the store may still roll the unit back.
 * Callers count with intent_count() / intent_observe() after their unit
 * committed (workers, after job_commit), or from inside a unit with
 * intent_count_at_commit(), which the store runs after the COMMIT. */
#ifndef SETTLED_INTENT_H
#define SETTLED_INTENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ledger.h"
#include "metrics.h"
#include "rc.h"
#include "store.h"
#include "validate.h"

enum intent_status {
	INTENT_PENDING = 0,
	INTENT_LOCKED,
	INTENT_SUBMITTED,
	INTENT_CONFIRMED,
	INTENT_SETTLED,
	INTENT_FAILED,
	INTENT_STATUS_COUNT
};

/* "PENDING", ...; "UNKNOWN" outside the enum. Never NULL. */
const char *intent_status_str(enum intent_status s);
/* Parses a status name; false when unknown. */
bool intent_status_parse(const char *s, enum intent_status *out);
/* The one transition table: may an intent go from -> to? */
bool intent_transition_valid(enum intent_status from, enum intent_status to);
/* SETTLED or FAILED. */
bool intent_status_terminal(enum intent_status s);

#define INTENT_ACTOR_MAX 160
#define INTENT_REASON_MAX 120

struct intent {
	char id[LEDGER_ID_MAX + 1];
	char kind[16];                        /* "claim" */
	char wallet[WALLET_LEN + 1];
	int64_t amount;
	enum intent_status status;
	char tx_hash[TX_HASH_LEN + 1];        /* "" until recorded */
	char hold_id[LEDGER_ID_MAX + 1];
	char ledger_tx_id[LEDGER_ID_MAX + 1]; /* "" until settled */
	char failure_reason[INTENT_REASON_MAX + 1];
	int64_t created_at;
	int64_t updated_at;
};

/* Intent kinds (intents.kind). */
#define INTENT_KIND_CLAIM "claim"
#define INTENT_KIND_PAYOUT "payout"

/* Creates a claim intent (PENDING) for a registered wallet (canonical,
 * parse_wallet) and a hold of amount on the wallet's own account that
 * expires at now + hold_timeout_ms (<= 0: no timeout). Fills *out and,
 * when hold is not NULL, *hold.
 * ST_INVALID: amount <= 0. ST_NOT_FOUND: the wallet is not registered.
 * ST_UNPROCESSABLE: the wallet's available balance is below amount. */
enum st_rc intent_claim_create(struct tx *tx, const char *wallet, int64_t amount,
			       int64_t hold_timeout_ms, const char *actor, struct intent *out,
			       struct ledger_hold *hold);

/* Creates a payout intent (PENDING): amount leaves the wallet
 * (canonical) for the outside world when it settles. The hold of amount is
 * on the wallet's own account, without timeout (the payout job drives the
 * intent). Fills *out and, when hold is not NULL, *hold. The rest of the
 * machine is shared with claims: intent_record submits it, intent_confirm,
 * intent_settle (capture into payouts_clearing and on to external; see
 * docs/internals/payouts.md) and intent_fail (releases the hold: the
 * funds return to the wallet's available balance).
 * ST_INVALID: amount <= 0. ST_NOT_FOUND: the wallet is not registered.
 * ST_UNPROCESSABLE: the wallet's available balance is below amount. */
enum st_rc intent_payout_create(struct tx *tx, const char *wallet, int64_t amount,
				const char *actor, struct intent *out, struct ledger_hold *hold);

/* Reads an intent. ST_NOT_FOUND if none. */
enum st_rc intent_get(struct tx *tx, const char *id, struct intent *out);
/* As intent_get for a client (owner: a client id; NULL: any, the admin
 * token): an intent another client owns is ST_NOT_FOUND, as a missing one
 * (public claims, owned by nobody, are anyone's to read). */
enum st_rc intent_get_owned(struct tx *tx, const char *owner, const char *id, struct intent *out);
/* Gives a new intent its owner (the client whose /api/v2/claims or payout
 * batch made it), in the unit that created it. ST_CONFLICT if it has one. */
enum st_rc intent_set_owner(struct tx *tx, const char *id, const char *client_id);

/* Records the chain transaction of a PENDING intent: PENDING -> LOCKED ->
 * SUBMITTED in the caller's transaction, storing tx_hash (canonical,
 * parse_tx_hash). The hold's timeout is dropped: from SUBMITTED on the
 * stuck-intent sweeper (SPEC section 10) bounds it. out may be NULL.
 * ST_NOT_FOUND; ST_CONFLICT: not PENDING (invalid transition), or its
 * hold's time is up (nothing written: see intent_expire_due);
 * ST_UNIQUE: tx_hash already recorded for another intent. */
enum st_rc intent_record(struct tx *tx, const char *id, const char *tx_hash, const char *actor,
			 struct intent *out);

/* A PENDING intent whose hold's time is up (expires_at <= now) but which
 * the sweep has not reached yet: FAILED ("hold_expired"), the hold expired,
 * as the sweep would do, in the caller's transaction. A caller that finds
 * it too late (a late record) commits this with its refusal, so the answer
 * states what the intent became. out may be NULL. ST_NOT_FOUND;
 * ST_CONFLICT: not PENDING or not due (nothing written). */
enum st_rc intent_expire_due(struct tx *tx, const char *id, const char *actor, struct intent *out);

/* SUBMITTED -> CONFIRMED (the rail confirmed the transaction). For the job
 * worker. out may be NULL. ST_NOT_FOUND; ST_CONFLICT: invalid transition. */
enum st_rc intent_confirm(struct tx *tx, const char *id, const char *actor, struct intent *out);

/* CONFIRMED -> SETTLED: captures the hold, i.e. posts the wallet ->
 * external transaction (a payout: wallet -> payouts_clearing, then
 * payouts_clearing -> external in the same unit), exactly once. out may be NULL (out->updated_at -
 * out->created_at is the settlement duration). ST_NOT_FOUND; ST_CONFLICT:
 * invalid transition or the hold is not pending. */
enum st_rc intent_settle(struct tx *tx, const char *id, const char *actor, struct intent *out);

/* Any non-terminal status -> FAILED, releasing the hold. reason (may be
 * NULL) is stored, truncated to INTENT_REASON_MAX. out may be NULL.
 * ST_NOT_FOUND; ST_CONFLICT: already SETTLED or FAILED. */
enum st_rc intent_fail(struct tx *tx, const char *id, const char *actor, const char *reason,
		       struct intent *out);

/* Fails up to limit PENDING intents whose hold timed out (expires_at <=
 * now_ms), resolving the hold as 'expired' (reason "hold_expired"); then
 * expires any other pending hold past its timeout. now_ms is the
 * transaction's clock (tx_now_ms): each expiry checks the hold is still due
 * by it. A hold recorded (kept), captured or voided since the list was read
 * is skipped, and the rest commit. *n_failed gets the number of intents
 * failed (for settled_intents_total{status="FAILED"}). */
enum st_rc intent_expire(struct tx *tx, int64_t now_ms, int limit, const char *actor,
			 int64_t *n_failed);

/* The rail's verdict on a submitted intent, applied in the caller's unit
 * (the claim and payout confirmation jobs share it). When the intent still
 * waits for one (SUBMITTED or CONFIRMED): settle (SUBMITTED -> CONFIRMED ->
 * SETTLED) or fail with reason; otherwise nothing changes. *it gets the
 * intent as it is after the unit; *confirmed: this call made it CONFIRMED;
 * *applied: this call applied the verdict. ST_NOT_FOUND; other rcs from
 * intent_confirm / intent_settle / intent_fail. */
enum st_rc intent_apply_verdict(struct tx *tx, const char *id, const char *actor, bool settle,
				const char *reason, struct intent *it, bool *confirmed,
				bool *applied);

/* An intent the stuck sweeper looks at. */
struct intent_stuck {
	char id[LEDGER_ID_MAX + 1];
	bool locked;          /* LOCKED (else SUBMITTED) */
	int64_t updated_at;
};

/* Adds the number of intents in each status to out[status]; with
 * stuck_cutoff_ms >= 0, only the LOCKED and SUBMITTED ones last updated at
 * or before it (reconciliation's "stuck" counts). */
enum st_rc intent_count_by_status(struct tx *tx, int64_t stuck_cutoff_ms,
				  int64_t out[INTENT_STATUS_COUNT]);

/* Up to limit intents LOCKED (any kind) or SUBMITTED claims with
 * updated_at <= cutoff_ms, after the keyset cursor (cur_at, cur_id),
 * oldest first. A SUBMITTED payout is not listed: its payout.confirm jobs
 * drive it. *out is malloc'd (caller frees; NULL when *n == 0). */
enum st_rc intent_list_stuck(struct tx *tx, int64_t cutoff_ms, int64_t cur_at, const char *cur_id,
			     int limit, struct intent_stuck **out, size_t *n);

/* One stored transition. */
struct intent_transition {
	enum intent_status from;   /* meaningless when from_none */
	bool from_none;            /* the creation: NULL -> PENDING */
	enum intent_status to;
	int64_t at;
	char actor[INTENT_ACTOR_MAX + 1];
};

/* The intent's transitions in order. *out is malloc'd (caller frees with
 * free(); NULL when *n_out == 0). */
enum st_rc intent_history(struct tx *tx, const char *id, struct intent_transition **out,
			  size_t *n_out);

/* Metrics, for callers after their unit committed:
 * settled_intents_total{status} += n for status. */
void intent_count(struct metric_family *intents_total, enum intent_status status, double n);
/* The same from inside a unit: counted once its transaction has committed
 * (tx_after_commit), never for a run that rolled back or was re-run.
 * ST_NOMEM when it could not be registered (the unit should fail). */
enum st_rc intent_count_at_commit(struct tx *tx, struct metric_family *intents_total,
				  enum intent_status status, int64_t n);
/* Counts the intent's current status once and, when it is SETTLED,
 * observes settled_settlement_duration_seconds (created -> settled). */
void intent_observe(struct metric_family *intents_total, struct metric_family *duration,
		    const struct intent *it);

#endif

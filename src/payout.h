/* payout.h — payout batches and their items (SPEC section 8;
 * docs/internals/payouts.md). This module owns payout_batches and
 * payout_items and nothing else: the money moves through intents
 * (intent_payout_create & co.), the jobs through payout_job.c.
 *
 * A batch is created PENDING_APPROVAL by a client (an API key's client id,
 * or "admin") with a reference unique per client and 1..PAYOUT_MAX_ITEMS
 * items, all validated by the caller before anything is stored. An
 * operator approves it (APPROVED: every item QUEUED, one payout.execute job
 * each); it is COMPLETED when its last item is SETTLED or FAILED.
 *
 * Items: PENDING -> QUEUED (approval) -> SUBMITTED (its intent holds the
 * wallet's funds and is with the rail) -> SETTLED | FAILED; QUEUED -> FAILED
 * directly when the intent cannot be made (insufficient_funds,
 * unknown_wallet). Each change is a guarded UPDATE (WHERE status = the
 * expected one), so a duplicate job changes nothing; the terminal ones
 * count the batch's `remaining` down in the same statement sequence, and
 * the one that reaches zero completes the batch.
 *
 * Every function runs in the caller's transaction. */
#ifndef SETTLED_PAYOUT_H
#define SETTLED_PAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rc.h"
#include "store.h"
#include "validate.h"

#define PAYOUT_MAX_ITEMS 10000
#define PAYOUT_ID_MAX 40               /* "pb_" + 24 hex */
#define PAYOUT_CLIENT_MAX 64
#define PAYOUT_REFERENCE_MAX 128       /* bytes */
#define PAYOUT_ERROR_MAX 120
#define PAYOUT_INTENT_ID_MAX 40        /* = LEDGER_ID_MAX */

enum payout_batch_status {
	PAYOUT_BATCH_PENDING_APPROVAL = 0,
	PAYOUT_BATCH_APPROVED,
	PAYOUT_BATCH_COMPLETED,
	PAYOUT_BATCH_STATUS_COUNT
};

enum payout_item_status {
	PAYOUT_ITEM_PENDING = 0,
	PAYOUT_ITEM_QUEUED,
	PAYOUT_ITEM_SUBMITTED,
	PAYOUT_ITEM_SETTLED,
	PAYOUT_ITEM_FAILED,
	PAYOUT_ITEM_STATUS_COUNT
};

/* "PENDING_APPROVAL", ... / "PENDING", ...; "UNKNOWN" outside the enums. */
const char *payout_batch_status_str(enum payout_batch_status s);
const char *payout_item_status_str(enum payout_item_status s);
bool payout_item_status_parse(const char *s, enum payout_item_status *out);
bool payout_item_terminal(enum payout_item_status s);   /* SETTLED or FAILED */

/* One item as submitted (canonical wallet, amount > 0). */
struct payout_item_in {
	char wallet[WALLET_LEN + 1];
	int64_t amount;
};

struct payout_batch {
	char id[PAYOUT_ID_MAX + 1];
	char client_id[PAYOUT_CLIENT_MAX + 1];
	char reference[PAYOUT_REFERENCE_MAX + 1];
	enum payout_batch_status status;
	int64_t item_count;
	int64_t total_amount;
	int64_t remaining;          /* items not yet SETTLED or FAILED */
	int64_t created_at;
	int64_t approved_at;        /* 0 until approved */
	int64_t completed_at;       /* 0 until completed */
	char approved_by[PAYOUT_CLIENT_MAX + 1];
};

struct payout_item {
	int64_t idx;
	char wallet[WALLET_LEN + 1];
	int64_t amount;
	enum payout_item_status status;
	char intent_id[PAYOUT_INTENT_ID_MAX + 1];  /* "" until SUBMITTED */
	int64_t job_id;                            /* the payout.execute job; 0 until it ran */
	char error[PAYOUT_ERROR_MAX + 1];          /* "" unless FAILED */
	int64_t updated_at;
};

/* Creates a batch PENDING_APPROVAL owned by client_id with items[0..n)
 * (idx = position), all PENDING. n in 1..PAYOUT_MAX_ITEMS; the total must
 * not overflow (ST_INVALID otherwise: callers validate first). *out gets
 * the batch. ST_CONFLICT: client_id already has a batch with reference. */
enum st_rc payout_batch_create(struct tx *tx, const char *client_id, const char *reference,
			       const struct payout_item_in *items, size_t n, struct payout_batch *out);

/* Reads a batch. ST_NOT_FOUND if none. */
enum st_rc payout_batch_get(struct tx *tx, const char *id, struct payout_batch *out);
/* As payout_batch_get, seeing only owner's batches (a client id; NULL: any,
 * the admin token and the jobs). ST_NOT_FOUND for another client's. */
enum st_rc payout_batch_get_owned(struct tx *tx, const char *owner, const char *id,
				  struct payout_batch *out);

/* PENDING_APPROVAL -> APPROVED by approver, every item PENDING -> QUEUED.
 * *out gets the approved batch. ST_NOT_FOUND; ST_CONFLICT when the batch
 * is not PENDING_APPROVAL (approving twice does nothing more). */
enum st_rc payout_batch_approve(struct tx *tx, const char *id, const char *approver,
				struct payout_batch *out);

/* All items of a batch in idx order (at most PAYOUT_MAX_ITEMS). *out is
 * malloc'd (caller frees; NULL when *n_out == 0). */
enum st_rc payout_items_list(struct tx *tx, const char *batch_id, struct payout_item **out,
			     size_t *n_out);

/* Reads one item. ST_NOT_FOUND if none. */
enum st_rc payout_item_get(struct tx *tx, const char *batch_id, int64_t idx,
			   struct payout_item *out);

/* QUEUED -> SUBMITTED with its intent and the job that made it.
 * ST_CONFLICT when the item is not QUEUED. */
enum st_rc payout_item_submitted(struct tx *tx, const char *batch_id, int64_t idx,
				 const char *intent_id, int64_t job_id);

/* QUEUED or SUBMITTED -> status (SETTLED or FAILED; error, may be NULL, is
 * stored truncated), counting the batch's remaining items down and
 * completing the batch at zero (*completed, may be NULL, says so).
 * job_id > 0 is recorded when the item has none yet. ST_CONFLICT when the
 * item is already terminal (or still PENDING); ST_INVALID for another status. */
enum st_rc payout_item_finish(struct tx *tx, const char *batch_id, int64_t idx,
			      enum payout_item_status status, const char *error, int64_t job_id,
			      bool *completed);

/* The deterministic rail reference of an item: "0x" + hex SHA-256 of
 * "settled-payout:<batch_id>:<idx>", a valid tx_hash (intents.tx_hash is
 * unique, so an item can never get a second submitted intent). */
void payout_item_rail_ref(const char *batch_id, int64_t idx, char out[TX_HASH_LEN + 1]);

#endif

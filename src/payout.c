/* payout.c — payout batches and items (see payout.h and
 * docs/internals/payouts.md).
 *
 * Workload: a batch is written once with up to 10,000 items, approved once,
 * and then each item changes status two or three times from its jobs, at
 * the queue's pace; reads (GET) list the whole batch. Item inserts go in
 * chunks of ITEM_CHUNK rows per statement (one round trip per chunk on
 * PostgreSQL instead of one per item). Item changes are guarded UPDATEs,
 * and the batch's `remaining` counter is moved in the same transaction as
 * the item that finishes, so `remaining == 0` exactly when every item is
 * terminal, and on PostgreSQL the row lock on the batch serialises the
 * last two finishers instead of letting both miss the completion. */
#include "payout.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "fmt.h"
#include "hex.h"
#include "banned.h"

static const char *const batch_names[PAYOUT_BATCH_STATUS_COUNT] = {
	[PAYOUT_BATCH_PENDING_APPROVAL] = "PENDING_APPROVAL",
	[PAYOUT_BATCH_APPROVED] = "APPROVED",
	[PAYOUT_BATCH_COMPLETED] = "COMPLETED",
};

static const char *const item_names[PAYOUT_ITEM_STATUS_COUNT] = {
	[PAYOUT_ITEM_PENDING] = "PENDING",     [PAYOUT_ITEM_QUEUED] = "QUEUED",
	[PAYOUT_ITEM_SUBMITTED] = "SUBMITTED", [PAYOUT_ITEM_SETTLED] = "SETTLED",
	[PAYOUT_ITEM_FAILED] = "FAILED",
};

const char *payout_batch_status_str(enum payout_batch_status s)
{
	return (unsigned)s < PAYOUT_BATCH_STATUS_COUNT ? batch_names[s] : "UNKNOWN";
}

const char *payout_item_status_str(enum payout_item_status s)
{
	return (unsigned)s < PAYOUT_ITEM_STATUS_COUNT ? item_names[s] : "UNKNOWN";
}

bool payout_item_status_parse(const char *s, enum payout_item_status *out)
{
	for (int i = 0; s && i < PAYOUT_ITEM_STATUS_COUNT; i++) {
		if (!strcmp(s, item_names[i])) {
			*out = (enum payout_item_status)i;
			return true;
		}
	}
	return false;
}

static bool batch_status_parse(const char *s, enum payout_batch_status *out)
{
	for (int i = 0; s && i < PAYOUT_BATCH_STATUS_COUNT; i++) {
		if (!strcmp(s, batch_names[i])) {
			*out = (enum payout_batch_status)i;
			return true;
		}
	}
	return false;
}

bool payout_item_terminal(enum payout_item_status s)
{
	return s == PAYOUT_ITEM_SETTLED || s == PAYOUT_ITEM_FAILED;
}

void payout_item_rail_ref(const char *batch_id, int64_t idx, char out[TX_HASH_LEN + 1])
{
	char text[PAYOUT_ID_MAX + 64];
	unsigned char d[32];
	unsigned int n = 0;
	int len = snprintf(text, sizeof(text), "settled-payout:%s:%lld", batch_id, (long long)idx);

	if (!EVP_Digest(text, (size_t)len, d, &n, EVP_sha256(), NULL) || n != 32)
		memset(d, 0, sizeof(d)); /* a colliding ref is refused by the store, never reused */
	out[0] = '0';
	out[1] = 'x';
	hex_encode(d, 32, out + 2);
}

/* ---- batches ---- */

#define BATCH_COLS \
	"id, client_id, reference, status, item_count, total_amount, remaining, created_at," \
	" approved_at, completed_at, approved_by"

enum st_rc payout_batch_get(struct tx *tx, const char *id, struct payout_batch *out)
{
	return payout_batch_get_owned(tx, NULL, id, out);
}

enum st_rc payout_batch_get_owned(struct tx *tx, const char *owner, const char *id,
				  struct payout_batch *out)
{
	struct st_rows *r = NULL;
	struct payout_batch b;
	enum st_rc rc;

	/* The owner is part of the query: another client's batch is never
	 * read, so it cannot be answered differently from a missing one. */
	if (owner)
		rc = tx_query_one(tx,
				  "SELECT " BATCH_COLS " FROM payout_batches WHERE id = $1 AND client_id = $2",
				  ST_ARGS(SV_S(id), SV_S(owner)), &r);
	else
		rc = tx_query_one(tx, "SELECT " BATCH_COLS " FROM payout_batches WHERE id = $1",
				  ST_ARGS(SV_S(id)), &r);
	if (rc)
		return rc;
	memset(&b, 0, sizeof(b));
	rows_copy(r, 0, 0, b.id, sizeof(b.id));
	rows_copy(r, 0, 1, b.client_id, sizeof(b.client_id));
	rows_copy(r, 0, 2, b.reference, sizeof(b.reference));
	if (!batch_status_parse(rows_text(r, 0, 3), &b.status))
		rc = ST_INTERNAL; /* the CHECK makes it unreachable */
	b.item_count = rows_i64(r, 0, 4);
	b.total_amount = rows_i64(r, 0, 5);
	b.remaining = rows_i64(r, 0, 6);
	b.created_at = rows_i64(r, 0, 7);
	b.approved_at = rows_i64(r, 0, 8);
	b.completed_at = rows_i64(r, 0, 9);
	rows_copy(r, 0, 10, b.approved_by, sizeof(b.approved_by));
	rows_free(r);
	if (rc == ST_OK)
		*out = b;
	return rc;
}

/* Items go in ITEM_CHUNK rows per INSERT: $1 batch id, $2 time, then
 * (idx, wallet, amount) triples from $3. A compile-time constant: the
 * store caches statements by the text's address, so it must not move, and
 * a text built at run time would need a home outside the server's context.
 * Row i's triple is $(3+3i), $(4+3i), $(5+3i). */
#define ITEM_CHUNK 100
#define ITEM_ROW(i, w, a) "($1, $" #i ", $" #w ", $" #a ", 'PENDING', $2)"
static const char chunk_sql[] =
	"INSERT INTO payout_items (batch_id, idx, wallet, amount, status, updated_at) VALUES "
	ITEM_ROW(3, 4, 5) ", " ITEM_ROW(6, 7, 8) ", " ITEM_ROW(9, 10, 11) ", "
	ITEM_ROW(12, 13, 14) ", " ITEM_ROW(15, 16, 17) ", " ITEM_ROW(18, 19, 20) ", "
	ITEM_ROW(21, 22, 23) ", " ITEM_ROW(24, 25, 26) ", " ITEM_ROW(27, 28, 29) ", "
	ITEM_ROW(30, 31, 32) ", " ITEM_ROW(33, 34, 35) ", " ITEM_ROW(36, 37, 38) ", "
	ITEM_ROW(39, 40, 41) ", " ITEM_ROW(42, 43, 44) ", " ITEM_ROW(45, 46, 47) ", "
	ITEM_ROW(48, 49, 50) ", " ITEM_ROW(51, 52, 53) ", " ITEM_ROW(54, 55, 56) ", "
	ITEM_ROW(57, 58, 59) ", " ITEM_ROW(60, 61, 62) ", " ITEM_ROW(63, 64, 65) ", "
	ITEM_ROW(66, 67, 68) ", " ITEM_ROW(69, 70, 71) ", " ITEM_ROW(72, 73, 74) ", "
	ITEM_ROW(75, 76, 77) ", " ITEM_ROW(78, 79, 80) ", " ITEM_ROW(81, 82, 83) ", "
	ITEM_ROW(84, 85, 86) ", " ITEM_ROW(87, 88, 89) ", " ITEM_ROW(90, 91, 92) ", "
	ITEM_ROW(93, 94, 95) ", " ITEM_ROW(96, 97, 98) ", " ITEM_ROW(99, 100, 101) ", "
	ITEM_ROW(102, 103, 104) ", " ITEM_ROW(105, 106, 107) ", " ITEM_ROW(108, 109, 110) ", "
	ITEM_ROW(111, 112, 113) ", " ITEM_ROW(114, 115, 116) ", " ITEM_ROW(117, 118, 119) ", "
	ITEM_ROW(120, 121, 122) ", " ITEM_ROW(123, 124, 125) ", " ITEM_ROW(126, 127, 128) ", "
	ITEM_ROW(129, 130, 131) ", " ITEM_ROW(132, 133, 134) ", " ITEM_ROW(135, 136, 137) ", "
	ITEM_ROW(138, 139, 140) ", " ITEM_ROW(141, 142, 143) ", " ITEM_ROW(144, 145, 146) ", "
	ITEM_ROW(147, 148, 149) ", " ITEM_ROW(150, 151, 152) ", " ITEM_ROW(153, 154, 155) ", "
	ITEM_ROW(156, 157, 158) ", " ITEM_ROW(159, 160, 161) ", " ITEM_ROW(162, 163, 164) ", "
	ITEM_ROW(165, 166, 167) ", " ITEM_ROW(168, 169, 170) ", " ITEM_ROW(171, 172, 173) ", "
	ITEM_ROW(174, 175, 176) ", " ITEM_ROW(177, 178, 179) ", " ITEM_ROW(180, 181, 182) ", "
	ITEM_ROW(183, 184, 185) ", " ITEM_ROW(186, 187, 188) ", " ITEM_ROW(189, 190, 191) ", "
	ITEM_ROW(192, 193, 194) ", " ITEM_ROW(195, 196, 197) ", " ITEM_ROW(198, 199, 200) ", "
	ITEM_ROW(201, 202, 203) ", " ITEM_ROW(204, 205, 206) ", " ITEM_ROW(207, 208, 209) ", "
	ITEM_ROW(210, 211, 212) ", " ITEM_ROW(213, 214, 215) ", " ITEM_ROW(216, 217, 218) ", "
	ITEM_ROW(219, 220, 221) ", " ITEM_ROW(222, 223, 224) ", " ITEM_ROW(225, 226, 227) ", "
	ITEM_ROW(228, 229, 230) ", " ITEM_ROW(231, 232, 233) ", " ITEM_ROW(234, 235, 236) ", "
	ITEM_ROW(237, 238, 239) ", " ITEM_ROW(240, 241, 242) ", " ITEM_ROW(243, 244, 245) ", "
	ITEM_ROW(246, 247, 248) ", " ITEM_ROW(249, 250, 251) ", " ITEM_ROW(252, 253, 254) ", "
	ITEM_ROW(255, 256, 257) ", " ITEM_ROW(258, 259, 260) ", " ITEM_ROW(261, 262, 263) ", "
	ITEM_ROW(264, 265, 266) ", " ITEM_ROW(267, 268, 269) ", " ITEM_ROW(270, 271, 272) ", "
	ITEM_ROW(273, 274, 275) ", " ITEM_ROW(276, 277, 278) ", " ITEM_ROW(279, 280, 281) ", "
	ITEM_ROW(282, 283, 284) ", " ITEM_ROW(285, 286, 287) ", " ITEM_ROW(288, 289, 290) ", "
	ITEM_ROW(291, 292, 293) ", " ITEM_ROW(294, 295, 296) ", " ITEM_ROW(297, 298, 299) ", "
	ITEM_ROW(300, 301, 302);
#undef ITEM_ROW

static enum st_rc insert_items(struct tx *tx, const char *batch_id, const struct payout_item_in *items,
			       size_t n, int64_t now)
{
	struct st_val *v = NULL;
	size_t i = 0;
	enum st_rc rc = ST_OK;

	if (n >= ITEM_CHUNK) {
		v = calloc(2 + 3 * ITEM_CHUNK, sizeof(*v));
		if (!v)
			return ST_NOMEM;
		v[0] = SV_S(batch_id);
		v[1] = SV_I(now);
		for (; rc == ST_OK && i + ITEM_CHUNK <= n; i += ITEM_CHUNK) {
			for (size_t j = 0; j < ITEM_CHUNK; j++) {
				v[2 + 3 * j] = SV_I(i + j);
				v[3 + 3 * j] = SV_S(items[i + j].wallet);
				v[4 + 3 * j] = SV_I(items[i + j].amount);
			}
			rc = tx_exec(tx, chunk_sql, 2 + 3 * ITEM_CHUNK, v, NULL);
		}
		free(v);
	}
	for (; rc == ST_OK && i < n; i++)
		rc = tx_exec(tx,
			     "INSERT INTO payout_items (batch_id, idx, wallet, amount, status, updated_at)"
			     " VALUES ($1, $2, $3, $4, 'PENDING', $5)",
			     ST_ARGS(SV_S(batch_id), SV_I(i), SV_S(items[i].wallet), SV_I(items[i].amount),
				     SV_I(now)),
			     NULL);
	return rc;
}

enum st_rc payout_batch_create(struct tx *tx, const char *client_id, const char *reference,
			       const struct payout_item_in *items, size_t n, struct payout_batch *out)
{
	struct payout_batch b;
	struct st_rows *r = NULL;
	unsigned char raw[12];
	int64_t total = 0, now = tx_now_ms(tx);
	enum st_rc rc;

	if (n == 0 || n > PAYOUT_MAX_ITEMS || !*reference || strlen(reference) > PAYOUT_REFERENCE_MAX ||
	    strlen(client_id) > PAYOUT_CLIENT_MAX)
		return ST_INVALID;
	for (size_t i = 0; i < n; i++)
		if (items[i].amount <= 0 || __builtin_add_overflow(total, items[i].amount, &total))
			return ST_INVALID;
	/* Looked up first so that the usual duplicate is an answer, not a
	 * store error; the unique constraint still decides a race. */
	rc = tx_query(tx, "SELECT id FROM payout_batches WHERE client_id = $1 AND reference = $2",
		      ST_ARGS(SV_S(client_id), SV_S(reference)), &r);
	if (rc)
		return rc;
	rc = r->nrows ? ST_CONFLICT : ST_OK;
	rows_free(r);
	if (rc)
		return rc;

	memset(&b, 0, sizeof(b));
	tx_random(tx, raw, sizeof(raw));
	memcpy(b.id, "pb_", 3);
	hex_encode(raw, sizeof(raw), b.id + 3);
	snprintf(b.client_id, sizeof(b.client_id), "%s", client_id);
	snprintf(b.reference, sizeof(b.reference), "%s", reference);
	b.status = PAYOUT_BATCH_PENDING_APPROVAL;
	b.item_count = b.remaining = (int64_t)n;
	b.total_amount = total;
	b.created_at = now;
	rc = tx_exec(tx,
		     "INSERT INTO payout_batches (id, client_id, reference, status, item_count, total_amount,"
		     " remaining, created_at) VALUES ($1, $2, $3, 'PENDING_APPROVAL', $4, $5, $4, $6)",
		     ST_ARGS(SV_S(b.id), SV_S(client_id), SV_S(reference), SV_I(n), SV_I(total), SV_I(now)),
		     NULL);
	if (rc == ST_UNIQUE)
		return ST_CONFLICT;
	if (rc)
		return rc;
	rc = insert_items(tx, b.id, items, n, now);
	if (rc)
		return rc;
	*out = b;
	return ST_OK;
}

enum st_rc payout_batch_approve(struct tx *tx, const char *id, const char *approver,
				struct payout_batch *out)
{
	int64_t now = tx_now_ms(tx), changed = 0;
	struct payout_batch b;
	enum st_rc rc;

	rc = tx_exec(tx,
		     "UPDATE payout_batches SET status = 'APPROVED', approved_at = $2, approved_by = $3"
		     " WHERE id = $1 AND status = 'PENDING_APPROVAL'",
		     ST_ARGS(SV_S(id), SV_I(now), SV_S(approver)), &changed);
	if (rc)
		return rc;
	if (changed != 1) {
		rc = payout_batch_get(tx, id, &b);
		return rc ? rc : ST_CONFLICT;
	}
	rc = tx_exec(tx,
		     "UPDATE payout_items SET status = 'QUEUED', updated_at = $2"
		     " WHERE batch_id = $1 AND status = 'PENDING'",
		     ST_ARGS(SV_S(id), SV_I(now)), NULL);
	if (rc)
		return rc;
	return payout_batch_get(tx, id, out);
}

/* ---- items ---- */

#define ITEM_COLS "idx, wallet, amount, status, intent_id, job_id, error, updated_at"

static void row_to_item(const struct st_rows *r, int i, struct payout_item *it)
{
	memset(it, 0, sizeof(*it));
	it->idx = rows_i64(r, i, 0);
	rows_copy(r, i, 1, it->wallet, sizeof(it->wallet));
	it->amount = rows_i64(r, i, 2);
	if (!payout_item_status_parse(rows_text(r, i, 3), &it->status))
		it->status = PAYOUT_ITEM_FAILED; /* unreachable: the CHECK */
	rows_copy(r, i, 4, it->intent_id, sizeof(it->intent_id));
	it->job_id = rows_i64(r, i, 5);
	rows_copy(r, i, 6, it->error, sizeof(it->error));
	it->updated_at = rows_i64(r, i, 7);
}

enum st_rc payout_items_list(struct tx *tx, const char *batch_id, struct payout_item **out,
			     size_t *n_out)
{
	struct st_rows *r = NULL;
	struct payout_item *v = NULL;
	enum st_rc rc;

	*out = NULL;
	*n_out = 0;
	rc = tx_query(tx, "SELECT " ITEM_COLS " FROM payout_items WHERE batch_id = $1 ORDER BY idx",
		      ST_ARGS(SV_S(batch_id)), &r);
	if (rc)
		return rc;
	if (r->nrows) {
		v = calloc((size_t)r->nrows, sizeof(*v));
		if (!v) {
			rows_free(r);
			return ST_NOMEM;
		}
	}
	for (int i = 0; i < r->nrows; i++)
		row_to_item(r, i, &v[i]);
	*out = v;
	*n_out = (size_t)r->nrows;
	rows_free(r);
	return ST_OK;
}

enum st_rc payout_item_get(struct tx *tx, const char *batch_id, int64_t idx,
			   struct payout_item *out)
{
	struct st_rows *r = NULL;
	enum st_rc rc = tx_query(tx,
				 "SELECT " ITEM_COLS " FROM payout_items WHERE batch_id = $1 AND idx = $2",
				 ST_ARGS(SV_S(batch_id), SV_I(idx)), &r);

	if (rc)
		return rc;
	if (r->nrows)
		row_to_item(r, 0, out);
	else
		rc = ST_NOT_FOUND;
	rows_free(r);
	return rc;
}

/* A guarded UPDATE found no row: missing, or in another status. */
static enum st_rc item_miss(struct tx *tx, const char *batch_id, int64_t idx)
{
	struct payout_item it;
	enum st_rc rc = payout_item_get(tx, batch_id, idx, &it);

	return rc ? rc : ST_CONFLICT;
}

enum st_rc payout_item_submitted(struct tx *tx, const char *batch_id, int64_t idx,
				 const char *intent_id, int64_t job_id)
{
	int64_t changed = 0;
	enum st_rc rc = tx_exec(tx,
				"UPDATE payout_items SET status = 'SUBMITTED', intent_id = $3, job_id = $4,"
				" updated_at = $5 WHERE batch_id = $1 AND idx = $2 AND status = 'QUEUED'",
				ST_ARGS(SV_S(batch_id), SV_I(idx), SV_S(intent_id), SV_I(job_id),
					SV_I(tx_now_ms(tx))),
				&changed);

	if (rc)
		return rc;
	return changed == 1 ? ST_OK : item_miss(tx, batch_id, idx);
}

enum st_rc payout_item_finish(struct tx *tx, const char *batch_id, int64_t idx,
			      enum payout_item_status status, const char *error, int64_t job_id,
			      bool *completed)
{
	int64_t now = tx_now_ms(tx), changed = 0;
	struct st_rows *r = NULL;
	size_t elen = error ? strlen(error) : 0;
	enum st_rc rc;

	if (completed)
		*completed = false;
	if (!payout_item_terminal(status))
		return ST_INVALID;
	rc = tx_exec(tx,
		     "UPDATE payout_items SET status = $3, error = $4, updated_at = $5,"
		     " job_id = coalesce(job_id, $6)"
		     " WHERE batch_id = $1 AND idx = $2 AND status IN ('QUEUED', 'SUBMITTED')",
		     ST_ARGS(SV_S(batch_id), SV_I(idx), SV_S(payout_item_status_str(status)),
			     error ? SV_SN(error, elen > PAYOUT_ERROR_MAX ? PAYOUT_ERROR_MAX : elen)
				   : SV_NULLV,
			     SV_I(now), job_id > 0 ? SV_I(job_id) : SV_NULLV),
		     &changed);
	if (rc)
		return rc;
	if (changed != 1)
		return item_miss(tx, batch_id, idx);
	/* Old values on the right-hand side: the finisher that takes
	 * remaining from 1 to 0 completes the batch, in the same statement. */
	rc = tx_query(tx,
		      "UPDATE payout_batches SET remaining = remaining - 1,"
		      " status = CASE WHEN remaining = 1 THEN 'COMPLETED' ELSE status END,"
		      " completed_at = CASE WHEN remaining = 1 THEN $2 ELSE completed_at END"
		      " WHERE id = $1 AND status = 'APPROVED' RETURNING remaining",
		      ST_ARGS(SV_S(batch_id), SV_I(now)), &r);
	if (rc)
		return rc;
	if (r->nrows != 1)
		rc = ST_CONFLICT; /* an item finishing in a batch that is not running */
	else if (completed)
		*completed = rows_i64(r, 0, 0) == 0;
	rows_free(r);
	return rc;
}

/* intent.c — intents and the claim state machine. See intent.h.
 *
 * The machine is the table `transitions` below and nothing else: every
 * status change goes through transition(), which checks the table, moves
 * the row with a guarded UPDATE (WHERE status = <from>: a concurrent change
 * makes it touch no row, reported as ST_CONFLICT) and appends the change to
 * intent_transitions. The store's CHECK keeps statuses inside the machine.
 *
 * Side effects on money are the ledger's: creating a claim (or a payout)
 * holds funds on the wallet's own account, SETTLED captures the hold (one
 * posted transaction out to external), FAILED releases it. Each public function does its ledger work and its
 * transition in the caller's transaction, so both commit or neither does. */
#include "intent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "fmt.h"
#include "banned.h"

static const char *const status_names[INTENT_STATUS_COUNT] = {
	[INTENT_PENDING] = "PENDING",     [INTENT_LOCKED] = "LOCKED",
	[INTENT_SUBMITTED] = "SUBMITTED", [INTENT_CONFIRMED] = "CONFIRMED",
	[INTENT_SETTLED] = "SETTLED",     [INTENT_FAILED] = "FAILED",
};

/* SPEC section 7: the forward chain, and FAILED from any non-terminal state. */
static const bool transitions[INTENT_STATUS_COUNT][INTENT_STATUS_COUNT] = {
	[INTENT_PENDING] = { [INTENT_LOCKED] = true, [INTENT_FAILED] = true },
	[INTENT_LOCKED] = { [INTENT_SUBMITTED] = true, [INTENT_FAILED] = true },
	[INTENT_SUBMITTED] = { [INTENT_CONFIRMED] = true, [INTENT_FAILED] = true },
	[INTENT_CONFIRMED] = { [INTENT_SETTLED] = true, [INTENT_FAILED] = true },
};

const char *intent_status_str(enum intent_status s)
{
	return (unsigned)s < INTENT_STATUS_COUNT ? status_names[s] : "UNKNOWN";
}

bool intent_status_parse(const char *s, enum intent_status *out)
{
	for (int i = 0; s && i < INTENT_STATUS_COUNT; i++) {
		if (!strcmp(s, status_names[i])) {
			*out = (enum intent_status)i;
			return true;
		}
	}
	return false;
}

bool intent_transition_valid(enum intent_status from, enum intent_status to)
{
	if ((unsigned)from >= INTENT_STATUS_COUNT || (unsigned)to >= INTENT_STATUS_COUNT)
		return false;
	return transitions[from][to];
}

bool intent_status_terminal(enum intent_status s)
{
	return s == INTENT_SETTLED || s == INTENT_FAILED;
}

/* Columns the row carries beyond the status, set by some transitions. */
struct transition_extra {
	const char *tx_hash;
	const char *ledger_tx_id;
	const char *reason;
};

static struct st_val text_max(const char *s, size_t max)
{
	size_t n = strlen(s);

	return SV_SN(s, n > max ? max : n);
}

/* Deferred (tx_exec_deferred): nothing reads its result, and it can only
 * fail as a bug would (its intent row is this unit's), so on PostgreSQL it
 * rides with the unit's next statement or its COMMIT. */
static enum st_rc append_transition(struct tx *tx, const char *id, const char *from,
				    enum intent_status to, const char *actor)
{
	return tx_exec_deferred(tx,
				"INSERT INTO intent_transitions (intent_id, from_status, to_status, at, actor)"
				" VALUES ($1, $2, $3, $4, $5)",
				ST_ARGS(SV_S(id), SV_SOPT(from), SV_S(intent_status_str(to)),
					SV_I(tx_now_ms(tx)),
					text_max(actor ? actor : "unknown", INTENT_ACTOR_MAX)));
}

/* The one place an intent changes status. */
static enum st_rc transition(struct tx *tx, struct intent *it, enum intent_status to,
			     const char *actor, const struct transition_extra *x)
{
	static const struct transition_extra none = { 0 };
	int64_t now = tx_now_ms(tx), changed = 0;
	enum st_rc rc;

	if (!x)
		x = &none;
	if (!intent_transition_valid(it->status, to))
		return ST_CONFLICT;
	rc = tx_exec(tx,
		     "UPDATE intents SET status = $2, updated_at = $3, tx_hash = coalesce($5, tx_hash),"
		     " ledger_tx_id = coalesce($6, ledger_tx_id), failure_reason = coalesce($7, failure_reason)"
		     " WHERE id = $1 AND status = $4",
		     ST_ARGS(SV_S(it->id), SV_S(intent_status_str(to)), SV_I(now),
			     SV_S(intent_status_str(it->status)), SV_SOPT(x->tx_hash), SV_SOPT(x->ledger_tx_id),
			     x->reason ? text_max(x->reason, INTENT_REASON_MAX) : SV_NULLV),
		     &changed);
	if (rc)
		return rc;
	if (changed != 1)
		return ST_CONFLICT; /* moved by someone else since we read it */
	rc = append_transition(tx, it->id, intent_status_str(it->status), to, actor);
	if (rc)
		return rc;
	it->status = to;
	it->updated_at = now;
	if (x->tx_hash)
		fmt_str(it->tx_hash, sizeof(it->tx_hash), x->tx_hash);
	if (x->ledger_tx_id)
		fmt_str(it->ledger_tx_id, sizeof(it->ledger_tx_id), x->ledger_tx_id);
	if (x->reason)
		fmt_str(it->failure_reason, sizeof(it->failure_reason), x->reason);
	return ST_OK;
}

#define INTENT_COLS \
	"id, kind, wallet, amount, status, tx_hash, hold_id, ledger_tx_id, failure_reason," \
	" created_at, updated_at"

enum st_rc intent_get(struct tx *tx, const char *id, struct intent *out)
{
	return intent_get_owned(tx, NULL, id, out);
}

enum st_rc intent_get_owned(struct tx *tx, const char *owner, const char *id, struct intent *out)
{
	struct st_rows *r = NULL;
	struct intent it;
	enum st_rc rc;

	/* The owner filter is in the query (public claims have none and are
	 * anyone's to read, as /api/claim/record is anyone's to call). */
	if (owner)
		rc = tx_query_one(tx,
				  "SELECT " INTENT_COLS " FROM intents WHERE id = $1"
				  " AND (client_id IS NULL OR client_id = $2)",
				  ST_ARGS(SV_S(id), SV_S(owner)), &r);
	else
		rc = tx_query_one(tx, "SELECT " INTENT_COLS " FROM intents WHERE id = $1",
				  ST_ARGS(SV_S(id)), &r);
	if (rc)
		return rc;
	memset(&it, 0, sizeof(it));
	rows_copy(r, 0, 0, it.id, sizeof(it.id));
	rows_copy(r, 0, 1, it.kind, sizeof(it.kind));
	rows_copy(r, 0, 2, it.wallet, sizeof(it.wallet));
	it.amount = rows_i64(r, 0, 3);
	if (!intent_status_parse(rows_text(r, 0, 4), &it.status))
		rc = ST_INTERNAL; /* the CHECK constraint makes this unreachable */
	rows_copy(r, 0, 5, it.tx_hash, sizeof(it.tx_hash));
	rows_copy(r, 0, 6, it.hold_id, sizeof(it.hold_id));
	rows_copy(r, 0, 7, it.ledger_tx_id, sizeof(it.ledger_tx_id));
	rows_copy(r, 0, 8, it.failure_reason, sizeof(it.failure_reason));
	it.created_at = rows_i64(r, 0, 9);
	it.updated_at = rows_i64(r, 0, 10);
	rows_free(r);
	if (rc == ST_OK)
		*out = it;
	return rc;
}

/* Creates an intent of kind (PENDING) for a registered wallet with a hold
 * of amount on the wallet's own account: an intent only ever spends what
 * its wallet holds. */
static enum st_rc create_intent(struct tx *tx, const char *kind, const char *wallet, int64_t amount,
				int64_t hold_timeout_ms, const char *actor, struct intent *out,
				struct ledger_hold *hold)
{
	struct ledger_hold h;
	struct intent it;
	int64_t now = tx_now_ms(tx), expires = 0;
	enum st_rc rc;

	if (amount <= 0)
		return ST_INVALID;
	memset(&it, 0, sizeof(it));
	tx_new_id(tx, "int_", it.id);
	if (hold_timeout_ms > 0 && __builtin_add_overflow(now, hold_timeout_ms, &expires))
		expires = INT64_MAX;
	/* The wallet's account found and reserved on in one statement. */
	rc = ledger_hold_create_on_wallet(tx, wallet, amount, expires, it.id, &h);
	if (rc)
		return rc;
	fmt_str(it.kind, sizeof(it.kind), kind);
	fmt_str(it.wallet, sizeof(it.wallet), wallet);
	fmt_str(it.hold_id, sizeof(it.hold_id), h.id);
	it.amount = amount;
	it.status = INTENT_PENDING;
	it.created_at = it.updated_at = now;
	/* A new id and this unit's hold: it fails only as a bug would, so it
	 * is deferred with its first transition (see append_transition). */
	rc = tx_exec_deferred(tx,
			      "INSERT INTO intents (id, kind, wallet, amount, status, hold_id, created_at, updated_at)"
			      " VALUES ($1, $6, $2, $3, 'PENDING', $4, $5, $5)",
			      ST_ARGS(SV_S(it.id), SV_S(it.wallet), SV_I(amount), SV_S(h.id), SV_I(now),
				      SV_S(kind)));
	if (rc)
		return rc;
	rc = append_transition(tx, it.id, NULL, INTENT_PENDING, actor);
	if (rc)
		return rc;
	*out = it;
	if (hold)
		*hold = h;
	return ST_OK;
}

enum st_rc intent_claim_create(struct tx *tx, const char *wallet, int64_t amount,
			       int64_t hold_timeout_ms, const char *actor, struct intent *out,
			       struct ledger_hold *hold)
{
	return create_intent(tx, INTENT_KIND_CLAIM, wallet, amount, hold_timeout_ms, actor, out,
			     hold);
}

enum st_rc intent_payout_create(struct tx *tx, const char *wallet, int64_t amount,
				const char *actor, struct intent *out, struct ledger_hold *hold)
{
	return create_intent(tx, INTENT_KIND_PAYOUT, wallet, amount, 0, actor, out, hold);
}

enum st_rc intent_set_owner(struct tx *tx, const char *id, const char *client_id)
{
	int64_t changed = 0;
	enum st_rc rc = tx_exec(tx, "UPDATE intents SET client_id = $2 WHERE id = $1 AND client_id IS NULL",
				ST_ARGS(SV_S(id), SV_S(client_id)), &changed);

	return rc ? rc : changed == 1 ? ST_OK : ST_CONFLICT;
}

static void set_out(struct intent *out, const struct intent *it)
{
	if (out)
		*out = *it;
}

/* Reads intent id, which must be PENDING: ST_CONFLICT otherwise. */
static enum st_rc get_pending(struct tx *tx, const char *id, struct intent *it)
{
	enum st_rc rc = intent_get(tx, id, it);

	if (rc)
		return rc;
	return it->status == INTENT_PENDING ? ST_OK : ST_CONFLICT;
}

enum st_rc intent_record(struct tx *tx, const char *id, const char *tx_hash, const char *actor,
			 struct intent *out)
{
	struct transition_extra x = { .tx_hash = tx_hash };
	struct intent it;
	enum st_rc rc = get_pending(tx, id, &it);

	if (rc)
		return rc;
	/* The chain has the transaction now: the hold must outlive the
	 * confirmation, however slow; the stuck sweeper bounds it instead.
	 * First, so that a hold whose time is up refuses the record before
	 * anything is written (intent_expire_due then fails the intent in the
	 * same unit). */
	rc = ledger_hold_keep(tx, it.hold_id);
	if (rc)
		return rc;
	rc = transition(tx, &it, INTENT_LOCKED, actor, &x);
	if (rc)
		return rc;
	rc = transition(tx, &it, INTENT_SUBMITTED, actor, NULL);
	if (rc)
		return rc;
	set_out(out, &it);
	return ST_OK;
}

enum st_rc intent_confirm(struct tx *tx, const char *id, const char *actor, struct intent *out)
{
	struct intent it;
	enum st_rc rc = intent_get(tx, id, &it);

	if (rc)
		return rc;
	rc = transition(tx, &it, INTENT_CONFIRMED, actor, NULL);
	if (rc)
		return rc;
	set_out(out, &it);
	return ST_OK;
}

/* A payout leaves through payouts_clearing (docs/internals/payouts.md):
 * the hold on the wallet is captured into payouts_clearing (the intent's
 * one posting), and in the same unit payouts_clearing passes the amount on
 * to external (ref "payout:<intent id>", so at most once; no intent_id, so
 * the intent keeps exactly one posting). payouts_clearing is credited
 * before it is debited by the same amount: it never goes negative. */
static enum st_rc settle_payout(struct tx *tx, const struct intent *it,
				char ltx[LEDGER_ID_MAX + 1])
{
	char ref[LEDGER_ID_MAX + 16];
	const struct ledger_entry out[] = {
		{ ACCT_PAYOUTS_CLEARING, LEDGER_DEBIT, it->amount },
		{ ACCT_EXTERNAL, LEDGER_CREDIT, it->amount },
	};
	struct ledger_post p = { .kind = "payout_out", .ref = ref, .n = 2, .entries = out };
	enum st_rc rc;

	rc = ledger_hold_capture(tx, it->hold_id, ACCT_PAYOUTS_CLEARING, "payout", it->id, ltx);
	if (rc)
		return rc;
	snprintf(ref, sizeof(ref), "payout:%s", it->id);
	rc = ledger_post(tx, &p, NULL);
	return rc == ST_UNIQUE ? ST_CONFLICT : rc;
}

enum st_rc intent_settle(struct tx *tx, const char *id, const char *actor, struct intent *out)
{
	char ltx[LEDGER_ID_MAX + 1];
	struct transition_extra x = { .ledger_tx_id = ltx };
	struct intent it;
	enum st_rc rc = intent_get(tx, id, &it);

	if (rc)
		return rc;
	if (!intent_transition_valid(it.status, INTENT_SETTLED))
		return ST_CONFLICT; /* before any ledger write */
	/* A claim leaves the wallet straight to external (the chain paid it);
	 * the hold is on the wallet's account, so the capture debits it. */
	if (!strcmp(it.kind, INTENT_KIND_PAYOUT))
		rc = settle_payout(tx, &it, ltx);
	else
		rc = ledger_hold_capture(tx, it.hold_id, ACCT_EXTERNAL, "claim", it.id, ltx);
	if (rc)
		return rc;
	rc = transition(tx, &it, INTENT_SETTLED, actor, &x);
	if (rc)
		return rc;
	set_out(out, &it);
	return ST_OK;
}

/* FAILED with the hold resolved as released or expired. */
static enum st_rc fail_with(struct tx *tx, struct intent *it, const char *actor, const char *reason,
			    bool expired)
{
	struct transition_extra x = { .reason = reason ? reason : "failed" };
	enum st_rc rc;

	if (!intent_transition_valid(it->status, INTENT_FAILED))
		return ST_CONFLICT;
	rc = expired ? ledger_hold_expire_one(tx, it->hold_id) : ledger_hold_release(tx, it->hold_id);
	if (rc)
		return rc;
	return transition(tx, it, INTENT_FAILED, actor, &x);
}

enum st_rc intent_fail(struct tx *tx, const char *id, const char *actor, const char *reason,
		       struct intent *out)
{
	struct intent it;
	enum st_rc rc = intent_get(tx, id, &it);

	if (rc)
		return rc;
	rc = fail_with(tx, &it, actor, reason, false);
	if (rc)
		return rc;
	set_out(out, &it);
	return ST_OK;
}

enum st_rc intent_expire_due(struct tx *tx, const char *id, const char *actor, struct intent *out)
{
	struct ledger_hold h;
	struct intent it;
	enum st_rc rc = get_pending(tx, id, &it);

	if (rc)
		return rc;
	rc = ledger_hold_get(tx, it.hold_id, &h);
	if (rc)
		return rc;
	if (h.status != HOLD_PENDING || !h.expires_at || h.expires_at > tx_now_ms(tx))
		return ST_CONFLICT;
	rc = fail_with(tx, &it, actor, "hold_expired", true);
	if (rc)
		return rc;
	set_out(out, &it);
	return ST_OK;
}

enum st_rc intent_expire(struct tx *tx, int64_t now_ms, int limit, const char *actor,
			 int64_t *n_failed)
{
	struct ledger_hold *due = NULL;
	size_t n = 0;
	int64_t failed = 0;
	enum st_rc rc;

	*n_failed = 0;
	rc = ledger_holds_due(tx, now_ms, limit, &due, &n);
	for (size_t i = 0; i < n && rc == ST_OK; i++) {
		struct intent it;

		rc = due[i].intent_id[0] ? intent_get(tx, due[i].intent_id, &it) : ST_NOT_FOUND;
		/* Only PENDING intents expire. On PostgreSQL (READ COMMITTED:
		 * every statement its own snapshot) a record can commit between
		 * the list above and this read: the intent is SUBMITTED now and
		 * its hold no longer times out, so it is left alone. Failing it
		 * broke an answered record (found by ops/chaos). */
		if (rc == ST_OK && !intent_status_terminal(it.status) && it.status != INTENT_PENDING)
			continue;
		if (rc == ST_OK && !intent_status_terminal(it.status)) {
			struct transition_extra x = { .reason = "hold_expired" };

			/* The hold first, as fail_with does. A record can still
			 * commit between the read above and this UPDATE (it waits
			 * for the record's row lock): the hold is kept then, and
			 * the expiry's due guard changes no row (ST_CONFLICT,
			 * nothing written). Skipped, as a hold resolved since is:
			 * failing the sweep would roll back every other expiry
			 * and hold them back a tick. Once the hold is expired
			 * under its row lock, the intent cannot leave PENDING
			 * any more (every way out of it touches the hold first),
			 * so the transition does not lose a race. */
			rc = ledger_hold_expire_one(tx, it.hold_id);
			if (rc == ST_CONFLICT) {
				rc = ST_OK;
				continue;
			}
			if (rc == ST_OK)
				rc = transition(tx, &it, INTENT_FAILED, actor, &x);
			failed += rc == ST_OK;
		} else if (rc == ST_OK || rc == ST_NOT_FOUND) {
			/* Not an intent's (a client's hold), or orphaned. One that
			 * was captured or voided since the list was read (READ
			 * COMMITTED) is left as it is: failing the batch would
			 * hold back every other expiry. */
			rc = ledger_hold_expire_one(tx, due[i].id);
			if (rc == ST_CONFLICT)
				rc = ST_OK;
		}
	}
	free(due);
	if (rc == ST_OK)
		*n_failed = failed;
	return rc;
}

enum st_rc intent_apply_verdict(struct tx *tx, const char *id, const char *actor, bool settle,
				const char *reason, struct intent *it, bool *confirmed,
				bool *applied)
{
	enum st_rc rc;

	*confirmed = *applied = false;
	rc = intent_get(tx, id, it);
	if (rc)
		return rc;
	if (it->status != INTENT_SUBMITTED && it->status != INTENT_CONFIRMED)
		return ST_OK; /* settled or failed already: nothing to apply */
	if (!settle) {
		rc = intent_fail(tx, id, actor, reason, it);
	} else {
		if (it->status == INTENT_SUBMITTED) {
			rc = intent_confirm(tx, id, actor, it);
			if (rc)
				return rc;
			*confirmed = true;
		}
		rc = intent_settle(tx, id, actor, it);
	}
	if (rc == ST_OK)
		*applied = true;
	return rc;
}

enum st_rc intent_list_stuck(struct tx *tx, int64_t cutoff_ms, int64_t cur_at, const char *cur_id,
			     int limit, struct intent_stuck **out, size_t *n)
{
	struct st_rows *rows = NULL;
	struct intent_stuck *v = NULL;
	enum st_rc rc;

	*out = NULL;
	*n = 0;
	rc = tx_query(tx,
		      "SELECT id, status, updated_at FROM intents"
		      " WHERE (status = 'LOCKED' OR (status = 'SUBMITTED' AND kind = 'claim'))"
		      " AND updated_at <= $1"
		      " AND (updated_at > $2 OR (updated_at = $2 AND id > $3))"
		      " ORDER BY updated_at, id LIMIT $4",
		      ST_ARGS(SV_I(cutoff_ms), SV_I(cur_at), SV_S(cur_id), SV_I(limit)), &rows);
	if (rc)
		return rc;
	if (rows->nrows > 0) {
		v = calloc((size_t)rows->nrows, sizeof(*v));
		if (!v) {
			rows_free(rows);
			return ST_NOMEM;
		}
	}
	for (int i = 0; i < rows->nrows; i++) {
		snprintf(v[i].id, sizeof(v[i].id), "%s", rows_text(rows, i, 0));
		v[i].locked = !strcmp(rows_text(rows, i, 1), "LOCKED");
		v[i].updated_at = rows_i64(rows, i, 2);
	}
	*out = v;
	*n = (size_t)rows->nrows;
	rows_free(rows);
	return ST_OK;
}

enum st_rc intent_history(struct tx *tx, const char *id, struct intent_transition **out,
			  size_t *n_out)
{
	struct st_rows *r = NULL;
	struct intent_transition *v = NULL;
	enum st_rc rc;

	*out = NULL;
	*n_out = 0;
	rc = tx_query(tx,
		      "SELECT from_status, to_status, at, actor FROM intent_transitions"
		      " WHERE intent_id = $1 ORDER BY id",
		      ST_ARGS(SV_S(id)), &r);
	if (rc)
		return rc;
	if (r->nrows) {
		v = calloc((size_t)r->nrows, sizeof(*v));
		if (!v) {
			rows_free(r);
			return ST_NOMEM;
		}
	}
	for (int i = 0; i < r->nrows; i++) {
		v[i].from_none = !intent_status_parse(rows_text(r, i, 0), &v[i].from);
		intent_status_parse(rows_text(r, i, 1), &v[i].to);
		v[i].at = rows_i64(r, i, 2);
		rows_copy(r, i, 3, v[i].actor, sizeof(v[i].actor));
	}
	*out = v;
	*n_out = (size_t)r->nrows;
	rows_free(r);
	return ST_OK;
}

void intent_count(struct metric_family *intents_total, enum intent_status status, double n)
{
	const char *const lv[] = { intent_status_str(status) };
	struct metric_series *s;

	if (!intents_total || n <= 0)
		return;
	s = metric_series_get(intents_total, lv);
	if (s)
		metric_add(s, n);
}

static void add_to_series(void *series, int64_t n)
{
	metric_add(series, (double)n);
}

enum st_rc intent_count_at_commit(struct tx *tx, struct metric_family *intents_total,
				  enum intent_status status, int64_t n)
{
	const char *const lv[] = { intent_status_str(status) };
	struct metric_series *s;

	if (!intents_total || n <= 0)
		return ST_OK;
	/* The series is looked up now: its pointer lives as long as the
	 * registry, so the after-commit step needs nothing of the unit. */
	s = metric_series_get(intents_total, lv);
	return s ? tx_after_commit(tx, add_to_series, s, n) : ST_NOMEM;
}

void intent_observe(struct metric_family *intents_total, struct metric_family *duration,
		    const struct intent *it)
{
	intent_count(intents_total, it->status, 1);
	if (duration && it->status == INTENT_SETTLED) {
		const char *const none[] = { NULL };

		metrics_observe(duration, none, (double)(it->updated_at - it->created_at) / 1000.0);
	}
}

enum st_rc intent_count_by_status(struct tx *tx, int64_t stuck_cutoff_ms,
				  int64_t out[INTENT_STATUS_COUNT])
{
	struct st_rows *rows = NULL;
	enum intent_status st;
	enum st_rc rc;

	if (stuck_cutoff_ms >= 0)
		rc = tx_query(tx,
			      "SELECT status, count(*) FROM intents WHERE status IN ('LOCKED', 'SUBMITTED')"
			      " AND updated_at <= $1 GROUP BY status",
			      ST_ARGS(SV_I(stuck_cutoff_ms)), &rows);
	else
		rc = tx_query(tx, "SELECT status, count(*) FROM intents GROUP BY status", ST_NOARGS,
			      &rows);
	if (rc)
		return rc;
	for (int i = 0; i < rows->nrows; i++)
		if (intent_status_parse(rows_text(rows, i, 0), &st))
			out[st] += rows_i64(rows, i, 1);
	rows_free(rows);
	return ST_OK;
}

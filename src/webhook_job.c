/* webhook_job.c — the webhook_events table and the webhook.process job
 * (see webhook_job.h).
 *
 * The job runs in three steps, only the last of which writes (intake
 * puts the payment it parsed in the payload: then steps 1 and 2 are
 * skipped):
 *   1. read the stored event on a read connection (nothing to do when it
 *      was processed already: a duplicate job, an operator's retry);
 *   2. parse the payment out of the stored raw body (pure, webhook.c): an
 *      event that cannot be parsed never will be, so the job fails
 *      permanently (DLQ) with the reason;
 *   3. job_commit_later(): in ONE write unit (the worker's batch unit,
 *      under this job's own savepoint), mark the event processed unless
 *      it is no longer stored or failed (the fence: then nothing to do),
 *      look up the wallet and its referrer, post the balanced transaction
 *      (2 or 4 entries) with ref "webhook:<provider>:<event id>" and the
 *      id the mark named, and complete the job under its lease. Any failure rolls
 *      all of it back (this job's part only); webhook_after then logs the
 *      outcome or fails the attempt, as the handler did after job_commit.
 * Commission: floor(amount * bps / 10000) (webhook_commission), paid from
 * `commissions`; the wallet is credited the whole amount from `revenue`.
 * A zero commission (small amounts, bps 0) posts the two wallet entries
 * only: the ledger takes no zero-amount entry. A payment naming a client's
 * account (metadata.account = "<client_id>/<name>", SPEC section 13: a shop
 * buying credits) credits that account from `revenue`, no commission; an
 * account that is not a client's fails the job permanently
 * (unknown_account), like an unregistered wallet. */
#include "webhook_job.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "fmt.h"
#include "ledger.h"
#include "json_out.h"
#include "log.h"
#include "queue.h"
#include "settled.h"
#include "banned.h"

#define REF_MAX (8 + 16 + WEBHOOK_ID_MAX + 2)

static const char *const status_names[] = { "stored", "processed", "ignored", "failed" };
enum ev_status { EV_STORED = 0, EV_PROCESSED, EV_IGNORED, EV_FAILED, EV_UNKNOWN };

static enum ev_status status_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (s && !strcmp(s, status_names[i]))
			return (enum ev_status)i;
	return EV_UNKNOWN;
}

/* ---------------------------------------------------------------- intake */

/* A JSON text written into a fixed array (the intake's job payload): no
 * allocation, no intermediate buffer. ok turns false, for good, at the
 * first piece that would not fit with the terminating NUL. */
struct fixed_json {
	char *p;
	size_t cap, len;
	bool ok;
};

static void fj_raw(struct fixed_json *o, const char *s, size_t n)
{
	if (!o->ok || o->cap - o->len <= n) {
		o->ok = false;
		return;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
}

/* "s", escaped as jw_str writes it (json_escape without flags: jansson's
 * form), then tail. */
static void fj_str(struct fixed_json *o, const char *s, const char *tail)
{
	size_t n = strlen(s), pos = 0;

	fj_raw(o, "\"", 1);
	if (o->ok) {
		/* Room for the escaped text, its closing quote and the NUL. */
		o->len += json_escape(o->p + o->len, o->cap - o->len - 1, s, n, &pos, 0);
		o->ok = pos == n;
	}
	fj_raw(o, "\"", 1);
	fj_raw(o, tail, strlen(tail));
}

enum st_rc webhook_intake_prepare(struct wh_intake *in, enum wh_provider p, const struct wh_event *ev,
				  const struct wh_payment *pay, const char *raw, size_t len,
				  const char *request_id)
{
	struct fixed_json o = { .p = in->job_payload, .cap = sizeof(in->job_payload), .ok = true };
	const char *prov = webhook_provider_str(p);
	size_t plen = strlen(prov), idlen = strlen(ev->id);
	char num[FMT_I64_LEN];

	in->p = p;
	in->ev = *ev;
	in->raw = raw;
	in->len = len;
	in->request_id = request_id;
	if (plen + 1 + idlen >= sizeof(in->job_key))
		return ST_INVALID;
	memcpy(in->job_key, prov, plen);
	in->job_key[plen] = ':';
	memcpy(in->job_key + plen + 1, ev->id, idlen + 1);
	/* {"event_id":..,"provider":..}: the members in sorted order, as the
	 * payloads of stored jobs have always been written (jw_* wrote them
	 * through a heap buffer until the delivery's own array took them:
	 * ~5k -> ~1.5k instructions a delivery); the payment's around them. */
	in->job_payload[0] = '\0';
	fj_raw(&o, "{", 1);
	if (pay && pay->account[0]) {
		fj_raw(&o, "\"account\":", 10);
		fj_str(&o, pay->account, ",");
	}
	if (pay) {
		fj_raw(&o, "\"amount\":", 9);
		fj_raw(&o, num, fmt_i64(num, pay->amount));
		fj_raw(&o, ",", 1);
	}
	fj_raw(&o, "\"event_id\":", 11);
	fj_str(&o, ev->id, ",\"provider\":");
	fj_str(&o, prov, pay && !pay->account[0] ? ",\"wallet\":" : "}");
	if (pay && !pay->account[0])
		fj_str(&o, pay->wallet, "}");
	return o.ok ? ST_OK : ST_TOO_LARGE;
}

static void job_spec_of(const struct wh_intake *in, const char *traceparent, int max_attempts,
			struct job_spec *spec)
{
	*spec = (struct job_spec){ .queue = WEBHOOK_JOB_QUEUE, .kind = WEBHOOK_JOB_KIND,
				   .payload = in->job_payload, .unique_key = in->job_key,
				   .max_attempts = max_attempts, .traceparent = traceparent };
}

/* An event row; its status is the only value intake chooses. */
#define EVENT_ROW_WIDTH 7
static void event_row(struct tx *tx, const struct wh_intake *in, struct st_val *v)
{
	v[0] = SV_S(webhook_provider_str(in->p));
	v[1] = SV_S(in->ev.id);
	v[2] = SV_S(in->ev.type);
	v[3] = SV_S(in->ev.pays ? "stored" : "ignored");
	v[4] = SV_SN(in->raw, in->len);
	v[5] = SV_SOPT(in->request_id);
	v[6] = SV_I(tx_now_ms(tx));
}

static const struct st_rows_sql event_rows = {
	.head = "INSERT INTO webhook_events (provider, event_id, type, status, body, request_id,"
		" received_at) VALUES ",
	.row = "($1, $2, $3, $4, $5, $6, $7)",
	.tail = " ON CONFLICT (provider, event_id) DO NOTHING",
	.width = EVENT_ROW_WIDTH,
};

enum st_rc webhook_event_store(struct tx *tx, const struct wh_intake *in, int max_attempts,
			       bool *inserted)
{
	struct st_val v[EVENT_ROW_WIDTH];
	struct job_spec spec;
	int64_t changes = 0;
	enum st_rc rc;

	*inserted = false;
	event_row(tx, in, v);
	rc = tx_exec(tx,
		     "INSERT INTO webhook_events (provider, event_id, type, status, body, request_id,"
		     " received_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
		     " ON CONFLICT (provider, event_id) DO NOTHING",
		     EVENT_ROW_WIDTH, v, &changes);
	if (rc)
		return rc;
	if (changes == 0)
		return ST_OK; /* a redelivery: the first one stored it */
	*inserted = true;
	if (!in->ev.pays)
		return ST_OK;
	job_spec_of(in, NULL, max_attempts, &spec);
	return queue_enqueue_many(tx, &spec, 1, NULL);
}

enum st_rc webhook_events_store_new(struct tx *tx, const struct wh_intake *const *in,
				    const char *const *traceparents, int n, int max_attempts)
{
	struct st_val *v = malloc((size_t)n * EVENT_ROW_WIDTH * sizeof(*v));
	struct job_spec *specs = malloc((size_t)n * sizeof(*specs));
	int64_t changes = 0;
	int njobs = 0;
	enum st_rc rc = ST_NOMEM;

	if (!v || !specs)
		goto out;
	for (int i = 0; i < n; i++) {
		event_row(tx, in[i], v + (size_t)i * EVENT_ROW_WIDTH);
		if (in[i]->ev.pays)
			job_spec_of(in[i], traceparents[i], max_attempts, &specs[njobs++]);
	}
	rc = tx_exec_rows(tx, &event_rows, n, v, &changes);
	if (rc == ST_OK && changes != n)
		rc = ST_CONFLICT; /* a known event, or one twice: each alone tells which */
	if (rc == ST_OK && njobs) {
		rc = queue_enqueue_many(tx, specs, njobs, &changes);
		if (rc == ST_OK && changes != njobs)
			rc = ST_CONFLICT; /* a job key taken: webhook_event_store's way decides */
	}
out:
	free(v);
	free(specs);
	return rc;
}

/* ---------------------------------------------------------------- the job */

struct wh_job {
	enum wh_provider p;
	char event_id[WEBHOOK_ID_MAX + 1];
	int64_t bps;
	struct wh_payment pay;
	char ref[REF_MAX];
	/* read_unit's outputs */
	enum ev_status status;
	char *body;             /* malloc'd copy of the stored body */
	size_t body_len;
	/* The wallet's account and its referrer's, when the worker read them
	 * before the effect (payee_read_unit); else process_unit reads them. */
	bool have_payee;
	struct account_payee payee;
	/* process_unit's outputs, filled from scratch on every run */
	bool already, unknown_wallet;
	int64_t commission;
	char referrer[WALLET_LEN + 1];
	char tx_id[LEDGER_ID_MAX + 1];
};

/* Copies a string member of at most cap - 1 bytes into dst: false when
 * it is absent, not a string or too long. */
static bool member_copy(const json_t *root, const char *key, char *dst, size_t cap)
{
	const json_t *v = json_object_get(root, key);

	if (!json_is_string(v) || json_string_length(v) >= cap)
		return false;
	memcpy(dst, json_string_value(v), json_string_length(v) + 1);
	return true;
}

bool webhook_job_payload_parse_json(const char *payload, struct wh_job_payload *out)
{
	json_t *root = json_loads(payload, 0, NULL);
	json_t *p = json_object_get(root, "provider"), *id = json_object_get(root, "event_id");
	json_t *amount = json_object_get(root, "amount");
	int prov = json_is_string(p) ? webhook_provider_parse(json_string_value(p)) : -1;
	/* Any id intake accepts (Standard Webhooks ids are the widest). */
	bool ok = prov >= 0 && json_is_string(id) &&
		  webhook_std_id_valid(json_string_value(id), json_string_length(id));

	memset(out, 0, sizeof(*out));
	if (ok) {
		out->p = (enum wh_provider)prov;
		memcpy(out->event_id, json_string_value(id), json_string_length(id) + 1);
	}
	if (ok && json_is_integer(amount) && json_integer_value(amount) > 0) {
		struct wh_payment *pay = &out->pay;
		bool wallet = member_copy(root, "wallet", pay->wallet, sizeof(pay->wallet));
		bool account = member_copy(root, "account", pay->account, sizeof(pay->account));

		pay->amount = json_integer_value(amount);
		out->have_pay = wallet != account && (wallet ? pay->wallet[0] : pay->account[0]);
		if (!out->have_pay)
			memset(pay, 0, sizeof(*pay));
	}
	json_decref(root);
	return ok;
}

/* The scanner of intake's form: at *s, `"key":"value"` (the value printable
 * ASCII with neither quote nor backslash, shorter than cap) then `sep`;
 * advances s past sep. false: not that form (the caller hands the payload
 * to jansson). */
static bool scan_str(const char **s, const char *key, char sep, char *dst, size_t cap)
{
	size_t klen = strlen(key), n = 0;
	const char *p = *s;

	if (p[0] != '"' || strncmp(p + 1, key, klen) || p[klen + 1] != '"' || p[klen + 2] != ':' ||
	    p[klen + 3] != '"')
		return false;
	p += klen + 4;
	for (; p[n] != '"'; n++)
		if ((unsigned char)p[n] < 0x20 || (unsigned char)p[n] > 0x7e || p[n] == '\\' ||
		    n + 1 >= cap)
			return false;
	if (p[n + 1] != sep)
		return false;
	memcpy(dst, p, n);
	dst[n] = '\0';
	*s = p + n + 2;
	return true;
}

/* `"amount":<1-18 digits, no leading zero>,`: what jw_i64 writes for a
 * positive amount below 10^18 (larger ones go to jansson). */
static bool scan_amount(const char **s, int64_t *out)
{
	const char *p = *s;
	int64_t v = 0;
	int n = 0;

	if (strncmp(p, "\"amount\":", 9))
		return false;
	p += 9;
	if (*p < '1' || *p > '9')
		return false;
	for (; *p >= '0' && *p <= '9'; p++, n++) {
		if (n == 18)
			return false;
		v = v * 10 + (*p - '0');
	}
	if (*p != ',')
		return false;
	*out = v;
	*s = p + 1;
	return true;
}

/* intake's form, member by member in webhook_intake_prepare's order:
 * {["account":..,]["amount":..,]"event_id":..,"provider":..[,"wallet":..]}.
 * jansson took ~21k instructions a job to say the same (callgrind). */
static bool payload_scan(const char *payload, struct wh_job_payload *out)
{
	const char *s = payload;
	char provider[16];
	bool account = false, amount = false, wallet = false;
	int prov;

	memset(out, 0, sizeof(*out));
	if (*s++ != '{')
		return false;
	if (!strncmp(s, "\"account\":", 10)) {
		if (!scan_str(&s, "account", ',', out->pay.account, sizeof(out->pay.account)))
			return false;
		account = true;
	}
	if (!strncmp(s, "\"amount\":", 9)) {
		if (!scan_amount(&s, &out->pay.amount))
			return false;
		amount = true;
	}
	if (!scan_str(&s, "event_id", ',', out->event_id, sizeof(out->event_id)))
		return false;
	if (scan_str(&s, "provider", ',', provider, sizeof(provider))) {
		if (!scan_str(&s, "wallet", '}', out->pay.wallet, sizeof(out->pay.wallet)))
			return false;
		wallet = true;
	} else if (!scan_str(&s, "provider", '}', provider, sizeof(provider))) {
		return false;
	}
	if (*s != '\0' || (prov = webhook_provider_parse(provider)) < 0 ||
	    !webhook_std_id_valid(out->event_id, strlen(out->event_id)))
		return false;
	out->p = (enum wh_provider)prov;
	/* What jansson's reading decides (webhook_job_payload_parse_json). */
	out->have_pay = amount && wallet != account && (wallet ? out->pay.wallet[0] : out->pay.account[0]);
	if (!out->have_pay)
		memset(&out->pay, 0, sizeof(out->pay));
	return true;
}

bool webhook_job_payload_parse(const char *payload, struct wh_job_payload *out)
{
	return payload_scan(payload, out) || webhook_job_payload_parse_json(payload, out);
}

static enum st_rc read_unit(struct tx *tx, void *arg)
{
	struct wh_job *j = arg;
	struct st_rows *rows = NULL;
	enum st_rc rc;

	free(j->body);
	j->body = NULL;
	rc = tx_query_one(tx,
			  "SELECT status, body FROM webhook_events WHERE provider = $1 AND event_id = $2",
			  ST_ARGS(SV_S(webhook_provider_str(j->p)), SV_S(j->event_id)), &rows);
	if (rc)
		return rc;
	j->status = status_parse(rows_text(rows, 0, 0));
	j->body_len = rows_len(rows, 0, 1);
	j->body = malloc(j->body_len + 1);
	if (j->body) {
		memcpy(j->body, rows_text(rows, 0, 1) ? rows_text(rows, 0, 1) : "", j->body_len);
		j->body[j->body_len] = '\0';
	}
	rows_free(rows);
	return j->body ? ST_OK : ST_NOMEM;
}

static enum st_rc process_unit(struct tx *tx, void *arg)
{
	struct wh_job *j = arg;
	struct ledger_entry e[4];
	/* ref_at_close: a failure here rolls back the whole effect (the
	 * mark included), so a repeated ref needs no lookup of its own: the
	 * closing row's UNIQUE refuses it (the third fence; the mark below
	 * and the job's own are the others). */
	struct ledger_post post = { .kind = WEBHOOK_LEDGER_KIND, .ref = j->ref, .entries = e,
				    .id = j->tx_id, .ref_at_close = true };
	struct account_payee payee;
	int64_t changes = 0;
	enum st_rc rc;

	j->already = j->unknown_wallet = false;
	j->commission = 0;
	j->referrer[0] = '\0';

	/* The second fence (the lease is the first): never post twice. The
	 * event is marked processed first, with the id its posting will
	 * have, by an UPDATE that changes nothing unless it is still stored
	 * or failed (it was read outside this unit); anything that fails
	 * below rolls the mark back with the rest. One statement instead of
	 * a read of the status and then the UPDATE. */
	tx_new_id(tx, "ltx_", j->tx_id);
	rc = tx_exec(tx,
		     "UPDATE webhook_events SET status = 'processed', ledger_tx_id = $3, error = NULL,"
		     " processed_at = $4 WHERE provider = $1 AND event_id = $2"
		     " AND status IN ('stored', 'failed')",
		     ST_ARGS(SV_S(webhook_provider_str(j->p)), SV_S(j->event_id), SV_S(j->tx_id),
			     SV_I(tx_now_ms(tx))),
		     &changes);
	if (rc)
		return rc;
	if (changes != 1) {
		j->already = true; /* processed (or ignored) meanwhile */
		j->tx_id[0] = '\0';
		return ST_OK;
	}

	/* A client's account is named as the operator names it, and only a
	 * client account (the qualified form): a payment never credits a
	 * system account. A client account has no referrer. */
	if (j->pay.account[0]) {
		struct account a;

		rc = account_resolve(tx, "admin", j->pay.account, ACCOUNT_CREDIT, &a);
		if (rc == ST_OK && a.kind != ACCOUNT_CLIENT)
			rc = ST_NOT_FOUND;
		if (rc == ST_OK) {
			memset(&payee, 0, sizeof(payee));
			memcpy(payee.id, a.id, sizeof(payee.id));
		}
	} else if (j->have_payee) {
		payee = j->payee; /* read by the worker: immutable (payee_read_unit) */
		rc = ST_OK;
	} else {
		/* The wallet's account and its referrer's in one statement. */
		rc = account_payee_by_wallet(tx, j->pay.wallet, &payee);
	}
	if (rc == ST_NOT_FOUND)
		j->unknown_wallet = true;
	if (rc)
		return rc;
	e[0] = (struct ledger_entry){ ACCT_REVENUE, LEDGER_DEBIT, j->pay.amount };
	e[1] = (struct ledger_entry){ payee.id, LEDGER_CREDIT, j->pay.amount };
	post.n = 2;
	if (payee.referrer[0]) {
		rc = webhook_commission(j->pay.amount, j->bps, &j->commission);
		if (rc)
			return rc;
		if (j->commission > 0) {
			/* accounts.referrer references accounts(wallet): it exists. */
			if (!payee.referrer_id[0])
				return ST_INTERNAL;
			e[2] = (struct ledger_entry){ ACCT_COMMISSIONS, LEDGER_DEBIT, j->commission };
			e[3] = (struct ledger_entry){ payee.referrer_id, LEDGER_CREDIT, j->commission };
			post.n = 4;
			memcpy(j->referrer, payee.referrer, sizeof(j->referrer));
		}
	}
	return ledger_post(tx, &post, NULL);
}

/* The payee of a wallet's payment, read by the worker on a read connection
 * before the effect, so that the one SQLite writer does not (~7.7k of its
 * ~170k instructions a job, callgrind). What it reads never changes once
 * written: an account's id, wallet and referrer are set at registration
 * and nothing updates them (only balances and holds move), and a system
 * account is never a wallet's. So the effect posts to exactly what it
 * would have read itself, and the entries' foreign keys still refuse an
 * account that is not there. A wallet not found (or a failed read) is
 * left to the effect, which decides it as before: after its mark, so an
 * event processed meanwhile is still "processed already". */
static enum st_rc payee_read_unit(struct tx *tx, void *arg)
{
	struct wh_job *j = arg;

	return account_payee_by_wallet(tx, j->pay.wallet, &j->payee);
}

static enum st_rc mark_failed(struct tx *tx, enum wh_provider p, const char *event_id,
			      const char *error)
{
	return tx_exec(tx,
		       "UPDATE webhook_events SET status = 'failed', error = $3, processed_at = $4"
		       " WHERE provider = $1 AND event_id = $2 AND status IN ('stored', 'failed')",
		       ST_ARGS(SV_S(webhook_provider_str(p)), SV_S(event_id), SV_S(error),
			       SV_I(tx_now_ms(tx))),
		       NULL);
}

enum st_rc webhook_job_dead(struct tx *tx, const struct job *job, const char *error)
{
	struct wh_job_payload pl;

	if (!webhook_job_payload_parse(job->payload, &pl))
		return ST_OK;
	return mark_failed(tx, pl.p, pl.event_id, error);
}

/* After the effect: what job_commit answered for process_unit. Owns j. */
/* Appends s to out[*len..cap); false (nothing more appended) once it
 * would not fit with the NUL. */
static bool put(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
	if (cap - *len <= n)
		return false;
	memcpy(out + *len, s, n);
	*len += n;
	out[*len] = '\0';
	return true;
}

static bool put_s(char *out, size_t cap, size_t *len, const char *s)
{
	return put(out, cap, len, s, strlen(s));
}

static bool put_i(char *out, size_t cap, size_t *len, int64_t v)
{
	char num[FMT_I64_LEN];

	return put(out, cap, len, num, fmt_i64(num, v));
}

bool webhook_credited_msg(char *out, size_t cap, enum wh_provider p, const char *event_id,
			  int64_t amount, const char *payee, int64_t commission,
			  const char *referrer, const char *tx_id)
{
	size_t len = 0;

	if (!cap)
		return false;
	out[0] = '\0';
	return put_s(out, cap, &len, "webhook ") && put_s(out, cap, &len, webhook_provider_str(p)) &&
	       put_s(out, cap, &len, ":") && put_s(out, cap, &len, event_id) &&
	       put_s(out, cap, &len, " credited ") && put_i(out, cap, &len, amount) &&
	       put_s(out, cap, &len, " to ") && put_s(out, cap, &len, payee) &&
	       put_s(out, cap, &len, " (commission ") && put_i(out, cap, &len, commission) &&
	       put_s(out, cap, &len, " to ") &&
	       put_s(out, cap, &len, referrer && referrer[0] ? referrer : "nobody") &&
	       put_s(out, cap, &len, ") in ") && put_s(out, cap, &len, tx_id);
}

/* The info line of a credited payment, made without printf (vsnprintf
 * was ~8k of a webhook job's ~27k on its worker thread); redacted and
 * emitted as any job line. */
static void credited(const struct job_ctx *ctx, const struct wh_job *j)
{
	char msg[WH_CREDITED_MSG_MAX];
	const char *payee = j->pay.account[0] ? j->pay.account : j->pay.wallet;

	if (webhook_credited_msg(msg, sizeof(msg), j->p, j->event_id, j->pay.amount, payee,
				 j->commission, j->referrer, j->tx_id))
		job_log_text(ctx, LOG_INFO, msg);
	else
		job_logf(ctx, LOG_INFO, "webhook %s:%s credited %lld to %s (commission %lld to %s) in %s",
			 webhook_provider_str(j->p), j->event_id, (long long)j->pay.amount, payee,
			 (long long)j->commission, j->referrer[0] ? j->referrer : "nobody", j->tx_id);
}

static enum st_rc webhook_after(struct job_ctx *ctx, void *arg, enum st_rc rc)
{
	struct wh_job *j = arg;

	if (rc == ST_OK) {
		if (j->already)
			job_logf(ctx, LOG_DEBUG, "webhook %s:%s processed already",
				 webhook_provider_str(j->p), j->event_id);
		else
			credited(ctx, j);
		goto out;
	}
	if (ctx->lost)
		goto out;
	if (j->unknown_wallet) {
		ctx->permanent = true;
		if (j->pay.account[0])
			rc = job_failf(ctx, ST_NOT_FOUND, "unknown_account: %s is no client's account",
				       j->pay.account);
		else
			rc = job_failf(ctx, ST_NOT_FOUND, "unknown_wallet: %s is not registered",
				       j->pay.wallet);
		goto out;
	}
	rc = job_failf(ctx, rc, "cannot post webhook %s:%s: %s", webhook_provider_str(j->p),
		       j->event_id, st_rc_str(rc));
out:
	free(j->body);
	free(j);
	return rc;
}

enum st_rc webhook_process_job(struct job_ctx *ctx)
{
	struct settled *app = ctx->app;
	struct wh_job *j = calloc(1, sizeof(*j));
	struct buf why = BUF_INIT(512);
	json_t *body = NULL;
	json_error_t jerr;
	struct wh_job_payload pl;
	bool have_pay = false;
	enum st_rc rc;

	if (!j)
		return job_failf(ctx, ST_NOMEM, "out of memory");
	if (!webhook_job_payload_parse(ctx->job->payload, &pl)) {
		ctx->permanent = true;
		rc = job_failf(ctx, ST_INVALID, "invalid_payload: %.200s", ctx->job->payload);
		goto out;
	}
	j->p = pl.p;
	memcpy(j->event_id, pl.event_id, sizeof(j->event_id));
	j->pay = pl.pay;
	have_pay = pl.have_pay;
	/* Intake parsed the payment from the body it stored: nothing to read
	 * or parse again (the effect's mark is the fence against a second
	 * posting). Jobs stored without it (older ones, a payment that did
	 * not parse) read the event and parse the stored body. */
	if (have_pay)
		goto post;
	rc = store_read_one(app->store, read_unit, j);
	if (rc == ST_NOT_FOUND) {
		ctx->permanent = true;
		rc = job_failf(ctx, rc, "event_not_found: no stored %s event %s",
			       webhook_provider_str(j->p), j->event_id);
		goto out;
	}
	if (rc) {
		rc = job_failf(ctx, rc, "cannot read the event: %s", st_rc_str(rc));
		goto out;
	}
	if (j->status == EV_PROCESSED || j->status == EV_IGNORED) {
		job_logf(ctx, LOG_DEBUG, "webhook %s:%s is %s already; nothing to do",
			 webhook_provider_str(j->p), j->event_id, status_names[j->status]);
		rc = ST_OK;
		goto out;
	}
	body = json_loadb(j->body, j->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!body) {
		ctx->permanent = true;
		rc = job_failf(ctx, ST_INVALID, "invalid_event: the stored body is not JSON: %s",
			       jerr.text);
		goto out;
	}
	if (webhook_payment_parse(j->p, body, app->cfg->asset, &j->pay, &why)) {
		ctx->permanent = true;
		rc = job_failf(ctx, ST_INVALID, "%s", why.ptr);
		goto out;
	}
post:
	j->bps = app->cfg->commission_bps;
	snprintf(j->ref, sizeof(j->ref), "webhook:%s:%s", webhook_provider_str(j->p), j->event_id);
	if (!j->pay.account[0] && app->store->one_writer)
		j->have_payee = store_read_one(app->store, payee_read_unit, j) == ST_OK;

	/* The effect goes in the worker's batch unit (one commit for many
	 * events); webhook_after runs once it is decided and owns j. */
	json_decref(body);
	buf_release(&why);
	free(j->body);
	j->body = NULL;
	return job_commit_later(ctx, process_unit, j, webhook_after);
out:
	json_decref(body);
	buf_release(&why);
	free(j->body);
	free(j);
	return rc;
}

/* webhook_job.h — the webhook_events table and the job that processes a
 * paying event (SPEC section 9; docs/internals/webhooks.md).
 *
 * Intake (routes_webhooks.c) stores a verified event with
 * webhook_event_store() inside the request's write unit; a paying event
 * enqueues WEBHOOK_JOB_KIND in the same unit, so an event is never stored
 * without its job nor a job queued without its event. The job
 * (webhook_process_job, in job_kinds.c's table) credits the wallet named in
 * the event from `revenue` and, when the wallet has a referrer, pays the
 * commission from `commissions`: ONE balanced ledger transaction, posted in
 * the unit that completes the job and marks the event processed, so it
 * happens exactly once (the job's lease fences the completion, the event's
 * status and the posting's unique ref fence it again). An event that can
 * never be processed (unknown wallet, an amount with more decimals than the
 * asset has, a currency that is not the ledger's) fails the job
 * permanently: it goes straight to the DLQ with the reason as last_error,
 * and the event is marked failed with the same reason. */
#ifndef SETTLED_WEBHOOK_JOB_H
#define SETTLED_WEBHOOK_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rc.h"
#include "store.h"
#include "webhook.h"
#include "worker.h"

#define WEBHOOK_JOB_KIND "webhook.process"
#define WEBHOOK_JOB_QUEUE "webhooks"
#define WEBHOOK_LEDGER_KIND "webhook_payment"

/* A verified delivery, ready to store: what the request thread knows, and
 * the processing job's key and payload, made there (webhook_intake_prepare)
 * so that the store's writer only inserts. */
#define WH_JOB_KEY_MAX (16 + WEBHOOK_ID_MAX + 2)
/* {"event_id":"<id>","provider":"standard"}: an id is at most
 * WEBHOOK_ID_MAX bytes of 0x20..0x7e, of which only '"' and '\' are
 * escaped, in two bytes each; with the payment (webhook_intake_prepare)
 * "account" (WH_ACCOUNT_MAX of [A-Za-z0-9:._/-], no escapes) or "wallet",
 * and "amount" (an int64). */
#define WH_JOB_PAYLOAD_MAX (2 * WEBHOOK_ID_MAX + 64 + WH_ACCOUNT_MAX + 64)
struct wh_intake {
	enum wh_provider p;
	struct wh_event ev;
	const char *raw;           /* the body as received, len bytes: borrowed */
	size_t len;
	const char *request_id;    /* may be NULL */
	char job_key[WH_JOB_KEY_MAX];
	char job_payload[WH_JOB_PAYLOAD_MAX];
};
/* Fills in from a verified, parsed event. pay: the paying event's payment
 * as webhook_payment_parse found it in the body, or NULL (not a paying
 * event, or a payment that does not parse: the job then reads the stored
 * body and fails with the reason). With it the job's payload carries the
 * payment, and the job neither reads the event nor parses its body again.
 * ST_INVALID when the payload does not fit (it always does: ids are at
 * most WEBHOOK_ID_MAX printable bytes). */
enum st_rc webhook_intake_prepare(struct wh_intake *in, enum wh_provider p, const struct wh_event *ev,
				  const struct wh_payment *pay, const char *raw, size_t len,
				  const char *request_id);

/* Stores a verified event: INSERT ... ON CONFLICT (provider, event_id) DO
 * NOTHING, never check-then-insert, so concurrent deliveries of one event
 * race on the unique constraint and exactly one inserts. *inserted says
 * whether this call stored it (false: a redelivery; nothing was changed).
 * When inserted and the event pays, the processing job is enqueued in tx
 * (queue WEBHOOK_JOB_QUEUE, unique key "<provider>:<event id>", max_attempts as
 * given, <= 0 for the queue's default; its trace context the unit's); other
 * types are stored as 'ignored'. Store errors are returned as they come. */
enum st_rc webhook_event_store(struct tx *tx, const struct wh_intake *in, int max_attempts,
			       bool *inserted);

/* Stores n (>= 1) deliveries at once, each as webhook_event_store would,
 * with one multi-row INSERT of the events and one of the jobs (a few for n
 * > 64); traceparents[i] (may be NULL) is delivery i's job's trace context.
 * Only for deliveries that are all new events: ST_OK when every event was
 * inserted with its job; ST_CONFLICT when one was known already, or two
 * are the same event (nothing tells which here: the caller rolls back and
 * stores each alone, which answers each one). */
enum st_rc webhook_events_store_new(struct tx *tx, const struct wh_intake *const *in,
				    const char *const *traceparents, int n, int max_attempts);

/* The job handler (job_kinds.c's table). Payload: {"provider":..,"event_id":..}
 * and, from intake, the payment ("wallet" or "account", "amount"). */
enum st_rc webhook_process_job(struct job_ctx *ctx);
/* The kind's on_dead (worker.h): the event the job names is marked failed
 * with error, in the unit that moves the job to dead (whatever moved it:
 * the handler's last failed attempt, a swept lease, the crash guard). A payload
 * that names no event: nothing to mark (ST_OK). */
enum st_rc webhook_job_dead(struct tx *tx, const struct job *job, const char *error);

/* What a job's payload names: the event, and the payment when intake put
 * one there (have_pay: a positive amount and a wallet or, exclusive, an
 * account; pay all zero otherwise). */
struct wh_job_payload {
	enum wh_provider p;
	char event_id[WEBHOOK_ID_MAX + 1];
	struct wh_payment pay;
	bool have_pay;
};

/* Parses a job's payload: false when it names no valid event (the job
 * fails for good). The payloads intake writes (webhook_intake_prepare's
 * members, in its order, nothing escaped) are read by a scanner of that
 * one form; anything else by jansson (webhook_job_payload_parse_json),
 * which gives the same answer for those (tests/unit/test_webhook.c). */
bool webhook_job_payload_parse(const char *payload, struct wh_job_payload *out);
bool webhook_job_payload_parse_json(const char *payload, struct wh_job_payload *out);

/* The info line a credited payment logs: "webhook <provider>:<event id>
 * credited <amount> to <payee> (commission <commission> to <referrer, or
 * nobody when NULL or empty>) in <tx id>", into out[0..cap) without
 * printf. False, out then holding a prefix, when it does not fit. */
#define WH_CREDITED_MSG_MAX 1024
bool webhook_credited_msg(char *out, size_t cap, enum wh_provider p, const char *event_id,
			  int64_t amount, const char *payee, int64_t commission,
			  const char *referrer, const char *tx_id);

#endif

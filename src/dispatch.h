/* dispatch.h — the request as handlers see it, and how a handler commits
 * a write.
 *
 * The dispatcher (dispatch.c) calls a route's handler once the route's
 * flags are applied (route_match.h: authentication, rate limits, body parse,
 * unknown fields, idempotency); the handler reads its input with the
 * accessors below. It either answers at once (response.h: req_ok,
 * req_error) or commits a write unit with req_commit(): the connection is
 * suspended, the unit runs on the store's writer together with the
 * idempotency record, and the connection is resumed with the response once
 * it is durable. Nothing a handler does before req_commit() may write. */
#ifndef SETTLED_DISPATCH_H
#define SETTLED_DISPATCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idempotency.h"
#include "rc.h"
#include "response.h"
#include "store.h"

struct settled;
struct req_ctx;

/* Request accessors. Returned strings are borrowed until the request ends. */
struct settled *req_app(const struct req_ctx *rq);
const char *req_method(const struct req_ctx *rq);
const char *req_route(const struct req_ctx *rq);      /* template, e.g. "/api/v2/intents/{id}" */
const char *req_id(const struct req_ctx *rq);         /* X-Request-Id, validated or generated */
const char *req_trace_id(const struct req_ctx *rq);   /* 32 hex, from traceparent or generated */
const char *req_header(const struct req_ctx *rq, const char *name);  /* NULL if absent */
const char *req_query(const struct req_ctx *rq, const char *name);   /* NULL if absent */
const char *req_param(const struct req_ctx *rq, const char *name);   /* path parameter, NUL-terminated copy */
const char *req_client_ip(const struct req_ctx *rq);  /* peer, or trusted X-Forwarded-For hop */
/* ROUTE_SIGNED routes: true while the dispatcher calls the handler for its
 * signature pass (before the body is parsed and limits are charged): the
 * handler checks the signature over req_body() and answers a refusal
 * (req_error, 401), or answers nothing to let the request go on; its second
 * call (false) is the usual one. */
bool req_verifying(const struct req_ctx *rq);
/* Who the caller is: the API key's client id (the rotation chain's first
 * key id, "key_…", kept across rotations), "admin" for the admin token,
 * "anon" on routes without authentication. The idempotency scope, the v2
 * rate-limit key and the owner of everything a client creates. */
const char *req_client_id(const struct req_ctx *rq);
json_t *req_json(const struct req_ctx *rq);           /* parsed body (borrowed) or NULL */
const char *req_body(const struct req_ctx *rq, size_t *len);  /* raw body bytes */
int64_t req_now_ms(const struct req_ctx *rq);         /* the server clock at request start */
struct resp *req_resp(struct req_ctx *rq);            /* the response handlers fill */

/* A write unit as handlers write it: runs in the open transaction, fills
 * resp, returns ST_OK to commit or an error to roll its work back (resp
 * then holds the error answer; unit_error in response.h fills it). */
typedef enum st_rc req_unit_fn(struct tx *tx, void *arg, struct resp *resp);

/* Commits fn through the store's writer together with the request's
 * idempotency record. arg is borrowed until the response is sent; allocate
 * it with req_alloc so the request owns it. The handler returns ST_OK right
 * after; the response is sent when the unit is durable. On a 4xx from fn the
 * effect is rolled back but the answer is still recorded under the
 * idempotency key; on 5xx nothing is recorded and the key is free again. */
enum st_rc req_commit(struct req_ctx *rq, req_unit_fn *fn, void *arg);

/* Requests of one route whose units the store may run together
 * (store_submit_merged): run(tx, args, resps, trace_contexts, n) does what
 * fn(tx, args[i], resps[i]) would do for each i, in fewer statements, and
 * fills every resps[i]; each unit's jobs carry trace_contexts[i] (may be
 * NULL). ST_OK only when every request succeeded; otherwise its work is
 * rolled back and each request's fn runs alone, so each still gets its own
 * answer (and a failing one fails alone). Nothing observable may happen in
 * run before it returns ST_OK (metrics last). */
typedef enum st_rc req_merge_fn(struct tx *tx, void *const *args, struct resp *const *resps,
				const char *const *trace_contexts, int n);
/* A merge's answers before its writes: fills every resps[i] with what run
 * will answer (drawing what run will then use, e.g. ids, into args[i]),
 * writing nothing. ST_OK only when it can tell every request succeeds. */
typedef enum st_rc req_answer_fn(struct tx *tx, void *const *args, struct resp *const *resps,
				 int n);
/* A keyed request's whole unit in one statement (PostgreSQL, where every
 * statement of a unit is a round trip and a savepoint around the handler
 * two more commands): the route's effect and the key's record rec (scope,
 * key, fingerprint; the answer is the route's to fill) written together,
 * as req_unit_fn followed by idem_record would. Fills resp with the answer
 * it recorded (a success or the route's own 4xx, whose effect it did not
 * write) and sets *recorded; ST_OK with *recorded false: a live record of
 * the key exists and nothing of it was changed (the dispatcher rolls the
 * unit back and answers that record). Another rc: the unit fails (5xx). */
typedef enum st_rc req_record_fn(struct tx *tx, void *arg, struct resp *resp,
				 const struct idem_new_record *rec, const char *owner,
				 int64_t ttl_ms, bool *recorded);
/* A merged run of keyed requests on PostgreSQL in one statement a chunk:
 * the keys' records recs[i] (answers already made by req_answer_fn) and
 * run's writes together, as idem_record_many followed by run would, in one
 * round trip instead of two. *all true: every key recorded and every write
 * done; false: a key has a live record or a write was refused, and the
 * store rolls the run back and runs each request alone. */
typedef enum st_rc req_run_recorded_fn(struct tx *tx, void *const *args,
				       const struct idem_new_record *recs, int n,
				       const char *owner, int64_t ttl_ms, bool *all);
/* What rec.ans records of resp: its status, Location and body (the
 * replay body when the answer shows a secret once). Borrowed from resp. */
void req_record_answer(const struct resp *resp, struct idem_answer *ans);
struct req_merge {
	req_merge_fn *run;
	/* Keyed requests may be merged too (with one another, never with
	 * unkeyed ones) when their key is checked in the unit
	 * (ROUTE_KEY_CHECK_IN_UNIT) and the route can answer before it
	 * writes: answer first, then the keys' records in one multi-row
	 * INSERT (a finished key stops the run there, before any of the
	 * handlers' writes), then run, which keeps the answers already in
	 * resps. NULL: keyed requests are committed alone. */
	req_answer_fn *answer;
	/* A keyed request on PostgreSQL: its unit is this one statement (see
	 * req_record_fn) instead of the handler's unit in a savepoint and the
	 * record after it. NULL: the usual way. */
	req_record_fn *record;
	/* A merged keyed run on PostgreSQL: records and writes in one
	 * statement (see req_run_recorded_fn) instead of idem_record_many and
	 * run. NULL: those two. */
	req_run_recorded_fn *run_recorded;
};
/* As req_commit, for a unit that may be merged with other requests' units
 * of m (which must outlive the server: a static const). A request with an
 * Idempotency-Key is committed alone, as by req_commit, unless m->answer
 * and its key is checked in the unit. */
enum st_rc req_commit_merged(struct req_ctx *rq, const struct req_merge *m, req_unit_fn *fn,
			     void *arg);

/* Zeroed memory freed when the request ends. NULL on ENOMEM. */
void *req_alloc(struct req_ctx *rq, size_t size);

#endif

/* http.h — the HTTP server (libmicrohttpd) and the request API handlers use.
 *
 * A request's path: MHD thread -> req_ctx (capped body) -> route match ->
 * pre-checks (method, content type, size, auth, rate limit; no store
 * writes) -> JSON parse -> idempotency lookup (HIT replays without a write)
 * -> handler. A handler either answers at once (reads, validation errors)
 * or commits a write unit with req_commit(): the connection is suspended,
 * the unit runs on the store's writer together with the idempotency record,
 * and the connection is resumed with the response once it is durable.
 *
 * Only this module knows HTTP status codes: handlers speak enum st_rc plus
 * a snake_case error code, and http_status_of() maps one to the other. */
#ifndef SETTLED_HTTP_H
#define SETTLED_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "json_out.h"
#include "rc.h"
#include "route.h"
#include "store.h"

struct settled;
struct http;

/* A response under construction. Owned by its req_ctx. Route-specific
 * headers only (Retry-After, Allow, WWW-Authenticate, Connection...): no
 * answer sets more than three. Kept small so that struct req_ctx stays
 * under glibc's 1,008-byte small-bin limit: a larger one made every
 * request's calloc consolidate the fast bins (~2,000 instructions). */
#define RESP_MAX_HEADERS 6
struct resp {
	int status;              /* 0 until set */
	struct buf body;
	char *location;          /* malloc'd Location header or NULL */
	char *replay_body;       /* malloc'd: what an idempotent replay answers instead of body, or NULL */
	size_t nheaders;
	struct {
		char *name;      /* malloc'd */
		char *value;     /* malloc'd */
	} headers[RESP_MAX_HEADERS];
};

/* Sets status and a JSON body (steals the reference to body). ST_NOMEM on failure. */
enum st_rc resp_json(struct resp *r, int status, json_t *body);
/* The same body written member by member (json_out.h's json_writer), for
 * the write paths: resp_object_begin starts it, resp_object_end closes it
 * and sets status (or returns the writer's error and leaves status unset). */
void resp_object_begin(struct resp *r, struct json_writer *w);
enum st_rc resp_object_end(struct resp *r, struct json_writer *w, int status);
/* For answers that show a secret once (a new API key): the body the
 * idempotency record stores, and so what a replay returns, instead of
 * r->body (same status and Location). Steals body; ST_NOMEM on failure. */
enum st_rc resp_replay_json(struct resp *r, json_t *body);
/* An error body {"error": code, "message": message} with the status that
 * rc maps to; extra (may be NULL) is merged in and its reference stolen. */
enum st_rc resp_error(struct resp *r, enum st_rc rc, const char *code, const char *message,
		      json_t *extra);
/* For write units: fills r with the error answer and returns rc, so a unit
 * can `return unit_fail(resp, ST_CONFLICT, "already_registered", "...", NULL);`
 * and have its work rolled back. */
enum st_rc unit_fail(struct resp *r, enum st_rc rc, const char *code, const char *message,
		     json_t *extra);
enum st_rc resp_header(struct resp *r, const char *name, const char *value);
enum st_rc resp_location(struct resp *r, const char *location);
/* Frees everything r holds; r is reusable (as a fresh resp). */
void resp_release(struct resp *r);

/* HTTP status for a result code (ST_OK -> 200). */
int http_status_of(enum st_rc rc);

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
 * (req_fail, 401), or answers nothing to let the request go on; its second
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

/* Answers with an error at once (no store write): e.g.
 * return req_fail(rq, ST_INVALID, "invalid_wallet", "wallet must be 0x + 40 hex digits");
 * Returns ST_OK so handlers can `return req_fail(...)`. */
enum st_rc req_fail(struct req_ctx *rq, enum st_rc rc, const char *code, const char *message);
/* As req_fail with a "field" member naming the offending input. */
enum st_rc req_fail_field(struct req_ctx *rq, enum st_rc rc, const char *code,
			  const char *message, const char *field);
/* Answers with a JSON body at once (steals body). */
enum st_rc req_reply(struct req_ctx *rq, int status, json_t *body);
/* The same with a body that is already JSON text (a constant answer such as
 * the liveness probe's, which need not be built and serialised each time). */
enum st_rc req_reply_text(struct req_ctx *rq, int status, const char *json, size_t len);

/* A write unit as handlers write it: runs in the open transaction, fills
 * resp, returns ST_OK to commit or an error to roll its work back (resp
 * then holds the error answer; req helpers below fill it). */
typedef enum st_rc req_unit_fn(struct tx *tx, void *arg, struct resp *resp);

/* Commits fn through the store's writer together with the request's
 * idempotency record. arg is borrowed until the response is sent; allocate
 * it with req_alloc so the request owns it. The handler returns ST_OK right
 * after; the response is sent when the unit is durable. On a 4xx from fn the
 * effect is rolled back but the answer is still recorded under the
 * idempotency key; on 5xx nothing is recorded and the key is free again. */
enum st_rc req_commit(struct req_ctx *rq, req_unit_fn *fn, void *arg);

/* Zeroed memory freed when the request ends. NULL on ENOMEM. */
void *req_alloc(struct req_ctx *rq, size_t size);

/* Server lifecycle. */
enum st_rc http_start(struct settled *app, const struct route *routes, size_t nroutes,
		      struct http **out, struct buf *err);
uint16_t http_port(const struct http *h);
/* Stops accepting, lets in-flight requests finish (up to grace_ms), stops. */
void http_stop(struct http *h, int64_t grace_ms);

#endif

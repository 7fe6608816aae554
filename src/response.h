/* response.h — the answer handlers build: struct resp, success answers,
 * error answers.
 *
 * A handler either answers at once (req_ok, req_error: reads, validation
 * errors) or fills the resp its write unit is given (resp_ok,
 * unit_error); response.c sends it with the headers every answer carries.
 * No handler names an HTTP status: a success answers the status its route
 * says (route_match.h ROUTE_CREATED: 201, else 200), an error the status of its
 * row in the catalogue (errors.def, docs/internals/errors.md).
 * Everything a resp holds is owned by it and freed by resp_release(); the
 * request's resp is released when the request ends. */
#ifndef SETTLED_RESPONSE_H
#define SETTLED_RESPONSE_H

#include <jansson.h>
#include <stddef.h>

#include "buf.h"
#include "errors.h"
#include "json_out.h"
#include "rc.h"

struct req_ctx;

/* A response under construction. Owned by its req_ctx. Route-specific
 * headers only (Retry-After, Allow, WWW-Authenticate, Connection,
 * Content-Type and a policy of the console's...): no answer sets more than
 * two. Kept small for struct req_ctx's size (http.c REQ_CTX_MAX). */
#define RESP_MAX_HEADERS 4
struct resp {
	int status;              /* 0 until set */
	int ok_status;           /* what a success answers: the route's (200, 201); kept by resp_release */
	struct buf body;
	char *location;          /* malloc'd Location header or NULL */
	char *replay_body;       /* malloc'd: what an idempotent replay answers instead of body, or NULL */
	size_t nheaders;
	struct {
		char *name;      /* malloc'd */
		char *value;     /* malloc'd */
	} headers[RESP_MAX_HEADERS];
};

/* The route's success answer with a JSON body (steals the reference).
 * ST_NOMEM on failure (r then has no status). */
enum st_rc resp_ok(struct resp *r, json_t *body);
/* The same body written member by member (json_out.h's json_writer), for
 * the write paths: resp_object_begin starts it, resp_object_end closes it
 * and sets the success status (or returns the writer's error and leaves
 * the status unset). */
void resp_object_begin(struct resp *r, struct json_writer *w);
enum st_rc resp_object_end(struct resp *r, struct json_writer *w);
/* The body r already holds (metrics text, a console file: the handler
 * filled r->body and its Content-Type) is the success answer. */
void resp_ok_body(struct resp *r);
/* For answers that show a secret once (a new API key): the body the
 * idempotency record stores, and so what a replay returns, instead of
 * r->body (same status and Location). Steals body; ST_NOMEM on failure. */
enum st_rc resp_replay_json(struct resp *r, json_t *body);
enum st_rc resp_header(struct resp *r, const char *name, const char *value);
enum st_rc resp_location(struct resp *r, const char *location);
/* An empty resp (body capped at 64 MiB); resp_release() frees it again. */
void resp_init(struct resp *r);
/* Frees everything r holds; r is reusable (as a fresh resp of the same route). */
void resp_release(struct resp *r);

/* Error answers: a row of the catalogue (errors.h), its body
 * {"error": code, "message": message, "field": field (if the row has one),
 * ...extra}. extra (may be NULL) is merged in last and its reference
 * stolen; a "field" in it replaces the row's in place, for inputs named at
 * run time ("items[3].amount"). Each replaces whatever r held. */

/* ST_OK, or ST_NOMEM (r then has no status: a bare 503 goes out). For a
 * write unit whose work must commit with the error answer (a hold found
 * expired is expired for good); otherwise use unit_error. */
enum st_rc resp_set_error(struct resp *r, enum err_id e, json_t *extra);
/* For write units: resp_set_error, then err_rc(e), so that
 * `return unit_error(resp, ERR_..., NULL);` answers e and rolls back. */
enum st_rc unit_error(struct resp *r, enum err_id e, json_t *extra);

/* Answers the route's success with a JSON body at once (steals body). */
enum st_rc req_ok(struct req_ctx *rq, json_t *body);
/* The same with a body that is already JSON text (a constant answer such as
 * the liveness probe's, which need not be built and serialised each time). */
enum st_rc req_ok_text(struct req_ctx *rq, const char *json, size_t len);
/* Answers e at once (no store write); returns ST_OK so a handler can
 * `return req_error(rq, ERR_..., NULL);`. */
enum st_rc req_error(struct req_ctx *rq, enum err_id e, json_t *extra);
/* As req_error with message (copied) instead of the row's: for the few
 * rows whose text is made at run time (a JSON parse error's, an event's). */
enum st_rc req_error_msg(struct req_ctx *rq, enum err_id e, const char *message, json_t *extra);

#endif

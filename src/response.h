/* response.h — the answer handlers build: struct resp, error answers, the
 * HTTP status of a result code.
 *
 * A handler either answers at once (req_reply, req_fail: reads, validation
 * errors) or fills the resp its write unit is given (resp_*, unit_fail);
 * response.c sends it with the headers every answer carries. Only
 * response.c knows HTTP status codes: handlers speak enum st_rc plus a
 * snake_case error code, and http_status_of() maps one to the other.
 * Everything a resp holds is owned by it and freed by resp_release(); the
 * request's resp is released when the request ends. */
#ifndef SETTLED_RESPONSE_H
#define SETTLED_RESPONSE_H

#include <jansson.h>
#include <stddef.h>

#include "buf.h"
#include "json_out.h"
#include "rc.h"

struct req_ctx;

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

#endif

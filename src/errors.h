/* errors.h — the error catalogue.
 *
 * Every error settled answers is a row of errors.def: an id (ERR_...), the
 * wire code, the HTTP status, the message and, where one input is at fault,
 * the field. Handlers name the row and nothing else, as curl code names a
 * CURLcode and curl_easy_strerror's one table has the text:
 *
 *   return req_error(rq, ERR_HOLD_NOT_FOUND, NULL);
 *   return unit_error(resp, ERR_HOLD_NOT_PENDING,
 *                     json_pack("{s:s}", "state", hold_state_str(s)));
 *
 * (req_error and unit_error are response.h's.) Adding an error is adding
 * a row, and documenting its code on the operations that answer it
 * (docs/openapi.json). Success statuses are the route table's (route_match.h);
 * see docs/internals/errors.md. */
#ifndef SETTLED_ERRORS_H
#define SETTLED_ERRORS_H

#include "rc.h"

enum err_id {
#define ERR(id, code, status, message, field) ERR_##id,
#include "errors.def"
#undef ERR
	ERR_COUNT
};

struct err_row {
	const char *name;      /* the id without ERR_: "HOLD_NOT_FOUND" */
	const char *code;      /* "not_found" */
	int status;            /* 404 */
	const char *message;
	const char *field;     /* NULL: none */
};

/* The row of e (static; e must be below ERR_COUNT). */
const struct err_row *err_row(enum err_id e);

/* The result code a write unit returns to roll its work back after
 * answering e: the st_rc whose status is e's (ST_NOT_FOUND for a 404,
 * ST_UNAVAILABLE for a 503, ...); never ST_OK, never ST_BUSY (which
 * would make the store run the unit again). */
enum st_rc err_rc(enum err_id e);

/* The row a bare result code answers when a handler returns it without
 * answering (ST_NOT_FOUND -> ERR_RC_NOT_FOUND, ST_INTERNAL -> ERR_INTERNAL).
 * A bare refusal (ST_INVALID, ST_CONFLICT, ST_UNPROCESSABLE, ST_TOO_LARGE,
 * ST_UNIQUE) is a path nobody answered: ERR_INTERNAL (see errors.c). */
enum err_id err_of_rc(enum st_rc rc);

#endif

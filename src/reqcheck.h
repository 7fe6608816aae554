/* reqcheck.h — request checks shared by the Ledger API's routes
 * (accounts, transfers, holds): either/or body shapes, metadata, page limits.
 *
 * Each returns false when the request may go on, true when it has already
 * answered with the error (req_error), so a handler writes
 * `if (reqcheck_limit(...)) return ST_OK;`. */
#ifndef SETTLED_REQCHECK_H
#define SETTLED_REQCHECK_H

#include <jansson.h>
#include <stdbool.h>

#include "http.h"

/* Refuses a body member not in fields (NULL-terminated) with 400
 * unknown_field naming it. The dispatcher already refuses every member a
 * route does not declare (route_match.h); this is only for what the table cannot
 * say, an either/or shape: a transfer is `postings` or one posting's
 * members, never both. A body that is not an object is 400 invalid_body. */
bool reqcheck_fields(struct req_ctx *rq, const json_t *body, const char *const *fields);

/* Reads an optional "metadata": absent or null gives *out = NULL; a JSON
 * object gives its compact text (req_alloc'd, at most
 * REQCHECK_METADATA_MAX bytes, nested at most JSON_OUT_MAX_DEPTH deep: the
 * answers write it back); anything else is 400 invalid_metadata. */
#define REQCHECK_METADATA_MAX 4096
bool reqcheck_metadata(struct req_ctx *rq, const json_t *v, char **out);

/* Parses ?limit= (1..max; larger values are capped at max): else 400
 * invalid_parameter naming limit. */
bool reqcheck_limit(struct req_ctx *rq, const char *s, int max, int *out);

#endif

/* errors.c — the catalogue of errors.def as a table (errors.h); the
 * answers made from its rows are response.c's. */
#include "errors.h"

#include <stddef.h>

#include "banned.h"

static const struct err_row rows[ERR_COUNT] = {
#define ERR(id, code, status, message, field) [ERR_##id] = { #id, code, status, message, field },
#include "errors.def"
#undef ERR
};

/* The result code of each status the catalogue uses: what a unit returns
 * to roll back after answering it. 405 is the dispatcher's alone. */
static const struct {
	int status;
	enum st_rc rc;
} status_rc[] = {
	{ 400, ST_INVALID },	  { 401, ST_UNAUTHORIZED }, { 403, ST_FORBIDDEN },
	{ 404, ST_NOT_FOUND },	  { 405, ST_INVALID },	    { 409, ST_CONFLICT },
	{ 413, ST_TOO_LARGE },	  { 415, ST_UNSUPPORTED },  { 422, ST_UNPROCESSABLE },
	{ 429, ST_LIMITED },	  { 500, ST_INTERNAL },	    { 503, ST_UNAVAILABLE },
};

/* What a bare result code answers (a handler that returned it unanswered).
 * A refusal (invalid, conflict, unprocessable, too large, unique) has no
 * answer of its own here: a client must only see codes the contract names,
 * and each refusal it can provoke is answered where it is made (a hold
 * resolved by someone else: hold_not_pending; a name taken in a race:
 * account_exists). One that arrives here bare is a path nobody answered,
 * a bug: 500 internal_error, documented everywhere, rather than a 4xx code
 * no client could know. */
static const enum err_id rc_err[ST_RC_COUNT] = {
	[ST_OK] = ERR_INTERNAL,
	[ST_NOMEM] = ERR_RC_NOMEM,
	[ST_INVALID] = ERR_INTERNAL,
	[ST_UNAUTHORIZED] = ERR_RC_UNAUTHORIZED,
	[ST_FORBIDDEN] = ERR_RC_FORBIDDEN,
	[ST_NOT_FOUND] = ERR_RC_NOT_FOUND,
	[ST_CONFLICT] = ERR_INTERNAL,
	[ST_UNPROCESSABLE] = ERR_INTERNAL,
	[ST_TOO_LARGE] = ERR_INTERNAL,
	[ST_UNSUPPORTED] = ERR_RC_UNSUPPORTED,
	[ST_LIMITED] = ERR_RC_LIMITED,
	[ST_UNIQUE] = ERR_INTERNAL,
	[ST_BUSY] = ERR_RC_BUSY,
	[ST_UNAVAILABLE] = ERR_RC_UNAVAILABLE,
	[ST_INTERNAL] = ERR_INTERNAL,
};

const struct err_row *err_row(enum err_id e)
{
	return &rows[(unsigned)e < ERR_COUNT ? e : ERR_INTERNAL];
}

enum st_rc err_rc(enum err_id e)
{
	int status = err_row(e)->status;

	for (size_t i = 0; i < sizeof(status_rc) / sizeof(status_rc[0]); i++)
		if (status_rc[i].status == status)
			return status_rc[i].rc;
	return status < 500 ? ST_INVALID : ST_INTERNAL;
}

enum err_id err_of_rc(enum st_rc rc)
{
	return (unsigned)rc < ST_RC_COUNT ? rc_err[rc] : ERR_INTERNAL;
}

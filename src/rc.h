/* rc.h — the one project-wide result code.
 *
 * Every fallible function returns enum st_rc (ST_OK == 0), like curl's
 * CURLcode. Domain modules never know HTTP: an error answer is a row of
 * errors.def (code, status, message), and a code a handler returns
 * unanswered is answered by its row (err_of_rc()). */
#ifndef SETTLED_RC_H
#define SETTLED_RC_H

enum st_rc {
	ST_OK = 0,
	ST_NOMEM,          /* allocation failed */
	ST_INVALID,        /* bad input (400) */
	ST_UNAUTHORIZED,   /* missing/unknown credentials (401) */
	ST_FORBIDDEN,      /* wrong credentials (403) */
	ST_NOT_FOUND,      /* (404) */
	ST_CONFLICT,       /* state conflict, already exists, bad transition (409) */
	ST_UNPROCESSABLE,  /* well-formed but not acceptable: funds, reuse (422) */
	ST_TOO_LARGE,      /* over a size cap (413) */
	ST_UNSUPPORTED,    /* unsupported media type (415) */
	ST_LIMITED,        /* rate limited (429) */
	ST_UNIQUE,         /* store: a unique constraint was violated */
	ST_BUSY,           /* store: retryable (serialization failure, lock) */
	ST_UNAVAILABLE,    /* a dependency is down (503) */
	ST_INTERNAL,       /* a bug or an unexpected store error (500) */
	ST_RC_COUNT
};

/* Static text naming rc ("ok", "nomem", ...); never NULL. */
const char *st_rc_str(enum st_rc rc);

#endif

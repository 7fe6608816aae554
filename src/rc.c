/* rc.c — names of result codes, for logs and error messages. */
#include "rc.h"

#include "banned.h"

static const char *const rc_names[ST_RC_COUNT] = {
	[ST_OK] = "ok",
	[ST_NOMEM] = "out_of_memory",
	[ST_INVALID] = "invalid",
	[ST_UNAUTHORIZED] = "unauthorized",
	[ST_FORBIDDEN] = "forbidden",
	[ST_NOT_FOUND] = "not_found",
	[ST_CONFLICT] = "conflict",
	[ST_UNPROCESSABLE] = "unprocessable",
	[ST_TOO_LARGE] = "too_large",
	[ST_UNSUPPORTED] = "unsupported_media_type",
	[ST_LIMITED] = "rate_limited",
	[ST_UNIQUE] = "unique_violation",
	[ST_BUSY] = "busy",
	[ST_UNAVAILABLE] = "unavailable",
	[ST_INTERNAL] = "internal",
};

const char *st_rc_str(enum st_rc rc)
{
	if ((unsigned)rc >= ST_RC_COUNT || !rc_names[rc])
		return "unknown";
	return rc_names[rc];
}

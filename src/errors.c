/* errors.c — the catalogue of errors.def as a table, and the answers made
 * from its rows (errors.h). */
#include "errors.h"

#include "http.h"
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

/* What a bare result code answers (a handler that returned it unanswered). */
static const enum err_id rc_err[ST_RC_COUNT] = {
	[ST_OK] = ERR_INTERNAL,
	[ST_NOMEM] = ERR_RC_NOMEM,
	[ST_INVALID] = ERR_RC_INVALID,
	[ST_UNAUTHORIZED] = ERR_RC_UNAUTHORIZED,
	[ST_FORBIDDEN] = ERR_RC_FORBIDDEN,
	[ST_NOT_FOUND] = ERR_RC_NOT_FOUND,
	[ST_CONFLICT] = ERR_RC_CONFLICT,
	[ST_UNPROCESSABLE] = ERR_RC_UNPROCESSABLE,
	[ST_TOO_LARGE] = ERR_RC_TOO_LARGE,
	[ST_UNSUPPORTED] = ERR_RC_UNSUPPORTED,
	[ST_LIMITED] = ERR_RC_LIMITED,
	[ST_UNIQUE] = ERR_RC_UNIQUE,
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

static enum st_rc fill(struct resp *r, enum err_id e, const char *message, json_t *extra)
{
	const struct err_row *row = err_row(e);
	json_t *o = json_pack("{s:s, s:s}", "error", row->code, "message", message ? message : row->message);

	resp_release(r);
	if (o && row->field && json_object_set_new(o, "field", json_string(row->field))) {
		json_decref(o);
		o = NULL;
	}
	if (o && extra)
		json_object_update(o, extra);
	json_decref(extra);
	return resp_json(r, row->status, o);
}

enum st_rc resp_set_error(struct resp *r, enum err_id e, json_t *extra)
{
	return fill(r, e, NULL, extra);
}

enum st_rc unit_error(struct resp *r, enum err_id e, json_t *extra)
{
	fill(r, e, NULL, extra);
	return err_rc(e);
}

enum st_rc req_error(struct req_ctx *rq, enum err_id e, json_t *extra)
{
	fill(req_resp(rq), e, NULL, extra);
	return ST_OK;
}

enum st_rc req_error_msg(struct req_ctx *rq, enum err_id e, const char *message, json_t *extra)
{
	fill(req_resp(rq), e, message, extra);
	return ST_OK;
}

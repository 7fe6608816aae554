/* routes_console.c — the operator console and the API reference page,
 * served from the files built into the binary (console_assets.h).
 *
 *   GET /console            console/index.html
 *   GET /console/{asset}    console/<asset> (the page's scripts and styles)
 *   GET /api/docs           console/docs.html: the API reference, rendered in
 *                           the browser from GET /api/docs/openapi.json
 *
 * No authentication here: the files hold no data. The page asks for the
 * admin token and sends it only as a bearer header to the admin API.
 *
 * Every answer of these routes carries its own Content-Security-Policy
 * instead of the API's "default-src 'none'": scripts, styles and fetches
 * from this origin only; no inline script or style, no framing, no forms
 * posted anywhere, no plugins. Error code: not_found (404). */
#include <string.h>

#include "console_assets.h"
#include "errors.h"
#include "http.h"
#include "route_table.h"
#include "banned.h"

#define CONSOLE_CSP \
	"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " \
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static const struct console_asset *asset_named(const char *name)
{
	for (size_t i = 0; name && i < console_nassets; i++)
		if (!strcmp(console_assets[i].name, name))
			return &console_assets[i];
	return NULL;
}

static enum st_rc serve(struct req_ctx *rq, const char *name)
{
	const struct console_asset *a = asset_named(name);
	struct resp *resp = req_resp(rq);
	enum st_rc rc;

	if (!a)
		return req_error(rq, ERR_CONSOLE_FILE_NOT_FOUND, NULL);
	buf_reset(&resp->body);
	rc = buf_append(&resp->body, a->data, a->len);
	if (!rc)
		rc = resp_header(resp, "Content-Type", a->content_type);
	if (!rc)
		rc = resp_header(resp, "Content-Security-Policy", CONSOLE_CSP);
	if (rc)
		return rc;
	resp_ok_body(resp);
	return ST_OK;
}

enum st_rc route_console_index(struct req_ctx *rq)
{
	return serve(rq, "index.html");
}

enum st_rc route_console_asset(struct req_ctx *rq)
{
	return serve(rq, req_param(rq, "asset"));
}

enum st_rc route_api_docs(struct req_ctx *rq)
{
	return serve(rq, "docs.html");
}

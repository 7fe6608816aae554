/* http.h — the HTTP server (libmicrohttpd), and the request API handlers
 * use.
 *
 * The request pipeline is three modules (request.h says which owns what;
 * docs/internals/request.md walks one POST through them):
 *   http.c      the transport: connections, deadlines, framing and header
 *               checks, the request's life from first callback to
 *               completion; this header's http_start/http_stop;
 *   dispatch.c  the dispatcher: route flags, the handler, req_commit
 *               (dispatch.h: the accessors and req_commit handlers use);
 *   response.c  the response: resp_*, req_ok/req_error (a success answers
 *               its route's status, an error its errors.def row's),
 *               headers, sending (response.h).
 * A request's path: MHD thread -> req_ctx (capped body) -> route match ->
 * pre-checks (method, content type, size, auth, rate limit; no store
 * writes) -> JSON parse -> idempotency lookup (HIT replays without a write)
 * -> handler. Route files include this header and get all three APIs. */
#ifndef SETTLED_HTTP_H
#define SETTLED_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "dispatch.h"
#include "json_out.h"
#include "rc.h"
#include "response.h"
#include "route_match.h"
#include "store.h"

struct settled;
struct http;

/* Starts the server on cfg's listen address with routes (borrowed for the
 * server's life). *out is freed by http_stop. ST_INVALID (bad host),
 * ST_NOMEM, ST_UNAVAILABLE (cannot listen); err says which. */
enum st_rc http_start(struct settled *app, const struct route *routes, size_t nroutes,
		      struct http **out, struct buf *err);
uint16_t http_port(const struct http *h);
/* Stops accepting, lets in-flight requests finish (up to grace_ms), stops,
 * frees h. NULL: nothing. */
void http_stop(struct http *h, int64_t grace_ms);

#endif

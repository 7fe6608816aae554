/* routes_ops.c — health and metrics endpoints: what operators and load
 * balancers poll. Liveness says the process answers; readiness says its
 * dependencies do, naming the failing one. Also the built-in OpenAPI
 * document (openapi.h). */
#include <jansson.h>

#include "errors.h"
#include "http.h"
#include "openapi.h"
#include "rail.h"
#include "route_table.h"
#include "settled.h"
#include "banned.h"

enum st_rc route_healthz(struct req_ctx *rq)
{
	static const char ok[] = "{\"status\":\"ok\"}";

	return req_ok_text(rq, ok, sizeof(ok) - 1);
}

enum st_rc route_health_ready(struct req_ctx *rq)
{
	struct settled *app = req_app(rq);
	struct buf why = BUF_INIT(512);
	json_t *checks = json_object();
	json_t *failing = json_array();
	enum st_rc rc = store_ping(app->store, &why);
	bool ok = rc == ST_OK;

	json_object_set_new(checks, "store", json_pack("{s:s, s:s}", "status", ok ? "ok" : "unavailable",
						       "backend", app->store->ops->name));
	if (!ok) {
		json_object_set_new(json_object_get(checks, "store"), "error", json_string(why.ptr));
		json_array_append_new(failing, json_string("store"));
	}
	buf_release(&why);
	if (app->rl->ops->ping) {
		/* An external rate-limit store (Redis) is a dependency of its own. */
		struct buf rwhy = BUF_INIT(512);
		bool rl_ok = rl_ping(app->rl, &rwhy) == ST_OK;
		json_t *c = json_pack("{s:s}", "status", rl_ok ? "ok" : "unavailable");

		if (!rl_ok) {
			json_object_set_new(c, "error", json_string(rwhy.ptr));
			json_array_append_new(failing, json_string(app->rl->ops->name));
			ok = false;
		}
		json_object_set_new(checks, app->rl->ops->name, c);
		buf_release(&rwhy);
	}
	/* The rail is reported but never fails readiness: with every RPC
	 * provider down claims still record (and wait), and everything else
	 * works; taking the instance out of the load balancer would not help. */
	if (app->rail) {
		json_t *r = rail_health(app->rail);

		if (r)
			json_object_set_new(checks, "rail", r);
	}
	if (atomic_load(&app->stopping)) {
		ok = false;
		json_array_append_new(failing, json_string("shutting_down"));
	}
	if (!ok)
		return req_error(rq, ERR_NOT_READY, json_pack("{s:s, s:o, s:o}", "status", "unavailable",
							      "failing", failing, "checks", checks));
	json_decref(failing);
	return req_ok(rq, json_pack("{s:s, s:o}", "status", "ready", "checks", checks));
}

enum st_rc route_metrics(struct req_ctx *rq)
{
	struct resp *resp = req_resp(rq);
	enum st_rc rc;

	buf_reset(&resp->body);
	rc = metrics_render(req_app(rq)->metrics, &resp->body);
	if (rc)
		return rc;
	resp_ok_body(resp);
	return resp_header(resp, "Content-Type", METRICS_CONTENT_TYPE);
}

/* GET /api/docs/openapi.json: docs/openapi.json as the binary was built
 * with it (scripts/embed-openapi), byte for byte. */
enum st_rc route_openapi(struct req_ctx *rq)
{
	struct resp *resp = req_resp(rq);
	enum st_rc rc;

	buf_reset(&resp->body);
	rc = buf_append(&resp->body, settled_openapi_json, settled_openapi_json_len);
	if (rc)
		return rc;
	resp_ok_body(resp);
	return ST_OK;
}

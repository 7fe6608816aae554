/* response.c — the answer to a request: struct resp and its writers, the
 * success answers (the route's status), the error answers (a row of the
 * catalogue, errors.def), and the sending of an answer with the headers
 * every answer carries.
 *
 * Handlers fill rq->resp through resp_* and req_ok/req_error; nothing is
 * sent until the dispatcher (or, for a write, the store's resumption of the
 * connection) calls send_resp(), which adds, in one place: Content-Type,
 * X-Request-Id, the security headers (nosniff, DENY, no-referrer, a
 * default-src 'none' policy, no-store), traceparent, CORS, the RateLimit
 * headers of the decisions the dispatcher recorded, and X-Idempotency.
 * When even an error body cannot be allocated, a constant 503 goes out
 * instead, so a client never sees a connection dropped without an answer.
 *
 * Handlers name no HTTP status: a success answers its route's
 * (resp->ok_status, set by the dispatcher from route_match.h's ROUTE_CREATED),
 * an error its catalogue row's (errors.def). */
#include "response.h"

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmt.h"
#include "hex.h"
#include "idempotency.h"
#include "json_out.h"
#include "request.h"
#include "settled.h"
#include "trace.h"
#include "banned.h"

/* ---------------------------------------------------------------- resp */

void resp_init(struct resp *r)
{
	memset(r, 0, sizeof(*r));
	buf_init(&r->body, (size_t)64 << 20);
}

void resp_release(struct resp *r)
{
	int ok_status = r->ok_status;

	buf_release(&r->body);
	free(r->location);
	free(r->replay_body);
	for (size_t i = 0; i < r->nheaders; i++) {
		free(r->headers[i].name);
		free(r->headers[i].value);
	}
	resp_init(r);
	r->ok_status = ok_status;
}

/* What a success answers: the route's, 200 for a resp of no route. */
static int success_status(const struct resp *r)
{
	return r->ok_status ? r->ok_status : 200;
}

/* Sets status and a JSON body (steals the reference to body). */
static enum st_rc set_json(struct resp *r, int status, json_t *body)
{
	enum st_rc rc;

	if (!body)
		return ST_NOMEM;
	buf_reset(&r->body);
	rc = json_out(&r->body, body);
	json_decref(body);
	if (rc == ST_OK)
		r->status = status;
	return rc;
}

enum st_rc resp_ok(struct resp *r, json_t *body)
{
	return set_json(r, success_status(r), body);
}

void resp_object_begin(struct resp *r, struct json_writer *w)
{
	buf_reset(&r->body);
	jw_begin(w, &r->body);
}

enum st_rc resp_object_end(struct resp *r, struct json_writer *w)
{
	enum st_rc rc = jw_end(w);

	if (rc == ST_OK)
		r->status = success_status(r);
	return rc;
}

void resp_ok_body(struct resp *r)
{
	r->status = success_status(r);
}

enum st_rc resp_replay_json(struct resp *r, json_t *body)
{
	struct buf out = BUF_INIT((size_t)64 << 20);
	enum st_rc rc;
	char *text;

	if (!body)
		return ST_NOMEM;
	rc = json_out(&out, body);
	json_decref(body);
	text = rc ? NULL : buf_detach(&out, NULL);
	buf_release(&out);
	if (!text)
		return rc ? rc : ST_NOMEM;
	free(r->replay_body);
	r->replay_body = text;
	return ST_OK;
}

/* e's answer, message (NULL: the row's) and extra as response.h says. */
static enum st_rc set_error(struct resp *r, enum err_id e, const char *message, json_t *extra)
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
	return set_json(r, row->status, o);
}

enum st_rc resp_set_error(struct resp *r, enum err_id e, json_t *extra)
{
	return set_error(r, e, NULL, extra);
}

enum st_rc unit_error(struct resp *r, enum err_id e, json_t *extra)
{
	set_error(r, e, NULL, extra);
	return err_rc(e);
}

enum st_rc resp_header(struct resp *r, const char *name, const char *value)
{
	char *n, *v;

	if (r->nheaders == RESP_MAX_HEADERS)
		return ST_TOO_LARGE;
	n = strdup(name);
	v = strdup(value);
	if (!n || !v) {
		free(n);
		free(v);
		return ST_NOMEM;
	}
	r->headers[r->nheaders].name = n;
	r->headers[r->nheaders].value = v;
	r->nheaders++;
	return ST_OK;
}

enum st_rc resp_location(struct resp *r, const char *location)
{
	char *l = strdup(location);

	if (!l)
		return ST_NOMEM;
	free(r->location);
	r->location = l;
	return ST_OK;
}

enum st_rc req_ok(struct req_ctx *rq, json_t *body)
{
	if (resp_ok(&rq->resp, body))
		return req_error(rq, ERR_OUT_OF_MEMORY, NULL);
	return ST_OK;
}

enum st_rc req_ok_text(struct req_ctx *rq, const char *json, size_t len)
{
	buf_reset(&rq->resp.body);
	if (buf_append(&rq->resp.body, json, len))
		return req_error(rq, ERR_OUT_OF_MEMORY, NULL);
	resp_ok_body(&rq->resp);
	return ST_OK;
}

enum st_rc req_error(struct req_ctx *rq, enum err_id e, json_t *extra)
{
	set_error(&rq->resp, e, NULL, extra);
	return ST_OK;
}

enum st_rc req_error_msg(struct req_ctx *rq, enum err_id e, const char *message, json_t *extra)
{
	set_error(&rq->resp, e, message, extra);
	return ST_OK;
}

static bool ip_in_list(const char *ip, char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(ip, list[i]))
			return true;
	return false;
}


/* What each answer means: enum cors_answer in request.h. */
enum cors_answer cors_answer(const struct req_ctx *rq)
{
	const struct config *cfg = rq->h->app->cfg;
	const char *origin;

	if (!cfg->n_cors_origins)
		return CORS_OFF;
	if (ip_in_list("*", cfg->cors_origins, cfg->n_cors_origins))
		return CORS_ANY;
	origin = req_header(rq, "Origin");
	return origin && ip_in_list(origin, cfg->cors_origins, cfg->n_cors_origins) ? CORS_LISTED
										     : CORS_REFUSED;
}

/* ---------------------------------------------------------------- sending */

static bool resp_has_header(const struct resp *resp, const char *name)
{
	for (size_t i = 0; i < resp->nheaders; i++)
		if (!strcasecmp(resp->headers[i].name, name))
			return true;
	return false;
}

/* Whole seconds from ms, rounded up and at least 1: a client that waits
 * that long is not refused again, and a 429 never says 0. */
int64_t rl_secs(int64_t ms)
{
	int64_t s = ms > 0 ? (ms + 999) / 1000 : 0;

	return s < 1 ? 1 : s;
}

/* The ms until the reported quota resets: the full quota for an allowed
 * request; on a refusal the instant Retry-After names (draft-07 section 4:
 * reset and Retry-After reference the same point in time). */
static int64_t rl_reset_ms(const struct rl_decision *d)
{
	return d->allowed ? d->reset_ms : d->retry_after_ms;
}

/* Whether policy i goes into RateLimit-Policy: draft-07 section 3.5
 * allows no two items with the same limit, so of policies sharing a limit
 * only the reported one (else the first) is listed. */
static bool rl_listed(const struct req_ctx *rq, int i)
{
	for (int j = 0; j < rq->rl_n; j++)
		if (j != i && rq->rl_pol[j]->limit == rq->rl_pol[i]->limit &&
		    (j == rq->rl_shown || (i != rq->rl_shown && j < i)))
			return false;
	return true;
}

/* RateLimit headers, draft-ietf-httpapi-ratelimit-headers-07 style plus the
 * X- trio (docs/internals/ratelimit.md "Headers"):
 *   RateLimit-Policy: 5;w=3600;name="register_ip", 10;w=86400;name="register_wallet"
 *   X-RateLimit-Limit: 5
 * here, what the policies decide; per_request_values() the counts. */
static void add_rate_limit_policy(const struct req_ctx *rq, struct MHD_Response *r)
{
	const struct rl_decision *d = &rq->rl_dec[rq->rl_shown];
	/* Every response of a limited route carries these five headers, so
	 * they are put together with fmt_i64 rather than snprintf (fmt.h). */
	char pol[ROUTE_MAX_LIMITS * (2 * FMT_I64_LEN + RL_NAME_MAX + 16)];
	char v[FMT_I64_LEN];
	size_t off = 0;

	for (int i = 0; i < rq->rl_n; i++) {
		const struct rl_policy *p = rq->rl_pol[i];
		size_t name_len = strnlen(p->name, RL_NAME_MAX);

		if (!rl_listed(rq, i))
			continue;
		if (off)
			off += (size_t)(stpcpy(pol + off, ", ") - (pol + off));
		off += fmt_i64(pol + off, p->limit);
		off += (size_t)(stpcpy(pol + off, ";w=") - (pol + off));
		off += fmt_i64(pol + off, rl_secs(p->period_ms));
		off += (size_t)(stpcpy(pol + off, ";name=\"") - (pol + off));
		memcpy(pol + off, p->name, name_len);
		off += name_len;
		pol[off++] = '"';
	}
	pol[off] = '\0';
	MHD_add_response_header(r, "RateLimit-Policy", pol);
	fmt_i64(v, d->limit);
	MHD_add_response_header(r, "X-RateLimit-Limit", v);
}

/* The headers of every answer that are this request's own, after all the
 * others: X-Request-Id, traceparent and the rate-limit counts
 *   RateLimit: limit=5, remaining=4, reset=720
 *   X-RateLimit-Remaining: 4, X-RateLimit-Reset: <unix s>
 * Their values are made apart from the adding, so that a reused answer can
 * keep the ones it carries for comparing (struct resp_cache). Returns how
 * many the answer has (PRH_N with rate limits, else 2). */
static const char *const prh_names[PRH_N] = { "X-Request-Id", "traceparent", "RateLimit",
					      "X-RateLimit-Remaining", "X-RateLimit-Reset" };

static unsigned per_request_values(const struct req_ctx *rq, char v[PRH_N][PRH_VALUE_MAX])
{
	struct trace_ctx tc = { .flags = rq->trace_flags, .state = NULL };
	char traceparent[TRACE_CONTEXT_MAX];
	const struct rl_decision *d = &rq->rl_dec[rq->rl_shown];
	int64_t reset_ms;
	char *p;

	fmt_str(v[PRH_ID], PRH_VALUE_MAX, rq->request_id);
	memcpy(tc.trace_id, rq->trace_id, sizeof(tc.trace_id));
	memcpy(tc.span_id, rq->span_id, sizeof(tc.span_id));
	trace_ctx_format(&tc, traceparent); /* no tracestate: 55 bytes */
	fmt_str(v[PRH_TRACEPARENT], PRH_VALUE_MAX, traceparent);
	if (!rq->rl_n)
		return 2;
	reset_ms = rl_reset_ms(d);
	p = stpcpy(v[PRH_RATELIMIT], "limit=");
	p += fmt_i64(p, d->limit);
	p = stpcpy(p, ", remaining=");
	p += fmt_i64(p, d->remaining);
	p = stpcpy(p, ", reset=");
	fmt_i64(p, rl_secs(reset_ms));
	fmt_i64(v[PRH_REMAINING], d->remaining);
	/* The instant itself, rounded up: never before the quota is back. */
	fmt_i64(v[PRH_RESET], (rq->rl_now_ms + reset_ms + 999) / 1000);
	return PRH_N;
}

static void per_request_headers(const struct req_ctx *rq, struct MHD_Response *r)
{
	char v[PRH_N][PRH_VALUE_MAX];
	unsigned n = per_request_values(rq, v);

	for (unsigned i = 0; i < n; i++)
		MHD_add_response_header(r, prh_names[i], v[i]);
}

void add_common_headers(struct req_ctx *rq, struct MHD_Response *r)
{
	enum cors_answer cors = cors_answer(rq);

	if (!resp_has_header(&rq->resp, "Content-Type"))
		MHD_add_response_header(r, "Content-Type", "application/json");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "X-Frame-Options", "DENY");
	MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	/* The console's pages bring a policy of their own (routes_console.c). */
	if (!resp_has_header(&rq->resp, "Content-Security-Policy"))
		MHD_add_response_header(r, "Content-Security-Policy", "default-src 'none'");
	MHD_add_response_header(r, "Cache-Control", "no-store");
	if (cors == CORS_LISTED || cors == CORS_REFUSED)
		MHD_add_response_header(r, "Vary", "Origin");
	if (cors == CORS_LISTED || cors == CORS_ANY) {
		MHD_add_response_header(r, "Access-Control-Allow-Origin",
					cors == CORS_ANY ? "*" : req_header(rq, "Origin"));
		MHD_add_response_header(r, "Access-Control-Expose-Headers",
					"X-Request-Id, Location, Retry-After, X-Idempotency, "
					"Idempotent-Replayed, RateLimit, RateLimit-Policy, "
					"X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset");
	}
	if (rq->rl_n)
		add_rate_limit_policy(rq, r);
	per_request_headers(rq, r);
}

/* ---------------------------------------------------------------- reuse */

void resp_cache_release(struct resp_cache *c)
{
	if (c->r)
		MHD_destroy_response(c->r);
	c->r = NULL;
}

/* Whether rq's answer may be a connection's reusable one: its headers are
 * add_common_headers' and add_own_headers' Location and X-Idempotency
 * alone (no route header, no Connection: close), the same for every
 * request that has the same cache key (CORS not by Origin), and its body
 * and Location are small. */
static bool reusable(const struct req_ctx *rq, enum cors_answer cors)
{
	const struct resp *p = &rq->resp;

	return p->body.len <= RESP_CACHE_BODY_MAX && !p->nheaders &&
	       (!p->location || strlen(p->location) < RESP_CACHE_LOCATION_MAX) &&
	       (cors == CORS_OFF || cors == CORS_ANY) && !atomic_load(&rq->h->app->stopping);
}

static bool same_text(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

/* Whether c holds an answer whose headers other than per_request_headers'
 * and Location's value are the ones rq's would get, with rq's status and a
 * body of the same length (cache_reuse writes rq's over it). */
static bool cache_fits(const struct resp_cache *c, const struct req_ctx *rq, enum cors_answer cors)
{
	if (!c->r || c->status != rq->resp.status || c->cors != cors || c->rl_n != rq->rl_n ||
	    c->body_len != rq->resp.body.len || c->has_location != !!rq->resp.location ||
	    !same_text(c->idem_result, rq->idem_result))
		return false;
	if (rq->rl_n && (c->rl_shown != rq->rl_shown || c->rl_limit != rq->rl_dec[rq->rl_shown].limit))
		return false;
	for (int i = 0; i < rq->rl_n; i++)
		if (c->rl_pol[i] != rq->rl_pol[i])
			return false;
	return true;
}

/* A kept value that was cut would no longer find its header to drop. */
_Static_assert(3 * FMT_I64_LEN + 26 >= sizeof("limit=, remaining=, reset=") + 3 * (FMT_I64_LEN - 1),
	       "PRH_CAPS: room for the longest RateLimit value");

/* Where c keeps the value of per-request header i, and its room. */
static char *prh_slot(struct resp_cache *c, unsigned i, size_t *cap)
{
	static const size_t caps[PRH_N] = PRH_CAPS;
	size_t at = 0;

	for (unsigned k = 0; k < i; k++)
		at += caps[k];
	*cap = caps[i];
	return c->prh + at;
}

/* c's answer again, with rq's body and own headers: those whose value
 * changed are replaced (which moves them to the end; the order of
 * different fields carries no meaning, RFC 9110 section 5.3), found by the
 * value c kept. The body is written over the one c->r sends (the same
 * length: cache_fits); the connection's last answer has been sent. */
static void cache_reuse(struct resp_cache *c, const struct req_ctx *rq)
{
	char v[PRH_N][PRH_VALUE_MAX];
	unsigned n = per_request_values(rq, v);

	if (c->body_len)
		memcpy(c->body, rq->resp.body.ptr, c->body_len);
	if (c->has_location && strcmp(c->location, rq->resp.location)) {
		/* After a failed add c kept "": nothing to drop. */
		MHD_del_response_header(c->r, "Location", c->location);
		if (MHD_add_response_header(c->r, "Location", rq->resp.location) == MHD_YES)
			fmt_str(c->location, sizeof(c->location), rq->resp.location); /* fits: reusable() */
		else
			c->location[0] = '\0';
	}

	for (unsigned i = 0; i < n; i++) {
		size_t cap;
		char *kept = prh_slot(c, i, &cap);

		if (!strcmp(kept, v[i]))
			continue;
		/* After a failed add c kept "": nothing to drop. */
		MHD_del_response_header(c->r, prh_names[i], kept);
		if (MHD_add_response_header(c->r, prh_names[i], v[i]) == MHD_YES)
			fmt_str(kept, cap, v[i]); /* fits: PRH_CAPS */
		else
			kept[0] = '\0';
	}
}

/* A new answer for c, its body rq's in c->body (NULL only without
 * memory); c's last answer is dropped first. */
static struct MHD_Response *cache_response(struct resp_cache *c, const struct req_ctx *rq)
{
	resp_cache_release(c);
	c->body_len = rq->resp.body.len;
	if (c->body_len)
		memcpy(c->body, rq->resp.body.ptr, c->body_len);
	return MHD_create_response_from_buffer(c->body_len, c->body, MHD_RESPMEM_PERSISTENT);
}

/* Makes r (cache_response's, one reference handed over) c's answer, keyed
 * as rq's. */
static void cache_keep(struct resp_cache *c, struct MHD_Response *r, const struct req_ctx *rq,
		       enum cors_answer cors)
{
	c->r = r;
	c->status = rq->resp.status;
	c->cors = cors;
	c->rl_n = rq->rl_n;
	c->rl_shown = rq->rl_shown;
	c->rl_limit = rq->rl_n ? rq->rl_dec[rq->rl_shown].limit : 0;
	for (int i = 0; i < rq->rl_n; i++)
		c->rl_pol[i] = rq->rl_pol[i];
	c->idem_result = rq->idem_result;
	c->has_location = rq->resp.location != NULL;
	/* What add_own_headers put on r (fits: reusable()). */
	fmt_str(c->location, sizeof(c->location), c->has_location ? rq->resp.location : "");
	{
		char v[PRH_N][PRH_VALUE_MAX];
		unsigned n = per_request_values(rq, v); /* what add_common_headers put on r */

		for (unsigned i = 0; i < n; i++) {
			size_t cap;
			char *kept = prh_slot(c, i, &cap);

			fmt_str(kept, cap, v[i]);
		}
	}
}

/* The answer when memory for the request's own answer could not be had: a
 * constant body handed to libmicrohttpd as is (MHD_RESPMEM_PERSISTENT), so
 * it needs no allocation of ours. A client sees a 503 it can retry, never a
 * connection dropped without an answer. */
static const char oom_body[] =
	"{\"error\":\"out_of_memory\",\"message\":\"the server is short of memory; retry\"}";

static struct MHD_Response *oom_response(void)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(sizeof(oom_body) - 1, (void *)oom_body,
								  MHD_RESPMEM_PERSISTENT);

	if (r)
		MHD_add_response_header(r, "Retry-After", "1");
	return r;
}

/* Before a req_ctx exists: the security headers of every answer, and a
 * request id made on the stack. */
enum MHD_Result answer_oom(struct http *h, struct MHD_Connection *conn)
{
	struct MHD_Response *r = oom_response();
	unsigned char raw[16];
	char id[2 * sizeof(raw) + 1];
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	random_bytes(&h->app->rand, raw, sizeof(raw));
	hex_encode(raw, sizeof(raw), id);
	MHD_add_response_header(r, "Content-Type", "application/json");
	MHD_add_response_header(r, "X-Request-Id", id);
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "X-Frame-Options", "DENY");
	MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(r, "Content-Security-Policy", "default-src 'none'");
	MHD_add_response_header(r, "Cache-Control", "no-store");
	ret = MHD_queue_response(conn, 503, r);
	MHD_destroy_response(r);
	return ret;
}

/* The headers of rq's answer after add_common_headers': Location, the
 * route's own, X-Idempotency, and Connection: close while stopping. */
static void add_own_headers(struct req_ctx *rq, struct MHD_Response *r)
{
	if (rq->resp.location)
		MHD_add_response_header(r, "Location", rq->resp.location);
	for (size_t i = 0; i < rq->resp.nheaders; i++)
		MHD_add_response_header(r, rq->resp.headers[i].name, rq->resp.headers[i].value);
	if (rq->idem_result) {
		MHD_add_response_header(r, "X-Idempotency", rq->idem_result);
		if (!strcmp(rq->idem_result, "HIT"))
			MHD_add_response_header(r, "Idempotent-Replayed", "true");
	}
	if (atomic_load(&rq->h->app->stopping))
		MHD_add_response_header(r, "Connection", "close");
}

enum MHD_Result send_resp(struct req_ctx *rq)
{
	struct MHD_Response *r;
	struct resp_cache *cache = NULL;
	enum cors_answer cors = CORS_OFF;
	enum MHD_Result ret;

	/* Unmark the key before the answer leaves: a client that has seen it
	 * and retries at once must find the stored record, not "in use". */
	if (rq->idem_running) {
		idem_end(rq->h->app->idem, rq->idem_scope, rq->idem_key);
		rq->idem_running = false;
	}

	if (!rq->resp.status)
		resp_set_error(&rq->resp, ERR_NO_ANSWER, NULL);
	if (!rq->resp.status || (rq->resp.status >= 400 && !rq->resp.body.len)) {
		/* Even the error answer could not be built. */
		resp_release(&rq->resp);
		rq->resp.status = 503;
		r = oom_response();
	} else {
		cors = cors_answer(rq);
		cache = reusable(rq, cors) ? req_conn_cache(rq) : NULL;
		if (cache && cache_fits(cache, rq, cors)) {
			/* The connection's last answer again: only this
			 * request's own headers change. */
			cache_reuse(cache, rq);
			ret = MHD_queue_response(rq->conn, (unsigned)rq->resp.status, cache->r);
			rq->state = RQ_SENT;
			return ret;
		}
		r = cache ? cache_response(cache, rq)
			  : MHD_create_response_from_buffer(rq->resp.body.len, rq->resp.body.ptr,
							    MHD_RESPMEM_MUST_COPY);
	}
	if (!r)
		return MHD_NO;
	add_common_headers(rq, r);
	add_own_headers(rq, r);
	if (cache) {
		/* Kept for the next answer of the connection. */
		cache_keep(cache, r, rq, cors);
		ret = MHD_queue_response(rq->conn, (unsigned)rq->resp.status, r);
		rq->state = RQ_SENT;
		return ret;
	}
	ret = MHD_queue_response(rq->conn, (unsigned)rq->resp.status, r);
	MHD_destroy_response(r);
	rq->state = RQ_SENT;
	return ret;
}

enum MHD_Result fail_now(struct req_ctx *rq, enum err_id e)
{
	req_error(rq, e, NULL);
	return send_resp(rq);
}

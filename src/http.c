/* http.c — the HTTP server on libmicrohttpd, and the request pipeline.
 *
 * libmicrohttpd runs its own thread pool with epoll (one thread per core by
 * default). A request's path through this file:
 *   0. from accept until a request has fully arrived, the connection's
 *      deadline runs (SETTLED_CONN_TIMEOUT, reaper.h): slowloris headers and
 *      dribbled bodies are cut off; it is disarmed while the request is
 *      handled and re-armed when the answer is done;
 *   1. first callback: req_ctx created, request id and trace context set,
 *      ambiguous framing (smuggling: docs/internals/http-framing.md) and
 *      header bytes that are no token / not UTF-8 refused (400,
 *      connection closed), route matched
 *      (404/405/OPTIONS answered here), Content-Length checked against
 *      SETTLED_MAX_BODY (413 before the body is read);
 *   2. body callbacks: bytes appended to a capped buf (an over-long chunked
 *      body is discarded and answered 413 at its end);
 *   3. last callback: content type (415), auth (401/403), JSON parse (400
 *      with line and column), rate limits (429), Idempotency-Key checks,
 *      replay of a finished key from a read connection (no write), then the
 *      handler. A handler that writes calls req_commit(): the connection is
 *      suspended and the unit queued on the store; the store's thread
 *      resumes it once the unit is durable, and libmicrohttpd calls us a
 *      fourth time to send the answer.
 *   4. completion callback: metrics and the request's log line, then the
 *      req_ctx and everything hanging off it are freed.
 *
 * Only this file knows HTTP status codes (http_status_of). */
#include "http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apikey.h"
#include "client_addr.h"
#include "fmt.h"
#include "hdr_layout.h"
#include "idempotency.h"
#include "json_out.h"
#include "log.h"
#include "metrics.h"
#include "reaper.h"
#include "settled.h"
#include "trace.h"
#include "validate.h"
#include "banned.h"

/* libmicrohttpd cannot queue a response while a body is still arriving, so
 * an over-long chunked body is read and dropped until it ends, then answered
 * 413; one that goes on past this many bytes is cut off without an answer. */
#define BODY_DISCARD_MAX ((size_t)8 << 20)

/* libmicrohttpd's per-connection pool holds the request line, headers and
 * our response headers; bodies live in our own capped buf. Its 32 KiB
 * default costs ~320 MB at 10,000 connections; 8 KiB still takes ~6 KiB of
 * request headers (over that: 431) and keeps 10,000 connections near
 * 100 MB. */
#define HTTP_CONN_MEMORY (8 * 1024)

struct http {
	struct MHD_Daemon *daemon;
	struct settled *app;
	const struct route *routes;
	size_t nroutes;
	uint16_t port;
	atomic_int inflight;
	struct reaper *reaper;  /* request deadline (reaper.h); NULL: none */
	bool layout_checks;     /* the libmicrohttpd whose layout hdr_layout.h knows */
	char oom_marker;        /* its address marks a request answered for want of memory */
};

enum rq_state { RQ_NEW = 0, RQ_BODY, RQ_WAITING, RQ_READY, RQ_SENT };

struct rq_alloc {
	struct rq_alloc *next;
	max_align_t data[];
};

/* One query argument, name and value percent-decoded (route_decode);
 * value NULL for "?flag". All req_alloc'd. */
struct query_arg {
	struct query_arg *next;
	const char *name, *value;
};

struct req_ctx {
	struct http *h;
	struct MHD_Connection *conn;
	enum rq_state state;
	const char *method;
	const char *url;                /* path as sent (percent-encoded), borrowed from MHD */
	char *path;                     /* url percent-decoded (req_alloc'd): the concrete path */
	struct query_arg *query;        /* query arguments, decoded, in arrival order */
	const struct route *route;
	struct route_params params;
	char *param_copies[ROUTE_MAX_PARAMS];
	char request_id[REQUEST_ID_MAX + 1];
	char trace_id[33];
	char span_id[17];
	uint8_t trace_flags;
	/* tracing (trace.h): the caller's span ("" for a new trace), its
	 * validated tracestate (borrowed from MHD, NULL: none), the context
	 * write units hand to the jobs they enqueue (req_alloc'd), and wall
	 * clock times for the spans (0 when tracing is off) */
	char parent_span_id[17];
	const char *tracestate;
	char *trace_context;
	int64_t start_ns, submit_ns;
	char client_ip[CLIENT_ADDR_LEN];
	char client_rl_key[CLIENT_ADDR_LEN]; /* client_ip as per-address limits key it (IPv6: /64) */
	const char *client_id;
	bool verifying;                 /* ROUTE_SIGNED: the handler's signature pass */
	struct buf body;
	bool body_too_large;        /* the body is being dropped: over the cap, or ... */
	bool body_nomem;            /* ... no memory to keep it (a 503, not a 413) */
	size_t discarded;
	json_t *json;
	struct resp resp;
	struct timespec started;
	int64_t now_ms;
	struct rq_alloc *allocs;

	/* idempotency */
	const char *idem_key;
	char *idem_scope;
	char fingerprint[IDEM_FINGERPRINT_LEN + 1];
	bool idem_running;          /* holds the in-memory running mark */
	const char *idem_result;    /* "HIT" / "MISS" for X-Idempotency */

	/* write unit */
	req_unit_fn *unit;
	void *unit_arg;
	enum st_rc handler_rc;      /* what the handler's unit returned */

	/* rate limits: the policies decided, in route order, and which one the
	 * headers report (the refusing one, else the most restrictive) */
	const struct rl_policy *rl_pol[ROUTE_MAX_LIMITS + 1]; /* + the failed-authentication policy */
	struct rl_decision rl_dec[ROUTE_MAX_LIMITS + 1];
	int rl_n;                   /* 0: no RateLimit headers */
	int rl_shown;
	int64_t rl_now_ms;          /* the clock the decisions were taken at */
};

/* ---------------------------------------------------------------- statuses */

static const int rc_status[ST_RC_COUNT] = {
	[ST_OK] = 200,
	[ST_NOMEM] = 503,
	[ST_INVALID] = 400,
	[ST_UNAUTHORIZED] = 401,
	[ST_FORBIDDEN] = 403,
	[ST_NOT_FOUND] = 404,
	[ST_CONFLICT] = 409,
	[ST_UNPROCESSABLE] = 422,
	[ST_TOO_LARGE] = 413,
	[ST_UNSUPPORTED] = 415,
	[ST_LIMITED] = 429,
	[ST_UNIQUE] = 409,
	[ST_BUSY] = 503,
	[ST_UNAVAILABLE] = 503,
	[ST_INTERNAL] = 500,
};

int http_status_of(enum st_rc rc)
{
	if ((unsigned)rc >= ST_RC_COUNT || !rc_status[rc])
		return 500;
	return rc_status[rc];
}

/* ---------------------------------------------------------------- resp */

static void resp_init(struct resp *r)
{
	memset(r, 0, sizeof(*r));
	buf_init(&r->body, (size_t)64 << 20);
}

void resp_release(struct resp *r)
{
	buf_release(&r->body);
	free(r->location);
	free(r->replay_body);
	for (size_t i = 0; i < r->nheaders; i++) {
		free(r->headers[i].name);
		free(r->headers[i].value);
	}
	resp_init(r);
}

enum st_rc resp_json(struct resp *r, int status, json_t *body)
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

void resp_object_begin(struct resp *r, struct json_writer *w)
{
	buf_reset(&r->body);
	jw_begin(w, &r->body);
}

enum st_rc resp_object_end(struct resp *r, struct json_writer *w, int status)
{
	enum st_rc rc = jw_end(w);

	if (rc == ST_OK)
		r->status = status;
	return rc;
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

enum st_rc resp_error(struct resp *r, enum st_rc rc, const char *code, const char *message,
		      json_t *extra)
{
	json_t *o = json_pack("{s:s, s:s}", "error", code, "message", message);

	if (o && extra)
		json_object_update(o, extra);
	json_decref(extra);
	return resp_json(r, http_status_of(rc), o);
}

enum st_rc unit_fail(struct resp *r, enum st_rc rc, const char *code, const char *message,
		     json_t *extra)
{
	resp_release(r);
	resp_error(r, rc, code, message, extra);
	return rc;
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

/* ---------------------------------------------------------------- accessors */

struct settled *req_app(const struct req_ctx *rq) { return rq->h->app; }
const char *req_method(const struct req_ctx *rq) { return rq->method; }
const char *req_route(const struct req_ctx *rq) { return rq->route ? rq->route->path : "unmatched"; }
const char *req_id(const struct req_ctx *rq) { return rq->request_id; }
const char *req_trace_id(const struct req_ctx *rq) { return rq->trace_id; }
const char *req_client_ip(const struct req_ctx *rq) { return rq->client_ip; }
bool req_verifying(const struct req_ctx *rq) { return rq->verifying; }
const char *req_client_id(const struct req_ctx *rq) { return rq->client_id; }
json_t *req_json(const struct req_ctx *rq) { return rq->json; }
int64_t req_now_ms(const struct req_ctx *rq) { return rq->now_ms; }
struct resp *req_resp(struct req_ctx *rq) { return &rq->resp; }

const char *req_header(const struct req_ctx *rq, const char *name)
{
	return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

const char *req_query(const struct req_ctx *rq, const char *name)
{
	/* Names compare without case, as libmicrohttpd's lookup did. */
	for (const struct query_arg *q = rq->query; q; q = q->next)
		if (!strcasecmp(q->name, name))
			return q->value;
	return NULL;
}

const char *req_param(const struct req_ctx *rq, const char *name)
{
	for (size_t i = 0; i < rq->params.n; i++) {
		if (strlen(name) == rq->params.p[i].name_len &&
		    !memcmp(name, rq->params.p[i].name, rq->params.p[i].name_len))
			return rq->param_copies[i];
	}
	return NULL;
}

const char *req_body(const struct req_ctx *rq, size_t *len)
{
	if (len)
		*len = rq->body.len;
	return rq->body.ptr;
}

void *req_alloc(struct req_ctx *rq, size_t size)
{
	struct rq_alloc *a = calloc(1, sizeof(*a) + size);

	if (!a)
		return NULL;
	a->next = rq->allocs;
	rq->allocs = a;
	return a->data;
}

enum st_rc req_reply(struct req_ctx *rq, int status, json_t *body)
{
	if (resp_json(&rq->resp, status, body))
		return req_fail(rq, ST_NOMEM, "out_of_memory", "the server is out of memory");
	return ST_OK;
}

enum st_rc req_reply_text(struct req_ctx *rq, int status, const char *json, size_t len)
{
	buf_reset(&rq->resp.body);
	if (buf_append(&rq->resp.body, json, len))
		return req_fail(rq, ST_NOMEM, "out_of_memory", "the server is out of memory");
	rq->resp.status = status;
	return ST_OK;
}

enum st_rc req_fail(struct req_ctx *rq, enum st_rc rc, const char *code, const char *message)
{
	resp_release(&rq->resp);
	resp_error(&rq->resp, rc, code, message, NULL);
	return ST_OK;
}

enum st_rc req_fail_field(struct req_ctx *rq, enum st_rc rc, const char *code,
			  const char *message, const char *field)
{
	resp_release(&rq->resp);
	resp_error(&rq->resp, rc, code, message, json_pack("{s:s}", "field", field));
	return ST_OK;
}

/* ---------------------------------------------------------------- helpers */

/* Fills raw with random bytes from the server's pool (randpool.h). The
 * CSPRNG only fails when the OS has no entropy source at all; ids then only
 * need to be unique-ish, not secret. */
static void random_bytes(struct randpool *pool, unsigned char *raw, size_t n)
{
	if (randpool_bytes(pool, raw, n)) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		for (size_t i = 0; i < n; i++)
			raw[i] = (unsigned char)((uint64_t)ts.tv_nsec >> (i % 8 * 8)) ^ (unsigned char)i;
	}
}

static double elapsed_s(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Case-insensitive check that a Content-Type is JSON: "application/json"
 * with optional parameters, or a "+json" structured suffix. */
static bool content_type_is_json(const char *ct)
{
	size_t n = strcspn(ct, ";");

	while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
		n--;
	if (n == 16 && !strncasecmp(ct, "application/json", 16))
		return true;
	return n > 17 && !strncasecmp(ct, "application/", 12) && !strncasecmp(ct + n - 5, "+json", 5);
}

static bool ip_in_list(const char *ip, char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(ip, list[i]))
			return true;
	return false;
}

/* The X-Forwarded-For field lines in order; only the last
 * CLIENT_XFF_MAX_LINES are kept (client_addr.h). */
struct xff_lines {
	const char *v[CLIENT_XFF_MAX_LINES];
	size_t n;
};

static enum MHD_Result xff_collect(void *cls, enum MHD_ValueKind kind, const char *key,
				   const char *value)
{
	struct xff_lines *x = cls;

	(void)kind;
	if (!key || !value || strcasecmp(key, "X-Forwarded-For"))
		return MHD_YES;
	if (x->n == CLIENT_XFF_MAX_LINES) {
		memmove(x->v, x->v + 1, (CLIENT_XFF_MAX_LINES - 1) * sizeof(x->v[0]));
		x->n--;
	}
	x->v[x->n++] = value;
	return MHD_YES;
}

static void resolve_client_ip(struct req_ctx *rq)
{
	const struct config *cfg = rq->h->app->cfg;
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	struct xff_lines x = { .n = 0 };

	/* The header lines only matter behind a trusted proxy. */
	if (cfg->n_trust_proxy)
		MHD_get_connection_values(rq->conn, MHD_HEADER_KIND, xff_collect, &x);
	client_addr_resolve(ci ? ci->client_addr : NULL, x.v, x.n,
			    (const char *const *)cfg->trust_proxy, cfg->n_trust_proxy, rq->client_ip);
	client_addr_rl_key(rq->client_ip, rq->client_rl_key);
}

/* How a response answers CORS (SETTLED_CORS_ORIGINS):
 *   CORS_OFF      no list: no CORS headers, nothing depends on Origin;
 *   CORS_ANY      "*" in the list: "Access-Control-Allow-Origin: *" on
 *                 every response, whatever the Origin, so nothing depends
 *                 on it either (no Vary). Never with credentials: settled
 *                 sends no Access-Control-Allow-Credentials at all, and
 *                 browsers refuse "*" with credentialed requests anyway;
 *   CORS_LISTED / CORS_REFUSED   a list of origins: the answer depends on
 *                 the request's Origin, so every response (also one to a
 *                 request without Origin) carries "Vary: Origin" and a
 *                 cache never serves one origin's answer to another. */
enum cors_answer { CORS_OFF, CORS_ANY, CORS_LISTED, CORS_REFUSED };

static enum cors_answer cors_answer(const struct req_ctx *rq)
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

/* Constant-time token check: both sides are hashed first so that neither
 * the comparison time nor an early length mismatch reveals anything. */
static bool token_equal(const char *given, const char *expected)
{
	unsigned char a[32], b[32];
	unsigned int la = 0, lb = 0;

	if (!EVP_Digest(given, strlen(given), a, &la, EVP_sha256(), NULL) ||
	    !EVP_Digest(expected, strlen(expected), b, &lb, EVP_sha256(), NULL))
		return false;
	return CRYPTO_memcmp(a, b, sizeof(a)) == 0;
}

static const char *bearer_token(const struct req_ctx *rq)
{
	const char *auth = req_header(rq, "Authorization");

	if (!auth || strncasecmp(auth, "Bearer ", 7))
		return NULL;
	auth += 7;
	while (*auth == ' ')
		auth++;
	return *auth ? auth : NULL;
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
static int64_t rl_secs(int64_t ms)
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
 *   RateLimit: limit=5, remaining=4, reset=720
 *   X-RateLimit-Limit: 5, X-RateLimit-Remaining: 4, X-RateLimit-Reset: <unix s> */
static void add_rate_limit_headers(const struct req_ctx *rq, struct MHD_Response *r)
{
	const struct rl_decision *d = &rq->rl_dec[rq->rl_shown];
	int64_t reset_ms = rl_reset_ms(d);
	/* Every response of a limited route carries these five headers, so
	 * they are put together with fmt_i64 rather than snprintf (fmt.h). */
	char pol[ROUTE_MAX_LIMITS * (2 * FMT_I64_LEN + RL_NAME_MAX + 16)];
	char v[3 * FMT_I64_LEN + 32];
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
	off = (size_t)(stpcpy(v, "limit=") - v);
	off += fmt_i64(v + off, d->limit);
	off += (size_t)(stpcpy(v + off, ", remaining=") - (v + off));
	off += fmt_i64(v + off, d->remaining);
	off += (size_t)(stpcpy(v + off, ", reset=") - (v + off));
	fmt_i64(v + off, rl_secs(reset_ms));
	MHD_add_response_header(r, "RateLimit", v);
	fmt_i64(v, d->limit);
	MHD_add_response_header(r, "X-RateLimit-Limit", v);
	fmt_i64(v, d->remaining);
	MHD_add_response_header(r, "X-RateLimit-Remaining", v);
	/* The instant itself, rounded up: never before the quota is back. */
	fmt_i64(v, (rq->rl_now_ms + reset_ms + 999) / 1000);
	MHD_add_response_header(r, "X-RateLimit-Reset", v);
}

static void add_common_headers(struct req_ctx *rq, struct MHD_Response *r)
{
	enum cors_answer cors = cors_answer(rq);
	struct trace_ctx tc = { .flags = rq->trace_flags, .state = NULL };
	char traceparent[TRACE_CONTEXT_MAX];

	if (!resp_has_header(&rq->resp, "Content-Type"))
		MHD_add_response_header(r, "Content-Type", "application/json");
	MHD_add_response_header(r, "X-Request-Id", rq->request_id);
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "X-Frame-Options", "DENY");
	MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	/* The console's pages bring a policy of their own (routes_console.c). */
	if (!resp_has_header(&rq->resp, "Content-Security-Policy"))
		MHD_add_response_header(r, "Content-Security-Policy", "default-src 'none'");
	MHD_add_response_header(r, "Cache-Control", "no-store");
	memcpy(tc.trace_id, rq->trace_id, sizeof(tc.trace_id));
	memcpy(tc.span_id, rq->span_id, sizeof(tc.span_id));
	trace_ctx_format(&tc, traceparent);
	MHD_add_response_header(r, "traceparent", traceparent);
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
		add_rate_limit_headers(rq, r);
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
static enum MHD_Result answer_oom(struct http *h, struct MHD_Connection *conn)
{
	struct MHD_Response *r = oom_response();
	unsigned char raw[16];
	char id[2 * sizeof(raw) + 1];
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	random_bytes(&h->app->rand, raw, sizeof(raw));
	fmt_hex(raw, sizeof(raw), id);
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

static enum MHD_Result send_resp(struct req_ctx *rq)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	/* Unmark the key before the answer leaves: a client that has seen it
	 * and retries at once must find the stored record, not "in use". */
	if (rq->idem_running) {
		idem_end(rq->h->app->idem, rq->idem_scope, rq->idem_key);
		rq->idem_running = false;
	}

	if (!rq->resp.status)
		resp_error(&rq->resp, ST_INTERNAL, "internal_error", "the handler gave no answer", NULL);
	if (!rq->resp.status || (rq->resp.status >= 400 && !rq->resp.body.len)) {
		/* Even the error answer could not be built. */
		resp_release(&rq->resp);
		rq->resp.status = 503;
		r = oom_response();
	} else {
		r = MHD_create_response_from_buffer(rq->resp.body.len, rq->resp.body.ptr,
						    MHD_RESPMEM_MUST_COPY);
	}
	if (!r)
		return MHD_NO;
	add_common_headers(rq, r);
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
	ret = MHD_queue_response(rq->conn, (unsigned)rq->resp.status, r);
	MHD_destroy_response(r);
	rq->state = RQ_SENT;
	return ret;
}

static enum MHD_Result fail_now(struct req_ctx *rq, enum st_rc rc, const char *code, const char *msg)
{
	req_fail(rq, rc, code, msg);
	return send_resp(rq);
}

/* ---------------------------------------------------------------- rate limits */

/* Whether decision a is more restrictive than b: fewer requests left, or as
 * few but a later reset (a refusal is always reported, see below). */
static bool rl_tighter(const struct rl_decision *a, const struct rl_decision *b)
{
	return a->remaining < b->remaining ||
	       (a->remaining == b->remaining && a->reset_ms > b->reset_ms);
}

/* Records the decision d of p for the RateLimit headers. */
static void rl_record(struct req_ctx *rq, const struct rl_policy *p, const struct rl_decision *d)
{
	if (rq->rl_n == ROUTE_MAX_LIMITS + 1)
		return;
	rq->rl_pol[rq->rl_n] = p;
	rq->rl_dec[rq->rl_n] = *d;
	if (!rq->rl_n || !d->allowed || rl_tighter(d, &rq->rl_dec[rq->rl_shown]))
		rq->rl_shown = rq->rl_n;
	rq->rl_n++;
}

/* Fills the 429 of p's refusal d (recorded already: the headers report it). */
static void rl_refuse(struct req_ctx *rq, const struct rl_policy *p, const struct rl_decision *d)
{
	struct settled *app = rq->h->app;
	const char *const lv[] = { p->name };
	int64_t secs = rl_secs(d->retry_after_ms);
	char ra[32];

	metrics_inc(app->m.rate_limited, lv);
	snprintf(ra, sizeof(ra), "%lld", (long long)secs);
	resp_release(&rq->resp);
	resp_error(&rq->resp, ST_LIMITED, "rate_limited", "too many requests; slow down",
		   json_pack("{s:I, s:s}", "retry_after", (json_int_t)secs, "policy", p->name));
	resp_header(&rq->resp, "Retry-After", ra);
}

/* The backend could not decide p: counts it and applies p's fail mode.
 * True when the request goes on (fail open), else the 503 is filled. */
static bool rl_backend_down(struct req_ctx *rq, const struct rl_policy *p)
{
	const char *const lv[] = { p->name, p->fail_open ? "open" : "closed" };

	metrics_inc(rq->h->app->m.rl_backend_errors, lv);
	if (p->fail_open)
		return true;
	req_fail(rq, ST_UNAVAILABLE, "rate_limiter_unavailable",
		 "the rate limiter is unavailable; try again later");
	return false;
}

/* Applies the route's policies whose key is known now: with body_keys
 * false those keyed by address, API key or provider (before the body is
 * parsed, so malformed requests count too), with body_keys true those
 * keyed by a body field. Records every decision for the headers; on a
 * refusal fills the 429 (which reports the refusing policy) and returns
 * false. Runs before the idempotency lookup. */
static bool apply_rate_limits(struct req_ctx *rq, bool body_keys)
{
	struct settled *app = rq->h->app;

	for (int i = 0; i < ROUTE_MAX_LIMITS; i++) {
		enum rl_key_source src = rq->route->limits[i].key;
		const struct rl_policy *p;
		const char *key = NULL;
		char wallet[WALLET_LEN + 1];
		struct rl_decision d;
		enum st_rc rc;

		if (src == RL_KEY_NONE || (src == RL_KEY_BODY_WALLET) != body_keys)
			continue;
		p = &app->policies[rq->route->limits[i].policy];
		if (p->limit <= 0)
			continue; /* disabled: no decision, no headers */
		switch (src) {
		case RL_KEY_CLIENT_IP: key = rq->client_rl_key; break;
		case RL_KEY_API_KEY: key = rq->client_id; break;
		case RL_KEY_BODY_WALLET: {
			json_t *w = rq->json ? json_object_get(rq->json, "wallet") : NULL;

			/* An invalid wallet is refused later by the handler; only
			 * canonical wallets count, so case games cannot dodge it. */
			if (!json_is_string(w) ||
			    parse_wallet(json_string_value(w), json_string_length(w), wallet))
				continue;
			key = wallet;
			break;
		}
		default: continue;
		}
		if (!rq->rl_n)
			rq->rl_now_ms = settled_now_ms(app); /* now, not when the headers came */
		rc = rl_check(app->rl, p, key, strlen(key), rq->rl_now_ms, &d);
		if (rc) {
			if (rl_backend_down(rq, p))
				continue;
			return false;
		}
		rl_record(rq, p, &d);
		if (!d.allowed) {
			rl_refuse(rq, p, &d);
			return false;
		}
	}
	return true;
}

/* ---------------------------------------------------------------- failed authentications */

/* Failed authentications per client address (RLP_AUTH_FAIL, keyed like
 * every per-address limit; docs/internals/ratelimit.md "Authentication
 * failures"). Only failures are charged, so clients that authenticate are
 * never slowed; but the budget is looked at (a peek, charging nothing)
 * before a guessable credential is checked: an address past it is
 * answered 429 whatever it sends, its right guesses included, else a
 * guesser would just read 429 as "wrong" and 200 as "right". */
static void auth_fail_count(struct req_ctx *rq, const char *result)
{
	const char *const lv[] = { rq->route->path, result };

	metrics_inc(rq->h->app->m.auth_failures, lv);
}

/* Before the credential: false with the 429 (or 503, backend down and
 * fail closed) filled when the address is past its budget. */
static bool auth_fail_gate(struct req_ctx *rq)
{
	struct settled *app = rq->h->app;
	const struct rl_policy *p = &app->policies[RLP_AUTH_FAIL];
	struct rl_decision d;

	if (p->limit <= 0)
		return true;
	rq->rl_now_ms = settled_now_ms(app);
	if (rl_peek(app->rl, p, rq->client_rl_key, strlen(rq->client_rl_key), rq->rl_now_ms, &d))
		return rl_backend_down(rq, p);
	if (d.allowed)
		return true;
	auth_fail_count(rq, "limited");
	rl_record(rq, p, &d);
	rl_refuse(rq, p, &d);
	return false;
}

/* After a 401/403: charges the failure. The answer keeps its status and
 * gains the policy's headers, or, if this failure is past the budget
 * (concurrent failures that all passed the gate), becomes the 429. A
 * backend that cannot decide leaves the 401/403 as it is. */
static void auth_fail_charge(struct req_ctx *rq)
{
	struct settled *app = rq->h->app;
	const struct rl_policy *p = &app->policies[RLP_AUTH_FAIL];
	struct rl_decision d;

	if (p->limit <= 0) {
		auth_fail_count(rq, "refused");
		return;
	}
	if (!rq->rl_n)
		rq->rl_now_ms = settled_now_ms(app);
	if (rl_check(app->rl, p, rq->client_rl_key, strlen(rq->client_rl_key), rq->rl_now_ms, &d)) {
		const char *const lv[] = { p->name, p->fail_open ? "open" : "closed" };

		metrics_inc(app->m.rl_backend_errors, lv); /* the 401/403 stands */
		auth_fail_count(rq, "refused");
		return;
	}
	rl_record(rq, p, &d);
	if (d.allowed) {
		auth_fail_count(rq, "refused");
		return;
	}
	auth_fail_count(rq, "limited");
	rl_refuse(rq, p, &d);
}

/* ---------------------------------------------------------------- idempotency */

static void idem_count(struct req_ctx *rq, const char *result)
{
	const char *const lv[] = { result };

	metrics_inc(rq->h->app->m.idempotency, lv);
}

static void replay_record(struct req_ctx *rq, struct idem_record *rec)
{
	resp_release(&rq->resp);
	rq->resp.status = rec->status;
	buf_append(&rq->resp.body, rec->body, rec->body_len);
	if (rec->location)
		resp_location(&rq->resp, rec->location);
	rq->idem_result = "HIT";
	idem_count(rq, "hit");
}

struct lookup_arg {
	struct req_ctx *rq;
	struct idem_record rec;
};

/* Checks the Idempotency-Key header. Returns true when the request should
 * go on to the handler; false when rq->resp already holds the answer. */
static bool idempotency_precheck(struct req_ctx *rq)
{
	struct settled *app = rq->h->app;
	const char *key = req_header(rq, "Idempotency-Key");
	struct lookup_arg la = { .rq = rq };
	size_t n;
	enum st_rc rc;

	if (!key) {
		if (app->cfg->require_idempotency_key && (rq->route->flags & ROUTE_MONEY)) {
			idem_count(rq, "invalid");
			req_fail(rq, ST_INVALID, "idempotency_key_required",
				 "this endpoint needs an Idempotency-Key header");
			return false;
		}
		return true;
	}
	if (!idem_key_valid(key, strlen(key))) {
		idem_count(rq, "invalid");
		req_fail(rq, ST_INVALID, "invalid_idempotency_key",
			 "Idempotency-Key must be 1-255 printable ASCII characters");
		return false;
	}
	rq->idem_key = key;
	/* The concrete path, never the template: one key sent to
	 * /api/admin/api-keys/A/rotate and then to .../B/rotate are two
	 * requests, and B's must run, not replay A's answer. */
	idem_fingerprint(rq->h->app->idem, rq->method, rq->path, rq->body.ptr, rq->body.len,
			 rq->fingerprint);
	n = strlen(rq->client_id) + strlen(rq->method) + strlen(rq->path) + 3;
	rq->idem_scope = req_alloc(rq, n);
	if (!rq->idem_scope) {
		req_fail(rq, ST_NOMEM, "out_of_memory", "the server is out of memory");
		return false;
	}
	snprintf(rq->idem_scope, n, "%s %s %s", rq->client_id, rq->method, rq->path);

	/* A finished key is answered from the cache of finished records or a
	 * read connection: no writer, no write. This comes before the running
	 * check, so any number of concurrent retries of a finished request all
	 * get its answer. */
	rc = idem_replay_lookup(app->idem, app->store, settled_now_ms(app), rq->idem_scope, key,
				rq->fingerprint, &la.rec);
	if (rc == ST_OK) {
		if (la.rec.same_fingerprint) {
			replay_record(rq, &la.rec);
		} else {
			idem_count(rq, "reused");
			req_fail(rq, ST_UNPROCESSABLE, "idempotency_key_reused",
				 "this Idempotency-Key was used with a different request");
		}
		idem_record_release(&la.rec);
		return false;
	}
	if (rc != ST_NOT_FOUND) {
		req_fail(rq, ST_UNAVAILABLE, "store_unavailable", "the store is unavailable; retry");
		return false;
	}
	/* Not finished. If it is running here, say so at once. If it finishes
	 * between the read above and this mark, the unit's claim finds the
	 * committed record and replays it: no second effect either way. */
	rc = idem_begin(app->idem, rq->idem_scope, key);
	if (rc == ST_NOMEM) {
		req_fail(rq, ST_NOMEM, "out_of_memory", "the server is short of memory; retry");
		return false;
	}
	if (rc) {
		idem_count(rq, "in_use");
		req_fail(rq, ST_CONFLICT, "idempotency_key_in_use",
			 "a request with this Idempotency-Key is still running; retry shortly");
		resp_header(&rq->resp, "Retry-After", "1");
		return false;
	}
	rq->idem_running = true;
	return true;
}

/* The unit the store runs: claim the key, run the handler's unit in a
 * savepoint, record the answer. See idempotency.h for why this is safe. */
struct handler_call {
	struct req_ctx *rq;
};

static enum st_rc handler_unit(struct tx *tx, void *arg)
{
	struct req_ctx *rq = arg;
	enum st_rc rc;

	const char *prev_tc = tx_set_trace_context(tx, rq->trace_context);

	resp_release(&rq->resp);
	rc = rq->unit(tx, rq->unit_arg, &rq->resp);
	tx_set_trace_context(tx, prev_tc);
	rq->handler_rc = rc;
	if (rc && !rq->resp.status)
		resp_error(&rq->resp, rc, rc == ST_INTERNAL ? "internal_error" : st_rc_str(rc),
			   "the request could not be completed", NULL);
	if (!rc && !rq->resp.status)
		rq->resp.status = 200;
	return rc;
}

static enum st_rc request_unit(struct tx *tx, void *arg)
{
	struct req_ctx *rq = arg;
	struct settled *app = rq->h->app;
	enum idem_claim claim;
	struct idem_record found = { 0 };
	enum st_rc rc, hrc;

	if (!rq->idem_key)
		return handler_unit(tx, rq);

	rc = idem_claim(tx, rq->idem_scope, rq->idem_key, rq->fingerprint, app->instance_id,
			app->cfg->idempotency_ttl_ms, &claim, &found);
	if (rc)
		return rc;
	if (claim == IDEM_FOUND) {
		/* Another request with this key committed first. */
		if (found.same_fingerprint) {
			replay_record(rq, &found);
		} else {
			idem_count(rq, "reused");
			req_fail(rq, ST_UNPROCESSABLE, "idempotency_key_reused",
				 "this Idempotency-Key was used with a different request");
		}
		idem_record_release(&found);
		return ST_OK;
	}
	hrc = tx_nested(tx, handler_unit, rq);
	if (rq->resp.status >= 500)
		return hrc ? hrc : ST_INTERNAL; /* releases the key: nothing recorded */
	/* A response that shows a secret once records a redacted body. */
	if (rq->resp.replay_body)
		rc = idem_complete(tx, rq->idem_scope, rq->idem_key, rq->resp.status, rq->resp.location,
				   rq->resp.replay_body, strlen(rq->resp.replay_body));
	else
		rc = idem_complete(tx, rq->idem_scope, rq->idem_key, rq->resp.status, rq->resp.location,
				   rq->resp.body.ptr, rq->resp.body.len);
	if (rc)
		return rc;
	rq->idem_result = "MISS";
	idem_count(rq, "miss");
	return ST_OK;
}

/* The request's trace context: its trace, the caller's span as parent
 * (parent = true) or our server span (false). */
static void req_trace_ctx(const struct req_ctx *rq, bool parent, struct trace_ctx *c)
{
	memcpy(c->trace_id, rq->trace_id, sizeof(c->trace_id));
	memcpy(c->span_id, parent ? rq->parent_span_id : rq->span_id, sizeof(c->span_id));
	c->flags = rq->trace_flags;
	c->state = rq->tracestate;
}

static void request_done(void *arg, enum st_rc rc)
{
	struct req_ctx *rq = arg;

	if (rq->submit_ns) {
		struct trace_ctx tc;

		req_trace_ctx(rq, false, &tc);
		trace_store_span(rq->h->app->tracer, &tc, rq->h->app->store->ops->name, rq->submit_ns, rc);
	}

	if (rc && !(rc == rq->handler_rc && rq->resp.status >= 400 && rq->resp.status < 500)) {
		/* Rolled back as a whole by a store failure or a 5xx from the
		 * handler (a 4xx from the handler keeps its own answer). Keep
		 * the handler's own 5xx answer if it made one. */
		if (rq->resp.status < 500 || rc != rq->handler_rc) {
			rq->idem_result = NULL;
			if (rc == ST_UNAVAILABLE || rc == ST_BUSY || rc == ST_NOMEM)
				req_fail(rq, ST_UNAVAILABLE, "store_unavailable",
					 "the store is unavailable; retry with the same Idempotency-Key");
			else
				req_fail(rq, ST_INTERNAL, "internal_error", "the request could not be completed");
		}
	}
	rq->state = RQ_READY;
	MHD_resume_connection(rq->conn);
}

enum st_rc req_commit(struct req_ctx *rq, req_unit_fn *fn, void *arg)
{
	enum st_rc rc;

	rq->unit = fn;
	rq->unit_arg = arg;
	rq->state = RQ_WAITING;
	rq->trace_context = req_alloc(rq, TRACE_CONTEXT_MAX);
	if (rq->trace_context) {
		struct trace_ctx tc;

		req_trace_ctx(rq, false, &tc);
		trace_ctx_format(&tc, rq->trace_context);
	}
	if (rq->h->app->tracer)
		rq->submit_ns = trace_now_ns();
	/* Suspend before queueing: the writer may finish and resume us before
	 * this thread gets back to libmicrohttpd. */
	MHD_suspend_connection(rq->conn);
	rc = store_submit(rq->h->app->store, request_unit, request_done, rq);
	if (rc) {
		MHD_resume_connection(rq->conn);
		rq->state = RQ_READY;
		return req_fail(rq, ST_UNAVAILABLE, "store_unavailable", "the store is not accepting writes");
	}
	return ST_OK;
}

/* ---------------------------------------------------------------- pipeline */

static enum MHD_Result answer_options(struct req_ctx *rq, const char *allow)
{
	enum cors_answer cors = cors_answer(rq);
	struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	rq->resp.status = 204;
	add_common_headers(rq, r);
	MHD_add_response_header(r, "Allow", allow);
	if (cors == CORS_LISTED || cors == CORS_ANY) {
		MHD_add_response_header(r, "Access-Control-Allow-Methods", allow);
		MHD_add_response_header(r, "Access-Control-Allow-Headers",
					"Authorization, Content-Type, Idempotency-Key, X-Request-Id, "
					"traceparent, tracestate");
		MHD_add_response_header(r, "Access-Control-Max-Age", "86400");
	}
	ret = MHD_queue_response(rq->conn, 204, r);
	MHD_destroy_response(r);
	rq->state = RQ_SENT;
	return ret;
}

/* Finds the route; answers 404/405/OPTIONS itself. */
static enum MHD_Result route_request(struct req_ctx *rq, bool *answered)
{
	struct buf allow = BUF_INIT(256);
	const char *method = !strcmp(rq->method, "OPTIONS") ? "GET" : rq->method;
	enum route_result res;
	enum MHD_Result ret = MHD_YES;

	*answered = false;
	res = route_match(rq->h->routes, rq->h->nroutes, method, rq->url, &rq->route, &rq->params, &allow);
	if (!strcmp(rq->method, "OPTIONS")) {
		/* Collect every method the path allows for Allow / preflight. */
		struct buf all = BUF_INIT(256);
		const struct route *ignored;
		struct route_params p;

		rq->route = NULL;
		if (route_match(rq->h->routes, rq->h->nroutes, "OPTIONS", rq->url, &ignored, &p, &all) ==
		    ROUTE_METHOD_NOT_ALLOWED) {
			buf_puts(&all, ", OPTIONS");
			ret = answer_options(rq, all.ptr);
		} else {
			ret = fail_now(rq, ST_NOT_FOUND, "not_found", "no such route");
		}
		buf_release(&all);
		*answered = true;
	} else if (res == ROUTE_NOT_FOUND) {
		ret = fail_now(rq, ST_NOT_FOUND, "not_found", "no such route");
		*answered = true;
	} else if (res == ROUTE_METHOD_NOT_ALLOWED) {
		req_fail(rq, ST_CONFLICT, "method_not_allowed", "this route does not take that method");
		rq->resp.status = 405;
		resp_header(&rq->resp, "Allow", allow.ptr);
		ret = send_resp(rq);
		*answered = true;
	} else {
		/* Matched on the path as sent; the parameters are decoded
		 * only now (docs/internals/http-framing.md "Paths"). */
		for (size_t i = 0; i < rq->params.n; i++) {
			char *c = req_alloc(rq, rq->params.p[i].value_len + 1);

			if (!c) {
				ret = fail_now(rq, ST_NOMEM, "out_of_memory", "the server is out of memory");
				*answered = true;
				break;
			}
			if (route_decode(rq->params.p[i].value, rq->params.p[i].value_len, c, NULL)) {
				ret = fail_now(rq, ST_INVALID, "invalid_path",
					       "a path parameter holds a control character or is not UTF-8");
				*answered = true;
				break;
			}
			rq->param_copies[i] = c;
		}
	}
	buf_release(&allow);
	return ret;
}

/* API keys (apikey.h): looked up by prefix on a read connection, digests
 * compared in constant time. On success the key's client id (its rotation
 * chain's first key id; copied into the request, so it outlives the read)
 * becomes the client id: the idempotency scope and the RL_KEY_API_KEY
 * rate-limit key, stable across a rotation. A store failure answers 503
 * (nothing was decided); any other refusal is left to the caller's 401. */
struct key_auth {
	const char *token;
	struct api_key key;
};

static enum st_rc key_auth_unit(struct tx *tx, void *arg)
{
	struct key_auth *a = arg;

	return apikey_authenticate(tx, a->token, strlen(a->token), &a->key);
}

static bool authenticate_api_key(struct req_ctx *rq, const char *token)
{
	struct settled *app = rq->h->app;
	struct key_auth a = { .token = token };
	enum st_rc rc;
	char *id;

	if (!apikey_parse(token, strlen(token), NULL))
		return false; /* never reaches the store */
	rc = store_read(app->store, key_auth_unit, &a);
	if (rc == ST_UNAUTHORIZED)
		return false;
	if (rc == ST_OK) {
		const char *const lv[] = { a.key.prefix };

		id = req_alloc(rq, strlen(a.key.client_id) + 1);
		if (id) {
			memcpy(id, a.key.client_id, strlen(a.key.client_id) + 1);
			rq->client_id = id;
			metrics_inc(app->m.api_key_requests, lv);
			return true;
		}
	}
	req_fail(rq, ST_UNAVAILABLE, "store_unavailable", "the key could not be checked; retry");
	return false;
}

/* Authentication by route flag. Returns false with the answer filled. */
static bool authenticate(struct req_ctx *rq)
{
	const struct config *cfg = rq->h->app->cfg;
	unsigned flags = rq->route->flags;
	const char *token;

	rq->client_id = "anon";
	if (!(flags & (ROUTE_ADMIN | ROUTE_API_KEY)))
		return true;
	token = bearer_token(rq);
	if (!token) {
		req_fail(rq, ST_UNAUTHORIZED, "unauthorized", "this route needs Authorization: Bearer <token>");
		resp_header(&rq->resp, "WWW-Authenticate", "Bearer");
		return false;
	}
	if (cfg->admin_token && token_equal(token, cfg->admin_token)) {
		rq->client_id = "admin";
		return true;
	}
	if (flags & ROUTE_ADMIN) {
		req_fail(rq, ST_FORBIDDEN, "forbidden", "the token is not valid for this route");
		return false;
	}
	if (authenticate_api_key(rq, token))
		return true;
	if (rq->resp.status)
		return false; /* the store could not be asked: 503 already filled */
	req_fail(rq, ST_UNAUTHORIZED, "unauthorized", "unknown, expired or revoked key");
	resp_header(&rq->resp, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
	return false;
}

static bool parse_body(struct req_ctx *rq)
{
	const char *ct = req_header(rq, "Content-Type");
	json_error_t jerr;

	if (!rq->body.len) {
		if (rq->route->flags & ROUTE_JSON_BODY) {
			resp_release(&rq->resp);
			resp_error(&rq->resp, ST_INVALID, "invalid_json", "the request body is empty",
				   json_pack("{s:i, s:i}", "line", 1, "column", 0));
			return false;
		}
		return true;
	}
	if (!ct || !content_type_is_json(ct)) {
		req_fail(rq, ST_UNSUPPORTED, "unsupported_media_type",
			 "request bodies must be Content-Type: application/json");
		return false;
	}
	rq->json = json_loadb(rq->body.ptr, rq->body.len, JSON_REJECT_DUPLICATES, &jerr);
	if (!rq->json) {
		char msg[256];

		snprintf(msg, sizeof(msg), "malformed JSON: %s", jerr.text);
		/* jansson quotes the input near the error and may cut a UTF-8
		 * sequence in two ("invalid escape near '\u00e\xc8'"); json_pack
		 * refuses such a string, which turned this 400 into a 500. */
		for (char *p = msg; *p; p++)
			if ((unsigned char)*p >= 0x80)
				*p = '?';
		resp_release(&rq->resp);
		resp_error(&rq->resp, ST_INVALID, "invalid_json", msg,
			   json_pack("{s:i, s:i, s:i}", "line", jerr.line, "column", jerr.column,
				     "position", jerr.position));
		return false;
	}
	if (!json_is_object(rq->json)) {
		req_fail(rq, ST_INVALID, "invalid_body", "the request body must be a JSON object");
		return false;
	}
	return true;
}

/* authenticate() behind the failed-authentication budget. A signed route
 * (ROUTE_SIGNED) has its signature checked by its handler (req_verifying)
 * with no gate: an HMAC key cannot
 * be guessed, so refusing an address before verifying protects nothing,
 * while junk from an address the provider shares (a proxy not named in
 * SETTLED_TRUST_PROXY) would then block the provider's genuine deliveries.
 * Its failures are still charged, and past the budget answered 429. */
static bool authenticate_throttled(struct req_ctx *rq)
{
	if (rq->route->flags & ROUTE_SIGNED) {
		enum st_rc rc;

		rq->client_id = "anon";
		rq->verifying = true;
		rc = rq->route->handler(rq);
		rq->verifying = false;
		if (!rc && !rq->resp.status)
			return true;
		if (!rq->resp.status)
			req_fail(rq, rc, st_rc_str(rc), "the request could not be completed");
		if (rq->resp.status == 401 || rq->resp.status == 403)
			auth_fail_charge(rq);
		return false;
	}
	if (!(rq->route->flags & (ROUTE_ADMIN | ROUTE_API_KEY)))
		return authenticate(rq);
	if (!auth_fail_gate(rq))
		return false;
	if (authenticate(rq))
		return true;
	if (rq->resp.status == 401 || rq->resp.status == 403)
		auth_fail_charge(rq);
	return false;
}

/* A member the route does not declare (route.h) is refused before a limit
 * keyed on the body is charged and before the idempotency record: a
 * client's typo must never become a different request than it meant. */
static bool refuse_unknown_fields(struct req_ctx *rq)
{
	struct buf path = BUF_INIT(rq->body.len + 64), msg = BUF_INIT(rq->body.len + 128);
	enum st_rc rc;

	if (!rq->json || (rq->route->flags & ROUTE_FOREIGN_BODY))
		return true;
	rc = route_unknown_field(rq->route->fields, rq->json, &path);
	if (rc == ST_INVALID &&
	    !buf_printf(&msg, "unknown field %s: this route does not define it", path.ptr)) {
		resp_release(&rq->resp);
		resp_error(&rq->resp, ST_INVALID, "unknown_field", msg.ptr,
			   json_pack("{s:s}", "field", path.ptr));
	} else if (rc) {
		req_fail(rq, ST_NOMEM, "out_of_memory", "the server is out of memory");
	}
	buf_release(&msg);
	buf_release(&path);
	return rc == ST_OK;
}

/* Runs everything between the last body byte and the handler. */
static enum MHD_Result dispatch(struct req_ctx *rq)
{
	enum st_rc rc;

	if (rq->body_nomem)
		return fail_now(rq, ST_NOMEM, "out_of_memory", "the server is short of memory; retry");
	if (rq->body_too_large)
		return fail_now(rq, ST_TOO_LARGE, "payload_too_large", "the request body is too large");
	if (!authenticate_throttled(rq) || !apply_rate_limits(rq, false) || !parse_body(rq) ||
	    !refuse_unknown_fields(rq) || !apply_rate_limits(rq, true))
		return send_resp(rq);
	if ((rq->route->flags & ROUTE_IDEMPOTENT) && !idempotency_precheck(rq))
		return send_resp(rq);
	rc = rq->route->handler(rq);
	if (rc && !rq->resp.status)
		req_fail(rq, rc, st_rc_str(rc), "the request could not be completed");
	if (rq->state == RQ_WAITING)
		return MHD_YES;
	return send_resp(rq);
}

static void init_request(struct req_ctx *rq)
{
	const char *rid = NULL, *tp = NULL, *ts = NULL;
	size_t rid_len = 0, tp_len = 0, ts_len = 0;
	/* Request id, trace id and span id from one draw of the randpool
	 * (randpool.h says why not RAND_bytes per id). */
	unsigned char rnd[16 + 16 + 8];

	random_bytes(&rq->h->app->rand, rnd, sizeof(rnd));

	/* The lengths libmicrohttpd read, not strlen(): "ab\0cd" is not "ab". */
	MHD_lookup_connection_value_n(rq->conn, MHD_HEADER_KIND, "X-Request-Id", 12, &rid, &rid_len);
	MHD_lookup_connection_value_n(rq->conn, MHD_HEADER_KIND, "traceparent", 11, &tp, &tp_len);
	if (rid && request_id_valid(rid, rid_len))
		fmt_str(rq->request_id, sizeof(rq->request_id), rid);
	else
		fmt_hex(rnd, 16, rq->request_id);
	if (!tp || parse_traceparent(tp, tp_len, rq->trace_id, rq->span_id, &rq->trace_flags)) {
		fmt_hex(rnd + 16, 16, rq->trace_id);
		rq->trace_flags = 1;
		rq->span_id[0] = '\0';
	} else if (MHD_lookup_connection_value_n(rq->conn, MHD_HEADER_KIND, "tracestate", 10, &ts,
						 &ts_len) == MHD_YES && ts_len &&
		   trace_state_valid(ts, ts_len)) {
		rq->tracestate = ts; /* only with a valid traceparent (W3C) */
	}
	/* Our span is a child of the caller's: a new span id, same trace. */
	memcpy(rq->parent_span_id, rq->span_id, sizeof(rq->parent_span_id));
	fmt_hex(rnd + 32, 8, rq->span_id);
	if (rq->h->app->tracer)
		rq->start_ns = trace_now_ns();
	resolve_client_ip(rq);
	rq->client_id = "anon";
}

/* What refuse_bad_headers() counts in one pass over the header lines. */
struct hdr_scan {
	unsigned content_length;     /* Content-Length lines */
	unsigned transfer_encoding;  /* Transfer-Encoding lines */
	unsigned authorization;      /* Authorization lines */
	unsigned host;               /* Host lines */
	bool te_not_chunked;         /* one that is not exactly "chunked" */
	bool bad_bytes;              /* a name that is no token, a value not UTF-8 */
	bool layout_on;              /* walk the section (hdr_layout.h) */
	struct hdr_layout layout;
};

/* RFC 9110 section 5.1: a field name is a token. This also refuses
 * "Transfer-Encoding : chunked", which libmicrohttpd would file under the
 * name "Transfer-Encoding " and so ignore, while a proxy may not. */
static bool header_name_ok(const char *s, size_t n)
{
	static const char tchar[] = "!#$%&'*+-.^_`|~";

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c && strchr(tchar, c))))
			return false;
	}
	return n > 0;
}

/* Values must be UTF-8; other control bytes are left to each header's own
 * validator (an Idempotency-Key with one is refused as
 * invalid_idempotency_key). The NUL test is for libmicrohttpd versions
 * that report the true length: 0.9.75 measures values with strlen(), so
 * there a NUL ends the value early and hdr_layout.h finds it. */
static bool header_value_ok(const char *s, size_t n)
{
	return !memchr(s, '\0', n) && utf8_valid(s, n);
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
				   size_t key_size, const char *value, size_t value_size)
{
	struct hdr_scan *sc = cls;

	(void)kind;
	if (!header_name_ok(key, key_size) || (value && !header_value_ok(value, value_size)))
		sc->bad_bytes = true;
	if (sc->layout_on)
		hdr_layout_field(&sc->layout, key, key_size, value, value_size);
	if (key_size == 13 && !strncasecmp(key, "Authorization", 13)) {
		sc->authorization++;
	} else if (key_size == 4 && !strncasecmp(key, "Host", 4)) {
		sc->host++;
	} else if (key_size == 14 && !strncasecmp(key, "Content-Length", 14)) {
		sc->content_length++;
	} else if (key_size == 17 && !strncasecmp(key, "Transfer-Encoding", 17)) {
		sc->transfer_encoding++;
		if (!value || value_size != 7 || strncasecmp(value, "chunked", 7))
			sc->te_not_chunked = true;
	}
	return MHD_YES;
}

static enum MHD_Result scan_arg(void *cls, enum MHD_ValueKind kind, const char *key,
				size_t key_size, const char *value, size_t value_size)
{
	(void)kind;
	hdr_layout_arg(cls, key, key_size, value, value_size);
	return MHD_YES;
}

/* Refuses, before a byte of the body is read, what libmicrohttpd 0.9.75
 * lets through (docs/internals/http-framing.md):
 *   0. what its parser hides (hdr_layout.h): a folded line, a NUL or a
 *      bare CR in a line (the request line too), a line ended by a bare
 *      LF, a second space after the method; two Authorization or
 *      two Host lines, or an HTTP/1.1 request without Host (RFC 9112
 *      section 3.2: 400), which two parsers could also resolve differently;
 *   1. a body length two parsers could read differently, the setup of
 *      request smuggling (RFC 9112 sections 6.1 and 6.3): Content-Length
 *      with Transfer-Encoding (libmicrohttpd goes by the chunks), two
 *      Content-Length lines (it takes the first and would parse the rest of
 *      the body as the next request), a Transfer-Encoding other than a
 *      single "chunked" (it would read until the connection closes);
 *   2. a header name that is not a token (RFC 9110 section 5.1: no blank
 *      before the colon, no bytes above 0x7e), or a value that is not
 *      UTF-8 or holds a NUL (see header_value_ok for the NUL).
 * The answer is 400 with Connection: close: after a framing doubt nothing
 * else on the connection can be trusted. True when it answered. */
static bool refuse_bad_headers(struct req_ctx *rq, const char *version, enum MHD_Result *ret)
{
	struct hdr_scan sc = { 0 };
	const char *code = "invalid_framing", *msg;
	const union MHD_ConnectionInfo *size =
		MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
	enum hdr_fault fault = HDR_OK;

	/* The method is the section's first byte (hdr_layout.h). */
	sc.layout_on = rq->h->layout_checks && size;
	if (sc.layout_on) {
		hdr_layout_begin(&sc.layout, rq->method, size->header_size);
		hdr_layout_request(&sc.layout, rq->url, version);
		MHD_get_connection_values_n(rq->conn, MHD_GET_ARGUMENT_KIND, scan_arg, &sc.layout);
	}
	MHD_get_connection_values_n(rq->conn, MHD_HEADER_KIND, scan_header, &sc);
	if (sc.layout_on)
		fault = hdr_layout_end(&sc.layout);
	if (fault) {
		code = "invalid_header";
		msg = hdr_fault_str(fault);
	} else if (sc.authorization > 1 || sc.host > 1) {
		code = "invalid_header";
		msg = sc.host > 1 ? "a request can have only one Host"
				  : "a request can have only one Authorization";
	} else if (!sc.host && version && !strcmp(version, MHD_HTTP_VERSION_1_1)) {
		code = "invalid_header";
		msg = "an HTTP/1.1 request needs a Host header";
	} else if (sc.content_length && sc.transfer_encoding) {
		msg = "a request cannot have both Content-Length and Transfer-Encoding";
	} else if (sc.content_length > 1) {
		msg = "a request can have only one Content-Length";
	} else if (sc.transfer_encoding > 1 || sc.te_not_chunked) {
		msg = "the only Transfer-Encoding accepted is chunked";
	} else if (sc.bad_bytes) {
		code = "invalid_header";
		msg = "header names must be tokens and header values UTF-8";
	} else {
		return false;
	}
	req_fail(rq, ST_INVALID, code, msg);
	resp_header(&rq->resp, "Connection", "close");
	*ret = send_resp(rq);
	return true;
}

struct query_scan {
	struct req_ctx *rq;
	struct query_arg **tail;
	bool bad;
};

/* Decodes one query argument into the request's list (route_decode). */
static enum MHD_Result collect_query(void *cls, enum MHD_ValueKind kind, const char *key,
				     const char *value)
{
	struct query_scan *qs = cls;
	struct query_arg *q;
	size_t kn = strlen(key), vn = value ? strlen(value) : 0;
	char *k, *v = NULL;

	(void)kind;
	q = req_alloc(qs->rq, sizeof(*q) + kn + 1 + (value ? vn + 1 : 0));
	if (!q) {
		qs->bad = true;
		return MHD_NO;
	}
	k = (char *)(q + 1);
	if (value)
		v = k + kn + 1;
	if (route_decode(key, kn, k, NULL) || (value && route_decode(value, vn, v, NULL))) {
		qs->bad = true;
		return MHD_NO;
	}
	q->name = k;
	q->value = v;
	*qs->tail = q;
	qs->tail = &q->next;
	return MHD_YES;
}

/* The request target as sent: libmicrohttpd hands it over undecoded
 * (keep_escaped), so the route is matched on the bytes a proxy in front
 * saw. Refuses (400) a path with %00, an encoded '/', a malformed escape,
 * a raw byte that is not visible ASCII, or one that decodes to a control
 * character or to something that is not UTF-8; and a query argument that
 * does. Sets rq->path (the decoded path: idempotency's concrete path) and
 * rq->query. True when it answered. */
static bool refuse_bad_target(struct req_ctx *rq, enum MHD_Result *ret)
{
	size_t n = strlen(rq->url);
	struct query_scan qs = { .rq = rq, .tail = &rq->query };

	rq->path = req_alloc(rq, n + 1);
	if (!rq->path) {
		*ret = fail_now(rq, ST_NOMEM, "out_of_memory", "the server is out of memory");
		return true;
	}
	if (route_path_check(rq->url) || route_decode(rq->url, n, rq->path, NULL)) {
		*ret = fail_now(rq, ST_INVALID, "invalid_path",
				"the path holds %00, an encoded '/', a malformed escape, a byte that "
				"is not visible ASCII, or decodes to a control character or to "
				"something that is not UTF-8");
		return true;
	}
	MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, collect_query, &qs);
	if (qs.bad) {
		*ret = fail_now(rq, ST_INVALID, "invalid_query",
				"a query argument holds a malformed escape or a control character, "
				"or is not UTF-8");
		return true;
	}
	return false;
}

/* libmicrohttpd's unescape callback: leave the path and the query as
 * sent ('+' in the query is already a space by then); http.c decodes
 * them itself, after routing (refuse_bad_target, route_decode). */
static size_t keep_escaped(void *cls, struct MHD_Connection *conn, char *s)
{
	(void)cls;
	(void)conn;
	return strlen(s);
}

/* The connection's deadline (reaper.h), or NULL when it is not watched. */
static struct reaper_conn *conn_deadline(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? ci->socket_context : NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	struct http *h = cls;
	struct req_ctx *rq = *con_cls;

	if (rq == (void *)&h->oom_marker) {
		*upload_data_size = 0; /* answered: drop the body */
		return MHD_YES;
	}
	if (!rq) {
		const char *cl;
		bool answered;
		enum MHD_Result ret;

		rq = calloc(1, sizeof(*rq));
		if (!rq) {
			*con_cls = &h->oom_marker;
			return answer_oom(h, conn);
		}
		*con_cls = rq;
		atomic_fetch_add(&h->inflight, 1);
		rq->h = h;
		rq->conn = conn;
		rq->method = method;
		rq->url = url;
		clock_gettime(CLOCK_MONOTONIC, &rq->started);
		rq->now_ms = settled_now_ms(h->app);
		buf_init(&rq->body, h->app->cfg->max_body);
		resp_init(&rq->resp);
		init_request(rq);
		if (refuse_bad_headers(rq, version, &ret))
			return ret;
		/* Shutting down: new requests get a quick 503 and Connection:
		 * close (send_resp), in-flight ones finish. This stands in for
		 * MHD_quiesce_daemon: see http_stop(). */
		if (atomic_load(&h->app->stopping))
			return fail_now(rq, ST_UNAVAILABLE, "unavailable",
					"the server is shutting down; retry");
		if (refuse_bad_target(rq, &ret))
			return ret;
		ret = route_request(rq, &answered);
		if (answered)
			return ret;
		cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
		if (cl) {
			char *end;
			unsigned long long n = strtoull(cl, &end, 10);

			/* Refuse before reading a byte of it. */
			if (*end || n > h->app->cfg->max_body)
				return fail_now(rq, ST_TOO_LARGE, "payload_too_large",
						"the request body is larger than SETTLED_MAX_BODY");
		}
		rq->state = RQ_BODY;
		return MHD_YES;
	}
	if (rq->state == RQ_SENT) {
		*upload_data_size = 0; /* answered early (413): drop the rest */
		return MHD_YES;
	}
	if (*upload_data_size) {
		if (!rq->body_too_large) {
			enum st_rc brc = buf_append(&rq->body, upload_data, *upload_data_size);

			if (brc) {
				rq->body_too_large = true;
				rq->body_nomem = brc == ST_NOMEM;
				buf_release(&rq->body);
			}
		}
		if (rq->body_too_large) {
			rq->discarded += *upload_data_size;
			if (rq->discarded > BODY_DISCARD_MAX)
				return MHD_NO; /* a stream that will not end: cut the connection */
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (rq->state == RQ_BODY) {
		/* All of it is in: no deadline while the handler (and the
		 * store) take their time; on_completed() arms the next one. */
		reaper_disarm(conn_deadline(conn));
		return dispatch(rq);
	}
	if (rq->state == RQ_READY)
		return send_resp(rq);
	return MHD_YES; /* RQ_WAITING: a spurious call while suspended */
}

/* The method as metrics and spans name it: one of RFC 9110's methods or
 * PATCH, else "_OTHER" (OpenTelemetry's convention), so that a client
 * sending made-up methods cannot add a metric series or a span name per
 * method. The log line keeps the method as sent (escaped). */
static const char *method_label(const char *method)
{
	static const char *const known[] = { "GET", "HEAD", "POST", "PUT", "DELETE",
					     "CONNECT", "OPTIONS", "TRACE", "PATCH" };

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (!strcmp(method, known[i]))
			return known[i];
	return "_OTHER";
}

static void log_request(struct req_ctx *rq, double secs, int status)
{
	const struct settled *app = rq->h->app;
	struct buf f = BUF_INIT(4096);

	log_field_str(&f, "method", rq->method);
	log_field_str(&f, "route", req_route(rq));
	log_field_target(&f, "path", rq->url);
	log_field_int(&f, "status", status);
	log_field_fixed(&f, "duration_ms", secs * 1000.0, 3); /* to the microsecond */
	log_field_str(&f, "client_ip", rq->client_ip);
	log_field_str(&f, "span_id", rq->span_id);
	if (rq->idem_result)
		log_field_str(&f, "idempotency", rq->idem_result);
	log_emit(&app->log, status >= 500 ? LOG_ERROR : LOG_INFO, rq->request_id, rq->trace_id, "request",
		 &f);
	buf_release(&f);
}

/* The request's SERVER span, with the attributes of the OpenTelemetry
 * HTTP semantic conventions. Its id went out in the response's traceparent
 * before the span was built, so it is adopted rather than drawn. */
static void trace_request(struct req_ctx *rq, int status)
{
	const char *method = method_label(rq->method), *host = req_header(rq, "Host");
	struct trace_span sp;
	struct trace_ctx parent;
	char name[160], hostname[256];
	int64_t port = rq->h->port;

	if (rq->route)
		snprintf(name, sizeof(name), "%s %s", method, rq->route->path);
	else
		fmt_str(name, sizeof(name), method);
	req_trace_ctx(rq, true, &parent);
	trace_span_start(&sp, rq->h->app->tracer, name, TRACE_SERVER, &parent);
	trace_span_adopt(&sp, rq->span_id, rq->start_ns);
	trace_span_set_str(&sp, "http.request.method", method);
	if (method[0] == '_')
		trace_span_set_str(&sp, "http.request.method_original", rq->method);
	trace_span_set_str(&sp, "url.scheme", "http");
	{
		/* Spans leave the process like log lines: the same redaction. */
		struct buf path = BUF_INIT(4096);

		if (!log_redact_target(rq->url, &path) && path.len)
			trace_span_set_str(&sp, "url.path", path.ptr);
		buf_release(&path);
	}
	if (rq->route)
		trace_span_set_str(&sp, "http.route", rq->route->path);
	if (status != 499)
		trace_span_set_int(&sp, "http.response.status_code", status);
	/* server.address/port: what the client asked for (Host), else ours. */
	fmt_str(hostname, sizeof(hostname), host ? host : rq->h->app->cfg->listen_host);
	if (host && hostname[0] != '[' && strchr(hostname, ':')) {
		port = strtol(strchr(hostname, ':') + 1, NULL, 10);
		*strchr(hostname, ':') = '\0';
	} else if (host && hostname[0] == '[' && strstr(hostname, "]:")) {
		port = strtol(strstr(hostname, "]:") + 2, NULL, 10);
		strstr(hostname, "]:")[1] = '\0';
	}
	trace_span_set_str(&sp, "server.address", hostname);
	trace_span_set_int(&sp, "server.port", port);
	trace_span_set_str(&sp, "client.address", rq->client_ip);
	trace_span_set_str(&sp, "user_agent.original", req_header(rq, "User-Agent"));
	trace_span_set_str(&sp, "settled.request_id", rq->request_id);
	if (status >= 500) {
		snprintf(name, sizeof(name), "%d", status);
		trace_span_set_str(&sp, "error.type", name);
		trace_span_set_status(&sp, TRACE_ERROR, NULL);
	}
	trace_span_end(&sp);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct http *h = cls;
	struct req_ctx *rq = *con_cls;
	double secs;
	int status;
	char status_s[FMT_I64_LEN];

	if (!rq || rq == (void *)&h->oom_marker)
		return;
	/* The connection may carry another request: a full timeout for it. */
	reaper_arm(conn_deadline(conn));
	secs = elapsed_s(&rq->started);
	status = rq->state == RQ_SENT ? rq->resp.status : 499; /* 499: the client went away */
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && rq->state != RQ_SENT)
		status = 499;
	fmt_i64(status_s, status);
	{
		const char *const lv[] = { method_label(rq->method), req_route(rq), status_s };

		metrics_inc(h->app->m.http_requests, lv);
		metrics_observe(h->app->m.http_duration, lv, secs);
	}
	log_request(rq, secs, status);
	if (h->app->tracer)
		trace_request(rq, status);
	if (rq->idem_running)
		idem_end(h->app->idem, rq->idem_scope, rq->idem_key);
	json_decref(rq->json);
	buf_release(&rq->body);
	resp_release(&rq->resp);
	while (rq->allocs) {
		struct rq_alloc *a = rq->allocs;

		rq->allocs = a->next;
		free(a);
	}
	free(rq);
	*con_cls = NULL;
	atomic_fetch_sub(&h->inflight, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct http *h = cls;
	char line[512];

	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_msg(&h->app->log, LOG_WARN, "libmicrohttpd: %s", line);
}

/* Every connection is watched by the reaper from accept to close; see
 * reaper.h for why libmicrohttpd's own (idle) timeout is not enough. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct http *h = cls;

	if (!h->reaper)
		return;
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

		*socket_context = ci ? reaper_watch(h->reaper, ci->connect_fd) : NULL;
	} else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		/* Before libmicrohttpd closes the socket: see reaper.c. */
		reaper_unwatch(h->reaper, *socket_context);
		*socket_context = NULL;
	}
}

enum st_rc http_start(struct settled *app, const struct route *routes, size_t nroutes,
		      struct http **out, struct buf *err)
{
	const struct config *cfg = app->cfg;
	struct http *h = calloc(1, sizeof(*h));
	struct sockaddr_in6 a6;
	struct sockaddr_in a4;
	struct sockaddr *sa;
	unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	unsigned threads = cfg->http_threads;
	const union MHD_DaemonInfo *info;

	if (!h)
		return ST_NOMEM;
	h->app = app;
	h->routes = routes;
	h->nroutes = nroutes;
	if (!threads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		threads = n > 0 ? (unsigned)n : 1;
	}
	memset(&a4, 0, sizeof(a4));
	memset(&a6, 0, sizeof(a6));
	if (inet_pton(AF_INET, cfg->listen_host, &a4.sin_addr) == 1) {
		a4.sin_family = AF_INET;
		a4.sin_port = htons(cfg->listen_port);
		sa = (struct sockaddr *)&a4;
	} else if (inet_pton(AF_INET6, cfg->listen_host, &a6.sin6_addr) == 1) {
		a6.sin6_family = AF_INET6;
		a6.sin6_port = htons(cfg->listen_port);
		sa = (struct sockaddr *)&a6;
		flags |= MHD_USE_IPv6;
	} else if (!strcmp(cfg->listen_host, "localhost")) {
		a4.sin_family = AF_INET;
		a4.sin_port = htons(cfg->listen_port);
		a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sa = (struct sockaddr *)&a4;
	} else {
		buf_printf(err, "SETTLED_LISTEN: cannot use host %s", cfg->listen_host);
		free(h);
		return ST_INVALID;
	}
	if (reaper_new((int64_t)cfg->conn_timeout_s * 1000, &h->reaper)) {
		buf_printf(err, "cannot start the connection reaper thread");
		free(h);
		return ST_NOMEM;
	}
	/* hdr_layout.h reads libmicrohttpd 0.9.75's buffer layout; another
	 * version may lay it out differently, and the walk would refuse
	 * every request or miss what it is for: it is only used on the
	 * version it was checked against (docs/internals/http-framing.md). */
	h->layout_checks = !strcmp(MHD_get_version(), "0.9.75");
	if (!h->layout_checks)
		log_msg(&app->log, LOG_WARN,
			"libmicrohttpd %s: the header-layout checks (obs-fold, NUL, bare CR/LF) "
			"are only known to fit 0.9.75 and are off", MHD_get_version());
	/* The logger goes first so that errors about later options reach it. */
	h->daemon = MHD_start_daemon(flags, cfg->listen_port, NULL, NULL, on_request, h,
				     MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
				     MHD_OPTION_SOCK_ADDR, sa,
				     MHD_OPTION_THREAD_POOL_SIZE, threads,
				     MHD_OPTION_CONNECTION_TIMEOUT, cfg->conn_timeout_s,
				     MHD_OPTION_CONNECTION_LIMIT, cfg->conn_limit,
				     MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096,
				     MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY,
				     MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
				     MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
				     MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL,
				     MHD_OPTION_END);
	if (!h->daemon) {
		buf_printf(err, "cannot listen on %s:%u", cfg->listen_host, cfg->listen_port);
		reaper_free(h->reaper);
		free(h);
		return ST_UNAVAILABLE;
	}
	info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
	h->port = info ? info->port : cfg->listen_port;
	*out = h;
	return ST_OK;
}

uint16_t http_port(const struct http *h)
{
	return h->port;
}

void http_stop(struct http *h, int64_t grace_ms)
{
	struct timespec step = { 0, 10 * 1000 * 1000 };

	if (!h)
		return;
	/* No MHD_quiesce_daemon(): with an epoll thread pool it races the
	 * workers for the listen socket's removal from their epoll sets and
	 * libmicrohttpd 0.9.75 aborts the process when it loses ("Failed to
	 * remove listen FD from epoll set", seen at a test's SIGTERM; an open
	 * MHD defect). Connections are still accepted until MHD_stop_daemon(),
	 * but on_request() answers every new request 503 with Connection:
	 * close once app->stopping is set, so only requests already in
	 * flight are waited for. */
	for (int64_t waited = 0; atomic_load(&h->inflight) > 0 && waited < grace_ms; waited += 10)
		nanosleep(&step, NULL);
	MHD_stop_daemon(h->daemon);
	reaper_free(h->reaper); /* after the daemon: every connection is unwatched */
	free(h);
}

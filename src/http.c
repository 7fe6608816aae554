/* http.c — the transport: the HTTP server on libmicrohttpd.
 *
 * libmicrohttpd runs its own thread pool with epoll (one thread per core by
 * default). A request's path through the pipeline (request.h names the
 * three modules; docs/internals/request.md walks one POST through them):
 *   0. from accept until a request has fully arrived, the connection's
 *      deadline runs (SETTLED_CONN_TIMEOUT, reaper.h): slowloris headers and
 *      dribbled bodies are cut off; it is disarmed while the request is
 *      handled and re-armed when the answer is done;
 *   1. first callback (here): req_ctx created, request id and trace
 *      context set, ambiguous framing (smuggling:
 *      docs/internals/http-framing.md) and header bytes that are no token /
 *      not UTF-8 refused (400, connection closed), the target checked and
 *      decoded, the route matched (dispatch.c route_request:
 *      404/405/OPTIONS answered there), Content-Length checked against
 *      SETTLED_MAX_BODY (413 before the body is read);
 *   2. body callbacks (here): bytes appended to a capped buf (an over-long
 *      chunked body is discarded and answered 413 at its end);
 *   3. last callback: dispatch.c dispatch(): content type (415), auth
 *      (401/403), JSON parse (400 with line and column), rate limits (429),
 *      Idempotency-Key checks, replay of a finished key from a read
 *      connection (no write), then the handler. A handler that writes calls
 *      req_commit(): the connection is suspended and the unit queued on the
 *      store; the store's thread resumes it once the unit is durable, and
 *      libmicrohttpd calls us a fourth time to send the answer
 *      (response.c send_resp);
 *   4. completion callback (here): metrics, the request's log line and
 *      span, then the req_ctx and everything hanging off it are freed. */
#include "http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client_addr.h"
#include "clock.h"
#include "fmt.h"
#include "hdr_layout.h"
#include "hex.h"
#include "idempotency.h"
#include "log.h"
#include "metrics.h"
#include "reaper.h"
#include "request.h"
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

/* What of that pool a request may take (docs/internals/http-framing.md,
 * "The connection's memory"). libmicrohttpd 0.9.75 files each header
 * field, query argument and cookie as a record of 64 bytes (56, aligned)
 * in the pool beside the section's bytes, and builds the answer's header
 * block there too: a request that leaves less than the block needs is
 * run and then closed unanswered ("failed to create response header").
 * So a section (its bytes, its records) over HTTP_SECTION_MAX is refused
 * 431 before anything runs, leaving HTTP_ANSWER_ROOM for the answer (a
 * 201 with rate-limit, CORS and trace headers takes ~1 KiB). */
#define HTTP_MHD_RECORD 64
#define HTTP_ANSWER_ROOM 2048
#define HTTP_SECTION_MAX (HTTP_CONN_MEMORY - HTTP_ANSWER_ROOM)

/* The request target settled takes; longer, or with more query arguments,
 * is answered 414. 0.9.75 files the query's arguments while it parses
 * the request line, and when their records do not fit it queues its 431
 * page, but its caller then overwrites the connection's state: the
 * connection waits, neither reading nor writing, until its timeout. On
 * the request line's first read at most half the pool holds bytes, and
 * 32 records take 2 KiB of the other half, so within these bounds the
 * arguments always fit; on_target() keeps the library from filing those
 * of a longer target. */
#define HTTP_TARGET_MAX 2048
#define HTTP_QUERY_ARGS_MAX 32

/* How long a stop waits, once no unit is queued, for the answers the last
 * units made to be sent: milliseconds on a live client, so this only
 * bounds one that stopped reading. */
#define HTTP_ANSWER_WAIT_MS 5000

/* A req_ctx is malloc'd per request and freed at its end. Up to 1,032
 * bytes glibc serves that from its per-thread cache (tcache); a larger one
 * (or a calloc, which bypasses the cache) takes the large-chunk path,
 * which first consolidates the fast bins that libmicrohttpd's per-header
 * frees fill: ~1,800 instructions a request. */
#define REQ_CTX_MAX 1032
_Static_assert(sizeof(struct req_ctx) <= REQ_CTX_MAX,
	       "struct req_ctx outgrew glibc's tcache: see REQ_CTX_MAX");

/* Fills raw with random bytes from the server's pool (randpool.h). The
 * CSPRNG only fails when the OS has no entropy source at all; ids then only
 * need to be unique-ish, not secret. */
void random_bytes(struct randpool *pool, unsigned char *raw, size_t n)
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
		hex_encode(rnd, 16, rq->request_id);
	if (!tp || parse_traceparent(tp, tp_len, rq->trace_id, rq->span_id, &rq->trace_flags)) {
		hex_encode(rnd + 16, 16, rq->trace_id);
		rq->trace_flags = 1;
		rq->span_id[0] = '\0';
	} else if (MHD_lookup_connection_value_n(rq->conn, MHD_HEADER_KIND, "tracestate", 10, &ts,
						 &ts_len) == MHD_YES && ts_len &&
		   trace_state_valid(ts, ts_len)) {
		rq->tracestate = ts; /* only with a valid traceparent (W3C) */
	}
	/* Our span is a child of the caller's: a new span id, same trace. */
	memcpy(rq->parent_span_id, rq->span_id, sizeof(rq->parent_span_id));
	hex_encode(rnd + 32, 8, rq->span_id);
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
	size_t cookie_bytes;         /* the Cookie value's length */
	size_t cookies;              /* the cookies the library files from it */
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
	} else if (key_size == 6 && !strncasecmp(key, "Cookie", 6) && value) {
		/* The library copies the value and files each "a=b" of it,
		 * split at ',' as at ';' (0.9.75's parse_cookie_header; one
		 * inside quotes counted too, which only errs towards 431):
		 * counting only ';', a POST with 100 ','-separated cookies
		 * ran, committed and was closed unanswered. */
		sc->cookie_bytes += value_size;
		sc->cookies++;
		for (size_t i = 0; i < value_size; i++)
			sc->cookies += value[i] == ';' || value[i] == ',';
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

/* What of the connection's pool a section takes: its bytes, and a record
 * for each header field, query argument and cookie, plus the copy of the
 * Cookie value. Over HTTP_SECTION_MAX (see there) its answer might not
 * fit: 431 then. */
static size_t section_used(const union MHD_ConnectionInfo *size, int args, int fields,
			   const struct hdr_scan *sc)
{
	size_t records = (size_t)(args > 0 ? args : 0) + (size_t)(fields > 0 ? fields : 0) +
			 sc->cookies;

	return (size ? size->header_size : 0) + records * HTTP_MHD_RECORD + sc->cookie_bytes;
}

static enum MHD_Result add_trailer(void *cls, enum MHD_ValueKind kind, const char *key,
				   size_t key_size, const char *value, size_t value_size)
{
	size_t *used = cls;

	(void)kind;
	(void)key;
	(void)value;
	*used += key_size + value_size + 4 + HTTP_MHD_RECORD; /* ": ", CRLF, its record */
	return MHD_YES;
}

/* A chunked body's trailer fields are filed in the pool after the
 * section was estimated, beside it: with them the request is refused 431
 * as a section of that size would have been (a registration with ~70
 * trailers ran, committed and was closed unanswered). True when it
 * answered. */
static bool refuse_large_trailers(struct req_ctx *rq, enum MHD_Result *ret)
{
	size_t used = rq->chunked_section;

	if (!used)
		return false;
	MHD_get_connection_values_n(rq->conn, MHD_FOOTER_KIND, add_trailer, &used);
	if (used <= HTTP_SECTION_MAX)
		return false;
	req_error(rq, ERR_HEADERS_TOO_LARGE, NULL);
	resp_header(&rq->resp, "Connection", "close");
	*ret = send_resp(rq);
	return true;
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
 * else on the connection can be trusted. First, from the same pass, a
 * section too large for its answer to fit the pool: 431, Connection:
 * close (section_used). True when it answered. */
static bool refuse_bad_headers(struct req_ctx *rq, const char *version, enum MHD_Result *ret)
{
	struct hdr_scan sc = { 0 };
	enum err_id err = ERR_INVALID_FRAMING;
	const char *msg;
	const union MHD_ConnectionInfo *size =
		MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
	enum hdr_fault fault = HDR_OK;
	int args, fields;
	size_t used;

	/* The method is the section's first byte (hdr_layout.h). */
	sc.layout_on = rq->h->layout_checks && size;
	if (sc.layout_on) {
		hdr_layout_begin(&sc.layout, rq->method, size->header_size);
		hdr_layout_request(&sc.layout, rq->url, version);
		args = MHD_get_connection_values_n(rq->conn, MHD_GET_ARGUMENT_KIND, scan_arg,
						   &sc.layout);
	} else {
		args = MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, NULL, NULL);
	}
	fields = MHD_get_connection_values_n(rq->conn, MHD_HEADER_KIND, scan_header, &sc);
	if (sc.layout_on)
		fault = hdr_layout_end(&sc.layout);
	used = section_used(size, args, fields, &sc);
	if (sc.transfer_encoding)
		rq->chunked_section = used; /* its trailers add to it (refuse_large_trailers) */
	if (used > HTTP_SECTION_MAX) {
		req_error(rq, ERR_HEADERS_TOO_LARGE, NULL);
		resp_header(&rq->resp, "Connection", "close");
		*ret = send_resp(rq);
		return true;
	}
	if (fault) {
		err = ERR_INVALID_HEADER;
		msg = hdr_fault_str(fault);
	} else if (sc.authorization > 1 || sc.host > 1) {
		err = ERR_INVALID_HEADER;
		msg = sc.host > 1 ? "a request can have only one Host"
				  : "a request can have only one Authorization";
	} else if (!sc.host && version && !strcmp(version, MHD_HTTP_VERSION_1_1)) {
		err = ERR_INVALID_HEADER;
		msg = "an HTTP/1.1 request needs a Host header";
	} else if (sc.content_length && sc.transfer_encoding) {
		msg = "a request cannot have both Content-Length and Transfer-Encoding";
	} else if (sc.content_length > 1) {
		msg = "a request can have only one Content-Length";
	} else if (sc.transfer_encoding > 1 || sc.te_not_chunked) {
		msg = "the only Transfer-Encoding accepted is chunked";
	} else if (sc.bad_bytes) {
		err = ERR_INVALID_HEADER;
		msg = "header names must be tokens and header values UTF-8";
	} else {
		return false;
	}
	req_error_msg(rq, err, msg, NULL);
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
		*ret = fail_now(rq, ERR_OUT_OF_MEMORY);
		return true;
	}
	if (route_path_check(rq->url) || route_decode(rq->url, n, rq->path, NULL)) {
		*ret = fail_now(rq, ERR_INVALID_PATH);
		return true;
	}
	MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, collect_query, &qs);
	if (qs.bad) {
		*ret = fail_now(rq, ERR_INVALID_QUERY);
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

/* libmicrohttpd's URI log callback: it sees the request target as sent,
 * before the library files the query's arguments. A target over
 * HTTP_TARGET_MAX bytes or HTTP_QUERY_ARGS_MAX arguments gets the marker,
 * which on_request() answers 414; on 0.9.75 its query is also cut to
 * nothing in the library's buffer (a NUL after the '?'), so that the
 * library files no argument and cannot fail the way HTTP_TARGET_MAX
 * says. The bytes are the library's read buffer, writable, and only the
 * answer reads the request after this. */
static void *on_target(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct http *h = cls;
	const char *q;
	size_t n, args = 0;

	(void)conn;
	if (!uri)
		return NULL; /* no target at all: the library answers that */
	n = strlen(uri);
	q = memchr(uri, '?', n);
	if (q && q[1])
		for (const char *p = q; p && args <= HTTP_QUERY_ARGS_MAX; p = strchr(p + 1, '&'))
			args++;
	if (n <= HTTP_TARGET_MAX && args <= HTTP_QUERY_ARGS_MAX)
		return NULL;
	if (q && h->layout_checks)
		((char *)q)[1] = '\0';
	return &h->target_marker;
}

/* What a connection carries from accept to close (its socket context):
 * its deadline (reaper.h; NULL: not watched) and its last answer, for
 * reuse (request.h struct resp_cache). */
struct conn_state {
	struct reaper_conn *deadline;
	struct resp_cache cache;
	/* The http_requests and http_duration series of the connection's
	 * last request, by its labels: the method label and the route are
	 * constant strings (method_label, the route table), so pointers
	 * compare them. Series live as long as the metrics (main.c frees
	 * them after the daemon stops). */
	const char *m_method, *m_route;
	int m_status;
	struct metric_series *m_count, *m_duration;
};

static struct conn_state *conn_state(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? ci->socket_context : NULL;
}

/* The connection's deadline (reaper.h), or NULL when it is not watched. */
static struct reaper_conn *conn_deadline(struct MHD_Connection *conn)
{
	struct conn_state *cs = conn_state(conn);

	return cs ? cs->deadline : NULL;
}

struct resp_cache *req_conn_cache(const struct req_ctx *rq)
{
	struct conn_state *cs = conn_state(rq->conn);

	return cs ? &cs->cache : NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	struct http *h = cls;
	struct req_ctx *rq = *con_cls;
	bool target_too_long = rq == (void *)&h->target_marker;

	if (target_too_long)
		rq = NULL; /* on_target() refused it: answered below */
	if (rq == (void *)&h->oom_marker) {
		*upload_data_size = 0; /* answered: drop the body */
		return MHD_YES;
	}
	if (!rq) {
		const char *cl;
		bool answered;
		enum MHD_Result ret;

		/* Not calloc (REQ_CTX_MAX); and explicit_bzero, which the
		 * compiler does not fold with the malloc into a calloc as it
		 * does a memset. */
		rq = malloc(sizeof(*rq));
		if (rq)
			explicit_bzero(rq, sizeof(*rq));
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
		/* Before the layout walk: on_target() cut the query. */
		if (target_too_long) {
			req_error(rq, ERR_URI_TOO_LONG, NULL);
			resp_header(&rq->resp, "Connection", "close");
			return send_resp(rq);
		}
		if (refuse_bad_headers(rq, version, &ret))
			return ret;
		/* Shutting down: new requests get a quick 503 and Connection:
		 * close (send_resp), in-flight ones finish. This stands in for
		 * MHD_quiesce_daemon: see http_stop(). */
		if (atomic_load(&h->app->stopping))
			return fail_now(rq, ERR_SHUTTING_DOWN);
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
				return fail_now(rq, ERR_BODY_OVER_MAX);
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
		enum MHD_Result ret;

		/* All of it is in: no deadline while the handler (and the
		 * store) take their time; on_completed() arms the next one. */
		reaper_disarm(conn_deadline(conn));
		if (refuse_large_trailers(rq, &ret))
			return ret;
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
	const struct log_request line = {
		.method = rq->method,
		.route = req_route(rq),
		.target = rq->url,
		.client_ip = rq->client_ip,
		.span_id = rq->span_id,
		.idempotency = rq->idem_result,
		.status = status,
		.duration_ms = secs * 1000.0, /* to the microsecond */
	};

	log_emit_request(&rq->h->app->log, status >= 500 ? LOG_ERROR : LOG_INFO, rq->request_id,
			 rq->trace_id, &line);
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
	struct conn_state *cs;
	struct metric_series *count, *duration;
	const char *method, *route;
	double secs;
	int status;
	char status_s[FMT_I64_LEN];

	if (!rq || rq == (void *)&h->oom_marker || rq == (void *)&h->target_marker)
		return; /* a marker: the connection closed before on_request() ran */
	cs = conn_state(conn);
	/* The connection may carry another request: a full timeout for it. */
	reaper_arm(cs ? cs->deadline : NULL);
	secs = elapsed_s(&rq->started);
	status = rq->state == RQ_SENT ? rq->resp.status : 499; /* 499: the client went away */
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && rq->state != RQ_SENT)
		status = 499;
	method = method_label(rq->method);
	route = req_route(rq);
	if (cs && cs->m_count && cs->m_method == method && cs->m_route == route && cs->m_status == status) {
		/* As the last request on this connection: no lookups. */
		count = cs->m_count;
		duration = cs->m_duration;
	} else {
		const char *const lv[] = { method, route, status_s };

		fmt_i64(status_s, status); /* before the lookups read it through lv */
		count = metric_series_get(h->app->m.http_requests, lv);
		duration = metric_series_get(h->app->m.http_duration, lv);
		if (cs && count && duration) {
			cs->m_method = method;
			cs->m_route = route;
			cs->m_status = status;
			cs->m_count = count;
			cs->m_duration = duration;
		}
	}
	metric_inc(count);
	metric_observe(duration, secs);
	log_request(rq, secs, status);
	if (h->app->tracer)
		trace_request(rq, status);
	if (rq->idem_running)
		idem_end(h->app->idem, rq->idem_scope, rq->idem_key);
	/* Its unit was queued (set by this connection's thread, which runs
	 * this too), so request_done counted it answering before resuming
	 * the connection that got us here. */
	if (rq->unit_queued)
		atomic_fetch_sub(&h->answering, 1);
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
 * reaper.h for why libmicrohttpd's own (idle) timeout is not enough. Its
 * state (struct conn_state) lives as long; without memory for it the
 * connection goes unwatched and answers are not reused. libmicrohttpd
 * reports the close after the last request's completion. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct http *h = cls;
	struct conn_state *cs = *socket_context;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

		cs = malloc(sizeof(*cs));
		if (cs) {
			cs->deadline = h->reaper && ci ? reaper_watch(h->reaper, ci->connect_fd) : NULL;
			cs->cache.r = NULL;
			cs->m_count = NULL;
		}
		*socket_context = cs;
	} else if (code == MHD_CONNECTION_NOTIFY_CLOSED && cs) {
		/* Before libmicrohttpd closes the socket: see reaper.c. */
		if (h->reaper)
			reaper_unwatch(h->reaper, cs->deadline);
		resp_cache_release(&cs->cache);
		free(cs);
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
				     MHD_OPTION_URI_LOG_CALLBACK, on_target, h,
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
	/* The grace by the clock: counting 10 ms sleeps stretched it by
	 * every sleep's overshoot (a third longer on a loaded machine). */
	for (int64_t end = clock_mono_ms() + grace_ms;
	     atomic_load(&h->inflight) > 0 && clock_mono_ms() < end;)
		nanosleep(&step, NULL);
	/* Past the grace too: a request whose unit is still queued keeps its
	 * connection suspended, and libmicrohttpd 0.9.75's MHD_stop_daemon()
	 * aborts the process on a suspended connection; were it closed
	 * instead, on_completed() would free the req_ctx the store's thread
	 * is running the unit on and request_done() then resumes. The store
	 * answers every unit it took (store_submit: done exactly once; it is
	 * closed after us), so this ends. */
	if (atomic_load(&h->queued) > 0)
		log_msg(&h->app->log, LOG_WARN, "stopping: waiting for %d queued write(s)",
			atomic_load(&h->queued));
	while (atomic_load(&h->queued) > 0)
		nanosleep(&step, NULL);
	/* And for the answers those units made: a resumed connection sends
	 * its answer on its own thread, which MHD_stop_daemon() would
	 * otherwise beat (the client saw the connection closed unanswered
	 * while its write had committed). Bounded: a client that does not
	 * read its answer does not hold the stop for longer. */
	for (int64_t end = clock_mono_ms() + HTTP_ANSWER_WAIT_MS;
	     atomic_load(&h->answering) > 0 && clock_mono_ms() < end;)
		nanosleep(&step, NULL);
	MHD_stop_daemon(h->daemon);
	reaper_free(h->reaper); /* after the daemon: every connection is unwatched */
	free(h);
}

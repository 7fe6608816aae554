/* request.h — what the three modules of the request pipeline share. Route
 * handlers never include it: they see struct req_ctx only through the
 * accessors of dispatch.h and the answers of response.h.
 *
 * One request crosses three modules:
 *   http.c      the transport: libmicrohttpd's callbacks, the connection's
 *               deadline, framing, header and target checks; it creates
 *               the req_ctx on a request's first callback and frees it,
 *               with everything hanging off it, on its completion;
 *   dispatch.c  the dispatcher: the route matched, then its flags applied
 *               in order (authentication, rate limits, body parse, unknown
 *               fields, idempotency), the handler, and req_commit's write
 *               unit on the store;
 *   response.c  the response: struct resp, success answers (the route's
 *               status), error answers (errors.def's rows), the headers
 *               every answer carries, sending.
 * docs/internals/request.md walks one POST through them.
 *
 * The functions declared here are for those three files only. */
#ifndef SETTLED_REQUEST_H
#define SETTLED_REQUEST_H

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "client_addr.h"
#include "fmt.h"
#include "http.h"
#include "idempotency.h"
#include "ratelimit.h"
#include "route_match.h"
#include "trace.h"
#include "validate.h"

struct randpool;

/* The transport's state, one per server: http.c owns and changes it, the
 * dispatcher and the response only read it (app, routes, port). */
struct http {
	struct MHD_Daemon *daemon;
	struct settled *app;
	const struct route *routes;
	size_t nroutes;
	uint16_t port;
	atomic_int inflight;
	/* Requests whose unit is queued on the store and not yet answered
	 * (request_done): their connections are suspended and the writer
	 * holds their req_ctx. http_stop waits for none before stopping the
	 * daemon (see there). */
	atomic_int queued;
	/* Requests request_done resumed whose answer is not sent yet
	 * (on_completed): http_stop waits for them too, else stopping the
	 * daemon closes a resumed connection before it sends its answer. */
	atomic_int answering;
	struct reaper *reaper;  /* request deadline (reaper.h); NULL: none */
	bool layout_checks;     /* the libmicrohttpd whose layout hdr_layout.h knows */
	char oom_marker;        /* its address marks a request answered for want of memory */
	char target_marker;     /* its address marks a request target too long (on_target) */
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
	char client_ip[CLIENT_ADDR_LEN]; /* per-address limits key it by client_addr_rl_key() */
	const char *client_id;
	struct buf body;
	bool verifying;                 /* ROUTE_SIGNED: the handler's signature pass */
	bool body_too_large;        /* the body is being dropped: over the cap, or ... */
	bool body_nomem;            /* ... no memory to keep it (a 503, not a 413) */
	size_t discarded;
	size_t chunked_section;     /* chunked: the section's pool estimate (http.c), else 0 */
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
	bool idem_replayed;         /* the unit answered another request's record */
	bool idem_check_in_unit;    /* the store was not asked whether the key is finished:
	                             * the unit asks first (ROUTE_KEY_CHECK_IN_UNIT) */
	const char *idem_result;    /* "HIT" / "MISS" for X-Idempotency */

	/* write unit */
	req_unit_fn *unit;
	void *unit_arg;
	const struct req_merge *merge; /* req_commit_merged's; NULL: alone */
	/* The handler queued a unit: its answer comes from request_done, on
	 * the writer's thread. Written and read by the request's own thread
	 * only; rq->state is not, since the writer may finish the unit (and
	 * set RQ_READY) before the handler has returned. */
	bool unit_queued;
	enum st_rc handler_rc;      /* what the handler's unit returned */

	/* rate limits: the policies decided, in route order, and which one the
	 * headers report (the refusing one, else the most restrictive) */
	const struct rl_policy *rl_pol[ROUTE_MAX_LIMITS + 1]; /* + the failed-authentication policy */
	struct rl_decision rl_dec[ROUTE_MAX_LIMITS + 1];
	int rl_n;                   /* 0: no RateLimit headers */
	int rl_shown;
	int64_t rl_now_ms;          /* the clock the decisions were taken at */
};

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

/* ---------------------------------------------------------------- response.c */

/* How rq's answer treats CORS, from SETTLED_CORS_ORIGINS and its Origin. */
enum cors_answer cors_answer(const struct req_ctx *rq);
/* Whole seconds from ms, rounded up and at least 1 (Retry-After, w=). */
int64_t rl_secs(int64_t ms);
/* The headers every answer carries: Content-Type (unless the resp sets
 * one), X-Request-Id, the security headers, traceparent, CORS, RateLimit. */
void add_common_headers(struct req_ctx *rq, struct MHD_Response *r);
/* A 503 for a request whose req_ctx could not be allocated. */
enum MHD_Result answer_oom(struct http *h, struct MHD_Connection *conn);

/* A connection's last answer, kept for the next one (response.c): an
 * answer with a small body that carries the same headers but for the
 * per-request ones (a health probe polling on a keep-alive connection, a
 * client registering wallet after wallet) reuses the libmicrohttpd
 * response, replacing only X-Request-Id, traceparent, the rate-limit
 * counts and Location where they changed, instead of a new response and
 * its headers (3 mallocs each in libmicrohttpd 0.9.75). The body is the
 * kept array itself (MHD_RESPMEM_PERSISTENT): an answer of the same length
 * is copied over it, which is safe because a connection answers one
 * request at a time and libmicrohttpd has sent the last answer in full
 * before the next request is handed to us. What decides the other headers
 * is kept beside it. Owned by the connection (http.c); the response holds
 * one reference of ours. */
#define RESP_CACHE_BODY_MAX 256
#define RESP_CACHE_LOCATION_MAX 128
/* The per-request headers (response.c prh_names), and the room each
 * value takes where a kept answer keeps it: a client's X-Request-Id,
 * traceparent without tracestate, "limit=N, remaining=N, reset=N", two
 * numbers. Kept tight: an idle keep-alive connection holds one. */
enum { PRH_ID, PRH_TRACEPARENT, PRH_RATELIMIT, PRH_REMAINING, PRH_RESET, PRH_N };
#define PRH_VALUE_MAX (REQUEST_ID_MAX + 1)
#define PRH_CAPS { REQUEST_ID_MAX + 1, TRACE_PARENT_LEN + 1, 3 * FMT_I64_LEN + 26, FMT_I64_LEN, FMT_I64_LEN }
#define PRH_BYTES (REQUEST_ID_MAX + 1 + TRACE_PARENT_LEN + 1 + 5 * FMT_I64_LEN + 26)
struct resp_cache {
	struct MHD_Response *r;  /* NULL: none */
	int status;
	enum cors_answer cors;
	int rl_n, rl_shown;
	const struct rl_policy *rl_pol[ROUTE_MAX_LIMITS + 1];
	int64_t rl_limit;        /* the reported decision's limit */
	const char *idem_result; /* X-Idempotency's value (a literal), NULL: none */
	bool has_location;       /* then location is Location's value */
	size_t body_len;
	char body[RESP_CACHE_BODY_MAX]; /* r's body (not a copy: r points here) */
	char prh[PRH_BYTES];     /* the per-request header values r has, PRH_CAPS bytes each */
	char location[RESP_CACHE_LOCATION_MAX];
};
/* Drops c's response; c is empty (reusable) afterwards. */
void resp_cache_release(struct resp_cache *c);
/* Queues rq->resp (a 500 if the handler gave none, the constant 503 if
 * not even the error could be built) and sets RQ_SENT. Releases the
 * request's running mark on its Idempotency-Key first. */
enum MHD_Result send_resp(struct req_ctx *rq);
/* req_error() then send_resp(): answers e at once. */
enum MHD_Result fail_now(struct req_ctx *rq, enum err_id e);

/* ---------------------------------------------------------------- dispatch.c */

/* Matches rq against the route table. Answers 404, 405, OPTIONS and a bad
 * path parameter itself (*answered true); otherwise sets rq->route and the
 * decoded parameters. */
enum MHD_Result route_request(struct req_ctx *rq, bool *answered);
/* Runs everything between the last body byte and the handler, then the
 * handler; sends the answer unless the handler called req_commit(). */
enum MHD_Result dispatch(struct req_ctx *rq);
/* The request's trace context: its trace, the caller's span as parent
 * (parent = true) or our server span (false). tracestate is borrowed. */
void req_trace_ctx(const struct req_ctx *rq, bool parent, struct trace_ctx *c);

/* ---------------------------------------------------------------- http.c */

/* n random bytes from pool; never fails (see http.c). */
void random_bytes(struct randpool *pool, unsigned char *raw, size_t n);
/* The reusable answer of rq's connection, NULL when it has none. */
struct resp_cache *req_conn_cache(const struct req_ctx *rq);

#endif

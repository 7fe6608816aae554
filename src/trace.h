/* trace.h — distributed tracing: W3C trace context, spans, OTLP/HTTP export.
 *
 * A span is a fixed-size record (struct trace_span: ids, name, kind, times,
 * status, up to TRACE_MAX_ATTRS attributes whose text lives in the span's
 * own arena) that its owner fills on its own stack and hands to the tracer
 * when it ends. The tracer copies it into a bounded ring (a mutex, no
 * allocation); when the ring is full the span is dropped and counted
 * (settled_trace_spans_dropped_total{reason="queue_full"}), so recording
 * never blocks or fails the caller. One exporter thread takes batches (every
 * interval or as soon as batch_max spans wait) and POSTs them as OTLP/HTTP
 * JSON to {endpoint}/v1/traces with libcurl; a failed POST is counted and
 * its spans dropped, never retried. At shutdown it exports what it can
 * within shutdown_ms (a POST in flight is aborted at that deadline).
 * docs/internals/tracing.md has the span tree and the attributes.
 *
 * Off means off: with OTEL_EXPORTER_OTLP_ENDPOINT unset there is no tracer
 * (NULL), and every function here accepts a span started with a NULL
 * tracer and does nothing but keep the ids, which log lines still carry.
 *
 * Propagation (docs/internals/tracing.md): a request's context goes into
 * the jobs its write unit enqueues (jobs.traceparent, the "stored form"
 * below), so a job's run span is a child of the request span that caused
 * it. Sampling is parent-based: a span is recorded when its trace's
 * sampled flag (flags & 1) is set; a new trace is sampled.
 *
 * Thread-safety: a span belongs to one thread until trace_span_end();
 * trace_record() and trace_drain() may be called from any thread. */
#ifndef SETTLED_TRACE_H
#define SETTLED_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "rc.h"

struct logger;
struct metrics;
struct tracer;

#define TRACE_ID_LEN 32           /* hex digits of a trace id */
#define TRACE_SPAN_ID_LEN 16      /* hex digits of a span id */
#define TRACE_STATE_MAX 512       /* tracestate bytes kept (W3C: at least 512 propagated) */
#define TRACE_PARENT_LEN 55       /* "00-<trace id>-<span id>-<flags>" */
/* The stored form: a traceparent, optionally one space and a tracestate. */
#define TRACE_CONTEXT_MAX (TRACE_PARENT_LEN + 1 + TRACE_STATE_MAX + 1)
#define TRACE_MAX_ATTRS 16        /* attributes per span; more are dropped */
#define TRACE_ARENA 1024          /* bytes of text per span (name, state, values) */

/* OTLP Span.SpanKind values. */
enum trace_kind {
	TRACE_INTERNAL = 1,
	TRACE_SERVER = 2,
	TRACE_CLIENT = 3,
	TRACE_PRODUCER = 4,
	TRACE_CONSUMER = 5,
};

/* OTLP Status.StatusCode values. */
enum trace_status { TRACE_UNSET = 0, TRACE_OK = 1, TRACE_ERROR = 2 };

/* A W3C trace context: what crosses a process boundary or the job queue.
 * span_id is the span a continuation becomes the child of ("" when the
 * trace has no parent span yet). state is borrowed (NULL: none). */
struct trace_ctx {
	char trace_id[TRACE_ID_LEN + 1];
	char span_id[TRACE_SPAN_ID_LEN + 1];
	uint8_t flags;
	const char *state;
};

/* One attribute. Keys must have static storage (string literals). */
struct trace_attr {
	const char *key;
	int64_t i;        /* integer value */
	uint16_t off;     /* string value: at arena + off, NUL-terminated */
	bool is_int;
};

/* A span. Fill it with the functions below; the fields are public so the
 * encoder and tests can read them. Text is truncated (on a UTF-8 character
 * boundary; invalid bytes become '?') when the arena runs out. */
struct trace_span {
	struct tracer *tr;                 /* recorded there at end; NULL: not recorded */
	char trace_id[TRACE_ID_LEN + 1];
	char span_id[TRACE_SPAN_ID_LEN + 1];
	char parent_id[TRACE_SPAN_ID_LEN + 1]; /* "" for a root span */
	uint8_t flags;
	enum trace_kind kind;
	enum trace_status status;
	int64_t start_ns, end_ns;          /* unix nanoseconds; end 0 until ended */
	uint16_t name, state, status_msg;  /* arena offsets; TRACE_NO_TEXT when absent */
	uint16_t nattrs, arena_len;
	struct trace_attr attrs[TRACE_MAX_ATTRS];
	char arena[TRACE_ARENA];
};
#define TRACE_NO_TEXT UINT16_MAX

/* ---- the tracer ---- */

struct trace_options {
	const char *endpoint;       /* OTLP/HTTP base URL; spans go to {endpoint}/v1/traces */
	const char *service_name;   /* resource service.name; NULL = "settled" */
	const char *instance_id;    /* resource service.instance.id; NULL = none */
	size_t capacity;            /* ring size in spans; 0 = 4096 */
	size_t batch_max;           /* spans per POST, and the early-export mark; 0 = 512 */
	int64_t interval_ms;        /* export at least this often; 0 = 1000 */
	int64_t timeout_ms;         /* one POST's deadline; 0 = 5000 */
	int64_t shutdown_ms;        /* flush budget at trace_free; 0 = 2000 */
	struct metrics *metrics;    /* registers the settled_trace_* families; NULL = none */
	const struct logger *log;   /* export failures (at most one line a minute); NULL = none */
};

/* Creates a tracer with an empty ring and no thread (strings are copied).
 * ST_NOMEM, or ST_INVALID with err (may be NULL) saying why. */
enum st_rc trace_new(const struct trace_options *opt, struct tracer **out, struct buf *err);

/* Starts the exporter thread (and libcurl: call it before other threads
 * might, as curl_global_init is only thread-safe in recent libcurl), once.
 * ST_INVALID without an endpoint; ST_INTERNAL when the thread cannot start. */
enum st_rc trace_start(struct tracer *tr, struct buf *err);

/* Stops the exporter: what is queued is exported within shutdown_ms, the
 * rest dropped (counted, reason "shutdown"); then frees. Every span must
 * have ended. Accepts NULL. */
void trace_free(struct tracer *tr);

/* Copies sp into the ring, or drops it (counted) when the ring is full.
 * Never blocks beyond a short mutex hold. Accepts a NULL tracer. */
void trace_record(struct tracer *tr, const struct trace_span *sp);

/* Moves up to max queued spans, oldest first, into out; returns how many.
 * For the exporter and tests. */
size_t trace_drain(struct tracer *tr, struct trace_span *out, size_t max);

/* Spans dropped because the ring was full. */
uint64_t trace_dropped(const struct tracer *tr);

/* ---- spans ---- */

/* Unix time in nanoseconds (CLOCK_REALTIME). */
int64_t trace_now_ns(void);

/* Starts sp now: a new span id; the trace id, flags and state of parent,
 * whose span_id becomes sp's parent; parent NULL starts a new, sampled
 * trace. Recorded in tr at the end if tr is not NULL and the trace is
 * sampled. name is copied. */
void trace_span_start(struct trace_span *sp, struct tracer *tr, const char *name,
		      enum trace_kind kind, const struct trace_ctx *parent);
/* As trace_span_start, with the ids' random bytes given (a trace id's,
 * then a span id's): callers that start many spans draw them from a
 * randpool (randpool.h) instead of one RAND_bytes call per id. */
#define TRACE_SPAN_RND (TRACE_ID_LEN / 2 + TRACE_SPAN_ID_LEN / 2)
void trace_span_start_rnd(struct trace_span *sp, struct tracer *tr, const char *name,
			  enum trace_kind kind, const struct trace_ctx *parent,
			  const unsigned char rnd[TRACE_SPAN_RND]);
/* Starts sp as a child of parent (same tracer, trace and state). */
void trace_span_child(struct trace_span *sp, const struct trace_span *parent, const char *name,
		      enum trace_kind kind);
/* For a span whose id was handed out before it was started (a server span:
 * its id is in the response's traceparent): sets the id (16 lower-case hex)
 * and the start time (unix ns; 0 keeps the current one). */
void trace_span_adopt(struct trace_span *sp, const char *span_id, int64_t start_ns);
/* The context a child or a job continues from: sp's trace, sp as the
 * parent. out->state points into sp (valid while sp is). */
void trace_span_ctx(const struct trace_span *sp, struct trace_ctx *out);

/* Attributes. NULL val: nothing set. Keys must be string literals. */
void trace_span_set_str(struct trace_span *sp, const char *key, const char *val);
void trace_span_set_int(struct trace_span *sp, const char *key, int64_t val);
/* msg may be NULL (OTLP sends a message with TRACE_ERROR only). */
void trace_span_set_status(struct trace_span *sp, enum trace_status status, const char *msg);

/* Ends sp now (or at the end time already set) and records it. */
void trace_span_end(struct trace_span *sp);

/* Text of the span's name/state/status, or NULL when absent. */
const char *trace_span_text(const struct trace_span *sp, uint16_t off);

/* The INTERNAL "store.write" span of a write unit: child of parent, from
 * start_ns (submitted) to now (done), on the store named store_name
 * (store_ops.name: db.system sqlite or postgresql), failed when rc maps to
 * a 5xx (a store failure, not a refused request). No-op when tr is NULL. */
void trace_store_span(struct tracer *tr, const struct trace_ctx *parent, const char *store_name,
		      int64_t start_ns, enum st_rc rc);

/* ---- W3C context ---- */

/* Whether s[0..len) is a tracestate header we propagate: at most
 * TRACE_STATE_MAX bytes and 32 list members, each key=value with a W3C key
 * (lcalpha then [a-z0-9_*-/], or tenant@system) and a value of printable
 * ASCII without ',' or '='. Empty members (",,") are allowed. */
bool trace_state_valid(const char *s, size_t len);

/* Writes c in the stored form "00-<trace>-<span>-<flags>[ <state>]". */
void trace_ctx_format(const struct trace_ctx *c, char out[TRACE_CONTEXT_MAX]);

/* Parses the stored form (a bare traceparent too). out->state points into
 * s (NULL when none). ST_INVALID when s holds no valid traceparent; an
 * invalid state is dropped, not an error. */
enum st_rc trace_ctx_parse(const char *s, struct trace_ctx *out);

/* ---- OTLP/HTTP JSON ---- */

/* Appends one ExportTraceServiceRequest holding spans[0..n) to out:
 * {"resourceSpans":[{"resource":{"attributes":[service.name, ...]},
 *   "scopeSpans":[{"scope":{"name":"settled"},"spans":[...]}]}]}
 * with hex ids, decimal-string nanosecond times and integer enums, as the
 * OTLP JSON encoding specifies. instance_id may be NULL. On error (out's
 * cap) out is left as it was. */
enum st_rc trace_encode(const struct trace_span *spans, size_t n, const char *service_name,
			const char *instance_id, struct buf *out);

#endif

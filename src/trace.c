/* trace.c — spans, the bounded span ring, the OTLP/HTTP JSON exporter.
 *
 * Invariants:
 *   - the ring holds at most cap spans, oldest at head; recording copies a
 *     span in under mu (only the used part of its arena) or drops it: a
 *     request thread never waits for the exporter, the network or memory;
 *   - only the exporter thread touches the curl handle, the batch array
 *     and the body buf, so it encodes and POSTs without holding mu;
 *   - a batch is POSTed once: on failure (connection, timeout, non-2xx)
 *     it is dropped and counted. A collector that is down costs one
 *     connect timeout per interval, never a growing backlog;
 *   - shutdown is bounded: trace_free sets a deadline (shutdown_ms from
 *     then); the POST in flight is aborted at it and no batch starts after
 *     it, so a slow collector delays exit by at most about shutdown_ms;
 *   - span text is sanitised when it is set (valid UTF-8, capped), so the
 *     encoder only escapes and always emits valid JSON.
 *
 * Workload: a few spans per request, 1-2 KB each; with the defaults the
 * ring is about 6 MB and one POST carries up to 512 spans. */
#include "trace.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hex.h"
#include "json_out.h"
#include "log.h"
#include "metrics.h"
#include "validate.h"
#include "fmt.h"
#include "clock.h"
#include "banned.h"

#define TRACE_DEFAULT_CAPACITY 4096
#define TRACE_DEFAULT_BATCH 512
#define TRACE_DEFAULT_INTERVAL_MS 1000
#define TRACE_DEFAULT_TIMEOUT_MS 5000
#define TRACE_DEFAULT_SHUTDOWN_MS 2000
#define TRACE_CONNECT_TIMEOUT_MS 1000
#define TRACE_VALUE_MAX 256          /* bytes of one attribute value */
#define TRACE_BODY_MAX ((size_t)32 << 20)
#define TRACE_LOG_EVERY_MS 60000     /* export failures: one log line a minute at most */

enum drop_reason { DROP_QUEUE_FULL = 0, DROP_EXPORT_FAILED, DROP_SHUTDOWN, DROP_COUNT };
static const char *const drop_reasons[DROP_COUNT] = { "queue_full", "export_failed", "shutdown" };

struct tracer {
	pthread_mutex_t mu;
	pthread_cond_t cv;           /* exporter: a batch is full, or stop */
	struct trace_span *ring;
	size_t cap, head, count;
	bool stopping;
	/* Set by trace_free: the monotonic ms by which the exporter must be
	 * done. An in-flight POST is aborted at it (progress callback), and no
	 * new batch starts after it; 0 while running. */
	atomic_llong deadline_ms;

	size_t batch_max;
	int64_t interval_ms, timeout_ms, shutdown_ms;
	char *url;                   /* {endpoint}/v1/traces, NULL without an endpoint */
	char *service_name;
	char *instance_id;
	const struct logger *log;

	atomic_uint_fast64_t dropped_full;
	struct metric_series *dropped[DROP_COUNT];
	struct metric_series *exported;
	struct metric_series *failures;

	/* the exporter thread's own */
	bool started;
	pthread_t thread;
	CURL *curl;
	struct curl_slist *headers;
	struct trace_span *batch;
	struct buf body;
	uint64_t nfailures;
	int64_t last_log_ms;
};

/* ---------------------------------------------------------------- clocks, ids */

int64_t trace_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* raw[0..nbytes) as lower-case hex, never all zeros (W3C invalid). */
static void hex_id(const unsigned char *raw, size_t nbytes, char *out)
{
	bool zero = true;

	for (size_t i = 0; i < nbytes; i++)
		zero &= raw[i] == 0;
	hex_encode(raw, nbytes, out);
	if (zero)
		out[2 * nbytes - 1] = '1';
}

/* nbytes random bytes as lower-case hex (never all zeros: W3C invalid). */
static void random_id(char *out, size_t nbytes)
{
	unsigned char raw[16];

	if (RAND_bytes(raw, (int)nbytes) != 1) {
		/* No entropy source at all: ids need only be unlikely to repeat. */
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		for (size_t i = 0; i < nbytes; i++)
			raw[i] = (unsigned char)(((uint64_t)ts.tv_nsec * 2654435761u) >> (i % 4 * 8)) ^
				 (unsigned char)((uintptr_t)out >> (i % 8)) ^ (unsigned char)ts.tv_sec;
	}
	hex_id(raw, nbytes, out);
}

static bool is_lower_hex(const char *s, size_t n)
{
	return hex_all_lower(s, n) && s[n] == '\0'; /* stops at a NUL: not a digit */
}

/* ---------------------------------------------------------------- span text */

/* Copies s into the arena (at most max bytes, cut on a character
 * boundary, invalid bytes as '?'); returns its offset, or TRACE_NO_TEXT
 * when the arena is full. */
static uint16_t put_text(struct trace_span *sp, const char *s, size_t max)
{
	size_t room = TRACE_ARENA - sp->arena_len, len = strlen(s), i = 0, o = 0;
	char *dst = sp->arena + sp->arena_len;
	uint16_t off = sp->arena_len;

	if (room < 1)
		return TRACE_NO_TEXT;
	room--; /* the NUL */
	if (room > max)
		room = max;
	while (i < len) {
		size_t k = utf8_char_len(s + i, len - i);

		if (!k) {
			if (o + 1 > room)
				break;
			dst[o++] = '?';
			i++;
			continue;
		}
		if (o + k > room)
			break;
		memcpy(dst + o, s + i, k);
		o += k;
		i += k;
	}
	dst[o] = '\0';
	sp->arena_len = (uint16_t)(sp->arena_len + o + 1);
	return off;
}

const char *trace_span_text(const struct trace_span *sp, uint16_t off)
{
	return off == TRACE_NO_TEXT || off >= sp->arena_len ? NULL : sp->arena + off;
}

/* ---------------------------------------------------------------- spans */

static void span_start(struct trace_span *sp, struct tracer *tr, const char *name,
		       enum trace_kind kind, const struct trace_ctx *parent,
		       const unsigned char *rnd);

void trace_span_start(struct trace_span *sp, struct tracer *tr, const char *name,
		      enum trace_kind kind, const struct trace_ctx *parent)
{
	span_start(sp, tr, name, kind, parent, NULL);
}

void trace_span_start_rnd(struct trace_span *sp, struct tracer *tr, const char *name,
			  enum trace_kind kind, const struct trace_ctx *parent,
			  const unsigned char rnd[TRACE_SPAN_RND])
{
	span_start(sp, tr, name, kind, parent, rnd);
}

static void span_start(struct trace_span *sp, struct tracer *tr, const char *name,
		       enum trace_kind kind, const struct trace_ctx *parent,
		       const unsigned char *rnd)
{
	/* The arena is not cleared: only arena[0..arena_len) is ever read. */
	memset(sp, 0, offsetof(struct trace_span, arena));
	sp->name = sp->state = sp->status_msg = TRACE_NO_TEXT;
	if (parent && is_lower_hex(parent->trace_id, TRACE_ID_LEN)) {
		memcpy(sp->trace_id, parent->trace_id, sizeof(sp->trace_id));
		if (is_lower_hex(parent->span_id, TRACE_SPAN_ID_LEN))
			memcpy(sp->parent_id, parent->span_id, sizeof(sp->parent_id));
		sp->flags = parent->flags;
	} else {
		if (rnd)
			hex_id(rnd, TRACE_ID_LEN / 2, sp->trace_id);
		else
			random_id(sp->trace_id, TRACE_ID_LEN / 2);
		sp->flags = 1;
		parent = NULL;
	}
	if (rnd)
		hex_id(rnd + TRACE_ID_LEN / 2, TRACE_SPAN_ID_LEN / 2, sp->span_id);
	else
		random_id(sp->span_id, TRACE_SPAN_ID_LEN / 2);
	sp->tr = (sp->flags & 1) ? tr : NULL;
	sp->kind = kind;
	sp->start_ns = trace_now_ns();
	sp->name = put_text(sp, name ? name : "span", 128);
	if (parent && parent->state && *parent->state)
		sp->state = put_text(sp, parent->state, TRACE_STATE_MAX);
}

void trace_span_ctx(const struct trace_span *sp, struct trace_ctx *out)
{
	memcpy(out->trace_id, sp->trace_id, sizeof(out->trace_id));
	memcpy(out->span_id, sp->span_id, sizeof(out->span_id));
	out->flags = sp->flags;
	out->state = trace_span_text(sp, sp->state);
}

void trace_span_child(struct trace_span *sp, const struct trace_span *parent, const char *name,
		      enum trace_kind kind)
{
	struct trace_ctx c;

	trace_span_ctx(parent, &c);
	trace_span_start(sp, parent->tr, name, kind, &c);
}

void trace_span_adopt(struct trace_span *sp, const char *span_id, int64_t start_ns)
{
	if (span_id && is_lower_hex(span_id, TRACE_SPAN_ID_LEN))
		memcpy(sp->span_id, span_id, sizeof(sp->span_id));
	if (start_ns > 0)
		sp->start_ns = start_ns;
}

static struct trace_attr *attr_slot(struct trace_span *sp, const char *key)
{
	if (!key || sp->nattrs == TRACE_MAX_ATTRS)
		return NULL;
	return &sp->attrs[sp->nattrs];
}

void trace_span_set_str(struct trace_span *sp, const char *key, const char *val)
{
	struct trace_attr *a = attr_slot(sp, key);
	uint16_t off;

	if (!a || !val || !sp->tr)
		return; /* nobody will read it: skip the copy */
	off = put_text(sp, val, TRACE_VALUE_MAX);
	if (off == TRACE_NO_TEXT)
		return;
	*a = (struct trace_attr){ .key = key, .off = off };
	sp->nattrs++;
}

void trace_span_set_int(struct trace_span *sp, const char *key, int64_t val)
{
	struct trace_attr *a = attr_slot(sp, key);

	if (!a || !sp->tr)
		return;
	*a = (struct trace_attr){ .key = key, .i = val, .is_int = true };
	sp->nattrs++;
}

void trace_span_set_status(struct trace_span *sp, enum trace_status status, const char *msg)
{
	sp->status = status;
	if (msg && sp->tr && status == TRACE_ERROR && sp->status_msg == TRACE_NO_TEXT)
		sp->status_msg = put_text(sp, msg, TRACE_VALUE_MAX);
}

void trace_span_end(struct trace_span *sp)
{
	if (!sp->end_ns)
		sp->end_ns = trace_now_ns();
	if (sp->end_ns < sp->start_ns)
		sp->end_ns = sp->start_ns;
	if (sp->tr)
		trace_record(sp->tr, sp);
	sp->tr = NULL; /* recorded once */
}

void trace_store_span(struct tracer *tr, const struct trace_ctx *parent, const char *store_name,
		      int64_t start_ns, enum st_rc rc)
{
	struct trace_span sp;

	if (!tr)
		return;
	trace_span_start(&sp, tr, "store.write", TRACE_INTERNAL, parent);
	trace_span_adopt(&sp, NULL, start_ns);
	trace_span_set_str(&sp, "db.system",
			   store_name && !strcmp(store_name, "postgres") ? "postgresql" : store_name);
	trace_span_set_str(&sp, "db.operation.name", "transaction");
	trace_span_set_str(&sp, "settled.store.result", st_rc_str(rc));
	/* A refusal (conflict, not found...) rolls the unit back on purpose;
	 * only the store failing is an error of this span. */
	if (rc == ST_NOMEM || rc == ST_BUSY || rc == ST_UNAVAILABLE || rc == ST_INTERNAL)
		trace_span_set_status(&sp, TRACE_ERROR, st_rc_str(rc));
	trace_span_end(&sp);
}

/* ---------------------------------------------------------------- W3C context */

static bool key_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '*' ||
	       c == '/';
}

/* key = simple-key / tenant-id "@" system-id (W3C trace-context, 3.3.1.3.1). */
static bool state_key_ok(const char *k, size_t n)
{
	const char *at = memchr(k, '@', n);

	if (!n)
		return false;
	if (at) {
		size_t tn = (size_t)(at - k), sn = n - tn - 1;

		if (tn < 1 || tn > 241 || sn < 1 || sn > 14)
			return false;
		if (!((k[0] >= 'a' && k[0] <= 'z') || (k[0] >= '0' && k[0] <= '9')) ||
		    !(at[1] >= 'a' && at[1] <= 'z'))
			return false;
		for (size_t i = 0; i < n; i++)
			if (k + i != at && !key_char(k[i]))
				return false;
		return true;
	}
	if (n > 256 || !(k[0] >= 'a' && k[0] <= 'z'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!key_char(k[i]))
			return false;
	return true;
}

/* value = 0*255(chr) nblk-chr: printable ASCII but ',' and '=', no trailing space. */
static bool state_value_ok(const char *v, size_t n)
{
	if (n < 1 || n > 256 || v[n - 1] == ' ')
		return false;
	for (size_t i = 0; i < n; i++)
		if (v[i] < 0x20 || v[i] > 0x7e || v[i] == ',' || v[i] == '=')
			return false;
	return true;
}

bool trace_state_valid(const char *s, size_t len)
{
	size_t i = 0, members = 0;

	if (!s || len > TRACE_STATE_MAX || memchr(s, '\0', len))
		return false;
	for (;;) {
		size_t end = i, a, z;
		const char *eq;

		while (end < len && s[end] != ',')
			end++;
		a = i;
		z = end;
		while (a < z && (s[a] == ' ' || s[a] == '\t'))
			a++;
		while (z > a && (s[z - 1] == ' ' || s[z - 1] == '\t'))
			z--;
		if (a < z) {
			eq = memchr(s + a, '=', z - a);
			if (!eq || !state_key_ok(s + a, (size_t)(eq - (s + a))) ||
			    !state_value_ok(eq + 1, (size_t)(s + z - eq - 1)) || ++members > 32)
				return false;
		}
		if (end >= len)
			return true;
		i = end + 1;
	}
}

void trace_ctx_format(const struct trace_ctx *c, char out[TRACE_CONTEXT_MAX])
{
	size_t st = c->state ? strnlen(c->state, TRACE_STATE_MAX + 1) : 0;
	char *p = out;

	/* By hand: this runs on every request that writes (fmt.h says why). */
	p = stpcpy(p, "00-");
	p = stpncpy(p, c->trace_id, TRACE_ID_LEN);
	*p++ = '-';
	p = stpncpy(p, c->span_id, TRACE_SPAN_ID_LEN);
	*p++ = '-';
	hex_encode(&c->flags, 1, p);
	p += 2;
	if (st && st <= TRACE_STATE_MAX) {
		*p++ = ' ';
		memcpy(p, c->state, st);
		p += st;
	}
	*p = '\0';
}

enum st_rc trace_ctx_parse(const char *s, struct trace_ctx *out)
{
	size_t tp_len;
	struct trace_ctx c = { .state = NULL };

	if (!s)
		return ST_INVALID;
	tp_len = strcspn(s, " ");
	if (parse_traceparent(s, tp_len, c.trace_id, c.span_id, &c.flags))
		return ST_INVALID;
	if (s[tp_len] == ' ' && s[tp_len + 1] && trace_state_valid(s + tp_len + 1, strlen(s + tp_len + 1)))
		c.state = s + tp_len + 1;
	*out = c;
	return ST_OK;
}

/* ---------------------------------------------------------------- OTLP JSON */

/* {"key":k,"value":{"stringValue":v}} */
static void put_str_attr(struct json_writer *w, const char *k, const char *v)
{
	jw_object(w, NULL);
	jw_str(w, "key", k);
	jw_object(w, "value");
	jw_str(w, "stringValue", v);
	jw_close(w);
	jw_close(w);
}

static void put_span(struct json_writer *w, const struct trace_span *sp)
{
	const char *state = trace_span_text(sp, sp->state);
	const char *name = trace_span_text(sp, sp->name);
	const char *msg = trace_span_text(sp, sp->status_msg);

	jw_object(w, NULL);
	jw_str(w, "traceId", sp->trace_id);
	jw_str(w, "spanId", sp->span_id);
	if (sp->parent_id[0])
		jw_str(w, "parentSpanId", sp->parent_id);
	if (state)
		jw_str(w, "traceState", state);
	jw_str(w, "name", name ? name : "span");
	jw_i64(w, "kind", sp->kind);
	/* int64 as a decimal string: the proto3 JSON mapping of fixed64. */
	jw_i64_str(w, "startTimeUnixNano", sp->start_ns);
	jw_i64_str(w, "endTimeUnixNano", sp->end_ns);
	jw_array(w, "attributes");
	for (unsigned i = 0; i < sp->nattrs; i++) {
		const struct trace_attr *a = &sp->attrs[i];

		if (a->is_int) {
			jw_object(w, NULL);
			jw_str(w, "key", a->key);
			jw_object(w, "value");
			jw_i64_str(w, "intValue", a->i);
			jw_close(w);
			jw_close(w);
		} else {
			const char *v = trace_span_text(sp, a->off);

			put_str_attr(w, a->key, v ? v : "");
		}
	}
	jw_close(w);
	jw_object(w, "status");
	jw_i64(w, "code", sp->status);
	if (sp->status == TRACE_ERROR && msg)
		jw_str(w, "message", msg);
	jw_close(w);
	jw_close(w);
}

enum st_rc trace_encode(const struct trace_span *spans, size_t n, const char *service_name,
			const char *instance_id, struct buf *out)
{
	struct json_writer w;

	jw_begin(&w, out);
	/* Span text is well-formed already (put_text); the service name and
	 * attribute keys come from configuration and code. */
	w.esc = JSON_ESC_REPAIR | JSON_ESC_LOWER;
	jw_array(&w, "resourceSpans");
	jw_object(&w, NULL);
	jw_object(&w, "resource");
	jw_array(&w, "attributes");
	put_str_attr(&w, "service.name", service_name ? service_name : "settled");
	if (instance_id)
		put_str_attr(&w, "service.instance.id", instance_id);
	put_str_attr(&w, "telemetry.sdk.name", "settled");
	jw_close(&w);
	jw_close(&w);
	jw_array(&w, "scopeSpans");
	jw_object(&w, NULL);
	jw_object(&w, "scope");
	jw_str(&w, "name", "settled");
	jw_close(&w);
	jw_array(&w, "spans");
	for (size_t i = 0; i < n; i++)
		put_span(&w, &spans[i]);
	jw_close(&w); /* spans */
	jw_close(&w); /* the scopeSpans element */
	jw_close(&w); /* scopeSpans */
	jw_close(&w); /* the resourceSpans element */
	jw_close(&w); /* resourceSpans */
	return jw_end(&w);
}

/* ---------------------------------------------------------------- the ring */

void trace_record(struct tracer *tr, const struct trace_span *sp)
{
	bool dropped = false;

	if (!tr || !sp)
		return;
	pthread_mutex_lock(&tr->mu);
	if (tr->count == tr->cap) {
		dropped = true;
	} else {
		struct trace_span *slot = &tr->ring[(tr->head + tr->count) % tr->cap];

		/* Only the used part of the arena: most spans use a fraction. */
		memcpy(slot, sp, offsetof(struct trace_span, arena) + sp->arena_len);
		tr->count++;
		if (tr->count == tr->batch_max)
			pthread_cond_signal(&tr->cv);
	}
	pthread_mutex_unlock(&tr->mu);
	if (dropped) {
		atomic_fetch_add(&tr->dropped_full, 1);
		metric_inc(tr->dropped[DROP_QUEUE_FULL]);
	}
}

size_t trace_drain(struct tracer *tr, struct trace_span *out, size_t max)
{
	size_t n = 0;

	if (!tr)
		return 0;
	pthread_mutex_lock(&tr->mu);
	while (n < max && tr->count) {
		const struct trace_span *sp = &tr->ring[tr->head];

		memcpy(&out[n++], sp, offsetof(struct trace_span, arena) + sp->arena_len);
		tr->head = (tr->head + 1) % tr->cap;
		tr->count--;
	}
	pthread_mutex_unlock(&tr->mu);
	return n;
}

uint64_t trace_dropped(const struct tracer *tr)
{
	return tr ? atomic_load(&((struct tracer *)tr)->dropped_full) : 0;
}

/* ---------------------------------------------------------------- exporter */

static size_t discard_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	(void)ptr;
	(void)arg;
	return size * nmemb;
}

/* libcurl's progress callback: non-zero aborts the transfer. */
static int past_deadline(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
			 curl_off_t ulnow)
{
	struct tracer *tr = arg;
	long long d = atomic_load(&tr->deadline_ms);

	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return d && clock_mono_ms() >= d;
}

static void export_failed(struct tracer *tr, size_t n, const char *why)
{
	int64_t now = clock_mono_ms();

	tr->nfailures++;
	metric_inc(tr->failures);
	metric_add(tr->dropped[DROP_EXPORT_FAILED], (double)n);
	if (tr->log && (tr->nfailures == 1 || now - tr->last_log_ms >= TRACE_LOG_EVERY_MS)) {
		tr->last_log_ms = now;
		log_msg(tr->log, LOG_WARN, "trace export failed: %s; %zu spans dropped (%llu failed exports)",
			why, n, (unsigned long long)tr->nfailures);
	}
}

/* Takes one batch from the ring and POSTs it within timeout_ms. Returns
 * how many spans it took. */
static size_t export_batch(struct tracer *tr, int64_t timeout_ms)
{
	size_t n = trace_drain(tr, tr->batch, tr->batch_max);
	long status = 0;
	CURLcode cc;
	char why[96];

	if (!n)
		return 0;
	buf_reset(&tr->body);
	if (trace_encode(tr->batch, n, tr->service_name, tr->instance_id, &tr->body)) {
		export_failed(tr, n, "the batch could not be encoded");
		return n;
	}
	curl_easy_setopt(tr->curl, CURLOPT_POSTFIELDS, tr->body.ptr);
	curl_easy_setopt(tr->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)tr->body.len);
	curl_easy_setopt(tr->curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(tr->curl, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)(timeout_ms < TRACE_CONNECT_TIMEOUT_MS ? timeout_ms : TRACE_CONNECT_TIMEOUT_MS));
	cc = curl_easy_perform(tr->curl);
	if (cc == CURLE_OK)
		curl_easy_getinfo(tr->curl, CURLINFO_RESPONSE_CODE, &status);
	if (cc == CURLE_OK && status >= 200 && status < 300) {
		metric_add(tr->exported, (double)n);
		return n;
	}
	if (cc != CURLE_OK)
		snprintf(why, sizeof(why), "%s", curl_easy_strerror(cc));
	else
		snprintf(why, sizeof(why), "the collector answered HTTP %ld", status);
	export_failed(tr, n, why);
	return n;
}

static void deadline_in(struct timespec *ts, int64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void *exporter_main(void *arg)
{
	struct tracer *tr = arg;
	int64_t until_ms;

	pthread_mutex_lock(&tr->mu);
	while (!tr->stopping) {
		struct timespec until;

		deadline_in(&until, tr->interval_ms);
		while (!tr->stopping && tr->count < tr->batch_max)
			if (pthread_cond_timedwait(&tr->cv, &tr->mu, &until) == ETIMEDOUT)
				break;
		if (tr->stopping)
			break;
		pthread_mutex_unlock(&tr->mu);
		/* Everything queued now, a batch at a time (until told to stop). */
		while (!atomic_load(&tr->deadline_ms) &&
		       export_batch(tr, tr->timeout_ms) == tr->batch_max)
			;
		pthread_mutex_lock(&tr->mu);
	}
	pthread_mutex_unlock(&tr->mu);

	/* Shutdown: what fits in the budget goes out; trace_free drops the rest. */
	until_ms = atomic_load(&tr->deadline_ms);
	for (;;) {
		int64_t left = until_ms - clock_mono_ms();

		if (left < 50 || !export_batch(tr, left < tr->timeout_ms ? left : tr->timeout_ms))
			break;
	}
	return NULL;
}

/* ---------------------------------------------------------------- lifecycle */

static enum st_rc register_metrics(struct tracer *tr, struct metrics *reg)
{
	static const char *const reason[] = { "reason" };
	struct metric_family *dropped, *exported, *failures;

	dropped = metrics_counter(reg, "settled_trace_spans_dropped_total",
				  "Spans not exported, by reason: queue_full, export_failed, shutdown.",
				  1, reason);
	exported = metrics_counter(reg, "settled_trace_spans_exported_total",
				   "Spans the OTLP collector accepted.", 0, NULL);
	failures = metrics_counter(reg, "settled_trace_export_failures_total",
				   "OTLP export requests that failed (their spans are dropped).", 0, NULL);
	if (!dropped || !exported || !failures)
		return ST_NOMEM;
	for (int i = 0; i < DROP_COUNT; i++) {
		const char *const lv[] = { drop_reasons[i] };

		if (!(tr->dropped[i] = metric_series_get(dropped, lv)))
			return ST_NOMEM;
	}
	tr->exported = metric_series_get(exported, NULL);
	tr->failures = metric_series_get(failures, NULL);
	return tr->exported && tr->failures ? ST_OK : ST_NOMEM;
}

static char *traces_url(const char *endpoint)
{
	size_t n = strlen(endpoint);
	char *url;

	while (n && endpoint[n - 1] == '/')
		n--;
	url = malloc(n + sizeof("/v1/traces"));
	if (url)
		snprintf(url, n + sizeof("/v1/traces"), "%.*s/v1/traces", (int)n, endpoint);
	return url;
}

enum st_rc trace_new(const struct trace_options *opt, struct tracer **out, struct buf *err)
{
	struct tracer *tr = calloc(1, sizeof(*tr));
	pthread_condattr_t ca;
	enum st_rc rc = ST_NOMEM;

	if (!tr)
		return ST_NOMEM;
	pthread_mutex_init(&tr->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&tr->cv, &ca);
	pthread_condattr_destroy(&ca);
	buf_init(&tr->body, TRACE_BODY_MAX);
	atomic_init(&tr->dropped_full, 0);
	atomic_init(&tr->deadline_ms, 0);
	tr->cap = opt->capacity ? opt->capacity : TRACE_DEFAULT_CAPACITY;
	tr->batch_max = opt->batch_max ? opt->batch_max : TRACE_DEFAULT_BATCH;
	if (tr->batch_max > tr->cap)
		tr->batch_max = tr->cap;
	tr->interval_ms = opt->interval_ms > 0 ? opt->interval_ms : TRACE_DEFAULT_INTERVAL_MS;
	tr->timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms : TRACE_DEFAULT_TIMEOUT_MS;
	tr->shutdown_ms = opt->shutdown_ms > 0 ? opt->shutdown_ms : TRACE_DEFAULT_SHUTDOWN_MS;
	tr->log = opt->log;
	tr->ring = calloc(tr->cap, sizeof(*tr->ring));
	tr->service_name = strdup(opt->service_name ? opt->service_name : "settled");
	if (opt->instance_id)
		tr->instance_id = strdup(opt->instance_id);
	if (opt->endpoint) {
		if (strncmp(opt->endpoint, "http://", 7) && strncmp(opt->endpoint, "https://", 8)) {
			buf_printf(err, "OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL");
			rc = ST_INVALID;
			goto out;
		}
		tr->url = traces_url(opt->endpoint);
	}
	if (!tr->ring || !tr->service_name || (opt->instance_id && !tr->instance_id) ||
	    (opt->endpoint && !tr->url))
		goto out;
	if (opt->metrics && register_metrics(tr, opt->metrics))
		goto out;
	*out = tr;
	return ST_OK;
out:
	trace_free(tr);
	return rc;
}

enum st_rc trace_start(struct tracer *tr, struct buf *err)
{
	if (!tr->url) {
		buf_puts(err, "tracing needs an OTLP endpoint");
		return ST_INVALID;
	}
	if (tr->started)
		return ST_OK;
	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		buf_puts(err, "cannot initialise libcurl");
		return ST_INTERNAL;
	}
	tr->batch = calloc(tr->batch_max, sizeof(*tr->batch));
	tr->curl = curl_easy_init();
	tr->headers = curl_slist_append(NULL, "Content-Type: application/json");
	/* No "Expect: 100-continue" round trip for large batches. */
	if (tr->headers)
		tr->headers = curl_slist_append(tr->headers, "Expect:");
	if (!tr->batch || !tr->curl || !tr->headers) {
		buf_puts(err, "out of memory starting the trace exporter");
		goto fail;
	}
	curl_easy_setopt(tr->curl, CURLOPT_URL, tr->url);
	curl_easy_setopt(tr->curl, CURLOPT_HTTPHEADER, tr->headers);
	curl_easy_setopt(tr->curl, CURLOPT_POST, 1L);
	curl_easy_setopt(tr->curl, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for DNS timeouts */
	curl_easy_setopt(tr->curl, CURLOPT_WRITEFUNCTION, discard_body);
	curl_easy_setopt(tr->curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(tr->curl, CURLOPT_USERAGENT, "settled-otlp");
	curl_easy_setopt(tr->curl, CURLOPT_XFERINFOFUNCTION, past_deadline);
	curl_easy_setopt(tr->curl, CURLOPT_XFERINFODATA, tr);
	curl_easy_setopt(tr->curl, CURLOPT_NOPROGRESS, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(tr->curl, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
	if (pthread_create(&tr->thread, NULL, exporter_main, tr)) {
		buf_puts(err, "cannot start the trace exporter thread");
		goto fail;
	}
	tr->started = true;
	return ST_OK;
fail:
	curl_slist_free_all(tr->headers);
	tr->headers = NULL;
	if (tr->curl)
		curl_easy_cleanup(tr->curl);
	tr->curl = NULL;
	free(tr->batch);
	tr->batch = NULL;
	curl_global_cleanup();
	return ST_INTERNAL;
}

void trace_free(struct tracer *tr)
{
	if (!tr)
		return;
	if (tr->started) {
		atomic_store(&tr->deadline_ms, (long long)(clock_mono_ms() + tr->shutdown_ms));
		pthread_mutex_lock(&tr->mu);
		tr->stopping = true;
		pthread_cond_signal(&tr->cv);
		pthread_mutex_unlock(&tr->mu);
		pthread_join(tr->thread, NULL);
		curl_slist_free_all(tr->headers);
		curl_easy_cleanup(tr->curl);
		curl_global_cleanup();
	}
	/* Whatever the exporter could not send in time. */
	metric_add(tr->dropped[DROP_SHUTDOWN], (double)tr->count);
	pthread_cond_destroy(&tr->cv);
	pthread_mutex_destroy(&tr->mu);
	buf_release(&tr->body);
	free(tr->batch);
	free(tr->ring);
	free(tr->url);
	free(tr->service_name);
	free(tr->instance_id);
	free(tr);
}

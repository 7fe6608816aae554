/* test_trace.c — spans, the bounded ring (drops counted when full), the
 * OTLP/HTTP JSON encoding, W3C context formatting and parsing, and an
 * exporter that stops within its budget when the collector is down. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "metrics.h"
#include "trace.h"

#include "banned.h"

static struct tracer *tr;
static struct metrics *reg;

static void setup(void)
{
	struct trace_options o = { .capacity = 4, .batch_max = 2 };

	reg = metrics_new();
	cr_assert_not_null(reg);
	o.metrics = reg;
	cr_assert_eq(trace_new(&o, &tr, NULL), ST_OK);
}

static void teardown(void)
{
	trace_free(tr);
	metrics_free(reg);
	tr = NULL;
	reg = NULL;
}

/* The value of one sample line ("name{labels} value") in the rendered
 * registry; -1 when absent. */
static double metric_value(const char *series)
{
	struct buf out = BUF_INIT(1 << 20);
	double v = -1;
	char *p;

	cr_assert_eq(metrics_render(reg, &out), ST_OK);
	for (p = out.ptr; (p = strstr(p, series)); p++) {
		if ((p == out.ptr || p[-1] == '\n') && p[strlen(series)] == ' ') {
			v = strtod(p + strlen(series) + 1, NULL);
			break;
		}
	}
	buf_release(&out);
	return v;
}

static bool is_hex(const char *s, size_t n)
{
	if (strlen(s) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!strchr("0123456789abcdef", s[i]))
			return false;
	return true;
}

/* A recorded span named name, ended at once. */
static void record_named(const char *name)
{
	struct trace_span sp;

	trace_span_start(&sp, tr, name, TRACE_INTERNAL, NULL);
	trace_span_end(&sp);
}

/* ---------------------------------------------------------------- the ring */

Test(trace, ring_drops_and_counts_when_full, .init = setup, .fini = teardown)
{
	struct trace_span out[8];
	char name[16];

	for (int i = 0; i < 6; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		record_named(name);
	}
	cr_assert_eq(trace_dropped(tr), 2);
	cr_assert_eq(metric_value("settled_trace_spans_dropped_total{reason=\"queue_full\"}"), 2);
	cr_assert_eq(metric_value("settled_trace_spans_dropped_total{reason=\"export_failed\"}"), 0);

	/* The oldest four stayed, in order; draining frees the room. */
	cr_assert_eq(trace_drain(tr, out, 8), 4);
	for (int i = 0; i < 4; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		cr_assert_str_eq(trace_span_text(&out[i], out[i].name), name);
	}
	cr_assert_eq(trace_drain(tr, out, 8), 0);
	record_named("again");
	cr_assert_eq(trace_drain(tr, out, 1), 1);
	cr_assert_str_eq(trace_span_text(&out[0], out[0].name), "again");
	cr_assert_eq(trace_dropped(tr), 2);
}

Test(trace, ring_wraps_around, .init = setup, .fini = teardown)
{
	struct trace_span out[4];
	char name[16];

	/* Push and pop past the end of the ring several times. */
	for (int i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "w%d", i);
		record_named(name);
		if (i % 3 == 2) {
			size_t n = trace_drain(tr, out, 4);

			cr_assert_eq(n, 3);
			for (size_t k = 0; k < n; k++) {
				snprintf(name, sizeof(name), "w%d", i - 2 + (int)k);
				cr_assert_str_eq(trace_span_text(&out[k], out[k].name), name);
			}
		}
	}
	cr_assert_eq(trace_dropped(tr), 0);
}

Test(trace, null_tracer_and_unsampled_traces_record_nothing, .init = setup, .fini = teardown)
{
	struct trace_span sp, child;
	struct trace_ctx quiet = { .trace_id = "0af7651916cd43dd8448eb211c80319c",
				   .span_id = "b7ad6b7169203331", .flags = 0 };
	struct trace_span out[4];

	/* Tracing off: ids for the logs all the same, nothing recorded. */
	trace_span_start(&sp, NULL, "off", TRACE_INTERNAL, NULL);
	cr_assert(is_hex(sp.trace_id, 32) && is_hex(sp.span_id, 16));
	cr_assert_null(sp.tr);
	trace_span_set_str(&sp, "k", "v");
	cr_assert_eq(sp.nattrs, 0, "no copies when nobody reads them");
	trace_span_end(&sp);

	/* Parent-based sampling: an unsampled caller is not recorded, nor its children. */
	trace_span_start(&sp, tr, "quiet", TRACE_SERVER, &quiet);
	cr_assert_str_eq(sp.trace_id, quiet.trace_id);
	cr_assert_str_eq(sp.parent_id, quiet.span_id);
	cr_assert_null(sp.tr);
	trace_span_child(&child, &sp, "quiet child", TRACE_CLIENT);
	cr_assert_null(child.tr);
	cr_assert_eq(child.flags, 0);
	trace_span_end(&child);
	trace_span_end(&sp);
	cr_assert_eq(trace_drain(tr, out, 4), 0);
	trace_free(NULL);
	trace_record(NULL, &sp);
}

Test(trace, children_ids_and_adopt, .init = setup, .fini = teardown)
{
	struct trace_ctx caller = { .trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
				    .span_id = "00f067aa0ba902b7", .flags = 1, .state = "rojo=1" };
	struct trace_span srv, child;
	struct trace_span out[4];

	trace_span_start(&srv, tr, "GET /x", TRACE_SERVER, &caller);
	trace_span_adopt(&srv, "1111111111111111", 1700000000000000000LL);
	trace_span_adopt(&srv, "NOT HEX", 0); /* ignored */
	cr_assert_str_eq(srv.span_id, "1111111111111111");
	cr_assert_eq(srv.start_ns, 1700000000000000000LL);
	trace_span_child(&child, &srv, "store.write", TRACE_INTERNAL);
	cr_assert_str_eq(child.trace_id, caller.trace_id);
	cr_assert_str_eq(child.parent_id, "1111111111111111");
	cr_assert_str_neq(child.span_id, srv.span_id);
	cr_assert_str_eq(trace_span_text(&child, child.state), "rojo=1");
	trace_span_end(&child);
	trace_span_end(&srv);
	trace_span_end(&srv); /* a second end records nothing */
	cr_assert_eq(trace_drain(tr, out, 4), 2);
	cr_assert_str_eq(out[0].span_id, child.span_id);
	cr_assert_str_eq(out[1].span_id, "1111111111111111");
	cr_assert_str_eq(out[1].parent_id, "00f067aa0ba902b7");
	cr_assert(out[1].end_ns >= out[1].start_ns);
}

/* ---------------------------------------------------------------- encoding */

static json_t *attr_value(json_t *list, const char *key)
{
	size_t i;
	json_t *a;

	json_array_foreach(list, i, a) {
		if (!strcmp(json_string_value(json_object_get(a, "key")), key))
			return json_object_get(a, "value");
	}
	return NULL;
}

Test(trace, encode_otlp_json_shape, .init = setup, .fini = teardown)
{
	struct trace_ctx caller = { .trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
				    .span_id = "00f067aa0ba902b7", .flags = 1,
				    .state = "congo=t61rcWkgMzE" };
	struct trace_span sp[2], out[2];
	struct buf body = BUF_INIT(1 << 20);
	json_t *doc, *rs, *spans, *s0, *s1, *v;
	json_error_t jerr;

	trace_span_start(&sp[0], tr, "POST /api/claim/record", TRACE_SERVER, NULL);
	trace_span_set_str(&sp[0], "http.request.method", "POST");
	trace_span_set_int(&sp[0], "http.response.status_code", 503);
	trace_span_set_int(&sp[0], "big", INT64_MIN);
	trace_span_set_status(&sp[0], TRACE_ERROR, "store down");
	trace_span_end(&sp[0]);
	trace_span_start(&sp[1], tr, "process claims", TRACE_CONSUMER, &caller);
	trace_span_end(&sp[1]);
	cr_assert_eq(trace_drain(tr, out, 2), 2);

	cr_assert_eq(trace_encode(out, 2, "settled", "inst-1", &body), ST_OK);
	doc = json_loads(body.ptr, 0, &jerr);
	cr_assert_not_null(doc, "not JSON: %s: %s", jerr.text, body.ptr);

	rs = json_array_get(json_object_get(doc, "resourceSpans"), 0);
	cr_assert_eq(json_array_size(json_object_get(doc, "resourceSpans")), 1);
	v = attr_value(json_object_get(json_object_get(rs, "resource"), "attributes"), "service.name");
	cr_assert_str_eq(json_string_value(json_object_get(v, "stringValue")), "settled");
	v = attr_value(json_object_get(json_object_get(rs, "resource"), "attributes"),
		       "service.instance.id");
	cr_assert_str_eq(json_string_value(json_object_get(v, "stringValue")), "inst-1");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(
				 json_array_get(json_object_get(rs, "scopeSpans"), 0), "scope"), "name")),
			 "settled");
	spans = json_object_get(json_array_get(json_object_get(rs, "scopeSpans"), 0), "spans");
	cr_assert_eq(json_array_size(spans), 2);

	s0 = json_array_get(spans, 0);
	cr_assert(is_hex(json_string_value(json_object_get(s0, "traceId")), 32));
	cr_assert_str_eq(json_string_value(json_object_get(s0, "spanId")), sp[0].span_id);
	cr_assert_null(json_object_get(s0, "parentSpanId"), "a root span has no parent");
	cr_assert_null(json_object_get(s0, "traceState"));
	cr_assert_str_eq(json_string_value(json_object_get(s0, "name")), "POST /api/claim/record");
	cr_assert_eq(json_integer_value(json_object_get(s0, "kind")), 2);
	cr_assert(json_is_string(json_object_get(s0, "startTimeUnixNano")));
	cr_assert_eq(strtoll(json_string_value(json_object_get(s0, "startTimeUnixNano")), NULL, 10),
		     sp[0].start_ns);
	cr_assert_eq(strtoll(json_string_value(json_object_get(s0, "endTimeUnixNano")), NULL, 10),
		     sp[0].end_ns);
	v = attr_value(json_object_get(s0, "attributes"), "http.request.method");
	cr_assert_str_eq(json_string_value(json_object_get(v, "stringValue")), "POST");
	v = attr_value(json_object_get(s0, "attributes"), "http.response.status_code");
	cr_assert_str_eq(json_string_value(json_object_get(v, "intValue")), "503");
	v = attr_value(json_object_get(s0, "attributes"), "big");
	cr_assert_str_eq(json_string_value(json_object_get(v, "intValue")), "-9223372036854775808");
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(s0, "status"), "code")), 2);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(s0, "status"), "message")),
			 "store down");

	s1 = json_array_get(spans, 1);
	cr_assert_str_eq(json_string_value(json_object_get(s1, "traceId")), caller.trace_id);
	cr_assert_str_eq(json_string_value(json_object_get(s1, "parentSpanId")), caller.span_id);
	cr_assert_str_eq(json_string_value(json_object_get(s1, "traceState")), "congo=t61rcWkgMzE");
	cr_assert_eq(json_integer_value(json_object_get(s1, "kind")), 5);
	cr_assert_eq(json_array_size(json_object_get(s1, "attributes")), 0);
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(s1, "status"), "code")), 0);
	cr_assert_null(json_object_get(json_object_get(s1, "status"), "message"));

	json_decref(doc);
	buf_release(&body);
}

Test(trace, encode_escapes_and_sanitises_text, .init = setup, .fini = teardown)
{
	struct trace_span sp, out;
	struct buf body = BUF_INIT(1 << 20);
	char long_val[600];
	json_t *doc, *attrs;
	const char *v;

	/* 255 ASCII bytes then a 2-byte character: cut before it, not inside. */
	memset(long_val, 'a', sizeof(long_val));
	memcpy(long_val + 255, "\xc3\xa9", 2);
	long_val[sizeof(long_val) - 1] = '\0';
	trace_span_start(&sp, tr, "quote\" back\\ nl\n", TRACE_INTERNAL, NULL);
	trace_span_set_str(&sp, "ctl", "a\x01\tb");
	trace_span_set_str(&sp, "bad_utf8", "x\xff\xc3(y\xed\xa0\x80z");
	trace_span_set_str(&sp, "ok_utf8", "gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9f\x98\x80");
	trace_span_set_str(&sp, "long", long_val);
	trace_span_end(&sp);
	cr_assert_eq(trace_drain(tr, &out, 1), 1);
	cr_assert_eq(trace_encode(&out, 1, NULL, NULL, &body), ST_OK);
	doc = json_loads(body.ptr, 0, NULL);
	cr_assert_not_null(doc, "not valid JSON/UTF-8: %s", body.ptr);
	{
		json_t *s = json_array_get(json_object_get(json_array_get(json_object_get(
			json_array_get(json_object_get(doc, "resourceSpans"), 0), "scopeSpans"), 0),
			"spans"), 0);

		cr_assert_str_eq(json_string_value(json_object_get(s, "name")), "quote\" back\\ nl\n");
		attrs = json_object_get(s, "attributes");
	}
	v = json_string_value(json_object_get(attr_value(attrs, "ctl"), "stringValue"));
	cr_assert_str_eq(v, "a\x01\tb");
	v = json_string_value(json_object_get(attr_value(attrs, "bad_utf8"), "stringValue"));
	cr_assert_str_eq(v, "x?" "?(y?" "?" "?z"); /* split: no trigraphs */
	v = json_string_value(json_object_get(attr_value(attrs, "ok_utf8"), "stringValue"));
	cr_assert_str_eq(v, "gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9f\x98\x80");
	v = json_string_value(json_object_get(attr_value(attrs, "long"), "stringValue"));
	cr_assert_eq(strlen(v), 255, "capped at 256 bytes on a character boundary");
	json_decref(doc);
	buf_release(&body);
}

Test(trace, encode_respects_the_cap_and_leaves_out_unchanged, .init = setup, .fini = teardown)
{
	struct trace_span sp, out;
	struct buf body = BUF_INIT(64);

	trace_span_start(&sp, tr, "a fairly long span name to overflow a small buffer", TRACE_INTERNAL,
			 NULL);
	trace_span_end(&sp);
	cr_assert_eq(trace_drain(tr, &out, 1), 1);
	cr_assert_eq(buf_puts(&body, "keep"), ST_OK);
	cr_assert_eq(trace_encode(&out, 1, "settled", NULL, &body), ST_TOO_LARGE);
	cr_assert_str_eq(body.ptr, "keep");
	cr_assert_eq(body.len, 4);
	buf_release(&body);
}

Test(trace, attributes_beyond_the_limit_are_dropped, .init = setup, .fini = teardown)
{
	static const char *const keys[] = { "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8",
					    "k9", "k10", "k11", "k12", "k13", "k14", "k15", "k16",
					    "k17", "k18", "k19" };
	struct trace_span sp;
	char big[300];

	trace_span_start(&sp, tr, "many", TRACE_INTERNAL, NULL);
	for (int i = 0; i < 20; i++)
		trace_span_set_int(&sp, keys[i], i);
	cr_assert_eq(sp.nattrs, TRACE_MAX_ATTRS);
	cr_assert_str_eq(sp.attrs[TRACE_MAX_ATTRS - 1].key, "k15");
	trace_span_end(&sp);

	/* Text past the arena is dropped, never written out of bounds. */
	memset(big, 'b', sizeof(big));
	big[sizeof(big) - 1] = '\0';
	trace_span_start(&sp, tr, "text", TRACE_INTERNAL, NULL);
	for (int i = 0; i < 10; i++)
		trace_span_set_str(&sp, keys[i], big);
	cr_assert(sp.arena_len <= TRACE_ARENA);
	cr_assert(sp.nattrs < 10);
	trace_span_end(&sp);
}

/* ---------------------------------------------------------------- W3C context */

Test(trace, context_format_and_parse_round_trip)
{
	struct trace_ctx c = { .trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
			       .span_id = "00f067aa0ba902b7", .flags = 1, .state = "rojo=1,congo=2" };
	struct trace_ctx back;
	char s[TRACE_CONTEXT_MAX];

	trace_ctx_format(&c, s);
	cr_assert_str_eq(s, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 rojo=1,congo=2");
	cr_assert_eq(trace_ctx_parse(s, &back), ST_OK);
	cr_assert_str_eq(back.trace_id, c.trace_id);
	cr_assert_str_eq(back.span_id, c.span_id);
	cr_assert_eq(back.flags, 1);
	cr_assert_str_eq(back.state, "rojo=1,congo=2");

	c.state = NULL;
	c.flags = 0;
	trace_ctx_format(&c, s);
	cr_assert_str_eq(s, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
	cr_assert_eq(trace_ctx_parse(s, &back), ST_OK);
	cr_assert_null(back.state);
	cr_assert_eq(back.flags, 0);

	/* A bad state is dropped; a bad traceparent is an error. */
	cr_assert_eq(trace_ctx_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 BAD",
				     &back), ST_OK);
	cr_assert_null(back.state);
	cr_assert_eq(trace_ctx_parse("00-zz-00f067aa0ba902b7-01", &back), ST_INVALID);
	cr_assert_eq(trace_ctx_parse("", &back), ST_INVALID);
	cr_assert_eq(trace_ctx_parse(NULL, &back), ST_INVALID);
}

Test(trace, tracestate_validation)
{
	static const char *const good[] = {
		"rojo=00f067aa0ba902b7",
		"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
		"a=1 , b=2",
		"tenant@vendor=x",
		"a-b_c*d/e=v with spaces",
		",a=1,,",
		"",
	};
	static const char *const bad[] = {
		"Rojo=1",        /* upper-case key */
		"rojo",          /* no value */
		"rojo=",         /* empty value */
		"rojo=a,b",      /* "b" is no member */
		"rojo=a=b",      /* '=' in a value */
		"1abc=x",        /* simple keys start with a letter */
		"t@Vendor=x",    /* system id starts with a letter */
		"rojo=x\x01y",   /* control character */
	};
	char many[400] = "";
	char huge[TRACE_STATE_MAX + 10];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		cr_expect(trace_state_valid(good[i], strlen(good[i])), "should accept \"%s\"", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect(!trace_state_valid(bad[i], strlen(bad[i])), "should refuse \"%s\"", bad[i]);
	/* A trailing blank is OWS after the member, not part of its value. */
	cr_expect(trace_state_valid("rojo=x ", 7));

	/* At most 32 members. */
	for (int i = 0; i < 33; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many), "%sk%d=v", i ? "," : "", i);
	cr_expect(!trace_state_valid(many, strlen(many)));
	*strrchr(many, ',') = '\0';
	cr_expect(trace_state_valid(many, strlen(many)));
	/* At most TRACE_STATE_MAX bytes: "a=<253>,b=<254>" is 512; one more is too many. */
	memset(huge, 'v', sizeof(huge));
	memcpy(huge, "a=", 2);
	memcpy(huge + 255, ",b=", 3);
	cr_expect(trace_state_valid(huge, TRACE_STATE_MAX));
	cr_expect(!trace_state_valid(huge, TRACE_STATE_MAX + 1));
	/* Values are at most 256 characters ("a=" + 253 is fine, see above). */
	memset(huge, 'v', sizeof(huge));
	memcpy(huge, "a=", 2);
	cr_expect(trace_state_valid(huge, 2 + 256));
	cr_expect(!trace_state_valid(huge, 2 + 257));
}

/* ---------------------------------------------------------------- the exporter */

Test(trace, exporter_stops_within_budget_when_the_collector_is_down)
{
	struct metrics *m = metrics_new();
	struct trace_options o = { .endpoint = "http://127.0.0.1:1/", .interval_ms = 60000,
				   .shutdown_ms = 500, .timeout_ms = 300, .metrics = m };
	struct tracer *t = NULL;
	struct trace_span sp;
	struct timespec a, b;
	struct buf err = BUF_INIT(256);

	cr_assert_eq(trace_new(&o, &t, &err), ST_OK);
	cr_assert_eq(trace_start(t, &err), ST_OK, "%s", err.ptr);
	for (int i = 0; i < 3; i++) {
		trace_span_start(&sp, t, "lost", TRACE_INTERNAL, NULL);
		trace_span_end(&sp);
	}
	clock_gettime(CLOCK_MONOTONIC, &a);
	trace_free(t); /* flushes: the POST fails at once (nothing listens on port 1) */
	clock_gettime(CLOCK_MONOTONIC, &b);
	/* Not the 60 s interval: shutdown flushes at once. The bound is half
	 * of what it tells apart, not a guess at the machine's speed (a
	 * loaded machine can stretch the 500 ms budget by seconds). */
	cr_assert_lt((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000, 30000);
	reg = m;
	cr_assert_eq(metric_value("settled_trace_spans_dropped_total{reason=\"export_failed\"}") +
			     metric_value("settled_trace_spans_dropped_total{reason=\"shutdown\"}"),
		     3);
	cr_assert_eq(metric_value("settled_trace_spans_exported_total"), 0);
	reg = NULL;
	metrics_free(m);
	buf_release(&err);
}

static int64_t ms_since(const struct timespec *a)
{
	struct timespec b;

	clock_gettime(CLOCK_MONOTONIC, &b);
	return (int64_t)(b.tv_sec - a->tv_sec) * 1000 + (b.tv_nsec - a->tv_nsec) / 1000000;
}

Test(trace, a_hanging_collector_cannot_hold_shutdown)
{
	struct metrics *m = metrics_new();
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	char url[64];
	struct trace_options o = { .interval_ms = 20, .timeout_ms = 60000, .shutdown_ms = 300,
				   .metrics = m };
	struct tracer *t = NULL;
	struct trace_span sp;
	struct timespec a;
	struct buf err = BUF_INIT(256);

	/* Listening but never accepting: connections complete in the backlog,
	 * the request is sent, no answer ever comes. */
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(listen(lfd, 8), 0);
	cr_assert_eq(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", ntohs(sa.sin_port));
	o.endpoint = url;
	cr_assert_eq(trace_new(&o, &t, &err), ST_OK);
	cr_assert_eq(trace_start(t, &err), ST_OK, "%s", err.ptr);
	trace_span_start(&sp, t, "stuck", TRACE_INTERNAL, NULL);
	trace_span_end(&sp);
	usleep(200 * 1000); /* the exporter is now waiting on the answer */
	trace_span_start(&sp, t, "queued", TRACE_INTERNAL, NULL);
	trace_span_end(&sp);
	clock_gettime(CLOCK_MONOTONIC, &a);
	trace_free(t);
	/* The 300 ms budget, not the 60 s export timeout, ends the wait. The
	 * bound is half of the timeout it tells the budget apart from, not
	 * a guess at the machine's speed: "< 2 s" left a loaded machine 1.7 s. */
	cr_assert_lt(ms_since(&a), 30000, "shutdown waited %lld ms", (long long)ms_since(&a));
	reg = m;
	cr_assert_eq(metric_value("settled_trace_spans_dropped_total{reason=\"export_failed\"}") +
			     metric_value("settled_trace_spans_dropped_total{reason=\"shutdown\"}"),
		     2);
	reg = NULL;
	metrics_free(m);
	close(lfd);
	buf_release(&err);
}

Test(trace, bad_endpoints_are_refused)
{
	struct trace_options o = { .endpoint = "ftp://collector" };
	struct tracer *t = NULL;
	struct buf err = BUF_INIT(256);

	cr_assert_eq(trace_new(&o, &t, &err), ST_INVALID);
	cr_assert_null(t);
	cr_assert(strstr(err.ptr, "http"));
	o.endpoint = NULL;
	cr_assert_eq(trace_new(&o, &t, &err), ST_OK);
	buf_reset(&err);
	cr_assert_eq(trace_start(t, &err), ST_INVALID, "no endpoint, no exporter");
	trace_free(t);
	buf_release(&err);
}

/* test_log.c — log line shape, levels, fields, truncation, redaction (the
 * shortcut path against the full one) and the line buffer. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "json_out.h"
#include "log.h"
#include "log_redact.h"

#include "banned.h"

static int pipefd[2];

static void setup(void)
{
	cr_assert_eq(pipe(pipefd), 0);
	/* Non-blocking read end: a test that expects no line must not hang. */
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
}

static void teardown(void)
{
	close(pipefd[0]);
	close(pipefd[1]);
}

/* Everything written so far, as a malloc'd string. */
static char *drain(void)
{
	struct buf b = BUF_INIT(1 << 20);
	char chunk[4096];
	ssize_t n;

	while ((n = read(pipefd[0], chunk, sizeof(chunk))) > 0)
		cr_assert_eq(buf_append(&b, chunk, (size_t)n), ST_OK);
	return buf_detach(&b, NULL);
}

/* Reads exactly one line and parses it; the caller json_decref()s. */
static json_t *one_line(char **raw_out)
{
	char *raw = drain();
	size_t len = strlen(raw);
	json_error_t e;
	json_t *j;

	cr_assert_gt(len, 0, "no line written");
	cr_assert_eq(raw[len - 1], '\n', "line does not end with a newline: %s", raw);
	cr_assert_eq(strchr(raw, '\n'), raw + len - 1, "more than one line: %s", raw);
	j = json_loads(raw, 0, &e);
	cr_assert_not_null(j, "not JSON (%s): %s", e.text, raw);
	cr_assert(json_is_object(j));
	if (raw_out)
		*raw_out = raw;
	else
		free(raw);
	return j;
}

static const char *str_member(json_t *j, const char *key)
{
	json_t *v = json_object_get(j, key);

	cr_assert(json_is_string(v), "member %s is not a string", key);
	return json_string_value(v);
}

TestSuite(log, .init = setup, .fini = teardown);

Test(log, level_parse)
{
	cr_assert_eq(log_level_parse("debug"), LOG_DEBUG);
	cr_assert_eq(log_level_parse("info"), LOG_INFO);
	cr_assert_eq(log_level_parse("warn"), LOG_WARN);
	cr_assert_eq(log_level_parse("WARNING"), LOG_WARN);
	cr_assert_eq(log_level_parse("error"), LOG_ERROR);
	cr_assert_eq(log_level_parse("Error"), LOG_ERROR);
	cr_assert_eq(log_level_parse("fatal"), -1);
	cr_assert_eq(log_level_parse(""), -1);
	cr_assert_eq(log_level_parse(NULL), -1);
}

Test(log, line_shape)
{
	struct logger lg;
	struct buf f = BUF_INIT(4096);
	json_t *j;
	const char *ts;

	log_init(&lg, pipefd[1], LOG_DEBUG);
	log_field_str(&f, "route", "/api/claim/prepare");
	log_field_int(&f, "status", 201);
	log_field_int(&f, "big", INT64_MIN);
	log_field_num(&f, "duration_s", 0.25);
	log_field_num(&f, "nan", NAN);
	log_field_str(&f, "none", NULL);
	log_emit(&lg, LOG_WARN, "req-1", "4bf92f3577b34da6a3ce929d0e0e4736", "hello \"world\"\n",
		 &f);
	j = one_line(NULL);

	ts = str_member(j, "ts");
	/* 2026-11-25T18:55:28.123Z */
	cr_assert_eq(strlen(ts), 24, "ts: %s", ts);
	for (int i = 0; i < 24; i++) {
		const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";

		if (shape[i] == 'd')
			cr_assert(ts[i] >= '0' && ts[i] <= '9', "ts: %s", ts);
		else
			cr_assert_eq(ts[i], shape[i], "ts: %s", ts);
	}
	cr_assert_str_eq(str_member(j, "level"), "warn");
	cr_assert_str_eq(str_member(j, "msg"), "hello \"world\"\n");
	cr_assert_str_eq(str_member(j, "request_id"), "req-1");
	cr_assert_str_eq(str_member(j, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
	cr_assert_str_eq(str_member(j, "route"), "/api/claim/prepare");
	cr_assert_eq(json_integer_value(json_object_get(j, "status")), 201);
	cr_assert_eq(json_integer_value(json_object_get(j, "big")), INT64_MIN);
	cr_assert_float_eq(json_real_value(json_object_get(j, "duration_s")), 0.25, 1e-12);
	cr_assert(json_is_null(json_object_get(j, "nan")));
	cr_assert(json_is_null(json_object_get(j, "none")));
	cr_assert_null(json_object_get(j, "truncated"));
	json_decref(j);
	buf_release(&f);
}

Test(log, ids_omitted_when_null)
{
	struct logger lg;
	json_t *j;

	log_init(&lg, pipefd[1], LOG_INFO);
	log_emit(&lg, LOG_INFO, NULL, NULL, "started", NULL);
	j = one_line(NULL);
	cr_assert_str_eq(str_member(j, "level"), "info");
	cr_assert_null(json_object_get(j, "request_id"));
	cr_assert_null(json_object_get(j, "trace_id"));
	cr_assert_eq(json_object_size(j), 3);
	json_decref(j);
}

Test(log, below_min_level_dropped)
{
	struct logger lg;
	char *raw;

	log_init(&lg, pipefd[1], LOG_WARN);
	log_emit(&lg, LOG_INFO, NULL, NULL, "quiet", NULL);
	log_emit(&lg, LOG_DEBUG, NULL, NULL, "quiet", NULL);
	log_msg(&lg, LOG_INFO, "quiet %d", 1);
	raw = drain();
	cr_assert_str_empty(raw);
	free(raw);
	log_emit(&lg, LOG_ERROR, NULL, NULL, "loud", NULL);
	json_decref(one_line(NULL));
}

Test(log, log_msg_formats_and_redacts)
{
	struct logger lg;
	json_t *j;

	log_init(&lg, pipefd[1], LOG_DEBUG);
	log_msg(&lg, LOG_DEBUG, "user %s registered with %d credits, call %s", "ann@example.com",
		42, "+1 555 123 4567");
	j = one_line(NULL);
	cr_assert_str_eq(str_member(j, "level"), "debug");
	cr_assert_str_eq(str_member(j, "msg"), "user [email] registered with 42 credits, call [phone]");
	json_decref(j);
}

Test(log, msg_and_fields_redacted)
{
	struct logger lg;
	struct buf f = BUF_INIT(4096);
	char *raw;
	json_t *j;

	log_init(&lg, pipefd[1], LOG_DEBUG);
	log_field_str(&f, "contact", "bob.smith+tag@mail.example.org / (555) 123-4567");
	log_field_str(&f, "wallet", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed");
	log_emit(&lg, LOG_INFO, "r1", NULL, "mail alice@example.com now", &f);
	j = one_line(&raw);
	cr_assert_null(strstr(raw, "alice"), "%s", raw);
	cr_assert_null(strstr(raw, "bob.smith"), "%s", raw);
	cr_assert_null(strstr(raw, "4567"), "%s", raw);
	cr_assert_str_eq(str_member(j, "msg"), "mail [email] now");
	cr_assert_str_eq(str_member(j, "contact"), "[email] / [phone]");
	cr_assert_str_eq(str_member(j, "wallet"), "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed");
	json_decref(j);
	free(raw);
	buf_release(&f);
}

Test(log, long_msg_truncated_not_dropped)
{
	struct logger lg;
	size_t n = 100000;
	char *msg = malloc(n + 1), *raw;
	json_t *j;
	const char *m;

	memset(msg, 'a', n);
	msg[n] = '\0';
	/* Quotes double in size when escaped; put some near the cut. */
	for (size_t i = 16000; i < 16400; i += 3)
		msg[i] = '"';
	log_init(&lg, pipefd[1], LOG_DEBUG);
	log_emit(&lg, LOG_ERROR, "req-2", NULL, msg, NULL);
	j = one_line(&raw);
	cr_assert_leq(strlen(raw), 16384);
	cr_assert_gt(strlen(raw), 16000);
	m = str_member(j, "msg");
	cr_assert_eq(strncmp(m, msg, strlen(m)), 0);
	cr_assert(json_is_true(json_object_get(j, "truncated")));
	cr_assert_str_eq(str_member(j, "request_id"), "req-2");
	json_decref(j);
	free(raw);
	free(msg);
}

Test(log, truncation_keeps_utf8_whole)
{
	struct logger lg;
	size_t n = 40000;
	char *msg = malloc(n + 1), *raw;
	json_t *j;

	/* "é" is two bytes: any cut must fall between characters. */
	for (size_t i = 0; i + 1 < n; i += 2)
		memcpy(msg + i, "\xc3\xa9", 2);
	msg[n] = '\0';
	log_init(&lg, pipefd[1], LOG_DEBUG);
	for (int shift = 0; shift < 3; shift++) {
		log_emit(&lg, LOG_INFO, shift ? "x" : NULL, shift == 2 ? "y" : NULL, msg, NULL);
		j = one_line(&raw);
		cr_assert_leq(strlen(raw), 16384);
		cr_assert(json_is_true(json_object_get(j, "truncated")));
		json_decref(j);
		free(raw);
	}
	free(msg);
}

Test(log, oversized_fields_dropped_line_kept)
{
	struct logger lg;
	struct buf f = BUF_INIT(1 << 20);
	char *big = malloc(20001);
	json_t *j;

	memset(big, 'z', 20000);
	big[20000] = '\0';
	log_field_str(&f, "blob", big);
	cr_assert_gt(f.len, 20000);
	log_init(&lg, pipefd[1], LOG_DEBUG);
	log_emit(&lg, LOG_INFO, NULL, NULL, "with a huge field", &f);
	j = one_line(NULL);
	cr_assert_str_eq(str_member(j, "msg"), "with a huge field");
	cr_assert(json_is_true(json_object_get(j, "fields_dropped")));
	cr_assert_null(json_object_get(j, "blob"));
	json_decref(j);
	buf_release(&f);
	free(big);
}

Test(log, control_chars_and_bad_utf8_stay_json)
{
	struct logger lg;
	struct buf f = BUF_INIT(4096);
	json_t *j;

	log_field_str(&f, "k\"ey", "tab\there\x01");
	log_init(&lg, pipefd[1], LOG_DEBUG);
	log_emit(&lg, LOG_INFO, "id\n", NULL, "bad \xff\xfe utf8 \xc3 and \xed\xa0\x80 \xe2\x82\xac", &f);
	j = one_line(NULL);
	cr_assert_str_eq(str_member(j, "msg"),
			 "bad \xef\xbf\xbd\xef\xbf\xbd utf8 \xef\xbf\xbd and "
			 "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \xe2\x82\xac");
	cr_assert_str_eq(str_member(j, "request_id"), "id\n");
	cr_assert_str_eq(str_member(j, "k\"ey"), "tab\there\x01");
	json_decref(j);
	buf_release(&f);
}

Test(log, field_over_cap_leaves_fields_unchanged)
{
	struct buf f = BUF_INIT(32);

	log_field_int(&f, "a", 1);
	cr_assert_str_eq(f.ptr, ",\"a\":1");
	log_field_str(&f, "long", "this value does not fit in thirty-two bytes");
	cr_assert_str_eq(f.ptr, ",\"a\":1");
	log_field_num(&f, "n", 1.5);
	cr_assert_str_eq(f.ptr, ",\"a\":1,\"n\":1.5");
	buf_release(&f);
	cr_assert_eq(f.alloc, 0);
}

/* ---- redaction --------------------------------------------------------- */

static void check_redact(const char *in, const char *want)
{
	struct buf out = BUF_INIT(4096);

	cr_assert_eq(log_redact(in, &out), ST_OK);
	cr_expect_str_eq(out.ptr, want, "redact(\"%s\") = \"%s\", want \"%s\"", in, out.ptr, want);
	buf_release(&out);
}

Test(log, redact_emails)
{
	check_redact("alice@example.com", "[email]");
	check_redact("mail alice@example.com now", "mail [email] now");
	check_redact("<first.last+tag@sub.example.co.uk>", "<[email]>");
	check_redact("a@b.com,c@d.org; e_f@g-h.io", "[email],[email]; [email]");
	check_redact("ends a sentence: x@example.com.", "ends a sentence: [email].");
	check_redact("\"email\":\"Bob.O-Neil@Example.COM\"", "\"email\":\"[email]\"");
	check_redact("mailto:joe@example.net?subject=hi", "mailto:[email]?subject=hi");
	check_redact("user@mail.example.com-suffix", "[email]");
	check_redact("john5551234567@example.com", "[email]");
	/* Not addresses. */
	check_redact("@handle and a@ b @c", "@handle and a@ b @c");
	check_redact("lodash@4.17.21", "lodash@4.17.21");
	check_redact("user@localhost", "user@localhost");
	check_redact("image@sha256:abcdef", "image@sha256:abcdef");
	check_redact("x@example.c", "x@example.c");
	check_redact("x@example..com", "x@example..com");
}

Test(log, redact_phones)
{
	check_redact("+44 20 7946 0958", "[phone]");
	check_redact("call +44 20 7946 0958 today", "call [phone] today");
	check_redact("+44 (0)20 7946 0958", "[phone]");
	check_redact("+15551234567", "[phone]");
	check_redact("+1-555-123-4567", "[phone]");
	check_redact("+1 (555) 123-4567", "[phone]");
	check_redact("(555) 123-4567", "[phone]");
	check_redact("(555)123-4567", "[phone]");
	check_redact("555-123-4567", "[phone]");
	check_redact("555.123.4567", "[phone]");
	check_redact("555 123 4567", "[phone]");
	check_redact("020 7946 0958", "[phone]");
	check_redact("01 23 45 67 89", "[phone]");
	check_redact("phone=555-123-4567", "phone=[phone]");
	check_redact("tel:+1-555-123-4567", "tel:[phone]");
	check_redact("\"phone\":\"555-123-4567\"", "\"phone\":\"[phone]\"");
	check_redact("call 555-123-4567.", "call [phone].");
	check_redact("(call 555-123-4567)", "(call [phone])");
	check_redact("a 555-123-4567, b 555.987.6543", "a [phone], b [phone]");
	check_redact("call 555-123-4567 2 times", "call [phone] 2 times");
	check_redact("on 2026-11-25 555-123-4567", "on 2026-11-25 [phone]");
	check_redact("555-123-4567\n555-123-4568", "[phone]\n[phone]");
}

Test(log, redact_keeps_other_numbers)
{
	static const char *const keep[] = {
		"100000000",
		"amount 100000000 USD",
		"balance -5551234567",
		"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
		"0x88df016429689c079f3b2f6ad39fa052532c56795b733da78a91ebe6a713944b",
		"88df016429689c079f3b2f6ad39fa052532c56795b733da78a91ebe6a713944b",
		"tx 0x1234567890123456789012345678901234567890123456789012345678901234",
		"2026-11-25",
		"on 2026-11-25 at noon",
		"2026-11-25T18:55:28.123Z",
		"2026-11-25 18:55:28",
		"25.11.2026",
		"11/25/2026",
		"18:55:28.123",
		"127.0.0.1",
		"127.0.0.1:8080",
		"192.168.100.200",
		"10.0.0.1, 192.168.1.254",
		"::1 and 2001:db8::1",
		"req-1234-5678-9012",
		"req_5551234567",
		"550e8400-e29b-41d4-a716-446655440000",
		"12345678-1234-1234-1234-123456789012",
		"1732560928123",
		"took 12.5 ms",
		"1234567.89",
		"1000000-2000000",
		"12345.67 USD",
		"v1.2.3",
		"version 10.15.7",
		"id=abc-555-123-4567",
		"555-1234",
		"(2026) 100 items",
		"retry 3 of 8 in 250ms",
		"",
	};

	for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
		check_redact(keep[i], keep[i]);
}

Test(log, redact_appends_and_respects_cap)
{
	struct buf out = BUF_INIT(16);

	cr_assert_eq(buf_puts(&out, "x:"), ST_OK);
	cr_assert_eq(log_redact("a@b.com", &out), ST_OK);
	cr_assert_str_eq(out.ptr, "x:[email]");
	cr_assert_eq(log_redact("this is far too long for the cap", &out), ST_TOO_LARGE);
	cr_assert_str_eq(out.ptr, "x:[email]");
	buf_release(&out);
}

/* ---- the redaction shortcuts against the full passes ------------------- */

/* log_redact (passes skipped when they cannot match, no intermediate buf
 * when one pass is enough) must equal log_redact_full byte for byte, also
 * when the output buf is too small. */
static void check_same_as_full(const char *in)
{
	struct buf fast = BUF_INIT(1 << 20), full = BUF_INIT(1 << 20);
	enum st_rc rc;

	cr_assert_eq(log_redact(in, &fast), ST_OK);
	cr_assert_eq(log_redact_full(in, &full), ST_OK);
	cr_assert(fast.len == full.len && !memcmp(fast.ptr, full.ptr, full.len),
		  "redact(\"%s\"): shortcut \"%s\", full \"%s\"", in, fast.ptr, full.ptr);
	if (full.len) {
		struct buf small = BUF_INIT(full.len); /* "x" + result: one byte short */

		cr_assert_eq(buf_puts(&small, "x"), ST_OK);
		rc = log_redact(in, &small);
		cr_assert_eq(rc, ST_TOO_LARGE, "\"%s\"", in);
		cr_assert_str_eq(small.ptr, "x");
		cr_assert_eq(log_redact_full(in, &small), ST_TOO_LARGE);
		cr_assert_str_eq(small.ptr, "x");
		buf_release(&small);
	}
	buf_release(&fast);
	buf_release(&full);
}

static uint64_t xorshift(uint64_t *st)
{
	*st ^= *st << 13;
	*st ^= *st >> 7;
	*st ^= *st << 17;
	return *st;
}

/* Random text made mostly of what e-mail addresses and phone numbers are
 * made of, so that both passes match often, in every combination. */
static void random_text(uint64_t *st, char *out, size_t cap)
{
	static const char *const pieces[] = {
		"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", " ", "-", ".", "+", "(", ")",
		"@", "a", "x", "Z", "_", ":", "/", "%", "com", ".org", "example", "555", "123",
		"4567", "+44", "(0)", "20 7946", "\"", "\\", "\n", "\xc3\xa9", "\xe2\x82\xac",
		"\xff", "\xf0\x9f\x98\x80", "[email]", "x@y.io", "127.0.0.1", "2026-11-25",
	};
	size_t n = 0, want = xorshift(st) % 64;

	while (n < want) {
		const char *p = pieces[xorshift(st) % (sizeof(pieces) / sizeof(pieces[0]))];
		size_t k = strlen(p);
		char any = (char)(xorshift(st) % 255 + 1);

		if (xorshift(st) % 8 == 0) {
			p = &any; /* any byte but NUL */
			k = 1;
		}
		if (n + k >= cap)
			break;
		memcpy(out + n, p, k);
		n += k;
	}
	out[n] = '\0';
}

Test(log, redact_shortcuts_equal_full_passes)
{
	static const char *const corpus[] = {
		"", "request", "GET", "/healthz", "/api/v2/intents/42", "127.0.0.1",
		"192.168.100.200", "::1", "49882779d4910f86", "alice@example.com",
		"mail alice@example.com now", "+44 20 7946 0958", "call +44 20 7946 0958 today",
		"(555) 123-4567", "555-123-4567", "555.123.4567", "020 7946 0958",
		"a@b.com 555-123-4567", "555-123-4567 a@b.com", "x@555-123-4567.com",
		"555-123-4567@example.com", "+1 555 123 4567@x.io", "john5551234567@example.com",
		"user@mail.example.com-suffix", "@@@", "a@", "@b.com", "+1234567", "+123456",
		"12345678", "123456789", "1 2 3 4 5 6 7 8 9", "(0)20 7946 0958",
		"2026-11-25T18:55:28.123Z", "balance -5551234567", "tel:+1-555-123-4567",
		"a 555-123-4567, b 555.987.6543", "lodash@4.17.21 and 555 123 4567",
	};
	uint64_t st = 0x5eed5eed5eedULL;
	char text[512];

	for (size_t i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++)
		check_same_as_full(corpus[i]);
	for (int i = 0; i < 50000; i++) {
		random_text(&st, text, sizeof(text));
		check_same_as_full(text);
	}
}

/* ---- numbers, time, fields --------------------------------------------- */

Test(log, field_int_and_fixed_exact)
{
	struct buf f = BUF_INIT(4096);
	json_t *j;
	json_error_t e;
	char *obj;

	log_field_int(&f, "a", 0);
	log_field_int(&f, "b", -1);
	log_field_int(&f, "c", INT64_MIN);
	log_field_int(&f, "d", INT64_MAX);
	cr_assert_str_eq(f.ptr, ",\"a\":0,\"b\":-1,\"c\":-9223372036854775808,"
				"\"d\":9223372036854775807");
	buf_reset(&f);
	log_field_fixed(&f, "ms", 0.0153, 3);
	log_field_fixed(&f, "ms", 0.015, 3);
	log_field_fixed(&f, "ms", 1.5, 3);
	log_field_fixed(&f, "ms", 20.9045, 3);
	log_field_fixed(&f, "ms", 12.5, 0);
	log_field_fixed(&f, "ms", -2.25, 1);
	log_field_fixed(&f, "ms", -0.0001, 3);
	log_field_fixed(&f, "ms", 0.5, 12);
	log_field_fixed(&f, "ms", 1e300, 3);
	log_field_fixed(&f, "ms", NAN, 3);
	log_field_fixed(&f, "ms", -INFINITY, 3);
	cr_assert_str_eq(f.ptr, ",\"ms\":0.015,\"ms\":0.015,\"ms\":1.500,\"ms\":20.905,\"ms\":13,"
				"\"ms\":-2.3,\"ms\":0.000,\"ms\":0.500000000,\"ms\":1e+300,"
				"\"ms\":null,\"ms\":null");
	/* Every one of them is a JSON number (or null). */
	cr_assert_eq(asprintf(&obj, "{\"k\":0%s}", f.ptr), (int)strlen(f.ptr) + 7);
	j = json_loads(obj, 0, &e);
	cr_assert_not_null(j, "%s: %s", e.text, obj);
	json_decref(j);
	free(obj);
	buf_release(&f);
}

Test(log, fields_sized_once)
{
	struct buf f = BUF_INIT(4096);
	size_t alloc;

	/* A request's fields: one allocation, no regrowth as they go in. */
	log_field_str(&f, "method", "GET");
	alloc = f.alloc;
	cr_assert_geq(alloc, 300);
	cr_assert_str_eq(f.ptr, ",\"method\":\"GET\"");
	log_field_str(&f, "route", "/api/v2/ledger/transactions");
	log_field_str(&f, "path", "/api/v2/ledger/transactions?account=treasury&limit=50");
	log_field_int(&f, "status", 200);
	log_field_fixed(&f, "duration_ms", 1.234, 3);
	log_field_str(&f, "client_ip", "192.168.100.200");
	log_field_str(&f, "span_id", "49882779d4910f86");
	log_field_str(&f, "idempotency", "miss");
	cr_assert_eq(f.alloc, alloc, "fields regrew to %zu", f.alloc);
	buf_release(&f);
}

Test(log, ts_is_now_in_utc)
{
	struct logger lg;
	json_t *j;
	struct tm tm = { 0 };
	struct timespec b, a;
	time_t before, after, ts;
	const char *s;

	/* The bounds come from the clock the line's ts is read from
	 * (CLOCK_REALTIME): time(NULL) is the coarse clock, which names the
	 * previous second for up to a tick after the boundary, so a line
	 * stamped in that tick failed "ts <= after" by chance. */
	log_init(&lg, pipefd[1], LOG_DEBUG);
	clock_gettime(CLOCK_REALTIME, &b);
	log_emit(&lg, LOG_INFO, NULL, NULL, "tick", NULL);
	clock_gettime(CLOCK_REALTIME, &a);
	before = b.tv_sec;
	after = a.tv_sec;
	j = one_line(NULL);
	s = str_member(j, "ts");
	cr_assert_not_null(strptime(s, "%Y-%m-%dT%H:%M:%S", &tm), "ts: %s", s);
	ts = timegm(&tm);
	cr_assert(ts >= before && ts <= after, "ts %s is not between %lld and %lld", s,
		  (long long)before, (long long)after);
	json_decref(j);
}

Test(log, long_log_msg_not_cut)
{
	struct logger lg;
	char big[5001];
	json_t *j;

	memset(big, 'q', 5000);
	big[5000] = '\0';
	log_init(&lg, pipefd[1], LOG_DEBUG);
	log_msg(&lg, LOG_INFO, "%s and %s", big, "x@example.com");
	j = one_line(NULL);
	cr_assert_eq(strlen(str_member(j, "msg")), 5000 + 12);
	cr_assert_null(strstr(str_member(j, "msg"), "x@example.com"));
	json_decref(j);
}

Test(log, truncation_at_every_offset_keeps_utf8_whole)
{
	struct logger lg;
	size_t n = 20000;
	char *msg = malloc(n + 1), *raw;
	json_t *j;

	/* 4-, 3- and 2-byte characters after a run of ASCII of every length
	 * mod 8, so the cut lands everywhere inside the runs and sequences. */
	log_init(&lg, pipefd[1], LOG_DEBUG);
	for (size_t pre = 0; pre < 16; pre++) {
		size_t k = 0;

		memset(msg, 'a', pre);
		k = pre;
		while (k + 9 < n) {
			memcpy(msg + k, "\xf0\x9f\x98\x80\xe2\x82\xac\xc3\xa9", 9);
			k += 9;
		}
		msg[k] = '\0';
		log_emit(&lg, LOG_INFO, NULL, NULL, msg, NULL);
		j = one_line(&raw);
		cr_assert_leq(strlen(raw), 16384);
		cr_assert(json_is_true(json_object_get(j, "truncated")));
		cr_assert_eq(strncmp(str_member(j, "msg"), msg, strlen(str_member(j, "msg"))), 0);
		json_decref(j);
		free(raw);
	}
	free(msg);
}

/* ---- the line buffer --------------------------------------------------- */

static int memfd = -1;

static void buffer_setup(void)
{
	memfd = memfd_create("test_log", 0);
	cr_assert_geq(memfd, 0);
}

static void buffer_teardown(void)
{
	close(memfd);
}

static double now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* What the memfd holds (a malloc'd string; *len_out its length). */
static char *written(size_t *len_out)
{
	off_t end = lseek(memfd, 0, SEEK_END);
	char *p = malloc((size_t)end + 1);

	cr_assert_eq(pread(memfd, p, (size_t)end, 0), end);
	p[end] = '\0';
	if (len_out)
		*len_out = (size_t)end;
	return p;
}

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; (s = strchr(s, '\n')); s++)
		n++;
	return n;
}

/* Every line parses as a JSON object. */
static void assert_json_lines(const char *s)
{
	while (*s) {
		const char *nl = strchr(s, '\n');
		json_error_t e;
		json_t *j;

		cr_assert_not_null(nl, "a cut line at the end: %.80s", s);
		j = json_loadb(s, (size_t)(nl - s), 0, &e);
		cr_assert(json_is_object(j), "not a JSON line (%s): %.*s", e.text, (int)(nl - s), s);
		json_decref(j);
		s = nl + 1;
	}
}

TestSuite(log_buffer, .init = buffer_setup, .fini = buffer_teardown);

Test(log_buffer, info_lines_come_late_and_whole)
{
	struct logger lg;
	double t0, t1;
	char *out;
	size_t len;

	log_init(&lg, memfd, LOG_DEBUG);
	cr_assert_null(lg.buffer);
	cr_assert_eq(log_buffer_start(&lg), ST_OK);
	cr_assert_not_null(lg.buffer);
	cr_assert_eq(log_buffer_start(&lg), ST_OK); /* already on */
	t0 = now_ms();
	log_emit(&lg, LOG_INFO, "r1", NULL, "first", NULL);
	log_emit(&lg, LOG_DEBUG, "r2", NULL, "second", NULL);
	out = written(&len);
	t1 = now_ms();
	/* Checked quickly enough, nothing is out yet: the flusher waits. */
	if (t1 - t0 < LOG_BUFFER_DELAY_MS / 2)
		cr_assert_eq(len, 0, "written at once: %s", out);
	free(out);
	/* Then both arrive in one go, soon (generous bound: a busy machine). */
	do {
		usleep(2000);
		out = written(&len);
		if (len || now_ms() - t0 > 5000)
			break;
		free(out);
	} while (1);
	cr_assert_eq(count_lines(out), 2, "%s", out);
	cr_assert(strstr(out, "\"first\"") < strstr(out, "\"second\""), "%s", out);
	assert_json_lines(out);
	free(out);
	log_buffer_stop(&lg);
	cr_assert_null(lg.buffer);
}

Test(log_buffer, warn_and_error_write_at_once_in_order)
{
	struct logger lg;
	char *out;

	log_init(&lg, memfd, LOG_DEBUG);
	cr_assert_eq(log_buffer_start(&lg), ST_OK);
	log_emit(&lg, LOG_INFO, NULL, NULL, "one", NULL);
	log_emit(&lg, LOG_INFO, NULL, NULL, "two", NULL);
	log_emit(&lg, LOG_WARN, NULL, NULL, "three", NULL);
	/* Written before log_emit returned: no waiting here. */
	out = written(NULL);
	cr_assert_eq(count_lines(out), 3, "%s", out);
	cr_assert(strstr(out, "\"one\"") < strstr(out, "\"two\"") &&
		  strstr(out, "\"two\"") < strstr(out, "\"three\""), "%s", out);
	free(out);
	log_msg(&lg, LOG_ERROR, "four");
	out = written(NULL);
	cr_assert_eq(count_lines(out), 4, "%s", out);
	assert_json_lines(out);
	free(out);
	log_buffer_stop(&lg);
}

Test(log_buffer, full_buffer_written_without_waiting)
{
	struct logger lg;
	char msg[1000], *out;
	size_t len;

	memset(msg, 'm', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = '\0';
	/* The flusher writes the batch out LOG_BUFFER_DELAY_MS after the
	 * first line woke it. An attempt whose lines and read took that long
	 * (this thread descheduled on a loaded machine) may see the flusher's
	 * write, not the full buffer's, and then all 100 lines: it proves
	 * nothing either way, and is made again on an empty file. One that
	 * took less saw only what log_emit wrote itself. */
	for (int attempt = 0;; attempt++) {
		double t0;
		bool alone;

		cr_assert_lt(attempt, 50, "50 attempts each took over %d ms", LOG_BUFFER_DELAY_MS);
		log_init(&lg, memfd, LOG_DEBUG);
		cr_assert_eq(log_buffer_start(&lg), ST_OK);
		t0 = now_ms();
		/* 100 lines of about 1 KiB: more than one 64 KiB buffer. */
		for (int i = 0; i < 100; i++)
			log_emit(&lg, LOG_INFO, NULL, NULL, msg, NULL);
		out = written(&len);
		alone = now_ms() - t0 < LOG_BUFFER_DELAY_MS;
		if (alone) {
			cr_assert_gt(len, 32768, "nothing written when the buffer filled up");
			cr_assert_lt(count_lines(out), 100);
			assert_json_lines(out);
		}
		free(out);
		log_buffer_stop(&lg);
		if (alone)
			break;
		cr_assert_eq(ftruncate(memfd, 0), 0);
		cr_assert_eq(lseek(memfd, 0, SEEK_SET), 0);
	}
	out = written(&len);
	cr_assert_eq(count_lines(out), 100);
	assert_json_lines(out);
	free(out);
	/* Unbuffered again, and still working. */
	log_emit(&lg, LOG_INFO, NULL, NULL, "after", NULL);
	out = written(NULL);
	cr_assert_eq(count_lines(out), 101);
	free(out);
	log_buffer_stop(&lg);
	log_buffer_stop(NULL);
}

struct writer_arg {
	struct logger *lg;
	int id;
};

#define WRITERS 4
#define LINES_PER_WRITER 3000

static void *writer_main(void *p)
{
	const struct writer_arg *a = p;

	for (int i = 0; i < LINES_PER_WRITER; i++) {
		struct buf f = BUF_INIT(256);

		log_field_int(&f, "w", a->id);
		log_field_int(&f, "i", i);
		log_emit(a->lg, i % 97 == 0 ? LOG_WARN : LOG_INFO, NULL, NULL, "concurrent", &f);
		buf_release(&f);
	}
	return NULL;
}

Test(log_buffer, concurrent_lines_whole_once_in_order)
{
	struct logger lg;
	pthread_t th[WRITERS];
	struct writer_arg args[WRITERS];
	int next[WRITERS] = { 0 };
	char *out, *s;

	log_init(&lg, memfd, LOG_DEBUG);
	cr_assert_eq(log_buffer_start(&lg), ST_OK);
	for (int k = 0; k < WRITERS; k++) {
		args[k] = (struct writer_arg){ &lg, k };
		cr_assert_eq(pthread_create(&th[k], NULL, writer_main, &args[k]), 0);
	}
	for (int k = 0; k < WRITERS; k++)
		pthread_join(th[k], NULL);
	log_buffer_stop(&lg);
	out = written(NULL);
	cr_assert_eq(count_lines(out), WRITERS * LINES_PER_WRITER);
	assert_json_lines(out);
	/* Each writer's lines appear once each, in the order it logged them. */
	for (s = out; *s; s = strchr(s, '\n') + 1) {
		json_t *j = json_loadb(s, (size_t)(strchr(s, '\n') - s), 0, NULL);
		int w = (int)json_integer_value(json_object_get(j, "w"));
		int i = (int)json_integer_value(json_object_get(j, "i"));

		cr_assert(w >= 0 && w < WRITERS);
		cr_assert_eq(i, next[w], "writer %d: line %d after %d", w, i, next[w] - 1);
		next[w]++;
		json_decref(j);
	}
	free(out);
}

/* voluntary_ctxt_switches of each of this process's threads. */
static size_t thread_switches(pid_t *tids, long *sw, size_t max)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	size_t n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d)) && n < max) {
		char path[300], line[256];
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		tids[n] = (pid_t)strtol(e->d_name, NULL, 10);
		sw[n] = -1;
		while (fgets(line, sizeof(line), f))
			if (!strncmp(line, "voluntary_ctxt_switches:", 24))
				sw[n] = strtol(line + 24, NULL, 10);
		fclose(f);
		n++;
	}
	closedir(d);
	return n;
}

static long switches_of(pid_t tid)
{
	pid_t tids[64];
	long sw[64];
	size_t n = thread_switches(tids, sw, 64);

	for (size_t k = 0; k < n; k++)
		if (tids[k] == tid)
			return sw[k];
	return -1;
}

Test(log_buffer, flusher_sleeps_while_idle)
{
	struct logger lg;
	pid_t before[64], after[64], flusher = 0;
	long sw[64], s0, s1;
	size_t nb, na;

	nb = thread_switches(before, sw, 64);
	log_init(&lg, memfd, LOG_DEBUG);
	cr_assert_eq(log_buffer_start(&lg), ST_OK);
	na = thread_switches(after, sw, 64);
	for (size_t k = 0; k < na && !flusher; k++) {
		bool known = false;

		for (size_t m = 0; m < nb; m++)
			known = known || after[k] == before[m];
		if (!known)
			flusher = after[k];
	}
	cr_assert_neq(flusher, 0, "no flusher thread found");
	/* One batch: it wakes for it, then goes back to sleep for good. */
	log_emit(&lg, LOG_INFO, NULL, NULL, "wake up", NULL);
	for (int i = 0; i < 2500 && lseek(memfd, 0, SEEK_END) == 0; i++)
		usleep(2000);
	cr_assert_gt(lseek(memfd, 0, SEEK_END), 0, "the batch was never written");
	usleep(100 * 1000);
	s0 = switches_of(flusher);
	usleep(200 * 1000);
	s1 = switches_of(flusher);
	cr_assert_geq(s0, 0);
	/* Polling every 10 ms would be 20 wakeups; allow one late sleep. */
	cr_assert_leq(s1 - s0, 1, "the idle flusher woke up %ld times", s1 - s0);
	log_buffer_stop(&lg);
}

static void check_target(const char *in, const char *want)
{
	struct buf out = BUF_INIT(1 << 16);

	cr_assert_eq(log_redact_target(in, &out), ST_OK, "%s", in);
	cr_expect_str_eq(out.len ? out.ptr : "", want, "%s", in);
	buf_release(&out);
}

/* Paths and query strings: PII glued by '/' or hidden by escapes. */
Test(log, redact_targets_phones)
{
	/* E.164, with and without escapes and separators */
	check_target("/x/+306912345678", "/x/[phone]");
	check_target("/x/%2B306912345678", "/x/[phone]");
	check_target("/users/+44%2020%207946%200958/orders", "/users/[phone]/orders");
	check_target("/users/%2B1-555-123-4567", "/users/[phone]");
	check_target("/c/tel:+306912345678", "/c/[phone]");
	/* national formats with spaces, dashes, dots, parentheses */
	check_target("/lookup/020%207946%200958", "/lookup/[phone]");
	check_target("/lookup/555-123-4567", "/lookup/[phone]");
	check_target("/lookup/555.123.4567/x", "/lookup/[phone]/x");
	check_target("/lookup/(555)%20123-4567", "/lookup/[phone]");
	check_target("/lookup/691%20234%205678", "/lookup/[phone]");
	/* in the query: '+' is a space there */
	check_target("/search?phone=%2B306912345678&limit=10", "/search?phone=[phone]&limit=10");
	check_target("/search?phone=+30+691+234+5678", "/search?phone=[phone]");
	check_target("/search?tel=691-234-5678;x=1", "/search?tel=[phone];x=1");
	check_target("/search?%2B306912345678", "/search?[phone]");
}

Test(log, redact_targets_emails)
{
	check_target("/u/alice@example.com", "/u/[email]");
	check_target("/u/alice%40example.com/orders", "/u/[email]/orders");
	check_target("/u/ALICE%40Example.CO.UK", "/u/[email]");
	check_target("/u/first.last%2Btag%40sub.example.org", "/u/[email]");
	check_target("/search?email=bob%40example.org&after=12", "/search?email=[email]&after=12");
	check_target("/search?q=mail+bob%40example.org+now", "/search?q=[email]");
	check_target("/search?email%40example.com=1", "/search?[email]=1");
}

/* What a path of settled is made of stays readable. */
Test(log, redact_targets_keep_ids_wallets_hashes_amounts)
{
	static const char *const keep[] = {
		"/healthz",
		"/api/v2/accounts/0x52908400098527886E0F7030069857D2E4169EE7",
		"/api/v2/accounts/treasury",
		"/api/v2/intents/int_01a24d2d6253eb5b6f036496",
		"/api/claim/record/0x88df016429689c079f3b2f6ad39fa052532c56795b733da78a91ebe6a713944b",
		"/api/v2/holds/hold_5f1c0a/capture",
		"/api/v2/ledger/transactions?account=treasury&after=1234567890&limit=100",
		"/api/v2/payouts/batch/pb_20261206/approve",
		"/api/admin/api-keys/key_3f9a1c2e/rotate",
		"/api/admin/dlq/123456789/retry",
		"/amount/100000000",
		"/x?amount=123456789012&ts=2026-12-06T21:00:00Z",
		"/x/550e8400-e29b-41d4-a716-446655440000",
		"/x?ip=192.168.100.200&d=2026-12-06",
		"/api/v2/accounts/tre%61sury",
		"/x/%zz/%4",
		"/", "", "?", "/a//b?&&==",
	};

	for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
		check_target(keep[i], keep[i]);
}

Test(log, field_target_redacts_and_escapes)
{
	struct buf f = BUF_INIT(4096);

	log_field_target(&f, "path", "/x/+306912345678/\"q\"");
	cr_expect_str_eq(f.ptr, ",\"path\":\"/x/[phone]/\\\"q\\\"\"");
	buf_release(&f);
}

/* ---- the request line (log_emit_request) ------------------------------- */

/* The line log_emit_request writes for r, and the one the fields path
 * writes for it (log_field_* into a buf capped at LOG_REQUEST_FIELDS_MAX,
 * then log_emit), each with its ts blanked (the two may straddle a ms). */
static void request_lines(const struct log_request *r, char **fast, char **ref)
{
	struct logger lg;
	struct buf f = BUF_INIT(LOG_REQUEST_FIELDS_MAX);
	char *lines[2];

	log_init(&lg, pipefd[1], LOG_DEBUG);
	log_emit_request(&lg, LOG_INFO, "req-1", "0af7651916cd43dd8448eb211c80319c", r);
	lines[0] = drain();
	log_field_str(&f, "method", r->method);
	log_field_str(&f, "route", r->route);
	log_field_target(&f, "path", r->target);
	log_field_int(&f, "status", r->status);
	log_field_fixed(&f, "duration_ms", r->duration_ms, 3);
	log_field_str(&f, "client_ip", r->client_ip);
	log_field_str(&f, "span_id", r->span_id);
	if (r->idempotency)
		log_field_str(&f, "idempotency", r->idempotency);
	log_emit(&lg, LOG_INFO, "req-1", "0af7651916cd43dd8448eb211c80319c", "request", &f);
	buf_release(&f);
	lines[1] = drain();
	for (int i = 0; i < 2; i++) {
		cr_assert_gt(strlen(lines[i]), 32);
		cr_assert_eq(strncmp(lines[i], "{\"ts\":\"", 7), 0);
		memset(lines[i] + 7, 'T', 24);
	}
	*fast = lines[0];
	*ref = lines[1];
}

Test(log, request_line_same_bytes_as_fields_path)
{
	static const char *const targets[] = {
		"/healthz",
		"/api/v2/holds/hold_123456789/capture",
		"/x/+306912345678?tel=%2B44%2020%207946%200958",
		"/u/alice%40example.com/orders?q=\"x\"\\y",
		"/s?email=bob@example.org&n=555-123-4567",
		"/caf\xc3\xa9/\xff\x01",
		"",
	};
	static const char *const methods[] = { "GET", "POST", "555-123-4567", "a@b.example.com", "M\"\\\t" };
	struct log_request r = {
		.route = "/api/register", .client_ip = "127.0.0.1", .span_id = "b7ad6b7169203331",
		.status = 201, .duration_ms = 0.0125,
	};

	for (size_t t = 0; t < sizeof(targets) / sizeof(targets[0]); t++) {
		for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
			char *fast, *ref;

			r.target = targets[t];
			r.method = methods[m];
			r.idempotency = m % 2 ? "HIT" : NULL;
			r.status = m == 2 ? 503 : 201;
			r.span_id = m == 3 ? NULL : "b7ad6b7169203331";
			request_lines(&r, &fast, &ref);
			cr_assert_str_eq(fast, ref, "target %zu method %zu", t, m);
			free(fast);
			free(ref);
		}
	}
}

/* Members that do not all fit under the cap: the same members left out. */
Test(log, request_line_over_cap_same_bytes_as_fields_path)
{
	static const size_t lens[] = { 4000, 4040, 4050, 4060, 4070, 4080, 4096, 5000, 9000 };
	struct log_request r = {
		.method = "GET", .route = "unmatched", .client_ip = "2001:db8::1", .span_id = "b7ad6b7169203331",
		.idempotency = "MISS", .status = 404, .duration_ms = 1e300,
	};

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		char *target = malloc(lens[i] + 1), *fast, *ref;

		cr_assert_not_null(target);
		target[0] = '/';
		memset(target + 1, i % 2 ? 'a' : '"', lens[i] - 1);
		target[lens[i]] = '\0';
		r.target = target;
		request_lines(&r, &fast, &ref);
		cr_assert_str_eq(fast, ref, "target of %zu bytes", lens[i]);
		free(fast);
		free(ref);
		free(target);
	}
}

/* Random text over the characters redaction and escaping look at. */
Test(log, request_line_random_text_same_bytes_as_fields_path)
{
	static const char alphabet[] = "0123456789+-.() @%/?&=;_:abcxyzXY\"\\\t\x01\xc3\xa9\xff";
	unsigned seed = 12345;
	char text[4][48];

	for (int round = 0; round < 3000; round++) {
		struct log_request r = { .route = "/healthz", .status = 200, .duration_ms = round * 0.0007 };
		char *fast, *ref;

		for (int k = 0; k < 4; k++) {
			size_t n = (size_t)(rand_r(&seed) % 40);

			for (size_t i = 0; i < n; i++)
				text[k][i] = alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
			text[k][n] = '\0';
		}
		r.method = text[0];
		r.target = text[1];
		r.client_ip = text[2];
		r.span_id = text[3];
		r.idempotency = round % 3 ? NULL : text[0];
		request_lines(&r, &fast, &ref);
		cr_assert_str_eq(fast, ref, "round %d", round);
		free(fast);
		free(ref);
	}
}

/* log_text_plain says "as it is" only of text that redaction leaves alone
 * (targets too) and JSON does not escape. */
Test(log, text_plain_only_when_nothing_changes)
{
	static const char alphabet[] = "0123456789+-.() @%/?&=;_:abcXY\"\\\t\x7f\xc3\xa9";
	unsigned seed = 777;
	char s[40];
	int plain = 0;

	for (int round = 0; round < 20000; round++) {
		size_t n = (size_t)(rand_r(&seed) % 32);
		struct buf red = BUF_INIT(4096), tred = BUF_INIT(4096), esc = BUF_INIT(4096);

		for (size_t i = 0; i < n; i++)
			s[i] = alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
		s[n] = '\0';
		cr_assert_eq(log_redact(s, &red), ST_OK);
		cr_assert_eq(log_redact_target(s, &tred), ST_OK);
		cr_assert_eq(json_escape_buf(&esc, s, n, JSON_ESC_REPAIR | JSON_ESC_LOWER), ST_OK);
		if (log_text_plain(s, n, false)) {
			plain++;
			cr_assert_str_eq(red.ptr, s);
			cr_assert_str_eq(esc.ptr, s);
		}
		if (log_text_plain(s, n, true))
			cr_assert_str_eq(tred.ptr, s);
		buf_release(&red);
		buf_release(&tred);
		buf_release(&esc);
	}
	cr_assert_gt(plain, 1000); /* the property was tested, not skipped */
	cr_assert(log_text_plain("127.0.0.1", 9, true));
	cr_assert(log_text_plain("/api/v2/holds/hold_1/capture", 28, true));
	cr_assert_not(log_text_plain("555-123-4567", 12, false));
	cr_assert_not(log_text_plain("a@b", 3, false));
	cr_assert_not(log_text_plain("/a%40b", 6, true));
	cr_assert(log_text_plain("/a%40b", 6, false));
}

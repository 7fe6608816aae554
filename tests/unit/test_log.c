/* test_log.c — log line shape, levels, fields, truncation and redaction. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

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

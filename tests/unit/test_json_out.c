/* test_json_out.c — json_out() must write exactly what
 * json_dumps(v, JSON_COMPACT) writes: fixed cases for every type and every
 * escape, then random trees (seeded, so a failure can be replayed) compared
 * byte for byte. Also the depth limit and the cap of the buf. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_out.h"

#include "banned.h"

static void same_as_jansson(json_t *v)
{
	struct buf out = BUF_INIT(1 << 20);
	char *want = json_dumps(v, JSON_COMPACT);

	cr_assert_not_null(want);
	cr_assert_eq(json_out(&out, v), ST_OK);
	cr_assert_str_eq(out.ptr, want);
	cr_assert_eq(out.len, strlen(want));
	free(want);
	buf_release(&out);
	json_decref(v);
}

Test(json_out, every_type)
{
	same_as_jansson(json_pack("{s:s, s:I, s:I, s:I, s:b, s:b, s:n, s:[], s:{}, s:[i, s, [ {} ]]}",
				  "s", "text", "zero", (json_int_t)0, "min", (json_int_t)INT64_MIN,
				  "max", (json_int_t)INT64_MAX, "t", 1, "f", 0, "nothing", "empty_a",
				  "empty_o", "nested", 1, "two"));
	same_as_jansson(json_array());
	same_as_jansson(json_object());
}

Test(json_out, escapes_and_utf8)
{
	static const char tricky[] = "q\"b\\s/\b\f\n\r\t\x01\x1f\x7f é € 😀 \xe2\x80\xa8 end";
	json_t *o = json_object();

	json_object_set_new(o, tricky, json_stringn(tricky, sizeof(tricky) - 1));
	json_object_set_new(o, "nul", json_stringn("a\0b", 3));
	same_as_jansson(o);
}

Test(json_out, reals_go_through_jansson)
{
	same_as_jansson(json_pack("[f, f, f, f]", 0.5, 1.0, -1e300, 123456.789));
}

/* xorshift64*: a replayable stream for the random trees. */
static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

static json_t *random_string(uint64_t *s)
{
	static const char *const pieces[] = { "a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\x01",
					      "\x1f", "\x7f", "é", "€", "😀", "\xe2\x80\xa8", "acct_",
					      "0xAbC" };
	char text[64] = "";
	size_t len = 0, n = next_rand(s) % 8;

	for (size_t i = 0; i < n; i++) {
		const char *p = pieces[next_rand(s) % (sizeof(pieces) / sizeof(pieces[0]))];
		size_t pl = strlen(p);

		memcpy(text + len, p, pl);
		len += pl;
	}
	return json_stringn(text, len);
}

static json_t *random_value(uint64_t *s, int depth)
{
	switch (next_rand(s) % (depth > 4 ? 5 : 7)) {
	case 0: return random_string(s);
	case 1: return json_integer((json_int_t)next_rand(s));
	case 2: return json_integer((json_int_t)(next_rand(s) % 2000) - 1000);
	case 3: return json_boolean(next_rand(s) & 1);
	case 4: return json_null();
	case 5: {
		json_t *a = json_array();

		for (uint64_t n = next_rand(s) % 5; n; n--)
			json_array_append_new(a, random_value(s, depth + 1));
		return a;
	}
	default: {
		json_t *o = json_object();

		for (uint64_t n = next_rand(s) % 5; n; n--) {
			json_t *k = random_string(s);

			json_object_set_new(o, json_string_value(k), random_value(s, depth + 1));
			json_decref(k);
		}
		return o;
	}
	}
}

Test(json_out, random_trees_match_jansson)
{
	uint64_t seed = 0x5e771edULL;

	for (int i = 0; i < 5000; i++) {
		json_t *o = json_object();

		json_object_set_new(o, "v", random_value(&seed, 0));
		same_as_jansson(o);
	}
}

Test(json_out, a_loop_is_refused_and_nothing_is_written)
{
	struct buf out = BUF_INIT(1 << 20);
	json_t *a = json_array(), *b = json_array();

	json_array_append(a, b);
	json_array_append(b, a); /* a -> b -> a: a reference loop */
	cr_assert_eq(buf_puts(&out, "kept"), ST_OK);
	cr_assert_eq(json_out(&out, a), ST_INVALID);
	cr_assert_str_eq(out.ptr, "kept");
	json_array_clear(b); /* break the loop so both can be freed */
	json_decref(a);
	json_decref(b);
	buf_release(&out);
}

Test(json_out, a_full_buf_is_an_error_and_left_as_it_was)
{
	struct buf out = BUF_INIT(16);
	json_t *o = json_pack("{s:s}", "key", "a value longer than sixteen bytes");

	cr_assert_eq(buf_puts(&out, "ab"), ST_OK);
	cr_assert_eq(json_out(&out, o), ST_TOO_LARGE);
	cr_assert_str_eq(out.ptr, "ab");
	cr_assert_eq(out.len, 2);
	json_decref(o);
	buf_release(&out);
}

/* ---- json_writer: the same bytes as json_out of the same members ---- */

static void writer_matches(struct buf *written, json_t *v)
{
	struct buf want = BUF_INIT(1 << 20);

	cr_assert_eq(json_out(&want, v), ST_OK);
	cr_assert_str_eq(written->ptr, want.ptr);
	cr_assert_eq(written->len, want.len);
	buf_release(&want);
	json_decref(v);
}

Test(json_writer, members_of_every_kind_match_json_out)
{
	struct buf out = BUF_INIT(1 << 20);
	struct json_writer w;

	jw_begin(&w, &out);
	jw_str(&w, "id", "acct_0123");
	jw_str(&w, "esc\"aped", "quote \" backslash \\ newline \n tab \t ctl \x01 utf8 \xc3\xa9");
	jw_str(&w, "none", NULL);
	jw_i64(&w, "zero", 0);
	jw_i64(&w, "min", INT64_MIN);
	jw_i64(&w, "max", INT64_MAX);
	jw_null(&w, "nothing");
	jw_object(&w, "empty");
	jw_close(&w);
	jw_object(&w, "nested");
	jw_str(&w, "a", "b");
	jw_object(&w, "deeper");
	jw_i64(&w, "n", -7);
	jw_close(&w);
	jw_close(&w);
	jw_str(&w, "last", "");
	cr_assert_eq(jw_end(&w), ST_OK);
	writer_matches(&out, json_pack("{s:s, s:s, s:n, s:I, s:I, s:I, s:n, s:{}, s:{s:s, s:{s:I}}, s:s}",
				       "id", "acct_0123", "esc\"aped",
				       "quote \" backslash \\ newline \n tab \t ctl \x01 utf8 \xc3\xa9", "none",
				       "zero", (json_int_t)0, "min", (json_int_t)INT64_MIN, "max",
				       (json_int_t)INT64_MAX, "nothing", "empty", "nested", "a", "b",
				       "deeper", "n", (json_int_t)-7, "last", ""));
	buf_release(&out);
}

Test(json_writer, booleans)
{
	struct buf out = BUF_INIT(64);
	struct json_writer w;

	jw_begin(&w, &out);
	jw_bool(&w, "yes", true);
	jw_bool(&w, "no", false);
	cr_assert_eq(jw_end(&w), ST_OK);
	writer_matches(&out, json_pack("{s:b, s:b}", "yes", 1, "no", 0));
	buf_release(&out);
}

Test(json_writer, an_empty_object)
{
	struct buf out = BUF_INIT(64);
	struct json_writer w;

	jw_begin(&w, &out);
	cr_assert_eq(jw_end(&w), ST_OK);
	cr_assert_str_eq(out.ptr, "{}");
	buf_release(&out);
}

Test(json_writer, unbalanced_objects_are_refused_and_nothing_is_written)
{
	struct buf out = BUF_INIT(1 << 20);
	struct json_writer w;

	cr_assert_eq(buf_puts(&out, "kept"), ST_OK);
	jw_begin(&w, &out);
	jw_object(&w, "open");
	jw_str(&w, "k", "v");
	cr_assert_eq(jw_end(&w), ST_INVALID); /* "open" never closed */
	cr_assert_str_eq(out.ptr, "kept");

	jw_begin(&w, &out);
	jw_close(&w); /* nothing to close: jw_end closes the outermost */
	jw_str(&w, "after", "the error"); /* ignored: errors stick */
	cr_assert_eq(jw_end(&w), ST_INVALID);
	cr_assert_str_eq(out.ptr, "kept");
	cr_assert_eq(out.len, 4);
	buf_release(&out);
}

Test(json_writer, too_deep_is_refused)
{
	struct buf out = BUF_INIT(1 << 20);
	struct json_writer w;

	jw_begin(&w, &out);
	for (int i = 0; i < JSON_OUT_MAX_DEPTH + 2; i++)
		jw_object(&w, "d");
	cr_assert_eq(jw_end(&w), ST_INVALID);
	cr_assert_eq(out.len, 0);
	buf_release(&out);
}

Test(json_writer, a_full_buf_is_an_error_and_left_as_it_was)
{
	struct buf out = BUF_INIT(16);
	struct json_writer w;

	cr_assert_eq(buf_puts(&out, "ab"), ST_OK);
	jw_begin(&w, &out);
	jw_str(&w, "key", "a value longer than sixteen bytes");
	jw_str(&w, "k2", "v"); /* after the error: nothing */
	cr_assert_eq(jw_end(&w), ST_TOO_LARGE);
	cr_assert_str_eq(out.ptr, "ab");
	cr_assert_eq(out.len, 2);
	buf_release(&out);
}

Test(json_writer, arrays_raw_numbers_and_nested_values)
{
	struct buf out = BUF_INIT(4096);
	struct json_writer w;
	json_t *tree = json_pack("{s:[i, s]}", "k", 1, "v");

	jw_begin(&w, &out);
	jw_array(&w, "a");
	jw_str(&w, NULL, "x");
	jw_i64(&w, NULL, -1);
	jw_object(&w, NULL);
	jw_i64_str(&w, "nano", 1234567890123);
	jw_close(&w);
	jw_array(&w, NULL);
	jw_close(&w);
	jw_null(&w, NULL);
	jw_close(&w);
	jw_raw(&w, "rate", "0.25", 4);
	jw_strn(&w, "n", "a\0b", 3);
	jw_json(&w, "tree", tree);
	cr_assert_eq(jw_end(&w), ST_OK);
	cr_assert_str_eq(out.ptr, "{\"a\":[\"x\",-1,{\"nano\":\"1234567890123\"},[],null],\"rate\":0.25,"
				  "\"n\":\"a\\u0000b\",\"tree\":{\"k\":[1,\"v\"]}}");
	json_decref(tree);
	buf_release(&out);
}

Test(json_writer, members_append_to_an_open_object)
{
	struct buf out = BUF_INIT(4096);
	struct json_writer w;

	buf_puts(&out, "{\"first\":1");
	jw_members(&w, &out, true);
	jw_str(&w, "second", "2");
	cr_assert_eq(jw_end(&w), ST_OK);
	buf_putc(&out, '{');
	jw_members(&w, &out, false);
	jw_bool(&w, "only", true);
	cr_assert_eq(jw_end(&w), ST_OK);
	cr_assert_str_eq(out.ptr, "{\"first\":1,\"second\":\"2\"{\"only\":true");
	buf_release(&out);
}

Test(json_writer, a_callers_error_sticks_and_nothing_is_written)
{
	struct buf out = BUF_INIT(4096);
	struct json_writer w;

	buf_puts(&out, "x");
	jw_begin(&w, &out);
	jw_str(&w, "a", "b");
	jw_fail(&w, ST_NOMEM);
	jw_fail(&w, ST_INVALID);
	jw_str(&w, "c", "d");
	cr_assert_eq(jw_end(&w), ST_NOMEM);
	cr_assert_str_eq(out.ptr, "x");
	buf_release(&out);
}

Test(json_escape, the_log_flags_repair_utf8_and_write_lower_case)
{
	static const char in[] = "\x01\x1f\b\f\"\\ \xc3\xa9 \xff \xed\xa0\x80 \xe2\x82";
	struct buf a = BUF_INIT(4096), b = BUF_INIT(4096);

	cr_assert_eq(json_escape_buf(&a, in, sizeof(in) - 1, 0), ST_OK);
	cr_assert_eq(json_escape_buf(&b, in, sizeof(in) - 1, JSON_ESC_REPAIR | JSON_ESC_LOWER), ST_OK);
	cr_assert_str_eq(a.ptr, "\\u0001\\u001F\\b\\f\\\"\\\\ \xc3\xa9 \xff \xed\xa0\x80 \xe2\x82");
	cr_assert_str_eq(b.ptr, "\\u0001\\u001f\\b\\f\\\"\\\\ \xc3\xa9 \\ufffd \\ufffd\\ufffd\\ufffd "
				"\\ufffd\\ufffd");
	buf_release(&a);
	buf_release(&b);
}

Test(json_escape, a_window_cuts_between_characters_and_escapes)
{
	static const char in[] = "ab\xe2\x82\xac\n";
	char dst[8];
	size_t pos = 0, k;

	k = json_escape(dst, 4, in, sizeof(in) - 1, &pos, 0);
	cr_assert_eq(k, 2, "the euro sign does not fit whole");
	cr_assert_eq(pos, 2);
	k = json_escape(dst, 4, in, sizeof(in) - 1, &pos, 0);
	cr_assert_eq(k, 3);
	cr_assert_eq(pos, 5);
	k = json_escape(dst, 1, in, sizeof(in) - 1, &pos, 0);
	cr_assert_eq(k, 0, "\\n needs two bytes");
	cr_assert_eq(pos, 5);
}

Test(json_out, text_is_json_dumps_compact)
{
	json_t *v = json_pack("{s:[i, f, s], s:{}}", "a", 1, 0.5, "é\n", "o");
	char *want = json_dumps(v, JSON_COMPACT), *got = json_out_text(v);

	cr_assert_str_eq(got, want);
	free(want);
	free(got);
	json_decref(v);
	cr_assert_null(json_out_text(NULL));
}

Test(json_writer, end_copy_fills_a_fixed_array_or_leaves_it)
{
	struct buf b = BUF_INIT(16);
	struct json_writer w;
	char out[17] = "untouched";

	jw_begin(&w, &b);
	jw_str(&w, "a", "bc");
	cr_assert_eq(jw_end_copy(&w, out), ST_OK);
	cr_assert_str_eq(out, "{\"a\":\"bc\"}");
	cr_assert_eq(b.len, 0, "the buf is released");

	snprintf(out, sizeof(out), "untouched");
	jw_begin(&w, &b);
	jw_str(&w, "a", "longer than sixteen bytes");
	cr_assert_eq(jw_end_copy(&w, out), ST_TOO_LARGE);
	cr_assert_str_eq(out, "untouched");
	cr_assert_eq(b.len, 0);
}

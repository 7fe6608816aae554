/* test_json_fast.c — json_fast_load against jansson's json_loadb with
 * JSON_REJECT_DUPLICATES (what dispatch's parse_body asked before):
 * whatever the fast parser returns, jansson accepts too and returns the
 * same tree with members in the same order (their compact dumps are the
 * same bytes). Hand-written edges first, then random documents and random
 * damage to them. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_fast.h"

#include "banned.h"

/* Checks one input; returns whether the fast parser took it. */
static bool same_as_jansson(const char *p, size_t n)
{
	json_error_t err;
	json_t *f = json_fast_load(p, n), *j = json_loadb(p, n, JSON_REJECT_DUPLICATES, &err);
	bool took = f != NULL;

	if (f) {
		char *df, *dj;

		cr_assert_not_null(j, "fast took what jansson refuses (%s): %.*s", err.text, (int)n, p);
		cr_assert(json_equal(f, j), "different trees: %.*s", (int)n, p);
		df = json_dumps(f, JSON_COMPACT | JSON_ENCODE_ANY);
		dj = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
		cr_assert_str_eq(df, dj, "different order: %.*s", (int)n, p);
		free(df);
		free(dj);
	}
	json_decref(f);
	json_decref(j);
	return took;
}

static bool same(const char *s)
{
	return same_as_jansson(s, strlen(s));
}

Test(json_fast, the_bodies_the_server_gets_are_taken)
{
	cr_assert(same("{\"type\":\"payment.confirmed\",\"data\":{\"wallet\":\"0x6b167eacbeef0000000000000000000000000001\",\"amount\":\"100\",\"asset\":\"USD\"}}"));
	cr_assert(same("{\"wallet\":\"0x6b167eacbeef0000000000000000000000000001\"}"));
	cr_assert(same(" \t\r\n{ \"a\" : [ 1 , -2 , 0 , -0 , true , false , null , [ ] , { } ] }\n"));
	cr_assert(same("{\"\":\"\",\"n\":999999999999999999,\"m\":-999999999999999999}"));
	cr_assert(same("{}"));
}

Test(json_fast, what_it_leaves_to_jansson)
{
	static const char *const cases[] = {
		"", " ", "[]", "[1]", "\"s\"", "1", "true", "null",         /* not an object */
		"{\"a\":1}x", "{\"a\":1} {}", "{\"a\":1}\x00",               /* after the object */
		"{\"a\":1,\"a\":2}", "{\"a\":{\"b\":1,\"b\":1}}",            /* duplicates */
		"{\"a\":\"\\n\"}", "{\"a\\u0041\":1}", "{\"a\":\"\xc3\xa9\"}", /* escapes, UTF-8 */
		"{\"a\":\"\x7f\"}", "{\"a\":\"\t\"}", "{\"a\":\"\xff\"}",
		"\xef\xbb\xbf{}",                                            /* a BOM */
		"{\"a\":01}", "{\"a\":1.0}", "{\"a\":1e5}", "{\"a\":1E5}", "{\"a\":-}", "{\"a\":+1}",
		"{\"a\":1234567890123456789}", "{\"a\":-1234567890123456789}", /* 19 digits */
		"{\"a\":truex}", "{\"a\":tru}", "{\"a\":nul}", "{\"a\":falsey}",
		"{\"a\"}", "{\"a\":}", "{,}", "{\"a\":1,}", "{\"a\":[1,]}", "{\"a\":[,1]}",
		"{\"a\" 1}", "{1:1}", "{'a':1}", "{\"a\":1", "{\"a\":\"x", "{\"a", "{",
		"{\"a\":[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}",               /* deeper than 16 */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_assert_not(same_as_jansson(cases[i], strlen(cases[i]) + (i == 10)), "took %s", cases[i]);
	/* 16 levels deep are taken. */
	cr_assert(same("{\"a\":[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}"));
}

static unsigned rnd(unsigned *seed)
{
	*seed = *seed * 1103515245u + 12345u;
	return *seed >> 8;
}

static void put(char *buf, size_t *n, size_t cap, const char *s)
{
	size_t len = strlen(s);

	if (*n + len < cap) {
		memcpy(buf + *n, s, len);
		*n += len;
	}
}

static void gen_ws(char *buf, size_t *n, size_t cap, unsigned *seed)
{
	static const char *const ws[] = { "", "", "", " ", "\n", "\t", "\r\n  " };

	put(buf, n, cap, ws[rnd(seed) % 7]);
}

static void gen_string(char *buf, size_t *n, size_t cap, unsigned *seed)
{
	static const char *const pieces[] = { "a", "wallet", "0x6b16", "amount", "100", " ", "k",
					      "type", "USD", "", "x-y_z.1", "a" };
	int k = (int)(rnd(seed) % 3);

	put(buf, n, cap, "\"");
	while (k--)
		put(buf, n, cap, pieces[rnd(seed) % 12]);
	put(buf, n, cap, "\"");
}

static void gen_value(char *buf, size_t *n, size_t cap, unsigned *seed, int depth)
{
	unsigned r = rnd(seed) % (depth > 4 ? 6 : 9);
	char num[32];

	switch (r) {
	case 0: gen_string(buf, n, cap, seed); break;
	case 1: snprintf(num, sizeof(num), "%d", (int)(rnd(seed) % 2000) - 1000); put(buf, n, cap, num); break;
	case 2: put(buf, n, cap, rnd(seed) % 2 ? "true" : "false"); break;
	case 3: put(buf, n, cap, "null"); break;
	case 4: snprintf(num, sizeof(num), "%u%u", rnd(seed), rnd(seed)); put(buf, n, cap, num); break;
	case 5: gen_string(buf, n, cap, seed); break;
	case 6:
	case 7: {
		int k = (int)(rnd(seed) % 4);

		put(buf, n, cap, "{");
		for (int i = 0; i < k; i++) {
			if (i)
				put(buf, n, cap, ",");
			gen_ws(buf, n, cap, seed);
			gen_string(buf, n, cap, seed);
			gen_ws(buf, n, cap, seed);
			put(buf, n, cap, ":");
			gen_ws(buf, n, cap, seed);
			gen_value(buf, n, cap, seed, depth + 1);
			gen_ws(buf, n, cap, seed);
		}
		put(buf, n, cap, "}");
		break;
	}
	default: {
		int k = (int)(rnd(seed) % 4);

		put(buf, n, cap, "[");
		for (int i = 0; i < k; i++) {
			if (i)
				put(buf, n, cap, ",");
			gen_ws(buf, n, cap, seed);
			gen_value(buf, n, cap, seed, depth + 1);
			gen_ws(buf, n, cap, seed);
		}
		put(buf, n, cap, "]");
		break;
	}
	}
}

/* Random objects (random keys repeat, so some have duplicates), each as
 * made and then damaged: a byte replaced, cut short, a byte inserted. */
Test(json_fast, random_documents_read_as_jansson_reads_them)
{
	static const char bytes[] = "{}[]\":,-+.0123456789eEtrufalsn \t\n\\ua\x7f\x01\xc3\xa9\x00";
	unsigned seed = 4242;
	int taken = 0, total = 0;

	for (int iter = 0; iter < 30000; iter++) {
		char buf[2048];
		size_t n = 0;
		int k = (int)(rnd(&seed) % 5);

		gen_ws(buf, &n, sizeof(buf), &seed);
		put(buf, &n, sizeof(buf), "{");
		for (int i = 0; i < k; i++) {
			if (i)
				put(buf, &n, sizeof(buf), ",");
			gen_string(buf, &n, sizeof(buf), &seed);
			put(buf, &n, sizeof(buf), ":");
			gen_value(buf, &n, sizeof(buf), &seed, 1);
		}
		put(buf, &n, sizeof(buf), "}");
		gen_ws(buf, &n, sizeof(buf), &seed);
		taken += same_as_jansson(buf, n);
		total++;
		for (int d = 0; d < 3; d++) {
			char m[2048];
			size_t mn = n;
			size_t at = n ? rnd(&seed) % n : 0;

			memcpy(m, buf, n);
			if (d == 0 && n) {
				m[at] = bytes[rnd(&seed) % (sizeof(bytes) - 1)];
			} else if (d == 1) {
				mn = at;
			} else if (n + 1 < sizeof(m)) {
				memmove(m + at + 1, m + at, n - at);
				m[at] = bytes[rnd(&seed) % (sizeof(bytes) - 1)];
				mn = n + 1;
			}
			same_as_jansson(m, mn);
		}
	}
	/* The undamaged documents are mostly the plain kind it is for. */
	cr_assert_gt(taken, total / 3, "took %d of %d", taken, total);
}

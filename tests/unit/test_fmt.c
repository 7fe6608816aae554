/* test_fmt.c — the hand-written formatters of the request path against
 * libc: fmt_i64/fmt_u64 at the edges, fmt_pad, and format_rfc3339 against
 * gmtime_r + strftime for every day from 1970 to 9999 (a random
 * millisecond of each, seeded) and at the instants around leap days. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "fmt.h"

#include "banned.h"

Test(fmt, integers_at_the_edges)
{
	static const struct {
		int64_t v;
		const char *want;
	} cases[] = { { 0, "0" }, { -1, "-1" }, { 9, "9" }, { 10, "10" },
		      { INT64_MAX, "9223372036854775807" }, { INT64_MIN, "-9223372036854775808" } };
	char out[FMT_I64_LEN];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_assert_eq(fmt_i64(out, cases[i].v), strlen(cases[i].want));
		cr_assert_str_eq(out, cases[i].want);
	}
	cr_assert_eq(fmt_u64(out, UINT64_MAX), 20);
	cr_assert_str_eq(out, "18446744073709551615");
}

/* Every length from 1 to 20 digits, and the powers of ten around them. */
Test(fmt, integers_match_printf)
{
	char out[FMT_I64_LEN], want[32];
	uint64_t v = 1;

	for (int k = 0; k < 20; k++, v *= 10) {
		const uint64_t vals[] = { v - 1, v, v + 1, v * 3 + 7 };

		for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
			snprintf(want, sizeof(want), "%llu", (unsigned long long)vals[i]);
			cr_assert_eq(fmt_u64(out, vals[i]), strlen(want));
			cr_assert_str_eq(out, want);
			snprintf(want, sizeof(want), "%lld", -(long long)(vals[i] >> 1));
			cr_assert_eq(fmt_i64(out, -(int64_t)(vals[i] >> 1)), strlen(want));
			cr_assert_str_eq(out, want);
		}
	}
}

Test(fmt, two_digits_as_pad)
{
	char a[2], b[2];

	for (unsigned v = 0; v < 100; v++) {
		fmt_2(a, v);
		fmt_pad(b, v, 2);
		cr_assert_eq(memcmp(a, b, 2), 0, "%u", v);
	}
}

Test(fmt, pad_keeps_the_width)
{
	char out[8] = "xxxxxxx";

	fmt_pad(out, 7, 3);
	cr_assert_eq(memcmp(out, "007xxxx", 7), 0);
	fmt_pad(out, 12345, 3); /* higher digits dropped */
	cr_assert_eq(memcmp(out, "345xxxx", 7), 0);
}

static void libc_rfc3339(int64_t ms, char out[RFC3339_LEN])
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	size_t n;

	gmtime_r(&secs, &tm);
	n = strftime(out, RFC3339_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, RFC3339_LEN - n, ".%03dZ", (int)(ms % 1000));
}

Test(fmt, rfc3339_matches_gmtime_every_day_to_9999)
{
	uint64_t seed = 0x5e771edULL;
	char got[RFC3339_LEN], want[RFC3339_LEN];

	for (int64_t day = 0; day <= 2932896; day++) {
		int64_t ms;

		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		ms = day * 86400000 + (int64_t)((seed >> 33) % 86400000);
		format_rfc3339(ms, got);
		libc_rfc3339(ms, want);
		cr_assert_str_eq(got, want, "ms %lld", (long long)ms);
	}
}

Test(fmt, rfc3339_edges)
{
	static const int64_t instants[] = {
		0, 999, 1000, 951782399999, 951782400000 /* 2000-02-29 */, 951868799999,
		4107542399999 /* 2100-02-28T23:59:59.999 */, 4107542400000, 253402300799999,
	};
	char got[RFC3339_LEN], want[RFC3339_LEN];

	for (size_t i = 0; i < sizeof(instants) / sizeof(instants[0]); i++) {
		format_rfc3339(instants[i], got);
		libc_rfc3339(instants[i], want);
		cr_assert_str_eq(got, want);
	}
	format_rfc3339(-1, got);
	cr_assert_str_eq(got, "1970-01-01T00:00:00.000Z");
	format_rfc3339(253402300800000, got); /* year 10000 */
	cr_assert_str_eq(got, "1970-01-01T00:00:00.000Z");
}

Test(fmt, str_copies_and_cuts_like_snprintf)
{
	static const char *const inputs[] = { "", "a", "exactly7", "acct_0123456789abcdef", "tab\there" };
	char got[8], want[8];

	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		for (size_t size = 1; size <= sizeof(got); size++) {
			int n = snprintf(want, size, "%s", inputs[i]);
			size_t wrote;

			memset(got, 'x', sizeof(got));
			wrote = fmt_str(got, size, inputs[i]);
			cr_assert_str_eq(got, want, "input %zu size %zu", i, size);
			cr_assert_eq(wrote, strlen(want));
			cr_assert_leq(wrote, (size_t)n);
			/* nothing past the NUL is touched */
			for (size_t k = wrote + 1; k < sizeof(got); k++)
				cr_assert_eq(got[k], 'x');
		}
	}
}

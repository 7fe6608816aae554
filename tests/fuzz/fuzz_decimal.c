/* fuzz_decimal.c — parse_decimal_amount (src/validate.h). The first byte
 * picks `decimals` (byte % 21, so -1..19 out-of-range values are covered
 * by 19 and 20 as well as the valid 0..18); the rest is the amount text.
 *
 * Oracle: a separate grammar check plus an __int128 computation decide
 * whether the input must be accepted and what its value is:
 *   int-part ("0" or [1-9][0-9]*) [ "." 1..decimals digits ], value
 *   = int-part.frac * 10^decimals, and it must fit in int64_t.
 * Accepted values are also printed back with `decimals` fraction digits,
 * which must start with the input and continue with zeros only. */
#include <inttypes.h>
#include <stdbool.h>

#include "fuzz.h"
#include "validate.h"

/* Returns true and sets *val when s is in the grammar and fits. */
static bool reference(const uint8_t *s, size_t n, int decimals, int64_t *val)
{
	size_t i = 0, int_digits = 0, frac = 0;
	__int128 v = 0;

	if (decimals < 0 || decimals > 18)
		return false;
	while (i < n && s[i] >= '0' && s[i] <= '9') {
		if (v <= INT64_MAX)
			v = v * 10 + (s[i] - '0');
		i++;
		int_digits++;
	}
	if (int_digits == 0 || (s[0] == '0' && int_digits > 1))
		return false;
	if (i < n && s[i] == '.') {
		i++;
		while (i < n && s[i] >= '0' && s[i] <= '9') {
			if (v <= INT64_MAX)
				v = v * 10 + (s[i] - '0');
			i++;
			frac++;
		}
		if (frac == 0 || frac > (size_t)decimals)
			return false;
	}
	if (i != n)
		return false;
	for (; frac < (size_t)decimals; frac++)
		if (v <= INT64_MAX)
			v *= 10;
	if (v > INT64_MAX)
		return false;
	*val = (int64_t)v;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const int64_t canary = -77;
	int64_t v = canary, want = 0;
	int decimals;
	const uint8_t *s;
	size_t n;
	bool ok;
	enum st_rc rc;

	if (size < 1)
		return 0;
	decimals = data[0] % 21;
	if (decimals == 20)
		decimals = -1;
	s = data + 1;
	n = size - 1;
	rc = parse_decimal_amount((const char *)s, n, decimals, &v);
	ok = reference(s, n, decimals, &want);
	if (rc != ST_OK) {
		FUZZ_CHECK(rc == ST_INVALID);
		FUZZ_CHECK(v == canary);
		FUZZ_CHECK(!ok);
		return 0;
	}
	FUZZ_CHECK(ok);
	FUZZ_CHECK(v == want && v >= 0);
	{
		char back[48];
		int64_t p = 1;
		size_t blen;

		for (int i = 0; i < decimals; i++)
			p *= 10;
		if (decimals)
			snprintf(back, sizeof(back), "%" PRId64 ".%0*" PRId64, v / p, decimals, v % p);
		else
			snprintf(back, sizeof(back), "%" PRId64, v);
		blen = strlen(back);
		FUZZ_CHECK(blen >= n && memcmp(back, s, n) == 0);
		for (size_t i = n; i < blen; i++)
			FUZZ_CHECK(back[i] == '0' || (i == n && back[i] == '.' && !memchr(s, '.', n)));
	}
	return 0;
}

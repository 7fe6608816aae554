/* fuzz_amount.c — parse_amount (src/validate.h): the raw bytes are the
 * amount, with an explicit length (embedded NULs included).
 *
 * Oracle: accepted exactly when the input is the canonical decimal spelling
 * of an integer in 1 .. INT64_MAX (digits, no leading zero, compared as a
 * string against "9223372036854775807"), and then the value printed back is
 * the input byte for byte. On refusal the out-parameter is untouched. */
#include <inttypes.h>
#include <stdbool.h>

#include "fuzz.h"
#include "validate.h"

static bool canonical_positive(const uint8_t *s, size_t n)
{
	static const char max[] = "9223372036854775807";

	if (n == 0 || n > 19 || s[0] < '1' || s[0] > '9')
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return n < 19 || memcmp(s, max, 19) <= 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const int64_t canary = -77;
	int64_t v = canary;
	char back[32];
	enum st_rc rc = parse_amount((const char *)data, size, &v);

	if (rc != ST_OK) {
		FUZZ_CHECK(rc == ST_INVALID);
		FUZZ_CHECK(v == canary);
		FUZZ_CHECK(!canonical_positive(data, size));
		return 0;
	}
	FUZZ_CHECK(canonical_positive(data, size));
	FUZZ_CHECK(v > 0);
	snprintf(back, sizeof(back), "%" PRId64, v);
	FUZZ_CHECK(strlen(back) == size && memcmp(back, data, size) == 0);
	return 0;
}

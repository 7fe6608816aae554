/* fmt.c — see fmt.h. */
#include "fmt.h"

#include <string.h>

#include "banned.h"

/* "00" to "99": two digits a division. */
static const char two_digits[] =
	"00010203040506070809101112131415161718192021222324252627282930313233343536373839"
	"40414243444546474849505152535455565758596061626364656667686970717273747576777879"
	"8081828384858687888990919293949596979899";

size_t fmt_u64(char *out, uint64_t v)
{
	char rev[FMT_I64_LEN];
	size_t n = sizeof(rev), len;

	/* Written backwards from the end of rev, two digits at a time. */
	while (v >= 100) {
		unsigned d = (unsigned)(v % 100) * 2;

		v /= 100;
		rev[--n] = two_digits[d + 1];
		rev[--n] = two_digits[d];
	}
	if (v >= 10) {
		rev[--n] = two_digits[v * 2 + 1];
		rev[--n] = two_digits[v * 2];
	} else {
		rev[--n] = (char)('0' + v);
	}
	len = sizeof(rev) - n;
	memcpy(out, rev + n, len);
	out[len] = '\0';
	return len;
}

size_t fmt_str(char *out, size_t size, const char *s)
{
	size_t len = strnlen(s, size - 1);

	memcpy(out, s, len);
	out[len] = '\0';
	return len;
}

size_t fmt_i64(char out[FMT_I64_LEN], int64_t v)
{
	if (v >= 0)
		return fmt_u64(out, (uint64_t)v);
	out[0] = '-';
	/* Negate in unsigned arithmetic: -INT64_MIN does not fit an int64_t. */
	return 1 + fmt_u64(out + 1, 0 - (uint64_t)v);
}

void fmt_pad(char *out, uint64_t v, size_t width)
{
	while (width--) {
		out[width] = (char)('0' + v % 10);
		v /= 10;
	}
}

void fmt_2(char out[2], unsigned v)
{
	memcpy(out, two_digits + v % 100 * 2, 2);
}

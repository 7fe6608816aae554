/* fmt.c — see fmt.h. */
#include "fmt.h"

#include <string.h>

#include "banned.h"

size_t fmt_u64(char *out, uint64_t v)
{
	char rev[FMT_I64_LEN];
	size_t n = 0, len = 0;

	do {
		rev[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		out[len++] = rev[--n];
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

/* fmt.c — see fmt.h. */
#include "fmt.h"

#include "banned.h"

size_t fmt_i64(char out[FMT_I64_LEN], int64_t v)
{
	char rev[FMT_I64_LEN];
	/* Negate in unsigned arithmetic: -INT64_MIN does not fit an int64_t. */
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	size_t n = 0, len = 0;

	do {
		rev[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		out[len++] = '-';
	while (n)
		out[len++] = rev[--n];
	out[len] = '\0';
	return len;
}

void fmt_hex(const void *raw, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *in = raw;

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

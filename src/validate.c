/* validate.c — parsers for every untrusted scalar of the API (SPEC section 3).
 *
 * Every function here takes (pointer, length) rather than a C string, so a
 * NUL byte inside the given length is just another invalid byte, never an
 * early end of input. Nothing allocates and nothing depends on the locale:
 * the character classes are spelled out below instead of using <ctype.h>,
 * whose answers change with setlocale() and which is undefined for negative
 * chars. Out-parameters are written only on success, so a caller never sees
 * half a wallet.
 *
 * Workload: these run once or twice per request on short strings (at most
 * a few hundred bytes, and every length is checked before the first loop),
 * so plain loops are fast enough and easier to audit than anything clever. */
#include "validate.h"

#include <string.h>

#include "hex.h"
#include "banned.h"

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* v = v * 10 + d, failing (false, v unchanged) when the result would pass
 * INT64_MAX. Both amount parsers go through here so overflow is decided in
 * one place. */
static bool mul10_add(int64_t *v, int d)
{
	if (*v > (INT64_MAX - d) / 10)
		return false;
	*v = *v * 10 + d;
	return true;
}

enum st_rc parse_amount(const char *s, size_t len, int64_t *out)
{
	int64_t v = 0;

	/* 19 digits is the width of INT64_MAX; anything longer overflows, and
	 * the early exit keeps a megabyte of digits from being walked. */
	if (!s || len == 0 || len > 19)
		return ST_INVALID;
	/* Also rejects "0" itself: amounts are positive, and leading zeros
	 * would give one amount several spellings (and fingerprints). */
	if (s[0] < '1' || s[0] > '9')
		return ST_INVALID;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!is_digit(c) || !mul10_add(&v, c - '0'))
			return ST_INVALID;
	}
	*out = v;
	return ST_OK;
}

/* "0x"/"0X" + ndigits hex digits of any case -> out, lower-cased, "0x"
 * prefix, NUL-terminated (ndigits + 3 bytes). */
static enum st_rc parse_prefixed_hex(const char *s, size_t len, size_t ndigits, char *out)
{
	if (!s || len != ndigits + 2 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X') ||
	    !hex_all(s + 2, ndigits))
		return ST_INVALID;
	/* Second pass only after the whole input is known good: out is left
	 * untouched on failure. Setting 0x20 lower-cases A-F and leaves the
	 * digits as they are. */
	out[0] = '0';
	out[1] = 'x';
	for (size_t i = 2; i < len; i++)
		out[i] = (char)(s[i] | 0x20);
	out[len] = '\0';
	return ST_OK;
}

enum st_rc parse_wallet(const char *s, size_t len, char out[WALLET_LEN + 1])
{
	return parse_prefixed_hex(s, len, WALLET_LEN - 2, out);
}

enum st_rc parse_tx_hash(const char *s, size_t len, char out[TX_HASH_LEN + 1])
{
	return parse_prefixed_hex(s, len, TX_HASH_LEN - 2, out);
}

bool idem_key_valid(const char *s, size_t len)
{
	if (!s || len == 0 || len > IDEM_KEY_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c > 0x7e)
			return false;
	}
	return true;
}

bool request_id_valid(const char *s, size_t len)
{
	if (!s || len == 0 || len > REQUEST_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!is_digit(c) && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') &&
		    c != '.' && c != '_' && c != '-')
			return false;
	}
	return true;
}

/* n lower-case hex digits at s; *all_zero (if not NULL) tells whether
 * every one was '0'. */
static bool lower_hex_run(const char *s, size_t n, bool *all_zero)
{
	if (!hex_all_lower(s, n))
		return false;
	if (all_zero) {
		size_t zeros = 0;

		/* Within n: s need not be NUL-terminated (strspn read past it). */
		while (zeros < n && s[zeros] == '0')
			zeros++;
		*all_zero = zeros == n;
	}
	return true;
}

/* Layout of a version-00 header, which every version starts with:
 *   vv-tttttttttttttttttttttttttttttttt-pppppppppppppppp-ff
 *   0  3                                36               53  (55 chars) */
#define TP_LEN 55
#define TP_TRACE 3
#define TP_PARENT 36
#define TP_FLAGS 53

enum st_rc parse_traceparent(const char *s, size_t len, char trace_id[33], char parent_id[17],
			     uint8_t *flags)
{
	bool zero_version, zero_trace, zero_parent;

	if (!s || len < TP_LEN)
		return ST_INVALID;
	if (!lower_hex_run(s, 2, &zero_version) || memcmp(s, "ff", 2) == 0)
		return ST_INVALID;
	if (s[2] != '-' || s[TP_PARENT - 1] != '-' || s[TP_FLAGS - 1] != '-')
		return ST_INVALID;
	if (!lower_hex_run(s + TP_TRACE, 32, &zero_trace) ||
	    !lower_hex_run(s + TP_PARENT, 16, &zero_parent) ||
	    !lower_hex_run(s + TP_FLAGS, 2, NULL))
		return ST_INVALID;
	if (zero_trace || zero_parent)
		return ST_INVALID;
	/* Version 00 is exactly 55 chars. A later version may append fields,
	 * which we neither understand nor check beyond the separating '-'
	 * (trace-context level 1, "Versioning of traceparent"). */
	if (len != TP_LEN && (zero_version || s[TP_LEN] != '-'))
		return ST_INVALID;

	memcpy(trace_id, s + TP_TRACE, 32);
	trace_id[32] = '\0';
	memcpy(parent_id, s + TP_PARENT, 16);
	parent_id[16] = '\0';
	/* Every flag bit is passed on: unknown bits are for future versions
	 * of the spec and are not ours to reject. */
	*flags = (uint8_t)(hex_digit((unsigned char)s[TP_FLAGS]) << 4 |
			   hex_digit((unsigned char)s[TP_FLAGS + 1]));
	return ST_OK;
}

/* Grammar: int-part [ "." frac ], int-part = "0" / [1-9] *DIGIT (no leading
 * zeros, as in JSON numbers), frac = 1*decimals DIGIT. The digits are
 * accumulated as one integer and then padded with zeros up to `decimals`,
 * so "12.3" at 2 decimals is 12 3 0 -> 1230, with no floating point and no
 * rounding anywhere. */
enum st_rc parse_decimal_amount(const char *s, size_t len, int decimals, int64_t *out)
{
	int64_t v = 0;
	size_t i = 0, int_start, frac_digits = 0;

	/* 10^19 > INT64_MAX, so more than 18 decimals leaves no integer part. */
	if (!s || len == 0 || decimals < 0 || decimals > 18)
		return ST_INVALID;

	int_start = i;
	while (i < len && is_digit((unsigned char)s[i])) {
		if (!mul10_add(&v, s[i] - '0'))
			return ST_INVALID;
		i++;
	}
	if (i == int_start)
		return ST_INVALID; /* "", ".5", "-1", "+1", " 1" */
	if (s[int_start] == '0' && i - int_start > 1)
		return ST_INVALID; /* "01", "00.5" */

	if (i < len && s[i] == '.') {
		i++;
		while (i < len && is_digit((unsigned char)s[i])) {
			if (++frac_digits > (size_t)decimals)
				return ST_INVALID; /* never rounded: SPEC 9 */
			if (!mul10_add(&v, s[i] - '0'))
				return ST_INVALID;
			i++;
		}
		if (frac_digits == 0)
			return ST_INVALID; /* "5." */
	}
	if (i != len)
		return ST_INVALID; /* "1e2", "1 ", "1,5", embedded NUL */

	for (; frac_digits < (size_t)decimals; frac_digits++)
		if (!mul10_add(&v, 0))
			return ST_INVALID;
	*out = v;
	return ST_OK;
}

/* RFC 3629 section 4 table: the first byte fixes the length and the range
 * of the second byte (which is where overlongs, surrogates and code points
 * past U+10FFFF are excluded); later bytes are plain 80..BF. */
size_t utf8_char_len(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	unsigned char c, lo = 0x80, hi = 0xbf;
	size_t need;

	if (len == 0)
		return 0;
	c = u[0];
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		need = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 3;
		if (c == 0xe0)
			lo = 0xa0; /* overlong */
		else if (c == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 4;
		if (c == 0xf0)
			lo = 0x90; /* overlong */
		else if (c == 0xf4)
			hi = 0x8f; /* past U+10FFFF */
	} else {
		return 0; /* 80..C1 (continuation, overlong lead), F5..FF */
	}
	if (len < need || u[1] < lo || u[1] > hi)
		return 0;
	for (size_t k = 2; k < need; k++)
		if ((u[k] & 0xc0) != 0x80)
			return 0;
	return need;
}

bool utf8_valid(const char *s, size_t len)
{
	size_t i = 0, k;

	if (!s)
		return len == 0;
	while (i < len) {
		if ((unsigned char)s[i] < 0x80) {
			i++; /* ASCII without the call: most input is */
			continue;
		}
		k = utf8_char_len(s + i, len - i);
		if (!k)
			return false;
		i += k;
	}
	return true;
}

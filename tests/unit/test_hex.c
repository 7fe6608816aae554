/* Unit tests for hex.c: the one hex codec. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "hex.h"

Test(hex, digit_values_of_either_case)
{
	const char *digits = "0123456789abcdef", *upper = "ABCDEF";

	for (int i = 0; i < 16; i++)
		cr_assert_eq(hex_digit(digits[i]), i);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(hex_digit(upper[i]), 10 + i);
	for (int c = -1; c < 256; c++) {
		if (strchr("0123456789abcdefABCDEF", c) && c)
			continue;
		cr_assert_eq(hex_digit(c), -1, "%d", c);
	}
}

Test(hex, encode_lower_case_with_nul)
{
	const unsigned char raw[] = { 0x00, 0x01, 0x7f, 0x80, 0xab, 0xff };
	char out[2 * sizeof(raw) + 2];

	memset(out, 'x', sizeof(out));
	hex_encode(raw, sizeof(raw), out);
	cr_assert_str_eq(out, "00017f80abff");
	cr_assert_eq(out[2 * sizeof(raw) + 1], 'x', "nothing written past the NUL");
	hex_encode(raw, 0, out);
	cr_assert_str_eq(out, "");
}

Test(hex, decode_round_trip_and_either_case)
{
	unsigned char raw[256], back[256];
	char text[513];

	for (int i = 0; i < 256; i++)
		raw[i] = (unsigned char)i;
	hex_encode(raw, sizeof(raw), text);
	for (int i = 0; i < 256; i++) {
		char want[3];

		snprintf(want, sizeof(want), "%02x", i);
		cr_assert_eq(memcmp(text + 2 * i, want, 2), 0, "byte %d", i);
	}
	cr_assert(hex_decode(text, 512, back, sizeof(back)));
	cr_assert_eq(memcmp(raw, back, sizeof(raw)), 0);
	cr_assert(hex_decode("DeadBEEF", 8, back, 4));
	cr_assert_eq(memcmp(back, "\xde\xad\xbe\xef", 4), 0);
}

Test(hex, decode_refuses_bad_input)
{
	unsigned char out[4];

	cr_assert_not(hex_decode("abc", 3, out, 2), "odd length");
	cr_assert_not(hex_decode("abcd", 4, out, 3), "too short for n");
	cr_assert_not(hex_decode("abcdef", 6, out, 2), "too long for n");
	cr_assert_not(hex_decode("abxd", 4, out, 2), "not a digit");
	cr_assert_not(hex_decode("ab\0d", 4, out, 2), "a NUL inside the length");
	cr_assert_not(hex_decode("0x12", 4, out, 2), "no prefix allowed");
	cr_assert_not(hex_decode(" 1 2", 4, out, 2), "no spaces");
	cr_assert(hex_decode("", 0, out, 0));
}

Test(hex, all_and_all_lower)
{
	cr_assert(hex_all("09afAF", 6));
	cr_assert_not(hex_all("09afAG", 6));
	cr_assert_not(hex_all("0\0", 2));
	cr_assert(hex_all("", 0));
	cr_assert(hex_all_lower("0123456789abcdef", 16));
	cr_assert_not(hex_all_lower("0123456789abcdeF", 16));
	cr_assert_not(hex_all_lower("12g4", 4));
	cr_assert(hex_all_lower("12zz", 2), "only n characters are read");
}

/* test_validate.c — tables of good and bad inputs for every validator.
 *
 * Inputs carry an explicit length (S("...") takes sizeof - 1), so embedded
 * NULs and unterminated tails are tested exactly as the parsers see them.
 * Every failing case also checks that the out-parameter was left alone. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "validate.h"

#include "banned.h"

#define S(lit) { (lit), sizeof(lit) - 1 }
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

struct in {
	const char *s;
	size_t len;
};

static const int64_t CANARY = -424242;

/* ---------- parse_amount ---------- */

Test(validate, amount_good)
{
	static const struct {
		struct in in;
		int64_t want;
	} t[] = {
		{ S("1"), 1 },
		{ S("9"), 9 },
		{ S("10"), 10 },
		{ S("100"), 100 },
		{ S("1000000"), 1000000 },
		{ S("4294967296"), 4294967296LL },
		{ S("999999999999999999"), 999999999999999999LL },
		{ S("1000000000000000000"), 1000000000000000000LL },
		{ S("9223372036854775806"), INT64_MAX - 1 },
		{ S("9223372036854775807"), INT64_MAX },
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		int64_t v = CANARY;

		cr_expect_eq(parse_amount(t[i].in.s, t[i].in.len, &v), ST_OK, "case %zu \"%s\"", i,
			     t[i].in.s);
		cr_expect_eq(v, t[i].want, "case %zu \"%s\": got %lld", i, t[i].in.s, (long long)v);
	}
}

Test(validate, amount_bad)
{
	static const struct in t[] = {
		S(""), S("0"), S("00"), S("-0"), S("-1"), S("+1"), S("01"), S("007"),
		S("1.0"), S("1."), S(".1"), S("1e3"), S("1E3"), S(" 1"), S("1 "), S("\t1"),
		S("1\n"), S("1,000"), S("1_000"), S("0x10"), S("abc"), S("1a"), S("NaN"),
		S("Infinity"), S("\"1\""), S("١"), /* Arabic-Indic one */
		S("9223372036854775808"),   /* INT64_MAX + 1 */
		S("9223372036854775810"),
		S("9999999999999999999"),   /* 19 digits, > INT64_MAX */
		S("18446744073709551615"),  /* UINT64_MAX */
		S("18446744073709551616"),  /* wraps uint64 to 0 */
		S("10000000000000000000"),
		S("1\0"), S("1\0" "2"), S("\0" "1"), S("12\0" "34"),
		S("99999999999999999999999999999999999999999999999999999999999999999999"),
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		int64_t v = CANARY;

		cr_expect_eq(parse_amount(t[i].s, t[i].len, &v), ST_INVALID, "case %zu \"%s\"", i,
			     t[i].s);
		cr_expect_eq(v, CANARY, "case %zu touched out", i);
	}
}

Test(validate, amount_len_bounds_input)
{
	/* len is authoritative: digits past it are not read. */
	int64_t v = CANARY;

	cr_expect_eq(parse_amount("12345", 3, &v), ST_OK);
	cr_expect_eq(v, 123);
	cr_expect_eq(parse_amount(NULL, 0, &v), ST_INVALID);
	cr_expect_eq(parse_amount(NULL, 3, &v), ST_INVALID);
}

Test(validate, amount_very_long)
{
	static char big[1 << 16];
	int64_t v = CANARY;

	memset(big, '9', sizeof(big));
	cr_expect_eq(parse_amount(big, sizeof(big), &v), ST_INVALID);
	memset(big, '0', sizeof(big));
	big[0] = '1';
	cr_expect_eq(parse_amount(big, sizeof(big), &v), ST_INVALID);
	cr_expect_eq(v, CANARY);
}

/* ---------- parse_wallet / parse_tx_hash ---------- */

#define HEX40 "0123456789abcdef0123456789abcdef01234567"
#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

Test(validate, wallet_good)
{
	static const struct {
		struct in in;
		const char *want;
	} t[] = {
		{ S("0x" HEX40), "0x" HEX40 },
		{ S("0X" HEX40), "0x" HEX40 },
		{ S("0x0123456789ABCDEF0123456789ABCDEF01234567"), "0x" HEX40 },
		{ S("0xAbCdEf0000000000000000000000000000000000"),
		  "0xabcdef0000000000000000000000000000000000" },
		{ S("0x0000000000000000000000000000000000000000"),
		  "0x0000000000000000000000000000000000000000" },
		{ S("0xffffffffffffffffffffffffffffffffffffffff"),
		  "0xffffffffffffffffffffffffffffffffffffffff" },
		/* checksummed (EIP-55) addresses are just mixed case */
		{ S("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
		  "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed" },
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		char out[WALLET_LEN + 1];

		memset(out, 'Z', sizeof(out));
		cr_expect_eq(parse_wallet(t[i].in.s, t[i].in.len, out), ST_OK, "case %zu", i);
		cr_expect_str_eq(out, t[i].want, "case %zu", i);
		cr_expect_eq(strlen(out), (size_t)WALLET_LEN);
	}
}

Test(validate, wallet_bad)
{
	static const struct in t[] = {
		S(""),
		S("0x"),
		S(HEX40),                                            /* no prefix */
		S("00" HEX40),                                       /* wrong prefix */
		S("1x" HEX40),
		S("0y" HEX40),
		S("x" HEX40 "0"),
		S("0x0123456789abcdef0123456789abcdef0123456"),      /* 39 */
		S("0x0123456789abcdef0123456789abcdef012345678"),    /* 41 */
		S("0x0123456789abcdef0123456789abcdef0123456g"),     /* non-hex */
		S("0x0123456789abcdef0123456789abcdef0123456G"),
		S("0x 123456789abcdef0123456789abcdef01234567"),
		S("0x0123456789abcdef0123456789abcdef0123456 "),
		S(" 0x0123456789abcdef0123456789abcdef0123456"),
		S("0x0123456789abcdef0123456789abcdef0123456\0"),    /* NUL inside len */
		S("0x\0" "123456789abcdef0123456789abcdef01234567"),
		S("0x-123456789abcdef0123456789abcdef01234567"),
		S("0x0123456789abcdef0123456789abcdef01234567\n"),
		S("0x" HEX64),                                       /* a tx hash */
		S("0x0123456789abcdef0123456789abcdef0123456\xc3\xa9"),
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		char out[WALLET_LEN + 1];

		memset(out, 'Z', sizeof(out));
		cr_expect_eq(parse_wallet(t[i].s, t[i].len, out), ST_INVALID, "case %zu", i);
		cr_expect_eq(out[0], 'Z', "case %zu touched out", i);
		cr_expect_eq(out[WALLET_LEN], 'Z', "case %zu touched out", i);
	}
	cr_expect_eq(parse_wallet(NULL, WALLET_LEN, (char[WALLET_LEN + 1]){ 0 }), ST_INVALID);
}

Test(validate, tx_hash_good)
{
	static const struct {
		struct in in;
		const char *want;
	} t[] = {
		{ S("0x" HEX64), "0x" HEX64 },
		{ S("0X" HEX64), "0x" HEX64 },
		{ S("0x0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"),
		  "0x" HEX64 },
		{ S("0x0000000000000000000000000000000000000000000000000000000000000000"),
		  "0x0000000000000000000000000000000000000000000000000000000000000000" },
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		char out[TX_HASH_LEN + 1];

		memset(out, 'Z', sizeof(out));
		cr_expect_eq(parse_tx_hash(t[i].in.s, t[i].in.len, out), ST_OK, "case %zu", i);
		cr_expect_str_eq(out, t[i].want, "case %zu", i);
	}
}

Test(validate, tx_hash_bad)
{
	static const struct in t[] = {
		S(""),
		S("0x"),
		S(HEX64),
		S("00" HEX64 "00"),
		S("0x" HEX40),
		S("0x0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde"),   /* 63 */
		S("0x0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0"), /* 65 */
		S("0x0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg"),
		S("0x0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\0"),
		S("0x0123456789abcdef0123456789abcdef 123456789abcdef0123456789abcdef"),
		S("0x" HEX64 " "),
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		char out[TX_HASH_LEN + 1];

		memset(out, 'Z', sizeof(out));
		cr_expect_eq(parse_tx_hash(t[i].s, t[i].len, out), ST_INVALID, "case %zu", i);
		cr_expect_eq(out[0], 'Z', "case %zu touched out", i);
	}
}

/* ---------- idem_key_valid / request_id_valid ---------- */

Test(validate, idem_key)
{
	static char k255[IDEM_KEY_MAX], k256[IDEM_KEY_MAX + 1];
	static const struct {
		struct in in;
		bool ok;
	} t[] = {
		{ S("a"), true },
		{ S(" "), true },   /* 0x20 is printable */
		{ S("~"), true },   /* 0x7e */
		{ S("550e8400-e29b-41d4-a716-446655440000"), true },
		{ S("order 42 / retry #1: {\"x\"}"), true },
		{ S("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"), true },
		{ S(""), false },
		{ S("a\tb"), false },
		{ S("a\nb"), false },
		{ S("a\rb"), false },
		{ S("\x1f"), false },
		{ S("\x7f"), false },       /* DEL */
		{ S("\x80"), false },
		{ S("caf\xc3\xa9"), false }, /* UTF-8 is not ASCII */
		{ S("\xff"), false },
		{ S("a\0b"), false },
		{ S("ab\0"), false },
	};

	for (size_t i = 0; i < NELEM(t); i++)
		cr_expect_eq(idem_key_valid(t[i].in.s, t[i].in.len), t[i].ok, "case %zu", i);

	memset(k255, 'k', sizeof(k255));
	memset(k256, 'k', sizeof(k256));
	cr_expect(idem_key_valid(k255, sizeof(k255)));
	cr_expect_not(idem_key_valid(k256, sizeof(k256)));
	k255[200] = '\x01';
	cr_expect_not(idem_key_valid(k255, sizeof(k255)));
	cr_expect_not(idem_key_valid(NULL, 0));
	cr_expect_not(idem_key_valid(NULL, 5));
}

Test(validate, request_id)
{
	static char r128[REQUEST_ID_MAX], r129[REQUEST_ID_MAX + 1];
	static const struct {
		struct in in;
		bool ok;
	} t[] = {
		{ S("a"), true },
		{ S("0"), true },
		{ S("-"), true },
		{ S("."), true },
		{ S("_"), true },
		{ S("req-123_ABC.xyz"), true },
		{ S("550e8400-e29b-41d4-a716-446655440000"), true },
		{ S("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"), true },
		{ S(""), false },
		{ S(" "), false },
		{ S("a b"), false },
		{ S("a/b"), false },
		{ S("a+b"), false },
		{ S("a:b"), false },
		{ S("a=b"), false },
		{ S("a\"b"), false },
		{ S("a\nX-Injected: 1"), false },   /* header injection */
		{ S("a\r\n"), false },
		{ S("caf\xc3\xa9"), false },
		{ S("a\0b"), false },
		{ S("a~"), false },
	};

	for (size_t i = 0; i < NELEM(t); i++)
		cr_expect_eq(request_id_valid(t[i].in.s, t[i].in.len), t[i].ok, "case %zu", i);

	memset(r128, 'r', sizeof(r128));
	memset(r129, 'r', sizeof(r129));
	cr_expect(request_id_valid(r128, sizeof(r128)));
	cr_expect_not(request_id_valid(r129, sizeof(r129)));
	cr_expect_not(request_id_valid(NULL, 0));
}

/* ---------- parse_traceparent ---------- */

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PID "00f067aa0ba902b7"

Test(validate, traceparent_good)
{
	static const struct {
		struct in in;
		const char *trace, *parent;
		uint8_t flags;
	} t[] = {
		/* the W3C spec's own example */
		{ S("00-" TID "-" PID "-01"), TID, PID, 0x01 },
		{ S("00-" TID "-" PID "-00"), TID, PID, 0x00 },
		/* unknown flag bits are carried, not rejected */
		{ S("00-" TID "-" PID "-ff"), TID, PID, 0xff },
		{ S("00-" TID "-" PID "-a3"), TID, PID, 0xa3 },
		{ S("00-00000000000000000000000000000001-0000000000000001-01"),
		  "00000000000000000000000000000001", "0000000000000001", 0x01 },
		/* future versions: same prefix, optional "-..." tail */
		{ S("01-" TID "-" PID "-01"), TID, PID, 0x01 },
		{ S("cc-" TID "-" PID "-01-what-the-future-will-be-like"), TID, PID, 0x01 },
		{ S("fe-" TID "-" PID "-09-"), TID, PID, 0x09 },
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		char trace[33], parent[17];
		uint8_t flags = 0x5a;

		cr_expect_eq(parse_traceparent(t[i].in.s, t[i].in.len, trace, parent, &flags), ST_OK,
			     "case %zu \"%s\"", i, t[i].in.s);
		cr_expect_str_eq(trace, t[i].trace, "case %zu", i);
		cr_expect_str_eq(parent, t[i].parent, "case %zu", i);
		cr_expect_eq(flags, t[i].flags, "case %zu flags %02x", i, flags);
	}
}

Test(validate, traceparent_bad)
{
	static const struct in t[] = {
		S(""),
		S("00"),
		S("00-" TID "-" PID "-0"),                    /* 54 chars */
		S("00-" TID "-" PID "-01-"),                  /* v00 must be exactly 55 */
		S("00-" TID "-" PID "-01-extra"),
		S("00-" TID "-" PID "-010"),
		S("00-" TID "-" PID "-01 "),
		S(" 00-" TID "-" PID "-01"),
		S("ff-" TID "-" PID "-01"),                   /* version ff is invalid */
		S("ff-" TID "-" PID "-01-x"),
		S("0-" TID "-" PID "-01x"),
		S("0g-" TID "-" PID "-01"),
		S("0A-" TID "-" PID "-01"),                   /* upper-case version */
		S("00-4BF92F3577B34DA6A3CE929D0E0E4736-" PID "-01"),  /* upper-case trace */
		S("00-" TID "-00F067AA0BA902B7-01"),          /* upper-case parent */
		S("00-" TID "-" PID "-0A"),                   /* upper-case flags */
		S("00-00000000000000000000000000000000-" PID "-01"),  /* zero trace id */
		S("00-" TID "-0000000000000000-01"),          /* zero parent id */
		S("00_" TID "-" PID "-01"),
		S("00-" TID "_" PID "-01"),
		S("00-" TID "-" PID "_01"),
		S("00-4bf92f3577b34da6a3ce929d0e0e473-" PID "0-01"),  /* shifted separator */
		S("00-" TID "-00f067aa0ba902bg-01"),
		S("00-4bf92f3577b34da6a3ce929d0e0e473z-" PID "-01"),
		S("00-" TID "-" PID "-0x"),
		S("00-" TID "-" PID "-\0" "1"),               /* NUL inside len */
		S("00-4bf92f3577b34da6\0" "3ce929d0e0e4736-" PID "-01"),
		S("01-" TID "-" PID "-01x"),                  /* v>00: char 55 must be '-' */
		S("01-" TID "-" PID "-01.foo"),
		S("01-" TID "-" PID "-1"),                    /* v>00 still needs 55 chars */
		S("01-00000000000000000000000000000000-" PID "-01-x"),
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		char trace[33] = "untouched", parent[17] = "untouched";
		uint8_t flags = 0x5a;

		cr_expect_eq(parse_traceparent(t[i].s, t[i].len, trace, parent, &flags), ST_INVALID,
			     "case %zu \"%s\"", i, t[i].s);
		cr_expect_str_eq(trace, "untouched", "case %zu", i);
		cr_expect_str_eq(parent, "untouched", "case %zu", i);
		cr_expect_eq(flags, 0x5a, "case %zu", i);
	}
}

/* ---------- parse_decimal_amount ---------- */

Test(validate, decimal_good)
{
	static const struct {
		struct in in;
		int decimals;
		int64_t want;
	} t[] = {
		{ S("12.34"), 2, 1234 },
		{ S("12"), 2, 1200 },
		{ S("12.3"), 2, 1230 },
		{ S("12.30"), 2, 1230 },
		{ S("0.01"), 2, 1 },
		{ S("0.1"), 2, 10 },
		{ S("0.10"), 2, 10 },
		{ S("1.00"), 2, 100 },
		{ S("100"), 2, 10000 },
		{ S("0"), 2, 0 },            /* zero is allowed here (the caller decides) */
		{ S("0.00"), 2, 0 },
		{ S("0.0"), 2, 0 },
		{ S("1234"), 0, 1234 },      /* zero-decimal asset (e.g. JPY) */
		{ S("0"), 0, 0 },
		{ S("1.5"), 1, 15 },
		{ S("1.000000000000000001"), 18, 1000000000000000001LL },
		{ S("9.223372036854775807"), 18, INT64_MAX },
		{ S("92233720368547758.07"), 2, INT64_MAX },
		{ S("9223372036854775807"), 0, INT64_MAX },
		{ S("92233720368547758"), 2, 9223372036854775800LL },
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		int64_t v = CANARY;

		cr_expect_eq(parse_decimal_amount(t[i].in.s, t[i].in.len, t[i].decimals, &v), ST_OK,
			     "case %zu \"%s\"/%d", i, t[i].in.s, t[i].decimals);
		cr_expect_eq(v, t[i].want, "case %zu \"%s\": got %lld", i, t[i].in.s, (long long)v);
	}
}

Test(validate, decimal_bad)
{
	static const struct {
		struct in in;
		int decimals;
	} t[] = {
		{ S("12.345"), 2 },          /* more decimals than the asset: never rounded */
		{ S("12.340"), 2 },          /* ... even trailing zeros */
		{ S("0.001"), 2 },
		{ S("1.0"), 0 },
		{ S("1."), 0 },
		{ S(".5"), 2 },
		{ S("5."), 2 },
		{ S("."), 2 },
		{ S(""), 2 },
		{ S("-1"), 2 },
		{ S("-0.01"), 2 },
		{ S("+1"), 2 },
		{ S("1e2"), 2 },
		{ S("1E2"), 2 },
		{ S("1.5e1"), 2 },
		{ S(" 1"), 2 },
		{ S("1 "), 2 },
		{ S("1,50"), 2 },
		{ S("1.2.3"), 2 },
		{ S("1..2"), 2 },
		{ S("01"), 2 },              /* leading zeros, as in JSON numbers */
		{ S("00.50"), 2 },
		{ S("00"), 2 },
		{ S("0x10"), 2 },
		{ S("NaN"), 2 },
		{ S("inf"), 2 },
		{ S("$12.34"), 2 },
		{ S("12.34 USD"), 2 },
		{ S("12.3\0" "4"), 2 },      /* NUL inside len */
		{ S("1\0"), 2 },
		{ S("92233720368547758.08"), 2 },   /* INT64_MAX + 1 in cents */
		{ S("92233720368547759"), 2 },
		{ S("9223372036854775808"), 0 },
		{ S("100000000000000000000"), 0 },
		{ S("10"), 18 },             /* 10 * 10^18 > INT64_MAX */
		{ S("1"), 19 },              /* decimals out of range */
		{ S("1"), -1 },
		{ S("1"), 1000 },
		{ S("99999999999999999999999999999999999999999999999999.99"), 2 },
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		int64_t v = CANARY;

		cr_expect_eq(parse_decimal_amount(t[i].in.s, t[i].in.len, t[i].decimals, &v),
			     ST_INVALID, "case %zu \"%s\"/%d", i, t[i].in.s, t[i].decimals);
		cr_expect_eq(v, CANARY, "case %zu touched out", i);
	}
	cr_expect_eq(parse_decimal_amount(NULL, 0, 2, &(int64_t){ 0 }), ST_INVALID);
}

Test(validate, decimal_len_bounds_input)
{
	int64_t v = CANARY;

	cr_expect_eq(parse_decimal_amount("12.345", 5, 2, &v), ST_OK);
	cr_expect_eq(v, 1234);
	cr_expect_eq(parse_decimal_amount("12.34", 3, 2, &v), ST_INVALID); /* "12." */
}

Test(validate, decimal_very_long)
{
	static char big[1 << 16];
	int64_t v = CANARY;

	memset(big, '0', sizeof(big));
	big[0] = '1';
	cr_expect_eq(parse_decimal_amount(big, sizeof(big), 2, &v), ST_INVALID);
	big[0] = '0';
	big[1] = '.';
	cr_expect_eq(parse_decimal_amount(big, sizeof(big), 2, &v), ST_INVALID);
	cr_expect_eq(v, CANARY);
}

/* ---------- utf8_valid ---------- */

Test(validate, utf8_good)
{
	static const struct in t[] = {
		S(""), S("plain ascii"), S("a\0b"), S("caf\xc3\xa9"), S("\xe2\x82\xac"),
		S("\xf0\x9f\x98\x80"), S("\xc2\x80"), S("\xdf\xbf"), S("\xe0\xa0\x80"),
		S("\xed\x9f\xbf"), S("\xee\x80\x80"), S("\xf0\x90\x80\x80"), S("\xf4\x8f\xbf\xbf"),
	};

	for (size_t i = 0; i < NELEM(t); i++)
		cr_expect(utf8_valid(t[i].s, t[i].len), "case %zu", i);
}

Test(validate, utf8_bad)
{
	static const struct in t[] = {
		S("\x80"), S("\xbf"), S("\xc0\x80"), S("\xc1\xbf"),       /* stray, overlong */
		S("\xc3"), S("caf\xc3"), S("\xe2\x82"), S("\xf0\x9f\x98"), /* cut */
		S("\xe0\x80\x80"), S("\xe0\x9f\xbf"), S("\xf0\x80\x80\x80"), S("\xf0\x8f\xbf\xbf"),
		S("\xed\xa0\x80"), S("\xed\xbf\xbf"),                     /* surrogates */
		S("\xf4\x90\x80\x80"), S("\xf5\x80\x80\x80"), S("\xff"), S("\xfe\xff"),
		S("\xc3\x28"), S("\xe2\x28\xa1"), S("ok\xc3\xa9\xa9"),
	};

	for (size_t i = 0; i < NELEM(t); i++)
		cr_expect_not(utf8_valid(t[i].s, t[i].len), "case %zu", i);
	cr_expect(utf8_valid(NULL, 0));
	cr_expect_not(utf8_valid(NULL, 1));
	/* The length bounds the input: a sequence cut by it is invalid. */
	cr_expect_not(utf8_valid("\xc3\xa9", 1));
	cr_expect(utf8_valid("\xc3\xa9", 2));
}

/* ---- UTF-8: the one decoder (utf8_char_len) and utf8_valid over it ---- */

struct utf8_case {
	const char *s;
	size_t len;
	size_t want; /* utf8_char_len of the whole */
	const char *why;
};

#define U8(lit, want, why) { lit, sizeof(lit) - 1, want, why }

static const struct utf8_case utf8_cases[] = {
	U8("\x7f", 1, "last ASCII"),
	U8("\xc2\x80", 2, "first two-byte"),
	U8("\xdf\xbf", 2, "last two-byte"),
	U8("\xe0\xa0\x80", 3, "first three-byte"),
	U8("\xed\x9f\xbf", 3, "U+D7FF, just below the surrogates"),
	U8("\xee\x80\x80", 3, "U+E000, just above the surrogates"),
	U8("\xef\xbf\xbf", 3, "U+FFFF"),
	U8("\xf0\x90\x80\x80", 4, "U+10000"),
	U8("\xf4\x8f\xbf\xbf", 4, "U+10FFFF"),
	U8("\xc0\x80", 0, "overlong NUL"),
	U8("\xc1\xbf", 0, "overlong two-byte"),
	U8("\xe0\x80\x80", 0, "overlong three-byte NUL"),
	U8("\xe0\x9f\xbf", 0, "overlong three-byte U+7FF"),
	U8("\xf0\x80\x80\x80", 0, "overlong four-byte NUL"),
	U8("\xf0\x8f\xbf\xbf", 0, "overlong four-byte U+FFFF"),
	U8("\xed\xa0\x80", 0, "U+D800, high surrogate"),
	U8("\xed\xbf\xbf", 0, "U+DFFF, low surrogate"),
	U8("\xf4\x90\x80\x80", 0, "U+110000"),
	U8("\xf5\x80\x80\x80", 0, "F5 lead"),
	U8("\xf7\xbf\xbf\xbf", 0, "U+1FFFFF"),
	U8("\xf8\x88\x80\x80\x80", 0, "five-byte form"),
	U8("\xff", 0, "FF"),
	U8("\xfe", 0, "FE"),
	U8("\x80", 0, "stray continuation"),
	U8("\xbf", 0, "stray continuation BF"),
	U8("\xc3", 0, "two-byte cut"),
	U8("\xe2\x82", 0, "three-byte cut"),
	U8("\xf0\x9f\x98", 0, "four-byte cut"),
	U8("\xc3\x28", 0, "second byte no continuation"),
	U8("\xe2\x28\xa1", 0, "three-byte, second byte no continuation"),
	U8("\xe2\x82\x28", 0, "three-byte, third byte no continuation"),
	U8("\xf0\x9f\x28\x80", 0, "four-byte, third byte no continuation"),
	U8("\xf0\x9f\x98\x28", 0, "four-byte, fourth byte no continuation"),
};

Test(utf8, char_len_and_valid_on_the_edges)
{
	for (size_t i = 0; i < sizeof(utf8_cases) / sizeof(utf8_cases[0]); i++) {
		const struct utf8_case *c = &utf8_cases[i];
		bool whole = c->want == c->len;

		cr_assert_eq(utf8_char_len(c->s, c->len), c->want, "%s", c->why);
		cr_assert_eq(utf8_valid(c->s, c->len), whole, "%s", c->why);
		if (c->len > 1)
			cr_assert_eq(utf8_char_len(c->s, c->len - 1), (unsigned char)c->s[0] < 0x80 ? 1u : 0u,
				     "%s, one byte short", c->why);
	}
	cr_assert_eq(utf8_char_len("", 0), 0);
	cr_assert_eq(utf8_char_len("\xc3\xa9", 1), 0, "len cuts the sequence");
	cr_assert(utf8_valid("", 0));
	cr_assert(utf8_valid(NULL, 0));
	cr_assert_not(utf8_valid(NULL, 1));
	cr_assert(utf8_valid("a\0b", 3), "NUL is well-formed; callers refuse it themselves");
	cr_assert(utf8_valid("gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9f\x98\x80", 15));
	cr_assert_not(utf8_valid("ok \xe2\x82\xac then \xed\xa0\x80", 16));
}

/* The code point of a well-formed s[0..n), for the exhaustive check: the
 * plain decode, then RFC 3629's rules on the result (no overlong, no
 * surrogate, nothing past U+10FFFF). */
static bool utf8_reference(const unsigned char *s, size_t n)
{
	static const unsigned lead_mask[] = { 0, 0x7f, 0x1f, 0x0f, 0x07 };
	static const unsigned lead_bits[] = { 0, 0x00, 0xc0, 0xe0, 0xf0 };
	static const unsigned long min_cp[] = { 0, 0, 0x80, 0x800, 0x10000 };
	unsigned long cp;

	if ((s[0] & ~lead_mask[n] & 0xff) != lead_bits[n])
		return false;
	cp = s[0] & lead_mask[n];
	for (size_t k = 1; k < n; k++) {
		if ((s[k] & 0xc0) != 0x80)
			return false;
		cp = cp << 6 | (s[k] & 0x3f);
	}
	return cp >= min_cp[n] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
}

Test(utf8, every_one_two_and_three_byte_sequence_agrees_with_the_reference)
{
	unsigned char s[3];

	for (unsigned a = 0; a < 256; a++) {
		s[0] = (unsigned char)a;
		cr_assert_eq(utf8_char_len((char *)s, 1) == 1, utf8_reference(s, 1), "%02x", a);
		for (unsigned b = 0; b < 256; b++) {
			s[1] = (unsigned char)b;
			if (a >= 0x80)
				cr_assert_eq(utf8_char_len((char *)s, 2) == 2, utf8_reference(s, 2),
					     "%02x %02x", a, b);
			if (a < 0xe0 || a > 0xef)
				continue;
			for (unsigned c = 0; c < 256; c++) {
				s[2] = (unsigned char)c;
				cr_assert_eq(utf8_char_len((char *)s, 3) == 3, utf8_reference(s, 3),
					     "%02x %02x %02x", a, b, c);
			}
		}
	}
}

Test(utf8, four_byte_leads_against_the_reference)
{
	unsigned char s[4] = { 0, 0, 0x80, 0xbf };

	for (unsigned a = 0xf0; a < 256; a++) {
		s[0] = (unsigned char)a;
		for (unsigned b = 0; b < 256; b++) {
			s[1] = (unsigned char)b;
			cr_assert_eq(utf8_char_len((char *)s, 4) == 4, utf8_reference(s, 4), "%02x %02x", a,
				     b);
		}
	}
}

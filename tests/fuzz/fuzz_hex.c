/* fuzz_hex.c — parse_wallet and parse_tx_hash (src/validate.h) on the same
 * bytes, with an explicit length.
 *
 * Oracle: accepted exactly when the input is "0x"/"0X" and 40 (wallet) or
 * 64 (tx hash) hex digits of either case; the output is then the input
 * lower-cased with a "0x" prefix and a NUL. On refusal the output buffer is
 * untouched. */
#include <stdbool.h>

#include "fuzz.h"
#include "validate.h"

static bool is_hex(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool reference(const uint8_t *s, size_t n, size_t digits)
{
	if (n != digits + 2 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
		return false;
	for (size_t i = 2; i < n; i++)
		if (!is_hex(s[i]))
			return false;
	return true;
}

static void check(const uint8_t *data, size_t size, size_t digits, bool ok, const char *out,
		  size_t outsz)
{
	if (!ok) {
		for (size_t i = 0; i < outsz; i++)
			FUZZ_CHECK(out[i] == '#');
		return;
	}
	FUZZ_CHECK(out[0] == '0' && out[1] == 'x' && out[digits + 2] == '\0');
	for (size_t i = 2; i < digits + 2; i++) {
		uint8_t c = data[i];

		FUZZ_CHECK(out[i] == ((c >= 'A' && c <= 'F') ? c - 'A' + 'a' : c));
	}
	(void)size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char w[WALLET_LEN + 1], h[TX_HASH_LEN + 1];
	bool ok;

	memset(w, '#', sizeof(w));
	ok = parse_wallet((const char *)data, size, w) == ST_OK;
	FUZZ_CHECK(ok == reference(data, size, WALLET_LEN - 2));
	check(data, size, WALLET_LEN - 2, ok, w, sizeof(w));

	memset(h, '#', sizeof(h));
	ok = parse_tx_hash((const char *)data, size, h) == ST_OK;
	FUZZ_CHECK(ok == reference(data, size, TX_HASH_LEN - 2));
	check(data, size, TX_HASH_LEN - 2, ok, h, sizeof(h));
	return 0;
}

/* fuzz_headers.c — the request-header validators of src/validate.h:
 * idem_key_valid (Idempotency-Key), request_id_valid (X-Request-Id),
 * parse_traceparent (W3C traceparent) and utf8_valid (every header value,
 * in http.c refuse_bad_headers), each on the same bytes with an
 * explicit length, and again as the C string http.c hands them (cut at the
 * first NUL, exact-size allocation so ASan sees any over-read).
 *
 * Oracles: character-class checks written out here for the first two;
 * for traceparent the accepted form is rebuilt from the outputs
 * ("vv-<trace_id>-<parent_id>-<flags %02x>") and must equal the first 55
 * input bytes, with the W3C rules re-checked (lower hex, no all-zero ids,
 * version not ff, exactly 55 bytes for version 00, '-' after 55 bytes
 * otherwise). On refusal the outputs are untouched. */
#include <stdbool.h>

#include "fuzz.h"
#include "validate.h"

static bool ref_idem(const uint8_t *s, size_t n)
{
	if (n < 1 || n > IDEM_KEY_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

static bool ref_rid(const uint8_t *s, size_t n)
{
	static const char ok[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";

	if (n < 1 || n > REQUEST_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!s[i] || !strchr(ok, s[i]))
			return false;
	return true;
}

static bool all(const uint8_t *s, size_t n, const char *set, bool *zero)
{
	*zero = true;
	for (size_t i = 0; i < n; i++) {
		if (!s[i] || !strchr(set, s[i]))
			return false;
		if (s[i] != '0')
			*zero = false;
	}
	return true;
}

static bool ref_tp(const uint8_t *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	bool zv, zt, zp, zf;

	if (n < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-')
		return false;
	if (!all(s, 2, hex, &zv) || (s[0] == 'f' && s[1] == 'f'))
		return false;
	if (!all(s + 3, 32, hex, &zt) || !all(s + 36, 16, hex, &zp) || !all(s + 53, 2, hex, &zf))
		return false;
	if (zt || zp)
		return false;
	if (n > 55 && (zv || s[55] != '-'))
		return false;
	return true;
}

static void check_tp(const uint8_t *s, size_t n)
{
	char trace[33], parent[17];
	uint8_t flags = 0x5a;
	bool ok;

	memset(trace, '#', sizeof(trace));
	memset(parent, '#', sizeof(parent));
	ok = parse_traceparent((const char *)s, n, trace, parent, &flags) == ST_OK;
	FUZZ_CHECK(ok == ref_tp(s, n));
	if (!ok) {
		FUZZ_CHECK(flags == 0x5a);
		for (size_t i = 0; i < sizeof(trace); i++)
			FUZZ_CHECK(trace[i] == '#');
		for (size_t i = 0; i < sizeof(parent); i++)
			FUZZ_CHECK(parent[i] == '#');
		return;
	}
	{
		char back[64];

		FUZZ_CHECK(strlen(trace) == 32 && strlen(parent) == 16);
		snprintf(back, sizeof(back), "%c%c-%s-%s-%02x", s[0], s[1], trace, parent, flags);
		FUZZ_CHECK(strlen(back) == 55 && memcmp(back, s, 55) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *cs = fuzz_strndup(data, size);
	size_t clen = strlen(cs);

	/* utf8_valid (validate.h) against the RFC 3629 reference in fuzz.h:
	 * http.c refuses header values on its word. */
	FUZZ_CHECK(utf8_valid((const char *)data, size) == (fuzz_utf8_valid(data, size) != 0));
	FUZZ_CHECK(idem_key_valid((const char *)data, size) == ref_idem(data, size));
	FUZZ_CHECK(request_id_valid((const char *)data, size) == ref_rid(data, size));
	check_tp(data, size);

	/* As http.c calls them: a C string and its strlen. */
	FUZZ_CHECK(idem_key_valid(cs, clen) == ref_idem((const uint8_t *)cs, clen));
	FUZZ_CHECK(request_id_valid(cs, clen) == ref_rid((const uint8_t *)cs, clen));
	check_tp((const uint8_t *)cs, clen);
	free(cs);
	return 0;
}

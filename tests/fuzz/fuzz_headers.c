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
 * otherwise). On refusal the outputs are untouched.
 *
 * The same bytes are also a raw header section for hdr_layout
 * (src/hdr_layout.h): parsed by the model of libmicrohttpd 0.9.75 in
 * mhd_model.h, then walked. Oracle, from the raw bytes: a section with
 * no NUL and no CR without LF after the request line, no LF without CR,
 * and no field line but the first starting with SP/HTAB (obs-fold) passes;
 * one that passes has no fold and no bare CR, and its NULs and bare LFs
 * are all the blind spot docs/internals/http-framing.md describes (NULs
 * and LFs in the place of CR LF pairs leave the same zero bytes). The first field line is the token
 * check's (http.c header_name_ok): its name then starts with a blank. */
#include <stdbool.h>

#include "fuzz.h"
#include "hdr_layout.h"
#include "mhd_model.h"
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

/* What the raw section s[0..n) hides, for the oracle above. */
struct raw_faults {
	bool fold, bare_cr, bare_lf, nul;
	bool masked; /* every run of NUL / CR / LF bytes holding a NUL or a
		      * bare LF is as long as CR LF or CR LF CR LF: the blind
		      * spot, the zeros it leaves are those of clean line ends */
};

static struct raw_faults raw_faults(const uint8_t *s, size_t n)
{
	struct raw_faults f = { .masked = true };
	size_t rl = 0, line = 0, run = 0;
	bool odd = false;

	while (rl < n && s[rl] != '\n')
		rl++;
	for (size_t i = 0; i < n; i++) {
		bool in_fields = i > rl, zeroish = !s[i] || s[i] == '\r' || s[i] == '\n';

		if (i == rl) {
			/* The request line's own bytes are the library's to
			 * parse; only its end is walked (its last two bytes). */
			if (i == 0 || (s[i - 1] && s[i - 1] != '\r'))
				f.bare_lf = true, f.masked = false;
			else if (!s[i - 1])
				f.bare_lf = true;
			continue;
		}
		if (s[i] == '\n' && s[i - 1] != '\r')
			f.bare_lf = odd = true;
		if (in_fields && !s[i])
			f.nul = odd = true;
		if (in_fields && s[i] == '\r' && (i + 1 == n || s[i + 1] != '\n'))
			f.bare_cr = true;
		if (in_fields && s[i - 1] == '\n' && (s[i] == ' ' || s[i] == '\t') && line > 0)
			f.fold = true;
		if (in_fields && s[i] == '\n')
			line++;
		if (zeroish && in_fields) {
			run++;
		} else if (run) {
			if (odd && run != 2 && run != 4)
				f.masked = false;
			run = 0;
			odd = false;
		}
	}
	if (run && odd && run != 2 && run != 4)
		f.masked = false;
	return f;
}

static void check_layout(const uint8_t *data, size_t size)
{
	struct model m = { .len = size, .cap = 2 * size + 64 };
	struct hdr_layout l;
	enum hdr_fault f;

	m.buf = malloc(m.cap);
	if (!m.buf)
		abort();
	if (size)
		memcpy(m.buf, data, size);
	if (model_parse(&m) && m.n) {
		hdr_layout_begin(&l, m.buf, m.section);
		for (size_t i = 0; i < m.n; i++)
			hdr_layout_field(&l, m.f[i].name, m.f[i].name_len, m.f[i].value, m.f[i].value_len);
		struct raw_faults rf = raw_faults(data, m.section);

		f = hdr_layout_end(&l);
		/* The request line walked too: a clean one (no NUL, CR or
		 * LF, one space between its three parts) changes nothing. */
		{
			struct hdr_layout l2;
			size_t rl = 0, spaces = 0;
			bool clean = true;

			while (rl < size && data[rl] != '\n')
				rl++;
			if (rl && data[rl - 1] == '\r')
				rl--;
			for (size_t i = 0; i < rl; i++) {
				clean = clean && data[i] && data[i] != '\r';
				spaces += data[i] == ' ';
				if (data[i] == ' ' && (i == 0 || i + 1 == rl || data[i + 1] == ' '))
					clean = false;
			}
			hdr_layout_begin(&l2, m.buf, m.section);
			hdr_layout_request(&l2, m.url, m.version);
			for (size_t i = 0; i < m.nargs; i++)
				hdr_layout_arg(&l2, m.arg[i].name, m.arg[i].name_len, m.arg[i].value,
					       m.arg[i].value_len);
			for (size_t i = 0; i < m.n; i++)
				hdr_layout_field(&l2, m.f[i].name, m.f[i].name_len, m.f[i].value,
						 m.f[i].value_len);
			if (clean && spaces == 2 && !m.args_lost)
				FUZZ_CHECK(hdr_layout_end(&l2) == f);
			else
				(void)hdr_layout_end(&l2);
		}
		/* No false refusal of a clean section... */
		if (!rf.fold && !rf.bare_cr && !rf.bare_lf && !rf.nul)
			FUZZ_CHECK(f == HDR_OK);
		/* ...and nothing let through but the blind spot. */
		if (f == HDR_OK)
			FUZZ_CHECK(!rf.fold && !rf.bare_cr && rf.masked);
		FUZZ_CHECK(hdr_fault_str(f) != NULL);
	}
	free(m.buf);
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
	check_layout(data, size);

	/* As http.c calls them: a C string and its strlen. */
	FUZZ_CHECK(idem_key_valid(cs, clen) == ref_idem((const uint8_t *)cs, clen));
	FUZZ_CHECK(request_id_valid(cs, clen) == ref_rid((const uint8_t *)cs, clen));
	check_tp((const uint8_t *)cs, clen);
	free(cs);
	return 0;
}

/* fuzz_webhook.c — the webhook verifiers and parsers of src/webhook.h on
 * hostile input. The first byte picks the function; the rest is split on
 * '\n' into the fields it takes (headers are cut at their first NUL, as
 * http.c hands them over; the body keeps every byte).
 *
 * To make the valid paths reachable, an '@' in a signature header is
 * replaced by the correct signature, computed here with HMAC() (OpenSSL,
 * not the module): Coinbase hex HMAC(k1, body); Stripe hex HMAC(s2,
 * "<first t= value>.<body>"); Standard base64 HMAC(key, "<id>.<ts>.<body>").
 *
 * Oracles, written independently of webhook.c:
 *   - verifiers: a naive re-parse of the header (split, trim, compare the
 *     candidate strings with the expected encodings: hex case-insensitive,
 *     base64 exactly, since only the canonical form is accepted) gives the
 *     verdict, which must be the module's;
 *   - webhook_secret_decode: a bit-accumulator base64 decoder (canonical,
 *     optional padding) must agree on acceptance and bytes;
 *   - webhook_parse_rfc3339: for "YYYY-MM-DDTHH:MM:SSZ" inputs, acceptance
 *     must match a timegm()/gmtime_r() round trip and the result must be
 *     timegm's. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <strings.h>
#include <time.h>

#include "fuzz.h"
#include "webhook.h"

#define NOW_MS (1700000000LL * 1000)

static char *cb_secrets[] = { (char *)"k1", (char *)"k2" };
static char *st_secrets[] = { (char *)"s1", (char *)"s2" };
/* bytes 1..24, and one secret that is not base64 (skipped) */
static char *std_secrets[] = { (char *)"whsec_!!", (char *)"whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcY" };
static const unsigned char STD_KEY[24] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
					   13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24 };

struct fields {
	char *f[4];      /* NUL-terminated copies (cut at the first NUL) */
	const uint8_t *body;
	size_t body_len;
};

/* Splits data into nhdr header fields and the body (all that is left). */
static void split(const uint8_t *d, size_t n, int nhdr, struct fields *out)
{
	size_t at = 0;

	for (int i = 0; i < nhdr; i++) {
		size_t e = at;

		while (e < n && d[e] != '\n')
			e++;
		out->f[i] = fuzz_strndup(d + at, e - at);
		at = e < n ? e + 1 : n;
	}
	out->body = d + at;
	out->body_len = n - at;
}

static void mac(const void *key, size_t klen, const void *a, size_t alen, const void *b,
		size_t blen, unsigned char out[32])
{
	unsigned char *msg = malloc(alen + blen + 1);
	unsigned int n = 0;

	FUZZ_CHECK(msg != NULL);
	memcpy(msg, a, alen);
	if (blen)
		memcpy(msg + alen, b, blen);
	FUZZ_CHECK(HMAC(EVP_sha256(), key, (int)klen, msg, alen + blen, out, &n) && n == 32);
	free(msg);
}

static void hex(const unsigned char *d, char out[65])
{
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* s with every '@' replaced by rep (heap; caller frees). */
static char *replace_at(const char *s, const char *rep)
{
	size_t n = 0, r = strlen(rep);
	char *out, *o;

	for (const char *p = s; *p; p++)
		n += *p == '@' ? r : 1;
	out = o = malloc(n + 1);
	FUZZ_CHECK(out != NULL);
	for (const char *p = s; *p; p++) {
		if (*p == '@') {
			memcpy(o, rep, r);
			o += r;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
	return out;
}

static bool all_digits(const char *s, size_t n)
{
	if (n == 0 || n > 12)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

static bool fresh(int64_t ts_ms)
{
	int64_t d = ts_ms - NOW_MS;

	return d >= -WEBHOOK_TOLERANCE_MS && d <= WEBHOOK_TOLERANCE_MS;
}

static bool is_hex64(const char *s, size_t n)
{
	if (n != 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!strchr("0123456789abcdefABCDEF", s[i]) || !s[i])
			return false;
	return true;
}

/* ---- reference base64 (RFC 4648, canonical; padding optional) ---- */

static int ref_b64(const char *s, size_t n, unsigned char *out, size_t cap)
{
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t pad = 0, len = 0, sym;
	unsigned acc = 0;
	int bits = 0;

	while (pad < n && s[n - 1 - pad] == '=')
		pad++;
	sym = n - pad;
	if (n == 0 || pad > 2 || (pad && n % 4) || sym % 4 == 1)
		return -1;
	for (size_t i = 0; i < sym; i++) {
		const char *p = s[i] ? strchr(abc, s[i]) : NULL;

		if (!p)
			return -1;
		acc = (acc << 6) | (unsigned)(p - abc);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (len == cap)
				return -1;
			out[len++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (acc != 0)     /* leftover bits must be zero: canonical */
		return -1;
	return (int)len;
}

/* ---- targets ---- */

static void coinbase(const uint8_t *d, size_t n)
{
	struct fields f;
	unsigned char m[32];
	char want[2][65], *h;
	const char *s;
	size_t len;
	enum wh_verdict ref = WH_BAD_SIGNATURE, got;

	split(d, n, 1, &f);
	mac("k1", 2, "", 0, f.body, f.body_len, m);
	hex(m, want[0]);
	h = replace_at(f.f[0], want[0]);
	mac("k2", 2, "", 0, f.body, f.body_len, m);
	hex(m, want[1]);
	s = h;
	len = strlen(h);
	if (len <= WEBHOOK_HEADER_MAX) {
		while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
			len--;
		while (len && (*s == ' ' || *s == '\t')) {
			s++;
			len--;
		}
		if (is_hex64(s, len) && (!strncasecmp(s, want[0], 64) || !strncasecmp(s, want[1], 64)))
			ref = WH_VALID;
	}
	got = webhook_verify_coinbase(h, f.body, f.body_len, cb_secrets, 2);
	FUZZ_CHECK(got == ref);
	free(h);
	free(f.f[0]);
}

static void stripe(const uint8_t *d, size_t n)
{
	struct fields f;
	unsigned char m[32];
	char sig[65], tbuf[64] = "0", *h, *copy, *item, *save = NULL;
	const char *t = NULL;
	int nt = 0, ncand = 0;
	char cand[40][65];
	enum wh_verdict ref = WH_BAD_SIGNATURE, got;

	split(d, n, 1, &f);
	/* '@' becomes the signature for the first t= value (s2). */
	{
		const char *p = strstr(f.f[0], "t=");
		size_t k = 0;

		if (p)
			for (p += 2; k < sizeof(tbuf) - 1 && p[k] && p[k] != ','; k++)
				tbuf[k] = p[k];
		tbuf[p ? k : 1] = '\0';
		{
			char pre[80];
			int pl = snprintf(pre, sizeof(pre), "%s.", tbuf);

			mac("s2", 2, pre, (size_t)pl, f.body, f.body_len, m);
		}
		hex(m, sig);
	}
	h = replace_at(f.f[0], sig);

	if (strlen(h) <= WEBHOOK_HEADER_MAX) {
		copy = strdup(h);
		FUZZ_CHECK(copy != NULL);
		/* strtok_r would merge empty items; they are ignored anyway. */
		for (item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
			size_t l = strlen(item);

			while (*item == ' ' || *item == '\t') {
				item++;
				l--;
			}
			while (l && (item[l - 1] == ' ' || item[l - 1] == '\t'))
				item[--l] = '\0';
			if (!strncmp(item, "t=", 2)) {
				nt++;
				t = h + (item - copy) + 2;
				snprintf(tbuf, sizeof(tbuf), "%.*s", (int)(l - 2 < 63 ? l - 2 : 63), item + 2);
				if (l - 2 > 12)
					tbuf[0] = 'x'; /* too long: not digits */
			} else if (!strncmp(item, "v1=", 3) && is_hex64(item + 3, l - 3)) {
				if (ncand < 40)
					memcpy(cand[ncand], item + 3, 65);
				ncand++;
			}
		}
		if (nt == 1 && all_digits(tbuf, strlen(tbuf)) && ncand > 0 && ncand <= WEBHOOK_MAX_SIGS) {
			bool match = false;
			char pre[80];
			int pl = snprintf(pre, sizeof(pre), "%s.", tbuf);

			for (int s = 0; s < 2; s++) {
				char want[65];

				mac(st_secrets[s], 2, pre, (size_t)pl, f.body, f.body_len, m);
				hex(m, want);
				for (int i = 0; i < ncand; i++)
					match |= !strncasecmp(cand[i], want, 64);
			}
			if (match)
				ref = fresh(strtoll(tbuf, NULL, 10) * 1000) ? WH_VALID : WH_STALE;
		}
		free(copy);
	}
	(void)t;
	got = webhook_verify_stripe(h, f.body, f.body_len, st_secrets, 2, NOW_MS, NULL);
	FUZZ_CHECK(got == ref);
	free(h);
	free(f.f[0]);
}

static void standard(const uint8_t *d, size_t n)
{
	struct fields f;
	unsigned char m[32];
	char want[45], *h, *pre;
	size_t idl, tsl, pl;
	enum wh_verdict ref = WH_BAD_SIGNATURE, got;

	split(d, n, 3, &f);
	idl = strlen(f.f[0]);
	tsl = strlen(f.f[1]);
	pl = idl + tsl + 2;
	pre = malloc(pl + 1);
	FUZZ_CHECK(pre != NULL);
	snprintf(pre, pl + 1, "%s.%s.", f.f[0], f.f[1]);
	mac(STD_KEY, sizeof(STD_KEY), pre, pl, f.body, f.body_len, m);
	EVP_EncodeBlock((unsigned char *)want, m, 32);
	h = replace_at(f.f[2], want);

	if (idl <= WEBHOOK_HEADER_MAX && tsl <= WEBHOOK_HEADER_MAX && strlen(h) <= WEBHOOK_HEADER_MAX &&
	    webhook_id_valid(f.f[0], idl) && !strchr(f.f[0], '.') && all_digits(f.f[1], tsl)) {
		int ncand = 0;
		bool match = false;

		for (char *p = h; *p;) {
			char *e = p;

			while (*e && *e != ' ' && *e != '\t')
				e++;
			if (e - p > 3 && !strncmp(p, "v1,", 3)) {
				unsigned char dec[64];
				char re[64];
				size_t l = (size_t)(e - p - 3);

				/* well-formed: decodes to 32 bytes and re-encodes to itself */
				if (l == 44 && ref_b64(p + 3, l, dec, sizeof(dec)) == 32 &&
				    EVP_EncodeBlock((unsigned char *)re, dec, 32) == 44 && !memcmp(re, p + 3, 44)) {
					ncand++;
					match |= !memcmp(p + 3, want, 44);
				}
			}
			p = e;
			while (*p == ' ' || *p == '\t')
				p++;
		}
		if (ncand > 0 && ncand <= WEBHOOK_MAX_SIGS && match)
			ref = fresh(strtoll(f.f[1], NULL, 10) * 1000) ? WH_VALID : WH_STALE;
	}
	got = webhook_verify_standard(f.f[0], f.f[1], h, f.body, f.body_len, std_secrets, 2, NOW_MS);
	FUZZ_CHECK(got == ref);
	free(pre);
	free(h);
	for (int i = 0; i < 3; i++)
		free(f.f[i]);
}

static void secret(const uint8_t *d, size_t n)
{
	char *s = fuzz_strndup(d, n);
	const char *b = !strncmp(s, "whsec_", 6) ? s + 6 : s;
	unsigned char key[WEBHOOK_KEY_MAX], ref[WEBHOOK_KEY_MAX];
	size_t klen = 12345;
	int rl = strlen(b) <= 400 ? ref_b64(b, strlen(b), ref, sizeof(ref)) : -1;
	enum st_rc rc = webhook_secret_decode(s, key, &klen);

	if (rl <= 0) {
		FUZZ_CHECK(rc == ST_INVALID);
		FUZZ_CHECK(klen == 12345);
	} else {
		FUZZ_CHECK(rc == ST_OK);
		FUZZ_CHECK(klen == (size_t)rl && !memcmp(key, ref, klen));
	}
	free(s);
}

static void rfc3339(const uint8_t *d, size_t n)
{
	int64_t ms = 42;
	enum st_rc rc = webhook_parse_rfc3339((const char *)d, n, &ms);
	struct tm tm = { 0 }, back;
	int v[6];

	if (rc)
		FUZZ_CHECK(ms == 42);
	/* The plain UTC shape: compare with the C library's calendar. */
	if (n != 20 || d[19] != 'Z' || d[4] != '-' || d[7] != '-' || d[10] != 'T' || d[13] != ':' ||
	    d[16] != ':')
		return;
	{
		static const int at[6] = { 0, 5, 8, 11, 14, 17 }, w[6] = { 4, 2, 2, 2, 2, 2 };

		for (int i = 0; i < 6; i++) {
			v[i] = 0;
			for (int k = 0; k < w[i]; k++) {
				if (d[at[i] + k] < '0' || d[at[i] + k] > '9') {
					FUZZ_CHECK(rc == ST_INVALID);
					return;
				}
				v[i] = v[i] * 10 + (d[at[i] + k] - '0');
			}
		}
	}
	if (v[5] == 60)
		return; /* leap second: accepted here, not modelled by timegm */
	tm.tm_year = v[0] - 1900;
	tm.tm_mon = v[1] - 1;
	tm.tm_mday = v[2];
	tm.tm_hour = v[3];
	tm.tm_min = v[4];
	tm.tm_sec = v[5];
	{
		time_t t = timegm(&tm);
		bool valid = v[0] >= 1 && v[1] >= 1 && v[1] <= 12 && v[2] >= 1 && v[3] <= 23 &&
			     v[4] <= 59 && v[5] <= 59 && gmtime_r(&t, &back) &&
			     back.tm_year == v[0] - 1900 && back.tm_mon == v[1] - 1 && back.tm_mday == v[2];

		FUZZ_CHECK((rc == ST_OK) == valid);
		if (valid)
			FUZZ_CHECK(ms == (int64_t)t * 1000);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 5) {
	case 0: coinbase(data + 1, size - 1); break;
	case 1: stripe(data + 1, size - 1); break;
	case 2: standard(data + 1, size - 1); break;
	case 3: secret(data + 1, size - 1); break;
	default: rfc3339(data + 1, size - 1); break;
	}
	return 0;
}

/* fuzz_webhook.c — the webhook signature header parsers and event readers
 * of src/webhook.h. The first byte picks a mode; the rest is cut at 0xff
 * bytes into parts (header values, body, ...).
 *
 *   0 Stripe-Signature   1 Standard Webhooks   2 Coinbase signature
 *   3 RFC 3339 dates, secrets, event ids   4 event and payment bodies
 *
 * Oracles for the three signature schemes, with fixed secrets and the
 * digests computed here with OpenSSL's one-shot HMAC:
 *   - no forgery: a fuzzed header is only ever accepted (WH_VALID or
 *     WH_STALE) when it carries the right digest for one of the secrets,
 *     spelt as that scheme allows (hex of either case / canonical base64);
 *   - no false refusal: a header built here around the right digest, with
 *     fuzzed extra items that cannot be valid candidates or timestamps, is
 *     accepted (VALID when its timestamp is fresh, STALE otherwise).
 * Dates are checked against timegm(); event and payment readers must give
 * printable ids, canonical wallets (or a client account's qualified name),
 * positive amounts and UTF-8 errors. */
#include <ctype.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <time.h>

#include "buf.h"
#include "fuzz.h"
#include "validate.h"
#include "webhook.h"

#define NOW_MS 1795600000000LL /* 2026-11-25 */
#define NPARTS 5

static char *raw_secrets[] = { (char *)"whsec_plain-one", (char *)"second secret" };
/* Standard Webhooks secrets: base64 of "key-one-bytes!!" and of "k2". */
static char *std_secrets[] = { (char *)"whsec_a2V5LW9uZS1ieXRlcyEh", (char *)"azI=",
			       (char *)"not base64 at all" };
static const char *std_keys[] = { "key-one-bytes!!", "k2" };

static void hmac(const char *key, size_t klen, const void *a, size_t alen, const void *b,
		 size_t blen, const void *c, size_t clen, unsigned char out[32])
{
	unsigned char *msg = malloc(alen + blen + clen + 1);
	size_t n = 0;

	FUZZ_CHECK(msg != NULL);
	memcpy(msg, a, alen);
	memcpy(msg + alen, b, blen);
	memcpy(msg + alen + blen, c, clen);
	FUZZ_CHECK(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, klen, msg, alen + blen + clen,
			     out, 32, &n) != NULL && n == 32);
	free(msg);
}

static void to_hex(const unsigned char d[32], char out[65], bool upper)
{
	static const char lo[] = "0123456789abcdef", up[] = "0123456789ABCDEF";

	for (int i = 0; i < 32; i++) {
		out[2 * i] = (upper ? up : lo)[d[i] >> 4];
		out[2 * i + 1] = (upper ? up : lo)[d[i] & 15];
	}
	out[64] = '\0';
}

static void to_b64(const unsigned char d[32], char out[45])
{
	FUZZ_CHECK(EVP_EncodeBlock((unsigned char *)out, d, 32) == 44);
}

/* s with every byte in drop (and NUL) replaced by 'x', at most max bytes. */
static char *tame(const char *s, const char *drop, size_t max)
{
	size_t n = strnlen(s, max);
	char *t = fuzz_strndup((const uint8_t *)s, n);

	for (size_t i = 0; i < n; i++)
		if (strchr(drop, t[i]))
			t[i] = 'x';
	return t;
}

static bool accepted(enum wh_verdict v)
{
	return v == WH_VALID || v == WH_STALE;
}

/* ---- Stripe: "t=<secs>,v1=<hex>[,...]", signed "<t>.<body>" ---- */
static void mode_stripe(char **part)
{
	const char *header = part[0], *body = part[1];
	size_t blen = strlen(body);
	int64_t ts = 0;
	enum wh_verdict v = webhook_verify_stripe(header, body, blen, raw_secrets, 2, NOW_MS, &ts);

	if (accepted(v)) {
		/* Some v1 item is the digest of "<the one t>.<body>". */
		bool found = false;

		FUZZ_CHECK(strstr(header, "t=") != NULL);
		for (const char *p = header; p && *p && !found; p = strchr(p + 1, 't')) {
			size_t tl;

			if (p[0] != 't' || p[1] != '=')
				continue;
			tl = strspn(p + 2, "0123456789");
			for (int k = 0; k < 2 && !found; k++) {
				unsigned char d[32];
				char hex[65];

				hmac(raw_secrets[k], strlen(raw_secrets[k]), p + 2, tl, ".", 1, body, blen, d);
				to_hex(d, hex, false);
				for (const char *q = header; (q = strstr(q, "v1=")); q += 3)
					if (!strncasecmp(q + 3, hex, 64))
						found = true;
			}
		}
		FUZZ_CHECK(found);
	}
	/* Built around the right digest: junk items without ',' 't' 'v' '='
	 * cannot be a second t nor a candidate. */
	{
		char *j1 = tame(part[2], ",tv=", 200), *j2 = tame(part[3], ",tv=", 200);
		char secs[32];
		unsigned char d[32];
		char hex[65];
		struct buf h = BUF_INIT(8192);
		int64_t age = (int64_t)(strlen(part[4]) % 700) - 350; /* seconds, both ways */

		snprintf(secs, sizeof(secs), "%lld", (long long)(NOW_MS / 1000 + age));
		hmac(raw_secrets[blen % 2], strlen(raw_secrets[blen % 2]), secs, strlen(secs), ".", 1,
		     body, blen, d);
		to_hex(d, hex, blen % 3 == 0);
		buf_printf(&h, "%s,t=%s, %s ,v1=%s,v0=00", j1, secs, j2, hex);
		v = webhook_verify_stripe(h.ptr, body, blen, raw_secrets, 2, NOW_MS, &ts);
		FUZZ_CHECK(v == (age * 1000 <= WEBHOOK_TOLERANCE_MS && -age * 1000 <= WEBHOOK_TOLERANCE_MS
				 ? WH_VALID : WH_STALE));
		FUZZ_CHECK(ts == (NOW_MS / 1000 + age) * 1000);
		buf_release(&h);
		free(j1);
		free(j2);
	}
}

/* ---- Standard Webhooks: id, ts, "v1,<b64>" list; signed "<id>.<ts>.<body>" ---- */
static void mode_standard(char **part)
{
	const char *id = part[0], *ts = part[1], *sig = part[2], *body = part[3];
	size_t blen = strlen(body);
	enum wh_verdict v = webhook_verify_standard(id, ts, sig, body, blen, std_secrets, 3, NOW_MS);

	if (accepted(v)) {
		bool found = false;

		FUZZ_CHECK(webhook_id_valid(id, strlen(id)) && !strchr(id, '.'));
		for (int k = 0; k < 2 && !found; k++) {
			unsigned char d[32];
			char b64[45], pre[600];

			snprintf(pre, sizeof(pre), "%s.%s.", id, ts);
			hmac(std_keys[k], strlen(std_keys[k]), pre, strlen(pre), body, blen, "", 0, d);
			to_b64(d, b64);
			for (const char *q = sig; (q = strstr(q, "v1,")); q += 3)
				if (!strncmp(q + 3, b64, 44) && (q[47] == '\0' || q[47] == ' ' || q[47] == '\t'))
					found = true;
		}
		FUZZ_CHECK(found);
	}
	{
		char *j = tame(part[4], " \t,", 100);
		char secs[32], b64[45], pre[64];
		unsigned char d[32];
		struct buf s = BUF_INIT(4096);
		int64_t age = (int64_t)(blen % 700) - 350;
		const char *good_id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f1W";

		snprintf(secs, sizeof(secs), "%lld", (long long)(NOW_MS / 1000 + age));
		snprintf(pre, sizeof(pre), "%s.%s.", good_id, secs);
		hmac(std_keys[blen % 2], strlen(std_keys[blen % 2]), pre, strlen(pre), body, blen, "", 0,
		     d);
		to_b64(d, b64);
		/* "v2,<junk>" and "v1a,<junk>" are other versions: ignored. */
		buf_printf(&s, "v2,%s v1,%s\tv1a,%s", j, b64, j);
		v = webhook_verify_standard(good_id, secs, s.ptr, body, blen, std_secrets, 3, NOW_MS);
		FUZZ_CHECK(v == (age * 1000 <= WEBHOOK_TOLERANCE_MS && -age * 1000 <= WEBHOOK_TOLERANCE_MS
				 ? WH_VALID : WH_STALE));
		buf_release(&s);
		free(j);
	}
}

/* ---- Coinbase: 64 hex of HMAC(secret, body), blanks around allowed ---- */
static void mode_coinbase(char **part)
{
	const char *sig = part[0], *body = part[1];
	size_t blen = strlen(body);
	enum wh_verdict v = webhook_verify_coinbase(sig, body, blen, raw_secrets, 2);

	FUZZ_CHECK(v != WH_STALE);
	if (v == WH_VALID) {
		const char *s = sig + strspn(sig, " \t");
		size_t n = strlen(s);
		bool found = false;

		while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
			n--;
		for (int k = 0; k < 2; k++) {
			unsigned char d[32];
			char hex[65];

			hmac(raw_secrets[k], strlen(raw_secrets[k]), body, blen, "", 0, "", 0, d);
			to_hex(d, hex, false);
			found |= n == 64 && !strncasecmp(s, hex, 64);
		}
		FUZZ_CHECK(found);
	}
	{
		unsigned char d[32];
		char hex[65], wrapped[80];

		hmac(raw_secrets[1], strlen(raw_secrets[1]), body, blen, "", 0, "", 0, d);
		to_hex(d, hex, blen % 2);
		snprintf(wrapped, sizeof(wrapped), " \t%s ", hex);
		FUZZ_CHECK(webhook_verify_coinbase(wrapped, body, blen, raw_secrets, 2) == WH_VALID);
	}
}

/* ---- dates, secrets, ids ---- */
static void mode_misc(char **part, const uint8_t *raw, size_t rawlen)
{
	int64_t ms = -1;
	unsigned char key[WEBHOOK_KEY_MAX];
	size_t klen = 0;
	const char *s = part[0];
	size_t n = strlen(s);

	if (webhook_parse_rfc3339(s, n, &ms) == ST_OK) {
		struct tm tm = { 0 };
		int y, mo, d, h, mi, sec;
		long long want;
		const char *off;

		FUZZ_CHECK(sscanf(s, "%4d-%2d-%2d%*c%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &sec) == 6);
		tm.tm_year = y - 1900;
		tm.tm_mon = mo - 1;
		tm.tm_mday = d;
		tm.tm_hour = h;
		tm.tm_min = mi;
		tm.tm_sec = sec;
		want = (long long)timegm(&tm);
		off = s + n - 1;
		if (*off != 'Z' && *off != 'z') {
			int oh = (s[n - 5] - '0') * 10 + (s[n - 4] - '0');
			int om = (s[n - 2] - '0') * 10 + (s[n - 1] - '0');

			want -= (s[n - 6] == '+' ? 1 : -1) * (oh * 3600LL + om * 60);
		}
		/* floor(ms / 1000): dates before 1970 are negative. */
		FUZZ_CHECK(ms / 1000 - (ms % 1000 < 0 ? 1 : 0) == want);
	}
	if (webhook_secret_decode(s, key, &klen) == ST_OK)
		FUZZ_CHECK(klen > 0 && klen <= WEBHOOK_KEY_MAX);
	{
		bool ok = rawlen >= 1 && rawlen <= WEBHOOK_ID_MAX;

		for (size_t i = 0; i < rawlen; i++)
			ok = ok && raw[i] >= 0x21 && raw[i] <= 0x7e;
		FUZZ_CHECK(webhook_id_valid((const char *)raw, rawlen) == ok);
	}
}

/* ---- event and payment bodies ---- */
static void mode_body(const uint8_t *data, size_t size, const char *std_id)
{
	json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	static const char *const assets[] = { "USD", "JPY", "usd", "XXX" };

	if (!j)
		return;
	for (int p = 0; p < WH_PROVIDER_COUNT; p++) {
		struct wh_event ev;
		struct wh_payment pay;
		struct buf err = BUF_INIT(4096);

		memset(&ev, 0xa5, sizeof(ev));
		if (webhook_event_parse((enum wh_provider)p, j, std_id, &ev, &err) == ST_OK) {
			FUZZ_CHECK(webhook_id_valid(ev.id, strlen(ev.id)));
			FUZZ_CHECK(webhook_id_valid(ev.type, strlen(ev.type)));
			FUZZ_CHECK(ev.pays == webhook_type_pays((enum wh_provider)p, ev.type));
		} else {
			FUZZ_CHECK(err.len > 0 && utf8_valid(err.ptr, err.len));
		}
		for (size_t a = 0; a < sizeof(assets) / sizeof(assets[0]); a++) {
			buf_reset(&err);
			if (webhook_payment_parse((enum wh_provider)p, j, assets[a], &pay, &err) == ST_OK) {
				char w[WALLET_LEN + 1];

				FUZZ_CHECK(pay.amount > 0);
				/* Exactly one of a canonical wallet and a client account
				 * "<client_id>/<name>". */
				if (pay.account[0])
					FUZZ_CHECK(!pay.wallet[0] && strchr(pay.account, '/') &&
						   strlen(pay.account) <= WH_ACCOUNT_MAX);
				else
					FUZZ_CHECK(parse_wallet(pay.wallet, strlen(pay.wallet), w) == ST_OK &&
						   !strcmp(w, pay.wallet));
			} else {
				/* Stored as the job's error and shown by the DLQ API. */
				FUZZ_CHECK(err.len > 0 && utf8_valid(err.ptr, err.len));
			}
		}
		buf_release(&err);
	}
	{
		int64_t c;

		if (webhook_commission((int64_t)size * 1000003, (int64_t)(size % 10001), &c) == ST_OK)
			FUZZ_CHECK(c >= 0 && c <= (int64_t)size * 1000003);
	}
	json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy, *part[NPARTS];
	size_t k = 1;
	int mode;

	if (size < 1 || size > 8192)
		return 0;
	mode = data[0] % 5;
	copy = fuzz_strndup(data + 1, size - 1);
	part[0] = copy;
	for (char *p = copy; k < NPARTS && (p = memchr(p, '\xff', (size_t)(copy + size - 1 - p)));
	     k++) {
		*p++ = '\0';
		part[k] = p;
	}
	for (; k < NPARTS; k++)
		part[k] = (char *)"";
	switch (mode) {
	case 0: mode_stripe(part); break;
	case 1: mode_standard(part); break;
	case 2: mode_coinbase(part); break;
	case 3: mode_misc(part, data + 1, size - 1); break;
	default: mode_body(data + 1, size - 1, part[NPARTS - 1][0] ? part[NPARTS - 1] : "evt_1"); break;
	}
	free(copy);
	return 0;
}

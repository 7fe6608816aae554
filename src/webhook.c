/* webhook.c — signature verification and event parsing for the three
 * webhook schemes (see webhook.h for the contract).
 *
 * Every input here is hostile until its signature checks out: header
 * values are refused past WEBHOOK_HEADER_MAX before any parsing, every
 * candidate signature is decoded to exactly 32 bytes with a strict decoder
 * of our own (no lenient library parsing: EVP_DecodeBlock only ever sees
 * input we validated and padded), and digests are compared with
 * CRYPTO_memcmp. The comparison loop visits every (secret, candidate) pair
 * and ORs the results, so neither a byte position nor which secret matched
 * shows in the timing. The HMAC itself runs over the raw body bytes as
 * received (never the re-serialized JSON).
 *
 * Workload: one verification per delivery, a few secrets, a handful of
 * candidates: the cost is the HMAC over the body, once per secret. */
#include "webhook.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "account.h"
#include "config.h"
#include "hex.h"
#include "banned.h"

#define DIGEST_LEN 32
#define HEX_SIG_LEN 64
#define B64_SIG_LEN 44     /* base64 of 32 bytes: 43 symbols + one '=' */
#define B64_MAX_IN ((WEBHOOK_KEY_MAX + 2) / 3 * 4)

/* ---------------------------------------------------------------- names */

static const char *const provider_names[WH_PROVIDER_COUNT] = { "coinbase", "stripe", "standard" };
static const char *const paying_types[WH_PROVIDER_COUNT] = {
	"charge:confirmed", "payment_intent.succeeded", "payment.confirmed"
};

const char *webhook_provider_str(enum wh_provider p)
{
	return (unsigned)p < WH_PROVIDER_COUNT ? provider_names[p] : "unknown";
}

int webhook_provider_parse(const char *s)
{
	for (int i = 0; s && i < WH_PROVIDER_COUNT; i++)
		if (!strcmp(s, provider_names[i]))
			return i;
	return -1;
}

bool webhook_type_pays(enum wh_provider p, const char *type)
{
	return (unsigned)p < WH_PROVIDER_COUNT && type && !strcmp(type, paying_types[p]);
}

bool webhook_id_valid(const char *s, size_t len)
{
	if (!s || len == 0 || len > WEBHOOK_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

bool webhook_std_id_valid(const char *s, size_t len)
{
	if (!s || len == 0 || len > WEBHOOK_ID_MAX || s[0] == ' ' || s[len - 1] == ' ')
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

bool webhook_fresh(int64_t ts_ms, int64_t now_ms)
{
	/* Compare without subtracting first: ts may be anything a sender wrote. */
	if (ts_ms <= now_ms)
		return now_ms - WEBHOOK_TOLERANCE_MS <= ts_ms;
	return ts_ms - WEBHOOK_TOLERANCE_MS <= now_ms;
}

/* ---------------------------------------------------------------- HMAC */

/* HMAC-SHA256 (RFC 2104) composed from SHA-256 digest states:
 *   HMAC(K, m) = H((K0 ^ opad) || H((K0 ^ ipad) || m)),
 * K0 being K zero-padded to SHA-256's 64-byte block (a longer K is hashed
 * first). Keying absorbs K0 ^ ipad into one state and K0 ^ opad into
 * another, once; a MAC then copies the inner state, hashes the message
 * into the copy, and copies the outer one to hash the inner digest. That
 * is the work OpenSSL's HMAC does, without its per-copy layers (an
 * EVP_MAC_CTX_dup duplicates a MAC context, an HMAC_CTX and three digest
 * contexts, each allocated and freed per verification: ~5k of a ~15k
 * verification, callgrind). The keyed states are only read (copied), so
 * threads share them. */
#define SHA256_BLOCK 64

/* SHA-256 implementation, fetched by whoever keys (no file-level cache:
 * that would be mutable state outside the server's context). A keyed
 * state holds its own reference, so the fetcher frees it once it has
 * keyed what it needed. NULL on failure. */
static EVP_MD *sha256_fetch(void)
{
	return EVP_MD_fetch(NULL, "SHA256", NULL);
}

static void key_release(struct wh_key *k)
{
	EVP_MD_CTX_free(k->inner);
	EVP_MD_CTX_free(k->outer);
	k->inner = k->outer = NULL;
}

/* A digest state of md that has absorbed K0 ^ pad. */
static EVP_MD_CTX *padded_state(const EVP_MD *md, const unsigned char k0[SHA256_BLOCK],
				unsigned char pad)
{
	unsigned char block[SHA256_BLOCK];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	for (int i = 0; i < SHA256_BLOCK; i++)
		block[i] = (unsigned char)(k0[i] ^ pad);
	if (ctx && !(EVP_DigestInit_ex2(ctx, md, NULL) &&
		     EVP_DigestUpdate(ctx, block, SHA256_BLOCK))) {
		EVP_MD_CTX_free(ctx);
		ctx = NULL;
	}
	OPENSSL_cleanse(block, sizeof(block));
	return ctx;
}

/* Keys *k with key (HMAC-SHA256) on md; false on any OpenSSL failure, a
 * NULL md or an empty key (then *k holds nothing). The caller releases k
 * (key_release); md stays the caller's. */
static bool hmac_key(const EVP_MD *md, const unsigned char *key, size_t key_len,
		     struct wh_key *k)
{
	unsigned char k0[SHA256_BLOCK] = { 0 };
	bool ok = md && key_len;

	k->inner = k->outer = NULL;
	if (ok && key_len > SHA256_BLOCK)
		ok = EVP_Digest(key, key_len, k0, NULL, md, NULL); /* 32 bytes, rest 0 */
	else if (ok)
		memcpy(k0, key, key_len);
	if (ok) {
		k->inner = padded_state(md, k0, 0x36);
		k->outer = padded_state(md, k0, 0x5c);
		ok = k->inner && k->outer;
	}
	OPENSSL_cleanse(k0, sizeof(k0));
	if (!ok)
		key_release(k);
	return ok;
}

/* HMAC(k's key, p[0] || p[1] || p[2]) into out, hashed in ctx (a digest
 * context of the caller's, reused across keys): k itself is only read,
 * so threads may share it. False on any OpenSSL failure (then the caller
 * treats the secret as matching nothing). */
static bool hmac_run(EVP_MD_CTX *ctx, const struct wh_key *k, const void *const p[3],
		     const size_t n[3], unsigned char out[DIGEST_LEN])
{
	unsigned char inner[DIGEST_LEN];
	unsigned int len = 0;
	bool ok = ctx && k->inner && EVP_MD_CTX_copy_ex(ctx, k->inner);

	for (int i = 0; ok && i < 3; i++)
		if (n[i])
			ok = EVP_DigestUpdate(ctx, p[i], n[i]);
	ok = ok && EVP_DigestFinal_ex(ctx, inner, &len) && len == DIGEST_LEN;
	ok = ok && EVP_MD_CTX_copy_ex(ctx, k->outer) && EVP_DigestUpdate(ctx, inner, DIGEST_LEN);
	ok = ok && EVP_DigestFinal_ex(ctx, out, &len) && len == DIGEST_LEN;
	OPENSSL_cleanse(inner, sizeof(inner));
	if (!ok)
		OPENSSL_cleanse(out, DIGEST_LEN);
	return ok;
}

/* HMAC-SHA256(key, p[0] || p[1] || p[2]) into out, keyed for this call. */
static bool hmac_sha256(const unsigned char *key, size_t key_len, const void *const p[3],
			const size_t n[3], unsigned char out[DIGEST_LEN])
{
	EVP_MD *md = sha256_fetch();
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	struct wh_key k;
	bool ok = hmac_key(md, key, key_len, &k);

	ok = ok && hmac_run(ctx, &k, p, n, out);
	if (!ok)
		OPENSSL_cleanse(out, DIGEST_LEN);
	key_release(&k);
	EVP_MD_CTX_free(ctx);
	EVP_MD_free(md);
	return ok;
}

/* ---------------------------------------------------------------- decoding */

static int b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Strict standard base64 (RFC 4648 section 4) of len bytes at s into out
 * (cap bytes). Padding may be present (then len % 4 == 0) or absent; the
 * unused low bits of the last symbol must be zero (canonical form), so one
 * byte string has exactly one accepted encoding per padding choice.
 * *out_len gets the decoded length. */
static bool b64_decode(const char *s, size_t len, unsigned char *out, size_t cap, size_t *out_len)
{
	char tmp[B64_MAX_IN + 4];
	unsigned char dec[B64_MAX_IN / 4 * 3 + 3];
	size_t sym = len, pad, total;
	int last, n;

	if (len == 0 || len > B64_MAX_IN)
		return false;
	while (sym > 0 && s[sym - 1] == '=')
		sym--;
	pad = len - sym;
	if (pad > 2 || (pad && len % 4) || sym % 4 == 1)
		return false;
	for (size_t i = 0; i < sym; i++)
		if (b64_val((unsigned char)s[i]) < 0)
			return false;
	/* Canonical: the bits past the last whole byte are zero. */
	last = b64_val((unsigned char)s[sym - 1]);
	if ((sym % 4 == 2 && (last & 0x0f)) || (sym % 4 == 3 && (last & 0x03)))
		return false;
	total = sym % 4 == 0 ? sym / 4 * 3 : sym / 4 * 3 + (sym % 4 - 1);
	if (total > cap)
		return false;
	/* EVP_DecodeBlock wants whole quanta and counts padding as zero bytes. */
	memcpy(tmp, s, sym);
	while (sym % 4)
		tmp[sym++] = '=';
	n = EVP_DecodeBlock(dec, (const unsigned char *)tmp, (int)sym);
	if (n < 0 || (size_t)n < total) {
		OPENSSL_cleanse(dec, sizeof(dec));
		return false;
	}
	memcpy(out, dec, total);
	OPENSSL_cleanse(dec, sizeof(dec));
	OPENSSL_cleanse(tmp, sizeof(tmp));
	*out_len = total;
	return true;
}

/* Exactly 44 characters of canonical padded base64 -> 32 bytes. */
static bool b64_sig_decode(const char *s, size_t len, unsigned char out[DIGEST_LEN])
{
	size_t n = 0;

	return len == B64_SIG_LEN && s[B64_SIG_LEN - 1] == '=' && s[B64_SIG_LEN - 2] != '=' &&
	       b64_decode(s, len, out, DIGEST_LEN, &n) && n == DIGEST_LEN;
}

enum st_rc webhook_secret_decode(const char *secret, unsigned char key[WEBHOOK_KEY_MAX],
				 size_t *key_len)
{
	size_t len, n = 0;

	if (!secret)
		return ST_INVALID;
	if (!strncmp(secret, "whsec_", 6))
		secret += 6;
	len = strnlen(secret, B64_MAX_IN + 1);
	if (!b64_decode(secret, len, key, WEBHOOK_KEY_MAX, &n) || n == 0)
		return ST_INVALID;
	*key_len = n;
	return ST_OK;
}

/* ---------------------------------------------------------------- matching */

struct candidates {
	unsigned char sig[WEBHOOK_MAX_SIGS][DIGEST_LEN];
	size_t n;
	bool overflow;   /* more than WEBHOOK_MAX_SIGS well-formed candidates */
};

static void cand_add(struct candidates *c, const unsigned char d[DIGEST_LEN])
{
	if (c->n == WEBHOOK_MAX_SIGS) {
		c->overflow = true;
		return;
	}
	memcpy(c->sig[c->n++], d, DIGEST_LEN);
}

/* Computes each keyed secret's HMAC over p[] and compares it with every
 * candidate. No early exit: the work done depends only on the counts. */
static bool any_match(const struct wh_keys *keys, const void *const p[3], const size_t n[3],
		      const struct candidates *c)
{
	unsigned char mac[DIGEST_LEN];
	unsigned match = 0;
	/* One digest context for every secret's two copies (its state is
	 * replaced by each copy and cleansed when freed). */
	EVP_MD_CTX *ctx = keys->n ? EVP_MD_CTX_new() : NULL;

	for (size_t k = 0; k < keys->n; k++) {
		if (!hmac_run(ctx, &keys->k[k], p, n, mac))
			continue;
		for (size_t i = 0; i < c->n; i++)
			match |= (unsigned)(CRYPTO_memcmp(mac, c->sig[i], DIGEST_LEN) == 0);
	}
	EVP_MD_CTX_free(ctx);
	OPENSSL_cleanse(mac, sizeof(mac));
	return match != 0;
}

/* ---------------------------------------------------------------- keys */

_Static_assert(WEBHOOK_KEYS_MAX >= CONFIG_MAX_LIST, "every configured secret gets a state");

void webhook_keys_release(struct wh_keys *k)
{
	for (size_t i = 0; i < k->n; i++)
		key_release(&k->k[i]);
	k->n = 0;
}

enum st_rc webhook_keys_init(struct wh_keys *k, enum wh_provider p, char *const *secrets,
			     size_t nsecrets)
{
	unsigned char kb[WEBHOOK_KEY_MAX];
	const unsigned char *key;
	size_t key_len = 0;
	/* Fetched once for all of p's secrets; each state keeps a reference. */
	EVP_MD *md = nsecrets ? sha256_fetch() : NULL;
	enum st_rc rc = ST_OK;

	k->n = 0;
	for (size_t i = 0; i < nsecrets && k->n < WEBHOOK_KEYS_MAX; i++) {
		if (!secrets[i] || !secrets[i][0])
			continue;
		if (p == WH_STANDARD) {
			if (webhook_secret_decode(secrets[i], kb, &key_len))
				continue; /* not base64: it can match nothing */
			key = kb;
		} else {
			key = (const unsigned char *)secrets[i];
			key_len = strlen(secrets[i]);
		}
		if (!hmac_key(md, key, key_len, &k->k[k->n])) {
			webhook_keys_release(k);
			rc = ST_INTERNAL;
			break;
		}
		k->n++;
	}
	OPENSSL_cleanse(kb, sizeof(kb));
	EVP_MD_free(md);
	return rc;
}

struct wh_keyring *webhook_keyring_new(const struct config *cfg)
{
	struct wh_keyring *r = calloc(1, sizeof(*r));
	char *const *secrets[WH_PROVIDER_COUNT] = {
		[WH_COINBASE] = cfg->webhook_secrets,
		[WH_STRIPE] = cfg->stripe_secrets,
		[WH_STANDARD] = cfg->standard_secrets,
	};
	const size_t n[WH_PROVIDER_COUNT] = {
		[WH_COINBASE] = cfg->n_webhook_secrets,
		[WH_STRIPE] = cfg->n_stripe_secrets,
		[WH_STANDARD] = cfg->n_standard_secrets,
	};

	for (int i = 0; r && i < WH_PROVIDER_COUNT; i++) {
		if (webhook_keys_init(&r->p[i], (enum wh_provider)i, secrets[i], n[i])) {
			webhook_keyring_free(r);
			r = NULL;
		}
	}
	return r;
}

void webhook_keyring_free(struct wh_keyring *r)
{
	if (!r)
		return;
	for (int i = 0; i < WH_PROVIDER_COUNT; i++)
		webhook_keys_release(&r->p[i]);
	free(r);
}

static bool header_ok(const char *h)
{
	return h && strnlen(h, WEBHOOK_HEADER_MAX + 1) <= WEBHOOK_HEADER_MAX;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Unix seconds as 1..WEBHOOK_TS_DIGITS_MAX digits -> ms. */
static bool parse_unix_seconds(const char *s, size_t len, int64_t *ms)
{
	int64_t v = 0;

	if (len == 0 || len > WEBHOOK_TS_DIGITS_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*ms = v * 1000;
	return true;
}

/* ---------------------------------------------------------------- schemes */

enum wh_verdict webhook_verify_coinbase_keyed(const char *sig, const void *body, size_t len,
					      const struct wh_keys *keys)
{
	struct candidates c = { .n = 0 };
	unsigned char d[DIGEST_LEN];
	const void *p[3] = { body, NULL, NULL };
	size_t n[3] = { len, 0, 0 };
	size_t slen;

	if (!header_ok(sig))
		return WH_BAD_SIGNATURE;
	slen = strlen(sig);
	/* Tolerate blanks around the value, nothing else. */
	while (slen && is_blank(sig[slen - 1]))
		slen--;
	while (slen && is_blank(*sig)) {
		sig++;
		slen--;
	}
	if (!hex_decode(sig, slen, d, DIGEST_LEN))
		return WH_BAD_SIGNATURE;
	cand_add(&c, d);
	return any_match(keys, p, n, &c) ? WH_VALID : WH_BAD_SIGNATURE;
}

enum wh_verdict webhook_verify_stripe_keyed(const char *header, const void *body, size_t len,
					    const struct wh_keys *keys, int64_t now_ms,
					    int64_t *ts_ms_out)
{
	struct candidates c = { .n = 0 };
	const char *t = NULL, *s, *end;
	size_t t_len = 0;
	int64_t ts_ms = 0;
	int nt = 0;

	if (!header_ok(header))
		return WH_BAD_SIGNATURE;
	end = header + strlen(header);
	for (s = header; s < end;) {
		const char *item = s, *comma = memchr(s, ',', (size_t)(end - s)), *ie, *eq;

		ie = comma ? comma : end;
		s = comma ? comma + 1 : end;
		while (item < ie && is_blank(*item))
			item++;
		while (ie > item && is_blank(ie[-1]))
			ie--;
		eq = memchr(item, '=', (size_t)(ie - item));
		if (!eq)
			continue; /* empty or unknown item: ignored, like Stripe's libraries */
		if (eq - item == 1 && item[0] == 't') {
			t = eq + 1;
			t_len = (size_t)(ie - t);
			nt++;
		} else if (eq - item == 2 && item[0] == 'v' && item[1] == '1') {
			unsigned char d[DIGEST_LEN];

			/* A malformed v1 is not a candidate; another may still match. */
			if (hex_decode(eq + 1, (size_t)(ie - eq - 1), d, DIGEST_LEN))
				cand_add(&c, d);
		}
		/* v0 and any other scheme: ignored. */
	}
	if (nt != 1 || !parse_unix_seconds(t, t_len, &ts_ms) || c.n == 0 || c.overflow)
		return WH_BAD_SIGNATURE;
	{
		const void *p[3] = { t, ".", body };
		size_t n[3] = { t_len, 1, len };

		if (!any_match(keys, p, n, &c))
			return WH_BAD_SIGNATURE;
	}
	if (ts_ms_out)
		*ts_ms_out = ts_ms;
	return webhook_fresh(ts_ms, now_ms) ? WH_VALID : WH_STALE;
}

enum wh_verdict webhook_verify_standard_keyed(const char *id, const char *ts, const char *sig,
					      const void *body, size_t len,
					      const struct wh_keys *keys, int64_t now_ms)
{
	size_t id_len, ts_len;
	char prefix[WEBHOOK_ID_MAX + 1 + WEBHOOK_TS_DIGITS_MAX + 1];
	struct candidates c = { .n = 0 };
	const char *s, *end;
	int64_t ts_ms = 0;
	enum wh_verdict v = WH_BAD_SIGNATURE;

	if (!header_ok(id) || !header_ok(ts) || !header_ok(sig))
		return WH_BAD_SIGNATURE;
	id_len = strlen(id);
	ts_len = strlen(ts);
	/* The id may contain '.' (the scheme allows any id): "id.ts.body"
	 * still has one reading that passes, since ts is digits only and the
	 * body must be a JSON object, so no other split of the signed bytes
	 * gives a fresh timestamp and a body that parses (webhooks.md). */
	if (!webhook_std_id_valid(id, id_len) || !parse_unix_seconds(ts, ts_len, &ts_ms))
		return WH_BAD_SIGNATURE;
	end = sig + strlen(sig);
	for (s = sig; s < end;) {
		const char *e = s;

		while (e < end && !is_blank(*e))
			e++;
		if (e - s > 3 && !memcmp(s, "v1,", 3)) {
			unsigned char d[DIGEST_LEN];

			if (b64_sig_decode(s + 3, (size_t)(e - s - 3), d))
				cand_add(&c, d);
		}
		/* Other versions (v1a: asymmetric signatures) are ignored. */
		s = e;
		while (s < end && is_blank(*s))
			s++;
	}
	if (c.n == 0 || c.overflow)
		return WH_BAD_SIGNATURE;

	/* Signed content: "<id>.<ts>." then the body. */
	memcpy(prefix, id, id_len);
	prefix[id_len] = '.';
	memcpy(prefix + id_len + 1, ts, ts_len);
	prefix[id_len + 1 + ts_len] = '.';
	{
		const void *p[3] = { prefix, body, NULL };
		size_t n[3] = { id_len + ts_len + 2, len, 0 };

		if (any_match(keys, p, n, &c))
			v = webhook_fresh(ts_ms, now_ms) ? WH_VALID : WH_STALE;
	}
	return v;
}

/* The secrets-array forms: the secrets keyed for this one call. */

enum wh_verdict webhook_verify_coinbase(const char *sig, const void *body, size_t len,
					char *const *secrets, size_t nsecrets)
{
	struct wh_keys k;
	enum wh_verdict v;

	if (webhook_keys_init(&k, WH_COINBASE, secrets, nsecrets))
		return WH_BAD_SIGNATURE;
	v = webhook_verify_coinbase_keyed(sig, body, len, &k);
	webhook_keys_release(&k);
	return v;
}

enum wh_verdict webhook_verify_stripe(const char *header, const void *body, size_t len,
				      char *const *secrets, size_t nsecrets, int64_t now_ms,
				      int64_t *ts_ms_out)
{
	struct wh_keys k;
	enum wh_verdict v;

	if (webhook_keys_init(&k, WH_STRIPE, secrets, nsecrets))
		return WH_BAD_SIGNATURE;
	v = webhook_verify_stripe_keyed(header, body, len, &k, now_ms, ts_ms_out);
	webhook_keys_release(&k);
	return v;
}

enum wh_verdict webhook_verify_standard(const char *id, const char *ts, const char *sig,
					const void *body, size_t len, char *const *secrets,
					size_t nsecrets, int64_t now_ms)
{
	struct wh_keys k;
	enum wh_verdict v;

	if (webhook_keys_init(&k, WH_STANDARD, secrets, nsecrets))
		return WH_BAD_SIGNATURE;
	v = webhook_verify_standard_keyed(id, ts, sig, body, len, &k, now_ms);
	webhook_keys_release(&k);
	return v;
}

/* ---------------------------------------------------------------- time */

static bool digits(const char *s, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

static bool leap_year(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar
 * (H. Hinnant's days_from_civil); no time zone, no libc. */
static int64_t days_from_civil(int y, int m, int d)
{
	int64_t yy = y - (m <= 2);
	int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
	int64_t yoe = yy - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

	return era * 146097 + doe - 719468;
}

enum st_rc webhook_parse_rfc3339(const char *s, size_t len, int64_t *ms_out)
{
	static const int mdays[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int y, mo, d, h, mi, sec, oh = 0, om = 0, ms = 0, sign = 0;
	size_t i = 19;
	int64_t t;

	/* "YYYY-MM-DDTHH:MM:SS" is 19 bytes; then fraction and offset. */
	if (!s || len < 20 || len > 64)
		return ST_INVALID;
	if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
	    !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &h) ||
	    s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &sec))
		return ST_INVALID;
	if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 60)
		return ST_INVALID;
	if (d > mdays[mo - 1] + (mo == 2 && leap_year(y)))
		return ST_INVALID;
	if (s[i] == '.') {
		size_t start = ++i;

		while (i < len && s[i] >= '0' && s[i] <= '9') {
			if (i - start < 3)
				ms = ms * 10 + (s[i] - '0');
			i++;
		}
		if (i == start)
			return ST_INVALID;
		for (size_t k = i - start; k < 3; k++)
			ms *= 10;
	}
	if (i == len)
		return ST_INVALID; /* the offset is mandatory */
	if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == len) {
		sign = 0;
	} else if ((s[i] == '+' || s[i] == '-') && len - i == 6) {
		sign = s[i] == '+' ? 1 : -1;
		if (!digits(s + i + 1, 2, &oh) || s[i + 3] != ':' || !digits(s + i + 4, 2, &om) ||
		    oh > 23 || om > 59)
			return ST_INVALID;
	} else {
		return ST_INVALID;
	}
	/* A leap second (:60) counts as the next second, as POSIX time does. */
	t = days_from_civil(y, mo, d) * 86400 + (int64_t)h * 3600 + mi * 60 + sec;
	t -= (int64_t)sign * (oh * 3600 + om * 60);
	*ms_out = t * 1000 + ms;
	return ST_OK;
}

/* ---------------------------------------------------------------- events */

static const json_t *path_get(const json_t *root, const char *const *path)
{
	const json_t *v = root;

	for (; *path && v; path++)
		v = json_object_get(v, *path);
	return v;
}

/* The string at path: 1..max bytes of 0x21..0x7e; else NULL. */
static const char *path_token(const json_t *root, const char *const *path, size_t max)
{
	const json_t *v = path_get(root, path);
	size_t n;

	if (!json_is_string(v))
		return NULL;
	n = json_string_length(v);
	if (n > max || !webhook_id_valid(json_string_value(v), n))
		return NULL;
	return json_string_value(v);
}

#define P(...) ((const char *const[]){ __VA_ARGS__, NULL })

static enum st_rc fail(struct buf *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static enum st_rc fail(struct buf *err, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		buf_reset(err);
		va_start(ap, fmt);
		buf_vprintf(err, fmt, ap);
		va_end(ap);
	}
	return ST_INVALID;
}

enum st_rc webhook_event_parse(enum wh_provider p, const json_t *body, const char *std_id,
			       struct wh_event *out, struct buf *err)
{
	const char *id = NULL, *type = NULL, *created = NULL;
	int64_t created_ms = 0;

	if (!json_is_object(body))
		return fail(err, "the body must be a JSON object");
	switch (p) {
	case WH_COINBASE:
		if (!json_is_object(json_object_get(body, "event")))
			return fail(err, "event must be an object");
		id = path_token(body, P("event", "id"), WEBHOOK_ID_MAX);
		type = path_token(body, P("event", "type"), WEBHOOK_TYPE_MAX);
		created = path_token(body, P("event", "created_at"), 64);
		if (id && type && !created)
			return fail(err, "event.created_at is missing or not a string");
		if (created && webhook_parse_rfc3339(created, strlen(created), &created_ms))
			return fail(err, "event.created_at is not an RFC 3339 date-time");
		break;
	case WH_STRIPE:
		id = path_token(body, P("id"), WEBHOOK_ID_MAX);
		type = path_token(body, P("type"), WEBHOOK_TYPE_MAX);
		break;
	case WH_STANDARD:
		id = std_id && webhook_std_id_valid(std_id, strlen(std_id)) ? std_id : NULL;
		type = path_token(body, P("type"), WEBHOOK_TYPE_MAX);
		break;
	default:
		return fail(err, "unknown provider");
	}
	if (!id)
		return fail(err, "the event id is missing or not 1-%d printable characters",
			    WEBHOOK_ID_MAX);
	if (!type)
		return fail(err, "the event type is missing or not 1-%d printable characters",
			    WEBHOOK_TYPE_MAX);
	memset(out, 0, sizeof(*out));
	memcpy(out->id, id, strlen(id) + 1);
	memcpy(out->type, type, strlen(type) + 1);
	out->created_ms = created_ms;
	out->pays = webhook_type_pays(p, type);
	return ST_OK;
}

/* ---------------------------------------------------------------- payments */

static const struct {
	const char *code;
	int decimals;
} assets[] = {
	{ "USD", 2 }, { "EUR", 2 }, { "GBP", 2 }, { "CAD", 2 }, { "JPY", 0 },
};

int webhook_asset_decimals(const char *asset)
{
	for (size_t i = 0; asset && i < sizeof(assets) / sizeof(assets[0]); i++)
		if (!strcasecmp(asset, assets[i].code))
			return assets[i].decimals;
	return -1;
}

/* Shown in errors: at most 40 bytes, and only when printable. */
static const char *shown(const json_t *v)
{
	const char *s = json_is_string(v) ? json_string_value(v) : NULL;

	if (!s || json_string_length(v) > 40 || !webhook_id_valid(s, json_string_length(v)))
		return "(not shown)";
	return s;
}

static enum st_rc check_currency(const json_t *cur, const char *asset, struct buf *err)
{
	if (!json_is_string(cur) || strcasecmp(json_string_value(cur), asset) ||
	    json_string_length(cur) != strlen(asset))
		return fail(err, "currency_mismatch: the payment's currency %s is not the ledger's %s",
			    shown(cur), asset);
	return ST_OK;
}

static size_t fraction_digits(const char *s, size_t len)
{
	const char *dot = memchr(s, '.', len);

	return dot ? len - (size_t)(dot - s) - 1 : 0;
}

/* A client account's qualified name, "<client_id>/<name>": a client id
 * of [A-Za-z0-9_] (the API key ids) and an account name
 * (account_name_valid). Copies it into out. */
static bool account_qname_valid(const json_t *v, char out[WH_ACCOUNT_MAX + 1])
{
	const char *s = json_string_value(v);
	size_t n = s ? json_string_length(v) : 0;
	const char *slash = s ? memchr(s, '/', n) : NULL;
	size_t cid;

	if (!slash || n > WH_ACCOUNT_MAX)
		return false;
	cid = (size_t)(slash - s);
	if (cid == 0 || cid > ACCOUNT_CLIENT_MAX)
		return false;
	for (size_t i = 0; i < cid; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	if (!account_name_valid(slash + 1, n - cid - 1))
		return false;
	memcpy(out, s, n);
	out[n] = '\0';
	return true;
}

enum st_rc webhook_payment_parse(enum wh_provider p, const json_t *body, const char *asset,
				 struct wh_payment *out, struct buf *err)
{
	const json_t *wallet, *account, *amount, *cur;
	struct wh_payment pay;
	int decimals = webhook_asset_decimals(asset);
	enum st_rc rc;

	memset(&pay, 0, sizeof(pay));
	if (decimals < 0)
		return fail(err, "unsupported_asset: the ledger asset %s has no known base unit",
			    asset ? asset : "(none)");
	switch (p) {
	case WH_COINBASE:
		wallet = path_get(body, P("event", "data", "metadata", "wallet"));
		account = path_get(body, P("event", "data", "metadata", "account"));
		amount = path_get(body, P("event", "data", "pricing", "local", "amount"));
		cur = path_get(body, P("event", "data", "pricing", "local", "currency"));
		break;
	case WH_STRIPE:
		wallet = path_get(body, P("data", "object", "metadata", "wallet"));
		account = path_get(body, P("data", "object", "metadata", "account"));
		/* What was captured, not what was authorized: a partial
		 * capture receives less than amount. amount only when
		 * amount_received is absent (older API versions). */
		amount = path_get(body, P("data", "object", "amount_received"));
		if (!amount)
			amount = path_get(body, P("data", "object", "amount"));
		cur = path_get(body, P("data", "object", "currency"));
		break;
	case WH_STANDARD:
		wallet = path_get(body, P("data", "wallet"));
		account = path_get(body, P("data", "account"));
		amount = path_get(body, P("data", "amount"));
		cur = path_get(body, P("data", "asset"));
		break;
	default:
		return fail(err, "invalid_event: unknown provider");
	}
	if (account && wallet)
		return fail(err, "invalid_account: the event names both a wallet and an account");
	if (account) {
		if (!account_qname_valid(account, pay.account))
			return fail(err, "invalid_account: metadata.account must be <client_id>/<name>");
	} else if (!json_is_string(wallet) ||
		   parse_wallet(json_string_value(wallet), json_string_length(wallet), pay.wallet)) {
		return fail(err, "invalid_wallet: the event names no wallet (0x + 40 hex digits)");
	}
	rc = check_currency(cur, asset, err);
	if (rc)
		return rc;
	switch (p) {
	case WH_COINBASE: {
		const char *s = json_string_value(amount);
		size_t n = json_string_length(amount);

		if (!json_is_string(amount))
			return fail(err, "invalid_amount: pricing.local.amount must be a decimal string");
		if (parse_decimal_amount(s, n, decimals, &pay.amount)) {
			if (fraction_digits(s, n) > (size_t)decimals)
				return fail(err,
					    "invalid_amount: %s has more decimals than %s allows (%d); "
					    "amounts are never rounded",
					    shown(amount), asset, decimals);
			return fail(err, "invalid_amount: %s is not a decimal amount", shown(amount));
		}
		break;
	}
	case WH_STRIPE:
		if (!json_is_integer(amount))
			return fail(err, "invalid_amount: data.object.amount_received (or amount) must "
				    "be an integer");
		pay.amount = json_integer_value(amount);
		/* Nothing received is nothing to credit; never fall back to
		 * amount, which was only authorized. */
		if (pay.amount == 0)
			return fail(err, "invalid_amount: the payment received nothing "
				    "(amount_received is 0)");
		break;
	default:
		if (!json_is_string(amount) ||
		    parse_amount(json_string_value(amount), json_string_length(amount), &pay.amount))
			return fail(err, "invalid_amount: data.amount must be a base-unit integer string");
		break;
	}
	if (pay.amount <= 0)
		return fail(err, "invalid_amount: the amount must be positive");
	*out = pay;
	return ST_OK;
}

enum st_rc webhook_commission(int64_t amount, int64_t bps, int64_t *out)
{
	__int128 c;

	if (amount < 0 || bps < 0 || bps > 10000)
		return ST_INVALID;
	/* amount * bps < 2^63 * 2^14: exact in 128 bits; the division floors
	 * (both operands are non-negative) and the result is <= amount. */
	c = (__int128)amount * bps / 10000;
	*out = (int64_t)c;
	return ST_OK;
}

enum st_rc webhook_sign_standard(const char *secret, const char *id, int64_t ts_s,
				 const void *body, size_t len, char out[WEBHOOK_STD_SIG_MAX])
{
	unsigned char key[WEBHOOK_KEY_MAX], mac[DIGEST_LEN];
	char prefix[WEBHOOK_ID_MAX + 32];
	size_t key_len = 0;
	const void *p[3];
	size_t n[3];
	enum st_rc rc = ST_INVALID;

	out[0] = '\0';
	if (webhook_secret_decode(secret, key, &key_len))
		goto out;
	snprintf(prefix, sizeof(prefix), "%s.%lld.", id, (long long)ts_s);
	p[0] = prefix;
	n[0] = strlen(prefix);
	p[1] = body;
	n[1] = len;
	p[2] = "";
	n[2] = 0;
	rc = ST_INTERNAL;
	if (!hmac_sha256(key, key_len, p, n, mac))
		goto out;
	memcpy(out, "v1,", 3);
	EVP_EncodeBlock((unsigned char *)out + 3, mac, DIGEST_LEN); /* 44 chars + NUL */
	rc = ST_OK;
out:
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(mac, sizeof(mac));
	return rc;
}

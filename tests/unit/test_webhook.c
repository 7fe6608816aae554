/* test_webhook.c — webhook signature verification, parsing and commission.
 *
 * Every expected signature is computed here with OpenSSL directly (HMAC(),
 * EVP_EncodeBlock, our own hex), never with the module under test, plus
 * one published Standard Webhooks test vector. Each scheme is checked for
 * the valid case and then for every tampering: a body byte, a signature
 * byte, the timestamp, the id, a wrong secret, truncation, non-hex or
 * non-base64 input, several candidates with one valid, rotated secrets,
 * stale and future timestamps. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "webhook.h"
#include "webhook_job.h"

#include "banned.h"

#define NOW_S 1700000000LL
#define NOW_MS (NOW_S * 1000)
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const char BODY[] = "{\"id\":\"evt_1\",\"type\":\"payment_intent.succeeded\",\"data\":{}}";

/* ---------------------------------------------------------------- helpers */

static void hmac_raw(const void *key, size_t klen, const char *msg, size_t mlen,
		     unsigned char out[32])
{
	unsigned int n = 0;

	cr_assert_not_null(HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, mlen, out, &n));
	cr_assert_eq(n, 32);
}

static void to_hex(const unsigned char *d, size_t n, char *out, bool upper)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[d[i] >> 4];
		out[2 * i + 1] = digits[d[i] & 15];
	}
	out[2 * n] = '\0';
}

/* hex HMAC-SHA256(secret, msg) */
static void hex_sig(const char *secret, const char *msg, size_t mlen, char out[65], bool upper)
{
	unsigned char d[32];

	hmac_raw(secret, strlen(secret), msg, mlen, d);
	to_hex(d, 32, out, upper);
}

/* base64 HMAC-SHA256(key, msg) */
static void b64_sig(const unsigned char *key, size_t klen, const char *msg, size_t mlen, char out[45])
{
	unsigned char d[32];

	hmac_raw(key, klen, msg, mlen, d);
	cr_assert_eq(EVP_EncodeBlock((unsigned char *)out, d, 32), 44);
}

static char *S[] = { NULL };   /* placeholder for "no secrets" */

/* ---------------------------------------------------------------- Coinbase */

static char *cb_secrets[] = { (char *)"cb-secret-one" };
static char *cb_rotated[] = { (char *)"cb-old", (char *)"", (char *)"cb-new" };

Test(webhook_coinbase, valid_lower_and_upper_hex)
{
	char sig[65];

	hex_sig("cb-secret-one", BODY, strlen(BODY), sig, false);
	cr_expect_eq(webhook_verify_coinbase(sig, BODY, strlen(BODY), cb_secrets, 1), WH_VALID);
	hex_sig("cb-secret-one", BODY, strlen(BODY), sig, true);
	cr_expect_eq(webhook_verify_coinbase(sig, BODY, strlen(BODY), cb_secrets, 1), WH_VALID);
}

Test(webhook_coinbase, tampering)
{
	char sig[65], bad[80], body[sizeof(BODY)];

	hex_sig("cb-secret-one", BODY, strlen(BODY), sig, false);

	/* a body byte */
	memcpy(body, BODY, sizeof(BODY));
	body[10] ^= 1;
	cr_expect_eq(webhook_verify_coinbase(sig, body, strlen(body), cb_secrets, 1), WH_BAD_SIGNATURE);
	/* one byte fewer / one more */
	cr_expect_eq(webhook_verify_coinbase(sig, BODY, strlen(BODY) - 1, cb_secrets, 1), WH_BAD_SIGNATURE);
	/* every signature position, one at a time */
	for (size_t i = 0; i < 64; i++) {
		memcpy(bad, sig, 65);
		bad[i] = bad[i] == '0' ? '1' : '0';
		cr_expect_eq(webhook_verify_coinbase(bad, BODY, strlen(BODY), cb_secrets, 1),
			     WH_BAD_SIGNATURE, "position %zu", i);
	}
	/* truncated, extended, non-hex, empty, missing */
	memcpy(bad, sig, 65);
	bad[63] = '\0';
	cr_expect_eq(webhook_verify_coinbase(bad, BODY, strlen(BODY), cb_secrets, 1), WH_BAD_SIGNATURE);
	snprintf(bad, sizeof(bad), "%s0", sig);
	cr_expect_eq(webhook_verify_coinbase(bad, BODY, strlen(BODY), cb_secrets, 1), WH_BAD_SIGNATURE);
	memcpy(bad, sig, 65);
	bad[5] = 'g';
	cr_expect_eq(webhook_verify_coinbase(bad, BODY, strlen(BODY), cb_secrets, 1), WH_BAD_SIGNATURE);
	snprintf(bad, sizeof(bad), "sha256=%s", sig);
	cr_expect_eq(webhook_verify_coinbase(bad, BODY, strlen(BODY), cb_secrets, 1), WH_BAD_SIGNATURE);
	cr_expect_eq(webhook_verify_coinbase("", BODY, strlen(BODY), cb_secrets, 1), WH_BAD_SIGNATURE);
	cr_expect_eq(webhook_verify_coinbase(NULL, BODY, strlen(BODY), cb_secrets, 1), WH_BAD_SIGNATURE);
	/* wrong secret; no secret configured */
	hex_sig("cb-secret-two", BODY, strlen(BODY), bad, false);
	cr_expect_eq(webhook_verify_coinbase(bad, BODY, strlen(BODY), cb_secrets, 1), WH_BAD_SIGNATURE);
	cr_expect_eq(webhook_verify_coinbase(sig, BODY, strlen(BODY), S, 0), WH_BAD_SIGNATURE);
}

Test(webhook_coinbase, rotated_secrets_all_tried)
{
	char sig[65];

	hex_sig("cb-old", BODY, strlen(BODY), sig, false);
	cr_expect_eq(webhook_verify_coinbase(sig, BODY, strlen(BODY), cb_rotated, 3), WH_VALID);
	hex_sig("cb-new", BODY, strlen(BODY), sig, false);
	cr_expect_eq(webhook_verify_coinbase(sig, BODY, strlen(BODY), cb_rotated, 3), WH_VALID);
	/* the secret must be an exact match, not a prefix */
	hex_sig("cb-ne", BODY, strlen(BODY), sig, false);
	cr_expect_eq(webhook_verify_coinbase(sig, BODY, strlen(BODY), cb_rotated, 3), WH_BAD_SIGNATURE);
}

Test(webhook_coinbase, oversized_header_refused)
{
	char big[WEBHOOK_HEADER_MAX + 2];

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	cr_expect_eq(webhook_verify_coinbase(big, BODY, strlen(BODY), cb_secrets, 1), WH_BAD_SIGNATURE);
}

/* ---------------------------------------------------------------- Stripe */

static char *st_secrets[] = { (char *)"whsec_stripe_test_1" };
static char *st_rotated[] = { (char *)"whsec_stripe_old", (char *)"whsec_stripe_new" };

/* "t=<ts>,v1=<hex of HMAC(secret, ts.body)>" */
static void stripe_v1(const char *secret, long long ts, const char *body, char out[65])
{
	char msg[1024];
	int n = snprintf(msg, sizeof(msg), "%lld.%s", ts, body);

	hex_sig(secret, msg, (size_t)n, out, false);
}

static enum wh_verdict stripe(const char *hdr, const char *body, char **secrets, size_t n)
{
	return webhook_verify_stripe(hdr, body, strlen(body), secrets, n, NOW_MS, NULL);
}

Test(webhook_stripe, valid)
{
	char v1[65], hdr[256];
	int64_t ts = 0;

	stripe_v1("whsec_stripe_test_1", NOW_S, BODY, v1);
	snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW_S, v1);
	cr_expect_eq(webhook_verify_stripe(hdr, BODY, strlen(BODY), st_secrets, 1, NOW_MS, &ts), WH_VALID);
	cr_expect_eq(ts, NOW_MS);
	/* blanks after commas, v0 and unknown schemes ignored, v1 first */
	snprintf(hdr, sizeof(hdr), "v1=%s, t=%lld, v0=abcdef, x=1", v1, NOW_S);
	cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_VALID);
}

Test(webhook_stripe, several_v1_one_valid)
{
	char v1[65], other[65], hdr[512];

	stripe_v1("whsec_stripe_test_1", NOW_S, BODY, v1);
	stripe_v1("some-other-secret", NOW_S, BODY, other);
	snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s,v1=%s", NOW_S, other, v1);
	cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_VALID);
	snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s,v1=%s", NOW_S, v1, other);
	cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_VALID);
	/* a malformed candidate does not spoil a good one */
	snprintf(hdr, sizeof(hdr), "t=%lld,v1=zz,v1=%.63s,v1=%s", NOW_S, other, v1);
	cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_VALID);
	/* but none valid is a failure */
	snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s,v1=%s", NOW_S, other, other);
	cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_BAD_SIGNATURE);
}

Test(webhook_stripe, tampering)
{
	char v1[65], bad[65], hdr[512], body[sizeof(BODY)];

	stripe_v1("whsec_stripe_test_1", NOW_S, BODY, v1);

	/* body byte */
	memcpy(body, BODY, sizeof(BODY));
	body[3] = 'X';
	snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW_S, v1);
	cr_expect_eq(stripe(hdr, body, st_secrets, 1), WH_BAD_SIGNATURE);
	/* timestamp (the signature was over the original t) */
	snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW_S + 1, v1);
	cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_BAD_SIGNATURE);
	snprintf(hdr, sizeof(hdr), "t=0%lld,v1=%s", NOW_S, v1);
	cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_BAD_SIGNATURE);
	/* signature bytes */
	for (size_t i = 0; i < 64; i += 7) {
		memcpy(bad, v1, 65);
		bad[i] = bad[i] == 'a' ? 'b' : 'a';
		snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW_S, bad);
		cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_BAD_SIGNATURE, "position %zu", i);
	}
	/* truncated, non-hex, upper-case-only scheme name, only v0 */
	snprintf(hdr, sizeof(hdr), "t=%lld,v1=%.62s", NOW_S, v1);
	cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_BAD_SIGNATURE);
	memcpy(bad, v1, 65);
	bad[0] = 'x';
	snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW_S, bad);
	cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_BAD_SIGNATURE);
	snprintf(hdr, sizeof(hdr), "t=%lld,V1=%s", NOW_S, v1);
	cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_BAD_SIGNATURE);
	snprintf(hdr, sizeof(hdr), "t=%lld,v0=%s", NOW_S, v1);
	cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_BAD_SIGNATURE);
	/* wrong secret */
	cr_expect_eq(stripe(hdr, BODY, cb_secrets, 1), WH_BAD_SIGNATURE);
	snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW_S, v1);
	cr_expect_eq(stripe(hdr, BODY, cb_secrets, 1), WH_BAD_SIGNATURE);
	cr_expect_eq(stripe(hdr, BODY, S, 0), WH_BAD_SIGNATURE);
}

Test(webhook_stripe, malformed_headers)
{
	char v1[65], hdr[2048];
	const char *t[9];
	char c[9][200];

	stripe_v1("whsec_stripe_test_1", NOW_S, BODY, v1);
	snprintf(c[0], sizeof(c[0]), "v1=%s", v1);                          /* no t */
	snprintf(c[1], sizeof(c[1]), "t=,v1=%s", v1);                       /* empty t */
	snprintf(c[2], sizeof(c[2]), "t=%lld,t=%lld,v1=%s", NOW_S, NOW_S, v1); /* two t */
	snprintf(c[3], sizeof(c[3]), "t=-%lld,v1=%s", NOW_S, v1);           /* sign */
	snprintf(c[4], sizeof(c[4]), "t=%lld.5,v1=%s", NOW_S, v1);          /* fraction */
	snprintf(c[5], sizeof(c[5]), "t=1%lld00,v1=%s", NOW_S, v1);         /* 13 digits */
	snprintf(c[6], sizeof(c[6]), "t=%lld", NOW_S);                      /* no v1 */
	snprintf(c[7], sizeof(c[7]), "t=%lld,v1=", NOW_S);                  /* empty v1 */
	snprintf(c[8], sizeof(c[8]), "t=%lld;v1=%s", NOW_S, v1);            /* wrong separator */
	for (size_t i = 0; i < NELEM(t); i++) {
		snprintf(hdr, sizeof(hdr), "%s", c[i]);
		cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_BAD_SIGNATURE, "case %zu: %s", i, hdr);
	}
	cr_expect_eq(stripe(NULL, BODY, st_secrets, 1), WH_BAD_SIGNATURE);
	cr_expect_eq(stripe("", BODY, st_secrets, 1), WH_BAD_SIGNATURE);
}

Test(webhook_stripe, too_many_candidates_refused)
{
	char v1[65], hdr[4096];
	int n = snprintf(hdr, sizeof(hdr), "t=%lld", NOW_S);

	stripe_v1("whsec_stripe_test_1", NOW_S, BODY, v1);
	for (int i = 0; i < WEBHOOK_MAX_SIGS; i++)
		n += snprintf(hdr + n, sizeof(hdr) - (size_t)n, ",v1=%064d", 0);
	n += snprintf(hdr + n, sizeof(hdr) - (size_t)n, ",v1=%s", v1);
	cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_BAD_SIGNATURE);
}

Test(webhook_stripe, rotated_secrets)
{
	char v1[65], hdr[256];

	stripe_v1("whsec_stripe_old", NOW_S, BODY, v1);
	snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW_S, v1);
	cr_expect_eq(stripe(hdr, BODY, st_rotated, 2), WH_VALID);
	stripe_v1("whsec_stripe_new", NOW_S, BODY, v1);
	snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW_S, v1);
	cr_expect_eq(stripe(hdr, BODY, st_rotated, 2), WH_VALID);
	/* Stripe's own rotation: both signatures in one header */
	{
		char v1b[65];

		stripe_v1("whsec_stripe_old", NOW_S, BODY, v1b);
		snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s,v1=%s", NOW_S, v1, v1b);
		cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_BAD_SIGNATURE);
		cr_expect_eq(stripe(hdr, BODY, st_rotated + 1, 1), WH_VALID);
	}
}

Test(webhook_stripe, stale_and_future)
{
	static const long long offsets[] = { -301, -3600, -NOW_S, 301, 86400 };
	static const long long fine[] = { -300, -1, 0, 1, 300 };
	char v1[65], hdr[256];

	for (size_t i = 0; i < NELEM(offsets); i++) {
		long long ts = NOW_S + offsets[i];

		stripe_v1("whsec_stripe_test_1", ts, BODY, v1);
		snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", ts, v1);
		cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_STALE, "offset %lld", offsets[i]);
		/* stale is reported only for a valid signature */
		cr_expect_eq(stripe(hdr, BODY, cb_secrets, 1), WH_BAD_SIGNATURE);
	}
	for (size_t i = 0; i < NELEM(fine); i++) {
		long long ts = NOW_S + fine[i];

		stripe_v1("whsec_stripe_test_1", ts, BODY, v1);
		snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", ts, v1);
		cr_expect_eq(stripe(hdr, BODY, st_secrets, 1), WH_VALID, "offset %lld", fine[i]);
	}
}

/* ---------------------------------------------------------------- Standard */

/* The key of the published vector below (whsec_MfKQ9r8G...: 24 bytes);
 * std_setup() writes its whsec_ form with EVP_EncodeBlock. */
static const unsigned char STD_KEY[24] = { 0x31, 0xf2, 0x90, 0xf6, 0xbf, 0x06, 0x29, 0x8a,
					   0xab, 0x4f, 0x08, 0xd4, 0x3c, 0x3f, 0x08, 0x2c,
					   0xf6, 0x48, 0xa3, 0x62, 0xda, 0x2d, 0xa4, 0xb0 };
static char std_secret[64];
static char *std_secrets[1] = { std_secret };

static void std_setup(void)
{
	char b64[40];

	EVP_EncodeBlock((unsigned char *)b64, STD_KEY, sizeof(STD_KEY));
	snprintf(std_secret, sizeof(std_secret), "whsec_%s", b64);
}

static void std_sig(const unsigned char *key, size_t klen, const char *id, long long ts,
		    const char *body, char out[45])
{
	char msg[1024];
	int n = snprintf(msg, sizeof(msg), "%s.%lld.%s", id, ts, body);

	b64_sig(key, klen, msg, (size_t)n, out);
}

static enum wh_verdict standard(const char *id, const char *ts, const char *sig, const char *body,
				char **secrets, size_t n)
{
	return webhook_verify_standard(id, ts, sig, body, strlen(body), secrets, n, NOW_MS);
}

Test(webhook_standard, published_vector)
{
	/* From the Standard Webhooks specification's test suite. */
	static char *secret[] = { (char *)"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" };
	const char *body = "{\"test\": 2432232314}";

	cr_expect_eq(webhook_verify_standard("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
					     "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", body,
					     strlen(body), secret, 1, 1614265330LL * 1000),
		     WH_VALID);
	cr_expect_eq(webhook_verify_standard("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
					     "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", body,
					     strlen(body), secret, 1, NOW_MS),
		     WH_STALE);
}

Test(webhook_standard, valid_and_multiple, .init = std_setup)
{
	char sig[45], other[45], hdr[256], ts[24];

	snprintf(ts, sizeof(ts), "%lld", NOW_S);
	std_sig(STD_KEY, sizeof(STD_KEY), "msg_1", NOW_S, BODY, sig);
	snprintf(hdr, sizeof(hdr), "v1,%s", sig);
	cr_expect_eq(standard("msg_1", ts, hdr, BODY, std_secrets, 1), WH_VALID);

	std_sig((const unsigned char *)"another key", 11, "msg_1", NOW_S, BODY, other);
	snprintf(hdr, sizeof(hdr), "v1,%s v1,%s", other, sig);
	cr_expect_eq(standard("msg_1", ts, hdr, BODY, std_secrets, 1), WH_VALID);
	snprintf(hdr, sizeof(hdr), "v1a,%s  v1,%s", sig, sig);
	cr_expect_eq(standard("msg_1", ts, hdr, BODY, std_secrets, 1), WH_VALID);
	/* only other versions: nothing to check */
	snprintf(hdr, sizeof(hdr), "v1a,%s v2,%s", sig, sig);
	cr_expect_eq(standard("msg_1", ts, hdr, BODY, std_secrets, 1), WH_BAD_SIGNATURE);
	snprintf(hdr, sizeof(hdr), "v1,%s v1,%s", other, other);
	cr_expect_eq(standard("msg_1", ts, hdr, BODY, std_secrets, 1), WH_BAD_SIGNATURE);
}

Test(webhook_standard, tampering, .init = std_setup)
{
	char sig[45], bad[64], hdr[256], ts[24], body[sizeof(BODY)];

	snprintf(ts, sizeof(ts), "%lld", NOW_S);
	std_sig(STD_KEY, sizeof(STD_KEY), "msg_1", NOW_S, BODY, sig);
	snprintf(hdr, sizeof(hdr), "v1,%s", sig);

	memcpy(body, BODY, sizeof(BODY));
	body[sizeof(BODY) - 3] ^= 0x20;
	cr_expect_eq(standard("msg_1", ts, hdr, body, std_secrets, 1), WH_BAD_SIGNATURE);   /* body */
	cr_expect_eq(standard("msg_2", ts, hdr, BODY, std_secrets, 1), WH_BAD_SIGNATURE);   /* id */
	snprintf(ts, sizeof(ts), "%lld", NOW_S + 1);
	cr_expect_eq(standard("msg_1", ts, hdr, BODY, std_secrets, 1), WH_BAD_SIGNATURE);   /* ts */
	snprintf(ts, sizeof(ts), "%lld", NOW_S);
	/* every base64 position, changed to another valid symbol */
	for (size_t i = 0; i < 43; i++) {
		snprintf(bad, sizeof(bad), "v1,%s", sig);
		bad[3 + i] = bad[3 + i] == 'A' ? 'B' : 'A';
		cr_expect_eq(standard("msg_1", ts, bad, BODY, std_secrets, 1), WH_BAD_SIGNATURE,
			     "position %zu", i);
	}
	/* truncated; padding dropped; non-base64; url-safe alphabet; extra symbol */
	snprintf(bad, sizeof(bad), "v1,%.40s", sig);
	cr_expect_eq(standard("msg_1", ts, bad, BODY, std_secrets, 1), WH_BAD_SIGNATURE);
	snprintf(bad, sizeof(bad), "v1,%.43s", sig);
	cr_expect_eq(standard("msg_1", ts, bad, BODY, std_secrets, 1), WH_BAD_SIGNATURE);
	snprintf(bad, sizeof(bad), "v1,%s", sig);
	bad[10] = '*';
	cr_expect_eq(standard("msg_1", ts, bad, BODY, std_secrets, 1), WH_BAD_SIGNATURE);
	snprintf(bad, sizeof(bad), "v1,%.43sA=", sig);
	cr_expect_eq(standard("msg_1", ts, bad, BODY, std_secrets, 1), WH_BAD_SIGNATURE);
	snprintf(bad, sizeof(bad), "v1,%s=", sig);
	cr_expect_eq(standard("msg_1", ts, bad, BODY, std_secrets, 1), WH_BAD_SIGNATURE);
	snprintf(bad, sizeof(bad), "v1:%s", sig);
	cr_expect_eq(standard("msg_1", ts, bad, BODY, std_secrets, 1), WH_BAD_SIGNATURE);
	/* missing headers */
	cr_expect_eq(standard("msg_1", ts, "", BODY, std_secrets, 1), WH_BAD_SIGNATURE);
	cr_expect_eq(webhook_verify_standard(NULL, ts, hdr, BODY, strlen(BODY), std_secrets, 1, NOW_MS),
		     WH_BAD_SIGNATURE);
	cr_expect_eq(webhook_verify_standard("msg_1", NULL, hdr, BODY, strlen(BODY), std_secrets, 1, NOW_MS),
		     WH_BAD_SIGNATURE);
	cr_expect_eq(webhook_verify_standard("msg_1", ts, NULL, BODY, strlen(BODY), std_secrets, 1, NOW_MS),
		     WH_BAD_SIGNATURE);
	/* wrong secret: the raw key bytes used directly, and a different key */
	{
		static char *wrong[] = { (char *)"whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" };

		cr_expect_eq(standard("msg_1", ts, hdr, BODY, wrong, 1), WH_BAD_SIGNATURE);
		cr_expect_eq(standard("msg_1", ts, hdr, BODY, cb_secrets, 1), WH_BAD_SIGNATURE);
	}
}

Test(webhook_standard, malformed_id_and_timestamp, .init = std_setup)
{
	char sig[45], hdr[256], ts[24];

	snprintf(ts, sizeof(ts), "%lld", NOW_S);
	/* Ids may hold any printable ASCII, '.' and inner blanks included (the
	 * scheme allows them); control bytes, non-ASCII, edge blanks never. */
	{
		static const char *const ok[] = { "msg.1", "msg 1", "a.b.c", "evt:1/2?x=y#z~",
						  "1700000000.1700000000" };
		static const char *const bad[] = { " msg", "msg ", "msg\t1", "msg\x01", "msg\x7f",
						   "m\xc3\xa9" };

		for (size_t i = 0; i < NELEM(ok); i++) {
			std_sig(STD_KEY, sizeof(STD_KEY), ok[i], NOW_S, BODY, sig);
			snprintf(hdr, sizeof(hdr), "v1,%s", sig);
			cr_expect_eq(standard(ok[i], ts, hdr, BODY, std_secrets, 1), WH_VALID, "%s", ok[i]);
		}
		for (size_t i = 0; i < NELEM(bad); i++) {
			std_sig(STD_KEY, sizeof(STD_KEY), bad[i], NOW_S, BODY, sig);
			snprintf(hdr, sizeof(hdr), "v1,%s", sig);
			cr_expect_eq(standard(bad[i], ts, hdr, BODY, std_secrets, 1), WH_BAD_SIGNATURE,
				     "case %zu", i);
		}
	}
	/* Why the dot is safe: the signed bytes of id "a.<T>" and ts T are
	 * those of id "a", ts T and the body "<T>.<body>", and that split does
	 * verify; but its body starts with digits, so it is no JSON object and
	 * the dispatcher refuses it (400) before anything is stored. Any split
	 * must move such a "<digits>." into the body (ts is digits only), or
	 * take digits from the body's start, which a JSON object lacks. */
	{
		char id2[64], body2[512];
		json_error_t jerr;
		json_t *j;

		snprintf(id2, sizeof(id2), "a.%lld", NOW_S);
		snprintf(body2, sizeof(body2), "%lld.%s", NOW_S, BODY);
		std_sig(STD_KEY, sizeof(STD_KEY), id2, NOW_S, BODY, sig);
		snprintf(hdr, sizeof(hdr), "v1,%s", sig);
		cr_expect_eq(standard(id2, ts, hdr, BODY, std_secrets, 1), WH_VALID);
		cr_expect_eq(standard("a", ts, hdr, body2, std_secrets, 1), WH_VALID);
		j = json_loadb(body2, strlen(body2), 0, &jerr);
		cr_expect(!json_is_object(j), "the other split's body must not be a JSON object");
		json_decref(j);
	}
	{
		char long_id[WEBHOOK_ID_MAX + 2];

		memset(long_id, 'x', sizeof(long_id) - 1);
		long_id[sizeof(long_id) - 1] = '\0';
		cr_expect(webhook_std_id_valid(long_id, WEBHOOK_ID_MAX));
		cr_expect(!webhook_std_id_valid(long_id, WEBHOOK_ID_MAX + 1));
		cr_expect(!webhook_std_id_valid("", 0));
		cr_expect(!webhook_std_id_valid(NULL, 1));
	}
	std_sig(STD_KEY, sizeof(STD_KEY), "msg_1", NOW_S, BODY, sig);
	snprintf(hdr, sizeof(hdr), "v1,%s", sig);
	cr_expect_eq(standard("", ts, hdr, BODY, std_secrets, 1), WH_BAD_SIGNATURE);
	std_sig(STD_KEY, sizeof(STD_KEY), "msg_1", NOW_S, BODY, sig);
	snprintf(hdr, sizeof(hdr), "v1,%s", sig);
	cr_expect_eq(standard("msg_1", "1700000000.0", hdr, BODY, std_secrets, 1), WH_BAD_SIGNATURE);
	cr_expect_eq(standard("msg_1", "+1700000000", hdr, BODY, std_secrets, 1), WH_BAD_SIGNATURE);
	cr_expect_eq(standard("msg_1", "", hdr, BODY, std_secrets, 1), WH_BAD_SIGNATURE);
}

Test(webhook_standard, stale_and_future, .init = std_setup)
{
	static const long long offsets[] = { -301, -7200, 301, 7200 };
	char sig[45], hdr[256], ts[24];

	for (size_t i = 0; i < NELEM(offsets); i++) {
		long long t = NOW_S + offsets[i];

		snprintf(ts, sizeof(ts), "%lld", t);
		std_sig(STD_KEY, sizeof(STD_KEY), "msg_1", t, BODY, sig);
		snprintf(hdr, sizeof(hdr), "v1,%s", sig);
		cr_expect_eq(standard("msg_1", ts, hdr, BODY, std_secrets, 1), WH_STALE, "offset %lld",
			     offsets[i]);
	}
	snprintf(ts, sizeof(ts), "%lld", NOW_S - 300);
	std_sig(STD_KEY, sizeof(STD_KEY), "msg_1", NOW_S - 300, BODY, sig);
	snprintf(hdr, sizeof(hdr), "v1,%s", sig);
	cr_expect_eq(standard("msg_1", ts, hdr, BODY, std_secrets, 1), WH_VALID);
}

Test(webhook_standard, rotated_and_undecodable_secrets, .init = std_setup)
{
	static const unsigned char k2[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
					      17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 };
	char b64[48], s2[64], sig[45], hdr[256], ts[24];
	char *secrets[3] = { (char *)"whsec_not*base64", std_secret, s2 };

	EVP_EncodeBlock((unsigned char *)b64, k2, sizeof(k2));
	snprintf(s2, sizeof(s2), "%s", b64); /* no whsec_ prefix: accepted too */
	snprintf(ts, sizeof(ts), "%lld", NOW_S);
	std_sig(STD_KEY, sizeof(STD_KEY), "msg_1", NOW_S, BODY, sig);
	snprintf(hdr, sizeof(hdr), "v1,%s", sig);
	cr_expect_eq(standard("msg_1", ts, hdr, BODY, secrets, 3), WH_VALID);
	std_sig(k2, sizeof(k2), "msg_1", NOW_S, BODY, sig);
	snprintf(hdr, sizeof(hdr), "v1,%s", sig);
	cr_expect_eq(standard("msg_1", ts, hdr, BODY, secrets, 3), WH_VALID);
	cr_expect_eq(standard("msg_1", ts, hdr, BODY, secrets, 2), WH_BAD_SIGNATURE);
	/* the whsec_ string itself is not the key */
	b64_sig((const unsigned char *)std_secret, strlen(std_secret), "msg_1.1700000000.", 17, sig);
	snprintf(hdr, sizeof(hdr), "v1,%s", sig);
	cr_expect_eq(standard("msg_1", ts, hdr, "", std_secrets, 1), WH_BAD_SIGNATURE);
}

Test(webhook_standard, secret_decoding)
{
	unsigned char key[WEBHOOK_KEY_MAX];
	size_t n = 0;
	static const char *const bad[] = {
		"whsec_", "", "whsec_a", "whsec_abcde", "whsec_ab=c", "whsec_abc==", "whsec_a===",
		"whsec_ab-_", "whsec_ab c", "whsec_QQ==QQ==", "whsec_QR==", /* non-canonical bits */
	};

	cr_assert_eq(webhook_secret_decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key, &n), ST_OK);
	cr_expect_eq(n, 24);
	cr_expect_eq(key[0], 0x31);
	cr_expect_eq(key[23], 0xb0);
	cr_expect_eq(memcmp(key, STD_KEY, 24), 0);
	cr_assert_eq(webhook_secret_decode("whsec_QQ==", key, &n), ST_OK);
	cr_expect_eq(n, 1);
	cr_expect_eq(key[0], 'A');
	cr_assert_eq(webhook_secret_decode("QQ", key, &n), ST_OK); /* unpadded */
	cr_expect_eq(n, 1);
	cr_assert_eq(webhook_secret_decode("whsec_QUI=", key, &n), ST_OK);
	cr_expect_eq(n, 2);
	cr_expect_eq(memcmp(key, "AB", 2), 0);
	cr_assert_eq(webhook_secret_decode("whsec_QUJD", key, &n), ST_OK);
	cr_expect_eq(n, 3);
	for (size_t i = 0; i < NELEM(bad); i++)
		cr_expect_eq(webhook_secret_decode(bad[i], key, &n), ST_INVALID, "case %s", bad[i]);
	cr_expect_eq(webhook_secret_decode(NULL, key, &n), ST_INVALID);
	{
		/* longer than WEBHOOK_KEY_MAX bytes decoded */
		char big[WEBHOOK_KEY_MAX * 2];

		memset(big, 'A', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		cr_expect_eq(webhook_secret_decode(big, key, &n), ST_INVALID);
	}
}

/* ---------------------------------------------------------------- time */

Test(webhook_time, fresh_boundaries)
{
	cr_expect(webhook_fresh(NOW_MS, NOW_MS));
	cr_expect(webhook_fresh(NOW_MS - WEBHOOK_TOLERANCE_MS, NOW_MS));
	cr_expect(webhook_fresh(NOW_MS + WEBHOOK_TOLERANCE_MS, NOW_MS));
	cr_expect_not(webhook_fresh(NOW_MS - WEBHOOK_TOLERANCE_MS - 1, NOW_MS));
	cr_expect_not(webhook_fresh(NOW_MS + WEBHOOK_TOLERANCE_MS + 1, NOW_MS));
	cr_expect_not(webhook_fresh(INT64_MIN, NOW_MS));
	cr_expect_not(webhook_fresh(INT64_MAX, NOW_MS));
	cr_expect_not(webhook_fresh(0, NOW_MS));
}

Test(webhook_time, rfc3339_good)
{
	static const struct {
		const char *s;
		int64_t ms;
	} t[] = {
		{ "1970-01-01T00:00:00Z", 0 },
		{ "2023-11-14T22:13:20Z", NOW_MS },
		{ "2023-11-14t22:13:20z", NOW_MS },
		{ "2023-11-14T22:13:20.5Z", NOW_MS + 500 },
		{ "2023-11-14T22:13:20.123456789Z", NOW_MS + 123 },
		{ "2023-11-14T23:13:20+01:00", NOW_MS },
		{ "2023-11-14T17:43:20-04:30", NOW_MS },
		{ "2024-02-29T00:00:00Z", 1709164800000LL },
		{ "2000-02-29T12:00:00Z", 951825600000LL },
		{ "1969-12-31T23:59:59Z", -1000 },
		{ "2016-12-31T23:59:60Z", 1483228800000LL },
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		int64_t ms = -1;

		cr_expect_eq(webhook_parse_rfc3339(t[i].s, strlen(t[i].s), &ms), ST_OK, "%s", t[i].s);
		cr_expect_eq(ms, t[i].ms, "%s: got %lld", t[i].s, (long long)ms);
	}
}

Test(webhook_time, rfc3339_bad)
{
	static const char *const t[] = {
		"", "2023-11-14", "2023-11-14T22:13:20", "2023-11-14 22:13:20Z", "2023-11-14T22:13Z",
		"2023-13-14T22:13:20Z", "2023-00-14T22:13:20Z", "2023-11-31T22:13:20Z",
		"2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2023-11-14T24:00:00Z",
		"2023-11-14T22:60:00Z", "2023-11-14T22:13:61Z", "2023-11-14T22:13:20.Z",
		"2023-11-14T22:13:20+0100", "2023-11-14T22:13:20+01", "2023-11-14T22:13:20+24:00",
		"2023-11-14T22:13:20+01:60", "2023-11-14T22:13:20ZZ", "2023-11-14T22:13:20Z ",
		" 2023-11-14T22:13:20Z", "0000-01-01T00:00:00Z", "+2023-11-14T22:13:20Z",
		"2023-1-14T22:13:20Z", "2023-11-14T22:13:20UTC", "1700000000",
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		int64_t ms = 42;

		cr_expect_eq(webhook_parse_rfc3339(t[i], strlen(t[i]), &ms), ST_INVALID, "%s", t[i]);
		cr_expect_eq(ms, 42);
	}
	/* the length counts: a NUL inside is not the end */
	cr_expect_eq(webhook_parse_rfc3339("2023-11-14T22:13:20Z\0x", 22, &(int64_t){ 0 }), ST_INVALID);
}

/* ---------------------------------------------------------------- events */

static json_t *J(const char *s)
{
	json_error_t e;
	json_t *j = json_loads(s, 0, &e);

	cr_assert_not_null(j, "bad test JSON: %s", e.text);
	return j;
}

Test(webhook_event, parse_each_provider)
{
	struct wh_event ev;
	json_t *j;

	j = J("{\"event\":{\"id\":\"e-1\",\"type\":\"charge:confirmed\",\"created_at\":\"2023-11-14T22:13:20Z\"}}");
	cr_assert_eq(webhook_event_parse(WH_COINBASE, j, NULL, &ev, NULL), ST_OK);
	cr_expect_str_eq(ev.id, "e-1");
	cr_expect_str_eq(ev.type, "charge:confirmed");
	cr_expect_eq(ev.created_ms, NOW_MS);
	cr_expect(ev.pays);
	json_decref(j);

	j = J("{\"id\":\"evt_1\",\"type\":\"charge.refunded\",\"created\":1}");
	cr_assert_eq(webhook_event_parse(WH_STRIPE, j, NULL, &ev, NULL), ST_OK);
	cr_expect_str_eq(ev.id, "evt_1");
	cr_expect_not(ev.pays);
	json_decref(j);

	j = J("{\"type\":\"payment.confirmed\",\"data\":{}}");
	cr_assert_eq(webhook_event_parse(WH_STANDARD, j, "msg_9", &ev, NULL), ST_OK);
	cr_expect_str_eq(ev.id, "msg_9");
	cr_expect(ev.pays);
	json_decref(j);
}

Test(webhook_event, parse_rejects)
{
	static const struct {
		enum wh_provider p;
		const char *json;
	} t[] = {
		{ WH_COINBASE, "{\"id\":\"e\",\"type\":\"charge:confirmed\"}" },
		{ WH_COINBASE, "{\"event\":{\"type\":\"charge:confirmed\",\"created_at\":\"2023-11-14T22:13:20Z\"}}" },
		{ WH_COINBASE, "{\"event\":{\"id\":\"e\",\"created_at\":\"2023-11-14T22:13:20Z\"}}" },
		{ WH_COINBASE, "{\"event\":{\"id\":\"e\",\"type\":\"charge:confirmed\"}}" },
		{ WH_COINBASE, "{\"event\":{\"id\":\"e\",\"type\":\"charge:confirmed\",\"created_at\":\"yesterday\"}}" },
		{ WH_COINBASE, "{\"event\":{\"id\":1,\"type\":\"charge:confirmed\",\"created_at\":\"2023-11-14T22:13:20Z\"}}" },
		{ WH_STRIPE, "{\"type\":\"payment_intent.succeeded\"}" },
		{ WH_STRIPE, "{\"id\":\"\",\"type\":\"payment_intent.succeeded\"}" },
		{ WH_STRIPE, "{\"id\":\"evt 1\",\"type\":\"payment_intent.succeeded\"}" },
		{ WH_STRIPE, "{\"id\":\"evt_1\"}" },
		{ WH_STRIPE, "{\"id\":\"evt_1\",\"type\":null}" },
		{ WH_STANDARD, "{\"data\":{}}" },
		{ WH_STANDARD, "[1]" },
	};
	struct buf err = BUF_INIT(256);

	for (size_t i = 0; i < NELEM(t); i++) {
		struct wh_event ev;
		json_t *j = J(t[i].json);

		buf_reset(&err);
		cr_expect_eq(webhook_event_parse(t[i].p, j, "msg_1", &ev, &err), ST_INVALID, "case %zu", i);
		cr_expect_gt(err.len, 0, "case %zu has a reason", i);
		json_decref(j);
	}
	{
		/* Standard: the id comes from the header only */
		struct wh_event ev;
		json_t *j = J("{\"type\":\"payment.confirmed\"}");

		cr_expect_eq(webhook_event_parse(WH_STANDARD, j, NULL, &ev, NULL), ST_INVALID);
		json_decref(j);
	}
	buf_release(&err);
}

Test(webhook_event, paying_types)
{
	cr_expect(webhook_type_pays(WH_COINBASE, "charge:confirmed"));
	cr_expect(webhook_type_pays(WH_STRIPE, "payment_intent.succeeded"));
	cr_expect(webhook_type_pays(WH_STANDARD, "payment.confirmed"));
	cr_expect_not(webhook_type_pays(WH_COINBASE, "payment_intent.succeeded"));
	cr_expect_not(webhook_type_pays(WH_COINBASE, "charge:created"));
	cr_expect_not(webhook_type_pays(WH_STRIPE, NULL));
	cr_expect_str_eq(webhook_provider_str(WH_STANDARD), "standard");
	cr_expect_eq(webhook_provider_parse("stripe"), WH_STRIPE);
	cr_expect_eq(webhook_provider_parse("paypal"), -1);
}

/* ---------------------------------------------------------------- payments */

#define WALLET "0xAbCdEf0123456789abcdef0123456789ABCDEF01"
#define WALLET_LC "0xabcdef0123456789abcdef0123456789abcdef01"

Test(webhook_payment, coinbase_decimal_exact)
{
	static const struct {
		const char *amount;
		int64_t cents;
	} ok[] = { { "12.34", 1234 }, { "12.3", 1230 }, { "12", 1200 }, { "0.01", 1 } };
	static const char *const bad[] = { "12.345", "12.340", "-1", "1e3", "", "0", "0.00", "abc" };
	char json[512];
	struct buf err = BUF_INIT(256);
	struct wh_payment pay;

	for (size_t i = 0; i < NELEM(ok); i++) {
		json_t *j;

		snprintf(json, sizeof(json),
			 "{\"event\":{\"data\":{\"metadata\":{\"wallet\":\"%s\"},"
			 "\"pricing\":{\"local\":{\"amount\":\"%s\",\"currency\":\"USD\"}}}}}",
			 WALLET, ok[i].amount);
		j = J(json);
		cr_expect_eq(webhook_payment_parse(WH_COINBASE, j, "USD", &pay, &err), ST_OK, "%s: %s",
			     ok[i].amount, err.ptr);
		cr_expect_eq(pay.amount, ok[i].cents);
		cr_expect_str_eq(pay.wallet, WALLET_LC);
		json_decref(j);
	}
	for (size_t i = 0; i < NELEM(bad); i++) {
		json_t *j;

		snprintf(json, sizeof(json),
			 "{\"event\":{\"data\":{\"metadata\":{\"wallet\":\"%s\"},"
			 "\"pricing\":{\"local\":{\"amount\":\"%s\",\"currency\":\"USD\"}}}}}",
			 WALLET, bad[i]);
		j = J(json);
		cr_expect_eq(webhook_payment_parse(WH_COINBASE, j, "USD", &pay, &err), ST_INVALID, "%s",
			     bad[i]);
		cr_expect(!strncmp(err.ptr, "invalid_amount:", 15), "%s: %s", bad[i], err.ptr);
		json_decref(j);
	}
	/* the DLQ reason names the cause */
	{
		json_t *j;

		snprintf(json, sizeof(json),
			 "{\"event\":{\"data\":{\"metadata\":{\"wallet\":\"%s\"},"
			 "\"pricing\":{\"local\":{\"amount\":\"12.345\",\"currency\":\"USD\"}}}}}", WALLET);
		j = J(json);
		webhook_payment_parse(WH_COINBASE, j, "USD", &pay, &err);
		cr_expect(strstr(err.ptr, "more decimals") != NULL, "%s", err.ptr);
		json_decref(j);
	}
	buf_release(&err);
}

Test(webhook_payment, currency_and_wallet)
{
	static const char *const bad[] = {
		/* EUR on a USD ledger */
		"{\"event\":{\"data\":{\"metadata\":{\"wallet\":\"" WALLET "\"},\"pricing\":{\"local\":{\"amount\":\"1\",\"currency\":\"EUR\"}}}}}",
		/* no currency */
		"{\"event\":{\"data\":{\"metadata\":{\"wallet\":\"" WALLET "\"},\"pricing\":{\"local\":{\"amount\":\"1\"}}}}}",
		/* bad wallet */
		"{\"event\":{\"data\":{\"metadata\":{\"wallet\":\"0x12\"},\"pricing\":{\"local\":{\"amount\":\"1\",\"currency\":\"USD\"}}}}}",
		/* no metadata */
		"{\"event\":{\"data\":{\"pricing\":{\"local\":{\"amount\":\"1\",\"currency\":\"USD\"}}}}}",
		/* amount as a number */
		"{\"event\":{\"data\":{\"metadata\":{\"wallet\":\"" WALLET "\"},\"pricing\":{\"local\":{\"amount\":12.34,\"currency\":\"USD\"}}}}}",
	};
	struct wh_payment pay;

	for (size_t i = 0; i < NELEM(bad); i++) {
		json_t *j = J(bad[i]);

		cr_expect_eq(webhook_payment_parse(WH_COINBASE, j, "USD", &pay, NULL), ST_INVALID, "case %zu", i);
		json_decref(j);
	}
	{
		json_t *j = J("{\"type\":\"payment.confirmed\",\"data\":{\"wallet\":\"" WALLET
			      "\",\"amount\":\"1234\",\"asset\":\"USD\"}}");

		cr_expect_eq(webhook_payment_parse(WH_STANDARD, j, "JPYX", &pay, NULL), ST_INVALID);
		cr_expect_eq(webhook_payment_parse(WH_STANDARD, j, "USD", &pay, NULL), ST_OK);
		cr_expect_eq(pay.amount, 1234);
		json_decref(j);
	}
}

Test(webhook_payment, stripe_and_standard)
{
	static const struct {
		enum wh_provider p;
		const char *json;
		int64_t want; /* 0: invalid */
	} t[] = {
		{ WH_STRIPE, "{\"data\":{\"object\":{\"amount\":1234,\"currency\":\"usd\",\"metadata\":{\"wallet\":\"" WALLET "\"}}}}", 1234 },
		{ WH_STRIPE, "{\"data\":{\"object\":{\"amount\":1234,\"currency\":\"USD\",\"metadata\":{\"wallet\":\"" WALLET "\"}}}}", 1234 },
		{ WH_STRIPE, "{\"data\":{\"object\":{\"amount\":12.34,\"currency\":\"usd\",\"metadata\":{\"wallet\":\"" WALLET "\"}}}}", 0 },
		{ WH_STRIPE, "{\"data\":{\"object\":{\"amount\":\"1234\",\"currency\":\"usd\",\"metadata\":{\"wallet\":\"" WALLET "\"}}}}", 0 },
		{ WH_STRIPE, "{\"data\":{\"object\":{\"amount\":0,\"currency\":\"usd\",\"metadata\":{\"wallet\":\"" WALLET "\"}}}}", 0 },
		{ WH_STRIPE, "{\"data\":{\"object\":{\"amount\":-5,\"currency\":\"usd\",\"metadata\":{\"wallet\":\"" WALLET "\"}}}}", 0 },
		{ WH_STRIPE, "{\"data\":{\"object\":{\"amount\":5,\"currency\":\"eur\",\"metadata\":{\"wallet\":\"" WALLET "\"}}}}", 0 },
		{ WH_STRIPE, "{\"data\":{\"object\":{\"amount\":5,\"currency\":\"usd\"}}}", 0 },
		/* partial capture: amount_received is what was paid, not amount */
		{ WH_STRIPE, "{\"data\":{\"object\":{\"amount\":1234,\"amount_received\":1000,\"currency\":\"usd\",\"metadata\":{\"wallet\":\"" WALLET "\"}}}}", 1000 },
		{ WH_STRIPE, "{\"data\":{\"object\":{\"amount_received\":77,\"currency\":\"usd\",\"metadata\":{\"wallet\":\"" WALLET "\"}}}}", 77 },
		/* 0 received: nothing to credit, and no fall back to amount */
		{ WH_STRIPE, "{\"data\":{\"object\":{\"amount\":1234,\"amount_received\":0,\"currency\":\"usd\",\"metadata\":{\"wallet\":\"" WALLET "\"}}}}", 0 },
		{ WH_STRIPE, "{\"data\":{\"object\":{\"amount\":1234,\"amount_received\":null,\"currency\":\"usd\",\"metadata\":{\"wallet\":\"" WALLET "\"}}}}", 0 },
		{ WH_STRIPE, "{\"data\":{\"object\":{\"amount\":1234,\"amount_received\":\"1000\",\"currency\":\"usd\",\"metadata\":{\"wallet\":\"" WALLET "\"}}}}", 0 },
		{ WH_STRIPE, "{\"data\":{\"object\":{\"amount\":1234,\"amount_received\":-1,\"currency\":\"usd\",\"metadata\":{\"wallet\":\"" WALLET "\"}}}}", 0 },
		{ WH_STANDARD, "{\"data\":{\"wallet\":\"" WALLET "\",\"amount\":\"9223372036854775807\",\"asset\":\"usd\"}}", INT64_MAX },
		{ WH_STANDARD, "{\"data\":{\"wallet\":\"" WALLET "\",\"amount\":\"9223372036854775808\",\"asset\":\"USD\"}}", 0 },
		{ WH_STANDARD, "{\"data\":{\"wallet\":\"" WALLET "\",\"amount\":\"12.34\",\"asset\":\"USD\"}}", 0 },
		{ WH_STANDARD, "{\"data\":{\"wallet\":\"" WALLET "\",\"amount\":1234,\"asset\":\"USD\"}}", 0 },
		{ WH_STANDARD, "{\"data\":{\"wallet\":\"" WALLET "\",\"amount\":\"1234\"}}", 0 },
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		struct wh_payment pay = { .amount = -1 };
		json_t *j = J(t[i].json);
		enum st_rc rc = webhook_payment_parse(t[i].p, j, "USD", &pay, NULL);

		if (t[i].want) {
			cr_expect_eq(rc, ST_OK, "case %zu", i);
			cr_expect_eq(pay.amount, t[i].want, "case %zu", i);
			cr_expect_str_eq(pay.wallet, WALLET_LC);
		} else {
			cr_expect_eq(rc, ST_INVALID, "case %zu", i);
			cr_expect_eq(pay.amount, -1, "case %zu: out untouched", i);
		}
		json_decref(j);
	}
}

/* ---------------------------------------------------------------- commission */

Test(webhook_commission, floor_and_conservation)
{
	static const struct {
		int64_t amount, bps, want;
	} t[] = {
		{ 1234, 1000, 123 },   /* 123.4 -> 123 */
		{ 1239, 1000, 123 },   /* 123.9 -> 123: floor, not round */
		{ 9, 1000, 0 },        /* 0.9 -> 0 */
		{ 10, 1000, 1 },
		{ 1, 10000, 1 },
		{ 12345, 0, 0 },
		{ 3333, 3333, 1110 },  /* 1110.8889 */
		{ 0, 1000, 0 },
		{ INT64_MAX, 10000, INT64_MAX },
		{ INT64_MAX, 1000, 922337203685477580LL },
		{ INT64_MAX, 9999, 9222449699651090329LL },
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		int64_t c = -1;

		cr_expect_eq(webhook_commission(t[i].amount, t[i].bps, &c), ST_OK, "case %zu", i);
		cr_expect_eq(c, t[i].want, "case %zu: %lld * %lld: got %lld", i, (long long)t[i].amount,
			     (long long)t[i].bps, (long long)c);
		/* floor: c * 10000 <= amount * bps < (c + 1) * 10000 */
		cr_expect((__int128)c * 10000 <= (__int128)t[i].amount * t[i].bps);
		cr_expect(((__int128)c + 1) * 10000 > (__int128)t[i].amount * t[i].bps);
		cr_expect_leq(c, t[i].amount);
	}
	cr_expect_eq(webhook_commission(-1, 1000, &(int64_t){ 0 }), ST_INVALID);
	cr_expect_eq(webhook_commission(100, -1, &(int64_t){ 0 }), ST_INVALID);
	cr_expect_eq(webhook_commission(100, 10001, &(int64_t){ 0 }), ST_INVALID);
}

Test(webhook_payment, asset_decimals)
{
	cr_expect_eq(webhook_asset_decimals("USD"), 2);
	cr_expect_eq(webhook_asset_decimals("usd"), 2);
	cr_expect_eq(webhook_asset_decimals("JPY"), 0);
	cr_expect_eq(webhook_asset_decimals("XYZ"), -1);
	cr_expect_eq(webhook_asset_decimals(NULL), -1);
}

/* A payment may name a client's account instead of a wallet (SPEC 13). */
Test(webhook_payment, client_account_instead_of_a_wallet)
{
	static const char *const good[] = { "key_0123456789abcdef01234567/shop:42:credits", "k/a",
					    "key_x/A.b_c-d:1" };
	static const char *const bad[] = { "shop:42:credits", "/shop", "key_x/", "key_x/treasury",
					   "key x/shop", "key_x/0xabc", "key_x/a/b", "key-x/shop",
					   "key_x/sp ace" };
	char json[512];
	struct buf err = BUF_INIT(256);
	struct wh_payment pay;
	json_t *j;

	for (size_t i = 0; i < NELEM(good); i++) {
		snprintf(json, sizeof(json),
			 "{\"data\":{\"object\":{\"metadata\":{\"account\":\"%s\"},\"amount_received\":500,"
			 "\"currency\":\"usd\"}}}",
			 good[i]);
		j = J(json);
		cr_expect_eq(webhook_payment_parse(WH_STRIPE, j, "USD", &pay, &err), ST_OK, "%s: %s", good[i],
			     err.ptr);
		cr_expect_str_eq(pay.account, good[i]);
		cr_expect_str_eq(pay.wallet, "");
		cr_expect_eq(pay.amount, 500);
		json_decref(j);
	}
	for (size_t i = 0; i < NELEM(bad); i++) {
		snprintf(json, sizeof(json),
			 "{\"data\":{\"account\":\"%s\",\"amount\":\"5\",\"asset\":\"USD\"}}", bad[i]);
		j = J(json);
		cr_expect_eq(webhook_payment_parse(WH_STANDARD, j, "USD", &pay, &err), ST_INVALID, "%s", bad[i]);
		cr_expect(!strncmp(err.ptr, "invalid_account:", 16), "%s: %s", bad[i], err.ptr);
		json_decref(j);
	}
	/* Both a wallet and an account: which one was meant? Refused. */
	snprintf(json, sizeof(json),
		 "{\"event\":{\"data\":{\"metadata\":{\"wallet\":\"%s\",\"account\":\"k/a\"},"
		 "\"pricing\":{\"local\":{\"amount\":\"1\",\"currency\":\"USD\"}}}}}",
		 WALLET);
	j = J(json);
	cr_expect_eq(webhook_payment_parse(WH_COINBASE, j, "USD", &pay, &err), ST_INVALID);
	cr_expect(!strncmp(err.ptr, "invalid_account:", 16), "%s", err.ptr);
	json_decref(j);
	buf_release(&err);
}

/* ---------------------------------------------------------------- pre-keyed states */

#include <pthread.h>

#include "config.h"

/* Secrets of lengths around SHA-256's 64-byte block (longer keys are
 * hashed first), and bodies around it too. */
static const size_t KEY_LENS[] = { 1, 13, 32, 63, 64, 65, 100, 200 };
static const size_t BODY_LENS[] = { 0, 1, 55, 56, 64, 65, 1000, 5000 };
static char big_body[5000];

static void fill(char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (char)(0x21 + (seed * 31 + i * 7) % 94);
}

static void keys_setup(void)
{
	fill(big_body, sizeof(big_body), 5);
}

Test(webhook_keys, prekeyed_gives_the_one_shot_mac, .init = keys_setup)
{
	char secret[201], hex[65];
	unsigned char kb[200];
	char whsec[6 + 272], sig[WEBHOOK_STD_SIG_MAX], expect[45];

	for (size_t k = 0; k < NELEM(KEY_LENS); k++) {
		char *one[] = { secret };
		struct wh_keys keys;

		fill(secret, KEY_LENS[k], (unsigned)k);
		secret[KEY_LENS[k]] = '\0';
		cr_assert_eq(webhook_keys_init(&keys, WH_COINBASE, one, 1), ST_OK);
		cr_assert_eq(keys.n, 1);
		for (size_t b = 0; b < NELEM(BODY_LENS); b++) {
			size_t n = BODY_LENS[b];

			hex_sig(secret, big_body, n, hex, false);
			/* The same verdict keyed once and reused, and keyed per call. */
			cr_expect_eq(webhook_verify_coinbase_keyed(hex, big_body, n, &keys), WH_VALID,
				     "key %zu body %zu", KEY_LENS[k], n);
			cr_expect_eq(webhook_verify_coinbase(hex, big_body, n, one, 1), WH_VALID);
			hex[10] = hex[10] == '0' ? '1' : '0';
			cr_expect_eq(webhook_verify_coinbase_keyed(hex, big_body, n, &keys),
				     WH_BAD_SIGNATURE);
			cr_expect_eq(webhook_verify_coinbase(hex, big_body, n, one, 1), WH_BAD_SIGNATURE);
		}
		webhook_keys_release(&keys);
		cr_expect_eq(keys.n, 0);

		/* Standard: the key is the decoded whsec_ bytes. */
		for (size_t i = 0; i < KEY_LENS[k]; i++)
			kb[i] = (unsigned char)(k * 17 + i * 13);
		memcpy(whsec, "whsec_", 6);
		EVP_EncodeBlock((unsigned char *)whsec + 6, kb, (int)KEY_LENS[k]);
		one[0] = whsec;
		cr_assert_eq(webhook_keys_init(&keys, WH_STANDARD, one, 1), ST_OK);
		cr_assert_eq(keys.n, 1);
		for (size_t b = 0; b < NELEM(BODY_LENS); b++) {
			size_t n = BODY_LENS[b];
			char msg[6000];
			int m = snprintf(msg, sizeof(msg), "msg_1.%lld.", NOW_S);

			memcpy(msg + m, big_body, n);
			b64_sig(kb, KEY_LENS[k], msg, (size_t)m + n, expect);
			cr_assert_eq(webhook_sign_standard(whsec, "msg_1", NOW_S, big_body, n, sig), ST_OK);
			cr_expect_str_eq(sig + 3, expect, "key %zu body %zu", KEY_LENS[k], n);
			cr_expect_eq(webhook_verify_standard_keyed("msg_1", "1700000000", sig, big_body, n,
								   &keys, NOW_MS),
				     WH_VALID, "key %zu body %zu", KEY_LENS[k], n);
			cr_expect_eq(webhook_verify_standard_keyed("msg_2", "1700000000", sig, big_body, n,
								   &keys, NOW_MS),
				     WH_BAD_SIGNATURE);
		}
		webhook_keys_release(&keys);
	}
}

Test(webhook_keys, rotated_and_unusable_secrets)
{
	char *st[] = { (char *)"whsec_stripe_old", NULL, (char *)"", (char *)"whsec_stripe_new" };
	char *std[] = { (char *)"whsec_!!notbase64", (char *)"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" };
	struct wh_keys keys;
	char hdr[200], v1[65], msg[200];
	int n;

	cr_assert_eq(webhook_keys_init(&keys, WH_STRIPE, st, NELEM(st)), ST_OK);
	cr_expect_eq(keys.n, 2); /* NULL and "" skipped */
	for (size_t i = 0; i < NELEM(st); i += 3) {
		n = snprintf(msg, sizeof(msg), "%lld.%s", NOW_S, BODY);
		hex_sig(st[i], msg, (size_t)n, v1, false);
		snprintf(hdr, sizeof(hdr), "t=%lld,v1=%s", NOW_S, v1);
		cr_expect_eq(webhook_verify_stripe_keyed(hdr, BODY, strlen(BODY), &keys, NOW_MS, NULL),
			     WH_VALID, "secret %zu", i);
	}
	webhook_keys_release(&keys);

	cr_assert_eq(webhook_keys_init(&keys, WH_STANDARD, std, NELEM(std)), ST_OK);
	cr_expect_eq(keys.n, 1); /* the undecodable one is left out */
	{
		const char *body = "{\"test\": 2432232314}";

		cr_expect_eq(webhook_verify_standard_keyed("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
							   "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
							   body, strlen(body), &keys, 1614265330LL * 1000),
			     WH_VALID);
	}
	webhook_keys_release(&keys);

	cr_assert_eq(webhook_keys_init(&keys, WH_COINBASE, S, 0), ST_OK);
	cr_expect_eq(keys.n, 0);
	cr_expect_eq(webhook_verify_coinbase_keyed("00", BODY, strlen(BODY), &keys), WH_BAD_SIGNATURE);
}

Test(webhook_keys, keyring_from_the_config)
{
	static struct config cfg;
	struct wh_keyring *r;

	cfg.webhook_secrets[0] = (char *)"cb-old";
	cfg.webhook_secrets[1] = (char *)"cb-new";
	cfg.n_webhook_secrets = 2;
	cfg.stripe_secrets[0] = (char *)"whsec_s";
	cfg.n_stripe_secrets = 1;
	cfg.n_standard_secrets = 0;
	r = webhook_keyring_new(&cfg);
	cr_assert_not_null(r);
	cr_expect_eq(r->p[WH_COINBASE].n, 2);
	cr_expect_eq(r->p[WH_STRIPE].n, 1);
	cr_expect_eq(r->p[WH_STANDARD].n, 0);
	webhook_keyring_free(r);
	webhook_keyring_free(NULL);
}

/* Many threads verify against one shared keyed set at once: each works on
 * its own copy of the state, so every verdict is the single-threaded one.
 * The expected signatures are made first, so the threads do nothing but
 * verify (a shared state written by two threads at once shows). */
#define VT_THREADS 8
#define VT_ROUNDS 2000

static struct wh_keys vt_keys;
static char *vt_secrets[] = { (char *)"rot-a", (char *)"rot-b-0123456789-0123456789-0123456789-0123456789-0123456789-xyz",
			      (char *)"rot-c" };
static char vt_sig[NELEM(vt_secrets)][NELEM(BODY_LENS)][65];

static void *vt_run(void *arg)
{
	unsigned t = (unsigned)(uintptr_t)arg;
	size_t wrong = 0;

	for (unsigned i = 0; i < VT_ROUNDS; i++) {
		size_t b = (t + i) % NELEM(BODY_LENS), k = (t * 7 + i) % NELEM(vt_secrets);
		bool tamper = (i + t) % 3 == 0;
		char hex[65];

		memcpy(hex, vt_sig[k][b], sizeof(hex));
		if (tamper)
			hex[0] = hex[0] == 'a' ? 'b' : 'a';
		if (webhook_verify_coinbase_keyed(hex, big_body, BODY_LENS[b], &vt_keys) !=
		    (tamper ? WH_BAD_SIGNATURE : WH_VALID))
			wrong++;
	}
	return (void *)(uintptr_t)wrong;
}

Test(webhook_keys, concurrent_verification_shares_the_keyed_states, .init = keys_setup)
{
	pthread_t th[VT_THREADS];
	size_t wrong = 0;

	for (size_t k = 0; k < NELEM(vt_secrets); k++)
		for (size_t b = 0; b < NELEM(BODY_LENS); b++)
			hex_sig(vt_secrets[k], big_body, BODY_LENS[b], vt_sig[k][b], false);
	cr_assert_eq(webhook_keys_init(&vt_keys, WH_COINBASE, vt_secrets, NELEM(vt_secrets)), ST_OK);
	for (uintptr_t i = 0; i < VT_THREADS; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, vt_run, (void *)i), 0);
	for (int i = 0; i < VT_THREADS; i++) {
		void *w = NULL;

		pthread_join(th[i], &w);
		wrong += (size_t)(uintptr_t)w;
	}
	webhook_keys_release(&vt_keys);
	cr_expect_eq(wrong, 0, "%zu wrong verdicts", wrong);
}

/* ---- the job's payload: intake's form scanned, anything else by jansson */

static void payload_agrees(const char *payload)
{
	struct wh_job_payload a, b;
	bool ra, rb;

	memset(&a, 0x5a, sizeof(a));
	memset(&b, 0xa5, sizeof(b));
	ra = webhook_job_payload_parse(payload, &a);
	rb = webhook_job_payload_parse_json(payload, &b);
	cr_assert_eq(ra, rb, "valid differs for %s", payload);
	if (!ra)
		return;
	cr_assert_eq(a.p, b.p, "%s", payload);
	cr_assert_str_eq(a.event_id, b.event_id, "%s", payload);
	cr_assert_eq(a.have_pay, b.have_pay, "have_pay differs for %s", payload);
	cr_assert_str_eq(a.pay.wallet, b.pay.wallet, "%s", payload);
	cr_assert_str_eq(a.pay.account, b.pay.account, "%s", payload);
	cr_assert_eq(a.pay.amount, b.pay.amount, "%s", payload);
}

/* intake's payload for the event id, the payment (NULL: none) */
static void intake_payload(const char *id, const struct wh_payment *pay, enum wh_provider p,
			   char out[WH_JOB_PAYLOAD_MAX])
{
	struct wh_intake in;
	struct wh_event ev = { .pays = true };

	snprintf(ev.id, sizeof(ev.id), "%s", id);
	snprintf(ev.type, sizeof(ev.type), "payment.succeeded");
	cr_assert_eq(webhook_intake_prepare(&in, p, &ev, pay, "{}", 2, NULL), ST_OK, "%s", id);
	memcpy(out, in.job_payload, WH_JOB_PAYLOAD_MAX);
}

Test(webhook_job_payload, intake_forms_read_as_jansson_reads_them)
{
	static const char *const ids[] = { "evt_1", "msg_2VkXn8T0ZxA", "a\"b", "back\\slash",
					   "x", "~!#$%&'()*+,-./:;<=>?@[]^_`{|}" };
	static const int64_t amounts[] = { 1, 9, 10, 999999, 123456789012345678LL,
					   999999999999999999LL, 1000000000000000000LL, INT64_MAX };
	struct wh_payment pay;
	char payload[WH_JOB_PAYLOAD_MAX];
	struct wh_job_payload out;

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		for (int p = 0; p < WH_PROVIDER_COUNT; p++) {
			intake_payload(ids[i], NULL, (enum wh_provider)p, payload);
			payload_agrees(payload);
			for (size_t k = 0; k < sizeof(amounts) / sizeof(amounts[0]); k++) {
				memset(&pay, 0, sizeof(pay));
				pay.amount = amounts[k];
				snprintf(pay.wallet, sizeof(pay.wallet), "0x%040d", (int)k);
				intake_payload(ids[i], &pay, (enum wh_provider)p, payload);
				payload_agrees(payload);
				memset(&pay, 0, sizeof(pay));
				pay.amount = amounts[k];
				snprintf(pay.account, sizeof(pay.account), "cli_%zu/shop \"credits\" é", k);
				intake_payload(ids[i], &pay, (enum wh_provider)p, payload);
				payload_agrees(payload);
			}
		}
	/* The common one is read, with its payment. */
	memset(&pay, 0, sizeof(pay));
	pay.amount = 2500;
	snprintf(pay.wallet, sizeof(pay.wallet), "0x%040d", 7);
	intake_payload("msg_abc", &pay, WH_STANDARD, payload);
	cr_assert(webhook_job_payload_parse(payload, &out));
	cr_assert(out.have_pay);
	cr_assert_eq(out.pay.amount, 2500);
	cr_assert_str_eq(out.pay.wallet, pay.wallet);
	cr_assert_str_eq(out.event_id, "msg_abc");
	cr_assert_eq(out.p, WH_STANDARD);
}

/* Every truncation of intake's payloads, and every byte of them replaced
 * by characters the scanner must stop at: the two readings agree (the
 * scanner either reads the same or leaves the payload to jansson). */
Test(webhook_job_payload, damaged_payloads_read_as_jansson_reads_them)
{
	static const char subst[] = { '"', '\\', ',', '}', '{', ':', '0', '9', '-', ' ', 'x', '\n',
				      '\0' };
	struct wh_payment w = { .amount = 4200 }, a = { .amount = 77 };
	char forms[3][WH_JOB_PAYLOAD_MAX], buf[WH_JOB_PAYLOAD_MAX];
	static const char *const extra[] = {
		"{\"event_id\":\"e1\",\"provider\":\"standard\"}",
		"{\"amount\":0,\"event_id\":\"e1\",\"provider\":\"standard\",\"wallet\":\"0xab\"}",
		"{\"amount\":-5,\"event_id\":\"e1\",\"provider\":\"standard\",\"wallet\":\"0xab\"}",
		"{\"amount\":9999999999999999999,\"event_id\":\"e1\",\"provider\":\"standard\",\"wallet\":\"0xab\"}",
		"{\"amount\":012,\"event_id\":\"e1\",\"provider\":\"standard\",\"wallet\":\"0xab\"}",
		"{\"amount\":5,\"event_id\":\"e1\",\"provider\":\"standard\",\"wallet\":\"\"}",
		"{\"account\":\"c/x\",\"amount\":5,\"event_id\":\"e1\",\"provider\":\"stripe\",\"wallet\":\"0xab\"}",
		"{\"amount\":5,\"event_id\":\"e1\",\"provider\":\"nobody\",\"wallet\":\"0xab\"}",
		"{\"amount\":5,\"event_id\":\" e1\",\"provider\":\"stripe\",\"wallet\":\"0xab\"}",
		"{\"amount\":5,\"event_id\":\"\",\"provider\":\"stripe\",\"wallet\":\"0xab\"}",
		"{\"provider\":\"stripe\",\"event_id\":\"e1\",\"amount\":5,\"wallet\":\"0xab\"}",
		"{\"amount\":5,\"event_id\":\"e1\",\"provider\":\"stripe\",\"wallet\":\"0xab\"} ",
		"{\"amount\":5,\"event_id\":\"e1\",\"provider\":\"stripe\",\"wallet\":\"0xab\",\"wallet\":\"0xcd\"}",
		"",
	};

	snprintf(w.wallet, sizeof(w.wallet), "0x%040d", 1);
	snprintf(a.account, sizeof(a.account), "cli_1/credits");
	intake_payload("evt_42", &w, WH_STRIPE, forms[0]);
	intake_payload("evt_43", &a, WH_COINBASE, forms[1]);
	intake_payload("evt_44", NULL, WH_STANDARD, forms[2]);
	for (int f = 0; f < 3; f++) {
		size_t len = strlen(forms[f]);

		for (size_t cut = 0; cut <= len; cut++) {
			memcpy(buf, forms[f], cut);
			buf[cut] = '\0';
			payload_agrees(buf);
		}
		for (size_t i = 0; i < len; i++)
			for (size_t k = 0; k < sizeof(subst); k++) {
				memcpy(buf, forms[f], len + 1);
				buf[i] = subst[k];
				payload_agrees(buf);
			}
	}
	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++)
		payload_agrees(extra[i]);
}

/* intake's payload is, byte for byte, jansson's compact sorted dump of the
 * same members: ids and accounts with quotes, backslashes, every printable
 * byte and UTF-8 escaped as jansson escapes them, the amount as an integer
 * (the payload the job reads is the JSON the queue stores and shows). */
static void payload_is_jansson_dump(const char *id, const struct wh_payment *pay,
				    enum wh_provider p)
{
	char payload[WH_JOB_PAYLOAD_MAX];
	json_t *o = json_object();
	char *want;

	intake_payload(id, pay, p, payload);
	if (pay && pay->account[0])
		json_object_set_new(o, "account", json_string(pay->account));
	if (pay)
		json_object_set_new(o, "amount", json_integer(pay->amount));
	json_object_set_new(o, "event_id", json_string(id));
	json_object_set_new(o, "provider", json_string(webhook_provider_str(p)));
	if (pay && !pay->account[0])
		json_object_set_new(o, "wallet", json_string(pay->wallet));
	want = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	cr_assert_not_null(want);
	cr_expect_str_eq(payload, want, "id %s", id);
	free(want);
	json_decref(o);
}

Test(webhook_job_payload, intake_payload_is_jansson_compact_sorted)
{
	static const char *const ids[] = { "evt_1", "a\"b", "back\\slash", "\"\\\"\\",
					   "~!#$%&'()*+,-./:;<=>?@[]^_`{|}", "sp ace" };
	char all[0x7f - 0x20 + 1], wide[WEBHOOK_ID_MAX + 1];
	struct wh_payment pay;

	for (int c = 0x20; c < 0x7f; c++)
		all[c - 0x20] = (char)c;
	all[sizeof(all) - 1] = '\0';
	memset(wide, '"', WEBHOOK_ID_MAX); /* the longest id, every byte escaped */
	wide[WEBHOOK_ID_MAX] = '\0';
	for (int p = 0; p < WH_PROVIDER_COUNT; p++) {
		for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
			payload_is_jansson_dump(ids[i], NULL, (enum wh_provider)p);
			memset(&pay, 0, sizeof(pay));
			pay.amount = INT64_MAX;
			snprintf(pay.wallet, sizeof(pay.wallet), "0x%040d", (int)i);
			payload_is_jansson_dump(ids[i], &pay, (enum wh_provider)p);
			memset(&pay, 0, sizeof(pay));
			pay.amount = 1;
			snprintf(pay.account, sizeof(pay.account), "cli_%zu/shop \"cr\\edits\" é", i);
			payload_is_jansson_dump(ids[i], &pay, (enum wh_provider)p);
		}
		payload_is_jansson_dump(all, NULL, (enum wh_provider)p);
		payload_is_jansson_dump(wide, NULL, (enum wh_provider)p);
	}
}

/* The job's unique key is "<provider>:<event id>", the id as it is. */
Test(webhook_job_payload, job_key_is_provider_and_id)
{
	struct wh_intake in;
	struct wh_event ev = { .pays = true };

	snprintf(ev.id, sizeof(ev.id), "%s", "a\"b:c");
	cr_assert_eq(webhook_intake_prepare(&in, WH_STRIPE, &ev, NULL, "{}", 2, NULL), ST_OK);
	cr_expect_str_eq(in.job_key, "stripe:a\"b:c");
	memset(ev.id, 'x', WEBHOOK_ID_MAX);
	ev.id[WEBHOOK_ID_MAX] = '\0';
	cr_assert_eq(webhook_intake_prepare(&in, WH_STANDARD, &ev, NULL, "{}", 2, NULL), ST_OK);
	cr_expect_eq(strlen(in.job_key), strlen("standard:") + WEBHOOK_ID_MAX);
	cr_expect_eq(strncmp(in.job_key, "standard:xxx", 12), 0);
}

/* The credited line, made without printf, is the printf form it replaced. */
Test(webhook_job_log, credited_message_is_the_printf_form)
{
	static const char *const ids[] = { "evt_1", "a\"b%s%d", "" };
	static const int64_t amounts[] = { 1, 1234, INT64_MAX };
	static const int64_t commissions[] = { 0, 123, INT64_MAX };
	char long_id[WEBHOOK_ID_MAX + 1], msg[WH_CREDITED_MSG_MAX], want[2048];
	const char *payees[] = { "0x00000000000000000000000000000000000000aa",
				 "key_abc/shop \"credits\" é" };
	const char *refs[] = { NULL, "", "0x00000000000000000000000000000000000000bb" };

	memset(long_id, '%', WEBHOOK_ID_MAX);
	long_id[WEBHOOK_ID_MAX] = '\0';
	for (int p = 0; p < WH_PROVIDER_COUNT; p++)
		for (size_t i = 0; i < 4; i++)
			for (size_t a = 0; a < 3; a++)
				for (size_t c = 0; c < 3; c++)
					for (size_t y = 0; y < 2; y++)
						for (size_t r = 0; r < 3; r++) {
							const char *id = i < 3 ? ids[i] : long_id;

							snprintf(want, sizeof(want),
								 "webhook %s:%s credited %lld to %s "
								 "(commission %lld to %s) in %s",
								 webhook_provider_str((enum wh_provider)p),
								 id, (long long)amounts[a], payees[y],
								 (long long)commissions[c],
								 refs[r] && refs[r][0] ? refs[r] : "nobody",
								 "ltx_01a2513078262466516a1247");
							cr_assert(webhook_credited_msg(
								msg, sizeof(msg), (enum wh_provider)p, id,
								amounts[a], payees[y], commissions[c], refs[r],
								"ltx_01a2513078262466516a1247"));
							cr_assert_str_eq(msg, want);
						}
	/* Too small: false, never past cap. */
	memset(msg, 'z', sizeof(msg));
	cr_assert_not(webhook_credited_msg(msg, 20, WH_STRIPE, "evt_1", 5, payees[0], 0, NULL, "t"));
	cr_assert_eq(msg[20], 'z');
	cr_assert_lt(strlen(msg), 20);
	cr_assert_not(webhook_credited_msg(msg, 0, WH_STRIPE, "evt_1", 5, payees[0], 0, NULL, "t"));
}

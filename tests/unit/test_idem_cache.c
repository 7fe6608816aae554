/* test_idem_cache.c — the bounded cache of finished idempotency records:
 * hits copy the record, fingerprints are compared, expiry (less the skew
 * margin) drops an entry, and both bounds (entries, bytes) hold. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "idempotency.h"

#include "banned.h"

#define NOW INT64_C(1700000000000)
#define FP_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define FP_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static struct idem_record rec(int status, const char *body, const char *loc, int64_t expires_at)
{
	struct idem_record r = { .status = status, .body = (char *)body, .body_len = strlen(body),
				 .location = (char *)loc, .expires_at = expires_at };

	memcpy(r.fingerprint, FP_A, sizeof(r.fingerprint));
	return r;
}

Test(idem_cache, hit_is_a_byte_for_byte_copy_with_the_fingerprint_compared)
{
	struct idem *ix = idem_new();
	struct idem_record in = rec(201, "{\"id\":\"x\"}", "/api/x", NOW + 60000), out;

	cr_assert_eq(idem_cache_get(ix, "anon POST /api/register", "k1", FP_A, NOW, &out),
		     ST_NOT_FOUND);
	idem_cache_put(ix, "anon POST /api/register", "k1", &in, NOW);
	cr_assert_eq(idem_cache_get(ix, "anon POST /api/register", "k1", FP_A, NOW, &out), ST_OK);
	cr_assert_eq(out.status, 201);
	cr_assert_eq(out.body_len, in.body_len);
	cr_assert_eq(memcmp(out.body, in.body, in.body_len), 0);
	cr_assert_str_eq(out.location, "/api/x");
	cr_assert(out.same_fingerprint);
	idem_record_release(&out);
	/* Same key, another request: found, and told apart (422 upstream). */
	cr_assert_eq(idem_cache_get(ix, "anon POST /api/register", "k1", FP_B, NOW, &out), ST_OK);
	cr_assert(!out.same_fingerprint);
	idem_record_release(&out);
	/* The scope is part of the identity: same key, other path or client. */
	cr_assert_eq(idem_cache_get(ix, "anon POST /api/other", "k1", FP_A, NOW, &out), ST_NOT_FOUND);
	cr_assert_eq(idem_cache_get(ix, "c2 POST /api/register", "k1", FP_A, NOW, &out), ST_NOT_FOUND);
	idem_free(ix);
}

Test(idem_cache, expired_entries_are_never_served)
{
	struct idem *ix = idem_new();
	struct idem_record in = rec(200, "{}", NULL, NOW + 10000), out;
	size_t n;

	idem_cache_put(ix, "s", "k", &in, NOW);
	cr_assert_eq(idem_cache_get(ix, "s", "k", FP_A, NOW + 10000 - IDEM_CACHE_SKEW_MS - 1, &out),
		     ST_OK);
	idem_record_release(&out);
	/* Within the skew margin of expiry: gone (and dropped). */
	cr_assert_eq(idem_cache_get(ix, "s", "k", FP_A, NOW + 10000 - IDEM_CACHE_SKEW_MS, &out),
		     ST_NOT_FOUND);
	idem_cache_usage(ix, &n, NULL);
	cr_assert_eq(n, 0);
	/* A record already (nearly) expired is not cached at all. */
	idem_cache_put(ix, "s", "k", &in, NOW + 9500);
	idem_cache_usage(ix, &n, NULL);
	cr_assert_eq(n, 0);
	idem_free(ix);
}

Test(idem_cache, a_newer_record_of_the_key_replaces_the_old)
{
	struct idem *ix = idem_new();
	struct idem_record a = rec(201, "{\"a\":1}", NULL, NOW + 5000);
	struct idem_record b = rec(201, "{\"b\":2}", NULL, NOW + 90000), out;

	idem_cache_put(ix, "s", "k", &a, NOW);
	memcpy(b.fingerprint, FP_B, sizeof(b.fingerprint));
	idem_cache_put(ix, "s", "k", &b, NOW + 6000);
	cr_assert_eq(idem_cache_get(ix, "s", "k", FP_B, NOW + 6000, &out), ST_OK);
	cr_assert(out.same_fingerprint);
	cr_assert_str_eq(out.body, "{\"b\":2}");
	idem_record_release(&out);
	idem_free(ix);
}

Test(idem_cache, entries_and_bytes_stay_bounded)
{
	/* 16 shards: 64 entries = 4 a shard; 64 KiB = 4 KiB a shard. */
	struct idem *ix = idem_new_bounded(64, 64 * 1024);
	static char big[8192];
	struct idem_record out;
	size_t n, bytes;
	char key[32];

	for (int i = 0; i < 5000; i++) {
		struct idem_record in = rec(201, "{\"ok\":true}", NULL, NOW + 60000);

		snprintf(key, sizeof(key), "k%d", i);
		idem_cache_put(ix, "s", key, &in, NOW);
	}
	idem_cache_usage(ix, &n, &bytes);
	cr_assert_leq(n, 64);
	cr_assert_gt(n, 16);
	cr_assert_leq(bytes, 64 * 1024);
	/* The most recent is there; the oldest were evicted. */
	cr_assert_eq(idem_cache_get(ix, "s", "k4999", FP_A, NOW, &out), ST_OK);
	idem_record_release(&out);
	cr_assert_eq(idem_cache_get(ix, "s", "k0", FP_A, NOW, &out), ST_NOT_FOUND);

	/* A record bigger than a shard's byte share is not cached. */
	memset(big, 'x', sizeof(big) - 1);
	{
		struct idem_record in = rec(201, big, NULL, NOW + 60000);

		idem_cache_put(ix, "s", "big", &in, NOW);
		cr_assert_eq(idem_cache_get(ix, "s", "big", FP_A, NOW, &out), ST_NOT_FOUND);
	}
	/* Byte bound with mid-size records: 3 KiB bodies, at most one a shard. */
	for (int i = 0; i < 200; i++) {
		struct idem_record in = rec(201, big + sizeof(big) - 1 - 3072, NULL, NOW + 60000);

		snprintf(key, sizeof(key), "m%d", i);
		idem_cache_put(ix, "s", key, &in, NOW);
	}
	idem_cache_usage(ix, &n, &bytes);
	cr_assert_leq(bytes, 64 * 1024);
	idem_free(ix);
}

Test(idem_cache, zero_entries_disables_it)
{
	struct idem *ix = idem_new_bounded(0, 0);
	struct idem_record in = rec(201, "{}", NULL, NOW + 60000), out;

	idem_cache_put(ix, "s", "k", &in, NOW);
	cr_assert_eq(idem_cache_get(ix, "s", "k", FP_A, NOW, &out), ST_NOT_FOUND);
	idem_free(ix);
}

Test(idem_cache, request_memo_answers_only_the_same_bytes)
{
	struct idem *ix = idem_new();
	struct idem_record in = rec(201, "{\"id\":\"x\"}", "/api/x", NOW + 60000), out;
	const char *body = "{\"wallet\":\"0xab\"}";
	char rl[IDEM_RL_KEY_MAX + 1];
	size_t bytes0, bytes1;

	/* No entry, then an entry without a memo: the long way. */
	cr_assert_eq(idem_cache_replay(ix, "s", "k", body, strlen(body), NOW, &out, rl), ST_NOT_FOUND);
	idem_cache_put(ix, "s", "k", &in, NOW);
	cr_assert_eq(idem_cache_replay(ix, "s", "k", body, strlen(body), NOW, &out, rl), ST_NOT_FOUND);
	/* A body noted under another fingerprint is not attached. */
	idem_cache_note_request(ix, "s", "k", FP_B, body, strlen(body), "w", NOW);
	cr_assert_eq(idem_cache_replay(ix, "s", "k", body, strlen(body), NOW, &out, rl), ST_NOT_FOUND);
	/* Noted under the record's fingerprint: the same bytes replay, with the
	 * record and the noted limit key; it is charged to the byte bound. */
	idem_cache_usage(ix, NULL, &bytes0);
	idem_cache_note_request(ix, "s", "k", FP_A, body, strlen(body), "0xab", NOW);
	idem_cache_usage(ix, NULL, &bytes1);
	cr_assert_gt(bytes1, bytes0 + strlen(body));
	cr_assert_eq(idem_cache_replay(ix, "s", "k", body, strlen(body), NOW, &out, rl), ST_OK);
	cr_assert_eq(out.status, 201);
	cr_assert_str_eq(out.body, "{\"id\":\"x\"}");
	cr_assert_str_eq(out.location, "/api/x");
	cr_assert(out.same_fingerprint);
	cr_assert_str_eq(rl, "0xab");
	idem_record_release(&out);
	/* One byte more, one byte different, a prefix: the long way. */
	cr_assert_eq(idem_cache_replay(ix, "s", "k", "{\"wallet\":\"0xab\"} ", strlen(body) + 1, NOW,
				       &out, rl), ST_NOT_FOUND);
	cr_assert_eq(idem_cache_replay(ix, "s", "k", "{\"wallet\":\"0xac\"}", strlen(body), NOW, &out,
				       rl), ST_NOT_FOUND);
	cr_assert_eq(idem_cache_replay(ix, "s", "k", body, strlen(body) - 1, NOW, &out, rl),
		     ST_NOT_FOUND);
	/* Other scope or key: nothing. */
	cr_assert_eq(idem_cache_replay(ix, "s2", "k", body, strlen(body), NOW, &out, rl), ST_NOT_FOUND);
	/* Expiry (less the skew) ends it like the record itself. */
	cr_assert_eq(idem_cache_replay(ix, "s", "k", body, strlen(body),
				       NOW + 60000 - IDEM_CACHE_SKEW_MS, &out, rl), ST_NOT_FOUND);
	cr_assert_eq(idem_cache_get(ix, "s", "k", FP_A, NOW, &out), ST_NOT_FOUND);
	idem_cache_usage(ix, NULL, &bytes1);
	cr_assert_eq(bytes1, 0);
	idem_free(ix);
}

Test(idem_cache, a_newer_record_drops_the_memo)
{
	struct idem *ix = idem_new();
	struct idem_record in = rec(201, "{}", NULL, NOW + 60000), out;
	char rl[IDEM_RL_KEY_MAX + 1];

	idem_cache_put(ix, "s", "k", &in, NOW);
	idem_cache_note_request(ix, "s", "k", FP_A, "b", 1, "", NOW);
	cr_assert_eq(idem_cache_replay(ix, "s", "k", "b", 1, NOW, &out, rl), ST_OK);
	cr_assert_str_eq(rl, "");
	idem_record_release(&out);
	/* The key taken over after an expiry elsewhere: the new record replaces
	 * the entry and the old request's memo goes with it. */
	memcpy(in.fingerprint, FP_B, sizeof(in.fingerprint));
	idem_cache_put(ix, "s", "k", &in, NOW);
	cr_assert_eq(idem_cache_replay(ix, "s", "k", "b", 1, NOW, &out, rl), ST_NOT_FOUND);
	idem_free(ix);
}

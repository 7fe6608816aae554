/* test_ratelimit.c — GCRA arithmetic and the in-process backend.
 *
 * Time is always injected (now_ms), so nothing here sleeps. The pure step
 * (rl_gcra_exact / rl_gcra) is checked value by value; the backend for key
 * and policy separation, exact counts under 16 threads, and its memory
 * bound under a flood of 1,000,000 distinct keys. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "ratelimit.h"

#include "banned.h"

#define HOUR_MS INT64_C(3600000)
#define DAY_MS  INT64_C(86400000)
#define NOW0    INT64_C(1700000000000) /* a realistic unix-ms clock */

static struct rl_policy pol(const char *name, int64_t limit, int64_t period_ms)
{
	return (struct rl_policy){ .name = name, .limit = limit, .period_ms = period_ms };
}

/* One exact step on a caller-held state. */
static struct rl_decision step(const struct rl_policy *p, struct rl_tat *t, int64_t now)
{
	struct rl_decision d;

	memset(&d, 0xa5, sizeof(d));
	rl_gcra_exact(p, t, now, &d);
	return d;
}

/* ---- the pure step ---------------------------------------------------- */

Test(gcra, burst_of_limit_then_limited)
{
	struct rl_policy p = pol("register_ip", 5, HOUR_MS);
	struct rl_tat t = { 0, 0 };
	struct rl_decision d;

	for (int i = 0; i < 5; i++) {
		d = step(&p, &t, NOW0);
		cr_assert(d.allowed, "request %d", i + 1);
		cr_assert_eq(d.limit, 5);
		cr_assert_eq(d.remaining, 4 - i);
		cr_assert_eq(d.reset_ms, (i + 1) * 720000);
		cr_assert_eq(d.retry_after_ms, 0);
	}
	d = step(&p, &t, NOW0);
	cr_assert_not(d.allowed);
	cr_assert_eq(d.limit, 5);
	cr_assert_eq(d.remaining, 0);
	cr_assert_eq(d.reset_ms, HOUR_MS);
	cr_assert_eq(d.retry_after_ms, 720000); /* one emission interval */
	cr_assert_eq(t.ms, NOW0 + HOUR_MS, "a limited request leaves the TAT alone");
}

Test(gcra, steady_rate_at_T_passes_forever)
{
	struct rl_policy p = pol("p", 10, 1000); /* T = 100 ms */
	struct rl_tat t = { 0, 0 };
	struct rl_decision d;
	int bad = 0;

	for (int64_t i = 0; i < 1000000; i++) {
		d = step(&p, &t, NOW0 + i * 100);
		if (!d.allowed || d.remaining != 9 || d.reset_ms != 100)
			bad++;
	}
	cr_assert_eq(bad, 0);
}

Test(gcra, faster_than_T_after_the_burst_is_limited)
{
	struct rl_policy p = pol("p", 10, 1000);
	struct rl_tat t = { 0, 0 };
	struct rl_decision d;
	int64_t now = NOW0;

	for (int i = 0; i < 10; i++)
		cr_assert(step(&p, &t, now).allowed);
	cr_assert_not(step(&p, &t, now).allowed);
	/* Now one every T, exactly, and never one more. */
	for (int i = 0; i < 1000; i++) {
		now += 100;
		d = step(&p, &t, now);
		cr_assert(d.allowed);
		cr_assert_eq(d.remaining, 0);
		d = step(&p, &t, now);
		cr_assert_not(d.allowed);
		cr_assert_eq(d.retry_after_ms, 100);
	}
}

Test(gcra, retry_after_is_exact)
{
	struct rl_policy p = pol("p", 3, 1000); /* T = 333 1/3 ms */
	struct rl_tat t = { 0, 0 };
	struct rl_tat saved;
	struct rl_decision d;

	for (int i = 0; i < 3; i++)
		cr_assert(step(&p, &t, NOW0).allowed);
	d = step(&p, &t, NOW0);
	cr_assert_not(d.allowed);
	cr_assert_eq(d.retry_after_ms, 334); /* 333.33 rounded up */
	cr_assert_eq(d.reset_ms, 1000);
	saved = t;
	d = step(&p, &t, NOW0 + 333);
	cr_assert_not(d.allowed, "one ms early is still limited");
	cr_assert_eq(d.retry_after_ms, 1);
	cr_assert_eq(t.ms, saved.ms);
	cr_assert_eq(t.frac, saved.frac);
	d = step(&p, &t, NOW0 + 334);
	cr_assert(d.allowed);
	cr_assert_eq(d.remaining, 0);
}

Test(gcra, remaining_and_reset_mid_window)
{
	struct rl_policy p = pol("p", 10, 1000); /* T = 100 */
	struct rl_tat t = { 0, 0 };
	struct rl_decision d;

	for (int i = 0; i < 3; i++)
		step(&p, &t, NOW0); /* TAT = now + 300 */
	d = step(&p, &t, NOW0 + 250);
	/* next TAT = NOW0 + 400: 150 ms from now; room (1250 - 400) / 100 = 8.5 */
	cr_assert(d.allowed);
	cr_assert_eq(d.remaining, 8);
	cr_assert_eq(d.reset_ms, 150);
	d = step(&p, &t, NOW0 + 2000); /* long idle: a fresh key again */
	cr_assert_eq(d.remaining, 9);
	cr_assert_eq(d.reset_ms, 100);
}

Test(gcra, full_quota_after_reset_ms)
{
	struct rl_policy p = pol("p", 7, HOUR_MS);
	struct rl_tat t = { 0, 0 };
	struct rl_decision d;
	int64_t now = NOW0, reset = 0;

	for (int i = 0; i < 7; i++) {
		d = step(&p, &t, now);
		reset = d.reset_ms;
		now += 1000;
	}
	cr_assert_not(step(&p, &t, now).allowed);
	now -= 1000; /* reset was measured from the last allowed request */

	/* One ms before reset the quota is not full yet... */
	{
		struct rl_tat early = t;
		d = step(&p, &early, now + reset - 1);
		cr_assert(d.allowed);
		cr_assert_lt(d.remaining, 6);
	}
	/* ...at reset it is: all 7 pass at once again. */
	for (int i = 0; i < 7; i++) {
		d = step(&p, &t, now + reset);
		cr_assert(d.allowed, "request %d after reset", i + 1);
		cr_assert_eq(d.remaining, 6 - i);
	}
	cr_assert_not(step(&p, &t, now + reset).allowed);
}

/* 7 per hour: T = 514285 5/7 ms. Nothing drifts. */
Test(gcra, period_not_divisible_by_limit)
{
	struct rl_policy p = pol("p", 7, HOUR_MS);
	struct rl_tat t = { 0, 0 };
	struct rl_decision d;
	int bad = 0;
	int64_t k;

	for (int i = 0; i < 7; i++)
		cr_assert(step(&p, &t, NOW0).allowed, "burst request %d", i + 1);
	d = step(&p, &t, NOW0);
	cr_assert_not(d.allowed);
	cr_assert_eq(d.retry_after_ms, 514286);
	cr_assert_eq(d.reset_ms, HOUR_MS);

	/* One every ceil(T) passes forever. */
	t = (struct rl_tat){ 0, 0 };
	for (k = 0; k < 200000; k++)
		if (!step(&p, &t, NOW0 + k * 514286).allowed)
			bad++;
	cr_assert_eq(bad, 0);

	/* One every floor(T) gains 5/7 ms per request on the TAT. From a fresh
	 * key, request k (from 0) passes iff (k+1)T <= k*514285 + P, i.e.
	 * 5k <= 6P: requests 0..4320000 pass, 4320001 is the first limited. */
	t = (struct rl_tat){ 0, 0 };
	for (k = 0;; k++)
		if (!step(&p, &t, NOW0 + k * 514285).allowed)
			break;
	cr_assert_eq(k, 4320001);
}

/* More than one request per ms: T = 0.1 ms. */
Test(gcra, limit_above_period)
{
	struct rl_policy p = pol("p", 10000, 1000);
	struct rl_tat t = { 0, 0 };
	struct rl_decision d;
	int n = 0;

	while (step(&p, &t, NOW0).allowed)
		n++;
	cr_assert_eq(n, 10000);
	d = step(&p, &t, NOW0);
	cr_assert_eq(d.retry_after_ms, 1);
	n = 0;
	while (step(&p, &t, NOW0 + 1).allowed)
		n++;
	cr_assert_eq(n, 10, "1 ms refills exactly 10");
}

Test(gcra, limit_zero_always_allows)
{
	struct rl_policy p = pol("p", 0, HOUR_MS);
	struct rl_tat t = { 12345, 0 };
	struct rl_decision d;

	for (int i = 0; i < 1000; i++) {
		d = step(&p, &t, NOW0);
		cr_assert(d.allowed);
		cr_assert_eq(d.limit, 0);
		cr_assert_eq(d.remaining, 0);
		cr_assert_eq(d.reset_ms, 0);
		cr_assert_eq(d.retry_after_ms, 0);
	}
	cr_assert_eq(t.ms, 12345);
	cr_assert_eq(rl_gcra(&p, 777, NOW0, &d), 777);
	cr_assert(d.allowed);
}

Test(gcra, very_large_clock)
{
	int64_t nows[] = { RL_TIME_MAX - 1, RL_TIME_MAX, INT64_MAX - 1, INT64_MAX };
	struct rl_policy p = pol("p", 5, RL_PERIOD_MAX);
	struct rl_decision d;

	for (size_t i = 0; i < sizeof(nows) / sizeof(nows[0]); i++) {
		struct rl_tat t = { 0, 0 };

		for (int k = 0; k < 5; k++)
			cr_assert(step(&p, &t, nows[i]).allowed);
		d = step(&p, &t, nows[i]);
		cr_assert_not(d.allowed);
		cr_assert_eq(d.retry_after_ms, RL_PERIOD_MAX / 5 + 1); /* T = (2^53)/5, rounded up */
		cr_assert_eq(d.reset_ms, RL_PERIOD_MAX);
		cr_assert_leq(t.ms, RL_TIME_MAX + RL_PERIOD_MAX);
	}
}

Test(gcra, huge_limit_and_period)
{
	struct rl_policy p = pol("p", RL_LIMIT_MAX, RL_PERIOD_MAX);
	struct rl_tat t = { 0, 0 };
	struct rl_decision d = step(&p, &t, NOW0);

	cr_assert(d.allowed);
	cr_assert_eq(d.remaining, RL_LIMIT_MAX - 1);
	cr_assert_eq(d.reset_ms, 1); /* T = 1 ms exactly */

	p = pol("p", RL_LIMIT_MAX, 1); /* T = 2^-53 ms */
	t = (struct rl_tat){ 0, 0 };
	d = step(&p, &t, NOW0);
	cr_assert(d.allowed);
	cr_assert_eq(d.remaining, RL_LIMIT_MAX - 1);
	cr_assert_eq(d.reset_ms, 1);

	p = pol("p", 1, RL_PERIOD_MAX);
	t = (struct rl_tat){ 0, 0 };
	cr_assert(step(&p, &t, NOW0).allowed);
	d = step(&p, &t, NOW0);
	cr_assert_not(d.allowed);
	cr_assert_eq(d.retry_after_ms, RL_PERIOD_MAX);
}

/* Clocks step back (NTP, VM restore): a TAT more than one period ahead is
 * pulled in, so no key waits longer than the policy allows. */
Test(gcra, tat_far_in_future)
{
	struct rl_policy p = pol("p", 5, HOUR_MS);
	struct rl_tat t = { NOW0 + 100 * HOUR_MS, 3 };
	struct rl_decision d = step(&p, &t, NOW0);

	cr_assert_not(d.allowed);
	cr_assert_eq(d.retry_after_ms, 720000);
	cr_assert_eq(d.reset_ms, HOUR_MS);
	cr_assert_eq(t.ms, NOW0 + HOUR_MS);
	cr_assert_eq(t.frac, 0);

	t = (struct rl_tat){ INT64_MAX, INT64_MAX };
	d = step(&p, &t, NOW0);
	cr_assert_not(d.allowed);
	cr_assert_eq(d.reset_ms, HOUR_MS);

	/* The ms API too. */
	cr_assert_eq(rl_gcra(&p, INT64_MAX, NOW0, &d), NOW0 + HOUR_MS);
	cr_assert_not(d.allowed);
}

Test(gcra, odd_stored_state)
{
	struct rl_policy p = pol("p", 3, 1000);
	struct rl_tat t = { -5, 0 };
	struct rl_decision d = step(&p, &t, NOW0);

	cr_assert(d.allowed, "a negative TAT is no state");
	cr_assert_eq(d.remaining, 2);

	/* frac from a policy whose limit was larger: rounded up to the next ms. */
	t = (struct rl_tat){ NOW0 + 10, 99 };
	d = step(&p, &t, NOW0);
	cr_assert(d.allowed);
	cr_assert_eq(t.ms, NOW0 + 11 + 333);
	cr_assert_eq(t.frac, 1);

	/* A clock before the epoch counts as 0. */
	t = (struct rl_tat){ 0, 0 };
	d = step(&p, &t, -1000);
	cr_assert(d.allowed);
	cr_assert_eq(t.ms, 333);
}

Test(gcra, invalid_policies_are_clamped)
{
	struct rl_policy p = pol("p", -3, HOUR_MS);
	struct rl_tat t = { 0, 0 };
	struct rl_decision d = step(&p, &t, NOW0);

	cr_assert(d.allowed);
	cr_assert_eq(d.limit, 0, "a negative limit disables");
	cr_assert_not(rl_policy_valid(&p));

	p = pol("p", 2, 0); /* period clamped to 1 ms */
	cr_assert_not(rl_policy_valid(&p));
	cr_assert(step(&p, &t, NOW0).allowed);
	cr_assert(step(&p, &t, NOW0).allowed);
	cr_assert_not(step(&p, &t, NOW0).allowed);

	p = pol("p", INT64_MAX, INT64_MAX);
	cr_assert_not(rl_policy_valid(&p));
	t = (struct rl_tat){ 0, 0 };
	d = step(&p, &t, NOW0);
	cr_assert(d.allowed);
	cr_assert_eq(d.limit, RL_LIMIT_MAX);

	cr_assert_not(rl_policy_valid(NULL));
	p = pol("p", 0, 0);
	cr_assert(rl_policy_valid(&p));
	p = pol("p", 5, HOUR_MS);
	cr_assert(rl_policy_valid(&p));
	p = pol("p", RL_LIMIT_MAX + 1, HOUR_MS);
	cr_assert_not(rl_policy_valid(&p));
	p = pol("p", 5, RL_PERIOD_MAX + 1);
	cr_assert_not(rl_policy_valid(&p));
}

Test(gcra, ms_api_matches_exact_when_divisible)
{
	struct rl_policy p = pol("p", 60, HOUR_MS);
	struct rl_tat t = { 0, 0 };
	struct rl_decision a, b;
	int64_t tat = 0, now = NOW0;

	for (int i = 0; i < 5000; i++) {
		now += (i * 7919) % 90000; /* an irregular arrival pattern */
		tat = rl_gcra(&p, tat, now, &a);
		b = step(&p, &t, now);
		cr_assert_eq(a.allowed, b.allowed);
		cr_assert_eq(a.remaining, b.remaining);
		cr_assert_eq(a.reset_ms, b.reset_ms);
		cr_assert_eq(a.retry_after_ms, b.retry_after_ms);
		cr_assert_eq(tat, t.ms);
	}
}

Test(gcra, ms_api_rounds_up_when_not_divisible)
{
	struct rl_policy p = pol("p", 3, 1000);
	struct rl_decision d;
	int64_t tat = rl_gcra(&p, 0, NOW0, &d);

	cr_assert(d.allowed);
	cr_assert_eq(tat, NOW0 + 334, "333.33 stored as 334: never more permissive");
}

/* ---- the in-process backend ------------------------------------------ */

static struct ratelimit *rl;

static void setup(void)
{
	rl = rl_memory_new(0);
	cr_assert_not_null(rl);
	cr_assert_str_eq(rl->ops->name, "memory");
}

static void teardown(void)
{
	rl_free(rl);
	rl = NULL;
}

static struct rl_decision check(const struct rl_policy *p, const char *key, int64_t now)
{
	struct rl_decision d;

	cr_assert_eq(rl_check(rl, p, key, strlen(key), now, &d), ST_OK);
	return d;
}

Test(ratelimit, burst_then_429, .init = setup, .fini = teardown)
{
	struct rl_policy p = pol("register_ip", 5, HOUR_MS);
	struct rl_decision d;

	for (int i = 0; i < 5; i++) {
		d = check(&p, "203.0.113.7", NOW0 + i);
		cr_assert(d.allowed);
		cr_assert_eq(d.remaining, 4 - i);
	}
	d = check(&p, "203.0.113.7", NOW0 + 5);
	cr_assert_not(d.allowed);
	cr_assert_eq(d.remaining, 0);
	cr_assert_eq(d.retry_after_ms, 720000 - 5);
	cr_assert_eq(d.reset_ms, HOUR_MS - 5);
	/* Exactly at retry_after one more passes. */
	cr_assert(check(&p, "203.0.113.7", NOW0 + 720000).allowed);
	cr_assert_not(check(&p, "203.0.113.7", NOW0 + 720000).allowed);
}

/* peek: the decision check() would take, with nothing recorded. */
Test(ratelimit, peek_decides_like_check_and_records_nothing, .init = setup, .fini = teardown)
{
	struct rl_policy p = pol("auth_fail", 3, 60000);
	struct rl_decision d, c;
	size_t mem0 = rl->ops->memory(rl);

	/* A fresh key: allowed with L - 1 left, and still no entry. */
	for (int i = 0; i < 10; i++) {
		cr_assert_eq(rl_peek(rl, &p, "198.51.100.1", 12, NOW0, &d), ST_OK);
		cr_assert(d.allowed);
		cr_assert_eq(d.remaining, 2);
	}
	cr_assert_eq(rl->ops->memory(rl), mem0, "a peek must not create an entry");
	/* Peeks between checks change nothing: exactly 3 checks pass. */
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(rl_peek(rl, &p, "198.51.100.1", 12, NOW0 + i, &d), ST_OK);
		c = check(&p, "198.51.100.1", NOW0 + i);
		cr_assert(c.allowed && d.allowed);
		cr_assert_eq(d.remaining, c.remaining);
		cr_assert_eq(d.reset_ms, c.reset_ms);
	}
	cr_assert_eq(rl_peek(rl, &p, "198.51.100.1", 12, NOW0 + 3, &d), ST_OK);
	c = check(&p, "198.51.100.1", NOW0 + 3);
	cr_assert(!d.allowed && !c.allowed);
	cr_assert_eq(d.retry_after_ms, c.retry_after_ms);
	cr_assert_eq(d.reset_ms, c.reset_ms);
	/* Once the first unit is back, a peek says so, and records nothing. */
	cr_assert_eq(rl_peek(rl, &p, "198.51.100.1", 12, NOW0 + 20000, &d), ST_OK);
	cr_assert(d.allowed);
	cr_assert_eq(rl_peek(rl, &p, "198.51.100.1", 12, NOW0 + 20000, &d), ST_OK);
	cr_assert(d.allowed);
	cr_assert(check(&p, "198.51.100.1", NOW0 + 20000).allowed);
	cr_assert_not(check(&p, "198.51.100.1", NOW0 + 20000).allowed);
	/* Same argument checks as check(). */
	cr_assert_eq(rl_peek(rl, &(struct rl_policy){ NULL, 1, 1, false }, "k", 1, NOW0, &d),
		     ST_INVALID);
}

Test(ratelimit, keys_and_policies_are_independent, .init = setup, .fini = teardown)
{
	struct rl_policy ip = pol("register_ip", 2, HOUR_MS);
	struct rl_policy wallet = pol("register_wallet", 2, HOUR_MS);
	struct rl_policy ab = pol("ab", 1, HOUR_MS), a = pol("a", 1, HOUR_MS);
	struct rl_decision d;

	for (int i = 0; i < 2; i++) {
		cr_assert(check(&ip, "k1", NOW0).allowed);
		cr_assert(check(&ip, "k2", NOW0).allowed);
		cr_assert(check(&wallet, "k1", NOW0).allowed);
	}
	cr_assert_not(check(&ip, "k1", NOW0).allowed);
	cr_assert_not(check(&ip, "k2", NOW0).allowed);
	cr_assert_not(check(&wallet, "k1", NOW0).allowed);
	cr_assert(check(&wallet, "k2", NOW0).allowed);

	/* name+key pairs that concatenate alike are still distinct */
	cr_assert(check(&ab, "c", NOW0).allowed);
	cr_assert(check(&a, "bc", NOW0).allowed);
	/* keys are bytes, NULs included; "" is a key */
	cr_assert_eq(rl_check(rl, &a, "x\0y", 3, NOW0, &d), ST_OK);
	cr_assert(d.allowed);
	cr_assert_eq(rl_check(rl, &a, "x", 1, NOW0, &d), ST_OK);
	cr_assert(d.allowed);
	cr_assert_eq(rl_check(rl, &a, "x\0y", 3, NOW0, &d), ST_OK);
	cr_assert_not(d.allowed);
	cr_assert_eq(rl_check(rl, &a, NULL, 0, NOW0, &d), ST_OK);
	cr_assert(d.allowed);
	cr_assert_eq(rl_check(rl, &a, "", 0, NOW0, &d), ST_OK);
	cr_assert_not(d.allowed);
}

Test(ratelimit, expired_state_is_like_none, .init = setup, .fini = teardown)
{
	struct rl_policy p = pol("p", 3, 1000);
	struct rl_decision d;

	for (int i = 0; i < 3; i++)
		check(&p, "k", NOW0);
	cr_assert_not(check(&p, "k", NOW0).allowed);
	d = check(&p, "k", NOW0 + 1000); /* exactly at reset */
	cr_assert(d.allowed);
	cr_assert_eq(d.remaining, 2);
}

Test(ratelimit, bad_arguments, .init = setup, .fini = teardown)
{
	char big[RL_KEY_MAX + 1];
	char longname[RL_NAME_MAX + 2];
	struct rl_policy p = pol("p", 5, HOUR_MS);
	struct rl_decision d = { .limit = -42 };

	memset(big, 'k', sizeof(big));
	cr_assert_eq(rl_check(rl, &p, big, RL_KEY_MAX + 1, NOW0, &d), ST_INVALID);
	cr_assert_eq(rl_check(rl, &p, big, RL_KEY_MAX, NOW0, &d), ST_OK);
	cr_assert(d.allowed);
	d.limit = -42;
	cr_assert_eq(rl_check(rl, &p, NULL, 3, NOW0, &d), ST_INVALID);
	memset(longname, 'n', sizeof(longname) - 1);
	longname[RL_NAME_MAX + 1] = '\0';
	p.name = longname;
	cr_assert_eq(rl_check(rl, &p, "k", 1, NOW0, &d), ST_INVALID);
	longname[RL_NAME_MAX] = '\0';
	p.name = NULL;
	cr_assert_eq(rl_check(rl, &p, "k", 1, NOW0, &d), ST_INVALID);
	p = pol("p", 5, 0);
	cr_assert_eq(rl_check(rl, &p, "k", 1, NOW0, &d), ST_INVALID);
	p = pol("p", -1, HOUR_MS);
	cr_assert_eq(rl_check(rl, &p, "k", 1, NOW0, &d), ST_INVALID);
	cr_assert_eq(rl_check(rl, NULL, "k", 1, NOW0, &d), ST_INVALID);
	cr_assert_eq(d.limit, -42, "out is untouched on error");
	p = pol(longname, 5, HOUR_MS); /* exactly RL_NAME_MAX */
	cr_assert_eq(rl_check(rl, &p, "k", 1, NOW0, &d), ST_OK);
}

Test(ratelimit, disabled_policy_keeps_no_state, .init = setup, .fini = teardown)
{
	struct rl_policy p = pol("off", 0, HOUR_MS);
	size_t before = rl->ops->memory(rl);
	char key[32];
	struct rl_decision d;

	for (int i = 0; i < 10000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		d = check(&p, key, NOW0);
		cr_assert(d.allowed);
		cr_assert_eq(d.limit, 0);
	}
	cr_assert_eq(rl->ops->memory(rl), before);
}

Test(ratelimit, shard_counts)
{
	size_t counts[] = { 1, 3, 64, 100000 };
	struct rl_policy p = pol("p", 2, HOUR_MS);

	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		struct ratelimit *r = rl_memory_new(counts[i]);
		struct rl_decision d;
		int allowed = 0;
		char key[16];

		cr_assert_not_null(r);
		for (int k = 0; k < 3000; k++) {
			snprintf(key, sizeof(key), "%d", k % 1000);
			cr_assert_eq(rl_check(r, &p, key, strlen(key), NOW0, &d), ST_OK);
			allowed += d.allowed;
		}
		cr_assert_eq(allowed, 2000);
		rl_free(r);
	}
	rl_free(NULL);
}

/* ---- concurrency ------------------------------------------------------ */

#define NTHREADS 16

struct worker {
	pthread_barrier_t *start;
	const struct rl_policy *p;
	int id;
	int n;          /* requests */
	int nkeys;      /* 0 = all on one key */
	int allowed;    /* result */
	int errors;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	struct rl_decision d;
	char key[32];

	pthread_barrier_wait(w->start);
	for (int i = 0; i < w->n; i++) {
		if (w->nkeys)
			snprintf(key, sizeof(key), "t%d-%d", w->id, i % w->nkeys);
		else
			snprintf(key, sizeof(key), "shared");
		if (rl_check(rl, w->p, key, strlen(key), NOW0, &d) != ST_OK)
			w->errors++;
		else
			w->allowed += d.allowed;
	}
	return NULL;
}

static void run_workers(const struct rl_policy *p, int n, int nkeys, int *allowed, int *errors)
{
	pthread_t th[NTHREADS];
	struct worker w[NTHREADS];
	pthread_barrier_t start;

	pthread_barrier_init(&start, NULL, NTHREADS);
	for (int i = 0; i < NTHREADS; i++) {
		w[i] = (struct worker){ .start = &start, .p = p, .id = i, .n = n, .nkeys = nkeys };
		cr_assert_eq(pthread_create(&th[i], NULL, worker_run, &w[i]), 0);
	}
	*allowed = *errors = 0;
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(th[i], NULL);
		*allowed += w[i].allowed;
		*errors += w[i].errors;
	}
	pthread_barrier_destroy(&start);
}

Test(ratelimit, one_key_16_threads_exactly_limit, .init = setup, .fini = teardown)
{
	struct rl_policy p = pol("claim_wallet", 50, HOUR_MS);
	int allowed, errors;

	run_workers(&p, 2000, 0, &allowed, &errors);
	cr_assert_eq(errors, 0);
	cr_assert_eq(allowed, 50);
}

/* Many keys from all threads at once: tables grow and sweep under contention. */
Test(ratelimit, many_keys_16_threads, .init = setup, .fini = teardown)
{
	struct rl_policy p = pol("p", 3, HOUR_MS);
	int allowed, errors;

	run_workers(&p, 20000, 5000, &allowed, &errors); /* 4 requests per key */
	cr_assert_eq(errors, 0);
	cr_assert_eq(allowed, NTHREADS * 5000 * 3);
}

/* ---- memory bound ----------------------------------------------------- */

/* An IPv4-like key per i, 7-15 bytes as real client keys are. */
static size_t flood_key(char *key, size_t cap, uint32_t i)
{
	int n = snprintf(key, cap, "10.%u.%u.%u", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);

	return (size_t)n;
}

/* 1,000,000 distinct keys under 5 per second, the clock advancing 1 ms per
 * request. A key's TAT is its arrival + T = 200 ms, so at most 200 keys are
 * live at any instant; everything older is garbage the sweeps must free.
 *
 * Bound: a shard's entries never exceed its buckets (a full sweep runs at
 * load factor 1), and it doubles only when that sweep leaves more than
 * buckets/2 live keys. 200 live keys over 64 shards is 3.1 per shard on
 * average; reaching 64 buckets would take 17 live in one shard at once
 * (Poisson tail ~3e-8 with a keyed hash), so each shard stays at <= 32
 * buckets: <= 64 x 32 = 2048 entries of <= 80 B (these ids are 20-24
 * bytes) plus 8 B per bucket, about 176 KiB, plus 4 KiB of shard headers.
 * We assert 256 KiB at every sample; with no reclaiming it would be about
 * 80 MiB. */
#define FLOOD_KEYS 1000000
#define FLOOD_BOUND (256u * 1024)

Test(ratelimit, flood_of_distinct_keys_stays_bounded, .init = setup, .fini = teardown)
{
	struct rl_policy p = pol("register_ip", 5, 1000);
	struct rl_decision d;
	char key[32];
	size_t len, mem, peak = 0;
	int denied = 0;

	for (uint32_t i = 0; i < FLOOD_KEYS; i++) {
		len = flood_key(key, sizeof(key), i);
		if (rl_check(rl, &p, key, len, NOW0 + i, &d) != ST_OK || !d.allowed)
			denied++;
		if (i % 64 == 0) {
			mem = rl->ops->memory(rl);
			if (mem > peak)
				peak = mem;
		}
	}
	cr_assert_eq(denied, 0);
	cr_assert_lt(peak, FLOOD_BOUND, "peak %zu bytes", peak);
	cr_log_info("flood: 1e6 keys, 200 live, peak memory %zu bytes, final %zu bytes\n", peak,
		    rl->ops->memory(rl));
}

/* The worst case: nothing expires (5 per day, 1 ms per request), so all
 * 1,000,000 keys are live together. A 12-byte key under an 11-byte policy
 * name is an 80 B heap chunk (36 B header, 24 B id, malloc overhead) and
 * the bucket array adds 8-16 B per key (load factor between 1/2 and 1), so
 * at most 96 B per key plus the fixed part. A 45-byte IPv6 key is 128 B;
 * the longest accepted id (RL_NAME_MAX + 1 + RL_KEY_MAX) is 400 B. */
Test(ratelimit, all_keys_live_bytes_per_key, .init = setup, .fini = teardown)
{
	struct rl_policy p = pol("register_ip", 5, DAY_MS);
	struct rl_decision d;
	char key[32];
	size_t len, mem, base = rl->ops->memory(rl);
	int denied = 0;

	for (uint32_t i = 0; i < FLOOD_KEYS; i++) {
		len = (size_t)snprintf(key, sizeof(key), "key-%08u", i); /* 12 bytes */
		if (rl_check(rl, &p, key, len, NOW0 + i, &d) != ST_OK || !d.allowed)
			denied++;
	}
	cr_assert_eq(denied, 0);
	mem = rl->ops->memory(rl);
	cr_log_info("all live: 1e6 keys, %zu bytes, %.1f bytes/key\n", mem,
		    (double)(mem - base) / FLOOD_KEYS);
	cr_assert_leq(mem - base, (size_t)96 * FLOOD_KEYS, "%zu bytes", mem - base);
	cr_assert_geq(mem - base, (size_t)80 * FLOOD_KEYS, "accounting counts every entry");
}

/* After a wave of keys expires, a second wave reuses the room instead of
 * growing the tables. */
Test(ratelimit, expired_wave_is_reclaimed, .init = setup, .fini = teardown)
{
	struct rl_policy p = pol("p", 5, 1000);
	struct rl_decision d;
	char key[32];
	size_t len, mem1, mem2;

	int errors = 0;

	for (uint32_t i = 0; i < 100000; i++) {
		len = flood_key(key, sizeof(key), i);
		errors += rl_check(rl, &p, key, len, NOW0, &d) != ST_OK;
	}
	mem1 = rl->ops->memory(rl);
	for (uint32_t i = 100000; i < 200000; i++) {
		len = flood_key(key, sizeof(key), i);
		errors += rl_check(rl, &p, key, len, NOW0 + 10000, &d) != ST_OK;
	}
	mem2 = rl->ops->memory(rl);
	cr_assert_eq(errors, 0);
	cr_assert_leq(mem2, mem1 + mem1 / 10, "first %zu, second %zu", mem1, mem2);
}

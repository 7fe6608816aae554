/* test_rl_redis.c — the Redis rate limit backend against the in-process one.
 *
 * The contract (ratelimit.h) is that both backends decide the same: every
 * sequence here goes through rl_memory and rl_redis with the same injected
 * clock, and every result code and decision field must match. Then what only
 * Redis has: one state shared by many threads (16 threads, limit 50: exactly
 * 50), TTLs that follow the TAT, long keys hashed, a Redis that is down or
 * hung (ST_UNAVAILABLE, quickly) and one that comes back.
 *
 * Needs SETTLED_TEST_REDIS (make unit runs under tests/with-services); fails
 * without it unless SETTLED_NO_SERVICES=1. Each test has its own key prefix
 * and deletes its keys. */
#include <pthread.h>

#include "ratelimit.h"
#include "redis_fixture.h"

#include "banned.h"

#define MIN_MS  INT64_C(60000)
#define HOUR_MS INT64_C(3600000)
#define DAY_MS  INT64_C(86400000)
#define NOW0    INT64_C(1700000000000)

static struct ratelimit *mem, *red;
static char prefix[64];
static const char *url;

static void setup(void)
{
	struct buf err = BUF_INIT(512);
	struct rl_redis_options o = { 0 };

	signal(SIGPIPE, SIG_IGN);
	url = need_redis();
	random_prefix(prefix, sizeof(prefix), "rl");
	o.prefix = prefix;
	o.pool_size = 16;
	/* The injected clock runs apart from Redis's: keep every key a day
	 * past its TAT so Redis never forgets a TAT the memory backend still
	 * holds (an expired TAT changes no decision). */
	o.ttl_slack_ms = DAY_MS;
	/* These tests compare decisions, not timeouts: a loaded machine (make
	 * asan, valgrind beside it) once took Redis past the 200 ms default and
	 * failed a step with ST_UNAVAILABLE. test_redisc.c tests the timeouts. */
	o.connect_timeout_ms = TEST_REDIS_TIMEOUT_MS;
	o.command_timeout_ms = TEST_REDIS_TIMEOUT_MS;
	mem = rl_memory_new(0);
	red = rl_redis_new(url, &o, &err);
	cr_assert_not_null(mem);
	cr_assert_not_null(red, "rl_redis_new: %s", err.ptr);
	cr_assert_str_eq(red->ops->name, "redis");
	cr_assert_eq(rl_ping(red, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(rl_ping(mem, NULL), ST_OK, "the in-process backend is always ready");
	buf_release(&err);
}

static void teardown(void)
{
	rl_free(mem);
	rl_free(red);
	mem = red = NULL;
	if (url && prefix[0]) {
		redisContext *c = direct(url, -1);

		delete_prefix(c, prefix);
		redisFree(c);
	}
}

static struct rl_policy pol(const char *name, int64_t limit, int64_t period_ms)
{
	return (struct rl_policy){ .name = name, .limit = limit, .period_ms = period_ms };
}

/* One request through both backends; asserts they agree on everything and
 * returns the decision. */
static struct rl_decision both(const struct rl_policy *p, const char *key, size_t len, int64_t now,
			       enum st_rc *rc_out, const char *ctx)
{
	struct rl_decision a, b;
	enum st_rc ra, rb;

	memset(&a, 0x5a, sizeof(a));
	memset(&b, 0x5a, sizeof(b));
	ra = rl_check(mem, p, key, len, now, &a);
	rb = rl_check(red, p, key, len, now, &b);
	cr_assert_eq(rb, ra, "%s: rc memory %s, redis %s (policy %s %lld/%lld, now %lld)", ctx,
		     st_rc_str(ra), st_rc_str(rb), p->name, (long long)p->limit,
		     (long long)p->period_ms, (long long)now);
	if (ra == ST_OK) {
		cr_assert_eq(b.allowed, a.allowed, "%s: allowed (now %lld)", ctx, (long long)now);
		cr_assert_eq(b.limit, a.limit, "%s: limit", ctx);
		cr_assert_eq(b.remaining, a.remaining, "%s: remaining %lld vs %lld (now %lld)", ctx,
			     (long long)a.remaining, (long long)b.remaining, (long long)now);
		cr_assert_eq(b.reset_ms, a.reset_ms, "%s: reset_ms %lld vs %lld (now %lld)", ctx,
			     (long long)a.reset_ms, (long long)b.reset_ms, (long long)now);
		cr_assert_eq(b.retry_after_ms, a.retry_after_ms, "%s: retry_after_ms %lld vs %lld",
			     ctx, (long long)a.retry_after_ms, (long long)b.retry_after_ms);
	}
	if (rc_out)
		*rc_out = ra;
	return a;
}

static struct rl_decision both_s(const struct rl_policy *p, const char *key, int64_t now)
{
	return both(p, key, strlen(key), now, NULL, "");
}

/* ---- same decisions as the in-process backend ------------------------- */

Test(rl_redis, burst_limited_then_steady, .init = setup, .fini = teardown)
{
	struct rl_policy p = pol("register_ip", 5, HOUR_MS);
	struct rl_decision d;
	int64_t now = NOW0;

	for (int i = 0; i < 5; i++) {
		d = both_s(&p, "10.0.0.1", now);
		cr_assert(d.allowed);
		cr_assert_eq(d.remaining, 4 - i);
	}
	d = both_s(&p, "10.0.0.1", now);
	cr_assert_not(d.allowed);
	cr_assert_eq(d.retry_after_ms, 720000);
	/* one ms early: still limited; on time: one passes */
	d = both_s(&p, "10.0.0.1", now + 720000 - 1);
	cr_assert_not(d.allowed);
	d = both_s(&p, "10.0.0.1", now + 720000);
	cr_assert(d.allowed);
	/* another key, another policy name: untouched */
	cr_assert(both_s(&p, "10.0.0.2", now).allowed);
	cr_assert(both_s(&(struct rl_policy){ "register_wallet", 5, HOUR_MS, false }, "10.0.0.1", now)
			  .allowed);
	/* at reset_ms all five are back */
	d = both_s(&p, "10.0.0.1", now + 720000);
	cr_assert_not(d.allowed);
	for (int i = 0; i < 5; i++)
		cr_assert(both_s(&p, "10.0.0.1", now + 720000 + HOUR_MS).allowed);
}

Test(rl_redis, fractional_interval_7_per_hour, .init = setup, .fini = teardown)
{
	struct rl_policy p = pol("p7", 7, HOUR_MS); /* T = 514285.714... ms */
	int64_t now = NOW0;
	int allowed = 0;

	/* A request every 1000 ms for 3 hours: 7 + 21 pass, to the request. */
	for (int i = 0; i <= 3 * 3600; i++, now += 1000)
		allowed += both_s(&p, "k", now).allowed;
	cr_assert_eq(allowed, 7 + 21);
}

Test(rl_redis, more_requests_than_ms, .init = setup, .fini = teardown)
{
	/* L > P: T is 0 ms plus a fraction; whole-ms state would stop limiting. */
	struct rl_policy p = pol("fast", 1000, 7);
	int64_t now = NOW0;
	int allowed = 0;

	for (int i = 0; i < 3000; i++)
		allowed += both_s(&p, "k", now + i / 1000).allowed; /* 3 ms */
	cr_assert_gt(allowed, 1000);
	cr_assert_lt(allowed, 3000);
}

Test(rl_redis, clock_steps_back_and_limit_changes, .init = setup, .fini = teardown)
{
	struct rl_policy p7 = pol("changes", 7, HOUR_MS), p5 = pol("changes", 5, HOUR_MS);
	int64_t now = NOW0;

	for (int i = 0; i < 9; i++)
		both_s(&p7, "k", now);
	/* the clock steps back by a day: the TAT is pulled in, both agree */
	for (int i = 0; i < 4; i++)
		both_s(&p7, "k", now - DAY_MS + i * 1000);
	/* the operator changes the limit: frac out of range rounds up */
	for (int i = 0; i < 8; i++)
		both_s(&p5, "k", now + i * 100000);
	/* a clock before 1970 is 0 in both */
	both_s(&p5, "k2", -5);
	both_s(&p5, "k2", 0);
}

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Random walks over many policies and keys: the field-by-field check of
 * the contract. Time moves by 0, 1 ms, fractions and multiples of T and
 * P, and now and then back; keys include the empty key and keys of 64, 65
 * and 256 bytes (hashed) and 257 (ST_INVALID in both). */
Test(rl_redis, random_sequences_match_memory, .init = setup, .fini = teardown, .timeout = 120)
{
	static const struct {
		int64_t limit, period;
	} pols[] = {
		{ 5, HOUR_MS }, { 10, DAY_MS }, { 7, HOUR_MS }, { 60, HOUR_MS }, { 100, MIN_MS },
		{ 600, MIN_MS }, { 1000, MIN_MS }, { 3, 1000 }, { 1, 1 }, { 1000, 7 }, { 13, 1001 },
		{ 0, MIN_MS }, { 1000000000, DAY_MS },
	};
	static const char *const names[] = { "a", "register_ip", "claim_wallet" };
	char keys[6][300];
	size_t klen[6] = { 0, 9, 64, 65, 256, 257 };
	int64_t now = NOW0;
	int decisions = 0, refused = 0, invalid = 0;

	memset(keys, 0, sizeof(keys));
	for (int k = 1; k < 6; k++)
		for (size_t i = 0; i < klen[k]; i++)
			keys[k][i] = (char)('a' + (i * 7 + (size_t)k) % 26);

	for (int step = 0; step < 6000; step++) {
		size_t pi = next_rand() % (sizeof(pols) / sizeof(pols[0]));
		struct rl_policy p = pol(names[next_rand() % 3], pols[pi].limit, pols[pi].period);
		int k = (int)(next_rand() % 6);
		int64_t t = pols[pi].limit ? pols[pi].period / pols[pi].limit : 1;
		enum st_rc rc;
		struct rl_decision d;
		char ctx[64];

		switch (next_rand() % 8) {
		case 0: case 1: break;                                        /* same instant */
		case 2: now += 1; break;
		case 3: now += (int64_t)(next_rand() % (uint64_t)(t + 1)); break;
		case 4: now += t; break;
		case 5: now += (int64_t)(next_rand() % (uint64_t)(pols[pi].period + 1)); break;
		case 6: now += (int64_t)(next_rand() % 5000); break;
		case 7: now -= (int64_t)(next_rand() % 1001); break;          /* clock back, within the 1 s both keep */
		}
		snprintf(ctx, sizeof(ctx), "step %d key %d", step, k);
		d = both(&p, keys[k], klen[k], now, &rc, ctx);
		if (rc == ST_INVALID) {
			invalid++;
			cr_assert_eq(klen[k], 257, "%s", ctx);
			continue;
		}
		cr_assert_eq(rc, ST_OK, "%s", ctx);
		decisions++;
		refused += !d.allowed;
	}
	cr_assert_gt(decisions, 4000);
	cr_assert_gt(refused, 500, "the walk must hit the limits (%d refused)", refused);
	cr_assert_gt(invalid, 0);
}

/* rl_check_seq: several policies of one request in one script call decide
 * what rl_check one by one decides (the in-process backend has no
 * check_seq: rl_check_seq calls its check() in turn), stop at the same
 * refusal and charge the same policies: a walk over two and three
 * policies with low limits, every decision compared field by field, and
 * the state after each step compared through a peek of every key. */
Test(rl_redis, check_seq_decides_like_one_by_one, .init = setup, .fini = teardown, .timeout = 120)
{
	const struct rl_policy pols[] = {
		pol("seq_ip", 5, HOUR_MS), pol("seq_wallet", 3, DAY_MS), pol("seq_off", 0, HOUR_MS),
		pol("seq_fast", 4, 1000),
	};
	static const char *const keys[] = { "10.0.0.1", "0xabc", "", "10.0.0.2" };
	int64_t now = NOW0;
	int refused_at[RL_SEQ_MAX] = { 0 };

	for (int step = 0; step < 3000; step++) {
		const struct rl_policy *p[RL_SEQ_MAX];
		const char *k[RL_SEQ_MAX];
		size_t l[RL_SEQ_MAX];
		struct rl_decision a[RL_SEQ_MAX], b[RL_SEQ_MAX];
		int n = 2 + (int)(next_rand() % 2), da = -1, db = -1;
		enum st_rc ra, rb;

		for (int i = 0; i < n; i++) {
			p[i] = &pols[next_rand() % 4];
			k[i] = keys[next_rand() % 4];
			l[i] = strlen(k[i]);
		}
		now += (int64_t)(next_rand() % 400);
		ra = rl_check_seq(mem, p, k, l, n, now, a, &da);
		rb = rl_check_seq(red, p, k, l, n, now, b, &db);
		cr_assert_eq(ra, ST_OK, "step %d: %s", step, st_rc_str(ra));
		cr_assert_eq(rb, ST_OK, "step %d: %s", step, st_rc_str(rb));
		cr_assert_eq(db, da, "step %d: %d decided in Redis, %d one by one", step, db, da);
		for (int i = 0; i < da; i++) {
			cr_assert_eq(b[i].allowed, a[i].allowed, "step %d policy %d", step, i);
			cr_assert_eq(b[i].limit, a[i].limit, "step %d policy %d", step, i);
			cr_assert_eq(b[i].remaining, a[i].remaining, "step %d policy %d", step, i);
			cr_assert_eq(b[i].reset_ms, a[i].reset_ms, "step %d policy %d", step, i);
			cr_assert_eq(b[i].retry_after_ms, a[i].retry_after_ms, "step %d policy %d", step, i);
			if (i < da - 1)
				cr_assert(a[i].allowed, "step %d: a decision after a refusal", step);
		}
		if (da < n) {
			cr_assert_not(a[da - 1].allowed, "step %d: stopped without a refusal", step);
			refused_at[da - 1]++;
		}
		/* Same state everywhere: what each key would be told now. */
		for (int pi = 0; pi < 4; pi++)
			for (int ki = 0; ki < 4; ki++) {
				struct rl_decision x, y;

				cr_assert_eq(rl_peek(mem, &pols[pi], keys[ki], strlen(keys[ki]), now, &x), ST_OK);
				cr_assert_eq(rl_peek(red, &pols[pi], keys[ki], strlen(keys[ki]), now, &y), ST_OK);
				cr_assert_eq(y.allowed, x.allowed, "step %d: state of %s/%s", step,
					     pols[pi].name, keys[ki]);
				cr_assert_eq(y.remaining, x.remaining, "step %d: state of %s/%s", step,
					     pols[pi].name, keys[ki]);
			}
	}
	/* The walk refused at the first policy and at a later one. */
	cr_assert_gt(refused_at[0], 50, "%d", refused_at[0]);
	cr_assert_gt(refused_at[1] + refused_at[2], 50, "%d", refused_at[1] + refused_at[2]);
}

/* The policy after a refusal is not charged, the one before it is: in one
 * script call as one by one. */
Test(rl_redis, check_seq_charges_up_to_the_refusal, .init = setup, .fini = teardown)
{
	struct rl_policy ip = pol("seq_ip", 2, HOUR_MS), wallet = pol("seq_wallet", 1, DAY_MS);
	const struct rl_policy *p[2] = { &ip, &wallet };
	const char *k[2] = { "10.0.0.9", "0xfeed" };
	size_t l[2] = { 8, 6 };
	struct rl_decision d[2], x;
	int decided = -1;

	cr_assert_eq(rl_check_seq(red, p, k, l, 2, NOW0, d, &decided), ST_OK);
	cr_assert_eq(decided, 2);
	cr_assert(d[0].allowed && d[1].allowed);
	/* the wallet refuses: the address was charged (1 of 2 left -> 0) */
	cr_assert_eq(rl_check_seq(red, p, k, l, 2, NOW0, d, &decided), ST_OK);
	cr_assert_eq(decided, 2);
	cr_assert(d[0].allowed);
	cr_assert_not(d[1].allowed);
	cr_assert_eq(rl_peek(red, &ip, k[0], l[0], NOW0, &x), ST_OK);
	cr_assert_not(x.allowed, "the address was not charged before the wallet's refusal");
	/* the address refuses: another wallet is not charged */
	k[1] = "0xbeef";
	cr_assert_eq(rl_check_seq(red, p, k, l, 2, NOW0, d, &decided), ST_OK);
	cr_assert_eq(decided, 1);
	cr_assert_not(d[0].allowed);
	cr_assert_eq(rl_peek(red, &wallet, k[1], l[1], NOW0, &x), ST_OK);
	cr_assert(x.allowed && x.remaining == 0, "a policy after the refusal was charged");
	cr_assert_eq(rl_check_seq(red, p, k, l, RL_SEQ_MAX + 1, NOW0, d, &decided), ST_INVALID);
	cr_assert_eq(decided, 0);
}

/* peek in the script: the same decisions as the in-process peek, and no
 * state written (random peeks between checks change no later decision,
 * and a peek at a fresh key leaves no key in Redis). */
Test(rl_redis, peek_matches_memory_and_writes_nothing, .init = setup, .fini = teardown)
{
	struct rl_policy p = pol("auth_fail", 5, 60000);
	int64_t now = NOW0;
	redisContext *c = direct(url, -1);
	redisReply *rep;

	for (int i = 0; i < 400; i++) {
		const char *key = (next_rand() & 1) ? "10.0.0.1" : "2001:db8::/64";
		struct rl_decision a, b;

		now += (int64_t)(next_rand() % 9000);
		if (next_rand() % 3) {
			memset(&a, 0x5a, sizeof(a));
			memset(&b, 0x5a, sizeof(b));
			cr_assert_eq(rl_peek(mem, &p, key, strlen(key), now, &a), ST_OK);
			cr_assert_eq(rl_peek(red, &p, key, strlen(key), now, &b), ST_OK);
			cr_assert_eq(b.allowed, a.allowed, "step %d", i);
			cr_assert_eq(b.remaining, a.remaining, "step %d", i);
			cr_assert_eq(b.reset_ms, a.reset_ms, "step %d", i);
			cr_assert_eq(b.retry_after_ms, a.retry_after_ms, "step %d", i);
		} else {
			both_s(&p, key, now);
		}
	}
	{
		struct rl_decision d;
		char k[256];

		cr_assert_eq(rl_peek(red, &p, "never-checked", 13, now, &d), ST_OK);
		cr_assert(d.allowed);
		snprintf(k, sizeof(k), "%sauth_fail:never-checked", prefix);
		rep = redisCommand(c, "EXISTS %s", k);
		cr_assert(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0,
			  "a peek wrote %s", k);
		freeReplyObject(rep);
	}
	redisFree(c);
}

Test(rl_redis, invalid_inputs_match_memory, .init = setup, .fini = teardown)
{
	char name[80];
	struct rl_decision d;

	memset(name, 'n', sizeof(name));
	name[65] = '\0';
	both(&(struct rl_policy){ name, 5, HOUR_MS, false }, "k", 1, NOW0, NULL, "long name");
	name[64] = '\0';
	cr_assert(both_s(&(struct rl_policy){ name, 5, HOUR_MS, false }, "k", NOW0).allowed);
	both(&(struct rl_policy){ "neg", -1, HOUR_MS, false }, "k", 1, NOW0, NULL, "negative limit");
	both(&(struct rl_policy){ "zero", 5, 0, false }, "k", 1, NOW0, NULL, "zero period");
	both(&(struct rl_policy){ NULL, 5, HOUR_MS, false }, "k", 1, NOW0, NULL, "NULL name");
	both(&(struct rl_policy){ "nk", 5, HOUR_MS, false }, NULL, 3, NOW0, NULL, "NULL key");
	cr_assert(both(&(struct rl_policy){ "nk", 5, HOUR_MS, false }, NULL, 0, NOW0, NULL, "")
			  .allowed);
	/* Differences, as documented: names that would make keys ambiguous,
	 * and ranges past exact double arithmetic. */
	cr_assert_eq(rl_check(red, &(struct rl_policy){ "a:b", 5, HOUR_MS, false }, "k", 1, NOW0, &d),
		     ST_INVALID);
	cr_assert_eq(rl_check(red, &(struct rl_policy){ "a#b", 5, HOUR_MS, false }, "k", 1, NOW0, &d),
		     ST_INVALID);
	cr_assert_eq(rl_check(red, &(struct rl_policy){ "big", RL_REDIS_LIMIT_MAX + 1, HOUR_MS, false },
			      "k", 1, NOW0, &d),
		     ST_INVALID);
	cr_assert_eq(rl_check(red, &(struct rl_policy){ "p", 5, HOUR_MS, false }, "k", 1,
			      RL_REDIS_TIME_MAX + 1, &d),
		     ST_INVALID);
}

/* The script gets its numbers as binary int64s and prints the TAT with
 * "%d": at the largest accepted values (16-digit ms, a fraction) the
 * decisions still match and the stored text is the exact TAT. */
Test(rl_redis, largest_values_exact_in_args_and_stored_text, .init = setup, .fini = teardown)
{
	struct rl_policy p = pol("edge", 3, RL_REDIS_LIMIT_MAX);
	const int64_t now = RL_REDIS_TIME_MAX - RL_REDIS_LIMIT_MAX, t_ms = RL_REDIS_LIMIT_MAX / 3,
		      t_frac = RL_REDIS_LIMIT_MAX % 3;
	redisContext *c = direct(url, -1);
	char key[256], want[64];
	redisReply *r;

	cr_assert_eq(t_frac, 1, "the period is not a multiple of the limit");
	cr_assert(both_s(&p, "k", now).allowed);
	cr_assert(both_s(&p, "k", now).allowed);
	snprintf(key, sizeof(key), "%sedge:k", prefix);
	r = redisCommand(c, "GET %s", key);
	cr_assert(r && r->type == REDIS_REPLY_STRING);
	snprintf(want, sizeof(want), "%lld %lld", (long long)(now + 2 * t_ms), (long long)(2 * t_frac));
	cr_assert_str_eq(r->str, want, "the exact TAT after two steps");
	freeReplyObject(r);
	cr_assert(both_s(&p, "k", now).allowed);
	cr_assert(!both_s(&p, "k", now).allowed, "a burst of 3, then refused");
	cr_assert(both_s(&p, "k", now + t_ms + 1).allowed, "one emission interval later");
	p = pol("edge2", RL_REDIS_LIMIT_MAX, RL_REDIS_LIMIT_MAX);
	for (int i = 0; i < 4; i++)
		cr_assert(both_s(&p, "k", now - i).allowed);
	redisFree(c);
}

/* ---- what only a shared store has ------------------------------------- */

struct hammer {
	const struct rl_policy *p;
	int allowed, errors;
	int remaining_seen[64];
};

static void *hammer_run(void *arg)
{
	struct hammer *h = arg;
	struct rl_decision d;

	for (int i = 0; i < 20; i++) {
		if (rl_check(red, h->p, "one-key", 7, NOW0, &d) != ST_OK) {
			h->errors++;
			continue;
		}
		if (d.allowed) {
			h->allowed++;
			if (d.remaining >= 0 && d.remaining < 64)
				h->remaining_seen[d.remaining]++;
		}
	}
	return NULL;
}

Test(rl_redis, sixteen_threads_limit_50_exactly_50, .init = setup, .fini = teardown,
     .timeout = 60)
{
	struct rl_policy p = pol("threads", 50, HOUR_MS);
	pthread_t t[16];
	struct hammer h[16];
	int allowed = 0, seen[64] = { 0 };

	for (int i = 0; i < 16; i++) {
		memset(&h[i], 0, sizeof(h[i]));
		h[i].p = &p;
		cr_assert_eq(pthread_create(&t[i], NULL, hammer_run, &h[i]), 0);
	}
	for (int i = 0; i < 16; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(h[i].errors, 0);
		allowed += h[i].allowed;
		for (int r = 0; r < 64; r++)
			seen[r] += h[i].remaining_seen[r];
	}
	cr_assert_eq(allowed, 50, "16 threads x 20 requests, limit 50: %d passed", allowed);
	for (int r = 0; r < 50; r++)
		cr_assert_eq(seen[r], 1, "remaining=%d reported %d times", r, seen[r]);
}

Test(rl_redis, two_backends_on_one_redis_share_state, .init = setup, .fini = teardown)
{
	struct rl_redis_options o = { .prefix = prefix, .connect_timeout_ms = TEST_REDIS_TIMEOUT_MS,
				      .command_timeout_ms = TEST_REDIS_TIMEOUT_MS };
	struct ratelimit *other = rl_redis_new(url, &o, NULL);
	struct rl_policy p = pol("shared", 4, HOUR_MS);
	struct rl_decision d;
	int allowed = 0;

	cr_assert_not_null(other);
	for (int i = 0; i < 10; i++) {
		cr_assert_eq(rl_check(i % 2 ? red : other, &p, "k", 1, NOW0, &d), ST_OK);
		allowed += d.allowed;
	}
	cr_assert_eq(allowed, 4);
	rl_free(other);
}

static long long pttl(redisContext *c, const char *key, size_t len)
{
	redisReply *r = redisCommand(c, "PTTL %b", key, len);
	long long v;

	cr_assert(r && r->type == REDIS_REPLY_INTEGER);
	v = r->integer;
	freeReplyObject(r);
	return v;
}

Test(rl_redis, keys_expire_with_their_tat_and_long_keys_are_hashed, .init = setup,
     .fini = teardown)
{
	struct rl_policy p = pol("ttl", 5, HOUR_MS);
	struct rl_redis_options o = { .prefix = prefix, /* the default slack, 1 s */
				      .connect_timeout_ms = TEST_REDIS_TIMEOUT_MS,
				      .command_timeout_ms = TEST_REDIS_TIMEOUT_MS };
	struct ratelimit *rl = rl_redis_new(url, &o, NULL);
	redisContext *c = direct(url, -1);
	char key[256], name[300], longkey[200];
	struct rl_decision d;
	long long t, passed_ms;
	double t0;
	redisReply *r;

	/* wall clock: Redis's TTL runs in real time */
	int64_t now = (int64_t)time(NULL) * 1000;

	cr_assert_eq(rl_check(rl, &p, "1.2.3.4", 7, now, &d), ST_OK);
	/* The TTL each check sets is reset + 1 s from the given now; PTTL has
	 * counted it down since in real time: by at most what passed here from
	 * before the check to after the read (+2 ms of rounding), however
	 * long a loaded machine held this process in between (a fixed 2 s
	 * allowance failed by chance). */
	t0 = now_s();
	cr_assert_eq(rl_check(rl, &p, "1.2.3.4", 7, now, &d), ST_OK);
	cr_assert_eq(d.reset_ms, 2 * 720000);
	snprintf(key, sizeof(key), "%sttl:1.2.3.4", prefix);
	t = pttl(c, key, strlen(key));
	passed_ms = (long long)((now_s() - t0) * 1000) + 2;
	cr_assert(t >= d.reset_ms + 1000 - passed_ms && t <= d.reset_ms + 1000,
		  "PTTL %lld for reset %lld (+1 s slack), %lld ms after the check", t,
		  (long long)d.reset_ms, passed_ms);
	r = redisCommand(c, "GET %s", key);
	cr_assert(r && r->type == REDIS_REPLY_STRING);
	snprintf(name, sizeof(name), "%lld 0", (long long)(now + 2 * 720000));
	cr_assert_str_eq(r->str, name, "the exact TAT, \"ms frac\"");
	freeReplyObject(r);

	/* a key of 65 bytes or more is stored under its SHA-256 */
	memset(longkey, 'x', sizeof(longkey));
	cr_assert_eq(rl_check(rl, &p, longkey, sizeof(longkey), now, &d), ST_OK);
	snprintf(name, sizeof(name), "%sttl#", prefix);
	r = redisCommand(c, "KEYS %s*", name);
	cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1);
	cr_assert_eq(r->element[0]->len, strlen(name) + 64);
	freeReplyObject(r);

	/* a short policy: the key is gone once the TAT (plus slack) passed */
	p = pol("short", 2, 100);
	t0 = now_s();
	cr_assert_eq(rl_check(rl, &p, "k", 1, now, &d), ST_OK);
	snprintf(key, sizeof(key), "%sshort:k", prefix);
	t = pttl(c, key, strlen(key));
	passed_ms = (long long)((now_s() - t0) * 1000) + 2;
	/* Still there if read within its TTL; held past it, it may be gone. */
	cr_assert(t <= 50 + 1000, "PTTL %lld", t);
	if (passed_ms < 50 + 1000)
		cr_assert(t > 0, "PTTL %lld %lld ms after the check", t, passed_ms);
	usleep(1200 * 1000);
	cr_assert_eq(pttl(c, key, strlen(key)), -2, "expired and deleted");
	redisFree(c);
	rl_free(rl);
}

/* ---- Redis down -------------------------------------------------------- */

/* A Redis that refuses connections: a decision is ST_UNAVAILABLE at once
 * (a refusal, not a wait for a timeout), and decisions while it stays down
 * go through the pool's backoff instead of connecting each: every one is a
 * probe the backoff allowed or a fast failure, and the probes are no more
 * than the backoff steps (50 ms doubling to 1 s) that fit in the time the
 * decisions took. Counted, not timed (a starved loop allows more probes,
 * never a failure by chance). */
Test(rl_redis, redis_down_is_unavailable_quickly, .init = setup, .fini = teardown)
{
	char down_url[96];
	struct buf err = BUF_INIT(512);
	struct ratelimit *rl;
	struct rl_policy p = pol("register_ip", 5, HOUR_MS);
	struct rl_decision d;
	struct redisc_stats st;
	double t0;
	int fd;

	snprintf(down_url, sizeof(down_url), "redis://:pw-not-logged@127.0.0.1:%d/2", closed_port(&fd));
	rl = rl_redis_new(down_url, NULL, &err);
	cr_assert_not_null(rl, "creation connects nothing: %s", err.ptr);
	rl_redis_stats(rl, &st);
	cr_assert_eq(st.connects + st.connect_failures, 0, "creation connects nothing");
	memset(&d, 0x5a, sizeof(d));
	t0 = now_s();
	cr_assert_eq(rl_check(rl, &p, "k", 1, NOW0, &d), ST_UNAVAILABLE);
	rl_redis_stats(rl, &st);
	cr_assert_eq(st.connect_failures, 1, "one connect tried");
	cr_assert_eq(st.io_errors + st.fast_failures, 0);
	cr_assert_eq(d.limit, (int64_t)0x5a5a5a5a5a5a5a5a, "*out untouched on failure");
	for (int i = 0; i < 5000; i++)
		cr_assert_eq(rl_check(rl, &p, "k", 1, NOW0, &d), ST_UNAVAILABLE);
	rl_redis_stats(rl, &st);
	{
		unsigned long long most = probes_within(now_s() - t0, 50, 1000);

		cr_assert_eq(st.connect_failures + st.fast_failures, 5001,
			     "5000 decisions while down: each a probe or a fast failure (%llu + %llu)",
			     st.connect_failures, st.fast_failures);
		cr_assert_leq(st.connect_failures, most,
			      "%llu connects: more than one per backoff step (%llu)",
			      st.connect_failures, most);
	}
	cr_assert_eq(st.connects, 0);
	cr_assert_eq(rl_ping(rl, &err), ST_UNAVAILABLE);
	cr_assert(strstr(err.ptr, "refused"), "a refusal, not a timeout: %s", err.ptr);
	cr_assert(strstr(err.ptr, "127.0.0.1"), "%s", err.ptr);
	cr_assert_null(strstr(err.ptr, "pw-not-logged"), "%s", err.ptr);
	/* a disabled policy needs no Redis */
	cr_assert_eq(rl_check(rl, &(struct rl_policy){ "off", 0, HOUR_MS, false }, "k", 1, NOW0, &d),
		     ST_OK);
	cr_assert(d.allowed);
	rl_free(rl);
	close(fd);
	buf_release(&err);
}

/* A Redis that never answers: the decision waits the command timeout (at
 * least 150 ms of its 200) once, on one connection, and is ST_UNAVAILABLE;
 * the script is not sent again (EVAL after EVALSHA happens only on an
 * answer). Counted, not timed from above: the test's .timeout fails a
 * wait that never ends, and a starved thread can outlast any wall-clock
 * ceiling by chance. */
Test(rl_redis, hung_redis_is_unavailable_within_the_timeout, .init = setup, .fini = teardown,
     .timeout = 60)
{
	int port, fd = silent_server(&port);
	char hung[96];
	struct rl_redis_options o = { .command_timeout_ms = 200 };
	struct ratelimit *rl;
	struct rl_policy p = pol("register_ip", 5, HOUR_MS);
	struct rl_decision d;
	struct redisc_stats st;
	double t0, dt;

	snprintf(hung, sizeof(hung), "redis://127.0.0.1:%d", port);
	rl = rl_redis_new(hung, &o, NULL);
	cr_assert_not_null(rl);
	t0 = now_s();
	cr_assert_eq(rl_check(rl, &p, "k", 1, NOW0, &d), ST_UNAVAILABLE);
	dt = now_s() - t0;
	cr_assert(dt > 0.15, "gave up before the command timeout: %.3f s", dt);
	rl_redis_stats(rl, &st);
	cr_assert_eq(st.connects, 1, "one connection");
	cr_assert_eq(st.io_errors, 1, "one command waited for, not sent again");
	cr_assert_eq(st.fast_failures + st.connect_failures, 0);
	rl_free(rl);
	cr_assert_eq(silent_server_connections(fd), 1, "the server saw one connection");
	close(fd);
}

Test(rl_redis, restart_loses_state_then_decides_again, .init = setup, .fini = teardown,
     .timeout = 60)
{
	struct private_redis pr = { 0 };
	struct ratelimit *rl;
	struct rl_policy p = pol("register_ip", 3, HOUR_MS);
	struct rl_decision d;
	struct buf err = BUF_INIT(512);

	private_start(&pr, NULL);
	rl = rl_redis_new(pr.url, &(struct rl_redis_options){ .connect_timeout_ms = TEST_REDIS_TIMEOUT_MS,
							    .command_timeout_ms = TEST_REDIS_TIMEOUT_MS },
			  NULL);
	cr_assert_not_null(rl);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(rl_check(rl, &p, "k", 1, NOW0, &d), ST_OK);
		cr_assert(d.allowed);
	}
	cr_assert_eq(rl_check(rl, &p, "k", 1, NOW0, &d), ST_OK);
	cr_assert_not(d.allowed);
	redisctl(&pr, "halt", NULL);
	cr_assert_eq(rl_check(rl, &p, "k", 1, NOW0, &d), ST_UNAVAILABLE);
	cr_assert_eq(rl_ping(rl, NULL), ST_UNAVAILABLE);
	redisctl(&pr, "start", NULL);
	/* Found again within the backoff cap (1 s): a call refused during
	 * the backoff names a wait of at most the cap, and the first call
	 * after that wait (a monotonic sleep at least that long) is a probe
	 * that finds the server. The pool's own figure is checked, no
	 * wall-clock ceiling. */
	if (rl_ping(rl, &err) != ST_OK) {
		long long wait = next_attempt_ms(err.ptr);

		cr_assert(wait >= 0 && wait <= 1000, "a refusal during the backoff (<= 1 s): %s",
			  err.ptr);
		usleep((useconds_t)(wait + 2) * 1000);
	}
	cr_assert_eq(rl_check(rl, &p, "k", 1, NOW0, &d), ST_OK, "the first decision after the backoff");
	/* no persistence in the test server: the quota is fresh (documented) */
	cr_assert(d.allowed);
	cr_assert_eq(d.remaining, 2);
	cr_assert_eq(rl_ping(rl, NULL), ST_OK);
	rl_free(rl);
	private_stop(&pr);
	buf_release(&err);
}

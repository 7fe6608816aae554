/* ratelimit.c — the GCRA arithmetic, independent of where state is kept.
 *
 * A policy of L requests per P ms has the emission interval T = P / L. The
 * only state per key is the theoretical arrival time (TAT): the instant at
 * which the key would be back to a full quota. A request at `now` moves it to
 *
 *	new_tat = max(tat, now) + T
 *
 * and is allowed iff new_tat <= now + P, i.e. the TAT never runs more than
 * one period ahead of the clock. This is the usual "new_tat - tau <= now"
 * with tau = P (equivalently "max(tat, now) - (P - T) <= now" before adding
 * T): from a fresh key exactly L requests pass at one instant, then one
 * every T.
 *
 * T is rarely a whole number of ms (3600000 / 7), so a TAT is kept as
 * ms + frac / L (struct rl_tat) and every step is exact integer arithmetic;
 * the one product that can exceed 64 bits (remaining) uses 128 bits.
 * Clocks and policies are clamped into ranges where no sum can overflow
 * (RL_TIME_MAX, RL_LIMIT_MAX, RL_PERIOD_MAX in ratelimit.h).
 *
 * Everything here is pure: no state, no locks, no allocation (rl_check_seq,
 * at the end, only calls a backend). */
#include "ratelimit.h"

#include "banned.h"

#if !defined(__SIZEOF_INT128__)
#error "ratelimit.c needs unsigned __int128 (gcc or clang on a 64-bit target)"
#endif

/* The policy after clamping: limit 0 means disabled. */
struct gcra_policy {
	int64_t limit;
	int64_t period;
	int64_t t_ms;   /* T = t_ms + t_frac / limit */
	int64_t t_frac;
};

bool rl_policy_valid(const struct rl_policy *p)
{
	if (!p)
		return false;
	if (p->limit == 0)
		return true;
	return p->limit >= 1 && p->limit <= RL_LIMIT_MAX && p->period_ms >= 1 &&
	       p->period_ms <= RL_PERIOD_MAX;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

static void gcra_policy_of(const struct rl_policy *p, struct gcra_policy *g)
{
	g->limit = p->limit <= 0 ? 0 : clamp64(p->limit, 1, RL_LIMIT_MAX);
	g->period = clamp64(p->period_ms, 1, RL_PERIOD_MAX);
	if (g->limit) {
		g->t_ms = g->period / g->limit;
		g->t_frac = g->period % g->limit;
	}
}

/* a <= b for TATs in the same units. */
static bool tat_le(const struct rl_tat *a, const struct rl_tat *b)
{
	return a->ms < b->ms || (a->ms == b->ms && a->frac <= b->frac);
}

/* ms from now until t, rounded up (t > now). */
static int64_t ms_until(const struct rl_tat *t, int64_t now)
{
	return t->ms - now + (t->frac > 0);
}

void rl_gcra_exact(const struct rl_policy *p, struct rl_tat *tat, int64_t now_ms,
		   struct rl_decision *out)
{
	struct gcra_policy g;
	struct rl_tat cur = *tat, next, horizon;
	int64_t now = clamp64(now_ms, 0, RL_TIME_MAX);
	unsigned __int128 room;

	gcra_policy_of(p, &g);
	if (!g.limit) {
		*out = (struct rl_decision){ .allowed = true };
		return;
	}

	/* Normalize whatever was stored: no state, a state from a policy with
	 * a different limit (frac out of range: round up, never down), or a
	 * TAT beyond one period ahead (only a clock stepping back makes one;
	 * honouring it would block the key for longer than the policy says). */
	if (cur.ms < 0) {
		cur = (struct rl_tat){ 0, 0 };
	} else if (cur.frac < 0 || cur.frac >= g.limit) {
		cur.ms = cur.ms < RL_TIME_MAX + RL_PERIOD_MAX ? cur.ms + 1 : cur.ms;
		cur.frac = 0;
	}
	horizon = (struct rl_tat){ now + g.period, 0 };
	if (!tat_le(&cur, &horizon))
		cur = horizon;

	/* next = max(cur, now) + T */
	next = cur.ms < now ? (struct rl_tat){ now, 0 } : cur;
	next.ms += g.t_ms;
	next.frac += g.t_frac;
	if (next.frac >= g.limit) {
		next.frac -= g.limit;
		next.ms++;
	}

	if (!tat_le(&next, &horizon)) {
		/* Limited. cur > now here (else next <= now + T <= horizon).
		 * The next request passes once now' + P >= next. */
		*tat = cur;
		*out = (struct rl_decision){
			.allowed = false,
			.limit = g.limit,
			.remaining = 0,
			.reset_ms = ms_until(&cur, now),
			.retry_after_ms = ms_until(&next, now + g.period),
		};
		return;
	}

	/* remaining = floor((horizon - next) / T)
	 *           = floor(((horizon.ms - next.ms) * L - next.frac) / P),
	 * non-negative because next <= horizon; the product needs 128 bits. */
	room = (unsigned __int128)(horizon.ms - next.ms) * (uint64_t)g.limit - (uint64_t)next.frac;
	*tat = next;
	*out = (struct rl_decision){
		.allowed = true,
		.limit = g.limit,
		.remaining = (int64_t)(room / (uint64_t)g.period),
		.reset_ms = ms_until(&next, now),
		.retry_after_ms = 0,
	};
}

int64_t rl_gcra(const struct rl_policy *p, int64_t tat_ms, int64_t now_ms, struct rl_decision *out)
{
	struct rl_tat t = { tat_ms, 0 };

	rl_gcra_exact(p, &t, now_ms, out);
	if (!out->limit)
		return tat_ms;
	/* Round a fractional TAT up: never more permissive than the policy. */
	return t.ms + (t.frac > 0);
}

enum st_rc rl_check_seq(struct ratelimit *rl, const struct rl_policy *const *p,
			const char *const *keys, const size_t *key_lens, int n, int64_t now_ms,
			struct rl_decision *out, int *decided)
{
	*decided = 0;
	if (n < 0 || n > RL_SEQ_MAX)
		return ST_INVALID;
	if (rl->ops->check_seq)
		return rl->ops->check_seq(rl, p, keys, key_lens, n, now_ms, out, decided);
	for (int i = 0; i < n; i++) {
		enum st_rc rc = rl->ops->check(rl, p[i], keys[i], key_lens[i], now_ms, &out[i]);

		if (rc)
			return rc;
		*decided = i + 1;
		if (!out[i].allowed)
			break;
	}
	return ST_OK;
}

/* rl_redis.c — the Redis rate limit backend: GCRA state shared by every
 * instance, one Lua script (one round trip) per decision.
 *
 * Key: prefix + policy name + ':' + key, or + '#' + hex SHA-256 of the key
 * when the key is longer than RL_REDIS_KEY_INLINE bytes, so a Redis key is
 * at most 64 + 64 + 65 bytes whatever the client sends. Policy names may
 * not contain ':' or '#' (ST_INVALID), which keeps the two forms and all
 * (name, key) pairs distinct.
 *
 * Value: the exact TAT of rl_gcra_exact, "ms frac" (a string; frac in
 * units of the policy's limit), with a TTL of (TAT - now) + a slack (1 s by default):
 * the key vanishes once it is back to a full quota, as the in-process
 * backend frees such entries. The slack absorbs clock skew between instances
 * (an instance whose clock is behind still sees the TAT) and the gap between
 * an injected test clock and Redis's own; an expired TAT is invisible, so
 * keeping it a little longer changes no decision.
 *
 * The script (GCRA_LUA) is rl_gcra_exact line for line, in Lua numbers
 * (doubles): exact because every value stays below 2^53 (now <= 2^51,
 * limit and period <= 2^50). It returns the state it read as well as the
 * decision, and check() replays rl_gcra_exact on that state in C: the
 * reported fields (remaining needs 128-bit arithmetic) come from the very
 * code the in-process backend runs, and a disagreement between the two, a
 * bug, is ST_INTERNAL rather than a silently different decision.
 *
 * Time is the caller's now_ms, not Redis TIME: tests inject a clock, and
 * both backends then decide identically. The cost is that instances must
 * keep their clocks in step (NTP): an instance whose clock runs d ms ahead
 * sees every TAT d ms nearer, so it may admit up to d / T extra requests
 * per key. See docs/internals/ratelimit.md, "Redis backend". */
#include "ratelimit.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hex.h"
#include "redisc.h"
#include "banned.h"

#define RL_REDIS_PREFIX_DEFAULT "settled:rl:"
#define RL_REDIS_KEY_INLINE     64    /* longer keys are hashed */
#define RL_REDIS_SLACK_MS       1000  /* TTL beyond the TAT, by default */
#define RL_REDIS_KEY_MAX        (RL_PREFIX_MAX + RL_NAME_MAX + 1 + 64)

/* KEYS[i] the state of one decision, ARGV[i] its seven little-endian
 * int64s (struct "<i8" x 7, GCRA_ARGS): now, limit, period, T's whole ms,
 * T's fraction (in units of limit), TTL slack, and 1 to store the new
 * state or 0 (a peek: decide, store nothing). The decisions are taken in
 * order and the first refusal ends them (rl_check_seq: a later policy is
 * not charged). Returns one string: for each decision taken, five
 * little-endian int64s (struct "<i8" x 5, GCRA_OUT bytes): allowed, ms and
 * frac as read (0 0 = none), ms and frac now stored (or that would be).
 * Mirrors rl_gcra_exact().
 *
 * Several decisions in one call (a register's address and wallet limits)
 * because the call's fixed cost, in Redis and in the kernel, is most of a
 * decision's: Redis's CPU a register 63 -> 41 us with both in one call
 * (20,000 each, one connection, /proc of redis-server). Redis runs the
 * script alone, so the decisions are as exact as one by one.
 *
 * Cost, not semantics, shapes the encoding: the script runs once per
 * limited request inside Redis's single thread. One binary argument read
 * by struct.unpack replaces seven decimal ones that tonumber() parsed with
 * strtod, and "%d" (an integer conversion: every value is integral and
 * below 2^53) replaces "%.0f" (libc's multi-precision float printing); the
 * stored text is byte for byte what "%.0f" wrote. The reply is one binary
 * string, not a list of integers: a Lua table grown to ten entries (five
 * rehashes) and converted to ten replies cost Redis more than two
 * struct.pack calls, and hiredis built eleven reply objects (~6k
 * instructions in settled) for what is now one (docs/internals/ratelimit.md,
 * "Cost inside Redis"). The library functions are locals. */
#define GCRA_ARGS 7
#define GCRA_OUT  (5 * 8) /* a decision's part of the reply: five "<i8" */
static const char GCRA_LUA[] =
	"local unpack, pack, call, match, format =\n"
	"  struct.unpack, struct.pack, redis.call, string.match, string.format\n"
	"local BIG = 4503599627370496 -- 2^52: a larger stored value is junk\n"
	"local out = ''\n"
	"for i = 1, #KEYS do\n"
	"local now, limit, period, t_ms, t_frac, slack, record =\n"
	"  unpack('<i8i8i8i8i8i8i8', ARGV[i])\n"
	"local ms, frac = 0, 0\n"
	"local v = call('GET', KEYS[i])\n"
	"if v then\n"
	"  local a, b = match(v, '^(%d+) (%d+)$')\n"
	"  if a then\n"
	"    ms, frac = tonumber(a), tonumber(b)\n"
	"    if ms > BIG then ms = BIG end\n"
	"    if frac > BIG then frac = BIG end\n"
	"  end\n"
	"end\n"
	"local old_ms, old_frac = ms, frac\n"
	"-- a state from another limit rounds up; one beyond the horizon is pulled in\n"
	"if frac >= limit then ms, frac = ms + 1, 0 end\n"
	"local h = now + period\n"
	"if ms > h or (ms == h and frac > 0) then ms, frac = h, 0 end\n"
	"local n_ms, n_frac = ms, frac\n"
	"if ms < now then n_ms, n_frac = now, 0 end\n"
	"n_ms, n_frac = n_ms + t_ms, n_frac + t_frac\n"
	"if n_frac >= limit then n_ms, n_frac = n_ms + 1, n_frac - limit end\n"
	"local allowed = 0\n"
	"if n_ms < h or (n_ms == h and n_frac == 0) then\n"
	"  allowed, ms, frac = 1, n_ms, n_frac\n"
	"end\n"
	"if record == 1 and (allowed == 1 or ms ~= old_ms or frac ~= old_frac) then\n"
	"  local ttl = ms - now + slack\n"
	"  if frac > 0 then ttl = ttl + 1 end\n"
	"  call('SET', KEYS[i], format('%d %d', ms, frac), 'PX', format('%d', ttl))\n"
	"end\n"
	"out = out .. pack('<i8i8i8i8i8', allowed, old_ms, old_frac, ms, frac)\n"
	"if allowed == 0 then break end\n"
	"end\n"
	"return out\n";

struct rl_redis {
	struct ratelimit base;
	struct redisc *rc;
	struct redisc_script gcra;
	char prefix[RL_PREFIX_MAX + 1];
	size_t prefix_len;
	int64_t slack_ms;  /* TTL beyond the TAT */
};

static enum st_rc redis_check(struct ratelimit *rl, const struct rl_policy *p, const char *key,
			      size_t key_len, int64_t now_ms, struct rl_decision *out);
static enum st_rc redis_peek(struct ratelimit *rl, const struct rl_policy *p, const char *key,
			     size_t key_len, int64_t now_ms, struct rl_decision *out);
static enum st_rc redis_check_seq(struct ratelimit *rl, const struct rl_policy *const *p,
				  const char *const *keys, const size_t *key_lens, int n,
				  int64_t now_ms, struct rl_decision *out, int *decided);
static size_t redis_memory(struct ratelimit *rl);
static void redis_free(struct ratelimit *rl);
static enum st_rc redis_ping(struct ratelimit *rl, struct buf *err);

static const struct rl_ops rl_redis_ops = {
	.name = "redis",
	.check = redis_check,
	.peek = redis_peek,
	.check_seq = redis_check_seq,
	.memory = redis_memory,
	.free = redis_free,
	.ping = redis_ping,
};

static struct rl_redis *redis_downcast(struct ratelimit *rl)
{
	if (rl->ops != &rl_redis_ops)
		abort(); /* a bug: another backend's object */
	return (struct rl_redis *)rl;
}

/* Writes the Redis key of (name, key) into out (RL_REDIS_KEY_MAX bytes);
 * returns its length, 0 if SHA-256 fails. */
static size_t make_key(const struct rl_redis *r, const char *name, size_t name_len,
		       const char *key, size_t key_len, char *out)
{
	size_t n = 0;

	memcpy(out, r->prefix, r->prefix_len);
	n += r->prefix_len;
	memcpy(out + n, name, name_len);
	n += name_len;
	if (key_len <= RL_REDIS_KEY_INLINE) {
		out[n++] = ':';
		if (key_len)
			memcpy(out + n, key, key_len);
		return n + key_len;
	}
	{
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int mdlen = 0;
		char hex[65];

		if (!EVP_Digest(key, key_len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
			return 0;
		out[n++] = '#';
		hex_encode(md, 32, hex); /* out has no room for the NUL */
		memcpy(out + n, hex, 64);
		n += 64;
	}
	return n;
}

/* Appends v to *p as 8 little-endian bytes (struct's "<i8"). */
static void put_le64(unsigned char **p, int64_t v)
{
	uint64_t u = (uint64_t)v;

	for (int i = 0; i < 8; i++, u >>= 8)
		*(*p)++ = (unsigned char)(u & 0xff);
}

/* The little-endian int64 at p (struct's "<i8"). */
static long long get_le64(const unsigned char *p)
{
	uint64_t u = 0;

	for (int i = 7; i >= 0; i--)
		u = (u << 8) | p[i];
	return (long long)u;
}

/* One policy's part of a script call: its key and its seven numbers. */
struct decide_arg {
	char rkey[RL_REDIS_KEY_MAX];
	size_t rkey_len;
	unsigned char a[GCRA_ARGS * 8];
};

/* Checks p and key as redis_decide's callers must and fills d; ST_OK with
 * d->rkey_len 0 for a disabled policy (allowed, nothing sent). */
static enum st_rc decide_prepare(const struct rl_redis *r, const struct rl_policy *p,
				 const char *key, size_t key_len, int64_t now, bool record,
				 struct decide_arg *d)
{
	unsigned char *ap = d->a;
	size_t name_len;

	d->rkey_len = 0;
	if (!rl_policy_valid(p) || !p->name || (!key && key_len))
		return ST_INVALID;
	name_len = strnlen(p->name, RL_NAME_MAX + 1);
	if (name_len > RL_NAME_MAX || key_len > RL_KEY_MAX || memchr(p->name, ':', name_len) ||
	    memchr(p->name, '#', name_len))
		return ST_INVALID;
	if (!p->limit)
		return ST_OK; /* disabled: nothing to remember, nothing sent */
	if (p->limit > RL_REDIS_LIMIT_MAX || p->period_ms > RL_REDIS_LIMIT_MAX ||
	    now > RL_REDIS_TIME_MAX)
		return ST_INVALID;
	d->rkey_len = make_key(r, p->name, name_len, key, key_len, d->rkey);
	if (!d->rkey_len)
		return ST_NOMEM;
	put_le64(&ap, now);
	put_le64(&ap, p->limit);
	put_le64(&ap, p->period_ms);
	put_le64(&ap, p->period_ms / p->limit);
	put_le64(&ap, p->period_ms % p->limit);
	put_le64(&ap, r->slack_ms);
	put_le64(&ap, record ? 1 : 0);
	return ST_OK;
}

/* n decisions in order in one script call, stopping at the first refusal
 * (rl_check_seq); record false stores nothing (a peek). All or none:
 * *decided is 0 on any error. A disabled policy is allowed without being
 * sent. */
static enum st_rc redis_decide(struct ratelimit *rl, const struct rl_policy *const *p,
			       const char *const *keys, const size_t *key_lens, int n,
			       int64_t now_ms, struct rl_decision *out, int *decided, bool record)
{
	struct rl_redis *r = redis_downcast(rl);
	struct decide_arg d[RL_SEQ_MAX];
	const char *args[2 * RL_SEQ_MAX];
	size_t lens[2 * RL_SEQ_MAX];
	int sent[RL_SEQ_MAX]; /* the policies sent, in order */
	int nsent = 0, got = 0, used = 0;
	redisReply *rep = NULL;
	int64_t now = now_ms < 0 ? 0 : now_ms;
	enum st_rc rc = ST_OK;

	*decided = 0;
	if (n < 0 || n > RL_SEQ_MAX || !out)
		return ST_INVALID;
	for (int i = 0; i < n; i++) {
		rc = decide_prepare(r, p[i], keys[i], key_lens[i], now, record, &d[i]);
		if (rc)
			return rc;
		if (d[i].rkey_len)
			sent[nsent++] = i;
	}
	/* KEYS first, then the ARGV of each in the same order. */
	for (int j = 0; j < nsent; j++) {
		args[j] = d[sent[j]].rkey;
		lens[j] = d[sent[j]].rkey_len;
		args[nsent + j] = (const char *)d[sent[j]].a;
		lens[nsent + j] = sizeof(d[sent[j]].a);
	}
	if (nsent) {
		rc = redisc_eval(r->rc, &r->gcra, nsent, 2 * nsent, args, lens, &rep, NULL);
		if (rc)
			return rc;
		if (rep->type != REDIS_REPLY_STRING || rep->len % GCRA_OUT || !rep->len ||
		    rep->len > GCRA_OUT * (size_t)nsent) {
			rc = ST_INTERNAL;
			goto out;
		}
		got = (int)(rep->len / GCRA_OUT);
	}
	/* Replay each step on the state the script read: the fields come from
	 * rl_gcra_exact itself, and the script must have done the same, and
	 * stopped where it does. */
	for (int i = 0; i < n; i++) {
		long long v[5];
		struct rl_tat tat;

		if (!d[i].rkey_len) {
			out[i] = (struct rl_decision){ .allowed = true };
			continue;
		}
		if (used == got) {
			rc = ST_INTERNAL; /* the script stopped without a refusal */
			goto out;
		}
		for (int e = 0; e < 5; e++)
			v[e] = get_le64((const unsigned char *)rep->str + GCRA_OUT * used + 8 * e);
		used++;
		tat = (struct rl_tat){ v[1], v[2] };
		rl_gcra_exact(p[i], &tat, now, &out[i]);
		if (out[i].allowed != (v[0] == 1) || tat.ms != v[3] || tat.frac != v[4]) {
			rc = ST_INTERNAL;
			goto out;
		}
		if (!out[i].allowed) {
			n = i + 1;
			break;
		}
	}
	if (used != got)
		rc = ST_INTERNAL; /* decisions past a refusal */
out:
	if (rep)
		freeReplyObject(rep);
	if (rc == ST_OK)
		*decided = n;
	return rc;
}

static enum st_rc redis_check_seq(struct ratelimit *rl, const struct rl_policy *const *p,
				  const char *const *keys, const size_t *key_lens, int n,
				  int64_t now_ms, struct rl_decision *out, int *decided)
{
	return redis_decide(rl, p, keys, key_lens, n, now_ms, out, decided, true);
}

static enum st_rc redis_check(struct ratelimit *rl, const struct rl_policy *p, const char *key,
			      size_t key_len, int64_t now_ms, struct rl_decision *out)
{
	int decided;

	if (!out)
		return ST_INVALID;
	return redis_decide(rl, &p, &key, &key_len, 1, now_ms, out, &decided, true);
}

static enum st_rc redis_peek(struct ratelimit *rl, const struct rl_policy *p, const char *key,
			     size_t key_len, int64_t now_ms, struct rl_decision *out)
{
	int decided;

	if (!out)
		return ST_INVALID;
	return redis_decide(rl, &p, &key, &key_len, 1, now_ms, out, &decided, false);
}

static enum st_rc redis_ping(struct ratelimit *rl, struct buf *err)
{
	return redisc_ping(redis_downcast(rl)->rc, err);
}

static size_t redis_memory(struct ratelimit *rl)
{
	(void)redis_downcast(rl);
	return sizeof(struct rl_redis);
}

static void redis_free(struct ratelimit *rl)
{
	struct rl_redis *r = redis_downcast(rl);

	redisc_free(r->rc);
	free(r);
}

void rl_redis_stats(struct ratelimit *rl, struct redisc_stats *out)
{
	redisc_stats(redis_downcast(rl)->rc, out);
}

struct ratelimit *rl_redis_new(const char *url, const struct rl_redis_options *o,
			       struct buf *err)
{
	struct redisc_options ro = { 0 };
	const char *prefix = o && o->prefix ? o->prefix : RL_REDIS_PREFIX_DEFAULT;
	struct rl_redis *r;
	size_t plen = strlen(prefix);

	if (plen > RL_PREFIX_MAX) {
		if (err)
			buf_printf(err, "the Redis key prefix is longer than %d bytes", RL_PREFIX_MAX);
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		if (err)
			buf_puts(err, "out of memory");
		return NULL;
	}
	if (o) {
		ro.pool_size = o->pool_size;
		ro.connect_timeout_ms = o->connect_timeout_ms;
		ro.command_timeout_ms = o->command_timeout_ms;
		ro.backoff_max_ms = o->backoff_max_ms;
	}
	if (redisc_new(url, &ro, &r->rc, err)) {
		free(r);
		return NULL;
	}
	r->slack_ms = o && o->ttl_slack_ms > 0 && o->ttl_slack_ms <= RL_REDIS_LIMIT_MAX
			      ? o->ttl_slack_ms
			      : RL_REDIS_SLACK_MS;
	memcpy(r->prefix, prefix, plen + 1);
	r->prefix_len = plen;
	redisc_script_init(&r->gcra, GCRA_LUA);
	r->base.ops = &rl_redis_ops;
	return &r->base;
}

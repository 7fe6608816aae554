/* rl_memory.c — the in-process rate limit backend: sharded hash tables.
 *
 * State is one entry per (policy name, key): a copy of both and the key's
 * exact TAT (struct rl_tat). The hash is SipHash-1-3 under a 128-bit key
 * drawn from getrandom() per instance, so a client who picks its own keys
 * (IP addresses, wallets, API keys) cannot aim them all at one chain. The
 * high hash bits pick a shard, the low bits a bucket; each shard has its
 * own mutex, so concurrent requests only contend when they hash to the same
 * shard, and a decision holds the lock for one chain walk.
 *
 * Reclaiming: an entry whose TAT <= now is indistinguishable from no entry
 * (the key has its full quota back), so dropping it is invisible. Expired
 * entries are freed (1) on any chain a lookup walks, (2) by an incremental
 * sweep of RL_SWEEP_STEP buckets on every insert into a shard, and (3) by a
 * full sweep of the shard before it would grow; a shard doubles its buckets
 * only if, after that sweep, it is still more than half full. So the table
 * tracks the live set (keys seen within the last period), not the number of
 * keys ever seen: see docs/internals/ratelimit.md for the bound.
 *
 * Workload: every limited request makes one check(); most are repeat keys
 * (lookups), floods are of distinct keys (inserts, where the sweeping is
 * paid). Memory accounting models glibc's chunk sizes so that memory()
 * reports what the heap really holds, not just what was asked for. */
#include "ratelimit.h"

#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "banned.h"

#define RL_SHARDS_DEFAULT 64
#define RL_SHARDS_MAX     4096
#define RL_BUCKETS_MIN    16   /* per shard, a power of two */
#define RL_SWEEP_STEP     2    /* buckets examined per insert */
#define RL_ID_MAX         (RL_NAME_MAX + 1 + RL_KEY_MAX)

struct rl_entry {
	struct rl_entry *next;
	uint64_t hash;
	struct rl_tat tat;
	uint32_t len;          /* of id */
	unsigned char id[];    /* policy name, NUL, key (names hold no NUL) */
};

/* Bytes to allocate for an entry whose id is n bytes: 36 + n on LP64, but
 * never less than the struct itself. */
#define ENTRY_SIZE(n)                                                        \
	(offsetof(struct rl_entry, id) + (n) > sizeof(struct rl_entry)       \
		 ? offsetof(struct rl_entry, id) + (n)                        \
		 : sizeof(struct rl_entry))

struct rl_shard {
	_Alignas(64) pthread_mutex_t lock; /* one cache line per shard at least */
	struct rl_entry **buckets;
	size_t nbuckets;   /* power of two */
	size_t count;      /* entries, live or expired */
	size_t sweep;      /* next bucket for the incremental sweep */
	size_t bytes;      /* heap held by entries and buckets (mem_charge) */
};

struct rl_memory {
	struct ratelimit base;
	uint64_t k0, k1;   /* SipHash key */
	size_t nshards;
	struct rl_shard *shards;
};

static enum st_rc mem_check(struct ratelimit *rl, const struct rl_policy *p, const char *key,
			    size_t key_len, int64_t now_ms, struct rl_decision *out);
static enum st_rc mem_peek(struct ratelimit *rl, const struct rl_policy *p, const char *key,
			   size_t key_len, int64_t now_ms, struct rl_decision *out);
static size_t mem_memory(struct ratelimit *rl);
static void mem_free(struct ratelimit *rl);

static const struct rl_ops rl_memory_ops = {
	.name = "memory",
	.check = mem_check,
	.peek = mem_peek,
	.memory = mem_memory,
	.free = mem_free,
};

static struct rl_memory *mem_downcast(struct ratelimit *rl)
{
	if (rl->ops != &rl_memory_ops)
		abort(); /* a bug: another backend's object */
	return (struct rl_memory *)rl;
}

/* Heap bytes a malloc(n) really occupies with glibc on 64-bit: an 8-byte
 * header, 16-byte granularity, 32 bytes at least. */
static size_t mem_charge(size_t n)
{
	size_t c = (n + 8 + 15) & ~(size_t)15;

	return c < 32 ? 32 : c;
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                   \
	do {                                                                       \
		v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);          \
		v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                             \
		v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                             \
		v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);          \
	} while (0)

static uint64_t load64_le(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* SipHash-1-3 (as Python and Rust use for their hash tables). */
static uint64_t siphash13(uint64_t k0, uint64_t k1, const unsigned char *in, size_t len)
{
	uint64_t v0 = UINT64_C(0x736f6d6570736575) ^ k0;
	uint64_t v1 = UINT64_C(0x646f72616e646f6d) ^ k1;
	uint64_t v2 = UINT64_C(0x6c7967656e657261) ^ k0;
	uint64_t v3 = UINT64_C(0x7465646279746573) ^ k1;
	uint64_t m, b = (uint64_t)len << 56;
	size_t i, tail = len & 7;

	for (i = 0; i + 8 <= len; i += 8) {
		m = load64_le(in + i);
		v3 ^= m;
		SIPROUND;
		v0 ^= m;
	}
	for (size_t j = 0; j < tail; j++)
		b |= (uint64_t)in[i + j] << (8 * j);
	v3 ^= b;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* An entry is kept this long after its key is back to a full quota, as
 * the Redis backend keeps its keys (RL_REDIS_SLACK_MS): a clock stepped back
 * by up to this much still finds the state it would have had, so both
 * backends decide alike (test_rl_redis.c walks the clock back too). */
#define RL_MEMORY_SLACK_MS 1000

/* Whether the entry may be freed at now: back to a full quota, plus the
 * slack. An entry kept longer changes no decision (its TAT is past). */
static bool entry_expired(const struct rl_entry *e, int64_t now)
{
	int64_t t = now - RL_MEMORY_SLACK_MS;

	return e->tat.ms < t || (e->tat.ms == t && e->tat.frac == 0);
}

static void entry_free(struct rl_shard *s, struct rl_entry *e)
{
	s->bytes -= mem_charge(ENTRY_SIZE(e->len));
	s->count--;
	free(e);
}

/* Frees the expired entries of one chain. */
static void sweep_bucket(struct rl_shard *s, size_t i, int64_t now)
{
	struct rl_entry **pp = &s->buckets[i], *e;

	while ((e = *pp)) {
		if (entry_expired(e, now)) {
			*pp = e->next;
			entry_free(s, e);
		} else {
			pp = &e->next;
		}
	}
}

/* Doubles the bucket array. On ENOMEM the shard keeps working with longer
 * chains, so failure is not reported. */
static void shard_grow(struct rl_shard *s)
{
	size_t n = s->nbuckets * 2;
	struct rl_entry **nb, *e, *next;

	if (n > SIZE_MAX / sizeof(*nb))
		return;
	nb = calloc(n, sizeof(*nb));
	if (!nb)
		return;
	for (size_t i = 0; i < s->nbuckets; i++) {
		for (e = s->buckets[i]; e; e = next) {
			next = e->next;
			e->next = nb[e->hash & (n - 1)];
			nb[e->hash & (n - 1)] = e;
		}
	}
	s->bytes -= mem_charge(s->nbuckets * sizeof(*nb));
	s->bytes += mem_charge(n * sizeof(*nb));
	free(s->buckets);
	s->buckets = nb;
	s->nbuckets = n;
	s->sweep = 0;
}

/* Runs before every insert: the incremental sweep, and at load factor 1 a
 * full sweep, growing only when that left the shard over half full. The
 * full sweep costs O(nbuckets) but then at least nbuckets/2 inserts pass
 * before the next one, so inserts stay amortized O(1). */
static void shard_make_room(struct rl_shard *s, int64_t now)
{
	for (int k = 0; k < RL_SWEEP_STEP; k++) {
		sweep_bucket(s, s->sweep, now);
		s->sweep = (s->sweep + 1) & (s->nbuckets - 1);
	}
	if (s->count < s->nbuckets)
		return;
	for (size_t i = 0; i < s->nbuckets; i++)
		sweep_bucket(s, i, now);
	if (s->count > s->nbuckets / 2)
		shard_grow(s);
}

/* One decision; with record false nothing is stored (a peek): the found
 * entry's TAT is stepped on a copy and a fresh key gets no entry. */
static enum st_rc mem_decide(struct ratelimit *rl, const struct rl_policy *p, const char *key,
			     size_t key_len, int64_t now_ms, struct rl_decision *out, bool record)
{
	struct rl_memory *m = mem_downcast(rl);
	unsigned char id[RL_ID_MAX];
	struct rl_decision d;
	struct rl_entry **pp, *e, *found = NULL;
	struct rl_shard *s;
	size_t name_len, id_len;
	uint64_t h;
	int64_t now = now_ms < 0 ? 0 : now_ms > RL_TIME_MAX ? RL_TIME_MAX : now_ms;
	enum st_rc rc = ST_OK;

	if (!rl_policy_valid(p) || !p->name || !out || (!key && key_len))
		return ST_INVALID;
	name_len = strnlen(p->name, RL_NAME_MAX + 1);
	if (name_len > RL_NAME_MAX || key_len > RL_KEY_MAX)
		return ST_INVALID;
	if (!p->limit) {
		/* Disabled: nothing to remember. */
		*out = (struct rl_decision){ .allowed = true };
		return ST_OK;
	}

	memcpy(id, p->name, name_len);
	id[name_len] = '\0';
	if (key_len)
		memcpy(id + name_len + 1, key, key_len);
	id_len = name_len + 1 + key_len;
	h = siphash13(m->k0, m->k1, id, id_len);
	s = &m->shards[(h >> 32) % m->nshards];

	pthread_mutex_lock(&s->lock);
	pp = &s->buckets[h & (s->nbuckets - 1)];
	while ((e = *pp)) {
		if (e->hash == h && e->len == id_len && !memcmp(e->id, id, id_len)) {
			found = e;
			pp = &e->next;
		} else if (entry_expired(e, now)) {
			*pp = e->next;
			entry_free(s, e);
		} else {
			pp = &e->next;
		}
	}
	if (found || !record) {
		struct rl_tat copy = found ? found->tat : (struct rl_tat){ 0, 0 };

		rl_gcra_exact(p, record ? &found->tat : &copy, now, &d);
		goto out;
	}

	/* A fresh key is always allowed (limit >= 1), so it always needs an
	 * entry; make room first so the new entry is not swept at once. */
	shard_make_room(s, now);
	e = malloc(ENTRY_SIZE(id_len));
	if (!e) {
		rc = ST_NOMEM;
		goto out;
	}
	e->hash = h;
	e->len = (uint32_t)id_len;
	memcpy(e->id, id, id_len);
	e->tat = (struct rl_tat){ 0, 0 };
	rl_gcra_exact(p, &e->tat, now, &d);
	pp = &s->buckets[h & (s->nbuckets - 1)];
	e->next = *pp;
	*pp = e;
	s->count++;
	s->bytes += mem_charge(ENTRY_SIZE(id_len));
out:
	pthread_mutex_unlock(&s->lock);
	if (!rc)
		*out = d;
	return rc;
}

static enum st_rc mem_check(struct ratelimit *rl, const struct rl_policy *p, const char *key,
			    size_t key_len, int64_t now_ms, struct rl_decision *out)
{
	return mem_decide(rl, p, key, key_len, now_ms, out, true);
}

static enum st_rc mem_peek(struct ratelimit *rl, const struct rl_policy *p, const char *key,
			   size_t key_len, int64_t now_ms, struct rl_decision *out)
{
	return mem_decide(rl, p, key, key_len, now_ms, out, false);
}

static size_t mem_memory(struct ratelimit *rl)
{
	struct rl_memory *m = mem_downcast(rl);
	size_t total = mem_charge(sizeof(*m)) + mem_charge(m->nshards * sizeof(*m->shards));

	for (size_t i = 0; i < m->nshards; i++) {
		pthread_mutex_lock(&m->shards[i].lock);
		total += m->shards[i].bytes;
		pthread_mutex_unlock(&m->shards[i].lock);
	}
	return total;
}

/* Frees shards [0, n), which were fully initialized. */
static void shards_release(struct rl_shard *shards, size_t n)
{
	struct rl_entry *e, *next;

	for (size_t i = 0; i < n; i++) {
		for (size_t b = 0; b < shards[i].nbuckets; b++) {
			for (e = shards[i].buckets[b]; e; e = next) {
				next = e->next;
				free(e);
			}
		}
		free(shards[i].buckets);
		pthread_mutex_destroy(&shards[i].lock);
	}
	free(shards);
}

static void mem_free(struct ratelimit *rl)
{
	struct rl_memory *m = mem_downcast(rl);

	shards_release(m->shards, m->nshards);
	free(m);
}

static bool random_key(uint64_t k[2])
{
	unsigned char *p = (unsigned char *)k;
	size_t got = 0;
	ssize_t n;

	while (got < 2 * sizeof(uint64_t)) {
		n = getrandom(p + got, 2 * sizeof(uint64_t) - got, 0);
		if (n < 0) {
			if (errno == EINTR) /* only while the pool is not yet seeded */
				continue;
			return false;
		}
		got += (size_t)n;
	}
	return true;
}

struct ratelimit *rl_memory_new(size_t nshards)
{
	struct rl_memory *m = NULL;
	struct rl_shard *shards = NULL;
	size_t n = 0;
	uint64_t k[2];

	if (!nshards)
		nshards = RL_SHARDS_DEFAULT;
	if (nshards > RL_SHARDS_MAX)
		nshards = RL_SHARDS_MAX;
	if (!random_key(k))
		goto out;
	m = calloc(1, sizeof(*m));
	shards = aligned_alloc(_Alignof(struct rl_shard), nshards * sizeof(*shards));
	if (!m || !shards)
		goto out;
	memset(shards, 0, nshards * sizeof(*shards));
	for (n = 0; n < nshards; n++) {
		struct rl_shard *s = &shards[n];

		s->buckets = calloc(RL_BUCKETS_MIN, sizeof(*s->buckets));
		if (!s->buckets)
			goto out;
		if (pthread_mutex_init(&s->lock, NULL)) {
			free(s->buckets);
			goto out;
		}
		s->nbuckets = RL_BUCKETS_MIN;
		s->bytes = mem_charge(RL_BUCKETS_MIN * sizeof(*s->buckets));
	}
	m->base.ops = &rl_memory_ops;
	m->k0 = k[0];
	m->k1 = k[1];
	m->nshards = nshards;
	m->shards = shards;
	return &m->base;
out:
	if (shards)
		shards_release(shards, n);
	free(m);
	return NULL;
}

/* idempotency.c — see idempotency.h for the design. */
#include "idempotency.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fmt.h"
#include "hex.h"
#include "banned.h"

#define IDEM_SHARDS 64
#define CACHE_SHARDS 16
#define CACHE_BUCKETS 512      /* per shard; chains stay short at the default bound */

struct running {
	char *id; /* scope + '\n' + key */
	struct running *next;
};

/* A cached finished record: one allocation, id and body after the struct. */
struct cached {
	struct cached *hnext;          /* bucket chain */
	struct cached *prev, *next;    /* LRU list, most recent first */
	uint32_t hash;
	size_t size;                   /* bytes charged against the bound */
	int64_t expires_at;
	int status;
	char fingerprint[IDEM_FINGERPRINT_LEN + 1];
	char *location;                /* into the block, or NULL */
	char *body;                    /* into the block */
	size_t body_len;
	/* The request memo (idem_cache_note_request): the raw body of a request
	 * shown to carry this fingerprint, and its rate-limit key; NULL until
	 * noted. Malloc'd, charged to size. */
	char *memo;                    /* body bytes, NUL, rl key, NUL */
	size_t memo_body_len;
	char id[];                     /* scope + '\n' + key */
};

struct cache_shard {
	pthread_mutex_t mu;
	struct cached *bucket[CACHE_BUCKETS];
	struct cached *lru_head, *lru_tail;
	size_t n, bytes;
};

/* Running keys, sharded so unrelated requests don't contend. Lists stay
 * short: an entry lives only while its request runs. */
struct idem {
	/* Fetched once: EVP_sha256() makes OpenSSL 3 look the provider's
	 * implementation up again on every digest (~4,000 instructions). */
	EVP_MD *sha256;
	struct {
		pthread_mutex_t mu;
		struct running *head;
	} shard[IDEM_SHARDS];
	/* The finished-record cache, sharded like the running set; each shard
	 * holds a share of the bounds. */
	size_t cache_max_n, cache_max_bytes; /* per shard; max_n 0 = no cache */
	struct cache_shard cache[CACHE_SHARDS];
};

struct idem *idem_new_bounded(size_t max_entries, size_t max_bytes)
{
	struct idem *ix = calloc(1, sizeof(*ix));

	if (!ix)
		return NULL;
	for (int i = 0; i < IDEM_SHARDS; i++)
		pthread_mutex_init(&ix->shard[i].mu, NULL);
	for (int i = 0; i < CACHE_SHARDS; i++)
		pthread_mutex_init(&ix->cache[i].mu, NULL);
	if (max_entries && max_bytes) {
		ix->cache_max_n = (max_entries + CACHE_SHARDS - 1) / CACHE_SHARDS;
		ix->cache_max_bytes = max_bytes / CACHE_SHARDS;
	}
	ix->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL); /* NULL: EVP_sha256() each time */
	return ix;
}

struct idem *idem_new(void)
{
	return idem_new_bounded(IDEM_CACHE_ENTRIES, IDEM_CACHE_BYTES);
}

void idem_free(struct idem *ix)
{
	if (!ix)
		return;
	for (int i = 0; i < IDEM_SHARDS; i++) {
		while (ix->shard[i].head) {
			struct running *r = ix->shard[i].head;

			ix->shard[i].head = r->next;
			free(r->id);
			free(r);
		}
		pthread_mutex_destroy(&ix->shard[i].mu);
	}
	for (int i = 0; i < CACHE_SHARDS; i++) {
		while (ix->cache[i].lru_head) {
			struct cached *c = ix->cache[i].lru_head;

			ix->cache[i].lru_head = c->next;
			free(c->memo);
			free(c);
		}
		pthread_mutex_destroy(&ix->cache[i].mu);
	}
	EVP_MD_free(ix->sha256);
	free(ix);
}

static char *running_id(const char *scope, const char *key, unsigned *shard)
{
	size_t ls = strlen(scope), lk = strlen(key);
	char *id = malloc(ls + lk + 2);
	uint32_t h = 2166136261u;

	if (!id)
		return NULL;
	memcpy(id, scope, ls);
	id[ls] = '\n';
	memcpy(id + ls + 1, key, lk + 1);
	for (const char *p = id; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	*shard = h % IDEM_SHARDS;
	return id;
}

enum st_rc idem_begin(struct idem *ix, const char *scope, const char *key)
{
	unsigned s;
	char *id = running_id(scope, key, &s);
	struct running *r;

	if (!id)
		return ST_NOMEM;
	pthread_mutex_lock(&ix->shard[s].mu);
	for (r = ix->shard[s].head; r; r = r->next) {
		if (!strcmp(r->id, id)) {
			pthread_mutex_unlock(&ix->shard[s].mu);
			free(id);
			return ST_CONFLICT;
		}
	}
	r = malloc(sizeof(*r));
	if (r) {
		r->id = id;
		r->next = ix->shard[s].head;
		ix->shard[s].head = r;
	}
	pthread_mutex_unlock(&ix->shard[s].mu);
	if (!r) {
		free(id);
		return ST_NOMEM;
	}
	return ST_OK;
}

void idem_end(struct idem *ix, const char *scope, const char *key)
{
	unsigned s;
	char *id = running_id(scope, key, &s);

	if (!id)
		return; /* only under OOM; the entry then lingers harmlessly small */
	pthread_mutex_lock(&ix->shard[s].mu);
	for (struct running **pp = &ix->shard[s].head; *pp; pp = &(*pp)->next) {
		if (!strcmp((*pp)->id, id)) {
			struct running *r = *pp;

			*pp = r->next;
			free(r->id);
			free(r);
			break;
		}
	}
	pthread_mutex_unlock(&ix->shard[s].mu);
	free(id);
}

void idem_fingerprint(const struct idem *ix, const char *method, const char *route, const char *body,
		      size_t body_len, char out[IDEM_FINGERPRINT_LEN + 1])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	const char *parts[3] = { method, route, body };
	size_t lens[3] = { strlen(method), strlen(route), body_len };

	/* Length-prefixed parts: ("POST", "/a", "bc") never hashes like ("POST", "/ab", "c"). */
	if (ctx && EVP_DigestInit_ex(ctx, ix && ix->sha256 ? ix->sha256 : EVP_sha256(), NULL)) {
		for (int i = 0; i < 3; i++) {
			unsigned char len8[8];

			for (int b = 0; b < 8; b++)
				len8[b] = (unsigned char)((uint64_t)lens[i] >> (56 - 8 * b));
			EVP_DigestUpdate(ctx, len8, 8);
			EVP_DigestUpdate(ctx, parts[i], lens[i]);
		}
		EVP_DigestFinal_ex(ctx, md, &mdlen);
	}
	EVP_MD_CTX_free(ctx);
	if (mdlen != 32)
		memset(md, 0, sizeof(md)); /* only under OOM: all-zero never equals a real digest's row */
	hex_encode(md, sizeof(md), out);
}

void idem_record_release(struct idem_record *r)
{
	free(r->location);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

static enum st_rc record_from_row(const struct st_rows *rows, const char *fingerprint,
				  struct idem_record *out)
{
	const char *loc = rows_text(rows, 0, 2);
	size_t blen = rows_len(rows, 0, 3);

	memset(out, 0, sizeof(*out));
	out->same_fingerprint = !strcmp(rows_text(rows, 0, 0), fingerprint);
	rows_copy(rows, 0, 0, out->fingerprint, sizeof(out->fingerprint));
	out->status = (int)rows_i64(rows, 0, 1);
	out->expires_at = rows_i64(rows, 0, 4);
	out->body = malloc(blen + 1);
	if (!out->body)
		return ST_NOMEM;
	memcpy(out->body, rows_text(rows, 0, 3) ? rows_text(rows, 0, 3) : "", blen);
	out->body[blen] = '\0';
	out->body_len = blen;
	if (loc && !(out->location = strdup(loc))) {
		idem_record_release(out);
		return ST_NOMEM;
	}
	return ST_OK;
}

enum st_rc idem_lookup(struct tx *tx, const char *scope, const char *key, const char *fingerprint,
		       struct idem_record *out)
{
	struct st_rows *rows = NULL;
	enum st_rc rc;

	rc = tx_query(tx,
		      "SELECT fingerprint, status, location, body, expires_at FROM idempotency_keys"
		      " WHERE scope = $1 AND idem_key = $2 AND expires_at > $3 AND status > 0",
		      ST_ARGS(SV_S(scope), SV_S(key), SV_I(tx_now_ms(tx))), &rows);
	if (rc)
		return rc;
	rc = rows->nrows ? record_from_row(rows, fingerprint, out) : ST_NOT_FOUND;
	rows_free(rows);
	return rc;
}

enum st_rc idem_record(struct tx *tx, const char *scope, const char *key, const char *fingerprint,
		       const char *owner, int64_t ttl_ms, const struct idem_answer *ans,
		       enum idem_put *res, struct idem_record *found)
{
	int64_t now = tx_now_ms(tx), changes = 0;
	enum st_rc rc;

	/* The primary key is the claim, and the row carries its answer from
	 * its first write: one row write a keyed request. An expired row is
	 * taken over in the same statement, so a key can be reused after its
	 * TTL even before the sweeper has deleted the old row. On PostgreSQL
	 * a concurrent writer of the key blocks here until the first
	 * transaction ends, then sees its row. */
	rc = tx_exec(tx,
		     "INSERT INTO idempotency_keys"
		     " (scope, idem_key, fingerprint, owner, status, location, body, created_at, expires_at)"
		     " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
		     " ON CONFLICT (scope, idem_key) DO UPDATE SET"
		     "  fingerprint = excluded.fingerprint, owner = excluded.owner,"
		     "  status = excluded.status, location = excluded.location, body = excluded.body,"
		     "  created_at = excluded.created_at, expires_at = excluded.expires_at"
		     " WHERE idempotency_keys.expires_at <= excluded.created_at",
		     ST_ARGS(SV_S(scope), SV_S(key), SV_S(fingerprint), SV_S(owner), SV_I(ans->status),
			     SV_SOPT(ans->location), SV_SN(ans->body, ans->body_len), SV_I(now),
			     SV_I(now + ttl_ms)),
		     &changes);
	if (rc)
		return rc;
	if (changes > 0) {
		*res = IDEM_RECORDED;
		return ST_OK;
	}
	rc = idem_lookup(tx, scope, key, fingerprint, found);
	if (rc == ST_NOT_FOUND)
		rc = ST_BUSY; /* a live row without a response: cannot happen on a committed row */
	if (rc == ST_OK)
		*res = IDEM_FOUND;
	return rc;
}

/* idem_record's statement, one row a key. */
static const struct st_rows_sql record_rows = {
	.head = "INSERT INTO idempotency_keys"
		" (scope, idem_key, fingerprint, owner, status, location, body, created_at, expires_at)"
		" VALUES ",
	.row = "($1, $2, $3, $4, $5, $6, $7, $8, $9)",
	.tail = " ON CONFLICT (scope, idem_key) DO UPDATE SET"
		"  fingerprint = excluded.fingerprint, owner = excluded.owner,"
		"  status = excluded.status, location = excluded.location, body = excluded.body,"
		"  created_at = excluded.created_at, expires_at = excluded.expires_at"
		" WHERE idempotency_keys.expires_at <= excluded.created_at",
	.width = 9,
};

enum st_rc idem_record_many(struct tx *tx, const struct idem_new_record *recs, int n,
			    const char *owner, int64_t ttl_ms, int64_t *recorded)
{
	struct st_val *v = calloc((size_t)n * 9, sizeof(*v));
	int64_t now = tx_now_ms(tx);
	enum st_rc rc;

	if (!v)
		return ST_NOMEM;
	for (int i = 0; i < n; i++) {
		struct st_val *r = v + 9 * i;

		r[0] = SV_S(recs[i].scope);
		r[1] = SV_S(recs[i].key);
		r[2] = SV_S(recs[i].fingerprint);
		r[3] = SV_S(owner);
		r[4] = SV_I(recs[i].ans.status);
		r[5] = SV_SOPT(recs[i].ans.location);
		r[6] = SV_SN(recs[i].ans.body, recs[i].ans.body_len);
		r[7] = SV_I(now);
		r[8] = SV_I(now + ttl_ms);
	}
	rc = tx_exec_rows(tx, &record_rows, n, v, recorded);
	free(v);
	return rc;
}

/* ---- the cache of finished records ---- */

static uint32_t cache_hash(const char *scope, const char *key)
{
	uint32_t h = 2166136261u;

	for (const char *p = scope; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	h = (h ^ '\n') * 16777619u;
	for (const char *p = key; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h;
}

static bool cached_is(const struct cached *c, uint32_t h, const char *scope, size_t ls,
		      const char *key)
{
	return c->hash == h && !strncmp(c->id, scope, ls) && c->id[ls] == '\n' &&
	       !strcmp(c->id + ls + 1, key);
}

/* With the shard locked: the entry for scope+key, or NULL. */
static struct cached *cache_find(struct cache_shard *sh, uint32_t h, const char *scope,
				 const char *key)
{
	size_t ls = strlen(scope);

	for (struct cached *c = sh->bucket[(h / CACHE_SHARDS) % CACHE_BUCKETS]; c; c = c->hnext)
		if (cached_is(c, h, scope, ls, key))
			return c;
	return NULL;
}

/* With the shard locked: unlinks c from its bucket and the LRU list, frees it. */
static void cache_drop(struct cache_shard *sh, struct cached *c)
{
	for (struct cached **pp = &sh->bucket[(c->hash / CACHE_SHARDS) % CACHE_BUCKETS]; *pp;
	     pp = &(*pp)->hnext) {
		if (*pp == c) {
			*pp = c->hnext;
			break;
		}
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		sh->lru_head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		sh->lru_tail = c->prev;
	sh->n--;
	sh->bytes -= c->size;
	free(c->memo);
	free(c);
}

static void lru_push_front(struct cache_shard *sh, struct cached *c)
{
	c->prev = NULL;
	c->next = sh->lru_head;
	if (sh->lru_head)
		sh->lru_head->prev = c;
	sh->lru_head = c;
	if (!sh->lru_tail)
		sh->lru_tail = c;
}

/* With the shard locked: unlinks c from the LRU list and puts it first. */
static void lru_touch(struct cache_shard *sh, struct cached *c)
{
	if (c == sh->lru_head)
		return;
	c->prev->next = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		sh->lru_tail = c->prev;
	lru_push_front(sh, c);
}

static bool cache_live(const struct cached *c, int64_t now_ms)
{
	return now_ms < c->expires_at - IDEM_CACHE_SKEW_MS;
}

/* cache_find, dropping an entry that is no longer live: the store decides
 * from then on. The caller holds sh->mu. */
static struct cached *cache_find_live(struct cache_shard *sh, uint32_t h, const char *scope,
				      const char *key, int64_t now_ms)
{
	struct cached *c = cache_find(sh, h, scope, key);

	if (c && !cache_live(c, now_ms)) {
		cache_drop(sh, c);
		c = NULL;
	}
	return c;
}

/* Copies c's answer into out, under the shard's lock: the entry may be
 * evicted right after it is released. false when short of memory (what was
 * copied stays in out for idem_record_release). */
static bool cache_copy_out(const struct cached *c, struct idem_record *out)
{
	out->body = malloc(c->body_len + 1);
	out->location = c->location ? strdup(c->location) : NULL;
	if (!out->body || (c->location && !out->location))
		return false;
	memcpy(out->body, c->body, c->body_len);
	out->body[c->body_len] = '\0';
	out->body_len = c->body_len;
	out->status = c->status;
	out->expires_at = c->expires_at;
	memcpy(out->fingerprint, c->fingerprint, sizeof(out->fingerprint));
	return true;
}

enum st_rc idem_cache_get(struct idem *ix, const char *scope, const char *key,
			  const char *fingerprint, int64_t now_ms, struct idem_record *out)
{
	uint32_t h = cache_hash(scope, key);
	struct cache_shard *sh = &ix->cache[h % CACHE_SHARDS];
	struct cached *c;
	enum st_rc rc = ST_NOT_FOUND;

	memset(out, 0, sizeof(*out));
	if (!ix->cache_max_n)
		return ST_NOT_FOUND;
	pthread_mutex_lock(&sh->mu);
	c = cache_find_live(sh, h, scope, key, now_ms);
	if (c && cache_copy_out(c, out)) {
		out->same_fingerprint = !strcmp(c->fingerprint, fingerprint);
		rc = ST_OK;
		lru_touch(sh, c); /* most recently used first */
	}
	pthread_mutex_unlock(&sh->mu);
	if (rc != ST_OK)
		idem_record_release(out); /* OOM on the copy: the store answers instead */
	return rc;
}

void idem_cache_put(struct idem *ix, const char *scope, const char *key,
		    const struct idem_record *rec, int64_t now_ms)
{
	uint32_t h = cache_hash(scope, key);
	struct cache_shard *sh = &ix->cache[h % CACHE_SHARDS];
	size_t ls = strlen(scope), lk = strlen(key);
	size_t ll = rec->location ? strlen(rec->location) + 1 : 0;
	size_t size = sizeof(struct cached) + ls + 1 + lk + 1 + ll + rec->body_len;
	struct cached *c, *old;
	char *p;

	if (!ix->cache_max_n || size > ix->cache_max_bytes || rec->status <= 0 ||
	    now_ms >= rec->expires_at - IDEM_CACHE_SKEW_MS)
		return;
	c = malloc(size);
	if (!c)
		return; /* a cache: missing an entry is always correct */
	memset(c, 0, sizeof(*c));
	c->hash = h;
	c->size = size;
	c->expires_at = rec->expires_at;
	c->status = rec->status;
	memcpy(c->fingerprint, rec->fingerprint, sizeof(c->fingerprint));
	c->fingerprint[IDEM_FINGERPRINT_LEN] = '\0';
	memcpy(c->id, scope, ls);
	c->id[ls] = '\n';
	memcpy(c->id + ls + 1, key, lk + 1);
	p = c->id + ls + 1 + lk + 1;
	if (rec->location) {
		memcpy(p, rec->location, ll);
		c->location = p;
		p += ll;
	}
	memcpy(p, rec->body, rec->body_len);
	c->body = p;
	c->body_len = rec->body_len;

	pthread_mutex_lock(&sh->mu);
	old = cache_find(sh, h, scope, key);
	if (old)
		cache_drop(sh, old); /* a newer record of the key (after an expiry) */
	c->hnext = sh->bucket[(h / CACHE_SHARDS) % CACHE_BUCKETS];
	sh->bucket[(h / CACHE_SHARDS) % CACHE_BUCKETS] = c;
	lru_push_front(sh, c);
	sh->n++;
	sh->bytes += size;
	while (sh->n > ix->cache_max_n || sh->bytes > ix->cache_max_bytes)
		cache_drop(sh, sh->lru_tail); /* never c: c alone fits both bounds */
	pthread_mutex_unlock(&sh->mu);
}

void idem_cache_note_request(struct idem *ix, const char *scope, const char *key,
			     const char *fingerprint, const char *body, size_t body_len,
			     const char *rl_key, int64_t now_ms)
{
	uint32_t h = cache_hash(scope, key);
	struct cache_shard *sh = &ix->cache[h % CACHE_SHARDS];
	size_t lr = strlen(rl_key), size = body_len + 1 + lr + 1;
	struct cached *c;
	char *memo;

	if (!ix->cache_max_n || size > ix->cache_max_bytes / 4)
		return;
	memo = malloc(size);
	if (!memo)
		return; /* a cache: a missing memo only means the long way */
	memcpy(memo, body, body_len);
	memo[body_len] = '\0';
	memcpy(memo + body_len + 1, rl_key, lr + 1);
	pthread_mutex_lock(&sh->mu);
	c = cache_find(sh, h, scope, key);
	/* Only onto the entry whose fingerprint this body was shown to have. */
	if (c && cache_live(c, now_ms) && !c->memo && !strcmp(c->fingerprint, fingerprint) &&
	    c->size + size <= ix->cache_max_bytes) {
		c->memo = memo;
		c->memo_body_len = body_len;
		c->size += size;
		sh->bytes += size;
		memo = NULL;
		lru_touch(sh, c);
		while (sh->bytes > ix->cache_max_bytes)
			cache_drop(sh, sh->lru_tail); /* never c: it fits the bound alone */
	}
	pthread_mutex_unlock(&sh->mu);
	free(memo);
}

enum st_rc idem_cache_replay(struct idem *ix, const char *scope, const char *key, const char *body,
			     size_t body_len, int64_t now_ms, struct idem_record *out,
			     char rl_key[IDEM_RL_KEY_MAX + 1])
{
	uint32_t h = cache_hash(scope, key);
	struct cache_shard *sh = &ix->cache[h % CACHE_SHARDS];
	struct cached *c;
	enum st_rc rc = ST_NOT_FOUND;
	size_t lr = 0;

	memset(out, 0, sizeof(*out));
	if (!ix->cache_max_n)
		return ST_NOT_FOUND;
	pthread_mutex_lock(&sh->mu);
	c = cache_find_live(sh, h, scope, key, now_ms);
	/* The same bytes as a body with the stored fingerprint: the same
	 * fingerprint, without hashing. Anything else takes the long way. */
	if (c && c->memo && c->memo_body_len == body_len && !memcmp(c->memo, body, body_len) &&
	    (lr = strlen(c->memo + body_len + 1)) <= IDEM_RL_KEY_MAX && cache_copy_out(c, out)) {
		out->same_fingerprint = true;
		memcpy(rl_key, c->memo + body_len + 1, lr + 1);
		rc = ST_OK;
		lru_touch(sh, c);
	}
	pthread_mutex_unlock(&sh->mu);
	if (rc != ST_OK)
		idem_record_release(out);
	return rc;
}

void idem_cache_usage(struct idem *ix, size_t *entries, size_t *bytes)
{
	size_t n = 0, b = 0;

	for (int i = 0; i < CACHE_SHARDS; i++) {
		pthread_mutex_lock(&ix->cache[i].mu);
		n += ix->cache[i].n;
		b += ix->cache[i].bytes;
		pthread_mutex_unlock(&ix->cache[i].mu);
	}
	if (entries)
		*entries = n;
	if (bytes)
		*bytes = b;
}

struct replay_call {
	const char *scope, *key, *fingerprint;
	struct idem_record *out;
};

static enum st_rc replay_lookup_unit(struct tx *tx, void *arg)
{
	struct replay_call *c = arg;

	return idem_lookup(tx, c->scope, c->key, c->fingerprint, c->out);
}

enum st_rc idem_replay_lookup(struct idem *ix, struct store *st, int64_t now_ms, const char *scope,
			      const char *key, const char *fingerprint, struct idem_record *out)
{
	struct replay_call c = { .scope = scope, .key = key, .fingerprint = fingerprint, .out = out };
	enum st_rc rc;

	if (idem_cache_get(ix, scope, key, fingerprint, now_ms, out) == ST_OK)
		return ST_OK;
	rc = store_read_one(st, replay_lookup_unit, &c);
	if (rc == ST_OK)
		idem_cache_put(ix, scope, key, out, now_ms);
	return rc;
}

enum st_rc idem_sweep(struct tx *tx, int64_t limit, int64_t *deleted)
{
	/* Bounded batches keep each sweep a short transaction. */
	if (tx_dialect(tx) == ST_PG)
		return tx_exec(tx,
			       "DELETE FROM idempotency_keys WHERE ctid IN"
			       " (SELECT ctid FROM idempotency_keys WHERE expires_at <= $1 LIMIT $2)",
			       ST_ARGS(SV_I(tx_now_ms(tx)), SV_I(limit)), deleted);
	return tx_exec(tx,
		       "DELETE FROM idempotency_keys WHERE rowid IN"
		       " (SELECT rowid FROM idempotency_keys WHERE expires_at <= $1 LIMIT $2)",
		       ST_ARGS(SV_I(tx_now_ms(tx)), SV_I(limit)), deleted);
}

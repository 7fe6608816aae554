/* idempotency.c — see idempotency.h for the design. */
#include "idempotency.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fmt.h"
#include "banned.h"

#define IDEM_SHARDS 64

struct running {
	char *id; /* scope + '\n' + key */
	struct running *next;
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
};

struct idem *idem_new(void)
{
	struct idem *ix = calloc(1, sizeof(*ix));

	if (!ix)
		return NULL;
	for (int i = 0; i < IDEM_SHARDS; i++)
		pthread_mutex_init(&ix->shard[i].mu, NULL);
	ix->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL); /* NULL: EVP_sha256() each time */
	return ix;
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
	fmt_hex(md, sizeof(md), out);
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
	out->status = (int)rows_i64(rows, 0, 1);
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
		      "SELECT fingerprint, status, location, body FROM idempotency_keys"
		      " WHERE scope = $1 AND idem_key = $2 AND expires_at > $3 AND status > 0",
		      ST_ARGS(SV_S(scope), SV_S(key), SV_I(tx_now_ms(tx))), &rows);
	if (rc)
		return rc;
	rc = rows->nrows ? record_from_row(rows, fingerprint, out) : ST_NOT_FOUND;
	rows_free(rows);
	return rc;
}

enum st_rc idem_claim(struct tx *tx, const char *scope, const char *key, const char *fingerprint,
		      const char *owner, int64_t ttl_ms, enum idem_claim *res,
		      struct idem_record *found)
{
	int64_t now = tx_now_ms(tx), changes = 0;
	enum st_rc rc;

	/* The primary key is the claim. An expired row is taken over in the
	 * same statement, so a key can be reused after its TTL even before the
	 * sweeper has deleted the old row. On PostgreSQL a concurrent claimer
	 * blocks here until the first transaction ends, then sees its row. */
	rc = tx_exec(tx,
		     "INSERT INTO idempotency_keys"
		     " (scope, idem_key, fingerprint, owner, status, location, body, created_at, expires_at)"
		     " VALUES ($1, $2, $3, $4, 0, NULL, '', $5, $6)"
		     " ON CONFLICT (scope, idem_key) DO UPDATE SET"
		     "  fingerprint = excluded.fingerprint, owner = excluded.owner, status = 0,"
		     "  location = NULL, body = '', created_at = excluded.created_at,"
		     "  expires_at = excluded.expires_at"
		     " WHERE idempotency_keys.expires_at <= excluded.created_at",
		     ST_ARGS(SV_S(scope), SV_S(key), SV_S(fingerprint), SV_S(owner), SV_I(now),
			     SV_I(now + ttl_ms)),
		     &changes);
	if (rc)
		return rc;
	if (changes > 0) {
		*res = IDEM_CLAIMED;
		return ST_OK;
	}
	rc = idem_lookup(tx, scope, key, fingerprint, found);
	if (rc == ST_NOT_FOUND)
		rc = ST_BUSY; /* a live row without a response: cannot happen on a committed row */
	if (rc == ST_OK)
		*res = IDEM_FOUND;
	return rc;
}

enum st_rc idem_complete(struct tx *tx, const char *scope, const char *key, int status,
			 const char *location, const char *body, size_t body_len)
{
	int64_t changes = 0;
	enum st_rc rc;

	rc = tx_exec(tx,
		     "UPDATE idempotency_keys SET status = $3, location = $4, body = $5"
		     " WHERE scope = $1 AND idem_key = $2",
		     ST_ARGS(SV_S(scope), SV_S(key), SV_I(status), SV_SOPT(location),
			     SV_SN(body, body_len)),
		     &changes);
	if (rc == ST_OK && changes != 1)
		rc = ST_INTERNAL;
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

/* idempotency.h — exactly-once effects for POST requests (SPEC section 4).
 *
 * Design (docs/internals/idempotency.md): the key is claimed by inserting
 * its row, answer included, *at the end of the same write unit* that runs
 * the handler, before that unit commits. So:
 *   - two requests with one key race on the table's primary key; the loser
 *     waits for (PostgreSQL) or runs after (SQLite writer) the winner, then
 *     finds a finished record, rolls its own work back and replays the
 *     record: never check-then-insert;
 *   - a crash before COMMIT loses the claim together with the effect: no key
 *     is ever stuck "in progress" in the store, so nothing needs a lease
 *     to take over; the crash tests show it;
 *   - while a request is running, a second one with the same key on the
 *     same instance is answered 409 idempotency_key_in_use from an
 *     in-memory table of running keys (struct idem), without queueing.
 *
 * Scope = client id + method + the request's concrete path (never the
 * route template: /api/admin/api-keys/A/rotate and .../B/rotate are two
 * requests); fingerprint = SHA-256 over method, concrete path and raw body. */
#ifndef SETTLED_IDEMPOTENCY_H
#define SETTLED_IDEMPOTENCY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "rc.h"
#include "store.h"

#define IDEM_FINGERPRINT_LEN 64

/* Running keys of this instance, and its cache of finished records.
 *
 * The cache: a finished record never changes until it expires (only an
 * expired row can be claimed again), so a replay may be answered from
 * memory, by any instance, without touching the store. It is per process,
 * bounded in entries and bytes (least recently used first out), filled
 * only from records read back from the store (so only committed ones), and
 * an entry is dropped IDEM_CACHE_SKEW_MS before its expires_at, so that an
 * instance whose clock lags another's a little never replays a record the
 * other has already let a new request take over. */
#define IDEM_CACHE_ENTRIES 8192           /* default bound, per process */
#define IDEM_CACHE_BYTES (16u << 20)      /* default bound, per process: 16 MiB */
#define IDEM_CACHE_SKEW_MS 1000
struct idem;
/* idem_new() = idem_new_bounded(IDEM_CACHE_ENTRIES, IDEM_CACHE_BYTES);
 * max_entries 0 disables the cache. NULL on OOM. */
struct idem *idem_new(void);
struct idem *idem_new_bounded(size_t max_entries, size_t max_bytes);
void idem_free(struct idem *ix); /* accepts NULL */

/* Marks scope+key running. ST_CONFLICT when it already is (answer 409),
 * ST_NOMEM when it could not be marked (answer 503: never "in use"). */
enum st_rc idem_begin(struct idem *ix, const char *scope, const char *key);
/* Unmarks it; call exactly once after a successful idem_begin. */
void idem_end(struct idem *ix, const char *scope, const char *key);

/* Hex SHA-256 over method, path and body, each length-prefixed so that
 * no two different triples hash the same input. out gets 64 hex + NUL. */
void idem_fingerprint(const struct idem *ix, const char *method, const char *route, const char *body,
		      size_t body_len, char out[IDEM_FINGERPRINT_LEN + 1]);

/* A finished record, as stored. */
struct idem_record {
	int status;
	char *location;   /* NULL or malloc'd */
	char *body;       /* malloc'd */
	size_t body_len;
	bool same_fingerprint;
	char fingerprint[IDEM_FINGERPRINT_LEN + 1]; /* the stored one */
	int64_t expires_at;
};
void idem_record_release(struct idem_record *r);

/* The answer a unit records under its key. */
struct idem_answer {
	int status;
	const char *location; /* or NULL */
	const char *body;
	size_t body_len;
};

enum idem_put { IDEM_RECORDED = 0, IDEM_FOUND };

/* Claims scope+key in tx and records ans under it, in one row write, at
 * the end of the unit whose answer it is (the unit's effect and its record
 * commit together). IDEM_RECORDED: the row is ours (or an expired one was
 * taken over). IDEM_FOUND: a live record of another request exists and
 * nothing was written; *found is filled (caller releases) and the caller
 * must roll back the effect it made, then answer *found. */
enum st_rc idem_record(struct tx *tx, const char *scope, const char *key, const char *fingerprint,
		       const char *owner, int64_t ttl_ms, const struct idem_answer *ans,
		       enum idem_put *res, struct idem_record *found);

/* idem_record's INSERT for n keys at once, each with its answer, in
 * multi-row statements (the SQLite writer's merged units): *recorded = how
 * many were recorded; fewer than n means a live record of one of them
 * exists, and the caller must roll the whole run back. */
struct idem_new_record {
	const char *scope, *key, *fingerprint;
	struct idem_answer ans;
};
enum st_rc idem_record_many(struct tx *tx, const struct idem_new_record *recs, int n,
			    const char *owner, int64_t ttl_ms, int64_t *recorded);

/* Reads a live record without claiming (the read path: replay with no
 * write). ST_NOT_FOUND when absent or expired. */
enum st_rc idem_lookup(struct tx *tx, const char *scope, const char *key, const char *fingerprint,
		       struct idem_record *out);

/* The replay path: the cache first, then idem_lookup on a read connection
 * of st (a record found there is cached). Same results as idem_lookup;
 * now_ms is the store's clock (settled_now_ms). */
enum st_rc idem_replay_lookup(struct idem *ix, struct store *st, int64_t now_ms, const char *scope,
			      const char *key, const char *fingerprint, struct idem_record *out);

/* The cache alone (unit tests; idem_replay_lookup uses them). get: ST_OK
 * and *out filled (a copy; caller releases) when a live entry exists,
 * ST_NOT_FOUND otherwise (an expired entry is dropped). put: caches a
 * finished record (rec->fingerprint and rec->expires_at set); a record
 * bigger than the byte bound allows is not cached. */
enum st_rc idem_cache_get(struct idem *ix, const char *scope, const char *key,
			  const char *fingerprint, int64_t now_ms, struct idem_record *out);
void idem_cache_put(struct idem *ix, const char *scope, const char *key,
		    const struct idem_record *rec, int64_t now_ms);
/* The request memo: what lets a replay skip parsing and hashing its body.
 * note_request attaches to the live entry of scope+key, if its stored
 * fingerprint is fingerprint, the raw body of a request that was hashed
 * to it and that request's rate-limit key derived from the body ("" when
 * none counts; at most IDEM_RL_KEY_MAX bytes). idem_cache_replay answers
 * ST_OK with the record (same_fingerprint true) and that key only when a
 * live entry holds a memo whose body is byte for byte body: the same
 * bytes, hence the same fingerprint and the same parse; ST_NOT_FOUND
 * otherwise (no entry, no memo, other bytes: the caller takes the long
 * way). The memo is charged to the byte bound with its entry. */
#define IDEM_RL_KEY_MAX 64
void idem_cache_note_request(struct idem *ix, const char *scope, const char *key,
			     const char *fingerprint, const char *body, size_t body_len,
			     const char *rl_key, int64_t now_ms);
enum st_rc idem_cache_replay(struct idem *ix, const char *scope, const char *key, const char *body,
			     size_t body_len, int64_t now_ms, struct idem_record *out,
			     char rl_key[IDEM_RL_KEY_MAX + 1]);
/* Entries and bytes held now (tests, metrics). */
void idem_cache_usage(struct idem *ix, size_t *entries, size_t *bytes);

/* Deletes up to limit expired records; *deleted gets the count. */
enum st_rc idem_sweep(struct tx *tx, int64_t limit, int64_t *deleted);

#endif

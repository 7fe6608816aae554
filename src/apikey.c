/* apikey.c — API keys (see apikey.h and docs/internals/apikeys.md).
 *
 * Workload: authentication runs on every /api/v2 request that is not the
 * admin's (a primary-key-like lookup on the unique prefix plus one SHA-256),
 * so it stays a single indexed SELECT on a read connection; creation,
 * rotation and revocation are rare admin writes.
 *
 * Why a prefix: a stored SHA-256 cannot be searched by the secret without
 * hashing it first, and hashing then looking up by digest would make the
 * lookup itself the comparison (a timing oracle on the index). Looking up
 * by the public prefix and then comparing digests with CRYPTO_memcmp keeps
 * the secret out of every index and every variable-time path. */
#include "apikey.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#include "hex.h"
#include "banned.h"

static const char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* n uniformly distributed base62 characters: bytes >= 248 (= 4 * 62) are
 * redrawn, so no character is likelier than another. */
static enum st_rc random_base62(char *out, size_t n)
{
	unsigned char pool[64];
	size_t got = 0, used = sizeof(pool);

	while (got < n) {
		if (used == sizeof(pool)) {
			if (RAND_bytes(pool, (int)sizeof(pool)) != 1)
				return ST_INTERNAL;
			used = 0;
		}
		if (pool[used] < 248)
			out[got++] = base62[pool[used] % 62];
		used++;
	}
	OPENSSL_cleanse(pool, sizeof(pool));
	return ST_OK;
}

static bool is_base62(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
			return false;
	}
	return true;
}

enum st_rc apikey_generate(char key[APIKEY_LEN + 1], char prefix[APIKEY_PREFIX_LEN + 1])
{
	char k[APIKEY_LEN + 1];
	enum st_rc rc;

	memcpy(k, APIKEY_SCHEME, APIKEY_SCHEME_LEN);
	rc = random_base62(k + APIKEY_SCHEME_LEN, APIKEY_PREFIX_LEN);
	if (rc == ST_OK)
		rc = random_base62(k + APIKEY_SCHEME_LEN + APIKEY_PREFIX_LEN + 1, APIKEY_SECRET_LEN);
	if (rc) {
		OPENSSL_cleanse(k, sizeof(k));
		return rc;
	}
	k[APIKEY_SCHEME_LEN + APIKEY_PREFIX_LEN] = '_';
	k[APIKEY_LEN] = '\0';
	memcpy(key, k, sizeof(k));
	memcpy(prefix, k + APIKEY_SCHEME_LEN, APIKEY_PREFIX_LEN);
	prefix[APIKEY_PREFIX_LEN] = '\0';
	OPENSSL_cleanse(k, sizeof(k));
	return ST_OK;
}

bool apikey_parse(const char *key, size_t len, char prefix[APIKEY_PREFIX_LEN + 1])
{
	if (!key || len != APIKEY_LEN || memcmp(key, APIKEY_SCHEME, APIKEY_SCHEME_LEN) ||
	    !is_base62(key + APIKEY_SCHEME_LEN, APIKEY_PREFIX_LEN) ||
	    key[APIKEY_SCHEME_LEN + APIKEY_PREFIX_LEN] != '_' ||
	    !is_base62(key + APIKEY_SCHEME_LEN + APIKEY_PREFIX_LEN + 1, APIKEY_SECRET_LEN))
		return false;
	if (prefix) {
		memcpy(prefix, key + APIKEY_SCHEME_LEN, APIKEY_PREFIX_LEN);
		prefix[APIKEY_PREFIX_LEN] = '\0';
	}
	return true;
}

static void digest(const char *data, size_t len, unsigned char out[32])
{
	unsigned int n = 0;

	if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) || n != 32)
		memset(out, 0, 32); /* never matches a stored digest of a real key */
}

void apikey_hash(const char *key, size_t len, char hex[APIKEY_HASH_HEX + 1])
{
	unsigned char d[32];

	digest(key, len, d);
	hex_encode(d, sizeof(d), hex);
}

/* Stored hex digest back to bytes; false on anything but 64 hex digits. */
static bool unhex32(const char *hex, unsigned char out[32])
{
	return hex && hex_decode(hex, strlen(hex), out, 32);
}

bool apikey_active(const struct api_key *k, int64_t now_ms)
{
	return k->revoked_at == 0 && (k->expires_at == 0 || now_ms < k->expires_at);
}

static void new_id(char out[APIKEY_ID_MAX + 1])
{
	unsigned char r[12];

	if (RAND_bytes(r, sizeof(r)) != 1)
		memset(r, 0, sizeof(r)); /* the insert then collides and is retried */
	memcpy(out, "key_", 4);
	hex_encode(r, sizeof(r), out + 4);
}

#define KEY_COLS \
	"id, prefix, name, created_at, expires_at, revoked_at, replaced_by, secret_hash, client_id"

static void row_to_key(const struct st_rows *r, int i, struct api_key *k)
{
	memset(k, 0, sizeof(*k));
	rows_copy(r, i, 0, k->id, sizeof(k->id));
	rows_copy(r, i, 1, k->prefix, sizeof(k->prefix));
	rows_copy(r, i, 2, k->name, sizeof(k->name));
	k->created_at = rows_i64(r, i, 3);
	k->expires_at = rows_i64(r, i, 4);
	k->revoked_at = rows_i64(r, i, 5);
	rows_copy(r, i, 6, k->replaced_by, sizeof(k->replaced_by));
	rows_copy(r, i, 8, k->client_id, sizeof(k->client_id));
}

enum st_rc apikey_get(struct tx *tx, const char *id, struct api_key *out)
{
	struct st_rows *r = NULL;
	enum st_rc rc = tx_query(tx, "SELECT " KEY_COLS " FROM api_keys WHERE id = $1",
				 ST_ARGS(SV_S(id)), &r);

	if (rc)
		return rc;
	if (r->nrows == 0)
		rc = ST_NOT_FOUND;
	else
		row_to_key(r, 0, out);
	rows_free(r);
	return rc;
}

/* ---- create ---- */

struct insert_arg {
	const char *name;
	const char *client_id;      /* the predecessor's client id, or NULL: a new client */
	struct api_key k;
	char key[APIKEY_LEN + 1];
};

/* One attempt: a fresh key and id, inserted. Runs in a savepoint so that a
 * prefix collision (ST_UNIQUE; 1 in 2^47 per pair of keys) can be retried
 * even on PostgreSQL, where an error aborts the transaction. */
static enum st_rc insert_once(struct tx *tx, void *arg)
{
	struct insert_arg *a = arg;
	char hash[APIKEY_HASH_HEX + 1];
	enum st_rc rc;

	memset(&a->k, 0, sizeof(a->k));
	rc = apikey_generate(a->key, a->k.prefix);
	if (rc)
		return rc;
	new_id(a->k.id);
	snprintf(a->k.client_id, sizeof(a->k.client_id), "%s", a->client_id ? a->client_id : a->k.id);
	apikey_hash(a->key, APIKEY_LEN, hash);
	snprintf(a->k.name, sizeof(a->k.name), "%s", a->name);
	a->k.created_at = tx_now_ms(tx);
	return tx_exec(tx,
		       "INSERT INTO api_keys (id, client_id, prefix, secret_hash, name, created_at)"
		       " VALUES ($1, $6, $2, $3, $4, $5)",
		       ST_ARGS(SV_S(a->k.id), SV_S(a->k.prefix), SV_S(hash), SV_S(a->name),
			       SV_I(a->k.created_at), SV_S(a->k.client_id)),
		       NULL);
}

static enum st_rc insert_key(struct tx *tx, struct insert_arg *a)
{
	enum st_rc rc = ST_UNIQUE;

	for (int attempt = 0; attempt < 4 && rc == ST_UNIQUE; attempt++)
		rc = tx_nested(tx, insert_once, a);
	if (rc)
		OPENSSL_cleanse(a->key, sizeof(a->key));
	return rc == ST_UNIQUE ? ST_INTERNAL : rc;
}

static bool name_ok(const char *name)
{
	size_t n = name ? strlen(name) : 0;

	return n > 0 && n <= APIKEY_NAME_MAX;
}

/* Does any key (live or not) carry client_id? */
static enum st_rc client_exists(struct tx *tx, const char *client_id)
{
	struct st_rows *r = NULL;
	enum st_rc rc = tx_query(tx, "SELECT 1 FROM api_keys WHERE client_id = $1 LIMIT 1",
				 ST_ARGS(SV_S(client_id)), &r);

	if (rc)
		return rc;
	rc = r->nrows ? ST_OK : ST_NOT_FOUND;
	rows_free(r);
	return rc;
}

enum st_rc apikey_create(struct tx *tx, const char *name, const char *client_id,
			 struct api_key *out, char key[APIKEY_LEN + 1])
{
	struct insert_arg a = { .name = name, .client_id = client_id };
	enum st_rc rc;

	if (!name_ok(name) || (client_id && (!*client_id || strlen(client_id) > APIKEY_ID_MAX)))
		return ST_INVALID;
	if (client_id) {
		rc = client_exists(tx, client_id);
		if (rc)
			return rc;
	}
	rc = insert_key(tx, &a);
	if (rc)
		return rc;
	*out = a.k;
	memcpy(key, a.key, sizeof(a.key));
	OPENSSL_cleanse(a.key, sizeof(a.key));
	return ST_OK;
}

/* ---- rotate / revoke ---- */

enum st_rc apikey_rotate(struct tx *tx, const char *id, int64_t grace_ms, struct api_key *out,
			 char key[APIKEY_LEN + 1], struct api_key *old_out)
{
	struct api_key old;
	struct insert_arg a = { 0 };
	int64_t now = tx_now_ms(tx), until, changed = 0;
	enum st_rc rc;

	rc = apikey_get(tx, id, &old);
	if (rc)
		return rc;
	if (!apikey_active(&old, now) || old.replaced_by[0])
		return ST_CONFLICT;
	if (grace_ms < 0)
		grace_ms = 0;
	if (__builtin_add_overflow(now, grace_ms, &until))
		until = INT64_MAX;
	if (old.expires_at && old.expires_at < until)
		until = old.expires_at;
	a.name = old.name;
	a.client_id = old.client_id;
	rc = insert_key(tx, &a);
	if (rc)
		return rc;
	/* Guarded: a concurrent rotation or revocation makes this touch no row. */
	rc = tx_exec(tx,
		     "UPDATE api_keys SET expires_at = $2, replaced_by = $3"
		     " WHERE id = $1 AND revoked_at IS NULL AND replaced_by IS NULL",
		     ST_ARGS(SV_S(id), SV_I(until), SV_S(a.k.id)), &changed);
	if (rc == ST_OK && changed != 1)
		rc = ST_CONFLICT;
	if (rc) {
		OPENSSL_cleanse(a.key, sizeof(a.key));
		return rc;
	}
	old.expires_at = until;
	snprintf(old.replaced_by, sizeof(old.replaced_by), "%s", a.k.id);
	*out = a.k;
	memcpy(key, a.key, sizeof(a.key));
	OPENSSL_cleanse(a.key, sizeof(a.key));
	if (old_out)
		*old_out = old;
	return ST_OK;
}

/* The rotation chain through a key: its predecessors (rows whose
 * replaced_by leads to it) and its successors (its replaced_by, theirs...).
 * Every live key of it is revoked together with the key named: a leaked
 * key is usually leaked with its pair, and a predecessor left working in
 * its grace period could not even be rotated any more. The key named is
 * revoked whatever its state (as before: DELETE marks it); the others only
 * while live, so an expired predecessor keeps its history as it was. */
enum st_rc apikey_revoke(struct tx *tx, const char *id, struct api_key *out)
{
	struct api_key k;
	int64_t changed;
	enum st_rc rc;

	rc = apikey_get(tx, id, &k);
	if (rc)
		return rc;
	/* Until a pass changes nothing. On PostgreSQL (READ COMMITTED) a
	 * rotation of a key of the chain that commits while this statement
	 * waits for that key's row wrote a successor the statement's snapshot
	 * does not see: it would stay live (found by
	 * test_a_revocation_racing_rotations_leaves_no_key_of_the_chain_live).
	 * The next pass, a new snapshot, sees it; a rotation that reaches a
	 * row this transaction revoked waits for it and then finds its guard
	 * false (409). Each pass revokes at least one more row or ends the
	 * loop, so it ends; uncontended (and always on SQLite, one writer) the
	 * second pass changes nothing. */
	do {
		changed = 0;
		rc = tx_exec(tx,
			     "WITH RECURSIVE back(id) AS ("
			     "  SELECT id FROM api_keys WHERE id = $1"
			     "  UNION SELECT k.id FROM api_keys k JOIN back b ON k.replaced_by = b.id),"
			     " fwd(id) AS ("
			     "  SELECT id FROM api_keys WHERE id = $1"
			     "  UNION SELECT k.replaced_by FROM api_keys k JOIN fwd f ON k.id = f.id"
			     "  WHERE k.replaced_by IS NOT NULL)"
			     " UPDATE api_keys SET revoked_at = $2"
			     " WHERE id IN (SELECT id FROM back UNION SELECT id FROM fwd) AND revoked_at IS NULL"
			     " AND (id = $1 OR expires_at IS NULL OR expires_at > $2)",
			     ST_ARGS(SV_S(id), SV_I(tx_now_ms(tx))), &changed);
	} while (rc == ST_OK && changed > 0);
	if (rc)
		return rc;
	rc = apikey_get(tx, id, &k);
	if (rc == ST_OK && out)
		*out = k;
	return rc;
}

/* ---- authenticate ---- */

enum st_rc apikey_authenticate(struct tx *tx, const char *token, size_t len, struct api_key *out)
{
	/* Compared when no row matches, so a miss costs what a hit costs. */
	static const unsigned char dummy[32] = { 0x5e, 0x77, 0x1e, 0xd0 };
	char prefix[APIKEY_PREFIX_LEN + 1];
	unsigned char given[32], stored[32];
	struct st_rows *r = NULL;
	struct api_key k;
	bool found = false, match;
	enum st_rc rc;

	if (!apikey_parse(token, len, prefix))
		return ST_UNAUTHORIZED;
	rc = tx_query(tx, "SELECT " KEY_COLS " FROM api_keys WHERE prefix = $1", ST_ARGS(SV_S(prefix)),
		      &r);
	if (rc)
		return rc;
	memcpy(stored, dummy, sizeof(stored));
	if (r->nrows == 1 && unhex32(rows_text(r, 0, 7), stored)) {
		row_to_key(r, 0, &k);
		found = true;
	}
	rows_free(r);
	digest(token, len, given);
	match = CRYPTO_memcmp(given, stored, sizeof(given)) == 0;
	OPENSSL_cleanse(given, sizeof(given));
	if (!found || !match || !apikey_active(&k, tx_now_ms(tx)))
		return ST_UNAUTHORIZED;
	*out = k;
	return ST_OK;
}

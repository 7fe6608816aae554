/* apikey.h — API keys: creation, rotation with a grace period, revocation
 * and authentication (SPEC section 8; docs/internals/apikeys.md).
 *
 * A key is "sk_live_<prefix>_<secret>": an 8-character base62 prefix that
 * is public (it finds the row, and labels metrics) and a 32-character
 * base62 secret (190 bits), both drawn from OpenSSL's CSPRNG. Only the
 * hex SHA-256 of the whole key is stored, so the key is shown once, when
 * it is created. Authentication looks the row up by prefix and compares
 * SHA-256 digests in constant time; an unknown, malformed, expired or
 * revoked key all give the same ST_UNAUTHORIZED, never a hint which.
 *
 * Rotation creates a successor with the same name and keeps the old row
 * valid until now + grace (expires_at), pointing at the successor
 * (replaced_by). Revocation is immediate and takes the whole rotation
 * chain's live keys (apikey_revoke).
 *
 * Identity: every key carries a client_id, its own id when created and its
 * predecessor's client_id when it comes from a rotation. The client id is
 * what the server knows a partner by (idempotency scope, rate-limit key,
 * owner of payout batches), so rotating a key keeps the partner's batches,
 * limits and in-flight idempotency keys.
 *
 * Every function runs inside the caller's transaction (write units for
 * create/rotate/revoke; any transaction for authenticate) and uses the
 * transaction's clock (tx_now_ms), so tests move time through the store's
 * clock hook. This module owns the api_keys table and nothing else. */
#ifndef SETTLED_APIKEY_H
#define SETTLED_APIKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rc.h"
#include "store.h"

#define APIKEY_SCHEME "sk_live_"
#define APIKEY_SCHEME_LEN 8
#define APIKEY_PREFIX_LEN 8
#define APIKEY_SECRET_LEN 32
#define APIKEY_LEN (APIKEY_SCHEME_LEN + APIKEY_PREFIX_LEN + 1 + APIKEY_SECRET_LEN) /* 49 */
#define APIKEY_ID_MAX 40                /* "key_" + 24 hex */
#define APIKEY_HASH_HEX 64
#define APIKEY_NAME_MAX 100             /* bytes of UTF-8 */

/* A stored key (never the secret). Times are ms since the epoch; 0 = unset. */
struct api_key {
	char id[APIKEY_ID_MAX + 1];
	char client_id[APIKEY_ID_MAX + 1];  /* the rotation chain's first key id */
	char prefix[APIKEY_PREFIX_LEN + 1];
	char name[APIKEY_NAME_MAX + 1];
	int64_t created_at;
	int64_t expires_at;                 /* 0: no expiry */
	int64_t revoked_at;                 /* 0: not revoked */
	char replaced_by[APIKEY_ID_MAX + 1]; /* "" unless rotated */
};

/* Draws a new key from the CSPRNG: key gets the whole NUL-terminated key,
 * prefix its public part. ST_INTERNAL if the CSPRNG fails. */
enum st_rc apikey_generate(char key[APIKEY_LEN + 1], char prefix[APIKEY_PREFIX_LEN + 1]);

/* Checks the shape of a presented key (scheme, base62 prefix, '_',
 * base62 secret, exact length) and, when it fits, copies its prefix out.
 * prefix may be NULL. No store access: a malformed token never reaches it. */
bool apikey_parse(const char *key, size_t len, char prefix[APIKEY_PREFIX_LEN + 1]);

/* The stored form: hex SHA-256 of key[0..len), lower case, NUL-terminated. */
void apikey_hash(const char *key, size_t len, char hex[APIKEY_HASH_HEX + 1]);

/* May the key authenticate at now_ms? Not revoked, and not past expires_at
 * (a key is valid while now < expires_at). */
bool apikey_active(const struct api_key *k, int64_t now_ms);

/* Creates a key named name (1..APIKEY_NAME_MAX bytes, caller validated)
 * for client_id: NULL makes a new client (the key's own id becomes its
 * client id); otherwise the id of an existing client (one some key, live or
 * not, carries), so a partner may hold several independent keys.
 * *out gets the stored row, key the whole key (shown once; the caller
 * must not log or store it). ST_INVALID for a bad name or client id,
 * ST_NOT_FOUND when no key carries client_id. */
enum st_rc apikey_create(struct tx *tx, const char *name, const char *client_id,
			 struct api_key *out, char key[APIKEY_LEN + 1]);

/* Rotates key id: creates its successor (same name; *out, key as for
 * apikey_create) and makes the old key expire at now + grace_ms (or
 * earlier, if it already expired sooner), recording replaced_by.
 * *old_out (may be NULL) gets the old row as updated.
 * ST_NOT_FOUND: no such key. ST_CONFLICT: the key is revoked, expired or
 * already rotated (rotate its successor instead). */
enum st_rc apikey_rotate(struct tx *tx, const char *id, int64_t grace_ms, struct api_key *out,
			 char key[APIKEY_LEN + 1], struct api_key *old_out);

/* Revokes key id at once, and with it every live key of its rotation
 * chain (its predecessors still in their grace period, its successors).
 * Revoking a revoked key changes nothing and succeeds (DELETE is
 * idempotent); *out (may be NULL) gets the row. ST_NOT_FOUND: no such key. */
enum st_rc apikey_revoke(struct tx *tx, const char *id, struct api_key *out);

/* Reads one key by id. ST_NOT_FOUND if none. */
enum st_rc apikey_get(struct tx *tx, const char *id, struct api_key *out);

/* Authenticates a presented bearer token of len bytes at the
 * transaction's time. ST_OK with *out filled for an active key;
 * ST_UNAUTHORIZED for a malformed, unknown, wrong-secret, expired or
 * revoked key (the same answer for all, and the same work: a digest is
 * compared even when no row matched); store errors otherwise. */
enum st_rc apikey_authenticate(struct tx *tx, const char *token, size_t len, struct api_key *out);

#endif

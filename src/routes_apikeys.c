/* routes_apikeys.c — API key administration (SPEC section 8).
 * All ROUTE_ADMIN: the dispatcher has checked the admin token (401
 * without, 403 wrong) before any of this runs.
 *
 *   POST   /api/admin/api-keys {name, client_id?}
 *                                            201 {id, client_id, key, prefix, name, ...};
 *                                            client_id: another key for an existing
 *                                            client (else a new client, client_id = id)
 *   POST   /api/admin/api-keys/{id}/rotate   201 the successor; the old key
 *                                            works until now + SETTLED_API_KEY_GRACE
 *   DELETE /api/admin/api-keys/{id}          200 the key, revoked at once
 *
 * A key is shown once: the 201 carries it, and the idempotency record (so a
 * replay of the same Idempotency-Key) holds the same answer with "key":
 * null (resp_replay_json), so the secret is never stored in plain text.
 * Error codes: invalid_name, invalid_client_id (400); key_not_found,
 * unknown_client (404); key_inactive, already_rotated (409). Revoking a
 * key revokes its rotation chain's live keys (apikey_revoke). */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#include "apikey.h"
#include "clock.h"
#include "errors.h"
#include "http.h"
#include "route_table.h"
#include "settled.h"
#include "present.h"
#include "banned.h"

/* The stored key as every route shows it (never the secret). */
static json_t *key_json(const struct api_key *k)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:o}", "id", k->id, "client_id",
			 k->client_id, "prefix", k->prefix,
			 "name", k->name, "created_at", present_time(k->created_at), "expires_at",
			 present_time(k->expires_at), "revoked_at", present_time(k->revoked_at),
			 "replaced_by", k->replaced_by[0] ? json_string(k->replaced_by) : json_null());
}

/* 201 with the key shown once; the replayable copy says it was. extra (may
 * be NULL) is merged into both and its reference stolen. */
static enum st_rc reply_new_key(struct resp *resp, const struct api_key *k, const char *key,
				json_t *extra)
{
	json_t *shown = key_json(k), *replay = key_json(k);
	char location[96];
	enum st_rc rc;

	if (!shown || !replay) {
		json_decref(shown);
		json_decref(replay);
		json_decref(extra);
		return ST_NOMEM;
	}
	if (extra) {
		json_object_update(shown, extra);
		json_object_update(replay, extra);
		json_decref(extra);
	}
	json_object_set_new(shown, "key", json_string(key));
	json_object_set_new(replay, "key", json_null());
	json_object_set_new(replay, "key_note",
			    json_string("the key was shown once, in the first answer; rotate it if it was lost"));
	snprintf(location, sizeof(location), "/api/admin/api-keys/%s", k->id);
	rc = resp_location(resp, location);
	if (rc == ST_OK)
		rc = resp_replay_json(resp, replay);
	else
		json_decref(replay);
	if (rc) {
		json_decref(shown);
		return rc;
	}
	return resp_ok(resp, shown);
}

/* ---- POST /api/admin/api-keys ---- */

struct create_req {
	char name[APIKEY_NAME_MAX + 1];
	char client_id[APIKEY_ID_MAX + 1];  /* "" : a new client */
};

static enum st_rc create_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct create_req *r = arg;
	struct api_key k;
	char key[APIKEY_LEN + 1];
	enum st_rc rc;

	rc = apikey_create(tx, r->name, r->client_id[0] ? r->client_id : NULL, &k, key);
	if (rc == ST_NOT_FOUND)
		return unit_error(resp, ERR_UNKNOWN_CLIENT, NULL);
	if (rc)
		return rc;
	rc = reply_new_key(resp, &k, key, NULL);
	OPENSSL_cleanse(key, sizeof(key));
	return rc;
}

/* A name: 1..APIKEY_NAME_MAX bytes with no control characters (it shows up
 * in listings and logs). */
static bool name_valid(const char *s, size_t len)
{
	if (len == 0 || len > APIKEY_NAME_MAX || strlen(s) != len)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

/* A client id as keys carry it: "key_" + 24 lower-case hex digits. */
static bool client_id_valid(const char *s, size_t len)
{
	if (len != 28 || strlen(s) != len || memcmp(s, "key_", 4))
		return false;
	for (size_t i = 4; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

enum st_rc route_apikey_create(struct req_ctx *rq)
{
	json_t *name = json_object_get(req_json(rq), "name");
	json_t *client = json_object_get(req_json(rq), "client_id");
	struct create_req *r = req_alloc(rq, sizeof(*r));

	if (!r)
		return ST_NOMEM;
	if (!json_is_string(name) || !name_valid(json_string_value(name), json_string_length(name)))
		return req_error(rq, ERR_INVALID_KEY_NAME, NULL);
	snprintf(r->name, sizeof(r->name), "%s", json_string_value(name));
	if (client && !json_is_null(client)) {
		if (!json_is_string(client) || !client_id_valid(json_string_value(client),
								json_string_length(client)))
			return req_error(rq, ERR_INVALID_CLIENT_ID, NULL);
		snprintf(r->client_id, sizeof(r->client_id), "%s", json_string_value(client));
	}
	return req_commit(rq, create_unit, r);
}

/* ---- POST /api/admin/api-keys/{id}/rotate ---- */

struct key_req {
	char id[APIKEY_ID_MAX + 1];
	int64_t grace_ms;
};

static enum st_rc key_not_found(struct resp *resp)
{
	return unit_error(resp, ERR_KEY_NOT_FOUND, NULL);
}

static enum st_rc rotate_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct key_req *r = arg;
	struct api_key k, old;
	char key[APIKEY_LEN + 1];
	enum st_rc rc;

	rc = apikey_rotate(tx, r->id, r->grace_ms, &k, key, &old);
	if (rc == ST_NOT_FOUND)
		return key_not_found(resp);
	if (rc == ST_CONFLICT) {
		if (apikey_get(tx, r->id, &old) == ST_OK && old.replaced_by[0] &&
		    apikey_active(&old, tx_now_ms(tx)))
			return unit_error(resp, ERR_KEY_ALREADY_ROTATED,
					  json_pack("{s:s}", "replaced_by", old.replaced_by));
		return unit_error(resp, ERR_KEY_INACTIVE, NULL);
	}
	if (rc)
		return rc;
	rc = reply_new_key(resp, &k, key,
			   json_pack("{s:{s:s, s:s, s:o}}", "replaces", "id", old.id, "prefix", old.prefix,
				     "expires_at", present_time(old.expires_at)));
	OPENSSL_cleanse(key, sizeof(key));
	return rc;
}

static struct key_req *key_req_new(struct req_ctx *rq)
{
	const char *id = req_param(rq, "id");
	struct key_req *r;

	if (!id || !*id || strlen(id) > APIKEY_ID_MAX)
		return NULL;
	r = req_alloc(rq, sizeof(*r));
	if (r)
		snprintf(r->id, sizeof(r->id), "%s", id);
	return r;
}

enum st_rc route_apikey_rotate(struct req_ctx *rq)
{
	struct key_req *r = key_req_new(rq);

	if (!r)
		return req_error(rq, ERR_KEY_NOT_FOUND, NULL);
	r->grace_ms = req_app(rq)->cfg->api_key_grace_ms;
	return req_commit(rq, rotate_unit, r);
}

/* ---- DELETE /api/admin/api-keys/{id} ---- */

static enum st_rc revoke_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct key_req *r = arg;
	struct api_key k;
	enum st_rc rc;

	rc = apikey_revoke(tx, r->id, &k);
	if (rc == ST_NOT_FOUND)
		return key_not_found(resp);
	if (rc)
		return rc;
	return resp_ok(resp, key_json(&k));
}

enum st_rc route_apikey_revoke(struct req_ctx *rq)
{
	struct key_req *r = key_req_new(rq);

	if (!r)
		return req_error(rq, ERR_KEY_NOT_FOUND, NULL);
	return req_commit(rq, revoke_unit, r);
}

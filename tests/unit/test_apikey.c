/* test_apikey.c — API keys (apikey.c) against a real store: key format,
 * hashing, lookup, and rotation/revocation with the store's clock injected
 * (ledger_fixture.h's F.now drives tx_now_ms), on SQLite and, when
 * SETTLED_TEST_PG is set, on PostgreSQL. */
#include <criterion/criterion.h>
#include <string.h>

#include "apikey.h"
#include "ledger_fixture.h"

#include "banned.h"

/* ---- pure functions ---------------------------------------------------- */

static bool all_base62(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strchr("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", s[i]) || !s[i])
			return false;
	return true;
}

Test(apikey, format)
{
	char seen[200][APIKEY_LEN + 1];

	for (int i = 0; i < 200; i++) {
		char key[APIKEY_LEN + 1], prefix[APIKEY_PREFIX_LEN + 1], parsed[APIKEY_PREFIX_LEN + 1];

		cr_assert_eq(apikey_generate(key, prefix), ST_OK);
		cr_assert_eq(strlen(key), APIKEY_LEN);
		cr_assert_eq(strlen(prefix), APIKEY_PREFIX_LEN);
		cr_assert(!strncmp(key, "sk_live_", 8), "%s", key);
		cr_assert(!memcmp(key + 8, prefix, APIKEY_PREFIX_LEN));
		cr_assert_eq(key[16], '_');
		cr_assert(all_base62(key + 8, 8) && all_base62(key + 17, 32), "%s", key);
		cr_assert(apikey_parse(key, strlen(key), parsed));
		cr_assert_str_eq(parsed, prefix);
		for (int j = 0; j < i; j++)
			cr_assert_str_neq(seen[j], key);
		memcpy(seen[i], key, sizeof(key));
	}
}

Test(apikey, parse_rejects_malformed)
{
	char key[APIKEY_LEN + 1], prefix[APIKEY_PREFIX_LEN + 1], bad[APIKEY_LEN + 2];

	cr_assert_eq(apikey_generate(key, prefix), ST_OK);
	cr_assert(!apikey_parse(key, APIKEY_LEN - 1, NULL));           /* short */
	cr_assert(!apikey_parse("", 0, NULL));
	cr_assert(!apikey_parse(NULL, 0, NULL));
	memcpy(bad, key, sizeof(key));
	bad[0] = 'p';                                                   /* scheme */
	cr_assert(!apikey_parse(bad, APIKEY_LEN, NULL));
	memcpy(bad, key, sizeof(key));
	bad[16] = '-';                                                  /* separator */
	cr_assert(!apikey_parse(bad, APIKEY_LEN, NULL));
	memcpy(bad, key, sizeof(key));
	bad[10] = '_';                                                  /* prefix char */
	cr_assert(!apikey_parse(bad, APIKEY_LEN, NULL));
	memcpy(bad, key, sizeof(key));
	bad[40] = '\0';                                                 /* NUL inside */
	cr_assert(!apikey_parse(bad, APIKEY_LEN, NULL));
	memcpy(bad, key, sizeof(key));
	bad[APIKEY_LEN] = 'x';                                          /* long */
	bad[APIKEY_LEN + 1] = '\0';
	cr_assert(!apikey_parse(bad, APIKEY_LEN + 1, NULL));
}

Test(apikey, hash_is_hex_sha256)
{
	char hex[APIKEY_HASH_HEX + 1];

	apikey_hash("abc", 3, hex);
	cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	apikey_hash("", 0, hex);
	cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

Test(apikey, active)
{
	struct api_key k = { .expires_at = 0, .revoked_at = 0 };

	cr_assert(apikey_active(&k, 5));
	k.expires_at = 10;
	cr_assert(apikey_active(&k, 9));
	cr_assert(!apikey_active(&k, 10));
	k.expires_at = 0;
	k.revoked_at = 1;
	cr_assert(!apikey_active(&k, 0));
}

/* ---- against the store --------------------------------------------------- */

struct op {
	const char *name;
	const char *id;
	int64_t grace_ms;
	const char *token;
	struct api_key k, old;
	char key[APIKEY_LEN + 1];
};

static enum st_rc create_unit(struct tx *tx, void *arg)
{
	struct op *o = arg;

	return apikey_create(tx, o->name, NULL, &o->k, o->key);
}

static enum st_rc rotate_unit(struct tx *tx, void *arg)
{
	struct op *o = arg;

	return apikey_rotate(tx, o->id, o->grace_ms, &o->k, o->key, &o->old);
}

static enum st_rc revoke_unit(struct tx *tx, void *arg)
{
	struct op *o = arg;

	return apikey_revoke(tx, o->id, &o->k);
}

static enum st_rc auth_unit(struct tx *tx, void *arg)
{
	struct op *o = arg;

	return apikey_authenticate(tx, o->token, strlen(o->token), &o->k);
}

static struct op create_key(const char *name)
{
	struct op o = { .name = name };

	cr_assert_eq(store_run(F.s, create_unit, &o), ST_OK);
	return o;
}

/* ST_OK and the key's id, or the rc. Reads on a read connection, as dispatch.c does. */
static enum st_rc auth(const char *token, char id_out[APIKEY_ID_MAX + 1])
{
	struct op o = { .token = token };
	enum st_rc rc = store_read(F.s, auth_unit, &o);

	if (rc == ST_OK && id_out)
		snprintf(id_out, APIKEY_ID_MAX + 1, "%s", o.k.id);
	return rc;
}

static void assert_auth(const char *token, const char *want_id, const char *when)
{
	char id[APIKEY_ID_MAX + 1];
	enum st_rc rc = auth(token, id);

	cr_assert_eq(rc, ST_OK, "%s: %s", when, st_rc_str(rc));
	cr_assert_str_eq(id, want_id, "%s", when);
}

static void assert_refused(const char *token, const char *when)
{
	enum st_rc rc = auth(token, NULL);

	cr_assert_eq(rc, ST_UNAUTHORIZED, "%s: %s", when, st_rc_str(rc));
}

BOTH(apikey_store, create_stores_only_the_hash)
{
	struct op o = create_key("partner one");
	char hex[APIKEY_HASH_HEX + 1];

	cr_assert(!strncmp(o.k.id, "key_", 4));
	cr_assert_str_eq(o.k.name, "partner one");
	cr_assert_eq(o.k.created_at, FX_NOW0);
	cr_assert_eq(o.k.expires_at, 0);
	cr_assert(!memcmp(o.key + 8, o.k.prefix, APIKEY_PREFIX_LEN));
	apikey_hash(o.key, strlen(o.key), hex);
	cr_assert_eq(fx_int("SELECT count(*) FROM api_keys", NULL), 1);
	cr_assert_eq(fx_int("SELECT count(*) FROM api_keys WHERE secret_hash = $1", hex), 1);
	/* The secret is nowhere in the row. */
	cr_assert_eq(fx_int("SELECT count(*) FROM api_keys WHERE secret_hash = $1 OR prefix = $1"
			    " OR name = $1 OR id = $1",
			    o.key),
		     0);
}

BOTH(apikey_store, create_refuses_bad_names)
{
	struct op o = { .name = "" };
	char long_name[APIKEY_NAME_MAX + 2];

	cr_assert_eq(store_run(F.s, create_unit, &o), ST_INVALID);
	memset(long_name, 'n', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	o.name = long_name;
	cr_assert_eq(store_run(F.s, create_unit, &o), ST_INVALID);
	cr_assert_eq(fx_int("SELECT count(*) FROM api_keys", NULL), 0);
}

BOTH(apikey_store, lookup)
{
	struct op a = create_key("a"), b = create_key("b");
	char wrong[APIKEY_LEN + 1], unknown[APIKEY_LEN + 1], prefix[APIKEY_PREFIX_LEN + 1];

	assert_auth(a.key, a.k.id, "key a");
	assert_auth(b.key, b.k.id, "key b");
	/* Right prefix, wrong secret. */
	memcpy(wrong, a.key, sizeof(wrong));
	wrong[APIKEY_LEN - 1] = wrong[APIKEY_LEN - 1] == 'x' ? 'y' : 'x';
	assert_refused(wrong, "wrong secret");
	/* a's prefix with b's secret. */
	memcpy(wrong + 17, b.key + 17, APIKEY_SECRET_LEN);
	assert_refused(wrong, "mixed key");
	/* A well-formed key nobody issued. */
	cr_assert_eq(apikey_generate(unknown, prefix), ST_OK);
	assert_refused(unknown, "unknown key");
	assert_refused("sk_live_short", "malformed");
	assert_refused("", "empty");
	assert_refused("test-admin-token", "not a key");
}

BOTH(apikey_store, rotation_with_grace_then_only_new)
{
	struct op a = create_key("rotating");
	struct op r = { .id = a.k.id, .grace_ms = 60000 };
	char a_key[APIKEY_LEN + 1];

	memcpy(a_key, a.key, sizeof(a_key));
	fx_advance(5000);
	cr_assert_eq(store_run(F.s, rotate_unit, &r), ST_OK);
	cr_assert_str_neq(r.k.id, a.k.id);
	cr_assert_str_neq(r.key, a_key);
	cr_assert_str_eq(r.k.name, "rotating");
	cr_assert_eq(r.old.expires_at, FX_NOW0 + 5000 + 60000);
	cr_assert_str_eq(r.old.replaced_by, r.k.id);
	/* The client identity survives the rotation. */
	cr_assert_str_eq(a.k.client_id, a.k.id);
	cr_assert_str_eq(r.k.client_id, a.k.id);

	/* Inside the grace period both keys work. */
	assert_auth(a_key, a.k.id, "old key right after rotation");
	assert_auth(r.key, r.k.id, "new key right after rotation");
	fx_advance(59999);
	assert_auth(a_key, a.k.id, "old key 1 ms before the grace ends");
	assert_auth(r.key, r.k.id, "new key 1 ms before the grace ends");
	/* After it, only the new one. */
	fx_advance(1);
	assert_refused(a_key, "old key when the grace ends");
	assert_auth(r.key, r.k.id, "new key when the grace ends");
	fx_advance(86400000);
	assert_refused(a_key, "old key a day later");
	assert_auth(r.key, r.k.id, "new key a day later");
}

BOTH(apikey_store, rotating_twice_or_unknown_is_refused)
{
	struct op a = create_key("k");
	struct op r = { .id = a.k.id, .grace_ms = 1000 };
	struct op again = { .id = a.k.id, .grace_ms = 1000 };
	struct op none = { .id = "key_000000000000000000000000", .grace_ms = 1000 };
	struct op next;

	cr_assert_eq(store_run(F.s, rotate_unit, &r), ST_OK);
	cr_assert_eq(store_run(F.s, rotate_unit, &again), ST_CONFLICT, "already rotated");
	cr_assert_eq(store_run(F.s, rotate_unit, &none), ST_NOT_FOUND);
	cr_assert_eq(fx_int("SELECT count(*) FROM api_keys", NULL), 2);
	/* The successor rotates normally. */
	next = (struct op){ .id = r.k.id, .grace_ms = 1000 };
	cr_assert_eq(store_run(F.s, rotate_unit, &next), ST_OK);
	cr_assert_eq(fx_int("SELECT count(*) FROM api_keys", NULL), 3);
}

BOTH(apikey_store, grace_never_extends_an_earlier_expiry)
{
	struct op a = create_key("k");
	struct op r1 = { .id = a.k.id, .grace_ms = 10000 };
	struct op r2;

	cr_assert_eq(store_run(F.s, rotate_unit, &r1), ST_OK);
	/* Rotate the successor with a longer grace: the first key's expiry
	 * is untouched, the successor gets now + grace. */
	r2 = (struct op){ .id = r1.k.id, .grace_ms = 3600000 };
	cr_assert_eq(store_run(F.s, rotate_unit, &r2), ST_OK);
	cr_assert_eq(r2.old.expires_at, FX_NOW0 + 3600000);
	fx_advance(10000);
	assert_refused(a.key, "first key after its own grace");
	assert_auth(r1.key, r1.k.id, "second key inside its grace");
	assert_auth(r2.key, r2.k.id, "third key");
}

BOTH(apikey_store, revoked_fails_at_once)
{
	struct op a = create_key("k"), b = create_key("other");
	struct op rev = { .id = a.k.id }, again = { .id = a.k.id };
	struct op none = { .id = "key_nope" };
	struct op rot = { .id = a.k.id, .grace_ms = 1000 };

	assert_auth(a.key, a.k.id, "before revocation");
	cr_assert_eq(store_run(F.s, revoke_unit, &rev), ST_OK);
	cr_assert_eq(rev.k.revoked_at, FX_NOW0);
	/* No clock movement: refused at once. */
	assert_refused(a.key, "revoked key");
	assert_auth(b.key, b.k.id, "another key is unaffected");
	/* Revoking again is a no-op that keeps the first time. */
	fx_advance(10);
	cr_assert_eq(store_run(F.s, revoke_unit, &again), ST_OK);
	cr_assert_eq(again.k.revoked_at, FX_NOW0);
	cr_assert_eq(store_run(F.s, revoke_unit, &none), ST_NOT_FOUND);
	cr_assert_eq(store_run(F.s, rotate_unit, &rot), ST_CONFLICT, "a revoked key cannot rotate");
}

/* Revoking any key of a rotation chain revokes the chain's live keys:
 * the predecessor in its grace period with the successor, and the other
 * way round; an unrelated key stays. */
BOTH(apikey_store, revoking_a_key_in_grace_ends_its_chain)
{
	struct op a = create_key("k"), other = create_key("other");
	struct op r = { .id = a.k.id, .grace_ms = 3600000 };
	struct op rev = { .id = a.k.id };

	cr_assert_eq(store_run(F.s, rotate_unit, &r), ST_OK);
	assert_auth(a.key, a.k.id, "old key in grace");
	cr_assert_eq(store_run(F.s, revoke_unit, &rev), ST_OK);
	assert_refused(a.key, "old key revoked in grace");
	assert_refused(r.key, "its successor with it");
	assert_auth(other.key, other.k.id, "another chain");
}

BOTH(apikey_store, revoking_a_successor_ends_its_predecessor)
{
	struct op a = create_key("k");
	struct op r = { .id = a.k.id, .grace_ms = 3600000 };
	struct op rev = { 0 };

	cr_assert_eq(store_run(F.s, rotate_unit, &r), ST_OK);
	rev.id = r.k.id;
	cr_assert_eq(store_run(F.s, revoke_unit, &rev), ST_OK);
	assert_refused(r.key, "successor revoked");
	assert_refused(a.key, "predecessor in grace revoked with it");
}

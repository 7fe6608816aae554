/* fuzz_body.c — the JSON request-body handling of every POST route, as far
 * as it is reachable without a server.
 *
 * dispatch.c parse_body() parses with json_fast_load, else
 * json_loadb(JSON_REJECT_DUPLICATES) (check_fast: the two agree) and,
 * on failure, answers 400 invalid_json built with json_pack from jansson's
 * error text, line, column and position. The handlers then validate their
 * fields with src/validate.h: register {wallet, referrer?}, claim/prepare
 * {wallet, amount}, claim/record {intent_id, tx_hash}; the rate limiter
 * keys on the canonical "wallet". This target runs the same calls on the
 * raw body and checks what the server relies on:
 *   - a refusal always yields a buildable error answer (json_pack and
 *     json_dumps succeed: a NULL there would turn a 400 into a 500), with a
 *     position inside the body; the message is scrubbed to ASCII exactly
 *     as parse_body() does it;
 *   - an accepted document holds no string or key with a NUL in it (no
 *     JSON_ALLOW_NUL: "\u0000" is refused, so strlen() == length, which
 *     the handlers' C-string uses assume) and only valid UTF-8;
 *   - it survives a dump/reload round trip unchanged;
 *   - each route's field validators accept exactly what they should
 *     (wallet and tx_hash canonical lower-case, amount 1..INT64_MAX);
 *   - for every route of the table, route_unknown_field() (the
 *     dispatcher's unknown_field refusal) accepts exactly the bodies whose
 *     members are all declared, by an independent walk of the declared
 *     shapes; a refusal names a path that packs into the error answer. */
#include <jansson.h>
#include <stdbool.h>

#include "buf.h"
#include "fuzz.h"
#include "json_fast.h"
#include "route_match.h"
#include "route_table.h"
#include "validate.h"

static void check_strings(const json_t *j, int depth)
{
	FUZZ_CHECK(depth < 4096);
	if (json_is_string(j)) {
		const char *s = json_string_value(j);
		size_t n = json_string_length(j);

		FUZZ_CHECK(strlen(s) == n);
		FUZZ_CHECK(fuzz_utf8_valid(s, n));
	} else if (json_is_object(j)) {
		const char *k;
		json_t *v;

		json_object_foreach((json_t *)j, k, v) {
			FUZZ_CHECK(fuzz_utf8_valid(k, strlen(k)));
			check_strings(v, depth + 1);
		}
	} else if (json_is_array(j)) {
		size_t i;
		json_t *v;

		json_array_foreach(j, i, v)
			check_strings(v, depth + 1);
	}
}

/* A field that must be a wallet when present (required: must be present). */
static void check_wallet_field(const json_t *body, const char *name)
{
	json_t *w = json_object_get(body, name);
	char out[WALLET_LEN + 1];

	if (!json_is_string(w))
		return;
	if (parse_wallet(json_string_value(w), json_string_length(w), out) == ST_OK) {
		FUZZ_CHECK(strlen(out) == WALLET_LEN);
		FUZZ_CHECK(!strncasecmp(out, json_string_value(w), WALLET_LEN));
		for (size_t i = 2; i < WALLET_LEN; i++)
			FUZZ_CHECK((out[i] >= '0' && out[i] <= '9') || (out[i] >= 'a' && out[i] <= 'f'));
	}
}

static void check_routes(const json_t *body)
{
	json_t *a, *id, *h;
	int64_t amount;
	char hash[TX_HASH_LEN + 1];

	/* POST /api/register and the RL_KEY_BODY_WALLET rate-limit key. */
	check_wallet_field(body, "wallet");
	check_wallet_field(body, "referrer");

	/* POST /api/claim/prepare */
	a = json_object_get(body, "amount");
	if (json_is_string(a) &&
	    parse_amount(json_string_value(a), json_string_length(a), &amount) == ST_OK)
		FUZZ_CHECK(amount > 0);

	/* POST /api/claim/record: routes_claims.c refuses an intent_id that is
	 * empty, longer than an id, or (with JSON_ALLOW_NUL) cut by a NUL. */
	id = json_object_get(body, "intent_id");
	if (json_is_string(id))
		FUZZ_CHECK(strlen(json_string_value(id)) == json_string_length(id));
	h = json_object_get(body, "tx_hash");
	if (json_is_string(h) &&
	    parse_tx_hash(json_string_value(h), json_string_length(h), hash) == ST_OK)
		FUZZ_CHECK(strlen(hash) == TX_HASH_LEN);
}

/* The oracle: every member of obj declared in fields, looked up by walking
 * the declared list for each member rather than as route_match.c does. */
static bool all_declared(const struct route_field *fields, const json_t *obj)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)obj, key, v) {
		const struct route_field *f = NULL;

		for (size_t i = 0; fields && fields[i].name; i++)
			if (!strcmp(fields[i].name, key))
				f = &fields[i];
		if (!f)
			return false;
		if (f->members && json_is_object(v) && !all_declared(f->members, v))
			return false;
		if (f->members && json_is_array(v)) {
			for (size_t i = 0; i < json_array_size(v); i++) {
				json_t *item = json_array_get(v, i);

				if (json_is_object(item) && !all_declared(f->members, item))
					return false;
			}
		}
	}
	return true;
}

/* dispatch.c refuse_unknown_fields() for every route of the table. */
static void check_fields(const json_t *body, size_t size)
{
	for (size_t r = 0; r < settled_nroutes; r++) {
		const struct route_field *fields = settled_routes[r].fields;
		struct buf path = BUF_INIT(size + 64);
		enum st_rc rc = route_unknown_field(fields, body, &path);
		json_t *extra;

		FUZZ_CHECK(rc == ST_OK || rc == ST_INVALID);
		FUZZ_CHECK((rc == ST_OK) == all_declared(fields, body));
		if (rc == ST_OK) {
			FUZZ_CHECK(path.len == 0);
		} else {
			FUZZ_CHECK(strlen(path.ptr) == path.len);
			extra = json_pack("{s:s}", "field", path.ptr);
			FUZZ_CHECK(extra != NULL);
			json_decref(extra);
		}
		buf_release(&path);
	}
}

/* What dispatch.c parse_body() sends for a body jansson refused. */
static void check_error_answer(const json_error_t *jerr, size_t size)
{
	char msg[256];
	json_t *o, *extra;
	char *text;

	FUZZ_CHECK(jerr->position >= 0 && (size_t)jerr->position <= size);
	FUZZ_CHECK(jerr->line >= -1 && jerr->column >= -1);
	snprintf(msg, sizeof(msg), "malformed JSON: %s", jerr->text);
	/* As parse_body() does since this target found that jansson's text can
	 * end in half a UTF-8 character (corpus/body/regress-cut-utf8-*): the
	 * json_pack below then failed and the server answered 500. */
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	o = json_pack("{s:s, s:s}", "error", "invalid_json", "message", msg);
	FUZZ_CHECK(o != NULL);
	extra = json_pack("{s:i, s:i, s:i}", "line", jerr->line, "column", jerr->column, "position",
			  jerr->position);
	FUZZ_CHECK(extra && json_object_update(o, extra) == 0);
	json_decref(extra);
	text = json_dumps(o, JSON_COMPACT);
	FUZZ_CHECK(text != NULL);
	free(text);
	json_decref(o);
}

/* parse_body asks json_fast_load first: whatever it returns, jansson
 * returns too, the same tree with members in the same order. */
static void check_fast(const uint8_t *data, size_t size, const json_t *j)
{
	json_t *f = json_fast_load((const char *)data, size);
	char *a, *b;

	if (!f)
		return;
	FUZZ_CHECK(j != NULL && json_equal(f, j));
	a = json_dumps(f, JSON_COMPACT | JSON_ENCODE_ANY);
	b = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	FUZZ_CHECK(a && b && strcmp(a, b) == 0);
	free(a);
	free(b);
	json_decref(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_error_t jerr;
	json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
	char *dumped;
	json_t *again;

	check_fast(data, size, j);

	if (!j) {
		check_error_answer(&jerr, size);
		return 0;
	}
	/* jansson refuses invalid UTF-8 anywhere in the input. */
	FUZZ_CHECK(fuzz_utf8_valid(data, size));
	check_strings(j, 0);
	dumped = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	FUZZ_CHECK(dumped != NULL);
	again = json_loads(dumped, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
	FUZZ_CHECK(again != NULL && json_equal(j, again));
	json_decref(again);
	free(dumped);
	if (json_is_object(j)) {
		check_routes(j);
		check_fields(j, size);
	}
	json_decref(j);
	return 0;
}

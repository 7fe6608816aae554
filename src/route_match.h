/* route_match.h — what a route is, and how a request's path finds one.
 *
 * struct route is one entry of the route table (route_table.c): method +
 * path template -> handler, flags, rate limits and body fields. The
 * matcher (route_match.c) finds a request's entry, checks and decodes its
 * path, and checks its body's members against the declared fields.
 *
 * Declaring a route's body fields. Every route lists the JSON members its
 * body may carry, as its entry's last member (`fields`): a static array of
 * struct route_field built with the macros below and ended by
 * ROUTE_FIELDS_END. The dispatcher refuses any other member before the
 * handler runs: 400 unknown_field with "field" naming it ("bogus",
 * "items[2].bogus"), nothing written, no idempotency record. A member whose
 * value has a fixed shape names that shape's own list (ROUTE_SHAPE); it
 * applies to an object value and to every object in an array value (payout
 * items, transfer postings). ROUTE_FIELD's value is not looked into:
 * scalars, and free-form objects such as `metadata`. A route with no body,
 * or whose body has no members, gives NULL (then only {} is accepted).
 * Webhooks are the sender's format: ROUTE_FOREIGN_BODY skips the check,
 * unknown members are ignored. Keep docs/openapi.json in step: its request
 * schemas say additionalProperties: false and name the same members
 * (test_openapi.py compares them). Example (route_table.c):
 *
 *   static const struct route_field item_fields[] = {
 *           ROUTE_FIELD("wallet"), ROUTE_FIELD("amount"), ROUTE_FIELDS_END };
 *   static const struct route_field batch_fields[] = {
 *           ROUTE_FIELD("reference"), ROUTE_SHAPE("items", item_fields),
 *           ROUTE_FIELD("metadata"), ROUTE_FIELDS_END };
 *   { "POST", "/api/v2/payouts/batch", route_payout_batch_create, flags, { limits },
 *     batch_fields },
 *
 * Templates are literal segments and "{name}" parameters that match one
 * non-empty segment ("/api/v2/intents/{id}"). The template string doubles
 * as the metrics label for the route, so cardinality stays bounded whatever
 * paths clients send. Matching is a linear scan: the table has a few dozen
 * entries and a scan is cheaper than any index at that size. */
#ifndef SETTLED_ROUTE_MATCH_H
#define SETTLED_ROUTE_MATCH_H

#include <jansson.h>
#include <stddef.h>

#include "buf.h"
#include "rc.h"

struct req_ctx;
typedef enum st_rc route_handler(struct req_ctx *rq);

/* Route flags: the dispatcher applies these once, so handlers never do. */
enum {
	ROUTE_JSON_BODY = 1 << 0,   /* body must be JSON (415 otherwise); parsed before the handler */
	ROUTE_IDEMPOTENT = 1 << 1,  /* goes through the idempotency pipeline (every POST) */
	ROUTE_MONEY = 1 << 2,       /* money-moving: key mandatory under SETTLED_REQUIRE_IDEMPOTENCY_KEY */
	ROUTE_ADMIN = 1 << 3,       /* needs the admin token */
	ROUTE_API_KEY = 1 << 4,     /* needs an API key or the admin token */
	ROUTE_NO_LOG_BODY = 1 << 5, /* never logged (secrets in body) */
	ROUTE_SIGNED = 1 << 6,      /* signed body (webhooks): the handler is first called with
	                             * req_verifying() true to check the signature, before the
	                             * body is parsed or any limit is charged */
	ROUTE_FOREIGN_BODY = 1 << 7, /* a third party's format (webhooks): fields not checked */
	ROUTE_CREATED = 1 << 8,     /* a success is 201 Created (else 200): the status handlers'
	                             * resp_ok/req_ok answer, so no handler names one */
	ROUTE_KEY_CHECK_IN_UNIT = 1 << 9, /* the handler's code before req_commit depends on the
	                             * request alone (syntax checks; no store, no clock): a key
	                             * the cache of finished records does not know is not looked
	                             * up on a read connection before the handler but in the
	                             * write unit: first thing where reads there are cheap
	                             * (store.unit_reads_cheap), else by the key's record insert
	                             * (docs/internals/idempotency.md) */
	ROUTE_KEY_CHECK_BY_RECORD = 1 << 10, /* the same promise, used only where reads in a unit
	                             * are not cheap (PostgreSQL: a lookup is a round trip
	                             * wherever it runs): there an unknown key is left to the
	                             * unit's record insert; elsewhere it is looked up on a read
	                             * connection before the handler, as without the flag */
};

/* One member a request body may carry (see the top of this file). */
struct route_field {
	const char *name;
	const struct route_field *members; /* a fixed shape's own list; NULL: not looked into */
};
#define ROUTE_FIELD(name) { (name), NULL }
#define ROUTE_SHAPE(name, members) { (name), (members) }
#define ROUTE_FIELDS_END { NULL, NULL }

/* One rate-limit policy applied to a route, with where its key comes from. */
enum rl_key_source { RL_KEY_NONE = 0, RL_KEY_CLIENT_IP, RL_KEY_BODY_WALLET, RL_KEY_API_KEY };
#define ROUTE_MAX_LIMITS 2

struct route {
	const char *method;     /* "GET", "POST", "DELETE" */
	const char *path;       /* template, also the metrics label */
	route_handler *handler;
	unsigned flags;
	struct {
		int policy;     /* index into the server's policy table (enum rl_policy_id) */
		enum rl_key_source key;
	} limits[ROUTE_MAX_LIMITS];
	const struct route_field *fields; /* the body's members; NULL: none allowed */
};

#define ROUTE_MAX_PARAMS 4
struct route_params {
	size_t n;
	struct {
		const char *name;   /* borrowed from the template, not NUL-terminated */
		size_t name_len;
		const char *value;  /* borrowed from the request path, not NUL-terminated */
		size_t value_len;
	} p[ROUTE_MAX_PARAMS];
};

enum route_result { ROUTE_FOUND = 0, ROUTE_NOT_FOUND, ROUTE_METHOD_NOT_ALLOWED };

/* Matches path (without query string) against table[0..n). On ROUTE_FOUND
 * sets *found and fills params (borrowing from path and the table). On
 * ROUTE_METHOD_NOT_ALLOWED appends the allowed methods to allow, comma
 * separated ("GET, POST"), in table order without repeats. A path with an
 * empty segment ("//"), or over 2048 bytes, never matches. HEAD matches GET
 * routes. Trailing slash is not stripped: "/healthz/" is not "/healthz".
 * The first route in table order whose template and method match wins.
 * Methods compare case-sensitively; nothing is percent-decoded (see
 * route_path_check and route_decode for what comes before and after). found,
 * params and allow may each be NULL. If allow cannot hold the whole list
 * (its cap, or no memory) it is left as it was; the result is still 405. */
enum route_result route_match(const struct route *table, size_t n, const char *method,
			      const char *path, const struct route **found,
			      struct route_params *params, struct buf *allow);

/* Checks a request path as it arrived (still percent-encoded: http.c
 * keeps libmicrohttpd from decoding it) before it is matched. ST_INVALID
 * for an escape that decodes to NUL or '/' (%00, %2F, %2f: a proxy
 * would route "/a%2Fb" as one segment, a decoder as two), a '%' not
 * followed by two hex digits, or a byte that is not visible ASCII
 * (RFC 3986 has no raw space, control or non-ASCII byte in a path). */
enum st_rc route_path_check(const char *path);

/* Percent-decodes in[0..n) into out (room for n + 1 bytes), NUL-terminated,
 * *out_len its length (may be NULL). ST_INVALID, out unspecified, for a
 * '%' not followed by two hex digits, a decoded control character (below
 * 0x20, or 0x7f) or a result that is not UTF-8: path parameters and query
 * values are decoded this way after matching, never before. */
enum st_rc route_decode(const char *in, size_t n, char *out, size_t *out_len);

/* Checks body's members against fields (NULL: none allowed), depth first in
 * document order. ST_OK: all declared. ST_INVALID: path (appended to) names
 * the first undeclared one, "bogus" or "items[2].bogus". ST_NOMEM or
 * ST_TOO_LARGE: path could not hold it. body is borrowed; a non-object
 * body is left to the handler (ST_OK). */
enum st_rc route_unknown_field(const struct route_field *fields, const json_t *body,
			       struct buf *path);

/* Looks up a matched parameter by name; NULL when absent. *len_out gets its length. */
const char *route_param(const struct route_params *params, const char *name, size_t *len_out);

#endif

/* dispatch.c — the dispatcher: from a matched route to the handler's answer.
 *
 * The transport (http.c) hands over a request whose headers and target
 * passed its checks; route_request() matches it (404, 405 and OPTIONS are
 * answered here), and once the whole body is in, dispatch() applies the
 * route's flags (route_match.h) in this order, each of which may answer instead
 * of the handler, none of which writes to the store:
 *   1. authentication (ROUTE_ADMIN, ROUTE_API_KEY; ROUTE_SIGNED: the
 *      handler's signature pass), behind the failed-authentication budget;
 *   2. the rate limits keyed by address or API key (429; on a route
 *      that also has body-keyed limits they wait for those, rl_deferred,
 *      so that all are decided in one backend call);
 *      then a replay whose exact bytes the cache of finished records
 *      knows is answered at once (replay_early: the body-keyed limits,
 *      then the record), without 3-6;
 *   3. the body: content type (415) and JSON parse (400 with line and
 *      column; ROUTE_JSON_BODY);
 *   4. members the route does not declare (400 unknown_field);
 *   5. the rate limits keyed by a body field;
 *   6. ROUTE_IDEMPOTENT: the Idempotency-Key checked, a finished key
 *      replayed from a read connection (no write), a running one refused;
 *   7. the handler. A handler that writes calls req_commit(): the
 *      connection is suspended and request_unit() queued on the store's
 *      writer, where it runs the handler's unit in a savepoint and then
 *      claims the key with the answer in one row, in the same transaction;
 *      request_done() then resumes the connection and the transport sends
 *      the answer.
 * The accessors handlers read the request with (req_*) live here too. */
#include "dispatch.h"

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apikey.h"
#include "client_addr.h"
#include "idempotency.h"
#include "json_fast.h"
#include "metrics.h"
#include "request.h"
#include "response.h"
#include "settled.h"
#include "trace.h"
#include "validate.h"
#include "banned.h"

/* ---------------------------------------------------------------- accessors */

struct settled *req_app(const struct req_ctx *rq) { return rq->h->app; }
const char *req_method(const struct req_ctx *rq) { return rq->method; }
const char *req_route(const struct req_ctx *rq) { return rq->route ? rq->route->path : "unmatched"; }
const char *req_id(const struct req_ctx *rq) { return rq->request_id; }
const char *req_trace_id(const struct req_ctx *rq) { return rq->trace_id; }
const char *req_client_ip(const struct req_ctx *rq) { return rq->client_ip; }
bool req_verifying(const struct req_ctx *rq) { return rq->verifying; }
const char *req_client_id(const struct req_ctx *rq) { return rq->client_id; }
json_t *req_json(const struct req_ctx *rq) { return rq->json; }
int64_t req_now_ms(const struct req_ctx *rq) { return rq->now_ms; }
struct resp *req_resp(struct req_ctx *rq) { return &rq->resp; }

const char *req_header(const struct req_ctx *rq, const char *name)
{
	return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

const char *req_query(const struct req_ctx *rq, const char *name)
{
	/* Names compare without case, as libmicrohttpd's lookup did. */
	for (const struct query_arg *q = rq->query; q; q = q->next)
		if (!strcasecmp(q->name, name))
			return q->value;
	return NULL;
}

const char *req_param(const struct req_ctx *rq, const char *name)
{
	for (size_t i = 0; i < rq->params.n; i++) {
		if (strlen(name) == rq->params.p[i].name_len &&
		    !memcmp(name, rq->params.p[i].name, rq->params.p[i].name_len))
			return rq->param_copies[i];
	}
	return NULL;
}

const char *req_body(const struct req_ctx *rq, size_t *len)
{
	if (len)
		*len = rq->body.len;
	return rq->body.ptr;
}

void *req_alloc(struct req_ctx *rq, size_t size)
{
	struct rq_alloc *a = calloc(1, sizeof(*a) + size);

	if (!a)
		return NULL;
	a->next = rq->allocs;
	rq->allocs = a;
	return a->data;
}

/* Case-insensitive check that a Content-Type is JSON: "application/json"
 * with optional parameters, or a "+json" structured suffix. */
static bool content_type_is_json(const char *ct)
{
	size_t n = strcspn(ct, ";");

	while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
		n--;
	if (n == 16 && !strncasecmp(ct, "application/json", 16))
		return true;
	return n > 17 && !strncasecmp(ct, "application/", 12) && !strncasecmp(ct + n - 5, "+json", 5);
}

/* Constant-time check of the admin token: both sides are hashed first so
 * that neither the comparison time nor an early length mismatch reveals
 * anything. The admin token's digest is made once at start-up
 * (app->admin_sha256), so a request hashes only the token it sent. */
static bool token_equal(const struct settled *app, const char *given)
{
	const char *expected = app->cfg->admin_token;
	unsigned char a[32], b[32];
	unsigned int la = 0, lb = 0;

	if (!EVP_Digest(given, strlen(given), a, &la, EVP_sha256(), NULL))
		return false;
	if (app->admin_hashed)
		memcpy(b, app->admin_sha256, sizeof(b));
	else if (!EVP_Digest(expected, strlen(expected), b, &lb, EVP_sha256(), NULL))
		return false;
	return CRYPTO_memcmp(a, b, sizeof(a)) == 0;
}

static const char *bearer_token(const struct req_ctx *rq)
{
	const char *auth = req_header(rq, "Authorization");

	if (!auth || strncasecmp(auth, "Bearer ", 7))
		return NULL;
	auth += 7;
	while (*auth == ' ')
		auth++;
	return *auth ? auth : NULL;
}

/* ---------------------------------------------------------------- rate limits */

/* Whether decision a is more restrictive than b: fewer requests left, or as
 * few but a later reset (a refusal is always reported, see below). */
static bool rl_tighter(const struct rl_decision *a, const struct rl_decision *b)
{
	return a->remaining < b->remaining ||
	       (a->remaining == b->remaining && a->reset_ms > b->reset_ms);
}

/* Records the decision d of p for the RateLimit headers. */
static void rl_record(struct req_ctx *rq, const struct rl_policy *p, const struct rl_decision *d)
{
	if (rq->rl_n == ROUTE_MAX_LIMITS + 1)
		return;
	rq->rl_pol[rq->rl_n] = p;
	rq->rl_dec[rq->rl_n] = *d;
	if (!rq->rl_n || !d->allowed || rl_tighter(d, &rq->rl_dec[rq->rl_shown]))
		rq->rl_shown = rq->rl_n;
	rq->rl_n++;
}

/* Fills the 429 of p's refusal d (recorded already: the headers report it). */
static void rl_refuse(struct req_ctx *rq, const struct rl_policy *p, const struct rl_decision *d)
{
	struct settled *app = rq->h->app;
	const char *const lv[] = { p->name };
	int64_t secs = rl_secs(d->retry_after_ms);
	char ra[32];

	metrics_inc(app->m.rate_limited, lv);
	snprintf(ra, sizeof(ra), "%lld", (long long)secs);
	resp_set_error(&rq->resp, ERR_RATE_LIMITED,
		       json_pack("{s:I, s:s}", "retry_after", (json_int_t)secs, "policy", p->name));
	resp_header(&rq->resp, "Retry-After", ra);
}

/* The backend could not decide p: counts it and applies p's fail mode.
 * True when the request goes on (fail open), else the 503 is filled. */
static bool rl_backend_down(struct req_ctx *rq, const struct rl_policy *p)
{
	const char *const lv[] = { p->name, p->fail_open ? "open" : "closed" };

	metrics_inc(rq->h->app->m.rl_backend_errors, lv);
	if (p->fail_open)
		return true;
	req_error(rq, ERR_RATE_LIMITER_DOWN, NULL);
	return false;
}

/* Which of a route's policies apply_rate_limits decides. */
enum rl_phase {
	RL_EARLY, /* keyed by address, API key or provider: known before the body */
	RL_BODY,  /* keyed by a body field */
	RL_ALL,   /* both, in route order (rl_deferred: one backend call) */
};

/* Whether the route's early policies wait for its body-keyed ones, so that
 * all are decided in one rl_check_seq (with Redis one script call, one
 * round trip, instead of two: register's address and wallet limits).
 * The answers are the same as deciding the early ones first: nothing
 * between the two points charges or answers anything a refusal would
 * have stopped (no store access, no idempotency mark), and a body refused
 * before the body-keyed limits has its early limits decided then
 * (limits_after_refusal), its 429 before its 400. */
static bool rl_deferred(const struct route *route)
{
	bool early = false, body = false;

	for (int i = 0; i < ROUTE_MAX_LIMITS; i++) {
		enum rl_key_source src = route->limits[i].key;

		if (src == RL_KEY_NONE)
			continue;
		if (src == RL_KEY_BODY_WALLET)
			body = true;
		else
			early = true;
	}
	return early && body;
}

/* Applies the route's policies of phase ph (body_key: the key of those
 * keyed by a body field, body_rl_key; NULL when none counts), in route
 * order and in one rl_check_seq. Records every decision for the headers;
 * on a refusal fills the 429 (which reports the refusing policy) and
 * returns false. A backend that cannot decide a policy has its fail mode
 * applied (rl_backend_down), and the policies after it are asked again,
 * as each alone was before. Runs before the idempotency lookup. */
static bool apply_rate_limits(struct req_ctx *rq, enum rl_phase ph, const char *body_key)
{
	struct settled *app = rq->h->app;
	const struct rl_policy *pols[ROUTE_MAX_LIMITS];
	const char *keys[ROUTE_MAX_LIMITS];
	size_t lens[ROUTE_MAX_LIMITS];
	struct rl_decision dec[ROUTE_MAX_LIMITS];
	char addr_key[CLIENT_ADDR_LEN];
	int n = 0;

	for (int i = 0; i < ROUTE_MAX_LIMITS; i++) {
		enum rl_key_source src = rq->route->limits[i].key;
		const struct rl_policy *p;
		const char *key = NULL;

		if (src == RL_KEY_NONE ||
		    (ph != RL_ALL && (src == RL_KEY_BODY_WALLET) != (ph == RL_BODY)))
			continue;
		p = &app->policies[rq->route->limits[i].policy];
		if (p->limit <= 0)
			continue; /* disabled: no decision, no headers */
		switch (src) {
		case RL_KEY_CLIENT_IP:
			client_addr_rl_key(rq->client_ip, addr_key);
			key = addr_key;
			break;
		case RL_KEY_API_KEY: key = rq->client_id; break;
		case RL_KEY_BODY_WALLET:
			if (!body_key)
				continue;
			key = body_key;
			break;
		default: continue;
		}
		pols[n] = p;
		keys[n] = key;
		lens[n] = strlen(key);
		n++;
	}
	if (n && !rq->rl_n)
		rq->rl_now_ms = settled_now_ms(app); /* now, not when the headers came */
	for (int i = 0; i < n;) {
		int decided = 0;
		enum st_rc rc = rl_check_seq(app->rl, pols + i, keys + i, lens + i, n - i,
					     rq->rl_now_ms, dec + i, &decided);

		for (int j = i; j < i + decided; j++) {
			rl_record(rq, pols[j], &dec[j]);
			if (!dec[j].allowed) {
				rl_refuse(rq, pols[j], &dec[j]);
				return false;
			}
		}
		i += decided;
		if (rc == ST_OK)
			break;
		if (!rl_backend_down(rq, pols[i]))
			return false;
		i++; /* failed open: the policies after it are still decided */
	}
	return true;
}

/* A body refused (400, 415) on a route whose early limits wait for the
 * body (rl_deferred): the early limits are decided now, as they were
 * before the body was looked at, and their 429 (or 503, fail closed)
 * replaces the refusal; else the refusal stands, with their headers. */
static void limits_after_refusal(struct req_ctx *rq)
{
	struct resp refusal = rq->resp;

	resp_init(&rq->resp);
	rq->resp.ok_status = refusal.ok_status;
	if (apply_rate_limits(rq, RL_EARLY, NULL)) {
		resp_release(&rq->resp);
		rq->resp = refusal;
	} else {
		resp_release(&refusal);
	}
}

/* The key of the limits keyed by a body field (RL_KEY_BODY_WALLET) in
 * out: the body's wallet, canonical, or "" when none counts. An invalid
 * wallet is refused later by the handler; only canonical wallets count,
 * so case games cannot dodge it. */
static void body_rl_key(const struct req_ctx *rq, char out[WALLET_LEN + 1])
{
	json_t *w = rq->json ? json_object_get(rq->json, "wallet") : NULL;

	if (!json_is_string(w) || parse_wallet(json_string_value(w), json_string_length(w), out))
		out[0] = '\0';
}

/* ---------------------------------------------------------------- failed authentications */

/* Failed authentications per client address (RLP_AUTH_FAIL, keyed like
 * every per-address limit; docs/internals/ratelimit.md "Authentication
 * failures"). Only failures are charged, so clients that authenticate are
 * never slowed; but the budget is looked at (a peek, charging nothing)
 * before a guessable credential is checked: an address past it is
 * answered 429 whatever it sends, its right guesses included, else a
 * guesser would just read 429 as "wrong" and 200 as "right". */
static void auth_fail_count(struct req_ctx *rq, const char *result)
{
	const char *const lv[] = { rq->route->path, result };

	metrics_inc(rq->h->app->m.auth_failures, lv);
}

/* Before the credential: false with the 429 (or 503, backend down and
 * fail closed) filled when the address is past its budget. */
static bool auth_fail_gate(struct req_ctx *rq)
{
	struct settled *app = rq->h->app;
	const struct rl_policy *p = &app->policies[RLP_AUTH_FAIL];
	struct rl_decision d;
	char key[CLIENT_ADDR_LEN];

	if (p->limit <= 0)
		return true;
	rq->rl_now_ms = settled_now_ms(app);
	client_addr_rl_key(rq->client_ip, key);
	if (rl_peek(app->rl, p, key, strlen(key), rq->rl_now_ms, &d))
		return rl_backend_down(rq, p);
	if (d.allowed)
		return true;
	auth_fail_count(rq, "limited");
	rl_record(rq, p, &d);
	rl_refuse(rq, p, &d);
	return false;
}

/* After a 401/403: charges the failure. The answer keeps its status and
 * gains the policy's headers, or, if this failure is past the budget
 * (concurrent failures that all passed the gate), becomes the 429. A
 * backend that cannot decide leaves the 401/403 as it is. */
static void auth_fail_charge(struct req_ctx *rq)
{
	struct settled *app = rq->h->app;
	const struct rl_policy *p = &app->policies[RLP_AUTH_FAIL];
	struct rl_decision d;
	char key[CLIENT_ADDR_LEN];

	if (p->limit <= 0) {
		auth_fail_count(rq, "refused");
		return;
	}
	if (!rq->rl_n)
		rq->rl_now_ms = settled_now_ms(app);
	client_addr_rl_key(rq->client_ip, key);
	if (rl_check(app->rl, p, key, strlen(key), rq->rl_now_ms, &d)) {
		const char *const lv[] = { p->name, p->fail_open ? "open" : "closed" };

		metrics_inc(app->m.rl_backend_errors, lv); /* the 401/403 stands */
		auth_fail_count(rq, "refused");
		return;
	}
	rl_record(rq, p, &d);
	if (d.allowed) {
		auth_fail_count(rq, "refused");
		return;
	}
	auth_fail_count(rq, "limited");
	rl_refuse(rq, p, &d);
}

/* ---------------------------------------------------------------- idempotency */

static void idem_count(struct req_ctx *rq, const char *result)
{
	const char *const lv[] = { result };

	metrics_inc(rq->h->app->m.idempotency, lv);
}

static void replay_record(struct req_ctx *rq, struct idem_record *rec)
{
	resp_release(&rq->resp);
	rq->resp.status = rec->status;
	buf_append(&rq->resp.body, rec->body, rec->body_len);
	if (rec->location)
		resp_location(&rq->resp, rec->location);
	rq->idem_result = "HIT";
	idem_count(rq, "hit");
}

struct lookup_arg {
	struct req_ctx *rq;
	struct idem_record rec;
};

/* Sets rq->idem_key and rq->idem_scope (client id, method, concrete
 * path) once. false on OOM. */
static bool idem_identify(struct req_ctx *rq, const char *key)
{
	size_t lc, lm, lp;
	char *p;

	rq->idem_key = key;
	if (rq->idem_scope)
		return true;
	lc = strlen(rq->client_id);
	lm = strlen(rq->method);
	lp = strlen(rq->path);
	/* "<client id> <method> <path>", assembled by hand: snprintf's format
	 * parsing was ~1,000 instructions of every keyed request and replay. */
	p = rq->idem_scope = req_alloc(rq, lc + lm + lp + 3);
	if (!p)
		return false;
	memcpy(p, rq->client_id, lc);
	p[lc] = ' ';
	memcpy(p + lc + 1, rq->method, lm);
	p[lc + 1 + lm] = ' ';
	memcpy(p + lc + lm + 2, rq->path, lp + 1);
	return true;
}

/* A replay of a finished key answered before its body is parsed or
 * hashed: the cache holds, beside the record, the raw body of a request
 * already shown to have the record's fingerprint (idem_cache_note_request,
 * below). The same bytes have the same fingerprint, parse the same way
 * (that request passed parse_body and refuse_unknown_fields, or it would
 * not have been replayed) and give the same body-keyed limit key, which
 * the cache keeps with them; so the answer is exactly what the long way
 * would give: the body-keyed limits, then the replay. Anything else (no
 * entry, other bytes, no JSON Content-Type, no valid key) takes the long
 * way, which reports errors in its own order. true when rq->resp holds
 * the answer. */
static bool replay_early(struct req_ctx *rq)
{
	struct settled *app = rq->h->app;
	const char *key, *ct;
	struct idem_record rec;
	char rl_key[IDEM_RL_KEY_MAX + 1];

	if (!(rq->route->flags & ROUTE_IDEMPOTENT) || !rq->body.len)
		return false;
	key = req_header(rq, "Idempotency-Key");
	ct = req_header(rq, "Content-Type");
	if (!key || !ct || !content_type_is_json(ct) || !idem_key_valid(key, strlen(key)) ||
	    !idem_identify(rq, key))
		return false;
	if (idem_cache_replay(app->idem, rq->idem_scope, key, rq->body.ptr, rq->body.len,
			      settled_now_ms(app), &rec, rl_key) != ST_OK)
		return false;
	if (apply_rate_limits(rq, rl_deferred(rq->route) ? RL_ALL : RL_BODY,
			      rl_key[0] ? rl_key : NULL))
		replay_record(rq, &rec);
	idem_record_release(&rec);
	return true;
}

/* The answer to a finished key's record found before the handler (rc ==
 * ST_OK): its replay, or 422 on another fingerprint; 503 when the store
 * could not say (rc other than ST_NOT_FOUND). true when rq->resp holds
 * the answer. */
static bool answer_lookup(struct req_ctx *rq, enum st_rc rc, struct idem_record *rec)
{
	struct settled *app = rq->h->app;

	if (rc == ST_OK) {
		if (rec->same_fingerprint) {
			char rl_key[WALLET_LEN + 1];

			/* This body has the record's fingerprint: the next
			 * replay of the same bytes can skip parsing and hashing
			 * it (replay_early). */
			body_rl_key(rq, rl_key);
			idem_cache_note_request(app->idem, rq->idem_scope, rq->idem_key, rq->fingerprint,
						rq->body.ptr, rq->body.len, rl_key, settled_now_ms(app));
			replay_record(rq, rec);
		} else {
			idem_count(rq, "reused");
			req_error(rq, ERR_IDEMPOTENCY_KEY_REUSED, NULL);
		}
		idem_record_release(rec);
		return true;
	}
	if (rc != ST_NOT_FOUND) {
		req_error(rq, ERR_STORE_DOWN, NULL);
		return true;
	}
	return false;
}

/* Checks the Idempotency-Key header. Returns true when the request should
 * go on to the handler; false when rq->resp already holds the answer. */
static bool idempotency_precheck(struct req_ctx *rq)
{
	struct settled *app = rq->h->app;
	const char *key = req_header(rq, "Idempotency-Key");
	struct lookup_arg la = { .rq = rq };
	bool in_unit = (rq->route->flags & ROUTE_KEY_CHECK_IN_UNIT) ||
		       ((rq->route->flags & ROUTE_KEY_CHECK_BY_RECORD) && !app->store->unit_reads_cheap);
	enum st_rc rc;

	if (!key) {
		if (app->cfg->require_idempotency_key && (rq->route->flags & ROUTE_MONEY)) {
			idem_count(rq, "invalid");
			req_error(rq, ERR_IDEMPOTENCY_KEY_REQUIRED, NULL);
			return false;
		}
		return true;
	}
	if (!idem_key_valid(key, strlen(key))) {
		idem_count(rq, "invalid");
		req_error(rq, ERR_INVALID_IDEMPOTENCY_KEY, NULL);
		return false;
	}
	/* The concrete path, never the template: one key sent to
	 * /api/admin/api-keys/A/rotate and then to .../B/rotate are two
	 * requests, and B's must run, not replay A's answer. */
	idem_fingerprint(rq->h->app->idem, rq->method, rq->path, rq->body.ptr, rq->body.len,
			 rq->fingerprint);
	if (!idem_identify(rq, key)) {
		req_error(rq, ERR_OUT_OF_MEMORY, NULL);
		return false;
	}

	/* A finished key is answered from the cache of finished records or a
	 * read connection: no writer, no write. This comes before the running
	 * check, so any number of concurrent retries of a finished request all
	 * get its answer. On a ROUTE_KEY_CHECK_IN_UNIT route (and on a
	 * ROUTE_KEY_CHECK_BY_RECORD one where reads in a unit are not cheap)
	 * the cache alone answers here; a key it does not know (nearly always a new one) is
	 * left to the write unit (request_unit), which saves the read
	 * connection's lookup: on SQLite the unit looks the key up before the
	 * handler's unit runs (a read connection's page cache starts empty
	 * after every commit, so that lookup was the largest cost of a keyed
	 * request on its HTTP thread); on PostgreSQL, where a lookup is a
	 * round trip wherever it runs, the unit's record insert finds a
	 * finished key (as it finds one that finished during the unit) and
	 * the handler's work is rolled back. */
	rc = in_unit ? idem_cache_get(app->idem, rq->idem_scope, key, rq->fingerprint,
				      settled_now_ms(app), &la.rec)
		     : idem_replay_lookup(app->idem, app->store, settled_now_ms(app), rq->idem_scope,
					  key, rq->fingerprint, &la.rec);
	if (answer_lookup(rq, rc, &la.rec))
		return false;
	/* Not finished. If it is running here, say so at once. If it finishes
	 * between the read above and this mark, the unit's claim finds the
	 * committed record and replays it: no second effect either way. */
	rc = idem_begin(app->idem, rq->idem_scope, key);
	if (rc == ST_NOMEM) {
		req_error(rq, ERR_SHORT_OF_MEMORY, NULL);
		return false;
	}
	if (rc) {
		/* Running here. A key the store was not asked about may be
		 * finished too (a retry of a finished request while another
		 * retry of it is in its unit): its answer, as without the flag. */
		if (in_unit &&
		    answer_lookup(rq, idem_replay_lookup(app->idem, app->store, settled_now_ms(app),
							 rq->idem_scope, key, rq->fingerprint, &la.rec),
				  &la.rec))
			return false;
		idem_count(rq, "in_use");
		req_error(rq, ERR_IDEMPOTENCY_KEY_IN_USE, NULL);
		resp_header(&rq->resp, "Retry-After", "1");
		return false;
	}
	rq->idem_running = true;
	rq->idem_check_in_unit = in_unit;
	return true;
}

/* The handler of a ROUTE_KEY_CHECK_IN_UNIT route answered without a unit
 * (its own 400): the store was never asked about the key, and a finished
 * record's answer comes first (as it would have before the handler): the
 * record's replay, or 422 when this body is another request's. */
static void answer_unchecked_key(struct req_ctx *rq)
{
	struct settled *app = rq->h->app;
	struct idem_record rec;
	enum st_rc rc = idem_replay_lookup(app->idem, app->store, settled_now_ms(app), rq->idem_scope,
					   rq->idem_key, rq->fingerprint, &rec);

	rq->idem_check_in_unit = false;
	if (rc == ST_NOT_FOUND)
		return; /* the handler's answer stands */
	resp_release(&rq->resp);
	answer_lookup(rq, rc, &rec);
}

/* The handler's unit, in a savepoint of the request's unit (a 4xx
 * refusal rolls its writes back and keeps its answer). */
static enum st_rc handler_unit(struct tx *tx, void *arg)
{
	struct req_ctx *rq = arg;
	enum st_rc rc;

	const char *prev_tc = tx_set_trace_context(tx, rq->trace_context);

	resp_release(&rq->resp);
	rc = rq->unit(tx, rq->unit_arg, &rq->resp);
	tx_set_trace_context(tx, prev_tc);
	rq->handler_rc = rc;
	if (rc && !rq->resp.status)
		resp_set_error(&rq->resp, err_of_rc(rc), NULL);
	if (!rc && !rq->resp.status)
		resp_ok_body(&rq->resp);
	return rc;
}

/* Another request with this key committed first: its answer (the replay,
 * or 422 on another fingerprint) replaces ours, and the unit returns
 * ST_CONFLICT so the store rolls back everything it wrote. request_done
 * keeps the answer (idem_replayed). */
static enum st_rc answer_found(struct req_ctx *rq, struct idem_record *found)
{
	if (found->same_fingerprint) {
		replay_record(rq, found);
	} else {
		idem_count(rq, "reused");
		req_error(rq, ERR_IDEMPOTENCY_KEY_REUSED, NULL);
	}
	idem_record_release(found);
	rq->idem_replayed = true;
	return ST_CONFLICT;
}

/* answer_found for a record the unit read from the store: it is cached
 * first (with this body as a memo, when it is the record's), as a read
 * connection's would be. It was committed by another request: only a
 * request holding the key's running mark writes its record, and this one
 * holds it, so no batch-mate's uncommitted row can be what it found. */
static enum st_rc answer_found_cached(struct tx *tx, struct req_ctx *rq, struct idem_record *found)
{
	struct settled *app = rq->h->app;

	idem_cache_put(app->idem, rq->idem_scope, rq->idem_key, found, tx_now_ms(tx));
	if (found->same_fingerprint) {
		char rl_key[WALLET_LEN + 1];

		body_rl_key(rq, rl_key);
		idem_cache_note_request(app->idem, rq->idem_scope, rq->idem_key, rq->fingerprint,
					rq->body.ptr, rq->body.len, rl_key, tx_now_ms(tx));
	}
	return answer_found(rq, found);
}

void req_record_answer(const struct resp *resp, struct idem_answer *ans)
{
	/* A response that shows a secret once records a redacted body. */
	ans->status = resp->status;
	ans->location = resp->location;
	ans->body = resp->replay_body ? resp->replay_body : resp->body.ptr;
	ans->body_len = resp->replay_body ? strlen(resp->replay_body) : resp->body.len;
}

/* request_unit for a request whose route writes its effect and the key's
 * record in one statement (req_merge.record, PostgreSQL): one round trip
 * and no savepoint around the handler. A live record of the key (another
 * request's, committed) is the answer, and everything this run wrote is
 * rolled back with the unit (answer_found). */
static enum st_rc request_record(struct tx *tx, struct req_ctx *rq)
{
	struct settled *app = rq->h->app;
	struct idem_new_record rec = { .scope = rq->idem_scope, .key = rq->idem_key,
				       .fingerprint = rq->fingerprint };
	struct idem_record found = { 0 };
	const char *prev_tc = tx_set_trace_context(tx, rq->trace_context);
	bool recorded = false;
	enum st_rc rc;

	rc = rq->merge->record(tx, rq->unit_arg, &rq->resp, &rec, app->instance_id,
			       app->cfg->idempotency_ttl_ms, &recorded);
	tx_set_trace_context(tx, prev_tc);
	if (rc) {
		/* The statement failed (no answer of the route's own): nothing
		 * recorded, the key free again, and request_done answers what
		 * the store's failure means (503 store_unavailable when it is
		 * down). */
		resp_release(&rq->resp);
		return rc;
	}
	if (!recorded) {
		rc = idem_lookup(tx, rq->idem_scope, rq->idem_key, rq->fingerprint, &found);
		if (rc == ST_NOT_FOUND)
			rc = ST_BUSY; /* a live row without a response: cannot happen on a committed row */
		return rc ? rc : answer_found_cached(tx, rq, &found);
	}
	rq->idem_result = "MISS";
	idem_count(rq, "miss");
	return ST_OK;
}

/* The unit the store runs: the handler's unit in a savepoint, then its
 * answer recorded under the key, one row write (idem_record). The key row
 * comes last so that it is written once, with its answer; a request that
 * loses the race on the key (another instance on PostgreSQL, or a request
 * whose lookup ran before the first one committed) finds the winner's row
 * there and rolls its own effect back with the unit. See idempotency.h. */
static enum st_rc request_unit(struct tx *tx, void *arg)
{
	struct req_ctx *rq = arg;
	struct settled *app = rq->h->app;
	struct idem_record found = { 0 };
	struct idem_answer ans;
	enum idem_put put;
	enum st_rc rc, hrc;

	if (!rq->idem_key)
		return handler_unit(tx, rq);

	/* A unit may run again (PostgreSQL): start from no answer. A
	 * savepoint that cannot be made never runs the handler. */
	rq->idem_replayed = false;
	rq->idem_result = NULL;
	rq->handler_rc = ST_OK;
	resp_release(&rq->resp);
	if (rq->idem_check_in_unit && app->store->unit_reads_cheap) {
		/* The check the dispatcher left to us (ROUTE_KEY_CHECK_IN_UNIT):
		 * is the key finished? Inside the write transaction this sees
		 * every committed record, another process's too. A record found
		 * here was committed by an earlier batch: only a request holding
		 * the key's running mark writes its record, and this one holds
		 * it; so it may be cached, as a read connection's would be.
		 * Where reads in a unit are not cheap (PostgreSQL) the record's
		 * insert below finds a finished key instead. */
		rc = idem_lookup(tx, rq->idem_scope, rq->idem_key, rq->fingerprint, &found);
		if (rc == ST_OK)
			return answer_found_cached(tx, rq, &found);
		if (rc != ST_NOT_FOUND)
			return rc;
	}
	if (rq->merge && rq->merge->record && tx_dialect(tx) == ST_PG)
		return request_record(tx, rq);
	hrc = tx_nested(tx, handler_unit, rq);
	/* Recorded: a success, or the handler's own 4xx refusal (its writes
	 * were rolled back with its savepoint). Any other failure rolls the
	 * whole unit back and releases the key: a 5xx, and a failure after
	 * the handler wrote a 2xx (an after-commit step it could not
	 * register), whose effect is gone with the savepoint: recording that
	 * 2xx would replay a success that never happened. If a record of the
	 * key committed meanwhile (its effect may be why this run failed),
	 * that record is the answer instead. */
	if ((hrc && !(hrc == rq->handler_rc && rq->resp.status >= 400 && rq->resp.status < 500)) ||
	    (!hrc && rq->resp.status >= 500)) {
		if (idem_lookup(tx, rq->idem_scope, rq->idem_key, rq->fingerprint, &found) == ST_OK)
			return answer_found(rq, &found);
		return hrc ? hrc : ST_INTERNAL; /* releases the key: nothing recorded */
	}
	req_record_answer(&rq->resp, &ans);
	rc = idem_record(tx, rq->idem_scope, rq->idem_key, rq->fingerprint, app->instance_id,
			 app->cfg->idempotency_ttl_ms, &ans, &put, &found);
	if (rc)
		return rc;
	if (put == IDEM_FOUND)
		return answer_found_cached(tx, rq, &found);
	rq->idem_result = "MISS";
	idem_count(rq, "miss");
	return ST_OK;
}

/* The request's trace context: its trace, the caller's span as parent
 * (parent = true) or our server span (false). */
void req_trace_ctx(const struct req_ctx *rq, bool parent, struct trace_ctx *c)
{
	memcpy(c->trace_id, rq->trace_id, sizeof(c->trace_id));
	memcpy(c->span_id, parent ? rq->parent_span_id : rq->span_id, sizeof(c->span_id));
	c->flags = rq->trace_flags;
	c->state = rq->tracestate;
}

static void request_done(void *arg, enum st_rc rc)
{
	struct req_ctx *rq = arg;
	struct http *h = rq->h; /* rq is not ours once the connection is resumed */

	if (rq->submit_ns) {
		struct trace_ctx tc;

		req_trace_ctx(rq, false, &tc);
		trace_store_span(rq->h->app->tracer, &tc, rq->h->app->store->ops->name, rq->submit_ns, rc);
	}

	if (rc && !rq->idem_replayed &&
	    !(rc == rq->handler_rc && rq->resp.status >= 400 && rq->resp.status < 500)) {
		/* Rolled back as a whole by a store failure or a 5xx from the
		 * handler (a 4xx from the handler keeps its own answer). Keep
		 * the handler's own 5xx answer if it made one. */
		if (rq->resp.status < 500 || rc != rq->handler_rc) {
			rq->idem_result = NULL;
			if (rc == ST_UNAVAILABLE || rc == ST_BUSY || rc == ST_NOMEM)
				req_error(rq, ERR_STORE_COMMIT, NULL);
			else
				req_error(rq, ERR_INTERNAL, NULL);
		}
	}
	rq->state = RQ_READY;
	/* Before the resume (on_completed may follow it at once) and before
	 * queued drops: http_stop never sees neither count hold this one. */
	atomic_fetch_add(&h->answering, 1);
	MHD_resume_connection(rq->conn);
	/* Last: the connection's thread may already have sent the answer
	 * and freed rq. */
	atomic_fetch_sub(&h->queued, 1);
}

/* The store's merge of requests of one req_merge (their units are
 * handler_unit's: no idempotency key): the route's run over their args
 * and responses, as handler_unit does for one. On a failure the store runs
 * each request's unit alone, which starts from an empty response again. */
static enum st_rc request_merge(struct tx *tx, void *const *rqs, int n)
{
	const struct req_merge *m = ((struct req_ctx *)rqs[0])->merge;
	void **args = calloc((size_t)n, sizeof(*args));
	struct resp **resps = calloc((size_t)n, sizeof(*resps));
	const char **tcs = calloc((size_t)n, sizeof(*tcs));
	enum st_rc rc = ST_NOMEM;

	if (!args || !resps || !tcs)
		goto out;
	for (int i = 0; i < n; i++) {
		struct req_ctx *rq = rqs[i];

		resp_release(&rq->resp);
		rq->handler_rc = ST_OK;
		args[i] = rq->unit_arg;
		resps[i] = &rq->resp;
		tcs[i] = rq->trace_context;
	}
	rc = m->run(tx, args, resps, tcs, n);
	for (int i = 0; rc == ST_OK && i < n; i++) {
		struct req_ctx *rq = rqs[i];

		if (!rq->resp.status)
			resp_ok_body(&rq->resp);
	}
out:
	free(args);
	free(resps);
	free(tcs);
	return rc;
}

/* The store's merge of keyed requests of one req_merge whose keys are
 * checked in the unit (m->answer): what request_unit does for each, in a
 * few statements: the answers, the keys' records with them (one multi-row
 * INSERT, which also tells whether a key is finished: then it records
 * fewer rows than keys), then the handlers' writes; on PostgreSQL, when the
 * route has m->run_recorded, the records and the writes in one statement
 * (a round trip less per run). A finished key, an
 * answer that is not a success, or any failure: the store rolls the run
 * back and runs each request_unit alone, which replays a finished key
 * without running its handler's unit and gives every other request its own
 * answer. No handler has written when a finished key stops the run. */
static enum st_rc request_merge_keyed(struct tx *tx, void *const *rqs, int n)
{
	struct req_ctx *first = rqs[0];
	const struct req_merge *m = first->merge;
	struct settled *app = first->h->app;
	void **args = calloc((size_t)n, sizeof(*args));
	struct resp **resps = calloc((size_t)n, sizeof(*resps));
	const char **tcs = calloc((size_t)n, sizeof(*tcs));
	struct idem_new_record *recs = calloc((size_t)n, sizeof(*recs));
	int64_t count = 0;
	enum st_rc rc = ST_NOMEM;

	if (!args || !resps || !tcs || !recs)
		goto out;
	for (int i = 0; i < n; i++) {
		struct req_ctx *rq = rqs[i];

		rq->idem_replayed = false;
		rq->idem_result = NULL;
		rq->handler_rc = ST_OK;
		resp_release(&rq->resp);
		args[i] = rq->unit_arg;
		resps[i] = &rq->resp;
		tcs[i] = rq->trace_context;
	}
	rc = m->answer(tx, args, resps, n);
	for (int i = 0; rc == ST_OK && i < n; i++) {
		struct req_ctx *rq = rqs[i];

		if (rq->resp.status < 200 || rq->resp.status >= 400) {
			rc = ST_CONFLICT; /* each alone: request_unit decides what is recorded */
			break;
		}
		recs[i].scope = rq->idem_scope;
		recs[i].key = rq->idem_key;
		recs[i].fingerprint = rq->fingerprint;
		req_record_answer(&rq->resp, &recs[i].ans);
	}
	if (rc == ST_OK && m->run_recorded && tx_dialect(tx) == ST_PG) {
		bool all = false;

		rc = m->run_recorded(tx, args, recs, n, app->instance_id,
				     app->cfg->idempotency_ttl_ms, &all);
		if (rc == ST_OK && !all)
			rc = ST_CONFLICT; /* a finished key or a refused write: each alone */
	} else {
		if (rc == ST_OK)
			rc = idem_record_many(tx, recs, n, app->instance_id,
					      app->cfg->idempotency_ttl_ms, &count);
		if (rc == ST_OK && count != n)
			rc = ST_CONFLICT; /* a finished key: each alone, its unit replays it */
		if (rc == ST_OK)
			rc = m->run(tx, args, resps, tcs, n);
	}
	for (int i = 0; rc == ST_OK && i < n; i++) {
		struct req_ctx *rq = rqs[i];

		rq->idem_result = "MISS";
		idem_count(rq, "miss");
	}
out:
	free(args);
	free(resps);
	free(tcs);
	free(recs);
	return rc;
}

static enum st_rc commit(struct req_ctx *rq, const struct req_merge *m, req_unit_fn *fn, void *arg)
{
	enum st_rc rc;

	rq->unit = fn;
	rq->unit_arg = arg;
	rq->merge = m;
	rq->state = RQ_WAITING;
	rq->trace_context = req_alloc(rq, TRACE_CONTEXT_MAX);
	if (rq->trace_context) {
		struct trace_ctx tc;

		req_trace_ctx(rq, false, &tc);
		trace_ctx_format(&tc, rq->trace_context);
	}
	if (rq->h->app->tracer)
		rq->submit_ns = trace_now_ns();
	/* Suspend before queueing: the writer may finish and resume us before
	 * this thread gets back to libmicrohttpd. */
	MHD_suspend_connection(rq->conn);
	/* Counted before queueing: request_done may run before store_submit
	 * returns. */
	atomic_fetch_add(&rq->h->queued, 1);
	/* A keyed request's unit records its answer too: merged only with
	 * other keyed ones, and only when its key is checked in the unit. */
	if (m && !rq->idem_key)
		rc = store_submit_merged(rq->h->app->store, m, request_merge, request_unit,
					 request_done, rq);
	else if (m && m->answer && rq->idem_check_in_unit)
		rc = store_submit_merged(rq->h->app->store, &m->answer, request_merge_keyed,
					 request_unit, request_done, rq);
	else
		rc = store_submit(rq->h->app->store, request_unit, request_done, rq);
	if (rc) {
		atomic_fetch_sub(&rq->h->queued, 1);
		MHD_resume_connection(rq->conn);
		rq->state = RQ_READY;
		return req_error(rq, ERR_STORE_NO_WRITES, NULL);
	}
	rq->unit_queued = true;
	return ST_OK;
}

enum st_rc req_commit(struct req_ctx *rq, req_unit_fn *fn, void *arg)
{
	return commit(rq, NULL, fn, arg);
}

enum st_rc req_commit_merged(struct req_ctx *rq, const struct req_merge *m, req_unit_fn *fn,
			     void *arg)
{
	return commit(rq, m, fn, arg);
}

/* ---------------------------------------------------------------- pipeline */

static enum MHD_Result answer_options(struct req_ctx *rq, const char *allow)
{
	enum cors_answer cors = cors_answer(rq);
	struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	rq->resp.status = 204;
	add_common_headers(rq, r);
	MHD_add_response_header(r, "Allow", allow);
	if (cors == CORS_LISTED || cors == CORS_ANY) {
		MHD_add_response_header(r, "Access-Control-Allow-Methods", allow);
		MHD_add_response_header(r, "Access-Control-Allow-Headers",
					"Authorization, Content-Type, Idempotency-Key, X-Request-Id, "
					"traceparent, tracestate");
		MHD_add_response_header(r, "Access-Control-Max-Age", "86400");
	}
	ret = MHD_queue_response(rq->conn, 204, r);
	MHD_destroy_response(r);
	rq->state = RQ_SENT;
	return ret;
}

/* Finds the route; answers 404/405/OPTIONS itself. */
enum MHD_Result route_request(struct req_ctx *rq, bool *answered)
{
	struct buf allow = BUF_INIT(256);
	const char *method = !strcmp(rq->method, "OPTIONS") ? "GET" : rq->method;
	enum route_result res;
	enum MHD_Result ret = MHD_YES;

	*answered = false;
	res = route_match(rq->h->routes, rq->h->nroutes, method, rq->url, &rq->route, &rq->params, &allow);
	if (!strcmp(rq->method, "OPTIONS")) {
		/* Collect every method the path allows for Allow / preflight. */
		struct buf all = BUF_INIT(256);
		const struct route *ignored;
		struct route_params p;

		rq->route = NULL;
		if (route_match(rq->h->routes, rq->h->nroutes, "OPTIONS", rq->url, &ignored, &p, &all) ==
		    ROUTE_METHOD_NOT_ALLOWED) {
			buf_puts(&all, ", OPTIONS");
			ret = answer_options(rq, all.ptr);
		} else {
			ret = fail_now(rq, ERR_ROUTE_NOT_FOUND);
		}
		buf_release(&all);
		*answered = true;
	} else if (res == ROUTE_NOT_FOUND) {
		ret = fail_now(rq, ERR_ROUTE_NOT_FOUND);
		*answered = true;
	} else if (res == ROUTE_METHOD_NOT_ALLOWED) {
		req_error(rq, ERR_METHOD_NOT_ALLOWED, NULL);
		resp_header(&rq->resp, "Allow", allow.ptr);
		ret = send_resp(rq);
		*answered = true;
	} else {
		/* What a success answers is the route's to say (route_match.h). */
		rq->resp.ok_status = (rq->route->flags & ROUTE_CREATED) ? 201 : 200;
		/* Matched on the path as sent; the parameters are decoded
		 * only now (docs/internals/http-framing.md "Paths"). */
		for (size_t i = 0; i < rq->params.n; i++) {
			char *c = req_alloc(rq, rq->params.p[i].value_len + 1);

			if (!c) {
				ret = fail_now(rq, ERR_OUT_OF_MEMORY);
				*answered = true;
				break;
			}
			if (route_decode(rq->params.p[i].value, rq->params.p[i].value_len, c, NULL)) {
				ret = fail_now(rq, ERR_INVALID_PATH_PARAM);
				*answered = true;
				break;
			}
			rq->param_copies[i] = c;
		}
	}
	buf_release(&allow);
	return ret;
}

/* API keys (apikey.h): looked up by prefix on a read connection, digests
 * compared in constant time. On success the key's client id (its rotation
 * chain's first key id; copied into the request, so it outlives the read)
 * becomes the client id: the idempotency scope and the RL_KEY_API_KEY
 * rate-limit key, stable across a rotation. A store failure answers 503
 * (nothing was decided); any other refusal is left to the caller's 401. */
struct key_auth {
	const char *token;
	struct api_key key;
};

static enum st_rc key_auth_unit(struct tx *tx, void *arg)
{
	struct key_auth *a = arg;

	return apikey_authenticate(tx, a->token, strlen(a->token), &a->key);
}

static bool authenticate_api_key(struct req_ctx *rq, const char *token)
{
	struct settled *app = rq->h->app;
	struct key_auth a = { .token = token };
	enum st_rc rc;
	char *id;

	if (!apikey_parse(token, strlen(token), NULL))
		return false; /* never reaches the store */
	rc = store_read_one(app->store, key_auth_unit, &a);
	if (rc == ST_UNAUTHORIZED)
		return false;
	if (rc == ST_OK) {
		const char *const lv[] = { a.key.prefix };

		id = req_alloc(rq, strlen(a.key.client_id) + 1);
		if (id) {
			memcpy(id, a.key.client_id, strlen(a.key.client_id) + 1);
			rq->client_id = id;
			metrics_inc(app->m.api_key_requests, lv);
			return true;
		}
	}
	req_error(rq, ERR_STORE_KEY_CHECK, NULL);
	return false;
}

/* Authentication by route flag. Returns false with the answer filled. */
static bool authenticate(struct req_ctx *rq)
{
	const struct config *cfg = rq->h->app->cfg;
	unsigned flags = rq->route->flags;
	const char *token;

	rq->client_id = "anon";
	if (!(flags & (ROUTE_ADMIN | ROUTE_API_KEY)))
		return true;
	token = bearer_token(rq);
	if (!token) {
		req_error(rq, ERR_UNAUTHORIZED, NULL);
		resp_header(&rq->resp, "WWW-Authenticate", "Bearer");
		return false;
	}
	if (cfg->admin_token && token_equal(rq->h->app, token)) {
		rq->client_id = "admin";
		return true;
	}
	if (flags & ROUTE_ADMIN) {
		req_error(rq, ERR_FORBIDDEN, NULL);
		return false;
	}
	if (authenticate_api_key(rq, token))
		return true;
	if (rq->resp.status)
		return false; /* the store could not be asked: 503 already filled */
	req_error(rq, ERR_KEY_NOT_VALID, NULL);
	resp_header(&rq->resp, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
	return false;
}

static bool parse_body(struct req_ctx *rq)
{
	const char *ct = req_header(rq, "Content-Type");
	json_error_t jerr;

	if (!rq->body.len) {
		if (rq->route->flags & ROUTE_JSON_BODY) {
			req_error(rq, ERR_EMPTY_BODY, json_pack("{s:i, s:i}", "line", 1, "column", 0));
			return false;
		}
		return true;
	}
	if (!ct || !content_type_is_json(ct)) {
		req_error(rq, ERR_UNSUPPORTED_MEDIA_TYPE, NULL);
		return false;
	}
	/* The plain bodies nearly every client sends without jansson's lexer
	 * (json_fast.h); anything else, and every error, is jansson's. */
	rq->json = json_fast_load(rq->body.ptr, rq->body.len);
	if (!rq->json)
		rq->json = json_loadb(rq->body.ptr, rq->body.len, JSON_REJECT_DUPLICATES, &jerr);
	if (!rq->json) {
		char msg[256];

		snprintf(msg, sizeof(msg), "malformed JSON: %s", jerr.text);
		/* jansson quotes the input near the error and may cut a UTF-8
		 * sequence in two ("invalid escape near '\u00e\xc8'"); json_pack
		 * refuses such a string, which turned this 400 into a 500. */
		for (char *p = msg; *p; p++)
			if ((unsigned char)*p >= 0x80)
				*p = '?';
		req_error_msg(rq, ERR_INVALID_JSON, msg,
			      json_pack("{s:i, s:i, s:i}", "line", jerr.line, "column", jerr.column,
					"position", jerr.position));
		return false;
	}
	if (!json_is_object(rq->json)) {
		req_error(rq, ERR_BODY_NOT_OBJECT, NULL);
		return false;
	}
	return true;
}

/* authenticate() behind the failed-authentication budget. A signed route
 * (ROUTE_SIGNED) has its signature checked by its handler (req_verifying)
 * with no gate: an HMAC key cannot
 * be guessed, so refusing an address before verifying protects nothing,
 * while junk from an address the provider shares (a proxy not named in
 * SETTLED_TRUST_PROXY) would then block the provider's genuine deliveries.
 * Its failures are still charged, and past the budget answered 429. */
static bool authenticate_throttled(struct req_ctx *rq)
{
	if (rq->route->flags & ROUTE_SIGNED) {
		enum st_rc rc;

		rq->client_id = "anon";
		rq->verifying = true;
		rc = rq->route->handler(rq);
		rq->verifying = false;
		if (!rc && !rq->resp.status)
			return true;
		if (!rq->resp.status)
			req_error(rq, err_of_rc(rc), NULL);
		if (rq->resp.status == 401 || rq->resp.status == 403)
			auth_fail_charge(rq);
		return false;
	}
	if (!(rq->route->flags & (ROUTE_ADMIN | ROUTE_API_KEY)))
		return authenticate(rq);
	if (!auth_fail_gate(rq))
		return false;
	if (authenticate(rq))
		return true;
	if (rq->resp.status == 401 || rq->resp.status == 403)
		auth_fail_charge(rq);
	return false;
}

/* A member the route does not declare (route_match.h) is refused before a limit
 * keyed on the body is charged and before the idempotency record: a
 * client's typo must never become a different request than it meant. */
static bool refuse_unknown_fields(struct req_ctx *rq)
{
	struct buf path = BUF_INIT(rq->body.len + 64), msg = BUF_INIT(rq->body.len + 128);
	enum st_rc rc;

	if (!rq->json || (rq->route->flags & ROUTE_FOREIGN_BODY))
		return true;
	rc = route_unknown_field(rq->route->fields, rq->json, &path);
	if (rc == ST_INVALID &&
	    !buf_printf(&msg, "unknown field %s: this route does not define it", path.ptr)) {
		req_error_msg(rq, ERR_UNKNOWN_FIELD, msg.ptr, json_pack("{s:s}", "field", path.ptr));
	} else if (rc) {
		req_error(rq, ERR_OUT_OF_MEMORY, NULL);
	}
	buf_release(&msg);
	buf_release(&path);
	return rc == ST_OK;
}

/* Runs everything between the last body byte and the handler. */
enum MHD_Result dispatch(struct req_ctx *rq)
{
	char body_key[WALLET_LEN + 1];
	bool deferred = rl_deferred(rq->route);
	enum st_rc rc;

	if (rq->body_nomem)
		return fail_now(rq, ERR_SHORT_OF_MEMORY);
	if (rq->body_too_large)
		return fail_now(rq, ERR_BODY_TOO_LARGE);
	if (!authenticate_throttled(rq) || (!deferred && !apply_rate_limits(rq, RL_EARLY, NULL)) ||
	    replay_early(rq))
		return send_resp(rq);
	if (!parse_body(rq) || !refuse_unknown_fields(rq)) {
		if (deferred)
			limits_after_refusal(rq);
		return send_resp(rq);
	}
	body_rl_key(rq, body_key);
	if (!apply_rate_limits(rq, deferred ? RL_ALL : RL_BODY, body_key[0] ? body_key : NULL))
		return send_resp(rq);
	if ((rq->route->flags & ROUTE_IDEMPOTENT) && !idempotency_precheck(rq))
		return send_resp(rq);
	rc = rq->route->handler(rq);
	if (rc && !rq->resp.status)
		req_error(rq, err_of_rc(rc), NULL);
	/* Not rq->state: the writer may have answered already (request_done),
	 * and then the resumed connection sends that answer. */
	if (rq->unit_queued)
		return MHD_YES;
	if (rq->idem_check_in_unit)
		answer_unchecked_key(rq);
	return send_resp(rq);
}

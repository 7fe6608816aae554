/* routes_transfers.c — transfers of the Ledger API (SPEC section 13):
 *
 *   POST /api/v2/transfers {postings:[{from, to, amount}...], description?, metadata?}
 *                          or one posting {from, to, amount, description?, metadata?}
 *                          201 the transaction with its entries
 *   GET  /api/v2/transfers/{id}   one transaction with its entries
 *
 * A transfer is ONE balanced ledger transaction (kind 'transfer'): every
 * posting or none. Each posting debits `from` and credits `to`; who may
 * name which account is account_resolve's (account.h): a client debits
 * only its own accounts and credits its own, a wallet or revenue; the admin
 * token any account (an operator's allocation is a transfer from treasury
 * to a wallet or to "<client_id>/<name>"). A name the caller may not use
 * so is 422 unknown_account naming the field, whether or not it exists.
 *
 * Funds: the net debit of each account that may not go negative must fit
 * its available balance (balance - held); else 422 insufficient_funds with
 * `account` (as the caller names it) and `field`. The check is made before
 * posting (to name the account), and the store's CHECK refuses an
 * over-commit anyway: if a concurrent writer got in between (PostgreSQL),
 * the posting fails in its savepoint and the accounts are read again to
 * name the one that fell short (or, when none is short any more because a
 * third writer put the funds back, the transfer is posted again).
 * balance_overflow only when a balance it touches could leave int64.
 *
 * The transaction carries the caller's client id: GET answers a client's
 * own transfers only (the filter is in ledger_tx_get's SQL), anything else
 * is 404 not_found; the admin token reads every ledger transaction.
 *
 * Error codes: invalid_body, invalid_amount, invalid_metadata,
 * unknown_field (400); not_found (404); unknown_account,
 * insufficient_funds, balance_overflow (422). */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "errors.h"
#include "http.h"
#include "input.h"
#include "ledger.h"
#include "reqcheck.h"
#include "route_table.h"
#include "settled.h"
#include "present.h"
#include "banned.h"

#define TRANSFER_MAX_POSTINGS (LEDGER_MAX_ENTRIES / 2)
#define FIELD_MAX 40

struct posting {
	char from[ACCOUNT_QNAME_MAX + 1];
	char to[ACCOUNT_QNAME_MAX + 1];
	int64_t amount;
	char from_field[FIELD_MAX];   /* "from" or "postings[3].from" */
	char to_field[FIELD_MAX];
};

struct transfer_req {
	char caller[ACCOUNT_CLIENT_MAX + 1];
	size_t n;
	struct posting p[TRANSFER_MAX_POSTINGS];
	char *description;            /* req_alloc'd or NULL */
	char *metadata;               /* req_alloc'd compact JSON or NULL */
	/* filled by the unit (each run): the resolved account ids */
	char from_id[TRANSFER_MAX_POSTINGS][ACCOUNT_ID_MAX + 1];
	char to_id[TRANSFER_MAX_POSTINGS][ACCOUNT_ID_MAX + 1];
	/* kept across runs (PostgreSQL re-runs units): how many posts the
	 * unit tried, so only the first goes without a savepoint of its own */
	int posts;
};

/* One transaction as both routes answer it, accounts named as the caller
 * names them. known[0..nknown): accounts already read in tx (the poster's),
 * not read again. */
static json_t *transfer_json(struct tx *tx, const struct ledger_tx_view *v, const char *caller,
			     const struct account *known, size_t nknown)
{
	json_t *entries = json_array(), *meta = NULL, *o;

	for (size_t i = 0; entries && i < v->n; i++) {
		char shown[ACCOUNT_QNAME_MAX + 1];
		const struct account *k = NULL;
		struct account a;

		for (size_t j = 0; j < nknown && !k; j++)
			if (!strcmp(known[j].id, v->entries[i].account_id))
				k = &known[j];
		if (k)
			account_display_name(k, caller, shown);
		else if (account_by_id(tx, v->entries[i].account_id, &a) == ST_OK)
			account_display_name(&a, caller, shown);
		else
			snprintf(shown, sizeof(shown), "%s", v->entries[i].account_id);
		if (json_array_append_new(entries,
					  json_pack("{s:s, s:s, s:o}", "account", shown, "direction",
						    v->entries[i].dir == LEDGER_CREDIT ? "credit" : "debit",
						    "amount", present_amount(v->entries[i].amount)))) {
			json_decref(entries);
			return NULL;
		}
	}
	if (!entries)
		return NULL;
	if (v->metadata[0])
		meta = json_loads(v->metadata, 0, NULL);
	o = json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:o}", "id", v->id, "kind", v->kind, "client_id",
		      present_opt_str(v->client_id), "description", present_opt_str(v->description),
		      "metadata", meta ? meta : json_null(), "entries", entries, "created_at",
		      present_time(v->created_at));
	return o;
}

/* ---- POST /api/v2/transfers ---- */

/* The first debited account of the transfer that may not go negative and
 * whose net debit (what the transfer takes from it less what it pays into
 * it) exceeds its available balance; -1 if none. from[i] is posting i's
 * debited account as resolved, read again in tx when reread. */
static int short_account(struct tx *tx, const struct transfer_req *r, const struct account *from,
			 bool reread)
{
	for (size_t i = 0; i < r->n; i++) {
		struct account a = from[i];
		int64_t net = 0;
		bool first = true;

		for (size_t j = 0; j < i && first; j++)
			first = strcmp(r->from_id[j], a.id) != 0;
		if (!first || a.may_go_negative)
			continue;
		if (reread && account_by_id(tx, a.id, &a) != ST_OK)
			continue;
		for (size_t j = 0; j < r->n; j++) {
			if (!strcmp(r->from_id[j], a.id) && __builtin_add_overflow(net, r->p[j].amount, &net))
				return (int)i;
			if (!strcmp(r->to_id[j], a.id) && __builtin_sub_overflow(net, r->p[j].amount, &net))
				return (int)i;
		}
		if (net > 0 && a.balance - a.held < net)
			return (int)i;
	}
	return -1;
}

/* Could this transfer move a balance it touches out of int64, from the
 * balances read again in tx? The store refuses that (SQLite's CHECK
 * accounts_money_integer, PostgreSQL's BIGINT arithmetic). Judged per
 * account from all its credits, all its debits and what it holds, in any
 * order: a superset of what the store's sequence of moves can hit. */
static bool may_overflow(struct tx *tx, const struct transfer_req *r)
{
	for (size_t k = 0; k < 2 * r->n; k++) {
		const char *id = k < r->n ? r->from_id[k] : r->to_id[k - r->n];
		int64_t credits = 0, debits = 0, x;
		struct account a;

		if (account_by_id(tx, id, &a) != ST_OK)
			continue;
		for (size_t j = 0; j < r->n; j++) {
			if ((!strcmp(r->to_id[j], id) && __builtin_add_overflow(credits, r->p[j].amount, &credits)) ||
			    (!strcmp(r->from_id[j], id) && __builtin_add_overflow(debits, r->p[j].amount, &debits)))
				return true;
		}
		if (__builtin_add_overflow(a.balance, credits, &x) ||
		    __builtin_sub_overflow(a.balance, debits, &x) || __builtin_sub_overflow(x, a.held, &x))
			return true;
	}
	return false;
}

/* The first debited account of the transfer that may not go negative and
 * whose net debit is positive: the one a refusal that no balance explains
 * any more was for (see TRANSFER_REPOSTS); -1 if none. */
static int debited_account(const struct transfer_req *r, const struct account *from)
{
	for (size_t i = 0; i < r->n; i++) {
		int64_t net = 0;

		if (from[i].may_go_negative)
			continue;
		for (size_t j = 0; j < r->n; j++) {
			if (!strcmp(r->from_id[j], from[i].id) && __builtin_add_overflow(net, r->p[j].amount, &net))
				return (int)i;
			if (!strcmp(r->to_id[j], from[i].id) && __builtin_sub_overflow(net, r->p[j].amount, &net))
				return (int)i;
		}
		if (net > 0)
			return (int)i;
	}
	return -1;
}

/* Posts a transfer the store refused with no balance explaining it any
 * more at most this many times again (below). */
#define TRANSFER_REPOSTS 8

struct post_arg {
	const struct ledger_post *post;
	char tx_id[LEDGER_ID_MAX + 1];
};

static enum st_rc post_nested(struct tx *tx, void *arg)
{
	struct post_arg *a = arg;

	return ledger_post(tx, a->post, a->tx_id);
}

static enum st_rc insufficient(struct resp *resp, const struct transfer_req *r, const struct account *from,
			       int i)
{
	char shown[ACCOUNT_QNAME_MAX + 1];

	account_display_name(&from[i], r->caller, shown);
	return unit_error(resp, ERR_TRANSFER_SHORT,
			  json_pack("{s:s, s:s}", "field", r->p[i].from_field, "account", shown));
}

/* resp: the 201 of transfer r, posted as post with id tx_id in this
 * unit; from: its accounts as resolved (2 * r->n: debited, then credited).
 * Answered from what the unit posted, as ledger_tx_get would read it back
 * (entries in posting order, the unit's clock): reading it again would
 * cost four round trips on PostgreSQL. */
static enum st_rc transfer_answer(struct tx *tx, const struct transfer_req *r,
				  const struct ledger_post *post, const struct account *from,
				  const char *tx_id, struct resp *resp)
{
	struct ledger_tx_view *v = calloc(1, sizeof(*v));
	char location[64];
	enum st_rc rc;

	if (!v)
		return ST_NOMEM;
	snprintf(v->id, sizeof(v->id), "%s", tx_id);
	snprintf(v->kind, sizeof(v->kind), "%s", post->kind);
	snprintf(v->client_id, sizeof(v->client_id), "%s", post->client_id ? post->client_id : "");
	snprintf(v->description, sizeof(v->description), "%s", r->description ? r->description : "");
	snprintf(v->metadata, sizeof(v->metadata), "%s", r->metadata ? r->metadata : "");
	v->created_at = tx_now_ms(tx);
	for (size_t k = 0; k < post->n; k++) {
		snprintf(v->entries[k].account_id, sizeof(v->entries[k].account_id), "%s",
			 post->entries[k].account_id);
		v->entries[k].dir = post->entries[k].dir;
		v->entries[k].amount = post->entries[k].amount;
	}
	v->n = post->n;
	snprintf(location, sizeof(location), "/api/v2/transfers/%s", tx_id);
	rc = resp_location(resp, location);
	if (rc == ST_OK)
		rc = resp_ok(resp, transfer_json(tx, v, r->caller, from, 2 * r->n));
	free(v);
	return rc;
}

static enum st_rc transfer_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct transfer_req *r = arg;
	struct account *from = NULL, *to = NULL;
	struct ledger_entry e[LEDGER_MAX_ENTRIES];
	struct ledger_post post = { .kind = "transfer", .entries = e, .n = 2 * r->n,
				    .description = r->description, .metadata = r->metadata };
	struct post_arg pa = { .post = &post };
	enum st_rc rc;
	int i;

	post.client_id = strcmp(r->caller, "admin") ? r->caller : NULL;
	from = calloc(2 * r->n, sizeof(*from));
	to = from ? from + r->n : NULL;
	if (!from) {
		rc = ST_NOMEM;
		goto out;
	}
	for (size_t k = 0; k < r->n; k++) {
		enum st_rc from_rc, to_rc;

		/* Both names in one statement (one round trip on PostgreSQL). */
		rc = account_resolve_two(tx, r->caller, r->p[k].from, ACCOUNT_DEBIT, &from[k], &from_rc,
					 r->p[k].to, ACCOUNT_CREDIT, &to[k], &to_rc);
		if (rc)
			goto out;
		if (from_rc == ST_NOT_FOUND) {
			rc = unit_error(resp, ERR_TRANSFER_FROM_UNKNOWN,
					json_pack("{s:s}", "field", r->p[k].from_field));
			goto out;
		}
		if (to_rc == ST_NOT_FOUND) {
			rc = unit_error(resp, ERR_TRANSFER_TO_UNKNOWN,
					json_pack("{s:s}", "field", r->p[k].to_field));
			goto out;
		}
		if (!strcmp(from[k].id, to[k].id)) {
			rc = unit_error(resp, ERR_POSTING_SAME_ACCOUNT,
					json_pack("{s:s}", "field", r->p[k].to_field));
			goto out;
		}
		memcpy(r->from_id[k], from[k].id, sizeof(r->from_id[k]));
		memcpy(r->to_id[k], to[k].id, sizeof(r->to_id[k]));
		e[2 * k] = (struct ledger_entry){ r->from_id[k], LEDGER_DEBIT, r->p[k].amount };
		e[2 * k + 1] = (struct ledger_entry){ r->to_id[k], LEDGER_CREDIT, r->p[k].amount };
	}
	i = short_account(tx, r, from, false);
	if (i >= 0) {
		rc = insufficient(resp, r, from, i);
		goto out;
	}
	for (int reposts = 0;; reposts++) {
		if (tx_dialect(tx) == ST_PG && r->posts++ == 0) {
			/* On PostgreSQL a savepoint around the post is a
			 * subtransaction of its own inside the unit's (the
			 * batch's savepoint): ~44k of the ~950k backend
			 * instructions of a transfer into revenue (callgrind of
			 * the writer backend, docs/internals/ledger.md). It is
			 * needed only to read the accounts again after the store
			 * refused the post. So the unit's first post goes
			 * without it; a refusal aborts the unit (rolled back to
			 * its batch savepoint, as any failing unit, its
			 * batch-mates unharmed) and ST_BUSY has the store run it
			 * again on a fresh transaction, where it checks the
			 * funds it reads then and posts under tx_nested as
			 * below: the same answers. */
			rc = ledger_post(tx, &post, pa.tx_id);
			if (rc == ST_CONFLICT) {
				rc = ST_BUSY;
				goto out;
			}
		} else {
			rc = tx_nested(tx, post_nested, &pa);
		}
		if (rc != ST_CONFLICT)
			break;
		/* The store refused it (nothing of it is left): a concurrent
		 * writer took the funds after the check (PostgreSQL), or a
		 * balance would overflow. The accounts are read again to say
		 * which. On PostgreSQL (READ COMMITTED) another writer may
		 * have put the funds back between the refusal and this read:
		 * then no balance explains it, and answering
		 * balance_overflow for it (as this did) was wrong. It is
		 * posted again instead, against the balances as they are
		 * now; a transfer refused that way TRANSFER_REPOSTS times
		 * over was short each time: insufficient_funds, naming its
		 * debited account. */
		i = short_account(tx, r, from, true);
		if (i >= 0) {
			rc = insufficient(resp, r, from, i);
			goto out;
		}
		if (may_overflow(tx, r)) {
			rc = unit_error(resp, ERR_BALANCE_OVERFLOW, NULL);
			goto out;
		}
		i = debited_account(r, from);
		if (reposts == TRANSFER_REPOSTS || i < 0) {
			rc = i >= 0 ? insufficient(resp, r, from, i)
				    : unit_error(resp, ERR_BALANCE_OVERFLOW, NULL);
			goto out;
		}
	}
	if (rc == ST_INVALID) {
		rc = unit_error(resp, ERR_POSTINGS_OVERFLOW, NULL);
		goto out;
	}
	if (rc)
		goto out;
	rc = transfer_answer(tx, r, &post, from, pa.tx_id, resp);
out:
	free(from);
	return rc;
}

/* A merged run of one-posting transfers on PostgreSQL (req_merge_fn): each
 * unit's accounts read and checked as transfer_unit does, then every
 * posting in a few statements (ledger_post_many) instead of a savepoint,
 * the append lock, an entries statement and a closing row each, and the
 * answers. A run whose units would not all post (an unknown account, the
 * same account on both sides, short funds) or whose statements fail (the
 * store refused a posting) returns an error: the store rolls the run back and
 * runs each unit alone, which gives it its own answer. Writes nothing
 * before the postings, which are the run's last statements. */
static enum st_rc transfer_merge(struct tx *tx, void *const *args, struct resp *const *resps,
				 const char *const *trace_contexts, int n)
{
	struct merged {
		struct account acct[2]; /* debited, credited: transfer_json's known */
		struct ledger_entry e[2];
		struct ledger_post post;
	} *m = calloc((size_t)n, sizeof(*m));
	const struct ledger_post **posts = calloc((size_t)n, sizeof(*posts));
	char (*ids)[LEDGER_ID_MAX + 1] = calloc((size_t)n, sizeof(*ids));
	enum st_rc rc = ST_OK;

	(void)trace_contexts; /* a transfer queues no job */
	if (!m || !posts || !ids) {
		rc = ST_NOMEM;
		goto out;
	}
	for (int i = 0; i < n && rc == ST_OK; i++) {
		struct transfer_req *r = args[i];
		enum st_rc from_rc, to_rc;
		int64_t need;

		if (r->n != 1) {
			rc = ST_INVALID; /* route_transfer_create merges only these */
			break;
		}
		rc = account_resolve_two(tx, r->caller, r->p[0].from, ACCOUNT_DEBIT, &m[i].acct[0],
					 &from_rc, r->p[0].to, ACCOUNT_CREDIT, &m[i].acct[1], &to_rc);
		if (rc)
			break;
		if (from_rc != ST_OK || to_rc != ST_OK || !strcmp(m[i].acct[0].id, m[i].acct[1].id)) {
			rc = ST_CONFLICT; /* its own answer is a 4xx: alone */
			break;
		}
		/* short_account's check for one posting, counting what the
		 * run's earlier units take from the same account (all read its
		 * balance before any of them posts; what they pay into it is
		 * left out, so this never passes what posting them one by one
		 * would refuse). Short: alone, for its own 422. */
		need = r->p[0].amount;
		for (int j = 0; j < i; j++)
			if (!strcmp(m[j].acct[0].id, m[i].acct[0].id) &&
			    __builtin_add_overflow(need, ((struct transfer_req *)args[j])->p[0].amount, &need))
				need = INT64_MAX;
		if (!m[i].acct[0].may_go_negative && m[i].acct[0].balance - m[i].acct[0].held < need) {
			rc = ST_CONFLICT;
			break;
		}
		memcpy(r->from_id[0], m[i].acct[0].id, sizeof(r->from_id[0]));
		memcpy(r->to_id[0], m[i].acct[1].id, sizeof(r->to_id[0]));
		m[i].e[0] = (struct ledger_entry){ r->from_id[0], LEDGER_DEBIT, r->p[0].amount };
		m[i].e[1] = (struct ledger_entry){ r->to_id[0], LEDGER_CREDIT, r->p[0].amount };
		m[i].post = (struct ledger_post){ .kind = "transfer", .entries = m[i].e, .n = 2,
						  .description = r->description,
						  .metadata = r->metadata,
						  .client_id = strcmp(r->caller, "admin") ? r->caller : NULL };
		posts[i] = &m[i].post;
	}
	if (rc == ST_OK)
		rc = ledger_post_many(tx, posts, n, ids);
	for (int i = 0; i < n && rc == ST_OK; i++)
		rc = transfer_answer(tx, args[i], &m[i].post, m[i].acct, ids[i], resps[i]);
out:
	free(m);
	free(posts);
	free(ids);
	return rc;
}

static const struct req_merge transfer_merged = { .run = transfer_merge };

/* Reads one posting object at field prefix pre ("" or "postings[i]."). */
static bool read_posting(struct req_ctx *rq, const json_t *o, const char *pre, struct posting *p,
			 bool single)
{
	const json_t *from = json_object_get(o, "from"), *to = json_object_get(o, "to");
	char field[FIELD_MAX];

	if (!single && !json_is_object(o)) {
		snprintf(field, sizeof(field), "%.*s", (int)strlen(pre) - 1, pre);
		req_error(rq, ERR_POSTING_NOT_OBJECT, json_pack("{s:s}", "field", field));
		return true;
	}
	snprintf(p->from_field, sizeof(p->from_field), "%sfrom", pre);
	snprintf(p->to_field, sizeof(p->to_field), "%sto", pre);
	if (!json_is_string(from) || json_string_length(from) == 0 ||
	    json_string_length(from) > ACCOUNT_QNAME_MAX) {
		req_error(rq, ERR_POSTING_FROM, json_pack("{s:s}", "field", p->from_field));
		return true;
	}
	if (!json_is_string(to) || json_string_length(to) == 0 || json_string_length(to) > ACCOUNT_QNAME_MAX) {
		req_error(rq, ERR_POSTING_TO, json_pack("{s:s}", "field", p->to_field));
		return true;
	}
	if (input_amount(json_object_get(o, "amount"), &p->amount)) {
		snprintf(field, sizeof(field), "%samount", pre);
		req_error(rq, ERR_INVALID_AMOUNT, json_pack("{s:s}", "field", field));
		return true;
	}
	snprintf(p->from, sizeof(p->from), "%s", json_string_value(from));
	snprintf(p->to, sizeof(p->to), "%s", json_string_value(to));
	return false;
}

enum st_rc route_transfer_create(struct req_ctx *rq)
{
	static const char *const many[] = { "postings", "description", "metadata", NULL };
	static const char *const one[] = { "from", "to", "amount", "description", "metadata", NULL };
	json_t *body = req_json(rq);
	const json_t *postings = json_object_get(body, "postings");
	const json_t *desc = json_object_get(body, "description");
	struct transfer_req *r;

	if (reqcheck_fields(rq, body, postings ? many : one))
		return ST_OK;
	r = req_alloc(rq, sizeof(*r));
	if (!r)
		return ST_NOMEM;
	snprintf(r->caller, sizeof(r->caller), "%s", req_client_id(rq));
	if (postings) {
		if (!json_is_array(postings) || json_array_size(postings) == 0 ||
		    json_array_size(postings) > TRANSFER_MAX_POSTINGS)
			return req_error(rq, ERR_INVALID_POSTINGS, NULL);
		for (size_t i = 0; i < json_array_size(postings); i++) {
			char pre[FIELD_MAX];

			snprintf(pre, sizeof(pre), "postings[%zu].", i);
			if (read_posting(rq, json_array_get(postings, i), pre, &r->p[i], false))
				return ST_OK;
		}
		r->n = json_array_size(postings);
	} else {
		if (read_posting(rq, body, "", &r->p[0], true))
			return ST_OK;
		r->n = 1;
	}
	if (desc && !json_is_null(desc)) {
		size_t n = json_is_string(desc) ? json_string_length(desc) : 0;

		if (!json_is_string(desc) || n > LEDGER_DESCRIPTION_MAX || strlen(json_string_value(desc)) != n)
			return req_error(rq, ERR_INVALID_DESCRIPTION, NULL);
		r->description = req_alloc(rq, n + 1);
		if (!r->description)
			return ST_NOMEM;
		memcpy(r->description, json_string_value(desc), n + 1);
	}
	if (reqcheck_metadata(rq, json_object_get(body, "metadata"), &r->metadata))
		return ST_OK;
	/* One posting on PostgreSQL (a database URL): the writer may post it with
	 * others of the same batch (transfer_merge). SQLite posts each in its
	 * unit, as before: its statements cost no round trip. */
	if (r->n == 1 && req_app(rq)->cfg->database_url)
		return req_commit_merged(rq, &transfer_merged, transfer_unit, r);
	return req_commit(rq, transfer_unit, r);
}

/* ---- GET /api/v2/transfers/{id} ---- */

struct transfer_read {
	const char *caller;
	const char *id;
	json_t *body;
};

static enum st_rc transfer_read_unit(struct tx *tx, void *arg)
{
	struct transfer_read *r = arg;
	struct ledger_tx_view *v = malloc(sizeof(*v));
	enum st_rc rc;

	if (!v)
		return ST_NOMEM;
	rc = ledger_tx_get(tx, strcmp(r->caller, "admin") ? r->caller : NULL, r->id, v);
	if (rc == ST_OK) {
		r->body = transfer_json(tx, v, r->caller, NULL, 0);
		rc = r->body ? ST_OK : ST_NOMEM;
	}
	free(v);
	return rc;
}

enum st_rc route_transfer_get(struct req_ctx *rq)
{
	struct transfer_read r = { .caller = req_client_id(rq), .id = req_param(rq, "id") };
	enum st_rc rc;

	if (!r.id || strlen(r.id) > LEDGER_ID_MAX)
		return req_error(rq, ERR_TRANSFER_NOT_FOUND, NULL);
	rc = store_read(req_app(rq)->store, transfer_read_unit, &r);
	if (rc == ST_NOT_FOUND)
		return req_error(rq, ERR_TRANSFER_NOT_FOUND, NULL);
	if (rc == ST_NOMEM)
		return req_error(rq, ERR_OUT_OF_MEMORY, NULL);
	if (rc)
		return req_error(rq, ERR_STORE_READ, NULL);
	return req_ok(rq, r.body);
}

/* routes_admin.c — operator routes for the job queue and reconciliation
 * (SPEC sections 8, 10). All are ROUTE_ADMIN: the dispatcher has checked
 * the admin token (401 without, 403 wrong) before any of this runs.
 *
 *   GET    /api/admin/dlq?after=&limit=      dead jobs, keyset-paginated by id
 *   POST   /api/admin/dlq/{job}/retry        dead -> available now, attempts reset
 *   DELETE /api/admin/dlq/{job}              deletes a dead job
 *   GET    /api/admin/reconciliation         the newest reconciliation report
 *   POST   /api/admin/reconciliation         runs one now, stores and returns it
 *
 * Error codes: invalid_parameter (400); job_not_found,
 * reconciliation_not_run (404); job_not_dead (409). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "errors.h"
#include "http.h"
#include "queue.h"
#include "reconcile.h"
#include "route_table.h"
#include "settled.h"
#include "ticker.h"
#include "worker.h"
#include "present.h"
#include "banned.h"

#define DLQ_PAGE_DEFAULT 50
#define DLQ_PAGE_MAX 200

/* A non-negative decimal integer of at most 18 digits (no sign, no spaces). */
static bool parse_id(const char *s, int64_t *out)
{
	int64_t v = 0;
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 18)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *job_json(const struct job *j)
{
	json_t *payload = json_loads(j->payload, JSON_DECODE_ANY, NULL);

	return json_pack("{s:I, s:s, s:s, s:s, s:i, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id",
			 (json_int_t)j->id, "queue", j->queue, "kind", j->kind, "state",
			 job_state_str(j->state), "attempts", j->attempts, "max_attempts",
			 j->max_attempts, "payload", payload ? payload : json_string(j->payload),
			 "last_error", str_or_null(j->last_error), "unique_key",
			 str_or_null(j->unique_key), "run_at", present_time(j->run_at), "created_at",
			 present_time(j->created_at), "updated_at", present_time(j->updated_at),
			 "finished_at", present_time(j->finished_at));
}

/* ---- GET /api/admin/dlq ---- */

struct dlq_page {
	int64_t after;
	int limit;
	struct job jobs[DLQ_PAGE_MAX + 1];
	int n;
};

static enum st_rc dlq_page_unit(struct tx *tx, void *arg)
{
	struct dlq_page *p = arg;

	/* One more than asked: tells whether a next page exists. */
	return queue_dlq_list(tx, p->after, p->limit + 1, p->jobs, &p->n);
}

enum st_rc route_admin_dlq_list(struct req_ctx *rq)
{
	const char *after = req_query(rq, "after"), *limit = req_query(rq, "limit");
	struct dlq_page *p = req_alloc(rq, sizeof(*p));
	json_t *data, *body = NULL;
	bool more;
	int64_t v;
	enum st_rc rc;

	if (!p)
		return ST_NOMEM;
	p->limit = DLQ_PAGE_DEFAULT;
	if (limit) {
		if (!parse_id(limit, &v) || v < 1)
			return req_error(rq, ERR_LIMIT_TO_200, NULL);
		p->limit = v > DLQ_PAGE_MAX ? DLQ_PAGE_MAX : (int)v;
	}
	if (after && !parse_id(after, &p->after))
		return req_error(rq, ERR_DLQ_AFTER, NULL);
	rc = store_read(req_app(rq)->store, dlq_page_unit, p);
	if (rc)
		return req_error(rq, ERR_STORE_READ, NULL);
	more = p->n > p->limit;
	if (more)
		p->n = p->limit;
	data = json_array();
	for (int i = 0; data && i < p->n; i++) {
		json_t *j = job_json(&p->jobs[i]);

		if (!j || json_array_append_new(data, j)) {
			json_decref(data);
			data = NULL;
		}
	}
	if (data)
		body = json_pack("{s:o, s:o, s:i}", "data", data, "next_after",
				 more ? json_integer((json_int_t)p->jobs[p->n - 1].id) : json_null(),
				 "limit", p->limit);
	for (int i = 0; i < p->n + (more ? 1 : 0); i++)
		job_release(&p->jobs[i]);
	if (!body)
		return req_error(rq, ERR_OUT_OF_MEMORY, NULL);
	return req_ok(rq, body);
}

/* ---- POST /api/admin/dlq/{job}/retry, DELETE /api/admin/dlq/{job} ---- */

struct dlq_op {
	struct settled *app;
	int64_t id;
	bool retry;   /* else delete */
};

static enum st_rc dlq_op_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct dlq_op *o = arg;
	struct job j;
	enum st_rc rc = o->retry ? queue_dlq_retry(tx, o->id) : queue_dlq_delete(tx, o->id);

	if (rc == ST_NOT_FOUND)
		return unit_error(resp, ERR_JOB_NOT_FOUND, json_pack("{s:I}", "job", (json_int_t)o->id));
	if (rc == ST_CONFLICT) {
		json_t *extra = json_pack("{s:I}", "job", (json_int_t)o->id);

		if (queue_get(tx, o->id, &j) == ST_OK) {
			json_object_set_new(extra, "state", json_string(job_state_str(j.state)));
			job_release(&j);
		}
		return unit_error(resp, ERR_JOB_NOT_DEAD, extra);
	}
	if (rc)
		return rc;
	if (!o->retry)
		return resp_ok(resp, json_pack("{s:I, s:b}", "id", (json_int_t)o->id, "deleted", 1));
	rc = queue_get(tx, o->id, &j);
	if (rc)
		return rc;
	rc = resp_ok(resp, job_json(&j));
	job_release(&j);
	/* A hint only: the fetcher's claim queues behind this unit on the
	 * writer (SQLite) or finds the job at its next poll (PostgreSQL). */
	worker_pool_nudge(o->app->workers);
	return rc;
}

static enum st_rc dlq_op(struct req_ctx *rq, bool retry)
{
	struct dlq_op *o = req_alloc(rq, sizeof(*o));

	if (!o)
		return ST_NOMEM;
	if (!parse_id(req_param(rq, "job"), &o->id))
		return req_error(rq, ERR_JOB_NOT_FOUND, NULL);
	o->app = req_app(rq);
	o->retry = retry;
	return req_commit(rq, dlq_op_unit, o);
}

enum st_rc route_admin_dlq_retry(struct req_ctx *rq)
{
	return dlq_op(rq, true);
}

enum st_rc route_admin_dlq_delete(struct req_ctx *rq)
{
	return dlq_op(rq, false);
}

/* ---- reconciliation ---- */

struct recon_latest {
	char *json;
};

static enum st_rc recon_latest_unit(struct tx *tx, void *arg)
{
	struct recon_latest *r = arg;

	return reconcile_latest(tx, &r->json);
}

enum st_rc route_admin_reconciliation(struct req_ctx *rq)
{
	struct recon_latest r = { NULL };
	json_t *body;
	enum st_rc rc = store_read(req_app(rq)->store, recon_latest_unit, &r);

	if (rc == ST_NOT_FOUND)
		return req_error(rq, ERR_RECONCILIATION_NOT_RUN, NULL);
	if (rc)
		return req_error(rq, ERR_STORE_READ, NULL);
	body = json_loads(r.json, 0, NULL);
	free(r.json);
	if (!body)
		return req_error(rq, ERR_REPORT_UNREADABLE, NULL);
	return req_ok(rq, body);
}

struct recon_now {
	struct settled *app;
	struct reconcile_report r;
	char *json;
};

static enum st_rc recon_read_unit(struct tx *tx, void *arg)
{
	struct recon_now *c = arg;

	return reconcile_run(tx, c->app->cfg->stuck_after_ms, &c->r);
}

static enum st_rc recon_store_unit(struct tx *tx, void *arg, struct resp *resp)
{
	struct recon_now *c = arg;
	enum st_rc rc = reconcile_store(tx, &c->r, c->json);

	if (rc)
		return rc;
	rc = resp_ok(resp, json_loads(c->json, 0, NULL));
	if (rc == ST_OK)
		ticker_reconciled(c->app, &c->r);
	return rc;
}

/* The audit reads on this thread (a consistent snapshot, as every read
 * route does) and only the report's insert goes through the writer. */
enum st_rc route_admin_reconcile_now(struct req_ctx *rq)
{
	struct recon_now *c = req_alloc(rq, sizeof(*c));
	json_t *j;
	size_t len;
	enum st_rc rc;

	if (!c)
		return ST_NOMEM;
	c->app = req_app(rq);
	rc = store_read(c->app->store, recon_read_unit, c);
	if (rc)
		return req_error(rq, ERR_STORE_READ, NULL);
	j = reconcile_report_json(&c->r);
	len = j ? json_dumpb(j, NULL, 0, JSON_COMPACT) : 0;
	c->json = len ? req_alloc(rq, len + 1) : NULL;
	if (c->json)
		json_dumpb(j, c->json, len, JSON_COMPACT);
	json_decref(j);
	if (!c->json)
		return req_error(rq, ERR_OUT_OF_MEMORY, NULL);
	return req_commit(rq, recon_store_unit, c);
}

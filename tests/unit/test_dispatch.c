/* test_dispatch.c — the dispatcher against a store whose writer has always
 * finished a request's unit before store_submit returns to the handler.
 *
 * A real store's writer thread may finish (and answer) a unit at any time
 * after it was queued, even before the handler that queued it has returned
 * to dispatch(); the integration suites meet that ordering only sometimes.
 * Here the server runs in this process (http_start with the real route
 * table) on a SQLite store wrapped by a test store whose submit waits for
 * the unit's done() before it returns, which makes that ordering certain.
 * The wrapper lives only in this test program: the server binary has no
 * such knob. What it pins down: a keyed request's first answer is the unit's
 * MISS; dispatch must not look at what the writer wrote (rq->state) to
 * decide whether the handler queued a unit, or it looks the key up again,
 * finds the record the unit just committed and answers a HIT. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "http.h"
#include "idempotency.h"
#include "metrics.h"
#include "ratelimit.h"
#include "route_table.h"
#include "settled.h"
#include "store.h"
#include "webhook.h"

#include "banned.h"

/* ------------------------------------------------ the synchronous store */

/* A store that forwards to a real one (inner), except that submit returns
 * only after the unit's done() has returned: by then the request has been
 * answered and its connection resumed, while its handler is still running. */
struct sync_store {
	struct store base;
	struct store *inner;
};

/* One submitted unit; on the submitting thread's stack until done ran. */
struct sync_call {
	store_unit_fn *fn;
	store_done_fn *done;
	void *arg;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool finished;
};

static struct store *inner_of(struct store *s)
{
	return ((struct sync_store *)s)->inner;
}

static enum st_rc sync_call_fn(struct tx *tx, void *arg)
{
	struct sync_call *c = arg;

	return c->fn(tx, c->arg);
}

static void sync_call_done(void *arg, enum st_rc rc)
{
	struct sync_call *c = arg;

	c->done(c->arg, rc);
	pthread_mutex_lock(&c->mu);
	c->finished = true;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

static enum st_rc sync_submit(struct store *s, store_unit_fn *fn, store_done_fn *done, void *arg)
{
	struct sync_call c = { .fn = fn, .done = done, .arg = arg };
	struct store *in = inner_of(s);
	enum st_rc rc;

	pthread_mutex_init(&c.mu, NULL);
	pthread_cond_init(&c.cv, NULL);
	rc = in->ops->submit(in, sync_call_fn, sync_call_done, &c);
	if (rc == ST_OK) {
		pthread_mutex_lock(&c.mu);
		while (!c.finished)
			pthread_cond_wait(&c.cv, &c.mu);
		pthread_mutex_unlock(&c.mu);
	}
	pthread_cond_destroy(&c.cv);
	pthread_mutex_destroy(&c.mu);
	return rc;
}

static enum st_rc sync_submit_background(struct store *s, store_unit_fn *fn, store_done_fn *done,
					 void *arg)
{
	struct store *in = inner_of(s);

	return in->ops->submit_background ? in->ops->submit_background(in, fn, done, arg)
					  : in->ops->submit(in, fn, done, arg);
}

static enum st_rc sync_read(struct store *s, store_unit_fn *fn, void *arg)
{
	return store_read(inner_of(s), fn, arg);
}

static enum st_rc sync_read_one(struct store *s, store_unit_fn *fn, void *arg)
{
	return store_read_one(inner_of(s), fn, arg);
}

static enum st_rc sync_ping(struct store *s, struct buf *why)
{
	return store_ping(inner_of(s), why);
}

static void sync_close(struct store *s)
{
	store_close(inner_of(s));
	free(s);
}

/* submit_merged NULL: a merged unit runs alone, which every store may do
 * (store.h), and is submitted through sync_submit. */
static const struct store_ops sync_ops = {
	.name = "sync-sqlite",
	.submit = sync_submit,
	.submit_background = sync_submit_background,
	.submit_merged = NULL,
	.read = sync_read,
	.read_one = sync_read_one,
	.ping = sync_ping,
	.close = sync_close,
};

/* ------------------------------------------------ an in-process server */

struct server {
	char dir[64];
	struct config cfg;
	struct settled app;
	char base_url[64];
};

static void server_start(struct server *sv)
{
	char db[96], *env[3];
	struct buf err = BUF_INIT(512);
	struct store_options so = { 0 };
	struct sync_store *ss = calloc(1, sizeof(*ss));
	struct store *inner = NULL;

	cr_assert_not_null(ss);
	snprintf(sv->dir, sizeof(sv->dir), "/tmp/settled-dispatch-XXXXXX");
	cr_assert_not_null(mkdtemp(sv->dir));
	snprintf(db, sizeof(db), "SETTLED_DB=%s/settled.db", sv->dir);
	env[0] = db;
	env[1] = (char *)"SETTLED_LISTEN=127.0.0.1:0";
	env[2] = NULL;
	cr_assert_eq(config_load(&sv->cfg, env, 0, NULL, NULL, &err), ST_OK, "%s", err.ptr);

	memset(&sv->app, 0, sizeof(sv->app));
	sv->app.cfg = &sv->cfg;
	log_init(&sv->app.log, STDERR_FILENO, LOG_ERROR);
	clock_anchor_init(&sv->app.clock);
	sv->app.clock_ms = clock_anchor_now_ms;
	sv->app.clock_arg = &sv->app.clock;
	sv->app.started_ms = settled_now_ms(&sv->app);
	snprintf(sv->app.instance_id, sizeof(sv->app.instance_id), "%ld-test", (long)getpid());
	/* policies[] zeroed: every rate limit disabled */
	cr_assert_eq(randpool_init(&sv->app.rand), ST_OK);
	sv->app.metrics = metrics_new();
	sv->app.rl = rl_memory_new(0);
	sv->app.idem = idem_new();
	sv->app.wh_keys = webhook_keyring_new(&sv->cfg);
	cr_assert(sv->app.metrics && sv->app.rl && sv->app.idem && sv->app.wh_keys);
	cr_assert_eq(settled_metrics_init(&sv->app.m, sv->app.metrics), ST_OK);

	so.sqlite_path = sv->cfg.db_path;
	so.log = &sv->app.log;
	so.rand = &sv->app.rand;
	cr_assert_eq(store_open(&so, &inner, &err), ST_OK, "store_open: %s", err.ptr);
	inner->clock_ms = sv->app.clock_ms;
	inner->clock_arg = sv->app.clock_arg;
	ss->inner = inner;
	ss->base = *inner;
	ss->base.ops = &sync_ops;
	/* the key check in the unit, as on SQLite: the path the race was on */
	cr_assert(ss->base.unit_reads_cheap);
	sv->app.store = &ss->base;

	cr_assert_eq(http_start(&sv->app, settled_routes, settled_nroutes, &sv->app.http, &err), ST_OK,
		     "http_start: %s", err.ptr);
	snprintf(sv->base_url, sizeof(sv->base_url), "http://127.0.0.1:%u", http_port(sv->app.http));
	buf_release(&err);
}

static void server_stop(struct server *sv)
{
	char cmd[128];

	atomic_store(&sv->app.stopping, true);
	http_stop(sv->app.http, 5000);
	store_close(sv->app.store);
	randpool_destroy(&sv->app.rand);
	idem_free(sv->app.idem);
	webhook_keyring_free(sv->app.wh_keys);
	rl_free(sv->app.rl);
	metrics_free(sv->app.metrics);
	config_release(&sv->cfg);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sv->dir);
	cr_expect_eq(system(cmd), 0);
}

/* ------------------------------------------------ a client */

struct answer {
	long status;
	char idem[16];  /* X-Idempotency, "" when absent */
	char body[2048];
	size_t body_len;
};

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct answer *a = arg;
	size_t len = size * n;
	static const char name[] = "x-idempotency:";

	if (len > sizeof(name) - 1 && !strncasecmp(p, name, sizeof(name) - 1)) {
		const char *v = p + sizeof(name) - 1;
		size_t vl = len - (sizeof(name) - 1);

		while (vl && (*v == ' ' || *v == '\t'))
			v++, vl--;
		while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
			vl--;
		snprintf(a->idem, sizeof(a->idem), "%.*s", (int)vl, v);
	}
	return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct answer *a = arg;
	size_t len = size * n, room = sizeof(a->body) - 1 - a->body_len;

	memcpy(a->body + a->body_len, p, len < room ? len : room);
	a->body_len += len < room ? len : room;
	a->body[a->body_len] = '\0';
	return len;
}

static void post(const struct server *sv, const char *path, const char *body, const char *key,
		 struct answer *a)
{
	CURL *c = curl_easy_init();
	struct curl_slist *h = NULL;
	char url[160], kh[160];
	CURLcode cc;

	cr_assert_not_null(c);
	memset(a, 0, sizeof(*a));
	snprintf(url, sizeof(url), "%s%s", sv->base_url, path);
	h = curl_slist_append(h, "Content-Type: application/json");
	if (key) {
		snprintf(kh, sizeof(kh), "Idempotency-Key: %s", key);
		h = curl_slist_append(h, kh);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, a);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	cc = curl_easy_perform(c);
	cr_assert_eq(cc, CURLE_OK, "POST %s: %s", path, curl_easy_strerror(cc));
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
}

/* ------------------------------------------------ tests */

TestSuite(dispatch, .timeout = 120);

/* The writer has finished the unit (and recorded the key) before the
 * handler returns: the answer is still the unit's own, a MISS; the same key
 * again is the HIT replay of it. */
Test(dispatch, a_keyed_unit_finished_before_the_handler_returns_answers_miss)
{
	struct server sv;
	struct answer first, again;
	const char *body = "{\"wallet\":\"0x1111111111111111111111111111111111111111\"}";

	server_start(&sv);
	post(&sv, "/api/register", body, "dispatch-key-1", &first);
	cr_expect_eq(first.status, 201, "status %ld: %s", first.status, first.body);
	cr_expect_str_eq(first.idem, "MISS", "first answer X-Idempotency: %s", first.idem);
	post(&sv, "/api/register", body, "dispatch-key-1", &again);
	cr_expect_eq(again.status, 201, "status %ld: %s", again.status, again.body);
	cr_expect_str_eq(again.idem, "HIT");
	cr_expect_str_eq(again.body, first.body);
	server_stop(&sv);
}

/* The same ordering for a refusal made in the unit (a taken wallet, new
 * key): its 409 is the unit's answer, recorded, and not replaced. */
Test(dispatch, a_keyed_refusal_finished_before_the_handler_returns_answers_miss)
{
	struct server sv;
	struct answer a, b;
	const char *body = "{\"wallet\":\"0x2222222222222222222222222222222222222222\"}";

	server_start(&sv);
	post(&sv, "/api/register", body, NULL, &a);
	cr_expect_eq(a.status, 201, "status %ld: %s", a.status, a.body);
	cr_expect_str_eq(a.idem, "");
	post(&sv, "/api/register", body, "dispatch-key-2", &b);
	cr_expect_eq(b.status, 409, "status %ld: %s", b.status, b.body);
	cr_expect_str_eq(b.idem, "MISS", "X-Idempotency: %s", b.idem);
	server_stop(&sv);
}

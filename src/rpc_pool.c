/* rpc_pool.c — JSON-RPC providers with failover and circuit breakers (see
 * rpc_pool.h).
 *
 * Invariants, under pool->mu:
 *   - a provider's breaker is OPEN while failures >= breaker_failures and
 *     its last failure is less than a cool-down old; then at most one call
 *     (probing set) goes to it until that call's outcome is recorded;
 *   - the provider_up gauge is 1 exactly when the provider is usable
 *     (breaker not open, chain not wrong), set on every state change.
 * No I/O happens under mu. */
#include "rpc_pool.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json_out.h"
#include "log.h"
#include "metrics.h"
#include "banned.h"

#define RPC_BODY_MAX (8u << 20) /* a receipt with many logs; above: malformed */
#define RPC_MAX_PROVIDERS 16

enum breaker { BR_CLOSED, BR_OPEN, BR_HALF_OPEN };
enum chain_state { CHAIN_UNKNOWN, CHAIN_OK, CHAIN_WRONG };

static const char *const breaker_names[] = { "closed", "open", "half_open" };
static const char *const chain_names[] = { "unknown", "ok", "wrong" };

struct provider {
	char *url;                   /* secret: never logged */
	char label[RPC_LABEL_MAX];
	enum breaker br;
	enum chain_state chain;
	int failures;                /* consecutive */
	int64_t opened_at_ms;        /* monotonic */
	bool probing;                /* a half-open probe is in flight */
	double ewma_ms;              /* smoothed latency of successful calls; 0 = none yet */
	struct metric_series *up;
	struct metric_series *duration;
};

struct handle {
	CURL *curl;
	struct handle *next;
};

struct rpc_pool {
	pthread_mutex_t mu;
	struct provider prov[RPC_MAX_PROVIDERS];
	size_t n;
	uint64_t chain_id;
	int64_t timeout_ms;
	int breaker_failures;
	int64_t cooldown_ms;
	struct metric_family *requests; /* settled_rpc_requests_total{provider,method,result} */
	const struct logger *log;
	struct curl_slist *headers;
	struct handle *free_handles;    /* idle easy handles: their connections stay open */
	bool curl_inited;
	atomic_ulong next_id;
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void rpc_provider_label(const char *url, size_t i, char out[RPC_LABEL_MAX])
{
	CURLU *u = curl_url();
	char *host = NULL, *port = NULL;

	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
		curl_url_get(u, CURLUPART_PORT, &port, 0);
		snprintf(out, RPC_LABEL_MAX, "rpc%zu@%s%s%s", i, host, port ? ":" : "", port ? port : "");
	} else {
		snprintf(out, RPC_LABEL_MAX, "rpc%zu", i);
	}
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
}

/* ---- bookkeeping (under mu) ---- */

static bool usable_now(const struct rpc_pool *p, const struct provider *v, int64_t now)
{
	if (v->chain == CHAIN_WRONG)
		return false;
	if (v->br == BR_OPEN)
		return now - v->opened_at_ms >= p->cooldown_ms && !v->probing;
	if (v->br == BR_HALF_OPEN)
		return !v->probing;
	return true;
}

static void set_up(const struct provider *v)
{
	metric_set(v->up, v->chain != CHAIN_WRONG && v->br != BR_OPEN ? 1 : 0);
}

/* Fills order[] with the providers to try, healthiest first; marks the
 * half-open probes it hands out. Returns how many. */
static size_t pick_order(struct rpc_pool *p, size_t order[RPC_MAX_PROVIDERS])
{
	int64_t now = mono_ms();
	size_t n = 0;

	pthread_mutex_lock(&p->mu);
	for (size_t i = 0; i < p->n; i++)
		if (usable_now(p, &p->prov[i], now))
			order[n++] = i;
	/* Insertion sort: a handful of providers. */
	for (size_t i = 1; i < n; i++) {
		size_t k = order[i], j = i;

		while (j > 0) {
			const struct provider *a = &p->prov[order[j - 1]], *b = &p->prov[k];
			bool a_closed = a->br == BR_CLOSED, b_closed = b->br == BR_CLOSED;
			bool b_first = (b_closed && !a_closed) ||
				       (b_closed == a_closed &&
					(b->failures < a->failures ||
					 (b->failures == a->failures && b->ewma_ms < a->ewma_ms)));

			if (!b_first)
				break;
			order[j] = order[j - 1];
			j--;
		}
		order[j] = k;
	}
	for (size_t i = 0; i < n; i++) {
		struct provider *v = &p->prov[order[i]];

		if (v->br != BR_CLOSED) {
			v->br = BR_HALF_OPEN;
			v->probing = true;
		}
	}
	pthread_mutex_unlock(&p->mu);
	return n;
}

/* Hands back the probes of providers a call did not get to. */
static void unpick(struct rpc_pool *p, const size_t *order, size_t n)
{
	pthread_mutex_lock(&p->mu);
	for (size_t i = 0; i < n; i++) {
		struct provider *v = &p->prov[order[i]];

		if (v->br == BR_HALF_OPEN && v->probing) {
			v->probing = false;
			v->br = BR_OPEN; /* cool-down elapsed: the next caller probes */
		}
	}
	pthread_mutex_unlock(&p->mu);
}

static void record(struct rpc_pool *p, size_t i, bool ok, double ms)
{
	struct provider *v = &p->prov[i];
	bool opened = false, closed = false;
	int failures;

	pthread_mutex_lock(&p->mu);
	v->probing = false;
	if (ok) {
		closed = v->br != BR_CLOSED;
		v->br = BR_CLOSED;
		v->failures = 0;
		v->ewma_ms = v->ewma_ms > 0 ? 0.8 * v->ewma_ms + 0.2 * ms : ms;
	} else {
		v->failures++;
		if (v->br == BR_HALF_OPEN || (v->br == BR_CLOSED && v->failures >= p->breaker_failures)) {
			opened = v->br == BR_CLOSED;
			v->br = BR_OPEN;
			v->opened_at_ms = mono_ms();
		}
	}
	failures = v->failures;
	set_up(v);
	pthread_mutex_unlock(&p->mu);
	if (opened && p->log)
		log_msg(p->log, LOG_WARN,
			"rpc provider %s: circuit open after %d consecutive failures; probing again in %lld ms",
			v->label, failures, (long long)p->cooldown_ms);
	if (closed && p->log)
		log_msg(p->log, LOG_INFO, "rpc provider %s: circuit closed (probe succeeded)", v->label);
}

/* ---- HTTP ---- */

static size_t collect(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct buf *b = arg;
	size_t n = size * nmemb;

	if (b->len + n > RPC_BODY_MAX || buf_append(b, ptr, n))
		return 0; /* too large: the transfer fails as a write error */
	return n;
}

static CURL *handle_get(struct rpc_pool *p)
{
	struct handle *h;
	CURL *c;

	pthread_mutex_lock(&p->mu);
	h = p->free_handles;
	if (h)
		p->free_handles = h->next;
	pthread_mutex_unlock(&p->mu);
	if (h) {
		c = h->curl;
		free(h);
		return c;
	}
	c = curl_easy_init();
	if (!c)
		return NULL;
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for DNS timeouts */
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "settled-rpc");
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
	return c;
}

static void handle_put(struct rpc_pool *p, CURL *c)
{
	struct handle *h = malloc(sizeof(*h));

	if (!h) {
		curl_easy_cleanup(c);
		return;
	}
	h->curl = c;
	pthread_mutex_lock(&p->mu);
	h->next = p->free_handles;
	p->free_handles = h;
	pthread_mutex_unlock(&p->mu);
}

/* One POST. Returns the result label ("ok" or why not) and fills body. */
static const char *http_post(struct rpc_pool *p, const struct provider *v, const char *req,
			     struct buf *body)
{
	CURL *c = handle_get(p);
	CURLcode cc;
	long status = 0;

	if (!c)
		return "client_error";
	curl_easy_setopt(c, CURLOPT_URL, v->url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, p->headers);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, req);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)p->timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)p->timeout_ms);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
	cc = curl_easy_perform(c);
	if (cc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	/* The URL stays set on an idle handle; drop it from memory we keep. */
	curl_easy_setopt(c, CURLOPT_URL, "http://invalid.invalid/");
	handle_put(p, c);
	if (cc == CURLE_OPERATION_TIMEDOUT)
		return "timeout";
	if (cc == CURLE_WRITE_ERROR)
		return "too_large";
	if (cc != CURLE_OK)
		return "connect_error";
	if (status == 429)
		return "http_429";
	if (status >= 500)
		return "http_5xx";
	if (status < 200 || status > 299)
		return "http_error";
	return "ok";
}

/* ---- JSON-RPC checks ---- */

static bool one_answer_ok(const json_t *a, const json_t *id, bool *rpc_error)
{
	if (!json_is_object(a) || !json_equal(json_object_get(a, "id"), id))
		return false;
	if (json_object_get(a, "error")) {
		*rpc_error = true;
		return false;
	}
	return json_object_get(a, "result") != NULL;
}

/* Every request answered once, in any order (JSON-RPC allows reordering). */
static bool rpc_answer_ok(const json_t *req, const json_t *ans, bool *rpc_error)
{
	size_t i, j;
	const json_t *r, *a;

	if (json_is_object(req))
		return one_answer_ok(ans, json_object_get(req, "id"), rpc_error);
	if (!json_is_array(ans) || json_array_size(ans) != json_array_size(req))
		return false;
	json_array_foreach(req, i, r) {
		bool found = false;

		json_array_foreach(ans, j, a) {
			if (json_is_object(a) &&
			    json_equal(json_object_get(a, "id"), json_object_get(r, "id"))) {
				found = true;
				break;
			}
		}
		if (!found || !one_answer_ok(a, json_object_get(r, "id"), rpc_error))
			return false;
	}
	return true;
}

static void count(struct rpc_pool *p, const struct provider *v, const char *method,
		  const char *result)
{
	const char *const lv[] = { v->label, method, result };

	if (p->requests)
		metrics_inc(p->requests, lv);
}

/* Sends to provider i; ST_OK with *answer, else the failure label in *res. */
static enum st_rc try_provider(struct rpc_pool *p, size_t i, const char *method, const char *text,
			       const json_t *req, rpc_valid_fn *valid, void *arg, json_t **answer,
			       const char **res)
{
	struct provider *v = &p->prov[i];
	struct buf body = BUF_INIT(RPC_BODY_MAX);
	struct timespec t0, t1;
	double ms;
	json_t *ans = NULL;
	bool rpc_error = false;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	*res = http_post(p, v, text, &body);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	metric_observe(v->duration, ms / 1e3);
	if (!strcmp(*res, "ok")) {
		ans = json_loadb(body.ptr ? body.ptr : "", body.len, 0, NULL);
		if (!ans || !rpc_answer_ok(req, ans, &rpc_error) || (valid && !valid(ans, arg)))
			*res = rpc_error ? "rpc_error" : "malformed";
	}
	buf_release(&body);
	count(p, v, method, *res);
	record(p, i, !strcmp(*res, "ok"), ms);
	if (strcmp(*res, "ok")) {
		json_decref(ans);
		return ST_UNAVAILABLE;
	}
	*answer = ans;
	return ST_OK;
}

/* ---- the chain check ---- */

static bool chain_valid(const json_t *a, void *arg)
{
	const char *s = json_string_value(json_object_get(a, "result"));
	uint64_t *out = arg;
	char *end;

	if (!s || strncmp(s, "0x", 2) || !s[2] || strlen(s) > 18)
		return false;
	*out = strtoull(s + 2, &end, 16);
	return !*end;
}

/* Asks provider i for its chain once it is unknown. ST_OK: usable; else
 * *res says why not (a request's failure label, or "wrong_chain"). */
static enum st_rc ensure_chain(struct rpc_pool *p, size_t i, struct buf *err, const char **res)
{
	struct provider *v = &p->prov[i];
	json_t *req, *ans = NULL;
	uint64_t got = 0;
	char *text;
	enum chain_state st;
	enum st_rc rc;

	pthread_mutex_lock(&p->mu);
	st = v->chain;
	pthread_mutex_unlock(&p->mu);
	*res = "wrong_chain";
	if (st == CHAIN_OK)
		return ST_OK;
	if (st == CHAIN_WRONG)
		return ST_INVALID;
	req = json_pack("{s:s, s:I, s:s, s:[]}", "jsonrpc", "2.0", "id",
			(json_int_t)atomic_fetch_add(&p->next_id, 1), "method", "eth_chainId", "params");
	text = json_out_text(req);
	*res = "client_error";
	rc = text ? try_provider(p, i, "eth_chainId", text, req, chain_valid, &got, &ans, res)
		  : ST_NOMEM;
	free(text);
	json_decref(req);
	json_decref(ans);
	if (rc)
		return rc;
	pthread_mutex_lock(&p->mu);
	v->chain = got == p->chain_id ? CHAIN_OK : CHAIN_WRONG;
	set_up(v);
	pthread_mutex_unlock(&p->mu);
	if (got == p->chain_id)
		return ST_OK;
	*res = "wrong_chain";
	if (p->log)
		log_msg(p->log, LOG_ERROR,
			"rpc provider %s serves chain %" PRIu64 ", not SETTLED_EVM_CHAIN_ID=%" PRIu64
			": never used", v->label, got, p->chain_id);
	if (err) {
		buf_reset(err);
		buf_printf(err, "rpc provider %s serves chain %" PRIu64 ", not SETTLED_EVM_CHAIN_ID=%" PRIu64,
			   v->label, got, p->chain_id);
	}
	return ST_INVALID;
}

enum st_rc rpc_pool_check_chains(struct rpc_pool *p, struct buf *err)
{
	enum st_rc rc = ST_OK;

	for (size_t i = 0; i < p->n; i++) {
		const char *res;
		enum st_rc r = ensure_chain(p, i, err, &res);

		if (r == ST_INVALID)
			rc = ST_INVALID;
		else if (r && p->log)
			log_msg(p->log, LOG_WARN,
				"rpc provider %s: no answer to eth_chainId at start (%s); asked again before "
				"its first use", p->prov[i].label, res);
	}
	return rc;
}

/* ---- calls ---- */

enum st_rc rpc_pool_call(struct rpc_pool *p, const char *method, json_t *req,
			 rpc_valid_fn *valid, void *arg, json_t **answer, struct buf *why)
{
	size_t order[RPC_MAX_PROVIDERS];
	size_t n = pick_order(p, order), i;
	char *text = json_out_text(req);
	enum st_rc rc = ST_UNAVAILABLE;

	*answer = NULL;
	buf_reset(why);
	if (!text) {
		unpick(p, order, n);
		return ST_NOMEM;
	}
	if (!n)
		buf_puts(why, "no RPC provider available (every circuit open or wrong chain)");
	for (i = 0; i < n && rc; i++) {
		const char *res = "wrong_chain";

		if (ensure_chain(p, order[i], NULL, &res) == ST_OK)
			rc = try_provider(p, order[i], method, text, req, valid, arg, answer, &res);
		else
			unpick(p, &order[i], 1); /* the chain check failed: its probe is spent */
		if (rc)
			buf_printf(why, "%s%s: %s", why->len ? "; " : "rpc ", p->prov[order[i]].label, res);
	}
	unpick(p, order + i, n - i);
	free(text);
	return rc;
}

json_t *rpc_pool_health(struct rpc_pool *p)
{
	json_t *list = json_array(), *out;
	int up = 0;

	pthread_mutex_lock(&p->mu);
	for (size_t i = 0; i < p->n; i++) {
		const struct provider *v = &p->prov[i];
		/* As settled_rpc_provider_up: an open circuit is down until a
		 * probe closes it, cool-down elapsed or not. */
		bool u = v->chain != CHAIN_WRONG && v->br != BR_OPEN;

		up += u;
		json_array_append_new(list, json_pack("{s:s, s:b, s:s, s:i, s:s}", "provider", v->label,
						      "up", u, "breaker", breaker_names[v->br],
						      "consecutive_failures", v->failures, "chain",
						      chain_names[v->chain]));
	}
	pthread_mutex_unlock(&p->mu);
	out = json_pack("{s:s, s:i, s:o}", "status", up ? "ok" : "degraded", "providers_up", up,
			"providers", list);
	return out;
}

static const char *const req_labels[] = { "provider", "method", "result" };
static const char *const prov_labels[] = { "provider" };

static struct metric_family *requests_family(struct metrics *m)
{
	return metrics_counter(m, "settled_rpc_requests_total",
			       "JSON-RPC requests to the evm rail's providers, by result.", 3, req_labels);
}

static struct metric_family *up_family(struct metrics *m)
{
	return metrics_gauge(m, "settled_rpc_provider_up",
			     "1 when the provider is usable (circuit not open, right chain).", 1,
			     prov_labels);
}

static struct metric_family *duration_family(struct metrics *m)
{
	return metrics_histogram(m, "settled_rpc_request_duration_seconds",
				 "Duration of JSON-RPC HTTP requests, by provider.", 1, prov_labels, NULL, 0);
}

enum st_rc rpc_pool_register_metrics(struct metrics *m)
{
	return requests_family(m) && up_family(m) && duration_family(m) ? ST_OK : ST_NOMEM;
}

enum st_rc rpc_pool_new(const struct rpc_pool_opts *o, struct rpc_pool **out, struct buf *err)
{
	struct rpc_pool *p;
	struct metric_family *up = NULL, *dur = NULL;

	*out = NULL;
	if (o->nurls == 0 || o->nurls > RPC_MAX_PROVIDERS) {
		buf_printf(err, "between 1 and %d RPC provider URLs", RPC_MAX_PROVIDERS);
		return ST_INVALID;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		goto nomem;
	pthread_mutex_init(&p->mu, NULL);
	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		free(p);
		buf_puts(err, "cannot initialise libcurl");
		return ST_INTERNAL;
	}
	p->curl_inited = true;
	p->chain_id = o->chain_id;
	p->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 5000;
	p->breaker_failures = o->breaker_failures > 0 ? o->breaker_failures : 3;
	p->cooldown_ms = o->breaker_cooldown_ms > 0 ? o->breaker_cooldown_ms : 30000;
	p->log = o->log;
	p->headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (p->headers)
		p->headers = curl_slist_append(p->headers, "Expect:");
	if (!p->headers)
		goto nomem;
	if (o->metrics) {
		p->requests = requests_family(o->metrics);
		up = up_family(o->metrics);
		dur = duration_family(o->metrics);
		if (!p->requests || !up || !dur)
			goto nomem;
	}
	for (size_t i = 0; i < o->nurls; i++) {
		struct provider *v = &p->prov[i];
		const char *const lv[] = { v->label };

		v->url = strdup(o->urls[i]);
		if (!v->url)
			goto nomem;
		p->n++;
		rpc_provider_label(v->url, i, v->label);
		if (o->metrics) {
			v->up = metric_series_get(up, lv);
			v->duration = metric_series_get(dur, lv);
			if (!v->up || !v->duration)
				goto nomem;
			metric_set(v->up, 1);
		}
	}
	*out = p;
	return ST_OK;
nomem:
	rpc_pool_free(p);
	buf_puts(err, "out of memory creating the RPC provider pool");
	return ST_NOMEM;
}

void rpc_pool_free(struct rpc_pool *p)
{
	if (!p)
		return;
	while (p->free_handles) {
		struct handle *h = p->free_handles;

		p->free_handles = h->next;
		curl_easy_cleanup(h->curl);
		free(h);
	}
	for (size_t i = 0; i < p->n; i++) {
		explicit_bzero(p->prov[i].url, strlen(p->prov[i].url));
		free(p->prov[i].url);
	}
	curl_slist_free_all(p->headers);
	if (p->curl_inited)
		curl_global_cleanup();
	pthread_mutex_destroy(&p->mu);
	free(p);
}

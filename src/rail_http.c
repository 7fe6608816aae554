/* rail_http.c — the `http` payout rail (see rail_http.h).
 *
 * libcurl easy handles are kept in a free list under a mutex, so the
 * connection to the payout service is reused across items and workers;
 * TLS peer and host verification on, no redirects. */
#include "rail_http.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "json_out.h"
#include "webhook.h"
#include "banned.h"

#define ANSWER_MAX (64u << 10)

struct handle {
	CURL *curl;
	struct handle *next;
};

struct http_rail {
	struct rail base;
	char *url;        /* secret */
	char *secret;     /* secret */
	char asset[16];
	int64_t timeout_ms;
	pthread_mutex_t mu;
	struct handle *idle;
};

static int64_t http_confirm_delay(const struct rail *r)
{
	(void)r;
	return 0; /* ask the service as soon as the item is submitted */
}

static size_t collect(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct buf *b = arg;
	size_t n = size * nmemb;

	if (b->len + n > ANSWER_MAX)
		return n; /* keep the head only; the status decides */
	buf_append(b, ptr, n);
	return n;
}

static CURL *handle_get(struct http_rail *h)
{
	struct handle *e;
	CURL *c;

	pthread_mutex_lock(&h->mu);
	e = h->idle;
	if (e)
		h->idle = e->next;
	pthread_mutex_unlock(&h->mu);
	if (e) {
		c = e->curl;
		free(e);
		return c;
	}
	c = curl_easy_init();
	if (!c)
		return NULL;
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "settled-payouts");
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
	return c;
}

static void handle_put(struct http_rail *h, CURL *c)
{
	struct handle *e = malloc(sizeof(*e));

	if (!e) {
		curl_easy_cleanup(c);
		return;
	}
	e->curl = c;
	pthread_mutex_lock(&h->mu);
	e->next = h->idle;
	h->idle = e;
	pthread_mutex_unlock(&h->mu);
}

/* The service's {"reason": "..."}, printable ASCII, at most 120 bytes. */
static void answer_reason(const struct buf *ans, struct buf *why)
{
	json_t *a = ans->len ? json_loadb(ans->ptr, ans->len, 0, NULL) : NULL;
	const char *r = json_string_value(json_object_get(a, "reason"));

	if (r) {
		buf_puts(why, ": ");
		for (size_t i = 0; r[i] && i < 120; i++)
			buf_putc(why, r[i] >= 0x20 && r[i] < 0x7f ? r[i] : '?');
	}
	json_decref(a);
}

static enum rail_result http_check(struct rail *r, const struct rail_tx *t, const char **reason,
				   struct buf *why)
{
	struct http_rail *h = (struct http_rail *)r;
	struct buf ans = BUF_INIT(ANSWER_MAX + 1);
	char sig[WEBHOOK_STD_SIG_MAX], hdr[4][WEBHOOK_ID_MAX + 64], amount[24];
	const char *item = t->ref ? t->ref : t->intent_id;
	int64_t ts = (int64_t)time(NULL);
	struct curl_slist *headers = NULL;
	struct buf text = BUF_INIT(1 << 16);
	struct json_writer w;
	char *body = NULL;
	enum rail_result v = RAIL_ERROR;
	long status = 0;
	CURL *c = NULL;
	CURLcode cc;

	snprintf(amount, sizeof(amount), "%lld", (long long)t->amount);
	/* Members in sorted order: the bytes the service has always been sent
	 * and has verified the signature over. */
	jw_begin(&w, &text);
	jw_object(&w, "data");
	jw_str(&w, "amount", amount);
	jw_str(&w, "asset", h->asset);
	jw_str(&w, "intent_id", t->intent_id);
	jw_str(&w, "item_id", item);
	jw_str(&w, "wallet", t->wallet);
	jw_close(&w);
	jw_i64(&w, "timestamp", ts);
	jw_str(&w, "type", "payout.requested");
	body = jw_end(&w) ? NULL : buf_detach(&text, NULL);
	buf_release(&text);
	if (!body || webhook_sign_standard(h->secret, item, ts, body, strlen(body), sig)) {
		buf_puts(why, "payout rail: cannot build or sign the request");
		goto out;
	}
	snprintf(hdr[0], sizeof(hdr[0]), "webhook-id: %s", item);
	snprintf(hdr[1], sizeof(hdr[1]), "webhook-timestamp: %lld", (long long)ts);
	snprintf(hdr[2], sizeof(hdr[2]), "webhook-signature: %s", sig);
	/* The job's trace continues at the service (W3C Trace Context). */
	if (t->traceparent)
		snprintf(hdr[3], sizeof(hdr[3]), "traceparent: %s", t->traceparent);
	headers = curl_slist_append(headers, "Content-Type: application/json");
	for (int i = 0; i < (t->traceparent ? 4 : 3) && headers; i++)
		headers = curl_slist_append(headers, hdr[i]);
	c = headers ? handle_get(h) : NULL;
	if (!c) {
		buf_puts(why, "payout rail: out of memory");
		goto out;
	}
	curl_easy_setopt(c, CURLOPT_URL, h->url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)h->timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)h->timeout_ms);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &ans);
	cc = curl_easy_perform(c);
	if (cc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
	handle_put(h, c);
	if (cc != CURLE_OK) {
		/* curl's own text, never the URL */
		buf_printf(why, "payout service: %s", curl_easy_strerror(cc));
	} else if (status >= 200 && status <= 299) {
		v = RAIL_CONFIRMED;
	} else if (status >= 400 && status <= 499 && status != 408 && status != 425 && status != 429) {
		v = RAIL_REJECTED;
		*reason = "payout_rejected";
		buf_printf(why, "payout service refused item %s with HTTP %ld", item, status);
		answer_reason(&ans, why);
	} else {
		buf_printf(why, "payout service answered HTTP %ld for item %s", status, item);
	}
out:
	curl_slist_free_all(headers);
	free(body);
	buf_release(&ans);
	return v;
}

static void http_free(struct rail *r)
{
	struct http_rail *h = (struct http_rail *)r;

	while (h->idle) {
		struct handle *e = h->idle;

		h->idle = e->next;
		curl_easy_cleanup(e->curl);
		free(e);
	}
	if (h->url)
		explicit_bzero(h->url, strlen(h->url));
	if (h->secret)
		explicit_bzero(h->secret, strlen(h->secret));
	free(h->url);
	free(h->secret);
	pthread_mutex_destroy(&h->mu);
	free(h);
	curl_global_cleanup();
}

static const struct rail_ops http_ops = {
	.name = "http",
	.confirm_delay_ms = http_confirm_delay,
	.check = http_check,
	.free = http_free,
};

enum st_rc rail_http_new(const struct config *cfg, struct rail **out, struct buf *err)
{
	struct http_rail *h;

	*out = NULL;
	if (!cfg->payout_url || !cfg->payout_secret) {
		buf_puts(err, "the http payout rail needs SETTLED_PAYOUT_URL and SETTLED_PAYOUT_SECRET");
		return ST_INVALID;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		buf_puts(err, "cannot initialise libcurl");
		return ST_INTERNAL;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		curl_global_cleanup();
		buf_puts(err, "out of memory");
		return ST_NOMEM;
	}
	pthread_mutex_init(&h->mu, NULL);
	h->base.ops = &http_ops;
	h->url = strdup(cfg->payout_url);
	h->secret = strdup(cfg->payout_secret);
	snprintf(h->asset, sizeof(h->asset), "%s", cfg->asset);
	h->timeout_ms = cfg->payout_timeout_ms > 0 ? cfg->payout_timeout_ms : 10000;
	if (!h->url || !h->secret) {
		http_free(&h->base);
		buf_puts(err, "out of memory");
		return ST_NOMEM;
	}
	*out = &h->base;
	return ST_OK;
}

/* test_rpc_pool.c — the provider pool's failover and circuit breakers
 * (rpc_pool.h) against scripted HTTP providers in this process: a breaker
 * opens after N consecutive failures and then sends nothing, lets exactly
 * one probe through after the cool-down, reopens when the probe fails and
 * closes when it succeeds; a call fails over to the next provider and the
 * healthier one is asked first afterwards; a provider on another chain is
 * refused by name, never by URL. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rpc_pool.h"

/* A provider: answers every POST with `status` and a JSON-RPC result
 * echoing the request's id (chain id `chain` for eth_chainId). */
struct fake {
	int fd;
	int port;
	atomic_int status;
	atomic_int chain;
	atomic_int requests;
	pthread_t thread;
	char url[96];
};

static void *serve(void *arg)
{
	struct fake *f = arg;

	for (;;) {
		char req[8192], out[512], id[32] = "null";
		size_t n = 0;
		ssize_t r;
		int c = accept(f->fd, NULL, NULL);
		const char *p, *body;

		if (c < 0)
			return NULL;
		/* One request per connection is enough: answer and close. */
		while (n < sizeof(req) - 1 && (r = read(c, req + n, sizeof(req) - 1 - n)) > 0) {
			n += (size_t)r;
			req[n] = '\0';
			body = strstr(req, "\r\n\r\n");
			p = strstr(req, "Content-Length: ");
			if (body && p && strlen(body + 4) >= (size_t)atoi(p + 16))
				break;
		}
		req[n] = '\0';
		atomic_fetch_add(&f->requests, 1);
		p = strstr(req, "\"id\":");
		if (p)
			snprintf(id, sizeof(id), "%d", atoi(p + 5));
		{
			char json[256];
			int status = atomic_load(&f->status);

			if (strstr(req, "eth_chainId"))
				snprintf(json, sizeof(json), "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":\"0x%x\"}",
					 id, atomic_load(&f->chain));
			else
				snprintf(json, sizeof(json), "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":\"0x10\"}",
					 id);
			snprintf(out, sizeof(out),
				 "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
				 "Connection: close\r\n\r\n%s",
				 status, strlen(json), json);
		}
		if (write(c, out, strlen(out)) < 0) {
			/* the client went away: nothing to do */
		}
		close(c);
	}
}

static void fake_start(struct fake *f, const char *path)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);

	memset(f, 0, sizeof(*f));
	atomic_init(&f->status, 200);
	atomic_init(&f->chain, 1);
	f->fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(f->fd, 0);
	cr_assert_eq(bind(f->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(f->fd, 16), 0);
	cr_assert_eq(getsockname(f->fd, (struct sockaddr *)&a, &len), 0);
	f->port = ntohs(a.sin_port);
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d%s", f->port, path);
	cr_assert_eq(pthread_create(&f->thread, NULL, serve, f), 0);
}

static void fake_stop(struct fake *f)
{
	shutdown(f->fd, SHUT_RDWR);
	close(f->fd);
	pthread_join(f->thread, NULL);
}

static struct rpc_pool *pool_of(char **urls, size_t n, int failures, int64_t cooldown_ms)
{
	struct rpc_pool_opts o = { .urls = urls, .nurls = n, .chain_id = 1, .timeout_ms = 2000,
				   .breaker_failures = failures, .breaker_cooldown_ms = cooldown_ms };
	struct buf err = BUF_INIT(512);
	struct rpc_pool *p = NULL;

	cr_assert_eq(rpc_pool_new(&o, &p, &err), ST_OK, "%s", err.ptr);
	buf_release(&err);
	return p;
}

/* One eth_blockNumber through the pool: ST_OK or ST_UNAVAILABLE. */
static enum st_rc call(struct rpc_pool *p)
{
	json_t *req = json_pack("{s:s, s:i, s:s, s:[]}", "jsonrpc", "2.0", "id", 7, "method",
				"eth_blockNumber", "params");
	json_t *ans = NULL;
	struct buf why = BUF_INIT(1024);
	enum st_rc rc = rpc_pool_call(p, "eth_blockNumber", req, NULL, NULL, &ans, &why);

	if (rc == ST_OK)
		cr_assert_str_eq(json_string_value(json_object_get(ans, "result")), "0x10");
	else
		cr_assert_gt(why.len, 0);
	json_decref(req);
	json_decref(ans);
	buf_release(&why);
	return rc;
}

static const char *breaker(struct rpc_pool *p, size_t i)
{
	static char out[16];
	json_t *h = rpc_pool_health(p);

	snprintf(out, sizeof(out), "%s",
		 json_string_value(json_object_get(json_array_get(json_object_get(h, "providers"), i),
						   "breaker")));
	json_decref(h);
	return out;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static double mono_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* The circuit's cool-down is 1 s. "An open circuit sends nothing" is
 * checked only when the call came within the cool-down of the failure
 * that opened the circuit (measured from before that failing call to
 * after the checked one): a test thread descheduled longer may rightly
 * have sent the probe, and then the next steps count from there. The
 * sleeps before a probe are lower bounds (at least the cool-down), so
 * load cannot break "exactly one probe". */
Test(rpc_pool, breaker_opens_probes_once_reopens_and_closes)
{
	enum { COOL_MS = 1000 };
	struct fake f;
	char *urls[1];
	struct rpc_pool *p;
	int before;
	double opened_at;

	fake_start(&f, "/v3/KEY");
	urls[0] = f.url;
	p = pool_of(urls, 1, 2, COOL_MS);
	cr_assert_eq(call(p), ST_OK);
	cr_assert_str_eq(breaker(p, 0), "closed");

	atomic_store(&f.status, 500);
	cr_assert_eq(call(p), ST_UNAVAILABLE);
	cr_assert_str_eq(breaker(p, 0), "closed", "one failure of two");
	opened_at = mono_ms();
	cr_assert_eq(call(p), ST_UNAVAILABLE);
	cr_assert_str_eq(breaker(p, 0), "open");
	before = atomic_load(&f.requests);
	cr_assert_eq(call(p), ST_UNAVAILABLE);
	if (mono_ms() - opened_at < COOL_MS)
		cr_assert_eq(atomic_load(&f.requests), before, "an open circuit sends nothing");
	before = atomic_load(&f.requests);

	sleep_ms(COOL_MS + 50);
	opened_at = mono_ms();
	cr_assert_eq(call(p), ST_UNAVAILABLE, "the probe fails");
	cr_assert_eq(atomic_load(&f.requests), before + 1, "exactly one probe");
	cr_assert_str_eq(breaker(p, 0), "open", "a failed probe reopens the circuit");
	before = atomic_load(&f.requests);
	cr_assert_eq(call(p), ST_UNAVAILABLE);
	if (mono_ms() - opened_at < COOL_MS)
		cr_assert_eq(atomic_load(&f.requests), before, "a new cool-down");

	atomic_store(&f.status, 200);
	sleep_ms(COOL_MS + 50);
	cr_assert_eq(call(p), ST_OK, "the probe succeeds");
	cr_assert_str_eq(breaker(p, 0), "closed");
	cr_assert_eq(call(p), ST_OK);
	rpc_pool_free(p);
	fake_stop(&f);
}

Test(rpc_pool, fails_over_and_then_asks_the_healthier_provider_first)
{
	struct fake a, b;
	char *urls[2];
	struct rpc_pool *p;
	int a0, b0;

	fake_start(&a, "/");
	fake_start(&b, "/");
	urls[0] = a.url;
	urls[1] = b.url;
	p = pool_of(urls, 2, 5, 60000);
	atomic_store(&a.status, 429);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(call(p), ST_OK, "b answers when a is rate limited");
	/* a failed once (chain check ok, then 429) and is asked after b now. */
	a0 = atomic_load(&a.requests);
	b0 = atomic_load(&b.requests);
	cr_assert_eq(call(p), ST_OK);
	cr_assert_eq(atomic_load(&a.requests), a0, "the provider that failed is not asked first");
	cr_assert_eq(atomic_load(&b.requests), b0 + 1);
	cr_assert_str_eq(breaker(p, 0), "closed", "below SETTLED_EVM_BREAKER_FAILURES");
	rpc_pool_free(p);
	fake_stop(&a);
	fake_stop(&b);
}

Test(rpc_pool, a_provider_on_another_chain_is_named_by_label_only)
{
	struct fake f;
	char *urls[1];
	struct rpc_pool *p;
	struct buf err = BUF_INIT(512);

	fake_start(&f, "/v3/SECRETKEY?apikey=SECRET2");
	atomic_store(&f.chain, 5);
	urls[0] = f.url;
	p = pool_of(urls, 1, 3, 1000);
	cr_assert_eq(rpc_pool_check_chains(p, &err), ST_INVALID);
	cr_assert_not_null(strstr(err.ptr, "serves chain 5, not SETTLED_EVM_CHAIN_ID=1"), "%s", err.ptr);
	cr_assert_not_null(strstr(err.ptr, "rpc0@127.0.0.1:"), "%s", err.ptr);
	cr_assert_null(strstr(err.ptr, "SECRET"), "%s", err.ptr);
	cr_assert_eq(call(p), ST_UNAVAILABLE, "never used");
	buf_release(&err);
	rpc_pool_free(p);
	fake_stop(&f);
}

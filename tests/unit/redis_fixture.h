/* redis_fixture.h — Redis for the unit tests (test_redisc.c, test_rl_redis.c).
 *
 * SETTLED_TEST_REDIS names a running Redis (tests/with-services starts a
 * private one for `make unit`); tests that need it FAIL when it is unset,
 * because a suite that silently skips its backend proves nothing. Only
 * SETTLED_NO_SERVICES=1 turns them into skips (a machine without Redis).
 * Every test works under its own random key prefix and deletes its keys
 * at the end, so the shared server may be a developer's own.
 *
 * Outage tests start a private server with tests/redis/redisctl (so they
 * can stop it without disturbing anyone), in a temp dir, on a free port. */
#ifndef SETTLED_TEST_REDIS_FIXTURE_H
#define SETTLED_TEST_REDIS_FIXTURE_H

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "redisc.h"

static bool no_services(void)
{
	const char *v = getenv("SETTLED_NO_SERVICES");

	return v && !strcmp(v, "1");
}

/* The shared test server's URL; fails (or skips under
 * SETTLED_NO_SERVICES=1) when there is none. */
static const char *need_redis(void)
{
	const char *u = getenv("SETTLED_TEST_REDIS");

	if (u && *u)
		return u;
	if (no_services())
		cr_skip_test("SETTLED_NO_SERVICES=1: no Redis");
	cr_assert_fail("SETTLED_TEST_REDIS is not set: run under tests/with-services (make unit "
		       "does), or set SETTLED_NO_SERVICES=1 to skip the Redis tests");
	return NULL;
}

/* The connect and command timeout of the pools of tests that are not about
 * timeouts (those set their own, short, on purpose: hung_server_times_out,
 * the silent and refused servers). The product's 200 ms is shorter than a
 * loaded CI machine (six suites on two cores) can keep a Redis off the CPU:
 * test_redisc's commands failed "no reply within the command timeout"
 * while the shared Redis was stopped 300 ms every 0.5 s. */
#define TEST_REDIS_TIMEOUT_MS 5000

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A direct hiredis connection to url (db 0 unless db >= 0 says
 * otherwise) for looking behind the code under test. */
static redisContext *direct(const char *url, int db)
{
	struct redisc_url u;
	struct timeval tv = { 2, 0 };
	redisContext *c;

	cr_assert_eq(redisc_url_parse(url, &u, NULL), ST_OK, "bad URL %s", url);
	c = redisConnectWithTimeout(u.host, u.port, tv);
	cr_assert(c && !c->err, "cannot connect to %s: %s", url, c ? c->errstr : "ENOMEM");
	redisSetTimeout(c, tv);
	if (u.password[0]) {
		redisReply *r = redisCommand(c, "AUTH %s", u.password);

		cr_assert(r && r->type == REDIS_REPLY_STATUS);
		freeReplyObject(r);
	}
	if (db >= 0 || u.db) {
		redisReply *r = redisCommand(c, "SELECT %d", db >= 0 ? db : u.db);

		cr_assert(r && r->type == REDIS_REPLY_STATUS);
		freeReplyObject(r);
	}
	return c;
}

/* Deletes every key under prefix; returns how many there were. */
static long long delete_prefix(redisContext *c, const char *prefix)
{
	char cursor[32] = "0";
	long long n = 0;

	do {
		redisReply *r = redisCommand(c, "SCAN %s MATCH %s* COUNT 1000", cursor, prefix);

		cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2, "SCAN failed");
		snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
		for (size_t i = 0; i < r->element[1]->elements; i++) {
			redisReply *d = redisCommand(c, "DEL %b", r->element[1]->element[i]->str,
						     r->element[1]->element[i]->len);

			cr_assert(d);
			n += d->integer;
			freeReplyObject(d);
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0"));
	return n;
}

/* A fresh key prefix: test runs never see each other's keys. */
static void random_prefix(char *out, size_t cap, const char *what)
{
	unsigned r;
	FILE *f = fopen("/dev/urandom", "rb");

	cr_assert(f && fread(&r, sizeof(r), 1, f) == 1);
	fclose(f);
	snprintf(out, cap, "test:%s:%d:%08x:", what, (int)getpid(), r);
}

/* A loopback port nothing listens on: bound, not listening, so a connect
 * is refused. *fd keeps it bound until the caller closes it: a port closed
 * at once could be bound again by any other process (the other suites run
 * servers at the same time) before the test connects. */
static int closed_port(int *fd)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);

	*fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert(*fd >= 0);
	cr_assert_eq(bind(*fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(getsockname(*fd, (struct sockaddr *)&a, &len), 0);
	return ntohs(a.sin_port);
}

/* A server that accepts connections (the kernel completes the handshake
 * into the backlog) and never answers: a hung Redis. Returns the
 * listening fd; *port gets its port. */
static int silent_server(int *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert(fd >= 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(fd, 64), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

/* How many connections reached silent_server's listening fd fd since it
 * was made: the ones waiting in its backlog (it never accepts them, and
 * the kernel keeps one a client has since closed). Accepts them all, so
 * call it once, at the end. */
static int silent_server_connections(int fd)
{
	int n = 0, c;

	cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
	while ((c = accept(fd, NULL, NULL)) >= 0) {
		close(c);
		n++;
	}
	cr_assert(errno == EAGAIN || errno == EWOULDBLOCK, "accept: %s", strerror(errno));
	return n;
}

/* The most connects a pool whose server refuses them can have tried in
 * elapsed_s seconds of calls: its first call's, then one probe each time a
 * backoff step ran out (backoff_min_ms doubling up to backoff_max_ms,
 * redisc.c's mark_down). A step of b ms lets the next probe through after
 * more than b - 1 ms (both ends read clock_mono_ms, truncated to the ms).
 * A bound from what the pool guarantees, not a guess at the machine's
 * speed: a starved caller makes fewer calls a step, never more probes. */
static unsigned long long probes_within(double elapsed_s, int backoff_min_ms, int backoff_max_ms)
{
	unsigned long long n = 1;
	double t = 0;
	int b = backoff_min_ms;

	for (;;) {
		t += b - 1;
		if (t >= elapsed_s * 1000)
			return n;
		n++;
		b = b > backoff_max_ms / 2 ? backoff_max_ms : b * 2;
	}
}

/* The wait a fast failure's reason names ("next attempt in N ms"), or -1
 * when err is not a fast failure's. */
static long long next_attempt_ms(const char *err)
{
	const char *p = err ? strstr(err, "next attempt in ") : NULL;

	return p ? strtoll(p + strlen("next attempt in "), NULL, 10) : -1;
}

/* ---- a private server (tests/redis/redisctl) ---- */

struct private_redis {
	char dir[128];
	char url[128];
};

static void redisctl(struct private_redis *p, const char *cmd, const char *extra)
{
	char line[512], out[128];
	FILE *f;

	snprintf(line, sizeof(line), "tests/redis/redisctl %s %s %s", cmd, p->dir, extra ? extra : "");
	f = popen(line, "r");
	cr_assert(f, "cannot run %s", line);
	if (!fgets(out, sizeof(out), f))
		out[0] = '\0';
	cr_assert_eq(pclose(f), 0, "%s failed", line);
	out[strcspn(out, "\n")] = '\0';
	if (out[0]) /* start and url print it; halt and stop print nothing */
		memcpy(p->url, out, sizeof(out));
}

/* Starts a private server; extra (may be NULL) are redis-server flags. */
static void private_start(struct private_redis *p, const char *extra)
{
	if (no_services())
		cr_skip_test("SETTLED_NO_SERVICES=1: no Redis");
	snprintf(p->dir, sizeof(p->dir), "/tmp/settled-redis-unit.XXXXXX");
	cr_assert(mkdtemp(p->dir));
	redisctl(p, "start", extra);
	cr_assert(!strncmp(p->url, "redis://127.0.0.1:", 18), "redisctl start printed %s", p->url);
}

static void private_stop(struct private_redis *p)
{
	if (!p->dir[0])
		return;
	redisctl(p, "stop", NULL);
	p->dir[0] = '\0';
}

#endif

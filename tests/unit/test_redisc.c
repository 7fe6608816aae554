/* test_redisc.c — the hiredis pool: URL parsing, commands and scripts on a
 * real Redis (SETTLED_TEST_REDIS), and the failure paths: a refused port,
 * a server that never answers, a server stopped and restarted (a private
 * one from tests/redis/redisctl), bad credentials. Nothing is mocked. */
#include <pthread.h>

#include "redis_fixture.h"

#include "banned.h"

/* Options for a test that is not about timeouts (TEST_REDIS_TIMEOUT_MS). */
static const struct redisc_options patient = { .connect_timeout_ms = TEST_REDIS_TIMEOUT_MS,
					       .command_timeout_ms = TEST_REDIS_TIMEOUT_MS };

static void setup(void)
{
	signal(SIGPIPE, SIG_IGN); /* as main.c: hiredis writes with write(2) */
}

/* ---- URLs ------------------------------------------------------------- */

Test(redisc_url, parses_every_part)
{
	struct redisc_url u;

	cr_assert_eq(redisc_url_parse("redis://127.0.0.1:6380/3", &u, NULL), ST_OK);
	cr_assert_str_eq(u.host, "127.0.0.1");
	cr_assert_eq(u.port, 6380);
	cr_assert_eq(u.db, 3);
	cr_assert_str_eq(u.password, "");
	cr_assert_str_eq(u.user, "");

	cr_assert_eq(redisc_url_parse("redis://localhost", &u, NULL), ST_OK);
	cr_assert_str_eq(u.host, "localhost");
	cr_assert_eq(u.port, 6379);
	cr_assert_eq(u.db, 0);

	cr_assert_eq(redisc_url_parse("redis://:p%40ss:w@rd@cache.internal:7000/", &u, NULL), ST_OK);
	cr_assert_str_eq(u.password, "p@ss:w@rd", "percent-decoded, last '@' ends the user info");
	cr_assert_str_eq(u.user, "");
	cr_assert_str_eq(u.host, "cache.internal");
	cr_assert_eq(u.port, 7000);
	cr_assert_eq(u.db, 0);

	cr_assert_eq(redisc_url_parse("redis://app:secret@[::1]:6379/15", &u, NULL), ST_OK);
	cr_assert_str_eq(u.user, "app");
	cr_assert_str_eq(u.password, "secret");
	cr_assert_str_eq(u.host, "::1");
	cr_assert_eq(u.db, 15);

	cr_assert_eq(redisc_url_parse("redis://lonepass@cache", &u, NULL), ST_OK);
	cr_assert_str_eq(u.password, "lonepass", "a user info without ':' is the password");
	cr_assert_str_eq(u.user, "");

	cr_assert_eq(redisc_url_parse("REDIS://[::1]", &u, NULL), ST_OK);
	cr_assert_str_eq(u.host, "::1");
	cr_assert_eq(u.port, 6379);
}

Test(redisc_url, refuses_bad_ones_without_echoing_the_password)
{
	static const char *const bad[] = {
		NULL, "", "http://h:1", "redis://", "redis://:pw@", "redis://h:0", "redis://h:65536",
		"redis://h:x", "redis://h/x", "redis://h/1/2", "redis://h/99999", "redis://h?db=1",
		"redis://h#x", "redis://:bad%zzescape@h", "redis://:nul%00@h",
		"redis://[::1", "redis://[::1]x", "redis://h h", "rediss://:topsecret@h:6379",
	};
	struct redisc_url u;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct buf err = BUF_INIT(512);

		cr_assert_eq(redisc_url_parse(bad[i], &u, &err), ST_INVALID, "accepted %s",
			     bad[i] ? bad[i] : "NULL");
		cr_assert(err.len > 0, "no reason for %s", bad[i] ? bad[i] : "NULL");
		cr_assert_null(strstr(err.ptr, "topsecret"));
		cr_assert_null(strstr(err.ptr, "bad%zz"));
		buf_release(&err);
	}
}

Test(redisc_url, describe_redacts)
{
	struct redisc_url u;
	struct buf out = BUF_INIT(512);

	cr_assert_eq(redisc_url_parse("redis://:hunter2@10.0.0.5:6390/2", &u, NULL), ST_OK);
	redisc_url_describe(&u, &out);
	cr_assert_str_eq(out.ptr, "redis://:[redacted]@10.0.0.5:6390/2");
	buf_reset(&out);
	cr_assert_eq(redisc_url_parse("redis://[::1]:6379", &u, NULL), ST_OK);
	redisc_url_describe(&u, &out);
	cr_assert_str_eq(out.ptr, "redis://[::1]:6379/0");
	buf_release(&out);
}

/* ---- on the shared test server ---------------------------------------- */

Test(redisc, ping_and_commands, .init = setup)
{
	const char *url = need_redis();
	struct redisc *r = NULL;
	struct buf err = BUF_INIT(512);
	redisReply *rep = NULL;
	char prefix[64], key[96];
	const char *set[3] = { "SET", key, "v\0w" };
	size_t setl[3];
	const char *get[2] = { "GET", key };
	struct redisc_stats st;
	redisContext *c;

	random_prefix(prefix, sizeof(prefix), "redisc");
	snprintf(key, sizeof(key), "%sk", prefix);
	setl[0] = 3;
	setl[1] = strlen(key);
	setl[2] = 3; /* binary-safe: an embedded NUL */
	cr_assert_eq(redisc_new(url, &patient, &r, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(redisc_ping(r, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(redisc_command(r, 3, set, setl, &rep, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(rep->type, REDIS_REPLY_STATUS);
	freeReplyObject(rep);
	cr_assert_eq(redisc_command(r, 2, get, NULL, &rep, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(rep->type, REDIS_REPLY_STRING);
	cr_assert_eq(rep->len, 3);
	cr_assert_eq(memcmp(rep->str, "v\0w", 3), 0);
	freeReplyObject(rep);
	redisc_stats(r, &st);
	cr_assert_eq(st.connects, 1, "one connection reused");
	cr_assert_eq(st.open, 1);
	cr_assert_eq(st.io_errors + st.connect_failures + st.fast_failures, 0);
	redisc_free(r);
	c = direct(url, -1);
	cr_assert_eq(delete_prefix(c, prefix), 1);
	redisFree(c);
	buf_release(&err);
}

/* The command is formatted by redisc itself (RESP), in a stack buffer or,
 * past it, on the heap: values of every size around that edge, with the
 * bytes RESP frames with (CR, LF, '$', '*') and NULs inside, and an empty
 * one, come back byte for byte, and a command of many arguments too. */
Test(redisc, values_of_every_size_come_back_exact, .init = setup, .timeout = 60)
{
	static const size_t sizes[] = { 0, 1, 9, 10, 99, 100, 400, 450, 480, 490, 500, 511,
					512, 513, 1000, 4096, 70000, 1 << 20 };
	const char *url = need_redis();
	struct redisc *r = NULL;
	struct buf err = BUF_INIT(512);
	char prefix[64], key[96];
	char *val = malloc(1 << 20);
	const char *argv[40];
	size_t lens[40];
	redisReply *rep = NULL;
	redisContext *c;

	cr_assert_not_null(val);
	for (size_t i = 0; i < (1u << 20); i++)
		val[i] = "\r\n$*\0ab"[i % 7];
	random_prefix(prefix, sizeof(prefix), "redisc");
	snprintf(key, sizeof(key), "%sk", prefix);
	cr_assert_eq(redisc_new(url, &patient, &r, &err), ST_OK, "%s", err.ptr);
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		const char *set[3] = { "SET", key, val };
		size_t setl[3] = { 3, strlen(key), sizes[k] };
		const char *get[2] = { "GET", key };

		cr_assert_eq(redisc_command(r, 3, set, setl, &rep, &err), ST_OK, "%s", err.ptr);
		cr_assert_eq(rep->type, REDIS_REPLY_STATUS, "size %zu", sizes[k]);
		freeReplyObject(rep);
		cr_assert_eq(redisc_command(r, 2, get, NULL, &rep, &err), ST_OK, "%s", err.ptr);
		cr_assert_eq(rep->type, REDIS_REPLY_STRING, "size %zu", sizes[k]);
		cr_assert_eq((size_t)rep->len, sizes[k]);
		cr_assert_eq(memcmp(rep->str, val, sizes[k]), 0, "size %zu", sizes[k]);
		freeReplyObject(rep);
	}
	/* RPUSH key v0 .. v37: 40 arguments, each a different length. */
	argv[0] = "RPUSH";
	lens[0] = 5;
	argv[1] = key;
	lens[1] = strlen(key);
	for (int i = 2; i < 40; i++) {
		argv[i] = val;
		lens[i] = (size_t)(i * 13);
	}
	{
		const char *del[2] = { "DEL", key };

		cr_assert_eq(redisc_command(r, 2, del, NULL, &rep, &err), ST_OK, "%s", err.ptr);
		freeReplyObject(rep);
	}
	cr_assert_eq(redisc_command(r, 40, argv, lens, &rep, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(rep->type, REDIS_REPLY_INTEGER);
	cr_assert_eq(rep->integer, 38);
	freeReplyObject(rep);
	{
		const char *range[4] = { "LRANGE", key, "0", "-1" };

		cr_assert_eq(redisc_command(r, 4, range, NULL, &rep, &err), ST_OK, "%s", err.ptr);
		cr_assert_eq(rep->type, REDIS_REPLY_ARRAY);
		cr_assert_eq(rep->elements, 38);
		for (int i = 2; i < 40; i++) {
			cr_assert_eq((size_t)rep->element[i - 2]->len, (size_t)(i * 13));
			cr_assert_eq(memcmp(rep->element[i - 2]->str, val, (size_t)(i * 13)), 0);
		}
		freeReplyObject(rep);
	}
	redisc_free(r);
	c = direct(url, -1);
	cr_assert_eq(delete_prefix(c, prefix), 1);
	redisFree(c);
	buf_release(&err);
	free(val);
}

static const char INCR_LUA[] = "return redis.call('INCRBY', KEYS[1], ARGV[1])";

Test(redisc, eval_loads_the_script_when_redis_forgot_it, .init = setup)
{
	const char *url = need_redis();
	struct redisc *r = NULL;
	struct redisc_script s;
	redisReply *rep = NULL;
	char prefix[64], key[96];
	const char *args[2] = { key, "5" };
	redisContext *c = direct(url, -1);

	random_prefix(prefix, sizeof(prefix), "redisc");
	snprintf(key, sizeof(key), "%sn", prefix);
	redisc_script_init(&s, INCR_LUA);
	cr_assert_eq(strlen(s.sha1), 40);
	cr_assert_eq(redisc_new(url, &patient, &r, NULL), ST_OK);
	for (int i = 1; i <= 3; i++) {
		if (i == 3) { /* as after a restart or a failover */
			redisReply *f = redisCommand(c, "SCRIPT FLUSH");

			cr_assert(f && f->type == REDIS_REPLY_STATUS);
			freeReplyObject(f);
		}
		cr_assert_eq(redisc_eval(r, &s, 1, 2, args, NULL, &rep, NULL), ST_OK);
		cr_assert_eq(rep->type, REDIS_REPLY_INTEGER);
		cr_assert_eq(rep->integer, 5 * i);
		freeReplyObject(rep);
	}
	{
		/* The SHA-1 is Redis's own name for the script. */
		redisReply *e = redisCommand(c, "SCRIPT EXISTS %s", s.sha1);

		cr_assert(e && e->type == REDIS_REPLY_ARRAY && e->element[0]->integer == 1);
		freeReplyObject(e);
	}
	redisc_free(r);
	cr_assert_eq(delete_prefix(c, prefix), 1);
	redisFree(c);
}

Test(redisc, script_error_is_internal, .init = setup)
{
	const char *url = need_redis();
	struct redisc *r = NULL;
	struct redisc_script s;
	struct buf err = BUF_INIT(512);
	redisReply *rep = NULL;

	redisc_script_init(&s, "return redis.call('NOSUCHCOMMAND')");
	cr_assert_eq(redisc_new(url, &patient, &r, NULL), ST_OK);
	cr_assert_eq(redisc_eval(r, &s, 0, 0, NULL, NULL, &rep, &err), ST_INTERNAL);
	cr_assert_null(rep);
	cr_assert(strstr(err.ptr, "script error"), "%s", err.ptr);
	cr_assert_eq(redisc_ping(r, NULL), ST_OK, "the connection is still fine");
	redisc_free(r);
	buf_release(&err);
}

struct pinger {
	struct redisc *r;
	int ok;
};

static void *ping_many(void *arg)
{
	struct pinger *p = arg;

	for (int i = 0; i < 200; i++)
		p->ok += redisc_ping(p->r, NULL) == ST_OK;
	return NULL;
}

Test(redisc, sixteen_threads_share_four_connections, .init = setup, .timeout = 60)
{
	const char *url = need_redis();
	struct redisc_options o = patient;
	struct redisc *r = NULL;
	pthread_t t[16];
	struct pinger p[16];
	struct redisc_stats st;

	o.pool_size = 4;
	cr_assert_eq(redisc_new(url, &o, &r, NULL), ST_OK);
	for (int i = 0; i < 16; i++) {
		p[i] = (struct pinger){ r, 0 };
		cr_assert_eq(pthread_create(&t[i], NULL, ping_many, &p[i]), 0);
	}
	for (int i = 0; i < 16; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(p[i].ok, 200, "thread %d: %d of 200", i, p[i].ok);
	}
	redisc_stats(r, &st);
	cr_assert_leq(st.connects, 4);
	cr_assert_leq(st.open, 4);
	redisc_free(r);
}

/* ---- failure paths ---------------------------------------------------- */

/* A refused connect is an answer, not a wait: the reason is the refusal
 * (not "timeout"), and one connect was tried. Then calls during the
 * backoff connect nothing: every call is a probe the backoff allowed or
 * a fast failure, and the probes are no more than the backoff steps
 * (50 ms doubling to 1 s, the defaults) that fit in the time the calls
 * took. Counted, not timed: a starved machine makes the loop slower and
 * allows more probes, never a failure by chance. */
Test(redisc, refused_port_fails_fast_and_backs_off, .init = setup)
{
	char url[96];
	struct redisc *r = NULL;
	struct buf err = BUF_INIT(512);
	struct redisc_stats st;
	double t0;
	int fd;

	snprintf(url, sizeof(url), "redis://:hunter2@127.0.0.1:%d", closed_port(&fd));
	cr_assert_eq(redisc_new(url, NULL, &r, &err), ST_OK, "creating a pool connects nothing");
	t0 = now_s();
	cr_assert_eq(redisc_ping(r, &err), ST_UNAVAILABLE);
	cr_assert(strstr(err.ptr, "refused"), "a refused connect is an answer: %s", err.ptr);
	cr_assert(strstr(err.ptr, "127.0.0.1"), "%s", err.ptr);
	cr_assert_null(strstr(err.ptr, "hunter2"), "%s", err.ptr);
	redisc_stats(r, &st);
	cr_assert_eq(st.connect_failures, 1);
	cr_assert_eq(st.fast_failures, 0);
	for (int i = 0; i < 10000; i++)
		cr_assert_eq(redisc_ping(r, NULL), ST_UNAVAILABLE);
	redisc_stats(r, &st);
	{
		unsigned long long most = probes_within(now_s() - t0, 50, 1000);

		cr_assert_eq(st.connect_failures + st.fast_failures, 10001,
			     "every call a probe or a fast failure: %llu + %llu", st.connect_failures,
			     st.fast_failures);
		cr_assert_leq(st.connect_failures, most,
			      "%llu connects in %.3f s: more than one probe per backoff step (%llu)",
			      st.connect_failures, now_s() - t0, most);
	}
	cr_assert_eq(st.connects, 0);
	cr_assert_eq(st.open, 0);
	redisc_free(r);
	close(fd);
	buf_release(&err);
}

/* A server that never answers: the call waits the command timeout (at
 * least 150 ms) once, on one connection, and gives up with "timeout";
 * nothing retries it (it may have run) and nothing reconnects. Then the
 * pool is down: the next call is refused at once, connecting nothing. The
 * backoff is a minute long so that the second call falls inside it however
 * late a loaded machine runs it (with the default 50 ms a starved test
 * could see a probe instead); the test's .timeout fails a wait that never
 * ends. Counted, not timed from above: a starved thread makes any
 * wall-clock ceiling a coin toss. */
Test(redisc, hung_server_times_out, .init = setup, .timeout = 60)
{
	int port, fd = silent_server(&port);
	char url[96];
	struct redisc_options o = { .command_timeout_ms = 150,
				    .backoff_min_ms = 60000,
				    .backoff_max_ms = 60000 };
	struct redisc *r = NULL;
	struct buf err = BUF_INIT(512);
	struct redisc_stats st;
	double t0, dt;
	long long wait;

	snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
	cr_assert_eq(redisc_new(url, &o, &r, NULL), ST_OK);
	t0 = now_s();
	cr_assert_eq(redisc_ping(r, &err), ST_UNAVAILABLE);
	dt = now_s() - t0;
	cr_assert_geq(dt, 0.14, "gave up before the command timeout: %.3f s", dt);
	cr_assert(strstr(err.ptr, "timeout"), "%s", err.ptr);
	redisc_stats(r, &st);
	cr_assert_eq(st.connects, 1, "one connection");
	cr_assert_eq(st.io_errors, 1, "one command waited for, not retried");
	cr_assert_eq(st.fast_failures, 0);
	cr_assert_eq(st.open, 0, "the timed-out connection is closed");

	cr_assert_eq(redisc_ping(r, &err), ST_UNAVAILABLE);
	wait = next_attempt_ms(err.ptr);
	cr_assert(wait > 0 && wait <= 60000, "then fails fast during the backoff: %s", err.ptr);
	redisc_stats(r, &st);
	cr_assert_eq(st.fast_failures, 1);
	cr_assert_eq(st.connects + st.connect_failures, 1, "no connect during the backoff");
	cr_assert_eq(st.io_errors, 1);
	redisc_free(r);
	cr_assert_eq(silent_server_connections(fd), 1, "the server saw one connection");
	close(fd);
	buf_release(&err);
}

/* Redis's count of clients blocked in BLPOP and the like (INFO clients). */
static long blocked_clients(redisContext *c)
{
	redisReply *rep = redisCommand(c, "INFO clients");
	const char *p;
	long n;

	cr_assert(rep && rep->type == REDIS_REPLY_STRING, "INFO clients failed");
	p = strstr(rep->str, "blocked_clients:");
	cr_assert_not_null(p, "%s", rep->str);
	n = strtol(p + strlen("blocked_clients:"), NULL, 10);
	freeReplyObject(rep);
	return n;
}

struct blpop_arg {
	struct redisc *r;
	char key[96];
	enum st_rc rc;
	char err[256];
};

static void *blpop_thread(void *p)
{
	struct blpop_arg *a = p;
	const char *argv[3] = { "BLPOP", a->key, "30" };
	struct buf err = BUF_INIT(256);
	redisReply *rep = NULL;

	a->rc = redisc_command(a->r, 3, argv, NULL, &rep, &err);
	if (rep)
		freeReplyObject(rep);
	snprintf(a->err, sizeof(a->err), "%s", err.ptr ? err.ptr : "");
	buf_release(&err);
	return NULL;
}

/* One slow command is not a down server: a command that times out while
 * another was answered closes its own connection only. The pool stays up
 * (no fast failures), its other connection stays open, and the next call
 * reconnects at once. Before, the timeout marked the pool down: the idle
 * connection was closed and the next call refused for the backoff. A
 * timeout with nothing answered meanwhile still marks it down
 * (hung_server_times_out). */
Test(redisc, a_slow_command_while_others_are_answered_leaves_the_pool_up, .init = setup,
     .timeout = 60)
{
	const char *url = need_redis();
	struct redisc_options o = { .pool_size = 2, .command_timeout_ms = 3000 };
	struct redisc *r = NULL;
	struct blpop_arg a = { 0 };
	struct redisc_stats st;
	redisContext *d = direct(url, -1);
	struct buf err = BUF_INIT(256);
	pthread_t t;
	long base = blocked_clients(d);

	cr_assert_eq(redisc_new(url, &o, &r, NULL), ST_OK);
	cr_assert_eq(redisc_ping(r, NULL), ST_OK, "one connection open");
	a.r = r;
	random_prefix(a.key, sizeof(a.key), "blpop");
	/* BLPOP on a key nobody pushes to: Redis holds that client alone, and
	 * answers everyone else, until our command timeout gives up on it. */
	cr_assert_eq(pthread_create(&t, NULL, blpop_thread, &a), 0);
	for (int i = 0; blocked_clients(d) <= base; i++) {
		cr_assert_lt(i, 10000, "the BLPOP never reached Redis");
		usleep(1000);
	}
	cr_assert_eq(redisc_ping(r, &err), ST_OK, "answered while the BLPOP waits: %s", err.ptr);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(a.rc, ST_UNAVAILABLE, "the BLPOP timed out");
	cr_assert(strstr(a.err, "timeout"), "%s", a.err);

	cr_assert_eq(redisc_ping(r, &err), ST_OK, "the next call is not refused: %s", err.ptr);
	cr_assert_eq(redisc_ping(r, &err), ST_OK, "%s", err.ptr);
	redisc_stats(r, &st);
	cr_assert_eq(st.fast_failures, 0, "never refused during a backoff");
	cr_assert_eq(st.io_errors, 1);
	cr_assert_eq(st.open, 2, "the idle connection stayed open, the slow one was replaced");
	cr_assert_eq(st.connects, 3);
	redisc_free(r);
	redisFree(d);
	buf_release(&err);
}

Test(redisc, recovers_when_redis_comes_back, .init = setup, .timeout = 60)
{
	struct private_redis p = { 0 };
	struct redisc *r = NULL;
	struct buf err = BUF_INIT(512);
	struct redisc_stats st, before;
	double t0;
	int fails = 0;

	private_start(&p, NULL);
	cr_assert_eq(redisc_new(p.url, &patient, &r, NULL), ST_OK);
	cr_assert_eq(redisc_ping(r, &err), ST_OK, "%s", err.ptr);

	/* Restarted between two calls: the stale connection is replaced and
	 * the caller never sees it (rule 3). */
	redisctl(&p, "restart", NULL);
	cr_assert_eq(redisc_ping(r, &err), ST_OK, "%s", err.ptr);
	redisc_stats(r, &st);
	cr_assert_eq(st.connects, 2);

	/* Down: every call fails, and connects no more than the backoff
	 * (50 ms doubling to 1 s) allows in the time the calls took. */
	redisctl(&p, "halt", NULL);
	redisc_stats(r, &before);
	t0 = now_s();
	for (int i = 0; i < 1000; i++)
		fails += redisc_ping(r, NULL) == ST_UNAVAILABLE;
	cr_assert_eq(fails, 1000);
	redisc_stats(r, &st);
	{
		unsigned long long tried = st.connect_failures - before.connect_failures;
		unsigned long long most = probes_within(now_s() - t0, 50, 1000);

		cr_assert_eq(st.connects, before.connects, "nothing to connect to");
		cr_assert_eq(tried + st.fast_failures - before.fast_failures, 1000,
			     "every call a probe or a fast failure");
		cr_assert_leq(tried, most, "%llu connects: more than one per backoff step (%llu)",
			      tried, most);
	}

	/* Back on the same port: found again within the backoff cap (1 s).
	 * A call made after the wait the pool names has passed (a monotonic
	 * sleep at least that long: load only makes it longer) is a probe,
	 * and the probe finds the server. The wait it names is at most the
	 * cap. No wall-clock ceiling: the pool's own figure is checked. */
	redisctl(&p, "start", NULL);
	if (redisc_ping(r, &err) != ST_OK) {
		long long wait = next_attempt_ms(err.ptr);

		cr_assert(wait >= 0 && wait <= 1000, "a refusal during the backoff (<= 1 s): %s",
			  err.ptr);
		usleep((useconds_t)(wait + 2) * 1000);
		cr_assert_eq(redisc_ping(r, &err), ST_OK, "the first call after the backoff: %s",
			     err.ptr);
	}
	redisc_stats(r, &st);
	cr_assert_eq(st.connects, before.connects + 1, "one new connection");
	redisc_free(r);
	private_stop(&p);
	buf_release(&err);
}

Test(redisc, password_and_database, .init = setup, .timeout = 60)
{
	struct private_redis p = { 0 };
	struct redisc *r = NULL;
	struct buf err = BUF_INIT(512);
	char url[160];
	const char *set[3] = { "SET", "where", "db5" };
	redisReply *rep = NULL;
	redisContext *c;

	private_start(&p, "--requirepass s3cr3t-pw");
	/* Wrong password: unavailable, and the reason does not repeat it. */
	snprintf(url, sizeof(url), "redis://:wrong-pw@%s", p.url + 8);
	cr_assert_eq(redisc_new(url, &patient, &r, NULL), ST_OK);
	cr_assert_eq(redisc_ping(r, &err), ST_UNAVAILABLE);
	cr_assert(strstr(err.ptr, "AUTH"), "%s", err.ptr);
	cr_assert_null(strstr(err.ptr, "wrong-pw"), "%s", err.ptr);
	redisc_free(r);
	/* No password: the server answers NOAUTH, which is not ready. */
	cr_assert_eq(redisc_new(p.url, &patient, &r, NULL), ST_OK);
	cr_assert_eq(redisc_ping(r, &err), ST_UNAVAILABLE);
	cr_assert(strstr(err.ptr, "NOAUTH"), "%s", err.ptr);
	redisc_free(r);
	/* Right password, database 5. */
	snprintf(url, sizeof(url), "redis://:s3cr3t-pw@%s/5", p.url + 8);
	cr_assert_eq(redisc_new(url, &patient, &r, NULL), ST_OK);
	cr_assert_eq(redisc_ping(r, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(redisc_command(r, 3, set, NULL, &rep, NULL), ST_OK);
	freeReplyObject(rep);
	redisc_free(r);
	c = direct(url, 5);
	rep = redisCommand(c, "GET where");
	cr_assert(rep && rep->type == REDIS_REPLY_STRING && !strcmp(rep->str, "db5"));
	freeReplyObject(rep);
	redisFree(c);
	c = direct(url, 0);
	rep = redisCommand(c, "EXISTS where");
	cr_assert(rep && rep->integer == 0, "db 0 untouched");
	freeReplyObject(rep);
	redisFree(c);
	private_stop(&p);
	buf_release(&err);
}

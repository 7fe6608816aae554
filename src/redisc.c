/* redisc.c — the hiredis connection pool behind rl_redis.c.
 *
 * State: N slots, each a redisContext or NULL (closed), on a free list
 * guarded by one mutex; a condition variable wakes callers waiting for a
 * slot. A call holds its slot, without the lock, for one command (plus a
 * connect when the slot is closed), so the lock is held only to push and
 * pop. hiredis contexts are not thread-safe; the pool is what makes one
 * context belong to one thread at a time.
 *
 * Failure handling, the part that matters (docs/internals/redisc.md):
 *  1. A failed connect, or a command that got no answer (timeout, reset),
 *     marks the pool down: the slot is closed, every idle slot is closed
 *     too (a server that refuses connections has dropped them), and the
 *     next connect may happen only after retry_at. Except a timeout while
 *     another command was answered: the server is serving, this command
 *     or connection was slow; only its slot is closed.
 *  2. While down, a call that would need to connect fails at once with
 *     ST_UNAVAILABLE unless it is the one probe allowed after retry_at.
 *     The probe's failure doubles the backoff (up to backoff_max); its
 *     success, or any reply at all, clears the down state.
 *  3. A connection that was fine and is found reset or closed on use (a
 *     server restart) is replaced and the command sent again, once. A
 *     timeout is not retried: the command may have run.
 * So a dead server costs a caller one mutex round trip, and recovery takes
 * at most backoff_max after the server is back.
 *
 * Workload: one short command per rate-limited request, from every HTTP
 * thread; a PING per readiness probe. */
#include "redisc.h"

#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "hex.h"
#include "banned.h"

#define REDISC_POOL_DEFAULT     8
#define REDISC_POOL_MAX         1024
#define REDISC_TIMEOUT_DEFAULT  200  /* ms, connect and command */
#define REDISC_BACKOFF_MIN      50   /* ms */
#define REDISC_BACKOFF_MAX      1000 /* ms */
#define REDISC_EVAL_ARGS_MAX    32

struct redisc_conn {
	redisContext *ctx;         /* NULL = closed */
	struct redisc_conn *next;  /* free list */
};

struct redisc {
	struct redisc_url url;
	struct timeval connect_tv, command_tv;
	int64_t wait_ms;           /* longest wait for a free slot */
	int backoff_min, backoff_max;

	pthread_mutex_t lock;
	pthread_cond_t cond;       /* a slot was freed; CLOCK_MONOTONIC */
	struct redisc_conn *slots;
	unsigned n;
	struct redisc_conn *free;
	/* Replies received, on any slot: a command that times out while this
	 * moved was slow alone (rule 1). Atomic, not under the lock: the
	 * lock stays off the path of a command that is answered. */
	_Atomic uint64_t answers;
	/* down state (rule 1, 2) */
	bool down;
	bool probing;              /* a probe is connecting */
	int64_t retry_at;          /* monotonic ms: no connect before */
	int backoff;               /* ms, the current wait */
	char last_error[160];      /* why it is down (no secrets) */
	struct redisc_stats stats;
};

static void errf(struct buf *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void errf(struct buf *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	buf_reset(err);
	va_start(ap, fmt);
	buf_vprintf(err, fmt, ap);
	va_end(ap);
}

/* ---------------------------------------------------------------- URLs */

/* Percent-decodes [s, e) into out (cap bytes with the NUL). False when it
 * does not fit, has a bad escape or decodes to a NUL. */
static bool pct_decode(const char *s, const char *e, char *out, size_t cap)
{
	size_t n = 0;

	for (; s < e; s++) {
		int c = (unsigned char)*s;

		if (c == '%') {
			int hi, lo;

			if (e - s < 3 || (hi = hex_digit(s[1])) < 0 || (lo = hex_digit(s[2])) < 0)
				return false;
			c = hi << 4 | lo;
			s += 2;
		}
		if (c == 0 || n + 1 >= cap)
			return false;
		out[n++] = (char)c;
	}
	out[n] = '\0';
	return true;
}

/* Parses digits [s, e) into 0..max; false on anything else or empty. */
static bool parse_uint(const char *s, const char *e, long max, long *out)
{
	long v = 0;

	if (s == e)
		return false;
	for (; s < e; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (*s - '0');
		if (v > max)
			return false;
	}
	*out = v;
	return true;
}

static bool host_char_ok(int c, bool v6)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
	    c == '-' || c == '_')
		return true;
	return v6 && (c == ':' || c == '%');
}

enum st_rc redisc_url_parse(const char *url, struct redisc_url *out, struct buf *err)
{
	struct redisc_url u;
	const char *p, *auth_end, *at, *host, *host_end, *port = NULL, *port_end = NULL;
	bool v6 = false;
	long v;

	memset(&u, 0, sizeof(u));
	u.port = 6379;
	if (!url) {
		errf(err, "no Redis URL");
		return ST_INVALID;
	}
	if (!strncasecmp(url, "rediss://", 9)) {
		errf(err, "rediss:// (TLS) is not supported by this build (hiredis %d.%d has no TLS)",
		     HIREDIS_MAJOR, HIREDIS_MINOR);
		return ST_INVALID;
	}
	if (strncasecmp(url, "redis://", 8)) {
		errf(err, "not a redis:// URL");
		return ST_INVALID;
	}
	p = url + 8;
	if (strpbrk(p, "?#")) {
		errf(err, "query parameters and fragments are not supported in a Redis URL");
		return ST_INVALID;
	}
	auth_end = p + strcspn(p, "/");
	/* The last '@' ends the user info: an unencoded '@' in a password is
	 * then still read as the user means. */
	at = NULL;
	for (const char *q = p; q < auth_end; q++)
		if (*q == '@')
			at = q;
	host = p;
	if (at) {
		/* user:password, :password, or a lone password (the classic
		 * requirepass form, redis://password@host). */
		const char *colon = memchr(p, ':', (size_t)(at - p));
		const char *pw = colon ? colon + 1 : p;

		if ((colon && !pct_decode(p, colon, u.user, sizeof(u.user))) ||
		    !pct_decode(pw, at, u.password, sizeof(u.password))) {
			errf(err, "bad user name or password in the Redis URL (too long, bad %%-escape)");
			return ST_INVALID;
		}
		host = at + 1;
	}
	if (*host == '[') {
		v6 = true;
		host++;
		host_end = memchr(host, ']', (size_t)(auth_end - host));
		if (!host_end) {
			errf(err, "unterminated [IPv6] host in the Redis URL");
			return ST_INVALID;
		}
		if (host_end + 1 < auth_end) {
			if (host_end[1] != ':') {
				errf(err, "junk after the [IPv6] host in the Redis URL");
				return ST_INVALID;
			}
			port = host_end + 2;
			port_end = auth_end;
		}
	} else {
		host_end = memchr(host, ':', (size_t)(auth_end - host));
		if (host_end) {
			port = host_end + 1;
			port_end = auth_end;
		} else {
			host_end = auth_end;
		}
	}
	if (host_end == host || (size_t)(host_end - host) >= sizeof(u.host)) {
		errf(err, "no host (or a host over %zu bytes) in the Redis URL", sizeof(u.host) - 1);
		return ST_INVALID;
	}
	for (const char *q = host; q < host_end; q++) {
		if (!host_char_ok((unsigned char)*q, v6)) {
			errf(err, "bad character in the host of the Redis URL");
			return ST_INVALID;
		}
	}
	memcpy(u.host, host, (size_t)(host_end - host));
	if (port) {
		if (!parse_uint(port, port_end, 65535, &v) || v == 0) {
			errf(err, "bad port in the Redis URL (1..65535)");
			return ST_INVALID;
		}
		u.port = (int)v;
	}
	if (*auth_end == '/' && auth_end[1]) {
		if (!parse_uint(auth_end + 1, auth_end + strlen(auth_end), 65535, &v)) {
			errf(err, "bad database number in the Redis URL (/0../65535)");
			return ST_INVALID;
		}
		u.db = (int)v;
	}
	*out = u;
	return ST_OK;
}

void redisc_url_describe(const struct redisc_url *u, struct buf *out)
{
	bool v6 = strchr(u->host, ':') != NULL;

	buf_puts(out, "redis://");
	if (u->password[0] || u->user[0])
		buf_printf(out, "%s:[redacted]@", u->user);
	buf_printf(out, v6 ? "[%s]:%d/%d" : "%s:%d/%d", u->host, u->port, u->db);
}

/* ---------------------------------------------------------------- pool */

static struct timeval ms_tv(int ms)
{
	return (struct timeval){ .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
}

enum st_rc redisc_new(const char *url, const struct redisc_options *o, struct redisc **out,
		      struct buf *err)
{
	struct redisc_options d = { 0 };
	struct redisc *r = NULL;
	pthread_condattr_t ca;
	enum st_rc rc;

	if (o)
		d = *o;
	r = calloc(1, sizeof(*r));
	if (!r) {
		errf(err, "out of memory");
		return ST_NOMEM;
	}
	rc = redisc_url_parse(url, &r->url, err);
	if (rc) {
		free(r);
		return rc;
	}
	r->n = d.pool_size ? d.pool_size : REDISC_POOL_DEFAULT;
	if (r->n > REDISC_POOL_MAX)
		r->n = REDISC_POOL_MAX;
	d.connect_timeout_ms = d.connect_timeout_ms > 0 ? d.connect_timeout_ms : REDISC_TIMEOUT_DEFAULT;
	d.command_timeout_ms = d.command_timeout_ms > 0 ? d.command_timeout_ms : REDISC_TIMEOUT_DEFAULT;
	r->connect_tv = ms_tv(d.connect_timeout_ms);
	r->command_tv = ms_tv(d.command_timeout_ms);
	/* A holder keeps a slot for at most a connect, a command and a retry. */
	r->wait_ms = 2 * (int64_t)d.connect_timeout_ms + 2 * (int64_t)d.command_timeout_ms;
	r->backoff_min = d.backoff_min_ms > 0 ? d.backoff_min_ms : REDISC_BACKOFF_MIN;
	r->backoff_max = d.backoff_max_ms > 0 ? d.backoff_max_ms : REDISC_BACKOFF_MAX;
	if (r->backoff_max < r->backoff_min)
		r->backoff_max = r->backoff_min;
	r->backoff = r->backoff_min;
	r->slots = calloc(r->n, sizeof(*r->slots));
	if (!r->slots) {
		free(r);
		errf(err, "out of memory");
		return ST_NOMEM;
	}
	for (unsigned i = 0; i < r->n; i++) {
		r->slots[i].next = r->free;
		r->free = &r->slots[i];
	}
	if (pthread_mutex_init(&r->lock, NULL)) {
		free(r->slots);
		free(r);
		errf(err, "cannot create a mutex");
		return ST_NOMEM;
	}
	if (pthread_condattr_init(&ca) || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) ||
	    pthread_cond_init(&r->cond, &ca)) {
		pthread_mutex_destroy(&r->lock);
		free(r->slots);
		free(r);
		errf(err, "cannot create a condition variable");
		return ST_NOMEM;
	}
	pthread_condattr_destroy(&ca);
	*out = r;
	return ST_OK;
}

void redisc_free(struct redisc *r)
{
	if (!r)
		return;
	for (unsigned i = 0; i < r->n; i++)
		if (r->slots[i].ctx)
			redisFree(r->slots[i].ctx);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->lock);
	free(r->slots);
	explicit_bzero(r->url.password, sizeof(r->url.password));
	free(r);
}

/* Under the lock: whether a caller may open a connection now. While the
 * pool is down only one probe at a time may, after retry_at. */
static bool may_connect(struct redisc *r, bool *probe)
{
	if (!r->down)
		return true;
	if (r->probing || clock_mono_ms() < r->retry_at)
		return false;
	r->probing = true;
	*probe = true;
	return true;
}

static void fast_failure(struct redisc *r, struct buf *err)
{
	int64_t wait = r->retry_at - clock_mono_ms();

	r->stats.fast_failures++;
	errf(err, "redis at %s:%d is unavailable (%s); next attempt in %lld ms", r->url.host,
	     r->url.port, r->last_error, (long long)(wait > 0 ? wait : 0));
}

/* Under the lock: rule 1. Closes the idle slots too. */
static void mark_down(struct redisc *r, bool *probe, const char *why)
{
	if (!r->down) {
		r->down = true;
		r->backoff = r->backoff_min;
	} else if (*probe) {
		r->backoff = r->backoff > r->backoff_max / 2 ? r->backoff_max : r->backoff * 2;
	}
	if (*probe) {
		r->probing = false;
		*probe = false;
	}
	r->retry_at = clock_mono_ms() + r->backoff;
	snprintf(r->last_error, sizeof(r->last_error), "%s", why);
	for (struct redisc_conn *c = r->free; c; c = c->next) {
		if (c->ctx) {
			redisFree(c->ctx);
			c->ctx = NULL;
			r->stats.open--;
		}
	}
}

/* Under the lock: any answer means the server is up. */
static void mark_up(struct redisc *r, bool *probe)
{
	r->down = false;
	r->backoff = r->backoff_min;
	if (*probe) {
		r->probing = false;
		*probe = false;
	}
}

static enum st_rc slot_acquire(struct redisc *r, struct redisc_conn **out, bool *probe,
			       struct buf *err)
{
	struct timespec deadline;
	struct redisc_conn *c;
	int64_t ns;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	ns = deadline.tv_nsec + (r->wait_ms % 1000) * 1000000;
	deadline.tv_sec += (time_t)(r->wait_ms / 1000 + ns / 1000000000);
	deadline.tv_nsec = (long)(ns % 1000000000);

	pthread_mutex_lock(&r->lock);
	while (!r->free) {
		if (pthread_cond_timedwait(&r->cond, &r->lock, &deadline) == ETIMEDOUT && !r->free) {
			r->stats.fast_failures++;
			pthread_mutex_unlock(&r->lock);
			errf(err, "all %u connections to redis at %s:%d are busy", r->n, r->url.host,
			     r->url.port);
			return ST_UNAVAILABLE;
		}
	}
	c = r->free;
	r->free = c->next;
	if (!c->ctx && !may_connect(r, probe)) {
		c->next = r->free;
		r->free = c;
		pthread_cond_signal(&r->cond);
		fast_failure(r, err);
		pthread_mutex_unlock(&r->lock);
		return ST_UNAVAILABLE;
	}
	pthread_mutex_unlock(&r->lock);
	*out = c;
	return ST_OK;
}

static void slot_release(struct redisc *r, struct redisc_conn *c, bool *probe)
{
	pthread_mutex_lock(&r->lock);
	if (*probe) { /* ended without a verdict (ENOMEM): let another try */
		r->probing = false;
		*probe = false;
	}
	c->next = r->free;
	r->free = c;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

/* Appends n as decimal digits to p; returns the end. */
static char *put_decimal(char *p, size_t n)
{
	char tmp[24];
	int k = 0;

	do {
		tmp[k++] = (char)('0' + n % 10);
		n /= 10;
	} while (n);
	while (k)
		*p++ = tmp[--k];
	return p;
}

/* The command in RESP ("*argc\r\n" then "$len\r\n<bytes>\r\n" per argument)
 * in buf (cap bytes) or, when it needs more, in *heap (malloc'd; the caller
 * frees it). What hiredis's redisCommandArgv formats with sdscatfmt, for a
 * tenth of the instructions (this is one rate-limit decision's command).
 * Returns the length, 0 on ENOMEM. */
static size_t resp_format(int argc, const char *const *argv, const size_t *lens, char *buf,
			  size_t cap, char **heap, const char **out)
{
	size_t need = 16, n;
	char *p;

	*heap = NULL;
	for (int i = 0; i < argc; i++)
		need += (lens ? lens[i] : strlen(argv[i])) + 24 + 3;
	p = buf;
	if (need > cap && !(p = *heap = malloc(need)))
		return 0;
	*out = p;
	*p++ = '*';
	p = put_decimal(p, (size_t)argc);
	*p++ = '\r';
	*p++ = '\n';
	for (int i = 0; i < argc; i++) {
		n = lens ? lens[i] : strlen(argv[i]);
		*p++ = '$';
		p = put_decimal(p, n);
		*p++ = '\r';
		*p++ = '\n';
		if (n)
			memcpy(p, argv[i], n);
		p += n;
		*p++ = '\r';
		*p++ = '\n';
	}
	return (size_t)(p - *out);
}

/* Sends the formatted command cmd and reads its reply on ctx (blocking):
 * the reply, or NULL with ctx->err set. */
static redisReply *send_formatted(redisContext *ctx, const char *cmd, size_t len)
{
	void *rep = NULL;

	if (redisAppendFormattedCommand(ctx, cmd, len) != REDIS_OK)
		return NULL;
	if (redisGetReply(ctx, &rep) != REDIS_OK)
		return NULL;
	return rep;
}

/* Runs a command on a fresh context during the handshake (AUTH, SELECT):
 * ST_OK on a status reply, else the reason in why (the server's error
 * text, which never repeats the password). */
static enum st_rc handshake(redisContext *ctx, int argc, const char **argv, char *why, size_t cap)
{
	redisReply *rep = redisCommandArgv(ctx, argc, argv, NULL);
	enum st_rc rc = ST_OK;

	if (!rep) {
		snprintf(why, cap, "%s: %s", argv[0], ctx->errstr);
		return ST_UNAVAILABLE;
	}
	if (rep->type == REDIS_REPLY_ERROR) {
		snprintf(why, cap, "%s refused: %.80s", argv[0], rep->str);
		rc = ST_UNAVAILABLE;
	}
	freeReplyObject(rep);
	return rc;
}

/* Opens c's connection: connect (bounded by the connect timeout), the
 * command timeout, keepalive, AUTH, SELECT. On failure c stays closed and
 * why says what failed. */
static enum st_rc slot_connect(struct redisc *r, struct redisc_conn *c, char *why, size_t cap)
{
	redisContext *ctx = redisConnectWithTimeout(r->url.host, r->url.port, r->connect_tv);
	char db[16];
	enum st_rc rc = ST_OK;

	if (!ctx) {
		snprintf(why, cap, "out of memory");
		return ST_NOMEM;
	}
	if (ctx->err) {
		snprintf(why, cap, "cannot connect: %s", ctx->errstr);
		rc = ST_UNAVAILABLE;
		goto out;
	}
	if (redisSetTimeout(ctx, r->command_tv) != REDIS_OK) {
		snprintf(why, cap, "cannot set the command timeout: %s", ctx->errstr);
		rc = ST_UNAVAILABLE;
		goto out;
	}
	redisEnableKeepAlive(ctx);
	if (r->url.password[0] || r->url.user[0]) {
		/* AUTH user pass (Redis 6 ACLs), or AUTH pass (requirepass). */
		const char *a[3] = { "AUTH", r->url.user, r->url.password };
		int n = 3;

		if (!r->url.user[0]) {
			a[1] = r->url.password;
			n = 2;
		}
		rc = handshake(ctx, n, a, why, cap);
		if (rc)
			goto out;
	}
	if (r->url.db) {
		const char *a[2] = { "SELECT", db };

		snprintf(db, sizeof(db), "%d", r->url.db);
		rc = handshake(ctx, 2, a, why, cap);
		if (rc)
			goto out;
	}
out:
	if (rc) {
		redisFree(ctx);
		return rc;
	}
	c->ctx = ctx;
	return ST_OK;
}

/* Whether a failed command found a connection the server had closed
 * (rule 3), as opposed to a timeout or a protocol error. */
static bool was_closed(int ctx_err, int saved_errno)
{
	return ctx_err == REDIS_ERR_EOF ||
	       (ctx_err == REDIS_ERR_IO && (saved_errno == ECONNRESET || saved_errno == EPIPE ||
					    saved_errno == ENOTCONN));
}

enum st_rc redisc_command(struct redisc *r, int argc, const char *const *argv, const size_t *lens,
			  redisReply **reply, struct buf *err)
{
	struct redisc_conn *c;
	redisReply *rep = NULL;
	bool probe = false, fresh, retried = false;
	char why[160], small[512], *heap = NULL;
	const char *cmd = NULL;
	size_t cmd_len;
	enum st_rc rc;

	if (!r || argc < 1 || !argv || !reply) {
		errf(err, "bad arguments");
		return ST_INVALID;
	}
	/* Formatted once: a retry on a new connection sends the same bytes. */
	cmd_len = resp_format(argc, argv, lens, small, sizeof(small), &heap, &cmd);
	if (!cmd_len) {
		errf(err, "out of memory");
		return ST_NOMEM;
	}
	rc = slot_acquire(r, &c, &probe, err);
	if (rc) {
		free(heap);
		return rc;
	}
	for (;;) {
		int ctx_err, saved_errno;
		uint64_t answers_before;

		fresh = !c->ctx;
		if (fresh) {
			rc = slot_connect(r, c, why, sizeof(why));
			pthread_mutex_lock(&r->lock);
			if (rc == ST_OK) {
				r->stats.connects++;
				r->stats.open++;
			} else if (rc == ST_UNAVAILABLE) {
				r->stats.connect_failures++;
				mark_down(r, &probe, why);
			}
			pthread_mutex_unlock(&r->lock);
			if (rc) {
				errf(err, "redis at %s:%d: %s", r->url.host, r->url.port, why);
				break;
			}
		}
		errno = 0;
		answers_before = atomic_load_explicit(&r->answers, memory_order_relaxed);
		rep = send_formatted(c->ctx, cmd, cmd_len);
		if (rep) {
			atomic_fetch_add_explicit(&r->answers, 1, memory_order_relaxed);
			pthread_mutex_lock(&r->lock);
			if (r->down || probe)
				mark_up(r, &probe);
			pthread_mutex_unlock(&r->lock);
			rc = ST_OK;
			break;
		}
		saved_errno = errno;
		ctx_err = c->ctx->err;
		snprintf(why, sizeof(why), "%s", ctx_err == REDIS_ERR_IO && saved_errno == EAGAIN
							 ? "no reply within the command timeout"
							 : c->ctx->errstr);
		redisFree(c->ctx);
		c->ctx = NULL;
		pthread_mutex_lock(&r->lock);
		r->stats.open--;
		r->stats.io_errors++;
		if (ctx_err == REDIS_ERR_OOM) {
			pthread_mutex_unlock(&r->lock);
			errf(err, "out of memory");
			rc = ST_NOMEM;
			break;
		}
		/* Rule 3: a connection the server closed while it sat idle
		 * (a restart); the command never reached a live server. */
		if (!fresh && !retried && was_closed(ctx_err, saved_errno) && may_connect(r, &probe)) {
			pthread_mutex_unlock(&r->lock);
			retried = true;
			continue;
		}
		/* Rule 1's exception: a timeout during which another command
		 * was answered says this command (a slow script, a blocking
		 * one) or this connection was slow, not that the server is
		 * gone: the pool stays up and its other connections open. A
		 * stall with nothing answered (a hung or starved server) still
		 * marks it down, so that callers stop waiting for it. */
		if (!(ctx_err == REDIS_ERR_IO && saved_errno == EAGAIN &&
		      atomic_load_explicit(&r->answers, memory_order_relaxed) != answers_before))
			mark_down(r, &probe, why);
		pthread_mutex_unlock(&r->lock);
		errf(err, "redis at %s:%d: %s", r->url.host, r->url.port, why);
		rc = ST_UNAVAILABLE;
		break;
	}
	slot_release(r, c, &probe);
	free(heap);
	if (rc == ST_OK)
		*reply = rep;
	return rc;
}

/* ---------------------------------------------------------------- scripts */

void redisc_script_init(struct redisc_script *s, const char *source)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	s->source = source;
	memset(s->sha1, 0, sizeof(s->sha1));
	if (!EVP_Digest(source, strlen(source), md, &n, EVP_sha1(), NULL) || n != 20)
		return; /* an empty sha1: EVALSHA fails with NOSCRIPT, EVAL runs it */
	hex_encode(md, 20, s->sha1);
}

/* Error replies a server gives while it cannot serve, not because the
 * command is wrong (the prefix is Redis's error code). */
static bool transient_error(const char *msg)
{
	static const char *const codes[] = { "LOADING", "BUSY", "READONLY", "MASTERDOWN",
					     "NOAUTH", "WRONGPASS", "NOPERM", "OOM",
					     "TRYAGAIN", "CLUSTERDOWN", "MISCONF", "NOREPLICAS" };

	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		size_t n = strlen(codes[i]);

		if (!strncmp(msg, codes[i], n) && (msg[n] == ' ' || msg[n] == '\0'))
			return true;
	}
	return false;
}

enum st_rc redisc_eval(struct redisc *r, const struct redisc_script *s, int nkeys, int nargs,
		       const char *const *args, const size_t *lens, redisReply **reply,
		       struct buf *err)
{
	const char *argv[REDISC_EVAL_ARGS_MAX + 3];
	size_t argl[REDISC_EVAL_ARGS_MAX + 3];
	char nk[16];
	redisReply *rep = NULL;
	enum st_rc rc;

	if (!s || nkeys < 0 || nargs < nkeys || nargs > REDISC_EVAL_ARGS_MAX || (nargs && !args)) {
		errf(err, "bad script arguments");
		return ST_INVALID;
	}
	snprintf(nk, sizeof(nk), "%d", nkeys);
	argv[0] = "EVALSHA";
	argv[1] = s->sha1;
	argv[2] = nk;
	for (int i = 0; i < 3; i++)
		argl[i] = strlen(argv[i]);
	for (int i = 0; i < nargs; i++) {
		argv[3 + i] = args[i];
		argl[3 + i] = lens ? lens[i] : strlen(args[i]);
	}
	rc = redisc_command(r, nargs + 3, argv, argl, &rep, err);
	if (rc == ST_OK && rep->type == REDIS_REPLY_ERROR && !strncmp(rep->str, "NOSCRIPT", 8)) {
		/* EVAL caches the script under the same SHA-1 for next time. */
		freeReplyObject(rep);
		rep = NULL;
		argv[0] = "EVAL";
		argv[1] = s->source;
		argl[0] = 4;
		argl[1] = strlen(s->source);
		rc = redisc_command(r, nargs + 3, argv, argl, &rep, err);
	}
	if (rc)
		return rc;
	if (rep->type == REDIS_REPLY_ERROR) {
		rc = transient_error(rep->str) ? ST_UNAVAILABLE : ST_INTERNAL;
		errf(err, "redis at %s:%d: script error: %.200s", r->url.host, r->url.port, rep->str);
		freeReplyObject(rep);
		return rc;
	}
	*reply = rep;
	return ST_OK;
}

enum st_rc redisc_ping(struct redisc *r, struct buf *err)
{
	const char *argv[1] = { "PING" };
	redisReply *rep = NULL;
	enum st_rc rc = redisc_command(r, 1, argv, NULL, &rep, err);

	if (rc)
		return rc == ST_NOMEM ? rc : ST_UNAVAILABLE;
	if (rep->type == REDIS_REPLY_STATUS && !strcmp(rep->str, "PONG")) {
		rc = ST_OK;
	} else {
		errf(err, "redis at %s:%d answered PING with %.100s", r->url.host, r->url.port,
		     rep->type == REDIS_REPLY_ERROR || rep->type == REDIS_REPLY_STATUS ? rep->str
										 : "something else");
		rc = ST_UNAVAILABLE;
	}
	freeReplyObject(rep);
	return rc;
}

void redisc_stats(struct redisc *r, struct redisc_stats *out)
{
	pthread_mutex_lock(&r->lock);
	*out = r->stats;
	pthread_mutex_unlock(&r->lock);
}

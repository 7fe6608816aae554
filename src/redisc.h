/* redisc.h — a small, thread-safe Redis client on hiredis (which owns the
 * redis* names; ours are redisc_*).
 *
 * One struct redisc is a pool of N blocking hiredis connections to one
 * server, shared by every thread: a call takes a connection from the free
 * list (waiting on a condition variable while all are busy), runs one
 * command and gives it back. Connections are opened lazily with a connect
 * timeout; every command has a read/write timeout; a connection that fails
 * is closed and reopened on a later call. While the server is down the pool
 * answers ST_UNAVAILABLE at once instead of reconnecting on every call: one
 * probe at a time, spaced by an exponential backoff (backoff_min_ms doubling
 * to backoff_max_ms), so a dead Redis costs callers microseconds and a
 * revived one is found within backoff_max_ms of the next call.
 *
 * Nothing here logs and no message names the password. The process must
 * ignore SIGPIPE (main.c does): hiredis writes with write(2).
 * See docs/internals/redisc.md. */
#ifndef SETTLED_REDISC_H
#define SETTLED_REDISC_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#include "buf.h"
#include "rc.h"

/* A parsed redis:// URL. */
struct redisc_url {
	char host[256];      /* name or address; IPv6 without brackets */
	int port;            /* default 6379 */
	int db;              /* default 0 */
	char user[128];      /* "" = none (AUTH password alone) */
	char password[256];  /* "" = none; secret: never put in a message */
};

/* Parses redis://[[user]:password@]host[:port][/db]; a user info without
 * ':' is a password (redis://password@host, the requirepass habit). The
 * user info may be percent-encoded; host may be [IPv6]; db is 0..65535. rediss:// (TLS),
 * unix sockets and query parameters are refused (ST_INVALID), since the
 * hiredis this builds on (0.14) has no TLS. On ST_OK fills *out; on
 * ST_INVALID writes a reason to err (optional) that never contains the
 * password. url NULL is ST_INVALID. */
enum st_rc redisc_url_parse(const char *url, struct redisc_url *out, struct buf *err);

/* Appends "redis://host:port/db", with ":[redacted]@" when there is a
 * password: the form fit for logs. */
void redisc_url_describe(const struct redisc_url *u, struct buf *out);

struct redisc_options {
	unsigned pool_size;       /* connections; 0 = 8, at most 1024 */
	int connect_timeout_ms;   /* 0 = 200 */
	int command_timeout_ms;   /* 0 = 200: a reply slower than this is an error */
	int backoff_min_ms;       /* 0 = 50: first wait after a failed connect */
	int backoff_max_ms;       /* 0 = 1000: the wait doubles up to this */
};

struct redisc;

/* Creates a pool for url (redisc_url_parse) with options o (NULL = all
 * defaults). Connects nothing yet: creating a pool for a server that is
 * down succeeds, and calls answer ST_UNAVAILABLE until it is up. On ST_OK
 * *out owns the pool (free with redisc_free); else a reason is in err
 * (optional): ST_INVALID for a bad URL, ST_NOMEM. */
enum st_rc redisc_new(const char *url, const struct redisc_options *o, struct redisc **out,
		      struct buf *err);

/* Closes every connection and frees r; r may be NULL. No call may be
 * running. */
void redisc_free(struct redisc *r);

/* Runs one command (binary-safe arguments, lens may be NULL for C
 * strings). ST_OK with *reply set (caller frees it with freeReplyObject)
 * whenever the server answered, error replies included: the caller judges
 * REDIS_REPLY_ERROR. ST_UNAVAILABLE when no answer could be had (down,
 * refused, timed out, all connections busy beyond the command timeout),
 * ST_NOMEM; *reply is set only on ST_OK; err (optional) gets the reason.
 *
 * A connection found dead on its first use after an idle spell (reset or
 * closed by a server restart) is replaced and the command sent once more
 * on the new one; a timeout is never retried (the command may have run).
 * A timeout marks the pool down (calls refused at once for the backoff)
 * unless another command was answered while this one waited. */
enum st_rc redisc_command(struct redisc *r, int argc, const char *const *argv, const size_t *lens,
			  redisReply **reply, struct buf *err);

/* A Lua script run by its SHA-1 (EVALSHA), loaded with EVAL when the
 * server does not know it (NOSCRIPT: first use, or after a restart or
 * SCRIPT FLUSH). source must outlive the struct. */
struct redisc_script {
	const char *source;
	char sha1[41];
};

/* Computes s->sha1 of source. */
void redisc_script_init(struct redisc_script *s, const char *source);

/* EVALSHA sha nkeys args... (args holds the keys first, then the other
 * arguments: nargs in all), falling back to EVAL on NOSCRIPT. ST_OK with
 * *reply the script's result. A Redis error reply is not ST_OK: errors a
 * server gives while it cannot serve (LOADING, BUSY, READONLY, MASTERDOWN,
 * NOAUTH, OOM, ...) are ST_UNAVAILABLE, any other (a script bug) is
 * ST_INTERNAL; the text goes to err. Otherwise as redisc_command(). */
enum st_rc redisc_eval(struct redisc *r, const struct redisc_script *s, int nkeys, int nargs,
		       const char *const *args, const size_t *lens, redisReply **reply,
		       struct buf *err);

/* PING: ST_OK when the server answers PONG, else ST_UNAVAILABLE with the
 * reason in err (optional). Used by /health/ready. */
enum st_rc redisc_ping(struct redisc *r, struct buf *err);

/* Counters since redisc_new, for tests and metrics. */
struct redisc_stats {
	unsigned long long connects;        /* successful connects */
	unsigned long long connect_failures;
	unsigned long long io_errors;       /* commands that got no answer */
	unsigned long long fast_failures;   /* calls refused during a backoff */
	unsigned open;                      /* connections open now */
};

void redisc_stats(struct redisc *r, struct redisc_stats *out);

#endif

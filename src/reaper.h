/* reaper.h — a deadline for receiving each request, on top of libmicrohttpd.
 *
 * libmicrohttpd's MHD_OPTION_CONNECTION_TIMEOUT is an idle timeout: every
 * byte that arrives restarts it. A client that sends one header byte a
 * second (slowloris), or dribbles its body, therefore holds a connection
 * and its buffers for as long as it likes. The reaper adds the missing
 * bound (SPEC section 3, "connection and read timeouts"): from the moment a
 * connection is ready for a request (accepted, or the previous answer
 * finished) the whole request, headers and body, must arrive within the
 * timeout. When it does not, the reaper shuts the socket down
 * (shutdown(2), never close(2)); libmicrohttpd sees the client leave and
 * cleans up as for any dropped connection.
 *
 * http.c watches every connection (MHD_OPTION_NOTIFY_CONNECTION), disarms
 * the deadline once a request is complete (so a handler waiting on a slow
 * store is never cut off) and re-arms it when the answer is done.
 *
 * One thread checks the watched connections every REAPER_TICK_MS (or a
 * quarter of the timeout when that is shorter), so a deadline is enforced
 * to within one tick. The scan is linear: a few thousand connections cost
 * microseconds per tick, nothing next to the requests themselves.
 *
 * Threads: reaper_watch / reaper_unwatch lock; reaper_arm / reaper_disarm
 * are lock-free (an atomic deadline) and may race with the reaper thread
 * safely: a deadline re-armed at the last moment is never acted on. */
#ifndef SETTLED_REAPER_H
#define SETTLED_REAPER_H

#include <stdint.h>

#include "rc.h"

#define REAPER_TICK_MS 250

struct reaper;
struct reaper_conn;

/* Starts the reaper thread. timeout_ms > 0. ST_NOMEM / ST_INTERNAL when
 * the thread cannot be started; *out is set only on ST_OK. */
enum st_rc reaper_new(int64_t timeout_ms, struct reaper **out);

/* Stops the thread and frees the reaper and any connection still watched
 * (their sockets are left alone). Accepts NULL. */
void reaper_free(struct reaper *r);

/* Watches socket fd, armed (deadline: now + timeout). Returns NULL when out
 * of memory: the connection is then simply not watched. The caller must
 * reaper_unwatch() it before fd is closed. */
struct reaper_conn *reaper_watch(struct reaper *r, int fd);

/* Stops watching and frees c. Accepts NULL. */
void reaper_unwatch(struct reaper *r, struct reaper_conn *c);

/* Deadline: now + timeout. Accepts NULL. */
void reaper_arm(struct reaper_conn *c);

/* No deadline until the next reaper_arm(). Accepts NULL. */
void reaper_disarm(struct reaper_conn *c);

/* Connections shut down so far. */
uint64_t reaper_reaped(const struct reaper *r);

#endif

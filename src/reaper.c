/* reaper.c — shuts down connections whose request takes too long to
 * arrive. See reaper.h for why libmicrohttpd needs this.
 *
 * The watched connections are a doubly-linked list under one mutex, which
 * the reaper thread holds while it scans and while it calls shutdown(2).
 * That is what makes the shutdown safe: libmicrohttpd tells http.c about a
 * closed connection (MHD_CONNECTION_NOTIFY_CLOSED -> reaper_unwatch, which
 * takes the mutex) before it closes the socket, so a descriptor the reaper
 * shuts down is always still the connection's own, never a number the
 * kernel has already handed to somebody else.
 *
 * Deadlines are atomics so that the per-request arm/disarm calls on the
 * HTTP threads take no lock. The reaper claims an expired deadline with a
 * compare-and-swap to 0, so a connection re-armed at the same moment keeps
 * its new deadline and is not shut down. */
#include "reaper.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "clock.h"
#include "banned.h"

struct reaper_conn {
	struct reaper_conn *prev, *next;
	int fd;
	struct reaper *owner;
	_Atomic int64_t deadline_ms; /* 0: disarmed */
};

struct reaper {
	pthread_mutex_t lock;
	pthread_cond_t wake;        /* signalled to stop */
	pthread_t thread;
	bool stopping;              /* under lock */
	int64_t timeout_ms;
	int64_t tick_ms;
	struct reaper_conn *head;   /* under lock */
	atomic_uint_fast64_t reaped;
};

static void reap_expired(struct reaper *r, int64_t now)
{
	for (struct reaper_conn *c = r->head; c; c = c->next) {
		int64_t d = atomic_load(&c->deadline_ms);

		if (!d || d > now)
			continue;
		if (!atomic_compare_exchange_strong(&c->deadline_ms, &d, 0))
			continue; /* re-armed or disarmed meanwhile */
		/* ENOTCONN: the peer is gone already; libmicrohttpd will see it. */
		/* Counted first: whoever sees the EOF must also see the count. */
		atomic_fetch_add(&r->reaped, 1);
		shutdown(c->fd, SHUT_RDWR);
	}
}

static void *reaper_main(void *arg)
{
	struct reaper *r = arg;

	pthread_mutex_lock(&r->lock);
	while (!r->stopping) {
		struct timespec until;

		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += r->tick_ms / 1000;
		until.tv_nsec += (r->tick_ms % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&r->wake, &r->lock, &until);
		if (!r->stopping)
			reap_expired(r, clock_mono_ms());
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

enum st_rc reaper_new(int64_t timeout_ms, struct reaper **out)
{
	struct reaper *r = calloc(1, sizeof(*r));
	pthread_condattr_t ca;
	int err;

	if (!r)
		return ST_NOMEM;
	r->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
	r->tick_ms = r->timeout_ms / 4 < REAPER_TICK_MS ? r->timeout_ms / 4 : REAPER_TICK_MS;
	if (r->tick_ms < 10)
		r->tick_ms = 10;
	atomic_init(&r->reaped, 0);
	if (pthread_mutex_init(&r->lock, NULL)) {
		free(r);
		return ST_INTERNAL;
	}
	/* The wait is timed against CLOCK_MONOTONIC: a wall-clock step must
	 * not stall or rush the reaper. */
	if (pthread_condattr_init(&ca))
		goto out_mutex;
	err = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) || pthread_cond_init(&r->wake, &ca);
	pthread_condattr_destroy(&ca);
	if (err)
		goto out_mutex;
	if (pthread_create(&r->thread, NULL, reaper_main, r)) {
		pthread_cond_destroy(&r->wake);
		goto out_mutex;
	}
	*out = r;
	return ST_OK;
out_mutex:
	pthread_mutex_destroy(&r->lock);
	free(r);
	return ST_INTERNAL;
}

void reaper_free(struct reaper *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	pthread_cond_signal(&r->wake);
	pthread_mutex_unlock(&r->lock);
	pthread_join(r->thread, NULL);
	while (r->head) {
		struct reaper_conn *c = r->head;

		r->head = c->next;
		free(c);
	}
	pthread_cond_destroy(&r->wake);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

struct reaper_conn *reaper_watch(struct reaper *r, int fd)
{
	struct reaper_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->fd = fd;
	c->owner = r;
	atomic_init(&c->deadline_ms, clock_mono_ms() + r->timeout_ms);
	pthread_mutex_lock(&r->lock);
	c->next = r->head;
	if (r->head)
		r->head->prev = c;
	r->head = c;
	pthread_mutex_unlock(&r->lock);
	return c;
}

void reaper_unwatch(struct reaper *r, struct reaper_conn *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&r->lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		r->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&r->lock);
	free(c);
}

void reaper_arm(struct reaper_conn *c)
{
	if (c)
		atomic_store(&c->deadline_ms, clock_mono_ms() + c->owner->timeout_ms);
}

void reaper_disarm(struct reaper_conn *c)
{
	if (c)
		atomic_store(&c->deadline_ms, 0);
}

uint64_t reaper_reaped(const struct reaper *r)
{
	return atomic_load(&r->reaped);
}

/* test_reaper.c — the request deadline (src/reaper.h) on socketpairs: an
 * armed connection past its deadline is shut down (the peer reads EOF), a
 * disarmed or re-armed one is left alone, and unwatching is safe at any
 * time. Timeouts are short (200 ms; 1 s for re-arming), so the suite takes
 * a few seconds. No check depends on how soon a thread runs: see each test. */
#include <criterion/criterion.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "reaper.h"

#include "banned.h"

#define TIMEOUT_MS 200
/* How long a test waits for a shutdown that must come: a guard against a
 * reaper that never acts, not a bound on how soon it does (a loaded
 * machine can keep the reaper thread off the CPU for a long while). */
#define EOF_WAIT_MS 30000

static struct reaper *r;

static void setup(void)
{
	cr_assert_eq(reaper_new(TIMEOUT_MS, &r), ST_OK);
}

static void teardown(void)
{
	reaper_free(r);
	r = NULL;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static double mono_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Whether the peer end sees EOF (the watched end was shut down) within ms. */
static bool peer_sees_eof(int peer, int ms)
{
	struct pollfd p = { .fd = peer, .events = POLLIN };
	char c;

	if (poll(&p, 1, ms) <= 0)
		return false;
	return read(peer, &c, 1) == 0;
}

/* Not before the deadline: an EOF seen while less than TIMEOUT_MS has
 * passed since the watch is a failure; one seen later (this thread was
 * descheduled past the deadline) is the reaper doing its job. The deadline
 * is clock_mono_ms() + TIMEOUT_MS at the watch, whole ms: 1 ms of slack. */
Test(reaper, armed_connection_is_shut_down_after_the_deadline, .init = setup, .fini = teardown)
{
	int sv[2];
	struct reaper_conn *c;
	double t0;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	t0 = mono_ms();
	c = reaper_watch(r, sv[0]);
	cr_assert_not_null(c);
	if (peer_sees_eof(sv[1], TIMEOUT_MS / 2))
		cr_assert_geq(mono_ms() - t0, TIMEOUT_MS - 1, "shut down before the deadline");
	cr_assert(peer_sees_eof(sv[1], EOF_WAIT_MS), "not shut down after the deadline");
	cr_assert_eq(reaper_reaped(r), 1);
	reaper_unwatch(r, c);
	close(sv[0]);
	close(sv[1]);
}

Test(reaper, disarmed_connection_is_left_alone, .init = setup, .fini = teardown)
{
	int sv[2];
	struct reaper_conn *c;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	c = reaper_watch(r, sv[0]);
	reaper_disarm(c);
	cr_assert_not(peer_sees_eof(sv[1], TIMEOUT_MS * 3));
	cr_assert_eq(reaper_reaped(r), 0);
	/* Armed again: a full timeout from now. */
	reaper_arm(c);
	cr_assert(peer_sees_eof(sv[1], EOF_WAIT_MS));
	reaper_unwatch(r, c);
	close(sv[0]);
	close(sv[1]);
}

/* Re-armed every 100 ms for 1.5 s on a reaper of 1 s: never shut down,
 * though the connection lived past its first deadline. That holds only
 * while each re-arm comes within the timeout of the one before (measured
 * from before the earlier call to after the later one, and from the last
 * to the check); a run this thread was descheduled through for that long
 * may rightly be shut down, proves nothing, and is made again. The long
 * timeout (its own reaper) leaves 0.9 s of room for descheduling. */
Test(reaper, rearming_pushes_the_deadline_back, .timeout = 120)
{
	enum { REARM_TIMEOUT_MS = 1000, REARM_EVERY_MS = 100, REARMS = 15 };
	struct reaper *rr = NULL;

	cr_assert_eq(reaper_new(REARM_TIMEOUT_MS, &rr), ST_OK);
	for (int attempt = 0;; attempt++) {
		int sv[2];
		struct reaper_conn *c;
		uint64_t reaped0 = reaper_reaped(rr);
		double armed_at, longest = 0, t;
		bool eof;

		cr_assert_lt(attempt, 20, "20 runs each descheduled past the timeout");
		cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		armed_at = mono_ms();
		c = reaper_watch(rr, sv[0]);
		for (int i = 0; i < REARMS; i++) {
			sleep_ms(REARM_EVERY_MS);
			t = mono_ms();
			reaper_arm(c);
			if (mono_ms() - armed_at > longest)
				longest = mono_ms() - armed_at;
			armed_at = t;
		}
		eof = peer_sees_eof(sv[1], 0);
		if (mono_ms() - armed_at > longest)
			longest = mono_ms() - armed_at;
		reaper_unwatch(rr, c);
		close(sv[0]);
		close(sv[1]);
		if (longest < REARM_TIMEOUT_MS - 1) {
			cr_assert_not(eof, "re-armed connection was shut down");
			cr_assert_eq(reaper_reaped(rr), reaped0);
			break;
		}
	}
	reaper_free(rr);
}

Test(reaper, many_connections_and_unwatch_in_any_order, .init = setup, .fini = teardown)
{
	enum { N = 64 };
	int sv[N][2];
	struct reaper_conn *c[N];

	for (int i = 0; i < N; i++) {
		cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv[i]), 0);
		c[i] = reaper_watch(r, sv[i][0]);
		if (i % 2)
			reaper_disarm(c[i]);
	}
	/* Unwatch a third of them (head, middle, tail) before the deadline. */
	for (int i = 0; i < N; i += 3) {
		reaper_unwatch(r, c[i]);
		c[i] = NULL;
	}
	/* The armed ones still watched are shut down (waited for), then none
	 * of the others is (they never will be: disarmed or unwatched). */
	for (int i = 0; i < N; i++)
		if (c[i] && !(i % 2))
			cr_assert(peer_sees_eof(sv[i][1], EOF_WAIT_MS), "connection %d", i);
	for (int i = 0; i < N; i++) {
		if (!(c[i] && !(i % 2)))
			cr_assert_not(peer_sees_eof(sv[i][1], 0), "connection %d", i);
		reaper_unwatch(r, c[i]);
		close(sv[i][0]);
		close(sv[i][1]);
	}
}

Test(reaper, null_is_accepted_everywhere)
{
	reaper_arm(NULL);
	reaper_disarm(NULL);
	reaper_free(NULL);
}

Test(reaper, free_releases_connections_still_watched, .init = setup)
{
	int sv[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	cr_assert_not_null(reaper_watch(r, sv[0]));
	reaper_free(r); /* ASan (make asan) reports the node if it leaks */
	r = NULL;
	close(sv[0]);
	close(sv[1]);
}

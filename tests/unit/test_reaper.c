/* test_reaper.c — the request deadline (src/reaper.h) on socketpairs: an
 * armed connection past its deadline is shut down (the peer reads EOF), a
 * disarmed or re-armed one is left alone, and unwatching is safe at any
 * time. Timeouts are short (200 ms), so the suite takes about a second. */
#include <criterion/criterion.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "reaper.h"

#include "banned.h"

#define TIMEOUT_MS 200

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

/* Whether the peer end sees EOF (the watched end was shut down) within ms. */
static bool peer_sees_eof(int peer, int ms)
{
	struct pollfd p = { .fd = peer, .events = POLLIN };
	char c;

	if (poll(&p, 1, ms) <= 0)
		return false;
	return read(peer, &c, 1) == 0;
}

Test(reaper, armed_connection_is_shut_down_after_the_deadline, .init = setup, .fini = teardown)
{
	int sv[2];
	struct reaper_conn *c;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	c = reaper_watch(r, sv[0]);
	cr_assert_not_null(c);
	cr_assert_not(peer_sees_eof(sv[1], TIMEOUT_MS / 2), "shut down before the deadline");
	cr_assert(peer_sees_eof(sv[1], TIMEOUT_MS * 3), "not shut down after the deadline");
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
	cr_assert(peer_sees_eof(sv[1], TIMEOUT_MS * 3));
	reaper_unwatch(r, c);
	close(sv[0]);
	close(sv[1]);
}

Test(reaper, rearming_pushes_the_deadline_back, .init = setup, .fini = teardown)
{
	int sv[2];
	struct reaper_conn *c;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	c = reaper_watch(r, sv[0]);
	for (int i = 0; i < 6; i++) {
		sleep_ms(TIMEOUT_MS / 2);
		reaper_arm(c);
	}
	cr_assert_not(peer_sees_eof(sv[1], 0), "re-armed connection was shut down");
	cr_assert_eq(reaper_reaped(r), 0);
	reaper_unwatch(r, c);
	close(sv[0]);
	close(sv[1]);
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
	sleep_ms(TIMEOUT_MS * 3);
	for (int i = 0; i < N; i++) {
		bool expect = c[i] && !(i % 2);

		cr_assert_eq(peer_sees_eof(sv[i][1], 0), expect, "connection %d", i);
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

/* clock.h — the two clocks and time formatting shared by responses and logs.
 *
 * Durations (deadlines, backoff, lease and fault ages) are measured on the
 * monotonic clock, never on the wall clock, so a clock stepped by an
 * operator or NTP cannot stretch or cut them. */
#ifndef SETTLED_CLOCK_H
#define SETTLED_CLOCK_H

#include <stdint.h>

#define RFC3339_LEN 32

/* Milliseconds on CLOCK_MONOTONIC (an arbitrary origin): for durations only. */
int64_t clock_mono_ms(void);
/* Microseconds on the same clock: for waits shorter than a millisecond
 * matters (the PostgreSQL writers' gathering). */
int64_t clock_mono_us(void);
/* The system's wall clock, ms since the epoch (log lines, the skew check). */
int64_t clock_wall_ms(void);

/* The server's clock: the wall clock read once at start, advanced by the
 * monotonic clock. Every deadline settled stores is a wall time (a hold's
 * expiry, a job's run_at, an idempotency key's expiry, a rate limit's
 * TAT) but means a duration from when it was set, so a step of the system
 * clock (an operator, a VM resumed, NTP stepping) must not move them: a
 * step forward of an hour would expire idempotency keys early and let a
 * retry run twice; a step back would hold every retry for an hour. NTP's
 * gradual slewing reaches the monotonic clock too, so the anchor tracks the
 * true time; only steps are ignored until the next start, and the ticker
 * exports and logs the gap (settled_clock_step_seconds). */
struct clock_anchor {
	int64_t wall0_ns;
	int64_t mono0_ns;
};
void clock_anchor_init(struct clock_anchor *a);
/* Now on the anchored clock; takes the anchor as void * so that it fits the
 * store's and the server's clock hooks. */
int64_t clock_anchor_now_ms(void *anchor);

/* Formats ms since the epoch as RFC 3339 UTC with milliseconds
 * ("2026-11-25T18:55:28.123Z") into out (RFC3339_LEN bytes). */
void format_rfc3339(int64_t ms, char out[RFC3339_LEN]);

#endif

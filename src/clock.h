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

/* Formats ms since the epoch as RFC 3339 UTC with milliseconds
 * ("2026-11-25T18:55:28.123Z") into out (RFC3339_LEN bytes). */
void format_rfc3339(int64_t ms, char out[RFC3339_LEN]);

#endif

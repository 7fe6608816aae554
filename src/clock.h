/* clock.h — time formatting shared by responses and logs. */
#ifndef SETTLED_CLOCK_H
#define SETTLED_CLOCK_H

#include <stdint.h>

#define RFC3339_LEN 32

/* Formats ms since the epoch as RFC 3339 UTC with milliseconds
 * ("2026-11-25T18:55:28.123Z") into out (RFC3339_LEN bytes). */
void format_rfc3339(int64_t ms, char out[RFC3339_LEN]);

#endif

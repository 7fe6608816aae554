/* clock.c — see clock.h. */
#include "clock.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "banned.h"

void format_rfc3339(int64_t ms, char out[RFC3339_LEN])
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	size_t n;

	if (ms < 0 || !gmtime_r(&secs, &tm)) {
		snprintf(out, RFC3339_LEN, "1970-01-01T00:00:00.000Z");
		return;
	}
	n = strftime(out, RFC3339_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, RFC3339_LEN - n, ".%03dZ", (int)(ms % 1000));
}

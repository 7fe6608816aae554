/* clock.c — see clock.h. */
#include "clock.h"

#include <string.h>
#include <time.h>

#include "banned.h"

/* n as exactly width digits (zero-padded) at p; returns the end. */
static char *put_digits(char *p, unsigned n, int width)
{
	for (int i = width - 1; i >= 0; i--) {
		p[i] = (char)('0' + n % 10);
		n /= 10;
	}
	return p + width;
}

/* By hand rather than strftime + snprintf: every response body with a
 * timestamp and every log line formats one (fmt.h says why). */
void format_rfc3339(int64_t ms, char out[RFC3339_LEN])
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	char *p = out;

	if (ms < 0 || !gmtime_r(&secs, &tm) || tm.tm_year + 1900 > 9999) {
		memcpy(out, "1970-01-01T00:00:00.000Z", sizeof("1970-01-01T00:00:00.000Z"));
		return;
	}
	p = put_digits(p, (unsigned)(tm.tm_year + 1900), 4);
	*p++ = '-';
	p = put_digits(p, (unsigned)tm.tm_mon + 1, 2);
	*p++ = '-';
	p = put_digits(p, (unsigned)tm.tm_mday, 2);
	*p++ = 'T';
	p = put_digits(p, (unsigned)tm.tm_hour, 2);
	*p++ = ':';
	p = put_digits(p, (unsigned)tm.tm_min, 2);
	*p++ = ':';
	p = put_digits(p, (unsigned)tm.tm_sec, 2);
	*p++ = '.';
	p = put_digits(p, (unsigned)(ms % 1000), 3);
	*p++ = 'Z';
	*p = '\0';
}

/* clock.c — see clock.h. */
#include "clock.h"

#include <string.h>
#include <time.h>

#include "fmt.h"
#include "banned.h"

/* By hand rather than gmtime_r + strftime + snprintf: every log line and
 * every response body with a timestamp formats one (fmt.h says why), and
 * gmtime_r takes glibc's time-zone lock. The date comes from the day
 * number (H. Hinnant's civil_from_days). */
void format_rfc3339(int64_t ms, char out[RFC3339_LEN])
{
	static const char epoch[] = "1970-01-01T00:00:00.000Z";
	int64_t days = ms / 86400000, msod = ms % 86400000;
	int64_t z, era, doe, yoe, y, doy, mp, d, m;

	/* Before 1970 or after 9999 does not happen with a sane clock. */
	if (ms < 0 || days > 2932896) {
		memcpy(out, epoch, sizeof(epoch));
		return;
	}
	z = days + 719468;
	era = z / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	d = doy - (153 * mp + 2) / 5 + 1;
	m = mp < 10 ? mp + 3 : mp - 9;
	y = yoe + era * 400 + (m <= 2);
	fmt_pad(out, (uint64_t)y, 4);
	out[4] = '-';
	fmt_2(out + 5, (unsigned)m);
	out[7] = '-';
	fmt_2(out + 8, (unsigned)d);
	out[10] = 'T';
	fmt_2(out + 11, (unsigned)(msod / 3600000));
	out[13] = ':';
	fmt_2(out + 14, (unsigned)(msod / 60000 % 60));
	out[16] = ':';
	fmt_2(out + 17, (unsigned)(msod / 1000 % 60));
	out[19] = '.';
	fmt_pad(out + 20, (uint64_t)(msod % 1000), 3);
	out[23] = 'Z';
	out[24] = '\0';
}

int64_t clock_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t clock_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t ns_of(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* The anchor pairs one reading of each clock. Read between two monotonic
 * readings, the wall reading belongs to their midpoint to within half their
 * gap; the best of a few tries keeps that under a microsecond unless the
 * thread is preempted every time. Instances on one host then agree on the
 * time as closely as the system clock itself does (their rate limits share
 * Redis state keyed on it). */
void clock_anchor_init(struct clock_anchor *a)
{
	int64_t best_gap = INT64_MAX;

	for (int i = 0; i < 16; i++) {
		struct timespec m1, w, m2;

		clock_gettime(CLOCK_MONOTONIC, &m1);
		clock_gettime(CLOCK_REALTIME, &w);
		clock_gettime(CLOCK_MONOTONIC, &m2);
		if (ns_of(&m2) - ns_of(&m1) < best_gap) {
			best_gap = ns_of(&m2) - ns_of(&m1);
			a->wall0_ns = ns_of(&w);
			a->mono0_ns = ns_of(&m1) + best_gap / 2;
		}
	}
}

int64_t clock_anchor_now_ms(void *anchor)
{
	const struct clock_anchor *a = anchor;
	struct timespec m;

	clock_gettime(CLOCK_MONOTONIC, &m);
	return (a->wall0_ns + (ns_of(&m) - a->mono0_ns)) / 1000000;
}

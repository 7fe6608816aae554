/* faultsim.c — allocation failures on demand, for the faultsim build
 * (make faultsim; tests/integration/test_faultsim.py).
 *
 * In the way of SQLite's faultsim: linked into a test build of settled with
 * -Wl,--wrap=malloc,... so that every allocation settled's own code makes
 * goes through here (libraries' internal allocations do not: the point is
 * settled's handling of a NULL, not glibc's). Armed by SIGUSR2 with the
 * number read from the file named by SETTLED_FAULTSIM_FILE: "N SEQ" makes
 * the N-th allocation after arming fail (once; later ones succeed again),
 * "0 SEQ" disarms. Each SIGUSR2 writes what was left of the previous
 * countdown and SEQ to that file + ".left" (left 0: the fault was
 * injected), so the test knows when the new countdown is in force and when
 * N has passed the last allocation of what it walks. The test walks N over 1, 2, 3 ... for each kind of request and
 * job, and checks that each failure gives a clean answer and leaves nothing
 * half done. Counted across all threads: what a request's allocations are
 * interleaved with (the ticker, workers) is part of what is walked.
 *
 * The state is process-global on purpose: it is a test harness wrapped
 * around the whole program, not part of it. */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static _Atomic long faultsim_countdown;   /* > 0: fail when it reaches 0 */

static int faultsim_fail(void)
{
	long left = atomic_load(&faultsim_countdown);

	while (left > 0) {
		if (atomic_compare_exchange_weak(&faultsim_countdown, &left, left - 1)) {
			return left == 1;
		}
	}
	return 0;
}

static void faultsim_arm(int sig)
{
	const char *path = getenv("SETTLED_FAULTSIM_FILE");
	char line[64] = "", left_path[4096];
	long left;
	FILE *f;

	(void)sig;
	/* Not async-signal-safe in general; the test sends SIGUSR2 only while
	 * the server is idle, and fopen/fgets here allocate through the real
	 * malloc (glibc's own calls are not wrapped). */
	if (!path)
		return;
	snprintf(left_path, sizeof(left_path), "%s.left", path);
	long n = 0, seq = 0;
	char *end;

	if ((f = fopen(path, "r"))) {
		if (fgets(line, sizeof(line), f)) {
			n = strtol(line, &end, 10);
			seq = strtol(end, NULL, 10);
		}
		fclose(f);
	}
	/* What was left, then the request's sequence number: the test waits
	 * for its number, so it knows the new countdown is in force. */
	left = atomic_exchange(&faultsim_countdown, n);
	if ((f = fopen(left_path, "w"))) {
		fprintf(f, "%ld %ld\n", left, seq);
		fclose(f);
	}
}

__attribute__((constructor)) static void faultsim_init(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = faultsim_arm;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR2, &sa, NULL);
}

void *__wrap_malloc(size_t n)
{
	return faultsim_fail() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n)
{
	return faultsim_fail() ? NULL : __real_calloc(k, n);
}

void *__wrap_realloc(void *p, size_t n)
{
	return faultsim_fail() ? NULL : __real_realloc(p, n);
}

void *__wrap_aligned_alloc(size_t a, size_t n)
{
	return faultsim_fail() ? NULL : __real_aligned_alloc(a, n);
}

char *__wrap_strdup(const char *s)
{
	return faultsim_fail() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
	return faultsim_fail() ? NULL : __real_strndup(s, n);
}

/* test_jobguard.c — the crash guard's file (src/jobguard.h): what a valid
 * file says, that a short, torn, foreign or garbage one never names a job,
 * that marks written in the mapping survive the process that wrote them
 * (it dies without closing), and that a clean close leaves nothing. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jobguard.h"

#define SPAWN_ROLES jobguard_helper
#include "spawn_fixture.h"

#define FILE_MAX (JOBGUARD_HEADER + JOBGUARD_SLOTS_MAX * JOBGUARD_SLOT)

static unsigned char file[FILE_MAX];

/* A file of nslots slots; marks[i] goes in slot at[i]. Returns its size. */
static size_t make_file(unsigned nslots, const struct jobguard_mark *marks, const unsigned *at, int n)
{
	memset(file, 0, sizeof(file));
	jobguard_header(file, nslots);
	for (int i = 0; i < n; i++)
		jobguard_slot_bytes(file + JOBGUARD_HEADER + at[i] * JOBGUARD_SLOT, at[i], &marks[i]);
	return JOBGUARD_HEADER + (size_t)nslots * JOBGUARD_SLOT;
}

static const struct jobguard_mark m1 = { .id = 42, .updated_at = 1765000000123, .attempts = 0 };
static const struct jobguard_mark m2 = { .id = 7, .updated_at = 1765000000456, .attempts = 5 };

Test(jobguard_parse, reads_the_marks_of_a_valid_file)
{
	struct jobguard_mark marks[2] = { m1, m2 }, out[8];
	unsigned at[2] = { 0, 3 };
	size_t len = make_file(4, marks, at, 2);
	int invalid = -1;
	int n = jobguard_parse(file, len, out, 8, &invalid);

	cr_assert_eq(n, 2);
	cr_assert_eq(invalid, 0);
	cr_assert_eq(out[0].id, 42);
	cr_assert_eq(out[0].updated_at, m1.updated_at);
	cr_assert_eq(out[0].attempts, 0);
	cr_assert_eq(out[1].id, 7);
	cr_assert_eq(out[1].attempts, 5);
	/* out is bounded by max */
	cr_assert_eq(jobguard_parse(file, len, out, 1, NULL), 1);
}

Test(jobguard_parse, an_empty_or_short_file_names_nothing)
{
	struct jobguard_mark out[4];
	size_t len = make_file(4, &m1, (unsigned[]){ 1 }, 1);

	cr_assert_eq(jobguard_parse(NULL, 0, out, 4, NULL), 0);
	cr_assert_eq(jobguard_parse(file, 0, out, 4, NULL), 0);
	for (size_t cut = 1; cut < JOBGUARD_HEADER; cut++)
		cr_assert_eq(jobguard_parse(file, cut, out, 4, NULL), 0, "cut at %zu", cut);
	cr_assert_eq(jobguard_parse(file, len, out, 4, NULL), 1);
}

Test(jobguard_parse, a_truncated_slot_is_ignored_and_counted_invalid)
{
	struct jobguard_mark marks[2] = { m1, m2 }, out[4];
	unsigned at[2] = { 0, 1 };
	size_t len = make_file(2, marks, at, 2);
	int invalid = 0;

	/* Every cut inside slot 1 keeps slot 0 and drops slot 1. */
	for (size_t cut = JOBGUARD_HEADER + JOBGUARD_SLOT; cut < len; cut++) {
		int n = jobguard_parse(file, cut, out, 4, &invalid);

		cr_assert_eq(n, 1, "cut at %zu", cut);
		cr_assert_eq(out[0].id, m1.id);
		cr_assert_eq(invalid, cut > JOBGUARD_HEADER + JOBGUARD_SLOT, "cut at %zu", cut);
	}
}

Test(jobguard_parse, a_foreign_header_names_nothing)
{
	struct jobguard_mark out[4];
	size_t len;

	len = make_file(4, &m1, (unsigned[]){ 0 }, 1);
	file[0] ^= 1; /* magic */
	cr_assert_eq(jobguard_parse(file, len, out, 4, NULL), 0);

	len = make_file(4, &m1, (unsigned[]){ 0 }, 1);
	file[16] = 2; /* version 2 */
	cr_assert_eq(jobguard_parse(file, len, out, 4, NULL), 0);

	len = make_file(4, &m1, (unsigned[]){ 0 }, 1);
	file[20] = 64; /* slot size */
	cr_assert_eq(jobguard_parse(file, len, out, 4, NULL), 0);

	len = make_file(4, &m1, (unsigned[]){ 0 }, 1);
	file[24] = 5; /* slot count not what the header's check says */
	cr_assert_eq(jobguard_parse(file, len, out, 4, NULL), 0);

	len = make_file(4, &m1, (unsigned[]){ 0 }, 1);
	file[33] ^= 0x10; /* the header's check */
	cr_assert_eq(jobguard_parse(file, len, out, 4, NULL), 0);

	/* more slots than a guard ever has, with a matching check */
	memset(file, 0, sizeof(file));
	jobguard_header(file, JOBGUARD_SLOTS_MAX + 1);
	cr_assert_eq(jobguard_parse(file, sizeof(file), out, 4, NULL), 0);
}

Test(jobguard_parse, a_torn_or_moved_slot_is_ignored)
{
	struct jobguard_mark out[4], neg = m1;
	size_t len;
	int invalid = 0;

	/* Each byte of the slot changed alone: its check no longer matches
	 * (a process killed in the middle of writing it). */
	for (unsigned b = 0; b < JOBGUARD_SLOT; b++) {
		len = make_file(2, &m1, (unsigned[]){ 1 }, 1);
		file[JOBGUARD_HEADER + JOBGUARD_SLOT + b] ^= 0x01;
		cr_assert_eq(jobguard_parse(file, len, out, 4, &invalid), 0, "byte %u", b);
		cr_assert_eq(invalid, 1, "byte %u", b);
	}
	/* A slot's bytes copied to another index fail its check there. */
	len = make_file(2, &m1, (unsigned[]){ 1 }, 1);
	memcpy(file + JOBGUARD_HEADER, file + JOBGUARD_HEADER + JOBGUARD_SLOT, JOBGUARD_SLOT);
	memset(file + JOBGUARD_HEADER + JOBGUARD_SLOT, 0, JOBGUARD_SLOT);
	cr_assert_eq(jobguard_parse(file, len, out, 4, &invalid), 0);
	cr_assert_eq(invalid, 1);
	/* Values no job has, even with their check right. */
	neg.id = -3;
	len = make_file(2, &neg, (unsigned[]){ 0 }, 1);
	cr_assert_eq(jobguard_parse(file, len, out, 4, &invalid), 0);
	neg = m1;
	neg.attempts = -1;
	len = make_file(2, &neg, (unsigned[]){ 0 }, 1);
	cr_assert_eq(jobguard_parse(file, len, out, 4, &invalid), 0);
	neg = m1;
	neg.updated_at = 0;
	len = make_file(2, &neg, (unsigned[]){ 0 }, 1);
	cr_assert_eq(jobguard_parse(file, len, out, 4, &invalid), 0);
}

Test(jobguard_parse, garbage_slots_name_nothing)
{
	struct jobguard_mark out[64];
	unsigned seed = 12345;

	/* A valid header over random slots (a file overwritten by something
	 * else): not one mark in 1,000 files of 64 slots. */
	for (int round = 0; round < 1000; round++) {
		size_t len = make_file(64, NULL, NULL, 0);
		int invalid = 0;

		for (size_t b = JOBGUARD_HEADER; b < len; b++)
			file[b] = (unsigned char)rand_r(&seed);
		cr_assert_eq(jobguard_parse(file, len, out, 64, &invalid), 0);
		cr_assert_eq(invalid, 64);
	}
}

/* ---- the file ---- */

static char dir[64], db[128], guard[160];

static void setup(void)
{
	char *real;

	snprintf(dir, sizeof(dir), "/tmp/settled-jobguard-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	/* The guard sits by the real file (a /tmp that is a symlink too). */
	real = realpath(dir, NULL);
	cr_assert_not_null(real);
	cr_assert_lt(strlen(real), sizeof(dir));
	snprintf(dir, sizeof(dir), "%s", real);
	free(real);
	snprintf(db, sizeof(db), "%s/settled.db", dir);
	snprintf(guard, sizeof(guard), "%s%s", db, JOBGUARD_SUFFIX);
}

static void teardown(void)
{
	unlink(guard);
	rmdir(dir);
}

static size_t read_guard(void)
{
	int fd = open(guard, O_RDONLY);
	ssize_t n;

	cr_assert_geq(fd, 0);
	n = read(fd, file, sizeof(file));
	close(fd);
	cr_assert_geq(n, 0);
	return (size_t)n;
}

/* The second processes of the tests below (spawn_fixture.h: a fork would
 * run this code in a child of a threaded process). args[0] is the db. */
static int jobguard_helper(const char *role, char **args, int nargs)
{
	struct buf err = BUF_INIT(512);
	struct jobguard *g = NULL;

	if (nargs != 1)
		return 10;
	if (!strcmp(role, "mark-and-die")) {
		/* A process that marks jobs and dies without closing. */
		if (jobguard_open(args[0], &g, &err) || jobguard_arm(g, 4, &err))
			return 2;
		jobguard_mark(g, 0, 11, 0, 1000);
		jobguard_mark(g, 1, 12, 1, 2000);
		jobguard_clear(g, 1);      /* finished */
		jobguard_mark(g, 2, 13, 2, 3000);
		jobguard_mark(g, 2, 14, 3, 4000); /* the next job in the same slot */
		jobguard_mark(g, 9, 99, 0, 1); /* out of range: nothing */
		kill(getpid(), SIGKILL);       /* as the OOM killer would: no exit path runs */
		return 3;
	}
	if (!strcmp(role, "open-refused")) {
		int rc = jobguard_open(args[0], &g, &err) == ST_CONFLICT && !g ? 0 : 1;

		buf_release(&err);
		return rc;
	}
	return 11;
}

Test(jobguard_file, marks_outlive_a_process_that_dies_and_a_clean_close_leaves_none,
     .init = setup, .fini = teardown)
{
	struct buf err = BUF_INIT(512);
	struct jobguard *g = NULL;
	const struct jobguard_mark *prev;
	struct jobguard_mark out[8];
	int n = -1, invalid = -1, status = 0;
	pid_t pid = spawn_self("mark-and-die", (const char *[]){ db, NULL });

	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status %d", status);

	cr_assert_eq(jobguard_open(db, &g, &err), ST_OK, "%s", err.ptr);
	prev = jobguard_previous(g, &n, &invalid);
	cr_assert_eq(n, 2);
	cr_assert_eq(invalid, 0);
	cr_assert_eq(prev[0].id, 11);
	cr_assert_eq(prev[0].updated_at, 1000);
	cr_assert_eq(prev[1].id, 14);
	cr_assert_eq(prev[1].attempts, 3);
	cr_assert_eq(prev[1].updated_at, 4000);

	/* Armed: the previous marks are gone from the file. */
	cr_assert_eq(jobguard_arm(g, 2, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(jobguard_parse(file, read_guard(), out, 8, NULL), 0);
	jobguard_mark(g, 1, 21, 0, 5000);
	cr_assert_eq(jobguard_parse(file, read_guard(), out, 8, NULL), 1);
	cr_assert_eq(out[0].id, 21);

	/* Closed cleanly: an empty file, nothing for the next start. */
	jobguard_close(g);
	cr_assert_eq(read_guard(), 0);
	cr_assert_eq(jobguard_open(db, &g, &err), ST_OK, "%s", err.ptr);
	jobguard_previous(g, &n, NULL);
	cr_assert_eq(n, 0);
	jobguard_close(g);
	buf_release(&err);
}

Test(jobguard_file, a_second_process_finds_it_locked, .init = setup, .fini = teardown)
{
	struct buf err = BUF_INIT(512);
	struct jobguard *g = NULL;
	int status = 0;
	pid_t pid;

	cr_assert_eq(jobguard_open(db, &g, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(jobguard_arm(g, 1, &err), ST_OK, "%s", err.ptr);
	jobguard_mark(g, 0, 5, 0, 100);
	pid = spawn_self("open-refused", (const char *[]){ db, NULL });
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
	/* The refused open changed nothing. */
	cr_assert_eq(jobguard_parse(file, read_guard(), (struct jobguard_mark[1]){ { 0 } }, 1, NULL), 1);
	jobguard_close(g);
	buf_release(&err);
}

/* Named as the store's lock, -wal and -shm are (storelock.h): by the
 * database's real file. Through a symlink (in another directory) or a
 * relative path it is the same file, so one guard a store, locked once. */
Test(jobguard_file, a_symlinked_or_relative_db_names_the_real_files_guard, .init = setup,
     .fini = teardown)
{
	struct buf err = BUF_INIT(512);
	struct jobguard *g = NULL, *other = NULL;
	char links[96], alias[128], by_alias[160], cwd[PATH_MAX];

	snprintf(links, sizeof(links), "%s/links", dir);
	cr_assert_eq(mkdir(links, 0700), 0);
	snprintf(alias, sizeof(alias), "%s/alias.db", links);
	snprintf(by_alias, sizeof(by_alias), "%s%s", alias, JOBGUARD_SUFFIX);
	close(open(db, O_RDWR | O_CREAT, 0600)); /* the store exists (the server opens it first) */
	cr_assert_eq(symlink(db, alias), 0);

	cr_assert_eq(jobguard_open(alias, &g, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(access(guard, F_OK), 0, "no guard by the real file");
	cr_assert_neq(access(by_alias, F_OK), 0, "a guard by the link");
	cr_assert_eq(jobguard_arm(g, 1, &err), ST_OK, "%s", err.ptr);
	jobguard_mark(g, 0, 9, 1, 200);
	/* The real path and a relative one name the same, locked, file. */
	cr_assert_eq(jobguard_open(db, &other, &err), ST_CONFLICT, "%s", err.ptr);
	cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
	cr_assert_eq(chdir(links), 0);
	buf_reset(&err);
	cr_assert_eq(jobguard_open("../settled.db", &other, &err), ST_CONFLICT, "%s", err.ptr);
	cr_assert_eq(chdir(cwd), 0);
	/* What one path marked, another reads (the next start). */
	cr_assert_eq(jobguard_parse(file, read_guard(), (struct jobguard_mark[1]){ { 0 } }, 1, NULL), 1);
	unlink(alias);
	rmdir(links);
	unlink(db);
	buf_release(&err);
	jobguard_close(g);
}

Test(jobguard_file, garbage_in_the_file_is_read_as_nothing_and_replaced,
     .init = setup, .fini = teardown)
{
	struct buf err = BUF_INIT(512);
	struct jobguard *g = NULL;
	struct jobguard_mark out[2];
	int fd = open(guard, O_WRONLY | O_CREAT | O_TRUNC, 0600), n = -1;
	static const char junk[] = "not a guard file at all, but long enough to be read as one...";

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	cr_assert_eq(jobguard_open(db, &g, &err), ST_OK, "%s", err.ptr);
	jobguard_previous(g, &n, NULL);
	cr_assert_eq(n, 0);
	cr_assert_eq(jobguard_arm(g, 3, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(read_guard(), JOBGUARD_HEADER + 3 * JOBGUARD_SLOT);
	cr_assert_eq(jobguard_parse(file, JOBGUARD_HEADER + 3 * JOBGUARD_SLOT, out, 2, NULL), 0);
	/* arming twice, or with no slot, is refused */
	cr_assert_eq(jobguard_arm(g, 3, &err), ST_INVALID);
	jobguard_close(g);
	buf_release(&err);
}

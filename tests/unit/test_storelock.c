/* test_storelock.c — the embedded store's process lock (src/storelock.h):
 * a second taker is refused with the holder's name, whatever path it
 * names the store by; a holder killed with SIGKILL leaves no stale lock;
 * closing another descriptor of the lock file does not drop it (the
 * reason for flock over POSIX locks); a file the taker may only read
 * still locks; a store without a file needs no lock. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storelock.h"

#define SPAWN_ROLES storelock_helper
#include "spawn_fixture.h"

static char dir[64], db[128];

static void make_dir(void)
{
	snprintf(dir, sizeof(dir), "/tmp/settled-storelock-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(db, sizeof(db), "%s/settled.db", dir);
}

/* Each test's .fini: its directory goes (files only, no subdirectories). */
static void remove_dir(void)
{
	char path[400];
	struct dirent *e;
	DIR *d;

	if (!dir[0] || !(d = opendir(dir)))
		return;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			unlink(path);
		}
	closedir(d);
	rmdir(dir);
}

TestSuite(storelock, .fini = remove_dir);

/* What a second taker (another process: flock is per open file, so this
 * process's second open conflicts just the same) gets: its rc, and err. */
static enum st_rc take_again(const char *path, struct buf *err)
{
	struct storelock *l = NULL;
	enum st_rc rc;

	buf_reset(err);
	rc = storelock_take(path, "second", &l, err);
	storelock_free(l);
	return rc;
}

/* path names the store whose lock file is want (storelock_path's answer
 * for the store's own path): the same lock file. b is scratch. */
static void assert_same_lock(const char *path, const struct buf *want, struct buf *b)
{
	buf_reset(b);
	cr_assert_eq(storelock_path(path, b), ST_OK, "%s", path);
	cr_assert_str_eq(want->ptr, b->ptr, "%s", path);
}

/* The second processes of the tests below (spawn_fixture.h: a fork would
 * run this code in a child of a threaded process). "hold" db fd uid ppid:
 * takes the lock (as uid when that is not -1), says so on fd and waits to
 * be killed, or for the test process (ppid) to end: a failed test leaves
 * no holder behind; "refused" db: exits 0 when the lock is refused to it. */
static int storelock_helper(const char *role, char **args, int nargs)
{
	struct buf err = BUF_INIT(1024);
	struct storelock *l = NULL;

	if (!strcmp(role, "hold") && nargs == 4) {
		int fd = atoi(args[1]);
		long uid = atol(args[2]);

		if (uid != -1 && setuid((uid_t)uid))
			return 4;
		/* After setuid, which clears it; then the parent may already be gone. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != (pid_t)atol(args[3]))
			return 5;
		if (storelock_take(args[0], "the child", &l, &err) || !l)
			return 2;
		if (write(fd, "y", 1) != 1)
			return 3;
		for (;;)
			pause();
	}
	if (!strcmp(role, "refused") && nargs == 1) {
		int rc = storelock_take(args[0], "child", &l, &err) == ST_CONFLICT ? 0 : 1;

		storelock_free(l);
		buf_release(&err);
		return rc;
	}
	return 10;
}

/* A helper process takes the lock (as uid when that is not -1), says so
 * through a pipe and waits to be killed; returns its pid. */
static pid_t holder_child(const char *path, uid_t uid)
{
	int p[2];
	char c, fd[16], id[24], me[24];
	pid_t pid;

	/* Only the write end goes to the helper. */
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	cr_assert_eq(fcntl(p[1], F_SETFD, 0), 0);
	snprintf(fd, sizeof(fd), "%d", p[1]);
	snprintf(id, sizeof(id), "%ld", uid == (uid_t)-1 ? -1L : (long)uid);
	snprintf(me, sizeof(me), "%ld", (long)getpid());
	pid = spawn_self("hold", (const char *[]){ path, fd, id, me, NULL });
	close(p[1]);
	cr_assert_eq(read(p[0], &c, 1), 1, "the child did not take the lock");
	close(p[0]);
	return pid;
}

static void kill_child(pid_t pid)
{
	int status;

	cr_assert_eq(kill(pid, SIGKILL), 0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

Test(storelock, a_second_taker_is_refused_with_the_holders_name)
{
	struct buf err = BUF_INIT(4096), path = BUF_INIT(PATH_MAX + 64);
	struct storelock *l = NULL;
	char want[64];

	make_dir();
	cr_assert_eq(storelock_take(db, "settled", &l, &err), ST_OK, "%s", err.ptr);
	cr_assert_not_null(l);
	cr_assert_eq(storelock_path(db, &path), ST_OK);
	cr_assert_eq(access(path.ptr, F_OK), 0, "no lock file %s", path.ptr);
	cr_assert_eq(access(db, F_OK), -1, "the lock created the database");

	cr_assert_eq(take_again(db, &err), ST_CONFLICT);
	snprintf(want, sizeof(want), "(holder: settled, pid %ld on host ", (long)getpid());
	cr_assert(strstr(err.ptr, "is in use by another process"), "%s", err.ptr);
	cr_assert(strstr(err.ptr, want), "%s", err.ptr);
	cr_assert(strstr(err.ptr, path.ptr), "%s", err.ptr);

	/* Released: the next taker gets it, and the file stays, without the
	 * line of a holder that is gone. */
	storelock_free(l);
	cr_assert_eq(take_again(db, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(access(path.ptr, F_OK), 0);
	{
		struct stat st;

		cr_assert_eq(stat(path.ptr, &st), 0);
		cr_assert_eq(st.st_size, 0);
	}
	buf_release(&err);
	buf_release(&path);
}

Test(storelock, a_killed_holder_leaves_no_lock)
{
	struct buf err = BUF_INIT(4096);
	pid_t pid;

	make_dir();
	pid = holder_child(db, (uid_t)-1);
	cr_assert_eq(take_again(db, &err), ST_CONFLICT);
	cr_assert(strstr(err.ptr, "the child, pid "), "%s", err.ptr);
	kill_child(pid); /* no exit path runs */
	cr_assert_eq(take_again(db, &err), ST_OK, "%s", err.ptr);
	buf_release(&err);
}

/* POSIX (fcntl) locks are dropped by the close() of any descriptor of the
 * file in the process; the store lock must not be. */
Test(storelock, closing_another_descriptor_of_the_file_keeps_it)
{
	struct buf err = BUF_INIT(4096), path = BUF_INIT(PATH_MAX + 64);
	struct storelock *l = NULL;
	pid_t pid;
	int fd, status;

	make_dir();
	cr_assert_eq(storelock_take(db, "settled", &l, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(storelock_path(db, &path), ST_OK);
	fd = open(path.ptr, O_RDONLY);
	cr_assert_geq(fd, 0);
	close(fd);
	/* Another process, so that only the lock itself can refuse it. */
	pid = spawn_self("refused", (const char *[]){ db, NULL });
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the lock was dropped");
	storelock_free(l);
	buf_release(&err);
	buf_release(&path);
}

Test(storelock, every_name_of_the_store_is_one_lock)
{
	struct buf err = BUF_INIT(4096), a = BUF_INIT(PATH_MAX + 64), b = BUF_INIT(PATH_MAX + 64);
	struct storelock *l = NULL;
	char alias[160], linkdir[160], via_dir[200], rel[200], cwd[PATH_MAX];

	make_dir();
	/* A symlink to the store (SQLite puts the -wal by the real file, so
	 * does the lock), a symlinked directory, a relative path; the store
	 * not created yet, and then created. */
	snprintf(alias, sizeof(alias), "%s/alias.db", dir);
	cr_assert_eq(symlink(db, alias), 0);
	snprintf(linkdir, sizeof(linkdir), "%s-link", dir);
	cr_assert_eq(symlink(dir, linkdir), 0);
	snprintf(via_dir, sizeof(via_dir), "%s/settled.db", linkdir);
	cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
	cr_assert_eq(chdir(dir), 0);
	snprintf(rel, sizeof(rel), "./settled.db");

	cr_assert_eq(storelock_path(db, &a), ST_OK);
	assert_same_lock(via_dir, &a, &b);
	assert_same_lock(rel, &a, &b);

	cr_assert_eq(storelock_take(db, "settled", &l, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(take_again(via_dir, &err), ST_CONFLICT, "%s", err.ptr);
	cr_assert_eq(take_again(rel, &err), ST_CONFLICT, "%s", err.ptr);
	close(open(db, O_RDWR | O_CREAT, 0600)); /* the store exists now */
	cr_assert_eq(take_again(alias, &err), ST_CONFLICT, "%s", err.ptr);
	cr_assert_eq(take_again(via_dir, &err), ST_CONFLICT, "%s", err.ptr);
	storelock_free(l);
	cr_assert_eq(take_again(alias, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(chdir(cwd), 0);
	unlink(linkdir);
	buf_release(&err);
	buf_release(&a);
	buf_release(&b);
}

/* --db a symlink whose target does not exist yet (a first start through
 * a link): SQLite follows the link and creates the target, so the lock is
 * the target's, and a taker naming the store by the target, or by another
 * link (relative, a chain), before either created the store, is refused.
 * Both orders: the link's taker first, and the target's first. */
Test(storelock, a_dangling_symlink_locks_where_the_store_will_be_created)
{
	struct buf err = BUF_INIT(4096), a = BUF_INIT(PATH_MAX + 64), b = BUF_INIT(PATH_MAX + 64);
	struct storelock *l = NULL;
	char alias[160], chain[160], loop[160], cwd[PATH_MAX];
	struct stat st;

	make_dir();
	snprintf(alias, sizeof(alias), "%s/alias.db", dir);
	snprintf(chain, sizeof(chain), "%s/chain.db", dir);
	snprintf(loop, sizeof(loop), "%s/loop.db", dir);
	/* A relative target (read from the link's directory), and a link to
	 * that link, also relative; the store itself is not there. */
	cr_assert_eq(symlink("./settled.db", alias), 0);
	cr_assert_eq(symlink("alias.db", chain), 0);
	cr_assert_eq(symlink("loop.db", loop), 0);
	cr_assert_eq(lstat(db, &st), -1);

	cr_assert_eq(storelock_path(db, &a), ST_OK);
	assert_same_lock(alias, &a, &b);
	assert_same_lock(chain, &a, &b);
	/* From another directory, with the link named relatively. */
	cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
	cr_assert_eq(chdir("/"), 0);
	assert_same_lock(alias + 1, &a, &b);
	cr_assert_eq(chdir(cwd), 0);
	/* A loop resolves to nothing SQLite could open either: the path as
	 * given (opening the store then fails with ELOOP). */
	buf_reset(&b);
	cr_assert_eq(storelock_path(loop, &b), ST_OK);
	cr_assert(strstr(b.ptr, "/loop.db-lock"), "%s", b.ptr);

	/* The link's taker first: the target's, and the chain's, are refused. */
	cr_assert_eq(storelock_take(alias, "settled", &l, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(lstat(db, &st), -1, "taking the lock created the store");
	cr_assert_eq(stat(a.ptr, &st), 0, "no lock file by the store's future file");
	cr_assert_eq(take_again(db, &err), ST_CONFLICT, "%s", err.ptr);
	cr_assert_eq(take_again(chain, &err), ST_CONFLICT, "%s", err.ptr);
	storelock_free(l);
	l = NULL;
	/* The target's taker first: the link's is refused. */
	cr_assert_eq(storelock_take(db, "settled", &l, &err), ST_OK, "%s", err.ptr);
	cr_assert_eq(take_again(alias, &err), ST_CONFLICT, "%s", err.ptr);
	cr_assert_eq(take_again(chain, &err), ST_CONFLICT, "%s", err.ptr);
	storelock_free(l);
	/* Nothing was made by the links. */
	snprintf(loop, sizeof(loop), "%s/alias.db-lock", dir);
	cr_assert_eq(lstat(loop, &st), -1, "a lock file by the link");
	buf_release(&err);
	buf_release(&a);
	buf_release(&b);
}

/* A lock file someone else created, which this process may only read
 * (an operator ran `settled migrate` as root, the service runs as its own
 * user): it still locks, without the holder's line. Run as root, the
 * holder drops to nobody (65534) first; otherwise the mode is enough. */
Test(storelock, a_file_this_process_may_only_read_still_locks)
{
	struct buf err = BUF_INIT(4096), path = BUF_INIT(PATH_MAX + 64);
	pid_t pid;
	int fd;

	make_dir();
	cr_assert_eq(chmod(dir, 0755), 0);
	cr_assert_eq(storelock_path(db, &path), ST_OK);
	fd = open(path.ptr, O_WRONLY | O_CREAT, 0444);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "the first holder\n", 17), 17);
	close(fd);
	pid = holder_child(db, geteuid() == 0 ? 65534 : (uid_t)-1);
	cr_assert_eq(take_again(db, &err), ST_CONFLICT, "%s", err.ptr);
	/* The holder could not write its line: the old one is what is shown. */
	cr_assert(strstr(err.ptr, "(holder: the first holder; lock file"), "%s", err.ptr);
	kill_child(pid);
	cr_assert_eq(take_again(db, &err), ST_OK, "%s", err.ptr);
	buf_release(&err);
	buf_release(&path);
}

Test(storelock, a_store_without_a_file_needs_none_and_a_missing_dir_fails)
{
	struct buf err = BUF_INIT(4096);
	struct storelock *l = (struct storelock *)&err;
	char missing[200];

	cr_assert_eq(storelock_take(":memory:", "settled", &l, &err), ST_OK);
	cr_assert_null(l);
	cr_assert_eq(storelock_take("", "settled", &l, &err), ST_OK);
	cr_assert_null(l);

	make_dir();
	snprintf(missing, sizeof(missing), "%s/no/such/dir.db", dir);
	cr_assert_eq(storelock_take(missing, "settled", &l, &err), ST_UNAVAILABLE);
	cr_assert_null(l);
	cr_assert(strstr(err.ptr, "cannot open the lock file"), "%s", err.ptr);
	cr_assert(strstr(err.ptr, strerror(ENOENT)), "%s", err.ptr);
	storelock_free(NULL);
	buf_release(&err);
}

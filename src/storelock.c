/* storelock.c — the embedded store's process lock: storelock.h says why a
 * lock file and flock. */
#include "storelock.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "banned.h"

#define HOLDER_MAX 256 /* bytes of the holder's line read back for a message */

struct storelock {
	int fd;
	bool named; /* the holder's line is ours: emptied at release */
};

/* "", ":memory:": SQLite keeps such a database in this process's memory
 * (or a temporary file of its own), nothing another process could open. */
static int has_file(const char *db_path)
{
	return db_path[0] && strcmp(db_path, ":memory:") != 0;
}

/* A symlink's target as a path: its text when absolute, else joined to
 * the link's directory (a relative target is read from there). NULL when
 * out of memory or the link cannot be read (errno says why). */
static char *link_target(const char *link)
{
	char target[PATH_MAX], *d, *out;
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	size_t len;

	if (n < 0)
		return NULL;
	if ((size_t)n >= sizeof(target) - 1) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	target[n] = '\0';
	if (target[0] == '/')
		return strdup(target);
	if (!(d = strdup(link)))
		return NULL;
	len = strlen(dirname(d)) + 1 + (size_t)n + 1;
	out = malloc(len);
	if (out)
		snprintf(out, len, "%s/%s", d, target);
	free(d);
	return out;
}

/* The path SQLite will create when db_path does not exist yet: a dangling
 * symlink (chain) followed to its last target, as SQLite does (its
 * unixFullPathname follows every link, existing target or not), then the
 * directory's real path and the name. NULL when it cannot be resolved,
 * *nomem then says whether for want of memory. */
static char *future_path(const char *db_path, bool *nomem)
{
	char *p = strdup(db_path), *d = NULL, *b = NULL, *rdir = NULL, *out = NULL;
	struct stat st;
	size_t len;

	*nomem = false;
	/* As many hops as the kernel follows in a path (ELOOP past that). */
	for (int hops = 0; p && !lstat(p, &st) && S_ISLNK(st.st_mode); hops++) {
		char *next = hops < 40 ? link_target(p) : NULL;

		if (hops >= 40)
			errno = ELOOP;
		free(p);
		p = next;
	}
	if (p && (d = strdup(p)) && (b = strdup(p)) && (rdir = realpath(dirname(d), NULL))) {
		len = strlen(rdir) + 1 + strlen(basename(b)) + 1;
		if ((out = malloc(len)))
			snprintf(out, len, "%s%s%s", rdir, strcmp(rdir, "/") ? "/" : "", basename(b));
	}
	*nomem = !out && errno == ENOMEM;
	free(rdir);
	free(b);
	free(d);
	free(p);
	return out;
}

enum st_rc storelock_sidecar_path(const char *db_path, const char *suffix, struct buf *out)
{
	char *real = realpath(db_path, NULL);
	bool nomem = false;
	enum st_rc rc;

	/* Not created yet (a first start): where SQLite will create it, also
	 * through a symlink whose target does not exist yet, so that two
	 * processes naming the store by the link and by the target take one
	 * lock before either has created it. */
	if (!real && errno == ENOENT)
		real = future_path(db_path, &nomem);
	if (nomem)
		return ST_NOMEM; /* not a lock by another name */
	/* Unresolvable otherwise (a missing directory, no permission): the
	 * path as given; opening the file then fails with the reason. */
	rc = buf_printf(out, "%s%s", real ? real : db_path, suffix);
	free(real);
	return rc;
}

enum st_rc storelock_path(const char *db_path, struct buf *out)
{
	return storelock_sidecar_path(db_path, STORELOCK_SUFFIX, out);
}

/* "owner, pid N on host H, since T": what the holder writes in the file.
 * Returns whether it did. */
static bool write_holder(int fd, const char *owner)
{
	char host[256] = "?", since[32] = "?", line[HOLDER_MAX];
	struct timespec now;
	struct tm tm;
	int n;

	if (gethostname(host, sizeof(host)))
		snprintf(host, sizeof(host), "?");
	host[sizeof(host) - 1] = '\0';
	/* Wall time for a person reading the message, nothing else. */
	if (!clock_gettime(CLOCK_REALTIME, &now) && gmtime_r(&now.tv_sec, &tm))
		strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", &tm);
	n = snprintf(line, sizeof(line), "%s, pid %ld on host %s, since %s\n", owner, (long)getpid(),
		     host, since);
	if (n < 0)
		return false;
	if (n >= (int)sizeof(line))
		n = (int)sizeof(line) - 1;
	/* Best effort: the lock is the flock, held already; a holder line
	 * that cannot be written (a full disk, a file we may only read) only
	 * makes another process's refusal less specific. */
	return !ftruncate(fd, 0) && pwrite(fd, line, (size_t)n, 0) == n;
}

/* The holder's line for the refusal, printable ASCII only (the file is
 * the holder's, but a person reads this). */
static void read_holder(int fd, char *out, size_t size)
{
	char raw[HOLDER_MAX];
	ssize_t n = pread(fd, raw, sizeof(raw) - 1, 0);
	size_t j = 0;

	for (ssize_t i = 0; n > 0 && i < n && raw[i] != '\n' && j + 1 < size; i++)
		out[j++] = raw[i] >= 0x20 && raw[i] < 0x7f ? raw[i] : '?';
	out[j] = '\0';
}

enum st_rc storelock_take(const char *db_path, const char *owner, struct storelock **out,
			  struct buf *err)
{
	struct buf path = BUF_INIT(PATH_MAX + 64);
	struct storelock *l = NULL;
	int fd = -1, r;
	enum st_rc rc;

	*out = NULL;
	if (!has_file(db_path))
		return ST_OK;
	rc = storelock_path(db_path, &path);
	if (rc) {
		buf_printf(err, "cannot name the lock file of %s: %s", db_path, st_rc_str(rc));
		goto out;
	}
	/* Created readable by all (the process umask narrows it): the lock
	 * needs no write access, so a file another user created (an operator
	 * who ran `settled migrate` as root) still locks, read-only, without
	 * the holder's line. O_NOFOLLOW: the lock is this file, not whatever
	 * a symlink put in its place points at. */
	fd = open(path.ptr, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0 && errno == EACCES)
		fd = open(path.ptr, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		buf_printf(err, "cannot open the lock file %s of the store %s: %s", path.ptr, db_path,
			   strerror(errno));
		rc = ST_UNAVAILABLE;
		goto out;
	}
	do
		r = flock(fd, LOCK_EX | LOCK_NB);
	while (r && errno == EINTR);
	if (r && errno == EWOULDBLOCK) {
		char holder[HOLDER_MAX];

		read_holder(fd, holder, sizeof(holder));
		buf_printf(err,
			   "%s is in use by another process (%s%s; lock file %s): one process at a time "
			   "runs on an embedded store; stop that one first (several instances need "
			   "PostgreSQL: SETTLED_DATABASE_URL)",
			   db_path, holder[0] ? "holder: " : "", holder[0] ? holder : "it has not named itself",
			   path.ptr);
		rc = ST_CONFLICT;
		goto out;
	}
	if (r) {
		buf_printf(err, "cannot lock %s (the store %s): %s", path.ptr, db_path, strerror(errno));
		rc = ST_UNAVAILABLE;
		goto out;
	}
	l = malloc(sizeof(*l));
	if (!l) {
		rc = ST_NOMEM;
		goto out;
	}
	l->named = write_holder(fd, owner);
	l->fd = fd;
	fd = -1;
	*out = l;
out:
	if (fd >= 0)
		close(fd); /* a lock we took goes with it */
	buf_release(&path);
	return rc;
}

void storelock_free(struct storelock *l)
{
	if (!l)
		return;
	/* Our line goes while we still hold the lock, so that a later holder
	 * that cannot write its own (a read-only file) is not shown as us.
	 * A process that dies leaves its line; the next holder replaces it. */
	if (l->named && ftruncate(l->fd, 0))
		(void)0; /* a stale line only misnames a later holder in a message */
	close(l->fd); /* the last descriptor of the open file: the kernel drops the lock */
	free(l);
}

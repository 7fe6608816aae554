/* backup.c — `settled backup` and `settled restore` (backup.h says why the
 * online backup API, in one step). Both run as their own short process
 * beside (backup) or instead of (restore) the server, on connections of
 * their own; nothing here touches a running server's state.
 *
 * The store's process lock (storelock.h): restore takes it, backup does
 * not. A restore replaces the store's pages, so it must run with no
 * server on the store and no server may start while it runs (one would
 * open a half-restored store, or read the old store's crash guard before
 * it is removed). A backup only reads, inside one read transaction of its
 * own (WAL: it never blocks the server's writer nor sees half a commit),
 * which is its point: it runs beside a live server. Taking the lock would
 * refuse every backup of a running server, and a server restarted while a
 * long backup ran would refuse to start. */
#include "backup.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "jobguard.h"
#include "rc.h"
#include "storelock.h"
#include "banned.h"

#define BUSY_RETRIES 300        /* x 100 ms: a source in WAL recovery, a lock held briefly */
#define RUNBOOK "docs/runbooks/backup-restore.md"

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static enum st_rc sql_fail(sqlite3 *db, const char *what, struct buf *err)
{
	buf_reset(err);
	buf_printf(err, "%s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
	return ST_UNAVAILABLE;
}

/* path opened with flags; a handle SQLite made even on failure is closed. */
static enum st_rc open_db(const char *path, int flags, sqlite3 **out, struct buf *err)
{
	sqlite3 *db = NULL;

	if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
		buf_reset(err);
		buf_printf(err, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
		sqlite3_close(db);
		return ST_UNAVAILABLE;
	}
	sqlite3_busy_timeout(db, 5000);
	*out = db;
	return ST_OK;
}

/* Every page of from's main database into to's, in one step: one read
 * transaction on from, so the copy is one consistent snapshot. */
static enum st_rc copy_pages(sqlite3 *from, sqlite3 *to, int *pages, struct buf *err)
{
	sqlite3_backup *b = sqlite3_backup_init(to, "main", from, "main");
	int rc, tries = 0;

	if (!b)
		return sql_fail(to, "cannot start the copy", err);
	for (;;) {
		rc = sqlite3_backup_step(b, -1);
		if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || ++tries >= BUSY_RETRIES)
			break;
		nanosleep(&(struct timespec){ 0, 100 * 1000000L }, NULL);
	}
	*pages = sqlite3_backup_pagecount(b);
	sqlite3_backup_finish(b);
	if (rc != SQLITE_DONE) {
		buf_reset(err);
		buf_printf(err, "the copy failed: %s", sqlite3_errstr(rc));
		return ST_UNAVAILABLE;
	}
	return ST_OK;
}

/* The first column of sql's first row as text into out ("" for none). */
static enum st_rc query_text(sqlite3 *db, const char *sql, char *out, size_t size, struct buf *err)
{
	sqlite3_stmt *st = NULL;
	enum st_rc rc = ST_OK;
	int step;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return sql_fail(db, sql, err);
	out[0] = '\0';
	step = sqlite3_step(st);
	if (step == SQLITE_ROW && sqlite3_column_text(st, 0))
		snprintf(out, size, "%s", (const char *)sqlite3_column_text(st, 0));
	else if (step != SQLITE_ROW && step != SQLITE_DONE)
		rc = sql_fail(db, sql, err);
	sqlite3_finalize(st);
	return rc;
}

/* A whole settled store: SQLite's integrity check passes and the
 * migrations table names a schema version (*schema). */
static enum st_rc check_store(sqlite3 *db, const char *name, int *schema, struct buf *err)
{
	char text[256];
	enum st_rc rc = query_text(db, "PRAGMA integrity_check", text, sizeof(text), err);

	if (rc)
		return rc;
	if (strcmp(text, "ok")) {
		buf_reset(err);
		buf_printf(err, "%s fails SQLite's integrity check: %s", name, text);
		return ST_INVALID;
	}
	if (query_text(db, "SELECT max(version) FROM schema_version", text, sizeof(text), err) ||
	    !text[0]) {
		buf_reset(err);
		buf_printf(err, "%s is not a settled store (no schema_version)", name);
		return ST_INVALID;
	}
	*schema = (int)strtol(text, NULL, 10);
	return ST_OK;
}

/* The file's bytes on disk, then its name in its directory. */
static enum st_rc sync_file_and_dir(const char *path, struct buf *err)
{
	char dir[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fsync(fd)) {
		buf_reset(err);
		buf_printf(err, "cannot sync %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return ST_UNAVAILABLE;
	}
	close(fd);
	snprintf(dir, sizeof(dir), "%s", path);
	fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd); /* best effort: some file systems refuse a directory fsync */
		close(fd);
	}
	return ST_OK;
}

static off_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) ? -1 : st.st_size;
}

/* The copy goes to PATH.tmp-PID first and is renamed into place only once
 * it is whole, checked and on disk: a crash or a full disk never leaves a
 * PATH that looks like a backup but is not one. The copy is turned into a
 * single self-contained file (rollback journal mode, no -wal beside it).
 * No store lock: it runs beside the server (the top of this file). */
static enum st_rc do_backup(const char *db_path, const char *dest, struct buf *err)
{
	char tmp[4200], mode[32];
	sqlite3 *src = NULL, *dst = NULL;
	int pages = 0, schema = 0;
	int64_t t0, ms;
	enum st_rc rc;

	if (access(dest, F_OK) == 0) {
		buf_printf(err, "%s exists: remove it or choose another path", dest);
		return ST_CONFLICT;
	}
	if (access(db_path, F_OK)) {
		buf_printf(err, "the store %s does not exist: %s", db_path, strerror(errno));
		return ST_NOT_FOUND;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp-%ld", dest, (long)getpid());
	rc = open_db(db_path, SQLITE_OPEN_READONLY, &src, err);
	if (!rc)
		rc = open_db(tmp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &dst, err);
	if (rc)
		goto out;
	t0 = mono_ms();
	rc = copy_pages(src, dst, &pages, err);
	ms = mono_ms() - t0;
	sqlite3_close(src);
	src = NULL;
	if (!rc)
		rc = query_text(dst, "PRAGMA journal_mode = DELETE", mode, sizeof(mode), err);
	if (!rc)
		rc = check_store(dst, tmp, &schema, err);
	if (rc)
		goto out;
	if (sqlite3_close(dst) != SQLITE_OK) {
		rc = sql_fail(dst, "cannot close the copy", err);
		goto out;
	}
	dst = NULL;
	rc = sync_file_and_dir(tmp, err);
	if (!rc && rename(tmp, dest)) {
		buf_printf(err, "cannot rename %s to %s: %s", tmp, dest, strerror(errno));
		rc = ST_UNAVAILABLE;
	}
	if (!rc)
		rc = sync_file_and_dir(dest, err);
	if (!rc)
		printf("settled: backup of %s written to %s: %d pages, %lld bytes, schema version %d, "
		       "copied in %lld ms\n",
		       db_path, dest, pages, (long long)file_size(dest), schema, (long long)ms);
out:
	sqlite3_close(src);
	sqlite3_close(dst);
	if (rc)
		unlink(tmp);
	return rc;
}

/* The job crash guard's file beside the store (jobguard.h) names the jobs
 * the old store's last process was running; they say nothing about the
 * restored rows, so it goes (no file: nothing is counted at the next
 * start). A file that cannot be removed is only reported: the guard
 * counts a job only while its row is exactly as it was marked. */
static void forget_inflight(const char *db_path)
{
	struct buf path = BUF_INIT(PATH_MAX + 64);

	/* Where the server puts it: beside the real file (storelock.h). */
	if (storelock_sidecar_path(db_path, JOBGUARD_SUFFIX, &path) == ST_OK &&
	    unlink(path.ptr) && errno != ENOENT)
		fprintf(stderr, "settled restore: cannot remove %s: %s\n", path.ptr, strerror(errno));
	buf_release(&path);
}

/* The backup is checked before anything is touched. An existing store is
 * replaced only with --force, and only while nothing else has it open: the
 * store's process lock (storelock.h) first, held until the crash guard's
 * file is gone, which refuses while a server runs on it and makes a server
 * started meanwhile refuse; then the exclusive locking mode takes the
 * database file's exclusive lock and keeps it until we close, which fails
 * at once while any other program (the sqlite3 shell) has the file open.
 * The pages go in through SQLite on that connection, so a stale WAL
 * beside the old store cannot be replayed over the restored one. */
static enum st_rc do_restore(const char *backup, const char *db_path, bool force, struct buf *err)
{
	sqlite3 *src = NULL, *dst = NULL;
	struct storelock *lock = NULL;
	int pages = 0, schema = 0, check = 0;
	bool existed = access(db_path, F_OK) == 0;
	enum st_rc rc;

	if (access(backup, R_OK)) {
		buf_printf(err, "cannot read the backup %s: %s", backup, strerror(errno));
		return ST_NOT_FOUND;
	}
	rc = open_db(backup, SQLITE_OPEN_READONLY, &src, err);
	if (!rc)
		rc = check_store(src, backup, &schema, err);
	if (rc)
		goto out;
	if (existed && !force) {
		buf_printf(err, "%s exists: stop settled, then run restore again with --force to replace it",
			   db_path);
		rc = ST_CONFLICT;
		goto out;
	}
	rc = storelock_take(db_path, "settled restore", &lock, err);
	if (rc)
		goto out;
	rc = open_db(db_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &dst, err);
	if (rc)
		goto out;
	sqlite3_busy_timeout(dst, 0);
	if (sqlite3_exec(dst, "PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; COMMIT", NULL, NULL,
			 NULL) != SQLITE_OK) {
		buf_printf(err, "%s is in use (is settled running on it? stop it first): %s", db_path,
			   sqlite3_errmsg(dst));
		rc = ST_CONFLICT;
		goto out;
	}
	rc = copy_pages(src, dst, &pages, err);
	if (!rc)
		rc = check_store(dst, db_path, &check, err);
	if (rc)
		goto out;
	if (sqlite3_close(dst) != SQLITE_OK) {
		rc = sql_fail(dst, "cannot close the store", err);
		goto out;
	}
	dst = NULL;
	rc = sync_file_and_dir(db_path, err);
	if (!rc) {
		printf("settled: %s restored from %s: %d pages, schema version %d%s\n", db_path, backup,
		       pages, schema, existed ? " (replaced the previous store)" : "");
		forget_inflight(db_path);
	}
out:
	sqlite3_close(src);
	sqlite3_close(dst);
	storelock_free(lock);
	return rc;
}

static int usage(const char *cmd)
{
	fprintf(stderr,
		"usage: settled backup PATH [--db FILE]\n"
		"       settled restore PATH [--db FILE] [--force]\n"
		"settled %s: PATH comes first; the store is SETTLED_DB or --db (see " RUNBOOK ")\n",
		cmd);
	return 2;
}

int backup_main(int argc, char **argv, char **envp)
{
	const char *cmd = argv[1], *path = argc > 2 ? argv[2] : NULL;
	bool restore = !strcmp(cmd, "restore"), force = false, help = false;
	char **rest = calloc((size_t)argc + 1, sizeof(*rest));
	struct buf err = BUF_INIT(2048);
	struct config cfg;
	int n = 0, code = 1;
	enum st_rc rc;

	memset(&cfg, 0, sizeof(cfg));
	if (!rest) {
		fprintf(stderr, "settled %s: out of memory\n", cmd);
		return 1;
	}
	if (!path || path[0] == '-') {
		code = usage(cmd);
		goto out_rest;
	}
	/* What is left are the server's own flags (--db above all). */
	rest[n++] = argv[0];
	for (int i = 3; i < argc; i++) {
		if (restore && !strcmp(argv[i], "--force"))
			force = true;
		else
			rest[n++] = argv[i];
	}
	if (config_load(&cfg, envp, n, rest, &help, &err)) {
		fprintf(stderr, "settled %s: %s\n", cmd, err.ptr);
		code = 2;
		goto out;
	}
	if (help) {
		code = usage(cmd);
		goto out;
	}
	if (cfg.database_url) {
		fprintf(stderr,
			"settled %s: SETTLED_DATABASE_URL is set: back up and restore PostgreSQL with "
			"pg_dump / pg_restore or pg_basebackup (" RUNBOOK ")\n",
			cmd);
		code = 2;
		goto out;
	}
	buf_reset(&err);
	rc = restore ? do_restore(path, cfg.db_path, force, &err) : do_backup(cfg.db_path, path, &err);
	if (rc)
		fprintf(stderr, "settled %s: %s\n", cmd, err.ptr);
	code = rc ? 1 : 0;
out:
	config_release(&cfg);
out_rest:
	buf_release(&err);
	free(rest);
	return code;
}

/* test_walbuf.c — the WAL write-gathering VFS (src/walbuf.c).
 *
 * Under it, a VFS of the test's own ("spy") is made the default for the
 * test: it counts the writes that reach each WAL file and can fail them,
 * so the tests see what walbuf hands down. They check that a commit's
 * frames reach the file in one write, that every byte lands where and in
 * the order SQLite wrote it (cache spills that write and rewrite frames
 * of an open transaction, rollbacks, WAL restarts: the database built
 * through walbuf reads the same as one built without it, from connections
 * that do not use it), and that a write failing under walbuf fails the
 * commit, which then left nothing. */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "walbuf.h"

#include "banned.h"

/* ---- spy: a pass-through VFS counting (and failing) WAL writes ---- */

static sqlite3_vfs *spy_inner;
static int spy_wal_writes;   /* xWrite calls on WAL files */
static long spy_wal_bytes;
static int spy_fail_writes;  /* nonzero: every WAL xWrite fails */
static int spy_wal_syncs;    /* xSync calls on WAL files */

struct spy_file {
	sqlite3_file base;
	sqlite3_file *real;
	int wal;
};

#define SPY_REAL(f) (((struct spy_file *)(f))->real)

static int spy_close(sqlite3_file *f) { return SPY_REAL(f)->pMethods->xClose(SPY_REAL(f)); }
static int spy_read(sqlite3_file *f, void *p, int n, sqlite3_int64 o)
{
	return SPY_REAL(f)->pMethods->xRead(SPY_REAL(f), p, n, o);
}
static int spy_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 o)
{
	if (((struct spy_file *)f)->wal) {
		if (spy_fail_writes)
			return SQLITE_IOERR_WRITE;
		spy_wal_writes++;
		spy_wal_bytes += n;
	}
	return SPY_REAL(f)->pMethods->xWrite(SPY_REAL(f), p, n, o);
}
static int spy_truncate(sqlite3_file *f, sqlite3_int64 s) { return SPY_REAL(f)->pMethods->xTruncate(SPY_REAL(f), s); }
static int spy_sync(sqlite3_file *f, int fl)
{
	spy_wal_syncs += ((struct spy_file *)f)->wal;
	return SPY_REAL(f)->pMethods->xSync(SPY_REAL(f), fl);
}
static int spy_size(sqlite3_file *f, sqlite3_int64 *s) { return SPY_REAL(f)->pMethods->xFileSize(SPY_REAL(f), s); }
static int spy_lock(sqlite3_file *f, int l) { return SPY_REAL(f)->pMethods->xLock(SPY_REAL(f), l); }
static int spy_unlock(sqlite3_file *f, int l) { return SPY_REAL(f)->pMethods->xUnlock(SPY_REAL(f), l); }
static int spy_reserved(sqlite3_file *f, int *o) { return SPY_REAL(f)->pMethods->xCheckReservedLock(SPY_REAL(f), o); }
static int spy_fcntl(sqlite3_file *f, int op, void *a) { return SPY_REAL(f)->pMethods->xFileControl(SPY_REAL(f), op, a); }
static int spy_sector(sqlite3_file *f) { return SPY_REAL(f)->pMethods->xSectorSize(SPY_REAL(f)); }
static int spy_chars(sqlite3_file *f) { return SPY_REAL(f)->pMethods->xDeviceCharacteristics(SPY_REAL(f)); }
static int spy_shm_map(sqlite3_file *f, int pg, int sz, int ext, void volatile **pp)
{
	return SPY_REAL(f)->pMethods->xShmMap(SPY_REAL(f), pg, sz, ext, pp);
}
static int spy_shm_lock(sqlite3_file *f, int o, int n, int fl) { return SPY_REAL(f)->pMethods->xShmLock(SPY_REAL(f), o, n, fl); }
static void spy_shm_barrier(sqlite3_file *f) { SPY_REAL(f)->pMethods->xShmBarrier(SPY_REAL(f)); }
static int spy_shm_unmap(sqlite3_file *f, int d) { return SPY_REAL(f)->pMethods->xShmUnmap(SPY_REAL(f), d); }
static int spy_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **pp) { return SPY_REAL(f)->pMethods->xFetch(SPY_REAL(f), o, n, pp); }
static int spy_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p) { return SPY_REAL(f)->pMethods->xUnfetch(SPY_REAL(f), o, p); }

static const sqlite3_io_methods spy_methods = {
	.iVersion = 3, .xClose = spy_close, .xRead = spy_read, .xWrite = spy_write,
	.xTruncate = spy_truncate, .xSync = spy_sync, .xFileSize = spy_size, .xLock = spy_lock,
	.xUnlock = spy_unlock, .xCheckReservedLock = spy_reserved, .xFileControl = spy_fcntl,
	.xSectorSize = spy_sector, .xDeviceCharacteristics = spy_chars, .xShmMap = spy_shm_map,
	.xShmLock = spy_shm_lock, .xShmBarrier = spy_shm_barrier, .xShmUnmap = spy_shm_unmap,
	.xFetch = spy_fetch, .xUnfetch = spy_unfetch,
};

static int spy_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
	struct spy_file *w = (struct spy_file *)f;
	int rc;

	(void)vfs;
	w->real = (sqlite3_file *)(w + 1);
	w->real->pMethods = NULL;
	w->wal = (flags & SQLITE_OPEN_WAL) != 0;
	rc = spy_inner->xOpen(spy_inner, name, w->real, flags, out);
	w->base.pMethods = w->real->pMethods ? &spy_methods : NULL;
	return rc;
}

static int spy_delete(sqlite3_vfs *v, const char *n, int s) { (void)v; return spy_inner->xDelete(spy_inner, n, s); }
static int spy_access(sqlite3_vfs *v, const char *n, int fl, int *o) { (void)v; return spy_inner->xAccess(spy_inner, n, fl, o); }
static int spy_fullpath(sqlite3_vfs *v, const char *n, int k, char *o) { (void)v; return spy_inner->xFullPathname(spy_inner, n, k, o); }
static int spy_random(sqlite3_vfs *v, int n, char *o) { (void)v; return spy_inner->xRandomness(spy_inner, n, o); }
static int spy_sleep(sqlite3_vfs *v, int us) { (void)v; return spy_inner->xSleep(spy_inner, us); }
static int spy_time(sqlite3_vfs *v, double *o) { (void)v; return spy_inner->xCurrentTime(spy_inner, o); }
static int spy_lasterr(sqlite3_vfs *v, int n, char *o) { (void)v; return spy_inner->xGetLastError(spy_inner, n, o); }

static sqlite3_vfs spy_vfs = {
	.iVersion = 1, .mxPathname = 512, .zName = "walbuf-test-spy",
	.xOpen = spy_open, .xDelete = spy_delete, .xAccess = spy_access, .xFullPathname = spy_fullpath,
	.xRandomness = spy_random, .xSleep = spy_sleep, .xCurrentTime = spy_time,
	.xGetLastError = spy_lasterr,
};

static char dir[256], path_a[300], path_b[300];
static struct walbuf_vfs wb;

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_walbuf.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path_a, sizeof(path_a), "%s/a.db", dir);
	snprintf(path_b, sizeof(path_b), "%s/b.db", dir);
	spy_inner = sqlite3_vfs_find(NULL);
	spy_vfs.szOsFile = (int)sizeof(struct spy_file) + spy_inner->szOsFile;
	cr_assert_eq(sqlite3_vfs_register(&spy_vfs, 1), SQLITE_OK);
	cr_assert_eq(walbuf_register(&wb), SQLITE_OK);
	cr_assert_not_null(walbuf_name(&wb));
	spy_wal_writes = 0;
	spy_wal_bytes = 0;
	spy_fail_writes = 0;
	spy_wal_syncs = 0;
}

static void teardown(void)
{
	char cmd[300];

	walbuf_unregister(&wb);
	sqlite3_vfs_unregister(&spy_vfs);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_expect_eq(system(cmd), 0);
}

static sqlite3 *open_db(const char *path, const char *vfs)
{
	sqlite3 *db = NULL;

	cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(db,
				  "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
				  "PRAGMA wal_autocheckpoint = 0;"
				  "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB NOT NULL);"
				  "CREATE INDEX IF NOT EXISTS t_v ON t (v);",
				  NULL, NULL, NULL),
		     SQLITE_OK, "%s", sqlite3_errmsg(db));
	return db;
}

static void exec(sqlite3 *db, const char *sql)
{
	cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
}

static long long count_rows(sqlite3 *db)
{
	sqlite3_stmt *st;
	long long n = -1;

	cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

/* The hash of every row, through a connection on the spy (default) VFS. */
static char *digest(const char *path)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st;
	char *out;

	cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(db,
					"SELECT group_concat(k || ':' || hex(v), ',') FROM (SELECT k, v FROM t ORDER BY k)",
					-1, &st, NULL),
		     SQLITE_OK);
	cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
	out = strdup(sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0) : "");
	sqlite3_finalize(st);
	cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
	cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
	sqlite3_finalize(st);
	sqlite3_close(db);
	return out;
}

TestSuite(walbuf, .init = setup, .fini = teardown);

/* A transaction of ~280 frames (1.1-1.7 MB): its frames reach the WAL in
 * writes of 64 KiB (one more for the first, which also writes and syncs
 * the WAL's header), not two a frame. A commit larger than WALBUF_CAP is
 * gathered as several runs, each written whole in pieces of
 * WALBUF_WRITE_MAX when the next write would not fit: every run but the
 * last is over WALBUF_CAP - 4096 bytes (a page write did not fit) and may
 * end in one short piece. The bound counts that piece: without it a
 * round whose size fell just past a multiple of 64 KiB failed (the
 * index's page splits of random blobs vary the size by some frames). */
Test(walbuf, a_commits_frames_reach_the_wal_in_one_write)
{
	sqlite3 *db = open_db(path_a, walbuf_name(&wb));

	for (int round = 0; round < 5; round++) {
		int before = spy_wal_writes;
		long bytes_before = spy_wal_bytes, bytes, runs, most;

		exec(db, "BEGIN IMMEDIATE");
		for (int i = 0; i < 200; i++)
			exec(db, "INSERT INTO t (v) VALUES (randomblob(1000))");
		exec(db, "COMMIT");
		bytes = spy_wal_bytes - bytes_before;
		cr_assert_gt(bytes, 50 * 4096, "%ld bytes", bytes);
		runs = 1 + bytes / (WALBUF_CAP - 4096);
		most = (bytes + WALBUF_WRITE_MAX - 1) / WALBUF_WRITE_MAX + (runs - 1) + (round == 0);
		cr_assert_leq(spy_wal_writes - before, most, "round %d: %d writes for %ld bytes", round,
			      spy_wal_writes - before, bytes);
	}
	sqlite3_close(db);
}

/* The same random work on two databases, one through walbuf with a tiny
 * page cache (so transactions spill frames and rewrite them in place
 * before their commit), one without: they read the same, from connections
 * of their own, before and after closing; rolled-back work left nothing;
 * the WAL restarts in between. */
Test(walbuf, every_byte_lands_where_and_in_the_order_it_was_written)
{
	sqlite3 *a = open_db(path_a, walbuf_name(&wb)), *b = open_db(path_b, NULL);
	char *da, *db_;
	unsigned seed = 12345;

	exec(a, "PRAGMA cache_size = 4");
	exec(b, "PRAGMA cache_size = 4");
	for (int round = 0; round < 40; round++) {
		char sql[256];
		bool rollback = round % 7 == 3;

		exec(a, "BEGIN IMMEDIATE");
		exec(b, "BEGIN IMMEDIATE");
		for (int i = 0; i < 60; i++) {
			unsigned r = seed = seed * 1103515245u + 12345u;
			int k = (int)(r >> 8) % 400, size = 16 + (int)((r >> 4) % 3000);

			if (r % 5 == 0)
				snprintf(sql, sizeof(sql), "DELETE FROM t WHERE k = %d", k);
			else
				snprintf(sql, sizeof(sql),
					 "INSERT OR REPLACE INTO t (k, v) VALUES (%d, zeroblob(%d) || x'%08x')", k,
					 size, r);
			exec(a, sql);
			exec(b, sql);
		}
		exec(a, rollback ? "ROLLBACK" : "COMMIT");
		exec(b, rollback ? "ROLLBACK" : "COMMIT");
		if (round % 10 == 9) {
			exec(a, "PRAGMA wal_checkpoint(RESTART)");
			exec(b, "PRAGMA wal_checkpoint(RESTART)");
		}
		if (round % 5 == 4) {
			da = digest(path_a);
			db_ = digest(path_b);
			cr_assert_str_eq(da, db_, "round %d", round);
			free(da);
			free(db_);
		}
	}
	cr_assert_gt(count_rows(a), 0);
	sqlite3_close(a);
	sqlite3_close(b);
	da = digest(path_a);
	db_ = digest(path_b);
	cr_assert_str_eq(da, db_);
	free(da);
	free(db_);
}

/* Gathered writes that fail when they are finally written (at the
 * commit's sync) fail the commit: nothing of it is there, and the next
 * transaction commits. */
Test(walbuf, a_write_failing_under_it_fails_the_commit)
{
	sqlite3 *db = open_db(path_a, walbuf_name(&wb)), *reader;
	int rc;

	exec(db, "INSERT INTO t (k, v) VALUES (1, x'01')");
	exec(db, "BEGIN IMMEDIATE");
	for (int i = 0; i < 50; i++)
		exec(db, "INSERT INTO t (v) VALUES (randomblob(500))");
	spy_fail_writes = 1;
	rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	spy_fail_writes = 0;
	cr_assert_eq(rc & 0xff, SQLITE_IOERR, "COMMIT gave %d", rc);
	if (!sqlite3_get_autocommit(db))
		exec(db, "ROLLBACK");
	cr_assert_eq(sqlite3_open_v2(path_a, &reader, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	cr_assert_eq(count_rows(reader), 1);
	exec(db, "INSERT INTO t (k, v) VALUES (2, x'02')");
	cr_assert_eq(count_rows(reader), 2);
	sqlite3_close(reader);
	sqlite3_close(db);
}

/* The file itself, driven through the VFS with random writes (runs that
 * continue one another, as the WAL's, and writes anywhere, overwriting
 * what is gathered or written), reads, sizes, syncs and truncates, against
 * a model of the bytes it must hold. */
Test(walbuf, a_wal_file_holds_what_was_written_in_order)
{
	enum { SIZE = 300 * 1024 };
	static unsigned char model[SIZE], got[SIZE], data[70 * 1024];
	sqlite3_vfs *vfs = sqlite3_vfs_find(walbuf_name(&wb));
	sqlite3_file *f = calloc(1, (size_t)vfs->szOsFile);
	char path[320];
	sqlite3_int64 size = 0, fsz, next = 0;
	unsigned seed = 777;
	int out_flags;

	cr_assert_not_null(f);
	/* The unix VFS opens a WAL only beside its database file. */
	snprintf(path, sizeof(path), "%s/x.db", dir);
	fclose(fopen(path, "w"));
	snprintf(path, sizeof(path), "%s/x.db-wal", dir);
	cr_assert_eq(vfs->xOpen(vfs, path, f,
				SQLITE_OPEN_WAL | SQLITE_OPEN_CREATE | SQLITE_OPEN_READWRITE, &out_flags),
		     SQLITE_OK);
	for (int step = 0; step < 4000; step++) {
		unsigned r = seed = seed * 1103515245u + 12345u;
		unsigned op = (r >> 16) % 100;

		if (op < 70) {
			/* A write: most continue the last one, some land anywhere. */
			int n = 1 + (int)((r >> 3) % (op < 5 ? sizeof(data) : 5000));
			sqlite3_int64 at = op < 55 ? next : (sqlite3_int64)((r >> 5) % (SIZE / 2));

			if (at + n > SIZE)
				at = 0, n = n > SIZE ? SIZE : n;
			for (int i = 0; i < n; i++)
				data[i] = (unsigned char)(r + (unsigned)i * 7u + (unsigned)step);
			cr_assert_eq(f->pMethods->xWrite(f, data, n, at), SQLITE_OK);
			memcpy(model + at, data, (size_t)n);
			if (at + n > size)
				size = at + n;
			next = at + n;
		} else if (op < 85 && size > 0) {
			sqlite3_int64 at = (sqlite3_int64)((r >> 4) % (unsigned)size);
			int n = (int)((size - at) < 4096 ? size - at : 4096);

			cr_assert_eq(f->pMethods->xRead(f, got, n, at), SQLITE_OK);
			cr_assert_eq(memcmp(got, model + at, (size_t)n), 0, "step %d: read at %lld", step,
				     (long long)at);
		} else if (op < 92) {
			cr_assert_eq(f->pMethods->xFileSize(f, &fsz), SQLITE_OK);
			cr_assert_eq(fsz, size, "step %d", step);
		} else if (op < 97) {
			cr_assert_eq(f->pMethods->xSync(f, SQLITE_SYNC_NORMAL), SQLITE_OK);
		} else {
			sqlite3_int64 to = size / 2;

			cr_assert_eq(f->pMethods->xTruncate(f, to), SQLITE_OK);
			memset(model + to, 0, (size_t)(SIZE - to));
			size = to;
			next = to;
		}
	}
	cr_assert_eq(f->pMethods->xClose(f), SQLITE_OK);
	free(f);
	{
		FILE *in = fopen(path, "rb");
		size_t n;

		cr_assert_not_null(in);
		n = fread(got, 1, sizeof(got), in);
		fclose(in);
		cr_assert_eq((sqlite3_int64)n, size);
		cr_assert_eq(memcmp(got, model, n), 0);
	}
}

/* A checkpoint run right after a COMMIT (as the writer's WAL-restarting
 * one is) syncs the WAL first: nothing was written since the COMMIT's
 * sync, so that sync is skipped. A write in between, or a failed sync,
 * and the next sync reaches the file. */
Test(walbuf, a_sync_with_nothing_written_since_the_last_is_skipped)
{
	sqlite3 *db = open_db(path_a, walbuf_name(&wb));
	int syncs;

	exec(db, "INSERT INTO t (v) VALUES (randomblob(5000))");
	syncs = spy_wal_syncs;
	exec(db, "INSERT INTO t (v) VALUES (randomblob(5000))");
	cr_assert_eq(spy_wal_syncs, syncs + 1, "a commit syncs the WAL");
	syncs = spy_wal_syncs;
	exec(db, "PRAGMA wal_checkpoint(PASSIVE)");
	cr_assert_eq(spy_wal_syncs, syncs, "the checkpoint's WAL sync after a commit's");
	/* This commit restarts the WAL: it syncs the new header, then itself. */
	exec(db, "INSERT INTO t (v) VALUES (randomblob(5000))");
	cr_assert_geq(spy_wal_syncs, syncs + 1);
	cr_assert_eq(count_rows(db), 3);
	sqlite3_close(db);
}

/* Whatever wrote to the file since the last sync (a write already handed
 * down by a read, a truncate) makes the next sync reach the file. */
Test(walbuf, a_sync_after_any_write_reaches_the_file)
{
	sqlite3_vfs *vfs = sqlite3_vfs_find(walbuf_name(&wb));
	sqlite3_file *f = calloc(1, (size_t)vfs->szOsFile);
	char path[320], byte = 'x', back;
	int out_flags, syncs;

	cr_assert_not_null(f);
	snprintf(path, sizeof(path), "%s/y.db", dir);
	fclose(fopen(path, "w"));
	snprintf(path, sizeof(path), "%s/y.db-wal", dir);
	cr_assert_eq(vfs->xOpen(vfs, path, f, SQLITE_OPEN_WAL | SQLITE_OPEN_CREATE | SQLITE_OPEN_READWRITE,
				&out_flags),
		     SQLITE_OK);
	cr_assert_eq(f->pMethods->xWrite(f, &byte, 1, 0), SQLITE_OK);
	cr_assert_eq(f->pMethods->xSync(f, SQLITE_SYNC_NORMAL), SQLITE_OK);
	syncs = spy_wal_syncs;
	cr_assert_eq(f->pMethods->xSync(f, SQLITE_SYNC_NORMAL), SQLITE_OK);
	cr_assert_eq(spy_wal_syncs, syncs, "nothing written: skipped");
	cr_assert_eq(f->pMethods->xWrite(f, &byte, 1, 1), SQLITE_OK);
	cr_assert_eq(f->pMethods->xRead(f, &back, 1, 1), SQLITE_OK); /* hands the write down */
	cr_assert_eq(f->pMethods->xSync(f, SQLITE_SYNC_NORMAL), SQLITE_OK);
	cr_assert_eq(spy_wal_syncs, syncs + 1, "a write handed down by a read is synced");
	cr_assert_eq(f->pMethods->xTruncate(f, 1), SQLITE_OK);
	cr_assert_eq(f->pMethods->xSync(f, SQLITE_SYNC_NORMAL), SQLITE_OK);
	cr_assert_eq(spy_wal_syncs, syncs + 2, "a truncate is synced");
	spy_fail_writes = 1;
	cr_assert_eq(f->pMethods->xWrite(f, &byte, 1, 1), SQLITE_OK);   /* gathered */
	cr_assert_neq(f->pMethods->xSync(f, SQLITE_SYNC_NORMAL), SQLITE_OK); /* fails handing it down */
	spy_fail_writes = 0;
	cr_assert_eq(f->pMethods->xSync(f, SQLITE_SYNC_NORMAL), SQLITE_OK);
	cr_assert_eq(spy_wal_syncs, syncs + 3, "after a failed sync the next one reaches the file");
	cr_assert_eq(f->pMethods->xClose(f), SQLITE_OK);
	free(f);
}

/* walbuf.c — an SQLite VFS gathering a WAL file's consecutive writes into
 * one (see walbuf.h for what and why).
 *
 * Only writes that continue the gathered run are gathered: any other write
 * first writes the run, so the file sees every byte in the order SQLite
 * wrote it (SQLite rewrites a frame of the open transaction in place when
 * its page changes again after a cache spill). Anything that reads or
 * measures the file, syncs it, cuts it or closes it writes the run first.
 * Locks and shared memory are not the WAL file's business (the main
 * database file's handle does them) and pass straight through.
 *
 * Workload: the writer connection's WAL; a batch's COMMIT writes its
 * frames in order from one offset, then syncs: one write, one sync. */
#include "walbuf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "banned.h"

struct walbuf_file {
	sqlite3_file base;
	sqlite3_file *inner;    /* the wrapped VFS's file, right after this struct */
	unsigned char *buf;     /* WALBUF_CAP bytes once a write was gathered */
	size_t len;             /* gathered bytes */
	sqlite3_int64 off;      /* the file offset of buf[0] */
	/* Synced, and nothing written or cut through this file since: a sync
	 * now would find nothing of ours to write (see wb_sync). */
	bool synced;
};

/* inner sits right after the struct; keep it aligned for any file type. */
#define WALBUF_FILE_SIZE ((sizeof(struct walbuf_file) + 15) & ~(size_t)15)

static sqlite3_vfs *inner_vfs(sqlite3_vfs *vfs)
{
	return ((struct walbuf_vfs *)vfs->pAppData)->inner;
}

static struct walbuf_file *wf(sqlite3_file *f)
{
	return (struct walbuf_file *)f;
}

/* Writes the gathered run, in pieces of WALBUF_WRITE_MAX. It is dropped on
 * failure too: the caller reports the failure to SQLite, which then treats
 * the whole transaction as failed and writes its frames again if it tries
 * again. */
static int flush(struct walbuf_file *w)
{
	int rc = SQLITE_OK;

	for (size_t at = 0; at < w->len && rc == SQLITE_OK; at += WALBUF_WRITE_MAX) {
		size_t n = w->len - at < WALBUF_WRITE_MAX ? w->len - at : WALBUF_WRITE_MAX;

		rc = w->inner->pMethods->xWrite(w->inner, w->buf + at, (int)n,
						w->off + (sqlite3_int64)at);
	}
	w->len = 0;
	return rc;
}

static int wb_close(sqlite3_file *f)
{
	struct walbuf_file *w = wf(f);
	int rc = flush(w), rc2 = w->inner->pMethods->xClose(w->inner);

	free(w->buf);
	w->buf = NULL;
	return rc ? rc : rc2;
}

static int wb_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
	struct walbuf_file *w = wf(f);
	int rc = flush(w);

	return rc ? rc : w->inner->pMethods->xRead(w->inner, p, n, off);
}

static int wb_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
	struct walbuf_file *w = wf(f);
	size_t len = (size_t)n;
	int rc;

	w->synced = false;
	if (w->len && off == w->off + (sqlite3_int64)w->len && w->len + len <= WALBUF_CAP) {
		memcpy(w->buf + w->len, p, len);
		w->len += len;
		return SQLITE_OK;
	}
	rc = flush(w);
	if (rc)
		return rc;
	if (!w->buf)
		w->buf = malloc(WALBUF_CAP);
	/* Too big to gather, or no memory for the buffer: written at once,
	 * as without this VFS. */
	if (len > WALBUF_CAP / 2 || !w->buf)
		return w->inner->pMethods->xWrite(w->inner, p, n, off);
	memcpy(w->buf, p, len);
	w->len = len;
	w->off = off;
	return SQLITE_OK;
}

static int wb_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	struct walbuf_file *w = wf(f);
	int rc = flush(w);

	w->synced = false;
	return rc ? rc : w->inner->pMethods->xTruncate(w->inner, size);
}

/* A sync right after a sync with nothing written between is skipped: the
 * checkpoint the writer runs to restart the WAL syncs the WAL first,
 * right after the COMMIT that synced it (an fdatasync that found nothing
 * to write still took 40 us at the median here, milliseconds at the tail
 * on a busy disk). Only this file's writes count: SQLite's WAL is written
 * by the one connection holding the write lock, which syncs what it wrote
 * before its commit counts. */
static int wb_sync(sqlite3_file *f, int flags)
{
	struct walbuf_file *w = wf(f);
	int rc;

	if (w->synced && !w->len)
		return SQLITE_OK;
	rc = flush(w);
	if (!rc)
		rc = w->inner->pMethods->xSync(w->inner, flags);
	w->synced = rc == SQLITE_OK;
	return rc;
}

static int wb_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
	struct walbuf_file *w = wf(f);
	int rc = flush(w);

	return rc ? rc : w->inner->pMethods->xFileSize(w->inner, size);
}

static int wb_lock(sqlite3_file *f, int lock)
{
	return wf(f)->inner->pMethods->xLock(wf(f)->inner, lock);
}

static int wb_unlock(sqlite3_file *f, int lock)
{
	return wf(f)->inner->pMethods->xUnlock(wf(f)->inner, lock);
}

static int wb_check_reserved(sqlite3_file *f, int *out)
{
	return wf(f)->inner->pMethods->xCheckReservedLock(wf(f)->inner, out);
}

/* A file control may look at the file (its size, its descriptor): the
 * run is written first. */
static int wb_file_control(sqlite3_file *f, int op, void *arg)
{
	struct walbuf_file *w = wf(f);
	int rc = flush(w);

	return rc ? rc : w->inner->pMethods->xFileControl(w->inner, op, arg);
}

static int wb_sector_size(sqlite3_file *f)
{
	return wf(f)->inner->pMethods->xSectorSize(wf(f)->inner);
}

static int wb_device_chars(sqlite3_file *f)
{
	return wf(f)->inner->pMethods->xDeviceCharacteristics(wf(f)->inner);
}

static int wb_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
	return wf(f)->inner->pMethods->xShmMap(wf(f)->inner, pg, pgsz, extend, pp);
}

static int wb_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
	return wf(f)->inner->pMethods->xShmLock(wf(f)->inner, offset, n, flags);
}

static void wb_shm_barrier(sqlite3_file *f)
{
	wf(f)->inner->pMethods->xShmBarrier(wf(f)->inner);
}

static int wb_shm_unmap(sqlite3_file *f, int del)
{
	return wf(f)->inner->pMethods->xShmUnmap(wf(f)->inner, del);
}

static int wb_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
	struct walbuf_file *w = wf(f);
	int rc = flush(w);

	return rc ? rc : w->inner->pMethods->xFetch(w->inner, off, n, pp);
}

static int wb_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
	return wf(f)->inner->pMethods->xUnfetch(wf(f)->inner, off, p);
}

#define WB_METHODS_V1                                                               \
	.xClose = wb_close, .xRead = wb_read, .xWrite = wb_write, .xTruncate = wb_truncate, \
	.xSync = wb_sync, .xFileSize = wb_file_size, .xLock = wb_lock, .xUnlock = wb_unlock, \
	.xCheckReservedLock = wb_check_reserved, .xFileControl = wb_file_control,           \
	.xSectorSize = wb_sector_size, .xDeviceCharacteristics = wb_device_chars
static const sqlite3_io_methods wb_methods_v1 = { .iVersion = 1, WB_METHODS_V1 };
static const sqlite3_io_methods wb_methods_v2 = {
	.iVersion = 2, WB_METHODS_V1,
	.xShmMap = wb_shm_map, .xShmLock = wb_shm_lock, .xShmBarrier = wb_shm_barrier,
	.xShmUnmap = wb_shm_unmap,
};
static const sqlite3_io_methods wb_methods_v3 = {
	.iVersion = 3, WB_METHODS_V1,
	.xShmMap = wb_shm_map, .xShmLock = wb_shm_lock, .xShmBarrier = wb_shm_barrier,
	.xShmUnmap = wb_shm_unmap, .xFetch = wb_fetch, .xUnfetch = wb_unfetch,
};

/* A WAL file is wrapped; any other file is the inner VFS's own, opened in
 * place (szOsFile leaves it room), with its own methods. */
static int wb_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
	sqlite3_vfs *in = inner_vfs(vfs);
	struct walbuf_file *w = wf(f);
	int rc;

	if (!(flags & SQLITE_OPEN_WAL))
		return in->xOpen(in, name, f, flags, out_flags);
	w->inner = (sqlite3_file *)((unsigned char *)f + WALBUF_FILE_SIZE);
	w->inner->pMethods = NULL;
	w->buf = NULL;
	w->len = 0;
	w->off = 0;
	w->synced = false;
	rc = in->xOpen(in, name, w->inner, flags, out_flags);
	/* SQLite calls xClose whenever pMethods is set, even after a failed
	 * open; wb_close then closes the inner file. */
	if (!w->inner->pMethods)
		w->base.pMethods = NULL;
	else if (w->inner->pMethods->iVersion >= 3)
		w->base.pMethods = &wb_methods_v3;
	else if (w->inner->pMethods->iVersion == 2)
		w->base.pMethods = &wb_methods_v2;
	else
		w->base.pMethods = &wb_methods_v1;
	return rc;
}

static int wb_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
	return inner_vfs(vfs)->xDelete(inner_vfs(vfs), name, sync_dir);
}

static int wb_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	return inner_vfs(vfs)->xAccess(inner_vfs(vfs), name, flags, out);
}

static int wb_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	return inner_vfs(vfs)->xFullPathname(inner_vfs(vfs), name, n, out);
}

static void *wb_dlopen(sqlite3_vfs *vfs, const char *name)
{
	return inner_vfs(vfs)->xDlOpen(inner_vfs(vfs), name);
}

static void wb_dlerror(sqlite3_vfs *vfs, int n, char *msg)
{
	inner_vfs(vfs)->xDlError(inner_vfs(vfs), n, msg);
}

static void (*wb_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
	return inner_vfs(vfs)->xDlSym(inner_vfs(vfs), h, sym);
}

static void wb_dlclose(sqlite3_vfs *vfs, void *h)
{
	inner_vfs(vfs)->xDlClose(inner_vfs(vfs), h);
}

static int wb_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	return inner_vfs(vfs)->xRandomness(inner_vfs(vfs), n, out);
}

static int wb_sleep(sqlite3_vfs *vfs, int us)
{
	return inner_vfs(vfs)->xSleep(inner_vfs(vfs), us);
}

static int wb_current_time(sqlite3_vfs *vfs, double *out)
{
	return inner_vfs(vfs)->xCurrentTime(inner_vfs(vfs), out);
}

static int wb_last_error(sqlite3_vfs *vfs, int n, char *out)
{
	return inner_vfs(vfs)->xGetLastError(inner_vfs(vfs), n, out);
}

static int wb_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
	return inner_vfs(vfs)->xCurrentTimeInt64(inner_vfs(vfs), out);
}

int walbuf_register(struct walbuf_vfs *v)
{
	sqlite3_vfs *in;
	int rc;

	rc = sqlite3_initialize();
	if (rc != SQLITE_OK)
		return rc;
	in = sqlite3_vfs_find(NULL);
	if (!in)
		return SQLITE_ERROR;
	memset(&v->vfs, 0, sizeof(v->vfs));
	/* Version 2 at most: the system-call overrides of version 3 are left
	 * out (nothing here uses them); xCurrentTimeInt64 when the inner
	 * one has it. */
	v->vfs.iVersion = in->iVersion >= 2 && in->xCurrentTimeInt64 ? 2 : 1;
	v->vfs.szOsFile = (int)WALBUF_FILE_SIZE + in->szOsFile;
	v->vfs.mxPathname = in->mxPathname;
	snprintf(v->name, sizeof(v->name), "settled-walbuf-%p", (void *)v);
	v->vfs.zName = v->name;
	v->vfs.pAppData = v;
	/* Each method forwards to the inner one; one the inner VFS lacks
	 * stays NULL here too. */
	v->vfs.xOpen = wb_open;
	v->vfs.xDelete = in->xDelete ? wb_delete : NULL;
	v->vfs.xAccess = in->xAccess ? wb_access : NULL;
	v->vfs.xFullPathname = in->xFullPathname ? wb_full_pathname : NULL;
	v->vfs.xDlOpen = in->xDlOpen ? wb_dlopen : NULL;
	v->vfs.xDlError = in->xDlError ? wb_dlerror : NULL;
	v->vfs.xDlSym = in->xDlSym ? wb_dlsym : NULL;
	v->vfs.xDlClose = in->xDlClose ? wb_dlclose : NULL;
	v->vfs.xRandomness = in->xRandomness ? wb_randomness : NULL;
	v->vfs.xSleep = in->xSleep ? wb_sleep : NULL;
	v->vfs.xCurrentTime = in->xCurrentTime ? wb_current_time : NULL;
	v->vfs.xGetLastError = in->xGetLastError ? wb_last_error : NULL;
	if (v->vfs.iVersion >= 2)
		v->vfs.xCurrentTimeInt64 = wb_current_time64;
	v->inner = in;
	rc = sqlite3_vfs_register(&v->vfs, 0);
	v->registered = rc == SQLITE_OK;
	return rc;
}

const char *walbuf_name(const struct walbuf_vfs *v)
{
	return v->registered ? v->name : NULL;
}

void walbuf_unregister(struct walbuf_vfs *v)
{
	if (v->registered)
		sqlite3_vfs_unregister(&v->vfs);
	v->registered = false;
}

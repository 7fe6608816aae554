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
 * Storage I/O errors the same way, through SQLite's VFS (libsqlite3 is a
 * shared library, so --wrap cannot reach its writes): a VFS that wraps the
 * default one ("unix") is registered as the default at start-up. While the
 * file named by SETTLED_FAULTSIM_IOERR_FILE holds "write" and/or "fsync",
 * every xWrite (SQLITE_IOERR_WRITE) and/or xSync (SQLITE_IOERR_FSYNC) of a
 * main database or WAL file fails without touching the file; "torn" makes
 * each xWrite write the first half of its bytes, then fail (a torn write:
 * what a crash mid-write leaves); "read" makes every xRead of a main
 * database file opened read-only (the store's read connections; the writer
 * and the checkpointer open it read-write) fail with SQLITE_IOERR_READ,
 * and xFetch map nothing there, so every page a reader needs from the file
 * goes through the failing xRead; an absent or empty file lets them through (tests/integration/test_ioerr.py). The file
 * is read at each call: this is a test build, and the test flips it while
 * requests run.
 *
 * A power cut (SETTLED_FAULTSIM_POWERCUT set at start, then "powercut" in
 * that file): from the start, every write or truncate of a main database
 * or WAL file first keeps what it overwrites (its old bytes, the file's
 * size before), per file name, across every connection and thread; a
 * successful xSync of a file forgets what was kept for the writes to that
 * file made before the sync began (the writes fdatasync covers; one made
 * while it ran stays undoable). Once the control file says "powercut", the
 * next write, sync, truncate or read of such a file undoes, newest first,
 * every write not covered by a completed sync, cuts each file back to its
 * size at its last sync, and _exit()s with POWERCUT_EXIT while holding the
 * lock every such write takes: nothing written after the cut, nothing
 * unsynced kept. What a power failure may leave at worst (the page cache
 * lost whole); directory entries and the -shm file are not modelled (the
 * next start recovers the WAL index from the WAL). Durability of an
 * acknowledged write means it survives this
 * (tests/integration/test_ioerr.py,
 * test_a_power_cut_keeps_every_acknowledged_write).
 *
 * A resumed answer held until the stop (SETTLED_FAULTSIM_HOLD_ANSWER set):
 * send_resp() is wrapped too (-Wl,--wrap=send_resp reaches http.c's call
 * for a connection the store's thread resumed), and holds the answer of a
 * request whose write unit was queued until the server is stopping, then
 * three seconds more (past the shortest grace, 1 s, and inside http_stop's
 * 5 s wait for the answers), so that the stop runs while that answer is
 * not sent yet
 * (tests/integration/test_stop_answers.py): what a loaded machine did now
 * and then to a past-the-grace stop before http_stop waited for the
 * answering requests.
 *
 * A poison job (SETTLED_FAULTSIM_ABORT_JOB set): webhook_process_job is
 * wrapped too (-Wl,--wrap=webhook_process_job reaches job_kinds.c's
 * table), and a job whose payload contains that text abort()s the process
 * in its handler, every time it runs: a settled bug triggered by one
 * payload (tests/integration/test_poison_job.py: such a job must end in
 * the DLQ after max_attempts restarts, not crash-loop the server).
 *
 * The state is process-global on purpose: it is a test harness wrapped
 * around the whole program, not part of it. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "request.h"
#include "settled.h"
#include "webhook_job.h"
#include "worker.h"

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
enum MHD_Result __real_send_resp(struct req_ctx *rq);
enum st_rc __real_webhook_process_job(struct job_ctx *ctx);
enum st_rc __wrap_webhook_process_job(struct job_ctx *ctx);
_Bool __wrap_sqlalloc_install(void);
enum MHD_Result __wrap_send_resp(struct req_ctx *rq);

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

/* ---- storage I/O errors: a VFS over the default one ---- */

enum { IOERR_WRITE = 1, IOERR_FSYNC = 2, IOERR_TORN = 4, IOERR_READ = 8, IOERR_POWERCUT = 16 };

static sqlite3_vfs *ioerr_real;      /* the VFS wrapped (the "unix" one) */
static const char *ioerr_path;       /* SETTLED_FAULTSIM_IOERR_FILE */

struct pc_file;

struct ioerr_file {
	sqlite3_file base;
	sqlite3_file *real;              /* follows this struct in the same block */
	int faultable;                   /* a main database or WAL file */
	int read_faultable;              /* a main database file opened read-only */
	struct pc_file *pc;              /* its power-cut record; NULL when not kept */
};

/* The modes in force now: the control file's words. */
static int ioerr_mode(void)
{
	char buf[64];
	ssize_t n;
	int fd, mode = 0;

	if (!ioerr_path || (fd = open(ioerr_path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	if (strstr(buf, "write"))
		mode |= IOERR_WRITE;
	if (strstr(buf, "fsync"))
		mode |= IOERR_FSYNC;
	if (strstr(buf, "torn"))
		mode |= IOERR_TORN;
	if (strstr(buf, "read"))
		mode |= IOERR_READ;
	if (strstr(buf, "powercut"))
		mode |= IOERR_POWERCUT;
	return mode;
}

/* ---- the power cut (see the header comment) ---- */

#define POWERCUT_EXIT 86

/* What one write or truncate overwrote: n old bytes at off (n may be 0: it
 * wrote past the end), and the file's size before it. */
struct pc_undo {
	struct pc_undo *older;
	unsigned long seq;
	sqlite3_int64 off, size_before;
	size_t n;
	unsigned char old[];
};

/* One file name's unsynced writes, whichever connection made them. fd is
 * our own descriptor, opened once and never closed (closing a descriptor
 * of the database file would drop SQLite's POSIX locks on it). */
struct pc_file {
	struct pc_file *next;
	char *name;
	int fd;
	unsigned long seq; /* the last write's */
	struct pc_undo *newest;
};

static pthread_mutex_t pc_mu = PTHREAD_MUTEX_INITIALIZER;
static struct pc_file *pc_files;
static int pc_on; /* SETTLED_FAULTSIM_POWERCUT: keep what writes overwrite */

/* With pc_mu held. */
static struct pc_file *pc_find(const char *name)
{
	struct pc_file *p;

	for (p = pc_files; p; p = p->next)
		if (!strcmp(p->name, name))
			return p;
	p = __real_calloc(1, sizeof(*p));
	if (!p || !(p->name = __real_strdup(name)) || (p->fd = open(name, O_RDWR | O_CLOEXEC)) < 0) {
		fprintf(stderr, "faultsim: power cut: cannot keep %s\n", name);
		abort();
	}
	p->next = pc_files;
	pc_files = p;
	return p;
}

/* The cut, with pc_mu held: never returns. */
static void pc_cut(void)
{
	unsigned long undone = 0;

	for (struct pc_file *p = pc_files; p; p = p->next) {
		sqlite3_int64 size = -1;

		for (struct pc_undo *u = p->newest; u; u = u->older) {
			if (u->n && pwrite(p->fd, u->old, u->n, (off_t)u->off) != (ssize_t)u->n)
				abort();
			size = u->size_before;
			undone++;
		}
		if (size >= 0 && ftruncate(p->fd, (off_t)size))
			abort();
	}
	fprintf(stderr, "faultsim: power cut: %lu unsynced writes undone\n", undone);
	_exit(POWERCUT_EXIT);
}

/* Before a write or truncate of f (pc_mu held): cuts if asked, else keeps
 * the n bytes at off it will overwrite. */
static void pc_keep(struct ioerr_file *f, sqlite3_int64 off, sqlite3_int64 n)
{
	struct pc_file *p = f->pc;
	struct stat st;
	struct pc_undo *u;
	size_t old = 0;

	if (ioerr_mode() & IOERR_POWERCUT)
		pc_cut();
	if (fstat(p->fd, &st))
		abort();
	if (off < (sqlite3_int64)st.st_size)
		old = (size_t)((sqlite3_int64)st.st_size - off < n ? (sqlite3_int64)st.st_size - off : n);
	u = __real_malloc(sizeof(*u) + old);
	if (!u || (old && pread(p->fd, u->old, old, (off_t)off) != (ssize_t)old))
		abort();
	u->off = off;
	u->n = old;
	u->size_before = (sqlite3_int64)st.st_size;
	u->seq = ++p->seq;
	u->older = p->newest;
	p->newest = u;
}

/* After a successful sync of f that began after write number seq: those
 * writes are on disk. */
static void pc_synced(struct ioerr_file *f, unsigned long seq)
{
	struct pc_undo **link, *u;

	pthread_mutex_lock(&pc_mu);
	for (link = &f->pc->newest; *link && (*link)->seq > seq; link = &(*link)->older)
		;
	u = *link;
	*link = NULL;
	pthread_mutex_unlock(&pc_mu);
	while (u) {
		struct pc_undo *older = u->older;

		free(u);
		u = older;
	}
}

static sqlite3_file *ioerr_inner(sqlite3_file *f)
{
	return ((struct ioerr_file *)f)->real;
}

static int ioerr_close(sqlite3_file *f)
{
	return ioerr_inner(f)->pMethods->xClose(ioerr_inner(f));
}

static int ioerr_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
	if (((struct ioerr_file *)f)->pc && (ioerr_mode() & IOERR_POWERCUT)) {
		pthread_mutex_lock(&pc_mu);
		pc_cut();
	}
	if (((struct ioerr_file *)f)->read_faultable && (ioerr_mode() & IOERR_READ))
		return SQLITE_IOERR_READ;
	return ioerr_inner(f)->pMethods->xRead(ioerr_inner(f), p, n, off);
}

static int ioerr_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
	int mode = ((struct ioerr_file *)f)->faultable ? ioerr_mode() : 0;

	int rc;

	if (mode & IOERR_WRITE)
		return SQLITE_IOERR_WRITE;
	if (mode & IOERR_TORN) {
		ioerr_inner(f)->pMethods->xWrite(ioerr_inner(f), p, n / 2, off);
		return SQLITE_IOERR_WRITE;
	}
	if (!((struct ioerr_file *)f)->pc)
		return ioerr_inner(f)->pMethods->xWrite(ioerr_inner(f), p, n, off);
	pthread_mutex_lock(&pc_mu);
	pc_keep((struct ioerr_file *)f, off, n);
	rc = ioerr_inner(f)->pMethods->xWrite(ioerr_inner(f), p, n, off);
	pthread_mutex_unlock(&pc_mu);
	return rc;
}

static int ioerr_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	struct stat st;
	int rc;

	if (!((struct ioerr_file *)f)->pc)
		return ioerr_inner(f)->pMethods->xTruncate(ioerr_inner(f), size);
	pthread_mutex_lock(&pc_mu);
	if (fstat(((struct ioerr_file *)f)->pc->fd, &st))
		abort();
	/* What the cut takes away, kept as a write over it would be. */
	pc_keep((struct ioerr_file *)f, size, (sqlite3_int64)st.st_size - size);
	rc = ioerr_inner(f)->pMethods->xTruncate(ioerr_inner(f), size);
	pthread_mutex_unlock(&pc_mu);
	return rc;
}

static int ioerr_sync(sqlite3_file *f, int flags)
{
	struct ioerr_file *w = (struct ioerr_file *)f;
	unsigned long seq = 0;
	int rc;

	if (w->faultable && (ioerr_mode() & IOERR_FSYNC))
		return SQLITE_IOERR_FSYNC;
	if (!w->pc)
		return ioerr_inner(f)->pMethods->xSync(ioerr_inner(f), flags);
	pthread_mutex_lock(&pc_mu);
	if (ioerr_mode() & IOERR_POWERCUT)
		pc_cut();
	seq = w->pc->seq; /* the writes this sync covers */
	pthread_mutex_unlock(&pc_mu);
	rc = ioerr_inner(f)->pMethods->xSync(ioerr_inner(f), flags);
	if (rc == SQLITE_OK)
		pc_synced(w, seq);
	return rc;
}

static int ioerr_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
	return ioerr_inner(f)->pMethods->xFileSize(ioerr_inner(f), size);
}

static int ioerr_lock(sqlite3_file *f, int lock)
{
	return ioerr_inner(f)->pMethods->xLock(ioerr_inner(f), lock);
}

static int ioerr_unlock(sqlite3_file *f, int lock)
{
	return ioerr_inner(f)->pMethods->xUnlock(ioerr_inner(f), lock);
}

static int ioerr_check_reserved(sqlite3_file *f, int *out)
{
	return ioerr_inner(f)->pMethods->xCheckReservedLock(ioerr_inner(f), out);
}

static int ioerr_file_control(sqlite3_file *f, int op, void *arg)
{
	return ioerr_inner(f)->pMethods->xFileControl(ioerr_inner(f), op, arg);
}

static int ioerr_sector_size(sqlite3_file *f)
{
	return ioerr_inner(f)->pMethods->xSectorSize(ioerr_inner(f));
}

static int ioerr_device_chars(sqlite3_file *f)
{
	return ioerr_inner(f)->pMethods->xDeviceCharacteristics(ioerr_inner(f));
}

static int ioerr_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
	return ioerr_inner(f)->pMethods->xShmMap(ioerr_inner(f), pg, pgsz, extend, pp);
}

static int ioerr_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
	return ioerr_inner(f)->pMethods->xShmLock(ioerr_inner(f), offset, n, flags);
}

static void ioerr_shm_barrier(sqlite3_file *f)
{
	ioerr_inner(f)->pMethods->xShmBarrier(ioerr_inner(f));
}

static int ioerr_shm_unmap(sqlite3_file *f, int del)
{
	return ioerr_inner(f)->pMethods->xShmUnmap(ioerr_inner(f), del);
}

static int ioerr_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
	if (((struct ioerr_file *)f)->read_faultable && (ioerr_mode() & IOERR_READ)) {
		*pp = NULL; /* no mapping: SQLite reads the page with xRead */
		return SQLITE_OK;
	}
	return ioerr_inner(f)->pMethods->xFetch(ioerr_inner(f), off, n, pp);
}

static int ioerr_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
	return ioerr_inner(f)->pMethods->xUnfetch(ioerr_inner(f), off, p);
}

/* Version 3, as the unix VFS's files are; a file whose methods are older
 * (none of unix's) gets ioerr_methods_v1, so SQLite never calls an absent
 * method through the wrapper. */
#define IOERR_METHODS_V1                                                          \
	.xClose = ioerr_close, .xRead = ioerr_read, .xWrite = ioerr_write,            \
	.xTruncate = ioerr_truncate, .xSync = ioerr_sync, .xFileSize = ioerr_file_size, \
	.xLock = ioerr_lock, .xUnlock = ioerr_unlock,                                 \
	.xCheckReservedLock = ioerr_check_reserved, .xFileControl = ioerr_file_control, \
	.xSectorSize = ioerr_sector_size, .xDeviceCharacteristics = ioerr_device_chars
static const sqlite3_io_methods ioerr_methods_v1 = { .iVersion = 1, IOERR_METHODS_V1 };
static const sqlite3_io_methods ioerr_methods_v3 = {
	.iVersion = 3, IOERR_METHODS_V1,
	.xShmMap = ioerr_shm_map, .xShmLock = ioerr_shm_lock, .xShmBarrier = ioerr_shm_barrier,
	.xShmUnmap = ioerr_shm_unmap, .xFetch = ioerr_fetch, .xUnfetch = ioerr_unfetch,
};

static int ioerr_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
	struct ioerr_file *w = (struct ioerr_file *)f;
	int rc;

	(void)vfs;
	w->real = (sqlite3_file *)(w + 1);
	w->faultable = (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL)) != 0;
	w->read_faultable = (flags & SQLITE_OPEN_MAIN_DB) && (flags & SQLITE_OPEN_READONLY);
	w->real->pMethods = NULL;
	w->pc = NULL;
	rc = ioerr_real->xOpen(ioerr_real, name, w->real, flags, out_flags);
	/* After the open: the file exists now (our descriptor needs it). */
	if (rc == SQLITE_OK && pc_on && w->faultable && name) {
		pthread_mutex_lock(&pc_mu);
		w->pc = pc_find(name);
		pthread_mutex_unlock(&pc_mu);
	}
	/* SQLite calls xClose when pMethods is set, even after a failed open;
	 * the wrapper's xClose then closes the real file. */
	if (!w->real->pMethods)
		w->base.pMethods = NULL;
	else if (w->real->pMethods->iVersion >= 3)
		w->base.pMethods = &ioerr_methods_v3;
	else
		w->base.pMethods = &ioerr_methods_v1;
	return rc;
}

static int ioerr_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
	(void)vfs;
	return ioerr_real->xDelete(ioerr_real, name, sync_dir);
}

static int ioerr_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	(void)vfs;
	return ioerr_real->xAccess(ioerr_real, name, flags, out);
}

static int ioerr_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	(void)vfs;
	return ioerr_real->xFullPathname(ioerr_real, name, n, out);
}

static void *ioerr_dlopen(sqlite3_vfs *vfs, const char *name)
{
	(void)vfs;
	return ioerr_real->xDlOpen(ioerr_real, name);
}

static void ioerr_dlerror(sqlite3_vfs *vfs, int n, char *msg)
{
	(void)vfs;
	ioerr_real->xDlError(ioerr_real, n, msg);
}

static void (*ioerr_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
	(void)vfs;
	return ioerr_real->xDlSym(ioerr_real, h, sym);
}

static void ioerr_dlclose(sqlite3_vfs *vfs, void *h)
{
	(void)vfs;
	ioerr_real->xDlClose(ioerr_real, h);
}

static int ioerr_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs;
	return ioerr_real->xRandomness(ioerr_real, n, out);
}

static int ioerr_sleep(sqlite3_vfs *vfs, int us)
{
	(void)vfs;
	return ioerr_real->xSleep(ioerr_real, us);
}

static int ioerr_current_time(sqlite3_vfs *vfs, double *out)
{
	(void)vfs;
	return ioerr_real->xCurrentTime(ioerr_real, out);
}

static int ioerr_last_error(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs;
	return ioerr_real->xGetLastError(ioerr_real, n, out);
}

static int ioerr_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
	(void)vfs;
	return ioerr_real->xCurrentTimeInt64(ioerr_real, out);
}

static int ioerr_set_syscall(sqlite3_vfs *vfs, const char *name, sqlite3_syscall_ptr p)
{
	(void)vfs;
	return ioerr_real->xSetSystemCall(ioerr_real, name, p);
}

static sqlite3_syscall_ptr ioerr_get_syscall(sqlite3_vfs *vfs, const char *name)
{
	(void)vfs;
	return ioerr_real->xGetSystemCall(ioerr_real, name);
}

static const char *ioerr_next_syscall(sqlite3_vfs *vfs, const char *name)
{
	(void)vfs;
	return ioerr_real->xNextSystemCall(ioerr_real, name);
}

static sqlite3_vfs ioerr_vfs = {
	.iVersion = 3,
	.zName = "faultsim-ioerr",
	.xOpen = ioerr_open, .xDelete = ioerr_delete, .xAccess = ioerr_access,
	.xFullPathname = ioerr_full_pathname, .xDlOpen = ioerr_dlopen, .xDlError = ioerr_dlerror,
	.xDlSym = ioerr_dlsym, .xDlClose = ioerr_dlclose, .xRandomness = ioerr_randomness,
	.xSleep = ioerr_sleep, .xCurrentTime = ioerr_current_time, .xGetLastError = ioerr_last_error,
	.xCurrentTimeInt64 = ioerr_current_time64, .xSetSystemCall = ioerr_set_syscall,
	.xGetSystemCall = ioerr_get_syscall, .xNextSystemCall = ioerr_next_syscall,
};

static void ioerr_init(void)
{
	ioerr_path = getenv("SETTLED_FAULTSIM_IOERR_FILE");
	pc_on = getenv("SETTLED_FAULTSIM_POWERCUT") && *getenv("SETTLED_FAULTSIM_POWERCUT");
	ioerr_real = sqlite3_vfs_find(NULL);
	/* Only over a VFS that has every method the wrapper forwards. */
	if (!ioerr_real || ioerr_real->iVersion < 3) {
		fprintf(stderr, "faultsim: no version-3 default SQLite VFS to wrap\n");
		abort();
	}
	ioerr_vfs.szOsFile = (int)sizeof(struct ioerr_file) + ioerr_real->szOsFile;
	ioerr_vfs.mxPathname = ioerr_real->mxPathname;
	if (sqlite3_vfs_register(&ioerr_vfs, 1) != SQLITE_OK) {
		fprintf(stderr, "faultsim: cannot register the I/O-error VFS\n");
		abort();
	}
}

__attribute__((constructor)) static void faultsim_init(void)
{
	struct sigaction sa;

	ioerr_init();

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

/* The answer of a resumed connection (its unit was queued: request_done
 * set RQ_READY), held as the header comment says; at most 30 s waiting
 * for the stop, so a test that never stops the server is not hung. */
enum MHD_Result __wrap_send_resp(struct req_ctx *rq)
{
	const char *hold = getenv("SETTLED_FAULTSIM_HOLD_ANSWER");
	struct settled *app = rq->h->app;
	struct timespec step = { 0, 10 * 1000 * 1000 }, more = { 3, 0 };

	if (hold && *hold && rq->state == RQ_READY && rq->unit_queued) {
		log_msg(&app->log, LOG_WARN, "faultsim: holding a resumed answer until the stop");
		for (int i = 0; i < 3000 && !atomic_load(&app->stopping); i++)
			nanosleep(&step, NULL);
		nanosleep(&more, NULL);
		log_msg(&app->log, LOG_WARN, "faultsim: sending the held answer");
	}
	return __real_send_resp(rq);
}

/* SQLite stays on libc's malloc in this build: src/sqlalloc.c's blocks
 * come from malloc, which is wrapped here, so installing it would make
 * every allocation of SQLite's one that the walk fails ("libraries'
 * internal allocations do not", above). */
_Bool __wrap_sqlalloc_install(void)
{
	return 0;
}

/* The poison job: see the header comment. */
enum st_rc __wrap_webhook_process_job(struct job_ctx *ctx)
{
	const char *poison = getenv("SETTLED_FAULTSIM_ABORT_JOB");

	if (poison && *poison && ctx->job->payload && strstr(ctx->job->payload, poison)) {
		log_msg(&ctx->app->log, LOG_ERROR, "faultsim: job %lld is poison: abort()",
			(long long)ctx->job->id);
		abort();
	}
	return __real_webhook_process_job(ctx);
}

/* storelock.h — one process at a time on an embedded (SQLite) store.
 *
 * Embedded mode assumes it is the only process using its database: the
 * start-up sweep takes every `running` job back as the orphan of a dead
 * process (worker.c, reclaim_unit), in-store jobs are never leased
 * (docs/internals/queue.md), the job crash guard's `<db>-inflight` is one
 * process's (jobguard.h), and the writer's group commit and the fetcher's
 * cursor assume one writer. A second server on the same file (an
 * operator's slip, a supervisor starting the new process before the old
 * one exited, two containers on one volume) would sweep the first one's
 * running jobs back to available and run them again: a second webhook
 * effect, a second rail call for a payout. So every process that must not
 * share the store with a server takes this lock before it touches the
 * store, and refuses to go on when another process holds it: the server
 * (before migrating, sweeping or listening), `settled migrate` and
 * `settled restore`. `settled backup` does not take it (backup.c says why).
 *
 * The lock: flock(LOCK_EX | LOCK_NB) on a file of its own next to the
 * database, `<db>-lock`, opened O_CLOEXEC and kept open for the process's
 * life. The kernel drops it when the last descriptor of that open file
 * goes, so a process that dies in any way (SIGKILL, a crash, the OOM
 * killer) leaves no stale lock: a supervisor's restart starts at once. A
 * lock file is never "stale" and must not be removed by hand: a process
 * that opened the old file and one that created a new one would both hold
 * "the" lock. Its content is only what the holder wrote for the error
 * message (owner, pid, host, since when); nothing reads it as state.
 *
 * Why flock on a separate file and not a lock on the database file:
 *   - SQLite locks the database file itself with POSIX advisory locks
 *     (fcntl F_SETLK on bytes 0x40000000-0x400001FF). POSIX locks belong
 *     to the process, and close() of ANY descriptor of that file by the
 *     process drops all of them: a descriptor of our own on the database
 *     file, closed at the wrong moment, would silently drop SQLite's
 *     locks under a live connection. flock (and OFD) locks belong to the
 *     open file description and are untouched by other descriptors.
 *   - An OFD lock (F_OFD_SETLK) on a byte of the database file SQLite
 *     never locks would avoid the first point but still needs that extra
 *     descriptor on the database (created before SQLite creates the file,
 *     with our mode), and F_OFD_GETLK reports no pid, so the refusal could
 *     not say who holds the store. A file of our own carries the holder's
 *     name, and nothing but this module ever opens it.
 *   - The lock file sits next to the database's real file: the path is
 *     resolved (realpath; when the file does not exist yet, a dangling
 *     symlink followed to its target, then the directory's realpath) the
 *     way SQLite resolves it for its `-wal` and `-shm` and for the file it
 *     creates, so a symlink to the store or a relative path names the same
 *     lock, also before the store exists. Two
 *     containers mounting one volume share the file, and flock works
 *     between them (one kernel). Across machines (NFS) Linux maps flock to
 *     NFS locks; SQLite itself is not safe on a network file system.
 *
 * PostgreSQL mode takes no lock: several instances share one database by
 * design (claims are FOR UPDATE SKIP LOCKED, leases expire). */
#ifndef SETTLED_STORELOCK_H
#define SETTLED_STORELOCK_H

#include "buf.h"
#include "rc.h"

#define STORELOCK_SUFFIX "-lock"

struct storelock;

/* The path of a file of the store's beside its database (suffix appended)
 * into out: db_path resolved as described above, as SQLite resolves it for
 * its -wal and -shm, so every file of one store sits by the real file
 * whatever path names it (a symlink, a relative path). For the lock and
 * the job crash guard's `-inflight` (jobguard.h). ST_TOO_LARGE / ST_NOMEM
 * from the buf. */
enum st_rc storelock_sidecar_path(const char *db_path, const char *suffix, struct buf *out);

/* The lock file's path (what storelock_take locks):
 * storelock_sidecar_path with STORELOCK_SUFFIX. */
enum st_rc storelock_path(const char *db_path, struct buf *out);

/* Takes the store's lock for this process, without waiting. owner names
 * the taker in the file ("settled", "settled migrate", ...). On ST_OK *out
 * holds the lock until storelock_free; it is NULL for a store without a
 * file ("" or ":memory:"), where there is nothing to share. ST_CONFLICT:
 * another process holds it, and err says "<db> is in use by another
 * process (<its owner, pid, host, since>; lock file <path>)". Other
 * failures (the lock file cannot be created or locked) ST_UNAVAILABLE,
 * err says why; the caller must not go on without the lock. */
enum st_rc storelock_take(const char *db_path, const char *owner, struct storelock **out,
			  struct buf *err);

/* Releases the lock (closes its descriptor) and frees. Call it after the
 * store is closed. The file stays (see above). Accepts NULL. */
void storelock_free(struct storelock *l);

#endif

/* jobguard.h — the crash guard of unleased jobs (embedded mode).
 *
 * In embedded mode the jobs of in_store kinds (webhook.process) are never
 * leased (queue.h, "Unleased jobs"): the fetcher reads them on a read
 * connection and they stay `available` while they run, so a process that
 * dies in one left no trace in the store and no attempt was counted. A
 * job whose handler crashes the process every time (a settled bug hit by
 * one payload: abort, segfault, OOM kill) then ran again at every restart
 * for ever, and under a supervisor the whole server was down for everyone;
 * a leased job ends in the DLQ instead (its orphaned lease counts an
 * attempt at the next start).
 *
 * The guard is a small file next to the database's real file
 * (`<db>-inflight`, the path resolved as the store's lock, -wal and -shm
 * are: storelock_sidecar_path, so a symlinked --db names the same file) with
 * one slot per worker thread naming the unleased job that worker is
 * working on right now (its handler, its effect, its after step, its
 * outcome's write), with the row's fence values as read (attempts,
 * updated_at), and cleared when that step ends. At the next start, before
 * any worker runs, a job named there that is still `available` with the
 * same fence died with the process: worker.c counts it a failed attempt
 * (queue_fail_unleased, the same fence), with the backoff and the DLQ of
 * any failed attempt.
 *
 * Writes are stores into a MAP_SHARED mapping of the file: no syscall, no
 * fsync, nothing for the store's writer. The mapping's pages are the page
 * cache's, which outlive the process (the kernel writes them back later,
 * or never): the guard is about a process dying, not the machine; after
 * a machine crash the slots may be lost (nothing is counted, as before)
 * or old (the fence then does not match: nothing is counted). A process
 * dies between two instructions, so a slot half-written is possible: each
 * carries a check over its fields and its index, and one whose check
 * does not match is ignored, as is a file that is missing, short, of
 * another version, or garbage (jobguard_parse). An unreadable guard never
 * stops a start: the server runs without it and says so.
 *
 * One process at a time: the file is locked (flock, LOCK_EX | LOCK_NB)
 * while open; a second process on the same database finds it locked and
 * runs without a guard (and counts nothing from it). A second server
 * never gets that far: the store's own lock (storelock.h) refuses it at
 * start; this one stays for whatever opens a guard without that. Backups
 * need not know the file: a restored database without it counts nothing. */
#ifndef SETTLED_JOBGUARD_H
#define SETTLED_JOBGUARD_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "rc.h"

#define JOBGUARD_SUFFIX "-inflight"
#define JOBGUARD_MAGIC "settled-inflight" /* 16 bytes, no NUL in the file */
#define JOBGUARD_VERSION 1u
#define JOBGUARD_HEADER 64u    /* bytes before slot 0 */
#define JOBGUARD_SLOT 32u      /* bytes a slot: id, updated_at, attempts, check */
#define JOBGUARD_SLOTS_MAX 1024u

/* A job named by a valid slot: its id and the fence values it was
 * marked with. */
struct jobguard_mark {
	int64_t id;
	int64_t updated_at;
	int attempts;
};

/* Parses a guard file's bytes (data may be NULL when len is 0). Fills
 * out[0..) with the valid marks (at most max) and returns how many; a
 * missing header, a wrong magic, version or slot size, or a header whose
 * check fails gives 0. A slot is valid when it lies wholly within len,
 * its id is not 0 (0: empty), id > 0, attempts >= 0, updated_at > 0 and
 * its check matches its fields and index; *invalid (may be NULL) gets the
 * number of non-empty slots that were not (torn, garbage, truncated). */
int jobguard_parse(const unsigned char *data, size_t len, struct jobguard_mark *out, int max,
		   int *invalid);

/* The file's bytes for nslots empty slots' header (JOBGUARD_HEADER bytes
 * into hdr); exposed for the tests. */
void jobguard_header(unsigned char hdr[JOBGUARD_HEADER], unsigned nslots);
/* A slot's bytes (JOBGUARD_SLOT into out) naming m at index slot; for the
 * tests. */
void jobguard_slot_bytes(unsigned char out[JOBGUARD_SLOT], unsigned slot,
			 const struct jobguard_mark *m);

struct jobguard;

/* Opens (or creates) db_path JOBGUARD_SUFFIX and locks it, and reads what
 * the previous process left there: jobguard_previous() then lists it.
 * Nothing is changed in the file until jobguard_arm. ST_CONFLICT when
 * another process holds the lock; other failures as st_rc (err says why).
 * The caller then runs without a guard. */
enum st_rc jobguard_open(const char *db_path, struct jobguard **out, struct buf *err);

/* The valid marks the previous process left (borrowed until
 * jobguard_close), *n their count, *invalid the slots ignored. */
const struct jobguard_mark *jobguard_previous(const struct jobguard *g, int *n, int *invalid);

/* Empties the file (the previous marks are handled by then) and maps
 * nslots empty slots (1..JOBGUARD_SLOTS_MAX). After an error the guard is
 * unarmed: marks are then no-ops. */
enum st_rc jobguard_arm(struct jobguard *g, unsigned nslots, struct buf *err);

/* Names job (id, attempts, updated_at) in slot, or empties it. Thread-safe
 * for distinct slots; no syscall. No-ops when g is NULL or unarmed, or
 * slot is out of range. */
void jobguard_mark(struct jobguard *g, unsigned slot, int64_t id, int attempts,
		   int64_t updated_at);
void jobguard_clear(struct jobguard *g, unsigned slot);

/* A clean stop: empties the file (nothing is in flight), unlocks, frees.
 * Accepts NULL. */
void jobguard_close(struct jobguard *g);

#endif

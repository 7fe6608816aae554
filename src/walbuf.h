/* walbuf.h — an SQLite VFS that writes a WAL file's frames in one system
 * call a commit, not two a frame.
 *
 * SQLite's WAL writes each frame as two writes (its 24-byte header, then
 * the page) and syncs the file at COMMIT: under group commit that is ~90
 * pwrite64 calls a batch of ~45 frames on the writer thread, ~20 % of its
 * time (perf). This VFS wraps the default one; for a WAL file it gathers
 * writes that follow one another in a buffer and hands them to the wrapped
 * file as a few writes of 64 KiB before anything that could look at the file (a sync,
 * a read, its size, a truncate, a file control, closing). Every other
 * file is the wrapped VFS's own, untouched. Nothing is acknowledged that
 * was not written and synced: SQLite syncs the WAL before a commit counts,
 * and that sync first writes what is gathered; a write that fails then
 * fails the sync, which fails the commit as a failed write would have.
 *
 * Not thread-safe per file, like any SQLite file: one connection uses it.
 * A walbuf_vfs is registered under a name of its own (walbuf_name) and is
 * owned by whoever registered it; unregister it after closing every
 * connection opened with it. */
#ifndef SETTLED_WALBUF_H
#define SETTLED_WALBUF_H

#include <sqlite3.h>
#include <stdbool.h>

/* Largest run of writes gathered before they are written anyway. */
#define WALBUF_CAP (1024 * 1024)
/* Largest write handed down at once. SQLite never writes more than a
 * page (64 KiB at most) a call, and its unix VFS relies on it: it cuts a
 * write's length to 17 bits (a 1 MiB write lost its top bits and came
 * back short, "database or disk is full"). */
#define WALBUF_WRITE_MAX (64 * 1024)

struct walbuf_vfs {
	sqlite3_vfs vfs;
	sqlite3_vfs *inner; /* the default VFS when registered */
	char name[48];
	bool registered;
};

/* Registers v (not as the default) over the current default VFS. SQLite's
 * rc. */
int walbuf_register(struct walbuf_vfs *v);
/* The name to pass to sqlite3_open_v2; NULL when v is not registered. */
const char *walbuf_name(const struct walbuf_vfs *v);
void walbuf_unregister(struct walbuf_vfs *v);

#endif

/* sqlalloc.h — SQLite's memory allocator: per-thread caches of small blocks.
 *
 * Debian's SQLite is built with SQLITE_OMIT_LOOKASIDE, so every statement
 * run allocates its cursors, trigger frames and records with malloc and
 * frees them at its reset (~100 malloc/free pairs a webhook job on the
 * writer; malloc, free and SQLite's wrappers of them ~15 % of the writer's
 * instructions, callgrind). A lookaside cannot be turned on per connection
 * in such a build (SQLITE_DBCONFIG_LOOKASIDE is accepted and does nothing).
 * This allocator keeps freed blocks of up to SQLALLOC_CACHED_MAX bytes on
 * the freeing thread's own lists, one per 16-byte size, and hands them out
 * again to that thread's next allocation of the size: no lock, no glibc
 * bookkeeping. docs/internals/store.md "SQLite's allocator". */
#ifndef SETTLED_SQLALLOC_H
#define SETTLED_SQLALLOC_H

#include <stddef.h>

#define SQLALLOC_GRAIN 16
#define SQLALLOC_CACHED_MAX 1024            /* larger blocks: malloc and free */
#define SQLALLOC_BLOCKS_PER_SIZE 32         /* cached blocks of one size, a thread */
#define SQLALLOC_THREAD_MAX_BYTES (256 * 1024) /* cached bytes, a thread */

/* Makes SQLite allocate through this allocator. Only possible before
 * SQLite's first use in the process; later calls, and builds under ASan,
 * TSan or a run under Valgrind's memcheck (which would no longer see
 * SQLite's blocks freed), leave SQLite on malloc and change nothing.
 * Returns true when this call (or an earlier one) installed it. */
_Bool sqlalloc_install(void);

/* True when this build or run keeps SQLite on malloc whatever install is
 * asked (ASan, TSan, memcheck). */
_Bool sqlalloc_off(void);
/* True once install succeeded (without trying it). */
_Bool sqlalloc_installed(void);

/* The allocator's functions, for tests: they work, caches included, in
 * every build and without install. n > 0. */
void *sqlalloc_malloc(int n);
void sqlalloc_free(void *p);
void *sqlalloc_realloc(void *p, int n);
int sqlalloc_size(void *p);
/* Bytes the calling thread has cached. */
size_t sqlalloc_thread_cached(void);
/* Frees the calling thread's cache (what a thread's exit does). */
void sqlalloc_thread_flush(void);

#endif

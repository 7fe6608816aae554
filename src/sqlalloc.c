/* sqlalloc.c — see sqlalloc.h. */
#include "sqlalloc.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* SQLALLOC_FORCE_ON (tests/unit/test_sqlalloc_forced.c, which compiles
 * this file into itself with it): on under ASan and TSan too, so that the
 * sanitizer suites see SQLite's real use of it at least once (ASan: a
 * block freed by the wrong allocator, written past its end, or left in a
 * cache at a thread's exit (LSan); TSan: a block handed between threads
 * without a lock). */
#if defined(SQLALLOC_FORCE_ON)
#define SQLALLOC_SANITIZED 0
#elif defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SQLALLOC_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SQLALLOC_SANITIZED 1
#endif
#endif
#ifndef SQLALLOC_SANITIZED
#define SQLALLOC_SANITIZED 0
#endif
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define SQLALLOC_HAVE_MEMCHECK 1
#endif
#endif
#include "banned.h"

#define NSIZES (SQLALLOC_CACHED_MAX / SQLALLOC_GRAIN)

/* Before each block: its usable size (a multiple of the grain), and the
 * next cached block while it is cached. 16 bytes, so a block keeps
 * malloc's 16-byte alignment. Cached blocks are linked by their headers,
 * the start of what malloc returned, so a leak checker sees them
 * reachable. */
struct hdr {
	size_t size;
	struct hdr *next;
};

/* One thread's cache: lists by size, counts, bytes. Zero is empty. */
struct cache {
	struct hdr *head[NSIZES];
	unsigned short n[NSIZES];
	size_t bytes;
	bool armed; /* registered for the flush at the thread's exit */
};

/* Process-wide by nature, as SQLite's allocator is: set once (the key, the
 * outcome of install); each thread's cache is its own. */
static _Thread_local struct cache tcache;
static pthread_key_t exit_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static atomic_bool key_made;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static atomic_bool installed;

static size_t round_up(int n)
{
	return ((size_t)n + SQLALLOC_GRAIN - 1) & ~(size_t)(SQLALLOC_GRAIN - 1);
}

void *sqlalloc_malloc(int n)
{
	size_t size = round_up(n > 0 ? n : 1);
	struct hdr *h;

	if (size <= SQLALLOC_CACHED_MAX) {
		size_t i = size / SQLALLOC_GRAIN - 1;

		h = tcache.head[i];
		if (h) {
			tcache.head[i] = h->next;
			tcache.n[i]--;
			tcache.bytes -= size;
			return h + 1;
		}
	}
	h = malloc(sizeof(*h) + size);
	if (!h)
		return NULL;
	h->size = size;
	return h + 1;
}

/* The thread's exit: its cached blocks go back to malloc. */
static void thread_exit(void *arg)
{
	(void)arg;
	sqlalloc_thread_flush();
}

static void make_key(void)
{
	atomic_store(&key_made, pthread_key_create(&exit_key, thread_exit) == 0);
}

/* A thread caches only once its exit is sure to flush the cache. */
static bool arm(void)
{
	pthread_once(&key_once, make_key);
	tcache.armed = atomic_load(&key_made) && pthread_setspecific(exit_key, &tcache) == 0;
	return tcache.armed;
}

void sqlalloc_thread_flush(void)
{
	for (size_t i = 0; i < NSIZES; i++) {
		while (tcache.head[i]) {
			struct hdr *h = tcache.head[i];

			tcache.head[i] = h->next;
			free(h);
		}
		tcache.n[i] = 0;
	}
	tcache.bytes = 0;
	tcache.armed = false;
}

void sqlalloc_free(void *p)
{
	struct hdr *h;

	if (!p)
		return;
	h = (struct hdr *)p - 1;
	if (h->size <= SQLALLOC_CACHED_MAX) {
		size_t i = h->size / SQLALLOC_GRAIN - 1;

		if ((tcache.armed || arm()) && tcache.n[i] < SQLALLOC_BLOCKS_PER_SIZE &&
		    tcache.bytes + h->size <= SQLALLOC_THREAD_MAX_BYTES) {
			h->next = tcache.head[i];
			tcache.head[i] = h;
			tcache.n[i]++;
			tcache.bytes += h->size;
			return;
		}
	}
	free(h);
}

void *sqlalloc_realloc(void *p, int n)
{
	size_t size = round_up(n > 0 ? n : 1);
	struct hdr *h;
	void *q;

	if (!p)
		return sqlalloc_malloc(n);
	h = (struct hdr *)p - 1;
	if (size == h->size)
		return p;
	if (size > SQLALLOC_CACHED_MAX && h->size > SQLALLOC_CACHED_MAX) {
		/* Neither size is cached: malloc's own realloc, in place when it can. */
		struct hdr *g = realloc(h, sizeof(*h) + size);

		if (!g)
			return NULL;
		g->size = size;
		return g + 1;
	}
	q = sqlalloc_malloc(n);
	if (!q)
		return NULL;
	memcpy(q, p, size < h->size ? size : h->size);
	sqlalloc_free(p);
	return q;
}

int sqlalloc_size(void *p)
{
	return p ? (int)((struct hdr *)p - 1)->size : 0;
}

size_t sqlalloc_thread_cached(void)
{
	return tcache.bytes;
}

static int m_size(void *p)
{
	return sqlalloc_size(p);
}

static int m_roundup(int n)
{
	return (int)round_up(n);
}

static int m_init(void *arg)
{
	(void)arg;
	return SQLITE_OK;
}

static void m_shutdown(void *arg)
{
	(void)arg;
}

static const sqlite3_mem_methods methods = {
	sqlalloc_malloc, sqlalloc_free, sqlalloc_realloc, m_size, m_roundup, m_init, m_shutdown, NULL,
};

/* Under memcheck, blocks that sit in a cache are still allocated to it:
 * it would no longer see SQLite's use of a freed block, so it keeps
 * malloc. (Its GET_VBITS request answers 0 on any other tool or natively:
 * callgrind profiles this allocator.) */
static bool under_memcheck(void)
{
#ifdef SQLALLOC_HAVE_MEMCHECK
	char byte = 0, bits = 0;

	return VALGRIND_GET_VBITS(&byte, &bits, 1) != 0;
#else
	return false;
#endif
}

bool sqlalloc_off(void)
{
	return SQLALLOC_SANITIZED || under_memcheck();
}

bool sqlalloc_installed(void)
{
	return atomic_load(&installed);
}

static void install(void)
{
	if (sqlalloc_off())
		return;
	pthread_once(&key_once, make_key);
	if (!atomic_load(&key_made))
		return;
	/* Refused (SQLITE_MISUSE) once SQLite is in use: it keeps malloc,
	 * and never mixes the two. */
	atomic_store(&installed, sqlite3_config(SQLITE_CONFIG_MALLOC, &methods) == SQLITE_OK);
}

bool sqlalloc_install(void)
{
	pthread_once(&install_once, install);
	return atomic_load(&installed);
}

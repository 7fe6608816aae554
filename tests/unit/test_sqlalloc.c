/* test_sqlalloc.c — SQLite's allocator (src/sqlalloc.c): sizes, contents
 * through realloc, the per-thread caches and their bounds, blocks freed on
 * another thread than the one that allocated them (its functions called
 * directly: they cache in every build), and that a SQLite store really
 * allocates through it. Each test is its own process (criterion), so SQLite
 * is unused when the store installs it. Builds under ASan or TSan, and runs
 * under memcheck, leave SQLite on malloc by design: that one test says so
 * and is skipped there. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "sqlalloc.h"
#include "store.h"

#include "banned.h"

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed + i * 7);
}

static bool same(const unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (unsigned char)(seed + i * 7))
			return false;
	return true;
}

Test(sqlalloc, a_block_is_aligned_and_its_size_is_the_rounded_request)
{
	static const int sizes[] = { 1, 15, 16, 17, 100, 1023, 1024, 1025, 4096, 100000 };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		unsigned char *p = sqlalloc_malloc(sizes[i]);
		int want = (sizes[i] + 15) / 16 * 16;

		cr_assert_not_null(p);
		cr_assert_eq((uintptr_t)p % 16, 0, "%d: %p", sizes[i], (void *)p);
		cr_assert_eq(sqlalloc_size(p), want, "%d: size %d", sizes[i], sqlalloc_size(p));
		fill(p, (size_t)want, (unsigned)i); /* the whole size is usable */
		cr_assert(same(p, (size_t)want, (unsigned)i));
		sqlalloc_free(p);
	}
	sqlalloc_free(NULL);
	cr_assert_eq(sqlalloc_size(NULL), 0);
}

Test(sqlalloc, realloc_keeps_the_contents_across_every_kind_of_size)
{
	/* cached -> cached, cached -> large, large -> large, large -> cached. */
	static const int steps[] = { 24, 200, 200, 1000, 3000, 70000, 5000, 512, 8 };
	unsigned char *p;
	int have = 8;

	p = sqlalloc_malloc(8);
	fill(p, 8, 3);
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		int keep = have < steps[i] ? have : steps[i];

		p = sqlalloc_realloc(p, steps[i]);
		cr_assert_not_null(p);
		cr_assert(same(p, (size_t)keep, 3), "step %zu (%d -> %d)", i, have, steps[i]);
		cr_assert_geq(sqlalloc_size(p), steps[i]);
		fill(p, (size_t)steps[i], 3);
		have = steps[i];
	}
	sqlalloc_free(p);
	p = sqlalloc_realloc(NULL, 40);
	cr_assert_not_null(p);
	sqlalloc_free(p);
}

Test(sqlalloc, a_freed_block_is_the_next_one_of_its_size_on_that_thread)
{
	void *a, *b, *c;

	a = sqlalloc_malloc(100);
	sqlalloc_free(a);
	cr_assert_eq(sqlalloc_thread_cached(), 112);
	b = sqlalloc_malloc(97); /* the same 112-byte size */
	cr_assert_eq(b, a);
	cr_assert_eq(sqlalloc_thread_cached(), 0);
	c = sqlalloc_malloc(100); /* none cached now: a new block */
	cr_assert_neq(c, a);
	sqlalloc_free(b);
	sqlalloc_free(c);
	cr_assert_eq(sqlalloc_thread_cached(), 224);
	sqlalloc_thread_flush();
	cr_assert_eq(sqlalloc_thread_cached(), 0);
}

Test(sqlalloc, a_thread_caches_a_bounded_number_and_size_of_blocks)
{
	enum { N = SQLALLOC_BLOCKS_PER_SIZE + 10 };
	void *p[N];
	/* Enough of every cached size to pass the byte bound. */
	size_t nbig = 2 * (SQLALLOC_THREAD_MAX_BYTES / SQLALLOC_CACHED_MAX) + 10;
	void **big = calloc(nbig, sizeof(*big));

	for (int i = 0; i < N; i++)
		p[i] = sqlalloc_malloc(64);
	for (int i = 0; i < N; i++)
		sqlalloc_free(p[i]);
	cr_assert_eq(sqlalloc_thread_cached(), (size_t)SQLALLOC_BLOCKS_PER_SIZE * 64);
	sqlalloc_thread_flush();
	/* Large blocks are never cached. */
	p[0] = sqlalloc_malloc(SQLALLOC_CACHED_MAX + 1);
	sqlalloc_free(p[0]);
	cr_assert_eq(sqlalloc_thread_cached(), 0);
	/* The byte bound, over sizes each under its count bound. */
	cr_assert_not_null(big);
	for (size_t i = 0; i < nbig; i++)
		big[i] = sqlalloc_malloc(SQLALLOC_CACHED_MAX - (int)(i % 32) * 16);
	for (size_t i = 0; i < nbig; i++)
		sqlalloc_free(big[i]);
	cr_assert_leq(sqlalloc_thread_cached(), (size_t)SQLALLOC_THREAD_MAX_BYTES);
	cr_assert_gt(sqlalloc_thread_cached(), (size_t)SQLALLOC_THREAD_MAX_BYTES - SQLALLOC_CACHED_MAX);
	free(big);
}

/* Blocks made on one thread and freed on another (SQLite frees a
 * connection's memory on whichever thread uses it next), in both
 * directions, while both threads also reuse their own caches. */
struct pass {
	pthread_mutex_t mu;
	unsigned char *slot[64];
	int rounds;
	bool bad;
};

static void *producer(void *arg)
{
	struct pass *ps = arg;

	for (int r = 0; r < ps->rounds; r++) {
		for (int i = 0; i < 64; i++) {
			int n = 1 + (r * 64 + i) % 1500;
			unsigned char *mine = sqlalloc_malloc(n), *old;

			cr_assert_not_null(mine);
			fill(mine, (size_t)n, (unsigned)n);
			pthread_mutex_lock(&ps->mu);
			old = ps->slot[i];
			ps->slot[i] = mine;
			pthread_mutex_unlock(&ps->mu);
			sqlalloc_free(old); /* often the other thread's */
		}
	}
	return NULL;
}

Test(sqlalloc, blocks_freed_by_another_thread_keep_their_contents)
{
	struct pass ps = { .rounds = 400 };
	pthread_t t[2];

	pthread_mutex_init(&ps.mu, NULL);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, producer, &ps), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 64; i++) {
		unsigned char *p = ps.slot[i];
		int n = sqlalloc_size(p);
		bool found = false;

		/* The last block put in slot i holds the pattern of its own
		 * request, some n' <= its size with the same rounding. */
		for (int m = n - 15; m <= n && !found; m++)
			found = m > 0 && same(p, (size_t)m, (unsigned)m);
		cr_assert(found, "slot %d: contents lost", i);
		sqlalloc_free(p);
	}
	pthread_mutex_destroy(&ps.mu);
}

static enum st_rc count_unit(struct tx *tx, void *arg)
{
	struct st_rows *rows = NULL;
	enum st_rc rc = tx_query(tx, "SELECT count(*) FROM schema_version", ST_NOARGS, &rows);

	*(int64_t *)arg = rc ? -1 : rows_i64(rows, 0, 0);
	rows_free(rows);
	return rc;
}

/* The store installs it at open: SQLite's blocks freed on this thread (a
 * read runs on its caller's thread) land in this thread's cache. */
Test(sqlalloc, a_sqlite_store_allocates_through_it)
{
	char dir[] = "/tmp/test_sqlalloc.XXXXXX", path[64];
	struct store_options o = { .sqlite_path = path };
	struct buf err = BUF_INIT(1024);
	struct store *s = NULL;
	int64_t n = 0;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/store.db", dir);
	cr_assert_eq(sqlalloc_thread_cached(), 0);
	cr_assert_eq(store_open(&o, &s, &err), ST_OK, "%s", err.ptr);
	if (sqlalloc_off()) {
		store_close(s);
		buf_release(&err);
		cr_skip_test("the allocator is off in this build (ASan, TSan or memcheck)");
	}
	cr_assert(sqlalloc_installed(), "store_open did not install the allocator");
	cr_assert_eq(store_read(s, count_unit, &n), ST_OK);
	cr_assert_gt(n, 0);
	cr_assert_gt(sqlalloc_thread_cached(), 0, "SQLite did not allocate through sqlalloc");
	store_close(s);
	buf_release(&err);
	/* The library refuses a second allocator once in use: nothing changes. */
	cr_assert(sqlalloc_install());
	cr_assert_neq(sqlite3_config(SQLITE_CONFIG_MALLOC, &(sqlite3_mem_methods){ 0 }), SQLITE_OK);
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		cr_assert_eq(system(cmd), 0);
	}
}

/* test_sqlalloc_forced.c — SQLite's allocator (src/sqlalloc.c) under real
 * use by a SQLite store, in every build: this file compiles sqlalloc.c into
 * itself with SQLALLOC_FORCE_ON, so the allocator is installed under ASan
 * and TSan too, where the server and every other test keep SQLite on
 * malloc. (The linker takes these definitions; libsettled.a's sqlalloc.o is
 * then never pulled in, and store_sqlite_open's install call lands here.)
 *
 * What only a sanitizer build can see of the allocator: under make asan, a
 * block SQLite frees that this allocator did not make (or the reverse), a
 * write past a block's end, and a thread's cache left behind at its exit
 * (LeakSanitizer, which tests/sanitized turns into a failure); under make
 * tsan, a block handed from one thread to another without a lock between
 * them. The workload: several threads writing and reading through one
 * store (the writer, the readers' connections, the checkpointer all
 * allocate and free), blocks of many sizes (cached ones and larger ones,
 * realloc'd as statements grow them), failing units rolled back, and
 * threads that exit while SQLite still holds blocks they allocated, then
 * new threads using the same connections. Each test is its own process
 * (criterion), so SQLite is unused when the store installs it. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "store.h"

#define SQLALLOC_FORCE_ON 1
#include "../../src/sqlalloc.c" /* ends with banned.h */

enum { THREADS = 4, ROUNDS = 2, WRITES = 60 };

struct worker {
	struct store *s;
	int no, round;
	int64_t written; /* rows this thread committed */
	bool bad;
};

struct put {
	const char *v;
	size_t len;
	bool fail;
};

static enum st_rc put_unit(struct tx *tx, void *arg)
{
	struct put *p = arg;
	enum st_rc rc = tx_exec(tx, "INSERT INTO sqlalloc_t (v) VALUES ($1)",
				ST_ARGS(SV_SN(p->v, p->len)), NULL);

	/* A failing unit: its row and its savepoint's blocks go back. */
	return rc == ST_OK && p->fail ? ST_CONFLICT : rc;
}

struct count {
	int64_t rows, bytes;
};

static enum st_rc count_unit(struct tx *tx, void *arg)
{
	struct count *c = arg;
	struct st_rows *rows = NULL;
	enum st_rc rc = tx_query(tx, "SELECT count(*), coalesce(sum(length(v)), 0) FROM sqlalloc_t",
				 ST_NOARGS, &rows);

	if (rc == ST_OK) {
		c->rows = rows_i64(rows, 0, 0);
		c->bytes = rows_i64(rows, 0, 1);
	}
	rows_free(rows);
	return rc;
}

static enum st_rc make_table(struct tx *tx, void *arg)
{
	(void)arg;
	return tx_exec(tx, "CREATE TABLE sqlalloc_t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
		       ST_NOARGS, NULL);
}

static void *work(void *arg)
{
	struct worker *w = arg;
	char *v = malloc(5000);

	if (!v) {
		w->bad = true;
		return NULL;
	}
	for (int i = 0; i < WRITES && !w->bad; i++) {
		/* 1 .. ~4.5k bytes: records of every cached size and larger. */
		size_t len = 1 + (size_t)((w->no * 977 + w->round * 131 + i * 613) % 4500);
		struct put p = { v, len, i % 7 == 3 };
		struct count c = { 0, 0 };
		enum st_rc rc;

		memset(v, 'a' + (i + w->no) % 26, len);
		rc = store_run(w->s, put_unit, &p);
		if (p.fail ? rc != ST_CONFLICT : rc != ST_OK)
			w->bad = true;
		else if (!p.fail)
			w->written++;
		/* A read on this thread's turn of the reader pool. */
		if (store_read(w->s, count_unit, &c) != ST_OK || c.rows < w->written)
			w->bad = true;
	}
	free(v);
	return NULL; /* its cache is flushed here; SQLite keeps its blocks */
}

Test(sqlalloc_forced, a_store_used_by_many_threads_allocates_through_it_cleanly)
{
	char dir[] = "/tmp/test_sqlalloc_forced.XXXXXX", path[80];
	struct store_options o = { .sqlite_path = path };
	struct buf err = BUF_INIT(1024);
	struct store *s = NULL;
	struct count c = { 0, 0 };
	int64_t expected = 0;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/store.db", dir);
	cr_assert_eq(store_open(&o, &s, &err), ST_OK, "%s", err.ptr);
	if (under_memcheck()) {
		store_close(s);
		buf_release(&err);
		cr_skip_test("memcheck keeps SQLite on malloc (it checks SQLite's blocks itself)");
	}
	cr_assert(sqlalloc_installed(), "store_open did not install the allocator in this build");
	cr_assert_eq(store_run(s, make_table, NULL), ST_OK);
	/* Two rounds of threads: the second uses the connections, and the
	 * blocks, that the first round's threads left when they exited. */
	for (int r = 0; r < ROUNDS; r++) {
		struct worker w[THREADS];
		pthread_t t[THREADS];

		for (int i = 0; i < THREADS; i++) {
			w[i] = (struct worker){ .s = s, .no = i, .round = r };
			cr_assert_eq(pthread_create(&t[i], NULL, work, &w[i]), 0);
		}
		for (int i = 0; i < THREADS; i++) {
			pthread_join(t[i], NULL);
			cr_assert(!w[i].bad, "round %d thread %d: a unit or a read went wrong", r, i);
			expected += w[i].written;
		}
	}
	cr_assert_eq(store_read(s, count_unit, &c), ST_OK);
	cr_assert_eq(c.rows, expected);
	store_close(s);
	/* This thread's own cache: what the main thread's exit would leave. */
	sqlalloc_thread_flush();
	buf_release(&err);
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		cr_assert_eq(system(cmd), 0);
	}
}

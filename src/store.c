/* store.c — backend-independent parts of the store: choosing a backend,
 * the synchronous wrapper around write units, nested savepoints, the
 * materialised result helpers, and what both backends share (the clock,
 * the statement cache, the reader pool, the write-unit queue, the
 * migration runner). See store.h for the contract. */
#include "store.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include <openssl/rand.h>

#include "clock.h"
#include "fmt.h"
#include "hex.h"
#include "log.h"
#include "randpool.h"

#include "banned.h"

enum st_rc store_open(const struct store_options *opt, struct store **out, struct buf *err)
{
	if (opt->database_url && *opt->database_url)
		return store_pg_open(opt, out, err);
	return store_sqlite_open(opt, out, err);
}

void tx_random(struct tx *tx, void *out, size_t n)
{
	if (tx->rand) {
		randpool_bytes(tx->rand, out, n); /* zeroes out on failure */
		return;
	}
	if (RAND_bytes(out, (int)n) != 1)
		memset(out, 0, n);
}

void tx_new_id(struct tx *tx, const char *prefix, char out[ST_ID_MAX + 1])
{
	unsigned char raw[12];
	size_t p = strlen(prefix);
	uint64_t ms = (uint64_t)tx_now_ms(tx);

	if (p > 12)
		p = 12;
	/* 6 bytes of milliseconds, then 6 random: ids made together sort
	 * together, so each primary-key index takes its inserts at its right
	 * edge (one leaf page per group commit) instead of one random leaf
	 * per row, each a page the WAL must write again. 48 random bits per
	 * millisecond keep a clash out of reach; the key would refuse one. */
	for (int i = 0; i < 6; i++)
		raw[i] = (unsigned char)(ms >> (40 - 8 * i));
	tx_random(tx, raw + 6, 6);
	memcpy(out, prefix, p);
	hex_encode(raw, sizeof(raw), out + p);
}

void store_close(struct store *s)
{
	if (s)
		s->ops->close(s);
}

/* store_run waits on this; it lives on the caller's stack, which is safe
 * because the caller cannot return before done() has signalled. */
struct sync_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int finished;
	enum st_rc rc;
};

static void sync_done(void *arg, enum st_rc rc)
{
	struct sync_wait *w = arg;

	pthread_mutex_lock(&w->mu);
	w->rc = rc;
	w->finished = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

struct sync_unit {
	store_unit_fn *fn;
	void *arg;
	struct sync_wait wait;
};

static enum st_rc sync_run(struct tx *tx, void *arg)
{
	struct sync_unit *u = arg;

	return u->fn(tx, u->arg);
}

static void sync_unit_done(void *arg, enum st_rc rc)
{
	struct sync_unit *u = arg;

	sync_done(&u->wait, rc);
}

enum st_rc store_run(struct store *s, store_unit_fn *fn, void *arg)
{
	struct sync_unit u = { .fn = fn, .arg = arg };
	enum st_rc rc;

	pthread_mutex_init(&u.wait.mu, NULL);
	pthread_cond_init(&u.wait.cv, NULL);
	rc = s->ops->submit_background ? s->ops->submit_background(s, sync_run, sync_unit_done, &u)
					: store_submit(s, sync_run, sync_unit_done, &u);
	if (rc == ST_OK) {
		pthread_mutex_lock(&u.wait.mu);
		while (!u.wait.finished)
			pthread_cond_wait(&u.wait.cv, &u.wait.mu);
		rc = u.wait.rc;
		pthread_mutex_unlock(&u.wait.mu);
	}
	pthread_cond_destroy(&u.wait.cv);
	pthread_mutex_destroy(&u.wait.mu);
	return rc;
}

enum st_rc tx_exec(struct tx *tx, const char *sql, int n, const struct st_val *params,
		   int64_t *changes)
{
	return tx->ops->exec(tx, sql, n, params, changes, NULL);
}

enum st_rc tx_exec_deferred(struct tx *tx, const char *sql, int n, const struct st_val *params)
{
	if (tx->ops->exec_deferred)
		return tx->ops->exec_deferred(tx, sql, n, params);
	return tx->ops->exec(tx, sql, n, params, NULL, NULL);
}

enum st_rc tx_query(struct tx *tx, const char *sql, int n, const struct st_val *params,
		    struct st_rows **out)
{
	return tx->ops->exec(tx, sql, n, params, NULL, out);
}

enum st_rc tx_query_one(struct tx *tx, const char *sql, int n, const struct st_val *params,
			struct st_rows **out)
{
	enum st_rc rc = tx_query(tx, sql, n, params, out);

	if (rc == ST_OK && !(*out)->nrows) {
		rows_free(*out);
		*out = NULL;
		rc = ST_NOT_FOUND;
	}
	return rc;
}

enum st_dialect tx_dialect(const struct tx *tx)
{
	return tx->dialect;
}

int64_t tx_now_ms(const struct tx *tx)
{
	return tx->now_ms;
}

enum st_rc tx_nested(struct tx *tx, store_unit_fn *fn, void *arg)
{
	int depth = tx->depth + 1;
	int mark;
	enum st_rc rc, rc2;

	rc = tx->ops->savepoint(tx, depth);
	if (rc)
		return rc;
	tx->depth = depth;
	mark = tx->nafter;
	rc = fn(tx, arg);
	tx->depth = depth - 1;
	if (rc) {
		tx->nafter = mark; /* its after-commit work goes with its writes */
		rc2 = tx->ops->rollback_to(tx, depth);
		if (rc2)
			return rc2;
	}
	rc2 = tx->ops->release(tx, depth);
	return rc ? rc : rc2;
}

enum st_rc tx_nested_nowait(struct tx *tx, store_unit_fn *fn, void *arg)
{
	if (tx->ops->nested_nowait)
		return tx->ops->nested_nowait(tx, fn, arg);
	return tx_nested(tx, fn, arg);
}

const char *rows_text(const struct st_rows *r, int row, int col)
{
	if (!r || row < 0 || row >= r->nrows || col < 0 || col >= r->ncols)
		return NULL;
	return r->cells[row * r->ncols + col];
}

size_t rows_len(const struct st_rows *r, int row, int col)
{
	if (!rows_text(r, row, col))
		return 0;
	return r->lens[row * r->ncols + col];
}

int64_t rows_i64(const struct st_rows *r, int row, int col)
{
	const char *t = rows_text(r, row, col);

	return t ? strtoll(t, NULL, 10) : 0;
}

void rows_copy(const struct st_rows *r, int row, int col, char *dst, size_t cap)
{
	const char *t = rows_text(r, row, col);

	/* fmt_str, not snprintf(dst, cap, "%s", t): the same bytes without
	 * vfprintf (~570 instructions a call; a webhook job's payee lookup
	 * on the writer makes three). */
	if (cap)
		fmt_str(dst, cap, t ? t : "");
}

void rows_free(struct st_rows *r)
{
	if (!r)
		return;
	if (r->blocks) {
		for (int i = 0; i < r->nrows; i++)
			free(r->blocks[i]);
		free(r->blocks);
	} else {
		for (int i = 0; i < r->nrows * r->ncols; i++)
			free(r->cells[i]);
	}
	free(r->cells);
	free(r->lens);
	free(r);
}

const char *store_write_fault_str(enum store_write_fault f)
{
	switch (f) {
	case STORE_WRITE_DISK_FULL:
		return "disk_full";
	case STORE_WRITE_IO_ERROR:
		return "io_error";
	case STORE_WRITE_OK:
		break;
	}
	return "ok";
}

const char *store_retry_cause_str(enum store_retry_cause c)
{
	switch (c) {
	case STORE_RETRY_DEADLOCK:
		return "deadlock";
	case STORE_RETRY_SERIALIZATION:
		return "serialization";
	case STORE_RETRY_LOCK_TIMEOUT:
		return "lock_timeout";
	case STORE_RETRY_BUSY:
		return "busy";
	case STORE_RETRY_BATCH:
		return "batch";
	case STORE_RETRY_CONNECTION:
	case STORE_RETRY_CAUSES:
		break;
	}
	return "connection";
}

enum st_rc tx_after_commit(struct tx *tx, tx_after_fn *fn, void *arg, int64_t n)
{
	if (tx->nafter == tx->after_cap) {
		int cap = tx->after_cap ? 2 * tx->after_cap : 16;
		struct tx_after *a = cap > tx->after_cap ? realloc(tx->after, (size_t)cap * sizeof(*a)) : NULL;

		if (!a)
			return ST_NOMEM;
		tx->after = a;
		tx->after_cap = cap;
	}
	tx->after[tx->nafter++] = (struct tx_after){ .fn = fn, .arg = arg, .n = n };
	return ST_OK;
}

void tx_after_drop(struct tx *tx)
{
	free(tx->after);
	tx->after = NULL;
	tx->nafter = tx->after_cap = 0;
}

void tx_after_run(struct tx *tx)
{
	for (int i = 0; i < tx->nafter; i++)
		tx->after[i].fn(tx->after[i].arg, tx->after[i].n);
	tx_after_drop(tx);
}

/* ---- shared by the backends ---- */

#define STMT_CACHE_MIN 64

int64_t store_clock_ms(const struct store *s)
{
	struct timespec ts;

	if (s->clock_ms)
		return s->clock_ms(s->clock_arg);
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t slot_hash(const char *sql, size_t n)
{
	uintptr_t p = (uintptr_t)sql;

	p ^= p >> 17;
	p *= (uintptr_t)0x9e3779b97f4a7c15ULL;
	return (size_t)(p >> 7) & (n - 1);
}

static enum st_rc cache_grow(struct stmt_cache *c)
{
	size_t n = c->nslots ? c->nslots * 2 : STMT_CACHE_MIN;
	struct stmt_slot *slots = calloc(n, sizeof(*slots));

	if (!slots)
		return ST_NOMEM;
	for (size_t i = 0; i < c->nslots; i++) {
		size_t h;

		if (!c->slots[i].sql)
			continue;
		h = slot_hash(c->slots[i].sql, n);
		while (slots[h].sql)
			h = (h + 1) & (n - 1);
		slots[h] = c->slots[i];
	}
	free(c->slots);
	c->slots = slots;
	c->nslots = n;
	return ST_OK;
}

struct stmt_slot *stmt_cache_find(struct stmt_cache *c, const char *sql, bool *found)
{
	size_t h;

	*found = false;
	if (c->used * 2 >= c->nslots && cache_grow(c))
		return NULL;
	h = slot_hash(sql, c->nslots);
	while (c->slots[h].sql) {
		if (c->slots[h].sql == sql) {
			*found = true;
			return &c->slots[h];
		}
		h = (h + 1) & (c->nslots - 1);
	}
	return &c->slots[h];
}

void stmt_cache_fill(struct stmt_cache *c, struct stmt_slot *slot, const char *sql)
{
	slot->sql = sql;
	c->used++;
}

/* A multi-row statement's text, made for one connection (its cache). */
struct stmt_rows_text {
	const struct st_rows_sql *q;
	int nrows;
	struct stmt_rows_text *next;
	char sql[];
};

void stmt_cache_forget(struct stmt_cache *c)
{
	free(c->slots);
	c->slots = NULL;
	c->nslots = c->used = 0;
}

void stmt_cache_clear(struct stmt_cache *c)
{
	stmt_cache_forget(c);
	while (c->texts) {
		struct stmt_rows_text *next = c->texts->next;

		free(c->texts);
		c->texts = next;
	}
}

/* q's row with each $k renumbered $(k + r * width). */
static enum st_rc rows_text_row(struct buf *b, const struct st_rows_sql *q, int r)
{
	enum st_rc rc = ST_OK;

	for (const char *p = q->row; rc == ST_OK && *p;) {
		if (p[0] == '$' && p[1] >= '0' && p[1] <= '9') {
			char *end;
			long k = strtol(p + 1, &end, 10);

			rc = buf_printf(b, "$%ld", k + (long)r * q->width);
			p = end;
		} else {
			rc = buf_putc(b, *p++);
		}
	}
	return rc;
}

/* q's text for nrows rows on the connection of c: made on first use and
 * kept until the cache is cleared (its address keys the prepared
 * statement, like a literal's). NULL: out of memory. */
static const char *rows_text_get(struct stmt_cache *c, const struct st_rows_sql *q, int nrows)
{
	struct buf b = BUF_INIT(1 << 20);
	struct stmt_rows_text *t;
	enum st_rc rc;

	for (t = c->texts; t; t = t->next)
		if (t->q == q && t->nrows == nrows)
			return t->sql;
	rc = buf_puts(&b, q->head);
	for (int r = 0; rc == ST_OK && r < nrows; r++) {
		if (r)
			rc = buf_puts(&b, ", ");
		if (rc == ST_OK)
			rc = rows_text_row(&b, q, r);
	}
	if (rc == ST_OK)
		rc = buf_puts(&b, q->tail);
	t = rc == ST_OK ? malloc(sizeof(*t) + b.len + 1) : NULL;
	if (t) {
		t->q = q;
		t->nrows = nrows;
		memcpy(t->sql, b.ptr, b.len + 1);
		t->next = c->texts;
		c->texts = t;
	}
	buf_release(&b);
	return t ? t->sql : NULL;
}

enum st_rc tx_exec_rows(struct tx *tx, const struct st_rows_sql *q, int nrows,
			const struct st_val *params, int64_t *changes)
{
	struct stmt_cache *c = tx->ops->stmts(tx);
	int64_t total = 0, n = 0;
	enum st_rc rc = ST_OK;

	/* Chunks of 64, 32, ... 1 rows: at most 7 texts per q a connection. */
	for (int done = 0, k = ST_ROWS_MAX; rc == ST_OK && done < nrows; k /= 2) {
		const char *sql;

		if (nrows - done < k)
			continue;
		sql = rows_text_get(c, q, k);
		if (!sql)
			return ST_NOMEM;
		rc = tx_exec(tx, sql, k * q->width, params + (size_t)done * q->width, &n);
		total += n;
		done += k;
		k *= 2; /* the same size again while it fits */
	}
	if (rc == ST_OK && changes)
		*changes = total;
	return rc;
}

void reader_pool_init(struct reader_pool *p)
{
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->free = NULL;
	p->nfree = 0;
}

enum st_rc reader_pool_fill(struct reader_pool *p, unsigned n)
{
	p->free = calloc(n ? n : 1, sizeof(*p->free));
	if (!p->free)
		return ST_NOMEM;
	for (p->nfree = 0; p->nfree < n; p->nfree++)
		p->free[p->nfree] = p->nfree;
	return ST_OK;
}

unsigned reader_pool_take(struct reader_pool *p)
{
	unsigned idx;

	pthread_mutex_lock(&p->mu);
	while (!p->nfree)
		pthread_cond_wait(&p->cv, &p->mu);
	idx = p->free[--p->nfree];
	pthread_mutex_unlock(&p->mu);
	return idx;
}

void reader_pool_give(struct reader_pool *p, unsigned idx)
{
	pthread_mutex_lock(&p->mu);
	p->free[p->nfree++] = idx;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

void reader_pool_destroy(struct reader_pool *p)
{
	free(p->free);
	p->free = NULL;
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
}

void unit_queue_init(struct unit_queue *q)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, &ca);
	pthread_condattr_destroy(&ca);
	q->head = q->tail = NULL;
	q->closed = false;
	q->background_cap = 0;
	q->waiting = q->holding = 0;
}

enum st_rc unit_queue_push(struct unit_queue *q, store_unit_fn *fn, store_done_fn *done, void *arg,
			   bool wake_all)
{
	return unit_queue_push_merged(q, NULL, NULL, fn, done, arg, wake_all);
}

static enum st_rc push(struct unit_queue *q, struct write_unit *u, bool wake_all);

/* A new unit for fn, done and arg, for push (which takes it); NULL when
 * out of memory. */
static struct write_unit *unit_new(store_unit_fn *fn, store_done_fn *done, void *arg)
{
	struct write_unit *u = calloc(1, sizeof(*u));

	if (u) {
		u->fn = fn;
		u->done = done;
		u->arg = arg;
	}
	return u;
}

enum st_rc unit_queue_push_background(struct unit_queue *q, store_unit_fn *fn, store_done_fn *done,
				      void *arg, bool wake_all)
{
	struct write_unit *u = unit_new(fn, done, arg);

	if (!u)
		return ST_NOMEM;
	u->background = true;
	return push(q, u, wake_all);
}

enum st_rc unit_queue_push_merged(struct unit_queue *q, const void *kind, store_merge_fn *merge,
				  store_unit_fn *fn, store_done_fn *done, void *arg, bool wake_all)
{
	struct write_unit *u = unit_new(fn, done, arg);

	if (!u)
		return ST_NOMEM;
	u->merge_kind = merge ? kind : NULL;
	u->merge = merge;
	return push(q, u, wake_all);
}

static enum st_rc push(struct unit_queue *q, struct write_unit *u, bool wake_all)
{
	pthread_mutex_lock(&q->mu);
	if (q->closed) {
		pthread_mutex_unlock(&q->mu);
		free(u);
		return ST_UNAVAILABLE;
	}
	if (q->tail)
		q->tail->next = u;
	else
		q->head = u;
	q->tail = u;
	u->queued_us = clock_mono_us();
	if (wake_all)
		pthread_cond_broadcast(&q->cv);
	else if (q->waiting > q->holding)
		pthread_cond_signal(&q->cv);
	/* else every waiting writer is held: their holds end by deadline or
	 * by the wake of the writer they hold for (unit_queue_wake_held). */
	pthread_mutex_unlock(&q->mu);
	return ST_OK;
}

/* The oldest units, at most max, out of q (its lock held, q->head set). */
static struct write_unit *take_prefix(struct unit_queue *q, int max)
{
	struct write_unit *batch = q->head, *last = q->head;

	for (int n = 1; last->next && n < max; n++)
		last = last->next;
	q->head = last->next;
	if (!q->head)
		q->tail = NULL;
	last->next = NULL;
	return batch;
}

/* As take_prefix, but while a unit that is not background is queued, at
 * most q->background_cap background units: the rest stay where they are,
 * so the oldest background unit is always the next one taken. */
static struct write_unit *take_capped(struct unit_queue *q, int max)
{
	struct write_unit *batch = NULL, **bt = &batch, **link = &q->head, *u;
	int n = 0, nbg = 0;

	for (u = q->head; u && u->background; u = u->next)
		;
	if (!u || q->background_cap <= 0)
		return take_prefix(q, max); /* only background units queued: all of them */
	q->tail = NULL;
	while ((u = *link) && n < max) {
		if (u->background && nbg >= q->background_cap) {
			q->tail = u;
			link = &u->next; /* keeps its place */
			continue;
		}
		nbg += u->background;
		n++;
		*link = u->next;
		u->next = NULL;
		*bt = u;
		bt = &u->next;
	}
	for (u = *link; u; u = u->next)
		q->tail = u;
	return batch;
}

struct write_unit *unit_queue_take(struct unit_queue *q, int max, unit_queue_hold_fn *hold, void *arg,
				   enum unit_take_held *held)
{
	struct write_unit *batch = NULL;
	enum unit_take_held how = UNIT_TAKE_AT_ONCE;
	int64_t until;

	pthread_mutex_lock(&q->mu);
	for (;;) {
		if (!q->head) {
			if (q->closed)
				break;
			q->waiting++;
			pthread_cond_wait(&q->cv, &q->mu);
			q->waiting--;
			continue;
		}
		until = hold ? hold(arg, q->closed) : 0;
		if (until > 0) {
			struct timespec ts = { (time_t)(until / 1000000), (long)(until % 1000000) * 1000L };

			q->waiting++;
			q->holding++;
			how = pthread_cond_timedwait(&q->cv, &q->mu, &ts) == ETIMEDOUT ? UNIT_TAKE_HELD_DEADLINE
											 : UNIT_TAKE_HELD_WOKEN;
			q->holding--;
			q->waiting--;
			continue;
		}
		batch = take_capped(q, max);
		break;
	}
	pthread_mutex_unlock(&q->mu);
	if (held)
		*held = how;
	return batch;
}

void unit_queue_wake_all(struct unit_queue *q)
{
	pthread_cond_broadcast(&q->cv);
}

int64_t unit_queue_gather_until(const struct unit_queue *q, bool others_busy, int max,
				int64_t hold_us, int64_t now_us)
{
	const struct write_unit *u = q->head;
	int64_t until;
	int n = 0;

	if (!others_busy || !u || q->closed || hold_us <= 0)
		return 0;
	until = u->queued_us + hold_us;
	if (now_us >= until)
		return 0;
	for (; u && n < max; u = u->next)
		n++;
	return n >= max ? 0 : until;
}

void unit_queue_wake_held(struct unit_queue *q, bool wake_all)
{
	pthread_mutex_lock(&q->mu);
	if (q->head && wake_all)
		pthread_cond_broadcast(&q->cv);
	else if (q->head)
		pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

void unit_queue_close(struct unit_queue *q)
{
	pthread_mutex_lock(&q->mu);
	q->closed = true;
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

void unit_queue_destroy(struct unit_queue *q)
{
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
}

void write_unit_answer(struct write_unit *u, enum st_rc rc)
{
	u->done(u->arg, rc);
	free(u);
}

/* The version is read inside each migration's transaction, under the
 * backend's lock, so two processes starting at once apply each migration
 * once. */
static enum st_rc migrate_one(const struct st_migration *m, const struct st_migrator *mg, void *arg,
			      const struct logger *log, struct buf *why)
{
	int current = 0;
	enum st_rc rc = mg->begin(arg, &current, why);

	if (rc)
		return rc;
	if (m && m->version > current) {
		rc = mg->apply(arg, m, why);
		if (rc) {
			mg->rollback(arg);
			return rc;
		}
		log_msg(log, LOG_INFO, "applied migration %s", m->name);
	}
	rc = mg->commit(arg, why);
	if (rc)
		mg->rollback(arg);
	return rc;
}

enum st_rc store_migrate(const struct st_migration *list, const struct st_migrator *mg, void *arg,
			 const struct logger *log, struct buf *err)
{
	struct buf why = BUF_INIT(1024);
	/* The first transaction applies nothing: it creates schema_version
	 * even when there is no migration to apply. */
	enum st_rc rc = migrate_one(NULL, mg, arg, log, &why);

	for (const struct st_migration *m = list; !rc && m->sql; m++)
		if ((rc = migrate_one(m, mg, arg, log, &why)))
			buf_printf(err, "%s: migration %s failed: %s", mg->name, m->name, why.ptr);
	if (rc && !err->len)
		buf_printf(err, "%s: migrations: %s", mg->name, why.ptr);
	buf_release(&why);
	return rc;
}

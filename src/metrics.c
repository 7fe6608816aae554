/* metrics.c — Prometheus registry and text exposition (format 0.0.4).
 *
 * Structure: a registry owns a list of families in registration order; a
 * family owns its series, kept twice: in a list in creation order (for
 * rendering) and in a chained hash table keyed by the label values (for
 * lookup). Nothing is ever removed before metrics_free(), which is why a
 * series pointer handed out once stays valid and can be cached by callers.
 *
 * Locking, from rare to hot:
 * 1. The registry mutex guards the family list; registration and rendering
 *    take it (both are rare: startup and a scrape every few seconds).
 * 2. Each family's rwlock guards its hash table and series list: lookups
 *    take it for reading, creating a series takes it for writing. It prefers
 *    writers (glibc), so a steady stream of lookups cannot starve creation.
 * 3. Updates take no lock at all: counts are atomic uint64 (fetch_add),
 *    doubles (gauge values, histogram sums, fractional counter increments)
 *    are atomic uint64 bit patterns updated by a compare-and-swap loop.
 *    Relaxed ordering suffices: every value is independent, and a scrape
 *    only needs each number to be one that really existed.
 *
 * Histogram buckets are stored per bucket (not cumulative), so an
 * observation touches one slot; the cumulative counts and _count are
 * computed from a single read of the slots at render time, which keeps
 * le="+Inf" equal to _count even while observations race with a scrape.
 *
 * Numbers are printed with snprintf, so the process must keep the "C"
 * LC_NUMERIC locale (it never calls setlocale). */
#include "metrics.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "banned.h"

_Static_assert(sizeof(double) == sizeof(uint64_t), "doubles are stored as uint64 bits");
_Static_assert(sizeof(uint64_t) == sizeof(unsigned long long) ? ATOMIC_LLONG_LOCK_FREE == 2
							      : ATOMIC_LONG_LOCK_FREE == 2,
	       "the hot path needs lock-free 64-bit atomics");

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM, METRIC_GAUGE_FUNC };

static const char *const metric_type_names[] = {
	[METRIC_COUNTER] = "counter",
	[METRIC_GAUGE] = "gauge",
	[METRIC_HISTOGRAM] = "histogram",
	[METRIC_GAUGE_FUNC] = "gauge",
};

static const double metrics_default_buckets[] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

#define METRICS_TABLE_MIN 8
#define METRICS_NUM_MAX 40 /* longest formatted number, "%.17g" of a double */

/* One allocation: the struct, then nslots histogram counters, then the
 * label values' bytes (values[] points into them). */
struct metric_series {
	struct metric_series *next;  /* creation order; guarded by the family lock */
	struct metric_series *chain; /* hash bucket; guarded by the family lock */
	uint64_t hash;
	enum metric_type type;
	size_t nbounds;       /* histograms: finite upper bounds */
	const double *bounds; /* histograms: borrowed from the family */
	const char *values[METRICS_MAX_LABELS];
	_Atomic uint64_t n;    /* counter: sum of integral increments */
	_Atomic uint64_t bits; /* double bits: counter fractional part, gauge, histogram sum */
	_Atomic uint64_t slots[]; /* histogram: nbounds + 1 counts, last is +Inf */
};

struct metric_family {
	struct metric_family *next; /* registration order; guarded by the registry mutex */
	enum metric_type type;
	char *name;                 /* owned */
	char *help;                 /* owned; NULL: no HELP line */
	size_t nlabels;
	char *labels[METRICS_MAX_LABELS]; /* owned copies */
	double *bounds;             /* histograms: owned, ascending, finite */
	size_t nbounds;
	metrics_gauge_fn *fn;       /* METRIC_GAUGE_FUNC only */
	void *arg;                  /* borrowed */
	pthread_rwlock_t lock;
	struct metric_series *head, **tail;
	struct metric_series **table; /* owned; chains of series */
	size_t tsize, nseries;
};

struct metrics {
	pthread_mutex_t lock;
	struct metric_family *head, **tail;
	char *proc_root; /* owned; NULL means "/proc" */
};

/* ---- doubles as atomic bits ---- */

static uint64_t dbl_bits(double v)
{
	uint64_t u;

	memcpy(&u, &v, sizeof(u));
	return u;
}

static double bits_dbl(uint64_t u)
{
	double v;

	memcpy(&v, &u, sizeof(v));
	return v;
}

static void atomic_add_double(_Atomic uint64_t *p, double v)
{
	uint64_t old = atomic_load_explicit(p, memory_order_relaxed);

	/* On failure the CAS reloads old, so each retry adds to a fresh value. */
	while (!atomic_compare_exchange_weak_explicit(p, &old, dbl_bits(bits_dbl(old) + v),
						      memory_order_relaxed, memory_order_relaxed))
		;
}

static double atomic_load_double(_Atomic uint64_t *p)
{
	return bits_dbl(atomic_load_explicit(p, memory_order_relaxed));
}

/* ---- names ---- */

static bool valid_name(const char *s, bool colon)
{
	if (!s || !*s || (*s >= '0' && *s <= '9'))
		return false;
	for (; *s; s++) {
		char c = *s;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || (colon && c == ':')))
			return false;
	}
	return true;
}

/* Label names: identifiers, not reserved ("__" prefix), not "le" on a
 * histogram (the bucket label), no duplicates. */
static bool valid_labels(enum metric_type type, size_t nlabels, const char *const *labels)
{
	if (nlabels > METRICS_MAX_LABELS || (nlabels && !labels))
		return false;
	for (size_t i = 0; i < nlabels; i++) {
		if (!valid_name(labels[i], false) || !strncmp(labels[i], "__", 2))
			return false;
		if (type == METRIC_HISTOGRAM && !strcmp(labels[i], "le"))
			return false;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(labels[i], labels[j]))
				return false;
	}
	return true;
}

static bool valid_bounds(const double *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (isnan(b[i]) || (i && !(b[i] > b[i - 1])))
			return false;
	return true;
}

/* ---- series ---- */

/* FNV-1a over the values, each with its NUL so that ("ab","c") and
 * ("a","bc") differ. */
static uint64_t values_hash(size_t n, const char *const *values)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++) {
		const unsigned char *p = (const unsigned char *)values[i];

		do {
			h ^= *p;
			h *= 0x100000001b3ULL;
		} while (*p++);
	}
	return h;
}

static bool values_equal(const struct metric_series *s, size_t n, const char *const *values)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s->values[i], values[i]))
			return false;
	return true;
}

/* A new, unpublished series with copies of values; NULL on ENOMEM. */
static struct metric_series *series_new(const struct metric_family *f, uint64_t hash,
					const char *const *values)
{
	size_t nslots = f->type == METRIC_HISTOGRAM ? f->nbounds + 1 : 0;
	size_t head = sizeof(struct metric_series) + nslots * sizeof(_Atomic uint64_t);
	size_t lens[METRICS_MAX_LABELS], size = head;
	struct metric_series *s;
	char *p;

	for (size_t i = 0; i < f->nlabels; i++) {
		lens[i] = strlen(values[i]) + 1;
		size += lens[i];
	}
	s = calloc(1, size);
	if (!s)
		return NULL;
	s->hash = hash;
	s->type = f->type;
	s->nbounds = f->nbounds;
	s->bounds = f->bounds;
	atomic_init(&s->n, 0);
	atomic_init(&s->bits, dbl_bits(0.0));
	for (size_t i = 0; i < nslots; i++)
		atomic_init(&s->slots[i], 0);
	p = (char *)s + head;
	for (size_t i = 0; i < f->nlabels; i++) {
		memcpy(p, values[i], lens[i]);
		s->values[i] = p;
		p += lens[i];
	}
	return s;
}

/* Caller holds the family lock (either mode). */
static struct metric_series *table_find(const struct metric_family *f, uint64_t hash,
					const char *const *values)
{
	struct metric_series *s = f->table[hash & (f->tsize - 1)];

	for (; s; s = s->chain)
		if (s->hash == hash && values_equal(s, f->nlabels, values))
			return s;
	return NULL;
}

/* Caller holds the family write lock (or f is not yet published). Never
 * fails: if the table cannot grow, chains just get longer. */
static void table_insert(struct metric_family *f, struct metric_series *s)
{
	struct metric_series **t, **slot;

	if (f->nseries >= f->tsize && (t = calloc(f->tsize * 2, sizeof(*t)))) {
		for (size_t i = 0; i < f->tsize; i++) {
			struct metric_series *e = f->table[i], *nx;

			for (; e; e = nx) {
				nx = e->chain;
				slot = &t[e->hash & (f->tsize * 2 - 1)];
				e->chain = *slot;
				*slot = e;
			}
		}
		free(f->table);
		f->table = t;
		f->tsize *= 2;
	}
	slot = &f->table[s->hash & (f->tsize - 1)];
	s->chain = *slot;
	*slot = s;
	*f->tail = s;
	f->tail = &s->next;
	f->nseries++;
}

struct metric_series *metric_series_get(struct metric_family *f, const char *const *values)
{
	struct metric_series *s, *fresh;
	uint64_t hash;

	assert(f && f->type != METRIC_GAUGE_FUNC);
	assert(f->nlabels == 0 || values);
	for (size_t i = 0; i < f->nlabels; i++)
		assert(values[i]);
	hash = values_hash(f->nlabels, values);

	pthread_rwlock_rdlock(&f->lock);
	s = table_find(f, hash, values);
	pthread_rwlock_unlock(&f->lock);
	if (s)
		return s;

	/* Allocate outside the write lock; whoever inserts first wins and
	 * the loser frees its copy. */
	fresh = series_new(f, hash, values);
	if (!fresh)
		return NULL;
	pthread_rwlock_wrlock(&f->lock);
	s = table_find(f, hash, values);
	if (!s) {
		table_insert(f, fresh);
		s = fresh;
		fresh = NULL;
	}
	pthread_rwlock_unlock(&f->lock);
	free(fresh);
	return s;
}

/* ---- hot path ----
 * Each accepts a NULL series (a failed lookup) and does nothing, so
 * metric_inc(metric_series_get(f, v)) is safe under ENOMEM. Using an
 * update on the wrong type is a programmer error. */

void metric_inc(struct metric_series *s)
{
	if (!s)
		return;
	assert(s->type == METRIC_COUNTER || s->type == METRIC_GAUGE);
	if (s->type == METRIC_COUNTER)
		atomic_fetch_add_explicit(&s->n, 1, memory_order_relaxed);
	else if (s->type == METRIC_GAUGE)
		atomic_add_double(&s->bits, 1.0);
}

void metric_add(struct metric_series *s, double v)
{
	if (!s)
		return;
	assert(s->type == METRIC_COUNTER || s->type == METRIC_GAUGE);
	if (s->type == METRIC_GAUGE) {
		atomic_add_double(&s->bits, v);
	} else if (s->type == METRIC_COUNTER) {
		assert(v >= 0 && "counters only go up");
		if (!(v >= 0))
			return;
		/* Whole amounts stay exact integers; the rest go to the double. */
		if (v < 0x1p53 && v == trunc(v))
			atomic_fetch_add_explicit(&s->n, (uint64_t)v, memory_order_relaxed);
		else
			atomic_add_double(&s->bits, v);
	}
}

void metric_set(struct metric_series *s, double v)
{
	if (!s)
		return;
	assert(s->type == METRIC_GAUGE);
	if (s->type == METRIC_GAUGE)
		atomic_store_explicit(&s->bits, dbl_bits(v), memory_order_relaxed);
}

void metric_observe(struct metric_series *s, double v)
{
	size_t lo = 0, hi;

	if (!s)
		return;
	assert(s->type == METRIC_HISTOGRAM);
	if (s->type != METRIC_HISTOGRAM)
		return;
	/* First bound >= v (bounds are inclusive); NaN lands in +Inf. */
	hi = s->nbounds;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (v <= s->bounds[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	atomic_fetch_add_explicit(&s->slots[lo], 1, memory_order_relaxed);
	atomic_add_double(&s->bits, v);
}

void metrics_inc(struct metric_family *f, const char *const *values)
{
	metric_inc(metric_series_get(f, values));
}

void metrics_observe(struct metric_family *f, const char *const *values, double v)
{
	metric_observe(metric_series_get(f, values), v);
}

void metrics_set(struct metric_family *f, const char *const *values, double v)
{
	metric_set(metric_series_get(f, values), v);
}

/* ---- registry ---- */

struct metrics *metrics_new(void)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	if (pthread_mutex_init(&m->lock, NULL)) {
		free(m);
		return NULL;
	}
	m->tail = &m->head;
	return m;
}

static void family_free(struct metric_family *f)
{
	struct metric_series *s, *nx;

	if (!f)
		return;
	for (s = f->head; s; s = nx) {
		nx = s->next;
		free(s);
	}
	if (f->table)
		pthread_rwlock_destroy(&f->lock);
	free(f->table);
	free(f->bounds);
	for (size_t i = 0; i < f->nlabels; i++)
		free(f->labels[i]);
	free(f->help);
	free(f->name);
	free(f);
}

void metrics_free(struct metrics *m)
{
	struct metric_family *f, *nx;

	if (!m)
		return;
	for (f = m->head; f; f = nx) {
		nx = f->next;
		family_free(f);
	}
	pthread_mutex_destroy(&m->lock);
	free(m->proc_root);
	free(m);
}

enum st_rc metrics_set_procfs(struct metrics *m, const char *root)
{
	char *copy = NULL;

	if (root && !(copy = strdup(root)))
		return ST_NOMEM;
	pthread_mutex_lock(&m->lock);
	free(m->proc_root);
	m->proc_root = copy;
	pthread_mutex_unlock(&m->lock);
	return ST_OK;
}

/* Caller holds the registry mutex. */
static struct metric_family *family_find(const struct metrics *m, const char *name)
{
	struct metric_family *f;

	for (f = m->head; f; f = f->next)
		if (!strcmp(f->name, name))
			return f;
	return NULL;
}

static bool family_matches(const struct metric_family *f, enum metric_type type,
			   size_t nlabels, const char *const *labels)
{
	if (f->type != type || f->nlabels != nlabels)
		return false;
	for (size_t i = 0; i < nlabels; i++)
		if (strcmp(f->labels[i], labels[i]))
			return false;
	return true;
}

/* A new, unpublished family with copies of everything; NULL on ENOMEM. */
static struct metric_family *family_new(enum metric_type type, const char *name, const char *help,
					size_t nlabels, const char *const *labels,
					const double *bounds, size_t nbounds)
{
	struct metric_family *f = calloc(1, sizeof(*f));
	pthread_rwlockattr_t attr;
	bool ok = false;

	if (!f)
		return NULL;
	f->type = type;
	f->tail = &f->head;
	f->name = strdup(name);
	f->help = help ? strdup(help) : NULL;
	if (!f->name || (help && !f->help))
		goto out;
	for (; f->nlabels < nlabels; f->nlabels++)
		if (!(f->labels[f->nlabels] = strdup(labels[f->nlabels])))
			goto out;
	if (nbounds) {
		f->bounds = malloc(nbounds * sizeof(*f->bounds));
		if (!f->bounds)
			goto out;
		memcpy(f->bounds, bounds, nbounds * sizeof(*f->bounds));
		f->nbounds = nbounds;
	}
	if (pthread_rwlockattr_init(&attr))
		goto out;
#ifdef __GLIBC__
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
	if (pthread_rwlock_init(&f->lock, &attr) == 0) {
		/* f->table doubles as "the lock was initialised" for family_free. */
		f->table = calloc(METRICS_TABLE_MIN, sizeof(*f->table));
		if (!f->table)
			pthread_rwlock_destroy(&f->lock);
	}
	pthread_rwlockattr_destroy(&attr);
	if (!f->table)
		goto out;
	f->tsize = METRICS_TABLE_MIN;
	/* An unlabelled family has exactly one series: create it now so it
	 * is exported (as 0) before its first update. */
	if (nlabels == 0 && type != METRIC_GAUGE_FUNC) {
		struct metric_series *s = series_new(f, values_hash(0, NULL), NULL);

		if (!s)
			goto out;
		table_insert(f, s);
	}
	ok = true;
out:
	if (!ok) {
		family_free(f);
		return NULL;
	}
	return f;
}

static struct metric_family *family_register(struct metrics *m, enum metric_type type,
					     const char *name, const char *help,
					     size_t nlabels, const char *const *labels,
					     const double *bounds, size_t nbounds)
{
	struct metric_family *f;
	bool ok = valid_name(name, true) && valid_labels(type, nlabels, labels) &&
		  valid_bounds(bounds, nbounds);

	assert(m && ok && "invalid metric name, label names or buckets");
	if (!ok)
		return NULL;
	pthread_mutex_lock(&m->lock);
	f = family_find(m, name);
	if (f) {
		ok = family_matches(f, type, nlabels, labels);
		assert(ok && "metric re-registered with another type or labels");
		if (!ok)
			f = NULL;
	} else if ((f = family_new(type, name, help, nlabels, labels, bounds, nbounds))) {
		*m->tail = f;
		m->tail = &f->next;
	}
	pthread_mutex_unlock(&m->lock);
	return f;
}

struct metric_family *metrics_counter(struct metrics *m, const char *name, const char *help,
				      size_t nlabels, const char *const *labels)
{
	return family_register(m, METRIC_COUNTER, name, help, nlabels, labels, NULL, 0);
}

struct metric_family *metrics_gauge(struct metrics *m, const char *name, const char *help,
				    size_t nlabels, const char *const *labels)
{
	return family_register(m, METRIC_GAUGE, name, help, nlabels, labels, NULL, 0);
}

struct metric_family *metrics_histogram(struct metrics *m, const char *name, const char *help,
					size_t nlabels, const char *const *labels,
					const double *buckets, size_t nbuckets)
{
	if (!buckets) {
		buckets = metrics_default_buckets;
		nbuckets = sizeof(metrics_default_buckets) / sizeof(metrics_default_buckets[0]);
	}
	/* +Inf is always implied; an explicit one would be a duplicate. */
	if (nbuckets && isinf(buckets[nbuckets - 1]) && buckets[nbuckets - 1] > 0)
		nbuckets--;
	return family_register(m, METRIC_HISTOGRAM, name, help, nlabels, labels, buckets,
			       nbuckets);
}

/* ST_OK if registered (or already registered with the same fn and arg),
 * ST_CONFLICT if the name is taken otherwise, ST_NOMEM, ST_INVALID for a bad
 * name (after the assert). fn runs at render time with the registry mutex
 * held: it must not call into the registry. */
enum st_rc metrics_gauge_func(struct metrics *m, const char *name, const char *help,
			      metrics_gauge_fn *fn, void *arg)
{
	struct metric_family *f;
	enum st_rc rc = ST_OK;
	bool ok = fn && valid_name(name, true);

	assert(m && ok && "invalid gauge function");
	if (!ok)
		return ST_INVALID;
	pthread_mutex_lock(&m->lock);
	f = family_find(m, name);
	if (f) {
		if (f->type != METRIC_GAUGE_FUNC || f->fn != fn || f->arg != arg)
			rc = ST_CONFLICT;
	} else if ((f = family_new(METRIC_GAUGE_FUNC, name, help, 0, NULL, NULL, 0))) {
		f->fn = fn;
		f->arg = arg;
		*m->tail = f;
		m->tail = &f->next;
	} else {
		rc = ST_NOMEM;
	}
	pthread_mutex_unlock(&m->lock);
	return rc;
}

/* ---- rendering ---- */

/* v as the exposition format spells it: integral values without a
 * fraction, others with the fewest digits that read back exactly, and the
 * Go spellings of the special values. */
static void fmt_value(char out[METRICS_NUM_MAX], double v)
{
	if (isnan(v))
		snprintf(out, METRICS_NUM_MAX, "NaN");
	else if (isinf(v))
		snprintf(out, METRICS_NUM_MAX, "%s", v > 0 ? "+Inf" : "-Inf");
	else if (v == trunc(v) && fabs(v) < 1e15)
		snprintf(out, METRICS_NUM_MAX, "%.0f", v);
	else {
		snprintf(out, METRICS_NUM_MAX, "%.15g", v);
		if (strtod(out, NULL) != v)
			snprintf(out, METRICS_NUM_MAX, "%.17g", v);
	}
}

/* HELP text escapes backslash and newline; label values also '"'. */
static enum st_rc put_escaped(struct buf *b, const char *s, bool label)
{
	enum st_rc rc = ST_OK;
	const char *run = s;

	for (; *s && !rc; s++) {
		const char *esc = *s == '\\' ? "\\\\" : *s == '\n' ? "\\n"
				: (*s == '"' && label) ? "\\\"" : NULL;

		if (!esc)
			continue;
		rc = buf_append(b, run, (size_t)(s - run));
		if (!rc)
			rc = buf_append(b, esc, 2);
		run = s + 1;
	}
	return rc ? rc : buf_append(b, run, (size_t)(s - run));
}

static enum st_rc put_header(struct buf *b, const char *name, const char *help,
			     const char *type)
{
	enum st_rc rc = ST_OK;

	if (help) {
		rc = buf_printf(b, "# HELP %s ", name);
		if (!rc)
			rc = put_escaped(b, help, false);
		if (!rc)
			rc = buf_putc(b, '\n');
	}
	return rc ? rc : buf_printf(b, "# TYPE %s %s\n", name, type);
}

/* name+suffix{labels[,le="le"]} value\n */
static enum st_rc put_sample(struct buf *b, const struct metric_family *f, const char *suffix,
			     const struct metric_series *s, const char *le, const char *value)
{
	enum st_rc rc = buf_printf(b, "%s%s", f->name, suffix);
	size_t n = s ? f->nlabels : 0;

	if (!rc && (n || le))
		rc = buf_putc(b, '{');
	for (size_t i = 0; i < n && !rc; i++) {
		rc = buf_printf(b, "%s%s=\"", i ? "," : "", f->labels[i]);
		if (!rc)
			rc = put_escaped(b, s->values[i], true);
		if (!rc)
			rc = buf_putc(b, '"');
	}
	if (!rc && le)
		rc = buf_printf(b, "%sle=\"%s\"", n ? "," : "", le);
	if (!rc && (n || le))
		rc = buf_putc(b, '}');
	return rc ? rc : buf_printf(b, " %s\n", value);
}

static enum st_rc render_histogram(struct buf *b, const struct metric_family *f,
				   struct metric_series *s)
{
	char le[METRICS_NUM_MAX], num[METRICS_NUM_MAX];
	uint64_t cum = 0;
	enum st_rc rc = ST_OK;

	for (size_t i = 0; i <= s->nbounds && !rc; i++) {
		cum += atomic_load_explicit(&s->slots[i], memory_order_relaxed);
		if (i < s->nbounds)
			fmt_value(le, s->bounds[i]);
		else
			snprintf(le, sizeof(le), "+Inf");
		snprintf(num, sizeof(num), "%" PRIu64, cum);
		rc = put_sample(b, f, "_bucket", s, le, num);
	}
	fmt_value(num, atomic_load_double(&s->bits));
	if (!rc)
		rc = put_sample(b, f, "_sum", s, NULL, num);
	snprintf(num, sizeof(num), "%" PRIu64, cum);
	return rc ? rc : put_sample(b, f, "_count", s, NULL, num);
}

static enum st_rc render_family(struct buf *b, struct metric_family *f)
{
	char num[METRICS_NUM_MAX];
	enum st_rc rc = put_header(b, f->name, f->help, metric_type_names[f->type]);
	struct metric_series *s;

	if (rc)
		return rc;
	if (f->type == METRIC_GAUGE_FUNC) {
		fmt_value(num, f->fn(f->arg));
		return put_sample(b, f, "", NULL, NULL, num);
	}
	pthread_rwlock_rdlock(&f->lock);
	for (s = f->head; s && !rc; s = s->next) {
		if (f->type == METRIC_HISTOGRAM) {
			rc = render_histogram(b, f, s);
			continue;
		}
		if (f->type == METRIC_COUNTER) {
			uint64_t n = atomic_load_explicit(&s->n, memory_order_relaxed);
			double frac = atomic_load_double(&s->bits);

			/* Exact even past 2^53 while only whole amounts were added. */
			if (frac == 0)
				snprintf(num, sizeof(num), "%" PRIu64, n);
			else
				fmt_value(num, (double)n + frac);
		} else {
			fmt_value(num, atomic_load_double(&s->bits));
		}
		rc = put_sample(b, f, "", s, NULL, num);
	}
	pthread_rwlock_unlock(&f->lock);
	return rc;
}

/* ---- process metrics ----
 * Each reader fills what it can; anything unreadable is simply left out
 * of the output (a container without /proc still gets the rest). */

enum proc_metric {
	PM_CPU, PM_RSS, PM_VSZ, PM_OPEN_FDS, PM_MAX_FDS, PM_START, PM_COUNT
};

struct proc_sample {
	bool have;
	double value;
};

static const struct {
	const char *name, *type, *help;
} proc_metrics[PM_COUNT] = {
	[PM_CPU] = { "process_cpu_seconds_total", "counter",
		     "Total user and system CPU time spent in seconds." },
	[PM_RSS] = { "process_resident_memory_bytes", "gauge", "Resident memory size in bytes." },
	[PM_VSZ] = { "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes." },
	[PM_OPEN_FDS] = { "process_open_fds", "gauge", "Number of open file descriptors." },
	[PM_MAX_FDS] = { "process_max_fds", "gauge", "Maximum number of open file descriptors." },
	[PM_START] = { "process_start_time_seconds", "gauge",
		       "Start time of the process since unix epoch in seconds." },
};

/* Reads at most cap - 1 bytes of a small file, NUL-terminated; -1 on error. */
static ssize_t read_small(const char *path, char *dst, size_t cap)
{
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	while (len < cap - 1) {
		ssize_t n = read(fd, dst + len, cap - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			close(fd);
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	dst[len] = '\0';
	return (ssize_t)len;
}

/* Parses one unsigned decimal field at *p, advancing past it and the
 * spaces after it. */
static bool next_u64(const char **p, uint64_t *out)
{
	char *end;
	unsigned long long v;

	while (**p == ' ')
		(*p)++;
	if (**p < '0' || **p > '9')
		return false;
	errno = 0;
	v = strtoull(*p, &end, 10);
	if (errno)
		return false;
	*out = v;
	*p = end;
	return true;
}

/* Skips one space-separated field (of any content). */
static void skip_field(const char **p)
{
	while (**p == ' ')
		(*p)++;
	while (**p && **p != ' ')
		(*p)++;
}

/* Seconds since the epoch at boot: the "btime" line of /proc/stat. That
 * file has a line per CPU and a long "intr" line, so read it line by line
 * (a line longer than the buffer just arrives in several pieces). */
static bool read_btime(const char *root, uint64_t *btime)
{
	char path[512], line[256];
	bool at_start = true, found = false;
	FILE *fp;

	if ((size_t)snprintf(path, sizeof(path), "%s/stat", root) >= sizeof(path))
		return false;
	fp = fopen(path, "re");
	if (!fp)
		return false;
	while (!found && fgets(line, sizeof(line), fp)) {
		const char *p = line + 6;

		if (at_start && !strncmp(line, "btime ", 6))
			found = next_u64(&p, btime);
		at_start = strchr(line, '\n') != NULL;
	}
	fclose(fp);
	return found;
}

/* /proc/self/stat: utime (field 14), stime (15), starttime (22), all in
 * clock ticks. comm (field 2) may hold spaces and parentheses, so fields
 * are counted from the last ')'. */
static void read_stat(const char *root, long tck, struct proc_sample *pm)
{
	char path[512], text[4096];
	const char *p;
	uint64_t utime, stime, start, btime;
	int field;

	if (tck <= 0 || (size_t)snprintf(path, sizeof(path), "%s/self/stat", root) >= sizeof(path) ||
	    read_small(path, text, sizeof(text)) < 0 || !(p = strrchr(text, ')')))
		return;
	p++;
	for (field = 3; field < 14; field++)
		skip_field(&p);
	if (!next_u64(&p, &utime) || !next_u64(&p, &stime))
		return;
	pm[PM_CPU].have = true;
	pm[PM_CPU].value = (double)(utime + stime) / (double)tck;
	for (field = 16; field < 22; field++)
		skip_field(&p);
	if (next_u64(&p, &start) && read_btime(root, &btime)) {
		pm[PM_START].have = true;
		pm[PM_START].value = (double)btime + (double)start / (double)tck;
	}
}

/* /proc/self/statm: size and resident, in pages. */
static void read_statm(const char *root, struct proc_sample *pm)
{
	char path[512], text[256];
	const char *p = text;
	uint64_t size, resident;
	long page = sysconf(_SC_PAGESIZE);

	if (page <= 0 || (size_t)snprintf(path, sizeof(path), "%s/self/statm", root) >= sizeof(path) ||
	    read_small(path, text, sizeof(text)) < 0 || !next_u64(&p, &size) ||
	    !next_u64(&p, &resident))
		return;
	pm[PM_VSZ].have = pm[PM_RSS].have = true;
	pm[PM_VSZ].value = (double)size * (double)page;
	pm[PM_RSS].value = (double)resident * (double)page;
}

/* Entries of /proc/self/fd, minus the one opendir() itself holds. */
static void read_fds(const char *root, struct proc_sample *pm)
{
	char path[512], self[24];
	struct dirent *e;
	uint64_t n = 0;
	DIR *d;

	if ((size_t)snprintf(path, sizeof(path), "%s/self/fd", root) >= sizeof(path) ||
	    !(d = opendir(path)))
		return;
	snprintf(self, sizeof(self), "%d", dirfd(d));
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && strcmp(e->d_name, self))
			n++;
	closedir(d);
	pm[PM_OPEN_FDS].have = true;
	pm[PM_OPEN_FDS].value = (double)n;
}

/* Caller holds the registry mutex (for proc_root and the family list). */
static enum st_rc render_process(struct metrics *m, struct buf *b)
{
	const char *root = m->proc_root ? m->proc_root : "/proc";
	struct proc_sample pm[PM_COUNT] = { { false, 0 } };
	char num[METRICS_NUM_MAX];
	struct rlimit rl;
	enum st_rc rc = ST_OK;

	read_stat(root, sysconf(_SC_CLK_TCK), pm);
	read_statm(root, pm);
	read_fds(root, pm);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		pm[PM_MAX_FDS].have = true;
		pm[PM_MAX_FDS].value = (double)rl.rlim_cur;
	}
	for (int i = 0; i < PM_COUNT && !rc; i++) {
		/* A registered family of the same name wins over ours. */
		if (!pm[i].have || family_find(m, proc_metrics[i].name))
			continue;
		fmt_value(num, pm[i].value);
		rc = put_header(b, proc_metrics[i].name, proc_metrics[i].help, proc_metrics[i].type);
		if (!rc)
			rc = buf_printf(b, "%s %s\n", proc_metrics[i].name, num);
	}
	return rc;
}

enum st_rc metrics_render(struct metrics *m, struct buf *out)
{
	size_t start = out->len;
	struct metric_family *f;
	enum st_rc rc = ST_OK;

	pthread_mutex_lock(&m->lock);
	for (f = m->head; f && !rc; f = f->next)
		rc = render_family(out, f);
	if (!rc)
		rc = render_process(m, out);
	pthread_mutex_unlock(&m->lock);
	if (rc) {
		/* Leave out as it was: half an exposition is never useful. */
		out->len = start;
		if (out->alloc)
			out->ptr[start] = '\0';
	}
	return rc;
}

/* test_metrics.c — the Prometheus registry: concurrent updates are exact,
 * and the rendered text parses back as valid exposition format 0.0.4.
 *
 * Every render is checked by expo_parse() below, a strict little parser:
 * each line is a HELP/TYPE comment or `name{labels} value`, a family's TYPE
 * comes before its samples and its samples are contiguous, label values
 * unescape cleanly, and every histogram series has ascending le bounds,
 * cumulative counts, a final le="+Inf" equal to _count, and a _sum. */
#include <criterion/criterion.h>

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "metrics.h"

#include "banned.h"

#define NTHREADS 8
#define NITER 100000

/* ---- exposition parser ---- */

#define MAX_LABELS 8

struct sample {
	char *name;
	size_t nl;
	char *key[MAX_LABELS];
	char *val[MAX_LABELS];
	double value;
	size_t fam; /* index into expo.fam */
};

struct fam {
	char *name;
	char *type;
	char *help; /* unescaped; NULL if none */
};

struct expo {
	struct sample *s;
	size_t ns;
	struct fam *fam;
	size_t nf;
};

static bool is_name_char(char c, bool first, bool colon)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
	       (colon && c == ':') || (!first && c >= '0' && c <= '9');
}

/* Reads an identifier at *p; returns a malloc'd copy. */
static char *parse_name(const char **p, bool colon, int line)
{
	const char *start = *p;

	cr_assert(is_name_char(**p, true, colon), "line %d: bad name at '%s'", line, *p);
	while (is_name_char(**p, false, colon))
		(*p)++;
	return strndup(start, (size_t)(*p - start));
}

static char *find_eol(const char *p)
{
	return strchr(p, '\n');
}

static size_t fam_index(const struct expo *e, const char *name)
{
	for (size_t i = 0; i < e->nf; i++)
		if (!strcmp(e->fam[i].name, name))
			return i;
	return (size_t)-1;
}

/* Does sample name n belong to family f of type t? */
static bool sample_in_family(const char *n, const char *f, const char *t)
{
	size_t fl = strlen(f);

	if (!strcmp(t, "histogram"))
		return !strncmp(n, f, fl) &&
		       (!strcmp(n + fl, "_bucket") || !strcmp(n + fl, "_sum") ||
			!strcmp(n + fl, "_count"));
	return !strcmp(n, f);
}

static const char *label(const struct sample *s, const char *key)
{
	for (size_t i = 0; i < s->nl; i++)
		if (!strcmp(s->key[i], key))
			return s->val[i];
	return NULL;
}

/* Same labels, ignoring "le". */
static bool same_series(const struct sample *a, const struct sample *b)
{
	size_t na = 0, nb = 0;

	for (size_t i = 0; i < a->nl; i++) {
		if (!strcmp(a->key[i], "le"))
			continue;
		na++;
		const char *v = label(b, a->key[i]);
		if (!v || strcmp(v, a->val[i]))
			return false;
	}
	for (size_t i = 0; i < b->nl; i++)
		nb += strcmp(b->key[i], "le") != 0;
	return na == nb;
}

static bool has_suffix(const char *s, const char *suf)
{
	size_t l = strlen(s), k = strlen(suf);

	return l >= k && !strcmp(s + l - k, suf);
}

/* The histogram invariants, over every series of every histogram family. */
static void check_histograms(const struct expo *e)
{
	for (size_t i = 0; i < e->ns;) {
		const struct sample *first = &e->s[i];

		if (strcmp(e->fam[first->fam].type, "histogram")) {
			i++;
			continue;
		}
		cr_assert(has_suffix(first->name, "_bucket"), "%s: histogram series must start with buckets",
			  first->name);
		double prev_le = -INFINITY, prev_count = 0;
		size_t j = i;
		for (; j < e->ns && has_suffix(e->s[j].name, "_bucket") && same_series(first, &e->s[j]) &&
		       e->s[j].fam == first->fam;
		     j++) {
			const char *le = label(&e->s[j], "le");
			cr_assert(le, "%s: bucket without le", first->name);
			char *end;
			double b = strtod(le, &end);
			cr_assert(*end == '\0' && end != le, "bad le \"%s\"", le);
			cr_assert(b > prev_le, "%s: le not ascending (%s)", first->name, le);
			cr_assert(e->s[j].value >= prev_count, "%s: buckets not cumulative at le=%s",
				  first->name, le);
			prev_le = b;
			prev_count = e->s[j].value;
		}
		cr_assert(isinf(prev_le) && prev_le > 0, "%s: last bucket is not le=\"+Inf\"", first->name);
		cr_assert(j + 1 < e->ns, "%s: missing _sum/_count", first->name);
		cr_assert(has_suffix(e->s[j].name, "_sum") && same_series(first, &e->s[j]),
			  "%s: expected _sum after buckets, got %s", first->name, e->s[j].name);
		cr_assert(has_suffix(e->s[j + 1].name, "_count") && same_series(first, &e->s[j + 1]),
			  "%s: expected _count after _sum", first->name);
		cr_assert(e->s[j + 1].value == prev_count, "%s: +Inf bucket %.0f != _count %.0f",
			  first->name, prev_count, e->s[j + 1].value);
		i = j + 2;
	}
}

/* Parses text strictly into e (cr_assert on any violation). */
static void expo_parse(const char *text, struct expo *e)
{
	const char *p = text;
	size_t cur = (size_t)-1; /* family whose samples may follow */
	bool cur_has_samples = false;
	int line = 0;

	memset(e, 0, sizeof(*e));
	while (*p) {
		const char *eol = find_eol(p);

		line++;
		cr_assert(eol, "line %d: output does not end with a newline", line);
		cr_assert(eol > p, "line %d: empty line", line);
		if (!strncmp(p, "# HELP ", 7) || !strncmp(p, "# TYPE ", 7)) {
			bool is_help = p[2] == 'H';
			p += 7;
			char *name = parse_name(&p, true, line);
			cr_assert(*p == ' ', "line %d: expected space after name", line);
			p++;
			size_t fi = fam_index(e, name);
			if (fi == (size_t)-1) {
				e->fam = realloc(e->fam, (e->nf + 1) * sizeof(*e->fam));
				e->fam[e->nf] = (struct fam){ .name = name };
				fi = e->nf++;
			} else {
				cr_assert(fi == cur && !cur_has_samples,
					  "line %d: %s described twice or after its samples", line, name);
				free(name);
			}
			if (fi != cur) {
				cur = fi;
				cur_has_samples = false;
			}
			if (is_help) {
				cr_assert(!e->fam[fi].help && !e->fam[fi].type,
					  "line %d: HELP must come once, before TYPE", line);
				char *h = malloc((size_t)(eol - p) + 1), *o = h;
				for (; p < eol; p++) {
					if (*p != '\\') {
						*o++ = *p;
						continue;
					}
					p++;
					cr_assert(*p == '\\' || *p == 'n', "line %d: bad HELP escape", line);
					*o++ = *p == 'n' ? '\n' : '\\';
				}
				*o = '\0';
				e->fam[fi].help = h;
			} else {
				cr_assert(!e->fam[fi].type, "line %d: second TYPE", line);
				e->fam[fi].type = strndup(p, (size_t)(eol - p));
				const char *t = e->fam[fi].type;
				cr_assert(!strcmp(t, "counter") || !strcmp(t, "gauge") ||
					  !strcmp(t, "histogram") || !strcmp(t, "summary") ||
					  !strcmp(t, "untyped"), "line %d: bad type %s", line, t);
			}
			p = eol + 1;
			continue;
		}
		cr_assert(*p != '#', "line %d: unexpected comment", line);

		struct sample s = { 0 };
		s.name = parse_name(&p, true, line);
		if (*p == '{') {
			p++;
			while (*p != '}') {
				cr_assert(s.nl < MAX_LABELS, "line %d: too many labels", line);
				s.key[s.nl] = parse_name(&p, false, line);
				for (size_t k = 0; k < s.nl; k++)
					cr_assert(strcmp(s.key[k], s.key[s.nl]), "line %d: duplicate label", line);
				cr_assert(p[0] == '=' && p[1] == '"', "line %d: expected =\"", line);
				p += 2;
				char *v = malloc((size_t)(eol - p) + 1), *o = v;
				while (*p != '"') {
					cr_assert(p < eol, "line %d: unterminated label value", line);
					if (*p == '\\') {
						p++;
						cr_assert(*p == '\\' || *p == '"' || *p == 'n',
							  "line %d: bad escape \\%c", line, *p);
						*o++ = *p == 'n' ? '\n' : *p;
					} else {
						*o++ = *p;
					}
					p++;
				}
				*o = '\0';
				s.val[s.nl++] = v;
				p++;
				if (*p == ',')
					p++;
				else
					cr_assert(*p == '}', "line %d: expected , or }", line);
			}
			p++;
		}
		cr_assert(*p == ' ', "line %d: expected space before value", line);
		p++;
		char *end;
		s.value = strtod(p, &end);
		cr_assert(end > p && end == eol, "line %d: bad value '%.*s'", line, (int)(eol - p), p);
		cr_assert(cur != (size_t)-1 && e->fam[cur].type, "line %d: %s has no TYPE before it",
			  line, s.name);
		cr_assert(sample_in_family(s.name, e->fam[cur].name, e->fam[cur].type),
			  "line %d: sample %s outside its family (current %s)", line, s.name,
			  e->fam[cur].name);
		if (label(&s, "le"))
			cr_assert(!strcmp(e->fam[cur].type, "histogram") && has_suffix(s.name, "_bucket"),
				  "line %d: le only on histogram buckets", line);
		s.fam = cur;
		cur_has_samples = true;
		e->s = realloc(e->s, (e->ns + 1) * sizeof(*e->s));
		e->s[e->ns++] = s;
		p = eol + 1;
	}
	check_histograms(e);
}

static void expo_free(struct expo *e)
{
	for (size_t i = 0; i < e->ns; i++) {
		free(e->s[i].name);
		for (size_t k = 0; k < e->s[i].nl; k++) {
			free(e->s[i].key[k]);
			free(e->s[i].val[k]);
		}
	}
	for (size_t i = 0; i < e->nf; i++) {
		free(e->fam[i].name);
		free(e->fam[i].type);
		free(e->fam[i].help);
	}
	free(e->s);
	free(e->fam);
	memset(e, 0, sizeof(*e));
}

/* The sample called name whose labels are exactly the nl pairs kv (key,
 * value, key, value...); NULL if absent. */
static const struct sample *find(const struct expo *e, const char *name, size_t nl,
				 const char *const *kv)
{
	for (size_t i = 0; i < e->ns; i++) {
		const struct sample *s = &e->s[i];
		bool ok = !strcmp(s->name, name) && s->nl == nl;

		for (size_t k = 0; ok && k < nl; k++) {
			const char *v = label(s, kv[2 * k]);
			ok = v && !strcmp(v, kv[2 * k + 1]);
		}
		if (ok)
			return s;
	}
	return NULL;
}

static double value_of(const struct expo *e, const char *name, size_t nl, const char *const *kv)
{
	const struct sample *s = find(e, name, nl, kv);

	cr_assert(s, "sample %s (%zu labels) not found", name, nl);
	return s->value;
}

/* ---- fixture ---- */

static struct metrics *m;
static struct buf out;

static void setup(void)
{
	m = metrics_new();
	cr_assert(m);
	buf_init(&out, 1 << 20);
}

static void teardown(void)
{
	metrics_free(m);
	m = NULL;
	buf_release(&out);
	cr_assert_eq(out.alloc, 0);
}

static void render_parse(struct expo *e)
{
	buf_reset(&out);
	cr_assert_eq(metrics_render(m, &out), ST_OK);
	expo_parse(out.ptr, e);
}

/* ---- concurrency ---- */

struct worker {
	pthread_t tid;
	int id;
	struct metric_series *series;
	struct metric_family *fam;
	struct metric_series *seen[64];
	int errors;
	const bool *stop; /* for endless workers */
};

static void run_threads(struct worker *w, void *(*fn)(void *))
{
	for (int i = 0; i < NTHREADS; i++) {
		w[i].id = i;
		cr_assert_eq(pthread_create(&w[i].tid, NULL, fn, &w[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(w[i].tid, NULL);
}

static void *inc_worker(void *arg)
{
	struct worker *w = arg;
	const char *v[] = { w->id % 2 ? "odd" : "even" };

	for (int i = 0; i < NITER; i++) {
		metric_inc(w->series);
		metrics_inc(w->fam, v); /* lookup each time: the read-lock path */
	}
	return NULL;
}

Test(metrics, counter_increments_from_threads_are_exact, .init = setup, .fini = teardown)
{
	const char *lbl[] = { "parity" };
	struct metric_family *total = metrics_counter(m, "ops_total", "All ops.", 0, NULL);
	struct metric_family *by = metrics_counter(m, "ops_by_parity_total", "Ops by parity.", 1, lbl);
	struct worker w[NTHREADS] = { 0 };
	struct expo e;

	cr_assert(total && by);
	for (int i = 0; i < NTHREADS; i++) {
		w[i].series = metric_series_get(total, NULL);
		w[i].fam = by;
	}
	run_threads(w, inc_worker);

	render_parse(&e);
	cr_assert_eq(value_of(&e, "ops_total", 0, NULL), (double)NTHREADS * NITER);
	cr_assert_eq(value_of(&e, "ops_by_parity_total", 1, (const char *[]){ "parity", "even" }),
		     (double)NTHREADS / 2 * NITER);
	cr_assert_eq(value_of(&e, "ops_by_parity_total", 1, (const char *[]){ "parity", "odd" }),
		     (double)NTHREADS / 2 * NITER);
	/* Integral counters are printed as integers, never 8e+05. */
	cr_assert(strstr(out.ptr, "\nops_total 800000\n"), "%s", out.ptr);
	expo_free(&e);
}

static void *create_worker(void *arg)
{
	struct worker *w = arg;
	char name[16];

	/* Every thread walks the same 64 label values in a different order,
	 * so series are created under contention. */
	for (int r = 0; r < 100; r++) {
		for (int k = 0; k < 64; k++) {
			int idx = (k + w->id * 8) % 64;
			const char *v[] = { name, "x" };
			struct metric_series *s;

			snprintf(name, sizeof(name), "v%d", idx);
			s = metric_series_get(w->fam, v);
			/* Criterion asserts only from the test's own thread. */
			if (r == 0)
				w->seen[idx] = s;
			else if (s != w->seen[idx])
				w->errors++;
			metric_inc(s);
		}
	}
	return NULL;
}

Test(metrics, series_created_concurrently_once, .init = setup, .fini = teardown)
{
	const char *lbl[] = { "key", "other" };
	struct metric_family *f = metrics_counter(m, "created_total", NULL, 2, lbl);
	struct worker w[NTHREADS] = { 0 };
	struct expo e;

	cr_assert(f);
	for (int i = 0; i < NTHREADS; i++)
		w[i].fam = f;
	run_threads(w, create_worker);
	for (int i = 0; i < NTHREADS; i++)
		cr_assert_eq(w[i].errors, 0, "thread %d saw a series change", i);
	for (int k = 0; k < 64; k++) {
		cr_assert_not_null(w[0].seen[k]);
		for (int i = 1; i < NTHREADS; i++)
			cr_assert_eq(w[i].seen[k], w[0].seen[k], "a series was created twice");
	}

	render_parse(&e);
	cr_assert_eq(e.ns, 64 + 6, "64 series plus the process metrics");
	for (int k = 0; k < 64; k++) {
		char name[16];
		snprintf(name, sizeof(name), "v%d", k);
		cr_assert_eq(value_of(&e, "created_total", 2, (const char *[]){ "key", name, "other", "x" }),
			     NTHREADS * 100.0);
	}
	cr_assert_null(e.fam[0].help, "no HELP line when help is NULL");
	expo_free(&e);
}

static void *gauge_worker(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < NITER; i++) {
		metric_add(w->series, 1.0);
		metric_inc(w->series);
		metric_add(w->series, -1.0);
	}
	return NULL;
}

Test(metrics, gauge_adds_from_threads_are_exact, .init = setup, .fini = teardown)
{
	struct metric_family *f = metrics_gauge(m, "inflight", "In flight.", 0, NULL);
	struct worker w[NTHREADS] = { 0 };
	struct expo e;

	cr_assert(f);
	for (int i = 0; i < NTHREADS; i++)
		w[i].series = metric_series_get(f, NULL);
	run_threads(w, gauge_worker);
	render_parse(&e);
	cr_assert_eq(value_of(&e, "inflight", 0, NULL), (double)NTHREADS * NITER);
	expo_free(&e);
}

/* 2^-10 -> le 0.001, 2^-8 -> le 0.005, 0.25 -> le 0.25 (bounds are
 * inclusive), 8 -> le 10, 64 -> +Inf. Powers of two keep the sum exact. */
static const double obs_values[] = { 0.0009765625, 0.00390625, 0.25, 8, 64 };

static void *observe_worker(void *arg)
{
	struct worker *w = arg;
	const char *v[] = { "GET", "/x" };

	for (int i = 0; i < NITER; i++) {
		metric_observe(w->series, obs_values[i % 5]);
		if (i % 100 == 0)
			metrics_observe(w->fam, v, 0.5);
	}
	return NULL;
}

Test(metrics, histogram_observations_from_threads_are_exact, .init = setup, .fini = teardown)
{
	const char *lbl[] = { "method", "route" };
	struct metric_family *f =
		metrics_histogram(m, "req_seconds", "Latency.", 2, lbl, NULL, 0);
	const char *v[] = { "POST", "/api/claim/prepare" };
	struct worker w[NTHREADS] = { 0 };
	struct expo e;
	const char *kv[] = { "method", "POST", "route", "/api/claim/prepare", "le", NULL };
	double per = (double)NTHREADS * NITER / 5;

	cr_assert(f);
	for (int i = 0; i < NTHREADS; i++) {
		w[i].series = metric_series_get(f, v);
		w[i].fam = f;
	}
	run_threads(w, observe_worker);
	render_parse(&e);

	/* The default buckets, in order, then +Inf. */
	const char *les[] = { "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
			      "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf" };
	const double want[] = { 0, per, per, 2 * per, 2 * per, 2 * per, 2 * per,
				2 * per, 3 * per, 3 * per, 3 * per, 3 * per, 3 * per, 4 * per, 5 * per };
	for (size_t i = 0; i < 15; i++) {
		kv[5] = les[i];
		cr_assert_eq(value_of(&e, "req_seconds_bucket", 3, kv), want[i], "le=%s", les[i]);
	}
	cr_assert_eq(value_of(&e, "req_seconds_count", 2, kv), 5 * per);
	cr_assert_eq(value_of(&e, "req_seconds_sum", 2, kv),
		     per * (0.0009765625 + 0.00390625 + 0.25 + 8 + 64));
	const char *kv2[] = { "method", "GET", "route", "/x" };
	cr_assert_eq(value_of(&e, "req_seconds_count", 2, kv2), NTHREADS * (NITER / 100.0));
	expo_free(&e);
}

Test(metrics, histogram_custom_buckets, .init = setup, .fini = teardown)
{
	const double b[] = { 1, 2, 5, INFINITY }; /* explicit +Inf is dropped, not doubled */
	struct metric_family *f = metrics_histogram(m, "size_bytes", "Sizes.", 0, NULL, b, 4);
	struct metric_series *s = metric_series_get(f, NULL);
	struct expo e;

	metric_observe(s, 1);
	metric_observe(s, 1.5);
	metric_observe(s, 100);
	metric_observe(s, NAN); /* lands in +Inf, sum becomes NaN */
	render_parse(&e);
	cr_assert_eq(value_of(&e, "size_bytes_bucket", 1, (const char *[]){ "le", "1" }), 1);
	cr_assert_eq(value_of(&e, "size_bytes_bucket", 1, (const char *[]){ "le", "2" }), 2);
	cr_assert_eq(value_of(&e, "size_bytes_bucket", 1, (const char *[]){ "le", "5" }), 2);
	cr_assert_eq(value_of(&e, "size_bytes_bucket", 1, (const char *[]){ "le", "+Inf" }), 4);
	cr_assert(isnan(value_of(&e, "size_bytes_sum", 0, NULL)));
	cr_assert_eq(e.ns, 6 + 6);
	expo_free(&e);
}

/* ---- rendering while updating (the TSan target) ---- */

static void *busy_worker(void *arg)
{
	struct worker *w = arg;
	const char *v[] = { w->id % 2 ? "a" : "b" };
	uint64_t i = 0;

	while (!__atomic_load_n(w->stop, __ATOMIC_RELAXED)) {
		metric_observe(w->series, (double)(i % 7) * 0.01);
		metrics_inc(w->fam, v);
		i++;
	}
	return NULL;
}

Test(metrics, render_while_updating_stays_consistent, .init = setup, .fini = teardown)
{
	const char *lbl[] = { "k" };
	struct metric_family *h = metrics_histogram(m, "h_seconds", "H.", 0, NULL, NULL, 0);
	struct metric_family *c = metrics_counter(m, "c_total", "C.", 1, lbl);
	struct worker w[NTHREADS] = { 0 };
	bool stop = false;
	double last = 0;

	for (int i = 0; i < NTHREADS; i++) {
		w[i].id = i;
		w[i].series = metric_series_get(h, NULL);
		w[i].fam = c;
		w[i].stop = &stop;
		cr_assert_eq(pthread_create(&w[i].tid, NULL, busy_worker, &w[i]), 0);
	}
	for (int r = 0; r < 30; r++) {
		struct expo e;

		render_parse(&e); /* checks +Inf == _count on a moving histogram */
		double now = value_of(&e, "h_seconds_count", 0, NULL);
		cr_assert_geq(now, last, "counts never go down");
		last = now;
		expo_free(&e);
		usleep(1000);
	}
	__atomic_store_n(&stop, true, __ATOMIC_RELAXED);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(w[i].tid, NULL);
}

/* ---- format details ---- */

Test(metrics, escaping_round_trips, .init = setup, .fini = teardown)
{
	const char *lbl[] = { "path", "plain" };
	const char *nasty = "a\"b\\c\nd\\n\"";
	const char *help = "Line one\nback\\slash \"quoted\"";
	struct metric_family *f = metrics_counter(m, "esc_total", help, 2, lbl);
	struct expo e;

	metrics_inc(f, (const char *[]){ nasty, "ok" });
	metrics_inc(f, (const char *[]){ "", "empty first" });
	render_parse(&e);
	cr_assert(strstr(out.ptr, "esc_total{path=\"a\\\"b\\\\c\\nd\\\\n\\\"\",plain=\"ok\"} 1\n"),
		  "%s", out.ptr);
	cr_assert(strstr(out.ptr, "# HELP esc_total Line one\\nback\\\\slash \"quoted\"\n"));
	cr_assert_eq(value_of(&e, "esc_total", 2, (const char *[]){ "path", nasty, "plain", "ok" }), 1);
	cr_assert_eq(value_of(&e, "esc_total", 2, (const char *[]){ "path", "", "plain", "empty first" }), 1);
	cr_assert_str_eq(e.fam[0].help, help);
	expo_free(&e);
}

Test(metrics, families_and_series_keep_their_order, .init = setup, .fini = teardown)
{
	const char *lbl[] = { "n" };
	struct metric_family *z = metrics_gauge(m, "zeta", "Z.", 1, lbl);
	struct metric_family *a = metrics_counter(m, "alpha_total", "A.", 1, lbl);
	struct expo e;

	cr_assert_eq(metrics_gauge(m, "zeta", "again", 1, lbl), z, "same name, same family");
	metrics_set(z, (const char *[]){ "3" }, 3);
	metrics_set(z, (const char *[]){ "1" }, 1);
	metrics_set(z, (const char *[]){ "2" }, 2);
	metrics_inc(a, (const char *[]){ "b" });
	metrics_inc(a, (const char *[]){ "a" });
	metrics_set(z, (const char *[]){ "1" }, 10); /* existing series: no new line */
	render_parse(&e);
	cr_assert_str_eq(e.fam[0].name, "zeta");
	cr_assert_str_eq(e.fam[1].name, "alpha_total");
	cr_assert_str_eq(e.fam[0].help, "Z.");
	const char *order[] = { "3", "1", "2", "b", "a" };
	for (int i = 0; i < 5; i++)
		cr_assert_str_eq(e.s[i].val[0], order[i]);
	cr_assert_eq(e.s[1].value, 10);
	expo_free(&e);
}

Test(metrics, values_are_formatted_for_prometheus, .init = setup, .fini = teardown)
{
	const char *lbl[] = { "k" };
	struct metric_family *g = metrics_gauge(m, "g", "G.", 1, lbl);
	struct metric_family *c = metrics_counter(m, "c_total", "C.", 0, NULL);
	struct metric_family *empty = metrics_counter(m, "never_total", "Never.", 1, lbl);
	struct metric_series *cs = metric_series_get(c, NULL);
	struct expo e;

	cr_assert(empty);
	metrics_set(g, (const char *[]){ "half" }, -2.25);
	metrics_set(g, (const char *[]){ "tenth" }, 0.1);
	metrics_set(g, (const char *[]){ "inf" }, INFINITY);
	metrics_set(g, (const char *[]){ "ninf" }, -INFINITY);
	metrics_set(g, (const char *[]){ "nan" }, NAN);
	metrics_set(g, (const char *[]){ "big" }, 1e20);
	metric_add(cs, 0.5);
	metric_add(cs, 0.5);
	metric_add(cs, 3);
	render_parse(&e);
	const char *want[] = { "g{k=\"half\"} -2.25\n", "g{k=\"tenth\"} 0.1\n",
			       "g{k=\"inf\"} +Inf\n", "g{k=\"ninf\"} -Inf\n", "g{k=\"nan\"} NaN\n",
			       "g{k=\"big\"} 1e+20\n", "\nc_total 4\n",
			       "# TYPE never_total counter\n# HELP process_" };
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		cr_assert(strstr(out.ptr, want[i]), "missing \"%s\" in:\n%s", want[i], out.ptr);
	expo_free(&e);
}

Test(metrics, unlabelled_families_export_zero_before_use, .init = setup, .fini = teardown)
{
	struct expo e;

	cr_assert(metrics_counter(m, "fresh_total", "F.", 0, NULL));
	cr_assert(metrics_histogram(m, "fresh_seconds", "F.", 0, NULL, NULL, 0));
	render_parse(&e);
	cr_assert_eq(value_of(&e, "fresh_total", 0, NULL), 0);
	cr_assert_eq(value_of(&e, "fresh_seconds_count", 0, NULL), 0);
	cr_assert_eq(value_of(&e, "fresh_seconds_bucket", 1, (const char *[]){ "le", "+Inf" }), 0);
	expo_free(&e);
}

static double depth_fn(void *arg)
{
	int *calls = arg;

	return ++*calls * 1.5;
}

Test(metrics, gauge_func_is_read_at_render_time, .init = setup, .fini = teardown)
{
	int calls = 0;
	struct expo e;

	cr_assert_eq(metrics_gauge_func(m, "queue_depth", "Depth.", depth_fn, &calls), ST_OK);
	cr_assert_eq(metrics_gauge_func(m, "queue_depth", "Depth.", depth_fn, &calls), ST_OK);
	cr_assert_eq(metrics_gauge_func(m, "queue_depth", "Depth.", depth_fn, NULL), ST_CONFLICT);
	cr_assert(metrics_counter(m, "taken_total", NULL, 0, NULL));
	cr_assert_eq(metrics_gauge_func(m, "taken_total", NULL, depth_fn, NULL), ST_CONFLICT);
	render_parse(&e);
	cr_assert_eq(value_of(&e, "queue_depth", 0, NULL), 1.5);
	cr_assert_str_eq(e.fam[0].type, "gauge");
	expo_free(&e);
	render_parse(&e);
	cr_assert_eq(value_of(&e, "queue_depth", 0, NULL), 3);
	cr_assert_eq(calls, 2);
	expo_free(&e);
}

/* ---- process metrics ---- */

Test(metrics, process_metrics_appear, .init = setup, .fini = teardown)
{
	struct expo e;
	double now = (double)time(NULL);

	render_parse(&e);
	cr_assert_eq(e.nf, 6);
	cr_assert_str_eq(e.fam[0].name, "process_cpu_seconds_total");
	cr_assert_str_eq(e.fam[0].type, "counter");
	cr_assert_geq(value_of(&e, "process_cpu_seconds_total", 0, NULL), 0);
	cr_assert_gt(value_of(&e, "process_resident_memory_bytes", 0, NULL), 0);
	cr_assert_gt(value_of(&e, "process_virtual_memory_bytes", 0, NULL),
		     value_of(&e, "process_resident_memory_bytes", 0, NULL));
	cr_assert_geq(value_of(&e, "process_open_fds", 0, NULL), 3);
	cr_assert_gt(value_of(&e, "process_max_fds", 0, NULL), 0);
	double start = value_of(&e, "process_start_time_seconds", 0, NULL);
	cr_assert(start > now - 3600 && start <= now + 2, "start %f, now %f", start, now);
	expo_free(&e);
}

Test(metrics, process_metrics_from_a_fake_procfs, .init = setup, .fini = teardown)
{
	char root[] = "/tmp/test_metrics_XXXXXX", path[256];
	long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	struct expo e;
	FILE *fp;

	cr_assert(mkdtemp(root));
	snprintf(path, sizeof(path), "%s/self", root);
	cr_assert_eq(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/self/fd", root);
	cr_assert_eq(mkdir(path, 0700), 0);
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/self/fd/%d", root, i);
		fp = fopen(path, "w");
		cr_assert(fp);
		fclose(fp);
	}
	/* comm with spaces and a ')' must not shift the fields. */
	snprintf(path, sizeof(path), "%s/self/stat", root);
	fp = fopen(path, "w");
	cr_assert(fp);
	fprintf(fp, "42 (we) ird (x) S 1 42 42 0 -1 4194560 100 0 0 0 %ld %ld 0 0 20 0 1 0 %ld "
		    "123456 7 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n",
		3 * tck, 2 * tck, 50 * tck);
	fclose(fp);
	snprintf(path, sizeof(path), "%s/self/statm", root);
	fp = fopen(path, "w");
	cr_assert(fp);
	fprintf(fp, "1000 250 10 1 0 100 0\n");
	fclose(fp);
	snprintf(path, sizeof(path), "%s/stat", root);
	fp = fopen(path, "w");
	cr_assert(fp);
	fprintf(fp, "cpu  1 2 3 4\nintr 1");
	for (int i = 0; i < 2000; i++) /* a long line that ends in "btime 7" */
		fprintf(fp, " btime 7");
	fprintf(fp, "\nctxt 99\nbtime 1700000000\nprocesses 5\n");
	fclose(fp);

	cr_assert_eq(metrics_set_procfs(m, root), ST_OK);
	render_parse(&e);
	cr_assert_eq(value_of(&e, "process_cpu_seconds_total", 0, NULL), 5);
	cr_assert_eq(value_of(&e, "process_resident_memory_bytes", 0, NULL), 250.0 * page);
	cr_assert_eq(value_of(&e, "process_virtual_memory_bytes", 0, NULL), 1000.0 * page);
	cr_assert_eq(value_of(&e, "process_open_fds", 0, NULL), 3);
	cr_assert_eq(value_of(&e, "process_start_time_seconds", 0, NULL), 1700000050);
	expo_free(&e);

	const char *files[] = { "self/fd/0", "self/fd/1", "self/fd/2", "self/fd", "self/stat",
				"self/statm", "self", "stat", "" };
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", root, files[i]);
		cr_assert_eq(remove(path), 0, "%s", path);
	}
}

Test(metrics, process_metrics_skip_what_cannot_be_read, .init = setup, .fini = teardown)
{
	struct expo e;

	cr_assert(metrics_counter(m, "app_total", "App.", 0, NULL));
	cr_assert_eq(metrics_set_procfs(m, "/nonexistent/proc"), ST_OK);
	render_parse(&e);
	cr_assert_eq(e.nf, 2, "app_total and process_max_fds (from getrlimit) only");
	cr_assert_str_eq(e.fam[1].name, "process_max_fds");
	expo_free(&e);
	cr_assert_eq(metrics_set_procfs(m, NULL), ST_OK);
	render_parse(&e);
	cr_assert_eq(e.nf, 7);
	expo_free(&e);
}

Test(metrics, registered_family_shadows_process_metric, .init = setup, .fini = teardown)
{
	struct expo e;

	cr_assert(metrics_gauge(m, "process_open_fds", "Ours.", 0, NULL));
	render_parse(&e); /* the parser rejects a family described twice */
	cr_assert_eq(e.nf, 6);
	cr_assert_eq(value_of(&e, "process_open_fds", 0, NULL), 0);
	expo_free(&e);
}

/* ---- failure paths ---- */

Test(metrics, render_over_cap_leaves_buf_unchanged, .init = setup, .fini = teardown)
{
	struct buf small = BUF_INIT(64);
	struct metric_family *f = metrics_counter(m, "a_rather_long_counter_name_total",
						  "Help text that does not fit in 64 bytes.", 0, NULL);

	cr_assert(f);
	cr_assert_eq(buf_puts(&small, "keep"), ST_OK);
	cr_assert_eq(metrics_render(m, &small), ST_TOO_LARGE);
	cr_assert_eq(small.len, 4);
	cr_assert_str_eq(small.ptr, "keep");
	buf_release(&small);

	struct buf empty = BUF_INIT(10);
	cr_assert_eq(metrics_render(m, &empty), ST_TOO_LARGE);
	cr_assert_eq(empty.len, 0);
	cr_assert_str_eq(empty.ptr, "");
	buf_release(&empty);
}

Test(metrics, free_accepts_null_and_updates_accept_null_series)
{
	metrics_free(NULL);
	metric_inc(NULL);
	metric_add(NULL, 1);
	metric_set(NULL, 1);
	metric_observe(NULL, 1);
}

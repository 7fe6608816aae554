/* metrics.h — a small Prometheus registry: counters, gauges and histograms
 * with labels, rendered in the text exposition format 0.0.4.
 *
 * No packaged C Prometheus client exists on Debian, so this is our own.
 * Workload: series are created rarely (a route x status pair appears once)
 * and updated on every request, so creation takes a lock and updates are
 * lock-free atomics on the series. Callers on the hot path look a series up
 * once and keep the pointer; pointers stay valid until metrics_free().
 *
 * Label values are copied. Names and label names must be valid Prometheus
 * identifiers (programmer error otherwise: assert). */
#ifndef SETTLED_METRICS_H
#define SETTLED_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "rc.h"

#define METRICS_MAX_LABELS 4

/* Content-Type of metrics_render() output (text exposition format 0.0.4). */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metrics;        /* the registry */
struct metric_family;  /* one name, one type, fixed label names */
struct metric_series;  /* one label-value combination of a family */

/* Gauge callback: called at render time to read a value (queue depth,
 * RSS...). arg is borrowed for the registry's lifetime. */
typedef double metrics_gauge_fn(void *arg);

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m); /* accepts NULL */

/* Registers a family (or returns the existing one with the same name).
 * labels: nlabels label names (borrowed string literals). NULL on ENOMEM.
 * buckets (histograms only): nbuckets ascending upper bounds, copied; NULL
 * uses the default latency buckets 0.0005 .. 10 s. */
struct metric_family *metrics_counter(struct metrics *m, const char *name, const char *help,
				      size_t nlabels, const char *const *labels);
struct metric_family *metrics_gauge(struct metrics *m, const char *name, const char *help,
				    size_t nlabels, const char *const *labels);
struct metric_family *metrics_histogram(struct metrics *m, const char *name, const char *help,
					size_t nlabels, const char *const *labels,
					const double *buckets, size_t nbuckets);
/* A gauge whose single unlabelled value comes from fn at render time. */
enum st_rc metrics_gauge_func(struct metrics *m, const char *name, const char *help,
			      metrics_gauge_fn *fn, void *arg);

/* Finds or creates the series with these label values (nlabels of the
 * family). NULL on ENOMEM. Thread-safe. */
struct metric_series *metric_series_get(struct metric_family *f, const char *const *values);

/* Hot-path updates: lock-free, thread-safe, never fail. */
void metric_inc(struct metric_series *s);                 /* counter += 1 */
void metric_add(struct metric_series *s, double v);       /* counter += v (v >= 0), gauge += v */
void metric_set(struct metric_series *s, double v);       /* gauge = v */
void metric_observe(struct metric_series *s, double v);   /* histogram */

/* Convenience: series lookup + update in one call (takes the lookup cost). */
void metrics_inc(struct metric_family *f, const char *const *values);
void metrics_observe(struct metric_family *f, const char *const *values, double v);
void metrics_set(struct metric_family *f, const char *const *values, double v);

/* Renders every family in registration order, followed by the process
 * metrics (process_cpu_seconds_total, process_resident_memory_bytes,
 * process_open_fds, process_max_fds, process_start_time_seconds) read from
 * /proc/self. */
/* Appends to out. ST_OK, or ST_TOO_LARGE / ST_NOMEM from out, in which case
 * out is left exactly as it was. process_virtual_memory_bytes is also
 * exported. A process metric whose /proc source cannot be read is left out
 * (never an error); a registered family with the same name replaces it. */
enum st_rc metrics_render(struct metrics *m, struct buf *out);

/* Reads the process metrics from root ("/proc" layout: root/self/stat,
 * root/self/statm, root/self/fd, root/stat) instead of /proc; for tests.
 * root is copied; NULL restores /proc. ST_OK or ST_NOMEM. */
enum st_rc metrics_set_procfs(struct metrics *m, const char *root);

#endif

/*
 * base/metrics.h — the Prometheus text exposition writer every metric
 * source uses, a lock-free latency histogram, and the process metrics.
 *
 * One writer so every family has its # HELP and # TYPE lines, label values
 * are escaped the same way and histograms are cumulative with +Inf, _sum
 * and _count (what `promtool check metrics` asks of the text format,
 * version 0.0.4).  Names follow Prometheus conventions: counters end in
 * _total, durations are _seconds, sizes _bytes.
 *
 *     bz_metric_family(o, "bazaar_x_total", "counter", "Things done.");
 *     bz_metric_int(o, "bazaar_x_total", NULL, 42);
 */
#ifndef BZ_METRICS_H
#define BZ_METRICS_H

#include <bazaar/buf.h>

#include <stdatomic.h>
#include <stdint.h>

#pragma GCC visibility push(default)

/* "# HELP name help\n# TYPE name type\n"; type is counter, gauge or
 * histogram; help is one line from code. */
void bz_metric_family(bz_buf *o, const char *name, const char *type, const char *help);
/* One sample "name{labels} value".  labels is a preformatted label list
 * without braces (from bz_metric_label), or NULL/"" for none. */
void bz_metric_int(bz_buf *o, const char *name, const char *labels, int64_t v);
void bz_metric_double(bz_buf *o, const char *name, const char *labels, double v);
/* A whole single-sample family: HELP, TYPE, the value. */
void bz_metric_gauge1(bz_buf *o, const char *name, const char *help, int64_t v);
void bz_metric_counter1(bz_buf *o, const char *name, const char *help, int64_t v);
/* Appends key="value" (with a leading comma when labels is not empty),
 * escaping backslash, double quote and newline as the format asks. */
void bz_metric_label(bz_buf *labels, const char *key, const char *value);

/* ---- histograms of durations ----------------------------------------------
 *
 * Bucket upper bounds in seconds, ascending, at most BZ_HIST_MAX (+Inf is
 * implied).  A bz_hist is written by any thread with relaxed atomics (one
 * add per field); a scrape reads it into a bz_hist_snap, possibly adding
 * several together, and renders that. */
#define BZ_HIST_MAX 16
typedef struct bz_hist_bounds {
    int n;
    double le[BZ_HIST_MAX];
} bz_hist_bounds;

typedef struct bz_hist {
    _Atomic int64_t count, sum_ns;
    _Atomic int64_t bucket[BZ_HIST_MAX]; /* per bound, not cumulative */
} bz_hist;

typedef struct bz_hist_snap {
    int64_t count, sum_ns;
    int64_t bucket[BZ_HIST_MAX];
} bz_hist_snap;

void bz_hist_observe(bz_hist *h, const bz_hist_bounds *b, int64_t ns);
/* Adds h's current counts into s (s starts zeroed). */
void bz_hist_read(const bz_hist *h, bz_hist_snap *s);
/* Adds a into s. */
void bz_hist_snap_add(bz_hist_snap *s, const bz_hist_snap *a);
/* name_bucket{labels,le=".."} (cumulative) for every bound and +Inf, then
 * name_sum and name_count.  The family header is the caller's. */
void bz_metric_hist(bz_buf *o, const char *name, const char *labels, const bz_hist_bounds *b,
                    const bz_hist_snap *s);

/* ---- the process (Prometheus' standard process_* names) --------------------
 *
 * process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds and
 * process_start_time_seconds, from /proc/self (Linux).  A value that
 * cannot be read is left out rather than reported as 0. */
void bz_metrics_process(bz_buf *o);

/* What bz_metrics_process reads, for /debug/runtime.  -1 = unknown. */
typedef struct bz_proc_stats {
    double cpu_seconds;
    int64_t rss_bytes, vm_bytes, open_fds, max_fds;
    double start_time; /* unix seconds */
} bz_proc_stats;
bz_proc_stats bz_proc_read(void);

/* ---- the build ---------------------------------------------------------------
 *
 * Baked in at build time (the Makefile writes build/gen/buildinfo.h from
 * git when there is a checkout; "unknown" otherwise, so a tarball builds).
 * No date: the same tree builds the same binary. */
typedef struct bz_build {
    const char *version;  /* BAZAAR_VERSION */
    const char *commit;   /* short git hash, "+dirty" when the tree had changes; or "unknown" */
    const char *compiler; /* __VERSION__ of the compiler */
} bz_build;
const bz_build *bz_build_info(void);
/* bazaar_build_info{version,commit,compiler} 1 */
void bz_metrics_build(bz_buf *o);

#pragma GCC visibility pop
#endif

/* base/metrics.c — see metrics.h. */
#include <bazaar/metrics.h>

#include <bazaar/version.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#if __has_include("buildinfo.h")
#include "buildinfo.h" /* build/gen: BAZAAR_COMMIT */
#endif
#ifndef BAZAAR_COMMIT
#define BAZAAR_COMMIT "unknown"
#endif

void bz_metric_family(bz_buf *o, const char *name, const char *type, const char *help)
{
    bz_buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_head(bz_buf *o, const char *name, const char *labels)
{
    bz_buf_append_c(o, name);
    if (labels && *labels) {
        bz_buf_putc(o, '{');
        bz_buf_append_c(o, labels);
        bz_buf_putc(o, '}');
    }
    bz_buf_putc(o, ' ');
}

void bz_metric_int(bz_buf *o, const char *name, const char *labels, int64_t v)
{
    sample_head(o, name, labels);
    bz_buf_append_i64(o, v);
    bz_buf_putc(o, '\n');
}

void bz_metric_double(bz_buf *o, const char *name, const char *labels, double v)
{
    sample_head(o, name, labels);
    bz_buf_printf(o, "%.15g\n", v);
}

void bz_metric_gauge1(bz_buf *o, const char *name, const char *help, int64_t v)
{
    bz_metric_family(o, name, "gauge", help);
    bz_metric_int(o, name, NULL, v);
}

void bz_metric_counter1(bz_buf *o, const char *name, const char *help, int64_t v)
{
    bz_metric_family(o, name, "counter", help);
    bz_metric_int(o, name, NULL, v);
}

void bz_metric_label(bz_buf *labels, const char *key, const char *value)
{
    if (labels->len)
        bz_buf_putc(labels, ',');
    bz_buf_append_c(labels, key);
    bz_buf_append_c(labels, "=\"");
    for (const char *p = value ? value : ""; *p; p++) {
        if (*p == '\n') {
            bz_buf_append_c(labels, "\\n");
            continue;
        }
        if (*p == '"' || *p == '\\')
            bz_buf_putc(labels, '\\');
        bz_buf_putc(labels, *p);
    }
    bz_buf_putc(labels, '"');
}

/* ---- histograms ---- */

void bz_hist_observe(bz_hist *h, const bz_hist_bounds *b, int64_t ns)
{
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
    double sec = (double)ns / 1e9;
    for (int i = 0; i < b->n; i++)
        if (sec <= b->le[i]) {
            atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
            return;
        }
    /* above every bound: only +Inf (the count) holds it */
}

void bz_hist_read(const bz_hist *h, bz_hist_snap *s)
{
    s->count += atomic_load_explicit(&h->count, memory_order_relaxed);
    s->sum_ns += atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
    for (int i = 0; i < BZ_HIST_MAX; i++)
        s->bucket[i] += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
}

void bz_hist_snap_add(bz_hist_snap *s, const bz_hist_snap *a)
{
    s->count += a->count;
    s->sum_ns += a->sum_ns;
    for (int i = 0; i < BZ_HIST_MAX; i++)
        s->bucket[i] += a->bucket[i];
}

void bz_metric_hist(bz_buf *o, const char *name, const char *labels, const bz_hist_bounds *b,
                    const bz_hist_snap *s)
{
    char series[128];
    bz_buf l = BZ_BUF_INIT;
    int64_t cum = 0;
    /* Buckets and count are read at slightly different moments from
     * relaxed atomics: keep the exposition monotonic whatever raced. */
    snprintf(series, sizeof series, "%s_bucket", name);
    for (int i = 0; i <= b->n; i++) {
        char le[32];
        if (i < b->n) {
            cum += s->bucket[i];
            snprintf(le, sizeof le, "%g", b->le[i]);
        } else {
            cum = s->count > cum ? s->count : cum;
            snprintf(le, sizeof le, "+Inf");
        }
        bz_buf_clear(&l);
        if (labels && *labels)
            bz_buf_append_c(&l, labels);
        bz_metric_label(&l, "le", le);
        bz_metric_int(o, series, l.data, cum);
    }
    bz_buf_free(&l);
    snprintf(series, sizeof series, "%s_sum", name);
    bz_metric_double(o, series, labels, (double)s->sum_ns / 1e9);
    snprintf(series, sizeof series, "%s_count", name);
    bz_metric_int(o, series, labels, cum);
}

/* ---- the process ---- */

/* Boot time (unix seconds) from /proc/stat's btime line, or -1. */
static int64_t boot_time(void)
{
    FILE *f = fopen("/proc/stat", "re");
    if (!f)
        return -1;
    char line[256];
    long long bt = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "btime %lld", &bt) == 1)
            break;
    fclose(f);
    return bt;
}

bz_proc_stats bz_proc_read(void)
{
    bz_proc_stats p = {-1, -1, -1, -1, -1, -1};
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/stat", "re");
    if (f) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        /* The command name (field 2) may hold spaces and parentheses: the
         * fields we want follow its last ')'. */
        char *s = strrchr(buf, ')');
        unsigned long long utime, stime, start, vsize;
        long long rss;
        if (s && sscanf(s + 2,
                        "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu %llu %lld",
                        &utime, &stime, &start, &vsize, &rss) == 5 &&
            tck > 0) {
            p.cpu_seconds = (double)(utime + stime) / (double)tck;
            p.vm_bytes = (int64_t)vsize;
            p.rss_bytes = rss * page;
            int64_t bt = boot_time();
            if (bt >= 0)
                p.start_time = (double)bt + (double)start / (double)tck;
        }
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        int64_t k = 0;
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.')
                k++;
        closedir(d);
        p.open_fds = k - 1; /* the directory stream's own descriptor */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        p.max_fds = rl.rlim_cur == RLIM_INFINITY ? INT64_MAX : (int64_t)rl.rlim_cur;
    return p;
}

void bz_metrics_process(bz_buf *o)
{
    bz_proc_stats p = bz_proc_read();
    if (p.cpu_seconds >= 0) {
        bz_metric_family(o, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
        bz_metric_double(o, "process_cpu_seconds_total", NULL, p.cpu_seconds);
    }
    if (p.rss_bytes >= 0)
        bz_metric_gauge1(o, "process_resident_memory_bytes", "Resident memory size in bytes.", p.rss_bytes);
    if (p.vm_bytes >= 0)
        bz_metric_gauge1(o, "process_virtual_memory_bytes", "Virtual memory size in bytes.", p.vm_bytes);
    if (p.open_fds >= 0)
        bz_metric_gauge1(o, "process_open_fds", "Number of open file descriptors.", p.open_fds);
    if (p.max_fds >= 0)
        bz_metric_gauge1(o, "process_max_fds", "Maximum number of open file descriptors.", p.max_fds);
    if (p.start_time >= 0) {
        bz_metric_family(o, "process_start_time_seconds", "gauge",
                         "Start time of the process since unix epoch in seconds.");
        bz_metric_double(o, "process_start_time_seconds", NULL, p.start_time);
    }
}

/* ---- the build ---- */

const bz_build *bz_build_info(void)
{
#ifdef __VERSION__
    static const char compiler[] = __VERSION__;
#else
    static const char compiler[] = "unknown";
#endif
    static const bz_build b = {BAZAAR_VERSION, BAZAAR_COMMIT, compiler};
    return &b;
}

void bz_metrics_build(bz_buf *o)
{
    const bz_build *b = bz_build_info();
    bz_buf l = BZ_BUF_INIT;
    bz_metric_label(&l, "version", b->version);
    bz_metric_label(&l, "commit", b->commit);
    bz_metric_label(&l, "compiler", b->compiler);
    bz_metric_family(o, "bazaar_build_info", "gauge", "Build information; the value is always 1.");
    bz_metric_int(o, "bazaar_build_info", l.data, 1);
    bz_buf_free(&l);
}

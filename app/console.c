/* app/console.c — the operator's console on the admin listener.
 *
 *   GET /                the page (app/console/index.html), with uPlot
 *   GET /console/uPlot.js, /console/uPlot.css   the charting library (MIT)
 *   GET /console/data    JSON: the time series (all, or those after
 *                        ?since=SEQ), top statements, last errors,
 *                        dependencies, and the /debug/runtime document
 *
 * The assets are embedded at build time (scripts/embed.sh → build/gen/
 * console_assets.c), so the page works with no network.
 *
 * Cost model: the request path gains nothing.  A sampler coroutine on
 * loop 0 reads, once a second, the counters the process already keeps
 * (the REST and gRPC metrics shards, the loops' published stats, the
 * pool, the cache) and stores per-second deltas in rings of CONSOLE_RING
 * points — a few microseconds a second whether or not anybody looks.
 * The page then asks only for the points it has not seen.  Reachability
 * of PostgreSQL/SQLite and Redis is probed (a ping each, 1 s timeout) only
 * while somebody asks for data, at most every PROBE_EVERY. */
#include "app/console.h"
#include "app/admin.h"
#include "app/rest/json.h"
#include "app/svc/sql.h"
#include <bazaar/grpc.h>

#include <bazaar/errlog.h>
#include <bazaar/log.h>
#include <bazaar/db-stats.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define CONSOLE_RING 300   /* points: five minutes at one a second */
#define MAX_SERIES 160
#define PROBE_EVERY (2 * BZ_NS_PER_S)

extern const unsigned char console_index_html[], console_uplot_js[], console_uplot_css[];
extern const size_t console_index_html_len, console_uplot_js_len, console_uplot_css_len;

/* One REST route (by pattern and method) or one gRPC method. */
typedef struct series {
    char name[128];
    bool grpc;
    int64_t count, errors;        /* cumulative, at the last sample */
    int64_t bucket[BZ_HIST_MAX];
    int64_t last_active;          /* seq of the last point with traffic */
    /* this sample, being summed */
    bz_hist_snap cur;
    int64_t cur_errors;
    float rps[CONSOLE_RING], eps[CONSOLE_RING], p50[CONSOLE_RING], p99[CONSOLE_RING];
} series;

/* Whole-process gauges sampled with the series. */
enum {
    G_INFLIGHT, G_GRPC_INFLIGHT, G_CONNS_H1, G_CONNS_H2, G_DB_OPEN, G_DB_INUSE, G_DB_WAITING, G_CACHE_HIT, G_LAG_MS, G_COROS,
    G_OFFLOAD_QUEUED, G_CPU, G_RSS_MB, G__COUNT
};
static const char *const gauge_names[G__COUNT] = {"inflight", "grpc_inflight", "conns_http1", "conns_http2", "db_open", "db_in_use",
                                                  "db_waiting", "cache_hit_ratio", "lag_ms", "coroutines",
                                                  "offload_queued", "cpu_percent", "rss_mib"};

struct app_console {
    app *a;
    int64_t started_ns;
    pthread_mutex_t lk;       /* the rings: written by the sampler, read by /console/data */
    int64_t seq;              /* points sampled so far; point k is at k % CONSOLE_RING */
    double t[CONSOLE_RING];   /* unix seconds of each point */
    float g[G__COUNT][CONSOLE_RING];
    series *s[MAX_SERIES];
    int ns;
    /* previous cumulative values for the gauges that are rates */
    int64_t prev_hits, prev_misses;
    double prev_cpu;
    /* the sampler */
    rt_ctx stop;
    rt_coro *sampler;
    /* reachability, probed while somebody looks */
    rt_wg probes;
    int64_t probe_at;         /* bz_now_ns of the last probe's start */
    bool probing, db_ok, cache_ok, probed;
    int64_t db_probe_ns, cache_probe_ns;
};

/* ---- sampling -------------------------------------------------------------------- */

static series *x__series(app_console *c, const char *name, bool grpc)
{
    for (int i = 0; i < c->ns; i++)
        if (c->s[i]->grpc == grpc && !strcmp(c->s[i]->name, name))
            return c->s[i];
    if (c->ns >= MAX_SERIES)
        return NULL;
    series *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    snprintf(s->name, sizeof s->name, "%s", name);
    s->grpc = grpc;
    s->last_active = -1;
    c->s[c->ns++] = s;
    return s;
}

static void x__rest_series(const char *route, const char *method, int status, const bz_hist_snap *h, void *arg)
{
    app_console *c = arg;
    char name[128];
    /* A pattern with a method names itself ("GET /v1/items/{id}", which
     * HEAD shares); one without is counted per method. */
    if (strchr(route, ' '))
        snprintf(name, sizeof name, "%s", route);
    else
        snprintf(name, sizeof name, "%s %s", method, route);
    series *s = x__series(c, name, false);
    if (!s)
        return;
    bz_hist_snap_add(&s->cur, h);
    if (status >= 500)
        s->cur_errors += h->count;
}

/* Codes that say the server failed, not the caller. */
static bool x__grpc_server_fault(int code)
{
    return code == GRPC_UNKNOWN || code == GRPC_DEADLINE_EXCEEDED || code == GRPC_UNIMPLEMENTED ||
           code == GRPC_INTERNAL || code == GRPC_UNAVAILABLE || code == GRPC_DATA_LOSS;
}

static void x__grpc_series(const char *path, const int64_t *handled, const bz_hist_snap *h, void *arg)
{
    app_console *c = arg;
    series *s = x__series(c, path[0] == '/' ? path + 1 : path, true);
    if (!s)
        return;
    bz_hist_snap_add(&s->cur, h);
    for (int code = 0; code < GRPC_CODE__COUNT; code++)
        if (x__grpc_server_fault(code))
            s->cur_errors += handled[code];
}

/* The q-quantile of a per-second histogram, in milliseconds: linear
 * within the bucket it falls in (the last bound for +Inf). */
static float x__quantile(const bz_hist_bounds *b, const int64_t *bucket, int64_t count, double q)
{
    if (count <= 0)
        return 0;
    double want = q * (double)count, seen = 0, lo = 0;
    for (int i = 0; i < b->n; i++) {
        double hi = b->le[i];
        if (bucket[i] > 0 && seen + (double)bucket[i] >= want)
            return (float)((lo + (hi - lo) * (want - seen) / (double)bucket[i]) * 1e3);
        seen += (double)bucket[i];
        lo = hi;
    }
    return (float)(b->le[b->n - 1] * 1e3);
}

static void x__sample_series(app_console *c, int pos)
{
    for (int i = 0; i < c->ns; i++) {
        series *s = c->s[i];
        s->cur = (bz_hist_snap){0};
        s->cur_errors = 0;
    }
    int64_t inflight = rest_metrics_each(x__rest_series, c);
    grpc_metrics_each(x__grpc_series, c);
    c->g[G_INFLIGHT][pos] = (float)inflight;
    c->g[G_GRPC_INFLIGHT][pos] = (float)grpc_metrics_inflight();
    for (int i = 0; i < c->ns; i++) {
        series *s = c->s[i];
        const bz_hist_bounds *b = s->grpc ? grpc_metrics_bounds() : rest_metrics_bounds();
        int64_t n = s->cur.count - s->count, e = s->cur_errors - s->errors, d[BZ_HIST_MAX];
        for (int k = 0; k < b->n; k++)
            d[k] = s->cur.bucket[k] - s->bucket[k];
        s->rps[pos] = (float)(n > 0 ? n : 0);
        s->eps[pos] = (float)(e > 0 ? e : 0);
        s->p50[pos] = x__quantile(b, d, n, 0.50);
        s->p99[pos] = x__quantile(b, d, n, 0.99);
        if (n > 0)
            s->last_active = c->seq;
        s->count = s->cur.count;
        s->errors = s->cur_errors;
        memcpy(s->bucket, s->cur.bucket, sizeof s->bucket);
    }
}

static int64_t x__rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    long long size = 0, rss = 0;
    int n = fscanf(f, "%lld %lld", &size, &rss);
    fclose(f);
    return n == 2 ? rss * sysconf(_SC_PAGESIZE) : 0;
}

static double x__cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static void x__sample(app_console *c)
{
    pthread_mutex_lock(&c->lk);
    int pos = (int)(c->seq % CONSOLE_RING);
    c->t[pos] = (double)bz_wall_us() / 1e6;
    x__sample_series(c, pos);
    http_server_stats hs[8];
    int n = http_servers_stats(hs, 8);
    int64_t h1 = 0, h2 = 0;
    for (int i = 0; i < n; i++) {
        if (hs[i].name && !strcmp(hs[i].name, "admin"))
            continue; /* the console's own connection is not traffic */
        h1 += hs[i].open_http1;
        h2 += hs[i].open_http2;
    }
    c->g[G_CONNS_H1][pos] = (float)h1;
    c->g[G_CONNS_H2][pos] = (float)h2;
    db_stats d = db_get_stats(c->a->db);
    c->g[G_DB_OPEN][pos] = (float)d.open;
    c->g[G_DB_INUSE][pos] = (float)d.in_use;
    c->g[G_DB_WAITING][pos] = (float)d.waiting;
    cache_stats cs = cache_get_stats(c->a->cache);
    int64_t dh = cs.hits - c->prev_hits, dm = cs.misses - c->prev_misses;
    c->g[G_CACHE_HIT][pos] = dh + dm > 0 ? (float)dh / (float)(dh + dm) : NAN;
    c->prev_hits = cs.hits;
    c->prev_misses = cs.misses;
    int64_t lag = 0, coros = 0;
    for (int i = 0; i < rt_nloops(); i++) {
        rt_loop_stats ls = rt_loop_stats_read(i);
        if (ls.lag_last_ns > lag)
            lag = ls.lag_last_ns;
        coros += ls.coros_live;
    }
    c->g[G_LAG_MS][pos] = (float)((double)lag / 1e6);
    c->g[G_COROS][pos] = (float)coros;
    c->g[G_OFFLOAD_QUEUED][pos] = (float)rt_offload_stats_read().queued;
    double cpu = x__cpu_seconds();
    c->g[G_CPU][pos] = c->seq ? (float)((cpu - c->prev_cpu) * 100.0) : 0;
    c->prev_cpu = cpu;
    c->g[G_RSS_MB][pos] = (float)((double)x__rss_bytes() / 1048576.0);
    c->seq++;
    pthread_mutex_unlock(&c->lk);
}

static void x__sampler(void *p)
{
    app_console *c = p;
    rt_note_set("console", "sampling the counters once a second");
    /* On the second: the first sample is the baseline the deltas start from. */
    while (rt_sleep(&c->stop, BZ_NS_PER_S) == 0)
        x__sample(c);
}

/* ---- reachability ------------------------------------------------------------------- */

static void x__probe(void *p)
{
    app_console *c = p;
    rt_ctx ctx;
    rt_ctx_init_timeout(&ctx, &c->stop, BZ_NS_PER_S);
    bz_error e;
    int64_t t0 = bz_now_ns();
    bool db_ok = db_ping(c->a->db, &ctx, &e) == 0;
    int64_t t1 = bz_now_ns();
    bool cache_ok = cache_ping(c->a->cache, &ctx, &e) == 0;
    int64_t t2 = bz_now_ns();
    rt_ctx_release(&ctx);
    pthread_mutex_lock(&c->lk);
    c->db_ok = db_ok;
    c->cache_ok = cache_ok;
    c->db_probe_ns = t1 - t0;
    c->cache_probe_ns = t2 - t1;
    c->probed = true;
    c->probing = false;
    pthread_mutex_unlock(&c->lk);
    rt_wg_done(&c->probes);
}

/* ---- the data document ---------------------------------------------------------------- */

static void x__num(bz_buf *b, double v)
{
    if (isnan(v) || isinf(v)) {
        bz_buf_append_c(b, "null");
        return;
    }
    char s[32];
    int n;
    if (v == (double)(int64_t)v && fabs(v) < 1e15)
        n = snprintf(s, sizeof s, "%lld", (long long)v);
    else
        n = snprintf(s, sizeof s, "%.4g", v);
    bz_buf_append(b, s, (size_t)n);
}

static void x__arr(bz_buf *b, const char *key, const float *ring, int64_t from, int64_t to)
{
    jw_key(b, key);
    bz_buf_putc(b, '[');
    for (int64_t k = from; k < to; k++) {
        if (k > from)
            bz_buf_putc(b, ',');
        x__num(b, ring[k % CONSOLE_RING]);
    }
    bz_buf_putc(b, ']');
}

static void x__dbl(bz_buf *b, const char *key, double v)
{
    jw_key(b, key);
    x__num(b, v);
}

static void x__bool(bz_buf *b, const char *key, bool v)
{
    jw_key(b, key);
    bz_buf_append_c(b, v ? "true" : "false");
}

static void x__series_json(app_console *c, bz_buf *b, int64_t from, int64_t to)
{
    jw_key(b, "traffic");
    bz_buf_putc(b, '[');
    bool first = true;
    int64_t window = c->seq - CONSOLE_RING;
    for (int i = 0; i < c->ns; i++) {
        series *s = c->s[i];
        if (s->last_active < 0 || s->last_active < window)
            continue; /* no traffic in the window */
        if (!first)
            bz_buf_putc(b, ',');
        first = false;
        bz_buf_putc(b, '{');
        jw_str(b, "name", s->name);
        jw_str(b, "kind", s->grpc ? "grpc" : "rest");
        jw_i64(b, "total", s->count);
        jw_i64(b, "errors", s->errors);
        x__arr(b, "rps", s->rps, from, to);
        x__arr(b, "eps", s->eps, from, to);
        x__arr(b, "p50", s->p50, from, to);
        x__arr(b, "p99", s->p99, from, to);
        bz_buf_putc(b, '}');
    }
    bz_buf_putc(b, ']');
    jw_key(b, "gauges");
    bz_buf_putc(b, '{');
    for (int g = 0; g < G__COUNT; g++)
        x__arr(b, gauge_names[g], c->g[g], from, to);
    bz_buf_putc(b, '}');
}

static void x__statements(bz_buf *b)
{
    db_stmt_stat st[20];
    int n = db_stats_top(st, 20);
    jw_key(b, "statements");
    bz_buf_putc(b, '[');
    for (int i = 0; i < n; i++) {
        if (i)
            bz_buf_putc(b, ',');
        bz_buf_putc(b, '{');
        jw_str(b, "name", st[i].name);
        jw_i64(b, "count", st[i].count);
        jw_i64(b, "errors", st[i].errors);
        jw_i64(b, "rows", st[i].rows);
        jw_i64(b, "slow", st[i].slow);
        x__dbl(b, "total_ms", (double)st[i].total_ns / 1e6);
        x__dbl(b, "mean_ms", st[i].count ? (double)st[i].total_ns / 1e6 / (double)st[i].count : 0);
        x__dbl(b, "p50_ms", (double)st[i].p50_ns / 1e6);
        x__dbl(b, "p99_ms", (double)st[i].p99_ns / 1e6);
        x__dbl(b, "max_ms", (double)st[i].max_ns / 1e6);
        bz_buf_putc(b, '}');
    }
    bz_buf_putc(b, ']');
    x__dbl(b, "slow_query_ms", (double)db_stats_slow() / 1e6);
}

static void x__errors(bz_buf *b)
{
    bz_errlog_entry *e = malloc(BZ_ERRLOG_MAX * sizeof *e);
    if (!e)
        abort();
    int64_t total;
    int n = bz_errlog_read(e, BZ_ERRLOG_MAX, &total);
    jw_i64(b, "errors_total", total);
    jw_key(b, "errors");
    bz_buf_putc(b, '[');
    for (int i = 0; i < n; i++) {
        if (i)
            bz_buf_putc(b, ',');
        bz_buf_putc(b, '{');
        jw_time(b, "time", e[i].time_us);
        jw_str(b, "where", e[i].where);
        jw_i64(b, "status", e[i].status);
        jw_str(b, "code", e[i].code);
        jw_str(b, "trace_id", e[i].trace_id);
        jw_str(b, "message", e[i].message);
        bz_buf_putc(b, '}');
    }
    bz_buf_putc(b, ']');
    free(e);
}

static void x__deps(app_console *c, bz_buf *b)
{
    jw_key(b, "deps");
    bz_buf_putc(b, '{');
    x__bool(b, "probed", c->probed);
    x__bool(b, "db_reachable", c->db_ok);
    x__dbl(b, "db_probe_ms", (double)c->db_probe_ns / 1e6);
    x__bool(b, "cache_reachable", c->cache_ok);
    x__dbl(b, "cache_probe_ms", (double)c->cache_probe_ns / 1e6);
    cache_stats cs = cache_get_stats(c->a->cache);
    jw_i64(b, "cache_hits", cs.hits);
    jw_i64(b, "cache_misses", cs.misses);
    jw_i64(b, "cache_loads", cs.loads);
    jw_i64(b, "singleflight_shared", cs.shared_loads);
    jw_i64(b, "cache_errors", cs.errors);
    bz_buf_putc(b, '}');
}

void app_console_data(app_console *c, int64_t since, bz_buf *b)
{
    /* Reachability: probed in the background while somebody looks. */
    int64_t now = bz_now_ns();
    pthread_mutex_lock(&c->lk);
    bool start = !c->probing && now - c->probe_at >= PROBE_EVERY && !rt_ctx_err(&c->stop);
    if (start) {
        c->probing = true;
        c->probe_at = now;
        rt_wg_add(&c->probes, 1);
    }
    pthread_mutex_unlock(&c->lk);
    if (start)
        rt_go(x__probe, c);

    bz_buf_putc(b, '{');
    pthread_mutex_lock(&c->lk);
    int64_t to = c->seq, from = to - CONSOLE_RING;
    if (from < 0)
        from = 0;
    if (since > from && since <= to)
        from = since;
    jw_i64(b, "seq", to);
    jw_i64(b, "from", from);
    jw_key(b, "t");
    bz_buf_putc(b, '[');
    for (int64_t k = from; k < to; k++) {
        if (k > from)
            bz_buf_putc(b, ',');
        char s[24];
        int n = snprintf(s, sizeof s, "%.0f", c->t[k % CONSOLE_RING]);
        bz_buf_append(b, s, (size_t)n);
    }
    bz_buf_putc(b, ']');
    x__series_json(c, b, from, to);
    x__deps(c, b);
    pthread_mutex_unlock(&c->lk);
    x__statements(b);
    x__errors(b);
    jw_key(b, "runtime");
    app_admin_runtime_json(c->a, bz_now_ns() - c->started_ns, b);
    while (b->len && (b->data[b->len - 1] == '\n'))
        b->data[--b->len] = 0;
    bz_buf_append_c(b, "}\n");
}

/* ---- handlers ------------------------------------------------------------------------- */

static int x__asset(http_req *r, const char *type, const unsigned char *p, size_t n)
{
    http_add_header(r, "Cache-Control", "no-cache");
    http_add_header(r, "X-Content-Type-Options", "nosniff");
    return http_send(r, 200, type, p, n);
}

static int h_index(http_req *r, void *data)
{
    (void)data;
    http_add_header(r, "Content-Security-Policy",
                    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                    "img-src 'self' data:; connect-src 'self'");
    return x__asset(r, "text/html; charset=utf-8", console_index_html, console_index_html_len);
}

static int h_js(http_req *r, void *data)
{
    (void)data;
    return x__asset(r, "text/javascript; charset=utf-8", console_uplot_js, console_uplot_js_len);
}

static int h_css(http_req *r, void *data)
{
    (void)data;
    return x__asset(r, "text/css; charset=utf-8", console_uplot_css, console_uplot_css_len);
}

typedef struct {
    app_console *c;
    int64_t since;
} x__data_args;

static void x__data(bz_buf *b, const void *p)
{
    const x__data_args *x = p;
    app_console_data(x->c, x->since, b);
}

static int h_data(http_req *r, void *data)
{
    app_console *c = data;
    const char *s = http_query_get(r, "since");
    int64_t since = 0;
    if (s) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (*s == '\0' || *end || v < 0)
            return http_send_problem(r, 400, "invalid_argument", "since: want a point number >= 0");
        since = v;
    }
    http_add_header(r, "Cache-Control", "no-store");
    x__data_args x = {c, since};
    return rest_send_with(r, 200, "application/json; charset=utf-8", x__data, &x);
}

app_console *app_console_start(app *a, http_mux *mux)
{
    app_console *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->a = a;
    c->started_ns = bz_now_ns();
    c->probe_at = -PROBE_EVERY;
    pthread_mutex_init(&c->lk, NULL);
    rt_wg_init(&c->probes);
    rt_ctx_init(&c->stop, rt_shutdown_ctx());
    c->prev_cpu = x__cpu_seconds();
    static const app_route routes[] = {
        {"GET /{$}", h_index},
        {"GET /console/uPlot.js", h_js},
        {"GET /console/uPlot.css", h_css},
        {"GET /console/data", h_data},
    };
    app_routes_add(mux, routes, sizeof routes / sizeof routes[0], c);
    c->sampler = rt_spawn_joinable(rt_loop_at(0), x__sampler, c);
    return c;
}

void app_console_free(app_console *c)
{
    if (!c)
        return;
    rt_ctx_cancel(&c->stop);
    rt_join(c->sampler, NULL);
    rt_wg_wait(&c->probes, NULL);
    rt_wg_destroy(&c->probes);
    rt_ctx_release(&c->stop);
    for (int i = 0; i < c->ns; i++)
        free(c->s[i]);
    pthread_mutex_destroy(&c->lk);
    free(c);
}

/* Every statement of the service, named for the statistics and the
 * slow-query log (db/stats.h), and the log's threshold. */
void app_console_name_statements(const app_config *cfg)
{
    for (int i = 0; i < svc_sql_count; i++) {
        const svc_sql *q = svc_sql_all[i];
        db_stats_name(q->lite, q->name);
        if (q->pg)
            db_stats_name(q->pg, q->name);
    }
    db_stats_set_slow(cfg->slow_query_ns);
}

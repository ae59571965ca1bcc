/* app/rest/metrics.c — request metrics for /metrics (Prometheus text format).
 *
 * Each event-loop thread counts into its own shard (no locks, no shared
 * cache lines on the request path); a scrape sums the shards.  A shard's
 * slots are claimed only by its owner thread and published with a release
 * store, so a concurrent scrape sees either a whole slot or none. */
#include "app/rest/rest-private.h"

#include <bazaar/clock.h>
#include <bazaar/metrics.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NSLOTS 512
static const bz_hist_bounds bounds = {14, {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}};

typedef struct {
    _Atomic(const char *) route; /* NULL = free; the mux's pattern string (stable) */
    int method;
    int status;
    bz_hist h;
} slot;

typedef struct shard {
    struct shard *next;
    slot slots[NSLOTS];
} shard;

static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"};
static pthread_mutex_t shards_lk = PTHREAD_MUTEX_INITIALIZER;
static shard *shards;
static _Thread_local shard *mine;
static _Atomic int64_t in_flight;
static _Atomic int64_t rate_limited;
static const char unmatched[] = "(unmatched)";

void rest_metrics_count_rate_limited(void) { atomic_fetch_add_explicit(&rate_limited, 1, memory_order_relaxed); }

static int method_index(bz_str m)
{
    for (int i = 0; i < 7; i++)
        if (bz_str_eq_c(m, methods[i]))
            return i;
    return 7;
}

static void observe(const char *route, int method, int status, int64_t ns)
{
    if (!mine) {
        mine = calloc(1, sizeof *mine);
        if (!mine)
            abort();
        pthread_mutex_lock(&shards_lk);
        mine->next = shards;
        shards = mine;
        pthread_mutex_unlock(&shards_lk);
    }
    uint64_t h = (uint64_t)(uintptr_t)route * 31 + (uint64_t)method * 7 + (uint64_t)status;
    h ^= h >> 17;
    for (int i = 0; i < NSLOTS; i++) {
        slot *s = &mine->slots[(h + (uint64_t)i) % NSLOTS];
        const char *r = atomic_load_explicit(&s->route, memory_order_relaxed);
        if (!r) {
            s->method = method;
            s->status = status;
            atomic_store_explicit(&s->route, route, memory_order_release);
            r = route;
        }
        if (r == route && s->method == method && s->status == status) {
            bz_hist_observe(&s->h, &bounds, ns);
            return;
        }
    }
    /* table full: dropped (512 distinct route/method/status triples) */
}

static int metrics_mw(http_req *r, void *data)
{
    http_handler *next = data;
    int64_t t0 = bz_now_ns();
    atomic_fetch_add_explicit(&in_flight, 1, memory_order_relaxed);
    int rc = next->fn(r, next->data);
    atomic_fetch_sub_explicit(&in_flight, 1, memory_order_relaxed);
    int status = r->status ? r->status : (rc == -EMSGSIZE ? 413 : 500);
    observe(r->pattern ? r->pattern : unmatched, method_index(r->method), status, bz_now_ns() - t0);
    return rc;
}

http_handler rest_metrics_middleware(http_handler next, void *cfg)
{
    (void)cfg;
    http_handler *n = malloc(sizeof *n);
    if (!n)
        abort();
    *n = next;
    return (http_handler){metrics_mw, n};
}

void rest_metrics_middleware_free(http_handler h) { free(h.data); }

/* One aggregated series while rendering. */
typedef struct {
    const char *route;
    int method, status;
    bz_hist_snap h;
} agg;

static int agg_cmp(const void *x, const void *y)
{
    const agg *a = x, *b = y;
    int c = strcmp(a->route, b->route);
    if (c)
        return c;
    if (a->method != b->method)
        return a->method - b->method;
    return a->status - b->status;
}

static void labels(bz_buf *l, const char *route, int method)
{
    bz_buf_clear(l);
    bz_metric_label(l, "route", route);
    bz_metric_label(l, "method", methods[method]);
}

/* The database pool, the cache, the runtime, the listeners, the process
 * and the build: everything /metrics shows besides requests. */
static void render_db(bz_buf *o, db_stats d)
{
    bz_metric_gauge1(o, "bazaar_db_max_open_connections", "Cap on open database connections (--db-max-open).",
                     d.max_open);
    bz_metric_gauge1(o, "bazaar_db_open_connections", "Open database connections (in use + idle).", d.open);
    bz_metric_gauge1(o, "bazaar_db_in_use_connections", "Database connections in use.", d.in_use);
    bz_metric_gauge1(o, "bazaar_db_idle_connections", "Idle database connections.", d.idle);
    bz_metric_gauge1(o, "bazaar_db_waiting", "Callers waiting for a database connection now.", d.waiting);
    bz_metric_counter1(o, "bazaar_db_wait_count_total", "Callers that had to wait for a database connection.",
                       d.wait_count);
    bz_metric_family(o, "bazaar_db_wait_duration_seconds_total", "counter",
                     "Total time callers waited for a database connection.");
    bz_metric_double(o, "bazaar_db_wait_duration_seconds_total", NULL, (double)d.wait_ns / 1e9);
    bz_metric_counter1(o, "bazaar_db_max_idle_closed_total", "Connections closed because of --db-max-idle.",
                       d.max_idle_closed);
    bz_metric_counter1(o, "bazaar_db_max_idle_time_closed_total",
                       "Connections closed because of --db-conn-max-idle-time.", d.max_idle_time_closed);
    bz_metric_counter1(o, "bazaar_db_max_lifetime_closed_total",
                       "Connections closed because of --db-conn-max-lifetime.", d.max_lifetime_closed);
}

static void render_cache(bz_buf *o, cache *c)
{
    cache_stats st = cache_get_stats(c);
    bz_metric_counter1(o, "bazaar_cache_hits_total", "Cache lookups that found an entry.", st.hits);
    bz_metric_counter1(o, "bazaar_cache_misses_total", "Cache lookups that found nothing.", st.misses);
    bz_metric_counter1(o, "bazaar_cache_shared_loads_total",
                       "Misses that waited for another caller's load of the same key (single flight).",
                       st.shared_loads);
    bz_metric_counter1(o, "bazaar_cache_loads_total", "Loads run after a miss.", st.loads);
    bz_metric_counter1(o, "bazaar_cache_errors_total", "Cache backend errors.", st.errors);
    bz_metric_counter1(o, "bazaar_cache_evictions_total", "Entries evicted to stay under --cache-max-memory.",
                       st.evictions);
    if (st.bytes >= 0) { /* the in-process backend only: Redis keeps its own */
        bz_metric_gauge1(o, "bazaar_cache_entries", "Keys held by the in-process cache.", st.keys);
        bz_metric_gauge1(o, "bazaar_cache_bytes", "Bytes accounted to the in-process cache.", st.bytes);
        bz_metric_gauge1(o, "bazaar_cache_max_bytes", "The in-process cache's cap (--cache-max-memory).",
                         st.max_bytes);
    }
}

static void loop_label(bz_buf *l, int i)
{
    char idx[16];
    snprintf(idx, sizeof idx, "%d", i);
    bz_buf_clear(l);
    bz_metric_label(l, "loop", idx);
}

static void render_runtime(bz_buf *o)
{
    int n = rt_nloops();
    bz_buf l = BZ_BUF_INIT;
    static const struct {
        const char *name, *help;
    } g[] = {
        {"bazaar_runtime_coroutines", "Coroutines started and not finished, per event loop."},
        {"bazaar_runtime_coroutine_stacks_pooled", "Finished coroutine stacks kept for reuse, per event loop."},
        {"bazaar_runtime_timers", "Armed timers, per event loop."},
    };
    rt_loop_stats *st = calloc((size_t)(n > 0 ? n : 1), sizeof *st);
    if (!st)
        abort();
    for (int i = 0; i < n; i++)
        st[i] = rt_loop_stats_read(i);
    for (int k = 0; k < 3; k++) {
        bz_metric_family(o, g[k].name, "gauge", g[k].help);
        for (int i = 0; i < n; i++) {
            loop_label(&l, i);
            bz_metric_int(o, g[k].name, l.data, k == 0 ? st[i].coros_live : k == 1 ? st[i].coros_pooled : st[i].timers);
        }
    }
    bz_metric_family(o, "bazaar_runtime_loop_lag_seconds", "histogram",
                     "How late each event loop's 100 ms tick fired (how long ready work waited for a busy loop).");
    for (int i = 0; i < n; i++) {
        loop_label(&l, i);
        bz_metric_hist(o, "bazaar_runtime_loop_lag_seconds", l.data, &rt_lag_bounds, &st[i].lag);
    }
    free(st);
    rt_offload_stats of = rt_offload_stats_read();
    bz_metric_gauge1(o, "bazaar_runtime_offload_threads", "Threads of the blocking-call pool.", of.threads);
    bz_metric_gauge1(o, "bazaar_runtime_offload_busy", "Blocking-call pool threads running a job now.", of.busy);
    bz_metric_gauge1(o, "bazaar_runtime_offload_queued", "Blocking calls waiting for a pool thread.", of.queued);
    bz_metric_counter1(o, "bazaar_runtime_offload_jobs_total", "Blocking calls run by the pool.", of.done);

    http_server_stats hs[8];
    int ns = http_servers_stats(hs, 8);
    bz_metric_family(o, "bazaar_http_open_connections", "gauge",
                     "Open client connections by listener and protocol (http1 until a connection switches to h2).");
    for (int i = 0; i < ns; i++)
        for (int p = 0; p < 2; p++) {
            bz_buf_clear(&l);
            bz_metric_label(&l, "listener", hs[i].name);
            bz_metric_label(&l, "protocol", p ? "h2" : "http1");
            bz_metric_int(o, "bazaar_http_open_connections", l.data, p ? hs[i].open_http2 : hs[i].open_http1);
        }
    bz_buf_free(&l);
}

static void render_backends(svc *sv, bz_buf *o)
{
    render_db(o, db_get_stats(svc_db(sv)));
    render_cache(o, svc_cache(sv));
    const bz_breaker *bs[4];
    int nb = svc_breakers(sv, bs, 4);
    if (nb)
        bz_breaker_metrics(o, bs, nb);
    render_runtime(o);
    bz_metrics_process(o);
    bz_metrics_build(o);
}

/* Every slot in use, under the shards' lock: fn(slot, its route, arg). */
static void each_slot(void (*fn)(slot *sl, const char *route, void *arg), void *arg)
{
    pthread_mutex_lock(&shards_lk);
    for (shard *sh = shards; sh; sh = sh->next)
        for (int i = 0; i < NSLOTS; i++) {
            slot *sl = &sh->slots[i];
            const char *route = atomic_load_explicit(&sl->route, memory_order_acquire);
            if (route)
                fn(sl, route, arg);
        }
    pthread_mutex_unlock(&shards_lk);
}

typedef struct {
    agg *v;
    size_t n, cap;
} aggs;

/* Sums a slot into its (route, method, status) series. */
static void add_slot(slot *sl, const char *route, void *arg)
{
    aggs *a = arg;
    size_t k = 0;
    while (k < a->n &&
           !(a->v[k].route == route && a->v[k].method == sl->method && a->v[k].status == sl->status))
        k++;
    if (k == a->n) {
        if (a->n == a->cap) {
            a->cap = a->cap ? 2 * a->cap : 64;
            a->v = realloc(a->v, a->cap * sizeof *a->v);
            if (!a->v)
                abort();
        }
        memset(&a->v[a->n], 0, sizeof a->v[a->n]);
        a->v[a->n].route = route;
        a->v[a->n].method = sl->method;
        a->v[a->n].status = sl->status;
        a->n++;
    }
    bz_hist_read(&sl->h, &a->v[k].h);
}

void rest_metrics_render(svc *sv, bz_buf *o)
{
    aggs a = {NULL, 0, 0};
    each_slot(add_slot, &a);
    agg *v = a.v;
    size_t n = a.n;
    if (n)
        qsort(v, n, sizeof *v, agg_cmp);

    bz_buf l = BZ_BUF_INIT;
    bz_metric_family(o, "bazaar_http_requests_total", "counter", "HTTP requests by route pattern, method and status.");
    for (size_t i = 0; i < n; i++) {
        labels(&l, v[i].route, v[i].method);
        bz_buf_printf(&l, ",status=\"%d\"", v[i].status);
        bz_metric_int(o, "bazaar_http_requests_total", l.data, v[i].h.count);
    }
    bz_metric_family(o, "bazaar_http_request_duration_seconds", "histogram",
                     "Time from request head to handler return.");
    /* histograms are per route and method: sum the statuses */
    for (size_t i = 0; i < n;) {
        size_t j = i;
        bz_hist_snap sum = {0};
        while (j < n && v[j].route == v[i].route && v[j].method == v[i].method)
            bz_hist_snap_add(&sum, &v[j++].h);
        labels(&l, v[i].route, v[i].method);
        bz_metric_hist(o, "bazaar_http_request_duration_seconds", l.data, &bounds, &sum);
        i = j;
    }
    bz_buf_free(&l);
    free(v);
    bz_metric_gauge1(o, "bazaar_http_requests_in_flight", "Requests being handled now.", atomic_load(&in_flight));
    render_backends(sv, o);
    bz_metric_counter1(o, "bazaar_rate_limited_total", "Requests refused by --rate-limit.", atomic_load(&rate_limited));
}

/* For the admin console's sampler: every series summed per (route,
 * method, status) as the shards hold it (a series may come once per
 * shard), and the requests in flight now. */
typedef struct {
    void (*fn)(const char *route, const char *method, int status, const bz_hist_snap *h, void *arg);
    void *arg;
} each_args;

static void each_one(slot *sl, const char *route, void *arg)
{
    each_args *x = arg;
    bz_hist_snap h = {0};
    bz_hist_read(&sl->h, &h);
    x->fn(route, methods[sl->method], sl->status, &h, x->arg);
}

int64_t rest_metrics_each(void (*fn)(const char *route, const char *method, int status, const bz_hist_snap *h,
                                     void *arg),
                          void *arg)
{
    each_args x = {fn, arg};
    each_slot(each_one, &x);
    return atomic_load_explicit(&in_flight, memory_order_relaxed);
}

const bz_hist_bounds *rest_metrics_bounds(void) { return &bounds; }

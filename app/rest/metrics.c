/* app/rest/metrics.c — request metrics for /metrics (Prometheus text format).
 *
 * Each event-loop thread counts into its own shard (no locks, no shared
 * cache lines on the request path); a scrape sums the shards.  A shard's
 * slots are claimed only by its owner thread and published with a release
 * store, so a concurrent scrape sees either a whole slot or none. */
#include "app/rest/rest-private.h"

#include "base/clock.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define NSLOTS 512
#define NBUCKETS 14
static const double bucket_s[NBUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1,    0.25,  0.5,    1,     2.5,   5,     10};

typedef struct {
    _Atomic(const char *) route; /* NULL = free; the mux's pattern string (stable) */
    int method;
    int status;
    _Atomic int64_t count;
    _Atomic int64_t sum_ns;
    _Atomic int64_t buckets[NBUCKETS];
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
            atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&s->sum_ns, ns, memory_order_relaxed);
            double sec = (double)ns / 1e9;
            for (int b = 0; b < NBUCKETS; b++)
                if (sec <= bucket_s[b]) {
                    atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
                    break;
                }
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
    int64_t count, sum_ns, buckets[NBUCKETS];
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

static void label(bz_buf *o, const char *route, int method)
{
    bz_buf_append_c(o, "route=\"");
    for (const char *p = route; *p; p++) {
        if (*p == '"' || *p == '\\')
            bz_buf_putc(o, '\\');
        bz_buf_putc(o, *p);
    }
    bz_buf_printf(o, "\",method=\"%s\"", methods[method]);
}

void rest_metrics_render(svc *sv, bz_buf *o)
{
    agg *v = NULL;
    size_t n = 0, cap = 0;
    pthread_mutex_lock(&shards_lk);
    for (shard *s = shards; s; s = s->next)
        for (int i = 0; i < NSLOTS; i++) {
            slot *sl = &s->slots[i];
            const char *route = atomic_load_explicit(&sl->route, memory_order_acquire);
            if (!route)
                continue;
            size_t k = 0;
            while (k < n && !(v[k].route == route && v[k].method == sl->method && v[k].status == sl->status))
                k++;
            if (k == n) {
                if (n == cap) {
                    cap = cap ? 2 * cap : 64;
                    v = realloc(v, cap * sizeof *v);
                    if (!v)
                        abort();
                }
                memset(&v[n], 0, sizeof v[n]);
                v[n].route = route;
                v[n].method = sl->method;
                v[n].status = sl->status;
                n++;
            }
            v[k].count += atomic_load_explicit(&sl->count, memory_order_relaxed);
            v[k].sum_ns += atomic_load_explicit(&sl->sum_ns, memory_order_relaxed);
            for (int b = 0; b < NBUCKETS; b++)
                v[k].buckets[b] += atomic_load_explicit(&sl->buckets[b], memory_order_relaxed);
        }
    pthread_mutex_unlock(&shards_lk);
    if (n)
        qsort(v, n, sizeof *v, agg_cmp);

    bz_buf_append_c(o, "# HELP bazaar_http_requests_total HTTP requests by route pattern, method and status.\n"
                       "# TYPE bazaar_http_requests_total counter\n");
    for (size_t i = 0; i < n; i++) {
        bz_buf_append_c(o, "bazaar_http_requests_total{");
        label(o, v[i].route, v[i].method);
        bz_buf_printf(o, ",status=\"%d\"} %lld\n", v[i].status, (long long)v[i].count);
    }
    bz_buf_append_c(o, "# HELP bazaar_http_request_duration_seconds Time from request head to handler return.\n"
                       "# TYPE bazaar_http_request_duration_seconds histogram\n");
    /* histograms are per route and method: sum the statuses */
    for (size_t i = 0; i < n;) {
        size_t j = i;
        int64_t cnt = 0, sum = 0, b[NBUCKETS] = {0};
        while (j < n && v[j].route == v[i].route && v[j].method == v[i].method) {
            cnt += v[j].count;
            sum += v[j].sum_ns;
            for (int k = 0; k < NBUCKETS; k++)
                b[k] += v[j].buckets[k];
            j++;
        }
        int64_t cum = 0;
        for (int k = 0; k < NBUCKETS; k++) {
            cum += b[k];
            bz_buf_append_c(o, "bazaar_http_request_duration_seconds_bucket{");
            label(o, v[i].route, v[i].method);
            bz_buf_printf(o, ",le=\"%g\"} %lld\n", bucket_s[k], (long long)cum);
        }
        bz_buf_append_c(o, "bazaar_http_request_duration_seconds_bucket{");
        label(o, v[i].route, v[i].method);
        bz_buf_printf(o, ",le=\"+Inf\"} %lld\n", (long long)cnt);
        bz_buf_append_c(o, "bazaar_http_request_duration_seconds_sum{");
        label(o, v[i].route, v[i].method);
        bz_buf_printf(o, "} %.6f\n", (double)sum / 1e9);
        bz_buf_append_c(o, "bazaar_http_request_duration_seconds_count{");
        label(o, v[i].route, v[i].method);
        bz_buf_printf(o, "} %lld\n", (long long)cnt);
        i = j;
    }
    free(v);
    bz_buf_printf(o,
                  "# HELP bazaar_http_requests_in_flight Requests being handled now.\n"
                  "# TYPE bazaar_http_requests_in_flight gauge\n"
                  "bazaar_http_requests_in_flight %lld\n",
                  (long long)atomic_load(&in_flight));
    db_stats d = db_get_stats(svc_db(sv));
    bz_buf_printf(o,
                  "# TYPE bazaar_db_max_open_connections gauge\nbazaar_db_max_open_connections %d\n"
                  "# TYPE bazaar_db_open_connections gauge\nbazaar_db_open_connections %d\n"
                  "# TYPE bazaar_db_in_use_connections gauge\nbazaar_db_in_use_connections %d\n"
                  "# TYPE bazaar_db_idle_connections gauge\nbazaar_db_idle_connections %d\n"
                  "# TYPE bazaar_db_wait_count_total counter\nbazaar_db_wait_count_total %lld\n"
                  "# TYPE bazaar_db_wait_duration_seconds_total counter\nbazaar_db_wait_duration_seconds_total %.6f\n"
                  "# TYPE bazaar_db_max_idle_closed_total counter\nbazaar_db_max_idle_closed_total %lld\n"
                  "# TYPE bazaar_db_max_idle_time_closed_total counter\nbazaar_db_max_idle_time_closed_total %lld\n"
                  "# TYPE bazaar_db_max_lifetime_closed_total counter\nbazaar_db_max_lifetime_closed_total %lld\n",
                  d.max_open, d.open, d.in_use, d.idle, (long long)d.wait_count, (double)d.wait_ns / 1e9,
                  (long long)d.max_idle_closed, (long long)d.max_idle_time_closed, (long long)d.max_lifetime_closed);
    cache_stats c = cache_get_stats(svc_cache(sv));
    bz_buf_printf(o,
                  "# TYPE bazaar_cache_hits_total counter\nbazaar_cache_hits_total %lld\n"
                  "# TYPE bazaar_cache_misses_total counter\nbazaar_cache_misses_total %lld\n"
                  "# TYPE bazaar_cache_shared_loads_total counter\nbazaar_cache_shared_loads_total %lld\n"
                  "# TYPE bazaar_cache_loads_total counter\nbazaar_cache_loads_total %lld\n"
                  "# TYPE bazaar_cache_errors_total counter\nbazaar_cache_errors_total %lld\n"
                  "# TYPE bazaar_cache_evictions_total counter\nbazaar_cache_evictions_total %lld\n"
                  "# TYPE bazaar_rate_limited_total counter\nbazaar_rate_limited_total %lld\n",
                  (long long)c.hits, (long long)c.misses, (long long)c.shared_loads, (long long)c.loads,
                  (long long)c.errors, (long long)c.evictions, (long long)atomic_load(&rate_limited));
}

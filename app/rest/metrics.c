/* app/rest/metrics.c — /metrics (Prometheus text format): the REST
 * requests (http/observe.c's HTTP recorder, which the requests that reach
 * the routes are counted into), the database pool, the cache, the
 * runtime, the listeners, the process and the build. */
#include "app/rest/rest-private.h"

#include <bazaar/metrics.h>
#include <bazaar/observe.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Atomic int64_t rate_limited;

void rest_metrics_count_rate_limited(void) { atomic_fetch_add_explicit(&rate_limited, 1, memory_order_relaxed); }

/* The requests that reach the REST routes are counted into the HTTP
 * recorder (http_mw_metrics); the access log outside ends them. */
http_handler rest_metrics_middleware(http_handler next, void *cfg)
{
    (void)cfg;
    return http_mw_metrics(next, &http_obs_requests);
}

/* http_mw_metrics is this layer's middleware: http_chain_free frees it with
 * the chain it is the innermost handler of. */
void rest_metrics_middleware_free(http_handler h) { (void)h; }

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

void rest_metrics_render(svc *sv, bz_buf *o)
{
    http_obs_render(&http_obs_requests, o);
    bz_metric_gauge1(o, "bazaar_http_requests_in_flight", "Requests being handled now.",
                     http_obs_in_flight(&http_obs_requests));
    render_backends(sv, o);
    bz_metric_counter1(o, "bazaar_rate_limited_total", "Requests refused by --rate-limit.", atomic_load(&rate_limited));
}

/* For the admin console's sampler: every series per (route, method,
 * status) as the shards hold it (a series may come once per shard), and
 * the requests in flight now. */
typedef struct {
    void (*fn)(const char *route, const char *method, int status, const bz_hist_snap *h, void *arg);
    void *arg;
} each_args;

static void each_one(const char *route, int method, int status, const bz_hist_snap *h, void *arg)
{
    each_args *x = arg;
    x->fn(route ? route : http_obs_requests.spec->unknown, http_obs_requests.spec->variant_name(method), status, h,
          x->arg);
}

int64_t rest_metrics_each(void (*fn)(const char *route, const char *method, int status, const bz_hist_snap *h,
                                     void *arg),
                          void *arg)
{
    each_args x = {fn, arg};
    http_obs_each(&http_obs_requests, each_one, &x);
    return http_obs_in_flight(&http_obs_requests);
}

const bz_hist_bounds *rest_metrics_bounds(void) { return http_obs_requests.spec->bounds; }

/* app/admin.c — the marketplace's pages on the admin listener
 * (--admin-addr, which the lifecycle opens with /metrics, /readyz and
 * /healthz): /debug/runtime, the operator's console at / (app/console.c)
 * and Go's /debug/pprof (app/pprof.c). */
#include "app/admin.h"
#include "app/console.h"
#include "app/pprof.h"
#include "app/rest/json.h"

#include <bazaar/log.h>
#include <bazaar/metrics.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct app_admin {
    app *a;
    app_console *console;
    int64_t started_ns;
};

static void jw_double(bz_buf *b, const char *key, double v)
{
    jw_key(b, key);
    bz_buf_printf(b, "%.6f", v);
}

static void jw_bool(bz_buf *b, const char *key, bool v)
{
    jw_key(b, key);
    bz_buf_append_c(b, v ? "true" : "false");
}

/* Opens "key":{ or "key":[ (key NULL: an element of an array). */
static void jw_open(bz_buf *b, const char *key, char c)
{
    if (key)
        jw_key(b, key);
    else
        jw_sep(b);
    bz_buf_putc(b, c);
}

static void runtime_loops(bz_buf *b)
{
    int64_t live = 0, pooled = 0;
    jw_open(b, "loops", '[');
    for (int i = 0; i < rt_nloops(); i++) {
        rt_loop_stats s = rt_loop_stats_read(i);
        live += s.coros_live;
        pooled += s.coros_pooled;
        jw_open(b, NULL, '{');
        jw_i64(b, "index", i);
        jw_i64(b, "coroutines", s.coros_live);
        jw_i64(b, "connections", http_loop_conns(i));
        jw_i64(b, "pooled_stacks", s.coros_pooled);
        jw_i64(b, "timers", s.timers);
        jw_double(b, "lag_last_seconds", (double)s.lag_last_ns / 1e9);
        jw_i64(b, "lag_samples", s.lag.count);
        jw_double(b, "lag_mean_seconds", s.lag.count ? (double)s.lag.sum_ns / 1e9 / (double)s.lag.count : 0);
        bz_buf_putc(b, '}');
    }
    bz_buf_putc(b, ']');
    jw_str(b, "io_batch", rt_batch_name()); /* rt_set_batch: "io_uring" or "off" */
    jw_open(b, "coroutine_stacks", '{');
    jw_i64(b, "live", live);
    jw_i64(b, "pooled", pooled);
    bz_buf_putc(b, '}');
    rt_offload_stats of = rt_offload_stats_read();
    jw_open(b, "offload", '{');
    jw_i64(b, "threads", of.threads);
    jw_i64(b, "busy", of.busy);
    jw_i64(b, "queued", of.queued);
    jw_i64(b, "jobs", of.done);
    bz_buf_putc(b, '}');
    http_server_stats hs[8];
    int n = http_servers_stats(hs, 8);
    jw_open(b, "listeners", '[');
    for (int i = 0; i < n; i++) {
        jw_open(b, NULL, '{');
        jw_str(b, "name", hs[i].name);
        jw_i64(b, "port", hs[i].port);
        jw_i64(b, "open_http1", hs[i].open_http1);
        jw_i64(b, "open_http2", hs[i].open_http2);
        jw_bool(b, "draining", hs[i].draining);
        bz_buf_putc(b, '}');
    }
    bz_buf_putc(b, ']');
}

static void backends(bz_buf *b, app *a)
{
    db_stats d = db_get_stats(a->db);
    jw_open(b, "db", '{');
    jw_str(b, "dialect", a->dialect == DB_SQLITE ? "sqlite" : "postgres");
    jw_i64(b, "max_open", d.max_open);
    jw_i64(b, "open", d.open);
    jw_i64(b, "in_use", d.in_use);
    jw_i64(b, "idle", d.idle);
    jw_i64(b, "waiting", d.waiting);
    jw_i64(b, "wait_count", d.wait_count);
    jw_double(b, "wait_seconds", (double)d.wait_ns / 1e9);
    bz_buf_putc(b, '}');
    cache_stats c = cache_get_stats(a->cache);
    jw_open(b, "cache", '{');
    jw_str(b, "kind", cache_kind(a->cache));
    if (c.bytes >= 0) {
        jw_i64(b, "entries", c.keys);
        jw_i64(b, "bytes", c.bytes);
        jw_i64(b, "max_bytes", c.max_bytes);
    }
    jw_i64(b, "hits", c.hits);
    jw_i64(b, "misses", c.misses);
    jw_i64(b, "evictions", c.evictions);
    bz_buf_putc(b, '}');
}

/* The settings an operator asks about first.  URLs are redacted
 * (passwords become ***): this page is for people, not for secrets. */
static void config_summary(bz_buf *b, const app_config *cfg)
{
    char shown[1100];
    jw_open(b, "config", '{');
    jw_str(b, "http_addr", cfg->srv.http_addr);
    jw_str(b, "grpc_addr", cfg->srv.grpc_addr[0] ? cfg->srv.grpc_addr : "off");
    jw_str(b, "admin_addr", cfg->srv.admin_addr);
    bz_redact_url(cfg->db, shown, sizeof shown);
    jw_str(b, "db", shown);
    bz_redact_url(cfg->cache, shown, sizeof shown);
    jw_str(b, "cache", shown);
    jw_i64(b, "threads", cfg->srv.threads);
    jw_i64(b, "max_conns", cfg->srv.max_conns);
    jw_i64(b, "db_max_open", cfg->db_max_open);
    jw_i64(b, "db_max_idle", cfg->db_max_idle);
    jw_double(b, "request_timeout_seconds", (double)cfg->srv.request_timeout_ns / 1e9);
    jw_double(b, "shutdown_grace_seconds", (double)cfg->srv.shutdown_grace_ns / 1e9);
    jw_i64(b, "cache_max_memory", cfg->cache_max_memory);
    jw_i64(b, "rate_limit", cfg->rate_limit.count);
    static const char *levels[] = {"debug", "info", "warn", "error"};
    jw_str(b, "log_level", levels[cfg->srv.log_level & 3]);
    jw_str(b, "log_format", cfg->srv.log_format == BZ_LOG_JSON ? "json" : "text");
    bz_buf_putc(b, '}');
}

void app_admin_runtime_json(app *a, int64_t uptime_ns, bz_buf *b)
{
    const bz_build *bi = bz_build_info();
    bz_buf_putc(b, '{');
    jw_open(b, "build", '{');
    jw_str(b, "version", bi->version);
    jw_str(b, "commit", bi->commit);
    jw_str(b, "compiler", bi->compiler);
    bz_buf_putc(b, '}');
    jw_double(b, "uptime_seconds", (double)uptime_ns / 1e9);
    bz_proc_stats p = bz_proc_read();
    jw_open(b, "process", '{');
    jw_i64(b, "pid", getpid());
    jw_i64(b, "rss_bytes", p.rss_bytes);
    jw_i64(b, "open_fds", p.open_fds);
    jw_i64(b, "max_fds", p.max_fds);
    jw_double(b, "cpu_seconds", p.cpu_seconds);
    bz_buf_putc(b, '}');
    runtime_loops(b);
    backends(b, a);
    config_summary(b, a->cfg);
    bz_buf_append_c(b, "}\n");
}

static void runtime_body(bz_buf *b, const void *data)
{
    const app_admin *ad = data;
    app_admin_runtime_json(ad->a, bz_now_ns() - ad->started_ns, b);
}

static int h_runtime(http_req *r, void *data)
{
    return rest_send_with(r, 200, "application/json; charset=utf-8", runtime_body, data);
}

void app_routes_add(http_mux *mux, const app_route *routes, size_t n, void *data)
{
    char why[256];
    for (size_t i = 0; i < n; i++)
        if (http_mux_handle(mux, routes[i].pattern, (http_handler){routes[i].fn, data}, why, sizeof why) != 0)
            abort();
}

app_admin *app_admin_routes(http_mux *mux, app *a)
{
    app_admin *ad = calloc(1, sizeof *ad);
    if (!ad)
        abort();
    ad->a = a;
    ad->started_ns = bz_now_ns();
    static const app_route routes[] = {
        {"GET /debug/runtime", h_runtime},
    };
    app_routes_add(mux, routes, sizeof routes / sizeof routes[0], ad);
    ad->console = app_console_start(a, mux);
    app_pprof_routes(mux);
    return ad;
}

void app_admin_free(app_admin *ad)
{
    if (!ad)
        return;
    app_console_free(ad->console);
    free(ad);
}

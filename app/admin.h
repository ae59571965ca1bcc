/*
 * app/admin.h — the admin listener (--admin-addr, default off; opened by
 * the lifecycle, <bazaar/service.h>, the pages below the first three added
 * here).
 *
 *   GET /metrics         the Prometheus page (the public port's /metrics
 *                        answers 404 while this listener is on)
 *   GET /readyz          as the public /readyz (503 while draining)
 *   GET /healthz         200 "ok"
 *   GET /debug/runtime   JSON: build, uptime_seconds, process, loops[]
 *                        (coroutines, connections, pooled_stacks, timers, lag),
 *                        coroutine_stacks,
 *                        offload, listeners[] (open connections), db (open, idle,
 *                        in_use, waiting), cache (kind; entries, bytes for the
 *                        in-process backend; evictions), config (no secrets:
 *                        URLs are redacted)
 *   GET /                the console page (app/console.h), GET /console/data
 *   GET /debug/pprof/... CPU and heap profiles, the coroutine dump (app/pprof.h)
 *
 * Its own connection cap (64), not --max-conns: it answers while the
 * public port is saturated.
 */
#ifndef APP_ADMIN_H
#define APP_ADMIN_H

#include "app/app-private.h"
#include "app/rest/rest.h"
#include <bazaar/service.h>

typedef struct app_admin app_admin;

/* Adds the marketplace's pages to the lifecycle's admin router
 * (bazaar_admin_mux): /debug/runtime, the console, /debug/pprof. */
app_admin *app_admin_routes(http_mux *mux, app *a);
void app_admin_free(app_admin *ad);

/* A fixed route table of the admin listener (admin.c, console.c,
 * pprof.c), added to mux with data; a pattern the mux refuses is a bug in
 * the table, not input, so it aborts. */
typedef struct app_route {
    const char *pattern;
    int (*fn)(http_req *r, void *data);
} app_route;
void app_routes_add(http_mux *mux, const app_route *routes, size_t n, void *data);

/* The /debug/runtime document, appended to b. */
void app_admin_runtime_json(app *a, int64_t uptime_ns, bz_buf *b);

#endif

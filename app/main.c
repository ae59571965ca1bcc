/* app/main.c — subcommand dispatch, and serve on the lifecycle
 * (<bazaar/service.h>): the backends opened in its start hook, the REST
 * router and the gRPC server handed to it, the readiness it asks. */
#include "app/app.h"
#include "app/admin.h"
#include "app/app-private.h"
#include "app/console.h"
#include "app/grpc/rpc.h"
#include "app/rest/rest.h"

#include <bazaar/log.h>
#include <bazaar/service.h>

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const app_config *cfg;
    int status;
} run_state;

/* A backend that would not open: logged (key names its URL, shown without
 * its password), and what was opened closed again.  Returns -1. */
static int open_failed(app *a, const char *msg, const char *key, const char *url, const char *why)
{
    if (url) {
        char shown[1100];
        bz_redact_url(url, shown, sizeof shown);
        bz_log_err(msg, BZ_F_STR(key, shown), BZ_F_STR("error", why));
    } else {
        bz_log_err(msg, BZ_F_STR("error", why));
    }
    cache_close(a->cache);
    db_close(a->db);
    a->cache = NULL;
    a->db = NULL;
    return -1;
}

/* Opens the database (pinged) and the cache into a.  0 or -1 (logged). */
static int open_backends(app *a, const app_config *cfg, bool want_cache)
{
    bz_error e;
    /* BAZAAR_GROUP_COMMIT=off turns SQLite group commit off: a knob for
     * measuring what it buys, not a setting anyone should need. */
    const char *gc = getenv("BAZAAR_GROUP_COMMIT");
    db_opts dbo = {cfg->db_max_open, cfg->db_max_idle, cfg->db_conn_max_lifetime_ns, cfg->db_conn_max_idle_time_ns,
                   gc && !strcmp(gc, "off")};
    a->cfg = cfg;
    app_console_name_statements(cfg);
    a->db = db_open(cfg->db, &dbo, &e);
    if (a->db)
        db_set_breaker(a->db, "db", cfg->breaker_failures, cfg->breaker_probe_interval_ns);
    if (!a->db || db_ping(a->db, NULL, &e) != 0)
        return open_failed(a, "cannot open the database", "db", cfg->db, e.msg);
    a->dialect = db_get_dialect(a->db);
    if (want_cache) {
        cache_opts co = {.max_memory = cfg->cache_max_memory,
                         .eviction = cfg->cache_eviction,
                         .breaker_failures = cfg->breaker_failures,
                         .breaker_open_ns = cfg->breaker_probe_interval_ns};
        a->cache = cache_open(cfg->cache, &co, &e);
        if (!a->cache)
            return open_failed(a, "cannot open the cache", "cache", cfg->cache, e.msg);
    }
    a->svc = svc_open(cfg, a->db, a->cache, NULL, &e);
    if (!a->svc)
        return open_failed(a, "cannot migrate the database", NULL, NULL, e.msg);
    return 0;
}

static void close_backends(app *a)
{
    svc_close(a->svc);
    cache_close(a->cache);
    db_close(a->db);
    db_close(a->db_read);
}

/* --db-read-url: a pool on the replica, opened lazily (a replica that is
 * down at start only sends every read to the primary).  0 or -1 (logged). */
static int open_replica(app *a, const app_config *cfg)
{
    if (!cfg->db_read_url[0])
        return 0;
    bz_error e;
    db_opts dbo = {cfg->db_max_open, cfg->db_max_idle, cfg->db_conn_max_lifetime_ns, cfg->db_conn_max_idle_time_ns,
                   false};
    char shown[1100];
    bz_redact_url(cfg->db_read_url, shown, sizeof shown);
    a->db_read = db_open(cfg->db_read_url, &dbo, &e);
    if (!a->db_read) {
        bz_log_err("cannot open the read replica", BZ_F_STR("db_read", shown), BZ_F_STR("error", e.msg));
        return -1;
    }
    db_set_breaker(a->db_read, "db_read", cfg->breaker_failures, cfg->breaker_probe_interval_ns);
    svc_use_replica(a->svc, a->db_read, cfg->db_read_max_lag_ns);
    bz_log_info("stale-tolerant reads go to a replica", BZ_F_STR("db_read", shown));
    return 0;
}

/* What serve holds while it runs (the start hook opens, the stop hook
 * closes: every pointer may still be NULL there). */
typedef struct {
    const app_config *cfg;
    app a;
    rest *R;
    rpc *G;
    http_handler inner;
    app_admin *admin;
    int64_t request_timeout;
    bool worker;
} serving;

/* The database answers and neither its nor Redis's circuit breaker is
 * open (the replica's does not count: reads go to the primary meanwhile).
 * gRPC health asks it (through bazaar_ready, with the drain). */
static bool db_ready(void *arg, rt_ctx *ctx)
{
    app *a = arg;
    bool db_ok, cache_ok;
    svc_ready(a->svc, ctx, &db_ok, &cache_ok);
    const bz_breaker *bs[4];
    int nb = svc_breakers(a->svc, bs, 4);
    for (int i = 0; i < nb; i++)
        if (strcmp(bs[i]->name, "db_read") && bz_breaker_get_state(bs[i]) != BZ_BREAKER_CLOSED)
            return false;
    return db_ok;
}

/* The marketplace's /readyz ({"db":..,"cache":..}) and /metrics (its
 * request, pool and cache series), on both ports. */
static int h_readyz(http_req *r, void *data) { return rest_ops_readyz(data, r); }
static int h_metrics(http_req *r, void *data) { return rest_ops_metrics(data, r); }

static int serve_start(bazaar_service *s, void *arg)
{
    serving *x = arg;
    const app_config *cfg = x->cfg;
    if (open_backends(&x->a, cfg, true) != 0 || open_replica(&x->a, cfg) != 0)
        return -1;
    x->request_timeout = cfg->srv.request_timeout_ns;
    char err[256];
    x->R = rest_new(x->a.svc, cfg, &x->request_timeout, err, sizeof err);
    if (!x->R) {
        bz_log_err("bad route table", BZ_F_STR("error", err));
        return -1;
    }
    rest_set_service(x->R, s);
    x->inner = rest_metrics_middleware(http_mux_handler(rest_mux(x->R)), NULL);
    bazaar_handle(s, x->inner);
    x->G = rpc_new(x->a.svc, cfg, bazaar_ready, s);
    bazaar_set_grpc(s, rpc_server(x->G));
    bazaar_ready_check(s, "db", db_ready, &x->a);
    bazaar_handle_readyz(s, (http_handler){h_readyz, x->R});
    bazaar_handle_metrics(s, (http_handler){h_metrics, x->R});
    x->admin = app_admin_routes(bazaar_admin_mux(s), &x->a);
    bazaar_log_field(s, "db", x->a.dialect == DB_SQLITE ? "sqlite" : "postgres");
    bazaar_log_field(s, "cache", cache_kind(x->a.cache));
    svc_start_worker(x->a.svc);
    x->worker = true;
    return 0;
}

static void serve_stop(bazaar_service *s, void *arg)
{
    (void)s;
    serving *x = arg;
    if (x->worker)
        svc_stop_worker(x->a.svc);
    app_admin_free(x->admin);
    rpc_free(x->G);
    if (x->inner.fn)
        rest_metrics_middleware_free(x->inner);
    rest_free(x->R);
    close_backends(&x->a);
}

/* migrate, seed and explain: the backends opened (which migrates), the
 * command's one job, the backends closed. */
static void tool_main(void *p)
{
    run_state *s = p;
    app a = {0};
    if (open_backends(&a, s->cfg, false) != 0)
        return;
    switch (s->cfg->command) {
    case APP_CMD_SEED: s->status = app_seed(&a, NULL) == 0 ? 0 : 1; break;
    case APP_CMD_EXPLAIN: s->status = app_explain(&a, NULL, stdout); break;
    default: /* migrate: opening did it */
        printf("database is at schema version %d\n", svc_schema_version());
        s->status = 0;
        break;
    }
    close_backends(&a);
}

int app_main(const app_config *cfg)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "bazaar: libsodium failed to initialise\n");
        return 1;
    }
    /* No password of the database or cache URL reaches the log, whoever
     * quotes it (our lines, libpq's or Redis's messages). */
    bz_log_url_secrets(cfg->db);
    bz_log_url_secrets(cfg->cache);
    bz_log_url_secrets(cfg->db_read_url);
    if (cfg->command == APP_CMD_SERVE) {
        static serving x;
        x = (serving){.cfg = cfg};
        bazaar_service *s = bazaar_new_with("bazaar", &cfg->srv);
        bazaar_on_start(s, serve_start, &x);
        bazaar_on_stop(s, serve_stop, &x);
        return bazaar_run(s);
    }
    run_state s = {cfg, 1};
    rt_fn fn;
    switch (cfg->command) {
    case APP_CMD_MIGRATE:
    case APP_CMD_SEED:
    case APP_CMD_EXPLAIN: fn = tool_main; break;
    default: fprintf(stderr, "bazaar: unknown command\n"); return 2;
    }
    rt_options o = {.threads = 1};
    int r = rt_run(&o, fn, &s);
    if (r) {
        fprintf(stderr, "bazaar: cannot start the runtime (error %d)\n", -r);
        return 1;
    }
    return s.status;
}

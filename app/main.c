/* app/main.c — subcommand dispatch and the serve lifecycle. */
#include "app/app.h"
#include "app/admin.h"
#include "app/console.h"
#include "app/app-private.h"
#include "app/grpc/rpc.h"
#include "app/rest/rest.h"
#include "app/tls.h"

#include <bazaar/log.h>
#include "base/notify.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The HTTP settings of the command line (admin.c and the serve lifecycle). */
http_server_opts app_http_opts(const bz_config *cfg)
{
    return (http_server_opts){
        .addr = cfg->http_addr,
        .read_header_timeout_ns = cfg->read_header_timeout_ns,
        .read_timeout_ns = cfg->read_timeout_ns,
        .write_timeout_ns = cfg->write_timeout_ns,
        .idle_timeout_ns = cfg->idle_timeout_ns,
        .shutdown_grace_ns = cfg->shutdown_grace_ns,
        .max_header_bytes = cfg->max_header_bytes,
        .max_body_bytes = cfg->max_body_bytes,
        .h2_max_concurrent_streams = cfg->h2_max_concurrent_streams,
        .max_streams = cfg->max_streams,
        .conn_buffer_bytes = cfg->conn_buffer_bytes,
        .buffer_bytes = cfg->buffer_bytes,
        .reuse_port = cfg->reuse_port,
        .tls_handshake_timeout_ns = cfg->tls_handshake_timeout_ns,
        .tls_max_handshakes = cfg->tls_max_handshakes,
        .max_conns = cfg->max_conns,
    };
}

typedef struct {
    const bz_config *cfg;
    int status;
    rt_tls_server *tls; /* --tls-cert/--tls-key, or NULL */
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
static int open_backends(app *a, const bz_config *cfg, bool want_cache)
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
static int open_replica(app *a, const bz_config *cfg)
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

/* One address serves REST and gRPC: gRPC (and gRPC-Web, and its CORS
 * preflight) goes to the gRPC server with its own interceptors, the rest
 * through the REST middleware chain. */
typedef struct {
    http_handler grpc, rest;
} protocols;

static int by_protocol(http_req *r, void *data)
{
    protocols *p = data;
    http_handler h = grpc_serves(p->grpc.data, r) ? p->grpc : p->rest;
    return h.fn(r, h.data);
}

typedef struct {
    app *a;
    http_server *http; /* for draining */
} readiness;

/* grpc.health.v1: serving while not draining, the database answers and
 * neither the database's nor Redis's circuit breaker is open (the
 * replica's does not count: reads go to the primary meanwhile). */
static bool ready(void *arg, rt_ctx *ctx)
{
    readiness *rd = arg;
    if (rd->http && http_server_draining(rd->http))
        return false;
    if (rt_ctx_err(rt_shutdown_ctx()))
        return false;
    bool db_ok, cache_ok;
    svc_ready(rd->a->svc, ctx, &db_ok, &cache_ok);
    const bz_breaker *bs[4];
    int nb = svc_breakers(rd->a->svc, bs, 4);
    for (int i = 0; i < nb; i++)
        if (strcmp(bs[i]->name, "db_read") && bz_breaker_get_state(bs[i]) != BZ_BREAKER_CLOSED)
            return false;
    return db_ok;
}

typedef struct {
    http_server *srv;
    rt_wg *wg;
} serve_arg;

static void serve_other(void *p)
{
    serve_arg *x = p;
    http_server_serve(x->srv);
    rt_wg_done(x->wg);
}

/* systemd: WATCHDOG=1 at half WATCHDOG_USEC while every event loop still
 * ticks (sent from loop 0's coroutine, and only when all loops ticked
 * recently: a stuck loop stops the pings and systemd restarts us), then
 * STOPPING=1 as soon as shutdown begins. */
static void notify_watch(void *unused)
{
    (void)unused;
    int64_t period = bz_notify_watchdog_ns() / 2;
    int64_t stale = period > BZ_NS_PER_S ? period : BZ_NS_PER_S;
    rt_ctx *stop = rt_shutdown_ctx();
    if (period > 0) {
        while (rt_sleep(stop, period) == 0)
            if (rt_loops_alive(stale))
                bz_notify("WATCHDOG=1");
    } else {
        rt_park(stop, BZ_NO_DEADLINE, NULL);
    }
    bz_notify("STOPPING=1");
}

static void serve_main(void *p)
{
    run_state *s = p;
    const bz_config *cfg = s->cfg;
    app a = {0};
    if (open_backends(&a, cfg, true) != 0)
        return;
    if (open_replica(&a, cfg) != 0) {
        close_backends(&a);
        return;
    }
    static int64_t request_timeout;
    request_timeout = cfg->request_timeout_ns;
    char err[256];
    rest *R = rest_new(a.svc, cfg, &request_timeout, err, sizeof err);
    if (!R) {
        bz_log_err("bad route table", BZ_F_STR("error", err));
        close_backends(&a);
        return;
    }
    const http_mw mws[] = {
        {http_mw_request_id, NULL},
        {http_mw_access_log, NULL},
        {http_mw_recover, NULL},
        {http_mw_gzip, NULL},
    };
    http_handler inner = rest_metrics_middleware(http_mux_handler(rest_mux(R)), NULL);
    http_handler chain = http_chain(inner, mws, 4);
    static readiness rd;
    rd = (readiness){&a, NULL};
    rpc *G = rpc_new(a.svc, cfg, ready, &rd);
    protocols both = {grpc_http_handler(rpc_server(G)), chain};
    http_server_opts o = app_http_opts(cfg);
    /* --max-conns is per process: both addresses share one gate. */
    rt_gate *gate = rt_gate_new(cfg->max_conns);
    o.conn_gate = gate;
    o.name = "public";
    o.tls = s->tls;
    if (s->tls)
        app_tls_reload_on_sighup(s->tls, cfg);
    int e = 0;
    http_server *srv = http_server_new(&o, (http_handler){by_protocol, &both}, &e);
    http_server *gsrv = NULL;
    if (srv && cfg->grpc_addr[0]) {
        http_server_opts go = o;
        go.addr = cfg->grpc_addr;
        go.name = "grpc";
        gsrv = http_server_new(&go, grpc_http_handler(rpc_server(G)), &e);
        if (!gsrv) {
            bz_log_err("cannot listen", BZ_F_STR("addr", cfg->grpc_addr), BZ_F_STR("error", strerror(-e)));
            http_server_free(srv);
            srv = NULL;
            e = 0;
        }
    }
    rt_gate_unref(gate); /* the servers hold their own references */
    app_admin *admin = NULL;
    if (!srv) {
        if (e)
            bz_log_err("cannot listen", BZ_F_STR("addr", cfg->http_addr), BZ_F_STR("error", strerror(-e)));
    } else {
        rest_set_server(R, srv);
        rd.http = srv;
        if (cfg->admin_addr[0]) {
            admin = app_admin_start(&a, R, &e);
            if (!admin) {
                bz_log_err("cannot listen", BZ_F_STR("admin_addr", cfg->admin_addr), BZ_F_STR("error", strerror(-e)));
                goto out;
            }
        }
        svc_start_worker(a.svc);
        bz_log_info("listening", BZ_F_STR("http_addr", cfg->http_addr), BZ_F_INT("port", http_server_port(srv)),
                    BZ_F_INT("grpc_port", gsrv ? http_server_port(gsrv) : 0), BZ_F_INT("threads", cfg->threads),
                    BZ_F_STR("db", a.dialect == DB_SQLITE ? "sqlite" : "postgres"), BZ_F_STR("cache", cache_kind(a.cache)),
                    BZ_F_INT("admin_port", admin ? app_admin_port(admin) : 0), BZ_F_STR("version", BAZAAR_VERSION));
        rt_wg wg;
        rt_wg_init(&wg);
        serve_arg ga = {gsrv, &wg};
        if (gsrv) {
            rt_wg_add(&wg, 1);
            rt_go(serve_other, &ga);
        }
        serve_arg aa = {admin ? app_admin_server(admin) : NULL, &wg};
        if (admin) {
            rt_wg_add(&wg, 1);
            rt_go(serve_other, &aa);
        }
        if (bz_notify_enabled()) {
            char st[600];
            snprintf(st, sizeof st, "READY=1\nSTATUS=serving: http port %d, grpc port %d, admin port %d",
                     http_server_port(srv), gsrv ? http_server_port(gsrv) : 0, admin ? app_admin_port(admin) : 0);
            bz_notify(st);
            rt_go(notify_watch, NULL);
        }
        int r = http_server_serve(srv);
        rt_wg_wait(&wg, NULL);
        rt_wg_destroy(&wg);
        bz_log_info("stopped", BZ_F_STR("drain", r == 0 ? "complete" : "grace period ran out"));
        svc_stop_worker(a.svc);
        s->status = 0;
    }
out:
    app_admin_free(admin);
    http_server_free(gsrv);
    http_server_free(srv);
    rpc_free(G);
    http_chain_free(chain);
    rest_metrics_middleware_free(inner);
    rest_free(R);
    close_backends(&a);
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
    case BZ_CMD_SEED: s->status = app_seed(&a, NULL) == 0 ? 0 : 1; break;
    case BZ_CMD_EXPLAIN: s->status = app_explain(&a, NULL, stdout); break;
    default: /* migrate: opening did it */
        printf("database is at schema version %d\n", svc_schema_version());
        s->status = 0;
        break;
    }
    close_backends(&a);
}

int app_main(const bz_config *cfg)
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
    run_state s = {cfg, 1, NULL};
    if (cfg->command == BZ_CMD_SERVE && cfg->tls_cert[0]) {
        char err[512];
        if (!(s.tls = app_tls_open(cfg, err, sizeof err))) {
            fprintf(stderr, "bazaar: %s\n", err);
            return 2;
        }
    }
    rt_fn fn;
    switch (cfg->command) {
    case BZ_CMD_SERVE: fn = serve_main; break;
    case BZ_CMD_MIGRATE:
    case BZ_CMD_SEED:
    case BZ_CMD_EXPLAIN: fn = tool_main; break;
    default: fprintf(stderr, "bazaar: unknown command\n"); return 2;
    }
    rt_options o = {.threads = cfg->command == BZ_CMD_SERVE ? cfg->threads : 1,
                    .handle_signals = cfg->command == BZ_CMD_SERVE};
    int r = rt_run(&o, fn, &s);
    rt_tls_server_unref(s.tls);
    if (r) {
        fprintf(stderr, "bazaar: cannot start the runtime (error %d)\n", -r);
        return 1;
    }
    return s.status;
}

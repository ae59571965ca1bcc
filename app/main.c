/* app/main.c — subcommand dispatch and the serve lifecycle. */
#include "app/app.h"
#include "app/app-private.h"
#include "app/rest/rest.h"

#include "base/log.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const bz_config *cfg;
    int status;
} run_state;

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
    a->db = db_open(cfg->db, &dbo, &e);
    if (!a->db || db_ping(a->db, NULL, &e) != 0) {
        bz_log_err("cannot open the database", BZ_F_STR("db", cfg->db), BZ_F_STR("error", e.msg));
        db_close(a->db);
        a->db = NULL;
        return -1;
    }
    a->dialect = db_get_dialect(a->db);
    if (want_cache) {
        cache_opts co = {.max_memory = cfg->cache_max_memory, .eviction = cfg->cache_eviction};
        a->cache = cache_open(cfg->cache, &co, &e);
        if (!a->cache) {
            bz_log_err("cannot open the cache", BZ_F_STR("cache", cfg->cache), BZ_F_STR("error", e.msg));
            db_close(a->db);
            a->db = NULL;
            return -1;
        }
    }
    a->svc = svc_open(cfg, a->db, a->cache, NULL, &e);
    if (!a->svc) {
        bz_log_err("cannot migrate the database", BZ_F_STR("error", e.msg));
        cache_close(a->cache);
        db_close(a->db);
        a->db = NULL;
        a->cache = NULL;
        return -1;
    }
    return 0;
}

static void close_backends(app *a)
{
    svc_close(a->svc);
    cache_close(a->cache);
    db_close(a->db);
}

static void serve_main(void *p)
{
    run_state *s = p;
    const bz_config *cfg = s->cfg;
    app a = {0};
    if (open_backends(&a, cfg, true) != 0)
        return;
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
    http_server_opts o = http_opts_from_config(cfg);
    int e = 0;
    http_server *srv = http_server_new(&o, chain, &e);
    if (!srv) {
        bz_log_err("cannot listen", BZ_F_STR("addr", cfg->http_addr), BZ_F_STR("error", strerror(-e)));
    } else {
        rest_set_server(R, srv);
        svc_start_worker(a.svc);
        bz_log_info("listening", BZ_F_STR("http_addr", cfg->http_addr), BZ_F_INT("port", http_server_port(srv)),
                    BZ_F_INT("threads", cfg->threads),
                    BZ_F_STR("db", a.dialect == DB_SQLITE ? "sqlite" : "postgres"), BZ_F_STR("cache", cache_kind(a.cache)),
                    BZ_F_STR("version", BAZAAR_VERSION));
        int r = http_server_serve(srv);
        bz_log_info("stopped", BZ_F_STR("drain", r == 0 ? "complete" : "grace period ran out"));
        svc_stop_worker(a.svc);
        http_server_free(srv);
        s->status = 0;
    }
    http_chain_free(chain);
    rest_metrics_middleware_free(inner);
    rest_free(R);
    close_backends(&a);
}

static void migrate_main(void *p)
{
    run_state *s = p;
    app a = {0};
    if (open_backends(&a, s->cfg, false) != 0)
        return;
    printf("database is at schema version %d\n", svc_schema_version());
    close_backends(&a);
    s->status = 0;
}

static void seed_main(void *p)
{
    run_state *s = p;
    app a = {0};
    if (open_backends(&a, s->cfg, false) != 0)
        return;
    s->status = app_seed(&a, NULL) == 0 ? 0 : 1;
    close_backends(&a);
}

static void explain_main(void *p)
{
    run_state *s = p;
    app a = {0};
    if (open_backends(&a, s->cfg, false) != 0)
        return;
    s->status = app_explain(&a, NULL, stdout);
    close_backends(&a);
}

int app_main(const bz_config *cfg)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "bazaar: libsodium failed to initialise\n");
        return 1;
    }
    run_state s = {cfg, 1};
    rt_fn fn;
    switch (cfg->command) {
    case BZ_CMD_SERVE: fn = serve_main; break;
    case BZ_CMD_MIGRATE: fn = migrate_main; break;
    case BZ_CMD_SEED: fn = seed_main; break;
    case BZ_CMD_EXPLAIN: fn = explain_main; break;
    default: fprintf(stderr, "bazaar: unknown command\n"); return 2;
    }
    rt_options o = {.threads = cfg->command == BZ_CMD_SERVE ? cfg->threads : 1,
                    .handle_signals = cfg->command == BZ_CMD_SERVE};
    int r = rt_run(&o, fn, &s);
    if (r) {
        fprintf(stderr, "bazaar: cannot start the runtime (error %d)\n", -r);
        return 1;
    }
    return s.status;
}

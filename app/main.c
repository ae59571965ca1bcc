/* app/main.c — subcommand dispatch and the serve lifecycle. */
#include "app/app.h"

#include "base/log.h"
#include "cache/cache.h"
#include "db/db.h"
#include "http/http.h"
#include "rt/rt.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const bz_config *cfg;
    int status;
    http_server *srv;
    db *db;
    cache *cache;
} serve_state;

static int healthz(http_req *r, void *data)
{
    (void)data;
    return http_send(r, 200, "text/plain; charset=utf-8", "ok", 2);
}

/* 200 {"db":"ok","cache":"ok"} while both answer; 503 naming the failing
 * part, and 503 once shutdown began. */
static int readyz(http_req *r, void *data)
{
    serve_state *s = data;
    if (http_server_draining(s->srv)) {
        http_add_header(r, "Retry-After", "1");
        return http_send(r, 503, "application/json", "{\"status\":\"shutting down\"}", 26);
    }
    rt_ctx ctx;
    rt_ctx_init_timeout(&ctx, r->ctx, 2 * BZ_NS_PER_S);
    bz_error e;
    bool db_ok = db_ping(s->db, &ctx, &e) == 0;
    bool cache_ok = cache_ping(s->cache, &ctx, &e) == 0;
    rt_ctx_release(&ctx);
    char body[64];
    int n = snprintf(body, sizeof body, "{\"db\":\"%s\",\"cache\":\"%s\"}", db_ok ? "ok" : "unavailable",
                     cache_ok ? "ok" : "unavailable");
    return http_send(r, db_ok && cache_ok ? 200 : 503, "application/json", body, (size_t)n);
}

/* Builds the route table.  Returns NULL with a message on a bad pattern. */
static http_mux *routes(serve_state *s, char *err, size_t errlen)
{
    http_mux *m = http_mux_new();
    struct {
        const char *pattern;
        http_handler h;
    } table[] = {
        {"GET /healthz", {healthz, s}},
        {"GET /readyz", {readyz, s}},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (http_mux_handle(m, table[i].pattern, table[i].h, err, errlen) != 0) {
            http_mux_free(m);
            return NULL;
        }
    return m;
}

static void serve_main(void *p)
{
    serve_state *s = p;
    const bz_config *cfg = s->cfg;
    char err[256];
    http_mux *mux = routes(s, err, sizeof err);
    if (!mux) {
        bz_log_err("bad route table", BZ_F_STR("error", err));
        return;
    }
    static int64_t request_timeout;
    request_timeout = cfg->request_timeout_ns;
    const http_mw mws[] = {
        {http_mw_request_id, NULL},
        {http_mw_access_log, NULL},
        {http_mw_recover, NULL},
        {http_mw_timeout, &request_timeout},
        {http_mw_gzip, NULL},
    };
    http_server_opts o = http_opts_from_config(cfg);
    bz_error err2;
    db_opts dbo = {cfg->db_max_open, cfg->db_max_idle, cfg->db_conn_max_lifetime_ns, cfg->db_conn_max_idle_time_ns};
    s->db = db_open(cfg->db, &dbo, &err2);
    if (!s->db || db_ping(s->db, NULL, &err2) != 0) {
        bz_log_err("cannot open the database", BZ_F_STR("db", cfg->db), BZ_F_STR("error", err2.msg));
        db_close(s->db);
        http_mux_free(mux);
        return;
    }
    cache_opts co = {.max_memory = cfg->cache_max_memory, .eviction = cfg->cache_eviction};
    s->cache = cache_open(cfg->cache, &co, &err2);
    if (!s->cache) {
        bz_log_err("cannot open the cache", BZ_F_STR("cache", cfg->cache), BZ_F_STR("error", err2.msg));
        db_close(s->db);
        http_mux_free(mux);
        return;
    }
    int e = 0;
    http_handler chain = http_chain(http_mux_handler(mux), mws, 5);
    s->srv = http_server_new(&o, chain, &e);
    if (!s->srv) {
        http_chain_free(chain);
        cache_close(s->cache);
        db_close(s->db);
        bz_log_err("cannot listen", BZ_F_STR("addr", cfg->http_addr), BZ_F_STR("error", strerror(-e)));
        http_mux_free(mux);
        return;
    }
    bz_log_info("listening", BZ_F_STR("http_addr", cfg->http_addr), BZ_F_INT("port", http_server_port(s->srv)),
                BZ_F_INT("threads", cfg->threads), BZ_F_STR("db", db_get_dialect(s->db) == DB_SQLITE ? "sqlite" : "postgres"),
                BZ_F_STR("cache", cache_kind(s->cache)), BZ_F_STR("version", BAZAAR_VERSION));
    int r = http_server_serve(s->srv);
    bz_log_info("stopped", BZ_F_STR("drain", r == 0 ? "complete" : "grace period ran out"));
    http_server_free(s->srv);
    http_chain_free(chain);
    http_mux_free(mux);
    cache_close(s->cache);
    db_close(s->db);
    s->status = 0;
}

int app_main(const bz_config *cfg)
{
    switch (cfg->command) {
    case BZ_CMD_SERVE: {
        serve_state s = {cfg, 1, NULL, NULL, NULL};
        rt_options o = {.threads = cfg->threads, .handle_signals = true};
        int r = rt_run(&o, serve_main, &s);
        if (r) {
            fprintf(stderr, "bazaar: cannot start the runtime (error %d)\n", -r);
            return 1;
        }
        return s.status;
    }
    default:
        fprintf(stderr, "bazaar: this command is not available yet in this build\n");
        return 1;
    }
}

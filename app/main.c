/* app/main.c — subcommand dispatch and the serve lifecycle. */
#include "app/app.h"

#include "base/log.h"
#include "http/http.h"
#include "rt/rt.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const bz_config *cfg;
    int status;
    http_server *srv;
} serve_state;

static int healthz(http_req *r, void *data)
{
    (void)data;
    return http_send(r, 200, "text/plain; charset=utf-8", "ok", 2);
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
    int e = 0;
    http_handler chain = http_chain(http_mux_handler(mux), mws, 5);
    s->srv = http_server_new(&o, chain, &e);
    if (!s->srv) {
        http_chain_free(chain);
        bz_log_err("cannot listen", BZ_F_STR("addr", cfg->http_addr), BZ_F_STR("error", strerror(-e)));
        http_mux_free(mux);
        return;
    }
    bz_log_info("listening", BZ_F_STR("http_addr", cfg->http_addr), BZ_F_INT("port", http_server_port(s->srv)),
                BZ_F_INT("threads", cfg->threads), BZ_F_STR("version", BAZAAR_VERSION));
    int r = http_server_serve(s->srv);
    bz_log_info("stopped", BZ_F_STR("drain", r == 0 ? "complete" : "grace period ran out"));
    http_server_free(s->srv);
    http_chain_free(chain);
    http_mux_free(mux);
    s->status = 0;
}

int app_main(const bz_config *cfg)
{
    switch (cfg->command) {
    case BZ_CMD_SERVE: {
        serve_state s = {cfg, 1, NULL};
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

/* service/run.c — bazaar_run: the runtime, the start hooks, the listeners,
 * serving until shutdown, the drain, the stop hooks. */
#include "service/service-private.h"

#include <bazaar/clock.h>
#include <bazaar/observe.h>
#include <bazaar/version.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The admin port has its own connection cap, not --max-conns: it answers
 * while the public port is saturated, and a flood of it cannot take the
 * public port's slots. */
#define ADMIN_MAX_CONNS 64

/* One address serves REST and gRPC: gRPC (and gRPC-Web, and its CORS
 * preflight) goes to the gRPC server with its own interceptors, the rest
 * through the REST middleware chain. */
typedef struct {
    grpc_server *g;
    http_handler grpc, rest;
} protocols;

static int by_protocol(http_req *r, void *data)
{
    protocols *p = data;
    http_handler h = p->g && grpc_serves(p->g, r) ? p->grpc : p->rest;
    return h.fn(r, h.data);
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

static void cannot_listen(const char *key, const char *addr, int e)
{
    bz_log_err("cannot listen", BZ_F_STR(key, addr), BZ_F_STR("error", strerror(-e)));
}

static void serve(bazaar_service *s)
{
    const bazaar_options *o = &s->o;
    /* The access log counts every request into the standard request
     * families (http_obs_requests) unless the service brings its own
     * handler, which records its own (the marketplace's route metrics). */
    http_mw chain_mws[5 + BAZAAR_MAX_MWS] = {
        {http_mw_request_id, NULL},
        {http_mw_access_log, s->has_handler ? NULL : &http_obs_requests},
        {http_mw_recover, NULL},
        {http_mw_gzip, NULL},
    };
    int nmws = 4;
    /* The mux's handlers get --request-timeout as their context's deadline
     * (503 "timeout" when they fail with it before answering).  A service
     * that brings its own handler (bazaar_handle) sets deadlines itself:
     * the marketplace's streams must outlive it. */
    if (!s->has_handler && o->request_timeout_ns > 0)
        chain_mws[nmws++] = (http_mw){http_mw_timeout, (void *)&o->request_timeout_ns};
    for (int i = 0; i < s->nmws; i++)
        chain_mws[nmws++] = s->mws[i];
    http_handler inner = s->has_handler ? s->handler : http_mux_handler(s->mux);
    http_handler chain = http_chain(inner, chain_mws, nmws);
    const http_mw admin_mws[] = {
        {http_mw_request_id, NULL},
        {http_mw_access_log, NULL},
        {http_mw_recover, NULL},
    };
    http_handler admin_chain = http_chain(http_mux_handler(s->admin_mux), admin_mws, 3);
    if (s->grpc && s->own_grpc) {
        /* NULL: health reports every service registered on the server. */
        grpc_health_register(s->grpc, NULL, bazaar_ready, s);
        grpc_reflection_register(s->grpc);
    }
    protocols both = {s->grpc, s->grpc ? grpc_http_handler(s->grpc) : chain, chain};

    http_server_opts ho = bazaar_http_opts(o);
    /* --max-conns is per process: both public addresses share one gate. */
    rt_gate *gate = rt_gate_new(o->max_conns);
    ho.conn_gate = gate;
    ho.name = "public";
    ho.tls = s->tls;
    if (s->tls)
        x__tls_reload_on_sighup(s->tls, o);
    int e = 0;
    s->srv = http_server_new(&ho, (http_handler){by_protocol, &both}, &e);
    if (!s->srv && e)
        cannot_listen("addr", o->http_addr, e);
    if (s->srv && s->grpc && o->grpc_addr[0]) {
        http_server_opts go = ho;
        go.addr = o->grpc_addr;
        go.name = "grpc";
        s->gsrv = http_server_new(&go, both.grpc, &e);
        if (!s->gsrv) {
            cannot_listen("addr", o->grpc_addr, e);
            http_server_free(s->srv);
            s->srv = NULL;
        }
    }
    rt_gate_unref(gate); /* the servers hold their own references */
    if (s->srv && o->admin_addr[0]) {
        http_server_opts ao = bazaar_http_opts(o);
        ao.addr = o->admin_addr;
        ao.name = "admin";
        ao.max_conns = ADMIN_MAX_CONNS;
        /* A CPU profile on an admin page answers after up to 300 s. */
        if (ao.write_timeout_ns < 330 * BZ_NS_PER_S)
            ao.write_timeout_ns = 330 * BZ_NS_PER_S;
        s->asrv = http_server_new(&ao, admin_chain, &e);
        if (!s->asrv)
            cannot_listen("admin_addr", o->admin_addr, e);
    }
    if (s->srv && (s->asrv || !o->admin_addr[0])) {
        bz_field f[BAZAAR_MAX_FIELDS + 1];
        for (int i = 0; i <= BAZAAR_MAX_FIELDS; i++)
            f[i] = i < s->nfields ? s->fields[i] : BZ__F_END;
        bz_log_info("listening", BZ_F_STR("http_addr", o->http_addr), BZ_F_INT("port", bazaar_http_port(s)),
                    BZ_F_INT("grpc_port", bazaar_grpc_port(s)), BZ_F_INT("threads", o->threads),
                    BZ_F_STR("io_batch", rt_batch_name()), BZ_F_INT("admin_port", bazaar_admin_port(s)),
                    BZ_F_STR("version", bazaar_version()), f[0], f[1], f[2], f[3]);
        rt_wg wg;
        rt_wg_init(&wg);
        serve_arg ga = {s->gsrv, &wg}, aa = {s->asrv, &wg};
        if (s->gsrv) {
            rt_wg_add(&wg, 1);
            rt_go(serve_other, &ga);
        }
        if (s->asrv) {
            rt_wg_add(&wg, 1);
            rt_go(serve_other, &aa);
        }
        x__notify_ready(s);
        int r = http_server_serve(s->srv);
        rt_wg_wait(&wg, NULL);
        rt_wg_destroy(&wg);
        bz_log_info("stopped", BZ_F_STR("drain", r == 0 ? "complete" : "grace period ran out"));
        s->status = 0;
    }
    http_server_free(s->asrv);
    http_server_free(s->gsrv);
    http_server_free(s->srv);
    s->asrv = s->gsrv = s->srv = NULL;
    http_chain_free(admin_chain);
    http_chain_free(chain);
}

static void run_main(void *p)
{
    bazaar_service *s = p;
    int started = 0;
    for (; started < s->nstarts; started++)
        if (s->starts[started].fn(s, s->starts[started].arg) != 0)
            break;
    if (started == s->nstarts)
        serve(s);
    /* Every stop hook runs, whatever the starts did: each copes with what
     * a failed start left (a NULL handle), as a deferred close would. */
    for (int i = s->nstops - 1; i >= 0; i--)
        s->stops[i].fn(s, s->stops[i].arg);
}

int bazaar_run(bazaar_service *s)
{
    s->status = 1;
    if (s->o.tls_cert[0]) {
        char err[512];
        if (!(s->tls = x__tls_open(&s->o, err, sizeof err))) {
            fprintf(stderr, "%s: %s\n", s->name, err);
            x__service_free(s);
            return 2;
        }
    }
    rt_options ro = {.threads = s->o.threads, .handle_signals = true};
    int r = rt_run(&ro, run_main, s);
    rt_tls_server_unref(s->tls);
    int status = s->status;
    if (r) {
        fprintf(stderr, "%s: cannot start the runtime (error %d)\n", s->name, -r);
        status = 1;
    }
    x__service_free(s);
    return status;
}

/*
 * service/service-private.h — the service object the lifecycle's files
 * share (service.c: the object and its routes; run.c: bazaar_run;
 * tls.c: the TLS pair and its reload; watchdog.c: sd_notify).
 */
#ifndef SERVICE_SERVICE_PRIVATE_H
#define SERVICE_SERVICE_PRIVATE_H

#include <bazaar/log.h>
#include <bazaar/service.h>
#include <bazaar/tls.h>

#define BAZAAR_MAX_MWS 8
#define BAZAAR_MAX_CHECKS 16
#define BAZAAR_MAX_HOOKS 8
#define BAZAAR_MAX_FIELDS 4

struct bazaar_check {
    const char *name;
    bazaar_check_fn fn;
    void *arg;
};
struct bazaar_start {
    bazaar_start_fn fn;
    void *arg;
};
struct bazaar_stop {
    bazaar_stop_fn fn;
    void *arg;
};

struct bazaar_service {
    const char *name;
    bazaar_options o;
    http_mux *mux, *admin_mux;
    http_handler handler; /* bazaar_handle's, when has_handler */
    bool has_handler;
    http_mw mws[BAZAAR_MAX_MWS];
    int nmws;
    grpc_server *grpc;
    bool own_grpc; /* made by bazaar_grpc: health and reflection are ours to add */
    struct bazaar_check checks[BAZAAR_MAX_CHECKS];
    int nchecks;
    http_handler readyz, metrics;
    struct bazaar_start starts[BAZAAR_MAX_HOOKS];
    int nstarts;
    struct bazaar_stop stops[BAZAAR_MAX_HOOKS];
    int nstops;
    bz_field fields[BAZAAR_MAX_FIELDS];
    int nfields;
    /* while running */
    http_server *srv, *gsrv, *asrv;
    rt_tls_server *tls;
    int status;
};

void x__service_free(bazaar_service *s);

/* tls.c: the pair of --tls-cert/--tls-key (NULL with a one-line message
 * naming the flags in err); its reload on SIGHUP from inside the run. */
rt_tls_server *x__tls_open(const bazaar_options *o, char *err, size_t errlen);
void x__tls_reload_on_sighup(rt_tls_server *t, const bazaar_options *o);

/* watchdog.c: READY=1 with the ports, then WATCHDOG=1 pings while every
 * loop ticks, STOPPING=1 at shutdown (no-ops outside systemd). */
void x__notify_ready(const bazaar_service *s);

#endif

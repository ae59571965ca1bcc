/* app/grpc/server.c — the gRPC server of bazaar: the method table and the
 * interceptors (the gRPC side of the middleware chain: the library's
 * grpc_observe — request id, access log, metrics, recovery —, then auth
 * and rate limit). */
#include "app/grpc/rpc-private.h"


#include <stdlib.h>
#include <string.h>

typedef struct {
    svc_principal who;
} call_state;

const svc_principal *rpc_who(grpc_call *c)
{
    static const svc_principal anonymous;
    call_state *st = grpc_user(c);
    return st ? &st->who : &anonymous;
}

svc_call rpc_call(grpc_call *c)
{
    svc_call sc = SVC_CALL(grpc_ctx(c), grpc_arena(c), rpc_who(c));
    sc.trace = &grpc_http(c)->trace; /* from the `traceparent` metadata, as on REST */
    return sc;
}

/* The caller from `authorization: Bearer <token>`, once per call. */
static int auth(grpc_call *c, const grpc_method *m, void *data, int (*next)(grpc_call *c, const grpc_method *m))
{
    rpc *R = data;
    call_state *st = bz_arena_calloc(grpc_arena(c), 1, sizeof *st);
    grpc_set_user(c, st);
    svc_err e;
    svc_err_clear(&e);
    if (svc_authenticate_bearer(R->s, grpc_ctx(c), grpc_metadata(c, "authorization"), grpc_http(c)->peer, &st->who,
                                &e) != 0)
        return rpc_fail(c, &e);
    return next(c, m);
}

/* --rate-limit on the caller, shared with REST through the cache. */
static int limit(grpc_call *c, const grpc_method *m, void *data, int (*next)(grpc_call *c, const grpc_method *m))
{
    rpc *R = data;
    if (R->cfg->rate_limit.count > 0 && m && !strncmp(m->path, "/bazaar.", 8)) {
        svc_err e;
        svc_err_clear(&e);
        svc_rate rt;
        if (svc_rate_check(R->s, grpc_ctx(c), rpc_who(c), &rt, &e) != 0)
            return rpc_fail(c, &e);
    }
    return next(c, m);
}

rpc *rpc_new(svc *s, const app_config *cfg, grpc_serving_fn ready, void *ready_arg)
{
    rpc *R = calloc(1, sizeof *R);
    if (!R)
        abort();
    R->s = s;
    R->cfg = cfg;
    grpc_opts o = {.max_recv_bytes = cfg->srv.grpc_max_recv_bytes,
                   .web_origins = cfg->srv.grpc_web_origins,
                   .unary_timeout_ns = cfg->srv.request_timeout_ns};
    R->g = grpc_server_new(&o);
    rpc_register(R); /* app/ops.def's gRPC rows (methods.c) */
    grpc_health_register(R->g, R->services, ready, ready_arg);
    /* reflection serves bazaar.proto as protoc wrote it (build/gen/app_descriptors.c) */
    extern const unsigned char app_descriptor_set[];
    extern const size_t app_descriptor_set_len;
    if (grpc_reflection_add_descriptor_set(R->g, app_descriptor_set, app_descriptor_set_len) != 0)
        abort();
    grpc_reflection_register(R->g);
    grpc_testing_register(R->g);
    grpc_server_intercept(R->g, grpc_observe, NULL); /* request id, access log, metrics, recovery */
    grpc_server_intercept(R->g, auth, R);
    grpc_server_intercept(R->g, limit, R);
    return R;
}

grpc_server *rpc_server(rpc *R) { return R->g; }

void rpc_free(rpc *R)
{
    if (!R)
        return;
    grpc_server_free(R->g);
    for (int i = 0; R->services && R->services[i]; i++)
        free((char *)R->services[i]);
    free(R->services);
    free(R->bindings);
    free(R);
}

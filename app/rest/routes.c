/* app/rest/routes.c — the route table (the ops routes, then one row per
 * operation of app/ops.def; also the source of /openapi.json) and the
 * per-route dispatcher: the caller is
 * resolved once per request (session, then the rate limiter's principal),
 * then the handler runs. */
#include "app/rest/rest-private.h"

#include <bazaar/clock.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The operations' REST columns (app/ops.def); NO_REST rows leave none. */
#define X__AUTH_PUBLIC false
#define X__AUTH_AUTH true
#define X__R_REST(pattern, fn, auth, summary, req, resp, codes) {pattern, fn, auth, false, summary, req, resp, codes},
#define X__R_REST_STREAM(pattern, fn, auth, summary, req, resp, codes) {pattern, fn, auth, true, summary, req, resp, codes},
#define X__R_NO_REST(pattern, fn, auth, summary, req, resp, codes)
#define OP(id, svc_fn, auth, idem, rkind, pattern, fn, gkind, gmethod, summary, req, resp, codes)                     \
    X__R_##rkind(pattern, fn, X__AUTH_##auth, summary, req, resp, codes)

const rest_route rest_routes[] = {
    {"GET /healthz", ops_healthz, false, false, "Liveness: 200 while the process runs", NULL, "text", "200"},
    {"GET /readyz", ops_readyz, false, false, "Readiness of the database and the cache", NULL, "Ready", "200 503"},
    {"GET /metrics", ops_metrics, false, false, "Prometheus metrics", NULL, "text", "200"},
    {"GET /openapi.json", ops_openapi, false, false, "This document", NULL, "object", "200"},
#include "app/ops.def"
};
#undef OP
const int rest_nroutes = sizeof rest_routes / sizeof rest_routes[0];

typedef struct rest_binding {
    rest *R;
    const rest_route *route;
    bool limited; /* subject to --rate-limit */
    bool has_id;  /* the pattern has {id}: read before the handler runs */
} binding;

/* One svc_err (2.6 KB) in this frame, x.e, for the caller's checks and the
 * operation alike: two of them and a compound literal for the anonymous
 * refusal made this frame 5.6 KB, and a cached item GET ran deeper than the
 * 12 KiB a pooled coroutine stack keeps (rt/coro.c RT_STACK_KEEP): one
 * madvise per request, and a page fault on the next (make bench-kernel-check). */
static int dispatch(http_req *r, void *data)
{
    binding *b = data;
    rest *R = b->R;
    rest_x x;
    svc_err_clear(&x.e);
    /* The caller, once: the session behind a bearer token (public routes
     * without the limiter do not look it up). */
    svc_principal who;
    bz_str authz;
    if (b->route->auth || b->limited) {
        authz = http_header_get(r, "Authorization");
        if (svc_authenticate_bearer(R->s, r->ctx, authz, r->peer, &who, &x.e) != 0)
            return rest_fail(r, &x.e);
    } else if (svc_has_replica(R->s) && (authz = http_header_get(r, "Authorization")).n) {
        /* A public read may go to the replica: a signed-in caller's own
         * writes must still show (read-your-writes), so find out who it
         * is.  If the session store fails, the read goes on unidentified
         * (and on the primary: see replica.c). */
        svc_authenticate_bearer(R->s, r->ctx, authz, r->peer, &who, &x.e);
        svc_err_clear(&x.e);
    } else {
        svc_anonymous(r->peer, &who);
    }
    if (b->limited) {
        svc_rate rt;
        int rc = svc_rate_check(R->s, r->ctx, &who, &rt, &x.e);
        rest_rate_headers(r, &rt);
        if (rc != 0) {
            rest_metrics_count_rate_limited();
            return rest_fail(r, &x.e);
        }
    }
    /* Routes that need a user refuse an anonymous caller before reading
     * anything (the operation would refuse it too). */
    if (b->route->auth && who.user_id <= 0) {
        svc_err_clear(&x.e);
        x.e.kind = SVC_UNAUTHENTICATED;
        x.e.code = "unauthorized";
        snprintf(x.e.msg, sizeof x.e.msg, "a valid bearer token is required");
        return rest_fail(r, &x.e);
    }
    /* Field by field: an initializer would zero the 2.6 KB svc_err that
     * svc_err_clear made valid with five stores (measured: ~350
     * instructions a request). */
    x.R = R;
    x.r = r;
    x.who = &who;
    x.c = rest_call(r, &who);
    x.id = 0;
    if (b->has_id && !rest_path_id(r, "id", &x.id, &x.e))
        return rest_fail(r, &x.e);
    return b->route->fn(&x);
}

rest *rest_new(svc *s, const app_config *cfg, const int64_t *request_timeout, char *err, size_t errlen)
{
    rest *R = calloc(1, sizeof *R);
    if (!R)
        abort();
    R->s = s;
    R->cfg = cfg;
    R->bindings = calloc((size_t)rest_nroutes, sizeof *R->bindings);
    R->wrapped = calloc((size_t)rest_nroutes, sizeof *R->wrapped);
    if (!R->bindings || !R->wrapped)
        abort();
    R->mux = http_mux_new();
    bool limit_on = cfg && cfg->rate_limit.count > 0;
    for (int i = 0; i < rest_nroutes; i++) {
        const rest_route *rt = &rest_routes[i];
        bool ops = strstr(rt->pattern, " /v1/") == NULL; /* health, metrics: never limited */
        R->bindings[i] = (binding){R, rt, limit_on && !ops, strstr(rt->pattern, "{id}") != NULL};
        http_handler h = {dispatch, &R->bindings[i]};
        /* Streams live until the client or the server ends them; every
         * other route gets --request-timeout on its context. */
        if (!rt->stream && request_timeout) {
            http_mw mw = {http_mw_timeout, (void *)request_timeout};
            h = http_chain(h, &mw, 1);
        }
        R->wrapped[i] = h;
        R->n = i + 1;
        if (http_mux_handle(R->mux, rt->pattern, h, err, errlen) != 0) {
            rest_free(R);
            return NULL;
        }
    }
    return R;
}

void rest_set_service(rest *R, const bazaar_service *s) { R->life = s; }
http_mux *rest_mux(rest *R) { return R->mux; }

void rest_free(rest *R)
{
    if (!R)
        return;
    http_mux_free(R->mux);
    for (int i = 0; i < R->n; i++)
        if (R->wrapped[i].data != &R->bindings[i])
            http_chain_free(R->wrapped[i]);
    free(R->wrapped);
    free(R->bindings);
    free(R);
}

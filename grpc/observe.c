/* grpc/observe.c — the gRPC end of http/observe.c: the interceptor that
 * gives a call its request id (and traceresponse, when asked), ends a handler that
 * failed without a status as the call's end would (DEADLINE_EXCEEDED past
 * the deadline, else INTERNAL), and leaves the access-log line, the
 * count and the in-flight gauge (grpc/metrics.c's recorder). */
#include "grpc/grpc-private.h"

#include <bazaar/log.h>
#include <bazaar/observe.h>

#include <string.h>

int grpc_observe(grpc_call *c, const grpc_method *m, void *data, int (*next)(grpc_call *c, const grpc_method *m))
{
    (void)data;
    http_req *r = grpc_http(c);
    http_request_id_set(r, grpc_metadata(c, "x-request-id")); /* REST's rule (http/middleware.c) */
    /* both values live as long as the request: no copies */
    grpc__add_header_ref(c, "x-request-id", 12, r->request_id, strlen(r->request_id));
    char tp[56];
    if (http_traceresponse(r, tp)) /* REST's rule: only for a caller that sent a traceparent */
        grpc__add_header_ref(c, "traceresponse", 13, bz_arena_strndup(grpc_arena(c), tp, 55), 55);
    /* the method the client asked for: a registered one's path, else its :path */
    bz_str method = m ? bz_str_c(m->path) : r->path;
    http_obs_start(r, &grpc__obs_kind, method);
    http_obs_attach(r, &grpc__obs);
    int rc = next(c, m);
    if (rc < 0 && !grpc_finished(c)) {
        grpc__finish_default(c, rc);
        if (grpc_status(c) == GRPC_INTERNAL)
            bz_log_err("grpc handler failed", BZ_F_STRN("method", method.p, method.n), BZ_F_INT("error", rc));
    }
    grpc_code code = grpc_finished(c) ? grpc_status(c) : GRPC_OK;
    if (code < 0 || code >= GRPC_CODE__COUNT)
        code = GRPC_UNKNOWN;
    http_obs_end(r, &(http_obs_done){&grpc__obs_kind, method, m ? m->path : NULL, 0, code});
    return rc;
}

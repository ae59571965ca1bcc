/* app/grpc/errors.c — the one mapping from service errors to gRPC status
 * codes (bazaar.proto's header comment): the REST `code` starts the
 * status message, field violations ride in google.rpc.BadRequest. */
#include "app/grpc/rpc-private.h"

#include <stdio.h>
#include <string.h>

static const grpc_code codes[SVC_KIND__COUNT] = {
    [SVC_OK] = GRPC_OK,
    [SVC_INVALID] = GRPC_INVALID_ARGUMENT,
    [SVC_UNAUTHENTICATED] = GRPC_UNAUTHENTICATED,
    [SVC_NOT_FOUND] = GRPC_NOT_FOUND,
    [SVC_ALREADY_EXISTS] = GRPC_ALREADY_EXISTS,
    [SVC_CONFLICT] = GRPC_FAILED_PRECONDITION,
    [SVC_UNPROCESSABLE] = GRPC_FAILED_PRECONDITION,
    [SVC_RATE_LIMITED] = GRPC_RESOURCE_EXHAUSTED,
    [SVC_UNAVAILABLE] = GRPC_UNAVAILABLE,
    [SVC_TIMEOUT] = GRPC_DEADLINE_EXCEEDED,
    [SVC_CANCELLED] = GRPC_CANCELLED,
    [SVC_INTERNAL] = GRPC_INTERNAL,
    [SVC_TOO_LARGE] = GRPC_RESOURCE_EXHAUSTED, /* as gRPC answers a message over its limit */
    [SVC_UNSUPPORTED] = GRPC_INVALID_ARGUMENT,
    [SVC_UNREADABLE] = GRPC_INVALID_ARGUMENT,
};

int rpc_fail(grpc_call *c, const svc_err *e)
{
    svc_kind k = e->kind > SVC_OK && e->kind < SVC_KIND__COUNT ? e->kind : SVC_INTERNAL;
    grpc_code code = codes[k];
    /* the stable code rides along, as REST's problem "code" does */
    char msg[320];
    snprintf(msg, sizeof msg, "%s: %s", e->code && *e->code ? e->code : svc_kind_name(k), e->msg);
    if (e->retry_after_s > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", e->retry_after_s);
        grpc_add_trailer(c, "retry-after", v);
        /* gRPC's own form, which a client with a retry policy obeys: an
         * UNAVAILABLE from an open circuit breaker says when to retry */
        if (code == GRPC_UNAVAILABLE) {
            snprintf(v, sizeof v, "%d", e->retry_after_s * 1000);
            grpc_add_trailer(c, "grpc-retry-pushback-ms", v);
        }
    }
    if (e->nviol == 0)
        return grpc_finish(c, code, "%s", msg);
    grpc_violation v[SVC_MAX_VIOL];
    for (int i = 0; i < e->nviol; i++)
        v[i] = (grpc_violation){e->viol[i].field, e->viol[i].msg};
    return grpc_finish_violations(c, code, msg, v, e->nviol);
}

int rpc_recv1(grpc_call *c, const ProtobufCMessageDescriptor *d, ProtobufCMessage **msg)
{
    int rc = grpc_recv(c, d, msg);
    if (rc == 1) {
        grpc_finish(c, GRPC_INVALID_ARGUMENT, "a %s request message is required", d->name);
        return -1;
    }
    return rc;
}


/* app/grpc/errors.c — the one mapping from service errors to gRPC status
 * codes (bazaar.proto's header comment), and the model conversions. */
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

Google__Protobuf__Timestamp *rpc_time(bz_arena *a, int64_t us)
{
    Google__Protobuf__Timestamp *t = bz_arena_alloc(a, sizeof *t);
    google__protobuf__timestamp__init(t);
    int64_t s = us / 1000000, r = us % 1000000;
    if (r < 0) {
        s--;
        r += 1000000;
    }
    t->seconds = s;
    t->nanos = (int32_t)(r * 1000);
    return t;
}

static char *dup(bz_arena *a, const char *s) { return bz_arena_strdup(a, s ? s : ""); }

void rpc_user(bz_arena *a, const svc_user *u, Bazaar__V1__User *out)
{
    bazaar__v1__user__init(out);
    out->id = u->id;
    out->name = dup(a, u->name);
    out->created_at = rpc_time(a, u->created_us);
    out->email = u->email ? dup(a, u->email) : (char *)"";
}

void rpc_item(bz_arena *a, const svc_item *it, Bazaar__V1__Item *out)
{
    bazaar__v1__item__init(out);
    out->id = it->id;
    out->seller_id = it->seller_id;
    out->sku = dup(a, it->sku);
    out->name = dup(a, it->name);
    out->price_cents = it->price_cents;
    out->currency = dup(a, it->currency);
    out->stock = it->stock;
    out->version = it->version;
    out->created_at = rpc_time(a, it->created_us);
    out->updated_at = rpc_time(a, it->updated_us);
}

void rpc_order(bz_arena *a, const svc_order *o, Bazaar__V1__Order *out)
{
    bazaar__v1__order__init(out);
    out->id = o->id;
    out->customer_id = o->customer_id;
    out->account_id = o->account_id;
    out->status = dup(a, o->status);
    out->total_cents = o->total_cents;
    out->currency = dup(a, o->currency);
    out->n_lines = (size_t)o->nlines;
    out->lines = bz_arena_calloc(a, (size_t)(o->nlines ? o->nlines : 1), sizeof *out->lines);
    for (int i = 0; i < o->nlines; i++) {
        Bazaar__V1__OrderLine *l = bz_arena_alloc(a, sizeof *l);
        bazaar__v1__order_line__init(l);
        l->item_id = o->lines[i].item_id;
        l->quantity = (int32_t)o->lines[i].quantity;
        l->unit_price_cents = o->lines[i].unit_price_cents;
        out->lines[i] = l;
    }
    out->created_at = rpc_time(a, o->created_us);
    out->updated_at = rpc_time(a, o->updated_us);
}

svc_str rpc_str(const char *s) { return SVC_STR_SET(s ? s : "", s ? strlen(s) : 0); }

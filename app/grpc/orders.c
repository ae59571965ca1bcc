/* app/grpc/orders.c — bazaar.v1.OrderService's WatchOrders stream, on the
 * same pub/sub channel as the REST event stream. */
#include "app/grpc/rpc-private.h"

#include <errno.h>

/* The loop is the service's (svc_orders_stream); this is where its
 * events go: one OrderEvent message each. */
typedef struct {
    grpc_call *c;
    bool subscribed;
} watch_state;

static int watch_ready(void *arg)
{
    watch_state *st = arg;
    st->subscribed = true;
    /* The response headers go out now: the client knows it is subscribed. */
    return grpc_send_headers(st->c);
}

static int watch_event(void *arg, const svc_order_event *ev)
{
    watch_state *st = arg;
    bz_arena scratch;
    bz_arena_init(&scratch, 256);
    Bazaar__V1__OrderEvent out;
    rpc_event(&scratch, ev, &out);
    int rc = grpc_send(st->c, &out.base);
    bz_arena_free(&scratch);
    return rc;
}

int rpc_orders_watch(grpc_call *c, void *data)
{
    rpc *R = data;
    Bazaar__V1__WatchOrdersRequest *in;
    if (rpc_recv1(c, &bazaar__v1__watch_orders_request__descriptor, (ProtobufCMessage **)&in) != 0)
        return 0;
    svc_call sc = rpc_call(c);
    svc_err e;
    svc_err_clear(&e);
    watch_state st = {c, false};
    svc_watch_sink sink = {watch_ready, watch_event, NULL, &st};
    int rc = svc_orders_stream(R->s, &sc, rpc_who(c)->user_id, &sink, &e);
    if (rc != 0 && !st.subscribed)
        return rpc_fail(c, &e); /* refused: too many streams, the cache is down */
    if (rc != 0 && e.kind == SVC_UNAVAILABLE)
        return grpc_finish(c, GRPC_UNAVAILABLE, "%s", e.msg);
    if (grpc_finished(c)) /* the headers could not be sent */
        return 0;
    /* the client went away, or its deadline passed */
    int ce = rt_ctx_err(grpc_ctx(c));
    if (ce == ETIMEDOUT)
        return grpc_finish(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
    if (ce)
        return grpc_finish(c, GRPC_CANCELLED, "cancelled");
    return grpc_finish(c, GRPC_UNAVAILABLE, "the event stream ended");
}

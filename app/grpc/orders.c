/* app/grpc/orders.c — bazaar.v1.OrderService's WatchOrders stream, on the
 * same pub/sub channel as the REST event stream. */
#include "app/grpc/rpc-private.h"

#include <errno.h>

int rpc_orders_watch(grpc_call *c, void *data)
{
    rpc *R = data;
    Bazaar__V1__WatchOrdersRequest *in;
    if (rpc_recv1(c, &bazaar__v1__watch_orders_request__descriptor, (ProtobufCMessage **)&in) != 0)
        return 0;
    svc_call sc = rpc_call(c);
    svc_err e;
    svc_err_clear(&e);
    svc_watch *w;
    if (svc_orders_watch(R->s, &sc, rpc_who(c)->user_id, &w, &e) != 0)
        return rpc_fail(c, &e);
    /* The response headers go out now: the client knows it is subscribed. */
    int rc = grpc_send_headers(c);
    if (rc != 0) {
        svc_watch_close(w);
        return 0;
    }
    for (;;) {
        rt_ctx tick;
        rt_ctx_init_timeout(&tick, grpc_ctx(c), BZ_NS_PER_S);
        svc_order_event ev;
        rc = svc_watch_next(w, &tick, &ev);
        rt_ctx_release(&tick);
        if (rc == 0) {
            bz_arena scratch;
            bz_arena_init(&scratch, 256);
            Bazaar__V1__OrderEvent out = BAZAAR__V1__ORDER_EVENT__INIT;
            out.order_id = ev.order_id;
            out.status = (char *)ev.status;
            out.at = rpc_time(&scratch, ev.at_us);
            int sr = grpc_send(c, &out.base);
            bz_arena_free(&scratch);
            if (sr != 0)
                break;
        } else if (rc == -EPIPE || rt_ctx_err(grpc_ctx(c))) {
            break;
        } else if (rt_ctx_err(rt_shutdown_ctx())) {
            svc_watch_close(w);
            return grpc_finish(c, GRPC_UNAVAILABLE, "the server is shutting down");
        }
    }
    svc_watch_close(w);
    int ce = rt_ctx_err(grpc_ctx(c));
    if (ce == ETIMEDOUT)
        return grpc_finish(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
    if (ce)
        return grpc_finish(c, GRPC_CANCELLED, "cancelled");
    return grpc_finish(c, GRPC_UNAVAILABLE, "the event stream ended");
}

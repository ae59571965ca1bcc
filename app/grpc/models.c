/* app/grpc/models.c — the model conversions of the gRPC adapter: each
 * service result as its bazaar.proto message, sub-messages carved from
 * the call's arena (nothing to free).  A model's strings are the
 * service's (its arena, or static): the message points at them, they are
 * not copied again — they outlive the message, which is packed before the
 * adapter's call ends.  Only the currency, held in the model value itself
 * (often on the stack of an adapter that returns the message), is copied. */
#include "app/grpc/rpc-private.h"

#include <string.h>

void *rpc_msg(bz_arena *a, const ProtobufCMessageDescriptor *d)
{
    void *m = bz_arena_alloc(a, d->sizeof_message);
    protobuf_c_message_init(d, m);
    return m;
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
/* protobuf-c's string fields are char *; packing only reads them */
static char *ref(const char *s) { return (char *)(s ? s : ""); }

/* The models with a field list (svc.h): protobuf field names are the
 * model's (a field bazaar.proto lacks does not build). */
#define X__PB_ID(n) out->n = v->n;
#define X__PB_INT(n) out->n = v->n;
#define X__PB_STR(n) out->n = ref(v->n);
#define X__PB_OPT(n) out->n = ref(v->n);
#define X__PB_CUR(n) out->n = dup(a, v->n);
#define X__PB_TIME(n) out->n##_at = rpc_time(a, v->n##_us);
#define X__PB_STATUS(n) out->n = ref(v->n);
#define X__PB_WHEN(n) out->n = rpc_time(a, v->n##_us);
#define X__PB_RANK(n) out->n = v->n;
#define X__PB_NULLSTR(n) out->n = ref(v->n);
#define X__PB_LINES(x) out->x = x__lines_pb(a, v->x, v->n##x, &out->n_##x);
#define X__PB(kind, n) X__PB_##kind(n)

static Bazaar__V1__OrderLine **x__lines_pb(bz_arena *a, const svc_line *l, int n, size_t *count)
{
    Bazaar__V1__OrderLine **out = bz_arena_calloc(a, (size_t)(n ? n : 1), sizeof *out);
    for (int i = 0; i < n; i++) {
        out[i] = bz_arena_alloc(a, sizeof *out[i]);
        bazaar__v1__order_line__init(out[i]);
        out[i]->item_id = l[i].item_id;
        out[i]->quantity = (int32_t)l[i].quantity;
        out[i]->unit_price_cents = l[i].unit_price_cents;
    }
    *count = (size_t)n;
    return out;
}
#define X__PB_CONVERTER(fn, T, M, init, FIELDS)                                                                      \
    void fn(bz_arena *a, const T *v, M *out)                                                                          \
    {                                                                                                                 \
        init(out);                                                                                                    \
        FIELDS(X__PB)                                                                                                 \
    }
X__PB_CONVERTER(rpc_user, svc_user, Bazaar__V1__User, bazaar__v1__user__init, SVC_USER_FIELDS)
X__PB_CONVERTER(rpc_order, svc_order, Bazaar__V1__Order, bazaar__v1__order__init, SVC_ORDER_FIELDS)
X__PB_CONVERTER(rpc_item, svc_item, Bazaar__V1__Item, bazaar__v1__item__init, SVC_ITEM_FIELDS)
X__PB_CONVERTER(rpc_account, svc_account, Bazaar__V1__Account, bazaar__v1__account__init, SVC_ACCOUNT_FIELDS)
X__PB_CONVERTER(rpc_transfer, svc_transfer, Bazaar__V1__TransferRecord, bazaar__v1__transfer_record__init,
                SVC_TRANSFER_FIELDS)
X__PB_CONVERTER(rpc_session, svc_session, Bazaar__V1__Session, bazaar__v1__session__init, SVC_SESSION_FIELDS)
X__PB_CONVERTER(rpc_event, svc_order_event, Bazaar__V1__OrderEvent, bazaar__v1__order_event__init, SVC_EVENT_FIELDS)
X__PB_CONVERTER(rpc_spender, svc_spender, Bazaar__V1__Spender, bazaar__v1__spender__init, SVC_SPENDER_FIELDS)

svc_str rpc_str(const char *s) { return SVC_STR_SET(s ? s : "", s ? strlen(s) : 0); }

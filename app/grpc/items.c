/* app/grpc/items.c — bazaar.v1.ItemService's streams: ImportItems (client
 * streaming, in batches) and LookupItems (bidirectional, answered in order
 * as each is known, through the same cache path as GetItem). */
#include "app/grpc/rpc-private.h"

#define IMPORT_BATCH 100

/* Messages are read into a scratch arena that is recycled per batch, so an
 * import of any length holds one batch in memory. */
int rpc_items_import(grpc_call *c, void *data)
{
    rpc *R = data;
    svc_call sc = rpc_call(c);
    svc_err e;
    svc_err_clear(&e);
    svc_import_result res = {0};
    res.arena = grpc_arena(c);
    bz_arena scratch;
    bz_arena_init(&scratch, 16384);
    svc_item_in batch[IMPORT_BATCH];
    int n = 0;
    for (;;) {
        Bazaar__V1__NewItem *m;
        int rc = grpc_recv_in(c, &bazaar__v1__new_item__descriptor, &scratch, (ProtobufCMessage **)&m);
        if (rc < 0) {
            bz_arena_free(&scratch);
            return 0;
        }
        if (rc == 0)
            batch[n++] = (svc_item_in){rpc_str(m->sku), rpc_str(m->name), rpc_str(m->currency),
                                       SVC_INT_SET(m->price_cents), SVC_INT_SET(m->stock)};
        if (n == IMPORT_BATCH || (rc == 1 && n > 0)) {
            svc_call bc = sc;
            bc.arena = &scratch;
            if (svc_items_import(R->s, &bc, batch, n, &res, &e) != 0) {
                bz_arena_free(&scratch);
                return rpc_fail(c, &e);
            }
            n = 0;
            bz_arena_reset(&scratch);
        }
        if (rc == 1)
            break;
    }
    bz_arena_free(&scratch);
    Bazaar__V1__ImportItemsResponse out = BAZAAR__V1__IMPORT_ITEMS_RESPONSE__INIT;
    out.created = res.created;
    out.rejected = res.rejected;
    out.n_errors = (size_t)res.nerrors;
    out.errors = (char **)res.errors;
    grpc_send(c, &out.base);
    return grpc_finish(c, GRPC_OK, NULL);
}

int rpc_items_lookup(grpc_call *c, void *data)
{
    rpc *R = data;
    bz_arena scratch;
    bz_arena_init(&scratch, 4096);
    for (;;) {
        Bazaar__V1__GetItemRequest *in;
        int rc = grpc_recv_in(c, &bazaar__v1__get_item_request__descriptor, &scratch, (ProtobufCMessage **)&in);
        if (rc != 0)
            break;
        svc_call sc = rpc_call(c);
        sc.arena = &scratch;
        svc_err e;
        svc_err_clear(&e);
        svc_item it;
        bool hit;
        Bazaar__V1__ItemLookup out = BAZAAR__V1__ITEM_LOOKUP__INIT;
        Bazaar__V1__Item item;
        out.requested_id = in->id;
        if (svc_item_get(R->s, &sc, in->id, &it, &hit, &e) == 0) {
            rpc_item(&scratch, &it, &item);
            out.found = true;
            out.item = &item;
        } else if (e.kind != SVC_NOT_FOUND) {
            bz_arena_free(&scratch);
            return rpc_fail(c, &e);
        }
        /* each answer leaves as soon as it is known */
        if (grpc_send(c, &out.base) != 0 || http_flush(grpc_http(c)) != 0)
            break;
        bz_arena_reset(&scratch);
    }
    bz_arena_free(&scratch);
    return grpc_finished(c) ? 0 : grpc_finish(c, GRPC_OK, NULL);
}

/* app/grpc/models.c — the model conversions of the gRPC adapter: each
 * service result as its bazaar.proto message, every string and
 * sub-message carved from the call's arena (nothing to free). */
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

void rpc_account(bz_arena *a, const svc_account *ac, Bazaar__V1__Account *out)
{
    bazaar__v1__account__init(out);
    out->id = ac->id;
    out->user_id = ac->user_id;
    out->currency = dup(a, ac->currency);
    out->balance_cents = ac->balance_cents;
    out->created_at = rpc_time(a, ac->created_us);
}

void rpc_transfer(bz_arena *a, const svc_transfer *t, Bazaar__V1__TransferRecord *out)
{
    bazaar__v1__transfer_record__init(out);
    out->id = t->id;
    out->from_account_id = t->from_account_id;
    out->to_account_id = t->to_account_id;
    out->amount_cents = t->amount_cents;
    out->currency = dup(a, t->currency);
    out->created_at = rpc_time(a, t->created_us);
}

void rpc_session(bz_arena *a, const svc_session *s, Bazaar__V1__Session *out)
{
    bazaar__v1__session__init(out);
    out->token = dup(a, s->token);
    out->expires_at = rpc_time(a, s->expires_us);
}

void rpc_spender(bz_arena *a, const svc_spender *s, Bazaar__V1__Spender *out)
{
    bazaar__v1__spender__init(out);
    out->rank = s->rank;
    out->user_id = s->user_id;
    out->name = dup(a, s->name);
    out->spent_cents = s->spent_cents;
}

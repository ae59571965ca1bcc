/* app/grpc/methods.c — the gRPC method table, generated from app/ops.def,
 * and the one handler every row runs through.
 *
 * A unary row costs one adapter here: request message → the service's
 * typed input → the ONE service function REST's handler calls too → the
 * response message.  Everything else is the handler's, once for all rows:
 * auth (an anonymous caller of an AUTH row is UNAUTHENTICATED before the
 * request is read), the request message (its type comes from bazaar.proto's
 * method descriptor), the idempotency-key metadata (one record with REST's
 * Idempotency-Key: a replay answers the stored result with the response
 * metadata idempotent-replayed: true), and the error mapping (errors.c). */
#include "app/grpc/rpc-private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const ProtobufCServiceDescriptor *const rpc_services[] = {
    &bazaar__v1__user_service__descriptor,    &bazaar__v1__session_service__descriptor,
    &bazaar__v1__account_service__descriptor, &bazaar__v1__item_service__descriptor,
    &bazaar__v1__order_service__descriptor,   &bazaar__v1__leaderboard_service__descriptor,
    NULL,
};

/* ---- the adapters: decode, the service function, encode ---------------------------------- */

/* proto3 cannot tell "" or 0 from unset: where the service has a default
 * (a filter, a page size), the zero value is "absent". */
static svc_str opt_str(const char *s) { return s && *s ? rpc_str(s) : (svc_str){NULL, 0, SVC_ABSENT}; }
static svc_int opt_int(int64_t v) { return v ? SVC_INT_SET(v) : (svc_int){0, SVC_ABSENT}; }
/* A wrapper field: unset is absent (PATCH semantics). */
static svc_str wrap_str(const Google__Protobuf__StringValue *w)
{
    return w ? rpc_str(w->value) : (svc_str){NULL, 0, SVC_ABSENT};
}
static svc_int wrap_int(const Google__Protobuf__Int64Value *w)
{
    return w ? SVC_INT_SET(w->value) : (svc_int){0, SVC_ABSENT};
}

/* AIP-158 paging: page_size 0 is the service's default, the page token is
 * the REST cursor. */
static svc_page_in page_in(int32_t size, const char *token) { return (svc_page_in){opt_int(size), opt_str(token)}; }
/* The service names the page size as REST does ("limit"). */
static ProtobufCMessage *page_refused(svc_err *e)
{
    for (int i = 0; i < e->nviol; i++)
        if (!strcmp(e->viol[i].field, "limit"))
            snprintf(e->viol[i].field, sizeof e->viol[i].field, "page_size");
    return NULL;
}
static char *next_token(const char *cursor) { return (char *)(cursor ? cursor : ""); }

/* A model value as its message, in the call's arena. */
#define MSG_OF(name, T, M, conv)                                                                                      \
    static ProtobufCMessage *name(rpc_x *x, const T *v)                                                               \
    {                                                                                                                 \
        M *o = bz_arena_alloc(x->c.arena, sizeof *o);                                                                 \
        conv(x->c.arena, v, o);                                                                                       \
        return &o->base;                                                                                              \
    }
MSG_OF(user_msg, svc_user, Bazaar__V1__User, rpc_user)
MSG_OF(session_msg, svc_session, Bazaar__V1__Session, rpc_session)
MSG_OF(account_msg, svc_account, Bazaar__V1__Account, rpc_account)
MSG_OF(transfer_msg, svc_transfer, Bazaar__V1__TransferRecord, rpc_transfer)
MSG_OF(item_msg, svc_item, Bazaar__V1__Item, rpc_item)
MSG_OF(order_msg, svc_order, Bazaar__V1__Order, rpc_order)
/* n model values as a repeated field: LIST(x, out->items, out->n_items, rpc_item, p.data, p.n). */
#define LIST(x, field, nfield, conv, data, n)                                                                         \
    do {                                                                                                              \
        (nfield) = (size_t)(n);                                                                                       \
        (field) = bz_arena_calloc((x)->c.arena, (size_t)((n) > 0 ? (n) : 1), sizeof *(field));                       \
        for (int i__ = 0; i__ < (n); i__++) {                                                                         \
            (field)[i__] = bz_arena_alloc((x)->c.arena, sizeof *(field)[i__]);                                        \
            conv((x)->c.arena, &(data)[i__], (field)[i__]);                                                           \
        }                                                                                                             \
    } while (0)
#define EMPTY(x) ((ProtobufCMessage *)rpc_msg((x)->c.arena, &google__protobuf__empty__descriptor))

static ProtobufCMessage *rpc_user_create(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__CreateUserRequest *in = m;
    svc_user_in ui = {rpc_str(in->email), rpc_str(in->name), rpc_str(in->password)};
    svc_user u;
    return svc_user_create(x->s, &x->c, &ui, &u, e) ? NULL : user_msg(x, &u);
}

static ProtobufCMessage *rpc_user_find(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__FindUserByEmailRequest *in = m;
    svc_user u;
    bool found;
    if (svc_user_find(x->s, &x->c, opt_str(in->email), &u, &found, e) != 0)
        return NULL;
    if (!found) /* REST answers an empty list; a unary answer has no such thing */
        return svc_fail(e, SVC_NOT_FOUND, "not_found", "no user has that email"), NULL;
    return user_msg(x, &u);
}

static ProtobufCMessage *rpc_user_get(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__GetUserRequest *in = m;
    svc_user u;
    return svc_user_get(x->s, &x->c, in->id, &u, e) ? NULL : user_msg(x, &u);
}

static ProtobufCMessage *rpc_user_update(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__UpdateUserRequest *in = m;
    svc_user_patch p = {wrap_str(in->name), wrap_str(in->password)};
    svc_user u;
    return svc_user_patch_op(x->s, &x->c, in->id, &p, &u, e) ? NULL : user_msg(x, &u);
}

static ProtobufCMessage *rpc_user_me(rpc_x *x, const void *m, svc_err *e)
{
    svc_user u;
    return svc_user_me(x->s, &x->c, &u, e) ? NULL : user_msg(x, &u);
}

static ProtobufCMessage *rpc_session_create(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__CreateSessionRequest *in = m;
    svc_login_in li = {rpc_str(in->email), rpc_str(in->password)};
    svc_session s;
    return svc_session_create(x->s, &x->c, &li, &s, e) ? NULL : session_msg(x, &s);
}

static ProtobufCMessage *rpc_session_delete(rpc_x *x, const void *m, svc_err *e)
{
    return svc_session_delete(x->s, &x->c, e) ? NULL : EMPTY(x);
}

static ProtobufCMessage *rpc_account_create(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__CreateAccountRequest *in = m;
    svc_account a;
    return svc_account_create(x->s, &x->c, rpc_str(in->currency), &a, e) ? NULL : account_msg(x, &a);
}

static ProtobufCMessage *rpc_accounts_list(rpc_x *x, const void *m, svc_err *e)
{
    svc_account *v;
    int n;
    if (svc_accounts_list(x->s, &x->c, &v, &n, e) != 0)
        return NULL;
    Bazaar__V1__ListAccountsResponse *out = rpc_msg(x->c.arena, &bazaar__v1__list_accounts_response__descriptor);
    LIST(x, out->accounts, out->n_accounts, rpc_account, v, n);
    return &out->base;
}

static ProtobufCMessage *rpc_account_get(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__GetAccountRequest *in = m;
    svc_account a;
    return svc_account_get(x->s, &x->c, in->id, &a, e) ? NULL : account_msg(x, &a);
}

static ProtobufCMessage *rpc_deposit(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__DepositRequest *in = m;
    svc_deposit_in d = {in->account_id, SVC_INT_SET(in->amount_cents)};
    svc_account a;
    return svc_deposit(x->s, &x->c, &d, &a, e) ? NULL : account_msg(x, &a);
}

static ProtobufCMessage *rpc_transfers_list(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__ListTransfersRequest *in = m;
    svc_page_in pg = page_in(in->page_size, in->page_token);
    svc_transfer_page p;
    if (svc_transfers_list(x->s, &x->c, in->account_id, &pg, &p, e) != 0)
        return page_refused(e);
    Bazaar__V1__ListTransfersResponse *out = rpc_msg(x->c.arena, &bazaar__v1__list_transfers_response__descriptor);
    LIST(x, out->transfers, out->n_transfers, rpc_transfer, p.data, p.n);
    out->next_page_token = next_token(p.next_cursor);
    return &out->base;
}

static ProtobufCMessage *rpc_transfer_create(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__TransferRequest *in = m;
    svc_transfer_in t = {SVC_INT_SET(in->from_account_id), SVC_INT_SET(in->to_account_id),
                         SVC_INT_SET(in->amount_cents)};
    svc_transfer out;
    return svc_transfer_create(x->s, &x->c, &t, &out, e) ? NULL : transfer_msg(x, &out);
}

static ProtobufCMessage *rpc_transfer_get(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__GetTransferRequest *in = m;
    svc_transfer t;
    return svc_transfer_get(x->s, &x->c, in->id, &t, e) ? NULL : transfer_msg(x, &t);
}

static ProtobufCMessage *rpc_item_create(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__NewItem *in = m;
    svc_item_in ii = {rpc_str(in->sku), rpc_str(in->name), rpc_str(in->currency), SVC_INT_SET(in->price_cents),
                      SVC_INT_SET(in->stock)};
    svc_item it;
    return svc_item_create(x->s, &x->c, &ii, &it, e) ? NULL : item_msg(x, &it);
}

static ProtobufCMessage *rpc_items_list(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__ListItemsRequest *in = m;
    svc_items_query q = {opt_int(in->seller_id), {0, SVC_ABSENT}, page_in(in->page_size, in->page_token)};
    svc_item_page p;
    if (svc_items_list(x->s, &x->c, &q, &p, e) != 0)
        return page_refused(e);
    Bazaar__V1__ListItemsResponse *out = rpc_msg(x->c.arena, &bazaar__v1__list_items_response__descriptor);
    LIST(x, out->items, out->n_items, rpc_item, p.data, p.n);
    out->next_page_token = next_token(p.next_cursor);
    return &out->base;
}

/* the same cache path as REST's GET /v1/items/{id} */
/* A hit is answered with the Item bytes packed the last time this thread
 * answered for the same record bytes (svc.h: renditions), as REST's item
 * GET is with its JSON. */
static ProtobufCMessage *rpc_item_get(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__GetItemRequest *in = m;
    bz_str rec, kept;
    bool hit;
    if (svc_item_get_record(x->s, &x->c, in->id, &rec, &hit, e) != 0)
        return NULL;
    if (!svc_rendition_get(SVC_REND_ITEM_PB, in->id, rec, &kept)) {
        svc_item it;
        if (svc_item_from_record(rec, x->c.arena, &it, e) != 0)
            return NULL;
        ProtobufCMessage *msg = item_msg(x, &it);
        size_t n = protobuf_c_message_get_packed_size(msg);
        uint8_t *p = bz_arena_alloc(x->c.arena, n ? n : 1);
        protobuf_c_message_pack(msg, p);
        svc_rendition_put(SVC_REND_ITEM_PB, in->id, rec, p, n);
        kept = bz_str_make((const char *)p, n);
    }
    x->packed = kept.p;
    x->npacked = kept.n;
    static Google__Protobuf__Empty sent_packed = GOOGLE__PROTOBUF__EMPTY__INIT; /* (not sent: the bytes are) */
    return &sent_packed.base;
}

static ProtobufCMessage *rpc_item_update(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__UpdateItemRequest *in = m;
    svc_item_in ii = {wrap_str(in->sku), wrap_str(in->name), wrap_str(in->currency), wrap_int(in->price_cents),
                      wrap_int(in->stock)};
    svc_item it;
    return svc_item_update(x->s, &x->c, in->id, &ii, false, &it, e) ? NULL : item_msg(x, &it);
}

static ProtobufCMessage *rpc_item_delete(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__DeleteItemRequest *in = m;
    return svc_item_delete(x->s, &x->c, in->id, e) ? NULL : EMPTY(x);
}

static ProtobufCMessage *rpc_order_create(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__CreateOrderRequest *in = m;
    svc_order_in *oi = bz_arena_calloc(x->c.arena, 1, sizeof *oi);
    oi->account_id = SVC_INT_SET(in->account_id);
    oi->lines_st = in->n_lines ? SVC_SET : SVC_ABSENT;
    oi->nlines_sent = (int)(in->n_lines < 1000000 ? in->n_lines : 1000000);
    oi->nlines = oi->nlines_sent > SVC_MAX_LINES ? SVC_MAX_LINES : oi->nlines_sent;
    for (int i = 0; i < oi->nlines; i++)
        oi->lines[i] = (svc_line_in){SVC_INT_SET(in->lines[i]->item_id), SVC_INT_SET(in->lines[i]->quantity)};
    svc_order o;
    return svc_order_create(x->s, &x->c, oi, &o, e) ? NULL : order_msg(x, &o);
}

static ProtobufCMessage *rpc_order_get(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__GetOrderRequest *in = m;
    svc_order o;
    return svc_order_get(x->s, &x->c, in->id, &o, e) ? NULL : order_msg(x, &o);
}

static ProtobufCMessage *rpc_order_pay(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__PayOrderRequest *in = m;
    svc_order o;
    return svc_order_pay(x->s, &x->c, in->id, &o, e) ? NULL : order_msg(x, &o);
}

static ProtobufCMessage *rpc_order_cancel(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__CancelOrderRequest *in = m;
    svc_order o;
    return svc_order_cancel(x->s, &x->c, in->id, &o, e) ? NULL : order_msg(x, &o);
}

static ProtobufCMessage *rpc_orders_list(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__ListOrdersRequest *in = m;
    svc_page_in pg = page_in(in->page_size, in->page_token);
    svc_order_page p;
    bool hit;
    if (svc_orders_list(x->s, &x->c, x->c.who->user_id, opt_str(in->status), &pg, &p, &hit, e) != 0)
        return page_refused(e);
    Bazaar__V1__ListOrdersResponse *out = rpc_msg(x->c.arena, &bazaar__v1__list_orders_response__descriptor);
    LIST(x, out->orders, out->n_orders, rpc_order, p.data, p.n);
    out->next_page_token = next_token(p.next_cursor);
    return &out->base;
}

static ProtobufCMessage *rpc_leaderboard(rpc_x *x, const void *m, svc_err *e)
{
    const Bazaar__V1__TopSpendersRequest *in = m;
    svc_spender *top;
    int n;
    if (svc_leaderboard(x->s, &x->c, opt_str(in->currency), opt_int(in->limit), &top, &n, e) != 0)
        return NULL;
    Bazaar__V1__TopSpendersResponse *out = rpc_msg(x->c.arena, &bazaar__v1__top_spenders_response__descriptor);
    LIST(x, out->spenders, out->n_spenders, rpc_spender, top, n);
    return &out->base;
}

/* ---- the table: app/ops.def's gRPC columns ------------------------------------------------ */

#define X__AUTH_PUBLIC false
#define X__AUTH_AUTH true
#define X__G_UNARY(id, m, auth, idem) {"/bazaar.v1." m, rpc_##id, NULL, auth, idem, false, false},
#define X__G_SERVER_STREAM(id, m, auth, idem) {"/bazaar.v1." m, NULL, rpc_##id, auth, idem, false, true},
#define X__G_CLIENT_STREAM(id, m, auth, idem) {"/bazaar.v1." m, NULL, rpc_##id, auth, idem, true, false},
#define X__G_BIDI(id, m, auth, idem) {"/bazaar.v1." m, NULL, rpc_##id, auth, idem, true, true},
#define X__G_NO_GRPC(id, m, auth, idem)
#define OP(id, svc_fn, auth, idem, rkind, pattern, fn, gkind, gmethod, summary, req, resp, codes)                     \
    X__G_##gkind(id, gmethod, X__AUTH_##auth, RPC_##idem)

const rpc_op rpc_ops[] = {
#include "app/ops.def"
};
#undef OP
const int rpc_nops = sizeof rpc_ops / sizeof rpc_ops[0];

const ProtobufCMethodDescriptor *rpc_method_desc(const char *path)
{
    const char *slash = path[0] == '/' ? strchr(path + 1, '/') : NULL;
    if (!slash)
        return NULL;
    size_t sn = (size_t)(slash - path - 1);
    for (int i = 0; rpc_services[i]; i++) {
        const ProtobufCServiceDescriptor *sd = rpc_services[i];
        if (strlen(sd->name) != sn || memcmp(sd->name, path + 1, sn) != 0)
            continue;
        for (unsigned k = 0; k < sd->n_methods; k++)
            if (!strcmp(sd->methods[k].name, slash + 1))
                return &sd->methods[k];
    }
    return NULL;
}

/* ---- the one handler ---------------------------------------------------------------------- */

typedef struct rpc_binding {
    rpc *R;
    const rpc_op *op;
    const ProtobufCMessageDescriptor *in;
} binding;

static int call_op(grpc_call *c, void *data)
{
    const binding *b = data;
    const rpc_op *op = b->op;
    if (op->auth && rpc_who(c)->user_id <= 0) /* before reading what we would refuse */
        return rpc_fail(c, &(svc_err){.kind = SVC_UNAUTHENTICATED, .code = "unauthorized",
                                      .msg = "a valid bearer token is required"});
    if (op->stream)
        return op->stream(c, b->R);
    ProtobufCMessage *in;
    if (rpc_recv1(c, b->in, &in) != 0)
        return 0;
    rpc_x x = {b->R->s, rpc_call(c), c, NULL, 0};
    if (op->idem != RPC_IDEM_NO) {
        bz_str k = grpc_metadata(c, "idempotency-key");
        if (k.p) {
            x.c.idem_key = k.p;
            x.c.idem_key_len = k.n;
        }
    }
    svc_err e;
    svc_err_clear(&e);
    const ProtobufCMessage *out = op->run(&x, in, &e);
    if (x.c.replayed)
        grpc_add_header(c, "idempotent-replayed", "true");
    if (x.c.rate.set) { /* a limiter the operation consulted (login): REST's RateLimit-* */
        char v[3][24];
        snprintf(v[0], sizeof v[0], "%lld", (long long)x.c.rate.limit);
        snprintf(v[1], sizeof v[1], "%lld", (long long)x.c.rate.remaining);
        snprintf(v[2], sizeof v[2], "%lld", (long long)x.c.rate.reset_s);
        grpc_add_header(c, "ratelimit-limit", v[0]);
        grpc_add_header(c, "ratelimit-remaining", v[1]);
        grpc_add_header(c, "ratelimit-reset", v[2]);
    }
    if (!out)
        return rpc_fail(c, &e);
    if (x.packed)
        grpc_send_packed(c, x.packed, x.npacked);
    else
        grpc_send(c, out);
    return grpc_finish(c, GRPC_OK, NULL);
}

void rpc_register(rpc *R)
{
    R->bindings = calloc((size_t)rpc_nops, sizeof *R->bindings);
    R->services = calloc((size_t)rpc_nops + 1, sizeof *R->services);
    if (!R->bindings || !R->services)
        abort();
    int nsvc = 0;
    for (int i = 0; i < rpc_nops; i++) {
        const rpc_op *op = &rpc_ops[i];
        const ProtobufCMethodDescriptor *md = rpc_method_desc(op->path);
        if (!md) { /* a row the contract does not have: a build that must not run */
            fprintf(stderr, "app/ops.def: %s is not a method of bazaar.proto\n", op->path);
            abort();
        }
        R->bindings[i] = (binding){R, op, md->input};
        grpc_server_add(R->g, &(grpc_method){op->path, call_op, &R->bindings[i], op->client_streaming,
                                              op->server_streaming});
        /* health reports each service that has a row */
        size_t n = (size_t)(strchr(op->path + 1, '/') - op->path - 1);
        bool seen = false;
        for (int k = 0; k < nsvc; k++)
            seen |= strlen(R->services[k]) == n && !memcmp(R->services[k], op->path + 1, n);
        if (!seen) {
            char *name = malloc(n + 1);
            if (!name)
                abort();
            memcpy(name, op->path + 1, n);
            name[n] = '\0';
            R->services[nsvc++] = name;
        }
    }
}

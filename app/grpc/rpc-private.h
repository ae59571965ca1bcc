/*
 * app/grpc/rpc-private.h — what the gRPC adapter's files share.
 */
#ifndef APP_GRPC_RPC_PRIVATE_H
#define APP_GRPC_RPC_PRIVATE_H

#include "app/grpc/rpc.h"

#include "bazaar.pb-c.h"

struct rpc {
    svc *s;
    const app_config *cfg;
    grpc_server *g;
    struct rpc_binding *bindings; /* one per registered row */
    const char **services;        /* for health: "bazaar.v1.UserService", ..., NULL */
};

/* The caller of a call (set by the auth interceptor). */
const svc_principal *rpc_who(grpc_call *c);
/* A svc_call for this gRPC call: its context, arena and caller. */
svc_call rpc_call(grpc_call *c);
/* Ends the call with e mapped through the one table.  Returns 0. */
int rpc_fail(grpc_call *c, const svc_err *e);
/* Receives the one request message of a unary call: 0, or -1 (finished). */
int rpc_recv1(grpc_call *c, const ProtobufCMessageDescriptor *d, ProtobufCMessage **msg);

/* model → protobuf (models.c), strings and sub-messages in the arena */
void *rpc_msg(bz_arena *a, const ProtobufCMessageDescriptor *d); /* a new, initialised message */
Google__Protobuf__Timestamp *rpc_time(bz_arena *a, int64_t unix_us);
void rpc_user(bz_arena *a, const svc_user *u, Bazaar__V1__User *out);
void rpc_item(bz_arena *a, const svc_item *it, Bazaar__V1__Item *out);
void rpc_order(bz_arena *a, const svc_order *o, Bazaar__V1__Order *out);
void rpc_account(bz_arena *a, const svc_account *ac, Bazaar__V1__Account *out);
void rpc_transfer(bz_arena *a, const svc_transfer *t, Bazaar__V1__TransferRecord *out);
void rpc_session(bz_arena *a, const svc_session *s, Bazaar__V1__Session *out);
void rpc_spender(bz_arena *a, const svc_spender *s, Bazaar__V1__Spender *out);
void rpc_event(bz_arena *a, const svc_order_event *s, Bazaar__V1__OrderEvent *out);
/* protobuf → typed input (proto3 scalars are always set) */
svc_str rpc_str(const char *s);

/* ---- the method table (methods.c) ---- */

/* What a unary row's adapter works with: the service and the call (its
 * context, arena, caller and idempotency key). */
typedef struct rpc_x {
    svc *s;
    svc_call c;
    grpc_call *call;
    /* set by a row that answers with protobuf bytes it kept (GetItem's
     * rendition) instead of a message: sent as they are */
    const void *packed;
    size_t npacked;
} rpc_x;

/* A unary row's adapter: decodes the request message into the service's
 * typed input, calls the row's ONE service function and encodes its
 * result as the response message (in the call's arena); NULL with e
 * filled when the service refused. */
typedef ProtobufCMessage *(*rpc_run)(rpc_x *x, const void *in, svc_err *e);

typedef enum { RPC_IDEM_NO, RPC_IDEM_OPT, RPC_IDEM_REQ } rpc_idem;

/* One gRPC row of app/ops.def. */
typedef struct rpc_op {
    const char *path;        /* "/bazaar.v1.UserService/GetUser" */
    rpc_run run;             /* unary: the adapter the one unary handler runs */
    grpc_fn stream;          /* streaming: the call's handler (data: the rpc) */
    bool auth;               /* an anonymous caller is refused before anything is read */
    rpc_idem idem;           /* the idempotency-key metadata is passed to the service */
    bool client_streaming, server_streaming;
} rpc_op;

extern const rpc_op rpc_ops[];
extern const int rpc_nops;
/* bazaar.proto's services, NULL-terminated (the request types come from
 * their method descriptors). */
extern const ProtobufCServiceDescriptor *const rpc_services[];
/* The method descriptor of a "/pkg.Service/Method" path, or NULL. */
const ProtobufCMethodDescriptor *rpc_method_desc(const char *path);
/* Registers every row on R->g (aborts on a row bazaar.proto lacks). */
void rpc_register(rpc *R);

/* streaming handlers, by file */
int rpc_users_list(grpc_call *c, void *data);
int rpc_items_import(grpc_call *c, void *data);
int rpc_items_lookup(grpc_call *c, void *data);
int rpc_orders_watch(grpc_call *c, void *data);

#endif

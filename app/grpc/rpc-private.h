/*
 * app/grpc/rpc-private.h — what the gRPC adapter's files share.
 */
#ifndef APP_GRPC_RPC_PRIVATE_H
#define APP_GRPC_RPC_PRIVATE_H

#include "app/grpc/rpc.h"

#include "bazaar.pb-c.h"

struct rpc {
    svc *s;
    const bz_config *cfg;
    grpc_server *g;
};

/* The caller of a call (set by the auth interceptor). */
const svc_principal *rpc_who(grpc_call *c);
/* A svc_call for this gRPC call: its context, arena and caller. */
svc_call rpc_call(grpc_call *c);
/* Ends the call with e mapped through the one table.  Returns 0. */
int rpc_fail(grpc_call *c, const svc_err *e);
/* Receives the one request message of a unary call: 0, or -1 (finished). */
int rpc_recv1(grpc_call *c, const ProtobufCMessageDescriptor *d, ProtobufCMessage **msg);

/* model → protobuf, strings and sub-messages in the arena */
Google__Protobuf__Timestamp *rpc_time(bz_arena *a, int64_t unix_us);
void rpc_user(bz_arena *a, const svc_user *u, Bazaar__V1__User *out);
void rpc_item(bz_arena *a, const svc_item *it, Bazaar__V1__Item *out);
void rpc_order(bz_arena *a, const svc_order *o, Bazaar__V1__Order *out);
/* protobuf → typed input (proto3 scalars are always set) */
svc_str rpc_str(const char *s);

/* handlers, by file */
int rpc_get_user(grpc_call *c, void *data);
int rpc_create_user(grpc_call *c, void *data);
int rpc_list_users(grpc_call *c, void *data);
int rpc_get_item(grpc_call *c, void *data);
int rpc_import_items(grpc_call *c, void *data);
int rpc_lookup_items(grpc_call *c, void *data);
int rpc_get_order(grpc_call *c, void *data);
int rpc_watch_orders(grpc_call *c, void *data);

#endif

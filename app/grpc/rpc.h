/*
 * app/grpc/rpc.h — the gRPC adapter (bazaar.proto) over the service.
 *
 * The methods are app/ops.def's gRPC rows (methods.c): each decodes its
 * protobuf request into the service's typed input, calls the same service
 * function REST calls, and encodes the result (models.c) — or maps the
 * svc_err through the one gRPC table (errors.c), with field violations as
 * google.rpc.BadRequest in grpc-status-details-bin.  Interceptors resolve
 * the caller from `authorization: Bearer` metadata once per call, apply
 * --rate-limit, and log and count every call (server.c).
 */
#ifndef APP_GRPC_RPC_H
#define APP_GRPC_RPC_H

#include "app/svc/svc.h"
#include <bazaar/grpc.h>

typedef struct rpc rpc;

/* The gRPC server with bazaar.v1's services, health, reflection and
 * grpc.testing.TestService registered.  ready(arg) says whether the
 * server can serve (health). */
rpc *rpc_new(svc *s, const app_config *cfg, grpc_serving_fn ready, void *ready_arg);
grpc_server *rpc_server(rpc *R);
void rpc_free(rpc *R);

#endif

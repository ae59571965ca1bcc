/* app/ops.c — the operation index, expanded from app/ops.def. */
#include "app/ops.h"

#include "app/svc/svc.h"

#include <stddef.h>

#define X__AUTH_PUBLIC false
#define X__AUTH_AUTH true
#define X__REST_REST(p) p
#define X__REST_REST_STREAM(p) p
#define X__REST_NO_REST(p) NULL
#define X__GRPC_UNARY(m) "/bazaar.v1." m
#define X__GRPC_SERVER_STREAM(m) "/bazaar.v1." m
#define X__GRPC_CLIENT_STREAM(m) "/bazaar.v1." m
#define X__GRPC_BIDI(m) "/bazaar.v1." m
#define X__GRPC_NO_GRPC(m) NULL
#define OP(id, svc_fn, auth, idem, rkind, pattern, fn, gkind, gmethod, summary, req, resp, codes)                     \
    {#id, #svc_fn, (void (*)(void))svc_fn, X__AUTH_##auth, APP_##idem, X__REST_##rkind(pattern),                       \
     X__GRPC_##gkind(gmethod)},

const app_op app_ops[] = {
#include "app/ops.def"
};
const int app_nops = sizeof app_ops / sizeof app_ops[0];

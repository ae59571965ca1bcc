/*
 * tests/deploy/describe/describe.c — serves reflection for the services of
 * rich.proto and legacy.proto, registered with grpc_server_add_service and
 * described from their protoc-c descriptors (no descriptor set), so the
 * test can compare the description with protoc's own.  Built out of tree
 * against the installed library, like the examples; the lifecycle's
 * standard flags (--http-addr, --grpc-addr).  Its own gRPC server, with
 * health reporting every registered service (the NULL list).
 */
#include <bazaar/grpc.h>
#include <bazaar/service.h>

#include "legacy.pb-c.h"
#include "rich.pb-c.h"

static int unimplemented(grpc_call *c, void *data) { return grpc_finish(c, GRPC_UNIMPLEMENTED, "only described"); }

static const grpc_handler kitchen[] = {
    {"Get", .fn = unimplemented},
    {"List", .fn = unimplemented, .server_streaming = true},
    {"Upload", .fn = unimplemented, .client_streaming = true},
    {"Chat", .fn = unimplemented, .client_streaming = true, .server_streaming = true},
    {0},
};
static const grpc_handler admin[] = {{"Apply", .fn = unimplemented}, {0}};

int main(int argc, char **argv)
{
    bazaar_service *s = bazaar_new("describe", argc, argv, NULL, 0);
    grpc_server *g = grpc_server_new(&(grpc_opts){0});
    if (grpc_server_add_service(g, &describe__v3__kitchen__descriptor, kitchen, NULL) != 0 ||
        grpc_server_add_service(g, &describe__v2__admin__descriptor, admin, NULL) != 0)
        return 1;
    grpc_health_register(g, NULL, bazaar_ready, s);
    grpc_reflection_register(g);
    bazaar_set_grpc(s, g);
    int rc = bazaar_run(s);
    grpc_server_free(g);
    return rc;
}

/*
 * tests/deploy/describe/describe.c — serves reflection for the services of
 * rich.proto and legacy.proto, registered with grpc_server_add_service and
 * described from their protoc-c descriptors (no descriptor set), so the
 * test can compare the description with protoc's own.  Built out of tree
 * against the installed library, like the examples.
 *
 *     describe --http-addr 127.0.0.1:PORT
 */
#include <bazaar/grpc.h>
#include <bazaar/http.h>
#include <bazaar/rt.h>

#include "legacy.pb-c.h"
#include "rich.pb-c.h"

#include <stdio.h>
#include <string.h>

static int unimplemented(grpc_call *c, void *data) { return grpc_finish(c, GRPC_UNIMPLEMENTED, "only described"); }

static const grpc_handler kitchen[] = {
    {"Get", .fn = unimplemented},
    {"List", .fn = unimplemented, .server_streaming = true},
    {"Upload", .fn = unimplemented, .client_streaming = true},
    {"Chat", .fn = unimplemented, .client_streaming = true, .server_streaming = true},
    {0},
};
static const grpc_handler admin[] = {{"Apply", .fn = unimplemented}, {0}};

static void serve(void *arg)
{
    grpc_server *g = grpc_server_new(&(grpc_opts){0});
    if (grpc_server_add_service(g, &describe__v3__kitchen__descriptor, kitchen, NULL) != 0 ||
        grpc_server_add_service(g, &describe__v2__admin__descriptor, admin, NULL) != 0)
        return;
    grpc_reflection_register(g);
    http_server_opts o = {.addr = arg,
                          .read_header_timeout_ns = 5 * BZ_NS_PER_S,
                          .read_timeout_ns = 15 * BZ_NS_PER_S,
                          .write_timeout_ns = 15 * BZ_NS_PER_S,
                          .idle_timeout_ns = 60 * BZ_NS_PER_S,
                          .shutdown_grace_ns = 2 * BZ_NS_PER_S,
                          .max_header_bytes = 16 << 10,
                          .max_body_bytes = 1 << 20};
    int e = 0;
    http_server *s = http_server_new(&o, grpc_http_handler(g), &e);
    if (s) {
        http_server_serve(s);
        http_server_free(s);
    } else {
        fprintf(stderr, "describe: cannot listen on %s: %d\n", (const char *)arg, e);
    }
    grpc_server_free(g);
}

int main(int argc, char **argv)
{
    if (argc != 3 || strcmp(argv[1], "--http-addr")) {
        fprintf(stderr, "usage: describe --http-addr HOST:PORT\n");
        return 2;
    }
    return rt_run(&(rt_options){.threads = 1, .handle_signals = true}, serve, argv[2]) ? 1 : 0;
}

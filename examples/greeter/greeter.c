/*
 * examples/greeter — a gRPC service from its own greeter.proto, with the
 * client's deadline honoured and reflection describing it.
 *
 *     make && ./greeter --http-addr 127.0.0.1:50051
 *     grpcurl -plaintext 127.0.0.1:50051 describe helloworld.Greeter
 *     grpcurl -plaintext -max-time 0.2 -d '{"name":"you","delay_ms":1000}' 127.0.0.1:50051 helloworld.Greeter/SayHello
 *     curl 127.0.0.1:50051/healthz
 *
 * gRPC (HTTP/2 cleartext, and gRPC-Web) and plain HTTP share one address.
 */
#include <bazaar/grpc.h>
#include <bazaar/http.h>
#include <bazaar/log.h>
#include <bazaar/rt.h>

#include "greeter.pb-c.h"

#include <stdio.h>
#include <string.h>

/* Waits delay_ms on the call's context: a client's deadline or cancel
 * ends the wait (and the call: DEADLINE_EXCEEDED or CANCELLED). */
static int wait_ms(grpc_call *c, int32_t ms) { return ms > 0 ? rt_sleep(grpc_ctx(c), ms * BZ_NS_PER_MS) : 0; }

static int say_hello(grpc_call *c, const ProtobufCMessage *in, ProtobufCMessage *out, void *data)
{
    const Helloworld__HelloRequest *req = (const void *)in;
    Helloworld__HelloReply *rep = (void *)out;
    if (!*req->name)
        return grpc_finish(c, GRPC_INVALID_ARGUMENT, "name is required");
    int e = wait_ms(c, req->delay_ms);
    if (e)
        return e;
    rep->message = bz_arena_printf(grpc_arena(c), "Hello, %s!", req->name);
    return 0;
}

static int say_hellos(grpc_call *c, void *data)
{
    Helloworld__HelloRequest *req;
    if (grpc_recv(c, &helloworld__hello_request__descriptor, (ProtobufCMessage **)&req) != 0)
        return 0; /* the status is set */
    for (int i = 1; i <= req->count; i++) {
        int e = wait_ms(c, req->delay_ms);
        if (e)
            return e;
        Helloworld__HelloReply rep = HELLOWORLD__HELLO_REPLY__INIT;
        rep.message = bz_arena_printf(grpc_arena(c), "Hello #%d, %s!", i, req->name);
        if (grpc_send(c, &rep.base) != 0)
            return 0;
    }
    return grpc_finish(c, GRPC_OK, NULL);
}

static const grpc_handler greeter[] = {
    {"SayHello", .unary = say_hello},
    {"SayHellos", .fn = say_hellos, .server_streaming = true},
    {0},
};

static bool serving(void *arg, rt_ctx *ctx) { return !rt_ctx_err(rt_shutdown_ctx()); }

static int healthz(http_req *r, void *data)
{
    return http_send(r, 200, "application/json", "{\"status\":\"ok\"}\n", 16);
}

/* gRPC by content type (or a POST to one of its paths), the rest by route. */
typedef struct {
    grpc_server *g;
    http_handler grpc, rest;
} both;

static int route(http_req *r, void *data)
{
    both *b = data;
    http_handler h = grpc_serves(b->g, r) ? b->grpc : b->rest;
    return h.fn(r, h.data);
}

static void serve(void *arg)
{
    const char *addr = arg;
    grpc_server *g = grpc_server_new(&(grpc_opts){0});
    if (grpc_server_add_service(g, &helloworld__greeter__descriptor, greeter, NULL) != 0)
        return;
    grpc_health_register(g, NULL, serving, NULL); /* NULL: the services registered on g */
    grpc_reflection_register(g);
    http_mux *mux = http_mux_new();
    char err[128];
    http_mux_handle(mux, "GET /healthz", (http_handler){healthz, NULL}, err, sizeof err);
    both b = {g, grpc_http_handler(g), http_mux_handler(mux)};
    int e = 0;
    http_server_opts o = {.addr = addr,
                          .read_header_timeout_ns = 5 * BZ_NS_PER_S,
                          .read_timeout_ns = 15 * BZ_NS_PER_S,
                          .write_timeout_ns = 30 * BZ_NS_PER_S,
                          .idle_timeout_ns = 60 * BZ_NS_PER_S,
                          .shutdown_grace_ns = 10 * BZ_NS_PER_S,
                          .max_header_bytes = 16 << 10,
                          .max_body_bytes = 1 << 20};
    http_server *s = http_server_new(&o, (http_handler){route, &b}, &e);
    if (s) {
        bz_log_info("listening", BZ_F_STR("http_addr", addr), BZ_F_INT("port", http_server_port(s)));
        http_server_serve(s); /* until SIGTERM/SIGINT, then drains */
        http_server_free(s);
    } else {
        bz_log_err("cannot listen", BZ_F_STR("addr", addr), BZ_F_INT("error", e));
    }
    http_mux_free(mux);
    grpc_server_free(g);
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:50051";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--http-addr") && i + 1 < argc)
            addr = argv[++i];
        else if (!strncmp(argv[i], "--http-addr=", 12))
            addr = argv[i] + 12;
        else {
            fprintf(stderr, "usage: greeter [--http-addr HOST:PORT]\n");
            return 2;
        }
    }
    return rt_run(&(rt_options){.threads = 1, .handle_signals = true}, serve, (void *)addr) ? 1 : 0;
}

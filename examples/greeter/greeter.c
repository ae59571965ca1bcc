/*
 * examples/greeter — a gRPC service from its own greeter.proto, with the
 * client's deadline honoured and reflection describing it.
 *
 *     make && ./greeter --http-addr 127.0.0.1:8080 --grpc-addr 127.0.0.1:9090
 *     grpcurl -plaintext 127.0.0.1:9090 describe helloworld.Greeter
 *     grpcurl -plaintext -max-time 0.2 -d '{"name":"you","delay_ms":1000}' 127.0.0.1:9090 helloworld.Greeter/SayHello
 *     curl 127.0.0.1:8080/healthz
 *
 * The lifecycle (<bazaar/service.h>) serves gRPC on --grpc-addr and, by
 * content type, on --http-addr beside /healthz, with health and reflection.
 */
#include <bazaar/grpc.h>
#include <bazaar/rt.h>
#include <bazaar/service.h>

#include "greeter.pb-c.h"

/* Waits delay_ms on the call's context: the client's deadline or cancel
 * ends the wait, and the call (DEADLINE_EXCEEDED, CANCELLED). */
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
    return 0; /* rep goes out with OK */
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

int main(int argc, char **argv)
{
    bazaar_service *s = bazaar_new("greeter", argc, argv, NULL, 0);
    if (grpc_server_add_service(bazaar_grpc(s), &helloworld__greeter__descriptor, greeter, NULL) != 0)
        return 1;
    return bazaar_run(s);
}

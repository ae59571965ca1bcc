/* tests/fuzz/fuzz_grpc.c — libFuzzer target for gRPC request bytes: the
 * 5-byte message framing (with gzip-compressed messages), the protobuf
 * decoding of every request message the server accepts, grpc-timeout,
 * and base64 (grpc-web-text, -bin metadata).  The first byte picks the
 * message type and options; the rest is the request body. */
#include "grpc/grpc-private.h"

#include "bazaar.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "grpc/testing/messages.pb-c.h"

#include <string.h>

static const ProtobufCMessageDescriptor *const requests[] = {
    &bazaar__v1__get_user_request__descriptor,
    &bazaar__v1__create_user_request__descriptor,
    &bazaar__v1__list_users_request__descriptor,
    &bazaar__v1__get_item_request__descriptor,
    &bazaar__v1__new_item__descriptor,
    &bazaar__v1__get_order_request__descriptor,
    &bazaar__v1__watch_orders_request__descriptor,
    &grpc__health__v1__health_check_request__descriptor,
    &grpc__reflection__v1__server_reflection_request__descriptor,
    &grpc__reflection__v1alpha__server_reflection_request__descriptor,
    &grpc__testing__simple_request__descriptor,
    &grpc__testing__streaming_output_call_request__descriptor,
    &grpc__testing__streaming_input_call_request__descriptor,
};
#define NREQ (sizeof requests / sizeof requests[0])

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    uint8_t sel = data[0];
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    static grpc_server *g;
    if (!g)
        g = grpc_server_new(&(grpc_opts){.max_recv_bytes = 16384});
    bz_arena arena;
    bz_arena_init(&arena, 4096);
    http_req r;
    memset(&r, 0, sizeof r);
    r.arena = &arena;
    grpc_call c;
    rt_ctx ctx; /* the call runs on its request's context */
    rt_ctx_init(&ctx, NULL);
    r.ctx = &ctx;
    grpc__call_init(&c, g, &r, NULL, GRPC_MODE_NATIVE);
    c.req_gzip = sel & 0x80;
    c.eos = true; /* the whole body is already here */
    bz_buf_append(&c.in, d, n);
    const ProtobufCMessageDescriptor *desc = requests[(sel & 0x7f) % NREQ];
    for (int i = 0; i < 64; i++) {
        ProtobufCMessage *m;
        if (grpc_recv(&c, desc, &m) != 0)
            break;
    }
    /* the same bytes as the other notations the server parses */
    int64_t ns;
    grpc_parse_timeout(bz_str_make((const char *)d, n < 16 ? n : 16), &ns);
    bz_buf b = BZ_BUF_INIT;
    grpc__b64_decode((const char *)d, n, &b);
    bz_buf_free(&b);
    bz_buf_free(&c.in);
    bz_buf_free(&c.text);
    bz_buf_free(&c.out);
    rt_ctx_release(&ctx);
    bz_arena_free(&arena);
    return 0;
}

/* grpc/testing.c — grpc.testing.TestService (grpc's test.proto), the
 * server side of grpc's interop test cases
 * (grpc/doc/interop-test-descriptions.md): EmptyCall, UnaryCall,
 * CacheableUnaryCall, StreamingOutputCall, StreamingInputCall,
 * FullDuplexCall, HalfDuplexCall, UnimplementedCall; the server features
 * Echo Status, Echo Metadata, CompressedResponse, CompressedRequest and
 * ResponseParameters.interval_us.
 *
 * A client chooses how much the server sends, so every size is bounded: a
 * payload is at most TS_MAX_SIZE bytes, a request names at most
 * TS_MAX_PARAMS responses, and one call sends at most TS_MAX_CALL_BYTES of
 * payload (grpc_send packs each large message into the call's arena, so
 * this also bounds the arena).  Request messages of the streaming methods
 * are received into a scratch arena reset after each one. */
#include "grpc/grpc-private.h"

#include <bazaar/clock.h>

#include "grpc/testing/empty.pb-c.h"
#include "grpc/testing/messages.pb-c.h"

#include <errno.h>
#include <string.h>

#define TS_MAX_SIZE (4 << 20)        /* one response payload */
#define TS_MAX_PARAMS 1024           /* response_parameters in one request (or buffered by HalfDuplexCall) */
#define TS_MAX_CALL_BYTES (16 << 20) /* payload bytes one call sends */
#define TS_SCRATCH_CHUNK 16384

/* The bytes of every payload: zeros, never written, so the pages stay
 * the kernel's shared zero page however many calls read them. */
static uint8_t zeros[TS_MAX_SIZE];

/* What one call has sent so far. */
typedef struct {
    int64_t bytes;
    bool gzip_declared; /* the response headers said grpc-encoding: gzip */
    bool base_compress; /* compression before any request asked otherwise */
} ts_call;

static void ts_call_init(ts_call *t, grpc_call *c)
{
    t->bytes = 0;
    t->gzip_declared = false;
    t->base_compress = c->compress;
}

/* Ends the call after a send or a wait failed: the deadline, or the
 * client went away. */
static int ended(grpc_call *c)
{
    if (grpc_finished(c))
        return 0;
    if (rt_ctx_err(grpc_ctx(c)) == ETIMEDOUT)
        return grpc_finish(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
    return grpc_finish(c, GRPC_CANCELLED, "the call was cancelled");
}

/* ---- Echo Metadata ---- */

static void echo_metadata(grpc_call *c)
{
    bz_str v = grpc_metadata(c, "x-grpc-test-echo-initial");
    if (v.p)
        grpc_add_header(c, "x-grpc-test-echo-initial", bz_arena_strndup(grpc_arena(c), v.p, v.n));
    const uint8_t *b;
    size_t n;
    if (grpc_metadata_bin(c, "x-grpc-test-echo-trailing-bin", &b, &n))
        grpc_add_trailer_bin(c, "x-grpc-test-echo-trailing-bin", b, n);
}

/* ---- Echo Status ---- */

/* Finishes with the status a request asks for (a non-OK code); true if it
 * did.  Codes outside gRPC's range become UNKNOWN, as a client reads them. */
static bool echo_status(grpc_call *c, const Grpc__Testing__EchoStatus *st)
{
    if (!st || st->code == 0)
        return false;
    grpc_code code = st->code > 0 && st->code < GRPC_CODE__COUNT ? (grpc_code)st->code : GRPC_UNKNOWN;
    grpc_finish(c, code, "%s", st->message ? st->message : "");
    return true;
}

/* ---- CompressedRequest ---- */

/* Receives one request and says whether its frame came compressed. */
static int recv_flagged(grpc_call *c, const ProtobufCMessageDescriptor *d, bz_arena *a,
                        ProtobufCMessage **msg, bool *compressed)
{
    int rc = grpc_recv_in(c, d, a, msg);
    *compressed = rc == 0 && grpc_recv_was_compressed(c);
    return rc;
}

/* The CompressedRequest feature: expect_compressed, when present, says
 * whether the message must have come compressed.  False if the call was
 * finished with INVALID_ARGUMENT. */
static bool check_compressed(grpc_call *c, const Grpc__Testing__BoolValue *expect, bool compressed)
{
    if (!expect || expect->value == compressed)
        return true;
    grpc_finish(c, GRPC_INVALID_ARGUMENT,
                expect->value ? "expected a compressed request message, got an uncompressed one"
                              : "expected an uncompressed request message, got a compressed one");
    return false;
}

/* ---- responses ---- */

static bool response_type_ok(grpc_call *c, Grpc__Testing__PayloadType t)
{
    if (t == GRPC__TESTING__PAYLOAD_TYPE__COMPRESSABLE)
        return true;
    grpc_finish(c, GRPC_INVALID_ARGUMENT, "payload type %d is not supported (only COMPRESSABLE)", (int)t);
    return false;
}

/* A payload size a client asked for: 0..TS_MAX_SIZE, and within what the
 * call may still send.  False if the call was finished. */
static bool size_ok(grpc_call *c, const ts_call *t, int64_t size, int64_t *planned)
{
    if (size < 0 || size > TS_MAX_SIZE) {
        grpc_finish(c, GRPC_INVALID_ARGUMENT, "response size %lld is outside 0..%d", (long long)size,
                    TS_MAX_SIZE);
        return false;
    }
    *planned += size;
    if (t->bytes + *planned > TS_MAX_CALL_BYTES) {
        grpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "a call may send at most %d payload bytes",
                    TS_MAX_CALL_BYTES);
        return false;
    }
    return true;
}

static void payload_of(Grpc__Testing__Payload *p, int32_t size)
{
    grpc__testing__payload__init(p);
    p->type = GRPC__TESTING__PAYLOAD_TYPE__COMPRESSABLE;
    p->body.data = zeros;
    p->body.len = (size_t)size;
}

/* One ResponseParameters, copied out of a request (HalfDuplexCall keeps
 * them past the request's arena). */
typedef struct {
    int32_t size, interval_us;
    int8_t compressed; /* -1 unset, 0, 1 */
} ts_param;

static ts_param param_of(const Grpc__Testing__ResponseParameters *p)
{
    return (ts_param){p->size, p->interval_us, (int8_t)(p->compressed ? p->compressed->value : -1)};
}

/* Checks a request's response parameters against the limits before any
 * of them is answered.  False if the call was finished. */
static bool params_ok(grpc_call *c, const ts_call *t, const Grpc__Testing__StreamingOutputCallRequest *in)
{
    if (!response_type_ok(c, in->response_type))
        return false;
    if (in->n_response_parameters > TS_MAX_PARAMS) {
        grpc_finish(c, GRPC_INVALID_ARGUMENT, "at most %d response_parameters", TS_MAX_PARAMS);
        return false;
    }
    int64_t planned = 0;
    for (size_t i = 0; i < in->n_response_parameters; i++)
        if (!size_ok(c, t, in->response_parameters[i]->size, &planned))
            return false;
    return true;
}

/* Sends one StreamingOutputCallResponse after its interval.  A message
 * that asks for compression gets it if the response headers could still
 * declare gzip (or did); one that asks for none is sent plain.  0, or -1
 * when the call has ended (finished here). */
static int send_param(grpc_call *c, ts_call *t, ts_param p)
{
    if (p.interval_us > 0 && rt_sleep(grpc_ctx(c), (int64_t)p.interval_us * BZ_NS_PER_US) != 0) {
        ended(c);
        return -1;
    }
    bool want = p.compressed < 0 ? t->base_compress : p.compressed == 1;
    if (!c->headers_sent) {
        grpc_set_compress(c, want);
        t->gzip_declared = c->compress;
    } else {
        grpc_set_compress(c, want && t->gzip_declared);
    }
    Grpc__Testing__Payload pl;
    payload_of(&pl, p.size);
    Grpc__Testing__StreamingOutputCallResponse out = GRPC__TESTING__STREAMING_OUTPUT_CALL_RESPONSE__INIT;
    out.payload = &pl;
    if (grpc_send(c, &out.base) != 0) {
        ended(c);
        return -1;
    }
    t->bytes += p.size;
    return 0;
}

/* Declares gzip in the response headers now if any of a stream's first
 * responses asks for compression, so later messages may use it. */
static void declare_gzip(grpc_call *c, ts_call *t, const Grpc__Testing__StreamingOutputCallRequest *in)
{
    if (c->headers_sent)
        return;
    for (size_t i = 0; i < in->n_response_parameters; i++) {
        const Grpc__Testing__BoolValue *z = in->response_parameters[i]->compressed;
        if (z && z->value) {
            grpc_set_compress(c, true);
            t->gzip_declared = c->compress;
            if (grpc_send_headers(c) != 0)
                ended(c);
            return;
        }
    }
}

/* Answers one request's response parameters in order.  0, or -1 when the
 * call has ended. */
static int answer(grpc_call *c, ts_call *t, const Grpc__Testing__StreamingOutputCallRequest *in)
{
    declare_gzip(c, t, in);
    for (size_t i = 0; i < in->n_response_parameters && !grpc_finished(c); i++)
        if (send_param(c, t, param_of(in->response_parameters[i])) != 0)
            return -1;
    return grpc_finished(c) ? -1 : 0;
}

/* ---- the methods ---- */

static int empty_call(grpc_call *c, void *data)
{
    (void)data;
    echo_metadata(c);
    Grpc__Testing__Empty *in;
    int rc = grpc_recv(c, &grpc__testing__empty__descriptor, (ProtobufCMessage **)&in);
    if (rc != 0)
        return grpc_finished(c) ? 0 : grpc_finish(c, GRPC_INVALID_ARGUMENT, "an Empty request is required");
    Grpc__Testing__Empty out = GRPC__TESTING__EMPTY__INIT;
    if (grpc_send(c, &out.base) != 0)
        return ended(c);
    return grpc_finish(c, GRPC_OK, NULL);
}

/* UnaryCall and CacheableUnaryCall. */
static int unary_call(grpc_call *c, void *data)
{
    (void)data;
    echo_metadata(c);
    Grpc__Testing__SimpleRequest *in;
    bool compressed;
    int rc = recv_flagged(c, &grpc__testing__simple_request__descriptor, grpc_arena(c),
                          (ProtobufCMessage **)&in, &compressed);
    if (rc != 0)
        return grpc_finished(c) ? 0 : grpc_finish(c, GRPC_INVALID_ARGUMENT, "a SimpleRequest is required");
    if (!check_compressed(c, in->expect_compressed, compressed))
        return 0;
    if (echo_status(c, in->response_status))
        return 0;
    if (!response_type_ok(c, in->response_type))
        return 0;
    ts_call t;
    ts_call_init(&t, c);
    int64_t planned = 0;
    if (!size_ok(c, &t, in->response_size, &planned))
        return 0;
    if (in->response_compressed)
        grpc_set_compress(c, in->response_compressed->value);
    Grpc__Testing__Payload pl;
    payload_of(&pl, in->response_size);
    Grpc__Testing__SimpleResponse out = GRPC__TESTING__SIMPLE_RESPONSE__INIT;
    out.payload = &pl;
    if (grpc_send(c, &out.base) != 0)
        return ended(c);
    return grpc_finish(c, GRPC_OK, NULL);
}

/* One response per ResponseParameters, then OK (or the status the request
 * asks for, after the responses). */
static int streaming_output_call(grpc_call *c, void *data)
{
    (void)data;
    echo_metadata(c);
    Grpc__Testing__StreamingOutputCallRequest *in;
    int rc =
        grpc_recv(c, &grpc__testing__streaming_output_call_request__descriptor, (ProtobufCMessage **)&in);
    if (rc != 0)
        return grpc_finished(c)
                   ? 0
                   : grpc_finish(c, GRPC_INVALID_ARGUMENT, "a StreamingOutputCallRequest is required");
    ts_call t;
    ts_call_init(&t, c);
    if (!params_ok(c, &t, in))
        return 0;
    if (answer(c, &t, in) != 0)
        return 0;
    if (echo_status(c, in->response_status))
        return 0;
    return grpc_finish(c, GRPC_OK, NULL);
}

static int streaming_input(grpc_call *c, bz_arena *scratch)
{
    int64_t sum = 0;
    for (;;) {
        bz_arena_reset(scratch);
        Grpc__Testing__StreamingInputCallRequest *in;
        bool compressed;
        int rc = recv_flagged(c, &grpc__testing__streaming_input_call_request__descriptor, scratch,
                              (ProtobufCMessage **)&in, &compressed);
        if (rc < 0)
            return 0;
        if (rc == 1)
            break;
        if (!check_compressed(c, in->expect_compressed, compressed))
            return 0;
        if (in->payload)
            sum += (int64_t)in->payload->body.len;
        if (sum > INT32_MAX)
            return grpc_finish(c, GRPC_OUT_OF_RANGE, "the aggregated payload size does not fit an int32");
    }
    Grpc__Testing__StreamingInputCallResponse out = GRPC__TESTING__STREAMING_INPUT_CALL_RESPONSE__INIT;
    out.aggregated_payload_size = (int32_t)sum;
    if (grpc_send(c, &out.base) != 0)
        return ended(c);
    return grpc_finish(c, GRPC_OK, NULL);
}

static int streaming_input_call(grpc_call *c, void *data)
{
    (void)data;
    echo_metadata(c);
    bz_arena scratch;
    bz_arena_init(&scratch, TS_SCRATCH_CHUNK);
    int rc = streaming_input(c, &scratch);
    bz_arena_free(&scratch);
    return rc;
}

/* Ping-pong: each request answered as it arrives. */
static int full_duplex(grpc_call *c, bz_arena *scratch)
{
    ts_call t;
    ts_call_init(&t, c);
    for (;;) {
        bz_arena_reset(scratch);
        Grpc__Testing__StreamingOutputCallRequest *in;
        int rc = grpc_recv_in(c, &grpc__testing__streaming_output_call_request__descriptor, scratch,
                              (ProtobufCMessage **)&in);
        if (rc < 0)
            return 0;
        if (rc == 1)
            break;
        if (echo_status(c, in->response_status))
            return 0;
        if (!params_ok(c, &t, in) || answer(c, &t, in) != 0)
            return 0;
    }
    return grpc_finish(c, GRPC_OK, NULL);
}

/* All requests first, then every response after the client half-closes. */
static int half_duplex(grpc_call *c, bz_arena *scratch)
{
    ts_call t;
    ts_call_init(&t, c);
    ts_param *ps = bz_arena_alloc(grpc_arena(c), TS_MAX_PARAMS * sizeof *ps);
    size_t n = 0;
    int64_t planned = 0;
    bool want_gzip = false;
    for (;;) {
        bz_arena_reset(scratch);
        Grpc__Testing__StreamingOutputCallRequest *in;
        int rc = grpc_recv_in(c, &grpc__testing__streaming_output_call_request__descriptor, scratch,
                              (ProtobufCMessage **)&in);
        if (rc < 0)
            return 0;
        if (rc == 1)
            break;
        if (echo_status(c, in->response_status))
            return 0;
        if (!response_type_ok(c, in->response_type))
            return 0;
        if (in->n_response_parameters > TS_MAX_PARAMS - n)
            return grpc_finish(c, GRPC_INVALID_ARGUMENT, "at most %d response_parameters in a call",
                               TS_MAX_PARAMS);
        for (size_t i = 0; i < in->n_response_parameters; i++) {
            if (!size_ok(c, &t, in->response_parameters[i]->size, &planned))
                return 0;
            ps[n] = param_of(in->response_parameters[i]);
            want_gzip |= ps[n].compressed == 1;
            n++;
        }
    }
    if (want_gzip) {
        grpc_set_compress(c, true);
        t.gzip_declared = c->compress;
        if (grpc_send_headers(c) != 0)
            return ended(c);
    }
    for (size_t i = 0; i < n; i++)
        if (send_param(c, &t, ps[i]) != 0)
            return 0;
    return grpc_finish(c, GRPC_OK, NULL);
}

static int full_duplex_call(grpc_call *c, void *data)
{
    (void)data;
    echo_metadata(c);
    bz_arena scratch;
    bz_arena_init(&scratch, TS_SCRATCH_CHUNK);
    int rc = full_duplex(c, &scratch);
    bz_arena_free(&scratch);
    return rc;
}

static int half_duplex_call(grpc_call *c, void *data)
{
    (void)data;
    echo_metadata(c);
    bz_arena scratch;
    bz_arena_init(&scratch, TS_SCRATCH_CHUNK);
    int rc = half_duplex(c, &scratch);
    bz_arena_free(&scratch);
    return rc;
}

/* Declared by test.proto, left unimplemented on purpose (the
 * unimplemented_method case). */
static int unimplemented_call(grpc_call *c, void *data)
{
    (void)data;
    return grpc_finish(c, GRPC_UNIMPLEMENTED,
                       "grpc.testing.TestService/UnimplementedCall is not implemented");
}

void grpc_testing_register(grpc_server *g)
{
    static const grpc_method ms[] = {
        {"/grpc.testing.TestService/EmptyCall", empty_call, NULL, false, false},
        {"/grpc.testing.TestService/UnaryCall", unary_call, NULL, false, false},
        {"/grpc.testing.TestService/CacheableUnaryCall", unary_call, NULL, false, false},
        {"/grpc.testing.TestService/StreamingOutputCall", streaming_output_call, NULL, false, true},
        {"/grpc.testing.TestService/StreamingInputCall", streaming_input_call, NULL, true, false},
        {"/grpc.testing.TestService/FullDuplexCall", full_duplex_call, NULL, true, true},
        {"/grpc.testing.TestService/HalfDuplexCall", half_duplex_call, NULL, true, true},
        {"/grpc.testing.TestService/UnimplementedCall", unimplemented_call, NULL, false, false},
    };
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        grpc_server_add(g, &ms[i]);
}

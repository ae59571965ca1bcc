/*
 * grpc/grpc.h — gRPC over the HTTP layer (HTTP/2 streams, and gRPC-Web
 * over HTTP/1.1 or HTTP/2), with protobuf-c messages.
 *
 *     // a unary method of a protoc-c service, typed
 *     static int say_hello(grpc_call *c, const ProtobufCMessage *in, ProtobufCMessage *out, void *data) {
 *         const Helloworld__HelloRequest *req = (const void *)in;
 *         Helloworld__HelloReply *rep = (void *)out;
 *         rep->message = bz_arena_printf(grpc_arena(c), "Hello, %s", req->name);
 *         return 0;                           // sends rep with OK
 *     }
 *     grpc_server *g = grpc_server_new(&opts);
 *     grpc_server_add_service(g, &helloworld__greeter__descriptor,
 *                             (const grpc_handler[]){{"SayHello", .unary = say_hello}, {0}}, NULL);
 *     grpc_reflection_register(g);
 *     http_mux_handle(mux, "POST /", grpc_http_handler(g), err, sizeof err);
 *
 *     // any method, by path, reading and writing the stream itself
 *     static int list(grpc_call *c, void *data) {
 *         Pkg__ListRequest *in;
 *         if (grpc_recv(c, &pkg__list_request__descriptor, (ProtobufCMessage **)&in) != 0)
 *             return 0;                       // status already set
 *         for (...) grpc_send(c, &item.base);
 *         return grpc_finish(c, GRPC_OK, NULL);
 *     }
 *     grpc_server_add(g, &(grpc_method){"/pkg.Things/List", list, NULL, .server_streaming = true});
 *
 * A call runs on the stream's coroutine, like any HTTP handler: it reads
 * request messages as they arrive (grpc_recv parks), writes response
 * messages as it makes them (grpc_send parks while the client's window is
 * shut, so a client that stops reading costs bounded memory), and ends
 * with a status (grpc_finish; a handler that returns without one ends
 * with OK, or INTERNAL if it returned an error).
 *
 * The call's context carries the client's deadline (grpc-timeout) and is
 * cancelled when the client resets the stream or goes away, so every
 * database and cache call made for it is bounded and cancelled with it.
 *
 * Wire details handled here: the 5-byte message framing, grpc-encoding
 * gzip both ways (grpc-accept-encoding), --grpc-max-recv-bytes
 * (RESOURCE_EXHAUSTED), grpc-status / grpc-message (percent-encoded) /
 * grpc-status-details-bin trailers, trailers-only responses, -bin metadata
 * (base64), unknown methods (UNIMPLEMENTED), and gRPC-Web
 * (application/grpc-web[+proto] and -text base64, trailers in a final
 * body frame, CORS preflight for the allowed origins).
 */
#ifndef GRPC_GRPC_H
#define GRPC_GRPC_H

#include <bazaar/http.h>

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>

#pragma GCC visibility push(default)

typedef enum grpc_code {
    GRPC_OK = 0,
    GRPC_CANCELLED = 1,
    GRPC_UNKNOWN = 2,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_NOT_FOUND = 5,
    GRPC_ALREADY_EXISTS = 6,
    GRPC_PERMISSION_DENIED = 7,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_FAILED_PRECONDITION = 9,
    GRPC_ABORTED = 10,
    GRPC_OUT_OF_RANGE = 11,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
    GRPC_DATA_LOSS = 15,
    GRPC_UNAUTHENTICATED = 16,
    GRPC_CODE__COUNT
} grpc_code;

/* "OK", "NOT_FOUND", ... */
const char *grpc_code_name(grpc_code c);

typedef struct grpc_call grpc_call;
typedef struct grpc_server grpc_server;

/* A method handler.  Returns 0 (the status is what grpc_finish set, or
 * OK), or a negative errno (INTERNAL, logged) if nothing was finished. */
typedef int (*grpc_fn)(grpc_call *c, void *data);

typedef struct grpc_method {
    const char *path;          /* "/package.Service/Method" */
    grpc_fn fn;
    void *data;
    bool client_streaming;     /* for metrics and docs; the handler decides how much it reads */
    bool server_streaming;
} grpc_method;

/* Interceptors: run around every call, outermost first (grpc_observe is
 * the library's: request id, access log, metrics, recovery; auth and rate
 * limit are the application's). */
typedef int (*grpc_interceptor)(grpc_call *c, const grpc_method *m, void *data,
                                int (*next)(grpc_call *c, const grpc_method *m));

typedef struct grpc_opts {
    int64_t max_recv_bytes;        /* larger request message → RESOURCE_EXHAUSTED (0 = 4 MiB) */
    int64_t max_send_bytes;        /* 0 = no limit */
    const char *web_origins;       /* gRPC-Web CORS: comma list, "*" for any, NULL/"" none */
    int64_t unary_timeout_ns;      /* a unary call's deadline at most this (0 = the client's only) */
} grpc_opts;

grpc_server *grpc_server_new(const grpc_opts *o);
void grpc_server_free(grpc_server *g);
/* Registers a method (m is copied; its path must be unique).  0 or -1. */
int grpc_server_add(grpc_server *g, const grpc_method *m);

/* ---- a service from protoc-c ------------------------------------------------------------ */

/* A typed unary handler: in is the request message (the method's input
 * type, decoded in the call's arena), out an initialised response message
 * of its output type (in the arena too).  Returning 0 sends out with OK,
 * unless the handler ended the call itself (return grpc_finish(c,
 * GRPC_NOT_FOUND, ...)): then out is not sent.  A negative errno is
 * INTERNAL.  A call without its one request message never reaches it. */
typedef int (*grpc_unary_fn)(grpc_call *c, const ProtobufCMessage *in, ProtobufCMessage *out, void *data);

/* One method's implementation, by its name in the .proto.  Set unary for
 * a unary method, or fn for any method (the handler reads and writes the
 * stream itself).  The streaming flags say what the .proto says
 * (protobuf-c's descriptors do not carry them): the server enforces one
 * request message on a method that is not client-streaming, and
 * reflection tells clients how to call it. */
typedef struct grpc_handler {
    const char *method;        /* "SayHello" */
    grpc_unary_fn unary;
    grpc_fn fn;
    bool client_streaming;
    bool server_streaming;
} grpc_handler;

/* Registers the methods of a protoc-c service (its generated
 * ProtobufCServiceDescriptor, e.g. &helloworld__greeter__descriptor) at
 * "/package.Service/Method", one for each entry of h (ended by {0}, an entry
 * whose method is NULL), each called with data:
 *
 *     static const grpc_handler greeter[] = {
 *         {"SayHello", .unary = say_hello},
 *         {"SayHellos", .fn = say_hellos, .server_streaming = true},
 *         {0},
 *     };
 *     grpc_server_add_service(g, &helloworld__greeter__descriptor, greeter, NULL);
 *
 * A method of the service without an entry answers UNIMPLEMENTED.  The
 * service is remembered for reflection, which describes it from the
 * descriptors when no descriptor set given to grpc_reflection_add_descriptor_set
 * declares it.  0, or -1 with nothing registered (and a log line) when an
 * entry names no method of the service, names one twice, sets both or
 * neither of unary and fn, sets unary with a streaming flag, or a path is
 * already registered. */
int grpc_server_add_service(grpc_server *g, const ProtobufCServiceDescriptor *svc, const grpc_handler *h, void *data);
/* Adds an interceptor (innermost last). */
void grpc_server_intercept(grpc_server *g, grpc_interceptor fn, void *data);
/* The registered methods, for reflection and health ("" ends the list). */
int grpc_server_methods(const grpc_server *g, const grpc_method **out, int max);

/* An HTTP handler serving every registered method: register it on a mux
 * pattern that catches gRPC paths ("POST /" on a gRPC-only address).  A
 * request that is not gRPC (content type) gets 415. */
http_handler grpc_http_handler(grpc_server *g);
/* Whether r is a gRPC or gRPC-Web request (by content type), or a CORS
 * preflight for one. */
bool grpc_is_grpc(const http_req *r);
/* Whether g answers r on an address shared with REST: gRPC by content type
 * (grpc_is_grpc), or a POST to one of g's methods whatever its content
 * type, which then gets the gRPC protocol's 415 rather than a REST 404. */
bool grpc_serves(const grpc_server *g, const http_req *r);

/* ---- inside a call ---------------------------------------------------------------------- */

/* The call's context: the stream's, narrowed by grpc-timeout. */
rt_ctx *grpc_ctx(grpc_call *c);
/* The call's arena: request-scoped memory (messages received are here). */
bz_arena *grpc_arena(grpc_call *c);
http_req *grpc_http(grpc_call *c);
const grpc_method *grpc_method_of(grpc_call *c);
/* Request metadata (a header), or a NULL slice.  -bin values are raw
 * base64 here; grpc_metadata_bin decodes them into the arena. */
bz_str grpc_metadata(grpc_call *c, const char *name);
bool grpc_metadata_bin(grpc_call *c, const char *name, const uint8_t **data, size_t *n);

/* The application's per-call value (the caller, for instance). */
void grpc_set_user(grpc_call *c, void *p);
void *grpc_user(grpc_call *c);

/* Receives the next request message into the arena.  0 with *msg set; 1
 * at the end of the client's stream; -1 when the call cannot go on (bad
 * framing, too large, cancelled, bad protobuf): the status is set and the
 * handler should return. */
int grpc_recv(grpc_call *c, const ProtobufCMessageDescriptor *d, ProtobufCMessage **msg);
/* Whether the message grpc_recv last returned came compressed (its frame's
 * flag), for callers that must check how a client sent it. */
bool grpc_recv_was_compressed(const grpc_call *c);
/* The same into another arena (long client streams recycle a scratch one). */
int grpc_recv_in(grpc_call *c, const ProtobufCMessageDescriptor *d, bz_arena *a, ProtobufCMessage **msg);

/* Initial metadata, before the first message (or the status). */
void grpc_add_header(grpc_call *c, const char *name, const char *value);
/* Sends the response headers now (a stream that may be quiet for a while
 * tells the client it is established).  0 or -1. */
int grpc_send_headers(grpc_call *c);
/* Sends one response message (headers first if not yet sent).  0, or -1
 * if the client went away or the call was finished. */
int grpc_send(grpc_call *c, const ProtobufCMessage *msg);
/* The same for a message already packed (protobuf bytes the caller kept,
 * e.g. with a cache entry): framed (and compressed, in the call's mode)
 * as grpc_send would frame its packing. */
int grpc_send_packed(grpc_call *c, const void *bytes, size_t n);
/* Trailing metadata, sent with the status.  -bin names take raw bytes. */
void grpc_add_trailer(grpc_call *c, const char *name, const char *value);
void grpc_add_trailer_bin(grpc_call *c, const char *name, const uint8_t *data, size_t n);

/* One field violation for grpc-status-details-bin (google.rpc.BadRequest). */
typedef struct grpc_violation {
    const char *field, *description;
} grpc_violation;

/* Ends the call with a status and message (printf), once; later calls are
 * ignored.  Returns 0 so handlers can `return grpc_finish(...)`. */
int grpc_finish(grpc_call *c, grpc_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same with google.rpc.Status details carrying a BadRequest with
 * these violations (grpc-status-details-bin). */
int grpc_finish_violations(grpc_call *c, grpc_code code, const char *msg, const grpc_violation *v, int n);
/* Whether the call has finished (status set). */
bool grpc_finished(const grpc_call *c);
grpc_code grpc_status(const grpc_call *c);

/* Compress response messages with gzip (when the client accepts it). */
void grpc_set_compress(grpc_call *c, bool on);

/* ---- observation and metrics ---- */

/* The outermost interceptor every server wants (<bazaar/observe.h>): the
 * request id from `x-request-id` by REST's rule (http_request_id_set),
 * echoed in the headers, with `traceresponse` when the call carried a
 * `traceparent` (http_traceresponse); a handler that fails without
 * a status ends INTERNAL; and the call's end — the access-log line (the
 * same keys as REST's, `code` for `status`), the count in
 * bazaar_grpc_server_handled_total{method,code} and
 * bazaar_grpc_server_handling_seconds{method}, the in-flight gauge.
 *     grpc_server_intercept(g, grpc_observe, NULL);  // first */
int grpc_observe(grpc_call *c, const grpc_method *m, void *data, int (*next)(grpc_call *c, const grpc_method *m));
/* The admin console's view: fn for every (method, code) series a thread
 * counted (the unknown methods as "(unknown method)"), with its calls in
 * handled[code] (GRPC_CODE__COUNT, the other codes 0) and its latency
 * histogram (in grpc_metrics_bounds); a method comes once per series. */
void grpc_metrics_each(void (*fn)(const char *path, const int64_t *handled, const bz_hist_snap *h, void *arg),
                       void *arg);
const bz_hist_bounds *grpc_metrics_bounds(void);
/* Calls in flight (between grpc_observe's start and end of a call). */
int64_t grpc_metrics_inflight(void);
/* bazaar_grpc_server_handled_total and _handling_seconds, Prometheus text. */
void grpc_metrics_render(bz_buf *out);

/* ---- standard services ---- */

/* grpc.health.v1.Health: Check and Watch.  serving(arg) tells whether the
 * server can serve now (not draining, its database answers); services
 * lists the names it reports on ("" is added), NULL-terminated, or is
 * NULL for every service with a method registered on g (looked up at each
 * check, so services registered later count too). */
typedef bool (*grpc_serving_fn)(void *arg, rt_ctx *ctx);
void grpc_health_register(grpc_server *g, const char *const *services, grpc_serving_fn serving, void *arg);

/* grpc.reflection.v1 and v1alpha ServerReflection (grpc/reflection.c):
 * describes the standard services (health, reflection, grpc.testing, the
 * well-known types and google.rpc.Status, exactly as protoc wrote them),
 * the files of every descriptor set given to grpc_reflection_add_descriptor_set, and
 * every service registered with grpc_server_add_service that those do not
 * declare, from its protobuf-c descriptors.  Lists every service with a
 * registered method.  Register services and sets before serving: the
 * index is built on the first reflection request. */
void grpc_reflection_register(grpc_server *g);
/* A serialized google.protobuf.FileDescriptorSet (protoc
 * --include_imports --descriptor_set_out) whose files reflection serves
 * byte for byte (copied).  A file named twice: the first one given wins.
 * 0, or -1 if the bytes are not a FileDescriptorSet (nothing added). */
int grpc_reflection_add_descriptor_set(grpc_server *g, const void *bytes, size_t n);
/* grpc.testing.TestService from grpc's test.proto, for grpc's interop test
 * cases (grpc/testing.c). */
void grpc_testing_register(grpc_server *g);

/* ---- parsing helpers (exposed for tests and fuzzing) ---- */

/* grpc-timeout ("100m", "5S", ...): 0 with *ns, -1 if malformed. */
int grpc_parse_timeout(bz_str v, int64_t *ns);
/* Percent-encodes a grpc-message value (RFC 3986 unreserved kept). */
void grpc_percent_encode(bz_buf *out, const char *msg);

#pragma GCC visibility pop
#endif

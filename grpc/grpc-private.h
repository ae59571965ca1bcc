/*
 * grpc/grpc-private.h — the server and call structures shared by the
 * files of grpc/.
 */
#ifndef GRPC_PRIVATE_H
#define GRPC_PRIVATE_H

#include <bazaar/grpc.h>

#define GRPC_MAX_INTERCEPTORS 8
/* Messages larger than this are budgeted (received: http_body_reserve)
 * and paced (sent: http_write_paced); smaller ones just go. */
#define GRPC__RESERVE_MIN (64 * 1024)

typedef enum grpc_mode {
    GRPC_MODE_NATIVE,    /* application/grpc over HTTP/2 */
    GRPC_MODE_WEB,       /* application/grpc-web[+proto] */
    GRPC_MODE_WEB_TEXT,  /* application/grpc-web-text[+proto]: base64 both ways */
} grpc_mode;

/* A service added with grpc_server_add_service, for reflection. */
typedef struct grpc__service {
    const ProtobufCServiceDescriptor *d;
    bool *client_streaming, *server_streaming; /* per method, in d's order */
} grpc__service;

typedef struct grpc__refl grpc__refl;

struct grpc_server {
    grpc_opts o;
    grpc_method *methods;
    size_t *path_lens;       /* strlen of each method's path, for lookup */
    int n, cap;
    grpc__service *svcs;
    int nsvcs;
    void **owned;            /* what registrations allocated (paths, bindings), freed with g */
    int nowned;
    grpc__refl *refl;        /* reflection's sets and index (reflection.c), or NULL */
    struct {
        grpc_interceptor fn;
        void *data;
    } icpt[GRPC_MAX_INTERCEPTORS];
    int nicpt;
};

struct grpc_call {
    grpc_server *g;
    http_req *r;
    const grpc_method *m;
    rt_ctx *ctx;             /* r->ctx, narrowed to the call's deadline (grpc-timeout, the
                                server's cap): the stream's own, no child of it — the
                                call ends when the stream does, and a child would cost a
                                lock pair to link and another to unlink per call */
    grpc_mode mode;
    bool req_gzip;           /* the client's messages may be compressed (grpc-encoding: gzip) */
    bool accept_gzip;        /* the client accepts gzip responses */
    bool compress;           /* compress our messages */
    bool declared_gzip;      /* grpc-encoding: gzip went out with the headers */
    bool headers_sent;
    bool finished;
    bool eos;                /* the client's stream ended */
    grpc_code code;
    int icpt_next;           /* interceptor chain position */
    bz_buf in;               /* request bytes not yet consumed (decoded from base64 in -text mode) */
    size_t in_off;
    bz_buf text;             /* -text mode: base64 characters not yet decoded */
    /* Initial and trailing metadata the call will send: (name, value)
     * pairs, NUL-terminated copies in the request's arena, handed to the
     * HTTP layer as pairs (never as text to be parsed again). */
    http_header *headers, *trailers;
    int nheaders, headers_cap, ntrailers, trailers_cap;
    bz_buf out;              /* packing buffer for large messages */
    int64_t sent, received;  /* messages, for the access log */
    bool last_compressed;    /* the last message received came compressed */
    void *user;
    /* Metadata the server reads itself, found by the one pass over the
     * request's header fields that serve makes (grpc_metadata answers
     * these names without another scan): {NULL, 0} when absent. */
    bz_str md_authorization, md_request_id;
    bool md_scanned;
};

/* call.c: initial metadata (name, value) added as they are, without a
 * copy: both NUL-terminated, living as long as the request. */
void grpc__add_header_ref(grpc_call *c, const char *name, size_t nl, const char *value, size_t vlen);

/* wire.c */
int grpc__gzip(const uint8_t *in, size_t n, bz_buf *out);
/* Inflates at most max bytes: 0, -EMSGSIZE if larger, -EBADMSG if corrupt. */
int grpc__gunzip(const uint8_t *in, size_t n, int64_t max, bz_buf *out);
/* The length a gzip member says it inflates to (mod 2^32; 0 if too short). */
uint32_t grpc__gzip_isize(const uint8_t *in, size_t n);
/* grpc__gunzip on the offload pool (the loop keeps serving others while
 * a large message inflates); small ones inline.  Also -ECANCELED or
 * -ETIMEDOUT if ctx ends while the job waits for a thread. */
#define GRPC__INLINE_GUNZIP (64 * 1024)
int grpc__gunzip_off_loop(rt_ctx *ctx, const uint8_t *in, size_t n, int64_t max, bz_buf *out);
/* Drops the top-level fields of the message in p[0..n) that d does not
 * know, in place; returns the new length.  protobuf-c would copy each
 * into the arena as an unknown field — a client could fill a message
 * with megabytes nobody reads.  Malformed input is left for the decoder. */
size_t grpc__strip_unknown(const ProtobufCMessageDescriptor *d, uint8_t *p, size_t n);
/* Base64 (padded or not) into out; false if malformed. */
bool grpc__b64_decode(const char *s, size_t n, bz_buf *out);
void grpc__b64_encode(const uint8_t *p, size_t n, bz_buf *out);
/* A ProtobufCAllocator over an arena (free is a no-op). */
ProtobufCAllocator grpc__arena_allocator(bz_arena *a);

/* metrics.c: the calls' recorder and the access-log words (grpc/observe.c) */
extern struct http_obs grpc__obs;
extern const struct http_obs_kind grpc__obs_kind;

/* server.c: memory that lives as long as g (aborts when out of memory). */
void *grpc__own(grpc_server *g, size_t n);

/* reflection.c */
/* p with room for n+1 elements of size (doubling *cap), for the index's
 * arrays; aborts when out of memory, like the rest of the index. */
void *grpc__grow(void *p, int *cap, int n, size_t size);
void grpc__refl_free(grpc__refl *r);
/* Whether the index was built (a service added later is not described). */
bool grpc__refl_built(const grpc__refl *r);

/* describe.c: what the description asks of reflection's index. */
typedef struct grpc__describe_env {
    /* The file that declares a message or enum type (full name, no
     * leading dot) in a descriptor set, or NULL. */
    const char *(*known_type)(void *arg, const char *type);
    /* Whether a descriptor set has a file of this name. */
    bool (*file_taken)(void *arg, const char *file);
    void *arg;
} grpc__describe_env;
/* Describes the services, and every type they reach that no set
 * declares, as FileDescriptorProtos (one per package) appended to out as
 * a serialized FileDescriptorSet: 0, or -1 (logged) if they cannot be. */
int grpc__describe(const grpc__service *const *svcs, int n, const grpc__describe_env *env, bz_buf *out);

/* call.c */
/* The status of a call its handler left without one (rc: what the
 * handler returned): DEADLINE_EXCEEDED once the call's deadline has passed,
 * whatever the handler returned (it cannot tell a send cut by the deadline
 * from any other failure), INTERNAL for a failure, else OK.  Used by the
 * call's end and by grpc_observe, so the access log sees the same code. */
void grpc__finish_default(grpc_call *c, int rc);
void grpc__call_init(grpc_call *c, grpc_server *g, http_req *r, const grpc_method *m, grpc_mode mode);
/* Sends what is left (headers, status) and releases the call. */
void grpc__call_end(grpc_call *c, int rc);

#endif

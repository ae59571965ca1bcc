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

struct grpc_server {
    grpc_opts o;
    grpc_method *methods;
    int n, cap;
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
    rt_ctx ctx;              /* r->ctx narrowed by grpc-timeout */
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
};

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

/* call.c */
void grpc__call_init(grpc_call *c, grpc_server *g, http_req *r, const grpc_method *m, grpc_mode mode);
/* Sends what is left (headers, status) and releases the call. */
void grpc__call_end(grpc_call *c, int rc);

#endif

/* grpc/call.c — one call: receiving and sending messages, metadata, and
 * the status at the end (grpc.h). */
#include "grpc/grpc-private.h"

#include <bazaar/errlog.h>

#include "google/rpc/status.pb-c.h"

#include <bazaar/rand.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void grpc__call_init(grpc_call *c, grpc_server *g, http_req *r, const grpc_method *m, grpc_mode mode)
{
    memset(c, 0, sizeof *c);
    c->g = g;
    c->r = r;
    c->m = m;
    c->mode = mode;
    c->ctx = r->ctx;
    c->in = BZ_BUF_INIT;
    c->text = BZ_BUF_INIT;
    c->out = BZ_BUF_INIT;
}

rt_ctx *grpc_ctx(grpc_call *c) { return c->ctx; }
bz_arena *grpc_arena(grpc_call *c) { return c->r->arena; }
http_req *grpc_http(grpc_call *c) { return c->r; }
const grpc_method *grpc_method_of(grpc_call *c) { return c->m; }
bool grpc_finished(const grpc_call *c) { return c->finished; }
grpc_code grpc_status(const grpc_call *c) { return c->code; }
/* Once the headers are out, the encoding is settled: compression can only
 * be switched on if gzip was declared there. */
void grpc_set_compress(grpc_call *c, bool on)
{
    if (c->headers_sent && !c->declared_gzip)
        return;
    c->compress = on && c->accept_gzip;
}

bz_str grpc_metadata(grpc_call *c, const char *name)
{
    if (c->md_scanned) { /* what serve's pass found: no second scan */
        if (!strcmp(name, "authorization"))
            return c->md_authorization;
        if (!strcmp(name, "x-request-id"))
            return c->md_request_id;
    }
    return http_header_get(c->r, name);
}

bool grpc_metadata_bin(grpc_call *c, const char *name, const uint8_t **data, size_t *n)
{
    bz_str v = http_header_get(c->r, name);
    if (!v.p)
        return false;
    bz_buf b = BZ_BUF_INIT;
    if (!grpc__b64_decode(v.p, v.n, &b)) {
        bz_buf_free(&b);
        return false;
    }
    uint8_t *p = bz_arena_alloc(c->r->arena, b.len ? b.len : 1);
    memcpy(p, b.data, b.len);
    *data = p;
    *n = b.len;
    bz_buf_free(&b);
    return true;
}

/* Appends (name, value) as they are: both NUL-terminated and living as
 * long as the request (static text, the arena, the request itself). */
static void pair_ref(bz_arena *a, http_header **v, int *n, int *cap, const char *name, size_t nl, const char *value,
                     size_t vlen)
{
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 4;
        http_header *nv = bz_arena_alloc(a, sizeof *nv * (size_t)nc);
        if (*n)
            memcpy(nv, *v, sizeof *nv * (size_t)*n);
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = (http_header){bz_str_make(name, nl), bz_str_make(value, vlen)};
}

static void pair_add(bz_arena *a, http_header **v, int *n, int *cap, const char *name, const char *value,
                     size_t vlen)
{
    size_t nl = strlen(name);
    char *p = bz_arena_alloc(a, nl + vlen + 2);
    memcpy(p, name, nl + 1);
    memcpy(p + nl + 1, value, vlen);
    p[nl + 1 + vlen] = '\0';
    pair_ref(a, v, n, cap, p, nl, p + nl + 1, vlen);
}

void grpc__add_header_ref(grpc_call *c, const char *name, size_t nl, const char *value, size_t vlen)
{
    pair_ref(c->r->arena, &c->headers, &c->nheaders, &c->headers_cap, name, nl, value, vlen);
}

void grpc_add_header(grpc_call *c, const char *name, const char *value)
{
    pair_add(c->r->arena, &c->headers, &c->nheaders, &c->headers_cap, name, value, strlen(value));
}

void grpc_add_trailer(grpc_call *c, const char *name, const char *value)
{
    pair_add(c->r->arena, &c->trailers, &c->ntrailers, &c->trailers_cap, name, value, strlen(value));
}

void grpc_add_trailer_bin(grpc_call *c, const char *name, const uint8_t *data, size_t n)
{
    bz_buf b = BZ_BUF_INIT;
    grpc__b64_encode(data, n, &b);
    /* -bin values go unpadded, as the other implementations send them */
    while (b.len && b.data[b.len - 1] == '=')
        b.len--;
    pair_add(c->r->arena, &c->trailers, &c->ntrailers, &c->trailers_cap, name, b.data ? b.data : "", b.len);
    bz_buf_free(&b);
}

/* ---- receiving ---- */

/* Tops up c->in from the body until it holds `want` bytes past in_off:
 * 1 ok, 0 the body ended first, -1 error (status set). */
static int fill(grpc_call *c, size_t want)
{
    while (c->in.len - c->in_off < want) {
        if (c->eos)
            return 0;
        /* Read straight into the buffer it ends up in (-text mode: the
         * base64 buffer): no copy, and no 16 KiB stack buffer that every
         * stream's coroutine would keep resident once it received data. */
        bz_buf *into = c->mode == GRPC_MODE_WEB_TEXT ? &c->text : &c->in;
        /* What has arrived whole, on HTTP/2: the stream's buffer becomes
         * ours, the one copy of the message being the stream's. */
        if (c->mode != GRPC_MODE_WEB_TEXT && c->in.len == 0) {
            ssize_t k = http_body_take(c->r, &c->in, want);
            if (k > 0)
                continue;
            if (k < 0) {
                grpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "the request stream is larger than the server accepts");
                return -1;
            }
        }
        size_t room = into->cap > into->len + 1 ? into->cap - into->len - 1 : 0;
        size_t need = want - (c->in.len - c->in_off);
        if (room == 0 || (room < 4096 && room < need)) {
            /* what is needed now, no more: a stream waiting for its first
             * message holds no large buffer (an exactly sized message
             * buffer is never grown) */
            bz_buf_reserve(into, need > 64 ? need : 64);
            room = into->cap - into->len - 1;
        }
        ssize_t n = http_body_read(c->r, into->data + into->len, room);
        if (n == 0) {
            c->eos = true;
            continue;
        }
        if (n < 0) {
            if (rt_ctx_err(c->ctx) == ETIMEDOUT)
                grpc_finish(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded while reading the request");
            else if (n == -ETIMEDOUT)
                /* Not the call's deadline: the wait for client bytes (the
                 * idle timeout between messages, the read timeout inside
                 * one) — a peer that stopped sending is not waited for. */
                grpc_finish(c, GRPC_DEADLINE_EXCEEDED, "the client sent nothing for too long");
            else if (n == -EMSGSIZE)
                grpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "the request stream is larger than the server accepts");
            else
                grpc_finish(c, GRPC_CANCELLED, "the request stream ended abnormally");
            return -1;
        }
        into->len += (size_t)n;
        into->data[into->len] = '\0';
        if (c->mode == GRPC_MODE_WEB_TEXT) {
            /* decode whole 4-character groups; keep the rest for later */
            size_t whole = c->text.len / 4 * 4;
            if (whole && !grpc__b64_decode(c->text.data, whole, &c->in)) {
                grpc_finish(c, GRPC_INVALID_ARGUMENT, "the grpc-web-text body is not base64");
                return -1;
            }
            bz_buf_consume(&c->text, whole);
        }
    }
    return 1;
}

void grpc_set_user(grpc_call *c, void *p) { c->user = p; }
bool grpc_recv_was_compressed(const grpc_call *c) { return c->last_compressed; }
void *grpc_user(grpc_call *c) { return c->user; }

int grpc_recv(grpc_call *c, const ProtobufCMessageDescriptor *d, ProtobufCMessage **msg)
{
    return grpc_recv_in(c, d, c->r->arena, msg);
}

int grpc_recv_in(grpc_call *c, const ProtobufCMessageDescriptor *d, bz_arena *a, ProtobufCMessage **msg)
{
    *msg = NULL;
    if (c->finished)
        return -1;
    /* drop what earlier messages consumed */
    if (c->in_off > 0 && c->in_off == c->in.len) {
        c->in.len = 0;
        c->in_off = 0;
    } else if (c->in_off > 65536) {
        bz_buf_consume(&c->in, c->in_off);
        c->in_off = 0;
    }
    /* Between messages the wait for the next one is the idle rule
     * (http_set_read_deadline 0); inside one, the read timeout. */
    http_set_read_deadline(c->r, 0);
    int rc = fill(c, 5);
    if (rc <= 0) {
        if (rc == 0 && c->in.len - c->in_off > 0) {
            grpc_finish(c, GRPC_INVALID_ARGUMENT, "the request stream ended inside a message");
            return -1;
        }
        return rc == 0 ? 1 : -1;
    }
    const uint8_t *h = (const uint8_t *)c->in.data + c->in_off;
    uint8_t flags = h[0];
    uint32_t len = (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 8 | h[4];
    int64_t max = c->g->o.max_recv_bytes;
    if ((int64_t)len > max) {
        grpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "received message larger than max (%u vs. %lld)", len, (long long)max);
        return -1;
    }
    if (flags & ~1u) {
        grpc_finish(c, GRPC_INTERNAL, "unknown message flags 0x%02x", flags);
        return -1;
    }
    bool reserved = false;
    if (len > GRPC__RESERVE_MIN && c->in.len - c->in_off < 5 + (size_t)len) {
        /* A large message: its bytes are taken from the connection's and
         * the process's budgets before they are read (waiting while the
         * connection's is full), and the buffer grows to the exact size
         * once, not by doubling. */
        int e = http_body_reserve(c->r, (int64_t)len);
        if (e == -ENOBUFS) {
            grpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "the server is receiving too many large messages; retry later");
            return -1;
        }
        if (e < 0) {
            if (rt_ctx_err(c->ctx) == ETIMEDOUT)
                grpc_finish(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded while reading the request");
            else if (e == -ETIMEDOUT)
                grpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "the connection's receive budget stayed full");
            else
                grpc_finish(c, GRPC_CANCELLED, "the request stream ended abnormally");
            return -1;
        }
        reserved = true;
        size_t need = c->in.len + (5 + (size_t)len - (c->in.len - c->in_off)) + 1;
        if (need > c->in.cap) {
            char *nd = realloc(c->in.data, need);
            if (!nd) {
                grpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory");
                return -1;
            }
            c->in.data = nd;
            c->in.cap = need;
        }
    }
    http_set_read_deadline(c->r, rt_now() + http_read_timeout(c->r));
    rc = fill(c, 5 + (size_t)len);
    if (rc <= 0) {
        if (rc == 0)
            grpc_finish(c, GRPC_INVALID_ARGUMENT, "the request stream ended inside a message");
        return -1;
    }
    const uint8_t *p = (const uint8_t *)c->in.data + c->in_off + 5;
    c->in_off += 5 + (size_t)len;
    c->last_compressed = flags & 1;
    bz_buf plain = BZ_BUF_INIT;
    if (flags & 1) {
        if (!c->req_gzip) {
            grpc_finish(c, GRPC_INTERNAL, "a compressed message without grpc-encoding");
            return -1;
        }
        /* The inflated bytes are budgeted like a large message's (the
         * gzip trailer's length, which zlib checks, bounds them). */
        uint32_t isize = grpc__gzip_isize(p, len);
        int64_t lim = isize && (int64_t)isize < max ? (int64_t)isize : max;
        if (lim > GRPC__RESERVE_MIN) {
            int e = http_body_reserve(c->r, lim);
            if (e < 0) {
                grpc_finish(c, GRPC_RESOURCE_EXHAUSTED, e == -ENOBUFS ? "the server is receiving too many large messages; retry later"
                                                                      : "the connection's receive budget stayed full");
                return -1;
            }
            reserved = true;
        }
        int zr = grpc__gunzip_off_loop(c->ctx, p, len, lim, &plain);
        if (zr == -EMSGSIZE && lim < max)
            zr = -EBADMSG; /* longer than its own trailer says: corrupt */
        if (zr == -EMSGSIZE) {
            bz_buf_free(&plain);
            if (reserved)
                http_body_release(c->r);
            grpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "decompressed message larger than max (%lld)", (long long)max);
            return -1;
        }
        if (zr != 0) {
            bz_buf_free(&plain);
            if (reserved)
                http_body_release(c->r);
            if (zr == -ECANCELED || zr == -ETIMEDOUT)
                grpc_finish(c, zr == -ETIMEDOUT ? GRPC_DEADLINE_EXCEEDED : GRPC_CANCELLED, "the call ended while its message inflated");
            else
                grpc_finish(c, GRPC_INTERNAL, "the message could not be decompressed");
            return -1;
        }
        p = (const uint8_t *)(plain.data ? plain.data : "");
        len = (uint32_t)plain.len;
    }
    /* Our own bytes (c->in or plain), consumed by this message. */
    len = (uint32_t)grpc__strip_unknown(d, (uint8_t *)p, len);
    ProtobufCAllocator al = grpc__arena_allocator(a);
    *msg = protobuf_c_message_unpack(d, &al, len, p);
    bz_buf_free(&plain);
    if (reserved)
        http_body_release(c->r);
    if (!*msg) {
        grpc_finish(c, GRPC_INVALID_ARGUMENT, "the request message is not a valid %s", d->name);
        return -1;
    }
    c->received++;
    if (c->m && !c->m->client_streaming) {
        /* One request message, then the end of the stream: a second one is
         * a protocol violation (grpc-go and grpc-java answer INTERNAL), and
         * the handler runs on the whole request, as theirs do.  The
         * message decoded above lives in the arena, not in c->in. */
        int more = fill(c, 1);
        if (more < 0) {
            *msg = NULL;
            return -1;
        }
        if (more > 0) {
            *msg = NULL;
            grpc_finish(c, GRPC_INTERNAL, "more than one request message for a method that takes one");
            return -1;
        }
    }
    return 0;
}

/* ---- sending ---- */

static const char *content_type(const grpc_call *c)
{
    switch (c->mode) {
    case GRPC_MODE_WEB: return "application/grpc-web+proto";
    case GRPC_MODE_WEB_TEXT: return "application/grpc-web-text+proto";
    default: return "application/grpc";
    }
}

static void send_headers(grpc_call *c)
{
    if (c->headers_sent)
        return;
    c->headers_sent = true;
    http_req *r = c->r;
    http_set_status(r, 200);
    http_add_header(r, "Content-Type", content_type(c));
    if (c->compress) {
        http_add_header(r, "grpc-encoding", "gzip");
        c->declared_gzip = true;
    }
    http_add_header(r, "grpc-accept-encoding", "identity,gzip");
    for (int i = 0; i < c->nheaders; i++)
        http_add_header_n(r, c->headers[i].name.p, c->headers[i].value.p, c->headers[i].value.n);
}

/* Writes one frame (flags, bytes) in the call's mode. */
static void write_frame(grpc_call *c, uint8_t flags, const void *p, size_t n)
{
    uint8_t h[5] = {flags, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    if (c->mode == GRPC_MODE_WEB_TEXT) {
        bz_buf f = BZ_BUF_INIT, t = BZ_BUF_INIT;
        bz_buf_append(&f, h, 5);
        bz_buf_append(&f, p, n);
        grpc__b64_encode((const uint8_t *)f.data, f.len, &t);
        http_write(c->r, t.data, t.len);
        bz_buf_free(&f);
        bz_buf_free(&t);
        return;
    }
    http_write(c->r, h, 5);
    if (n)
        http_write(c->r, p, n);
}

int grpc_send_headers(grpc_call *c)
{
    if (c->finished)
        return -1;
    send_headers(c);
    return http_flush(c->r) == 0 ? 0 : -1;
}

/* A ProtobufCBuffer that writes straight into the response, paced. */
typedef struct {
    ProtobufCBuffer base;
    http_req *r;
    int err;
} paced_buf;

static void paced_append(ProtobufCBuffer *b, size_t n, const uint8_t *p)
{
    paced_buf *pb = (paced_buf *)b;
    if (!pb->err)
        pb->err = http_write_paced(pb->r, p, n);
}

/* http_write_with: the 5-byte frame header and the message, packed where
 * they go. */
typedef struct {
    const ProtobufCMessage *msg;
    size_t n; /* its packed size */
} framed;

static void pack_framed(bz_buf *b, const void *arg)
{
    const ProtobufCMessage *msg = ((const framed *)arg)->msg;
    size_t n = ((const framed *)arg)->n;
    bz_buf_reserve(b, 5 + n);
    uint8_t *h = (uint8_t *)b->data + b->len;
    h[0] = 0;
    h[1] = (uint8_t)(n >> 24);
    h[2] = (uint8_t)(n >> 16);
    h[3] = (uint8_t)(n >> 8);
    h[4] = (uint8_t)n;
    protobuf_c_message_pack(msg, h + 5);
    b->len += 5 + n;
    b->data[b->len] = '\0';
}

static int send_bytes(grpc_call *c, const uint8_t *p, size_t n);
static int sent(grpc_call *c);

int grpc_send(grpc_call *c, const ProtobufCMessage *msg)
{
    if (c->finished)
        return -1;
    if (rt_ctx_err(c->ctx))
        return -1;
    send_headers(c);
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > GRPC__RESERVE_MIN && !(c->compress && n >= 64) && c->mode != GRPC_MODE_WEB_TEXT) {
        /* A large message is packed straight into the response, which
         * leaves in slices as the client reads: no whole copy of it waits
         * in memory, and a client that does not read parks the handler
         * (http_write_paced) instead of growing a buffer. */
        uint8_t h[5] = {0, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
        http_write(c->r, h, 5);
        paced_buf pb = {{NULL}, c->r, 0};
        pb.base.append = paced_append;
        protobuf_c_message_pack_to_buffer(msg, &pb.base);
        if (pb.err)
            return -1;
        goto sent;
    }
    if (c->mode == GRPC_MODE_NATIVE && !(c->compress && n >= 64)) {
        /* The common case: framed and packed in place at the end of the
         * response body, the one copy before the socket being HTTP/2's. */
        http_write_with(c->r, pack_framed, &(framed){msg, n});
        goto sent;
    }
    uint8_t stackbuf[512];
    uint8_t *p = stackbuf;
    if (n > sizeof stackbuf) {
        /* one buffer reused for the call's large messages (a long stream
         * must not grow the arena message by message) */
        bz_buf_clear(&c->out);
        bz_buf_reserve(&c->out, n);
        p = (uint8_t *)c->out.data;
    }
    protobuf_c_message_pack(msg, p);
    return send_bytes(c, p, n);
sent:
    return sent(c);
}

int grpc_send_packed(grpc_call *c, const void *bytes, size_t n)
{
    if (c->finished)
        return -1;
    if (rt_ctx_err(c->ctx))
        return -1;
    send_headers(c);
    return send_bytes(c, bytes, n);
}

/* A packed message p[0..n) framed into the response (compressed when the
 * call compresses), then what every sent message does. */
static int send_bytes(grpc_call *c, const uint8_t *p, size_t n)
{
    if (c->compress && n >= 64) {
        bz_buf z = BZ_BUF_INIT;
        if (grpc__gzip(p, n, &z) == 0) {
            write_frame(c, 1, z.data, z.len);
            bz_buf_free(&z);
            return sent(c);
        }
        bz_buf_free(&z);
    }
    write_frame(c, 0, p, n);
    return sent(c);
}

static int sent(grpc_call *c)
{
    c->sent++;
    /* A unary response waits for its status, so headers, message and
     * trailers leave together; a stream's messages leave as they come
     * (http_flush parks while the client's window is shut). */
    if (c->m && c->m->server_streaming && http_flush(c->r) != 0)
        return -1;
    return 0;
}

/* ---- the status ---- */

static int finish(grpc_call *c, grpc_code code, const char *msg, const uint8_t *details, size_t dn)
{
    if (c->finished)
        return 0;
    if ((code == GRPC_CANCELLED || code == GRPC_UNAVAILABLE) && rt_ctx_err(c->ctx) == ETIMEDOUT) {
        /* A handler whose sends failed cannot tell an expired deadline from
         * a client's reset, nor a database connect the deadline cut short
         * from a database that is down; the context can: a call past its
         * deadline ended by it, and gRPC clients expect DEADLINE_EXCEEDED
         * (they report it themselves once their own timer fires, so any
         * other status only races it).  Other statuses stand: they are
         * answers, not failures to answer. */
        code = GRPC_DEADLINE_EXCEEDED;
        msg = "deadline exceeded";
    }
    c->finished = true;
    c->code = code;
    if (code != GRPC_OK) /* the admin console's last errors */
        bz_errlog_add(c->m ? c->m->path : "(unknown method)", 0, grpc_code_name(code), c->r->trace.trace_id, msg);
    /* the status as text, a static string for the codes gRPC has */
    static const char *const num[GRPC_CODE__COUNT] = {"0", "1", "2", "3", "4", "5", "6", "7", "8",
                                                      "9", "10", "11", "12", "13", "14", "15", "16"};
    if (code >= 0 && code < GRPC_CODE__COUNT) {
        const char *t = num[code];
        pair_ref(c->r->arena, &c->trailers, &c->ntrailers, &c->trailers_cap, "grpc-status", 11, t, strlen(t));
    } else {
        char n[24];
        n[bz_fmt_i64(n, (int64_t)code)] = '\0';
        grpc_add_trailer(c, "grpc-status", n);
    }
    if (msg && *msg) {
        bz_buf m = BZ_BUF_INIT;
        grpc_percent_encode(&m, msg);
        grpc_add_trailer(c, "grpc-message", m.data);
        bz_buf_free(&m);
    }
    if (details)
        grpc_add_trailer_bin(c, "grpc-status-details-bin", details, dn);
    return 0;
}

int grpc_finish(grpc_call *c, grpc_code code, const char *fmt, ...)
{
    char msg[512];
    msg[0] = '\0'; /* not the whole buffer: most calls end OK, with no message */
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    return finish(c, code, msg, NULL, 0);
}

int grpc_finish_violations(grpc_call *c, grpc_code code, const char *msg, const grpc_violation *v, int n)
{
    Google__Rpc__BadRequest br = GOOGLE__RPC__BAD_REQUEST__INIT;
    Google__Rpc__BadRequest__FieldViolation *fv = bz_arena_calloc(c->r->arena, (size_t)(n ? n : 1), sizeof *fv);
    Google__Rpc__BadRequest__FieldViolation **fvp = bz_arena_calloc(c->r->arena, (size_t)(n ? n : 1), sizeof *fvp);
    for (int i = 0; i < n; i++) {
        google__rpc__bad_request__field_violation__init(&fv[i]);
        fv[i].field = (char *)v[i].field;
        fv[i].description = (char *)v[i].description;
        fvp[i] = &fv[i];
    }
    br.n_field_violations = (size_t)n;
    br.field_violations = fvp;
    size_t bn = google__rpc__bad_request__get_packed_size(&br);
    uint8_t *bb = bz_arena_alloc(c->r->arena, bn ? bn : 1);
    google__rpc__bad_request__pack(&br, bb);
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = "type.googleapis.com/google.rpc.BadRequest";
    any.value.data = bb;
    any.value.len = bn;
    Google__Protobuf__Any *anys[1] = {&any};
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    st.code = (int32_t)code;
    st.message = (char *)(msg ? msg : "");
    st.n_details = 1;
    st.details = anys;
    size_t sn = google__rpc__status__get_packed_size(&st);
    uint8_t *sb = bz_arena_alloc(c->r->arena, sn ? sn : 1);
    google__rpc__status__pack(&st, sb);
    return finish(c, code, msg, sb, sn);
}

static bool pairs_have(const http_header *v, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (bz_str_ieq_c(v[i].name, name))
            return true;
    return false;
}

/* Every answer carries x-request-id, also those given before any
 * interceptor ran (a malformed grpc-timeout, an unsupported codec or
 * encoding): the client's if it sent a plausible one, else a new one. */
static void ensure_request_id(grpc_call *c)
{
    if (c->headers_sent || pairs_have(c->headers, c->nheaders, "x-request-id"))
        return;
    bz_str in = grpc_metadata(c, "x-request-id");
    bool ok = in.p && in.n >= 1 && in.n <= 64;
    for (size_t i = 0; ok && i < in.n; i++) {
        char ch = in.p[i];
        ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
             ch == '_' || ch == ':' || ch == '-';
    }
    char id[65];
    if (ok)
        snprintf(id, sizeof id, "%.*s", (int)in.n, in.p);
    else
        snprintf(id, sizeof id, "%016llx", (unsigned long long)bz_rand64());
    grpc_add_header(c, "x-request-id", id);
}

void grpc__finish_default(grpc_call *c, int rc)
{
    if (c->finished)
        return;
    if (rt_ctx_err(c->ctx) == ETIMEDOUT)
        grpc_finish(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
    else if (rc < 0)
        grpc_finish(c, GRPC_INTERNAL, "internal error");
    else
        grpc_finish(c, GRPC_OK, NULL);
}

/* The end: a status if the handler set none, then headers (or the
 * trailers-only form), and the trailers. */
void grpc__call_end(grpc_call *c, int rc)
{
    ensure_request_id(c);
    grpc__finish_default(c, rc);
    http_req *r = c->r;
    const http_header *t = c->trailers;
    int tn = c->ntrailers;
    if (c->mode == GRPC_MODE_NATIVE) {
        if (!c->headers_sent && c->sent == 0) {
            /* Trailers-Only: the status rides in the one HEADERS frame */
            send_headers(c);
            for (int i = 0; i < tn; i++)
                http_add_header_n(r, t[i].name.p, t[i].value.p, t[i].value.n);
        } else {
            send_headers(c);
            for (int i = 0; i < tn; i++)
                http_add_trailer(r, t[i].name.p, t[i].value.p);
        }
    } else {
        /* gRPC-Web: the trailers are a final frame with flag 0x80 */
        send_headers(c);
        bz_buf f = BZ_BUF_INIT;
        for (int i = 0; i < tn; i++) {
            bz_buf_append_str(&f, t[i].name);
            bz_buf_append(&f, ": ", 2);
            bz_buf_append_str(&f, t[i].value);
            bz_buf_append(&f, "\r\n", 2);
        }
        write_frame(c, 0x80, f.data, f.len);
        bz_buf_free(&f);
    }
    bz_buf_free(&c->in);
    bz_buf_free(&c->text);
    bz_buf_free(&c->out);
}

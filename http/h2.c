/* http/h2.c — HTTP/2 (h2c, and h2 over TLS) connections: bazaar's own
 * frame layer (RFC 9113) and HPACK (hpack.c, RFC 7541), driven by the
 * runtime.
 *
 * Shape (the same as HTTP/1.1 in server.c): a connection is its rt_io, the
 * small http_conn and an http__h2.  No coroutine belongs to the
 * connection.  Bytes arriving call http__h2_event on the loop (outside
 * coroutines), which reads the socket into a per-thread buffer and parses
 * frames straight from it (only a frame cut by the end of a read is kept,
 * in h->in); a complete request head starts one coroutine per stream that
 * runs the ordinary http_handler.  Handlers append response bytes to their
 * stream and "kick" the connection: one short-lived sender coroutine per
 * loop turn serialises every stream's DATA into h->out and writes it with
 * one write(2).  Response HEADERS are encoded into h->out when the handler
 * flushes (before any DATA of theirs), control frames (SETTINGS and PING
 * ACKs, WINDOW_UPDATE, RST_STREAM, GOAWAY) as they are decided.  So an idle
 * connection holds no coroutine and, after the hibernate tick, no buffer
 * besides its HPACK table.
 *
 * Why our own codec and not libnghttp2: per request nghttp2 spent ~14,700
 * instructions (HPACK deflate/inflate with its own tables, header
 * validation, per-stream allocations, frame queues) of an h2c /healthz's
 * 23,400; the server needs a fraction of its generality.  Here the
 * response side keeps no HPACK state at all (hpack.h), and the request
 * side is one pass over the frame with fields copied once into the
 * stream's arena.
 *
 * Protocol errors (RFC 9113 §5.4): a connection error sends GOAWAY with
 * its code and closes (PROTOCOL_ERROR, FRAME_SIZE_ERROR, FLOW_CONTROL_ERROR,
 * COMPRESSION_ERROR for any malformed header block — the HPACK state is
 * lost); a stream error (a malformed request per §8.1.1 and §8.2–8.3, a
 * stream's flow-control window overrun, content-length against DATA) sends
 * RST_STREAM and the connection goes on.  Every header block is decoded,
 * also for streams that are refused or ignored, so the HPACK table stays in
 * step with the peer's.
 *
 * Flow control, both ways:
 *   - Request bodies: DATA is copied into the stream's buffer and the
 *     connection window is reopened at once (it is bounded by the stream
 *     windows anyway), but a stream's window reopens only as the handler
 *     reads (http_body_read), so an unread body costs at most one window
 *     (64 KiB) per stream.  WINDOW_UPDATEs go out once half a window is
 *     consumed.
 *   - Responses: DATA leaves as the client's windows and its
 *     SETTINGS_MAX_FRAME_SIZE allow.  A streaming handler's http_flush
 *     parks while more than H2_PEND_MAX bytes wait, until the client reads
 *     or the write deadline passes; and the connection stops reading while
 *     H2_OUT_MAX serialised bytes wait for the socket.  A connection with
 *     output waiting that makes no progress for --write-timeout is closed
 *     with GOAWAY(ENHANCE_YOUR_CALM): a zero-window stall costs the server
 *     nothing after that.
 *
 * Floods are counted in h2-guard.c before the frames are parsed.
 * Lifetimes: a stream lives until it is closed (both halves ended, or
 * reset) *and* its handler returned; the connection until it is closed
 * and no coroutine (handler or sender) refers to it.  on_event callbacks
 * never free (rt.h): frees happen on coroutines. */
#include "http/h2-private.h"
#include "http/hpack.h"

#include <bazaar/log.h>

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>

#define H2_PEND_MAX (64 * 1024)  /* response bytes a stream may queue before flush parks */
#define H2_OUT_MAX (64 * 1024)   /* serialised bytes waiting for the socket before reading pauses */
#define H2_READ_CHUNK 16384
#define H2_READS_PER_TURN 4      /* 64 KiB, then yield to other connections (fairness) */
#define H2_CONN_WINDOW (1 << 20) /* connection receive window */
#define H2_DISCARD_MAX (16 << 20) /* request body dropped after an early answer before RST_STREAM */
#define H2_LINGER_NS (1 * BZ_NS_PER_S) /* after GOAWAY, wait this long for the peer's close */
#define H2_HIBERNATE_NS (1 * BZ_NS_PER_S) /* idle this long: give buffers back */
#define H2_MAX_FRAME 16384       /* our SETTINGS_MAX_FRAME_SIZE (the default, not sent) */
#define H2_DEFAULT_WINDOW 65535  /* SETTINGS_INITIAL_WINDOW_SIZE's default: ours, and the peer's until it says */
#define H2_WINDOW_MAX 0x7fffffffLL
#define H2_MAX_SETTINGS 32       /* entries in one SETTINGS frame before it is abuse */

/* Frame types, flags, error codes and settings (RFC 9113 §6, §7, §6.5.2). */
enum { F_DATA = 0, F_HEADERS = 1, F_PRIORITY = 2, F_RST_STREAM = 3, F_SETTINGS = 4, F_PUSH_PROMISE = 5,
       F_PING = 6, F_GOAWAY = 7, F_WINDOW_UPDATE = 8, F_CONTINUATION = 9 };
enum { FL_END_STREAM = 0x1, FL_ACK = 0x1, FL_END_HEADERS = 0x4, FL_PADDED = 0x8, FL_PRIORITY = 0x20 };
enum { E_NO_ERROR = 0x0, E_PROTOCOL = 0x1, E_INTERNAL = 0x2, E_FLOW_CONTROL = 0x3, E_STREAM_CLOSED = 0x5,
       E_FRAME_SIZE = 0x6, E_REFUSED_STREAM = 0x7, E_COMPRESSION = 0x9, E_CALM = 0xb };
enum { S_HEADER_TABLE_SIZE = 1, S_ENABLE_PUSH = 2, S_MAX_CONCURRENT_STREAMS = 3, S_INITIAL_WINDOW_SIZE = 4,
       S_MAX_FRAME_SIZE = 5, S_MAX_HEADER_LIST_SIZE = 6, S_ENABLE_CONNECT_PROTOCOL = 8,
       S_NO_RFC7540_PRIORITIES = 9 };

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN 24

/* Request pseudo-header fields seen (h2_stream.pseudo). */
enum { P_METHOD = 1, P_PATH = 2, P_SCHEME = 4, P_AUTHORITY = 8 };

typedef struct http__h2_stream h2_stream;

struct http__h2_stream {
    http__h2 *h;
    uint32_t id;
    h2_stream *prev, *next;
    http_req req;
    bz_arena arena;     /* the request's: headers, handler allocations */
    rt_ctx ctx;         /* the request context; cancelled by RST_STREAM/close */
    /* request head, while it arrives */
    http_header *hdrs;
    int nh, hcap;
    bz_str method, path, authority;
    uint8_t pseudo;     /* P_* seen */
    size_t hdr_bytes;   /* HPACK-decoded size, as SETTINGS_MAX_HEADER_LIST_SIZE counts */
    int bad;            /* 431 when the head was over the limits */
    int64_t cl;         /* its content-length, -1 if none */
    int64_t in_total;   /* DATA bytes received (checked against cl) */
    /* request body */
    bz_buf in;
    size_t in_off;
    int64_t in_read;    /* bytes the handler read */
    bool in_eof;
    int64_t reserved;   /* budget held for a large message being received */
    int64_t msg_deadline; /* a framed body's current read deadline, 0 = the idle rule */
    bool budget_wait;   /* the handler waits for budget (woken as it frees) */
    int64_t recv_window; /* what the peer may still send on the stream */
    int64_t recv_unacked; /* consumed, not yet given back by WINDOW_UPDATE */
    /* response */
    int64_t send_window; /* what the peer lets us send */
    bz_buf pend;        /* body bytes not yet serialised */
    size_t pend_off;
    int64_t pend_counted; /* bytes of pend counted in the budgets */
    http_header *trailers; /* http_add_trailer's fields (in the arena) */
    int ntrailers, trailers_cap;
    rt_coro *waiter;    /* the handler, parked for body bytes or output room */
    int64_t read_deadline, write_deadline;
    bool hdr_pending;   /* the header block has not ended yet */
    bool running;       /* the handler coroutine exists */
    bool submitted;     /* response HEADERS encoded */
    bool has_data;      /* the sender has something to do: DATA, or the stream's end */
    bool head_es;       /* the HEADERS carried END_STREAM (the sender notes the end) */
    bool final;         /* the handler returned: no more body */
    bool closed;        /* closed (both halves ended, or reset) */
    bool remote_closed; /* the peer's half ended (END_STREAM, or reset) */
    bool local_closed;  /* our END_STREAM is serialised */
    bool slot;          /* accepted: holds one of the connection's stream slots */
    bool answered;      /* the response's END_STREAM went out */
    int64_t discarded;  /* request bytes dropped after the answer */
};

struct http__h2 {
    http_conn *c;
    h2_stream *streams;
    int nstreams;       /* stream objects alive */
    int nslots;         /* accepted streams alive (open, or their handler winds down) */
    int nrunning;       /* handler coroutines alive */
    int nhdr_pending;   /* header blocks still arriving */
    int npend;          /* streams with has_data */
    h2_stream *spare;   /* a freed stream kept for the next (stream_new) */
    size_t self_bytes;  /* malloc_usable_size of this struct */
    http__hpack_dec dec; /* the peer's header compression state */
    bz_buf out;         /* serialised frames not yet written */
    size_t out_off;
    bz_buf in;          /* the start of a frame the last read cut short */
    bz_buf block;       /* a header block spanning CONTINUATION frames */
    uint32_t block_sid; /* its stream */
    uint8_t block_kind; /* BLK_* */
    bool block_es;      /* its HEADERS had END_STREAM */
    bool block_selfdep; /* its HEADERS made the stream depend on itself */
    bool in_block;      /* CONTINUATION expected */
    uint32_t preface_left; /* client preface bytes still to check */
    bool settings_seen; /* the client's first SETTINGS arrived */
    uint32_t last_sid;  /* the highest stream id the client opened */
    uint32_t goaway_sid; /* draining: streams above it are ignored */
    int64_t send_window; /* the peer's connection window for our DATA */
    int64_t recv_window; /* what the peer may still send on the connection */
    int64_t recv_unacked;
    uint32_t peer_window; /* the peer's SETTINGS_INITIAL_WINDOW_SIZE */
    uint32_t peer_max_frame; /* the peer's SETTINGS_MAX_FRAME_SIZE */
    http__h2_guard guard;
    rt_timer stall;     /* output waiting without progress */
    rt_timer keepalive; /* PINGs a quiet connection that has calls running */
    int64_t last_in;    /* rt_now() when bytes last arrived */
    int64_t ping_at;    /* when our unanswered PING went out, 0 if none */
    int64_t progress, stall_mark; /* DATA bytes sent; at the last stall check */
    int64_t progress_at; /* rt_now() when DATA last moved (or the kernel's queue shrank) */
    int outq_seen;      /* the socket's unsent bytes at the last stall check */
    const char *calm_why; /* a header callback found abuse: GOAWAY(ENHANCE_YOUR_CALM) */
    const char *err_why; /* a connection error's reason, for the log */
    int64_t buffered;   /* budgeted bytes (response pend + request reservations) */
    int64_t counted;    /* heap bytes counted in heap_bytes */
    bool sender_queued; /* a sender coroutine will run */
    bool read_paused;   /* input left in the socket; the sender resumes it */
    bool draining;      /* graceful GOAWAY sent: close once streams are done */
    bool closing;       /* terminal GOAWAY queued: close once it is written */
    bool lingering;     /* GOAWAY written, write side shut: waiting for EOF */
    bool closed;        /* socket closed; freed once no coroutine refers to it */
    bool freeing;
    bool goaway_recv;   /* the peer sent GOAWAY: close once streams are done */
    int64_t idle_since; /* rt_now() when the connection last went idle */
};

/* What a header block is for (h->block_kind). */
enum { BLK_REQUEST, BLK_TRAILERS, BLK_IGNORE, BLK_CLOSED, BLK_NO_END };

static void h2_send(http__h2 *h);
static void h2_input(http__h2 *h);
static bool output_waiting(http__h2 *h);
static void h2_close_with(http__h2 *h, uint32_t code, const char *why);
static void h2_kick(http__h2 *h);
static void stream_free(h2_stream *s);

/* ---- memory count ---------------------------------------------------------------------------
 *
 * What the HTTP/2 connections of the process hold on the heap (the
 * connection, its HPACK table, its buffers), for tests and the
 * idle-connection benchmark; brought up to date after each step. */

static _Atomic int64_t heap_bytes;

int64_t http__h2_heap_bytes(void) { return atomic_load(&heap_bytes); }

static void mem_account(http__h2 *h)
{
    int64_t now = (int64_t)(h->self_bytes + http__hpack_dec_bytes(&h->dec) + h->out.cap + h->in.cap + h->block.cap);
    if (h->spare)
        now += (int64_t)(sizeof *h->spare + h->spare->arena.total + h->spare->pend.cap + h->spare->req.body.cap);
    if (now != h->counted) {
        atomic_fetch_add(&heap_bytes, now - h->counted);
        h->counted = now;
    }
}

/* ---- small helpers -------------------------------------------------------------------- */

int http__h2_preface(const char *p, size_t n)
{
    size_t k = n < PREFACE_LEN ? n : PREFACE_LEN;
    if (memcmp(p, PREFACE, k) != 0)
        return -1;
    return n >= PREFACE_LEN ? 1 : 0;
}

static bool no_body_status(int s) { return (s >= 100 && s < 200) || s == 204 || s == 304; }

static size_t pend_len(const h2_stream *s) { return s->pend.len - s->pend_off; }

static bool str_ieq(const char *a, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(a, lit, n) == 0;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* True if the comma-separated list v holds token tok (case-insensitive). */
static bool has_token(bz_str v, const char *tok)
{
    size_t i = 0;
    while (i < v.n) {
        while (i < v.n && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
            i++;
        size_t j = i;
        while (j < v.n && v.p[j] != ',' && v.p[j] != ' ' && v.p[j] != '\t')
            j++;
        if (j > i && str_ieq(v.p + i, j - i, tok))
            return true;
        i = j;
    }
    return false;
}

/* base64url (RFC 4648 §5), padding optional: HTTP2-Settings.  -1 if bad. */
static ssize_t b64url_decode(bz_str in, uint8_t *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < in.n; i++) {
        char ch = in.p[i];
        int v;
        if (ch >= 'A' && ch <= 'Z') v = ch - 'A';
        else if (ch >= 'a' && ch <= 'z') v = ch - 'a' + 26;
        else if (ch >= '0' && ch <= '9') v = ch - '0' + 52;
        else if (ch == '-') v = 62;
        else if (ch == '_') v = 63;
        else if (ch == '=') break;
        else return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap)
                return -1;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return (ssize_t)o;
}

/* Connection-specific fields are forbidden in HTTP/2 (RFC 9113 §8.2.2).
 * (By length first: most names are not one of these lengths.) */
static bool conn_specific(const char *n, size_t l)
{
    switch (l) {
    case 7: return !strncasecmp(n, "upgrade", 7);
    case 10: return !strncasecmp(n, "connection", 10) || !strncasecmp(n, "keep-alive", 10);
    case 16: return !strncasecmp(n, "proxy-connection", 16);
    case 17: return !strncasecmp(n, "transfer-encoding", 17);
    default: return false;
    }
}

/* Fields whose value is new on every response (the request id, the trace
 * it was logged under) go out as literals "never indexed" (RFC 7541
 * §6.2.3): no intermediary should spend table space on them.  (Our encoder
 * indexes nothing anyway; see hpack.h.) */
static bool unique_value(bz_str name)
{
    return (name.n == 12 && !memcmp(name.p, "x-request-id", 12)) ||
           (name.n == 13 && !memcmp(name.p, "traceresponse", 13));
}

/* Header fields (lower-case names from http_add_header / http_add_trailer)
 * as HPACK literals into o.  Connection-specific fields are dropped, and
 * Content-Length when the server sets it. */
static void put_fields(bz_buf *o, const http_header *hs, int n, bool drop_cl)
{
    for (int i = 0; i < n; i++) {
        const http_header *f = &hs[i];
        if (conn_specific(f->name.p, f->name.n) ||
            (drop_cl && f->name.n == 14 && !strncasecmp(f->name.p, "content-length", 14)))
            continue;
        http__hpack_put_field(o, f->name.p, f->name.n, f->value.p, f->value.n, unique_value(f->name));
    }
}

/* ---- frames out ------------------------------------------------------------------------- */

static void put_frame_hdr(uint8_t *w, size_t len, uint8_t type, uint8_t flags, uint32_t sid)
{
    w[0] = (uint8_t)(len >> 16);
    w[1] = (uint8_t)(len >> 8);
    w[2] = (uint8_t)len;
    w[3] = type;
    w[4] = flags;
    put_u32(w + 5, sid & 0x7fffffffu);
}

static void out_frame(http__h2 *h, uint8_t type, uint8_t flags, uint32_t sid, const void *payload, size_t len)
{
    bz_buf_reserve(&h->out, 9 + len);
    uint8_t *w = (uint8_t *)h->out.data + h->out.len;
    put_frame_hdr(w, len, type, flags, sid);
    if (len)
        memcpy(w + 9, payload, len);
    h->out.len += 9 + len;
    h->out.data[h->out.len] = '\0';
}

static void send_window_update(http__h2 *h, uint32_t sid, uint32_t inc)
{
    uint8_t p[4];
    put_u32(p, inc);
    out_frame(h, F_WINDOW_UPDATE, 0, sid, p, 4);
}

static void send_rst(http__h2 *h, uint32_t sid, uint32_t code)
{
    uint8_t p[4];
    put_u32(p, code);
    out_frame(h, F_RST_STREAM, 0, sid, p, 4);
}

static void send_goaway(http__h2 *h, uint32_t last, uint32_t code)
{
    uint8_t p[8];
    put_u32(p, last);
    put_u32(p + 4, code);
    out_frame(h, F_GOAWAY, 0, 0, p, 8);
}

/* Starts a header block: room for its frame header, the block encoded
 * after it; header_block_end writes the frame header. */
static size_t header_block_begin(http__h2 *h)
{
    size_t start = h->out.len;
    bz_buf_reserve(&h->out, 9);
    h->out.len += 9;
    return start;
}

/* Ends the header block begun at start: one HEADERS frame, or — past the
 * peer's SETTINGS_MAX_FRAME_SIZE — HEADERS and CONTINUATION frames. */
static void header_block_end(http__h2 *h, size_t start, uint32_t sid, uint8_t flags)
{
    size_t blen = h->out.len - start - 9;
    if (blen <= h->peer_max_frame) {
        put_frame_hdr((uint8_t *)h->out.data + start, blen, F_HEADERS, flags | FL_END_HEADERS, sid);
        return;
    }
    uint8_t *copy = malloc(blen);
    if (!copy)
        abort();
    memcpy(copy, h->out.data + start + 9, blen);
    h->out.len = start;
    for (size_t off = 0; off < blen;) {
        size_t k = blen - off < h->peer_max_frame ? blen - off : h->peer_max_frame;
        uint8_t fl = (off == 0 ? flags : 0) | (off + k == blen ? FL_END_HEADERS : 0);
        out_frame(h, off == 0 ? F_HEADERS : F_CONTINUATION, fl, sid, copy + off, k);
        off += k;
    }
    free(copy);
}

/* ---- budgets ---------------------------------------------------------------------------
 *
 * Memory is a budget, not a consequence of what peers send.  Counted per
 * connection (h->buffered, --conn-buffer-bytes) and per process
 * (g_buffered, --buffer-bytes, every server and loop): response bytes
 * queued in streams' pend buffers, and request bytes reserved for large
 * messages being assembled (http_body_reserve).  Streams running
 * handlers are counted per process too (g_streams, --max-streams). */

static _Atomic int64_t g_buffered, g_streams;

int64_t http__h2_buffered_bytes(void) { return atomic_load(&g_buffered); }
int64_t http__h2_streams(void) { return atomic_load(&g_streams); }

static void budget_add(http__h2 *h, int64_t d)
{
    h->buffered += d;
    atomic_fetch_add_explicit(&g_buffered, d, memory_order_relaxed);
}

static bool over_budget(const http__h2 *h)
{
    const http_server_opts *o = &h->c->srv->o;
    return h->buffered > o->conn_buffer_bytes || atomic_load_explicit(&g_buffered, memory_order_relaxed) > o->buffer_bytes;
}

/* Budget freed on h: streams of h waiting for it look again. */
static void budget_wake(http__h2 *h)
{
    for (h2_stream *w = h->streams; w; w = w->next)
        if (w->budget_wait && w->waiter)
            rt_wake(w->waiter, 0);
}

/* Brings the stream's pend accounting up to date. */
static void pend_account(h2_stream *s)
{
    int64_t now = (int64_t)(s->pend.len - s->pend_off);
    int64_t d = now - s->pend_counted;
    if (!d)
        return;
    s->pend_counted = now;
    budget_add(s->h, d);
    if (d < 0)
        budget_wake(s->h);
}

static void reserve_release(h2_stream *s)
{
    if (!s->reserved)
        return;
    budget_add(s->h, -s->reserved);
    s->reserved = 0;
    budget_wake(s->h);
}

/* ---- streams --------------------------------------------------------------------------- */

/* A connection keeps the last stream it freed (its struct, its arena's
 * first chunk, its response buffer) for the next one: one request after
 * another on a connection allocates nothing for its stream.  The spare
 * goes back to malloc at the hibernate tick. */
static h2_stream *stream_new(http__h2 *h, uint32_t id)
{
    h2_stream *s = h->spare;
    if (s) {
        h->spare = NULL;
        bz_arena a = s->arena;
        bz_buf pend = s->pend, body = s->req.body;
        memset(s, 0, sizeof *s);
        s->arena = a;
        s->pend = pend;
        s->req.body = body;
    } else {
        s = calloc(1, sizeof *s);
        if (!s)
            abort();
        bz_arena_init(&s->arena, 4096);
    }
    s->h = h;
    s->id = id;
    s->cl = -1;
    s->recv_window = H2_DEFAULT_WINDOW;
    s->send_window = h->peer_window;
    rt_ctx_init(&s->ctx, NULL);
    if (atomic_load(&h->c->srv->cancelled))
        rt_ctx_cancel(&s->ctx);
    s->next = h->streams;
    if (s->next)
        s->next->prev = s;
    h->streams = s;
    h->nstreams++;
    return s;
}

static void stream_free(h2_stream *s)
{
    http__h2 *h = s->h;
    if (s->prev)
        s->prev->next = s->next;
    else
        h->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    h->nstreams--;
    if (s->slot)
        h->nslots--;
    if (s->hdr_pending)
        h->nhdr_pending--;
    if (s->has_data)
        h->npend--;
    bz_buf_free(&s->in);
    bz_buf_clear(&s->pend);
    s->pend_off = 0;
    pend_account(s);
    reserve_release(s);
    rt_ctx_release(&s->ctx);
    if (!h->spare && !h->freeing && s->pend.cap <= H2_PEND_MAX && s->req.body.cap <= H2_PEND_MAX) {
        /* (the two response buffers: flush swaps them, so both are warm) */
        bz_buf_clear(&s->req.body);
        bz_arena_reset(&s->arena);
        h->spare = s;
        return;
    }
    bz_buf_free(&s->req.body);
    bz_buf_free(&s->pend);
    bz_arena_free(&s->arena);
    free(s);
}

static void spare_free(http__h2 *h)
{
    h2_stream *s = h->spare;
    if (!s)
        return;
    h->spare = NULL;
    bz_buf_free(&s->pend);
    bz_buf_free(&s->req.body);
    bz_arena_free(&s->arena);
    free(s);
}

static void stream_wake(h2_stream *s)
{
    if (s->waiter)
        rt_wake(s->waiter, 0);
}

static h2_stream *stream_find(http__h2 *h, uint32_t id)
{
    for (h2_stream *s = h->streams; s; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

/* The stream is closed (both halves ended, or reset): a running handler's
 * context ends and every wait of it returns; otherwise it is freed. */
static void stream_close(h2_stream *s)
{
    http__h2 *h = s->h;
    if (s->closed)
        return;
    s->closed = s->remote_closed = s->local_closed = true;
    if (s->has_data) {
        s->has_data = false;
        h->npend--;
    }
    if (s->running) {
        rt_ctx_cancel(&s->ctx);
        stream_wake(s);
    } else {
        stream_free(s);
    }
}

/* RST_STREAM(code) for s, which is closed (and perhaps freed). */
static void rst_stream(h2_stream *s, uint32_t code)
{
    send_rst(s->h, s->id, code);
    stream_close(s);
}

/* The peer's half of s ended. */
static void remote_end(h2_stream *s)
{
    s->remote_closed = true;
    s->in_eof = true;
    stream_wake(s);
    if (s->local_closed)
        stream_close(s);
}

/* k request bytes of s were consumed (read by the handler, or dropped):
 * its window reopens once half of it is used.  True if a WINDOW_UPDATE
 * was queued. */
static bool stream_consumed(h2_stream *s, size_t k)
{
    if (s->remote_closed || s->closed)
        return false;
    s->recv_unacked += (int64_t)k;
    if (s->recv_unacked < H2_DEFAULT_WINDOW / 2)
        return false;
    send_window_update(s->h, s->id, (uint32_t)s->recv_unacked);
    s->recv_window += s->recv_unacked;
    s->recv_unacked = 0;
    return true;
}

/* Fills the stream's http_req from the received head. */
static void req_build(h2_stream *s, bool end_stream)
{
    http__h2 *h = s->h;
    http_req *r = &s->req;
    r->method = s->method;
    r->target = s->path;
    ptrdiff_t q = bz_str_index(s->path, '?');
    r->path = q >= 0 ? bz_str_make(s->path.p, (size_t)q) : s->path;
    r->query = q >= 0 ? bz_str_make(s->path.p + q + 1, s->path.n - (size_t)q - 1) : BZ_STR_LIT("");
    r->minor = 1;
    r->h2 = true;
    /* Handlers look for Host; HTTP/2 carries it as :authority. */
    bool host = false;
    int cookies = 0;
    size_t cookie_len = 0;
    /* (checked when it arrived: digits, one value; DATA is checked against it) */
    r->content_length = s->cl;
    for (int i = 0; i < s->nh; i++) {
        bz_str n = s->hdrs[i].name;
        if (bz_str_eq_c(n, "host"))
            host = true;
        else if (bz_str_eq_c(n, "cookie")) {
            cookies++;
            cookie_len += s->hdrs[i].value.n + 2;
        }
    }
    if (!host && s->authority.n && s->nh < HTTP_MAX_HEADERS) {
        http__fields_room(&s->arena, &s->hdrs, s->nh, &s->hcap);
        s->hdrs[s->nh++] = (http_header){BZ_STR_LIT("host"), s->authority};
    }
    if (cookies > 1) {
        /* RFC 9113 §8.2.3: crumbs are joined with "; " for HTTP/1.1 code. */
        char *j = bz_arena_alloc(&s->arena, cookie_len);
        size_t o = 0;
        int first = -1, w = 0;
        for (int i = 0; i < s->nh; i++) {
            if (bz_str_eq_c(s->hdrs[i].name, "cookie")) {
                if (o) {
                    j[o++] = ';';
                    j[o++] = ' ';
                }
                memcpy(j + o, s->hdrs[i].value.p, s->hdrs[i].value.n);
                o += s->hdrs[i].value.n;
                if (first >= 0)
                    continue;
                first = w;
            }
            s->hdrs[w++] = s->hdrs[i];
        }
        s->nh = w;
        s->hdrs[first].value = bz_str_make(j, o);
    }
    r->headers = s->hdrs;
    r->nheaders = s->nh;
    r->chunked = !end_stream && r->content_length < 0;
    r->keep_alive = true;
    r->arena = &s->arena;
    r->ctx = &s->ctx;
    r->conn = h->c;
    r->h2s = s;
    r->head = bz_str_eq_c(r->method, "HEAD");
    r->start_ns = rt_now();
    memcpy(r->peer, h->c->peer, sizeof h->c->peer);
}

static void stream_run(void *p);

/* The flood guard asks whether a client's RST_STREAM is the normal end of
 * a call whose deadline came: the stream is running, at least 1 ms old
 * (so a reset right behind its HEADERS always counts), and in the last
 * quarter (at least the last 5 ms) of the time its deadline gave it
 * (grpc-timeout, or --request-timeout) — a client's timer starts before
 * ours, and fires a little early or late. */
#define RESET_DEADLINE_SLACK_NS (5 * BZ_NS_PER_MS)
static bool reset_expected(void *arg, uint32_t id, int64_t now)
{
    http__h2 *h = arg;
    h2_stream *s = stream_find(h, id);
    if (!s || !s->running || s->ctx.deadline == BZ_NO_DEADLINE)
        return false;
    int64_t age = now - s->req.start_ns, left = s->ctx.deadline - now;
    int64_t slack = (s->ctx.deadline - s->req.start_ns) / 4;
    return age >= BZ_NS_PER_MS && left <= (slack > RESET_DEADLINE_SLACK_NS ? slack : RESET_DEADLINE_SLACK_NS);
}

/* The head is complete: start the handler (or refuse the stream, which
 * frees it: callers do not touch s after this). */
static void stream_start(http__h2 *h, h2_stream *s, bool end_stream)
{
    http_server *srv = h->c->srv;
    req_build(s, end_stream);
    s->in_eof = end_stream;
    if (h->nslots >= srv->o.h2_max_concurrent_streams) {
        /* Past SETTINGS_MAX_CONCURRENT_STREAMS (counting streams reset by
         * the client whose handlers still wind down): a stream error, not
         * a connection error (RFC 9113 §5.1.2), so the calls in flight go
         * on and the client may retry this one. */
        rst_stream(s, E_REFUSED_STREAM);
        return;
    }
    if (atomic_fetch_add(&g_streams, 1) >= srv->o.max_streams && h->nrunning > 0) {
        /* The process-wide budget of streams (each holds a coroutine and
         * its request): refused, the client may retry later.  A
         * connection's first stream is always admitted, so a client that
         * asks for one thing at a time is never refused because others
         * hold many (the bound is --max-streams + --max-conns). */
        atomic_fetch_sub(&g_streams, 1);
        rst_stream(s, E_REFUSED_STREAM);
        return;
    }
    s->slot = true;
    h->nslots++;
    int64_t now = rt_now();
    s->read_deadline = now + srv->o.read_timeout_ns;
    s->write_deadline = now + srv->o.write_timeout_ns;
    s->running = true;
    h->nrunning++;
    rt_go(stream_run, s);
}

static void h2_maybe_free(http__h2 *h)
{
    if (h->closed && !h->nrunning && !h->sender_queued)
        http__conn_free(h->c);
}

static void stream_run(void *p)
{
    h2_stream *s = p;
    http__h2 *h = s->h;
    http_server *srv = h->c->srv;
    http_req *r = &s->req;
    if (!s->closed && !h->closed && !rt_ctx_err(&s->ctx)) {
        int rc = 0;
        http__trace_begin(r);
        /* A body over the limit is refused when read (http__h2_body_read):
         * the limit is the handler's (gRPC raises it, r->body_limit). */
        if (s->bad) {
            http_send_problem(r, 431, "header_too_large", "the request header fields are too large");
        } else {
            rc = srv->h.fn(r, srv->h.data);
        }
        if (rc < 0 && !r->started) {
            http__handler_failed(r, rc);
            rc = 0;
        }
        if (rc < 0) {
            /* Failed mid-stream: reset, so the client sees an error rather
             * than a complete-looking truncated response. */
            if (!s->closed && !h->closed && !h->closing)
                rst_stream(s, E_INTERNAL);
            h2_kick(h);
        } else {
            http__h2_flush(r, true);
        }
        http__trace_end(r);
    }
    s->running = false;
    h->nrunning--;
    atomic_fetch_sub(&g_streams, 1);
    reserve_release(s);
    if (s->closed || h->closed)
        stream_free(s);
    h2_maybe_free(h);
}

/* ---- http_req hooks ------------------------------------------------------------------------ */

int http__h2_flush(http_req *r, bool final)
{
    h2_stream *s = r->h2s;
    http__h2 *h = s->h;
    if (s->closed || h->closed || h->closing) {
        bz_buf_clear(&r->body);
        return final ? 0 : -EPIPE;
    }
    if (!r->status)
        r->status = 200;
    bool nobody = r->head || no_body_status(r->status);
    if (!s->submitted) {
        if (!final)
            r->streaming = true;
        /* No content-length when trailers follow (gRPC): the message does
         * not end with the body, and clients read on for the trailers.  Nor
         * for an empty answer: its HEADERS frame ends the stream, which says
         * as much (a gRPC trailers-only answer carries none, as grpc-go's
         * and grpc-java's do not). */
        bool with_cl = final && !no_body_status(r->status) && !s->ntrailers && (r->body.len || r->head);
        bool dp = !final || (!nobody && r->body.len) || s->ntrailers;
        /* The HEADERS frame goes into the output now, ahead of any DATA of
         * the stream (the sender adds those later). */
        size_t start = header_block_begin(h);
        http__hpack_put_status(&h->out, r->status);
        /* (the loop's Date buffer always holds a 29-byte date) */
        http__hpack_put_field(&h->out, "date", 4, http__date(h->c->ls), 29, false);
        if (with_cl) {
            char cl[24];
            size_t n = bz_fmt_i64(cl, (int64_t)r->body.len);
            http__hpack_put_field(&h->out, "content-length", 14, cl, n, false);
        }
        put_fields(&h->out, r->resp_headers, r->nresp_headers, with_cl);
        header_block_end(h, start, s->id, dp ? 0 : FL_END_STREAM);
        s->submitted = r->started = true;
        /* The sender notes the stream's end (or serialises its DATA). */
        s->head_es = !dp;
        s->has_data = true;
        h->npend++;
    }
    if (!nobody && r->body.len) {
        if (pend_len(s) == 0) {
            /* Swap instead of copying: the handler's buffer becomes the
             * stream's, and the drained one is reused for its next writes. */
            bz_buf t = s->pend;
            s->pend = r->body;
            r->body = t;
            s->pend_off = 0;
        } else {
            bz_buf_append(&s->pend, r->body.data, r->body.len);
        }
        pend_account(s);
    }
    bz_buf_clear(&r->body);
    if (final)
        s->final = true;
    h2_kick(h);
    if (final)
        return 0;
    /* Bounded memory for a client that stops reading: park until it does. */
    for (;;) {
        if (s->closed || h->closed || h->closing)
            return -EPIPE;
        /* Over the connection's or the process's budget, a stream with
         * bytes queued waits for them to leave (one with none may always
         * queue a slice, so every stream makes progress). */
        bool budget = pend_len(s) > 0 && over_budget(h);
        if (pend_len(s) <= H2_PEND_MAX && !budget)
            return 0;
        s->waiter = rt_self();
        s->budget_wait = budget;
        /* Budget freed on other connections wakes nobody here: look again
         * every few ms while waiting for it. */
        int64_t until = budget && s->write_deadline > rt_now() + 20 * BZ_NS_PER_MS ? rt_now() + 20 * BZ_NS_PER_MS
                                                                               : s->write_deadline;
        int e = rt_park(&s->ctx, until, NULL);
        s->waiter = NULL;
        s->budget_wait = false;
        if (e == -ETIMEDOUT && until < s->write_deadline)
            continue;
        if (e == -ETIMEDOUT && !h->closing && !h->closed && (s->send_window <= 0 || h->send_window <= 0)) {
            /* The write deadline passed with the peer's window shut: a
             * zero-window stall, whichever of this and the stall check
             * notices first. */
            h2_close_with(h, E_CALM, "no window for the write timeout (zero-window stall)");
        }
        if (e < 0)
            return e;
    }
}

/* k more body bytes were handed to the handler (copied or taken): count
 * them against the limit and give the window back. */
static ssize_t body_consumed(http_req *r, size_t k, int64_t limit)
{
    h2_stream *s = r->h2s;
    http__h2 *h = s->h;
    s->in_read += (int64_t)k;
    /* Reading is what reopens the stream's window. */
    if (!s->closed && !h->closed && stream_consumed(s, k))
        h2_kick(h);
    if (r->body_limit >= 0 && s->in_read > limit)
        return -EMSGSIZE;
    return (ssize_t)k;
}

ssize_t http__h2_body_read(http_req *r, void *buf, size_t n)
{
    h2_stream *s = r->h2s;
    http__h2 *h = s->h;
    if (n == 0)
        return 0;
    int64_t limit = r->body_limit ? r->body_limit : h->c->srv->o.max_body_bytes;
    if (r->body_limit >= 0 && r->content_length > limit)
        return -EMSGSIZE; /* refused before a byte is read */
    for (;;) {
        size_t avail = s->in.len - s->in_off;
        if (avail) {
            size_t k = avail < n ? avail : n;
            memcpy(buf, s->in.data + s->in_off, k);
            s->in_off += k;
            if (s->in_off == s->in.len) {
                bz_buf_clear(&s->in);
                s->in_off = 0;
            }
            return body_consumed(r, k, limit);
        }
        if (s->in_eof)
            return 0;
        if (s->closed || h->closed)
            return -ECONNRESET;
        s->waiter = rt_self();
        /* A framed stream (gRPC: body_limit -1) may be quiet between
         * messages for as long as the call lives; its deadline is the
         * call's (grpc-timeout tightens the stream's context) and dead
         * peers are found by keepalive PINGs. */
        /* Every wait for client bytes has a deadline: a framed stream's is
         * set by its framing layer while a message arrives (gRPC: the read
         * timeout), else the idle timeout — no bytes at all for that long
         * and the stream is given up. */
        int64_t dl = s->read_deadline;
        if (r->body_limit < 0)
            dl = s->msg_deadline ? s->msg_deadline : rt_now() + h->c->srv->o.idle_timeout_ns;
        int e = rt_park(&s->ctx, dl, NULL);
        s->waiter = NULL;
        if (e < 0)
            return e;
    }
}

ssize_t http__h2_body_take(http_req *r, bz_buf *b, size_t min)
{
    h2_stream *s = r->h2s;
    http__h2 *h = s->h;
    size_t k = s->in.len;
    if (b->len || s->in_off || k == 0 || k < min)
        return 0;
    int64_t limit = r->body_limit ? r->body_limit : h->c->srv->o.max_body_bytes;
    if (r->body_limit >= 0 && r->content_length > limit)
        return -EMSGSIZE;
    bz_buf t = *b;
    *b = s->in;
    s->in = t;
    bz_buf_clear(&s->in);
    return body_consumed(r, k, limit);
}

void http__h2_set_write_deadline(http_req *r, int64_t deadline_ns) { r->h2s->write_deadline = deadline_ns; }

void http__h2_set_read_deadline(http_req *r, int64_t deadline_ns) { r->h2s->msg_deadline = deadline_ns; }

int http__h2_body_reserve(http_req *r, int64_t n)
{
    h2_stream *s = r->h2s;
    http__h2 *h = s->h;
    const http_server_opts *o = &h->c->srv->o;
    reserve_release(s);
    int64_t deadline = rt_now() + o->read_timeout_ns;
    for (;;) {
        if (s->closed || h->closed)
            return -ECONNRESET;
        int64_t g = atomic_load_explicit(&g_buffered, memory_order_relaxed);
        if (g > 0 && g + n > o->buffer_bytes)
            return -ENOBUFS; /* the process is full: refuse rather than queue */
        if (h->buffered == 0 || h->buffered + n <= o->conn_buffer_bytes) {
            s->reserved = n;
            budget_add(h, n);
            return 0;
        }
        /* The connection is full: wait for its other streams (the peer
         * sends them all, so one of them finishes). */
        s->waiter = rt_self();
        s->budget_wait = true;
        int e = rt_park(&s->ctx, deadline, NULL);
        s->waiter = NULL;
        s->budget_wait = false;
        if (e < 0)
            return e;
    }
}

void http__h2_body_release(http_req *r) { reserve_release(r->h2s); }

int http_add_trailer(http_req *r, const char *name, const char *value)
{
    if (!r->h2s)
        return -ENOTSUP;
    h2_stream *s = r->h2s;
    http__fields_room(&s->arena, &s->trailers, s->ntrailers, &s->trailers_cap);
    /* (one allocation for both copies) */
    size_t nl = strlen(name), vl = strlen(value);
    char *d = bz_arena_alloc(&s->arena, nl + vl + 2);
    memcpy(d, name, nl + 1);
    memcpy(d + nl + 1, value, vl + 1);
    s->trailers[s->ntrailers++] = (http_header){bz_str_make(d, nl), bz_str_make(d + nl + 1, vl)};
    return 0;
}

static bz_str arena_str(bz_arena *a, const uint8_t *p, size_t n)
{
    char *d = bz_arena_alloc(a, n + 1);
    memcpy(d, p, n);
    d[n] = '\0';
    return bz_str_make(d, n);
}

/* n bytes of the stream's pend go out: copied to out, accounted, the
 * handler woken if it waits for room. */
static void pend_sent(h2_stream *s, uint8_t *out, size_t n)
{
    http__h2 *h = s->h;
    memcpy(out, s->pend.data + s->pend_off, n);
    s->pend_off += n;
    if (s->pend_off == s->pend.len) {
        bz_buf_clear(&s->pend);
        s->pend_off = 0;
    }
    pend_account(s);
    h->progress += (int64_t)n;
    h->progress_at = rt_now();
    http__h2_guard_sent_data(&h->guard);
    if (s->waiter && s->running && !s->final && pend_len(s) <= H2_PEND_MAX)
        rt_wake(s->waiter, 0);
}

/* ---- the sender: DATA, trailers, the streams' ends ---------------------------------------------- */

/* Our END_STREAM for s is serialised.  After the last frame of a response
 * on a stream whose request is still open — an early answer —
 * RST_STREAM(NO_ERROR) asks the client to stop sending (RFC 9113 §8.1)
 * and closes the stream, so its slot is free at once rather than when (if
 * ever) the client ends its half.  At once for framed streams (gRPC,
 * r->body_limit < 0: e.g. RESOURCE_EXHAUSTED for an over-limit message),
 * as grpc-go's and grpc-java's servers do and every gRPC client expects.
 * Other requests (a 413) are let finish their body, discarded, up to
 * H2_DISCARD_MAX (on_data) before the reset: curl before 8.x fails a
 * transfer whose upload a RST_STREAM(NO_ERROR) cut short, though the RFC
 * says not to.  s may be freed. */
static void end_stream_sent(http__h2 *h, h2_stream *s)
{
    s->local_closed = s->answered = true;
    if (s->has_data) {
        s->has_data = false;
        h->npend--;
    }
    if (s->remote_closed)
        stream_close(s);
    else if (s->req.body_limit < 0)
        rst_stream(s, E_NO_ERROR);
}

/* Serialises what s has to send, one DATA frame at most (round robin
 * between streams), and its end once the body is out: END_STREAM on the
 * last DATA frame, or the trailers, or an empty DATA frame.  True if it
 * produced anything.  s may be freed.
 *
 * A response frame sent is also what lets the client's next PING through
 * the flood guard (h2-guard.c): gRPC clients probe the bandwidth-delay
 * product with a PING after receiving data. */
static bool stream_emit(http__h2 *h, h2_stream *s)
{
    h->guard.ping_earned = true;
    if (s->head_es) { /* the HEADERS frame ended the stream */
        s->head_es = false;
        end_stream_sent(h, s);
        return true;
    }
    size_t avail = pend_len(s);
    if (avail) {
        int64_t win = s->send_window < h->send_window ? s->send_window : h->send_window;
        if (win <= 0)
            return false;
        size_t k = avail;
        if ((int64_t)k > win)
            k = (size_t)win;
        if (k > h->peer_max_frame)
            k = h->peer_max_frame;
        bool end = k == avail && s->final && !s->ntrailers;
        bz_buf_reserve(&h->out, 9 + k);
        uint8_t *w = (uint8_t *)h->out.data + h->out.len;
        put_frame_hdr(w, k, F_DATA, end ? FL_END_STREAM : 0, s->id);
        pend_sent(s, w + 9, k);
        h->out.len += 9 + k;
        h->out.data[h->out.len] = '\0';
        s->send_window -= (int64_t)k;
        h->send_window -= (int64_t)k;
        if (end) {
            end_stream_sent(h, s);
            return true;
        }
        if (k < avail || !s->final)
            return true;
    } else if (!s->final) {
        return false; /* the handler has more to say */
    }
    if (s->ntrailers) {
        size_t start = header_block_begin(h);
        put_fields(&h->out, s->trailers, s->ntrailers, false);
        header_block_end(h, start, s->id, FL_END_STREAM);
    } else {
        out_frame(h, F_DATA, FL_END_STREAM, s->id, NULL, 0);
    }
    end_stream_sent(h, s);
    return true;
}

/* Serialises the streams' output into h->out until H2_OUT_MAX bytes wait
 * (true: full, more to do) or nothing can move. */
static bool serialise(http__h2 *h)
{
    for (int pass = 0; pass < 100000 && h->npend; pass++) {
        bool any = false;
        for (h2_stream *s = h->streams, *nx; s; s = nx) {
            nx = s->next;
            if (!s->has_data)
                continue;
            if (h->out.len - h->out_off >= H2_OUT_MAX)
                return true;
            any |= stream_emit(h, s);
        }
        if (!any)
            break;
    }
    return false;
}

/* ---- frames in -------------------------------------------------------------------------- */

static uint32_t conn_error(http__h2 *h, uint32_t code, const char *why)
{
    h->err_why = why;
    return code;
}

static bool method_ok(bz_str m)
{
    if (m.n == 0)
        return false;
    for (size_t i = 0; i < m.n; i++) {
        uint8_t c = (uint8_t)m.p[i];
        if (c >= 'A' && c <= 'Z')
            c = (uint8_t)(c + 32);
        if (!http__hpack_name_ok(&c, 1) || c == ':')
            return false;
    }
    return true;
}

/* conn_specific for a name known to be lower-case. */
static bool conn_specific_lc(const uint8_t *n, size_t l)
{
    switch (l) {
    case 7: return !memcmp(n, "upgrade", 7);
    case 10: return !memcmp(n, "connection", 10) || !memcmp(n, "keep-alive", 10);
    case 16: return !memcmp(n, "proxy-connection", 16);
    case 17: return !memcmp(n, "transfer-encoding", 17);
    default: return false;
    }
}

/* A header block being decoded. */
typedef struct {
    http__h2 *h;
    h2_stream *s;       /* NULL: decoded for the HPACK state only */
    bool trailers;
    bool regular;       /* a regular field was seen (pseudo-fields must come first) */
    bool malformed;
    size_t decoded;     /* decoded bytes not yet counted by the guard */
} hblock;

/* Counts decoded header bytes with the flood guard (per block, and every
 * 16 KiB within one); false past its budget. */
static bool decoded_flush(hblock *x)
{
    http__h2 *h = x->h;
    size_t n = x->decoded;
    x->decoded = 0;
    if (n && !http__h2_guard_decoded(&h->guard, n, rt_now())) {
        h->calm_why = h->guard.why;
        return false;
    }
    return true;
}

static int on_field(void *arg, const uint8_t *name, size_t nl, const uint8_t *value, size_t vl, unsigned flags)
{
    hblock *x = arg;
    http__h2 *h = x->h;
    /* Decoding is work whatever we keep: counted per connection. */
    x->decoded += nl + vl + 32;
    if (x->decoded >= 16384 && !decoded_flush(x))
        return 1;
    h2_stream *s = x->s;
    if (!s || x->malformed)
        return 0;
    bool pseudo = nl && name[0] == ':';
    if (!(flags & HTTP_HPACK_CHECKED) &&
        !((flags & HTTP_HPACK_NAME_OK || http__hpack_name_ok(name, nl)) && http__hpack_value_ok(value, vl))) {
        x->malformed = true; /* RFC 9113 §8.2.1 */
        return 0;
    }
    if (x->trailers) { /* request trailers: checked, not passed on */
        if (pseudo)
            x->malformed = true;
        return 0;
    }
    /* The SETTINGS_MAX_HEADER_LIST_SIZE measure (RFC 9113 §6.5.2). */
    s->hdr_bytes += nl + vl + 32;
    size_t max = (size_t)h->c->srv->o.max_header_bytes;
    if (s->hdr_bytes > max) {
        if (!s->bad && !http__h2_guard_oversized(&h->guard, rt_now())) {
            h->calm_why = h->guard.why;
            return 1;
        }
        s->bad = 431;
        /* Past four times the limit we advertised the client is not
         * mistaken but decoding for nothing: stop. */
        if (s->hdr_bytes > 4 * max + 16384) {
            h->calm_why = "header list far beyond SETTINGS_MAX_HEADER_LIST_SIZE (HPACK bomb)";
            return 1;
        }
        return 0; /* keep decoding (HPACK state), store nothing more */
    }
    if (s->bad)
        return 0;
    if (pseudo) {
        uint8_t bit = 0;
        bz_str *dst = NULL;
        if (nl == 7 && !memcmp(name, ":method", 7))
            bit = P_METHOD, dst = &s->method;
        else if (nl == 5 && !memcmp(name, ":path", 5))
            bit = P_PATH, dst = &s->path;
        else if (nl == 10 && !memcmp(name, ":authority", 10))
            bit = P_AUTHORITY, dst = &s->authority;
        else if (nl == 7 && !memcmp(name, ":scheme", 7))
            bit = P_SCHEME;
        /* unknown pseudo-fields (:protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL,
         * response ones), repeated ones, or after a regular field: malformed */
        if (!bit || (s->pseudo & bit) || x->regular) {
            x->malformed = true;
            return 0;
        }
        s->pseudo |= bit;
        if (dst)
            *dst = flags & HTTP_HPACK_STATIC_VALUE ? bz_str_make((const char *)value, vl)
                                                   : arena_str(&s->arena, value, vl);
        return 0;
    }
    x->regular = true;
    if (conn_specific_lc(name, nl) || (nl == 2 && !memcmp(name, "te", 2) && !str_ieq((const char *)value, vl, "trailers"))) {
        x->malformed = true;
        return 0;
    }
    if (nl == 14 && !memcmp(name, "content-length", 14)) {
        int64_t v = 0;
        if (vl == 0 || vl > 18) {
            x->malformed = true;
            return 0;
        }
        for (size_t k = 0; k < vl; k++) {
            if (value[k] < '0' || value[k] > '9') {
                x->malformed = true;
                return 0;
            }
            v = v * 10 + (value[k] - '0');
        }
        if (s->cl >= 0 && s->cl != v) {
            x->malformed = true;
            return 0;
        }
        s->cl = v;
    }
    if (s->nh >= HTTP_MAX_HEADERS - 1) { /* one slot kept for host */
        s->bad = 431;
        return 0;
    }
    if (s->nh == s->hcap)
        http__fields_room(&s->arena, &s->hdrs, s->nh, &s->hcap);
    /* One allocation for both strings; static table strings are not copied. */
    if ((flags & HTTP_HPACK_STATIC_VALUE)) {
        s->hdrs[s->nh++] = (http_header){bz_str_make((const char *)name, nl), bz_str_make((const char *)value, vl)};
        return 0;
    }
    bool copy_name = !(flags & HTTP_HPACK_STATIC_NAME);
    char *d = bz_arena_alloc(&s->arena, (copy_name ? nl + 1 : 0) + vl + 1);
    bz_str ns = bz_str_make((const char *)name, nl);
    if (copy_name) {
        memcpy(d, name, nl);
        d[nl] = '\0';
        ns.p = d;
        d += nl + 1;
    }
    if (vl)
        memcpy(d, value, vl);
    d[vl] = '\0';
    s->hdrs[s->nh++] = (http_header){ns, bz_str_make(d, vl)};
    return 0;
}

/* The request's pseudo-fields are complete and consistent (RFC 9113
 * §8.3.1, §8.5). */
static bool pseudo_ok(const h2_stream *s)
{
    if (!(s->pseudo & P_METHOD) || !method_ok(s->method))
        return false;
    if (bz_str_eq_c(s->method, "CONNECT"))
        return (s->pseudo & P_AUTHORITY) && !(s->pseudo & (P_SCHEME | P_PATH));
    if ((s->pseudo & (P_SCHEME | P_PATH)) != (P_SCHEME | P_PATH) || s->path.n == 0)
        return false;
    return s->path.p[0] == '/' || (bz_str_eq_c(s->path, "*") && bz_str_eq_c(s->method, "OPTIONS"));
}

/* A whole header block of stream h->block_sid. */
static uint32_t block_done(http__h2 *h, const uint8_t *b, size_t n)
{
    h->in_block = false;
    uint32_t sid = h->block_sid;
    uint8_t kind = h->block_kind;
    h2_stream *s = kind == BLK_REQUEST || kind == BLK_TRAILERS || kind == BLK_NO_END ? stream_find(h, sid) : NULL;
    hblock x = {h, kind == BLK_REQUEST || kind == BLK_TRAILERS ? s : NULL, kind == BLK_TRAILERS, false, false, 0};
    int rc = http__hpack_decode(&h->dec, b, n, on_field, &x);
    if (rc == HTTP_HPACK_EMALFORMED)
        return conn_error(h, E_COMPRESSION, "malformed HPACK header block");
    if (rc || !decoded_flush(&x))
        return conn_error(h, E_CALM, h->calm_why ? h->calm_why : "header block abuse");
    if (h->block.cap > 4 * H2_MAX_FRAME)
        bz_buf_free(&h->block);
    else
        bz_buf_clear(&h->block);
    switch (kind) {
    case BLK_CLOSED: /* a frame on a stream that ended (RFC 9113 §5.1) */
        send_rst(h, sid, E_STREAM_CLOSED);
        return 0;
    case BLK_NO_END: /* a second HEADERS without END_STREAM */
        if (s)
            rst_stream(s, E_PROTOCOL);
        return 0;
    case BLK_TRAILERS:
        if (!s)
            return 0;
        if (x.malformed || (s->cl >= 0 && s->in_total != s->cl))
            rst_stream(s, E_PROTOCOL);
        else
            remote_end(s);
        return 0;
    case BLK_REQUEST:
        if (!s)
            return 0;
        s->hdr_pending = false;
        h->nhdr_pending--;
        /* A malformed request is a stream error (RFC 9113 §8.1.1); a head
         * over the limits is answered 431, whatever it holds. */
        if (h->block_selfdep || x.malformed || (!s->bad && !pseudo_ok(s)) ||
            (h->block_es && s->cl > 0)) {
            rst_stream(s, E_PROTOCOL);
            return 0;
        }
        if (h->block_es)
            s->remote_closed = true;
        stream_start(h, s, h->block_es);
        return 0;
    default:
        return 0;
    }
}

static uint32_t on_headers(http__h2 *h, uint8_t flags, uint32_t sid, const uint8_t *p, uint32_t len)
{
    if (sid == 0)
        return conn_error(h, E_PROTOCOL, "HEADERS on stream 0");
    if (!(sid & 1))
        return conn_error(h, E_PROTOCOL, "HEADERS on a stream id the server would open");
    if (flags & FL_PADDED) {
        if (len < 1 || p[0] >= len)
            return conn_error(h, E_PROTOCOL, "HEADERS padding too long");
        len -= 1u + p[0];
        p++;
    }
    h->block_selfdep = false;
    if (flags & FL_PRIORITY) {
        if (len < 5)
            return conn_error(h, E_FRAME_SIZE, "HEADERS too short for its priority");
        h->block_selfdep = (get_u32(p) & 0x7fffffffu) == sid;
        p += 5;
        len -= 5;
    }
    bool es = flags & FL_END_STREAM;
    if (sid > h->last_sid) {
        h->last_sid = sid;
        if (h->closing || (h->draining && sid > h->goaway_sid)) {
            h->block_kind = BLK_IGNORE; /* after our GOAWAY: not processed (RFC 9113 §6.8) */
        } else {
            h2_stream *s = stream_new(h, sid);
            s->hdr_pending = true;
            h->nhdr_pending++;
            h->block_kind = BLK_REQUEST;
        }
    } else {
        h2_stream *s = stream_find(h, sid);
        if (!s)
            h->block_kind = BLK_IGNORE; /* reset, or long gone: frames in flight are let be */
        else if (s->remote_closed)
            h->block_kind = BLK_CLOSED;
        else if (!es)
            h->block_kind = BLK_NO_END; /* trailers must end the stream (§8.1) */
        else
            h->block_kind = BLK_TRAILERS;
    }
    h->block_sid = sid;
    h->block_es = es;
    if (flags & FL_END_HEADERS)
        return block_done(h, p, len);
    h->in_block = true;
    bz_buf_clear(&h->block);
    bz_buf_append(&h->block, p, len);
    return 0;
}

static uint32_t on_continuation(http__h2 *h, uint8_t flags, uint32_t sid, const uint8_t *p, uint32_t len)
{
    if (!h->in_block || sid != h->block_sid)
        return conn_error(h, E_PROTOCOL, "CONTINUATION without a header block to continue");
    if (h->block.len + len > h->guard.max_block_bytes)
        return conn_error(h, E_CALM, "header block too large");
    bz_buf_append(&h->block, p, len);
    if (flags & FL_END_HEADERS)
        return block_done(h, (const uint8_t *)h->block.data, h->block.len);
    return 0;
}

static uint32_t on_data(http__h2 *h, uint8_t flags, uint32_t sid, const uint8_t *p, uint32_t len)
{
    if (sid == 0)
        return conn_error(h, E_PROTOCOL, "DATA on stream 0");
    const uint8_t *d = p;
    uint32_t dlen = len;
    if (flags & FL_PADDED) {
        if (len < 1 || p[0] >= len)
            return conn_error(h, E_PROTOCOL, "DATA padding too long");
        d = p + 1;
        dlen = len - 1 - p[0];
    }
    if (sid > h->last_sid)
        return conn_error(h, E_PROTOCOL, "DATA on an idle stream");
    /* The connection window: reopened at once, in steps of half of it. */
    if ((int64_t)len > h->recv_window)
        return conn_error(h, E_FLOW_CONTROL, "DATA beyond the connection window");
    h->recv_window -= len;
    h->recv_unacked += len;
    if (h->recv_unacked >= H2_CONN_WINDOW / 2) {
        send_window_update(h, 0, (uint32_t)h->recv_unacked);
        h->recv_window += h->recv_unacked;
        h->recv_unacked = 0;
    }
    h2_stream *s = stream_find(h, sid);
    if (!s)
        return 0; /* reset or gone: dropped */
    if (s->remote_closed) {
        rst_stream(s, E_STREAM_CLOSED);
        return 0;
    }
    if ((int64_t)len > s->recv_window) {
        rst_stream(s, E_FLOW_CONTROL);
        return 0;
    }
    s->recv_window -= len;
    if (len > dlen)
        stream_consumed(s, len - dlen); /* padding: nobody reads it */
    s->in_total += dlen;
    bool es = flags & FL_END_STREAM;
    if (s->cl >= 0 && (s->in_total > s->cl || (es && s->in_total != s->cl))) {
        rst_stream(s, E_PROTOCOL); /* content-length and DATA disagree (RFC 9113 §8.1.1) */
        return 0;
    }
    if (!s->running || s->final) {
        if (dlen)
            stream_consumed(s, dlen); /* nobody will read it */
        if (s->answered && (s->discarded += dlen) > H2_DISCARD_MAX) {
            rst_stream(s, E_NO_ERROR); /* enough: see end_stream_sent */
            return 0;
        }
    } else if (dlen) {
        bz_buf_append(&s->in, d, dlen);
        stream_wake(s);
    }
    if (es)
        remote_end(s);
    return 0;
}

/* The peer's settings (a SETTINGS frame's payload, or HTTP2-Settings). */
static uint32_t apply_settings(http__h2 *h, const uint8_t *p, size_t len)
{
    if (len % 6)
        return conn_error(h, E_FRAME_SIZE, "SETTINGS length not a multiple of 6");
    if (len / 6 > H2_MAX_SETTINGS)
        return conn_error(h, E_CALM, "too many SETTINGS entries");
    for (size_t i = 0; i < len; i += 6) {
        uint16_t id = (uint16_t)(p[i] << 8 | p[i + 1]);
        uint32_t v = get_u32(p + i + 2);
        switch (id) {
        case S_ENABLE_PUSH:
        case S_ENABLE_CONNECT_PROTOCOL:
        case S_NO_RFC7540_PRIORITIES:
            if (v > 1)
                return conn_error(h, E_PROTOCOL, "SETTINGS: a boolean beyond 1");
            break;
        case S_INITIAL_WINDOW_SIZE: {
            if (v > H2_WINDOW_MAX)
                return conn_error(h, E_FLOW_CONTROL, "SETTINGS_INITIAL_WINDOW_SIZE beyond 2^31-1");
            int64_t delta = (int64_t)v - h->peer_window;
            for (h2_stream *s = h->streams; s; s = s->next) {
                s->send_window += delta;
                if (s->send_window > H2_WINDOW_MAX)
                    return conn_error(h, E_FLOW_CONTROL, "SETTINGS_INITIAL_WINDOW_SIZE overflows a window");
            }
            h->peer_window = v;
            break;
        }
        case S_MAX_FRAME_SIZE:
            if (v < 16384 || v > 16777215)
                return conn_error(h, E_PROTOCOL, "SETTINGS_MAX_FRAME_SIZE out of range");
            h->peer_max_frame = v;
            break;
        default: /* HEADER_TABLE_SIZE (our encoder keeps no table), limits on what we do not do; unknown ids */
            break;
        }
    }
    return 0;
}

/* One whole frame: f[0..9) its header, f + 9 its payload.  0, or a
 * connection error's code (h->err_why set). */
static uint32_t h2_frame(http__h2 *h, const uint8_t *f, uint32_t len)
{
    uint8_t type = f[3], flags = f[4];
    uint32_t sid = get_u32(f + 5) & 0x7fffffffu;
    const uint8_t *p = f + 9;
    if (h->in_block && type != F_CONTINUATION)
        return conn_error(h, E_PROTOCOL, "a frame inside a header block");
    if (!h->settings_seen) {
        if (type != F_SETTINGS || (flags & FL_ACK))
            return conn_error(h, E_PROTOCOL, "the client preface does not go on with SETTINGS");
        h->settings_seen = true;
    }
    switch (type) {
    case F_DATA:
        return on_data(h, flags, sid, p, len);
    case F_HEADERS:
        return on_headers(h, flags, sid, p, len);
    case F_CONTINUATION:
        return on_continuation(h, flags, sid, p, len);
    case F_PRIORITY: /* validated, then ignored (RFC 9113 §5.3.2) */
        if (sid == 0)
            return conn_error(h, E_PROTOCOL, "PRIORITY on stream 0");
        if (len != 5)
            return conn_error(h, E_FRAME_SIZE, "PRIORITY of the wrong size");
        if ((get_u32(p) & 0x7fffffffu) == sid) {
            h2_stream *s = stream_find(h, sid);
            if (s)
                rst_stream(s, E_PROTOCOL);
            else
                send_rst(h, sid, E_PROTOCOL);
        }
        return 0;
    case F_RST_STREAM: {
        if (len != 4)
            return conn_error(h, E_FRAME_SIZE, "RST_STREAM of the wrong size");
        if (sid == 0)
            return conn_error(h, E_PROTOCOL, "RST_STREAM on stream 0");
        if (sid > h->last_sid)
            return conn_error(h, E_PROTOCOL, "RST_STREAM on an idle stream");
        h2_stream *s = stream_find(h, sid);
        if (s) /* reset by the client: a running handler's context ends */
            stream_close(s);
        return 0;
    }
    case F_SETTINGS: {
        if (sid != 0)
            return conn_error(h, E_PROTOCOL, "SETTINGS on a stream");
        if (flags & FL_ACK)
            return len ? conn_error(h, E_FRAME_SIZE, "SETTINGS ACK with a payload") : 0;
        uint32_t e = apply_settings(h, p, len);
        if (e)
            return e;
        out_frame(h, F_SETTINGS, FL_ACK, 0, NULL, 0);
        return 0;
    }
    case F_PUSH_PROMISE:
        return conn_error(h, E_PROTOCOL, "PUSH_PROMISE from a client");
    case F_PING:
        if (len != 8)
            return conn_error(h, E_FRAME_SIZE, "PING of the wrong size");
        if (sid != 0)
            return conn_error(h, E_PROTOCOL, "PING on a stream");
        if (!(flags & FL_ACK))
            out_frame(h, F_PING, FL_ACK, 0, p, 8);
        return 0;
    case F_GOAWAY:
        if (sid != 0)
            return conn_error(h, E_PROTOCOL, "GOAWAY on a stream");
        if (len < 8)
            return conn_error(h, E_FRAME_SIZE, "GOAWAY too short");
        h->goaway_recv = true; /* no new streams; the open ones finish */
        return 0;
    case F_WINDOW_UPDATE: {
        if (len != 4)
            return conn_error(h, E_FRAME_SIZE, "WINDOW_UPDATE of the wrong size");
        int64_t inc = get_u32(p) & 0x7fffffffu;
        if (sid == 0) {
            if (inc == 0)
                return conn_error(h, E_PROTOCOL, "WINDOW_UPDATE of 0 on the connection");
            h->send_window += inc;
            if (h->send_window > H2_WINDOW_MAX)
                return conn_error(h, E_FLOW_CONTROL, "connection window beyond 2^31-1");
            return 0;
        }
        if (sid > h->last_sid)
            return conn_error(h, E_PROTOCOL, "WINDOW_UPDATE on an idle stream");
        h2_stream *s = stream_find(h, sid);
        if (!s)
            return 0;
        if (inc == 0) {
            rst_stream(s, E_PROTOCOL);
            return 0;
        }
        s->send_window += inc;
        if (s->send_window > H2_WINDOW_MAX)
            rst_stream(s, E_FLOW_CONTROL);
        return 0;
    }
    default: /* unknown types are ignored (RFC 9113 §4.1) */
        return 0;
    }
}

/* Parses the whole frames in p[0..n); returns the bytes used (all of them
 * once the connection is closing: the rest is dropped). */
static size_t parse_frames(http__h2 *h, const uint8_t *p, size_t n)
{
    size_t off = 0;
    /* Each turn consumes a frame (at least 9 bytes): bounded by n. */
    while (n - off >= 9) {
        if (h->closing || h->lingering || h->closed)
            return n;
        uint32_t len = (uint32_t)p[off] << 16 | (uint32_t)p[off + 1] << 8 | p[off + 2];
        if (len > H2_MAX_FRAME) {
            h2_close_with(h, E_FRAME_SIZE, "frame larger than SETTINGS_MAX_FRAME_SIZE");
            return n;
        }
        if (n - off < 9 + (size_t)len)
            break;
        uint32_t e = h2_frame(h, p + off, len);
        if (e) {
            h2_close_with(h, e, h->err_why);
            return n;
        }
        off += 9 + len;
    }
    return off;
}

static void h2_feed(http__h2 *h, const uint8_t *p, size_t n)
{
    if (h->closing || h->lingering || h->closed)
        return; /* the connection is going away: input is dropped */
    /* Any bytes from the peer prove it alive (a PING ACK among them). */
    h->last_in = rt_now();
    h->ping_at = 0;
    uint32_t e = http__h2_guard_feed(&h->guard, p, n, rt_now());
    if (e) {
        h2_close_with(h, e, h->guard.why);
        return;
    }
    if (h->preface_left) {
        size_t k = n < h->preface_left ? n : h->preface_left;
        if (memcmp(p, PREFACE + PREFACE_LEN - h->preface_left, k) != 0) {
            http__h2_abort(h->c); /* not HTTP/2 at all: no GOAWAY */
            return;
        }
        h->preface_left -= (uint32_t)k;
        p += k;
        n -= k;
    }
    if (h->in.len) { /* a frame began in the last read */
        bz_buf_append(&h->in, p, n);
        size_t used = parse_frames(h, (const uint8_t *)h->in.data, h->in.len);
        bz_buf_consume(&h->in, used);
    } else {
        size_t used = parse_frames(h, p, n);
        if (used < n)
            bz_buf_append(&h->in, p + used, n - used);
    }
}

/* ---- the connection ------------------------------------------------------------------------ */

static void h2_timer(rt_timer *t);
static void stall_check(rt_timer *t);
static void keepalive_check(rt_timer *t);

static http__h2 *h2_new(http_conn *c, uint32_t skip_preface)
{
    http_server *srv = c->srv;
    http__h2 *h = calloc(1, sizeof *h);
    if (!h)
        abort();
    h->c = c;
    h->self_bytes = malloc_usable_size(h);
    http__hpack_dec_init(&h->dec, HTTP_HPACK_TABLE_MAX);
    h->preface_left = PREFACE_LEN;
    h->send_window = H2_DEFAULT_WINDOW;
    h->recv_window = H2_CONN_WINDOW;
    h->peer_window = H2_DEFAULT_WINDOW;
    h->peer_max_frame = 16384;
    http__h2_guard_init(&h->guard, srv->o.max_header_bytes, skip_preface);
    h->guard.reset_expected = reset_expected;
    h->guard.reset_arg = h;
    h->stall.fn = stall_check;
    h->stall.data = h;
    h->keepalive.fn = keepalive_check;
    h->keepalive.data = h;
    h->last_in = rt_now();
    c->timer.fn = h2_timer;
    c->timer.data = c;
    c->h2 = h;
    if (!c->dead) { /* the connection now counts as HTTP/2 */
        atomic_fetch_sub_explicit(&srv->open_h1, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&srv->open_h2, 1, memory_order_relaxed);
    }
    /* Our SETTINGS (RFC 9113 §3.4: the server's preface), then the
     * connection window beyond the default.  SETTINGS_MAX_CONCURRENT_STREAMS
     * is enforced by stream_start with RST_STREAM(REFUSED_STREAM), a stream
     * error (§5.1.2), so the calls in flight go on. */
    uint8_t st[18];
    const uint16_t ids[3] = {S_MAX_CONCURRENT_STREAMS, S_MAX_HEADER_LIST_SIZE, S_NO_RFC7540_PRIORITIES};
    const uint32_t vals[3] = {(uint32_t)srv->o.h2_max_concurrent_streams, (uint32_t)srv->o.max_header_bytes, 1};
    for (int i = 0; i < 3; i++) {
        st[i * 6] = (uint8_t)(ids[i] >> 8);
        st[i * 6 + 1] = (uint8_t)ids[i];
        put_u32(st + i * 6 + 2, vals[i]);
    }
    out_frame(h, F_SETTINGS, 0, 0, st, sizeof st);
    send_window_update(h, 0, H2_CONN_WINDOW - H2_DEFAULT_WINDOW);
    mem_account(h);
    return h;
}

void http__h2_free(http__h2 *h)
{
    h->freeing = true;
    rt_timer_stop(&h->stall);
    rt_timer_stop(&h->keepalive);
    while (h->streams)
        stream_free(h->streams);
    spare_free(h);
    http__hpack_dec_free(&h->dec);
    bz_buf_free(&h->out);
    bz_buf_free(&h->in);
    bz_buf_free(&h->block);
    h->c->h2 = NULL;
    atomic_fetch_sub(&heap_bytes, h->counted);
    free(h);
}

static void cancel_streams(http__h2 *h)
{
    for (h2_stream *s = h->streams; s; s = s->next) {
        rt_ctx_cancel(&s->ctx);
        stream_wake(s);
    }
}

void http__h2_abort(http_conn *c)
{
    http__h2 *h = c->h2;
    if (!h || h->closed)
        return;
    h->closed = true;
    cancel_streams(h);
    rt_timer_stop(&h->stall);
    rt_timer_stop(&h->keepalive);
    http__conn_shut(c);
    /* Freed on a coroutine (this may run inside on_event). */
    h2_kick(h);
}

/* Queues a terminal GOAWAY with code; the connection closes once it is
 * written (or after H2_LINGER_NS if the peer does not read). */
static void h2_close_with(http__h2 *h, uint32_t code, const char *why)
{
    if (h->closing || h->closed)
        return;
    if (why)
        bz_log_warn("http2: closing connection", BZ_F_STR("peer", h->c->peer), BZ_F_STR("reason", why),
                    BZ_F_INT("code", code));
    h->closing = true;
    send_goaway(h, h->last_sid, code);
    cancel_streams(h);
    rt_timer_start(&h->c->timer, rt_now() + H2_LINGER_NS);
    h2_kick(h);
}

/* GOAWAY is written: stop writing, and close when the peer closes (or
 * soon): closing at once with unread input would reset the connection
 * and could destroy the GOAWAY before the client read it. */
static void h2_linger(http__h2 *h)
{
    if (h->lingering)
        return;
    h->lingering = true;
    cancel_streams(h);
    rt_tls_shutdown(&h->c->io);
    rt_timer_start(&h->c->timer, rt_now() + H2_LINGER_NS);
}

/* Buffers that hold nothing live are given back (the hibernate tick). */
static bool holds_buffers(const http__h2 *h) { return h->out.cap || h->in.cap || h->block.cap || h->spare; }

static void release_buffers(http__h2 *h)
{
    if (h->out_off == h->out.len) {
        bz_buf_free(&h->out);
        h->out_off = 0;
    }
    if (!h->in.len)
        bz_buf_free(&h->in);
    if (!h->in_block)
        bz_buf_free(&h->block);
    spare_free(h);
    mem_account(h);
}

static void h2_timer(rt_timer *t)
{
    http_conn *c = t->data;
    http__h2 *h = c->h2;
    if (h->closing || h->lingering) {
        http__h2_abort(c);
        return;
    }
    if (h->nrunning || output_waiting(h))
        return; /* busy: h2_timers arms it again once idle */
    int64_t limit = h->nhdr_pending ? c->srv->o.read_header_timeout_ns : c->srv->o.idle_timeout_ns;
    int64_t now = rt_now();
    if (now < h->idle_since + limit) {
        if (now < h->idle_since + H2_HIBERNATE_NS && holds_buffers(h)) {
            /* (armed for an earlier idle spell) */
            rt_timer_start(&c->timer, h->idle_since + H2_HIBERNATE_NS);
            return;
        }
        /* The hibernate tick: nothing is in flight, so the buffers hold
         * nothing live. */
        release_buffers(h);
        rt_timer_start(&c->timer, h->idle_since + limit);
        return;
    }
    /* Idle (or a header block that never ended): say goodbye politely. */
    h->closing = true;
    send_goaway(h, h->last_sid, E_NO_ERROR);
    rt_timer_start(&c->timer, rt_now() + H2_LINGER_NS);
    h2_send(h);
}

/* Bytes the kernel has not sent yet (SIOCOUTQ), or -1. */
static int kernel_outq(http__h2 *h)
{
    int n = 0;
    if (h->closed || ioctl(h->c->io.fd, SIOCOUTQ, &n) != 0)
        return -1;
    return n;
}

static void stall_check(rt_timer *t)
{
    http__h2 *h = t->data;
    /* What the kernel still holds counts too: a handler that gave up
     * (its write deadline) leaves no output here, yet a client that reads
     * nothing keeps megabytes of socket buffer and the connection. */
    int q = kernel_outq(h);
    int64_t now = rt_now();
    if (q >= 0 && q < h->outq_seen)
        h->progress_at = now; /* the client took some since the last look */
    h->outq_seen = q;
    if (!output_waiting(h) && q <= 0)
        return;
    /* Counted from the last progress, not from the last check: a client
     * that stops reading is released --write-timeout after it stopped. */
    int64_t due = h->progress_at + h->c->srv->o.write_timeout_ns;
    if (due > now) {
        h->stall_mark = h->progress;
        rt_timer_start(&h->stall, due);
        return;
    }
    /* Nothing moved for the write timeout.  If the socket is empty (a
     * shut window: the peer reads but grants nothing), GOAWAY says why;
     * if it is full, a GOAWAY would wait behind bytes the peer does not
     * take, and lingering for it only holds the connection longer. */
    if (q <= 0 && h->out_off == h->out.len) {
        h2_close_with(h, E_CALM, "no output progress for the write timeout (zero window?)");
        return;
    }
    bz_log_warn("http2: closing connection", BZ_F_STR("peer", h->c->peer),
                BZ_F_STR("reason", "no output progress for the write timeout"), BZ_F_INT("code", E_CALM));
    http__h2_abort(h->c);
}

/* Keepalive: while calls run (a quiet event stream, say), a connection
 * the peer has been silent on for half the idle timeout gets a PING; if
 * nothing at all comes back within the read-header timeout, the peer is
 * gone (a dead host, a dropped NAT entry): the connection is closed and
 * its calls cancelled, rather than held open until TCP gives up.  A
 * connection without calls is left to the idle timeout. */
static int64_t keepalive_interval(const http__h2 *h)
{
    int64_t d = h->c->srv->o.idle_timeout_ns / 2;
    return d > 0 ? d : 30 * BZ_NS_PER_S;
}

/* (Left armed when the last call ends: keepalive_check then does nothing
 * and the next call arms it again; a request costs no timer operation.) */
static void keepalive_arm(http__h2 *h)
{
    if (h->closing || h->lingering || h->closed) {
        if (rt_timer_armed(&h->keepalive))
            rt_timer_stop(&h->keepalive);
        return;
    }
    if (h->nrunning && !rt_timer_armed(&h->keepalive))
        rt_timer_start(&h->keepalive, h->last_in + keepalive_interval(h));
}

static void keepalive_check(rt_timer *t)
{
    http__h2 *h = t->data;
    if (h->closing || h->lingering || h->closed || !h->nrunning)
        return;
    int64_t now = rt_now();
    if (h->ping_at) {
        if (now >= h->ping_at + h->c->srv->o.read_header_timeout_ns) {
            h2_close_with(h, E_NO_ERROR, "keepalive PING unanswered");
            return;
        }
        rt_timer_start(&h->keepalive, h->ping_at + h->c->srv->o.read_header_timeout_ns);
        return;
    }
    if (now < h->last_in + keepalive_interval(h)) {
        rt_timer_start(&h->keepalive, h->last_in + keepalive_interval(h));
        return;
    }
    uint8_t opaque[8] = {'b', 'a', 'z', 'a', 'a', 'r', 'k', 'a'};
    out_frame(h, F_PING, 0, 0, opaque, sizeof opaque);
    h->ping_at = now;
    h2_send(h);
    rt_timer_start(&h->keepalive, now + h->c->srv->o.read_header_timeout_ns);
}

/* True while response bytes wait for the client: serialised frames, or a
 * stream's queued body (or its end).  A streaming handler that is merely
 * quiet (SSE between events) has nothing waiting, so it never counts as a
 * stall. */
static bool output_waiting(http__h2 *h)
{
    if (h->out_off < h->out.len)
        return true;
    if (!h->npend)
        return false;
    for (h2_stream *s = h->streams; s; s = s->next)
        if (s->has_data && (pend_len(s) > 0 || s->final))
            return true;
    return false;
}

/* Timers after every step: idle/header timeout while nothing is in
 * flight; the stall check while output waits. */
static void h2_timers(http__h2 *h)
{
    http_conn *c = h->c;
    if (h->closing || h->lingering || h->closed)
        return;
    bool waiting_out = output_waiting(h);
    if (!h->nrunning && !waiting_out) {
        /* Idle: the first tick (after at most H2_HIBERNATE_NS) gives the
         * buffers back; the idle timeout closes.  The timer is left armed
         * while requests come and go (it is not stopped when a stream
         * starts): one that fires early looks at idle_since and sleeps
         * again, so a request costs no timer operation. */
        h->idle_since = rt_now();
        int64_t d = h->nhdr_pending ? c->srv->o.read_header_timeout_ns : c->srv->o.idle_timeout_ns;
        if (d > H2_HIBERNATE_NS && holds_buffers(h))
            d = H2_HIBERNATE_NS;
        if (!rt_timer_armed(&c->timer) || c->timer.deadline > h->idle_since + d)
            rt_timer_start(&c->timer, h->idle_since + d);
    }
    keepalive_arm(h);
    if (waiting_out) {
        if (!rt_timer_armed(&h->stall)) {
            h->stall_mark = h->progress;
            h->progress_at = rt_now();
            h->outq_seen = kernel_outq(h);
            rt_timer_start(&h->stall, rt_now() + c->srv->o.write_timeout_ns);
        }
    } else if (rt_timer_armed(&h->stall) && kernel_outq(h) <= 0) {
        /* (with bytes still in the socket the check goes on) */
        rt_timer_stop(&h->stall);
    }
}

/* Writes what is serialised; false if the connection was closed. */
static bool h2_write(http__h2 *h)
{
    /* Bounded: each turn writes bytes or stops. */
    while (h->out_off < h->out.len) {
        ssize_t n = rt_io_try_write(&h->c->io, h->out.data + h->out_off, h->out.len - h->out_off);
        if (n > 0) {
            h->out_off += (size_t)n;
            continue;
        }
        if (n == -EAGAIN)
            return true; /* an event brings us back (over TLS, either way) */
        http__h2_abort(h->c);
        return false;
    }
    /* All written: the buffer is kept for the next answer (the hibernate
     * tick gives it back), unless a burst grew it large. */
    h->out_off = 0;
    if (h->out.cap > 4 * H2_OUT_MAX)
        bz_buf_free(&h->out);
    else
        bz_buf_clear(&h->out);
    return true;
}

/* Serialises what the streams have to send (up to H2_OUT_MAX waiting)
 * and writes it with the control frames queued before. */
static void h2_send(http__h2 *h)
{
    if (h->closed || h->lingering)
        return;
    /* Rounds of at most H2_OUT_MAX bytes each, while the socket takes
     * them; then the sender continues on a later turn (fairness). */
    for (int round = 0;; round++) {
        if (round == 8) {
            h2_kick(h);
            break;
        }
        bool full = !h->closing && h->npend && serialise(h);
        if (!h2_write(h))
            return;
        if (!full || h->out_off < h->out.len)
            break;
    }
    bool drained = h->out_off == h->out.len;
    if (drained && (h->closing || ((h->draining || h->goaway_recv) && h->nstreams == 0))) {
        h2_linger(h);
        return;
    }
    if (h->read_paused && h->out.len - h->out_off < H2_OUT_MAX)
        h2_kick(h);
    h2_timers(h);
    mem_account(h);
}

static void sender_run(void *p)
{
    http__h2 *h = p;
    h->sender_queued = false;
    if (!h->closed) {
        if (h->read_paused && h->out.len - h->out_off < H2_OUT_MAX) {
            h->read_paused = false;
            h2_input(h);
        } else {
            h2_send(h);
        }
    }
    h2_maybe_free(h);
}

/* Runs the sender after the coroutines that are runnable now, so the
 * responses of every stream that finished this turn share one write. */
static void h2_kick(http__h2 *h)
{
    if (!h->sender_queued) {
        h->sender_queued = true;
        rt_go(sender_run, h);
    }
}

static void h2_input(http__h2 *h)
{
    static _Thread_local uint8_t buf[H2_READ_CHUNK];
    for (int i = 0;; i++) {
        if (h->closed)
            return;
        if (h->out.len - h->out_off >= H2_OUT_MAX && !h->lingering) {
            h->read_paused = true; /* the client is not reading: neither do we */
            break;
        }
        if (i == H2_READS_PER_TURN) {
            h->read_paused = true;
            h2_kick(h);
            break;
        }
        /* Over TLS this goes on until OpenSSL has nothing buffered either:
         * bytes it holds raise no event. */
        ssize_t n = rt_io_try_read(&h->c->io, buf, sizeof buf);
        if (n == -EAGAIN)
            break;
        if (n <= 0) {
            http__h2_abort(h->c); /* EOF or error */
            return;
        }
        h2_feed(h, buf, (size_t)n);
    }
    h2_send(h);
}

void http__h2_event(http_conn *c, uint32_t ev)
{
    http__h2 *h = c->h2;
    if (h->closed)
        return;
    if (ev & (EPOLLHUP | EPOLLERR)) {
        http__h2_abort(c);
        return;
    }
    /* Over TLS a read may wait for the socket to take a write (and a
     * write for a read): any event retries both — h2_input ends in h2_send. */
    if (ev & (EPOLLIN | EPOLLRDHUP) || c->io.tls)
        h2_input(h);
    else if (ev & EPOLLOUT)
        h2_send(h);
}

void http__h2_start(http_conn *c, const char *in, size_t n)
{
    http__h2 *h = h2_new(c, PREFACE_LEN);
    h2_feed(h, (const uint8_t *)in, n);
    /* Bytes that came while the HTTP/1.1 coroutine ran raised no new edge. */
    h2_input(h);
}

bool http__h2_wants_upgrade(const http_req *r)
{
    bz_str up = http_header_get(r, "Upgrade"), conn = http_header_get(r, "Connection");
    int nset = 0;
    for (int i = 0; i < r->nheaders; i++)
        if (str_ieq(r->headers[i].name.p, r->headers[i].name.n, "http2-settings"))
            nset++;
    return up.p && conn.p && nset == 1 && has_token(up, "h2c") && has_token(conn, "upgrade") &&
           has_token(conn, "http2-settings");
}

bool http__h2_upgrade(http_conn *c, http_req *r, const char *rest, size_t nrest)
{
    http_server *srv = c->srv;
    uint8_t settings[512];
    ssize_t ns = b64url_decode(http_header_get(r, "HTTP2-Settings"), settings, sizeof settings);
    if (ns < 0 || ns % 6)
        return false;
    static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
    if (rt_write_all(&c->io, resp, sizeof resp - 1, &c->ls->ctx, bz_now_ns() + srv->o.write_timeout_ns))
        return false;
    http__h2 *h = h2_new(c, PREFACE_LEN);
    /* HTTP2-Settings are the client's first SETTINGS, not acknowledged
     * (RFC 7540 §3.2.1). */
    uint32_t e = apply_settings(h, settings, (size_t)ns);
    if (e) {
        /* The 101 is out, so end it as HTTP/2. */
        h2_close_with(h, e, "bad HTTP2-Settings");
    } else {
        /* Stream 1 is the upgrade request, half-closed (remote). */
        h->last_sid = 1;
        h2_stream *s = stream_new(h, 1);
        s->method = arena_str(&s->arena, (const uint8_t *)r->method.p, r->method.n);
        s->path = arena_str(&s->arena, (const uint8_t *)r->target.p, r->target.n);
        s->hcap = r->nheaders + 1;
        s->hdrs = bz_arena_alloc(&s->arena, sizeof *s->hdrs * (size_t)s->hcap);
        for (int i = 0; i < r->nheaders; i++) {
            bz_str n = r->headers[i].name;
            if (conn_specific(n.p, n.n) || str_ieq(n.p, n.n, "http2-settings"))
                continue;
            char *ln = bz_arena_alloc(&s->arena, n.n + 1);
            for (size_t k = 0; k < n.n; k++)
                ln[k] = (n.p[k] >= 'A' && n.p[k] <= 'Z') ? (char)(n.p[k] + 32) : n.p[k];
            ln[n.n] = '\0';
            s->hdrs[s->nh++] = (http_header){bz_str_make(ln, n.n),
                                             arena_str(&s->arena, (const uint8_t *)r->headers[i].value.p,
                                                       r->headers[i].value.n)};
        }
        s->remote_closed = true;
        stream_start(h, s, true);
    }
    h2_feed(h, (const uint8_t *)rest, nrest);
    h2_input(h);
    return true;
}

void http__h2_drain(http_conn *c)
{
    http__h2 *h = c->h2;
    if (!h || h->closed || h->closing || h->draining)
        return;
    h->draining = true;
    /* Streams up to the last one we saw finish; later ones are ignored. */
    h->goaway_sid = h->last_sid;
    send_goaway(h, h->last_sid, E_NO_ERROR);
    h2_send(h);
}



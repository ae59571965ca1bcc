/* http/h2.c — HTTP/2 (h2c) connections on libnghttp2, driven by the
 * runtime.
 *
 * Shape (the same as HTTP/1.1 in server.c): a connection is its rt_io, the
 * small http_conn, an http__h2 and the nghttp2 session.  No coroutine
 * belongs to the connection.  Bytes arriving call http__h2_event on the
 * loop (outside coroutines), which reads the socket into a per-thread
 * buffer and feeds nghttp2; nghttp2's callbacks build requests and start
 * one coroutine per stream that runs the ordinary http_handler.  Handlers
 * append response bytes to their stream and "kick" the connection: one
 * short-lived sender coroutine per loop turn serialises every stream's
 * frames and writes them with one write(2).  So an idle HTTP/2 connection
 * holds no coroutine and no buffer besides nghttp2's own state.
 *
 * Flow control, both ways:
 *   - Request bodies: automatic WINDOW_UPDATEs are off.  DATA is copied
 *     into the stream's buffer and the connection window is reopened at
 *     once (it is bounded by the stream windows anyway), but a stream's
 *     window reopens only as the handler reads (http_body_read), so an
 *     unread body costs at most one window (64 KiB) per stream.
 *   - Responses: DATA leaves as the client's windows allow.  A streaming
 *     handler's http_flush parks while more than H2_PEND_MAX bytes wait,
 *     until the client reads or the write deadline passes; and the
 *     connection stops reading while H2_OUT_MAX serialised bytes wait for
 *     the socket.  A connection with output waiting that makes no progress
 *     for --write-timeout is closed with GOAWAY(ENHANCE_YOUR_CALM): a
 *     zero-window stall costs the server nothing after that.
 *
 * Floods are counted in h2-guard.c before nghttp2 sees the bytes.
 * Lifetimes: a stream lives until nghttp2 closed it *and* its handler
 * returned; the connection until it is closed and no coroutine (handler
 * or sender) refers to it.  on_event callbacks never free (rt.h): frees
 * happen on coroutines. */
#include "http/h2-private.h"

#include <bazaar/log.h>

#include <nghttp2/nghttp2.h>

#include <errno.h>
#include <pthread.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
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
#define H2_HIBERNATE_NS (1 * BZ_NS_PER_S) /* idle this long: give buffer pages back */

/* An unassigned SETTINGS id (RFC 9113 §6.5.2: unknown ids are ignored)
 * that carries SETTINGS_MAX_CONCURRENT_STREAMS past nghttp2; see h2_new. */
#define SETTINGS_MCS_UNSEEN 0xb2c3
#define SETTINGS_MCS 0x3

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN 24

typedef struct http__h2_stream h2_stream;

struct http__h2_stream {
    http__h2 *h;
    int32_t id;
    h2_stream *prev, *next;
    http_req req;
    bz_arena arena;     /* the request's: headers, handler allocations */
    rt_ctx ctx;         /* the request context; cancelled by RST_STREAM/close */
    /* request head, while it arrives */
    http_header *hdrs;
    int nh, hcap;
    bz_str method, path, authority;
    size_t hdr_bytes;   /* HPACK-decoded size, as SETTINGS_MAX_HEADER_LIST_SIZE counts */
    int bad;            /* 431 when the head was over the limits */
    /* request body */
    bz_buf in;
    size_t in_off;
    int64_t in_read;    /* bytes the handler read */
    bool in_eof;
    int64_t reserved;   /* budget held for a large message being received */
    int64_t msg_deadline; /* a framed body's current read deadline, 0 = the idle rule */
    bool budget_wait;   /* the handler waits for budget (woken as it frees) */
    /* response */
    bz_buf pend;        /* body bytes not yet taken by nghttp2 */
    size_t pend_off;
    int64_t pend_counted; /* bytes of pend counted in the budgets */
    http_header *trailers; /* http_add_trailer's fields (in the arena) */
    int ntrailers, trailers_cap;
    rt_coro *waiter;    /* the handler, parked for body bytes or output room */
    int64_t read_deadline, write_deadline;
    bool hdr_pending;   /* the header block has not ended yet */
    bool running;       /* the handler coroutine exists */
    bool submitted;     /* response HEADERS submitted */
    bool has_data;      /* submitted with a data provider still to end */
    bool deferred;      /* the data provider returned DEFERRED */
    bool final;         /* the handler returned: no more body */
    bool closed;        /* nghttp2 closed the stream */
    bool slot;          /* accepted: holds one of the connection's stream slots */
    bool answered;      /* the response's END_STREAM went out */
    int64_t discarded;  /* request bytes dropped after the answer */
};

struct http__h2 {
    http_conn *c;
    nghttp2_session *ses;
    h2_stream *streams;
    int nstreams;       /* stream objects alive */
    int nslots;         /* accepted streams alive (open, or their handler winds down) */
    int nrunning;       /* handler coroutines alive */
    int nhdr_pending;   /* header blocks still arriving */
    int npend;          /* streams with response DATA still to send */
    uint32_t nanswers;  /* response header blocks submitted (see unique_value) */
    bz_buf *sending;    /* the output h2_send serialises into (send_data) */
    bz_buf out;         /* serialised frames not yet written */
    size_t out_off;
    http__h2_guard guard;
    rt_timer stall;     /* output waiting without progress */
    rt_timer keepalive; /* PINGs a quiet connection that has calls running */
    int64_t last_in;    /* rt_now() when bytes last arrived */
    int64_t ping_at;    /* when our unanswered PING went out, 0 if none */
    int64_t progress, stall_mark; /* DATA bytes sent; at the last stall check */
    int64_t progress_at; /* rt_now() when DATA last moved (or the kernel's queue shrank) */
    int outq_seen;      /* the socket's unsent bytes at the last stall check */
    const char *calm_why; /* a callback found abuse: GOAWAY(ENHANCE_YOUR_CALM) */
    int64_t buffered;   /* budgeted bytes (response pend + request reservations) */
    bool sender_queued; /* a sender coroutine will run */
    bool read_paused;   /* input left in the socket; the sender resumes it */
    bool draining;      /* graceful GOAWAY sent: close once streams are done */
    bool closing;       /* terminal GOAWAY queued: close once it is written */
    bool lingering;     /* GOAWAY written, write side shut: waiting for EOF */
    bool closed;        /* socket closed; freed once no coroutine refers to it */
    bool freeing;
    bool hibernated;    /* the frame buffer's pages were given back */
    bool settings_out;  /* our first SETTINGS frame was serialised (and its limit written in) */
    void *fb;           /* nghttp2's outbound frame buffer (whole pages) */
    void *maptab;       /* nghttp2's stream-map bucket table (one page) */
    size_t fblen;
    int64_t idle_since; /* rt_now() when the connection last went idle */
    nghttp2_mem mem;    /* the allocator hooks, with this connection as user data */
};

static void h2_send(http__h2 *h);
static void h2_input(http__h2 *h);
static bool output_waiting(http__h2 *h);
static void h2_close_with(http__h2 *h, uint32_t code, const char *why);
static void h2_kick(http__h2 *h);

/* ---- allocator hooks -----------------------------------------------------------------------
 *
 * Each session gets its own nghttp2_mem whose user data is its
 * connection, for two reasons: to count what nghttp2 holds (tests, the
 * idle-connection benchmark), and to place nghttp2's outbound frame buffer
 * (16 KiB, the largest thing a session owns, alive as long as it) on whole
 * pages, so that an idle connection can give those pages back to the
 * kernel (hibernate) — its content is dead between frames. */

static _Atomic int64_t heap_bytes;

int64_t http__h2_heap_bytes(void) { return atomic_load(&heap_bytes); }

#define FB_MIN 16384
#define PAGE 4096

static void *mem_malloc(size_t n, void *u)
{
    http__h2 *h = u;
    void *p;
    if (h && n >= FB_MIN && !h->fb) {
        size_t len = (n + PAGE - 1) & ~(size_t)(PAGE - 1);
        p = aligned_alloc(PAGE, len);
        if (p) {
            h->fb = p;
            h->fblen = len;
        }
    } else {
        p = malloc(n);
    }
    if (p)
        atomic_fetch_add(&heap_bytes, (int64_t)malloc_usable_size(p));
    return p;
}
static void mem_free(void *p, void *u)
{
    http__h2 *h = u;
    if (!p)
        return;
    if (h && p == h->fb)
        h->fb = NULL;
    if (h && p == h->maptab)
        h->maptab = NULL;
    atomic_fetch_sub(&heap_bytes, (int64_t)malloc_usable_size(p));
    free(p);
}
static void *mem_calloc(size_t n, size_t sz, void *u)
{
    http__h2 *h = u;
    /* The stream map's bucket table (one page, zeroed): placed on its own
     * page so that, with no stream open, hibernation can give it back. */
    if (h && n * sz == PAGE && !h->maptab) {
        void *t = aligned_alloc(PAGE, PAGE);
        if (t) {
            memset(t, 0, PAGE);
            h->maptab = t;
            atomic_fetch_add(&heap_bytes, (int64_t)malloc_usable_size(t));
            return t;
        }
    }
    void *p = calloc(n, sz);
    if (p)
        atomic_fetch_add(&heap_bytes, (int64_t)malloc_usable_size(p));
    return p;
}
static void *mem_realloc(void *p, size_t n, void *u)
{
    http__h2 *h = u;
    if (!p)
        return mem_malloc(n, u);
    if (n == 0) {
        mem_free(p, u);
        return NULL;
    }
    if (h && p == h->fb) {
        if (n <= h->fblen)
            return p;
        h->fb = NULL; /* grown: an ordinary block from now on */
    }
    if (h && p == h->maptab)
        h->maptab = NULL; /* resized: an ordinary block from now on */
    int64_t old = (int64_t)malloc_usable_size(p);
    void *q = realloc(p, n);
    if (q)
        atomic_fetch_add(&heap_bytes, (int64_t)malloc_usable_size(q) - old);
    return q;
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

/* Connection-specific fields are forbidden in HTTP/2 (RFC 9113 §8.2.2). */
static bool conn_specific(const char *n, size_t l)
{
    return str_ieq(n, l, "connection") || str_ieq(n, l, "keep-alive") || str_ieq(n, l, "proxy-connection") ||
           str_ieq(n, l, "transfer-encoding") || str_ieq(n, l, "upgrade");
}

/* Fields whose value is new on every response (the request id, the trace
 * it was logged under).  HPACK would add each to the connection's dynamic
 * table and evict older entries for it, then search ever longer chains of
 * the same name: 9.3k instructions of HPACK per gRPC call, most of it this.
 * Sent as literals never indexed, they cost their bytes and nothing more,
 * and the table keeps what repeats (content-type, date, grpc-status).  One
 * answer in 64 indexes them after all, so that their names stay in the
 * table and the others send the name as an index, not as Huffman-coded
 * text (~800 instructions an answer). */
static bool unique_value(bz_str name)
{
    return (name.n == 12 && !memcmp(name.p, "x-request-id", 12)) ||
           (name.n == 13 && !memcmp(name.p, "traceresponse", 13));
}

/* Header fields (lower-case names from http_add_header / http_add_trailer,
 * bytes in the stream's arena, alive until the stream is freed, after
 * nghttp2 last looks at them) → nv entries nghttp2 does not copy.
 * Connection-specific fields are dropped, and Content-Length when the
 * server sets it.  Returns how many were written. */
static size_t nv_from_pairs(const http_header *hs, int n, nghttp2_nv *nv, bool drop_cl, bool index_all)
{
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        const http_header *f = &hs[i];
        if (conn_specific(f->name.p, f->name.n) || (drop_cl && str_ieq(f->name.p, f->name.n, "content-length")))
            continue;
        uint8_t flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
        if (!index_all && unique_value(f->name))
            flags |= NGHTTP2_NV_FLAG_NO_INDEX;
        nv[k++] = (nghttp2_nv){(uint8_t *)f->name.p, (uint8_t *)f->value.p, f->name.n, f->value.n, flags};
    }
    return k;
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

static h2_stream *stream_new(http__h2 *h, int32_t id)
{
    h2_stream *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->h = h;
    s->id = id;
    bz_arena_init(&s->arena, 4096);
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
    bz_buf_free(&s->pend);
    bz_buf_free(&s->req.body);
    bz_arena_free(&s->arena);
    rt_ctx_release(&s->ctx);
    free(s);
}

static void stream_wake(h2_stream *s)
{
    if (s->waiter)
        rt_wake(s->waiter, 0);
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
    r->content_length = -1;
    for (int i = 0; i < s->nh; i++) {
        bz_str n = s->hdrs[i].name;
        if (bz_str_eq_c(n, "host"))
            host = true;
        else if (bz_str_eq_c(n, "cookie")) {
            cookies++;
            cookie_len += s->hdrs[i].value.n + 2;
        } else if (bz_str_eq_c(n, "content-length")) {
            /* nghttp2 checked it is a number and checks DATA against it. */
            int64_t v = 0;
            bz_str val = s->hdrs[i].value;
            for (size_t k = 0; k < val.n && k < 18; k++)
                v = v * 10 + (val.p[k] - '0');
            r->content_length = v;
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
    h2_stream *s = nghttp2_session_get_stream_user_data(h->ses, (int32_t)id);
    if (!s || !s->running || s->ctx.deadline == BZ_NO_DEADLINE)
        return false;
    int64_t age = now - s->req.start_ns, left = s->ctx.deadline - now;
    int64_t slack = (s->ctx.deadline - s->req.start_ns) / 4;
    return age >= BZ_NS_PER_MS && left <= (slack > RESET_DEADLINE_SLACK_NS ? slack : RESET_DEADLINE_SLACK_NS);
}

/* The head is complete: start the handler. */
static void stream_start(http__h2 *h, h2_stream *s, bool end_stream)
{
    http_server *srv = h->c->srv;
    req_build(s, end_stream);
    s->in_eof = end_stream;
    if (h->nslots >= srv->o.h2_max_concurrent_streams) {
        /* Past SETTINGS_MAX_CONCURRENT_STREAMS (counting streams reset by
         * the client whose handlers still wind down): a stream error, not
         * a connection error (RFC 9113 §5.1.2), so the calls in flight go
         * on and the client may retry this one.  See h2_new for why
         * nghttp2 does not count this itself. */
        nghttp2_submit_rst_stream(h->ses, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_REFUSED_STREAM);
        return;
    }
    if (atomic_fetch_add(&g_streams, 1) >= srv->o.max_streams && h->nrunning > 0) {
        /* The process-wide budget of streams (each holds a coroutine and
         * its request): refused, the client may retry later.  A
         * connection's first stream is always admitted, so a client that
         * asks for one thing at a time is never refused because others
         * hold many (the bound is --max-streams + --max-conns). */
        atomic_fetch_sub(&g_streams, 1);
        nghttp2_submit_rst_stream(h->ses, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_REFUSED_STREAM);
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
            if (!s->closed && !h->closed)
                nghttp2_submit_rst_stream(h->ses, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
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

static ssize_t data_read(nghttp2_session *ses, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud);

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
        size_t max = (size_t)r->nresp_headers + 3;
        nghttp2_nv *nv = bz_arena_alloc(&s->arena, sizeof *nv * max);
        char st[4], cl[24];
        st[0] = (char)('0' + r->status / 100 % 10);
        st[1] = (char)('0' + r->status / 10 % 10);
        st[2] = (char)('0' + r->status % 10);
        size_t k = 0;
        nv[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)st, 7, 3, NGHTTP2_NV_FLAG_NO_COPY_NAME};
        /* (the loop's Date buffer outlives the frame; it only ever holds a date) */
        const char *date = http__date(h->c->ls);
        nv[k++] = (nghttp2_nv){(uint8_t *)"date", (uint8_t *)date, 4, 29,
                               NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
        /* No content-length when trailers follow (gRPC): the message does
         * not end with the body, and clients read on for the trailers.  Nor
         * for an empty answer: its HEADERS frame ends the stream, which says
         * as much (a gRPC trailers-only answer carries none, as grpc-go's
         * and grpc-java's do not). */
        bool with_cl = final && !no_body_status(r->status) && !s->ntrailers && (r->body.len || r->head);
        if (with_cl) {
            size_t n = bz_fmt_i64(cl, (int64_t)r->body.len);
            nv[k++] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)cl, 14, n, NGHTTP2_NV_FLAG_NO_COPY_NAME};
        }
        k += nv_from_pairs(r->resp_headers, r->nresp_headers, nv + k, with_cl, (h->nanswers++ & 63) == 0);
        bool dp = !final || (!nobody && r->body.len) || s->ntrailers;
        nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read};
        if (nghttp2_submit_response(h->ses, s->id, nv, k, dp ? &prd : NULL) != 0) {
            bz_buf_clear(&r->body);
            return final ? 0 : -EPIPE;
        }
        s->submitted = r->started = true;
        if (dp) {
            s->has_data = true;
            h->npend++;
        }
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
    if (s->deferred) {
        s->deferred = false;
        nghttp2_session_resume_data(h->ses, s->id);
    }
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
        if (e == -ETIMEDOUT && !h->closing && !h->closed &&
            (nghttp2_session_get_stream_remote_window_size(h->ses, s->id) <= 0 ||
             nghttp2_session_get_remote_window_size(h->ses) <= 0)) {
            /* The write deadline passed with the peer's window shut: a
             * zero-window stall, whichever of this and the stall check
             * notices first. */
            h2_close_with(h, NGHTTP2_ENHANCE_YOUR_CALM, "no window for the write timeout (zero-window stall)");
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
    if (!s->closed && !h->closed) {
        /* Reading is what reopens the stream's window. */
        nghttp2_session_consume_stream(h->ses, s->id, k);
        h2_kick(h);
    }
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
    s->trailers[s->ntrailers++] = (http_header){bz_str_c(bz_arena_strdup(&s->arena, name)),
                                                bz_str_c(bz_arena_strdup(&s->arena, value))};
    return 0;
}

/* ---- nghttp2 callbacks ------------------------------------------------------------------------ */

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

/* DATA of H2_NO_COPY_MIN bytes or more leaves without a copy into
 * nghttp2's frame buffer (NGHTTP2_DATA_FLAG_NO_COPY): data_read only says
 * how many of the pend bytes the frame takes, and send_data, called right
 * after in the same nghttp2_session_mem_send, appends the frame header
 * and those bytes to the output being serialised (h->sending).  So a
 * response body is copied once between the handler's buffer and the
 * socket.  Smaller frames are copied twice: for a few hundred bytes the
 * copy costs less than nghttp2's separate path for such frames. */
#define H2_NO_COPY_MIN 1024
static ssize_t data_read(nghttp2_session *ses, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    h2_stream *s = src->ptr;
    http__h2 *h = s->h;
    size_t avail = pend_len(s);
    size_t k = avail < len ? avail : len;
    if (k >= H2_NO_COPY_MIN)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    else if (k)
        pend_sent(s, buf, k);
    if (avail == k) {
        if (s->final) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            if (s->ntrailers) {
                nghttp2_nv *nv = bz_arena_alloc(&s->arena, sizeof *nv * (size_t)s->ntrailers);
                size_t n = nv_from_pairs(s->trailers, s->ntrailers, nv, false, true);
                if (nghttp2_submit_trailer(ses, id, nv, n) == 0)
                    *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            }
            s->has_data = false;
            h->npend--;
        } else if (k == 0) {
            s->deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)k;
}

static int send_data(nghttp2_session *ses, nghttp2_frame *f, const uint8_t *framehd, size_t length,
                     nghttp2_data_source *src, void *ud)
{
    h2_stream *s = src->ptr;
    http__h2 *h = s->h;
    bz_buf *o = h->sending;
    size_t pad = f->data.padlen; /* (we ask for none; kept whole if nghttp2 adds it) */
    bz_buf_reserve(o, 9 + length + pad);
    bz_buf_append(o, framehd, 9);
    if (pad)
        bz_buf_putc(o, (char)(pad - 1));
    bz_buf_reserve(o, length);
    pend_sent(s, (uint8_t *)o->data + o->len, length);
    o->len += length;
    o->data[o->len] = '\0';
    for (size_t i = 1; i < pad; i++)
        bz_buf_putc(o, 0);
    return 0;
}

static int on_begin_headers(nghttp2_session *ses, const nghttp2_frame *f, void *ud)
{
    http__h2 *h = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2_stream *s = stream_new(h, f->hd.stream_id);
    s->hdr_pending = true;
    h->nhdr_pending++;
    nghttp2_session_set_stream_user_data(ses, f->hd.stream_id, s);
    return 0;
}

static bz_str arena_str(bz_arena *a, const uint8_t *p, size_t n)
{
    char *d = bz_arena_alloc(a, n + 1);
    memcpy(d, p, n);
    d[n] = '\0';
    return bz_str_make(d, n);
}

static int on_header(nghttp2_session *ses, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    http__h2 *h = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* request trailers: not passed on */
    h2_stream *s = nghttp2_session_get_stream_user_data(ses, f->hd.stream_id);
    if (!s)
        return 0;
    /* The SETTINGS_MAX_HEADER_LIST_SIZE measure (RFC 9113 §6.5.2),
     * counted per connection too: decoding is work whatever we keep. */
    s->hdr_bytes += nl + vl + 32;
    if (!http__h2_guard_decoded(&h->guard, nl + vl + 32, rt_now())) {
        h->calm_why = h->guard.why;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    size_t max = (size_t)h->c->srv->o.max_header_bytes;
    if (s->hdr_bytes > max) {
        if (!s->bad && !http__h2_guard_oversized(&h->guard, rt_now())) {
            h->calm_why = h->guard.why;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        s->bad = 431;
        /* Past four times the limit we advertised the client is not
         * mistaken but decoding for nothing: stop (nghttp2 would go on
         * decoding and validating every field of the block). */
        if (s->hdr_bytes > 4 * max + 16384) {
            h->calm_why = "header list far beyond SETTINGS_MAX_HEADER_LIST_SIZE (HPACK bomb)";
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0; /* keep decoding (HPACK state), store nothing more */
    }
    if (s->bad)
        return 0;
    if (nl && name[0] == ':') {
        if (nl == 7 && !memcmp(name, ":method", 7))
            s->method = arena_str(&s->arena, value, vl);
        else if (nl == 5 && !memcmp(name, ":path", 5))
            s->path = arena_str(&s->arena, value, vl);
        else if (nl == 10 && !memcmp(name, ":authority", 10))
            s->authority = arena_str(&s->arena, value, vl);
        return 0;
    }
    if (s->nh >= HTTP_MAX_HEADERS - 1) { /* one slot kept for host */
        s->bad = 431;
        return 0;
    }
    http__fields_room(&s->arena, &s->hdrs, s->nh, &s->hcap);
    s->hdrs[s->nh++] = (http_header){arena_str(&s->arena, name, nl), arena_str(&s->arena, value, vl)};
    return 0;
}

static int on_frame_recv(nghttp2_session *ses, const nghttp2_frame *f, void *ud)
{
    http__h2 *h = ud;
    bool es = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    h2_stream *s = nghttp2_session_get_stream_user_data(ses, f->hd.stream_id);
    if (!s)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        s->hdr_pending = false;
        h->nhdr_pending--;
        stream_start(h, s, es);
        return 0;
    }
    if (es) { /* the end of the body (DATA, or request trailers) */
        s->in_eof = true;
        stream_wake(s);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ses, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                         void *ud)
{
    /* The connection window reopens at once: what arrives is bounded by
     * the stream windows, which reopen only as handlers read. */
    nghttp2_session_consume_connection(ses, len);
    h2_stream *s = nghttp2_session_get_stream_user_data(ses, id);
    if (!s || !s->running || s->final) {
        nghttp2_session_consume_stream(ses, id, len); /* nobody will read it */
        if (s && s->answered && (s->discarded += (int64_t)len) > H2_DISCARD_MAX)
            nghttp2_submit_rst_stream(ses, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR); /* enough: see on_frame_send */
        return 0;
    }
    bz_buf_append(&s->in, data, len);
    stream_wake(s);
    return 0;
}

static int on_stream_close(nghttp2_session *ses, int32_t id, uint32_t code, void *ud)
{
    http__h2 *h = ud;
    if (h->freeing)
        return 0;
    h2_stream *s = nghttp2_session_get_stream_user_data(ses, id);
    if (!s)
        return 0;
    s->closed = true;
    if (s->has_data) {
        s->has_data = false;
        h->npend--;
    }
    if (s->running) {
        /* Reset by the client (or the connection failed) while the
         * handler works: its context ends, every wait returns. */
        rt_ctx_cancel(&s->ctx);
        stream_wake(s);
    } else {
        stream_free(s);
    }
    return 0;
}

/* After the last frame of a response (END_STREAM) on a stream whose
 * request is still open — an early answer — RST_STREAM(NO_ERROR) asks the
 * client to stop sending (RFC 9113 §8.1) and closes the stream, so its
 * slot is free at once rather than when (if ever) the client ends its
 * half.  At once for framed streams (gRPC, r->body_limit < 0: e.g.
 * RESOURCE_EXHAUSTED for an over-limit message), as grpc-go's and
 * grpc-java's servers do and every gRPC client expects.  Other requests
 * (a 413) are let finish their body, discarded, up to H2_DISCARD_MAX
 * (on_data_chunk) before the reset: curl before 8.x fails a transfer whose
 * upload a RST_STREAM(NO_ERROR) cut short, though the RFC says not to.
 *
 * A response frame sent is also what lets the client's next PING through
 * the flood guard (h2-guard.c): gRPC clients probe the bandwidth-delay
 * product with a PING after receiving data. */
static int on_frame_send(nghttp2_session *ses, const nghttp2_frame *f, void *ud)
{
    http__h2 *h = ud;
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    h->guard.ping_earned = true;
    if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    h2_stream *s = nghttp2_session_get_stream_user_data(ses, f->hd.stream_id);
    if (s)
        s->answered = true;
    if (s && s->req.body_limit < 0 && nghttp2_session_get_stream_remote_close(ses, f->hd.stream_id) == 0)
        nghttp2_submit_rst_stream(ses, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
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
    h->mem = (nghttp2_mem){h, mem_malloc, mem_free, mem_calloc, mem_realloc};
    if (nghttp2_session_server_new3(&h->ses, srv->h2cb, h, srv->h2opt, &h->mem) != 0)
        abort();
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
    /* SETTINGS_MAX_CONCURRENT_STREAMS goes to nghttp2 under an id it does
     * not know (and ignores), and h2_send writes the real id into the
     * frame on its way out: nghttp2 1.52 treats a HEADERS frame past a
     * limit it knows as a connection error (GOAWAY(PROTOCOL_ERROR) ends
     * every call on the connection), where RFC 9113 §5.1.2 makes it a
     * stream error.  So nghttp2 has no limit and stream_start enforces
     * ours with RST_STREAM(REFUSED_STREAM). */
    nghttp2_settings_entry iv[] = {
        {SETTINGS_MCS_UNSEEN, (uint32_t)srv->o.h2_max_concurrent_streams},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)srv->o.max_header_bytes},
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
    };
    nghttp2_submit_settings(h->ses, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    nghttp2_session_set_local_window_size(h->ses, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
    return h;
}

void http__h2_free(http__h2 *h)
{
    h->freeing = true;
    rt_timer_stop(&h->stall);
    rt_timer_stop(&h->keepalive);
    while (h->streams)
        stream_free(h->streams);
    nghttp2_session_del(h->ses);
    bz_buf_free(&h->out);
    h->c->h2 = NULL;
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
    nghttp2_session_terminate_session(h->ses, code);
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

static void h2_timer(rt_timer *t)
{
    http_conn *c = t->data;
    http__h2 *h = c->h2;
    if (h->closing || h->lingering) {
        http__h2_abort(c);
        return;
    }
    int64_t limit = h->nhdr_pending ? c->srv->o.read_header_timeout_ns : c->srv->o.idle_timeout_ns;
    if (rt_now() < h->idle_since + limit) {
        /* The hibernate tick: nothing is in flight, so nghttp2's frame
         * buffer holds nothing live; MADV_DONTNEED drops its pages (they
         * read as zeros if touched again). */
        if (h->fb && !h->hibernated && !nghttp2_session_want_write(h->ses)) {
            madvise(h->fb, h->fblen, MADV_DONTNEED);
            h->hibernated = true;
            /* With no stream, the map's table is all zeros: a zero page
             * reads the same, so the page can go too (checked, not
             * assumed: a table with anything left in it stays). */
            static const char zero[PAGE];
            if (h->maptab && memcmp(h->maptab, zero, PAGE) == 0)
                madvise(h->maptab, PAGE, MADV_DONTNEED);
        }
        rt_timer_start(&c->timer, h->idle_since + limit);
        return;
    }
    /* Idle (or a header block that never ended): say goodbye politely. */
    h->closing = true;
    nghttp2_session_terminate_session(h->ses, NGHTTP2_NO_ERROR);
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
    if (q >= 0 && q < h->outq_seen)
        h->progress_at = rt_now(); /* the client took some since the last look */
    h->outq_seen = q;
    if (!output_waiting(h) && q <= 0)
        return;
    /* Counted from the last progress, not from the last check: a client
     * that stops reading is released --write-timeout after it stopped. */
    int64_t due = h->progress_at + h->c->srv->o.write_timeout_ns;
    if (due > rt_now()) {
        h->stall_mark = h->progress;
        rt_timer_start(&h->stall, due);
        return;
    }
    /* Nothing moved for the write timeout.  If the socket is empty (a
     * shut window: the peer reads but grants nothing), GOAWAY says why;
     * if it is full, a GOAWAY would wait behind bytes the peer does not
     * take, and lingering for it only holds the connection longer. */
    if (q <= 0 && h->out_off == h->out.len) {
        h2_close_with(h, NGHTTP2_ENHANCE_YOUR_CALM, "no output progress for the write timeout (zero window?)");
        return;
    }
    bz_log_warn("http2: closing connection", BZ_F_STR("peer", h->c->peer),
                BZ_F_STR("reason", "no output progress for the write timeout"), BZ_F_INT("code", NGHTTP2_ENHANCE_YOUR_CALM));
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

static void keepalive_arm(http__h2 *h)
{
    if (h->closing || h->lingering || h->closed || !h->nrunning) {
        if (rt_timer_armed(&h->keepalive))
            rt_timer_stop(&h->keepalive);
        return;
    }
    if (!rt_timer_armed(&h->keepalive))
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
            h2_close_with(h, NGHTTP2_NO_ERROR, "keepalive PING unanswered");
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
    if (nghttp2_submit_ping(h->ses, NGHTTP2_FLAG_NONE, opaque) == 0) {
        h->ping_at = now;
        h2_send(h);
    }
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
         * frame buffer's pages back; the idle timeout closes. */
        h->idle_since = rt_now();
        int64_t d = h->nhdr_pending ? c->srv->o.read_header_timeout_ns : c->srv->o.idle_timeout_ns;
        if (d > H2_HIBERNATE_NS && h->fb)
            d = H2_HIBERNATE_NS;
        rt_timer_start(&c->timer, h->idle_since + d);
    } else if (rt_timer_armed(&c->timer)) {
        rt_timer_stop(&c->timer);
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
    h->out_off = 0;
    if (h->nstreams == 0 || h->out.cap > 4 * H2_OUT_MAX)
        bz_buf_free(&h->out); /* an idle connection keeps no buffer */
    else
        bz_buf_clear(&h->out);
    return true;
}

/* Our first frame is our SETTINGS (RFC 9113 §3.4): the concurrency
 * limit's entry gets its real id back (see h2_new). */
static void settings_fix(uint8_t *f, size_t n)
{
    if (n < 9 || f[3] != NGHTTP2_SETTINGS || (f[4] & NGHTTP2_FLAG_ACK))
        return;
    size_t len = (size_t)f[0] << 16 | (size_t)f[1] << 8 | f[2];
    for (size_t i = 9; i + 6 <= 9 + len && i + 6 <= n; i += 6)
        if (f[i] == SETTINGS_MCS_UNSEEN >> 8 && f[i + 1] == (SETTINGS_MCS_UNSEEN & 0xff)) {
            f[i] = 0;
            f[i + 1] = SETTINGS_MCS;
        }
}

/* The thread's scratch output (h2_send), freed when the thread ends. */
static _Thread_local bz_buf *tl_scratch;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
    bz_buf_free(p);
    free(p);
}

static void scratch_key_make(void) { pthread_key_create(&scratch_key, scratch_free); }

static bz_buf *scratch_buf(void)
{
    if (!tl_scratch) {
        pthread_once(&scratch_once, scratch_key_make);
        tl_scratch = calloc(1, sizeof *tl_scratch);
        if (!tl_scratch)
            abort();
        pthread_setspecific(scratch_key, tl_scratch);
    }
    return tl_scratch;
}

/* Writes the scratch buffer (h->out is empty); what the socket does not
 * take moves to h->out.  False if the connection was closed. */
static bool scratch_write(http__h2 *h)
{
    bz_buf *t = scratch_buf();
    size_t off = 0;
    while (off < t->len) {
        ssize_t n = rt_io_try_write(&h->c->io, t->data + off, t->len - off);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n == -EAGAIN)
            break;
        http__h2_abort(h->c);
        return false;
    }
    if (off < t->len) {
        h->out.len = h->out_off = 0;
        bz_buf_append(&h->out, t->data + off, t->len - off);
    }
    t->len = 0;
    if (t->cap > 4 * H2_OUT_MAX)
        bz_buf_free(t);
    return true;
}

/* Serialises what nghttp2 has to say (up to H2_OUT_MAX) and writes it. */
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
        bool full = false;
        /* With nothing left over from before, frames are serialised into
         * the thread's scratch buffer and written from it: a connection
         * whose output the socket takes at once (nearly every answer)
         * neither keeps nor regrows a buffer of its own (an idle one frees
         * it: a malloc, a realloc and a free per request); only what the
         * socket does not take is kept in h->out. */
        bool scratch = h->out_off == h->out.len;
        bz_buf *o = scratch ? scratch_buf() : &h->out;
        size_t base = scratch ? 0 : h->out_off;
        o->len = scratch ? 0 : o->len;
        h->sending = o; /* where send_data puts DATA frames */
        for (int i = 0; i < 4096; i++) {
            if (o->len - base >= H2_OUT_MAX) {
                full = true;
                break;
            }
            const uint8_t *d;
            ssize_t n = nghttp2_session_mem_send(h->ses, &d);
            if (n < 0) {
                http__h2_abort(h->c);
                return;
            }
            if (n == 0)
                break;
            size_t at = o->len;
            bz_buf_append(o, d, (size_t)n);
            if (!h->settings_out) {
                h->settings_out = true;
                settings_fix((uint8_t *)o->data + at, (size_t)n);
            }
            h->hibernated = false;
        }
        if (scratch && o->len && !scratch_write(h))
            return;
        if (!h2_write(h))
            return;
        if (!full || h->out_off < h->out.len)
            break;
    }
    bool drained = h->out_off == h->out.len;
    if (drained && ((h->closing && !nghttp2_session_want_write(h->ses)) ||
                    (!nghttp2_session_want_read(h->ses) && !nghttp2_session_want_write(h->ses)) ||
                    (h->draining && h->nstreams == 0))) {
        h2_linger(h);
        return;
    }
    if (h->read_paused && h->out.len - h->out_off < H2_OUT_MAX)
        h2_kick(h);
    h2_timers(h);
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
    ssize_t rv = nghttp2_session_mem_recv(h->ses, p, n);
    if (rv < 0) {
        if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
            http__h2_abort(h->c);
            return;
        }
        if (h->calm_why) { /* a callback found abuse */
            h2_close_with(h, NGHTTP2_ENHANCE_YOUR_CALM, h->calm_why);
            return;
        }
        h2_close_with(h, rv == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR,
                      nghttp2_strerror((int)rv));
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
    /* Stream 1 is the upgrade request, half-closed (remote). */
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
    /* (r->head is not set yet on this path: the method says it) */
    if (nghttp2_session_upgrade2(h->ses, settings, (size_t)ns, bz_str_eq_c(r->method, "HEAD"), s) != 0) {
        /* Settings nghttp2 refuses: the 101 is out, so end it as HTTP/2. */
        stream_free(s);
        h2_close_with(h, NGHTTP2_PROTOCOL_ERROR, "bad HTTP2-Settings");
    } else {
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
    /* Streams up to the last one we saw finish; later ones are refused. */
    nghttp2_submit_goaway(h->ses, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->ses),
                          NGHTTP2_NO_ERROR, NULL, 0);
    h2_send(h);
}

/* ---- per-server setup ---------------------------------------------------------------------- */

void http__h2_server_init(http_server *s)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        abort();
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_send_data_callback(cb, send_data);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0)
        abort();
    /* Windows reopen as handlers read (see the top of this file). */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* No priority tree of closed streams: memory for nothing here. */
    nghttp2_option_set_no_closed_streams(opt, 1);
    /* Bounds on what a peer can make us queue; the rates are h2-guard's. */
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    s->h2cb = cb;
    s->h2opt = opt;
}

void http__h2_server_free(http_server *s)
{
    if (s->h2cb)
        nghttp2_session_callbacks_del(s->h2cb);
    if (s->h2opt)
        nghttp2_option_del(s->h2opt);
    s->h2cb = s->h2opt = NULL;
}

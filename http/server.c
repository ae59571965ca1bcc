/* http/server.c — HTTP/1.1 connections on the coroutine runtime.
 *
 * A connection is an rt_io plus a small struct.  While idle it holds no
 * coroutine and no read buffer: the loop calls conn_event when bytes
 * arrive, which starts a coroutine (conn_serve) with a pooled buffer.  The
 * coroutine serves every request it finds, pipelined ones included
 * (responses are queued in order and written together), and exits when
 * the buffer is drained and the socket has nothing more, handing the
 * buffer back to the loop's pool.  So a keep-alive connection costs its
 * fd, this struct and an idle timer between requests. */
#include "http/h2-private.h"

#include <bazaar/log.h>

#include <arpa/inet.h>
#include <stdatomic.h>
#include <unistd.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>

#define POOL_MAX 64
#define DISCARD_MAX (256 * 1024) /* unread body we drain to keep a connection */
/* Lingering close: input read and dropped after the answer, before close. */
#define LINGER_MAX (16 * 1024 * 1024)
#define LINGER_NS (5 * BZ_NS_PER_S)
/* Output of pipelined responses a connection may queue before it stops
 * reading and serving until the client has taken it (API.md §10). */
#define OUT_PENDING_MAX (1024 * 1024)
/* How long one connection's coroutine may serve pipelined requests in a
 * loop turn before it yields (the loop polls I/O every 0.5 ms anyway). */
#define SERVE_SLICE_NS (500 * 1000)

/* ---- buffers and bookkeeping ------------------------------------------------------------ */

/* Gives back the whole pages of a read buffer that is not pooled, when
 * it is made and when it is freed.  Read buffers are most of the heap
 * when many slow clients each hold one (2,000 slowloris: 48 MiB), and
 * malloc hands a buffer memory that any earlier use may have dirtied:
 * without this a parked slowloris kept up to 24 KiB resident instead of
 * the page it wrote, and heap RSS crept for as long as slow clients kept
 * coming (make soak).  Only past POOL_MAX buffers in use on a loop (and
 * for the pool's first fill), so a busy server with fewer requests in
 * flight never pays the system call. */
static void buf_clean(http_conn *c, char *b)
{
    uintptr_t ps = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)b + ps - 1) & ~(ps - 1);
    uintptr_t hi = ((uintptr_t)b + c->srv->bufcap) & ~(ps - 1);
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

static char *buf_get(http_conn *c)
{
    http__loop *ls = c->ls;
    if (ls->npool)
        return ls->pool[--ls->npool];
    char *b = malloc(c->srv->bufcap);
    if (!b)
        abort();
    buf_clean(c, b);
    return b;
}

static void buf_put(http_conn *c, char *b)
{
    http__loop *ls = c->ls;
    if (ls->npool < POOL_MAX) {
        ls->pool[ls->npool++] = b;
    } else {
        buf_clean(c, b);
        free(b);
    }
}

/* The output and response-body buffers, the arena and the header slots
 * a connection uses while it serves, pooled per loop as the read buffers
 * are.  The slots (3.2 KB) lived in conn_serve's frame: a transfer then ran
 * 14.3 KiB down its coroutine's stack, past the 12 KiB a pooled stack
 * keeps (rt/coro.c), and every one paid a madvise when its coroutine was
 * pooled.  Pooled sets: a keep-alive connection between requests holds none, and a
 * request neither grows three fresh buffers from 64 bytes nor mallocs
 * its arena's first chunk (five mallocs, four reallocs and their frees
 * per /healthz before).  Only small ones are kept (SET_KEEP_MAX: a
 * larger response's buffers are freed as before). */
#define SET_KEEP_MAX 4096
/* Sets pooled per loop and server: a request that does not park returns
 * its set before the next one takes it, so a few cover a busy loop; the
 * read buffers' 64 held 1 MiB per loop and server that the soak saw
 * fill slowly (RSS rising after the warm-up). */
#define SETS_MAX 16
typedef struct http__bufset {
    bz_buf out, bbuf;
    bz_arena arena;
    http_header *hdrs;
} http__bufset;

static void bufs_get(http_conn *c)
{
    http__loop *ls = c->ls;
    if (!ls->nsets) {
        bz_arena_init(&c->arena, 4096);
        c->hdrs = malloc(HTTP_MAX_HEADERS * sizeof *c->hdrs);
        if (!c->hdrs)
            abort();
        return;
    }
    http__bufset *set = &ls->sets[--ls->nsets];
    c->out = set->out;
    c->bbuf = set->bbuf;
    c->arena = set->arena;
    c->hdrs = set->hdrs;
}

static void keep_or_free(bz_buf *b)
{
    if (b->cap > SET_KEEP_MAX)
        bz_buf_free(b);
    bz_buf_clear(b);
}

/* After a coroutine served (c->arena was set up by bufs_get). */
static void bufs_put(http_conn *c)
{
    http__loop *ls = c->ls;
    bz_arena_reset(&c->arena);
    if (ls->nsets < SETS_MAX && c->arena.total <= SET_KEEP_MAX + 64) {
        http__bufset *set = &ls->sets[ls->nsets++];
        keep_or_free(&c->out);
        keep_or_free(&c->bbuf);
        *set = (http__bufset){c->out, c->bbuf, c->arena, c->hdrs};
    } else {
        bz_buf_free(&c->out);
        bz_buf_free(&c->bbuf);
        bz_arena_free(&c->arena);
        free(c->hdrs);
    }
    c->hdrs = NULL;
    c->out = c->bbuf = BZ_BUF_INIT;
    bz_arena_init(&c->arena, 4096);
}

void http__conn_free(http_conn *c)
{
    if (c->h2)
        http__h2_free(c->h2);
    if (c->rbuf)
        buf_put(c, c->rbuf);
    bz_buf_free(&c->out); /* a coroutine that served put the rest back */
    bz_buf_free(&c->bbuf);
    bz_arena_free(&c->arena);
    free(c->hdrs);
    http_server *s = c->srv;
    free(c);
    rt_wg_done(&s->conns);
}

static void hs_unqueue(http_conn *c)
{
    http__loop *ls = c->ls;
    if (!c->hs_queued)
        return;
    c->hs_queued = false;
    if (c->hs_prev)
        c->hs_prev->hs_next = c->hs_next;
    else
        ls->hs_head = c->hs_next;
    if (c->hs_next)
        c->hs_next->hs_prev = c->hs_prev;
    else
        ls->hs_tail = c->hs_prev;
    c->hs_prev = c->hs_next = NULL;
}

void http__conn_shut(http_conn *c)
{
    if (c->dead)
        return;
    hs_unqueue(c);
    c->dead = true;
    rt_timer_stop(&c->timer);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->ls->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    rt_io_close(&c->io);
    atomic_fetch_sub_explicit(c->h2 ? &c->srv->open_h2 : &c->srv->open_h1, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&c->ls->nconns, 1, memory_order_relaxed);
    if (c->gate) {
        rt_gate_leave(c->gate); /* a paused listener may accept again */
        c->gate = NULL;
    }
}

/* Closes the socket and unlinks; frees now unless a coroutine still runs.
 * An HTTP/2 connection closes through h2.c, which frees it once its
 * stream coroutines are gone. */
static void conn_close(http_conn *c)
{
    if (c->dead)
        return;
    if (c->h2) {
        http__h2_abort(c);
        return;
    }
    http__conn_shut(c);
    if (!c->active)
        http__conn_free(c);
}

/* The Date header, re-read from the wall clock at most every 100 ms of
 * loop time (so it is never more than 0.1 s behind). */
const char *http__date(http__loop *ls)
{
    int64_t now = rt_now();
    if (!ls->date[0] || now - ls->date_at >= 100 * BZ_NS_PER_MS) {
        bz_fmt_http_date(ls->date, bz_wall_us() / 1000000);
        ls->date_at = now;
    }
    return ls->date;
}

/* ---- output ----------------------------------------------------------------------------- */

static int out_flush(http_conn *c)
{
    if (!c->out.len)
        return 0;
    int r = rt_write_all(&c->io, c->out.data, c->out.len, &c->ls->ctx, c->write_deadline);
    bz_buf_clear(&c->out);
    return r;
}

static bool no_body_status(int s) { return (s >= 100 && s < 200) || s == 204 || s == 304; }

#define PUT(p, lit) (memcpy((p), (lit), sizeof(lit) - 1), (p) += sizeof(lit) - 1)

/* The response head, written into the output in one pass after one
 * reservation (literals of known size; the fields straight from their
 * pairs). */
static void put_head(http_conn *c, http_req *r, bool chunked)
{
    bz_buf *o = &c->out;
    if (!r->status)
        r->status = 200;
    const char *text = http_status_text(r->status);
    size_t tn = strlen(text), need = 160 + tn;
    for (int i = 0; i < r->nresp_headers; i++)
        need += r->resp_headers[i].name.n + r->resp_headers[i].value.n + 4;
    bz_buf_reserve(o, need);
    char *p = o->data + o->len;
    PUT(p, "HTTP/1.1 ");
    p += bz_fmt_i64(p, r->status);
    *p++ = ' ';
    memcpy(p, text, tn);
    p += tn;
    PUT(p, "\r\nDate: ");
    memcpy(p, http__date(c->ls), 29);
    p += 29;
    PUT(p, "\r\n");
    if (chunked) {
        PUT(p, "Transfer-Encoding: chunked\r\n");
    } else if (!no_body_status(r->status)) {
        PUT(p, "Content-Length: ");
        p += bz_fmt_i64(p, (int64_t)r->body.len);
        PUT(p, "\r\n");
    }
    if (r->close_after)
        PUT(p, "Connection: close\r\n");
    else if (r->minor == 0)
        PUT(p, "Connection: keep-alive\r\n");
    /* The handler's fields, written once, straight from the pairs. */
    for (int i = 0; i < r->nresp_headers; i++) {
        const http_header *h = &r->resp_headers[i];
        memcpy(p, h->name.p, h->name.n);
        p += h->name.n;
        *p++ = ':';
        *p++ = ' ';
        memcpy(p, h->value.p, h->value.n);
        p += h->value.n;
        *p++ = '\r';
        *p++ = '\n';
    }
    PUT(p, "\r\n");
    o->len = (size_t)(p - o->data);
    o->data[o->len] = '\0';
    r->started = true;
}

static void put_chunk(bz_buf *o, const char *p, size_t n)
{
    if (!n)
        return;
    char hex[24];
    int k = snprintf(hex, sizeof hex, "%zx\r\n", n);
    bz_buf_append(o, hex, (size_t)k);
    bz_buf_append(o, p, n);
    bz_buf_append(o, "\r\n", 2);
}

int http__conn_flush(http_req *r, bool final)
{
    if (r->h2s)
        return http__h2_flush(r, final);
    http_conn *c = r->conn;
    if (c->dead)
        return -EPIPE;
    if (!r->started) {
        if (final) {
            put_head(c, r, false);
            if (!r->head && !no_body_status(r->status))
                bz_buf_append_str(&c->out, bz_buf_str(&r->body));
            bz_buf_clear(&r->body);
            return 0; /* written with the next flush of the connection */
        }
        r->streaming = true;
        put_head(c, r, !no_body_status(r->status));
    }
    if (r->streaming && !r->head && !no_body_status(r->status)) {
        put_chunk(&c->out, r->body.data, r->body.len);
        if (final)
            bz_buf_append_c(&c->out, "0\r\n\r\n");
    }
    bz_buf_clear(&r->body);
    return final ? 0 : out_flush(c);
}

static void send_error_and_close(http_conn *c, int status)
{
    char body[160];
    int n = snprintf(body, sizeof body,
                     "{\"type\":\"about:blank\",\"title\":\"%s\",\"status\":%d,\"code\":\"%s\"}",
                     http_status_text(status), status,
                     status == 431 ? "header_too_large" : status == 414 ? "uri_too_long"
                     : status == 413 ? "body_too_large" : status == 505 ? "http_version_not_supported"
                     : status == 501 ? "not_implemented" : status == 417 ? "expectation_failed"
                     : "bad_request");
    char head[256];
    char date[32];
    bz_fmt_http_date(date, bz_wall_us() / 1000000);
    int h = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: application/problem+json\r\n"
                     "Content-Length: %d\r\nConnection: close\r\n\r\n",
                     status, http_status_text(status), date, n);
    bz_buf_append(&c->out, head, (size_t)h);
    bz_buf_append(&c->out, body, (size_t)n);
    c->write_deadline = bz_now_ns() + c->srv->o.write_timeout_ns;
    out_flush(c);
    /* Let the client read the answer before the close resets the socket. */
    rt_tls_shutdown(&c->io);
    conn_close(c);
}

/* ---- body --------------------------------------------------------------------------------- */

/* Reads more bytes into rbuf after the head, compacting the body area. */
static int fill(http_conn *c)
{
    if (c->rpos == c->rlen) {
        c->rpos = c->rlen = c->head_len;
    } else if (c->rlen == c->srv->bufcap) {
        memmove(c->rbuf + c->head_len, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos - c->head_len;
        c->rpos = c->head_len;
    }
    if (c->rlen == c->srv->bufcap)
        return -EMSGSIZE; /* a chunk line longer than the buffer */
    ssize_t n = rt_read(&c->io, c->rbuf + c->rlen, c->srv->bufcap - c->rlen, c->req_ctx, c->read_deadline);
    if (n == 0)
        return -ECONNRESET;
    if (n < 0)
        return (int)n;
    c->rlen += (size_t)n;
    return 0;
}

/* 100 Continue before the first body read, unless the client already
 * started sending the body.  It goes behind the responses to earlier
 * pipelined requests still queued in c->out, never ahead of them. */
static int send_continue(http_req *r, http_conn *c)
{
    if (!r->expect_continue || c->continue_sent || r->started)
        return 0;
    c->continue_sent = true;
    if (c->rpos < c->rlen)
        return 0; /* body bytes are here: the client did not wait (RFC 9110 §10.1.1) */
    bz_buf_append_c(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
    return out_flush(c);
}

ssize_t http__conn_body_read(http_req *r, void *buf, size_t n)
{
    if (r->h2s)
        return http__h2_body_read(r, buf, n);
    http_conn *c = r->conn;
    if (c->body_done || n == 0)
        return 0;
    /* The limit is the handler's (gRPC raises it, r->body_limit), so it is
     * applied here rather than before the handler runs: a declared length
     * over it is refused before a byte is read (or 100 Continue sent). */
    int64_t limit = r->body_limit ? r->body_limit : c->srv->o.max_body_bytes;
    if (r->body_limit >= 0 && !c->body_chunked && r->content_length > limit)
        return -EMSGSIZE;
    int e = send_continue(r, c);
    if (e)
        return e;
    if (!c->body_chunked) {
        if (c->body_left <= 0) {
            c->body_done = true;
            return 0;
        }
        size_t want = n < (uint64_t)c->body_left ? n : (size_t)c->body_left;
        if (c->rpos < c->rlen) {
            size_t have = c->rlen - c->rpos;
            if (want > have)
                want = have;
            memcpy(buf, c->rbuf + c->rpos, want);
            c->rpos += want;
        } else {
            ssize_t got = rt_read(&c->io, buf, want, c->req_ctx, c->read_deadline);
            if (got == 0)
                return -ECONNRESET;
            if (got < 0)
                return got;
            want = (size_t)got;
        }
        c->body_left -= (int64_t)want;
        c->body_total += (int64_t)want;
        if (!c->body_left)
            c->body_done = true;
        return (ssize_t)want;
    }
    for (;;) {
        size_t used = 0, dlen = 0;
        const char *data = NULL;
        int st = http__chunked_step(&c->ch, c->rbuf + c->rpos, c->rlen - c->rpos, n, &used, &data, &dlen);
        if (st == HTTP_CHUNK_ERROR)
            return -EBADMSG;
        if (st == HTTP_CHUNK_DATA) {
            memcpy(buf, data, dlen);
            c->rpos += used;
            c->body_total += (int64_t)dlen;
            if (r->body_limit >= 0 && c->body_total > limit)
                return -EMSGSIZE;
            return (ssize_t)dlen;
        }
        c->rpos += used;
        if (st == HTTP_CHUNK_DONE) {
            c->body_done = true;
            return 0;
        }
        if ((e = fill(c)) != 0)
            return e;
    }
}

int http_read_body(http_req *r, const char **data, size_t *len)
{
    if (r->body_read) {
        *data = r->body_data;
        *len = r->body_len;
        return 0;
    }
    int64_t cap = r->conn->srv->o.max_body_bytes;
    if (!r->chunked && r->content_length > cap)
        return -EMSGSIZE;
    size_t want = r->chunked ? 4096 : (size_t)(r->content_length < 0 ? 0 : r->content_length);
    char *b = bz_arena_alloc(r->arena, want + 1);
    size_t have = 0, bcap = want;
    for (;;) {
        if (have == bcap) {
            if (!r->chunked)
                break;
            size_t ncap = bcap * 2;
            char *nb = bz_arena_alloc(r->arena, ncap + 1);
            memcpy(nb, b, have);
            b = nb;
            bcap = ncap;
        }
        ssize_t n = http__conn_body_read(r, b + have, bcap - have);
        if (n < 0)
            return (int)n;
        if (n == 0)
            break;
        have += (size_t)n;
        if ((int64_t)have > cap)
            return -EMSGSIZE;
    }
    b[have] = '\0';
    *data = b;
    *len = have;
    r->body_read = true;
    r->body_data = b;
    r->body_len = have;
    return 0;
}

/* Reads and drops what the handler left of the body, so the connection
 * can carry the next request.  False if that is not worth it or failed.
 * Not inlined: its 4 KiB buffer would sit in every request's frame. */
__attribute__((noinline)) static bool discard_body(http_req *r, http_conn *c)
{
    if (c->body_done)
        return true;
    if (r->expect_continue && !c->continue_sent)
        return false; /* the client has not sent it; don't ask for it now */
    if (!c->body_chunked && c->body_left > DISCARD_MAX)
        return false;
    char tmp[4096];
    int64_t dropped = 0;
    for (;;) {
        ssize_t n = http__conn_body_read(r, tmp, sizeof tmp);
        if (n == 0)
            return true;
        if (n < 0)
            return false;
        dropped += n;
        if (dropped > DISCARD_MAX)
            return false;
    }
}

/* Lingering close, as nginx's lingering_close: after answering a request
 * whose body we did not read (a 413, an early gRPC-Web status), the write
 * side is shut and the rest of the body is read and dropped until the
 * client closes, for at most LINGER_MAX bytes and LINGER_NS.  Closing with
 * unread input would make the kernel answer RST, which can destroy the
 * answer before a client that sends its whole body first has read it. */
static void linger(http_conn *c)
{
    /* Into the read buffer (the request is answered): a 16 KiB array on the
     * coroutine's stack dirtied pages below what the pooled-stack trim
     * looks at, and the soak's RSS crept by a page per pooled stack. */
    if (!c->rbuf)
        c->rbuf = buf_get(c);
    c->rlen = c->rpos = 0;
    int64_t deadline = bz_now_ns() + LINGER_NS, left = LINGER_MAX;
    while (left > 0) {
        ssize_t n = rt_read(&c->io, c->rbuf, c->srv->bufcap, &c->ls->ctx, deadline);
        if (n <= 0)
            return;
        left -= n;
    }
}

/* ---- one request ----------------------------------------------------------------------------- */

static void format_peer(http_conn *c, const struct sockaddr *sa)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)sa;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        port = ntohs(a->sin_port);
        snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        port = ntohs(a->sin6_port);
        if (!strncmp(ip, "::ffff:", 7)) /* IPv4-mapped: show the IPv4 form */
            snprintf(c->peer, sizeof c->peer, "%s:%d", ip + 7, port);
        else
            snprintf(c->peer, sizeof c->peer, "[%s]:%d", ip, port);
    } else {
        snprintf(c->peer, sizeof c->peer, "unix");
    }
}

bool http__handler_failed(http_req *r, int rc)
{
    http_clear_headers(r);
    if (rc == -EMSGSIZE) {
        http_send_problem(r, 413, "body_too_large", "the request body is larger than the server accepts");
        return true;
    }
    if (rc == -EBADMSG) {
        http_send_problem(r, 400, "bad_request", "malformed request body");
        return true;
    }
    bz_log_err("handler failed", BZ_F_STR("path", r->pattern ? r->pattern : "?"),
               BZ_F_STR("error", strerror(-rc)), BZ_F_STR("request_id", r->request_id));
    http_send_problem(r, 500, "internal", "the server failed to handle the request");
    return false;
}

/* Serves the request whose head is rbuf[0..head_len).  False when the
 * connection must close afterwards. */
static bool serve_one(http_conn *c, http_req *r, bz_arena *arena, int64_t t0)
{
    http_server *s = c->srv;
    /* The request context has no parent: shutdown reaches it through
     * c->req_ctx (close_all), which spares every request two lock round
     * trips on a shared parent. */
    rt_ctx ctx;
    rt_ctx_init(&ctx, NULL);
    if (atomic_load(&s->cancelled))
        rt_ctx_cancel(&ctx);
    r->ctx = &ctx;
    r->arena = arena;
    r->conn = c;
    r->start_ns = t0;
    r->head = bz_str_eq_c(r->method, "HEAD");
    memcpy(r->peer, c->peer, sizeof c->peer);
    r->close_after = !r->keep_alive || atomic_load(&s->draining);
    c->req_ctx = &ctx;
    c->rpos = c->head_len;
    c->body_chunked = r->chunked;
    c->body_left = r->chunked ? 0 : (r->content_length > 0 ? r->content_length : 0);
    c->body_done = !r->chunked && c->body_left == 0;
    c->continue_sent = false;
    c->ch = (http_chunked){0};
    c->body_total = 0;
    c->read_deadline = t0 + s->o.read_timeout_ns;
    c->write_deadline = bz_now_ns() + s->o.write_timeout_ns;

    bool cut = false;
    http__trace_begin(r);
    int rc = s->h.fn(r, s->h.data);
    if (rc < 0 && !r->started) {
        /* 413/400 leave a body unread: it forbids keep-alive. */
        if (http__handler_failed(r, rc))
            r->close_after = true;
    } else if (rc < 0) {
        /* Failed mid-stream: close without the last chunk, so the
         * client sees a truncated response rather than a wrong one. */
        r->close_after = true;
        cut = true;
    }
    if (!r->close_after && !discard_body(r, c))
        r->close_after = true;
    if (!r->started && atomic_load(&s->draining))
        r->close_after = true;
    if (!cut)
        http__conn_flush(r, true);
    http__trace_end(r);
    c->req_ctx = NULL;
    rt_ctx_release(&ctx);
    /* Keep the body buffer for the next request on this connection (the
     * header fields were in the arena, reset by the caller). */
    c->bbuf = r->body;
    bz_buf_clear(&c->bbuf);
    return !r->close_after && !c->dead;
}

static void go_idle(http_conn *c);
static void conn_serve(void *p);

/* The loop's share of --tls-max-handshakes (each loop keeps its own
 * count and queue: no cross-thread hand-off). */
static int hs_cap(const http_server *s)
{
    int n = s->o.tls_max_handshakes / (s->nloops > 0 ? s->nloops : 1);
    return n > 0 ? n : 1;
}

/* A handshake ended: its slot goes to the newest waiting connection
 * (LIFO, as a server under a flood should: the oldest waiters are the
 * likeliest to be flood and the closest to their deadline).  A waiter
 * with less than a quarter of the handshake timeout left is not started
 * (its handshake would cost CPU and most likely not finish in time); its
 * timer closes it. */
static void hs_done(http_conn *c)
{
    http__loop *ls = c->ls;
    if (!c->hs_slot)
        return;
    c->hs_slot = false;
    ls->hs_running--;
    int64_t late = rt_now() + c->srv->o.tls_handshake_timeout_ns / 4;
    while (ls->hs_tail && ls->hs_running < hs_cap(c->srv)) {
        http_conn *w = ls->hs_tail;
        if (w->hs_deadline < late)
            break; /* and so are all older ones: their timers close them */
        hs_unqueue(w);
        w->hs_slot = true;
        ls->hs_running++;
        w->active = true;
        rt_go(conn_serve, w); /* its ClientHello waits in the socket */
    }
}

/* TLS: the handshake, on the connection's first coroutine, within the
 * read-header timeout counted from the accept (a client that never
 * finishes it is cut then).  ALPN h2 makes the connection HTTP/2 once
 * the preface comes; anything else is HTTP/1.1. */
static bool tls_start(http_conn *c)
{
    int r = rt_tls_accept(&c->io, c->srv->o.tls, &c->ls->ctx, c->hs_deadline);
    hs_done(c);
    if (r != 0) {
        /* Scanners and broken clients: not worth more than debug. */
        bz_log_dbg("tls: handshake failed", BZ_F_STR("peer", c->peer), BZ_F_STR("error", rt_tls_last_error()),
                   BZ_F_INT("code", -r));
        /* Plain HTTP on the TLS port (OpenSSL recognises the request
         * line): say so in plain text, as Go's server does, rather than a
         * bare close nobody with curl can read. */
        if (r == -EPROTO && strstr(rt_tls_last_error(), "http request")) {
            static const char msg[] = "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n"
                                      "Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
            rt_write_all(&c->io, msg, sizeof msg - 1, &c->ls->ctx, rt_now() + c->srv->o.write_timeout_ns);
            rt_tls_shutdown(&c->io);
        }
        return false;
    }
    const char *alpn = rt_tls_alpn(&c->io);
    c->tls_h2 = alpn && alpn[0] == 'h' && alpn[1] == '2';
    return true;
}

static void conn_serve(void *p)
{
    http_conn *c = p;
    http_server *s = c->srv;
    if (!c->rbuf) {
        c->rbuf = buf_get(c);
        c->rlen = 0;
    }
    bufs_get(c);
    bool keep = true;
    if (s->o.tls && !c->io.tls && !tls_start(c)) {
        keep = false;
        goto idle;
    }
    while (keep && !c->dead) {
        /* Read until a whole head is buffered. */
        int64_t t0 = rt_now();
        int64_t head_deadline = t0 + s->o.read_header_timeout_ns;
        int status = 0, hl;
        http_req r;
        /* The head is parsed as it arrives, each byte once (rbuf only
         * grows while it does: r and c->hdrs point into it). */
        http_head_parser hp;
        http__head_init(&hp);
        /* r is zeroed once bytes come (the parser writes into it only
         * then): the turn that finds nothing to read and goes idle — one
         * per keep-alive request — does not pay for it. */
        bool zeroed = false;
        for (;;) {
            if (!zeroed && c->rlen) {
                memset(&r, 0, offsetof(http_req, status));
                zeroed = true;
            }
            /* A connection whose first bytes are the HTTP/2 client preface
             * speaks h2c with prior knowledge (RFC 9113 §3.3). */
            int pf = c->served || (c->io.tls && !c->tls_h2) ? -1 : http__h2_preface(c->rbuf, c->rlen);
            if (pf > 0) {
                http__h2_start(c, c->rbuf, c->rlen);
                goto h2;
            }
            hl = pf == 0 ? 0
                         : http__parse_head_step(&hp, c->rbuf, c->rlen, (size_t)s->o.max_header_bytes, &r,
                                                 c->hdrs, HTTP_MAX_HEADERS, &status);
            if (hl != 0)
                break;
            if (c->rlen == 0 && !c->io.readable && !rt_io_pending(&c->io)) {
                /* Nothing buffered and nothing pending: go idle — unless
                 * the next request came while the flush was parked (a
                 * batched write, rt.h): its edge found this connection
                 * active and left only the flag, so read it now. */
                if (out_flush(c) != 0)
                    keep = false;
                if (!keep || !c->io.readable)
                    goto idle;
            }
            if (c->out.len && out_flush(c) != 0) {
                keep = false;
                goto idle;
            }
            /* Part of a head and a wait for the rest: a slow client may
             * park here for the whole header timeout, so the stack pages
             * an earlier deep request left on this pooled coroutine go
             * back now (2,000 slowloris must not each hold ~30 KiB). */
            if (c->rlen)
                rt_stack_release();
            ssize_t n = rt_read(&c->io, c->rbuf + c->rlen, s->bufcap - c->rlen, &c->ls->ctx,
                                c->rlen ? head_deadline : bz_now_ns() - 1);
            if (n == -ETIMEDOUT && c->rlen == 0) {
                goto idle; /* the pending edge was spurious */
            }
            if (n <= 0) {
                keep = false; /* EOF, error or header timeout: drop it */
                goto idle;
            }
            c->rlen += (size_t)n;
        }
        if (hl < 0) {
            send_error_and_close(c, status);
            keep = false;
            break;
        }
        c->head_len = (size_t)hl;
        r.head = false; /* read by the upgrade below (the memset stops at status) */
        /* Upgrade: h2c on the first request (RFC 7540 §3.2): 101, and the
         * request is answered as stream 1 of the new HTTP/2 connection.
         * Requests with a body stay on HTTP/1.1 (the RFC allows refusing). */
        if (!c->served && !c->io.tls && r.content_length <= 0 && !r.chunked && !atomic_load(&s->draining) &&
            http__h2_wants_upgrade(&r) && http__h2_upgrade(c, &r, c->rbuf + hl, c->rlen - (size_t)hl))
            goto h2;
        c->served = true;
        r.h2s = NULL;
        r.status = 0;
        r.resp_headers = NULL;
        r.nresp_headers = r.resp_headers_cap = 0;
        r.body = c->bbuf;
        r.started = r.streaming = r.head = r.close_after = r.gzip = r.body_read = false;
        r.bytes_out = 0;
        r.pattern = NULL;
        r.request_id[0] = '\0';
        r.npv = 0;
        keep = serve_one(c, &r, &c->arena, t0);
        bz_arena_reset(&c->arena);
        /* Drop this request's bytes; a pipelined next one moves up. */
        if (c->rpos < c->rlen)
            memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
        /* Pipelined responses the client does not read: past the cap,
         * stop reading and serving until the client has taken them. */
        if (keep && c->out.len >= OUT_PENDING_MAX && out_flush(c) != 0)
            keep = false;
        /* Fairness: a client pipelining requests as fast as we answer
         * never makes this coroutine wait for input; past a slice of the
         * loop's turn, send what is ready and let the others run.  (Only
         * with more input at hand: a lone request pays no clock read.) */
        if (keep && (c->rlen || c->io.readable) && bz_now_ns() - rt_now() > SERVE_SLICE_NS) {
            if (out_flush(c) != 0)
                keep = false;
            else
                rt_yield();
        }
        if (!keep) {
            out_flush(c);
            if (!c->dead) {
                rt_tls_shutdown(&c->io);
                if (!c->body_done)
                    linger(c);
            }
        }
    }
    goto idle;
h2:
    /* The connection is HTTP/2 now: h2.c owns it, and it needs neither this
     * coroutine nor the read buffer. */
    buf_put(c, c->rbuf);
    c->rbuf = NULL;
    c->rlen = 0;
    bufs_put(c);
    c->active = false;
    return;
idle:
    c->active = false;
    if (!keep || c->dead || atomic_load(&s->draining)) {
        bufs_put(c);
        if (c->dead)
            http__conn_free(c);
        else
            conn_close(c);
        return;
    }
    go_idle(c);
}

/* ---- idle connections ---------------------------------------------------------------------- */

static void idle_expired(rt_timer *t)
{
    http_conn *c = t->data;
    if (!c->active)
        conn_close(c); /* a connection still queued for a handshake too */
}

static void go_idle(http_conn *c)
{
    if (c->rlen == 0 && c->rbuf) {
        buf_put(c, c->rbuf);
        c->rbuf = NULL;
    }
    bufs_put(c);
    /* Before the first request (over TLS: after the handshake) the head is
     * due within read-header-timeout, as Go does; after it, idle-timeout. */
    rt_timer_start(&c->timer, rt_now() + (c->served ? c->srv->o.idle_timeout_ns : c->srv->o.read_header_timeout_ns));
}

static void conn_event(rt_io *io, uint32_t ev)
{
    http_conn *c = (http_conn *)io;
    if (c->dead)
        return;
    if (c->h2) {
        http__h2_event(c, ev);
        return;
    }
    if (c->active) {
        /* A hang-up while a handler runs cancels its context. */
        if ((ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && c->req_ctx)
            rt_ctx_cancel(c->req_ctx);
        return;
    }
    if (c->hs_queued) {
        if (ev & (EPOLLHUP | EPOLLERR))
            conn_close(c);
        return; /* its turn comes when a handshake slot frees */
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        if (c->srv->o.tls && !c->io.tls && !c->hs_slot) {
            /* A handshake costs a coroutine and ~64 KiB of TLS state for
             * up to --tls-handshake-timeout: past the loop's share of
             * --tls-max-handshakes, wait in line holding neither (the
             * timer, the handshake deadline, keeps running). */
            if (c->ls->hs_running >= hs_cap(c->srv)) {
                c->hs_queued = true;
                c->hs_prev = c->ls->hs_tail;
                if (c->ls->hs_tail)
                    c->ls->hs_tail->hs_next = c;
                else
                    c->ls->hs_head = c;
                c->ls->hs_tail = c;
                return;
            }
            c->hs_slot = true;
            c->ls->hs_running++;
        }
        c->active = true;
        rt_timer_stop(&c->timer);
        rt_go(conn_serve, c);
    }
}

/* gate: the slot fd holds (accepted through a gated listener), or NULL. */
static void conn_start(http_server *s, rt_loop *l, int fd, const struct sockaddr *peer, rt_gate *gate)
{
    if (atomic_load(&s->draining)) {
        close(fd);
        if (gate)
            rt_gate_leave(gate);
        return;
    }
    http_conn *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->srv = s;
    c->ls = &s->ls[rt_loop_index(l)];
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (rt_io_open(&c->io, fd) != 0) {
        close(fd);
        if (gate)
            rt_gate_leave(gate);
        free(c);
        return;
    }
    c->gate = gate;
    c->io.on_event = conn_event;
    format_peer(c, peer);
    c->timer.fn = idle_expired;
    c->timer.data = c;
    rt_wg_add(&s->conns, 1);
    atomic_fetch_add_explicit(&s->open_h1, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->ls->nconns, 1, memory_order_relaxed);
    c->next = c->ls->conns;
    if (c->next)
        c->next->prev = c;
    c->ls->conns = c;
    /* The first request's head (over TLS, the handshake) must come within
     * read-header-timeout. */
    c->hs_deadline = rt_now() + (s->o.tls ? s->o.tls_handshake_timeout_ns : s->o.read_header_timeout_ns);
    rt_timer_start(&c->timer, c->hs_deadline);
}

static void on_accept(rt_loop *l, int fd, const struct sockaddr *peer, socklen_t pl, void *arg)
{
    http_server *s = arg;
    (void)pl;
    conn_start(s, l, fd, peer, s->gate);
}

void http__server_adopt(http_server *s, int fd)
{
    struct sockaddr sa = {.sa_family = AF_UNIX};
    conn_start(s, rt_loop_current(), fd, &sa, NULL);
}

/* ---- lifecycle --------------------------------------------------------------------------------- */

/* Every live server, for http_servers_stats (a scrape on any thread). */
#define MAX_SERVERS 8
static pthread_mutex_t registry_lk = PTHREAD_MUTEX_INITIALIZER;
static http_server *registry[MAX_SERVERS];

static void registry_add(http_server *s)
{
    pthread_mutex_lock(&registry_lk);
    for (int i = 0; i < MAX_SERVERS; i++)
        if (!registry[i]) {
            registry[i] = s;
            break;
        }
    pthread_mutex_unlock(&registry_lk);
}

static void registry_remove(http_server *s)
{
    pthread_mutex_lock(&registry_lk);
    for (int i = 0; i < MAX_SERVERS; i++)
        if (registry[i] == s)
            registry[i] = NULL;
    pthread_mutex_unlock(&registry_lk);
}

int http_servers_stats(http_server_stats *out, int max)
{
    int n = 0;
    pthread_mutex_lock(&registry_lk);
    for (int i = 0; i < MAX_SERVERS && n < max; i++) {
        http_server *s = registry[i];
        if (!s)
            continue;
        out[n++] = (http_server_stats){
            .name = s->o.name ? s->o.name : "http",
            .port = rt_listener_port(s->L),
            .open_http1 = atomic_load_explicit(&s->open_h1, memory_order_relaxed),
            .open_http2 = atomic_load_explicit(&s->open_h2, memory_order_relaxed),
            .draining = atomic_load(&s->draining),
        };
    }
    pthread_mutex_unlock(&registry_lk);
    return n;
}

int64_t http_loop_conns(int loop)
{
    int64_t n = 0;
    pthread_mutex_lock(&registry_lk);
    for (int i = 0; i < MAX_SERVERS; i++)
        if (registry[i] && loop >= 0 && loop < registry[i]->nloops)
            n += atomic_load_explicit(&registry[i]->ls[loop].nconns, memory_order_relaxed);
    pthread_mutex_unlock(&registry_lk);
    return n;
}

http_server *http_server_new(const http_server_opts *o, http_handler h, int *err)
{
    http_server *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->o = *o;
    s->h = h;
    s->nloops = rt_nloops();
    s->bufcap = (size_t)o->max_header_bytes + 8192;
    rt_ctx_init(&s->ctx, NULL);
    rt_wg_init(&s->conns);
    s->ls = calloc((size_t)s->nloops, sizeof *s->ls);
    for (int i = 0; i < s->nloops; i++) {
        rt_ctx_init(&s->ls[i].ctx, &s->ctx);
        s->ls[i].pool = calloc(POOL_MAX, sizeof(char *));
        s->ls[i].sets = calloc(SETS_MAX, sizeof(http__bufset));
    }
    if (!s->o.h2_max_concurrent_streams)
        s->o.h2_max_concurrent_streams = 128;
    if (!s->o.max_streams)
        s->o.max_streams = 2048;
    if (!s->o.conn_buffer_bytes)
        s->o.conn_buffer_bytes = 8 << 20;
    if (!s->o.buffer_bytes)
        s->o.buffer_bytes = 64 << 20;
    if (!s->o.tls_handshake_timeout_ns || s->o.tls_handshake_timeout_ns > s->o.read_header_timeout_ns)
        s->o.tls_handshake_timeout_ns = s->o.read_header_timeout_ns;
    if (!s->o.tls_max_handshakes)
        s->o.tls_max_handshakes = 128;
    if (o->conn_gate) {
        s->gate = o->conn_gate;
        rt_gate_ref(s->gate);
    } else if (o->max_conns > 0) {
        s->gate = rt_gate_new(o->max_conns);
    }
    s->L = rt_listen_ex(o->addr, on_accept, s, s->gate, o->reuse_port, err);
    if (!s->L) {
        http_server_free(s);
        return NULL;
    }
    registry_add(s);
    return s;
}

int http_server_port(const http_server *s) { return rt_listener_port(s->L); }
bool http_server_draining(const http_server *s) { return atomic_load(&s->draining); }

/* Bytes the kernel holds for c that nobody has read yet. */
static bool bytes_waiting(http_conn *c)
{
    int n = 0;
    return c->io.fd >= 0 && ioctl(c->io.fd, FIONREAD, &n) == 0 && n > 0;
}

static void close_idle(void *p)
{
    http_server *s = p;
    http__loop *ls = &s->ls[rt_loop_index(rt_loop_current())];
    http_conn *c = ls->conns;
    while (c) {
        http_conn *next = c->next;
        if (c->h2) {
            http__h2_drain(c); /* GOAWAY; in-flight streams finish */
        } else if (!c->active && !c->hs_queued && bytes_waiting(c)) {
            /* A request arrived on this idle keep-alive connection as
             * the drain began (its readiness not dispatched yet): serve
             * it, with Connection: close.  Closing with it unread would
             * make the kernel answer RST, and a request the client had
             * every right to send would fail (make test-faults:
             * SIGTERM under load, ~1 run in 10). */
            c->active = true;
            rt_timer_stop(&c->timer);
            rt_go(conn_serve, c);
        } else if (!c->active) {
            conn_close(c);
        }
        c = next;
    }
}

static void close_all(void *p)
{
    http_server *s = p;
    http__loop *ls = &s->ls[rt_loop_index(rt_loop_current())];
    for (http_conn *c = ls->conns; c; c = c->next)
        if (c->req_ctx)
            rt_ctx_cancel(c->req_ctx);
    /* conn_close unlinks (HTTP/2 ones too: they cancel their streams). */
    while (ls->conns)
        conn_close(ls->conns);
}

/* Runs fn(s) on every loop (as a coroutine) and waits until all ran:
 * the server must outlive every such call. */
static void on_every_loop(http_server *s, rt_fn fn)
{
    rt_coro *cos[256];
    int n = s->nloops < 256 ? s->nloops : 256;
    for (int i = 0; i < n; i++)
        cos[i] = rt_spawn_joinable(rt_loop_at(i), fn, s);
    for (int i = 0; i < n; i++)
        rt_join(cos[i], NULL);
}

int http_server_serve(http_server *s)
{
    rt_park(rt_shutdown_ctx(), BZ_NO_DEADLINE, NULL);
    atomic_store(&s->draining, true);
    rt_listener_close(s->L);
    s->L = NULL;
    on_every_loop(s, close_idle);
    rt_ctx grace;
    rt_ctx_init_timeout(&grace, NULL, s->o.shutdown_grace_ns);
    int r = rt_wg_wait(&s->conns, &grace);
    rt_ctx_release(&grace);
    if (r != 0) {
        bz_log_warn("shutdown grace ran out; cancelling in-flight requests");
        atomic_store(&s->cancelled, true);
        rt_ctx_cancel(&s->ctx);
        on_every_loop(s, close_all);
        rt_ctx last;
        rt_ctx_init_timeout(&last, NULL, BZ_NS_PER_S);
        rt_wg_wait(&s->conns, &last);
        rt_ctx_release(&last);
        return -ETIMEDOUT;
    }
    return 0;
}

void http_server_free(http_server *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->conns.lk);
    bool busy = s->conns.count > 0;
    pthread_mutex_unlock(&s->conns.lk);
    if (busy)
        return; /* connections still unwinding: the process is exiting; leave it */
    registry_remove(s);
    if (s->L)
        rt_listener_close(s->L);
    for (int i = 0; i < s->nloops; i++) {
        for (int k = 0; k < s->ls[i].npool; k++)
            free(s->ls[i].pool[k]);
        free(s->ls[i].pool);
        for (int k = 0; k < s->ls[i].nsets; k++) {
            bz_arena_free(&s->ls[i].sets[k].arena);
            bz_buf_free(&s->ls[i].sets[k].out);
            bz_buf_free(&s->ls[i].sets[k].bbuf);
            free(s->ls[i].sets[k].hdrs);
        }
        free(s->ls[i].sets);
        rt_ctx_release(&s->ls[i].ctx);
    }
    free(s->ls);
    rt_gate_unref(s->gate);
    rt_ctx_release(&s->ctx);
    /* s->conns may still be referenced by connections abandoned at exit */
    free(s);
}

void http_set_write_deadline(http_req *r, int64_t deadline_ns)
{
    if (r->h2s)
        http__h2_set_write_deadline(r, deadline_ns);
    else
        r->conn->write_deadline = deadline_ns;
}

int http_body_reserve(http_req *r, int64_t n) { return r->h2s ? http__h2_body_reserve(r, n) : 0; }

void http_body_release(http_req *r)
{
    if (r->h2s)
        http__h2_body_release(r);
}

void http_set_read_deadline(http_req *r, int64_t deadline_ns)
{
    if (r->h2s)
        http__h2_set_read_deadline(r, deadline_ns);
}

int64_t http_read_timeout(const http_req *r)
{
    return r->conn ? r->conn->srv->o.read_timeout_ns : 15 * BZ_NS_PER_S; /* a request without a server (tests) */
}

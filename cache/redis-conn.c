/* cache/redis-conn.c — see redis-conn.h. */
#include "cache/redis-conn.h"

#include <bazaar/tls.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Replies are read this much at a time (hiredis's own size). */
#define READ_CHUNK (16 * 1024)

int rconn_open(const char *host, int port, rt_tls_client *tls, rt_ctx *ctx, int64_t dl, rconn **out,
               char *why, size_t whylen)
{
    int fd = rt_connect_tcp(host, port, ctx, dl);
    if (fd < 0) {
        snprintf(why, whylen, "%s", fd == -ETIMEDOUT ? "connect timed out" : strerror(-fd));
        return fd;
    }
    rconn *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->rd = redisReaderCreate();
    c->rbuf = malloc(READ_CHUNK);
    if (!c->rd || !c->rbuf)
        abort();
    int r = rt_io_open(&c->io, fd);
    if (r) {
        close(fd);
        c->io.fd = -1;
        rconn_free(c);
        snprintf(why, whylen, "%s", strerror(-r));
        return r;
    }
    if (tls && (r = rt_tls_connect(&c->io, tls, host, ctx, dl)) != 0) {
        /* read the reason before anything else of this thread fails */
        if (r == -ETIMEDOUT || r == -ECANCELED)
            snprintf(why, whylen, "TLS handshake %s", r == -ETIMEDOUT ? "timed out" : "cancelled");
        else
            snprintf(why, whylen, "TLS: %s", rt_tls_last_error());
        rconn_free(c);
        return r;
    }
    *out = c;
    return 0;
}

void rconn_free(rconn *c)
{
    /* it may be freed off its loop (close, a pool on another loop):
     * leave the epoll set explicitly, then close (and free the session) */
    if (c->io.loop)
        rt_io_detach(&c->io);
    rt_io_close(&c->io);
    redisReaderFree(c->rd);
    bz_buf_free(&c->out);
    free(c->rbuf);
    free(c);
}

void rconn_append(rconn *c, int argc, const char **argv, const size_t *lens)
{
    char *cmd;
    int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (n < 0)
        abort(); /* only on allocation failure */
    bz_buf_append(&c->out, cmd, (size_t)n);
    redisFreeCommand(cmd);
}

int rconn_flush(rconn *c, rt_ctx *ctx, int64_t dl)
{
    /* Another coroutine of this loop may append while we park, moving the
     * buffer: no pointer into it is held across a wait (and a TLS write
     * retried from a moved buffer is allowed, see rt/tls.h). */
    while (c->out_off < c->out.len) {
        ssize_t w = rt_io_try_write(&c->io, c->out.data + c->out_off, c->out.len - c->out_off);
        if (w > 0) {
            c->out_off += (size_t)w;
            continue;
        }
        if (w != -EAGAIN)
            return w ? (int)w : -EPIPE;
        /* Over TLS a write could want a read (a renegotiation, which
         * rt/tls refuses): the wait is bounded by dl all the same. */
        c->io.writable = false;
        int r = rt_wait_writable(&c->io, ctx, dl);
        if (r)
            return r;
    }
    bz_buf_clear(&c->out);
    c->out_off = 0;
    return 0;
}

int rconn_read_reply(rconn *c, rt_ctx *ctx, int64_t dl, redisReply **out)
{
    for (;;) {
        void *rep = NULL;
        if (redisReaderGetReply(c->rd, &rep) != REDIS_OK)
            return -EPROTO;
        if (rep) {
            *out = rep;
            return 0;
        }
        /* After a short read the socket was empty: its readiness flag is
         * set again only by a new edge, so park first rather than pay a
         * read(2) that would only say EAGAIN.  (Over TLS, rt_read knows
         * what the session has buffered.) */
        if (!c->io.tls && !c->io.readable) {
            int w = rt_wait_readable(&c->io, ctx, dl);
            if (w)
                return w;
        }
        /* Only the one reader of this connection uses rbuf, and the bytes
         * are handed to the reader before it parks again. */
        ssize_t n = rt_read(&c->io, c->rbuf, READ_CHUNK, ctx, dl);
        if (n == 0)
            return -ECONNRESET;
        if (n < 0)
            return (int)n;
        if (redisReaderFeed(c->rd, c->rbuf, (size_t)n) != REDIS_OK)
            return -EPROTO;
    }
}

bool rconn_stale(rconn *c)
{
    if (c->io.hup)
        return true;
    struct pollfd p = {.fd = c->io.fd, .events = POLLIN | POLLRDHUP};
    int r = poll(&p, 1, 0);
    if (r == 0)
        return false;
    if (r < 0 || (p.revents & ~POLLIN) || !c->io.tls)
        return true;
    /* Over TLS a readable socket may hold only a protocol record (a TLS
     * 1.3 session ticket): that is no reason to drop the connection. */
    char b;
    return rt_io_try_read(&c->io, &b, 1) != -EAGAIN;
}

/* cache/redis-conn.c — see redis-conn.h. */
#include "cache/redis-conn.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Replies are read this much at a time (hiredis's own size). */
#define READ_CHUNK (16 * 1024)

int rconn_open(const char *host, int port, const cache_rtls *tls, rt_ctx *ctx, int64_t dl, rconn **out, char *why,
               size_t whylen)
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
    if (!c->rd)
        abort();
    int r = rt_io_open(&c->io, fd);
    if (r) {
        close(fd);
        c->io.fd = -1;
        rconn_free(c);
        snprintf(why, whylen, "%s", strerror(-r));
        return r;
    }
    if (tls && (r = cache_rtls_handshake(tls, c, host, ctx, dl, why, whylen)) != 0) {
        rconn_free(c);
        return r;
    }
    *out = c;
    return 0;
}

void rconn_free(rconn *c)
{
    if (c->ssl)
        cache_rtls_close(c);
    /* it may be freed off its loop (close, a pool on another loop) */
    if (c->io.loop)
        rt_io_detach(&c->io);
    if (c->io.fd >= 0)
        close(c->io.fd);
    redisReaderFree(c->rd);
    bz_buf_free(&c->out);
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
     * buffer: no pointer into it is held across a wait. */
    while (c->out_off < c->out.len) {
        const char *p = c->out.data + c->out_off;
        size_t n = c->out.len - c->out_off;
        ssize_t w;
        if (c->ssl) {
            w = cache_rtls_write_some(c, p, n);
        } else {
            do
                w = write(c->io.fd, p, n);
            while (w < 0 && errno == EINTR);
            if (w < 0)
                w = -errno;
        }
        if (w > 0) {
            c->out_off += (size_t)w;
            continue;
        }
        if (w != -EAGAIN)
            return w ? (int)w : -EPIPE;
        c->io.writable = false; /* the next edge sets it */
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
         * read(2) that would only say EAGAIN. */
        if (!c->ssl && !c->io.readable) {
            int w = rt_wait_readable(&c->io, ctx, dl);
            if (w)
                return w;
        }
        char buf[READ_CHUNK];
        ssize_t n = c->ssl ? cache_rtls_read(c, buf, sizeof buf, ctx, dl) : rt_read(&c->io, buf, sizeof buf, ctx, dl);
        if (n == 0)
            return -ECONNRESET;
        if (n < 0)
            return (int)n;
        if (redisReaderFeed(c->rd, buf, (size_t)n) != REDIS_OK)
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
    if (r < 0 || (p.revents & ~POLLIN) || !c->ssl)
        return true;
    return cache_rtls_stale(c);
}

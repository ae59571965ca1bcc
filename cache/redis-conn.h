/*
 * cache/redis-conn.h — one connection to a Redis node, its bytes moved by
 * the runtime (rt_io: a coroutine parks on the socket) and hiredis used
 * only for the protocol (redisFormatCommandArgv encodes, a redisReader
 * parses).  Owning the transport is what lets the same code speak TLS
 * (rediss://, through rt/tls), which Debian's hiredis 0.14 cannot.
 *
 * Not thread-safe: one coroutine at a time appends and flushes, one reads
 * (the pipeline's writer and reader may be two coroutines of one loop).
 */
#ifndef CACHE_REDIS_CONN_H
#define CACHE_REDIS_CONN_H

#include <bazaar/buf.h>
#include <bazaar/rt.h>

#include <hiredis/hiredis.h>
#include <stdbool.h>

typedef struct rt_tls_client rt_tls_client; /* rt/tls.h */

typedef struct rconn {
    rt_io io;
    redisReader *rd;
    bz_buf out;         /* encoded commands not yet written */
    size_t out_off;     /* how much of out is written */
    /* Replies are read into this, not into a buffer on the reading
     * coroutine's stack: 16 KiB there took the pipeline's short-lived
     * reader below the part of a pooled stack that stays committed, so
     * every burst's reader gave its pages back (a madvise) and the next
     * one faulted them in again (issue 18). */
    char *rbuf;
    struct rconn *next; /* the pool's idle list */
    bool broken;        /* a half-done exchange: never reuse */
} rconn;

/* Connects to host:port by dl (TCP, then the TLS handshake when tls is
 * given: the certificate must verify and name host).  0, or -errno with a
 * one-line reason in why ("TLS..." for a handshake that failed). */
int rconn_open(const char *host, int port, rt_tls_client *tls, rt_ctx *ctx, int64_t dl, rconn **out,
               char *why, size_t whylen);
void rconn_free(rconn *c);
/* Encodes one command into the output buffer (nothing is sent yet). */
void rconn_append(rconn *c, int argc, const char **argv, const size_t *lens);
/* Writes everything appended: 0, or -errno (-ETIMEDOUT, -ECANCELED...). */
int rconn_flush(rconn *c, rt_ctx *ctx, int64_t dl);
/* The next reply (free with freeReplyObject): 0, -EPROTO (bad bytes),
 * -ECONNRESET (closed), or the wait's error. */
int rconn_read_reply(rconn *c, rt_ctx *ctx, int64_t dl, redisReply **out);
/* An idle connection (no reply pending) that shows any event — the server
 * closed it, reset it, or sent something unasked — cannot be trusted with
 * a command.  (A TLS record that carries no data, e.g. a session ticket,
 * does not count.)  A zero-timeout poll(2); true also when it fails. */
bool rconn_stale(rconn *c);

#endif

/*
 * cache/redis-conn.h — one connection to a Redis node, its bytes moved by
 * the runtime (rt_io: a coroutine parks on the socket) and hiredis used
 * only for the protocol (redisFormatCommandArgv encodes, a redisReader
 * parses).  Owning the transport is what lets the same code speak TLS
 * (rediss://), which Debian's hiredis 0.14 cannot.
 *
 * Not thread-safe: one coroutine at a time appends and flushes, one reads
 * (the pipeline's writer and reader may be two coroutines of one loop).
 */
#ifndef CACHE_REDIS_CONN_H
#define CACHE_REDIS_CONN_H

#include "base/buf.h"
#include "rt/rt.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>

typedef struct cache_rtls cache_rtls;

typedef struct rconn {
    rt_io io;
    redisReader *rd;
    bz_buf out;           /* encoded commands not yet written */
    size_t out_off;       /* how much of out is written */
    void *ssl;            /* SSL *, or NULL for plain TCP */
    struct rconn *next;   /* the pool's idle list */
    bool broken;          /* a half-done exchange: never reuse */
} rconn;

/* Connects to host:port by dl (TCP, then the TLS handshake when tls is
 * given).  0, or -errno with a one-line reason in why. */
int rconn_open(const char *host, int port, const cache_rtls *tls, rt_ctx *ctx, int64_t dl, rconn **out, char *why,
               size_t whylen);
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

/* ---- TLS (cache/redis-tls.c) ---- */

/* A client TLS context: peers are verified against ca_file (or, when NULL,
 * the system's store, which SSL_CERT_FILE / SSL_CERT_DIR can point
 * elsewhere) and their names against the host dialled.  NULL with why
 * filled when the CA file cannot be loaded. */
cache_rtls *cache_rtls_new(const char *ca_file, char *why, size_t whylen);
void cache_rtls_free(cache_rtls *t);
/* The handshake on c's connected socket (c->ssl set on success). */
int cache_rtls_handshake(const cache_rtls *t, rconn *c, const char *host, rt_ctx *ctx, int64_t dl, char *why,
                         size_t whylen);
/* Reads through c->ssl, parking as needed: bytes read, 0 at a close, or
 * -errno. */
ssize_t cache_rtls_read(rconn *c, void *buf, size_t n, rt_ctx *ctx, int64_t dl);
/* One SSL_write: bytes written (> 0), -EAGAIN when the socket is full, or
 * -errno.  The buffer may move between calls (the pipeline appends). */
ssize_t cache_rtls_write_some(rconn *c, const void *buf, size_t n);
/* Whether a readable idle TLS connection holds application data or EOF
 * (true) or only a protocol record (false). */
bool cache_rtls_stale(rconn *c);
void cache_rtls_close(rconn *c);

#endif

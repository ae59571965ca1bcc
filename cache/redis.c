/* cache/redis.c — the Redis backend: hiredis's protocol reader/writer on
 * non-blocking sockets driven by the runtime (a command parks only its
 * coroutine), a small connection pool, commands pipelined where they go
 * together, Lua scripts (loaded once, called by SHA) for the
 * compare-and-act operations, and a subscriber connection owned by one
 * reader coroutine for pub/sub.
 *
 * When Redis cannot be reached, the backend marks itself down for a
 * backoff (100 ms doubling to 2 s): calls in that window fail at once with
 * BZ_ERR_UNAVAILABLE instead of each waiting for a connect; the first call
 * after it tries again, so service resumes by itself. */
#include "cache/cache-private.h"

#include "base/log.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define CALL_TIMEOUT (2 * BZ_NS_PER_S) /* when the caller's context has none */
#define CONNECT_TIMEOUT (500 * BZ_NS_PER_MS)

static const char *LUA_DELIF =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
static const char *LUA_EXTIF =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
static const char *LUA_INCR = "local v = redis.call('incrby', KEYS[1], ARGV[1]) "
                              "if tonumber(ARGV[2]) > 0 and redis.call('pttl', KEYS[1]) == -1 then "
                              "redis.call('pexpire', KEYS[1], ARGV[2]) end return v";

typedef struct rconn {
    redisContext *rc;
    rt_io io;
    struct rconn *next;
    bool broken;
} rconn;

/* A SUBSCRIBE/UNSUBSCRIBE for the reader to send.  Owned jointly by the
 * requester and the reader (both under sub_lk): whoever comes second
 * frees it — the reader when the requester stopped waiting (abandoned),
 * the requester otherwise. */
typedef struct subreq {
    char channel[128];
    bool sub;
    bool finished, abandoned;
    rt_sem done;
    int result;
    struct subreq *next;
} subreq;

struct rpipe;
#define MAX_PIPES 64

typedef struct rb {
    cache_be base;
    struct rpipe *pipes[MAX_PIPES]; /* per event loop; touched only by that loop */
    char host[256];
    int port, dbn;
    pthread_mutex_t lk;
    rconn *idle;
    int nopen, max;
    rt_waitq waiters;
    int64_t down_until, backoff;
    char sha[3][48];
    /* subscriber */
    pthread_mutex_t sub_lk;
    subreq *pending, *awaiting;
    rt_ctx *kick;
    bool reader, closing;
} rb;

/* ---- connections ---- */

static int unavailable(bz_error *err, const char *why)
{
    bz_err_set(err, BZ_ERR_UNAVAILABLE, "redis unavailable: %s", why);
    return -EAGAIN;
}

static int64_t deadline_of(rt_ctx *ctx)
{
    int64_t d = rt_ctx_deadline(ctx), def = bz_now_ns() + CALL_TIMEOUT;
    return d < def ? d : def;
}

static void conn_free(rconn *c)
{
    if (c->io.loop)
        rt_io_detach(&c->io);
    redisFree(c->rc);
    free(c);
}

/* An idle connection (no reply pending) that shows any event — the server
 * closed it (a restart), reset it, or sent something unasked — cannot be
 * trusted with a command: sending on it would fail the caller although a
 * fresh connection would succeed.  A zero-timeout poll(2); true also when
 * poll itself fails. */
static bool conn_stale(rconn *c)
{
    struct pollfd p = {.fd = c->rc->fd, .events = POLLIN | POLLRDHUP};
    return c->io.hup || poll(&p, 1, 0) != 0;
}

static int flush(rconn *c, rt_ctx *ctx, int64_t dl)
{
    int done = 0;
    while (!done) {
        if (redisBufferWrite(c->rc, &done) != REDIS_OK)
            return -EPIPE;
        if (!done) {
            int r = rt_io_await_writable(&c->io, ctx, dl);
            if (r)
                return r;
        }
    }
    return 0;
}

static int read_reply(rconn *c, rt_ctx *ctx, int64_t dl, redisReply **out)
{
    for (;;) {
        void *rep = NULL;
        if (redisGetReplyFromReader(c->rc, &rep) != REDIS_OK)
            return -EPROTO;
        if (rep) {
            *out = rep;
            return 0;
        }
        int r = rt_io_await_readable(&c->io, ctx, dl);
        if (r)
            return r;
        if (redisBufferRead(c->rc) != REDIS_OK)
            return -ECONNRESET;
    }
}

/* Redis looks unreachable: fail calls fast for a backoff.  Only when no
 * other connection is open — one failed connect while others work is not
 * an outage, and must not fail every request for 100 ms. */
static void mark_down(rb *b)
{
    pthread_mutex_lock(&b->lk);
    if (b->nopen > 1) { /* the failing one is still counted */
        pthread_mutex_unlock(&b->lk);
        return;
    }
    b->backoff = b->backoff ? (b->backoff * 2 > 2 * BZ_NS_PER_S ? 2 * BZ_NS_PER_S : b->backoff * 2)
                            : 100 * BZ_NS_PER_MS;
    b->down_until = bz_now_ns() + b->backoff;
    pthread_mutex_unlock(&b->lk);
}

static int dial(rb *b, rt_ctx *ctx, rconn **out, bz_error *err)
{
    rconn *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->rc = redisConnectNonBlock(b->host, b->port);
    if (!c->rc || c->rc->err) {
        char why[128];
        snprintf(why, sizeof why, "%s", c->rc ? c->rc->errstr : "cannot allocate");
        if (c->rc)
            redisFree(c->rc);
        free(c);
        mark_down(b);
        return unavailable(err, why);
    }
    int r = rt_io_open(&c->io, c->rc->fd);
    int64_t dl = bz_now_ns() + CONNECT_TIMEOUT;
    if (rt_ctx_deadline(ctx) < dl)
        dl = rt_ctx_deadline(ctx);
    if (r == 0)
        r = rt_io_await_writable(&c->io, ctx, dl);
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (r == 0 && (getsockopt(c->rc->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr))
        r = -(soerr ? soerr : errno);
    /* SELECT and the scripts, pipelined: one round trip */
    int ncmd = 0;
    if (r == 0) {
        char db[8];
        snprintf(db, sizeof db, "%d", b->dbn);
        const char *sel[] = {"SELECT", db};
        redisAppendCommandArgv(c->rc, 2, sel, NULL);
        const char *scripts[3] = {LUA_DELIF, LUA_EXTIF, LUA_INCR};
        for (int i = 0; i < 3; i++) {
            const char *a[] = {"SCRIPT", "LOAD", scripts[i]};
            redisAppendCommandArgv(c->rc, 3, a, NULL);
        }
        ncmd = 4;
        r = flush(c, ctx, dl);
    }
    for (int i = 0; r == 0 && i < ncmd; i++) {
        redisReply *rep;
        r = read_reply(c, ctx, dl, &rep);
        if (r == 0) {
            if (rep->type == REDIS_REPLY_ERROR)
                r = -EPROTO;
            else if (i > 0 && rep->type == REDIS_REPLY_STRING) {
                pthread_mutex_lock(&b->lk);
                snprintf(b->sha[i - 1], sizeof b->sha[i - 1], "%s", rep->str);
                pthread_mutex_unlock(&b->lk);
            }
            freeReplyObject(rep);
        }
    }
    if (r) {
        conn_free(c);
        if (r == -ECANCELED) /* the caller gave up: says nothing about Redis */
            return bz_err_set(err, BZ_ERR_CANCELLED, "redis: connect cancelled"), r;
        mark_down(b);
        return unavailable(err, r == -ETIMEDOUT ? "connect timed out" : strerror(-r));
    }
    pthread_mutex_lock(&b->lk);
    b->backoff = 0;
    b->down_until = 0;
    pthread_mutex_unlock(&b->lk);
    *out = c;
    return 0;
}

static int acquire(rb *b, rt_ctx *ctx, rconn **out, bz_error *err)
{
    pthread_mutex_lock(&b->lk);
    for (;;) {
        if (b->idle) {
            rconn *c = b->idle;
            b->idle = c->next;
            pthread_mutex_unlock(&b->lk);
            if (conn_stale(c)) { /* e.g. Redis restarted since: open a fresh one */
                conn_free(c);
                pthread_mutex_lock(&b->lk);
                b->nopen--;
                continue;
            }
            if (c->io.loop != rt_loop_current()) { /* move it to this loop */
                if (c->io.loop)
                    rt_io_detach(&c->io);
                rt_io_open(&c->io, c->rc->fd);
            }
            *out = c;
            return 0;
        }
        if (b->down_until && bz_now_ns() < b->down_until) {
            pthread_mutex_unlock(&b->lk);
            return unavailable(err, "recently failed to connect; retrying after a backoff");
        }
        if (b->nopen < b->max) {
            b->nopen++;
            pthread_mutex_unlock(&b->lk);
            int r = dial(b, ctx, out, err);
            if (r) {
                pthread_mutex_lock(&b->lk);
                b->nopen--;
                rt_waitq_wake_all(&b->waiters, 0); /* they will see the backoff */
                pthread_mutex_unlock(&b->lk);
            }
            return r;
        }
        int r = rt_waitq_wait(&b->waiters, &b->lk, ctx, deadline_of(ctx), NULL);
        if (r) {
            pthread_mutex_unlock(&b->lk);
            return bz_err_set(err, r == -ECANCELED ? BZ_ERR_CANCELLED : BZ_ERR_TIMEOUT,
                              "redis: gave up waiting for a connection"),
                   r;
        }
    }
}

static void release(rb *b, rconn *c)
{
    /* With several loops, an idle connection belongs to no epoll set, so
     * whichever loop takes it next registers it (no two loops see it). */
    if (!c->broken && rt_nloops() > 1 && c->io.loop)
        rt_io_detach(&c->io);
    pthread_mutex_lock(&b->lk);
    if (c->broken || b->closing) {
        b->nopen--;
        rt_waitq_wake_one(&b->waiters, 0, NULL);
        pthread_mutex_unlock(&b->lk);
        conn_free(c);
        return;
    }
    c->next = b->idle;
    b->idle = c;
    rt_waitq_wake_one(&b->waiters, 0, NULL);
    pthread_mutex_unlock(&b->lk);
}

/* Runs n commands pipelined; replies[i] must be freed by the caller. */
static int run(rb *b, rt_ctx *ctx, int n, int *argc, const char **argv[], const size_t *lens[],
               redisReply **replies, bz_error *err)
{
    for (int i = 0; i < n; i++)
        replies[i] = NULL;
    rconn *c;
    int r = acquire(b, ctx, &c, err);
    if (r)
        return r;
    int64_t dl = deadline_of(ctx);
    for (int i = 0; i < n; i++)
        redisAppendCommandArgv(c->rc, argc[i], argv[i], lens ? lens[i] : NULL);
    r = flush(c, ctx, dl);
    for (int i = 0; r == 0 && i < n; i++)
        r = read_reply(c, ctx, dl, &replies[i]);
    if (r) {
        /* a half-done exchange leaves the stream unusable */
        c->broken = true;
        for (int i = 0; i < n; i++)
            if (replies[i]) {
                freeReplyObject(replies[i]);
                replies[i] = NULL;
            }
        release(b, c);
        if (r == -ECANCELED)
            return bz_err_set(err, BZ_ERR_CANCELLED, "redis: call cancelled"), r;
        if (r == -ETIMEDOUT)
            return bz_err_set(err, BZ_ERR_TIMEOUT, "redis: call timed out"), r;
        mark_down(b);
        return unavailable(err, "connection lost");
    }
    release(b, c);
    return 0;
}

static int piped(rb *b, rt_ctx *ctx, int argc, const char **argv, const size_t *lens, redisReply **rep,
                 bz_error *err);

/* One command: pipelined on this loop's connection when there is one,
 * else through the pool. */
static int one(rb *b, rt_ctx *ctx, int argc, const char **argv, const size_t *lens, redisReply **rep, bz_error *err)
{
    int pr = piped(b, ctx, argc, argv, lens, rep, err);
    if (pr != 1)
        return pr;
    int r = run(b, ctx, 1, &argc, &argv, lens ? &lens : NULL, rep, err);
    if (r)
        return r;
    if ((*rep)->type == REDIS_REPLY_ERROR) {
        bz_err_set(err, BZ_ERR_INVALID, "redis: %s", (*rep)->str);
        freeReplyObject(*rep);
        *rep = NULL;
        return -EINVAL;
    }
    return 0;
}

/* Runs one command whose reply is dropped, or read as an integer into
 * *out when out is given. */
static int cmd_int(rb *b, rt_ctx *ctx, int argc, const char **argv, const size_t *lens, int64_t *out, bz_error *err)
{
    redisReply *rep;
    int r = one(b, ctx, argc, argv, lens, &rep, err);
    if (r)
        return r;
    if (out)
        *out = rep->integer;
    freeReplyObject(rep);
    return 0;
}

/* EVALSHA, falling back to EVAL when the server lost its script cache. */
static int script(rb *b, rt_ctx *ctx, int idx, const char *src, const char *key, int nargs, const char **args,
                  const size_t *alens, redisReply **rep, bz_error *err)
{
    const char *argv[8];
    size_t lens[8];
    char sha[48];
    pthread_mutex_lock(&b->lk);
    memcpy(sha, b->sha[idx], sizeof sha);
    pthread_mutex_unlock(&b->lk);
    argv[0] = sha[0] ? "EVALSHA" : "EVAL";
    argv[1] = sha[0] ? sha : src;
    argv[2] = "1";
    argv[3] = key;
    for (int i = 0; i < 4; i++)
        lens[i] = strlen(argv[i]);
    for (int i = 0; i < nargs; i++) {
        argv[4 + i] = args[i];
        lens[4 + i] = alens[i];
    }
    int r = one(b, ctx, 4 + nargs, argv, lens, rep, err);
    if (r == -EINVAL && sha[0] && err && strstr(err->msg, "NOSCRIPT")) {
        argv[0] = "EVAL";
        argv[1] = src;
        lens[0] = 4;
        lens[1] = strlen(src);
        r = one(b, ctx, 4 + nargs, argv, lens, rep, err);
    }
    return r;
}

/* ---- operations ---- */

#define B ((rb *)be)

static int r_ping(cache_be *be, rt_ctx *ctx, bz_error *err)
{
    const char *a[] = {"PING"};
    return cmd_int(B, ctx, 1, a, NULL, NULL, err);
}

/* ---- auto-pipelining ----
 *
 * Every event loop has one connection on which the single commands of all
 * its coroutines (GET, SET, scripts...; not MULTI or pub/sub) are
 * pipelined: a caller appends its command and parks; a
 * writer coroutine, started by the first caller of a burst, yields once
 * (so the others ready in this loop iteration append too) and writes them
 * all in one write(2); a reader coroutine reads the replies in order and
 * wakes each caller.  Redis and the server then make a few system calls
 * per burst instead of two per command — it matters most when they share
 * a core.  Everything here runs on the pipe's own loop: no locks.  A
 * caller whose context ends leaves its slot marked abandoned; the reader
 * frees it when the reply comes.  A failed connection fails every waiter
 * and is replaced by the next call. */

typedef struct pwait {
    struct pwait *next;
    redisReply *rep;
    int result;
    bool done, abandoned;
    rt_sem sem;
} pwait;

typedef struct rpipe {
    rb *b;
    int idx;
    rconn *c;
    pwait *head, *tail;
    bool writing, reading, dead;
    int64_t idle_since;  /* when the last reply was read (bz_now_ns) */
} rpipe;

/* An idle pipe's connection is checked before a new burst goes on it: one
 * the server closed meanwhile (Redis restarted) is replaced instead of
 * failing the burst.  The hang-up flag (kept by the loop's epoll) is free;
 * the poll(2) is made only after the pipe sat idle a moment, so a busy
 * pipe pays nothing. */
#define PIPE_CHECK_IDLE_NS (1 * BZ_NS_PER_MS)

static void pwait_free(pwait *w)
{
    if (w->rep)
        freeReplyObject(w->rep);
    rt_sem_destroy(&w->sem);
    free(w);
}

static void pipe_maybe_free(rpipe *p)
{
    if (p->dead && !p->reading && !p->writing) {
        conn_free(p->c);
        free(p);
    }
}

static void pipe_fail_all(rpipe *p, int r)
{
    p->dead = true;
    if (p->b->pipes[p->idx] == p)
        p->b->pipes[p->idx] = NULL;
    pwait *w = p->head;
    p->head = p->tail = NULL;
    while (w) {
        pwait *n = w->next;
        w->result = r;
        w->done = true;
        if (w->abandoned)
            pwait_free(w);
        else
            rt_sem_release(&w->sem);
        w = n;
    }
}

static void pipe_reader(void *arg)
{
    rpipe *p = arg;
    while (p->head && !p->dead) {
        redisReply *rep = NULL;
        int r = read_reply(p->c, NULL, bz_now_ns() + CALL_TIMEOUT, &rep);
        if (r) {
            pipe_fail_all(p, r);
            break;
        }
        pwait *w = p->head;
        p->head = w->next;
        if (!p->head)
            p->tail = NULL;
        w->rep = rep;
        w->done = true;
        if (w->abandoned)
            pwait_free(w);
        else
            rt_sem_release(&w->sem);
    }
    p->reading = false;
    p->idle_since = bz_now_ns();
    pipe_maybe_free(p);
}

static void pipe_writer(void *arg)
{
    rpipe *p = arg;
    rt_yield(); /* let this iteration's other callers append */
    int r = p->dead ? -EPIPE : flush(p->c, NULL, bz_now_ns() + CALL_TIMEOUT);
    p->writing = false;
    if (r && !p->dead)
        shutdown(p->c->rc->fd, SHUT_RDWR); /* the reader fails the waiters */
    pipe_maybe_free(p);
}

/* 1: no pipe here (use the pool); else like one(). */
static int piped(rb *b, rt_ctx *ctx, int argc, const char **argv, const size_t *lens, redisReply **rep,
                 bz_error *err)
{
    rt_loop *l = rt_loop_current();
    int i = l ? rt_loop_index(l) : -1;
    if (i < 0 || i >= MAX_PIPES)
        return 1;
    rpipe *p = b->pipes[i];
    if (p && !p->head && !p->reading && !p->writing &&
        (p->c->io.hup || (bz_now_ns() - p->idle_since > PIPE_CHECK_IDLE_NS && conn_stale(p->c)))) {
        pipe_fail_all(p, -ECONNRESET); /* no waiters: only detaches it */
        pipe_maybe_free(p);
        p = NULL;
    }
    if (!p) {
        pthread_mutex_lock(&b->lk);
        bool down = b->down_until && bz_now_ns() < b->down_until;
        pthread_mutex_unlock(&b->lk);
        if (down)
            return unavailable(err, "recently failed to connect; retrying after a backoff");
        rconn *c;
        int r = dial(b, ctx, &c, err);
        if (r)
            return r;
        if (b->pipes[i]) { /* another caller on this loop dialled meanwhile */
            conn_free(c);
        } else {
            p = calloc(1, sizeof *p);
            if (!p)
                abort();
            p->b = b;
            p->idx = i;
            p->c = c;
            p->idle_since = bz_now_ns();
            b->pipes[i] = p;
        }
        p = b->pipes[i];
    }
    pwait *w = calloc(1, sizeof *w);
    if (!w)
        abort();
    rt_sem_init(&w->sem, 0);
    redisAppendCommandArgv(p->c->rc, argc, argv, lens);
    if (p->tail)
        p->tail->next = w;
    else
        p->head = w;
    p->tail = w;
    if (!p->writing) {
        p->writing = true;
        rt_go(pipe_writer, p);
    }
    if (!p->reading) {
        p->reading = true;
        rt_go(pipe_reader, p);
    }
    int r = rt_sem_acquire(&w->sem, ctx, deadline_of(ctx));
    if (r && !w->done) {
        w->abandoned = true;
        return bz_err_set(err, r == -ECANCELED ? BZ_ERR_CANCELLED : BZ_ERR_TIMEOUT, "redis: call %s",
                          r == -ECANCELED ? "cancelled" : "timed out"),
               r;
    }
    if (w->result) {
        r = w->result;
        pwait_free(w);
        if (r == -ECANCELED || r == -ETIMEDOUT)
            return bz_err_set(err, BZ_ERR_TIMEOUT, "redis: no reply in time"), -ETIMEDOUT;
        return unavailable(err, "connection lost");
    }
    *rep = w->rep;
    w->rep = NULL;
    pwait_free(w);
    if ((*rep)->type == REDIS_REPLY_ERROR) {
        bz_err_set(err, BZ_ERR_INVALID, "redis: %s", (*rep)->str);
        freeReplyObject(*rep);
        *rep = NULL;
        return -EINVAL;
    }
    return 0;
}

static int r_get(cache_be *be, rt_ctx *ctx, const char *key, bz_buf *out, bz_error *err)
{
    const char *a[] = {"GET", key};
    redisReply *rep;
    int r = one(B, ctx, 2, a, NULL, &rep, err);
    if (r)
        return r;
    if (rep->type == REDIS_REPLY_NIL) {
        freeReplyObject(rep);
        return CACHE_MISS;
    }
    bz_buf_clear(out);
    bz_buf_append(out, rep->str, rep->len);
    freeReplyObject(rep);
    return 0;
}

static int r_set(cache_be *be, rt_ctx *ctx, const char *key, const void *v, size_t n, int64_t ttl, bool nx,
                 bool *stored, bz_error *err)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)((ttl + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS));
    const char *a[6] = {"SET", key, v, "PX", ms, "NX"};
    size_t l[6] = {3, strlen(key), n, 2, strlen(ms), 2};
    int argc = ttl > 0 ? (nx ? 6 : 5) : (nx ? 3 : 3);
    if (ttl <= 0 && nx) { /* SET key v NX */
        a[3] = "NX";
        l[3] = 2;
        argc = 4;
    }
    redisReply *rep;
    int r = one(B, ctx, argc, a, l, &rep, err);
    if (r)
        return r;
    if (stored)
        *stored = rep->type != REDIS_REPLY_NIL;
    freeReplyObject(rep);
    return 0;
}

static int r_del(cache_be *be, rt_ctx *ctx, const char *key, bz_error *err)
{
    const char *a[] = {"DEL", key};
    return cmd_int(B, ctx, 2, a, NULL, NULL, err);
}

static int r_del_if(cache_be *be, rt_ctx *ctx, const char *key, const void *t, size_t n, bool *done, bz_error *err)
{
    const char *args[] = {t};
    size_t lens[] = {n};
    redisReply *rep;
    int r = script(B, ctx, 0, LUA_DELIF, key, 1, args, lens, &rep, err);
    if (r)
        return r;
    *done = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    return 0;
}

static int r_extend_if(cache_be *be, rt_ctx *ctx, const char *key, const void *t, size_t n, int64_t ttl, bool *done,
                       bz_error *err)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)(ttl / BZ_NS_PER_MS));
    const char *args[] = {t, ms};
    size_t lens[] = {n, strlen(ms)};
    redisReply *rep;
    int r = script(B, ctx, 1, LUA_EXTIF, key, 2, args, lens, &rep, err);
    if (r)
        return r;
    *done = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    return 0;
}

static int r_incr(cache_be *be, rt_ctx *ctx, const char *key, int64_t d, int64_t ttl, int64_t *v, bz_error *err)
{
    char ds[24], ms[24];
    snprintf(ds, sizeof ds, "%lld", (long long)d);
    snprintf(ms, sizeof ms, "%lld", (long long)(ttl > 0 ? (ttl + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS : 0));
    const char *args[] = {ds, ms};
    size_t lens[] = {strlen(ds), strlen(ms)};
    redisReply *rep;
    int r = script(B, ctx, 2, LUA_INCR, key, 2, args, lens, &rep, err);
    if (r)
        return r;
    *v = rep->integer;
    freeReplyObject(rep);
    return 0;
}

static int r_ttl(cache_be *be, rt_ctx *ctx, const char *key, int64_t *ttl, bz_error *err)
{
    const char *a[] = {"PTTL", key};
    int64_t v;
    int r = cmd_int(B, ctx, 2, a, NULL, &v, err);
    if (r)
        return r;
    if (v == -2)
        return CACHE_MISS;
    *ttl = v < 0 ? -1 : v * BZ_NS_PER_MS;
    return 0;
}

static int r_zincr(cache_be *be, rt_ctx *ctx, const char *key, const char *m, int64_t d, int64_t *score,
                   bz_error *err)
{
    char ds[24];
    snprintf(ds, sizeof ds, "%lld", (long long)d);
    const char *a[] = {"ZINCRBY", key, ds, m};
    redisReply *rep;
    int r = one(B, ctx, 4, a, NULL, &rep, err);
    if (r)
        return r;
    *score = rep->str ? (int64_t)strtod(rep->str, NULL) : 0;
    freeReplyObject(rep);
    return 0;
}

static int r_ztop(cache_be *be, rt_ctx *ctx, const char *key, int n, cache_zentry *out, int *count, bz_error *err)
{
    char stop[16];
    snprintf(stop, sizeof stop, "%d", n - 1);
    const char *a[] = {"ZREVRANGE", key, "0", stop, "WITHSCORES"};
    redisReply *rep;
    *count = 0;
    if (n <= 0)
        return 0;
    int r = one(B, ctx, 5, a, NULL, &rep, err);
    if (r)
        return r;
    for (size_t i = 0; i + 1 < rep->elements && *count < n; i += 2) {
        cache_zentry *e = &out[(*count)++];
        snprintf(e->member, sizeof e->member, "%s", rep->element[i]->str);
        e->score = (int64_t)strtod(rep->element[i + 1]->str, NULL);
    }
    freeReplyObject(rep);
    return 0;
}

/* ZSCORE or ZREVRANK of member: CACHE_MISS when it is not in the set. */
static int zmember(cache_be *be, rt_ctx *ctx, const char *cmd, const char *key, const char *m, int64_t *out,
                   bz_error *err)
{
    const char *a[] = {cmd, key, m};
    redisReply *rep;
    int r = one(B, ctx, 3, a, NULL, &rep, err);
    if (r)
        return r;
    r = rep->type == REDIS_REPLY_NIL ? CACHE_MISS : 0;
    if (!r)
        *out = rep->type == REDIS_REPLY_INTEGER ? rep->integer : (int64_t)strtod(rep->str, NULL);
    freeReplyObject(rep);
    return r;
}

static int r_zscore(cache_be *be, rt_ctx *ctx, const char *key, const char *m, int64_t *score, bz_error *err)
{
    return zmember(be, ctx, "ZSCORE", key, m, score, err);
}

static int r_zrank(cache_be *be, rt_ctx *ctx, const char *key, const char *m, int64_t *rank, bz_error *err)
{
    return zmember(be, ctx, "ZREVRANK", key, m, rank, err);
}

static int r_zcard(cache_be *be, rt_ctx *ctx, const char *key, int64_t *n, bz_error *err)
{
    const char *a[] = {"ZCARD", key};
    return cmd_int(B, ctx, 2, a, NULL, n, err);
}

/* SADD, the TTL re-armed and SCARD in one atomic round trip (EVAL: the
 * script is short, so it is not worth a slot in the EVALSHA cache). */
static const char *LUA_SADD = "redis.call('sadd', KEYS[1], ARGV[1]) "
                              "if tonumber(ARGV[2]) > 0 then redis.call('pexpire', KEYS[1], ARGV[2]) end "
                              "return redis.call('scard', KEYS[1])";

static int r_sadd(cache_be *be, rt_ctx *ctx, const char *key, const char *m, int64_t ttl, int64_t *card,
                  bz_error *err)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)(ttl > 0 ? (ttl + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS : 0));
    const char *a[] = {"EVAL", LUA_SADD, "1", key, m, ms};
    int64_t v = 0;
    int r = cmd_int(B, ctx, 6, a, NULL, &v, err);
    if (r == 0 && card)
        *card = v;
    return r;
}

static int r_srem(cache_be *be, rt_ctx *ctx, const char *key, const char *m, bz_error *err)
{
    const char *a[] = {"SREM", key, m};
    return cmd_int(B, ctx, 3, a, NULL, NULL, err);
}

static int r_smembers(cache_be *be, rt_ctx *ctx, const char *key, int max, bz_buf *out, int *n, bz_error *err)
{
    const char *a[] = {"SMEMBERS", key};
    redisReply *rep;
    *n = 0;
    bz_buf_clear(out);
    int r = one(B, ctx, 2, a, NULL, &rep, err);
    if (r)
        return r;
    for (size_t i = 0; i < rep->elements && *n < max; i++)
        if (rep->element[i]->type == REDIS_REPLY_STRING) {
            bz_buf_append(out, rep->element[i]->str, rep->element[i]->len);
            bz_buf_append(out, "", 1);
            (*n)++;
        }
    freeReplyObject(rep);
    return 0;
}

/* ---- compare-and-set and leases (EVAL: short scripts, and a miss or a
 * stream's open/renew is rare next to a GET) ---- */

static const char *LUA_SET_IF =
    "local e = ARGV[1] "
    "if e == '' then if redis.call('exists', KEYS[1]) == 1 then return 0 end "
    "elseif redis.call('getrange', KEYS[1], 0, #e - 1) ~= e then return 0 end "
    "if tonumber(ARGV[3]) > 0 then redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) "
    "else redis.call('set', KEYS[1], ARGV[2]) end return 1";

static int r_set_if(cache_be *be, rt_ctx *ctx, const char *key, const void *expect, size_t elen, const void *v,
                    size_t n, int64_t ttl, bool *stored, bz_error *err)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)(ttl > 0 ? (ttl + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS : 0));
    const char *a[] = {"EVAL", LUA_SET_IF, "1", key, elen ? expect : "", v, ms};
    size_t l[] = {4, strlen(LUA_SET_IF), 1, strlen(key), elen, n, strlen(ms)};
    int64_t done = 0;
    int r = cmd_int(B, ctx, 7, a, l, &done, err);
    *stored = r == 0 && done == 1;
    return r;
}

/* Lease expiries are Redis's own clock (TIME), so instances whose clocks
 * disagree still agree on which leases are live. */
#define LUA_NOW                                                                                                 \
    "local t = redis.call('time') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "

static const char *LUA_LEASE_TAKE =
    LUA_NOW "redis.call('zremrangebyscore', KEYS[1], '-inf', now) "
    "local cap = tonumber(ARGV[2]) "
    "if cap > 0 and not redis.call('zscore', KEYS[1], ARGV[1]) and redis.call('zcard', KEYS[1]) >= cap then "
    "return 0 end "
    "redis.call('zadd', KEYS[1], now + tonumber(ARGV[3]), ARGV[1]) "
    "redis.call('pexpire', KEYS[1], ARGV[3]) return 1";
static const char *LUA_LEASE_COUNT = LUA_NOW "return redis.call('zcount', KEYS[1], '(' .. now, '+inf')";

static int r_lease_take(cache_be *be, rt_ctx *ctx, const char *key, const char *m, int cap, int64_t ttl,
                        bool *taken, bz_error *err)
{
    char cs[16], ms[24];
    snprintf(cs, sizeof cs, "%d", cap);
    snprintf(ms, sizeof ms, "%lld", (long long)((ttl + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS));
    const char *a[] = {"EVAL", LUA_LEASE_TAKE, "1", key, m, cs, ms};
    int64_t done = 0;
    int r = cmd_int(B, ctx, 7, a, NULL, &done, err);
    *taken = r == 0 && done == 1;
    return r;
}

static int r_lease_drop(cache_be *be, rt_ctx *ctx, const char *key, const char *m, bz_error *err)
{
    const char *a[] = {"ZREM", key, m};
    return cmd_int(B, ctx, 3, a, NULL, NULL, err);
}

static int r_lease_count(cache_be *be, rt_ctx *ctx, const char *key, int64_t *n, bz_error *err)
{
    const char *a[] = {"EVAL", LUA_LEASE_COUNT, "1", key};
    return cmd_int(B, ctx, 4, a, NULL, n, err);
}

/* ---- epoch-guarded sorted sets (cache.h): KEYS[1] the set, KEYS[2] its
 * staging set for the epoch; the marker's score comes as a string (Lua
 * would print a 16-digit number in %.14g and lose it) ---- */

static const char *LUA_ZINCR_EPOCH =
    "local m = redis.call('zscore', KEYS[1], '~epoch') local e = tonumber(ARGV[1]) "
    "if m then local be = tonumber(m) - tonumber(ARGV[5]) "
    "if be == e then redis.call('zincrby', KEYS[1], ARGV[3], ARGV[2]) return 1 end "
    "if be > e then return 0 end redis.call('del', KEYS[1]) end "
    "redis.call('zincrby', KEYS[2], ARGV[3], ARGV[2]) redis.call('pexpire', KEYS[2], ARGV[4]) return 2";
static const char *LUA_ZPUBLISH_EPOCH =
    "local m = redis.call('zscore', KEYS[1], '~epoch') "
    "if m and tonumber(m) >= tonumber(ARGV[1]) then redis.call('del', KEYS[2]) return 0 end "
    "if redis.call('exists', KEYS[2]) == 1 then redis.call('rename', KEYS[2], KEYS[1]) "
    "redis.call('persist', KEYS[1]) else redis.call('del', KEYS[1]) end "
    "redis.call('zadd', KEYS[1], ARGV[1], '~epoch') return 1";

static int r_zincr_epoch(cache_be *be, rt_ctx *ctx, const char *key, const char *stage, int64_t epoch,
                         const char *m, int64_t d, int64_t ttl, bz_error *err)
{
    char es[24], ds[24], ms[24], base[24];
    snprintf(es, sizeof es, "%lld", (long long)epoch);
    snprintf(ds, sizeof ds, "%lld", (long long)d);
    snprintf(ms, sizeof ms, "%lld", (long long)((ttl + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS));
    snprintf(base, sizeof base, "%lld", (long long)CACHE_ZEPOCH_BASE);
    const char *a[] = {"EVAL", LUA_ZINCR_EPOCH, "2", key, stage, es, m, ds, ms, base};
    return cmd_int(B, ctx, 10, a, NULL, NULL, err);
}

static int r_zpublish_epoch(cache_be *be, rt_ctx *ctx, const char *key, const char *stage, int64_t epoch,
                            bool *published, bz_error *err)
{
    char sc[24];
    snprintf(sc, sizeof sc, "%lld", (long long)cache__zepoch_score(epoch));
    const char *a[] = {"EVAL", LUA_ZPUBLISH_EPOCH, "2", key, stage, sc};
    int64_t v = 0;
    int r = cmd_int(B, ctx, 6, a, NULL, &v, err);
    *published = r == 0 && v == 1;
    return r;
}

static int r_publish(cache_be *be, rt_ctx *ctx, const char *ch, const void *m, size_t n, bz_error *err)
{
    const char *a[] = {"PUBLISH", ch, m};
    size_t l[] = {7, strlen(ch), n};
    return cmd_int(B, ctx, 3, a, l, NULL, err);
}

/* ---- the subscriber connection ---- */

static void kick(rb *b)
{
    if (b->kick)
        rt_ctx_cancel(b->kick);
}

/* Caller holds sub_lk. */
static void sub_finish(subreq *q, int result)
{
    q->finished = true;
    q->result = result;
    if (q->abandoned) {
        rt_sem_destroy(&q->done);
        free(q);
    } else {
        rt_sem_release(&q->done);
    }
}

/* Caller holds sub_lk. */
static void fail_awaiting(rb *b, subreq **list)
{
    while (*list) {
        subreq *q = *list;
        *list = q->next;
        sub_finish(q, -EAGAIN);
    }
}

static void sub_reader(void *p)
{
    rb *b = p;
    rconn *c = NULL;
    int64_t backoff = 100 * BZ_NS_PER_MS;
    bz_error err;
    for (;;) {
        pthread_mutex_lock(&b->sub_lk);
        bool closing = b->closing;
        pthread_mutex_unlock(&b->sub_lk);
        if (closing)
            break;
        if (!c) {
            if (dial(b, NULL, &c, &err)) {
                pthread_mutex_lock(&b->sub_lk);
                fail_awaiting(b, &b->pending);
                pthread_mutex_unlock(&b->sub_lk);
                rt_sleep(NULL, backoff);
                backoff = backoff * 2 > 2 * BZ_NS_PER_S ? 2 * BZ_NS_PER_S : backoff * 2;
                continue;
            }
            backoff = 100 * BZ_NS_PER_MS;
            /* (re)subscribe to every channel this process listens on */
            char(*chans)[128] = malloc(64 * sizeof *chans);
            if (!chans)
                abort();
            int n = cache__hub_channels(b->base.hub, chans, 64);
            for (int i = 0; i < n; i++) {
                const char *a[] = {"SUBSCRIBE", chans[i]};
                redisAppendCommandArgv(c->rc, 2, a, NULL);
            }
            free(chans);
            if (n && flush(c, NULL, bz_now_ns() + CALL_TIMEOUT)) {
                conn_free(c);
                c = NULL;
                continue;
            }
        }
        /* send what subscribers asked for */
        pthread_mutex_lock(&b->sub_lk);
        subreq *todo = b->pending;
        b->pending = NULL;
        pthread_mutex_unlock(&b->sub_lk);
        while (todo) {
            subreq *q = todo;
            todo = q->next;
            const char *a[] = {q->sub ? "SUBSCRIBE" : "UNSUBSCRIBE", q->channel};
            redisAppendCommandArgv(c->rc, 2, a, NULL);
            pthread_mutex_lock(&b->sub_lk);
            q->next = b->awaiting;
            b->awaiting = q;
            pthread_mutex_unlock(&b->sub_lk);
        }
        if (flush(c, NULL, bz_now_ns() + CALL_TIMEOUT)) {
            conn_free(c);
            c = NULL;
            pthread_mutex_lock(&b->sub_lk);
            fail_awaiting(b, &b->awaiting);
            pthread_mutex_unlock(&b->sub_lk);
            continue;
        }
        /* wait for messages, or for a subscriber to kick us */
        rt_ctx k;
        rt_ctx_init(&k, NULL);
        pthread_mutex_lock(&b->sub_lk);
        bool more = b->pending || b->closing;
        b->kick = &k;
        pthread_mutex_unlock(&b->sub_lk);
        int r = more ? -ECANCELED : rt_io_await_readable(&c->io, &k, BZ_NO_DEADLINE);
        pthread_mutex_lock(&b->sub_lk);
        b->kick = NULL;
        pthread_mutex_unlock(&b->sub_lk);
        rt_ctx_release(&k);
        if (r)
            continue; /* kicked */
        if (redisBufferRead(c->rc) != REDIS_OK) {
            bz_log_warn("redis: subscriber connection lost; reconnecting");
            conn_free(c);
            c = NULL;
            pthread_mutex_lock(&b->sub_lk);
            fail_awaiting(b, &b->awaiting);
            pthread_mutex_unlock(&b->sub_lk);
            continue;
        }
        void *rep;
        while (redisGetReplyFromReader(c->rc, &rep) == REDIS_OK && rep) {
            redisReply *x = rep;
            if (x->type == REDIS_REPLY_ARRAY && x->elements == 3 && x->element[0]->str) {
                const char *kind = x->element[0]->str;
                if (!strcmp(kind, "message")) {
                    cache__hub_deliver(b->base.hub, x->element[1]->str, x->element[2]->str, x->element[2]->len);
                } else if (!strcmp(kind, "subscribe") || !strcmp(kind, "unsubscribe")) {
                    pthread_mutex_lock(&b->sub_lk);
                    for (subreq **pp = &b->awaiting; *pp; pp = &(*pp)->next)
                        if (!strcmp((*pp)->channel, x->element[1]->str) && (*pp)->sub == (kind[0] == 's')) {
                            subreq *q = *pp;
                            *pp = q->next;
                            sub_finish(q, 0);
                            break;
                        }
                    pthread_mutex_unlock(&b->sub_lk);
                }
            }
            freeReplyObject(x);
        }
    }
    if (c)
        conn_free(c);
    pthread_mutex_lock(&b->sub_lk);
    fail_awaiting(b, &b->pending);
    fail_awaiting(b, &b->awaiting);
    b->reader = false;
    pthread_mutex_unlock(&b->sub_lk);
}

static int sub_request(rb *b, rt_ctx *ctx, const char *channel, bool sub, bool wait, bz_error *err)
{
    subreq *q = calloc(1, sizeof *q);
    if (!q)
        abort();
    snprintf(q->channel, sizeof q->channel, "%s", channel);
    q->sub = sub;
    q->abandoned = !wait;
    rt_sem_init(&q->done, 0);
    pthread_mutex_lock(&b->sub_lk);
    /* FIFO, so an UNSUBSCRIBE and a later SUBSCRIBE reach Redis in order */
    subreq **tail = &b->pending;
    while (*tail)
        tail = &(*tail)->next;
    *tail = q;
    if (!b->reader) {
        b->reader = true;
        rt_go(sub_reader, b);
    }
    kick(b);
    pthread_mutex_unlock(&b->sub_lk);
    if (!wait)
        return 0;
    int r = rt_sem_acquire(&q->done, ctx, deadline_of(ctx));
    pthread_mutex_lock(&b->sub_lk);
    bool finished = q->finished;
    int result = q->result;
    if (r && !finished)
        q->abandoned = true; /* the reader frees it when Redis answers */
    pthread_mutex_unlock(&b->sub_lk);
    if (r && !finished)
        return bz_err_set(err, r == -ECANCELED ? BZ_ERR_CANCELLED : BZ_ERR_TIMEOUT, "redis: subscribe not confirmed"),
               r;
    rt_sem_destroy(&q->done);
    free(q);
    if (result)
        return unavailable(err, "subscribe failed");
    return 0;
}

static int r_sub_first(cache_be *be, rt_ctx *ctx, const char *channel, bz_error *err)
{
    return sub_request(B, ctx, channel, true, true, err);
}

static void r_sub_last(cache_be *be, const char *channel)
{
    /* Fire and forget: until Redis confirms, messages for the channel
     * still arrive and the hub drops them. */
    sub_request(B, NULL, channel, false, false, NULL);
}

static void r_close(cache_be *be)
{
    rb *b = B;
    pthread_mutex_lock(&b->sub_lk);
    b->closing = true;
    kick(b);
    bool reader = b->reader;
    pthread_mutex_unlock(&b->sub_lk);
    while (reader) {
        rt_sleep(NULL, BZ_NS_PER_MS);
        pthread_mutex_lock(&b->sub_lk);
        reader = b->reader;
        pthread_mutex_unlock(&b->sub_lk);
    }
    pthread_mutex_lock(&b->lk);
    b->closing = true;
    rconn *c = b->idle;
    b->idle = NULL;
    pthread_mutex_unlock(&b->lk);
    /* No calls are in flight at close: each loop's pipe is idle. */
    for (int i = 0; i < MAX_PIPES; i++)
        if (b->pipes[i]) {
            b->pipes[i]->dead = true;
            pipe_maybe_free(b->pipes[i]);
        }
    while (c) {
        rconn *n = c->next;
        conn_free(c);
        c = n;
    }
    pthread_mutex_destroy(&b->lk);
    pthread_mutex_destroy(&b->sub_lk);
    free(b);
}

static const cache_be_ops ops = {
    .ping = r_ping, .get = r_get, .set = r_set, .del = r_del, .del_if = r_del_if, .extend_if = r_extend_if,
    .incr = r_incr, .ttl = r_ttl, .zincr = r_zincr, .ztop = r_ztop, .zscore = r_zscore, .zrank = r_zrank,
    .zcard = r_zcard, .sadd = r_sadd, .srem = r_srem, .smembers = r_smembers, .publish = r_publish, .sub_first = r_sub_first, .sub_last = r_sub_last, .close = r_close,
    .set_if = r_set_if, .lease_take = r_lease_take, .lease_drop = r_lease_drop, .lease_count = r_lease_count,
    .zincr_epoch = r_zincr_epoch, .zpublish_epoch = r_zpublish_epoch,
};

cache_be *cache__redis_new(const char *url, const cache_opts *o, bz_error *err)
{
    rb *b = calloc(1, sizeof *b);
    if (!b)
        abort();
    b->base.ops = &ops;
    /* redis://host:port[/N] (validated by the flag parser too) */
    const char *hp = url + 8;
    const char *slash = strchr(hp, '/');
    size_t n = slash ? (size_t)(slash - hp) : strlen(hp);
    char tmp[300];
    if (n >= sizeof tmp)
        n = sizeof tmp - 1;
    memcpy(tmp, hp, n);
    tmp[n] = '\0';
    if (bz_parse_addr(tmp, b->host, sizeof b->host, &b->port) != 0 || !b->host[0]) {
        free(b);
        bz_err_set(err, BZ_ERR_INVALID, "bad Redis URL (want redis://host:port/N)");
        return NULL;
    }
    b->dbn = slash ? atoi(slash + 1) : 0;
    b->max = o && o->redis_pool > 0 ? o->redis_pool : 8;
    pthread_mutex_init(&b->lk, NULL);
    pthread_mutex_init(&b->sub_lk, NULL);
    return &b->base;
}

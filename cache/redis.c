/* cache/redis.c — the Redis backend: hiredis's protocol encoder and
 * reader over connections whose bytes the runtime moves (cache/redis-conn.c;
 * a command parks only its coroutine; TLS for rediss://), a small
 * connection pool, commands pipelined where they go together, Lua scripts
 * (loaded once, called by SHA) for the compare-and-act operations, and a
 * subscriber connection owned by one reader coroutine for pub/sub.
 *
 * Every connection (the per-loop pipelines, the pool, the subscriber) is
 * opened by dial(), which sends AUTH (when the URL has a password) before
 * SELECT.  With redis-sentinel:// dial() first asks the sentinels, in
 * order, where the master is, and checks with ROLE that the node it
 * reaches is a master; a lost connection, a -READONLY reply or a node that
 * is no longer master makes the next dial ask the sentinels again.
 *
 * When Redis cannot be reached, the backend marks itself down for a
 * backoff (100 ms doubling to 2 s; to 500 ms with Sentinel): calls in that
 * window fail at once with BZ_ERR_UNAVAILABLE instead of each waiting for
 * a connect; the first call after it tries again, so service resumes by
 * itself.
 *
 * When Redis accepts connections but does not answer (frozen, or a
 * network that drops packets), that backoff never starts: connects and
 * commands each wait out their deadlines.  A circuit breaker around every
 * command (one(): base/breaker.h) counts those in a row — a command that
 * waited at least HANG_MIN_NS and got no reply, a connect whose setup timed
 * out — and, open, fails commands at once while one probe at a time (a
 * PING in a coroutine of its own, started by the caller that was handed
 * the probe, with the probe interval (≥ 1 s) as its deadline: no request waits on
 * it) checks whether Redis answers again.  Any reply (an error reply too)
 * closes it; a refused or reset connection is neutral (the backoff above
 * handles it). */
#include "cache/cache-private.h"
#include "cache/redis-conn.h"
#include <bazaar/tls.h>

#include <bazaar/log.h>
#include "base/redisurl.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define CALL_TIMEOUT (2 * BZ_NS_PER_S) /* when the caller's context has none */
#define CONNECT_TIMEOUT (500 * BZ_NS_PER_MS)
/* One sentinel gets this long to answer before the next one is asked. */
#define SENTINEL_TIMEOUT (300 * BZ_NS_PER_MS)

static const char *LUA_DELIF =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
static const char *LUA_EXTIF =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
static const char *LUA_INCR = "local v = redis.call('incrby', KEYS[1], ARGV[1]) "
                              "if tonumber(ARGV[2]) > 0 and redis.call('pttl', KEYS[1]) == -1 then "
                              "redis.call('pexpire', KEYS[1], ARGV[2]) end return v";


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
    bz_redis_url url;     /* the parsed --cache (credentials, sentinels) */
    rt_tls_client *tls;   /* rediss://: the client TLS context, else NULL */
    pthread_mutex_t lk;
    /* where the data node is: url.addrs[0], or with Sentinel the master
     * last named by a sentinel (valid while master_known; under lk) */
    char host[256];
    int port;
    bool master_known;
    bool setup_warned;    /* setup_refused() logged (once per outage) */
    rconn *idle;
    int nopen, max;
    rt_waitq waiters;
    int64_t down_until, backoff;
    char sha[3][48];
    bz_breaker brk;       /* fails commands fast while Redis hangs */
    atomic_int probes;    /* its probe coroutines running (0 or 1) */
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
    /* With Sentinel the outage is usually a failover that ends when a
     * replica is promoted: asking the sentinels again is cheap, so the
     * backoff stops at 500 ms and service resumes soon after. */
    int64_t max = b->url.sentinel ? 500 * BZ_NS_PER_MS : 2 * BZ_NS_PER_S;
    b->backoff = b->backoff ? (b->backoff * 2 > max ? max : b->backoff * 2) : 100 * BZ_NS_PER_MS;
    b->down_until = bz_now_ns() + b->backoff;
    pthread_mutex_unlock(&b->lk);
}

/* With Sentinel: the master's address is no longer trusted (a connection
 * to it was lost, it answered -READONLY, or ROLE said replica); the next
 * dial asks the sentinels again. */
static void master_lost(rb *b)
{
    if (!b->url.sentinel)
        return;
    pthread_mutex_lock(&b->lk);
    b->master_known = false;
    pthread_mutex_unlock(&b->lk);
}

static bool is_readonly(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR && r->str && !strncmp(r->str, "READONLY", 8);
}

/* Sends n commands in one write and reads their n replies (each freed by
 * the caller; NULL after a failure). */
static int exchange(rconn *c, rt_ctx *ctx, int64_t dl, int n, const int *argc, const char **argv[],
                    redisReply **reps)
{
    for (int i = 0; i < n; i++) {
        reps[i] = NULL;
        rconn_append(c, argc[i], argv[i], NULL);
    }
    int r = rconn_flush(c, ctx, dl);
    for (int i = 0; r == 0 && i < n; i++)
        r = rconn_read_reply(c, ctx, dl, &reps[i]);
    return r;
}

static void free_replies(redisReply **reps, int n)
{
    for (int i = 0; i < n; i++)
        if (reps[i]) {
            freeReplyObject(reps[i]);
            reps[i] = NULL;
        }
}

/* Asks the sentinels, in order, where the master is (SENTINEL
 * get-master-addr-by-name), each for at most SENTINEL_TIMEOUT; the first
 * answer wins and is remembered until master_lost(). */
static int locate_master(rb *b, rt_ctx *ctx, char *host, int *port, bz_error *err)
{
    pthread_mutex_lock(&b->lk);
    bool known = b->master_known;
    if (known) {
        memcpy(host, b->host, sizeof b->host);
        *port = b->port;
    }
    pthread_mutex_unlock(&b->lk);
    if (known)
        return 0;
    for (int i = 0; i < b->url.naddrs; i++) {
        const bz_redis_addr *s = &b->url.addrs[i];
        int64_t dl = bz_now_ns() + SENTINEL_TIMEOUT;
        if (rt_ctx_deadline(ctx) < dl)
            dl = rt_ctx_deadline(ctx);
        rconn *c;
        char why[128];
        if (rconn_open(s->host, s->port, NULL, ctx, dl, &c, why, sizeof why) != 0)
            continue;
        const char *q[] = {"SENTINEL", "get-master-addr-by-name", b->url.master};
        int qc = 3;
        const char **qv[] = {q};
        redisReply *rep;
        int r = exchange(c, ctx, dl, 1, &qc, qv, &rep);
        rconn_free(c);
        bool ok = r == 0 && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
                  rep->element[0]->type == REDIS_REPLY_STRING && rep->element[1]->type == REDIS_REPLY_STRING &&
                  rep->element[0]->len < sizeof b->host;
        if (ok) {
            pthread_mutex_lock(&b->lk);
            bool moved = strcmp(b->host, rep->element[0]->str) || b->port != atoi(rep->element[1]->str);
            snprintf(b->host, sizeof b->host, "%s", rep->element[0]->str);
            b->port = atoi(rep->element[1]->str);
            b->master_known = true;
            memcpy(host, b->host, sizeof b->host);
            *port = b->port;
            pthread_mutex_unlock(&b->lk);
            if (moved)
                bz_log_info("redis: master located by sentinel", BZ_F_STR("master", b->url.master),
                            BZ_F_STR("host", host), BZ_F_INT("port", *port), BZ_F_STR("sentinel", s->host),
                            BZ_F_INT("sentinel_port", s->port));
        }
        if (r == 0)
            freeReplyObject(rep);
        if (ok)
            return 0;
        if (r == -ECANCELED)
            return bz_err_set(err, BZ_ERR_CANCELLED, "redis: connect cancelled"), r;
    }
    return unavailable(err, "no sentinel could name the master");
}

/* A connection refused for a reason that is a setting to fix (a wrong
 * password, an ACL that denies SELECT or the scripts, a certificate that
 * does not verify): logged once per outage, not once per retry. */
static void setup_refused(rb *b, const char *what, const char *host, int port, const char *error)
{
    pthread_mutex_lock(&b->lk);
    bool warned = b->setup_warned;
    b->setup_warned = true;
    pthread_mutex_unlock(&b->lk);
    if (!warned)
        bz_log_err(what, BZ_F_STR("user", b->url.user[0] ? b->url.user : "default"), BZ_F_STR("host", host),
                   BZ_F_INT("port", port), BZ_F_STR("error", error));
}

static int dial(rb *b, rt_ctx *ctx, rconn **out, bz_error *err)
{
    char host[256];
    int port;
    if (b->url.sentinel) {
        int r = locate_master(b, ctx, host, &port, err);
        if (r) {
            if (r != -ECANCELED)
                mark_down(b);
            return r;
        }
    } else {
        memcpy(host, b->host, sizeof host);
        port = b->port;
    }
    int64_t dl = bz_now_ns() + CONNECT_TIMEOUT;
    if (rt_ctx_deadline(ctx) < dl)
        dl = rt_ctx_deadline(ctx);
    rconn *c = NULL;
    char why[200] = "";
    int r = rconn_open(host, port, b->tls, ctx, dl, &c, why, sizeof why);
    /* AUTH, SELECT, the scripts (and ROLE), pipelined: one round trip */
    enum { MAXC = 6 };
    int argc[MAXC], n = 0, auth = -1, role = -1;
    const char **argv[MAXC];
    const char *a_auth[] = {"AUTH", b->url.user, b->url.pass};
    const char *a_pass[] = {"AUTH", b->url.pass};
    char db[8];
    snprintf(db, sizeof db, "%d", b->url.db);
    const char *a_sel[] = {"SELECT", db};
    const char *scripts[3] = {LUA_DELIF, LUA_EXTIF, LUA_INCR};
    const char *a_load[3][3];
    const char *a_role[] = {"ROLE"};
    if (b->url.has_pass) {
        auth = n;
        argv[n] = b->url.user[0] ? a_auth : a_pass;
        argc[n++] = b->url.user[0] ? 3 : 2;
    }
    argv[n] = a_sel, argc[n++] = 2;
    int first_script = n;
    for (int i = 0; i < 3; i++) {
        a_load[i][0] = "SCRIPT", a_load[i][1] = "LOAD", a_load[i][2] = scripts[i];
        argv[n] = a_load[i], argc[n++] = 3;
    }
    if (b->url.sentinel)
        role = n, argv[n] = a_role, argc[n++] = 1;
    redisReply *reps[MAXC] = {0};
    if (r && b->tls && !strncmp(why, "TLS", 3))
        setup_refused(b, "redis: TLS handshake failed", host, port, why);
    if (r == 0)
        r = exchange(c, ctx, dl, n, argc, argv, reps);
    for (int i = 0; r == 0 && i < n; i++) {
        redisReply *rep = reps[i];
        if (rep->type == REDIS_REPLY_ERROR) {
            /* a wrong password (WRONGPASS), none given (NOAUTH), an ACL
             * that denies SELECT or the scripts (NOPERM).  Redis's messages
             * never quote the password; the log's secret filter would hide
             * it anyway. */
            bool authn = i == auth || !strncmp(rep->str, "NOAUTH", 6);
            snprintf(why, sizeof why, "%s%s", authn ? "authentication failed: " : "", rep->str);
            setup_refused(b, authn ? "redis: authentication failed" : "redis: connection setup refused", host, port,
                          rep->str);
            r = authn ? -EACCES : -EPROTO;
        } else if (i == role && !(rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
                                  rep->element[0]->type == REDIS_REPLY_STRING && !strcmp(rep->element[0]->str, "master"))) {
            snprintf(why, sizeof why, "%s:%d is not a master (failover in progress)", host, port);
            r = -EAGAIN;
        } else if (i >= first_script && i < first_script + 3 && rep->type == REDIS_REPLY_STRING) {
            pthread_mutex_lock(&b->lk);
            snprintf(b->sha[i - first_script], sizeof b->sha[0], "%s", rep->str);
            pthread_mutex_unlock(&b->lk);
        }
    }
    free_replies(reps, n);
    if (r) {
        bool cut = c && (r == -ECONNRESET || r == -EPIPE);
        if (c)
            rconn_free(c);
        if (r == -ECANCELED) /* the caller gave up: says nothing about Redis */
            return bz_err_set(err, BZ_ERR_CANCELLED, "redis: connect cancelled"), r;
        master_lost(b);
        if (cut) {
            /* Redis accepted us, then the connection was cut (CLIENT KILL,
             * a restart): not an outage to back off from, and the caller's
             * command was never sent, so it may be tried again */
            unavailable(err, "connection cut while it was set up");
            return -ENOTCONN;
        }
        /* A refused connect starts the backoff; a connect that got no
         * answer in time is the circuit breaker's to count and pace (a
         * backoff on top would delay the probe that finds Redis back). */
        if (r != -ETIMEDOUT || b->brk.failures <= 0)
            mark_down(b);
        unavailable(err, why[0] ? why : r == -ETIMEDOUT ? "connect timed out" : strerror(-r));
        if (err && r == -ETIMEDOUT)
            err->code = ETIMEDOUT; /* accepted (maybe) but no answer: the breaker counts it */
        return -EAGAIN;
    }
    pthread_mutex_lock(&b->lk);
    b->backoff = 0;
    b->down_until = 0;
    b->setup_warned = false;
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
            if (rconn_stale(c)) { /* e.g. Redis restarted since: open a fresh one */
                rconn_free(c);
                pthread_mutex_lock(&b->lk);
                b->nopen--;
                continue;
            }
            if (c->io.loop != rt_loop_current()) { /* move it to this loop */
                if (c->io.loop)
                    rt_io_detach(&c->io);
                rt_io_open(&c->io, c->io.fd);
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
        rt_park_reason("redis pool wait");
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
        rconn_free(c);
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
        rconn_append(c, argc[i], argv[i], lens ? lens[i] : NULL);
    r = rconn_flush(c, ctx, dl);
    for (int i = 0; r == 0 && i < n; i++)
        r = rconn_read_reply(c, ctx, dl, &replies[i]);
    if (r) {
        /* a half-done exchange leaves the stream unusable */
        c->broken = true;
        free_replies(replies, n);
        release(b, c);
        if (r == -ECANCELED)
            return bz_err_set(err, BZ_ERR_CANCELLED, "redis: call cancelled"), r;
        if (r == -ETIMEDOUT)
            return bz_err_set(err, BZ_ERR_TIMEOUT, "redis: call timed out"), r;
        /* an established connection broke: the next dial tells whether
         * Redis is down (and marks it so) */
        master_lost(b);
        unavailable(err, "connection lost");
        return -ECONNRESET;
    }
    for (int i = 0; i < n; i++)
        if (is_readonly(replies[i])) { /* a demoted master: find the new one */
            c->broken = true;
            master_lost(b);
        }
    release(b, c);
    return 0;
}

static int piped(rb *b, rt_ctx *ctx, int argc, const char **argv, const size_t *lens, redisReply **rep,
                 bz_error *err);

/* One attempt: pipelined on this loop's connection when there is one,
 * else through the pool.  -ECONNRESET: the connection broke after the
 * command was (maybe) sent, so it may or may not have run; -EROFS: the
 * node answered -READONLY (a demoted master), so it did not run;
 * -ENOTCONN: a fresh connection was cut before the command was sent. */
static int attempt(rb *b, rt_ctx *ctx, int argc, const char **argv, const size_t *lens, redisReply **rep,
                   bz_error *err)
{
    rt_note prev = rt_note_set("redis", argv[0]); /* the command, for the coroutine dump */
    int r = piped(b, ctx, argc, argv, lens, rep, err);
    if (r == 1)
        r = run(b, ctx, 1, &argc, &argv, lens ? &lens : NULL, rep, err);
    rt_note_restore(prev);
    if (r)
        return r;
    if ((*rep)->type == REDIS_REPLY_ERROR) {
        bool ro = is_readonly(*rep);
        if (ro)
            unavailable(err, "the node is a replica now (failover)");
        else
            bz_err_set(err, BZ_ERR_INVALID, "redis: %s", (*rep)->str);
        freeReplyObject(*rep);
        *rep = NULL;
        return ro ? -EROFS : -EINVAL;
    }
    return 0;
}

/* Whether a command may be sent a second time when its connection broke
 * after it was written (Redis may have run it, or not).  IDEMPOTENT ones
 * (reads; SET without NX; DEL; SADD/SREM; re-arming a TTL) leave the same
 * state when run twice, so they are retried once on a fresh connection
 * within the caller's deadline: a Redis restart or a killed connection
 * then costs no request.  ONCE ones are not: INCR (a rate-limit counter
 * would count twice), ZINCRBY, SET NX (a lock or idempotency key our
 * first attempt took would look taken by someone else), the
 * compare-and-delete script (a release that happened would report "not
 * ours"), PUBLISH (subscribers would see the event twice).  A -READONLY
 * answer, or a fresh connection cut before the command went out, means
 * the command did not run: every kind is tried again then. */
typedef enum { ONCE = 0, IDEMPOTENT = 1 } redo;

/* A command or connect that timed out sooner than this says more about
 * the caller's nearly-spent deadline than about Redis. */
#define HANG_MIN_NS (100 * BZ_NS_PER_MS)

/* Reports a command's outcome (begun at t0) to the breaker: a reply (an
 * error reply, -READONLY included) proves Redis alive; a wait of at least
 * HANG_MIN_NS for a reply or a connect that ended in a timeout is a
 * failure; anything else (cancelled, refused, reset) says nothing. */
static void breaker_note(rb *b, bool probe, int r, const bz_error *err, int64_t t0)
{
    bool timed_out = r == -ETIMEDOUT || (r == -EAGAIN && err && err->code == ETIMEDOUT);
    int64_t now = bz_now_ns();
    bz_breaker_outcome o = r == 0 || r == -EINVAL || r == -EROFS       ? BZ_BREAKER_SUCCESS
                           : timed_out && now - t0 >= HANG_MIN_NS ? BZ_BREAKER_FAILURE
                                                                   : BZ_BREAKER_NEUTRAL;
    bz_breaker_state was = bz_breaker_get_state(&b->brk);
    if (bz_breaker_report(&b->brk, probe, o, t0, now))
        bz_log_warn("redis: circuit breaker open: commands got no reply in time; they fail fast until a probe "
                    "gets a reply",
                    BZ_F_INT("probe_interval_ms", b->brk.open_ns / BZ_NS_PER_MS));
    else if (was != BZ_BREAKER_CLOSED && bz_breaker_get_state(&b->brk) == BZ_BREAKER_CLOSED)
        bz_log_info("redis: circuit breaker closed: Redis answers again");
}

static void probe_task(void *p)
{
    rb *b = p;
    rt_ctx ctx;
    rt_ctx_init_timeout(&ctx, NULL, bz_breaker_probe_timeout(&b->brk));
    const char *a[] = {"PING"};
    int argc = 1;
    redisReply *rep = NULL;
    bz_error e;
    int64_t t0 = bz_now_ns();
    int r = attempt(b, &ctx, argc, a, NULL, &rep, &e);
    if (rep)
        freeReplyObject(rep);
    breaker_note(b, true, r, &e, t0);
    rt_ctx_release(&ctx);
    atomic_fetch_sub(&b->probes, 1);
}

/* Asks the breaker whether a command may go: 0 (*probe set when the
 * caller, off a loop, is the probe itself), or -EAGAIN with err filled
 * (open: fail fast; the caller handed the probe starts probe_task and
 * fails fast too). */
static int gate(rb *b, int64_t now, bool *probe, bz_error *err)
{
    *probe = false;
    if (b->brk.failures <= 0 || bz_breaker_get_state(&b->brk) == BZ_BREAKER_CLOSED)
        return 0;
    int64_t retry = 0;
    bz_breaker_verdict v = bz_breaker_allow(&b->brk, now, &retry);
    if (v == BZ_BREAKER_PROBE && rt_loop_current()) {
        atomic_fetch_add(&b->probes, 1);
        rt_go(probe_task, b);
        v = BZ_BREAKER_REJECT;
        retry = b->brk.open_ns;
    }
    if (v == BZ_BREAKER_REJECT) {
        unavailable(err, "no reply in time to recent commands; failing fast (circuit breaker open) until a probe "
                         "gets a reply");
        if (err)
            err->retry_ms = (int)((retry + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS);
        return -EAGAIN;
    }
    *probe = v == BZ_BREAKER_PROBE;
    return 0;
}

static int one(rb *b, rt_ctx *ctx, redo kind, int argc, const char **argv, const size_t *lens, redisReply **rep,
               bz_error *err)
{
    bool probe = false;
    int64_t t0 = b->brk.failures > 0 ? bz_now_ns() : 0;
    if (gate(b, t0, &probe, err))
        return -EAGAIN;
    int r = attempt(b, ctx, argc, argv, lens, rep, err);
    if ((r == -EROFS || r == -ENOTCONN || (r == -ECONNRESET && kind == IDEMPOTENT)) && rt_ctx_err(ctx) == 0 &&
        bz_now_ns() < deadline_of(ctx))
        r = attempt(b, ctx, argc, argv, lens, rep, err);
    if (b->brk.failures > 0)
        breaker_note(b, probe, r, err, t0);
    return r == -ECONNRESET || r == -EROFS || r == -ENOTCONN ? -EAGAIN : r;
}

/* Runs one command whose reply is dropped, or read as an integer into
 * *out when out is given. */
static int cmd_int(rb *b, rt_ctx *ctx, redo kind, int argc, const char **argv, const size_t *lens, int64_t *out,
                   bz_error *err)
{
    redisReply *rep;
    int r = one(b, ctx, kind, argc, argv, lens, &rep, err);
    if (r)
        return r;
    if (out)
        *out = rep->integer;
    freeReplyObject(rep);
    return 0;
}

/* EVALSHA, falling back to EVAL when the server lost its script cache. */
static int script(rb *b, rt_ctx *ctx, redo kind, int idx, const char *src, const char *key, int nargs, const char **args,
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
    int r = one(b, ctx, kind, 4 + nargs, argv, lens, rep, err);
    if (r == -EINVAL && sha[0] && err && strstr(err->msg, "NOSCRIPT")) {
        argv[0] = "EVAL";
        argv[1] = src;
        lens[0] = 4;
        lens[1] = strlen(src);
        r = one(b, ctx, kind, 4 + nargs, argv, lens, rep, err);
    }
    return r;
}

/* ---- operations ---- */

#define B ((rb *)be)

static int r_ping(cache_be *be, rt_ctx *ctx, bz_error *err)
{
    const char *a[] = {"PING"};
    return cmd_int(B, ctx, IDEMPOTENT, 1, a, NULL, NULL, err);
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
        rconn_free(p->c);
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
        int r = rconn_read_reply(p->c, NULL, bz_now_ns() + CALL_TIMEOUT, &rep);
        if (r) {
            if (r != -ETIMEDOUT)
                master_lost(p->b);
            pipe_fail_all(p, r);
            break;
        }
        if (is_readonly(rep) && !p->dead) {
            /* a demoted master: the commands behind this one fail as
             * "connection lost" and the pipe is replaced by a dial to the
             * master the sentinels name now */
            master_lost(p->b);
            shutdown(p->c->io.fd, SHUT_RDWR);
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
    int r = p->dead ? -EPIPE : rconn_flush(p->c, NULL, bz_now_ns() + CALL_TIMEOUT);
    p->writing = false;
    if (r && !p->dead)
        shutdown(p->c->io.fd, SHUT_RDWR); /* the reader fails the waiters */
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
        (p->c->io.hup || (bz_now_ns() - p->idle_since > PIPE_CHECK_IDLE_NS && rconn_stale(p->c)))) {
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
            rconn_free(c);
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
    rconn_append(p->c, argc, argv, lens);
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
        unavailable(err, "connection lost");
        return -ECONNRESET;
    }
    *rep = w->rep;
    w->rep = NULL;
    pwait_free(w);
    return 0;
}

static int r_get(cache_be *be, rt_ctx *ctx, const char *key, bz_buf *out, bz_error *err)
{
    const char *a[] = {"GET", key};
    redisReply *rep;
    int r = one(B, ctx, IDEMPOTENT, 2, a, NULL, &rep, err);
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
    ms[bz_fmt_i64(ms, ((ttl + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS))] = '\0';
    const char *a[6] = {"SET", key, v, "PX", ms, "NX"};
    size_t l[6] = {3, strlen(key), n, 2, strlen(ms), 2};
    int argc = ttl > 0 ? (nx ? 6 : 5) : (nx ? 3 : 3);
    if (ttl <= 0 && nx) { /* SET key v NX */
        a[3] = "NX";
        l[3] = 2;
        argc = 4;
    }
    redisReply *rep;
    int r = one(B, ctx, nx ? ONCE : IDEMPOTENT, argc, a, l, &rep, err);
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
    return cmd_int(B, ctx, IDEMPOTENT, 2, a, NULL, NULL, err);
}

static int r_del_if(cache_be *be, rt_ctx *ctx, const char *key, const void *t, size_t n, bool *done, bz_error *err)
{
    const char *args[] = {t};
    size_t lens[] = {n};
    redisReply *rep;
    int r = script(B, ctx, ONCE, 0, LUA_DELIF, key, 1, args, lens, &rep, err);
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
    ms[bz_fmt_i64(ms, (ttl / BZ_NS_PER_MS))] = '\0';
    const char *args[] = {t, ms};
    size_t lens[] = {n, strlen(ms)};
    redisReply *rep;
    int r = script(B, ctx, IDEMPOTENT, 1, LUA_EXTIF, key, 2, args, lens, &rep, err);
    if (r)
        return r;
    *done = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    return 0;
}

static int r_incr(cache_be *be, rt_ctx *ctx, const char *key, int64_t d, int64_t ttl, int64_t *v, bz_error *err)
{
    char ds[24], ms[24];
    ds[bz_fmt_i64(ds, d)] = '\0';
    ms[bz_fmt_i64(ms, (ttl > 0 ? (ttl + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS : 0))] = '\0';
    const char *args[] = {ds, ms};
    size_t lens[] = {strlen(ds), strlen(ms)};
    redisReply *rep;
    int r = script(B, ctx, ONCE, 2, LUA_INCR, key, 2, args, lens, &rep, err);
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
    int r = cmd_int(B, ctx, IDEMPOTENT, 2, a, NULL, &v, err);
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
    ds[bz_fmt_i64(ds, d)] = '\0';
    const char *a[] = {"ZINCRBY", key, ds, m};
    redisReply *rep;
    int r = one(B, ctx, ONCE, 4, a, NULL, &rep, err);
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
    int r = one(B, ctx, IDEMPOTENT, 5, a, NULL, &rep, err);
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
    int r = one(B, ctx, IDEMPOTENT, 3, a, NULL, &rep, err);
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
    return cmd_int(B, ctx, IDEMPOTENT, 2, a, NULL, n, err);
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
    ms[bz_fmt_i64(ms, (ttl > 0 ? (ttl + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS : 0))] = '\0';
    const char *a[] = {"EVAL", LUA_SADD, "1", key, m, ms};
    int64_t v = 0;
    int r = cmd_int(B, ctx, IDEMPOTENT, 6, a, NULL, &v, err);
    if (r == 0 && card)
        *card = v;
    return r;
}

static int r_srem(cache_be *be, rt_ctx *ctx, const char *key, const char *m, bz_error *err)
{
    const char *a[] = {"SREM", key, m};
    return cmd_int(B, ctx, IDEMPOTENT, 3, a, NULL, NULL, err);
}

static int r_smembers(cache_be *be, rt_ctx *ctx, const char *key, int max, bz_buf *out, int *n, bz_error *err)
{
    const char *a[] = {"SMEMBERS", key};
    redisReply *rep;
    *n = 0;
    bz_buf_clear(out);
    int r = one(B, ctx, IDEMPOTENT, 2, a, NULL, &rep, err);
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
    ms[bz_fmt_i64(ms, (ttl > 0 ? (ttl + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS : 0))] = '\0';
    const char *a[] = {"EVAL", LUA_SET_IF, "1", key, elen ? expect : "", v, ms};
    size_t l[] = {4, strlen(LUA_SET_IF), 1, strlen(key), elen, n, strlen(ms)};
    int64_t done = 0;
    int r = cmd_int(B, ctx, ONCE, 7, a, l, &done, err);
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
    ms[bz_fmt_i64(ms, ((ttl + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS))] = '\0';
    const char *a[] = {"EVAL", LUA_LEASE_TAKE, "1", key, m, cs, ms};
    int64_t done = 0;
    int r = cmd_int(B, ctx, IDEMPOTENT, 7, a, NULL, &done, err);
    *taken = r == 0 && done == 1;
    return r;
}

static int r_lease_drop(cache_be *be, rt_ctx *ctx, const char *key, const char *m, bz_error *err)
{
    const char *a[] = {"ZREM", key, m};
    return cmd_int(B, ctx, IDEMPOTENT, 3, a, NULL, NULL, err);
}

static int r_lease_count(cache_be *be, rt_ctx *ctx, const char *key, int64_t *n, bz_error *err)
{
    const char *a[] = {"EVAL", LUA_LEASE_COUNT, "1", key};
    return cmd_int(B, ctx, IDEMPOTENT, 4, a, NULL, n, err);
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
    es[bz_fmt_i64(es, epoch)] = '\0';
    ds[bz_fmt_i64(ds, d)] = '\0';
    ms[bz_fmt_i64(ms, ((ttl + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS))] = '\0';
    base[bz_fmt_i64(base, CACHE_ZEPOCH_BASE)] = '\0';
    const char *a[] = {"EVAL", LUA_ZINCR_EPOCH, "2", key, stage, es, m, ds, ms, base};
    return cmd_int(B, ctx, ONCE, 10, a, NULL, NULL, err);
}

static int r_zpublish_epoch(cache_be *be, rt_ctx *ctx, const char *key, const char *stage, int64_t epoch,
                            bool *published, bz_error *err)
{
    char sc[24];
    sc[bz_fmt_i64(sc, cache__zepoch_score(epoch))] = '\0';
    const char *a[] = {"EVAL", LUA_ZPUBLISH_EPOCH, "2", key, stage, sc};
    int64_t v = 0;
    int r = cmd_int(B, ctx, ONCE, 6, a, NULL, &v, err);
    *published = r == 0 && v == 1;
    return r;
}

static int r_publish(cache_be *be, rt_ctx *ctx, const char *ch, const void *m, size_t n, bz_error *err)
{
    const char *a[] = {"PUBLISH", ch, m};
    size_t l[] = {7, strlen(ch), n};
    return cmd_int(B, ctx, ONCE, 3, a, l, NULL, err);
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
                rconn_append(c, 2, a, NULL);
            }
            free(chans);
            if (n && rconn_flush(c, NULL, bz_now_ns() + CALL_TIMEOUT)) {
                rconn_free(c);
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
            rconn_append(c, 2, a, NULL);
            pthread_mutex_lock(&b->sub_lk);
            q->next = b->awaiting;
            b->awaiting = q;
            pthread_mutex_unlock(&b->sub_lk);
        }
        if (rconn_flush(c, NULL, bz_now_ns() + CALL_TIMEOUT)) {
            rconn_free(c);
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
        redisReply *x = NULL;
        int r = more ? -ECANCELED : rconn_read_reply(c, &k, BZ_NO_DEADLINE, &x);
        pthread_mutex_lock(&b->sub_lk);
        b->kick = NULL;
        pthread_mutex_unlock(&b->sub_lk);
        rt_ctx_release(&k);
        if (r == -ECANCELED)
            continue; /* kicked: what was read so far stays in the reader */
        if (r) {
            bz_log_warn("redis: subscriber connection lost; reconnecting");
            master_lost(b);
            rconn_free(c);
            c = NULL;
            pthread_mutex_lock(&b->sub_lk);
            fail_awaiting(b, &b->awaiting);
            pthread_mutex_unlock(&b->sub_lk);
            continue;
        }
        {
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
        rconn_free(c);
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
    /* while the breaker is open a subscribe would only wait out its
     * deadline for a confirmation: fail it fast like any command */
    bool probe;
    if (gate(B, bz_now_ns(), &probe, err))
        return -EAGAIN;
    if (probe)
        bz_breaker_report(&B->brk, true, BZ_BREAKER_NEUTRAL, 0, 0);
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
    while (atomic_load(&b->probes) > 0) /* ends by its deadline, the probe interval */
        rt_sleep(NULL, BZ_NS_PER_MS);
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
        rconn_free(c);
        c = n;
    }
    pthread_mutex_destroy(&b->lk);
    pthread_mutex_destroy(&b->sub_lk);
    if (b->tls)
        rt_tls_client_free(b->tls);
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
    char why[200];
    if (bz_redis_url_parse(url, &b->url, why, sizeof why) != 0) {
        free(b);
        bz_err_set(err, BZ_ERR_INVALID, "bad Redis URL: %s", why);
        return NULL;
    }
    rt_tls_client_opts to = {.ca_file = b->url.ca[0] ? b->url.ca : NULL};
    if (b->url.tls && !(b->tls = rt_tls_client_new(&to, why, sizeof why))) {
        free(b);
        bz_err_set(err, BZ_ERR_INVALID, "rediss: %s", why);
        return NULL;
    }
    snprintf(b->host, sizeof b->host, "%s", b->url.addrs[0].host);
    b->port = b->url.addrs[0].port;
    b->max = o && o->redis_pool > 0 ? o->redis_pool : 8;
    bz_breaker_init(&b->brk, "cache", o ? o->breaker_failures : 0, o ? o->breaker_open_ns : 0);
    b->base.breaker = &b->brk;
    pthread_mutex_init(&b->lk, NULL);
    pthread_mutex_init(&b->sub_lk, NULL);
    return &b->base;
}

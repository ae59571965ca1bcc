/* db/postgres.c — the PostgreSQL driver: libpq in non-blocking mode on the
 * runtime.  A statement is sent, then the coroutine parks on the socket
 * until the result is in; other coroutines run meanwhile, so one loop
 * thread keeps many queries in flight on many connections.
 *
 * Prepared statements are cached per connection (LRU, DB_STMT_CACHE): the
 * first use prepares (one round trip), later uses only execute; with
 * statement_cache=off in the URL every statement runs unnamed instead.  When a
 * context ends mid-query a cancel request is sent (PQcancel blocks, so on
 * a detached thread of its own that nobody waits for) and the connection
 * is drained, briefly, until the server says the statement stopped, so it
 * goes back to the pool clean.  A server that does not confirm within
 * CANCEL_GRACE is treated as unresponsive: the connection is abandoned
 * (closing it rolls back whatever it had open) and the caller gets
 * BZ_ERR_CONNECTION.  No wait here is without a deadline: a frozen server
 * (accepts, never answers) costs a caller its context's deadline plus
 * CANCEL_GRACE at most, and never holds a thread of the offload pool. */
#include "db/db-private.h"

#include <bazaar/clock.h>
#include <bazaar/log.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* After a cancel, how long to wait for the server to confirm before the
 * connection is given up.  A live server confirms in a round trip. */
#define CANCEL_GRACE_NS (200 * BZ_NS_PER_MS)
/* A ROLLBACK (run without the caller's context, which may have ended) on
 * a connection the server stopped answering: give it up after this.  The
 * caller is still waiting, past its deadline maybe, so no longer than a
 * cancel's grace; a live server answers in a round trip, and a dropped
 * connection rolls back on the server anyway. */
#define ROLLBACK_NS CANCEL_GRACE_NS
/* Any other statement run without a context (seeding, migrations at
 * start-up): still not a wait without end. */
#define NO_CTX_NS (5 * 60 * BZ_NS_PER_S)
/* Cancel requests in flight at once (each blocks a detached thread while
 * the server does not answer); beyond it, connections are abandoned
 * without one. */
#define CANCELS_MAX 4

/* Registers the socket with the current loop.  With one loop it stays
 * registered while idle (the loop notices a server hang-up in the hup
 * flag); with several, an idle connection is registered nowhere (see
 * pg_idle), so we look at the socket before using it again. */
static int attach(db_conn *c)
{
    rt_loop *l = rt_loop_current();
    int fd = PQsocket(c->pg);
    if (fd < 0)
        return -ENOTCONN;
    if (c->pgio.loop == l && c->pgio.fd == fd)
        return 0;
    if (c->pgio.loop)
        rt_io_detach(&c->pgio);
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (c->created_ns != c->returned_ns && poll(&p, 1, 0) > 0) {
        /* the server spoke while we were idle: a termination notice or EOF */
        if ((p.revents & (POLLRDHUP | POLLHUP | POLLERR)) || !PQconsumeInput(c->pg) ||
            PQstatus(c->pg) != CONNECTION_OK)
            return -ENOTCONN;
    }
    return rt_io_open(&c->pgio, fd);
}

/* Before going idle: with several loops, leave the epoll set of this one,
 * so that the next user (maybe on another loop) registers it afresh and no
 * two loops ever see events for it. */
static void pg_idle(db_conn *c)
{
    if (rt_nloops() > 1 && c->pgio.loop)
        rt_io_detach(&c->pgio);
}

/* PostgreSQL's own race, reported as an internal error (XX000, an elog
 * message, never translated): a row's xmax is a multixact holding a FOR
 * KEY SHARE lock (a foreign key check) and the update of a transaction
 * that is aborting.  Its abort is already in pg_xact, so a new UPDATE of
 * the row does not wait for it (DoesMultiXactIdConflict skips aborted
 * updaters), but it has not left the ProcArray yet, so MultiXactIdExpand
 * keeps it as a member: two updaters, and the UPDATE fails.  The statement
 * was right and nothing of it happened; run again a moment later (the
 * aborted one gone) it succeeds.  So it is a serialization failure: the
 * transaction is retried like 40001 (test_svc::
 * pay_beside_rolled_back_updates_of_a_locked_account_never_fails). */
#define MULTIXACT_RACE "new multixact has more than one updating member"

static int set_pg_err(db_conn *c, const PGresult *res, rt_ctx *ctx, bz_error *err)
{
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg)
        msg = PQerrorMessage(c->pg);
    bz_err_kind k = st ? db__pg_kind(st) : BZ_ERR_CONNECTION;
    if (st && !strcmp(st, "XX000") && !strncmp(msg, MULTIXACT_RACE, sizeof MULTIXACT_RACE - 1))
        k = BZ_ERR_SERIALIZATION;
    int ret = -EIO;
    if (k == BZ_ERR_CANCELLED && rt_ctx_err(ctx) == ETIMEDOUT)
        k = BZ_ERR_TIMEOUT;
    if (k == BZ_ERR_CONNECTION) {
        c->broken = true;
        /* 25006 (read-only server) refuses a statement before it runs:
         * nothing happened, so the pool may run it again on a new
         * connection, as for one that never left (-ENOTCONN). */
        ret = st && !strcmp(st, "25006") ? -ENOTCONN : -ECONNRESET;
    } else if (k == BZ_ERR_CANCELLED) {
        ret = -ECANCELED;
    } else if (k == BZ_ERR_TIMEOUT) {
        ret = -ETIMEDOUT;
    } else if (k == BZ_ERR_SERIALIZATION || k == BZ_ERR_DEADLOCK) {
        ret = -EAGAIN;
    } else if (k == BZ_ERR_UNIQUE || k == BZ_ERR_FOREIGN_KEY || k == BZ_ERR_CHECK || k == BZ_ERR_INVALID) {
        ret = -EINVAL;
    }
    if (err) {
        size_t n = strlen(msg);
        while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
            n--;
        bz_err_set(err, k, "postgres: %.*s", (int)n, msg);
        if (st)
            snprintf(err->sqlstate, sizeof err->sqlstate, "%s", st);
    }
    return ret;
}

static int conn_broken(db_conn *c, bz_error *err, int ret)
{
    c->broken = true;
    const char *m = PQerrorMessage(c->pg);
    size_t n = strlen(m);
    while (n && m[n - 1] == '\n')
        n--;
    bz_err_set(err, BZ_ERR_CONNECTION, "postgres: %.*s", (int)n, n ? m : "connection lost");
    return ret;
}

/* PQcancel connects to the server and waits for it to close the socket,
 * with no timeout: against a frozen server it blocks until the server
 * wakes up, or for ever.  So it runs on a detached thread of its own (not
 * the shared offload pool), nobody waits for it, and at most CANCELS_MAX
 * are in flight.  The PGcancel is a copy of what it needs (address, backend
 * key): the connection itself may be closed meanwhile. */
static atomic_int cancels_running;

static void *cancel_thread(void *p)
{
    PGcancel *cn = p;
    char buf[256];
    PQcancel(cn, buf, sizeof buf);
    PQfreeCancel(cn);
    atomic_fetch_sub(&cancels_running, 1);
    return NULL;
}

/* Asks the server to cancel c's statement; true if the request was sent
 * off (it is not waited for). */
static bool send_cancel(db_conn *c)
{
    if (atomic_fetch_add(&cancels_running, 1) >= CANCELS_MAX) {
        atomic_fetch_sub(&cancels_running, 1);
        return false;
    }
    PGcancel *cn = PQgetCancel(c->pg);
    pthread_attr_t a;
    pthread_t t;
    bool ok = cn && pthread_attr_init(&a) == 0;
    if (ok) {
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&a, 256 * 1024);
        ok = pthread_create(&t, &a, cancel_thread, cn) == 0;
        pthread_attr_destroy(&a);
    }
    if (!ok) {
        if (cn)
            PQfreeCancel(cn);
        atomic_fetch_sub(&cancels_running, 1);
    }
    return ok;
}

/* One more write that the caller then waits on the server to answer
 * (db_stats.round_trips: what the pipelines save is counted, not guessed). */
static inline void round_trip(db_conn *c)
{
    atomic_fetch_add_explicit(&c->d->round_trips, 1, memory_order_relaxed);
}

/* Flushes the output buffer, parking on writability. */
static int flush(db_conn *c, rt_ctx *ctx, bz_error *err)
{
    for (;;) {
        int f = PQflush(c->pg);
        if (f == 0) {
            /* Everything is sent: the server owes an answer, whose bytes
             * arrive after this and raise a new readiness edge, whatever
             * was left unread in the socket before (see read_input). */
            c->pg_unsure = false;
            return 0;
        }
        if (f < 0)
            return conn_broken(c, err, -ECONNRESET);
        int r = rt_io_await_writable(&c->pgio, ctx, ctx ? BZ_NO_DEADLINE : bz_now_ns() + NO_CTX_NS);
        if (r) {
            /* Half a message may be on the wire: this connection is done. */
            c->broken = true;
            return bz_err_set(err, r == -ETIMEDOUT ? BZ_ERR_TIMEOUT : BZ_ERR_CANCELLED,
                              "postgres: gave up sending the statement"),
                   r;
        }
    }
}

/* The server did not answer in time (not even a cancel): the connection
 * is given up, and the caller told the database is unavailable. */
static int unresponsive(db_conn *c, bz_error *err)
{
    c->broken = true;
    c->hung = true;
    bz_err_set(err, BZ_ERR_CONNECTION, "postgres: the server did not answer in time; connection abandoned");
    return -ETIMEDOUT;
}

/* Waits until the socket has bytes (or news: EOF, an error) and hands
 * them to libpq: 0, -ECONNRESET when libpq found the connection broken,
 * or the wait's -ETIMEDOUT/-ECANCELED.
 *
 * libpq reads the socket itself, so the loop's readiness flag is not the
 * whole truth; rt_io_await_readable checks the fd with a poll(2) before it
 * parks — one system call per round trip that, right after a statement was
 * sent, practically always says "not yet".  Over a plain socket this wait
 * keeps the flag honest instead:
 *   - the flag is cleared just before libpq reads, so an edge for bytes
 *     that arrive after that read sets it again (the loop dispatches
 *     events only while this coroutine is parked: it cannot be lost);
 *   - libpq's read may stop before the socket is empty (its buffer was
 *     full), and bytes already there raise no new edge.  libpq reports a
 *     read that found the socket empty by leaving errno at EAGAIN (its
 *     socket read sets errno on every return, 0 after a successful read);
 *     until a read has shown that, c->pg_unsure makes the next wait read
 *     again rather than park;
 *   - after a whole statement is sent (flush), the server's answer is
 *     still to come, so its arrival is an edge: pg_unsure is cleared there
 *     and the common round trip costs the send, one park and one read.
 * Over TLS or GSSAPI the library buffers decrypted bytes the socket no
 * longer shows: there the poll stays (an encrypted connection's wait pays
 * it as before). */
static int read_input(db_conn *c, rt_ctx *ctx, int64_t deadline)
{
    if (PQsslInUse(c->pg) || PQgetgssctx(c->pg)) {
        int r = rt_io_await_readable(&c->pgio, ctx, deadline);
        if (r)
            return r;
        return PQconsumeInput(c->pg) ? 0 : -ECONNRESET;
    }
    if (!c->pg_unsure && !c->pgio.readable) {
        int r = rt_wait_readable(&c->pgio, ctx, deadline);
        if (r)
            return r;
    }
    c->pgio.readable = false;
    errno = 0;
    if (!PQconsumeInput(c->pg))
        return -ECONNRESET;
    c->pg_unsure = errno != EAGAIN && errno != EWOULDBLOCK;
    return 0;
}

/* Waits until a whole result is buffered.  If ctx ends first, cancels the
 * statement on the server and keeps waiting, for CANCEL_GRACE_NS, for it
 * to stop.  Without a context the wait is bounded by NO_CTX_NS. */
static int await(db_conn *c, rt_ctx *ctx, bool *cancelled, bz_error *err)
{
    int64_t deadline = ctx ? BZ_NO_DEADLINE : bz_now_ns() + NO_CTX_NS;
    rt_ctx *wctx = ctx;
    bool draining = false;
    while (PQisBusy(c->pg)) {
        int r = read_input(c, wctx, deadline);
        if (r == -ECONNRESET)
            return conn_broken(c, err, -ECONNRESET);
        if (r == 0)
            continue;
        if (!draining && (r == -ECANCELED || r == -ETIMEDOUT)) {
            *cancelled = true;
            draining = true;
            /* Past CANCELS_MAX cancels in flight none is sent; the
             * statement still gets the grace to end by itself.  (Giving up
             * at once called a live server unresponsive when a burst of
             * short deadlines — 1 ms gRPC calls — ended together, and that
             * opened the circuit breaker on a healthy database.) */
            (void)send_cancel(c);
            wctx = NULL;
            deadline = bz_now_ns() + CANCEL_GRACE_NS;
            continue;
        }
        /* the cancel was not confirmed in time: give the connection up */
        return unresponsive(c, err);
    }
    return 0;
}

/* Reads every result of the command; keeps the first error or the last
 * data/command result in *out. */
static int collect(db_conn *c, rt_ctx *ctx, PGresult **out, bz_error *err)
{
    bool cancelled = false;
    PGresult *keep = NULL, *errres = NULL;
    for (;;) {
        int r = await(c, ctx, &cancelled, err);
        if (r) {
            PQclear(keep);
            PQclear(errres);
            return r;
        }
        PGresult *res = PQgetResult(c->pg);
        if (!res)
            break;
        if (cancelled)
            /* A cancel request was sent off for this statement and may
             * still be on its way: it cancels whatever this backend runs
             * when it lands, which on a reused connection is the next
             * caller's statement ("cancelled" for a request that cancelled
             * nothing; 1 call in ~500 of a 1 ms-deadline flood).  So the
             * connection is not reused, as pgx closes one after a cancel. */
            c->broken = true;
        ExecStatusType s = PQresultStatus(res);
        if (s == PGRES_FATAL_ERROR || s == PGRES_BAD_RESPONSE || s == PGRES_NONFATAL_ERROR) {
            if (!errres && s != PGRES_NONFATAL_ERROR)
                errres = res;
            else
                PQclear(res);
        } else {
            PQclear(keep);
            keep = res;
        }
    }
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        PQclear(keep);
        PQclear(errres);
        return conn_broken(c, err, -ECONNRESET);
    }
    if (errres) {
        int r = set_pg_err(c, errres, ctx, err);
        PQclear(errres);
        PQclear(keep);
        return r;
    }
    if (cancelled) { /* finished before the cancel landed: still report it */
        PQclear(keep);
        int e = rt_ctx_err(ctx);
        return bz_err_set(err, e == ETIMEDOUT ? BZ_ERR_TIMEOUT : BZ_ERR_CANCELLED, "postgres: statement cancelled"),
               e == ETIMEDOUT ? -ETIMEDOUT : -ECANCELED;
    }
    *out = keep;
    return 0;
}

static int simple(db_conn *c, rt_ctx *ctx, const char *sql, PGresult **out, bz_error *err)
{
    int r = attach(c);
    if (r)
        return conn_broken(c, err, -ENOTCONN);
    if (c->pgio.hup)
        return conn_broken(c, err, -ENOTCONN);
    if (!PQsendQuery(c->pg, sql))
        return conn_broken(c, err, -ENOTCONN);
    round_trip(c);
    if ((r = flush(c, ctx, err)))
        return r;
    PGresult *res = NULL;
    r = collect(c, ctx, &res, err);
    if (out)
        *out = res;
    else
        PQclear(res);
    return r;
}

/* Server notices (e.g. "already exists, skipping") go to the debug log,
 * not straight to stderr as libpq would do. */
static void notice(void *arg, const char *msg)
{
    (void)arg;
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        n--;
    bz_log_dbg("postgres notice", BZ_F_STRN("msg", msg, n));
}

static int pg_connect(db *d, db_conn *c, rt_ctx *ctx, bz_error *err)
{
    c->pg = PQconnectStart(d->conninfo);
    if (!c->pg)
        abort();
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_broken(c, err, -ECONNREFUSED);
        PQfinish(c->pg);
        c->pg = NULL;
        return -ECONNREFUSED;
    }
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    int r = 0;
    while (st != PGRES_POLLING_OK) {
        if (st == PGRES_POLLING_FAILED) {
            r = -ECONNREFUSED;
            conn_broken(c, err, r);
            break;
        }
        /* With several hosts (or addresses) libpq closes one socket and
         * opens the next inside PQconnectPoll; the new socket often gets
         * the same number, and closing the old one took it out of the
         * epoll set.  So register afresh at every step of the connect. */
        if (c->pgio.loop)
            rt_io_detach(&c->pgio);
        if ((r = attach(c)) != 0)
            break;
        if (st == PGRES_POLLING_READING)
            r = rt_io_await_readable(&c->pgio, ctx, BZ_NO_DEADLINE);
        else
            r = rt_io_await_writable(&c->pgio, ctx, BZ_NO_DEADLINE);
        if (r) {
            /* A live server completes a connect in a few round trips: one
             * that outlasts the deadline is not answering (§10: 503
             * unavailable, not a timeout of the request's own making). */
            c->hung = r == -ETIMEDOUT;
            bz_err_set(err, r == -ETIMEDOUT ? BZ_ERR_CONNECTION : BZ_ERR_CANCELLED,
                       r == -ETIMEDOUT ? "postgres: the server did not complete the connect in time"
                                       : "postgres: connect cancelled");
            break;
        }
        st = PQconnectPoll(c->pg);
    }
    if (r == 0)
        PQsetNoticeProcessor(c->pg, notice, NULL);
    if (r == 0 && PQsetnonblocking(c->pg, 1) != 0)
        r = conn_broken(c, err, -EIO);
    if (r == 0)
        r = simple(c, ctx, "SET TIME ZONE 'UTC'", NULL, err);
    if (r) {
        if (c->pgio.loop)
            rt_io_detach(&c->pgio);
        PQfinish(c->pg);
        c->pg = NULL;
        return r;
    }
    return 0;
}

static void pg_close(db_conn *c)
{
    if (!c->pg)
        return;
    if (c->pgio.loop)
        rt_io_detach(&c->pgio);
    /* PQfinish sends Terminate on a non-blocking socket: it does not block */
    PQfinish(c->pg);
    for (int i = 0; i < c->nstmts; i++)
        free((void *)c->stmts[i].sql);
}

/* Text form of the arguments (binary for blobs).  Text values are copied
 * to be NUL-terminated. */
/* Text-format parameters.  Up to PARAMS_INLINE live in the struct (the
 * common case, no allocation); more (multi-row INSERTs) are allocated. */
#define PARAMS_INLINE 16
typedef struct {
    const char **vals;
    int *lens, *fmts;
    char (*small)[32];
    char **heap;
    int n;
    const char *ivals[PARAMS_INLINE];
    int ilens[PARAMS_INLINE], ifmts[PARAMS_INLINE];
    char ismall[PARAMS_INLINE][32];
    char *iheap[PARAMS_INLINE];
} params;

/* The one params of this thread: filled by to_params and given to libpq's
 * send, which never parks, so no other statement of this loop can use it
 * meanwhile.  Not on the stack: ~1 KiB there, twice on a pipeline's path
 * (pg_run, pg_batch), took a transfer's request coroutine further below
 * the part of its stack a pooled coroutine keeps (issue 18). */
static _Thread_local params x__params;

static void free_params(params *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->heap[i]);
    if (p->vals != p->ivals) {
        free(p->vals);
        free(p->lens);
        free(p->fmts);
        free(p->small);
        free(p->heap);
    }
}

static int to_params(const db_arg *args, int n, params *p)
{
    p->n = 0;
    if (n <= PARAMS_INLINE) {
        p->vals = p->ivals;
        p->lens = p->ilens;
        p->fmts = p->ifmts;
        p->small = p->ismall;
        p->heap = p->iheap;
    } else {
        p->vals = malloc((size_t)n * sizeof *p->vals);
        p->lens = malloc((size_t)n * sizeof *p->lens);
        p->fmts = malloc((size_t)n * sizeof *p->fmts);
        p->small = malloc((size_t)n * sizeof *p->small);
        p->heap = calloc((size_t)n, sizeof *p->heap);
        if (!p->vals || !p->lens || !p->fmts || !p->small || !p->heap)
            abort();
    }
    for (int i = 0; i < n; i++) {
        const db_arg *a = &args[i];
        p->heap[i] = NULL;
        p->n = i + 1;
        p->fmts[i] = 0;
        p->lens[i] = 0;
        switch (a->type) {
        case DB_T_NULL: p->vals[i] = NULL; break;
        case DB_T_INT:
            /* not snprintf: its machinery takes ~2 KiB of stack, at the
             * deepest point of a request's coroutine (issue 18) */
            p->small[i][bz_fmt_i64(p->small[i], a->v.i)] = '\0';
            p->vals[i] = p->small[i];
            break;
        case DB_T_BOOL: p->vals[i] = a->v.i ? "t" : "f"; break;
        case DB_T_DOUBLE:
            snprintf(p->small[i], 32, "%.17g", a->v.d);
            p->vals[i] = p->small[i];
            break;
        case DB_T_TIME:
            bz_fmt_rfc3339_us(p->small[i], a->v.i);
            p->vals[i] = p->small[i];
            break;
        case DB_T_TEXT:
            if (memchr(a->v.s.p, '\0', a->v.s.n))
                return -EINVAL; /* PostgreSQL text cannot hold NUL */
            p->heap[i] = malloc(a->v.s.n + 1);
            if (!p->heap[i])
                abort();
            memcpy(p->heap[i], a->v.s.p, a->v.s.n);
            p->heap[i][a->v.s.n] = '\0';
            p->vals[i] = p->heap[i];
            break;
        case DB_T_BLOB:
            p->vals[i] = a->v.s.p;
            p->lens[i] = (int)a->v.s.n;
            p->fmts[i] = 1;
            break;
        }
    }
    return 0;
}

static int pg_batch(db_conn *c, rt_ctx *ctx, db_step *st, int n, bool commit, bz_error *err);

static int pg_run(db_conn *c, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs, db_rows **rows,
                  int64_t *affected, bz_error *err)
{
    size_t n;
    uint64_t h = 0;
    /* statement_cache=off: nothing is prepared by name; each statement is
     * parsed, bound and run in one unnamed exchange (PQsendQueryParams),
     * which is all PgBouncer's transaction pooling can carry (a named
     * statement lives on one server connection, and the next transaction
     * may get another). */
    db_stmt *s = c->d->no_stmt_cache ? NULL : db__stmt_lookup(c, sql, &n, &h);
    if (c->begin_pending || (!s && !c->d->no_stmt_cache)) {
        /* A statement this connection has not prepared yet (Parse, then
         * Bind/Execute), or the first of a transaction (BEGIN before it):
         * one pipeline, one round trip, as for a prepared one. */
        db_step one = {.sql = sql, .args = args, .nargs = nargs, .want_rows = rows != NULL};
        int r = pg_batch(c, ctx, &one, 1, false, err);
        if (r)
            return r;
        if (affected)
            *affected = one.affected;
        if (rows)
            *rows = one.rows;
        return 0;
    }
    int r = attach(c);
    if (r || c->pgio.hup)
        return conn_broken(c, err, -ENOTCONN);
    params *p = &x__params;
    if ((r = to_params(args, nargs, p)) != 0) {
        free_params(p);
        return bz_err_set(err, BZ_ERR_INVALID, "postgres: bad argument (too many, or NUL in text)"), r;
    }
    int sent = s ? PQsendQueryPrepared(c->pg, s->u.pgname, nargs, p->vals, p->lens, p->fmts, 0)
                 : PQsendQueryParams(c->pg, sql, nargs, NULL, p->vals, p->lens, p->fmts, 0);
    free_params(p);
    if (!sent)
        return conn_broken(c, err, -ENOTCONN);
    round_trip(c);
    PGresult *res = NULL;
    if ((r = flush(c, ctx, err)) || (r = collect(c, ctx, &res, err))) {
        PQclear(res);
        return r;
    }
    if (affected) {
        const char *t = res ? PQcmdTuples(res) : "";
        *affected = *t ? strtoll(t, NULL, 10) : 0;
    }
    if (rows && res && PQresultStatus(res) == PGRES_TUPLES_OK) {
        db_rows *rw = db__rows_new(c->d, PQnfields(res));
        rw->nrows = PQntuples(res);
        rw->pg = res;
        *rows = rw;
    } else if (rows) {
        *rows = db__rows_new(c->d, 0);
        PQclear(res);
    } else {
        PQclear(res);
    }
    return 0;
}

/* ---- pipelines (db_batch, and a transaction's first statement) ----
 *
 * Everything is written before anything is read: BEGIN (when the
 * transaction has not sent it yet), for each step its Parse (the first
 * time this connection sees the text) and its Bind/Describe/Execute, then
 * COMMIT (commit), then one Sync; one flush, then the results in the order
 * sent.  After an error the server skips everything up to the Sync
 * (libpq: PGRES_PIPELINE_ABORTED), so "the first failure stops the rest"
 * is the server's own rule, and a Parse that was skipped leaves no
 * statement behind: its cache slot is emptied again. */
enum { P_BEGIN, P_PREPARE, P_EXEC, P_COMMIT };
typedef struct {
    int8_t kind;
    int8_t step;
} pcmd;

/* PostgreSQL text cannot hold NUL: checked before anything is sent, so a
 * bad argument never leaves half a pipeline on the wire. */
static bool args_ok(const db_arg *a, int n)
{
    for (int i = 0; i < n; i++)
        if (a[i].type == DB_T_TEXT && memchr(a[i].v.s.p, '\0', a[i].v.s.n))
            return false;
    return true;
}

static void unprepare(db_stmt *s)
{
    free((void *)s->sql);
    memset(s, 0, sizeof *s);
}

static void drop_rows(db_step *st, int n)
{
    for (int i = 0; i < n; i++) {
        if (st[i].rows) {
            PQclear(st[i].rows->pg);
            st[i].rows->pg = NULL;
            free(st[i].rows);
            st[i].rows = NULL;
        }
    }
}

static void take_result(db_conn *c, db_step *s, PGresult *res)
{
    const char *t = PQcmdTuples(res);
    s->affected = *t ? strtoll(t, NULL, 10) : 0;
    s->rc = 0;
    if (!s->want_rows) {
        PQclear(res);
    } else if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        s->rows = db__rows_new(c->d, PQnfields(res));
        s->rows->nrows = PQntuples(res);
        s->rows->pg = res;
    } else {
        s->rows = db__rows_new(c->d, 0);
        PQclear(res);
    }
}

static int pg_batch(db_conn *c, rt_ctx *ctx, db_step *st, int n, bool commit, bz_error *err)
{
    for (int i = 0; i < n; i++) {
        st[i].rc = DB_SKIPPED;
        st[i].rows = NULL;
        st[i].affected = 0;
    }
    if (n < 0 || n > DB_BATCH_MAX)
        return bz_err_set(err, BZ_ERR_INVALID, "postgres: a batch holds 0 to %d statements", DB_BATCH_MAX), -EINVAL;
    for (int i = 0; i < n; i++)
        if (!args_ok(st[i].args, st[i].nargs))
            return bz_err_set(err, BZ_ERR_INVALID, "postgres: bad argument (NUL in text)"), -EINVAL;
    int r = attach(c);
    if (r || c->pgio.hup)
        return conn_broken(c, err, -ENOTCONN);
    /* The statements' cache slots, filled now (a later step with the same
     * text finds its slot), emptied again if their Parse does not succeed.
     * An eviction's DEALLOCATE goes first, on its own (rare: more than
     * DB_STMT_CACHE texts on one connection). */
    db_stmt *stm[DB_BATCH_MAX];
    bool prep[DB_BATCH_MAX];
    for (int i = 0; i < n; i++) {
        stm[i] = NULL;
        prep[i] = false;
        if (c->d->no_stmt_cache)
            continue;
        size_t len;
        uint64_t h = 0;
        db_stmt *s = db__stmt_lookup(c, st[i].sql, &len, &h);
        if (!s) {
            db_stmt old;
            s = db__stmt_slot(c, &old);
            if (old.sql) {
                char dealloc[48];
                snprintf(dealloc, sizeof dealloc, "DEALLOCATE %s", old.u.pgname);
                free((void *)old.sql);
                memset(s, 0, sizeof *s);
                if ((r = simple(c, ctx, dealloc, NULL, err)) != 0) {
                    for (int j = 0; j < i; j++)
                        if (prep[j])
                            unprepare(stm[j]);
                    return r;
                }
            }
            char *copy = malloc(len + 1);
            if (!copy)
                abort();
            memcpy(copy, st[i].sql, len + 1);
            memset(s, 0, sizeof *s);
            s->sql = copy;
            s->caller = st[i].sql;
            s->sqllen = len;
            s->hash = h;
            snprintf(s->u.pgname, sizeof s->u.pgname, "b%d", ++c->pg_seq);
            s->nparams = st[i].nargs;
            s->used = ++c->clock;
            prep[i] = true;
        }
        stm[i] = s;
    }
    pcmd cmd[2 * DB_BATCH_MAX + 2];
    int nc = 0;
    bool ok = PQenterPipelineMode(c->pg) == 1;
    if (ok && c->begin_pending) {
        ok = PQsendQueryParams(c->pg, c->pg_begin, 0, NULL, NULL, NULL, NULL, 0);
        cmd[nc++] = (pcmd){P_BEGIN, -1};
        c->begin_pending = false;
    }
    for (int i = 0; ok && i < n; i++) {
        if (prep[i]) {
            ok = PQsendPrepare(c->pg, stm[i]->u.pgname, st[i].sql, st[i].nargs, NULL);
            cmd[nc++] = (pcmd){P_PREPARE, (int8_t)i};
        }
        params *p = &x__params;
        (void)to_params(st[i].args, st[i].nargs, p); /* cannot fail: args_ok */
        ok = ok && (stm[i] ? PQsendQueryPrepared(c->pg, stm[i]->u.pgname, st[i].nargs, p->vals, p->lens, p->fmts, 0)
                           : PQsendQueryParams(c->pg, st[i].sql, st[i].nargs, NULL, p->vals, p->lens, p->fmts, 0));
        free_params(p);
        cmd[nc++] = (pcmd){P_EXEC, (int8_t)i};
    }
    if (ok && commit) {
        ok = PQsendQueryParams(c->pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
        cmd[nc++] = (pcmd){P_COMMIT, -1};
    }
    ok = ok && PQpipelineSync(c->pg) == 1;
    if (!ok) {
        for (int i = 0; i < n; i++)
            if (prep[i])
                unprepare(stm[i]);
        return conn_broken(c, err, -ENOTCONN);
    }
    round_trip(c);
    if ((r = flush(c, ctx, err))) {
        for (int i = 0; i < n; i++)
            if (prep[i])
                unprepare(stm[i]);
        return r;
    }
    /* The results, command by command: each command's result is followed
     * by a NULL, the Sync by PGRES_PIPELINE_SYNC.  A command gives one
     * result, so the loop is bounded by the commands sent. */
    bool cancelled = false, synced = false, rolled_back = false;
    PGresult *errres = NULL;
    int errcmd = -1;
    int k = 0;
    for (int guard = 0; !synced && guard < 3 * nc + 4; guard++) {
        if ((r = await(c, ctx, &cancelled, err)) != 0)
            break;
        PGresult *res = PQgetResult(c->pg);
        if (!res) {
            if (PQstatus(c->pg) == CONNECTION_BAD || k >= nc) {
                r = conn_broken(c, err, -ECONNRESET);
                break;
            }
            k++;
            continue;
        }
        ExecStatusType s = PQresultStatus(res);
        if (s == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            synced = true;
            break;
        }
        if (k >= nc) {
            PQclear(res);
            r = conn_broken(c, err, -ECONNRESET);
            break;
        }
        pcmd m = cmd[k];
        if (s == PGRES_FATAL_ERROR || s == PGRES_BAD_RESPONSE) {
            if (!errres) {
                errres = res;
                errcmd = k;
            } else {
                PQclear(res);
            }
            if (m.kind == P_PREPARE) {
                unprepare(stm[m.step]);
                prep[m.step] = false;
            }
        } else if (s == PGRES_PIPELINE_ABORTED) {
            PQclear(res);
            if (m.kind == P_PREPARE) {
                unprepare(stm[m.step]);
                prep[m.step] = false;
            }
        } else if (m.kind == P_EXEC) {
            take_result(c, &st[m.step], res);
        } else {
            if (m.kind == P_COMMIT && !strcmp(PQcmdStatus(res), "ROLLBACK"))
                rolled_back = true; /* the transaction had failed before this batch */
            PQclear(res);
        }
    }
    if (cancelled)
        c->broken = true; /* a cancel may still land on the next statement (see collect) */
    if (r == 0 && !synced)
        r = conn_broken(c, err, -ECONNRESET);
    if (r == 0 && PQexitPipelineMode(c->pg) != 1)
        r = conn_broken(c, err, -ECONNRESET);
    if (r) {
        PQclear(errres);
        for (int i = 0; i < n; i++)
            if (prep[i] && c->broken)
                unprepare(stm[i]);
        drop_rows(st, n);
        return r;
    }
    if (errres) {
        r = set_pg_err(c, errres, ctx, err);
        PQclear(errres);
        if (cmd[errcmd].kind == P_PREPARE || cmd[errcmd].kind == P_EXEC)
            st[cmd[errcmd].step].rc = r;
        drop_rows(st, n);
        return r;
    }
    if (rolled_back) {
        drop_rows(st, n);
        return bz_err_set(err, BZ_ERR_CONFLICT, "postgres: the transaction had failed and was rolled back"), -EIO;
    }
    if (cancelled) { /* finished before the cancel landed: still report it */
        drop_rows(st, n);
        int e = rt_ctx_err(ctx);
        return bz_err_set(err, e == ETIMEDOUT ? BZ_ERR_TIMEOUT : BZ_ERR_CANCELLED, "postgres: statement cancelled"),
               e == ETIMEDOUT ? -ETIMEDOUT : -ECANCELED;
    }
    return 0;
}

static int pg_script(db_conn *c, rt_ctx *ctx, const char *sql, bz_error *err)
{
    if (c->begin_pending) {
        c->begin_pending = false;
        int r = simple(c, ctx, c->pg_begin, NULL, err);
        if (r)
            return r;
    }
    return simple(c, ctx, sql, NULL, err);
}

/* BEGIN is not sent here: it goes out in the same write as the
 * transaction's first statement (pg_batch), so it costs no round trip of
 * its own, and a transaction that runs nothing costs nothing. */
static int pg_begin(db_conn *c, rt_ctx *ctx, const db_tx_opts *o, bz_error *err)
{
    static const char *iso[] = {"", " ISOLATION LEVEL READ COMMITTED", " ISOLATION LEVEL REPEATABLE READ",
                                " ISOLATION LEVEL SERIALIZABLE"};
    /* stpcpy, not snprintf (~2 KiB of stack: see to_params); at most
     * 5 + 31 + 10 bytes and the NUL */
    stpcpy(stpcpy(stpcpy(c->pg_begin, "BEGIN"), iso[o->isolation]), o->read_only ? " READ ONLY" : "");
    c->begin_pending = true;
    return 0;
}

static int pg_commit(db_conn *c, rt_ctx *ctx, bz_error *err)
{
    if (c->begin_pending) { /* nothing ran: nothing to commit */
        c->begin_pending = false;
        return 0;
    }
    PGresult *res = NULL;
    int r = simple(c, ctx, "COMMIT", &res, err);
    if (r == 0 && res && !strcmp(PQcmdStatus(res), "ROLLBACK")) {
        /* COMMIT of a transaction that had failed: PostgreSQL rolled back */
        r = -EIO;
        bz_err_set(err, BZ_ERR_CONFLICT, "postgres: the transaction had failed and was rolled back");
    }
    PQclear(res);
    return r;
}

static int pg_rollback(db_conn *c, rt_ctx *ctx)
{
    if (c->begin_pending) { /* the BEGIN never left */
        c->begin_pending = false;
        return 0;
    }
    if (c->broken)
        return -ECONNRESET;
    if (ctx)
        return simple(c, ctx, "ROLLBACK", NULL, NULL);
    /* Called without a context (the caller's may have ended): bounded, and
     * a server that does not answer in time costs the connection, which
     * rolls back on the server when it closes. */
    rt_ctx rc;
    rt_ctx_init_timeout(&rc, NULL, ROLLBACK_NS);
    int r = simple(c, &rc, "ROLLBACK", NULL, NULL);
    rt_ctx_release(&rc);
    if (r)
        c->broken = true;
    return r;
}

const db_driver db__postgres_driver = {
    .name = "postgres",
    .connect = pg_connect,
    .close = pg_close,
    .run = pg_run,
    .script = pg_script,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .batch = pg_batch,
    .idle = pg_idle,
};

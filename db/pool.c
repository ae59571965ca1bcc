/* db/pool.c — the connection pool (database/sql semantics), statement
 * dispatch with safe retries, transactions, rows, and the statement cache
 * helpers the drivers share. */
#include "db/db-private.h"
#include <bazaar/db-stats.h>

#include <bazaar/clock.h>
#include <bazaar/log.h>
#include <bazaar/rand.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- open / close ------------------------------------------------------------------- */

db *db_open(const char *url, const db_opts *o, bz_error *err)
{
    db *d = calloc(1, sizeof *d);
    if (!d)
        abort();
    if (!strncmp(url, "sqlite://", 9) && url[9]) {
        d->dialect = DB_SQLITE;
        d->drv = &db__sqlite_driver;
        d->conninfo = strdup(url + 9);
    } else if (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13)) {
        d->dialect = DB_POSTGRES;
        d->drv = &db__postgres_driver;
        if (db__pq_load(err) != 0) {
            free(d);
            return NULL;
        }
        if (db__pg_url(url, &d->conninfo, &d->no_stmt_cache, err) != 0) {
            free(d);
            return NULL;
        }
        char *e = NULL;
        PQconninfoOption *opts = PQconninfoParse(d->conninfo, &e);
        if (!opts) {
            bz_err_set(err, BZ_ERR_INVALID, "bad PostgreSQL URL: %s", e ? e : "unparseable");
            PQfreemem(e);
            free(d->conninfo);
            free(d);
            return NULL;
        }
        PQconninfoFree(opts);
    } else {
        bz_err_set(err, BZ_ERR_INVALID, "unsupported database URL (want sqlite://PATH or postgres://...)");
        free(d);
        return NULL;
    }
    d->o = *o;
    if (d->o.max_open < 1)
        d->o.max_open = 1;
    if (d->o.max_idle > d->o.max_open)
        d->o.max_idle = d->o.max_open;
    if (d->o.max_idle < 0)
        d->o.max_idle = 0;
    pthread_mutex_init(&d->lk, NULL);
    rt_mutex_init(&d->lite_writer);
    pthread_mutex_init(&d->gc_lk, NULL);
    pthread_mutex_init(&d->sh_lk, NULL);
    d->no_group_commit = o && o->no_group_commit;
    d->st.max_open = d->o.max_open;
    bz_breaker_init(&d->brk, "db", 0, 0);
    return d;
}

void db_set_breaker(db *d, const char *name, int failures, int64_t open_ns)
{
    /* SQLite never hangs on a peer: no breaker */
    bz_breaker_init(&d->brk, name, d->dialect == DB_POSTGRES ? failures : 0, open_ns);
}

const bz_breaker *db_get_breaker(const db *d) { return &d->brk; }

db_dialect db_get_dialect(const db *d) { return d->dialect; }

static void close_conn(db_conn *c)
{
    c->d->drv->close(c);
    free(c);
}

void db_close(db *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->lk);
    d->closed = true;
    db_conn *idle = d->idle;
    d->idle = NULL;
    d->nopen -= d->nidle;
    d->nidle = 0;
    bool sweeping = d->sweeping;
    pthread_mutex_unlock(&d->lk);
    /* a probe in flight ends by its deadline (the probe interval) */
    while (atomic_load(&d->probes) > 0)
        rt_sleep(NULL, BZ_NS_PER_MS);
    if (sweeping) {
        rt_ctx_cancel(&d->sweep_ctx);
        /* the sweeper notices on its next tick and exits; wait for it */
        while (true) {
            pthread_mutex_lock(&d->lk);
            bool s = d->sweeping;
            pthread_mutex_unlock(&d->lk);
            if (!s)
                break;
            rt_sleep(NULL, BZ_NS_PER_MS);
        }
        rt_ctx_release(&d->sweep_ctx);
    }
    while (idle) {
        db_conn *n = idle->next;
        close_conn(idle);
        idle = n;
    }
    if (atomic_load(&d->open_rows))
        bz_log_warn("db: rows left open at close", BZ_F_INT("count", atomic_load(&d->open_rows)));
    if (d->ninuse)
        bz_log_warn("db: connections still in use at close", BZ_F_INT("count", d->ninuse));
    rt_mutex_destroy(&d->lite_writer);
    pthread_mutex_destroy(&d->gc_lk);
    pthread_mutex_destroy(&d->sh_lk);
    pthread_mutex_destroy(&d->lk);
    free(d->conninfo);
    free(d);
}

db_dialect db_q_dialect(db_q q) { return q.d ? q.d->dialect : q.tx->d->dialect; }

db_stats db_get_stats(db *d)
{
    pthread_mutex_lock(&d->lk);
    db_stats s = d->st;
    s.open = d->nopen;
    s.in_use = d->ninuse;
    s.idle = d->nidle;
    s.waiting = d->nwaiting;
    pthread_mutex_unlock(&d->lk);
    s.round_trips = atomic_load_explicit(&d->round_trips, memory_order_relaxed);
    return s;
}

/* ---- the sweep: closes idle connections past their idle time or lifetime ---- */

static bool expired(db *d, db_conn *c, int64_t now, bool *by_life)
{
    *by_life = d->o.max_lifetime_ns && now - c->created_ns >= d->o.max_lifetime_ns;
    bool by_idle = d->o.max_idle_time_ns && now - c->returned_ns >= d->o.max_idle_time_ns;
    return *by_life || by_idle;
}

static void sweep(void *p)
{
    db *d = p;
    int64_t lo = d->o.max_idle_time_ns, li = d->o.max_lifetime_ns;
    int64_t tick = lo && li ? (lo < li ? lo : li) : (lo ? lo : li);
    tick /= 4;
    if (tick < 10 * BZ_NS_PER_MS)
        tick = 10 * BZ_NS_PER_MS;
    if (tick > BZ_NS_PER_S)
        tick = BZ_NS_PER_S;
    while (rt_sleep(&d->sweep_ctx, tick) == 0) {
        db_conn *dead = NULL;
        int64_t now = bz_now_ns();
        pthread_mutex_lock(&d->lk);
        for (db_conn **pp = &d->idle; *pp;) {
            db_conn *c = *pp;
            bool by_life;
            if (expired(d, c, now, &by_life)) {
                *pp = c->next;
                d->nidle--;
                d->nopen--;
                if (by_life)
                    d->st.max_lifetime_closed++;
                else
                    d->st.max_idle_time_closed++;
                c->next = dead;
                dead = c;
            } else {
                pp = &c->next;
            }
        }
        /* Room opened up: a waiter may now open a connection. */
        if (dead)
            rt_waitq_wake_one(&d->waiters, 0, NULL);
        pthread_mutex_unlock(&d->lk);
        while (dead) {
            db_conn *n = dead->next;
            close_conn(dead);
            dead = n;
        }
    }
    pthread_mutex_lock(&d->lk);
    d->sweeping = false;
    pthread_mutex_unlock(&d->lk);
}

/* ---- the circuit breaker ----------------------------------------------------------
 *
 * acquire() asks the breaker before anything else (while it is closed: one
 * atomic load); refused, the caller fails at once.  The caller that is
 * handed the probe fails at once too, and starts the probe: a coroutine of
 * its own (probe_task) that runs SELECT 1 with the probe interval (≥ 1 s) as its
 * deadline — so no request ever waits on a server that may still be
 * frozen, and no request that joined another's work (a cache
 * single-flight) waits on it either.  (Off a loop, at start-up, the caller
 * probes itself.)  The probe is marked on the connection it gets, and
 * every call's outcome is reported by note(): a connection the driver
 * marked hung (no answer, not even to a cancel, or a connect that did not
 * finish) is a failure; any answer from the server — rows, or an error
 * with a SQLSTATE — is a success; anything else (cancelled by the caller,
 * a refused or reset connection) says nothing. */

/* A connect that timed out this soon says more about the caller's
 * nearly-spent deadline than about the server. */
#define HANG_MIN_NS (100 * BZ_NS_PER_MS)

/* When a call began, for note() (0 without a breaker: no clock read). */
static int64_t call_start(const db *d) { return d->brk.failures > 0 ? bz_now_ns() : 0; }

static void note(db *d, db_conn *c, int r, const bz_error *err, int64_t started)
{
    bool probe = c->probe;
    c->probe = false;
    if (d->brk.failures <= 0)
        return;
    bz_breaker_outcome o = c->hung                          ? BZ_BREAKER_FAILURE
                           : r == 0 || (err && err->sqlstate[0]) ? BZ_BREAKER_SUCCESS
                                                                 : BZ_BREAKER_NEUTRAL;
    c->hung = false; /* reported once, whatever else runs on this connection */
    bz_breaker_state was = bz_breaker_get_state(&d->brk);
    if (bz_breaker_report(&d->brk, probe, o, started, bz_now_ns())) {
        bz_log_warn("db: circuit breaker open: the server stopped answering in time; calls fail fast until a probe "
                    "gets an answer",
                    BZ_F_STR("breaker", d->brk.name), BZ_F_INT("probe_interval_ms", d->brk.open_ns / BZ_NS_PER_MS));
        /* callers parked for a connection fail fast too, instead of
         * waiting out their deadlines behind the stuck ones */
        pthread_mutex_lock(&d->lk);
        rt_waitq_wake_all(&d->waiters, 0);
        pthread_mutex_unlock(&d->lk);
    } else if (was != BZ_BREAKER_CLOSED && bz_breaker_get_state(&d->brk) == BZ_BREAKER_CLOSED) {
        bz_log_info("db: circuit breaker closed: the server answers again", BZ_F_STR("breaker", d->brk.name));
    }
}

static int acquire_as(db *d, rt_ctx *ctx, db_conn **out, bz_error *err, bool probe);

static void release(db_conn *c);

static void probe_task(void *p)
{
    db *d = p;
    rt_ctx ctx;
    rt_ctx_init_timeout(&ctx, NULL, bz_breaker_probe_timeout(&d->brk));
    bz_error e;
    int64_t t0 = bz_now_ns();
    db_conn *c;
    /* acquire_as reports a failed connect, or a wait for a slot that came
     * to nothing, itself */
    if (acquire_as(d, &ctx, &c, &e, true) == 0) {
        int r = d->drv->run(c, &ctx, "SELECT 1", NULL, 0, NULL, NULL, &e);
        note(d, c, r, &e, t0);
        release(c);
    }
    rt_ctx_release(&ctx);
    atomic_fetch_sub(&d->probes, 1);
}

static int fail_fast(db *d, int64_t retry_ns, bz_error *err)
{
    bz_err_set(err, BZ_ERR_UNAVAILABLE,
               "%s: the database stopped answering in time; failing fast (circuit breaker open) until a probe gets "
               "an answer",
               d->brk.name);
    if (err)
        err->retry_ms = (int)((retry_ns + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS);
    return -EAGAIN;
}

/* ---- acquire / release -------------------------------------------------------------- */

static int acquire(db *d, rt_ctx *ctx, db_conn **out, bz_error *err) { return acquire_as(d, ctx, out, err, false); }

/* probe: the caller is the breaker's probe already (never refused). */
static int acquire_as(db *d, rt_ctx *ctx, db_conn **out, bz_error *err, bool probe)
{
    bool waited = false;
    int64_t t0 = 0;
    pthread_mutex_lock(&d->lk);
    if (!d->sweeping && !d->closed && (d->o.max_idle_time_ns || d->o.max_lifetime_ns)) {
        d->sweeping = true;
        rt_ctx_init(&d->sweep_ctx, NULL);
        rt_go(sweep, d);
    }
    for (;;) {
        if (d->closed) {
            pthread_mutex_unlock(&d->lk);
            if (probe)
                bz_breaker_report(&d->brk, true, BZ_BREAKER_NEUTRAL, 0, 0);
            return bz_err_set(err, BZ_ERR_UNAVAILABLE, "database pool is closed"), -ESHUTDOWN;
        }
        if (!probe && bz_breaker_get_state(&d->brk) != BZ_BREAKER_CLOSED) {
            int64_t retry = 0;
            bz_breaker_verdict v = bz_breaker_allow(&d->brk, bz_now_ns(), &retry);
            if (v == BZ_BREAKER_PROBE && rt_loop_current()) {
                atomic_fetch_add(&d->probes, 1);
                rt_go(probe_task, d);
                v = BZ_BREAKER_REJECT;
                retry = d->brk.open_ns;
            }
            if (v == BZ_BREAKER_REJECT) {
                if (waited) {
                    d->st.wait_count++;
                    d->st.wait_ns += bz_now_ns() - t0;
                }
                pthread_mutex_unlock(&d->lk);
                return fail_fast(d, retry, err);
            }
            probe = v == BZ_BREAKER_PROBE;
        }
        int64_t now = rt_now();
        while (d->idle) {
            db_conn *c = d->idle;
            d->idle = c->next;
            d->nidle--;
            bool by_life;
            if (expired(d, c, now, &by_life)) {
                d->nopen--;
                if (by_life)
                    d->st.max_lifetime_closed++;
                else
                    d->st.max_idle_time_closed++;
                pthread_mutex_unlock(&d->lk);
                close_conn(c);
                pthread_mutex_lock(&d->lk);
                continue;
            }
            d->ninuse++;
            if (waited) {
                d->st.wait_count++;
                d->st.wait_ns += bz_now_ns() - t0;
            }
            pthread_mutex_unlock(&d->lk);
            c->probe = probe;
            *out = c;
            return 0;
        }
        if (d->nopen < d->o.max_open) {
            d->nopen++;
            d->ninuse++;
            if (waited) {
                d->st.wait_count++;
                d->st.wait_ns += bz_now_ns() - t0;
            }
            pthread_mutex_unlock(&d->lk);
            db_conn *c = calloc(1, sizeof *c);
            if (!c)
                abort();
            c->d = d;
            c->created_ns = c->returned_ns = bz_now_ns();
            c->pgio.fd = -1;
            c->probe = probe;
            int r = d->drv->connect(d, c, ctx, err);
            if (c->hung && bz_now_ns() - c->created_ns < HANG_MIN_NS)
                c->hung = false;
            note(d, c, r, err, c->created_ns); /* a connect is a call: answered, hung or refused */
            if (r) {
                free(c);
                pthread_mutex_lock(&d->lk);
                d->nopen--;
                d->ninuse--;
                rt_waitq_wake_one(&d->waiters, 0, NULL); /* let another try */
                pthread_mutex_unlock(&d->lk);
                return r;
            }
            *out = c;
            return 0;
        }
        if (!waited) {
            waited = true;
            t0 = bz_now_ns();
        }
        void *handed = NULL;
        d->nwaiting++;
        rt_park_reason("db pool wait");
        int r = rt_waitq_wait(&d->waiters, &d->lk, ctx, BZ_NO_DEADLINE, &handed);
        d->nwaiting--;
        if (r) {
            d->st.wait_count++;
            d->st.wait_ns += bz_now_ns() - t0;
            pthread_mutex_unlock(&d->lk);
            if (probe)
                bz_breaker_report(&d->brk, true, BZ_BREAKER_NEUTRAL, 0, 0);
            /* No connection came free before the deadline: the database
             * could not serve us in time (every connection busy or stuck),
             * which is an outage (503 unavailable), not a request that took
             * too long by its own doing. */
            if (r == -ETIMEDOUT)
                return bz_err_set(err, BZ_ERR_UNAVAILABLE,
                                  "no database connection came free before the deadline (pool exhausted)"),
                       r;
            return bz_err_set(err, BZ_ERR_CANCELLED, "gave up waiting for a database connection (cancelled)"), r;
        }
        if (handed) { /* a releaser gave us its connection directly */
            d->st.wait_count++;
            d->st.wait_ns += bz_now_ns() - t0;
            pthread_mutex_unlock(&d->lk);
            ((db_conn *)handed)->probe = probe;
            *out = handed;
            return 0;
        }
        /* woken without a connection: room to open one; loop */
    }
}

static void release(db_conn *c)
{
    db *d = c->d;
    if (c->probe) /* a probe whose call reported nothing */
        note(d, c, -ECANCELED, NULL, 0);
    if (d->drv->idle && !c->broken)
        d->drv->idle(c);
    int64_t now = rt_now();
    c->returned_ns = now;
    pthread_mutex_lock(&d->lk);
    d->ninuse--;
    bool by_life = false;
    bool drop = c->broken || c->in_tx || d->closed ||
                (d->o.max_lifetime_ns && now - c->created_ns >= d->o.max_lifetime_ns && (by_life = true));
    if (drop) {
        d->nopen--;
        if (by_life)
            d->st.max_lifetime_closed++;
        rt_waitq_wake_one(&d->waiters, 0, NULL);
        pthread_mutex_unlock(&d->lk);
        close_conn(c);
        return;
    }
    d->ninuse++; /* counted as in use by whoever we hand it to */
    if (rt_waitq_wake_one(&d->waiters, 0, c)) {
        pthread_mutex_unlock(&d->lk);
        return;
    }
    d->ninuse--;
    if (d->nidle >= d->o.max_idle) {
        d->nopen--;
        d->st.max_idle_closed++;
        pthread_mutex_unlock(&d->lk);
        close_conn(c);
        return;
    }
    c->next = d->idle; /* LIFO: the warmest connection is reused first */
    d->idle = c;
    d->nidle++;
    pthread_mutex_unlock(&d->lk);
}

int db_ping(db *d, rt_ctx *ctx, bz_error *err)
{
    db_rows *rows = NULL;
    int r = db_query(DB(d), ctx, "SELECT 1", NULL, 0, &rows, err);
    if (rows)
        db_rows_close(rows);
    return r;
}

/* ---- statements ----------------------------------------------------------------------- */

/* A statement that cannot have changed anything, so running it again after
 * a lost connection is safe. */
static bool read_only_sql(const char *sql)
{
    while (*sql == ' ' || *sql == '\n' || *sql == '\t' || *sql == '(')
        sql++;
    return !strncasecmp(sql, "SELECT", 6) || !strncasecmp(sql, "SHOW", 4) || !strncasecmp(sql, "EXPLAIN", 7) ||
           !strncasecmp(sql, "VALUES", 6);
}

static int ctx_ended(rt_ctx *ctx, bz_error *err)
{
    int e = rt_ctx_err(ctx);
    if (!e)
        return 0;
    bz_err_set(err, e == ETIMEDOUT ? BZ_ERR_TIMEOUT : BZ_ERR_CANCELLED, "context ended before the statement ran");
    return -e;
}

static int run1(db_q q, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs, db_rows **rows,
                int64_t *affected, int limit, bz_error *err)
{
    bz_err_clear(err);
    if (rows)
        *rows = NULL;
    int e = ctx_ended(ctx, err);
    if (e)
        return e;
    if (q.tx) {
        if (q.tx->done)
            return bz_err_set(err, BZ_ERR_INVALID, "transaction already ended"), -EINVAL;
        if (q.tx->sealed)
            return bz_err_set(err, BZ_ERR_INVALID, "transaction already committed (DB_BATCH_COMMIT)"), -EINVAL;
        q.tx->c->row_limit = limit;
        int64_t t0 = call_start(q.tx->d);
        int r = q.tx->d->drv->run(q.tx->c, ctx, sql, args, nargs, rows, affected, err);
        note(q.tx->d, q.tx->c, r, err, t0);
        return r;
    }
    db *d = q.d;
    bz_error local;
    if (!err)
        err = &local;
    /* A connection found dead is replaced; the statement is re-run only
     * when that cannot repeat a write: it never reached the server
     * (-ENOTCONN) or it only reads.  A failed connect is tried again too
     * (nothing was sent), as database/sql does with ErrBadConn. */
    int64_t t0 = call_start(d);
    for (int attempt = 0;; attempt++) {
        db_conn *c;
        int r = acquire(d, ctx, &c, err);
        if (r) {
            if (attempt >= 2 || err->kind != BZ_ERR_CONNECTION)
                return r;
            bz_log_warn("db: connect failed, trying again", BZ_F_STR("error", err->msg));
            bz_err_clear(err);
            continue;
        }
        c->row_limit = limit;
        r = d->drv->run(c, ctx, sql, args, nargs, rows, affected, err);
        note(d, c, r, err, t0);
        bool broken = c->broken;
        release(c);
        if (r == 0 || attempt >= 2 || !broken)
            return r;
        if (!(r == -ENOTCONN || (r == -ECONNRESET && read_only_sql(sql))))
            return r;
        bz_log_warn("db: connection lost, retrying on a new one", BZ_F_STR("error", err->msg));
        bz_err_clear(err);
    }
}

/* Every statement, timed and counted under its name (db/stats.c). */
static int run(db_q q, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs, db_rows **rows,
               int64_t *affected, int limit, bz_error *err)
{
    db__probe p;
    db__probe_begin(&p, sql);
    int64_t n = -1;
    int r = run1(q, ctx, sql, args, nargs, rows, rows ? affected : affected ? affected : &n, limit, err);
    db__probe_end(&p, r, r != 0 ? -1 : rows ? (*rows ? db_rows_count(*rows) : 0) : affected ? *affected : n);
    return r;
}

int db_exec(db_q q, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs, int64_t *affected,
            bz_error *err)
{
    return run(q, ctx, sql, args, nargs, NULL, affected, 0, err);
}

static int query(db_q q, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs, db_rows **rows, int limit,
                 bz_error *err)
{
    int r = run(q, ctx, sql, args, nargs, rows, NULL, limit, err);
    if (r == 0 && *rows)
        atomic_fetch_add_explicit(&(q.tx ? q.tx->d : q.d)->open_rows, 1, memory_order_relaxed);
    return r;
}

int db_query(db_q q, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs, db_rows **rows,
             bz_error *err)
{
    return query(q, ctx, sql, args, nargs, rows, 0, err);
}

int db_query_row(db_q q, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs, db_rows **rows,
                 bz_error *err)
{
    /* Like Go's QueryRow, extra rows are ignored: a read stops at the first. */
    int r = query(q, ctx, sql, args, nargs, rows, 1, err);
    if (r)
        return r;
    if (!db_rows_next(*rows)) {
        db_rows_close(*rows);
        *rows = NULL;
        return DB_NO_ROWS;
    }
    return 0;
}

int db_batch(db_tx *tx, rt_ctx *ctx, db_step *st, int n, unsigned flags, bz_error *err)
{
    bz_err_clear(err);
    for (int i = 0; i < n; i++) {
        st[i].rc = DB_SKIPPED;
        st[i].rows = NULL;
        st[i].affected = 0;
    }
    if (tx->done || tx->sealed)
        return bz_err_set(err, BZ_ERR_INVALID, "transaction already ended"), -EINVAL;
    if (n < 0 || n > DB_BATCH_MAX)
        return bz_err_set(err, BZ_ERR_INVALID, "a batch holds 0 to %d statements", DB_BATCH_MAX), -EINVAL;
    int e = ctx_ended(ctx, err);
    if (e)
        return e;
    db *d = tx->d;
    /* A few probes on the stack, more (up to DB_BATCH_MAX) on the heap:
     * all 32 there (1 KiB) sat at the deepest point of a transfer's
     * request coroutine (issue 18). */
    db__probe pin[4], *p = pin;
    if (n > (int)(sizeof pin / sizeof pin[0]) && !(p = malloc((size_t)n * sizeof *p)))
        abort();
    for (int i = 0; i < n; i++)
        db__probe_begin(&p[i], st[i].sql);
    int64_t t0 = call_start(d);
    bool commit = (flags & DB_BATCH_COMMIT) && d->drv->batch;
    int r = 0;
    if (d->drv->batch) {
        r = d->drv->batch(tx->c, ctx, st, n, commit, err);
    } else { /* SQLite: nothing to save; one after the other */
        for (int i = 0; i < n && r == 0; i++) {
            tx->c->row_limit = 0;
            r = d->drv->run(tx->c, ctx, st[i].sql, st[i].args, st[i].nargs, st[i].want_rows ? &st[i].rows : NULL,
                            &st[i].affected, err);
            st[i].rc = r;
        }
        if (r) {
            for (int i = 0; i < n; i++) {
                if (st[i].rows) {
                    atomic_fetch_add_explicit(&d->open_rows, 1, memory_order_relaxed);
                    db_rows_close(st[i].rows);
                    st[i].rows = NULL;
                }
            }
        }
    }
    note(d, tx->c, r, err, t0);
    /* statistics: each statement counted, the batch's time shared */
    int ran = 0;
    for (int i = 0; i < n; i++)
        ran += st[i].rc != DB_SKIPPED;
    for (int i = n - 1; i >= 0; i--) { /* notes restored in reverse */
        if (st[i].rc == DB_SKIPPED) {
            rt_note_restore(p[i].prev);
            continue;
        }
        if (ran > 1)
            p[i].t0 += (bz_now_ns() - p[i].t0) * (ran - 1) / ran;
        db__probe_end(&p[i], st[i].rc, st[i].rc ? -1 : st[i].rows ? db_rows_count(st[i].rows) : st[i].affected);
        if (st[i].rows)
            atomic_fetch_add_explicit(&d->open_rows, 1, memory_order_relaxed);
    }
    if (p != pin)
        free(p);
    if (r == 0 && (flags & DB_BATCH_COMMIT)) {
        tx->sealed = true;        /* only db_commit may follow */
        tx->committed = commit;   /* PostgreSQL: already done */
    }
    return r;
}

int db_exec_script(db_q q, rt_ctx *ctx, const char *sql, bz_error *err)
{
    bz_err_clear(err);
    db *d = q.tx ? q.tx->d : q.d;
    int64_t t0 = call_start(d);
    if (q.tx) {
        int r = d->drv->script(q.tx->c, ctx, sql, err);
        note(d, q.tx->c, r, err, t0);
        return r;
    }
    db_conn *c;
    int r = acquire(d, ctx, &c, err);
    if (r)
        return r;
    r = d->drv->script(c, ctx, sql, err);
    note(d, c, r, err, t0);
    release(c);
    return r;
}

/* ---- transactions -------------------------------------------------------------------------- */

int db_begin(db *d, rt_ctx *ctx, const db_tx_opts *o, db_tx **out, bz_error *err)
{
    static const db_tx_opts defaults = {0};
    if (!o)
        o = &defaults;
    bz_err_clear(err);
    db_tx *tx = calloc(1, sizeof *tx);
    if (!tx)
        abort();
    tx->d = d;
    tx->ctx = ctx;
    int64_t t0 = call_start(d);
    int r = acquire(d, ctx, &tx->c, err);
    if (r) {
        free(tx);
        return r;
    }
    /* SQLite has one writer: queue write transactions here, parked, in
     * arrival order, rather than spinning on SQLITE_BUSY.  Taken after the
     * connection, in the same order as autocommit writes take them (a
     * connection, then the writer lock), so the two never deadlock. */
    if (d->dialect == DB_SQLITE && !o->read_only) {
        r = rt_mutex_lock(&d->lite_writer, ctx);
        if (r) {
            release(tx->c);
            free(tx);
            return bz_err_set(err, r == -ETIMEDOUT ? BZ_ERR_TIMEOUT : BZ_ERR_CANCELLED,
                              "gave up waiting for the database writer"),
                   r;
        }
        tx->writer = true;
    }
    r = d->drv->begin(tx->c, ctx, o, err);
    if (r || !tx->c->begin_pending) /* a BEGIN not sent yet had no answer to report */
        note(d, tx->c, r, err, t0);
    if (r) {
        if (tx->writer)
            rt_mutex_unlock(&d->lite_writer);
        release(tx->c);
        free(tx);
        return r;
    }
    tx->c->in_tx = true;
    *out = tx;
    return 0;
}

/* Gives the connection (and SQLite's writer lock) back; the struct stays
 * until db_rollback frees it. */
static void tx_end(db_tx *tx)
{
    tx->done = true;
    if (tx->writer)
        rt_mutex_unlock(&tx->d->lite_writer);
    tx->writer = false;
    release(tx->c);
    tx->c = NULL;
}

int db_commit(db_tx *tx, bz_error *err)
{
    if (tx->done)
        return bz_err_set(err, BZ_ERR_INVALID, "transaction already ended"), -EINVAL;
    if (tx->committed) { /* by its last db_batch (DB_BATCH_COMMIT) */
        tx->c->in_tx = false;
        tx_end(tx);
        return 0;
    }
    int64_t t0 = call_start(tx->d);
    int r = tx->d->drv->commit(tx->c, tx->ctx, err);
    note(tx->d, tx->c, r, err, t0);
    if (r == 0) {
        tx->c->in_tx = false;
    } else if (tx->d->drv->rollback(tx->c, NULL) == 0) {
        tx->c->in_tx = false; /* failed commit rolled back; connection clean */
    }
    note(tx->d, tx->c, -ECANCELED, NULL, t0); /* only a rollback that hung counts */
    tx_end(tx);
    return r;
}

int db_rollback(db_tx *tx)
{
    if (!tx)
        return 0;
    if (!tx->done) {
        /* Roll back even if the caller's context ended: the connection must
         * come back clean (or be discarded). */
        int64_t t0 = call_start(tx->d);
        if (tx->d->drv->rollback(tx->c, NULL) == 0)
            tx->c->in_tx = false;
        note(tx->d, tx->c, -ECANCELED, NULL, t0); /* only a rollback that hung counts */
        tx_end(tx);
    }
    free(tx);
    return 0;
}

void db_tx_cleanup(db_tx **tx)
{
    db_rollback(*tx);
    *tx = NULL;
}

static int64_t jitter_ns(int64_t max) { return max > 0 ? (int64_t)(bz_rand64() % (uint64_t)max) : 0; }

#define TX_ATTEMPTS 20

int db_run_tx(db *d, rt_ctx *ctx, const db_tx_opts *o, db_tx_fn fn, void *arg, bz_error *err)
{
    if (d->dialect == DB_SQLITE && !(o && o->read_only) && !d->no_group_commit)
        return db__group_tx(d, ctx, fn, arg, err);
    int64_t backoff = BZ_NS_PER_MS;
    for (int attempt = 1;; attempt++) {
        db_tx *tx;
        int r = db_begin(d, ctx, o, &tx, err);
        if (r == 0) {
            r = fn(tx, ctx, arg, err);
            if (r == 0)
                r = db_commit(tx, err);
            db_rollback(tx); /* after a commit: only frees */
        }
        if (r == 0)
            return 0;
        bool retry = err && (err->kind == BZ_ERR_SERIALIZATION || err->kind == BZ_ERR_DEADLOCK);
        if (!retry)
            return r;
        if (attempt == TX_ATTEMPTS) {
            err->kind = BZ_ERR_SERIALIZATION;
            return r;
        }
        /* full jitter: sleep a random time below the current cap */
        int s = rt_sleep(ctx, 1 + jitter_ns(backoff));
        if (s)
            return bz_err_set(err, s == -ETIMEDOUT ? BZ_ERR_TIMEOUT : BZ_ERR_CANCELLED,
                              "transaction retries stopped by the context"),
                   s;
        if (backoff < 50 * BZ_NS_PER_MS)
            backoff *= 2;
    }
}

/* ---- rows ------------------------------------------------------------------------------------ */

/* One spare rows struct per thread: the common one-row query then does
 * no malloc/free at all. */
static _Thread_local db_rows *spare_rows;

static pthread_key_t spare_key;
static void free_spare(void *unused)
{
    (void)unused;
    free(spare_rows);
    spare_rows = NULL;
}
static void make_key(void) { pthread_key_create(&spare_key, free_spare); }
static pthread_key_t key_get(void) { return spare_key; }

db_rows *db__rows_new(db *d, int ncols)
{
    db_rows *r = spare_rows;
    spare_rows = NULL;
    if (!r)
        r = malloc(sizeof *r);
    if (!r)
        abort();
    r->d = d;
    r->ncols = ncols;
    r->nrows = 0;
    r->cur = -1;
    r->cells = r->inline_cells;
    r->cap = DB_ROWS_INLINE_CELLS;
    r->text = r->inline_text;
    r->text_len = 0;
    r->text_cap = DB_ROWS_INLINE_TEXT;
    r->pg = NULL;
    r->pg_copy = false;
    return r;
}

size_t db__rows_text(db_rows *r, const void *p, size_t n)
{
    if (r->text_len + n + 1 > r->text_cap) {
        size_t cap = r->text_cap * 2;
        while (cap < r->text_len + n + 1)
            cap *= 2;
        char *t = r->text == r->inline_text ? malloc(cap) : realloc(r->text, cap);
        if (!t)
            abort();
        if (r->text == r->inline_text)
            memcpy(t, r->inline_text, r->text_len);
        r->text = t;
        r->text_cap = cap;
    }
    size_t off = r->text_len;
    if (n)
        memcpy(r->text + off, p, n);
    r->text[off + n] = '\0';
    r->text_len += n + 1;
    return off;
}

db_cell *db__rows_add(db_rows *r)
{
    size_t need = (size_t)(r->nrows + 1) * (size_t)(r->ncols ? r->ncols : 1);
    if (need > r->cap) {
        size_t cap = need * 2;
        db_cell *c = r->cells == r->inline_cells ? malloc(cap * sizeof *c) : realloc(r->cells, cap * sizeof *c);
        if (!c)
            abort();
        if (r->cells == r->inline_cells)
            memcpy(c, r->inline_cells, (size_t)r->nrows * (size_t)r->ncols * sizeof *c);
        r->cells = c;
        r->cap = cap;
    }
    db_cell *c = &r->cells[(size_t)r->nrows * (size_t)r->ncols];
    memset(c, 0, (size_t)r->ncols * sizeof *c);
    r->nrows++;
    return c;
}

db_rows *db__rows_copy_row(const db_rows *src, int row)
{
    db_rows *r = db__rows_new(src->d, src->ncols);
    db_cell *c = db__rows_add(r);
    for (int col = 0; col < src->ncols; col++) {
        if (src->pg) {
            /* every value as its text, as the result holds it: the
             * readers parse it as they would there (r->pg_copy) */
            if (PQgetisnull(src->pg, row, col))
                continue; /* db__rows_add zeroed it: DB_T_NULL */
            size_t n = (size_t)PQgetlength(src->pg, row, col);
            c[col] = (db_cell){.type = DB_T_TEXT, .off = db__rows_text(r, PQgetvalue(src->pg, row, col), n), .len = n};
        } else {
            const db_cell *s = &src->cells[(size_t)row * (size_t)src->ncols + (size_t)col];
            c[col] = *s;
            if (s->type == DB_T_TEXT || s->type == DB_T_BLOB)
                c[col].off = db__rows_text(r, src->text + s->off, s->len);
        }
    }
    r->pg_copy = src->pg != NULL || src->pg_copy;
    r->cur = 0;
    if (r->d)
        atomic_fetch_add_explicit(&r->d->open_rows, 1, memory_order_relaxed);
    return r;
}

bool db_rows_next(db_rows *r)
{
    if (!r || r->cur + 1 >= r->nrows)
        return false;
    r->cur++;
    return true;
}

int db_rows_count(const db_rows *r) { return r ? r->nrows : 0; }
int db_rows_columns(const db_rows *r) { return r ? r->ncols : 0; }

static bool in_range(const db_rows *r, int col) { return r && r->cur >= 0 && col >= 0 && col < r->ncols; }

bool db_col_is_null(const db_rows *r, int col)
{
    if (!in_range(r, col))
        return true;
    if (r->pg)
        return PQgetisnull(r->pg, r->cur, col);
    return r->cells[(size_t)r->cur * (size_t)r->ncols + (size_t)col].type == DB_T_NULL;
}

const char *db_col_text(const db_rows *r, int col, size_t *len)
{
    if (len)
        *len = 0;
    /* a NULL cell of ours has type DB_T_NULL: the checks below cover it */
    if (!in_range(r, col) || (r->pg && PQgetisnull(r->pg, r->cur, col)))
        return "";
    if (r->pg) {
        if (len)
            *len = (size_t)PQgetlength(r->pg, r->cur, col);
        return PQgetvalue(r->pg, r->cur, col);
    }
    const db_cell *c = &r->cells[(size_t)r->cur * (size_t)r->ncols + (size_t)col];
    if (c->type == DB_T_TEXT || c->type == DB_T_BLOB) {
        if (len)
            *len = c->len;
        return r->text + c->off;
    }
    return "";
}

int64_t db_col_int(const db_rows *r, int col)
{
    if (!in_range(r, col) || (r->pg && PQgetisnull(r->pg, r->cur, col)))
        return 0;
    if (r->pg) {
        const char *v = PQgetvalue(r->pg, r->cur, col);
        if (v[0] == 't' && v[1] == 0)
            return 1;
        return strtoll(v, NULL, 10);
    }
    const db_cell *c = &r->cells[(size_t)r->cur * (size_t)r->ncols + (size_t)col];
    if (c->type == DB_T_INT)
        return c->i;
    if (c->type == DB_T_DOUBLE)
        return (int64_t)c->f;
    if (c->type == DB_T_TEXT) {
        const char *v = r->text + c->off;
        if (r->pg_copy && v[0] == 't' && v[1] == 0) /* a boolean, as from the result */
            return 1;
        return strtoll(v, NULL, 10);
    }
    return 0;
}

double db_col_double(const db_rows *r, int col)
{
    if (!in_range(r, col) || (r->pg && PQgetisnull(r->pg, r->cur, col)))
        return 0;
    if (r->pg)
        return strtod(PQgetvalue(r->pg, r->cur, col), NULL);
    const db_cell *c = &r->cells[(size_t)r->cur * (size_t)r->ncols + (size_t)col];
    if (c->type == DB_T_DOUBLE)
        return c->f;
    if (c->type == DB_T_INT)
        return (double)c->i;
    if (c->type == DB_T_TEXT)
        return strtod(r->text + c->off, NULL);
    return 0;
}

bool db_col_bool(const db_rows *r, int col) { return db_col_int(r, col) != 0; }

int64_t db_col_time(const db_rows *r, int col)
{
    size_t n;
    const char *s = db_col_text(r, col, &n);
    int64_t us;
    if (n == 0) {
        /* SQLite may hold unix seconds as an integer */
        return (in_range(r, col) && !db_col_is_null(r, col)) ? db_col_int(r, col) * 1000000 : 0;
    }
    return db__parse_time(s, n, &us) ? us : 0;
}

void db_rows_close(db_rows *r)
{
    if (!r)
        return;
    if (r->d)
        atomic_fetch_sub_explicit(&r->d->open_rows, 1, memory_order_relaxed);
    if (r->pg)
        PQclear(r->pg);
    if (r->cells != r->inline_cells)
        free(r->cells);
    if (r->text != r->inline_text)
        free(r->text);
    if (!spare_rows) {
        static _Thread_local bool registered;
        if (!registered) { /* give it back when the thread ends (LSan, valgrind) */
            registered = true;
            static pthread_once_t once = PTHREAD_ONCE_INIT;
            pthread_once(&once, make_key);
            pthread_setspecific(key_get(), (void *)1);
        }
        spare_rows = r;
    } else {
        free(r);
    }
}

static void rows_release(void *r) { db_rows_close(r); }

db_rows *db_rows_adopt(bz_arena *a, db_rows *r)
{
    if (!r)
        return NULL;
    if (r->d) {
        atomic_fetch_sub_explicit(&r->d->open_rows, 1, memory_order_relaxed);
        r->d = NULL;
    }
    bz_arena_defer_fn(a, rows_release, r);
    return r;
}

/* ---- shared helpers ----------------------------------------------------------------------------- */

uint64_t db__hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

db_stmt *db__stmt_lookup(db_conn *c, const char *sql, size_t *n, uint64_t *h)
{
    /* Fast path: callers pass the same literal every time, so a statement
     * whose remembered pointer matches is verified with one memcmp — no
     * hashing.  (The pointer is only a hint: the text is always compared.) */
    *n = strlen(sql);
    for (int i = 0; i < c->nstmts; i++) {
        db_stmt *s = &c->stmts[i];
        if (s->caller == sql && s->sqllen == *n && !memcmp(s->sql, sql, *n)) {
            s->used = ++c->clock;
            return s;
        }
    }
    *h = db__hash(sql, *n);
    for (int i = 0; i < c->nstmts; i++) {
        db_stmt *s = &c->stmts[i];
        if (s->hash == *h && s->sqllen == *n && !memcmp(s->sql, sql, *n)) {
            s->used = ++c->clock;
            s->caller = sql;
            return s;
        }
    }
    return NULL;
}

db_stmt *db__stmt_slot(db_conn *c, db_stmt *evicted)
{
    memset(evicted, 0, sizeof *evicted);
    if (c->nstmts < DB_STMT_CACHE)
        return &c->stmts[c->nstmts++];
    int lru = 0;
    for (int i = 1; i < c->nstmts; i++)
        if (c->stmts[i].used < c->stmts[lru].used)
            lru = i;
    *evicted = c->stmts[lru];
    return &c->stmts[lru];
}

static inline int num(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9)
            return -1;
        v = v * 10 + (int)d;
    }
    return v;
}

bool db__parse_time(const char *s, size_t n, int64_t *us)
{
    /* YYYY-MM-DD[T ]HH:MM:SS[.ffffff][Z|+HH[:MM]|-HH[:MM]] */
    if (n < 19 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != ' ') || s[13] != ':' || s[16] != ':')
        return false;
    int Y = num(s, 4), M = num(s + 5, 2), D = num(s + 8, 2), h = num(s + 11, 2), m = num(s + 14, 2),
        sec = num(s + 17, 2);
    if (Y < 0 || M < 1 || M > 12 || D < 1 || D > 31 || h < 0 || h > 23 || m < 0 || m > 59 || sec < 0 || sec > 60)
        return false;
    size_t i = 19;
    int64_t frac = 0;
    if (n == 27 && s[19] == '.' && s[26] == 'Z') {
        /* the form this layer writes (bz_fmt_rfc3339_us): microseconds and
         * Z, no scan for how many digits or which offset follow */
        int hi = num(s + 20, 3), lo = num(s + 23, 3);
        if (hi < 0 || lo < 0)
            return false;
        frac = hi * 1000 + lo;
        i = 27;
    } else if (i < n && s[i] == '.') {
        i++;
        int digits = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (digits < 6) {
                frac = frac * 10 + (s[i] - '0');
                digits++;
            }
            i++;
        }
        while (digits++ < 6)
            frac *= 10;
    }
    int64_t off = 0;
    if (i == n) {
        /* no offset: UTC */
    } else if (s[i] == '+' || s[i] == '-') {
        int sign = s[i] == '-' ? -1 : 1;
        i++;
        if (n - i < 2)
            return false;
        int oh = num(s + i, 2), om = 0;
        i += 2;
        if (i < n && s[i] == ':')
            i++;
        if (n - i >= 2) {
            om = num(s + i, 2);
            i += 2;
        }
        if (oh < 0 || om < 0)
            return false;
        off = sign * (oh * 3600 + om * 60);
    } else if (s[i] == 'Z') {
        i++;
    }
    if (i != n)
        return false;
    /* days from civil (Howard Hinnant's algorithm) */
    int y = Y - (M <= 2);
    int era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (unsigned)((153 * (M + (M > 2 ? -3 : 9)) + 2) / 5 + D - 1);
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = (int64_t)era * 146097 + (int64_t)doe - 719468;
    *us = ((days * 86400 + h * 3600 + m * 60 + sec) - off) * 1000000 + frac;
    return true;
}

bz_err_kind db__pg_kind(const char *st)
{
    if (!st || !*st)
        return BZ_ERR_INTERNAL;
    if (!strcmp(st, "23505"))
        return BZ_ERR_UNIQUE;
    if (!strcmp(st, "23503"))
        return BZ_ERR_FOREIGN_KEY;
    if (!strcmp(st, "23514"))
        return BZ_ERR_CHECK;
    if (!strcmp(st, "40001"))
        return BZ_ERR_SERIALIZATION;
    if (!strcmp(st, "40P01"))
        return BZ_ERR_DEADLOCK;
    if (!strcmp(st, "57014"))
        return BZ_ERR_CANCELLED;
    if (!strncmp(st, "08", 2) || !strcmp(st, "57P01") || !strcmp(st, "57P02") || !strcmp(st, "57P03"))
        return BZ_ERR_CONNECTION;
    /* read_only_sql_transaction: we never write in a READ ONLY transaction,
     * so this is a server that is (now) a standby or was made read-only —
     * after a failover, a connection to the old primary.  The connection
     * is no use for writes: treat it as lost, so the pool drops it and the
     * next connect (target_session_attrs=read-write) finds the primary. */
    if (!strcmp(st, "25006"))
        return BZ_ERR_CONNECTION;
    if (!strncmp(st, "22", 2) || !strncmp(st, "42", 2))
        return BZ_ERR_INVALID;
    return BZ_ERR_INTERNAL;
}

/* db/shared.c — shared reads: identical reads of one turn, one statement.
 *
 * db_query_row_shared (db.h).  Open statements — taken by a first caller,
 * not sent yet — sit on the pool's sh_open list; an identical call finds
 * one there and waits on it instead of sending its own.  The first caller
 * yields once before it takes its statement off the list and sends it, so
 * every caller its loop runs in the same turn (a read of many streams off
 * one HTTP/2 connection, a batch of keep-alive requests) finds it open.
 *
 * Why only while open (not Go's singleflight, which joins a call in
 * progress): a statement already sent may have been planned and read
 * before the joiner's own write committed, and the joiner would be served
 * a row older than what it wrote.  A statement sent after every caller
 * arrived answers each of them as its own would have.
 *
 * A list, not a table: under load it holds the few distinct reads of one
 * turn, and each lives for one yield. */
#include "db/db-private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct db__shared {
    struct db__shared *next;
    /* the first caller's, compared while the statement is open (that
     * caller is inside db_query_row_shared until then, so they live) */
    const char *sql;
    const db_arg *args;
    int nargs;
    int refs;            /* the first caller and its joiners */
    bool done;
    int result;          /* db_query_row's: 0, DB_NO_ROWS or < 0 */
    bz_error err;
    db_rows *rows;       /* a copy of the row for the joiners (result 0) */
    rt_waitq waiters;
} db__shared;

static bool same_arg(const db_arg *a, const db_arg *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case DB_T_NULL:
        return true;
    case DB_T_DOUBLE: /* bit for bit: -0.0 and 0.0 may not be the same argument */
        return !memcmp(&a->v.d, &b->v.d, sizeof a->v.d);
    case DB_T_TEXT:
    case DB_T_BLOB:
        return a->v.s.n == b->v.s.n && (a->v.s.n == 0 || !memcmp(a->v.s.p, b->v.s.p, a->v.s.n));
    default:
        return a->v.i == b->v.i;
    }
}

static bool same_read(const db__shared *s, const char *sql, const db_arg *args, int nargs)
{
    if (s->nargs != nargs || (s->sql != sql && strcmp(s->sql, sql)))
        return false;
    for (int i = 0; i < nargs; i++)
        if (!same_arg(&s->args[i], &args[i]))
            return false;
    return true;
}

/* Drops one reference (d->sh_lk held); the last frees the statement. */
static void unref(db__shared *s)
{
    if (--s->refs)
        return;
    db_rows_close(s->rows);
    free(s);
}

/* A joiner: waits for s's answer (d->sh_lk held on entry, released on
 * return). */
static int join(db *d, db__shared *s, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs,
                db_rows **rows, bz_error *err)
{
    s->refs++;
    int w = 0;
    while (!s->done && w == 0) {
        rt_park_reason("db shared read wait"); /* for the coroutine dump */
        w = rt_waitq_wait(&s->waiters, &d->sh_lk, ctx, BZ_NO_DEADLINE, NULL);
    }
    if (w) {
        unref(s);
        pthread_mutex_unlock(&d->sh_lk);
        return bz_err_set(err, w == -ETIMEDOUT ? BZ_ERR_TIMEOUT : BZ_ERR_CANCELLED,
                          "context ended waiting for a shared read"),
               w;
    }
    int r = s->result;
    /* the sender's deadline or cancellation is not ours: run it ourselves */
    bool again = r < 0 && (s->err.kind == BZ_ERR_TIMEOUT || s->err.kind == BZ_ERR_CANCELLED) && !rt_ctx_err(ctx);
    if (r == 0)
        *rows = db__rows_copy_row(s->rows);
    else if (r < 0 && !again && err)
        *err = s->err;
    unref(s);
    pthread_mutex_unlock(&d->sh_lk);
    if (again)
        return db_query_row(DB(d), ctx, sql, args, nargs, rows, err);
    atomic_fetch_add_explicit(&d->shared_reads, 1, memory_order_relaxed);
    return r;
}

int db_query_row_shared(db *d, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs, db_rows **rows,
                        bz_error *err)
{
    if (d->dialect != DB_POSTGRES || !rt_self())
        return db_query_row(DB(d), ctx, sql, args, nargs, rows, err);
    if (rows)
        *rows = NULL;
    bz_error local;
    if (!err)
        err = &local;
    bz_err_clear(err);
    pthread_mutex_lock(&d->sh_lk);
    for (db__shared *s = d->sh_open; s; s = s->next)
        if (same_read(s, sql, args, nargs))
            return join(d, s, ctx, sql, args, nargs, rows, err);
    db__shared *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    *s = (db__shared){.next = d->sh_open, .sql = sql, .args = args, .nargs = nargs, .refs = 1};
    d->sh_open = s;
    pthread_mutex_unlock(&d->sh_lk);

    rt_yield(); /* the turn's other callers join */

    pthread_mutex_lock(&d->sh_lk);
    for (db__shared **pp = &d->sh_open; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next; /* sent from here on: nobody joins it any more */
            break;
        }
    bool alone = s->refs == 1;
    pthread_mutex_unlock(&d->sh_lk);

    int r = db_query_row(DB(d), ctx, sql, args, nargs, rows, err);
    if (alone) { /* nobody can join now: nothing to hand over */
        free(s);
        return r;
    }
    db_rows *copy = r == 0 ? db__rows_copy_row(*rows) : NULL;
    pthread_mutex_lock(&d->sh_lk);
    s->done = true;
    s->result = r;
    s->err = *err;
    s->rows = copy;
    rt_waitq_wake_all(&s->waiters, 0);
    unref(s);
    pthread_mutex_unlock(&d->sh_lk);
    return r;
}

int64_t db_shared_reads(db *d) { return atomic_load_explicit(&d->shared_reads, memory_order_relaxed); }

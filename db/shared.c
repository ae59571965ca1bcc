/* db/shared.c — shared and keyed reads: the reads of one turn, one
 * statement.
 *
 * db_query_row_shared and db_query_row_keyed (db.h).  Open reads — taken
 * by a first caller, not sent yet — sit on the pool's sh_open list.  A
 * later caller finds one there and waits on it instead of sending its
 * own: an identical shared read, or a keyed read of the same pair of
 * statements (its key added to the set the statement will ask for).  The
 * first caller yields before it takes its read off the list and sends
 * it, so the callers its loop runs in the same turn (a read of many
 * streams off one HTTP/2 connection, a batch of keep-alive requests) find
 * it open; and once more each time callers joined during the last yield
 * (up to MAX_YIELDS), since a turn that runs long is cut and its rest
 * queued behind the first caller (rt/loop.c, run_ready).
 *
 * Why only while open (not Go's singleflight, which joins a call in
 * progress): a statement already sent may have read its rows before the
 * joiner's own write committed, and the joiner would be served a row
 * older than what it wrote.  A statement sent after every caller arrived
 * answers each of them as its own would have.
 *
 * A list, not a table: under load it holds the few distinct reads of one
 * turn, and each lives for one yield. */
#include "db/db-private.h"

#include <bazaar/buf.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Keys one keyed statement asks for at most; a full set is sent as it
 * is and the next caller opens another. */
#define KEYS_MAX 128
/* Yields of a first caller while others keep joining. */
#define MAX_YIELDS 4

typedef struct db__shared {
    struct db__shared *next;
    /* what it reads: one statement with its arguments (shared), or a key
     * set (keyed: sql and many, one key each) */
    const char *sql;
    const char *many;     /* keyed: the statement of several keys; else NULL */
    const db_arg *args;   /* shared: the first caller's, compared while the
                             read is open (that caller is inside
                             db_query_row_shared until then) */
    int nargs;
    int key_col;
    int nkeys;
    int64_t *keys;        /* keyed: the set, KEYS_MAX of room */
    int refs;             /* the first caller and its joiners */
    int joins;            /* callers that joined it (ever) */
    bool done;
    /* the statement ended because the first caller's context did (its
     * deadline, its cancellation): each live joiner runs it itself */
    bool sender_ended;
    int result;           /* the statement's: 0, DB_NO_ROWS or < 0 */
    bz_error err;
    /* the answer the callers copy their row from: a copy of the row of
     * one statement of their own arguments, or every row of the statement
     * of several keys, with the key of each in row_keys */
    db_rows *rows;
    int64_t *row_keys;
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

static bool same_text(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

/* Whether a caller may join s: the same shared read, or a keyed read of
 * the same statements with room for its key. */
static bool has_key(const db__shared *s, int64_t key)
{
    for (int i = 0; i < s->nkeys; i++)
        if (s->keys[i] == key)
            return true;
    return false;
}

static bool joins(const db__shared *s, const char *sql, const char *many, int key_col, const db_arg *args,
                  int nargs, int64_t key)
{
    if (!same_text(s->sql, sql) || !same_text(s->many, many))
        return false;
    if (many)
        return s->key_col == key_col && (s->nkeys < KEYS_MAX || has_key(s, key));
    if (s->nargs != nargs)
        return false;
    for (int i = 0; i < nargs; i++)
        if (!same_arg(&s->args[i], &args[i]))
            return false;
    return true;
}

static void add_key(db__shared *s, int64_t key)
{
    if (!has_key(s, key))
        s->keys[s->nkeys++] = key;
}

static void free_shared(db__shared *s)
{
    db_rows_close(s->rows);
    free(s->row_keys);
    free(s->keys);
    free(s);
}

/* Drops one reference (d->sh_lk held); the last frees the read. */
static void unref(db__shared *s)
{
    if (--s->refs == 0)
        free_shared(s);
}

/* The caller's own copy of its row of s's answer (s done: read-only,
 * and referenced by the caller): 0, or DB_NO_ROWS when the statement
 * found none. */
static int answer(const db__shared *s, int64_t key, db_rows **rows)
{
    if (!s->row_keys) { /* one statement of the callers' own arguments */
        *rows = db__rows_copy_row(s->rows, 0);
        return 0;
    }
    for (int i = 0; i < db_rows_count(s->rows); i++)
        if (s->row_keys[i] == key) {
            *rows = db__rows_copy_row(s->rows, i);
            return 0;
        }
    return DB_NO_ROWS;
}

/* The read as the caller would run it alone. */
static int run_alone(db *d, rt_ctx *ctx, const char *sql, const char *many, const db_arg *args, int nargs,
                     int64_t key, db_rows **rows, bz_error *err)
{
    if (many)
        return db_query_row(DB(d), ctx, sql, (db_arg[]){DB_INT(key)}, 1, rows, err);
    return db_query_row(DB(d), ctx, sql, args, nargs, rows, err);
}

/* A joiner: waits for s's answer (d->sh_lk held on entry, released on
 * return).  sql, many, args: the joiner's own, for a run of its own. */
static int join(db *d, db__shared *s, rt_ctx *ctx, const char *sql, const char *many, const db_arg *args,
                int nargs, int64_t key, db_rows **rows, bz_error *err)
{
    if (many)
        add_key(s, key);
    s->refs++;
    s->joins++;
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
    pthread_mutex_unlock(&d->sh_lk);
    /* done: nothing in s changes any more, and our reference keeps it */
    int r = s->result;
    bool again = s->sender_ended && !rt_ctx_err(ctx);
    if (r == 0)
        r = answer(s, key, rows);
    else if (r < 0 && !again)
        *err = s->err;
    pthread_mutex_lock(&d->sh_lk);
    unref(s);
    pthread_mutex_unlock(&d->sh_lk);
    if (again) /* the sender's deadline or cancellation is not ours */
        return run_alone(d, ctx, sql, many, args, nargs, key, rows, err);
    atomic_fetch_add_explicit(&d->shared_reads, 1, memory_order_relaxed);
    return r;
}

/* Runs the statement of several keys for the first caller: its status
 * (0 or < 0), with the caller's own row in *rows (*mine: 0 or
 * DB_NO_ROWS) and, in s, every row for the joiners to copy theirs from. */
static int send_many(db *d, db__shared *s, rt_ctx *ctx, int64_t key, db_rows **rows, int *mine, bz_error *err)
{
    /* the keys as a PostgreSQL array literal: {1,2,3} */
    char *lit = malloc((size_t)s->nkeys * 21 + 3), *p = lit;
    if (!lit)
        abort();
    *p++ = '{';
    for (int i = 0; i < s->nkeys; i++) {
        if (i)
            *p++ = ',';
        p += bz_fmt_i64(p, s->keys[i]);
    }
    *p++ = '}';
    db_rows *all = NULL;
    int r = db_query(DB(d), ctx, s->many, (db_arg[]){DB_TEXTN(lit, (size_t)(p - lit))}, 1, &all, err);
    free(lit);
    if (r != 0)
        return r;
    int n = db_rows_count(all);
    s->row_keys = malloc(((size_t)n + 1) * sizeof *s->row_keys);
    if (!s->row_keys)
        abort();
    for (int i = 0; db_rows_next(all); i++)
        s->row_keys[i] = db_col_int(all, s->key_col);
    s->rows = all;
    *mine = answer(s, key, rows);
    return 0;
}

static int shared_read(db *d, rt_ctx *ctx, const char *sql, const char *many, int key_col, const db_arg *args,
                       int nargs, int64_t key, db_rows **rows, bz_error *err)
{
    *rows = NULL;
    bz_err_clear(err);
    pthread_mutex_lock(&d->sh_lk);
    for (db__shared *s = d->sh_open; s; s = s->next)
        if (joins(s, sql, many, key_col, args, nargs, key))
            return join(d, s, ctx, sql, many, args, nargs, key, rows, err);
    pthread_mutex_unlock(&d->sh_lk);
    /* a caller whose context has ended would lead a statement that fails
     * at once, and its joiners would each run their own after a turn */
    if (rt_ctx_err(ctx))
        return run_alone(d, ctx, sql, many, args, nargs, key, rows, err);
    db__shared *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    *s = (db__shared){.sql = sql, .many = many, .args = args, .nargs = nargs, .key_col = key_col, .refs = 1};
    if (many) {
        s->keys = malloc(KEYS_MAX * sizeof *s->keys);
        if (!s->keys)
            abort();
        s->keys[s->nkeys++] = key;
    }
    pthread_mutex_lock(&d->sh_lk);
    s->next = d->sh_open;
    d->sh_open = s;
    pthread_mutex_unlock(&d->sh_lk);

    /* the turn's other callers join; while they keep coming, once more */
    for (int y = 0, seen = 0; y < MAX_YIELDS; y++) {
        rt_yield();
        pthread_mutex_lock(&d->sh_lk);
        int joined = s->joins;
        pthread_mutex_unlock(&d->sh_lk);
        if (joined == seen)
            break;
        seen = joined;
    }

    pthread_mutex_lock(&d->sh_lk);
    for (db__shared **pp = &d->sh_open; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next; /* sent from here on: nobody joins it any more */
            break;
        }
    bool alone = s->refs == 1;
    pthread_mutex_unlock(&d->sh_lk);

    int st, r = 0; /* the statement's status, the caller's result */
    if (many && s->nkeys > 1) {
        st = send_many(d, s, ctx, key, rows, &r, err);
        if (st < 0)
            r = st;
    } else { /* a shared read, or a keyed one of one key however many callers */
        st = r = run_alone(d, ctx, sql, many, args, nargs, key, rows, err);
        if (r == 0 && !alone)
            s->rows = db__rows_copy_row(*rows, 0);
    }
    if (alone) { /* nobody can join now: nothing to hand over */
        free_shared(s);
        return r;
    }
    pthread_mutex_lock(&d->sh_lk);
    s->done = true;
    s->result = st;
    s->sender_ended = st < 0 && rt_ctx_err(ctx) != 0;
    s->err = *err;
    rt_waitq_wake_all(&s->waiters, 0);
    unref(s);
    pthread_mutex_unlock(&d->sh_lk);
    return r;
}

int db_query_row_shared(db *d, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs, db_rows **rows,
                        bz_error *err)
{
    if (d->dialect != DB_POSTGRES || !rt_self())
        return db_query_row(DB(d), ctx, sql, args, nargs, rows, err);
    bz_error local;
    return shared_read(d, ctx, sql, NULL, 0, args, nargs, 0, rows, err ? err : &local);
}

int db_query_row_keyed(db *d, rt_ctx *ctx, const char *one, const char *many, int key_col, int64_t key,
                       db_rows **rows, bz_error *err)
{
    if (d->dialect != DB_POSTGRES || !rt_self() || !many)
        return db_query_row(DB(d), ctx, one, (db_arg[]){DB_INT(key)}, 1, rows, err);
    bz_error local;
    return shared_read(d, ctx, one, many, key_col, NULL, 0, key, rows, err ? err : &local);
}

int64_t db_shared_reads(db *d) { return atomic_load_explicit(&d->shared_reads, memory_order_relaxed); }

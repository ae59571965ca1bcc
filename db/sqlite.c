/* db/sqlite.c — the embedded SQLite driver.
 *
 * Statements run on the calling loop thread: an indexed read costs
 * microseconds, less than a hop to another thread.  Anything that may
 * fsync — COMMIT, and writes outside a transaction — runs on the offload
 * pool while the coroutine parks.  Writers queue on the pool's writer lock
 * (a parking mutex) before BEGIN IMMEDIATE, so SQLite's own busy handler
 * never sleeps on a loop thread.  A context that ends interrupts the
 * statement through the progress handler. */
#include "db/db-private.h"

#include <bazaar/clock.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int lite_err(db_conn *c, int rc, rt_ctx *ctx, bz_error *err)
{
    int ext = sqlite3_extended_errcode(c->lite);
    bz_err_kind k;
    int ret = -EIO;
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        k = ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY ? BZ_ERR_UNIQUE
            : ext == SQLITE_CONSTRAINT_FOREIGNKEY                                   ? BZ_ERR_FOREIGN_KEY
            : ext == SQLITE_CONSTRAINT_CHECK                                        ? BZ_ERR_CHECK
                                                                                    : BZ_ERR_INVALID;
        ret = -EINVAL;
        break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        k = BZ_ERR_SERIALIZATION;
        ret = -EAGAIN;
        break;
    case SQLITE_INTERRUPT: {
        int e = rt_ctx_err(ctx);
        k = e == ETIMEDOUT ? BZ_ERR_TIMEOUT : BZ_ERR_CANCELLED;
        ret = e == ETIMEDOUT ? -ETIMEDOUT : -ECANCELED;
        break;
    }
    case SQLITE_ERROR:
        k = BZ_ERR_INVALID;
        ret = -EINVAL;
        break;
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
        /* The disk (or its quota) is full, or a file SQLite opens while a
         * statement runs (a temp file, a journal) could not be opened — the
         * process is out of descriptors: nothing was written, and the
         * statement works again once space or descriptors return.  An
         * outage of the database, not a bug: BZ_ERR_UNAVAILABLE (503
         * unavailable, Retry-After). */
        k = BZ_ERR_UNAVAILABLE;
        ret = (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EMFILE;
        break;
    default:
        k = BZ_ERR_IO;
    }
    if (err) {
        bz_err_set(err, k, "sqlite: %s", sqlite3_errmsg(c->lite));
        err->code = ext;
    }
    return ret;
}

/* Interrupts a running statement once its context has ended. */
static int progress(void *p)
{
    db_conn *c = p;
    return c->lite_ctx && rt_ctx_err(c->lite_ctx) ? 1 : 0;
}

/* SQLite counts every allocation under a global mutex for
 * sqlite3_memory_used(), which nothing here reads: off, before the
 * library initialises (the first open), it is a lock and an unlock less
 * per allocation (four allocations and thirteen lock pairs per primary-key
 * read before). */
static pthread_once_t lite_once = PTHREAD_ONCE_INIT;
static void lite_config(void) { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); }

static int lite_connect(db *d, db_conn *c, rt_ctx *ctx, bz_error *err)
{
    pthread_once(&lite_once, lite_config);
    (void)ctx;
    const char *path = d->conninfo;
    char uri[128];
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    bool mem = !strcmp(path, ":memory:");
    if (mem) {
        /* Every connection of this pool shares one in-memory database. */
        snprintf(uri, sizeof uri, "file:bazaar-mem-%p?mode=memory&cache=shared", (void *)d);
        path = uri;
        flags |= SQLITE_OPEN_URI;
    }
    int rc = sqlite3_open_v2(path, &c->lite, flags, NULL);
    if (rc != SQLITE_OK) {
        bz_err_set(err, BZ_ERR_CONNECTION, "sqlite: cannot open %s: %s", d->conninfo,
                   c->lite ? sqlite3_errmsg(c->lite) : sqlite3_errstr(rc));
        sqlite3_close_v2(c->lite);
        c->lite = NULL;
        return -EIO;
    }
    sqlite3_extended_result_codes(c->lite, 1);
    const char *pragmas = mem ? "PRAGMA foreign_keys=ON; PRAGMA read_uncommitted=OFF;"
                              : "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;";
    char *msg = NULL;
    if (sqlite3_exec(c->lite, pragmas, NULL, NULL, &msg) != SQLITE_OK) {
        bz_err_set(err, BZ_ERR_CONNECTION, "sqlite: %s", msg ? msg : "pragma failed");
        sqlite3_free(msg);
        sqlite3_close_v2(c->lite);
        c->lite = NULL;
        return -EIO;
    }
    sqlite3_busy_timeout(c->lite, 0); /* never sleep on a loop thread */
    sqlite3_progress_handler(c->lite, 1000, progress, c);
    return 0;
}

static void lite_close(db_conn *c)
{
    for (int i = 0; i < c->nstmts; i++) {
        sqlite3_finalize(c->stmts[i].u.lite);
        free((void *)c->stmts[i].sql);
    }
    sqlite3_close_v2(c->lite);
}

/* $1..$n → ?1..?n outside quotes and comments (SQLite binds ?N by number). */
static char *rewrite(const char *sql, size_t n)
{
    char *out = malloc(n + 1);
    if (!out)
        abort();
    char q = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = sql[i];
        if (q) {
            if (ch == q)
                q = 0;
        } else if (ch == '\'' || ch == '"') {
            q = ch;
        } else if (ch == '$' && i + 1 < n && sql[i + 1] >= '1' && sql[i + 1] <= '9') {
            ch = '?';
        }
        out[i] = ch;
    }
    out[n] = '\0';
    return out;
}

static int prepare(db_conn *c, const char *sql, db_stmt **out, bz_error *err)
{
    size_t n;
    uint64_t h = 0;
    db_stmt *s = db__stmt_lookup(c, sql, &n, &h);
    if (s) {
        *out = s;
        return 0;
    }
    char *text = rewrite(sql, n);
    sqlite3_stmt *p = NULL;
    int rc = sqlite3_prepare_v3(c->lite, text, -1, SQLITE_PREPARE_PERSISTENT, &p, NULL);
    free(text);
    if (rc != SQLITE_OK)
        return lite_err(c, rc, NULL, err);
    db_stmt old;
    s = db__stmt_slot(c, &old);
    if (old.u.lite)
        sqlite3_finalize(old.u.lite);
    free((void *)old.sql);
    char *copy = malloc(n + 1);
    if (!copy)
        abort();
    memcpy(copy, sql, n + 1);
    s->sql = copy;
    s->caller = sql;
    s->sqllen = n;
    s->hash = h;
    s->u.lite = p;
    s->nparams = sqlite3_bind_parameter_count(p);
    s->used = ++c->clock;
    *out = s;
    return 0;
}

static int bind_args(sqlite3_stmt *st, const db_arg *args, int nargs)
{
    for (int i = 0; i < nargs; i++) {
        const db_arg *a = &args[i];
        int rc, k = i + 1;
        switch (a->type) {
        case DB_T_NULL: rc = sqlite3_bind_null(st, k); break;
        case DB_T_INT:
        case DB_T_BOOL: rc = sqlite3_bind_int64(st, k, a->v.i); break;
        case DB_T_DOUBLE: rc = sqlite3_bind_double(st, k, a->v.d); break;
        case DB_T_TEXT: rc = sqlite3_bind_text(st, k, a->v.s.p, (int)a->v.s.n, SQLITE_TRANSIENT); break;
        case DB_T_BLOB: rc = sqlite3_bind_blob(st, k, a->v.s.p, (int)a->v.s.n, SQLITE_TRANSIENT); break;
        case DB_T_TIME: {
            /* fixed-width RFC 3339 text: sorts like the time it encodes */
            char t[32];
            bz_fmt_rfc3339_us(t, a->v.i);
            rc = sqlite3_bind_text(st, k, t, 27, SQLITE_TRANSIENT);
            break;
        }
        default: rc = SQLITE_MISUSE;
        }
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static void collect_row(sqlite3_stmt *st, db_rows *r)
{
    db_cell *cells = db__rows_add(r);
    for (int i = 0; i < r->ncols; i++) {
        db_cell *c = &cells[i];
        int t = sqlite3_column_type(st, i);
        switch (t) {
        case SQLITE_INTEGER:
            c->type = DB_T_INT;
            c->i = sqlite3_column_int64(st, i);
            break;
        case SQLITE_FLOAT:
            c->type = DB_T_DOUBLE;
            c->f = sqlite3_column_double(st, i);
            break;
        case SQLITE_NULL:
            c->type = DB_T_NULL;
            break;
        default: { /* TEXT, BLOB */
            c->type = t == SQLITE_BLOB ? DB_T_BLOB : DB_T_TEXT;
            const void *p = c->type == DB_T_BLOB ? sqlite3_column_blob(st, i) : sqlite3_column_text(st, i);
            int n = sqlite3_column_bytes(st, i);
            c->len = (size_t)n;
            c->off = db__rows_text(r, p, (size_t)n);
        }
        }
    }
}

typedef struct {
    db_conn *c;
    sqlite3_stmt *st;
    db_rows *rows;
    int rc;
    int limit; /* stop after this many rows (reads only); 0 = all */
} step_job;

/* Steps a statement to completion (or to the row limit), collecting rows
 * if asked. */
static void step_all(void *p)
{
    step_job *j = p;
    int rc;
    while ((rc = sqlite3_step(j->st)) == SQLITE_ROW) {
        if (j->rows) {
            collect_row(j->st, j->rows);
            if (j->limit && j->rows->nrows >= j->limit) {
                rc = SQLITE_DONE; /* the reset below ends the statement */
                break;
            }
        }
    }
    j->rc = rc;
}

static int lite_run(db_conn *c, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs, db_rows **rows,
                    int64_t *affected, bz_error *err)
{
    db_stmt *s = NULL;
    int r = prepare(c, sql, &s, err);
    if (r)
        return r;
    sqlite3_stmt *st = s->u.lite;
    if (s->nparams != nargs)
        return bz_err_set(err, BZ_ERR_INVALID, "sqlite: statement wants %d arguments, got %d", s->nparams, nargs),
               -EINVAL;
    int rc = bind_args(st, args, nargs);
    if (rc != SQLITE_OK) {
        sqlite3_reset(st);
        return lite_err(c, rc, ctx, err);
    }
    bool writes = !sqlite3_stmt_readonly(st);
    bool lock = writes && !c->in_tx; /* an autocommit write: one writer, and it fsyncs */
    if (lock && (r = rt_mutex_lock(&c->d->lite_writer, ctx)) != 0) {
        sqlite3_reset(st);
        return bz_err_set(err, r == -ETIMEDOUT ? BZ_ERR_TIMEOUT : BZ_ERR_CANCELLED,
                          "gave up waiting for the database writer"),
               r;
    }
    step_job j = {c, st, rows ? db__rows_new(c->d, sqlite3_column_count(st)) : NULL, 0, writes ? 0 : c->row_limit};
    c->lite_ctx = ctx;
    if (lock)
        rt_offload(NULL, step_all, &j); /* may fsync: off the loop */
    else
        step_all(&j);
    c->lite_ctx = NULL;
    if (lock)
        rt_mutex_unlock(&c->d->lite_writer);
    if (j.rc != SQLITE_DONE) {
        r = lite_err(c, j.rc, ctx, err);
        sqlite3_reset(st);
        if (j.rows) {
            j.rows->d = NULL;
            db_rows_close(j.rows);
        }
        return r;
    }
    if (affected)
        *affected = writes ? sqlite3_changes64(c->lite) : 0;
    /* Every parameter is bound again on each use: no clear_bindings.
     * (Blob and text bindings were copied: SQLITE_TRANSIENT.) */
    sqlite3_reset(st);
    if (rows)
        *rows = j.rows;
    return 0;
}

static int lite_script(db_conn *c, rt_ctx *ctx, const char *sql, bz_error *err)
{
    char *msg = NULL;
    c->lite_ctx = ctx;
    int rc = sqlite3_exec(c->lite, sql, NULL, NULL, &msg);
    c->lite_ctx = NULL;
    if (rc != SQLITE_OK) {
        int r = lite_err(c, rc, ctx, err);
        sqlite3_free(msg);
        return r;
    }
    return 0;
}

typedef struct {
    db_conn *c;
    const char *sql;
    int rc;
} exec_job;

static void exec_sql(void *p)
{
    exec_job *j = p;
    j->rc = sqlite3_exec(j->c->lite, j->sql, NULL, NULL, NULL);
}

static int lite_begin(db_conn *c, rt_ctx *ctx, const db_tx_opts *o, bz_error *err)
{
    /* SQLite transactions are serializable; a writer takes the write lock
     * up front (IMMEDIATE) so it can never fail half way on an upgrade. */
    int rc = sqlite3_exec(c->lite, o->read_only ? "BEGIN" : "BEGIN IMMEDIATE", NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : lite_err(c, rc, ctx, err);
}

static int lite_commit(db_conn *c, rt_ctx *ctx, bz_error *err)
{
    exec_job j = {c, "COMMIT", 0};
    rt_offload(NULL, exec_sql, &j); /* the fsync happens here */
    return j.rc == SQLITE_OK ? 0 : lite_err(c, j.rc, ctx, err);
}

static int lite_rollback(db_conn *c, rt_ctx *ctx)
{
    (void)ctx;
    if (sqlite3_get_autocommit(c->lite))
        return 0; /* nothing open (SQLite rolled back on its own) */
    return sqlite3_exec(c->lite, "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
}

const db_driver db__sqlite_driver = {
    .name = "sqlite",
    .connect = lite_connect,
    .close = lite_close,
    .run = lite_run,
    .script = lite_script,
    .begin = lite_begin,
    .commit = lite_commit,
    .rollback = lite_rollback,
};

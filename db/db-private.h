/*
 * db/db-private.h — the pool's view of a driver, and the row storage both
 * drivers fill.  Nothing outside db/ includes this.
 */
#ifndef DB_PRIVATE_H
#define DB_PRIVATE_H

#include <bazaar/db.h>

#include <bazaar/buf.h>

#include "db/pq.h"
#include <stdatomic.h>
#include <sqlite3.h>

typedef struct db_conn db_conn;

typedef struct db_driver {
    const char *name;
    /* Opens c (its driver state is zeroed).  0 or -errno with err. */
    int (*connect)(db *d, db_conn *c, rt_ctx *ctx, bz_error *err);
    void (*close)(db_conn *c);
    /* Runs one statement: rows (if not NULL) gets the result rows. */
    int (*run)(db_conn *c, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs, db_rows **rows,
               int64_t *affected, bz_error *err);
    /* Runs a parameterless multi-statement script. */
    int (*script)(db_conn *c, rt_ctx *ctx, const char *sql, bz_error *err);
    int (*begin)(db_conn *c, rt_ctx *ctx, const db_tx_opts *o, bz_error *err);
    int (*commit)(db_conn *c, rt_ctx *ctx, bz_error *err);
    int (*rollback)(db_conn *c, rt_ctx *ctx);
    /* Runs a db_batch: fills each step's rc (DB_SKIPPED for those after
     * a failure) and results; commit: COMMIT goes with the statements.
     * NULL: the pool runs the steps one by one and leaves the commit to
     * db_commit. */
    int (*batch)(db_conn *c, rt_ctx *ctx, db_step *steps, int n, bool commit, bz_error *err);
    /* Called (on the releasing coroutine's loop) before c goes idle; NULL
     * if the driver needs nothing. */
    void (*idle)(db_conn *c);
} db_driver;

/* A prepared statement cached on a connection. */
typedef struct db_stmt {
    const char *sql;      /* our copy of the text */
    const char *caller;   /* the caller's pointer last time (a hint only) */
    size_t sqllen;
    uint64_t hash;
    union {
        sqlite3_stmt *lite;
        char pgname[16];
    } u;
    int nparams;
    int64_t used;         /* LRU clock */
} db_stmt;

#define DB_STMT_CACHE 64

struct db_conn {
    db *d;
    db_conn *next;        /* idle list */
    int64_t created_ns;
    int64_t returned_ns;
    bool broken;          /* must not go back to the pool */
    bool hung;            /* the server gave no answer in time (set by the
                             driver; read and cleared by the pool's breaker) */
    bool probe;           /* this call is the breaker's probe */
    bool in_tx;
    int row_limit;        /* rows the caller wants (0 = all); a hint */
    db_stmt stmts[DB_STMT_CACHE];
    int nstmts;
    int64_t clock;
    int pg_seq;           /* statement names */
    /* drivers */
    sqlite3 *lite;
    PGconn *pg;
    rt_io pgio;
    /* PostgreSQL: libpq's last read of the socket got bytes without
     * showing it empty, so more may wait there that no new readiness edge
     * will announce: the next wait reads before it parks (postgres.c,
     * read_input). */
    bool pg_unsure;
    rt_ctx *lite_ctx;     /* context checked by the progress handler */
    /* PostgreSQL: db_begin's BEGIN, not sent yet: it goes out with the
     * transaction's first statement (pg_begin) */
    char pg_begin[64];
    bool begin_pending;
};

struct db {
    db_dialect dialect;
    const db_driver *drv;
    char *conninfo;       /* sqlite: path; postgres: the URL */
    db_opts o;
    pthread_mutex_t lk;
    db_conn *idle;
    int nidle, nopen, ninuse;
    int nwaiting;           /* parked in waiters now (db_stats.waiting) */
    rt_waitq waiters;
    db_stats st;
    bz_breaker brk;       /* PostgreSQL: fails calls fast while the server hangs */
    atomic_int probes;    /* the breaker's probe coroutines running (0 or 1) */
    bool closed;
    bool no_group_commit; /* db_opts.no_group_commit */
    bool no_stmt_cache;   /* PostgreSQL: statement_cache=off in the URL */
    rt_mutex lite_writer; /* SQLite: one write transaction at a time */
    /* SQLite group commit (group.c): queued db_run_tx write transactions */
    pthread_mutex_t gc_lk;
    struct db_gc_member *gc_head, *gc_tail;
    bool gc_leading;      /* a leader is running batches */
    rt_ctx sweep_ctx;
    bool sweeping;
    atomic_int open_rows; /* rows not closed yet (reported at db_close) */
    _Atomic int64_t round_trips; /* db_stats.round_trips */
    /* shared reads (shared.c): statements waiting to be sent that
     * identical calls may still join */
    pthread_mutex_t sh_lk;
    struct db__shared *sh_open;
    _Atomic int64_t shared_reads; /* db_shared_reads */
};

/* SQLite write transactions from db_run_tx go through group commit. */
int db__group_tx(db *d, rt_ctx *ctx, db_tx_fn fn, void *arg, bz_error *err);

struct db_tx {
    db *d;
    db_conn *c;
    rt_ctx *ctx;
    bool done;
    bool writer;          /* holds d->lite_writer */
    bool sealed;          /* after a DB_BATCH_COMMIT batch: only db_commit */
    bool committed;       /* that batch committed it (PostgreSQL): db_commit
                             only ends it */
};

/* Row storage: cells for SQLite, or a PGresult read on demand. */
typedef struct db_cell {
    int8_t type;          /* db_type of the value (NULL, INT, DOUBLE, TEXT, BLOB) */
    int64_t i;
    double f;
    size_t off, len;      /* in text */
} db_cell;

#define DB_ROWS_INLINE_CELLS 8
#define DB_ROWS_INLINE_TEXT 240

struct db_rows {
    db *d;
    int ncols, nrows, cur;
    db_cell *cells;       /* inline_cells until it outgrows them */
    size_t cap;
    char *text;           /* inline_text until it outgrows it */
    size_t text_len, text_cap;
    PGresult *pg;
    bool pg_copy;         /* cells copied from a PGresult (db__rows_copy_row):
                             read back as from it (a "t" is 1 to db_col_int) */
    /* A one-row result of a few columns (the common case: a primary-key
     * lookup) lives entirely in this one allocation. */
    db_cell inline_cells[DB_ROWS_INLINE_CELLS];
    char inline_text[DB_ROWS_INLINE_TEXT];
};

/* Appends n bytes and a NUL to the row text; returns the offset. */
size_t db__rows_text(db_rows *r, const void *p, size_t n);

extern const db_driver db__sqlite_driver;
extern const db_driver db__postgres_driver;

/* Statement cache helpers shared by the drivers. */
uint64_t db__hash(const char *s, size_t n);
/* Finds sql in c's cache.  Sets *n (its length) and, on a miss, *h (its
 * hash) for the caller that then prepares it. */
db_stmt *db__stmt_lookup(db_conn *c, const char *sql, size_t *n, uint64_t *h);
/* Returns a slot for a new statement, evicting the least recently used
 * (evicted reports the old one, for the driver to finalize). */
db_stmt *db__stmt_slot(db_conn *c, db_stmt *evicted);

db_rows *db__rows_new(db *d, int ncols);
db_cell *db__rows_add(db_rows *r); /* appends a row; returns its cells */
/* A new rows holding a copy of src's row `row` (0-based), positioned on
 * it, and counted open in src's pool (shared.c's callers). */
db_rows *db__rows_copy_row(const db_rows *src, int row);

/* Takes our own options out of a postgres:// URL (db/pgurl.c):
 * statement_cache=on|off (default on; off runs every statement unnamed,
 * for PgBouncer's transaction pooling).  *out (malloc'd) is the URL for
 * libpq.  0, or -1 with err filled on a bad value. */
int db__pg_url(const char *url, char **out, bool *no_cache, bz_error *err);

/* Maps a PostgreSQL SQLSTATE to an error kind. */
bz_err_kind db__pg_kind(const char *sqlstate);
/* Parses "2026-11-28 02:18:16.123456+00" or RFC 3339 into unix µs. */
bool db__parse_time(const char *s, size_t n, int64_t *us);

/* Statement statistics (db/stats.c), around each statement db/pool.c runs. */
typedef struct db__probe {
    void *slot;
    int64_t t0;
    rt_note prev;       /* the coroutine's note before the statement */
} db__probe;
void db__probe_begin(db__probe *p, const char *sql);
/* rc: the statement's result (0 ok); rows: returned or affected, -1 unknown. */
void db__probe_end(db__probe *p, int rc, int64_t rows);

#endif

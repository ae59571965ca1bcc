/*
 * db/db.h — SQL with database/sql semantics, on the coroutine runtime.
 *
 *     db *d = db_open("sqlite://bazaar.db", &opts, &err);   // lazy
 *     db_rows *rows;
 *     if (db_query(DB(d), ctx, "SELECT id, name FROM users WHERE id = $1",
 *                  (db_arg[]){DB_INT(7)}, 1, &rows, &err) == 0) {
 *         while (db_rows_next(rows))
 *             use(db_col_int(rows, 0), db_col_text(rows, 1, NULL));
 *         db_rows_close(rows);
 *     }
 *
 * - One pool per database, safe to share across loops: --db-max-open caps
 *   connections (callers beyond it park until one frees or their context
 *   ends), --db-max-idle caps idle ones, and a background sweep closes
 *   connections past --db-conn-max-lifetime or --db-conn-max-idle-time.
 * - Drivers: sqlite://PATH (embedded; WAL, synchronous=FULL, foreign keys,
 *   write transactions BEGIN IMMEDIATE behind one process-wide writer
 *   lock) and postgres://... (libpq, non-blocking: a query parks only its
 *   coroutine).  The PostgreSQL URL goes to libpq as written (several
 *   host:port pairs with target_session_attrs for failover, sslmode,
 *   connect_timeout, application_name, ...) except statement_cache=on|off,
 *   ours: off runs every statement unnamed instead of preparing it per
 *   connection (PgBouncer transaction pooling).  A server that answers
 *   SQLSTATE 25006 (read-only: a standby now) is treated as a lost
 *   connection: dropped, not reused.
 * - Parameters are always bound, written $1..$n in both dialects.
 * - Result rows are read completely before the call returns and the
 *   connection goes straight back to the pool (unlike Go, where an open
 *   Rows pins its connection): db_rows is plain memory.
 * - Every call takes a context; when it ends, the wait for a connection is
 *   abandoned and the running statement is cancelled (PostgreSQL: a cancel
 *   request sent from a short-lived thread of its own, since PQcancel
 *   blocks; SQLite: interrupted through the progress handler).
 *
 * Errors: functions return 0 or a negative errno-style code and fill a
 * bz_error whose kind tells unique / foreign_key / check / serialization /
 * deadlock / connection / cancelled / timeout / other, with the SQLSTATE or
 * SQLite code and the driver's message.  A deadline that passes while the
 * caller waits for a pool connection is unavailable (-ETIMEDOUT with
 * BZ_ERR_UNAVAILABLE: the database could not serve it in time); one that
 * passes while a live server runs the statement is timeout.
 *
 * A server that stops answering (PostgreSQL): a call whose server does not
 * even confirm the cancel at its deadline, or a connect that does not
 * finish, counts against the pool's circuit breaker (db_set_breaker);
 * while it is open every call fails at once with BZ_ERR_UNAVAILABLE and
 * err->retry_ms, and one probe at a time checks whether the server is
 * back.  Any answer from the server — an
 * error with a SQLSTATE included — counts as a success.  DB_NO_ROWS is not an error kind:
 * db_query_row returns it (a positive 1) when there is no row.
 */
#ifndef DB_DB_H
#define DB_DB_H

#include <bazaar/arena.h>
#include <bazaar/breaker.h>
#include <bazaar/error.h>
#include <bazaar/rt.h>

#include <stdbool.h>
#include <stdint.h>

#pragma GCC visibility push(default)

typedef struct db db;
typedef struct db_tx db_tx;
typedef struct db_rows db_rows;

typedef enum db_dialect { DB_SQLITE = 1, DB_POSTGRES = 2 } db_dialect;

typedef struct db_opts {
    int max_open;                /* ≥ 1 */
    int max_idle;                /* ≥ 0, ≤ max_open */
    int64_t max_lifetime_ns;     /* 0 = forever */
    int64_t max_idle_time_ns;    /* 0 = forever */
    bool no_group_commit;        /* SQLite: run each db_run_tx write on its own
                                    (one fsync each), for comparisons */
} db_opts;

/* Parses the URL and prepares the pool; connects nothing (see db_ping).
 * NULL with err filled on a bad URL. */
db *db_open(const char *url, const db_opts *o, bz_error *err);
db_dialect db_get_dialect(const db *d);
/* Opens (or reuses) a connection and checks it answers. */
int db_ping(db *d, rt_ctx *ctx, bz_error *err);
/* Closes idle connections and frees the pool; connections still in use
 * must have been returned. */
void db_close(db *d);

typedef struct db_stats {
    int max_open;
    int open;                    /* in use + idle */
    int in_use;
    int idle;
    int waiting;                 /* callers parked for a connection now */
    int64_t wait_count;          /* callers that had to wait for a connection */
    int64_t wait_ns;             /* total time they waited */
    int64_t max_idle_closed;     /* closed because idle > max_idle */
    int64_t max_idle_time_closed;
    int64_t max_lifetime_closed;
    int64_t group_commits;       /* SQLite: batches committed by group commit */
    int64_t group_members;       /* SQLite: db_run_tx writes they carried */
    int64_t round_trips;         /* PostgreSQL: writes answered by a wait for the server
                                    (a statement, a batch, a COMMIT: one each) */
} db_stats;
db_stats db_get_stats(db *d);
/* Arms the pool's circuit breaker (PostgreSQL only; none until this is
 * called), before the pool is used: `failures` calls in a row that get no
 * answer in time open it (0: none), or one such call when the server
 * answered nothing during the second half of its wait (base/breaker.h);
 * open, every call fails at once (BZ_ERR_UNAVAILABLE, err->retry_ms set)
 * while a probe (SELECT 1, bounded by open_ns, at least 1 s) is sent every open_ns until
 * one gets an answer.  name labels it ("db", "db_read"). */
void db_set_breaker(db *d, const char *name, int failures, int64_t open_ns);
/* The pool's circuit breaker (its state and counters, for /readyz and
 * /metrics). */
const bz_breaker *db_get_breaker(const db *d);

/* ---- arguments ----------------------------------------------------------------- */

typedef enum db_type { DB_T_NULL = 0, DB_T_INT, DB_T_DOUBLE, DB_T_TEXT, DB_T_BLOB, DB_T_BOOL, DB_T_TIME } db_type;

typedef struct db_arg {
    db_type type;
    union {
        int64_t i;               /* INT, BOOL (0/1), TIME (unix µs) */
        double d;
        struct {
            const char *p;
            size_t n;
        } s;                     /* TEXT, BLOB */
    } v;
} db_arg;

#define DB_NULL ((db_arg){.type = DB_T_NULL})
#define DB_INT(x) ((db_arg){.type = DB_T_INT, .v.i = (int64_t)(x)})
#define DB_DOUBLE(x) ((db_arg){.type = DB_T_DOUBLE, .v.d = (double)(x)})
#define DB_TEXT(x) ((db_arg){.type = DB_T_TEXT, .v.s = {(x), strlen(x)}})
#define DB_TEXTN(x, n) ((db_arg){.type = DB_T_TEXT, .v.s = {(x), (n)}})
#define DB_BLOB(x, n) ((db_arg){.type = DB_T_BLOB, .v.s = {(const char *)(x), (n)}})
#define DB_BOOL(x) ((db_arg){.type = DB_T_BOOL, .v.i = (x) ? 1 : 0})
#define DB_TIME(unix_us) ((db_arg){.type = DB_T_TIME, .v.i = (int64_t)(unix_us)})

/* ---- running statements ------------------------------------------------------------
 *
 * A statement runs on the pool (any connection) or inside a transaction
 * (its connection): pass DB(d) or TX(tx). */
typedef struct db_q {
    db *d;
    db_tx *tx;
} db_q;
static inline db_q DB(db *d) { return (db_q){d, 0}; }
static inline db_q TX(db_tx *t) { return (db_q){0, t}; }
/* The dialect behind a handle or a transaction (for dialect-specific SQL). */
db_dialect db_q_dialect(db_q q);

/* Runs a statement that returns no rows; *affected (if given) gets the
 * number of rows changed. */
int db_exec(db_q q, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs, int64_t *affected,
            bz_error *err);
/* Runs a query; on success *rows holds every row (close it). */
int db_query(db_q q, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs, db_rows **rows,
             bz_error *err);
/* Runs a query expected to return at most one row: 0 with *rows positioned
 * on it, DB_NO_ROWS (and *rows NULL) if there was none, or an error. */
#define DB_NO_ROWS 1
int db_query_row(db_q q, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs, db_rows **rows,
                 bz_error *err);

/* ---- shared reads (request coalescing) ----------------------------------------------
 *
 * db_query_row_shared is db_query_row on the pool (never in a transaction)
 * for a read any caller may see the answer of — a row by its primary key,
 * say.  On PostgreSQL, identical calls (the same sql text and equal
 * arguments, on the same db) that arrive while one of them waits to be
 * sent share that one statement: the first caller lets the other runnable
 * coroutines of its loop run (rt_yield; again while callers keep joining,
 * a few times at most), so callers woken in the same turn join it, then
 * sends it; each caller gets its own copy of the row (close it, or adopt
 * it, as usual).  A hot key read by hundreds of
 * requests at once then costs the server one statement per turn, not one
 * each.
 *
 * Never stale: a call joins only a statement not sent yet, never one
 * already on its way, so every answer was read after the call began and
 * holds every write committed before it (a caller's own writes included;
 * this is not Go's singleflight, which joins a call in progress).
 * Errors are shared like rows (a server's statement_timeout too),
 * except when the sender's own context ended (its deadline, its
 * cancellation: in a wait for a connection or on the server): then each
 * joiner whose context is still live runs the read itself.  A joiner
 * whose context ends leaves at once with that error; a caller whose
 * context has already ended runs alone (and fails at once).  SQLite has
 * no round trip to save: the call is db_query_row there. */
int db_query_row_shared(db *d, rt_ctx *ctx, const char *sql, const db_arg *args, int nargs, db_rows **rows,
                        bz_error *err);
/* db_query_row_keyed is the same for a read of one row by an integer key
 * (a primary key), given in two forms: `one` takes the key as $1; `many`
 * takes a PostgreSQL bigint[] array of keys as $1 (`... WHERE id =
 * ANY($1::bigint[])`) and returns each row found with its key in column
 * key_col.  On PostgreSQL, reads of the same pair of statements that
 * arrive while one waits to be sent go as one statement: `one` when they
 * all want the same key, else `many` with every key they want (at most
 * 128: a full set goes as it is and the next caller starts another).
 * Each caller gets its own copy of its key's row, or DB_NO_ROWS.  Never
 * stale, errors and deadlines as above.  SQLite, or many NULL: `one`
 * with the key, as db_query_row. */
int db_query_row_keyed(db *d, rt_ctx *ctx, const char *one, const char *many, int key_col, int64_t key,
                       db_rows **rows, bz_error *err);
/* Calls of db_query_row_shared and _keyed answered by a statement another
 * caller sent (since db_open). */
int64_t db_shared_reads(db *d);

/* ---- rows ------------------------------------------------------------------------------- */

/* Advances to the next row (the first call moves to the first row). */
bool db_rows_next(db_rows *r);
int db_rows_count(const db_rows *r);
int db_rows_columns(const db_rows *r);
bool db_col_is_null(const db_rows *r, int col);
int64_t db_col_int(const db_rows *r, int col);   /* 0 if NULL */
double db_col_double(const db_rows *r, int col);
bool db_col_bool(const db_rows *r, int col);
/* Text or blob bytes (NUL-terminated), valid until db_rows_close.  len may
 * be NULL.  "" if NULL. */
const char *db_col_text(const db_rows *r, int col, size_t *len);
/* A timestamp column as unix microseconds (0 if NULL or unparseable). */
int64_t db_col_time(const db_rows *r, int col);
void db_rows_close(db_rows *r);
/* Hands r (NULL-safe) to arena a and returns it: r is closed when a is
 * reset or freed (its defer list), never by hand, so a request's rows live
 * as long as the request's other memory.  Rows are plain memory (above):
 * holding them holds no connection.  An adopted r no longer counts as open
 * in its pool, so the arena may outlive db_close. */
db_rows *db_rows_adopt(bz_arena *a, db_rows *r);

/* ---- transactions ------------------------------------------------------------------------- */

typedef enum db_isolation { DB_DEFAULT = 0, DB_READ_COMMITTED, DB_REPEATABLE_READ, DB_SERIALIZABLE } db_isolation;

typedef struct db_tx_opts {
    db_isolation isolation;
    bool read_only;
} db_tx_opts;

/* Begins a transaction on one connection, held until commit or rollback.
 * Every successful db_begin is paired with exactly one db_rollback, which
 * is the cleanup on every path (as `defer tx.Rollback()` in Go):
 *
 *     db_tx *tx DB_TX_SCOPE = NULL;
 *     if (db_begin(d, ctx, &opts, &tx, &err)) return ...;
 *     ... db_exec(TX(tx), ...) ...
 *     return db_commit(tx, &err);     // the scope's rollback only frees */
int db_begin(db *d, rt_ctx *ctx, const db_tx_opts *o, db_tx **tx, bz_error *err);
/* Commits; the transaction is over whatever the result (its connection is
 * back in the pool), but tx stays valid until db_rollback. */
int db_commit(db_tx *tx, bz_error *err);
/* Rolls back what was not committed, then frees tx.  After a commit it
 * only frees (a harmless no-op on the data).  NULL is ignored. */
int db_rollback(db_tx *tx);
/* For DB_TX_SCOPE: rolls back (or frees) *tx when the variable goes out of
 * scope. */
void db_tx_cleanup(db_tx **tx);
#define DB_TX_SCOPE __attribute__((cleanup(db_tx_cleanup)))

/* ---- pipelines: several statements of a transaction, one round trip ----------------------
 *
 * A transaction on PostgreSQL is a chain of statements, each a round trip
 * to the server while its row locks are held.  Statements whose inputs do
 * not come from each other's results can go together:
 *
 *     db_step st[] = {
 *         {.sql = "UPDATE accounts SET balance = balance + $1 WHERE id = $2", .args = a1, .nargs = 2},
 *         {.sql = "INSERT INTO ledger (...) VALUES (...) RETURNING id", .args = a2, .nargs = 5, .want_rows = true},
 *     };
 *     if (db_batch(tx, ctx, st, 2, 0, &err)) return ...;   // st[0].affected, st[1].rows
 *
 * PostgreSQL (libpq's pipeline mode): every statement's Bind/Execute (and
 * Parse, the first time a connection sees it) is written back to back,
 * then one Sync: one write, one wait, one round trip for the batch.  The
 * BEGIN of a transaction is never a round trip of its own either: db_begin
 * sends nothing, and the BEGIN goes out in the same write as the
 * transaction's first statement (db_exec, db_query or db_batch); a
 * transaction that runs nothing costs nothing.  SQLite runs the statements
 * one after the other (there is no round trip to save).
 *
 * - Statements run in order; the first one that fails stops the rest: its
 *   rc is its error (err describes it, and db_batch returns it), the ones
 *   after it have rc DB_SKIPPED and ran nothing.  On PostgreSQL the
 *   transaction is then failed, as after any failed statement: roll back
 *   (db_run_tx does), and a serialization failure or deadlock (-EAGAIN,
 *   BZ_ERR_SERIALIZATION / BZ_ERR_DEADLOCK) makes db_run_tx run the whole
 *   transaction again, as for a single statement.
 * - The context covers the whole batch: when it ends the statement the
 *   server is running is cancelled, the rest are skipped, and the
 *   connection is not reused (as for one statement).
 * - flags DB_BATCH_COMMIT: the caller commits right after the batch and
 *   needs none of its results to decide whether to: PostgreSQL sends
 *   COMMIT in the same write (no round trip of its own) — a failing
 *   statement or a COMMIT the server refuses (a serialization failure at
 *   commit) is db_batch's error.  The transaction still ends with db_commit
 *   (db_run_tx calls it), which then returns at once; nothing else may run
 *   in between.  SQLite commits in db_commit as usual.
 * - Results: rows (want_rows) are every row, read before db_batch returns
 *   (close them, or db_rows_adopt); affected counts the rows changed.
 *   Rows are handed out only when db_batch returns 0: on an error, those
 *   of the steps that ran are closed already (rows NULL everywhere).
 * - At most DB_BATCH_MAX statements; statement statistics (db-stats.h)
 *   count each statement, with the batch's time shared among them. */
#define DB_BATCH_MAX 32
#define DB_SKIPPED 2
#define DB_BATCH_COMMIT 1u
typedef struct db_step {
    const char *sql;
    const db_arg *args;
    int nargs;
    bool want_rows;
    /* results */
    int rc;                      /* 0, a negative error, or DB_SKIPPED */
    db_rows *rows;               /* want_rows and rc 0: the rows (close them) */
    int64_t affected;
} db_step;
int db_batch(db_tx *tx, rt_ctx *ctx, db_step *steps, int n, unsigned flags, bz_error *err);

/* Runs fn in a transaction and commits, re-running the whole of fn (in a
 * new transaction) only when the database reports a serialization failure
 * or deadlock (SQLSTATE 40001/40P01; SQLite BUSY/LOCKED), with bounded
 * attempts and jittered exponential backoff.  fn returns 0 to commit or a
 * negative code to roll back (that code is returned).  Any other error is
 * returned at once.  When the attempts run out, err->kind is
 * BZ_ERR_SERIALIZATION. */
typedef int (*db_tx_fn)(db_tx *tx, rt_ctx *ctx, void *arg, bz_error *err);
int db_run_tx(db *d, rt_ctx *ctx, const db_tx_opts *o, db_tx_fn fn, void *arg, bz_error *err);

/* ---- migrations ----------------------------------------------------------------------------- */

typedef struct db_migration {
    int version;                 /* increasing, > 0 */
    const char *name;
    const char *sqlite_sql;      /* may hold several statements */
    const char *postgres_sql;
} db_migration;

/* Applies every migration not yet recorded in schema_migrations, each in
 * its own transaction together with its record.  Concurrent callers (other
 * processes too) never apply one twice: PostgreSQL takes an advisory lock,
 * SQLite's write lock serialises.  *applied (if given) counts what ran. */
int db_migrate(db *d, rt_ctx *ctx, const db_migration *m, int n, int *applied, bz_error *err);

/* Runs several statements without parameters (DDL, EXPLAIN helpers). */
int db_exec_script(db_q q, rt_ctx *ctx, const char *sql, bz_error *err);

#pragma GCC visibility pop
#endif

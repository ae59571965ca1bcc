/* tests/bench/bench_db.c — primary-key SELECTs: the pool and drivers
 * against the floors they must beat, side by side, interleaved, medians of
 * ROUNDS rounds:
 *   sqlite: db_query_row from 64 coroutines vs a bare prepared sqlite3_step loop
 *   postgres: db_query_row from 64 coroutines on one loop vs a synchronous
 *             one-connection libpq loop (PQexecPrepared)
 * Usage: bench_db SQLITE_PATH [POSTGRES_URL] */
#include <bazaar/db.h>

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROWS 10000
#define ROUNDS 5
#define COROS 64

static const char *g_url;
static int64_t g_n;
static double g_qps;

static uint64_t rnd_state = 88172645463325252ull;
static int64_t rnd_id(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return (int64_t)(rnd_state % ROWS) + 1;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- floors ---- */

static double bare_sqlite(const char *path, int64_t n)
{
    sqlite3 *lite;
    sqlite3_open_v2(path, &lite, SQLITE_OPEN_READWRITE, NULL);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(lite, "SELECT id, name, price FROM items WHERE id = ?1", -1, &st, NULL);
    int64_t sum = 0, t0 = bz_now_ns();
    for (int64_t i = 0; i < n; i++) {
        sqlite3_bind_int64(st, 1, rnd_id());
        if (sqlite3_step(st) == SQLITE_ROW) {
            sum += sqlite3_column_int64(st, 0) + sqlite3_column_int64(st, 2);
            sum += sqlite3_column_bytes(st, 1);
        }
        sqlite3_reset(st);
    }
    double qps = (double)n / ((double)(bz_now_ns() - t0) / 1e9);
    sqlite3_finalize(st);
    sqlite3_close(lite);
    if (sum == 42)
        puts("");
    return qps;
}

static double sync_libpq(const char *url, int64_t n)
{
    PGconn *c = PQconnectdb(url);
    PQclear(PQprepare(c, "q", "SELECT id, name, price FROM items WHERE id = $1", 1, NULL));
    int64_t sum = 0, t0 = bz_now_ns();
    for (int64_t i = 0; i < n; i++) {
        char id[24];
        snprintf(id, sizeof id, "%lld", (long long)rnd_id());
        const char *v[1] = {id};
        PGresult *r = PQexecPrepared(c, "q", 1, v, NULL, NULL, 0);
        if (PQntuples(r) == 1)
            sum += atoll(PQgetvalue(r, 0, 0)) + PQgetlength(r, 0, 1);
        PQclear(r);
    }
    double qps = (double)n / ((double)(bz_now_ns() - t0) / 1e9);
    PQfinish(c);
    if (sum == 42)
        puts("");
    return qps;
}

/* ---- the pool ---- */

typedef struct {
    db *d;
    int64_t n;
    rt_wg *wg;
} worker_arg;

static void worker(void *p)
{
    worker_arg *a = p;
    bz_error e;
    int64_t sum = 0;
    for (int64_t i = 0; i < a->n; i++) {
        db_rows *r;
        if (db_query_row(DB(a->d), NULL, "SELECT id, name, price FROM items WHERE id = $1",
                         (db_arg[]){DB_INT(rnd_id())}, 1, &r, &e) == 0) {
            size_t len;
            db_col_text(r, 1, &len);
            sum += db_col_int(r, 0) + db_col_int(r, 2) + (int64_t)len;
            db_rows_close(r);
        } else {
            fprintf(stderr, "query: %s\n", e.msg);
            exit(1);
        }
    }
    if (sum == 42)
        puts("");
    rt_wg_done(a->wg);
}

static void pool_main(void *p)
{
    (void)p;
    db_opts o = {25, 25, 0, 0, false};
    bz_error e;
    db *d = db_open(g_url, &o, &e);
    /* warm the pool: connections open and statements prepared */
    rt_wg wg;
    rt_wg_init(&wg);
    worker_arg warm = {d, 200, &wg};
    rt_wg_add(&wg, COROS);
    for (int i = 0; i < COROS; i++)
        rt_go(worker, &warm);
    rt_wg_wait(&wg, NULL);
    worker_arg a = {d, g_n / COROS, &wg};
    int64_t t0 = bz_now_ns();
    rt_wg_add(&wg, COROS);
    for (int i = 0; i < COROS; i++)
        rt_go(worker, &a);
    rt_wg_wait(&wg, NULL);
    g_qps = (double)(a.n * COROS) / ((double)(bz_now_ns() - t0) / 1e9);
    rt_wg_destroy(&wg);
    db_close(d);
}

static double pool(const char *url, int64_t n)
{
    g_url = url;
    g_n = n;
    rt_options o = {.threads = 1};
    rt_run(&o, pool_main, NULL);
    return g_qps;
}

/* ---- setup ---- */

static void setup_main(void *p)
{
    const char *url = p;
    db_opts o = {1, 1, 0, 0, false};
    bz_error e;
    db *d = db_open(url, &o, &e);
    db_exec_script(DB(d), NULL, "DROP TABLE IF EXISTS items; CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT, price BIGINT)", &e);
    db_tx *tx;
    db_begin(d, NULL, NULL, &tx, &e);
    for (int i = 1; i <= ROWS; i++) {
        char name[32];
        snprintf(name, sizeof name, "item number %d", i);
        db_exec(TX(tx), NULL, "INSERT INTO items VALUES ($1, $2, $3)", (db_arg[]){DB_INT(i), DB_TEXT(name), DB_INT(i * 7)},
                3, NULL, &e);
    }
    db_commit(tx, &e);
    db_rollback(tx); /* frees */
    db_exec_script(DB(d), NULL, "ANALYZE", &e);
    db_close(d);
}

static void setup(const char *url)
{
    rt_options o = {.threads = 1};
    rt_run(&o, setup_main, (void *)url);
}

static void compare(const char *label, const char *floor_label, double (*floor)(const char *, int64_t),
                    const char *floor_arg, const char *url, int64_t n, const char *target)
{
    double f[ROUNDS], p[ROUNDS], ratio[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        f[r] = floor(floor_arg, n);
        p[r] = pool(url, n);
        ratio[r] = p[r] / f[r];
    }
    qsort(f, ROUNDS, sizeof f[0], cmp);
    qsort(p, ROUNDS, sizeof p[0], cmp);
    qsort(ratio, ROUNDS, sizeof ratio[0], cmp);
    printf("%-10s %-32s %12.0f q/s\n", label, floor_label, f[ROUNDS / 2]);
    printf("%-10s %-32s %12.0f q/s   ratio %.2f (rounds %.2f..%.2f; %s)\n", label,
           "pool, 64 coroutines, 1 loop", p[ROUNDS / 2], ratio[ROUNDS / 2], ratio[0], ratio[ROUNDS - 1], target);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_db SQLITE_PATH [POSTGRES_URL]\n");
        return 2;
    }
    char url[512];
    snprintf(url, sizeof url, "sqlite://%s", argv[1]);
    setup(url);
    printf("%-10s %-32s %16s\n", "db bench", "(PK SELECT of 3 columns, 10k rows)", "median of 5");
    compare("sqlite", "bare prepared sqlite3_step loop", bare_sqlite, argv[1], url, 400000,
            "target >= 0.90, i.e. <= 10% overhead");
    if (argc > 2) {
        setup(argv[2]);
        compare("postgres", "sync one-connection libpq loop", sync_libpq, argv[2], argv[2], 60000, "target >= 2.0");
    }
    return 0;
}

/* db/migrate.c — versioned, per-dialect schema migrations.  Each one runs
 * in its own transaction together with its row in schema_migrations, so a
 * migration is either fully applied and recorded or not at all.  Two
 * processes migrating at once serialise on a transaction-scoped advisory
 * lock (PostgreSQL) or the write lock (SQLite), and the second one sees
 * the first one's record and skips. */
#include "db/db-private.h"

#include <bazaar/log.h>

#include <errno.h>
#include <string.h>

/* "bazaar" in ASCII: the advisory lock key for migrations. */
#define MIGRATION_LOCK 0x62617a616172LL

typedef struct {
    const db_migration *m;
    bool ran;
} step_arg;

static int step(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    step_arg *a = p;
    db *d = tx->d;
    int r;
    a->ran = false;
    if (d->dialect == DB_POSTGRES &&
        (r = db_exec(TX(tx), ctx, "SELECT pg_advisory_xact_lock($1)", (db_arg[]){DB_INT(MIGRATION_LOCK)}, 1,
                     NULL, err)))
        return r;
    if ((r = db_exec_script(TX(tx), ctx,
                            "CREATE TABLE IF NOT EXISTS schema_migrations ("
                            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
                            err)))
        return r;
    db_rows *rows;
    r = db_query_row(TX(tx), ctx, "SELECT version FROM schema_migrations WHERE version = $1",
                     (db_arg[]){DB_INT(a->m->version)}, 1, &rows, err);
    if (r == 0) {
        db_rows_close(rows);
        return 0; /* already applied */
    }
    if (r != DB_NO_ROWS)
        return r;
    const char *sql = d->dialect == DB_POSTGRES ? a->m->postgres_sql : a->m->sqlite_sql;
    if (sql && *sql && (r = db_exec_script(TX(tx), ctx, sql, err)))
        return r;
    if ((r = db_exec(TX(tx), ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                     (db_arg[]){DB_INT(a->m->version), DB_TEXT(a->m->name), DB_TIME(bz_wall_us())}, 3, NULL,
                     err)))
        return r;
    a->ran = true;
    return 0;
}

int db_migrate(db *d, rt_ctx *ctx, const db_migration *m, int n, int *applied, bz_error *err)
{
    int count = 0;
    for (int i = 0; i < n; i++) {
        if (i && m[i].version <= m[i - 1].version)
            return bz_err_set(err, BZ_ERR_INVALID, "migrations out of order at version %d", m[i].version), -EINVAL;
        step_arg a = {&m[i], false};
        /* Read committed on PostgreSQL: the check after the lock must see
         * what the previous holder committed. */
        db_tx_opts o = {.isolation = DB_DEFAULT};
        int r = db_run_tx(d, ctx, &o, step, &a, err);
        if (r) {
            bz_error e2 = err ? *err : (bz_error){0};
            bz_err_set(err, e2.kind, "migration %d (%s): %s", m[i].version, m[i].name, e2.msg);
            return r;
        }
        if (a.ran) {
            count++;
            bz_log_info("migration applied", BZ_F_INT("version", m[i].version), BZ_F_STR("name", m[i].name));
        }
    }
    if (applied)
        *applied = count;
    return 0;
}

/* app/explain.c — `bazaar explain`: the plan of every hot query on the
 * configured database, and whether it reads through an index.
 *
 * A query fails the check when its plan reads a whole table: SQLite's
 * "SCAN <table>" (without an index) or PostgreSQL's "Seq Scan on
 * <table>".  The exit status is the number of failing queries (capped at
 * 1), so CI can run it after seeding and ANALYZE. */
#include "app/app-private.h"
#include "app/svc/sql.h"

#include <bazaar/clock.h>

#include <stdio.h>
#include <string.h>

static const char *const tables[] = {"users", "accounts", "transfers", "items", "orders",
                                     "order_lines", "fulfilment_jobs", "idempotency_records", "meta"};

/* PostgreSQL: does this plan line read a whole table? */
static bool pg_scans_table(const char *line)
{
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        char pat[64];
        snprintf(pat, sizeof pat, "Seq Scan on %s", tables[i]);
        const char *p = strstr(line, pat);
        if (p && (p[strlen(pat)] == '\0' || p[strlen(pat)] == ' '))
            return true;
    }
    return false;
}

/* SQLite: "SCAN x" without an index reads all of x, unless x is a
 * subquery the plan declared ("CO-ROUTINE x", "MATERIALIZE x") or a
 * constant row.  Table aliases appear as themselves ("SCAN o"), so any
 * other name counts as a table. */
static bool lite_scans_table(char lines[][256], int n, int i)
{
    const char *p = strstr(lines[i], "SCAN ");
    if (!p || strstr(p, "USING") || strstr(p, "CONSTANT ROW") || !strncmp(p + 5, "(subquery", 9))
        return false;
    char name[128];
    if (sscanf(p + 5, "%127s", name) != 1)
        return false;
    for (int k = 0; k < n; k++) {
        char decl[160];
        snprintf(decl, sizeof decl, "CO-ROUTINE %s", name);
        if (strstr(lines[k], decl))
            return false;
        snprintf(decl, sizeof decl, "MATERIALIZE %s", name);
        if (strstr(lines[k], decl))
            return false;
    }
    return true;
}

int app_explain(app *a, rt_ctx *ctx, FILE *out)
{
    bool pg = a->dialect == DB_POSTGRES;
    /* The statements the operations run (app/svc/sql.c), with their
     * sample arguments: nothing here is a copy. */
    int nq = 0;
    int failed = 0;
    /* PostgreSQL plans tiny or empty tables (no transfers yet, say) as
     * sequential scans whatever the indexes.  The question here is whether
     * an index can serve each query, so sequential scans are priced out
     * for this transaction: a query that still scans has no usable index. */
    db_tx *tx = NULL;
    bz_error te;
    if (db_begin(a->db, ctx, &(db_tx_opts){.read_only = true}, &tx, &te) != 0) {
        fprintf(out, "cannot start a transaction: %s\n", te.msg);
        return 1;
    }
    if (pg && db_exec(TX(tx), ctx, "SET LOCAL enable_seqscan = off", NULL, 0, NULL, &te) != 0) {
        fprintf(out, "cannot SET enable_seqscan: %s\n", te.msg);
        db_rollback(tx);
        return 1;
    }
    for (int i = 0; i < svc_sql_count; i++) {
        const svc_sql *q = svc_sql_all[i];
        if (!q->explain)
            continue;
        const char *sql = svc_sql_text(TX(tx), q);
        if (!sql)
            continue; /* one dialect's statement (the other never runs it) */
        nq++;
        bz_buf x = BZ_BUF_INIT;
        bz_buf_append_c(&x, pg ? "EXPLAIN " : "EXPLAIN QUERY PLAN ");
        bz_buf_append_c(&x, sql);
        db_rows *rows = NULL;
        bz_error e;
        if (db_query(TX(tx), ctx, x.data, q->sample, q->nsample, &rows, &e) != 0) {
            fprintf(out, "FAIL  %s\n      cannot explain: %s\n", q->name, e.msg);
            bz_buf_free(&x);
            failed++;
            continue;
        }
        bz_buf plan = BZ_BUF_INIT;
        bool bad = false;
        int detail = pg ? 0 : 3; /* SQLite: id, parent, notused, detail */
        static char lines[64][256];
        int nl = 0;
        while (db_rows_next(rows) && nl < 64) {
            snprintf(lines[nl], sizeof lines[nl], "%s", db_col_text(rows, detail, NULL));
            bz_buf_printf(&plan, "      %s\n", lines[nl]);
            nl++;
        }
        db_rows_close(rows);
        for (int k = 0; k < nl; k++)
            bad |= pg ? pg_scans_table(lines[k]) : lite_scans_table(lines, nl, k);
        fprintf(out, "%s  %s\n%s", bad ? "FAIL" : "ok  ", q->name, plan.data ? plan.data : "");
        failed += bad;
        bz_buf_free(&plan);
        bz_buf_free(&x);
    }
    db_rollback(tx);
    fprintf(out, "%d of %d hot queries use an index%s\n", nq - failed, nq, failed ? "; the rest scan a table" : "");
    return failed ? 1 : 0;
}

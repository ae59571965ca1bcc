/* app/explain.c — `bazaar explain`: the plan of every hot query on the
 * configured database, and whether it reads through an index.
 *
 * A query fails the check when its plan reads a whole table: SQLite's
 * "SCAN <table>" (without an index) or PostgreSQL's "Seq Scan on
 * <table>".  The exit status is the number of failing queries (capped at
 * 1), so CI can run it after seeding and ANALYZE. */
#include "app/app-private.h"

#include "base/clock.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    const char *sql;      /* both dialects, unless sql_pg is set */
    const char *sql_pg;
    db_arg args[6];
    int nargs;
} hot_query;

#define T_TOP DB_TIME(API_CURSOR_TOP_US)

static const char *const tables[] = {"users", "accounts", "transfers", "items", "orders",
                                     "order_lines", "fulfilment_jobs", "idempotency_keys", "meta"};

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
    hot_query q[] = {
        {"user by id (GET /v1/users/{id}, /v1/me, leaderboard names)",
         "SELECT id, email, name, created_at FROM users WHERE id = $1", NULL, {DB_INT(1)}, 1},
        {"user by email (GET /v1/users?email=)", "SELECT id, email, name, created_at FROM users WHERE email = $1",
         NULL, {DB_TEXT("user1@example.com")}, 1},
        {"login", "SELECT id, password_hash FROM users WHERE email = $1", NULL, {DB_TEXT("user1@example.com")}, 1},
        {"accounts of a user", "SELECT id, user_id, currency, balance_cents, created_at FROM accounts WHERE user_id = $1 ORDER BY currency",
         NULL, {DB_INT(1)}, 1},
        {"account by id", "SELECT id, user_id, currency, balance_cents, created_at FROM accounts WHERE id = $1", NULL,
         {DB_INT(1)}, 1},
        {"transfer pair", "SELECT id, user_id, currency, balance_cents FROM accounts WHERE id IN ($1, $2)", NULL,
         {DB_INT(1), DB_INT(2)}, 2},
        {"transfers of an account (both directions, keyset)",
         "SELECT * FROM (SELECT * FROM (SELECT id, created_at FROM transfers WHERE from_account_id = $1 "
         "AND (created_at < $2 OR (created_at = $2 AND id < $3)) ORDER BY created_at DESC, id DESC LIMIT $4) f "
         "UNION ALL SELECT * FROM (SELECT id, created_at FROM transfers WHERE to_account_id = $1 "
         "AND (created_at < $2 OR (created_at = $2 AND id < $3)) ORDER BY created_at DESC, id DESC LIMIT $4) t) u "
         "ORDER BY created_at DESC, id DESC LIMIT $4",
         NULL, {DB_INT(1), T_TOP, DB_INT(INT64_MAX), DB_INT(21)}, 4},
        {"transfer by id", "SELECT t.id FROM transfers t JOIN accounts f ON f.id = t.from_account_id "
                           "JOIN accounts o ON o.id = t.to_account_id WHERE t.id = $1 AND (f.user_id = $2 OR o.user_id = $2)",
         NULL, {DB_INT(1), DB_INT(1)}, 2},
        {"item by id (cache miss)", "SELECT id, name FROM items WHERE id = $1 AND deleted_at IS NULL", NULL,
         {DB_INT(1)}, 1},
        {"items page (keyset)", "SELECT id, name FROM items WHERE id > $1 AND deleted_at IS NULL ORDER BY id LIMIT $2",
         NULL, {DB_INT(0), DB_INT(21)}, 2},
        {"items of a seller (keyset)",
         "SELECT id, name FROM items WHERE seller_id = $1 AND id > $2 AND deleted_at IS NULL ORDER BY id LIMIT $3", NULL,
         {DB_INT(1), DB_INT(0), DB_INT(21)}, 3},
        {"orders of a user with their lines (keyset)",
         "SELECT o.id, (SELECT group_concat(x, ',') FROM (SELECT item_id || ':' || quantity AS x FROM order_lines "
         "WHERE order_id = o.id ORDER BY line_no)) FROM orders o WHERE o.customer_id = $1 AND (o.created_at < $2 OR "
         "(o.created_at = $2 AND o.id < $3)) ORDER BY o.created_at DESC, o.id DESC LIMIT $4",
         "SELECT o.id, (SELECT string_agg(item_id || ':' || quantity, ',' ORDER BY line_no) FROM order_lines "
         "WHERE order_id = o.id) FROM orders o WHERE o.customer_id = $1 AND (o.created_at < $2 OR "
         "(o.created_at = $2 AND o.id < $3)) ORDER BY o.created_at DESC, o.id DESC LIMIT $4",
         {DB_INT(1), T_TOP, DB_INT(INT64_MAX), DB_INT(21)}, 4},
        {"orders of a user by status with their lines (keyset)",
         "SELECT o.id, (SELECT group_concat(x, ',') FROM (SELECT item_id || ':' || quantity AS x FROM order_lines "
         "WHERE order_id = o.id ORDER BY line_no)) FROM orders o WHERE o.customer_id = $1 AND o.status = $2 AND "
         "(o.created_at < $3 OR (o.created_at = $3 AND o.id < $4)) ORDER BY o.created_at DESC, o.id DESC LIMIT $5",
         "SELECT o.id, (SELECT string_agg(item_id || ':' || quantity, ',' ORDER BY line_no) FROM order_lines "
         "WHERE order_id = o.id) FROM orders o WHERE o.customer_id = $1 AND o.status = $2 AND "
         "(o.created_at < $3 OR (o.created_at = $3 AND o.id < $4)) ORDER BY o.created_at DESC, o.id DESC LIMIT $5",
         {DB_INT(1), DB_TEXT("paid"), T_TOP, DB_INT(INT64_MAX), DB_INT(21)}, 5},
        {"order by id", "SELECT id, status FROM orders WHERE id = $1", NULL, {DB_INT(1)}, 1},
        {"lines of an order", "SELECT item_id, quantity FROM order_lines WHERE order_id = $1 ORDER BY line_no", NULL,
         {DB_INT(1)}, 1},
        {"sellers to credit on pay",
         "SELECT i.seller_id, l.quantity * l.unit_price_cents FROM order_lines l JOIN items i ON i.id = l.item_id "
         "WHERE l.order_id = $1 ORDER BY i.seller_id",
         NULL, {DB_INT(1)}, 1},
        {"seller account upsert target", "SELECT id FROM accounts WHERE user_id = $1 AND currency = $2", NULL,
         {DB_INT(1), DB_TEXT("USD")}, 2},
        {"idempotency record", "SELECT fingerprint, status FROM idempotency_keys WHERE user_id = $1 AND key = $2", NULL,
         {DB_INT(1), DB_TEXT("k")}, 2},
        {"due fulfilment jobs", "SELECT id, order_id FROM fulfilment_jobs WHERE run_at <= $1 ORDER BY run_at LIMIT 1",
         NULL, {DB_TIME(0)}, 1},
    };
    int nq = sizeof q / sizeof q[0];
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
    for (int i = 0; i < nq; i++) {
        const char *sql = pg && q[i].sql_pg ? q[i].sql_pg : q[i].sql;
        bz_buf x = BZ_BUF_INIT;
        bz_buf_append_c(&x, pg ? "EXPLAIN " : "EXPLAIN QUERY PLAN ");
        bz_buf_append_c(&x, sql);
        db_rows *rows = NULL;
        bz_error e;
        if (db_query(TX(tx), ctx, x.data, q[i].args, q[i].nargs, &rows, &e) != 0) {
            fprintf(out, "FAIL  %s\n      cannot explain: %s\n", q[i].name, e.msg);
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
        fprintf(out, "%s  %s\n%s", bad ? "FAIL" : "ok  ", q[i].name, plan.data ? plan.data : "");
        failed += bad;
        bz_buf_free(&plan);
        bz_buf_free(&x);
    }
    db_rollback(tx);
    fprintf(out, "%d of %d hot queries use an index%s\n", nq - failed, nq, failed ? "; the rest scan a table" : "");
    return failed ? 1 : 0;
}

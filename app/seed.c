/* app/seed.c — `bazaar seed` (API.md §9): deterministic demo data.
 *
 * Everything derives from --seed through splitmix64, ids are explicit and
 * timestamps start at a fixed epoch, so the same flags on an empty
 * database give the same rows.  Rows go in multi-row INSERTs (only
 * placeholders are generated), one transaction per batch.  Seeded orders
 * do not move money: every account keeps 1,000,000 cents as §9 says. */
#include "app/app-private.h"
#include "app/svc/password.h"

#include <bazaar/clock.h>
#include <bazaar/log.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_ROWS 200
#define EPOCH_US 1767225600000000LL /* 2026-01-01T00:00:00Z */

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

typedef struct {
    app *a;
    const char *head; /* "INSERT INTO t (a, b) VALUES " */
    int ncols;
    db_arg *args;
    char **owned; /* strings to free after the flush */
    int nowned;
    int nrows, cap;
    bz_error *err;
    int64_t total;
} batch;

static void batch_init(batch *b, app *a, const char *head, int ncols, bz_error *err)
{
    memset(b, 0, sizeof *b);
    b->a = a;
    b->head = head;
    b->ncols = ncols;
    b->cap = BATCH_ROWS;
    b->args = calloc((size_t)(ncols * BATCH_ROWS), sizeof *b->args);
    b->owned = calloc((size_t)(ncols * BATCH_ROWS), sizeof *b->owned);
    if (!b->args || !b->owned)
        abort();
    b->err = err;
}

static int batch_flush(batch *b)
{
    if (b->nrows == 0)
        return 0;
    bz_buf sql = BZ_BUF_INIT;
    bz_buf_append_c(&sql, b->head);
    int k = 1;
    for (int r = 0; r < b->nrows; r++) {
        bz_buf_append_c(&sql, r ? ",(" : "(");
        for (int c = 0; c < b->ncols; c++)
            bz_buf_printf(&sql, c ? ",$%d" : "$%d", k++);
        bz_buf_putc(&sql, ')');
    }
    db_tx *tx DB_TX_SCOPE = NULL;
    int rc = db_begin(b->a->db, NULL, &(db_tx_opts){0}, &tx, b->err);
    if (rc == 0)
        rc = db_exec(TX(tx), NULL, sql.data, b->args, b->nrows * b->ncols, NULL, b->err);
    if (rc == 0)
        rc = db_commit(tx, b->err);
    bz_buf_free(&sql);
    for (int i = 0; i < b->nowned; i++)
        free(b->owned[i]);
    b->nowned = 0;
    b->total += b->nrows;
    b->nrows = 0;
    return rc;
}

/* Adds one row; the args are copied (strings must stay valid until the
 * flush, or be passed through batch_str). */
static int batch_add(batch *b, const db_arg *row)
{
    memcpy(&b->args[b->nrows * b->ncols], row, (size_t)b->ncols * sizeof *row);
    if (++b->nrows == b->cap)
        return batch_flush(b);
    return 0;
}

static const char *batch_str(batch *b, const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    b->owned[b->nowned++] = d;
    return d;
}

static void batch_free(batch *b)
{
    for (int i = 0; i < b->nowned; i++)
        free(b->owned[i]);
    free(b->owned);
    free(b->args);
}

int app_seed(app *a, rt_ctx *ctx)
{
    const app_config *cfg = a->cfg;
    int64_t nu = cfg->seed_users, ni = cfg->seed_items, no = cfg->seed_orders;
    bz_error e;
    db_rows *rows = NULL;
    if (db_query_row(DB(a->db), ctx, "SELECT COUNT(*) FROM users", NULL, 0, &rows, &e) != 0) {
        fprintf(stderr, "bazaar: seed: %s\n", e.msg);
        return -1;
    }
    int64_t existing = db_col_int(rows, 0);
    db_rows_close(rows);
    if (existing) {
        fprintf(stderr, "bazaar: seed: the database already has %lld users; seed fills an empty database\n",
                (long long)existing);
        return -1;
    }
    if ((ni > 0 || no > 0) && nu < 1) {
        fprintf(stderr, "bazaar: seed: items and orders need --users ≥ 1\n");
        return -1;
    }
    if (no > 0 && ni < 1) {
        fprintf(stderr, "bazaar: seed: orders need --items ≥ 1\n");
        return -1;
    }
    int64_t t0 = bz_now_ns();
    uint64_t st = (uint64_t)cfg->seed_seed;
    batch b;
    int rc = 0;

    /* users and their USD accounts (account id = user id) */
    batch_init(&b, a, "INSERT INTO users (id, email, name, password_hash, created_at) VALUES ", 5, &e);
    for (int64_t i = 1; i <= nu && rc == 0; i++) {
        char email[64], name[32], pw[32], hash[160];
        snprintf(email, sizeof email, "user%lld@example.com", (long long)i);
        snprintf(name, sizeof name, "User %lld", (long long)i);
        int pn = snprintf(pw, sizeof pw, "password%lld", (long long)i);
        svc_pw_hash_seeded(pw, (size_t)pn, (uint64_t)cfg->seed_seed * 1000003ULL + (uint64_t)i, hash);
        /* DB_TEXT evaluates its argument twice: copy first */
        const char *e1 = batch_str(&b, email), *n1 = batch_str(&b, name), *h1 = batch_str(&b, hash);
        db_arg row[] = {DB_INT(i), DB_TEXT(e1), DB_TEXT(n1), DB_TEXT(h1), DB_TIME(EPOCH_US + i)};
        rc = batch_add(&b, row);
    }
    if (rc == 0)
        rc = batch_flush(&b);
    batch_free(&b);
    batch_init(&b, a, "INSERT INTO accounts (id, user_id, currency, balance_cents, created_at) VALUES ", 5, &e);
    for (int64_t i = 1; i <= nu && rc == 0; i++) {
        db_arg row[] = {DB_INT(i), DB_INT(i), DB_TEXT("USD"), DB_INT(1000000), DB_TIME(EPOCH_US + i)};
        rc = batch_add(&b, row);
    }
    if (rc == 0)
        rc = batch_flush(&b);
    batch_free(&b);

    /* items */
    int64_t *price = calloc((size_t)(ni + 1), sizeof *price);
    if (!price)
        abort();
    batch_init(&b, a,
               "INSERT INTO items (id, seller_id, sku, name, price_cents, currency, stock, version, created_at, "
               "updated_at) VALUES ",
               10, &e);
    for (int64_t j = 1; j <= ni && rc == 0; j++) {
        char sku[32], name[48];
        snprintf(sku, sizeof sku, "sku-%lld", (long long)j);
        snprintf(name, sizeof name, "Item %lld", (long long)j);
        price[j] = 100 + (int64_t)(mix(&st) % 9901);
        int64_t t = EPOCH_US + 3600LL * 1000000 + j;
        const char *s1 = batch_str(&b, sku), *n1 = batch_str(&b, name);
        db_arg row[] = {DB_INT(j),     DB_INT((j - 1) % nu + 1),
                        DB_TEXT(s1),   DB_TEXT(n1),
                        DB_INT(price[j]), DB_TEXT("USD"),
                        DB_INT(1000000), DB_INT(1),
                        DB_TIME(t),    DB_TIME(t)};
        rc = batch_add(&b, row);
    }
    if (rc == 0)
        rc = batch_flush(&b);
    batch_free(&b);

    /* orders (1..3 distinct items, quantity 1..5) and their lines */
    batch ob, lb;
    batch_init(&ob, a,
               "INSERT INTO orders (id, customer_id, account_id, status, total_cents, currency, created_at, "
               "updated_at) VALUES ",
               8, &e);
    batch_init(&lb, a, "INSERT INTO order_lines (order_id, line_no, item_id, quantity, unit_price_cents) VALUES ", 5,
               &e);
    for (int64_t k = 1; k <= no && rc == 0; k++) {
        int64_t cust = (k - 1) % nu + 1;
        int nl = 1 + (int)(mix(&st) % 3);
        int64_t items[3];
        int64_t total = 0;
        for (int l = 0; l < nl && rc == 0; l++) {
            int64_t it;
            bool dup;
            do {
                it = 1 + (int64_t)(mix(&st) % (uint64_t)ni);
                dup = false;
                for (int m = 0; m < l; m++)
                    dup |= items[m] == it;
            } while (dup && ni >= 3);
            items[l] = it;
            int64_t q = 1 + (int64_t)(mix(&st) % 5);
            total += q * price[it];
            db_arg row[] = {DB_INT(k), DB_INT(l + 1), DB_INT(it), DB_INT(q), DB_INT(price[it])};
            rc = batch_add(&lb, row);
        }
        bool paid = mix(&st) % 2;
        int64_t t = EPOCH_US + 86400LL * 1000000 + k * 1000000;
        db_arg row[] = {DB_INT(k),   DB_INT(cust), DB_INT(cust), DB_TEXT(paid ? "paid" : "pending"),
                        DB_INT(total), DB_TEXT("USD"), DB_TIME(t), DB_TIME(t)};
        if (rc == 0) {
            /* the order row must exist before its lines (foreign key) */
            rc = batch_add(&ob, row);
        }
        if (rc == 0 && lb.nrows + 3 >= lb.cap) {
            rc = batch_flush(&ob);
            if (rc == 0)
                rc = batch_flush(&lb);
        }
    }
    if (rc == 0)
        rc = batch_flush(&ob);
    if (rc == 0)
        rc = batch_flush(&lb);
    batch_free(&ob);
    batch_free(&lb);
    free(price);

    /* explicit ids leave PostgreSQL's identity sequences behind */
    if (rc == 0 && a->dialect == DB_POSTGRES)
        rc = db_exec_script(DB(a->db), ctx,
                            "SELECT setval(pg_get_serial_sequence('users', 'id'), GREATEST((SELECT MAX(id) FROM users), 1));"
                            "SELECT setval(pg_get_serial_sequence('accounts', 'id'), GREATEST((SELECT MAX(id) FROM accounts), 1));"
                            "SELECT setval(pg_get_serial_sequence('items', 'id'), GREATEST((SELECT MAX(id) FROM items), 1));"
                            "SELECT setval(pg_get_serial_sequence('orders', 'id'), GREATEST((SELECT MAX(id) FROM orders), 1));",
                            &e);
    if (rc == 0)
        rc = db_exec_script(DB(a->db), ctx, "ANALYZE", &e);
    if (rc != 0) {
        fprintf(stderr, "bazaar: seed: %s\n", e.msg);
        return -1;
    }
    printf("seeded %lld users, %lld items, %lld orders in %.1f s\n", (long long)nu, (long long)ni, (long long)no,
           (double)(bz_now_ns() - t0) / 1e9);
    return 0;
}

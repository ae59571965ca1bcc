/* app/orders.c — orders, payment, fulfilment, order events and the
 * spenders leaderboard (API.md §6, §7).
 *
 * Status machine: pending → paid → shipped, pending → cancelled.  Every
 * change commits first, then publishes {"order_id","status","at"} on the
 * customer's channel "orders:<user>".  Paying commits a fulfilment job in
 * the same transaction (durable: a restart never strands a paid order);
 * the worker below ships due jobs. */
#include "app/app-private.h"

#include "base/clock.h"
#include "base/log.h"
#include "base/rand.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ORDER_COLS "id, customer_id, account_id, status, total_cents, currency, created_at, updated_at"
#define MAX_LINES 50
/* An order's lines as one column, "item:qty:price,..." in line order, so a
 * page of orders is one query (one round trip) with its lines. */
#define LINES_LITE                                                                                                 \
    "(SELECT group_concat(x, ',') FROM (SELECT item_id || ':' || quantity || ':' || unit_price_cents AS x "      \
    "FROM order_lines WHERE order_id = o.id ORDER BY line_no))"
#define LINES_PG                                                                                                   \
    "(SELECT string_agg(item_id || ':' || quantity || ':' || unit_price_cents, ',' ORDER BY line_no) "           \
    "FROM order_lines WHERE order_id = o.id)"
#define O_COLS "o.id, o.customer_id, o.account_id, o.status, o.total_cents, o.currency, o.created_at, o.updated_at, "
#define SHIP_DELAY_US 1000000      /* "fulfilment" takes a second */
#define WORKER_POLL_NS (250 * BZ_NS_PER_MS)

/* Writes the order object; lines is a ready JSON array or NULL (then the
 * lines are read with q). */
static void order_head_json(bz_buf *b, db_rows *rows)
{
    size_t n;
    const char *s;
    bz_buf_putc(b, '{');
    jw_i64(b, "id", db_col_int(rows, 0));
    jw_i64(b, "customer_id", db_col_int(rows, 1));
    jw_i64(b, "account_id", db_col_int(rows, 2));
    s = db_col_text(rows, 3, &n);
    jw_strn(b, "status", s, n);
    jw_i64(b, "total_cents", db_col_int(rows, 4));
    s = db_col_text(rows, 5, &n);
    jw_strn(b, "currency", s, n);
}

static void line_json(bz_buf *b, int64_t item, int64_t qty, int64_t price);

/* Writes "lines":[...] from the packed column 8. */
static void lines_json(bz_buf *b, db_rows *rows)
{
    size_t n = 0;
    const char *p = db_col_is_null(rows, 8) ? "" : db_col_text(rows, 8, &n);
    jw_key(b, "lines");
    bz_buf_putc(b, '[');
    size_t i = 0;
    while (i < n) {
        int64_t v[3] = {0, 0, 0};
        for (int k = 0; k < 3; k++) {
            size_t j = i;
            while (j < n && p[j] != ':' && p[j] != ',')
                j++;
            bz_str_to_i64(bz_str_make(p + i, j - i), &v[k]);
            i = j + 1;
        }
        line_json(b, v[0], v[1], v[2]);
    }
    bz_buf_putc(b, ']');
}

static void order_tail_json(bz_buf *b, db_rows *rows)
{
    jw_time(b, "created_at", db_col_time(rows, 6));
    jw_time(b, "updated_at", db_col_time(rows, 7));
    bz_buf_putc(b, '}');
}

static void line_json(bz_buf *b, int64_t item, int64_t qty, int64_t price)
{
    jw_sep(b);
    bz_buf_putc(b, '{');
    jw_i64(b, "item_id", item);
    jw_i64(b, "quantity", qty);
    jw_i64(b, "unit_price_cents", price);
    bz_buf_putc(b, '}');
}

/* Loads order id as JSON.  0, DB_NO_ROWS, or -1.  *customer and status
 * (≥ 16 bytes) are filled when not NULL. */
static int load_order(db_q q, rt_ctx *ctx, int64_t id, bz_buf *out, int64_t *customer, char *status,
                      bz_error *err)
{
    db_rows *rows = NULL;
    db_arg args[] = {DB_INT(id)};
    bool pg = db_q_dialect(q) == DB_POSTGRES;
    int rc = db_query_row(q, ctx,
                          pg ? "SELECT " O_COLS LINES_PG " FROM orders o WHERE o.id = $1"
                             : "SELECT " O_COLS LINES_LITE " FROM orders o WHERE o.id = $1",
                          args, 1, &rows, err);
    if (rc != 0)
        return rc;
    if (customer)
        *customer = db_col_int(rows, 1);
    if (status)
        snprintf(status, 16, "%s", db_col_text(rows, 3, NULL));
    order_head_json(out, rows);
    lines_json(out, rows);
    order_tail_json(out, rows);
    db_rows_close(rows);
    return 0;
}

void orders_publish(app *a, int64_t user_id, int64_t order_id, const char *status, int64_t at_us)
{
    char ch[48];
    snprintf(ch, sizeof ch, "orders:%lld", (long long)user_id);
    bz_buf b = BZ_BUF_INIT;
    bz_buf_putc(&b, '{');
    jw_i64(&b, "order_id", order_id);
    jw_str(&b, "status", status);
    jw_time(&b, "at", at_us);
    bz_buf_putc(&b, '}');
    bz_error e;
    rt_ctx c;
    rt_ctx_init_timeout(&c, NULL, 2 * BZ_NS_PER_S);
    if (cache_publish(a->cache, &c, ch, b.data, b.len, &e) != 0)
        bz_log_warn("order event not published", BZ_F_INT("order_id", order_id), BZ_F_STR("error", e.msg));
    rt_ctx_release(&c);
    bz_buf_free(&b);
}

/* ---- POST /v1/orders ---- */

typedef struct {
    int64_t item, qty, price;
} order_line;

typedef struct {
    app *a;
    api_idem *im;
    api_result *res;
    int64_t uid, account;
    order_line lines[MAX_LINES];
    int n;
} create_args;

static int create_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    create_args *x = p;
    api_result *res = x->res;
    res_reset(res);
    db_rows *rows = NULL;
    db_arg acc[] = {DB_INT(x->account)};
    int rc = db_query_row(TX(tx), ctx, "SELECT user_id, currency FROM accounts WHERE id = $1", acc, 1, &rows, err);
    if (rc < 0)
        return -1;
    char currency[8] = "";
    if (rc == 0) {
        if (db_col_int(rows, 0) == x->uid)
            snprintf(currency, sizeof currency, "%s", db_col_text(rows, 1, NULL));
        db_rows_close(rows);
    }
    if (!currency[0]) {
        res_problem(res, 404, "not_found", "account %lld does not exist", (long long)x->account);
        return api_idem_save(x->a, tx, ctx, x->im, res, err);
    }
    /* Check every line before changing anything, so a refusal commits only
     * its idempotency record.  Lines naming the same item add up. */
    int64_t total = 0;
    for (int i = 0; i < x->n; i++) {
        db_arg it[] = {DB_INT(x->lines[i].item)};
        rc = db_query_row(TX(tx), ctx,
                          "SELECT price_cents, currency, stock FROM items WHERE id = $1 AND deleted_at IS NULL", it,
                          1, &rows, err);
        if (rc < 0)
            return -1;
        if (rc == DB_NO_ROWS) {
            res_problem(res, 404, "not_found", "item %lld does not exist", (long long)x->lines[i].item);
            return api_idem_save(x->a, tx, ctx, x->im, res, err);
        }
        x->lines[i].price = db_col_int(rows, 0);
        bool same_cur = strcmp(db_col_text(rows, 1, NULL), currency) == 0;
        int64_t stock = db_col_int(rows, 2);
        db_rows_close(rows);
        if (!same_cur) {
            res_problem(res, 422, "currency_mismatch", "item %lld is not sold in %s", (long long)x->lines[i].item,
                        currency);
            return api_idem_save(x->a, tx, ctx, x->im, res, err);
        }
        int64_t want = 0;
        for (int k = 0; k < x->n; k++)
            if (x->lines[k].item == x->lines[i].item)
                want += x->lines[k].qty;
        if (stock < want) {
            res_problem(res, 409, "out_of_stock", "item %lld has %lld in stock", (long long)x->lines[i].item,
                        (long long)stock);
            return api_idem_save(x->a, tx, ctx, x->im, res, err);
        }
        total += x->lines[i].price * x->lines[i].qty;
    }
    int64_t now = bz_wall_us();
    for (int i = 0; i < x->n; i++) {
        db_arg u[] = {DB_INT(x->lines[i].qty), DB_TIME(now), DB_INT(x->lines[i].item)};
        int64_t aff = 0;
        if (db_exec(TX(tx), ctx,
                    "UPDATE items SET stock = stock - $1, version = version + 1, updated_at = $2 "
                    "WHERE id = $3 AND stock >= $1",
                    u, 3, &aff, err) != 0)
            return -1;
        if (aff != 1)
            return bz_err_set(err, BZ_ERR_SERIALIZATION, "stock changed under the transaction"), -1;
    }
    db_arg ins[] = {DB_INT(x->uid), DB_INT(x->account), DB_INT(total), DB_TEXT(currency), DB_TIME(now)};
    if (db_query_row(TX(tx), ctx,
                     "INSERT INTO orders (customer_id, account_id, status, total_cents, currency, created_at, "
                     "updated_at) VALUES ($1, $2, 'pending', $3, $4, $5, $5) RETURNING id",
                     ins, 5, &rows, err) != 0)
        return -1;
    int64_t id = db_col_int(rows, 0);
    db_rows_close(rows);
    for (int i = 0; i < x->n; i++) {
        db_arg l[] = {DB_INT(id), DB_INT(i + 1), DB_INT(x->lines[i].item), DB_INT(x->lines[i].qty),
                      DB_INT(x->lines[i].price)};
        if (db_exec(TX(tx), ctx,
                    "INSERT INTO order_lines (order_id, line_no, item_id, quantity, unit_price_cents) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    l, 5, NULL, err) != 0)
            return -1;
    }
    bz_buf *b = &res->body;
    bz_buf_putc(b, '{');
    jw_i64(b, "id", id);
    jw_i64(b, "customer_id", x->uid);
    jw_i64(b, "account_id", x->account);
    jw_str(b, "status", "pending");
    jw_i64(b, "total_cents", total);
    jw_str(b, "currency", currency);
    jw_key(b, "lines");
    bz_buf_putc(b, '[');
    for (int i = 0; i < x->n; i++)
        line_json(b, x->lines[i].item, x->lines[i].qty, x->lines[i].price);
    bz_buf_putc(b, ']');
    jw_time(b, "created_at", now);
    jw_time(b, "updated_at", now);
    bz_buf_putc(b, '}');
    res->status = 201;
    snprintf(res->location, sizeof res->location, "/v1/orders/%lld", (long long)id);
    return api_idem_save(x->a, tx, ctx, x->im, res, err);
}

int orders_create(app *a, http_req *r)
{
    int64_t uid;
    if (api_auth(a, r, &uid))
        return 0;
    json_t *j = api_body(r);
    if (!j)
        return 0;
    jv v;
    jv_init(&v);
    create_args *x = calloc(1, sizeof *x);
    if (!x)
        abort();
    jv_int(&v, j, "account_id", true, 1, INT64_MAX, &x->account);
    json_t *lines = json_object_get(j, "lines");
    if (!lines || json_is_null(lines)) {
        jv_fail(&v, "lines", "is required");
    } else if (!json_is_array(lines) || json_array_size(lines) < 1 || json_array_size(lines) > MAX_LINES) {
        jv_fail(&v, "lines", "must be an array of 1 to 50 lines");
    } else {
        x->n = (int)json_array_size(lines);
        for (int i = 0; i < x->n; i++) {
            json_t *l = json_array_get(lines, (size_t)i);
            char fi[40], fq[40];
            snprintf(fi, sizeof fi, "lines[%d].item_id", i);
            snprintf(fq, sizeof fq, "lines[%d].quantity", i);
            if (!json_is_object(l)) {
                char f[24];
                snprintf(f, sizeof f, "lines[%d]", i);
                jv_fail(&v, f, "must be an object");
                continue;
            }
            /* jv_* name the member; report the indexed path instead */
            jv tmp;
            jv_init(&tmp);
            if (!jv_int(&tmp, l, "item_id", true, 1, INT64_MAX, &x->lines[i].item))
                jv_fail(&v, fi, "must be a positive integer");
            if (!jv_int(&tmp, l, "quantity", true, 1, 1000, &x->lines[i].qty))
                jv_fail(&v, fq, "must be an integer from 1 to 1000");
            jv_free(&tmp);
        }
    }
    json_decref(j);
    if (v.n) {
        free(x);
        return api_invalid(r, &v);
    }
    jv_free(&v);
    api_idem im;
    if (api_idem_begin(a, r, uid, true, &im)) {
        free(x);
        return 0;
    }
    api_result res;
    res_init(&res);
    x->a = a;
    x->im = &im;
    x->res = &res;
    x->uid = uid;
    if (api_tx(a, r, &im, create_tx, x, &res, NULL, NULL) && res.status == 201) {
        for (int i = 0; i < x->n; i++)
            items_cache_invalidate(a, x->lines[i].item);
        orders_list_changed(a, uid);
    }
    res_free(&res);
    free(x);
    return 0;
}

/* ---- GET /v1/orders/{id} ---- */

int orders_get(app *a, http_req *r)
{
    int64_t uid, id, customer = 0;
    if (api_auth(a, r, &uid) || !api_path_id(r, "id", &id))
        return 0;
    bz_buf b = BZ_BUF_INIT;
    bz_error e;
    int rc = load_order(DB(a->db), r->ctx, id, &b, &customer, NULL, &e);
    if (rc < 0) {
        bz_buf_free(&b);
        return api_send_error(r, &e);
    }
    if (rc == DB_NO_ROWS || customer != uid) {
        bz_buf_free(&b);
        return http_send_problem(r, 404, "not_found", "no such order");
    }
    http_send(r, 200, "application/json; charset=utf-8", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

/* ---- GET /v1/users/{id}/orders ---- */

static bool status_ok(const char *s)
{
    return !strcmp(s, "pending") || !strcmp(s, "paid") || !strcmp(s, "shipped") || !strcmp(s, "cancelled");
}

/* Order pages are cached under a per-user version ("olv:<user>", a random
 * value): every committed change of the user's orders (create, pay,
 * cancel, ship) replaces the version before its response leaves, so later
 * reads use new keys and never see the old pages, which simply expire.
 * A reader racing a change may store a page under the version it read;
 * nobody reads that version again.  If the version key is lost (eviction,
 * flush), a new random one starts a fresh namespace: a version is never
 * reused, so an old page can never come back. */
void orders_list_changed(app *a, int64_t uid)
{
    char key[40], v[24];
    snprintf(key, sizeof key, "olv:%lld", (long long)uid);
    int n = snprintf(v, sizeof v, "%016llx", (unsigned long long)bz_rand64());
    bz_error e;
    rt_ctx c;
    rt_ctx_init_timeout(&c, NULL, 2 * BZ_NS_PER_S);
    if (cache_state_set(a->cache, &c, key, v, (size_t)n, 0, &e) != 0)
        bz_log_warn("order list version not bumped", BZ_F_STR("error", e.msg));
    rt_ctx_release(&c);
}

/* The current version, creating one if there is none.  false on a cache
 * error (the caller then reads the database directly). */
static bool list_version(app *a, rt_ctx *ctx, int64_t uid, char out[24])
{
    char key[40];
    snprintf(key, sizeof key, "olv:%lld", (long long)uid);
    bz_buf b = BZ_BUF_INIT;
    bz_error e;
    for (int attempt = 0; attempt < 2; attempt++) {
        int rc = cache_state_get(a->cache, ctx, key, &b, &e);
        if (rc == 0 && b.len > 0 && b.len < 24) {
            memcpy(out, b.data, b.len);
            out[b.len] = '\0';
            bz_buf_free(&b);
            return true;
        }
        if (rc < 0)
            break;
        char v[24];
        int n = snprintf(v, sizeof v, "%016llx", (unsigned long long)bz_rand64());
        bool stored;
        if (cache_set_nx(a->cache, ctx, key, v, (size_t)n, 0, &stored, &e) != 0)
            break;
    }
    bz_buf_free(&b);
    return false;
}

typedef struct {
    app *a;
    int64_t uid;
    const char *status;
    api_cursor cur;
    int limit;
    const char *scope;
} page_args;

static int page_load(void *p, rt_ctx *ctx, bz_buf *b, bz_error *err)
{
    page_args *x = p;
    app *a = x->a;
    db_rows *rows = NULL;
    int rc;
    bool pg = a->dialect == DB_POSTGRES;
    if (x->status) {
        db_arg args[] = {DB_INT(x->uid), DB_TEXT(x->status), DB_TIME(x->cur.t_us), DB_INT(x->cur.id),
                         DB_INT(x->limit + 1)};
#define BY_STATUS                                                                                                  \
    " FROM orders o WHERE o.customer_id = $1 AND o.status = $2 "                                                   \
    "AND (o.created_at < $3 OR (o.created_at = $3 AND o.id < $4)) ORDER BY o.created_at DESC, o.id DESC LIMIT $5"
        rc = db_query(DB(a->db), ctx, pg ? "SELECT " O_COLS LINES_PG BY_STATUS : "SELECT " O_COLS LINES_LITE BY_STATUS,
                      args, 5, &rows, err);
    } else {
        db_arg args[] = {DB_INT(x->uid), DB_TIME(x->cur.t_us), DB_INT(x->cur.id), DB_INT(x->limit + 1)};
#define ALL_ORDERS                                                                                                 \
    " FROM orders o WHERE o.customer_id = $1 "                                                                     \
    "AND (o.created_at < $2 OR (o.created_at = $2 AND o.id < $3)) ORDER BY o.created_at DESC, o.id DESC LIMIT $4"
        rc = db_query(DB(a->db), ctx, pg ? "SELECT " O_COLS LINES_PG ALL_ORDERS : "SELECT " O_COLS LINES_LITE ALL_ORDERS,
                      args, 4, &rows, err);
    }
    if (rc != 0)
        return -1;
    bz_buf_append_c(b, "{\"data\":[");
    int k = 0;
    api_cursor last = {0, 0};
    while (k < x->limit && db_rows_next(rows)) {
        jw_sep(b);
        order_head_json(b, rows);
        lines_json(b, rows);
        order_tail_json(b, rows);
        last.t_us = db_col_time(rows, 6);
        last.id = db_col_int(rows, 0);
        k++;
    }
    bool more = db_rows_count(rows) > x->limit;
    db_rows_close(rows);
    api_page_end(a, b, more, &last, x->scope);
    return 0;
}

int orders_list(app *a, http_req *r)
{
    int64_t uid, id;
    int limit;
    if (api_auth(a, r, &uid) || !api_path_id(r, "id", &id))
        return 0;
    if (id != uid)
        return http_send_problem(r, 404, "not_found", "no such user");
    if (!api_limit(r, &limit))
        return 0;
    const char *status = http_query_get(r, "status");
    if (status && !status_ok(status))
        return http_send_problem_ext(r, 400, "validation_failed", "status must be pending, paid, shipped or cancelled",
                                     "\"errors\":[{\"field\":\"status\",\"message\":\"must be pending, paid, shipped or cancelled\"}]");
    char scope[64];
    snprintf(scope, sizeof scope, "orders:%lld:%s", (long long)uid, status ? status : "");
    page_args x = {a, uid, status, {API_CURSOR_TOP_US, INT64_MAX}, limit, scope};
    if (api_cursor_param(a, r, scope, &x.cur) < 0)
        return 0;
    bz_buf b = BZ_BUF_INIT;
    bz_error e;
    int rc;
    char ver[24];
    if (strcmp(cache_kind(a->cache), "none") != 0 && list_version(a, r->ctx, uid, ver)) {
        char key[160];
        snprintf(key, sizeof key, "olist:%lld:%s:%s:%lld.%lld:%d", (long long)uid, ver, status ? status : "",
                 (long long)x.cur.t_us, (long long)x.cur.id, limit);
        cache_status st = CACHE_LOADED;
        rc = cache_get_or_load(a->cache, r->ctx, key, a->cfg->cache_ttl_ns, page_load, &x, &b, &st, &e);
        http_add_header(r, "Cache-Status", st == CACHE_HIT ? "bazaar; hit" : "bazaar; fwd=miss");
    } else {
        rc = page_load(&x, r->ctx, &b, &e);
    }
    if (rc != 0) {
        bz_buf_free(&b);
        return api_send_error(r, &e);
    }
    http_send(r, 200, "application/json; charset=utf-8", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

/* ---- POST /v1/orders/{id}/pay and /cancel ---- */

typedef struct {
    app *a;
    api_idem *im;
    api_result *res;
    int64_t uid, id;
    bool pay;
    bool changed;         /* the status moved (publish after commit) */
    int64_t total, at_us;
    char currency[8];
    int64_t items[MAX_LINES];
    int nitems;
} state_args;

static int pay_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    state_args *x = p;
    api_result *res = x->res;
    res_reset(res);
    x->changed = false;
    x->nitems = 0;
    db_rows *rows = NULL;
    db_arg oid[] = {DB_INT(x->id)};
    int rc = db_query_row(TX(tx), ctx, "SELECT customer_id, account_id, status, total_cents, currency FROM orders WHERE id = $1",
                          oid, 1, &rows, err);
    if (rc < 0)
        return -1;
    if (rc == DB_NO_ROWS || db_col_int(rows, 0) != x->uid) {
        if (rc == 0)
            db_rows_close(rows);
        res_problem(res, 404, "not_found", "order %lld does not exist", (long long)x->id);
        return api_idem_save(x->a, tx, ctx, x->im, res, err);
    }
    int64_t account = db_col_int(rows, 1);
    char status[16];
    snprintf(status, sizeof status, "%s", db_col_text(rows, 2, NULL));
    x->total = db_col_int(rows, 3);
    snprintf(x->currency, sizeof x->currency, "%s", db_col_text(rows, 4, NULL));
    db_rows_close(rows);
    int64_t now = bz_wall_us();
    x->at_us = now;

    if (x->pay) {
        if (!strcmp(status, "cancelled")) {
            res_problem(res, 409, "order_not_payable", "order %lld is cancelled", (long long)x->id);
            return api_idem_save(x->a, tx, ctx, x->im, res, err);
        }
        if (!strcmp(status, "pending")) {
            db_arg d[] = {DB_INT(x->total), DB_INT(account)};
            int64_t aff = 0;
            if (db_exec(TX(tx), ctx,
                        "UPDATE accounts SET balance_cents = balance_cents - $1 WHERE id = $2 AND balance_cents >= $1",
                        d, 2, &aff, err) != 0)
                return -1;
            if (aff == 0) {
                res_problem(res, 409, "insufficient_funds", "account %lld cannot pay %lld cents", (long long)account,
                            (long long)x->total);
                return api_idem_save(x->a, tx, ctx, x->im, res, err);
            }
            /* Credit each seller's account in this currency (made if
             * missing); one statement per line keeps it simple and the
             * upsert makes repeated sellers add up. */
            if (db_query(TX(tx), ctx,
                         "SELECT i.seller_id, l.quantity * l.unit_price_cents FROM order_lines l "
                         "JOIN items i ON i.id = l.item_id WHERE l.order_id = $1 ORDER BY i.seller_id",
                         oid, 1, &rows, err) != 0)
                return -1;
            int n = db_rows_count(rows);
            int64_t (*credit)[2] = calloc((size_t)(n ? n : 1), sizeof *credit);
            if (!credit)
                abort();
            for (int i = 0; i < n && db_rows_next(rows); i++) {
                credit[i][0] = db_col_int(rows, 0);
                credit[i][1] = db_col_int(rows, 1);
            }
            db_rows_close(rows);
            for (int i = 0; i < n; i++) {
                db_arg c[] = {DB_INT(credit[i][0]), DB_TEXT(x->currency), DB_INT(credit[i][1]), DB_TIME(now)};
                if (db_exec(TX(tx), ctx,
                            "INSERT INTO accounts (user_id, currency, balance_cents, created_at) VALUES ($1, $2, $3, $4) "
                            "ON CONFLICT (user_id, currency) DO UPDATE SET balance_cents = accounts.balance_cents + "
                            "excluded.balance_cents",
                            c, 4, NULL, err) != 0) {
                    free(credit);
                    return -1;
                }
            }
            free(credit);
            db_arg u[] = {DB_TIME(now), DB_INT(x->id)};
            if (db_exec(TX(tx), ctx, "UPDATE orders SET status = 'paid', updated_at = $1 WHERE id = $2", u, 2, NULL,
                        err) != 0)
                return -1;
            /* The job commits with the payment: durable fulfilment. */
            db_arg j[] = {DB_INT(x->id), DB_TIME(now + SHIP_DELAY_US)};
            if (db_exec(TX(tx), ctx, "INSERT INTO fulfilment_jobs (order_id, run_at) VALUES ($1, $2)", j, 2, NULL,
                        err) != 0)
                return -1;
            x->changed = true;
        }
    } else {
        if (!strcmp(status, "paid") || !strcmp(status, "shipped")) {
            res_problem(res, 409, "order_not_cancellable", "order %lld is %s", (long long)x->id, status);
            return api_idem_save(x->a, tx, ctx, x->im, res, err);
        }
        if (!strcmp(status, "pending")) {
            if (db_query(TX(tx), ctx, "SELECT item_id, quantity FROM order_lines WHERE order_id = $1", oid, 1, &rows,
                         err) != 0)
                return -1;
            int64_t back[MAX_LINES][2];
            int n = 0;
            while (n < MAX_LINES && db_rows_next(rows)) {
                back[n][0] = db_col_int(rows, 0);
                back[n][1] = db_col_int(rows, 1);
                n++;
            }
            db_rows_close(rows);
            for (int i = 0; i < n; i++) {
                db_arg u[] = {DB_INT(back[i][1]), DB_TIME(now), DB_INT(back[i][0])};
                if (db_exec(TX(tx), ctx,
                            "UPDATE items SET stock = stock + $1, version = version + 1, updated_at = $2 WHERE id = $3",
                            u, 3, NULL, err) != 0)
                    return -1;
                x->items[x->nitems++] = back[i][0];
            }
            db_arg u[] = {DB_TIME(now), DB_INT(x->id)};
            if (db_exec(TX(tx), ctx, "UPDATE orders SET status = 'cancelled', updated_at = $1 WHERE id = $2", u, 2,
                        NULL, err) != 0)
                return -1;
            x->changed = true;
        }
    }
    if (load_order(TX(tx), ctx, x->id, &res->body, NULL, NULL, err) != 0)
        return -1;
    res->status = 200;
    return api_idem_save(x->a, tx, ctx, x->im, res, err);
}

static void leaderboard_add(app *a, int64_t uid, const char *currency, int64_t cents)
{
    char key[32], member[24];
    snprintf(key, sizeof key, "lb:spenders:%s", currency);
    snprintf(member, sizeof member, "%lld", (long long)uid);
    bz_error e;
    int64_t score;
    rt_ctx c;
    rt_ctx_init_timeout(&c, NULL, 2 * BZ_NS_PER_S);
    if (cache_zincr(a->cache, &c, key, member, cents, &score, &e) != 0)
        bz_log_warn("leaderboard not updated", BZ_F_STR("error", e.msg));
    rt_ctx_release(&c);
}

static int change_state(app *a, http_req *r, bool pay)
{
    int64_t uid, id;
    if (api_auth(a, r, &uid) || !api_path_id(r, "id", &id))
        return 0;
    /* No body is needed; one sent is part of the idempotency fingerprint. */
    api_idem im;
    if (api_idem_begin(a, r, uid, false, &im))
        return 0;
    /* One payer per order across all instances. */
    char lock[48], token[33];
    snprintf(lock, sizeof lock, "order:%lld", (long long)id);
    bz_error e;
    bool locked = false;
    if (pay) {
        int rc = cache_lock(a->cache, r->ctx, lock, 30 * BZ_NS_PER_S, true, token, &e);
        if (rc != 0) {
            api_idem_end(a, r, &im);
            return api_send_error(r, &e);
        }
        locked = true;
    }
    api_result res;
    res_init(&res);
    state_args x = {.a = a, .im = &im, .res = &res, .uid = uid, .id = id, .pay = pay};
    bool ok = api_tx(a, r, &im, pay_tx, &x, &res, NULL, NULL);
    if (locked) {
        bool released;
        rt_ctx c;
        rt_ctx_init_timeout(&c, NULL, 2 * BZ_NS_PER_S);
        cache_unlock(a->cache, &c, lock, token, &released, &e);
        rt_ctx_release(&c);
    }
    if (ok && x.changed) {
        orders_list_changed(a, uid);
        for (int i = 0; i < x.nitems; i++)
            items_cache_invalidate(a, x.items[i]);
        if (pay)
            leaderboard_add(a, uid, x.currency, x.total);
        orders_publish(a, uid, id, pay ? "paid" : "cancelled", x.at_us);
    }
    res_free(&res);
    return 0;
}

int orders_pay(app *a, http_req *r) { return change_state(a, r, true); }
int orders_cancel(app *a, http_req *r) { return change_state(a, r, false); }

/* ---- GET /v1/users/{id}/orders/events (SSE) ---- */

#define HEARTBEAT_NS (15 * BZ_NS_PER_S)

static int sse_flush(app *a, http_req *r)
{
    http_set_write_deadline(r, bz_now_ns() + a->cfg->write_timeout_ns);
    return http_flush(r);
}

int orders_events(app *a, http_req *r)
{
    int64_t uid, id;
    if (api_auth(a, r, &uid) || !api_path_id(r, "id", &id))
        return 0;
    if (id != uid)
        return http_send_problem(r, 404, "not_found", "no such user");
    char ch[48];
    snprintf(ch, sizeof ch, "orders:%lld", (long long)uid);
    cache_sub *sub = NULL;
    bz_error e;
    if (cache_subscribe(a->cache, r->ctx, ch, &sub, &e) != 0)
        return api_send_error(r, &e);
    http_set_status(r, 200);
    http_add_header(r, "Content-Type", "text/event-stream");
    http_add_header(r, "Cache-Control", "no-cache");
    http_add_header(r, "X-Accel-Buffering", "no");
    /* The comment line makes the headers go out now: the client knows it
     * is subscribed. */
    static const char hello[] = ": subscribed\n\n";
    http_write(r, hello, sizeof hello - 1);
    int rc = sse_flush(a, r);
    int64_t next_beat = bz_now_ns() + HEARTBEAT_NS;
    bz_buf msg = BZ_BUF_INIT;
    while (rc == 0 && !http_server_draining(a->srv)) {
        rt_ctx tick;
        rt_ctx_init_timeout(&tick, r->ctx, BZ_NS_PER_S);
        int got = cache_sub_recv(sub, &tick, &msg);
        rt_ctx_release(&tick);
        if (got == 0) {
            static const char ev[] = "event: order\ndata: ";
            http_write(r, ev, sizeof ev - 1);
            http_write(r, msg.data, msg.len);
            http_write(r, "\n\n", 2);
            rc = sse_flush(a, r);
        } else if (got == -EPIPE || rt_ctx_err(r->ctx)) {
            break;
        } else if (bz_now_ns() >= next_beat) {
            static const char beat[] = ": heartbeat\n\n";
            http_write(r, beat, sizeof beat - 1);
            rc = sse_flush(a, r);
            next_beat = bz_now_ns() + HEARTBEAT_NS;
        }
    }
    bz_buf_free(&msg);
    cache_unsubscribe(sub);
    return 0;
}

/* ---- GET /v1/leaderboard/spenders ---- */

/* The leaderboard is derived data: payments add to it, and when the cache
 * lost it (no "built" marker: restart of an in-process cache, FLUSHALL,
 * eviction) it is rebuilt from paid orders, once, under a lock.  A payment
 * committing during the milliseconds of a rebuild may be counted twice or
 * not at all; everything committed before it is exact. */
static int leaderboard_ensure(app *a, rt_ctx *ctx, const char *key, const char *currency, bz_error *err)
{
    char marker[40];
    snprintf(marker, sizeof marker, "lb:built:%s", currency);
    bz_buf v = BZ_BUF_INIT;
    int rc = cache_state_get(a->cache, ctx, marker, &v, err);
    bz_buf_free(&v);
    if (rc != CACHE_MISS)
        return rc < 0 ? -1 : 0;
    char lock[48], token[33];
    snprintf(lock, sizeof lock, "lb:rebuild:%s", currency);
    if (cache_lock(a->cache, ctx, lock, 30 * BZ_NS_PER_S, true, token, err) != 0)
        return -1;
    rc = cache_state_get(a->cache, ctx, marker, &v, err);
    bz_buf_free(&v);
    if (rc == CACHE_MISS) {
        rc = cache_state_del(a->cache, ctx, key, err);
        db_rows *rows = NULL;
        db_arg args[] = {DB_TEXT(currency)};
        if (rc == 0)
            rc = db_query(DB(a->db), ctx,
                          "SELECT customer_id, SUM(total_cents) FROM orders WHERE currency = $1 "
                          "AND status IN ('paid', 'shipped') GROUP BY customer_id",
                          args, 1, &rows, err);
        while (rc == 0 && db_rows_next(rows)) {
            char member[24];
            int64_t score;
            snprintf(member, sizeof member, "%lld", (long long)db_col_int(rows, 0));
            rc = cache_zincr(a->cache, ctx, key, member, db_col_int(rows, 1), &score, err);
        }
        if (rows)
            db_rows_close(rows);
        if (rc == 0)
            rc = cache_state_set(a->cache, ctx, marker, "1", 1, 0, err);
    }
    bool released;
    bz_error e2;
    cache_unlock(a->cache, ctx, lock, token, &released, &e2);
    return rc < 0 ? -1 : 0;
}

int leaderboard_get(app *a, http_req *r)
{
    const char *currency = http_query_get(r, "currency");
    if (!currency)
        currency = "USD";
    if (!currency_ok(currency, strlen(currency)))
        return http_send_problem_ext(r, 400, "validation_failed", "currency must be a 3-letter uppercase code",
                                     "\"errors\":[{\"field\":\"currency\",\"message\":\"must be a 3-letter uppercase ISO 4217 code\"}]");
    int64_t limit = 10;
    const char *ls = http_query_get(r, "limit");
    if (ls && (!bz_str_to_i64(bz_str_c(ls), &limit) || limit < 1 || limit > 100))
        return http_send_problem_ext(r, 400, "validation_failed", "limit must be an integer from 1 to 100",
                                     "\"errors\":[{\"field\":\"limit\",\"message\":\"must be between 1 and 100\"}]");
    char key[32];
    snprintf(key, sizeof key, "lb:spenders:%s", currency);
    bz_error e;
    if (leaderboard_ensure(a, r->ctx, key, currency, &e) != 0)
        return api_send_error(r, &e);
    cache_zentry top[100];
    int n = 0;
    if (cache_ztop(a->cache, r->ctx, key, (int)limit, top, &n, &e) != 0)
        return api_send_error(r, &e);
    bz_buf b = BZ_BUF_INIT;
    bz_buf_append_c(&b, "{\"data\":[");
    for (int i = 0; i < n; i++) {
        int64_t uid = 0;
        bz_str_to_i64(bz_str_c(top[i].member), &uid);
        db_rows *rows = NULL;
        db_arg args[] = {DB_INT(uid)};
        int rc = db_query_row(DB(a->db), r->ctx, "SELECT name FROM users WHERE id = $1", args, 1, &rows, &e);
        if (rc < 0) {
            bz_buf_free(&b);
            return api_send_error(r, &e);
        }
        jw_sep(&b);
        bz_buf_putc(&b, '{');
        jw_i64(&b, "rank", i + 1);
        jw_i64(&b, "user_id", uid);
        if (rc == 0) {
            size_t nl;
            const char *nm = db_col_text(rows, 0, &nl);
            jw_strn(&b, "name", nm, nl);
            db_rows_close(rows);
        } else {
            jw_null(&b, "name");
        }
        jw_i64(&b, "spent_cents", top[i].score);
        bz_buf_putc(&b, '}');
    }
    bz_buf_append_c(&b, "]}");
    http_send(r, 200, "application/json; charset=utf-8", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

/* ---- the fulfilment worker ---- */

/* Ships one due job.  1 shipped (or skipped), 0 nothing due, -1 error. */
typedef struct {
    app *a;
    int64_t order_id, customer;
    bool shipped;
} ship_args;

static int ship_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    ship_args *x = p;
    x->order_id = 0;
    x->shipped = false;
    db_rows *rows = NULL;
    int64_t now = bz_wall_us();
    db_arg due[] = {DB_TIME(now)};
    /* PostgreSQL: SKIP LOCKED lets every instance's worker take a
     * different job.  SQLite has one writer anyway. */
    const char *sql = x->a->dialect == DB_POSTGRES
                          ? "SELECT id, order_id FROM fulfilment_jobs WHERE run_at <= $1 ORDER BY run_at LIMIT 1 "
                            "FOR UPDATE SKIP LOCKED"
                          : "SELECT id, order_id FROM fulfilment_jobs WHERE run_at <= $1 ORDER BY run_at LIMIT 1";
    int rc = db_query_row(TX(tx), ctx, sql, due, 1, &rows, err);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    int64_t job = db_col_int(rows, 0);
    x->order_id = db_col_int(rows, 1);
    db_rows_close(rows);
    db_arg u[] = {DB_TIME(now), DB_INT(x->order_id)};
    rc = db_query_row(TX(tx), ctx,
                      "UPDATE orders SET status = 'shipped', updated_at = $1 WHERE id = $2 AND status = 'paid' "
                      "RETURNING customer_id",
                      u, 2, &rows, err);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        x->customer = db_col_int(rows, 0);
        x->shipped = true;
        db_rows_close(rows);
    }
    db_arg d[] = {DB_INT(job)};
    return db_exec(TX(tx), ctx, "DELETE FROM fulfilment_jobs WHERE id = $1", d, 1, NULL, err);
}

static void worker(void *p)
{
    app *a = p;
    while (!atomic_load(&a->stopping) && !rt_ctx_err(rt_shutdown_ctx())) {
        for (int i = 0; i < 64; i++) {
            ship_args x = {a, 0, 0, false};
            bz_error e;
            rt_ctx c;
            rt_ctx_init_timeout(&c, NULL, 10 * BZ_NS_PER_S);
            db_tx_opts o = {.isolation = a->dialect == DB_POSTGRES ? DB_READ_COMMITTED : DB_SERIALIZABLE};
            int rc = db_run_tx(a->db, &c, &o, ship_tx, &x, &e);
            rt_ctx_release(&c);
            if (rc != 0) {
                bz_log_warn("fulfilment failed; will retry", BZ_F_STR("error", e.msg));
                break;
            }
            if (!x.order_id)
                break;
            if (x.shipped) {
                orders_list_changed(a, x.customer);
                bz_log_info("order shipped", BZ_F_INT("order_id", x.order_id));
                orders_publish(a, x.customer, x.order_id, "shipped", bz_wall_us());
            }
        }
        rt_sleep(rt_shutdown_ctx(), WORKER_POLL_NS);
    }
    rt_wg_done(&a->workers);
}

void fulfil_start(app *a)
{
    rt_wg_init(&a->workers);
    rt_wg_add(&a->workers, 1);
    rt_go(worker, a);
}

void fulfil_stop(app *a)
{
    atomic_store(&a->stopping, true);
    rt_wg_wait(&a->workers, NULL);
    rt_wg_destroy(&a->workers);
}

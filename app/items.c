/* app/items.c — the catalogue (API.md §5).
 *
 * GET /v1/items/{id} is cache-aside through cache_get_or_load: the cached
 * value is the response body itself, so a hit is one cache lookup and a
 * copy.  Every committed change invalidates the entry (and any load of it
 * in flight) before the response leaves, so a writer never reads its own
 * write stale. */
#include "app/app-private.h"

#include "base/clock.h"

#include <stdio.h>
#include <string.h>

#define ITEM_COLS "id, seller_id, sku, name, price_cents, currency, stock, version, created_at, updated_at"

static void item_json(bz_buf *b, db_rows *rows)
{
    size_t n;
    const char *s;
    bz_buf_putc(b, '{');
    jw_i64(b, "id", db_col_int(rows, 0));
    jw_i64(b, "seller_id", db_col_int(rows, 1));
    s = db_col_text(rows, 2, &n);
    jw_strn(b, "sku", s, n);
    s = db_col_text(rows, 3, &n);
    jw_strn(b, "name", s, n);
    jw_i64(b, "price_cents", db_col_int(rows, 4));
    s = db_col_text(rows, 5, &n);
    jw_strn(b, "currency", s, n);
    jw_i64(b, "stock", db_col_int(rows, 6));
    jw_i64(b, "version", db_col_int(rows, 7));
    jw_time(b, "created_at", db_col_time(rows, 8));
    jw_time(b, "updated_at", db_col_time(rows, 9));
    bz_buf_putc(b, '}');
}

/* "item:<id>" (no printf: this is on every item GET) */
static void item_key(int64_t id, char out[40])
{
    memcpy(out, "item:", 5);
    out[5 + bz_fmt_i64(out + 5, id)] = '\0';
}

void items_cache_invalidate(app *a, int64_t item_id)
{
    char key[40];
    item_key(item_id, key);
    bz_error e;
    /* Detached from the request: an invalidation must not be skipped
     * because the client went away after the commit. */
    rt_ctx c;
    rt_ctx_init_timeout(&c, NULL, 2 * BZ_NS_PER_S);
    cache_invalidate(a->cache, &c, key, &e);
    rt_ctx_release(&c);
}

/* ---- GET /v1/items/{id} ---- */

typedef struct {
    app *a;
    int64_t id;
} load_args;

static int item_load(void *p, rt_ctx *ctx, bz_buf *out, bz_error *err)
{
    load_args *x = p;
    db_rows *rows = NULL;
    db_arg args[] = {DB_INT(x->id)};
    int rc = db_query_row(DB(x->a->db), ctx, "SELECT " ITEM_COLS " FROM items WHERE id = $1 AND deleted_at IS NULL",
                          args, 1, &rows, err);
    if (rc == DB_NO_ROWS)
        return CACHE_MISS;
    if (rc < 0)
        return rc;
    item_json(out, rows);
    db_rows_close(rows);
    return 0;
}

/* Strong validator: FNV-1a 64 of the body. */
static void etag_of(const bz_buf *b, char out[24])
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < b->len; i++) {
        h ^= (unsigned char)b->data[i];
        h *= 1099511628211ULL;
    }
    static const char hex[] = "0123456789abcdef";
    out[0] = '"';
    for (int i = 0; i < 16; i++)
        out[1 + i] = hex[(h >> (60 - 4 * i)) & 15];
    out[17] = '"';
    out[18] = '\0';
}

/* If-None-Match (RFC 9110 §13.1.2): "*", or a list of tags compared
 * weakly (W/ ignored). */
bool items_none_match(bz_str inm, const char *etag)
{
    size_t elen = strlen(etag);
    size_t i = 0;
    while (i < inm.n) {
        while (i < inm.n && (inm.p[i] == ' ' || inm.p[i] == '\t' || inm.p[i] == ','))
            i++;
        if (i >= inm.n)
            break;
        if (inm.p[i] == '*')
            return true;
        if (i + 2 <= inm.n && inm.p[i] == 'W' && inm.p[i + 1] == '/')
            i += 2;
        if (i >= inm.n || inm.p[i] != '"')
            return false;
        size_t j = i + 1;
        while (j < inm.n && inm.p[j] != '"')
            j++;
        if (j >= inm.n)
            return false;
        if (j + 1 - i == elen && memcmp(inm.p + i, etag, elen) == 0)
            return true;
        i = j + 1;
    }
    return false;
}

int items_get(app *a, http_req *r)
{
    int64_t id;
    if (!api_path_id(r, "id", &id))
        return 0;
    char key[40];
    item_key(id, key);
    load_args x = {a, id};
    bz_buf b = BZ_BUF_INIT;
    cache_status st = CACHE_LOADED;
    bz_error e;
    int rc = cache_get_or_load(a->cache, r->ctx, key, a->cfg->cache_ttl_ns, item_load, &x, &b, &st, &e);
    http_add_header(r, "Cache-Status", st == CACHE_HIT ? "bazaar; hit" : "bazaar; fwd=miss");
    if (rc == CACHE_MISS) {
        bz_buf_free(&b);
        char d[64];
        snprintf(d, sizeof d, "item %lld does not exist", (long long)id);
        return http_send_problem(r, 404, "not_found", d);
    }
    if (rc < 0) {
        bz_buf_free(&b);
        return api_send_error(r, &e);
    }
    char etag[24];
    etag_of(&b, etag);
    http_add_header(r, "ETag", etag);
    bz_str inm = http_header_get(r, "If-None-Match");
    if (inm.p && items_none_match(inm, etag)) {
        bz_buf_free(&b);
        return http_send(r, 304, NULL, NULL, 0);
    }
    http_send(r, 200, "application/json; charset=utf-8", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

/* ---- GET /v1/items ---- */

int items_list(app *a, http_req *r)
{
    int limit;
    if (!api_limit(r, &limit))
        return 0;
    int64_t seller = 0, offset = -1;
    const char *s = http_query_get(r, "seller_id");
    if (s && (!bz_str_to_i64(bz_str_c(s), &seller) || seller < 1))
        return http_send_problem_ext(r, 400, "validation_failed", "seller_id must be a positive integer",
                                     "\"errors\":[{\"field\":\"seller_id\",\"message\":\"must be a positive integer\"}]");
    s = http_query_get(r, "offset");
    if (s && (!bz_str_to_i64(bz_str_c(s), &offset) || offset < 0 || offset > 1000000000))
        return http_send_problem_ext(r, 400, "validation_failed", "offset must be a non-negative integer",
                                     "\"errors\":[{\"field\":\"offset\",\"message\":\"must be a non-negative integer\"}]");
    char scope[48];
    snprintf(scope, sizeof scope, "items:%lld", (long long)seller);
    api_cursor cur = {0, 0};
    int have = api_cursor_param(a, r, scope, &cur);
    if (have < 0)
        return 0;
    if (have && offset >= 0)
        return http_send_problem(r, 400, "validation_failed", "use either cursor or offset, not both");
    db_rows *rows = NULL;
    bz_error e;
    int rc;
    if (offset >= 0) {
        /* Offset mode: the database walks and drops `offset` rows. */
        if (seller) {
            db_arg args[] = {DB_INT(seller), DB_INT(limit + 1), DB_INT(offset)};
            rc = db_query(DB(a->db), r->ctx,
                          "SELECT " ITEM_COLS " FROM items WHERE seller_id = $1 AND deleted_at IS NULL "
                          "ORDER BY id LIMIT $2 OFFSET $3",
                          args, 3, &rows, &e);
        } else {
            db_arg args[] = {DB_INT(limit + 1), DB_INT(offset)};
            rc = db_query(DB(a->db), r->ctx,
                          "SELECT " ITEM_COLS " FROM items WHERE deleted_at IS NULL ORDER BY id LIMIT $1 OFFSET $2",
                          args, 2, &rows, &e);
        }
    } else if (seller) {
        db_arg args[] = {DB_INT(seller), DB_INT(cur.id), DB_INT(limit + 1)};
        rc = db_query(DB(a->db), r->ctx,
                      "SELECT " ITEM_COLS " FROM items WHERE seller_id = $1 AND id > $2 AND deleted_at IS NULL "
                      "ORDER BY id LIMIT $3",
                      args, 3, &rows, &e);
    } else {
        db_arg args[] = {DB_INT(cur.id), DB_INT(limit + 1)};
        rc = db_query(DB(a->db), r->ctx,
                      "SELECT " ITEM_COLS " FROM items WHERE id > $1 AND deleted_at IS NULL ORDER BY id LIMIT $2",
                      args, 2, &rows, &e);
    }
    if (rc != 0)
        return api_send_error(r, &e);
    bz_buf b = BZ_BUF_INIT;
    bz_buf_append_c(&b, "{\"data\":[");
    int k = 0;
    api_cursor last = {0, 0};
    while (k < limit && db_rows_next(rows)) {
        jw_sep(&b);
        item_json(&b, rows);
        last.id = db_col_int(rows, 0);
        k++;
    }
    bool more = db_rows_count(rows) > limit;
    db_rows_close(rows);
    api_page_end(a, &b, more, &last, scope);
    http_send(r, 200, "application/json; charset=utf-8", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

/* ---- writes ---- */

typedef struct {
    bool has_sku, has_name, has_price, has_currency, has_stock;
    const char *sku, *name, *currency;
    size_t sku_n, name_n, currency_n;
    int64_t price, stock;
} item_fields;

/* Reads the item fields; all required for create and PUT. */
static void read_fields(jv *v, json_t *j, bool required, item_fields *f)
{
    f->has_sku = jv_str(v, j, "sku", required, 1, 64, true, &f->sku, &f->sku_n);
    f->has_name = jv_str(v, j, "name", required, 1, 200, true, &f->name, &f->name_n);
    f->has_price = jv_int(v, j, "price_cents", required, 0, 100000000000LL, &f->price);
    f->has_currency = jv_str(v, j, "currency", required, 0, 64, false, &f->currency, &f->currency_n);
    if (f->has_currency && !currency_ok(f->currency, f->currency_n)) {
        jv_fail(v, "currency", "must be a 3-letter uppercase ISO 4217 code");
        f->has_currency = false;
    }
    f->has_stock = jv_int(v, j, "stock", required, 0, 1000000000, &f->stock);
}

typedef struct {
    app *a;
    api_idem *im;
    api_result *res;
    int64_t uid, id;
    item_fields f;
    bool del;
} write_args;

static int load_item_tx(db_tx *tx, rt_ctx *ctx, int64_t id, bz_buf *out, bz_error *err)
{
    db_rows *rows = NULL;
    db_arg args[] = {DB_INT(id)};
    int rc = db_query_row(TX(tx), ctx, "SELECT " ITEM_COLS " FROM items WHERE id = $1", args, 1, &rows, err);
    if (rc != 0)
        return rc;
    item_json(out, rows);
    db_rows_close(rows);
    return 0;
}

static int create_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    write_args *x = p;
    api_result *res = x->res;
    res_reset(res);
    int64_t now = bz_wall_us();
    db_arg args[] = {DB_INT(x->uid),
                     DB_TEXTN(x->f.sku, x->f.sku_n),
                     DB_TEXTN(x->f.name, x->f.name_n),
                     DB_INT(x->f.price),
                     DB_TEXTN(x->f.currency, x->f.currency_n),
                     DB_INT(x->f.stock),
                     DB_TIME(now)};
    db_rows *rows = NULL;
    if (db_query_row(TX(tx), ctx,
                     "INSERT INTO items (seller_id, sku, name, price_cents, currency, stock, version, created_at, "
                     "updated_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7) RETURNING id",
                     args, 7, &rows, err) != 0)
        return -1;
    x->id = db_col_int(rows, 0);
    db_rows_close(rows);
    if (load_item_tx(tx, ctx, x->id, &res->body, err) != 0)
        return -1;
    res->status = 201;
    snprintf(res->location, sizeof res->location, "/v1/items/%lld", (long long)x->id);
    return api_idem_save(x->a, tx, ctx, x->im, res, err);
}

/* PUT and PATCH: fields not sent keep their value; a change that changes
 * nothing leaves version alone (so PUT is idempotent). */
static int update_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    write_args *x = p;
    api_result *res = x->res;
    res_reset(res);
    db_rows *rows = NULL;
    db_arg args[] = {DB_INT(x->id)};
    int rc = db_query_row(TX(tx), ctx,
                          "SELECT seller_id, sku, name, price_cents, currency, stock FROM items "
                          "WHERE id = $1 AND deleted_at IS NULL",
                          args, 1, &rows, err);
    if (rc < 0)
        return rc;
    if (rc == DB_NO_ROWS || db_col_int(rows, 0) != x->uid) {
        if (rc == 0)
            db_rows_close(rows);
        res_problem(res, 404, "not_found", "item %lld does not exist", (long long)x->id);
        return api_idem_save(x->a, tx, ctx, x->im, res, err);
    }
    size_t n;
    const char *s;
    bool same = true;
    item_fields *f = &x->f;
    s = db_col_text(rows, 1, &n);
    same &= !f->has_sku || (n == f->sku_n && !memcmp(s, f->sku, n));
    s = db_col_text(rows, 2, &n);
    same &= !f->has_name || (n == f->name_n && !memcmp(s, f->name, n));
    same &= !f->has_price || db_col_int(rows, 3) == f->price;
    s = db_col_text(rows, 4, &n);
    same &= !f->has_currency || (n == f->currency_n && !memcmp(s, f->currency, n));
    same &= !f->has_stock || db_col_int(rows, 5) == f->stock;
    db_rows_close(rows);
    if (!same) {
        /* COALESCE keeps what was not sent. */
        db_arg u[] = {f->has_sku ? DB_TEXTN(f->sku, f->sku_n) : DB_NULL,
                      f->has_name ? DB_TEXTN(f->name, f->name_n) : DB_NULL,
                      f->has_price ? DB_INT(f->price) : DB_NULL,
                      f->has_currency ? DB_TEXTN(f->currency, f->currency_n) : DB_NULL,
                      f->has_stock ? DB_INT(f->stock) : DB_NULL,
                      DB_TIME(bz_wall_us()),
                      DB_INT(x->id)};
        if (db_exec(TX(tx), ctx,
                    "UPDATE items SET sku = COALESCE($1, sku), name = COALESCE($2, name), "
                    "price_cents = COALESCE($3, price_cents), currency = COALESCE($4, currency), "
                    "stock = COALESCE($5, stock), version = version + 1, updated_at = $6 WHERE id = $7",
                    u, 7, NULL, err) != 0)
            return -1;
    }
    if (load_item_tx(tx, ctx, x->id, &res->body, err) != 0)
        return -1;
    res->status = 200;
    return api_idem_save(x->a, tx, ctx, x->im, res, err);
}

static int write_item(app *a, http_req *r, bool create, bool full)
{
    int64_t uid, id = 0;
    if (api_auth(a, r, &uid))
        return 0;
    if (!create && !api_path_id(r, "id", &id))
        return 0;
    json_t *j = api_body(r);
    if (!j)
        return 0;
    jv v;
    jv_init(&v);
    write_args x = {a, NULL, NULL, uid, id, {0}, false};
    read_fields(&v, j, full, &x.f);
    if (v.n) {
        json_decref(j);
        return api_invalid(r, &v);
    }
    jv_free(&v);
    api_idem im = {0};
    if (create && api_idem_begin(a, r, uid, false, &im)) {
        json_decref(j);
        return 0;
    }
    api_result res;
    res_init(&res);
    x.im = &im;
    x.res = &res;
    if (api_tx(a, r, &im, create ? create_tx : update_tx, &x, &res, "sku_taken",
               "another item already has this sku") &&
        res.status < 300)
        items_cache_invalidate(a, x.id);
    res_free(&res);
    json_decref(j);
    return 0;
}

int items_create(app *a, http_req *r) { return write_item(a, r, true, true); }
int items_put(app *a, http_req *r) { return write_item(a, r, false, true); }
int items_patch(app *a, http_req *r) { return write_item(a, r, false, false); }

int items_delete(app *a, http_req *r)
{
    int64_t uid, id;
    if (api_auth(a, r, &uid) || !api_path_id(r, "id", &id))
        return 0;
    int64_t now = bz_wall_us();
    db_arg args[] = {DB_TIME(now), DB_INT(id), DB_INT(uid)};
    int64_t n = 0;
    bz_error e;
    if (db_exec(DB(a->db), r->ctx,
                "UPDATE items SET deleted_at = $1, updated_at = $1, version = version + 1 "
                "WHERE id = $2 AND seller_id = $3 AND deleted_at IS NULL",
                args, 3, &n, &e) != 0)
        return api_send_error(r, &e);
    if (n == 0)
        return http_send_problem(r, 404, "not_found", "no such item");
    items_cache_invalidate(a, id);
    return http_send(r, 204, NULL, NULL, 0);
}

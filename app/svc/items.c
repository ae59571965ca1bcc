/* app/svc/items.c — the catalogue (API.md §5).
 *
 * An item read goes through cache_get_or_load; the cached value is the
 * item in the record codec (transport-neutral: REST's GET and gRPC's
 * GetItem and LookupItems hit the same entry), so a hit is one cache
 * lookup and one decode.  Every committed change invalidates the entry
 * (and any load of it in flight) before the operation returns, so a writer
 * never reads its own write stale. */
#include "app/svc/svc-private.h"

#include <bazaar/clock.h>

#include <stdio.h>
#include <string.h>

static void enc_item_v(bz_buf *b, const void *v) { svc__enc_item(b, v); }
static bool dec_item_v(svc_rd *r, bz_arena *a, void *v) { return svc__dec_item(r, a, v); }

static int not_found(svc_err *e, int64_t id)
{
    return svc_fail(e, SVC_NOT_FOUND, "not_found", "item %lld does not exist", (long long)id);
}

/* ---- reads ---- */

typedef struct {
    svc *s;
    bz_arena *a;            /* the caller's: holds the row */
    int64_t id;
} load_args;

static int item_load(void *p, rt_ctx *ctx, bz_buf *out, bz_error *err)
{
    load_args *x = p;
    db_rows *rows = NULL;
    db_arg args[] = {DB_INT(x->id)};
    /* the misses of one turn share a statement (PostgreSQL) */
    int rc = sql_row_shared(x->a, x->s->db, ctx, &SQL_ITEM_LIVE, args, 1, &rows, err);
    if (rc == DB_NO_ROWS)
        return CACHE_MISS;
    if (rc < 0)
        return rc;
    /* Encode straight from the row: no arena needed for a miss. */
    svc__enc_item_row(out, rows);
    return 0;
}

int svc_item_get_record(svc *s, svc_call *c, int64_t id, bz_str *rec, bool *hit, svc_err *e)
{
    *hit = false;
    if (id <= 0)
        return not_found(e, id);
    char key[40];
    svc__key_item(id, key);
    load_args x = {s, c->arena, id};
    bz_buf *b = bz_arena_buf(c->arena);
    bz_buf_reserve(b, 256); /* one allocation for a typical entry */
    cache_status st = CACHE_LOADED;
    bz_error be;
    int rc = cache_get_or_load(s->cache, c->ctx, key, s->cfg->cache_ttl_ns, item_load, &x, b, &st, &be);
    *hit = st == CACHE_HIT;
    if (rc == CACHE_MISS)
        return not_found(e, id);
    if (rc < 0)
        return svc_fail_from(e, &be);
    *rec = bz_buf_str(b);
    return 0;
}

int svc_item_from_record(bz_str rec, bz_arena *a, svc_item *out, svc_err *e)
{
    svc_rd r = {rec.p, rec.p + rec.n, false};
    if (!svc__dec_item(&r, a, out))
        return svc_fail(e, SVC_INTERNAL, "internal", "a cached item is unreadable");
    return 0;
}

int svc_item_get(svc *s, svc_call *c, int64_t id, svc_item *out, bool *hit, svc_err *e)
{
    bz_str rec;
    if (svc_item_get_record(s, c, id, &rec, hit, e) != 0)
        return -1;
    return svc_item_from_record(rec, c->arena, out, e);
}

int svc_items_list(svc *s, svc_call *c, const svc_items_query *q, svc_item_page *out, svc_err *e)
{
    memset(out, 0, sizeof *out);
    int limit = svc__page_limit(&q->page, e);
    bool seller_ok = svc_check_int(e, L_ITEMS_SELLER, &q->seller_id, NULL);
    bool offset_mode = svc_check_int(e, L_ITEMS_OFFSET, &q->offset, NULL);
    if (e->kind)
        return -1;
    int64_t seller = seller_ok ? q->seller_id.v : 0;
    char scope[48];
    snprintf(scope, sizeof scope, "items:%lld", (long long)seller);
    svc_cursor cur = {0, 0};
    int have = svc__cursor_decode(s, &q->page.cursor, scope, &cur, e);
    if (have < 0)
        return -1;
    if (have && offset_mode)
        return svc_fail(e, SVC_INVALID, "validation_failed", "use either cursor or offset, not both");
    db_rows *rows = NULL;
    bz_error be;
    int rc;
    if (offset_mode && seller) {
        db_arg args[] = {DB_INT(seller), DB_INT(limit + 1), DB_INT(q->offset.v)};
        rc = svc_read_query(s, c, &SQL_ITEMS_OF_SELLER_OFFSET, args, 3, &rows, &be);
    } else if (offset_mode) {
        db_arg args[] = {DB_INT(limit + 1), DB_INT(q->offset.v)};
        rc = svc_read_query(s, c, &SQL_ITEMS_OFFSET, args, 2, &rows, &be);
    } else if (seller) {
        db_arg args[] = {DB_INT(seller), DB_INT(cur.id), DB_INT(limit + 1)};
        rc = svc_read_query(s, c, &SQL_ITEMS_OF_SELLER, args, 3, &rows, &be);
    } else {
        db_arg args[] = {DB_INT(cur.id), DB_INT(limit + 1)};
        rc = svc_read_query(s, c, &SQL_ITEMS_PAGE, args, 2, &rows, &be);
    }
    if (rc != 0)
        return svc_fail_from(e, &be);
    out->data = bz_arena_calloc(c->arena, (size_t)limit, sizeof *out->data);
    while (out->n < limit && db_rows_next(rows))
        svc__row_item(rows, c->arena, &out->data[out->n++]);
    if (db_rows_count(rows) > limit) {
        svc_cursor next = {0, out->data[out->n - 1].id};
        out->next_cursor = svc__cursor_encode(s, c->arena, &next, scope);
    }
    return 0;
}

/* ---- writes ---- */

static void check_fields(svc_err *e, const svc_item_in *in, bool full)
{
    if (full) {
        svc_check_str(e, L_ITEM_SKU, &in->sku, NULL);
        svc_check_str(e, L_ITEM_NAME, &in->name, NULL);
        svc_check_int(e, L_ITEM_PRICE, &in->price_cents, NULL);
        svc_check_str(e, L_ITEM_CURRENCY, &in->currency, NULL);
        svc_check_int(e, L_ITEM_STOCK, &in->stock, NULL);
    } else {
        svc_check_str(e, L_IPATCH_SKU, &in->sku, NULL);
        svc_check_str(e, L_IPATCH_NAME, &in->name, NULL);
        svc_check_int(e, L_IPATCH_PRICE, &in->price_cents, NULL);
        svc_check_str(e, L_IPATCH_CURRENCY, &in->currency, NULL);
        svc_check_int(e, L_IPATCH_STOCK, &in->stock, NULL);
    }
}

static void fp_item(svc_fp *fp, const svc_item_in *in)
{
    svc__fp_str(fp, in->sku.p, in->sku.n);
    svc__fp_str(fp, in->name.p, in->name.n);
    svc__fp_int(fp, in->price_cents.v);
    svc__fp_str(fp, in->currency.p, in->currency.n);
    svc__fp_int(fp, in->stock.v);
}

/* The parameters of SQL_ITEM_INSERT and SQL_ITEM_IMPORT. */
static void item_args(db_arg a[7], int64_t seller, const svc_item_in *in, int64_t now)
{
    a[0] = DB_INT(seller);
    a[1] = DB_TEXTN(in->sku.p, in->sku.n);
    a[2] = DB_TEXTN(in->name.p, in->name.n);
    a[3] = DB_INT(in->price_cents.v);
    a[4] = DB_TEXTN(in->currency.p, in->currency.n);
    a[5] = DB_INT(in->stock.v);
    a[6] = DB_TIME(now);
}

typedef struct {
    tx_run run;
    int64_t uid, id;
    const svc_item_in *in;
    svc_item *out;
} write_args;

static int create_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    write_args *x = p;
    svc_err_clear(x->run.e);
    db_arg args[7];
    item_args(args, x->uid, x->in, bz_wall_us());
    db_rows *rows = NULL;
    if (sql_row(x->run.c->arena, TX(tx), ctx, &SQL_ITEM_INSERT, args, 7, &rows, err) != 0)
        return -1;
    svc__row_item(rows, x->run.c->arena, x->out);
    x->id = x->out->id;
    return svc__tx_record(tx, ctx, &x->run, err);
}

int svc_item_create(svc *s, svc_call *c, const svc_item_in *in, svc_item *out, svc_err *e)
{
    if (svc__need_user(c, e))
        return -1;
    check_fields(e, in, true);
    if (e->kind)
        return -1;
    svc_fp fp;
    svc__fp_begin(&fp, "item.create");
    fp_item(&fp, in);
    svc_idem im;
    if (svc__idem_begin(s, c, &fp, false, &im, e) != 0)
        return -1;
    write_args x = {
        .run = {.s = s, .c = c, .im = &im, .e = e, .encode = enc_item_v, .decode = dec_item_v, .out = out},
        c->who->user_id, 0, in, out};
    if (svc__tx_run_op(&x.run, create_tx, &x, SVC_ALREADY_EXISTS, "sku_taken", "another item already has this sku") != 0)
        return -1;
    svc_wrote(s, c);
    svc__fx_item_changed(s, out->id); /* a negative entry may be cached */
    return 0;
}

/* PUT and PATCH: one guarded UPDATE that changes only what differs (a
 * change that changes nothing leaves version alone, so PUT is idempotent). */
static int update_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    write_args *x = p;
    svc_err_clear(x->run.e);
    const svc_item_in *in = x->in;
    db_arg u[] = {in->sku.st == SVC_SET ? DB_TEXTN(in->sku.p, in->sku.n) : DB_NULL,
                  in->name.st == SVC_SET ? DB_TEXTN(in->name.p, in->name.n) : DB_NULL,
                  in->price_cents.st == SVC_SET ? DB_INT(in->price_cents.v) : DB_NULL,
                  in->currency.st == SVC_SET ? DB_TEXTN(in->currency.p, in->currency.n) : DB_NULL,
                  in->stock.st == SVC_SET ? DB_INT(in->stock.v) : DB_NULL,
                  DB_TIME(bz_wall_us()),
                  DB_INT(x->id),
                  DB_INT(x->uid)};
    if (sql_exec(TX(tx), ctx, &SQL_ITEM_UPDATE, u, 8, NULL, err) != 0)
        return -1;
    db_rows *rows = NULL;
    db_arg args[] = {DB_INT(x->id)};
    int rc = sql_row(x->run.c->arena, TX(tx), ctx, &SQL_ITEM_LIVE, args, 1, &rows, err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        svc__row_item(rows, x->run.c->arena, x->out);
    /* Nothing updated: unchanged, or not there / not the caller's. */
    if (rc == DB_NO_ROWS || x->out->seller_id != x->uid)
        svc__tx_refuse(&x->run, SVC_NOT_FOUND, "not_found", "item %lld does not exist", (long long)x->id);
    return 0;
}

int svc_item_update(svc *s, svc_call *c, int64_t id, const svc_item_in *in, bool full, svc_item *out, svc_err *e)
{
    if (svc__need_user(c, e))
        return -1;
    check_fields(e, in, full);
    if (e->kind)
        return -1;
    write_args x = {
        .run = {.s = s, .c = c, .encode = enc_item_v, .decode = dec_item_v, .out = out, .e = e}, /* no key */
        c->who->user_id, id, in, out};
    if (svc__tx_run_op(&x.run, update_tx, &x, SVC_ALREADY_EXISTS, "sku_taken", "another item already has this sku") != 0)
        return -1;
    svc_wrote(s, c);
    svc__fx_item_changed(s, id);
    return 0;
}

int svc_item_delete(svc *s, svc_call *c, int64_t id, svc_err *e)
{
    if (svc__need_user(c, e))
        return -1;
    db_arg args[] = {DB_TIME(bz_wall_us()), DB_INT(id), DB_INT(c->who->user_id)};
    int64_t n = 0;
    bz_error be;
    if (sql_exec(DB(s->db), c->ctx, &SQL_ITEM_DELETE, args, 3, &n, &be) != 0)
        return svc_fail_from(e, &be);
    if (n == 0)
        return not_found(e, id);
    svc_wrote(s, c);
    svc__fx_item_changed(s, id);
    return 0;
}

/* ---- import (client-streamed batches) ---- */

typedef struct {
    bz_arena *a;    /* the batch's call arena: holds the rows */
    int64_t uid;
    const svc_item_in *items;
    int n;
    const bool *valid;
    int64_t *ids;   /* per item: created id, or 0 when the sku was taken */
} import_args;

static int import_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    import_args *x = p;
    int64_t now = bz_wall_us();
    for (int i = 0; i < x->n; i++) {
        x->ids[i] = 0;
        if (!x->valid[i])
            continue;
        db_arg args[7];
        item_args(args, x->uid, &x->items[i], now);
        db_rows *rows = NULL;
        int rc = sql_row(x->a, TX(tx), ctx, &SQL_ITEM_IMPORT, args, 7, &rows, err);
        if (rc < 0)
            return -1;
        if (rc == 0)
            x->ids[i] = db_col_int(rows, 0);
    }
    return 0;
}

static void import_reject(svc_import_result *res, bz_arena *a, int index, const svc_item_in *in, const char *why)
{
    if (res->arena)
        a = res->arena;
    res->rejected++;
    if (res->nerrors >= SVC_IMPORT_MAX_ERRORS)
        return;
    if (!res->errors)
        res->errors = bz_arena_calloc(a, SVC_IMPORT_MAX_ERRORS, sizeof *res->errors);
    res->errors[res->nerrors++] =
        bz_arena_printf(a, "item %d (sku \"%.*s\"): %s", index, (int)(in->sku.n > 64 ? 64 : in->sku.n),
                        in->sku.st == SVC_SET ? in->sku.p : "", why);
}

int svc_items_import(svc *s, svc_call *c, const svc_item_in *items, int n, svc_import_result *res, svc_err *e)
{
    if (svc__need_user(c, e))
        return -1;
    if (n <= 0)
        return 0;
    int base = res->created + res->rejected;
    bool *valid = bz_arena_calloc(c->arena, (size_t)n, sizeof *valid);
    int64_t *ids = bz_arena_calloc(c->arena, (size_t)n, sizeof *ids);
    for (int i = 0; i < n; i++) {
        svc_err v;
        svc_err_clear(&v);
        check_fields(&v, &items[i], true);
        valid[i] = v.kind == SVC_OK;
        if (!valid[i]) {
            char why[200];
            snprintf(why, sizeof why, "validation_failed: %s %s", v.viol[0].field, v.viol[0].msg);
            import_reject(res, c->arena, base + i, &items[i], why);
        }
    }
    import_args x = {c->arena, c->who->user_id, items, n, valid, ids};
    bz_error be;
    db_tx_opts o = {.isolation = DB_SERIALIZABLE};
    if (db_run_tx(s->db, c->ctx, &o, import_tx, &x, &be) != 0)
        return svc_fail_from(e, &be);
    svc_wrote(s, c);
    for (int i = 0; i < n; i++) {
        if (!valid[i])
            continue;
        if (ids[i]) {
            res->created++;
            svc__fx_item_changed(s, ids[i]); /* a negative entry may be cached */
        } else {
            import_reject(res, c->arena, base + i, &items[i], "sku_taken: another item already has this sku");
        }
    }
    return 0;
}

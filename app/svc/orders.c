/* app/svc/orders.c — orders, payment and cancellation, order lists and
 * order events (API.md §6).
 *
 * Status machine: pending → paid → shipped, pending → cancelled.  Every
 * change commits first, then publishes the event on the customer's channel
 * "orders:<user>".  Paying commits a fulfilment job in the same
 * transaction (durable: a restart never strands a paid order); the worker
 * (fulfil.c) ships due jobs. */
#include "app/svc/svc-private.h"

#include <bazaar/clock.h>
#include <bazaar/log.h>
#include <bazaar/rand.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHIP_DELAY_US 1000000 /* "fulfilment" takes a second */

static void enc_order_v(bz_buf *b, const void *v) { svc__enc_order(b, v); }
static bool dec_order_v(svc_rd *r, bz_arena *a, void *v) { return svc__dec_order(r, a, v); }

static int not_found(svc_err *e, int64_t id)
{
    return svc_fail(e, SVC_NOT_FOUND, "not_found", "order %lld does not exist", (long long)id);
}

/* Loads order id with its lines: 0, DB_NO_ROWS, or -1.  In a
 * transaction (tx) a read of its own; outside one (tx NULL) a shared read
 * of the primary: on PostgreSQL the order reads of one turn are one
 * statement. */
static int load_order(svc *s, db_tx *tx, rt_ctx *ctx, int64_t id, bz_arena *a, svc_order *out, bz_error *err)
{
    db_rows *rows = NULL;
    db_arg args[] = {DB_INT(id)};
    int rc = tx ? sql_row(a, TX(tx), ctx, &SQL_ORDER_BY_ID, args, 1, &rows, err)
                : sql_row_shared(a, s->db, ctx, &SQL_ORDER_BY_ID, args, 1, &rows, err);
    if (rc != 0)
        return rc;
    svc__row_order(rows, a, out);
    return 0;
}

/* ---- create ---- */

typedef struct {
    tx_run run;
    int64_t uid, account;
    const svc_order_in *in;
    svc_order *out;
} create_args;

static int create_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    create_args *x = p;
    svc_err_clear(x->run.e);
    const svc_order_in *in = x->in;
    svc_order *o = x->out;
    db_rows *rows = NULL;
    db_arg acc[] = {DB_INT(x->account)};
    int rc = sql_row(x->run.c->arena, TX(tx), ctx, &SQL_ACCOUNT_BY_ID, acc, 1, &rows, err);
    if (rc < 0)
        return -1;
    char currency[4] = "";
    if (rc == 0) {
        svc_account a;
        svc__row_account(rows, &a);
        if (a.user_id == x->uid)
            memcpy(currency, a.currency, 4);
    }
    if (!currency[0]) {
        svc__tx_refuse(&x->run, SVC_NOT_FOUND, "not_found", "account %lld does not exist", (long long)x->account);
        return svc__tx_record(tx, ctx, &x->run, err);
    }
    /* Check every line before changing anything, so a refusal commits only
     * its idempotency record.  Lines naming the same item add up.  Lines
     * are visited in item id order: on PostgreSQL each read locks its item
     * (SQL_ITEM_FOR_ORDER), and two orders locking in one order cannot
     * deadlock. */
    int *by_item = bz_arena_alloc(x->run.c->arena, (size_t)in->nlines * sizeof *by_item);
    for (int i = 0; i < in->nlines; i++) {
        int k = i;
        for (; k > 0 && in->lines[by_item[k - 1]].item_id.v > in->lines[i].item_id.v; k--)
            by_item[k] = by_item[k - 1];
        by_item[k] = i;
    }
    int64_t total = 0;
    for (int n = 0; n < in->nlines; n++) {
        int i = by_item[n];
        int64_t item = in->lines[i].item_id.v, qty = in->lines[i].quantity.v;
        db_arg it[] = {DB_INT(item)};
        rc = sql_row(x->run.c->arena, TX(tx), ctx, &SQL_ITEM_FOR_ORDER, it, 1, &rows, err);
        if (rc < 0)
            return -1;
        if (rc == DB_NO_ROWS) {
            svc__tx_refuse(&x->run, SVC_NOT_FOUND, "not_found", "item %lld does not exist", (long long)item);
            return svc__tx_record(tx, ctx, &x->run, err);
        }
        int64_t price = db_col_int(rows, 0);
        bool same_cur = strcmp(db_col_text(rows, 1, NULL), currency) == 0;
        int64_t stock = db_col_int(rows, 2);
        if (!same_cur) {
            svc__tx_refuse(&x->run, SVC_UNPROCESSABLE, "currency_mismatch", "item %lld is not sold in %s",
                      (long long)item, currency);
            return svc__tx_record(tx, ctx, &x->run, err);
        }
        int64_t want = 0;
        for (int k = 0; k < in->nlines; k++)
            if (in->lines[k].item_id.v == item)
                want += in->lines[k].quantity.v;
        if (stock < want) {
            svc__tx_refuse(&x->run, SVC_CONFLICT, "out_of_stock", "item %lld has %lld in stock", (long long)item,
                      (long long)stock);
            return svc__tx_record(tx, ctx, &x->run, err);
        }
        o->lines[i] = (svc_line){item, qty, price};
        total += price * qty;
    }
    int64_t now = bz_wall_us();
    for (int n = 0; n < in->nlines; n++) {
        int i = by_item[n];
        db_arg u[] = {DB_INT(o->lines[i].quantity), DB_TIME(now), DB_INT(o->lines[i].item_id)};
        int64_t aff = 0;
        if (sql_exec(TX(tx), ctx, &SQL_ITEM_RESERVE, u, 3, &aff, err) != 0)
            return -1;
        if (aff != 1)
            return bz_err_set(err, BZ_ERR_SERIALIZATION, "stock changed under the transaction"), -1;
    }
    db_arg ins[] = {DB_INT(x->uid), DB_INT(x->account), DB_INT(total), DB_TEXT(currency), DB_TIME(now)};
    if (sql_row(x->run.c->arena, TX(tx), ctx, &SQL_ORDER_INSERT, ins, 5, &rows, err) != 0)
        return -1;
    o->id = db_col_int(rows, 0);
    for (int i = 0; i < in->nlines; i++) {
        db_arg l[] = {DB_INT(o->id), DB_INT(i + 1), DB_INT(o->lines[i].item_id), DB_INT(o->lines[i].quantity),
                      DB_INT(o->lines[i].unit_price_cents)};
        if (sql_exec(TX(tx), ctx, &SQL_LINE_INSERT, l, 5, NULL, err) != 0)
            return -1;
    }
    o->customer_id = x->uid;
    o->account_id = x->account;
    o->status = "pending";
    o->total_cents = total;
    memcpy(o->currency, currency, 4);
    o->nlines = in->nlines;
    o->created_us = o->updated_us = now;
    return svc__tx_record(tx, ctx, &x->run, err);
}

int svc_order_create(svc *s, svc_call *c, const svc_order_in *in, svc_order *out, svc_err *e)
{
    if (svc__need_user(c, e))
        return -1;
    svc_check_int(e, L_ORDER_ACCOUNT, &in->account_id, NULL);
    const svc_limit *ll = &svc_limits[L_ORDER_LINES];
    if (in->lines_st == SVC_ABSENT)
        svc_violate(e, "lines", "is required");
    else if (in->lines_st == SVC_SET && (in->nlines_sent < ll->min || in->nlines_sent > ll->max))
        svc_violate(e, "lines", "must be an array of 1 to 50 lines");
    else if (in->lines_st == SVC_SET)
        for (int i = 0; i < in->nlines; i++) {
            char fi[40], fq[40];
            snprintf(fi, sizeof fi, "lines[%d].item_id", i);
            snprintf(fq, sizeof fq, "lines[%d].quantity", i);
            svc_check_int(e, L_LINE_ITEM, &in->lines[i].item_id, fi);
            svc_check_int(e, L_LINE_QUANTITY, &in->lines[i].quantity, fq);
        }
    if (e->kind)
        return -1;
    svc_fp fp;
    svc__fp_begin(&fp, "order.create");
    svc__fp_int(&fp, in->account_id.v);
    svc__fp_int(&fp, in->nlines);
    for (int i = 0; i < in->nlines; i++) {
        svc__fp_int(&fp, in->lines[i].item_id.v);
        svc__fp_int(&fp, in->lines[i].quantity.v);
    }
    svc_idem im;
    if (svc__idem_begin(s, c, &fp, true, &im, e) != 0)
        return -1;
    memset(out, 0, sizeof *out);
    out->lines = bz_arena_calloc(c->arena, (size_t)in->nlines, sizeof *out->lines);
    /* READ COMMITTED: its items' row locks are its protection (sql.c's
     * SQL_ITEM_FOR_ORDER) */
    create_args x = {
        .run = {.s = s, .c = c, .im = &im, .e = e, .encode = enc_order_v, .decode = dec_order_v, .out = out,
                .read_committed = true},
        c->who->user_id, in->account_id.v, in, out};
    if (svc__tx_run_op(&x.run, create_tx, &x, SVC_OK, NULL, NULL) != 0)
        return -1;
    if (!c->replayed) {
        for (int i = 0; i < in->nlines; i++)
            svc__fx_item_changed(s, in->lines[i].item_id.v);
        svc__fx_orders_changed(s, c->who->user_id);
    }
    return 0;
}

int svc_order_get(svc *s, svc_call *c, int64_t id, svc_order *out, svc_err *e)
{
    if (svc__need_user(c, e))
        return -1;
    bz_error be;
    int rc = load_order(s, NULL, c->ctx, id, c->arena, out, &be);
    if (rc < 0)
        return svc_fail_from(e, &be);
    if (rc == DB_NO_ROWS || out->customer_id != c->who->user_id)
        return not_found(e, id);
    return 0;
}

/* ---- lists: pages cached under a per-user version (effects.c) ---- */

/* The lists' keys and scopes are built part by part (bz_fmt_i64), not by
 * snprintf's walk over a format: three of them per page.  Each returns
 * the end of what it wrote; the caller's buffer has room for the parts. */
static char *put_s(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}
static char *put_i(char *p, int64_t v) { return p + bz_fmt_i64(p, v); }

/* The current version, creating one if there is none.  false on a cache
 * error (the caller then reads the database directly). */
static bool list_version(svc *s, svc_call *c, int64_t uid, char out[24])
{
    rt_ctx *ctx = c->ctx;
    char key[40]; /* "olv:" and an int64 */
    *put_i(put_s(key, "olv:"), uid) = '\0';
    bz_buf *b = bz_arena_buf(c->arena);
    bz_error e;
    for (int attempt = 0; attempt < 2; attempt++) {
        int rc = cache_state_get(s->cache, ctx, key, b, &e);
        if (rc == 0 && b->len > 0 && b->len < 24) {
            memcpy(out, b->data, b->len);
            out[b->len] = '\0';
            return true;
        }
        if (rc < 0)
            break;
        char v[24];
        int n = snprintf(v, sizeof v, "%016llx", (unsigned long long)bz_rand64());
        bool stored;
        if (cache_set_nx(s->cache, ctx, key, v, (size_t)n, 0, &stored, &e) != 0)
            break;
    }
    return false;
}

typedef struct {
    svc *s;
    bz_arena *a;            /* the caller's: holds the rows */
    int64_t uid;
    const char *status;
    svc_cursor cur;
    int limit;
    const char *scope;
} page_args;

/* A page in the record codec: count, orders, then the next cursor
 * position (or -1). */
static int page_load(void *p, rt_ctx *ctx, bz_buf *b, bz_error *err)
{
    page_args *x = p;
    db_rows *rows = NULL;
    int rc;
    if (x->status) {
        db_arg args[] = {DB_INT(x->uid), DB_TEXT(x->status), DB_TIME(x->cur.t_us), DB_INT(x->cur.id),
                         DB_INT(x->limit + 1)};
        rc = sql_query(x->a, DB(x->s->db), ctx, &SQL_ORDERS_PAGE_STATUS, args, 5, &rows, err);
    } else {
        db_arg args[] = {DB_INT(x->uid), DB_TIME(x->cur.t_us), DB_INT(x->cur.id), DB_INT(x->limit + 1)};
        rc = sql_query(x->a, DB(x->s->db), ctx, &SQL_ORDERS_PAGE, args, 4, &rows, err);
    }
    if (rc != 0)
        return -1;
    int n = db_rows_count(rows) < x->limit ? db_rows_count(rows) : x->limit;
    svc__enc_int(b, n);
    bz_arena scratch;
    bz_arena_init(&scratch, 2048);
    svc_order o = {0};
    for (int k = 0; k < n && db_rows_next(rows); k++) {
        svc__row_order(rows, &scratch, &o);
        svc__enc_order(b, &o);
    }
    bz_arena_free(&scratch);
    if (db_rows_count(rows) > x->limit) {
        svc__enc_int(b, o.created_us);
        svc__enc_int(b, o.id);
    } else {
        svc__enc_int(b, -1);
        svc__enc_int(b, -1);
    }
    return 0;
}

int svc_orders_list(svc *s, svc_call *c, int64_t user_id, svc_str status, const svc_page_in *pg,
                    svc_order_page *out, bool *hit, svc_err *e)
{
    memset(out, 0, sizeof *out);
    *hit = false;
    if (svc__need_user(c, e))
        return -1;
    if (user_id != c->who->user_id)
        return svc_fail(e, SVC_NOT_FOUND, "not_found", "user %lld does not exist", (long long)user_id);
    int limit = svc__page_limit(pg, e);
    bool by_status = svc_check_str(e, L_ORDERS_STATUS, &status, NULL);
    if (e->kind)
        return -1;
    const char *st = by_status ? svc__status_static(status.p, status.n) : NULL;
    char scope[64]; /* "orders:<int64>:<status>" */
    *put_s(put_s(put_i(put_s(scope, "orders:"), user_id), ":"), st ? st : "") = '\0';
    page_args x = {s, c->arena, user_id, st, {SVC_CURSOR_TOP_US, INT64_MAX}, limit, scope};
    if (svc__cursor_decode(s, &pg->cursor, scope, &x.cur, e) < 0)
        return -1;
    bz_buf *b = bz_arena_buf(c->arena);
    bz_error be;
    int rc;
    char ver[24];
    if (cache_keeps_entries(s->cache) && list_version(s, c, user_id, ver)) {
        char key[160]; /* "olist:<uid>:<ver>:<status>:<t_us>.<id>:<limit>", at most 114 */
        char *k = put_s(put_i(put_s(key, "olist:"), user_id), ":");
        k = put_s(put_s(put_s(put_s(k, ver), ":"), st ? st : ""), ":");
        k = put_i(put_s(put_i(k, x.cur.t_us), "."), x.cur.id);
        *put_i(put_s(k, ":"), limit) = '\0';
        cache_status cst = CACHE_LOADED;
        rc = cache_get_or_load(s->cache, c->ctx, key, s->cfg->cache_ttl_ns, page_load, &x, b, &cst, &be);
        *hit = cst == CACHE_HIT;
        if (rc == 0 && cst == CACHE_LOADED)
            svc__pages_track(s, c->ctx, user_id, key);
    } else {
        rc = page_load(&x, c->ctx, b, &be);
    }
    if (rc != 0)
        return svc_fail_from(e, &be);
    svc_rd r = {b->data, b->data + b->len, false};
    int64_t n = svc__dec_int(&r);
    if (n < 0 || n > limit)
        r.bad = true;
    out->data = bz_arena_calloc(c->arena, (size_t)limit, sizeof *out->data);
    for (int i = 0; !r.bad && i < n; i++)
        if (svc__dec_order(&r, c->arena, &out->data[i]))
            out->n++;
    svc_cursor next = {svc__dec_int(&r), svc__dec_int(&r)};
    if (r.bad)
        return svc_fail(e, SVC_INTERNAL, "internal", "a cached order page is unreadable");
    if (next.id >= 0)
        out->next_cursor = svc__cursor_encode(s, c->arena, &next, scope);
    return 0;
}

/* ---- pay and cancel ---- */

typedef struct {
    tx_run run;
    int64_t uid, id;
    bool pay;
    bool changed;           /* the status moved (effects after commit) */
    bool loaded;            /* run.out holds the order as it now is */
    int64_t total, at_us;
    char currency[4];
    int64_t lb_epoch;       /* the leaderboard epoch this payment saw */
    int64_t items[SVC_MAX_LINES];
    int nitems;
} state_args;

/* The (id, amount) pairs a per-line query of the order returns (at most
 * one per line): how many, or -1. */
static int order_pairs(state_args *x, db_tx *tx, rt_ctx *ctx, const svc_sql *q, int64_t out[SVC_MAX_LINES][2],
                       bz_error *err)
{
    db_rows *rows = NULL;
    db_arg oid[] = {DB_INT(x->id)};
    if (sql_query(x->run.c->arena, TX(tx), ctx, q, oid, 1, &rows, err) != 0)
        return -1;
    int n = 0;
    while (n < SVC_MAX_LINES && db_rows_next(rows)) {
        out[n][0] = db_col_int(rows, 0);
        out[n][1] = db_col_int(rows, 1);
        n++;
    }
    return n;
}

/* A payment in three round trips on PostgreSQL (db_batch), whatever the
 * number of lines, after state_tx's first (the order row locked, with the
 * sellers to credit): the accounts locked in id order with the debit;
 * then every credit, the status, the leaderboard epoch (under its shared
 * lock), the fulfilment job and the order read back, none of which needs
 * another's result; then the record with the COMMIT (svc__tx_record).
 * The accounts are locked before any is written, in one order for every
 * payment, so two payments never wait on each other in a cycle. */
static int pay_lines(state_args *x, db_tx *tx, rt_ctx *ctx, int64_t account, db_rows *sellers, int64_t now,
                     bz_error *err)
{
    bz_arena *ar = x->run.c->arena;
    db_q q = TX(tx);
    bool pg = db_q_dialect(q) == DB_POSTGRES;
    int64_t cred[SVC_MAX_LINES][2];
    int ns = 0;
    while (ns < SVC_MAX_LINES && db_rows_next(sellers)) {
        cred[ns][0] = db_col_int(sellers, 0);
        cred[ns][1] = db_col_int(sellers, 1);
        ns++;
    }
    db_step st[DB_BATCH_MAX];
    int k = 0;
    char ids[SVC_MAX_LINES * 21 + 3]; /* "{1,2,...}": the sellers, a BIGINT[] literal */
    db_arg lk[3];
    if (pg) {
        size_t n = 0;
        ids[n++] = '{';
        for (int i = 0; i < ns; i++) {
            if (i)
                ids[n++] = ',';
            n += (size_t)bz_fmt_i64(ids + n, cred[i][0]);
        }
        ids[n++] = '}';
        lk[0] = DB_INT(account);
        lk[1] = DB_TEXT(x->currency);
        lk[2] = (db_arg){.type = DB_T_TEXT, .v.s = {ids, n}};
        st[k++] = (db_step){.sql = svc_sql_text(q, &SQL_PAY_LOCK_ACCOUNTS), .args = lk, .nargs = 3};
    }
    db_arg d[] = {DB_INT(x->total), DB_INT(account)};
    int debit = k;
    st[k++] = (db_step){.sql = svc_sql_text(q, &SQL_ACCOUNT_DEBIT), .args = d, .nargs = 2};
    if (db_batch(tx, ctx, st, k, 0, err) != 0)
        return -1;
    if (st[debit].affected == 0)
        return svc__tx_refuse(&x->run, SVC_CONFLICT, "insufficient_funds", "account %lld cannot pay %lld cents",
                         (long long)account, (long long)x->total);
    db_arg cr[SVC_MAX_LINES][4];
    k = 0;
    for (int n = 0; n < ns; n++) {
        if (k == DB_BATCH_MAX - 5) { /* more sellers than one batch holds with the rest: send these first */
            if (db_batch(tx, ctx, st, k, 0, err) != 0)
                return -1;
            k = 0;
        }
        cr[n][0] = DB_INT(cred[n][0]);
        cr[n][1] = DB_TEXT(x->currency);
        cr[n][2] = DB_INT(cred[n][1]);
        cr[n][3] = DB_TIME(now);
        st[k++] = (db_step){.sql = svc_sql_text(q, &SQL_ACCOUNT_CREDIT_UPSERT), .args = cr[n], .nargs = 4};
    }
    db_arg oid[] = {DB_INT(x->id)};
    db_arg u[] = {DB_TEXT("paid"), DB_TIME(now), DB_INT(x->id)};
    st[k++] = (db_step){.sql = svc_sql_text(q, &SQL_ORDER_SET_STATUS), .args = u, .nargs = 3};
    char lb_key[24];
    db_arg lb_arg;
    db_step epoch = svc__lb_epoch_step(q, x->currency, lb_key, &lb_arg);
    if (pg) /* a statement of its own: the epoch is read after the lock is held */
        st[k++] = (db_step){.sql = svc_sql_text(q, &SQL_LB_EPOCH_SHARED), .args = &lb_arg, .nargs = 1};
    int lb = k;
    st[k++] = epoch;
    /* The job commits with the payment: durable fulfilment. */
    db_arg j[] = {DB_INT(x->id), DB_TIME(now + SHIP_DELAY_US)};
    st[k++] = (db_step){.sql = svc_sql_text(q, &SQL_JOB_INSERT), .args = j, .nargs = 2};
    int back = k;
    st[k++] = (db_step){.sql = svc_sql_text(q, &SQL_ORDER_BY_ID), .args = oid, .nargs = 1, .want_rows = true};
    if (db_batch(tx, ctx, st, k, 0, err) != 0)
        return -1;
    x->lb_epoch = svc__lb_epoch_of(db_rows_adopt(ar, st[lb].rows));
    db_rows *order = db_rows_adopt(ar, st[back].rows);
    if (!db_rows_next(order))
        return bz_err_set(err, BZ_ERR_INTERNAL, "order vanished"), -1;
    svc__row_order(order, ar, x->run.out);
    x->loaded = true;
    x->changed = true;
    return 0;
}

static int cancel_lines(state_args *x, db_tx *tx, rt_ctx *ctx, int64_t now, bz_error *err)
{
    int64_t back[SVC_MAX_LINES][2];
    int n = order_pairs(x, tx, ctx, &SQL_ORDER_LINES, back, err);
    if (n < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        db_arg u[] = {DB_INT(back[i][1]), DB_TIME(now), DB_INT(back[i][0])};
        if (sql_exec(TX(tx), ctx, &SQL_ITEM_RESTOCK, u, 3, NULL, err) != 0)
            return -1;
        x->items[x->nitems++] = back[i][0];
    }
    db_arg u[] = {DB_TEXT("cancelled"), DB_TIME(now), DB_INT(x->id)};
    if (sql_exec(TX(tx), ctx, &SQL_ORDER_SET_STATUS, u, 3, NULL, err) != 0)
        return -1;
    x->changed = true;
    return 0;
}

static int state_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    state_args *x = p;
    svc_err_clear(x->run.e);
    x->changed = false;
    x->loaded = false;
    x->nitems = 0;
    db_rows *rows = NULL, *sellers = NULL;
    db_arg oid[] = {DB_INT(x->id)};
    int rc;
    if (x->pay) {
        /* PostgreSQL: READ COMMITTED (run.read_committed; sql.c says why),
         * the order row locked before its status is read, and the sellers
         * in the same trip */
        db_q q = TX(tx);
        db_step st[] = {
            {.sql = svc_sql_text(q, &SQL_ORDER_HEAD_FOR_PAY), .args = oid, .nargs = 1, .want_rows = true},
            {.sql = svc_sql_text(q, &SQL_ORDER_SELLER_CREDITS), .args = oid, .nargs = 1, .want_rows = true}};
        if (db_batch(tx, ctx, st, 2, 0, err) != 0)
            return -1;
        rows = db_rows_adopt(x->run.c->arena, st[0].rows);
        sellers = db_rows_adopt(x->run.c->arena, st[1].rows);
        rc = db_rows_next(rows) ? 0 : DB_NO_ROWS;
    } else {
        rc = sql_row(x->run.c->arena, TX(tx), ctx, &SQL_ORDER_HEAD, oid, 1, &rows, err);
        if (rc < 0)
            return -1;
    }
    if (rc == DB_NO_ROWS || db_col_int(rows, 0) != x->uid) {
        svc__tx_refuse(&x->run, SVC_NOT_FOUND, "not_found", "order %lld does not exist", (long long)x->id);
        return svc__tx_record(tx, ctx, &x->run, err);
    }
    int64_t account = db_col_int(rows, 1);
    char status[16];
    snprintf(status, sizeof status, "%s", db_col_text(rows, 2, NULL));
    x->total = db_col_int(rows, 3);
    snprintf(x->currency, sizeof x->currency, "%s", db_col_text(rows, 4, NULL));
    int64_t now = bz_wall_us();
    x->at_us = now;
    if (x->pay) {
        if (!strcmp(status, "cancelled")) {
            svc__tx_refuse(&x->run, SVC_CONFLICT, "order_not_payable", "order %lld is cancelled", (long long)x->id);
            return svc__tx_record(tx, ctx, &x->run, err);
        }
        if (!strcmp(status, "pending") && pay_lines(x, tx, ctx, account, sellers, now, err) != 0)
            return -1;
    } else {
        if (!strcmp(status, "paid") || !strcmp(status, "shipped")) {
            svc__tx_refuse(&x->run, SVC_CONFLICT, "order_not_cancellable", "order %lld is %s", (long long)x->id, status);
            return svc__tx_record(tx, ctx, &x->run, err);
        }
        if (!strcmp(status, "pending") && cancel_lines(x, tx, ctx, now, err) != 0)
            return -1;
    }
    if (x->run.e->kind == SVC_OK && !x->loaded) {
        rc = load_order(x->run.s, tx, ctx, x->id, x->run.c->arena, x->run.out, err);
        if (rc != 0)
            return rc < 0 ? -1 : (bz_err_set(err, BZ_ERR_INTERNAL, "order vanished"), -1);
    }
    return svc__tx_record(tx, ctx, &x->run, err);
}

static int change_state(svc *s, svc_call *c, int64_t id, bool pay, svc_order *out, svc_err *e)
{
    svc_err_clear(e);
    if (svc__need_user(c, e))
        return -1;
    svc_fp fp;
    svc__fp_begin(&fp, pay ? "order.pay" : "order.cancel");
    svc__fp_int(&fp, id);
    svc_idem im;
    if (svc__idem_begin(s, c, &fp, false, &im, e) != 0)
        return -1;
    /* One payer per order across all instances — but the lock is taken
     * only once the caller is known to own the order, so nobody can stall
     * another user's payment by holding its lock. */
    char lock[48], token[33];
    bool locked = false;
    if (pay && !im.busy) { /* busy: answered from the key's record, nothing runs */
        db_rows *rows = NULL;
        bz_error be;
        db_arg oid[] = {DB_INT(id)};
        int rc = sql_row(c->arena, DB(s->db), c->ctx, &SQL_ORDER_HEAD, oid, 1, &rows, &be);
        bool mine = rc == 0 && db_col_int(rows, 0) == c->who->user_id;
        if (rc < 0) {
            svc__idem_end(s, &im);
            return svc_fail_from(e, &be);
        }
        if (mine) {
            snprintf(lock, sizeof lock, "order:%lld", (long long)id);
            if (cache_lock(s->cache, c->ctx, lock, 30 * BZ_NS_PER_S, true, token, &be) != 0) {
                svc__idem_end(s, &im);
                return svc_fail_from(e, &be);
            }
            locked = true;
        }
        /* not mine: the transaction below answers not found (and records
         * it under the key) */
    }
    memset(out, 0, sizeof *out);
    state_args x = {
        .run = {.s = s, .c = c, .im = &im, .e = e, .encode = enc_order_v, .decode = dec_order_v, .out = out,
                .read_committed = pay},
        .uid = c->who->user_id, .id = id, .pay = pay};
    int rc = svc__tx_run_op(&x.run, state_tx, &x, SVC_OK, NULL, NULL);
    if (locked) {
        bool released;
        bz_error be;
        rt_ctx dc;
        rt_ctx_init_timeout(&dc, NULL, SVC_DETACHED_NS);
        cache_unlock(s->cache, &dc, lock, token, &released, &be);
        rt_ctx_release(&dc);
    }
    if (rc == 0 && x.changed && !c->replayed) {
        svc__fx_orders_changed(s, x.uid);
        for (int i = 0; i < x.nitems; i++)
            svc__fx_item_changed(s, x.items[i]);
        if (pay)
            svc__fx_spent(s, x.uid, x.currency, x.total, x.lb_epoch);
        svc__fx_order_event(s, x.uid, id, pay ? "paid" : "cancelled", x.at_us);
    }
    return rc;
}

int svc_order_pay(svc *s, svc_call *c, int64_t id, svc_order *out, svc_err *e)
{
    return change_state(s, c, id, true, out, e);
}

int svc_order_cancel(svc *s, svc_call *c, int64_t id, svc_order *out, svc_err *e)
{
    return change_state(s, c, id, false, out, e);
}

/* ---- events ----
 *
 * At most --sse-max-per-user streams per user (SSE and WatchOrders alike:
 * both are svc_orders_watch), counted across every instance that shares
 * the cache: each stream holds a lease in "streams:<user>" named
 * "<instance>:<n>", taken under the cap and renewed by svc_watch_next.  A
 * crashed instance cannot give its leases back; they lapse within
 * SVC_STREAM_LEASE_NS.  With the memory backend this is the same count,
 * in process. */

static void streams_key(int64_t uid, char out[40]) { snprintf(out, 40, "streams:%lld", (long long)uid); }

int svc_streams_open(svc *s, int64_t uid)
{
    char key[40];
    streams_key(uid, key);
    int64_t n = 0;
    bz_error be;
    rt_ctx c;
    rt_ctx_init_timeout(&c, NULL, SVC_DETACHED_NS);
    if (cache_lease_count(s->cache, &c, key, &n, &be) != 0)
        n = -1;
    rt_ctx_release(&c);
    return (int)n;
}

struct svc_watch {
    svc *s;
    int64_t uid;
    cache_sub *sub;
    bz_buf msg;
    char lease[40];      /* this stream's member in streams:<uid> */
    int64_t renew_at;    /* bz_now_ns() of the next renewal */
};

/* Gives the stream's slot back (detached: the caller may be gone). */
static void lease_give(svc *s, int64_t uid, const char *lease)
{
    char key[40];
    streams_key(uid, key);
    bz_error be;
    rt_ctx c;
    rt_ctx_init_timeout(&c, NULL, SVC_DETACHED_NS);
    if (cache_lease_drop(s->cache, &c, key, lease, &be) != 0)
        bz_log_warn("stream lease not dropped (it lapses by itself)", BZ_F_STR("error", be.msg));
    rt_ctx_release(&c);
}

int svc_orders_watch(svc *s, svc_call *c, int64_t user_id, svc_watch **out, svc_err *e)
{
    *out = NULL;
    if (svc__need_user(c, e))
        return -1;
    if (user_id != c->who->user_id)
        return svc_fail(e, SVC_NOT_FOUND, "not_found", "user %lld does not exist", (long long)user_id);
    char key[40], lease[40];
    streams_key(user_id, key);
    snprintf(lease, sizeof lease, "%s:%lld", s->instance, (long long)atomic_fetch_add(&s->stream_seq, 1));
    bool taken = false;
    bz_error be;
    int cap = s->cfg->sse_max_per_user;
    if (cache_lease_take(s->cache, c->ctx, key, lease, cap, SVC_STREAM_LEASE_NS, &taken, &be) != 0)
        return svc_fail_from(e, &be);
    if (!taken) {
        svc_fail(e, SVC_RATE_LIMITED, "too_many_streams",
                 "this user already has %d event streams open; close one first", s->cfg->sse_max_per_user);
        e->retry_after_s = 1;
        return -1;
    }
    char ch[48];
    svc__key_events(user_id, ch);
    cache_sub *sub = NULL;
    if (cache_subscribe(s->cache, c->ctx, ch, &sub, &be) != 0) {
        lease_give(s, user_id, lease);
        return svc_fail_from(e, &be);
    }
    svc_watch *w = calloc(1, sizeof *w);
    if (!w)
        abort();
    w->s = s;
    w->uid = user_id;
    w->sub = sub;
    w->msg = BZ_BUF_INIT;
    memcpy(w->lease, lease, sizeof lease);
    w->renew_at = bz_now_ns() + SVC_STREAM_RENEW_NS;
    *out = w;
    return 0;
}

/* Keeps the stream's lease alive.  No cap: a lease lost meanwhile (the
 * cache restarted) is taken again rather than ending a stream that was
 * let in. */
static void lease_renew(svc_watch *w)
{
    int64_t now = bz_now_ns();
    if (now < w->renew_at)
        return;
    w->renew_at = now + SVC_STREAM_RENEW_NS;
    char key[40];
    streams_key(w->uid, key);
    bool taken;
    bz_error be;
    rt_ctx c;
    rt_ctx_init_timeout(&c, NULL, SVC_DETACHED_NS);
    if (cache_lease_take(w->s->cache, &c, key, w->lease, 0, SVC_STREAM_LEASE_NS, &taken, &be) != 0)
        bz_log_warn("stream lease not renewed", BZ_F_STR("error", be.msg));
    rt_ctx_release(&c);
}

int svc_watch_next(svc_watch *w, rt_ctx *ctx, svc_order_event *ev)
{
    for (;;) {
        lease_renew(w);
        int rc = cache_sub_recv(w->sub, ctx, &w->msg);
        if (rc != 0)
            return rc;
        svc_rd r = {w->msg.data, w->msg.data + w->msg.len, false};
        if (svc__dec_event(&r, ev))
            return 0;
        /* not ours to understand (another version's format): skip it */
    }
}

void svc_watch_close(svc_watch *w)
{
    if (!w)
        return;
    cache_unsubscribe(w->sub);
    lease_give(w->s, w->uid, w->lease);
    bz_buf_free(&w->msg);
    free(w);
}

/* The lease tick: how long a watch parks before it looks at the world
 * (renews the lease, lets the transport beat its heart, sees shutdown). */
#define WATCH_TICK_NS BZ_NS_PER_S

int svc_orders_stream(svc *s, svc_call *c, int64_t user_id, const svc_watch_sink *sink, svc_err *e)
{
    svc_watch *w;
    if (svc_orders_watch(s, c, user_id, &w, e) != 0)
        return -1;
    int rc = 0;
    if (sink->ready && sink->ready(sink->arg) != 0) {
        svc_watch_close(w);
        return 0;
    }
    for (;;) {
        rt_ctx tick;
        rt_ctx_init_timeout(&tick, c->ctx, WATCH_TICK_NS);
        svc_order_event ev;
        int got = svc_watch_next(w, &tick, &ev);
        rt_ctx_release(&tick);
        if (got == 0) {
            if (sink->event(sink->arg, &ev) != 0)
                break;
        } else if (got == -EPIPE) {
            rc = svc_fail(e, SVC_UNAVAILABLE, "stream_ended", "the event stream ended");
            break;
        } else if (rt_ctx_err(c->ctx)) {
            rc = rt_ctx_err(c->ctx) == ETIMEDOUT ? svc_fail(e, SVC_TIMEOUT, "timeout", "deadline exceeded")
                                                 : svc_fail(e, SVC_CANCELLED, "cancelled", "cancelled");
            break;
        } else if (rt_ctx_err(rt_shutdown_ctx())) {
            rc = svc_fail(e, SVC_UNAVAILABLE, "shutting_down", "the server is shutting down");
            break;
        } else if (sink->idle && sink->idle(sink->arg) != 0) {
            break;
        }
    }
    svc_watch_close(w);
    return rc;
}

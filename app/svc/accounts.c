/* app/svc/accounts.c — accounts, deposits and transfers (API.md §4).
 *
 * Money moves only inside one transaction per request, together with the
 * idempotency record: SQLite BEGIN IMMEDIATE (one writer); PostgreSQL
 * SERIALIZABLE for a deposit, READ COMMITTED with both rows locked first
 * for a transfer (SQL_TRANSFER_MOVE says why).  The CHECK
 * (balance_cents >= 0) constraint backs the funds check. */
#include "app/svc/svc-private.h"

#include <bazaar/clock.h>

#include <stdio.h>
#include <string.h>

static void enc_account_v(bz_buf *b, const void *v) { svc__enc_account(b, v); }
static bool dec_account_v(svc_rd *r, bz_arena *a, void *v) { (void)a; return svc__dec_account(r, v); }
static void enc_transfer_v(bz_buf *b, const void *v) { svc__enc_transfer(b, v); }
static bool dec_transfer_v(svc_rd *r, bz_arena *a, void *v) { (void)a; return svc__dec_transfer(r, v); }

static int not_found(svc_err *e, int64_t id)
{
    return svc_fail(e, SVC_NOT_FOUND, "not_found", "account %lld does not exist", (long long)id);
}

/* One of the caller's accounts: 0, or -1 (not found / error).  A shared
 * read: on PostgreSQL the account reads of one turn are one statement. */
static int own_account(svc *s, svc_call *c, int64_t id, svc_account *out, svc_err *e)
{
    db_rows *rows = NULL;
    bz_error be;
    db_arg args[] = {DB_INT(id)};
    int rc = sql_row_shared(c->arena, s->db, c->ctx, &SQL_ACCOUNT_BY_ID, args, 1, &rows, &be);
    if (rc < 0)
        return svc_fail_from(e, &be);
    if (rc == DB_NO_ROWS)
        return not_found(e, id);
    svc__row_account(rows, out);
    if (out->user_id != c->who->user_id)
        return not_found(e, id);
    return 0;
}

/* ---- open an account ---- */

typedef struct {
    tx_run run;
    int64_t uid;
    const char *currency;
    svc_account *out;
} create_args;

static int create_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    create_args *x = p;
    svc_err_clear(x->run.e);
    db_rows *rows = NULL;
    db_arg args[] = {DB_INT(x->uid), DB_TEXT(x->currency), DB_TIME(bz_wall_us())};
    int rc = sql_row(x->run.c->arena, TX(tx), ctx, &SQL_ACCOUNT_INSERT, args, 3, &rows, err);
    if (rc != 0)
        return rc < 0 ? rc : -1;
    svc__row_account(rows, x->out);
    return svc__tx_record(tx, ctx, &x->run, err);
}

int svc_account_create(svc *s, svc_call *c, svc_str currency, svc_account *out, svc_err *e)
{
    if (svc__need_user(c, e))
        return -1;
    if (!svc_check_str(e, L_ACCOUNT_CURRENCY, &currency, NULL))
        return -1;
    char cur[4];
    memcpy(cur, currency.p, 3);
    cur[3] = '\0';
    svc_fp fp;
    svc__fp_begin(&fp, "account.create");
    svc__fp_str(&fp, cur, 3);
    svc_idem im;
    if (svc__idem_begin(s, c, &fp, false, &im, e) != 0)
        return -1;
    create_args x = {
        .run = {.s = s, .c = c, .im = &im, .e = e, .encode = enc_account_v, .decode = dec_account_v, .out = out},
        c->who->user_id, cur, out};
    return svc__tx_run_op(&x.run, create_tx, &x, SVC_ALREADY_EXISTS, "account_exists",
                     "you already have an account in this currency");
}

int svc_accounts_list(svc *s, svc_call *c, svc_account **out, int *n, svc_err *e)
{
    *out = NULL;
    *n = 0;
    if (svc__need_user(c, e))
        return -1;
    db_rows *rows = NULL;
    bz_error be;
    db_arg args[] = {DB_INT(c->who->user_id)};
    if (sql_query(c->arena, DB(s->db), c->ctx, &SQL_ACCOUNTS_OF_USER, args, 1, &rows, &be) != 0)
        return svc_fail_from(e, &be);
    int cnt = db_rows_count(rows);
    *out = bz_arena_calloc(c->arena, (size_t)(cnt ? cnt : 1), sizeof **out);
    while (db_rows_next(rows) && *n < cnt)
        svc__row_account(rows, &(*out)[(*n)++]);
    return 0;
}

int svc_account_get(svc *s, svc_call *c, int64_t id, svc_account *out, svc_err *e)
{
    if (svc__need_user(c, e))
        return -1;
    return own_account(s, c, id, out, e);
}

/* Runs a money transaction (deposit, transfer) queued on its accounts. */
static int money_tx(svc *s, tx_run *run, db_tx_fn fn, void *x, int64_t acct1, int64_t acct2)
{
    if (run->im->busy) /* answered from the key's record: nothing runs */
        return svc__tx_run_op(run, fn, x, SVC_OK, NULL, NULL);
    int held[2];
    if (svc__acct_lock(s, run->c->ctx, acct1, acct2, held) != 0) {
        svc__acct_unlock(s, held);
        svc__idem_end(s, run->im);
        /* The request before it on these accounts held them to the end of
         * this one's deadline — in practice a database that stopped
         * answering (API.md §10: 503 unavailable).  Nothing was done. */
        return svc_fail(run->e, SVC_UNAVAILABLE, "unavailable",
                        "the request's accounts stayed busy past its deadline; retry later");
    }
    int rc = svc__tx_run_op(run, fn, x, SVC_OK, NULL, NULL);
    svc__acct_unlock(s, held);
    return rc;
}

/* ---- deposits ---- */

typedef struct {
    tx_run run;
    int64_t uid, account, amount;
    svc_account *out;
} deposit_args;

static int deposit_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    deposit_args *x = p;
    svc_err_clear(x->run.e);
    db_rows *rows = NULL;
    db_arg args[] = {DB_INT(x->amount), DB_INT(x->account), DB_INT(x->uid)};
    int rc = sql_row(x->run.c->arena, TX(tx), ctx, &SQL_ACCOUNT_DEPOSIT, args, 3, &rows, err);
    if (rc < 0)
        return -1;
    if (rc == DB_NO_ROWS) {
        svc__tx_refuse(&x->run, SVC_NOT_FOUND, "not_found", "account %lld does not exist", (long long)x->account);
    } else {
        svc__row_account(rows, x->out);
    }
    return svc__tx_record(tx, ctx, &x->run, err);
}

int svc_deposit(svc *s, svc_call *c, const svc_deposit_in *in, svc_account *out, svc_err *e)
{
    if (svc__need_user(c, e))
        return -1;
    if (!svc_check_int(e, L_DEPOSIT_AMOUNT, &in->amount_cents, NULL))
        return -1;
    svc_fp fp;
    svc__fp_begin(&fp, "account.deposit");
    svc__fp_int(&fp, in->account_id);
    svc__fp_int(&fp, in->amount_cents.v);
    svc_idem im;
    if (svc__idem_begin(s, c, &fp, true, &im, e) != 0)
        return -1;
    deposit_args x = {
        .run = {.s = s, .c = c, .im = &im, .e = e, .encode = enc_account_v, .decode = dec_account_v, .out = out},
        c->who->user_id, in->account_id, in->amount_cents.v, out};
    return money_tx(s, &x.run, deposit_tx, &x, in->account_id, in->account_id);
}

/* ---- transfers ---- */

typedef struct {
    tx_run run;
    int64_t uid, from, to, amount;
    svc_transfer *out;
    bool refusing; /* PostgreSQL: the move matched nothing (transfer_tx_pg) */
} transfer_args;

/* Works out why a transfer's guarded UPDATE matched nothing (nothing has
 * changed yet). */
static int transfer_refusal(transfer_args *x, db_tx *tx, rt_ctx *ctx, bz_error *err)
{
    db_rows *rows = NULL;
    db_arg ids[] = {DB_INT(x->from), DB_INT(x->to)};
    if (sql_query(x->run.c->arena, TX(tx), ctx, &SQL_TRANSFER_PAIR, ids, 2, &rows, err) != 0)
        return -1;
    bool have_from = false, have_to = false;
    int64_t from_owner = 0, balance = 0;
    char cur_from[8] = "", cur_to[8] = "";
    while (db_rows_next(rows)) {
        int64_t id = db_col_int(rows, 0);
        const char *cur = db_col_text(rows, 2, NULL);
        if (id == x->from) {
            have_from = true;
            from_owner = db_col_int(rows, 1);
            balance = db_col_int(rows, 3);
            svc__copy(cur_from, sizeof cur_from, cur);
        } else {
            have_to = true;
            svc__copy(cur_to, sizeof cur_to, cur);
        }
    }
    if (!have_from || from_owner != x->uid)
        svc__tx_refuse(&x->run, SVC_NOT_FOUND, "not_found", "account %lld does not exist", (long long)x->from);
    else if (!have_to)
        svc__tx_refuse(&x->run, SVC_NOT_FOUND, "not_found", "account %lld does not exist", (long long)x->to);
    else if (strcmp(cur_from, cur_to) != 0)
        svc__tx_refuse(&x->run, SVC_UNPROCESSABLE, "currency_mismatch", "the accounts hold %s and %s", cur_from, cur_to);
    else if (balance < x->amount)
        svc__tx_refuse(&x->run, SVC_CONFLICT, "insufficient_funds", "account %lld holds %lld cents", (long long)x->from,
                  (long long)balance);
    else /* the funds came back since the move found them short: try the move again */
        return bz_err_set(err, BZ_ERR_SERIALIZATION, "transfer guard raced"), -1;
    return 0;
}

/* The move matched nothing: work out why and record that answer. */
static int refuse_and_record(transfer_args *x, db_tx *tx, rt_ctx *ctx, bz_error *err)
{
    if (transfer_refusal(x, tx, ctx, err) != 0)
        return -1;
    return svc__tx_record(tx, ctx, &x->run, err);
}

/* PostgreSQL: the transfer and its record are one statement
 * (SQL_TRANSFER_MOVE) sent with BEGIN and COMMIT: one round trip.  When it
 * moves nothing, the (empty) transaction has committed already, so the
 * refusal is worked out and recorded in a transaction of its own:
 * x->refusing, and run.again to have svc__tx_run_op run this once more. */
static int transfer_tx_pg(transfer_args *x, db_tx *tx, rt_ctx *ctx, bz_error *err)
{
    if (x->refusing) {
        /* The move may now succeed (the balance changed since): its
         * retry starts over from the move. */
        int rc = refuse_and_record(x, tx, ctx, err);
        if (rc != 0 && err->kind == BZ_ERR_SERIALIZATION)
            x->refusing = false;
        return rc;
    }
    const svc_idem *im = x->run.im;
    if (!im || !im->active) /* svc__idem_begin requires the key of a signed-in caller */
        return bz_err_set(err, BZ_ERR_INTERNAL, "transfer without an idempotency key"), -1;
    int64_t now = bz_wall_us();
    svc_transfer t = {0, x->from, x->to, x->amount, "", now};
    bz_buf *mid = bz_arena_buf(x->run.c->arena), *tail = bz_arena_buf(x->run.c->arena);
    svc__enc_transfer_parts(mid, tail, &t);
    db_arg a[] = {DB_INT(x->amount), DB_INT(x->from), DB_INT(x->to), DB_INT(x->uid), DB_TIME(now),
                  DB_TEXT(im->key), DB_TEXTN(im->fp, 64), DB_TEXTN(mid->data, mid->len), DB_TEXTN(tail->data, tail->len)};
    /* READ COMMITTED, the two rows locked, then the move (SQL_TRANSFER_MOVE
     * says why in this order): one round trip with the BEGIN and COMMIT */
    db_step st[] = {{.sql = svc_sql_text(TX(tx), &SQL_TRANSFER_LOCK), .args = a + 1, .nargs = 2},
                    {.sql = svc_sql_text(TX(tx), &SQL_TRANSFER_MOVE), .args = a, .nargs = 9, .want_rows = true}};
    if (db_batch(tx, ctx, st, 2, DB_BATCH_COMMIT, err) != 0)
        return -1;
    db_rows *rows = db_rows_adopt(x->run.c->arena, st[1].rows);
    if (!db_rows_next(rows)) {
        x->refusing = true;
        x->run.again = true;
        return 0;
    }
    t.id = db_col_int(rows, 0);
    svc__copy(t.currency, sizeof t.currency, db_col_text(rows, 1, NULL));
    *x->out = t;
    x->run.recorded = true; /* the move wrote the record, and committed */
    return 0;
}

/* SQLite (one writer, no round trip to save): two guarded UPDATEs in id
 * order and an INSERT; only when the first UPDATE matches nothing does
 * transfer_refusal read the rows. */
static int transfer_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    transfer_args *x = p;
    svc_err_clear(x->run.e);
    if (db_q_dialect(TX(tx)) == DB_POSTGRES)
        return transfer_tx_pg(x, tx, ctx, err);
    db_rows *rows = NULL;
    int rc;
    bool fwd = x->from < x->to;
    db_arg a1[] = {DB_INT(x->amount), DB_INT(fwd ? x->from : x->to), DB_INT(fwd ? x->uid : x->from),
                   DB_INT(fwd ? x->to : x->uid)};
    rc = sql_row(x->run.c->arena, TX(tx), ctx, fwd ? &SQL_TRANSFER_DEBIT_FIRST : &SQL_TRANSFER_CREDIT_FIRST, a1, 4, &rows, err);
    if (rc < 0)
        return -1;
    if (rc == DB_NO_ROWS)
        return refuse_and_record(x, tx, ctx, err);
    char currency[4];
    svc__copy(currency, sizeof currency, db_col_text(rows, 0, NULL));
    /* The second leg and the ledger row: neither needs the other's
     * result, and the leg's count is checked before anything commits. */
    int64_t now = bz_wall_us();
    db_arg a2[] = {DB_INT(x->amount), DB_INT(fwd ? x->to : x->from)};
    db_arg ins[] = {DB_INT(x->from), DB_INT(x->to), DB_INT(x->amount), DB_TEXT(currency), DB_TIME(now)};
    db_step st[] = {
        {.sql = svc_sql_text(TX(tx), fwd ? &SQL_TRANSFER_CREDIT : &SQL_TRANSFER_DEBIT), .args = a2, .nargs = 2},
        {.sql = svc_sql_text(TX(tx), &SQL_TRANSFER_INSERT), .args = ins, .nargs = 5, .want_rows = true},
    };
    if (db_batch(tx, ctx, st, 2, 0, err) != 0)
        return -1;
    rows = db_rows_adopt(x->run.c->arena, st[1].rows);
    if (st[0].affected != 1)
        return bz_err_set(err, BZ_ERR_SERIALIZATION, "transfer second leg raced"), -1;
    if (!db_rows_next(rows))
        return bz_err_set(err, BZ_ERR_INTERNAL, "transfer insert returned no id"), -1;
    *x->out = (svc_transfer){db_col_int(rows, 0), x->from, x->to, x->amount, "", now};
    memcpy(x->out->currency, currency, 4);
    return svc__tx_record(tx, ctx, &x->run, err);
}

/* Records an answer decided before any effect (same_account). */
static int record_only_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    transfer_args *x = p;
    svc__tx_refuse(&x->run, SVC_UNPROCESSABLE, "same_account", "from_account_id and to_account_id are the same account");
    return svc__tx_record(tx, ctx, &x->run, err);
}

int svc_transfer_create(svc *s, svc_call *c, const svc_transfer_in *in, svc_transfer *out, svc_err *e)
{
    if (svc__need_user(c, e))
        return -1;
    svc_check_int(e, L_TRANSFER_FROM, &in->from_account_id, NULL);
    svc_check_int(e, L_TRANSFER_TO, &in->to_account_id, NULL);
    svc_check_int(e, L_TRANSFER_AMOUNT, &in->amount_cents, NULL);
    if (e->kind)
        return -1;
    svc_fp fp;
    svc__fp_begin(&fp, "transfer.create");
    svc__fp_int(&fp, in->from_account_id.v);
    svc__fp_int(&fp, in->to_account_id.v);
    svc__fp_int(&fp, in->amount_cents.v);
    svc_idem im;
    if (svc__idem_begin(s, c, &fp, true, &im, e) != 0)
        return -1;
    transfer_args x = {
        .run = {.s = s, .c = c, .im = &im, .e = e, .encode = enc_transfer_v, .decode = dec_transfer_v, .out = out,
                .read_committed = true},
        c->who->user_id, in->from_account_id.v, in->to_account_id.v, in->amount_cents.v, out, false};
    /* Refused without touching money, but still recorded so a replay gets
     * the same answer. */
    if (x.from == x.to)
        return svc__tx_run_op(&x.run, record_only_tx, &x, SVC_OK, NULL, NULL);
    return money_tx(s, &x.run, transfer_tx, &x, x.from, x.to);
}

int svc_transfer_get(svc *s, svc_call *c, int64_t id, svc_transfer *out, svc_err *e)
{
    if (svc__need_user(c, e))
        return -1;
    db_rows *rows = NULL;
    bz_error be;
    db_arg args[] = {DB_INT(id), DB_INT(c->who->user_id)};
    int rc = sql_row(c->arena, DB(s->db), c->ctx, &SQL_TRANSFER_FOR_USER, args, 2, &rows, &be);
    if (rc < 0)
        return svc_fail_from(e, &be);
    if (rc == DB_NO_ROWS)
        return svc_fail(e, SVC_NOT_FOUND, "not_found", "transfer %lld does not exist", (long long)id);
    svc__row_transfer(rows, out);
    return 0;
}

int svc_transfers_list(svc *s, svc_call *c, int64_t account_id, const svc_page_in *pg, svc_transfer_page *out,
                       svc_err *e)
{
    memset(out, 0, sizeof *out);
    if (svc__need_user(c, e))
        return -1;
    svc_account acct;
    if (own_account(s, c, account_id, &acct, e) != 0)
        return -1;
    int limit = svc__page_limit(pg, e);
    if (limit < 0)
        return -1;
    char scope[64];
    snprintf(scope, sizeof scope, "transfers:%lld", (long long)account_id);
    svc_cursor cur = {SVC_CURSOR_TOP_US, INT64_MAX};
    if (svc__cursor_decode(s, &pg->cursor, scope, &cur, e) < 0)
        return -1;
    db_arg args[] = {DB_INT(account_id), DB_TIME(cur.t_us), DB_INT(cur.id), DB_INT(limit + 1)};
    db_rows *rows = NULL;
    bz_error be;
    if (sql_query(c->arena, DB(s->db), c->ctx, &SQL_TRANSFERS_OF_ACCOUNT, args, 4, &rows, &be) != 0)
        return svc_fail_from(e, &be);
    out->data = bz_arena_calloc(c->arena, (size_t)limit, sizeof *out->data);
    while (out->n < limit && db_rows_next(rows))
        svc__row_transfer(rows, &out->data[out->n++]);
    if (db_rows_count(rows) > limit) {
        svc_transfer *last = &out->data[out->n - 1];
        svc_cursor next = {last->created_us, last->id};
        out->next_cursor = svc__cursor_encode(s, c->arena, &next, scope);
    }
    return 0;
}

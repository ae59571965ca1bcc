/* app/accounts.c — accounts, deposits and transfers (API.md §4).
 *
 * Money moves only inside one SERIALIZABLE transaction per request
 * (SQLite: BEGIN IMMEDIATE), together with the idempotency record; the
 * CHECK (balance_cents >= 0) constraint backs the funds check. */
#include "app/app-private.h"

#include "base/clock.h"

#include <stdio.h>
#include <string.h>

#define ACCOUNT_COLS "id, user_id, currency, balance_cents, created_at"
#define TRANSFER_COLS "id, from_account_id, to_account_id, amount_cents, currency, created_at"

static void account_json(bz_buf *b, db_rows *rows)
{
    size_t n;
    bz_buf_putc(b, '{');
    jw_i64(b, "id", db_col_int(rows, 0));
    jw_i64(b, "user_id", db_col_int(rows, 1));
    const char *c = db_col_text(rows, 2, &n);
    jw_strn(b, "currency", c, n);
    jw_i64(b, "balance_cents", db_col_int(rows, 3));
    jw_time(b, "created_at", db_col_time(rows, 4));
    bz_buf_putc(b, '}');
}

static void transfer_json(bz_buf *b, db_rows *rows)
{
    size_t n;
    bz_buf_putc(b, '{');
    jw_i64(b, "id", db_col_int(rows, 0));
    jw_i64(b, "from_account_id", db_col_int(rows, 1));
    jw_i64(b, "to_account_id", db_col_int(rows, 2));
    jw_i64(b, "amount_cents", db_col_int(rows, 3));
    const char *c = db_col_text(rows, 4, &n);
    jw_strn(b, "currency", c, n);
    jw_time(b, "created_at", db_col_time(rows, 5));
    bz_buf_putc(b, '}');
}

bool currency_ok(const char *s, size_t n)
{
    return n == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' && s[2] >= 'A' && s[2] <= 'Z';
}

/* Reads account id into res as JSON.  0, DB_NO_ROWS or -1. */
static int load_account(db_q q, rt_ctx *ctx, int64_t id, bz_buf *out, int64_t *owner, bz_error *err)
{
    db_rows *rows = NULL;
    db_arg args[] = {DB_INT(id)};
    int rc = db_query_row(q, ctx, "SELECT " ACCOUNT_COLS " FROM accounts WHERE id = $1", args, 1, &rows, err);
    if (rc != 0)
        return rc;
    if (owner)
        *owner = db_col_int(rows, 1);
    if (out)
        account_json(out, rows);
    db_rows_close(rows);
    return 0;
}

/* ---- POST /v1/accounts ---- */

typedef struct {
    app *a;
    api_idem *im;
    api_result *res;
    int64_t uid;
    const char *currency;
} create_args;

static int create_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    create_args *x = p;
    api_result *res = x->res;
    res_reset(res);
    db_rows *rows = NULL;
    int64_t now = bz_wall_us();
    db_arg args[] = {DB_INT(x->uid), DB_TEXT(x->currency), DB_TIME(now)};
    int rc = db_query_row(TX(tx), ctx,
                          "INSERT INTO accounts (user_id, currency, balance_cents, created_at) VALUES ($1, $2, 0, $3) "
                          "RETURNING id",
                          args, 3, &rows, err);
    if (rc != 0)
        return rc < 0 ? rc : -1;
    int64_t id = db_col_int(rows, 0);
    db_rows_close(rows);
    if (load_account(TX(tx), ctx, id, &res->body, NULL, err) != 0)
        return -1;
    res->status = 201;
    snprintf(res->location, sizeof res->location, "/v1/accounts/%lld", (long long)id);
    return api_idem_save(x->a, tx, ctx, x->im, res, err);
}

int accounts_create(app *a, http_req *r)
{
    int64_t uid;
    if (api_auth(a, r, &uid))
        return 0;
    json_t *j = api_body(r);
    if (!j)
        return 0;
    jv v;
    jv_init(&v);
    const char *cur = NULL;
    size_t n = 0;
    if (jv_str(&v, j, "currency", true, 0, 64, false, &cur, &n) && !currency_ok(cur, n))
        jv_fail(&v, "currency", "must be a 3-letter uppercase ISO 4217 code");
    if (v.n) {
        json_decref(j);
        return api_invalid(r, &v);
    }
    jv_free(&v);
    api_idem im;
    if (api_idem_begin(a, r, uid, false, &im)) {
        json_decref(j);
        return 0;
    }
    api_result res;
    res_init(&res);
    create_args x = {a, &im, &res, uid, cur};
    api_tx(a, r, &im, create_tx, &x, &res, "account_exists", "you already have an account in this currency");
    res_free(&res);
    json_decref(j);
    return 0;
}

/* ---- GET /v1/accounts, /v1/accounts/{id} ---- */

int accounts_list(app *a, http_req *r)
{
    int64_t uid;
    if (api_auth(a, r, &uid))
        return 0;
    db_rows *rows = NULL;
    bz_error e;
    db_arg args[] = {DB_INT(uid)};
    if (db_query(DB(a->db), r->ctx, "SELECT " ACCOUNT_COLS " FROM accounts WHERE user_id = $1 ORDER BY currency",
                 args, 1, &rows, &e) != 0)
        return api_send_error(r, &e);
    bz_buf b = BZ_BUF_INIT;
    bz_buf_append_c(&b, "{\"data\":[");
    while (db_rows_next(rows)) {
        jw_sep(&b);
        account_json(&b, rows);
    }
    db_rows_close(rows);
    bz_buf_append_c(&b, "]}");
    http_send(r, 200, "application/json; charset=utf-8", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

int accounts_get(app *a, http_req *r)
{
    int64_t uid, id, owner = 0;
    if (api_auth(a, r, &uid) || !api_path_id(r, "id", &id))
        return 0;
    bz_buf b = BZ_BUF_INIT;
    bz_error e;
    int rc = load_account(DB(a->db), r->ctx, id, &b, &owner, &e);
    if (rc < 0) {
        bz_buf_free(&b);
        return api_send_error(r, &e);
    }
    if (rc == DB_NO_ROWS || owner != uid) {
        bz_buf_free(&b);
        return http_send_problem(r, 404, "not_found", "no such account");
    }
    http_send(r, 200, "application/json; charset=utf-8", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

/* PostgreSQL answers two SERIALIZABLE transactions that update the same
 * account by failing one (40001) after it waited for the other; under a
 * hot account most of the work is then retries and back-off.  Within one
 * instance, transfers and deposits first queue on a striped lock per
 * account (both stripes, lower first, so two transfers cannot wait on each
 * other), so they meet PostgreSQL one at a time per account.  Correctness
 * does not depend on it: across instances SERIALIZABLE still decides.
 * SQLite has one writer and group commit already; it skips this. */
static int lock_accounts(app *a, rt_ctx *ctx, int64_t x, int64_t y, int held[2])
{
    held[0] = held[1] = -1;
    if (!a->acct_locks_on)
        return 0;
    int s1 = (int)((uint64_t)x % APP_ACCT_STRIPES), s2 = (int)((uint64_t)y % APP_ACCT_STRIPES);
    if (s1 > s2) {
        int t = s1;
        s1 = s2;
        s2 = t;
    }
    if (rt_mutex_lock(&a->acct_locks[s1], ctx) != 0)
        return -1;
    held[0] = s1;
    if (s2 != s1) {
        if (rt_mutex_lock(&a->acct_locks[s2], ctx) != 0)
            return -1;
        held[1] = s2;
    }
    return 0;
}

static void unlock_accounts(app *a, const int held[2])
{
    for (int i = 1; i >= 0; i--)
        if (held[i] >= 0)
            rt_mutex_unlock(&a->acct_locks[held[i]]);
}

/* Runs a money transaction (deposit, transfer) queued on its accounts,
 * answers, and frees res. */
static int money_tx(app *a, http_req *r, api_idem *im, db_tx_fn fn, void *x, api_result *res, int64_t acct1,
                    int64_t acct2)
{
    int held[2];
    if (lock_accounts(a, r->ctx, acct1, acct2, held) != 0) {
        unlock_accounts(a, held);
        api_idem_end(a, r, im);
        res_free(res);
        return http_send_problem(r, 503, "timeout", "the request ran out of time waiting for its accounts");
    }
    api_tx(a, r, im, fn, x, res, NULL, NULL);
    unlock_accounts(a, held);
    res_free(res);
    return 0;
}

/* ---- POST /v1/accounts/{id}/deposits ---- */

typedef struct {
    app *a;
    api_idem *im;
    api_result *res;
    int64_t uid, account, amount;
} deposit_args;

static int deposit_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    deposit_args *x = p;
    api_result *res = x->res;
    res_reset(res);
    int64_t owner = 0;
    int rc = load_account(TX(tx), ctx, x->account, NULL, &owner, err);
    if (rc < 0)
        return rc;
    if (rc == DB_NO_ROWS || owner != x->uid) {
        res_problem(res, 404, "not_found", "account %lld does not exist", (long long)x->account);
    } else {
        db_arg args[] = {DB_INT(x->amount), DB_INT(x->account)};
        if (db_exec(TX(tx), ctx, "UPDATE accounts SET balance_cents = balance_cents + $1 WHERE id = $2", args, 2,
                    NULL, err) != 0)
            return -1;
        if (load_account(TX(tx), ctx, x->account, &res->body, NULL, err) != 0)
            return -1;
        res->status = 201;
        snprintf(res->location, sizeof res->location, "/v1/accounts/%lld", (long long)x->account);
    }
    return api_idem_save(x->a, tx, ctx, x->im, res, err);
}

int accounts_deposit(app *a, http_req *r)
{
    int64_t uid, id;
    if (api_auth(a, r, &uid) || !api_path_id(r, "id", &id))
        return 0;
    json_t *j = api_body(r);
    if (!j)
        return 0;
    jv v;
    jv_init(&v);
    int64_t amount = 0;
    jv_int(&v, j, "amount_cents", true, 1, 1000000000, &amount);
    json_decref(j);
    if (v.n)
        return api_invalid(r, &v);
    jv_free(&v);
    api_idem im;
    if (api_idem_begin(a, r, uid, true, &im))
        return 0;
    api_result res;
    res_init(&res);
    deposit_args x = {a, &im, &res, uid, id, amount};
    return money_tx(a, r, &im, deposit_tx, &x, &res, id, id);
}

/* ---- POST /v1/transfers ---- */

typedef struct {
    app *a;
    api_idem *im;
    api_result *res;
    int64_t uid, from, to, amount;
} transfer_args;

/* Works out why a transfer's guarded UPDATE matched nothing (nothing has
 * changed yet): 404, 422 or 409 into res. */
static int transfer_refusal(transfer_args *x, db_tx *tx, rt_ctx *ctx, bz_error *err)
{
    api_result *res = x->res;
    db_rows *rows = NULL;
    db_arg ids[] = {DB_INT(x->from), DB_INT(x->to)};
    if (db_query(TX(tx), ctx, "SELECT id, user_id, currency, balance_cents FROM accounts WHERE id IN ($1, $2)", ids,
                 2, &rows, err) != 0)
        return -1;
    bool have_from = false, have_to = false;
    int64_t from_owner = 0, balance = 0;
    char cur_from[8] = "", cur_to[8] = "";
    while (db_rows_next(rows)) {
        int64_t id = db_col_int(rows, 0);
        const char *c = db_col_text(rows, 2, NULL);
        if (id == x->from) {
            have_from = true;
            from_owner = db_col_int(rows, 1);
            balance = db_col_int(rows, 3);
            snprintf(cur_from, sizeof cur_from, "%s", c);
        } else {
            have_to = true;
            snprintf(cur_to, sizeof cur_to, "%s", c);
        }
    }
    db_rows_close(rows);
    if (!have_from || from_owner != x->uid)
        res_problem(res, 404, "not_found", "account %lld does not exist", (long long)x->from);
    else if (!have_to)
        res_problem(res, 404, "not_found", "account %lld does not exist", (long long)x->to);
    else if (strcmp(cur_from, cur_to) != 0)
        res_problem(res, 422, "currency_mismatch", "the accounts hold %s and %s", cur_from, cur_to);
    else if (balance < x->amount)
        res_problem(res, 409, "insufficient_funds", "account %lld holds %lld cents", (long long)x->from,
                    (long long)balance);
    else /* it changed under us: SERIALIZABLE makes this a conflict */
        return bz_err_set(err, BZ_ERR_SERIALIZATION, "transfer guard raced"), -1;
    return 0;
}

/* The common case costs two guarded UPDATEs: the first (in id order, so
 * opposite transfers cannot deadlock) carries every check — the payer
 * owns the account and has the funds, the payee exists in the same
 * currency — and only when it matches nothing does transfer_refusal read
 * the rows to say why. */
static int transfer_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    transfer_args *x = p;
    api_result *res = x->res;
    res_reset(res);
    db_rows *rows = NULL;
    char currency[8] = "";
    int rc;
    if (x->from < x->to) {
        db_arg a1[] = {DB_INT(x->amount), DB_INT(x->from), DB_INT(x->uid), DB_INT(x->to)};
        rc = db_query_row(TX(tx), ctx,
                          "UPDATE accounts SET balance_cents = balance_cents - $1 WHERE id = $2 AND user_id = $3 "
                          "AND balance_cents >= $1 AND currency = (SELECT currency FROM accounts WHERE id = $4) "
                          "RETURNING currency",
                          a1, 4, &rows, err);
    } else {
        db_arg a1[] = {DB_INT(x->amount), DB_INT(x->to), DB_INT(x->from), DB_INT(x->uid)};
        rc = db_query_row(TX(tx), ctx,
                          "UPDATE accounts SET balance_cents = balance_cents + $1 WHERE id = $2 AND currency = "
                          "(SELECT currency FROM accounts WHERE id = $3 AND user_id = $4 AND balance_cents >= $1) "
                          "RETURNING currency",
                          a1, 4, &rows, err);
    }
    if (rc < 0)
        return -1;
    if (rc == DB_NO_ROWS) {
        if (transfer_refusal(x, tx, ctx, err) != 0)
            return -1;
        return api_idem_save(x->a, tx, ctx, x->im, res, err);
    }
    snprintf(currency, sizeof currency, "%s", db_col_text(rows, 0, NULL));
    db_rows_close(rows);
    int64_t aff = 0;
    if (x->from < x->to) {
        db_arg a2[] = {DB_INT(x->amount), DB_INT(x->to)};
        rc = db_exec(TX(tx), ctx, "UPDATE accounts SET balance_cents = balance_cents + $1 WHERE id = $2", a2, 2, &aff,
                     err);
    } else {
        db_arg a2[] = {DB_INT(x->amount), DB_INT(x->from)};
        rc = db_exec(TX(tx), ctx,
                     "UPDATE accounts SET balance_cents = balance_cents - $1 WHERE id = $2 AND balance_cents >= $1", a2,
                     2, &aff, err);
    }
    if (rc != 0)
        return -1;
    if (aff != 1)
        return bz_err_set(err, BZ_ERR_SERIALIZATION, "transfer second leg raced"), -1;
    int64_t now = bz_wall_us();
    db_arg ins[] = {DB_INT(x->from), DB_INT(x->to), DB_INT(x->amount), DB_TEXT(currency), DB_TIME(now)};
    if (db_query_row(TX(tx), ctx,
                     "INSERT INTO transfers (from_account_id, to_account_id, amount_cents, currency, created_at) "
                     "VALUES ($1, $2, $3, $4, $5) RETURNING id",
                     ins, 5, &rows, err) != 0)
        return -1;
    int64_t id = db_col_int(rows, 0);
    db_rows_close(rows);
    bz_buf *b = &res->body;
    bz_buf_putc(b, '{');
    jw_i64(b, "id", id);
    jw_i64(b, "from_account_id", x->from);
    jw_i64(b, "to_account_id", x->to);
    jw_i64(b, "amount_cents", x->amount);
    jw_str(b, "currency", currency);
    jw_time(b, "created_at", now);
    bz_buf_putc(b, '}');
    res->status = 201;
    snprintf(res->location, sizeof res->location, "/v1/transfers/%lld", (long long)id);
    return api_idem_save(x->a, tx, ctx, x->im, res, err);
}

/* Records an answer decided before any effect (same_account). */
static int record_only_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    transfer_args *x = p;
    return api_idem_save(x->a, tx, ctx, x->im, x->res, err);
}

int transfers_create(app *a, http_req *r)
{
    int64_t uid;
    if (api_auth(a, r, &uid))
        return 0;
    json_t *j = api_body(r);
    if (!j)
        return 0;
    jv v;
    jv_init(&v);
    int64_t from = 0, to = 0, amount = 0;
    jv_int(&v, j, "from_account_id", true, 1, INT64_MAX, &from);
    jv_int(&v, j, "to_account_id", true, 1, INT64_MAX, &to);
    jv_int(&v, j, "amount_cents", true, 1, INT64_MAX / 4, &amount);
    json_decref(j);
    if (v.n)
        return api_invalid(r, &v);
    jv_free(&v);
    api_idem im;
    if (api_idem_begin(a, r, uid, true, &im))
        return 0;
    api_result res;
    res_init(&res);
    if (from == to) {
        /* Answered without a transaction, but still recorded so a replay
         * gets the same answer. */
        res_problem(&res, 422, "same_account", "from_account_id and to_account_id are the same account");
    }
    transfer_args x = {a, &im, &res, uid, from, to, amount};
    if (from == to) {
        if (!im.active) {
            res_send(r, &res);
            res_free(&res);
            return 0;
        }
        api_tx(a, r, &im, record_only_tx, &x, &res, NULL, NULL);
    res_free(&res);
    return 0;
    }
    return money_tx(a, r, &im, transfer_tx, &x, &res, from, to);
}

/* ---- GET /v1/transfers/{id} ---- */

int transfers_get(app *a, http_req *r)
{
    int64_t uid, id;
    if (api_auth(a, r, &uid) || !api_path_id(r, "id", &id))
        return 0;
    db_rows *rows = NULL;
    bz_error e;
    db_arg args[] = {DB_INT(id), DB_INT(uid)};
    int rc = db_query_row(DB(a->db), r->ctx,
                          "SELECT t.id, t.from_account_id, t.to_account_id, t.amount_cents, t.currency, t.created_at "
                          "FROM transfers t JOIN accounts f ON f.id = t.from_account_id "
                          "JOIN accounts o ON o.id = t.to_account_id "
                          "WHERE t.id = $1 AND (f.user_id = $2 OR o.user_id = $2)",
                          args, 2, &rows, &e);
    if (rc < 0)
        return api_send_error(r, &e);
    if (rc == DB_NO_ROWS)
        return http_send_problem(r, 404, "not_found", "no such transfer");
    bz_buf b = BZ_BUF_INIT;
    transfer_json(&b, rows);
    db_rows_close(rows);
    http_send(r, 200, "application/json; charset=utf-8", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

/* ---- GET /v1/accounts/{id}/transfers ---- */

int transfers_list(app *a, http_req *r)
{
    int64_t uid, id, owner = 0;
    int limit;
    if (api_auth(a, r, &uid) || !api_path_id(r, "id", &id) || !api_limit(r, &limit))
        return 0;
    bz_error e;
    int rc = load_account(DB(a->db), r->ctx, id, NULL, &owner, &e);
    if (rc < 0)
        return api_send_error(r, &e);
    if (rc == DB_NO_ROWS || owner != uid)
        return http_send_problem(r, 404, "not_found", "no such account");
    char scope[64];
    snprintf(scope, sizeof scope, "transfers:%lld", (long long)id);
    api_cursor cur = {API_CURSOR_TOP_US, INT64_MAX};
    if (api_cursor_param(a, r, scope, &cur) < 0)
        return 0;
    /* Newest first across both directions: one keyset scan per direction
     * (each on its own index), merged. */
    db_arg args[] = {DB_INT(id), DB_TIME(cur.t_us), DB_INT(cur.id), DB_INT(limit + 1)};
    db_rows *rows = NULL;
    if (db_query(DB(a->db), r->ctx,
                 "SELECT * FROM ("
                 "SELECT * FROM (SELECT " TRANSFER_COLS " FROM transfers WHERE from_account_id = $1 "
                 "AND (created_at < $2 OR (created_at = $2 AND id < $3)) ORDER BY created_at DESC, id DESC LIMIT $4) f "
                 "UNION ALL "
                 "SELECT * FROM (SELECT " TRANSFER_COLS " FROM transfers WHERE to_account_id = $1 "
                 "AND (created_at < $2 OR (created_at = $2 AND id < $3)) ORDER BY created_at DESC, id DESC LIMIT $4) t"
                 ") u ORDER BY created_at DESC, id DESC LIMIT $4",
                 args, 4, &rows, &e) != 0)
        return api_send_error(r, &e);
    bz_buf b = BZ_BUF_INIT;
    bz_buf_append_c(&b, "{\"data\":[");
    int k = 0;
    api_cursor last = {0, 0};
    while (db_rows_next(rows) && k < limit) {
        jw_sep(&b);
        transfer_json(&b, rows);
        last.t_us = db_col_time(rows, 5);
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

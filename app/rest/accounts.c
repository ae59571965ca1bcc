/* app/rest/accounts.c — accounts, deposits and transfers over REST
 * (API.md §4). */
#include "app/rest/rest-private.h"

#include <stdio.h>

static int send_account(http_req *r, int status, const svc_account *a, bool loc)
{
    bz_buf b = BZ_BUF_INIT;
    enc_account_json(&b, a);
    char l[64];
    snprintf(l, sizeof l, "/v1/accounts/%lld", (long long)a->id);
    rest_json(r, status, &b, loc ? l : NULL);
    bz_buf_free(&b);
    return 0;
}

int accounts_create(rest *R, http_req *r, const svc_principal *who)
{
    svc_err e;
    svc_err_clear(&e);
    json_t *j;
    bool reals;
    if (rest_body(r, &j, &reals, &e) != 0)
        return rest_fail(r, &e);
    svc_str cur = rest_get_str(j, L_ACCOUNT_CURRENCY, &e);
    svc_call c = rest_call(r, who);
    svc_account a;
    int rc = svc_account_create(R->s, &c, cur, &a, &e);
    json_decref(j);
    rest_call_headers(r, &c);
    if (rc != 0)
        return rest_fail(r, &e);
    return send_account(r, 201, &a, true);
}

int accounts_list(rest *R, http_req *r, const svc_principal *who)
{
    svc_err e;
    svc_err_clear(&e);
    svc_call c = rest_call(r, who);
    svc_account *v;
    int n;
    if (svc_accounts_list(R->s, &c, &v, &n, &e) != 0)
        return rest_fail(r, &e);
    bz_buf b = BZ_BUF_INIT;
    bz_buf_append_c(&b, "{\"data\":[");
    for (int i = 0; i < n; i++) {
        jw_sep(&b);
        enc_account_json(&b, &v[i]);
    }
    bz_buf_append_c(&b, "]}");
    rest_json(r, 200, &b, NULL);
    bz_buf_free(&b);
    return 0;
}

int accounts_get(rest *R, http_req *r, const svc_principal *who)
{
    svc_err e;
    svc_err_clear(&e);
    int64_t id;
    if (!rest_path_id(r, "id", &id, &e))
        return rest_fail(r, &e);
    svc_call c = rest_call(r, who);
    svc_account a;
    if (svc_account_get(R->s, &c, id, &a, &e) != 0)
        return rest_fail(r, &e);
    return send_account(r, 200, &a, false);
}

int accounts_deposit(rest *R, http_req *r, const svc_principal *who)
{
    svc_err e;
    svc_err_clear(&e);
    svc_deposit_in in = {0};
    if (!rest_path_id(r, "id", &in.account_id, &e))
        return rest_fail(r, &e);
    json_t *j;
    bool reals;
    if (rest_body(r, &j, &reals, &e) != 0)
        return rest_fail(r, &e);
    in.amount_cents = rest_get_int(j, L_DEPOSIT_AMOUNT, reals, NULL, &e);
    json_decref(j);
    svc_call c = rest_call(r, who);
    svc_account a;
    int rc = svc_deposit(R->s, &c, &in, &a, &e);
    rest_call_headers(r, &c);
    if (rc != 0)
        return rest_fail(r, &e);
    return send_account(r, 201, &a, true);
}

int transfers_create(rest *R, http_req *r, const svc_principal *who)
{
    svc_err e;
    svc_err_clear(&e);
    json_t *j;
    bool reals;
    if (rest_body(r, &j, &reals, &e) != 0)
        return rest_fail(r, &e);
    svc_transfer_in in = {rest_get_int(j, L_TRANSFER_FROM, reals, NULL, &e),
                          rest_get_int(j, L_TRANSFER_TO, reals, NULL, &e),
                          rest_get_int(j, L_TRANSFER_AMOUNT, reals, NULL, &e)};
    json_decref(j);
    svc_call c = rest_call(r, who);
    svc_transfer t;
    int rc = svc_transfer_create(R->s, &c, &in, &t, &e);
    rest_call_headers(r, &c);
    if (rc != 0)
        return rest_fail(r, &e);
    bz_buf b = BZ_BUF_INIT;
    enc_transfer_json(&b, &t);
    char loc[64];
    snprintf(loc, sizeof loc, "/v1/transfers/%lld", (long long)t.id);
    rest_json(r, 201, &b, loc);
    bz_buf_free(&b);
    return 0;
}

int transfers_get(rest *R, http_req *r, const svc_principal *who)
{
    svc_err e;
    svc_err_clear(&e);
    int64_t id;
    if (!rest_path_id(r, "id", &id, &e))
        return rest_fail(r, &e);
    svc_call c = rest_call(r, who);
    svc_transfer t;
    if (svc_transfer_get(R->s, &c, id, &t, &e) != 0)
        return rest_fail(r, &e);
    bz_buf b = BZ_BUF_INIT;
    enc_transfer_json(&b, &t);
    rest_json(r, 200, &b, NULL);
    bz_buf_free(&b);
    return 0;
}

int transfers_list(rest *R, http_req *r, const svc_principal *who)
{
    svc_err e;
    svc_err_clear(&e);
    int64_t id;
    if (!rest_path_id(r, "id", &id, &e))
        return rest_fail(r, &e);
    svc_page_in pg = rest_page(r, &e);
    if (e.kind)
        return rest_fail(r, &e);
    svc_call c = rest_call(r, who);
    svc_transfer_page p;
    if (svc_transfers_list(R->s, &c, id, &pg, &p, &e) != 0)
        return rest_fail(r, &e);
    bz_buf b = BZ_BUF_INIT;
    bz_buf_append_c(&b, "{\"data\":[");
    for (int i = 0; i < p.n; i++) {
        jw_sep(&b);
        enc_transfer_json(&b, &p.data[i]);
    }
    enc_page_end(&b, p.next_cursor);
    rest_json(r, 200, &b, NULL);
    bz_buf_free(&b);
    return 0;
}

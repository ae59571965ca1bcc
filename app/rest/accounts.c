/* app/rest/accounts.c — accounts, deposits and transfers over REST
 * (API.md §4). */
#include "app/rest/rest-private.h"

#include <stdio.h>

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
    rest_call_headers(r, &c);
    if (rc != 0)
        return rest_fail(r, &e);
    return rest_send(r, 201, enc_account_json, &a, "/v1/accounts/", a.id);
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
    return rest_send_list(r, enc_account_json, v, sizeof *v, n, false, NULL);
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
    return rest_send(r, 200, enc_account_json, &a, NULL, 0);
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
    svc_call c = rest_call(r, who);
    svc_account a;
    int rc = svc_deposit(R->s, &c, &in, &a, &e);
    rest_call_headers(r, &c);
    if (rc != 0)
        return rest_fail(r, &e);
    return rest_send(r, 201, enc_account_json, &a, "/v1/accounts/", a.id);
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
    svc_call c = rest_call(r, who);
    svc_transfer t;
    int rc = svc_transfer_create(R->s, &c, &in, &t, &e);
    rest_call_headers(r, &c);
    if (rc != 0)
        return rest_fail(r, &e);
    return rest_send(r, 201, enc_transfer_json, &t, "/v1/transfers/", t.id);
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
    return rest_send(r, 200, enc_transfer_json, &t, NULL, 0);
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
    return rest_send_list(r, enc_transfer_json, p.data, sizeof *p.data, p.n, true, p.next_cursor);
}

/* app/rest/accounts.c — accounts, deposits and transfers over REST
 * (API.md §4). */
#include "app/rest/rest-private.h"

#include <stdio.h>

int accounts_create(rest_x *x)
{
    json_t *j;
    bool reals;
    if (rest_body(x->r, &j, &reals, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    svc_str cur = rest_get_str(j, L_ACCOUNT_CURRENCY, &x->e);
    svc_account a;
    int rc = svc_account_create(x->R->s, &x->c, cur, &a, &x->e);
    rest_call_headers(x->r, &x->c);
    if (rc != 0)
        return rest_fail(x->r, &x->e);
    return rest_send(x->r, 201, rest_json_account, &a, "/v1/accounts/", a.id);
}

int accounts_list(rest_x *x)
{
    svc_account *v;
    int n;
    if (svc_accounts_list(x->R->s, &x->c, &v, &n, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    return rest_send_list(x->r, rest_json_account, v, sizeof *v, n, false, NULL);
}

int accounts_get(rest_x *x)
{
    svc_account a;
    if (svc_account_get(x->R->s, &x->c, x->id, &a, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    return rest_send(x->r, 200, rest_json_account, &a, NULL, 0);
}

int accounts_deposit(rest_x *x)
{
    svc_deposit_in in = {x->id, {0, SVC_ABSENT}};
    json_t *j;
    bool reals;
    if (rest_body(x->r, &j, &reals, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    in.amount_cents = rest_get_int(j, L_DEPOSIT_AMOUNT, reals, NULL, &x->e);
    svc_account a;
    int rc = svc_deposit(x->R->s, &x->c, &in, &a, &x->e);
    rest_call_headers(x->r, &x->c);
    if (rc != 0)
        return rest_fail(x->r, &x->e);
    return rest_send(x->r, 201, rest_json_account, &a, "/v1/accounts/", a.id);
}

int transfers_create(rest_x *x)
{
    json_t *j;
    bool reals;
    if (rest_body(x->r, &j, &reals, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    svc_transfer_in in = {rest_get_int(j, L_TRANSFER_FROM, reals, NULL, &x->e),
                          rest_get_int(j, L_TRANSFER_TO, reals, NULL, &x->e),
                          rest_get_int(j, L_TRANSFER_AMOUNT, reals, NULL, &x->e)};
    svc_transfer t;
    int rc = svc_transfer_create(x->R->s, &x->c, &in, &t, &x->e);
    rest_call_headers(x->r, &x->c);
    if (rc != 0)
        return rest_fail(x->r, &x->e);
    return rest_send(x->r, 201, rest_json_transfer, &t, "/v1/transfers/", t.id);
}

int transfers_get(rest_x *x)
{
    svc_transfer t;
    if (svc_transfer_get(x->R->s, &x->c, x->id, &t, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    return rest_send(x->r, 200, rest_json_transfer, &t, NULL, 0);
}

int transfers_list(rest_x *x)
{
    svc_page_in pg = rest_page(x->r, &x->e);
    if (x->e.kind)
        return rest_fail(x->r, &x->e);
    svc_transfer_page p;
    if (svc_transfers_list(x->R->s, &x->c, x->id, &pg, &p, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    return rest_send_list(x->r, rest_json_transfer, p.data, sizeof *p.data, p.n, true, p.next_cursor);
}

/* app/rest/users.c — users and sessions over REST (API.md §3). */
#include "app/rest/rest-private.h"

#include <stdio.h>

int users_create(rest_x *x)
{
    json_t *j;
    bool reals;
    if (rest_body(x->r, &j, &reals, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    svc_user_in in = {rest_get_str(j, L_USER_EMAIL, &x->e), rest_get_str(j, L_USER_NAME, &x->e),
                      rest_get_str(j, L_USER_PASSWORD, &x->e)};
    svc_user u;
    if (svc_user_create(x->R->s, &x->c, &in, &u, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    return rest_send(x->r, 201, rest_json_user, &u, "/v1/users/", u.id);
}

int users_get(rest_x *x)
{
    svc_user u;
    if (svc_user_profile(x->R->s, &x->c, x->id, &u, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    return rest_send(x->r, 200, rest_json_user, &u, NULL, 0);
}

int users_find(rest_x *x)
{
    svc_user u;
    bool found;
    if (svc_user_find(x->R->s, &x->c, rest_query_str(x->r, L_USERS_EMAIL), &u, &found, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    return rest_send_list(x->r, rest_json_user, &u, sizeof u, found ? 1 : 0, false, NULL);
}

int users_me(rest_x *x)
{
    svc_user u;
    if (svc_user_me(x->R->s, &x->c, &u, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    return rest_send(x->r, 200, rest_json_user, &u, NULL, 0);
}

int users_patch(rest_x *x)
{
    if (x->id != x->who->user_id) /* before reading a body that is not theirs to send */
        return rest_fail(x->r, &(svc_err){.kind = SVC_NOT_FOUND, .code = "not_found", .msg = "no such user"});
    json_t *j;
    bool reals;
    if (rest_body(x->r, &j, &reals, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    svc_user_patch in = {rest_get_str(j, L_PATCH_NAME, &x->e), rest_get_str(j, L_PATCH_PASSWORD, &x->e)};
    svc_user u;
    if (svc_user_patch_op(x->R->s, &x->c, x->id, &in, &u, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    return rest_send(x->r, 200, rest_json_user, &u, NULL, 0);
}

int sessions_create(rest_x *x)
{
    json_t *j;
    bool reals;
    if (rest_body(x->r, &j, &reals, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    svc_login_in in = {rest_get_str(j, L_LOGIN_EMAIL, &x->e), rest_get_str(j, L_LOGIN_PASSWORD, &x->e)};
    svc_session s;
    int rc = svc_session_create(x->R->s, &x->c, &in, &s, &x->e);
    rest_call_headers(x->r, &x->c);
    if (rc != 0) {
        if (x->e.kind == SVC_RATE_LIMITED)
            rest_metrics_count_rate_limited();
        return rest_fail(x->r, &x->e);
    }
    http_add_header(x->r, "Cache-Control", "no-store");
    http_add_header(x->r, "Location", "/v1/sessions/current");
    return rest_send(x->r, 201, rest_json_session, &s, NULL, 0);
}

int sessions_delete(rest_x *x)
{
    if (svc_session_delete(x->R->s, &x->c, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    return http_send(x->r, 204, NULL, NULL, 0);
}

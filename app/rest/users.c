/* app/rest/users.c — users and sessions over REST (API.md §3). */
#include "app/rest/rest-private.h"

#include <stdio.h>

int users_create(rest *R, http_req *r, const svc_principal *who)
{
    svc_err e;
    svc_err_clear(&e);
    json_t *j;
    bool reals;
    if (rest_body(r, &j, &reals, &e) != 0)
        return rest_fail(r, &e);
    svc_user_in in = {rest_get_str(j, L_USER_EMAIL, &e), rest_get_str(j, L_USER_NAME, &e),
                      rest_get_str(j, L_USER_PASSWORD, &e)};
    svc_call c = rest_call(r, who);
    svc_user u;
    int rc = svc_user_create(R->s, &c, &in, &u, &e);
    if (rc != 0)
        return rest_fail(r, &e);
    return rest_send(r, 201, enc_user_json, &u, "/v1/users/", u.id);
}

int users_get(rest *R, http_req *r, const svc_principal *who)
{
    svc_err e;
    svc_err_clear(&e);
    int64_t id;
    if (!rest_path_id(r, "id", &id, &e))
        return rest_fail(r, &e);
    svc_call c = rest_call(r, who);
    svc_user u;
    if (svc_user_profile(R->s, &c, id, &u, &e) != 0)
        return rest_fail(r, &e);
    return rest_send(r, 200, enc_user_json, &u, NULL, 0);
}

int users_find(rest *R, http_req *r, const svc_principal *who)
{
    svc_err e;
    svc_err_clear(&e);
    svc_call c = rest_call(r, who);
    svc_user u;
    bool found;
    if (svc_user_find(R->s, &c, rest_query_str(r, L_USERS_EMAIL), &u, &found, &e) != 0)
        return rest_fail(r, &e);
    return rest_send_list(r, enc_user_json, &u, sizeof u, found ? 1 : 0, false, NULL);
}

int users_me(rest *R, http_req *r, const svc_principal *who)
{
    svc_err e;
    svc_err_clear(&e);
    svc_call c = rest_call(r, who);
    svc_user u;
    if (svc_user_me(R->s, &c, &u, &e) != 0)
        return rest_fail(r, &e);
    return rest_send(r, 200, enc_user_json, &u, NULL, 0);
}

int users_patch(rest *R, http_req *r, const svc_principal *who)
{
    svc_err e;
    svc_err_clear(&e);
    int64_t id;
    if (!rest_path_id(r, "id", &id, &e))
        return rest_fail(r, &e);
    if (id != who->user_id) /* before reading a body that is not theirs to send */
        return rest_fail(r, &(svc_err){.kind = SVC_NOT_FOUND, .code = "not_found", .msg = "no such user"});
    json_t *j;
    bool reals;
    if (rest_body(r, &j, &reals, &e) != 0)
        return rest_fail(r, &e);
    svc_user_patch in = {rest_get_str(j, L_PATCH_NAME, &e), rest_get_str(j, L_PATCH_PASSWORD, &e)};
    svc_call c = rest_call(r, who);
    svc_user u;
    int rc = svc_user_patch_op(R->s, &c, id, &in, &u, &e);
    if (rc != 0)
        return rest_fail(r, &e);
    return rest_send(r, 200, enc_user_json, &u, NULL, 0);
}

int sessions_create(rest *R, http_req *r, const svc_principal *who)
{
    svc_err e;
    svc_err_clear(&e);
    json_t *j;
    bool reals;
    if (rest_body(r, &j, &reals, &e) != 0)
        return rest_fail(r, &e);
    svc_login_in in = {rest_get_str(j, L_LOGIN_EMAIL, &e), rest_get_str(j, L_LOGIN_PASSWORD, &e)};
    svc_call c = rest_call(r, who);
    svc_session s;
    int rc = svc_session_create(R->s, &c, &in, &s, &e);
    rest_call_headers(r, &c);
    if (rc != 0) {
        if (e.kind == SVC_RATE_LIMITED)
            rest_metrics_count_rate_limited();
        return rest_fail(r, &e);
    }
    bz_buf b = BZ_BUF_INIT;
    bz_buf_putc(&b, '{');
    jw_str(&b, "token", s.token);
    jw_time(&b, "expires_at", s.expires_us);
    bz_buf_putc(&b, '}');
    http_add_header(r, "Cache-Control", "no-store");
    rest_json(r, 201, &b, "/v1/sessions/current");
    bz_buf_free(&b);
    return 0;
}

int sessions_delete(rest *R, http_req *r, const svc_principal *who)
{
    svc_err e;
    svc_err_clear(&e);
    svc_call c = rest_call(r, who);
    if (svc_session_delete(R->s, &c, &e) != 0)
        return rest_fail(r, &e);
    return http_send(r, 204, NULL, NULL, 0);
}

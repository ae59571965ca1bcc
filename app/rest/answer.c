/* app/rest/answer.c — the one mapping from service errors to HTTP, and the
 * headers an operation's outcome adds.  problem+json itself is written by
 * http_send_problem_ext (http/response.c), the one writer for the server's
 * own errors and the adapter's alike. */
#include "app/rest/rest-private.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    int status;
    int retry_after_s;      /* default Retry-After (0: none) */
    const char *www_auth;   /* WWW-Authenticate value, or NULL */
    bool close;             /* the rest of the body was not read: close the connection after */
} http_map;

/* One row per kind (API.md §2 status codes). */
static const http_map kinds[SVC_KIND__COUNT] = {
    [SVC_OK] = {200, 0, NULL, false},
    [SVC_INVALID] = {400, 0, NULL, false},
    [SVC_UNAUTHENTICATED] = {401, 0, "Bearer", false},
    [SVC_NOT_FOUND] = {404, 0, NULL, false},
    [SVC_ALREADY_EXISTS] = {409, 0, NULL, false},
    [SVC_CONFLICT] = {409, 0, NULL, false},
    [SVC_UNPROCESSABLE] = {422, 0, NULL, false},
    [SVC_RATE_LIMITED] = {429, 1, NULL, false},
    [SVC_UNAVAILABLE] = {503, 1, NULL, false},
    [SVC_TIMEOUT] = {503, 1, NULL, false},
    [SVC_CANCELLED] = {503, 1, NULL, false},
    [SVC_INTERNAL] = {500, 0, NULL, false},
    [SVC_TOO_LARGE] = {413, 0, NULL, true},
    [SVC_UNSUPPORTED] = {415, 0, NULL, false},
    [SVC_UNREADABLE] = {400, 0, NULL, true},
};

int rest_fail(http_req *r, const svc_err *e)
{
    svc_kind k = e->kind > SVC_OK && e->kind < SVC_KIND__COUNT ? e->kind : SVC_INTERNAL;
    http_map m = kinds[k];
    int retry = e->retry_after_s > 0 ? e->retry_after_s : m.retry_after_s;
    if (retry > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", retry);
        http_add_header(r, "Retry-After", v);
    }
    if (m.www_auth)
        http_add_header(r, "WWW-Authenticate", m.www_auth);
    if (m.close)
        r->close_after = true;
    if (e->nviol == 0)
        return http_send_problem(r, m.status, e->code && *e->code ? e->code : svc_kind_name(k), e->msg);
    bz_buf *x = bz_arena_buf(r->arena);
    bz_buf_append_c(x, "\"errors\":[");
    for (int i = 0; i < e->nviol; i++) {
        if (i)
            bz_buf_putc(x, ',');
        bz_buf_putc(x, '{');
        jw_str(x, "field", e->viol[i].field);
        jw_str(x, "message", e->viol[i].msg);
        bz_buf_putc(x, '}');
    }
    bz_buf_putc(x, ']');
    return http_send_problem_ext(r, m.status, e->code, e->msg, x->data);
}

void rest_rate_headers(http_req *r, const svc_rate *rt)
{
    if (!rt->set)
        return;
    char v[24];
    v[bz_fmt_i64(v, rt->limit)] = '\0';
    http_add_header(r, "RateLimit-Limit", v);
    v[bz_fmt_i64(v, rt->remaining)] = '\0';
    http_add_header(r, "RateLimit-Remaining", v);
    v[bz_fmt_i64(v, rt->reset_s)] = '\0';
    http_add_header(r, "RateLimit-Reset", v);
}

void rest_call_headers(http_req *r, const svc_call *c)
{
    if (c->replayed)
        http_add_header(r, "Idempotent-Replayed", "true");
    rest_rate_headers(r, &c->rate);
}

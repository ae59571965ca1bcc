/* app/rest/decode.c — request bytes into the service's typed inputs. */
#include "app/rest/rest-private.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

svc_call rest_call(http_req *r, const svc_principal *who)
{
    svc_call c = SVC_CALL(r->ctx, r->arena, who);
    c.trace = &r->trace;
    /* Only writes start idempotent work (svc__idem_begin): a GET or HEAD
     * need not look for the key. */
    bool safe = bz_str_eq_c(r->method, "GET") || bz_str_eq_c(r->method, "HEAD");
    bz_str k = safe ? BZ_STR_NULL : http_header_get(r, "Idempotency-Key");
    if (k.p) {
        c.idem_key = k.p;
        c.idem_key_len = k.n;
    }
    return c;
}

static bool is_json_type(bz_str ct)
{
    ptrdiff_t sc = bz_str_index(ct, ';');
    bz_str media = bz_str_trim(sc >= 0 ? bz_str_make(ct.p, (size_t)sc) : ct);
    return bz_str_ieq_c(media, "application/json");
}

static void x__json_release(void *j) { json_decref(j); }

int rest_body(http_req *r, json_t **out, bool *reals, svc_err *e)
{
    *out = NULL;
    *reals = false;
    if (!is_json_type(http_header_get(r, "Content-Type")))
        return svc_fail(e, SVC_UNSUPPORTED, "unsupported_media_type", "the body must be application/json");
    const char *data;
    size_t len;
    int rc = http_read_body(r, &data, &len);
    if (rc == -EMSGSIZE)
        return svc_fail(e, SVC_TOO_LARGE, "body_too_large", "the request body is larger than the server accepts");
    if (rc < 0)
        return svc_fail(e, SVC_UNREADABLE, "bad_request", "the request body could not be read");
    char why[200];
    *out = json_parse_object(data, len, reals, why, sizeof why);
    if (!*out)
        return svc_fail(e, SVC_INVALID, "invalid_json", "%s", why);
    /* The tree is the request's: released with its arena, so the strings
     * rest_get_str hands out live as long as the request. */
    bz_arena_defer_fn(r->arena, x__json_release, *out);
    return 0;
}

svc_str rest_get_str(json_t *o, svc_limit_id id, svc_err *e)
{
    const char *field = svc_limits[id].field;
    json_t *x = json_object_get(o, field);
    if (!x || json_is_null(x))
        return (svc_str){NULL, 0, SVC_ABSENT};
    if (!json_is_string(x)) {
        svc_violate(e, field, "must be a string");
        return (svc_str){NULL, 0, SVC_BAD};
    }
    return SVC_STR_SET(json_string_value(x), json_string_length(x));
}

svc_int rest_get_int(json_t *o, svc_limit_id id, bool reals, const char *field, svc_err *e)
{
    const svc_limit *l = &svc_limits[id];
    const char *f = field ? field : l->field;
    json_t *x = json_object_get(o, l->field);
    if (!x || json_is_null(x))
        return (svc_int){0, SVC_ABSENT};
    if (json_is_integer(x))
        return SVC_INT_SET((int64_t)json_integer_value(x));
    /* Parsed with every number as a real because some integer was beyond
     * 64 bits: whole numbers are still integers, and one outside the
     * field's range is named as such. */
    if (reals && json_is_real(x)) {
        double d = json_real_value(x);
        if (d == floor(d)) {
            if (d >= -9.2e18 && d <= 9.2e18)
                return SVC_INT_SET((int64_t)d);
            char msg[96];
            snprintf(msg, sizeof msg, "must be between %lld and %lld", (long long)l->min, (long long)l->max);
            svc_violate(e, f, msg);
            return (svc_int){0, SVC_BAD};
        }
    }
    svc_violate(e, f, "must be an integer");
    return (svc_int){0, SVC_BAD};
}

svc_str rest_query_str(http_req *r, svc_limit_id id)
{
    const char *s = http_query_get(r, svc_limits[id].field);
    if (!s)
        return (svc_str){NULL, 0, SVC_ABSENT};
    return SVC_STR_SET(s, strlen(s));
}

svc_int rest_query_int(http_req *r, svc_limit_id id, svc_err *e)
{
    const svc_limit *l = &svc_limits[id];
    const char *s = http_query_get(r, l->field);
    if (!s)
        return (svc_int){0, SVC_ABSENT};
    int64_t v;
    if (!bz_str_to_i64(bz_str_c(s), &v)) {
        char msg[96];
        snprintf(msg, sizeof msg, "must be an integer between %lld and %lld", (long long)l->min, (long long)l->max);
        svc_violate(e, l->field, msg);
        return (svc_int){0, SVC_BAD};
    }
    return SVC_INT_SET(v);
}

svc_page_in rest_page(http_req *r, svc_err *e)
{
    svc_page_in p = {rest_query_int(r, L_PAGE_LIMIT, e), {NULL, 0, SVC_ABSENT}};
    const char *c = http_query_get(r, "cursor");
    if (c)
        p.cursor = SVC_STR_SET(c, strlen(c));
    return p;
}

bool rest_path_id(http_req *r, const char *name, int64_t *id, svc_err *e)
{
    /* An id without an escape (nearly all) is read where it lies: its
     * decoded form is itself, so no copy into the arena.  One with
     * escapes is decoded first, and must decode to as many bytes as its
     * escapes say: "1%00" is not id 1 (the C string would end at the NUL). */
    size_t want = 0;
    for (int i = 0; i < r->npv; i++)
        if (!strcmp(r->pv[i].name, name)) {
            bz_str raw = r->pv[i].raw;
            size_t pct = 0;
            for (size_t k = 0; k < raw.n; k++)
                pct += raw.p[k] == '%';
            if (raw.n && !pct) {
                if (bz_str_to_i64(raw, id) && *id > 0)
                    return true;
                svc_fail(e, SVC_NOT_FOUND, "not_found", "no such resource");
                return false;
            }
            want = raw.n >= 2 * pct ? raw.n - 2 * pct : 0;
            break;
        }
    const char *s = http_path_value(r, name);
    if (s && strlen(s) == want && bz_str_to_i64(bz_str_c(s), id) && *id > 0)
        return true;
    /* a non-numeric id names no resource */
    svc_fail(e, SVC_NOT_FOUND, "not_found", "no such resource");
    return false;
}

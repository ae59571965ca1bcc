/* app/rest/encode.c — model values as the JSON of API.md. */
#include "app/rest/rest-private.h"

#include <string.h>

/* The models with a field list (svc.h): one member per field, in order. */
#define X__JSON_ID(n) jw_i64(b, #n, v->n);
#define X__JSON_INT(n) jw_i64(b, #n, v->n);
#define X__JSON_STR(n) jw_str(b, #n, v->n);
#define X__JSON_OPT(n)                                                                                                \
    if (v->n)                                                                                                         \
        jw_str(b, #n, v->n);
#define X__JSON_CUR(n) jw_str(b, #n, v->n);
#define X__JSON_TIME(n) jw_time(b, #n "_at", v->n##_us);
#define X__JSON_STATUS(n) jw_str(b, #n, v->n);
#define X__JSON_WHEN(n) jw_time(b, #n, v->n##_us);
#define X__JSON_RANK(n) jw_i64(b, #n, v->n);
#define X__JSON_NULLSTR(n)                                                                                            \
    if (v->n)                                                                                                         \
        jw_str(b, #n, v->n);                                                                                          \
    else                                                                                                              \
        jw_null(b, #n);
#define X__JSON_LINES(x) x__lines_json(b, #x, v->x, v->n##x);
#define X__JSON(kind, n) X__JSON_##kind(n)

static void x__lines_json(bz_buf *b, const char *key, const svc_line *l, int n)
{
    jw_key(b, key);
    bz_buf_putc(b, '[');
    for (int i = 0; i < n; i++) {
        jw_sep(b);
        bz_buf_putc(b, '{');
        jw_i64(b, "item_id", l[i].item_id);
        jw_i64(b, "quantity", l[i].quantity);
        jw_i64(b, "unit_price_cents", l[i].unit_price_cents);
        bz_buf_putc(b, '}');
    }
    bz_buf_putc(b, ']');
}
#define X__JSON_ENCODER(fn, T, FIELDS)                                                                               \
    void fn(bz_buf *b, const void *p)                                                                                 \
    {                                                                                                                 \
        const T *v = p;                                                                                               \
        bz_buf_putc(b, '{');                                                                                          \
        FIELDS(X__JSON)                                                                                               \
        bz_buf_putc(b, '}');                                                                                          \
    }
X__JSON_ENCODER(rest_json_user, svc_user, SVC_USER_FIELDS)
X__JSON_ENCODER(rest_json_account, svc_account, SVC_ACCOUNT_FIELDS)
X__JSON_ENCODER(rest_json_transfer, svc_transfer, SVC_TRANSFER_FIELDS)
X__JSON_ENCODER(rest_json_item, svc_item, SVC_ITEM_FIELDS)
X__JSON_ENCODER(rest_json_order, svc_order, SVC_ORDER_FIELDS)
X__JSON_ENCODER(rest_json_session, svc_session, SVC_SESSION_FIELDS)
X__JSON_ENCODER(rest_json_event, svc_order_event, SVC_EVENT_FIELDS)
X__JSON_ENCODER(rest_json_spender, svc_spender, SVC_SPENDER_FIELDS)


int rest_send(http_req *r, int status, rest_enc enc, const void *v, const char *loc_prefix, int64_t id)
{
    if (loc_prefix) {
        char loc[80];
        size_t n = strlen(loc_prefix);
        memcpy(loc, loc_prefix, n);
        loc[n + bz_fmt_i64(loc + n, id)] = '\0';
        http_add_header(r, "Location", loc);
    }
    return rest_send_with(r, status, "application/json; charset=utf-8", enc, v);
}

int rest_send_with(http_req *r, int status, const char *content_type, void (*fn)(bz_buf *b, const void *arg),
                   const void *arg)
{
    http_set_status(r, status);
    http_add_header(r, "Content-Type", content_type);
    /* straight into the response body: no intermediate buffer to free */
    http_write_with(r, fn, arg);
    return 0;
}

typedef struct {
    rest_enc enc;
    const void *data;
    size_t size;
    int n;
    bool paged;
    const char *next;
} x__list;

static void x__list_json(bz_buf *b, const void *p)
{
    const x__list *l = p;
    bz_buf_append_c(b, "{\"data\":[");
    for (int i = 0; i < l->n; i++) {
        jw_sep(b);
        l->enc(b, (const char *)l->data + (size_t)i * l->size);
    }
    bz_buf_putc(b, ']');
    if (l->paged && l->next)
        jw_str(b, "next_cursor", l->next);
    else if (l->paged)
        jw_null(b, "next_cursor");
    bz_buf_putc(b, '}');
}

int rest_send_list(http_req *r, rest_enc enc, const void *data, size_t size, int n, bool paged, const char *next)
{
    x__list l = {enc, data, size, n, paged, next};
    return rest_send(r, 200, x__list_json, &l, NULL, 0);
}

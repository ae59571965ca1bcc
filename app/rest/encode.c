/* app/rest/encode.c — model values as the JSON of API.md. */
#include "app/rest/rest-private.h"

#include <pthread.h>
#include <string.h>

void enc_user_json(bz_buf *b, const void *p)
{
    const svc_user *u = p;
    bz_buf_putc(b, '{');
    jw_i64(b, "id", u->id);
    if (u->email)
        jw_str(b, "email", u->email);
    jw_str(b, "name", u->name);
    jw_time(b, "created_at", u->created_us);
    bz_buf_putc(b, '}');
}

void enc_account_json(bz_buf *b, const void *p)
{
    const svc_account *v = p;
    bz_buf_putc(b, '{');
    jw_i64(b, "id", v->id);
    jw_i64(b, "user_id", v->user_id);
    jw_str(b, "currency", v->currency);
    jw_i64(b, "balance_cents", v->balance_cents);
    jw_time(b, "created_at", v->created_us);
    bz_buf_putc(b, '}');
}

void enc_transfer_json(bz_buf *b, const void *p)
{
    const svc_transfer *v = p;
    bz_buf_putc(b, '{');
    jw_i64(b, "id", v->id);
    jw_i64(b, "from_account_id", v->from_account_id);
    jw_i64(b, "to_account_id", v->to_account_id);
    jw_i64(b, "amount_cents", v->amount_cents);
    jw_str(b, "currency", v->currency);
    jw_time(b, "created_at", v->created_us);
    bz_buf_putc(b, '}');
}

void enc_item_json(bz_buf *b, const void *p)
{
    const svc_item *v = p;
    bz_buf_putc(b, '{');
    jw_i64(b, "id", v->id);
    jw_i64(b, "seller_id", v->seller_id);
    jw_str(b, "sku", v->sku);
    jw_str(b, "name", v->name);
    jw_i64(b, "price_cents", v->price_cents);
    jw_str(b, "currency", v->currency);
    jw_i64(b, "stock", v->stock);
    jw_i64(b, "version", v->version);
    jw_time(b, "created_at", v->created_us);
    jw_time(b, "updated_at", v->updated_us);
    bz_buf_putc(b, '}');
}

void enc_order_json(bz_buf *b, const void *p)
{
    const svc_order *v = p;
    bz_buf_putc(b, '{');
    jw_i64(b, "id", v->id);
    jw_i64(b, "customer_id", v->customer_id);
    jw_i64(b, "account_id", v->account_id);
    jw_str(b, "status", v->status);
    jw_i64(b, "total_cents", v->total_cents);
    jw_str(b, "currency", v->currency);
    jw_key(b, "lines");
    bz_buf_putc(b, '[');
    for (int i = 0; i < v->nlines; i++) {
        jw_sep(b);
        bz_buf_putc(b, '{');
        jw_i64(b, "item_id", v->lines[i].item_id);
        jw_i64(b, "quantity", v->lines[i].quantity);
        jw_i64(b, "unit_price_cents", v->lines[i].unit_price_cents);
        bz_buf_putc(b, '}');
    }
    bz_buf_putc(b, ']');
    jw_time(b, "created_at", v->created_us);
    jw_time(b, "updated_at", v->updated_us);
    bz_buf_putc(b, '}');
}

void enc_event_json(bz_buf *b, const void *p)
{
    const svc_order_event *v = p;
    bz_buf_putc(b, '{');
    jw_i64(b, "order_id", v->order_id);
    jw_str(b, "status", v->status);
    jw_time(b, "at", v->at_us);
    bz_buf_putc(b, '}');
}

void enc_spender_json(bz_buf *b, const void *p)
{
    const svc_spender *v = p;
    bz_buf_putc(b, '{');
    jw_i64(b, "rank", v->rank);
    jw_i64(b, "user_id", v->user_id);
    if (v->name)
        jw_str(b, "name", v->name);
    else
        jw_null(b, "name");
    jw_i64(b, "spent_cents", v->spent_cents);
    bz_buf_putc(b, '}');
}

/* The scratch buffer is freed when its thread ends (a loop thread at
 * shutdown), or LeakSanitizer reports it. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static void scratch_free(void *p) { bz_buf_free(p); }
static void scratch_key_make(void) { pthread_key_create(&scratch_key, scratch_free); }

int rest_send(http_req *r, int status, rest_enc enc, const void *v, const char *loc_prefix, int64_t id)
{
    /* A per-thread scratch buffer: nothing parks between encoding and the
     * copy into the response, so no other coroutine can use it meanwhile. */
    static _Thread_local bz_buf b;
    if (!b.data) {
        pthread_once(&scratch_once, scratch_key_make);
        pthread_setspecific(scratch_key, &b);
    }
    bz_buf_clear(&b);
    enc(&b, v);
    char loc[80];
    if (loc_prefix) {
        size_t n = strlen(loc_prefix);
        memcpy(loc, loc_prefix, n);
        loc[n + bz_fmt_i64(loc + n, id)] = '\0';
    }
    rest_json(r, status, &b, loc_prefix ? loc : NULL);
    if (b.cap > 65536) /* do not keep a rare huge body around */
        bz_buf_free(&b);
    return 0;
}

int rest_send_list(http_req *r, rest_enc enc, const void *data, size_t size, int n, bool paged, const char *next)
{
    bz_buf b = BZ_BUF_INIT;
    bz_buf_append_c(&b, "{\"data\":[");
    for (int i = 0; i < n; i++) {
        jw_sep(&b);
        enc(&b, (const char *)data + (size_t)i * size);
    }
    bz_buf_putc(&b, ']');
    if (paged && next)
        jw_str(&b, "next_cursor", next);
    else if (paged)
        jw_null(&b, "next_cursor");
    bz_buf_putc(&b, '}');
    rest_json(r, 200, &b, NULL);
    bz_buf_free(&b);
    return 0;
}

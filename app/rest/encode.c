/* app/rest/encode.c — model values as the JSON of API.md. */
#include "app/rest/rest-private.h"

void enc_user_json(bz_buf *b, const svc_user *u)
{
    bz_buf_putc(b, '{');
    jw_i64(b, "id", u->id);
    if (u->email)
        jw_str(b, "email", u->email);
    jw_str(b, "name", u->name);
    jw_time(b, "created_at", u->created_us);
    bz_buf_putc(b, '}');
}

void enc_account_json(bz_buf *b, const svc_account *v)
{
    bz_buf_putc(b, '{');
    jw_i64(b, "id", v->id);
    jw_i64(b, "user_id", v->user_id);
    jw_str(b, "currency", v->currency);
    jw_i64(b, "balance_cents", v->balance_cents);
    jw_time(b, "created_at", v->created_us);
    bz_buf_putc(b, '}');
}

void enc_transfer_json(bz_buf *b, const svc_transfer *v)
{
    bz_buf_putc(b, '{');
    jw_i64(b, "id", v->id);
    jw_i64(b, "from_account_id", v->from_account_id);
    jw_i64(b, "to_account_id", v->to_account_id);
    jw_i64(b, "amount_cents", v->amount_cents);
    jw_str(b, "currency", v->currency);
    jw_time(b, "created_at", v->created_us);
    bz_buf_putc(b, '}');
}

void enc_item_json(bz_buf *b, const svc_item *v)
{
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

void enc_order_json(bz_buf *b, const svc_order *v)
{
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

void enc_event_json(bz_buf *b, const svc_order_event *v)
{
    bz_buf_putc(b, '{');
    jw_i64(b, "order_id", v->order_id);
    jw_str(b, "status", v->status);
    jw_time(b, "at", v->at_us);
    bz_buf_putc(b, '}');
}

void enc_page_end(bz_buf *b, const char *next_cursor)
{
    bz_buf_putc(b, ']');
    if (next_cursor)
        jw_str(b, "next_cursor", next_cursor);
    else
        jw_null(b, "next_cursor");
    bz_buf_putc(b, '}');
}

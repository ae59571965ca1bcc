/* app/svc/codec.c — the record codec and row readers (svc-private.h). */
#include "app/svc/svc-private.h"

#include <string.h>

/* ---- writing ---- */

void svc__enc_int(bz_buf *b, int64_t v)
{
    bz_buf_append_i64(b, v);
    bz_buf_putc(b, '|');
}

void svc__enc_str(bz_buf *b, const char *s, size_t n)
{
    bz_buf_append_i64(b, (int64_t)n);
    bz_buf_putc(b, ':');
    bz_buf_append(b, s, n);
}

static void enc_cstr(bz_buf *b, const char *s) { svc__enc_str(b, s ? s : "", s ? strlen(s) : 0); }

/* ---- reading: every reader checks bounds; a malformed record sets bad ---- */

static int64_t dec_num(svc_rd *r, char term)
{
    /* the cursor in locals: r->p written back once, not per digit (a
     * char store may alias it, so the compiler could not keep it) */
    const char *p = r->p, *end = r->end;
    bool neg = p < end && *p == '-';
    p += neg;
    int64_t v = 0;
    int nd = 0;
    unsigned d;
    while (p < end && (d = (unsigned)(unsigned char)*p - '0') <= 9) {
        /* below 18 digits v cannot pass the bound */
        if (nd >= 18 && v > (INT64_MAX - 9) / 10) {
            r->bad = true;
            return 0;
        }
        v = v * 10 + (int64_t)d;
        nd++;
        p++;
    }
    if (!nd || p >= end || *p != term) {
        r->bad = true;
        return 0;
    }
    r->p = p + 1;
    return neg ? -v : v;
}

int64_t svc__dec_int(svc_rd *r) { return r->bad ? 0 : dec_num(r, '|'); }

const char *svc__dec_str(svc_rd *r, bz_arena *a, size_t *n)
{
    if (n)
        *n = 0;
    if (r->bad)
        return "";
    int64_t len = dec_num(r, ':');
    if (r->bad || len < 0 || len > r->end - r->p) {
        r->bad = true;
        return "";
    }
    const char *s = bz_arena_strndup(a, r->p, (size_t)len);
    r->p += len;
    if (n)
        *n = (size_t)len;
    return s;
}

void svc__dec_cur(svc_rd *r, char out[4])
{
    out[0] = '\0';
    if (r->bad)
        return;
    int64_t len = dec_num(r, ':');
    if (r->bad || len != 3 || r->end - r->p < 3) {
        r->bad = true;
        return;
    }
    memcpy(out, r->p, 3);
    out[3] = '\0';
    r->p += 3;
}

const char *svc__status_static(const char *s, size_t n)
{
    static const char *const all[] = {"pending", "paid", "shipped", "cancelled"};
    /* by length, then one compare: every order row and record has one */
    int i = n == 4 ? 1 : n == 9 ? 3 : n == 7 ? (s[0] == 'p' ? 0 : 2) : -1;
    return i >= 0 && !memcmp(all[i], s, n) ? all[i] : NULL;
}

static const char *dec_status(svc_rd *r)
{
    if (r->bad)
        return NULL;
    int64_t len = dec_num(r, ':');
    if (r->bad || len < 0 || len > r->end - r->p) {
        r->bad = true;
        return NULL;
    }
    const char *st = svc__status_static(r->p, (size_t)len);
    r->p += len;
    if (!st)
        r->bad = true;
    return st;
}

/* ---- model values ---- */

/* The record of a model with a field list (svc.h): its fields in order. */
#define X__ENC_ID(n) svc__enc_int(b, v->n);
#define X__ENC_INT(n) svc__enc_int(b, v->n);
#define X__ENC_STR(n) enc_cstr(b, v->n);
#define X__ENC_CUR(n) enc_cstr(b, v->n);
#define X__ENC_TIME(n) svc__enc_int(b, v->n##_us);
#define X__ENC_STATUS(n) enc_cstr(b, v->n);
#define X__ENC_WHEN(n) svc__enc_int(b, v->n##_us);
#define X__ENC_LINES(n) /* after the fields */
#define X__ENC(kind, n) X__ENC_##kind(n)
#define X__DEC_ID(n) v->n = svc__dec_int(r);
#define X__DEC_INT(n) v->n = svc__dec_int(r);
#define X__DEC_STR(n) v->n = svc__dec_str(r, a, NULL);
#define X__DEC_CUR(n) svc__dec_cur(r, v->n);
#define X__DEC_TIME(n) v->n##_us = svc__dec_int(r);
#define X__DEC_STATUS(n) v->n = dec_status(r);
#define X__DEC_WHEN(n) v->n##_us = svc__dec_int(r);
#define X__DEC_LINES(n) /* after the fields */
#define X__DEC(kind, n) X__DEC_##kind(n)

void svc__enc_account(bz_buf *b, const svc_account *v) { SVC_ACCOUNT_FIELDS(X__ENC) }
bool svc__dec_account(svc_rd *r, svc_account *v)
{
    SVC_ACCOUNT_FIELDS(X__DEC)
    return !r->bad;
}

void svc__enc_transfer(bz_buf *b, const svc_transfer *v) { SVC_TRANSFER_FIELDS(X__ENC) }
bool svc__dec_transfer(svc_rd *r, svc_transfer *v)
{
    SVC_TRANSFER_FIELDS(X__DEC)
    return !r->bad;
}

/* The layout SVC_TRANSFER_FIELDS gives (id, from, to, amount, currency,
 * created); test_svc::transfer_record_parts_are_the_record holds the two
 * to each other. */
void svc__enc_transfer_parts(bz_buf *mid, bz_buf *tail, const svc_transfer *v)
{
    bz_buf_putc(mid, '|'); /* the id's terminator */
    svc__enc_int(mid, v->from_account_id);
    svc__enc_int(mid, v->to_account_id);
    svc__enc_int(mid, v->amount_cents);
    bz_buf_append(mid, "3:", 2); /* a currency is 3 letters (SVC_FMT_CURRENCY) */
    svc__enc_int(tail, v->created_us);
}

void svc__enc_item(bz_buf *b, const svc_item *v) { SVC_ITEM_FIELDS(X__ENC) }
bool svc__dec_item(svc_rd *r, bz_arena *a, svc_item *v)
{
    SVC_ITEM_FIELDS(X__DEC)
    return !r->bad;
}

/* The order's fields, then its lines (the record format stored records
 * hold: lines last). */
void svc__enc_order(bz_buf *b, const svc_order *v)
{
    SVC_ORDER_FIELDS(X__ENC)
    svc__enc_int(b, v->nlines);
    for (int i = 0; i < v->nlines; i++) {
        svc__enc_int(b, v->lines[i].item_id);
        svc__enc_int(b, v->lines[i].quantity);
        svc__enc_int(b, v->lines[i].unit_price_cents);
    }
}

bool svc__dec_order(svc_rd *r, bz_arena *a, svc_order *v)
{
    SVC_ORDER_FIELDS(X__DEC)
    int64_t n = svc__dec_int(r);
    if (r->bad || n < 0 || n > SVC_MAX_LINES)
        return r->bad = true, false;
    v->nlines = (int)n;
    v->lines = bz_arena_calloc(a, (size_t)(n ? n : 1), sizeof *v->lines);
    for (int i = 0; i < v->nlines; i++) {
        v->lines[i].item_id = svc__dec_int(r);
        v->lines[i].quantity = svc__dec_int(r);
        v->lines[i].unit_price_cents = svc__dec_int(r);
    }
    return !r->bad;
}

void svc__enc_event(bz_buf *b, const svc_order_event *v) { SVC_EVENT_FIELDS(X__ENC) }
bool svc__dec_event(svc_rd *r, svc_order_event *v)
{
    SVC_EVENT_FIELDS(X__DEC)
    return !r->bad;
}

/* ---- rows ---- */

static void col_cur(db_rows *r, int col, char out[4])
{
    size_t n;
    const char *s = db_col_text(r, col, &n);
    n = n > 3 ? 3 : n;
    memcpy(out, s, n);
    out[n] = '\0';
}

static const char *col_str(db_rows *r, int col, bz_arena *a)
{
    size_t n;
    const char *s = db_col_text(r, col, &n);
    return bz_arena_strndup(a, s, n);
}

static const char *x__row_status(db_rows *r, int col)
{
    size_t n;
    const char *t = db_col_text(r, col, &n);
    const char *st = svc__status_static(t, n);
    return st ? st : "pending"; /* the CHECK constraint makes this unreachable */
}

/* A row of the model's columns (ITEM_COLS, ...) into its record. */
#define X__ROW_ID(n) v->n = db_col_int(r, col++);
#define X__ROW_INT(n) v->n = db_col_int(r, col++);
#define X__ROW_STR(n) v->n = col_str(r, col++, a);
#define X__ROW_OPT(n) v->n = shown ? col_str(r, col, a) : NULL, col++;
#define X__ROW_CUR(n) col_cur(r, col++, v->n);
#define X__ROW_TIME(n) v->n##_us = db_col_time(r, col++);
#define X__ROW_STATUS(n) v->n = x__row_status(r, col++);
#define X__ROW_LINES(n) /* the packed column after the fields */
#define X__ROW(kind, n) X__ROW_##kind(n)

void svc__row_user(db_rows *r, bz_arena *a, svc_user *v, bool shown)
{
    int col = 0;
    SVC_USER_FIELDS(X__ROW)
}

void svc__row_account(db_rows *r, svc_account *v)
{
    int col = 0;
    SVC_ACCOUNT_FIELDS(X__ROW)
}

void svc__row_transfer(db_rows *r, svc_transfer *v)
{
    int col = 0;
    SVC_TRANSFER_FIELDS(X__ROW)
}

void svc__row_item(db_rows *r, bz_arena *a, svc_item *v)
{
    int col = 0;
    SVC_ITEM_FIELDS(X__ROW)
}

/* The same row straight into the record, without the model (a cache
 * miss needs no arena): the same field list, so the two cannot drift. */
#define X__ROWENC_ID(n) svc__enc_int(b, db_col_int(r, col++));
#define X__ROWENC_INT(n) svc__enc_int(b, db_col_int(r, col++));
#define X__ROWENC_STR(n) x__rowenc_text(b, r, col++);
#define X__ROWENC_CUR(n) x__rowenc_text(b, r, col++);
#define X__ROWENC_TIME(n) svc__enc_int(b, db_col_time(r, col++));
#define X__ROWENC(kind, n) X__ROWENC_##kind(n)

static void x__rowenc_text(bz_buf *b, db_rows *r, int col)
{
    size_t n;
    const char *t = db_col_text(r, col, &n);
    svc__enc_str(b, t, n);
}

void svc__enc_item_row(bz_buf *b, db_rows *r)
{
    int col = 0;
    SVC_ITEM_FIELDS(X__ROWENC)
}

void svc__row_order(db_rows *r, bz_arena *a, svc_order *v)
{
    size_t n;
    int col = 0;
    SVC_ORDER_FIELDS(X__ROW)
    /* packed lines "item:qty:price,..." */
    const char *p = db_col_is_null(r, col) ? "" : db_col_text(r, col, &n);
    if (db_col_is_null(r, col))
        n = 0;
    int cnt = n ? 1 : 0;
    for (size_t i = 0; i < n; i++)
        cnt += p[i] == ',';
    if (cnt > SVC_MAX_LINES)
        cnt = SVC_MAX_LINES;
    v->lines = bz_arena_calloc(a, (size_t)(cnt ? cnt : 1), sizeof *v->lines);
    v->nlines = 0;
    size_t i = 0;
    while (i < n && v->nlines < cnt) {
        int64_t x[3] = {0, 0, 0};
        for (int k = 0; k < 3; k++) {
            size_t j = i;
            while (j < n && p[j] != ':' && p[j] != ',')
                j++;
            bz_str_to_i64(bz_str_make(p + i, j - i), &x[k]);
            i = j + 1;
        }
        v->lines[v->nlines++] = (svc_line){x[0], x[1], x[2]};
    }
}

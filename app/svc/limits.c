/* app/svc/limits.c — the field-limit table and the checks that read it. */
#include "app/svc/limits.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define STR(schema, field, req, min, max, chars, fmt) {schema, field, SVC_F_STRING, req, min, max, chars, fmt}
#define INT(schema, field, req, min, max) {schema, field, SVC_F_INTEGER, req, min, max, false, SVC_FMT_NONE}

/* Shared bounds (a PATCH row repeats its PUT row's bounds). */
#define NAME_MAX_CHARS 100
#define PW_MIN 8
#define PW_MAX 128
#define SKU_MAX 64
#define ITEM_NAME_MAX 200
#define PRICE_MAX 100000000000LL
#define STOCK_MAX 1000000000LL
#define AMOUNT_MAX 1000000000LL

const svc_limit svc_limits[L__COUNT] = {
    [L_USER_EMAIL] = STR("NewUser", "email", true, 3, 254, false, SVC_FMT_EMAIL),
    [L_USER_NAME] = STR("NewUser", "name", true, 1, NAME_MAX_CHARS, true, SVC_FMT_NONE),
    [L_USER_PASSWORD] = STR("NewUser", "password", true, PW_MIN, PW_MAX, false, SVC_FMT_NONE),
    [L_PATCH_NAME] = STR("UserPatch", "name", false, 1, NAME_MAX_CHARS, true, SVC_FMT_NONE),
    [L_PATCH_PASSWORD] = STR("UserPatch", "password", false, PW_MIN, PW_MAX, false, SVC_FMT_NONE),
    /* Login takes anything up to 1 KiB: a malformed email is simply not
     * found (same answer as a wrong password). */
    [L_LOGIN_EMAIL] = STR("Login", "email", true, 0, 1024, false, SVC_FMT_NONE),
    [L_LOGIN_PASSWORD] = STR("Login", "password", true, 0, 1024, false, SVC_FMT_NONE),
    [L_ACCOUNT_CURRENCY] = STR("NewAccount", "currency", true, 3, 3, false, SVC_FMT_CURRENCY),
    [L_DEPOSIT_AMOUNT] = INT("Deposit", "amount_cents", true, 1, AMOUNT_MAX),
    [L_TRANSFER_FROM] = INT("NewTransfer", "from_account_id", true, 1, INT64_MAX),
    [L_TRANSFER_TO] = INT("NewTransfer", "to_account_id", true, 1, INT64_MAX),
    [L_TRANSFER_AMOUNT] = INT("NewTransfer", "amount_cents", true, 1, INT64_MAX / 4),
    [L_ITEM_SKU] = STR("NewItem", "sku", true, 1, SKU_MAX, true, SVC_FMT_NONE),
    [L_ITEM_NAME] = STR("NewItem", "name", true, 1, ITEM_NAME_MAX, true, SVC_FMT_NONE),
    [L_ITEM_PRICE] = INT("NewItem", "price_cents", true, 0, PRICE_MAX),
    [L_ITEM_CURRENCY] = STR("NewItem", "currency", true, 3, 3, false, SVC_FMT_CURRENCY),
    [L_ITEM_STOCK] = INT("NewItem", "stock", true, 0, STOCK_MAX),
    [L_IPATCH_SKU] = STR("ItemPatch", "sku", false, 1, SKU_MAX, true, SVC_FMT_NONE),
    [L_IPATCH_NAME] = STR("ItemPatch", "name", false, 1, ITEM_NAME_MAX, true, SVC_FMT_NONE),
    [L_IPATCH_PRICE] = INT("ItemPatch", "price_cents", false, 0, PRICE_MAX),
    [L_IPATCH_CURRENCY] = STR("ItemPatch", "currency", false, 3, 3, false, SVC_FMT_CURRENCY),
    [L_IPATCH_STOCK] = INT("ItemPatch", "stock", false, 0, STOCK_MAX),
    [L_ORDER_ACCOUNT] = INT("NewOrder", "account_id", true, 1, INT64_MAX),
    [L_ORDER_LINES] = {"NewOrder", "lines", SVC_F_ARRAY, true, 1, SVC_MAX_LINES, false, SVC_FMT_NONE},
    [L_LINE_ITEM] = INT("OrderLineIn", "item_id", true, 1, INT64_MAX),
    [L_LINE_QUANTITY] = INT("OrderLineIn", "quantity", true, 1, 1000),
    [L_PAGE_LIMIT] = INT("query", "limit", false, 1, 100),
    [L_ITEMS_SELLER] = INT("query", "seller_id", false, 1, INT64_MAX),
    /* Offset mode makes the database walk and drop rows: capped, the
     * cursor is the way further (API.md §10). */
    [L_ITEMS_OFFSET] = INT("query", "offset", false, 0, 10000),
    [L_ORDERS_STATUS] = STR("query", "status", false, 4, 9, false, SVC_FMT_STATUS),
    [L_LB_CURRENCY] = STR("query", "currency", false, 3, 3, false, SVC_FMT_CURRENCY),
    [L_LB_LIMIT] = INT("query", "limit", false, 1, 100),
    [L_USERS_EMAIL] = STR("query", "email", true, 0, 1024, false, SVC_FMT_NONE),
};

bool svc_currency_ok(const char *s, size_t n)
{
    return n == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' && s[2] >= 'A' && s[2] <= 'Z';
}

static bool eq(const char *s, size_t n, const char *lit) { return n == strlen(lit) && !memcmp(s, lit, n); }

bool svc_status_ok(const char *s, size_t n)
{
    return eq(s, n, "pending") || eq(s, n, "paid") || eq(s, n, "shipped") || eq(s, n, "cancelled");
}

bool svc_email_norm(const char *s, size_t n, char *out)
{
    if (n < 3 || n > 254)
        return false;
    const char *at = memchr(s, '@', n);
    if (!at || at == s || at == s + n - 1 || memchr(at + 1, '@', (size_t)(s + n - at - 1)))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f)
            return false;
        out[i] = (char)tolower(c);
    }
    out[n] = '\0';
    return true;
}

static size_t utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            c++;
    return c;
}

/* A field that is not set: reported when required and absent (a bad one
 * was reported by its decoder).  True when the field is set. */
static bool present(svc_err *e, uint8_t st, const char *f, bool required)
{
    if (st == SVC_ABSENT && required)
        svc_violate(e, f, "is required");
    /* A decoder that marked a field bad reported why; if it did not, the
     * refusal must still happen. */
    if (st == SVC_BAD && e->kind != SVC_INVALID)
        svc_violate(e, f, "is invalid");
    return st == SVC_SET;
}

static bool check_str(svc_err *e, const svc_limit *l, const svc_str *v, const char *field, bool required)
{
    const char *f = field ? field : l->field;
    if (!present(e, v->st, f, required))
        return false;
    char msg[96];
    size_t k = l->chars ? utf8_chars(v->p, v->n) : v->n;
    switch (l->format) {
    case SVC_FMT_EMAIL: {
        char norm[256];
        if (v->n > 254 || !svc_email_norm(v->p, v->n, norm)) {
            svc_violate(e, f, "must be an address with one @, a local part and a domain, at most 254 bytes");
            return false;
        }
        return true;
    }
    case SVC_FMT_CURRENCY:
        if (!svc_currency_ok(v->p, v->n)) {
            svc_violate(e, f, "must be a 3-letter uppercase ISO 4217 code");
            return false;
        }
        return true;
    case SVC_FMT_STATUS:
        if (!svc_status_ok(v->p, v->n)) {
            svc_violate(e, f, "must be pending, paid, shipped or cancelled");
            return false;
        }
        return true;
    case SVC_FMT_NONE: break;
    }
    if ((int64_t)k < l->min || (int64_t)k > l->max) {
        snprintf(msg, sizeof msg, "must be %lld to %lld %s long", (long long)l->min, (long long)l->max,
                 l->chars ? "characters" : "bytes");
        svc_violate(e, f, msg);
        return false;
    }
    return true;
}

static bool check_int(svc_err *e, const svc_limit *l, const svc_int *v, const char *field, bool required)
{
    const char *f = field ? field : l->field;
    if (!present(e, v->st, f, required))
        return false;
    if (v->v < l->min || v->v > l->max) {
        char msg[96];
        snprintf(msg, sizeof msg, "must be between %lld and %lld", (long long)l->min, (long long)l->max);
        svc_violate(e, f, msg);
        return false;
    }
    return true;
}

bool svc_check_str(svc_err *e, svc_limit_id id, const svc_str *v, const char *field)
{
    return check_str(e, &svc_limits[id], v, field, svc_limits[id].required);
}

bool svc_check_int(svc_err *e, svc_limit_id id, const svc_int *v, const char *field)
{
    return check_int(e, &svc_limits[id], v, field, svc_limits[id].required);
}

bool svc_check_str_opt(svc_err *e, svc_limit_id id, const svc_str *v, bool required)
{
    return check_str(e, &svc_limits[id], v, NULL, required);
}

bool svc_check_int_opt(svc_err *e, svc_limit_id id, const svc_int *v, bool required)
{
    return check_int(e, &svc_limits[id], v, NULL, required);
}

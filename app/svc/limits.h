/*
 * app/svc/limits.h — the one table of field limits.
 *
 * Each row is one input field of one schema: its type, whether it is
 * required, its bounds and its format.  The same rows drive validation
 * (svc_check_*), the request schemas of /openapi.json (app/rest/ops.c)
 * and the fuzz target (tests/fuzz/fuzz_app.c), so a limit changes in one
 * place.
 */
#ifndef APP_SVC_LIMITS_H
#define APP_SVC_LIMITS_H

#include "app/svc/svc.h"

typedef enum svc_ftype { SVC_F_STRING, SVC_F_INTEGER, SVC_F_ARRAY } svc_ftype;

typedef enum svc_format {
    SVC_FMT_NONE,
    SVC_FMT_EMAIL,    /* one @, non-empty local part and domain, no spaces */
    SVC_FMT_CURRENCY, /* three upper-case letters (ISO 4217 shape) */
    SVC_FMT_STATUS,   /* an order status */
} svc_format;

typedef struct svc_limit {
    const char *schema;   /* request schema ("NewUser"), or "query" for query parameters */
    const char *field;    /* member or parameter name */
    svc_ftype type;
    bool required;
    int64_t min, max;     /* string: length; integer: value; array: number of items */
    bool chars;           /* string length counts characters (code points), else bytes */
    svc_format format;
} svc_limit;

typedef enum svc_limit_id {
    L_USER_EMAIL, L_USER_NAME, L_USER_PASSWORD,
    L_PATCH_NAME, L_PATCH_PASSWORD,
    L_LOGIN_EMAIL, L_LOGIN_PASSWORD,
    L_ACCOUNT_CURRENCY,
    L_DEPOSIT_AMOUNT,
    L_TRANSFER_FROM, L_TRANSFER_TO, L_TRANSFER_AMOUNT,
    L_ITEM_SKU, L_ITEM_NAME, L_ITEM_PRICE, L_ITEM_CURRENCY, L_ITEM_STOCK,
    L_IPATCH_SKU, L_IPATCH_NAME, L_IPATCH_PRICE, L_IPATCH_CURRENCY, L_IPATCH_STOCK,
    L_ORDER_ACCOUNT, L_ORDER_LINES, L_LINE_ITEM, L_LINE_QUANTITY,
    L_PAGE_LIMIT, L_ITEMS_SELLER, L_ITEMS_OFFSET, L_ORDERS_STATUS,
    L_LB_CURRENCY, L_LB_LIMIT,
    L_USERS_EMAIL,
    L__COUNT
} svc_limit_id;

extern const svc_limit svc_limits[L__COUNT];

/* Validates one field against row id and appends violations to e (under
 * the row's field name, or `field` when not NULL — array members).  An
 * absent field is a violation only when required; a SVC_BAD one was
 * reported by the decoder already.  True when the field is set and valid. */
bool svc_check_str(svc_err *e, svc_limit_id id, const svc_str *v, const char *field);
bool svc_check_int(svc_err *e, svc_limit_id id, const svc_int *v, const char *field);
/* The required-ness of a row can be relaxed (PATCH reuses PUT's rows). */
bool svc_check_str_opt(svc_err *e, svc_limit_id id, const svc_str *v, bool required);
bool svc_check_int_opt(svc_err *e, svc_limit_id id, const svc_int *v, bool required);

/* Format checks, shared with the decoders' normalisation. */
bool svc_currency_ok(const char *s, size_t n);
bool svc_status_ok(const char *s, size_t n);
/* Lower-cases a well-formed email into out (≥ 255 bytes); false if not one. */
bool svc_email_norm(const char *s, size_t n, char *out);

#endif

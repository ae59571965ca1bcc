/* tests/fuzz/fuzz_app.c — libFuzzer target for the app's readers of
 * client bytes: JSON bodies decoded into the typed inputs of every request
 * schema of the limits table and validated as the service does (including
 * order lines), the cursor decoder, the If-None-Match parser and the
 * record codec (cached and stored values).  The first byte selects the
 * mode. */
#include "app/rest/rest-private.h"
#include "app/svc/svc-private.h"

#include <stdlib.h>
#include <string.h>

static void body(const char *d, size_t n)
{
    char why[200];
    bool reals;
    json_t *j = json_parse_object(d, n, &reals, why, sizeof why);
    if (!j)
        return;
    svc_err e;
    svc_err_clear(&e);
    /* every field of the limits table, as its schema's decoder reads it */
    for (int i = 0; i < L__COUNT; i++) {
        const svc_limit *l = &svc_limits[i];
        if (l->type == SVC_F_STRING) {
            svc_str v = rest_get_str(j, (svc_limit_id)i, &e);
            svc_check_str(&e, (svc_limit_id)i, &v, NULL);
        } else if (l->type == SVC_F_INTEGER) {
            svc_int v = rest_get_int(j, (svc_limit_id)i, reals, NULL, &e);
            svc_check_int(&e, (svc_limit_id)i, &v, NULL);
        }
    }
    json_t *lines = json_object_get(j, "lines");
    if (json_is_array(lines))
        for (size_t k = 0; k < json_array_size(lines) && k < 64; k++) {
            json_t *l = json_array_get(lines, k);
            if (json_is_object(l)) {
                svc_int a = rest_get_int(l, L_LINE_ITEM, reals, "lines[0].item_id", &e);
                svc_int b = rest_get_int(l, L_LINE_QUANTITY, reals, "lines[0].quantity", &e);
                svc_check_int(&e, L_LINE_ITEM, &a, "lines[0].item_id");
                svc_check_int(&e, L_LINE_QUANTITY, &b, "lines[0].quantity");
            }
        }
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static svc s;
    static bool init;
    if (!init) {
        if (sodium_init() < 0)
            abort();
        randombytes_buf(s.cursor_key, sizeof s.cursor_key);
        init = true;
    }
    if (size < 1 || size > 8192)
        return 0;
    const char *d = (const char *)data + 1;
    size_t n = size - 1;
    bz_arena ar;
    bz_arena_init(&ar, 4096);
    switch (data[0] % 4) {
    case 0: body(d, n); break;
    case 1: {
        svc_str cur = SVC_STR_SET(d, n);
        svc_cursor c;
        svc_err e;
        svc_err_clear(&e);
        svc__cursor_decode(&s, &cur, "orders:1:", &c, &e);
        break;
    }
    case 2: rest_none_match(bz_str_make(d, n), "\"0123456789abcdef\""); break;
    default: {
        svc_rd r = {d, d + n, false};
        svc_order o;
        svc_item it;
        svc_order_event ev;
        switch (n ? (unsigned char)d[0] % 3 : 0) {
        case 0: svc__dec_order(&r, &ar, &o); break;
        case 1: svc__dec_item(&r, &ar, &it); break;
        default: svc__dec_event(&r, &ev); break;
        }
    }
    }
    bz_arena_free(&ar);
    return 0;
}

/* tests/fuzz/fuzz_app.c — libFuzzer target for the app's readers of
 * client bytes: JSON bodies through the validation helpers (as the
 * handlers read them, including order lines), the ?cursor= decoder and the
 * If-None-Match parser.  First byte selects the mode. */
#include "app/app-private.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

static void body(const char *d, size_t n)
{
    char why[200];
    json_t *j = json_parse_object(d, n, why, sizeof why);
    if (!j)
        return;
    jv v;
    jv_init(&v);
    const char *s;
    size_t len;
    int64_t i;
    jv_str(&v, j, "email", true, 0, 1 << 20, false, &s, &len);
    jv_str(&v, j, "name", true, 1, 100, true, &s, &len);
    jv_str(&v, j, "currency", false, 0, 64, false, &s, &len);
    jv_int(&v, j, "amount_cents", true, 1, 1000000000, &i);
    json_t *lines = json_object_get(j, "lines");
    if (json_is_array(lines))
        for (size_t k = 0; k < json_array_size(lines) && k < 64; k++) {
            json_t *l = json_array_get(lines, k);
            if (json_is_object(l)) {
                jv_int(&v, l, "item_id", true, 1, INT64_MAX, &i);
                jv_int(&v, l, "quantity", true, 1, 1000, &i);
            }
        }
    jv_free(&v);
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static app a;
    static bool init;
    if (!init) {
        if (sodium_init() < 0)
            abort();
        randombytes_buf(a.cursor_key, sizeof a.cursor_key);
        init = true;
    }
    if (size < 1 || size > 8192)
        return 0;
    const char *d = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 3) {
    case 0: body(d, n); break;
    case 1: {
        /* ?cursor=<bytes> through the real query decoder */
        http_req r;
        memset(&r, 0, sizeof r);
        bz_arena ar;
        bz_arena_init(&ar, 4096);
        r.arena = &ar;
        char *q = malloc(n + 8);
        memcpy(q, "cursor=", 7);
        memcpy(q + 7, d, n);
        q[n + 7] = '\0';
        r.query = bz_str_make(q, n + 7);
        api_cursor c;
        api_cursor_param(&a, &r, "orders:1:", &c);
        bz_buf_free(&r.body);
        bz_buf_free(&r.resp_headers);
        bz_arena_free(&ar);
        free(q);
        break;
    }
    default: items_none_match(bz_str_make(d, n), "\"0123456789abcdef\""); break;
    }
    return 0;
}

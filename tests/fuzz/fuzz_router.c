/* tests/fuzz/fuzz_router.c — libFuzzer target: path cleaning, unescaping
 * and routing of arbitrary paths, and registration of arbitrary patterns.
 * Input: first byte selects the mode. */
#include "http/http-private.h"

#include <stdlib.h>
#include <string.h>

static int h(http_req *r, void *d) { return 0; }

static http_mux *fixed(void)
{
    static http_mux *m;
    if (!m) {
        m = http_mux_new();
        const char *p[] = {"/", "GET /healthz", "/v1/users/{id}", "GET /v1/users/{id}/orders", "/v1/items/",
                           "POST /v1/items", "/files/{p...}", "/z/{$}", "DELETE /v1/items/{id}"};
        char err[256];
        for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
            if (http_mux_handle(m, p[i], (http_handler){h, NULL}, err, sizeof err))
                abort();
    }
    return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    int mode = data[0] % 3;
    char *s = malloc(size + 2);
    s[0] = '/';
    memcpy(s + 1, data + 1, size - 1);
    size_t n = size;
    s[n] = '\0';
    if (mode == 0) {
        char *out = malloc(n + 2);
        size_t cn = http__clean_path(s, n, out);
        if (cn > n + 1 || out[0] != '/' || out[cn] != '\0')
            abort();
        char *again = malloc(cn + 2);
        if (http__clean_path(out, cn, again) != cn || memcmp(out, again, cn)) /* idempotent */
            abort();
        free(again);
        free(out);
    } else if (mode == 1) {
        http_req r;
        memset(&r, 0, sizeof r);
        bz_arena a;
        bz_arena_init(&a, 0);
        r.arena = &a;
        r.method = BZ_STR_LIT("GET");
        r.path = bz_str_make(s, n);
        http_route_match mt;
        http_handler hh;
        http__mux_route(fixed(), &r, &mt, &hh);
        for (int i = 0; i < r.npv; i++)
            http_path_value(&r, r.pv[i].name);
        bz_arena_free(&a);
    } else {
        /* pattern registration must never crash, whatever the text */
        memcpy(s, data + 1, size - 1);
        s[size - 1] = '\0';
        http_mux *m = http_mux_new();
        char err[256];
        http_mux_handle(m, s, (http_handler){h, NULL}, err, sizeof err);
        http_mux_handle(m, "/a/{x}", (http_handler){h, NULL}, err, sizeof err);
        http_mux_free(m);
    }
    free(s);
    return 0;
}

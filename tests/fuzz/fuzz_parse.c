/* tests/fuzz/fuzz_parse.c — libFuzzer target: the HTTP request-head parser
 * on arbitrary bytes, whole and in every prefix-split the input suggests. */
#include "http/http-private.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static http_header hdrs[HTTP_MAX_HEADERS];
    http_req r;
    int st;
    /* A private copy with no slack, so ASan sees any read past the end. */
    char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    memset(&r, 0, sizeof r);
    int n = http__parse_head(buf, size, 4096, &r, hdrs, HTTP_MAX_HEADERS, &st);
    if (n > 0) {
        if ((size_t)n > size)
            abort();
        for (int i = 0; i < r.nheaders; i++) /* slices stay inside the input */
            if (r.headers[i].name.p < buf || r.headers[i].value.p + r.headers[i].value.n > buf + n)
                abort();
        /* Parsing is monotonic: a shorter prefix is never complete. */
        memset(&r, 0, sizeof r);
        if (http__parse_head(buf, (size_t)n - 1, 4096, &r, hdrs, HTTP_MAX_HEADERS, &st) > 0)
            abort();
    } else if (n < 0 && !(st == 400 || st == 414 || st == 417 || st == 431 || st == 501 || st == 505)) {
        abort();
    }
    free(buf);
    return 0;
}

/* tests/fuzz/fuzz_chunked.c — libFuzzer target: the chunked decoder fed
 * the input in pieces whose sizes come from the first byte; the decoded
 * body must not depend on how the input was split. */
#include "http/http-private.h"

#include <stdlib.h>
#include <string.h>

static int decode(const char *in, size_t len, size_t step, char *out, size_t *olen)
{
    size_t max_take = step; /* also exercises the decoder's output limit */
    http_chunked c = {0};
    size_t pos = 0, have = step < len ? step : len, o = 0;
    for (int guard = 0; guard < 1000000; guard++) {
        size_t used = 0, dl = 0;
        const char *d = NULL;
        int st = http__chunked_step(&c, in + pos, have - pos, max_take, &used, &d, &dl);
        if (used > have - pos)
            abort();
        pos += used;
        if (st == HTTP_CHUNK_DATA) {
            if (d < in || d + dl > in + have || dl == 0)
                abort();
            memcpy(out + o, d, dl);
            o += dl;
        } else if (st == HTTP_CHUNK_DONE) {
            *olen = o;
            return 1;
        } else if (st == HTTP_CHUNK_ERROR) {
            return -1;
        } else {
            if (have == len)
                return 0;
            have = have + step < len ? have + step : len;
        }
    }
    abort(); /* no progress */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (data[0] % 16) + 1;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    char *copy = malloc(len ? len : 1);
    memcpy(copy, in, len);
    char *o1 = malloc(len + 1), *o2 = malloc(len + 1);
    size_t l1 = 0, l2 = 0;
    int r1 = decode(copy, len, len ? len : 1, o1, &l1);
    int r2 = decode(copy, len, step, o2, &l2);
    /* A split can only turn "done" into "done" with the same body; an error
     * found whole is an error in pieces too. */
    if (r1 == 1 && (r2 != 1 || l1 != l2 || memcmp(o1, o2, l1)))
        abort();
    if (r1 == -1 && r2 == 1)
        abort();
    free(copy);
    free(o1);
    free(o2);
    return 0;
}

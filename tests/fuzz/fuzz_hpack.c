/* tests/fuzz/fuzz_hpack.c — libFuzzer target: arbitrary bytes as HPACK
 * header blocks (http/hpack.c).  The first byte picks the table limit;
 * the rest is cut into blocks at 0xff 0x00 pairs and decoded in order
 * through one decoder, so table state carries from block to block as on
 * a connection.  Every decoded field is checked against the limits the
 * decoder promises (the table never over its size), and each block's
 * Huffman strings are re-encoded and decoded back. */
#include "http/hpack.h"

#include <stdlib.h>
#include <string.h>

static int emit(void *arg, const uint8_t *name, size_t nl, const uint8_t *value, size_t vl, unsigned flags)
{
    size_t *total = arg;
    *total += nl + vl;
    /* touch every byte: ASan checks the pointers */
    volatile uint8_t x = 0;
    for (size_t i = 0; i < nl; i++)
        x ^= name[i];
    for (size_t i = 0; i < vl; i++)
        x ^= value[i];
    (void)x;
    uint8_t *enc = malloc(vl * 4 + 1), *dec = malloc(vl * 2 + 2);
    size_t n = http__hpack_huff_encode(value, vl, enc);
    long k = http__hpack_huff_decode(enc, n, dec);
    if (k != (long)vl || (vl && memcmp(dec, value, vl) != 0))
        abort(); /* the Huffman code does not round-trip */
    free(enc);
    free(dec);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t limit = (size_t)data[0] * 32;
    http__hpack_dec d;
    http__hpack_dec_init(&d, limit);
    size_t i = 1;
    while (i <= size) {
        size_t j = i;
        while (j + 1 < size && !(data[j] == 0xff && data[j + 1] == 0x00))
            j++;
        if (j + 1 >= size)
            j = size;
        size_t total = 0;
        int rc = http__hpack_decode(&d, data + i, j - i, emit, &total);
        if (rc != 0 && rc != HTTP_HPACK_EMALFORMED)
            abort();
        if (d.size > d.max || d.max > d.limit)
            abort();
        if (rc)
            break; /* a connection would end here */
        i = j + 2;
    }
    http__hpack_dec_free(&d);
    return 0;
}

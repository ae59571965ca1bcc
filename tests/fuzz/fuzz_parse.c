/* tests/fuzz/fuzz_parse.c — libFuzzer target: the HTTP request-head parser
 * on arbitrary bytes, whole and in every prefix-split the input suggests;
 * the resumable parser fed in pieces must agree with a fresh parse of the
 * same prefix at every step, and scan each byte a bounded number of times. */
#include "http/http-private.h"

#include <stdlib.h>
#include <string.h>

#define MAXH 4096

static void same_request(const http_req *a, const http_req *b)
{
    if (a->method.p != b->method.p || a->method.n != b->method.n || a->target.p != b->target.p ||
        a->target.n != b->target.n || a->path.p != b->path.p || a->path.n != b->path.n ||
        a->query.p != b->query.p || a->query.n != b->query.n || a->minor != b->minor ||
        a->nheaders != b->nheaders || a->content_length != b->content_length || a->chunked != b->chunked ||
        a->expect_continue != b->expect_continue || a->keep_alive != b->keep_alive)
        abort();
    for (int i = 0; i < a->nheaders; i++)
        if (a->headers[i].name.p != b->headers[i].name.p || a->headers[i].name.n != b->headers[i].name.n ||
            a->headers[i].value.p != b->headers[i].value.p || a->headers[i].value.n != b->headers[i].value.n)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static http_header hdrs[HTTP_MAX_HEADERS], hdrs2[HTTP_MAX_HEADERS];
    http_req r, r2;
    int st, st2;
    /* A private copy with no slack, so ASan sees any read past the end. */
    char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    memset(&r, 0, sizeof r);
    int n = http__parse_head(buf, size, MAXH, &r, hdrs, HTTP_MAX_HEADERS, &st);
    if (n > 0) {
        if ((size_t)n > size)
            abort();
        for (int i = 0; i < r.nheaders; i++) /* slices stay inside the input */
            if (r.headers[i].name.p < buf || r.headers[i].value.p + r.headers[i].value.n > buf + n)
                abort();
        /* Parsing is monotonic: a shorter prefix is never complete. */
        memset(&r2, 0, sizeof r2);
        if (http__parse_head(buf, (size_t)n - 1, MAXH, &r2, hdrs2, HTTP_MAX_HEADERS, &st2) > 0)
            abort();
    } else if (n < 0 && !(st == 400 || st == 414 || st == 417 || st == 431 || st == 501 || st == 505)) {
        abort();
    }

    /* Resumable: feed growing prefixes (piece sizes from the input's first
     * byte: 1..8, or 1-byte pieces) and compare each step with a fresh
     * parse of the same prefix (only while prefixes are short, so one
     * input stays cheap; the last step always). */
    size_t piece = size ? (size_t)(data[0] & 7) + 1 : 1;
    http_head_parser hp;
    http__head_init(&hp);
    memset(&r2, 0, sizeof r2);
    int got = 0;
    size_t len = 0;
    while (len < size) {
        len = len + piece < size ? len + piece : size;
        got = http__parse_head_step(&hp, buf, len, MAXH, &r2, hdrs2, HTTP_MAX_HEADERS, &st2);
        if (got != 0 || len <= 1024 || len == size) {
            http_req r3;
            int st3;
            memset(&r3, 0, sizeof r3);
            int want = http__parse_head(buf, len, MAXH, &r3, hdrs, HTTP_MAX_HEADERS, &st3);
            if (want != got || (got < 0 && st2 != st3))
                abort();
            if (got > 0) {
                /* hdrs and hdrs2 differ as arrays; compare what they hold */
                r3.headers = hdrs;
                same_request(&r2, &r3);
            }
        }
        if (got != 0)
            break;
    }
    /* Linear: each byte seen is scanned a bounded number of times however
     * the head is split (re-parsing from byte 0 on every read would be
     * quadratic). */
    if (hp.scanned > 4 * (uint64_t)len + 64)
        abort();
    free(buf);
    return 0;
}

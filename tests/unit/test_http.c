/* tests/unit/test_http.c — http/ internals: the request-head parser, the
 * chunked decoder, path cleaning, the router (Go 1.22 precedence) and the
 * observation module's recorder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "http/http-private.h"

#include <bazaar/clock.h>
#include <bazaar/log.h>
#include <bazaar/observe.h>

#include <errno.h>
#include <pthread.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static http_header hdrs[HTTP_MAX_HEADERS];

static int parse(const char *s, http_req *r, int *status)
{
    memset(r, 0, sizeof *r);
    *status = 0;
    return http__parse_head(s, strlen(s), 16384, r, hdrs, HTTP_MAX_HEADERS, status);
}

static void parser_accepts_valid_requests(void **state)
{
    http_req r;
    int st;
    const char *req = "GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example\r\nX-Empty:\r\nX-Sp:  v  a  \r\n\r\nBODY";
    int n = parse(req, &r, &st);
    assert_int_equal(n, (int)(strstr(req, "BODY") - req));
    assert_true(bz_str_eq_c(r.method, "GET"));
    assert_true(bz_str_eq_c(r.path, "/a/b"));
    assert_true(bz_str_eq_c(r.query, "x=1&y=%20"));
    assert_int_equal(r.minor, 1);
    assert_int_equal(r.nheaders, 3);
    assert_true(bz_str_eq_c(http_header_get(&r, "x-empty"), ""));
    assert_true(bz_str_eq_c(http_header_get(&r, "X-SP"), "v  a"));
    assert_true(r.keep_alive);
    assert_int_equal(r.content_length, -1);
    /* zero-copy: the value points into the input */
    assert_true(http_header_get(&r, "host").p > req && http_header_get(&r, "host").p < req + strlen(req));

    assert_true(parse("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\nContent-Length: 12\r\n\r\n", &r, &st) > 0);
    assert_int_equal(r.content_length, 12);
    assert_true(parse("POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n", &r, &st) > 0);
    assert_true(r.chunked);
    assert_true(parse("GET / HTTP/1.0\r\n\r\n", &r, &st) > 0);
    assert_false(r.keep_alive);
    assert_true(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r, &st) > 0);
    assert_true(r.keep_alive);
    assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, close\r\n\r\n", &r, &st) > 0);
    assert_false(r.keep_alive);
    assert_true(parse("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", &r, &st) > 0);
    assert_true(parse("GET http://example.com/p?q HTTP/1.1\r\nHost: h\r\n\r\n", &r, &st) > 0);
    assert_true(bz_str_eq_c(r.path, "/p"));
    assert_true(parse("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", &r, &st) > 0); /* leading CRLF */
    assert_true(parse("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n", &r, &st) > 0);
    assert_true(r.expect_continue);
}

static void parser_waits_for_more(void **state)
{
    http_req r;
    int st;
    const char *full = "GET /x HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n";
    for (size_t i = 0; i < strlen(full); i++) {
        memset(&r, 0, sizeof r);
        assert_int_equal(http__parse_head(full, i, 16384, &r, hdrs, HTTP_MAX_HEADERS, &st), 0);
    }
    assert_int_equal(parse(full, &r, &st), (int)strlen(full));
}

static const struct {
    const char *req;
    int status;
} bad_cases[] = {
    {"GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1,1\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 501},
    {"GET /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
    {"GET /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: h\r\nA: b\r\n c\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: h\r\nA : b\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: h\r\nA\tB: b\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: h\r\n\"A\": b\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: h\r\nA: b\x01\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: h\r\nA: b\x7f\r\n\r\n", 400},
    {"GET /x HTTP/1.1\nHost: h\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: h\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: h\r\nA: b\rc\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\r\n", 400},
    {"GET /x\tHTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET  /x HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET /x  HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET /x HTTP/1.1 \r\nHost: h\r\n\r\n", 400},
    {"GET /x http/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET /x HTTP/3.0\r\nHost: h\r\n\r\n", 505},
    {"GET /x HTTP/1.1\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
    {"GET x HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET /x#frag HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"G@T /x HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {" GET /x HTTP/1.1\r\nHost: h\r\n\r\n", 400},
    {"GET /x HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n", 417},
    {"GET /x HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", 400},
};

/* The target and field values are checked 16 bytes at a time: every
 * byte value at every offset of targets and values of many lengths (over
 * and under the block size, ending right at the end of the input, which
 * sits in a buffer of exactly its size) is accepted or refused as the
 * byte-at-a-time definitions say. */
static void parser_checks_every_byte_of_targets_and_values(void **state)
{
    (void)state;
    char head[256];
    for (int c = 0; c < 256; c++)
        for (int len = 1; len <= 40; len += (len < 20 ? 1 : 7))
            for (int at = 0; at < len; at++)
                for (int in_value = 0; in_value < 2; in_value++) {
                    char v[48];
                    for (int i = 0; i < len; i++)
                        v[i] = (char)('a' + i % 26);
                    v[at] = (char)c;
                    int n;
                    bool ok;
                    if (in_value) {
                        n = snprintf(head, sizeof head, "GET / HTTP/1.1\r\nHost: h\r\nX-V: ");
                        memcpy(head + n, v, (size_t)len);
                        n += len;
                        memcpy(head + n, "\r\n\r\n", 4);
                        n += 4;
                        /* (a value's spaces and tabs at its ends are trimmed, not refused) */
                        ok = c == ' ' || c == '\t' || (c > 0x20 && c != 0x7f);
                    } else {
                        n = snprintf(head, sizeof head, "GET /");
                        memcpy(head + n, v, (size_t)len);
                        n += len;
                        memcpy(head + n, " HTTP/1.1\r\nHost: h\r\n\r\n", 22);
                        n += 22;
                        ok = c > 0x20 && c != 0x7f && c != '#';
                    }
                    char *exact = malloc((size_t)n);
                    assert_non_null(exact);
                    memcpy(exact, head, (size_t)n);
                    http_req r;
                    memset(&r, 0, sizeof r);
                    int st = 0;
                    int got = http__parse_head(exact, (size_t)n, 16384, &r, hdrs, HTTP_MAX_HEADERS, &st);
                    if ((got == n) != ok || (!ok && (got != -1 || st != 400)))
                        fail_msg("byte 0x%02x at %d of %d in the %s: %d (status %d)", c, at, len,
                                 in_value ? "value" : "target", got, st);
                    if (ok && !in_value)
                        assert_int_equal(r.target.n, (size_t)len + 1);
                    free(exact);
                }
}

static void parser_rejects_malformed_and_smuggling(void **state)
{
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        http_req r;
        int st;
        int n = parse(bad_cases[i].req, &r, &st);
        if (n != -1 || st != bad_cases[i].status)
            fail_msg("case %zu (%s): got %d/%d, want -1/%d", i, bad_cases[i].req, n, st, bad_cases[i].status);
    }
}

/* Feeds s to the resumable parser in pieces of `piece` bytes; returns the
 * first non-zero result (or 0), with the bytes fed in *fed. */
static int parse_pieces(http_head_parser *hp, const char *s, size_t len, size_t piece, size_t max, http_req *r,
                        http_header *h, int *status, size_t *fed)
{
    http__head_init(hp);
    memset(r, 0, sizeof *r);
    *status = 0;
    size_t n = 0;
    int got = 0;
    while (n < len && got == 0) {
        n = n + piece < len ? n + piece : len;
        got = http__parse_head_step(hp, s, n, max, r, h, HTTP_MAX_HEADERS, status);
    }
    if (fed)
        *fed = n;
    return got;
}

static void same_head(const http_req *a, const http_req *b)
{
    assert_true(a->method.p == b->method.p && a->method.n == b->method.n);
    assert_true(a->target.p == b->target.p && a->target.n == b->target.n);
    assert_true(a->path.p == b->path.p && a->path.n == b->path.n);
    assert_true(a->query.p == b->query.p && a->query.n == b->query.n);
    assert_int_equal(a->minor, b->minor);
    assert_int_equal(a->nheaders, b->nheaders);
    for (int i = 0; i < a->nheaders; i++) {
        assert_true(a->headers[i].name.p == b->headers[i].name.p && a->headers[i].name.n == b->headers[i].name.n);
        assert_true(a->headers[i].value.p == b->headers[i].value.p && a->headers[i].value.n == b->headers[i].value.n);
    }
    assert_int_equal(a->content_length, b->content_length);
    assert_int_equal(a->chunked, b->chunked);
    assert_int_equal(a->expect_continue, b->expect_continue);
    assert_int_equal(a->keep_alive, b->keep_alive);
}

/* A head arriving a byte at a time (a slow client) parses to exactly what
 * the whole head parses to, good or bad; so do other split sizes. */
static void parser_resumes_byte_by_byte(void **state)
{
    static http_header h1[HTTP_MAX_HEADERS];
    const char *good[] = {
        "GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example\r\nX-Empty:\r\nX-Sp:  v  a  \r\n\r\nBODY",
        "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\nConnection: foo, close\r\n\r\n",
        "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        "\r\nGET http://example.com/p?q HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        const char *req = good[i];
        size_t len = strlen(req);
        http_req whole, inc;
        int st, st2;
        int want = parse(req, &whole, &st);
        assert_true(want > 0);
        for (size_t piece = 1; piece <= 7; piece++) {
            http_head_parser hp;
            size_t fed;
            int got = parse_pieces(&hp, req, len, piece, 16384, &inc, h1, &st2, &fed);
            assert_int_equal(got, want);
            same_head(&inc, &whole);
            /* it saw the end of the head as soon as it was there */
            assert_true(fed < (size_t)want + piece);
            /* and says the same if asked again */
            assert_int_equal(http__parse_head_step(&hp, req, len, 16384, &inc, h1, HTTP_MAX_HEADERS, &st2), want);
        }
    }
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const char *req = bad_cases[i].req;
        http_req inc;
        http_head_parser hp;
        int st = 0;
        int got = parse_pieces(&hp, req, strlen(req), 1, 16384, &inc, h1, &st, NULL);
        if (got != -1 || st != bad_cases[i].status)
            fail_msg("bad case %zu (%s) byte by byte: got %d/%d, want -1/%d", i, req, got, st, bad_cases[i].status);
    }
}

/* The work a slow client causes is linear in what it sends: a 16 KiB head
 * sent a byte at a time is scanned ~3× over (each new byte by the LF and
 * CR searches, then its line once), not once per read.  The
 * parser counts every byte its scans examine (the LF/CR searches over new
 * bytes, and each complete line once when it is parsed — every other loop
 * in it runs within one line), so the count bounds its work; a parse from
 * byte 0 per read, counted the same way, is quadratic. */
static void parser_scans_linearly(void **state)
{
    static char req[20000];
    static http_header h1[HTTP_MAX_HEADERS];
    int k = snprintf(req, sizeof req, "GET /slow HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < 60; i++) /* many short lines, then one long one */
        k += snprintf(req + k, sizeof req - (size_t)k, "X-Field-%02d: %0*d\r\n", i, 100, i);
    k += snprintf(req + k, sizeof req - (size_t)k, "X-Long: ");
    while (k < 16384 - 4)
        req[k++] = 'v';
    memcpy(req + k, "\r\n\r\n", 5);
    size_t len = strlen(req);
    assert_int_equal(len, 16384);

    http_req r, whole;
    int st;
    http_head_parser hp;
    size_t fed;
    assert_int_equal(parse_pieces(&hp, req, len, 1, 32768, &r, h1, &st, &fed), (int)len);
    assert_int_equal(fed, len);
    assert_true(hp.scanned <= 4 * len);
    memset(&whole, 0, sizeof whole);
    assert_int_equal(http__parse_head(req, len, 32768, &whole, hdrs, HTTP_MAX_HEADERS, &st), (int)len);
    same_head(&r, &whole);

    /* The same count for re-parsing from byte 0 at every read. */
    uint64_t rescans = 0;
    for (size_t n = 1; n <= len; n++) {
        http_head_parser fresh;
        http__head_init(&fresh);
        memset(&whole, 0, sizeof whole);
        http__parse_head_step(&fresh, req, n, 32768, &whole, hdrs, HTTP_MAX_HEADERS, &st);
        rescans += fresh.scanned;
    }
    assert_true(rescans > (uint64_t)len * len / 4);
    /* A slow client's byte costs O(1) scanning however long its head grew. */
    print_message("16 KiB head, 1-byte reads: %llu bytes scanned resumed, %llu from scratch\n",
                  (unsigned long long)hp.scanned, (unsigned long long)rescans);
}

static void parser_limits(void **state)
{
    static char big[40000];
    http_req r;
    int st;
    /* 414: a request target over 8 KiB, complete or not */
    snprintf(big, sizeof big, "GET /%0*d HTTP/1.1\r\nHost: h\r\n\r\n", 9000, 0);
    assert_int_equal(parse(big, &r, &st), -1);
    assert_int_equal(st, 414);
    memset(big, 'a', 9000);
    memcpy(big, "GET /", 5);
    big[9000] = 0;
    assert_int_equal(parse(big, &r, &st), -1);
    assert_int_equal(st, 414);
    /* 431: headers over the cap, complete or still arriving */
    int k = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: h\r\nX: ");
    memset(big + k, 'v', 17000);
    strcpy(big + k + 17000, "\r\n\r\n");
    assert_int_equal(parse(big, &r, &st), -1);
    assert_int_equal(st, 431);
    big[k + 17000] = 0;
    assert_int_equal(parse(big, &r, &st), -1);
    assert_int_equal(st, 431);
    /* 431: too many fields */
    k = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < HTTP_MAX_HEADERS + 1; i++)
        k += snprintf(big + k, sizeof big - (size_t)k, "X%d: v\r\n", i);
    strcpy(big + k, "\r\n");
    assert_int_equal(parse(big, &r, &st), -1);
    assert_int_equal(st, 431);
}

/* ---- chunked ---- */

static int dechunk(const char *in, size_t len, char *out, size_t *outlen, size_t step)
{
    size_t max_take = step; /* also exercises the decoder's output limit */
    http_chunked c = {0};
    size_t pos = 0, have = step < len ? step : len, o = 0;
    for (;;) {
        size_t used, dl;
        const char *d;
        int st = http__chunked_step(&c, in + pos, have - pos, max_take, &used, &d, &dl);
        pos += used;
        if (st == HTTP_CHUNK_DATA) {
            memcpy(out + o, d, dl);
            o += dl;
        } else if (st == HTTP_CHUNK_DONE) {
            *outlen = o;
            return (int)pos;
        } else if (st == HTTP_CHUNK_ERROR) {
            return -1;
        } else {
            if (have == len)
                return -2; /* needs more than there is */
            have = have + step < len ? have + step : len;
        }
    }
}

static void chunked_decoding(void **state)
{
    const char *ok = "5\r\nhello\r\n6;a=b;c=\"q\\\"x\"\r\n world\r\nA\r\n0123456789\r\n0\r\nT: v\r\n\r\nNEXT";
    char out[64];
    size_t ol;
    for (size_t step = 1; step < 70; step++) {
        int n = dechunk(ok, strlen(ok), out, &ol, step);
        assert_int_equal(n, (int)(strstr(ok, "NEXT") - ok));
        assert_int_equal(ol, 21);
        assert_memory_equal(out, "hello world0123456789", 21);
    }
    const char *bad[] = {
        "x\r\nhello\r\n0\r\n\r\n",          /* not hex */
        "\r\nhello\r\n0\r\n\r\n",           /* empty size */
        "5 \r\nhello\r\n0\r\n\r\n",         /* space then nothing: bad ext */
        "5;\r\nhello\r\n0\r\n\r\n",         /* empty ext name */
        "5;a=\r\nhello\r\n0\r\n\r\n",       /* empty ext value */
        "5;a=\"x\r\nhello\r\n0\r\n\r\n",    /* unterminated quote */
        "5\nhello\r\n0\r\n\r\n",            /* bare LF */
        "5\r\nhelloXX0\r\n\r\n",            /* data longer than the size */
        "1000000000000000\r\n",             /* 16 hex digits: overflow guard */
        "0\r\nBad Trailer\r\n\r\n",         /* trailer without colon */
        "-5\r\nhello\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int n = dechunk(bad[i], strlen(bad[i]), out, &ol, strlen(bad[i]));
        if (n != -1)
            fail_msg("bad chunked case %zu accepted (%d)", i, n);
    }
}

/* ---- clean path ---- */

/* The router's "already clean?" check agrees with http__clean_path on
 * every path of up to 8 bytes over '/', '.', 'a' (and the empty one),
 * and the method index with its table. */
static void clean_check_and_method_index(void **state)
{
    (void)state;
    const char alpha[] = "/.a";
    char p[9], out[12];
    int seen_clean = 0;
    for (int len = 0; len <= 8; len++) {
        int total = 1;
        for (int i = 0; i < len; i++)
            total *= 3;
        for (int k = 0; k < total; k++) {
            for (int i = 0, x = k; i < len; i++, x /= 3)
                p[i] = alpha[x % 3];
            size_t n = http__clean_path(p, (size_t)len, out);
            bool same = n == (size_t)len && !memcmp(out, p, n);
            if (same != http__path_is_clean(p, (size_t)len))
                fail_msg("\"%.*s\": clean is \"%s\", the check says %d", len, p, out, !same);
            seen_clean += same;
        }
    }
    assert_true(seen_clean > 100);
    const char *m[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (int i = 0; i < 7; i++)
        assert_int_equal(http_obs_method_index(bz_str_c(m[i])), i);
    const char *other[] = {"", "get", "GETS", "PUSH", "TRACE", "CONNECT", "DELETES", "OPTION", "HEAD "};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        assert_int_equal(http_obs_method_index(bz_str_c(other[i])), 7);
}

static void clean_paths(void **state)
{
    struct {
        const char *in, *out;
    } c[] = {
        {"/", "/"},         {"//", "/"},          {"/a//b", "/a/b"},   {"/a/./b", "/a/b"},
        {"/a/../b", "/b"},  {"/../a", "/a"},      {"/a/b/..", "/a"},   {"/a/b/../", "/a/"},
        {"/a/", "/a/"},     {"/a/.", "/a"},       {"/..", "/"},        {"/a/b/c/../../d", "/a/d"},
        {"/.a/..b/c", "/.a/..b/c"}, {"/a/b/", "/a/b/"},
    };
    char out[64];
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        http__clean_path(c[i].in, strlen(c[i].in), out);
        if (strcmp(out, c[i].out))
            fail_msg("clean(%s) = %s, want %s", c[i].in, out, c[i].out);
    }
}

/* ---- router ---- */

static int h_dummy(http_req *r, void *d) { return 0; }

/* Go 1.22 ServeMux: which pairs may coexist and which conflict. */
static void router_conflicts_like_go(void **state)
{
    struct {
        const char *a, *b;
        bool conflict;
    } c[] = {
        {"/a/b", "/a/{x}", false},            /* literal more specific than wildcard */
        {"/{x}/b", "/a/{y}", true},           /* each more specific in one segment */
        {"/a/{x}/c", "/a/b/{y}", true},
        {"GET /", "/", false},                /* method makes it more specific */
        {"GET /a", "HEAD /a", false},         /* GET is more general than HEAD */
        {"GET /a", "POST /a", false},         /* disjoint */
        {"/a/", "/a/{x...}", true},           /* same requests */
        {"/a/{x}", "/a/{y}", true},           /* equivalent */
        {"/a/{$}", "/a/", false},
        {"/{$}", "/", false},
        {"/b/{x...}", "/b/{x}/{y}", false},
        {"GET /a/{x}", "/a/b", true},         /* method vs path specificity cross */
        {"GET /", "/static/", true},          /* the well-known Go 1.22 case */
        {"/a/b/{x...}", "/a/{y}/c", true},
        {"/x/{$}", "/x/{y}", false},          /* {$} and {y} are disjoint */
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        http_mux *m = http_mux_new();
        char err[256] = "";
        assert_int_equal(http_mux_handle(m, c[i].a, (http_handler){h_dummy, NULL}, err, sizeof err), 0);
        int r = http_mux_handle(m, c[i].b, (http_handler){h_dummy, NULL}, err, sizeof err);
        if ((r != 0) != c[i].conflict)
            fail_msg("%s vs %s: conflict=%d, want %d (%s)", c[i].a, c[i].b, r != 0, c[i].conflict, err);
        if (r)
            assert_non_null(strstr(err, c[i].a)); /* the message names both */
        http_mux_free(m);
    }
    const char *bad[] = {"", "a", "/{x", "/{x}y", "/{1x}", "/{x...}/a", "/{$}/a", "/a/{x}/{x}", "get /a", "/a/{}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        http_mux *m = http_mux_new();
        char err[256] = "";
        if (http_mux_handle(m, bad[i], (http_handler){h_dummy, NULL}, err, sizeof err) == 0)
            fail_msg("bad pattern accepted: %s", bad[i]);
        http_mux_free(m);
    }
}

static const char *route(http_mux *m, const char *method, const char *path, http_route_match *mt)
{
    static http_req r;
    memset(&r, 0, sizeof r);
    r.method = bz_str_c(method);
    r.path = bz_str_c(path);
    http_handler h;
    http__mux_route(m, &r, mt, &h);
    return mt->found == 1 ? mt->pattern : NULL;
}

static void router_picks_most_specific(void **state)
{
    /* ("GET /" would conflict with "/a/", as in Go: neither is more
     * specific — one by method, the other by path.) */
    const char *pats[] = {"/", "GET /m", "/m", "/a/", "/a/b", "/a/{x}", "/a/{x}/c", "/a/b/c",
                          "GET /items/{id}", "HEAD /items/{id}", "POST /items", "/files/{p...}",
                          "/z/{$}", "DELETE /items/{id}"};
    http_mux *m = http_mux_new();
    char err[256];
    for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++)
        if (http_mux_handle(m, pats[i], (http_handler){h_dummy, NULL}, err, sizeof err))
            fail_msg("%s", err);
    struct {
        const char *method, *path, *want;
    } c[] = {
        {"GET", "/", "/"},
        {"POST", "/", "/"},
        {"GET", "/m", "GET /m"},
        {"HEAD", "/m", "GET /m"},
        {"PUT", "/m", "/m"},
        {"GET", "/anything/else", "/"},
        {"GET", "/a/", "/a/"},
        {"GET", "/a/b", "/a/b"},
        {"GET", "/a/q", "/a/{x}"},
        {"GET", "/a/q/c", "/a/{x}/c"},
        {"GET", "/a/b/c", "/a/b/c"},
        {"GET", "/a/q/d", "/a/"},
        {"GET", "/items/7", "GET /items/{id}"},
        {"HEAD", "/items/7", "HEAD /items/{id}"},
        {"DELETE", "/items/7", "DELETE /items/{id}"},
        {"GET", "/files/x/y/z", "/files/{p...}"},
        {"GET", "/files/", "/files/{p...}"},
        {"GET", "/z/", "/z/{$}"},
        {"GET", "/z/q", "/"},
        /* literals match the unescaped segment (the index by segment
         * count and the no-'%' fast compare must not change that) */
        {"GET", "/a/%62", "/a/b"},
        {"GET", "/a/%62/c", "/a/b/c"},
        {"GET", "/a/%2F", "/a/{x}"},
        /* more segments than the router's index covers (16) */
        {"GET", "/files/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17/18/", "/files/{p...}"},
        {"GET", "/a/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17/18", "/a/"},
        {"GET", "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17/18/19/20", "/"},
    };
    http_route_match mt;
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        const char *got = route(m, c[i].method, c[i].path, &mt);
        if (!got || strcmp(got, c[i].want))
            fail_msg("%s %s -> %s, want %s", c[i].method, c[i].path, got ? got : "(none)", c[i].want);
    }
    http_mux_free(m);

    /* 405 with Allow, sorted, HEAD implied by GET */
    m = http_mux_new();
    http_mux_handle(m, "POST /items", (http_handler){h_dummy, NULL}, err, sizeof err);
    http_mux_handle(m, "GET /items", (http_handler){h_dummy, NULL}, err, sizeof err);
    http_mux_handle(m, "GET /other/{x}", (http_handler){h_dummy, NULL}, err, sizeof err);
    assert_null(route(m, "PUT", "/items", &mt));
    assert_int_equal(mt.found, -1);
    assert_string_equal(mt.allow, "GET, HEAD, POST");
    assert_null(route(m, "GET", "/nothing", &mt));
    assert_int_equal(mt.found, 0);
    assert_null(route(m, "GET", "/other/", &mt)); /* {x} needs a non-empty segment */
    assert_int_equal(mt.found, 0);
    http_mux_free(m);
}

static void path_values_are_decoded(void **state)
{
    http_mux *m = http_mux_new();
    char err[256];
    http_mux_handle(m, "/u/{id}/f/{rest...}", (http_handler){h_dummy, NULL}, err, sizeof err);
    static http_req r;
    memset(&r, 0, sizeof r);
    bz_arena a;
    bz_arena_init(&a, 0);
    r.arena = &a;
    r.method = BZ_STR_LIT("GET");
    r.path = BZ_STR_LIT("/u/a%2Fb%20c/f/x/y%41/");
    http_route_match mt;
    http_handler h;
    http__mux_route(m, &r, &mt, &h);
    assert_int_equal(mt.found, 1);
    assert_string_equal(http_path_value(&r, "id"), "a/b c");
    assert_string_equal(http_path_value(&r, "rest"), "x/yA/");
    assert_null(http_path_value(&r, "nope"));
    bz_arena_free(&a);
    http_mux_free(m);
}

/* With many routes of one segment count the router looks only at those
 * whose literal in the segment that splits them best has the path's byte
 * (and those with a wildcard there).  The marketplace's routes and more
 * (wildcards and subtrees where the split is made, {$}, methods, HEAD):
 * every answer is the one the full scan gives — a path with an escape
 * is always scanned in full, so "/%761/..." (the same path) is the
 * reference —, and some are spelled out. */
static void router_index_by_segment_byte_changes_no_answer(void **state)
{
    (void)state;
    const char *pats[] = {
        "GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json", "/v1/",
        "DELETE /v1/items/{id}", "DELETE /v1/sessions/current", "GET /v1/accounts", "GET /v1/accounts/{id}",
        "GET /v1/accounts/{id}/transfers", "GET /v1/items", "GET /v1/items/{id}", "GET /v1/leaderboard/spenders",
        "GET /v1/me", "GET /v1/orders/{id}", "GET /v1/transfers/{id}", "GET /v1/users", "GET /v1/users/{id}",
        "GET /v1/users/{id}/orders", "GET /v1/users/{id}/orders/events", "PATCH /v1/items/{id}",
        "PATCH /v1/users/{id}", "POST /v1/accounts", "POST /v1/accounts/{id}/deposits", "POST /v1/items",
        "POST /v1/orders", "POST /v1/orders/{id}/cancel", "POST /v1/orders/{id}/pay", "POST /v1/sessions",
        "POST /v1/transfers", "POST /v1/users", "PUT /v1/items/{id}",
        /* a wildcard and a subtree in the splitting segment, {$}, no method */
        "BREW /v1/{kind}/special", "GET /v1/files/{p...}", "GET /v1/z/{$}", "GET /v1/x/{a}", "HEAD /v1/items/{id}/h",
        "GET /v1/items/{id}/h",
    };
    http_mux *m = http_mux_new();
    char err[256];
    for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++)
        if (http_mux_handle(m, pats[i], (http_handler){h_dummy, NULL}, err, sizeof err))
            fail_msg("%s", err);
    const char *methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "BREW"};
    const char *paths[] = {
        "/healthz", "/readyz", "/nope", "/v1/items", "/v1/items/1", "/v1/items/1/h", "/v1/items/1/x",
        "/v1/users/7", "/v1/users/7/orders", "/v1/users/7/orders/events", "/v1/users/me", "/v1/me",
        "/v1/orders/3/pay", "/v1/orders/3/cancel", "/v1/orders/3/refund", "/v1/accounts/9/deposits",
        "/v1/accounts/9/transfers", "/v1/leaderboard/spenders", "/v1/sessions/current", "/v1/sessions",
        "/v1/items/special", "/v1/anything/special", "/v1/files/a/b/c", "/v1/files/", "/v1/z/", "/v1/z/q",
        "/v1/x/1", "/v1/x/1/2", "/v1/", "/v1/transfers/5", "/v1/Items/1", "/v1/items/", "/v1/a/b/c/d",
    };
    http_route_match mt, ref;
    int spelled = 0;
    for (size_t mi = 0; mi < sizeof methods / sizeof methods[0]; mi++)
        for (size_t pi = 0; pi < sizeof paths / sizeof paths[0]; pi++) {
            const char *got = route(m, methods[mi], paths[pi], &mt);
            char esc[128];
            if (!strncmp(paths[pi], "/v1", 3))
                snprintf(esc, sizeof esc, "/%%76%s", paths[pi] + 2); /* %76 is 'v' */
            else
                snprintf(esc, sizeof esc, "/%%%02x%s", paths[pi][1], paths[pi] + 2);
            const char *want = route(m, methods[mi], esc, &ref);
            if (mt.found != ref.found || (got ? !want || strcmp(got, want) : want != NULL) ||
                strcmp(mt.allow, ref.allow))
                fail_msg("%s %s -> %d %s [%s], the scan: %d %s [%s]", methods[mi], paths[pi], mt.found,
                         got ? got : "-", mt.allow, ref.found, want ? want : "-", ref.allow);
            struct {
                const char *method, *path, *want;
            } c[] = {
                {"GET", "/v1/items/1", "GET /v1/items/{id}"},
                {"HEAD", "/v1/items/1", "GET /v1/items/{id}"},
                {"HEAD", "/v1/items/1/h", "HEAD /v1/items/{id}/h"},
                {"BREW", "/v1/items/special", "BREW /v1/{kind}/special"},
                {"POST", "/v1/orders/3/pay", "POST /v1/orders/{id}/pay"},
                {"GET", "/v1/orders/3/pay", "/v1/"},
                {"HEAD", "/v1/x/1", "GET /v1/x/{a}"},
                {"GET", "/v1/files/a/b/c", "GET /v1/files/{p...}"},
                {"GET", "/v1/z/", "GET /v1/z/{$}"},
                {"GET", "/v1/me", "GET /v1/me"},
                {"POST", "/v1/me", "/v1/"},
            };
            for (size_t k = 0; k < sizeof c / sizeof c[0]; k++)
                if (!strcmp(c[k].method, methods[mi]) && !strcmp(c[k].path, paths[pi])) {
                    spelled++;
                    if (!got || strcmp(got, c[k].want))
                        fail_msg("%s %s -> %s, want %s", methods[mi], paths[pi], got ? got : "-", c[k].want);
                }
        }
    assert_int_equal(spelled, 11);
    /* 405 where the split is made: Allow from the routes of that path only */
    http_mux_free(m);
    m = http_mux_new();
    const char *more[] = {"GET /a/b{x}", "GET /a/c/{x}", "PUT /a/c/{x}", "GET /a/d/{x}", "GET /a/e/{x}",
                          "GET /a/f/{x}", "GET /a/g/{x}", "GET /a/h/{x}", "GET /a/i/{x}", "DELETE /a/c/{x}"};
    for (size_t i = 1; i < sizeof more / sizeof more[0]; i++)
        if (http_mux_handle(m, more[i], (http_handler){h_dummy, NULL}, err, sizeof err))
            fail_msg("%s", err);
    assert_null(route(m, "POST", "/a/c/1", &mt));
    assert_int_equal(mt.found, -1);
    assert_string_equal(mt.allow, "DELETE, GET, HEAD, PUT");
    assert_null(route(m, "POST", "/a/z/1", &mt));
    assert_int_equal(mt.found, 0);
    assert_string_equal(route(m, "GET", "/a/i/1", &mt), "GET /a/i/{x}");
    http_mux_free(m);
}

/* ---- the observation module's recorder (http/observe.c) ---- */

static const bz_hist_bounds t_bounds = {2, {0.001, 10}};
static const char *t_variant(int v) { return v ? "POST" : "GET"; }
static const char *t_outcome(int o, char buf[16])
{
    snprintf(buf, 16, "%d", o);
    return buf;
}
static const http_obs_spec t_spec = {"t_total", "T.", "t_seconds", "T time.", "route", "method", "status", "(none)",
                                     &t_bounds, t_variant, t_outcome, NULL};
static http_obs t_obs = HTTP_OBS_INIT(&t_spec);
static const char t_route[] = "/a";

static void t_one(const char *route, int variant, int status)
{
    http_req r;
    memset(&r, 0, sizeof r);
    r.start_ns = bz_now_ns();
    http_obs_attach(&r, &t_obs);
    http_obs_attach(&r, &t_obs); /* a second attach is ignored */
    assert_int_equal(http_obs_in_flight(&t_obs), 1);
    http_obs_end(&r, &(http_obs_done){NULL, BZ_STR_LIT("GET"), route, variant, status});
    assert_int_equal(http_obs_in_flight(&t_obs), 0);
    assert_null(r.obs);
}

static void *t_thread(void *arg)
{
    (void)arg;
    t_one(t_route, 0, 200); /* another thread: its own shard */
    return NULL;
}

static void observe_recorder_sums_shards_and_renders_its_spec(void **state)
{
    (void)state;
    t_one(t_route, 0, 200);
    t_one(t_route, 0, 200);
    t_one(t_route, 0, 404);
    t_one(t_route, 1, 201);
    t_one(NULL, 0, 404);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, t_thread, NULL), 0);
    pthread_join(th, NULL);
    bz_buf o = BZ_BUF_INIT;
    http_obs_render(&t_obs, &o);
    const char *want[] = {
        "# TYPE t_total counter\n",
        "t_total{route=\"(none)\",method=\"GET\",status=\"404\"} 1\n",
        "t_total{route=\"/a\",method=\"GET\",status=\"200\"} 3\n", /* two shards summed */
        "t_total{route=\"/a\",method=\"GET\",status=\"404\"} 1\n",
        "t_total{route=\"/a\",method=\"POST\",status=\"201\"} 1\n",
        "# TYPE t_seconds histogram\n",
        "t_seconds_count{route=\"/a\",method=\"GET\"} 4\n", /* the statuses summed */
        "t_seconds_count{route=\"/a\",method=\"POST\"} 1\n",
        "t_seconds_count{route=\"(none)\",method=\"GET\"} 1\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(o.data, want[i]))
            fail_msg("missing %s in:\n%s", want[i], o.data);
    /* sorted by key: "(none)" before "/a" */
    assert_true(strstr(o.data, "t_total{route=\"(none)\"") < strstr(o.data, "t_total{route=\"/a\""));
    bz_buf_free(&o);
}

static void observe_status_is_what_the_client_got(void **state)
{
    (void)state;
    http_req r;
    memset(&r, 0, sizeof r);
    assert_int_equal(http_obs_status(&r, 0), 200);
    assert_int_equal(http_obs_status(&r, -EMSGSIZE), 413);
    assert_int_equal(http_obs_status(&r, -EBADMSG), 400);
    assert_int_equal(http_obs_status(&r, -EIO), 500);
    r.status = 201;
    assert_int_equal(http_obs_status(&r, 0), 201);
    assert_int_equal(http_obs_status(&r, -EIO), 500); /* not sent yet: the server answers 500 */
    r.started = true;
    assert_int_equal(http_obs_status(&r, -EIO), 201); /* on the wire already: the connection is cut */
    assert_int_equal(http_obs_method_index(BZ_STR_LIT("DELETE")), 5);
    assert_int_equal(http_obs_method_index(BZ_STR_LIT("BREW")), 7);
}

static int t_handler(http_req *r, void *data)
{
    (void)data;
    r->pattern = "POST /x";
    r->status = 201;
    return 0;
}

static int64_t t_count(http_obs *o)
{
    bz_buf b = BZ_BUF_INIT;
    http_obs_render(o, &b);
    const char *p = strstr(b.data, "t_total{route=\"POST /x\",method=\"POST\",status=\"201\"} ");
    int64_t n = p ? strtoll(p + strlen("t_total{route=\"POST /x\",method=\"POST\",status=\"201\"} "), NULL, 10) : 0;
    bz_buf_free(&b);
    return n;
}

/* A request is counted once however the chain names its recorder: the
 * access log's cfg, an inner http_mw_metrics (ended by the access log
 * outside), both, or http_mw_metrics alone (ended there, without a line). */
static void observe_middleware_counts_each_request_once(void **state)
{
    (void)state;
    static http_obs o = HTTP_OBS_INIT(&t_spec);
    http_handler h = {t_handler, NULL};
    const http_mw chains[][2] = {
        {{http_mw_access_log, &o}, {NULL, NULL}},
        {{http_mw_access_log, NULL}, {http_mw_metrics, &o}},
        {{http_mw_access_log, &o}, {http_mw_metrics, &o}},
        {{http_mw_metrics, &o}, {NULL, NULL}},
    };
    for (int i = 0; i < 4; i++) {
        int n = chains[i][1].wrap ? 2 : 1;
        http_handler c = http_chain(h, chains[i], n);
        http_req r;
        memset(&r, 0, sizeof r);
        r.method = BZ_STR_LIT("POST");
        r.path = BZ_STR_LIT("/x");
        r.start_ns = bz_now_ns();
        assert_int_equal(c.fn(&r, c.data), 0);
        assert_int_equal(t_count(&o), i + 1);
        assert_int_equal(http_obs_in_flight(&o), 0);
        http_chain_free(c);
    }
}

/* ---- the access-log line (http/observe.c's one-pass JSON line) ---- */

static const http_req *t_trace_req;
static const bz_trace *t_trace(void) { return t_trace_req ? &t_trace_req->trace : NULL; }
static const char *t_code(int o, char buf[16])
{
    snprintf(buf, 16, o ? "NOT_\"FOUND" : "OK");
    return buf;
}

/* The line bz__log writes for the fields the access log has (the line
 * before the one-pass writer, kept as the definition). */
static void t_generic_line(const http_req *r, const http_obs_done *d, double ms)
{
    const http_obs_kind *k = d->kind;
    char buf[16];
    bz_field outcome = k->outcome_name ? BZ_F_STR(k->outcome_key, k->outcome_name(d->outcome, buf))
                                       : BZ_F_INT(k->outcome_key, d->outcome);
    bz_log_info(k->done, BZ_F_STRN("method", d->method.p, d->method.n), BZ_F_STR("route", d->route ? d->route : ""),
                BZ_F_STRN("path", r->path.p, r->path.n), outcome, BZ_F_INT("bytes", r->bytes_out),
                BZ_F_DBL("duration_ms", ms), BZ_F_STR("request_id", r->request_id), BZ_F_STR("peer", r->peer),
                BZ_F_STR("parent_id", r->trace.parent_id));
}

/* The line without its time stamp and duration (the two the test cannot
 * choose): {"ts":"…" and "duration_ms":… emptied. */
static void t_blank_clocks(char *line)
{
    assert_memory_equal(line, "{\"ts\":\"", 7);
    assert_int_equal(line[7 + 27], '"');
    memset(line + 7, 'T', 27);
    char *d = strstr(line, ",\"duration_ms\":");
    assert_non_null(d);
    d += strlen(",\"duration_ms\":");
    char *e = strchr(d, ',');
    assert_non_null(e);
    memmove(d, e, strlen(e) + 1);
}

/* Reads what the log wrote into fd: n lines, each NUL-terminated in out. */
static void t_read_lines(int fd, char *out, size_t cap, char **lines, int n)
{
    size_t len = 0;
    for (;;) {
        ssize_t k = read(fd, out + len, cap - 1 - len);
        if (k <= 0)
            break;
        len += (size_t)k;
    }
    out[len] = '\0';
    char *p = out;
    for (int i = 0; i < n; i++) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl);
        *nl = '\0';
        lines[i] = p;
        p = nl + 1;
    }
    assert_int_equal(*p, '\0'); /* exactly n lines */
}

/* The access-log line http_obs_end writes in one pass is the line the
 * generic logger writes for the same fields, byte for byte but for the
 * clocks: plain requests, hostile bytes in every field that can carry
 * them (quotes, backslashes, control bytes, NUL, DEL, bytes >= 0x80, at
 * lengths around the escaper's block sizes), a caller's trace, a string
 * outcome (gRPC's), batched and unbatched, and a registered secret. */
static void observe_access_line_is_the_generic_line(void **state)
{
    (void)state;
    char hostile[300];
    size_t hn = 0;
    for (int c = 0; c < 256; c++)
        hostile[hn++] = (char)c;
    memcpy(hostile + hn, "/tail\"\\", 7);
    hn += 7;
    static const http_obs_kind grpc_kind = {"grpc started", "grpc", "code", t_code};
    struct {
        const char *method, *route, *path, *rid, *peer, *traceparent;
        size_t pathn;
        const http_obs_kind *kind;
        int outcome;
        int64_t bytes;
        bool batch, secret;
    } cases[] = {
        {"GET", "GET /healthz", "/healthz", "0123456789abcdef0123456789abcdef", "127.0.0.1:5555", NULL, 0,
         &http_obs_http, 200, 2, false, false},
        {"GET", "GET /healthz", "/healthz", "0123456789abcdef0123456789abcdef", "127.0.0.1:5555", NULL, 0,
         &http_obs_http, 200, 2, true, false},
        {"POST", NULL, "/v1/x", "a", "[::1]:1", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0,
         &http_obs_http, 404, 0, true, false},
        {"BR\"EW", "GET /v1/items/{id}", NULL, "id\"with\\quote\x01", "p\"eer", NULL, 0, &http_obs_http, -7,
         -123456789012LL, false, false},
        {"", "", "", "", "", NULL, 0, &http_obs_http, 0, 0, true, false},
        {"M", "r", NULL, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde", "1.2.3.4:65535", NULL, 0,
         &grpc_kind, 1, 9, true, false},
        {"/bazaar.v1.ItemService/GetItem", "/bazaar.v1.ItemService/GetItem", "/p", "abc", "x", NULL, 0, &grpc_kind,
         0, 1, false, false},
        {"GET", "GET /{path...}", "/s3cr3t-word/x", "rid", "peer", NULL, 0, &http_obs_http, 200, 5, true, true},
        {"GET", "GET /{path...}", "/s3cr3t-word/x", "rid", "peer", NULL, 0, &http_obs_http, 200, 5, false, true},
    };
    bz_log_set_trace_source(t_trace);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (size_t plen = 0; plen <= (cases[ci].path ? 0 : hn); plen += (cases[ci].path ? 1 : 1 + plen / 8)) {
            http_req r;
            memset(&r, 0, sizeof r);
            r.method = bz_str_c(cases[ci].method);
            r.path = cases[ci].path ? bz_str_c(cases[ci].path) : bz_str_make(hostile + hn - plen, plen);
            snprintf(r.request_id, sizeof r.request_id, "%s", cases[ci].rid);
            snprintf(r.peer, sizeof r.peer, "%s", cases[ci].peer);
            bz_str tp = cases[ci].traceparent ? bz_str_c(cases[ci].traceparent) : BZ_STR_NULL;
            bz_trace_start(&r.trace, tp, BZ_STR_NULL);
            r.bytes_out = cases[ci].bytes;
            r.start_ns = bz_now_ns();
            if (cases[ci].secret)
                bz_log_secret("s3cr3t-word");
            http_obs_done d = {cases[ci].kind, r.method, cases[ci].route, 0, cases[ci].outcome};
            t_trace_req = &r;
            int fds[2];
            assert_int_equal(pipe(fds), 0);
            bz_log_set_fd(fds[1]);
            bz_log_setup(BZ_LOG_INFO, BZ_LOG_JSON);
            bz_log_batch(cases[ci].batch);
            http_obs_end(&r, &d);
            t_generic_line(&r, &d, 0.5);
            bz_log_batch(false);
            bz_log_set_fd(-1);
            close(fds[1]);
            static char out[16384];
            char *lines[2];
            t_read_lines(fds[0], out, sizeof out, lines, 2);
            close(fds[0]);
            t_blank_clocks(lines[0]);
            t_blank_clocks(lines[1]);
            if (strcmp(lines[0], lines[1]))
                fail_msg("case %zu, path length %zu:\n one pass: %s\n generic:  %s", ci, plen, lines[0], lines[1]);
            /* and what it holds, said plainly once */
            if (ci == 2) {
                char want[512];
                snprintf(want, sizeof want,
                         "\"level\":\"info\",\"msg\":\"request\",\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\","
                         "\"span_id\":\"%s\",\"method\":\"POST\",\"route\":\"\",\"path\":\"/v1/x\",\"status\":404,"
                         "\"bytes\":0,\"duration_ms\":,\"request_id\":\"a\",\"peer\":\"[::1]:1\","
                         "\"parent_id\":\"00f067aa0ba902b7\"}",
                         r.trace.span_id);
                assert_string_equal(lines[0] + 7 + 27 + 2, want);
            }
            if (ci == 3)
                assert_non_null(strstr(lines[0], ",\"method\":\"BR\\\"EW\",\"route\":\"GET /v1/items/{id}\","));
            if (ci == 3 && plen == hn)
                assert_non_null(strstr(lines[0], "\"path\":\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006"
                                                 "\\u0007\\u0008\\t\\n\\u000b\\u000c\\r\\u000e"));
            if (cases[ci].secret)
                assert_non_null(strstr(lines[0], "\"path\":\"/***/x\""));
            t_trace_req = NULL;
        }
    bz_log_set_trace_source(NULL);
    bz_log_setup(BZ_LOG_INFO, BZ_LOG_TEXT);
}

/* In the text format the access line is the generic one (key=value). */
static void observe_access_line_in_text(void **state)
{
    (void)state;
    http_req r;
    memset(&r, 0, sizeof r);
    r.method = BZ_STR_LIT("GET");
    r.path = BZ_STR_LIT("/a b");
    strcpy(r.request_id, "rid");
    strcpy(r.peer, "127.0.0.1:1");
    r.start_ns = bz_now_ns();
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    bz_log_set_fd(fds[1]);
    bz_log_setup(BZ_LOG_INFO, BZ_LOG_TEXT);
    http_obs_end(&r, &(http_obs_done){&http_obs_http, r.method, "GET /{x}", 0, 200});
    bz_log_set_fd(-1);
    close(fds[1]);
    static char out[4096];
    char *lines[1];
    t_read_lines(fds[0], out, sizeof out, lines, 1);
    close(fds[0]);
    assert_non_null(strstr(lines[0], " INFO  request method=GET route=\"GET /{x}\" path=\"/a b\" status=200 bytes=0 "
                                     "duration_ms="));
    assert_non_null(strstr(lines[0], " request_id=rid peer=127.0.0.1:1 parent_id=\"\""));
}

/* Request header lookups: case-insensitive for letters only (two token
 * characters 0x20 apart, such as '^' and '~', are different), exact in
 * length, the first of duplicates, absent as a NULL slice. */
static void header_lookup_is_exact_but_for_letter_case(void **state)
{
    (void)state;
    http_header h[] = {
        {BZ_STR_LIT("Host"), BZ_STR_LIT("h")},
        {BZ_STR_LIT("x-request-ie"), BZ_STR_LIT("not it")},
        {BZ_STR_LIT("X-REQUEST-ID"), BZ_STR_LIT("first")},
        {BZ_STR_LIT("x-request-id"), BZ_STR_LIT("second")},
        {BZ_STR_LIT("a^b"), BZ_STR_LIT("caret")},
        {BZ_STR_LIT("^x"), BZ_STR_LIT("caret first")},
        {BZ_STR_LIT("traceparent1"), BZ_STR_LIT("longer")},
    };
    http_req r;
    memset(&r, 0, sizeof r);
    r.headers = h;
    r.nheaders = (int)(sizeof h / sizeof h[0]);
    assert_true(bz_str_eq_c(http_header_get(&r, "X-Request-Id"), "first"));
    assert_true(bz_str_eq_c(http_header_get(&r, "x-request-iD"), "first"));
    assert_true(bz_str_eq_c(http_header_get(&r, "X-Request-IE"), "not it"));
    assert_true(bz_str_eq_c(http_header_get(&r, "HOST"), "h"));
    assert_true(bz_str_eq_c(http_header_get(&r, "A^B"), "caret"));
    assert_null(http_header_get(&r, "a~b").p); /* '~' is '^' + 0x20, not its lower case */
    assert_null(http_header_get(&r, "~x").p);
    assert_null(http_header_get(&r, "traceparent").p); /* a longer name is another name */
    assert_null(http_header_get(&r, "Hos").p);
    assert_null(http_header_get(&r, "").p);
    r.nheaders = 0;
    assert_null(http_header_get(&r, "Host").p);
}

/* Response header fields are (name, value) pairs copied into the arena in
 * the order added: a caller's buffer may change after the call, lookups are
 * case-insensitive, HTTP/2 gets lower-case names (what it sends), and a
 * cleared set starts again. */
static void response_headers_are_pairs(void **state)
{
    (void)state;
    for (int h2 = 0; h2 < 2; h2++) {
        http_req r;
        memset(&r, 0, sizeof r);
        bz_arena a;
        bz_arena_init(&a, 0);
        r.arena = &a;
        r.h2 = h2;
        char v[16];
        for (int i = 0; i < 20; i++) { /* past the first capacity: the vector grows */
            snprintf(v, sizeof v, "v%d", i);
            http_add_header(&r, i == 3 ? "Content-Type" : "X-Many", v);
        }
        strcpy(v, "changed");
        assert_int_equal(r.nresp_headers, 20);
        assert_string_equal(r.resp_headers[0].value.p, "v0");
        assert_string_equal(r.resp_headers[19].value.p, "v19");
        assert_string_equal(r.resp_headers[3].name.p, h2 ? "content-type" : "Content-Type");
        assert_true(bz_str_eq_c(http_resp_header_get(&r, "content-TYPE"), "v3"));
        assert_true(bz_str_eq_c(http_resp_header_get(&r, "x-many"), "v0")); /* the first one */
        assert_null(http_resp_header_get(&r, "X-Missing").p);
        http_add_header_n(&r, "Location", "/abcdef", 3);
        assert_true(bz_str_eq_c(http_resp_header_get(&r, "Location"), "/ab"));
        assert_int_equal(r.resp_headers[20].value.p[3], '\0');
        http_clear_headers(&r);
        assert_int_equal(r.nresp_headers, 0);
        assert_null(http_resp_header_get(&r, "Content-Type").p);
        http_add_header(&r, "Vary", "Origin");
        assert_int_equal(r.nresp_headers, 1);
        bz_arena_free(&a);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parser_accepts_valid_requests),
        cmocka_unit_test(response_headers_are_pairs),
        cmocka_unit_test(header_lookup_is_exact_but_for_letter_case),
        cmocka_unit_test(parser_waits_for_more),
        cmocka_unit_test(parser_rejects_malformed_and_smuggling),
        cmocka_unit_test(parser_checks_every_byte_of_targets_and_values),
        cmocka_unit_test(parser_resumes_byte_by_byte),
        cmocka_unit_test(parser_scans_linearly),
        cmocka_unit_test(parser_limits),
        cmocka_unit_test(chunked_decoding),
        cmocka_unit_test(clean_paths),
        cmocka_unit_test(clean_check_and_method_index),
        cmocka_unit_test(router_conflicts_like_go),
        cmocka_unit_test(router_picks_most_specific),
        cmocka_unit_test(router_index_by_segment_byte_changes_no_answer),
        cmocka_unit_test(path_values_are_decoded),
        cmocka_unit_test(observe_recorder_sums_shards_and_renders_its_spec),
        cmocka_unit_test(observe_status_is_what_the_client_got),
        cmocka_unit_test(observe_middleware_counts_each_request_once),
        cmocka_unit_test(observe_access_line_is_the_generic_line),
        cmocka_unit_test(observe_access_line_in_text),
    };
    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}

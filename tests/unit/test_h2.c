/* tests/unit/test_h2.c — HTTP/2 internals: preface detection, the flood
 * guard (token buckets, CONTINUATION and size caps, frame headers split
 * across reads), Upgrade detection, and whole connections served in
 * process over a socketpair (a request answered; nghttp2 state and the
 * connection freed after the peer leaves). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "http/h2-private.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- frames by hand ---- */

static size_t frame(uint8_t *out, uint32_t len, uint8_t type, uint8_t flags, uint32_t sid, const void *payload)
{
    out[0] = (uint8_t)(len >> 16);
    out[1] = (uint8_t)(len >> 8);
    out[2] = (uint8_t)len;
    out[3] = type;
    out[4] = flags;
    out[5] = (uint8_t)(sid >> 24);
    out[6] = (uint8_t)(sid >> 16);
    out[7] = (uint8_t)(sid >> 8);
    out[8] = (uint8_t)sid;
    if (len && payload)
        memcpy(out + 9, payload, len);
    else if (len)
        memset(out + 9, 0, len);
    return 9 + len;
}

static void preface_detection(void **state)
{
    const char *p = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    assert_int_equal(http__h2_preface(p, 24), 1);
    assert_int_equal(http__h2_preface(p, 10), 0);
    assert_int_equal(http__h2_preface(p, 0), 0);
    assert_int_equal(http__h2_preface("PRI * HTTP/1.1", 14), -1);
    assert_int_equal(http__h2_preface("GET / HTTP/1.1\r\n", 16), -1);
}

static void bucket_allows_burst_then_rate(void **state)
{
    http__h2_bucket b = {0, BZ_NS_PER_S / 10, 5}; /* 5 at once, then 10/s */
    int64_t t = 1000 * BZ_NS_PER_S;
    for (int i = 0; i < 5; i++)
        assert_true(http__h2_bucket_take(&b, t));
    assert_false(http__h2_bucket_take(&b, t));
    assert_true(http__h2_bucket_take(&b, t + BZ_NS_PER_S / 10));  /* one more after 100 ms */
    assert_false(http__h2_bucket_take(&b, t + BZ_NS_PER_S / 10));
    assert_true(http__h2_bucket_take(&b, t + 10 * BZ_NS_PER_S)); /* refilled */
}

static uint32_t feed_split(http__h2_guard *g, const uint8_t *p, size_t n, size_t step)
{
    for (size_t i = 0; i < n; i += step) {
        uint32_t e = http__h2_guard_feed(g, p + i, n - i < step ? n - i : step, BZ_NS_PER_S);
        if (e)
            return e;
    }
    return 0;
}

static void guard_counts_continuations_whatever_the_split(void **state)
{
    static uint8_t buf[1 << 16];
    for (size_t step = 1; step <= 64; step = step * 3 + 1) {
        size_t n = 0;
        memcpy(buf, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
        n = 24;
        n += frame(buf + n, 0, 4, 0, 0, NULL);             /* SETTINGS */
        n += frame(buf + n, 5, 1, 0x1, 1, "abcde");        /* HEADERS without END_HEADERS */
        for (int i = 0; i < HTTP_H2_MAX_CONTINUATIONS; i++)
            n += frame(buf + n, 3, 9, 0, 1, "xyz");        /* CONTINUATION */
        http__h2_guard g;
        http__h2_guard_init(&g, 4096, 24);
        assert_int_equal(feed_split(&g, buf, n, step), 0);
        size_t m = frame(buf + n, 3, 9, 0, 1, "xyz");      /* one too many */
        assert_int_equal(feed_split(&g, buf + n, m, step), 0xb);
        assert_non_null(strstr(g.why, "CONTINUATION"));
        /* ... while a block that ends in time resets the count */
        http__h2_guard_init(&g, 4096, 24);
        n = 24;
        for (int k = 0; k < 3; k++) {
            n += frame(buf + n, 5, 1, 0x1, 1 + 2 * (uint32_t)k, "abcde");
            for (int i = 0; i < HTTP_H2_MAX_CONTINUATIONS - 1; i++)
                n += frame(buf + n, 1, 9, 0, 1 + 2 * (uint32_t)k, "x");
            n += frame(buf + n, 1, 9, 0x4, 1 + 2 * (uint32_t)k, "x");
        }
        assert_int_equal(feed_split(&g, buf, n, step), 0);
    }
}

static void guard_caps_header_block_size(void **state)
{
    static uint8_t buf[40000];
    http__h2_guard g;
    http__h2_guard_init(&g, 4096, 0); /* cap: 2 * 4096 + 16384 */
    size_t n = frame(buf, 16000, 1, 0, 1, NULL);
    n += frame(buf + n, 16000, 9, 0, 1, NULL);
    assert_int_equal(http__h2_guard_feed(&g, buf, n, 0), 0xb);
    assert_non_null(strstr(g.why, "too large"));
}

static void guard_rates_rst_ping_settings(void **state)
{
    static uint8_t buf[1 << 16];
    struct { uint8_t type, flags; uint32_t len; int burst_max; const char *why; } cases[] = {
        {3, 0, 4, 2000, "reset"},
        {6, 0, 8, 2000, "PING"},
        {4, 0, 0, 2000, "SETTINGS"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        http__h2_guard g;
        http__h2_guard_init(&g, 4096, 0);
        uint32_t e = 0;
        int i;
        for (i = 0; i < cases[c].burst_max && !e; i++) {
            size_t n = frame(buf, cases[c].len, cases[c].type, cases[c].flags, cases[c].type == 3 ? 1 : 0, NULL);
            e = http__h2_guard_feed(&g, buf, n, 5 * BZ_NS_PER_S);
        }
        assert_int_equal(e, 0xb);
        assert_true(i > 8); /* a burst is allowed first */
        assert_non_null(strstr(g.why, cases[c].why));
    }
    /* ACKs cost nothing. */
    http__h2_guard g;
    http__h2_guard_init(&g, 4096, 0);
    for (int i = 0; i < 5000; i++) {
        size_t n = frame(buf, 8, 6, 0x1, 0, NULL);
        n += frame(buf + n, 0, 4, 0x1, 0, NULL);
        assert_int_equal(http__h2_guard_feed(&g, buf, n, 0), 0);
    }
    /* A PING after response data (h2.c sets ping_earned) is a gRPC client's
     * bandwidth probe: never counted; one earned PING lets one through. */
    http__h2_guard_init(&g, 4096, 0);
    for (int i = 0; i < 5000; i++) {
        g.ping_earned = true;
        size_t n = frame(buf, 8, 6, 0, 0, NULL);
        assert_int_equal(http__h2_guard_feed(&g, buf, n, 0), 0);
        assert_false(g.ping_earned);
    }
    uint32_t e = 0;
    for (int i = 0; i < 2000 && !e; i++) {
        size_t n = frame(buf, 8, 6, 0, 0, NULL);
        e = http__h2_guard_feed(&g, buf, n, 0);
    }
    assert_int_equal(e, 0xb); /* unearned ones still trip it */
}

/* Padding is not progress: DATA whose payload is all padding counts as
 * empty, whatever the split (the pad length byte may arrive alone);
 * DATA with one byte of data does not. */
static void guard_counts_padding_only_data_as_empty(void **state)
{
    static uint8_t buf[1 << 16];
    for (size_t step = 1; step <= 11; step += 5) {
        http__h2_guard g;
        http__h2_guard_init(&g, 4096, 0);
        uint32_t e = 0;
        int i;
        for (i = 0; i < 3000 && !e; i++) {
            uint8_t pad[6] = {5, 0, 0, 0, 0, 0}; /* pad length 5, no data */
            size_t n = frame(buf, 6, 0, 0x8, 1, pad);
            e = feed_split(&g, buf, n, step);
        }
        assert_int_equal(e, 0xb);
        assert_true(i > 900);
        assert_non_null(strstr(g.why, "padding"));
        /* one data byte after the padding length: progress */
        http__h2_guard_init(&g, 4096, 0);
        for (i = 0; i < 5000; i++) {
            uint8_t pd[2] = {0, 'x'};
            size_t n = frame(buf, 2, 0, 0x8, 1, pd);
            assert_int_equal(feed_split(&g, buf, n, step), 0);
        }
    }
}

/* WINDOW_UPDATEs are free only as answers to DATA we sent. */
static void guard_counts_window_updates_beyond_our_data(void **state)
{
    static uint8_t buf[64];
    uint8_t inc[4] = {0, 0, 0, 1};
    http__h2_guard g;
    http__h2_guard_init(&g, 4096, 0);
    uint32_t e = 0;
    int i;
    for (i = 0; i < 5000 && !e; i++)
        e = http__h2_guard_feed(&g, buf, frame(buf, 4, 8, 0, 1, inc), 0);
    assert_int_equal(e, 0xb);
    assert_true(i > 900 && i < 1100);
    http__h2_guard_init(&g, 4096, 0);
    for (i = 0; i < 20000; i++) {
        http__h2_guard_sent_data(&g); /* one DATA frame out, two updates back */
        assert_int_equal(http__h2_guard_feed(&g, buf, frame(buf, 4, 8, 0, 1, inc), 0), 0);
        assert_int_equal(http__h2_guard_feed(&g, buf, frame(buf, 4, 8, 0, 0, inc), 0), 0);
    }
}

/* Decoded header bytes: a burst of full header lists, then a rate. */
static void guard_counts_decoded_header_bytes(void **state)
{
    http__h2_guard g;
    http__h2_guard_init(&g, 16384, 0);
    int64_t t = 10 * BZ_NS_PER_S;
    int i;
    for (i = 0; i < 1000; i++)
        if (!http__h2_guard_decoded(&g, 16384, t))
            break;
    assert_true(i >= 255 && i < 300); /* 256 x --max-header-bytes at once */
    assert_non_null(strstr(g.why, "HPACK"));
    /* 100 ms later, about a tenth of 1,024 more */
    for (i = 0; i < 2000; i++)
        if (!http__h2_guard_decoded(&g, 16384, t + BZ_NS_PER_S / 10))
            break;
    assert_true(i > 90 && i < 115);
}

static void upgrade_detection(void **state)
{
    static http_header hdrs[HTTP_MAX_HEADERS];
    struct { const char *req; bool want; } cases[] = {
        {"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade,http2-settings\r\nUpgrade: websocket, h2c\r\nHTTP2-Settings: \r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2\r\nHTTP2-Settings: AAMAAABk\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: A\r\nHTTP2-Settings: B\r\n\r\n", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_req r;
        memset(&r, 0, sizeof r);
        int st = 0;
        assert_true(http__parse_head(cases[i].req, strlen(cases[i].req), 16384, &r, hdrs, HTTP_MAX_HEADERS, &st) > 0);
        assert_int_equal(http__h2_wants_upgrade(&r), cases[i].want);
    }
}

/* ---- whole connections in process ---- */

static int hello(http_req *r, void *d)
{
    char b[64];
    int n = snprintf(b, sizeof b, "%.*s h2=%d", (int)r->path.n, r->path.p, r->h2);
    return http_send(r, 200, "text/plain", b, (size_t)n);
}

static http_server *start(void)
{
    http_server_opts o = {.addr = "127.0.0.1:0", .read_header_timeout_ns = BZ_NS_PER_S,
                          .read_timeout_ns = BZ_NS_PER_S, .write_timeout_ns = BZ_NS_PER_S,
                          .idle_timeout_ns = 5 * BZ_NS_PER_S, .shutdown_grace_ns = BZ_NS_PER_S,
                          .max_header_bytes = 4096, .max_body_bytes = 65536};
    int e;
    http_server *s = http_server_new(&o, (http_handler){hello, NULL}, &e);
    assert_non_null(s);
    return s;
}

static int64_t conns_of(http_server *s)
{
    pthread_mutex_lock(&s->conns.lk);
    int64_t n = s->conns.count;
    pthread_mutex_unlock(&s->conns.lk);
    return n;
}

static void serve_one_request_main(void *arg)
{
    http_server *s = start();
    int64_t heap0 = http__h2_heap_bytes();
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    http__server_adopt(s, sv[0]);
    rt_io io;
    assert_int_equal(rt_io_open(&io, sv[1]), 0);
    uint8_t req[256];
    size_t n = 0;
    memcpy(req, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
    n = 24;
    n += frame(req + n, 0, 4, 0, 0, NULL);
    /* HPACK: :method GET (idx 2), :scheme http (6), :path "/hi" literal, :authority x (literal, idx 1 name) */
    uint8_t hb[] = {0x82, 0x86, 0x04, 0x03, '/', 'h', 'i', 0x01, 0x01, 'x'};
    n += frame(req + n, sizeof hb, 1, 0x5, 1, hb);
    assert_int_equal(rt_write_all(&io, req, n, NULL, bz_now_ns() + BZ_NS_PER_S), 0);
    /* Read frames until DATA with END_STREAM on stream 1. */
    static uint8_t in[65536];
    size_t have = 0;
    bool got = false;
    char body[64] = "";
    for (int i = 0; i < 100 && !got; i++) {
        ssize_t k = rt_read(&io, in + have, sizeof in - have, NULL, bz_now_ns() + BZ_NS_PER_S);
        assert_true(k > 0);
        have += (size_t)k;
        size_t off = 0;
        while (have - off >= 9) {
            uint32_t len = (uint32_t)in[off] << 16 | (uint32_t)in[off + 1] << 8 | in[off + 2];
            if (have - off < 9 + len)
                break;
            if (in[off + 3] == 0 && (in[off + 4] & 1)) {
                memcpy(body, in + off + 9, len < sizeof body - 1 ? len : sizeof body - 1);
                got = true;
            }
            off += 9 + len;
        }
    }
    assert_true(got);
    assert_string_equal(body, "/hi h2=1");
    assert_true(http__h2_heap_bytes() > heap0); /* the session is alive */
    assert_int_equal(conns_of(s), 1);
    /* The peer leaves: the connection and its session are freed. */
    rt_io_close(&io);
    for (int i = 0; i < 1000 && conns_of(s) > 0; i++)
        rt_sleep(NULL, BZ_NS_PER_MS);
    assert_int_equal(conns_of(s), 0);
    assert_int_equal(http__h2_heap_bytes(), heap0);
    http_server_free(s);
}

static void serves_a_request_and_frees_on_close(void **state)
{
    rt_options o = {.threads = 1};
    assert_int_equal(rt_run(&o, serve_one_request_main, NULL), 0);
}

static void garbage_main(void *arg)
{
    http_server *s = start();
    int64_t heap0 = http__h2_heap_bytes();
    uint64_t x = 88172645463325252ull;
    for (int round = 0; round < 50; round++) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
        http__server_adopt(s, sv[0]);
        rt_io io;
        assert_int_equal(rt_io_open(&io, sv[1]), 0);
        uint8_t buf[4096];
        memcpy(buf, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
        size_t n = 24 + frame(buf + 24, 0, 4, 0, 0, NULL);
        for (size_t i = n; i < sizeof buf; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[i] = (uint8_t)x;
        }
        rt_write_all(&io, buf, sizeof buf, NULL, bz_now_ns() + BZ_NS_PER_S);
        char tmp[4096];
        for (int i = 0; i < 100; i++)
            if (rt_read(&io, tmp, sizeof tmp, NULL, bz_now_ns() + 2 * BZ_NS_PER_S) <= 0)
                break;
        rt_io_close(&io);
    }
    for (int i = 0; i < 3000 && conns_of(s) > 0; i++)
        rt_sleep(NULL, BZ_NS_PER_MS);
    assert_int_equal(conns_of(s), 0);
    assert_int_equal(http__h2_heap_bytes(), heap0);
    http_server_free(s);
}

static void garbage_closes_cleanly(void **state)
{
    rt_options o = {.threads = 1};
    assert_int_equal(rt_run(&o, garbage_main, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(preface_detection),
        cmocka_unit_test(bucket_allows_burst_then_rate),
        cmocka_unit_test(guard_counts_continuations_whatever_the_split),
        cmocka_unit_test(guard_caps_header_block_size),
        cmocka_unit_test(guard_rates_rst_ping_settings),
        cmocka_unit_test(guard_counts_padding_only_data_as_empty),
        cmocka_unit_test(guard_counts_window_updates_beyond_our_data),
        cmocka_unit_test(guard_counts_decoded_header_bytes),
        cmocka_unit_test(upgrade_detection),
        cmocka_unit_test(serves_a_request_and_frees_on_close),
        cmocka_unit_test(garbage_closes_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

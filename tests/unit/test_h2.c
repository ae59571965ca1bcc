/* tests/unit/test_h2.c — HTTP/2 internals: preface detection, the flood
 * guard (token buckets, CONTINUATION and size caps, frame headers split
 * across reads), Upgrade detection, whole connections served in process
 * over a socketpair (a request answered; the connection's state freed
 * after the peer leaves), and the frame layer's answers to every kind of
 * protocol error (RFC 9113: connection errors → GOAWAY with their code,
 * stream errors → RST_STREAM, the connection going on). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "http/h2-private.h"
#include "http/hpack.h"

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
    rt_io io = {0}; /* (rt_io_open leaves the TLS state alone) */
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
        rt_io io = {0}; /* (rt_io_open leaves the TLS state alone) */
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


/* ---- the frame layer's errors (RFC 9113) ---- */

typedef struct {
    const char *n, *v;
} kv;

/* Literal fields (no indexing, no Huffman) into out. */
static size_t fields(uint8_t *out, const kv *f)
{
    bz_buf b = BZ_BUF_INIT;
    for (; f->n; f++)
        http__hpack_put_field(&b, f->n, strlen(f->n), f->v, strlen(f->v), false);
    memcpy(out, b.data, b.len);
    size_t n = b.len;
    bz_buf_free(&b);
    return n;
}

#define REQ(path) {":method", "GET"}, {":scheme", "http"}, {":path", path}, {":authority", "x"}

static size_t get(uint8_t *out, uint32_t sid, const char *path)
{
    uint8_t hb[256];
    kv f[] = {REQ(path), {NULL, NULL}};
    size_t n = fields(hb, f);
    return frame(out, (uint32_t)n, 1, 0x5, sid, hb);
}

typedef struct {
    int64_t goaway;      /* its code, -1 if none */
    uint32_t rst_sid, rst_code;
    int status[16];      /* by stream id (odd ids < 32): the response's :status */
    bool ping_ack, settings_ack;
    uint8_t ping[8];
    bool eof;
} seen;

static int status_of(void *arg, const uint8_t *name, size_t nl, const uint8_t *value, size_t vl, unsigned flags)
{
    int *st = arg;
    if (nl == 7 && !memcmp(name, ":status", 7) && vl == 3)
        *st = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
    return 0;
}

/* Reads frames until quiet for 200 ms, EOF, or stream `until` answered. */
static void read_frames(rt_io *io, seen *r, http__hpack_dec *dec, uint32_t until)
{
    static uint8_t in[1 << 17];
    size_t have = 0;
    for (int i = 0; i < 200; i++) {
        ssize_t k = rt_read(io, in + have, sizeof in - have, NULL, bz_now_ns() + 200 * BZ_NS_PER_MS);
        if (k == 0 || k == -ECONNRESET || k == -EPIPE) {
            r->eof = true;
            return;
        }
        if (k < 0)
            return; /* quiet */
        have += (size_t)k;
        size_t off = 0;
        while (have - off >= 9) {
            uint32_t len = (uint32_t)in[off] << 16 | (uint32_t)in[off + 1] << 8 | in[off + 2];
            if (have - off < 9 + len)
                break;
            uint8_t type = in[off + 3], fl = in[off + 4];
            uint32_t sid = ((uint32_t)in[off + 5] << 24 | (uint32_t)in[off + 6] << 16 | (uint32_t)in[off + 7] << 8 |
                            in[off + 8]) & 0x7fffffffu;
            const uint8_t *p = in + off + 9;
            if (type == 7 && len >= 8 && r->goaway < 0)
                r->goaway = (int64_t)((uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7]);
            if (type == 3 && len == 4 && !r->rst_sid) {
                r->rst_sid = sid;
                r->rst_code = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
            }
            if (type == 6 && (fl & 1) && len == 8) {
                r->ping_ack = true;
                memcpy(r->ping, p, 8);
            }
            if (type == 4 && (fl & 1))
                r->settings_ack = true;
            if (type == 1 && sid < 32) {
                int st = 0;
                assert_int_equal(http__hpack_decode(dec, p, len, status_of, &st), 0);
                r->status[sid / 2] = st;
            }
            off += 9 + len;
            if (until && (type == 0 || type == 1) && (fl & 1) && sid == until) {
                memmove(in, in + off, have - off);
                return;
            }
        }
        memmove(in, in + off, have - off);
        have -= off;
    }
}

/* One connection: the preface, an empty SETTINGS, then p[0..n); what came
 * back until quiet.  With follow, a GET on that stream afterwards too (the
 * connection must still serve). */
static seen run_bytes(http_server *s, const uint8_t *p, size_t n, uint32_t follow)
{
    seen r;
    memset(&r, 0, sizeof r);
    r.goaway = -1;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    http__server_adopt(s, sv[0]);
    rt_io io = {0}; /* (rt_io_open leaves the TLS state alone) */
    assert_int_equal(rt_io_open(&io, sv[1]), 0);
    static uint8_t out[1 << 16];
    memcpy(out, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
    size_t k = 24 + frame(out + 24, 0, 4, 0, 0, NULL);
    memcpy(out + k, p, n);
    /* (the server may close before it has read everything) */
    rt_write_all(&io, out, k + n, NULL, bz_now_ns() + BZ_NS_PER_S);
    http__hpack_dec dec;
    http__hpack_dec_init(&dec, 4096);
    read_frames(&io, &r, &dec, 0);
    if (follow && !r.eof) {
        size_t m = get(out, follow, "/after");
        assert_int_equal(rt_write_all(&io, out, m, NULL, bz_now_ns() + BZ_NS_PER_S), 0);
        read_frames(&io, &r, &dec, follow);
    }
    http__hpack_dec_free(&dec);
    rt_io_close(&io);
    return r;
}

enum { PROTOCOL = 1, FLOW = 3, STREAM_CLOSED = 5, FRAME_SIZE = 6, COMPRESSION = 9 };

static void expect_goaway(http_server *s, const char *what, const uint8_t *p, size_t n, uint32_t code)
{
    seen r = run_bytes(s, p, n, 0);
    if (r.goaway != (int64_t)code)
        fail_msg("%s: GOAWAY %lld, want %u", what, (long long)r.goaway, code);
}

/* A stream error: RST_STREAM(code) on sid, and the connection serves
 * stream sid + 2 afterwards. */
static void expect_rst(http_server *s, const char *what, const uint8_t *p, size_t n, uint32_t sid, uint32_t code)
{
    seen r = run_bytes(s, p, n, sid + 2);
    if (r.rst_sid != sid || r.rst_code != code || r.goaway >= 0 || r.status[(sid + 2) / 2] != 200)
        fail_msg("%s: RST_STREAM(%u, %u) GOAWAY %lld, then %d; want RST_STREAM(%u, %u) then 200", what, r.rst_sid,
                 r.rst_code, (long long)r.goaway, r.status[(sid + 2) / 2], sid, code);
}

static void frame_errors_main(void *arg)
{
    http_server *s = start();
    static uint8_t b[1 << 16];
    size_t n;
    uint8_t z[16] = {0};

    /* connection errors */
    expect_goaway(s, "DATA on stream 0", b, frame(b, 2, 0, 0, 0, "hi"), PROTOCOL);
    expect_goaway(s, "DATA on an idle stream", b, frame(b, 2, 0, 0, 5, "hi"), PROTOCOL);
    expect_goaway(s, "HEADERS on stream 0", b, frame(b, 1, 1, 0x5, 0, "\x82"), PROTOCOL);
    expect_goaway(s, "HEADERS on an even stream", b, frame(b, 1, 1, 0x5, 2, "\x82"), PROTOCOL);
    expect_goaway(s, "frame over 16384", b, frame(b, 16385, 0, 0, 1, NULL), FRAME_SIZE);
    expect_goaway(s, "PING of 7 bytes", b, frame(b, 7, 6, 0, 0, z), FRAME_SIZE);
    expect_goaway(s, "PING on a stream", b, frame(b, 8, 6, 0, 1, z), PROTOCOL);
    expect_goaway(s, "SETTINGS of 5 bytes", b, frame(b, 5, 4, 0, 0, z), FRAME_SIZE);
    expect_goaway(s, "SETTINGS ACK with a payload", b, frame(b, 6, 4, 1, 0, z), FRAME_SIZE);
    expect_goaway(s, "SETTINGS on a stream", b, frame(b, 0, 4, 0, 1, NULL), PROTOCOL);
    expect_goaway(s, "ENABLE_PUSH 2", b, frame(b, 6, 4, 0, 0, "\x00\x02\x00\x00\x00\x02"), PROTOCOL);
    expect_goaway(s, "INITIAL_WINDOW_SIZE 2^31", b, frame(b, 6, 4, 0, 0, "\x00\x04\x80\x00\x00\x00"), FLOW);
    expect_goaway(s, "MAX_FRAME_SIZE 100", b, frame(b, 6, 4, 0, 0, "\x00\x05\x00\x00\x00\x64"), PROTOCOL);
    expect_goaway(s, "WINDOW_UPDATE 0 on the connection", b, frame(b, 4, 8, 0, 0, z), PROTOCOL);
    expect_goaway(s, "WINDOW_UPDATE of 3 bytes", b, frame(b, 3, 8, 0, 0, z), FRAME_SIZE);
    expect_goaway(s, "connection window past 2^31-1", b, frame(b, 4, 8, 0, 0, "\x7f\xff\xff\xff"), FLOW);
    expect_goaway(s, "WINDOW_UPDATE on an idle stream", b, frame(b, 4, 8, 0, 9, "\x00\x00\x00\x01"), PROTOCOL);
    expect_goaway(s, "RST_STREAM on an idle stream", b, frame(b, 4, 3, 0, 9, z), PROTOCOL);
    expect_goaway(s, "RST_STREAM on stream 0", b, frame(b, 4, 3, 0, 0, z), PROTOCOL);
    expect_goaway(s, "RST_STREAM of 5 bytes", b, frame(b, 5, 3, 0, 1, z), FRAME_SIZE);
    expect_goaway(s, "PUSH_PROMISE from a client", b, frame(b, 4, 5, 0x4, 1, z), PROTOCOL);
    expect_goaway(s, "CONTINUATION without HEADERS", b, frame(b, 1, 9, 0x4, 1, "\x82"), PROTOCOL);
    n = frame(b, 1, 1, 0x1, 1, "\x82");
    n += frame(b + n, 8, 6, 0, 0, z);
    expect_goaway(s, "a PING inside a header block", b, n, PROTOCOL);
    n = frame(b, 1, 1, 0x1, 1, "\x82");
    n += frame(b + n, 1, 9, 0x4, 3, "\x86");
    expect_goaway(s, "CONTINUATION of another stream", b, n, PROTOCOL);
    expect_goaway(s, "GOAWAY on a stream", b, frame(b, 8, 7, 0, 1, z), PROTOCOL);
    expect_goaway(s, "PRIORITY of 4 bytes", b, frame(b, 4, 2, 0, 1, z), FRAME_SIZE);
    expect_goaway(s, "HPACK index 0", b, frame(b, 1, 1, 0x5, 1, "\x80"), COMPRESSION);
    expect_goaway(s, "HPACK index past the table", b, frame(b, 1, 1, 0x5, 1, "\xbe"), COMPRESSION);
    expect_goaway(s, "HPACK size update past 4096", b, frame(b, 3, 1, 0x5, 1, "\x3f\xe2\x1f"), COMPRESSION);
    expect_goaway(s, "HEADERS padding too long", b, frame(b, 2, 1, 0xd, 1, "\x05\x82"), PROTOCOL);
    expect_goaway(s, "DATA padding too long", b, (n = get(b, 1, "/x"), n + frame(b + n, 2, 0, 0x9, 1, "\x05\x00")),
                  PROTOCOL);
    {   /* the first frame must be SETTINGS */
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
        http__server_adopt(s, sv[0]);
        rt_io io = {0}; /* (rt_io_open leaves the TLS state alone) */
        assert_int_equal(rt_io_open(&io, sv[1]), 0);
        memcpy(b, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
        n = 24 + frame(b + 24, 8, 6, 0, 0, z);
        assert_int_equal(rt_write_all(&io, b, n, NULL, bz_now_ns() + BZ_NS_PER_S), 0);
        seen r;
        memset(&r, 0, sizeof r);
        r.goaway = -1;
        http__hpack_dec dec;
        http__hpack_dec_init(&dec, 4096);
        read_frames(&io, &r, &dec, 0);
        http__hpack_dec_free(&dec);
        rt_io_close(&io);
        assert_int_equal(r.goaway, PROTOCOL);
    }

    /* stream errors: RST_STREAM, the connection goes on */
    uint8_t hb[512];
    kv upper[] = {REQ("/x"), {"X-Upper", "1"}, {NULL, NULL}};
    expect_rst(s, "upper-case field name", b, frame(b, (uint32_t)fields(hb, upper), 1, 0x5, 1, hb), 1, PROTOCOL);
    kv nopath[] = {{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {NULL, NULL}};
    expect_rst(s, "no :path", b, frame(b, (uint32_t)fields(hb, nopath), 1, 0x5, 1, hb), 1, PROTOCOL);
    kv late[] = {{":method", "GET"}, {":scheme", "http"}, {"a", "b"}, {":path", "/x"}, {NULL, NULL}};
    expect_rst(s, "pseudo-field after a regular one", b, frame(b, (uint32_t)fields(hb, late), 1, 0x5, 1, hb), 1,
               PROTOCOL);
    kv twice[] = {REQ("/x"), {":path", "/y"}, {NULL, NULL}};
    expect_rst(s, ":path twice", b, frame(b, (uint32_t)fields(hb, twice), 1, 0x5, 1, hb), 1, PROTOCOL);
    kv unknown[] = {REQ("/x"), {":protocol", "websocket"}, {NULL, NULL}};
    expect_rst(s, "unknown pseudo-field", b, frame(b, (uint32_t)fields(hb, unknown), 1, 0x5, 1, hb), 1, PROTOCOL);
    kv conn[] = {REQ("/x"), {"connection", "close"}, {NULL, NULL}};
    expect_rst(s, "connection-specific field", b, frame(b, (uint32_t)fields(hb, conn), 1, 0x5, 1, hb), 1, PROTOCOL);
    kv te[] = {REQ("/x"), {"te", "gzip"}, {NULL, NULL}};
    expect_rst(s, "te other than trailers", b, frame(b, (uint32_t)fields(hb, te), 1, 0x5, 1, hb), 1, PROTOCOL);
    kv crlf[] = {REQ("/x"), {"x-a", "b\r\nc"}, {NULL, NULL}};
    expect_rst(s, "CR LF in a value", b, frame(b, (uint32_t)fields(hb, crlf), 1, 0x5, 1, hb), 1, PROTOCOL);
    kv sp[] = {REQ("/x"), {"x-a", "b "}, {NULL, NULL}};
    expect_rst(s, "space at a value's end", b, frame(b, (uint32_t)fields(hb, sp), 1, 0x5, 1, hb), 1, PROTOCOL);
    kv path[] = {REQ("x"), {NULL, NULL}};
    expect_rst(s, ":path without /", b, frame(b, (uint32_t)fields(hb, path), 1, 0x5, 1, hb), 1, PROTOCOL);
    kv cl[] = {REQ("/x"), {"content-length", "5"}, {NULL, NULL}};
    n = frame(b, (uint32_t)fields(hb, cl), 1, 0x4, 1, hb);
    n += frame(b + n, 3, 0, 0x1, 1, "abc");
    expect_rst(s, "content-length 5, 3 bytes of DATA", b, n, 1, PROTOCOL);
    kv clx[] = {REQ("/x"), {"content-length", "5x"}, {NULL, NULL}};
    expect_rst(s, "content-length not a number", b, frame(b, (uint32_t)fields(hb, clx), 1, 0x5, 1, hb), 1, PROTOCOL);
    n = get(b, 1, "/x");
    n += frame(b + n, 4, 8, 0, 1, z); /* (answered and closed by then, or a reset: either way no GOAWAY) */
    seen r = run_bytes(s, b, n, 3);
    assert_int_equal(r.goaway, -1);
    assert_int_equal(r.status[1], 200);
    n = frame(b, 5, 2, 0, 1, "\x00\x00\x00\x01\x10"); /* PRIORITY: stream 1 depends on itself */
    expect_rst(s, "PRIORITY on itself", b, n, 1, PROTOCOL);
    kv body[] = {REQ("/x"), {NULL, NULL}};
    n = frame(b, (uint32_t)fields(hb, body), 1, 0x4, 1, hb);
    n += frame(b + n, 3, 0, 0x1, 1, "abc");
    n += frame(b + n, 3, 0, 0x1, 1, "def");
    r = run_bytes(s, b, n, 3);
    assert_true(r.goaway < 0); /* DATA after END_STREAM: a stream error (or the stream is gone) */
    assert_int_equal(r.status[3 / 2], 200);

    /* accepted and ignored */
    n = frame(b, 4, 0xfa, 0, 0, z);                      /* an unknown type */
    n += frame(b + n, 5, 2, 0, 7, "\x00\x00\x00\x03\x10"); /* PRIORITY of an idle stream */
    n += frame(b + n, 8, 6, 0, 0, "pingpong");
    n += frame(b + n, 12, 4, 0, 0, "\x00\x03\x00\x00\x00\x10\x00\x04\x00\x01\x00\x00");
    r = run_bytes(s, b, n, 1);
    assert_int_equal(r.goaway, -1);
    assert_true(r.ping_ack && !memcmp(r.ping, "pingpong", 8));
    assert_true(r.settings_ack);
    assert_int_equal(r.status[0], 200);
    /* a header block in HEADERS + CONTINUATION, padded HEADERS with a priority */
    kv big[] = {REQ("/split"), {"x-a", "aaaaaaaaaaaaaaaaaaaa"}, {NULL, NULL}};
    size_t hn = fields(hb, big);
    n = frame(b, 10, 1, 0x0, 1, hb);
    n += frame(b + n, (uint32_t)(hn - 10), 9, 0x5 & ~0x1, 1, hb + 10);
    uint8_t padded[300];
    padded[0] = 3;
    memcpy(padded + 1, "\x00\x00\x00\x00\x10", 5);
    size_t gn = fields(padded + 6, (kv[]){REQ("/pad"), {NULL, NULL}});
    memset(padded + 6 + gn, 0, 3);
    n += frame(b + n, (uint32_t)(6 + gn + 3), 1, 0x5 | 0x8 | 0x20, 3, padded);
    r = run_bytes(s, b, n, 5);
    assert_int_equal(r.goaway, -1);
    assert_int_equal(r.status[0], 200);
    assert_int_equal(r.status[1], 200);
    assert_int_equal(r.status[2], 200);
    for (int i = 0; i < 1000 && conns_of(s) > 0; i++)
        rt_sleep(NULL, BZ_NS_PER_MS);
    http_server_free(s);
}

static void frame_errors_get_their_rfc_answers(void **state)
{
    rt_options o = {.threads = 1};
    assert_int_equal(rt_run(&o, frame_errors_main, NULL), 0);
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
        cmocka_unit_test(frame_errors_get_their_rfc_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

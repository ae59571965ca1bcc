/* tests/http_testd.c — a server built only from the http/ layer, with
 * routes that exercise its features, for the black-box suite
 * (tests/blackbox/test_http.py).  Flags: the usual bazaar serve flags.
 *
 *   GET  /healthz                 "ok"
 *   POST /echo                    echoes the body (read whole, ≤ max-body-bytes)
 *   POST /echo-stream             echoes the body read in 7-byte pieces
 *   POST /ignore-body             answers without reading the body
 *   GET  /sleep?ms=N              parks N ms on the request context
 *   GET  /wait                    parks until the request context ends
 *   GET  /last-cancel             how the last /wait ended and how long after the end
 *   GET  /stream?n=N&ms=M         N chunks, flushed one by one, M (20) ms apart
 *   GET  /fail                    handler reports -EIO
 *   GET  /fail-mid                streams a chunk, then reports -EIO
 *   GET  /big                     4 KiB of JSON (gzip-able)
 *   GET  /items/{id}              path value
 *   GET  /files/{path...}         path value (rest)
 *   GET  /a/{x}/c, /a/b/c, /q/{y}, /q/last   overlaps resolved by specificity
 *   GET  /dir/                    subtree
 *   GET  /h2-heap                 heap bytes the HTTP/2 connections hold, for memory tests
 *   GET  /trailers                "ok" with an HTTP/2 trailer x-checksum: 42
 *   GET  /flood?kib=N             N KiB streamed in 1 KiB flushes (flow-control tests)
 *   GET  /proto                   "h2" or "h1"
 *   GET  /pad?n=N&t=TAG           TAG then '.' up to N bytes (≤ 1 MiB; pipelining tests)
 */
#include "app/app-private.h"
#include "app/config.h"
#include <bazaar/log.h>
#include "http/h2-private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const app_config *cfg;

static int healthz(http_req *r, void *d) { return http_send(r, 200, "text/plain", "ok", 2); }

static int echo(http_req *r, void *d)
{
    const char *b;
    size_t n;
    int e = http_read_body(r, &b, &n);
    if (e)
        return e;
    return http_send(r, 200, "application/octet-stream", b, n);
}

static int echo_stream(http_req *r, void *d)
{
    char buf[7];
    ssize_t n;
    while ((n = http_body_read(r, buf, sizeof buf)) > 0)
        http_write(r, buf, (size_t)n);
    if (n < 0)
        return (int)n;
    http_set_status(r, 200);
    return 0;
}

static int ignore_body(http_req *r, void *d) { return http_send(r, 200, "text/plain", "ignored", 7); }

static int sleep_ms(http_req *r, void *d)
{
    const char *ms = http_query_get(r, "ms");
    int e = rt_sleep(r->ctx, (ms ? atoll(ms) : 100) * BZ_NS_PER_MS);
    if (e)
        return e;
    return http_send(r, 200, "text/plain", "slept", 5);
}

static int last_result;
static int64_t last_end_ns;

static int wait_forever(http_req *r, void *d)
{
    last_result = 1;
    int e = rt_park(r->ctx, BZ_NO_DEADLINE, NULL);
    last_result = e;
    last_end_ns = bz_now_ns();
    return e;
}

static int last_cancel(http_req *r, void *d)
{
    char b[128];
    int n = snprintf(b, sizeof b, "{\"result\":\"%s\",\"ended_mono_ns\":%lld,\"now_mono_ns\":%lld}",
                     last_result == -ECANCELED ? "cancelled" : last_result == -ETIMEDOUT ? "timeout"
                     : last_result == 1 ? "waiting" : "none",
                     (long long)last_end_ns, (long long)bz_now_ns());
    return http_send(r, 200, "application/json", b, (size_t)n);
}

static int stream(http_req *r, void *d)
{
    const char *ns = http_query_get(r, "n");
    int n = ns ? atoi(ns) : 3;
    const char *gap = http_query_get(r, "ms");
    int64_t gap_ns = (gap ? atoll(gap) : 20) * BZ_NS_PER_MS;
    http_set_status(r, 200);
    http_add_header(r, "Content-Type", "text/plain");
    for (int i = 0; i < n; i++) {
        char b[32];
        int k = snprintf(b, sizeof b, "chunk %d\n", i);
        http_write(r, b, (size_t)k);
        int e = http_flush(r);
        if (e)
            return e;
        if (rt_sleep(r->ctx, gap_ns))
            return -ECANCELED;
    }
    return 0;
}

static int fail(http_req *r, void *d) { return -EIO; }

static int fail_mid(http_req *r, void *d)
{
    http_set_status(r, 200);
    http_write(r, "partial", 7);
    http_flush(r);
    return -EIO;
}

static int big(http_req *r, void *d)
{
    bz_buf b = BZ_BUF_INIT;
    bz_buf_putc(&b, '[');
    for (int i = 0; i < 200; i++)
        bz_buf_printf(&b, "%s{\"i\":%d,\"v\":\"x\"}", i ? "," : "", i);
    bz_buf_putc(&b, ']');
    http_send(r, 200, "application/json", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

static int show_value(http_req *r, void *d)
{
    const char *name = d;
    const char *v = http_path_value(r, name);
    char b[512];
    int n = snprintf(b, sizeof b, "%s|%s=%s", r->pattern, name, v ? v : "(null)");
    return http_send(r, 200, "text/plain", b, (size_t)n);
}

static int h2_heap(http_req *r, void *d)
{
    char b[32];
    int n = snprintf(b, sizeof b, "%lld", (long long)http__h2_heap_bytes());
    return http_send(r, 200, "text/plain", b, (size_t)n);
}

static int trailers(http_req *r, void *d)
{
    http_add_trailer(r, "x-checksum", "42");
    return http_send(r, 200, "text/plain", "ok", 2);
}

static int flood(http_req *r, void *d)
{
    const char *k = http_query_get(r, "kib");
    int n = k ? atoi(k) : 1024;
    char chunk[1024];
    memset(chunk, 'x', sizeof chunk);
    http_set_status(r, 200);
    http_add_header(r, "Content-Type", "application/octet-stream");
    for (int i = 0; i < n; i++) {
        http_write(r, chunk, sizeof chunk);
        int e = http_flush(r);
        if (e)
            return e;
    }
    return 0;
}

static int proto(http_req *r, void *d) { return http_send(r, 200, "text/plain", r->h2 ? "h2" : "h1", 2); }

static int pad(http_req *r, void *d)
{
    const char *ns = http_query_get(r, "n");
    const char *tag = http_query_get(r, "t");
    long long n = ns ? atoll(ns) : 1024;
    if (n < 0 || n > (1 << 20))
        return http_send_problem(r, 400, "bad_request", "n out of range");
    size_t tl = tag ? strlen(tag) : 0;
    if (tl > (size_t)n)
        tl = (size_t)n;
    http_set_status(r, 200);
    http_add_header(r, "Content-Type", "text/plain");
    if (tl)
        http_write(r, tag, tl);
    char dots[1024];
    memset(dots, '.', sizeof dots);
    for (size_t left = (size_t)n - tl; left;) {
        size_t k = left < sizeof dots ? left : sizeof dots;
        http_write(r, dots, k);
        left -= k;
    }
    return 0;
}

static void serve(void *p)
{
    http_mux *m = http_mux_new();
    char err[256];
    struct {
        const char *pat;
        http_handler h;
    } t[] = {
        {"GET /healthz", {healthz, NULL}},
        {"POST /echo", {echo, NULL}},
        {"POST /echo-stream", {echo_stream, NULL}},
        {"POST /ignore-body", {ignore_body, NULL}},
        {"GET /sleep", {sleep_ms, NULL}},
        {"GET /wait", {wait_forever, NULL}},
        {"GET /last-cancel", {last_cancel, NULL}},
        {"GET /stream", {stream, NULL}},
        {"GET /fail", {fail, NULL}},
        {"GET /fail-mid", {fail_mid, NULL}},
        {"GET /big", {big, NULL}},
        {"GET /items/{id}", {show_value, "id"}},
        {"GET /files/{path...}", {show_value, "path"}},
        {"GET /a/{x}/c", {show_value, "x"}},
        {"GET /q/{y}", {show_value, "y"}},
        {"GET /q/last", {show_value, "none"}},
        {"GET /a/b/c", {show_value, "none"}},
        {"GET /dir/", {show_value, "none"}},
        {"GET /h2-heap", {h2_heap, NULL}},
        {"GET /trailers", {trailers, NULL}},
        {"GET /flood", {flood, NULL}},
        {"GET /proto", {proto, NULL}},
        {"GET /pad", {pad, NULL}},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (http_mux_handle(m, t[i].pat, t[i].h, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            exit(1);
        }
    static int64_t rto;
    rto = cfg->srv.request_timeout_ns;
    http_mw mws[] = {{http_mw_request_id, NULL}, {http_mw_access_log, NULL}, {http_mw_recover, NULL},
                     {http_mw_timeout, &rto}, {http_mw_gzip, NULL}};
    http_server_opts o = bazaar_http_opts(&cfg->srv);
    int e;
    http_handler chain = http_chain(http_mux_handler(m), mws, 5);
    http_server *s = http_server_new(&o, chain, &e);
    if (!s) {
        fprintf(stderr, "listen: %s\n", strerror(-e));
        exit(1);
    }
    printf("port %d\n", http_server_port(s));
    fflush(stdout);
    http_server_serve(s);
    http_server_free(s);
    http_chain_free(chain);
    http_mux_free(m);
}

int main(int argc, char **argv)
{
    static app_config c;
    char err[512];
    if (app_config_parse(&c, argc, argv, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    cfg = &c;
    bz_log_setup((bz_log_level)c.srv.log_level, BZ_LOG_JSON);
    rt_options o = {.threads = c.srv.threads, .handle_signals = true};
    return rt_run(&o, serve, NULL) ? 1 : 0;
}

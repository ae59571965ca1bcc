/* tests/unit/test_base.c — base/: arena, buffers and slices, clocks,
 * logging, errors, the flag tables (<bazaar/flags.h>), the Redis URL grammar and
 * the circuit breaker's state machine, and the lock tokens' generator
 * (base/rand-private.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <bazaar/arena.h>
#include <bazaar/breaker.h>
#include <bazaar/buf.h>
#include <bazaar/clock.h>
#include <bazaar/flags.h>
#include <bazaar/error.h>
#include <bazaar/log.h>
#include <bazaar/rand.h>
#include <bazaar/trace.h>
#include "base/log-private.h"
#include "base/rand-private.h"
#include "base/redisurl.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- arena ---- */

static int defer_count;
static void count_defer(void *p) { defer_count += (int)(intptr_t)p; }

static void arena_alloc_align_and_reset(void **state)
{
    bz_arena a;
    bz_arena_init(&a, 1024);
    for (int i = 0; i < 1000; i++) {
        char *p = bz_arena_alloc(&a, (size_t)(i % 37) + 1);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xAB, (size_t)(i % 37) + 1);
    }
    void *big = bz_arena_alloc(&a, 100000); /* larger than a chunk */
    memset(big, 1, 100000);
    assert_true(a.total > 100000);
    bz_arena_defer_fn(&a, count_defer, (void *)(intptr_t)3);
    bz_arena_defer_fn(&a, count_defer, (void *)(intptr_t)4);
    defer_count = 0;
    bz_arena_reset(&a);
    assert_int_equal(defer_count, 7);
    assert_int_equal(a.total, 1024); /* first ordinary chunk kept */
    char *s = bz_arena_printf(&a, "%s-%d", "x", 42);
    assert_string_equal(s, "x-42");
    assert_string_equal(bz_arena_strndup(&a, "hello", 3), "hel");
    int *z = bz_arena_calloc(&a, 10, sizeof(int));
    for (int i = 0; i < 10; i++)
        assert_int_equal(z[i], 0);
    defer_count = 0;
    bz_arena_defer_fn(&a, count_defer, (void *)(intptr_t)1);
    bz_arena_free(&a);
    assert_int_equal(defer_count, 1);
    assert_int_equal(a.total, 0);
}

/* A buffer the arena owns: grows on the heap, freed by the reset (the
 * leak check of the ASan build fails this test if it is not). */
static void arena_buffers_are_freed_with_the_arena(void **state)
{
    bz_arena a;
    bz_arena_init(&a, 1024);
    bz_buf *b = bz_arena_buf(&a);
    assert_int_equal(b->len, 0);
    for (int i = 0; i < 1000; i++)
        bz_buf_append_c(b, "0123456789");
    assert_int_equal(b->len, 10000);
    assert_true(b->cap > a.total); /* the bytes are on the heap, not in a chunk */
    bz_arena_reset(&a);
    bz_buf *c = bz_arena_buf(&a);
    bz_buf_append_c(c, "again");
    assert_string_equal(c->data, "again");
    bz_arena_free(&a);
}

/* ---- slices and buffers ---- */

static void str_ops(void **state)
{
    assert_true(bz_str_eq_c(BZ_STR_LIT("abc"), "abc"));
    assert_false(bz_str_eq_c(BZ_STR_LIT("abc"), "abd"));
    assert_true(bz_str_ieq_c(BZ_STR_LIT("Content-Length"), "content-length"));
    assert_false(bz_str_ieq_c(BZ_STR_LIT("Content-Lengt"), "content-length"));
    bz_str t = bz_str_trim(BZ_STR_LIT(" \t x y \t"));
    assert_true(bz_str_eq_c(t, "x y"));
    assert_int_equal(bz_str_index(BZ_STR_LIT("a:b"), ':'), 1);
    assert_int_equal(bz_str_index(BZ_STR_LIT("ab"), ':'), -1);
    int64_t v;
    assert_true(bz_str_to_i64(BZ_STR_LIT("9223372036854775807"), &v));
    assert_true(v == INT64_MAX);
    assert_true(bz_str_to_i64(BZ_STR_LIT("-9223372036854775808"), &v));
    assert_true(v == INT64_MIN);
    assert_false(bz_str_to_i64(BZ_STR_LIT("9223372036854775808"), &v));
    assert_false(bz_str_to_i64(BZ_STR_LIT(""), &v));
    assert_false(bz_str_to_i64(BZ_STR_LIT("12a"), &v));
    assert_false(bz_str_to_i64(BZ_STR_LIT("-"), &v));
    uint64_t u;
    assert_true(bz_str_to_u64(BZ_STR_LIT("18446744073709551615"), &u));
    assert_false(bz_str_to_u64(BZ_STR_LIT("18446744073709551616"), &u));
}

static void buf_ops(void **state)
{
    bz_buf b = BZ_BUF_INIT;
    for (int i = 0; i < 1000; i++)
        bz_buf_append_c(&b, "ab");
    assert_int_equal(b.len, 2000);
    assert_int_equal(strlen(b.data), 2000);
    bz_buf_clear(&b);
    bz_buf_append_i64(&b, INT64_MIN);
    bz_buf_putc(&b, ' ');
    bz_buf_append_i64(&b, 0);
    bz_buf_putc(&b, ' ');
    bz_buf_printf(&b, "%05d", 42);
    assert_string_equal(b.data, "-9223372036854775808 0 00042");
    bz_buf_consume(&b, 21);
    assert_string_equal(b.data, "0 00042");
    bz_buf_clear(&b);
    bz_buf_append_json_escaped(&b, bz_str_make("a\"b\\c\n\x01\xc3\xa9", 9));
    assert_string_equal(b.data, "a\\\"b\\\\c\\n\\u0001\xc3\xa9");
    bz_buf_free(&b);
    assert_null(b.data);
}

/* ---- clocks ---- */

/* The escaper checks 16 bytes at a time (8 without SSE2), the last block
 * overlapping the one before, short strings as overlapping words: every
 * byte that needs escaping, at every offset of every length, alone and
 * after another, next to bytes >= 0x80 and near the ends, must come out
 * as the byte-at-a-time definition says, after what the buffer held. */
static void ref_escape(bz_buf *o, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c == '"')
            bz_buf_append(o, "\\\"", 2);
        else if (c == '\\')
            bz_buf_append(o, "\\\\", 2);
        else if (c == '\n')
            bz_buf_append(o, "\\n", 2);
        else if (c == '\r')
            bz_buf_append(o, "\\r", 2);
        else if (c == '\t')
            bz_buf_append(o, "\\t", 2);
        else if (c < 0x20)
            bz_buf_printf(o, "\\u%04x", c);
        else
            bz_buf_putc(o, (char)c);
    }
}

static void json_escape_every_byte_at_every_offset(void **state)
{
    unsigned char in[40];
    for (int c = 0; c < 256; c++)
        for (size_t len = 1; len <= sizeof in; len++)
            for (size_t at = 0; at < len; at++)
                for (int second = 0; second < 2; second++) {
                    for (size_t i = 0; i < len; i++)
                        in[i] = (unsigned char)(i % 3 == 0 ? 0xc3 : 'a' + i % 26); /* bytes >= 0x80 too */
                    in[at] = (unsigned char)c;
                    if (second)
                        in[len - 1 - at / 2] = '"'; /* another one after (or at) it */
                    bz_buf got = BZ_BUF_INIT, want = BZ_BUF_INIT;
                    bz_buf_append(&got, "x", 1);
                    bz_buf_append(&want, "x", 1);
                    bz_buf_append_json_escaped(&got, bz_str_make((const char *)in, len));
                    ref_escape(&want, in, len);
                    assert_int_equal(got.len, want.len);
                    assert_memory_equal(got.data, want.data, want.len + 1); /* and the NUL */
                    bz_buf_free(&got);
                    bz_buf_free(&want);
                }
    bz_buf got = BZ_BUF_INIT;
    bz_buf_append_json_escaped(&got, bz_str_make(NULL, 0));
    bz_buf_append_json_escaped(&got, BZ_STR_LIT(""));
    assert_int_equal(got.len, 0);
    bz_buf_free(&got);
}

/* A long string is escaped in 4 KiB slices: escapes on both sides of
 * every slice's edge, and a string that is nothing but escapes. */
static void json_escape_long_strings(void **state)
{
    size_t n = 3 * 4096 + 77;
    unsigned char *in = malloc(n);
    assert_non_null(in);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++)
            in[i] = pass ? (unsigned char)(i % 32) : (unsigned char)('a' + i % 26);
        if (!pass)
            for (size_t k = 1; k <= 3; k++) {
                in[k * 4096 - 1] = '"';
                in[k * 4096] = '\\';
                in[k * 4096 + 1] = 0x01;
            }
        bz_buf got = BZ_BUF_INIT, want = BZ_BUF_INIT;
        bz_buf_append_json_escaped(&got, bz_str_make((const char *)in, n));
        ref_escape(&want, in, n);
        assert_int_equal(got.len, want.len);
        assert_memory_equal(got.data, want.data, want.len + 1);
        bz_buf_free(&got);
        bz_buf_free(&want);
    }
    free(in);
}

/* A duration in milliseconds as every log line writes it (bz__log_ms):
 * microsecond fixed point without trailing zeros, %.6g outside
 * [0, 1e12) — against printf's rounding of the same microseconds. */
static void log_duration_format(void **state)
{
    const double v[] = {0, 0.0004, 0.0005, 0.001, 0.053, 0.1, 0.25, 1, 1.5, 12.34, 999.9994, 999.9996,
                        123456.789, 86400000.001, 1e11, 1e12, 5e12, -1, -0.0001};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char got[40], want[40];
        *bz__log_ms(got, v[i]) = '\0';
        if (v[i] >= 0 && v[i] < 1e12) {
            long long u = (long long)(v[i] * 1000.0 + 0.5);
            int n = snprintf(want, sizeof want, "%lld.%03lld", u / 1000, u % 1000);
            while (want[n - 1] == '0')
                want[--n] = '\0';
            if (want[n - 1] == '.')
                want[--n] = '\0';
        } else {
            snprintf(want, sizeof want, "%.6g", v[i]);
        }
        assert_string_equal(got, want);
    }
    char out[40];
    *bz__log_ms(out, 0.053) = '\0';
    assert_string_equal(out, "0.053");
    *bz__log_ms(out, 2.0) = '\0';
    assert_string_equal(out, "2");
}

/* bz__rand_key, the user-space generator behind lock tokens: getrandom(2)
 * once per thread, not once per value (counted for the code linked into
 * this test: this definition takes the place of libc's for it); values
 * distinct, their bytes evenly spread; a child after fork() does not give
 * the values its parent gives next. */
static atomic_int getrandoms;
ssize_t getrandom(void *buf, size_t n, unsigned flags)
{
    atomic_fetch_add(&getrandoms, 1);
    return syscall(SYS_getrandom, buf, n, flags);
}

#define KEYS 20000
static int cmp_key(const void *a, const void *b) { return memcmp(a, b, 16); }

static void key_bytes_are_fresh_without_a_syscall_each(void **state)
{
    unsigned char one[16];
    bz__rand_key(one, sizeof one); /* seeds this thread */
    atomic_store(&getrandoms, 0);
    unsigned char (*k)[16] = malloc(KEYS * sizeof *k);
    assert_non_null(k);
    long count[256] = {0};
    for (int i = 0; i < KEYS; i++) {
        bz__rand_key(k[i], 16);
        for (int j = 0; j < 16; j++)
            count[k[i][j]]++;
    }
    assert_int_equal(atomic_load(&getrandoms), 0);
    qsort(k, KEYS, 16, cmp_key);
    for (int i = 1; i < KEYS; i++)
        assert_true(memcmp(k[i - 1], k[i], 16) != 0);
    /* chi-square over 256 byte values (255 degrees of freedom): above 400
     * happens by chance about once in 10^8 runs */
    double want = KEYS * 16 / 256.0, chi = 0;
    for (int b = 0; b < 256; b++)
        chi += (count[b] - want) * (count[b] - want) / want;
    if (chi > 400)
        fail_msg("byte values unevenly spread: chi-square %.1f", chi);
    /* odd sizes and sizes past one refill block come out whole */
    unsigned char big[1500];
    memset(big, 0, sizeof big);
    bz__rand_key(big, sizeof big);
    int zeros = 0;
    for (size_t i = 0; i < sizeof big; i++)
        zeros += big[i] == 0;
    assert_true(zeros < 30); /* ~6 expected */
    free(k);

    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        unsigned char c[16];
        bz__rand_key(c, sizeof c);
        _exit(write(fds[1], c, sizeof c) == (ssize_t)sizeof c ? 0 : 1);
    }
    unsigned char p[16], c[16];
    bz__rand_key(p, sizeof p);
    assert_int_equal(read(fds[0], c, sizeof c), (ssize_t)sizeof c);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(fds[0]);
    close(fds[1]);
    assert_true(memcmp(p, c, 16) != 0);
}

/* Random hex ids: every length, only lower-case hex digits, NUL after,
 * and every digit shows up (the sixteen-at-a-time conversion reaches a-f). */
static void random_hex_ids(void **state)
{
    int seen[16] = {0};
    for (size_t n = 0; n <= 40; n++)
        for (int rep = 0; rep < 50; rep++) {
            char out[48];
            memset(out, 'X', sizeof out);
            bz_rand_hex(out, n);
            assert_int_equal(out[n], '\0');
            assert_int_equal(out[n + 1], 'X');
            for (size_t i = 0; i < n; i++) {
                char c = out[i];
                assert_true((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
                seen[c <= '9' ? c - '0' : c - 'a' + 10]++;
            }
        }
    for (int d = 0; d < 16; d++)
        assert_true(seen[d] > 1000); /* ~2,000 each of 32,800 digits */
}

static int cmp_id(const void *a, const void *b) { return memcmp(a, b, 33); }

static bool hex_only(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[n] == '\0';
}

/* New traces (no valid traceparent): 32 and 16 lower-case hex digits,
 * never all zero, every trace id and every span id different over many
 * (ids need to be unique, not secret), and valid as a traceparent;
 * request ids (32 digits of bz_rand_hex) likewise unique. */
static void trace_and_request_ids_are_unique(void **state)
{
    enum { N = 50000 };
    char(*tid)[33] = malloc((size_t)N * 33), (*sid)[33] = malloc((size_t)N * 33), (*rid)[33] = malloc((size_t)N * 33);
    assert_true(tid && sid && rid);
    for (int i = 0; i < N; i++) {
        bz_trace t;
        assert_false(bz_trace_start(&t, i % 2 ? BZ_STR_LIT("garbage") : BZ_STR_NULL, BZ_STR_LIT("k=v")));
        assert_true(hex_only(t.trace_id, 32) && hex_only(t.span_id, 16));
        assert_string_equal(t.parent_id, "");
        assert_int_equal(t.tracestate.n, 0);
        char tp[56];
        bz_trace_format(&t, tp);
        assert_true(bz_traceparent_valid(bz_str_c(tp)));
        memcpy(tid[i], t.trace_id, 33);
        memset(sid[i], 0, 33);
        memcpy(sid[i], t.span_id, 17);
        bz_rand_hex(rid[i], 32);
        assert_true(hex_only(rid[i], 32));
    }
    char(*sets[3])[33] = {tid, sid, rid};
    for (int k = 0; k < 3; k++) {
        qsort(sets[k], N, 33, cmp_id);
        for (int i = 1; i < N; i++)
            assert_true(memcmp(sets[k][i - 1], sets[k][i], 33) != 0);
    }
    /* a valid one is taken as it is, span new */
    bz_trace t;
    assert_true(bz_trace_start(&t, BZ_STR_LIT("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                               BZ_STR_LIT("k=v")));
    assert_string_equal(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(t.parent_id, "00f067aa0ba902b7");
    assert_true(hex_only(t.span_id, 16) && strcmp(t.span_id, "0000000000000000"));
    assert_int_equal(t.flags, 1);
    assert_true(bz_str_eq_c(t.tracestate, "k=v"));
    free(tid);
    free(sid);
    free(rid);
}

/* Decimal formatting two digits at a time: every length and both signs,
 * the extremes, against printf. */
static void decimal_formatting(void **state)
{
    int64_t vals[200];
    int n = 0;
    vals[n++] = INT64_MIN;
    vals[n++] = INT64_MAX;
    vals[n++] = 0;
    for (int64_t p = 1; p <= 1000000000000000000LL; p *= 10) {
        vals[n++] = p;
        vals[n++] = p - 1;
        vals[n++] = p + 7;
        vals[n++] = -p;
        vals[n++] = -(p - 1) - 1;
        if (p > INT64_MAX / 10)
            break;
        vals[n++] = p * 10 - 1; /* all nines */
    }
    for (int i = 0; i < n; i++) {
        char got[32], want[32];
        size_t k = bz_fmt_i64(got, vals[i]);
        got[k] = '\0';
        snprintf(want, sizeof want, "%lld", (long long)vals[i]);
        assert_string_equal(got, want);
    }
}

static void clock_formats(void **state)
{
    char out[32];
    assert_int_equal(bz_fmt_rfc3339_us(out, 1795832296123456LL), 27);
    assert_string_equal(out, "2026-11-28T02:18:16.123456Z");
    assert_int_equal(bz_fmt_rfc3339_us(out, 0), 27);
    assert_string_equal(out, "1970-01-01T00:00:00.000000Z");
    /* The formatter remembers the last four seconds: repeated, alternating,
     * more than four in turn, and one before the epoch must each come out
     * as gmtime says. */
    int64_t secs[] = {1795832296, 1795832300, 1795832296, 1795832297, 1795832304, 1795832296,
                      -1,         0,          4102444799, 1795832301, 1795832302, 1795832300};
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < sizeof secs / sizeof secs[0]; i++) {
            time_t t = (time_t)secs[i];
            struct tm tm;
            gmtime_r(&t, &tm);
            char want[96];
            snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(i * 7919 % 1000000));
            bz_fmt_rfc3339_us(out, secs[i] * 1000000 + (int64_t)(i * 7919 % 1000000));
            assert_string_equal(out, want);
        }
    assert_int_equal(bz_fmt_http_date(out, 1795832296), 29);
    assert_string_equal(out, "Sat, 28 Nov 2026 02:18:16 GMT");
    int64_t a = bz_now_ns();
    usleep(2000);
    int64_t b = bz_now_ns();
    assert_true(b - a >= 2 * BZ_NS_PER_MS);
    assert_true(bz_wall_us() > 1700000000000000LL);
}

/* ---- logging ---- */

static void log_json_and_text(void **state)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    bz_log_set_fd(fds[1]);
    bz_log_setup(BZ_LOG_INFO, BZ_LOG_JSON);
    bz_log_info("hello \"world\"", BZ_F_STR("addr", ":8080"), BZ_F_INT("n", -5), BZ_F_STRN("p", "abcdef", 3));
    bz_log_dbg("hidden");
    bz_log_setup(BZ_LOG_DEBUG, BZ_LOG_TEXT);
    bz_log_warn("two words", BZ_F_STR("k", "a b"));
    bz_log_set_fd(-1);
    close(fds[1]);
    char got[1024] = {0};
    ssize_t n = read(fds[0], got, sizeof got - 1);
    close(fds[0]);
    assert_true(n > 0);
    char *nl = strchr(got, '\n');
    assert_non_null(nl);
    *nl = '\0';
    assert_non_null(strstr(got, "\"level\":\"info\",\"msg\":\"hello \\\"world\\\"\",\"addr\":\":8080\",\"n\":-5,\"p\":\"abc\"}"));
    assert_true(got[0] == '{');
    assert_null(strstr(nl + 1, "hidden"));
    assert_non_null(strstr(nl + 1, "WARN  two words k=\"a b\""));
    bz_log_setup(BZ_LOG_INFO, BZ_LOG_TEXT);
}

/* Batched lines (event loops) are formatted straight into the batch: the
 * batch holds exactly the lines, in order, and an error line flushes what
 * was batched before it. */
static void log_batch_holds_exactly_the_lines(void **state)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    bz_log_set_fd(fds[1]);
    bz_log_setup(BZ_LOG_INFO, BZ_LOG_JSON);
    bz_log_batch(true);
    bz_log_info("first", BZ_F_INT("n", 1));
    bz_log_info("second", BZ_F_STR("s", "x"));
    bz_log_err("third");
    bz_log_info("fourth");
    bz_log_batch(false);
    bz_log_set_fd(-1);
    close(fds[1]);
    char got[2048] = {0};
    ssize_t n = read(fds[0], got, sizeof got - 1);
    close(fds[0]);
    assert_true(n > 0);
    assert_int_equal(strlen(got), (size_t)n); /* no NUL bytes in the output */
    const char *want[] = {"\"msg\":\"first\",\"n\":1}", "\"msg\":\"second\",\"s\":\"x\"}",
                          "\"msg\":\"third\"}", "\"msg\":\"fourth\"}"};
    char *line = got;
    for (int i = 0; i < 4; i++) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        assert_true(line[0] == '{');
        assert_non_null(strstr(line, want[i]));
        line = nl + 1;
    }
    assert_int_equal(*line, '\0');
    bz_log_setup(BZ_LOG_INFO, BZ_LOG_TEXT);
}

/* ---- errors ---- */

static void error_values(void **state)
{
    bz_error e;
    assert_int_equal(bz_err_set(&e, BZ_ERR_NOT_FOUND, "item %d does not exist", 42), BZ_ERR_NOT_FOUND);
    assert_string_equal(e.msg, "item 42 does not exist");
    assert_string_equal(bz_err_kind_name(e.kind), "not_found");
    assert_int_equal(bz_err_from_errno(-ECANCELED), BZ_ERR_CANCELLED);
    assert_int_equal(bz_err_from_errno(ETIMEDOUT), BZ_ERR_TIMEOUT);
    bz_err_clear(&e);
    assert_int_equal(e.kind, BZ_OK);
    assert_int_equal(bz_err_set(NULL, BZ_ERR_IO, "x"), BZ_ERR_IO);
}

/* ---- config ---- */


/* ---- flag tables (<bazaar/flags.h>) ---- */

static int odd_only(const char *v, void *dst, char *why, size_t whylen)
{
    int n = atoi(v);
    if (n % 2 == 0)
        return bz_fail_msg(why, whylen, "want an odd number");
    *(int *)dst = n;
    return 0;
}

static void flags_table_env_and_messages(void **state)
{
    static char addr[64], name[8], cert[64];
    static int n, color, odd;
    static int64_t ttl, big;
    static bool on;
    static const char *const colors[] = {"red", "green", "blue", NULL};
    static const char *const cmds[] = {"run", "check"};
    static const bz_flag t[] = {
        {.name = "addr", .type = BZ_FLAG_ADDR, .opts = BZ_FLAG_OFF, .def = ":80", .dst = addr, .cap = sizeof addr, .help = "where"},
        {.name = "name", .type = BZ_FLAG_STRING, .def = "x", .dst = name, .cap = sizeof name, .help = "who"},
        {.name = "n", .type = BZ_FLAG_INT, .def = "3", .dst = &n, .min = 1, .max = 9, .help = "how many"},
        {.name = "color", .type = BZ_FLAG_ENUM, .def = "red", .dst = &color, .choices = colors, .help = "which"},
        {.name = "ttl", .type = BZ_FLAG_DURATION, .def = "1s", .dst = &ttl, .min = 1, .help = "how long"},
        {.name = "big", .type = BZ_FLAG_SIZE, .def = "1KiB", .dst = &big, .cmds = 2, .help = "check only"},
        {.name = "on", .type = BZ_FLAG_BOOL, .def = "off", .dst = &on, .help = "whether"},
        {.name = "odd", .type = BZ_FLAG_FUNC, .def = "1", .dst = &odd, .parse = odd_only, .help = "odd"},
        {.name = "cert", .type = BZ_FLAG_FILE, .def = "", .dst = cert, .cap = sizeof cert, .help = "a file"},
    };
    char err[512];
    bz_flags *fs = bz_flags_new("todo", "TODO");
    bz_flags_add(fs, t, sizeof t / sizeof t[0]);
    bz_flags_commands(fs, cmds, 2, NULL);
    char *a0[] = {"todo", NULL};
    assert_int_equal(bz_flags_parse(fs, 1, a0, err, sizeof err), BZ_FLAGS_OK);
    assert_string_equal(addr, ":80");
    assert_int_equal(n, 3);
    assert_int_equal(color, 0);
    assert_true(ttl == BZ_NS_PER_S);
    assert_false(on);
    /* defaults < environment < flags; both spellings of a flag */
    setenv("TODO_N", "5", 1);
    setenv("TODO_COLOR", "blue", 1);
    setenv("TODO_ON", "true", 1);
    char *a1[] = {"todo", "--n=7", "--addr", "off", "--odd", "9", NULL};
    assert_int_equal(bz_flags_parse(fs, 6, a1, err, sizeof err), BZ_FLAGS_OK);
    assert_int_equal(n, 7);
    assert_int_equal(color, 2);
    assert_true(on);
    assert_string_equal(addr, "");
    assert_int_equal(odd, 9);
    assert_int_equal(bz_flags_command(fs), 0);
    setenv("TODO_N", "10", 1);
    assert_int_equal(bz_flags_parse(fs, 1, a0, err, sizeof err), -1);
    assert_string_equal(err, "todo: invalid value \"10\" for TODO_N (--n): want a whole number <= 9");
    unsetenv("TODO_N");
    unsetenv("TODO_COLOR");
    unsetenv("TODO_ON");
    struct {
        const char *a, *b, *want;
    } bad[] = {
        {"--color", "pink", "todo: invalid value \"pink\" for --color: want red, green or blue"},
        {"--odd", "4", "todo: invalid value \"4\" for --odd: want an odd number"},
        {"--name", "much-too-long", "todo: invalid value \"much-too-long\" for --name: too long (at most 7 bytes)"},
        {"--addr", "nowhere", "todo: invalid value \"nowhere\" for --addr: want [host]:port, e.g. :8080 or 127.0.0.1:8080, or off"},
        {"--ttl", "0", "todo: invalid value \"0\" for --ttl: want a duration > 0"},
        {"--on", "maybe", "todo: invalid value \"maybe\" for --on: want on or off"},
        {"--big", "1KiB", "todo: flag --big does not apply to \"run\""},
        {"--cert", "/nonexistent/x", "todo: invalid value \"/nonexistent/x\" for --cert: cannot read it: No such file or directory"},
        {"--what", "1", "todo: unknown flag --what (see todo --help)"},
        {"walk", NULL, "todo: unknown command \"walk\" (want run or check)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *a[] = {"todo", (char *)bad[i].a, (char *)bad[i].b, NULL};
        assert_int_equal(bz_flags_parse(fs, bad[i].b ? 3 : 2, a, err, sizeof err), -1);
        assert_string_equal(err, bad[i].want);
    }
    char *a2[] = {"todo", "check", "--big", "2MiB", NULL};
    assert_int_equal(bz_flags_parse(fs, 4, a2, err, sizeof err), BZ_FLAGS_OK);
    assert_int_equal(bz_flags_command(fs), 1);
    assert_int_equal(big, 2 << 20);
    char *a3[] = {"todo", "--n", "2", "-h", NULL};
    assert_int_equal(bz_flags_parse(fs, 4, a3, err, sizeof err), BZ_FLAGS_HELP);
    /* usage and the env file come from the table */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    bz_flags_usage(fs, f);
    fclose(f);
    assert_non_null(strstr(text, "  --ttl                      how long\n"
                                 "                             default: 1s; env TODO_TTL\n"));
    free(text);
    f = open_memstream(&text, &len);
    bz_flags_env_template(fs, f);
    fclose(f);
    assert_non_null(strstr(text, "\n# --color: which\n#TODO_COLOR=red\n"));
    assert_non_null(strstr(text, "\n# --big: check only (todo check only)\n#TODO_BIG=1KiB\n"));
    free(text);
    bz_flags_free(fs);
}

static void notations(void **state)
{
    int64_t ns, b;
    assert_int_equal(bz_parse_duration("250ms", &ns), 0);
    assert_true(ns == 250 * BZ_NS_PER_MS);
    assert_int_equal(bz_parse_duration("1.5s", &ns), 0);
    assert_true(ns == 1500 * BZ_NS_PER_MS);
    assert_int_equal(bz_parse_duration("1h30m", &ns), 0);
    assert_true(ns == 5400 * BZ_NS_PER_S);
    assert_int_equal(bz_parse_duration("0", &ns), 0);
    assert_int_equal(ns, 0);
    assert_int_equal(bz_parse_duration("1ns", &ns), 0); /* --slow-query 1ns: log every statement */
    assert_int_equal(ns, 1);
    assert_int_equal(bz_parse_duration("250us", &ns), 0);
    assert_int_equal(ns, 250000);
    assert_int_equal(bz_parse_duration("5", &ns), -1);
    assert_int_equal(bz_parse_duration("", &ns), -1);
    assert_int_equal(bz_parse_duration("s", &ns), -1);
    assert_int_equal(bz_parse_duration("99999999999h", &ns), -1);
    assert_int_equal(bz_parse_size("256MiB", &b), 0);
    assert_int_equal(b, 256LL << 20);
    assert_int_equal(bz_parse_size("1GiB", &b), 0);
    assert_int_equal(bz_parse_size("-1", &b), -1);
    assert_int_equal(bz_parse_size("99999999999999GiB", &b), -1);
    char host[64];
    int port;
    assert_int_equal(bz_parse_addr("[::1]:8080", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 8080);
    assert_int_equal(bz_parse_addr(":0", host, sizeof host, &port), 0);
    assert_string_equal(host, "");
    assert_int_equal(bz_parse_addr("::1:80", host, sizeof host, &port), -1);
}

/* The --cache Redis forms: credentials percent-decoded, sentinels in
 * order, the CA parameter of rediss://, and one-line refusals that never
 * quote the password. */
static void redis_urls(void **state)
{
    (void)state;
    bz_redis_url u;
    char why[256];
    assert_int_equal(bz_redis_url_parse("redis://127.0.0.1:6379/2", &u, why, sizeof why), 0);
    assert_false(u.has_pass || u.sentinel || u.tls);
    assert_int_equal(u.naddrs, 1);
    assert_string_equal(u.addrs[0].host, "127.0.0.1");
    assert_int_equal(u.addrs[0].port, 6379);
    assert_int_equal(u.db, 2);
    assert_int_equal(bz_redis_url_parse("redis://:p%40ss%3Aw%2Fd@h:1", &u, why, sizeof why), 0);
    assert_true(u.has_pass);
    assert_string_equal(u.user, "");
    assert_string_equal(u.pass, "p@ss:w/d");
    assert_int_equal(u.db, 0);
    assert_int_equal(bz_redis_url_parse("redis://a%2Bb:raw@pw@[::1]:7000/15", &u, why, sizeof why), 0);
    assert_string_equal(u.user, "a+b");
    assert_string_equal(u.pass, "raw@pw"); /* the last '@' ends the password */
    assert_string_equal(u.addrs[0].host, "::1");
    assert_int_equal(u.db, 15);
    assert_int_equal(bz_redis_url_parse("redis-sentinel://app:s3cret@s1:26379,s2:26380,s3:26381/mymaster/4", &u, why,
                                        sizeof why),
                     0);
    assert_true(u.sentinel);
    assert_int_equal(u.naddrs, 3);
    assert_string_equal(u.addrs[2].host, "s3");
    assert_int_equal(u.addrs[2].port, 26381);
    assert_string_equal(u.master, "mymaster");
    assert_int_equal(u.db, 4);
    assert_string_equal(u.user, "app");
    assert_int_equal(bz_redis_url_parse("rediss://:pw12@cache.internal:6380/1?ca=%2Fetc%2Fca.pem", &u, why, sizeof why),
                     0);
    assert_true(u.tls);
    assert_string_equal(u.ca, "/etc/ca.pem");
    assert_string_equal(u.addrs[0].host, "cache.internal");
    assert_int_equal(u.db, 1);
    const char *bad[] = {
        "redis://u@h:1/0",        "redis://:@h:1/0",           "redis://:s3cret%4@h:1/0",
        "redis://:s3cret@h/0",    "redis://:s3cret@h:1/100",   "redis://:s3cret@h:1/0?ca=/x",
        "redis-sentinel://h:1",   "redis-sentinel://h:1,/m/0", "redis-sentinel://h:1,h:2,h:3,h:4,h:5,h:6,h:7,h:8,h:9/m",
        "rediss://h:1/0?verify=0", "rediss://h:1/0?ca=",        "redis://:s3cret@h:1/0#frag",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        why[0] = '\0';
        assert_int_equal(bz_redis_url_parse(bad[i], &u, why, sizeof why), -1);
        assert_true(why[0] != '\0');
        assert_null(strstr(why, "s3cret"));
    }
}

/* ---- the circuit breaker ---- */

#define SEC 1000000000LL

static void breaker_opens_probes_and_closes(void **state)
{
    bz_breaker b;
    int64_t retry = -1;
    bz_breaker_init(&b, "db", 3, 1 * SEC);
    /* closed: failures below the threshold, interrupted by any answer */
    for (int round = 0; round < 3; round++) {
        assert_int_equal(bz_breaker_allow(&b, 0, &retry), BZ_BREAKER_PASS);
        assert_false(bz_breaker_report(&b, false, BZ_BREAKER_FAILURE, 0, 10));
        assert_false(bz_breaker_report(&b, false, BZ_BREAKER_FAILURE, 0, 10));
        assert_false(bz_breaker_report(&b, false, BZ_BREAKER_SUCCESS, 0, 10)); /* e.g. a unique violation */
    }
    /* neutral outcomes (refused, cancelled) neither count nor reset */
    assert_false(bz_breaker_report(&b, false, BZ_BREAKER_FAILURE, 0, 10));
    assert_false(bz_breaker_report(&b, false, BZ_BREAKER_NEUTRAL, 0, 10));
    assert_false(bz_breaker_report(&b, false, BZ_BREAKER_FAILURE, 0, 10));
    assert_int_equal(bz_breaker_get_state(&b), BZ_BREAKER_CLOSED);
    /* the third in a row opens it, once */
    assert_true(bz_breaker_report(&b, false, BZ_BREAKER_FAILURE, 0, 100));
    assert_int_equal(bz_breaker_get_state(&b), BZ_BREAKER_OPEN);
    assert_false(bz_breaker_report(&b, false, BZ_BREAKER_FAILURE, 0, 200)); /* calls in flight change nothing */
    /* open: refused, told when the probe may go */
    assert_int_equal(bz_breaker_allow(&b, 100 + SEC / 4, &retry), BZ_BREAKER_REJECT);
    assert_int_equal(retry, SEC - SEC / 4);
    assert_int_equal(bz_breaker_allow(&b, 100 + SEC - 1, &retry), BZ_BREAKER_REJECT);
    assert_int_equal(retry, 1000000); /* never less than 1 ms */
    /* then one probe; the others are still refused */
    assert_int_equal(bz_breaker_allow(&b, 100 + SEC, &retry), BZ_BREAKER_PROBE);
    assert_int_equal(bz_breaker_get_state(&b), BZ_BREAKER_HALF_OPEN);
    assert_int_equal(bz_breaker_allow(&b, 100 + SEC, &retry), BZ_BREAKER_REJECT);
    assert_int_equal(retry, SEC);
    /* the probe fails: open for another interval from then */
    assert_true(bz_breaker_report(&b, true, BZ_BREAKER_FAILURE, 0, 3 * SEC));
    assert_int_equal(bz_breaker_allow(&b, 3 * SEC + SEC / 2, &retry), BZ_BREAKER_REJECT);
    assert_int_equal(retry, SEC / 2);
    /* a probe that learns nothing hands the probe on at once */
    assert_int_equal(bz_breaker_allow(&b, 4 * SEC, &retry), BZ_BREAKER_PROBE);
    assert_false(bz_breaker_report(&b, true, BZ_BREAKER_NEUTRAL, 0, 4 * SEC));
    assert_int_equal(bz_breaker_get_state(&b), BZ_BREAKER_OPEN);
    assert_int_equal(bz_breaker_allow(&b, 4 * SEC + 1, &retry), BZ_BREAKER_PROBE);
    /* its first success closes it */
    assert_false(bz_breaker_report(&b, true, BZ_BREAKER_SUCCESS, 0, 4 * SEC + 2));
    assert_int_equal(bz_breaker_get_state(&b), BZ_BREAKER_CLOSED);
    assert_int_equal(bz_breaker_allow(&b, 4 * SEC + 3, &retry), BZ_BREAKER_PASS);
    /* the count starts again from zero */
    assert_false(bz_breaker_report(&b, false, BZ_BREAKER_FAILURE, 0, 5 * SEC));
    assert_false(bz_breaker_report(&b, false, BZ_BREAKER_FAILURE, 0, 5 * SEC));
    assert_int_equal(bz_breaker_get_state(&b), BZ_BREAKER_CLOSED);
    /* open again; a call that was in flight and got an answer closes it
     * without waiting for a probe (the server answered) */
    assert_true(bz_breaker_report(&b, false, BZ_BREAKER_FAILURE, 0, 5 * SEC));
    assert_false(bz_breaker_report(&b, false, BZ_BREAKER_SUCCESS, 0, 5 * SEC + 1));
    assert_int_equal(bz_breaker_get_state(&b), BZ_BREAKER_CLOSED);
    /* every state change and refusal was counted */
    assert_int_equal(atomic_load(&b.to_open), 4);      /* 2 opens, 1 failed probe, 1 neutral probe */
    assert_int_equal(atomic_load(&b.to_half_open), 3);
    assert_int_equal(atomic_load(&b.to_closed), 2);
    assert_int_equal(atomic_load(&b.rejected), 4);
    assert_string_equal(bz_breaker_state_name(BZ_BREAKER_HALF_OPEN), "half_open");
    bz_buf o = BZ_BUF_INIT;
    const bz_breaker *bs[] = {&b, NULL};
    bz_breaker_metrics(&o, bs, 2);
    assert_non_null(strstr(o.data, "# TYPE bazaar_breaker_state gauge\nbazaar_breaker_state{dependency=\"db\"} 0\n"));
    assert_non_null(strstr(o.data, "bazaar_breaker_transitions_total{dependency=\"db\",to=\"open\"} 4\n"));
    assert_non_null(strstr(o.data, "bazaar_breaker_rejected_total{dependency=\"db\"} 4\n"));
    bz_buf_free(&o);

    /* silence: one call that got no answer opens it at once when nothing
     * at all was answered during the second half of its wait ... */
    bz_breaker_init(&b, "cache", 3, 1 * SEC);
    assert_false(bz_breaker_report(&b, false, BZ_BREAKER_SUCCESS, 1 * SEC, 2 * SEC)); /* last answer at 2 s */
    assert_false(bz_breaker_report(&b, false, BZ_BREAKER_FAILURE, 1 * SEC, 3 * SEC - 1000)); /* not 1 of 2 s */
    assert_int_equal(bz_breaker_get_state(&b), BZ_BREAKER_CLOSED);
    assert_true(bz_breaker_report(&b, false, BZ_BREAKER_FAILURE, 1 * SEC, 4 * SEC)); /* 2 of 3 s */
    assert_int_equal(bz_breaker_get_state(&b), BZ_BREAKER_OPEN);
    /* ... but not when other calls got answers meanwhile (a slow call) */
    bz_breaker_init(&b, "cache", 3, 1 * SEC);
    assert_false(bz_breaker_report(&b, false, BZ_BREAKER_SUCCESS, 1 * SEC, 3 * SEC + SEC / 2));
    assert_false(bz_breaker_report(&b, false, BZ_BREAKER_FAILURE, 2 * SEC, 4 * SEC));
    assert_false(bz_breaker_report(&b, false, BZ_BREAKER_SUCCESS, 4 * SEC, 5 * SEC));
    assert_false(bz_breaker_report(&b, false, BZ_BREAKER_FAILURE, 4 * SEC, 5 * SEC + SEC / 2));
    assert_int_equal(bz_breaker_get_state(&b), BZ_BREAKER_CLOSED);

    /* failures 0: no breaker at all */
    bz_breaker_init(&b, "off", 0, SEC);
    for (int i = 0; i < 100; i++)
        assert_false(bz_breaker_report(&b, false, BZ_BREAKER_FAILURE, 0, 0));
    assert_int_equal(bz_breaker_allow(&b, 0, &retry), BZ_BREAKER_PASS);
}

/* Many threads at the moment a probe is due: exactly one gets it, every
 * round; many threads reporting the failures that open it: exactly one
 * opens it. */
typedef struct {
    bz_breaker *b;
    pthread_barrier_t *start, *done;
    _Atomic int probes, opens, ready;
    int rounds, threads;
} race;

/* After the barrier (whose waiters wake one by one), spin until every
 * thread is here, so that the calls below really overlap. */
static void line_up(race *x, int round, int phase)
{
    int want = (round * 2 + phase + 1) * x->threads;
    atomic_fetch_add(&x->ready, 1);
    for (int spins = 0; atomic_load(&x->ready) < want; spins++)
        if (spins > 20000) /* a thread not on a core: let it run */
            sched_yield();
}

static void *racer(void *p)
{
    race *x = p;
    for (int r = 0; r < x->rounds; r++) {
        pthread_barrier_wait(x->start); /* the breaker is closed */
        line_up(x, r, 0);
        for (int i = 0; i < 3; i++)
            if (bz_breaker_report(x->b, false, BZ_BREAKER_FAILURE, 0, (int64_t)r * 10 * SEC))
                atomic_fetch_add(&x->opens, 1);
        pthread_barrier_wait(x->done);
        pthread_barrier_wait(x->start); /* now open, its probe due */
        line_up(x, r, 1);
        if (bz_breaker_allow(x->b, (int64_t)r * 10 * SEC + 2 * SEC, NULL) == BZ_BREAKER_PROBE)
            atomic_fetch_add(&x->probes, 1);
        pthread_barrier_wait(x->done);
    }
    return NULL;
}

static void breaker_one_probe_across_threads(void **state)
{
    enum { THREADS = 4, ROUNDS = 500 };
    bz_breaker b;
    bz_breaker_init(&b, "db", 3, 1 * SEC);
    pthread_barrier_t start, done;
    pthread_barrier_init(&start, NULL, THREADS + 1);
    pthread_barrier_init(&done, NULL, THREADS + 1);
    race x = {.b = &b, .start = &start, .done = &done, .rounds = ROUNDS, .threads = THREADS};
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, racer, &x), 0);
    for (int r = 0; r < ROUNDS; r++) {
        pthread_barrier_wait(&start);
        pthread_barrier_wait(&done);
        assert_int_equal(atomic_load(&x.opens), r + 1);
        assert_int_equal(bz_breaker_get_state(&b), BZ_BREAKER_OPEN);
        pthread_barrier_wait(&start);
        pthread_barrier_wait(&done);
        assert_int_equal(atomic_load(&x.probes), r + 1);
        assert_int_equal(bz_breaker_get_state(&b), BZ_BREAKER_HALF_OPEN);
        bz_breaker_report(&b, true, BZ_BREAKER_SUCCESS, 0, 0); /* closed for the next round */
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&done);
    assert_int_equal(atomic_load(&b.to_open), ROUNDS);
    assert_int_equal(atomic_load(&b.to_half_open), ROUNDS);
    assert_int_equal(atomic_load(&b.to_closed), ROUNDS);
    assert_int_equal(atomic_load(&b.rejected), (int64_t)ROUNDS * (THREADS - 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(arena_alloc_align_and_reset),
        cmocka_unit_test(arena_buffers_are_freed_with_the_arena),
        cmocka_unit_test(str_ops),
        cmocka_unit_test(buf_ops),
        cmocka_unit_test(json_escape_every_byte_at_every_offset),
        cmocka_unit_test(json_escape_long_strings),
        cmocka_unit_test(log_duration_format),
        cmocka_unit_test(random_hex_ids),
        cmocka_unit_test(key_bytes_are_fresh_without_a_syscall_each),
        cmocka_unit_test(trace_and_request_ids_are_unique),
        cmocka_unit_test(decimal_formatting),
        cmocka_unit_test(clock_formats),
        cmocka_unit_test(log_json_and_text),
        cmocka_unit_test(log_batch_holds_exactly_the_lines),
        cmocka_unit_test(error_values),
        cmocka_unit_test(flags_table_env_and_messages),
        cmocka_unit_test(notations),
        cmocka_unit_test(redis_urls),
        cmocka_unit_test(breaker_opens_probes_and_closes),
        cmocka_unit_test(breaker_one_probe_across_threads),
    };
    return cmocka_run_group_tests_name("base", tests, NULL, NULL);
}

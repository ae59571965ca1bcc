/* base/log.c — see log.h. */
#include <bazaar/log.h>

#include <bazaar/buf.h>
#include <bazaar/clock.h>
#include <bazaar/trace.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static bz_log_level g_level = BZ_LOG_INFO;
static bz_log_format g_format = BZ_LOG_TEXT;
static int g_fd = STDERR_FILENO;
typedef const bz_trace *(*trace_source)(void);
/* Atomic: set by a loop thread while others may be logging. */
static _Atomic(trace_source) g_trace_source;

void bz_log_set_trace_source(const bz_trace *(*fn)(void)) { atomic_store(&g_trace_source, fn); }

void bz_log_setup(bz_log_level level, bz_log_format format)
{
    g_level = level;
    g_format = format;
}

bz_log_format bz_log_default_format(void) { return isatty(STDERR_FILENO) ? BZ_LOG_TEXT : BZ_LOG_JSON; }

bool bz_log_enabled(bz_log_level level) { return level >= g_level; }

void bz_log_set_fd(int fd) { g_fd = fd < 0 ? STDERR_FILENO : fd; }

static const char *level_name(bz_log_level l, bool upper)
{
    static const char *lo[] = {"debug", "info", "warn", "error"};
    static const char *up[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    return ((unsigned)l < 4) ? (upper ? up[l] : lo[l]) : "?";
}

/* Text values are quoted only when they contain a space, quote or '='. */
static void text_value(bz_buf *b, bz_str s)
{
    bool quote = s.n == 0;
    for (size_t i = 0; i < s.n && !quote; i++)
        quote = s.p[i] == ' ' || s.p[i] == '"' || s.p[i] == '=' || (unsigned char)s.p[i] < 0x20;
    if (!quote) {
        bz_buf_append_str(b, s);
        return;
    }
    bz_buf_putc(b, '"');
    bz_buf_append_json_escaped(b, s);
    bz_buf_putc(b, '"');
}

/* One buffer per thread, reused: logging on the hot path (access log)
 * does no allocation once warmed up.  A key destructor frees it when the
 * thread exits. */
static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static _Thread_local bz_buf b;
/* Event-loop threads batch their lines (the access log is a line per
 * request): appended here and written by bz_log_flush, which the loop
 * calls before it waits for events, or when 16 KiB have gathered — one
 * write(2) per loop iteration instead of one per request, as nginx's
 * `access_log ... buffer=`.  Errors are never held back. */
static _Thread_local bz_buf pending;
static _Thread_local bool batching;
#define BATCH_MAX 16384

static void write_all(const char *p, size_t n)
{
    /* A short write to a pipe is finished in a loop. */
    size_t off = 0;
    while (off < n) {
        ssize_t k = write(g_fd, p + off, n - off);
        if (k <= 0)
            break;
        off += (size_t)k;
    }
}

void bz_log_flush(void)
{
    if (pending.len) {
        write_all(pending.data, pending.len);
        pending.len = 0;
    }
}

void bz_log_batch(bool on)
{
    if (!on)
        bz_log_flush();
    batching = on;
}

/* ---- secrets ---- */

#define MAX_SECRETS 8
static char g_secrets[MAX_SECRETS][256];
static int g_nsecrets;

void bz_log_secret(const char *sec)
{
    size_t n = strlen(sec);
    if (n < 4 || n >= sizeof g_secrets[0] || g_nsecrets >= MAX_SECRETS)
        return;
    for (int i = 0; i < g_nsecrets; i++)
        if (!strcmp(g_secrets[i], sec))
            return;
    memcpy(g_secrets[g_nsecrets++], sec, n + 1);
}

/* [start, end) of the password in url's userinfo, or false. */
static bool url_password(const char *url, size_t *start, size_t *end)
{
    const char *p = strstr(url, "://");
    if (!p)
        return false;
    p += 3;
    /* up to the query, not the path: a raw '/' in a (malformed) password
     * must not end the search before its '@' */
    size_t auth_end = strcspn(p, "?#");
    const char *at = NULL;
    for (size_t i = 0; i < auth_end; i++)
        if (p[i] == '@')
            at = p + i; /* the last one: a password may hold an '@' */
    if (!at)
        return false;
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (!colon)
        return false;
    *start = (size_t)(colon + 1 - url);
    *end = (size_t)(at - url);
    return true;
}

/* [start, end) of the value of a "password=" parameter, or false. */
static bool param_password(const char *url, size_t from, size_t *start, size_t *end)
{
    for (const char *p = strstr(url + from, "password="); p; p = strstr(p + 1, "password=")) {
        if (p != url && p[-1] != '?' && p[-1] != '&' && p[-1] != ' ')
            continue;
        *start = (size_t)(p + 9 - url);
        *end = *start + strcspn(p + 9, "& #");
        return true;
    }
    return false;
}

void bz_redact_url(const char *url, char *out, size_t cap)
{
    if (!cap)
        return;
    bz_buf o = BZ_BUF_INIT;
    size_t pos = 0, s0, s1;
    for (int guard = 0; guard < 8; guard++) {
        bool found = guard == 0 ? url_password(url, &s0, &s1) : false;
        if (!found)
            found = param_password(url, pos, &s0, &s1);
        if (!found || s0 < pos)
            break;
        bz_buf_append(&o, url + pos, s0 - pos);
        bz_buf_append_c(&o, "***");
        pos = s1;
    }
    bz_buf_append_c(&o, url + pos);
    size_t n = o.len < cap - 1 ? o.len : cap - 1;
    if (n)
        memcpy(out, o.data, n);
    out[n] = '\0';
    bz_buf_free(&o);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void secret_span(const char *url, size_t s0, size_t s1)
{
    char raw[256], dec[256];
    size_t n = s1 - s0 < sizeof raw - 1 ? s1 - s0 : sizeof raw - 1;
    memcpy(raw, url + s0, n);
    raw[n] = '\0';
    bz_log_secret(raw);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (raw[i] == '%' && i + 2 < n + 1 && hexval(raw[i + 1]) >= 0 && hexval(raw[i + 2]) >= 0) {
            dec[k++] = (char)(hexval(raw[i + 1]) * 16 + hexval(raw[i + 2]));
            i += 2;
        } else {
            dec[k++] = raw[i];
        }
    }
    dec[k] = '\0';
    bz_log_secret(dec);
}

void bz_log_url_secrets(const char *url)
{
    size_t s0, s1, pos = 0;
    if (url_password(url, &s0, &s1)) {
        secret_span(url, s0, s1);
        pos = s1;
    }
    for (int guard = 0; guard < 8 && param_password(url, pos, &s0, &s1); guard++) {
        secret_span(url, s0, s1);
        pos = s1;
    }
}

/* Replaces every registered secret in b with "***". */
static void scrub(bz_buf *line)
{
    for (int i = 0; i < g_nsecrets; i++) {
        size_t sn = strlen(g_secrets[i]);
        if (!line->len || !memmem(line->data, line->len, g_secrets[i], sn))
            continue;
        bz_buf o = BZ_BUF_INIT;
        size_t pos = 0;
        for (;;) {
            const char *hit = memmem(line->data + pos, line->len - pos, g_secrets[i], sn);
            if (!hit)
                break;
            bz_buf_append(&o, line->data + pos, (size_t)(hit - (line->data + pos)));
            bz_buf_append_c(&o, "***");
            pos = (size_t)(hit - line->data) + sn;
        }
        bz_buf_append(&o, line->data + pos, line->len - pos);
        bz_buf_clear(line);
        bz_buf_append(line, o.data, o.len);
        bz_buf_free(&o);
    }
}

static void free_buf(void *p)
{
    bz_log_flush();
    bz_buf_free(&pending);
    bz_buf_free(p);
}
static void make_key(void) { pthread_key_create(&g_key, free_buf); }

void bz__log(bz_log_level level, const char *msg, ...)
{
    if (!b.data) {
        pthread_once(&g_once, make_key);
        pthread_setspecific(g_key, &b); /* frees both buffers, flushing first */
        bz_buf_reserve(&b, 512);
    }
    /* A batched line is written straight into the batch (no copy), unless
     * secrets must be scrubbed from it first. */
    bool direct = batching && level < BZ_LOG_ERROR && !g_nsecrets;
    bz_buf *o = direct ? &pending : &b;
    if (!direct)
        bz_buf_clear(o);
    char ts[32];
    bz_fmt_rfc3339_us(ts, bz_wall_us());
    bool json = g_format == BZ_LOG_JSON;
    if (json) {
        bz_buf_append_c(o, "{\"ts\":\"");
        bz_buf_append(o, ts, 27);
        bz_buf_append_c(o, "\",\"level\":\"");
        bz_buf_append_c(o, level_name(level, false));
        bz_buf_append_c(o, "\",\"msg\":\"");
        bz_buf_append_json_escaped(o, bz_str_c(msg));
        bz_buf_putc(o, '"');
    } else {
        bz_buf_append(o, ts, 27);
        bz_buf_putc(o, ' ');
        bz_buf_append_c(o, level_name(level, true));
        bz_buf_putc(o, ' ');
        bz_buf_append_c(o, msg);
    }
    trace_source src = atomic_load_explicit(&g_trace_source, memory_order_relaxed);
    const bz_trace *tr = src ? src() : NULL;
    if (tr) {
        bz_buf_append_c(o, json ? ",\"trace_id\":\"" : " trace_id=");
        bz_buf_append_c(o, tr->trace_id);
        bz_buf_append_c(o, json ? "\",\"span_id\":\"" : " span_id=");
        bz_buf_append_c(o, tr->span_id);
        if (json)
            bz_buf_putc(o, '"');
    }
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        bz_field f = va_arg(ap, bz_field);
        if (f.type == BZ_FT_END)
            break;
        bz_str sv = BZ_STR_NULL;
        bool is_str = f.type == BZ_FT_STR || f.type == BZ_FT_STRN;
        if (f.type == BZ_FT_STR)
            sv = bz_str_c(f.v.s ? f.v.s : "");
        else if (f.type == BZ_FT_STRN)
            sv = bz_str_make(f.v.s ? f.v.s : "", f.v.s && f.len > 0 ? (size_t)f.len : 0);
        if (json) {
            /* Keys are identifiers from code (log.h): written as they are. */
            size_t kn = strlen(f.key);
            bz_buf_reserve(o, kn + 4);
            char *w = o->data + o->len;
            w[0] = ',';
            w[1] = '"';
            memcpy(w + 2, f.key, kn);
            w[kn + 2] = '"';
            w[kn + 3] = ':';
            o->len += kn + 4;
            o->data[o->len] = '\0';
        } else {
            bz_buf_putc(o, ' ');
            bz_buf_append_c(o, f.key);
            bz_buf_putc(o, '=');
        }
        if (is_str) {
            if (json) {
                bz_buf_putc(o, '"');
                bz_buf_append_json_escaped(o, sv);
                bz_buf_putc(o, '"');
            } else {
                text_value(o, sv);
            }
        } else if (f.type == BZ_FT_INT) {
            bz_buf_append_i64(o, f.v.i);
        } else if (f.v.d >= 0 && f.v.d < 1e12) {
            /* Fixed point, microsecond resolution, without printf (this is
             * on every request's access-log line). */
            int64_t u = (int64_t)(f.v.d * 1000.0 + 0.5);
            bz_buf_append_i64(o, u / 1000);
            int frac = (int)(u % 1000);
            if (frac) {
                char d[5] = {'.', (char)('0' + frac / 100), (char)('0' + frac / 10 % 10), (char)('0' + frac % 10), 0};
                int n = 4;
                while (d[n - 1] == '0')
                    n--;
                bz_buf_append(o, d, (size_t)n);
            }
        } else {
            bz_buf_printf(o, "%.6g", f.v.d);
        }
    }
    va_end(ap);
    if (json)
        bz_buf_putc(o, '}');
    bz_buf_putc(o, '\n');
    if (direct) {
        if (pending.len >= BATCH_MAX)
            bz_log_flush();
        return;
    }
    if (g_nsecrets)
        scrub(o);
    if (batching && level < BZ_LOG_ERROR) {
        bz_buf_append(&pending, b.data, b.len);
        if (pending.len >= BATCH_MAX)
            bz_log_flush();
        return;
    }
    bz_log_flush(); /* keep the order of this thread's lines */
    write_all(b.data, b.len);
}

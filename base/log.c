/* base/log.c — see log.h. */
#include <bazaar/log.h>

#include "base/log-private.h"

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
 * request): appended here and written when 64 KiB have gathered or the
 * first has waited BZ_LOG_HOLD_NS (log.h) — a write(2) per 64 KiB under
 * load rather than one per loop turn, which was a tenth of a system call
 * per request.  Errors are never held back. */
static _Thread_local bz_buf pending;
static _Thread_local bool batching;
static _Thread_local int64_t pending_due; /* BZ_NO_DEADLINE while pending is empty */
#define BATCH_MAX 65536

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
    pending_due = BZ_NO_DEADLINE;
}

int64_t bz_log_flush_due(void) { return pending.len ? pending_due : BZ_NO_DEADLINE; }

/* The first line of a batch starts its clock. */
static void batch_opened(void)
{
    if (pending.len == 0)
        pending_due = bz_now_ns() + BZ_LOG_HOLD_NS;
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

/* The buffer a line at level is written into: the batch itself when
 * batched lines need no scrubbing (no copy), else the thread's scratch
 * line (cleared). */
static bz_buf *line_open(bz_log_level level, bool *direct)
{
    if (!b.data) {
        pthread_once(&g_once, make_key);
        pthread_setspecific(g_key, &b); /* frees both buffers, flushing first */
        bz_buf_reserve(&b, 512);
    }
    *direct = batching && level < BZ_LOG_ERROR && !g_nsecrets;
    if (*direct)
        batch_opened();
    bz_buf *o = *direct ? &pending : &b;
    if (!*direct)
        bz_buf_clear(o);
    return o;
}

/* The line in o is whole (ends in '\n'): batched, or scrubbed and written. */
static void line_close(bz_buf *o, bool direct, bz_log_level level)
{
    if (direct) {
        if (pending.len >= BATCH_MAX)
            bz_log_flush();
        return;
    }
    if (g_nsecrets)
        scrub(o);
    if (batching && level < BZ_LOG_ERROR) {
        batch_opened();
        bz_buf_append(&pending, b.data, b.len);
        if (pending.len >= BATCH_MAX)
            bz_log_flush();
        return;
    }
    bz_log_flush(); /* keep the order of this thread's lines */
    write_all(b.data, b.len);
}

char *bz__log_ms(char *w, double d)
{
    if (!(d >= 0 && d < 1e12))
        return w + snprintf(w, 32, "%.6g", d);
    /* Fixed point, microsecond resolution, without printf (this is on
     * every request's access-log line). */
    int64_t u = (int64_t)(d * 1000.0 + 0.5);
    w += bz_fmt_i64(w, u / 1000);
    int frac = (int)(u % 1000);
    if (frac) {
        w[0] = '.';
        w[1] = (char)('0' + frac / 100);
        w[2] = (char)('0' + frac / 10 % 10);
        w[3] = (char)('0' + frac % 10);
        int n = 4;
        while (w[n - 1] == '0')
            n--;
        w += n;
    }
    return w;
}

/* {"ts":"…","level":"…","msg":"<msg>" and the trace fields: every JSON
 * line's start.  w has room for 160 + 6 * msgn bytes. */
static char *json_head(char *w, bz_log_level level, const char *msg, size_t msgn, const bz_trace *tr)
{
    static const struct {
        char s[8];
        size_t n;
    } lv[] = {{"debug", 5}, {"info", 4}, {"warn", 4}, {"error", 5}, {"?", 1}};
    unsigned li = (unsigned)level < 4 ? (unsigned)level : 4;
    BZ__PUT(w, "{\"ts\":\"");
    bz_fmt_rfc3339_us(w, bz_wall_us()); /* 27 characters */
    w += 27;
    BZ__PUT(w, "\",\"level\":\"");
    memcpy(w, lv[li].s, 8); /* the name and its padding: one move */
    w += lv[li].n;
    BZ__PUT(w, "\",\"msg\":\"");
    w = bz__json_esc(w, msg, msgn);
    *w++ = '"';
    if (tr) {
        /* ids this layer made or validated as hex: no escaping; 32 and 16
         * digits but for a trace never started (all NUL) */
        size_t tn = tr->trace_id[31] && !tr->trace_id[32] ? 32 : strnlen(tr->trace_id, 32);
        size_t sn = tr->span_id[15] && !tr->span_id[16] ? 16 : strnlen(tr->span_id, 16);
        BZ__PUT(w, ",\"trace_id\":\"");
        memcpy(w, tr->trace_id, tn);
        w += tn;
        BZ__PUT(w, "\",\"span_id\":\"");
        memcpy(w, tr->span_id, sn);
        w += sn;
        *w++ = '"';
    }
    return w;
}

static _Thread_local bool open_direct; /* the line bz__log_json_begin opened */

bz_buf *bz__log_json_begin(bz_log_level level, const char *msg, size_t msgn)
{
    if (g_format != BZ_LOG_JSON)
        return NULL;
    bz_buf *o = line_open(level, &open_direct);
    trace_source src = atomic_load_explicit(&g_trace_source, memory_order_relaxed);
    char *w = json_head(bz__log_room(o, 160 + 6 * msgn), level, msg, msgn, src ? src() : NULL);
    o->len = (size_t)(w - o->data);
    return o;
}

void bz__log_json_end(bz_buf *o, char *w, bz_log_level level)
{
    w[0] = '}';
    w[1] = '\n';
    o->len = (size_t)(w + 2 - o->data);
    o->data[o->len] = '\0';
    line_close(o, open_direct, level);
}

void bz__log(bz_log_level level, const char *msg, ...)
{
    bool direct;
    bz_buf *o = line_open(level, &direct);
    trace_source src = atomic_load_explicit(&g_trace_source, memory_order_relaxed);
    const bz_trace *tr = src ? src() : NULL;
    bool json = g_format == BZ_LOG_JSON;
    if (json) {
        size_t mn = strlen(msg);
        char *w = json_head(bz__log_room(o, 160 + 6 * mn), level, msg, mn, tr);
        o->len = (size_t)(w - o->data);
    } else {
        char ts[32];
        bz_fmt_rfc3339_us(ts, bz_wall_us());
        bz_buf_append(o, ts, 27);
        bz_buf_putc(o, ' ');
        bz_buf_append_c(o, level_name(level, true));
        bz_buf_putc(o, ' ');
        bz_buf_append_c(o, msg);
        if (tr) {
            bz_buf_append_c(o, " trace_id=");
            bz_buf_append_c(o, tr->trace_id);
            bz_buf_append_c(o, " span_id=");
            bz_buf_append_c(o, tr->span_id);
        }
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
            char *w = bz__log_room(o, kn + 36 + 6 * sv.n);
            w[0] = ',';
            w[1] = '"';
            memcpy(w + 2, f.key, kn);
            w[kn + 2] = '"';
            w[kn + 3] = ':';
            w += kn + 4;
            if (is_str) {
                *w++ = '"';
                w = bz__json_esc(w, sv.p, sv.n);
                *w++ = '"';
            } else if (f.type == BZ_FT_INT) {
                w += bz_fmt_i64(w, f.v.i);
            } else {
                w = bz__log_ms(w, f.v.d);
            }
            o->len = (size_t)(w - o->data);
            o->data[o->len] = '\0';
            continue;
        }
        bz_buf_putc(o, ' ');
        bz_buf_append_c(o, f.key);
        bz_buf_putc(o, '=');
        if (is_str) {
            text_value(o, sv);
        } else if (f.type == BZ_FT_INT) {
            bz_buf_append_i64(o, f.v.i);
        } else {
            char *w = bz__log_room(o, 32);
            o->len = (size_t)(bz__log_ms(w, f.v.d) - o->data);
            o->data[o->len] = '\0';
        }
    }
    va_end(ap);
    if (json)
        bz_buf_putc(o, '}');
    bz_buf_putc(o, '\n');
    line_close(o, direct, level);
}

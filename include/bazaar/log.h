/*
 * base/log.h — leveled, structured logging on stderr.
 *
 * Each call writes one line with one write(2), so lines from different
 * threads never interleave.  Keys are identifiers from code ([a-z_0-9]),
 * written as they are; values are escaped.  Format: human text when stderr is a TTY,
 * JSON lines otherwise (or as set by --log-format).  Fields are typed
 * key/value pairs:
 *
 *     bz_log_info("listening", BZ_F_STR("addr", addr), BZ_F_INT("threads", n));
 *
 * JSON:  {"ts":"2026-11-28T02:18:16.123456Z","level":"info","msg":"listening","addr":":8080","threads":2}
 * text:  2026-11-28T02:18:16.123456Z INFO  listening addr=:8080 threads=2
 */
#ifndef BZ_LOG_H
#define BZ_LOG_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#pragma GCC visibility push(default)

typedef enum bz_log_level { BZ_LOG_DEBUG = 0, BZ_LOG_INFO, BZ_LOG_WARN, BZ_LOG_ERROR } bz_log_level;
typedef enum bz_log_format { BZ_LOG_TEXT = 0, BZ_LOG_JSON } bz_log_format;

typedef enum bz_field_type { BZ_FT_END = 0, BZ_FT_STR, BZ_FT_STRN, BZ_FT_INT, BZ_FT_DBL } bz_field_type;

typedef struct bz_field {
    const char *key;
    bz_field_type type;
    int len; /* BZ_FT_STRN only */
    union {
        const char *s;
        int64_t i;
        double d;
    } v;
} bz_field;

#define BZ_F_STR(k, x) ((bz_field){.key = (k), .type = BZ_FT_STR, .v.s = (x)})
#define BZ_F_STRN(k, x, n) ((bz_field){.key = (k), .type = BZ_FT_STRN, .len = (int)(n), .v.s = (x)})
#define BZ_F_INT(k, x) ((bz_field){.key = (k), .type = BZ_FT_INT, .v.i = (int64_t)(x)})
#define BZ_F_DBL(k, x) ((bz_field){.key = (k), .type = BZ_FT_DBL, .v.d = (double)(x)})
#define BZ__F_END ((bz_field){.key = NULL, .type = BZ_FT_END})

/* Sets the threshold and the format (process-wide; call before threads). */
void bz_log_setup(bz_log_level level, bz_log_format format);
/* The format to use when none was asked for: text on a TTY, else JSON. */
bz_log_format bz_log_default_format(void);
bool bz_log_enabled(bz_log_level level);

/* Redirects output to fd (tests); -1 restores stderr. */
void bz_log_set_fd(int fd);

/* Secrets never to be logged.  bz_redact_url copies url into out (cap
 * bytes, truncated) with the password of "scheme://user:password@host"
 * and any "password=" parameter replaced by "***".  bz_log_secret makes
 * every later log line show "***" wherever s appears (a safety net for
 * messages that quote a URL: libpq's, Redis's); bz_log_url_secrets
 * registers the password(s) of a database or cache URL, as written and
 * percent-decoded.  Call before threads start; secrets shorter than 4
 * bytes are ignored (they would blank common words). */
void bz_redact_url(const char *url, char *out, size_t cap);
void bz_log_secret(const char *s);
void bz_log_url_secrets(const char *url);

/* Where the log finds the trace of the work being done right now (the
 * request the running coroutine serves), or NULL: set once at start-up by
 * the layer that knows (http/ does, from the runtime's per-coroutine
 * pointer; base cannot see coroutines).  Every line written while it
 * returns a trace carries "trace_id" and "span_id" after "msg".  fn runs on
 * every log call: it must be cheap and must not log. */
struct bz_trace;
void bz_log_set_trace_source(const struct bz_trace *(*fn)(void));

/* Per thread: batch lines below error level in memory until bz_log_flush
 * — as nginx's `access_log ... buffer=64k flush=100ms`: a batch is written
 * when it reaches 64 KiB, or by the event loop once its first line has
 * waited BZ_LOG_HOLD_NS (the loop bounds its wait for events by
 * bz_log_flush_due).  Under load that is one write per 64 KiB of access
 * lines, not one per loop turn.  Off flushes (a loop turns it off when it
 * stops).  Lines of one thread keep their order; error lines are never
 * held (they flush the batch before them). */
#define BZ_LOG_HOLD_NS 100000000LL
void bz_log_batch(bool on);
void bz_log_flush(void);
/* When this thread's batch must be written (bz_now_ns() clock):
 * BZ_NO_DEADLINE when it is empty. */
int64_t bz_log_flush_due(void);

void bz__log(bz_log_level level, const char *msg, ...);

#define bz_log(level, ...) (bz_log_enabled(level) ? bz__log((level), __VA_ARGS__, BZ__F_END) : (void)0)
#define bz_log_dbg(...) bz_log(BZ_LOG_DEBUG, __VA_ARGS__)
#define bz_log_info(...) bz_log(BZ_LOG_INFO, __VA_ARGS__)
#define bz_log_warn(...) bz_log(BZ_LOG_WARN, __VA_ARGS__)
#define bz_log_err(...) bz_log(BZ_LOG_ERROR, __VA_ARGS__)

#pragma GCC visibility pop
#endif

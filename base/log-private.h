/*
 * base/log-private.h — a JSON log line written by its caller, for the one
 * line the request path writes every time (the access log, http/observe.c).
 *
 * bz__log's fields are a varargs list of typed pairs: every key and value
 * is measured (strlen), every value checked for escaping, one append at a
 * time — most of a /healthz request's cost.  A caller that knows its
 * fields' lengths writes them itself, between these two calls, into the
 * thread's log buffer (the batch, when the loop batches): one reservation,
 * literals of known size, escaping only where a value can need it.
 *
 *     bz_buf *o = bz__log_json_begin(BZ_LOG_INFO, "request", 7);
 *     if (!o) { bz_log_info("request", ...); return; }   // text format
 *     char *w = bz__log_room(o, upper_bound);
 *     ... w = bz__json_esc(w, p, n); ...
 *     bz__log_json_end(o, w, BZ_LOG_INFO);
 *
 * The line is the one bz__log writes for the same fields, byte for byte
 * (same prefix, trace fields, escaping, number formats: bz__log uses the
 * same helpers), which tests/unit/test_http.c checks for the access line
 * (observe_access_line_is_the_generic_line).  Nothing may log on the
 * thread between begin and end.  Not exported: the library's own.
 */
#ifndef BZ_LOG_PRIVATE_H
#define BZ_LOG_PRIVATE_H

#include <bazaar/buf.h>
#include <bazaar/log.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Opens a line at level (enabled: the caller checked): writes
 * {"ts":"…","level":"…","msg":"<msg escaped>" and the trace fields.
 * NULL when the log's format is text (the caller logs with bz__log). */
bz_buf *bz__log_json_begin(bz_log_level level, const char *msg, size_t msgn);
/* Room for n more bytes of the open line: where to write them. */
static inline char *bz__log_room(bz_buf *o, size_t n)
{
    bz_buf_reserve(o, n + 2);
    return o->data + o->len;
}
/* Closes the line at w (the end of what was written) with "}\n" and hands
 * it on as bz__log does (batch, secrets, write). */
void bz__log_json_end(bz_buf *o, char *w, bz_log_level level);

/* s[0..n) as the inside of a JSON string (what bz_buf_append_json_escaped
 * writes: \" \\ \n \r \t, \u00XX for the other bytes below 0x20, the rest
 * as they are) at w, which has room for 6 * n bytes; returns the end
 * (base/buf.c). */
char *bz__json_esc(char *w, const char *s, size_t n);
/* A duration in milliseconds as the log writes it (microsecond fixed
 * point, trailing zeros dropped; %.6g outside [0, 1e12)); room for 32. */
char *bz__log_ms(char *w, double ms);

/* Writes the string literal lit at w and moves w past it (a move of known
 * size, no strlen). */
#define BZ__PUT(w, lit) (memcpy((w), (lit), sizeof(lit) - 1), (w) += sizeof(lit) - 1)

#endif

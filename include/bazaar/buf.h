/*
 * base/buf.h — string slices and growable byte buffers.
 *
 * bz_str is a (pointer, length) view of bytes owned by someone else — a
 * read buffer, an arena, a literal.  Parsers hand out slices instead of
 * copies (zero-copy: header names and values point into the read buffer).
 *
 * bz_buf is a growable, heap-backed byte buffer that always keeps a NUL
 * after its contents so it can be handed to C string functions.
 */
#ifndef BZ_BUF_H
#define BZ_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#pragma GCC visibility push(default)

typedef struct bz_str {
    const char *p;
    size_t n;
} bz_str;

#define BZ_STR_LIT(s) ((bz_str){(s), sizeof(s) - 1})
#define BZ_STR_NULL ((bz_str){NULL, 0})

static inline bz_str bz_str_make(const char *p, size_t n) { return (bz_str){p, n}; }
bz_str bz_str_c(const char *s); /* from a NUL-terminated string; NULL → empty */

bool bz_str_eq(bz_str a, bz_str b);
bool bz_str_eq_c(bz_str a, const char *b);
/* ASCII case-insensitive comparison (header names, tokens). */
bool bz_str_ieq(bz_str a, bz_str b);
bool bz_str_ieq_c(bz_str a, const char *b);
bool bz_str_has_prefix(bz_str s, bz_str prefix);
/* Strips spaces and horizontal tabs (HTTP OWS) from both ends. */
bz_str bz_str_trim(bz_str s);
/* Index of the first c in s, or -1. */
ptrdiff_t bz_str_index(bz_str s, char c);

/* Parses all of s as a decimal integer (optional leading '-') into *out.
 * Returns false on empty input, stray bytes or overflow. */
bool bz_str_to_i64(bz_str s, int64_t *out);
/* Like bz_str_to_i64, digits only (no sign), into uint64. */
bool bz_str_to_u64(bz_str s, uint64_t *out);

typedef struct bz_buf {
    char *data; /* NULL until the first append; always NUL-terminated after */
    size_t len;
    size_t cap;
} bz_buf;

#define BZ_BUF_INIT ((bz_buf){NULL, 0, 0})

/* Makes room for at least extra more bytes; aborts on allocation failure.
 * The appends are inline: on the hot paths (a response head, a log line)
 * they are a compare and a copy; only growing calls out. */
void bz__buf_grow(bz_buf *b, size_t extra);
static inline void bz_buf_reserve(bz_buf *b, size_t extra)
{
    if (b->len + extra + 1 > b->cap)
        bz__buf_grow(b, extra);
}
static inline void bz_buf_append(bz_buf *b, const void *p, size_t n)
{
    bz_buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}
static inline void bz_buf_append_str(bz_buf *b, bz_str s)
{
    bz_buf_append(b, s.p, s.n);
}
static inline void bz_buf_append_c(bz_buf *b, const char *s)
{
    bz_buf_append(b, s, strlen(s));
}
static inline void bz_buf_putc(bz_buf *b, char c)
{
    bz_buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}
void bz_buf_printf(bz_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bz_buf_vprintf(bz_buf *b, const char *fmt, va_list ap);
/* Appends the decimal form of v (faster than printf on hot paths). */
void bz_buf_append_i64(bz_buf *b, int64_t v);
/* Appends s as the inside of a JSON string (quotes not included): escapes
 * '"', '\\' and control characters; bytes ≥ 0x80 are copied as they are. */
void bz_buf_append_json_escaped(bz_buf *b, bz_str s);
/* Drops the first n bytes, moving the rest to the front. */
void bz_buf_consume(bz_buf *b, size_t n);
static inline void bz_buf_clear(bz_buf *b) { b->len = 0; if (b->data) b->data[0] = '\0'; }
void bz_buf_free(bz_buf *b);
static inline bz_str bz_buf_str(const bz_buf *b) { return (bz_str){b->data, b->len}; }

/* Writes the decimal form of v into out (at least 21 bytes); returns the
 * number of characters written, no NUL. */
size_t bz_fmt_i64(char *out, int64_t v);
/* "00" "01" … "99": the pairs the decimal formatters write two at a time. */
extern const char bz__digits2[201];

#pragma GCC visibility pop
#endif

/*
 * app/rest/json.h — JSON in and out for the REST adapter.
 *
 * Input is parsed by jansson (client bytes are never parsed by hand here)
 * and read into the service's typed inputs by decode.c.
 * Output is written straight into a bz_buf by the jw_* helpers: responses
 * are small, flat and built from trusted values, and this is several times
 * faster than building a jansson tree to serialise it.
 */
#ifndef APP_REST_JSON_H
#define APP_REST_JSON_H

#include <bazaar/buf.h>

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Parses a request body that must be a JSON object.  NULL (and a reason in
 * why) if it is not.  An integer literal beyond 64 bits is not a syntax
 * error: the body is parsed again with every number as a real and
 * *ints_as_reals is set, so the decoder can name the field that is out of
 * range. */
json_t *json_parse_object(const char *data, size_t len, bool *ints_as_reals, char *why, size_t whylen);

/* ---- output ---- */

/* Each writes `"key":value`, with a comma first unless the buffer ends in
 * '{', '[' or ':'.  jw_key and jw_i64 are inline: with a literal key the
 * compiler folds its length, and they run for every field of every
 * response. */
void jw_sep(bz_buf *b);
static inline void jw_key(bz_buf *b, const char *key)
{
    size_t kn = strlen(key);
    bz_buf_reserve(b, kn + 4);
    char *p = b->data + b->len;
    if (b->len) {
        char c = p[-1];
        if (c != '{' && c != '[' && c != ':')
            *p++ = ',';
    }
    *p++ = '"';
    memcpy(p, key, kn);
    p += kn;
    *p++ = '"';
    *p++ = ':';
    *p = '\0';
    b->len = (size_t)(p - b->data);
}
static inline void jw_i64(bz_buf *b, const char *key, int64_t v)
{
    jw_key(b, key);
    bz_buf_reserve(b, 21);
    b->len += bz_fmt_i64(b->data + b->len, v);
    b->data[b->len] = '\0';
}
void jw_str(bz_buf *b, const char *key, const char *s);
void jw_strn(bz_buf *b, const char *key, const char *s, size_t n);
void jw_time(bz_buf *b, const char *key, int64_t unix_us);
void jw_null(bz_buf *b, const char *key);

#endif

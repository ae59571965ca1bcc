/* app/rest/json.c — see json.h. */
#include "app/rest/json.h"

#include <bazaar/clock.h>

#include <stdio.h>
#include <string.h>

json_t *json_parse_object(const char *data, size_t len, bool *ints_as_reals, char *why, size_t whylen)
{
    json_error_t e;
    *ints_as_reals = false;
    /* Duplicate members are ambiguous (which one wins differs by parser):
     * refuse them rather than guess. */
    json_t *j = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES, &e);
    if (!j && strstr(e.text, "too big")) {
        j = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &e);
        *ints_as_reals = j != NULL;
    }
    if (!j) {
        snprintf(why, whylen, "the body is not valid JSON: %s (at byte %d)", e.text, e.position);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        snprintf(why, whylen, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

void jw_sep(bz_buf *b)
{
    if (b->len) {
        char c = b->data[b->len - 1];
        if (c != '{' && c != '[' && c != ':')
            bz_buf_putc(b, ',');
    }
}

void jw_strn(bz_buf *b, const char *key, const char *s, size_t n)
{
    jw_key(b, key);
    bz_buf_putc(b, '"');
    bz_buf_append_json_escaped(b, bz_str_make(s, n));
    bz_buf_putc(b, '"');
}

void jw_str(bz_buf *b, const char *key, const char *s) { jw_strn(b, key, s, strlen(s)); }

void jw_time(bz_buf *b, const char *key, int64_t unix_us)
{
    jw_key(b, key);
    bz_buf_reserve(b, 42);
    char *p = b->data + b->len;
    *p++ = '"';
    p += bz_fmt_rfc3339_us(p, unix_us);
    *p++ = '"';
    *p = '\0';
    b->len = (size_t)(p - b->data);
}

void jw_null(bz_buf *b, const char *key)
{
    jw_key(b, key);
    bz_buf_append_c(b, "null");
}

/* app/json.c — see json.h. */
#include "app/json.h"

#include "base/clock.h"

#include <stdio.h>
#include <string.h>

void jv_init(jv *v)
{
    v->errs = BZ_BUF_INIT;
    v->n = 0;
}

void jv_free(jv *v) { bz_buf_free(&v->errs); }

void jv_fail(jv *v, const char *field, const char *msg)
{
    if (v->n++)
        bz_buf_putc(&v->errs, ',');
    bz_buf_append_c(&v->errs, "{\"field\":\"");
    bz_buf_append_json_escaped(&v->errs, bz_str_c(field));
    bz_buf_append_c(&v->errs, "\",\"message\":\"");
    bz_buf_append_json_escaped(&v->errs, bz_str_c(msg));
    bz_buf_append_c(&v->errs, "\"}");
}

static size_t utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            c++;
    return c;
}

bool jv_str(jv *v, json_t *o, const char *field, bool required, size_t min, size_t max, bool chars,
            const char **out, size_t *len)
{
    json_t *x = json_object_get(o, field);
    char msg[96];
    if (!x || json_is_null(x)) {
        if (required)
            jv_fail(v, field, "is required");
        return false;
    }
    if (!json_is_string(x)) {
        jv_fail(v, field, "must be a string");
        return false;
    }
    const char *s = json_string_value(x);
    size_t n = json_string_length(x);
    size_t k = chars ? utf8_chars(s, n) : n;
    if (k < min || k > max) {
        snprintf(msg, sizeof msg, "must be %zu to %zu %s long", min, max, chars ? "characters" : "bytes");
        jv_fail(v, field, msg);
        return false;
    }
    *out = s;
    if (len)
        *len = n;
    return true;
}

bool jv_int(jv *v, json_t *o, const char *field, bool required, int64_t min, int64_t max, int64_t *out)
{
    json_t *x = json_object_get(o, field);
    char msg[96];
    if (!x || json_is_null(x)) {
        if (required)
            jv_fail(v, field, "is required");
        return false;
    }
    if (!json_is_integer(x)) {
        jv_fail(v, field, "must be an integer");
        return false;
    }
    int64_t i = (int64_t)json_integer_value(x);
    if (i < min || i > max) {
        snprintf(msg, sizeof msg, "must be between %lld and %lld", (long long)min, (long long)max);
        jv_fail(v, field, msg);
        return false;
    }
    *out = i;
    return true;
}

json_t *json_parse_object(const char *data, size_t len, char *why, size_t whylen)
{
    json_error_t e;
    /* Duplicate members are ambiguous (which one wins differs by parser):
     * refuse them rather than guess. */
    json_t *j = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES, &e);
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

void jw_key(bz_buf *b, const char *key)
{
    jw_sep(b);
    bz_buf_putc(b, '"');
    bz_buf_append_c(b, key);
    bz_buf_append_c(b, "\":");
}

void jw_i64(bz_buf *b, const char *key, int64_t v)
{
    jw_key(b, key);
    bz_buf_append_i64(b, v);
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
    char t[40];
    size_t n = bz_fmt_rfc3339_us(t, unix_us);
    jw_key(b, key);
    bz_buf_putc(b, '"');
    bz_buf_append(b, t, n);
    bz_buf_putc(b, '"');
}

void jw_null(bz_buf *b, const char *key)
{
    jw_key(b, key);
    bz_buf_append_c(b, "null");
}

/*
 * app/json.h — JSON in and out for the REST handlers.
 *
 * Input is parsed by jansson (client bytes are never parsed by hand here);
 * the jv_* helpers read one member each and collect every validation
 * failure, so a 400 names all bad fields at once (problem+json "errors").
 * Output is written straight into a bz_buf by the jw_* helpers: responses
 * are small, flat and built from trusted values, and this is several times
 * faster than building a jansson tree to serialise it.
 */
#ifndef APP_JSON_H
#define APP_JSON_H

#include "base/buf.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* ---- validation ---- */

typedef struct jv {
    bz_buf errs; /* "{"field":..,"message":..}" items, comma separated */
    int n;
} jv;

void jv_init(jv *v);
void jv_free(jv *v);
void jv_fail(jv *v, const char *field, const char *msg);

/* Each reads o[field].  Absent or null: returns false and, if required,
 * records "is required".  Present but wrong type or out of range: records
 * the reason and returns false.  Strings: min/max count characters (UTF-8
 * code points) when chars is true, else bytes. */
bool jv_str(jv *v, json_t *o, const char *field, bool required, size_t min, size_t max, bool chars,
            const char **out, size_t *len);
bool jv_int(jv *v, json_t *o, const char *field, bool required, int64_t min, int64_t max, int64_t *out);

/* Parses a request body that must be a JSON object.  NULL (and a reason in
 * why) if it is not. */
json_t *json_parse_object(const char *data, size_t len, char *why, size_t whylen);

/* ---- output ---- */

/* Each writes `"key":value`, with a comma first unless the buffer ends in
 * '{' or '['. */
void jw_sep(bz_buf *b);
void jw_key(bz_buf *b, const char *key);
void jw_i64(bz_buf *b, const char *key, int64_t v);
void jw_str(bz_buf *b, const char *key, const char *s);
void jw_strn(bz_buf *b, const char *key, const char *s, size_t n);
void jw_time(bz_buf *b, const char *key, int64_t unix_us);
void jw_null(bz_buf *b, const char *key);

#endif

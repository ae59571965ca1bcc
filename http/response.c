/* http/response.c — the handler-facing request/response functions:
 * headers, query and body access, buffered and streaming responses,
 * problem+json, status texts, middleware chaining. */
#include "http/http-private.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

http_handler http_chain(http_handler h, const http_mw *mws, int n)
{
    for (int i = n - 1; i >= 0; i--)
        h = mws[i].wrap(h, mws[i].cfg);
    return h;
}

/* Case-insensitive equality of n bytes (a header name from code against
 * one from the wire). */
static inline bool x__ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x != y && ((x | 0x20) != (y | 0x20) || (unsigned char)((x | 0x20) - 'a') > 'z' - 'a'))
            return false;
    }
    return true;
}

/* The first field named name (nl bytes) of v[0..n).  A field is passed
 * over by its length and first byte (either case) before its name is
 * compared: a lookup costs a few instructions per field it skips. */
static bz_str x__find(const http_header *v, int n, const char *name, size_t nl)
{
    if (!nl)
        return BZ_STR_NULL;
    unsigned char c0 = (unsigned char)name[0] | 0x20;
    for (int i = 0; i < n; i++)
        if (v[i].name.n == nl && ((unsigned char)v[i].name.p[0] | 0x20) == c0 && x__ieq(v[i].name.p, name, nl))
            return v[i].value;
    return BZ_STR_NULL;
}

bz_str http_header_get(const http_req *r, const char *name)
{
    return x__find(r->headers, r->nheaders, name, strlen(name));
}

/* application/x-www-form-urlencoded decoding: '+' is a space. */
static char *query_decode(bz_arena *a, bz_str s)
{
    char *out = bz_arena_alloc(a, s.n + 1);
    char *tmp = bz_arena_alloc(a, s.n + 1);
    for (size_t i = 0; i < s.n; i++)
        tmp[i] = s.p[i] == '+' ? ' ' : s.p[i];
    ssize_t n = http__unescape(bz_str_make(tmp, s.n), out);
    if (n < 0)
        return NULL;
    out[n] = '\0';
    return out;
}

const char *http_query_get(http_req *r, const char *name)
{
    size_t nl = strlen(name), i = 0;
    bz_str q = r->query;
    while (i < q.n) {
        size_t j = i;
        while (j < q.n && q.p[j] != '&')
            j++;
        bz_str kv = bz_str_make(q.p + i, j - i);
        ptrdiff_t eq = bz_str_index(kv, '=');
        bz_str k = eq >= 0 ? bz_str_make(kv.p, (size_t)eq) : kv;
        bz_str v = eq >= 0 ? bz_str_make(kv.p + eq + 1, kv.n - (size_t)eq - 1) : BZ_STR_LIT("");
        if (k.n == nl && memcmp(k.p, name, nl) == 0)
            return query_decode(r->arena, v);
        if (k.n >= nl && memchr(k.p, '%', k.n)) { /* escaped key */
            char *dk = query_decode(r->arena, k);
            if (dk && strcmp(dk, name) == 0)
                return query_decode(r->arena, v);
        }
        i = j + 1;
    }
    return NULL;
}

void http_set_status(http_req *r, int status) { r->status = status; }

/* Lower-cases ASCII letters in place, eight bytes at a time (a header
 * name is lower-cased for HTTP/2 on every add). */
static void lower_ascii(char *p, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        uint64_t h7 = w & 0x7f7f7f7f7f7f7f7full;
        uint64_t ge_a = h7 + 0x3f3f3f3f3f3f3f3full; /* high bit: byte >= 'A' */
        uint64_t gt_z = h7 + 0x2525252525252525ull; /* high bit: byte > 'Z' */
        uint64_t upper = (ge_a & ~gt_z) & ~w & 0x8080808080808080ull;
        w |= upper >> 2;                            /* + 0x20 */
        memcpy(p + i, &w, 8);
    }
    for (; i < n; i++)
        if (p[i] >= 'A' && p[i] <= 'Z')
            p[i] = (char)(p[i] + 32);
}

void http__fields_room(bz_arena *a, http_header **v, int n, int *cap)
{
    if (n < *cap)
        return;
    int c = *cap ? *cap * 2 : 8;
    http_header *nv = bz_arena_alloc(a, sizeof *nv * (size_t)c);
    if (n)
        memcpy(nv, *v, sizeof *nv * (size_t)n);
    *v = nv;
    *cap = c;
}

/* One copy of each header field into the arena, lower-cased for HTTP/2
 * (which sends names in lower case): the protocols read the pairs as they
 * are, so a header costs this and one write into the output.  (nl: the
 * name's length, which this layer's own callers know.) */
void http__add_field(http_req *r, const char *name, size_t nl, const char *value, size_t vlen)
{
    http__fields_room(r->arena, &r->resp_headers, r->nresp_headers, &r->resp_headers_cap);
    char *p = bz_arena_alloc(r->arena, nl + vlen + 2);
    memcpy(p, name, nl);
    if (r->h2)
        lower_ascii(p, nl);
    p[nl] = '\0';
    char *v = p + nl + 1;
    memcpy(v, value, vlen);
    v[vlen] = '\0';
    r->resp_headers[r->nresp_headers++] = (http_header){bz_str_make(p, nl), bz_str_make(v, vlen)};
}

void http_add_header_n(http_req *r, const char *name, const char *value, size_t vlen)
{
    http__add_field(r, name, strlen(name), value, vlen);
}

void http_add_header(http_req *r, const char *name, const char *value)
{
    http__add_field(r, name, strlen(name), value, strlen(value));
}

bz_str http_resp_header_get(const http_req *r, const char *name)
{
    return x__find(r->resp_headers, r->nresp_headers, name, strlen(name));
}

void http_clear_headers(http_req *r) { r->nresp_headers = 0; }

void http_write(http_req *r, const void *data, size_t n)
{
    bz_buf_append(&r->body, data, n);
    r->bytes_out += (int64_t)n;
}

int http_write_paced(http_req *r, const void *data, size_t n)
{
    enum { SLICE = 64 * 1024 };
    if (!r->h2s) {
        http_write(r, data, n);
        return 0;
    }
    const char *p = data;
    while (n) {
        size_t room = r->body.len < SLICE ? SLICE - r->body.len : 0;
        size_t k = n < room ? n : room;
        if (k) {
            http_write(r, p, k);
            p += k;
            n -= k;
        }
        if (r->body.len >= SLICE) {
            int e = http_flush(r);
            if (e)
                return e;
        }
    }
    return 0;
}

void http_write_with(http_req *r, void (*fn)(bz_buf *b, const void *arg), const void *arg)
{
    size_t before = r->body.len;
    fn(&r->body, arg);
    r->bytes_out += (int64_t)(r->body.len - before);
}

int http_flush(http_req *r)
{
    if (!r->status)
        r->status = 200;
    return http__conn_flush(r, false);
}

int http_send(http_req *r, int status, const char *content_type, const void *body, size_t n)
{
    r->status = status;
    if (content_type)
        http__add_field(r, "Content-Type", 12, content_type, strlen(content_type));
    http_write(r, body, n);
    return 0;
}

const char *http_status_text(int s)
{
    switch (s) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return s < 200 ? "Informational" : s < 300 ? "Success" : s < 400 ? "Redirection"
                    : s < 500 ? "Client Error" : "Server Error";
    }
}

int http_send_problem(http_req *r, int status, const char *code, const char *detail)
{
    return http_send_problem_ext(r, status, code, detail, NULL);
}

int http_send_problem_ext(http_req *r, int status, const char *code, const char *detail, const char *members)
{
    bz_buf b = BZ_BUF_INIT;
    const char *title = http_status_text(status);
    bz_buf_append_c(&b, "{\"type\":\"about:blank\",\"title\":\"");
    bz_buf_append_json_escaped(&b, bz_str_c(title));
    bz_buf_append_c(&b, "\",\"status\":");
    bz_buf_append_i64(&b, status);
    if (detail) {
        bz_buf_append_c(&b, ",\"detail\":\"");
        bz_buf_append_json_escaped(&b, bz_str_c(detail));
        bz_buf_putc(&b, '"');
    }
    if (code) {
        bz_buf_append_c(&b, ",\"code\":\"");
        bz_buf_append_json_escaped(&b, bz_str_c(code));
        bz_buf_putc(&b, '"');
    }
    if (members && *members) {
        bz_buf_putc(&b, ',');
        bz_buf_append_c(&b, members);
    }
    bz_buf_putc(&b, '}');
    http__errlog(r, status, code, detail);
    r->body.len = 0; /* a problem replaces anything buffered */
    r->bytes_out = 0;
    http_send(r, status, "application/problem+json", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

ssize_t http_body_read(http_req *r, void *buf, size_t n) { return http__conn_body_read(r, buf, n); }

ssize_t http_body_take(http_req *r, bz_buf *b, size_t min) { return r->h2s ? http__h2_body_take(r, b, min) : 0; }

/* base/buf.c — see buf.h. */
#include <bazaar/buf.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bz_str bz_str_c(const char *s) { return s ? (bz_str){s, strlen(s)} : (bz_str){"", 0}; }

static inline unsigned char lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

bool bz_str_ieq(bz_str a, bz_str b)
{
    if (a.n != b.n)
        return false;
    for (size_t i = 0; i < a.n; i++)
        if (lower((unsigned char)a.p[i]) != lower((unsigned char)b.p[i]))
            return false;
    return true;
}

bool bz_str_has_prefix(bz_str s, bz_str prefix)
{
    return s.n >= prefix.n && (prefix.n == 0 || memcmp(s.p, prefix.p, prefix.n) == 0);
}

bz_str bz_str_trim(bz_str s)
{
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t')) {
        s.p++;
        s.n--;
    }
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t'))
        s.n--;
    return s;
}

ptrdiff_t bz_str_index(bz_str s, char c)
{
    const char *q = s.n ? memchr(s.p, c, s.n) : NULL;
    return q ? q - s.p : -1;
}

bool bz_str_to_u64(bz_str s, uint64_t *out)
{
    if (s.n == 0 || s.n > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < s.n; i++) {
        unsigned d = (unsigned char)s.p[i] - '0';
        if (d > 9)
            return false;
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool bz_str_to_i64(bz_str s, int64_t *out)
{
    bool neg = false;
    if (s.n && s.p[0] == '-') {
        neg = true;
        s.p++;
        s.n--;
    }
    uint64_t v;
    if (!bz_str_to_u64(s, &v))
        return false;
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return false;
        *out = (int64_t)(0 - v);
    } else {
        if (v > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)v;
    }
    return true;
}

void bz__buf_grow(bz_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2) {
            fputs("bazaar: buffer too large\n", stderr);
            abort();
        }
        cap *= 2;
    }
    char *d = realloc(b->data, cap);
    if (!d) {
        fputs("bazaar: out of memory\n", stderr);
        abort();
    }
    b->data = d;
    b->cap = cap;
}

void bz_buf_vprintf(bz_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    bz_buf_reserve(b, 64);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return;
    if ((size_t)n >= b->cap - b->len) {
        bz_buf_reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    }
    b->len += (size_t)n;
}

void bz_buf_printf(bz_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bz_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

/* "00".."99": two digits per division (ids, cents and timestamps fill
 * every JSON list). */
const char bz__digits2[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

size_t bz_fmt_i64(char *out, int64_t v)
{
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    size_t nd = 1;
    for (uint64_t t = u; t >= 10; t /= 10)
        nd++;
    size_t k = v < 0;
    if (k)
        out[0] = '-';
    char *p = out + k + nd;
    while (u >= 100) {
        unsigned d = (unsigned)(u % 100) * 2;
        u /= 100;
        p -= 2;
        p[0] = bz__digits2[d];
        p[1] = bz__digits2[d + 1];
    }
    if (u >= 10) {
        p -= 2;
        p[0] = bz__digits2[u * 2];
        p[1] = bz__digits2[u * 2 + 1];
    } else {
        *--p = (char)('0' + u);
    }
    return k + nd;
}

void bz_buf_append_i64(bz_buf *b, int64_t v)
{
    char tmp[24];
    bz_buf_append(b, tmp, bz_fmt_i64(tmp, v));
}

/* Does the 8-byte word w hold a byte JSON must escape (< 0x20, '"',
 * '\\')?  Exact as a yes/no (the classic "has a zero byte" test), so
 * the common text with nothing to escape is checked 8 bytes at a time:
 * the access log line is most of its cost. */
static inline bool word_needs_escape(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t lt = (w - ones * 0x20) & ~w & highs;
    uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\');
    uint64_t zq = (q - ones) & ~q & highs, zb = (bs - ones) & ~bs & highs;
    return (lt | zq | zb) != 0;
}

void bz_buf_append_json_escaped(bz_buf *b, bz_str s)
{
    static const char hex[] = "0123456789abcdef";
    /* 1 for the bytes JSON strings must escape */
    static const unsigned char esc[256] = {
        [0 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1,
    };
    size_t i = 0;
    while (i + 8 <= s.n) {
        uint64_t w;
        memcpy(&w, s.p + i, 8);
        if (word_needs_escape(w))
            break;
        i += 8;
    }
    if (i < s.n && s.n - i < 8) {
        /* The last bytes, padded with spaces (never escaped): short
         * strings (keys, methods, numbers as text) take one test. */
        uint64_t w = 0x2020202020202020ull;
        memcpy(&w, s.p + i, s.n - i);
        if (!word_needs_escape(w))
            i = s.n;
    }
    if (i == s.n) {
        bz_buf_append(b, s.p, s.n);
        return;
    }
    bz_buf_reserve(b, s.n);
    size_t start = 0;
    for (; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (!esc[c])
            continue;
        bz_buf_append(b, s.p + start, i - start);
        start = i + 1;
        switch (c) {
        case '"': bz_buf_append(b, "\\\"", 2); break;
        case '\\': bz_buf_append(b, "\\\\", 2); break;
        case '\n': bz_buf_append(b, "\\n", 2); break;
        case '\r': bz_buf_append(b, "\\r", 2); break;
        case '\t': bz_buf_append(b, "\\t", 2); break;
        default: {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            bz_buf_append(b, e, 6);
        }
        }
    }
    bz_buf_append(b, s.p + start, s.n - start);
}

void bz_buf_consume(bz_buf *b, size_t n)
{
    if (n >= b->len) {
        bz_buf_clear(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

void bz_buf_free(bz_buf *b)
{
    free(b->data);
    *b = BZ_BUF_INIT;
}

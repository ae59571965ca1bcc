/* base/buf.c — see buf.h. */
#include <bazaar/buf.h>

#include "base/log-private.h"

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
    /* the digits counted by comparison for the common small values
     * (statuses, lengths, durations), by division past 9,999 */
    size_t nd = 1;
    if (u >= 10) {
        nd = 2;
        if (u >= 100) {
            nd = 3;
            if (u >= 1000) {
                nd = 4;
                for (uint64_t t = u / 10000; t; t /= 10)
                    nd++;
            }
        }
    }
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
 * '\\')?  Exact as a yes/no (the classic "has a zero byte" test). */
static inline bool word_needs_escape(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t lt = (w - ones * 0x20) & ~w & highs;
    uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\');
    uint64_t zq = (q - ones) & ~q & highs, zb = (bs - ones) & ~bs & highs;
    return (lt | zq | zb) != 0;
}

#if defined(__SSE2__)
#include <emmintrin.h>
/* The same for 16 bytes at once (every x86-64 has SSE2). */
static inline bool vec_needs_escape(__m128i v)
{
    __m128i ctl = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f)); /* v <= 0x1f */
    __m128i q = _mm_cmpeq_epi8(v, _mm_set1_epi8('"')), bs = _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'));
    return _mm_movemask_epi8(_mm_or_si128(ctl, _mm_or_si128(q, bs))) != 0;
}
#endif

static char *esc_from(char *w, const char *s, size_t n, size_t i);

/* (base/log-private.h)  The bytes are checked and copied a block at a
 * time, the last block overlapping the one before it (16-byte blocks with
 * SSE2, else 8; a string of 8 to 15 bytes is two overlapping 8-byte
 * words, of 4 to 7 two 4-byte words, of 1 to 3 its first, middle and
 * last byte): no byte loop and no call for what needs no escaping, which
 * is every field of an ordinary access-log line. */
char *bz__json_esc(char *w, const char *s, size_t n)
{
    size_t i = 0;
#if defined(__SSE2__)
    if (n >= 16) {
        for (; i + 16 <= n; i += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
            if (vec_needs_escape(v))
                return esc_from(w, s, n, i);
            _mm_storeu_si128((__m128i *)(void *)(w + i), v);
        }
        if (i < n) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + n - 16));
            if (vec_needs_escape(v))
                return esc_from(w, s, n, i);
            _mm_storeu_si128((__m128i *)(void *)(w + n - 16), v);
        }
        return w + n;
    }
    if (n >= 8) {
        __m128i v = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(const void *)s),
                                       _mm_loadl_epi64((const __m128i *)(const void *)(s + n - 8)));
        if (vec_needs_escape(v))
            return esc_from(w, s, n, 0);
        _mm_storel_epi64((__m128i *)(void *)w, v);
        _mm_storel_epi64((__m128i *)(void *)(w + n - 8), _mm_unpackhi_epi64(v, v));
        return w + n;
    }
#else
    if (n >= 8) {
        for (; i + 8 <= n; i += 8) {
            uint64_t x;
            memcpy(&x, s + i, 8);
            if (word_needs_escape(x))
                return esc_from(w, s, n, i);
            memcpy(w + i, &x, 8);
        }
        if (i < n) {
            uint64_t x;
            memcpy(&x, s + n - 8, 8);
            if (word_needs_escape(x))
                return esc_from(w, s, n, i);
            memcpy(w + n - 8, &x, 8);
        }
        return w + n;
    }
#endif
    if (n >= 4) {
        uint32_t a, z;
        memcpy(&a, s, 4);
        memcpy(&z, s + n - 4, 4);
        if (word_needs_escape((uint64_t)a | (uint64_t)z << 32))
            return esc_from(w, s, n, 0);
        memcpy(w, &a, 4);
        memcpy(w + n - 4, &z, 4);
        return w + n;
    }
    if (n) {
        unsigned char a = (unsigned char)s[0], m = (unsigned char)s[n / 2], z = (unsigned char)s[n - 1];
        /* the other five bytes spaces: never escaped */
        if (word_needs_escape(a | (uint64_t)m << 8 | (uint64_t)z << 16 | 0x2020202020000000ull))
            return esc_from(w, s, n, 0);
        w[0] = (char)a;
        w[n / 2] = (char)m;
        w[n - 1] = (char)z;
    }
    return w + n;
}

/* The escaping from the first block that needs it (the blocks before it
 * are written). */
static char *esc_from(char *w, const char *s, size_t n, size_t i)
{
    static const char hex[] = "0123456789abcdef";
    w += i;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *w++ = (char)c;
            continue;
        }
        *w++ = '\\';
        switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '\n': *w++ = 'n'; break;
        case '\r': *w++ = 'r'; break;
        case '\t': *w++ = 't'; break;
        default:
            memcpy(w, "u00", 3);
            w[3] = hex[c >> 4];
            w[4] = hex[c & 15];
            w += 5;
        }
    }
    return w;
}

void bz_buf_append_json_escaped(bz_buf *b, bz_str s)
{
    /* In slices: a long string reserves at most six times a slice more
     * than it needs, not six times itself. */
    size_t i = 0;
    do {
        size_t k = s.n - i < 4096 ? s.n - i : 4096;
        bz_buf_reserve(b, 6 * k);
        char *w = bz__json_esc(b->data + b->len, k ? s.p + i : "", k);
        b->len = (size_t)(w - b->data);
        i += k;
    } while (i < s.n);
    b->data[b->len] = '\0';
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

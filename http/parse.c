/* http/parse.c — strict, zero-copy HTTP/1.1 request-head parser and the
 * chunked body decoder (RFC 9112).  Everything here reads client bytes, so
 * everything here is fuzzed (tests/fuzz/). */
#include "http/http-private.h"

#include <string.h>

/* tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
 *         "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,
    ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static inline bool is_vchar(unsigned char c) { return c > 0x20 && c != 0x7f; }
/* field-value bytes: SP, HTAB, VCHAR, obs-text */
static inline bool is_fvchar(unsigned char c) { return c == ' ' || c == '\t' || (c > 0x20 && c != 0x7f); }

/* The byte scans of a head's lines, 16 bytes at a time where SSE2 is
 * (every x86-64): the request target and every field value are checked
 * byte by byte, the longest part of a head.  A block is loaded only where
 * 16 bytes of input remain before limit (the end of what was read), and
 * its bytes past the line's end are masked off. */
#if defined(__SSE2__)
#include <emmintrin.h>
/* Bit i set: byte i of p is not a VCHAR/obs-text (<= 0x20 or DEL). */
static inline unsigned not_vchar16(const char *p)
{
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i le20 = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x20)), _mm_set1_epi8(0x20));
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(le20, _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f))));
}
/* Bit i set: byte i of p is not a field-value byte (a control byte but
 * HTAB, or DEL). */
static inline unsigned not_fvchar16(const char *p)
{
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i lt20 = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
    __m128i bad = _mm_andnot_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\t')), lt20);
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(bad, _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f))));
}
#endif

/* The first byte of [p, end) that is not a VCHAR or obs-text, or end. */
static const char *skip_vchar(const char *p, const char *end, const char *limit)
{
#if defined(__SSE2__)
    while (p < end && limit - p >= 16) {
        unsigned m = not_vchar16(p);
        if (m)
            return p + __builtin_ctz(m) < end ? p + __builtin_ctz(m) : end;
        p += 16;
    }
    if (p > end)
        return end; /* the block ran past the line, all of it valid */
#else
    (void)limit;
#endif
    while (p < end && is_vchar((unsigned char)*p))
        p++;
    return p;
}

/* Are all bytes of [p, end) field-value bytes? */
static bool all_fvchar(const char *p, const char *end, const char *limit)
{
#if defined(__SSE2__)
    while (p < end && limit - p >= 16) {
        unsigned m = not_fvchar16(p);
        if (end - p < 16)
            m &= (1u << (end - p)) - 1;
        if (m)
            return false;
        p += 16;
    }
#else
    (void)limit;
#endif
    for (; p < end; p++)
        if (!is_fvchar((unsigned char)*p))
            return false;
    return true;
}

/* Chunk lines: finds the end of the line starting at p (before end).  Returns the
 * offset of '\n', -1 if not there yet, -2 on a bare CR or bare LF. */
static ptrdiff_t line_end(const char *p, const char *end)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    if (!lf) {
        /* A CR anywhere but as the last byte seen is bare. */
        const char *cr = memchr(p, '\r', (size_t)(end - p));
        if (cr && cr + 1 < end)
            return -2;
        return -1;
    }
    if (lf == p || lf[-1] != '\r')
        return -2;
    /* A CR inside the line is bare too. */
    const char *cr = memchr(p, '\r', (size_t)(lf - 1 - p));
    if (cr)
        return -2;
    return lf - p;
}

/* The first CR or LF in [p, end), or end: one scan finds a line's end
 * and any bare CR or LF before it (16 bytes at a time with SSE2). */
static const char *find_cr_or_lf(const char *p, const char *end)
{
#if defined(__SSE2__)
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\r')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\n'))));
        if (m)
            return p + __builtin_ctz(m);
        p += 16;
    }
#endif
    while (p < end && *p != '\r' && *p != '\n')
        p++;
    return p;
}

/* Head lines: finds the end of the line starting at buf + ps->line, searching only
 * the bytes not searched before.  Returns the offset of '\n' from the line
 * start, -1 if not there yet, -2 on a bare CR or bare LF.  Invariant
 * between calls: the searched part holds no LF, and no CR except maybe as
 * its last byte (a CR may end a call's input and be followed by LF).
 * The first CR or LF from there decides: a CR followed by LF ends the
 * line, a CR last in the input waits for more, anything else is bare. */
static ptrdiff_t next_line(http_head_parser *ps, const char *buf, size_t len)
{
    size_t L = ps->line, from = L + ps->seen;
    /* A CR seen last time as the final byte is rechecked with what follows. */
    size_t cfrom = from > L ? from - 1 : from;
    const char *end = buf + len, *x = cfrom < len ? find_cr_or_lf(buf + cfrom, end) : end;
    ps->scanned += (uint64_t)(x - (buf + cfrom)) + (x < end);
    if (x == end || (*x == '\r' && x + 1 == end)) {
        ps->seen = len - L;
        return -1;
    }
    if (*x == '\n' || x[1] != '\n')
        return -2; /* an LF without its CR, or a CR without its LF */
    return (ptrdiff_t)(x + 1 - (buf + L));
}

static bool parse_u64_digits(bz_str v, uint64_t *out)
{
    if (v.n == 0 || v.n > 18)
        return false; /* 18 digits: no overflow, and far beyond any cap */
    uint64_t x = 0;
    for (size_t i = 0; i < v.n; i++) {
        unsigned d = (unsigned char)v.p[i] - '0';
        if (d > 9)
            return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

/* Does a comma-separated header value contain token tok (case-insensitive)? */
static bool list_has(bz_str v, const char *tok)
{
    size_t tn = strlen(tok), i = 0;
    while (i < v.n) {
        size_t j = i;
        while (j < v.n && v.p[j] != ',')
            j++;
        bz_str item = bz_str_trim(bz_str_make(v.p + i, j - i));
        if (item.n == tn && bz_str_ieq_c(item, tok))
            return true;
        i = j + 1;
    }
    return false;
}

static int done(http_head_parser *ps, int result, int st, int *status)
{
    ps->phase = 3;
    ps->result = result;
    ps->status = st;
    if (result < 0)
        *status = st;
    return result;
}

#define FAIL(code) return done(ps, -1, (code), status)

/* The request line, complete in [p, p + le] (le: offset of its LF);
 * limit: the end of the input. */
static int request_line(http_head_parser *ps, const char *p, ptrdiff_t le, const char *limit, http_req *r,
                        int *status)
{
    ps->scanned += (uint64_t)le + 1;
    const char *line = p, *lend = p + le - 1; /* lend at CR */
    const char *q = line;
    while (q < lend && tchar[(unsigned char)*q])
        q++;
    if (q == line || q >= lend || *q != ' ')
        FAIL(400);
    r->method = bz_str_make(line, (size_t)(q - line));
    const char *t = ++q;
    q = skip_vchar(q, lend, limit);
    if (q == t || q >= lend || *q != ' ')
        FAIL((q - t) > HTTP_MAX_URI ? 414 : 400);
    r->target = bz_str_make(t, (size_t)(q - t));
    if (r->target.n > HTTP_MAX_URI)
        FAIL(414);
    q++;
    if (lend - q != 8 || memcmp(q, "HTTP/", 5) != 0 || q[6] != '.' || q[5] < '0' || q[5] > '9' ||
        q[7] < '0' || q[7] > '9')
        FAIL(400);
    if (q[5] != '1')
        FAIL(505);
    r->minor = q[7] - '0';
    /* origin-form, absolute-form (proxies) or asterisk-form (OPTIONS) */
    bz_str tg = r->target;
    if (tg.p[0] != '/') {
        if (tg.n == 1 && tg.p[0] == '*') {
            if (!bz_str_eq_c(r->method, "OPTIONS"))
                FAIL(400);
        } else {
            /* absolute-form: scheme "://" authority path */
            const char *s = memchr(tg.p, ':', tg.n);
            if (!s || (size_t)(tg.p + tg.n - s) < 3 || s[1] != '/' || s[2] != '/')
                FAIL(400);
            const char *slash = memchr(s + 3, '/', (size_t)(tg.p + tg.n - (s + 3)));
            tg = slash ? bz_str_make(slash, (size_t)(tg.p + tg.n - slash)) : BZ_STR_LIT("/");
        }
    }
    ptrdiff_t qm = bz_str_index(tg, '?');
    if (qm >= 0) {
        r->path = bz_str_make(tg.p, (size_t)qm);
        r->query = bz_str_make(tg.p + qm + 1, tg.n - (size_t)qm - 1);
    } else {
        r->path = tg;
        r->query = bz_str_make(tg.p + tg.n, 0);
    }
    /* a fragment is never sent by a conforming client */
    if (bz_str_index(r->target, '#') >= 0)
        FAIL(400);
    return 0;
}

/* One header field line, complete in [p, p + le] (le > 1); limit: the
 * end of the input. */
static int field_line(http_head_parser *ps, const char *p, ptrdiff_t le, const char *limit, http_header *hdrs,
                      int maxh, int *status)
{
    ps->scanned += (uint64_t)le + 1;
    if (p[0] == ' ' || p[0] == '\t')
        FAIL(400); /* obs-fold */
    const char *name = p, *lineend = p + le - 1;
    const char *c = name;
    while (c < lineend && tchar[(unsigned char)*c])
        c++;
    if (c == name || c >= lineend || *c != ':')
        FAIL(400); /* empty name, bad char, or space before ':' */
    bz_str hn = bz_str_make(name, (size_t)(c - name));
    const char *v = c + 1;
    if (!all_fvchar(v, lineend, limit))
        FAIL(400);
    bz_str hv = bz_str_trim(bz_str_make(v, (size_t)(lineend - v)));
    if (ps->n == maxh)
        FAIL(431);
    hdrs[ps->n].name = hn;
    hdrs[ps->n].value = hv;
    ps->n++;
    switch (hn.n) {
    case 4:
        if (bz_str_ieq_c(hn, "host"))
            ps->hosts++;
        break;
    case 6:
        if (bz_str_ieq_c(hn, "expect")) {
            if (!bz_str_ieq_c(hv, "100-continue"))
                FAIL(417);
            ps->expect = true;
        }
        break;
    case 10:
        if (bz_str_ieq_c(hn, "connection")) {
            ps->conn_close |= list_has(hv, "close");
            ps->conn_keep |= list_has(hv, "keep-alive");
        }
        break;
    case 14:
        if (bz_str_ieq_c(hn, "content-length")) {
            uint64_t x;
            if (!parse_u64_digits(hv, &x))
                FAIL(400);
            if (ps->cls && x != ps->cl)
                FAIL(400); /* differing duplicates */
            ps->cl = x;
            ps->cls++;
        }
        break;
    case 17:
        if (bz_str_ieq_c(hn, "transfer-encoding")) {
            ps->tes++;
            /* Only "chunked" alone is supported; chunked must be last
             * and may appear once. */
            if (ps->tes > 1 || !bz_str_ieq_c(hv, "chunked"))
                FAIL(list_has(hv, "chunked") || ps->tes > 1 ? 400 : 501);
            ps->te_chunked = true;
        }
        break;
    }
    return 0;
}

int http__parse_head_step(http_head_parser *ps, const char *buf, size_t len, size_t max_header_bytes,
                          http_req *r, http_header *hdrs, int maxh, int *status)
{
    if (ps->phase == 3) {
        if (ps->result < 0)
            *status = ps->status;
        return ps->result;
    }
    if (ps->phase == 0) {
        /* RFC 9112 §2.2: ignore at least one empty line before the request.
         * One byte cannot tell: "\r" may start it. */
        if (len < 2) {
            if (len == 1 && buf[0] == '\n')
                FAIL(400);
            if (len > max_header_bytes)
                FAIL(431);
            return 0;
        }
        ps->line = buf[0] == '\r' && buf[1] == '\n' ? 2 : 0;
        ps->phase = 1;
    }
    if (ps->phase == 1) {
        ptrdiff_t le = next_line(ps, buf, len);
        if (le == -2)
            FAIL(400);
        if (le == -1) {
            if (len - ps->line > HTTP_MAX_URI + 32)
                FAIL(414);
            if (len > max_header_bytes)
                FAIL(431);
            return 0;
        }
        if (request_line(ps, buf + ps->line, le, buf + len, r, status) < 0)
            return -1;
        ps->line += (size_t)le + 1;
        ps->seen = 0;
        ps->phase = 2;
        r->content_length = -1;
    }
    /* ---- header fields ---- */
    for (;;) {
        if (ps->line > max_header_bytes)
            FAIL(431);
        ptrdiff_t le = next_line(ps, buf, len);
        if (le == -2)
            FAIL(400);
        if (le == -1) {
            if (len > max_header_bytes)
                FAIL(431);
            return 0;
        }
        if (le == 1) { /* CRLF: end of head */
            ps->line += 2;
            break;
        }
        if (field_line(ps, buf + ps->line, le, buf + len, hdrs, maxh, status) < 0)
            return -1;
        ps->line += (size_t)le + 1;
        ps->seen = 0;
    }
    if (ps->tes && ps->cls)
        FAIL(400); /* smuggling vector: both framings */
    if (ps->tes && r->minor == 0)
        FAIL(400);
    if (r->minor >= 1 && ps->hosts != 1)
        FAIL(400);
    if (ps->hosts > 1)
        FAIL(400);
    r->headers = hdrs;
    r->nheaders = ps->n;
    r->chunked = ps->te_chunked;
    r->content_length = ps->cls ? (int64_t)ps->cl : -1;
    r->expect_continue = ps->expect && r->minor >= 1;
    r->keep_alive = r->minor >= 1 ? !ps->conn_close : (ps->conn_keep && !ps->conn_close);
    return done(ps, (int)ps->line, 0, status);
}

int http__parse_head(const char *buf, size_t len, size_t max_header_bytes, http_req *r,
                     http_header *hdrs, int maxh, int *status)
{
    http_head_parser ps;
    http__head_init(&ps);
    return http__parse_head_step(&ps, buf, len, max_header_bytes, r, hdrs, maxh, status);
}

/* ---- chunked ---- */

enum { CH_SIZE = 0, CH_DATA, CH_DATA_CRLF, CH_TRAILER, CH_DONE };

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ),
 * ext-val = token / quoted-string.  Validated, then ignored. */
static bool valid_ext(const char *p, const char *end)
{
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p == end || *p++ != ';')
            return false; /* whitespace must lead to another extension */
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *nm = p;
        while (p < end && tchar[(unsigned char)*p])
            p++;
        if (p == nm)
            return false;
        const char *after_name = p;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p == end || *p != '=') {
            p = after_name;
            continue;
        }
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p < end && *p == '"') {
            p++;
            while (p < end && *p != '"') {
                if (*p == '\\') {
                    p++;
                    if (p == end)
                        return false;
                } else if (!is_fvchar((unsigned char)*p)) {
                    return false;
                }
                p++;
            }
            if (p == end)
                return false;
            p++;
        } else {
            const char *vs = p;
            while (p < end && tchar[(unsigned char)*p])
                p++;
            if (p == vs)
                return false;
        }
    }
    return true;
}

#define CHUNK_LINE_MAX 4096

int http__chunked_step(http_chunked *c, const char *in, size_t len, size_t max, size_t *consumed,
                       const char **data, size_t *dlen)
{
    const char *p = in, *end = in + len;
    *consumed = 0;
    for (;;) {
        switch (c->state) {
        case CH_SIZE: {
            ptrdiff_t le = line_end(p, end);
            if (le == -2)
                return HTTP_CHUNK_ERROR;
            if (le == -1) {
                *consumed = (size_t)(p - in);
                return (end - p) > CHUNK_LINE_MAX ? HTTP_CHUNK_ERROR : HTTP_CHUNK_NEED;
            }
            const char *lend = p + le - 1, *q = p;
            uint64_t size = 0;
            int digits = 0, h;
            while (q < lend && (h = hexval((unsigned char)*q)) >= 0) {
                if (++digits > 15)
                    return HTTP_CHUNK_ERROR; /* 2^60: no overflow */
                size = size * 16 + (uint64_t)h;
                q++;
            }
            if (!digits || !valid_ext(q, lend))
                return HTTP_CHUNK_ERROR;
            p += le + 1;
            c->remaining = size;
            c->state = size ? CH_DATA : CH_TRAILER;
            break;
        }
        case CH_DATA: {
            if (p == end) {
                *consumed = (size_t)(p - in);
                return HTTP_CHUNK_NEED;
            }
            size_t take = (size_t)(end - p);
            if (take > c->remaining)
                take = (size_t)c->remaining;
            if (take > max)
                take = max;
            *data = p;
            *dlen = take;
            c->remaining -= take;
            if (!c->remaining)
                c->state = CH_DATA_CRLF;
            *consumed = (size_t)(p - in) + take;
            return HTTP_CHUNK_DATA;
        }
        case CH_DATA_CRLF:
            if (end - p < 2) {
                if (end - p == 1 && p[0] != '\r')
                    return HTTP_CHUNK_ERROR;
                *consumed = (size_t)(p - in);
                return HTTP_CHUNK_NEED;
            }
            if (p[0] != '\r' || p[1] != '\n')
                return HTTP_CHUNK_ERROR;
            p += 2;
            c->state = CH_SIZE;
            break;
        case CH_TRAILER: {
            ptrdiff_t le = line_end(p, end);
            if (le == -2)
                return HTTP_CHUNK_ERROR;
            if (le == -1) {
                *consumed = (size_t)(p - in);
                return (end - p) > CHUNK_LINE_MAX ? HTTP_CHUNK_ERROR : HTTP_CHUNK_NEED;
            }
            if (le == 1) {
                p += 2;
                c->state = CH_DONE;
                *consumed = (size_t)(p - in);
                return HTTP_CHUNK_DONE;
            }
            /* trailer field: same syntax as a header field; ignored */
            const char *q = p, *lend = p + le - 1;
            while (q < lend && tchar[(unsigned char)*q])
                q++;
            if (q == p || q >= lend || *q != ':')
                return HTTP_CHUNK_ERROR;
            for (q++; q < lend; q++)
                if (!is_fvchar((unsigned char)*q))
                    return HTTP_CHUNK_ERROR;
            p += le + 1;
            break;
        }
        case CH_DONE:
            *consumed = (size_t)(p - in);
            return HTTP_CHUNK_DONE;
        default:
            return HTTP_CHUNK_ERROR;
        }
    }
}

/* ---- paths ---- */

bool http__path_is_clean(const char *p, size_t n)
{
    /* Rooted, and no segment empty (but a trailing one), "." or "..":
     * exactly the paths http__clean_path returns unchanged (it never
     * writes "//" or a "." or ".." segment, and copies every other
     * segment with its slash, the trailing one too). */
    if (!n || p[0] != '/')
        return false;
    for (size_t i = 1; i <= n;) {
        size_t j = i;
        while (j < n && p[j] != '/')
            j++;
        size_t len = j - i;
        if ((len == 0 && j < n) || (len == 1 && p[i] == '.') || (len == 2 && p[i] == '.' && p[i + 1] == '.'))
            return false;
        i = j + 1;
    }
    return true;
}

size_t http__clean_path(const char *p, size_t n, char *out)
{
    /* Lexical processing as in Go's path.Clean, rooted; a trailing slash
     * of the original (other than for "/") is kept, as net/http does.
     * Invariant: out has no trailing slash unless it is just "/". */
    size_t w = 1, i = 0;
    out[0] = '/';
    while (i < n) {
        if (p[i] == '/') {
            i++;
        } else if (p[i] == '.' && (i + 1 == n || p[i + 1] == '/')) {
            i++;
        } else if (p[i] == '.' && i + 1 < n && p[i + 1] == '.' && (i + 2 == n || p[i + 2] == '/')) {
            i += 2;
            if (w > 1) { /* drop the last element and its slash */
                w--;
                while (w > 1 && out[w - 1] != '/')
                    w--;
                if (w > 1)
                    w--;
            }
        } else {
            if (w > 1)
                out[w++] = '/';
            while (i < n && p[i] != '/')
                out[w++] = p[i++];
        }
    }
    if (n > 1 && p[n - 1] == '/' && w > 1)
        out[w++] = '/';
    out[w] = '\0';
    return w;
}

ssize_t http__unescape(bz_str s, char *out)
{
    size_t w = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] != '%') {
            out[w++] = s.p[i];
            continue;
        }
        if (i + 2 >= s.n)
            return -1;
        int a = hexval((unsigned char)s.p[i + 1]), b = hexval((unsigned char)s.p[i + 2]);
        if (a < 0 || b < 0)
            return -1;
        out[w++] = (char)(a * 16 + b);
        i += 2;
    }
    return (ssize_t)w;
}

/* http/hpack.c — HPACK (RFC 7541): the decoder with its dynamic table and
 * Huffman decoding, and the stateless encoder h2.c answers with (see
 * hpack.h). */
#include "http/hpack.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- static table (RFC 7541 Appendix A) ------------------------------------------------ */

typedef struct {
    const char *name, *value;
    uint8_t nl, vl;
} st_entry;

#define S(n, v) {n, v, sizeof n - 1, sizeof v - 1}
static const st_entry STATIC[62] = {
    {"", "", 0, 0}, /* index 0 is not an entry */
    S(":authority", ""), S(":method", "GET"), S(":method", "POST"), S(":path", "/"),
    S(":path", "/index.html"), S(":scheme", "http"), S(":scheme", "https"), S(":status", "200"),
    S(":status", "204"), S(":status", "206"), S(":status", "304"), S(":status", "400"),
    S(":status", "404"), S(":status", "500"), S("accept-charset", ""), S("accept-encoding", "gzip, deflate"),
    S("accept-language", ""), S("accept-ranges", ""), S("accept", ""), S("access-control-allow-origin", ""),
    S("age", ""), S("allow", ""), S("authorization", ""), S("cache-control", ""),
    S("content-disposition", ""), S("content-encoding", ""), S("content-language", ""), S("content-length", ""),
    S("content-location", ""), S("content-range", ""), S("content-type", ""), S("cookie", ""),
    S("date", ""), S("etag", ""), S("expect", ""), S("expires", ""),
    S("from", ""), S("host", ""), S("if-match", ""), S("if-modified-since", ""),
    S("if-none-match", ""), S("if-range", ""), S("if-unmodified-since", ""), S("last-modified", ""),
    S("link", ""), S("location", ""), S("max-forwards", ""), S("proxy-authenticate", ""),
    S("proxy-authorization", ""), S("range", ""), S("referer", ""), S("refresh", ""),
    S("retry-after", ""), S("server", ""), S("set-cookie", ""), S("strict-transport-security", ""),
    S("transfer-encoding", ""), S("user-agent", ""), S("vary", ""), S("via", ""),
    S("www-authenticate", ""),
};
#undef S
#define STATIC_N 61

/* ---- field checks (RFC 9113 §8.2.1) ---------------------------------------------------------
 *
 * NAME_CH: lower-case token characters; VALUE_BAD: NUL, CR, LF. */
static const uint8_t NAME_CH[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,
    ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1,
    ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1,
    ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

bool http__hpack_name_ok(const uint8_t *n, size_t l)
{
    size_t i = l && n[0] == ':' ? 1 : 0;
    if (i == l)
        return false;
    uint8_t all = 1;
    for (; i < l; i++)
        all &= NAME_CH[n[i]];
    return all;
}

static const uint8_t VALUE_BAD[256] = {[0] = 1, ['\r'] = 1, ['\n'] = 1};

bool http__hpack_value_ok(const uint8_t *v, size_t l)
{
    if (!l)
        return true;
    if (v[0] == ' ' || v[0] == '\t' || v[l - 1] == ' ' || v[l - 1] == '\t')
        return false;
    if (l >= 64) /* (memchr is vectorised: three passes over a long value beat one loop) */
        return !memchr(v, '\n', l) && !memchr(v, '\r', l) && !memchr(v, 0, l);
    uint8_t bad = 0;
    for (size_t i = 0; i < l; i++)
        bad |= VALUE_BAD[v[i]];
    return !bad;
}

/* ---- Huffman code (RFC 7541 Appendix B) ------------------------------------------------
 *
 * The code is canonical: codes of one length are consecutive, in symbol
 * order, and each length's first code follows the previous length's
 * last.  So the lengths alone (the table's "len" column, symbols 0..256,
 * 256 = EOS) determine it; the codes are computed once.  The unit tests
 * check computed codes against the RFC's hex column. */
static const uint8_t HUFF_LEN[257] = {
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, /*   0 */
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, /*  16 */
    6,  10, 10, 12, 13, 6,  8,  11, 10, 10, 8,  11, 8,  6,  6,  6,  /*  32 */
    5,  5,  5,  6,  6,  6,  6,  6,  6,  6,  7,  8,  15, 6,  12, 10, /*  48 */
    13, 6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  /*  64 */
    7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  8,  13, 19, 13, 14, 6,  /*  80 */
    15, 5,  6,  5,  6,  5,  6,  6,  6,  5,  7,  7,  6,  6,  6,  5,  /*  96 */
    6,  7,  6,  5,  5,  6,  7,  7,  7,  7,  7,  15, 11, 14, 13, 28, /* 112 */
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, /* 128 */
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, /* 144 */
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, /* 160 */
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, /* 176 */
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, /* 192 */
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, /* 208 */
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, /* 224 */
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, /* 240 */
    30,                                                             /* EOS */
};

static struct {
    uint32_t code[257];      /* right-aligned */
    uint16_t sorted[257];    /* symbols in code order */
    uint32_t lim[32];        /* the largest 32-bit window whose code is at most L bits */
    uint32_t first[32];      /* length L's first code (right-aligned) */
    uint16_t offset[32];     /* index in sorted of length L's first symbol */
    uint8_t minlen, maxlen;
    /* By the next 8 bits: the symbol and its length when its code has at
     * most 8 bits (the letters, digits and most punctuation), else length
     * 0 (look further, from 9 bits on). */
    uint8_t fast_sym[256], fast_len[256];
} H;
static pthread_once_t huff_once = PTHREAD_ONCE_INIT;

static void huff_build(void)
{
    int n = 0;
    uint32_t code = 0;
    H.minlen = 32;
    for (int len = 1; len <= 30; len++) {
        H.first[len] = code;
        H.offset[len] = (uint16_t)n;
        for (int s = 0; s < 257; s++)
            if (HUFF_LEN[s] == len) {
                H.code[s] = code++;
                H.sorted[n++] = (uint16_t)s;
                if (len < H.minlen)
                    H.minlen = (uint8_t)len;
                H.maxlen = (uint8_t)len;
            }
        H.lim[len] = (uint32_t)(((uint64_t)code << (32 - len)) - 1);
        code <<= 1;
    }
    for (uint32_t v = 0; v < 256; v++) {
        uint32_t w = v << 24;
        int len = H.minlen;
        while (len <= 8 && w > H.lim[len])
            len++;
        if (len <= 8) {
            H.fast_sym[v] = (uint8_t)H.sorted[H.offset[len] + ((w >> (32 - len)) - H.first[len])];
            H.fast_len[v] = (uint8_t)len;
        }
    }
}

long http__hpack_huff_decode(const uint8_t *p, size_t n, uint8_t *out)
{
    pthread_once(&huff_once, huff_build);
    /* acc holds nbits unread bits at its top (left-aligned): the next
     * code is always in its top 32 bits. */
    uint64_t acc = 0;
    int nbits = 0;
    size_t i = 0, o = 0;
    for (;;) {
        while (nbits <= 56 && i < n) {
            acc |= (uint64_t)p[i++] << (56 - nbits);
            nbits += 8;
        }
        if (nbits == 0)
            break;
        int len = H.fast_len[acc >> 56];
        if (len && len <= nbits) {
            out[o++] = H.fast_sym[acc >> 56];
            acc <<= len;
            nbits -= len;
            continue;
        }
        uint32_t w = (uint32_t)(acc >> 32);
        if (!len) {
            len = 9;
            while (len <= H.maxlen && w > H.lim[len])
                len++;
        }
        if (len > nbits) {
            /* Only padding may be left: fewer than 8 bits, all ones
             * (the most significant bits of EOS). */
            if (nbits > 7 || (acc >> (64 - nbits)) != (1u << nbits) - 1)
                return -1;
            break;
        }
        uint32_t c = w >> (32 - len);
        uint16_t sym = H.sorted[H.offset[len] + (c - H.first[len])];
        if (sym == 256)
            return -1; /* EOS in a string is an error (§5.2) */
        out[o++] = (uint8_t)sym;
        acc <<= len;
        nbits -= len;
    }
    return (long)o;
}

size_t http__hpack_huff_encode(const uint8_t *p, size_t n, uint8_t *out)
{
    pthread_once(&huff_once, huff_build);
    uint64_t acc = 0;
    int nbits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << HUFF_LEN[p[i]] | H.code[p[i]];
        nbits += HUFF_LEN[p[i]];
        while (nbits >= 8) {
            nbits -= 8;
            out[o++] = (uint8_t)(acc >> nbits);
        }
        acc &= ((uint64_t)1 << nbits) - 1;
    }
    if (nbits) /* pad with the EOS prefix: ones */
        out[o++] = (uint8_t)(acc << (8 - nbits) | (0xffu >> nbits));
    return o;
}

/* ---- the Huffman output scratch (per thread) ---------------------------------------------- */

static _Thread_local uint8_t *tl_scratch;
static _Thread_local size_t tl_scap;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_key_make(void) { pthread_key_create(&scratch_key, free); }

/* Room for n bytes; NULL if there is no memory. */
static uint8_t *scratch(size_t n)
{
    if (n <= tl_scap)
        return tl_scratch;
    pthread_once(&scratch_once, scratch_key_make);
    size_t cap = tl_scap ? tl_scap : 4096;
    while (cap < n)
        cap *= 2;
    uint8_t *p = realloc(tl_scratch, cap);
    if (!p)
        return NULL;
    tl_scratch = p;
    tl_scap = cap;
    pthread_setspecific(scratch_key, p);
    return p;
}

/* ---- decoder ------------------------------------------------------------------------- */

void http__hpack_dec_init(http__hpack_dec *d, size_t limit)
{
    memset(d, 0, sizeof *d);
    d->limit = d->max = limit;
}

void http__hpack_dec_free(http__hpack_dec *d)
{
    free(d->buf);
    free(d->ent);
    memset(d, 0, sizeof *d);
}

size_t http__hpack_dec_bytes(const http__hpack_dec *d)
{
    return d->cap + (size_t)d->ecap * sizeof *d->ent;
}

static http__hpack_entry *dyn_at(const http__hpack_dec *d, uint32_t i) /* 0 = newest */
{
    return &d->ent[(d->first + d->n - 1 - i) % d->ecap];
}

static void evict_to(http__hpack_dec *d, size_t room)
{
    while (d->n && d->size + room > d->max) {
        http__hpack_entry *e = &d->ent[d->first];
        d->size -= (size_t)e->nlen + e->vlen + 32;
        d->head = (size_t)e->off + e->nlen + e->vlen;
        d->first = (d->first + 1) % d->ecap;
        d->n--;
    }
    if (!d->n)
        d->head = d->tail = 0;
}

/* Adds (name, value) as the newest entry (§4.4).  The strings must not
 * point into the table.  -1 only when out of memory. */
static int dyn_add(http__hpack_dec *d, const uint8_t *name, size_t nl, const uint8_t *value, size_t vl)
{
    size_t sz = nl + vl + 32;
    if (sz > d->max) { /* empties the table, adds nothing */
        evict_to(d, d->max + 1);
        return 0;
    }
    evict_to(d, sz);
    size_t need = nl + vl;
    if (d->cap - d->tail < need) {
        size_t live = d->tail - d->head;
        if (live + need > d->cap / 2 && d->cap < 2 * d->limit) {
            size_t cap = d->cap ? d->cap * 2 : 256;
            while (cap < 2 * (live + need) && cap < 2 * d->limit)
                cap *= 2;
            if (cap < live + need)
                cap = live + need;
            uint8_t *b = malloc(cap);
            if (!b)
                return -1;
            if (live)
                memcpy(b, d->buf + d->head, live);
            free(d->buf);
            d->buf = b;
            d->cap = cap;
        } else if (live) {
            memmove(d->buf, d->buf + d->head, live);
        }
        for (uint32_t i = 0; i < d->n; i++)
            d->ent[(d->first + i) % d->ecap].off -= (uint32_t)d->head;
        d->head = 0;
        d->tail = live;
    }
    if (d->n == d->ecap) {
        uint32_t ecap = d->ecap ? d->ecap * 2 : 8;
        http__hpack_entry *e = malloc(sizeof *e * ecap);
        if (!e)
            return -1;
        for (uint32_t i = 0; i < d->n; i++)
            e[i] = d->ent[(d->first + i) % d->ecap];
        free(d->ent);
        d->ent = e;
        d->ecap = ecap;
        d->first = 0;
    }
    if (nl)
        memcpy(d->buf + d->tail, name, nl);
    if (vl)
        memcpy(d->buf + d->tail + nl, value, vl);
    uint32_t ok = http__hpack_name_ok(name, nl) && http__hpack_value_ok(value, vl) ? HTTP_HPACK_CHECKED : 0;
    d->ent[(d->first + d->n) % d->ecap] = (http__hpack_entry){(uint32_t)d->tail, (uint32_t)nl, (uint32_t)vl, ok};
    d->n++;
    d->tail += need;
    d->size += sz;
    return 0;
}

/* An integer with an n-bit prefix at *pp (§5.1); false if it is cut off
 * or does not fit in 32 bits. */
static bool get_int(const uint8_t **pp, const uint8_t *end, int prefix, uint32_t *out)
{
    const uint8_t *p = *pp;
    uint32_t max = (1u << prefix) - 1;
    uint32_t v = *p++ & max;
    if (v == max) {
        uint64_t x = v;
        int shift = 0;
        for (;;) {
            if (p == end || shift > 28)
                return false;
            uint8_t b = *p++;
            x += (uint64_t)(b & 0x7f) << shift;
            if (x > UINT32_MAX)
                return false;
            shift += 7;
            if (!(b & 0x80))
                break;
        }
        v = (uint32_t)x;
    }
    *pp = p;
    *out = v;
    return true;
}

/* A string literal (§5.2) at *pp: *s and *len, decoded into `into` (room
 * for its Huffman expansion) if it is Huffman-coded.  With memo (values
 * only), the decoder's memo is used and kept, and *checked says whether
 * the value is known to pass http__hpack_value_ok. */
static bool get_str(const uint8_t **pp, const uint8_t *end, uint8_t *into, const uint8_t **s, size_t *len,
                    http__hpack_dec *memo, bool *checked)
{
    const uint8_t *p = *pp;
    if (p == end)
        return false;
    bool huff = *p & 0x80;
    uint32_t n;
    if (!get_int(&p, end, 7, &n) || n > (size_t)(end - p))
        return false;
    if (huff && memo && n && n == memo->memo_inlen && memcmp(p, memo->memo_in, n) == 0) {
        *s = memo->memo_out;
        *len = memo->memo_outlen;
        *checked = memo->memo_ok;
    } else if (huff) {
        long k = http__hpack_huff_decode(p, n, into);
        if (k < 0)
            return false;
        *s = into;
        *len = (size_t)k;
        if (memo && n <= HTTP_HPACK_MEMO_IN && (size_t)k <= HTTP_HPACK_MEMO_OUT) {
            memcpy(memo->memo_in, p, n);
            memcpy(memo->memo_out, into, (size_t)k);
            memo->memo_inlen = (uint8_t)n;
            memo->memo_outlen = (uint8_t)k;
            memo->memo_ok = *checked = http__hpack_value_ok(into, (size_t)k);
        }
    } else {
        *s = p;
        *len = n;
    }
    *pp = p + n;
    return true;
}

/* Name (and value) of table index i (1-based: static then dynamic). */
static bool lookup(const http__hpack_dec *d, uint32_t i, const uint8_t **name, size_t *nl, const uint8_t **value,
                   size_t *vl, unsigned *flags)
{
    if (i == 0)
        return false;
    if (i <= STATIC_N) {
        *name = (const uint8_t *)STATIC[i].name;
        *nl = STATIC[i].nl;
        *value = (const uint8_t *)STATIC[i].value;
        *vl = STATIC[i].vl;
        *flags = HTTP_HPACK_CHECKED | HTTP_HPACK_STATIC_NAME | HTTP_HPACK_STATIC_VALUE;
        return true;
    }
    i -= STATIC_N + 1;
    if (i >= d->n)
        return false;
    const http__hpack_entry *e = dyn_at(d, i);
    /* (only empty entries so far: no buffer yet) */
    const uint8_t *base = d->buf ? d->buf : (const uint8_t *)"";
    *name = base + e->off;
    *nl = e->nlen;
    *value = base + e->off + e->nlen;
    *vl = e->vlen;
    *flags = e->checked;
    return true;
}

int http__hpack_decode(http__hpack_dec *d, const uint8_t *p, size_t n, http__hpack_emit emit, void *arg)
{
    const uint8_t *end = p + n;
    bool field_seen = false;
    uint8_t *sc = NULL; /* Huffman output (at most 8/5 of the block) and a table name */
    /* Each turn consumes at least one byte: bounded by n. */
    while (p < end) {
        uint8_t b = *p;
        const uint8_t *name, *value;
        size_t nl, vl;
        uint32_t idx;
        unsigned flags = 0;
        if (b & 0x80) { /* indexed field (§6.1) */
            if (!get_int(&p, end, 7, &idx) || !lookup(d, idx, &name, &nl, &value, &vl, &flags))
                return HTTP_HPACK_EMALFORMED;
            field_seen = true;
            int rc = emit(arg, name, nl, value, vl, flags);
            if (rc)
                return rc;
            continue;
        }
        if ((b & 0xe0) == 0x20) { /* dynamic table size update (§6.3) */
            if (field_seen || !get_int(&p, end, 5, &idx) || idx > d->limit)
                return HTTP_HPACK_EMALFORMED;
            d->max = idx;
            evict_to(d, 0);
            continue;
        }
        bool incr = (b & 0xc0) == 0x40;
        if (!get_int(&p, end, incr ? 6 : 4, &idx))
            return HTTP_HPACK_EMALFORMED;
        if (!sc && !(sc = scratch(n * 2 + 16 + d->limit)))
            return HTTP_HPACK_EMALFORMED;
        size_t used = 0;
        bool name_ok = false, value_ok = false;
        if (idx) {
            const uint8_t *v0;
            size_t v0l;
            unsigned f0;
            if (!lookup(d, idx, &name, &nl, &v0, &v0l, &f0))
                return HTTP_HPACK_EMALFORMED;
            flags = f0 & HTTP_HPACK_STATIC_NAME;
            name_ok = f0 & HTTP_HPACK_CHECKED; /* (an entry checked whole has a good name) */
            if (incr && idx > STATIC_N) { /* the entry may be evicted by the insertion */
                memcpy(sc, name, nl);
                name = sc;
                used = nl;
            }
        } else {
            if (!get_str(&p, end, sc, &name, &nl, NULL, NULL))
                return HTTP_HPACK_EMALFORMED;
            used = name == sc ? nl : 0;
        }
        if (!get_str(&p, end, sc + used, &value, &vl, d, &value_ok))
            return HTTP_HPACK_EMALFORMED;
        field_seen = true;
        if (name_ok)
            flags |= value_ok ? HTTP_HPACK_CHECKED : HTTP_HPACK_NAME_OK;
        if (incr) {
            if (dyn_add(d, name, nl, value, vl) != 0)
                return HTTP_HPACK_EMALFORMED;
            if (d->n && dyn_at(d, 0)->checked) /* (the entry added is this field: checked once) */
                flags |= HTTP_HPACK_CHECKED;
        }
        int rc = emit(arg, name, nl, value, vl, flags);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- encoder ------------------------------------------------------------------------- */

size_t http__hpack_put_int(uint8_t *out, uint8_t first, int prefix_bits, uint32_t v)
{
    uint32_t max = (1u << prefix_bits) - 1;
    if (v < max) {
        out[0] = (uint8_t)(first | v);
        return 1;
    }
    out[0] = (uint8_t)(first | max);
    v -= max;
    size_t k = 1;
    while (v >= 128) {
        out[k++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[k++] = (uint8_t)v;
    return k;
}

void http__hpack_put_status(bz_buf *o, int s)
{
    uint8_t idx = 0;
    switch (s) {
    case 200: idx = 8; break;
    case 204: idx = 9; break;
    case 206: idx = 10; break;
    case 304: idx = 11; break;
    case 400: idx = 12; break;
    case 404: idx = 13; break;
    case 500: idx = 14; break;
    }
    bz_buf_reserve(o, 5);
    uint8_t *w = (uint8_t *)o->data + o->len;
    if (idx) {
        w[0] = 0x80 | idx;
        o->len += 1;
    } else { /* literal without indexing, name :status (8) */
        w[0] = 0x08;
        w[1] = 3;
        w[2] = (uint8_t)('0' + s / 100 % 10);
        w[3] = (uint8_t)('0' + s / 10 % 10);
        w[4] = (uint8_t)('0' + s % 10);
        o->len += 5;
    }
    o->data[o->len] = '\0';
}

/* The static index of a response field's name, or 0. */
static uint32_t static_name(const char *n, size_t l)
{
#define IS(lit, i)                                                          \
    if (l == sizeof lit - 1 && memcmp(n, lit, sizeof lit - 1) == 0)       \
        return i;
    switch (n[0]) {
    case 'a':
        IS("age", 21) IS("allow", 22) IS("accept-ranges", 18) IS("access-control-allow-origin", 20) break;
    case 'c':
        IS("content-type", 31) IS("content-length", 28) IS("cache-control", 24) IS("content-encoding", 26)
        IS("content-language", 27) IS("content-location", 29) IS("content-range", 30)
        IS("content-disposition", 25) break;
    case 'd': IS("date", 33) break;
    case 'e': IS("etag", 34) IS("expires", 36) break;
    case 'l': IS("location", 46) IS("last-modified", 44) IS("link", 45) break;
    case 'r': IS("retry-after", 53) IS("refresh", 52) break;
    case 's':
        IS("server", 54) IS("set-cookie", 55) IS("strict-transport-security", 56) break;
    case 'v': IS("vary", 59) IS("via", 60) break;
    case 'w': IS("www-authenticate", 61) break;
    }
#undef IS
    return 0;
}

void http__hpack_put_field(bz_buf *o, const char *name, size_t nl, const char *value, size_t vl, bool never_index)
{
    uint8_t first = never_index ? 0x10 : 0x00;
    uint32_t idx = nl ? static_name(name, nl) : 0;
    bz_buf_reserve(o, nl + vl + 18);
    uint8_t *w = (uint8_t *)o->data + o->len, *w0 = w;
    if (idx) {
        w += http__hpack_put_int(w, first, 4, idx);
    } else {
        *w++ = first;
        w += http__hpack_put_int(w, 0, 7, (uint32_t)nl);
        memcpy(w, name, nl);
        w += nl;
    }
    w += http__hpack_put_int(w, 0, 7, (uint32_t)vl);
    if (vl)
        memcpy(w, value, vl);
    w += vl;
    o->len += (size_t)(w - w0);
    o->data[o->len] = '\0';
}

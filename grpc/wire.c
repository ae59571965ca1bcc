/* grpc/wire.c — the byte-level pieces: grpc-timeout, grpc-message
 * percent-encoding, gzip, base64, and an arena allocator for protobuf-c. */
#include "grpc/grpc-private.h"

#include <bazaar/clock.h>

#include <errno.h>
#include <sodium.h>
#include <string.h>
#include <zlib.h>

static const char *const names[GRPC_CODE__COUNT] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

const char *grpc_code_name(grpc_code c) { return c >= 0 && c < GRPC_CODE__COUNT ? names[c] : "UNKNOWN"; }

/* "TimeoutValue TimeoutUnit": at most 8 digits, then H M S m u n. */
int grpc_parse_timeout(bz_str v, int64_t *ns)
{
    if (v.n < 2 || v.n > 9)
        return -1;
    int64_t x = 0;
    for (size_t i = 0; i + 1 < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
        x = x * 10 + (v.p[i] - '0');
    }
    int64_t unit;
    switch (v.p[v.n - 1]) {
    case 'H': unit = 3600 * BZ_NS_PER_S; break;
    case 'M': unit = 60 * BZ_NS_PER_S; break;
    case 'S': unit = BZ_NS_PER_S; break;
    case 'm': unit = BZ_NS_PER_MS; break;
    case 'u': unit = 1000; break;
    case 'n': unit = 1; break;
    default: return -1;
    }
    /* 99999999 hours does not fit: cap at ~100 years */
    if (x > INT64_MAX / unit)
        x = INT64_MAX / unit;
    *ns = x * unit;
    return 0;
}

void grpc_percent_encode(bz_buf *out, const char *msg)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
            bz_buf_putc(out, (char)*p);
        } else {
            bz_buf_putc(out, '%');
            bz_buf_putc(out, hex[*p >> 4]);
            bz_buf_putc(out, hex[*p & 15]);
        }
    }
}

int grpc__gzip(const uint8_t *in, size_t n, bz_buf *out)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    uLong bound = deflateBound(&z, (uLong)n);
    bz_buf_reserve(out, bound + 16);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)out->data + out->len;
    z.avail_out = (uInt)(bound + 16);
    int rc = deflate(&z, Z_FINISH);
    if (rc == Z_STREAM_END)
        out->len += z.total_out;
    deflateEnd(&z);
    return rc == Z_STREAM_END ? 0 : -EIO;
}

uint32_t grpc__gzip_isize(const uint8_t *in, size_t n)
{
    if (n < 18) /* a gzip member is at least a 10-byte header and an 8-byte trailer */
        return 0;
    const uint8_t *t = in + n - 4;
    return (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24;
}

int grpc__gunzip(const uint8_t *in, size_t n, int64_t max, bz_buf *out)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 15 + 32) != Z_OK)
        return -ENOMEM;
    /* The trailer's length (checked by zlib at the end) sizes the buffer
     * once, rather than by doubling past what the message needs. */
    uint32_t hint = grpc__gzip_isize(in, n);
    if (hint && (int64_t)hint <= max)
        bz_buf_reserve(out, hint);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    int rc = Z_OK;
    while (rc != Z_STREAM_END) {
        bz_buf_reserve(out, 16384);
        z.next_out = (Bytef *)out->data + out->len;
        z.avail_out = 16384;
        rc = inflate(&z, Z_NO_FLUSH);
        out->len = z.total_out;
        if ((int64_t)out->len > max) {
            inflateEnd(&z);
            return -EMSGSIZE;
        }
        if (rc != Z_OK && rc != Z_STREAM_END) {
            inflateEnd(&z);
            return -EBADMSG;
        }
        if (rc == Z_OK && z.avail_in == 0 && z.avail_out != 0) { /* truncated */
            inflateEnd(&z);
            return -EBADMSG;
        }
    }
    inflateEnd(&z);
    return 0;
}

typedef struct {
    const uint8_t *in;
    size_t n;
    int64_t max;
    bz_buf *out;
    int rc;
} gunzip_job;

static void gunzip_run(void *p)
{
    gunzip_job *j = p;
    j->rc = grpc__gunzip(j->in, j->n, j->max, j->out);
}

int grpc__gunzip_off_loop(rt_ctx *ctx, const uint8_t *in, size_t n, int64_t max, bz_buf *out)
{
    int64_t hint = grpc__gzip_isize(in, n);
    if (hint > max)
        hint = max;
    /* Small messages inflate in microseconds: not worth a thread hop. */
    if (n <= GRPC__INLINE_GUNZIP && hint <= GRPC__INLINE_GUNZIP)
        return grpc__gunzip(in, n, max, out);
    gunzip_job j = {in, n, max, out, 0};
    int e = rt_offload(ctx, gunzip_run, &j);
    return e ? e : j.rc;
}

/* A varint at p[*i..n): false if it does not end in time. */
static bool varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && *i < n; shift += 7) {
        uint8_t b = p[(*i)++];
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

size_t grpc__strip_unknown(const ProtobufCMessageDescriptor *d, uint8_t *p, size_t n)
{
    size_t i = 0, w = 0, start = 0;
    while (i < n) {
        start = i;
        uint64_t tag, len = 0;
        if (!varint(p, n, &i, &tag))
            goto rest;
        switch (tag & 7) {
        case 0:
            if (!varint(p, n, &i, &len))
                goto rest;
            break;
        case 1:
            if (n - i < 8)
                goto rest;
            i += 8;
            break;
        case 2:
            if (!varint(p, n, &i, &len) || len > n - i)
                goto rest;
            i += (size_t)len;
            break;
        case 5:
            if (n - i < 4)
                goto rest;
            i += 4;
            break;
        default: /* groups, or malformed: left for the decoder to judge */
            goto rest;
        }
        if (tag >> 3 > 0 && tag >> 3 <= 0x1fffffff && protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3))) {
            if (w != start)
                memmove(p + w, p + start, i - start);
            w += i - start;
        }
        /* else: an unknown field, dropped */
    }
    return w;
rest:
    /* From the start of the field that did not parse: the decoder sees the
     * malformed bytes as they came and refuses them. */
    if (w != start)
        memmove(p + w, p + start, n - start);
    return w + (n - start);
}

/* Decodes one 4-character group at a time: a -text stream may be the
 * concatenation of separately encoded (and padded) pieces.  A final group
 * may be short when the sender left out its padding. */
bool grpc__b64_decode(const char *s, size_t n, bz_buf *out)
{
    bz_buf_reserve(out, n / 4 * 3 + 3);
    size_t i = 0;
    while (i < n) {
        size_t g = n - i < 4 ? n - i : 4;
        size_t k = g;
        while (k > 0 && s[i + k - 1] == '=')
            k--;
        if (k < 2) /* at most two '=' per group, and never a lone character */
            return false;
        for (size_t j = 0; j < k; j++)
            if (s[i + j] == '=')
                return false;
        size_t got = 0;
        if (sodium_base642bin((unsigned char *)out->data + out->len, 3, s + i, k, NULL, &got, NULL,
                              sodium_base64_VARIANT_ORIGINAL_NO_PADDING) != 0)
            return false;
        out->len += got;
        i += g;
    }
    return true;
}

void grpc__b64_encode(const uint8_t *p, size_t n, bz_buf *out)
{
    size_t m = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
    bz_buf_reserve(out, m);
    sodium_bin2base64(out->data + out->len, m, p, n, sodium_base64_VARIANT_ORIGINAL);
    out->len += m - 1;
    out->data[out->len] = '\0';
}

static void *arena_alloc(void *data, size_t size) { return bz_arena_alloc(data, size ? size : 1); }
static void arena_free(void *data, void *p)
{
    (void)data;
    (void)p; /* the arena frees everything with the call */
}

ProtobufCAllocator grpc__arena_allocator(bz_arena *a) { return (ProtobufCAllocator){arena_alloc, arena_free, a}; }

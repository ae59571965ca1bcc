/* grpc/wire.c — the byte-level pieces: grpc-timeout, grpc-message
 * percent-encoding, gzip, base64, and an arena allocator for protobuf-c. */
#include "grpc/grpc-private.h"

#include "base/clock.h"

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

int grpc__gunzip(const uint8_t *in, size_t n, int64_t max, bz_buf *out)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 15 + 32) != Z_OK)
        return -ENOMEM;
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

/* http/h2-guard.c — the HTTP/2 flood guard: a frame-header scanner over a
 * connection's input that counts the frames which cost the server work
 * without moving a request forward (see h2-private.h).
 *
 * It runs over the bytes before h2.c's frame layer parses them, so a
 * flood is refused before any of its frames cost a parse, a decode or an
 * answer.  Scanning headers is cheap (nine bytes per frame; payloads are
 * skipped, not read).  (It was written when libnghttp2 parsed the frames:
 * Debian 12's 1.52 predates the stream-reset rate limit, "rapid reset",
 * CVE-2023-44487, and the CONTINUATION cap, CVE-2024-28182.)  Limits per
 * connection: */
#include "http/h2-private.h"

#include <string.h>

/* Client RST_STREAMs: cancelling a few requests is normal, hundreds per
 * second is the rapid-reset attack (each reset stream may have started a
 * handler).  (nghttp2 ≥ 1.57 defaults to 1000 burst, 33/s.) */
#define RST_BURST 400
#define RST_RATE 100
/* PINGs that ask for an answer: keep-alive and RTT probes are rare. */
#define PING_BURST 100
#define PING_RATE 20
/* SETTINGS that ask for an ACK: clients send one, maybe a few. */
#define SETTINGS_BURST 32
#define SETTINGS_RATE 8
/* Frames that do nothing: empty DATA without END_STREAM, PRIORITY,
 * unknown types. */
#define EMPTY_BURST 1000
#define EMPTY_RATE 200
/* HPACK-decoded header bytes, in units of --max-header-bytes: a client
 * may send many requests with full header lists, but not hundreds of
 * MiB of them (16,000 references to one 4,000-byte table entry decode
 * to 66 MB from 16 KB on the wire). */
#define DECODED_BURST 256 /* × max-header-bytes */
#define DECODED_RATE 1024 /* × max-header-bytes per second */
/* Header lists over the limit (each answered 431): a mistake now and then,
 * not a stream of them. */
#define OVERSIZED_BURST 32
#define OVERSIZED_RATE 4
/* WINDOW_UPDATEs the DATA we send may explain, at most (see sent_data). */
#define WU_CREDIT_MAX 4096

enum { F_DATA = 0, F_HEADERS = 1, F_PRIORITY = 2, F_RST_STREAM = 3, F_SETTINGS = 4, F_PUSH_PROMISE = 5,
       F_PING = 6, F_GOAWAY = 7, F_WINDOW_UPDATE = 8, F_CONTINUATION = 9 };
enum { FL_END_STREAM = 0x1, FL_ACK = 0x1, FL_END_HEADERS = 0x4, FL_PADDED = 0x8 };
#define ENHANCE_YOUR_CALM 0xbu

bool http__h2_bucket_take(http__h2_bucket *b, int64_t now)
{
    /* GCRA: the bucket is full when the theoretical arrival time is more
     * than burst intervals ahead of now. */
    int64_t t = b->tat > now ? b->tat : now;
    t += b->interval;
    if (t - now > b->burst * b->interval)
        return false;
    b->tat = t;
    return true;
}

static void bucket(http__h2_bucket *b, int64_t burst, int64_t rate)
{
    b->tat = 0;
    b->interval = BZ_NS_PER_S / rate;
    b->burst = burst;
}

/* n events at once (n ≥ 1); the bucket's interval must be ≥ 1 ns. */
static bool bucket_take_n(http__h2_bucket *b, int64_t n, int64_t now)
{
    int64_t t = b->tat > now ? b->tat : now;
    t += b->interval * n;
    if (t - now > b->burst * b->interval)
        return false;
    b->tat = t;
    return true;
}

void http__h2_guard_init(http__h2_guard *g, int64_t max_header_bytes, uint32_t skip_preface)
{
    memset(g, 0, sizeof *g);
    g->preface = skip_preface;
    g->max_block_bytes = (uint64_t)max_header_bytes * 2 + 16384;
    bucket(&g->rst, RST_BURST, RST_RATE);
    bucket(&g->ping, PING_BURST, PING_RATE);
    bucket(&g->settings, SETTINGS_BURST, SETTINGS_RATE);
    bucket(&g->empty, EMPTY_BURST, EMPTY_RATE);
    bucket(&g->oversized, OVERSIZED_BURST, OVERSIZED_RATE);
    /* Bytes: one "event" per 16 bytes keeps the interval above 1 ns for
     * any --max-header-bytes. */
    int64_t unit = max_header_bytes / 16 > 0 ? max_header_bytes / 16 : 1;
    bucket(&g->decoded, DECODED_BURST * unit, DECODED_RATE * unit);
}

bool http__h2_guard_decoded(http__h2_guard *g, size_t n, int64_t now)
{
    if (bucket_take_n(&g->decoded, (int64_t)(n + 15) / 16, now))
        return true;
    g->why = "HPACK bomb (too many decoded header bytes)";
    return false;
}

bool http__h2_guard_oversized(http__h2_guard *g, int64_t now)
{
    if (http__h2_bucket_take(&g->oversized, now))
        return true;
    g->why = "too many header lists over the limit";
    return false;
}

void http__h2_guard_sent_data(http__h2_guard *g)
{
    if (g->wu_credit < WU_CREDIT_MAX)
        g->wu_credit += 2;
}

static uint32_t trip(http__h2_guard *g, const char *why)
{
    g->why = why;
    return ENHANCE_YOUR_CALM;
}

/* One complete frame header. */
static uint32_t frame(http__h2_guard *g, int64_t now)
{
    const uint8_t *h = g->hdr;
    uint32_t len = (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
    uint8_t type = h[3], flags = h[4];
    g->skip = len;
    if (g->in_block) {
        /* Only CONTINUATION may follow; h2.c answers anything else with
         * PROTOCOL_ERROR, so only the count and size matter here. */
        if (type == F_CONTINUATION) {
            g->block_bytes += len;
            if (++g->block_frames > HTTP_H2_MAX_CONTINUATIONS)
                return trip(g, "CONTINUATION flood (too many frames in a header block)");
            if (g->block_bytes > g->max_block_bytes)
                return trip(g, "header block too large");
            if (flags & FL_END_HEADERS)
                g->in_block = false;
            return 0;
        }
        g->in_block = false;
    }
    switch (type) {
    case F_HEADERS:
        if (len > g->max_block_bytes)
            return trip(g, "header block too large");
        if (!(flags & FL_END_HEADERS)) {
            g->in_block = true;
            g->block_frames = 0;
            g->block_bytes = len;
        }
        return 0;
    case F_CONTINUATION:
        /* Outside a block: a protocol error h2.c reports itself. */
        return 0;
    case F_RST_STREAM: {
        /* A client resets every call whose deadline passes (grpc-go,
         * grpc-js): a burst of expired deadlines is not an attack, and
         * costs no more than the short calls it could have made instead,
         * since a stream holds its slot until its handler returns. */
        uint32_t id = ((uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8]) & 0x7fffffffu;
        if (g->reset_expected && g->reset_expected(g->reset_arg, id, now))
            return 0;
        return http__h2_bucket_take(&g->rst, now) ? 0 : trip(g, "rapid reset (too many RST_STREAM)");
    }
    case F_PING:
        if (flags & FL_ACK)
            return 0;
        if (g->ping_earned) {
            /* A PING after response data is a gRPC client measuring the
             * bandwidth-delay product (grpc-go and grpc-core do, after
             * every burst of data): one per batch of our output is not a
             * flood; answering costs less than the output that earned it. */
            g->ping_earned = false;
            return 0;
        }
        return http__h2_bucket_take(&g->ping, now) ? 0 : trip(g, "PING flood");
    case F_SETTINGS:
        if (flags & FL_ACK)
            return 0;
        return http__h2_bucket_take(&g->settings, now) ? 0 : trip(g, "SETTINGS flood");
    case F_DATA:
        if (len > 0 && (flags & FL_PADDED)) {
            /* Padding is not progress: what counts is the data left after
             * it, known once the pad length byte is read. */
            g->pad_next = true;
            g->pad_es = flags & FL_END_STREAM;
            g->pad_len = len;
            return 0;
        }
        if (len > 0 || (flags & FL_END_STREAM))
            return 0;
        return http__h2_bucket_take(&g->empty, now) ? 0 : trip(g, "empty frame flood");
    case F_WINDOW_UPDATE:
        /* Window updates answer DATA we sent; beyond that (+1 increments on
         * closed streams, say) they cost work for nothing. */
        if (g->wu_credit > 0) {
            g->wu_credit--;
            return 0;
        }
        return http__h2_bucket_take(&g->empty, now) ? 0 : trip(g, "WINDOW_UPDATE flood");
    case F_GOAWAY:
    case F_PUSH_PROMISE:
        return 0;
    default: /* PRIORITY and unknown types */
        return http__h2_bucket_take(&g->empty, now) ? 0 : trip(g, "empty frame flood");
    }
}

uint32_t http__h2_guard_feed(http__h2_guard *g, const uint8_t *p, size_t n, int64_t now)
{
    size_t i = 0;
    if (g->preface) {
        size_t k = n < g->preface ? n : g->preface;
        g->preface -= (uint32_t)k;
        i = k;
    }
    /* Each turn consumes at least one byte, so the loop is bounded by n. */
    while (i < n) {
        if (g->pad_next && g->skip) {
            /* The pad length of a padded DATA frame (a length beyond the
             * payload is h2.c's PROTOCOL_ERROR). */
            g->pad_next = false;
            uint32_t pad = p[i++];
            g->skip--;
            if (pad + 1 >= g->pad_len && !g->pad_es && !http__h2_bucket_take(&g->empty, now))
                return trip(g, "empty frame flood (padding only)");
            continue;
        }
        if (g->skip) {
            size_t k = n - i < g->skip ? n - i : g->skip;
            g->skip -= (uint32_t)k;
            i += k;
            continue;
        }
        if (g->hlen == 0 && n - i >= 9) { /* a whole header at hand: one copy */
            memcpy(g->hdr, p + i, 9);
            i += 9;
            uint32_t e = frame(g, now);
            if (e)
                return e;
            continue;
        }
        g->hdr[g->hlen++] = p[i++];
        if (g->hlen == 9) {
            g->hlen = 0;
            uint32_t e = frame(g, now);
            if (e)
                return e;
        }
    }
    return 0;
}

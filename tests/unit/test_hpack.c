/* tests/unit/test_hpack.c — the HPACK codec (http/hpack.c): the Huffman
 * code against RFC 7541 Appendix B, the decoder on every example of
 * Appendix C (C.2–C.6, plain and Huffman, with their dynamic tables'
 * sizes and evictions), malformed blocks (each an error, never a crash),
 * and the encoder's output decoded back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "http/hpack.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t unhex(const char *s, uint8_t *out)
{
    size_t n = 0;
    int hi = -1;
    for (; *s; s++) {
        int v;
        if (*s >= '0' && *s <= '9') v = *s - '0';
        else if (*s >= 'a' && *s <= 'f') v = *s - 'a' + 10;
        else continue;
        if (hi < 0) {
            hi = v;
        } else {
            out[n++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    return n;
}

/* Decoded fields as "name: value\n" lines. */
typedef struct {
    char text[2048];
    size_t len;
    int stop_after; /* emit returns 7 after this many fields (0: never) */
    int count;
} sink;

static int emit(void *arg, const uint8_t *name, size_t nl, const uint8_t *value, size_t vl, unsigned flags)
{
    sink *s = arg;
    s->len += (size_t)snprintf(s->text + s->len, sizeof s->text - s->len, "%.*s: %.*s\n", (int)nl, name, (int)vl,
                               value);
    if (++s->count == s->stop_after)
        return 7;
    return 0;
}

static void decodes_to(http__hpack_dec *d, const char *hex, const char *want, size_t table_size)
{
    uint8_t in[512];
    size_t n = unhex(hex, in);
    sink s = {0};
    assert_int_equal(http__hpack_decode(d, in, n, emit, &s), 0);
    assert_string_equal(s.text, want);
    assert_int_equal(d->size, table_size);
}

static int decode_status(size_t limit, const uint8_t *in, size_t n)
{
    http__hpack_dec d;
    http__hpack_dec_init(&d, limit);
    sink s = {0};
    int rc = http__hpack_decode(&d, in, n, emit, &s);
    http__hpack_dec_free(&d);
    return rc;
}

static int decode_hex(const char *hex)
{
    uint8_t in[512];
    return decode_status(4096, in, unhex(hex, in));
}

/* ---- Appendix B ---- */

static void huffman_codes_match_the_rfc(void **state)
{
    /* Encoding one symbol pads it with ones to a whole byte: the code's
     * bits are the output's top bits.  Symbols and codes from the RFC's
     * table ("code as hex", "len"). */
    static const struct { int sym; uint32_t code; int len; } rows[] = {
        {0, 0x1ff8, 13}, {1, 0x7fffd8, 23}, {9, 0xffffea, 24}, {10, 0x3ffffffc, 30}, {32, 0x14, 6},
        {48, 0x0, 5}, {92, 0x7fff0, 19}, {127, 0xffffffc, 28}, {128, 0xfffe6, 20}, {199, 0x1ffffec, 25},
        {203, 0x7ffffde, 27}, {220, 0xffffffd, 28}, {254, 0x7fffff0, 27}, {255, 0x3ffffee, 26},
        {'a', 0x3, 5}, {'z', 0x7b, 7}, {'~', 0x1ffd, 13}, {'<', 0x7ffc, 15},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint8_t in = (uint8_t)rows[i].sym, out[8];
        size_t n = http__hpack_huff_encode(&in, 1, out);
        assert_int_equal(n, (size_t)(rows[i].len + 7) / 8);
        uint64_t v = 0;
        for (size_t k = 0; k < n; k++)
            v = v << 8 | out[k];
        int pad = (int)n * 8 - rows[i].len;
        assert_int_equal(v >> pad, rows[i].code);
        assert_int_equal(v & ((1u << pad) - 1), (1u << pad) - 1);
        uint8_t back[8];
        assert_int_equal(http__hpack_huff_decode(out, n, back), 1);
        assert_int_equal(back[0], in);
    }
}

static void huffman_round_trips_every_byte(void **state)
{
    uint8_t in[256], enc[1024], dec[2048];
    for (int i = 0; i < 256; i++)
        in[i] = (uint8_t)(255 - i);
    size_t n = http__hpack_huff_encode(in, 256, enc);
    assert_int_equal(http__hpack_huff_decode(enc, n, dec), 256);
    assert_memory_equal(dec, in, 256);
}

static void huffman_rejects_bad_padding_and_eos(void **state)
{
    uint8_t b[8];
    /* 'a' (00011) then 3 bits of zeros: padding must be ones */
    uint8_t zero_pad[] = {0x18};
    assert_int_equal(http__hpack_huff_decode(zero_pad, 1, b), -1);
    /* 'a' then 11 one bits: padding longer than 7 bits */
    uint8_t long_pad[] = {0x1f, 0xff};
    assert_int_equal(http__hpack_huff_decode(long_pad, 2, b), -1);
    /* EOS (30 ones) then padding */
    uint8_t eos[] = {0xff, 0xff, 0xff, 0xff};
    assert_int_equal(http__hpack_huff_decode(eos, 4, b), -1);
    uint8_t ok[] = {0x1f}; /* 'a' + 111 */
    assert_int_equal(http__hpack_huff_decode(ok, 1, b), 1);
    assert_int_equal(b[0], 'a');
}

/* ---- Appendix C ---- */

static void c2_single_representations(void **state)
{
    http__hpack_dec d;
    http__hpack_dec_init(&d, 4096);
    decodes_to(&d, "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572", "custom-key: custom-header\n",
               55);
    http__hpack_dec_free(&d);
    http__hpack_dec_init(&d, 4096);
    decodes_to(&d, "040c 2f73 616d 706c 652f 7061 7468", ":path: /sample/path\n", 0);
    decodes_to(&d, "1008 7061 7373 776f 7264 0673 6563 7265 74", "password: secret\n", 0);
    decodes_to(&d, "82", ":method: GET\n", 0);
    http__hpack_dec_free(&d);
}

static const char *REQ[3] = {
    ":method: GET\n:scheme: http\n:path: /\n:authority: www.example.com\n",
    ":method: GET\n:scheme: http\n:path: /\n:authority: www.example.com\ncache-control: no-cache\n",
    ":method: GET\n:scheme: https\n:path: /index.html\n:authority: www.example.com\ncustom-key: custom-value\n",
};

static void c3_requests_without_huffman(void **state)
{
    http__hpack_dec d;
    http__hpack_dec_init(&d, 4096);
    decodes_to(&d, "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d", REQ[0], 57);
    decodes_to(&d, "8286 84be 5808 6e6f 2d63 6163 6865", REQ[1], 110);
    decodes_to(&d, "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65", REQ[2], 164);
    http__hpack_dec_free(&d);
}

static void c4_requests_with_huffman(void **state)
{
    http__hpack_dec d;
    http__hpack_dec_init(&d, 4096);
    decodes_to(&d, "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff", REQ[0], 57);
    decodes_to(&d, "8286 84be 5886 a8eb 1064 9cbf", REQ[1], 110);
    decodes_to(&d, "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf", REQ[2], 164);
    http__hpack_dec_free(&d);
}

static const char *RESP[3] = {
    ":status: 302\ncache-control: private\ndate: Mon, 21 Oct 2013 20:13:21 GMT\nlocation: https://www.example.com\n",
    ":status: 307\ncache-control: private\ndate: Mon, 21 Oct 2013 20:13:21 GMT\nlocation: https://www.example.com\n",
    (":status: 200\ncache-control: private\ndate: Mon, 21 Oct 2013 20:13:22 GMT\nlocation: https://www.example.com\n"
     "content-encoding: gzip\nset-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1\n"),
};

/* (C.5 and C.6 decode with a 256-byte table: entries are evicted) */
static void c5_responses_without_huffman(void **state)
{
    http__hpack_dec d;
    http__hpack_dec_init(&d, 256);
    decodes_to(&d,
               "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32"
               "3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
               RESP[0], 222);
    decodes_to(&d, "4803 3330 37c1 c0bf", RESP[1], 222);
    decodes_to(&d,
               "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970"
               "7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61"
               "6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
               RESP[2], 215);
    assert_int_equal(d.n, 3);
    http__hpack_dec_free(&d);
}

static void c6_responses_with_huffman(void **state)
{
    http__hpack_dec d;
    http__hpack_dec_init(&d, 256);
    decodes_to(&d,
               "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad"
               "1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
               RESP[0], 222);
    decodes_to(&d, "4883 640e ffc1 c0bf", RESP[1], 222);
    decodes_to(&d,
               "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2"
               "e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
               RESP[2], 215);
    http__hpack_dec_free(&d);
}

/* ---- malformed input ---- */

static void malformed_blocks_are_errors(void **state)
{
    const int E = HTTP_HPACK_EMALFORMED;
    assert_int_equal(decode_hex("80"), E);             /* index 0 */
    assert_int_equal(decode_hex("be"), E);             /* index 62, table empty */
    assert_int_equal(decode_hex("ff 80 80 80 80 80 01"), E); /* integer too long */
    assert_int_equal(decode_hex("ff ff ff ff ff 0f"), E); /* integer past 32 bits */
    assert_int_equal(decode_hex("ff"), E);             /* integer cut off */
    assert_int_equal(decode_hex("04 0c 2f73"), E);     /* string longer than the block */
    assert_int_equal(decode_hex("00"), E);             /* literal, no name */
    assert_int_equal(decode_hex("00 01 61"), E);       /* no value */
    assert_int_equal(decode_hex("04 81 00"), E);       /* Huffman value with bad padding */
    assert_int_equal(decode_hex("04 84 ff ff ff ff"), E); /* Huffman EOS */
    assert_int_equal(decode_hex("3fe21f"), E);         /* size update past our 4,096 */
    assert_int_equal(decode_hex("82 20"), E);          /* size update after a field */
    assert_int_equal(decode_hex("20 3fe11f 82"), 0);   /* size updates first: fine */
    assert_int_equal(decode_hex("4f"), E);             /* name index cut off */
    assert_int_equal(decode_hex("7f 80 01"), E);       /* name index 191: no such entry */
    /* The emitter's answer stops decoding and is passed back. */
    uint8_t in[] = {0x82, 0x86, 0x84};
    http__hpack_dec d;
    http__hpack_dec_init(&d, 4096);
    sink s = {.stop_after = 2};
    assert_int_equal(http__hpack_decode(&d, in, sizeof in, emit, &s), 7);
    assert_int_equal(s.count, 2);
    http__hpack_dec_free(&d);
}

static void size_update_evicts_and_indexes_follow(void **state)
{
    http__hpack_dec d;
    http__hpack_dec_init(&d, 4096);
    decodes_to(&d, "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d", REQ[0], 57);
    /* size 0 empties the table: index 62 is gone */
    decodes_to(&d, "20", "", 0);
    uint8_t be[] = {0xbe};
    sink s = {0};
    assert_int_equal(http__hpack_decode(&d, be, 1, emit, &s), HTTP_HPACK_EMALFORMED);
    /* grown back to 61 bytes: a 62-byte entry is larger than the table, so it empties it */
    decodes_to(&d, "3f 1e 40 01 61 1d 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 "
                   "61 61",
               "a: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", 0);
    http__hpack_dec_free(&d);
}

/* Many insertions through a small table: offsets stay right across
 * compaction and growth (every field read back by index). */
static void table_churn_keeps_entries_right(void **state)
{
    http__hpack_dec d;
    http__hpack_dec_init(&d, 4096);
    for (int i = 0; i < 2000; i++) {
        char name[32], value[64];
        int nl = snprintf(name, sizeof name, "x-n%d", i % 37);
        int vl = snprintf(value, sizeof value, "value-%d-%0*d", i, i % 40, 0);
        uint8_t blk[128];
        size_t n = 0;
        blk[n++] = 0x40;
        blk[n++] = (uint8_t)nl;
        memcpy(blk + n, name, (size_t)nl);
        n += (size_t)nl;
        blk[n++] = (uint8_t)vl;
        memcpy(blk + n, value, (size_t)vl);
        n += (size_t)vl;
        blk[n++] = 0xbe; /* and index 62: the entry just added */
        sink s = {0};
        assert_int_equal(http__hpack_decode(&d, blk, n, emit, &s), 0);
        char want[256];
        snprintf(want, sizeof want, "%s: %s\n%s: %s\n", name, value, name, value);
        assert_string_equal(s.text, want);
        assert_true(d.size <= 4096);
    }
    assert_true(http__hpack_dec_bytes(&d) <= 2 * 4096 + 4096);
    http__hpack_dec_free(&d);
}

static void random_blocks_never_crash(void **state)
{
    uint64_t x = 88172645463325252ull;
    http__hpack_dec d;
    http__hpack_dec_init(&d, 4096);
    for (int round = 0; round < 20000; round++) {
        uint8_t blk[64];
        size_t n = 1 + round % 63;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            blk[i] = (uint8_t)x;
        }
        sink s = {0};
        int rc = http__hpack_decode(&d, blk, n, emit, &s);
        assert_true(rc == 0 || rc == HTTP_HPACK_EMALFORMED);
        assert_true(d.size <= d.max);
    }
    http__hpack_dec_free(&d);
}

/* The memo of the last Huffman-coded value: the same coded bytes give the
 * same value (and its check) without decoding; other bytes replace it. */
static unsigned last_flags;
static int emit_flags(void *arg, const uint8_t *name, size_t nl, const uint8_t *value, size_t vl, unsigned flags)
{
    last_flags = flags;
    return emit(arg, name, nl, value, vl, flags);
}

static size_t path_literal(uint8_t *out, const char *v)
{
    uint8_t enc[128];
    size_t n = http__hpack_huff_encode((const uint8_t *)v, strlen(v), enc);
    out[0] = 0x04; /* literal without indexing, name :path (4) */
    out[1] = (uint8_t)(0x80 | n);
    memcpy(out + 2, enc, n);
    return n + 2;
}

static void huffman_values_are_remembered(void **state)
{
    http__hpack_dec d;
    http__hpack_dec_init(&d, 4096);
    uint8_t b[256];
    const char *vals[] = {"/bazaar.v1.UserService/GetUser", "/bazaar.v1.UserService/GetUser", "/healthz",
                          "/bad\r\nvalue", "/bad\r\nvalue", "/healthz"};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        size_t n = path_literal(b, vals[i]);
        sink s = {0};
        assert_int_equal(http__hpack_decode(&d, b, n, emit_flags, &s), 0);
        char want[128];
        snprintf(want, sizeof want, ":path: %s\n", vals[i]);
        assert_string_equal(s.text, want);
        bool bad = strchr(vals[i], '\r') != NULL;
        /* a good value is known good (CHECKED); a bad one is left to the caller, name known good */
        assert_int_equal(last_flags & (HTTP_HPACK_CHECKED | HTTP_HPACK_NAME_OK),
                         bad ? HTTP_HPACK_NAME_OK : HTTP_HPACK_CHECKED);
        assert_int_equal(d.memo_outlen, strlen(vals[i]));
    }
    http__hpack_dec_free(&d);
}

/* ---- encoder ---- */

static void encoder_output_decodes_back(void **state)
{
    bz_buf o = BZ_BUF_INIT;
    http__hpack_put_status(&o, 200);
    http__hpack_put_status(&o, 418);
    http__hpack_put_field(&o, "content-type", 12, "application/grpc", 16, false);
    http__hpack_put_field(&o, "x-request-id", 12, "abc", 3, true);
    static char big[300];
    memset(big, 'v', sizeof big - 1);
    http__hpack_put_field(&o, "x-big", 5, big, sizeof big - 1, false);
    http__hpack_put_field(&o, "date", 4, "", 0, false);
    /* exact bytes for the first fields */
    assert_int_equal((uint8_t)o.data[0], 0x88);
    assert_memory_equal(o.data + 1, "\x08\x03" "418", 5);
    assert_memory_equal(o.data + 6, "\x0f\x10\x10" "application/grpc", 19);
    assert_memory_equal(o.data + 25, "\x10\x0cx-request-id\x03" "abc", 18);
    http__hpack_dec d;
    http__hpack_dec_init(&d, 4096);
    sink s = {0};
    assert_int_equal(http__hpack_decode(&d, (uint8_t *)o.data, o.len, emit, &s), 0);
    char want[1024];
    snprintf(want, sizeof want,
             ":status: 200\n:status: 418\ncontent-type: application/grpc\nx-request-id: abc\nx-big: %s\ndate: \n", big);
    assert_string_equal(s.text, want);
    assert_int_equal(d.size, 0); /* nothing indexed */
    http__hpack_dec_free(&d);
    bz_buf_free(&o);
    uint8_t iv[8];
    assert_int_equal(http__hpack_put_int(iv, 0, 5, 1337), 3); /* RFC 7541 C.1.2 */
    assert_memory_equal(iv, "\x1f\x9a\x0a", 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(huffman_codes_match_the_rfc),
        cmocka_unit_test(huffman_round_trips_every_byte),
        cmocka_unit_test(huffman_rejects_bad_padding_and_eos),
        cmocka_unit_test(c2_single_representations),
        cmocka_unit_test(c3_requests_without_huffman),
        cmocka_unit_test(c4_requests_with_huffman),
        cmocka_unit_test(c5_responses_without_huffman),
        cmocka_unit_test(c6_responses_with_huffman),
        cmocka_unit_test(malformed_blocks_are_errors),
        cmocka_unit_test(size_update_evicts_and_indexes_follow),
        cmocka_unit_test(table_churn_keeps_entries_right),
        cmocka_unit_test(random_blocks_never_crash),
        cmocka_unit_test(huffman_values_are_remembered),
        cmocka_unit_test(encoder_output_decodes_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * http/hpack.h — HPACK (RFC 7541), the HTTP/2 header compression, as h2.c
 * uses it.  Private to the http layer (and its tests and fuzzers).
 *
 * Decoder: the static table, a dynamic table bounded by the size we
 * advertise (SETTINGS_HEADER_TABLE_SIZE, the default 4,096 bytes) and
 * resized by the peer's size updates, Huffman-coded strings.  Every
 * malformed input is an error (COMPRESSION_ERROR for the connection),
 * never a read past the input or an unbounded allocation.  Its table
 * grows with use (an idle connection whose peer indexes little holds
 * little).
 *
 * Encoder: stateless, the cheapest correct kind — a field whose name is
 * in the static table names it by index, every value is a literal
 * without indexing (never indexed when asked), strings are not
 * Huffman-coded.  So the encoder keeps no dynamic table and never needs
 * to follow the peer's table size.  (Measured: indexing the response's
 * repeating fields saved bytes but cost more instructions than it saved
 * in write(2); see docs/ARCHITECTURE.md.)
 */
#ifndef HTTP_HPACK_H
#define HTTP_HPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bazaar/buf.h>

/* The table size we advertise (the default: not sent in SETTINGS). */
#define HTTP_HPACK_TABLE_MAX 4096

typedef struct http__hpack_entry {
    uint32_t off;       /* name at buf[off], value right after it */
    uint32_t nlen, vlen;
    uint32_t checked;   /* HTTP_HPACK_CHECKED if it passed http__hpack_field_ok */
} http__hpack_entry;

/* The decoder remembers the last Huffman-coded value it decoded (up to
 * HTTP_HPACK_MEMO_IN coded bytes): clients send some values as literals on
 * every request — nghttp2 never indexes :path or content-length — and
 * comparing the coded bytes costs less than decoding and checking them. */
#define HTTP_HPACK_MEMO_IN 64
#define HTTP_HPACK_MEMO_OUT (HTTP_HPACK_MEMO_IN * 8 / 5 + 1)

typedef struct http__hpack_dec {
    uint8_t *buf;       /* entries' bytes, oldest first, in [head, tail) */
    size_t cap, head, tail;
    http__hpack_entry *ent; /* a ring: ent[(first + i) % ecap], oldest first */
    uint32_t ecap, first, n;
    size_t size;        /* the table's size as RFC 7541 §4.1 counts it */
    size_t max;         /* its maximum, from the peer's size updates */
    size_t limit;       /* what we allow (SETTINGS_HEADER_TABLE_SIZE) */
    uint8_t memo_inlen, memo_outlen; /* the memo (0: empty) */
    bool memo_ok;       /* its value passes http__hpack_value_ok */
    uint8_t memo_in[HTTP_HPACK_MEMO_IN], memo_out[HTTP_HPACK_MEMO_OUT];
} http__hpack_dec;

/* A decoded field.  name/value are valid during the call only (but see
 * HTTP_HPACK_STATIC_NAME).  Return 0 to go on; anything else stops
 * decoding and is returned by http__hpack_decode (the table stays
 * consistent only if the caller then ends the connection). */
typedef int (*http__hpack_emit)(void *arg, const uint8_t *name, size_t nl, const uint8_t *value, size_t vl,
                                unsigned flags);
/* flags: the field passed http__hpack_field_ok (a table entry is checked
 * once, when it is added, not on every reference to it) ... */
#define HTTP_HPACK_CHECKED 1u
/* ... its name is static storage (a static table name) ... */
#define HTTP_HPACK_STATIC_NAME 2u
/* ... and so is its value (a static table entry). */
#define HTTP_HPACK_STATIC_VALUE 4u
/* Without HTTP_HPACK_CHECKED: the name at least passed
 * http__hpack_name_ok (a table name), the value is to be checked. */
#define HTTP_HPACK_NAME_OK 8u

/* A field as RFC 9113 §8.2.1 allows it: the name lower-case token
 * characters (a pseudo-field's after its ':'), the value without NUL, CR
 * or LF and without whitespace at either end. */
bool http__hpack_name_ok(const uint8_t *n, size_t l);
bool http__hpack_value_ok(const uint8_t *v, size_t l);

void http__hpack_dec_init(http__hpack_dec *d, size_t limit);
void http__hpack_dec_free(http__hpack_dec *d);
/* Heap bytes the decoder holds (for the connection's memory count). */
size_t http__hpack_dec_bytes(const http__hpack_dec *d);
/* Decodes one complete header block.  0, HTTP_HPACK_EMALFORMED (a
 * COMPRESSION_ERROR), or the emit callback's non-zero return. */
#define HTTP_HPACK_EMALFORMED (-1000)
int http__hpack_decode(http__hpack_dec *d, const uint8_t *p, size_t n, http__hpack_emit emit, void *arg);

/* Huffman (RFC 7541 §5.2, Appendix B): decodes p[0..n) into out (room
 * for n * 8 / 5 + 1 bytes); its length, or -1 if malformed (EOS inside,
 * padding over 7 bits or not all ones). */
long http__hpack_huff_decode(const uint8_t *p, size_t n, uint8_t *out);
/* Encodes p[0..n) into out (room for n * 4 bytes: codes are at most 30
 * bits); its length. */
size_t http__hpack_huff_encode(const uint8_t *p, size_t n, uint8_t *out);

/* ---- encoder ---- */

/* ":status" s (100..999). */
void http__hpack_put_status(bz_buf *o, int s);
/* A field (name lower-case) as a literal without indexing, or never
 * indexed (RFC 7541 §6.2.3: intermediaries keep it out of tables too). */
void http__hpack_put_field(bz_buf *o, const char *name, size_t nl, const char *value, size_t vl, bool never_index);
/* An integer with an n-bit prefix (RFC 7541 §5.1) whose other bits are
 * `first`; bytes written (at most 6 for v < 2^32) into out. */
size_t http__hpack_put_int(uint8_t *out, uint8_t first, int prefix_bits, uint32_t v);

#endif

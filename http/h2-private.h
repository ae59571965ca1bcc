/*
 * http/h2-private.h — HTTP/2 internals shared by server.c, h2.c,
 * h2-guard.c, their unit tests and the fuzzer.  Not part of the layer's
 * interface: handlers see HTTP/2 only through http_req (http.h).
 */
#ifndef HTTP_H2_PRIVATE_H
#define HTTP_H2_PRIVATE_H

#include "http/http-private.h"

/* ---- the connection (h2.c) ----------------------------------------------------------
 *
 * server.c hands a connection over to h2.c when its first bytes are the
 * client preface, or when its first request asks for Upgrade: h2c.  From
 * then on conn_event calls http__h2_event and h2.c owns the connection's
 * lifetime (it frees it with http__conn_free once no coroutine uses it). */

/* 1 if p[0..n) starts with the whole client preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
 * 0 if it is a proper prefix of it (need more bytes; also for n == 0),
 * -1 if it cannot be the preface. */
int http__h2_preface(const char *p, size_t n);
/* Makes c an HTTP/2 connection and processes in[0..n) (starting with the
 * preface).  Called from c's HTTP/1.1 coroutine, which then exits. */
void http__h2_start(http_conn *c, const char *in, size_t n);
/* True if r asks for Upgrade: h2c with one HTTP2-Settings header and
 * Connection naming both (RFC 7540 §3.2). */
bool http__h2_wants_upgrade(const http_req *r);
/* Answers 101, makes c an HTTP/2 connection whose stream 1 is r (copied),
 * then processes rest[0..nrest) (bytes after r's head).  False, with
 * nothing sent, if HTTP2-Settings is malformed: serve r as HTTP/1.1. */
bool http__h2_upgrade(http_conn *c, http_req *r, const char *rest, size_t nrest);
/* Readiness event of an HTTP/2 connection (from conn_event; no coroutine). */
void http__h2_event(http_conn *c, uint32_t ev);
/* Graceful shutdown: GOAWAY(NO_ERROR); in-flight streams finish, new ones
 * are refused; the connection closes when the last one is done. */
void http__h2_drain(http_conn *c);
/* Cancels every stream and closes the socket now; unlinks c. */
void http__h2_abort(http_conn *c);
/* Frees the HTTP/2 state (from http__conn_free). */
void http__h2_free(http__h2 *h);

/* http_req hooks for HTTP/2 streams (dispatched from server.c). */
int http__h2_flush(http_req *r, bool final);
ssize_t http__h2_body_read(http_req *r, void *buf, size_t n);
ssize_t http__h2_body_take(http_req *r, bz_buf *b, size_t min);
void http__h2_set_write_deadline(http_req *r, int64_t deadline_ns);
void http__h2_set_read_deadline(http_req *r, int64_t deadline_ns);
int http__h2_body_reserve(http_req *r, int64_t n);
void http__h2_body_release(http_req *r);
/* Budgeted bytes and running streams of the process (tests, metrics). */
int64_t http__h2_buffered_bytes(void);
int64_t http__h2_streams(void);

/* Bytes of heap the live HTTP/2 connections of this process hold (the
 * connection, its HPACK table, its buffers, a spare stream), for tests and
 * the idle-connection benchmark. */
int64_t http__h2_heap_bytes(void);

/* ---- flood guard (h2-guard.c) -------------------------------------------------------
 *
 * A frame-header scanner over the connection's input (after the preface),
 * ahead of the frame layer: it sees every frame header before h2.c
 * parses it and counts what costs us work but moves no request
 * forward.  Each rate is a token bucket (GCRA): `burst` events at once,
 * then `rate` per second. */

typedef struct http__h2_bucket {
    int64_t tat;        /* theoretical arrival time of the next event (ns) */
    int64_t interval;   /* ns per event at the sustained rate */
    int64_t burst;      /* events allowed at once */
} http__h2_bucket;

/* Counts one event at time now; false when the bucket overflowed. */
bool http__h2_bucket_take(http__h2_bucket *b, int64_t now);

typedef struct http__h2_guard {
    uint8_t hdr[9];     /* frame header being collected */
    uint8_t hlen;       /* bytes of it so far */
    uint32_t skip;      /* payload bytes still to pass over */
    uint32_t preface;   /* preface bytes still to pass over */
    bool in_block;      /* inside a header block (HEADERS without END_HEADERS) */
    bool ping_earned;   /* h2.c sent response HEADERS or DATA since the last PING */
    uint32_t block_frames; /* CONTINUATION frames of the current block */
    uint64_t block_bytes;  /* payload bytes of the current block */
    uint64_t max_block_bytes;
    http__h2_bucket rst, ping, settings, empty;
    http__h2_bucket decoded; /* HPACK-decoded header bytes (one event per byte) */
    http__h2_bucket oversized; /* header lists refused with 431 */
    bool pad_next;      /* the next payload byte is a padded DATA frame's pad length */
    bool pad_es;        /* that frame has END_STREAM */
    uint32_t pad_len;   /* its payload length */
    int64_t wu_credit;  /* WINDOW_UPDATEs the DATA we sent may explain */
    /* Whether a client RST_STREAM of stream id is expected rather than
     * abuse (h2.c: the stream's own deadline has come); such resets are
     * not counted.  NULL: every reset counts. */
    bool (*reset_expected)(void *arg, uint32_t stream_id, int64_t now);
    void *reset_arg;
    const char *why;    /* what tripped, for the log */
} http__h2_guard;

/* Frames a header block may span: legitimate clients split only at
 * SETTINGS_MAX_FRAME_SIZE (16 KiB by default), so a few suffice. */
#define HTTP_H2_MAX_CONTINUATIONS 16

/* max_header_bytes: the --max-header-bytes limit; a compressed header block
 * beyond twice that (+ 16 KiB) is abuse rather than a request to answer 431.
 * skip_preface: 24 when the input starts with the client preface. */
void http__h2_guard_init(http__h2_guard *g, int64_t max_header_bytes, uint32_t skip_preface);
/* Scans p[0..n) at time now.  0 while the peer behaves, else the HTTP/2
 * error code to close the connection with (ENHANCE_YOUR_CALM = 0xb), with
 * g->why set. */
uint32_t http__h2_guard_feed(http__h2_guard *g, const uint8_t *p, size_t n, int64_t now);
/* A request header field of n decoded bytes (name + value + 32, the
 * SETTINGS_MAX_HEADER_LIST_SIZE measure): HPACK turns a few bytes into up
 * to a table entry each, so the decoded size is counted, not only the
 * compressed one.  False (g->why set) past the connection's budget. */
bool http__h2_guard_decoded(http__h2_guard *g, size_t n, int64_t now);
/* A header list refused with 431 (or cut short); false (g->why set) when
 * the peer keeps sending them. */
bool http__h2_guard_oversized(http__h2_guard *g, int64_t now);
/* We sent a DATA frame: the peer may answer with two WINDOW_UPDATEs
 * (stream and connection) that are not counted as empty frames. */
void http__h2_guard_sent_data(http__h2_guard *g);

#endif

/*
 * base/trace.h — W3C Trace Context (https://www.w3.org/TR/trace-context/).
 *
 * A request's trace: the trace id it belongs to (from the caller's
 * `traceparent`, or new), the caller's span (parent id) and this
 * request's own span id.  Plain strings, so every layer — the service
 * layer included — can carry it without knowing the transport.
 *
 * Parsing is strict (version 00 exactly 55 characters; lower-case hex; a
 * trace id or parent id of all zeros is invalid; version ff is invalid;
 * a future version is read by its first four fields when followed by the
 * end or a '-').  An invalid or absent traceparent starts a new trace,
 * and `tracestate` is then dropped, as the specification asks.
 */
#ifndef BZ_TRACE_H
#define BZ_TRACE_H

#include <bazaar/buf.h>

#include <stdbool.h>
#include <stdint.h>

#pragma GCC visibility push(default)

#define BZ_TRACESTATE_MAX 512

typedef struct bz_trace {
    char trace_id[33];   /* 32 lower-case hex digits, never all zero */
    char span_id[17];    /* this request's span: 16 hex digits, new per request */
    char parent_id[17];  /* the caller's span, "" when this request started the trace */
    uint8_t flags;       /* trace-flags (bit 0: sampled), from the caller or 0 */
    bool from_caller;    /* trace_id came from a valid incoming traceparent */
    bz_str tracestate;   /* the caller's, when it looked valid (a slice of the
                            request's headers: lives as long as the request), else empty */
} bz_trace;

/* Fills t from the incoming header values (either may be a NULL slice).
 * Always succeeds: an invalid or absent traceparent yields a new trace.
 * Returns true when traceparent was valid. */
bool bz_trace_start(bz_trace *t, bz_str traceparent, bz_str tracestate);
/* True when v is a valid traceparent (the parser bz_trace_start uses). */
bool bz_traceparent_valid(bz_str v);
/* "00-<trace_id>-<span_id>-<flags>" (55 characters + NUL): the header a
 * downstream call made for this request would carry. */
void bz_trace_format(const bz_trace *t, char out[56]);

#pragma GCC visibility pop
#endif

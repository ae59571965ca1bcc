/*
 * http/http-private.h — internals shared by http/ sources and their tests
 * and fuzzers.  Not part of the layer's interface.
 */
#ifndef HTTP_PRIVATE_H
#define HTTP_PRIVATE_H

#include "http/http.h"

#define HTTP_MAX_URI 8192

/* Parses a request head (request line, header fields, empty line) from
 * buf[0..len).  Returns the head's length when complete, 0 when more
 * bytes are needed, or -1 with *status set to the answer to send before
 * closing (400, 414, 417, 431, 501, 505).  On success r's request-line
 * fields, headers (slices of buf; at most maxh), content_length, chunked,
 * expect_continue and keep_alive are set.  Strict: CRLF line ends only,
 * no obs-fold, no whitespace before ':', token characters in names and
 * methods, no control characters in values, one Content-Length value,
 * never both Content-Length and Transfer-Encoding, Host required in 1.1. */
int http__parse_head(const char *buf, size_t len, size_t max_header_bytes, http_req *r,
                     http_header *hdrs, int maxh, int *status);

/* Incremental chunked-body decoder. */
typedef struct http_chunked {
    int state;          /* private */
    uint64_t remaining; /* bytes left in the current chunk */
} http_chunked;

enum { HTTP_CHUNK_NEED = 0, HTTP_CHUNK_DATA = 1, HTTP_CHUNK_DONE = 2, HTTP_CHUNK_ERROR = -1 };

/* Decodes from in[0..len).  Sets *consumed (bytes of input used up) and
 * returns DATA with *data and *dlen (a slice of in, part of the body, at
 * most max bytes > 0), NEED
 * (consume and come back with more input), DONE (body and trailers ended),
 * or ERROR (bad size, extension, line ending or trailer). */
int http__chunked_step(http_chunked *c, const char *in, size_t len, size_t max, size_t *consumed,
                       const char **data, size_t *dlen);

/* Go's path.Clean for URL paths, keeping a trailing slash.  Writes into out
 * (at least n+1 bytes); returns the length. */
size_t http__clean_path(const char *p, size_t n, char *out);
/* Percent-decodes s into out (at least s.n bytes); -1 on a bad escape. */
ssize_t http__unescape(bz_str s, char *out);

/* Router internals exposed for tests. */
typedef struct http_route_match {
    int found;          /* 1 match, 0 no path match, -1 path matched but not method */
    const char *pattern;
    char allow[128];    /* for -1: comma-separated methods */
} http_route_match;
void http__mux_route(http_mux *m, http_req *r, http_route_match *out, http_handler *h);

/* Connection-side hooks used by http_req functions (server.c). */
int http__conn_flush(http_req *r, bool final);
ssize_t http__conn_body_read(http_req *r, void *buf, size_t n);

#endif

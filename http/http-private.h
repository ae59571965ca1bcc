/*
 * http/http-private.h — internals shared by http/ sources and their tests
 * and fuzzers.  Not part of the layer's interface.
 */
#ifndef HTTP_PRIVATE_H
#define HTTP_PRIVATE_H

#include <bazaar/http.h>

#include <string.h>

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

/* The same parser, resumable: a head arriving over many reads is scanned
 * once, not from byte 0 on every read (a client sending a 16 KiB head a
 * byte at a time would otherwise cost O(n²)).  Complete lines are parsed
 * once; the line still arriving is searched only in its new bytes.  Each
 * call must see the same buffer, only longer (buf[0..len) with len never
 * shrinking, and the bytes seen before unchanged), and the same r and
 * hdrs; results are identical to http__parse_head(buf, len, ...) for every
 * len.  Once it returns non-zero it keeps returning that; init it again
 * for the next head. */
typedef struct http_head_parser {
    size_t line;        /* offset of the line being parsed */
    size_t seen;        /* bytes of that line already searched for its end */
    int phase;          /* 0 start, 1 request line, 2 header fields, 3 done */
    int result, status; /* phase 3: what to return */
    int n, hosts, cls, tes;
    uint64_t cl;
    bool te_chunked, conn_close, conn_keep, expect;
    uint64_t scanned;   /* bytes examined so far, for tests: at most ~3× the
                           head however it is split (tests/unit/test_http.c) */
} http_head_parser;

static inline void http__head_init(http_head_parser *p) { memset(p, 0, sizeof *p); }
int http__parse_head_step(http_head_parser *p, const char *buf, size_t len, size_t max_header_bytes,
                          http_req *r, http_header *hdrs, int maxh, int *status);

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
/* True when http__clean_path would return p[0..n) unchanged (checked
 * without writing: the router asks on every request). */
bool http__path_is_clean(const char *p, size_t n);
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
/* response.c: room for one more field in an arena-held vector of header
 * fields (*v with n used of *cap, doubled from 8): response headers, and
 * HTTP/2 request headers and trailers. */
void http__fields_room(bz_arena *a, http_header **v, int n, int *cap);
/* response.c: http_add_header_n with the name's length known (nl). */
void http__add_field(http_req *r, const char *name, size_t nl, const char *value, size_t vlen);

int http__conn_flush(http_req *r, bool final);
ssize_t http__conn_body_read(http_req *r, void *buf, size_t n);
ssize_t http__h2_body_take(http_req *r, bz_buf *b, size_t min);

/* ---- server internals shared by server.c (HTTP/1.1) and h2.c (HTTP/2) ---- */

#include <stdatomic.h>

typedef struct http_conn http_conn;
typedef struct http__h2 http__h2;

/* Per-loop state of a server: only its loop touches it. */
typedef struct http__loop {
    http_conn *conns;   /* every connection of this loop */
    char **pool;        /* free read buffers */
    int npool;
    struct http__bufset *sets; /* free output/header/body buffers (server.c) */
    int nsets;
    rt_ctx ctx;         /* parent of this loop's request contexts */
    char date[32];      /* cached Date value */
    int64_t date_at;    /* rt_now() when it was made */
    _Atomic int64_t nconns; /* open connections of this loop (http_loop_conns) */
    /* TLS handshakes: in progress on this loop, and the connections
     * waiting for one of its share of --tls-max-handshakes (FIFO) */
    int hs_running;
    http_conn *hs_head, *hs_tail;
} http__loop;

struct http_server {
    http_server_opts o;
    http_handler h;
    rt_listener *L;
    rt_gate *gate;      /* the cap on open connections, or NULL */
    int nloops;
    http__loop *ls;
    rt_ctx ctx;         /* cancelled when the shutdown grace runs out */
    rt_wg conns;        /* one per open connection */
    atomic_bool draining;
    atomic_bool cancelled; /* the shutdown grace ran out */
    size_t bufcap;
    _Atomic int64_t open_h1, open_h2; /* open connections, for http_servers_stats */
};

struct http_conn {
    rt_io io;           /* first: conn_event casts rt_io* back */
    http_server *srv;
    http__loop *ls;
    rt_gate *gate;      /* holds a slot of this gate until the socket closes */
    http_conn *prev, *next;
    rt_timer timer;     /* idle / first-request header timeout; HTTP/2: see h2.c */
    char *rbuf;
    size_t rlen;
    bz_buf out;
    bz_buf bbuf;        /* response body buffer, reused per request */
    bz_arena arena;     /* the requests' arena while a coroutine serves */
    http_header *hdrs;  /* HTTP_MAX_HEADERS parsed header slots, while a coroutine serves */
    bool active;        /* a coroutine is serving (HTTP/1.1) */
    bool dead;          /* closed: the coroutine frees on the way out */
    bool served;        /* a request was served: no HTTP/2 preface now */
    bool tls_h2;        /* TLS with ALPN h2: the only way to HTTP/2 over TLS */
    int64_t hs_deadline; /* TLS: the handshake ends by then (--tls-handshake-timeout) */
    bool hs_slot;       /* holds one of the loop's handshake slots */
    bool hs_queued;     /* waits for one (no coroutine, no TLS state yet) */
    http_conn *hs_prev, *hs_next; /* the loop's handshake queue */
    http__h2 *h2;       /* set once the connection speaks HTTP/2 */
    rt_ctx *req_ctx;    /* the request in progress, for disconnect */
    char peer[64]; /* "[v6addr]:port" is up to 54 bytes */
    /* current request's body */
    size_t rpos;        /* offset of unconsumed bytes in rbuf */
    size_t head_len;
    int64_t body_left;  /* content-length mode */
    bool body_chunked, body_done, continue_sent;
    http_chunked ch;
    int64_t body_total;
    int64_t read_deadline, write_deadline;
};

/* Marks c dead, unlinks it from its loop and closes the socket; does not
 * free it (HTTP/2 frees once its coroutines are gone). */
/* trace.c: before a request's handler runs, on the coroutine that runs it —
 * reads its trace context and makes it the coroutine's current request
 * (what the log's trace source reads); after, forgets it. */
void http__trace_begin(http_req *r);
void http__trace_end(http_req *r);

void http__conn_shut(http_conn *c);
/* Frees c (and its HTTP/2 state) and tells the server it is gone. */
void http__conn_free(http_conn *c);
/* Serves an already connected socket (a socketpair end) as if accepted on
 * the current loop: for the unit tests and the HTTP/2 fuzzer. */
void http__server_adopt(http_server *s, int fd);
/* The Date header value, cached per loop. */
const char *http__date(http__loop *ls);
/* 400/413/500 problem for a handler that failed before responding (the one
 * place both protocols map handler errors to statuses).  Returns true if
 * the connection should not be reused (HTTP/1.1). */
bool http__handler_failed(http_req *r, int rc);

/* Records an error answer in base/errlog (trace.c): the route (or method
 * and path when none matched), the status and code, the trace, the detail. */
void http__errlog(const http_req *r, int status, const char *code, const char *detail);

#endif

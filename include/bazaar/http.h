/*
 * http/http.h — HTTP/1.1 server, Go 1.22-style router and middleware.
 *
 * What net/http gives a Go programmer, on the coroutine runtime:
 *
 *     static int hello(http_req *r, void *data) {
 *         return http_send(r, 200, "text/plain", "hi", 2);
 *     }
 *     char err[128];
 *     int e;
 *     http_mux *mux = http_mux_new();
 *     http_mux_handle(mux, "GET /hello/{name}", (http_handler){hello, NULL}, err, sizeof err);
 *     http_server *s = http_server_new(&opts, http_chain(http_mux_handler(mux), mws, n), &e);
 *     http_server_serve(s);       // parks until shutdown, then drains
 *
 * The same handlers serve HTTP/1.1 and HTTP/2 (h2c, by prior knowledge or
 * by Upgrade: h2c; see http/h2.c): every HTTP/2 stream runs the handler on
 * its own coroutine with the same http_req API.
 *
 * Every request runs on its own coroutine; the handler reads straight
 * through (body reads, DB calls, cache calls park only this request).  An
 * idle keep-alive connection holds no coroutine and no read buffer.
 *
 * A handler returns 0, or a negative errno to report failure: if nothing
 * was sent yet the client gets a 500 problem+json and the error is logged
 * (the "recovery" of Go's servers); if a response was already streaming,
 * the connection is closed so the client sees a truncated message rather
 * than a wrong one.
 */
#ifndef HTTP_HTTP_H
#define HTTP_HTTP_H

#include <bazaar/arena.h>
#include <bazaar/buf.h>
#include <bazaar/trace.h>
#include <bazaar/rt.h>
#include <bazaar/tls.h>

#include <stdbool.h>
#include <stdint.h>

#pragma GCC visibility push(default)

typedef struct http_req http_req;
typedef struct http_server http_server;
typedef struct http_mux http_mux;

typedef struct http_handler {
    int (*fn)(http_req *r, void *data);
    void *data;
} http_handler;

/* A middleware wraps a handler and returns the wrapped one. */
typedef http_handler (*http_middleware)(http_handler next, void *cfg);
typedef struct http_mw {
    http_middleware wrap;
    void *cfg;
} http_mw;

/* Wraps h in mws[0] (outermost) … mws[n-1] (innermost). */
http_handler http_chain(http_handler h, const http_mw *mws, int n);
/* Frees the closures of a chain made of this layer's middleware. */
void http_chain_free(http_handler h);

/* ---- the request ------------------------------------------------------------ */

typedef struct http_header {
    bz_str name, value; /* slices of the connection's read buffer */
} http_header;

#define HTTP_MAX_HEADERS 100
#define HTTP_MAX_PATH_VALUES 8

struct http_req {
    /* request line (slices of the read buffer) */
    bz_str method;
    bz_str target;      /* as sent: path and query */
    bz_str path;        /* target up to '?' (still percent-encoded) */
    bz_str query;       /* after '?', without it; empty if none */
    int minor;          /* HTTP/1.<minor>; 1 for HTTP/2 */
    bool h2;            /* arrived over HTTP/2 (a stream of an h2c connection) */
    http_header *headers;
    int nheaders;
    int64_t content_length; /* -1 if none (or chunked) */
    bool chunked;       /* a body of unknown length follows: HTTP/1.1 chunked, or an
                           HTTP/2 request without content-length that did not end
                           with its headers */
    bool expect_continue;
    bool keep_alive;    /* the client allows another request after this */
    bool body_read;     /* http_read_body ran: body_data/body_len hold it */
    const char *body_data;
    size_t body_len;

    int64_t body_limit; /* 0: --max-body-bytes; -1: none (a framing layer such as
                           gRPC bounds each message of a long stream instead,
                           and --read-timeout does not end the stream: the
                           call's own deadline does) */
    rt_ctx *ctx;        /* cancelled on client disconnect, deadline, shutdown */
    bz_arena *arena;    /* freed when the response is done */
    const char *pattern;/* the route pattern that matched, or NULL */
    char request_id[64];
    char peer[64];      /* "ip:port" of the client */
    bz_trace trace;     /* W3C trace context: from `traceparent`/`tracestate` (REST and
                           gRPC metadata alike) when valid, else a new trace; set before
                           the handler runs.  While the handler runs, every log line
                           of its coroutine carries trace_id and span_id. */
    int64_t start_ns;
    struct http_obs *obs; /* the recorder the request is counted into when it ends
                             (<bazaar/observe.h>), NULL: none */
    bool obs_ends;      /* an access log outside ends the observation */

    /* path values captured by the router */
    int npv;
    struct { const char *name; bz_str raw; } pv[HTTP_MAX_PATH_VALUES];

    /* response side; use the functions below */
    int status;         /* 0 until set */
    /* The response's header fields, in the order they were added
     * (http_add_header): (name, value) pairs whose bytes are NUL-terminated
     * copies in the request's arena.  Names are kept as given on HTTP/1.1
     * and lower-cased on HTTP/2 (r->h2), as each protocol sends them.  They
     * are never held as text: HTTP/1.1 writes them into the response head
     * once, HTTP/2 encodes them (HPACK) as they are.  Read with
     * http_resp_header_get; the server adds Date, Content-Length and
     * Connection itself when it sends the head. */
    http_header *resp_headers;
    int nresp_headers;
    int resp_headers_cap; /* private */
    bz_buf body;        /* buffered body (until the first flush) */
    bool started;       /* status line and headers are on the wire */
    bool streaming;     /* chunked response after a flush */
    bool head;          /* HEAD request: the body is not sent */
    bool close_after;   /* send Connection: close and close */
    bool gzip;          /* the gzip middleware asked for compression */
    int64_t bytes_out;  /* body bytes written (before gzip) */

    struct http_conn *conn; /* private */
    struct http__h2_stream *h2s; /* private: the HTTP/2 stream, NULL on HTTP/1.1 */
};

/* Returns the value of header name (case-insensitive), or NULL slice. */
bz_str http_header_get(const http_req *r, const char *name);
/* Query parameter (first occurrence), percent-decoded into the arena.
 * Returns NULL if absent. */
const char *http_query_get(http_req *r, const char *name);
/* Path value captured by {name} or {name...}, percent-decoded into the
 * arena; NULL if the pattern has no such wildcard. */
const char *http_path_value(http_req *r, const char *name);

/* Reads the whole body (≤ --max-body-bytes) into the arena; later calls
 * return the same bytes.  0 and *data,
 * and *len on success; -EMSGSIZE if over the cap (the server answers 413 if the
 * handler passes the error on), -EBADMSG on bad chunked framing,
 * -ETIMEDOUT/-ECANCELED, -ECONNRESET. */
int http_read_body(http_req *r, const char **data, size_t *len);
/* Streaming body reader: bytes read, 0 at the end of the body, or -errno.
 * Returns what is available as soon as there is some (on HTTP/2, whatever
 * DATA arrived, up to n), so a framing layer (gRPC) can consume a body
 * incrementally; reading is what opens the HTTP/2 flow-control window. */
ssize_t http_body_read(http_req *r, void *buf, size_t n);
/* For a framing layer that keeps its own buffer (gRPC): when b is empty
 * and at least min body bytes have arrived on an HTTP/2 stream, b takes
 * them over without a copy (its old buffer goes to the stream) and their
 * count is returned, as if http_body_read had read them into b.
 * Otherwise 0, nothing taken: read with http_body_read.  Never parks.
 * -EMSGSIZE as http_body_read.  So a message costs one copy from the
 * socket's bytes (into the stream) before it is decoded. */
ssize_t http_body_take(http_req *r, bz_buf *b, size_t min);

/* ---- the response -------------------------------------------------------------- */

void http_set_status(http_req *r, int status);
/* Adds a response header field (r->resp_headers; the bytes are copied).
 * Name and value must be valid (no CR/LF): they come from code, never from
 * clients unchecked.  Needs r->arena. */
void http_add_header(http_req *r, const char *name, const char *value);
void http_add_header_n(http_req *r, const char *name, const char *value, size_t vlen);
/* The value of the first response header field added under name
 * (case-insensitive), or a NULL slice. */
bz_str http_resp_header_get(const http_req *r, const char *name);
/* Drops every response header field added so far (an answer replaced by
 * another, as the recovery middleware does). */
void http_clear_headers(http_req *r);
/* Appends body bytes (buffered until the handler returns or flushes). */
void http_write(http_req *r, const void *data, size_t n);
/* Appends body bytes written in place by fn(buffer, arg) (an encoder that
 * writes straight into the response, without a copy). */
void http_write_with(http_req *r, void (*fn)(bz_buf *b, const void *arg), const void *arg);
/* Sends the status line, headers and what is buffered now, switching to a
 * chunked response; later writes are sent at the next flush or at the end.
 * For streaming (SSE).  0 or -errno.  On HTTP/2 the bytes go out as DATA
 * frames as the stream's flow-control window allows; when more than 64 KiB
 * wait for the client, http_flush parks until it reads (or the write
 * deadline passes: -ETIMEDOUT), so a client that stops reading costs
 * bounded memory.  -EPIPE once the client reset the stream. */
int http_flush(http_req *r);
/* Adds a trailer field sent after the body (HTTP/2 only: gRPC's
 * grpc-status).  Call before the handler returns.  Names are lower-case
 * tokens from code.  0, or -ENOTSUP on HTTP/1.1. */
int http_add_trailer(http_req *r, const char *name, const char *value);
/* status + Content-Type + body in one call.  Returns 0. */
int http_send(http_req *r, int status, const char *content_type, const void *body, size_t n);
/* RFC 9457 problem+json: {"type":"about:blank","title":..,"status":..,"detail":..,"code":..}.
 * detail may be NULL.  Returns 0. */
int http_send_problem(http_req *r, int status, const char *code, const char *detail);
/* The same with extra members: members is raw JSON ("\"errors\":[...]")
 * appended inside the object, from code, never from client bytes. */
int http_send_problem_ext(http_req *r, int status, const char *code, const char *detail, const char *members);
/* Moves this response's write deadline (absolute, bz_now_ns clock;
 * BZ_NO_DEADLINE for none).  Streaming handlers (SSE) call it before each
 * flush, as Go's ResponseController.SetWriteDeadline. */
void http_set_write_deadline(http_req *r, int64_t deadline_ns);
/* Appends body bytes like http_write, but on HTTP/2 a large body leaves in
 * slices as it is written (http_flush every 64 KiB, which parks while the
 * client's window or the connection's and process's budgets for buffered
 * response bytes are full): a large answer costs bounded memory however
 * slowly it is read.  0, or the failed flush's -errno (the rest is
 * dropped).  On HTTP/1.1 the same as http_write. */
int http_write_paced(http_req *r, const void *data, size_t n);
/* For a framing layer about to assemble a large request message of n bytes
 * (gRPC): takes n bytes of the connection's and the process's budgets for
 * buffered request bytes, parking (up to --read-timeout) while the
 * connection's is full.  0; -ENOBUFS when the process's is full (answer
 * RESOURCE_EXHAUSTED); -ETIMEDOUT, -ECANCELED, -ECONNRESET.  Released by
 * http_body_release or when the handler returns.  HTTP/1.1: always 0 (one
 * request per connection, bounded by --max-conns). */
int http_body_reserve(http_req *r, int64_t n);
void http_body_release(http_req *r);
/* The deadline of the next body reads of a framed (body_limit -1) HTTP/2
 * stream: absolute, or 0 for the idle rule (no bytes for --idle-timeout).
 * No-op on HTTP/1.1, whose request has one read deadline. */
void http_set_read_deadline(http_req *r, int64_t deadline_ns);
/* --read-timeout of the server r came to. */
int64_t http_read_timeout(const http_req *r);
/* Standard reason phrase ("Not Found"). */
const char *http_status_text(int status);

/* ---- router (Go 1.22 ServeMux semantics) ---------------------------------------------
 *
 * Patterns are "[METHOD ]/path" with segments that are literals, {name}
 * (one segment), {name...} (the rest, last only) or {$} (end of path after
 * a trailing slash, last only); a pattern ending in '/' matches every path
 * under it.  The most specific pattern wins; registering two patterns that
 * overlap with neither more specific is an error naming both.  GET
 * patterns also serve HEAD.  A path that matches some pattern but not its
 * method gets 405 with Allow; no match gets 404 problem+json; unclean paths
 * (//, /./, /../) are redirected (301) to their clean form. */
http_mux *http_mux_new(void);
/* 0, or -1 with a message in err (pattern syntax or conflict). */
int http_mux_handle(http_mux *m, const char *pattern, http_handler h, char *err, size_t errlen);
http_handler http_mux_handler(http_mux *m);
/* Every registered pattern, for documentation checks. */
int http_mux_patterns(const http_mux *m, const char **out, int max);
void http_mux_free(http_mux *m);

/* ---- middleware ----------------------------------------------------------------------- */

/* X-Request-Id: echoes a valid incoming id (1..63 of [A-Za-z0-9._:-]), else
 * generates one; sets r->request_id and the response header.  A request
 * that carried a `traceparent` (valid or not) is also answered
 * `traceresponse` (http_traceresponse). */
http_handler http_mw_request_id(http_handler next, void *cfg);
/* `traceresponse: 00-<trace_id>-<span_id>-<flags>` (W3C Trace Context
 * level 2) for the caller that takes part in tracing: when the request
 * carried a `traceparent`, valid or not, formats the trace it was served
 * under into out (55 characters + NUL) and returns true, else false.  A
 * caller that sent none finds the request's log lines by its
 * X-Request-Id (each line has both ids), and the hot path does not pay
 * 72 bytes an answer for a header nobody reads. */
bool http_traceresponse(const http_req *r, char out[56]);
/* The same id policy for a transport that does not run the middleware
 * (gRPC's x-request-id metadata): r->request_id from in when it is a
 * valid id, else 128 random bits as 32 hex digits. */
void http_request_id_set(http_req *r, bz_str in);
/* The end of every request (<bazaar/observe.h>, http_obs_end): one
 * structured log line — method, route pattern, path, status, bytes,
 * duration, request id, peer, parent_id (the caller's span from
 * traceparent; empty when the trace started here), and trace_id and
 * span_id as every line logged while the request is served; the same keys
 * as gRPC's line —, and the request counted into its recorder, if it has
 * one.  cfg: a recorder (http_obs *) to count every request into, or NULL
 * (only those an inner http_mw_metrics attaches).  At debug level also a
 * "request started" line before the handler runs. */
http_handler http_mw_access_log(http_handler next, void *cfg);
/* Counts the requests that reach it into a recorder (cfg: http_obs *; NULL:
 * http_obs_requests, the bazaar_http_requests_* families): in flight from
 * here, counted when the access log outside ends them (or here, without a
 * line, when there is none). */
http_handler http_mw_metrics(http_handler next, void *cfg);
/* Turns a handler's error return into a 500 problem+json and a log line. */
http_handler http_mw_recover(http_handler next, void *cfg);
/* cfg: pointer to int64_t nanoseconds; the handler's context gets this
 * deadline; a handler that fails with -ETIMEDOUT before responding gets
 * 503 problem+json (code "timeout"). */
http_handler http_mw_timeout(http_handler next, void *cfg);
/* gzip for compressible bodies ≥ 1 KiB when the client accepts it. */
http_handler http_mw_gzip(http_handler next, void *cfg);

/* ---- server ----------------------------------------------------------------------------- */

typedef struct http_server_opts {
    const char *addr;               /* "[host]:port" */
    int64_t read_header_timeout_ns;
    int64_t read_timeout_ns;
    int64_t write_timeout_ns;
    int64_t idle_timeout_ns;
    int64_t shutdown_grace_ns;
    int64_t max_header_bytes;
    int64_t max_body_bytes;
    int h2_max_concurrent_streams;  /* SETTINGS_MAX_CONCURRENT_STREAMS; 0 = 128 */
    int max_streams;                /* HTTP/2 streams open at once in the process (every
                                       server); past it new ones get REFUSED_STREAM; 0 = 2048 */
    int64_t conn_buffer_bytes;      /* request/response bytes one HTTP/2 connection may
                                       hold buffered; 0 = 8 MiB */
    int64_t buffer_bytes;           /* the same for the whole process; 0 = 64 MiB */
    bool reuse_port;                /* share the port with other processes (SO_REUSEPORT) */
    int64_t tls_handshake_timeout_ns; /* 0 = read_header_timeout_ns */
    int tls_max_handshakes;         /* TLS handshakes in progress per process; 0 = 128 */
    int64_t max_conns;              /* open client connections (HTTP/1.1 and HTTP/2);
                                       past it accept waits; 0 = no cap */
    rt_gate *conn_gate;             /* if set, the cap is this gate's, shared with the
                                       other servers given it (one per-process cap
                                       over both addresses); max_conns is ignored */
    const char *name;               /* for metrics ("public", "grpc", "admin"); NULL = "http";
                                       a string that outlives the server */
    rt_tls_server *tls;             /* if set, every connection speaks TLS: ALPN h2 is
                                       HTTP/2, http/1.1 or none is HTTP/1.1 (no h2c
                                       upgrade, no prior-knowledge preface); borrowed:
                                       must outlive the server (rt/tls.h) */
} http_server_opts;

/* Creates the server and starts listening on every loop (call from a
 * coroutine inside rt_run).  NULL with *err = -errno on failure. */
http_server *http_server_new(const http_server_opts *o, http_handler h, int *err);
int http_server_port(const http_server *s);
/* Parks until rt_shutdown_ctx() ends, then shuts down gracefully: stops
 * accepting, closes idle connections, lets in-flight requests finish with
 * Connection: close for up to shutdown_grace, then cancels what is left.
 * Returns 0 when every connection was drained in time, -ETIMEDOUT if some
 * had to be cut. */
int http_server_serve(http_server *s);
/* True once shutdown began (for /readyz). */
bool http_server_draining(const http_server *s);
void http_server_free(http_server *s);

/* Open connections of every live server (up to 8), for /metrics and
 * /debug/runtime.  A connection counts as HTTP/1.1 until it switches to
 * HTTP/2 (preface or h2c upgrade).  Adopted connections (tests) count too.
 * Returns how many entries were written.  Any thread. */
typedef struct http_server_stats {
    const char *name;
    int port;
    int64_t open_http1, open_http2;
    bool draining;
} http_server_stats;
int http_servers_stats(http_server_stats *out, int max);
/* Open connections owned by event loop `loop`, over every live server. */
int64_t http_loop_conns(int loop);

#pragma GCC visibility pop
#endif

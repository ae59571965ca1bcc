/*
 * include/bazaar/observe.h — what every finished request or call leaves
 * behind, for REST and gRPC alike (http/observe.c).
 *
 * Each transport ends a request here once: http_mw_access_log for HTTP,
 * grpc_observe (grpc/observe.c) for gRPC.  http_obs_end then
 *
 *   - writes the one access-log line (info level).  Both transports write
 *     the same keys in the same order:
 *
 *         msg          "request" (HTTP) or "grpc"
 *         method       the HTTP method; the gRPC method ("/pkg.Svc/Method")
 *         route        what the request matched: the route pattern, the
 *                      registered gRPC method; "" when nothing matched
 *         path         the request path
 *         status|code  the outcome: the HTTP status (a number) or the gRPC
 *                      code's name ("NOT_FOUND") — the one transport-specific key
 *         bytes        response body bytes written (before gzip)
 *         duration_ms  from the request head to now
 *         request_id   X-Request-Id / x-request-id, echoed or made
 *         peer         "ip:port" of the client
 *         parent_id    the caller's span (traceparent), "" when the trace began here
 *
 *     and, as on every line the request's coroutine logs, trace_id and
 *     span_id.  At debug level http_obs_start writes "<msg> started" with
 *     method, path and request_id first.
 *   - counts the request into the recorder it was attached to (if any):
 *     one histogram per (key, variant, outcome) — for HTTP (route pattern,
 *     method, status), for gRPC (method, -, code) — kept in per-thread
 *     shards, so the request path takes no lock and shares no cache line;
 *     a scrape sums the shards.
 *   - ends the in-flight count: a request is in flight on a recorder from
 *     http_obs_attach to http_obs_end.
 *
 * A recorder's Prometheus names and labels are its spec's: a counter by
 * key[, variant], outcome and a duration histogram by key[, variant]
 * (the outcomes summed), written by http_obs_render with base/metrics.
 */
#ifndef BZ_OBSERVE_H
#define BZ_OBSERVE_H

#include <bazaar/http.h>
#include <bazaar/metrics.h>

#include <stdatomic.h>
#include <stdint.h>

#pragma GCC visibility push(default)

/* ---- the recorder ------------------------------------------------------------------------ */

typedef struct http_obs_spec {
    const char *count_name, *count_help; /* counter{key[,variant],outcome} */
    const char *hist_name, *hist_help;   /* histogram{key[,variant]} */
    const char *key_label;               /* "route", "method" */
    const char *variant_label;           /* "method", or NULL for none */
    const char *outcome_label;           /* "status", "code" */
    const char *unknown;                 /* the key of requests that matched nothing */
    const bz_hist_bounds *bounds;
    /* The label value of a variant (with variant_label) and of an outcome;
     * buf (16 bytes) is there for numbers. */
    const char *(*variant_name)(int variant);
    const char *(*outcome_name)(int outcome, char buf[16]);
    /* The key as the label shows it (gRPC drops the leading '/'); NULL: as is. */
    const char *(*key_name)(const char *key);
} http_obs_spec;

/* Statically initialised with HTTP_OBS_INIT; the fields after spec are the
 * module's. */
typedef struct http_obs {
    const http_obs_spec *spec;
    _Atomic int64_t in_flight;
    _Atomic int index_;                  /* its per-thread shard's slot + 1; 0 until first use */
    struct http__obs_shard *_Atomic shards_;
} http_obs;
#define HTTP_OBS_INIT(spec_) {.spec = (spec_)}

/* The HTTP requests' recorder: bazaar_http_requests_total{route,method,status}
 * and bazaar_http_request_duration_seconds{route,method}; its in-flight
 * count (http_obs_in_flight) is the user's to show (the app's
 * bazaar_http_requests_in_flight).  A chain counts into it the requests
 * that reach http_mw_metrics, or every request when it is the access
 * log's cfg. */
extern http_obs http_obs_requests;

/* ---- one request ---------------------------------------------------------------------------- */

/* A transport's words for its access-log lines. */
typedef struct http_obs_kind {
    const char *started, *done; /* the lines' msg: "request started", "request" */
    const char *outcome_key;    /* "status" (written as a number) or "code" (by outcome_name) */
    const char *(*outcome_name)(int outcome, char buf[16]); /* NULL: the number */
} http_obs_kind;

extern const http_obs_kind http_obs_http; /* "request", status */

/* The "started" debug line (method: the transport's, see above). */
void http_obs_start(const http_req *r, const http_obs_kind *k, bz_str method);
/* From now until http_obs_end, r is in flight on o and is counted there
 * when it ends.  Once per request; a second call is ignored. */
void http_obs_attach(http_req *r, http_obs *o);

typedef struct http_obs_done {
    const http_obs_kind *kind; /* NULL: counted, no line */
    bz_str method;      /* the HTTP method, or the gRPC method */
    const char *route;  /* the pattern or registered method that matched; NULL: none (the
                           recorder's unknown key); a string that outlives the process */
    int variant;        /* the recorder's variant (HTTP: http_obs_method_index) */
    int outcome;        /* HTTP status, or gRPC code */
} http_obs_done;
/* The one end of a request: the access-log line, the count and the
 * in-flight gauge (see the top). */
void http_obs_end(http_req *r, const http_obs_done *d);

/* The HTTP status a chain's return leaves the client with: what was set,
 * or what the server answers for a handler's error (413, 400, 500). */
int http_obs_status(const http_req *r, int rc);
/* GET HEAD POST PUT PATCH DELETE OPTIONS → 0..6, anything else 7 ("OTHER"). */
int http_obs_method_index(bz_str method);

/* ---- reading a recorder ----------------------------------------------------------------------- */

/* The counter and the histogram families, Prometheus text, series sorted
 * by key, variant, outcome. */
void http_obs_render(http_obs *o, bz_buf *out);
int64_t http_obs_in_flight(http_obs *o);
/* fn for every series a shard holds (a series may come once per shard),
 * with its key (NULL: the unknown one), variant, outcome and histogram. */
void http_obs_each(http_obs *o, void (*fn)(const char *key, int variant, int outcome, const bz_hist_snap *h, void *arg),
                   void *arg);

#pragma GCC visibility pop

#endif

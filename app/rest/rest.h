/*
 * app/rest/rest.h — the REST/JSON adapter (API.md §2–§8) over the service.
 *
 * Everything HTTP lives here: reading bodies and path ids, Content-Type,
 * JSON in and out, Location, ETag / If-None-Match, Cache-Status,
 * Idempotent-Replayed, RateLimit-*, SSE framing, /openapi.json, and the
 * one table that maps a service error to a status and headers.  Each
 * handler decodes, calls one service operation, and encodes.
 */
#ifndef APP_REST_REST_H
#define APP_REST_REST_H

#include "app/svc/svc.h"
#include <bazaar/buf.h>
#include <bazaar/http.h>
#include <bazaar/service.h>

typedef struct rest rest;

/* The REST routes over s, each under request_timeout (NULL: none) unless
 * it streams, and through the rate limiter.  s may be NULL to inspect the
 * table (tests).  The lifecycle is set later with rest_set_service (/readyz
 * and event streams end while it drains). */
rest *rest_new(svc *s, const app_config *cfg, const int64_t *request_timeout, char *err, size_t errlen);
void rest_set_service(rest *R, const bazaar_service *s);
http_mux *rest_mux(rest *R);
void rest_free(rest *R);

/* The OpenAPI 3.1 document for the route table. */
void rest_openapi(bz_buf *out);

/* The request metrics middleware and /metrics (metrics.c). */
http_handler rest_metrics_middleware(http_handler next, void *cfg);
void rest_metrics_middleware_free(http_handler h);
/* The admin console's view of the request metrics (app/console.c): fn for
 * every (route, method, status) series with its latency histogram (in
 * rest_metrics_bounds), possibly several times per series; returns the
 * REST requests in flight. */
int64_t rest_metrics_each(void (*fn)(const char *route, const char *method, int status, const bz_hist_snap *h,
                                     void *arg),
                          void *arg);
const bz_hist_bounds *rest_metrics_bounds(void);

/* The operations answers for another listener (the admin one,
 * app/admin.c): the same as the public GET /healthz, /readyz and /metrics.
 * The public /metrics answers 404 while --admin-addr is set (the metrics
 * moved there); rest_ops_metrics always renders. */
int rest_ops_healthz(rest *R, http_req *r);
int rest_ops_readyz(rest *R, http_req *r);
int rest_ops_metrics(rest *R, http_req *r);

/* Answers status with a body that fn(buffer, arg) writes straight into the
 * response (no buffer of the handler's own to free). */
int rest_send_with(http_req *r, int status, const char *content_type, void (*fn)(bz_buf *b, const void *arg),
                   const void *arg);

/* If-None-Match (a client header) against a strong ETag: "*", or a comma
 * list of tags compared weakly (RFC 9110 §13.1.2). */
bool rest_none_match(bz_str inm, const char *etag);

#endif

/*
 * app/rest/rest-private.h — what the REST adapter's files share.
 *
 * One convention for "already answered": helpers never write a response;
 * a helper that cannot go on fills a svc_err and returns -1 (or false),
 * and the handler returns rest_fail(r, &e), which answers it through the
 * one mapping table (answer.c).  Every response body, success or problem,
 * is written by answer.c or by the handler's own encoder.
 */
#ifndef APP_REST_PRIVATE_H
#define APP_REST_PRIVATE_H

#include "app/rest/json.h"
#include "app/rest/rest.h"
#include "app/svc/limits.h"
#include "app/svc/svc.h"

typedef struct rest_route rest_route;

struct rest {
    svc *s;
    const app_config *cfg;
    const bazaar_service *life; /* the lifecycle, for draining (rest_set_service), or NULL */
    http_mux *mux;
    struct rest_binding *bindings;
    http_handler *wrapped;
    int n;
};

/* What a handler works with, set up once by the dispatcher: the caller
 * (resolved once per request), the request, a svc_call for it (context,
 * arena, caller, Idempotency-Key), a cleared svc_err, and the {id} path
 * value of a route that has one (a non-number was answered 404 before the
 * handler ran). */
typedef struct rest_x {
    rest *R;
    http_req *r;
    const svc_principal *who;
    svc_call c;
    svc_err e;
    int64_t id;
} rest_x;

/* A handler: answers x->r.  Returns 0 (or a negative errno: 500). */
typedef int (*rest_fn)(rest_x *x);

struct rest_route {
    const char *pattern;    /* "GET /v1/items/{id}" */
    rest_fn fn;
    bool auth;              /* needs a bearer token (401 before anything is read) */
    bool stream;            /* long-lived response: no request timeout */
    const char *summary;    /* OpenAPI summary */
    const char *request;    /* OpenAPI request schema name or NULL */
    const char *response;   /* OpenAPI response schema name or NULL */
    const char *codes;      /* documented statuses, "201 400 401 409" */
};

extern const rest_route rest_routes[];
extern const int rest_nroutes;

/* ---- answering (answer.c) ---- */

/* Answers e: status, headers (Retry-After, WWW-Authenticate) and
 * problem+json from the one table.  Returns 0. */
int rest_fail(http_req *r, const svc_err *e);
/* A model value as JSON through its encoder; with loc_prefix, Location is
 * loc_prefix followed by id ("/v1/items/" 7). */
typedef void (*rest_enc)(bz_buf *b, const void *v);
int rest_send(http_req *r, int status, rest_enc enc, const void *v, const char *loc_prefix, int64_t id);
/* {"data":[...]} of n values of size bytes each; with paged, the
 * "next_cursor" member closes it (null on the last page). */
int rest_send_list(http_req *r, rest_enc enc, const void *data, size_t size, int n, bool paged, const char *next);
/* Idempotent-Replayed and RateLimit-* from what the operation reported. */
void rest_call_headers(http_req *r, const svc_call *c);
void rest_rate_headers(http_req *r, const svc_rate *rt);

/* ---- decoding (decode.c) ---- */

/* A svc_call for this request: context, arena, caller, Idempotency-Key
 * (the dispatcher makes rest_x.c with it). */
svc_call rest_call(http_req *r, const svc_principal *who);
/* Reads and parses the JSON object body: 0, or -1 with e (415, 413, 400
 * invalid_json).  *reals: integers were parsed as reals (one was too big).
 * The tree belongs to the request (released when its arena is): never
 * json_decref it. */
int rest_body(http_req *r, json_t **out, bool *reals, svc_err *e);
/* Members into typed fields, named by a limits row; a wrong type becomes a
 * violation and SVC_BAD. */
svc_str rest_get_str(json_t *o, svc_limit_id id, svc_err *e);
svc_int rest_get_int(json_t *o, svc_limit_id id, bool reals, const char *field, svc_err *e);
/* Query parameters into typed fields (a non-integer is a violation). */
svc_str rest_query_str(http_req *r, svc_limit_id id);
svc_int rest_query_int(http_req *r, svc_limit_id id, svc_err *e);
svc_page_in rest_page(http_req *r, svc_err *e);
/* Path value {name} as a positive id: false (e: not found) if not one
 * (the dispatcher reads {id} into rest_x.id). */
bool rest_path_id(http_req *r, const char *name, int64_t *id, svc_err *e);

/* ---- encoders (encode.c): each takes the model struct its name says ---- */
void rest_json_user(bz_buf *b, const void *svc_user_v);
void rest_json_account(bz_buf *b, const void *svc_account_v);
void rest_json_transfer(bz_buf *b, const void *svc_transfer_v);
void rest_json_item(bz_buf *b, const void *svc_item_v);
void rest_json_order(bz_buf *b, const void *svc_order_v);
void rest_json_event(bz_buf *b, const void *svc_order_event_v);
void rest_json_spender(bz_buf *b, const void *svc_spender_v);
void rest_json_session(bz_buf *b, const void *svc_session_v);

/* ---- handlers, by file ---- */
/* the operations' handlers: app/ops.def's REST column */
#define X__R_DECL_REST(fn) int fn(rest_x *x);
#define X__R_DECL_REST_STREAM(fn) int fn(rest_x *x);
#define X__R_DECL_NO_REST(fn)
#define OP(id, svc_fn, auth, idem, rkind, pattern, fn, gkind, gmethod, summary, req, resp, codes) X__R_DECL_##rkind(fn)
#include "app/ops.def"
#undef OP
/* the ops routes */
int ops_healthz(rest_x *x);
int ops_readyz(rest_x *x);
int ops_metrics(rest_x *x);
int ops_openapi(rest_x *x);

/* metrics.c */
void rest_metrics_render(svc *s, bz_buf *out);
void rest_metrics_count_rate_limited(void);

#endif

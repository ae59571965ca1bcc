/*
 * app/app-private.h — what the app's files share: the application state,
 * the route table entry, and the request helpers every handler uses
 * (auth, bodies, results, idempotency, cursors).
 *
 * Handlers read straight through: parse, validate, run one transaction
 * through db_run_tx, send.  Every response a handler produces goes through
 * an api_result so that a stored idempotent response and a live one are
 * byte-for-byte the same thing.
 */
#ifndef APP_APP_PRIVATE_H
#define APP_APP_PRIVATE_H

#include "app/json.h"
#include "base/config.h"
#include "cache/cache.h"
#include "db/db.h"
#include "http/http.h"
#include "rt/rt.h"

#include <stdatomic.h>

typedef struct app_metrics app_metrics;

#define APP_ACCT_STRIPES 256

typedef struct app {
    const bz_config *cfg;
    db *db;
    cache *cache;
    http_server *srv;
    db_dialect dialect;
    uint8_t cursor_key[32];   /* HMAC key for list cursors, shared via the meta table */
    char dummy_hash[160];     /* verified against for unknown emails (equal timing) */
    /* PostgreSQL: transfers touching the same account queue here (striped
     * by account id) instead of failing each other's SERIALIZABLE
     * transactions; see accounts.c */
    rt_mutex acct_locks[APP_ACCT_STRIPES];
    bool acct_locks_on;
    /* fulfilment worker */
    rt_sem worker_wake;
    atomic_bool stopping;
    rt_wg workers;
} app;

/* ---- results ---- */

typedef struct api_result {
    int status;
    bz_buf body;            /* JSON (status < 400) or problem+json */
    char location[96];      /* Location header, "" for none */
} api_result;

void res_init(api_result *res);
void res_free(api_result *res);
/* Empties res for another attempt of a transaction function. */
void res_reset(api_result *res);
/* A problem: replaces the body.  detail is printf-formatted. */
void res_problem(api_result *res, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Sends res (with Location when set). */
int res_send(http_req *r, const api_result *res);
/* Maps a db/cache error from a transaction to a problem: contention → 503
 * with Retry-After, timeouts → 503/504, the rest → 500 (logged). */
int api_send_error(http_req *r, const bz_error *e);
void res_from_error(api_result *res, const bz_error *e);

/* ---- request helpers ---- */

/* Reads and parses a JSON object body.  On failure it has answered (415,
 * 413, 400) and returns NULL. */
json_t *api_body(http_req *r);
/* Answers 400 validation_failed naming every bad field; frees v. */
int api_invalid(http_req *r, jv *v);
/* Path value {name} as a positive id; answers 404 and returns false if it
 * is not one (a non-numeric id names no resource). */
bool api_path_id(http_req *r, const char *name, int64_t *id);
/* The caller's user id from the bearer token: 0 and *uid, or answers 401
 * (no valid token) or 503 (the session store failed) and returns -1.
 * Tokens are looked up by their SHA-256 in the cache. */
int api_auth(app *a, http_req *r, int64_t *uid);
/* Like api_auth but never answers: *uid = 0 without a valid token, -1 if
 * the session store failed. */
void api_try_auth(app *a, http_req *r, int64_t *uid);
/* ?limit= (default 20, 1..100): answers 400 and returns false if bad. */
bool api_limit(http_req *r, int *limit);

/* RateLimit-Limit/-Remaining/-Reset, and Retry-After when refused. */
void api_rate_headers(http_req *r, const cache_rate *rt);
/* The client's address without the port. */
void api_peer_ip(const http_req *r, char out[64]);

/* Lower-case hex SHA-256 of a token (65 bytes with the NUL). */
void api_token_hash(const char *token, size_t n, char out[65]);

/* ---- cursors: opaque keyset positions, HMAC'd so they cannot be forged
 * or moved to another list ---- */

typedef struct api_cursor {
    int64_t t_us, id;
} api_cursor;
/* scope binds the cursor to one list (e.g. "orders:7:paid"). */
void api_cursor_encode(app *a, const api_cursor *c, const char *scope, char out[64]);
/* Closes a list body: "]" then "next_cursor" (last's cursor when more
 * rows follow, else null) and "}". */
void api_page_end(app *a, bz_buf *b, bool more, const api_cursor *last, const char *scope);
/* Parses ?cursor=: 1 with *c filled, 0 if absent, or answers 400
 * invalid_cursor and returns -1. */
int api_cursor_param(app *a, http_req *r, const char *scope, api_cursor *c);

/* ---- idempotency (API.md §2) ---- */

typedef struct api_idem {
    bool active;            /* a key was sent (and the caller is known) */
    int64_t user_id;
    char key[256];
    char fp[65];            /* hex SHA-256 of method, path and body */
    char lock_name[300];
    char lock_token[33];
    bool locked;
} api_idem;

/* Starts an idempotent request (the fingerprint covers method, path and
 * body, which it reads).  Returns 0 to go on (run the effect and, inside
 * its transaction, api_idem_save; then api_idem_end, which api_tx does),
 * or 1 when it has answered — 400 (missing/invalid key when required), 409
 * in use, 422 reused, or the replay of a stored response — and released
 * everything. */
int api_idem_begin(app *a, http_req *r, int64_t uid, bool required, api_idem *im);
/* Inserts the record for res in tx (no-op when !im->active). */
int api_idem_save(app *a, db_tx *tx, rt_ctx *ctx, const api_idem *im, const api_result *res, bz_error *err);
/* After a failed transaction whose record insert lost a race: answers the
 * stored response and returns 1, else 0. */
int api_idem_replay(app *a, http_req *r, const api_idem *im);
void api_idem_end(app *a, http_req *r, api_idem *im);

/* Runs fn in a SERIALIZABLE transaction (retried on contention by
 * db_run_tx), then answers: res on commit; the stored response when the
 * idempotency insert lost a race; 409 uniq_code on another unique
 * violation (when uniq_code is set); else the mapped error.  Ends im.
 * Returns true if it committed.  The caller frees res.  fn must reset res
 * on every attempt and call api_idem_save. */
bool api_tx(app *a, http_req *r, api_idem *im, db_tx_fn fn, void *arg, api_result *res, const char *uniq_code,
           const char *uniq_detail);
/* Far-future cursor for a first newest-first page. */
#define API_CURSOR_TOP_US 253402300799000000LL

/* ---- routes ---- */

typedef int (*api_fn)(app *a, http_req *r);

typedef struct api_route {
    const char *pattern;    /* "GET /v1/items/{id}" */
    api_fn fn;
    bool auth;              /* documented as needing a bearer token */
    bool stream;            /* long-lived response: no request timeout */
    const char *summary;    /* OpenAPI summary */
    const char *request;    /* OpenAPI request schema name or NULL */
    const char *response;   /* OpenAPI response schema name or NULL */
    const char *codes;      /* documented statuses, "201 400 401 409" */
} api_route;

extern const api_route app_routes[];
extern const int app_nroutes;

/* The router for app_routes: each route dispatches through the rate
 * limiter and, unless it streams, under request_timeout (NULL: none).
 * a may be NULL to inspect the table (tests). */
typedef struct app_mux app_mux;
app_mux *app_mux_new(app *a, const int64_t *request_timeout, char *err, size_t errlen);
http_mux *app_mux_get(app_mux *m);
void app_mux_free(app_mux *m);
/* The OpenAPI 3.1 document for app_routes. */
void app_openapi(bz_buf *out);

/* handlers, by file */
int users_create(app *a, http_req *r);
int users_get(app *a, http_req *r);
int users_find(app *a, http_req *r);
int users_me(app *a, http_req *r);
int users_patch(app *a, http_req *r);
int sessions_create(app *a, http_req *r);
int sessions_delete(app *a, http_req *r);
int accounts_create(app *a, http_req *r);
int accounts_list(app *a, http_req *r);
int accounts_get(app *a, http_req *r);
int accounts_deposit(app *a, http_req *r);
int transfers_create(app *a, http_req *r);
int transfers_get(app *a, http_req *r);
int transfers_list(app *a, http_req *r);
int items_create(app *a, http_req *r);
int items_get(app *a, http_req *r);
int items_list(app *a, http_req *r);
int items_put(app *a, http_req *r);
int items_patch(app *a, http_req *r);
int items_delete(app *a, http_req *r);
int orders_create(app *a, http_req *r);
int orders_get(app *a, http_req *r);
int orders_list(app *a, http_req *r);
int orders_pay(app *a, http_req *r);
int orders_cancel(app *a, http_req *r);
int orders_events(app *a, http_req *r);
int leaderboard_get(app *a, http_req *r);
int ops_healthz(app *a, http_req *r);
int ops_readyz(app *a, http_req *r);
int ops_metrics(app *a, http_req *r);
int ops_openapi(app *a, http_req *r);

bool currency_ok(const char *s, size_t n);

/* items.c: If-None-Match (a client header) against our strong ETag:
 * "*", or a comma list of tags compared weakly (RFC 9110 §13.1.2). */
bool items_none_match(bz_str inm, const char *etag);
/* items.c: drop or refresh the cached copy after a committed change */
void items_cache_invalidate(app *a, int64_t item_id);

/* orders.c: the fulfilment worker (started by serve) */
void fulfil_start(app *a);
void fulfil_stop(app *a);
/* A user's orders changed (after the commit): cached pages of their
 * order list are no longer served. */
void orders_list_changed(app *a, int64_t uid);
/* Publishes {"order_id","status","at"} on the user's channel. */
void orders_publish(app *a, int64_t user_id, int64_t order_id, const char *status, int64_t at_us);

/* ---- schema, passwords, metrics ---- */

extern const db_migration app_migrations[];
extern const int app_nmigrations;
/* Migrates and loads the shared secrets (cursor key).  0 or -1 (logged). */
int app_prepare_db(app *a, rt_ctx *ctx, bz_error *err);

/* Argon2id PHC string of pw, computed on the offload pool. */
int pw_hash(rt_ctx *ctx, const char *pw, size_t n, char out[160]);
/* Cheap deterministic hash for seeded users (API.md §9). */
void pw_hash_seeded(const char *pw, size_t n, uint64_t salt_seed, char out[160]);
/* Verifies pw against a PHC string on the offload pool. */
bool pw_verify(rt_ctx *ctx, const char *hash, const char *pw, size_t n);

http_handler metrics_middleware(http_handler next, void *cfg);
void metrics_middleware_free(http_handler h);
void metrics_count_rate_limited(void);
void metrics_render(app *a, bz_buf *out);

/* seed.c, explain.c */
int app_seed(app *a, rt_ctx *ctx);
int app_explain(app *a, rt_ctx *ctx, FILE *out);

#endif

/*
 * app/svc/svc.h — the marketplace's operations, free of any transport.
 *
 * Every business rule lives here once: normalisation, validation (with
 * per-field violations, limits from one table: limits.h), transactions,
 * locks, idempotency, and the effects that follow a commit (cache
 * invalidation, order-list versions, the leaderboard, order events).  The
 * REST adapter (app/rest/) and the gRPC adapter decode a request into the
 * typed input of one operation, call it, and encode its result or its
 * svc_err through one mapping table per transport.  Nothing here knows an
 * HTTP request, a status number, JSON or protobuf (scripts/check-layers.sh,
 * run by make test, greps for them).
 *
 *     svc_call c = SVC_CALL(ctx, arena, &who);
 *     svc_transfer t;
 *     svc_err e;
 *     if (svc_transfer_create(s, &c, &in, &t, &e) != 0)
 *         return answer_error(&e);       // one table per transport
 *     return answer(&t);
 *
 * Conventions:
 * - Operations return 0 on success, or -1 with *e filled (a kind, a stable
 *   code, a message and, for bad input, field violations).  The caller
 *   hands e in cleared (svc_err_clear) or holding the violations its
 *   decoder found (fields it could not decode are SVC_BAD): the operation
 *   adds its own and refuses with all of them at once.
 * - Results are plain structs; every string and array in them is carved
 *   from call->arena (the request arena), so the caller frees nothing and
 *   everything is gone when the request ends.  One ownership rule: whoever
 *   owns the arena owns the results.
 * - The caller is a principal (svc_principal), resolved once per request
 *   by svc_authenticate.  Operations that need a signed-in user refuse an
 *   anonymous principal with SVC_UNAUTHENTICATED.
 * - Input fields carry a state: absent, set, or bad (the adapter could not
 *   decode it and has already reported why in the violations it passes
 *   in).  Validation never reports a bad field twice.
 */
#ifndef APP_SVC_SVC_H
#define APP_SVC_SVC_H

#include <bazaar/arena.h>
#include <bazaar/buf.h>
#include "app/config.h"
#include <bazaar/error.h>
#include <bazaar/trace.h>
#include <bazaar/cache.h>
#include <bazaar/db.h>
#include <bazaar/rt.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct svc svc;

/* ---- errors: one model for every refusal ---------------------------------------------- */

typedef enum svc_kind {
    SVC_OK = 0,
    SVC_INVALID,         /* bad input: violations name the fields */
    SVC_UNAUTHENTICATED, /* no or invalid token */
    SVC_NOT_FOUND,       /* missing, or not the caller's */
    SVC_ALREADY_EXISTS,  /* a unique thing exists (email_taken, sku_taken, account_exists) */
    SVC_CONFLICT,        /* the current state forbids it (insufficient_funds, out_of_stock, ...) */
    SVC_UNPROCESSABLE,   /* well-formed but semantically wrong (currency_mismatch, same_account, key reused) */
    SVC_RATE_LIMITED,    /* too many requests or streams */
    SVC_UNAVAILABLE,     /* a dependency is down, contention, overload: retry */
    SVC_TIMEOUT,         /* the call's deadline passed */
    SVC_CANCELLED,       /* the caller went away */
    SVC_INTERNAL,        /* a bug or an unexpected failure (logged) */
    /* The adapters' own refusals of a request they could not decode, in the
     * same model so each transport maps them in its one table: */
    SVC_TOO_LARGE,       /* larger than the server accepts (body_too_large); the rest was not read */
    SVC_UNSUPPORTED,     /* in an encoding the adapter does not read (unsupported_media_type) */
    SVC_UNREADABLE,      /* could not be read whole (bad_request); the rest was not read */
    SVC_KIND__COUNT
} svc_kind;

#define SVC_MAX_VIOL 16

typedef struct svc_viol {
    char field[48];   /* "email", "lines[3].quantity" */
    char msg[96];     /* "must be 1 to 100 characters long" */
} svc_viol;

typedef struct svc_err {
    svc_kind kind;
    const char *code;     /* stable, lower-case: "not_found", "insufficient_funds" */
    char msg[256];        /* for people: "account 7 does not exist" */
    int retry_after_s;    /* > 0: when retrying makes sense (rate limits) */
    int nviol;
    svc_viol viol[SVC_MAX_VIOL];
} svc_err;

/* Fills e and returns -1.  msg is printf-formatted. */
int svc_fail(svc_err *e, svc_kind kind, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int svc_vfail(svc_err *e, svc_kind kind, const char *code, const char *fmt, va_list ap);
/* Adds a field violation (kind becomes SVC_INVALID, code validation_failed). */
void svc_violate(svc_err *e, const char *field, const char *msg);
/* A db/cache error as a service error: contention, timeout, cancelled,
 * unavailable; anything else is internal (and logged once here). */
int svc_fail_from(svc_err *e, const bz_error *be);
void svc_err_clear(svc_err *e);
/* Stable name of a kind ("not_found"). */
const char *svc_kind_name(svc_kind k);

/* ---- the caller ------------------------------------------------------------------------- */

typedef struct svc_principal {
    int64_t user_id;       /* 0: anonymous (no token, or one nobody knows) */
    char token_hash[65];   /* SHA-256 hex of the bearer token, "" without one */
    char addr[64];         /* client address without the port ("" if unknown) */
} svc_principal;

/* Resolves a bearer token (may be NULL) into p->user_id.  An unknown
 * token leaves the caller anonymous (0); -1 only when the session store
 * failed (SVC_UNAVAILABLE: a cache outage must not log everybody out). */
int svc_authenticate(svc *s, rt_ctx *ctx, const char *token, size_t n, const char *addr, svc_principal *p,
                     svc_err *e);

/* The same from a credentials value as both transports carry it
 * ("Bearer <token>": the REST Authorization header, the gRPC
 * authorization metadata; anything else is no token) and the peer as
 * "ip:port" (the port is dropped). */
int svc_authenticate_bearer(svc *s, rt_ctx *ctx, bz_str authorization, const char *peer, svc_principal *p,
                            svc_err *e);
/* Only the client address of peer "ip:port" (for a caller whose session
 * is not needed). */
void svc_anonymous(const char *peer, svc_principal *p);

/* Rate-limit information an operation consulted, for the transport to
 * show (RateLimit-* headers, metadata). */
typedef struct svc_rate {
    bool set;              /* a limiter was consulted */
    bool allowed;
    int64_t limit, remaining;
    int64_t reset_s;       /* seconds until the window resets, ≥ 1 */
} svc_rate;

/* --rate-limit for one request of principal p (the user, else the client
 * address), shared by instances through the cache.  0 allowed (or the
 * limiter is off, or the cache failed: it fails open), -1 refused with
 * SVC_RATE_LIMITED.  *rate is filled when a limiter answered. */
int svc_rate_check(svc *s, rt_ctx *ctx, const svc_principal *p, svc_rate *rate, svc_err *e);

/* ---- one call ------------------------------------------------------------------------------ */

typedef struct svc_call {
    rt_ctx *ctx;               /* deadline + cancel: bounds every db and cache call */
    bz_arena *arena;           /* results are allocated here */
    const svc_principal *who;
    const char *idem_key;      /* Idempotency-Key, NULL when none was sent */
    size_t idem_key_len;
    const bz_trace *trace;     /* the request's W3C trace context (trace id, span id), set
                                  by the transport; NULL when there is none (seed, tests).
                                  Every log line of the request carries it already. */
    /* outputs for the transport */
    bool replayed;             /* the result is a stored idempotent one */
    svc_rate rate;             /* a limiter the operation consulted (login) */
} svc_call;

#define SVC_CALL(ctx_, arena_, who_) ((svc_call){.ctx = (ctx_), .arena = (arena_), .who = (who_)})

/* ---- typed input fields ----------------------------------------------------------------- */

enum { SVC_ABSENT = 0, SVC_SET = 1, SVC_BAD = 2 };

typedef struct svc_str {
    const char *p;
    size_t n;
    uint8_t st;
} svc_str;

typedef struct svc_int {
    int64_t v;
    uint8_t st;
} svc_int;

#define SVC_STR_SET(s, len) ((svc_str){(s), (len), SVC_SET})
#define SVC_INT_SET(x) ((svc_int){(x), SVC_SET})

/* A page request: limit (default 20, 1..100) and an opaque cursor. */
typedef struct svc_page_in {
    svc_int limit;
    svc_str cursor;
} svc_page_in;

/* ---- the model ------------------------------------------------------------------------------ */

/* A model's fields are declared once, as a list of F(kind, name) in
 * column order, and expanded into the record below, the SQL column list
 * and the row reader (svc/sql.c, svc/codec.c), the cache record codec and
 * the row-to-record encoder (svc/codec.c), the JSON encoder
 * (rest/encode.c), the protobuf converter (grpc/models.c) and the OpenAPI
 * schema (rest/ops.c); a field added here shows up in each (the protobuf
 * converter does not build until bazaar.proto has it too).  Kinds:
 *   ID    int64, the first column ("id")
 *   INT   int64
 *   STR   a string carved from the arena
 *   OPT   the same, NULL when the caller may not see it (the user's
 *         email): left out of JSON and of the public schema, "" in
 *         protobuf, read from its column only when shown
 *   CUR   an ISO 4217 code (char[4])
 *   STATUS an order status, a static string
 *   LINES n##name and name: the order's lines (svc_line), written by
 *         each consumer's LINES case; the record codec and the row put
 *         them after every other field (the record format stays what
 *         stored records hold)
 *   TIME  name##_us, microseconds since the epoch; name##_at in SQL,
 *         JSON and protobuf
 *   WHEN  the same, named name itself outside (the order event's `at`)
 *   RANK  a small int (int; int32 in protobuf, a plain integer in OpenAPI)
 *   NULLSTR a string, NULL when there is none: JSON null, "" in protobuf
 * A model read from no row (sessions, order events, spenders) expands only
 * what it has: the record, and its codec, JSON, protobuf and OpenAPI. */
#define SVC_USER_FIELDS(F) F(ID, id) F(OPT, email) F(STR, name) F(TIME, created)
#define SVC_ORDER_FIELDS(F)                                                                                           \
    F(ID, id) F(INT, customer_id) F(INT, account_id) F(STATUS, status) F(INT, total_cents) F(CUR, currency)           \
    F(LINES, lines) F(TIME, created) F(TIME, updated)
#define SVC_ACCOUNT_FIELDS(F) F(ID, id) F(INT, user_id) F(CUR, currency) F(INT, balance_cents) F(TIME, created)
#define SVC_TRANSFER_FIELDS(F)                                                                                        \
    F(ID, id) F(INT, from_account_id) F(INT, to_account_id) F(INT, amount_cents) F(CUR, currency) F(TIME, created)
#define SVC_ITEM_FIELDS(F)                                                                                            \
    F(ID, id) F(INT, seller_id) F(STR, sku) F(STR, name) F(INT, price_cents) F(CUR, currency) F(INT, stock)            \
    F(INT, version) F(TIME, created) F(TIME, updated)
#define SVC_SESSION_FIELDS(F) F(STR, token) F(TIME, expires) /* token: the bearer token, shown once */
#define SVC_EVENT_FIELDS(F) F(INT, order_id) F(STATUS, status) F(WHEN, at)
#define SVC_SPENDER_FIELDS(F) F(RANK, rank) F(INT, user_id) F(NULLSTR, name) F(INT, spent_cents) /* name: NULL if the user is gone */

#define SVC_FIELD_ID(n) int64_t n;
#define SVC_FIELD_INT(n) int64_t n;
#define SVC_FIELD_STR(n) const char *n;
#define SVC_FIELD_OPT(n) const char *n;
#define SVC_FIELD_CUR(n) char n[4];
#define SVC_FIELD_STATUS(n) const char *n; /* "pending" | "paid" | "shipped" | "cancelled" (static) */
#define SVC_FIELD_LINES(x)                                                                                            \
    int n##x;                                                                                                         \
    struct svc_line *x;
#define SVC_FIELD_TIME(n) int64_t n##_us;
#define SVC_FIELD_WHEN(n) int64_t n##_us;
#define SVC_FIELD_RANK(n) int n;
#define SVC_FIELD_NULLSTR(n) const char *n;
#define SVC_FIELD(kind, n) SVC_FIELD_##kind(n)

typedef struct svc_user {
    SVC_USER_FIELDS(SVC_FIELD) /* email: NULL unless the caller may see it */
} svc_user;

typedef struct svc_session {
    SVC_SESSION_FIELDS(SVC_FIELD)
} svc_session;

typedef struct svc_account {
    SVC_ACCOUNT_FIELDS(SVC_FIELD)
} svc_account;

typedef struct svc_transfer {
    SVC_TRANSFER_FIELDS(SVC_FIELD)
} svc_transfer;

typedef struct svc_item {
    SVC_ITEM_FIELDS(SVC_FIELD)
} svc_item;

typedef struct svc_line {
    int64_t item_id;
    int64_t quantity;
    int64_t unit_price_cents;
} svc_line;

typedef struct svc_order {
    SVC_ORDER_FIELDS(SVC_FIELD)
} svc_order;

typedef struct svc_order_event {
    SVC_EVENT_FIELDS(SVC_FIELD)
} svc_order_event;

typedef struct svc_spender {
    SVC_SPENDER_FIELDS(SVC_FIELD)
} svc_spender;

/* Pages: data[0..n), next_cursor NULL on the last page. */
#define SVC_PAGE(T)                                                                                                 \
    struct {                                                                                                        \
        T *data;                                                                                                    \
        int n;                                                                                                      \
        const char *next_cursor;                                                                                    \
    }
typedef SVC_PAGE(svc_transfer) svc_transfer_page;
typedef SVC_PAGE(svc_item) svc_item_page;
typedef SVC_PAGE(svc_order) svc_order_page;

/* ---- lifecycle ------------------------------------------------------------------------------ */

/* The service over an open database and cache (the cache may be NULL for
 * commands that need none).  Migrates the schema and loads the shared
 * secrets.  NULL with err filled on failure. */
svc *svc_open(const app_config *cfg, db *d, cache *c, rt_ctx *ctx, bz_error *err);
void svc_close(svc *s);
/* Starts / stops the background work (serve only): the fulfilment worker
 * and the idempotency retention purge. */
void svc_start_worker(svc *s);
void svc_stop_worker(svc *s);
/* One purge of idempotency records older than --idempotency-retention:
 * batches of 1000 rows, one transaction each, at most max_batches;
 * *purged says how many rows went.  The background purge runs this every
 * minute. */
int svc_idem_purge(svc *s, rt_ctx *ctx, int max_batches, int64_t *purged, bz_error *err);
db *svc_db(const svc *s);
/* Serve with a PostgreSQL replica for stale-tolerant reads (before
 * svc_start_worker, which starts its lag prober); see app/svc/replica.c
 * for which reads go there and how read-your-writes is kept.  read stays
 * the caller's to close, after svc_stop_worker. */
void svc_use_replica(svc *s, db *read, int64_t max_lag_ns);
bool svc_has_replica(const svc *s);
/* The schema version this build migrates to. */
int svc_schema_version(void);
cache *svc_cache(const svc *s);
/* Readiness: whether the database and the cache answer now. */
void svc_ready(svc *s, rt_ctx *ctx, bool *db_ok, bool *cache_ok);
/* The dependencies' circuit breakers (base/breaker.h): the database's,
 * the replica's (named "db_read") when there is one, Redis's ("cache")
 * when the cache is Redis.  Returns how many were written to out. */
int svc_breakers(const svc *s, const bz_breaker **out, int max);

/* ---- users and sessions (API.md §3) ------------------------------------------------------ */

typedef struct svc_user_in {
    svc_str email, name, password;
} svc_user_in;

typedef struct svc_user_patch {
    svc_str name, password;
} svc_user_patch;

typedef struct svc_login_in {
    svc_str email, password;
} svc_login_in;

/* Sign-up.  The result shows the email. */
int svc_user_create(svc *s, svc_call *c, const svc_user_in *in, svc_user *out, svc_err *e);
/* A user by id; the email only when the caller is that user. */
int svc_user_get(svc *s, svc_call *c, int64_t id, svc_user *out, svc_err *e);
/* A user's public profile: the public fields only, whoever asks. */
int svc_user_profile(svc *s, svc_call *c, int64_t id, svc_user *out, svc_err *e);
/* The user with this email (case-insensitive): *found false if none.
 * The result is public (no email).  A missing email is a violation. */
int svc_user_find(svc *s, svc_call *c, svc_str email, svc_user *out, bool *found, svc_err *e);
/* The signed-in user, with the email. */
int svc_user_me(svc *s, svc_call *c, svc_user *out, svc_err *e);
/* Name and/or password of the caller's own user (another id: not found). */
int svc_user_patch_op(svc *s, svc_call *c, int64_t id, const svc_user_patch *in, svc_user *out, svc_err *e);
/* Every user with id > after_id, ascending, up to limit (0 = no limit),
 * handed to emit one at a time as they are read (in batches), public
 * fields only (a negative limit is a violation).  emit returning non-zero
 * stops the walk (0 returned).
 * Checks the context between rows: a cancelled caller stops the walk with
 * SVC_CANCELLED / SVC_TIMEOUT. */
typedef int (*svc_user_fn)(void *arg, const svc_user *u);
int svc_users_list(svc *s, svc_call *c, int64_t after_id, int64_t limit, svc_user_fn emit, void *arg, svc_err *e);
/* Login (rate-limited per email and client address; c->rate is set). */
int svc_session_create(svc *s, svc_call *c, const svc_login_in *in, svc_session *out, svc_err *e);
/* Logout: the caller's token stops working everywhere. */
int svc_session_delete(svc *s, svc_call *c, svc_err *e);

/* ---- accounts and transfers (API.md §4) -------------------------------------------------- */

typedef struct svc_deposit_in {
    int64_t account_id;
    svc_int amount_cents;
} svc_deposit_in;

typedef struct svc_transfer_in {
    svc_int from_account_id, to_account_id, amount_cents;
} svc_transfer_in;

int svc_account_create(svc *s, svc_call *c, svc_str currency, svc_account *out, svc_err *e);
int svc_accounts_list(svc *s, svc_call *c, svc_account **out, int *n, svc_err *e);
int svc_account_get(svc *s, svc_call *c, int64_t id, svc_account *out, svc_err *e);
/* Needs an Idempotency-Key. */
int svc_deposit(svc *s, svc_call *c, const svc_deposit_in *in, svc_account *out, svc_err *e);
/* Needs an Idempotency-Key. */
int svc_transfer_create(svc *s, svc_call *c, const svc_transfer_in *in, svc_transfer *out, svc_err *e);
int svc_transfer_get(svc *s, svc_call *c, int64_t id, svc_transfer *out, svc_err *e);
/* Transfers in and out of one of the caller's accounts, newest first. */
int svc_transfers_list(svc *s, svc_call *c, int64_t account_id, const svc_page_in *pg, svc_transfer_page *out,
                       svc_err *e);

/* ---- items (API.md §5) ------------------------------------------------------------------------ */

typedef struct svc_item_in {
    svc_str sku, name, currency;
    svc_int price_cents, stock;
} svc_item_in;

typedef struct svc_items_query {
    svc_int seller_id;      /* filter (absent: every seller) */
    svc_int offset;         /* offset mode (slower; capped) */
    svc_page_in page;
} svc_items_query;

typedef struct svc_import_result {
    bz_arena *arena;        /* where the error lines live (NULL: the call's arena) */
    int created, rejected;
    int nerrors;            /* ≤ SVC_IMPORT_MAX_ERRORS lines kept */
    const char **errors;    /* "item 3 (sku \"x\"): sku_taken: ..." */
} svc_import_result;
#define SVC_IMPORT_MAX_ERRORS 100

/* An item through the cache (cache-aside, single-flight, early refresh):
 * *hit tells whether the cache answered.  Not found is SVC_NOT_FOUND. */
int svc_item_get(svc *s, svc_call *c, int64_t id, svc_item *out, bool *hit, svc_err *e);
/* svc_item_get in two halves, for an adapter that keeps what it made of
 * an entry (svc_rendition_*): the cached record's bytes exactly as the
 * cache holds them (*rec lives in the call's arena), and its decoding. */
int svc_item_get_record(svc *s, svc_call *c, int64_t id, bz_str *rec, bool *hit, svc_err *e);
int svc_item_from_record(bz_str rec, bz_arena *a, svc_item *out, svc_err *e);

/* ---- renditions: what an adapter made of a cached record, kept with it ----
 *
 * A cache hit that decodes the record and encodes the answer again each
 * time does the same work for the same bytes.  An adapter keeps its
 * rendition (REST: the ETag and the JSON body) with the exact record bytes
 * it was made from; a later hit whose record bytes are the same, byte for
 * byte, is served from it.  Invalidation stays the cache's alone: any
 * change to the entry (a write's new version, a tombstone, a reload)
 * changes or removes the record bytes, and the rendition no longer
 * matches.  Per thread (no locks), a fixed table of
 * SVC_RENDITION_SLOTS slots indexed by (kind, id), each reusing its
 * buffer: bounded memory (renditions over 4 KiB are not kept). */
#define SVC_RENDITION_SLOTS 1024
enum { SVC_REND_ITEM_JSON = 1, SVC_REND_ITEM_PB };
/* The rendition of (kind, id) made from exactly rec, or false.  *out is
 * valid until this thread's next svc_rendition_put. */
bool svc_rendition_get(int kind, int64_t id, bz_str rec, bz_str *out);
void svc_rendition_put(int kind, int64_t id, bz_str rec, const void *p, size_t n);
int svc_items_list(svc *s, svc_call *c, const svc_items_query *q, svc_item_page *out, svc_err *e);
int svc_item_create(svc *s, svc_call *c, const svc_item_in *in, svc_item *out, svc_err *e);
/* full: PUT (every field required); else PATCH.  Seller only. */
int svc_item_update(svc *s, svc_call *c, int64_t id, const svc_item_in *in, bool full, svc_item *out, svc_err *e);
int svc_item_delete(svc *s, svc_call *c, int64_t id, svc_err *e);
/* Creates n items sold by the caller, one transaction per call; each bad
 * item (invalid, sku taken) is rejected alone and counted in *res, which
 * accumulates across calls (zero it before the first batch). */
int svc_items_import(svc *s, svc_call *c, const svc_item_in *items, int n, svc_import_result *res, svc_err *e);

/* ---- orders (API.md §6, §7) ------------------------------------------------------------------ */

#define SVC_MAX_LINES 50

typedef struct svc_line_in {
    svc_int item_id, quantity;
} svc_line_in;

typedef struct svc_order_in {
    svc_int account_id;
    uint8_t lines_st;       /* state of the lines array itself */
    int nlines;             /* ≤ SVC_MAX_LINES kept; more is a violation */
    int nlines_sent;        /* how many the client sent */
    svc_line_in lines[SVC_MAX_LINES];
} svc_order_in;

/* Needs an Idempotency-Key. */
int svc_order_create(svc *s, svc_call *c, const svc_order_in *in, svc_order *out, svc_err *e);
int svc_order_get(svc *s, svc_call *c, int64_t id, svc_order *out, svc_err *e);
/* The caller's orders (user_id must be the caller), newest first,
 * optionally by status; pages are cached: *hit says so. */
int svc_orders_list(svc *s, svc_call *c, int64_t user_id, svc_str status, const svc_page_in *pg,
                    svc_order_page *out, bool *hit, svc_err *e);
int svc_order_pay(svc *s, svc_call *c, int64_t id, svc_order *out, svc_err *e);
int svc_order_cancel(svc *s, svc_call *c, int64_t id, svc_order *out, svc_err *e);

/* Order events of the caller (user_id must be the caller) from now on.
 * At most --sse-max-per-user watches per user (SSE and WatchOrders
 * together) across every instance sharing the cache: more is
 * SVC_RATE_LIMITED "too_many_streams".  A watch holds a lease in the cache
 * that svc_watch_next renews (call it at least every second or two); the
 * lease of a watch whose instance died frees itself within
 * SVC_STREAM_LEASE_NS (10 s). */
typedef struct svc_watch svc_watch;
int svc_orders_watch(svc *s, svc_call *c, int64_t user_id, svc_watch **out, svc_err *e);
/* Parks for the next event: 0 with *ev filled, or -ETIMEDOUT/-ECANCELED
 * when ctx ends, -EPIPE when the subscription ended. */
int svc_watch_next(svc_watch *w, rt_ctx *ctx, svc_order_event *ev);
void svc_watch_close(svc_watch *w);
/* The watch loop, once for every transport: subscribes as
 * svc_orders_watch does (its refusals are returned before sink->ready
 * runs), then hands each event to sink->event as it comes and calls
 * sink->idle on each quiet lease tick (about a second: the lease is
 * renewed between).  A callback returning non-zero ends the stream: 0 is
 * returned.  Otherwise -1 with e: SVC_TIMEOUT / SVC_CANCELLED when the
 * caller's context ends, SVC_UNAVAILABLE "shutting_down" when the process
 * stops, SVC_UNAVAILABLE "stream_ended" when the subscription ended. */
typedef struct svc_watch_sink {
    int (*ready)(void *arg);                                  /* subscribed (may be NULL) */
    int (*event)(void *arg, const svc_order_event *ev);
    int (*idle)(void *arg);                                   /* may be NULL */
    void *arg;
} svc_watch_sink;
int svc_orders_stream(svc *s, svc_call *c, int64_t user_id, const svc_watch_sink *sink, svc_err *e);
/* How many watches uid has open (live leases, every instance). */
int svc_streams_open(svc *s, int64_t uid);

/* Top spenders in a currency (default USD, limit default 10, 1..100). */
int svc_leaderboard(svc *s, svc_call *c, svc_str currency, svc_int limit, svc_spender **out, int *n, svc_err *e);

#endif

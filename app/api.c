/* app/api.c — request helpers shared by every handler; see app-private.h. */
#include "app/app-private.h"

#include "base/clock.h"
#include "base/log.h"

#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- results ---- */

void res_init(api_result *res)
{
    res->status = 0;
    res->body = BZ_BUF_INIT;
    res->location[0] = '\0';
}

void res_free(api_result *res) { bz_buf_free(&res->body); }

void res_reset(api_result *res)
{
    res->status = 0;
    bz_buf_clear(&res->body);
    res->location[0] = '\0';
}

void res_problem(api_result *res, int status, const char *code, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    res->status = status;
    res->location[0] = '\0';
    bz_buf_clear(&res->body);
    bz_buf_append_c(&res->body, "{\"type\":\"about:blank\"");
    jw_str(&res->body, "title", http_status_text(status));
    jw_i64(&res->body, "status", status);
    jw_str(&res->body, "detail", detail);
    jw_str(&res->body, "code", code);
    bz_buf_putc(&res->body, '}');
}

int res_send(http_req *r, const api_result *res)
{
    if (res->location[0])
        http_add_header(r, "Location", res->location);
    if (res->status == 503)
        http_add_header(r, "Retry-After", "1");
    return http_send(r, res->status,
                     res->status >= 400 ? "application/problem+json" : "application/json; charset=utf-8",
                     res->body.data, res->body.len);
}

void res_from_error(api_result *res, const bz_error *e)
{
    switch (e->kind) {
    case BZ_ERR_SERIALIZATION:
    case BZ_ERR_DEADLOCK:
        res_problem(res, 503, "contention", "the request conflicted with others too many times; retry it");
        break;
    case BZ_ERR_TIMEOUT:
        res_problem(res, 503, "timeout", "the request ran out of time");
        break;
    case BZ_ERR_CANCELLED:
        res_problem(res, 503, "cancelled", "the request was cancelled");
        break;
    case BZ_ERR_CONNECTION:
    case BZ_ERR_UNAVAILABLE:
        res_problem(res, 503, "unavailable", "a backing service is unavailable; retry later");
        break;
    default:
        bz_log_err("request failed", BZ_F_STR("kind", bz_err_kind_name(e->kind)), BZ_F_STR("error", e->msg));
        res_problem(res, 500, "internal", "internal error");
    }
}

int api_send_error(http_req *r, const bz_error *e)
{
    api_result res;
    res_init(&res);
    res_from_error(&res, e);
    res_send(r, &res);
    res_free(&res);
    return 0;
}

/* ---- request helpers ---- */

static bool is_json_type(bz_str ct)
{
    ptrdiff_t sc = bz_str_index(ct, ';');
    bz_str media = bz_str_trim(sc >= 0 ? bz_str_make(ct.p, (size_t)sc) : ct);
    return bz_str_ieq_c(media, "application/json");
}

json_t *api_body(http_req *r)
{
    if (!is_json_type(http_header_get(r, "Content-Type"))) {
        http_send_problem(r, 415, "unsupported_media_type", "the body must be application/json");
        return NULL;
    }
    const char *data;
    size_t len;
    int rc = http_read_body(r, &data, &len);
    if (rc == -EMSGSIZE) {
        r->close_after = true;
        http_send_problem(r, 413, "body_too_large", "the request body is larger than the server accepts");
        return NULL;
    }
    if (rc < 0) {
        r->close_after = true;
        http_send_problem(r, 400, "bad_request", "the request body could not be read");
        return NULL;
    }
    char why[200];
    json_t *j = json_parse_object(data, len, why, sizeof why);
    if (!j)
        http_send_problem(r, 400, "invalid_json", why);
    return j;
}

int api_invalid(http_req *r, jv *v)
{
    bz_buf m = BZ_BUF_INIT;
    bz_buf_append_c(&m, "\"errors\":[");
    bz_buf_append(&m, v->errs.data, v->errs.len);
    bz_buf_putc(&m, ']');
    http_send_problem_ext(r, 400, "validation_failed", "the request has invalid fields", m.data);
    bz_buf_free(&m);
    jv_free(v);
    return 0;
}

bool api_path_id(http_req *r, const char *name, int64_t *id)
{
    const char *s = http_path_value(r, name);
    if (s && bz_str_to_i64(bz_str_c(s), id) && *id > 0)
        return true;
    http_send_problem(r, 404, "not_found", "no such resource");
    return false;
}

void api_token_hash(const char *token, size_t n, char out[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)token, n);
    sodium_bin2hex(out, 65, h, sizeof h);
}

void api_try_auth(app *a, http_req *r, int64_t *uid)
{
    *uid = 0;
    bz_str h = http_header_get(r, "Authorization");
    if (h.n < 8 || !bz_str_ieq(bz_str_make(h.p, 7), BZ_STR_LIT("Bearer ")))
        return;
    bz_str tok = bz_str_trim(bz_str_make(h.p + 7, h.n - 7));
    if (tok.n == 0 || tok.n > 128)
        return;
    char hash[65];
    api_token_hash(tok.p, tok.n, hash);
    bz_error e;
    int64_t id = 0;
    int rc = cache_session_get(a->cache, r->ctx, hash, &id, &e);
    if (rc == 0 && id > 0)
        *uid = id;
    else if (rc < 0)
        *uid = -1; /* the session store failed: unknown, not "no session" */
}

int api_auth(app *a, http_req *r, int64_t *uid)
{
    api_try_auth(a, r, uid);
    if (*uid > 0)
        return 0;
    if (*uid < 0) {
        /* A cache outage must not log everybody out: 503, retry. */
        http_add_header(r, "Retry-After", "1");
        http_send_problem(r, 503, "unavailable", "the session store is unavailable; retry");
        return -1;
    }
    http_add_header(r, "WWW-Authenticate", "Bearer");
    http_send_problem(r, 401, "unauthorized", "a valid bearer token is required");
    return -1;
}

bool api_limit(http_req *r, int *limit)
{
    const char *s = http_query_get(r, "limit");
    int64_t v = 20;
    if (s && (!bz_str_to_i64(bz_str_c(s), &v) || v < 1 || v > 100)) {
        http_send_problem_ext(r, 400, "validation_failed", "limit must be an integer from 1 to 100",
                              "\"errors\":[{\"field\":\"limit\",\"message\":\"must be between 1 and 100\"}]");
        return false;
    }
    *limit = (int)v;
    return true;
}

void api_rate_headers(http_req *r, const cache_rate *rt)
{
    char v[24];
    v[bz_fmt_i64(v, rt->limit)] = '\0';
    http_add_header(r, "RateLimit-Limit", v);
    v[bz_fmt_i64(v, rt->remaining)] = '\0';
    http_add_header(r, "RateLimit-Remaining", v);
    int64_t reset = (rt->reset_ns + BZ_NS_PER_S - 1) / BZ_NS_PER_S;
    v[bz_fmt_i64(v, reset > 0 ? reset : 1)] = '\0';
    http_add_header(r, "RateLimit-Reset", v);
    if (!rt->allowed)
        http_add_header(r, "Retry-After", v);
}

void api_peer_ip(const http_req *r, char out[64])
{
    snprintf(out, 64, "%s", r->peer);
    char *c = strrchr(out, ':');
    if (c)
        *c = '\0';
}

void api_page_end(app *a, bz_buf *b, bool more, const api_cursor *last, const char *scope)
{
    bz_buf_putc(b, ']');
    if (more) {
        char c[64];
        api_cursor_encode(a, last, scope, c);
        jw_str(b, "next_cursor", c);
    } else {
        jw_null(b, "next_cursor");
    }
    bz_buf_putc(b, '}');
}

/* ---- cursors ---- */

#define CURSOR_MAC 16

static void cursor_mac(app *a, const uint8_t pos[16], const char *scope, uint8_t mac[CURSOR_MAC])
{
    crypto_auth_hmacsha256_state st;
    uint8_t full[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&st, a->cursor_key, sizeof a->cursor_key);
    crypto_auth_hmacsha256_update(&st, pos, 16);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)scope, strlen(scope));
    crypto_auth_hmacsha256_final(&st, full);
    memcpy(mac, full, CURSOR_MAC);
}

static void put64(uint8_t *p, int64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
}

static int64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return (int64_t)v;
}

void api_cursor_encode(app *a, const api_cursor *c, const char *scope, char out[64])
{
    uint8_t raw[16 + CURSOR_MAC];
    put64(raw, c->t_us);
    put64(raw + 8, c->id);
    cursor_mac(a, raw, scope, raw + 16);
    sodium_bin2base64(out, 64, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int api_cursor_param(app *a, http_req *r, const char *scope, api_cursor *c)
{
    const char *s = http_query_get(r, "cursor");
    if (!s)
        return 0;
    uint8_t raw[16 + CURSOR_MAC + 4];
    size_t n = 0;
    uint8_t mac[CURSOR_MAC];
    if (strlen(s) < 64 &&
        sodium_base642bin(raw, sizeof raw, s, strlen(s), NULL, &n, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0 &&
        n == 16 + CURSOR_MAC) {
        cursor_mac(a, raw, scope, mac);
        if (sodium_memcmp(mac, raw + 16, CURSOR_MAC) == 0) {
            c->t_us = get64(raw);
            c->id = get64(raw + 8);
            return 1;
        }
    }
    http_send_problem(r, 400, "invalid_cursor", "the cursor is malformed or belongs to another list");
    return -1;
}

/* ---- idempotency ---- */

static bool key_ok(bz_str k)
{
    if (k.n < 1 || k.n > 255)
        return false;
    for (size_t i = 0; i < k.n; i++)
        if ((unsigned char)k.p[i] < 0x21 || (unsigned char)k.p[i] > 0x7e)
            return false;
    return true;
}

/* Answers from a stored record if there is one: 1 answered, 0 none, -1 error. */
static int idem_lookup(app *a, http_req *r, const api_idem *im)
{
    db_rows *rows = NULL;
    bz_error e;
    db_arg args[] = {DB_INT(im->user_id), DB_TEXT(im->key)};
    int rc = db_query_row(DB(a->db), r->ctx,
                          "SELECT fingerprint, status, body, location FROM idempotency_keys WHERE user_id = $1 AND key = $2",
                          args, 2, &rows, &e);
    if (rc == DB_NO_ROWS)
        return 0;
    if (rc < 0) {
        api_send_error(r, &e);
        return -1;
    }
    size_t n;
    const char *fp = db_col_text(rows, 0, &n);
    if (n != 64 || memcmp(fp, im->fp, 64) != 0) {
        db_rows_close(rows);
        http_send_problem(r, 422, "idempotency_key_reused",
                          "this Idempotency-Key was used with a different request");
        return 1;
    }
    api_result res;
    res_init(&res);
    res.status = (int)db_col_int(rows, 1);
    const char *body = db_col_text(rows, 2, &n);
    bz_buf_append(&res.body, body, n);
    if (!db_col_is_null(rows, 3))
        snprintf(res.location, sizeof res.location, "%s", db_col_text(rows, 3, NULL));
    db_rows_close(rows);
    http_add_header(r, "Idempotent-Replayed", "true");
    res_send(r, &res);
    res_free(&res);
    return 1;
}

static int idem_start(app *a, http_req *r, int64_t uid, bool required, api_idem *im);

int api_idem_begin(app *a, http_req *r, int64_t uid, bool required, api_idem *im)
{
    int rc = idem_start(a, r, uid, required, im);
    if (rc)
        api_idem_end(a, r, im);
    return rc;
}

static int idem_start(app *a, http_req *r, int64_t uid, bool required, api_idem *im)
{
    memset(im, 0, sizeof *im);
    bz_str k = http_header_get(r, "Idempotency-Key");
    if (!k.p) {
        if (!required)
            return 0;
        http_send_problem(r, 400, "idempotency_key_required", "this request needs an Idempotency-Key header");
        return 1;
    }
    if (!key_ok(k)) {
        http_send_problem(r, 400, "invalid_idempotency_key",
                          "Idempotency-Key must be 1 to 255 visible ASCII characters");
        return 1;
    }
    /* The body is part of the fingerprint (read once; later reads get the
     * same bytes). */
    const char *body = "";
    size_t len = 0;
    if ((r->content_length > 0 || r->chunked) && http_read_body(r, &body, &len) != 0) {
        r->close_after = true;
        http_send_problem(r, 413, "body_too_large", "the request body could not be read whole");
        return 1;
    }
    im->active = true;
    im->user_id = uid;
    memcpy(im->key, k.p, k.n);
    im->key[k.n] = '\0';
    /* The fingerprint covers what makes two requests "the same". */
    crypto_hash_sha256_state st;
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const unsigned char *)r->method.p, r->method.n);
    crypto_hash_sha256_update(&st, (const unsigned char *)"\n", 1);
    crypto_hash_sha256_update(&st, (const unsigned char *)r->path.p, r->path.n);
    crypto_hash_sha256_update(&st, (const unsigned char *)"\n", 1);
    crypto_hash_sha256_update(&st, (const unsigned char *)body, len);
    crypto_hash_sha256_final(&st, h);
    sodium_bin2hex(im->fp, sizeof im->fp, h, sizeof h);

    /* In flight elsewhere?  The lock outlives the request deadline so it
     * cannot expire under a running request. */
    snprintf(im->lock_name, sizeof im->lock_name, "idem:%lld:%s", (long long)uid, im->key);
    bz_error e;
    int rc = cache_lock(a->cache, r->ctx, im->lock_name, a->cfg->request_timeout_ns + 5 * BZ_NS_PER_S, false,
                    im->lock_token, &e);
    if (rc == CACHE_MISS) {
        http_send_problem(r, 409, "idempotency_key_in_use",
                          "a request with this Idempotency-Key is still being processed");
        return 1;
    }
    if (rc < 0) {
        api_send_error(r, &e);
        return 1;
    }
    im->locked = true;
    /* A committed record is not looked up here: the request's transaction
     * inserts the record last, and if the key was used before, that
     * insert fails on the primary key, the whole transaction (effect
     * included) rolls back, and api_tx answers from the stored record —
     * the replay, or 422 for a different request.  The common case (a new
     * key) saves a query. */
    return 0;
}

int api_idem_save(app *a, db_tx *tx, rt_ctx *ctx, const api_idem *im, const api_result *res, bz_error *err)
{
    (void)a;
    if (!im->active)
        return 0;
    db_arg args[] = {DB_INT(im->user_id),
                     DB_TEXT(im->key),
                     DB_TEXTN(im->fp, 64),
                     DB_INT(res->status),
                     DB_TEXTN(res->body.data ? res->body.data : "", res->body.len),
                     res->location[0] ? DB_TEXT(res->location) : DB_NULL,
                     DB_TIME(bz_wall_us())};
    return db_exec(TX(tx), ctx,
                   "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body, location, created_at) "
                   "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                   args, 7, NULL, err);
}

int api_idem_replay(app *a, http_req *r, const api_idem *im)
{
    if (!im->active)
        return 0;
    return idem_lookup(a, r, im) == 1 ? 1 : 0;
}

void api_idem_end(app *a, http_req *r, api_idem *im)
{
    if (!im->locked)
        return;
    bz_error e;
    bool released;
    /* Release even if the request was cancelled: a short detached context. */
    rt_ctx ctx;
    rt_ctx_init_timeout(&ctx, NULL, 2 * BZ_NS_PER_S);
    cache_unlock(a->cache, &ctx, im->lock_name, im->lock_token, &released, &e);
    rt_ctx_release(&ctx);
    im->locked = false;
    (void)r;
}

/* ---- transactions ---- */

bool api_tx(app *a, http_req *r, api_idem *im, db_tx_fn fn, void *arg, api_result *res, const char *uniq_code,
            const char *uniq_detail)
{
    bz_error e;
    db_tx_opts o = {.isolation = DB_SERIALIZABLE};
    int rc = db_run_tx(a->db, r->ctx, &o, fn, arg, &e);
    if (rc == 0) {
        res_send(r, res);
    } else if (e.kind == BZ_ERR_UNIQUE && api_idem_replay(a, r, im)) {
        /* Another instance committed this key first: its answer stands. */
    } else if (e.kind == BZ_ERR_UNIQUE && uniq_code) {
        http_send_problem(r, 409, uniq_code, uniq_detail);
    } else {
        api_send_error(r, &e);
    }
    api_idem_end(a, r, im);
    return rc == 0;
}

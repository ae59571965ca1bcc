/* app/users.c — users and sessions (API.md §3). */
#include "app/app-private.h"

#include "base/clock.h"
#include "base/log.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#define SESSION_TTL_NS (24 * 3600 * BZ_NS_PER_S)

static void user_json(bz_buf *b, db_rows *rows, bool with_email)
{
    /* columns: id, email, name, created_at */
    size_t n;
    bz_buf_putc(b, '{');
    jw_i64(b, "id", db_col_int(rows, 0));
    if (with_email) {
        const char *e = db_col_text(rows, 1, &n);
        jw_strn(b, "email", e, n);
    }
    const char *name = db_col_text(rows, 2, &n);
    jw_strn(b, "name", name, n);
    jw_time(b, "created_at", db_col_time(rows, 3));
    bz_buf_putc(b, '}');
}

/* One '@', non-empty local part and domain, ≤ 254 bytes, no spaces or
 * controls.  Lower-cases into out. */
static bool email_norm(const char *s, size_t n, char out[256])
{
    if (n < 3 || n > 254)
        return false;
    const char *at = memchr(s, '@', n);
    if (!at || at == s || at == s + n - 1 || memchr(at + 1, '@', (size_t)(s + n - at - 1)))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f)
            return false;
        out[i] = (char)tolower(c);
    }
    out[n] = '\0';
    return true;
}

static int send_user(http_req *r, app *a, int status, int64_t id, bool with_email, bool location)
{
    db_rows *rows = NULL;
    bz_error e;
    db_arg args[] = {DB_INT(id)};
    int rc = db_query_row(DB(a->db), r->ctx, "SELECT id, email, name, created_at FROM users WHERE id = $1", args, 1,
                          &rows, &e);
    if (rc == DB_NO_ROWS)
        return http_send_problem(r, 404, "not_found", "no such user");
    if (rc < 0)
        return api_send_error(r, &e);
    bz_buf b = BZ_BUF_INIT;
    user_json(&b, rows, with_email);
    db_rows_close(rows);
    if (location) {
        char loc[64];
        snprintf(loc, sizeof loc, "/v1/users/%lld", (long long)id);
        http_add_header(r, "Location", loc);
    }
    http_send(r, status, "application/json; charset=utf-8", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

int users_create(app *a, http_req *r)
{
    json_t *j = api_body(r);
    if (!j)
        return 0;
    jv v;
    jv_init(&v);
    const char *email = NULL, *name = NULL, *pw = NULL;
    size_t elen = 0, nlen = 0, plen = 0;
    char norm[256];
    if (jv_str(&v, j, "email", true, 0, 1 << 20, false, &email, &elen) && !email_norm(email, elen, norm))
        jv_fail(&v, "email", "must be an address with one @, a local part and a domain, at most 254 bytes");
    jv_str(&v, j, "name", true, 1, 100, true, &name, &nlen);
    jv_str(&v, j, "password", true, 8, 128, false, &pw, &plen);
    if (v.n) {
        json_decref(j);
        return api_invalid(r, &v);
    }
    jv_free(&v);
    char hash[160];
    if (pw_hash(r->ctx, pw, plen, hash) != 0) {
        json_decref(j);
        return http_send_problem(r, 503, "unavailable", "could not hash the password; retry");
    }
    int64_t now = bz_wall_us();
    db_arg args[] = {DB_TEXT(norm), DB_TEXTN(name, nlen), DB_TEXT(hash), DB_TIME(now)};
    db_rows *rows = NULL;
    bz_error e;
    int rc = db_query_row(DB(a->db), r->ctx,
                          "INSERT INTO users (email, name, password_hash, created_at) VALUES ($1, $2, $3, $4) "
                          "RETURNING id",
                          args, 4, &rows, &e);
    sodium_memzero(hash, sizeof hash);
    json_decref(j);
    if (rc < 0 && e.kind == BZ_ERR_UNIQUE)
        return http_send_problem(r, 409, "email_taken", "a user with this email already exists");
    if (rc != 0)
        return api_send_error(r, &e);
    int64_t id = db_col_int(rows, 0);
    db_rows_close(rows);
    return send_user(r, a, 201, id, true, true);
}

int users_get(app *a, http_req *r)
{
    int64_t id;
    if (!api_path_id(r, "id", &id))
        return 0;
    return send_user(r, a, 200, id, false, false);
}

int users_find(app *a, http_req *r)
{
    const char *email = http_query_get(r, "email");
    if (!email)
        return http_send_problem_ext(r, 400, "validation_failed", "the email query parameter is required",
                                     "\"errors\":[{\"field\":\"email\",\"message\":\"is required\"}]");
    bz_buf b = BZ_BUF_INIT;
    bz_buf_append_c(&b, "{\"data\":[");
    char norm[256];
    if (email_norm(email, strlen(email), norm)) {
        db_rows *rows = NULL;
        bz_error e;
        db_arg args[] = {DB_TEXT(norm)};
        int rc = db_query_row(DB(a->db), r->ctx, "SELECT id, email, name, created_at FROM users WHERE email = $1",
                              args, 1, &rows, &e);
        if (rc < 0) {
            bz_buf_free(&b);
            return api_send_error(r, &e);
        }
        if (rc == 0) {
            user_json(&b, rows, false);
            db_rows_close(rows);
        }
    }
    bz_buf_append_c(&b, "]}");
    http_send(r, 200, "application/json; charset=utf-8", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

int users_me(app *a, http_req *r)
{
    int64_t uid;
    if (api_auth(a, r, &uid))
        return 0;
    return send_user(r, a, 200, uid, true, false);
}

int users_patch(app *a, http_req *r)
{
    int64_t uid, id;
    if (api_auth(a, r, &uid) || !api_path_id(r, "id", &id))
        return 0;
    if (id != uid)
        return http_send_problem(r, 404, "not_found", "no such user");
    json_t *j = api_body(r);
    if (!j)
        return 0;
    jv v;
    jv_init(&v);
    const char *name = NULL, *pw = NULL;
    size_t nlen = 0, plen = 0;
    bool has_name = jv_str(&v, j, "name", false, 1, 100, true, &name, &nlen);
    bool has_pw = jv_str(&v, j, "password", false, 8, 128, false, &pw, &plen);
    if (v.n) {
        json_decref(j);
        return api_invalid(r, &v);
    }
    jv_free(&v);
    bz_error e;
    int rc = 0;
    if (has_name) {
        db_arg args[] = {DB_TEXTN(name, nlen), DB_INT(id)};
        rc = db_exec(DB(a->db), r->ctx, "UPDATE users SET name = $1 WHERE id = $2", args, 2, NULL, &e);
    }
    if (rc == 0 && has_pw) {
        char hash[160];
        if (pw_hash(r->ctx, pw, plen, hash) != 0) {
            json_decref(j);
            return http_send_problem(r, 503, "unavailable", "could not hash the password; retry");
        }
        db_arg args[] = {DB_TEXT(hash), DB_INT(id)};
        rc = db_exec(DB(a->db), r->ctx, "UPDATE users SET password_hash = $1 WHERE id = $2", args, 2, NULL, &e);
        sodium_memzero(hash, sizeof hash);
    }
    json_decref(j);
    if (rc != 0)
        return api_send_error(r, &e);
    return send_user(r, a, 200, id, true, false);
}

int sessions_create(app *a, http_req *r)
{
    json_t *j = api_body(r);
    if (!j)
        return 0;
    jv v;
    jv_init(&v);
    const char *email = NULL, *pw = NULL;
    size_t elen = 0, plen = 0;
    jv_str(&v, j, "email", true, 0, 1024, false, &email, &elen);
    jv_str(&v, j, "password", true, 0, 1024, false, &pw, &plen);
    if (v.n) {
        json_decref(j);
        return api_invalid(r, &v);
    }
    jv_free(&v);
    char norm[256];
    bool well_formed = email_norm(email, elen, norm);
    if (!well_formed)
        snprintf(norm, sizeof norm, "%.200s", "-");

    /* Login attempts per email per client address, shared by instances. */
    if (a->cfg->login_rate_limit.count > 0) {
        char ip[64], key[400];
        api_peer_ip(r, ip);
        snprintf(key, sizeof key, "login:%s:%s", norm, ip);
        cache_rate rt;
        bz_error e;
        if (cache_rate_allow(a->cache, r->ctx, key, a->cfg->login_rate_limit.count,
                             a->cfg->login_rate_limit.window_ns, &rt, &e) == 0) {
            api_rate_headers(r, &rt);
            if (!rt.allowed) {
                json_decref(j);
                metrics_count_rate_limited();
                return http_send_problem(r, 429, "rate_limited", "too many login attempts; retry later");
            }
        }
    }

    int64_t uid = 0;
    char hash[160];
    snprintf(hash, sizeof hash, "%s", a->dummy_hash);
    if (well_formed) {
        db_rows *rows = NULL;
        bz_error e;
        db_arg args[] = {DB_TEXT(norm)};
        int rc = db_query_row(DB(a->db), r->ctx, "SELECT id, password_hash FROM users WHERE email = $1", args, 1,
                              &rows, &e);
        if (rc < 0) {
            json_decref(j);
            return api_send_error(r, &e);
        }
        if (rc == 0) {
            uid = db_col_int(rows, 0);
            snprintf(hash, sizeof hash, "%s", db_col_text(rows, 1, NULL));
            db_rows_close(rows);
        }
    }
    /* Unknown emails verify against a dummy hash: same answer, similar time. */
    bool ok = pw_verify(r->ctx, hash, pw, plen) && uid > 0;
    json_decref(j);
    if (!ok)
        return http_send_problem(r, 401, "invalid_credentials", "wrong email or password");

    uint8_t raw[32];
    randombytes_buf(raw, sizeof raw);
    char token[64], th[65];
    sodium_bin2base64(token, sizeof token, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    api_token_hash(token, strlen(token), th);
    bz_error e;
    if (cache_session_put(a->cache, r->ctx, th, uid, SESSION_TTL_NS, &e) != 0)
        return api_send_error(r, &e);
    bz_buf b = BZ_BUF_INIT;
    bz_buf_putc(&b, '{');
    jw_str(&b, "token", token);
    jw_time(&b, "expires_at", bz_wall_us() + SESSION_TTL_NS / 1000);
    bz_buf_putc(&b, '}');
    http_add_header(r, "Location", "/v1/sessions/current");
    http_add_header(r, "Cache-Control", "no-store");
    http_send(r, 201, "application/json; charset=utf-8", b.data, b.len);
    sodium_memzero(token, sizeof token);
    bz_buf_free(&b);
    return 0;
}

int sessions_delete(app *a, http_req *r)
{
    int64_t uid;
    if (api_auth(a, r, &uid))
        return 0;
    bz_str h = http_header_get(r, "Authorization");
    bz_str tok = bz_str_trim(bz_str_make(h.p + 7, h.n - 7));
    char th[65];
    api_token_hash(tok.p, tok.n, th);
    bz_error e;
    if (cache_session_del(a->cache, r->ctx, th, &e) != 0)
        return api_send_error(r, &e);
    return http_send(r, 204, NULL, NULL, 0);
}

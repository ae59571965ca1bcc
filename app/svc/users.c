/* app/svc/users.c — users and sessions (API.md §3). */
#include "app/svc/svc-private.h"

#include <bazaar/clock.h>

#include <stdio.h>
#include <string.h>

#define SESSION_TTL_NS (24 * 3600 * BZ_NS_PER_S)

/* stale_ok: the read may go to the replica (read-your-writes still holds). */
static int load_user(svc *s, svc_call *c, int64_t id, bool with_email, bool stale_ok, svc_user *out, svc_err *e)
{
    db_rows *rows = NULL;
    bz_error be;
    db_arg args[] = {DB_INT(id)};
    /* a hidden email is not read at all */
    const svc_sql *q = with_email ? &SQL_USER_BY_ID : &SQL_USER_PUBLIC_BY_ID;
    int rc = stale_ok ? svc_read_row(s, c, q, args, 1, &rows, &be)
                      : sql_row(c->arena, DB(s->db), c->ctx, q, args, 1, &rows, &be);
    if (rc == DB_NO_ROWS)
        return svc_fail(e, SVC_NOT_FOUND, "not_found", "user %lld does not exist", (long long)id);
    if (rc < 0)
        return svc_fail_from(e, &be);
    svc__row_user(rows, c->arena, out, with_email);
    return 0;
}

int svc_user_create(svc *s, svc_call *c, const svc_user_in *in, svc_user *out, svc_err *e)
{
    svc_check_str(e, L_USER_EMAIL, &in->email, NULL);
    svc_check_str(e, L_USER_NAME, &in->name, NULL);
    svc_check_str(e, L_USER_PASSWORD, &in->password, NULL);
    if (e->kind)
        return -1;
    char norm[256];
    svc_email_norm(in->email.p, in->email.n, norm);
    char hash[160];
    if (svc__pw_hash(s, c->ctx, in->password.p, in->password.n, hash, e) != 0)
        return -1;
    db_arg args[] = {DB_TEXT(norm), DB_TEXTN(in->name.p, in->name.n), DB_TEXT(hash), DB_TIME(bz_wall_us())};
    db_rows *rows = NULL;
    bz_error be;
    int rc = sql_row(c->arena, DB(s->db), c->ctx, &SQL_USER_INSERT, args, 4, &rows, &be);
    sodium_memzero(hash, sizeof hash);
    if (rc < 0 && be.kind == BZ_ERR_UNIQUE)
        return svc_fail(e, SVC_ALREADY_EXISTS, "email_taken", "a user with this email already exists");
    if (rc != 0)
        return rc < 0 ? svc_fail_from(e, &be) : svc_fail(e, SVC_INTERNAL, "internal", "no user row returned");
    svc__row_user(rows, c->arena, out, true);
    return 0;
}

int svc_user_get(svc *s, svc_call *c, int64_t id, svc_user *out, svc_err *e)
{
    if (id <= 0)
        return svc_fail(e, SVC_NOT_FOUND, "not_found", "user %lld does not exist", (long long)id);
    return load_user(s, c, id, c->who && c->who->user_id == id, true, out, e);
}

int svc_user_profile(svc *s, svc_call *c, int64_t id, svc_user *out, svc_err *e)
{
    if (id <= 0)
        return svc_fail(e, SVC_NOT_FOUND, "not_found", "user %lld does not exist", (long long)id);
    return load_user(s, c, id, false, true, out, e);
}

int svc_user_find(svc *s, svc_call *c, svc_str email, svc_user *out, bool *found, svc_err *e)
{
    *found = false;
    if (!svc_check_str(e, L_USERS_EMAIL, &email, NULL))
        return -1;
    char norm[256];
    if (email.n > 254 || !svc_email_norm(email.p, email.n, norm))
        return 0; /* no user can have it */
    db_rows *rows = NULL;
    bz_error be;
    db_arg args[] = {DB_TEXT(norm)};
    int rc = svc_read_row(s, c, &SQL_USER_BY_EMAIL, args, 1, &rows, &be);
    if (rc < 0)
        return svc_fail_from(e, &be);
    if (rc == 0) {
        svc__row_user(rows, c->arena, out, false);
        *found = true;
    }
    return 0;
}

int svc_user_me(svc *s, svc_call *c, svc_user *out, svc_err *e)
{
    if (svc__need_user(c, e))
        return -1;
    return load_user(s, c, c->who->user_id, true, true, out, e);
}

int svc_user_patch_op(svc *s, svc_call *c, int64_t id, const svc_user_patch *in, svc_user *out, svc_err *e)
{
    if (svc__need_user(c, e))
        return -1;
    if (id != c->who->user_id)
        return svc_fail(e, SVC_NOT_FOUND, "not_found", "user %lld does not exist", (long long)id);
    bool has_name = svc_check_str(e, L_PATCH_NAME, &in->name, NULL);
    bool has_pw = svc_check_str(e, L_PATCH_PASSWORD, &in->password, NULL);
    if (e->kind)
        return -1;
    bz_error be;
    if (has_name) {
        db_arg args[] = {DB_TEXTN(in->name.p, in->name.n), DB_INT(id)};
        if (sql_exec(DB(s->db), c->ctx, &SQL_USER_SET_NAME, args, 2, NULL, &be) != 0)
            return svc_fail_from(e, &be);
    }
    if (has_pw) {
        char hash[160];
        if (svc__pw_hash(s, c->ctx, in->password.p, in->password.n, hash, e) != 0)
            return -1;
        db_arg args[] = {DB_TEXT(hash), DB_INT(id)};
        int rc = sql_exec(DB(s->db), c->ctx, &SQL_USER_SET_PASSWORD, args, 2, NULL, &be);
        sodium_memzero(hash, sizeof hash);
        if (rc != 0)
            return svc_fail_from(e, &be);
        /* A new password ends every other session of the user (someone
         * who knew the old one may hold them); the caller's survives.  If
         * the session store fails the change is reported as failed, and a
         * retry (same password) ends them. */
        if (cache_sessions_end_others(s->cache, c->ctx, id, c->who->token_hash, NULL, &be) != 0)
            return svc_fail_from(e, &be);
    }
    svc_wrote(s, c);
    return load_user(s, c, id, true, false, out, e);
}

/* Reads in batches by keyset (one short query each, no transaction held
 * open while the caller streams), handing rows over one at a time. */
#define LIST_BATCH 256

int svc_users_list(svc *s, svc_call *c, int64_t after_id, int64_t limit, svc_user_fn emit, void *arg, svc_err *e)
{
    if (limit < 0) {
        svc_violate(e, "limit", "must not be negative (0 is no limit)");
        return -1;
    }
    int64_t sent = 0, last = after_id < 0 ? 0 : after_id;
    /* A long stream must not grow the call's arena: each batch's rows and
     * the users read from them live in a batch arena, reset per batch. */
    bz_arena batch;
    bz_arena_init(&batch, 4096);
    svc_call bc = *c;
    bc.arena = &batch;
    int rc = 0;
    for (;;) {
        int64_t want = LIST_BATCH;
        if (limit && limit - sent < want)
            want = limit - sent;
        if (want <= 0)
            break;
        bz_arena_reset(&batch);
        db_rows *rows = NULL;
        bz_error be;
        db_arg args[] = {DB_INT(last), DB_INT(want)};
        if (svc_read_query(s, &bc, &SQL_USERS_AFTER, args, 2, &rows, &be) != 0) {
            rc = svc_fail_from(e, &be);
            break;
        }
        int n = 0, stop = 0, cerr = 0;
        while (!stop && db_rows_next(rows)) {
            if ((cerr = rt_ctx_err(c->ctx)) != 0)
                break;
            svc_user u;
            svc__row_user(rows, &batch, &u, false);
            last = u.id;
            n++;
            sent++;
            stop = emit(arg, &u);
        }
        if (cerr) {
            bz_error ce;
            bz_err_set(&ce, bz_err_from_errno(cerr), "the call ended");
            rc = svc_fail_from(e, &ce);
            break;
        }
        if (stop || n < want)
            break;
    }
    bz_arena_free(&batch);
    return rc;
}

int svc_session_create(svc *s, svc_call *c, const svc_login_in *in, svc_session *out, svc_err *e)
{
    svc_check_str(e, L_LOGIN_EMAIL, &in->email, NULL);
    svc_check_str(e, L_LOGIN_PASSWORD, &in->password, NULL);
    if (e->kind)
        return -1;
    char norm[256];
    bool well_formed = in->email.n <= 254 && svc_email_norm(in->email.p, in->email.n, norm);
    if (!well_formed)
        snprintf(norm, sizeof norm, "-");
    /* Login attempts per email per client address, shared by instances. */
    if (s->cfg->login_rate_limit.count > 0) {
        char key[400];
        snprintf(key, sizeof key, "login:%s:%s", norm, c->who ? c->who->addr : "");
        if (svc__rate(s, c->ctx, key, &s->cfg->login_rate_limit, &c->rate, e,
                      "too many login attempts; retry later") != 0)
            return -1;
    }
    int64_t uid = 0;
    char hash[160];
    snprintf(hash, sizeof hash, "%s", svc_dummy_hash);
    if (well_formed) {
        db_rows *rows = NULL;
        bz_error be;
        db_arg args[] = {DB_TEXT(norm)};
        int rc = sql_row(c->arena, DB(s->db), c->ctx, &SQL_USER_LOGIN, args, 1, &rows, &be);
        if (rc < 0)
            return svc_fail_from(e, &be);
        if (rc == 0) {
            uid = db_col_int(rows, 0);
            snprintf(hash, sizeof hash, "%s", db_col_text(rows, 1, NULL));
        }
    }
    /* Unknown emails verify against a dummy hash: same answer, similar time. */
    bool ok = false;
    if (svc__pw_verify(s, c->ctx, hash, in->password.p, in->password.n, &ok, e) != 0)
        return -1;
    if (!ok || uid <= 0)
        return svc_fail(e, SVC_UNAUTHENTICATED, "invalid_credentials", "wrong email or password");
    uint8_t raw[32];
    randombytes_buf(raw, sizeof raw);
    char *token = bz_arena_alloc(c->arena, 64);
    sodium_bin2base64(token, 64, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    uint8_t h[crypto_hash_sha256_BYTES];
    char th[65];
    crypto_hash_sha256(h, (const uint8_t *)token, strlen(token));
    sodium_bin2hex(th, sizeof th, h, sizeof h);
    bz_error be;
    if (cache_session_put(s->cache, c->ctx, th, uid, SESSION_TTL_NS, &be) != 0)
        return svc_fail_from(e, &be);
    out->token = token;
    out->expires_us = bz_wall_us() + SESSION_TTL_NS / 1000;
    return 0;
}

int svc_session_delete(svc *s, svc_call *c, svc_err *e)
{
    if (svc__need_user(c, e))
        return -1;
    bz_error be;
    if (cache_session_end(s->cache, c->ctx, c->who->user_id, c->who->token_hash, &be) != 0)
        return svc_fail_from(e, &be);
    return 0;
}

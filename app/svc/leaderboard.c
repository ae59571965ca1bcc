/* app/svc/leaderboard.c — the spenders leaderboard (API.md §7).
 *
 * The leaderboard is derived data: payments add to it (effects.c), and
 * when the cache lost it (no "built" marker: restart of an in-process
 * cache, FLUSHALL, eviction) it is rebuilt from paid orders, once, under a
 * lock.  A payment committing during the milliseconds of a rebuild may be
 * counted twice or not at all; everything committed before it is exact. */
#include "app/svc/svc-private.h"

#include <stdio.h>
#include <string.h>

static int ensure(svc *s, rt_ctx *ctx, const char *key, const char *currency, bz_error *err)
{
    char marker[40];
    snprintf(marker, sizeof marker, "lb:built:%s", currency);
    bz_buf v = BZ_BUF_INIT;
    int rc = cache_state_get(s->cache, ctx, marker, &v, err);
    bz_buf_free(&v);
    if (rc != CACHE_MISS)
        return rc < 0 ? -1 : 0;
    char lock[48], token[33];
    snprintf(lock, sizeof lock, "lb:rebuild:%s", currency);
    if (cache_lock(s->cache, ctx, lock, 30 * BZ_NS_PER_S, true, token, err) != 0)
        return -1;
    rc = cache_state_get(s->cache, ctx, marker, &v, err);
    bz_buf_free(&v);
    if (rc == CACHE_MISS) {
        rc = cache_state_del(s->cache, ctx, key, err);
        db_rows *rows = NULL;
        db_arg args[] = {DB_TEXT(currency)};
        if (rc == 0)
            rc = sql_query(DB(s->db), ctx, &SQL_SPENDERS, args, 1, &rows, err);
        while (rc == 0 && db_rows_next(rows)) {
            char member[24];
            int64_t score;
            snprintf(member, sizeof member, "%lld", (long long)db_col_int(rows, 0));
            rc = cache_zincr(s->cache, ctx, key, member, db_col_int(rows, 1), &score, err);
        }
        if (rows)
            db_rows_close(rows);
        if (rc == 0)
            rc = cache_state_set(s->cache, ctx, marker, "1", 1, 0, err);
    }
    bool released;
    bz_error e2;
    cache_unlock(s->cache, ctx, lock, token, &released, &e2);
    return rc < 0 ? -1 : 0;
}

int svc_leaderboard(svc *s, svc_call *c, svc_str currency, svc_int limit, svc_spender **out, int *n, svc_err *e)
{
    *out = NULL;
    *n = 0;
    bool have_cur = svc_check_str(e, L_LB_CURRENCY, &currency, NULL);
    bool have_lim = svc_check_int(e, L_LB_LIMIT, &limit, NULL);
    if (e->kind)
        return -1;
    char cur[4] = "USD";
    if (have_cur)
        memcpy(cur, currency.p, 3);
    int lim = have_lim ? (int)limit.v : 10;
    char key[32];
    snprintf(key, sizeof key, "lb:spenders:%s", cur);
    bz_error be;
    if (ensure(s, c->ctx, key, cur, &be) != 0)
        return svc_fail_from(e, &be);
    cache_zentry top[100];
    int cnt = 0;
    if (cache_ztop(s->cache, c->ctx, key, lim, top, &cnt, &be) != 0)
        return svc_fail_from(e, &be);
    *out = bz_arena_calloc(c->arena, (size_t)(cnt ? cnt : 1), sizeof **out);
    for (int i = 0; i < cnt; i++) {
        svc_spender *sp = &(*out)[i];
        sp->rank = i + 1;
        bz_str_to_i64(bz_str_c(top[i].member), &sp->user_id);
        sp->spent_cents = top[i].score;
        db_rows *rows = NULL;
        db_arg args[] = {DB_INT(sp->user_id)};
        int rc = sql_row(DB(s->db), c->ctx, &SQL_USER_BY_ID, args, 1, &rows, &be);
        if (rc < 0)
            return svc_fail_from(e, &be);
        if (rc == 0) {
            svc_user u;
            row_user(rows, c->arena, &u, false);
            sp->name = u.name;
            db_rows_close(rows);
        }
    }
    *n = cnt;
    return 0;
}

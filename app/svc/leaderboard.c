/* app/svc/leaderboard.c — the spenders leaderboard (API.md §7).
 *
 * The leaderboard is derived data: payments add to it (effects.c), and
 * when the cache lost it (no "built" marker: restart of an in-process
 * cache, FLUSHALL, eviction) it is rebuilt from paid orders, once, under a
 * lock.  The marker is a member of the sorted set itself (LB_BUILT, with a
 * score below any real one), so the set and its marker can only vanish
 * together: an evicted leaderboard is rebuilt, never read half-empty.
 * Leaderboards are cache entries (evictable before any session or lock):
 * a client can ask for any currency, so it can multiply them.  A payment committing during the milliseconds of a rebuild may be
 * counted twice or not at all; everything committed before it is exact. */
#include "app/svc/svc-private.h"

#include <stdio.h>
#include <string.h>

#define LB_BUILT "~built"
#define LB_BUILT_SCORE (-(1LL << 52)) /* exact as a Redis double, below any sum of cents */

static int built(svc *s, rt_ctx *ctx, const char *key, bz_error *err)
{
    int64_t sc;
    return cache_zscore(s->cache, ctx, key, LB_BUILT, &sc, err);
}

static int ensure(svc *s, rt_ctx *ctx, const char *key, const char *currency, bz_error *err)
{
    int rc = built(s, ctx, key, err);
    if (rc != CACHE_MISS)
        return rc < 0 ? -1 : 0;
    char lock[48], token[33];
    snprintf(lock, sizeof lock, "lb:rebuild:%s", currency);
    if (cache_lock(s->cache, ctx, lock, 30 * BZ_NS_PER_S, true, token, err) != 0)
        return -1;
    rc = built(s, ctx, key, err);
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
        int64_t score;
        if (rc == 0)
            rc = cache_zincr(s->cache, ctx, key, LB_BUILT, LB_BUILT_SCORE, &score, err);
        if (rc == 0)
            cache_mark_evictable(s->cache, key);
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
    cache_zentry top[101];
    int cnt = 0;
    if (cache_ztop(s->cache, c->ctx, key, lim + 1, top, &cnt, &be) != 0)
        return svc_fail_from(e, &be);
    int k = 0; /* drop the marker */
    for (int i = 0; i < cnt && k < lim; i++)
        if (strcmp(top[i].member, LB_BUILT) != 0)
            top[k++] = top[i];
    cnt = k;
    *out = bz_arena_calloc(c->arena, (size_t)(cnt ? cnt : 1), sizeof **out);
    for (int i = 0; i < cnt; i++) {
        svc_spender *sp = &(*out)[i];
        sp->rank = i + 1;
        bz_str_to_i64(bz_str_c(top[i].member), &sp->user_id);
        sp->spent_cents = top[i].score;
        db_rows *rows = NULL;
        db_arg args[] = {DB_INT(sp->user_id)};
        int rc = svc_read_row(s, c, &SQL_USER_BY_ID, args, 1, &rows, &be);
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

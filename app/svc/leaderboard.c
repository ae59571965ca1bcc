/* app/svc/leaderboard.c — the spenders leaderboard (API.md §7).
 *
 * The leaderboard is derived data: payments add to it after they commit
 * (effects.c), and when the cache lost it (no epoch marker: restart of an
 * in-process cache, FLUSHALL, eviction) a reader rebuilds it from paid
 * orders, once, under a lock.  Exact even while payments commit during a
 * rebuild, on any number of instances:
 *
 * - Every rebuild has an epoch: meta "lb_epoch:<currency>", bumped by the
 *   rebuild in the same transaction that reads its snapshot
 *   (SQL_SPENDERS), and every payment reads the epoch in its own
 *   transaction.  A payment is in rebuild N's snapshot exactly when it
 *   read an epoch < N.  On PostgreSQL (payments run READ COMMITTED) an
 *   advisory lock on the epoch's key makes it so: a payment reads the
 *   epoch holding the lock shared, until its COMMIT; a rebuild holds it
 *   exclusively from before its bump to its COMMIT, so every payment that
 *   read the old epoch has committed, and its snapshot (a READ COMMITTED
 *   statement after the bump) has them all; a payment that comes later
 *   waits for the rebuild to commit and reads the new epoch.  On SQLite
 *   (one writer) both are SERIALIZABLE, which gives the same.
 * - A rebuild never queues for that lock (pg_try_advisory_xact_lock, a
 *   few tries LB_TRY_PAUSE_NS apart): a queued exclusive request would
 *   stop every later payment at its shared lock, holding its order and
 *   account row locks, behind payments still finishing — under a steady
 *   stream of payments and frequent rebuilds, long enough to time
 *   payments out.  A rebuild that does not get the lock publishes
 *   nothing and answers from its own snapshot (exact, as SQL is); the
 *   next reader tries again.  Payments wait at most for a rebuild that
 *   holds the lock: its scan.
 * - The increment carries that epoch, and the cache applies it by epoch
 *   (cache_zincr_epoch, atomic): on a board at its epoch it is added; on a
 *   board at a later epoch it is dropped (the snapshot has it); otherwise
 *   a rebuild for its epoch is under way, and it goes to that rebuild's
 *   staging set, which the rebuild publishes with its snapshot
 *   (cache_zpublish_epoch) — never lost, never counted twice.
 * - A rebuild that dies leaves its staging set to expire; the next one
 *   takes a new epoch whose snapshot has everything before it.  Two
 *   rebuilds (a lock that expired) publish in epoch order; the older one
 *   is refused.
 *
 * The marker is a member of the sorted set itself (scored below any real
 * score), so the set and its marker can only vanish together: an evicted
 * leaderboard is rebuilt, never read half-empty.  Leaderboards are cache
 * entries (evictable before any session or lock): a client can ask for any
 * currency, so it can multiply them. */
#include "app/svc/svc-private.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define LB_LOCK_TTL (30 * BZ_NS_PER_S)
/* A rebuild's tries for the epoch's lock, and the pause between them: a
 * payment holds it shared for about a round trip and its COMMIT. */
#define LB_TRIES 8
#define LB_TRY_PAUSE_NS (2 * BZ_NS_PER_MS)

static void epoch_key(const char *currency, char out[24]) { snprintf(out, 24, "lb_epoch:%.3s", currency); }

db_step svc__lb_epoch_step(db_q q, const char *currency, char key[24], db_arg *arg)
{
    epoch_key(currency, key);
    *arg = DB_TEXT(key);
    return (db_step){.sql = svc_sql_text(q, &SQL_LB_EPOCH), .args = arg, .nargs = 1, .want_rows = true};
}

int64_t svc__lb_epoch_of(db_rows *rows)
{
    int64_t epoch = 0;
    if (db_rows_next(rows))
        bz_str_to_i64(bz_str_c(db_col_text(rows, 0, NULL)), &epoch);
    return epoch;
}

int svc__lb_epoch_read(bz_arena *ar, db_tx *tx, rt_ctx *ctx, const char *currency, int64_t *epoch, bz_error *err)
{
    char k[24];
    epoch_key(currency, k);
    db_rows *rows = NULL;
    db_arg a[] = {DB_TEXT(k)};
    *epoch = 0;
    int rc = sql_row(ar, TX(tx), ctx, &SQL_LB_EPOCH, a, 1, &rows, err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        bz_str_to_i64(bz_str_c(db_col_text(rows, 0, NULL)), epoch);
    return 0;
}

typedef struct {
    bz_arena *a;    /* the request's, which holds the rows */
    const char *currency;
    int64_t epoch;
    bz_buf *rows;   /* (user id, cents) pairs of the snapshot */
    bool locked;    /* the epoch was bumped under its lock: publishable */
} snap_args;

/* PostgreSQL: the epoch's lock, exclusively, without queueing for it
 * (the file's comment says why): 1 held, 0 not had in LB_TRIES tries. */
static int epoch_try_lock(db_tx *tx, rt_ctx *ctx, db_arg *key, bz_error *err)
{
    for (int i = 0; i < LB_TRIES; i++) {
        int r = i > 0 ? rt_sleep(ctx, LB_TRY_PAUSE_NS) : 0;
        if (r != 0)
            return bz_err_set(err, r == -ECANCELED ? BZ_ERR_CANCELLED : BZ_ERR_TIMEOUT,
                              "leaderboard rebuild: %s", r == -ECANCELED ? "cancelled" : "timed out"), -1;
        db_rows *rows = NULL;
        if (sql_query(NULL, TX(tx), ctx, &SQL_LB_EPOCH_TRY_EXCLUSIVE, key, 1, &rows, err) != 0)
            return -1;
        bool got = db_rows_next(rows) && db_col_bool(rows, 0);
        db_rows_close(rows);
        if (got)
            return 1;
    }
    return 0;
}

static int snapshot_tx(db_tx *tx, rt_ctx *ctx, void *p, bz_error *err)
{
    snap_args *x = p;
    bz_buf_clear(x->rows);
    char k[24];
    epoch_key(x->currency, k);
    db_rows *rows = NULL;
    db_arg a[] = {DB_TEXT(k)};
    x->locked = true;
    if (db_q_dialect(TX(tx)) == DB_POSTGRES) {
        int got = epoch_try_lock(tx, ctx, a, err);
        if (got < 0)
            return -1;
        x->locked = got == 1;
    }
    if (x->locked) {
        if (sql_row(x->a, TX(tx), ctx, &SQL_LB_EPOCH_BUMP, a, 1, &rows, err) != 0)
            return -1;
        bz_str_to_i64(bz_str_c(db_col_text(rows, 0, NULL)), &x->epoch);
    }
    db_arg c[] = {DB_TEXT(x->currency)};
    /* Every spender of the currency, copied into x->rows: closed here, not
     * held by the request (a retried transaction would hold each attempt's). */
    if (sql_query(NULL, TX(tx), ctx, &SQL_SPENDERS, c, 1, &rows, err) != 0)
        return -1;
    while (db_rows_next(rows)) {
        int64_t pair[2] = {db_col_int(rows, 0), db_col_int(rows, 1)};
        bz_buf_append(x->rows, pair, sizeof pair);
    }
    db_rows_close(rows);
    return 0;
}

/* Rebuilds the board from a snapshot and publishes it; when the epoch's
 * lock could not be had, publishes nothing and hands the snapshot back in
 * *unpublished ((user id, cents) pairs) for the caller to answer from. */
static int rebuild(svc *s, svc_call *c, const char *key, const char *currency, bz_buf **unpublished,
                   bz_error *err)
{
    rt_ctx *ctx = c->ctx;
    snap_args x = {c->arena, currency, 0, bz_arena_buf(c->arena), false};
    db_tx_opts o = {.isolation = s->dialect == DB_POSTGRES ? DB_READ_COMMITTED : DB_SERIALIZABLE};
    int rc = db_run_tx(s->db, ctx, &o, snapshot_tx, &x, err);
    if (rc == 0 && !x.locked) {
        *unpublished = x.rows;
        return 0;
    }
    const int64_t *pair = (const int64_t *)(const void *)x.rows->data;
    for (size_t i = 0; rc == 0 && i < x.rows->len / (2 * sizeof(int64_t)); i++) {
        char member[24];
        snprintf(member, sizeof member, "%lld", (long long)pair[2 * i]);
        rc = cache_zincr_epoch(s->cache, ctx, key, x.epoch, member, pair[2 * i + 1], SVC_LB_STAGE_TTL_NS, err);
    }
    bool published;
    if (rc == 0)
        rc = cache_zpublish_epoch(s->cache, ctx, key, x.epoch, &published, err);
    if (rc == 0)
        cache_mark_evictable(s->cache, key);
    return rc;
}

/* Entries ordered as the board orders them (ZREVRANGE: score descending,
 * then member descending, as strings). */
static int zentry_cmp(const void *pa, const void *pb)
{
    const cache_zentry *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score < b->score ? 1 : -1;
    return strcmp(b->member, a->member);
}

/* The first n entries of a snapshot's (user id, cents) pairs, ordered as
 * the published board would hold them: the answer when it could not be
 * published (rebuild).  Returns how many. */
static int top_of_snapshot(const bz_buf *pairs, int n, cache_zentry *top)
{
    const int64_t *p = (const int64_t *)(const void *)pairs->data;
    size_t np = pairs->len / (2 * sizeof(int64_t));
    int cnt = 0;
    for (size_t i = 0; i < np; i++) {
        cache_zentry z;
        snprintf(z.member, sizeof z.member, "%lld", (long long)p[2 * i]);
        z.score = p[2 * i + 1];
        /* keep the best n seen so far, in order: insertion into a short array */
        if (cnt == n && zentry_cmp(&z, &top[n - 1]) >= 0)
            continue;
        int j = cnt < n ? cnt++ : n - 1;
        while (j > 0 && zentry_cmp(&z, &top[j - 1]) < 0) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = z;
    }
    return cnt;
}

static int built(svc *s, rt_ctx *ctx, const char *key, bz_error *err)
{
    int64_t epoch;
    return cache_zepoch(s->cache, ctx, key, &epoch, err);
}

static int ensure(svc *s, svc_call *c, const char *key, const char *currency, bz_buf **unpublished, bz_error *err)
{
    rt_ctx *ctx = c->ctx;
    int rc = built(s, ctx, key, err);
    if (rc != CACHE_MISS)
        return rc < 0 ? -1 : 0;
    char lock[48], token[33];
    snprintf(lock, sizeof lock, "lb:rebuild:%s", currency);
    if (cache_lock(s->cache, ctx, lock, LB_LOCK_TTL, true, token, err) != 0)
        return -1;
    rc = built(s, ctx, key, err);
    if (rc == CACHE_MISS)
        rc = rebuild(s, c, key, currency, unpublished, err);
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
    bz_buf *unpublished = NULL;
    if (ensure(s, c, key, cur, &unpublished, &be) != 0)
        return svc_fail_from(e, &be);
    cache_zentry top[101];
    int cnt = 0;
    if (unpublished)
        cnt = top_of_snapshot(unpublished, lim + 1, top);
    else if (cache_ztop(s->cache, c->ctx, key, lim + 1, top, &cnt, &be) != 0)
        return svc_fail_from(e, &be);
    int k = 0; /* drop the marker */
    for (int i = 0; i < cnt && k < lim; i++)
        if (strcmp(top[i].member, CACHE_ZEPOCH_MEMBER) != 0)
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
        int rc = svc_read_row(s, c, &SQL_USER_PUBLIC_BY_ID, args, 1, &rows, &be);
        if (rc < 0)
            return svc_fail_from(e, &be);
        if (rc == 0) {
            svc_user u;
            svc__row_user(rows, c->arena, &u, false);
            sp->name = u.name;
        }
    }
    *n = cnt;
    return 0;
}

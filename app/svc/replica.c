/* app/svc/replica.c — stale-tolerant reads on a PostgreSQL replica
 * (--db-read-url).
 *
 * Routed to the replica (svc_read_row / svc_read_query):
 *   GET /v1/items (every list mode)        SQL_ITEMS_PAGE, _OF_SELLER, _OFFSET, _OF_SELLER_OFFSET
 *   GET /v1/users/{id}, GET /v1/me, GetUser SQL_USER_BY_ID, SQL_USER_PUBLIC_BY_ID
 *   GET /v1/users?email=                    SQL_USER_BY_EMAIL
 *   ListUsers (gRPC stream)                 SQL_USERS_AFTER
 *   leaderboard names                       SQL_USER_PUBLIC_BY_ID
 * A routed one-row read is a shared read (sql_row_shared): on
 * PostgreSQL the reads of one turn share a statement (a user by id: one
 * for every id wanted), on the replica or on the primary alike (a caller
 * sent to the primary joins only the primary's).
 * Never routed: every write and everything in a transaction; reads whose
 * result goes into the shared cache — the item GET's loader
 * (SQL_ITEM_LIVE), order pages, the leaderboard rebuild (SQL_SPENDERS) —
 * since a stale row stored there would outlive the replica's lag by the
 * TTL and be served to everyone, even after the primary changed it; and
 * the reads a write decides on (login, idempotency records, accounts).
 *
 * How far behind: a prober (every PROBE_NS) takes the wall time t, then
 * the primary's WAL position P (pg_current_wal_lsn), then the replica's
 * replay position R.  Every commit acknowledged before t is at or below
 * P; once R >= P, the replica shows all of them.  caught_up_us is the
 * latest such t.  The replica serves reads only while the last probe
 * reached it and now - caught_up_us <= --db-read-max-lag; otherwise every
 * read goes to the primary.  A routed read that fails on the replica for
 * any reason is re-run on the primary at once; when the replica did not
 * answer (connection, or REPLICA_READ_NS without an answer) it is also
 * taken out until the next good probe: a replica outage never fails a
 * read.
 *
 * Read-your-writes: after each committed write that changes routed data
 * (items; the user's own name), svc_wrote marks the authenticated user
 * with the wall time: in this process (a lossy table: two users sharing a
 * slot only send more reads to the primary) and in the cache as state
 * `rw:<user>` (so other instances sharing the cache see it too).  That
 * user's reads go to the primary until caught_up_us passes the mark by
 * SKEW_US (clock differences between instances).  The mark lives for
 * --db-read-max-lag + SKEW_US + 1 s: by then either the replica has the
 * write or it is too far behind to serve anyone.  Anonymous readers have
 * nothing to track: they get the replica's view.
 */
#include "app/svc/svc-private.h"

#include <bazaar/clock.h>
#include <bazaar/log.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROBE_NS (100 * BZ_NS_PER_MS)
/* while the replica does not answer: each failed probe logs the pool's
 * connect errors, so look less often (reads go to the primary meanwhile) */
#define PROBE_DOWN_NS (1 * BZ_NS_PER_S)
#define PROBE_TIMEOUT_NS (1 * BZ_NS_PER_S)
#define REPLICA_READ_NS (1 * BZ_NS_PER_S)
#define SKEW_US (1000 * 1000)

void svc_use_replica(svc *s, db *read, int64_t max_lag_ns)
{
    svc_replica *r = &s->rep;
    r->db = read;
    r->max_lag_us = max_lag_ns / 1000;
    atomic_store(&r->up, false);
    atomic_store(&r->caught_up_us, 0);
}

bool svc_has_replica(const svc *s) { return s->rep.db != NULL; }

/* The WAL position a statement returns (as a byte offset), or -1. */
static int64_t wal_pos(db *d, rt_ctx *ctx, const svc_sql *q)
{
    db_rows *rows = NULL;
    bz_error be;
    if (sql_row(NULL, DB(d), ctx, q, NULL, 0, &rows, &be) != 0 || db_col_is_null(rows, 0)) {
        db_rows_close(rows);
        return -1;
    }
    int64_t v = db_col_int(rows, 0);
    db_rows_close(rows);
    return v;
}

/* One probe; *first is true until the first probe has reported. */
static void probe_once(svc *s, int64_t *st, int64_t *sp, int *ns, bool *first)
{
    svc_replica *r = &s->rep;
    rt_ctx c;
    rt_ctx_init_timeout(&c, &s->bg_stop, PROBE_TIMEOUT_NS);
    int64_t t = bz_wall_us();
    int64_t p = wal_pos(s->db, &c, &SQL_WAL_PRIMARY);
    if (p >= 0) {
        if (*ns == REPLICA_SAMPLES) { /* full: the oldest goes (it only delays catching up) */
            memmove(st, st + 1, (REPLICA_SAMPLES - 1) * sizeof *st);
            memmove(sp, sp + 1, (REPLICA_SAMPLES - 1) * sizeof *sp);
            (*ns)--;
        }
        st[*ns] = t;
        sp[*ns] = p;
        (*ns)++;
    }
    int64_t rp = wal_pos(r->db, &c, &SQL_WAL_REPLAY);
    rt_ctx_release(&c);
    bool was = atomic_load(&r->up);
    atomic_store(&r->up, rp >= 0);
    if (was != (rp >= 0) || *first) {
        *first = false;
        if (rp >= 0)
            bz_log_info("read replica answers: stale-tolerant reads go to it while it keeps up");
        else
            bz_log_warn("read replica does not answer: every read goes to the primary");
    }
    if (rp < 0)
        return;
    int k = -1;
    for (int i = 0; i < *ns; i++)
        if (sp[i] <= rp)
            k = i; /* samples are in time order; positions never go back */
    if (k < 0)
        return;
    if (st[k] > atomic_load(&r->caught_up_us))
        atomic_store(&r->caught_up_us, st[k]);
    /* samples up to k are settled */
    memmove(st, st + k + 1, (size_t)(*ns - k - 1) * sizeof *st);
    memmove(sp, sp + k + 1, (size_t)(*ns - k - 1) * sizeof *sp);
    *ns -= k + 1;
}

static void prober(void *p)
{
    svc *s = p;
    int64_t st[REPLICA_SAMPLES], sp[REPLICA_SAMPLES];
    int ns = 0;
    bool first = true;
    while (!atomic_load(&s->stopping)) {
        probe_once(s, st, sp, &ns, &first);
        if (rt_sleep(&s->bg_stop, atomic_load(&s->rep.up) ? PROBE_NS : PROBE_DOWN_NS) != 0)
            break;
    }
    rt_wg_done(&s->workers);
}

void svc__replica_start(svc *s)
{
    if (!s->rep.db)
        return;
    rt_wg_add(&s->workers, 1);
    rt_go(prober, s);
}

static size_t mark_slot(int64_t user) { return (size_t)((uint64_t)user * 0x9E3779B97F4A7C15ull >> 52); }

void svc_wrote(svc *s, svc_call *c)
{
    svc_replica *r = &s->rep;
    if (!r->db || !c->who || c->who->user_id <= 0)
        return;
    int64_t now = bz_wall_us();
    _Atomic int64_t *m = &r->marks[mark_slot(c->who->user_id) % REPLICA_MARKS];
    int64_t old = atomic_load(m);
    while (old < now && !atomic_compare_exchange_weak(m, &old, now))
        ;
    if (!s->cache)
        return;
    char key[48], val[24];
    snprintf(key, sizeof key, "rw:%lld", (long long)c->who->user_id);
    int n = snprintf(val, sizeof val, "%lld", (long long)now);
    rt_ctx d;
    rt_ctx_init_timeout(&d, NULL, SVC_DETACHED_NS);
    bz_error be;
    int64_t ttl = r->max_lag_us * 1000 + (int64_t)SKEW_US * 1000 + BZ_NS_PER_S;
    if (cache_state_set(s->cache, &d, key, val, (size_t)n, ttl, &be) != 0)
        bz_log_warn("cannot mark a write for read-your-writes; other instances may read this user stale",
                    BZ_F_STR("error", be.msg));
    rt_ctx_release(&d);
}

/* Whether c's read may go to the replica now. */
static bool replica_ok(svc *s, svc_call *c)
{
    svc_replica *r = &s->rep;
    if (!r->db || !atomic_load(&r->up))
        return false;
    int64_t cu = atomic_load(&r->caught_up_us);
    if (cu == 0 || bz_wall_us() - cu > r->max_lag_us)
        return false;
    if (!c->who || (c->who->user_id <= 0 && !c->who->token_hash[0]))
        return true; /* anonymous: nothing of theirs to see */
    if (c->who->user_id <= 0)
        return false; /* a token we could not resolve: cannot tell whose writes to wait for */
    if (atomic_load(&r->marks[mark_slot(c->who->user_id) % REPLICA_MARKS]) + SKEW_US >= cu)
        return false;
    if (!s->cache)
        return true;
    char key[48];
    snprintf(key, sizeof key, "rw:%lld", (long long)c->who->user_id);
    bz_buf *v = bz_arena_buf(c->arena);
    bz_error be;
    int rc = cache_state_get(s->cache, c->ctx, key, v, &be);
    bool ok;
    if (rc < 0) {
        ok = false; /* cannot tell: the primary is always right */
    } else if (rc > 0 || v->len == 0) {
        ok = true; /* no mark */
    } else {
        int64_t m = 0;
        ok = bz_str_to_i64((bz_str){(const char *)v->data, v->len}, &m) && m + SKEW_US < cu;
    }
    return ok;
}

/* Runs a routed read: on the replica when replica_ok, falling back to the
 * primary when the replica does not answer. */
static int routed(svc *s, svc_call *c, const svc_sql *q, const db_arg *a, int n, db_rows **rows, bool one,
                  bz_error *be)
{
    if (replica_ok(s, c)) {
        rt_ctx rc;
        rt_ctx_init_timeout(&rc, c->ctx, REPLICA_READ_NS);
        int r = one ? sql_row_shared(c->arena, s->rep.db, &rc, q, a, n, rows, be) : sql_query(c->arena, DB(s->rep.db), &rc, q, a, n, rows, be);
        rt_ctx_release(&rc);
        if (r >= 0 || rt_ctx_err(c->ctx))
            return r;
        /* Whatever went wrong there (no answer, a connection lost, a query
         * cancelled by a recovery conflict), the primary can answer. */
        bool gone = be->kind == BZ_ERR_CONNECTION || be->kind == BZ_ERR_UNAVAILABLE || be->kind == BZ_ERR_TIMEOUT ||
                    be->kind == BZ_ERR_CANCELLED;
        if (gone && atomic_exchange(&s->rep.up, false))
            bz_log_warn("read replica failed a read; reads go to the primary until it answers a probe",
                        BZ_F_STR("error", be->msg));
        else if (!gone)
            bz_log_warn("read replica refused a read; it runs on the primary", BZ_F_STR("error", be->msg));
    }
    return one ? sql_row_shared(c->arena, s->db, c->ctx, q, a, n, rows, be) : sql_query(c->arena, DB(s->db), c->ctx, q, a, n, rows, be);
}

int svc_read_row(svc *s, svc_call *c, const svc_sql *q, const db_arg *a, int n, db_rows **rows, bz_error *be)
{
    return routed(s, c, q, a, n, rows, true, be);
}

int svc_read_query(svc *s, svc_call *c, const svc_sql *q, const db_arg *a, int n, db_rows **rows, bz_error *be)
{
    return routed(s, c, q, a, n, rows, false, be);
}

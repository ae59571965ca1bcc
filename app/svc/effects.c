/* app/svc/effects.c — what follows a commit: cache invalidation, order-list
 * versions, order events, the leaderboard.  Each runs on a short detached
 * context: an effect must not be skipped because the client went away
 * after the commit. */
#include "app/svc/svc-private.h"

#include <bazaar/clock.h>
#include <bazaar/log.h>
#include <bazaar/rand.h>

#include <stdio.h>
#include <string.h>

/* "item:<id>" (no printf: this is on every item GET) */
void svc__key_item(int64_t id, char out[40])
{
    memcpy(out, "item:", 5);
    out[5 + bz_fmt_i64(out + 5, id)] = '\0';
}

void svc__key_events(int64_t user_id, char out[48]) { snprintf(out, 48, "orders:%lld", (long long)user_id); }

void svc__fx_item_changed(svc *s, int64_t item_id)
{
    char key[40];
    svc__key_item(item_id, key);
    bz_error e;
    rt_ctx c;
    rt_ctx_init_timeout(&c, NULL, SVC_DETACHED_NS);
    cache_invalidate(s->cache, &c, key, &e);
    rt_ctx_release(&c);
}

/* The keys of a user's cached order pages are kept in a small set
 * ("olpages:<user>"), so that superseded pages are deleted when the
 * version changes instead of lingering until their TTL, and so that a
 * user paging through many distinct (limit, cursor) pairs keeps at most
 * SVC_OLIST_MAX_PAGES pages: past it, all of them are dropped. */
static void olpages_key(int64_t uid, char out[40]) { snprintf(out, 40, "olpages:%lld", (long long)uid); }

void svc__pages_drop(svc *s, rt_ctx *ctx, int64_t uid)
{
    char set[40];
    olpages_key(uid, set);
    bz_buf b = BZ_BUF_INIT;
    bz_error e;
    /* bounded: the set holds at most SVC_OLIST_MAX_PAGES (+ the few added
     * concurrently), and each round takes what it read */
    for (int round = 0; round < 4; round++) {
        int n = 0;
        if (cache_smembers(s->cache, ctx, set, 4 * SVC_OLIST_MAX_PAGES, &b, &n, &e) != 0 || n == 0)
            break;
        const char *m = b.data;
        for (int i = 0; i < n; i++, m += strlen(m) + 1) {
            /* a plain delete, no tombstone: no reader asks for a page of a
             * superseded version, so a load of one storing late is
             * unreachable — and tracked here, to be dropped next time */
            cache_del(s->cache, ctx, m, &e);
            cache_srem(s->cache, ctx, set, m, &e);
        }
    }
    bz_buf_free(&b);
}

void svc__pages_track(svc *s, rt_ctx *ctx, int64_t uid, const char *page_key)
{
    char set[40];
    olpages_key(uid, set);
    int64_t card = 0;
    bz_error e;
    /* the set outlives its pages (TTL + jitter) */
    if (cache_sadd(s->cache, ctx, set, page_key, 2 * s->cfg->cache_ttl_ns, &card, &e) == 0 &&
        card > SVC_OLIST_MAX_PAGES)
        svc__pages_drop(s, ctx, uid);
}

/* Order pages are cached under a per-user version ("olv:<user>", a random
 * value): every committed change of the user's orders (create, pay,
 * cancel, ship) replaces the version before the operation returns, so
 * later reads use new keys and never see the old pages; the old pages are
 * then deleted (svc__pages_drop).  A version is never reused, so an old page
 * can never come back. */
void svc__fx_orders_changed(svc *s, int64_t uid)
{
    char key[40], v[24];
    snprintf(key, sizeof key, "olv:%lld", (long long)uid);
    int n = snprintf(v, sizeof v, "%016llx", (unsigned long long)bz_rand64());
    bz_error e;
    rt_ctx c;
    rt_ctx_init_timeout(&c, NULL, SVC_DETACHED_NS);
    if (cache_state_set(s->cache, &c, key, v, (size_t)n, 0, &e) != 0)
        bz_log_warn("order list version not bumped", BZ_F_STR("error", e.msg));
    else
        svc__pages_drop(s, &c, uid);
    rt_ctx_release(&c);
}

void svc__fx_order_event(svc *s, int64_t user_id, int64_t order_id, const char *status, int64_t at_us)
{
    char ch[48];
    svc__key_events(user_id, ch);
    bz_buf b = BZ_BUF_INIT;
    svc_order_event ev = {order_id, status, at_us};
    svc__enc_event(&b, &ev);
    bz_error e;
    rt_ctx c;
    rt_ctx_init_timeout(&c, NULL, SVC_DETACHED_NS);
    if (cache_publish(s->cache, &c, ch, b.data, b.len, &e) != 0)
        bz_log_warn("order event not published", BZ_F_INT("order_id", order_id), BZ_F_STR("error", e.msg));
    rt_ctx_release(&c);
    bz_buf_free(&b);
}

void svc__fx_spent(svc *s, int64_t uid, const char *currency, int64_t cents, int64_t epoch)
{
    char key[32], member[24];
    snprintf(key, sizeof key, "lb:spenders:%s", currency);
    snprintf(member, sizeof member, "%lld", (long long)uid);
    bz_error e;
    rt_ctx c;
    rt_ctx_init_timeout(&c, NULL, SVC_DETACHED_NS);
    if (cache_zincr_epoch(s->cache, &c, key, epoch, member, cents, SVC_LB_STAGE_TTL_NS, &e) != 0)
        bz_log_warn("leaderboard not updated", BZ_F_STR("error", e.msg));
    rt_ctx_release(&c);
}

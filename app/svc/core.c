/* app/svc/core.c — the service's lifecycle, the caller (sessions and the
 * rate limiter), readiness and the per-account queues. */
#include "app/svc/svc-private.h"

#include <bazaar/clock.h>
#include <bazaar/log.h>
#include <bazaar/rand.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

svc *svc_open(const app_config *cfg, db *d, cache *c, rt_ctx *ctx, bz_error *err)
{
    svc *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->cfg = cfg;
    s->db = d;
    s->cache = c;
    s->dialect = db_get_dialect(d);
    s->acct_locks_on = s->dialect == DB_POSTGRES;
    s->idem_keep_locks = svc__idem_can_keep_locks(cfg, c);
    for (int i = 0; i < SVC_ACCT_STRIPES; i++)
        rt_mutex_init(&s->acct_locks[i]);
    svc__pw_pool_start(s);
    snprintf(s->instance, sizeof s->instance, "%016llx", (unsigned long long)bz_rand64());
    if (svc_prepare_db(s, ctx, err) != 0) {
        svc_close(s);
        return NULL;
    }
    return s;
}

void svc_close(svc *s)
{
    if (!s)
        return;
    svc__pw_pool_stop(s);
    for (int i = 0; i < SVC_ACCT_STRIPES; i++)
        rt_mutex_destroy(&s->acct_locks[i]);
    free(s);
}

db *svc_db(const svc *s) { return s->db; }
cache *svc_cache(const svc *s) { return s->cache; }

void svc_ready(svc *s, rt_ctx *ctx, bool *db_ok, bool *cache_ok)
{
    rt_ctx c;
    rt_ctx_init_timeout(&c, ctx, 2 * BZ_NS_PER_S);
    bz_error e;
    *db_ok = db_ping(s->db, &c, &e) == 0;
    *cache_ok = cache_ping(s->cache, &c, &e) == 0;
    rt_ctx_release(&c);
}

int svc_breakers(const svc *s, const bz_breaker **out, int max)
{
    const bz_breaker *all[] = {db_get_breaker(s->db), s->rep.db ? db_get_breaker(s->rep.db) : NULL,
                               s->cache ? cache_get_breaker(s->cache) : NULL};
    int n = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0] && n < max; i++)
        if (all[i] && all[i]->failures > 0)
            out[n++] = all[i];
    return n;
}

int svc__need_user(const svc_call *c, svc_err *e)
{
    if (c->who && c->who->user_id > 0)
        return 0;
    return svc_fail(e, SVC_UNAUTHENTICATED, "unauthorized", "a valid bearer token is required");
}

/* ---- the caller ---- */

int svc_authenticate(svc *s, rt_ctx *ctx, const char *token, size_t n, const char *addr, svc_principal *p,
                     svc_err *e)
{
    p->user_id = 0;
    p->token_hash[0] = '\0';
    svc__copy(p->addr, sizeof p->addr, addr ? addr : "");
    if (!token || n == 0 || n > 128)
        return 0;
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const uint8_t *)token, n);
    sodium_bin2hex(p->token_hash, sizeof p->token_hash, h, sizeof h);
    bz_error be;
    int64_t id = 0;
    int rc = cache_session_get(s->cache, ctx, p->token_hash, &id, &be);
    if (rc < 0) {
        svc_fail(e, SVC_UNAVAILABLE, "unavailable", "the session store is unavailable; retry");
        if (be.retry_ms > 0) /* its circuit breaker is open: retry after its next probe */
            e->retry_after_s = (be.retry_ms + 999) / 1000;
        return -1;
    }
    if (rc == 0 && id > 0)
        p->user_id = id;
    return 0;
}

void svc_anonymous(const char *peer, svc_principal *p)
{
    p->user_id = 0;
    p->token_hash[0] = '\0';
    const char *c = strrchr(peer, ':');
    size_t n = c ? (size_t)(c - peer) : strlen(peer);
    if (n >= sizeof p->addr)
        n = sizeof p->addr - 1;
    memcpy(p->addr, peer, n);
    p->addr[n] = '\0';
}

int svc_authenticate_bearer(svc *s, rt_ctx *ctx, bz_str authorization, const char *peer, svc_principal *p,
                            svc_err *e)
{
    svc_anonymous(peer, p);
    bz_str h = authorization;
    if (h.n < 8 || !bz_str_ieq(bz_str_make(h.p, 7), BZ_STR_LIT("Bearer ")))
        return 0;
    bz_str t = bz_str_trim(bz_str_make(h.p + 7, h.n - 7));
    char addr[64];
    memcpy(addr, p->addr, sizeof addr);
    return svc_authenticate(s, ctx, t.p, t.n, addr, p, e);
}

static void rate_out(svc_rate *r, const cache_rate *cr)
{
    r->set = true;
    r->allowed = cr->allowed;
    r->limit = cr->limit;
    r->remaining = cr->remaining;
    int64_t reset = (cr->reset_ns + BZ_NS_PER_S - 1) / BZ_NS_PER_S;
    r->reset_s = reset > 0 ? reset : 1;
}

/* A fixed window per key, counted in the cache so every instance shares
 * it.  Fails open: the limiter must not take the API down. */
int svc__rate(svc *s, rt_ctx *ctx, const char *key, const bz_rate *lim, svc_rate *rate, svc_err *e,
              const char *msg)
{
    cache_rate cr;
    bz_error be;
    if (cache_rate_allow(s->cache, ctx, key, lim->count, lim->window_ns, &cr, &be) != 0)
        return 0;
    rate_out(rate, &cr);
    if (cr.allowed)
        return 0;
    svc_fail(e, SVC_RATE_LIMITED, "rate_limited", "%s", msg);
    e->retry_after_s = (int)rate->reset_s;
    return -1;
}

int svc_rate_check(svc *s, rt_ctx *ctx, const svc_principal *p, svc_rate *rate, svc_err *e)
{
    rate->set = false;
    if (s->cfg->rate_limit.count <= 0)
        return 0;
    char key[96];
    if (p->user_id > 0)
        snprintf(key, sizeof key, "rl:u:%lld", (long long)p->user_id);
    else
        snprintf(key, sizeof key, "rl:ip:%s", p->addr);
    return svc__rate(s, ctx, key, &s->cfg->rate_limit, rate, e,
                     "too many requests; retry after the time in Retry-After");
}

/* ---- per-account queues ----
 *
 * PostgreSQL answers two SERIALIZABLE transactions that update the same
 * account by failing one (40001) after it waited for the other; under a
 * hot account most of the work is then retries and back-off.  Within one
 * instance, transfers and deposits first queue on a striped lock per
 * account (both stripes, lower first, so two cannot wait on each other),
 * so they meet PostgreSQL one at a time per account.  Correctness does not
 * depend on it: across instances the row locks (a transfer's, READ
 * COMMITTED) and SERIALIZABLE (a deposit's) still decide.  SQLite has one
 * writer and group commit already; it skips this. */
int svc__acct_lock(svc *s, rt_ctx *ctx, int64_t x, int64_t y, int held[2])
{
    held[0] = held[1] = -1;
    if (!s->acct_locks_on)
        return 0;
    int s1 = (int)((uint64_t)x % SVC_ACCT_STRIPES), s2 = (int)((uint64_t)y % SVC_ACCT_STRIPES);
    if (s1 > s2) {
        int t = s1;
        s1 = s2;
        s2 = t;
    }
    if (rt_mutex_lock(&s->acct_locks[s1], ctx) != 0)
        return -1;
    held[0] = s1;
    if (s2 != s1) {
        if (rt_mutex_lock(&s->acct_locks[s2], ctx) != 0)
            return -1;
        held[1] = s2;
    }
    return 0;
}

void svc__acct_unlock(svc *s, const int held[2])
{
    for (int i = 1; i >= 0; i--)
        if (held[i] >= 0)
            rt_mutex_unlock(&s->acct_locks[held[i]]);
}

/* cache/cache.c — the front end: key prefixing, the "none" policy, and the
 * backend-agnostic patterns (get-or-load with single-flight and early
 * refresh, locks, rate limits, sessions). */
#include "cache/cache-private.h"

#include <bazaar/log.h>
#include <bazaar/rand.h>
#include "base/rand-private.h"
#include "base/redisurl.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX "bazaar:"
#define KEYMAX 512
#define NEGATIVE_TTL (5 * BZ_NS_PER_S)

static int key_of(char *out, const char *key, bz_error *err)
{
    size_t n = strlen(key);
    if (n + sizeof PREFIX > KEYMAX)
        return bz_err_set(err, BZ_ERR_INVALID, "cache: key too long"), -EINVAL;
    memcpy(out, PREFIX, sizeof PREFIX - 1);
    memcpy(out + sizeof PREFIX - 1, key, n + 1);
    return 0;
}

#define K(k)                                                                                                    \
    char full_[KEYMAX];                                                                                        \
    if (key_of(full_, k, err))                                                                                 \
        return -EINVAL;                                                                                        \
    const char *fk = full_

cache *cache_open(const char *spec, const cache_opts *o, bz_error *err)
{
    cache_opts def = {0};
    if (!o)
        o = &def;
    cache *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->hub = cache__hub_new();
    pthread_mutex_init(&c->flights_lk, NULL);
    if (!strcmp(spec, "memory") || !strcmp(spec, "none")) {
        c->kind = !strcmp(spec, "memory") ? "memory" : "none";
        c->store_entries = !strcmp(spec, "memory");
        c->be = cache__memory_new(o, err);
    } else if (bz_redis_url_is(spec)) {
        c->kind = "redis";
        c->store_entries = true;
        c->remote = true;
        c->be = cache__redis_new(spec, o, err);
    } else {
        bz_err_set(err, BZ_ERR_INVALID, "unknown cache \"%s\" (want memory, none, redis://, rediss:// or redis-sentinel://)", spec);
    }
    if (!c->be) {
        cache__hub_free(c->hub);
        pthread_mutex_destroy(&c->flights_lk);
        free(c);
        return NULL;
    }
    c->be->hub = c->hub;
    c->be->stats = &c->st;
    return c;
}

void cache_close(cache *c)
{
    if (!c)
        return;
    c->be->ops->close(c->be);
    cache__hub_free(c->hub);
    pthread_mutex_destroy(&c->flights_lk);
    free(c);
}

const char *cache_kind(const cache *c) { return c->kind; }

bool cache_keeps_entries(const cache *c) { return c->store_entries; }

bool cache_is_remote(const cache *c) { return c->remote; }

int cache_ping(cache *c, rt_ctx *ctx, bz_error *err) { return c->be->ops->ping(c->be, ctx, err); }

const bz_breaker *cache_get_breaker(const cache *c) { return c->be->breaker; }

cache_stats cache_get_stats(cache *c)
{
    cache_stats s;
#define LD(f) s.f = __atomic_load_n(&c->st.f, __ATOMIC_RELAXED)
    LD(hits);
    LD(misses);
    LD(shared_loads);
    LD(loads);
    LD(errors);
    LD(evictions);
    LD(expired);
#undef LD
    s.keys = s.bytes = s.max_bytes = -1;
    if (strcmp(c->kind, "redis") != 0) {
        s.keys = cache__memory_keys(c->be);
        s.bytes = cache__memory_used(c->be);
        s.max_bytes = cache__memory_max(c->be);
    }
    return s;
}

#define STAT(c, f) __atomic_fetch_add(&(c)->st.f, 1, __ATOMIC_RELAXED)

/* ---- plain operations ---- */

int cache_get(cache *c, rt_ctx *ctx, const char *key, bz_buf *out, bz_error *err)
{
    if (!c->store_entries)
        return CACHE_MISS;
    K(key);
    return c->be->ops->get(c->be, ctx, fk, out, err);
}

/* A stored cache entry joins the evictable class (memory backend). */
static void entry_class(cache *c, const char *fk)
{
    if (c->be->ops->evictable)
        c->be->ops->evictable(c->be, fk);
}

int cache_set(cache *c, rt_ctx *ctx, const char *key, const void *v, size_t n, int64_t ttl, bz_error *err)
{
    if (!c->store_entries)
        return 0;
    K(key);
    int r = c->be->ops->set(c->be, ctx, fk, v, n, ttl, false, NULL, err);
    if (r == 0)
        entry_class(c, fk);
    return r;
}

void cache_mark_evictable(cache *c, const char *key)
{
    char full_[KEYMAX];
    bz_error e;
    if (key_of(full_, key, &e) == 0)
        entry_class(c, full_);
}

int cache_sadd(cache *c, rt_ctx *ctx, const char *key, const char *m, int64_t ttl, int64_t *card, bz_error *err)
{
    K(key);
    return c->be->ops->sadd(c->be, ctx, fk, m, ttl, card, err);
}

int cache_srem(cache *c, rt_ctx *ctx, const char *key, const char *m, bz_error *err)
{
    K(key);
    return c->be->ops->srem(c->be, ctx, fk, m, err);
}

int cache_smembers(cache *c, rt_ctx *ctx, const char *key, int max, bz_buf *out, int *n, bz_error *err)
{
    K(key);
    return c->be->ops->smembers(c->be, ctx, fk, max, out, n, err);
}

int cache_del(cache *c, rt_ctx *ctx, const char *key, bz_error *err)
{
    if (!c->store_entries)
        return 0;
    K(key);
    return c->be->ops->del(c->be, ctx, fk, err);
}

int cache_state_get(cache *c, rt_ctx *ctx, const char *key, bz_buf *out, bz_error *err)
{
    K(key);
    return c->be->ops->get(c->be, ctx, fk, out, err);
}

int cache_state_set(cache *c, rt_ctx *ctx, const char *key, const void *v, size_t n, int64_t ttl, bz_error *err)
{
    K(key);
    return c->be->ops->set(c->be, ctx, fk, v, n, ttl, false, NULL, err);
}

int cache_state_del(cache *c, rt_ctx *ctx, const char *key, bz_error *err)
{
    K(key);
    return c->be->ops->del(c->be, ctx, fk, err);
}

int cache_set_nx(cache *c, rt_ctx *ctx, const char *key, const void *v, size_t n, int64_t ttl, bool *stored,
                 bz_error *err)
{
    K(key);
    return c->be->ops->set(c->be, ctx, fk, v, n, ttl, true, stored, err);
}

int cache_del_if(cache *c, rt_ctx *ctx, const char *key, const void *t, size_t n, bool *deleted, bz_error *err)
{
    K(key);
    return c->be->ops->del_if(c->be, ctx, fk, t, n, deleted, err);
}

int cache_extend_if(cache *c, rt_ctx *ctx, const char *key, const void *t, size_t n, int64_t ttl, bool *extended,
                    bz_error *err)
{
    K(key);
    return c->be->ops->extend_if(c->be, ctx, fk, t, n, ttl, extended, err);
}

int cache_incr(cache *c, rt_ctx *ctx, const char *key, int64_t delta, int64_t ttl, int64_t *v, bz_error *err)
{
    K(key);
    return c->be->ops->incr(c->be, ctx, fk, delta, ttl, v, err);
}

int cache_ttl(cache *c, rt_ctx *ctx, const char *key, int64_t *ttl, bz_error *err)
{
    K(key);
    return c->be->ops->ttl(c->be, ctx, fk, ttl, err);
}

int cache_zincr(cache *c, rt_ctx *ctx, const char *key, const char *m, int64_t d, int64_t *score, bz_error *err)
{
    K(key);
    return c->be->ops->zincr(c->be, ctx, fk, m, d, score, err);
}

int cache_ztop(cache *c, rt_ctx *ctx, const char *key, int n, cache_zentry *out, int *count, bz_error *err)
{
    K(key);
    return c->be->ops->ztop(c->be, ctx, fk, n, out, count, err);
}

int cache_zscore(cache *c, rt_ctx *ctx, const char *key, const char *m, int64_t *score, bz_error *err)
{
    K(key);
    return c->be->ops->zscore(c->be, ctx, fk, m, score, err);
}

int cache_zrank(cache *c, rt_ctx *ctx, const char *key, const char *m, int64_t *rank, bz_error *err)
{
    K(key);
    return c->be->ops->zrank(c->be, ctx, fk, m, rank, err);
}

int cache_zcard(cache *c, rt_ctx *ctx, const char *key, int64_t *n, bz_error *err)
{
    K(key);
    return c->be->ops->zcard(c->be, ctx, fk, n, err);
}

int cache_publish(cache *c, rt_ctx *ctx, const char *channel, const void *m, size_t n, bz_error *err)
{
    K(channel);
    return c->be->ops->publish(c->be, ctx, fk, m, n, err);
}

/* ---- get-or-load ----
 *
 * Stored entries carry a header: magic, flags (negative, tombstone), how
 * long the load took (µs), when the entry expires (wall µs) — so any
 * process can run XFetch: refresh early with probability that grows as
 * expiry nears and with how slow the load is — and a random stamp.  The
 * header is what a load compares before it stores (cache.h: no stale
 * resurrection): the stamp makes every stored entry and every tombstone
 * differ from any other, so a compare never mistakes a newer one for the
 * one the load saw. */

#define HDR 28
#define F_NEGATIVE 1
#define F_TOMBSTONE 2
typedef struct {
    char magic[3];
    uint8_t flags;
    int64_t delta_us;
    int64_t expire_us;
} hdr;

static void put_hdr(bz_buf *b, uint8_t flags, int64_t delta_us, int64_t expire_us)
{
    char h[HDR];
    memcpy(h, "BZ2", 3);
    h[3] = (char)flags;
    memcpy(h + 4, &delta_us, 8);
    memcpy(h + 12, &expire_us, 8);
    uint64_t stamp = bz_rand64();
    memcpy(h + 20, &stamp, 8);
    bz_buf_append(b, h, HDR);
}

static bool get_hdr(const bz_buf *b, hdr *h)
{
    if (b->len < HDR || memcmp(b->data, "BZ2", 3))
        return false;
    h->flags = (uint8_t)b->data[3];
    memcpy(&h->delta_us, b->data + 4, 8);
    memcpy(&h->expire_us, b->data + 12, 8);
    return true;
}

/* What a load saw in the key before it loaded: nothing (n == 0) or the
 * first bytes (the header) of the value there. */
typedef struct {
    char b[HDR];
    size_t n;
} seen_t;

static void saw(seen_t *sn, int r, const bz_buf *v)
{
    sn->n = r == 0 ? (v->len < HDR ? v->len : HDR) : 0;
    if (sn->n) /* an empty buffer's data may be NULL */
        memcpy(sn->b, v->data, sn->n);
}

/* Stores an entry in the get-or-load format: jittered TTL for values, a
 * short one for "not found"; with sn, only if the key still holds what sn
 * saw. */
static int store_entry(cache *c, rt_ctx *ctx, const char *fk, bool negative, const void *v, size_t n, int64_t ttl,
                       int64_t load_us, const seen_t *sn, bz_error *err)
{
    if (negative)
        ttl = ttl < NEGATIVE_TTL ? ttl : NEGATIVE_TTL;
    else
        ttl = (int64_t)((double)ttl * (0.9 + 0.2 * bz_rand01())); /* ±10% jitter */
    bz_buf stored = BZ_BUF_INIT;
    put_hdr(&stored, negative ? F_NEGATIVE : 0, load_us, bz_wall_us() + ttl / 1000);
    if (!negative)
        bz_buf_append(&stored, v, n);
    bool done = true;
    int r = sn ? c->be->ops->set_if(c->be, ctx, fk, sn->b, sn->n, stored.data, stored.len, ttl, &done, err)
               : c->be->ops->set(c->be, ctx, fk, stored.data, stored.len, ttl, false, NULL, err);
    bz_buf_free(&stored);
    if (r == 0 && done)
        entry_class(c, fk);
    return r;
}

/* A live entry (not a tombstone) whose time has not come. */
static bool live(const hdr *h, int64_t now_us, double early_us)
{
    return !(h->flags & F_TOMBSTONE) && (double)now_us + early_us < (double)h->expire_us;
}

/* A live entry's answer: its value (header stripped) or, for a stored
 * "not found", CACHE_MISS with out emptied.  Counts the hit. */
static int entry_answer(cache *c, bz_buf *out, const hdr *h)
{
    STAT(c, hits);
    if (h->flags & F_NEGATIVE) {
        bz_buf_clear(out);
        return CACHE_MISS;
    }
    bz_buf_consume(out, HDR);
    return 0;
}

int cache_store(cache *c, rt_ctx *ctx, const char *key, const void *v, size_t n, int64_t ttl, bz_error *err)
{
    if (!c->store_entries)
        return 0;
    K(key);
    return store_entry(c, ctx, fk, false, v, n, ttl, 0, NULL, err);
}

typedef struct flight {
    struct flight *next;
    char key[KEYMAX];
    int refs;
    bool done;
    bool stale;         /* invalidated while loading: do not store */
    int result;
    bz_error err;
    bz_buf value;
    rt_waitq waiters;
} flight;

typedef struct {
    cache *c;
    const char *fk;
    int64_t ttl;
    cache_loader load;
    void *arg;
    bool store;
    flight *f;
    seen_t seen;      /* the key before the load: the store's compare */
    int64_t seen_ns;  /* when it was read */
} load_job;

/* Runs the loader and stores its result (leader only). */
static int do_load(load_job *j, rt_ctx *parent, bz_buf *val, bz_error *err)
{
    /* The load serves every waiter: it is not cancelled with the leader's
     * request, only bounded by its deadline. */
    rt_ctx lctx;
    rt_ctx_init_deadline(&lctx, NULL, rt_ctx_deadline(parent));
    int64_t t0 = bz_now_ns();
    bz_buf_clear(val);
    int r = j->load(j->arg, &lctx, val, err);
    int64_t took_us = (bz_now_ns() - t0) / 1000;
    rt_ctx_release(&lctx);
    STAT(j->c, loads);
    if (r < 0 || !j->store)
        return r;
    pthread_mutex_lock(&j->c->flights_lk);
    bool stale = j->f->stale;
    pthread_mutex_unlock(&j->c->flights_lk);
    /* too slow: a tombstone set after our read may have expired since */
    if (stale || bz_now_ns() - j->seen_ns > CACHE_TOMBSTONE_TTL / 2)
        return r;
    bz_error e2;
    if (store_entry(j->c, NULL, j->fk, r == CACHE_MISS, val->data, val->len, j->ttl, took_us, &j->seen, &e2) != 0)
        STAT(j->c, errors); /* the value is still served: degraded, not down */
    return r;
}

int cache_get_or_load(cache *c, rt_ctx *ctx, const char *key, int64_t ttl, cache_loader load, void *arg,
                      bz_buf *out, cache_status *st, bz_error *err)
{
    K(key);
    bool degraded = false;
    seen_t seen;
    seen.n = 0;
    if (c->store_entries) {
        int r = c->be->ops->get(c->be, ctx, fk, out, err);
        if (r == 0) {
            hdr h;
            /* XFetch: expire early with probability rising near expiry */
            if (get_hdr(out, &h) && live(&h, bz_wall_us(), (double)h.delta_us * -log(bz_rand01() + 1e-12))) {
                if (st)
                    *st = CACHE_HIT;
                return entry_answer(c, out, &h);
            }
            saw(&seen, r, out);
        } else if (r < 0) {
            if (r == -ECANCELED || r == -ETIMEDOUT)
                return r;
            STAT(c, errors);
            degraded = true;
        }
    }
    STAT(c, misses);
    /* (a moment after the read: the margin of CACHE_TOMBSTONE_TTL / 2
     * covers it; a clock read on the hit path would not be free) */
    int64_t seen_ns = bz_now_ns();
    /* single flight: the first caller for a key loads, the others wait */
    pthread_mutex_lock(&c->flights_lk);
    flight *f = c->flights;
    while (f && strcmp(f->key, fk))
        f = f->next;
    if (f) {
        f->refs++;
        int r = 0;
        while (!f->done && r == 0) {
            rt_park_reason("cache single-flight wait"); /* for the coroutine dump */
            r = rt_waitq_wait(&f->waiters, &c->flights_lk, ctx, BZ_NO_DEADLINE, NULL);
        }
        int res = r ? r : f->result;
        if (r == 0) {
            bz_buf_clear(out);
            bz_buf_append(out, f->value.data, f->value.len);
            if (err && f->result < 0)
                *err = f->err;
            STAT(c, shared_loads);
        }
        if (--f->refs == 0) {
            bz_buf_free(&f->value);
            free(f);
        }
        pthread_mutex_unlock(&c->flights_lk);
        if (st)
            *st = degraded ? CACHE_DEGRADED : CACHE_SHARED;
        if (r)
            bz_err_set(err, r == -ETIMEDOUT ? BZ_ERR_TIMEOUT : BZ_ERR_CANCELLED, "cache: gave up waiting for a load");
        return res;
    }
    f = calloc(1, sizeof *f);
    if (!f)
        abort();
    strcpy(f->key, fk);
    f->refs = 1;
    f->next = c->flights;
    c->flights = f;
    pthread_mutex_unlock(&c->flights_lk);

    /* A load that finished between our miss and taking the lead has
     * stored its value: look once more before loading again. */
    int r = 1;
    if (c->store_entries && !degraded) {
        int64_t t = bz_now_ns();
        int g = c->be->ops->get(c->be, ctx, fk, out, err);
        hdr h;
        if (g == 0 && get_hdr(out, &h) && live(&h, bz_wall_us(), 0))
            r = entry_answer(c, out, &h);
        else if (g >= 0) {
            saw(&seen, g, out);
            seen_ns = t;
        }
    }
    if (r == 1) {
        load_job j = {c, fk, ttl, load, arg, c->store_entries && !degraded, f, seen, seen_ns};
        r = do_load(&j, ctx, out, err);
    }

    pthread_mutex_lock(&c->flights_lk);
    for (flight **pp = &c->flights; *pp && !f->stale; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    f->done = true;
    f->result = r;
    if (r < 0 && err)
        f->err = *err;
    bz_buf_append(&f->value, out->data, out->len);
    rt_waitq_wake_all(&f->waiters, 0);
    if (--f->refs == 0) {
        bz_buf_free(&f->value);
        free(f);
    }
    pthread_mutex_unlock(&c->flights_lk);
    if (st)
        *st = degraded ? CACHE_DEGRADED : CACHE_LOADED;
    return r;
}

int cache_invalidate(cache *c, rt_ctx *ctx, const char *key, bz_error *err)
{
    if (!c->store_entries)
        return 0;
    K(key);
    /* A load that started before the caller's write may carry the old
     * value: later callers must not join it and it must not be stored. */
    pthread_mutex_lock(&c->flights_lk);
    for (flight **pp = &c->flights; *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->key, fk)) {
            flight *f = *pp;
            *pp = f->next;
            f->stale = true;
            break;
        }
    pthread_mutex_unlock(&c->flights_lk);
    bz_buf t = BZ_BUF_INIT;
    put_hdr(&t, F_TOMBSTONE, 0, bz_wall_us() + CACHE_TOMBSTONE_TTL / 1000);
    int r = c->be->ops->set(c->be, ctx, fk, t.data, t.len, CACHE_TOMBSTONE_TTL, false, NULL, err);
    bz_buf_free(&t);
    if (r == 0)
        entry_class(c, fk);
    return r;
}

/* ---- epoch-guarded sorted sets ---- */

static int stage_of(char *out, const char *fk, int64_t epoch, bz_error *err)
{
    if (snprintf(out, KEYMAX, "%s~%lld", fk, (long long)epoch) >= KEYMAX)
        return bz_err_set(err, BZ_ERR_INVALID, "cache: key too long"), -EINVAL;
    return 0;
}

int cache_zincr_epoch(cache *c, rt_ctx *ctx, const char *key, int64_t epoch, const char *m, int64_t d,
                      int64_t stage_ttl, bz_error *err)
{
    K(key);
    char stage[KEYMAX];
    if (stage_of(stage, fk, epoch, err))
        return -EINVAL;
    return c->be->ops->zincr_epoch(c->be, ctx, fk, stage, epoch, m, d, stage_ttl, err);
}

int cache_zpublish_epoch(cache *c, rt_ctx *ctx, const char *key, int64_t epoch, bool *published, bz_error *err)
{
    K(key);
    char stage[KEYMAX];
    if (stage_of(stage, fk, epoch, err))
        return -EINVAL;
    return c->be->ops->zpublish_epoch(c->be, ctx, fk, stage, epoch, published, err);
}

int cache_zepoch(cache *c, rt_ctx *ctx, const char *key, int64_t *epoch, bz_error *err)
{
    int64_t sc;
    int r = cache_zscore(c, ctx, key, CACHE_ZEPOCH_MEMBER, &sc, err);
    if (r == 0)
        *epoch = sc - CACHE_ZEPOCH_BASE;
    return r;
}

/* ---- leases ---- */

int cache_lease_take(cache *c, rt_ctx *ctx, const char *key, const char *m, int cap, int64_t ttl, bool *taken,
                     bz_error *err)
{
    K(key);
    return c->be->ops->lease_take(c->be, ctx, fk, m, cap, ttl, taken, err);
}

int cache_lease_drop(cache *c, rt_ctx *ctx, const char *key, const char *m, bz_error *err)
{
    K(key);
    return c->be->ops->lease_drop(c->be, ctx, fk, m, err);
}

int cache_lease_count(cache *c, rt_ctx *ctx, const char *key, int64_t *n, bz_error *err)
{
    K(key);
    return c->be->ops->lease_count(c->be, ctx, fk, n, err);
}

/* ---- locks ---- */

static void new_token(char out[33])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    /* A lock's owner token needs to be unique and unguessable, not the
     * kernel's own bytes: the per-thread generator saves a getrandom(2)
     * per lock (issue 18; see base/rand-private.h for why it is safe). */
    bz__rand_key(b, sizeof b);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[32] = '\0';
}

/* prefix then s into out[KEYMAX], as snprintf(out, KEYMAX, "<prefix>%s",
 * s) would (cut, terminated; returns the length it wanted), without its
 * walk over a format: sessions and locks are on the request path. */
static size_t x__key(char *out, const char *prefix, size_t pn, const char *s)
{
    size_t sn = strlen(s), want = pn + sn;
    memcpy(out, prefix, pn);
    if (sn > KEYMAX - 1 - pn)
        sn = KEYMAX - 1 - pn;
    memcpy(out + pn, s, sn);
    out[pn + sn] = '\0';
    return want;
}
#define X__KEY(out, lit, s) x__key(out, lit, sizeof lit - 1, s)

int cache_lock(cache *c, rt_ctx *ctx, const char *name, int64_t ttl, bool wait, char token[33], bz_error *err)
{
    char key[KEYMAX];
    if (X__KEY(key, "lock:", name) >= sizeof key)
        return bz_err_set(err, BZ_ERR_INVALID, "cache: lock name too long"), -EINVAL;
    new_token(token);
    int64_t backoff = 5 * BZ_NS_PER_MS;
    for (;;) {
        bool stored = false;
        int r = cache_set_nx(c, ctx, key, token, 32, ttl, &stored, err);
        if (r)
            return r;
        if (stored)
            return 0;
        if (!wait)
            return CACHE_MISS;
        r = rt_sleep(ctx, backoff / 2 + (int64_t)(bz_rand01() * (double)backoff));
        if (r)
            return bz_err_set(err, r == -ETIMEDOUT ? BZ_ERR_TIMEOUT : BZ_ERR_CANCELLED,
                              "cache: gave up waiting for lock %s", name),
                   r;
        if (backoff < 100 * BZ_NS_PER_MS)
            backoff *= 2;
    }
}

int cache_unlock(cache *c, rt_ctx *ctx, const char *name, const char *token, bool *released, bz_error *err)
{
    char key[KEYMAX];
    X__KEY(key, "lock:", name);
    bool d = false;
    int r = cache_del_if(c, ctx, key, token, strlen(token), &d, err);
    if (released)
        *released = d;
    return r;
}

int cache_lock_extend(cache *c, rt_ctx *ctx, const char *name, const char *token, int64_t ttl, bool *extended,
                      bz_error *err)
{
    char key[KEYMAX];
    X__KEY(key, "lock:", name);
    return cache_extend_if(c, ctx, key, token, strlen(token), ttl, extended, err);
}

/* ---- rate limits: fixed windows aligned to the wall clock ---- */

int cache_rate_allow(cache *c, rt_ctx *ctx, const char *key, int64_t limit, int64_t window_ns, cache_rate *out,
                     bz_error *err)
{
    int64_t now_us = bz_wall_us();
    int64_t win_us = window_ns / 1000;
    if (win_us <= 0)
        win_us = 1;
    int64_t idx = now_us / win_us;
    char k[KEYMAX];
    if (snprintf(k, sizeof k, "rl:%s:%lld", key, (long long)idx) >= (int)sizeof k)
        return bz_err_set(err, BZ_ERR_INVALID, "cache: rate-limit key too long"), -EINVAL;
    int64_t count;
    /* the counter outlives its window a little, never less */
    int r = cache_incr(c, ctx, k, 1, window_ns + BZ_NS_PER_S, &count, err);
    if (r)
        return r;
    out->limit = limit;
    out->allowed = count <= limit;
    out->remaining = count >= limit ? 0 : limit - count;
    out->reset_ns = ((idx + 1) * win_us - now_us) * 1000;
    return 0;
}

/* ---- sessions ---- */

int cache_session_put(cache *c, rt_ctx *ctx, const char *hash, int64_t uid, int64_t ttl, bz_error *err)
{
    char k[KEYMAX], v[24];
    /* the set first: a session that exists is always in its user's set */
    snprintf(k, sizeof k, "sessions:%lld", (long long)uid);
    int r = cache_sadd(c, ctx, k, hash, ttl, NULL, err);
    if (r)
        return r;
    X__KEY(k, "session:", hash);
    size_t n = bz_fmt_i64(v, uid);
    return cache_state_set(c, ctx, k, v, n, ttl, err);
}

int cache_session_get(cache *c, rt_ctx *ctx, const char *hash, int64_t *uid, bz_error *err)
{
    char k[KEYMAX];
    X__KEY(k, "session:", hash);
    bz_buf b = BZ_BUF_INIT;
    int r = cache_state_get(c, ctx, k, &b, err);
    if (r == 0 && !bz_str_to_i64(bz_buf_str(&b), uid))
        r = CACHE_MISS;
    bz_buf_free(&b);
    return r;
}

int cache_session_del(cache *c, rt_ctx *ctx, const char *hash, bz_error *err)
{
    char k[KEYMAX];
    X__KEY(k, "session:", hash);
    return cache_state_del(c, ctx, k, err);
}

int cache_session_end(cache *c, rt_ctx *ctx, int64_t uid, const char *hash, bz_error *err)
{
    int r = cache_session_del(c, ctx, hash, err);
    if (r || uid <= 0)
        return r;
    char k[KEYMAX];
    snprintf(k, sizeof k, "sessions:%lld", (long long)uid);
    return cache_srem(c, ctx, k, hash, err);
}

/* Sessions are ended in rounds of this many (each round reads the set
 * again), at most SESSIONS_ROUNDS rounds: a bounded loop even if logins
 * keep adding to the set meanwhile. */
#define SESSIONS_BATCH 256
#define SESSIONS_ROUNDS 64

int cache_sessions_end_others(cache *c, rt_ctx *ctx, int64_t uid, const char *keep, int *ended, bz_error *err)
{
    char set[KEYMAX];
    snprintf(set, sizeof set, "sessions:%lld", (long long)uid);
    if (ended)
        *ended = 0;
    bz_buf b = BZ_BUF_INIT;
    int r = 0;
    for (int round = 0; r == 0 && round < SESSIONS_ROUNDS; round++) {
        int n = 0;
        r = cache_smembers(c, ctx, set, SESSIONS_BATCH + 1, &b, &n, err);
        int gone = 0;
        const char *m = b.data;
        for (int i = 0; r == 0 && i < n; i++, m += strlen(m) + 1) {
            if (keep && !strcmp(m, keep))
                continue;
            r = cache_session_end(c, ctx, uid, m, err);
            gone++;
        }
        if (ended)
            *ended += gone;
        if (gone == 0)
            break;
    }
    bz_buf_free(&b);
    return r;
}

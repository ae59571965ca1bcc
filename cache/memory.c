/* cache/memory.c — the in-process backend.
 *
 * 64 shards, each a chained hash table under its own mutex, so loop
 * threads rarely contend.  Memory is accounted with malloc_usable_size of
 * every allocation an entry owns (honest: what the allocator really
 * holds).  Expiry is lazy (an expired entry found on access is deleted)
 * and active: every 100 ms a coroutine samples 20 keys that have a TTL,
 * deletes the expired ones, and repeats while more than 25% were expired,
 * for at most 1 ms per cycle — Redis's algorithm.  Over --cache-max-memory
 * a write evicts by sampling 5 keys of a random shard and dropping the
 * policy's choice (approximated LRU/LFU, nearest TTL), or is refused
 * (noeviction).  Keys have an eviction class: cache entries (what
 * cache_set and get-or-load store, and keys marked evictable, such as
 * leaderboards) are the only candidates while any exists; state
 * (sessions, locks, idempotency locks, counters, versions) is evicted only
 * when no entry is left.  So a client that multiplies entries (distinct
 * list pages, currencies) can push out other entries but never a
 * session or a lock. */
#include "cache/cache-private.h"

#include <bazaar/rand.h>

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NSHARDS 64
#define SAMPLE 5
#define EXPIRE_SAMPLE 20

enum { T_STR = 0, T_ZSET = 1, T_SET = 2 };

/* Eviction classes: state (sessions, locks, counters, versions: never
 * evicted while an entry is left) and entries (what cache_set and
 * get-or-load store, and keys marked evictable, such as leaderboards:
 * things a client can multiply). */
enum { C_STATE = 0, C_ENTRY = 1 };

typedef struct sset {
    size_t n, cap;
    char **m;
} sset;

typedef struct zset {
    size_t n, cap;
    cache_zentry *m; /* sorted as ZREVRANGE: score descending, then member descending */
} zset;

typedef struct mentry {
    struct mentry *next;
    uint64_t hash;
    int64_t expire;  /* bz_now_ns() deadline, 0 = never */
    int64_t atime;   /* last access, for LRU */
    uint8_t lfu;     /* logarithmic access counter, for LFU */
    uint8_t type;
    uint8_t cls;     /* C_STATE or C_ENTRY */
    size_t vlen;
    union {
        char *val;
        zset *z;
        sset *set;
    } u;
    char key[];
} mentry;

typedef struct shard {
    pthread_mutex_t lk;
    mentry **b;
    size_t nb, n;
} shard;

typedef struct mem {
    cache_be base;
    shard sh[NSHARDS];
    atomic_llong used;
    atomic_llong entries;  /* keys of class C_ENTRY */
    int64_t max;
    cache_eviction policy;
    rt_ctx stop;
    atomic_bool expiring;
} mem;

static uint64_t hash_key(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static int64_t entry_size(const mentry *e)
{
    int64_t n = (int64_t)malloc_usable_size((void *)e);
    if (e->type == T_STR)
        n += e->u.val ? (int64_t)malloc_usable_size(e->u.val) : 0;
    else if (e->type == T_SET && e->u.set) {
        n += (int64_t)malloc_usable_size(e->u.set) + (e->u.set->m ? (int64_t)malloc_usable_size(e->u.set->m) : 0);
        for (size_t i = 0; i < e->u.set->n; i++)
            n += (int64_t)malloc_usable_size(e->u.set->m[i]);
    } else if (e->type == T_ZSET && e->u.z)
        n += (int64_t)malloc_usable_size(e->u.z) + (e->u.z->m ? (int64_t)malloc_usable_size(e->u.z->m) : 0);
    return n;
}

/* Frees what the entry's value owns (not the entry). */
static void value_free(mentry *e)
{
    if (e->type == T_STR) {
        free(e->u.val);
    } else if (e->type == T_SET && e->u.set) {
        for (size_t i = 0; i < e->u.set->n; i++)
            free(e->u.set->m[i]);
        free(e->u.set->m);
        free(e->u.set);
    } else if (e->type == T_ZSET && e->u.z) {
        free(e->u.z->m);
        free(e->u.z);
    }
    e->u.val = NULL;
}

static void entry_free(mentry *e)
{
    value_free(e);
    free(e);
}

static shard *shard_of(mem *m, uint64_t h) { return &m->sh[h % NSHARDS]; }

/* Caller holds the shard lock.  Returns the link that points at the entry
 * for key (or at NULL). */
static mentry **find(shard *s, const char *key, size_t kn, uint64_t h)
{
    if (!s->nb)
        return NULL;
    mentry **pp = &s->b[(h / NSHARDS) % s->nb];
    while (*pp && !((*pp)->hash == h && !strcmp((*pp)->key, key)))
        pp = &(*pp)->next;
    (void)kn;
    return pp;
}

static void unlink_entry(mem *m, shard *s, mentry **pp)
{
    mentry *e = *pp;
    *pp = e->next;
    s->n--;
    atomic_fetch_sub(&m->used, entry_size(e));
    if (e->cls == C_ENTRY)
        atomic_fetch_sub(&m->entries, 1);
    entry_free(e);
}

/* Looks key up, deleting it if expired.  Caller holds the lock. */
static mentry *lookup(mem *m, shard *s, const char *key, uint64_t h, mentry ***link)
{
    mentry **pp = find(s, key, 0, h);
    if (!pp || !*pp)
        return NULL;
    mentry *e = *pp;
    if (e->expire && e->expire <= bz_now_ns()) {
        unlink_entry(m, s, pp);
        if (m->base.stats)
            __atomic_fetch_add(&m->base.stats->expired, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    if (link)
        *link = pp;
    return e;
}

static void touch(mentry *e)
{
    e->atime = bz_now_ns();
    /* Redis's logarithmic counter: ever less likely to grow as it grows. */
    if (e->lfu < 255) {
        double p = 1.0 / ((double)(e->lfu > 5 ? e->lfu - 5 : 0) * 10.0 + 1.0);
        if ((double)(bz_rand64() % 1000000) / 1e6 < p)
            e->lfu++;
    }
}

static void grow(shard *s)
{
    size_t nb = s->nb ? s->nb * 2 : 16;
    mentry **b = calloc(nb, sizeof *b);
    if (!b)
        abort();
    for (size_t i = 0; i < s->nb; i++) {
        mentry *e = s->b[i];
        while (e) {
            mentry *next = e->next;
            size_t k = (e->hash / NSHARDS) % nb;
            e->next = b[k];
            b[k] = e;
            e = next;
        }
    }
    free(s->b);
    s->b = b;
    s->nb = nb;
}

static mentry *insert(mem *m, shard *s, const char *key, uint64_t h, int type)
{
    if (s->n >= s->nb) /* load factor ≤ 1: a hit is ~one pointer chase */
        grow(s);
    size_t kn = strlen(key);
    mentry *e = calloc(1, sizeof *e + kn + 1);
    if (!e)
        abort();
    memcpy(e->key, key, kn + 1);
    e->hash = h;
    e->type = (uint8_t)type;
    e->lfu = 5; /* new keys start warm, as in Redis */
    e->atime = bz_now_ns();
    size_t k = (h / NSHARDS) % s->nb;
    e->next = s->b[k];
    s->b[k] = e;
    s->n++;
    atomic_fetch_add(&m->used, entry_size(e));
    return e;
}

/* ---- eviction ---- */

static int nomem(bz_error *err)
{
    bz_err_set(err, BZ_ERR_NOMEM, "cache is full (--cache-max-memory reached, policy noeviction)");
    return -ENOMEM;
}

/* The shard an eviction samples, returned locked: the fullest of three
 * picked at random.  A shard picked uniformly drains as evictions hit it,
 * until a sample from it is only the few keys it has left, however hot: with
 * 64 shards of ~7 entries, a flood of one-read keys then took up to 12 of 50
 * frequently read ones under LFU.  Three choices keep the shards level, so a
 * sample comes from a fair share of the keyspace (at most 9 lost in 2,700
 * runs of that flood).  Off the hot path: only writes over the cap evict. */
static shard *fuller_shard(mem *m)
{
    shard *best = NULL;
    size_t most = 0;
    for (int k = 0; k < 3; k++) {
        shard *s = &m->sh[bz_rand64() % NSHARDS];
        pthread_mutex_lock(&s->lk);
        size_t n = s->n;
        pthread_mutex_unlock(&s->lk);
        if (!best || n > most)
            best = s, most = n;
    }
    pthread_mutex_lock(&best->lk);
    return best;
}

/* Evicts until under the cap or nothing can go.  No lock held on entry. */
static void evict(mem *m)
{
    if (m->policy == CACHE_EVICT_NOEVICTION)
        return; /* writes are refused before they happen instead */
    for (int rounds = 0; m->max && atomic_load(&m->used) > m->max && rounds < 10000; rounds++) {
        /* Entries go first: while any is left, state is never sampled. */
        bool entries_only = atomic_load(&m->entries) > 0;
        shard *s = fuller_shard(m);
        mentry **best = NULL;
        int seen = 0;
        if (s->n) {
            for (int tries = 0; tries < 64 && seen < SAMPLE; tries++) {
                mentry **pp = &s->b[bz_rand64() % s->nb];
                for (; *pp && seen < SAMPLE; pp = &(*pp)->next) {
                    mentry *e = *pp;
                    if (m->policy == CACHE_EVICT_VOLATILE_TTL && !e->expire)
                        continue;
                    if (entries_only && e->cls != C_ENTRY)
                        continue;
                    seen++;
                    if (!best) {
                        best = pp;
                        continue;
                    }
                    mentry *b = *best;
                    bool better = m->policy == CACHE_EVICT_ALLKEYS_LFU ? e->lfu < b->lfu
                                  : m->policy == CACHE_EVICT_VOLATILE_TTL ? e->expire < b->expire
                                                                      : e->atime < b->atime;
                    if (better)
                        best = pp;
                }
            }
        }
        if (best) {
            unlink_entry(m, s, best);
            if (m->base.stats)
                __atomic_fetch_add(&m->base.stats->evictions, 1, __ATOMIC_RELAXED);
        }
        pthread_mutex_unlock(&s->lk);
        if (!best && m->policy == CACHE_EVICT_VOLATILE_TTL && !entries_only) {
            /* no volatile key in this shard; give up after a full sweep */
            bool any = false;
            for (int i = 0; i < NSHARDS && !any; i++) {
                pthread_mutex_lock(&m->sh[i].lk);
                for (size_t k = 0; k < m->sh[i].nb && !any; k++)
                    for (mentry *e = m->sh[i].b[k]; e && !any; e = e->next)
                        any = e->expire != 0;
                pthread_mutex_unlock(&m->sh[i].lk);
            }
            if (!any)
                return;
        }
    }
}

/* Before a write: refuse (noeviction) if already over the cap. */
static bool full(mem *m) { return m->max && m->policy == CACHE_EVICT_NOEVICTION && atomic_load(&m->used) >= m->max; }

/* ---- active expiry ---- */

static void expire_cycle(mem *m)
{
    int64_t start = bz_now_ns();
    for (int i = 0; i < NSHARDS; i++) {
        shard *s = &m->sh[i];
        for (;;) {
            int sampled = 0, expired = 0;
            pthread_mutex_lock(&s->lk);
            int64_t now = bz_now_ns();
            for (int tries = 0; s->n && tries < 40 && sampled < EXPIRE_SAMPLE; tries++) {
                mentry **pp = &s->b[bz_rand64() % s->nb];
                while (*pp && sampled < EXPIRE_SAMPLE) {
                    if (!(*pp)->expire) {
                        pp = &(*pp)->next;
                        continue;
                    }
                    sampled++;
                    if ((*pp)->expire <= now) {
                        unlink_entry(m, s, pp);
                        expired++;
                    } else {
                        pp = &(*pp)->next;
                    }
                }
            }
            pthread_mutex_unlock(&s->lk);
            if (expired && m->base.stats)
                __atomic_fetch_add(&m->base.stats->expired, expired, __ATOMIC_RELAXED);
            if (sampled == 0 || expired * 4 <= sampled || bz_now_ns() - start > BZ_NS_PER_MS)
                break;
        }
        if (bz_now_ns() - start > BZ_NS_PER_MS)
            break;
    }
}

static void expirer(void *p)
{
    mem *m = p;
    while (rt_sleep(&m->stop, 100 * BZ_NS_PER_MS) == 0)
        expire_cycle(m);
    atomic_store(&m->expiring, false);
}

static void start_expirer(mem *m)
{
    bool no = false;
    if (rt_loop_current() && atomic_compare_exchange_strong(&m->expiring, &no, true))
        rt_go(expirer, m);
}

/* ---- operations ---- */

#define LOCKED(m, key, h, s)                                                                                     \
    uint64_t h = hash_key(key, strlen(key));                                                                   \
    shard *s = shard_of(m, h);                                                                                 \
    start_expirer(m);                                                                                          \
    pthread_mutex_lock(&s->lk)

static int m_ping(cache_be *b, rt_ctx *ctx, bz_error *err) { return 0; }

static int m_get(cache_be *b, rt_ctx *ctx, const char *key, bz_buf *out, bz_error *err)
{
    mem *m = (mem *)b;
    LOCKED(m, key, h, s);
    mentry *e = lookup(m, s, key, h, NULL);
    if (!e || e->type != T_STR) {
        pthread_mutex_unlock(&s->lk);
        return CACHE_MISS;
    }
    touch(e);
    bz_buf_clear(out);
    bz_buf_append(out, e->u.val, e->vlen);
    pthread_mutex_unlock(&s->lk);
    return 0;
}

static char *copy_of(const void *v, size_t n)
{
    char *copy = malloc(n ? n : 1);
    if (!copy)
        abort();
    memcpy(copy, v, n);
    return copy;
}

/* Makes key (entry e, or a new one when NULL) the string copy (owned from
 * now on).  Caller holds the shard lock. */
static void put_str(mem *m, shard *s, const char *key, uint64_t h, mentry *e, char *copy, size_t n, int64_t ttl)
{
    if (!e)
        e = insert(m, s, key, h, T_STR);
    atomic_fetch_sub(&m->used, entry_size(e));
    value_free(e);
    e->type = T_STR;
    e->u.val = copy;
    e->vlen = n;
    e->expire = ttl > 0 ? bz_now_ns() + ttl : 0;
    touch(e);
    atomic_fetch_add(&m->used, entry_size(e));
}

/* Stores the string v at key: always, or (!always) only if key is absent
 * (elen == 0) or its value begins with expect — SET, SET NX and the
 * compare-and-set are this one rule. */
static int put_when(mem *m, const char *key, const void *v, size_t n, int64_t ttl, bool always, const void *expect,
                    size_t elen, bool *stored, bz_error *err)
{
    if (full(m))
        return nomem(err);
    char *copy = copy_of(v, n);
    LOCKED(m, key, h, s);
    mentry *e = lookup(m, s, key, h, NULL);
    bool ok = always || (elen == 0 ? !e
                                   : e && e->type == T_STR && e->vlen >= elen && !memcmp(e->u.val, expect, elen));
    if (ok)
        put_str(m, s, key, h, e, copy, n, ttl);
    pthread_mutex_unlock(&s->lk);
    if (stored)
        *stored = ok;
    if (!ok)
        free(copy);
    else
        evict(m);
    return 0;
}

static int m_set(cache_be *b, rt_ctx *ctx, const char *key, const void *v, size_t n, int64_t ttl, bool nx,
                 bool *stored, bz_error *err)
{
    return put_when((mem *)b, key, v, n, ttl, !nx, NULL, 0, stored, err);
}

static int m_set_if(cache_be *b, rt_ctx *ctx, const char *key, const void *expect, size_t elen, const void *v,
                    size_t n, int64_t ttl, bool *stored, bz_error *err)
{
    return put_when((mem *)b, key, v, n, ttl, false, expect, elen, stored, err);
}

static int m_del(cache_be *b, rt_ctx *ctx, const char *key, bz_error *err)
{
    mem *m = (mem *)b;
    LOCKED(m, key, h, s);
    mentry **pp;
    if (lookup(m, s, key, h, &pp))
        unlink_entry(m, s, pp);
    pthread_mutex_unlock(&s->lk);
    return 0;
}

static int m_del_if(cache_be *b, rt_ctx *ctx, const char *key, const void *t, size_t n, bool *done, bz_error *err)
{
    mem *m = (mem *)b;
    LOCKED(m, key, h, s);
    mentry **pp;
    mentry *e = lookup(m, s, key, h, &pp);
    *done = e && e->type == T_STR && e->vlen == n && !memcmp(e->u.val, t, n);
    if (*done)
        unlink_entry(m, s, pp);
    pthread_mutex_unlock(&s->lk);
    return 0;
}

static int m_extend_if(cache_be *b, rt_ctx *ctx, const char *key, const void *t, size_t n, int64_t ttl, bool *done,
                       bz_error *err)
{
    mem *m = (mem *)b;
    LOCKED(m, key, h, s);
    mentry *e = lookup(m, s, key, h, NULL);
    *done = e && e->type == T_STR && e->vlen == n && !memcmp(e->u.val, t, n);
    if (*done)
        e->expire = ttl > 0 ? bz_now_ns() + ttl : 0;
    pthread_mutex_unlock(&s->lk);
    return 0;
}

static int m_incr(cache_be *b, rt_ctx *ctx, const char *key, int64_t delta, int64_t ttl, int64_t *v, bz_error *err)
{
    mem *m = (mem *)b;
    if (full(m))
        return nomem(err);
    LOCKED(m, key, h, s);
    mentry *e = lookup(m, s, key, h, NULL);
    int64_t cur = 0;
    if (e) {
        if (e->type != T_STR) {
            pthread_mutex_unlock(&s->lk);
            return bz_err_set(err, BZ_ERR_INVALID, "cache: %s is not a counter", key), -EINVAL;
        }
        bz_str sv = bz_str_make(e->u.val, e->vlen);
        if (!bz_str_to_i64(sv, &cur)) {
            pthread_mutex_unlock(&s->lk);
            return bz_err_set(err, BZ_ERR_INVALID, "cache: %s is not an integer", key), -EINVAL;
        }
    } else {
        e = insert(m, s, key, h, T_STR);
        e->expire = ttl > 0 ? bz_now_ns() + ttl : 0;
    }
    cur += delta;
    char num[24];
    size_t nn = bz_fmt_i64(num, cur);
    atomic_fetch_sub(&m->used, entry_size(e));
    char *nv = realloc(e->u.val, nn);
    if (!nv)
        abort();
    memcpy(nv, num, nn);
    e->u.val = nv;
    e->vlen = nn;
    touch(e);
    atomic_fetch_add(&m->used, entry_size(e));
    pthread_mutex_unlock(&s->lk);
    *v = cur;
    evict(m);
    return 0;
}

static int m_ttl(cache_be *b, rt_ctx *ctx, const char *key, int64_t *ttl, bz_error *err)
{
    mem *m = (mem *)b;
    LOCKED(m, key, h, s);
    mentry *e = lookup(m, s, key, h, NULL);
    int r = e ? 0 : CACHE_MISS;
    if (e)
        *ttl = e->expire ? e->expire - bz_now_ns() : -1;
    pthread_mutex_unlock(&s->lk);
    return r;
}

/* ---- sorted sets: a sorted array; fine for leaderboards of ~10^4 ---- */

static int zcmp(const cache_zentry *a, const cache_zentry *b)
{
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return strcmp(b->member, a->member); /* ties as ZREVRANGE orders them */
}

static ptrdiff_t zfind(zset *z, const char *member)
{
    for (size_t i = 0; i < z->n; i++)
        if (!strcmp(z->m[i].member, member))
            return (ptrdiff_t)i;
    return -1;
}

/* Adds d to member's score (add) or sets it to d, adding the member if
 * missing, and moves it to its place; returns the new score. */
static int64_t zupdate(zset *z, const char *member, int64_t d, bool add)
{
    ptrdiff_t i = zfind(z, member);
    if (i < 0) {
        if (z->n == z->cap) {
            z->cap = z->cap ? z->cap * 2 : 8;
            z->m = realloc(z->m, z->cap * sizeof *z->m);
            if (!z->m)
                abort();
        }
        i = (ptrdiff_t)z->n++;
        memset(&z->m[i], 0, sizeof z->m[i]);
        strcpy(z->m[i].member, member);
    }
    z->m[i].score = add ? z->m[i].score + d : d;
    cache_zentry x = z->m[i];
    while (i > 0 && zcmp(&x, &z->m[i - 1]) < 0) {
        z->m[i] = z->m[i - 1];
        i--;
    }
    while ((size_t)i + 1 < z->n && zcmp(&x, &z->m[i + 1]) > 0) {
        z->m[i] = z->m[i + 1];
        i++;
    }
    z->m[i] = x;
    return x.score;
}

/* The sorted set at key for a write: *out the entry (made, empty, when
 * missing), or an error when key holds another type.  Caller holds the
 * shard lock (and releases it on error). */
static int zopen(mem *m, shard *s, const char *key, uint64_t h, mentry **out, bz_error *err)
{
    mentry *e = lookup(m, s, key, h, NULL);
    if (e && e->type != T_ZSET)
        return bz_err_set(err, BZ_ERR_INVALID, "cache: %s is not a sorted set", key), -EINVAL;
    if (!e) {
        e = insert(m, s, key, h, T_ZSET);
        e->u.z = calloc(1, sizeof(zset));
        if (!e->u.z)
            abort();
    }
    *out = e;
    return 0;
}

static int m_zincr(cache_be *b, rt_ctx *ctx, const char *key, const char *member, int64_t d, int64_t *score,
                   bz_error *err)
{
    mem *m = (mem *)b;
    if (strlen(member) >= sizeof(((cache_zentry *)0)->member))
        return bz_err_set(err, BZ_ERR_INVALID, "cache: sorted-set member too long"), -EINVAL;
    if (full(m))
        return nomem(err);
    LOCKED(m, key, h, s);
    mentry *e;
    if (zopen(m, s, key, h, &e, err)) {
        pthread_mutex_unlock(&s->lk);
        return -EINVAL;
    }
    atomic_fetch_sub(&m->used, entry_size(e));
    *score = zupdate(e->u.z, member, d, true);
    touch(e);
    atomic_fetch_add(&m->used, entry_size(e));
    pthread_mutex_unlock(&s->lk);
    evict(m);
    return 0;
}

static zset *zget(mem *m, shard *s, const char *key, uint64_t h)
{
    mentry *e = lookup(m, s, key, h, NULL);
    return e && e->type == T_ZSET ? e->u.z : NULL;
}

static int m_ztop(cache_be *b, rt_ctx *ctx, const char *key, int n, cache_zentry *out, int *count, bz_error *err)
{
    mem *m = (mem *)b;
    LOCKED(m, key, h, s);
    zset *z = zget(m, s, key, h);
    int k = 0;
    for (; z && k < n && (size_t)k < z->n; k++)
        out[k] = z->m[k];
    *count = k;
    pthread_mutex_unlock(&s->lk);
    return 0;
}

/* Finds member in the sorted set at key: its score and its rank. */
static int zlookup(mem *m, const char *key, const char *member, int64_t *score, int64_t *rank)
{
    LOCKED(m, key, h, s);
    zset *z = zget(m, s, key, h);
    ptrdiff_t i = z ? zfind(z, member) : -1;
    if (i >= 0) {
        if (score)
            *score = z->m[i].score;
        if (rank)
            *rank = i;
    }
    pthread_mutex_unlock(&s->lk);
    return i >= 0 ? 0 : CACHE_MISS;
}

static int m_zscore(cache_be *b, rt_ctx *ctx, const char *key, const char *member, int64_t *score, bz_error *err)
{
    return zlookup((mem *)b, key, member, score, NULL);
}

static int m_zrank(cache_be *b, rt_ctx *ctx, const char *key, const char *member, int64_t *rank, bz_error *err)
{
    return zlookup((mem *)b, key, member, NULL, rank);
}

static int m_zcard(cache_be *b, rt_ctx *ctx, const char *key, int64_t *n, bz_error *err)
{
    mem *m = (mem *)b;
    LOCKED(m, key, h, s);
    zset *z = zget(m, s, key, h);
    *n = z ? (int64_t)z->n : 0;
    pthread_mutex_unlock(&s->lk);
    return 0;
}

/* ---- leases: a sorted set scored by expiry (wall ms), as on Redis ---- */

static int64_t wall_ms(void) { return bz_wall_us() / 1000; }

/* Expired members sort last (lowest expiry): drop them. */
static void lease_prune(zset *z, int64_t now_ms)
{
    while (z->n && z->m[z->n - 1].score <= now_ms)
        z->n--;
}

static int m_lease_take(cache_be *b, rt_ctx *ctx, const char *key, const char *member, int cap, int64_t ttl,
                        bool *taken, bz_error *err)
{
    mem *m = (mem *)b;
    *taken = false;
    if (strlen(member) >= sizeof(((cache_zentry *)0)->member))
        return bz_err_set(err, BZ_ERR_INVALID, "cache: lease member too long"), -EINVAL;
    if (full(m))
        return nomem(err);
    LOCKED(m, key, h, s);
    mentry *e = lookup(m, s, key, h, NULL);
    if (e && e->type != T_ZSET) {
        pthread_mutex_unlock(&s->lk);
        return bz_err_set(err, BZ_ERR_INVALID, "cache: %s is not a lease set", key), -EINVAL;
    }
    int64_t now = wall_ms();
    if (e)
        lease_prune(e->u.z, now);
    *taken = cap <= 0 || !e || zfind(e->u.z, member) >= 0 || e->u.z->n < (size_t)cap;
    if (*taken) {
        zopen(m, s, key, h, &e, err); /* a sorted set or none: checked above */
        atomic_fetch_sub(&m->used, entry_size(e));
        zupdate(e->u.z, member, now + ttl / BZ_NS_PER_MS, false);
        e->expire = bz_now_ns() + ttl;
        touch(e);
        atomic_fetch_add(&m->used, entry_size(e));
    }
    pthread_mutex_unlock(&s->lk);
    if (*taken)
        evict(m);
    return 0;
}

static int m_lease_drop(cache_be *b, rt_ctx *ctx, const char *key, const char *member, bz_error *err)
{
    mem *m = (mem *)b;
    LOCKED(m, key, h, s);
    zset *z = zget(m, s, key, h);
    ptrdiff_t i = z ? zfind(z, member) : -1;
    if (i >= 0) {
        memmove(&z->m[i], &z->m[i + 1], (z->n - (size_t)i - 1) * sizeof *z->m);
        z->n--;
    }
    pthread_mutex_unlock(&s->lk);
    return 0;
}

static int m_lease_count(cache_be *b, rt_ctx *ctx, const char *key, int64_t *n, bz_error *err)
{
    mem *m = (mem *)b;
    LOCKED(m, key, h, s);
    zset *z = zget(m, s, key, h);
    if (z)
        lease_prune(z, wall_ms());
    *n = z ? (int64_t)z->n : 0;
    pthread_mutex_unlock(&s->lk);
    return 0;
}

/* ---- epoch-guarded sorted sets (cache.h): two keys, so both shards are
 * locked (in address order; once if they are the same) ---- */

typedef struct {
    uint64_t h;
    shard *s;
} keyref;

static void lock2(mem *m, const char *k1, const char *k2, keyref *a, keyref *b)
{
    a->h = hash_key(k1, strlen(k1));
    b->h = hash_key(k2, strlen(k2));
    a->s = shard_of(m, a->h);
    b->s = shard_of(m, b->h);
    start_expirer(m);
    shard *first = a->s < b->s ? a->s : b->s, *second = a->s < b->s ? b->s : a->s;
    pthread_mutex_lock(&first->lk);
    if (second != first)
        pthread_mutex_lock(&second->lk);
}

static void unlock2(keyref *a, keyref *b)
{
    pthread_mutex_unlock(&a->s->lk);
    if (b->s != a->s)
        pthread_mutex_unlock(&b->s->lk);
}

/* key's epoch marker: true with *epoch when key is a sorted set with one. */
static bool zepoch_of(mem *m, keyref *k, const char *key, int64_t *epoch)
{
    zset *z = zget(m, k->s, key, k->h);
    ptrdiff_t i = z ? zfind(z, CACHE_ZEPOCH_MEMBER) : -1;
    if (i >= 0)
        *epoch = z->m[i].score - CACHE_ZEPOCH_BASE;
    return i >= 0;
}

static void zdel(mem *m, keyref *k, const char *key)
{
    mentry **pp;
    if (lookup(m, k->s, key, k->h, &pp))
        unlink_entry(m, k->s, pp);
}

static int m_zincr_epoch(cache_be *b, rt_ctx *ctx, const char *key, const char *stage, int64_t epoch,
                         const char *member, int64_t d, int64_t ttl, bz_error *err)
{
    mem *m = (mem *)b;
    if (strlen(member) >= sizeof(((cache_zentry *)0)->member))
        return bz_err_set(err, BZ_ERR_INVALID, "cache: sorted-set member too long"), -EINVAL;
    if (full(m))
        return nomem(err);
    keyref kk, ks;
    lock2(m, key, stage, &kk, &ks);
    int64_t at;
    bool has = zepoch_of(m, &kk, key, &at);
    if (has && at > epoch) {
        unlock2(&kk, &ks);
        return 0;
    }
    if (has && at < epoch) {
        zdel(m, &kk, key);
        has = false;
    }
    const char *target = has ? key : stage;
    keyref *t = has ? &kk : &ks;
    mentry *e;
    if (zopen(m, t->s, target, t->h, &e, err)) {
        unlock2(&kk, &ks);
        return -EINVAL;
    }
    atomic_fetch_sub(&m->used, entry_size(e));
    zupdate(e->u.z, member, d, true);
    if (!has)
        e->expire = bz_now_ns() + ttl;
    touch(e);
    atomic_fetch_add(&m->used, entry_size(e));
    unlock2(&kk, &ks);
    evict(m);
    return 0;
}

static int m_zpublish_epoch(cache_be *b, rt_ctx *ctx, const char *key, const char *stage, int64_t epoch,
                            bool *published, bz_error *err)
{
    mem *m = (mem *)b;
    keyref kk, ks;
    lock2(m, key, stage, &kk, &ks);
    int64_t at;
    *published = !zepoch_of(m, &kk, key, &at) || at < epoch;
    if (!*published) {
        zdel(m, &ks, stage);
        unlock2(&kk, &ks);
        return 0;
    }
    /* the staging set's array moves to key (or key starts empty) */
    zset *z = NULL;
    mentry **sp;
    mentry *se = lookup(m, ks.s, stage, ks.h, &sp);
    if (se && se->type == T_ZSET) {
        atomic_fetch_sub(&m->used, entry_size(se));
        z = se->u.z;
        se->u.z = NULL;
        atomic_fetch_add(&m->used, entry_size(se));
        unlink_entry(m, ks.s, sp);
    }
    if (!z) {
        z = calloc(1, sizeof(zset));
        if (!z)
            abort();
    }
    mentry *e = lookup(m, kk.s, key, kk.h, NULL);
    if (!e)
        e = insert(m, kk.s, key, kk.h, T_ZSET);
    atomic_fetch_sub(&m->used, entry_size(e));
    value_free(e);
    e->type = T_ZSET;
    e->u.z = z;
    e->expire = 0;
    zupdate(z, CACHE_ZEPOCH_MEMBER, cache__zepoch_score(epoch), false);
    touch(e);
    atomic_fetch_add(&m->used, entry_size(e));
    unlock2(&kk, &ks);
    evict(m);
    return 0;
}

/* ---- sets: an unsorted array; meant for small sets (a user's sessions,
 * the page keys of a user's order lists) ---- */

static int m_sadd(cache_be *b, rt_ctx *ctx, const char *key, const char *member, int64_t ttl, int64_t *card,
                  bz_error *err)
{
    mem *m = (mem *)b;
    if (full(m))
        return nomem(err);
    char *copy = strdup(member);
    if (!copy)
        abort();
    LOCKED(m, key, h, s);
    mentry *e = lookup(m, s, key, h, NULL);
    if (e && e->type != T_SET) {
        pthread_mutex_unlock(&s->lk);
        free(copy);
        return bz_err_set(err, BZ_ERR_INVALID, "cache: %s is not a set", key), -EINVAL;
    }
    if (!e) {
        e = insert(m, s, key, h, T_SET);
        e->u.set = calloc(1, sizeof(sset));
        if (!e->u.set)
            abort();
    }
    atomic_fetch_sub(&m->used, entry_size(e));
    sset *z = e->u.set;
    size_t i = 0;
    while (i < z->n && strcmp(z->m[i], member))
        i++;
    if (i < z->n) {
        free(copy);
    } else {
        if (z->n == z->cap) {
            z->cap = z->cap ? z->cap * 2 : 4;
            z->m = realloc(z->m, z->cap * sizeof *z->m);
            if (!z->m)
                abort();
        }
        z->m[z->n++] = copy;
    }
    if (ttl > 0)
        e->expire = bz_now_ns() + ttl;
    if (card)
        *card = (int64_t)z->n;
    touch(e);
    atomic_fetch_add(&m->used, entry_size(e));
    pthread_mutex_unlock(&s->lk);
    evict(m);
    return 0;
}

static int m_srem(cache_be *b, rt_ctx *ctx, const char *key, const char *member, bz_error *err)
{
    mem *m = (mem *)b;
    LOCKED(m, key, h, s);
    mentry **pp;
    mentry *e = lookup(m, s, key, h, &pp);
    if (e && e->type == T_SET) {
        sset *z = e->u.set;
        for (size_t i = 0; i < z->n; i++)
            if (!strcmp(z->m[i], member)) {
                atomic_fetch_sub(&m->used, entry_size(e));
                free(z->m[i]);
                z->m[i] = z->m[--z->n];
                atomic_fetch_add(&m->used, entry_size(e));
                break;
            }
        if (z->n == 0) /* as Redis: an empty set is no key */
            unlink_entry(m, s, pp);
    }
    pthread_mutex_unlock(&s->lk);
    return 0;
}

static int m_smembers(cache_be *b, rt_ctx *ctx, const char *key, int max, bz_buf *out, int *n, bz_error *err)
{
    mem *m = (mem *)b;
    *n = 0;
    bz_buf_clear(out);
    LOCKED(m, key, h, s);
    mentry *e = lookup(m, s, key, h, NULL);
    if (e && e->type == T_SET)
        for (size_t i = 0; i < e->u.set->n && *n < max; i++) {
            bz_buf_append(out, e->u.set->m[i], strlen(e->u.set->m[i]) + 1);
            (*n)++;
        }
    pthread_mutex_unlock(&s->lk);
    return 0;
}

static void m_evictable(cache_be *b, const char *key)
{
    mem *m = (mem *)b;
    LOCKED(m, key, h, s);
    mentry *e = lookup(m, s, key, h, NULL);
    if (e && e->cls != C_ENTRY) {
        e->cls = C_ENTRY;
        atomic_fetch_add(&m->entries, 1);
    }
    pthread_mutex_unlock(&s->lk);
}

static int m_publish(cache_be *b, rt_ctx *ctx, const char *channel, const void *msg, size_t n, bz_error *err)
{
    cache__hub_deliver(b->hub, channel, msg, n);
    return 0;
}

static int m_sub_first(cache_be *b, rt_ctx *ctx, const char *channel, bz_error *err) { return 0; }
static void m_sub_last(cache_be *b, const char *channel) {}

static void m_close(cache_be *b)
{
    mem *m = (mem *)b;
    if (atomic_load(&m->expiring)) {
        rt_ctx_cancel(&m->stop);
        while (atomic_load(&m->expiring))
            rt_sleep(NULL, BZ_NS_PER_MS);
    }
    rt_ctx_release(&m->stop);
    for (int i = 0; i < NSHARDS; i++) {
        shard *s = &m->sh[i];
        for (size_t k = 0; k < s->nb; k++) {
            mentry *e = s->b[k];
            while (e) {
                mentry *next = e->next;
                entry_free(e);
                e = next;
            }
        }
        free(s->b);
        pthread_mutex_destroy(&s->lk);
    }
    free(m);
}

static const cache_be_ops ops = {
    .ping = m_ping, .get = m_get, .set = m_set, .del = m_del, .del_if = m_del_if, .extend_if = m_extend_if,
    .incr = m_incr, .ttl = m_ttl, .zincr = m_zincr, .ztop = m_ztop, .zscore = m_zscore, .zrank = m_zrank,
    .zcard = m_zcard, .sadd = m_sadd, .srem = m_srem, .smembers = m_smembers, .evictable = m_evictable,
    .set_if = m_set_if, .lease_take = m_lease_take, .lease_drop = m_lease_drop, .lease_count = m_lease_count,
    .zincr_epoch = m_zincr_epoch, .zpublish_epoch = m_zpublish_epoch,
    .publish = m_publish, .sub_first = m_sub_first, .sub_last = m_sub_last, .close = m_close,
};

cache_be *cache__memory_new(const cache_opts *o, bz_error *err)
{
    mem *m = calloc(1, sizeof *m);
    if (!m)
        abort();
    m->base.ops = &ops;
    m->max = o ? o->max_memory : 0;
    m->policy = o ? o->eviction : CACHE_EVICT_ALLKEYS_LRU;
    for (int i = 0; i < NSHARDS; i++)
        pthread_mutex_init(&m->sh[i].lk, NULL);
    rt_ctx_init(&m->stop, NULL);
    return &m->base;
}

/* Bytes accounted, cap, and keys (live or not yet expired): for
 * cache_get_stats and tests. */
int64_t cache__memory_used(cache_be *b) { return atomic_load(&((mem *)b)->used); }
int64_t cache__memory_max(cache_be *b) { return ((mem *)b)->max; }
int64_t cache__memory_keys(cache_be *b)
{
    mem *m = (mem *)b;
    int64_t n = 0;
    for (int i = 0; i < NSHARDS; i++) {
        pthread_mutex_lock(&m->sh[i].lk);
        n += (int64_t)m->sh[i].n;
        pthread_mutex_unlock(&m->sh[i].lk);
    }
    return n;
}

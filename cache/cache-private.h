/*
 * cache/cache-private.h — the backend interface behind cache.h, and the
 * in-process pub/sub hub both backends deliver through.
 */
#ifndef CACHE_PRIVATE_H
#define CACHE_PRIVATE_H

#include <bazaar/cache.h>

#include <stdatomic.h>

typedef struct cache_be cache_be;

/* Keys reaching a backend already carry the "bazaar:" prefix.  Return
 * conventions are those of cache.h. */
typedef struct cache_be_ops {
    int (*ping)(cache_be *b, rt_ctx *ctx, bz_error *err);
    int (*get)(cache_be *b, rt_ctx *ctx, const char *key, bz_buf *out, bz_error *err);
    int (*set)(cache_be *b, rt_ctx *ctx, const char *key, const void *v, size_t n, int64_t ttl_ns, bool nx,
               bool *stored, bz_error *err);
    int (*del)(cache_be *b, rt_ctx *ctx, const char *key, bz_error *err);
    int (*del_if)(cache_be *b, rt_ctx *ctx, const char *key, const void *t, size_t n, bool *done, bz_error *err);
    int (*extend_if)(cache_be *b, rt_ctx *ctx, const char *key, const void *t, size_t n, int64_t ttl_ns,
                     bool *done, bz_error *err);
    int (*incr)(cache_be *b, rt_ctx *ctx, const char *key, int64_t delta, int64_t ttl_ns, int64_t *v,
                bz_error *err);
    int (*ttl)(cache_be *b, rt_ctx *ctx, const char *key, int64_t *ttl_ns, bz_error *err);
    int (*zincr)(cache_be *b, rt_ctx *ctx, const char *key, const char *m, int64_t d, int64_t *score,
                 bz_error *err);
    int (*ztop)(cache_be *b, rt_ctx *ctx, const char *key, int n, cache_zentry *out, int *count, bz_error *err);
    int (*zscore)(cache_be *b, rt_ctx *ctx, const char *key, const char *m, int64_t *score, bz_error *err);
    int (*zrank)(cache_be *b, rt_ctx *ctx, const char *key, const char *m, int64_t *rank, bz_error *err);
    int (*zcard)(cache_be *b, rt_ctx *ctx, const char *key, int64_t *n, bz_error *err);
    /* Sets of strings: sadd re-arms the key's TTL when ttl_ns > 0 and
     * tells the set's size after the add (*card); smembers writes up to max
     * members, each NUL-terminated, into out. */
    int (*sadd)(cache_be *b, rt_ctx *ctx, const char *key, const char *m, int64_t ttl_ns, int64_t *card,
                bz_error *err);
    int (*srem)(cache_be *b, rt_ctx *ctx, const char *key, const char *m, bz_error *err);
    int (*smembers)(cache_be *b, rt_ctx *ctx, const char *key, int max, bz_buf *out, int *n, bz_error *err);
    /* Optional (NULL: the backend has one class): key becomes a cache
     * entry, evicted before any state (sessions, locks, counters). */
    void (*evictable)(cache_be *b, const char *key);
    /* Compare-and-set (atomic): stores v (a string, TTL ttl_ns) only if
     * key is absent (elen == 0) or its value begins with the elen bytes of
     * expect; *stored tells which. */
    int (*set_if)(cache_be *b, rt_ctx *ctx, const char *key, const void *expect, size_t elen, const void *v,
                  size_t n, int64_t ttl_ns, bool *stored, bz_error *err);
    /* Leases: key is a set of members, each with its own expiry (Redis: a
     * sorted set scored by expiry in server-time ms).  lease_take first
     * drops expired members; then renews member for ttl_ns if present,
     * else adds it if fewer than cap (cap <= 0: no cap) are live; the key
     * itself expires ttl_ns after the last take.  lease_count: live
     * members. */
    int (*lease_take)(cache_be *b, rt_ctx *ctx, const char *key, const char *m, int cap, int64_t ttl_ns,
                      bool *taken, bz_error *err);
    int (*lease_drop)(cache_be *b, rt_ctx *ctx, const char *key, const char *m, bz_error *err);
    int (*lease_count)(cache_be *b, rt_ctx *ctx, const char *key, int64_t *n, bz_error *err);
    /* Epoch-guarded sorted sets (cache.h), atomic: stage is key's staging
     * set for epoch; the epoch marker is member CACHE_ZEPOCH_MEMBER with
     * score cache__zepoch_score(epoch). */
    int (*zincr_epoch)(cache_be *b, rt_ctx *ctx, const char *key, const char *stage, int64_t epoch, const char *m,
                       int64_t d, int64_t stage_ttl_ns, bz_error *err);
    int (*zpublish_epoch)(cache_be *b, rt_ctx *ctx, const char *key, const char *stage, int64_t epoch,
                          bool *published, bz_error *err);
    int (*publish)(cache_be *b, rt_ctx *ctx, const char *channel, const void *msg, size_t n, bz_error *err);
    /* First local subscriber of a channel / last one gone (Redis:
     * SUBSCRIBE / UNSUBSCRIBE on the subscriber connection). */
    int (*sub_first)(cache_be *b, rt_ctx *ctx, const char *channel, bz_error *err);
    void (*sub_last)(cache_be *b, const char *channel);
    void (*close)(cache_be *b);
} cache_be_ops;

typedef struct cache_hub cache_hub;

struct cache_be {
    const cache_be_ops *ops;
    cache_hub *hub;       /* local fan-out of pub/sub messages */
    cache_stats *stats;   /* the front end's counters (evictions, expired) */
    const bz_breaker *breaker; /* set by a backend that has one (Redis) */
};

cache_be *cache__memory_new(const cache_opts *o, bz_error *err);
/* The memory backend's keys (live or not yet expired), bytes accounted
 * and cap (0 = none), for cache_get_stats. */
int64_t cache__memory_keys(cache_be *b);
int64_t cache__memory_used(cache_be *b);
int64_t cache__memory_max(cache_be *b);

/* The marker's score for epoch: below any real score (sums of cents), and
 * exact as a double (Redis scores are doubles) for epochs < 2^51. */
#define CACHE_ZEPOCH_BASE (-(1LL << 52))
static inline int64_t cache__zepoch_score(int64_t epoch) { return CACHE_ZEPOCH_BASE + epoch; }
cache_be *cache__redis_new(const char *url, const cache_opts *o, bz_error *err);

/* ---- the hub: channel → local subscribers ---- */
cache_hub *cache__hub_new(void);
void cache__hub_free(cache_hub *h);
/* Delivers msg to every local subscriber of channel (never parks; a
 * subscriber whose queue is full loses the message). */
void cache__hub_deliver(cache_hub *h, const char *channel, const void *msg, size_t n);
/* Names of every channel with local subscribers (for resubscribing after
 * a reconnect); returns how many were written. */
int cache__hub_channels(cache_hub *h, char (*out)[128], int max);

struct cache {
    const char *kind;
    bool store_entries;   /* false for "none" */
    bool remote;          /* Redis: cache_is_remote */
    cache_be *be;
    cache_hub *hub;
    cache_stats st;       /* updated atomically */
    pthread_mutex_t flights_lk;
    struct flight *flights;
};

#endif

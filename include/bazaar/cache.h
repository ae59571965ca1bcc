/*
 * cache/cache.h — one cache interface, three backends, and the patterns
 * that make a cache safe under load.
 *
 *     cache *c = cache_open("memory", &opts, &err);   // or "redis://h:p/N", "none"
 *
 * Backends (chosen by --cache):
 *   memory  in-process: sharded hash table safe across loop threads,
 *           expiry lazy and active (Redis-style sampling), --cache-max-memory
 *           with allkeys-lru / allkeys-lfu / volatile-ttl / noeviction
 *   redis   real Redis (redis://, rediss:// over TLS, redis-sentinel://
 *           with master discovery; AUTH from the URL's user:pass@; the
 *           grammar is base/redisurl.h): hiredis's protocol on the
 *           runtime's sockets (the coroutine parks), a small connection
 *           pool, reconnection with backoff; while Redis is down every
 *           call fails fast with BZ_ERR_UNAVAILABLE and service resumes by
 *           itself
 *   none    cache entries are never stored (every cache_get misses); the
 *           state operations — counters, locks, sessions, sorted sets,
 *           pub/sub — are kept in process, as with memory
 *
 * Keys live under the "bazaar:" prefix.  Values are bytes.  Every call
 * takes a context and fails with -ECANCELED / -ETIMEDOUT when it ends.
 * Return values: 0, CACHE_MISS (a positive 1) where a key may be absent,
 * or a negative errno with err filled (kind UNAVAILABLE, NOMEM, TIMEOUT,
 * CANCELLED, INVALID, IO).
 */
#ifndef CACHE_CACHE_H
#define CACHE_CACHE_H

#include <bazaar/breaker.h>
#include <bazaar/buf.h>
#include <bazaar/error.h>
#include <bazaar/rt.h>

#include <stdbool.h>
#include <stdint.h>

#pragma GCC visibility push(default)

#define CACHE_MISS 1

typedef struct cache cache;

/* What the memory backend drops when --cache-max-memory is reached (Redis's
 * policies of the same names). */
typedef enum cache_eviction {
    CACHE_EVICT_ALLKEYS_LRU = 0,
    CACHE_EVICT_ALLKEYS_LFU,
    CACHE_EVICT_VOLATILE_TTL,
    CACHE_EVICT_NOEVICTION,
} cache_eviction;

typedef struct cache_opts {
    int64_t max_memory;      /* memory backend cap in bytes (0 = none) */
    cache_eviction eviction;    /* memory backend policy */
    int redis_pool;          /* redis connections (0 = 8) */
    /* Redis's circuit breaker (base/breaker.h): this many commands in a
     * row that get no reply in time (or connects that do not finish) open
     * it (0: no breaker); open, every command fails at once with
     * BZ_ERR_UNAVAILABLE (err->retry_ms set) until one probe command, let
     * through breaker_open_ns after it opened, gets a reply.  An error
     * reply is a reply. */
    int breaker_failures;
    int64_t breaker_open_ns;
} cache_opts;

cache *cache_open(const char *spec, const cache_opts *o, bz_error *err);
/* Whether cache_open would take spec (memory, none, or a well-formed
 * redis://, rediss:// or redis-sentinel:// URL whose ?ca= file is
 * readable), without connecting: for a flag's check.  0, or -1 with a
 * one-line reason in why that never quotes a password. */
int cache_spec_check(const char *spec, char *why, size_t whylen);
void cache_close(cache *c);
/* "memory", "redis" or "none": for logs and reports.  Code that depends
 * on what the backend does asks the two below instead of its name. */
const char *cache_kind(const cache *c);
/* Whether cache entries are kept (cache_set, cache_get_or_load): false
 * for "none", where every cache_get misses and a set stores nothing. */
bool cache_keeps_entries(const cache *c);
/* Whether c lives in a server every instance shares (Redis): each call is
 * a round trip, and what one process stores or locks, another sees.
 * memory and none live in this process. */
bool cache_is_remote(const cache *c);
/* Checks the backend answers (PING on Redis). */
int cache_ping(cache *c, rt_ctx *ctx, bz_error *err);

/* ---- plain operations ---------------------------------------------------------- */

/* Cache entries: with "none" these store nothing and every get misses. */
int cache_get(cache *c, rt_ctx *ctx, const char *key, bz_buf *out, bz_error *err);
int cache_set(cache *c, rt_ctx *ctx, const char *key, const void *val, size_t n, int64_t ttl_ns, bz_error *err);
int cache_del(cache *c, rt_ctx *ctx, const char *key, bz_error *err);

/* State operations: always stored, whatever the backend. */
int cache_state_get(cache *c, rt_ctx *ctx, const char *key, bz_buf *out, bz_error *err);
int cache_state_set(cache *c, rt_ctx *ctx, const char *key, const void *val, size_t n, int64_t ttl_ns,
                    bz_error *err);
int cache_state_del(cache *c, rt_ctx *ctx, const char *key, bz_error *err);
/* SET key val NX PX ttl: *stored tells whether the key was absent. */
int cache_set_nx(cache *c, rt_ctx *ctx, const char *key, const void *val, size_t n, int64_t ttl_ns, bool *stored,
                 bz_error *err);
/* Deletes key only if its value equals token (atomic). */
int cache_del_if(cache *c, rt_ctx *ctx, const char *key, const void *token, size_t n, bool *deleted,
                 bz_error *err);
/* Re-arms key's TTL only if its value equals token (atomic). */
int cache_extend_if(cache *c, rt_ctx *ctx, const char *key, const void *token, size_t n, int64_t ttl_ns,
                    bool *extended, bz_error *err);
/* INCRBY delta; a key created by this call gets ttl_ns (0 = none). */
int cache_incr(cache *c, rt_ctx *ctx, const char *key, int64_t delta, int64_t ttl_ns, int64_t *value,
               bz_error *err);
/* Remaining TTL: *ttl_ns ≥ 0, or -1 (no TTL); CACHE_MISS if absent. */
int cache_ttl(cache *c, rt_ctx *ctx, const char *key, int64_t *ttl_ns, bz_error *err);

/* ---- sorted sets (integer scores) ---------------------------------------------------- */

typedef struct cache_zentry {
    char member[64];
    int64_t score;
} cache_zentry;

int cache_zincr(cache *c, rt_ctx *ctx, const char *key, const char *member, int64_t delta, int64_t *score,
                bz_error *err);
/* Highest scores first (ties: member order); *count ≤ n entries in out. */
int cache_ztop(cache *c, rt_ctx *ctx, const char *key, int n, cache_zentry *out, int *count, bz_error *err);
int cache_zscore(cache *c, rt_ctx *ctx, const char *key, const char *member, int64_t *score, bz_error *err);
/* 0-based rank from the top; CACHE_MISS if not a member. */
int cache_zrank(cache *c, rt_ctx *ctx, const char *key, const char *member, int64_t *rank, bz_error *err);
int cache_zcard(cache *c, rt_ctx *ctx, const char *key, int64_t *n, bz_error *err);

/* ---- epoch-guarded sorted sets: a derived set rebuilt without double counts ---------
 *
 * For a sorted set that is rebuilt from a snapshot while increments keep
 * coming (a leaderboard).  Every rebuild has an epoch, a number that grows
 * with each rebuild, and every increment carries the epoch its source
 * change saw — so the caller must make "the change is in snapshot N" the
 * same as "the change saw an epoch < N" (bazaar: the payment reads the
 * epoch under a shared advisory lock held to its COMMIT, and the rebuild
 * bumps it and reads its snapshot holding that lock exclusively).  The set's epoch is a marker member (CACHE_ZEPOCH_MEMBER,
 * scored below any real score: callers skip it when listing).
 *
 * cache_zincr_epoch adds delta to member in key if key is at epoch; drops
 * it if key is at a later epoch (its snapshot has it); else (key absent or
 * older: a rebuild for epoch is under way) deletes key and adds delta to
 * the staging set of epoch ("<key>~<epoch>", kept stage_ttl_ns), so it is
 * published with that rebuild.  A rebuild adds its snapshot with
 * cache_zincr_epoch at its own epoch (they land in staging), then
 * cache_zpublish_epoch: staging becomes key at epoch, unless key is
 * already at that epoch or a later one (*published false: staging is
 * dropped). */
#define CACHE_ZEPOCH_MEMBER "~epoch"
int cache_zincr_epoch(cache *c, rt_ctx *ctx, const char *key, int64_t epoch, const char *member, int64_t delta,
                      int64_t stage_ttl_ns, bz_error *err);
int cache_zpublish_epoch(cache *c, rt_ctx *ctx, const char *key, int64_t epoch, bool *published, bz_error *err);
/* key's epoch; CACHE_MISS if key has none (absent or never published). */
int cache_zepoch(cache *c, rt_ctx *ctx, const char *key, int64_t *epoch, bz_error *err);

/* ---- sets (small: a user's sessions, a user's cached page keys) ------------------------ */

/* Adds member; ttl_ns > 0 re-arms the set's TTL.  *card (may be NULL):
 * the set's size after the add. */
int cache_sadd(cache *c, rt_ctx *ctx, const char *key, const char *member, int64_t ttl_ns, int64_t *card,
               bz_error *err);
int cache_srem(cache *c, rt_ctx *ctx, const char *key, const char *member, bz_error *err);
/* Up to max members into out, each NUL-terminated; *n how many. */
int cache_smembers(cache *c, rt_ctx *ctx, const char *key, int max, bz_buf *out, int *n, bz_error *err);

/* Eviction classes.  What cache_set, cache_store and cache_get_or_load
 * store are cache entries; everything else (the state operations, sets,
 * sorted sets) is state.  The memory backend evicts entries first and
 * state only when no entry is left, so entries a client can multiply
 * never push out a session or a lock.  This marks another key (derived
 * data such as a leaderboard) as an entry.  Redis has no such classes:
 * see docs/ARCHITECTURE.md for the policy it relies on. */
void cache_mark_evictable(cache *c, const char *key);

/* ---- pub/sub --------------------------------------------------------------------------- */

typedef struct cache_sub cache_sub;
int cache_publish(cache *c, rt_ctx *ctx, const char *channel, const void *msg, size_t n, bz_error *err);
/* Subscribes to channel; returns once messages published from now on (by
 * any process sharing the backend) will be delivered. */
int cache_subscribe(cache *c, rt_ctx *ctx, const char *channel, cache_sub **out, bz_error *err);
/* Parks until a message arrives (0, *msg filled), ctx ends, or the
 * subscription is closed (-EPIPE). */
int cache_sub_recv(cache_sub *s, rt_ctx *ctx, bz_buf *msg);
void cache_unsubscribe(cache_sub *s);

/* ---- patterns -------------------------------------------------------------------------------
 *
 * get-or-load (cache-aside): a hit returns the stored value; a miss runs
 * loader once per key across all threads (concurrent callers park and
 * share its value or its error), stores the value with ttl jittered ±10%,
 * and refreshes hot keys shortly before expiry (probabilistic early
 * expiration, XFetch).  A loader answering CACHE_MISS ("not found") is
 * cached as such for a short time (negative caching).  If the backend
 * fails, the loader's value is served anyway (degraded, not down).
 *
 * No stale resurrection, across processes too: a load stores its value
 * only if the key still holds what the caller saw before loading (nothing,
 * an expiring entry, or a tombstone) — a compare-and-set in the backend
 * (a Lua script on Redis, the shard lock in memory).  cache_invalidate
 * replaces the entry with a tombstone (a new random stamp each time, kept
 * CACHE_TOMBSTONE_TTL), so a load that began before an invalidation — in
 * this process or any other — can never store its older value after it.
 * A load that took longer than CACHE_TOMBSTONE_TTL / 2 is served but not
 * stored (its tombstone could have expired meanwhile).  The only way back
 * for a stale value is the tombstone being evicted under memory pressure
 * while such a load is in flight. */
typedef int (*cache_loader)(void *arg, rt_ctx *ctx, bz_buf *out, bz_error *err);

typedef enum cache_status { CACHE_HIT = 0, CACHE_LOADED, CACHE_SHARED, CACHE_DEGRADED } cache_status;

typedef struct cache_stats {
    int64_t hits, misses, shared_loads, loads, errors, evictions, expired;
    /* The in-process backend's size (memory, and none's state); -1 for Redis. */
    int64_t keys, bytes, max_bytes;
} cache_stats;

int cache_get_or_load(cache *c, rt_ctx *ctx, const char *key, int64_t ttl_ns, cache_loader load, void *arg,
                      bz_buf *out, cache_status *st, bz_error *err);
cache_stats cache_get_stats(cache *c);
/* Redis's circuit breaker; NULL for memory and none (nothing to hang on). */
const bz_breaker *cache_get_breaker(const cache *c);
/* Write-through: stores a fresh value for key in the get-or-load format
 * (so the next cache_get_or_load hits it).  Invalidate with
 * cache_invalidate. */
int cache_store(cache *c, rt_ctx *ctx, const char *key, const void *val, size_t n, int64_t ttl_ns, bz_error *err);

/* After a committed write: replaces key's entry with a tombstone (a miss
 * for every reader) and detaches any load of it in flight in this process
 * (callers arriving later start a fresh load), so a writer never reads its
 * own write stale, and no load in flight anywhere (it saw the key before
 * the tombstone) can store its older value. */
int cache_invalidate(cache *c, rt_ctx *ctx, const char *key, bz_error *err);
#define CACHE_TOMBSTONE_TTL (60 * BZ_NS_PER_S)

/* ---- leases: a capped set of holders that survives no crash -------------------------
 *
 * key holds members (≤ 63 bytes), each with its own expiry, so a member
 * whose holder died (a crashed instance) frees itself after ttl_ns unless
 * renewed.  Expiry is judged by the backend's clock (Redis: TIME), never
 * by the callers'.  cache_lease_take drops expired members, then renews
 * member if it holds a lease, else adds it if fewer than cap are live
 * (cap <= 0: no cap — a renewal that re-adds a lease lost meanwhile);
 * *taken false means the cap was reached. */
int cache_lease_take(cache *c, rt_ctx *ctx, const char *key, const char *member, int cap, int64_t ttl_ns,
                     bool *taken, bz_error *err);
int cache_lease_drop(cache *c, rt_ctx *ctx, const char *key, const char *member, bz_error *err);
/* Live (unexpired) leases of key. */
int cache_lease_count(cache *c, rt_ctx *ctx, const char *key, int64_t *n, bz_error *err);

/* Distributed lock: token is random (caller's buffer, 33 bytes).  With
 * wait, retries until acquired or ctx ends; else CACHE_MISS if held. */
int cache_lock(cache *c, rt_ctx *ctx, const char *name, int64_t ttl_ns, bool wait, char token[33], bz_error *err);
/* Releases only if still ours: *released false means it had expired (and
 * maybe been taken by someone else, whose lock is left alone). */
int cache_unlock(cache *c, rt_ctx *ctx, const char *name, const char *token, bool *released, bz_error *err);
int cache_lock_extend(cache *c, rt_ctx *ctx, const char *name, const char *token, int64_t ttl_ns, bool *extended,
                      bz_error *err);

/* Fixed-window rate limiter: limit requests per window for key. */
typedef struct cache_rate {
    bool allowed;
    int64_t limit, remaining;
    int64_t reset_ns;        /* time until the window resets */
} cache_rate;
int cache_rate_allow(cache *c, rt_ctx *ctx, const char *key, int64_t limit, int64_t window_ns, cache_rate *out,
                     bz_error *err);

/* Sessions: token hash → user id with a TTL ("session:<hash>"), and each
 * user's set of session hashes ("sessions:<user>", its TTL re-armed to
 * the session TTL by every login), so all of a user's sessions can be
 * ended at once. */
int cache_session_put(cache *c, rt_ctx *ctx, const char *token_hash, int64_t user_id, int64_t ttl_ns, bz_error *err);
int cache_session_get(cache *c, rt_ctx *ctx, const char *token_hash, int64_t *user_id, bz_error *err);
/* Ends one session (the user's set forgets it too when user_id > 0). */
int cache_session_del(cache *c, rt_ctx *ctx, const char *token_hash, bz_error *err);
int cache_session_end(cache *c, rt_ctx *ctx, int64_t user_id, const char *token_hash, bz_error *err);
/* Ends every session of user_id except keep_hash (may be "" or NULL);
 * *ended (may be NULL) counts them. */
int cache_sessions_end_others(cache *c, rt_ctx *ctx, int64_t user_id, const char *keep_hash, int *ended,
                              bz_error *err);

#pragma GCC visibility pop
#endif

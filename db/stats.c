/* db/stats.c — statement statistics and the slow-query log (db/stats.h).
 *
 * Slots are claimed under a lock (once per statement text) and published
 * with a release store of the key; lookups and counting are lock-free.
 * The key is the text's address: the application's statements are static
 * strings, so the address is their identity and no text is hashed per
 * statement. */
#include <bazaar/db-stats.h>
#include "db/db-private.h"

#include <bazaar/clock.h>
#include <bazaar/log.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Histogram buckets: upper bound 2^i microseconds (1 µs .. ~67 s). */
#define NB 27

typedef struct slot {
    _Atomic(const char *) key; /* the statement text's address; NULL = free */
    const char *name;          /* set before key is published */
    char shown[72];            /* an unnamed statement's first words */
    _Atomic int64_t count, errors, rows, slow, total_ns, max_ns;
    _Atomic int64_t bucket[NB + 1];
} slot;

static slot slots[DB_STATS_MAX];
static slot other = {.name = "(other statements)"};
static pthread_mutex_t claim_lk = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int64_t slow_ns = 200 * BZ_NS_PER_MS;

void db_stats_set_slow(int64_t ns) { atomic_store_explicit(&slow_ns, ns, memory_order_relaxed); }
int64_t db_stats_slow(void) { return atomic_load_explicit(&slow_ns, memory_order_relaxed); }

static size_t x__hash(const char *sql)
{
    uint64_t h = (uint64_t)(uintptr_t)sql;
    h ^= h >> 29;
    h *= 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 40) % DB_STATS_MAX;
}

/* The statement's first words, spaces squeezed, for a statement nobody named. */
static void x__shown(char *out, size_t cap, const char *sql)
{
    size_t n = 0;
    bool space = true;
    for (const char *p = sql; *p && n + 4 < cap; p++) {
        char ch = (*p == '\n' || *p == '\t' || *p == '\r') ? ' ' : *p;
        if (ch == ' ' && space)
            continue;
        space = ch == ' ';
        out[n++] = ch;
    }
    if (sql[0] && n + 4 >= cap)
        memcpy(out + n, "...", 3), n += 3;
    out[n] = 0;
}

/* The slot of sql, claimed if new (name NULL: shown by its text). */
static slot *x__find(const char *sql, const char *name)
{
    size_t h = x__hash(sql);
    for (size_t i = 0; i < DB_STATS_MAX; i++) {
        slot *s = &slots[(h + i) % DB_STATS_MAX];
        const char *k = atomic_load_explicit(&s->key, memory_order_acquire);
        if (k == sql)
            return s;
        if (k)
            continue;
        /* Free: claim it under the lock (another thread may be claiming
         * the same slot, for this statement or another). */
        pthread_mutex_lock(&claim_lk);
        k = atomic_load_explicit(&s->key, memory_order_relaxed);
        if (!k) {
            if (name) {
                s->name = name;
            } else {
                x__shown(s->shown, sizeof s->shown, sql);
                s->name = s->shown;
            }
            atomic_store_explicit(&s->key, sql, memory_order_release);
            k = sql;
        }
        pthread_mutex_unlock(&claim_lk);
        if (k == sql)
            return s;
    }
    return &other;
}

void db_stats_name(const char *sql, const char *name)
{
    if (sql && name)
        x__find(sql, name);
}

void db__probe_begin(db__probe *p, const char *sql)
{
    slot *s = x__find(sql, NULL);
    p->slot = s;
    p->prev = rt_note_set("db", s->name);
    p->t0 = bz_now_ns();
}

/* The first bucket whose bound 2^b µs is >= the duration (NB: beyond). */
static int x__bucket(int64_t ns)
{
    uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
    if (us <= 1)
        return 0;
    int b = 64 - __builtin_clzll(us - 1); /* ceil(log2(us)) */
    return b < NB ? b : NB;
}

void db__probe_end(db__probe *p, int rc, int64_t rows)
{
    int64_t dt = bz_now_ns() - p->t0;
    slot *s = p->slot;
    rt_note_restore(p->prev);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
    if (rc != 0 && rc != 1) /* DB_NO_ROWS (1) is an answer, not a failure */
        atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
    if (rows > 0)
        atomic_fetch_add_explicit(&s->rows, rows, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->total_ns, dt, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->bucket[x__bucket(dt)], 1, memory_order_relaxed);
    int64_t mx = atomic_load_explicit(&s->max_ns, memory_order_relaxed);
    while (dt > mx && !atomic_compare_exchange_weak_explicit(&s->max_ns, &mx, dt, memory_order_relaxed,
                                                             memory_order_relaxed)) {
    }
    int64_t slow = atomic_load_explicit(&slow_ns, memory_order_relaxed);
    if (slow > 0 && dt >= slow) {
        atomic_fetch_add_explicit(&s->slow, 1, memory_order_relaxed);
        bz_log_warn("slow statement", BZ_F_STR("statement", s->name), BZ_F_DBL("duration_ms", (double)dt / 1e6),
                    BZ_F_INT("rows", rows), BZ_F_INT("error", rc < 0 ? rc : 0));
    }
}

/* The bucket bound under which a fraction q of the statements finished,
 * capped by the slowest seen. */
static int64_t x__quantile(const int64_t *b, int64_t count, double q, int64_t max_ns)
{
    if (!count)
        return 0;
    int64_t want = (int64_t)((double)count * q + 0.999999), seen = 0;
    for (int i = 0; i <= NB; i++) {
        seen += b[i];
        if (seen >= want) {
            int64_t ub = i < NB ? ((int64_t)1 << i) * 1000 : max_ns;
            return ub < max_ns ? ub : max_ns;
        }
    }
    return max_ns;
}

static void x__read(const slot *s, db_stmt_stat *o)
{
    o->name = s->name;
    o->count = atomic_load_explicit(&s->count, memory_order_relaxed);
    o->errors = atomic_load_explicit(&s->errors, memory_order_relaxed);
    o->rows = atomic_load_explicit(&s->rows, memory_order_relaxed);
    o->slow = atomic_load_explicit(&s->slow, memory_order_relaxed);
    o->total_ns = atomic_load_explicit(&s->total_ns, memory_order_relaxed);
    o->max_ns = atomic_load_explicit(&s->max_ns, memory_order_relaxed);
    int64_t b[NB + 1], n = 0;
    for (int i = 0; i <= NB; i++)
        n += b[i] = atomic_load_explicit(&s->bucket[i], memory_order_relaxed);
    o->p50_ns = x__quantile(b, n, 0.50, o->max_ns);
    o->p99_ns = x__quantile(b, n, 0.99, o->max_ns);
}

static int x__by_total(const void *x, const void *y)
{
    const db_stmt_stat *a = x, *b = y;
    return (a->total_ns < b->total_ns) - (a->total_ns > b->total_ns);
}

int db_stats_top(db_stmt_stat *out, int max)
{
    db_stmt_stat *all = malloc((DB_STATS_MAX + 1) * sizeof *all);
    if (!all)
        return 0;
    int n = 0;
    for (int i = 0; i < DB_STATS_MAX; i++)
        if (atomic_load_explicit(&slots[i].key, memory_order_acquire)) {
            x__read(&slots[i], &all[n]);
            if (all[n].count)
                n++;
        }
    x__read(&other, &all[n]);
    if (all[n].count)
        n++;
    qsort(all, (size_t)n, sizeof *all, x__by_total);
    if (n > max)
        n = max;
    memcpy(out, all, (size_t)n * sizeof *all);
    free(all);
    return n;
}

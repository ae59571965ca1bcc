/* tests/bench/bench_cache.c — cache get-hit throughput from 64 coroutines
 * on one loop, for the memory backend and for Redis (pool of 64, the
 * concurrency redis-benchmark -c 64 uses), and get-or-load under a
 * stampede.  Usage: bench_cache REDIS_URL.  Prints "name ops/s" lines;
 * tests/bench/cache.sh runs it beside redis-benchmark. */
#include <bazaar/cache.h>

#include <stdio.h>
#include <stdlib.h>

#define COROS 64

typedef struct {
    cache *c;
    int64_t n;
    rt_wg *wg;
} arg;

static void getter(void *p)
{
    arg *a = p;
    bz_buf b = BZ_BUF_INIT;
    bz_error e;
    char key[32];
    for (int64_t i = 0; i < a->n; i++) {
        snprintf(key, sizeof key, "bench:%d", (int)(i % 1000));
        if (cache_get(a->c, NULL, key, &b, &e) != 0) {
            fprintf(stderr, "get failed: %s\n", e.msg);
            exit(1);
        }
    }
    bz_buf_free(&b);
    rt_wg_done(a->wg);
}

static double run_gets(cache *c, int64_t total)
{
    bz_error e;
    char key[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "bench:%d", i);
        cache_set(c, NULL, key, "0123456789abcdef0123456789abcdef", 32, 0, &e);
    }
    rt_wg wg;
    rt_wg_init(&wg);
    arg a = {c, total / COROS, &wg};
    rt_wg_add(&wg, COROS);
    int64_t t0 = bz_now_ns();
    for (int i = 0; i < COROS; i++)
        rt_go(getter, &a);
    rt_wg_wait(&wg, NULL);
    double ops = (double)(a.n * COROS) / ((double)(bz_now_ns() - t0) / 1e9);
    rt_wg_destroy(&wg);
    return ops;
}

static int loader(void *p, rt_ctx *ctx, bz_buf *out, bz_error *err)
{
    rt_sleep(ctx, 20 * BZ_NS_PER_MS);
    bz_buf_append_c(out, "value");
    return 0;
}

typedef struct {
    cache *c;
    const char *key;
    rt_wg *wg;
} sarg;

static void stamp(void *p)
{
    sarg *a = p;
    bz_buf b = BZ_BUF_INIT;
    bz_error e;
    cache_status st;
    cache_get_or_load(a->c, NULL, a->key, BZ_NS_PER_S, loader, NULL, &b, &st, &e);
    bz_buf_free(&b);
    rt_wg_done(a->wg);
}

static const char *g_url;

static void bench(void *p)
{
    cache_opts o = {.max_memory = 256 << 20, .eviction = CACHE_EVICT_ALLKEYS_LRU, .redis_pool = COROS};
    bz_error e;
    cache *mem = cache_open("memory", &o, &e);
    cache *red = cache_open(g_url, &o, &e);
    run_gets(mem, 200000); /* warm */
    run_gets(red, 20000);
    printf("memory_get %.0f\n", run_gets(mem, 4000000));
    printf("redis_get %.0f\n", run_gets(red, 400000));
    /* stampede: 10,000 concurrent misses of one key, 20 ms loader */
    rt_wg wg;
    rt_wg_init(&wg);
    sarg s = {mem, "stampede", &wg};
    cache_del(mem, NULL, "stampede", &e);
    int64_t t0 = bz_now_ns();
    rt_wg_add(&wg, 10000);
    for (int i = 0; i < 10000; i++)
        rt_go(stamp, &s);
    rt_wg_wait(&wg, NULL);
    cache_stats st = cache_get_stats(mem);
    printf("stampede_ms %.1f loads %lld shared %lld\n", (double)(bz_now_ns() - t0) / 1e6, (long long)st.loads,
           (long long)st.shared_loads);
    rt_wg_destroy(&wg);
    cache_close(red);
    cache_close(mem);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    g_url = argv[1];
    rt_options o = {.threads = 1};
    return rt_run(&o, bench, NULL);
}

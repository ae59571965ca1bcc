/* tests/bench/bench_rt.c — runtime micro-benchmarks, printed as a table:
 * context switch, spawn+exit, cross-thread wake latency, and the RSS of
 * 10,000 parked coroutines.  Each figure is the median of 7 runs. */
#include <bazaar/rt.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RUNS 7

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_dbl);
    return v[n / 2];
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}

/* ---- context switch: two coroutines yielding to each other ---- */
#define SWITCH_N 2000000
static volatile int stop_flag;
static void yielder(void *p)
{
    (void)p;
    while (!stop_flag)
        rt_yield();
}

static double r_switch[RUNS], r_spawn[RUNS], r_wake[RUNS], r_rss[RUNS];
static int run_i;

static void nop(void *p) { (void)p; }

static rt_sem ping, pong;
#define WAKE_N 100000
static void ponger(void *p)
{
    (void)p;
    for (int i = 0; i < WAKE_N; i++) {
        rt_sem_acquire(&ping, NULL, BZ_NO_DEADLINE);
        rt_sem_release(&pong);
    }
}

static void parked(void *p) { rt_park(rt_shutdown_ctx(), BZ_NO_DEADLINE, NULL); }

static void bench_main(void *p)
{
    (void)p;
    /* switch: one yield = two switches (into the scheduler and out of it)
     * in this design; we report the cost per yield divided by 2, which is
     * what "a context switch" costs here. */
    stop_flag = 0;
    rt_go(yielder, NULL);
    rt_yield();
    int64_t t0 = bz_now_ns();
    for (int i = 0; i < SWITCH_N; i++)
        rt_yield();
    int64_t t1 = bz_now_ns();
    stop_flag = 1;
    rt_yield();
    /* Each rt_yield here resumes the other coroutine once and ourselves
     * once: 4 mctx switches per loop iteration. */
    r_switch[run_i] = (double)(t1 - t0) / SWITCH_N / 4.0;

    /* spawn+exit: batches of 100 spawned, then run to completion (stacks
     * come from the loop's pool, as for requests in steady state) */
    int64_t s0 = bz_now_ns();
    for (int b = 0; b < 2000; b++) {
        for (int i = 0; i < 100; i++)
            rt_go(nop, NULL);
        rt_yield();
    }
    r_spawn[run_i] = (double)(bz_now_ns() - s0) / 200000.0;

    /* cross-thread wake: ping-pong with a coroutine on loop 1 */
    rt_sem_init(&ping, 0);
    rt_sem_init(&pong, 0);
    rt_go_on(rt_loop_at(1), ponger, NULL);
    int64_t w0 = bz_now_ns();
    for (int i = 0; i < WAKE_N; i++) {
        rt_sem_release(&ping);
        rt_sem_acquire(&pong, NULL, BZ_NO_DEADLINE);
    }
    r_wake[run_i] = (double)(bz_now_ns() - w0) / WAKE_N / 2.0; /* one way */
    rt_sleep(NULL, BZ_NS_PER_MS);

    /* parked-coroutine memory */
    long before = rss_kib();
    for (int i = 0; i < 10000; i++)
        rt_go(parked, NULL);
    rt_yield();
    rt_sleep(NULL, BZ_NS_PER_MS);
    long after = rss_kib();
    r_rss[run_i] = (double)(after - before) * 1024.0 / 10000.0;
}

int main(void)
{
    for (run_i = 0; run_i < RUNS; run_i++) {
        rt_options o = {.threads = 2};
        rt_run(&o, bench_main, NULL);
    }
    printf("%-34s %12s %10s\n", "runtime benchmark (median of 7)", "value", "target");
    printf("%-34s %9.1f ns %10s\n", "context switch", median(r_switch, RUNS), "<= 25 ns");
    printf("%-34s %9.1f ns %10s\n", "spawn + exit", median(r_spawn, RUNS), "<= 1000 ns");
    printf("%-34s %9.0f ns %10s\n", "cross-thread wake (one way)", median(r_wake, RUNS), "-");
    printf("%-34s %8.2f KiB %10s\n", "RSS per parked coroutine (10k)", median(r_rss, RUNS) / 1024.0,
           "<= 16 KiB");
    return 0;
}

/* rt/stats.c — per-loop lag tick and the counters it publishes (see rt.h,
 * statistics).  The tick is one timer per loop: no locks, no allocation;
 * its cost is one heap operation every 100 ms. */
#include "rt/rt-private.h"

const bz_hist_bounds rt_lag_bounds = {12, {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5}};

static void publish(rt_loop *l, int64_t now)
{
    rt__loop_stats *st = &l->st;
    atomic_store_explicit(&st->live, (int64_t)(l->ncoros - l->nfree), memory_order_relaxed);
    atomic_store_explicit(&st->pooled, (int64_t)l->nfree, memory_order_relaxed);
    atomic_store_explicit(&st->timers, (int64_t)l->heap_len, memory_order_relaxed);
    atomic_store_explicit(&st->last_tick, now, memory_order_release);
}

static void tick(rt_timer *t)
{
    rt_loop *l = t->data;
    int64_t now = bz_now_ns();
    int64_t lag = now - t->deadline;
    if (lag < 0)
        lag = 0;
    bz_hist_observe(&l->st.lag, &rt_lag_bounds, lag);
    atomic_store_explicit(&l->st.lag_last, lag, memory_order_relaxed);
    /* Re-armed from now, not from the due time: a stalled loop gets one
     * late sample, not a burst of catch-up ticks. */
    rt_timer_start(t, now + RT_LAG_TICK_NS);
    rt__coro_trim_cold(l, rt_now());
    publish(l, now);
}

void rt__stats_start(rt_loop *l)
{
    l->st.tick = (rt_timer){.fn = tick, .data = l};
    rt_timer_start(&l->st.tick, bz_now_ns() + RT_LAG_TICK_NS);
    publish(l, 0);
}

rt_loop_stats rt_loop_stats_read(int i)
{
    rt_loop_stats s = {0};
    rt_loop *l = rt_loop_at(i);
    if (!l)
        return s;
    s.coros_live = atomic_load_explicit(&l->st.live, memory_order_relaxed);
    s.coros_pooled = atomic_load_explicit(&l->st.pooled, memory_order_relaxed);
    s.timers = atomic_load_explicit(&l->st.timers, memory_order_relaxed);
    s.lag_last_ns = atomic_load_explicit(&l->st.lag_last, memory_order_relaxed);
    s.last_tick_ns = atomic_load_explicit(&l->st.last_tick, memory_order_acquire);
    bz_hist_read(&l->st.lag, &s.lag);
    return s;
}

bool rt_loops_alive(int64_t max_age_ns)
{
    int64_t now = bz_now_ns();
    for (int i = 0; i < rt_nloops(); i++) {
        rt_loop_stats s = rt_loop_stats_read(i);
        if (!s.last_tick_ns || now - s.last_tick_ns > max_age_ns)
            return false;
    }
    return true;
}

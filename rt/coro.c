/* rt/coro.c — coroutines: stacks, spawn, switch glue, park/wake, sleep,
 * join.  See rt.h for the contracts. */
#include "rt/rt-private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef RT_ASAN
#include <sanitizer/asan_interface.h>
#endif
#ifdef RT_TSAN
#include <sanitizer/tsan_interface.h>
#endif

/* Free coroutines (with their stacks) kept per loop for reuse. */
#define RT_FREE_MAX 1024
/* The pool follows the recent load, not the highest it ever saw: every
 * RT_POOL_DECAY_NS the loop unmaps half of the pooled coroutines that no
 * spawn needed during that interval (the pool's low-water mark), keeping
 * at least RT_POOL_FLOOR.  Without it the pool held the peak number of
 * coroutines any burst had reached, each with the pages its stack had
 * touched (~16 KiB): under the soak's 2,000 slowloris clients, every new
 * latency spike mapped more stacks and RSS crept up for minutes
 * (2,031 -> 2,239 stacks between 10 s and 90 s; make soak).  Halving
 * rather than dropping the whole surplus keeps a burst that comes back
 * every few seconds from mapping its stacks anew each time. */
#define RT_POOL_DECAY_NS BZ_NS_PER_S
#define RT_POOL_FLOOR 64
/* A pooled coroutine keeps this much of its stack's top committed (what
 * most uses touch); pages a deeper use touched below it are given back
 * when it is pooled.  Without that, every pooled or parked coroutine
 * would keep the deepest stack any earlier use reached: under 2,000
 * slowloris connections (each parks a coroutine taken from the pool) the
 * stacks' RSS crept from 35 to 60+ MiB in ten minutes (make soak). */
#define RT_STACK_KEEP (12 * 1024)
/* Pooled coroutines per loop that keep the pages of a deeper use (see
 * warm_add): rt_options.stack_warm, 0 by default. */
#define RT_STACK_WARM ((size_t)rt__stack_warm())
#define RT_STACK_WARM_NS BZ_NS_PER_S
#define RT_STACK_MARK 0x6b6565705f737461ull /* "keep_sta": never a pointer or a small int */
/* Mark words spread over the page RT_STACK_KEEP below the top: a frame
 * with a large uninitialised local can step over one word, rarely over
 * all of them (one word alone missed a third of the deep uses). */
#define RT_STACK_MARKS 16
#define RT_MARK_STRIDE 32 /* words: 256 bytes */

static _Atomic uint64_t deep_exits; /* rt__coro_deep_exits */

uint64_t rt__coro_deep_exits(void) { return atomic_load_explicit(&deep_exits, memory_order_relaxed); }

_Noreturn void rt__panic(const char *msg)
{
    fprintf(stderr, "bazaar: runtime misuse: %s\n", msg);
    abort();
}

static size_t page_size(void)
{
    static size_t ps;
    if (!ps)
        ps = (size_t)sysconf(_SC_PAGESIZE);
    return ps;
}

/* ---- switch glue with sanitizer annotations ---------------------------------- */

/* Switch from the scheduler of l into co. */
static void switch_into(rt_loop *l, rt_coro *co)
{
#ifdef RT_ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, co->stack_lo, co->stack_size);
#endif
#ifdef RT_TSAN
    __tsan_switch_to_fiber(co->tsan_fiber, 0);
#endif
    rt__mctx_swap(&l->sched, &co->mctx);
#ifdef RT_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
}

/* Switch from the running coroutine back to its scheduler. */
static void switch_out(rt_coro *co, bool exiting)
{
    rt_loop *l = co->loop;
#ifdef RT_ASAN
    /* A finished coroutine passes NULL so ASan drops its fake stack. */
    __sanitizer_start_switch_fiber(exiting ? NULL : &co->asan_fake, l->sched_stack_lo,
                                   l->sched_stack_size);
#else
    (void)exiting;
#endif
#ifdef RT_TSAN
    __tsan_switch_to_fiber(l->tsan_sched_fiber, 0);
#endif
    /* The deepest point of a park (a database wait deep in a call chain)
     * is known without touching the mark (see stack_trim). */
    char here;
    if ((uintptr_t)&here < (uintptr_t)co->min_sp) /* integers: different objects */
        co->min_sp = &here;
    rt__mctx_swap(&co->mctx, &l->sched);
#ifdef RT_ASAN
    __sanitizer_finish_switch_fiber(co->asan_fake, NULL, NULL);
#endif
}

static void coro_main(void *p)
{
    rt_coro *co = p;
#ifdef RT_ASAN
    rt_loop *l = co->loop;
    const void *lo;
    size_t sz;
    __sanitizer_finish_switch_fiber(NULL, &lo, &sz);
    l->sched_stack_lo = lo;
    l->sched_stack_size = sz;
#endif
    for (;;) {
        co->fn(co->arg);
        co->exited = true;
        if (co->join_wg)
            rt_wg_done(co->join_wg);
        switch_out(co, true);
        /* Resumed again only after rt__coro_new reused this coroutine
         * (the mctx of a recycled coroutine is re-made, so in practice
         * we never get here). */
    }
}

void rt__resume(rt_loop *l, rt_coro *co)
{
    l->current = co;
    switch_into(l, co);
    l->current = NULL;
    if (co->exited && !co->joinable)
        rt__coro_release(co);
}

void rt__to_scheduler(void)
{
    rt_coro *co = rt__cur ? rt__cur->current : NULL;
    if (!co)
        rt__panic("a wait was called outside a coroutine");
    switch_out(co, false);
}

/* ---- stacks ------------------------------------------------------------------ */

#if defined(__clang__) || defined(__GNUC__)
#define NO_ASAN __attribute__((no_sanitize("address"))) /* the mark lies in a finished stack's frames */
#else
#define NO_ASAN
#endif

NO_ASAN static void stack_mark_set(rt_coro *co)
{
    for (int i = 0; i < RT_STACK_MARKS; i++)
        co->stack_mark[i * RT_MARK_STRIDE] = RT_STACK_MARK;
    co->min_sp = (char *)co;
}

/* True when every mark word is intact. */
NO_ASAN static bool stack_marks_intact(const rt_coro *co)
{
    for (int i = 0; i < RT_STACK_MARKS; i++)
        if (co->stack_mark[i * RT_MARK_STRIDE] != RT_STACK_MARK)
            return false;
    return true;
}

static rt_coro *coro_alloc(rt_loop *l)
{
    size_t ps = page_size();
    size_t ss = (rt__stack_size() + ps - 1) & ~(ps - 1);
    size_t hdr = (sizeof(rt_coro) + 63) & ~(size_t)63;
    size_t map_size = ps + ss + ((hdr + ps - 1) & ~(ps - 1));
    char *map = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (map == MAP_FAILED) {
        perror("bazaar: mmap coroutine stack");
        abort();
    }
    /* The lowest page is the guard: touching it faults, and the SIGSEGV
     * handler (rt/signal.c) reports a stack overflow. */
    if (mprotect(map, ps, PROT_NONE) != 0) {
        perror("bazaar: mprotect guard page");
        abort();
    }
    /* The coroutine structure sits at the top of the mapping, above the
     * stack, so one mapping holds both and a parked coroutine touches as
     * few pages as possible. */
    rt_coro *co = (rt_coro *)(map + map_size - hdr);
    memset(co, 0, sizeof *co);
    co->map = map;
    co->map_size = map_size;
    co->stack_lo = map + ps;
    co->stack_size = (size_t)((char *)co - co->stack_lo) & ~(size_t)15;
    co->stack_mark = (uint64_t *)(((uintptr_t)co - RT_STACK_KEEP) & ~(uintptr_t)(ps - 1));
    stack_mark_set(co);
    co->loop = l;
#ifdef RT_TSAN
    co->tsan_fiber = __tsan_create_fiber(0);
#endif
    co->all_next = l->all;
    if (l->all)
        l->all->all_prev = co;
    l->all = co;
    l->ncoros++;
    return co;
}

static void warm_unlink(rt_loop *l, rt_coro *co);

static void coro_unmap(rt_loop *l, rt_coro *co)
{
    if (co->warm)
        warm_unlink(l, co);
    if (co->all_prev)
        co->all_prev->all_next = co->all_next;
    else
        l->all = co->all_next;
    if (co->all_next)
        co->all_next->all_prev = co->all_prev;
    l->ncoros--;
#ifdef RT_TSAN
    __tsan_destroy_fiber(co->tsan_fiber);
#endif
    munmap(co->map, co->map_size);
}

rt_coro *rt__coro_new(rt_loop *l, rt_fn fn, void *arg)
{
    rt_coro *co = l->free_coros;
    if (co) {
        l->free_coros = co->next;
        if (--l->nfree < l->nfree_low)
            l->nfree_low = l->nfree;
        if (co->warm)
            warm_unlink(l, co); /* in use: its depth is this use's again */
    } else {
        co = coro_alloc(l);
    }
    co->fn = fn;
    co->arg = arg;
    co->next = NULL;
    atomic_store_explicit(&co->wstate, RT_RUNNING, memory_order_relaxed);
    co->wake_result = 0;
    co->timer = (rt_timer){0};
    co->wait_ctx = NULL;
    co->ctx_prev = co->ctx_next = NULL;
    co->wq_prev = co->wq_next = NULL;
    co->wq_linked = false;
    co->exited = false;
    co->joinable = false;
    co->join_wg = NULL;
    co->local = NULL;
    co->why = NULL;
    co->note = (rt_note){0};
    co->born = l->now;
    co->id = ++l->next_id;
    rt__mctx_make(&co->mctx, co->stack_lo, co->stack_size, coro_main, co);
    return co;
}

/* True if this use went below the mark page: it overwrote a mark (a
 * deep call writes its frames there; SQLite clears 32 KiB), or parked
 * below the page.  A use that ran below without writing any mark and
 * never parked there is missed; its pages stay until a later use is
 * caught.  The common shallow use costs a few loads. */
NO_ASAN static bool stack_deep(rt_coro *co)
{
    return (uintptr_t)co->min_sp < (uintptr_t)co->stack_mark || !stack_marks_intact(co);
}

/* Gives back the stack pages below the mark page. */
NO_ASAN static void stack_trim(rt_coro *co)
{
    char *end = (char *)co->stack_mark; /* the mark page's start */
    if (end > co->stack_lo)
        madvise(co->stack_lo, (size_t)(end - co->stack_lo), MADV_DONTNEED);
    stack_mark_set(co);
}

NO_ASAN void rt_stack_release(void)
{
    rt_loop *l = rt__cur;
    rt_coro *co = l ? l->current : NULL;
    if (!co || !stack_deep(co))
        return;
    /* Only from above the mark page (with a page to spare for this call
     * and madvise's frames): below it the page holds live frames, and
     * the marks could not be reset. */
    char here;
    if ((uintptr_t)&here < (uintptr_t)co->stack_mark + 2 * page_size())
        return;
    stack_trim(co);
}

static void warm_unlink(rt_loop *l, rt_coro *co)
{
    if (co->warm_prev)
        co->warm_prev->warm_next = co->warm_next;
    else
        l->warm_head = co->warm_next;
    if (co->warm_next)
        co->warm_next->warm_prev = co->warm_prev;
    else
        l->warm_tail = co->warm_prev;
    co->warm_prev = co->warm_next = NULL;
    co->warm = false;
    l->nwarm--;
}

/* A coroutine that went deep is pooled with its pages: the next request
 * (the free list is LIFO) reuses them without a fault, and a loop under
 * steady load trims nothing.  Only past RT_STACK_WARM such coroutines in
 * the pool is the one pooled longest ago trimmed, so what the pool holds
 * beyond RT_STACK_KEEP per coroutine stays bounded (the soak's flat RSS)
 * and a madvise is paid when the set of deep coroutines churns, not per
 * request (issue 18: one madvise and one page fault per request). */
static void warm_add(rt_loop *l, rt_coro *co)
{
    co->warm = true;
    co->warm_since = rt_now();
    co->warm_next = NULL;
    co->warm_prev = l->warm_tail;
    if (l->warm_tail)
        l->warm_tail->warm_next = co;
    else
        l->warm_head = co;
    l->warm_tail = co;
    if (++l->nwarm > RT_STACK_WARM) {
        rt_coro *old = l->warm_head;
        warm_unlink(l, old);
        stack_trim(old);
    }
}

/* What the warm list holds follows the load of the last second: a deep
 * coroutine not reused for RT_STACK_WARM_NS is trimmed by the stats
 * tick, so a burst of deep requests (the soak's mixed load on two loops
 * reached the 128-per-loop bound slowly: RSS still rising after the
 * warm-up) leaves no pages behind once it passes.  The list is in
 * pooling order, so the walk stops at the first young one. */
void rt__coro_trim_cold(rt_loop *l, int64_t now)
{
    while (l->warm_head && now - l->warm_head->warm_since > RT_STACK_WARM_NS) {
        rt_coro *old = l->warm_head;
        warm_unlink(l, old);
        stack_trim(old);
    }
    if (now < l->decay_at)
        return;
    l->decay_at = now + RT_POOL_DECAY_NS;
    size_t unused = l->nfree_low > RT_POOL_FLOOR ? l->nfree_low - RT_POOL_FLOOR : 0;
    /* From the head: the pool is LIFO, and which pooled stack goes does
     * not change what the rest hold. */
    for (size_t k = (unused + 1) / 2; k > 0 && l->free_coros; k--) {
        rt_coro *co = l->free_coros;
        l->free_coros = co->next;
        l->nfree--;
        coro_unmap(l, co);
    }
    l->nfree_low = l->nfree;
}

static void release_local(void *p)
{
    rt_coro *co = p;
    rt_loop *l = co->loop;
    if (co->join_wg) {
        rt_wg_destroy(co->join_wg);
        free(co->join_wg);
        co->join_wg = NULL;
    }
    if (l->nfree >= RT_FREE_MAX) {
        coro_unmap(l, co);
        return;
    }
    if (stack_deep(co)) {
        atomic_fetch_add_explicit(&deep_exits, 1, memory_order_relaxed);
        warm_add(l, co);
    }
    co->next = l->free_coros;
    l->free_coros = co;
    l->nfree++;
}

void rt__coro_release(rt_coro *co)
{
    if (co->loop == rt__cur)
        release_local(co);
    else
        rt_post(co->loop, release_local, co);
}

void rt__coro_free_all(rt_loop *l)
{
    while (l->all) {
        rt_coro *co = l->all;
        if (co->join_wg) {
            rt_wg_destroy(co->join_wg);
            free(co->join_wg);
        }
        coro_unmap(l, co);
    }
    l->free_coros = NULL;
    l->nfree = 0;
    l->warm_head = l->warm_tail = NULL;
    l->nwarm = 0;
}

/* ---- spawn ------------------------------------------------------------------- */

void rt_go(rt_fn fn, void *arg)
{
    rt_loop *l = rt__cur;
    if (!l) {
        rt_go_on(rt_loop_at(0), fn, arg);
        return;
    }
    rt__schedule(rt__coro_new(l, fn, arg));
}

typedef struct {
    rt_fn fn;
    void *arg;
} go_req;

static void go_remote(void *p)
{
    go_req r = *(go_req *)p;
    free(p);
    rt__schedule(rt__coro_new(rt__cur, r.fn, r.arg));
}

void rt_go_on(rt_loop *l, rt_fn fn, void *arg)
{
    if (l == rt__cur) {
        rt__schedule(rt__coro_new(l, fn, arg));
        return;
    }
    go_req *r = malloc(sizeof *r);
    if (!r)
        rt__panic("out of memory");
    r->fn = fn;
    r->arg = arg;
    rt_post(l, go_remote, r);
}

typedef struct {
    rt_fn fn;
    void *arg;
    rt_wg *wg;
    rt_coro *co;
    rt_sem made;
} spawn_req;

static void spawn_remote(void *p)
{
    spawn_req *r = p;
    rt_coro *co = rt__coro_new(rt__cur, r->fn, r->arg);
    co->joinable = true;
    co->join_wg = r->wg;
    r->co = co;
    rt__schedule(co);
    rt_sem_release(&r->made);
}

rt_coro *rt_spawn_joinable(rt_loop *l, rt_fn fn, void *arg)
{
    rt_wg *wg = malloc(sizeof *wg);
    if (!wg)
        rt__panic("out of memory");
    rt_wg_init(wg);
    rt_wg_add(wg, 1);
    if (!l)
        l = rt__cur ? rt__cur : rt_loop_at(0);
    if (l == rt__cur) {
        rt_coro *co = rt__coro_new(l, fn, arg);
        co->joinable = true;
        co->join_wg = wg;
        rt__schedule(co);
        return co;
    }
    /* Another loop must create it (stacks are loop-owned); wait for it. */
    spawn_req r = {.fn = fn, .arg = arg, .wg = wg};
    rt_sem_init(&r.made, 0);
    rt_post(l, spawn_remote, &r);
    rt_sem_acquire(&r.made, NULL, BZ_NO_DEADLINE);
    rt_sem_destroy(&r.made);
    return r.co;
}

int rt_join(rt_coro *co, rt_ctx *ctx)
{
    int r = rt_wg_wait(co->join_wg, ctx);
    if (r == 0)
        rt__coro_release(co); /* still marked joinable: rt__resume left it */
    return r;
}

static void detach_local(void *p)
{
    rt_coro *co = p;
    co->joinable = false;
    if (co->exited)
        release_local(co);
}

void rt_detach(rt_coro *co)
{
    if (co->loop == rt__cur)
        detach_local(co);
    else
        rt_post(co->loop, detach_local, co);
}

/* ---- park / wake ---------------------------------------------------------------- */

rt_coro *rt_self(void) { return rt__cur ? rt__cur->current : NULL; }

void *rt_coro_local(void)
{
    rt_coro *co = rt_self();
    return co ? co->local : NULL;
}

void rt_coro_set_local(void *p)
{
    rt_coro *co = rt_self();
    if (co)
        co->local = p;
}

static void park_timeout(rt_timer *t) { rt_wake(t->data, -ETIMEDOUT); }

int rt_park(rt_ctx *ctx, int64_t deadline, pthread_mutex_t *unlock)
{
    rt_coro *co = rt_self();
    if (!co)
        rt__panic("rt_park outside a coroutine");
    if (ctx) {
        int64_t cd = rt_ctx_deadline(ctx);
        if (cd < deadline)
            deadline = cd;
    }
    atomic_store_explicit(&co->wstate, RT_PARKED, memory_order_release);
    int early = 0;
    if (ctx) {
        /* Registers co unless the context already ended. */
        rt__ctx_add_waiter(ctx, co, &early);
    }
    if (!early && deadline != BZ_NO_DEADLINE && deadline <= bz_now_ns())
        early = -ETIMEDOUT;
    if (early) {
        /* Nobody can have seen us parked yet except the context, and we
         * are not on its list: take the park back. */
        atomic_store_explicit(&co->wstate, RT_RUNNING, memory_order_relaxed);
        if (ctx)
            rt__ctx_remove_waiter(co);
        if (unlock)
            pthread_mutex_unlock(unlock);
        co->why = NULL;
        return early;
    }
    if (deadline != BZ_NO_DEADLINE) {
        co->timer.fn = park_timeout;
        co->timer.data = co;
        rt_timer_start(&co->timer, deadline);
    }
    co->parked_at = co->loop->now;
    if (unlock)
        pthread_mutex_unlock(unlock);
    rt__to_scheduler();
    co->why = NULL;
    /* Woken: whoever won the wake-up race set wake_result.  Undo the other
     * registrations. */
    if (rt_timer_armed(&co->timer))
        rt_timer_stop(&co->timer);
    rt__ctx_remove_waiter(co);
    atomic_store_explicit(&co->wstate, RT_RUNNING, memory_order_relaxed);
    return co->wake_result;
}

bool rt_wake(rt_coro *co, int result)
{
    int expect = RT_PARKED;
    if (!atomic_compare_exchange_strong_explicit(&co->wstate, &expect, RT_WOKEN, memory_order_acq_rel,
                                                 memory_order_acquire))
        return false;
    co->wake_result = result;
    rt__schedule(co);
    return true;
}

void rt_yield(void)
{
    rt_coro *co = rt_self();
    if (!co)
        return;
    rt__schedule(co);
    rt__to_scheduler();
}

int rt_sleep(rt_ctx *ctx, int64_t ns)
{
    int64_t until = bz_now_ns() + (ns > 0 ? ns : 0);
    rt_coro *co = rt_self();
    if (co)
        rt__why(co, "sleep");
    int r = rt_park(ctx, until, NULL);
    if (r == -ETIMEDOUT && (!ctx || rt_ctx_deadline(ctx) > until))
        return 0; /* our own deadline: the sleep is over */
    return r;
}

/* rt/loop.c — event loops: the scheduler, the mailbox, timers, and
 * rt_run/rt_post.  One loop per thread; loop 0 is the caller of rt_run. */
#include "rt/rt-private.h"

#include <bazaar/log.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#ifdef RT_TSAN
#include <sanitizer/tsan_interface.h>
#endif

_Thread_local rt_loop *rt__cur;

/* Stacks are reserved, not committed: only touched pages cost memory, so
 * the default is generous — SQLite alone can use tens of KiB (a WAL commit
 * clears a 32 KiB buffer on the stack).  Sanitizers multiply frame sizes. */
#if defined(RT_ASAN) || defined(RT_TSAN)
#define RT_DEFAULT_STACK (1024 * 1024)
#else
#define RT_DEFAULT_STACK (256 * 1024)
#endif

static rt_loop *g_loops;
static int g_nloops;
static size_t g_stack_size;
static int g_stack_warm;
static atomic_bool g_stop;
static rt_ctx g_shutdown;

size_t rt__stack_size(void) { return g_stack_size; }
int rt__stack_warm(void) { return g_stack_warm; }
int rt_nloops(void) { return g_nloops; }
int64_t rt_now(void) { return rt__cur ? rt__cur->now : bz_now_ns(); }
rt_loop *rt_loop_at(int i) { return (i >= 0 && i < g_nloops) ? &g_loops[i] : NULL; }
rt_loop *rt_loop_current(void) { return rt__cur; }
int rt_loop_index(const rt_loop *l) { return l->index; }
rt_ctx *rt_shutdown_ctx(void) { return &g_shutdown; }
void rt_shutdown(void) { rt_ctx_cancel(&g_shutdown); }

/* ---- run queue and mailbox ------------------------------------------------------ */

static void ring(rt_loop *l)
{
    uint64_t one = 1;
    ssize_t n = write(l->evfd, &one, sizeof one);
    (void)n; /* EAGAIN only if the counter is huge: the loop wakes anyway */
}

void rt__schedule(rt_coro *co)
{
    rt_loop *l = co->loop;
    co->next = NULL;
    if (l == rt__cur) {
        if (l->runq_tail)
            l->runq_tail->next = co;
        else
            l->runq_head = co;
        l->runq_tail = co;
        return;
    }
    pthread_mutex_lock(&l->mb_lock);
    if (l->mb_coros_tail)
        l->mb_coros_tail->next = co;
    else
        l->mb_coros_head = co;
    l->mb_coros_tail = co;
    bool do_ring = !atomic_load_explicit(&l->mb_rung, memory_order_relaxed);
    atomic_store_explicit(&l->mb_rung, true, memory_order_relaxed);
    pthread_mutex_unlock(&l->mb_lock);
    if (do_ring)
        ring(l);
}

void rt_post(rt_loop *l, rt_fn fn, void *arg)
{
    rt__post *p = malloc(sizeof *p);
    if (!p)
        rt__panic("out of memory");
    p->fn = fn;
    p->arg = arg;
    p->next = NULL;
    pthread_mutex_lock(&l->mb_lock);
    if (l->mb_posts_tail)
        l->mb_posts_tail->next = p;
    else
        l->mb_posts_head = p;
    l->mb_posts_tail = p;
    bool do_ring = !atomic_load_explicit(&l->mb_rung, memory_order_relaxed);
    atomic_store_explicit(&l->mb_rung, true, memory_order_relaxed);
    pthread_mutex_unlock(&l->mb_lock);
    if (do_ring)
        ring(l);
}

static void drain_mailbox(rt_loop *l)
{
    pthread_mutex_lock(&l->mb_lock);
    rt_coro *cos = l->mb_coros_head;
    rt__post *posts = l->mb_posts_head;
    l->mb_coros_head = l->mb_coros_tail = NULL;
    l->mb_posts_head = l->mb_posts_tail = NULL;
    atomic_store_explicit(&l->mb_rung, false, memory_order_relaxed);
    pthread_mutex_unlock(&l->mb_lock);
    while (cos) {
        rt_coro *next = cos->next;
        rt__schedule(cos);
        cos = next;
    }
    while (posts) {
        rt__post *next = posts->next;
        posts->fn(posts->arg);
        free(posts);
        posts = next;
    }
}

static void evfd_event(rt_io *io, uint32_t ev)
{
    (void)ev;
    uint64_t v;
    while (read(io->fd, &v, sizeof v) > 0) {
    }
}

/* ---- timers: a binary min-heap of armed timers, indexed from 1 ---------------- */

static void heap_set(rt_loop *l, size_t i, rt_timer *t)
{
    l->heap[i] = t;
    t->idx = i + 1;
}

static void heap_up(rt_loop *l, size_t i)
{
    rt_timer *t = l->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (l->heap[p]->deadline <= t->deadline)
            break;
        heap_set(l, i, l->heap[p]);
        i = p;
    }
    heap_set(l, i, t);
}

static void heap_down(rt_loop *l, size_t i)
{
    rt_timer *t = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->heap_len)
            break;
        if (c + 1 < l->heap_len && l->heap[c + 1]->deadline < l->heap[c]->deadline)
            c++;
        if (t->deadline <= l->heap[c]->deadline)
            break;
        heap_set(l, i, l->heap[c]);
        i = c;
    }
    heap_set(l, i, t);
}

void rt_timer_start(rt_timer *t, int64_t deadline)
{
    rt_loop *l = rt__cur;
    if (!l)
        rt__panic("rt_timer_start outside a loop");
    if (t->idx)
        rt_timer_stop(t);
    t->deadline = deadline;
    if (l->heap_len == l->heap_cap) {
        size_t cap = l->heap_cap ? l->heap_cap * 2 : 64;
        rt_timer **h = realloc(l->heap, cap * sizeof *h);
        if (!h)
            rt__panic("out of memory");
        l->heap = h;
        l->heap_cap = cap;
    }
    l->heap[l->heap_len] = t;
    t->idx = ++l->heap_len;
    heap_up(l, l->heap_len - 1);
}

void rt_timer_stop(rt_timer *t)
{
    rt_loop *l = rt__cur;
    if (!t->idx || !l)
        return;
    size_t i = t->idx - 1;
    t->idx = 0;
    l->heap_len--;
    if (i == l->heap_len)
        return;
    rt_timer *last = l->heap[l->heap_len];
    heap_set(l, i, last);
    if (i > 0 && l->heap[(i - 1) / 2]->deadline > last->deadline)
        heap_up(l, i);
    else
        heap_down(l, i);
}

void rt__timers_run(rt_loop *l, int64_t now)
{
    while (l->heap_len && l->heap[0]->deadline <= now) {
        rt_timer *t = l->heap[0];
        rt_timer_stop(t);
        t->fn(t);
    }
}

int64_t rt__timers_next(rt_loop *l) { return l->heap_len ? l->heap[0]->deadline : BZ_NO_DEADLINE; }

/* ---- the scheduler --------------------------------------------------------------- */

#define MAX_EVENTS 256

/* A batch runs for at most this long; what is left of it waits behind
 * the coroutines the next poll makes runnable (see run_ready). */
#define BATCH_NS (500 * 1000)

/* Runs what is runnable now; coroutines made runnable meanwhile wait for
 * the next turn, so I/O is polled between batches.  A batch that runs
 * past BATCH_NS is cut: its rest is returned (*rest, *rest_tail) to be
 * queued after whatever the next poll's I/O wakes — so a burst of expensive
 * steps (thousands of TLS handshakes, say) delays a newly readable
 * socket by one slice, not by the whole burst. */
static void run_ready(rt_loop *l, rt_coro **rest, rt_coro **rest_tail)
{
    rt_coro *batch = l->runq_head, *tail = l->runq_tail;
    l->runq_head = l->runq_tail = NULL;
    /* One coroutine makes at most one call before it parks: alone, its
     * call is made at once (no park for a flush that batches nothing). */
    l->batch_many = batch != tail;
    int64_t t0 = bz_now_ns();
    unsigned k = 0;
    while (batch) {
        rt_coro *co = batch;
        batch = co->next;
        co->next = NULL;
        rt__resume(l, co);
        /* the clock is read every 8 resumes: cheap steps stay cheap */
        if (batch && (++k & 7) == 0 && bz_now_ns() - t0 > BATCH_NS) {
            *rest = batch;
            *rest_tail = tail;
            return;
        }
    }
    *rest = *rest_tail = NULL;
}

/* Appends a cut batch's rest behind the run queue. */
static void requeue(rt_loop *l, rt_coro *rest, rt_coro *rest_tail)
{
    if (!rest)
        return;
    if (l->runq_tail)
        l->runq_tail->next = rest;
    else
        l->runq_head = rest;
    l->runq_tail = rest_tail;
}

/* While coroutines stay runnable, poll for I/O only every POLL_EVERY
 * batches or POLL_NS of running, whichever comes first: an epoll_wait per
 * batch would cost a system call per couple of context switches, yet I/O
 * must not starve behind busy coroutines — one connection that always has
 * input (each turn a slice of it, then a yield) must not hold every other
 * socket off for 32 slices. */
#define POLL_EVERY 32
#define POLL_NS (500 * 1000)

static void loop_body(rt_loop *l)
{
    struct epoll_event evs[MAX_EVENTS];
    unsigned skipped = 0;
    int64_t polled = bz_now_ns();
    while (!atomic_load_explicit(&g_stop, memory_order_acquire)) {
        l->now = bz_now_ns();
        rt_coro *rest, *rest_tail;
        run_ready(l, &rest, &rest_tail);
        /* The batch's reads and writes, made together: their coroutines
         * are runnable again, so the turn goes on without a poll (below). */
        if (l->batch)
            rt__batch_flush(l);
        int timeout = -1;
        if (l->runq_head || rest) {
            int64_t t = bz_now_ns();
            if (!rest && ++skipped < POLL_EVERY && t - polled < POLL_NS &&
                !atomic_load_explicit(&l->mb_rung, memory_order_relaxed)) {
                /* rt_now() in a timer's callback is the time it runs
                 * at: a callback that re-arms itself "until rt_now()
                 * reaches the deadline" would otherwise see the turn's
                 * stale time, re-arm at a deadline already past, and
                 * spin in rt__timers_run forever. */
                l->now = t;
                if (l->heap_len)
                    rt__timers_run(l, t);
                continue;
            }
            timeout = 0;
        } else {
            int64_t next = rt__timers_next(l);
            if (next != BZ_NO_DEADLINE) {
                int64_t d = next - bz_now_ns();
                /* round up so we never wake just before the deadline */
                timeout = d <= 0 ? 0 : (int)((d + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS);
                if (d > 0 && timeout > 3600000)
                    timeout = 3600000;
            }
        }
        skipped = 0;
        /* This loop's batched log lines go out when their time is up: the
         * wait ends by then (l->now is this turn's clock, late by at most
         * the turn's work). */
        int64_t due = bz_log_flush_due();
        if (due != BZ_NO_DEADLINE) {
            if (due <= l->now) {
                bz_log_flush();
            } else if (timeout != 0) {
                int64_t ms = (due - l->now + BZ_NS_PER_MS - 1) / BZ_NS_PER_MS;
                if (timeout < 0 || ms < timeout)
                    timeout = (int)ms;
            }
        }
        int n = epoll_wait(l->epfd, evs, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) {
            perror("bazaar: epoll_wait");
            abort();
        }
        l->now = polled = bz_now_ns();
        for (int i = 0; i < n; i++)
            rt__io_dispatch(l, evs[i].data.ptr, evs[i].events);
        /* A cut batch's rest goes behind what I/O woke (the point of the
         * cut) but ahead of timers that expired since: timers still wake
         * their coroutines in deadline order. */
        requeue(l, rest, rest_tail);
        if (l->heap_len)
            rt__timers_run(l, l->now);
        drain_mailbox(l);
    }
}

static int loop_init(rt_loop *l, int index)
{
    memset(l, 0, sizeof *l);
    l->index = index;
    pthread_mutex_init(&l->mb_lock, NULL);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0)
        return -errno;
    l->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->evfd < 0)
        return -errno;
    l->evio.fd = l->evfd;
    l->evio.loop = l;
    l->evio.on_event = evfd_event;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = &l->evio};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->evfd, &ev) != 0)
        return -errno;
    return 0;
}

static void loop_fini(rt_loop *l)
{
    rt__coro_free_all(l);
    /* Posts nobody ran: free them (their arguments are abandoned, like the
     * coroutines still parked). */
    rt__post *p = l->mb_posts_head;
    while (p) {
        rt__post *next = p->next;
        free(p);
        p = next;
    }
    free(l->heap);
    close(l->epfd);
    close(l->evfd);
    pthread_mutex_destroy(&l->mb_lock);
}

static void loop_enter(rt_loop *l)
{
    rt__cur = l;
#ifdef RT_TSAN
    l->tsan_sched_fiber = __tsan_get_current_fiber();
#endif
    rt__signals_install_guard(l);
    rt__batch_init(l); /* on this thread: the ring is this thread's */
    bz_log_batch(true);
    rt__stats_start(l);
    loop_body(l);
    rt__batch_fini(l);
    bz_log_batch(false); /* flushes */
    rt__signals_remove_guard(l);
    rt__cur = NULL;
}

static void *loop_thread(void *p)
{
    loop_enter(p);
    return NULL;
}

typedef struct {
    rt_fn fn;
    void *arg;
} main_req;

static void main_coro(void *p)
{
    main_req *m = p;
    m->fn(m->arg);
    rt_shutdown(); /* wakes anything parked on the shutdown context */
    atomic_store_explicit(&g_stop, true, memory_order_release);
    for (int i = 0; i < g_nloops; i++)
        ring(&g_loops[i]);
}

int rt_run(const rt_options *opt, rt_fn main_fn, void *arg)
{
    rt_options o = opt ? *opt : (rt_options){0};
    if (o.threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.threads = n > 0 ? (int)n : 1;
    }
    /* A write to a closed socket must fail with EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    g_stack_size = o.stack_size ? o.stack_size : RT_DEFAULT_STACK;
    g_stack_warm = o.stack_warm > 0 ? o.stack_warm : 0;
    atomic_store(&g_stop, false);
    int br = rt__batch_probe();
    if (br != 0)
        return br;
    g_nloops = o.threads;
    g_loops = calloc((size_t)o.threads, sizeof *g_loops);
    if (!g_loops)
        return -ENOMEM;
    rt_ctx_init(&g_shutdown, NULL);
    for (int i = 0; i < o.threads; i++) {
        int r = loop_init(&g_loops[i], i);
        if (r) {
            for (int j = 0; j <= i; j++)
                loop_fini(&g_loops[j]);
            free(g_loops);
            g_loops = NULL;
            g_nloops = 0;
            return r;
        }
    }
    /* Signals first: every thread created after this inherits the mask
     * that routes SIGTERM/SIGINT to the signalfd. */
    if (o.handle_signals)
        rt__signals_start(&g_loops[0]);
    rt__offload_start(o.offload_threads > 0 ? o.offload_threads : 2);
    for (int i = 1; i < o.threads; i++)
        pthread_create(&g_loops[i].thread, NULL, loop_thread, &g_loops[i]);

    main_req m = {main_fn, arg};
    rt__cur = &g_loops[0];
    rt__schedule(rt__coro_new(&g_loops[0], main_coro, &m));
    loop_enter(&g_loops[0]);

    for (int i = 1; i < o.threads; i++)
        pthread_join(g_loops[i].thread, NULL);
    if (o.handle_signals)
        rt__signals_stop();
    rt__offload_stop();
    for (int i = 0; i < o.threads; i++)
        loop_fini(&g_loops[i]);
    rt_ctx_release(&g_shutdown);
    free(g_loops);
    g_loops = NULL;
    g_nloops = 0;
    return 0;
}

/* rt/offload.c — a small thread pool for calls that truly block.  The
 * calling coroutine parks; the worker wakes it through its loop's mailbox. */
#include "rt/rt-private.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct job {
    rt_fn fn;
    void *arg;
    rt_coro *co;
    struct job *next;
    int state; /* 0 queued, 1 running, 2 done */
} job;

static pthread_mutex_t g_lk = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static job *g_head, *g_tail;
static bool g_quit;
static pthread_t *g_threads;
static int g_n;
/* statistics, under g_lk */
static int64_t g_queued, g_done;
static int g_busy;

/* Offloaded work (password hashes, inflating large messages) is bulk
 * work: on a machine with as many busy pool threads as cores, the loops
 * must still get a core at once when a socket wakes them, or every
 * client's latency becomes the pool's.  A lower priority (nice 10) for
 * the pool threads only, so the scheduler prefers the loops. */
#define OFFLOAD_NICE 10

static void *worker(void *unused)
{
    (void)unused;
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), OFFLOAD_NICE);
    pthread_mutex_lock(&g_lk);
    for (;;) {
        while (!g_head && !g_quit)
            pthread_cond_wait(&g_cv, &g_lk);
        if (!g_head && g_quit)
            break;
        job *j = g_head;
        g_head = j->next;
        if (!g_head)
            g_tail = NULL;
        j->state = 1;
        g_queued--;
        g_busy++;
        pthread_mutex_unlock(&g_lk);
        j->fn(j->arg);
        pthread_mutex_lock(&g_lk);
        g_busy--;
        g_done++;
        j->state = 2;
        /* Under the lock: the waiter checks state under it too, so it
         * cannot return (and free the job) between these two lines. */
        rt_wake(j->co, 0);
    }
    pthread_mutex_unlock(&g_lk);
    return NULL;
}

void rt__offload_start(int n)
{
    g_quit = false;
    g_n = n;
    g_threads = calloc((size_t)n, sizeof *g_threads);
    if (!g_threads)
        rt__panic("out of memory");
    for (int i = 0; i < n; i++)
        pthread_create(&g_threads[i], NULL, worker, NULL);
}

void rt__offload_stop(void)
{
    pthread_mutex_lock(&g_lk);
    g_quit = true;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_lk);
    for (int i = 0; i < g_n; i++)
        pthread_join(g_threads[i], NULL);
    free(g_threads);
    g_threads = NULL;
    g_n = 0;
    g_head = g_tail = NULL;
    g_queued = 0;
}

rt_offload_stats rt_offload_stats_read(void)
{
    pthread_mutex_lock(&g_lk);
    rt_offload_stats s = {g_n, g_busy, g_queued, g_done};
    pthread_mutex_unlock(&g_lk);
    return s;
}

int rt_offload(rt_ctx *ctx, rt_fn fn, void *arg)
{
    job j = {fn, arg, rt_self(), NULL, 0};
    if (!j.co)
        rt__panic("rt_offload outside a coroutine");
    pthread_mutex_lock(&g_lk);
    if (g_tail)
        g_tail->next = &j;
    else
        g_head = &j;
    g_tail = &j;
    g_queued++;
    pthread_cond_signal(&g_cv);
    rt_coro *self = rt_self();
    if (self)
        rt__why(self, "offload");
    int r = rt_park(ctx, BZ_NO_DEADLINE, &g_lk);
    pthread_mutex_lock(&g_lk);
    if (r != 0 && j.state == 0) {
        /* Still queued: drop it. */
        job **pp = &g_head, *prev = NULL;
        while (*pp && *pp != &j) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        if (*pp) {
            *pp = j.next;
            g_queued--;
        }
        if (g_tail == &j)
            g_tail = prev;
        pthread_mutex_unlock(&g_lk);
        return r;
    }
    /* Running (or done): wait for the worker whatever the context says,
     * since fn may be using our stack. */
    while (j.state != 2) {
        if (self)
            rt__why(self, "offload (running)");
        rt_park(NULL, BZ_NO_DEADLINE, &g_lk);
        pthread_mutex_lock(&g_lk);
    }
    pthread_mutex_unlock(&g_lk);
    return 0;
}

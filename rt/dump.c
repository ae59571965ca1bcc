/* rt/dump.c — every live coroutine and what it waits on, for the admin
 * listener's /debug/pprof/goroutine (see rt.h, the coroutine dump).
 *
 * A coroutine's state belongs to its loop's thread, so the dump does not
 * read it from outside: it posts a job to each loop in turn (rt_post runs
 * it on that thread, between coroutines, when none of them runs) and
 * waits for the job to finish before asking the next loop.  The caller's
 * callback thus never runs on two threads at once, and a semaphore
 * orders each loop's writes before the caller reads them (TSan agrees).
 * Nothing is kept: a dump costs nothing until someone asks for one. */
#include "rt/rt-private.h"

#include <stdlib.h>
#include <string.h>

rt_note rt_note_set(const char *what, const char *detail)
{
    rt_coro *co = rt_self();
    if (!co)
        return (rt_note){0};
    rt_note prev = co->note;
    co->note = (rt_note){what, detail};
    return prev;
}

void rt_note_restore(rt_note prev)
{
    rt_coro *co = rt_self();
    if (co)
        co->note = prev;
}

void rt_park_reason(const char *why)
{
    rt_coro *co = rt_self();
    if (co)
        rt__why(co, why);
}

/* Shared by the asking coroutine and the loop that answers; the last of
 * the two to let go frees it.  A caller whose context ends marks it
 * `gone` under the lock, so a loop that runs it later skips the callback
 * (whose argument may be gone too). */
typedef struct {
    void (*fn)(const rt_coro_info *, void *);
    void *arg;
    rt_sem done;
    pthread_mutex_t lk;
    bool gone;
    _Atomic int refs;
} dump_job;

static void job_unref(dump_job *j)
{
    if (atomic_fetch_sub_explicit(&j->refs, 1, memory_order_acq_rel) == 1) {
        rt_sem_destroy(&j->done);
        pthread_mutex_destroy(&j->lk);
        free(j);
    }
}

static void dump_loop(void *p)
{
    dump_job *j = p;
    rt_loop *l = rt__cur;
    int64_t now = bz_now_ns();
    pthread_mutex_lock(&j->lk);
    for (rt_coro *co = l->all; co; co = co->all_next) {
        if (co->exited)
            continue; /* pooled, or finished and waiting to be joined */
        bool parked = atomic_load_explicit(&co->wstate, memory_order_relaxed) == RT_PARKED;
        rt_coro_info in = {
            .loop = l->index,
            .id = co->id,
            .state = parked ? 1 : 0,
            .why = parked ? co->why : NULL,
            /* why_fd is stored by socket waits only (rt/io.c) */
            .fd = parked && co->why && !strncmp(co->why, "socket ", 7) ? co->why_fd : -1,
            .note = co->note,
            .age_ns = co->born ? now - co->born : 0,
            .parked_ns = parked && co->parked_at ? now - co->parked_at : 0,
            .local = co->local,
        };
        if (!j->gone)
            j->fn(&in, j->arg);
    }
    pthread_mutex_unlock(&j->lk);
    rt_sem_release(&j->done);
    job_unref(j);
}

int rt_coro_dump(rt_ctx *ctx, void (*fn)(const rt_coro_info *info, void *arg), void *arg)
{
    for (int i = 0; i < rt_nloops(); i++) {
        dump_job *j = calloc(1, sizeof *j);
        if (!j)
            rt__panic("out of memory");
        j->fn = fn;
        j->arg = arg;
        rt_sem_init(&j->done, 0);
        pthread_mutex_init(&j->lk, NULL);
        atomic_init(&j->refs, 2);
        rt_post(rt_loop_at(i), dump_loop, j);
        int r = rt_sem_acquire(&j->done, ctx, BZ_NO_DEADLINE);
        if (r) {
            pthread_mutex_lock(&j->lk);
            j->gone = true;
            pthread_mutex_unlock(&j->lk);
        }
        job_unref(j);
        if (r)
            return r;
    }
    return 0;
}

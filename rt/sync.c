/* rt/sync.c — coroutine-aware mutex, semaphore, wait group and channel.
 *
 * Each primitive is a pthread mutex guarding a little state and FIFO
 * queues of parked coroutines (rt_waitq).  Waiting queues the coroutine
 * and parks it with the lock released atomically (rt_park's `unlock`).
 * Releasing hands the resource straight to the first waiter that can still
 * be woken: a waiter whose context ended meanwhile loses the wake-up race
 * (rt_wake returns false) and is skipped, so nothing is ever lost. */
#include "rt/rt-private.h"

#include <errno.h>
#include <stdlib.h>

void rt__wq_push(rt_waitq *q, rt_coro *co)
{
    co->wq_next = NULL;
    co->wq_prev = q->tail;
    if (q->tail)
        q->tail->wq_next = co;
    else
        q->head = co;
    q->tail = co;
    co->wq_linked = true;
}

void rt__wq_remove(rt_waitq *q, rt_coro *co)
{
    if (co->wq_prev)
        co->wq_prev->wq_next = co->wq_next;
    else
        q->head = co->wq_next;
    if (co->wq_next)
        co->wq_next->wq_prev = co->wq_prev;
    else
        q->tail = co->wq_prev;
    co->wq_prev = co->wq_next = NULL;
    co->wq_linked = false;
}

rt_coro *rt__wq_pop(rt_waitq *q)
{
    rt_coro *co = q->head;
    if (co)
        rt__wq_remove(q, co);
    return co;
}

/* Caller holds *lk; returns with *lk held.  Result of the park: 0 when a
 * releaser woke us (and handed us what we waited for), else -errno. */
static int wq_wait(rt_waitq *q, pthread_mutex_t *lk, rt_ctx *ctx, int64_t deadline, const char *why)
{
    rt_coro *co = rt_self();
    if (!co)
        rt__panic("a blocking wait was called outside a coroutine");
    rt__why(co, why);
    rt__wq_push(q, co);
    int r = rt_park(ctx, deadline, lk);
    pthread_mutex_lock(lk);
    if (co->wq_linked)
        rt__wq_remove(q, co);
    return r;
}

/* Wakes the first waiter that can still be woken; caller holds the lock. */
static rt_coro *wq_wake_one(rt_waitq *q, int res)
{
    rt_coro *co;
    while ((co = rt__wq_pop(q)))
        if (rt_wake(co, res))
            return co;
    return NULL;
}

static void wq_wake_all(rt_waitq *q, int res)
{
    while (wq_wake_one(q, res)) {
    }
}

int rt_waitq_wait(rt_waitq *q, pthread_mutex_t *lk, rt_ctx *ctx, int64_t deadline, void **val)
{
    rt_coro *self = rt_self();
    if (!self)
        rt__panic("rt_waitq_wait outside a coroutine");
    self->wq_val = NULL;
    int r = wq_wait(q, lk, ctx, deadline, "wait queue");
    if (r == 0 && val)
        *val = self->wq_val;
    return r;
}

bool rt_waitq_wake_one(rt_waitq *q, int result, void *val)
{
    rt_coro *co;
    while ((co = rt__wq_pop(q))) {
        co->wq_val = val; /* read by the waiter only if this wake succeeds */
        if (rt_wake(co, result))
            return true;
    }
    return false;
}

void rt_waitq_wake_all(rt_waitq *q, int result) { wq_wake_all(q, result); }

/* ---- mutex ----------------------------------------------------------------- */

void rt_mutex_init(rt_mutex *m)
{
    pthread_mutex_init(&m->lk, NULL);
    m->locked = false;
    m->q = (rt_waitq){0};
}

void rt_mutex_destroy(rt_mutex *m) { pthread_mutex_destroy(&m->lk); }

int rt_mutex_lock(rt_mutex *m, rt_ctx *ctx)
{
    pthread_mutex_lock(&m->lk);
    if (!m->locked) {
        m->locked = true;
        pthread_mutex_unlock(&m->lk);
        return 0;
    }
    int r = wq_wait(&m->q, &m->lk, ctx, BZ_NO_DEADLINE, "mutex");
    pthread_mutex_unlock(&m->lk);
    return r; /* 0: unlock handed the mutex to us */
}

bool rt_mutex_trylock(rt_mutex *m)
{
    pthread_mutex_lock(&m->lk);
    bool ok = !m->locked;
    m->locked = true;
    pthread_mutex_unlock(&m->lk);
    return ok;
}

void rt_mutex_unlock(rt_mutex *m)
{
    pthread_mutex_lock(&m->lk);
    if (!wq_wake_one(&m->q, 0))
        m->locked = false;
    pthread_mutex_unlock(&m->lk);
}

/* ---- semaphore ---------------------------------------------------------------- */

void rt_sem_init(rt_sem *s, int64_t count)
{
    pthread_mutex_init(&s->lk, NULL);
    s->count = count;
    s->q = (rt_waitq){0};
}

void rt_sem_destroy(rt_sem *s) { pthread_mutex_destroy(&s->lk); }

int rt_sem_acquire(rt_sem *s, rt_ctx *ctx, int64_t deadline)
{
    pthread_mutex_lock(&s->lk);
    if (s->count > 0) {
        s->count--;
        pthread_mutex_unlock(&s->lk);
        return 0;
    }
    int r = wq_wait(&s->q, &s->lk, ctx, deadline, "semaphore");
    pthread_mutex_unlock(&s->lk);
    return r;
}

bool rt_sem_tryacquire(rt_sem *s)
{
    pthread_mutex_lock(&s->lk);
    bool ok = s->count > 0;
    if (ok)
        s->count--;
    pthread_mutex_unlock(&s->lk);
    return ok;
}

void rt_sem_release(rt_sem *s)
{
    pthread_mutex_lock(&s->lk);
    if (!wq_wake_one(&s->q, 0))
        s->count++;
    pthread_mutex_unlock(&s->lk);
}

/* ---- wait group ----------------------------------------------------------------- */

void rt_wg_init(rt_wg *w)
{
    pthread_mutex_init(&w->lk, NULL);
    w->count = 0;
    w->q = (rt_waitq){0};
}

void rt_wg_destroy(rt_wg *w) { pthread_mutex_destroy(&w->lk); }

void rt_wg_add(rt_wg *w, int64_t n)
{
    pthread_mutex_lock(&w->lk);
    w->count += n;
    if (w->count < 0)
        rt__panic("rt_wg: negative counter");
    if (w->count == 0)
        wq_wake_all(&w->q, 0);
    pthread_mutex_unlock(&w->lk);
}

void rt_wg_done(rt_wg *w) { rt_wg_add(w, -1); }

int rt_wg_wait(rt_wg *w, rt_ctx *ctx)
{
    pthread_mutex_lock(&w->lk);
    int r = 0;
    if (w->count > 0)
        r = wq_wait(&w->q, &w->lk, ctx, BZ_NO_DEADLINE, "wait group");
    pthread_mutex_unlock(&w->lk);
    return r;
}

/* ---- channel ----------------------------------------------------------------------- */

void rt_chan_init(rt_chan *c, size_t cap)
{
    pthread_mutex_init(&c->lk, NULL);
    c->cap = cap ? cap : 1;
    c->buf = calloc(c->cap, sizeof *c->buf);
    if (!c->buf)
        rt__panic("out of memory");
    c->head = c->len = 0;
    c->closed = false;
    c->recvq = c->sendq = (rt_waitq){0};
}

void rt_chan_destroy(rt_chan *c)
{
    free(c->buf);
    pthread_mutex_destroy(&c->lk);
}

/* Caller holds the lock.  Delivers v to a parked receiver or the buffer. */
static bool chan_put(rt_chan *c, void *v)
{
    rt_coro *co;
    while ((co = rt__wq_pop(&c->recvq))) {
        co->wq_val = v; /* read by the receiver only if the wake succeeds */
        if (rt_wake(co, 0))
            return true;
    }
    if (c->len < c->cap) {
        c->buf[(c->head + c->len) % c->cap] = v;
        c->len++;
        return true;
    }
    return false;
}

/* Caller holds the lock.  Takes a value from the buffer or a parked sender. */
static bool chan_take(rt_chan *c, void **out)
{
    if (c->len) {
        *out = c->buf[c->head];
        c->head = (c->head + 1) % c->cap;
        c->len--;
        /* Room now: move one parked sender's value into the buffer. */
        rt_coro *co;
        while ((co = rt__wq_pop(&c->sendq))) {
            void *v = co->wq_val;
            if (rt_wake(co, 0)) {
                c->buf[(c->head + c->len) % c->cap] = v;
                c->len++;
                break;
            }
        }
        return true;
    }
    rt_coro *co;
    while ((co = rt__wq_pop(&c->sendq))) {
        void *v = co->wq_val;
        if (rt_wake(co, 0)) {
            *out = v;
            return true;
        }
    }
    return false;
}

int rt_chan_send(rt_chan *c, void *v, rt_ctx *ctx, int64_t deadline)
{
    pthread_mutex_lock(&c->lk);
    if (c->closed) {
        pthread_mutex_unlock(&c->lk);
        return -EPIPE;
    }
    if (chan_put(c, v)) {
        pthread_mutex_unlock(&c->lk);
        return 0;
    }
    rt_self()->wq_val = v;
    int r = wq_wait(&c->sendq, &c->lk, ctx, deadline, "channel send");
    pthread_mutex_unlock(&c->lk);
    return r;
}

int rt_chan_trysend(rt_chan *c, void *v)
{
    pthread_mutex_lock(&c->lk);
    int r = c->closed ? -EPIPE : chan_put(c, v) ? 0 : -EAGAIN;
    pthread_mutex_unlock(&c->lk);
    return r;
}

int rt_chan_recv(rt_chan *c, void **out, rt_ctx *ctx, int64_t deadline)
{
    pthread_mutex_lock(&c->lk);
    if (chan_take(c, out)) {
        pthread_mutex_unlock(&c->lk);
        return 0;
    }
    if (c->closed) {
        pthread_mutex_unlock(&c->lk);
        return -EPIPE;
    }
    rt_coro *self = rt_self();
    int r = wq_wait(&c->recvq, &c->lk, ctx, deadline, "channel receive");
    if (r == 0)
        *out = self->wq_val;
    pthread_mutex_unlock(&c->lk);
    return r;
}

int rt_chan_tryrecv(rt_chan *c, void **out)
{
    pthread_mutex_lock(&c->lk);
    int r = chan_take(c, out) ? 0 : c->closed ? -EPIPE : -EAGAIN;
    pthread_mutex_unlock(&c->lk);
    return r;
}

void rt_chan_close(rt_chan *c)
{
    pthread_mutex_lock(&c->lk);
    c->closed = true;
    wq_wake_all(&c->recvq, -EPIPE);
    wq_wake_all(&c->sendq, -EPIPE);
    pthread_mutex_unlock(&c->lk);
}

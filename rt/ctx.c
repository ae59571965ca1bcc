/* rt/ctx.c — contexts: deadline + cancel, parent → child.
 *
 * Locking: each context has its own mutex guarding its child list and its
 * waiter list.  Cancellation walks top-down (parent lock, then child lock),
 * and release locks the parent to unlink — the same order, so no deadlock.
 * Deadlines need no timer of their own: every wait merges the context's
 * deadline into its own (rt_park), and rt_ctx_err checks the clock. */
#include "rt/rt-private.h"

#include <errno.h>

void rt_ctx_init_deadline(rt_ctx *c, rt_ctx *parent, int64_t deadline)
{
    pthread_mutex_init(&c->lock, NULL);
    c->parent = parent;
    c->children = c->sib_prev = c->sib_next = NULL;
    c->waiters = NULL;
    c->err = 0;
    c->deadline = deadline;
    if (parent) {
        pthread_mutex_lock(&parent->lock);
        if (parent->deadline < c->deadline)
            c->deadline = parent->deadline;
        c->err = parent->err; /* a child of an ended context starts ended */
        c->sib_next = parent->children;
        if (parent->children)
            parent->children->sib_prev = c;
        parent->children = c;
        pthread_mutex_unlock(&parent->lock);
    }
}

void rt_ctx_init(rt_ctx *c, rt_ctx *parent) { rt_ctx_init_deadline(c, parent, BZ_NO_DEADLINE); }

void rt_ctx_init_timeout(rt_ctx *c, rt_ctx *parent, int64_t timeout_ns)
{
    rt_ctx_init_deadline(c, parent, bz_now_ns() + timeout_ns);
}

void rt_ctx_tighten(rt_ctx *c, int64_t deadline)
{
    pthread_mutex_lock(&c->lock);
    if (deadline < c->deadline)
        c->deadline = deadline;
    pthread_mutex_unlock(&c->lock);
}

/* Caller holds c->lock. */
static void cancel_locked(rt_ctx *c, int err)
{
    /* The deadline is only noticed when someone looks (rt_ctx_err, a
     * park's timer), so a cancel may come after it passed unobserved: it
     * came first, and the context ended by timing out.  (gRPC: a client
     * resetting a stream at its deadline must not turn DEADLINE_EXCEEDED
     * into CANCELLED.) */
    if (!c->err)
        c->err =
            err == ECANCELED && c->deadline != BZ_NO_DEADLINE && bz_now_ns() >= c->deadline ? ETIMEDOUT : err;
    while (c->waiters) {
        rt_coro *co = c->waiters;
        c->waiters = co->ctx_next;
        if (c->waiters)
            c->waiters->ctx_prev = NULL;
        co->ctx_next = co->ctx_prev = NULL;
        __atomic_store_n(&co->wait_ctx, NULL, __ATOMIC_RELEASE);
        rt_wake(co, -c->err);
    }
    for (rt_ctx *k = c->children; k; k = k->sib_next) {
        pthread_mutex_lock(&k->lock);
        cancel_locked(k, err);
        pthread_mutex_unlock(&k->lock);
    }
}

void rt_ctx_cancel(rt_ctx *c)
{
    pthread_mutex_lock(&c->lock);
    cancel_locked(c, ECANCELED);
    pthread_mutex_unlock(&c->lock);
}

int rt_ctx_err(rt_ctx *c)
{
    if (!c)
        return 0;
    pthread_mutex_lock(&c->lock);
    int e = c->err;
    if (!e && c->deadline != BZ_NO_DEADLINE && bz_now_ns() >= c->deadline)
        e = c->err = ETIMEDOUT;
    pthread_mutex_unlock(&c->lock);
    return e;
}

int64_t rt_ctx_deadline(const rt_ctx *c) { return c ? c->deadline : BZ_NO_DEADLINE; }

void rt_ctx_release(rt_ctx *c)
{
    rt_ctx *p = c->parent;
    if (p) {
        pthread_mutex_lock(&p->lock);
        if (c->sib_prev)
            c->sib_prev->sib_next = c->sib_next;
        else
            p->children = c->sib_next;
        if (c->sib_next)
            c->sib_next->sib_prev = c->sib_prev;
        pthread_mutex_unlock(&p->lock);
    }
    /* Children outliving their parent lose the link (their memory is their
     * owners'); they keep the deadline they inherited. */
    pthread_mutex_lock(&c->lock);
    for (rt_ctx *k = c->children; k;) {
        rt_ctx *next = k->sib_next;
        k->parent = NULL;
        k->sib_prev = k->sib_next = NULL;
        k = next;
    }
    c->children = NULL;
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_destroy(&c->lock);
}

void rt__ctx_add_waiter(rt_ctx *c, rt_coro *co, int *err)
{
    pthread_mutex_lock(&c->lock);
    int e = c->err;
    if (!e && c->deadline != BZ_NO_DEADLINE && bz_now_ns() >= c->deadline)
        e = c->err = ETIMEDOUT;
    if (e) {
        *err = -e;
    } else {
        __atomic_store_n(&co->wait_ctx, c, __ATOMIC_RELEASE);
        co->ctx_prev = NULL;
        co->ctx_next = c->waiters;
        if (c->waiters)
            c->waiters->ctx_prev = co;
        c->waiters = co;
    }
    pthread_mutex_unlock(&c->lock);
}

void rt__ctx_remove_waiter(rt_coro *co)
{
    /* Only co itself calls this, so the context it waited on is alive. */
    rt_ctx *c = __atomic_load_n(&co->wait_ctx, __ATOMIC_ACQUIRE);
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    if (co->wait_ctx == c) { /* cancel may have unlinked us meanwhile */
        if (co->ctx_prev)
            co->ctx_prev->ctx_next = co->ctx_next;
        else
            c->waiters = co->ctx_next;
        if (co->ctx_next)
            co->ctx_next->ctx_prev = co->ctx_prev;
        co->ctx_next = co->ctx_prev = NULL;
        __atomic_store_n(&co->wait_ctx, NULL, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&c->lock);
}

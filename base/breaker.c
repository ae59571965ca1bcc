/* base/breaker.c — see breaker.h.  Every state change is a
 * compare-and-swap on `state`, so exactly one thread makes each change and
 * counts it; probe_at is written before the swap that publishes OPEN. */
#include <bazaar/breaker.h>

#include <bazaar/metrics.h>

#include <stdio.h>
#include <string.h>

#define MS (1000 * 1000LL)

void bz_breaker_init(bz_breaker *b, const char *name, int failures, int64_t open_ns)
{
    memset(b, 0, sizeof *b);
    snprintf(b->name, sizeof b->name, "%s", name ? name : "");
    b->failures = failures > 0 ? failures : 0;
    b->open_ns = open_ns > 0 ? open_ns : 1000 * MS;
    atomic_init(&b->state, BZ_BREAKER_CLOSED);
}

static void count(_Atomic int64_t *c) { atomic_fetch_add_explicit(c, 1, memory_order_relaxed); }

/* from → to; true if this thread made the change (and counted it). */
static bool change(bz_breaker *b, int from, int to)
{
    if (!atomic_compare_exchange_strong_explicit(&b->state, &from, to, memory_order_acq_rel, memory_order_acquire))
        return false;
    count(to == BZ_BREAKER_OPEN ? &b->to_open : to == BZ_BREAKER_HALF_OPEN ? &b->to_half_open : &b->to_closed);
    return true;
}

bz_breaker_verdict bz_breaker_allow(bz_breaker *b, int64_t now, int64_t *retry_ns)
{
    int s = atomic_load_explicit(&b->state, memory_order_acquire);
    if (s == BZ_BREAKER_CLOSED)
        return BZ_BREAKER_PASS;
    int64_t retry = b->open_ns;
    /* A lost swap means another thread changed the state: look again
     * (a few times at most; then refuse, which is always safe). */
    for (int i = 0; i < 4; i++) {
        if (s == BZ_BREAKER_CLOSED)
            return BZ_BREAKER_PASS;
        if (s == BZ_BREAKER_HALF_OPEN) { /* the probe is out: wait for it */
            retry = b->open_ns;
            break;
        }
        int64_t at = atomic_load_explicit(&b->probe_at, memory_order_acquire);
        if (now < at) {
            retry = at - now;
            break;
        }
        if (change(b, BZ_BREAKER_OPEN, BZ_BREAKER_HALF_OPEN))
            return BZ_BREAKER_PROBE;
        s = atomic_load_explicit(&b->state, memory_order_acquire);
    }
    count(&b->rejected);
    if (retry_ns)
        *retry_ns = retry > MS ? retry : MS;
    return BZ_BREAKER_REJECT;
}

bool bz_breaker_report(bz_breaker *b, bool probe, bz_breaker_outcome o, int64_t started, int64_t now)
{
    if (b->failures <= 0)
        return false;
    if (o == BZ_BREAKER_SUCCESS) {
        /* written only when it changes (by 1 ms): a success on the hot
         * path reads the shared line, it does not bounce it between loops */
        if (atomic_load_explicit(&b->fails, memory_order_relaxed))
            atomic_store_explicit(&b->fails, 0, memory_order_relaxed);
        if (now - atomic_load_explicit(&b->last_ok, memory_order_relaxed) >= MS)
            atomic_store_explicit(&b->last_ok, now, memory_order_relaxed);
        if (!probe && atomic_load_explicit(&b->state, memory_order_relaxed) == BZ_BREAKER_CLOSED)
            return false;
        /* the dependency answered: closed, from whichever state */
        for (int i = 0; i < 4; i++) {
            int s = atomic_load_explicit(&b->state, memory_order_acquire);
            if (s == BZ_BREAKER_CLOSED || change(b, s, BZ_BREAKER_CLOSED))
                break;
        }
        return false;
    }
    if (o == BZ_BREAKER_NEUTRAL) {
        /* the probe learned nothing: the next caller probes (probe_at is
         * already past) */
        if (probe)
            change(b, BZ_BREAKER_HALF_OPEN, BZ_BREAKER_OPEN);
        return false;
    }
    if (probe) {
        atomic_store_explicit(&b->probe_at, now + b->open_ns, memory_order_release);
        if (change(b, BZ_BREAKER_HALF_OPEN, BZ_BREAKER_OPEN))
            return true;
        /* closed meanwhile by another call's success: an ordinary failure */
    }
    int n = atomic_fetch_add_explicit(&b->fails, 1, memory_order_relaxed) + 1;
    /* nothing answered for at least the second half of this call's wait */
    bool silent = started > 0 && now - atomic_load_explicit(&b->last_ok, memory_order_relaxed) >= (now - started) / 2;
    if ((n < b->failures && !silent) || atomic_load_explicit(&b->state, memory_order_acquire) != BZ_BREAKER_CLOSED)
        return false; /* calls still in flight when it opened change nothing */
    atomic_store_explicit(&b->probe_at, now + b->open_ns, memory_order_release);
    return change(b, BZ_BREAKER_CLOSED, BZ_BREAKER_OPEN);
}

bz_breaker_state bz_breaker_get_state(const bz_breaker *b)
{
    return (bz_breaker_state)atomic_load_explicit(&((bz_breaker *)b)->state, memory_order_acquire);
}

const char *bz_breaker_state_name(bz_breaker_state s)
{
    return s == BZ_BREAKER_OPEN ? "open" : s == BZ_BREAKER_HALF_OPEN ? "half_open" : "closed";
}

static int64_t rd(const _Atomic int64_t *c) { return atomic_load_explicit((_Atomic int64_t *)c, memory_order_relaxed); }

void bz_breaker_metrics(bz_buf *o, const bz_breaker *const *bs, int n)
{
    bz_metric_family(o, "bazaar_breaker_state", "gauge",
                     "Circuit breaker of a dependency: 0 closed, 1 open (failing fast), 2 half-open (one probe out).");
    for (int i = 0; i < n; i++) {
        if (!bs[i])
            continue;
        bz_buf l = BZ_BUF_INIT;
        bz_metric_label(&l, "dependency", bs[i]->name);
        bz_metric_int(o, "bazaar_breaker_state", l.data, bz_breaker_get_state(bs[i]));
        bz_buf_free(&l);
    }
    bz_metric_family(o, "bazaar_breaker_transitions_total", "counter", "Circuit breaker state changes, by the state entered.");
    for (int i = 0; i < n; i++) {
        if (!bs[i])
            continue;
        static const char *const to[] = {"open", "half_open", "closed"};
        const int64_t v[] = {rd(&bs[i]->to_open), rd(&bs[i]->to_half_open), rd(&bs[i]->to_closed)};
        for (int k = 0; k < 3; k++) {
            bz_buf l = BZ_BUF_INIT;
            bz_metric_label(&l, "dependency", bs[i]->name);
            bz_metric_label(&l, "to", to[k]);
            bz_metric_int(o, "bazaar_breaker_transitions_total", l.data, v[k]);
            bz_buf_free(&l);
        }
    }
    bz_metric_family(o, "bazaar_breaker_rejected_total", "counter",
                     "Calls failed fast (503 unavailable) because the dependency's circuit breaker was open.");
    for (int i = 0; i < n; i++) {
        if (!bs[i])
            continue;
        bz_buf l = BZ_BUF_INIT;
        bz_metric_label(&l, "dependency", bs[i]->name);
        bz_metric_int(o, "bazaar_breaker_rejected_total", l.data, rd(&bs[i]->rejected));
        bz_buf_free(&l);
    }
}

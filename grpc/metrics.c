/* grpc/metrics.c — calls by method and status code, and their latency, for
 * /metrics (bazaar_grpc_server_handled_total,
 * bazaar_grpc_server_handling_seconds).  Methods are few and fixed at
 * start-up: a slot per (method, code) with relaxed atomic counters. */
#include "grpc/grpc-private.h"

#include <bazaar/clock.h>
#include <bazaar/metrics.h>

#include <stdatomic.h>
#include <string.h>

#define MAX_METHODS 64
static const bz_hist_bounds bounds = {12, {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30}};

typedef struct {
    _Atomic(const char *) path;           /* NULL = free */
    _Atomic int64_t handled[GRPC_CODE__COUNT];
    bz_hist h;
} mslot;

static mslot slots[MAX_METHODS];
static _Atomic int64_t inflight;

void grpc_metrics_inflight_add(int64_t delta) { atomic_fetch_add_explicit(&inflight, delta, memory_order_relaxed); }
int64_t grpc_metrics_inflight(void) { return atomic_load_explicit(&inflight, memory_order_relaxed); }
static mslot unknown_slot; /* UNIMPLEMENTED and other unregistered paths */

static mslot *slot_for(const char *path)
{
    if (!path)
        return &unknown_slot;
    for (int i = 0; i < MAX_METHODS; i++) {
        const char *p = atomic_load_explicit(&slots[i].path, memory_order_acquire);
        if (p == path)
            return &slots[i];
        if (!p) {
            const char *expected = NULL;
            if (atomic_compare_exchange_strong(&slots[i].path, &expected, path) || expected == path)
                return &slots[i];
        }
    }
    return &unknown_slot;
}

void grpc_metrics_observe(const char *path, grpc_code code, int64_t ns)
{
    mslot *s = slot_for(path);
    if (code < 0 || code >= GRPC_CODE__COUNT)
        code = GRPC_UNKNOWN;
    atomic_fetch_add_explicit(&s->handled[code], 1, memory_order_relaxed);
    bz_hist_observe(&s->h, &bounds, ns);
}

static void render_slot(bz_buf *o, const char *method, mslot *s, bool histogram)
{
    bz_buf l = BZ_BUF_INIT;
    bz_metric_label(&l, "method", method);
    size_t base = l.len;
    if (!histogram) {
        for (int c = 0; c < GRPC_CODE__COUNT; c++) {
            int64_t v = atomic_load_explicit(&s->handled[c], memory_order_relaxed);
            if (!v)
                continue;
            l.len = base;
            bz_metric_label(&l, "code", grpc_code_name((grpc_code)c));
            bz_metric_int(o, "bazaar_grpc_server_handled_total", l.data, v);
        }
    } else {
        bz_hist_snap snap = {0};
        bz_hist_read(&s->h, &snap);
        if (snap.count)
            bz_metric_hist(o, "bazaar_grpc_server_handling_seconds", l.data, &bounds, &snap);
    }
    bz_buf_free(&l);
}

void grpc_metrics_render(bz_buf *o)
{
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0)
            bz_metric_family(o, "bazaar_grpc_server_handled_total", "counter",
                             "gRPC calls completed, by method and status code.");
        else
            bz_metric_family(o, "bazaar_grpc_server_handling_seconds", "histogram",
                             "Time from call start to its status.");
        for (int i = 0; i < MAX_METHODS; i++) {
            const char *p = atomic_load_explicit(&slots[i].path, memory_order_acquire);
            if (!p)
                break;
            render_slot(o, p + 1, &slots[i], pass == 1); /* "package.Service/Method" */
        }
        render_slot(o, "unknown", &unknown_slot, pass == 1);
    }
}

void grpc_metrics_each(void (*fn)(const char *path, const int64_t *handled, const bz_hist_snap *h, void *arg),
                       void *arg)
{
    for (int i = 0; i <= MAX_METHODS; i++) {
        mslot *s = i < MAX_METHODS ? &slots[i] : &unknown_slot;
        const char *p = i < MAX_METHODS ? atomic_load_explicit(&s->path, memory_order_acquire) : "(unknown method)";
        if (!p)
            continue;
        int64_t handled[GRPC_CODE__COUNT];
        for (int c = 0; c < GRPC_CODE__COUNT; c++)
            handled[c] = atomic_load_explicit(&s->handled[c], memory_order_relaxed);
        bz_hist_snap h = {0};
        bz_hist_read(&s->h, &h);
        fn(p, handled, &h, arg);
    }
}

const bz_hist_bounds *grpc_metrics_bounds(void) { return &bounds; }

/* grpc/metrics.c — calls by method and status code, and their latency, for
 * /metrics (bazaar_grpc_server_handled_total,
 * bazaar_grpc_server_handling_seconds).  Methods are few and fixed at
 * start-up: a slot per (method, code) with relaxed atomic counters. */
#include "grpc/grpc-private.h"

#include "base/clock.h"

#include <stdatomic.h>
#include <string.h>

#define MAX_METHODS 64
#define NBUCKETS 12
static const double bucket_s[NBUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30};

typedef struct {
    _Atomic(const char *) path;           /* NULL = free */
    _Atomic int64_t handled[GRPC_CODE__COUNT];
    _Atomic int64_t buckets[NBUCKETS];
    _Atomic int64_t count, sum_ns;
} mslot;

static mslot slots[MAX_METHODS];
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
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_ns, ns, memory_order_relaxed);
    double sec = (double)ns / 1e9;
    for (int b = 0; b < NBUCKETS; b++)
        if (sec <= bucket_s[b]) {
            atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
            break;
        }
}

static void render_slot(bz_buf *o, const char *method, mslot *s, bool histogram)
{
    if (!histogram) {
        for (int c = 0; c < GRPC_CODE__COUNT; c++) {
            int64_t v = atomic_load_explicit(&s->handled[c], memory_order_relaxed);
            if (v)
                bz_buf_printf(o, "bazaar_grpc_server_handled_total{method=\"%s\",code=\"%s\"} %lld\n", method,
                              grpc_code_name((grpc_code)c), (long long)v);
        }
        return;
    }
    int64_t n = atomic_load_explicit(&s->count, memory_order_relaxed);
    if (!n)
        return;
    int64_t cum = 0;
    for (int b = 0; b < NBUCKETS; b++) {
        cum += atomic_load_explicit(&s->buckets[b], memory_order_relaxed);
        bz_buf_printf(o, "bazaar_grpc_server_handling_seconds_bucket{method=\"%s\",le=\"%g\"} %lld\n", method,
                      bucket_s[b], (long long)cum);
    }
    bz_buf_printf(o, "bazaar_grpc_server_handling_seconds_bucket{method=\"%s\",le=\"+Inf\"} %lld\n", method,
                  (long long)n);
    bz_buf_printf(o, "bazaar_grpc_server_handling_seconds_sum{method=\"%s\"} %.6f\n", method,
                  (double)atomic_load_explicit(&s->sum_ns, memory_order_relaxed) / 1e9);
    bz_buf_printf(o, "bazaar_grpc_server_handling_seconds_count{method=\"%s\"} %lld\n", method, (long long)n);
}

void grpc_metrics_render(bz_buf *o)
{
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0)
            bz_buf_append_c(o, "# HELP bazaar_grpc_server_handled_total gRPC calls completed, by method and status code.\n"
                               "# TYPE bazaar_grpc_server_handled_total counter\n");
        else
            bz_buf_append_c(o, "# HELP bazaar_grpc_server_handling_seconds Time from call start to its status.\n"
                               "# TYPE bazaar_grpc_server_handling_seconds histogram\n");
        for (int i = 0; i < MAX_METHODS; i++) {
            const char *p = atomic_load_explicit(&slots[i].path, memory_order_acquire);
            if (!p)
                break;
            render_slot(o, p + 1, &slots[i], pass == 1); /* "bazaar.v1.UserService/GetUser" */
        }
        render_slot(o, "unknown", &unknown_slot, pass == 1);
    }
}

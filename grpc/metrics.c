/* grpc/metrics.c — the gRPC calls' recorder (http/observe.c): calls by
 * method and status code and their latency for /metrics
 * (bazaar_grpc_server_handled_total, bazaar_grpc_server_handling_seconds),
 * the calls in flight, and the admin console's view of them. */
#include "grpc/grpc-private.h"

#include <bazaar/metrics.h>
#include <bazaar/observe.h>

#include <string.h>

static const bz_hist_bounds bounds = {12, {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30}};

static const char *x__code_name(int code, char buf[16])
{
    (void)buf;
    return grpc_code_name((grpc_code)code);
}

/* "/bazaar.v1.UserService/GetUser" is shown as "bazaar.v1.UserService/GetUser" */
static const char *x__method_label(const char *path) { return path[0] == '/' ? path + 1 : path; }

static const http_obs_spec spec = {
    .count_name = "bazaar_grpc_server_handled_total",
    .count_help = "gRPC calls completed, by method and status code.",
    .hist_name = "bazaar_grpc_server_handling_seconds",
    .hist_help = "Time from call start to its status.",
    .key_label = "method",
    .outcome_label = "code",
    .unknown = "unknown",
    .bounds = &bounds,
    .outcome_name = x__code_name,
    .key_name = x__method_label,
};

http_obs grpc__obs = HTTP_OBS_INIT(&spec);
const http_obs_kind grpc__obs_kind = {"grpc started", "grpc", "code", x__code_name};

int64_t grpc_metrics_inflight(void) { return http_obs_in_flight(&grpc__obs); }

void grpc_metrics_render(bz_buf *o) { http_obs_render(&grpc__obs, o); }

typedef struct {
    void (*fn)(const char *path, const int64_t *handled, const bz_hist_snap *h, void *arg);
    void *arg;
} x__each;

/* A series is one (method, code): its calls under that code alone. */
static void x__one(const char *key, int variant, int outcome, const bz_hist_snap *h, void *arg)
{
    (void)variant;
    x__each *x = arg;
    int64_t handled[GRPC_CODE__COUNT] = {0};
    if (outcome >= 0 && outcome < GRPC_CODE__COUNT)
        handled[outcome] = h->count;
    x->fn(key ? key : "(unknown method)", handled, h, x->arg);
}

void grpc_metrics_each(void (*fn)(const char *path, const int64_t *handled, const bz_hist_snap *h, void *arg),
                       void *arg)
{
    x__each x = {fn, arg};
    http_obs_each(&grpc__obs, x__one, &x);
}

const bz_hist_bounds *grpc_metrics_bounds(void) { return &bounds; }

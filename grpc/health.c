/* grpc/health.c — grpc.health.v1.Health (Check and Watch). */
#include "grpc/grpc-private.h"

#include <bazaar/clock.h>

#include "grpc/health/v1/health.pb-c.h"

#include <errno.h>
#include <string.h>

#define WATCH_POLL_NS BZ_NS_PER_S

typedef struct {
    const grpc_server *g;
    const char *const *services; /* NULL: the services with a method on g */
    grpc_serving_fn serving;
    void *arg;
} health;

/* Whether g has a method at "/name/...". */
static bool registered(const grpc_server *g, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < g->n; i++) {
        const char *p = g->methods[i].path;
        if (p[0] == '/' && !strncmp(p + 1, name, n) && p[1 + n] == '/')
            return true;
    }
    return false;
}

static bool known(const health *h, const char *name)
{
    if (!*name)
        return true;
    if (!h->services)
        return registered(h->g, name);
    for (const char *const *s = h->services; *s; s++)
        if (!strcmp(*s, name))
            return true;
    return false;
}

static Grpc__Health__V1__HealthCheckResponse__ServingStatus status_of(const health *h, grpc_call *c,
                                                                       const char *name)
{
    if (!known(h, name))
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    return h->serving(h->arg, grpc_ctx(c)) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                                           : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

static int check(grpc_call *c, void *data)
{
    health *h = data;
    Grpc__Health__V1__HealthCheckRequest *in;
    if (grpc_recv(c, &grpc__health__v1__health_check_request__descriptor, (ProtobufCMessage **)&in) != 0)
        return grpc_finished(c) ? 0 : grpc_finish(c, GRPC_INVALID_ARGUMENT, "a HealthCheckRequest is required");
    if (!known(h, in->service))
        return grpc_finish(c, GRPC_NOT_FOUND, "unknown service %s", in->service);
    Grpc__Health__V1__HealthCheckResponse out = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    out.status = status_of(h, c, in->service);
    grpc_send(c, &out.base);
    return grpc_finish(c, GRPC_OK, NULL);
}

/* Sends the status now and whenever it changes, until the client leaves
 * or the server drains (a draining server reports NOT_SERVING first). */
static int watch(grpc_call *c, void *data)
{
    health *h = data;
    Grpc__Health__V1__HealthCheckRequest *in;
    if (grpc_recv(c, &grpc__health__v1__health_check_request__descriptor, (ProtobufCMessage **)&in) != 0)
        return grpc_finished(c) ? 0 : grpc_finish(c, GRPC_INVALID_ARGUMENT, "a HealthCheckRequest is required");
    int last = -1;
    for (;;) {
        int st = status_of(h, c, in->service);
        if (st != last) {
            Grpc__Health__V1__HealthCheckResponse out = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
            out.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
            if (grpc_send(c, &out.base) != 0)
                return 0;
            last = st;
        }
        if (rt_sleep(grpc_ctx(c), WATCH_POLL_NS) != 0)
            break;
        if (rt_ctx_err(rt_shutdown_ctx()) && last != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
            return grpc_finish(c, GRPC_UNAVAILABLE, "the server is shutting down");
    }
    int e = rt_ctx_err(grpc_ctx(c));
    return grpc_finish(c, e == ETIMEDOUT ? GRPC_DEADLINE_EXCEEDED : GRPC_CANCELLED, NULL);
}

void grpc_health_register(grpc_server *g, const char *const *services, grpc_serving_fn serving, void *arg)
{
    health *h = grpc__own(g, sizeof *h);
    *h = (health){g, services, serving, arg};
    grpc_server_add(g, &(grpc_method){"/grpc.health.v1.Health/Check", check, h, false, false});
    grpc_server_add(g, &(grpc_method){"/grpc.health.v1.Health/Watch", watch, h, false, true});
}

/* service/service.c — see <bazaar/service.h>: the service object, its
 * command line, and what the routers answer by default. */
#include "service/service-private.h"

#include <bazaar/log.h>
#include <bazaar/version.h>
#include <bazaar/metrics.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- default answers --------------------------------------------------------------- */

static int h_healthz(http_req *r, void *data)
{
    (void)data;
    return http_send(r, 200, "text/plain; charset=utf-8", "ok", 2);
}

/* {"status":"ok"}, or 503 {"status":"unavailable","failed":["db",...]}
 * (or "shutting down" while draining). */
static int default_readyz(http_req *r, void *data)
{
    bazaar_service *s = data;
    if (bazaar_draining(s)) {
        http_add_header(r, "Retry-After", "1");
        static const char b[] = "{\"status\":\"shutting down\"}";
        return http_send(r, 503, "application/json; charset=utf-8", b, sizeof b - 1);
    }
    bz_buf b = BZ_BUF_INIT;
    int failed = 0;
    for (int i = 0; i < s->nchecks; i++)
        if (!s->checks[i].fn(s->checks[i].arg, r->ctx)) {
            bz_buf_append_c(&b, failed++ ? ",\"" : "{\"status\":\"unavailable\",\"failed\":[\"");
            bz_buf_append_c(&b, s->checks[i].name); /* a name from code, not input */
            bz_buf_putc(&b, '"');
        }
    if (failed) {
        bz_buf_append_c(&b, "]}");
        http_add_header(r, "Retry-After", "1");
    } else {
        bz_buf_append_c(&b, "{\"status\":\"ok\"}");
    }
    int rc = http_send(r, failed ? 503 : 200, "application/json; charset=utf-8", b.data, b.len);
    bz_buf_free(&b);
    return rc;
}

static void metrics_page(bz_buf *b, const void *arg)
{
    (void)arg;
    bz_metrics_process(b);
    bz_metrics_build(b);
    grpc_metrics_render(b);
}

static int default_metrics(http_req *r, void *data)
{
    (void)data;
    http_set_status(r, 200);
    http_add_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    http_write_with(r, metrics_page, NULL);
    return 0;
}

/* The routes ask at request time, so a replacement given any time before
 * the run is what they call. */
static int h_readyz(http_req *r, void *data)
{
    bazaar_service *s = data;
    return s->readyz.fn(r, s->readyz.data);
}

static int h_metrics_admin(http_req *r, void *data)
{
    bazaar_service *s = data;
    return s->metrics.fn(r, s->metrics.data);
}

static int h_metrics_public(http_req *r, void *data)
{
    bazaar_service *s = data;
    /* An operator who gave metrics an address of their own does not want
     * them on the public port too. */
    if (s->o.admin_addr[0])
        return http_send_problem(r, 404, "not_found", "metrics are served on the admin address");
    return s->metrics.fn(r, s->metrics.data);
}

static void route(http_mux *m, const char *pattern, int (*fn)(http_req *, void *), void *data)
{
    char why[256];
    if (http_mux_handle(m, pattern, (http_handler){fn, data}, why, sizeof why) != 0)
        abort(); /* a fixed pattern: a bug, not input */
}

/* ---- the object ---------------------------------------------------------------------- */

bazaar_service *bazaar_new_with(const char *name, const bazaar_options *o)
{
    bazaar_service *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->name = name;
    s->o = *o;
    s->readyz = (http_handler){default_readyz, s};
    s->metrics = (http_handler){default_metrics, s};
    s->mux = http_mux_new();
    route(s->mux, "GET /healthz", h_healthz, s);
    route(s->mux, "GET /readyz", h_readyz, s);
    route(s->mux, "GET /metrics", h_metrics_public, s);
    s->admin_mux = http_mux_new();
    route(s->admin_mux, "GET /healthz", h_healthz, s);
    route(s->admin_mux, "GET /readyz", h_readyz, s);
    route(s->admin_mux, "GET /metrics", h_metrics_admin, s);
    return s;
}

bazaar_service *bazaar_new(const char *name, int argc, char **argv, const bz_flag *flags, size_t nflags)
{
    static bazaar_options o;
    static bz_flag std[BAZAAR_STANDARD_FLAGS];
    static char env[64];
    size_t k = 0;
    for (const char *p = name; *p && k + 1 < sizeof env; p++)
        env[k++] = isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_';
    env[k] = '\0';
    bazaar_options_defaults(&o);
    bz_flags *fs = bz_flags_new(name, env);
    bz_flags_add(fs, std, bazaar_standard_flags(&o, std));
    if (nflags)
        bz_flags_add(fs, flags, nflags);
    char err[512];
    int rc = bz_flags_parse(fs, argc, argv, err, sizeof err);
    if (rc == 0 && bazaar_options_check(&o, name, err, sizeof err) != 0)
        rc = -1;
    if (rc < 0) {
        fprintf(stderr, "%s\n", err);
        exit(2);
    }
    if (rc == BZ_FLAGS_HELP) {
        printf("usage: %s [flags]\n\nflags (each has an environment twin; flags win over the environment):\n", name);
        bz_flags_usage(fs, stdout);
        printf("\nDurations accept ms, s, m, h (e.g. 1m30s).  Bad values exit with status 2.\n");
        exit(0);
    }
    if (rc == BZ_FLAGS_VERSION) {
        printf("%s (bazaar %s)\n", name, bazaar_version());
        exit(0);
    }
    bz_flags_free(fs);
    bz_log_setup((bz_log_level)o.log_level, (bz_log_format)o.log_format);
    return bazaar_new_with(name, &o);
}

const bazaar_options *bazaar_opts(const bazaar_service *s) { return &s->o; }

http_mux *bazaar_mux(bazaar_service *s) { return s->mux; }
http_mux *bazaar_admin_mux(bazaar_service *s) { return s->admin_mux; }

void bazaar_handle(bazaar_service *s, http_handler h)
{
    s->handler = h;
    s->has_handler = true;
}

void bazaar_use(bazaar_service *s, http_middleware mw, void *cfg)
{
    if (s->nmws == BAZAAR_MAX_MWS)
        abort();
    s->mws[s->nmws++] = (http_mw){mw, cfg};
}

grpc_server *bazaar_grpc(bazaar_service *s)
{
    if (!s->grpc) {
        grpc_opts go = {.max_recv_bytes = s->o.grpc_max_recv_bytes,
                        .web_origins = s->o.grpc_web_origins,
                        .unary_timeout_ns = s->o.request_timeout_ns};
        s->grpc = grpc_server_new(&go);
        s->own_grpc = true;
    }
    return s->grpc;
}

void bazaar_set_grpc(bazaar_service *s, grpc_server *g)
{
    if (s->own_grpc)
        grpc_server_free(s->grpc);
    s->grpc = g;
    s->own_grpc = false;
}

void bazaar_ready_check(bazaar_service *s, const char *name, bazaar_check_fn fn, void *arg)
{
    if (s->nchecks == BAZAAR_MAX_CHECKS)
        abort();
    s->checks[s->nchecks++] = (struct bazaar_check){name, fn, arg};
}

bool bazaar_draining(const bazaar_service *s)
{
    return (s->srv && http_server_draining(s->srv)) || rt_ctx_err(rt_shutdown_ctx());
}

bool bazaar_ready(void *arg, rt_ctx *ctx)
{
    bazaar_service *s = arg;
    if (bazaar_draining(s))
        return false;
    for (int i = 0; i < s->nchecks; i++)
        if (!s->checks[i].fn(s->checks[i].arg, ctx))
            return false;
    return true;
}

void bazaar_handle_readyz(bazaar_service *s, http_handler h) { s->readyz = h; }
void bazaar_handle_metrics(bazaar_service *s, http_handler h) { s->metrics = h; }

void bazaar_on_start(bazaar_service *s, bazaar_start_fn fn, void *arg)
{
    if (s->nstarts == BAZAAR_MAX_HOOKS)
        abort();
    s->starts[s->nstarts++] = (struct bazaar_start){fn, arg};
}

void bazaar_on_stop(bazaar_service *s, bazaar_stop_fn fn, void *arg)
{
    if (s->nstops == BAZAAR_MAX_HOOKS)
        abort();
    s->stops[s->nstops++] = (struct bazaar_stop){fn, arg};
}

void bazaar_log_field(bazaar_service *s, const char *key, const char *value)
{
    if (s->nfields == BAZAAR_MAX_FIELDS)
        abort();
    s->fields[s->nfields++] = BZ_F_STR(key, value);
}

int bazaar_http_port(const bazaar_service *s) { return s->srv ? http_server_port(s->srv) : 0; }
int bazaar_grpc_port(const bazaar_service *s) { return s->gsrv ? http_server_port(s->gsrv) : 0; }
int bazaar_admin_port(const bazaar_service *s) { return s->asrv ? http_server_port(s->asrv) : 0; }

void x__service_free(bazaar_service *s)
{
    if (s->own_grpc)
        grpc_server_free(s->grpc);
    http_mux_free(s->mux);
    http_mux_free(s->admin_mux);
    free(s);
}

/* service/tls.c — --tls-cert/--tls-key: the server context every address
 * shares, and its reload on SIGHUP. */
#include "service/service-private.h"

#include <bazaar/log.h>
#include "base/notify.h"

#include <time.h>

#include <stdio.h>

rt_tls_server *x__tls_open(const bazaar_options *cfg, char *err, size_t errlen)
{
    char why[256];
    rt_tls_server *s = rt_tls_server_new(cfg->tls_cert, cfg->tls_key, why, sizeof why);
    if (!s)
        snprintf(err, errlen, "invalid --tls-cert/--tls-key: %s", why);
    return s;
}

typedef struct {
    rt_tls_server *s;
    const bazaar_options *cfg;
} watch;

typedef struct {
    const watch *w;
    int rc;
    char err[256];
} reload_job;

/* On an offload thread: reading files blocks. */
static void reload_files(void *p)
{
    reload_job *j = p;
    j->rc = rt_tls_server_reload(j->w->s, j->w->cfg->tls_cert, j->w->cfg->tls_key, j->err, sizeof j->err);
}

/* Under systemd the reload is bracketed by RELOADING=1 … READY=1, so
 * `systemctl reload` returns once the new pair is in use (or refused).
 * MONOTONIC_USEC lets a Type=notify-reload manager (systemd ≥ 253) match
 * the notification to its signal; older managers ignore it. */
static void notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[64];
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%lld",
             (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
    bz_notify(msg);
}

static void on_sighup(void *p)
{
    notify_reloading();
    reload_job j = {p, -1, ""};
    if (rt_offload(NULL, reload_files, &j) != 0 || j.rc != 0) {
        bz_log_err("tls: reload failed; keeping the current certificate", BZ_F_STR("error", j.err));
    } else {
        char desc[300];
        rt_tls_server_describe(j.w->s, desc, sizeof desc);
        bz_log_info("tls: certificate reloaded", BZ_F_STR("cert", desc));
    }
    bz_notify("READY=1");
}

void x__tls_reload_on_sighup(rt_tls_server *s, const bazaar_options *cfg)
{
    static watch w;
    w = (watch){s, cfg};
    char desc[300];
    rt_tls_server_describe(s, desc, sizeof desc);
    bz_log_info("tls: serving", BZ_F_STR("cert", desc));
    rt_on_sighup(on_sighup, &w);
}

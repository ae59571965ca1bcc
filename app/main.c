/* app/main.c — subcommand dispatch and the serve lifecycle. */
#include "app/app.h"

#include "base/log.h"
#include "rt/rt.h"

#include <stdio.h>

typedef struct {
    const bz_config *cfg;
    int status;
} serve_state;

static void serve_main(void *p)
{
    serve_state *s = p;
    bz_log_info("bazaar starting", BZ_F_STR("version", BAZAAR_VERSION),
                BZ_F_INT("threads", s->cfg->threads));
    /* Runs until SIGTERM/SIGINT cancels the shutdown context. */
    rt_park(rt_shutdown_ctx(), BZ_NO_DEADLINE, NULL);
    bz_log_info("bazaar stopped");
    s->status = 0;
}

int app_main(const bz_config *cfg)
{
    switch (cfg->command) {
    case BZ_CMD_SERVE: {
        serve_state s = {cfg, 1};
        rt_options o = {.threads = cfg->threads, .handle_signals = true};
        int r = rt_run(&o, serve_main, &s);
        if (r) {
            fprintf(stderr, "bazaar: cannot start the runtime (error %d)\n", -r);
            return 1;
        }
        return s.status;
    }
    default:
        fprintf(stderr, "bazaar: this command is not available yet in this build\n");
        return 1;
    }
}

/* cmd/bazaar.c — the bazaar binary: parses the command line and hands the
 * settings to the subcommand.  Exit codes: 0 ok, 1 runtime failure, 2 bad
 * command line. */
#include "app/config.h"
#include <bazaar/log.h>
#include "app/app.h"

#include <stdio.h>

int main(int argc, char **argv)
{
    static app_config cfg;
    char err[512];
    if (app_config_parse(&cfg, argc, argv, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    switch (cfg.command) {
    case APP_CMD_HELP:
        app_config_usage(stdout);
        return 0;
    case APP_CMD_VERSION:
        printf("bazaar %s\n", BAZAAR_VERSION);
        return 0;
    case APP_CMD_ENV_TEMPLATE:
        app_config_env_template(stdout);
        return 0;
    default:
        break;
    }
    bz_log_setup((bz_log_level)cfg.srv.log_level, (bz_log_format)cfg.srv.log_format);
    return app_main(&cfg);
}

/*
 * app/app.h — the marketplace application: runs a parsed command line.
 *
 * app/ is the top layer: domain services, REST and gRPC handlers,
 * migrations, seed, explain.  It talks to db/ and cache/ only through
 * their interfaces and knows nothing of sockets or drivers.
 */
#ifndef APP_APP_H
#define APP_APP_H

#include "app/config.h"

/* Runs cfg->command (serve, migrate, seed, explain).  Returns the process
 * exit status. */
int app_main(const app_config *cfg);

#endif

/*
 * app/app-private.h — what the subcommands share: the open backends and
 * the service over them.
 */
#ifndef APP_APP_PRIVATE_H
#define APP_APP_PRIVATE_H

#include "app/svc/svc.h"
#include "base/config.h"
#include <bazaar/http.h>

#include <stdio.h>

typedef struct app {
    const bz_config *cfg;
    db *db;
    db *db_read;          /* --db-read-url (serve only), or NULL */
    cache *cache;
    svc *svc;
    db_dialect dialect;
} app;

/* main.c: the HTTP settings of the command line */
http_server_opts app_http_opts(const bz_config *cfg);

/* seed.c, explain.c */
int app_seed(app *a, rt_ctx *ctx);
int app_explain(app *a, rt_ctx *ctx, FILE *out);

#endif

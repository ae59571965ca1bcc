/*
 * app/app-private.h — what the subcommands share: the open backends and
 * the service over them.
 */
#ifndef APP_APP_PRIVATE_H
#define APP_APP_PRIVATE_H

#include "app/svc/svc.h"
#include "app/config.h"
#include <bazaar/http.h>

#include <stdio.h>

typedef struct app {
    const app_config *cfg;
    db *db;
    db *db_read;          /* --db-read-url (serve only), or NULL */
    cache *cache;
    svc *svc;
    db_dialect dialect;
} app;


/* seed.c, explain.c */
int app_seed(app *a, rt_ctx *ctx);
int app_explain(app *a, rt_ctx *ctx, FILE *out);

#endif

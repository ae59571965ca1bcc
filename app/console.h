/*
 * app/console.h — the operator's console on the admin listener (see
 * app/console.c for what it serves and what it costs).
 */
#ifndef APP_CONSOLE_H
#define APP_CONSOLE_H

#include "app/admin.h"

typedef struct app_console app_console;

/* Adds the console's routes to the admin mux and starts its sampler
 * (call from a coroutine inside rt_run). */
app_console *app_console_start(app *a, http_mux *mux);
/* Stops the sampler and waits for it (from a coroutine). */
void app_console_free(app_console *c);
/* The /console/data document: points after `since` (0: all kept). */
void app_console_data(app_console *c, int64_t since, bz_buf *b);

/* Names the service's statements for db/stats and sets --slow-query. */
void app_console_name_statements(const app_config *cfg);

#endif

/*
 * app/pprof.h — Go's /debug/pprof endpoints on the admin listener (see
 * app/pprof.c): CPU profile, heap profile (with tcmalloc), coroutine dump.
 */
#ifndef APP_PPROF_H
#define APP_PPROF_H

#include <bazaar/http.h>

/* Adds GET /debug/pprof/{,profile,heap,goroutine} to mux. */
void app_pprof_routes(http_mux *mux);

#endif

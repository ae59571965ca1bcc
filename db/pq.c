/* db/pq.c — dlopen()s libpq on first use; see pq.h. */
#define DB_PQ_IMPL
#include "db/pq.h"

#include <dlfcn.h>
#include <pthread.h>

db_pq_api db__pq;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char load_error[256];

static void load(void)
{
    void *h = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(load_error, sizeof load_error, "cannot load libpq.so.5 (Debian package libpq5): %s", dlerror());
        return;
    }
#define DB_PQ_SYM(name)                                                                                            \
    if (!(*(void **)&db__pq.name = dlsym(h, #name))) {                                                             \
        snprintf(load_error, sizeof load_error, "libpq.so.5 has no %s", #name);                                   \
        return;                                                                                                    \
    }
    DB_PQ_FUNCS(DB_PQ_SYM)
#undef DB_PQ_SYM
}

int db__pq_load(bz_error *err)
{
    pthread_once(&once, load);
    if (load_error[0])
        return bz_err_set(err, BZ_ERR_UNAVAILABLE, "%s", load_error), -1;
    return 0;
}

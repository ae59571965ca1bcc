/* base/errlog.c — the ring of the last errors answered (base/errlog.h). */
#include <bazaar/errlog.h>

#include <bazaar/clock.h>

#include <pthread.h>
#include <string.h>

static pthread_mutex_t lk = PTHREAD_MUTEX_INITIALIZER;
static bz_errlog_entry ring[BZ_ERRLOG_MAX];
static int64_t added;

/* Truncating copy: no printf machinery, since a load of 404s pays it
 * per request (snprintf was ~2,000 instructions for the five fields). */
static void x__copy(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strnlen(src, cap - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

void bz_errlog_add(const char *where, int status, const char *code, const char *trace_id, const char *message)
{
    int64_t now = bz_wall_us();
    pthread_mutex_lock(&lk);
    bz_errlog_entry *e = &ring[added % BZ_ERRLOG_MAX]; /* filled in place: a few hundred bytes */
    e->time_us = now;
    x__copy(e->where, sizeof e->where, where);
    e->status = status;
    x__copy(e->code, sizeof e->code, code);
    x__copy(e->trace_id, sizeof e->trace_id, trace_id);
    x__copy(e->message, sizeof e->message, message);
    added++;
    pthread_mutex_unlock(&lk);
}

int bz_errlog_read(bz_errlog_entry *out, int max, int64_t *total)
{
    pthread_mutex_lock(&lk);
    int n = 0;
    for (int64_t i = added - 1; i >= 0 && i >= added - BZ_ERRLOG_MAX && n < max; i--)
        out[n++] = ring[i % BZ_ERRLOG_MAX];
    if (total)
        *total = added;
    pthread_mutex_unlock(&lk);
    return n;
}

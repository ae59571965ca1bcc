/* app/svc/rendition.c — what adapters made of cached records, kept with
 * the record bytes they were made from (svc.h: renditions). */
#include "app/svc/svc-private.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define KEEP_MAX 4096 /* bytes of record + rendition a slot keeps */

typedef struct rslot {
    int64_t id;
    int kind;           /* 0: empty */
    size_t reclen;      /* b holds the record, then the rendition */
    bz_buf b;
} rslot;

static _Thread_local rslot *tab;
static pthread_key_t tab_key;
static pthread_once_t tab_once = PTHREAD_ONCE_INIT;

static void tab_free(void *p)
{
    rslot *t = p;
    for (int i = 0; i < SVC_RENDITION_SLOTS; i++)
        bz_buf_free(&t[i].b);
    free(t);
}

static void tab_key_make(void) { pthread_key_create(&tab_key, tab_free); }

static rslot *slot_of(int kind, int64_t id)
{
    uint64_t h = (uint64_t)id * 0x9e3779b97f4a7c15ull + (uint64_t)kind;
    return &tab[(h >> 32) % SVC_RENDITION_SLOTS];
}

bool svc_rendition_get(int kind, int64_t id, bz_str rec, bz_str *out)
{
    if (!tab)
        return false;
    rslot *s = slot_of(kind, id);
    if (s->kind != kind || s->id != id || s->reclen != rec.n || memcmp(s->b.data, rec.p, rec.n) != 0)
        return false;
    *out = bz_str_make(s->b.data + rec.n, s->b.len - rec.n);
    return true;
}

void svc_rendition_put(int kind, int64_t id, bz_str rec, const void *p, size_t n)
{
    if (!tab) {
        pthread_once(&tab_once, tab_key_make);
        tab = calloc(SVC_RENDITION_SLOTS, sizeof *tab);
        if (!tab)
            return;
        pthread_setspecific(tab_key, tab); /* freed when the thread ends */
    }
    rslot *s = slot_of(kind, id);
    s->kind = 0;
    if (rec.n + n > KEEP_MAX) {
        bz_buf_free(&s->b);
        return;
    }
    s->b.len = 0;
    bz_buf_append(&s->b, rec.p, rec.n);
    bz_buf_append(&s->b, p, n);
    s->kind = kind;
    s->id = id;
    s->reclen = rec.n;
}

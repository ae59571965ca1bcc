/* cache/pubsub.c — the local side of pub/sub: subscriptions per channel,
 * each a bounded queue (rt_chan) the subscriber's coroutine parks on.  The
 * memory backend publishes straight into it; the Redis backend's
 * subscriber connection delivers what Redis sends. */
#include "cache/cache-private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE 256 /* messages a slow subscriber may fall behind by */

typedef struct msg {
    size_t n;
    char data[];
} msg;

struct cache_sub {
    cache *c;
    char channel[128];
    rt_chan q;
    struct cache_sub *next;
    atomic_llong dropped;
};

struct cache_hub {
    pthread_mutex_t lk;
    cache_sub *subs;
};

cache_hub *cache__hub_new(void)
{
    cache_hub *h = calloc(1, sizeof *h);
    if (!h)
        abort();
    pthread_mutex_init(&h->lk, NULL);
    return h;
}

void cache__hub_free(cache_hub *h)
{
    pthread_mutex_destroy(&h->lk);
    free(h);
}

void cache__hub_deliver(cache_hub *h, const char *channel, const void *data, size_t n)
{
    pthread_mutex_lock(&h->lk);
    for (cache_sub *s = h->subs; s; s = s->next) {
        if (strcmp(s->channel, channel))
            continue;
        msg *m = malloc(sizeof *m + n);
        if (!m)
            abort();
        m->n = n;
        memcpy(m->data, data, n);
        if (rt_chan_trysend(&s->q, m) != 0) {
            free(m); /* full (or closing): this subscriber misses it */
            atomic_fetch_add(&s->dropped, 1);
        }
    }
    pthread_mutex_unlock(&h->lk);
}

int cache__hub_channels(cache_hub *h, char (*out)[128], int max)
{
    int k = 0;
    pthread_mutex_lock(&h->lk);
    for (cache_sub *s = h->subs; s && k < max; s = s->next) {
        bool dup = false;
        for (int i = 0; i < k && !dup; i++)
            dup = !strcmp(out[i], s->channel);
        if (!dup)
            strcpy(out[k++], s->channel);
    }
    pthread_mutex_unlock(&h->lk);
    return k;
}

static bool has_channel(cache_hub *h, const char *channel, const cache_sub *except)
{
    for (cache_sub *s = h->subs; s; s = s->next)
        if (s != except && !strcmp(s->channel, channel))
            return true;
    return false;
}

int cache_subscribe(cache *c, rt_ctx *ctx, const char *channel, cache_sub **out, bz_error *err)
{
    size_t cn = strlen(channel);
    if (cn + 8 >= sizeof((cache_sub *)0)->channel)
        return bz_err_set(err, BZ_ERR_INVALID, "cache: channel name too long"), -EINVAL;
    cache_sub *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->c = c;
    memcpy(s->channel, "bazaar:", 7);
    memcpy(s->channel + 7, channel, cn + 1);
    rt_chan_init(&s->q, QUEUE);
    pthread_mutex_lock(&c->hub->lk);
    bool first = !has_channel(c->hub, s->channel, NULL);
    s->next = c->hub->subs;
    c->hub->subs = s;
    pthread_mutex_unlock(&c->hub->lk);
    if (first) {
        int r = c->be->ops->sub_first(c->be, ctx, s->channel, err);
        if (r) {
            cache_unsubscribe(s);
            return r;
        }
    }
    *out = s;
    return 0;
}

int cache_sub_recv(cache_sub *s, rt_ctx *ctx, bz_buf *out)
{
    void *p;
    rt_note prev = rt_note_set("pub/sub", s->channel); /* for the coroutine dump */
    int r = rt_chan_recv(&s->q, &p, ctx, BZ_NO_DEADLINE);
    rt_note_restore(prev);
    if (r)
        return r;
    msg *m = p;
    bz_buf_clear(out);
    bz_buf_append(out, m->data, m->n);
    free(m);
    return 0;
}

void cache_unsubscribe(cache_sub *s)
{
    cache *c = s->c;
    pthread_mutex_lock(&c->hub->lk);
    for (cache_sub **pp = &c->hub->subs; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    bool last = !has_channel(c->hub, s->channel, NULL);
    rt_chan_close(&s->q);
    pthread_mutex_unlock(&c->hub->lk);
    if (last)
        c->be->ops->sub_last(c->be, s->channel);
    void *p;
    while (rt_chan_tryrecv(&s->q, &p) == 0)
        free(p);
    rt_chan_destroy(&s->q);
    free(s);
}

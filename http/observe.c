/* http/observe.c — the one end of every request and call: access-log
 * line, metrics recorder, in-flight gauge (observe.h).
 *
 * A recorder counts into per-thread shards: each event-loop thread claims
 * its own shard of a recorder on first use, so the request path takes no
 * lock and shares no cache line; a scrape sums the shards.  A shard's
 * slots are claimed only by its owner thread and published with a release
 * store, so a concurrent scrape sees either a whole slot or none. */
#include "http/http-private.h"

#include "base/log-private.h"

#include <bazaar/clock.h>
#include <bazaar/log.h>
#include <bazaar/observe.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NSLOTS 512    /* distinct (key, variant, outcome) triples a thread counts; more are dropped */
#define MAX_RECORDERS 8

typedef struct {
    _Atomic(const char *) key; /* NULL = free; x__unknown for requests that matched nothing */
    int variant, outcome;
    bz_hist h;
} x__slot;

typedef struct http__obs_shard {
    struct http__obs_shard *next;
    x__slot slots[NSLOTS];
} x__shard;

static pthread_mutex_t shards_lk = PTHREAD_MUTEX_INITIALIZER; /* new shards, scrapes */
static int nrecorders; /* under shards_lk */
static _Thread_local x__shard *mine[MAX_RECORDERS];
static const char x__unknown[] = ""; /* the key of "matched nothing": a pointer no route has */

/* ---- the HTTP recorder ---- */

static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"};

int http_obs_method_index(bz_str m)
{
    /* by length, then the bytes (methods are case-sensitive) */
#define X__IS(lit) (!memcmp(m.p, lit, sizeof lit - 1))
    switch (m.n) {
    case 3: return X__IS("GET") ? 0 : X__IS("PUT") ? 3 : 7;
    case 4: return X__IS("HEAD") ? 1 : X__IS("POST") ? 2 : 7;
    case 5: return X__IS("PATCH") ? 4 : 7;
    case 6: return X__IS("DELETE") ? 5 : 7;
    case 7: return X__IS("OPTIONS") ? 6 : 7;
    default: return 7;
    }
#undef X__IS
}

static const char *x__method_name(int i) { return methods[i >= 0 && i < 8 ? i : 7]; }

static const char *x__status_name(int status, char buf[16])
{
    snprintf(buf, 16, "%d", status);
    return buf;
}

static const bz_hist_bounds http_bounds = {
    14, {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}};

static const http_obs_spec http_spec = {
    .count_name = "bazaar_http_requests_total",
    .count_help = "HTTP requests by route pattern, method and status.",
    .hist_name = "bazaar_http_request_duration_seconds",
    .hist_help = "Time from request head to handler return.",
    .key_label = "route",
    .variant_label = "method",
    .outcome_label = "status",
    .unknown = "(unmatched)",
    .bounds = &http_bounds,
    .variant_name = x__method_name,
    .outcome_name = x__status_name,
};

http_obs http_obs_requests = HTTP_OBS_INIT(&http_spec);

const http_obs_kind http_obs_http = {"request started", "request", "status", NULL};

/* ---- recording ---- */

static x__shard *x__my_shard(http_obs *o)
{
    int i = atomic_load_explicit(&o->index_, memory_order_acquire);
    if (!i) {
        pthread_mutex_lock(&shards_lk);
        i = atomic_load_explicit(&o->index_, memory_order_relaxed);
        if (!i) {
            if (nrecorders == MAX_RECORDERS)
                abort(); /* a program has a recorder per transport, not per request */
            i = ++nrecorders;
            atomic_store_explicit(&o->index_, i, memory_order_release);
        }
        pthread_mutex_unlock(&shards_lk);
    }
    x__shard *sh = mine[i - 1];
    if (!sh) {
        sh = calloc(1, sizeof *sh);
        if (!sh)
            abort();
        pthread_mutex_lock(&shards_lk);
        sh->next = atomic_load_explicit(&o->shards_, memory_order_relaxed);
        atomic_store_explicit(&o->shards_, sh, memory_order_release);
        pthread_mutex_unlock(&shards_lk);
        mine[i - 1] = sh;
    }
    return sh;
}

static void x__record(http_obs *o, const char *key, int variant, int outcome, int64_t ns)
{
    x__shard *sh = x__my_shard(o);
    if (!key)
        key = x__unknown;
    uint64_t h = (uint64_t)(uintptr_t)key * 31 + (uint64_t)variant * 7 + (uint64_t)outcome;
    h ^= h >> 17;
    for (int i = 0; i < NSLOTS; i++) {
        x__slot *s = &sh->slots[(h + (uint64_t)i) % NSLOTS];
        const char *k = atomic_load_explicit(&s->key, memory_order_relaxed);
        if (!k) {
            s->variant = variant;
            s->outcome = outcome;
            atomic_store_explicit(&s->key, key, memory_order_release);
            k = key;
        }
        if (k == key && s->variant == variant && s->outcome == outcome) {
            bz_hist_observe(&s->h, o->spec->bounds, ns);
            return;
        }
    }
    /* the shard is full: dropped */
}

void http_obs_start(const http_req *r, const http_obs_kind *k, bz_str method)
{
    bz_log_dbg(k->started, BZ_F_STRN("method", method.p, method.n), BZ_F_STRN("path", r->path.p, r->path.n),
               BZ_F_STR("request_id", r->request_id));
}

void http_obs_attach(http_req *r, http_obs *o)
{
    if (r->obs)
        return;
    r->obs = o;
    atomic_fetch_add_explicit(&o->in_flight, 1, memory_order_relaxed);
}

/* The access-log line in JSON, written in one pass into the log's buffer
 * (base/log-private.h): the fields bz_log_info is given below, the same
 * bytes (tests/unit/test_http.c compares the two), a third of the cost.
 * False when the log writes text: the caller logs the fields. */
static bool x__line(const http_req *r, const http_obs_done *d, int64_t ns, char buf[16])
{
    const http_obs_kind *k = d->kind;
    bz_buf *o = bz__log_json_begin(BZ_LOG_INFO, k->done, strlen(k->done));
    if (!o)
        return false;
    const char *route = d->route ? d->route : "", *out = k->outcome_name ? k->outcome_name(d->outcome, buf) : NULL;
    size_t routen = strlen(route), outn = out ? strlen(out) : 0, okn = strlen(k->outcome_key);
    /* fixed-size arrays of the request: NUL-terminated within them */
    size_t idn = strnlen(r->request_id, sizeof r->request_id), peern = strnlen(r->peer, sizeof r->peer);
    size_t parn = strnlen(r->trace.parent_id, sizeof r->trace.parent_id);
    size_t mn = d->method.p ? d->method.n : 0, pn = r->path.p ? r->path.n : 0;
    char *w = bz__log_room(o, 192 + okn + 6 * (mn + routen + pn + outn + idn + peern + parn));
    BZ__PUT(w, ",\"method\":\"");
    w = bz__json_esc(w, d->method.p, mn);
    BZ__PUT(w, "\",\"route\":\"");
    w = bz__json_esc(w, route, routen);
    BZ__PUT(w, "\",\"path\":\"");
    w = bz__json_esc(w, r->path.p, pn);
    BZ__PUT(w, "\",\"");
    memcpy(w, k->outcome_key, okn); /* a key from code: as it is (log.h) */
    w += okn;
    if (out) {
        BZ__PUT(w, "\":\"");
        w = bz__json_esc(w, out, outn);
        *w++ = '"';
    } else {
        BZ__PUT(w, "\":");
        w += bz_fmt_i64(w, d->outcome);
    }
    BZ__PUT(w, ",\"bytes\":");
    w += bz_fmt_i64(w, r->bytes_out);
    BZ__PUT(w, ",\"duration_ms\":");
    w = bz__log_ms(w, (double)ns / 1e6);
    BZ__PUT(w, ",\"request_id\":\"");
    w = bz__json_esc(w, r->request_id, idn);
    BZ__PUT(w, "\",\"peer\":\"");
    w = bz__json_esc(w, r->peer, peern);
    BZ__PUT(w, "\",\"parent_id\":\"");
    w = bz__json_esc(w, r->trace.parent_id, parn);
    *w++ = '"';
    bz__log_json_end(o, w, BZ_LOG_INFO);
    return true;
}

void http_obs_end(http_req *r, const http_obs_done *d)
{
    http_obs *o = r->obs;
    const http_obs_kind *k = d->kind;
    bool line = k && bz_log_enabled(BZ_LOG_INFO);
    if (!o && !line)
        return;
    int64_t ns = bz_now_ns() - r->start_ns;
    if (o) {
        r->obs = NULL;
        atomic_fetch_sub_explicit(&o->in_flight, 1, memory_order_relaxed);
        x__record(o, d->route, d->variant, d->outcome, ns);
    }
    if (!line)
        return;
    char buf[16];
    if (x__line(r, d, ns, buf))
        return;
    bz_field outcome = k->outcome_name ? BZ_F_STR(k->outcome_key, k->outcome_name(d->outcome, buf))
                                       : BZ_F_INT(k->outcome_key, d->outcome);
    bz_log_info(k->done, BZ_F_STRN("method", d->method.p, d->method.n), BZ_F_STR("route", d->route ? d->route : ""),
                BZ_F_STRN("path", r->path.p, r->path.n), outcome, BZ_F_INT("bytes", r->bytes_out),
                BZ_F_DBL("duration_ms", (double)ns / 1e6), BZ_F_STR("request_id", r->request_id),
                BZ_F_STR("peer", r->peer), BZ_F_STR("parent_id", r->trace.parent_id));
}

int http_obs_status(const http_req *r, int rc)
{
    if (rc < 0 && !r->started) /* what http__handler_failed (server.c) answers */
        return rc == -EMSGSIZE ? 413 : rc == -EBADMSG ? 400 : 500;
    return r->status ? r->status : 200;
}

/* ---- reading ---- */

int64_t http_obs_in_flight(http_obs *o) { return atomic_load_explicit(&o->in_flight, memory_order_relaxed); }

void http_obs_each(http_obs *o, void (*fn)(const char *key, int variant, int outcome, const bz_hist_snap *h, void *arg),
                   void *arg)
{
    pthread_mutex_lock(&shards_lk);
    for (x__shard *sh = atomic_load_explicit(&o->shards_, memory_order_acquire); sh; sh = sh->next)
        for (int i = 0; i < NSLOTS; i++) {
            x__slot *s = &sh->slots[i];
            const char *k = atomic_load_explicit(&s->key, memory_order_acquire);
            if (!k)
                continue;
            bz_hist_snap h = {0};
            bz_hist_read(&s->h, &h);
            fn(k == x__unknown ? NULL : k, s->variant, s->outcome, &h, arg);
        }
    pthread_mutex_unlock(&shards_lk);
}

/* One series summed over the shards while rendering. */
typedef struct {
    const char *key; /* the label value */
    int variant, outcome;
    bz_hist_snap h;
} x__agg;

typedef struct {
    const http_obs_spec *spec;
    x__agg *v;
    size_t n, cap;
} x__aggs;

static void x__add(const char *key, int variant, int outcome, const bz_hist_snap *h, void *arg)
{
    x__aggs *a = arg;
    const http_obs_spec *sp = a->spec;
    const char *name = !key ? sp->unknown : sp->key_name ? sp->key_name(key) : key;
    size_t k = 0;
    while (k < a->n && !(a->v[k].variant == variant && a->v[k].outcome == outcome && !strcmp(a->v[k].key, name)))
        k++;
    if (k == a->n) {
        if (a->n == a->cap) {
            a->cap = a->cap ? 2 * a->cap : 64;
            a->v = realloc(a->v, a->cap * sizeof *a->v);
            if (!a->v)
                abort();
        }
        a->v[a->n++] = (x__agg){name, variant, outcome, {0}};
    }
    bz_hist_snap_add(&a->v[k].h, h);
}

static int x__agg_cmp(const void *x, const void *y)
{
    const x__agg *a = x, *b = y;
    int c = strcmp(a->key, b->key);
    if (c)
        return c;
    if (a->variant != b->variant)
        return a->variant - b->variant;
    return a->outcome - b->outcome;
}

static void x__labels(bz_buf *l, const http_obs_spec *sp, const x__agg *a)
{
    bz_buf_clear(l);
    bz_metric_label(l, sp->key_label, a->key);
    if (sp->variant_label)
        bz_metric_label(l, sp->variant_label, sp->variant_name(a->variant));
}

void http_obs_render(http_obs *o, bz_buf *out)
{
    const http_obs_spec *sp = o->spec;
    x__aggs a = {sp, NULL, 0, 0};
    http_obs_each(o, x__add, &a);
    if (a.n)
        qsort(a.v, a.n, sizeof *a.v, x__agg_cmp);
    bz_buf l = BZ_BUF_INIT;
    char buf[16];
    bz_metric_family(out, sp->count_name, "counter", sp->count_help);
    for (size_t i = 0; i < a.n; i++) {
        x__labels(&l, sp, &a.v[i]);
        bz_metric_label(&l, sp->outcome_label, sp->outcome_name(a.v[i].outcome, buf));
        bz_metric_int(out, sp->count_name, l.data, a.v[i].h.count);
    }
    /* the histograms are per key and variant: the outcomes summed */
    bz_metric_family(out, sp->hist_name, "histogram", sp->hist_help);
    for (size_t i = 0; i < a.n;) {
        size_t j = i;
        bz_hist_snap sum = {0};
        while (j < a.n && !strcmp(a.v[j].key, a.v[i].key) && a.v[j].variant == a.v[i].variant)
            bz_hist_snap_add(&sum, &a.v[j++].h);
        x__labels(&l, sp, &a.v[i]);
        bz_metric_hist(out, sp->hist_name, l.data, sp->bounds, &sum);
        i = j;
    }
    bz_buf_free(&l);
    free(a.v);
}

/* http/middleware.c — request id, access log and metrics (the transport's
 * ends of http/observe.c), recovery, request deadline, gzip.  Each
 * middleware allocates a small closure (next handler + its config) once,
 * when the chain is built. */
#include "http/http-private.h"

#include <bazaar/log.h>
#include <bazaar/observe.h>
#include <bazaar/rand.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

typedef struct mw {
    http_handler next;
    void *cfg;
} mw;

static http_handler wrap(int (*fn)(http_req *, void *), http_handler next, void *cfg)
{
    mw *m = malloc(sizeof *m);
    if (!m)
        abort();
    m->next = next;
    m->cfg = cfg;
    return (http_handler){fn, m};
}

static inline int call_next(mw *m, http_req *r) { return m->next.fn(r, m->next.data); }

/* ---- request id ---- */

/* 1..63 characters: r->request_id holds 64 bytes with its NUL (a 64th
 * character overwrote the first byte of r->peer, which the access log
 * then showed empty). */
static bool valid_id(bz_str v)
{
    if (v.n == 0 || v.n >= sizeof ((http_req *)0)->request_id)
        return false;
    for (size_t i = 0; i < v.n; i++) {
        char c = v.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.' || c == ':'))
            return false;
    }
    return true;
}

/* 128 random bits as 32 hex digits (ids need to be unique, not secret). */
static void new_id(char out[33])
{
    bz_rand_hex(out, 32);
}

/* The headers that identify a response: X-Request-Id, and traceresponse
 * for a caller that sent a traceparent.  Added again by the paths below
 * that throw a handler's headers away. */
static void add_ids(http_req *r)
{
    if (!r->request_id[0])
        return;
    http__add_field(r, "X-Request-Id", 12, r->request_id, strnlen(r->request_id, sizeof r->request_id));
    char tp[56];
    if (http_traceresponse(r, tp))
        http__add_field(r, "traceresponse", 13, tp, 55);
}

void http_request_id_set(http_req *r, bz_str in)
{
    if (valid_id(in)) {
        memcpy(r->request_id, in.p, in.n);
        r->request_id[in.n] = '\0';
    } else {
        new_id(r->request_id);
    }
}

static int request_id(http_req *r, void *data)
{
    http_request_id_set(r, http_header_get(r, "X-Request-Id"));
    add_ids(r);
    return call_next(data, r);
}

http_handler http_mw_request_id(http_handler next, void *cfg) { return wrap(request_id, next, cfg); }

/* ---- access log and metrics (the ends of http/observe.c) ---- */

static int access_log(http_req *r, void *data)
{
    mw *m = data;
    http_obs_start(r, &http_obs_http, r->method);
    if (m->cfg)
        http_obs_attach(r, m->cfg);
    r->obs_ends = true;
    int rc = call_next(m, r);
    int status = http_obs_status(r, rc);
    http_obs_end(r, &(http_obs_done){&http_obs_http, r->method, r->pattern, http_obs_method_index(r->method), status});
    return rc;
}

http_handler http_mw_access_log(http_handler next, void *cfg) { return wrap(access_log, next, cfg); }

static int metrics(http_req *r, void *data)
{
    mw *m = data;
    http_obs_attach(r, m->cfg ? m->cfg : &http_obs_requests);
    int rc = call_next(m, r);
    if (!r->obs_ends) /* no access log outside to end it: counted here, without a line */
        http_obs_end(r, &(http_obs_done){NULL, r->method, r->pattern, http_obs_method_index(r->method),
                                         http_obs_status(r, rc)});
    return rc;
}

http_handler http_mw_metrics(http_handler next, void *cfg) { return wrap(metrics, next, cfg); }

/* ---- recovery ---- */

static int recover(http_req *r, void *data)
{
    int rc = call_next(data, r);
    if (rc >= 0 || r->started)
        return rc;
    if (rc == -EMSGSIZE || rc == -EBADMSG)
        return rc; /* the server maps these to 413 / 400 */
    if (rc == -ECANCELED && rt_ctx_err(r->ctx)) {
        /* The client left or the server is stopping: not a bug. */
        http_clear_headers(r);
        add_ids(r);
        http_send_problem(r, 503, "unavailable", "the request was cancelled");
        return 0;
    }
    bz_log_err("handler failed", BZ_F_STR("route", r->pattern ? r->pattern : ""),
               BZ_F_STR("error", strerror(-rc)), BZ_F_STR("request_id", r->request_id));
    http_clear_headers(r);
    add_ids(r);
    http_send_problem(r, 500, "internal", "the server failed to handle the request");
    return 0;
}

http_handler http_mw_recover(http_handler next, void *cfg) { return wrap(recover, next, cfg); }

/* ---- request deadline ---- */

static int timeout(http_req *r, void *data)
{
    mw *m = data;
    int64_t ns = *(int64_t *)m->cfg;
    /* The request context is fresh and has no children yet: tightening
     * its deadline is all a child context would have done, for less. */
    rt_ctx_tighten(r->ctx, r->start_ns + ns);
    int rc = call_next(m, r);
    if (rc < 0 && !r->started && (rc == -ETIMEDOUT || rt_ctx_err(r->ctx) == ETIMEDOUT)) {
        http_clear_headers(r);
        add_ids(r);
        http_add_header(r, "Retry-After", "1");
        http_send_problem(r, 503, "timeout", "the request took longer than the server allows");
        return 0;
    }
    return rc;
}

http_handler http_mw_timeout(http_handler next, void *cfg) { return wrap(timeout, next, cfg); }

/* ---- gzip ---- */

static bool accepts_gzip(http_req *r)
{
    bz_str v = http_header_get(r, "Accept-Encoding");
    size_t i = 0;
    while (i < v.n) {
        size_t j = i;
        while (j < v.n && v.p[j] != ',')
            j++;
        bz_str item = bz_str_trim(bz_str_make(v.p + i, j - i));
        ptrdiff_t sc = bz_str_index(item, ';');
        bz_str coding = bz_str_trim(sc >= 0 ? bz_str_make(item.p, (size_t)sc) : item);
        if (bz_str_ieq_c(coding, "gzip") || bz_str_eq_c(coding, "*")) {
            /* q=0 means "not acceptable" */
            if (sc >= 0) {
                bz_str params = bz_str_trim(bz_str_make(item.p + sc + 1, item.n - (size_t)sc - 1));
                if (bz_str_eq_c(params, "q=0") || bz_str_eq_c(params, "q=0.0") ||
                    bz_str_eq_c(params, "q=0.00") || bz_str_eq_c(params, "q=0.000"))
                    return false;
            }
            return true;
        }
        i = j + 1;
    }
    return false;
}

static bool compressible(bz_str ct)
{
    return bz_str_has_prefix(ct, BZ_STR_LIT("text/")) || bz_str_has_prefix(ct, BZ_STR_LIT("application/json")) ||
           bz_str_has_prefix(ct, BZ_STR_LIT("application/problem+json")) ||
           bz_str_has_prefix(ct, BZ_STR_LIT("application/javascript")) ||
           bz_str_has_prefix(ct, BZ_STR_LIT("application/xml"));
}

static int gzip_mw(http_req *r, void *data)
{
    int rc = call_next(data, r);
    if (rc < 0 || r->started || r->body.len < 1024 || !accepts_gzip(r) || !compressible(bz_str_trim(http_resp_header_get(r, "Content-Type"))))
        return rc;
    /* Vary is set whenever we could have compressed, so caches keep both. */
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 5, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return rc;
    size_t cap = deflateBound(&z, r->body.len);
    char *out = bz_arena_alloc(r->arena, cap);
    z.next_in = (Bytef *)r->body.data;
    z.avail_in = (uInt)r->body.len;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap;
    int zr = deflate(&z, Z_FINISH);
    size_t n = cap - z.avail_out;
    deflateEnd(&z);
    http_add_header(r, "Vary", "Accept-Encoding");
    if (zr != Z_STREAM_END || n >= r->body.len)
        return rc;
    r->body.len = 0;
    bz_buf_append(&r->body, out, n);
    http_add_header(r, "Content-Encoding", "gzip");
    r->gzip = true;
    return rc;
}

http_handler http_mw_gzip(http_handler next, void *cfg) { return wrap(gzip_mw, next, cfg); }

void http_chain_free(http_handler h)
{
    static int (*const ours[])(http_req *, void *) = {request_id, access_log, metrics, recover, timeout, gzip_mw};
    for (;;) {
        bool mine = false;
        for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++)
            mine |= h.fn == ours[i];
        if (!mine)
            return; /* reached the innermost handler: not ours to free */
        mw *m = h.data;
        h = m->next;
        free(m);
    }
}

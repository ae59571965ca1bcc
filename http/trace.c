/* http/trace.c — a request's W3C trace context, and the log's view of the
 * request a coroutine serves.  The runtime's per-coroutine pointer
 * (rt_coro_local) is this layer's: it points at the http_req being served
 * while its handler runs, and is NULL otherwise. */
#include "http/http-private.h"

#include <bazaar/errlog.h>
#include <bazaar/log.h>

#include <pthread.h>
#include <string.h>

static const bz_trace *current_trace(void)
{
    const http_req *r = rt_coro_local();
    return r ? &r->trace : NULL;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void install(void) { bz_log_set_trace_source(current_trace); }

void http__trace_begin(http_req *r)
{
    pthread_once(&once, install);
    /* tracestate counts only with a traceparent (looked up only then) */
    bz_str tp = http_header_get(r, "traceparent");
    bz_trace_start(&r->trace, tp, tp.p ? http_header_get(r, "tracestate") : BZ_STR_NULL);
    rt_coro_set_local(r);
}

bool http_traceresponse(const http_req *r, char out[56])
{
    if (!r->trace.from_caller && !http_header_get(r, "traceparent").p)
        return false;
    bz_trace_format(&r->trace, out);
    return true;
}

void http__trace_end(http_req *r)
{
    if (rt_coro_local() == r)
        rt_coro_set_local(NULL);
}

void http__errlog(const http_req *r, int status, const char *code, const char *detail)
{
    if (status < 400)
        return;
    if (r->pattern && strchr(r->pattern, ' ')) {
        bz_errlog_add(r->pattern, status, code, r->trace.trace_id, detail);
        return;
    }
    char where[112]; /* "METHOD /path" (truncated) when no route matched */
    size_t m = r->method.n < 16 ? r->method.n : 16, p = r->path.n < 90 ? r->path.n : 90;
    if (m) /* a request that never parsed has no method or path (memcpy from NULL is undefined) */
        memcpy(where, r->method.p, m);
    where[m] = ' ';
    if (p)
        memcpy(where + m + 1, r->path.p, p);
    where[m + 1 + p] = '\0';
    bz_errlog_add(where, status, code, r->trace.trace_id, detail);
}

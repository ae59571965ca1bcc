/* app/rest/orders.c — orders, order events (SSE) and the leaderboard over
 * REST (API.md §6, §7). */
#include "app/rest/rest-private.h"

#include <bazaar/clock.h>

#include <errno.h>
#include <stdio.h>

int orders_create(rest_x *x)
{
    json_t *j;
    bool reals;
    if (rest_body(x->r, &j, &reals, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    svc_err *e = &x->e;
    svc_order_in *in = bz_arena_calloc(x->r->arena, 1, sizeof *in);
    in->account_id = rest_get_int(j, L_ORDER_ACCOUNT, reals, NULL, e);
    json_t *lines = json_object_get(j, "lines");
    if (!lines || json_is_null(lines)) {
        in->lines_st = SVC_ABSENT;
    } else if (!json_is_array(lines)) {
        in->lines_st = SVC_BAD;
        svc_violate(e, "lines", "must be an array of 1 to 50 lines");
    } else {
        in->lines_st = SVC_SET;
        in->nlines_sent = (int)json_array_size(lines);
        in->nlines = in->nlines_sent > SVC_MAX_LINES ? SVC_MAX_LINES : in->nlines_sent;
        for (int i = 0; i < in->nlines; i++) {
            json_t *l = json_array_get(lines, (size_t)i);
            char fi[40], fq[40];
            snprintf(fi, sizeof fi, "lines[%d].item_id", i);
            snprintf(fq, sizeof fq, "lines[%d].quantity", i);
            if (!json_is_object(l)) {
                char f[24];
                snprintf(f, sizeof f, "lines[%d]", i);
                svc_violate(e, f, "must be an object");
                in->lines[i].item_id.st = in->lines[i].quantity.st = SVC_BAD;
                continue;
            }
            in->lines[i].item_id = rest_get_int(l, L_LINE_ITEM, reals, fi, e);
            in->lines[i].quantity = rest_get_int(l, L_LINE_QUANTITY, reals, fq, e);
        }
    }
    svc_order o;
    int rc = svc_order_create(x->R->s, &x->c, in, &o, e);
    rest_call_headers(x->r, &x->c);
    if (rc != 0)
        return rest_fail(x->r, e);
    return rest_send(x->r, 201, rest_json_order, &o, "/v1/orders/", o.id);
}

int orders_get(rest_x *x)
{
    svc_order o;
    if (svc_order_get(x->R->s, &x->c, x->id, &o, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    rest_call_headers(x->r, &x->c);
    return rest_send(x->r, 200, rest_json_order, &o, NULL, 0);
}

int orders_list(rest_x *x)
{
    svc_page_in pg = rest_page(x->r, &x->e);
    svc_order_page p;
    bool hit = false;
    if (svc_orders_list(x->R->s, &x->c, x->id, rest_query_str(x->r, L_ORDERS_STATUS), &pg, &p, &hit, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    http_add_header(x->r, "Cache-Status", hit ? "bazaar; hit" : "bazaar; fwd=miss");
    return rest_send_list(x->r, rest_json_order, p.data, sizeof *p.data, p.n, true, p.next_cursor);
}

/* pay and cancel: the same shape, another service function */
static int change_state(rest_x *x, int (*op)(svc *, svc_call *, int64_t, svc_order *, svc_err *))
{
    svc_order o;
    int rc = op(x->R->s, &x->c, x->id, &o, &x->e);
    rest_call_headers(x->r, &x->c);
    if (rc != 0)
        return rest_fail(x->r, &x->e);
    return rest_send(x->r, 200, rest_json_order, &o, NULL, 0);
}

int orders_pay(rest_x *x) { return change_state(x, svc_order_pay); }
int orders_cancel(rest_x *x) { return change_state(x, svc_order_cancel); }

/* ---- GET /v1/users/{id}/orders/events (SSE) ---- */

#define HEARTBEAT_NS (15 * BZ_NS_PER_S)

static int sse_flush(rest *R, http_req *r)
{
    http_set_write_deadline(r, bz_now_ns() + R->cfg->srv.write_timeout_ns);
    return http_flush(r);
}

/* The loop is the service's (svc_orders_stream); this is where its
 * events go: one SSE "order" event each, and a heartbeat comment when the
 * stream has been quiet for HEARTBEAT_NS.  A draining server ends it. */
typedef struct {
    rest *R;
    http_req *r;
    int64_t next_beat;
    bool subscribed;
} sse_state;

static int sse_more(sse_state *st, int rc) { return rc != 0 || (st->R->life && bazaar_draining(st->R->life)); }

static int sse_ready(void *arg)
{
    sse_state *st = arg;
    http_req *r = st->r;
    st->subscribed = true;
    http_set_status(r, 200);
    http_add_header(r, "Content-Type", "text/event-stream");
    http_add_header(r, "Cache-Control", "no-cache");
    http_add_header(r, "X-Accel-Buffering", "no");
    /* The comment line makes the headers go out now: the client knows it
     * is subscribed. */
    static const char hello[] = ": subscribed\n\n";
    http_write(r, hello, sizeof hello - 1);
    st->next_beat = bz_now_ns() + HEARTBEAT_NS;
    return sse_more(st, sse_flush(st->R, r));
}

static int sse_event(void *arg, const svc_order_event *ev)
{
    sse_state *st = arg;
    static const char head[] = "event: order\ndata: ";
    http_write(st->r, head, sizeof head - 1);
    http_write_with(st->r, rest_json_event, ev);
    http_write(st->r, "\n\n", 2);
    return sse_more(st, sse_flush(st->R, st->r));
}

static int sse_idle(void *arg)
{
    sse_state *st = arg;
    int rc = 0;
    if (bz_now_ns() >= st->next_beat) {
        static const char beat[] = ": heartbeat\n\n";
        http_write(st->r, beat, sizeof beat - 1);
        rc = sse_flush(st->R, st->r);
        st->next_beat = bz_now_ns() + HEARTBEAT_NS;
    }
    return sse_more(st, rc);
}

int orders_events(rest_x *x)
{
    sse_state st = {x->R, x->r, 0, false};
    svc_watch_sink sink = {sse_ready, sse_event, sse_idle, &st};
    int rc = svc_orders_stream(x->R->s, &x->c, x->id, &sink, &x->e);
    if (rc != 0 && !st.subscribed)
        return rest_fail(x->r, &x->e); /* refused before the stream began */
    return 0;                          /* a stream ends by ending */
}

/* ---- GET /v1/leaderboard/spenders ---- */

int leaderboard_get(rest_x *x)
{
    svc_str cur = rest_query_str(x->r, L_LB_CURRENCY);
    svc_int lim = rest_query_int(x->r, L_LB_LIMIT, &x->e);
    svc_spender *top;
    int n;
    if (svc_leaderboard(x->R->s, &x->c, cur, lim, &top, &n, &x->e) != 0)
        return rest_fail(x->r, &x->e);
    return rest_send_list(x->r, rest_json_spender, top, sizeof *top, n, false, NULL);
}

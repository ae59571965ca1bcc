/* grpc/server.c — the method table and the HTTP handler that runs calls:
 * protocol checks, the deadline, compression, gRPC-Web and its CORS, the
 * interceptor chain, UNIMPLEMENTED (grpc.h). */
#include "grpc/grpc-private.h"

#include <bazaar/clock.h>
#include <bazaar/log.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

grpc_server *grpc_server_new(const grpc_opts *o)
{
    grpc_server *g = calloc(1, sizeof *g);
    if (!g)
        abort();
    g->o = *o;
    if (g->o.max_recv_bytes <= 0)
        g->o.max_recv_bytes = 4 << 20;
    return g;
}

void grpc_server_free(grpc_server *g)
{
    if (!g)
        return;
    grpc__refl_free(g->refl);
    for (int i = 0; i < g->nowned; i++)
        free(g->owned[i]);
    free(g->owned);
    free(g->svcs);
    free(g->methods);
    free(g->path_lens);
    free(g);
}

void *grpc__own(grpc_server *g, size_t n)
{
    void **o = realloc(g->owned, (size_t)(g->nowned + 1) * sizeof *o);
    void *p = calloc(1, n ? n : 1);
    if (!o || !p)
        abort();
    g->owned = o;
    g->owned[g->nowned++] = p;
    return p;
}

int grpc_server_add(grpc_server *g, const grpc_method *m)
{
    for (int i = 0; i < g->n; i++)
        if (!strcmp(g->methods[i].path, m->path))
            return -1;
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 32;
        g->methods = realloc(g->methods, (size_t)g->cap * sizeof *g->methods);
        g->path_lens = realloc(g->path_lens, (size_t)g->cap * sizeof *g->path_lens);
        if (!g->methods || !g->path_lens)
            abort();
    }
    g->path_lens[g->n] = strlen(m->path);
    g->methods[g->n++] = *m;
    return 0;
}

/* ---- services from protoc-c ---- */

static const grpc_method *lookup(const grpc_server *g, bz_str path)
{
    for (int i = 0; i < g->n; i++)
        if (g->path_lens[i] == path.n && !memcmp(path.p, g->methods[i].path, path.n))
            return &g->methods[i];
    return NULL;
}

/* What a typed unary method's trampoline needs. */
typedef struct unary_binding {
    grpc_unary_fn fn;
    const ProtobufCMethodDescriptor *md;
    void *data;
} unary_binding;

/* The one request message, the handler, the response: what a hand-written
 * unary handler does, once.  The response starts zeroed in the arena and
 * initialised by its descriptor (defaults set). */
static int unary(grpc_call *c, void *data)
{
    const unary_binding *b = data;
    ProtobufCMessage *in;
    int rc = grpc_recv(c, b->md->input, &in);
    if (rc < 0)
        return 0; /* the status is set */
    if (rc == 1)
        return grpc_finish(c, GRPC_INTERNAL, "a unary call needs its request message");
    ProtobufCMessage *out = bz_arena_alloc(grpc_arena(c), b->md->output->sizeof_message);
    protobuf_c_message_init(b->md->output, out);
    rc = b->fn(c, in, out, b->data);
    if (rc < 0 || grpc_finished(c))
        return rc;
    if (grpc_send(c, out) != 0)
        return 0; /* the deadline passed or the client went away: the call's end says which */
    return grpc_finish(c, GRPC_OK, NULL);
}

static int method_index(const ProtobufCServiceDescriptor *d, const char *name)
{
    for (unsigned i = 0; i < d->n_methods; i++)
        if (!strcmp(d->methods[i].name, name))
            return (int)i;
    return -1;
}

int grpc_server_add_service(grpc_server *g, const ProtobufCServiceDescriptor *d, const grpc_handler *h, void *data)
{
    if (!d || d->magic != PROTOBUF_C__SERVICE_DESCRIPTOR_MAGIC || !h) {
        bz_log_err("grpc_server_add_service: not a protobuf-c service descriptor");
        return -1;
    }
    /* Everything is checked before anything is registered. */
    bool *seen = calloc(d->n_methods + 1, sizeof *seen);
    if (!seen)
        abort();
    const char *why = NULL;
    int n = 0, bad = -1;
    for (; h[n].method && !why; n++) {
        int i = method_index(d, h[n].method);
        bad = n;
        if (i < 0)
            why = "the service has no such method";
        else if (seen[i])
            why = "the method is given twice";
        else if (!h[n].unary == !h[n].fn)
            why = "set exactly one of unary and fn";
        else if (h[n].unary && (h[n].client_streaming || h[n].server_streaming))
            why = "a streaming method needs fn";
        else {
            char path[512];
            snprintf(path, sizeof path, "/%s/%s", d->name, h[n].method);
            if (lookup(g, bz_str_c(path)))
                why = "the path is already registered";
            seen[i] = true;
        }
    }
    free(seen);
    if (why) {
        bz_log_err("grpc_server_add_service: refused", BZ_F_STR("service", d->name),
                   BZ_F_STR("method", h[bad].method), BZ_F_STR("reason", why));
        return -1;
    }
    size_t nb = (d->n_methods + 1) * sizeof(bool);
    grpc__service s = {d, grpc__own(g, nb), grpc__own(g, nb)};
    for (int k = 0; k < n; k++) {
        int i = method_index(d, h[k].method);
        size_t len = strlen(d->name) + strlen(h[k].method) + 3;
        char *path = grpc__own(g, len);
        snprintf(path, len, "/%s/%s", d->name, h[k].method);
        grpc_method m = {path, h[k].fn, data, h[k].client_streaming, h[k].server_streaming};
        if (h[k].unary) {
            unary_binding *b = grpc__own(g, sizeof *b);
            *b = (unary_binding){h[k].unary, &d->methods[i], data};
            m.fn = unary;
            m.data = b;
        }
        grpc_server_add(g, &m);
        s.client_streaming[i] = h[k].client_streaming;
        s.server_streaming[i] = h[k].server_streaming;
    }
    grpc__service *v = realloc(g->svcs, (size_t)(g->nsvcs + 1) * sizeof *v);
    if (!v)
        abort();
    g->svcs = v;
    g->svcs[g->nsvcs++] = s;
    if (grpc__refl_built(g->refl))
        bz_log_err("grpc_server_add_service: added after the first reflection request; reflection does not describe it",
                   BZ_F_STR("service", d->name));
    return 0;
}

void grpc_server_intercept(grpc_server *g, grpc_interceptor fn, void *data)
{
    if (g->nicpt < GRPC_MAX_INTERCEPTORS) {
        g->icpt[g->nicpt].fn = fn;
        g->icpt[g->nicpt].data = data;
        g->nicpt++;
    }
}

int grpc_server_methods(const grpc_server *g, const grpc_method **out, int max)
{
    int n = g->n < max ? g->n : max;
    for (int i = 0; i < n; i++)
        out[i] = &g->methods[i];
    return n;
}

/* The media type, without parameters. */
static bz_str media(bz_str ct)
{
    ptrdiff_t sc = bz_str_index(ct, ';');
    return bz_str_trim(sc >= 0 ? bz_str_make(ct.p, (size_t)sc) : ct);
}

/* The codec suffix of a gRPC media type: none or "+proto" is ours. */
static bool proto_codec(bz_str m, size_t base)
{
    if (m.n == base)
        return true;
    return m.p[base] == '+' && m.n - base - 1 == 5 && !strncasecmp(m.p + base + 1, "proto", 5);
}

#define MODE_UNSUPPORTED 100 /* a gRPC media type with a codec we lack */

/* The mode of a media type: -1 not gRPC, MODE_UNSUPPORTED for another
 * codec, else the mode. */
static int mode_of_media(bz_str m)
{
    static const struct {
        const char *type;
        size_t n;
        int mode;
    } types[] = {
        {"application/grpc-web-text", 25, GRPC_MODE_WEB_TEXT},
        {"application/grpc-web", 20, GRPC_MODE_WEB},
        {"application/grpc", 16, GRPC_MODE_NATIVE},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        size_t n = types[i].n;
        if (m.n < n || strncasecmp(m.p, types[i].type, n) || (m.n > n && m.p[n] != '+'))
            continue;
        return proto_codec(m, n) ? types[i].mode : MODE_UNSUPPORTED;
    }
    return -1;
}

static int mode_of(const http_req *r) { return mode_of_media(media(http_header_get(r, "Content-Type"))); }

static bool is_preflight(const http_req *r)
{
    return bz_str_eq_c(r->method, "OPTIONS") && http_header_get(r, "Access-Control-Request-Method").p;
}

bool grpc_is_grpc(const http_req *r) { return mode_of(r) >= 0 || is_preflight(r); }

bool grpc_serves(const grpc_server *g, const http_req *r)
{
    return grpc_is_grpc(r) || (bz_str_eq_c(r->method, "POST") && lookup(g, r->path));
}

static bool list_has(bz_str list, const char *tok)
{
    size_t i = 0, n = strlen(tok);
    while (i < list.n) {
        size_t j = i;
        while (j < list.n && list.p[j] != ',')
            j++;
        bz_str t = bz_str_trim(bz_str_make(list.p + i, j - i));
        if (t.n == n && !strncasecmp(t.p, tok, n))
            return true;
        i = j + 1;
    }
    return false;
}

/* The allowed origin to echo, or NULL. */
static const char *cors_origin(const grpc_server *g, http_req *r)
{
    bz_str origin = http_header_get(r, "Origin");
    const char *allowed = g->o.web_origins;
    if (!origin.p || !allowed || !*allowed)
        return NULL;
    if (!strcmp(allowed, "*"))
        return "*";
    if (list_has(bz_str_c(allowed), bz_arena_strndup(r->arena, origin.p, origin.n)))
        return bz_arena_strndup(r->arena, origin.p, origin.n);
    return NULL;
}

/* True if v is a comma-separated list of header names (RFC 9110 tokens),
 * as Access-Control-Request-Headers is. */
static bool header_list(bz_str v)
{
    if (v.n == 0 || v.n > 4096)
        return false;
    for (size_t i = 0; i < v.n; i++) {
        unsigned char ch = (unsigned char)v.p[i];
        if (!(ch == ',' || ch == ' ' || ch == '\t' || (ch > 32 && ch < 127 && !strchr("\"(),/:;<=>?@[\\]{}", ch))))
            return false;
    }
    return true;
}

/* A preflight from an allowed origin may send whatever request headers it
 * asks for: gRPC metadata is open-ended (custom keys, traceparent), and
 * the origin is what is trusted, not the header names. */
static int preflight(grpc_server *g, http_req *r)
{
    const char *o = cors_origin(g, r);
    if (!o)
        return http_send_problem(r, 403, "origin_not_allowed", "this origin may not call the gRPC-Web API");
    http_add_header(r, "Access-Control-Allow-Origin", o);
    http_add_header(r, "Access-Control-Allow-Methods", "POST, OPTIONS");
    /* gRPC-Web's own headers always (a client caching the answer may send
     * them later), and what was asked for. */
    static const char std_headers[] = "content-type, x-grpc-web, x-user-agent, grpc-timeout, authorization, "
                                      "grpc-accept-encoding, grpc-encoding, x-request-id, traceparent, tracestate";
    bz_str asked = bz_str_trim(http_header_get(r, "Access-Control-Request-Headers"));
    if (header_list(asked)) {
        size_t n = sizeof std_headers - 1 + 2 + asked.n;
        char *v = bz_arena_alloc(r->arena, n + 1);
        snprintf(v, n + 1, "%s, %.*s", std_headers, (int)asked.n, asked.p);
        http_add_header(r, "Access-Control-Allow-Headers", v);
    } else {
        http_add_header(r, "Access-Control-Allow-Headers", std_headers);
    }
    http_add_header(r, "Access-Control-Max-Age", "86400");
    http_add_header(r, "Vary",
                    strcmp(o, "*") ? "Origin, Access-Control-Request-Headers" : "Access-Control-Request-Headers");
    return http_send(r, 204, NULL, NULL, 0);
}

static int run_chain(grpc_call *c, const grpc_method *m)
{
    grpc_server *g = c->g;
    if (c->icpt_next < g->nicpt) {
        int i = c->icpt_next++;
        return g->icpt[i].fn(c, m, g->icpt[i].data, run_chain);
    }
    if (!m)
        return grpc_finish(c, GRPC_UNIMPLEMENTED, "unknown method %.*s", (int)c->r->path.n, c->r->path.p);
    return m->fn(c, m->data);
}

/* The request header fields a call's setup reads, found in one pass
 * (each the first of its name, as http_header_get finds it). */
typedef struct {
    bz_str content_type, timeout, encoding, accept_encoding, authorization, request_id;
} call_fields;

static void set_first(bz_str *slot, bz_str v)
{
    if (!slot->p)
        *slot = v;
}

static void scan_fields(const http_req *r, call_fields *f)
{
    memset(f, 0, sizeof *f);
    for (int i = 0; i < r->nheaders; i++) {
        bz_str n = r->headers[i].name, v = r->headers[i].value;
        /* by length first: most fields (:path, te, user-agent) are no one's here */
        switch (n.n) {
        case 12:
            if (!strncasecmp(n.p, "content-type", 12))
                set_first(&f->content_type, v);
            else if (!strncasecmp(n.p, "grpc-timeout", 12))
                set_first(&f->timeout, v);
            else if (!strncasecmp(n.p, "x-request-id", 12))
                set_first(&f->request_id, v);
            break;
        case 13:
            if (!strncasecmp(n.p, "grpc-encoding", 13))
                set_first(&f->encoding, v);
            else if (!strncasecmp(n.p, "authorization", 13))
                set_first(&f->authorization, v);
            break;
        case 20:
            if (!strncasecmp(n.p, "grpc-accept-encoding", 20))
                set_first(&f->accept_encoding, v);
            break;
        default: break;
        }
    }
}

static int serve(http_req *r, void *data)
{
    grpc_server *g = data;
    if (is_preflight(r))
        return preflight(g, r);
    call_fields f;
    scan_fields(r, &f);
    bz_str ct = media(f.content_type);
    int mode = mode_of_media(ct);
    /* A content type that is not gRPC's at all is refused as HTTP (the
     * gRPC HTTP/2 protocol: 415, so that no HTTP client takes an error for
     * a success); one that is gRPC's with a codec we lack (+json) is a gRPC
     * call we cannot decode: UNIMPLEMENTED, with the status where gRPC
     * clients look for it (as for a grpc-encoding we lack). */
    if (mode < 0)
        return http_send_problem(r, 415, "unsupported_media_type",
                                 "gRPC requests must be application/grpc, grpc-web or grpc-web-text, with the proto codec");
    bool codec_ok = mode != MODE_UNSUPPORTED;
    if (!codec_ok)
        mode = strncasecmp(ct.p, "application/grpc-web-text", 25) == 0 ? GRPC_MODE_WEB_TEXT
               : strncasecmp(ct.p, "application/grpc-web", 20) == 0  ? GRPC_MODE_WEB
                                                                      : GRPC_MODE_NATIVE;
    if (mode == GRPC_MODE_NATIVE && !r->h2)
        return http_send_problem(r, 505, "http2_required", "gRPC needs HTTP/2 (gRPC-Web works over HTTP/1.1)");
    if (!bz_str_eq_c(r->method, "POST"))
        return http_send_problem(r, 405, "method_not_allowed", "gRPC calls are POSTs");
    /* Each message is bounded by --grpc-max-recv-bytes (gRPC-Web over
     * HTTP/1.1 too); a client stream as a whole is not bounded by
     * --max-body-bytes. */
    r->body_limit = -1;
    const grpc_method *m = lookup(g, r->path);
    grpc_call *c = bz_arena_alloc(r->arena, sizeof *c);
    grpc__call_init(c, g, r, m, (grpc_mode)mode);
    c->md_authorization = f.authorization;
    c->md_request_id = f.request_id;
    c->md_scanned = true;
    if (mode != GRPC_MODE_NATIVE) {
        const char *o = cors_origin(g, r);
        if (o) {
            http_add_header(r, "Access-Control-Allow-Origin", o);
            http_add_header(r, "Access-Control-Expose-Headers",
                            "grpc-status, grpc-message, grpc-status-details-bin, grpc-encoding, x-request-id");
            if (strcmp(o, "*"))
                http_add_header(r, "Vary", "Origin");
        }
    }
    /* The client's deadline bounds everything done for the call. */
    int64_t ns = 0;
    bz_str tv = f.timeout;
    bool bad_timeout = tv.p && grpc_parse_timeout(tv, &ns) != 0;
    bool has_timeout = tv.p && !bad_timeout;
    /* The server's own cap on unary calls (--request-timeout), as REST */
    if (m && !m->client_streaming && !m->server_streaming && g->o.unary_timeout_ns > 0 &&
        (!has_timeout || ns > g->o.unary_timeout_ns)) {
        ns = g->o.unary_timeout_ns;
        has_timeout = true;
    }
    /* The stream's own waits (body reads, flushes) and everything done for
     * the call end at its deadline: the stream's context is narrowed to it
     * and is the call's (c->ctx). */
    if (has_timeout)
        rt_ctx_tighten(r->ctx, bz_now_ns() + ns);
    bz_str enc = f.encoding;
    c->req_gzip = enc.p && bz_str_ieq_c(bz_str_trim(enc), "gzip");
    bool enc_ok = !enc.p || c->req_gzip || bz_str_ieq_c(bz_str_trim(enc), "identity");
    c->accept_gzip = list_has(f.accept_encoding, "gzip");
    /* A client that compresses its messages gets compressed answers. */
    c->compress = c->req_gzip && c->accept_gzip;
    int rc = 0;
    if (!codec_ok)
        grpc_finish(c, GRPC_UNIMPLEMENTED, "content-type %.*s is not supported (only the proto codec is)", (int)ct.n,
                    ct.p);
    else if (bad_timeout)
        grpc_finish(c, GRPC_INTERNAL, "malformed grpc-timeout");
    else if (!enc_ok)
        grpc_finish(c, GRPC_UNIMPLEMENTED, "grpc-encoding %.*s is not supported", (int)enc.n, enc.p);
    else
        rc = run_chain(c, m);
    grpc__call_end(c, rc);
    return 0;
}

http_handler grpc_http_handler(grpc_server *g) { return (http_handler){serve, g}; }

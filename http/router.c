/* http/router.c — a request multiplexer with Go 1.22 ServeMux semantics.
 *
 * A pattern is a method (optional) and a list of segments: literals,
 * {name} (one segment), {name...} or a trailing '/' (the rest: "multi"),
 * and {$} (only the end of a path that ends in '/', stored as the literal
 * "/").  A request path is split the same way: "/a/b/" is [a, b, "/"],
 * where "/" stands for the trailing slash.
 *
 * Precedence follows Go's definition: p1 is more specific than p2 if p1
 * matches a strict subset of p2's requests.  Registration compares the new
 * pattern with every existing one and refuses an overlap where neither is
 * more specific.  Matching scans the routes and keeps the most specific
 * match; with tens of routes a scan beats a tree in both code and time,
 * as long as a route that cannot match costs little: only the routes
 * whose segment count fits the path's are scanned (an index by segment
 * count, remade at each registration), a route whose literal bytes
 * differ from the path's first segments is passed over in one compare
 * (sig_of), and literals are compared without unescaping when the path
 * has no '%' (the scan cost 3,100 instructions per /healthz against the
 * marketplace's routes before; issue 18).  Where a segment count has
 * many routes they are indexed again by the byte of the segment that
 * splits them best (bysig: a cached item GET scanned ~40 routes of three
 * segments, it now looks at the item's), and a route for another method
 * is passed over before its path is matched.  Which
 * routes are scanned never changes the answer: registration refuses two
 * patterns that both match a request unless one is more specific. */
#include "http/http-private.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct seg {
    char *s;      /* literal text (unescaped), or wildcard name */
    size_t n;
    bool wild;    /* {name} */
    bool multi;   /* {name...} or trailing slash (name "" then) */
} seg;

typedef struct route {
    char *text;
    char *method; /* NULL = every method */
    size_t mlen;  /* strlen(method) */
    bool get;     /* method is GET (which HEAD matches too) */
    seg *segs;
    int nsegs;
    bool multi;            /* the last segment is multi: matches paths of >= nsegs segments */
    uint32_t sig, sigmask; /* a byte per literal among the first 4 segments (sig_of) */
    http_handler h;
} route;

/* A byte that two equal segments share (length, first and last byte): a
 * route whose literal's byte differs from the path segment's cannot
 * match, which rejects most candidates in one compare. */
static uint32_t sig_of(const char *p, size_t n)
{
    return n ? (uint32_t)((n * 31u + (unsigned char)p[0] * 7u + (unsigned char)p[n - 1]) & 0xffu) : 0xffu;
}

/* Routes by segment count, remade at each registration (registration
 * happens before serving; lookups from every loop only read): byn[k]
 * lists, in registration order, the routes a path of k segments can
 * match — those of exactly k segments and the multi ones of at most k —
 * so a lookup scans only those. */
#define IDX_SEGS 16

/* Within a segment count, the routes again by the signature byte of one
 * segment (the one that splits them best: among the marketplace's routes
 * of three segments, the second — items, users, orders —, the first
 * being v1 for all): a path looks at the routes whose literal there has
 * its segment's byte, and those with a wildcard there. */
typedef struct {
    int pos;         /* the segment (0..3), or -1: scan byn[k] */
    int start[256];  /* bucket b's list in flat: from start[b] to its -1 */
    int *flat;
} x__bysig;

struct http_mux {
    route *routes;
    int n, cap;
    int *byn[IDX_SEGS + 1]; /* route indexes, -1 terminated; NULL: no route yet */
    x__bysig bysig[IDX_SEGS + 1];
};

/* Go's relationship between two patterns. */
typedef enum { EQUIVALENT, MORE_GENERAL, MORE_SPECIFIC, DISJOINT, OVERLAPS } rel;

static rel inverse(rel r)
{
    return r == MORE_GENERAL ? MORE_SPECIFIC : r == MORE_SPECIFIC ? MORE_GENERAL : r;
}

static rel combine(rel r1, rel r2)
{
    switch (r1) {
    case EQUIVALENT: return r2;
    case DISJOINT: return DISJOINT;
    case OVERLAPS: return r2 == DISJOINT ? DISJOINT : OVERLAPS;
    case MORE_GENERAL:
    case MORE_SPECIFIC:
        if (r2 == EQUIVALENT)
            return r1;
        if (r2 == inverse(r1))
            return OVERLAPS;
        return r2;
    }
    return DISJOINT;
}

static bool is_slash(const seg *s) { return !s->wild && !s->multi && s->n == 1 && s->s[0] == '/'; }

static rel compare_segs(const seg *a, const seg *b)
{
    if (a->multi && b->multi)
        return EQUIVALENT;
    if (a->multi)
        return MORE_GENERAL;
    if (b->multi)
        return MORE_SPECIFIC;
    if (a->wild && b->wild)
        return EQUIVALENT;
    if (a->wild)
        return is_slash(b) ? DISJOINT : MORE_GENERAL;
    if (b->wild)
        return is_slash(a) ? DISJOINT : MORE_SPECIFIC;
    return (a->n == b->n && memcmp(a->s, b->s, a->n) == 0) ? EQUIVALENT : DISJOINT;
}

static rel compare_paths(const route *p1, const route *p2)
{
    bool m1 = p1->nsegs && p1->segs[p1->nsegs - 1].multi;
    bool m2 = p2->nsegs && p2->segs[p2->nsegs - 1].multi;
    if (p1->nsegs != p2->nsegs && !m1 && !m2)
        return DISJOINT;
    rel r = EQUIVALENT;
    int i = 0;
    for (; i < p1->nsegs && i < p2->nsegs; i++) {
        r = combine(r, compare_segs(&p1->segs[i], &p2->segs[i]));
        if (r == DISJOINT)
            return r;
    }
    if (i == p1->nsegs && i == p2->nsegs)
        return r;
    if (p1->nsegs < p2->nsegs && m1)
        return combine(r, MORE_GENERAL);
    if (p2->nsegs < p1->nsegs && m2)
        return combine(r, MORE_SPECIFIC);
    return DISJOINT;
}

static rel compare_methods(const route *p1, const route *p2)
{
    const char *a = p1->method, *b = p2->method;
    if ((!a && !b) || (a && b && strcmp(a, b) == 0))
        return EQUIVALENT;
    if (!a)
        return MORE_GENERAL;
    if (!b)
        return MORE_SPECIFIC;
    /* GET also matches HEAD */
    if (!strcmp(a, "GET") && !strcmp(b, "HEAD"))
        return MORE_GENERAL;
    if (!strcmp(b, "GET") && !strcmp(a, "HEAD"))
        return MORE_SPECIFIC;
    return DISJOINT;
}

static rel compare(const route *p1, const route *p2)
{
    rel m = compare_methods(p1, p2);
    if (m == DISJOINT)
        return DISJOINT;
    return combine(m, compare_paths(p1, p2));
}

/* ---- pattern parsing ---- */

static int perr(char *err, size_t errlen, const char *pat, const char *why)
{
    snprintf(err, errlen, "bad route pattern \"%s\": %s", pat, why);
    return -1;
}

static bool ident(const char *s, size_t n)
{
    if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return false;
    return true;
}

static int parse_pattern(const char *pat, route *rt, char *err, size_t errlen)
{
    memset(rt, 0, sizeof *rt);
    const char *p = pat;
    const char *sp = strchr(p, ' ');
    if (sp) {
        size_t mn = (size_t)(sp - p);
        if (!mn)
            return perr(err, errlen, pat, "empty method");
        for (size_t i = 0; i < mn; i++)
            if (!isupper((unsigned char)p[i]))
                return perr(err, errlen, pat, "method must be an upper-case token");
        rt->method = strndup(p, mn);
        rt->mlen = mn;
        rt->get = mn == 3 && !memcmp(p, "GET", 3);
        p = sp + 1;
        while (*p == ' ' || *p == '\t')
            p++;
    }
    if (*p != '/')
        return perr(err, errlen, pat, "path must start with '/'");
    size_t plen = strlen(p);
    rt->segs = calloc(plen + 1, sizeof(seg));
    const char *q = p + 1;
    while (*q || (q == p + 1 && plen == 1)) {
        if (!*q) { /* the pattern "/" */
            rt->segs[rt->nsegs++] = (seg){.s = strdup(""), .multi = true};
            break;
        }
        const char *e = strchr(q, '/');
        size_t n = e ? (size_t)(e - q) : strlen(q);
        if (rt->nsegs && (rt->segs[rt->nsegs - 1].multi || is_slash(&rt->segs[rt->nsegs - 1])))
            return perr(err, errlen, pat, "{...} and {$} must be last");
        if (n == 0)
            return perr(err, errlen, pat, "empty segment");
        seg s = {0};
        if (q[0] == '{') {
            if (q[n - 1] != '}')
                return perr(err, errlen, pat, "a wildcard must be a whole segment");
            const char *nm = q + 1;
            size_t nn = n - 2;
            if (nn == 1 && nm[0] == '$') {
                if (e)
                    return perr(err, errlen, pat, "{$} must be last");
                s = (seg){.s = strdup("/"), .n = 1};
            } else {
                if (nn > 3 && memcmp(nm + nn - 3, "...", 3) == 0) {
                    if (e)
                        return perr(err, errlen, pat, "{...} wildcard must be last");
                    nn -= 3;
                    s.multi = true;
                } else {
                    s.wild = true;
                }
                if (!ident(nm, nn))
                    return perr(err, errlen, pat, "bad wildcard name");
                for (int i = 0; i < rt->nsegs; i++)
                    if ((rt->segs[i].wild || rt->segs[i].multi) && rt->segs[i].n == nn &&
                        !memcmp(rt->segs[i].s, nm, nn))
                        return perr(err, errlen, pat, "duplicate wildcard name");
                s.s = strndup(nm, nn);
                s.n = nn;
            }
        } else {
            if (memchr(q, '{', n) || memchr(q, '}', n))
                return perr(err, errlen, pat, "a wildcard must be a whole segment");
            char *lit = malloc(n + 1);
            ssize_t un = http__unescape(bz_str_make(q, n), lit);
            if (un < 0) {
                free(lit);
                return perr(err, errlen, pat, "bad percent-escape");
            }
            lit[un] = '\0';
            s = (seg){.s = lit, .n = (size_t)un};
        }
        rt->segs[rt->nsegs++] = s;
        if (!e)
            break;
        q = e + 1;
        if (!*q) { /* trailing slash: matches everything under it */
            rt->segs[rt->nsegs++] = (seg){.s = strdup(""), .multi = true};
            break;
        }
    }
    rt->text = strdup(pat);
    rt->multi = rt->nsegs > 0 && rt->segs[rt->nsegs - 1].multi;
    for (int i = 0; i < rt->nsegs && i < 4; i++)
        if (!rt->segs[i].wild && !rt->segs[i].multi) {
            rt->sig |= sig_of(rt->segs[i].s, rt->segs[i].n) << (8 * i);
            rt->sigmask |= 0xffu << (8 * i);
        }
    return 0;
}

static void idx_free(http_mux *m)
{
    for (int k = 0; k <= IDX_SEGS; k++) {
        free(m->byn[k]);
        m->byn[k] = NULL;
        free(m->bysig[k].flat);
        m->bysig[k].flat = NULL;
        m->bysig[k].pos = -1;
    }
}

static bool fits(const route *rt, int n)
{
    return rt->multi ? n >= rt->nsegs : n == rt->nsegs;
}

/* Does route rt stay a candidate for a path whose segment pos has the
 * signature byte b?  (No literal there, or a literal with that byte.) */
static bool in_bucket(const route *rt, int pos, unsigned b)
{
    return !((rt->sigmask >> (8 * pos)) & 0xffu) || ((rt->sig >> (8 * pos)) & 0xffu) == b;
}

/* byn[k]'s routes by the byte of the segment that leaves the fewest in
 * the fullest bucket; none when there are few routes to scan anyway. */
static void bysig_make(http_mux *m, int k)
{
    x__bysig *x = &m->bysig[k];
    x->pos = -1;
    int n = 0;
    while (m->byn[k][n] >= 0)
        n++;
    if (n <= 8)
        return;
    int best = n;
    for (int pos = 0; pos < k && pos < 4; pos++) {
        int worst = 0;
        for (unsigned b = 0; b < 256; b++) {
            int c = 0;
            for (int j = 0; j < n; j++)
                c += in_bucket(&m->routes[m->byn[k][j]], pos, b);
            worst = c > worst ? c : worst;
        }
        if (worst < best) {
            best = worst;
            x->pos = pos;
        }
    }
    if (x->pos < 0 || best > n / 2)
        return; /* no segment splits them well: scan */
    size_t total = 0;
    for (unsigned b = 0; b < 256; b++)
        for (int j = 0; j < n; j++)
            total += in_bucket(&m->routes[m->byn[k][j]], x->pos, b);
    x->flat = malloc(sizeof *x->flat * (total + 256));
    if (!x->flat)
        abort();
    int w = 0;
    for (unsigned b = 0; b < 256; b++) {
        x->start[b] = w;
        for (int j = 0; j < n; j++) /* in registration order, as byn[k] */
            if (in_bucket(&m->routes[m->byn[k][j]], x->pos, b))
                x->flat[w++] = m->byn[k][j];
        x->flat[w++] = -1;
    }
}

static void idx_make(http_mux *m)
{
    for (int k = 0; k <= IDX_SEGS; k++) {
        int *l = malloc(sizeof *l * (size_t)(m->n + 1));
        if (!l)
            abort();
        int j = 0;
        for (int i = 0; i < m->n; i++)
            if (fits(&m->routes[i], k))
                l[j++] = i;
        l[j] = -1;
        m->byn[k] = l;
        bysig_make(m, k);
    }
}

static void route_free(route *rt)
{
    for (int i = 0; i < rt->nsegs; i++)
        free(rt->segs[i].s);
    free(rt->segs);
    free(rt->method);
    free(rt->text);
}

http_mux *http_mux_new(void)
{
    http_mux *m = calloc(1, sizeof *m);
    if (!m)
        abort();
    for (int k = 0; k <= IDX_SEGS; k++)
        m->bysig[k].pos = -1;
    return m;
}

void http_mux_free(http_mux *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n; i++)
        route_free(&m->routes[i]);
    free(m->routes);
    idx_free(m);
    free(m);
}

int http_mux_handle(http_mux *m, const char *pattern, http_handler h, char *err, size_t errlen)
{
    route rt;
    if (parse_pattern(pattern, &rt, err, errlen) != 0) {
        route_free(&rt);
        return -1;
    }
    for (int i = 0; i < m->n; i++) {
        rel r = compare(&rt, &m->routes[i]);
        if (r == EQUIVALENT || r == OVERLAPS) {
            snprintf(err, errlen, "route pattern \"%s\" conflicts with \"%s\"%s", pattern, m->routes[i].text,
                     r == EQUIVALENT ? " (same requests)" : " (neither is more specific)");
            route_free(&rt);
            return -1;
        }
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 16;
        m->routes = realloc(m->routes, (size_t)m->cap * sizeof *m->routes);
        if (!m->routes)
            abort();
    }
    rt.h = h;
    m->routes[m->n++] = rt;
    idx_free(m);
    idx_make(m);
    return 0;
}

int http_mux_patterns(const http_mux *m, const char **out, int max)
{
    int k = 0;
    for (int i = 0; i < m->n && k < max; i++)
        out[k++] = m->routes[i].text;
    return m->n;
}

/* ---- matching ---- */

#define MAX_SEGS 64

typedef struct {
    bz_str s[MAX_SEGS];  /* raw (escaped) segments; "/" = trailing slash */
    int n;
    bool too_many;
    bool pct;     /* the path has a '%': literals compare unescaped */
    uint32_t sig; /* sig_of the first 4 segments (unused when pct) */
} reqsegs;

static void split_path(bz_str path, reqsegs *rs)
{
    rs->n = 0;
    rs->too_many = false;
    rs->pct = memchr(path.p, '%', path.n) != NULL;
    size_t i = 1;
    while (i <= path.n) {
        if (rs->n == MAX_SEGS) {
            rs->too_many = true;
            return;
        }
        if (i == path.n) { /* path ended with '/' (or is "/") */
            rs->s[rs->n++] = BZ_STR_LIT("/");
            return;
        }
        const char *e = memchr(path.p + i, '/', path.n - i);
        size_t n = e ? (size_t)(e - (path.p + i)) : path.n - i;
        rs->s[rs->n++] = bz_str_make(path.p + i, n);
        if (!e)
            return;
        i += n + 1;
    }
}

/* The trailing-slash marker: a real segment never contains '/'. */
static bool is_trailing(bz_str s) { return s.n == 1 && s.p[0] == '/'; }

static bool lit_eq(bz_str raw, const seg *sg)
{
    if (!memchr(raw.p, '%', raw.n))
        return raw.n == sg->n && memcmp(raw.p, sg->s, raw.n) == 0;
    char tmp[512];
    if (raw.n > sizeof tmp)
        return false;
    ssize_t n = http__unescape(raw, tmp);
    return n >= 0 && (size_t)n == sg->n && memcmp(tmp, sg->s, sg->n) == 0;
}

/* Does rt's path match?  Captures wildcard values into r when given. */
static bool match_path(const route *rt, const reqsegs *rs, bz_str path, http_req *r)
{
    int npv = 0;
    for (int i = 0; i < rt->nsegs; i++) {
        const seg *sg = &rt->segs[i];
        if (sg->multi) {
            if (i >= rs->n)
                return false;
            if (r && sg->n && npv < HTTP_MAX_PATH_VALUES) {
                /* the rest of the path from this segment on */
                const char *from = is_trailing(rs->s[i]) ? path.p + path.n : rs->s[i].p;
                r->pv[npv].name = sg->s;
                r->pv[npv].raw = bz_str_make(from, (size_t)(path.p + path.n - from));
                npv++;
            }
            if (r)
                r->npv = npv;
            return true;
        }
        if (i >= rs->n)
            return false;
        bz_str s = rs->s[i];
        bool trailing = is_trailing(s);
        if (sg->wild) {
            if (trailing || s.n == 0)
                return false;
            if (r && npv < HTTP_MAX_PATH_VALUES) {
                r->pv[npv].name = sg->s;
                r->pv[npv].raw = s;
                npv++;
            }
        } else if (is_slash(sg)) {
            if (!trailing)
                return false;
        } else if (trailing) {
            return false;
        } else if (!rs->pct) {
            if (s.n != sg->n || memcmp(s.p, sg->s, s.n) != 0)
                return false;
        } else if (!lit_eq(s, sg)) {
            return false;
        }
    }
    if (rt->nsegs != rs->n)
        return false;
    if (r)
        r->npv = npv;
    return true;
}

static bool method_ok(const route *rt, bz_str m)
{
    if (!rt->method)
        return true;
    if (m.n == rt->mlen && !memcmp(m.p, rt->method, m.n))
        return true;
    return rt->get && m.n == 4 && !memcmp(m.p, "HEAD", 4);
}

static void add_allow(char *allow, size_t cap, const char *m)
{
    /* keep the list sorted and unique, like Go */
    char tmp[128];
    const char *items[16];
    int n = 0;
    char copy[128];
    snprintf(copy, sizeof copy, "%s", allow);
    for (char *t = strtok(copy, ", "); t && n < 15; t = strtok(NULL, ", "))
        items[n++] = t;
    for (int i = 0; i < n; i++)
        if (!strcmp(items[i], m))
            return;
    items[n++] = m;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(items[j - 1], items[j]) > 0; j--) {
            const char *x = items[j];
            items[j] = items[j - 1];
            items[j - 1] = x;
        }
    size_t w = 0;
    tmp[0] = '\0';
    for (int i = 0; i < n; i++)
        w += (size_t)snprintf(tmp + w, sizeof tmp - w, "%s%s", i ? ", " : "", items[i]);
    snprintf(allow, cap, "%s", tmp);
}

void http__mux_route(http_mux *m, http_req *r, http_route_match *out, http_handler *h)
{
    reqsegs rs;
    split_path(r->path, &rs);
    out->found = 0;
    out->pattern = NULL;
    out->allow[0] = '\0';
    if (rs.too_many)
        return;
    rs.sig = 0;
    for (int i = 0; i < rs.n && i < 4; i++)
        rs.sig |= sig_of(rs.s[i].p, rs.s[i].n) << (8 * i);
    uint32_t sigon = rs.pct ? 0 : 0xffffffffu; /* escaped segments: no quick reject */
    const route *best = NULL;
    /* A route for another method is passed over before its path is
     * matched (a path has a route per method: GET, PUT, PATCH, DELETE of
     * an item); whether one of them matched the path is asked only when
     * nothing else did (405). */
    bool other_methods = false;
    const int *cand = rs.n <= IDX_SEGS ? m->byn[rs.n] : NULL;
    if (cand && !rs.pct && m->bysig[rs.n].pos >= 0) {
        const x__bysig *x = &m->bysig[rs.n];
        cand = x->flat + x->start[(rs.sig >> (8 * x->pos)) & 0xffu];
    }
    for (int ci = 0, i; cand ? (i = cand[ci]) >= 0 : ci < m->n; ci++) {
        if (!cand)
            i = ci;
        const route *rt = &m->routes[i];
        if (!fits(rt, rs.n) || ((rt->sig ^ rs.sig) & rt->sigmask & sigon))
            continue; /* what match_path would find first, for less */
        if (!method_ok(rt, r->method)) {
            other_methods = true;
            continue;
        }
        if (!match_path(rt, &rs, r->path, NULL))
            continue;
        if (!best || compare(rt, best) == MORE_SPECIFIC)
            best = rt;
    }
    if (best) {
        match_path(best, &rs, r->path, r);
        out->found = 1;
        out->pattern = best->text;
        *h = best->h;
        return;
    }
    if (!other_methods)
        return;
    /* 405: the Allow list of the routes whose path matched, made only now
     * (with snprintf and a sort, it cost 9,000 instructions when every GET
     * of an item collected its PUT, PATCH and DELETE). */
    for (int ci = 0, i; cand ? (i = cand[ci]) >= 0 : ci < m->n; ci++) {
        if (!cand)
            i = ci;
        const route *rt = &m->routes[i];
        if (!fits(rt, rs.n) || !match_path(rt, &rs, r->path, NULL) || method_ok(rt, r->method))
            continue;
        add_allow(out->allow, sizeof out->allow, rt->method);
        if (rt->get)
            add_allow(out->allow, sizeof out->allow, "HEAD");
        out->found = -1;
    }
}

/* Is there a pattern for path + "/" whose path part is exactly that? */
static bool has_subtree(http_mux *m, bz_str path)
{
    for (int i = 0; i < m->n; i++) {
        const char *t = m->routes[i].text;
        const char *sp = strchr(t, ' ');
        const char *pp = sp ? sp + 1 : t;
        size_t n = strlen(pp);
        if (n == path.n + 1 && pp[n - 1] == '/' && !memcmp(pp, path.p, path.n))
            return true;
    }
    return false;
}

static int redirect(http_req *r, const char *path, size_t n)
{
    bz_buf loc = BZ_BUF_INIT;
    bz_buf_append(&loc, path, n);
    if (r->query.n || (r->query.p > r->path.p && r->query.p[-1] == '?')) {
        bz_buf_putc(&loc, '?');
        bz_buf_append_str(&loc, r->query);
    }
    http_add_header_n(r, "Location", loc.data, loc.len);
    bz_buf_free(&loc);
    return http_send(r, 301, "text/plain; charset=utf-8", "Moved Permanently\n", 18);
}

static int mux_serve(http_req *r, void *data)
{
    http_mux *m = data;
    if (!http__path_is_clean(r->path.p, r->path.n) && !bz_str_eq_c(r->method, "CONNECT")) {
        char *clean = bz_arena_alloc(r->arena, r->path.n + 2);
        size_t cn = http__clean_path(r->path.p, r->path.n, clean);
        if (cn != r->path.n || memcmp(clean, r->path.p, cn) != 0)
            return redirect(r, clean, cn);
    }
    http_route_match mt;
    http_handler h;
    http__mux_route(m, r, &mt, &h);
    if (mt.found == 1) {
        r->pattern = mt.pattern;
        return h.fn(r, h.data);
    }
    if (mt.found == -1) {
        http_add_header(r, "Allow", mt.allow);
        return http_send_problem(r, 405, "method_not_allowed", NULL);
    }
    if (r->path.n && r->path.p[r->path.n - 1] != '/' && has_subtree(m, r->path)) {
        char *p = bz_arena_alloc(r->arena, r->path.n + 1);
        memcpy(p, r->path.p, r->path.n);
        p[r->path.n] = '/';
        return redirect(r, p, r->path.n + 1);
    }
    return http_send_problem(r, 404, "not_found", "no route for this path");
}

http_handler http_mux_handler(http_mux *m) { return (http_handler){mux_serve, m}; }

const char *http_path_value(http_req *r, const char *name)
{
    for (int i = 0; i < r->npv; i++) {
        if (strcmp(r->pv[i].name, name) != 0)
            continue;
        char *out = bz_arena_alloc(r->arena, r->pv[i].raw.n + 1);
        ssize_t n = http__unescape(r->pv[i].raw, out);
        if (n < 0)
            return NULL;
        out[n] = '\0';
        return out;
    }
    return NULL;
}

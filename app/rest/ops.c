/* app/rest/ops.c — operations endpoints (API.md §8) and the OpenAPI
 * document (request schemas and query limits come from the limits table). */
#include "app/rest/rest-private.h"
#include <bazaar/grpc.h>

#include <bazaar/clock.h>
#include <bazaar/version.h>

#include <stdio.h>
#include <string.h>

int ops_healthz(rest_x *x) { return http_send(x->r, 200, "text/plain; charset=utf-8", "ok", 2); }

/* 200 {"db":"ok","cache":"ok"} while both answer; 503 naming the failing
 * part, and 503 once shutdown began.  A circuit breaker that is not closed
 * is named too ("open_breakers":["db"]): the reason for the 503, or, for
 * the replica's ("db_read"), a note on a 200 (reads go to the primary). */
int ops_readyz(rest_x *x)
{
    rest *R = x->R;
    http_req *r = x->r;
    if (R->srv && http_server_draining(R->srv)) {
        http_add_header(r, "Retry-After", "1");
        static const char b[] = "{\"status\":\"shutting down\"}";
        return http_send(r, 503, "application/json; charset=utf-8", b, sizeof b - 1);
    }
    bool db_ok, cache_ok;
    svc_ready(R->s, r->ctx, &db_ok, &cache_ok);
    char body[160];
    int n = snprintf(body, sizeof body, "{\"db\":\"%s\",\"cache\":\"%s\"", db_ok ? "ok" : "unavailable",
                     cache_ok ? "ok" : "unavailable");
    const bz_breaker *bs[4];
    int nb = svc_breakers(R->s, bs, 4), nopen = 0;
    for (int i = 0; i < nb; i++)
        if (bz_breaker_get_state(bs[i]) != BZ_BREAKER_CLOSED)
            n += snprintf(body + n, sizeof body - (size_t)n, "%s\"%s\"", nopen++ ? "," : ",\"open_breakers\":[",
                          bs[i]->name);
    n += snprintf(body + n, sizeof body - (size_t)n, "%s}", nopen ? "]" : "");
    if (!(db_ok && cache_ok))
        http_add_header(r, "Retry-After", "1");
    return http_send(r, db_ok && cache_ok ? 200 : 503, "application/json; charset=utf-8", body, (size_t)n);
}

static void x__metrics(bz_buf *b, const void *s)
{
    rest_metrics_render((svc *)s, b);
    grpc_metrics_render(b);
}

int rest_ops_metrics(rest *R, http_req *r)
{
    return rest_send_with(r, 200, "text/plain; version=0.0.4; charset=utf-8", x__metrics, R->s);
}

int ops_metrics(rest_x *x)
{
    /* An operator who gave metrics an address of their own does not want
     * them on the public port too. */
    if (x->R->cfg && x->R->cfg->admin_addr[0])
        return http_send_problem(x->r, 404, "not_found", "metrics are served on the admin address");
    return rest_ops_metrics(x->R, x->r);
}

int rest_ops_healthz(rest *R, http_req *r) { return ops_healthz(&(rest_x){.R = R, .r = r}); }
int rest_ops_readyz(rest *R, http_req *r) { return ops_readyz(&(rest_x){.R = R, .r = r}); }

/* ---- OpenAPI 3.1 ---- */

#define TS "{\"type\":\"string\",\"format\":\"date-time\"}"
#define I64 "{\"type\":\"integer\",\"format\":\"int64\"}"
#define STR "{\"type\":\"string\"}"
#define CUR "{\"type\":\"string\",\"pattern\":\"^[A-Z]{3}$\"}"
#define PAGE(item) "{\"type\":\"object\",\"properties\":{\"data\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/" item "\"}},\"next_cursor\":{\"type\":[\"string\",\"null\"]}}}"
#define LIST(item) "{\"type\":\"object\",\"properties\":{\"data\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/" item "\"}}}}"

/* The models with a field list (svc.h): one property per field. */
#define X__OAS_ID(n) "\"" #n "\":" I64
#define X__OAS_INT(n) ",\"" #n "\":" I64
#define X__OAS_STR(n) ",\"" #n "\":" STR
#define X__OAS_CUR(n) ",\"" #n "\":" CUR
#define X__OAS_TIME(n) ",\"" #n "_at\":" TS
#define X__OAS_OPT(n) ",\"" #n "\":" STR
#define X__OAS_STATUS(n) ",\"" #n "\":{\"enum\":[\"pending\",\"paid\",\"shipped\",\"cancelled\"]}"
#define X__OAS_LINES(n) ",\"" #n "\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/OrderLine\"}}"
#define X__OAS(kind, n) X__OAS_##kind(n)
/* the public view: without the fields only some callers see */
#define X__OAS_PUBLIC_OPT(n)
#define X__OAS_PUBLIC(kind, n) X__OAS_PUBLIC_##kind(n)
#define X__OAS_PUBLIC_ID X__OAS_ID
#define X__OAS_PUBLIC_INT X__OAS_INT
#define X__OAS_PUBLIC_STR X__OAS_STR
#define X__OAS_PUBLIC_CUR X__OAS_CUR
#define X__OAS_PUBLIC_TIME X__OAS_TIME
#define OBJECT(props) "{\"type\":\"object\",\"properties\":{" props "}}"

static const char schemas[] =
    "\"Problem\":{\"type\":\"object\",\"properties\":{\"type\":" STR ",\"title\":" STR ",\"status\":{\"type\":\"integer\"},"
    "\"detail\":" STR ",\"code\":" STR ",\"errors\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":"
    "{\"field\":" STR ",\"message\":" STR "}}}}},"
    "\"User\":" OBJECT(SVC_USER_FIELDS(X__OAS)) ","
    "\"PublicUser\":" OBJECT(SVC_USER_FIELDS(X__OAS_PUBLIC)) ","
    "\"PublicUserList\":" LIST("PublicUser") ","
    "\"Session\":{\"type\":\"object\",\"properties\":{\"token\":" STR ",\"expires_at\":" TS "}},"
    "\"Account\":" OBJECT(SVC_ACCOUNT_FIELDS(X__OAS)) ","
    "\"AccountList\":" LIST("Account") ","
    "\"Transfer\":" OBJECT(SVC_TRANSFER_FIELDS(X__OAS)) ","
    "\"TransferPage\":" PAGE("Transfer") ","
    "\"Item\":" OBJECT(SVC_ITEM_FIELDS(X__OAS)) ","
    "\"ItemPage\":" PAGE("Item") ","
    "\"OrderLine\":{\"type\":\"object\",\"properties\":{\"item_id\":" I64 ",\"quantity\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000},"
    "\"unit_price_cents\":" I64 "}},"
    "\"Order\":" OBJECT(SVC_ORDER_FIELDS(X__OAS)) ","
    "\"OrderPage\":" PAGE("Order") ","
    "\"Leaderboard\":{\"type\":\"object\",\"properties\":{\"data\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":"
    "{\"rank\":{\"type\":\"integer\"},\"user_id\":" I64 ",\"name\":" STR ",\"spent_cents\":" I64 "}}}}},"
    "\"Ready\":{\"type\":\"object\",\"properties\":{\"db\":" STR ",\"cache\":" STR ",\"open_breakers\":{\"type\":\"array\",\"items\":" STR "}}}";

/* The request schemas, from the limits table (app/svc/limits.h). */
static void limit_schema(bz_buf *o, const svc_limit *l)
{
    switch (l->type) {
    case SVC_F_STRING:
        bz_buf_append_c(o, "{\"type\":\"string\"");
        if (l->format == SVC_FMT_CURRENCY)
            bz_buf_append_c(o, ",\"pattern\":\"^[A-Z]{3}$\"");
        else if (l->format == SVC_FMT_STATUS)
            bz_buf_append_c(o, ",\"enum\":[\"pending\",\"paid\",\"shipped\",\"cancelled\"]");
        else
            bz_buf_printf(o, ",\"minLength\":%lld,\"maxLength\":%lld", (long long)l->min, (long long)l->max);
        if (l->format == SVC_FMT_EMAIL)
            bz_buf_append_c(o, ",\"format\":\"email\"");
        bz_buf_putc(o, '}');
        break;
    case SVC_F_INTEGER:
        bz_buf_printf(o, "{\"type\":\"integer\",\"format\":\"int64\",\"minimum\":%lld,\"maximum\":%lld}",
                      (long long)l->min, (long long)l->max);
        break;
    case SVC_F_ARRAY:
        bz_buf_printf(o, "{\"type\":\"array\",\"minItems\":%lld,\"maxItems\":%lld,"
                         "\"items\":{\"$ref\":\"#/components/schemas/OrderLineIn\"}}",
                      (long long)l->min, (long long)l->max);
        break;
    }
}

static void request_schemas(bz_buf *o)
{
    for (int i = 0; i < L__COUNT; i++) {
        const char *name = svc_limits[i].schema;
        bool seen = !strcmp(name, "query");
        for (int k = 0; k < i && !seen; k++)
            seen = !strcmp(svc_limits[k].schema, name);
        if (seen)
            continue;
        jw_key(o, name);
        bz_buf_append_c(o, "{\"type\":\"object\",\"required\":[");
        bool first = true;
        for (int k = i; k < L__COUNT; k++)
            if (!strcmp(svc_limits[k].schema, name) && svc_limits[k].required) {
                bz_buf_printf(o, "%s\"%s\"", first ? "" : ",", svc_limits[k].field);
                first = false;
            }
        bz_buf_append_c(o, "],\"properties\":{");
        first = true;
        for (int k = i; k < L__COUNT; k++)
            if (!strcmp(svc_limits[k].schema, name)) {
                bz_buf_printf(o, "%s\"%s\":", first ? "" : ",", svc_limits[k].field);
                limit_schema(o, &svc_limits[k]);
                first = false;
            }
        bz_buf_append_c(o, "}}");
    }
}

/* Query parameters of a route, from the limits table. */
static void query_params(bz_buf *o, const char *pattern)
{
    static const struct {
        const char *pattern;
        svc_limit_id ids[4];
        int n;
    } q[] = {
        {"GET /v1/users", {L_USERS_EMAIL}, 1},
        {"GET /v1/accounts/{id}/transfers", {L_PAGE_LIMIT}, 1},
        {"GET /v1/items", {L_PAGE_LIMIT, L_ITEMS_SELLER, L_ITEMS_OFFSET}, 3},
        {"GET /v1/users/{id}/orders", {L_PAGE_LIMIT, L_ORDERS_STATUS}, 2},
        {"GET /v1/leaderboard/spenders", {L_LB_CURRENCY, L_LB_LIMIT}, 2},
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        if (strcmp(q[i].pattern, pattern))
            continue;
        for (int k = 0; k < q[i].n; k++) {
            const svc_limit *l = &svc_limits[q[i].ids[k]];
            jw_sep(o);
            bz_buf_printf(o, "{\"in\":\"query\",\"name\":\"%s\",\"required\":%s,\"schema\":", l->field,
                          l->required ? "true" : "false");
            limit_schema(o, l);
            bz_buf_putc(o, '}');
        }
        if (q[i].ids[0] == L_PAGE_LIMIT) { /* paged: the cursor too */
            jw_sep(o);
            bz_buf_append_c(o, "{\"in\":\"query\",\"name\":\"cursor\",\"required\":false,\"schema\":{\"type\":\"string\"}}");
        }
    }
}

void rest_openapi(bz_buf *o)
{
    bz_buf_append_c(o, "{\"openapi\":\"3.1.0\",\"info\":{\"title\":\"bazaar\",\"version\":\"" BAZAAR_VERSION
                       "\",\"description\":\"The bazaar marketplace REST API. Errors are RFC 9457 problem details.\"},"
                       "\"paths\":{");
    /* Group the routes by path (a path object holds all its methods). */
    bool done[128] = {false};
    for (int i = 0; i < rest_nroutes; i++) {
        if (done[i])
            continue;
        const char *path = strchr(rest_routes[i].pattern, ' ') + 1;
        jw_key(o, path);
        bz_buf_putc(o, '{');
        for (int k = i; k < rest_nroutes; k++) {
            const rest_route *rt = &rest_routes[k];
            const char *p = strchr(rt->pattern, ' ') + 1;
            if (done[k] || strcmp(p, path))
                continue;
            done[k] = true;
            char method[16];
            size_t ml = (size_t)(p - 1 - rt->pattern);
            for (size_t c = 0; c < ml && c < sizeof method - 1; c++)
                method[c] = (char)(rt->pattern[c] | 0x20);
            method[ml < sizeof method - 1 ? ml : sizeof method - 1] = '\0';
            jw_key(o, method);
            bz_buf_putc(o, '{');
            jw_str(o, "summary", rt->summary);
            char opid[128];
            snprintf(opid, sizeof opid, "%s %s", method, path);
            jw_str(o, "operationId", opid);
            /* path parameters */
            jw_key(o, "parameters");
            bz_buf_putc(o, '[');
            for (const char *q = strchr(path, '{'); q; q = strchr(q + 1, '{')) {
                const char *e = strchr(q, '}');
                jw_sep(o);
                bz_buf_append_c(o, "{\"in\":\"path\",\"required\":true,\"schema\":" I64 ",\"name\":\"");
                bz_buf_append(o, q + 1, (size_t)(e - q - 1));
                bz_buf_append_c(o, "\"}");
            }
            query_params(o, rt->pattern);
            if (!strcmp(method, "post"))
                bz_buf_append_c(o, (o->data[o->len - 1] == '[' ? "" : ","));
            if (!strcmp(method, "post"))
                bz_buf_append_c(o, "{\"in\":\"header\",\"name\":\"Idempotency-Key\",\"schema\":{\"type\":\"string\",\"maxLength\":255}}");
            bz_buf_putc(o, ']');
            if (rt->auth)
                bz_buf_append_c(o, ",\"security\":[{\"bearer\":[]}]");
            if (rt->request)
                bz_buf_printf(o,
                              ",\"requestBody\":{\"required\":true,\"content\":{\"application/json\":{\"schema\":"
                              "{\"$ref\":\"#/components/schemas/%s\"}}}}",
                              rt->request);
            jw_key(o, "responses");
            bz_buf_putc(o, '{');
            const char *c = rt->codes;
            while (*c) {
                int status = 0;
                while (*c >= '0' && *c <= '9')
                    status = status * 10 + (*c++ - '0');
                while (*c == ' ')
                    c++;
                char sk[16];
                snprintf(sk, sizeof sk, "%d", status);
                jw_key(o, sk);
                bz_buf_putc(o, '{');
                jw_str(o, "description", http_status_text(status));
                if (status >= 400)
                    bz_buf_append_c(o, ",\"content\":{\"application/problem+json\":{\"schema\":{\"$ref\":\"#/components/schemas/Problem\"}}}");
                else if (status < 300 && status != 204 && rt->response && !strcmp(rt->response, "text"))
                    bz_buf_append_c(o, ",\"content\":{\"text/plain\":{\"schema\":{\"type\":\"string\"}}}");
                else if (status < 300 && status != 204 && rt->response && !strcmp(rt->response, "object"))
                    bz_buf_append_c(o, ",\"content\":{\"application/json\":{\"schema\":{\"type\":\"object\"}}}");
                else if (status < 300 && status != 204 && rt->response)
                    bz_buf_printf(o, ",\"content\":{\"application/json\":{\"schema\":{\"$ref\":\"#/components/schemas/%s\"}}}",
                                  rt->response);
                bz_buf_putc(o, '}');
            }
            bz_buf_append_c(o, "}}");
        }
        bz_buf_putc(o, '}');
    }
    bz_buf_append_c(o, "},\"components\":{\"securitySchemes\":{\"bearer\":{\"type\":\"http\",\"scheme\":\"bearer\"}},"
                       "\"schemas\":{");
    bz_buf_append_c(o, schemas);
    request_schemas(o);
    bz_buf_append_c(o, "}}}");
}

static void x__openapi(bz_buf *b, const void *unused) { rest_openapi(b); }

int ops_openapi(rest_x *x) { return rest_send(x->r, 200, x__openapi, NULL, NULL, 0); }

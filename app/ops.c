/* app/ops.c — operations endpoints (API.md §8) and the OpenAPI document. */
#include "app/app-private.h"

#include "base/clock.h"

#include <stdio.h>
#include <string.h>

int ops_healthz(app *a, http_req *r)
{
    (void)a;
    return http_send(r, 200, "text/plain; charset=utf-8", "ok", 2);
}

/* 200 {"db":"ok","cache":"ok"} while both answer; 503 naming the failing
 * part, and 503 once shutdown began. */
int ops_readyz(app *a, http_req *r)
{
    if (http_server_draining(a->srv)) {
        http_add_header(r, "Retry-After", "1");
        static const char b[] = "{\"status\":\"shutting down\"}";
        return http_send(r, 503, "application/json; charset=utf-8", b, sizeof b - 1);
    }
    rt_ctx ctx;
    rt_ctx_init_timeout(&ctx, r->ctx, 2 * BZ_NS_PER_S);
    bz_error e;
    bool db_ok = db_ping(a->db, &ctx, &e) == 0;
    bool cache_ok = cache_ping(a->cache, &ctx, &e) == 0;
    rt_ctx_release(&ctx);
    char body[64];
    int n = snprintf(body, sizeof body, "{\"db\":\"%s\",\"cache\":\"%s\"}", db_ok ? "ok" : "unavailable",
                     cache_ok ? "ok" : "unavailable");
    return http_send(r, db_ok && cache_ok ? 200 : 503, "application/json; charset=utf-8", body, (size_t)n);
}

int ops_metrics(app *a, http_req *r)
{
    bz_buf b = BZ_BUF_INIT;
    metrics_render(a, &b);
    http_send(r, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

/* ---- OpenAPI 3.1 ---- */

#define TS "{\"type\":\"string\",\"format\":\"date-time\"}"
#define I64 "{\"type\":\"integer\",\"format\":\"int64\"}"
#define STR "{\"type\":\"string\"}"
#define CUR "{\"type\":\"string\",\"pattern\":\"^[A-Z]{3}$\"}"
#define PAGE(item) "{\"type\":\"object\",\"properties\":{\"data\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/" item "\"}},\"next_cursor\":{\"type\":[\"string\",\"null\"]}}}"
#define LIST(item) "{\"type\":\"object\",\"properties\":{\"data\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/" item "\"}}}}"

static const char schemas[] =
    "\"Problem\":{\"type\":\"object\",\"properties\":{\"type\":" STR ",\"title\":" STR ",\"status\":{\"type\":\"integer\"},"
    "\"detail\":" STR ",\"code\":" STR ",\"errors\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":"
    "{\"field\":" STR ",\"message\":" STR "}}}}},"
    "\"NewUser\":{\"type\":\"object\",\"required\":[\"email\",\"name\",\"password\"],\"properties\":{\"email\":{\"type\":\"string\",\"maxLength\":254},"
    "\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":100},\"password\":{\"type\":\"string\",\"minLength\":8,\"maxLength\":128}}},"
    "\"UserPatch\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":100},"
    "\"password\":{\"type\":\"string\",\"minLength\":8,\"maxLength\":128}}},"
    "\"User\":{\"type\":\"object\",\"properties\":{\"id\":" I64 ",\"email\":" STR ",\"name\":" STR ",\"created_at\":" TS "}},"
    "\"PublicUser\":{\"type\":\"object\",\"properties\":{\"id\":" I64 ",\"name\":" STR ",\"created_at\":" TS "}},"
    "\"PublicUserList\":" LIST("PublicUser") ","
    "\"Login\":{\"type\":\"object\",\"required\":[\"email\",\"password\"],\"properties\":{\"email\":" STR ",\"password\":" STR "}},"
    "\"Session\":{\"type\":\"object\",\"properties\":{\"token\":" STR ",\"expires_at\":" TS "}},"
    "\"NewAccount\":{\"type\":\"object\",\"required\":[\"currency\"],\"properties\":{\"currency\":" CUR "}},"
    "\"Account\":{\"type\":\"object\",\"properties\":{\"id\":" I64 ",\"user_id\":" I64 ",\"currency\":" CUR
    ",\"balance_cents\":" I64 ",\"created_at\":" TS "}},"
    "\"AccountList\":" LIST("Account") ","
    "\"Deposit\":{\"type\":\"object\",\"required\":[\"amount_cents\"],\"properties\":{\"amount_cents\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000000000}}},"
    "\"NewTransfer\":{\"type\":\"object\",\"required\":[\"from_account_id\",\"to_account_id\",\"amount_cents\"],\"properties\":"
    "{\"from_account_id\":" I64 ",\"to_account_id\":" I64 ",\"amount_cents\":{\"type\":\"integer\",\"minimum\":1}}},"
    "\"Transfer\":{\"type\":\"object\",\"properties\":{\"id\":" I64 ",\"from_account_id\":" I64 ",\"to_account_id\":" I64
    ",\"amount_cents\":" I64 ",\"currency\":" CUR ",\"created_at\":" TS "}},"
    "\"TransferPage\":" PAGE("Transfer") ","
    "\"NewItem\":{\"type\":\"object\",\"required\":[\"sku\",\"name\",\"price_cents\",\"currency\",\"stock\"],\"properties\":"
    "{\"sku\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":64},\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":200},"
    "\"price_cents\":{\"type\":\"integer\",\"minimum\":0},\"currency\":" CUR ",\"stock\":{\"type\":\"integer\",\"minimum\":0}}},"
    "\"ItemPatch\":{\"type\":\"object\",\"properties\":{\"sku\":" STR ",\"name\":" STR ",\"price_cents\":" I64 ",\"currency\":" CUR
    ",\"stock\":" I64 "}},"
    "\"Item\":{\"type\":\"object\",\"properties\":{\"id\":" I64 ",\"seller_id\":" I64 ",\"sku\":" STR ",\"name\":" STR
    ",\"price_cents\":" I64 ",\"currency\":" CUR ",\"stock\":" I64 ",\"version\":" I64 ",\"created_at\":" TS ",\"updated_at\":" TS "}},"
    "\"ItemPage\":" PAGE("Item") ","
    "\"OrderLine\":{\"type\":\"object\",\"properties\":{\"item_id\":" I64 ",\"quantity\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000},"
    "\"unit_price_cents\":" I64 "}},"
    "\"NewOrder\":{\"type\":\"object\",\"required\":[\"account_id\",\"lines\"],\"properties\":{\"account_id\":" I64 ","
    "\"lines\":{\"type\":\"array\",\"minItems\":1,\"maxItems\":50,\"items\":{\"type\":\"object\",\"required\":[\"item_id\",\"quantity\"],"
    "\"properties\":{\"item_id\":" I64 ",\"quantity\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000}}}}}},"
    "\"Order\":{\"type\":\"object\",\"properties\":{\"id\":" I64 ",\"customer_id\":" I64 ",\"account_id\":" I64 ","
    "\"status\":{\"enum\":[\"pending\",\"paid\",\"shipped\",\"cancelled\"]},\"total_cents\":" I64 ",\"currency\":" CUR ","
    "\"lines\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/OrderLine\"}},\"created_at\":" TS ",\"updated_at\":" TS "}},"
    "\"OrderPage\":" PAGE("Order") ","
    "\"Leaderboard\":{\"type\":\"object\",\"properties\":{\"data\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":"
    "{\"rank\":{\"type\":\"integer\"},\"user_id\":" I64 ",\"name\":" STR ",\"spent_cents\":" I64 "}}}}},"
    "\"Ready\":{\"type\":\"object\",\"properties\":{\"db\":" STR ",\"cache\":" STR "}}";

void app_openapi(bz_buf *o)
{
    bz_buf_append_c(o, "{\"openapi\":\"3.1.0\",\"info\":{\"title\":\"bazaar\",\"version\":\"" BAZAAR_VERSION
                       "\",\"description\":\"The bazaar marketplace REST API. Errors are RFC 9457 problem details.\"},"
                       "\"paths\":{");
    /* Group the routes by path (a path object holds all its methods). */
    bool done[128] = {false};
    for (int i = 0; i < app_nroutes; i++) {
        if (done[i])
            continue;
        const char *path = strchr(app_routes[i].pattern, ' ') + 1;
        jw_key(o, path);
        bz_buf_putc(o, '{');
        for (int k = i; k < app_nroutes; k++) {
            const api_route *rt = &app_routes[k];
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
    bz_buf_append_c(o, "}}}");
}

int ops_openapi(app *a, http_req *r)
{
    (void)a;
    bz_buf b = BZ_BUF_INIT;
    app_openapi(&b);
    http_send(r, 200, "application/json; charset=utf-8", b.data, b.len);
    bz_buf_free(&b);
    return 0;
}

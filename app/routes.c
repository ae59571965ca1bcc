/* app/routes.c — the route table (one row per endpoint, also the source
 * of /openapi.json), the per-route dispatcher and the --rate-limit check. */
#include "app/app-private.h"

#include "base/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const api_route app_routes[] = {
    {"GET /healthz", ops_healthz, false, false, "Liveness: 200 while the process runs", NULL, "text", "200"},
    {"GET /readyz", ops_readyz, false, false, "Readiness of the database and the cache", NULL, "Ready", "200 503"},
    {"GET /metrics", ops_metrics, false, false, "Prometheus metrics", NULL, "text", "200"},
    {"GET /openapi.json", ops_openapi, false, false, "This document", NULL, "object", "200"},
    {"POST /v1/users", users_create, false, false, "Sign up", "NewUser", "User", "201 400 409 415"},
    {"GET /v1/users", users_find, false, false, "Find a user by email (case-insensitive)", NULL, "PublicUserList", "200 400"},
    {"GET /v1/users/{id}", users_get, false, false, "A user's public profile", NULL, "PublicUser", "200 404"},
    {"PATCH /v1/users/{id}", users_patch, true, false, "Change your name or password", "UserPatch", "User", "200 400 401 404 415"},
    {"GET /v1/me", users_me, true, false, "The signed-in user", NULL, "User", "200 401"},
    {"POST /v1/sessions", sessions_create, false, false, "Log in: a bearer token valid 24 h", "Login", "Session", "201 400 401 415 429"},
    {"DELETE /v1/sessions/current", sessions_delete, true, false, "Log out: the token stops working everywhere", NULL, NULL, "204 401"},
    {"POST /v1/accounts", accounts_create, true, false, "Open an account in a currency", "NewAccount", "Account", "201 400 401 409 415"},
    {"GET /v1/accounts", accounts_list, true, false, "Your accounts", NULL, "AccountList", "200 401"},
    {"GET /v1/accounts/{id}", accounts_get, true, false, "One of your accounts", NULL, "Account", "200 401 404"},
    {"POST /v1/accounts/{id}/deposits", accounts_deposit, true, false, "Deposit (Idempotency-Key required)", "Deposit", "Account", "201 400 401 404 409 415 422 503"},
    {"GET /v1/accounts/{id}/transfers", transfers_list, true, false, "Transfers in and out of an account, newest first", NULL, "TransferPage", "200 400 401 404"},
    {"POST /v1/transfers", transfers_create, true, false, "Move money between accounts (Idempotency-Key required)", "NewTransfer", "Transfer", "201 400 401 404 409 415 422 503"},
    {"GET /v1/transfers/{id}", transfers_get, true, false, "A transfer touching one of your accounts", NULL, "Transfer", "200 401 404"},
    {"POST /v1/items", items_create, true, false, "List an item for sale", "NewItem", "Item", "201 400 401 409 415"},
    {"GET /v1/items", items_list, false, false, "Items by id (keyset cursor, or ?offset= which is slower)", NULL, "ItemPage", "200 400"},
    {"GET /v1/items/{id}", items_get, false, false, "An item (cache-aside; ETag, If-None-Match, Cache-Status)", NULL, "Item", "200 304 404"},
    {"PUT /v1/items/{id}", items_put, true, false, "Replace your item", "NewItem", "Item", "200 400 401 404 409 415"},
    {"PATCH /v1/items/{id}", items_patch, true, false, "Change some fields of your item", "ItemPatch", "Item", "200 400 401 404 409 415"},
    {"DELETE /v1/items/{id}", items_delete, true, false, "Delete your item", NULL, NULL, "204 401 404"},
    {"POST /v1/orders", orders_create, true, false, "Order items; reserves stock (Idempotency-Key required)", "NewOrder", "Order", "201 400 401 404 409 415 422 503"},
    {"GET /v1/orders/{id}", orders_get, true, false, "One of your orders", NULL, "Order", "200 401 404"},
    {"POST /v1/orders/{id}/pay", orders_pay, true, false, "Pay a pending order", NULL, "Order", "200 401 404 409 503"},
    {"POST /v1/orders/{id}/cancel", orders_cancel, true, false, "Cancel a pending order; returns stock", NULL, "Order", "200 401 404 409"},
    {"GET /v1/users/{id}/orders", orders_list, true, false, "Your orders, newest first, optionally by status", NULL, "OrderPage", "200 400 401 404"},
    {"GET /v1/users/{id}/orders/events", orders_events, true, true, "Server-sent events: your orders' status changes", NULL, "text", "200 401 404"},
    {"GET /v1/leaderboard/spenders", leaderboard_get, false, false, "Top spenders in a currency", NULL, "Leaderboard", "200 400"},
};
const int app_nroutes = sizeof app_routes / sizeof app_routes[0];

typedef struct binding {
    app *a;
    const api_route *route;
    bool limited; /* subject to --rate-limit */
} binding;

/* --rate-limit: a fixed window per principal (the user behind a valid
 * token, else the client address), counted in the cache so every instance
 * shares it.  Returns false when it has answered 429. */
static bool rate_ok(app *a, http_req *r)
{
    int64_t uid = 0;
    api_try_auth(a, r, &uid);
    char key[96];
    if (uid > 0)
        snprintf(key, sizeof key, "rl:u:%lld", (long long)uid);
    else {
        char ip[64];
        api_peer_ip(r, ip);
        snprintf(key, sizeof key, "rl:ip:%s", ip);
    }
    cache_rate rt;
    bz_error e;
    if (cache_rate_allow(a->cache, r->ctx, key, a->cfg->rate_limit.count, a->cfg->rate_limit.window_ns, &rt, &e) != 0)
        return true; /* fail open: the limiter must not take the API down */
    api_rate_headers(r, &rt);
    if (rt.allowed)
        return true;
    metrics_count_rate_limited();
    http_send_problem(r, 429, "rate_limited", "too many requests; retry after the time in Retry-After");
    return false;
}

static int dispatch(http_req *r, void *data)
{
    binding *b = data;
    if (b->limited && !rate_ok(b->a, r))
        return 0;
    return b->route->fn(b->a, r);
}

struct app_mux {
    http_mux *mux;
    binding *bindings;
    http_handler *wrapped;
    int n;
};

app_mux *app_mux_new(app *a, const int64_t *request_timeout, char *err, size_t errlen)
{
    app_mux *m = calloc(1, sizeof *m);
    m->bindings = calloc((size_t)app_nroutes, sizeof *m->bindings);
    m->wrapped = calloc((size_t)app_nroutes, sizeof *m->wrapped);
    if (!m || !m->bindings || !m->wrapped)
        abort();
    m->mux = http_mux_new();
    bool limit_on = a && a->cfg->rate_limit.count > 0;
    for (int i = 0; i < app_nroutes; i++) {
        const api_route *rt = &app_routes[i];
        bool ops = strstr(rt->pattern, " /v1/") == NULL; /* health, metrics: never limited */
        m->bindings[i] = (binding){a, rt, limit_on && !ops};
        http_handler h = {dispatch, &m->bindings[i]};
        /* Streams live until the client or the server ends them; every
         * other route gets --request-timeout on its context. */
        if (!rt->stream && request_timeout) {
            http_mw mw = {http_mw_timeout, (void *)request_timeout};
            h = http_chain(h, &mw, 1);
        }
        m->wrapped[i] = h;
        m->n = i + 1;
        if (http_mux_handle(m->mux, rt->pattern, h, err, errlen) != 0) {
            app_mux_free(m);
            return NULL;
        }
    }
    return m;
}

http_mux *app_mux_get(app_mux *m) { return m->mux; }

void app_mux_free(app_mux *m)
{
    if (!m)
        return;
    http_mux_free(m->mux);
    for (int i = 0; i < m->n; i++)
        if (m->wrapped[i].data != &m->bindings[i])
            http_chain_free(m->wrapped[i]);
    free(m->wrapped);
    free(m->bindings);
    free(m);
}

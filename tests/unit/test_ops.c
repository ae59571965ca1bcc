/* tests/unit/test_ops.c — the operation table (app/ops.def) against what
 * the server publishes: every method of bazaar.proto (as reflection
 * serves it), every REST route the router serves and every path of
 * /openapi.json has its row, and every row is served by the transports it
 * names.  Adding a method to the proto, a route or a documented path
 * without a row fails here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "app/grpc/rpc-private.h"
#include "app/ops.h"
#include "app/rest/rest-private.h"
#include "google/protobuf/descriptor.pb-c.h"

#include <stdio.h>
#include <string.h>

extern const unsigned char app_descriptor_set[];
extern const size_t app_descriptor_set_len;

static const app_op *by_grpc(const char *path)
{
    for (int i = 0; i < app_nops; i++)
        if (app_ops[i].grpc && !strcmp(app_ops[i].grpc, path))
            return &app_ops[i];
    return NULL;
}

static const app_op *by_rest(const char *pattern)
{
    for (int i = 0; i < app_nops; i++)
        if (app_ops[i].rest && !strcmp(app_ops[i].rest, pattern))
            return &app_ops[i];
    return NULL;
}

/* The routes that are not marketplace operations (no gRPC twin, no
 * service function): liveness, readiness, metrics, the document itself. */
static bool ops_route(const char *pattern)
{
    static const char *const own[] = {"GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json"};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (!strcmp(pattern, own[i]))
            return true;
    return false;
}

static void every_proto_method_has_a_row(void **state)
{
    (void)state;
    Google__Protobuf__FileDescriptorSet *set =
        google__protobuf__file_descriptor_set__unpack(NULL, app_descriptor_set_len, app_descriptor_set);
    assert_non_null(set);
    int methods = 0;
    for (size_t f = 0; f < set->n_file; f++) {
        Google__Protobuf__FileDescriptorProto *fd = set->file[f];
        if (strcmp(fd->name, "bazaar.proto") != 0)
            continue;
        for (size_t s = 0; s < fd->n_service; s++)
            for (size_t m = 0; m < fd->service[s]->n_method; m++) {
                Google__Protobuf__MethodDescriptorProto *md = fd->service[s]->method[m];
                char path[160];
                snprintf(path, sizeof path, "/%s.%s/%s", fd->package, fd->service[s]->name, md->name);
                const app_op *op = by_grpc(path);
                if (!op)
                    fail_msg("bazaar.proto's %s has no row in app/ops.def", path);
                /* the row's gRPC kind is the proto's */
                bool found = false;
                for (int i = 0; i < rpc_nops; i++)
                    if (!strcmp(rpc_ops[i].path, path)) {
                        found = true;
                        assert_int_equal(rpc_ops[i].client_streaming, md->client_streaming);
                        assert_int_equal(rpc_ops[i].server_streaming, md->server_streaming);
                        assert_true(rpc_ops[i].run || rpc_ops[i].stream);
                        assert_true(!rpc_ops[i].run == (md->client_streaming || md->server_streaming));
                        assert_int_equal(rpc_ops[i].auth, op->auth);
                        assert_int_equal((int)rpc_ops[i].idem, (int)op->idem);
                        assert_non_null(rpc_method_desc(path));
                    }
                if (!found)
                    fail_msg("%s has a row but no gRPC method", path);
                methods++;
            }
    }
    assert_int_equal(methods, 29);
    /* and no row names a method the contract lacks */
    int rows = 0;
    for (int i = 0; i < app_nops; i++)
        if (app_ops[i].grpc) {
            rows++;
            if (!rpc_method_desc(app_ops[i].grpc))
                fail_msg("row %s names %s, which bazaar.proto lacks", app_ops[i].id, app_ops[i].grpc);
        }
    assert_int_equal(rows, methods);
    assert_int_equal(rpc_nops, methods);
    google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
}

static void every_route_and_openapi_path_has_a_row(void **state)
{
    (void)state;
    char err[256];
    rest *m = rest_new(NULL, NULL, NULL, err, sizeof err);
    assert_non_null(m);
    const char *pats[256];
    int n = http_mux_patterns(rest_mux(m), pats, 256);
    int ops_routes = 0;
    for (int i = 0; i < n; i++) {
        if (ops_route(pats[i])) {
            ops_routes++;
            continue;
        }
        if (!by_rest(pats[i]))
            fail_msg("route %s has no row in app/ops.def", pats[i]);
    }
    assert_int_equal(ops_routes, 4);
    /* every row with a REST pattern is served */
    for (int i = 0; i < app_nops; i++) {
        if (!app_ops[i].rest)
            continue;
        bool served = false;
        for (int k = 0; k < n; k++)
            served |= !strcmp(pats[k], app_ops[i].rest);
        if (!served)
            fail_msg("row %s: %s is not routed", app_ops[i].id, app_ops[i].rest);
    }
    /* every documented path + method is a route with a row */
    bz_buf doc = BZ_BUF_INIT;
    rest_openapi(&doc);
    json_error_t je;
    json_t *j = json_loadb(doc.data, doc.len, 0, &je);
    assert_non_null(j);
    const char *path;
    json_t *item;
    int documented = 0;
    json_object_foreach(json_object_get(j, "paths"), path, item)
    {
        const char *method;
        json_t *op;
        json_object_foreach(item, method, op)
        {
            char pattern[200];
            size_t k = 0;
            for (; method[k] && k < 15; k++)
                pattern[k] = (char)(method[k] & ~0x20);
            snprintf(pattern + k, sizeof pattern - k, " %s", path);
            if (!ops_route(pattern) && !by_rest(pattern))
                fail_msg("/openapi.json documents %s, which has no row", pattern);
            documented++;
        }
    }
    assert_int_equal(documented, n);
    json_decref(j);
    bz_buf_free(&doc);
    rest_free(m);
}

static void rows_are_whole(void **state)
{
    (void)state;
    for (int i = 0; i < app_nops; i++) {
        const app_op *op = &app_ops[i];
        assert_non_null(op->svc_addr);
        assert_true(!strncmp(op->svc_fn, "svc_", 4));
        if (!op->rest && !op->grpc)
            fail_msg("row %s is served by no transport", op->id);
        for (int k = 0; k < i; k++)
            if (!strcmp(app_ops[k].id, op->id))
                fail_msg("row %s is declared twice", op->id);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_proto_method_has_a_row),
        cmocka_unit_test(every_route_and_openapi_path_has_a_row),
        cmocka_unit_test(rows_are_whole),
    };
    return cmocka_run_group_tests_name("ops", tests, NULL, NULL);
}

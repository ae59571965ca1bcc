/* tests/unit/test_grpc.c — grpc/ internals: registering a protoc-c service
 * (grpc_server_add_service: paths, streaming flags, refusals), the
 * descriptor sets reflection accepts, and the descriptions made from
 * protobuf-c's descriptors (grpc/describe.c) against protoc's own
 * FileDescriptorProto for the same .proto (grpc.health.v1's, which the
 * library embeds as protoc wrote it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grpc/grpc-private.h"

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

#include <stdio.h>
#include <string.h>

extern const unsigned char grpc__std_descriptor_set[];
extern const size_t grpc__std_descriptor_set_len;

#define HEALTH (&grpc__health__v1__health__descriptor)

static int a_fn(grpc_call *c, void *data) { return 0; }
static int a_unary(grpc_call *c, const ProtobufCMessage *in, ProtobufCMessage *out, void *data) { return 0; }

static grpc_server *new_server(void) { return grpc_server_new(&(grpc_opts){0}); }

static const grpc_method *method(const grpc_server *g, const char *path)
{
    for (int i = 0; i < g->n; i++)
        if (!strcmp(g->methods[i].path, path))
            return &g->methods[i];
    return NULL;
}

static void add_service_registers_paths_and_flags(void **state)
{
    grpc_server *g = new_server();
    int data;
    const grpc_handler h[] = {
        {"Watch", .fn = a_fn, .server_streaming = true},
        {"Check", .unary = a_unary},
        {0},
    };
    assert_int_equal(grpc_server_add_service(g, HEALTH, h, &data), 0);
    assert_int_equal(g->n, 2);
    const grpc_method *check = method(g, "/grpc.health.v1.Health/Check");
    const grpc_method *watch = method(g, "/grpc.health.v1.Health/Watch");
    assert_non_null(check);
    assert_non_null(watch);
    assert_false(check->client_streaming || check->server_streaming);
    assert_true(watch->server_streaming && !watch->client_streaming);
    /* fn handlers get the caller's data; a unary one goes through the
     * typed trampoline with its own binding */
    assert_ptr_equal(watch->fn, a_fn);
    assert_ptr_equal(watch->data, &data);
    assert_ptr_not_equal(check->fn, a_fn);
    /* remembered for reflection, flags in the descriptor's order */
    assert_int_equal(g->nsvcs, 1);
    assert_ptr_equal(g->svcs[0].d, HEALTH);
    assert_string_equal(HEALTH->methods[1].name, "Watch");
    assert_false(g->svcs[0].server_streaming[0]);
    assert_true(g->svcs[0].server_streaming[1]);
    grpc_server_free(g);
}

static void add_service_refuses_bad_tables(void **state)
{
    const grpc_handler unknown[] = {{"Check", .unary = a_unary}, {"Nope", .fn = a_fn}, {0}};
    const grpc_handler twice[] = {{"Check", .unary = a_unary}, {"Check", .fn = a_fn}, {0}};
    const grpc_handler both[] = {{"Check", .unary = a_unary, .fn = a_fn}, {0}};
    const grpc_handler neither[] = {{"Check", .fn = NULL}, {0}};
    const grpc_handler unary_stream[] = {{"Watch", .unary = a_unary, .server_streaming = true}, {0}};
    const grpc_handler *bad[] = {unknown, twice, both, neither, unary_stream};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        grpc_server *g = new_server();
        assert_int_equal(grpc_server_add_service(g, HEALTH, bad[i], NULL), -1);
        assert_int_equal(g->n, 0); /* nothing registered */
        assert_int_equal(g->nsvcs, 0);
        grpc_server_free(g);
    }
    /* a path already taken */
    grpc_server *g = new_server();
    assert_int_equal(grpc_server_add(g, &(grpc_method){"/grpc.health.v1.Health/Watch", a_fn, NULL, false, true}), 0);
    const grpc_handler h[] = {{"Check", .unary = a_unary}, {"Watch", .fn = a_fn, .server_streaming = true}, {0}};
    assert_int_equal(grpc_server_add_service(g, HEALTH, h, NULL), -1);
    assert_int_equal(g->n, 1);
    /* not a service descriptor */
    assert_int_equal(grpc_server_add_service(g, (const void *)&grpc__health__v1__health_check_request__descriptor, h,
                                             NULL),
                     -1);
    /* an empty table is fine: the service is described, nothing served */
    assert_int_equal(grpc_server_add_service(g, HEALTH, (const grpc_handler[]){{0}}, NULL), 0);
    assert_int_equal(g->n, 1);
    assert_int_equal(g->nsvcs, 1);
    grpc_server_free(g);
}

static void descriptor_sets_are_checked(void **state)
{
    grpc_server *g = new_server();
    assert_int_equal(grpc_reflection_add_descriptor_set(g, NULL, 0), -1);
    assert_int_equal(grpc_reflection_add_descriptor_set(g, "\xff\xff\xff", 3), -1);            /* not protobuf */
    assert_int_equal(grpc_reflection_add_descriptor_set(g, "\x0a\x03\xff\xff\xff", 5), -1);    /* a bad file */
    assert_int_equal(grpc_reflection_add_descriptor_set(g, "\x0a\x00", 2), -1);                /* a file with no name */
    assert_int_equal(grpc_reflection_add_descriptor_set(g, grpc__std_descriptor_set, grpc__std_descriptor_set_len), 0);
    assert_non_null(g->refl);
    assert_int_equal(grpc_reflection_add_descriptor_set(g, "", 0), 0); /* an empty set: no files */
    grpc_server_free(g);
}

/* ---- the description against protoc's ---------------------------------------------------- */

static const char *no_type(void *arg, const char *type) { return NULL; }
static bool no_file(void *arg, const char *file) { return false; }
static const char *health_types(void *arg, const char *type)
{
    return strncmp(type, "grpc.health.v1.", 15) ? NULL : "grpc/health/v1/health.proto";
}

static Google__Protobuf__FileDescriptorSet *unpack_set(const void *p, size_t n)
{
    Google__Protobuf__FileDescriptorSet *s = google__protobuf__file_descriptor_set__unpack(NULL, n, p);
    assert_non_null(s);
    return s;
}

static const Google__Protobuf__FileDescriptorProto *file_named(const Google__Protobuf__FileDescriptorSet *s,
                                                               const char *name)
{
    for (size_t i = 0; i < s->n_file; i++)
        if (!strcmp(s->file[i]->name, name))
            return s->file[i];
    fail_msg("no file %s", name);
    return NULL;
}

static const Google__Protobuf__DescriptorProto *message_named(Google__Protobuf__DescriptorProto *const *m, size_t n,
                                                              const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(m[i]->name, name))
            return m[i];
    fail_msg("no message %s", name);
    return NULL;
}

static void same_enum(const Google__Protobuf__EnumDescriptorProto *got,
                      const Google__Protobuf__EnumDescriptorProto *want)
{
    assert_string_equal(got->name, want->name);
    assert_int_equal(got->n_value, want->n_value);
    for (size_t i = 0; i < want->n_value; i++) { /* health's are declared in number order */
        assert_string_equal(got->value[i]->name, want->value[i]->name);
        assert_int_equal(got->value[i]->number, want->value[i]->number);
    }
}

static void same_message(const Google__Protobuf__DescriptorProto *got, const Google__Protobuf__DescriptorProto *want)
{
    assert_string_equal(got->name, want->name);
    assert_int_equal(got->n_field, want->n_field);
    for (size_t i = 0; i < want->n_field; i++) { /* health's are declared in number order */
        const Google__Protobuf__FieldDescriptorProto *a = got->field[i], *b = want->field[i];
        assert_string_equal(a->name, b->name);
        assert_int_equal(a->number, b->number);
        assert_int_equal(a->label, b->label);
        assert_int_equal(a->type, b->type);
        assert_string_equal(a->type_name ? a->type_name : "", b->type_name ? b->type_name : "");
        assert_string_equal(a->json_name, b->json_name);
        assert_null(a->default_value);
        assert_int_equal(a->has_oneof_index, b->has_oneof_index);
    }
    assert_int_equal(got->n_nested_type, want->n_nested_type);
    assert_int_equal(got->n_enum_type, want->n_enum_type);
    for (size_t i = 0; i < want->n_enum_type; i++)
        same_enum(got->enum_type[i], want->enum_type[i]);
}

static void describes_health_like_protoc(void **state)
{
    bool cs[2] = {false, false}, ss[2] = {false, true};
    grpc__service s = {HEALTH, cs, ss};
    const grpc__service *svcs[] = {&s};
    bz_buf out = BZ_BUF_INIT;
    assert_int_equal(grpc__describe(svcs, 1, &(grpc__describe_env){no_type, no_file, NULL}, &out), 0);
    Google__Protobuf__FileDescriptorSet *got = unpack_set(out.data, out.len);
    Google__Protobuf__FileDescriptorSet *std = unpack_set(grpc__std_descriptor_set, grpc__std_descriptor_set_len);
    assert_int_equal(got->n_file, 1);
    const Google__Protobuf__FileDescriptorProto *g = got->file[0];
    const Google__Protobuf__FileDescriptorProto *w = file_named(std, "grpc/health/v1/health.proto");
    assert_string_equal(g->name, "grpc.health.v1.proto"); /* one file per package, named after it */
    assert_string_equal(g->package, w->package);
    assert_string_equal(g->syntax, w->syntax);
    assert_int_equal(g->n_dependency, 0);
    assert_int_equal(g->n_message_type, w->n_message_type);
    for (size_t i = 0; i < w->n_message_type; i++)
        same_message(message_named(g->message_type, g->n_message_type, w->message_type[i]->name), w->message_type[i]);
    assert_int_equal(g->n_service, 1);
    const Google__Protobuf__ServiceDescriptorProto *gs = g->service[0], *ws = w->service[0];
    assert_string_equal(gs->name, ws->name);
    assert_int_equal(gs->n_method, ws->n_method);
    for (size_t i = 0; i < ws->n_method; i++) {
        assert_string_equal(gs->method[i]->name, ws->method[i]->name);
        assert_string_equal(gs->method[i]->input_type, ws->method[i]->input_type);
        assert_string_equal(gs->method[i]->output_type, ws->method[i]->output_type);
        assert_int_equal(gs->method[i]->client_streaming, ws->method[i]->client_streaming);
        assert_int_equal(gs->method[i]->server_streaming, ws->method[i]->server_streaming);
    }
    assert_true(gs->method[1]->server_streaming); /* Watch */
    google__protobuf__file_descriptor_set__free_unpacked(got, NULL);
    google__protobuf__file_descriptor_set__free_unpacked(std, NULL);
    bz_buf_free(&out);
}

static void known_types_are_imported_not_described(void **state)
{
    bool f[2] = {false, false};
    grpc__service s = {HEALTH, f, f};
    const grpc__service *svcs[] = {&s};
    bz_buf out = BZ_BUF_INIT;
    assert_int_equal(grpc__describe(svcs, 1, &(grpc__describe_env){health_types, no_file, NULL}, &out), 0);
    Google__Protobuf__FileDescriptorSet *got = unpack_set(out.data, out.len);
    assert_int_equal(got->n_file, 1);
    assert_int_equal(got->file[0]->n_message_type, 0);
    assert_int_equal(got->file[0]->n_dependency, 1);
    assert_string_equal(got->file[0]->dependency[0], "grpc/health/v1/health.proto");
    assert_int_equal(got->file[0]->n_service, 1);
    google__protobuf__file_descriptor_set__free_unpacked(got, NULL);
    bz_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(add_service_registers_paths_and_flags),
        cmocka_unit_test(add_service_refuses_bad_tables),
        cmocka_unit_test(descriptor_sets_are_checked),
        cmocka_unit_test(describes_health_like_protoc),
        cmocka_unit_test(known_types_are_imported_not_described),
    };
    return cmocka_run_group_tests_name("grpc", tests, NULL, NULL);
}

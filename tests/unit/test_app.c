/* tests/unit/test_app.c — app/ internals: the OpenAPI document covers every
 * registered route, JSON validation helpers, cursors, seeded passwords. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "app/app-private.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

/* Every pattern the router serves must be a path + method in the
 * document; a route registered without documentation fails here. */
static void openapi_documents_every_registered_route(void **state)
{
    (void)state;
    char err[256];
    app_mux *m = app_mux_new(NULL, NULL, err, sizeof err);
    assert_non_null(m);
    const char *pats[256];
    int n = http_mux_patterns(app_mux_get(m), pats, 256);
    assert_true(n >= 31);
    bz_buf doc = BZ_BUF_INIT;
    app_openapi(&doc);
    json_error_t je;
    json_t *j = json_loadb(doc.data, doc.len, 0, &je);
    if (!j)
        fail_msg("openapi.json is not JSON: %s at %d", je.text, je.position);
    assert_string_equal(json_string_value(json_object_get(j, "openapi")), "3.1.0");
    json_t *paths = json_object_get(j, "paths");
    for (int i = 0; i < n; i++) {
        char method[16];
        const char *sp = strchr(pats[i], ' ');
        assert_non_null(sp);
        size_t ml = (size_t)(sp - pats[i]);
        for (size_t k = 0; k < ml; k++)
            method[k] = (char)(pats[i][k] | 0x20);
        method[ml] = '\0';
        json_t *p = json_object_get(paths, sp + 1);
        if (!p || !json_object_get(p, method))
            fail_msg("route %s is not documented", pats[i]);
        json_t *op = json_object_get(p, method);
        assert_non_null(json_object_get(op, "responses"));
    }
    json_decref(j);
    bz_buf_free(&doc);
    app_mux_free(m);
}

static void jv_collects_every_bad_field(void **state)
{
    (void)state;
    char why[128];
    const char *body = "{\"a\":\"\",\"b\":12.5,\"c\":\"\\u00e9\\u00e9\",\"d\":1001,\"e\":null}";
    json_t *o = json_parse_object(body, strlen(body), why, sizeof why);
    assert_non_null(o);
    jv v;
    jv_init(&v);
    const char *s;
    size_t n;
    int64_t i;
    assert_false(jv_str(&v, o, "a", true, 1, 10, true, &s, &n));
    assert_false(jv_int(&v, o, "b", true, 0, 10, &i));
    assert_true(jv_str(&v, o, "c", true, 1, 2, true, &s, &n)); /* 2 characters, 4 bytes */
    assert_false(jv_str(&v, o, "c", true, 1, 2, false, &s, &n));
    assert_false(jv_int(&v, o, "d", true, 1, 1000, &i));
    assert_false(jv_int(&v, o, "e", false, 1, 1000, &i)); /* null = absent, optional: no error */
    assert_false(jv_int(&v, o, "missing", true, 1, 1000, &i));
    assert_int_equal(v.n, 5);
    assert_non_null(strstr(v.errs.data, "\"field\":\"missing\",\"message\":\"is required\""));
    jv_free(&v);
    json_decref(o);
    assert_null(json_parse_object("[1]", 3, why, sizeof why));
    assert_null(json_parse_object("{\"a\":1,\"a\":2}", 13, why, sizeof why)); /* duplicate member */
    assert_null(json_parse_object("{\"a\":1", 6, why, sizeof why));
}

static void cursors_round_trip_and_resist_tampering(void **state)
{
    (void)state;
    app a = {0};
    randombytes_buf(a.cursor_key, sizeof a.cursor_key);
    api_cursor c = {1767225600123456LL, 4242}, back = {0, 0};
    char enc[64];
    api_cursor_encode(&a, &c, "orders:7:", enc);
    /* decode through the same path a request takes */
    http_req r;
    memset(&r, 0, sizeof r);
    bz_arena ar;
    bz_arena_init(&ar, 1024);
    r.arena = &ar;
    char q[128];
    snprintf(q, sizeof q, "cursor=%s", enc);
    r.query = bz_str_c(q);
    assert_int_equal(api_cursor_param(&a, &r, "orders:7:", &back), 1);
    assert_int_equal(back.t_us, c.t_us);
    assert_int_equal(back.id, c.id);
    /* flipping any character of the cursor is detected */
    for (size_t i = 0; i < strlen(enc); i++) {
        char t[64];
        strcpy(t, enc);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        snprintf(q, sizeof q, "cursor=%s", t);
        r.query = bz_str_c(q);
        r.status = 0;
        assert_int_equal(api_cursor_param(&a, &r, "orders:7:", &back), -1);
        assert_int_equal(r.status, 400);
        bz_buf_free(&r.body);
        bz_buf_free(&r.resp_headers);
    }
    bz_arena_free(&ar);
}

static void seeded_password_hashes_verify_and_repeat(void **state)
{
    (void)state;
    char h1[160], h2[160];
    pw_hash_seeded("password7", 9, 42, h1);
    pw_hash_seeded("password7", 9, 42, h2);
    assert_string_equal(h1, h2);
    assert_true(strncmp(h1, "$argon2id$v=19$m=1024,t=1,p=1$", 30) == 0);
    assert_int_equal(crypto_pwhash_str_verify(h1, "password7", 9), 0);
    assert_int_not_equal(crypto_pwhash_str_verify(h1, "password8", 9), 0);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(openapi_documents_every_registered_route),
        cmocka_unit_test(jv_collects_every_bad_field),
        cmocka_unit_test(cursors_round_trip_and_resist_tampering),
        cmocka_unit_test(seeded_password_hashes_verify_and_repeat),
    };
    return cmocka_run_group_tests_name("app", tests, NULL, NULL);
}

/* tests/unit/test_app.c — the REST adapter's internals: the OpenAPI
 * document covers every registered route and every limits-table row,
 * JSON decoding into typed inputs (violations, 64-bit overflow), the
 * error → HTTP table, seeded passwords. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "app/rest/rest-private.h"
#include "app/svc/password.h"
#include "app/svc/svc-private.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every pattern the router serves must be a path + method in the
 * document; a route registered without documentation fails here. */
static void openapi_documents_every_registered_route(void **state)
{
    (void)state;
    char err[256];
    rest *m = rest_new(NULL, NULL, NULL, err, sizeof err);
    assert_non_null(m);
    const char *pats[256];
    int n = http_mux_patterns(rest_mux(m), pats, 256);
    assert_true(n >= 31);
    bz_buf doc = BZ_BUF_INIT;
    rest_openapi(&doc);
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
    /* every request field of the limits table is in its schema, with its bounds */
    json_t *schemas = json_object_get(json_object_get(j, "components"), "schemas");
    for (int i = 0; i < L__COUNT; i++) {
        const svc_limit *l = &svc_limits[i];
        if (!strcmp(l->schema, "query"))
            continue;
        json_t *prop = json_object_get(json_object_get(json_object_get(schemas, l->schema), "properties"), l->field);
        if (!prop)
            fail_msg("%s.%s is not in the OpenAPI schemas", l->schema, l->field);
        if (l->type == SVC_F_INTEGER)
            assert_int_equal(json_integer_value(json_object_get(prop, "maximum")), l->max);
    }
    json_decref(j);
    bz_buf_free(&doc);
    rest_free(m);
}

/* Decoding names every bad field once: type errors from the decoder,
 * range errors from the service's checks, and integers beyond 64 bits. */
static void decoding_collects_every_bad_field(void **state)
{
    (void)state;
    char why[128];
    bool reals;
    const char *body = "{\"sku\":7,\"name\":\"\",\"price_cents\":12.5,\"currency\":\"usd\",\"stock\":99999999999999999999}";
    json_t *o = json_parse_object(body, strlen(body), &reals, why, sizeof why);
    assert_non_null(o);
    assert_true(reals); /* the 20-digit stock did not fit */
    svc_err e;
    svc_err_clear(&e);
    svc_str sku = rest_get_str(o, L_ITEM_SKU, &e);
    svc_str name = rest_get_str(o, L_ITEM_NAME, &e);
    svc_int price = rest_get_int(o, L_ITEM_PRICE, reals, NULL, &e);
    svc_str cur = rest_get_str(o, L_ITEM_CURRENCY, &e);
    svc_int stock = rest_get_int(o, L_ITEM_STOCK, reals, NULL, &e);
    assert_int_equal(sku.st, SVC_BAD);
    assert_int_equal(price.st, SVC_BAD);
    assert_int_equal(stock.st, SVC_BAD);
    assert_int_equal(e.nviol, 3);
    /* the service's checks add the rest and skip what was reported */
    svc_check_str(&e, L_ITEM_SKU, &sku, NULL);
    svc_check_str(&e, L_ITEM_NAME, &name, NULL);
    svc_check_int(&e, L_ITEM_PRICE, &price, NULL);
    svc_check_str(&e, L_ITEM_CURRENCY, &cur, NULL);
    svc_check_int(&e, L_ITEM_STOCK, &stock, NULL);
    assert_int_equal(e.kind, SVC_INVALID);
    assert_string_equal(e.code, "validation_failed");
    assert_int_equal(e.nviol, 5);
    const char *want[] = {"sku", "price_cents", "stock", "name", "currency"};
    for (int i = 0; i < 5; i++)
        assert_string_equal(e.viol[i].field, want[i]);
    assert_non_null(strstr(e.viol[2].msg, "between 0 and"));
    json_decref(o);
    assert_null(json_parse_object("[1]", 3, &reals, why, sizeof why));
    assert_null(json_parse_object("{\"a\":1,\"a\":2}", 13, &reals, why, sizeof why)); /* duplicate member */
    assert_null(json_parse_object("{\"a\":1", 6, &reals, why, sizeof why));
}

/* The one table: kinds to statuses and headers. */
static void errors_map_to_http_once(void **state)
{
    (void)state;
    static const struct {
        svc_kind kind;
        const char *code;
        int status;
        const char *header;
    } cases[] = {
        {SVC_INVALID, "validation_failed", 400, NULL},
        {SVC_UNAUTHENTICATED, "unauthorized", 401, "WWW-Authenticate: Bearer"},
        {SVC_NOT_FOUND, "not_found", 404, NULL},
        {SVC_ALREADY_EXISTS, "sku_taken", 409, NULL},
        {SVC_CONFLICT, "insufficient_funds", 409, NULL},
        {SVC_UNPROCESSABLE, "currency_mismatch", 422, NULL},
        {SVC_RATE_LIMITED, "rate_limited", 429, "Retry-After: 1"},
        {SVC_UNAVAILABLE, "contention", 503, "Retry-After: 1"},
        {SVC_INTERNAL, "internal", 500, NULL},
        {SVC_UNSUPPORTED, "unsupported_media_type", 415, NULL},
        {SVC_TOO_LARGE, "body_too_large", 413, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_req r;
        memset(&r, 0, sizeof r);
        r.method = BZ_STR_LIT("POST"); /* as every parsed request has (the error ring copies them) */
        r.path = BZ_STR_LIT("/v1/things");
        bz_arena ar;
        bz_arena_init(&ar, 1024);
        r.arena = &ar;
        svc_err e;
        svc_err_clear(&e);
        svc_fail(&e, cases[i].kind, cases[i].code, "why %d", (int)i);
        if (cases[i].kind == SVC_INVALID && !strcmp(cases[i].code, "validation_failed"))
            svc_violate(&e, "email", "is required");
        assert_int_equal(rest_fail(&r, &e), 0);
        assert_int_equal(r.status, cases[i].status);
        assert_non_null(strstr(r.body.data, cases[i].code));
        if (cases[i].header) {
            const char *colon = strchr(cases[i].header, ':');
            char name[32];
            snprintf(name, sizeof name, "%.*s", (int)(colon - cases[i].header), cases[i].header);
            bz_str v = http_resp_header_get(&r, name);
            assert_non_null(v.p);
            assert_true(bz_str_eq_c(v, colon + 2));
        }
        if (cases[i].status == 400)
            assert_non_null(strstr(r.body.data, "\"errors\":[{\"field\":\"email\""));
        bz_buf_free(&r.body);
        bz_arena_free(&ar);
    }
}

/* The adapter's refusals are kinds: the status and whether the connection
 * closes come from the kind alone, never from the code's text. */
static void adapter_refusals_map_by_kind(void **state)
{
    (void)state;
    static const struct {
        svc_kind kind;
        const char *code;
        int status;
        bool close;
    } cases[] = {
        {SVC_TOO_LARGE, "body_too_large", 413, true},
        {SVC_UNREADABLE, "bad_request", 400, true},
        {SVC_UNSUPPORTED, "unsupported_media_type", 415, false},
        {SVC_TOO_LARGE, "some_other_code", 413, true},
        {SVC_INVALID, "body_too_large", 400, false}, /* the text decides nothing */
        {SVC_INVALID, "bad_request", 400, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_req r;
        memset(&r, 0, sizeof r);
        r.method = BZ_STR_LIT("POST"); /* as every parsed request has (the error ring copies them) */
        r.path = BZ_STR_LIT("/v1/things");
        bz_arena ar;
        bz_arena_init(&ar, 1024);
        r.arena = &ar;
        svc_err e;
        svc_err_clear(&e);
        svc_fail(&e, cases[i].kind, cases[i].code, "why %d", (int)i);
        assert_int_equal(rest_fail(&r, &e), 0);
        assert_int_equal(r.status, cases[i].status);
        assert_int_equal(r.close_after, cases[i].close);
        assert_non_null(strstr(r.body.data, cases[i].code));
        bz_buf_free(&r.body);
        bz_arena_free(&ar);
    }
}

static void seeded_password_hashes_verify_and_repeat(void **state)
{
    (void)state;
    char h1[160], h2[160];
    svc_pw_hash_seeded("password7", 9, 42, h1);
    svc_pw_hash_seeded("password7", 9, 42, h2);
    assert_string_equal(h1, h2);
    assert_true(strncmp(h1, "$argon2id$v=19$m=1024,t=1,p=1$", 30) == 0);
    assert_int_equal(crypto_pwhash_str_verify(h1, "password7", 9), 0);
    assert_int_not_equal(crypto_pwhash_str_verify(h1, "password8", 9), 0);
}

/* A rendition is served only for the exact record bytes it was made
 * from: another version of the record, another id or kind, or a record
 * that changed by one byte misses; a newer put replaces the slot. */
static void renditions_match_their_record_bytes(void **state)
{
    (void)state;
    bz_str got;
    bz_str rec1 = BZ_STR_LIT("\x01item-7-version-3"), rec2 = BZ_STR_LIT("\x01item-7-version-4");
    assert_false(svc_rendition_get(SVC_REND_ITEM_JSON, 7, rec1, &got));
    svc_rendition_put(SVC_REND_ITEM_JSON, 7, rec1, "json-v3", 7);
    assert_true(svc_rendition_get(SVC_REND_ITEM_JSON, 7, rec1, &got));
    assert_true(bz_str_eq_c(got, "json-v3"));
    assert_false(svc_rendition_get(SVC_REND_ITEM_JSON, 7, rec2, &got)); /* the entry changed */
    assert_false(svc_rendition_get(SVC_REND_ITEM_JSON, 8, rec1, &got)); /* another id */
    assert_false(svc_rendition_get(SVC_REND_ITEM_JSON + 1, 7, rec1, &got)); /* another kind */
    assert_false(svc_rendition_get(SVC_REND_ITEM_JSON, 7, bz_str_make(rec1.p, rec1.n - 1), &got));
    svc_rendition_put(SVC_REND_ITEM_JSON, 7, rec2, "json-v4!", 8);
    assert_false(svc_rendition_get(SVC_REND_ITEM_JSON, 7, rec1, &got));
    assert_true(svc_rendition_get(SVC_REND_ITEM_JSON, 7, rec2, &got));
    assert_true(bz_str_eq_c(got, "json-v4!"));
    /* too large to keep: the slot is emptied, not left with the old one */
    static char big[5000];
    svc_rendition_put(SVC_REND_ITEM_JSON, 7, rec2, big, sizeof big);
    assert_false(svc_rendition_get(SVC_REND_ITEM_JSON, 7, rec2, &got));
}

/* The record codec's numbers: every int64 the bound allows, signs,
 * leading zeros; a missing digit or terminator, a stray byte or a value
 * past the bound marks the record bad (and stays bad). */
static int64_t dec1(const char *rec, bool *bad)
{
    svc_rd r = {rec, rec + strlen(rec), false};
    int64_t v = svc__dec_int(&r);
    *bad = r.bad;
    return v;
}

static void record_numbers_decode_to_their_bound(void **state)
{
    (void)state;
    bool bad;
    static const struct {
        const char *rec;
        int64_t v;
        bool bad;
    } cases[] = {
        {"0|", 0, false},
        {"123|", 123, false},
        {"-5|", -5, false},
        {"1795851496123456|", 1795851496123456LL, false},
        {"999999999999999999|", 999999999999999999LL, false},
        {"9223372036854775799|", 9223372036854775799LL, false}, /* the largest the bound lets through */
        {"-9223372036854775799|", -9223372036854775799LL, false},
        {"00000000000000000000000000042|", 42, false},
        {"9223372036854775800|", 0, true},
        {"99999999999999999999|", 0, true},
        {"|", 0, true},
        {"-|", 0, true},
        {"12", 0, true},
        {"12:", 0, true},
        {"1x2|", 0, true},
        {"", 0, true},
        {"--1|", 0, true},
        /* around the eight-digit groups */
        {"12345678|", 12345678, false},
        {"123456789|", 123456789, false},
        {"1234567890123456|", 1234567890123456LL, false},
        {"12345678901234567|", 12345678901234567LL, false},
        {"-0000000000000001|", -1, false},
        {"1234567x|", 0, true},
        {"12345678x|", 0, true},
        {"123456789012345x|", 0, true},
        {"1234/678|", 0, true},
        {"1234:678|", 0, true},
        {"12345678", 0, true},
        {"9999999999999999999|", 0, true},
        {"922337203685477579|", 922337203685477579LL, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t v = dec1(cases[i].rec, &bad);
        if (bad != cases[i].bad || (!bad && v != cases[i].v))
            fail_msg("\"%s\": %lld bad=%d, want %lld bad=%d", cases[i].rec, (long long)v, bad, (long long)cases[i].v,
                     cases[i].bad);
    }
    /* a record is read field after field; a bad one stops the rest */
    const char *rec = "7|-8|3:abcx|";
    svc_rd r = {rec, rec + strlen(rec), false};
    assert_int_equal(svc__dec_int(&r), 7);
    assert_int_equal(svc__dec_int(&r), -8);
    char cur[4];
    svc__dec_cur(&r, cur);
    assert_string_equal(cur, "abc");
    assert_false(r.bad);
    assert_int_equal(svc__dec_int(&r), 0); /* "x|" */
    assert_true(r.bad);
    assert_int_equal(svc__dec_int(&r), 0);
    assert_true(r.bad);
}

/* An order status read from a row or a record is one of the four static
 * strings (the same pointer each time); anything else is no status. */
static void statuses_map_to_their_static_strings(void **state)
{
    (void)state;
    static const char *const ok[] = {"pending", "paid", "shipped", "cancelled"};
    for (int i = 0; i < 4; i++) {
        char copy[16];
        strcpy(copy, ok[i]);
        const char *st = svc__status_static(copy, strlen(copy));
        assert_non_null(st);
        assert_string_equal(st, ok[i]);
        assert_ptr_equal(st, svc__status_static(ok[i], strlen(ok[i])));
        assert_ptr_not_equal(st, copy);
    }
    static const char *const bad[] = {"", "p", "paix", "PAID", "pendinG", "pushing", "sending", "shipper",
                                      "cancelleD", "cancelledx", "canceled", "paid "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (svc__status_static(bad[i], strlen(bad[i])))
            fail_msg("\"%s\" taken for a status", bad[i]);
}

/* A cursor is base64url(position || the first 16 bytes of
 * HMAC-SHA256(key, position || scope)), the key kept keyed from start-up:
 * the same bytes a one-shot HMAC gives; it decodes back under its own
 * scope and key only, and one flipped character makes it invalid. */
static void cursors_carry_the_hmac_of_their_scope(void **state)
{
    (void)state;
    svc *s = calloc(1, sizeof *s);
    assert_non_null(s);
    uint8_t key[32];
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)(7 * i + 1);
    svc__cursor_key_set(s, key);
    bz_arena a;
    bz_arena_init(&a, 1024);
    svc_cursor c = {1795851496123456LL, 4242}, back;
    const char *enc = svc__cursor_encode(s, &a, &c, "orders:7:all");
    /* the same cursor built by hand */
    uint8_t raw[16 + 12], mac[crypto_auth_hmacsha256_BYTES], want[16 + 16];
    for (int i = 0; i < 8; i++) {
        raw[i] = (uint8_t)((uint64_t)c.t_us >> (56 - 8 * i));
        raw[8 + i] = (uint8_t)((uint64_t)c.id >> (56 - 8 * i));
    }
    memcpy(raw + 16, "orders:7:all", 12);
    crypto_auth_hmacsha256(mac, raw, sizeof raw, key);
    memcpy(want, raw, 16);
    memcpy(want + 16, mac, 16);
    char want64[64];
    sodium_bin2base64(want64, sizeof want64, want, sizeof want, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    assert_string_equal(enc, want64);
    svc_err e;
    svc_err_clear(&e);
    svc_str in = {enc, strlen(enc), SVC_SET};
    assert_int_equal(svc__cursor_decode(s, &in, "orders:7:all", &back, &e), 1);
    assert_true(back.t_us == c.t_us && back.id == c.id);
    svc_err_clear(&e);
    assert_int_equal(svc__cursor_decode(s, &in, "orders:7:shipped", &back, &e), -1);
    char *bent = bz_arena_strdup(&a, enc);
    bent[3] = bent[3] == 'A' ? 'B' : 'A';
    svc_str bad = {bent, strlen(bent), SVC_SET};
    svc_err_clear(&e);
    assert_int_equal(svc__cursor_decode(s, &bad, "orders:7:all", &back, &e), -1);
    key[0] ^= 1; /* another instance's key */
    svc__cursor_key_set(s, key);
    svc_err_clear(&e);
    assert_int_equal(svc__cursor_decode(s, &in, "orders:7:all", &back, &e), -1);
    bz_arena_free(&a);
    free(s);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(openapi_documents_every_registered_route),
        cmocka_unit_test(decoding_collects_every_bad_field),
        cmocka_unit_test(errors_map_to_http_once),
        cmocka_unit_test(adapter_refusals_map_by_kind),
        cmocka_unit_test(seeded_password_hashes_verify_and_repeat),
        cmocka_unit_test(renditions_match_their_record_bytes),
        cmocka_unit_test(record_numbers_decode_to_their_bound),
        cmocka_unit_test(cursors_carry_the_hmac_of_their_scope),
        cmocka_unit_test(statuses_map_to_their_static_strings),
    };
    return cmocka_run_group_tests_name("app", tests, NULL, NULL);
}

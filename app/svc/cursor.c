/* app/svc/cursor.c — opaque list cursors: a keyset position (time, id)
 * with an HMAC over it and the list's scope, base64url. */
#include "app/svc/svc-private.h"

#include <string.h>

#define CURSOR_MAC 16

void svc__cursor_key_set(svc *s, const uint8_t key[32])
{
    memcpy(s->cursor_key, key, sizeof s->cursor_key);
    crypto_auth_hmacsha256_init(&s->cursor_hmac, s->cursor_key, sizeof s->cursor_key);
}

static void cursor_mac(svc *s, const uint8_t pos[16], const char *scope, uint8_t mac[CURSOR_MAC])
{
    crypto_auth_hmacsha256_state st = s->cursor_hmac; /* keyed once (svc__cursor_key_set) */
    uint8_t full[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_update(&st, pos, 16);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)scope, strlen(scope));
    crypto_auth_hmacsha256_final(&st, full);
    memcpy(mac, full, CURSOR_MAC);
}

static void put64(uint8_t *p, int64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
}

static int64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return (int64_t)v;
}

const char *svc__cursor_encode(svc *s, bz_arena *a, const svc_cursor *c, const char *scope)
{
    uint8_t raw[16 + CURSOR_MAC];
    put64(raw, c->t_us);
    put64(raw + 8, c->id);
    cursor_mac(s, raw, scope, raw + 16);
    char *out = bz_arena_alloc(a, 64);
    sodium_bin2base64(out, 64, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

int svc__cursor_decode(svc *s, const svc_str *cur, const char *scope, svc_cursor *out, svc_err *e)
{
    if (cur->st == SVC_ABSENT)
        return 0;
    uint8_t raw[16 + CURSOR_MAC + 4];
    size_t n = 0;
    uint8_t mac[CURSOR_MAC];
    if (cur->st == SVC_SET && cur->n < 64 &&
        sodium_base642bin(raw, sizeof raw, cur->p, cur->n, NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0 &&
        n == 16 + CURSOR_MAC) {
        cursor_mac(s, raw, scope, mac);
        if (sodium_memcmp(mac, raw + 16, CURSOR_MAC) == 0) {
            out->t_us = get64(raw);
            out->id = get64(raw + 8);
            return 1;
        }
    }
    return svc_fail(e, SVC_INVALID, "invalid_cursor", "the cursor is malformed or belongs to another list");
}

int svc__page_limit(const svc_page_in *pg, svc_err *e)
{
    if (pg->limit.st == SVC_ABSENT)
        return 20;
    if (!svc_check_int(e, L_PAGE_LIMIT, &pg->limit, NULL))
        return -1;
    return (int)pg->limit.v;
}

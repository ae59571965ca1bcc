/*
 * app/svc/password.c — Argon2id password hashes (libsodium), off the loop.
 *
 * API users get OWASP's minimum Argon2id set (m = 19 MiB, t = 2, p = 1).
 * Hashing takes tens of milliseconds of CPU, so it runs on the offload pool
 * and the coroutine parks meanwhile; the event loop keeps serving.
 * Seeded users (API.md §9) get a cheap set (m = 1 MiB, t = 1) and a salt
 * derived from the seed, so `bazaar seed` is fast and reproducible; the
 * verifier reads the parameters from each PHC string, so both kinds verify
 * the same way.
 */
#include "app/svc/password.h"
#include "app/svc/svc-private.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define API_OPSLIMIT 2
#define API_MEMLIMIT (19u << 20)

typedef struct {
    const char *pw;
    size_t n;
    const char *hash;
    char *out;
    int rc;
} pw_job;

static void hash_job(void *p)
{
    pw_job *j = p;
    j->rc = crypto_pwhash_str_alg(j->out, j->pw, j->n, API_OPSLIMIT, API_MEMLIMIT, crypto_pwhash_ALG_ARGON2ID13);
}

static void verify_job(void *p)
{
    pw_job *j = p;
    j->rc = crypto_pwhash_str_verify(j->hash, j->pw, j->n);
}

int pw_hash(rt_ctx *ctx, const char *pw, size_t n, char out[160])
{
    char buf[crypto_pwhash_STRBYTES];
    pw_job j = {pw, n, NULL, buf, -1};
    int rc = rt_offload(ctx, hash_job, &j);
    if (rc != 0 || j.rc != 0)
        return -1;
    snprintf(out, 160, "%s", buf);
    return 0;
}

bool pw_verify(rt_ctx *ctx, const char *hash, const char *pw, size_t n)
{
    pw_job j = {pw, n, hash, NULL, -1};
    if (rt_offload(ctx, verify_job, &j) != 0)
        return false;
    return j.rc == 0;
}

void svc_pw_hash_seeded(const char *pw, size_t n, uint64_t salt_seed, char out[160])
{
    uint8_t salt[crypto_pwhash_SALTBYTES];
    uint8_t key[32];
    /* salt = first 16 bytes of SHA-256("bazaar-seed" || seed) */
    uint8_t h[crypto_hash_sha256_BYTES];
    char in[64];
    int k = snprintf(in, sizeof in, "bazaar-seed:%llu", (unsigned long long)salt_seed);
    crypto_hash_sha256(h, (const uint8_t *)in, (size_t)k);
    memcpy(salt, h, sizeof salt);
    if (crypto_pwhash(key, sizeof key, pw, n, salt, 1, 1u << 20, crypto_pwhash_ALG_ARGON2ID13) != 0)
        abort(); /* out of memory: 1 MiB */
    char s64[64], k64[64];
    sodium_bin2base64(s64, sizeof s64, salt, sizeof salt, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    sodium_bin2base64(k64, sizeof k64, key, sizeof key, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    snprintf(out, 160, "$argon2id$v=19$m=1024,t=1,p=1$%s$%s", s64, k64);
}

/* Any well-formed hash with the API parameters will do (no password is
 * meant to match it), so it is a constant: computing one at start-up
 * would cost 19 MiB of peak memory for nothing. */
const char svc_dummy_hash[] =
    "$argon2id$v=19$m=19456,t=2,p=1$PYdhFngjIkBnI1A96q5vTQ$1LSisBKlO6r5ymOt4QGWY8R3t/7fRItvaqwkQWZWqwo";

/* base/rand.c — see rand.h. */
#include <bazaar/rand.h>

#include <bazaar/clock.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

void bz_rand_secure(void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t r = getrandom(p, n, 0);
        if (r <= 0) {
            /* only before the kernel's pool is initialised, or on a kernel
             * without getrandom: refusing to run beats weak secrets */
            perror("bazaar: getrandom");
            abort();
        }
        p += r;
        n -= (size_t)r;
    }
}

uint64_t bz_rand64(void)
{
    static _Thread_local uint64_t s;
    if (!s) {
        bz_rand_secure(&s, sizeof s);
        s |= 1; /* xorshift must not start at zero */
    }
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

/* The 8 nibbles of v as 8 hex digits (lowest nibble first). */
static uint64_t hex8(uint32_t v)
{
    uint64_t x = v;
    x = (x | x << 16) & 0x0000ffff0000ffffull;
    x = (x | x << 8) & 0x00ff00ff00ff00ffull;
    x = (x | x << 4) & 0x0f0f0f0f0f0f0f0full;
    /* bytes >= 10 get 'a' - '0' - 10 more than '0' + x */
    uint64_t ge10 = ((x + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
    return x + 0x3030303030303030ull + ge10 * ('a' - '0' - 10);
}

void bz_rand_hex(char *out, size_t n)
{
    size_t i = 0;
    uint64_t r = 0;
    for (; i + 8 <= n; i += 8) {
        if (i % 16 == 0)
            r = bz_rand64();
        uint64_t d = hex8((uint32_t)(r >> (i % 16 ? 32 : 0)));
        memcpy(out + i, &d, 8);
    }
    if (i < n) {
        uint64_t d = hex8((uint32_t)bz_rand64());
        memcpy(out + i, &d, n - i);
    }
    out[n] = '\0';
}

double bz_rand01(void) { return (double)(bz_rand64() >> 11) / 9007199254740992.0; }

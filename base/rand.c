/* base/rand.c — see rand.h. */
#include "base/rand.h"

#include "base/clock.h"

#include <stdio.h>
#include <stdlib.h>
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

double bz_rand01(void) { return (double)(bz_rand64() >> 11) / 9007199254740992.0; }

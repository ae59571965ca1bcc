/* base/rand.c — see rand.h. */
#include <bazaar/rand.h>
#include "base/rand-private.h"

#include <bazaar/clock.h>

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
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

/* ---- bz__rand_key: fast-key-erasure ChaCha20 (see rand-private.h) ---- */

#define X__KEY_BYTES 32
#define X__BLOCK 512 /* one refill: the next key, then 480 bytes to hand out */

typedef struct {
    unsigned char buf[X__BLOCK]; /* [0, 32): the next key; [pos, X__BLOCK): not yet handed out */
    size_t pos;
    unsigned gen;                /* fork generation it was seeded in (0: never) */
} x__keygen;

static _Thread_local x__keygen x__kg;
/* Bumped in a child after fork(): the forking thread's generator (the
 * only thread the child has) was copied with the parent's key, and must
 * not give the parent's next values. */
static atomic_uint x__fork_gen = 1;
static pthread_once_t x__once = PTHREAD_ONCE_INIT;

static void x__forked(void) { atomic_fetch_add_explicit(&x__fork_gen, 1, memory_order_relaxed); }

static void x__init(void)
{
    if (sodium_init() < 0) {
        fputs("bazaar: libsodium failed to initialise\n", stderr);
        abort();
    }
    pthread_atfork(NULL, NULL, x__forked);
}

static void x__refill(x__keygen *g)
{
    static const unsigned char nonce[crypto_stream_chacha20_NONCEBYTES];
    unsigned char key[X__KEY_BYTES];
    memcpy(key, g->buf, sizeof key);
    /* every key is used for one block only, so the nonce may stay zero */
    crypto_stream_chacha20(g->buf, sizeof g->buf, nonce, key);
    sodium_memzero(key, sizeof key);
    g->pos = X__KEY_BYTES;
}

void bz__rand_key(void *buf, size_t n)
{
    x__keygen *g = &x__kg;
    unsigned gen = atomic_load_explicit(&x__fork_gen, memory_order_relaxed);
    if (g->gen != gen) {
        pthread_once(&x__once, x__init);
        bz_rand_secure(g->buf, X__KEY_BYTES);
        x__refill(g);
        g->gen = gen;
    }
    unsigned char *p = buf;
    while (n) {
        if (g->pos == X__BLOCK)
            x__refill(g);
        size_t k = X__BLOCK - g->pos < n ? X__BLOCK - g->pos : n;
        memcpy(p, g->buf + g->pos, k);
        sodium_memzero(g->buf + g->pos, k); /* handed out: not kept */
        g->pos += k;
        p += k;
        n -= k;
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

/* The 16 nibbles of v as 16 lower-case hex digits at out (no NUL): each
 * byte's high nibble, then its low one.  With SSE2 (every x86-64) the 16
 * digits are made side by side in one register; elsewhere 8 at a time in
 * a 64-bit word.  No table, no loop per digit: three ids are made on
 * every request (trace, span, request id). */
#if defined(__SSE2__)
#include <emmintrin.h>
static inline void hex16(char *out, uint64_t v)
{
    const __m128i low4 = _mm_set1_epi8(0x0f);
    __m128i x = _mm_cvtsi64_si128((long long)v);
    __m128i lo = _mm_and_si128(x, low4), hi = _mm_and_si128(_mm_srli_epi16(x, 4), low4);
    __m128i d = _mm_unpacklo_epi8(hi, lo);
    /* nibbles above 9 get 'a' - '0' - 10 more than '0' + nibble */
    __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(d, _mm_set1_epi8(9)), _mm_set1_epi8('a' - '0' - 10));
    d = _mm_add_epi8(d, _mm_add_epi8(letter, _mm_set1_epi8('0')));
    _mm_storeu_si128((__m128i *)(void *)out, d);
}
#else
static inline uint64_t hex8(uint32_t v)
{
    uint64_t x = v;
    x = (x | x << 16) & 0x0000ffff0000ffffull;
    x = (x | x << 8) & 0x00ff00ff00ff00ffull;
    x = (x | x << 4) & 0x0f0f0f0f0f0f0f0full;
    uint64_t ge10 = ((x + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
    return x + 0x3030303030303030ull + ge10 * ('a' - '0' - 10);
}
static inline void hex16(char *out, uint64_t v)
{
    uint64_t a = hex8((uint32_t)v), b = hex8((uint32_t)(v >> 32));
    memcpy(out, &a, 8);
    memcpy(out + 8, &b, 8);
}
#endif

void bz_rand_hex(char *out, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        hex16(out + i, bz_rand64());
    if (i < n) {
        char t[16];
        hex16(t, bz_rand64());
        memcpy(out + i, t, n - i);
    }
    out[n] = '\0';
}

double bz_rand01(void) { return (double)(bz_rand64() >> 11) / 9007199254740992.0; }

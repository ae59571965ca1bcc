/*
 * base/rand.h — fast non-cryptographic randomness for sampling, jitter
 * and ids (a per-thread xorshift64 seeded from the kernel), and the
 * kernel's CSPRNG for anything secret.
 */
#ifndef BZ_RAND_H
#define BZ_RAND_H

#include <stddef.h>
#include <stdint.h>

#pragma GCC visibility push(default)

/* Uniform 64-bit value; per thread, never blocks, not for secrets. */
uint64_t bz_rand64(void);
/* Uniform double in [0, 1). */
double bz_rand01(void);
/* Writes n random lower-case hex digits and a NUL at out (ids, trace and
 * span ids; from bz_rand64, so not for secrets).  Sixteen digits at a
 * time without a table or a loop per digit: three run on every request. */
void bz_rand_hex(char *out, size_t n);
/* Fills buf with n bytes from getrandom(2) (secrets: tokens, lock owners). */
void bz_rand_secure(void *buf, size_t n);

#pragma GCC visibility pop
#endif

/*
 * base/rand-private.h — random bytes for values that must be unique and
 * unguessable but are made on the request path (lock owner tokens), from
 * a per-thread generator in user space: no system call per value.
 *
 * The generator is ChaCha20 with fast key erasure (as OpenBSD's arc4random
 * and the kernel's own CRNG): a 256-bit key from getrandom(2), once per
 * thread and again in a child after fork(); each refill encrypts a block
 * of zeros, keeps its first 32 bytes as the next key and hands out the
 * rest, wiping each byte as it is handed out.  So outputs are as hard to
 * predict as ChaCha20's keystream, and what the state holds at any time
 * tells nothing about values given out before.  Secrets that outlive a
 * request (session tokens) keep bz_rand_secure, the kernel's own.
 */
#ifndef BZ_RAND_PRIVATE_H
#define BZ_RAND_PRIVATE_H

#include <stddef.h>

/* Fills buf with n random bytes; never fails (aborts, as bz_rand_secure,
 * only if the kernel cannot seed it). */
void bz__rand_key(void *buf, size_t n);

#endif

/* app/svc/password.h — Argon2id password hashes for callers outside the
 * service (the seeder). */
#ifndef APP_SVC_PASSWORD_H
#define APP_SVC_PASSWORD_H

#include <stddef.h>
#include <stdint.h>

/* Cheap deterministic hash for seeded users (API.md §9). */
void svc_pw_hash_seeded(const char *pw, size_t n, uint64_t salt_seed, char out[160]);

#endif

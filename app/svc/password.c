/*
 * app/svc/password.c — Argon2id password hashes (libsodium), off the loop.
 *
 * API users get OWASP's minimum Argon2id set (m = 19 MiB, t = 2, p = 1).
 * Hashing takes tens of milliseconds of CPU, so it runs on the service's
 * own pool of --auth-concurrency threads (never the runtime's offload
 * pool, which SQLite commits need) and the coroutine parks meanwhile; the
 * event loop keeps serving.  The pool's queue is bounded
 * (PW_QUEUE_PER_THREAD per thread): past it the call is refused at once
 * with SVC_UNAVAILABLE "overloaded" and a Retry-After, rather than piling
 * up work that would time out anyway.
 * Seeded users (API.md §9) get a cheap set (m = 1 MiB, t = 1) and a salt
 * derived from the seed, so `bazaar seed` is fast and reproducible; the
 * verifier reads the parameters from each PHC string, so both kinds verify
 * the same way.
 */
#include "app/svc/password.h"
#include "app/svc/svc-private.h"

#include <bazaar/log.h>

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define API_OPSLIMIT 2
#define API_MEMLIMIT (19u << 20)

struct pw_job {
    const char *pw;
    size_t n;
    const char *hash;   /* verify against this; NULL: hash into out */
    char *out;
    int rc;
    rt_coro *co;
    pw_job *next;
    int state;          /* 0 queued, 1 running, 2 done */
};

static void run_job(pw_job *j)
{
    if (j->hash)
        j->rc = crypto_pwhash_str_verify(j->hash, j->pw, j->n);
    else
        j->rc = crypto_pwhash_str_alg(j->out, j->pw, j->n, API_OPSLIMIT, API_MEMLIMIT,
                                      crypto_pwhash_ALG_ARGON2ID13);
}

/* A hashing thread.  It runs at a lower priority (nice 10: Linux nice
 * values are per thread) so that on a machine where hashes keep every
 * core busy, the event loops and the offload pool still get the CPU
 * first — a sign-up flood slows sign-ups, not deposits. */
static void *pw_thread(void *p)
{
    pw_pool *pl = p;
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    pthread_mutex_lock(&pl->lk);
    for (;;) {
        while (!pl->head && !pl->quit)
            pthread_cond_wait(&pl->cv, &pl->lk);
        if (!pl->head)
            break;
        pw_job *j = pl->head;
        pl->head = j->next;
        if (!pl->head)
            pl->tail = NULL;
        pl->queued--;
        j->state = 1;
        pthread_mutex_unlock(&pl->lk);
        run_job(j);
        pthread_mutex_lock(&pl->lk);
        j->state = 2;
        /* under the lock: the waiter checks state under it too */
        rt_wake(j->co, 0);
    }
    pthread_mutex_unlock(&pl->lk);
    return NULL;
}

void svc__pw_pool_start(svc *s)
{
    pw_pool *pl = &s->pw;
    memset(pl, 0, sizeof *pl);
    pthread_mutex_init(&pl->lk, NULL);
    pthread_cond_init(&pl->cv, NULL);
    int n = s->cfg->auth_concurrency > 0 ? s->cfg->auth_concurrency : 1;
    pl->cap = n * PW_QUEUE_PER_THREAD;
    pl->th = calloc((size_t)n, sizeof *pl->th);
    if (!pl->th)
        abort();
    for (int i = 0; i < n; i++) {
        /* Argon2id needs little stack (its 19 MiB are on the heap) */
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, 256 << 10);
        if (pthread_create(&pl->th[pl->nthreads], &at, pw_thread, pl) == 0)
            pl->nthreads++;
        pthread_attr_destroy(&at);
    }
    if (pl->nthreads == 0)
        bz_log_err("password hashing: no thread could be started");
}

void svc__pw_pool_stop(svc *s)
{
    pw_pool *pl = &s->pw;
    if (!pl->th)
        return;
    pthread_mutex_lock(&pl->lk);
    pl->quit = true;
    pthread_cond_broadcast(&pl->cv);
    pthread_mutex_unlock(&pl->lk);
    for (int i = 0; i < pl->nthreads; i++)
        pthread_join(pl->th[i], NULL);
    free(pl->th);
    pl->th = NULL;
    pthread_cond_destroy(&pl->cv);
    pthread_mutex_destroy(&pl->lk);
}

/* Runs j on the pool: 0 done, -EAGAIN the queue is full, or the context's
 * -ECANCELED / -ETIMEDOUT while still queued (then it is dropped; once
 * running it is waited for, since it uses the caller's stack). */
static int pw_run(pw_pool *pl, rt_ctx *ctx, pw_job *j)
{
    j->co = rt_self();
    j->next = NULL;
    j->state = 0;
    pthread_mutex_lock(&pl->lk);
    if (pl->nthreads == 0 || pl->queued >= pl->cap) {
        pthread_mutex_unlock(&pl->lk);
        return -EAGAIN;
    }
    if (pl->tail)
        pl->tail->next = j;
    else
        pl->head = j;
    pl->tail = j;
    pl->queued++;
    pthread_cond_signal(&pl->cv);
    int r = rt_park(ctx, BZ_NO_DEADLINE, &pl->lk);
    pthread_mutex_lock(&pl->lk);
    if (r != 0 && j->state == 0) {
        pw_job **pp = &pl->head, *prev = NULL;
        while (*pp && *pp != j) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        if (*pp) {
            *pp = j->next;
            pl->queued--;
        }
        if (pl->tail == j)
            pl->tail = prev;
        pthread_mutex_unlock(&pl->lk);
        return r;
    }
    while (j->state != 2) {
        rt_park(NULL, BZ_NO_DEADLINE, &pl->lk);
        pthread_mutex_lock(&pl->lk);
    }
    pthread_mutex_unlock(&pl->lk);
    return 0;
}

static int pw_refused(int r, svc_err *e)
{
    if (r == -EAGAIN) {
        svc_fail(e, SVC_UNAVAILABLE, "overloaded", "too many password checks are waiting; retry shortly");
        e->retry_after_s = 1;
        return -1;
    }
    bz_error be;
    bz_err_set(&be, r == -ETIMEDOUT ? BZ_ERR_TIMEOUT : BZ_ERR_CANCELLED, "the call ended");
    return svc_fail_from(e, &be);
}

int svc__pw_hash(svc *s, rt_ctx *ctx, const char *pw, size_t n, char out[160], svc_err *e)
{
    char buf[crypto_pwhash_STRBYTES];
    pw_job j = {.pw = pw, .n = n, .out = buf, .rc = -1};
    int r = pw_run(&s->pw, ctx, &j);
    if (r != 0)
        return pw_refused(r, e);
    if (j.rc != 0)
        return svc_fail(e, SVC_UNAVAILABLE, "unavailable", "could not hash the password; retry");
    snprintf(out, 160, "%s", buf);
    sodium_memzero(buf, sizeof buf);
    return 0;
}

int svc__pw_verify(svc *s, rt_ctx *ctx, const char *hash, const char *pw, size_t n, bool *ok, svc_err *e)
{
    *ok = false;
    pw_job j = {.pw = pw, .n = n, .hash = hash, .rc = -1};
    int r = pw_run(&s->pw, ctx, &j);
    if (r != 0)
        return pw_refused(r, e);
    *ok = j.rc == 0;
    return 0;
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

/*
 * app/svc/svc-private.h — what the service's files share: the service
 * state, the record codec, idempotency, cursors, after-commit effects and
 * passwords.  Nothing outside app/svc/ includes it but the fuzz target
 * (the record codec and cursors take client-influenced bytes).  Its
 * functions are the service's internals: `svc__name`, as the tree names
 * internals (`x__`); `svc_` is the service's API (svc.h).
 */
#ifndef APP_SVC_PRIVATE_H
#define APP_SVC_PRIVATE_H

#include "app/svc/limits.h"
#include "app/svc/sql.h"
#include "app/svc/svc.h"

#include <bazaar/buf.h>

#include <sodium.h>

#include <stdatomic.h>
#include <string.h>

#define SVC_ACCT_STRIPES 256

/* The password-hashing pool (password.c): its own threads, so Argon2id
 * never holds the offload pool that SQLite commits use, and a bounded
 * queue: past it a sign-up or login is refused (overloaded). */
typedef struct pw_job pw_job;
typedef struct pw_pool {
    pthread_mutex_t lk;
    pthread_cond_t cv;
    pw_job *head, *tail;
    int queued, cap;        /* waiting jobs, and how many may wait */
    int nthreads;
    pthread_t *th;
    bool quit;
} pw_pool;
/* Event streams per user are leases in the cache (orders.c): each lasts
 * SVC_STREAM_LEASE_NS unless renewed, and an open stream renews it every
 * SVC_STREAM_RENEW_NS, so a crashed instance's streams free their slots
 * within a lease. */
#define SVC_STREAM_LEASE_NS (10 * BZ_NS_PER_S)
#define SVC_STREAM_RENEW_NS (3 * BZ_NS_PER_S)

/* The read replica (replica.c): its pool, how far behind it is, and the
 * in-process read-your-writes marks. */
#define REPLICA_SAMPLES 128     /* primary WAL samples awaiting replay (12.8 s of probes) */
#define REPLICA_MARKS 4096      /* per-user write marks, by hash (a power of two) */
typedef struct svc_replica {
    db *db;                     /* NULL: no replica, every read on the primary */
    int64_t max_lag_us;         /* --db-read-max-lag */
    atomic_bool up;             /* the last probe reached it */
    _Atomic int64_t caught_up_us; /* every commit acknowledged before this wall time is replayed (0: none yet) */
    _Atomic int64_t marks[REPLICA_MARKS]; /* wall µs of the last write of the users hashed here */
} svc_replica;

/* How many hashes may wait per hashing thread. */
#define PW_QUEUE_PER_THREAD 8

struct svc {
    const app_config *cfg;
    db *db;
    cache *cache;
    db_dialect dialect;
    uint8_t cursor_key[32];   /* HMAC key for list cursors, shared via the meta table */
    /* the HMAC keyed with it (its two pads hashed once, at start-up): a
     * cursor copies it instead of hashing the key again (two SHA-256
     * blocks of the ~four one cursor costs) */
    crypto_auth_hmacsha256_state cursor_hmac;
    /* PostgreSQL: transfers touching the same account queue here (striped
     * by account id) instead of failing each other's SERIALIZABLE
     * transactions; see accounts.c */
    rt_mutex acct_locks[SVC_ACCT_STRIPES];
    bool acct_locks_on;
    /* a key's in-flight lock is left to expire once its record is
     * committed (svc__idem_can_keep_locks, svc__tx_run_op) */
    bool idem_keep_locks;
    pw_pool pw;
    char instance[17];        /* random: names this process's stream leases */
    atomic_llong stream_seq;
    /* the fulfilment worker and the idempotency purge */
    rt_ctx bg_stop;           /* cancelled by svc_stop_worker */
    atomic_bool stopping;
    bool worker_on;
    rt_wg workers;
    svc_replica rep;
};

/* A detached context for work that must happen even if the caller went
 * away (after-commit effects, lock releases): a short deadline of its own. */
#define SVC_DETACHED_NS (2 * BZ_NS_PER_S)

/* ---- the record codec ----------------------------------------------------------------------
 *
 * The one transport-neutral encoding of model values, used for cached
 * items, stored idempotent results and published order events: integers
 * as "<decimal>|", strings as "<length>:<bytes>".  Text-safe (it goes into
 * TEXT columns and Redis) and cheap to read: a cache hit is a lookup and
 * this decode. */
typedef struct svc_rd {
    const char *p, *end;
    bool bad;
} svc_rd;

void svc__enc_int(bz_buf *b, int64_t v);
void svc__enc_str(bz_buf *b, const char *s, size_t n);
int64_t svc__dec_int(svc_rd *r);
/* A string copied into the arena (NUL-terminated). */
const char *svc__dec_str(svc_rd *r, bz_arena *a, size_t *n);
void svc__dec_cur(svc_rd *r, char out[4]);

void svc__enc_account(bz_buf *b, const svc_account *v);
bool svc__dec_account(svc_rd *r, svc_account *v);
void svc__enc_transfer(bz_buf *b, const svc_transfer *v);
bool svc__dec_transfer(svc_rd *r, svc_transfer *v);
/* svc__enc_transfer(v) cut around the two fields PostgreSQL's transfer
 * statement assigns (SQL_TRANSFER_MOVE): the record is
 * id + mid + currency (3 letters) + tail. */
void svc__enc_transfer_parts(bz_buf *mid, bz_buf *tail, const svc_transfer *v);
void svc__enc_item(bz_buf *b, const svc_item *v);
bool svc__dec_item(svc_rd *r, bz_arena *a, svc_item *v);
void svc__enc_order(bz_buf *b, const svc_order *v);
bool svc__dec_order(svc_rd *r, bz_arena *a, svc_order *v);
void svc__enc_event(bz_buf *b, const svc_order_event *v);
bool svc__dec_event(svc_rd *r, svc_order_event *v);
/* "pending" etc. as the static string, NULL if unknown. */
const char *svc__status_static(const char *s, size_t n);

/* Rows into model values (column orders of sql.c), strings in the arena. */
/* with_email: the OPT fields (the email) are read, else NULL */
void svc__row_user(db_rows *r, bz_arena *a, svc_user *u, bool with_email);
void svc__row_account(db_rows *r, svc_account *v);
void svc__row_transfer(db_rows *r, svc_transfer *v);
void svc__row_item(db_rows *r, bz_arena *a, svc_item *v);
/* An item row (ITEM_COLS) straight into svc__enc_item's record. */
void svc__enc_item_row(bz_buf *b, db_rows *r);
/* An order row (O_COLS + packed lines in column 8). */
void svc__row_order(db_rows *r, bz_arena *a, svc_order *v);

/* ---- idempotency (idem.c) ------------------------------------------------------------------
 *
 * A key is scoped to the user.  The fingerprint covers the operation's
 * name and its decoded, normalised input (never bytes on a wire), so a key
 * repeated over REST or gRPC replays the same result; the stored result is
 * the operation's outcome in the record codec, not an HTTP response. */
typedef struct svc_fp {
    crypto_hash_sha256_state st;
} svc_fp;
void svc__fp_begin(svc_fp *f, const char *op);
void svc__fp_int(svc_fp *f, int64_t v);
void svc__fp_str(svc_fp *f, const char *s, size_t n);

typedef struct svc_idem {
    bool active;            /* a key was sent (and the caller is known) */
    int64_t user_id;
    char key[256];
    char fp[65];
    char lock_name[300];
    char lock_token[33];
    bool locked;
    /* another request holds the key's lock: svc__tx_run_op answers from
     * the key's record, or "in use" while there is none; nothing runs */
    bool busy;
} svc_idem;

/* Starts an idempotent operation: checks the key (required or not), and
 * takes the in-flight lock.  When another request holds it, im->busy is
 * set and the caller goes on to svc__tx_run_op without doing any work of
 * its own (no locks, no reads): the key's committed record answers — the
 * replay, or "reused" — and without one the key is "in use".
 * 0 to go on, -1 refused (e filled). */
int svc__idem_begin(svc *s, svc_call *c, svc_fp *fp, bool required, svc_idem *im, svc_err *e);
/* Releases the in-flight lock (detached: even if the caller went away). */
void svc__idem_end(svc *s, svc_idem *im);
/* The in-flight lock's lifetime: past the request deadline, so it cannot
 * expire under a running request. */
int64_t svc__idem_lock_ttl(const app_config *cfg);
/* Whether a key's lock may outlive its committed record's request
 * (s->idem_keep_locks): only where releasing it is a round trip (Redis),
 * and only when a record just committed outlives the lock by a wide
 * margin — a repeat that meets a kept lock must find the record live, or
 * it would be told "in use" for a key that is new again. */
bool svc__idem_can_keep_locks(const app_config *cfg, const cache *c); /* c may be NULL (seed) */
/* Records created before this (wall µs) are expired: now - retention. */
int64_t idem_cutoff_us(const svc *s);
/* The background purge of expired records (serve only). */
#define IDEM_PURGE_BATCH 1000
#define IDEM_PURGE_MAX_BATCHES 100
#define IDEM_PURGE_EVERY_NS (60 * BZ_NS_PER_S)
void svc__idem_start_purger(svc *s);

/* ---- transactions with their idempotency record (tx.c) -------------------------------------
 *
 * An operation's transaction function does its work and ends every
 * attempt that should commit with svc__tx_record: the outcome — a result, or a
 * business refusal put in run->e — is recorded with the effect, in the
 * same transaction. */
typedef struct tx_run {
    svc *s;
    svc_call *c;
    svc_idem *im;
    svc_err *e;                                    /* refusal decided inside the transaction */
    void (*encode)(bz_buf *b, const void *out);   /* result → record */
    bool (*decode)(svc_rd *r, bz_arena *a, void *out); /* record → result (replay) */
    void *out;
    /* Set by a transaction function whose transaction committed without
     * settling (PostgreSQL's one-statement transfer that moved nothing):
     * svc__tx_run_op runs it once more, in a new transaction. */
    bool again;
    /* The outcome was recorded by this run_tx pass (svc__tx_record, or
     * the PostgreSQL transfer's own statement): committed on PostgreSQL,
     * where the record goes with the COMMIT; written, to be committed, on
     * SQLite — so it is read only when the transaction committed. */
    bool recorded;
    /* PostgreSQL: the transaction begins READ COMMITTED, its own row locks
     * its whole protection (a transfer, a payment, a new order: sql.c says
     * why); else
     * SERIALIZABLE.  SQLite has one writer either way. */
    bool read_committed;
} tx_run;

/* Records run's outcome in tx (no-op without a key).  Call it last: on
 * PostgreSQL the COMMIT goes with the record (DB_BATCH_COMMIT), so no
 * statement may follow it. */
int svc__tx_record(db_tx *tx, rt_ctx *ctx, tx_run *run, bz_error *err);
/* Runs fn in a SERIALIZABLE transaction (or READ COMMITTED: run->read_committed;
 * retried on contention), then
 * settles: 0 committed with a result; -1 with run->e (a committed refusal,
 * the stored outcome of a key another request used first, uniq_code on
 * another unique violation when given, or the mapped error).  Ends the
 * idempotency lock, or, where s->idem_keep_locks and this request
 * committed the key's record, leaves it to expire: a repeat that meets it is
 * answered from that record (svc__idem_begin's busy).  With im->busy it
 * only answers from the record. */
int svc__tx_run_op(tx_run *run, db_tx_fn fn, void *arg, svc_kind uniq_kind, const char *uniq_code, const char *uniq_msg);
/* Starts a refusal inside a transaction function: fills run->e, returns 0
 * so the caller goes on to svc__tx_record. */
int svc__tx_refuse(tx_run *run, svc_kind kind, const char *code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* s into out[cap] as snprintf(out, cap, "%s", s) would (cut at cap - 1,
 * always terminated), without its walk over a format: a hot path copies
 * addresses, currencies and keys this way.  Returns out's end. */
static inline char *svc__copy(char *out, size_t cap, const char *s)
{
    size_t n = strnlen(s, cap - 1);
    memcpy(out, s, n);
    out[n] = '\0';
    return out + n;
}

/* ---- cursors (cursor.c): opaque keyset positions, HMAC'd so they cannot
 * be forged or moved to another list ---- */
typedef struct svc_cursor {
    int64_t t_us, id;
} svc_cursor;
#define SVC_CURSOR_TOP_US 253402300799000000LL /* far future: the first newest-first page */

/* Sets the cursors' HMAC key (and the keyed state every cursor starts from). */
void svc__cursor_key_set(svc *s, const uint8_t key[32]);
/* 1 decoded, 0 absent, -1 invalid (e: invalid_cursor). */
int svc__cursor_decode(svc *s, const svc_str *cur, const char *scope, svc_cursor *out, svc_err *e);
const char *svc__cursor_encode(svc *s, bz_arena *a, const svc_cursor *c, const char *scope);
/* The page size (default 20, 1..100): ≥ 1, or -1 with a violation. */
int svc__page_limit(const svc_page_in *pg, svc_err *e);

/* ---- effects after a commit (effects.c); each runs detached ---- */
void svc__fx_item_changed(svc *s, int64_t item_id);
void svc__fx_orders_changed(svc *s, int64_t user_id);
void svc__fx_order_event(svc *s, int64_t user_id, int64_t order_id, const char *status, int64_t at_us);
/* A leaderboard's staging set outlives the slowest rebuild (its lock
 * lasts 30 s). */
#define SVC_LB_STAGE_TTL_NS (120 * BZ_NS_PER_S)
/* A payment's addition to its currency's leaderboard; epoch is what the
 * payment's transaction read (svc__lb_epoch_read). */
void svc__fx_spent(svc *s, int64_t user_id, const char *currency, int64_t cents, int64_t epoch);
/* The leaderboard epoch of currency, read inside a payment's transaction
 * (leaderboard.c explains why). */
int svc__lb_epoch_read(bz_arena *a, db_tx *tx, rt_ctx *ctx, const char *currency, int64_t *epoch, bz_error *err);
/* The same read as a step of a batch (db_batch): key and *arg must live
 * until the batch has run; svc__lb_epoch_of reads the epoch (0: none) from
 * the step's rows. */
db_step svc__lb_epoch_step(db_q q, const char *currency, char key[24], db_arg *arg);
int64_t svc__lb_epoch_of(db_rows *rows);
/* The cached order pages of a user: remember one, drop them all. */
#define SVC_OLIST_MAX_PAGES 64
void svc__pages_track(svc *s, rt_ctx *ctx, int64_t uid, const char *page_key);
void svc__pages_drop(svc *s, rt_ctx *ctx, int64_t uid);
/* "item:<id>", "orders:<user>" (the event channel). */
void svc__key_item(int64_t id, char out[40]);
void svc__key_events(int64_t user_id, char out[48]);

/* ---- small shared rules ---- */
/* The caller's user id, or -1 with SVC_UNAUTHENTICATED. */
int svc__need_user(const svc_call *c, svc_err *e);
/* Queues transfers and deposits touching these accounts (PostgreSQL). */
int svc__acct_lock(svc *s, rt_ctx *ctx, int64_t a, int64_t b, int held[2]);
void svc__acct_unlock(svc *s, const int held[2]);

/* Migrates and loads the shared secrets (schema.c). */
int svc_prepare_db(svc *s, rt_ctx *ctx, bz_error *err);

/* One fixed-window limiter check (core.c): 0 allowed (or the cache failed:
 * fail open), -1 refused with SVC_RATE_LIMITED and Retry-After. */
int svc__rate(svc *s, rt_ctx *ctx, const char *key, const bz_rate *lim, svc_rate *rate, svc_err *e,
              const char *msg);

/* ---- passwords (password.c), off the loop on the service's own pool ---- */
void svc__pw_pool_start(svc *s);
void svc__pw_pool_stop(svc *s);
/* 0 hashed; -1 refused with e filled (overloaded: the queue is full;
 * timeout / cancelled; unavailable). */
int svc__pw_hash(svc *s, rt_ctx *ctx, const char *pw, size_t n, char out[160], svc_err *e);
/* 0 with *ok telling whether pw matches; -1 refused as svc__pw_hash. */
int svc__pw_verify(svc *s, rt_ctx *ctx, const char *hash, const char *pw, size_t n, bool *ok, svc_err *e);
/* Verified against for unknown emails (equal timing). */
extern const char svc_dummy_hash[];

/* ---- the read replica (replica.c) ----------------------------------------------------------
 *
 * Stale-tolerant reads: on the replica when it is up, keeps up and the
 * caller has no write it may not have replayed yet; else on the primary.
 * Same contract as sql_row / sql_query. */
int svc_read_row(svc *s, svc_call *c, const svc_sql *q, const db_arg *a, int n, db_rows **rows, bz_error *be);
int svc_read_query(svc *s, svc_call *c, const svc_sql *q, const db_arg *a, int n, db_rows **rows, bz_error *be);
/* After a committed write that changes routed data: the caller's next
 * reads see it (read-your-writes). */
void svc_wrote(svc *s, svc_call *c);
/* Starts the lag prober (from svc_start_worker; nothing without a replica). */
void svc__replica_start(svc *s);

#endif

/* app/svc/idem.c — idempotency keys (API.md §2), transport-neutral, and
 * the transaction runner that records an operation's outcome with its
 * effect (svc-private.h). */
#include "app/svc/svc-private.h"

#include <bazaar/clock.h>
#include <bazaar/log.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void svc__fp_begin(svc_fp *f, const char *op)
{
    crypto_hash_sha256_init(&f->st);
    svc__fp_str(f, op, strlen(op));
}

/* Each part is length-framed, so ("ab","c") and ("a","bc") differ. */
void svc__fp_int(svc_fp *f, int64_t v)
{
    uint8_t b[9] = {'i'};
    for (int i = 0; i < 8; i++)
        b[1 + i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
    crypto_hash_sha256_update(&f->st, b, sizeof b);
}

void svc__fp_str(svc_fp *f, const char *s, size_t n)
{
    svc__fp_int(f, (int64_t)n);
    crypto_hash_sha256_update(&f->st, (const uint8_t *)s, n);
}

static bool key_ok(const char *k, size_t n)
{
    if (n < 1 || n > 255)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)k[i] < 0x21 || (unsigned char)k[i] > 0x7e)
            return false;
    return true;
}

int svc__idem_begin(svc *s, svc_call *c, svc_fp *fp, bool required, svc_idem *im, svc_err *e)
{
    memset(im, 0, sizeof *im);
    if (!c->idem_key) {
        if (required)
            return svc_fail(e, SVC_INVALID, "idempotency_key_required", "this request needs an Idempotency-Key");
        return 0;
    }
    if (!key_ok(c->idem_key, c->idem_key_len))
        return svc_fail(e, SVC_INVALID, "invalid_idempotency_key",
                        "Idempotency-Key must be 1 to 255 visible ASCII characters");
    /* Keys are scoped to a user: without one there is nothing to scope
     * (sign-up, login) and the key is ignored. */
    if (c->who->user_id <= 0)
        return 0;
    im->active = true;
    im->user_id = c->who->user_id;
    memcpy(im->key, c->idem_key, c->idem_key_len);
    im->key[c->idem_key_len] = '\0';
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&fp->st, h);
    sodium_bin2hex(im->fp, sizeof im->fp, h, sizeof h);
    /* In flight elsewhere? */
    /* "idem:<user>:<key>": 5 + 20 + 1 + 255 < sizeof lock_name */
    char *ln = im->lock_name;
    memcpy(ln, "idem:", 5);
    ln += 5;
    ln += bz_fmt_i64(ln, im->user_id);
    *ln++ = ':';
    svc__copy(ln, sizeof im->lock_name - (size_t)(ln - im->lock_name), im->key);
    bz_error be;
    int rc = cache_lock(s->cache, c->ctx, im->lock_name, svc__idem_lock_ttl(s->cfg), false, im->lock_token, &be);
    if (rc == CACHE_MISS) { /* svc__tx_run_op answers from the record, if there is one yet */
        im->busy = true;
        return 0;
    }
    if (rc < 0)
        return svc_fail_from(e, &be);
    im->locked = true;
    /* A committed record is not looked up here: the operation's
     * transaction inserts the record last, and if the key was used before,
     * that insert fails on the primary key, the whole transaction (effect
     * included) rolls back, and svc__tx_run_op answers from the stored record —
     * the replay, or "reused" for a different request.  The common case (a
     * new key) saves a query. */
    return 0;
}

int64_t svc__idem_lock_ttl(const app_config *cfg) { return cfg->srv.request_timeout_ns + 5 * BZ_NS_PER_S; }

bool svc__idem_can_keep_locks(const app_config *cfg, const cache *c)
{
    return c && cache_is_remote(c) && cfg->idempotency_retention_ns >= 2 * svc__idem_lock_ttl(cfg);
}

void svc__idem_end(svc *s, svc_idem *im)
{
    if (!im->locked)
        return;
    bz_error be;
    bool released;
    rt_ctx ctx;
    rt_ctx_init_timeout(&ctx, NULL, SVC_DETACHED_NS);
    cache_unlock(s->cache, &ctx, im->lock_name, im->lock_token, &released, &be);
    rt_ctx_release(&ctx);
    im->locked = false;
}

int64_t idem_cutoff_us(const svc *s) { return bz_wall_us() - s->cfg->idempotency_retention_ns / 1000; }

/* ---- retention: expired records are purged in the background ----
 *
 * Every IDEM_PURGE_EVERY_NS the purge deletes expired records in batches
 * of IDEM_PURGE_BATCH rows, one short transaction each (a writer never
 * holds the database for long), at most IDEM_PURGE_MAX_BATCHES per round;
 * what is left waits for the next round.  Correctness does not depend on
 * it: lookups ignore expired records and an insert replaces one. */
int svc_idem_purge(svc *s, rt_ctx *ctx, int max_batches, int64_t *purged, bz_error *err)
{
    *purged = 0;
    for (int i = 0; i < max_batches; i++) {
        db_arg args[] = {DB_TIME(idem_cutoff_us(s)), DB_INT(IDEM_PURGE_BATCH)};
        int64_t aff = 0;
        if (sql_exec(DB(s->db), ctx, &SQL_IDEM_PURGE, args, 2, &aff, err) != 0)
            return -1;
        *purged += aff;
        if (aff < IDEM_PURGE_BATCH)
            break;
    }
    return 0;
}

static void purger(void *p)
{
    svc *s = p;
    while (rt_sleep(&s->bg_stop, IDEM_PURGE_EVERY_NS) == 0) {
        rt_ctx c;
        rt_ctx_init_timeout(&c, &s->bg_stop, 30 * BZ_NS_PER_S);
        int64_t n = 0;
        bz_error e;
        if (svc_idem_purge(s, &c, IDEM_PURGE_MAX_BATCHES, &n, &e) != 0 && !rt_ctx_err(&s->bg_stop))
            bz_log_warn("idempotency purge failed; will retry", BZ_F_STR("error", e.msg));
        else if (n > 0)
            bz_log_info("idempotency records purged", BZ_F_INT("count", n));
        rt_ctx_release(&c);
    }
    rt_wg_done(&s->workers);
}

void svc__idem_start_purger(svc *s)
{
    rt_wg_add(&s->workers, 1);
    rt_go(purger, s);
}

int svc__tx_refuse(tx_run *run, svc_kind kind, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    svc_vfail(run->e, kind, code, fmt, ap);
    va_end(ap);
    return 0;
}

int svc__tx_record(db_tx *tx, rt_ctx *ctx, tx_run *run, bz_error *err)
{
    const svc_idem *im = run->im;
    if (!im || !im->active)
        return 0;
    bz_buf *b = bz_arena_buf(run->c->arena);
    bool ok = run->e->kind == SVC_OK;
    if (ok)
        run->encode(b, run->out);
    else
        bz_buf_append_c(b, run->e->msg);
    int64_t cutoff = idem_cutoff_us(run->s);
    db_arg args[] = {DB_INT(im->user_id),
                     DB_TEXT(im->key),
                     DB_TEXTN(im->fp, 64),
                     DB_TEXT(ok ? "ok" : svc_kind_name(run->e->kind)),
                     DB_TEXT(ok ? "" : run->e->code),
                     DB_TEXTN(b->data ? b->data : "", b->len),
                     DB_TIME(bz_wall_us()),
                     DB_TIME(cutoff)};
    if (db_q_dialect(TX(tx)) == DB_SQLITE) { /* no round trip to save: one upsert (sql.c) */
        int64_t aff = 0;
        int rc = sql_exec(TX(tx), ctx, &SQL_IDEM_UPSERT, args, 8, &aff, err);
        if (rc == 0 && aff == 0) /* a live record has this key */
            return bz_err_set(err, BZ_ERR_UNIQUE, "idempotency key already recorded"), -1;
        run->recorded = rc == 0;
        return rc;
    }
    /* With the COMMIT (PostgreSQL: one round trip for the two); any record
     * under the key fails the INSERT (unique violation), and with it the
     * transaction, before the COMMIT runs.  An expired one that the purge
     * has not reached yet is rare: svc__tx_run_op deletes it and runs the
     * operation again (sql.c). */
    db_step st[] = {{.sql = svc_sql_text(TX(tx), &SQL_IDEM_INSERT), .args = args, .nargs = 7}};
    int rc = db_batch(tx, ctx, st, 1, DB_BATCH_COMMIT, err);
    run->recorded = rc == 0;
    return rc;
}

/* Deletes the expired record that holds run's key (PostgreSQL's record
 * INSERT failed on it): 1 one was deleted, 0 none (a live record, or one
 * already gone), -1 the statement failed (run->e). */
static int idem_drop_expired(tx_run *run)
{
    const svc_idem *im = run->im;
    db_arg args[] = {DB_INT(im->user_id), DB_TEXT(im->key), DB_TIME(idem_cutoff_us(run->s))};
    int64_t aff = 0;
    bz_error be;
    if (sql_exec(DB(run->s->db), run->c->ctx, &SQL_IDEM_EXPIRED, args, 3, &aff, &be) != 0)
        return svc_fail_from(run->e, &be);
    return aff > 0;
}

static svc_kind kind_from_name(const char *s)
{
    for (int k = 1; k < SVC_KIND__COUNT; k++)
        if (!strcmp(svc_kind_name((svc_kind)k), s))
            return (svc_kind)k;
    return SVC_INTERNAL;
}

/* The stored outcome of the key: 1 settled (result decoded into run->out
 * and 0 in *outcome, or the stored refusal / "reused" in run->e and -1),
 * 0 no record, -1 the lookup failed (run->e). */
static int idem_settle(tx_run *run, int *outcome)
{
    const svc_idem *im = run->im;
    db_rows *rows = NULL;
    bz_error be;
    db_arg args[] = {DB_INT(im->user_id), DB_TEXT(im->key), DB_TIME(idem_cutoff_us(run->s))};
    int rc = sql_row(run->c->arena, DB(run->s->db), run->c->ctx, &SQL_IDEM_GET, args, 3, &rows, &be);
    if (rc == DB_NO_ROWS)
        return 0;
    if (rc < 0)
        return svc_fail_from(run->e, &be);
    size_t n;
    const char *fp = db_col_text(rows, 0, &n);
    if (n != 64 || memcmp(fp, im->fp, 64) != 0) {
        svc_fail(run->e, SVC_UNPROCESSABLE, "idempotency_key_reused",
                 "this Idempotency-Key was used with a different request");
        *outcome = -1;
        return 1;
    }
    const char *outcome_s = db_col_text(rows, 1, NULL);
    const char *res = db_col_text(rows, 3, &n);
    run->c->replayed = true;
    if (!strcmp(outcome_s, "ok")) {
        svc_rd r = {res, res + n, false};
        if (!run->decode(&r, run->c->arena, run->out)) {
            svc_fail(run->e, SVC_INTERNAL, "internal", "a stored idempotent result is unreadable");
            *outcome = -1;
            return 1;
        }
        *outcome = 0;
    } else {
        svc_err_clear(run->e);
        run->e->kind = kind_from_name(outcome_s);
        run->e->code = bz_arena_strdup(run->c->arena, db_col_text(rows, 2, NULL));
        snprintf(run->e->msg, sizeof run->e->msg, "%.*s", (int)n, res);
        *outcome = -1;
    }
    return 1;
}

/* fn in a transaction, and again in a new one for as long as it asks
 * (run->again: its transaction committed without settling).  Each ask
 * means the data moved under it (a transfer's balance crossed its amount
 * between the move and the refusal's read, then back), so RUN_AGAIN_MAX
 * asks in a row are contention: a serialization failure, which the
 * caller answers as 503 contention (retry with the same key). */
#define RUN_AGAIN_MAX 8
static int run_tx(tx_run *run, const db_tx_opts *o, db_tx_fn fn, void *arg, bz_error *be)
{
    for (int i = 0;; i++) {
        run->again = false;
        run->recorded = false;
        int rc = db_run_tx(run->s->db, run->c->ctx, o, fn, arg, be);
        if (rc != 0 || !run->again)
            return rc;
        if (i == RUN_AGAIN_MAX)
            return bz_err_set(be, BZ_ERR_SERIALIZATION, "the operation's data kept changing under it"), -EAGAIN;
    }
}

/* The answer to a repeat that met the key's lock (im->busy): the key's
 * record, or "in use" while the request holding the lock has none yet. */
static int idem_answer_busy(tx_run *run)
{
    int outcome = -1;
    int st = idem_settle(run, &outcome);
    if (st == 0)
        return svc_fail(run->e, SVC_CONFLICT, "idempotency_key_in_use",
                        "a request with this Idempotency-Key is still being processed");
    return st < 0 ? -1 : outcome;
}

/* Ends run's hold on its key.  kept: this request committed the key's
 * record, which outlives the lock (svc__idem_can_keep_locks), so where a
 * release costs a round trip (s->idem_keep_locks) the lock is left to
 * expire — any repeat that meets it is answered from the record, exactly
 * as after the release (idem_answer_busy). */
static void idem_finish(tx_run *run, bool kept)
{
    if (kept && run->s->idem_keep_locks)
        run->im->locked = false;
    svc__idem_end(run->s, run->im);
}

int svc__tx_run_op(tx_run *run, db_tx_fn fn, void *arg, svc_kind uniq_kind, const char *uniq_code, const char *uniq_msg)
{
    svc_err_clear(run->e);
    if (run->im && run->im->busy)
        return idem_answer_busy(run);
    bz_error be;
    db_tx_opts o = {.isolation = run->read_committed ? DB_READ_COMMITTED : DB_SERIALIZABLE};
    int rc = run_tx(run, &o, fn, arg, &be);
    int result;
    bool kept = false; /* this request committed the key's record */
    if (rc == 0) {
        result = run->e->kind == SVC_OK ? 0 : -1;
        kept = run->recorded;
    } else {
        int outcome = -1;
        int st = 0;
        if (be.kind == BZ_ERR_UNIQUE && run->im && run->im->active) {
            st = idem_settle(run, &outcome); /* another request committed this key first */
            /* No live record: an expired one held the key (PostgreSQL's
             * plain INSERT).  Out with it, and once more from the start;
             * the key's lock keeps other requests with it away. */
            if (st == 0 && (st = idem_drop_expired(run)) == 1) {
                svc_err_clear(run->e);
                rc = run_tx(run, &o, fn, arg, &be);
                st = rc == 0 ? 2 : be.kind == BZ_ERR_UNIQUE ? idem_settle(run, &outcome) : 0;
            }
        }
        if (st == 2)
            result = run->e->kind == SVC_OK ? 0 : -1;
        else if (st == 1)
            result = outcome;
        else if (st < 0)
            result = -1;
        else if (be.kind == BZ_ERR_UNIQUE && uniq_code)
            result = svc_fail(run->e, uniq_kind, uniq_code, "%s", uniq_msg);
        else
            result = svc_fail_from(run->e, &be);
        /* Not st == 1: that record is another request's, maybe near the
         * end of its retention, and must not be outlived by this lock. */
        kept = st == 2 && run->recorded;
    }
    if (run->im)
        idem_finish(run, kept);
    return result;
}

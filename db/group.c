/*
 * db/group.c — group commit for SQLite write transactions.
 *
 * SQLite has one writer and, with synchronous=FULL, one fsync per commit:
 * a server that commits each request on its own is capped at the disk's
 * fsync rate.  Here the db_run_tx write transactions of many concurrent
 * requests share one database transaction and one fsync:
 *
 *   - A caller queues itself.  If no batch is running it becomes the
 *     leader; otherwise it parks until its work is done (or until it is
 *     handed the lead).
 *   - The leader takes every queued member (up to GC_MAX), BEGIN IMMEDIATE,
 *     and runs each member's function inside its own SAVEPOINT: a member
 *     that fails is rolled back to its savepoint alone, the others keep
 *     their work.  Members run one after another, so each sees exactly the
 *     database the serial order gives it: isolation is unchanged.
 *   - One COMMIT (one fsync) makes them all durable; only then is any
 *     member woken, so nothing is answered before it is on disk.  If the
 *     COMMIT fails, every member fails with that error.
 *   - The leader then hands the lead to the first member queued meanwhile
 *     and returns its own result: no caller waits for more than the batch
 *     in progress plus its own.
 *
 * A member's function runs on the leader's coroutine (the member's stack
 * is parked and stays valid).  It gets a context of its own carrying the
 * member's deadline.  A member cancelled while still queued leaves the
 * queue; once taken into a batch it waits for the batch (a few ms).
 */
#include "db/db-private.h"

#include <bazaar/clock.h>
#include <bazaar/rand.h>

#include <errno.h>
#include <string.h>

#define GC_MAX 128
#define BEGIN_ATTEMPTS 20

typedef struct db_gc_member {
    struct db_gc_member *next;
    db_tx_fn fn;
    void *arg;
    int64_t deadline;
    bz_error err;
    int result;
    bool taken;   /* in a batch: must wait for it */
    bool done;
    bool lead;    /* handed the lead */
    rt_waitq q;   /* this member's coroutine parks here */
} db_gc_member;

static void enqueue(db *d, db_gc_member *m)
{
    m->next = NULL;
    if (d->gc_tail)
        d->gc_tail->next = m;
    else
        d->gc_head = m;
    d->gc_tail = m;
}

static void unlink_member(db *d, db_gc_member *m)
{
    db_gc_member *prev = NULL;
    for (db_gc_member *x = d->gc_head; x; prev = x, x = x->next)
        if (x == m) {
            if (prev)
                prev->next = x->next;
            else
                d->gc_head = x->next;
            if (d->gc_tail == x)
                d->gc_tail = prev;
            return;
        }
}

static int step(db_tx *tx, const char *sql, bz_error *err) { return db_exec(TX(tx), NULL, sql, NULL, 0, NULL, err); }

/* Runs one batch of members (already unlinked from the queue). */
static void run_batch(db *d, db_gc_member **batch, int n)
{
    db_tx *tx = NULL;
    bz_error e;
    int r = 0;
    int64_t backoff = BZ_NS_PER_MS;
    for (int attempt = 1;; attempt++) {
        /* Another process may hold SQLite's write lock (BUSY): retry. */
        r = db_begin(d, NULL, &(db_tx_opts){.isolation = DB_SERIALIZABLE}, &tx, &e);
        if (r == 0 || e.kind != BZ_ERR_SERIALIZATION || attempt == BEGIN_ATTEMPTS)
            break;
        rt_sleep(NULL, 1 + (int64_t)(bz_rand01() * (double)backoff));
        if (backoff < 50 * BZ_NS_PER_MS)
            backoff *= 2;
    }
    if (r != 0) {
        for (int i = 0; i < n; i++) {
            batch[i]->result = r;
            batch[i]->err = e;
        }
        return;
    }
    int ok = 0;
    for (int i = 0; i < n; i++) {
        db_gc_member *m = batch[i];
        bz_err_clear(&m->err);
        if (m->deadline <= bz_now_ns()) {
            m->result = -ETIMEDOUT;
            bz_err_set(&m->err, BZ_ERR_TIMEOUT, "deadline passed before the transaction ran");
            continue;
        }
        if ((r = step(tx, "SAVEPOINT bz_member", &m->err)) != 0) {
            m->result = r;
            continue;
        }
        rt_ctx c;
        rt_ctx_init_deadline(&c, NULL, m->deadline);
        m->result = m->fn(tx, &c, m->arg, &m->err);
        rt_ctx_release(&c);
        /* A member's last batch may say DB_BATCH_COMMIT (only db_commit
         * may follow): on SQLite that commits nothing, and the group's
         * statements and commit are still to come. */
        tx->sealed = false;
        if (m->result != 0) {
            /* This member's work goes; the others' stays. */
            bz_error e2;
            step(tx, "ROLLBACK TO bz_member", &e2);
        }
        bz_error e3;
        if (step(tx, "RELEASE bz_member", &e3) != 0 && m->result == 0) {
            m->result = -EIO;
            m->err = e3;
        }
        ok += m->result == 0;
    }
    r = ok ? db_commit(tx, &e) : 0;
    pthread_mutex_lock(&d->lk);
    d->st.group_commits++;
    d->st.group_members += n;
    pthread_mutex_unlock(&d->lk);
    db_rollback(tx); /* after a commit: only frees */
    if (r != 0)
        for (int i = 0; i < n; i++)
            if (batch[i]->result == 0) {
                batch[i]->result = r;
                batch[i]->err = e;
            }
}

int db__group_tx(db *d, rt_ctx *ctx, db_tx_fn fn, void *arg, bz_error *err)
{
    db_gc_member m;
    memset(&m, 0, sizeof m);
    m.fn = fn;
    m.arg = arg;
    m.deadline = ctx ? rt_ctx_deadline(ctx) : BZ_NO_DEADLINE;
    pthread_mutex_lock(&d->gc_lk);
    enqueue(d, &m);
    if (!d->gc_leading) {
        d->gc_leading = true;
        m.lead = true;
    }
    while (!m.done && !m.lead) {
        int w = rt_waitq_wait(&m.q, &d->gc_lk, m.taken ? NULL : ctx, BZ_NO_DEADLINE, NULL);
        if (w != 0 && !m.taken && !m.done && !m.lead) {
            unlink_member(d, &m);
            pthread_mutex_unlock(&d->gc_lk);
            return bz_err_set(err, w == -ETIMEDOUT ? BZ_ERR_TIMEOUT : BZ_ERR_CANCELLED,
                              "gave up waiting for the database writer"),
                   w;
        }
    }
    if (m.done) {
        pthread_mutex_unlock(&d->gc_lk);
        if (err)
            *err = m.err;
        return m.result;
    }
    /* The leader: one batch, which includes this member. */
    db_gc_member *batch[GC_MAX];
    int n = 0;
    while (d->gc_head && n < GC_MAX) {
        db_gc_member *x = d->gc_head;
        d->gc_head = x->next;
        if (!d->gc_head)
            d->gc_tail = NULL;
        x->taken = true;
        batch[n++] = x;
    }
    pthread_mutex_unlock(&d->gc_lk);

    run_batch(d, batch, n);

    pthread_mutex_lock(&d->gc_lk);
    for (int i = 0; i < n; i++) {
        batch[i]->done = true;
        if (batch[i] != &m)
            rt_waitq_wake_one(&batch[i]->q, 0, NULL);
    }
    /* Hand the lead on to whoever queued during this batch. */
    if (d->gc_head) {
        d->gc_head->lead = true;
        rt_waitq_wake_one(&d->gc_head->q, 0, NULL);
    } else {
        d->gc_leading = false;
    }
    pthread_mutex_unlock(&d->gc_lk);
    if (err)
        *err = m.err;
    return m.result;
}

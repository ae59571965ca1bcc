/* tests/unit/test_rt.c — the runtime: context switches, coroutine churn,
 * timers, contexts, cross-thread wake-ups, sync primitives, offload,
 * sockets, and the guard page. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <bazaar/rt.h>
#include <bazaar/log.h>
#include "rt/rt-private.h" /* rt__batch_counts */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <fenv.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ASan and TSan handle SIGSEGV themselves: the guard-page test runs in
 * the plain build only. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif

/* Runs fn(arg) as the main coroutine of a fresh runtime with n loops. */
static void run(int threads, rt_fn fn, void *arg)
{
    rt_options o = {.threads = threads};
    assert_int_equal(rt_run(&o, fn, arg), 0);
}

/* ---- context switch correctness ---- */

#if defined(__x86_64__)
void test_regs_yield(uint64_t seed, uint64_t out[6]);

typedef struct {
    uint64_t seed;
    uint64_t out[6];
    rt_wg *wg;
} regs_arg;

static void regs_coro(void *p)
{
    regs_arg *a = p;
    for (int round = 0; round < 100; round++) {
        test_regs_yield(a->seed + (uint64_t)round * 16, a->out);
        for (int i = 0; i < 6; i++)
            if (a->out[i] != a->seed + (uint64_t)round * 16 + (uint64_t)i)
                a->out[0] = 0xBAD;
        if (a->out[0] == 0xBAD)
            break;
    }
    rt_wg_done(a->wg);
}
#endif

static const int rounding[4] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};

typedef struct {
    int mode;
    bool ok;
    rt_wg *wg;
} fp_arg;

static double divide(double a, double b)
{
    volatile double x = a, y = b; /* computed at run time, with SSE on x86-64 */
    return x / y;
}

static void fp_coro(void *p)
{
    fp_arg *a = p;
    a->ok = true;
    fesetround(a->mode);
    /* 1/3 rounds differently under each mode; remember ours. */
    double mine = divide(1.0, 3.0), neg = divide(-1.0, 3.0);
    for (int i = 0; i < 50; i++) {
        rt_yield();
        /* Other coroutines set other rounding modes meanwhile: the x87
         * control word (fegetround) and MXCSR (the SSE division) must be
         * ours again. */
        if (fegetround() != a->mode || divide(1.0, 3.0) != mine || divide(-1.0, 3.0) != neg)
            a->ok = false;
    }
    fesetround(FE_TONEAREST);
    rt_wg_done(a->wg);
}

static void switch_main(void *unused)
{
    rt_wg wg;
    rt_wg_init(&wg);
#if defined(__x86_64__)
    regs_arg ra[4];
    for (int i = 0; i < 4; i++) {
        ra[i] = (regs_arg){.seed = 0x1000000000ull * (uint64_t)(i + 1), .wg = &wg};
        rt_wg_add(&wg, 1);
        rt_go(regs_coro, &ra[i]);
    }
#endif
    fp_arg fa[4];
    for (int i = 0; i < 4; i++) {
        fa[i] = (fp_arg){.mode = rounding[i], .wg = &wg};
        rt_wg_add(&wg, 1);
        rt_go(fp_coro, &fa[i]);
    }
    assert_int_equal(rt_wg_wait(&wg, NULL), 0);
#if defined(__x86_64__)
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 6; k++)
            assert_true(ra[i].out[k] == ra[i].seed + 99 * 16 + (uint64_t)k);
#endif
    for (int i = 0; i < 4; i++)
        assert_true(fa[i].ok);
    rt_wg_destroy(&wg);
}

static void context_switch_preserves_registers_and_fp_state(void **state) { run(1, switch_main, NULL); }

/* ---- 100k coroutines ---- */

static int churn_count;
static void churn_one(void *p)
{
    churn_count++;
    rt_wg_done(p);
}

static void churn_main(void *unused)
{
    rt_wg wg;
    rt_wg_init(&wg);
    churn_count = 0;
    for (int i = 0; i < 100000; i++) {
        rt_wg_add(&wg, 1);
        rt_go(churn_one, &wg);
        if (i % 1000 == 999)
            rt_yield(); /* let the batch run so stacks are recycled */
    }
    assert_int_equal(rt_wg_wait(&wg, NULL), 0);
    assert_int_equal(churn_count, 100000);
    rt_wg_destroy(&wg);
}

static void hundred_thousand_coroutines(void **state) { run(1, churn_main, NULL); }

/* ---- timers fire in deadline order ---- */

#define NT 300
static int order[NT], norder;
static int64_t delays[NT], base;

static void sleeper(void *p)
{
    int i = (int)(intptr_t)p;
    /* Absolute deadlines from one base, so start-up order cannot matter. */
    assert_int_equal(rt_park(NULL, base + delays[i], NULL), -ETIMEDOUT);
    order[norder++] = i;
}

static void timers_main(void *unused)
{
    norder = 0;
    srand(7);
    for (int i = 0; i < NT; i++) {
        /* distinct deadlines, shuffled, 0..60 ms apart by 0.2 ms */
        delays[i] = (int64_t)i * 200 * BZ_NS_PER_US;
    }
    for (int i = NT - 1; i > 0; i--) {
        int j = rand() % (i + 1);
        int64_t t = delays[i];
        delays[i] = delays[j];
        delays[j] = t;
    }
    /* Every sleeper must be parked before the first deadline, or the late
     * ones fire in start order: 300 starts take well under a millisecond
     * on a quiet box, but tens of them under TSan beside other jobs. */
    base = bz_now_ns() + 400 * BZ_NS_PER_MS;
    for (int i = 0; i < NT; i++)
        rt_go(sleeper, (void *)(intptr_t)i);
    for (int w = 0; w < 100 && norder < NT; w++) /* at most 0.4 + 5 s */
        rt_sleep(NULL, (w == 0 ? 460 : 50) * BZ_NS_PER_MS);
    assert_int_equal(norder, NT);
    for (int k = 1; k < NT; k++)
        assert_true(delays[order[k - 1]] < delays[order[k]]);
}

static void timers_fire_in_deadline_order(void **state) { run(1, timers_main, NULL); }

static int fired[3], nfired;
static void timer_cb(rt_timer *t) { fired[nfired++] = (int)(intptr_t)t->data; }

static void raw_timers_main(void *unused)
{
    rt_timer t[4] = {{.fn = timer_cb, .data = (void *)0}, {.fn = timer_cb, .data = (void *)1},
                     {.fn = timer_cb, .data = (void *)2}, {.fn = timer_cb, .data = (void *)3}};
    int64_t now = bz_now_ns();
    nfired = 0;
    rt_timer_start(&t[0], now + 30 * BZ_NS_PER_MS);
    rt_timer_start(&t[1], now + 10 * BZ_NS_PER_MS);
    rt_timer_start(&t[2], now + 20 * BZ_NS_PER_MS);
    rt_timer_start(&t[3], now + 15 * BZ_NS_PER_MS);
    rt_timer_stop(&t[3]); /* stopped timers never fire */
    assert_false(rt_timer_armed(&t[3]));
    rt_sleep(NULL, 60 * BZ_NS_PER_MS);
    assert_int_equal(nfired, 3);
    assert_int_equal(fired[0], 1);
    assert_int_equal(fired[1], 2);
    assert_int_equal(fired[2], 0);
}

static void raw_timers_in_order_and_stoppable(void **state) { run(1, raw_timers_main, NULL); }

/* A timer callback sees rt_now() at least at its deadline, also when the
 * loop runs timers between coroutines without polling (a busy runq):
 * a callback that sleeps again "until rt_now() reaches the deadline"
 * spun forever inside the timer run when it saw the turn's stale time
 * (HTTP/2's idle timer did). */
static int early_seen;
static volatile int spinning_done;
static void patient_cb(rt_timer *t)
{
    if (rt_now() < t->deadline && early_seen < 1000) {
        early_seen++;
        rt_timer_start(t, t->deadline); /* not yet, by the loop's clock */
    }
}

static void spinner(void *unused)
{
    while (!spinning_done)
        rt_yield(); /* keeps the run queue busy: timers run between turns */
}

static void timer_clock_main(void *unused)
{
    early_seen = 0;
    spinning_done = 0;
    rt_go(spinner, NULL);
    rt_timer t[50];
    int64_t now = bz_now_ns();
    for (int i = 0; i < 50; i++) {
        t[i] = (rt_timer){.fn = patient_cb};
        rt_timer_start(&t[i], now + (5 + i) * BZ_NS_PER_MS);
    }
    int64_t end = bz_now_ns() + 200 * BZ_NS_PER_MS;
    while (bz_now_ns() < end)
        rt_yield();
    spinning_done = 1;
    rt_yield();
    assert_int_equal(early_seen, 0);
}

static void timer_callbacks_see_their_deadline_passed(void **state) { run(1, timer_clock_main, NULL); }

/* ---- the loop's batched log lines ----
 *
 * A loop holds its info lines for up to BZ_LOG_HOLD_NS (not one write per
 * turn), and a loop with nothing else to do still writes them by then: its
 * wait for events ends when the batch is due.  A plain thread reads the
 * pipe while the loop sleeps far longer than the hold. */

typedef struct {
    int rfd;
    ssize_t early, mid, late; /* bytes in the pipe right after the line, after the loop */
                              /* waited 20 ms, and 60 ms after the line was due */
    bool due_ok;         /* bz_log_flush_due() is BZ_LOG_HOLD_NS after the line */
} held_log;

static ssize_t drain(int fd)
{
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    return n < 0 ? 0 : n;
}

static void *late_reader(void *p)
{
    held_log *h = p;
    usleep((useconds_t)((BZ_LOG_HOLD_NS + 60 * BZ_NS_PER_MS) / 1000));
    h->late = drain(h->rfd);
    return NULL;
}

static void held_log_main(void *p)
{
    held_log *h = p;
    assert_true(bz_log_flush_due() == BZ_NO_DEADLINE);
    int64_t t0 = bz_now_ns();
    bz_log_info("held", BZ_F_INT("n", 1));
    int64_t due = bz_log_flush_due();
    h->due_ok = due >= t0 + BZ_LOG_HOLD_NS && due <= bz_now_ns() + BZ_LOG_HOLD_NS;
    h->early = drain(h->rfd);
    rt_sleep(NULL, 20 * BZ_NS_PER_MS); /* the loop waits for events: no write for that */
    h->mid = drain(h->rfd);
    pthread_t th;
    pthread_create(&th, NULL, late_reader, h);
    rt_sleep(NULL, 3 * BZ_LOG_HOLD_NS); /* the loop's only timer is far past the hold */
    pthread_join(th, NULL);
}

static void loop_log_batch_is_written_when_due(void **state)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    bz_log_set_fd(fds[1]);
    bz_log_setup(BZ_LOG_INFO, BZ_LOG_JSON);
    held_log h = {.rfd = fds[0]};
    run(1, held_log_main, &h);
    bz_log_set_fd(-1);
    bz_log_setup(BZ_LOG_INFO, BZ_LOG_TEXT);
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(h.early, 0); /* held, not written on the spot */
    assert_int_equal(h.mid, 0);   /* nor when the loop next waits */
    assert_true(h.due_ok);
    assert_true(h.late > 0);      /* written by the due time, not at the sleep's end */
}

/* ---- contexts ---- */

typedef struct {
    rt_ctx *ctx;
    int result;
    int64_t took;
    rt_wg *wg;
} waiter_arg;

static void long_waiter(void *p)
{
    waiter_arg *a = p;
    int64_t t0 = bz_now_ns();
    a->result = rt_sleep(a->ctx, 10 * BZ_NS_PER_S);
    a->took = bz_now_ns() - t0;
    rt_wg_done(a->wg);
}

static void *cancel_thread(void *p)
{
    usleep(20000);
    rt_ctx_cancel(p);
    return NULL;
}

static void cancel_main(void *unused)
{
    rt_ctx parent, child;
    rt_ctx_init(&parent, NULL);
    rt_ctx_init(&child, &parent);
    rt_wg wg;
    rt_wg_init(&wg);
    waiter_arg a[2] = {{.ctx = &parent, .wg = &wg}, {.ctx = &child, .wg = &wg}};
    rt_wg_add(&wg, 2);
    /* Waiters on the other loop; the cancel comes from a plain thread. */
    rt_go_on(rt_loop_at(1), long_waiter, &a[0]);
    rt_go_on(rt_loop_at(1), long_waiter, &a[1]);
    pthread_t th;
    pthread_create(&th, NULL, cancel_thread, &parent);
    assert_int_equal(rt_wg_wait(&wg, NULL), 0);
    pthread_join(th, NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(a[i].result, -ECANCELED);
        assert_true(a[i].took < 200 * BZ_NS_PER_MS);
    }
    assert_int_equal(rt_ctx_err(&child), ECANCELED);
    /* A child made from a cancelled parent starts cancelled. */
    rt_ctx late;
    rt_ctx_init(&late, &parent);
    assert_int_equal(rt_sleep(&late, BZ_NS_PER_S), -ECANCELED);
    rt_ctx_release(&late);
    rt_ctx_release(&child);
    rt_ctx_release(&parent);
    rt_wg_destroy(&wg);
}

static void cancel_from_another_thread_wakes_waits(void **state) { run(2, cancel_main, NULL); }

static void deadline_main(void *unused)
{
    rt_ctx outer, inner, inner2;
    rt_ctx_init_timeout(&outer, NULL, 50 * BZ_NS_PER_MS);
    rt_ctx_init_timeout(&inner, &outer, 5 * BZ_NS_PER_S); /* capped by outer */
    int64_t t0 = bz_now_ns();
    assert_int_equal(rt_sleep(&inner, BZ_NS_PER_S), -ETIMEDOUT);
    int64_t took = bz_now_ns() - t0;
    assert_true(took >= 50 * BZ_NS_PER_MS && took < 150 * BZ_NS_PER_MS);
    assert_int_equal(rt_ctx_err(&inner), ETIMEDOUT);
    assert_int_equal(rt_ctx_err(&outer), ETIMEDOUT);
    rt_ctx_release(&inner);
    rt_ctx_release(&outer);

    rt_ctx_init_timeout(&outer, NULL, 5 * BZ_NS_PER_S);
    rt_ctx_init_timeout(&inner2, &outer, 20 * BZ_NS_PER_MS); /* tighter than outer */
    t0 = bz_now_ns();
    assert_int_equal(rt_sleep(&inner2, BZ_NS_PER_S), -ETIMEDOUT);
    took = bz_now_ns() - t0;
    assert_true(took >= 20 * BZ_NS_PER_MS && took < 120 * BZ_NS_PER_MS);
    assert_int_equal(rt_ctx_err(&outer), 0); /* the parent lives on */
    /* a sleep shorter than the deadline ends normally */
    assert_int_equal(rt_sleep(&outer, 5 * BZ_NS_PER_MS), 0);
    rt_ctx_release(&inner2);
    rt_ctx_release(&outer);
}

static void nested_context_deadlines(void **state) { run(1, deadline_main, NULL); }

/* A cancel that comes after the deadline passed unobserved (nobody had
 * looked at the clock yet) does not make the context cancelled: it had
 * already timed out, and it says so — its children too.  A cancel before
 * the deadline stays a cancel. */
static void cancel_after_an_unobserved_deadline_is_a_timeout(void **state)
{
    (void)state;
    rt_ctx parent, child, early;
    rt_ctx_init(&parent, NULL);
    rt_ctx_tighten(&parent, bz_now_ns() + BZ_NS_PER_MS);
    rt_ctx_init(&child, &parent);
    rt_ctx_init_timeout(&early, NULL, 5 * BZ_NS_PER_S);
    struct timespec ts = {0, 3 * 1000 * 1000};
    nanosleep(&ts, NULL);
    rt_ctx_cancel(&parent);
    rt_ctx_cancel(&early);
    assert_int_equal(rt_ctx_err(&child), ETIMEDOUT);
    assert_int_equal(rt_ctx_err(&parent), ETIMEDOUT);
    assert_int_equal(rt_ctx_err(&early), ECANCELED);
    rt_ctx_release(&child);
    rt_ctx_release(&parent);
    rt_ctx_release(&early);
}

/* ---- sync primitives across loops ---- */

typedef struct {
    rt_mutex mu;
    rt_sem ping, pong;
    rt_wg wg;
    int64_t counter;
    int rounds;
} sync_state;

static void mutex_worker(void *p)
{
    sync_state *s = p;
    for (int i = 0; i < 2000; i++) {
        assert_int_equal(rt_mutex_lock(&s->mu, NULL), 0);
        int64_t v = s->counter;
        if (i % 7 == 0)
            rt_yield(); /* hold the lock across a switch */
        s->counter = v + 1;
        rt_mutex_unlock(&s->mu);
    }
    rt_wg_done(&s->wg);
}

static void ponger(void *p)
{
    sync_state *s = p;
    for (int i = 0; i < s->rounds; i++) {
        assert_int_equal(rt_sem_acquire(&s->ping, NULL, BZ_NO_DEADLINE), 0);
        rt_sem_release(&s->pong);
    }
    rt_wg_done(&s->wg);
}

static void sync_main(void *unused)
{
    static sync_state s;
    rt_mutex_init(&s.mu);
    rt_sem_init(&s.ping, 0);
    rt_sem_init(&s.pong, 0);
    rt_wg_init(&s.wg);
    s.counter = 0;
    s.rounds = 10000;
    rt_wg_add(&s.wg, 8);
    for (int i = 0; i < 8; i++)
        rt_go_on(rt_loop_at(i % 2), mutex_worker, &s);
    assert_int_equal(rt_wg_wait(&s.wg, NULL), 0);
    assert_int_equal(s.counter, 16000);

    /* cross-thread ping-pong through the mailboxes */
    rt_wg_add(&s.wg, 1);
    rt_go_on(rt_loop_at(1), ponger, &s);
    for (int i = 0; i < s.rounds; i++) {
        rt_sem_release(&s.ping);
        assert_int_equal(rt_sem_acquire(&s.pong, NULL, BZ_NO_DEADLINE), 0);
    }
    assert_int_equal(rt_wg_wait(&s.wg, NULL), 0);

    /* a semaphore wait with a deadline times out and does not steal a unit */
    assert_int_equal(rt_sem_acquire(&s.ping, NULL, bz_now_ns() + 10 * BZ_NS_PER_MS), -ETIMEDOUT);
    rt_sem_release(&s.ping);
    assert_true(rt_sem_tryacquire(&s.ping));
    assert_false(rt_sem_tryacquire(&s.ping));

    /* a mutex wait honours its context */
    assert_int_equal(rt_mutex_lock(&s.mu, NULL), 0);
    rt_ctx c;
    rt_ctx_init_timeout(&c, NULL, 10 * BZ_NS_PER_MS);
    assert_int_equal(rt_mutex_lock(&s.mu, &c), -ETIMEDOUT);
    rt_ctx_release(&c);
    rt_mutex_unlock(&s.mu);
    assert_true(rt_mutex_trylock(&s.mu));
    rt_mutex_unlock(&s.mu);

    rt_mutex_destroy(&s.mu);
    rt_sem_destroy(&s.ping);
    rt_sem_destroy(&s.pong);
    rt_wg_destroy(&s.wg);
}

static void mutex_semaphore_waitgroup_across_loops(void **state) { run(2, sync_main, NULL); }

typedef struct {
    rt_chan ch;
    rt_wg producers, consumers;
    int64_t sum;
    pthread_mutex_t sum_lk;
} chan_state;

static void producer(void *p)
{
    chan_state *s = p;
    for (intptr_t i = 1; i <= 5000; i++)
        assert_int_equal(rt_chan_send(&s->ch, (void *)i, NULL, BZ_NO_DEADLINE), 0);
    rt_wg_done(&s->producers);
}

static void consumer(void *p)
{
    chan_state *s = p;
    void *v;
    int64_t local = 0;
    int r;
    while ((r = rt_chan_recv(&s->ch, &v, NULL, BZ_NO_DEADLINE)) == 0)
        local += (intptr_t)v;
    assert_int_equal(r, -EPIPE);
    pthread_mutex_lock(&s->sum_lk);
    s->sum += local;
    pthread_mutex_unlock(&s->sum_lk);
    rt_wg_done(&s->consumers);
}

static void chan_main(void *unused)
{
    static chan_state s;
    rt_chan_init(&s.ch, 4);
    rt_wg_init(&s.producers);
    rt_wg_init(&s.consumers);
    pthread_mutex_init(&s.sum_lk, NULL);
    s.sum = 0;
    rt_wg_add(&s.producers, 4);
    rt_wg_add(&s.consumers, 3);
    for (int i = 0; i < 4; i++)
        rt_go_on(rt_loop_at(i % 2), producer, &s);
    for (int i = 0; i < 3; i++)
        rt_go_on(rt_loop_at((i + 1) % 2), consumer, &s);
    assert_int_equal(rt_wg_wait(&s.producers, NULL), 0);
    rt_chan_close(&s.ch);
    assert_int_equal(rt_wg_wait(&s.consumers, NULL), 0);
    assert_int_equal(s.sum, 4 * (5000 * 5001 / 2));
    assert_int_equal(rt_chan_send(&s.ch, (void *)1, NULL, BZ_NO_DEADLINE), -EPIPE);

    /* receive with a deadline on an empty channel */
    rt_chan c2;
    rt_chan_init(&c2, 1);
    void *v;
    assert_int_equal(rt_chan_recv(&c2, &v, NULL, bz_now_ns() + 10 * BZ_NS_PER_MS), -ETIMEDOUT);
    assert_int_equal(rt_chan_trysend(&c2, (void *)7), 0);
    assert_int_equal(rt_chan_trysend(&c2, (void *)8), -EAGAIN);
    assert_int_equal(rt_chan_tryrecv(&c2, &v), 0);
    assert_true(v == (void *)7);
    assert_int_equal(rt_chan_tryrecv(&c2, &v), -EAGAIN);
    rt_chan_destroy(&c2);
    rt_chan_destroy(&s.ch);
    rt_wg_destroy(&s.producers);
    rt_wg_destroy(&s.consumers);
    pthread_mutex_destroy(&s.sum_lk);
}

static void channel_fan_in_across_loops(void **state) { run(2, chan_main, NULL); }

/* ---- offload ---- */

typedef struct {
    int in, out;
    pthread_t ran_on;
} off_job;

static void square(void *p)
{
    off_job *j = p;
    j->out = j->in * j->in;
    j->ran_on = pthread_self();
}

typedef struct {
    int i;
    bool ok;
    rt_wg *wg;
} off_arg;

static void offloader(void *p)
{
    off_arg *a = p;
    off_job j = {.in = a->i};
    a->ok = rt_offload(NULL, square, &j) == 0 && j.out == a->i * a->i &&
            !pthread_equal(j.ran_on, pthread_self());
    rt_wg_done(a->wg);
}

static void block_100ms(void *p)
{
    (void)p;
    usleep(100000);
}

static void blocker(void *p)
{
    rt_offload(NULL, block_100ms, NULL);
    rt_wg_done(p);
}

static void offload_main(void *unused)
{
    rt_wg wg;
    rt_wg_init(&wg);
    static off_arg a[100];
    for (int i = 0; i < 100; i++) {
        a[i] = (off_arg){.i = i, .wg = &wg};
        rt_wg_add(&wg, 1);
        rt_go_on(rt_loop_at(i % 2), offloader, &a[i]);
    }
    assert_int_equal(rt_wg_wait(&wg, NULL), 0);
    for (int i = 0; i < 100; i++)
        assert_true(a[i].ok);
    /* Occupy both workers, then offload with a context that ends while the
     * job is still queued: it is dropped, the caller returns promptly. */
    rt_wg_add(&wg, 2);
    rt_go(blocker, &wg);
    rt_go(blocker, &wg);
    rt_yield();
    rt_ctx c;
    rt_ctx_init_timeout(&c, NULL, 10 * BZ_NS_PER_MS);
    off_job j = {.in = 3};
    int64_t t0 = bz_now_ns();
    assert_int_equal(rt_offload(&c, square, &j), -ETIMEDOUT);
    assert_true(bz_now_ns() - t0 < 80 * BZ_NS_PER_MS);
    assert_int_equal(j.out, 0); /* never ran */
    rt_ctx_release(&c);
    assert_int_equal(rt_wg_wait(&wg, NULL), 0);
    rt_wg_destroy(&wg);
}

static void offload_runs_on_workers_and_honours_context(void **state)
{
    rt_options o = {.threads = 2, .offload_threads = 2};
    assert_int_equal(rt_run(&o, offload_main, NULL), 0);
}

/* ---- mailbox under contention ---- */

static int64_t posted; /* touched only on loop 0 */
static void inc(void *p)
{
    (void)p;
    posted++;
}

static void *poster(void *p)
{
    for (int i = 0; i < 20000; i++)
        rt_post(rt_loop_at(0), inc, NULL);
    return NULL;
}

typedef struct {
    rt_wg *wg;
    int n;
} spawn_arg;

static void remote_spawned(void *p) { rt_wg_done(p); }

static void *spawner(void *p)
{
    spawn_arg *a = p;
    for (int i = 0; i < a->n; i++)
        rt_go_on(rt_loop_at(i % 2), remote_spawned, a->wg);
    return NULL;
}

static void mailbox_main(void *unused)
{
    posted = 0;
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, poster, NULL);
    rt_wg wg;
    rt_wg_init(&wg);
    spawn_arg sa = {&wg, 5000};
    rt_wg_add(&wg, 2 * sa.n);
    pthread_t sp[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&sp[i], NULL, spawner, &sa);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++)
        pthread_join(sp[i], NULL);
    int64_t deadline = bz_now_ns() + 5 * BZ_NS_PER_S;
    while (posted < 80000 && bz_now_ns() < deadline)
        rt_sleep(NULL, BZ_NS_PER_MS);
    assert_int_equal(posted, 80000);
    rt_ctx c;
    rt_ctx_init_timeout(&c, NULL, 5 * BZ_NS_PER_S);
    assert_int_equal(rt_wg_wait(&wg, &c), 0);
    rt_ctx_release(&c);
    rt_wg_destroy(&wg);
}

static void mailbox_under_contention(void **state) { run(2, mailbox_main, NULL); }

/* ---- sockets ---- */

static void echo_conn(void *p)
{
    rt_io *io = p;
    char buf[64];
    ssize_t n;
    while ((n = rt_read(io, buf, sizeof buf, NULL, bz_now_ns() + BZ_NS_PER_S)) > 0)
        rt_write_all(io, buf, (size_t)n, NULL, BZ_NO_DEADLINE);
    rt_io_close(io);
    free(io);
}

static void on_accept(rt_loop *l, int fd, const struct sockaddr *peer, socklen_t pl, void *arg)
{
    (void)l, (void)peer, (void)pl, (void)arg;
    rt_io *io = calloc(1, sizeof *io);
    assert_int_equal(rt_io_open(io, fd), 0);
    rt_go(echo_conn, io);
}

static void client(void *p)
{
    int port = *(int *)p;
    int fd = rt_connect_tcp("127.0.0.1", port, NULL, bz_now_ns() + BZ_NS_PER_S);
    assert_true(fd >= 0);
    rt_io io = {0};
    assert_int_equal(rt_io_open(&io, fd), 0);
    for (int i = 0; i < 100; i++) {
        char msg[32], got[32];
        int n = snprintf(msg, sizeof msg, "ping %d", i);
        assert_int_equal(rt_write_all(&io, msg, (size_t)n, NULL, BZ_NO_DEADLINE), 0);
        size_t have = 0;
        while (have < (size_t)n) {
            ssize_t r = rt_read(&io, got + have, sizeof got - have, NULL, bz_now_ns() + BZ_NS_PER_S);
            assert_true(r > 0);
            have += (size_t)r;
        }
        assert_memory_equal(got, msg, (size_t)n);
    }
    /* a read with a deadline and no data times out */
    char c;
    assert_int_equal(rt_read(&io, &c, 1, NULL, bz_now_ns() + 20 * BZ_NS_PER_MS), -ETIMEDOUT);
    rt_io_close(&io);
}

static void sockets_main(void *unused)
{
    int err = 0;
    rt_listener *L = rt_listen("127.0.0.1:0", on_accept, NULL, &err);
    assert_non_null(L);
    int port = rt_listener_port(L);
    assert_true(port > 0);
    rt_wg wg;
    rt_wg_init(&wg);
    /* clients on both loops, run as joinable coroutines */
    rt_coro *c1 = rt_spawn_joinable(rt_loop_at(0), client, &port);
    rt_coro *c2 = rt_spawn_joinable(rt_loop_at(1), client, &port);
    assert_int_equal(rt_join(c1, NULL), 0);
    assert_int_equal(rt_join(c2, NULL), 0);
    /* connecting to a closed port fails cleanly */
    rt_listener_close(L);
    rt_sleep(NULL, 10 * BZ_NS_PER_MS);
    int fd = rt_connect_tcp("127.0.0.1", port, NULL, bz_now_ns() + BZ_NS_PER_S);
    assert_int_equal(fd, -ECONNREFUSED);
    rt_wg_destroy(&wg);
}

static void listener_accepts_and_io_parks(void **state) { run(2, sockets_main, NULL); }

/* ---- batched reads and writes (rt/batch.c) ---- */

/* Many connections each making a call per turn: with io_uring (the
 * default where the kernel has it) the turn's calls go to the kernel
 * together, several per io_uring_enter, and every byte arrives in order;
 * BAZAAR_IO_BATCH=off, the same traffic makes no batched call. */
#define BPAIRS 32
#define BROUNDS 300

typedef struct {
    rt_io io;
    int failed;
} bconn;

static void batch_echo(void *p)
{
    bconn *c = p;
    char b[64];
    for (;;) {
        ssize_t n = rt_read(&c->io, b, sizeof b, NULL, bz_now_ns() + 5 * BZ_NS_PER_S);
        if (n <= 0 || rt_write_all(&c->io, b, (size_t)n, NULL, bz_now_ns() + 5 * BZ_NS_PER_S) != 0)
            break;
    }
    rt_io_close(&c->io);
}

static void batch_client(void *p)
{
    bconn *c = p;
    for (int i = 0; i < BROUNDS && !c->failed; i++) {
        char msg[32], got[32];
        int n = snprintf(msg, sizeof msg, "ping %d", i);
        if (rt_write_all(&c->io, msg, (size_t)n, NULL, bz_now_ns() + 5 * BZ_NS_PER_S) != 0) {
            c->failed = 1;
            break;
        }
        size_t have = 0;
        while (have < (size_t)n) {
            ssize_t r = rt_read(&c->io, got + have, sizeof got - have, NULL, bz_now_ns() + 5 * BZ_NS_PER_S);
            if (r <= 0) {
                c->failed = 2;
                break;
            }
            have += (size_t)r;
        }
        if (have == (size_t)n && memcmp(got, msg, (size_t)n) != 0)
            c->failed = 3;
    }
    rt_io_close(&c->io);
}

typedef struct {
    uint64_t flushes, ops;
    int failed;
} batch_res;

static void batch_main(void *p)
{
    batch_res *res = p;
    static bconn srv[BPAIRS], cli[BPAIRS];
    rt_coro *co[2 * BPAIRS];
    uint64_t f0, o0;
    rt__batch_counts(rt_loop_current(), &f0, &o0);
    for (int i = 0; i < BPAIRS; i++) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        memset(&srv[i], 0, sizeof srv[i]);
        memset(&cli[i], 0, sizeof cli[i]);
        assert_int_equal(rt_io_open(&srv[i].io, sv[0]), 0);
        assert_int_equal(rt_io_open(&cli[i].io, sv[1]), 0);
        co[2 * i] = rt_spawn_joinable(rt_loop_current(), batch_echo, &srv[i]);
        co[2 * i + 1] = rt_spawn_joinable(rt_loop_current(), batch_client, &cli[i]);
    }
    for (int i = 0; i < 2 * BPAIRS; i++)
        assert_int_equal(rt_join(co[i], NULL), 0);
    uint64_t f1, o1;
    rt__batch_counts(rt_loop_current(), &f1, &o1);
    res->flushes = f1 - f0;
    res->ops = o1 - o0;
    for (int i = 0; i < BPAIRS; i++)
        res->failed += cli[i].failed;
}

static void batched_calls_share_a_system_call(void **state)
{
    (void)state;
    batch_res r = {0};
    run(1, batch_main, &r);
    printf("# io_batch %s: %d connections x %d round trips, %llu calls in %llu io_uring_enter\n", rt_batch_name(),
           BPAIRS, BROUNDS, (unsigned long long)r.ops, (unsigned long long)r.flushes);
    assert_int_equal(r.failed, 0);
    if (strcmp(rt_batch_name(), "io_uring") != 0) {
        printf("# this kernel gives no io_uring: the calls were plain\n");
        assert_int_equal(r.ops, 0);
        return;
    }
    /* 4 calls per round trip (two writes, two reads), most of them batched */
    assert_true(r.ops >= (uint64_t)BPAIRS * BROUNDS * 2);
    assert_true(r.flushes * 8 <= r.ops);

    setenv("BAZAAR_IO_BATCH", "off", 1);
    batch_res off = {0};
    run(1, batch_main, &off);
    assert_string_equal(rt_batch_name(), "off");
    assert_int_equal(off.failed, 0);
    assert_int_equal(off.ops, 0);
    setenv("BAZAAR_IO_BATCH", "bogus", 1);
    rt_options o = {.threads = 1};
    assert_int_equal(rt_run(&o, batch_main, &off), -EINVAL);
    unsetenv("BAZAAR_IO_BATCH");
}

/* A call still queued when another coroutine closes its fd ends -EBADF
 * and is never made: the fd number, reused at once by a new socket, must
 * not be read from. */
typedef struct {
    rt_io io;
    ssize_t got;
    int nv[2], reused;
} bq_reader;

static void bq_read(void *p)
{
    bq_reader *r = p;
    char b[8];
    r->got = rt_read(&r->io, b, sizeof b, NULL, bz_now_ns() + BZ_NS_PER_S);
}

/* Runs in the same turn, after bq_read queued its call: closes the fd and
 * takes its number again at once, with a byte to read behind it. */
static void bq_close(void *p)
{
    bq_reader *r = p;
    int fd = r->io.fd;
    rt_io_close(&r->io);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, r->nv), 0);
    r->reused = r->nv[0] == fd ? 0 : r->nv[1] == fd ? 1 : -1;
    if (r->reused >= 0)
        assert_int_equal(write(r->nv[1 - r->reused], "z", 1), 1);
}

static void batch_close_main(void *p)
{
    int *peeked = p;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(write(sv[1], "a", 1), 1); /* readable: the read is queued, not waited for */
    bq_reader r = {.got = 1};
    assert_int_equal(rt_io_open(&r.io, sv[0]), 0);
    rt_coro *a = rt_spawn_joinable(rt_loop_current(), bq_read, &r);
    rt_coro *b = rt_spawn_joinable(rt_loop_current(), bq_close, &r);
    assert_int_equal(rt_join(b, NULL), 0);
    assert_int_equal(rt_join(a, NULL), 0);
    assert_int_equal(r.got, -EBADF);
    assert_true(r.reused >= 0); /* the lowest free number: the one just closed */
    char c; /* the new socket's byte is still there */
    *peeked = (int)recv(r.nv[r.reused], &c, 1, MSG_PEEK | MSG_DONTWAIT);
    close(r.nv[0]);
    close(r.nv[1]);
    close(sv[1]);
}

static void batched_call_of_a_closed_fd_is_never_made(void **state)
{
    (void)state;
    int peeked = 0;
    run(1, batch_close_main, &peeked);
    assert_int_equal(peeked, 1);
}

/* ---- connection gate ---- */

static pthread_mutex_t gated_lk = PTHREAD_MUTEX_INITIALIZER;
static int gated_fds[16];
static int ngated;

static void on_gated_accept(rt_loop *l, int fd, const struct sockaddr *peer, socklen_t pl, void *arg)
{
    (void)l, (void)peer, (void)pl, (void)arg;
    pthread_mutex_lock(&gated_lk);
    assert_true(ngated < 16);
    gated_fds[ngated++] = fd;
    pthread_mutex_unlock(&gated_lk);
}

static int gated_count(void)
{
    pthread_mutex_lock(&gated_lk);
    int n = ngated;
    pthread_mutex_unlock(&gated_lk);
    return n;
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* loopback: the kernel completes the handshake into the backlog */
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void gate_main(void *unused)
{
    int err = 0;
    rt_gate *g = rt_gate_new(3);
    rt_listener *L = rt_listen_gated("127.0.0.1:0", on_gated_accept, NULL, g, &err);
    assert_non_null(L);
    int port = rt_listener_port(L);
    int cl[6];
    for (int i = 0; i < 6; i++)
        cl[i] = dial(port);
    rt_sleep(NULL, 100 * BZ_NS_PER_MS);
    /* both loops' sockets stopped at the shared cap */
    assert_int_equal(gated_count(), 3);
    assert_int_equal(rt_gate_count(g), 3);
    /* one closes: exactly one more is accepted, on whichever loop */
    pthread_mutex_lock(&gated_lk);
    close(gated_fds[0]);
    pthread_mutex_unlock(&gated_lk);
    rt_gate_leave(g);
    rt_sleep(NULL, 100 * BZ_NS_PER_MS);
    assert_int_equal(gated_count(), 4);
    assert_int_equal(rt_gate_count(g), 3);
    /* closing the listener while its sockets wait on the gate, then
     * giving slots back, touches nothing freed (ASan) */
    rt_listener_close(L);
    rt_sleep(NULL, 10 * BZ_NS_PER_MS);
    for (int i = 1; i < gated_count(); i++) {
        close(gated_fds[i]);
        rt_gate_leave(g);
    }
    rt_sleep(NULL, 10 * BZ_NS_PER_MS);
    assert_int_equal(gated_count(), 4);
    assert_int_equal(rt_gate_count(g), 0);
    for (int i = 0; i < 6; i++)
        close(cl[i]);
    rt_gate_unref(g);
}

static void gate_caps_accept_across_loops(void **state) { run(2, gate_main, NULL); }

/* ---- guard page ---- */

#ifndef UNDER_SANITIZER
static volatile int depth_limit = 1 << 30; /* opaque to the compiler */

static int recurse(int depth)
{
    volatile char pad[512];
    pad[0] = (char)depth;
    if (depth > depth_limit)
        return 0;
    return recurse(depth + 1) + pad[0];
}

static void overflow_main(void *unused) { recurse(0); }
#endif

static void guard_page_overflow_is_reported(void **state)
{
#ifdef UNDER_SANITIZER
    skip(); /* ASan reports stack overflows itself */
#else
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        rt_options o = {.threads = 1, .stack_size = 64 * 1024};
        rt_run(&o, overflow_main, NULL);
        _exit(0); /* not reached */
    }
    close(fds[1]);
    char buf[512] = {0};
    size_t have = 0;
    ssize_t n;
    while ((n = read(fds[0], buf + have, sizeof buf - 1 - have)) > 0)
        have += (size_t)n;
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGSEGV);
    assert_non_null(strstr(buf, "coroutine stack overflow"));
#endif
}

/* ---- a pooled coroutine gives back the stack a deep use touched ---- */

static uintptr_t deep_top;        /* an address near the top of the deep coroutine's stack */
static volatile int deep_done;

/* Writes 96 KiB of stack, as SQLite's commit path clears 32 KiB. */
static __attribute__((noinline)) void touch_deep(void)
{
    char buf[96 * 1024];
    memset(buf, 1, sizeof buf);
    __asm__ volatile("" : : "r"(buf) : "memory");
}

static void deep_coro(void *unused)
{
    char probe;
    deep_top = (uintptr_t)&probe;
    touch_deep();
    deep_done = 1;
}

static void shallow_release_coro(void *unused)
{
    char probe;
    deep_top = (uintptr_t)&probe;
    rt_stack_release();
    deep_done = 1;
}

/* Resident pages in [lo, hi), page-aligned inwards. */
static int resident_pages(uintptr_t lo, uintptr_t hi)
{
    uintptr_t ps = (uintptr_t)sysconf(_SC_PAGESIZE);
    lo = (lo + ps - 1) & ~(ps - 1);
    hi &= ~(ps - 1);
    unsigned char vec[64];
    size_t n = (hi - lo) / ps;
    assert_true(n > 0 && n <= sizeof vec);
    assert_int_equal(mincore((void *)lo, hi - lo, vec), 0);
    int r = 0;
    for (size_t i = 0; i < n; i++)
        r += vec[i] & 1;
    return r;
}

/* rt_options.stack_warm for the case below: deep coroutines a loop pools with their pages. */
#define WARM 128
#define MANY (WARM + 8)
static uintptr_t many_top[MANY];
static volatile int many_deep, many_go;

static void many_coro(void *p)
{
    int i = (int)(intptr_t)p;
    char probe;
    many_top[i] = (uintptr_t)&probe;
    touch_deep();
    many_deep++;
    while (!many_go)
        rt_yield(); /* all MANY are alive at once: MANY distinct stacks */
}

__attribute__((unused)) /* not run under a sanitizer */ static void deep_main(void *unused)
{
    deep_done = 0;
    rt_go(deep_coro, NULL);
    while (!deep_done)
        rt_yield();
    rt_yield(); /* it has returned to the loop, which pooled it */
    /* Pooled right after a deep use, its pages stay: the next request on
     * this loop reuses them without a page fault or a madvise (issue 18:
     * trimming every release cost one of each per request). */
    assert_true(resident_pages(deep_top - 90 * 1024, deep_top - 24 * 1024) > 8);
    /* The next coroutine reuses that stack, deep again, unharmed. */
    deep_done = 0;
    rt_go(deep_coro, NULL);
    while (!deep_done)
        rt_yield();
    rt_yield();
    /* MANY deep coroutines pooled one after another: the pool keeps the
     * pages of the WARM released last and gives back the rest (the part
     * below the kept top, 12 KiB), so what pooled stacks hold stays
     * bounded however many went deep. */
    many_deep = many_go = 0;
    for (int i = 0; i < MANY; i++)
        rt_go(many_coro, (void *)(intptr_t)i);
    while (many_deep < MANY)
        rt_yield();
    many_go = 1;
    for (int k = 0; k < 4; k++)
        rt_yield(); /* they finish in start order and are pooled */
    int trimmed = 0;
    for (int i = 0; i < MANY; i++)
        if (resident_pages(many_top[i] - 90 * 1024, many_top[i] - 24 * 1024) == 0)
            trimmed++;
    assert_int_equal(trimmed, MANY - WARM);
    /* The first released are the ones given back. */
    for (int i = 0; i < MANY - WARM; i++)
        assert_int_equal(resident_pages(many_top[i] - 90 * 1024, many_top[i] - 24 * 1024), 0);
    /* A coroutine that reuses a warm stack and is about to park for long
     * at a shallow depth (a slow client) gives the deep pages back. */
    deep_done = 0;
    rt_go(deep_coro, NULL);
    while (!deep_done)
        rt_yield();
    rt_yield();
    uintptr_t top = deep_top;
    assert_true(resident_pages(top - 90 * 1024, top - 24 * 1024) > 8);
    deep_done = 0;
    rt_go(shallow_release_coro, NULL); /* the same stack: the pool is LIFO */
    while (!deep_done)
        rt_yield();
    assert_true(deep_top > top - 1024 && deep_top < top + 1024);
    assert_int_equal(resident_pages(top - 90 * 1024, top - 24 * 1024), 0);
    /* A warm stack nobody reuses for a second is given back by the
     * loop's tick: the pool holds the last second's working set. */
    deep_done = 0;
    rt_go(deep_coro, NULL);
    while (!deep_done)
        rt_yield();
    rt_yield();
    top = deep_top;
    assert_true(resident_pages(top - 90 * 1024, top - 24 * 1024) > 8);
    rt_sleep(NULL, 1500 * BZ_NS_PER_MS);
    /* (Or the pool's decay unmapped the whole stack: MANY is past its
     * floor.  mincore fails with ENOMEM on an unmapped range.) */
    uintptr_t ps = (uintptr_t)sysconf(_SC_PAGESIZE);
    unsigned char vec[1];
    if (mincore((void *)((top - 24 * 1024) & ~(ps - 1)), ps, vec) == 0)
        assert_int_equal(resident_pages(top - 90 * 1024, top - 24 * 1024), 0);
    else
        assert_int_equal(errno, ENOMEM);
}

static void pooled_stack_is_trimmed_after_a_deep_use(void **state)
{
#ifdef UNDER_SANITIZER
    skip(); /* ASan's frames and fake stacks change what a use touches */
#else
    rt_options o = {.threads = 1, .stack_warm = WARM}; /* the warm-stack cache on (off by default) */
    assert_int_equal(rt_run(&o, deep_main, NULL), 0);
#endif
}

/* ---- the coroutine pool follows the recent load ---- */

#define BURST 600
static atomic_int burst_done;

static void burst_coro(void *arg)
{
    (void)arg;
    rt_sleep(NULL, 20 * BZ_NS_PER_MS); /* all BURST alive at once */
    atomic_fetch_add(&burst_done, 1);
}

static int64_t pooled_now(void)
{
    rt_sleep(NULL, 150 * BZ_NS_PER_MS); /* a stats tick publishes the counts */
    return rt_loop_stats_read(0).coros_pooled;
}

static void pool_main(void *arg)
{
    (void)arg;
    atomic_store(&burst_done, 0);
    for (int i = 0; i < BURST; i++)
        rt_go(burst_coro, NULL);
    while (atomic_load(&burst_done) < BURST)
        rt_sleep(NULL, 5 * BZ_NS_PER_MS);
    int64_t after_burst = pooled_now();
    /* The burst's coroutines are pooled for the next one... */
    assert_true(after_burst >= BURST - 10);
    /* ...while a steady trickle of spawns does not take the pool's
     * surplus away at once: the first decay gives back half of it. */
    rt_sleep(NULL, 1100 * BZ_NS_PER_MS);
    int64_t one = pooled_now();
    /* the decay runs about once a second; a loaded machine (TSan beside
     * CI's other lanes) can put it a little later */
    for (int i = 0; i < 20 && one >= after_burst; i++)
        one = pooled_now();
    assert_true(one < after_burst);
    assert_true(one > 64);
    /* Unused for seconds, the pool shrinks toward its floor: what stays
     * mapped follows the recent load, not the highest it ever reached. */
    rt_sleep(NULL, 4000 * BZ_NS_PER_MS);
    int64_t later = pooled_now();
    assert_true(later < one);
    assert_true(later <= 64 + 64);
    assert_true(later >= 64);
    /* A new burst maps what it needs again. */
    atomic_store(&burst_done, 0);
    for (int i = 0; i < BURST; i++)
        rt_go(burst_coro, NULL);
    while (atomic_load(&burst_done) < BURST)
        rt_sleep(NULL, 5 * BZ_NS_PER_MS);
    assert_true(pooled_now() >= BURST - 10);
}

static void coroutine_pool_follows_recent_load(void **state)
{
    (void)state;
    rt_options o = {.threads = 1};
    assert_int_equal(rt_run(&o, pool_main, NULL), 0);
}

/* ---- the coroutine dump (rt/dump.c) ---- */

typedef struct {
    rt_chan ch;
    rt_mutex mu;
    rt_waitq q;
    pthread_mutex_t qlk;
    rt_wg wg;
    rt_coro_info seen[64];
    int n;
} dump_arg;

static void dump_chan_waiter(void *p)
{
    dump_arg *d = p;
    rt_note prev = rt_note_set("test", "waiting on the channel");
    void *v;
    assert_int_equal(rt_chan_recv(&d->ch, &v, NULL, BZ_NO_DEADLINE), -EPIPE);
    rt_note_restore(prev);
    rt_wg_done(&d->wg);
}

static void dump_mutex_waiter(void *p)
{
    dump_arg *d = p;
    assert_int_equal(rt_mutex_lock(&d->mu, NULL), 0);
    rt_mutex_unlock(&d->mu);
    rt_wg_done(&d->wg);
}

static void dump_named_waiter(void *p)
{
    dump_arg *d = p;
    pthread_mutex_lock(&d->qlk);
    rt_park_reason("pool wait (test)");
    assert_int_equal(rt_waitq_wait(&d->q, &d->qlk, NULL, BZ_NO_DEADLINE, NULL), 0);
    pthread_mutex_unlock(&d->qlk);
    /* The name was for that park only: the next one is the runtime's. */
    assert_int_equal(rt_sleep(NULL, BZ_NS_PER_MS), 0);
    rt_wg_done(&d->wg);
}

static void dump_collect(const rt_coro_info *in, void *arg)
{
    dump_arg *d = arg;
    if (d->n < 64)
        d->seen[d->n++] = *in;
}

static const rt_coro_info *dump_find(dump_arg *d, const char *why)
{
    for (int i = 0; i < d->n; i++)
        if (d->seen[i].why && !strcmp(d->seen[i].why, why))
            return &d->seen[i];
    return NULL;
}

static void dump_main(void *p)
{
    dump_arg *d = p;
    rt_chan_init(&d->ch, 1);
    rt_mutex_init(&d->mu);
    pthread_mutex_init(&d->qlk, NULL);
    rt_wg_init(&d->wg);
    rt_wg_add(&d->wg, 3);
    assert_int_equal(rt_mutex_lock(&d->mu, NULL), 0);
    rt_go_on(rt_loop_at(1), dump_chan_waiter, d);
    rt_go_on(rt_loop_at(1), dump_mutex_waiter, d);
    rt_go(dump_named_waiter, d);
    rt_sleep(NULL, 50 * BZ_NS_PER_MS);
    assert_int_equal(rt_coro_dump(NULL, dump_collect, d), 0);
    const rt_coro_info *c = dump_find(d, "channel receive");
    assert_non_null(c);
    assert_int_equal(c->loop, 1);
    assert_int_equal(c->state, 1);
    assert_string_equal(c->note.what, "test");
    assert_string_equal(c->note.detail, "waiting on the channel");
    assert_true(c->parked_ns >= 40 * BZ_NS_PER_MS && c->age_ns >= c->parked_ns);
    const rt_coro_info *m = dump_find(d, "mutex");
    assert_non_null(m);
    assert_int_equal(m->loop, 1);
    assert_null(m->note.what);
    const rt_coro_info *w = dump_find(d, "pool wait (test)");
    assert_non_null(w);
    assert_int_equal(w->loop, 0);
    /* The caller is in the dump too, waiting for the loops' answers. */
    assert_non_null(dump_find(d, "semaphore"));
    /* Let them go; a second dump no longer sees them. */
    rt_chan_close(&d->ch);
    rt_mutex_unlock(&d->mu);
    pthread_mutex_lock(&d->qlk);
    rt_waitq_wake_one(&d->q, 0, NULL);
    pthread_mutex_unlock(&d->qlk);
    assert_int_equal(rt_wg_wait(&d->wg, NULL), 0);
    d->n = 0;
    assert_int_equal(rt_coro_dump(NULL, dump_collect, d), 0);
    assert_null(dump_find(d, "channel receive"));
    assert_null(dump_find(d, "mutex"));
    assert_null(dump_find(d, "pool wait (test)"));
    rt_wg_destroy(&d->wg);
    rt_mutex_destroy(&d->mu);
    rt_chan_destroy(&d->ch);
    pthread_mutex_destroy(&d->qlk);
}

static void coroutine_dump_names_every_wait(void **state)
{
    (void)state;
    dump_arg *d = calloc(1, sizeof *d);
    run(2, dump_main, d);
    free(d);
}

/* A loop busy past the caller's deadline: the dump gives up, and the
 * late loop's answer is dropped (the callback never runs after return). */
static _Atomic int spin_started;
static void dump_spinner(void *p)
{
    (void)p;
    atomic_store(&spin_started, 1);
    int64_t until = bz_now_ns() + 300 * BZ_NS_PER_MS;
    while (bz_now_ns() < until) {
    }
}

static void dump_sleeper(void *p)
{
    (void)p;
    rt_sleep(NULL, 2 * BZ_NS_PER_S); /* parked on loop 1 when the late job runs */
}

static void dump_late_collect(const rt_coro_info *in, void *arg)
{
    if (in->loop == 1)
        atomic_fetch_add((_Atomic int *)arg, 1);
}

static void dump_timeout_main(void *p)
{
    (void)p;
    static _Atomic int late;
    atomic_store(&late, 0);
    atomic_store(&spin_started, 0);
    rt_go_on(rt_loop_at(1), dump_sleeper, NULL);
    rt_go_on(rt_loop_at(1), dump_spinner, NULL);
    while (!atomic_load(&spin_started))
        rt_sleep(NULL, BZ_NS_PER_MS);
    rt_ctx c;
    rt_ctx_init_timeout(&c, NULL, 50 * BZ_NS_PER_MS);
    /* loop 0 answers at once; loop 1 is spinning */
    assert_int_equal(rt_coro_dump(&c, dump_late_collect, (void *)&late), -ETIMEDOUT);
    rt_ctx_release(&c);
    rt_sleep(NULL, 400 * BZ_NS_PER_MS); /* the spinner is done and the job ran */
    assert_int_equal(atomic_load(&late), 0);
}

static void coroutine_dump_gives_up_on_a_busy_loop(void **state)
{
    (void)state;
    run(2, dump_timeout_main, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(coroutine_dump_names_every_wait),
        cmocka_unit_test(coroutine_dump_gives_up_on_a_busy_loop),
        cmocka_unit_test(context_switch_preserves_registers_and_fp_state),
        cmocka_unit_test(hundred_thousand_coroutines),
        cmocka_unit_test(timers_fire_in_deadline_order),
        cmocka_unit_test(raw_timers_in_order_and_stoppable),
        cmocka_unit_test(timer_callbacks_see_their_deadline_passed),
        cmocka_unit_test(loop_log_batch_is_written_when_due),
        cmocka_unit_test(cancel_from_another_thread_wakes_waits),
        cmocka_unit_test(nested_context_deadlines),
        cmocka_unit_test(cancel_after_an_unobserved_deadline_is_a_timeout),
        cmocka_unit_test(mutex_semaphore_waitgroup_across_loops),
        cmocka_unit_test(channel_fan_in_across_loops),
        cmocka_unit_test(offload_runs_on_workers_and_honours_context),
        cmocka_unit_test(mailbox_under_contention),
        cmocka_unit_test(listener_accepts_and_io_parks),
        cmocka_unit_test(batched_calls_share_a_system_call),
        cmocka_unit_test(batched_call_of_a_closed_fd_is_never_made),
        cmocka_unit_test(gate_caps_accept_across_loops),
        cmocka_unit_test(guard_page_overflow_is_reported),
        cmocka_unit_test(pooled_stack_is_trimmed_after_a_deep_use),
        cmocka_unit_test(coroutine_pool_follows_recent_load),
    };
    return cmocka_run_group_tests_name("rt", tests, NULL, NULL);
}

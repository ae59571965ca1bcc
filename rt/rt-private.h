/*
 * rt/rt-private.h — runtime internals shared by the rt/ sources.  Nothing
 * outside rt/ includes this file.
 */
#ifndef RT_PRIVATE_H
#define RT_PRIVATE_H

#include <bazaar/rt.h>

#include <stdatomic.h>
#include <sys/socket.h>

/* ---- sanitizer fiber annotations ----------------------------------------- */
#if defined(__SANITIZE_ADDRESS__)
#define RT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RT_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define RT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RT_TSAN 1
#endif
#endif

/* ---- machine context --------------------------------------------------------
 * The assembly switch saves the callee-saved registers (and the FP control
 * state the ABI says is preserved) on the old stack and stores the stack
 * pointer; resuming loads them back.  ucontext is the portable fallback
 * (much slower: it makes a sigprocmask system call per switch). */
#if (defined(__x86_64__) || defined(__aarch64__)) && !defined(RT_UCONTEXT)
#define RT_ASM_SWITCH 1
typedef struct rt__mctx { void *sp; } rt__mctx;
#else
#include <ucontext.h>
typedef struct rt__mctx { ucontext_t uc; } rt__mctx;
#endif

/* Prepares m to run entry(arg) on the stack [lo, lo+size). */
void rt__mctx_make(rt__mctx *m, void *lo, size_t size, void (*entry)(void *), void *arg);
/* Saves the running context in from and resumes to. */
void rt__mctx_swap(rt__mctx *from, rt__mctx *to);

/* ---- coroutines ------------------------------------------------------------- */
enum { RT_RUNNING = 0, RT_PARKED = 1, RT_WOKEN = 2 };

struct rt_coro {
    rt__mctx mctx;
    rt_loop *loop;          /* owner for life */
    rt_fn fn;
    void *arg;
    rt_coro *next;          /* run queue, mailbox or free list */
    _Atomic int wstate;     /* RT_RUNNING / RT_PARKED / RT_WOKEN */
    int wake_result;
    rt_timer timer;         /* park deadline */
    /* context waiter list (guarded by the context's lock) */
    rt_ctx *wait_ctx;
    rt_coro *ctx_prev, *ctx_next;
    /* rt_waitq link (guarded by the owner's lock) */
    rt_coro *wq_prev, *wq_next;
    bool wq_linked;
    void *wq_val;           /* value slot for channels */
    /* stack mapping: guard page at the bottom */
    char *map;
    size_t map_size;
    char *stack_lo;
    size_t stack_size;
    /* Stack pages kept for reuse: mark words on the page RT_STACK_KEEP
     * below the top and the lowest stack pointer seen at a park tell
     * whether this use went deeper; if so the pages below the mark page
     * are given back (rt/coro.c, stack_trim) — not at once: a pooled
     * coroutine that went deep waits in the loop's warm list (oldest
     * first) until RT_STACK_WARM newer deep ones are pooled. */
    uint64_t *stack_mark;
    char *min_sp;
    bool warm;          /* pooled with its deep pages, on the warm list */
    int64_t warm_since; /* bz_now_ns() when it was pooled so */
    rt_coro *warm_prev, *warm_next;
    /* lifecycle */
    bool exited;
    bool joinable;
    rt_wg *join_wg;         /* joinable coroutines only */
    void *local;
    rt_coro *all_prev, *all_next; /* every coroutine of the loop, for teardown */
    /* What it is waiting on, for the coroutine dump (rt/dump.c): `why`
     * names the park in progress (first namer wins, cleared when rt_park
     * returns), `note` the work it is inside (rt_note_set).  Plain
     * stores, read only on the owner loop's thread. */
    const char *why;
    int why_fd;
    rt_note note;
    int64_t born, parked_at; /* the loop's cached clock */
    uint64_t id;            /* per loop, from 1 */
#ifdef RT_ASAN
    void *asan_fake;
#endif
#ifdef RT_TSAN
    void *tsan_fiber;
#endif
};

/* ---- loops ----------------------------------------------------------------- */

/* Per-loop statistics (stats.c).  The owner loop's lag tick measures how
 * late it fires and publishes the loop's counters here; other threads
 * (a scrape) only read, with relaxed atomics — so the hot paths that keep
 * the counters (coroutine start/exit, timers) stay plain stores. */
typedef struct rt__loop_stats {
    rt_timer tick;
    _Atomic int64_t live, pooled, timers, last_tick, lag_last;
    bz_hist lag;
} rt__loop_stats;
typedef struct rt__post {
    rt_fn fn;
    void *arg;
    struct rt__post *next;
} rt__post;

/* A read or writev that batch.c makes at the end of the loop's turn, on
 * the stack of the coroutine parked for it (rt__io_call). */
typedef struct rt__bop {
    struct rt__bop *next;
    rt_coro *co;
    rt_io *io;
    int fd;
    void *buf;          /* read: into buf, up to len */
    size_t len;
    struct iovec *iov;  /* writev (iov set), else read */
    int iovcnt;
    struct msghdr msg;  /* the writev as the sendmsg batch.c submits */
} rt__bop;
typedef struct rt__batch rt__batch;

struct rt_loop {
    int index;
    pthread_t thread;
    int epfd;
    int evfd;               /* mailbox doorbell */
    rt_io evio;             /* evfd as an rt_io, for dispatch */
    rt__mctx sched;         /* the scheduler's own context (thread stack) */
    rt_coro *current;
    int64_t now;            /* cached bz_now_ns(), see rt_now() */
    rt_coro *runq_head, *runq_tail;
    /* timers: binary min-heap on deadline */
    rt_timer **heap;
    size_t heap_len, heap_cap;
    /* mailbox: filled by other threads */
    pthread_mutex_t mb_lock;
    rt_coro *mb_coros_head, *mb_coros_tail;
    rt__post *mb_posts_head, *mb_posts_tail;
    atomic_bool mb_rung;    /* doorbell rung, mailbox not drained yet */
    /* coroutine stacks */
    rt_coro *free_coros;
    size_t nfree;
    size_t nfree_low;       /* the fewest pooled since the last decay (coro.c) */
    int64_t decay_at;       /* when the pool next gives back what it did not need */
    rt_coro *warm_head, *warm_tail; /* pooled deep coroutines, oldest first */
    size_t nwarm;
    size_t ncoros;          /* mapped: live, joinable or free */
    rt__loop_stats st;      /* stats.c: lag tick and published counters */
    rt__batch *batch;       /* batch.c: the turn's reads and writes, or NULL */
    bool batch_many;        /* the running batch has more than one coroutine:
                               only then can calls share an io_uring_enter */
    rt_coro *all;           /* every coroutine (live, joinable or free) */
    uint64_t next_id;       /* coroutine ids (rt/dump.c) */
    char *altstack;         /* sigaltstack for the guard-page report */
#ifdef RT_ASAN
    const void *sched_stack_lo;
    size_t sched_stack_size;
#endif
#ifdef RT_TSAN
    void *tsan_sched_fiber;
#endif
};

extern _Thread_local rt_loop *rt__cur;

/* Appends a runnable coroutine to its loop (same thread or mailbox). */
void rt__schedule(rt_coro *co);
/* Switches from the running coroutine back to the scheduler. */
void rt__to_scheduler(void);
/* Runs co until it parks or exits (scheduler side). */
void rt__resume(rt_loop *l, rt_coro *co);
rt_coro *rt__coro_new(rt_loop *l, rt_fn fn, void *arg);
void rt__coro_free_all(rt_loop *l);
void rt__coro_release(rt_coro *co);
/* Trims the pooled coroutines that kept a deep use's stack pages and have
 * not been reused for a second (the stats tick calls it every 100 ms). */
void rt__coro_trim_cold(rt_loop *l, int64_t now);
void rt__timers_run(rt_loop *l, int64_t now);
int64_t rt__timers_next(rt_loop *l);
void rt__io_dispatch(rt_loop *l, rt_io *io, uint32_t ev);
void rt__ctx_add_waiter(rt_ctx *c, rt_coro *co, int *err);
void rt__ctx_remove_waiter(rt_coro *co);
void rt__offload_start(int nthreads);
/* Arms l's lag tick (stats.c); call on l's thread before it runs. */
void rt__stats_start(rt_loop *l);
void rt__offload_stop(void);
void rt__signals_install_guard(rt_loop *l);
void rt__signals_remove_guard(rt_loop *l);
int rt__signals_start(rt_loop *l0);
void rt__signals_stop(void);
size_t rt__stack_size(void);
/* Finished coroutines (every loop, since start) whose use went below the
 * part of the stack a pooled coroutine keeps committed (RT_STACK_KEEP):
 * each costs a madvise when its pages are trimmed and page faults when
 * they are touched again.  For tests that hold a per-request path to
 * staying shallow (issue 18). */
uint64_t rt__coro_deep_exits(void);
int rt__stack_warm(void); /* rt_options.stack_warm */

/* Batched reads and writes (batch.c).  rt__batch_probe decides, once per
 * rt_run, whether the loops batch (0, or -errno when RT_BATCH_RING was
 * asked for and cannot be had); rt__batch_init sets up l->batch on the
 * loop's own thread (NULL: plain calls).  rt__io_call makes op's read or
 * writev — queued with the batch, parking until rt__batch_flush (the
 * loop, after a batch of coroutines ran) made it, when the running
 * coroutine can batch; else at once — and clears the io's readiness flag
 * as the result says: bytes, or -errno.  rt__batch_forget ends io's
 * queued calls with -EBADF (rt_io_close, rt_io_detach: the fd must not be
 * used after). */
int rt__batch_probe(void);
void rt__batch_init(rt_loop *l);
void rt__batch_fini(rt_loop *l);
ssize_t rt__io_call(rt__bop *op);
void rt__batch_flush(rt_loop *l);
void rt__batch_forget(rt_loop *l, const rt_io *io);
void rt__batch_counts(const rt_loop *l, uint64_t *flushes, uint64_t *ops);

/* TLS sessions (tls.c): the parked reads and writes rt_read and
 * rt_writev_all hand over when io->tls is set, and freeing the session
 * (rt_io_close). */
ssize_t rt__tls_read(rt_io *io, void *buf, size_t n, rt_ctx *ctx, int64_t deadline);
int rt__tls_writev_all(rt_io *io, struct iovec *iov, int iovcnt, rt_ctx *ctx, int64_t deadline);
void rt__tls_free(rt_io *io);

/* waitq helpers (caller holds the owner's lock) */
void rt__wq_push(rt_waitq *q, rt_coro *co);
rt_coro *rt__wq_pop(rt_waitq *q);
void rt__wq_remove(rt_waitq *q, rt_coro *co);

/* Names the park about to happen, unless a caller named it already. */
static inline void rt__why(rt_coro *co, const char *why)
{
    if (!co->why)
        co->why = why;
}

/* Aborts with a message: misuse of the runtime (a bug, not bad input). */
_Noreturn void rt__panic(const char *msg);

#endif

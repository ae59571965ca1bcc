/*
 * rt/rt.h — the runtime: event loops, coroutines, timers, contexts,
 * cross-thread wake-ups and blocking offload.
 *
 * The model (DESIGN.md, Runtime):
 *   - rt_run() starts `threads` event loops, one per thread, each with its
 *     own epoll set, timer heap and run queue.  Loop 0 runs on the calling
 *     thread.  rt_run returns once the main coroutine returns.
 *   - Work runs on stackful coroutines (mmap'd stacks, a PROT_NONE guard
 *     page under each: an overflow is a clean crash report).  A coroutine
 *     belongs to one loop for life.  Code that would block — a read, a
 *     sleep, a lock, a pool — *parks* the coroutine instead; the loop runs
 *     others meanwhile.  So handlers read straight through, like Go.
 *   - Every wait takes a context (rt_ctx) and ends early with ECANCELED
 *     when the context is cancelled, or ETIMEDOUT when its deadline (or
 *     the wait's own deadline) passes.
 *   - Any thread may wake a parked coroutine; wake-ups to another loop go
 *     through that loop's mailbox (an eventfd plus a locked queue).
 *
 * Errors: functions return 0 or a negative errno (-ECANCELED, -ETIMEDOUT,
 * -EPIPE, ...), except where documented otherwise.  Allocation failure of
 * runtime structures aborts the process.
 */
#ifndef RT_RT_H
#define RT_RT_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <bazaar/clock.h>
#include <bazaar/metrics.h>

#pragma GCC visibility push(default)

typedef struct rt_loop rt_loop;
typedef struct rt_coro rt_coro;
typedef struct rt_ctx rt_ctx;
typedef void (*rt_fn)(void *arg);

/* ---- lifecycle ------------------------------------------------------------ */

typedef struct rt_options {
    int threads;          /* event loops; 0 = number of cores */
    size_t stack_size;    /* per coroutine, guard page excluded; 0 = 256 KiB
                             (1 MiB under sanitizers); committed only as used */
    int offload_threads;  /* blocking-call pool; 0 = 2 */
    int stack_warm;       /* pooled coroutines per loop that keep the pages
                             of a deep use (no madvise and page fault per
                             deep request) until that many newer ones are
                             pooled or it is unused for a second; 0 = give
                             them back at once (the default: with 128 the
                             soak's RSS swung past its ±5 % rule) */
    bool handle_signals;  /* SIGTERM/SIGINT cancel rt_shutdown_ctx(); a
                             second signal exits the process at once;
                             SIGHUP runs rt_on_sighup's callback */
} rt_options;

/* Runs the runtime: starts the loops, runs main_fn(arg) as a coroutine on
 * loop 0 and returns when it returns.  Coroutines still parked then are
 * abandoned and their stacks freed.  Returns 0, or -errno if the runtime
 * could not start.  Not reentrant; may be called again after it returns. */
int rt_run(const rt_options *opt, rt_fn main_fn, void *arg);

/* Batched reads and writes: with io_uring, the rt_read, rt_write_all and
 * rt_writev_all calls that a loop's coroutines make on non-TLS fds (when
 * more than one coroutine is runnable) go to the kernel together, as
 * recv and sendmsg, in one io_uring_enter(2) once those coroutines have
 * run, instead of one read(2) or writev(2) each; a lone call is made
 * directly, and a non-socket fd falls back to the plain call.  Results
 * and errors are those of the plain calls.  RT_BATCH_AUTO (the default)
 * uses io_uring where the kernel offers it (Linux 5.18+) and it passes a
 * start-up probe, else plain calls; RT_BATCH_RING makes rt_run fail
 * (-errno) without it; RT_BATCH_OFF never uses it.  Call before rt_run.
 * Left at RT_BATCH_AUTO, the environment variable BAZAAR_IO_BATCH (auto,
 * io_uring or off) chooses, as libuv's UV_USE_IO_URING does; an unknown
 * value makes rt_run fail (-EINVAL).
 *
 * A batched call parks its coroutine to the end of the batch, and the
 * loop may poll before the coroutine runs again: an fd's on_event can see
 * its owning coroutine still busy in a call that has already completed.
 * Code that decides on rt_io.readable (go idle, say) before such a call
 * must look at the flag again after it (http/server.c does). */
typedef enum rt_batch_mode {
    RT_BATCH_AUTO = 0,
    RT_BATCH_OFF = 1,
    RT_BATCH_RING = 2,
} rt_batch_mode;
void rt_set_batch(rt_batch_mode mode);
/* "auto", "io_uring" or "off" into *out: 0, or -EINVAL. */
int rt_batch_parse(const char *s, rt_batch_mode *out);
/* "io_uring" or "off": what the running loops use (after rt_run started). */
const char *rt_batch_name(void);

int rt_nloops(void);
rt_loop *rt_loop_at(int i);
/* The loop of the calling thread, or NULL on a thread that is not a loop. */
rt_loop *rt_loop_current(void);
int rt_loop_index(const rt_loop *l);

/* Runs fn(arg) on loop l's thread, outside any coroutine (it must not park).
 * Safe from any thread. */
void rt_post(rt_loop *l, rt_fn fn, void *arg);

/* Monotonic time cached by the current loop (refreshed after every poll
 * and every batch of coroutines): for deadlines on hot paths, where a
 * clock read per use would show up in profiles.  Off a loop: bz_now_ns(). */
int64_t rt_now(void);

/* ---- coroutines ----------------------------------------------------------- */

/* Starts fn(arg) on a new coroutine of the current loop (or loop 0 when
 * called from a non-loop thread).  It runs after the caller next parks. */
void rt_go(rt_fn fn, void *arg);
/* Same, on loop l; safe from any thread. */
void rt_go_on(rt_loop *l, rt_fn fn, void *arg);

/* A coroutine that can be joined: it keeps its structure after returning
 * until rt_join succeeds or rt_detach is called.  Exactly one of the two
 * must happen. */
rt_coro *rt_spawn_joinable(rt_loop *l, rt_fn fn, void *arg);
int rt_join(rt_coro *co, rt_ctx *ctx);
void rt_detach(rt_coro *co);

/* The running coroutine, or NULL outside coroutines. */
rt_coro *rt_self(void);
/* A per-coroutine pointer for the layers above (e.g. the current request). */
void *rt_coro_local(void);
void rt_coro_set_local(void *p);

/* Gives back the running coroutine's stack pages that an earlier, deeper
 * use left resident (a pooled coroutine keeps them for the next quick
 * use: rt/coro.c, warm list).  For a coroutine about to park for long at
 * a shallow depth — a slow client's header read — so it does not hold
 * another request's deep pages while it waits.  A few loads when there
 * is nothing to give back. */
void rt_stack_release(void);

/* Lets the other runnable coroutines of this loop run first. */
void rt_yield(void);
/* Parks for ns nanoseconds.  0, or -ECANCELED/-ETIMEDOUT if ctx ends first. */
int rt_sleep(rt_ctx *ctx, int64_t ns);

/* ---- park / wake: the primitive every wait is built on --------------------
 *
 * rt_park parks the running coroutine until rt_wake(), the deadline
 * (absolute, bz_now_ns() clock; BZ_NO_DEADLINE for none) or the end of ctx
 * (NULL: none).  If `unlock` is given it is released after the coroutine is
 * registered as parked and before it switches away, which closes the
 * lost-wake-up window for callers that queue themselves under a lock.
 * Returns the value given to rt_wake, or -ETIMEDOUT / -ECANCELED. */
int rt_park(rt_ctx *ctx, int64_t deadline, pthread_mutex_t *unlock);
/* Wakes co with result (≤ 0) if it is parked and nobody woke it yet.
 * Returns true if this call woke it.  Safe from any thread. */
bool rt_wake(rt_coro *co, int result);

/* ---- contexts ---------------------------------------------------------------
 *
 * A context carries a deadline and a cancel signal from parent to children,
 * like Go's context.Context.  Contexts are plain structs owned by the
 * caller (often on the coroutine stack); every rt_ctx_init* must be paired
 * with rt_ctx_release before the memory goes away.  Cancel is safe from any
 * thread. */
struct rt_ctx {
    /* private: read through the functions below */
    pthread_mutex_t lock;
    rt_ctx *parent;
    rt_ctx *children, *sib_prev, *sib_next;
    rt_coro *waiters;     /* parked coroutines, linked through the coro */
    int64_t deadline;     /* own deadline merged with the parent's */
    int err;              /* 0, ECANCELED or ETIMEDOUT (sticky) */
};

void rt_ctx_init(rt_ctx *c, rt_ctx *parent);
void rt_ctx_init_deadline(rt_ctx *c, rt_ctx *parent, int64_t deadline);
void rt_ctx_init_timeout(rt_ctx *c, rt_ctx *parent, int64_t timeout_ns);
/* Tightens c's deadline (never loosens it).  Contexts made from c later
 * inherit it; existing children keep theirs, so call it before handing c
 * down (a middleware setting the request deadline). */
void rt_ctx_tighten(rt_ctx *c, int64_t deadline);
/* Cancels c and all its descendants: every wait under them returns
 * -ECANCELED.  Idempotent. */
void rt_ctx_cancel(rt_ctx *c);
/* 0 while c is live; ECANCELED or ETIMEDOUT (positive) once it ended. */
int rt_ctx_err(rt_ctx *c);
int64_t rt_ctx_deadline(const rt_ctx *c);
void rt_ctx_release(rt_ctx *c);

/* Cancelled at the first SIGTERM/SIGINT (with handle_signals) or by
 * rt_shutdown().  Live for the whole rt_run. */
rt_ctx *rt_shutdown_ctx(void);
void rt_shutdown(void);

/* With handle_signals, each SIGHUP starts fn(arg) on a new coroutine of
 * loop 0 (it may park: blocking file reads belong on rt_offload).  One
 * callback per process; a later call replaces it, NULL removes it.
 * Without a callback a SIGHUP is logged and ignored (it never kills the
 * process).  Any thread, before or during rt_run. */
void rt_on_sighup(rt_fn fn, void *arg);

/* ---- timers (loop-local) -------------------------------------------------- */

typedef struct rt_timer {
    int64_t deadline;          /* bz_now_ns() clock */
    void (*fn)(struct rt_timer *t); /* runs on the loop, outside coroutines */
    void *data;
    size_t idx;                /* private: heap slot + 1; 0 = not armed */
} rt_timer;

/* Arms t on the current loop (re-arms if armed). */
void rt_timer_start(rt_timer *t, int64_t deadline);
void rt_timer_stop(rt_timer *t);
static inline bool rt_timer_armed(const rt_timer *t) { return t->idx != 0; }

/* ---- I/O -------------------------------------------------------------------
 *
 * An rt_io is a non-blocking fd registered (edge-triggered) with the loop
 * that opened it.  At most one coroutine waits to read and one to write.
 * on_event, if set, is called on the loop for every readiness event, after
 * waiters were woken — it lets a connection with no coroutine (an idle
 * keep-alive) start one when bytes arrive, and lets a busy one notice a
 * hang-up. */
typedef struct rt_io rt_io;
struct rt_io {
    int fd;
    rt_loop *loop;
    rt_coro *reader, *writer;
    bool readable, writable, hup;
    void (*on_event)(rt_io *io, uint32_t events);
    void *data;
    void *tls;          /* the TLS session (an OpenSSL SSL *), or NULL:
                           set by rt_tls_accept/rt_tls_connect (rt/tls.h) */
};

/* Registers fd (made non-blocking) with the current loop. */
int rt_io_open(rt_io *io, int fd);
/* Deregisters and closes the fd; waiters get -EBADF. */
void rt_io_close(rt_io *io);
/* Deregisters the fd from its loop without closing it (to move it to
 * another loop with rt_io_open).  No coroutine may be waiting on it. */
void rt_io_detach(rt_io *io);

int rt_wait_readable(rt_io *io, rt_ctx *ctx, int64_t deadline);
int rt_wait_writable(rt_io *io, rt_ctx *ctx, int64_t deadline);
/* For fds a library reads and writes itself (libpq, hiredis): the
 * readiness flags cannot be trusted, since the library saw EAGAIN and we
 * did not.  These check the fd with a zero-timeout poll(2), and park only
 * if it is not ready; an edge that comes after the check wakes them. */
int rt_io_await_readable(rt_io *io, rt_ctx *ctx, int64_t deadline);
int rt_io_await_writable(rt_io *io, rt_ctx *ctx, int64_t deadline);
/* read(2) that parks on EAGAIN (and, batched, for the call itself: see
 * rt_set_batch): bytes read, 0 at EOF, or -errno. */
ssize_t rt_read(rt_io *io, void *buf, size_t n, rt_ctx *ctx, int64_t deadline);
/* Writes all n bytes (parking as needed): 0 or -errno. */
int rt_write_all(rt_io *io, const void *buf, size_t n, rt_ctx *ctx, int64_t deadline);
/* writev of all iovecs; the array is modified. */
struct iovec;
int rt_writev_all(rt_io *io, struct iovec *iov, int iovcnt, rt_ctx *ctx, int64_t deadline);
/* Non-parking I/O for code driven by readiness events without a coroutine
 * (an idle HTTP/2 connection): bytes moved (> 0), 0 at EOF (reads only),
 * -EAGAIN when the socket (or, over TLS, the session) must wait for the
 * next readiness event — which may be either direction over TLS, so such
 * code retries both on any event — or another -errno (-EPROTO: a TLS
 * protocol error).  Over TLS a read loop must go on until -EAGAIN: bytes
 * OpenSSL has buffered raise no new event (see rt_io_pending).  Plain
 * sockets cost one branch over recv/send. */
ssize_t rt__tls_try_read(rt_io *io, void *buf, size_t n);
ssize_t rt__tls_try_write(rt_io *io, const void *buf, size_t n);
bool rt__tls_pending(const rt_io *io);
/* A recv/send result as the try pair returns it; -EINTR: call again. */
static inline ssize_t rt__try_result(ssize_t r, bool *ready)
{
    if (r >= 0)
        return r;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        *ready = false; /* the next edge sets it again */
        return -EAGAIN;
    }
    return -errno;
}
static inline ssize_t rt_io_try_read(rt_io *io, void *buf, size_t n)
{
    if (io->tls)
        return rt__tls_try_read(io, buf, n);
    ssize_t r;
    while ((r = rt__try_result(recv(io->fd, buf, n, 0), &io->readable)) == -EINTR) {
    }
    return r;
}
static inline ssize_t rt_io_try_write(rt_io *io, const void *buf, size_t n)
{
    if (io->tls)
        return rt__tls_try_write(io, buf, n);
    ssize_t r;
    while ((r = rt__try_result(send(io->fd, buf, n, MSG_NOSIGNAL), &io->writable)) == -EINTR) {
    }
    return r;
}
/* True if plaintext is already buffered inside the TLS session: a reader
 * must take it before waiting for the fd, since it raises no event.
 * Always false on a plain socket. */
static inline bool rt_io_pending(const rt_io *io) { return io->tls && rt__tls_pending(io); }
/* Non-blocking connect to host:port parked until done: fd or -errno. */
int rt_connect_tcp(const char *host, int port, rt_ctx *ctx, int64_t deadline);

/* ---- listeners ---------------------------------------------------------------
 *
 * One SO_REUSEPORT socket per loop: the kernel spreads connections over
 * the loops and each loop owns its connections for life.  on_accept runs
 * on the accepting loop, outside coroutines, with a non-blocking fd it now
 * owns. */
typedef struct rt_listener rt_listener;
typedef void (*rt_accept_fn)(rt_loop *l, int fd, const struct sockaddr *peer, socklen_t peerlen,
                             void *arg);

/* addr is "[host]:port" (":8080" = every address, dual-stack; port 0 picks
 * a free port).  Returns NULL with *err = -errno on failure. */
rt_listener *rt_listen(const char *addr, rt_accept_fn on_accept, void *arg, int *err);
int rt_listener_port(const rt_listener *l);
/* Stops accepting on every loop (the sockets close asynchronously) and
 * frees the listener once every loop has let go of it.  Any thread. */
void rt_listener_close(rt_listener *l);

/* A connection gate: a cap on open connections shared by any number of
 * listeners (on every loop).  A gated listener takes a slot before each
 * accept(2); when none is left it stops accepting (its socket leaves the
 * epoll set, and the kernel's backlog holds new connections) until a slot
 * is given back, then every paused socket of the gate resumes.  The
 * on_accept of a gated listener owns the fd's slot: it calls rt_gate_leave
 * exactly once, when it closes that fd.  Reference-counted: a gate lives
 * while its creator or a listener's user holds a reference.  Any thread. */
typedef struct rt_gate rt_gate;
/* max ≥ 1; the new gate has one reference. */
rt_gate *rt_gate_new(int64_t max);
void rt_gate_ref(rt_gate *g);
void rt_gate_unref(rt_gate *g);
/* Gives a slot back (a gated connection closed). */
void rt_gate_leave(rt_gate *g);
/* Slots taken now. */
int64_t rt_gate_count(const rt_gate *g);
/* rt_listen whose sockets accept only while g has room (g may be NULL).
 * The listener holds a reference to g until it is freed. */
rt_listener *rt_listen_gated(const char *addr, rt_accept_fn on_accept, void *arg, rt_gate *g, int *err);
/* share_port: SO_REUSEPORT open to other processes (of the same user) on
 * the same port, on purpose (a rolling restart).  Without it, a port some
 * socket already listens on fails with -EADDRINUSE, even though the
 * loops' own sockets still share the port among themselves. */
rt_listener *rt_listen_ex(const char *addr, rt_accept_fn on_accept, void *arg, rt_gate *gate, bool share_port,
                          int *err);

/* ---- cross-thread synchronisation ------------------------------------------
 *
 * All of these park coroutines (never the thread) and may be shared by
 * coroutines on different loops.  Waiters are served first come, first
 * served, and ownership is handed straight to the woken waiter. */
typedef struct rt_waitq { rt_coro *head, *tail; } rt_waitq;

/* The queue the primitives below are made of, for layers that build their
 * own (the DB pool, single-flight).  The caller guards q with its own
 * pthread mutex *lk.  rt_waitq_wait queues the running coroutine, parks it
 * with *lk released, and returns with *lk held again: 0 when woken by
 * rt_waitq_wake_one (with *val, if given, set to what the waker passed), or
 * -ECANCELED / -ETIMEDOUT.  rt_waitq_wake_one wakes the first waiter that
 * can still be woken and returns false if there was none. */
int rt_waitq_wait(rt_waitq *q, pthread_mutex_t *lk, rt_ctx *ctx, int64_t deadline, void **val);
bool rt_waitq_wake_one(rt_waitq *q, int result, void *val);
void rt_waitq_wake_all(rt_waitq *q, int result);
static inline bool rt_waitq_empty(const rt_waitq *q) { return q->head == 0; }

typedef struct rt_mutex {
    pthread_mutex_t lk;
    bool locked;
    rt_waitq q;
} rt_mutex;
void rt_mutex_init(rt_mutex *m);
void rt_mutex_destroy(rt_mutex *m);
/* 0 once held, or -ECANCELED/-ETIMEDOUT (not held). */
int rt_mutex_lock(rt_mutex *m, rt_ctx *ctx);
bool rt_mutex_trylock(rt_mutex *m);
void rt_mutex_unlock(rt_mutex *m);

typedef struct rt_sem {
    pthread_mutex_t lk;
    int64_t count;
    rt_waitq q;
} rt_sem;
void rt_sem_init(rt_sem *s, int64_t count);
void rt_sem_destroy(rt_sem *s);
int rt_sem_acquire(rt_sem *s, rt_ctx *ctx, int64_t deadline);
bool rt_sem_tryacquire(rt_sem *s);
void rt_sem_release(rt_sem *s);

typedef struct rt_wg {
    pthread_mutex_t lk;
    int64_t count;
    rt_waitq q;
} rt_wg;
void rt_wg_init(rt_wg *w);
void rt_wg_destroy(rt_wg *w);
void rt_wg_add(rt_wg *w, int64_t n);
void rt_wg_done(rt_wg *w);
/* 0 once the count is zero, or -ECANCELED/-ETIMEDOUT. */
int rt_wg_wait(rt_wg *w, rt_ctx *ctx);

/* A bounded FIFO of pointers (capacity ≥ 1). */
typedef struct rt_chan {
    pthread_mutex_t lk;
    void **buf;
    size_t cap, head, len;
    bool closed;
    rt_waitq recvq, sendq;
} rt_chan;
void rt_chan_init(rt_chan *c, size_t cap);
void rt_chan_destroy(rt_chan *c);
/* 0, -EPIPE if closed, -ECANCELED/-ETIMEDOUT. */
int rt_chan_send(rt_chan *c, void *v, rt_ctx *ctx, int64_t deadline);
/* 0 with *out set, -EPIPE once closed and drained, -ECANCELED/-ETIMEDOUT. */
int rt_chan_recv(rt_chan *c, void **out, rt_ctx *ctx, int64_t deadline);
/* Non-parking variants: 0, -EAGAIN, or -EPIPE. */
int rt_chan_trysend(rt_chan *c, void *v);
int rt_chan_tryrecv(rt_chan *c, void **out);
/* Wakes every waiter with -EPIPE; buffered values can still be received. */
void rt_chan_close(rt_chan *c);

/* ---- blocking offload --------------------------------------------------------
 *
 * Runs fn(arg) on a small thread pool for calls that truly block (Argon2id,
 * PQcancel, getaddrinfo).  The coroutine parks until fn returns.  If ctx
 * ends while the job is still queued, it is dropped and -ECANCELED or
 * -ETIMEDOUT is returned; once running, it is waited for (fn may use the
 * caller's stack).  Returns 0 when fn ran. */
int rt_offload(rt_ctx *ctx, rt_fn fn, void *arg);

/* ---- what a coroutine waits on (the coroutine dump) ------------------------
 *
 * Every park records why it parks (socket read or write with its fd,
 * sleep, mutex, semaphore, wait group, channel, wait queue, offload) — a
 * couple of stores, no allocation.  Layers above add a note naming the
 * work the coroutine is inside (a database statement, a cache call, an
 * event stream), and may name a park the runtime would only call a
 * "wait queue" (a pool wait).  rt_coro_dump reads it all from each
 * coroutine's owner loop, so nothing here is shared between threads. */
typedef struct rt_note {
    const char *what;   /* "db", "cache", "sse", ...: a static string */
    const char *detail; /* a statement's name, a key; static or outliving the note */
} rt_note;
/* Sets the running coroutine's note and returns the one it replaces, for
 * rt_note_restore.  Outside a coroutine: does nothing, returns {0}. */
rt_note rt_note_set(const char *what, const char *detail);
void rt_note_restore(rt_note prev);
/* Names the running coroutine's next park (a static string), unless a
 * name is already set; cleared when that park returns. */
void rt_park_reason(const char *why);

typedef struct rt_coro_info {
    int loop;
    uint64_t id;          /* per loop */
    int state;            /* 0 running or runnable, 1 parked */
    const char *why;      /* the park's name, NULL when unnamed or not parked */
    int fd;               /* for socket waits, else -1 */
    rt_note note;
    int64_t age_ns;       /* since it started */
    int64_t parked_ns;    /* since it parked (0 when not parked) */
    void *local;          /* rt_coro_local of it (the http layer's request) */
} rt_coro_info;
/* Calls fn(info, arg) for every live coroutine of every loop, on that
 * loop's thread, one loop after another (never two at once), while the
 * coroutines described are parked or queued: fn must not park, and may
 * read what info->local points to.  Parks the caller (a coroutine) until
 * every loop has answered: 0, or -ECANCELED/-ETIMEDOUT when ctx ends
 * first (loops not asked yet are skipped). */
int rt_coro_dump(rt_ctx *ctx, void (*fn)(const rt_coro_info *info, void *arg), void *arg);

/* ---- statistics (for /metrics and /debug/runtime) ---------------------------
 *
 * Each loop runs a lag tick every RT_LAG_TICK_NS: a timer whose lateness
 * (fire time minus due time) is the event-loop lag — how long a ready
 * timer or socket waited because the loop was busy.  The tick also
 * publishes the loop's counters, so they may be up to one tick old.  Safe
 * from any thread while rt_run runs. */
#define RT_LAG_TICK_NS (100 * BZ_NS_PER_MS)
extern const bz_hist_bounds rt_lag_bounds;

typedef struct rt_loop_stats {
    int64_t coros_live;   /* coroutines started and not finished */
    int64_t coros_pooled; /* finished coroutines whose stacks wait for reuse */
    int64_t timers;       /* armed timers */
    int64_t lag_last_ns;  /* lateness of the last tick */
    int64_t last_tick_ns; /* bz_now_ns() of the last tick; 0 before the first */
    bz_hist_snap lag;     /* lateness of every tick so far (rt_lag_bounds) */
} rt_loop_stats;
/* Loop i's statistics (0 ≤ i < rt_nloops()). */
rt_loop_stats rt_loop_stats_read(int i);
/* True when every loop ticked within max_age_ns: no loop is stuck (the
 * systemd watchdog pings only then). */
bool rt_loops_alive(int64_t max_age_ns);

typedef struct rt_offload_stats {
    int threads;    /* pool size */
    int busy;       /* running a job now */
    int64_t queued; /* jobs waiting for a thread */
    int64_t done;   /* jobs run since start */
} rt_offload_stats;
rt_offload_stats rt_offload_stats_read(void);

#pragma GCC visibility pop
#endif

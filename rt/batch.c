/* rt/batch.c — a loop turn's reads and writes as one system call.
 *
 * Under keep-alive load a turn wakes many connections: each used to make
 * its own read(2) and then its own writev(2).  With batching on, rt_read
 * and rt_writev_all on a plain socket queue the call on the loop and park;
 * when the turn's runnable coroutines have all run, the loop hands the
 * queue to the kernel as io_uring submissions and waits for exactly those
 * completions in the same io_uring_enter(2).  The calls are recv and
 * sendmsg with MSG_DONTWAIT, so the kernel makes each then and there (a
 * socket with nothing to read, or no room to write, answers -EAGAIN at
 * once, as read(2) would), and nothing is in flight once the loop runs
 * on: no
 * buffer outlives its coroutine's park, and no cancellation is needed.
 * A coroutine that runs alone in its batch makes its calls directly (it
 * can queue at most one before it parks), and a queue of one is made as
 * the plain system call: an io_uring_enter would cost the same and add
 * its own work.
 *
 * Readiness stays with epoll; only the data calls are batched.  At start
 * a loop probes its ring (a receive from an empty socket must come back
 * -EAGAIN at once); a kernel without io_uring, a seccomp filter that
 * refuses it, or a probe that fails leaves the loop on plain system
 * calls.  rt_set_batch chooses (rt.h). */
#include "rt/rt-private.h"

#include <errno.h>
#include <limits.h>
#include <liburing.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* Submission queue entries per ring: a larger queue is sent in parts. */
#define RING_ENTRIES 256

struct rt__batch {
    struct io_uring ring;
    rt__bop *head, *tail;
    unsigned n;
    uint64_t flushes, ops; /* io_uring_enter calls, calls they carried */
};

static rt_batch_mode g_mode = RT_BATCH_AUTO;
static bool g_usable; /* the probe passed: the loops make rings */

void rt_set_batch(rt_batch_mode m) { g_mode = m; }

const char *rt_batch_name(void) { return g_usable ? "io_uring" : "off"; }

/* One call through the ring: its result, or 1 (not an errno) when the
 * kernel did not answer within the submission. */
static int probe_call(struct io_uring *r, int fd, void *buf, struct msghdr *m)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(r);
    if (!sqe)
        return 1;
    if (m)
        io_uring_prep_sendmsg(sqe, fd, m, MSG_DONTWAIT | MSG_NOSIGNAL);
    else
        io_uring_prep_recv(sqe, fd, buf, 8, MSG_DONTWAIT);
    if (io_uring_submit(r) != 1)
        return 1;
    struct io_uring_cqe *cqe = NULL;
    if (io_uring_peek_cqe(r, &cqe) != 0 || !cqe)
        return 1;
    int res = cqe->res;
    io_uring_cqe_seen(r, cqe);
    return res;
}

/* The kernel must answer a receive from an empty socket, and a send to a
 * full one, with -EAGAIN during the submission, not wait: the loop's
 * flush waits for every completion it submitted.  (A plain read would
 * wait: io_uring arms a poll for it whatever the file's O_NONBLOCK says;
 * MSG_DONTWAIT is what makes recv and sendmsg answer at once.) */
static bool probe(struct io_uring *r)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return false;
    char b[4096] = {0};
    bool ok = probe_call(r, sv[0], b, NULL) == -EAGAIN;
    if (ok) {
        while (write(sv[1], b, sizeof b) > 0) { /* fill it: a socketpair holds a few hundred KiB */
        }
        struct iovec v = {b, sizeof b};
        struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
        ok = probe_call(r, sv[1], NULL, &m) == -EAGAIN;
    }
    close(sv[0]); /* a call left pending ends with the sockets */
    close(sv[1]);
    if (!ok) { /* wait for the pending call's end before the ring goes */
        struct io_uring_cqe *cqe = NULL;
        struct __kernel_timespec ts = {0, 100 * 1000 * 1000};
        if (io_uring_wait_cqe_timeout(r, &cqe, &ts) == 0 && cqe)
            io_uring_cqe_seen(r, cqe);
    }
    return ok;
}

/* A ring as the loops use it: one thread submits, and completions need no
 * interrupt of it (SINGLE_ISSUER ties the ring to the thread that made
 * it: each loop makes its own, on its own thread).  SUBMIT_ALL (Linux
 * 5.18) is required: without it an entry that fails to start stops the
 * submission there, and the flush would wait for completions of entries
 * never taken. */
static int ring_init(struct io_uring *r)
{
    int rc = io_uring_queue_init(RING_ENTRIES, r,
                                 IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN);
    if (rc == -EINVAL) /* a kernel before 6.0 */
        rc = io_uring_queue_init(RING_ENTRIES, r, IORING_SETUP_SUBMIT_ALL);
    return rc;
}

int rt_batch_parse(const char *s, rt_batch_mode *out)
{
    static const char *const names[] = {"auto", "off", "io_uring"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, names[i]))
            return *out = (rt_batch_mode)i, 0;
    return -EINVAL;
}

int rt__batch_probe(void)
{
    g_usable = false;
    rt_batch_mode mode = g_mode;
    const char *env = getenv("BAZAAR_IO_BATCH");
    if (mode == RT_BATCH_AUTO && env && *env && rt_batch_parse(env, &mode) != 0)
        return -EINVAL;
    if (mode == RT_BATCH_OFF)
        return 0;
    struct io_uring r;
    int rc = ring_init(&r);
    if (rc == 0) {
        g_usable = probe(&r);
        io_uring_queue_exit(&r);
        if (!g_usable)
            rc = -ENOTSUP;
    }
    return mode == RT_BATCH_RING ? rc : 0;
}

void rt__batch_init(rt_loop *l)
{
    l->batch = NULL;
    if (!g_usable)
        return;
    rt__batch *b = calloc(1, sizeof *b);
    if (!b || ring_init(&b->ring) != 0) {
        /* The probe's ring was made: this one should be too.  Asked for
         * io_uring, stop; else this loop makes plain calls. */
        if (g_mode == RT_BATCH_RING)
            rt__panic("io_uring: a loop could not make its ring");
        free(b);
        return;
    }
    l->batch = b;
}

void rt__batch_fini(rt_loop *l)
{
    if (!l->batch)
        return;
    io_uring_queue_exit(&l->batch->ring);
    free(l->batch);
    l->batch = NULL;
}

void rt__batch_counts(const rt_loop *l, uint64_t *flushes, uint64_t *ops)
{
    *flushes = l->batch ? l->batch->flushes : 0;
    *ops = l->batch ? l->batch->ops : 0;
}

/* Only a coroutine of l's own thread queues on l: the queue, the ring and
 * the wake-up are that thread's. */
static bool batch_on(const rt_loop *l)
{
    return l->batch != NULL && l == rt__cur && l->batch_many && rt_self() != NULL;
}

/* Queues op and parks until the loop's flush has made the call: its
 * result, as the system call's (bytes, or -errno). */
static ssize_t batch_call(rt_loop *l, rt__bop *op)
{
    rt__batch *b = l->batch;
    op->co = rt_self();
    op->next = NULL;
    if (b->tail)
        b->tail->next = op;
    else
        b->head = op;
    b->tail = op;
    b->n++;
    rt__why(op->co, op->iov ? "socket write (batched)" : "socket read (batched)");
    op->co->why_fd = op->fd;
    /* No context, no deadline: the flush ends every call it makes within
     * the turn, so the park is short and nothing can be left behind. */
    return rt_park(NULL, BZ_NO_DEADLINE, NULL);
}

/* The call as a plain system call (a queue of one; a file that is not
 * a socket). */
static ssize_t direct(rt__bop *op)
{
    for (;;) {
        ssize_t r = op->iov ? writev(op->fd, op->iov, op->iovcnt > IOV_MAX ? IOV_MAX : op->iovcnt)
                            : read(op->fd, op->buf, op->len);
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return -errno;
    }
}

/* The fd's readiness as a call's result leaves it, set when the call was
 * made: a short read drained the socket, -EAGAIN says no bytes or no
 * room — the next arrival is a new edge, so no call is made that would
 * only say EAGAIN.  Not later, when a batched call's coroutine runs
 * again: the loop may poll in between, and an edge dispatched then sets
 * the flag again — clearing it after that would lose the edge. */
static void set_readiness(rt__bop *op, ssize_t res)
{
    if (!op->iov && (res == -EAGAIN || (res >= 0 && (size_t)res < op->len)))
        op->io->readable = false;
    else if (op->iov && res == -EAGAIN)
        op->io->writable = false;
}

/* Ends a batched call: readiness, then its coroutine, with the result. */
static void settle(rt__bop *op, int res)
{
    set_readiness(op, res);
    rt_wake(op->co, res);
}

ssize_t rt__io_call(rt__bop *op)
{
    rt_loop *l = op->io->loop;
    if (l && batch_on(l))
        return batch_call(l, op);
    ssize_t r = direct(op);
    set_readiness(op, r);
    return r;
}

/* Makes the queued calls, wakes their coroutines with the results. */
void rt__batch_flush(rt_loop *l)
{
    rt__batch *b = l->batch;
    while (b && b->head) {
        rt__bop *op = b->head;
        if (b->n == 1) {
            b->head = b->tail = NULL;
            b->n = 0;
            settle(op, (int)direct(op)); /* a batched read is capped at INT_MAX, a write at IOV_MAX iovecs */
            return;
        }
        /* Up to RING_ENTRIES of the queue in one io_uring_enter. */
        unsigned k = 0;
        while (op && k < RING_ENTRIES) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
            if (!sqe)
                break;
            if (op->iov) {
                memset(&op->msg, 0, sizeof op->msg);
                op->msg.msg_iov = op->iov;
                op->msg.msg_iovlen = (size_t)(op->iovcnt > IOV_MAX ? IOV_MAX : op->iovcnt);
                io_uring_prep_sendmsg(sqe, op->fd, &op->msg, MSG_DONTWAIT | MSG_NOSIGNAL);
            } else {
                io_uring_prep_recv(sqe, op->fd, op->buf, op->len > INT_MAX ? INT_MAX : op->len, MSG_DONTWAIT);
            }
            io_uring_sqe_set_data(sqe, op);
            op = op->next;
            k++;
        }
        b->head = op;
        if (!op)
            b->tail = NULL;
        b->n -= k;
        /* Every entry must be taken (SUBMIT_ALL: one that fails to start
         * completes with its error); a submission refused as a whole for
         * want of memory is tried again, briefly. */
        for (int tries = 0;; tries++) {
            int r = io_uring_submit_and_wait(&b->ring, k);
            if (r >= 0 && io_uring_sq_ready(&b->ring) == 0)
                break;
            if (r < 0 && r != -EINTR && r != -EAGAIN && r != -ENOMEM && r != -EBUSY)
                rt__panic("io_uring_submit_and_wait failed");
            if (tries == 1000)
                rt__panic("io_uring_submit_and_wait: no progress");
            if (r < 0 && r != -EINTR)
                sched_yield();
        }
        b->flushes++;
        b->ops += k;
        /* every completion of this submission: the calls did not wait */
        unsigned seen = 0;
        while (seen < k) {
            struct io_uring_cqe *cqe = NULL;
            if (io_uring_wait_cqe(&b->ring, &cqe) != 0 || !cqe)
                rt__panic("io_uring completion missing");
            rt__bop *done = io_uring_cqe_get_data(cqe);
            int res = cqe->res;
            io_uring_cqe_seen(&b->ring, cqe);
            if (res == -ENOTSOCK) /* rt_read or rt_writev_all on a pipe, say */
                res = (int)direct(done);
            settle(done, res);
            seen++;
        }
    }
}

void rt__batch_forget(rt_loop *l, const rt_io *io)
{
    rt__batch *b = l && l == rt__cur ? l->batch : NULL; /* another loop's queue holds no call of ours */
    if (!b)
        return;
    rt__bop **pp = &b->head, *prev = NULL;
    while (*pp) {
        rt__bop *op = *pp;
        if (op->io == io) {
            *pp = op->next;
            if (b->tail == op)
                b->tail = prev;
            b->n--;
            rt_wake(op->co, -EBADF);
            continue;
        }
        prev = op;
        pp = &op->next;
    }
}

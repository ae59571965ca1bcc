/* rt/io.c — fd readiness, parked reads and writes, outgoing TCP connects,
 * and SO_REUSEPORT listeners (one socket per loop). */
#include "rt/rt-private.h"

#include <bazaar/flags.h>
#include <bazaar/log.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

/* ---- rt_io ------------------------------------------------------------------------- */

int rt_io_open(rt_io *io, int fd)
{
    rt_loop *l = rt__cur;
    if (!l)
        rt__panic("rt_io_open outside a loop");
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0))
        return -errno;
    io->fd = fd;
    io->loop = l;
    io->reader = io->writer = NULL;
    io->readable = io->writable = io->hup = false;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = io};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return -errno;
    return 0;
}

void rt_io_close(rt_io *io)
{
    if (io->fd < 0)
        return;
    if (io->tls)
        rt__tls_free(io);
    rt__batch_forget(io->loop, io); /* a queued call must not reach the closed (or a reused) fd */
    /* close() drops the fd from the epoll set (we never dup it). */
    close(io->fd);
    io->fd = -1;
    if (io->reader)
        rt_wake(io->reader, -EBADF);
    if (io->writer)
        rt_wake(io->writer, -EBADF);
}

void rt_io_detach(rt_io *io)
{
    rt__batch_forget(io->loop, io);
    if (io->loop && io->fd >= 0)
        epoll_ctl(io->loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    io->loop = NULL;
}

void rt__io_dispatch(rt_loop *l, rt_io *io, uint32_t ev)
{
    (void)l;
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        io->readable = true;
        if (io->reader)
            rt_wake(io->reader, 0);
    }
    if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
        io->writable = true;
        if (io->writer)
            rt_wake(io->writer, 0);
    }
    if (ev & (EPOLLHUP | EPOLLRDHUP | EPOLLERR))
        io->hup = true;
    if (io->on_event)
        io->on_event(io, ev);
}

static int wait_on(rt_io *io, rt_coro **slot, bool *ready, rt_ctx *ctx, int64_t deadline)
{
    if (io->fd < 0)
        return -EBADF;
    if (*ready)
        return 0;
    if (*slot)
        rt__panic("two coroutines wait on the same fd direction");
    rt_coro *co = rt_self();
    *slot = co;
    if (co) {
        rt__why(co, slot == &io->reader ? "socket read" : "socket write");
        co->why_fd = io->fd;
    }
    int r = rt_park(ctx, deadline, NULL);
    *slot = NULL;
    return r;
}

int rt_wait_readable(rt_io *io, rt_ctx *ctx, int64_t deadline)
{
    return wait_on(io, &io->reader, &io->readable, ctx, deadline);
}

int rt_wait_writable(rt_io *io, rt_ctx *ctx, int64_t deadline)
{
    return wait_on(io, &io->writer, &io->writable, ctx, deadline);
}

static int await(rt_io *io, short ev, rt_ctx *ctx, int64_t deadline)
{
    if (io->fd < 0)
        return -EBADF;
    bool *flag = ev == POLLIN ? &io->readable : &io->writable;
    *flag = false;
    struct pollfd p = {.fd = io->fd, .events = ev};
    if (poll(&p, 1, 0) > 0)
        return 0; /* ready now (or hung up: the caller's next call tells) */
    return ev == POLLIN ? rt_wait_readable(io, ctx, deadline) : rt_wait_writable(io, ctx, deadline);
}

int rt_io_await_readable(rt_io *io, rt_ctx *ctx, int64_t deadline) { return await(io, POLLIN, ctx, deadline); }
int rt_io_await_writable(rt_io *io, rt_ctx *ctx, int64_t deadline) { return await(io, POLLOUT, ctx, deadline); }

ssize_t rt_read(rt_io *io, void *buf, size_t n, rt_ctx *ctx, int64_t deadline)
{
    if (io->tls)
        return rt__tls_read(io, buf, n, ctx, deadline);
    for (;;) {
        if (io->fd < 0)
            return -EBADF;
        /* io->readable is cleared by the call itself (rt__io_call) */
        rt__bop op; /* only what a read uses: no zeroing on the hot path */
        op.io = io, op.fd = io->fd, op.buf = buf, op.len = n > INT_MAX ? INT_MAX : n, op.iov = NULL;
        ssize_t r = rt__io_call(&op);
        if (r != -EAGAIN && r != -EINTR)
            return r;
        if (r == -EAGAIN) {
            int w = rt_wait_readable(io, ctx, deadline);
            if (w)
                return w;
        }
    }
}

int rt_writev_all(rt_io *io, struct iovec *iov, int iovcnt, rt_ctx *ctx, int64_t deadline)
{
    if (io->tls)
        return rt__tls_writev_all(io, iov, iovcnt, ctx, deadline);
    while (iovcnt > 0) {
        if (io->fd < 0)
            return -EBADF;
        rt__bop op; /* only what a writev uses */
        op.io = io, op.fd = io->fd, op.iov = iov, op.iovcnt = iovcnt;
        ssize_t r = rt__io_call(&op); /* clears io->writable on -EAGAIN */
        if (r == -EINTR)
            continue;
        if (r == -EAGAIN) {
            int w = rt_wait_writable(io, ctx, deadline);
            if (w)
                return w;
            continue;
        }
        if (r < 0)
            return (int)r;
        size_t left = (size_t)r;
        while (iovcnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

int rt_write_all(rt_io *io, const void *buf, size_t n, rt_ctx *ctx, int64_t deadline)
{
    struct iovec v = {(void *)buf, n};
    return rt_writev_all(io, &v, 1, ctx, deadline);
}

/* ---- outgoing connections ------------------------------------------------------------- */

typedef struct {
    const char *host;
    char port[8];
    struct addrinfo *res;
    int err;
} resolve_job;

static void resolve(void *p)
{
    resolve_job *j = p;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    j->err = getaddrinfo(j->host, j->port, &hints, &j->res);
}

int rt_connect_tcp(const char *host, int port, rt_ctx *ctx, int64_t deadline)
{
    resolve_job j = {.host = host};
    snprintf(j.port, sizeof j.port, "%d", port);
    /* An address literal needs no DNS: resolved here, not behind whatever
     * the offload pool is busy with (a Redis reconnect must not queue
     * behind SQLite statements).  A name blocks (DNS): on the pool. */
    struct addrinfo numeric = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    int r = 0;
    if ((j.err = getaddrinfo(host, j.port, &numeric, &j.res)) != 0)
        r = rt_offload(ctx, resolve, &j);
    if (r)
        return r;
    if (j.err)
        return -EHOSTUNREACH;
    int last = -ECONNREFUSED;
    for (struct addrinfo *ai = j.res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = -errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            freeaddrinfo(j.res);
            return fd;
        }
        if (errno != EINPROGRESS) {
            last = -errno;
            close(fd);
            continue;
        }
        rt_io io = {0};
        if ((r = rt_io_open(&io, fd)) != 0) {
            close(fd);
            last = r;
            continue;
        }
        r = rt_wait_writable(&io, ctx, deadline);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (r == 0)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        /* Hand the fd back unregistered: the caller opens its own rt_io. */
        epoll_ctl(io.loop->epfd, EPOLL_CTL_DEL, fd, NULL);
        if (r == 0 && soerr == 0) {
            freeaddrinfo(j.res);
            return fd;
        }
        close(fd);
        last = r ? r : -soerr;
        if (r == -ECANCELED || r == -ETIMEDOUT)
            break;
    }
    freeaddrinfo(j.res);
    return last;
}

/* ---- listeners ------------------------------------------------------------------------ */

typedef struct lsock {
    rt_io io;
    rt_listener *owner;
    rt_timer retry;      /* re-arms accept after EMFILE */
    bool paused;         /* out of descriptors: waiting for the retry timer */
    bool gpaused;        /* the gate is full: waiting for a slot */
    bool gwaiting;       /* on the gate's waiter list (under the gate's lock) */
    bool armed;          /* in the loop's epoll set */
    struct lsock *gnext; /* the gate's waiter list */
} lsock;

struct rt_listener {
    rt_accept_fn on_accept;
    void *arg;
    rt_gate *gate;
    int port;
    int n;
    atomic_int refs; /* loops still holding a socket, and pending resumes */
    lsock socks[];
};

struct rt_gate {
    atomic_llong count;  /* slots taken */
    int64_t max;
    atomic_int refs;
    atomic_int nwait;    /* sockets on the waiter list */
    pthread_mutex_t lk;  /* guards waiters */
    lsock *waiters;
};

static void listener_unref(rt_listener *L)
{
    if (atomic_fetch_sub(&L->refs, 1) == 1) {
        if (L->gate)
            rt_gate_unref(L->gate);
        free(L);
    }
}

/* ---- connection gate ------------------------------------------------------------------- */

rt_gate *rt_gate_new(int64_t max)
{
    rt_gate *g = calloc(1, sizeof *g);
    if (!g)
        rt__panic("out of memory");
    g->max = max < 1 ? 1 : max;
    atomic_store(&g->refs, 1);
    pthread_mutex_init(&g->lk, NULL);
    return g;
}

void rt_gate_ref(rt_gate *g) { atomic_fetch_add(&g->refs, 1); }

void rt_gate_unref(rt_gate *g)
{
    if (g && atomic_fetch_sub(&g->refs, 1) == 1) {
        pthread_mutex_destroy(&g->lk);
        free(g);
    }
}

int64_t rt_gate_count(const rt_gate *g) { return atomic_load(&((rt_gate *)g)->count); }

static bool gate_enter(rt_gate *g)
{
    long long c = atomic_load(&g->count);
    while (c < g->max)
        if (atomic_compare_exchange_weak(&g->count, &c, c + 1))
            return true;
    return false;
}

/* Puts s in or out of its loop's epoll set as its state asks (on s's loop). */
static void lsock_arm(lsock *s)
{
    bool want = s->io.fd >= 0 && !s->paused && !s->gpaused;
    if (want == s->armed)
        return;
    if (want) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->io};
        if (epoll_ctl(rt__cur->epfd, EPOLL_CTL_ADD, s->io.fd, &ev) != 0) {
            bz_log_err("listener: epoll_ctl failed", BZ_F_STR("error", strerror(errno)));
            return;
        }
    } else {
        epoll_ctl(rt__cur->epfd, EPOLL_CTL_DEL, s->io.fd, NULL);
    }
    s->armed = want;
}

static void gate_resume(void *p)
{
    lsock *s = p;
    rt_listener *L = s->owner;
    if (s->io.fd >= 0 && s->gpaused) {
        s->gpaused = false;
        lsock_arm(s); /* level-triggered: a waiting backlog fires at once */
    }
    listener_unref(L);
}

/* Resumes every socket paused on g (each on its own loop). */
static void gate_wake_all(rt_gate *g)
{
    pthread_mutex_lock(&g->lk);
    lsock *s = g->waiters;
    g->waiters = NULL;
    atomic_store(&g->nwait, 0);
    while (s) {
        lsock *next = s->gnext;
        s->gnext = NULL;
        s->gwaiting = false;
        atomic_fetch_add(&s->owner->refs, 1); /* the post holds the listener */
        rt_post(s->io.loop, gate_resume, s);
        s = next;
    }
    pthread_mutex_unlock(&g->lk);
}

void rt_gate_leave(rt_gate *g)
{
    atomic_fetch_sub(&g->count, 1);
    if (atomic_load(&g->nwait) > 0)
        gate_wake_all(g);
}

/* The gate is full: stop polling s until a slot is given back. */
static void gate_pause(lsock *s)
{
    rt_gate *g = s->owner->gate;
    s->gpaused = true;
    lsock_arm(s);
    pthread_mutex_lock(&g->lk);
    if (!s->gwaiting) {
        s->gwaiting = true;
        s->gnext = g->waiters;
        g->waiters = s;
        atomic_fetch_add(&g->nwait, 1);
    }
    pthread_mutex_unlock(&g->lk);
    /* A slot given back between the failed gate_enter and the line above
     * saw no waiter: look again (both sides are sequentially consistent,
     * so one of them sees the other). */
    if (atomic_load(&g->count) < g->max)
        gate_wake_all(g);
}

static void gate_forget(lsock *s)
{
    rt_gate *g = s->owner->gate;
    if (!g)
        return;
    pthread_mutex_lock(&g->lk);
    if (s->gwaiting) {
        for (lsock **pp = &g->waiters; *pp; pp = &(*pp)->gnext)
            if (*pp == s) {
                *pp = s->gnext;
                break;
            }
        s->gwaiting = false;
        atomic_fetch_sub(&g->nwait, 1);
    }
    pthread_mutex_unlock(&g->lk);
}

/* ---- listeners ------------------------------------------------------------------------ */

static void accept_ready(rt_io *io, uint32_t ev)
{
    (void)ev;
    lsock *s = (lsock *)io;
    rt_loop *l = rt__cur;
    rt_gate *g = s->owner->gate;
    /* Level-triggered: take a bounded batch so one busy listener cannot
     * starve the loop's connections; the rest come on the next turn. */
    for (int i = 0; i < 64 && s->armed; i++) {
        if (g && !gate_enter(g)) {
            gate_pause(s);
            return;
        }
        struct sockaddr_storage peer;
        socklen_t pl = sizeof peer;
        int fd = accept4(io->fd, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (g)
                rt_gate_leave(g);
            if (e == EINTR || e == ECONNABORTED)
                continue;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                /* Out of descriptors: stop polling for 100 ms instead of
                 * spinning on a level-triggered event we cannot clear. */
                bz_log_warn("accept: out of resources, pausing", BZ_F_STR("error", strerror(e)));
                s->paused = true;
                lsock_arm(s);
                rt_timer_start(&s->retry, bz_now_ns() + 100 * BZ_NS_PER_MS);
            }
            return;
        }
        s->owner->on_accept(l, fd, (struct sockaddr *)&peer, pl, s->owner->arg);
    }
}

static void accept_resume(rt_timer *t)
{
    lsock *s = t->data;
    if (s->io.fd < 0 || !s->paused)
        return;
    s->paused = false;
    lsock_arm(s);
    if (!s->armed && !s->gpaused) {
        s->paused = true; /* could not re-register: try again later */
        rt_timer_start(&s->retry, bz_now_ns() + 100 * BZ_NS_PER_MS);
    }
}

static void lsock_register(void *p)
{
    lsock *s = p;
    s->io.loop = rt__cur;
    s->retry.fn = accept_resume;
    s->retry.data = s;
    lsock_arm(s);
}

static void lsock_close(void *p)
{
    lsock *s = p;
    rt_timer_stop(&s->retry);
    gate_forget(s);
    if (s->io.fd >= 0) {
        close(s->io.fd);
        s->io.fd = -1;
    }
    s->armed = false;
    listener_unref(s->owner);
}

/* reuseport: set SO_REUSEPORT (a group of our loops' sockets, or a port
 * shared with other processes on purpose). */
static int bind_one(const char *host, int port, int *out_port, bool reuseport, bool do_listen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int family;
    memset(&ss, 0, sizeof ss);
    if (host[0] == '\0') {
        /* Every address: dual-stack IPv6 when the kernel has it, like Go. */
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
        a6->sin6_family = AF_INET6;
        a6->sin6_addr = in6addr_any;
        a6->sin6_port = htons((uint16_t)port);
        family = AF_INET6;
        sl = sizeof *a6;
    } else {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
        struct addrinfo *res;
        char ps[8];
        snprintf(ps, sizeof ps, "%d", port);
        if (getaddrinfo(host, ps, &hints, &res) != 0)
            return -EADDRNOTAVAIL;
        memcpy(&ss, res->ai_addr, res->ai_addrlen);
        sl = res->ai_addrlen;
        family = res->ai_family;
        freeaddrinfo(res);
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 && family == AF_INET6 && host[0] == '\0') {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
        memset(&ss, 0, sizeof ss);
        a4->sin_family = AF_INET;
        a4->sin_addr.s_addr = htonl(INADDR_ANY);
        a4->sin_port = htons((uint16_t)port);
        sl = sizeof *a4;
        family = AF_INET;
        fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    }
    if (fd < 0)
        return -errno;
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || (do_listen && listen(fd, 4096) != 0)) {
        int e = -errno;
        close(fd);
        return e;
    }
    struct sockaddr_storage got;
    socklen_t gl = sizeof got;
    getsockname(fd, (struct sockaddr *)&got, &gl);
    *out_port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                                : ((struct sockaddr_in *)&got)->sin_port);
    return fd;
}

rt_listener *rt_listen(const char *addr, rt_accept_fn on_accept, void *arg, int *err)
{
    return rt_listen_gated(addr, on_accept, arg, NULL, err);
}

rt_listener *rt_listen_gated(const char *addr, rt_accept_fn on_accept, void *arg, rt_gate *gate, int *err)
{
    return rt_listen_ex(addr, on_accept, arg, gate, false, err);
}

rt_listener *rt_listen_ex(const char *addr, rt_accept_fn on_accept, void *arg, rt_gate *gate, bool share_port,
                          int *err)
{
    char host[256];
    int port;
    if (bz_parse_addr(addr, host, sizeof host, &port) != 0) {
        *err = -EINVAL;
        return NULL;
    }
    int n = rt_nloops();
    if (port != 0 && !share_port) {
        /* Our loops' sockets form an SO_REUSEPORT group, which another
         * process (same user) could join silently — a second server
         * started on the same port by mistake would take half the
         * connections.  A bind without SO_REUSEPORT first fails with
         * EADDRINUSE if anyone listens there; then the group is made. */
        int got = 0;
        int probe = bind_one(host, port, &got, false, false);
        if (probe < 0) {
            *err = probe;
            return NULL;
        }
        close(probe);
    }
    rt_listener *L = calloc(1, sizeof *L + (size_t)n * sizeof(lsock));
    if (!L)
        rt__panic("out of memory");
    L->on_accept = on_accept;
    L->arg = arg;
    L->n = n;
    for (int i = 0; i < n; i++) {
        /* The first bind settles the port (port 0 picks one); the others
         * join it through SO_REUSEPORT. */
        int got = 0;
        int fd = bind_one(host, i == 0 ? port : L->port, &got, n > 1 || share_port, true);
        if (fd < 0) {
            for (int j = 0; j < i; j++)
                close(L->socks[j].io.fd);
            free(L);
            *err = fd;
            return NULL;
        }
        if (i == 0)
            L->port = got;
        L->socks[i].io.fd = fd;
        L->socks[i].io.on_event = accept_ready;
        L->socks[i].owner = L;
    }
    atomic_store(&L->refs, n);
    if (gate) {
        rt_gate_ref(gate);
        L->gate = gate;
    }
    for (int i = 0; i < n; i++)
        rt_post(rt_loop_at(i), lsock_register, &L->socks[i]);
    return L;
}

int rt_listener_port(const rt_listener *l) { return l->port; }

void rt_listener_close(rt_listener *l)
{
    for (int i = 0; i < l->n; i++)
        rt_post(rt_loop_at(i), lsock_close, &l->socks[i]);
}

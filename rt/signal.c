/* rt/signal.c — process signals.
 *
 * SIGTERM/SIGINT are blocked in every thread and read from a signalfd on
 * loop 0: the first cancels rt_shutdown_ctx(), a second one exits at once.
 * SIGHUP comes through the same signalfd and starts the registered reload
 * callback on a coroutine (rt_on_sighup).
 *
 * SIGSEGV on a coroutine's guard page is reported as a stack overflow
 * (then the process dies by the signal, keeping the core dump): a handler
 * on an alternate signal stack, since the faulting stack has no room. */
#include "rt/rt-private.h"

#include <bazaar/log.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define ALTSTACK_SIZE (64 * 1024)

/* ---- guard page --------------------------------------------------------------- */
#ifndef RT_ASAN /* ASan has its own SEGV and stack-overflow reporting */

static void segv_handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    rt_loop *l = rt__cur;
    rt_coro *co = l ? l->current : NULL;
    char *addr = si->si_addr;
    if (co && addr >= co->map && addr < co->stack_lo) {
        char msg[160];
        int n = snprintf(msg, sizeof msg,
                         "bazaar: fatal: coroutine stack overflow (guard page hit at %p, stack %p-%p, loop %d)\n",
                         (void *)addr, (void *)co->stack_lo, (void *)(co->stack_lo + co->stack_size),
                         l->index);
        if (n > 0) {
            ssize_t w = write(STDERR_FILENO, msg, (size_t)n);
            (void)w;
        }
    }
    /* Restore the default action; returning re-runs the faulting access,
     * which now kills the process with the original signal. */
    signal(sig, SIG_DFL);
}
#endif

void rt__signals_install_guard(rt_loop *l)
{
#ifndef RT_ASAN
    l->altstack = malloc(ALTSTACK_SIZE);
    if (!l->altstack)
        return;
    stack_t ss = {.ss_sp = l->altstack, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = segv_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
#else
    (void)l;
#endif
}

void rt__signals_remove_guard(rt_loop *l)
{
    if (!l->altstack)
        return;
    stack_t ss = {.ss_flags = SS_DISABLE};
    sigaltstack(&ss, NULL);
    free(l->altstack);
    l->altstack = NULL;
}

/* ---- SIGTERM / SIGINT ------------------------------------------------------------- */

static int g_sigfd = -1;
static rt_io g_sigio;
static int g_count;
static sigset_t g_oldmask;
static pthread_mutex_t g_hup_lk = PTHREAD_MUTEX_INITIALIZER;
static rt_fn g_hup_fn;
static void *g_hup_arg;

void rt_on_sighup(rt_fn fn, void *arg)
{
    pthread_mutex_lock(&g_hup_lk);
    g_hup_fn = fn;
    g_hup_arg = arg;
    pthread_mutex_unlock(&g_hup_lk);
}

/* SIGHUP: the reload callback on its own coroutine (it may park on files
 * read through the offload pool); the loop goes on meanwhile. */
static void on_hangup(void)
{
    pthread_mutex_lock(&g_hup_lk);
    rt_fn fn = g_hup_fn;
    void *arg = g_hup_arg;
    pthread_mutex_unlock(&g_hup_lk);
    if (fn)
        rt_go(fn, arg);
    else
        bz_log_info("SIGHUP ignored: nothing to reload");
}

static void on_signal(rt_io *io, uint32_t ev)
{
    (void)ev;
    struct signalfd_siginfo si;
    while (read(io->fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            on_hangup();
            continue;
        }
        if (++g_count > 1) {
            static const char msg[] = "bazaar: second signal, exiting now\n";
            ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
            (void)w;
            _exit(128 + (int)si.ssi_signo);
        }
        bz_log_info("shutting down", BZ_F_STR("signal", strsignal((int)si.ssi_signo)));
        rt_shutdown();
    }
}

static void sig_register(void *p)
{
    (void)p;
    g_sigio.fd = g_sigfd;
    g_sigio.loop = rt__cur;
    g_sigio.on_event = on_signal;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &g_sigio};
    epoll_ctl(rt__cur->epfd, EPOLL_CTL_ADD, g_sigfd, &ev);
}

int rt__signals_start(rt_loop *l0)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    /* Blocked before the other loop threads start, so they inherit it. */
    pthread_sigmask(SIG_BLOCK, &set, &g_oldmask);
    g_sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (g_sigfd < 0)
        return -errno;
    g_count = 0;
    rt_post(l0, sig_register, NULL);
    return 0;
}

void rt__signals_stop(void)
{
    if (g_sigfd >= 0)
        close(g_sigfd);
    g_sigfd = -1;
    pthread_sigmask(SIG_SETMASK, &g_oldmask, NULL);
}

/* app/pprof.c — Go's /debug/pprof on the admin listener.
 *
 *   GET /debug/pprof/                     an index of what follows
 *   GET /debug/pprof/profile?seconds=N    a CPU profile of N seconds (default
 *                                         30, at most 300) that `go tool pprof`
 *                                         reads and symbolises
 *   GET /debug/pprof/heap                 the heap profile, when tcmalloc's
 *                                         heap profiler runs (else 501, saying how)
 *   GET /debug/pprof/goroutine?debug=1|2  every live coroutine, as text: its
 *                                         request and what it is parked on
 *   GET, POST /debug/pprof/symbol         addresses to names, for pprof's
 *                                         remote symbolisation
 *
 * CPU profiles come from gperftools' libprofiler (Debian
 * libgoogle-perftools4), loaded with dlopen on the first request: its
 * SIGPROF sampler (100 Hz, ITIMER_PROF, every thread) writes the legacy
 * CPU profile format with the process's memory map, which pprof reads
 * and symbolises from the binary.  Writing the pprof protobuf ourselves
 * would mean an async-signal-safe unwinder and symbol tables; libprofiler
 * is a maintained one, costs nothing until asked (it is not even mapped
 * before the first profile), and a machine without it answers 501.
 *
 * The heap: glibc's malloc keeps no allocation sites, so there is no
 * profile to give unless the process runs on tcmalloc with its heap
 * profiler on (LD_PRELOAD=libtcmalloc.so.4 HEAPPROFILE=/tmp/bazaar.hprof);
 * then GetHeapProfile's text (legacy format, which pprof reads) is
 * served. */
#include "app/pprof.h"
#include "app/admin.h"

#include <bazaar/log.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROFILE_MAX_SECONDS 300

/* Under AddressSanitizer, SIGPROF on coroutine stacks yields false
 * "unknown-crash" reports in ordinary request frames (reproduced on the
 * commit before this endpoint existed, with LD_PRELOAD=libprofiler.so.0
 * CPUPROFILE=...): sanitizer builds answer 501 instead of dying. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PROFILE_UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define PROFILE_UNDER_SANITIZER 1
#endif
#endif

/* ---- CPU profile -------------------------------------------------------------------- */

static struct {
    pthread_once_t once;
    void *lib;
    int (*start)(const char *fname);
    void (*stop)(void);
} prof = {PTHREAD_ONCE_INIT, NULL, NULL, NULL};
static atomic_bool profiling;

static void x__load_profiler(void)
{
    prof.lib = dlopen("libprofiler.so.0", RTLD_NOW | RTLD_GLOBAL);
    if (!prof.lib)
        return;
    *(void **)&prof.start = dlsym(prof.lib, "ProfilerStart");
    *(void **)&prof.stop = dlsym(prof.lib, "ProfilerStop");
    if (!prof.start || !prof.stop)
        prof.lib = NULL;
}

/* Reads the whole file at fd into b.  0 or -errno. */
static int x__slurp(int fd, bz_buf *b)
{
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return 0;
        bz_buf_append(b, chunk, (size_t)n);
    }
}

/* ProfilerStop prints "PROFILE: interrupts/evictions/bytes = ..." on
 * stderr, which would be the one line of a JSON log that is not JSON.
 * stderr points at a temporary file while it stops; whatever else was
 * written there meanwhile (log lines of other threads: one write each)
 * is passed on. */
static void x__stop_quietly(void)
{
    char path[] = "/tmp/bazaar-stderr-XXXXXX";
    int tmp = mkstemp(path);
    int saved = tmp >= 0 ? dup(2) : -1;
    if (tmp < 0 || saved < 0) {
        if (tmp >= 0)
            close(tmp), unlink(path);
        prof.stop();
        return;
    }
    unlink(path);
    dup2(tmp, 2);
    prof.stop();
    dup2(saved, 2);
    close(saved);
    lseek(tmp, 0, SEEK_SET);
    bz_buf b = BZ_BUF_INIT;
    if (x__slurp(tmp, &b) == 0 && b.len) {
        for (size_t at = 0; at < b.len;) {
            const char *nl = memchr(b.data + at, '\n', b.len - at);
            size_t end = nl ? (size_t)(nl - b.data) + 1 : b.len;
            if (strncmp(b.data + at, "PROFILE: ", 9) != 0 && write(2, b.data + at, end - at) < 0)
                break;
            at = end;
        }
    }
    bz_buf_free(&b);
    close(tmp);
}

static int h_profile(http_req *r, void *data)
{
    (void)data;
    int64_t seconds = 30;
    const char *s = http_query_get(r, "seconds");
    if (s) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (!*s || *end || v < 1 || v > PROFILE_MAX_SECONDS)
            return http_send_problem(r, 400, "invalid_argument", "seconds: want a whole number from 1 to 300");
        seconds = v;
    }
#ifdef PROFILE_UNDER_SANITIZER
    return http_send_problem(r, 501, "unavailable", "CPU profiles are off in sanitizer builds (SIGPROF on coroutine stacks)");
#endif
    pthread_once(&prof.once, x__load_profiler);
    if (!prof.lib)
        return http_send_problem(r, 501, "unavailable",
                                 "CPU profiles need gperftools' libprofiler.so.0 (Debian: libgoogle-perftools4)");
    bool expect = false;
    if (!atomic_compare_exchange_strong(&profiling, &expect, true))
        return http_send_problem(r, 409, "profile_running", "another CPU profile is being taken; try again after it");
    char path[] = "/tmp/bazaar-cpu-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        atomic_store(&profiling, false);
        return http_send_problem(r, 500, "internal", "cannot create a temporary file for the profile");
    }
    if (!prof.start(path)) {
        close(fd);
        unlink(path);
        atomic_store(&profiling, false);
        return http_send_problem(r, 500, "internal", "the profiler did not start (CPUPROFILE set in the environment?)");
    }
    bz_log_info("cpu profile started", BZ_F_INT("seconds", seconds));
    /* A client that goes away ends the profile early (r->ctx). */
    int w = rt_sleep(r->ctx, seconds * BZ_NS_PER_S);
    x__stop_quietly();
    atomic_store(&profiling, false);
    bz_buf *b = bz_arena_buf(r->arena);
    int rd = x__slurp(fd, b);
    close(fd);
    unlink(path);
    if (w == -ECANCELED || rd < 0)
        return rd < 0 ? http_send_problem(r, 500, "internal", "cannot read the profile back") : 0;
    http_add_header(r, "Content-Disposition", "attachment; filename=\"profile\"");
    return http_send(r, 200, "application/octet-stream", b->data, b->len);
}

/* ---- heap --------------------------------------------------------------------------- */

static int h_heap(http_req *r, void *data)
{
    (void)data;
    int (*running)(void);
    char *(*get)(void);
    *(void **)&running = dlsym(RTLD_DEFAULT, "IsHeapProfilerRunning");
    *(void **)&get = dlsym(RTLD_DEFAULT, "GetHeapProfile");
    if (!running || !get || !running()) {
        static const char why[] =
            "no heap profile: glibc's malloc keeps no allocation sites.  Start bazaar on tcmalloc with its heap\n"
            "profiler (Debian libgoogle-perftools4), e.g.\n"
            "  LD_PRELOAD=libtcmalloc.so.4 HEAPPROFILE=/tmp/bazaar.hprof bazaar serve ...\n"
            "and this endpoint serves the live heap profile for `go tool pprof`.\n";
        return http_send(r, 501, "text/plain; charset=utf-8", why, sizeof why - 1);
    }
    char *p = get();
    if (!p)
        return http_send_problem(r, 500, "internal", "the heap profiler returned nothing");
    bz_arena_defer_fn(r->arena, free, p); /* tcmalloc's malloc'd text: the request's now */
    return http_send(r, 200, "application/octet-stream", p, strlen(p));
}

/* ---- coroutines -------------------------------------------------------------------- */

typedef struct {
    bz_buf *out;
    int64_t n;
    bool each;          /* debug=2: every coroutine; else grouped */
    /* debug=1: distinct (why, note, route) with counts */
    struct group {
        const char *why, *what, *detail, *route;
        int64_t n;
    } g[256];
    int ng;
} dump_state;

static void x__secs(bz_buf *b, int64_t ns)
{
    bz_buf_printf(b, "%.3fs", (double)ns / 1e9);
}

static void x__one(const rt_coro_info *in, void *arg)
{
    dump_state *d = arg;
    d->n++;
    const http_req *r = in->local; /* the http layer's: the request being served (http/trace.c) */
    if (!d->each) {
        const char *why = in->state ? (in->why ? in->why : "parked") : "runnable";
        const char *route = r ? (r->pattern ? r->pattern : "(grpc or unmatched)") : NULL;
        for (int i = 0; i < d->ng; i++) {
            struct group *g = &d->g[i];
            if (g->why == why && g->what == in->note.what && g->detail == in->note.detail && g->route == route) {
                g->n++;
                return;
            }
        }
        if (d->ng < (int)(sizeof d->g / sizeof d->g[0]))
            d->g[d->ng++] = (struct group){why, in->note.what, in->note.detail, route, 1};
        return;
    }
    bz_buf *b = d->out;
    bz_buf_printf(b, "coroutine %d.%llu [", in->loop, (unsigned long long)in->id);
    if (!in->state) {
        bz_buf_append_c(b, "runnable");
    } else {
        bz_buf_append_c(b, in->why ? in->why : "parked");
        if (in->fd >= 0)
            bz_buf_printf(b, " fd %d", in->fd);
        bz_buf_append_c(b, ", ");
        x__secs(b, in->parked_ns);
    }
    bz_buf_printf(b, "]: loop %d, age ", in->loop);
    x__secs(b, in->age_ns);
    bz_buf_putc(b, '\n');
    if (r) {
        bz_buf_printf(b, "    request: %s", r->pattern ? r->pattern : "(no route pattern)");
        bz_buf_printf(b, "  %.*s %.*s", (int)r->method.n, r->method.p, (int)(r->path.n < 200 ? r->path.n : 200),
                      r->path.p);
        bz_buf_printf(b, "  trace_id %s  age ", r->trace.trace_id);
        x__secs(b, bz_now_ns() - r->start_ns);
        bz_buf_printf(b, "  peer %s\n", r->peer);
    }
    if (in->note.what)
        bz_buf_printf(b, "    in %s: %s\n", in->note.what, in->note.detail ? in->note.detail : "");
    bz_buf_putc(b, '\n');
}

static int h_goroutine(http_req *r, void *data)
{
    (void)data;
    const char *dbg = http_query_get(r, "debug");
    if (dbg && strcmp(dbg, "0") && strcmp(dbg, "1") && strcmp(dbg, "2"))
        return http_send_problem(r, 400, "invalid_argument", "debug: want 0, 1 or 2");
    bz_buf *out = bz_arena_buf(r->arena);
    dump_state *d = bz_arena_calloc(r->arena, 1, sizeof *d);
    d->out = out;
    d->each = dbg && !strcmp(dbg, "2");
    /* A loop stuck in a long call answers late or never: give up after 5 s
     * (the loops not asked yet are skipped, the late one's answer dropped). */
    rt_ctx wait;
    rt_ctx_init_timeout(&wait, r->ctx, 5 * BZ_NS_PER_S);
    int rc = rt_coro_dump(&wait, x__one, d);
    rt_ctx_release(&wait);
    if (rc)
        return rt_ctx_err(r->ctx) ? 0 : http_send_problem(r, 503, "timeout", "an event loop did not answer within 5 s");
    bz_buf *head = bz_arena_buf(r->arena);
    bz_buf_printf(head, "bazaar coroutine dump: %lld coroutines on %d loops (this request's included)\n\n",
                  (long long)d->n, rt_nloops());
    if (!d->each) {
        for (int i = 0; i < d->ng; i++) {
            struct group *g = &d->g[i];
            bz_buf_printf(head, "%lld coroutines [%s]", (long long)g->n, g->why);
            if (g->route)
                bz_buf_printf(head, " request %s", g->route);
            if (g->what)
                bz_buf_printf(head, " in %s: %s", g->what, g->detail ? g->detail : "");
            bz_buf_putc(head, '\n');
        }
        bz_buf_append_c(head, "\n(debug=2 lists every coroutine with its request, trace id and ages)\n");
    }
    bz_buf_append(head, out->data ? out->data : "", out->len);
    return http_send(r, 200, "text/plain; charset=utf-8", head->data, head->len);
}

/* ---- symbols ---------------------------------------------------------------------------
 *
 * `go tool pprof http://...` symbolises what it can from the binaries on
 * its own machine, then posts the addresses left (shared libraries
 * without debug symbols) here, as net/http/pprof's /symbol takes them:
 * "0x1234+0x5678".  Each one dladdr can name (an exported symbol) comes
 * back as "0x1234 name"; the others are left out.  dladdr only looks the
 * address up in the loaded objects' tables: it never reads memory there,
 * so any number a client sends is safe. */
static int h_symbol(http_req *r, void *data)
{
    (void)data;
    bz_buf *out = bz_arena_buf(r->arena);
    bz_buf_append_c(out, "num_symbols: 1\n");
    if (bz_str_eq_c(r->method, "POST")) {
        const char *body;
        size_t n;
        int rc = http_read_body(r, &body, &n);
        if (rc)
            return rc == -EMSGSIZE ? http_send_problem(r, 413, "body_too_large", "too many addresses") : rc;
        for (size_t at = 0; at < n;) {
            size_t end = at;
            while (end < n && body[end] != '+')
                end++;
            char num[24];
            size_t len = end - at;
            if (len > 0 && len < sizeof num) {
                memcpy(num, body + at, len);
                num[len] = 0;
                char *stop;
                unsigned long long a = strtoull(num, &stop, 0);
                Dl_info di;
                if (*stop == 0 && a && dladdr((void *)(uintptr_t)a, &di) && di.dli_sname)
                    bz_buf_printf(out, "%#llx %s\n", a, di.dli_sname);
            }
            at = end + 1;
        }
    }
    return http_send(r, 200, "text/plain; charset=utf-8", out->data, out->len);
}

static int h_index(http_req *r, void *data)
{
    (void)data;
    static const char page[] =
        "<!doctype html><meta charset=utf-8><title>bazaar /debug/pprof</title>"
        "<h1>/debug/pprof</h1><ul>"
        "<li><a href=\"profile?seconds=30\">profile</a>: CPU profile (<code>go tool pprof "
        "http://HOST/debug/pprof/profile?seconds=30</code>)"
        "<li><a href=\"heap\">heap</a>: heap profile (tcmalloc's heap profiler only)"
        "<li><a href=\"goroutine?debug=1\">goroutine?debug=1</a>: coroutines grouped by what they wait on"
        "<li><a href=\"goroutine?debug=2\">goroutine?debug=2</a>: every coroutine, its request and what it waits on"
        "</ul><p><a href=\"/\">console</a>";
    return http_send(r, 200, "text/html; charset=utf-8", page, sizeof page - 1);
}

void app_pprof_routes(http_mux *mux)
{
    static const app_route routes[] = {
        {"GET /debug/pprof/{$}", h_index},
        {"GET /debug/pprof/profile", h_profile},
        {"GET /debug/pprof/heap", h_heap},
        {"GET /debug/pprof/goroutine", h_goroutine},
        {"GET /debug/pprof/symbol", h_symbol},
        {"POST /debug/pprof/symbol", h_symbol},
    };
    app_routes_add(mux, routes, sizeof routes / sizeof routes[0], NULL);
}

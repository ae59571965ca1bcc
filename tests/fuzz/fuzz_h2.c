/* tests/fuzz/fuzz_h2.c — libFuzzer target: arbitrary bytes as an HTTP/2
 * connection's input after the client preface, through the real server
 * code (server.c hands the connection to h2.c: the flood guard, the frame
 * layer, HPACK, stream coroutines) with a trivial handler that reads the
 * body and streams a response with a trailer.
 *
 * The runtime runs on its own thread for the whole process; each input is
 * a job posted to its loop: a socketpair whose one end the server adopts,
 * the input written to the other, the answers read until the server
 * closes, then a wait until the connection is freed — so a leak or a
 * use-after-free of connection or stream state shows up under ASan. */
#include "http/h2-private.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static http_server *srv;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static bool ready, done;

typedef struct job {
    const uint8_t *data;
    size_t size;
} job;

static int handler(http_req *r, void *d)
{
    char buf[512];
    ssize_t n;
    int64_t total = 0;
    for (int i = 0; i < 10000 && (n = http_body_read(r, buf, sizeof buf)) > 0; i++)
        total += n;
    /* The budgets: a large message's reservation, and a paced answer
     * (64 KiB slices, parked while the client's window is shut). */
    if (total > 0 && http_body_reserve(r, 100000) == 0)
        http_body_release(r);
    http_set_status(r, 200);
    http_add_header(r, "Content-Type", "text/plain");
    static const char pad[70000];
    if (total > 20000 && http_write_paced(r, pad, sizeof pad))
        return 0;
    http_write(r, "hello ", 6);
    if (http_flush(r))
        return 0;
    char t[32];
    int k = snprintf(t, sizeof t, "%lld", (long long)total);
    http_write(r, t, (size_t)k);
    http_add_trailer(r, "x-total", t);
    return 0;
}

static int64_t open_conns(void)
{
    pthread_mutex_lock(&srv->conns.lk);
    int64_t n = srv->conns.count;
    pthread_mutex_unlock(&srv->conns.lk);
    return n;
}

static void run_job(void *p)
{
    job *j = p;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0) {
        http__server_adopt(srv, sv[0]);
        rt_io io = {0}; /* (rt_io_open leaves the TLS state alone) */
        if (rt_io_open(&io, sv[1]) == 0) {
            static const char pre[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
            char out[16384];
            int64_t dl = bz_now_ns() + 2 * BZ_NS_PER_S;
            if (rt_write_all(&io, pre, 24, NULL, dl) == 0 && rt_write_all(&io, j->data, j->size, NULL, dl) == 0) {
                /* Let the handlers answer before the client goes away. */
                for (int i = 0; i < 20; i++)
                    if (rt_read(&io, out, sizeof out, NULL, bz_now_ns() + 2 * BZ_NS_PER_MS) <= 0 && i > 3)
                        break;
            }
            shutdown(sv[1], SHUT_WR);
            for (int i = 0; i < 10000; i++)
                if (rt_read(&io, out, sizeof out, NULL, bz_now_ns() + 2 * BZ_NS_PER_S) <= 0)
                    break;
            rt_io_close(&io);
        } else {
            close(sv[1]);
        }
        for (int i = 0; i < 5000 && open_conns() > 0; i++)
            rt_sleep(NULL, BZ_NS_PER_MS);
        if (open_conns() > 0)
            abort(); /* a connection that never went away */
    }
    pthread_mutex_lock(&mu);
    done = true;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

static void rt_main(void *arg)
{
    http_server_opts o = {
        .addr = "127.0.0.1:0",
        .read_header_timeout_ns = BZ_NS_PER_S,
        .read_timeout_ns = BZ_NS_PER_S,
        .write_timeout_ns = BZ_NS_PER_S,
        .idle_timeout_ns = BZ_NS_PER_S,
        .shutdown_grace_ns = BZ_NS_PER_S,
        .max_header_bytes = 4096,
        .max_body_bytes = 65536,
        .h2_max_concurrent_streams = 16,
    };
    int e;
    srv = http_server_new(&o, (http_handler){handler, NULL}, &e);
    if (!srv)
        abort();
    pthread_mutex_lock(&mu);
    ready = true;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    rt_park(NULL, BZ_NO_DEADLINE, NULL); /* the loop serves jobs until the process exits */
}

static void *rt_thread(void *arg)
{
    rt_options o = {.threads = 1};
    rt_run(&o, rt_main, NULL);
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pthread_t th;
    if (!th) {
        pthread_create(&th, NULL, rt_thread, NULL);
        pthread_mutex_lock(&mu);
        while (!ready)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
    }
    job j = {data, size};
    done = false;
    rt_go_on(rt_loop_at(0), run_job, &j);
    pthread_mutex_lock(&mu);
    while (!done)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return 0;
}

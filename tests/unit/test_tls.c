/* tests/unit/test_tls.c — TLS sessions on rt_io (rt/tls.h): server and
 * client handshakes over socketpairs on the runtime, ALPN, parked and
 * non-parking reads and writes through the session (a concurrent reader
 * and writer on one connection), certificate verification (wrong CA,
 * wrong host name, IP SANs), garbage and silence instead of a ClientHello,
 * reloading the server's pair, and the client over TCP against openssl
 * s_server (a server not written here).  Certificates are made by the openssl
 * command line in a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <bazaar/tls.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[64];

static void path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

/* Two CAs; "leaf" (CN=leaf, SAN localhost + 127.0.0.1) signed by the
 * first, "second" (CN=second, same SANs) by the other. */
static int make_certs(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/bz-tls-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "cd %s && "
             "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext && "
             "for ca in ca ca2; do openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "  -keyout $ca.key -out $ca.pem -subj /CN=$ca -days 2 || exit 1; done && "
             "for l in leaf:ca second:ca2; do n=${l%%:*}; ca=${l#*:}; "
             "  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key -out $n.csr "
             "    -subj /CN=$n || exit 1; "
             "  openssl x509 -req -in $n.csr -CA $ca.pem -CAkey $ca.key -CAcreateserial -out $n.pem -days 2 "
             "    -extfile ext || exit 1; done",
             dir);
    char full[2200];
    snprintf(full, sizeof full, "(%s) >/dev/null 2>&1", cmd);
    return system(full) == 0 ? 0 : -1;
}

static int remove_certs(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void run(rt_fn fn)
{
    rt_options o = {.threads = 1};
    assert_int_equal(rt_run(&o, fn, NULL), 0);
}

static rt_tls_server *server(const char *leaf)
{
    char cert[128], key[128], err[256];
    snprintf(cert, sizeof cert, "%s/%s.pem", dir, leaf);
    snprintf(key, sizeof key, "%s/%s.key", dir, leaf);
    rt_tls_server *s = rt_tls_server_new(cert, key, err, sizeof err);
    if (!s)
        fail_msg("server context: %s", err);
    return s;
}

static rt_tls_client *client(const char *ca, const char *alpn)
{
    char caf[128], err[256];
    path(caf, sizeof caf, ca);
    rt_tls_client_opts o = {.ca_file = caf, .alpn = alpn};
    rt_tls_client *c = rt_tls_client_new(&o, err, sizeof err);
    if (!c)
        fail_msg("client context: %s", err);
    return c;
}

/* ---- a connected pair: the server side handshakes on a coroutine ---- */

typedef struct {
    rt_io io;
    rt_tls_server *srv;
    int64_t deadline;
    int rc;
    void (*then)(rt_io *io); /* after a successful handshake */
} side;

static void server_side(void *p)
{
    side *s = p;
    s->rc = rt_tls_accept(&s->io, s->srv, NULL, s->deadline);
    if (s->rc == 0 && s->then)
        s->then(&s->io);
}

/* Opens a socketpair; the server end handshakes on a new coroutine. */
static rt_coro *start_pair(side *s, rt_io *cli)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(rt_io_open(&s->io, sv[0]), 0);
    memset(cli, 0, sizeof *cli);
    assert_int_equal(rt_io_open(cli, sv[1]), 0);
    return rt_spawn_joinable(rt_loop_current(), server_side, s);
}

static int64_t soon(int64_t ms) { return bz_now_ns() + ms * BZ_NS_PER_MS; }

/* ---- handshake, ALPN, I/O through the session ---- */

#define BIG (1 << 20)

/* Server: "ping" by the non-parking pair, "pong" back, then echo to EOF. */
static void echo(rt_io *io)
{
    char b[4];
    size_t got = 0;
    while (got < 4) {
        ssize_t n = rt_io_try_read(io, b + got, 4 - got);
        if (n == -EAGAIN) {
            assert_int_equal(rt_wait_readable(io, NULL, soon(5000)), 0);
            continue;
        }
        assert_true(n > 0);
        got += (size_t)n;
    }
    assert_memory_equal(b, "ping", 4);
    size_t put = 0;
    while (put < 4) {
        ssize_t n = rt_io_try_write(io, &"pong"[put], 4 - put);
        if (n == -EAGAIN) {
            assert_int_equal(rt_wait_writable(io, NULL, soon(5000)), 0);
            continue;
        }
        assert_true(n > 0);
        put += (size_t)n;
    }
    static char buf[65536];
    for (;;) {
        ssize_t n = rt_read(io, buf, sizeof buf, NULL, soon(10000));
        assert_true(n >= 0);
        if (n == 0)
            break;
        assert_int_equal(rt_write_all(io, buf, (size_t)n, NULL, soon(10000)), 0);
    }
    rt_tls_shutdown(io);
}

static char *pattern(void)
{
    char *p = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        p[i] = (char)(i * 7 + i / 251);
    return p;
}

typedef struct {
    rt_io *io;
    const char *data;
    int rc;
} writer_arg;

/* Writes the pattern as small iovecs (gathered) and one big one, then
 * close_notify; runs while the main coroutine reads the echo. */
static void writer(void *p)
{
    writer_arg *w = p;
    struct iovec v[4] = {{(void *)w->data, 10}, {(void *)(w->data + 10), 300},
                         {(void *)(w->data + 310), 5000}, {(void *)(w->data + 5310), BIG - 5310}};
    w->rc = rt_writev_all(w->io, v, 4, NULL, soon(10000));
    rt_tls_shutdown(w->io);
}

static void echo_main(void *p)
{
    (void)p;
    side s = {.srv = server("leaf"), .then = echo};
    s.deadline = soon(5000);
    rt_io cli;
    rt_coro *co = start_pair(&s, &cli);
    rt_tls_client *c = client("ca.pem", "h2");
    assert_int_equal(rt_tls_connect(&cli, c, "localhost", NULL, soon(5000)), 0);
    assert_string_equal(rt_tls_alpn(&cli), "h2");
    assert_string_equal(rt_tls_version(&cli), "TLSv1.3");
    assert_int_equal(rt_write_all(&cli, "ping", 4, NULL, soon(5000)), 0);
    char b[4];
    size_t got = 0;
    while (got < 4) {
        ssize_t n = rt_read(&cli, b + got, 4 - got, NULL, soon(5000));
        assert_true(n > 0);
        got += (size_t)n;
    }
    assert_memory_equal(b, "pong", 4);
    char *data = pattern();
    writer_arg w = {&cli, data, -1};
    rt_coro *wc = rt_spawn_joinable(rt_loop_current(), writer, &w);
    char *back = malloc(BIG + 65536); /* room to notice extra bytes */
    got = 0;
    for (;;) {
        ssize_t n = rt_read(&cli, back + got, 65536, NULL, soon(10000));
        assert_true(n >= 0);
        if (n == 0)
            break;
        got += (size_t)n;
        assert_true(got <= BIG);
    }
    assert_int_equal(got, BIG);
    assert_memory_equal(back, data, BIG);
    assert_int_equal(rt_join(wc, NULL), 0);
    assert_int_equal(w.rc, 0);
    assert_int_equal(rt_join(co, NULL), 0);
    assert_int_equal(s.rc, 0);
    assert_string_equal(rt_tls_alpn(&s.io), "h2");
    rt_io_close(&s.io);
    rt_io_close(&cli);
    free(data);
    free(back);
    rt_tls_client_free(c);
    rt_tls_server_unref(s.srv);
}

static void handshake_alpn_and_io_through_the_session(void **state) { run(echo_main); }

/* ---- verification ---- */

static char last[256]; /* the client's rt_tls_last_error() of try_connect */

/* Handshakes once: returns the client's result, *srv_rc the server's. */
static int try_connect(rt_tls_server *srv, rt_tls_client *c, const char *host, int *srv_rc)
{
    side s = {.srv = srv, .deadline = soon(5000)};
    rt_io cli;
    rt_coro *co = start_pair(&s, &cli);
    int r = rt_tls_connect(&cli, c, host, NULL, soon(5000));
    /* Read before parking: the server side's failure is this thread's too. */
    snprintf(last, sizeof last, "%s", rt_tls_last_error());
    if (r == 0)
        assert_null(rt_tls_alpn(&cli)); /* none offered: none agreed */
    rt_io_close(&cli); /* a failed server side sees the close */
    assert_int_equal(rt_join(co, NULL), 0);
    *srv_rc = s.rc;
    rt_io_close(&s.io);
    return r;
}

static void verify_main(void *p)
{
    (void)p;
    rt_tls_server *srv = server("leaf");
    rt_tls_client *good = client("ca.pem", NULL), *other = client("ca2.pem", NULL);
    int sr;
    assert_int_equal(try_connect(srv, good, "localhost", &sr), 0);
    assert_int_equal(sr, 0);
    assert_int_equal(try_connect(srv, good, "127.0.0.1", &sr), 0); /* the IP SAN */
    assert_int_equal(try_connect(srv, other, "localhost", &sr), -EACCES);
    assert_non_null(strstr(last, "verif"));
    assert_int_not_equal(sr, 0);
    assert_int_equal(try_connect(srv, good, "example.com", &sr), -EACCES);
    assert_non_null(strstr(last, "hostname"));
    assert_int_equal(try_connect(srv, good, "127.0.0.2", &sr), -EACCES);
    rt_tls_client_free(good);
    rt_tls_client_free(other);
    rt_tls_server_unref(srv);
}

static void client_verifies_ca_and_host(void **state) { run(verify_main); }

/* ---- not a handshake ---- */

static void junk_main(void *p)
{
    (void)p;
    rt_tls_server *srv = server("leaf");
    /* Plain HTTP instead of a ClientHello: refused at once. */
    side s = {.srv = srv, .deadline = soon(5000)};
    rt_io cli;
    int64_t t0 = bz_now_ns();
    rt_coro *co = start_pair(&s, &cli);
    assert_int_equal(rt_write_all(&cli, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, NULL, soon(1000)), 0);
    assert_int_equal(rt_join(co, NULL), 0);
    assert_int_equal(s.rc, -EPROTO);
    assert_true(bz_now_ns() - t0 < 2 * BZ_NS_PER_S);
    assert_null(s.io.tls);
    rt_io_close(&s.io);
    rt_io_close(&cli);
    /* Half a ClientHello, then silence: the deadline ends it. */
    side q = {.srv = srv, .deadline = soon(300)};
    t0 = bz_now_ns();
    co = start_pair(&q, &cli);
    static const unsigned char half[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03};
    assert_int_equal(rt_write_all(&cli, half, sizeof half, NULL, soon(1000)), 0);
    assert_int_equal(rt_join(co, NULL), 0);
    assert_int_equal(q.rc, -ETIMEDOUT);
    int64_t took = bz_now_ns() - t0;
    assert_true(took >= 290 * BZ_NS_PER_MS && took < 3 * BZ_NS_PER_S);
    rt_io_close(&q.io);
    rt_io_close(&cli);
    rt_tls_server_unref(srv);
}

static void garbage_and_silence_end_the_handshake(void **state) { run(junk_main); }

/* ---- reload ---- */

typedef struct {
    rt_tls_server *srv;
    const char *cert, *key;
    int rc;
} reload_job;

static void reload_off_loop(void *p)
{
    reload_job *j = p;
    char err[256];
    j->rc = rt_tls_server_reload(j->srv, j->cert, j->key, err, sizeof err);
}

static void reload_main(void *p)
{
    (void)p;
    rt_tls_server *srv = server("leaf");
    rt_tls_client *ca = client("ca.pem", NULL), *ca2 = client("ca2.pem", NULL);
    char desc[256], err[256];
    rt_tls_server_describe(srv, desc, sizeof desc);
    assert_non_null(strstr(desc, "CN=leaf"));
    /* A session made before the reload... */
    side s = {.srv = srv, .deadline = soon(5000)};
    rt_io old;
    rt_coro *co = start_pair(&s, &old);
    assert_int_equal(rt_tls_connect(&old, ca, "localhost", NULL, soon(5000)), 0);
    assert_int_equal(rt_join(co, NULL), 0);
    assert_int_equal(s.rc, 0);
    /* A bad pair is refused and the current one kept. */
    char cert[128], key[128];
    path(cert, sizeof cert, "missing.pem");
    path(key, sizeof key, "leaf.key");
    assert_int_equal(rt_tls_server_reload(srv, cert, key, err, sizeof err), -1);
    assert_non_null(strstr(err, "missing.pem"));
    path(cert, sizeof cert, "leaf.pem");
    path(key, sizeof key, "second.key");
    assert_int_equal(rt_tls_server_reload(srv, cert, key, err, sizeof err), -1);
    assert_non_null(strstr(err, "mismatch"));
    int sr;
    assert_int_equal(try_connect(srv, ca, "localhost", &sr), 0);
    /* The second pair, loaded on an offload thread as bazaar does on
     * SIGHUP (the swap races with nothing here, but TSan sees the
     * cross-thread hand-over): new handshakes get it. */
    path(cert, sizeof cert, "second.pem");
    reload_job j = {srv, cert, key, -1};
    assert_int_equal(rt_offload(NULL, reload_off_loop, &j), 0);
    assert_int_equal(j.rc, 0);
    rt_tls_server_describe(srv, desc, sizeof desc);
    assert_non_null(strstr(desc, "second"));
    assert_int_equal(try_connect(srv, ca2, "localhost", &sr), 0);
    assert_int_equal(try_connect(srv, ca, "localhost", &sr), -EACCES);
    /* ...keeps working after it. */
    assert_int_equal(rt_write_all(&old, "x", 1, NULL, soon(5000)), 0);
    char b;
    assert_int_equal(rt_read(&s.io, &b, 1, NULL, soon(5000)), 1);
    assert_int_equal(rt_write_all(&s.io, "y", 1, NULL, soon(5000)), 0);
    assert_int_equal(rt_read(&old, &b, 1, NULL, soon(5000)), 1);
    assert_int_equal(b, 'y');
    rt_io_close(&old);
    rt_io_close(&s.io);
    rt_tls_client_free(ca);
    rt_tls_client_free(ca2);
    rt_tls_server_unref(srv);
}

static void reload_swaps_the_pair_for_new_handshakes(void **state) { run(reload_main); }

static void bad_files_are_one_line_errors(void **state)
{
    (void)state;
    char err[256], cert[128], key[128];
    path(cert, sizeof cert, "nope.pem");
    path(key, sizeof key, "leaf.key");
    assert_null(rt_tls_server_new(cert, key, err, sizeof err));
    assert_non_null(strstr(err, "cannot read"));
    path(cert, sizeof cert, "ext"); /* a file, not PEM */
    assert_null(rt_tls_server_new(cert, key, err, sizeof err));
    assert_non_null(strstr(err, "certificate"));
    assert_null(strchr(err, '\n'));
    rt_tls_client_opts o = {.ca_file = cert};
    assert_null(rt_tls_client_new(&o, err, sizeof err));
    rt_tls_client_opts sys = {0}; /* the system store */
    rt_tls_client *c = rt_tls_client_new(&sys, err, sizeof err);
    assert_non_null(c);
    rt_tls_client_free(c);
}

/* ---- the client against a server not written here ---- */

/* A free loopback port (bound, read, released). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static int s_port;

/* TCP connect (rt_connect_tcp) + TLS handshake, as a rediss:// client does. */
static int dial(rt_tls_client *c, const char *host, rt_io *io)
{
    int fd = rt_connect_tcp("127.0.0.1", s_port, NULL, soon(5000));
    if (fd < 0)
        return fd;
    memset(io, 0, sizeof *io);
    assert_int_equal(rt_io_open(io, fd), 0);
    int r = rt_tls_connect(io, c, host, NULL, soon(5000));
    if (r)
        rt_io_close(io);
    return r;
}

static void s_server_main(void *p)
{
    (void)p;
    rt_tls_client *good = client("ca.pem", NULL);
    rt_io io;
    int r = -1;
    for (int i = 0; i < 100 && r != 0; i++) { /* until s_server listens */
        r = dial(good, "localhost", &io);
        if (r)
            rt_sleep(NULL, 50 * BZ_NS_PER_MS);
    }
    assert_int_equal(r, 0);
    static const char req[] = "GET / HTTP/1.0\r\n\r\n";
    assert_int_equal(rt_write_all(&io, req, sizeof req - 1, NULL, soon(5000)), 0);
    char buf[8192];
    size_t got = 0;
    for (;;) {
        ssize_t n = rt_read(&io, buf + got, sizeof buf - 1 - got, NULL, soon(5000));
        assert_true(n >= 0);
        if (n == 0 || (got += (size_t)n) == sizeof buf - 1)
            break;
    }
    buf[got] = '\0';
    assert_non_null(strstr(buf, "HTTP/1.0 200 ok"));
    rt_io_close(&io);
    /* The system store does not know our CA. */
    rt_tls_client_opts sys = {0};
    char err[256];
    rt_tls_client *sysc = rt_tls_client_new(&sys, err, sizeof err);
    assert_int_equal(dial(sysc, "localhost", &io), -EACCES);
    rt_tls_client_free(sysc);
    rt_tls_client_free(good);
}

static void client_talks_to_openssl_s_server_over_tcp(void **state)
{
    (void)state;
    s_port = free_port();
    char port[16], cert[128], key[128];
    snprintf(port, sizeof port, "%d", s_port);
    path(cert, sizeof cert, "leaf.pem");
    path(key, sizeof key, "leaf.key");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int dn = open("/dev/null", 2);
        dup2(dn, 0), dup2(dn, 1), dup2(dn, 2);
        execlp("openssl", "openssl", "s_server", "-accept", port, "-cert", cert, "-key", key, "-www", (char *)NULL);
        _exit(127);
    }
    run(s_server_main);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(handshake_alpn_and_io_through_the_session),
        cmocka_unit_test(client_verifies_ca_and_host),
        cmocka_unit_test(garbage_and_silence_end_the_handshake),
        cmocka_unit_test(reload_swaps_the_pair_for_new_handshakes),
        cmocka_unit_test(bad_files_are_one_line_errors),
        cmocka_unit_test(client_talks_to_openssl_s_server_over_tcp),
    };
    return cmocka_run_group_tests_name("tls", tests, make_certs, remove_certs);
}

/* rt/tls.c — TLS sessions on rt_io with OpenSSL 3 (see tls.h).
 *
 * OpenSSL reads and writes the non-blocking socket itself (a socket BIO
 * on the fd); when it says WANT_READ or WANT_WRITE the socket returned
 * EAGAIN, so the rt_io's readiness flag is cleared and the coroutine
 * parks until the next edge — the same discipline as rt_read. */
#include <bazaar/tls.h>

#include "rt/rt-private.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* Records are at most 16 KiB: gathering small iovecs into one buffer of
 * that size makes one record of them instead of one each. */
#define GATHER 16384

static _Thread_local char last_err[256];

const char *rt_tls_last_error(void) { return last_err; }

/* Records why in last_err: `what`, then OpenSSL's reason, then clears
 * OpenSSL's error queue (it is per thread, shared by the loop's
 * coroutines). */
static void note(const char *what)
{
    unsigned long e = ERR_peek_last_error();
    const char *why = e ? ERR_reason_error_string(e) : NULL;
    snprintf(last_err, sizeof last_err, "%s%s%s", what, why ? ": " : "", why ? why : "");
    ERR_clear_error();
}

static int fail(char *err, size_t errlen, const char *fmt, const char *a)
{
    unsigned long e = ERR_peek_last_error();
    const char *why = e ? ERR_reason_error_string(e) : NULL;
    char head[224];
    snprintf(head, sizeof head, fmt, a);
    snprintf(err, errlen, "%s%s%s", head, why ? ": " : "", why ? why : "");
    ERR_clear_error();
    return -1;
}

/* What every context of ours has, server or client. */
static void common_options(SSL_CTX *c)
{
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    /* Renegotiation (TLS 1.2; 1.3 has none) is a DoS lever and a source
     * of WANT_WRITE in the middle of reads: refused.  An EOF without
     * close_notify reads as EOF: HTTP and RESP frame their own data. */
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION);
    /* Partial writes: a non-parking writer (HTTP/2's sender) takes what
     * the socket took.  Moving buffer: its output buffer may grow (and
     * move) between a WANT_WRITE and the retry.  Release buffers: an
     * idle connection keeps no 16 KiB record buffers. */
    SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
    /* Read ahead: one read(2) takes several records when they are there. */
    SSL_CTX_set_read_ahead(c, 1);
}

static bool readable_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        char head[200];
        snprintf(head, sizeof head, "cannot read %s: %s", path, strerror(errno));
        snprintf(err, errlen, "%s", head);
        return false;
    }
    fclose(f);
    return true;
}

/* ---- server --------------------------------------------------------------------------- */

struct rt_tls_server {
    pthread_mutex_t lk; /* guards cur: taken to start a session or swap */
    SSL_CTX *cur;
    _Atomic int refs;
};

/* ALPN by the server's preference: h2, then http/1.1; neither offered
 * means no ALPN (the client speaks HTTP/1.1). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const char *const pref[] = {"h2", "http/1.1"};
    for (size_t k = 0; k < sizeof pref / sizeof pref[0]; k++) {
        size_t pl = strlen(pref[k]);
        for (unsigned int i = 0; i < inlen;) {
            unsigned int l = in[i];
            if (i + 1 + l > inlen)
                break;
            if (l == pl && memcmp(in + i + 1, pref[k], pl) == 0) {
                *out = in + i + 1;
                *outlen = (unsigned char)l;
                return SSL_TLSEXT_ERR_OK;
            }
            i += 1 + l;
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static SSL_CTX *server_ctx(const char *cert, const char *key, char *err, size_t errlen)
{
    if (!readable_file(cert, err, errlen) || !readable_file(key, err, errlen))
        return NULL;
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    if (!c) {
        fail(err, errlen, "%s", "cannot make a TLS context");
        return NULL;
    }
    common_options(c);
    SSL_CTX_set_options(c, SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* TLS 1.2: forward-secret AEAD suites only (1.3's are all of that kind). */
    SSL_CTX_set_cipher_list(c, "ECDHE+AESGCM:ECDHE+CHACHA20");
    /* Resumption: tickets (stateless, the default for 1.3 and 1.2) plus the
     * server-side cache for 1.2 clients resuming by session id. */
    SSL_CTX_set_session_id_context(c, (const unsigned char *)"bazaar", 6);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_SERVER);
    /* ~1 KiB a session: 4096 bound the cache to a few MiB (OpenSSL's
     * default, 20480, to ~20 MiB) — only TLS 1.2 clients without ticket
     * support end up in it. */
    SSL_CTX_sess_set_cache_size(c, 4096);
    SSL_CTX_set_timeout(c, 3600);
    SSL_CTX_set_alpn_select_cb(c, alpn_select, NULL);
    if (SSL_CTX_use_certificate_chain_file(c, cert) != 1) {
        fail(err, errlen, "cannot load the certificate chain %s", cert);
        goto bad;
    }
    if (SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1) {
        fail(err, errlen, "cannot load the private key %s", key);
        goto bad;
    }
    if (SSL_CTX_check_private_key(c) != 1) {
        fail(err, errlen, "the private key %s does not match the certificate", key);
        goto bad;
    }
    return c;
bad:
    SSL_CTX_free(c);
    return NULL;
}

rt_tls_server *rt_tls_server_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    SSL_CTX *c = server_ctx(cert_file, key_file, err, errlen);
    if (!c)
        return NULL;
    rt_tls_server *s = calloc(1, sizeof *s);
    if (!s)
        rt__panic("out of memory");
    pthread_mutex_init(&s->lk, NULL);
    s->cur = c;
    atomic_store(&s->refs, 1);
    return s;
}

int rt_tls_server_reload(rt_tls_server *s, const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    SSL_CTX *c = server_ctx(cert_file, key_file, err, errlen);
    if (!c)
        return -1;
    pthread_mutex_lock(&s->lk);
    SSL_CTX *old = s->cur;
    s->cur = c;
    pthread_mutex_unlock(&s->lk);
    /* Sessions made from the old context hold references of their own. */
    SSL_CTX_free(old);
    return 0;
}

void rt_tls_server_describe(rt_tls_server *s, char *out, size_t outlen)
{
    pthread_mutex_lock(&s->lk);
    X509 *x = SSL_CTX_get0_certificate(s->cur);
    char subj[160] = "?", serial[80] = "?";
    if (x) {
        X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof subj);
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
        char *hex = bn ? BN_bn2hex(bn) : NULL;
        if (hex)
            snprintf(serial, sizeof serial, "%s", hex);
        OPENSSL_free(hex);
        BN_free(bn);
    }
    pthread_mutex_unlock(&s->lk);
    snprintf(out, outlen, "subject %s serial %s", subj, serial);
}

void rt_tls_server_ref(rt_tls_server *s) { atomic_fetch_add(&s->refs, 1); }

void rt_tls_server_unref(rt_tls_server *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1) {
        SSL_CTX_free(s->cur);
        pthread_mutex_destroy(&s->lk);
        free(s);
    }
}

/* ---- driving OpenSSL on the runtime ------------------------------------------------- */

/* After an SSL call on io failed with `ret`: parks for what OpenSSL wants
 * and returns 0 to retry, or the error to give up with. */
static int ssl_wait(rt_io *io, SSL *ssl, int ret, rt_ctx *ctx, int64_t deadline)
{
    int e = SSL_get_error(ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        io->readable = false; /* the socket said EAGAIN: the next edge sets it */
        return rt_wait_readable(io, ctx, deadline);
    case SSL_ERROR_WANT_WRITE:
        io->writable = false;
        return rt_wait_writable(io, ctx, deadline);
    case SSL_ERROR_ZERO_RETURN:
        note("the peer closed the TLS session");
        return -ECONNRESET;
    case SSL_ERROR_SYSCALL: {
        int se = errno;
        note(se ? strerror(se) : "the peer closed the connection");
        return se ? -se : -ECONNRESET;
    }
    default: {
        long v = SSL_get_verify_result(ssl);
        if (v != X509_V_OK) {
            snprintf(last_err, sizeof last_err, "certificate verification failed: %s",
                     X509_verify_cert_error_string(v));
            ERR_clear_error();
            return -EACCES;
        }
        note("TLS protocol error");
        return -EPROTO;
    }
    }
}

/* Watches OpenSSL's reads of the socket: with read-ahead it asks for as
 * much as its buffer holds, so a shorter answer means the socket is
 * drained — the next bytes raise a new edge.  Clearing `readable` then
 * saves the read that would only say EAGAIN, as rt_read does on a plain
 * socket (one system call per keep-alive request).  Bytes OpenSSL holds
 * are still there: readers check rt_io_pending. */
static long raw_read_seen(BIO *b, int oper, const char *argp, size_t len, int argi, long argl, int ret,
                          size_t *processed)
{
    (void)argp, (void)argi, (void)argl;
    if (oper == (BIO_CB_READ | BIO_CB_RETURN) && ret > 0 && processed && *processed < len)
        ((rt_io *)BIO_get_callback_arg(b))->readable = false;
    return ret;
}

static int handshake(rt_io *io, SSL *ssl, rt_ctx *ctx, int64_t deadline)
{
    if (!SSL_set_fd(ssl, io->fd)) {
        note("cannot attach the socket");
        SSL_free(ssl);
        return -ENOMEM;
    }
    BIO *rb = SSL_get_rbio(ssl);
    BIO_set_callback_ex(rb, raw_read_seen);
    BIO_set_callback_arg(rb, (char *)io);
    for (;;) {
        if (io->fd < 0) {
            SSL_free(ssl);
            return -EBADF;
        }
        ERR_clear_error();
        int r = SSL_do_handshake(ssl);
        if (r == 1) {
            io->tls = ssl;
            return 0;
        }
        int w = ssl_wait(io, ssl, r, ctx, deadline);
        if (w) {
            SSL_free(ssl);
            return w;
        }
    }
}

int rt_tls_accept(rt_io *io, rt_tls_server *s, rt_ctx *ctx, int64_t deadline)
{
    last_err[0] = '\0';
    pthread_mutex_lock(&s->lk);
    SSL *ssl = SSL_new(s->cur); /* takes its own reference to the context */
    pthread_mutex_unlock(&s->lk);
    if (!ssl) {
        note("cannot make a TLS session");
        return -ENOMEM;
    }
    SSL_set_accept_state(ssl);
    return handshake(io, ssl, ctx, deadline);
}

ssize_t rt__tls_read(rt_io *io, void *buf, size_t n, rt_ctx *ctx, int64_t deadline)
{
    for (;;) {
        if (io->fd < 0)
            return -EBADF;
        SSL *ssl = io->tls;
        size_t got;
        ERR_clear_error();
        int r = SSL_read_ex(ssl, buf, n, &got);
        if (r == 1)
            return (ssize_t)got;
        if (SSL_get_error(ssl, r) == SSL_ERROR_ZERO_RETURN)
            return 0; /* close_notify, or EOF (SSL_OP_IGNORE_UNEXPECTED_EOF) */
        int w = ssl_wait(io, ssl, r, ctx, deadline);
        if (w)
            return w;
    }
}

static int tls_write_all(rt_io *io, const char *p, size_t n, rt_ctx *ctx, int64_t deadline)
{
    size_t off = 0;
    while (off < n) {
        if (io->fd < 0)
            return -EBADF;
        SSL *ssl = io->tls;
        size_t put;
        ERR_clear_error();
        int r = SSL_write_ex(ssl, p + off, n - off, &put);
        if (r == 1) {
            off += put;
            continue;
        }
        int w = ssl_wait(io, ssl, r, ctx, deadline);
        if (w)
            return w == -ECONNRESET ? -EPIPE : w;
    }
    return 0;
}

/* Copies iovecs (at most GATHER bytes) into one buffer and writes it;
 * advances *iov / *iovcnt past what it wrote.  Its own frame, so the
 * buffer touches a coroutine's stack only when small iovecs come. */
__attribute__((noinline)) static int gather_write(rt_io *io, struct iovec **iovp, int *iovcnt, rt_ctx *ctx,
                                                  int64_t deadline)
{
    char chunk[GATHER];
    size_t len = 0;
    struct iovec *iov = *iovp;
    int cnt = *iovcnt;
    while (cnt > 0 && len < GATHER) {
        size_t take = iov->iov_len < GATHER - len ? iov->iov_len : GATHER - len;
        memcpy(chunk + len, iov->iov_base, take);
        len += take;
        iov->iov_base = (char *)iov->iov_base + take;
        iov->iov_len -= take;
        if (iov->iov_len == 0) {
            iov++;
            cnt--;
        }
    }
    *iovp = iov;
    *iovcnt = cnt;
    return tls_write_all(io, chunk, len, ctx, deadline);
}

int rt__tls_writev_all(rt_io *io, struct iovec *iov, int iovcnt, rt_ctx *ctx, int64_t deadline)
{
    while (iovcnt > 0) {
        if (iov->iov_len == 0) {
            iov++;
            iovcnt--;
            continue;
        }
        int r;
        if (iov->iov_len >= GATHER || iovcnt == 1) {
            r = tls_write_all(io, iov->iov_base, iov->iov_len, ctx, deadline);
            iov++;
            iovcnt--;
        } else {
            r = gather_write(io, &iov, &iovcnt, ctx, deadline);
        }
        if (r)
            return r;
    }
    return 0;
}

/* The non-parking pair: -EAGAIN whichever direction OpenSSL waits for. */
static ssize_t try_result(rt_io *io, SSL *ssl, int r)
{
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ:
        io->readable = false;
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        io->writable = false;
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL: {
        int se = errno;
        note(se ? strerror(se) : "the peer closed the connection");
        return se ? -se : -ECONNRESET;
    }
    default:
        note("TLS protocol error");
        return -EPROTO;
    }
}

ssize_t rt__tls_try_read(rt_io *io, void *buf, size_t n)
{
    SSL *ssl = io->tls;
    size_t got;
    ERR_clear_error();
    int r = SSL_read_ex(ssl, buf, n, &got);
    return r == 1 ? (ssize_t)got : try_result(io, ssl, r);
}

ssize_t rt__tls_try_write(rt_io *io, const void *buf, size_t n)
{
    SSL *ssl = io->tls;
    size_t put;
    ERR_clear_error();
    int r = SSL_write_ex(ssl, buf, n, &put);
    if (r == 1)
        return (ssize_t)put;
    ssize_t e = try_result(io, ssl, r);
    return e == 0 ? -EPIPE : e; /* a write has no EOF */
}

bool rt__tls_pending(const rt_io *io) { return SSL_has_pending(io->tls) == 1; }

void rt__tls_free(rt_io *io)
{
    SSL_free(io->tls);
    io->tls = NULL;
}

void rt_tls_shutdown(rt_io *io)
{
    if (io->fd < 0)
        return;
    if (io->tls) {
        ERR_clear_error();
        SSL_shutdown(io->tls); /* queues close_notify; never waits for the peer's */
        ERR_clear_error();
    }
    shutdown(io->fd, SHUT_WR);
}

const char *rt_tls_alpn(const rt_io *io)
{
    if (!io->tls)
        return NULL;
    const unsigned char *p;
    unsigned int n;
    SSL_get0_alpn_selected(io->tls, &p, &n);
    if (n == 2 && memcmp(p, "h2", 2) == 0)
        return "h2";
    if (n == 8 && memcmp(p, "http/1.1", 8) == 0)
        return "http/1.1";
    return NULL;
}

const char *rt_tls_version(const rt_io *io) { return io->tls ? SSL_get_version(io->tls) : NULL; }

bool rt_tls_resumed(const rt_io *io) { return io->tls && SSL_session_reused(io->tls) == 1; }

/* ---- client ----------------------------------------------------------------------------- */

struct rt_tls_client {
    SSL_CTX *ctx;
};

rt_tls_client *rt_tls_client_new(const rt_tls_client_opts *o, char *err, size_t errlen)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (!c) {
        fail(err, errlen, "%s", "cannot make a TLS context");
        return NULL;
    }
    common_options(c);
    if (!o->insecure)
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    if (o->ca_file) {
        if (!readable_file(o->ca_file, err, errlen))
            goto bad;
        if (SSL_CTX_load_verify_locations(c, o->ca_file, NULL) != 1) {
            fail(err, errlen, "cannot load the CA file %s", o->ca_file);
            goto bad;
        }
    } else if (SSL_CTX_set_default_verify_paths(c) != 1) {
        fail(err, errlen, "%s", "cannot load the system CA store");
        goto bad;
    }
    if (o->cert_file || o->key_file) {
        if (!o->cert_file || !o->key_file) {
            snprintf(err, errlen, "a client certificate needs both a certificate and a key file");
            goto bad;
        }
        if (!readable_file(o->cert_file, err, errlen) || !readable_file(o->key_file, err, errlen))
            goto bad;
        if (SSL_CTX_use_certificate_chain_file(c, o->cert_file) != 1) {
            fail(err, errlen, "cannot load the client certificate %s", o->cert_file);
            goto bad;
        }
        if (SSL_CTX_use_PrivateKey_file(c, o->key_file, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(c) != 1) {
            fail(err, errlen, "cannot use the client key %s", o->key_file);
            goto bad;
        }
    }
    if (o->alpn) {
        size_t n = strlen(o->alpn);
        unsigned char wire[256];
        if (n == 0 || n > 255) {
            snprintf(err, errlen, "bad ALPN protocol name");
            goto bad;
        }
        wire[0] = (unsigned char)n;
        memcpy(wire + 1, o->alpn, n);
        SSL_CTX_set_alpn_protos(c, wire, (unsigned int)n + 1);
    }
    rt_tls_client *cl = calloc(1, sizeof *cl);
    if (!cl)
        rt__panic("out of memory");
    cl->ctx = c;
    return cl;
bad:
    SSL_CTX_free(c);
    return NULL;
}

void rt_tls_client_free(rt_tls_client *c)
{
    if (!c)
        return;
    SSL_CTX_free(c->ctx);
    free(c);
}

int rt_tls_connect(rt_io *io, rt_tls_client *c, const char *host, rt_ctx *ctx, int64_t deadline)
{
    last_err[0] = '\0';
    SSL *ssl = SSL_new(c->ctx);
    if (!ssl) {
        note("cannot make a TLS session");
        return -ENOMEM;
    }
    SSL_set_connect_state(ssl);
    unsigned char ip[16];
    bool literal = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    int ok;
    if (literal) {
        /* An address: matched against the IP SANs; SNI carries names only. */
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
    } else {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = SSL_set_tlsext_host_name(ssl, host) == 1 && SSL_set1_host(ssl, host) == 1;
    }
    if (!ok) {
        note("bad host name for TLS");
        SSL_free(ssl);
        return -EINVAL;
    }
    return handshake(io, ssl, ctx, deadline);
}

/* cache/redis-tls.c — the client side of TLS for rediss:// (see
 * redis-conn.h): OpenSSL on the connection's non-blocking socket, a
 * coroutine parking on rt_io whenever OpenSSL wants the socket.
 *
 * OpenSSL's error queue is per thread and a loop thread interleaves many
 * coroutines, so it is cleared before every call whose errors we read. */
#include "cache/redis-conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cache_rtls {
    SSL_CTX *ctx;
};

static void ssl_reason(char *why, size_t whylen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    snprintf(why, whylen, "%s: %s", what, e ? buf : "unknown error");
}

cache_rtls *cache_rtls_new(const char *ca_file, char *why, size_t whylen)
{
    ERR_clear_error();
    SSL_CTX *x = SSL_CTX_new(TLS_client_method());
    if (!x) {
        ssl_reason(why, whylen, "TLS");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(x, TLS1_2_VERSION);
    SSL_CTX_set_verify(x, SSL_VERIFY_PEER, NULL);
    /* the pipeline appends to the buffer being written, which may move */
    SSL_CTX_set_mode(x, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    int ok = ca_file ? SSL_CTX_load_verify_locations(x, ca_file, NULL) : SSL_CTX_set_default_verify_paths(x);
    if (ok != 1) {
        ssl_reason(why, whylen, ca_file ? "cannot load the CA file" : "cannot load the system's CA store");
        SSL_CTX_free(x);
        return NULL;
    }
    cache_rtls *t = calloc(1, sizeof *t);
    if (!t)
        abort();
    t->ctx = x;
    return t;
}

void cache_rtls_free(cache_rtls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}

/* Parks until the socket is ready for what OpenSSL asked (err is
 * SSL_get_error's); -EIO for anything but a want. */
static int ssl_wait(rconn *c, int err, rt_ctx *ctx, int64_t dl)
{
    if (err == SSL_ERROR_WANT_READ) {
        c->io.readable = false;
        return rt_wait_readable(&c->io, ctx, dl);
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        c->io.writable = false;
        return rt_wait_writable(&c->io, ctx, dl);
    }
    return -EIO;
}

int cache_rtls_handshake(const cache_rtls *t, rconn *c, const char *host, rt_ctx *ctx, int64_t dl, char *why,
                         size_t whylen)
{
    SSL *s = SSL_new(t->ctx);
    if (!s || SSL_set_fd(s, c->io.fd) != 1) {
        SSL_free(s);
        ssl_reason(why, whylen, "TLS");
        return -ENOMEM;
    }
    /* the certificate must name what we dialled: an IP address as such, a
     * host name as a DNS name (also sent as SNI) */
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    if (is_ip)
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s), host);
    else {
        SSL_set_tlsext_host_name(s, host);
        SSL_set1_host(s, host);
    }
    c->ssl = s;
    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(s);
        if (r == 1)
            return 0;
        int e = SSL_get_error(s, r);
        int w = ssl_wait(c, e, ctx, dl);
        if (w == 0)
            continue;
        if (w != -EIO) {
            snprintf(why, whylen, "TLS handshake %s", w == -ETIMEDOUT ? "timed out" : "cancelled");
            return w;
        }
        long v = SSL_get_verify_result(s);
        if (v != X509_V_OK)
            snprintf(why, whylen, "TLS: the server's certificate was refused: %s", X509_verify_cert_error_string(v));
        else
            ssl_reason(why, whylen, "TLS handshake failed");
        return -ECONNREFUSED;
    }
}

ssize_t cache_rtls_read(rconn *c, void *buf, size_t n, rt_ctx *ctx, int64_t dl)
{
    for (;;) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, buf, (int)(n > INT32_MAX ? INT32_MAX : n));
        if (r > 0)
            return r;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN)
            return 0;
        /* a wish to write while reading (renegotiation) is not served: the
         * writer may be parked on the socket; the connection is replaced */
        if (e != SSL_ERROR_WANT_READ)
            return e == SSL_ERROR_SYSCALL ? -ECONNRESET : -EIO;
        int w = ssl_wait(c, e, ctx, dl);
        if (w)
            return w;
    }
}

ssize_t cache_rtls_write_some(rconn *c, const void *buf, size_t n)
{
    ERR_clear_error();
    int r = SSL_write(c->ssl, buf, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (r > 0)
        return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_WRITE)
        return -EAGAIN;
    return e == SSL_ERROR_SYSCALL ? -EPIPE : -EIO;
}

bool cache_rtls_stale(rconn *c)
{
    char b;
    ERR_clear_error();
    int r = SSL_read(c->ssl, &b, 1);
    /* only a protocol record (a TLS 1.3 session ticket) was waiting */
    return !(r <= 0 && SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_READ);
}

void cache_rtls_close(rconn *c)
{
    SSL_free(c->ssl);
    c->ssl = NULL;
}

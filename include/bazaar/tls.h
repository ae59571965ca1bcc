/*
 * rt/tls.h — TLS (OpenSSL 3) on the runtime's rt_io.
 *
 * A TLS session is an optional part of an rt_io (io->tls): once
 * rt_tls_accept or rt_tls_connect succeeded, rt_read, rt_write_all,
 * rt_writev_all, rt_io_try_read and rt_io_try_write (rt.h) read and write
 * plaintext through it, parking on the runtime's readiness waits exactly
 * as they do on a bare socket.  rt_io_close sends nothing and frees the
 * session with the fd.  Nothing ever blocks a loop thread: the socket
 * stays non-blocking and OpenSSL's WANT_READ / WANT_WRITE become parks.
 *
 * Both sides: TLS 1.2 minimum, renegotiation refused, an EOF without
 * close_notify reads as a plain EOF (the protocols above frame their own
 * messages: HTTP bodies, RESP), partial writes allowed and a retried
 * write may come from a moved buffer (a growing output buffer).
 *
 * Concurrency: one coroutine reading and one writing the same rt_io (on
 * its loop) is fine — OpenSSL allows a write while a read waits for
 * bytes — but never two readers or two writers.  The rt_io must not move
 * while its session lives: OpenSSL's socket reads update its readiness
 * flag (a short read clears `readable`, as rt_read does, so callers that
 * test the flag must also test rt_io_pending).
 *
 * Errors: -ETIMEDOUT / -ECANCELED (the deadline or context ended),
 * -EPROTO (the peer broke the protocol: not TLS, no shared version or
 * cipher, a bad record), -EACCES (certificate verification failed, client
 * side), -ECONNRESET / -EPIPE / -errno from the socket.  After a failure
 * rt_tls_last_error() says why in one line — read it before the
 * coroutine parks again: it is per thread, and other coroutines of the
 * loop may fail in between.
 */
#ifndef RT_TLS_H
#define RT_TLS_H

#include <bazaar/rt.h>

#include <stdbool.h>
#include <stddef.h>

#pragma GCC visibility push(default)

/* ---- server ------------------------------------------------------------------
 *
 * A server context: a certificate chain and its key, ALPN selection
 * ("h2", then "http/1.1"; a client offering neither gets no ALPN and
 * speaks HTTP/1.1), server cipher preference, session resumption (TLS 1.3
 * and 1.2 session tickets plus a server-side session cache).
 *
 * It can be reloaded while in use: a reload builds a whole new OpenSSL
 * context first and swaps it in under a lock only if it is complete, so
 * new handshakes use the new pair while established sessions keep the
 * context they started with (OpenSSL reference-counts it).  Reference
 * counted itself: servers that use it hold a reference. */
typedef struct rt_tls_server rt_tls_server;

/* Loads cert_file (PEM chain, leaf first) and key_file (PEM private key,
 * which must match the leaf).  NULL with a one-line reason in err on
 * failure (unreadable file, not PEM, key/cert mismatch).  One reference. */
rt_tls_server *rt_tls_server_new(const char *cert_file, const char *key_file, char *err, size_t errlen);
/* Builds a context from the files and swaps it in.  0, or -1 with err set
 * and the current context kept.  Blocking file I/O: call it off the loops
 * (rt_offload) or at startup.  Any thread. */
int rt_tls_server_reload(rt_tls_server *s, const char *cert_file, const char *key_file, char *err, size_t errlen);
/* Subject and serial (hex) of the current certificate, for logs. */
void rt_tls_server_describe(rt_tls_server *s, char *out, size_t outlen);
void rt_tls_server_ref(rt_tls_server *s);
void rt_tls_server_unref(rt_tls_server *s);

/* Server handshake on io (connected, registered, no TLS yet), parked on
 * readiness until done, the deadline (absolute, bz_now_ns clock) or the
 * end of ctx.  0 with io->tls set; on failure io->tls stays NULL (the
 * session is freed) and the caller should close io. */
int rt_tls_accept(rt_io *io, rt_tls_server *s, rt_ctx *ctx, int64_t deadline);

/* ---- client ------------------------------------------------------------------ */

typedef struct rt_tls_client_opts {
    const char *ca_file;   /* PEM file of trusted CAs; NULL = the system store */
    const char *cert_file; /* optional client certificate chain (PEM), for mutual TLS */
    const char *key_file;  /* its private key (PEM); required with cert_file */
    const char *alpn;      /* optional protocol to offer, e.g. "h2"; NULL = none */
    bool insecure;         /* skip verification (tests only: says so in the name) */
} rt_tls_client_opts;

/* A client context; shared by any number of connections and threads.
 * NULL with a one-line reason in err if a file cannot be loaded. */
typedef struct rt_tls_client rt_tls_client;
rt_tls_client *rt_tls_client_new(const rt_tls_client_opts *o, char *err, size_t errlen);
/* Connections made with it keep working after the free (OpenSSL keeps
 * the context alive while sessions use it). */
void rt_tls_client_free(rt_tls_client *c);

/* Client handshake on io (connected, e.g. from rt_connect_tcp + rt_io_open).
 * host: the name the certificate must match — a DNS name (also sent as
 * SNI) or an IP literal (checked against the IP SANs, no SNI).  Returns 0
 * with io->tls set, -EACCES if the peer's certificate does not verify
 * against the CA set or does not match host, or another error as above;
 * on failure io->tls stays NULL and the caller closes io. */
int rt_tls_connect(rt_io *io, rt_tls_client *c, const char *host, rt_ctx *ctx, int64_t deadline);

/* ---- a session ---------------------------------------------------------------- */

/* The ALPN protocol agreed ("h2", "http/1.1"), or NULL (none, or no TLS). */
const char *rt_tls_alpn(const rt_io *io);
/* "TLSv1.3", "TLSv1.2", or NULL without TLS. */
const char *rt_tls_version(const rt_io *io);
/* True if the handshake resumed a session. */
bool rt_tls_resumed(const rt_io *io);
/* Sends close_notify if the socket takes it now (never parks), then
 * shuts the socket's write side.  Plain sockets: shutdown(SHUT_WR). */
void rt_tls_shutdown(rt_io *io);
/* Why the last failing TLS call of this thread failed (one line), or "". */
const char *rt_tls_last_error(void);

#pragma GCC visibility pop
#endif

/*
 * base/redisurl.h — the Redis forms of --cache (API.md §1), parsed once:
 *
 *     redis://[user:pass@ | :pass@]host:port[/N]
 *     rediss://[user:pass@ | :pass@]host:port[/N][?ca=/path/to/ca.pem]
 *     redis-sentinel://[user:pass@ | :pass@]host:port[,host:port...]/MASTER[/N]
 *
 * The flag parser checks a value with it (a malformed URL is a one-line
 * message, exit 2) and the Redis backend reads its connection settings
 * from it, so both agree on one grammar.  user and pass are
 * percent-decoded (a password may hold '@', ':' or '/' written as %40,
 * %3A, %2F).  With Sentinel the credentials are those of the data nodes
 * (master and replicas); the sentinels are asked without AUTH.
 *
 * rediss:// is Redis over TLS: the server's certificate is verified, and
 * must name the host dialled.  ?ca=PATH names the CA bundle (PEM) to trust;
 * without it the system's store is used (OpenSSL's default paths, which
 * SSL_CERT_FILE / SSL_CERT_DIR override).
 */
#ifndef BZ_REDISURL_H
#define BZ_REDISURL_H

#include <stdbool.h>
#include <stddef.h>

#define BZ_REDIS_MAX_ADDRS 8

typedef struct bz_redis_addr {
    char host[256]; /* a name or an address literal (IPv6 without brackets) */
    int port;
} bz_redis_addr;

typedef struct bz_redis_url {
    bool sentinel;  /* redis-sentinel:// */
    bool tls;       /* rediss:// */
    char ca[512];   /* rediss://...?ca=: CA bundle, "" = system store */
    bool has_pass;  /* the URL had user:pass@ or :pass@: AUTH is sent */
    char user[128]; /* "" = the default user: AUTH pass */
    char pass[256]; /* the password, decoded (never empty when has_pass) */
    int naddrs;     /* ≥ 1: the server, or the sentinels in order */
    bz_redis_addr addrs[BZ_REDIS_MAX_ADDRS];
    char master[128]; /* Sentinel: the monitored master's name */
    int db;           /* SELECT N (0..99) */
} bz_redis_url;

/* True when url names a Redis form (redis://, rediss://, redis-sentinel://). */
bool bz_redis_url_is(const char *url);

/* Fills *out from url.  0, or -1 with a one-line reason in why (which never
 * quotes the password). */
int bz_redis_url_parse(const char *url, bz_redis_url *out, char *why, size_t whylen);

#endif

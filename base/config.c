/* base/config.c — see config.h.  The flag table below is the single source
 * of truth for names, environment twins, defaults and help text. */
#include "base/config.h"

#include <bazaar/clock.h>
#include <bazaar/error.h>
#include <bazaar/log.h>
#include "base/redisurl.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum {
    T_ADDR, T_ADDR_OFF, T_DB, T_CACHE, T_INT, T_I64, T_DURATION, T_SIZE, T_RATE, T_EVICTION, T_ORIGINS,
    T_LOG_FORMAT, T_LOG_LEVEL, T_FILE, T_BOOL,
    T_DB_READ,
} ftype;

/* Which subcommands take a flag. */
#define C_SERVE (1u << BZ_CMD_SERVE)
#define C_MIGRATE (1u << BZ_CMD_MIGRATE)
#define C_SEED (1u << BZ_CMD_SEED)
#define C_EXPLAIN (1u << BZ_CMD_EXPLAIN)
#define C_ALL (C_SERVE | C_MIGRATE | C_SEED | C_EXPLAIN)

typedef struct {
    const char *name;  /* without "--" */
    ftype type;
    const char *def;   /* default, in the notation the flag takes; NULL = computed */
    size_t off;        /* offset in bz_config */
    int64_t min;       /* for T_INT, T_SIZE */
    unsigned cmds;
    const char *help;
} flagdef;

#define OFF(f) offsetof(bz_config, f)

static const flagdef flags[] = {
    {"http-addr", T_ADDR, ":8080", OFF(http_addr), 0, C_SERVE, "REST/JSON over HTTP/1.1 and h2c; also gRPC and gRPC-Web"},
    {"grpc-addr", T_ADDR_OFF, ":9090", OFF(grpc_addr), 0, C_SERVE, "gRPC over h2c (prior knowledge); 'off' disables"},
    {"admin-addr", T_ADDR_OFF, "off", OFF(admin_addr), 0, C_SERVE, "admin listener (/metrics, /readyz, /healthz, /debug/runtime) away from the public port; 'off' disables; when set, the public port no longer serves /metrics"},
    {"db", T_DB, "sqlite://bazaar.db", OFF(db), 0, C_ALL, "sqlite://PATH or postgres://user:pass@host:port[,host:port...]/dbname?... (libpq options pass through; "
                                                        "statement_cache=off runs statements unnamed, for PgBouncer transaction pooling)"},
    {"cache", T_CACHE, "memory", OFF(cache), 0, C_SERVE | C_SEED, "memory (in-process), redis://[user:pass@]host:port/N, rediss://...[?ca=PATH] (TLS), redis-sentinel://host:port[,host:port...]/MASTER/N, or none"},
    {"threads", T_INT, NULL, OFF(threads), 1, C_ALL, "event-loop threads (default: number of cores)"},
    {"db-max-open", T_INT, "25", OFF(db_max_open), 1, C_ALL, "cap on open connections (in use + idle)"},
    {"db-max-idle", T_INT, "25", OFF(db_max_idle), 0, C_ALL, "cap on idle connections kept for reuse"},
    {"db-conn-max-lifetime", T_DURATION, "5m", OFF(db_conn_max_lifetime_ns), 0, C_ALL, "recycle a connection after this age (0 = never)"},
    {"db-conn-max-idle-time", T_DURATION, "1m", OFF(db_conn_max_idle_time_ns), 0, C_ALL, "close a connection idle this long (0 = never)"},
    {"db-read-url", T_DB_READ, "", OFF(db_read_url), 0, C_SERVE, "PostgreSQL replica for stale-tolerant reads (postgres://...; libpq options pass through); "
                                                                 "a user's own reads after a write still see it; replica down or lagging: reads go to --db"},
    {"db-read-max-lag", T_DURATION, "5s", OFF(db_read_max_lag_ns), 1, C_SERVE, "with --db-read-url: a replica further behind the primary than this serves no reads"},
    {"breaker-failures", T_INT, "3", OFF(breaker_failures), 0, C_SERVE, "calls in a row to PostgreSQL (each pool: primary, replica) or Redis that get no answer in time (deadline missed, connect unfinished) before its circuit breaker opens and requests needing it fail fast with 503 unavailable (or one such call, when the dependency answered nothing for half its wait or more); 0 = no breakers"},
    {"breaker-probe-interval", T_DURATION, "1s", OFF(breaker_probe_interval_ns), 1, C_SERVE, "how long an open circuit breaker fails calls fast before one probe (SELECT 1 / PING in the background, bounded by this too, at least 1 s) checks the dependency; its answer closes the breaker"},
    {"read-header-timeout", T_DURATION, "5s", OFF(read_header_timeout_ns), 0, C_SERVE, "time to receive the request line and headers"},
    {"read-timeout", T_DURATION, "15s", OFF(read_timeout_ns), 0, C_SERVE, "time to receive the whole request"},
    {"write-timeout", T_DURATION, "30s", OFF(write_timeout_ns), 0, C_SERVE, "time to write the response"},
    {"idle-timeout", T_DURATION, "60s", OFF(idle_timeout_ns), 0, C_SERVE, "keep-alive idle time"},
    {"request-timeout", T_DURATION, "10s", OFF(request_timeout_ns), 0, C_SERVE, "deadline given to each handler's context"},
    {"slow-query", T_DURATION, "200ms", OFF(slow_query_ns), 0, C_SERVE, "log each database statement slower than this once (name, duration, rows, trace id); 0 = off"},
    {"shutdown-grace", T_DURATION, "10s", OFF(shutdown_grace_ns), 0, C_SERVE, "how long SIGTERM/SIGINT waits for in-flight work"},
    {"max-header-bytes", T_SIZE, "16384", OFF(max_header_bytes), 1024, C_SERVE, "larger request headers get 431"},
    {"max-body-bytes", T_SIZE, "1048576", OFF(max_body_bytes), 1, C_SERVE, "larger request bodies get 413"},
    {"max-conns", T_INT, "10000", OFF(max_conns), 1, C_SERVE, "open client connections per process (HTTP/1.1 and HTTP/2, both addresses); past it, accept waits"},
    {"h2-max-concurrent-streams", T_INT, "128", OFF(h2_max_concurrent_streams), 1, C_SERVE, "HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (streams per connection)"},
    {"max-streams", T_INT, "2048", OFF(max_streams), 1, C_SERVE, "HTTP/2 streams open at once per process (every connection, both addresses); past it new streams are refused (REFUSED_STREAM)"},
    {"conn-buffer-bytes", T_SIZE, "8MiB", OFF(conn_buffer_bytes), 65536, C_SERVE, "request and response bytes one HTTP/2 connection may hold buffered (large messages being received, responses the client has not taken); past it those streams wait"},
    {"buffer-bytes", T_SIZE, "64MiB", OFF(buffer_bytes), 65536, C_SERVE, "the same budget for the whole process; past it large requests get RESOURCE_EXHAUSTED and large sends wait"},
    {"reuse-port", T_BOOL, "off", OFF(reuse_port), 0, C_SERVE, "on: share the listening ports with other processes (SO_REUSEPORT, for rolling restarts); off: a port in use is an error"},
    {"grpc-max-recv-bytes", T_SIZE, "4MiB", OFF(grpc_max_recv_bytes), 1, C_SERVE, "larger gRPC request messages get RESOURCE_EXHAUSTED"},
    {"grpc-web-origins", T_ORIGINS, "", OFF(grpc_web_origins), 0, C_SERVE, "origins allowed by CORS for gRPC-Web (comma list, * for any)"},
    {"auth-concurrency", T_INT, NULL, OFF(auth_concurrency), 1, C_SERVE, "password hashes computed at once (default: number of cores); a full queue answers 503 overloaded"},
    {"sse-max-per-user", T_INT, "8", OFF(sse_max_per_user), 1, C_SERVE, "concurrent event streams (SSE + WatchOrders) per user; more get 429 too_many_streams"},
    {"idempotency-retention", T_DURATION, "24h", OFF(idempotency_retention_ns), 1, C_SERVE, "stored Idempotency-Key results are purged after this; an older key is new again"},
    {"rate-limit", T_RATE, "0", OFF(rate_limit), 0, C_SERVE, "requests per second per principal (user, else client IP); 0 = off"},
    {"login-rate-limit", T_RATE, "10/min", OFF(login_rate_limit), 0, C_SERVE, "logins per email per client IP (N/s, N/min, N/h)"},
    {"cache-ttl", T_DURATION, "60s", OFF(cache_ttl_ns), 1, C_SERVE, "item cache TTL (jittered +-10%)"},
    {"cache-max-memory", T_SIZE, "256MiB", OFF(cache_max_memory), 1, C_SERVE, "memory backend cap (B, KiB, MiB, GiB)"},
    {"cache-eviction", T_EVICTION, "allkeys-lru", OFF(cache_eviction), 0, C_SERVE, "allkeys-lru, allkeys-lfu, volatile-ttl, noeviction"},
    {"log-format", T_LOG_FORMAT, NULL, OFF(log_format), 0, C_ALL, "text or json (default: text on a TTY, else json)"},
    {"log-level", T_LOG_LEVEL, "info", OFF(log_level), 0, C_ALL, "debug, info, warn, error"},
    {"tls-cert", T_FILE, "", OFF(tls_cert), 0, C_SERVE, "PEM certificate chain; with --tls-key both addresses speak TLS (ALPN h2, http/1.1); reloaded on SIGHUP"},
    {"tls-handshake-timeout", T_DURATION, "3s", OFF(tls_handshake_timeout_ns), 1, C_SERVE, "time a client has to finish the TLS handshake (at most --read-header-timeout)"},
    {"tls-max-handshakes", T_INT, "128", OFF(tls_max_handshakes), 1, C_SERVE, "TLS handshakes in progress at once per process; later ones wait (their timeout running) without a coroutine or TLS state"},
    {"tls-key", T_FILE, "", OFF(tls_key), 0, C_SERVE, "PEM private key for --tls-cert"},
    {"users", T_I64, "1000", OFF(seed_users), 1, C_SEED, "seed: number of users"},
    {"items", T_I64, "10000", OFF(seed_items), 0, C_SEED, "seed: number of items"},
    {"orders", T_I64, "20000", OFF(seed_orders), 0, C_SEED, "seed: number of orders"},
    {"seed", T_I64, "1", OFF(seed_seed), 0, C_SEED, "seed: random seed"},
};
#define NFLAGS (sizeof flags / sizeof flags[0])

/* Our own query option in a postgres:// URL (db/pgurl.c takes it out
 * before libpq sees the URL): statement_cache=on|off. */
static bool pg_url_options_ok(const char *v)
{
    const char *q = strchr(v, '?');
    for (const char *p = q; p && *p; p = strchr(p + 1, '&')) {
        const char *kv = p + 1;
        size_t n = strcspn(kv, "&");
        if (n >= 16 && !strncmp(kv, "statement_cache=", 16) &&
            !((n == 18 && !strncmp(kv + 16, "on", 2)) || (n == 19 && !strncmp(kv + 16, "off", 3))))
            return false;
    }
    return true;
}

static const char *const commands[] = {"serve", "migrate", "seed", "explain", "version", "help", "env-template"};

/* ---- notations ---------------------------------------------------------- */

int bz_parse_duration(const char *s, int64_t *ns)
{
    if (!s || !*s)
        return -1;
    if (strcmp(s, "0") == 0) {
        *ns = 0;
        return 0;
    }
    /* Go's time.ParseDuration subset: one or more "<decimal><unit>". */
    long double total = 0;
    const char *p = s;
    while (*p) {
        if (!isdigit((unsigned char)*p) && *p != '.')
            return -1;
        char *end;
        errno = 0;
        long double v = strtold(p, &end);
        if (end == p || errno || v < 0)
            return -1;
        /* strtold accepts exponents, "inf" and hex; the notation does not. */
        for (const char *q = p; q < end; q++)
            if (!isdigit((unsigned char)*q) && *q != '.')
                return -1;
        p = end;
        long double unit;
        if (strncmp(p, "ms", 2) == 0) {
            unit = BZ_NS_PER_MS;
            p += 2;
        } else if (strncmp(p, "us", 2) == 0) {
            unit = 1000;
            p += 2;
        } else if (strncmp(p, "ns", 2) == 0) {
            unit = 1;
            p += 2;
        } else if (*p == 's') {
            unit = BZ_NS_PER_S;
            p += 1;
        } else if (*p == 'm') {
            unit = 60.0L * BZ_NS_PER_S;
            p += 1;
        } else if (*p == 'h') {
            unit = 3600.0L * BZ_NS_PER_S;
            p += 1;
        } else {
            return -1;
        }
        total += v * unit;
        if (total > (long double)INT64_MAX / 2)
            return -1;
    }
    *ns = (int64_t)total;
    return 0;
}

int bz_parse_size(const char *s, int64_t *bytes)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    int64_t mul = 1;
    if (*end == '\0' || strcmp(end, "B") == 0)
        mul = 1;
    else if (strcmp(end, "KiB") == 0)
        mul = 1LL << 10;
    else if (strcmp(end, "MiB") == 0)
        mul = 1LL << 20;
    else if (strcmp(end, "GiB") == 0)
        mul = 1LL << 30;
    else
        return -1;
    if (v > (unsigned long long)(INT64_MAX / mul))
        return -1;
    *bytes = (int64_t)v * mul;
    return 0;
}

int bz_parse_rate(const char *s, bz_rate *r)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    if (errno || n < 0 || n > INT32_MAX)
        return -1;
    int64_t win = BZ_NS_PER_S;
    if (*end == '/') {
        const char *u = end + 1;
        if (!strcmp(u, "s") || !strcmp(u, "sec") || !strcmp(u, "second"))
            win = BZ_NS_PER_S;
        else if (!strcmp(u, "m") || !strcmp(u, "min") || !strcmp(u, "minute"))
            win = 60 * BZ_NS_PER_S;
        else if (!strcmp(u, "h") || !strcmp(u, "hour"))
            win = 3600 * BZ_NS_PER_S;
        else
            return -1;
    } else if (*end != '\0') {
        return -1;
    }
    r->count = n;
    r->window_ns = win;
    return 0;
}

int bz_parse_addr(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon;
    const char *h = s;
    size_t hn;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return -1;
        h = s + 1;
        hn = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        hn = (size_t)(colon - s);
        if (memchr(s, ':', hn))
            return -1; /* a bare IPv6 address needs brackets */
    }
    if (hn >= hostlen)
        return -1;
    for (size_t i = 0; i < hn; i++)
        if (!(isalnum((unsigned char)h[i]) || h[i] == '.' || h[i] == '-' || h[i] == ':' || h[i] == '_'))
            return -1;
    const char *ps = colon + 1;
    if (!*ps || strlen(ps) > 5)
        return -1;
    int p = 0;
    for (const char *q = ps; *q; q++) {
        if (!isdigit((unsigned char)*q))
            return -1;
        p = p * 10 + (*q - '0');
    }
    if (p > 65535)
        return -1;
    if (host) {
        memcpy(host, h, hn);
        host[hn] = '\0';
    }
    if (port)
        *port = p;
    return 0;
}

/* ---- one value ------------------------------------------------------------ */


static bool copy_str(char *dst, size_t cap, const char *v)
{
    size_t n = strlen(v);
    if (n >= cap)
        return false;
    memcpy(dst, v, n + 1);
    return true;
}

/* Applies value v to flag f; on error writes why (no flag name) to why. */
static int set_value(bz_config *cfg, const flagdef *f, const char *v, char *why, size_t whylen)
{
    void *dst = (char *)cfg + f->off;
    switch (f->type) {
    case T_ADDR:
    case T_ADDR_OFF:
        if (f->type == T_ADDR_OFF && strcmp(v, "off") == 0) {
            ((char *)dst)[0] = '\0';
            return 0;
        }
        if (bz_parse_addr(v, NULL, 256, NULL) != 0 || !copy_str(dst, 256, v))
            return bz_fail_msg(why, whylen, "want [host]:port, e.g. :8080 or 127.0.0.1:8080%s",
                        f->type == T_ADDR_OFF ? ", or off" : "");
        return 0;
    case T_DB:
        if (strncmp(v, "sqlite://", 9) != 0 && strncmp(v, "postgres://", 11) != 0 &&
            strncmp(v, "postgresql://", 13) != 0)
            return bz_fail_msg(why, whylen, "want sqlite://PATH or postgres://...");
        if ((strncmp(v, "sqlite://", 9) == 0 && v[9] == '\0') || !copy_str(dst, 1024, v))
            return bz_fail_msg(why, whylen, "want sqlite://PATH or postgres://... (at most 1023 bytes)");
        if (strncmp(v, "sqlite://", 9) != 0 && !pg_url_options_ok(v))
            return bz_fail_msg(why, whylen, "want statement_cache=on or statement_cache=off in the URL");
        return 0;
    case T_DB_READ:
        if (!*v) {
            *(char *)dst = '\0';
            return 0;
        }
        if (strncmp(v, "postgres://", 11) != 0 && strncmp(v, "postgresql://", 13) != 0)
            return bz_fail_msg(why, whylen, "want postgres://... (a PostgreSQL replica), or empty for none");
        if (!copy_str(dst, 1024, v))
            return bz_fail_msg(why, whylen, "want postgres://... (at most 1023 bytes)");
        if (!pg_url_options_ok(v))
            return bz_fail_msg(why, whylen, "want statement_cache=on or statement_cache=off in the URL");
        return 0;
    case T_CACHE:
        if (strcmp(v, "memory") && strcmp(v, "none") && !bz_redis_url_is(v))
            return bz_fail_msg(why, whylen, "want memory, none, redis://[user:pass@]host:port/N, rediss://... or "
                                     "redis-sentinel://host:port[,host:port...]/MASTER/N");
        if (bz_redis_url_is(v)) {
            bz_redis_url u;
            if (bz_redis_url_parse(v, &u, why, whylen) != 0)
                return -1;
            if (u.ca[0] && access(u.ca, R_OK) != 0)
                return bz_fail_msg(why, whylen, "cannot read the CA file %s: %s", u.ca, strerror(errno));
        }
        if (!copy_str(dst, 1024, v))
            return bz_fail_msg(why, whylen, "too long");
        return 0;
    case T_FILE:
        /* A readable file (its content is checked by whoever loads it);
         * "" is none, the default. */
        if (!copy_str(dst, 1024, v))
            return bz_fail_msg(why, whylen, "too long");
        if (*v && access(v, R_OK) != 0)
            return bz_fail_msg(why, whylen, "cannot read it: %s", strerror(errno));
        return 0;
    case T_ORIGINS:
        /* "*", or origins like https://shop.example:8443, comma separated
         * (spaces around the commas are allowed) */
        for (const char *q = v; *q; q++)
            if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f)
                return bz_fail_msg(why, whylen, "want a comma-separated list of origins, or *");
        if (!copy_str(dst, 1024, v))
            return bz_fail_msg(why, whylen, "too long");
        return 0;
    case T_BOOL:
        if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "1"))
            *(int *)dst = 1;
        else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "0"))
            *(int *)dst = 0;
        else
            return bz_fail_msg(why, whylen, "want on or off");
        return 0;
    case T_INT:
    case T_I64: {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (!*v || *end || errno || !(isdigit((unsigned char)*v) || *v == '-'))
            return bz_fail_msg(why, whylen, "want a whole number");
        if (n < f->min)
            return bz_fail_msg(why, whylen, "want a whole number >= %lld", (long long)f->min);
        if (f->type == T_I64) {
            *(int64_t *)dst = n;
        } else {
            if (n > 100000)
                return bz_fail_msg(why, whylen, "want a whole number <= 100000");
            *(int *)dst = (int)n;
        }
        return 0;
    }
    case T_DURATION: {
        int64_t ns;
        if (bz_parse_duration(v, &ns) != 0)
            return bz_fail_msg(why, whylen, "want a duration like 250ms, 5s, 1m or 1h30m");
        if (ns < f->min)
            return bz_fail_msg(why, whylen, "want a duration > 0");
        *(int64_t *)dst = ns;
        return 0;
    }
    case T_SIZE: {
        int64_t b;
        if (bz_parse_size(v, &b) != 0)
            return bz_fail_msg(why, whylen, "want a size in bytes, optionally with KiB, MiB or GiB");
        if (b < f->min)
            return bz_fail_msg(why, whylen, "want a size >= %lld bytes", (long long)f->min);
        *(int64_t *)dst = b;
        return 0;
    }
    case T_RATE:
        if (bz_parse_rate(v, dst) != 0)
            return bz_fail_msg(why, whylen, "want N (per second) or N/s, N/min, N/h");
        return 0;
    case T_EVICTION: {
        static const char *names[] = {"allkeys-lru", "allkeys-lfu", "volatile-ttl", "noeviction"};
        for (int i = 0; i < 4; i++)
            if (!strcmp(v, names[i])) {
                *(cache_eviction *)dst = (cache_eviction)i;
                return 0;
            }
        return bz_fail_msg(why, whylen, "want allkeys-lru, allkeys-lfu, volatile-ttl or noeviction");
    }
    case T_LOG_FORMAT:
        if (!strcmp(v, "text"))
            *(int *)dst = BZ_LOG_TEXT;
        else if (!strcmp(v, "json"))
            *(int *)dst = BZ_LOG_JSON;
        else
            return bz_fail_msg(why, whylen, "want text or json");
        return 0;
    case T_LOG_LEVEL: {
        static const char *names[] = {"debug", "info", "warn", "error"};
        for (int i = 0; i < 4; i++)
            if (!strcmp(v, names[i])) {
                *(int *)dst = i;
                return 0;
            }
        return bz_fail_msg(why, whylen, "want debug, info, warn or error");
    }
    }
    return bz_fail_msg(why, whylen, "unknown flag type");
}

static void env_name(const flagdef *f, char *out, size_t cap)
{
    size_t k = (size_t)snprintf(out, cap, "BAZAAR_");
    for (const char *p = f->name; *p && k + 1 < cap; p++)
        out[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[k] = '\0';
}

static const flagdef *find_flag(const char *name, size_t n)
{
    for (size_t i = 0; i < NFLAGS; i++)
        if (strlen(flags[i].name) == n && memcmp(flags[i].name, name, n) == 0)
            return &flags[i];
    return NULL;
}

/* Printable form of a user-supplied value for error messages: bounded, no
 * control bytes (a message is one line whatever the client typed). */
static void show(char *out, size_t cap, const char *raw)
{
    /* a URL's password is never shown, even in a refusal */
    char v[1100];
    bz_redact_url(raw, v, sizeof v);
    size_t k = 0;
    for (const char *p = v; *p && k + 4 < cap; p++)
        out[k++] = ((unsigned char)*p < 0x20 || *p == 0x7f) ? '?' : *p;
    if (strlen(v) > k)
        out[k++] = '.', out[k++] = '.', out[k++] = '.';
    out[k] = '\0';
}

int bz_config_parse(bz_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    char why[200], shown[80], env[64];
    memset(cfg, 0, sizeof *cfg);
    cfg->log_format = bz_log_default_format();
    /* The cores this process may run on (taskset, cgroup cpusets), as
     * Go's GOMAXPROCS does: more loops than usable cores only adds
     * context switches. */
    cpu_set_t cs;
    long cores = sched_getaffinity(0, sizeof cs, &cs) == 0 ? CPU_COUNT(&cs) : sysconf(_SC_NPROCESSORS_ONLN);
    cfg->threads = cores > 0 ? (int)cores : 1;
    cfg->auth_concurrency = cfg->threads;
    for (size_t i = 0; i < NFLAGS; i++)
        if (flags[i].def && set_value(cfg, &flags[i], flags[i].def, why, sizeof why) != 0)
            return bz_fail_msg(err, errlen, "bazaar: internal error: bad default for --%s", flags[i].name);

    /* Subcommand: the first argument when it does not start with '-'. */
    int argi = 1;
    cfg->command = BZ_CMD_SERVE;
    if (argc > 1 && argv[1][0] != '-') {
        size_t k;
        for (k = 0; k < sizeof commands / sizeof commands[0]; k++)
            if (!strcmp(argv[1], commands[k]))
                break;
        if (k == sizeof commands / sizeof commands[0]) {
            show(shown, sizeof shown, argv[1]);
            return bz_fail_msg(err, errlen,
                        "bazaar: unknown command \"%s\" (want serve, migrate, seed, explain or version)", shown);
        }
        cfg->command = (bz_command)k;
        argi = 2;
    }
    unsigned mask = 1u << cfg->command;

    /* Environment first, so flags override it. */
    for (size_t i = 0; i < NFLAGS; i++) {
        if (!(flags[i].cmds & mask))
            continue;
        env_name(&flags[i], env, sizeof env);
        const char *v = getenv(env);
        if (v && set_value(cfg, &flags[i], v, why, sizeof why) != 0) {
            show(shown, sizeof shown, v);
            return bz_fail_msg(err, errlen, "bazaar: invalid value \"%s\" for %s (--%s): %s", shown, env,
                        flags[i].name, why);
        }
    }

    for (int i = argi; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cfg->command = BZ_CMD_HELP;
            return 0;
        }
        if (!strcmp(a, "--version")) {
            cfg->command = BZ_CMD_VERSION;
            return 0;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            show(shown, sizeof shown, a);
            return bz_fail_msg(err, errlen, "bazaar: unexpected argument \"%s\" (flags look like --name value)", shown);
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const flagdef *f = find_flag(name, nlen);
        if (!f) {
            show(shown, sizeof shown, a);
            if (eq && (size_t)(eq - a) < sizeof shown)
                shown[eq - a] = '\0';
            return bz_fail_msg(err, errlen, "bazaar: unknown flag %s (see bazaar --help)", shown);
        }
        if (!(f->cmds & mask))
            return bz_fail_msg(err, errlen, "bazaar: flag --%s does not apply to \"%s\"", f->name,
                        commands[cfg->command]);
        const char *v;
        if (eq) {
            v = eq + 1;
        } else {
            if (i + 1 >= argc)
                return bz_fail_msg(err, errlen, "bazaar: flag --%s needs a value", f->name);
            v = argv[++i];
        }
        if (set_value(cfg, f, v, why, sizeof why) != 0) {
            show(shown, sizeof shown, v);
            return bz_fail_msg(err, errlen, "bazaar: invalid value \"%s\" for --%s: %s", shown, f->name, why);
        }
    }
    if (cfg->db_max_idle > cfg->db_max_open)
        cfg->db_max_idle = cfg->db_max_open; /* database/sql does the same */
    if (cfg->db_read_url[0] && !strncmp(cfg->db, "sqlite://", 9))
        return bz_fail_msg(err, errlen, "bazaar: --db-read-url needs a PostgreSQL --db (SQLite has no replicas)");
    if (!cfg->tls_cert[0] != !cfg->tls_key[0])
        return bz_fail_msg(err, errlen, "bazaar: --%s needs --%s (TLS takes both)", cfg->tls_cert[0] ? "tls-cert" : "tls-key",
                    cfg->tls_cert[0] ? "tls-key" : "tls-cert");
    return 0;
}

void bz_config_usage(FILE *out)
{
    char env[64];
    fprintf(out,
            "bazaar %s — marketplace backend (REST/JSON + gRPC)\n\n"
            "usage: bazaar [command] [flags]\n\n"
            "commands:\n"
            "  serve     run the server (default)\n"
            "  migrate   apply schema migrations and exit\n"
            "  seed      fill an empty database with deterministic demo data\n"
            "  explain   print the plan of every hot query; non-zero exit if one scans a table\n"
            "  version   print the version\n"
            "  env-template  print an environment file with every BAZAAR_* variable at its default\n\n"
            "flags (each has an environment twin; flags win over the environment):\n",
            BAZAAR_VERSION);
    for (size_t i = 0; i < NFLAGS; i++) {
        env_name(&flags[i], env, sizeof env);
        char name[64];
        snprintf(name, sizeof name, "--%s", flags[i].name);
        fprintf(out, "  %-26s %s\n  %-26s default: %s; env %s\n", name, flags[i].help, "",
                flags[i].def ? flags[i].def : "(see text)", env);
    }
    fprintf(out, "\nDurations accept ms, s, m, h (e.g. 1m30s).  Bad values exit with status 2.\n");
}

void bz_config_env_template(FILE *out)
{
    char env[64];
    fprintf(out, "# bazaar %s: environment for `bazaar serve` (systemd EnvironmentFile=).\n"
                 "# Generated by `bazaar env-template` from the flag table: every variable is\n"
                 "# here, commented out at its default.  Uncomment a line to change it;\n"
                 "# a command-line flag wins over its variable.\n",
            BAZAAR_VERSION);
    for (size_t i = 0; i < NFLAGS; i++) {
        env_name(&flags[i], env, sizeof env);
        const char *only = flags[i].cmds == C_SEED ? " (bazaar seed only)" : "";
        fprintf(out, "\n# --%s: %s%s\n", flags[i].name, flags[i].help, only);
        if (flags[i].def)
            fprintf(out, "#%s=%s\n", env, flags[i].def);
        else
            fprintf(out, "# default: computed (see the text above)\n#%s=\n", env);
    }
}

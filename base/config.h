/*
 * base/config.h — the command line and its environment twins (API.md §1).
 *
 *     bazaar [serve|migrate|seed|explain|version] [--flag value | --flag=value]...
 *
 * Every flag has an environment twin (--db-max-open ↔ BAZAAR_DB_MAX_OPEN);
 * defaults < environment < flags.  Every value is checked here, once, so
 * the layers receive typed, valid settings: a bad value is a one-line
 * message naming the flag (or variable) and exit status 2 — never a crash,
 * never a silent default.
 */
#ifndef BZ_CONFIG_H
#define BZ_CONFIG_H

#include <bazaar/cache.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum bz_command {
    BZ_CMD_SERVE = 0,
    BZ_CMD_MIGRATE,
    BZ_CMD_SEED,
    BZ_CMD_EXPLAIN,
    BZ_CMD_VERSION,
    BZ_CMD_HELP,
    BZ_CMD_ENV_TEMPLATE,
} bz_command;

/* "N per window": --rate-limit 100 (per second), --login-rate-limit 10/min. */
typedef struct bz_rate {
    int64_t count;     /* 0 = off */
    int64_t window_ns; /* length of the window */
} bz_rate;

typedef struct bz_config {
    bz_command command;
    char http_addr[256];      /* "[host]:port" */
    char grpc_addr[256];      /* "[host]:port", or "" when --grpc-addr off */
    char admin_addr[256];     /* "[host]:port" of the admin listener, or "" (off, the default) */
    char db[1024];            /* sqlite://PATH or postgres://... */
    char cache[1024];         /* memory | none | redis://host:port/N */
    int threads;              /* event-loop threads, ≥ 1 */
    int db_max_open;          /* ≥ 1 */
    int db_max_idle;          /* ≥ 0 */
    int64_t db_conn_max_lifetime_ns; /* 0 = forever */
    int64_t db_conn_max_idle_time_ns; /* 0 = forever */
    char db_read_url[1024];   /* "" none, else postgres://... of a replica */
    int64_t db_read_max_lag_ns; /* a replica further behind serves no reads, > 0 */
    int breaker_failures;     /* no-answer calls in a row that open a dependency's breaker; 0 = off */
    int64_t breaker_probe_interval_ns; /* open this long before one probe, > 0 */
    int64_t read_header_timeout_ns;
    int64_t read_timeout_ns;
    int64_t write_timeout_ns;
    int64_t idle_timeout_ns;
    int64_t request_timeout_ns;
    int64_t slow_query_ns;    /* --slow-query: statements this slow are logged; 0 = off */
    int64_t shutdown_grace_ns;
    int64_t max_header_bytes;
    int64_t max_body_bytes;
    int max_conns;            /* open client connections per process, 1..100000 */
    int h2_max_concurrent_streams; /* HTTP/2 streams per connection, 1..100000 */
    int max_streams;          /* HTTP/2 streams per process, 1..100000 */
    int64_t conn_buffer_bytes; /* buffered request/response bytes per HTTP/2 connection */
    int64_t buffer_bytes;     /* the same, per process */
    int reuse_port;           /* 1: SO_REUSEPORT open to other processes */
    int64_t grpc_max_recv_bytes;
    char grpc_web_origins[1024]; /* "" none, "*" any, else a comma list */
    int auth_concurrency;     /* password hashes at once (default: cores), ≥ 1 */
    int sse_max_per_user;     /* concurrent event streams per user, ≥ 1 */
    int64_t idempotency_retention_ns; /* Idempotency-Key records live this long, > 0 */
    bz_rate rate_limit;
    bz_rate login_rate_limit;
    int64_t cache_ttl_ns;
    int64_t cache_max_memory;
    cache_eviction cache_eviction;
    int log_format;           /* bz_log_format */
    int log_level;            /* bz_log_level */
    char tls_cert[1024];      /* PEM chain, or "" (no TLS); set iff tls_key is */
    char tls_key[1024];       /* PEM private key, or "" */
    int64_t tls_handshake_timeout_ns; /* > 0 */
    int tls_max_handshakes;   /* in progress at once per process, ≥ 1 */
    /* seed only (API.md §9) */
    int64_t seed_users, seed_items, seed_orders, seed_seed;
} bz_config;

/* Fills cfg from defaults, the environment (getenv) and argv.  Returns 0,
 * or -1 with a one-line message (no newline) in err. */
int bz_config_parse(bz_config *cfg, int argc, char **argv, char *err, size_t errlen);

/* Prints the usage text with every flag, its environment twin and default. */
void bz_config_usage(FILE *out);
/* Prints an environment file (systemd EnvironmentFile= syntax) naming every
 * flag's BAZAAR_* twin, commented out at its default, each after a comment
 * with its meaning: `bazaar env-template`, installed as the env file, so
 * it is made from this table and cannot drift from it. */
void bz_config_env_template(FILE *out);

/* Exposed for tests and other layers that read the same notations. */
int bz_parse_duration(const char *s, int64_t *ns);  /* "1m30s", "250ms", "0" */
int bz_parse_size(const char *s, int64_t *bytes);   /* "256MiB", "1048576" */
int bz_parse_rate(const char *s, bz_rate *r);       /* "0", "100", "10/min" */
int bz_parse_addr(const char *s, char *host, size_t hostlen, int *port); /* "[::1]:80" */

#define BAZAAR_VERSION "0.1.0"

#endif

/*
 * app/config.h — the marketplace's command line and its environment twins
 * (API.md §1).
 *
 *     bazaar [serve|migrate|seed|explain|version|env-template] [--flag value | --flag=value]...
 *
 * The lifecycle's standard flags (<bazaar/service.h>: addresses, timeouts,
 * limits, TLS, logging) and the marketplace's own (database, cache, pools,
 * breakers, rate limits, seed sizes), parsed by <bazaar/flags.h>: every
 * flag has an environment twin (--db-max-open ↔ BAZAAR_DB_MAX_OPEN);
 * defaults < environment < flags; a bad value is a one-line message naming
 * the flag (or variable) and exit status 2.
 */
#ifndef APP_CONFIG_H
#define APP_CONFIG_H

#include <bazaar/cache.h>
#include <bazaar/flags.h>
#include <bazaar/service.h>
#include <bazaar/version.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum app_command {
    APP_CMD_SERVE = 0,
    APP_CMD_MIGRATE,
    APP_CMD_SEED,
    APP_CMD_EXPLAIN,
    APP_CMD_VERSION,
    APP_CMD_HELP,
    APP_CMD_ENV_TEMPLATE,
} app_command;

typedef struct app_config {
    app_command command;
    bazaar_options srv;               /* the lifecycle's standard flags */
    char db[1024];                    /* sqlite://PATH or postgres://... */
    char cache[1024];                 /* memory | none | redis://host:port/N */
    int db_max_open;                  /* ≥ 1 */
    int db_max_idle;                  /* ≥ 0 */
    int64_t db_conn_max_lifetime_ns;  /* 0 = forever */
    int64_t db_conn_max_idle_time_ns; /* 0 = forever */
    char db_read_url[1024];           /* "" none, else postgres://... of a replica */
    int64_t db_read_max_lag_ns;       /* a replica further behind serves no reads, > 0 */
    int breaker_failures;             /* no-answer calls in a row that open a dependency's breaker; 0 = off */
    int64_t breaker_probe_interval_ns; /* open this long before one probe, > 0 */
    int64_t slow_query_ns;             /* --slow-query: statements this slow are logged; 0 = off */
    int auth_concurrency;              /* password hashes at once (default: cores), ≥ 1 */
    int sse_max_per_user;              /* concurrent event streams per user, ≥ 1 */
    int64_t idempotency_retention_ns;  /* Idempotency-Key records live this long, > 0 */
    bz_rate rate_limit;
    bz_rate login_rate_limit;
    int64_t cache_ttl_ns;
    int64_t cache_max_memory;
    int cache_eviction; /* cache_eviction */
    /* seed only (API.md §9) */
    int64_t seed_users, seed_items, seed_orders, seed_seed;
} app_config;

/* Fills cfg from defaults, the environment (getenv) and argv.  Returns 0,
 * or -1 with a one-line message (no newline) in err. */
int app_config_parse(app_config *cfg, int argc, char **argv, char *err, size_t errlen);

/* Prints the usage text with every flag, its environment twin and default. */
void app_config_usage(FILE *out);
/* Prints an environment file (systemd EnvironmentFile= syntax) naming every
 * flag's BAZAAR_* twin, commented out at its default, each after a comment
 * with its meaning: `bazaar env-template`, installed as the env file, so
 * it is made from the tables and cannot drift from them. */
void app_config_env_template(FILE *out);

#endif

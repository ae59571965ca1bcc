/* app/config.c — see config.h.  The marketplace's flag table below and the
 * lifecycle's standard one (service/options.c) are the single source of
 * truth for names, environment twins, defaults and help text. */
#include "app/config.h"

#include <bazaar/error.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Which subcommands take a flag. */
#define C_SERVE (1u << APP_CMD_SERVE)
#define C_MIGRATE (1u << APP_CMD_MIGRATE)
#define C_SEED (1u << APP_CMD_SEED)
#define C_EXPLAIN (1u << APP_CMD_EXPLAIN)
#define C_ALL (C_SERVE | C_MIGRATE | C_SEED | C_EXPLAIN)

static const char *const commands[] = {"serve",   "migrate", "seed",        "explain",
                                       "version", "help",    "env-template"};

/* --help and the env file list the flags in this order (the standard ones
 * among the marketplace's, as they always were). */
static const char *const order[] = {
    "http-addr",
    "grpc-addr",
    "admin-addr",
    "db",
    "cache",
    "threads",
    "db-max-open",
    "db-max-idle",
    "db-conn-max-lifetime",
    "db-conn-max-idle-time",
    "db-read-url",
    "db-read-max-lag",
    "breaker-failures",
    "breaker-probe-interval",
    "read-header-timeout",
    "read-timeout",
    "write-timeout",
    "idle-timeout",
    "request-timeout",
    "slow-query",
    "shutdown-grace",
    "max-header-bytes",
    "max-body-bytes",
    "max-conns",
    "h2-max-concurrent-streams",
    "max-streams",
    "conn-buffer-bytes",
    "buffer-bytes",
    "reuse-port",
    "grpc-max-recv-bytes",
    "grpc-web-origins",
    "auth-concurrency",
    "sse-max-per-user",
    "idempotency-retention",
    "rate-limit",
    "login-rate-limit",
    "cache-ttl",
    "cache-max-memory",
    "cache-eviction",
    "log-format",
    "log-level",
    "tls-cert",
    "tls-handshake-timeout",
    "tls-max-handshakes",
    "tls-key",
    "users",
    "items",
    "orders",
    "seed",
};

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

static bool copy_url(char *dst, const char *v)
{
    size_t n = strlen(v);
    if (n >= 1024)
        return false;
    memcpy(dst, v, n + 1);
    return true;
}

static int parse_db(const char *v, void *dst, char *why, size_t whylen)
{
    if (strncmp(v, "sqlite://", 9) != 0 && strncmp(v, "postgres://", 11) != 0 &&
        strncmp(v, "postgresql://", 13) != 0)
        return bz_fail_msg(why, whylen, "want sqlite://PATH or postgres://...");
    if ((strncmp(v, "sqlite://", 9) == 0 && v[9] == '\0') || !copy_url(dst, v))
        return bz_fail_msg(why, whylen, "want sqlite://PATH or postgres://... (at most 1023 bytes)");
    if (strncmp(v, "sqlite://", 9) != 0 && !pg_url_options_ok(v))
        return bz_fail_msg(why, whylen, "want statement_cache=on or statement_cache=off in the URL");
    return 0;
}

static int parse_db_read(const char *v, void *dst, char *why, size_t whylen)
{
    if (!*v) {
        *(char *)dst = '\0';
        return 0;
    }
    if (strncmp(v, "postgres://", 11) != 0 && strncmp(v, "postgresql://", 13) != 0)
        return bz_fail_msg(why, whylen, "want postgres://... (a PostgreSQL replica), or empty for none");
    if (!copy_url(dst, v))
        return bz_fail_msg(why, whylen, "want postgres://... (at most 1023 bytes)");
    if (!pg_url_options_ok(v))
        return bz_fail_msg(why, whylen, "want statement_cache=on or statement_cache=off in the URL");
    return 0;
}

static int parse_cache(const char *v, void *dst, char *why, size_t whylen)
{
    if (cache_spec_check(v, why, whylen) != 0)
        return -1;
    if (!copy_url(dst, v))
        return bz_fail_msg(why, whylen, "too long");
    return 0;
}

static const char *const evictions[] = {"allkeys-lru", "allkeys-lfu", "volatile-ttl", "noeviction", NULL};

#define V(f) .dst = &c->f
#define MAXN 100000

enum { NAPP = 23 };

/* The marketplace's own flags over c. */
static size_t app_flags(app_config *c, bz_flag out[NAPP])
{
    const bz_flag t[NAPP] = {
        {.name = "db",
         .type = BZ_FLAG_FUNC,
         .def = "sqlite://bazaar.db",
         .dst = c->db,
         .parse = parse_db,
         .cmds = C_ALL,
         .help =
             "sqlite://PATH or postgres://user:pass@host:port[,host:port...]/dbname?... (libpq options pass "
             "through; statement_cache=off runs statements unnamed, for PgBouncer transaction pooling)"},
        {.name = "cache",
         .type = BZ_FLAG_FUNC,
         .def = "memory",
         .dst = c->cache,
         .parse = parse_cache,
         .cmds = C_SERVE | C_SEED,
         .help = "memory (in-process), redis://[user:pass@]host:port/N, rediss://...[?ca=PATH] (TLS), "
                 "redis-sentinel://host:port[,host:port...]/MASTER/N, or none"},
        {.name = "db-max-open",
         .type = BZ_FLAG_INT,
         .def = "25",
         V(db_max_open),
         .min = 1,
         .max = MAXN,
         .cmds = C_ALL,
         .help = "cap on open connections (in use + idle)"},
        {.name = "db-max-idle",
         .type = BZ_FLAG_INT,
         .def = "25",
         V(db_max_idle),
         .min = 0,
         .max = MAXN,
         .cmds = C_ALL,
         .help = "cap on idle connections kept for reuse"},
        {.name = "db-conn-max-lifetime",
         .type = BZ_FLAG_DURATION,
         .def = "5m",
         V(db_conn_max_lifetime_ns),
         .cmds = C_ALL,
         .help = "recycle a connection after this age (0 = never)"},
        {.name = "db-conn-max-idle-time",
         .type = BZ_FLAG_DURATION,
         .def = "1m",
         V(db_conn_max_idle_time_ns),
         .cmds = C_ALL,
         .help = "close a connection idle this long (0 = never)"},
        {.name = "db-read-url",
         .type = BZ_FLAG_FUNC,
         .def = "",
         .dst = c->db_read_url,
         .parse = parse_db_read,
         .cmds = C_SERVE,
         .help =
             "PostgreSQL replica for stale-tolerant reads (postgres://...; libpq options pass through); a "
             "user's own reads after a write still see it; replica down or lagging: reads go to --db"},
        {.name = "db-read-max-lag",
         .type = BZ_FLAG_DURATION,
         .def = "5s",
         V(db_read_max_lag_ns),
         .min = 1,
         .cmds = C_SERVE,
         .help = "with --db-read-url: a replica further behind the primary than this serves no reads"},
        {.name = "breaker-failures",
         .type = BZ_FLAG_INT,
         .def = "3",
         V(breaker_failures),
         .min = 0,
         .max = MAXN,
         .cmds = C_SERVE,
         .help =
             "calls in a row to PostgreSQL (each pool: primary, replica) or Redis that get no answer in time "
             "(deadline missed, connect unfinished) before its circuit breaker opens and requests needing it "
             "fail fast with 503 unavailable (or one such call, when the dependency answered nothing for "
             "half "
             "its wait or more); 0 = no breakers"},
        {.name = "breaker-probe-interval",
         .type = BZ_FLAG_DURATION,
         .def = "1s",
         V(breaker_probe_interval_ns),
         .min = 1,
         .cmds = C_SERVE,
         .help =
             "how long an open circuit breaker fails calls fast before one probe (SELECT 1 / PING in the "
             "background, bounded by this too, at least 1 s) checks the dependency; its answer closes the "
             "breaker"},
        {.name = "slow-query",
         .type = BZ_FLAG_DURATION,
         .def = "200ms",
         V(slow_query_ns),
         .cmds = C_SERVE,
         .help =
             "log each database statement slower than this once (name, duration, rows, trace id); 0 = off"},
        {.name = "auth-concurrency",
         .type = BZ_FLAG_INT,
         V(auth_concurrency),
         .min = 1,
         .max = MAXN,
         .cmds = C_SERVE,
         .help = "password hashes computed at once (default: number of cores); a full queue answers 503 "
                 "overloaded"},
        {.name = "sse-max-per-user",
         .type = BZ_FLAG_INT,
         .def = "8",
         V(sse_max_per_user),
         .min = 1,
         .max = MAXN,
         .cmds = C_SERVE,
         .help = "concurrent event streams (SSE + WatchOrders) per user; more get 429 too_many_streams"},
        {.name = "idempotency-retention",
         .type = BZ_FLAG_DURATION,
         .def = "24h",
         V(idempotency_retention_ns),
         .min = 1,
         .cmds = C_SERVE,
         .help = "stored Idempotency-Key results are purged after this; an older key is new again"},
        {.name = "rate-limit",
         .type = BZ_FLAG_RATE,
         .def = "0",
         V(rate_limit),
         .cmds = C_SERVE,
         .help = "requests per second per principal (user, else client IP); 0 = off"},
        {.name = "login-rate-limit",
         .type = BZ_FLAG_RATE,
         .def = "10/min",
         V(login_rate_limit),
         .cmds = C_SERVE,
         .help = "logins per email per client IP (N/s, N/min, N/h)"},
        {.name = "cache-ttl",
         .type = BZ_FLAG_DURATION,
         .def = "60s",
         V(cache_ttl_ns),
         .min = 1,
         .cmds = C_SERVE,
         .help = "item cache TTL (jittered +-10%)"},
        {.name = "cache-max-memory",
         .type = BZ_FLAG_SIZE,
         .def = "256MiB",
         V(cache_max_memory),
         .min = 1,
         .cmds = C_SERVE,
         .help = "memory backend cap (B, KiB, MiB, GiB)"},
        {.name = "cache-eviction",
         .type = BZ_FLAG_ENUM,
         .def = "allkeys-lru",
         .choices = evictions,
         V(cache_eviction),
         .cmds = C_SERVE,
         .help = "allkeys-lru, allkeys-lfu, volatile-ttl, noeviction"},
        {.name = "users",
         .type = BZ_FLAG_INT64,
         .def = "1000",
         V(seed_users),
         .min = 1,
         .cmds = C_SEED,
         .help = "seed: number of users"},
        {.name = "items",
         .type = BZ_FLAG_INT64,
         .def = "10000",
         V(seed_items),
         .min = 0,
         .cmds = C_SEED,
         .help = "seed: number of items"},
        {.name = "orders",
         .type = BZ_FLAG_INT64,
         .def = "20000",
         V(seed_orders),
         .min = 0,
         .cmds = C_SEED,
         .help = "seed: number of orders"},
        {.name = "seed",
         .type = BZ_FLAG_INT64,
         .def = "1",
         V(seed_seed),
         .min = 0,
         .cmds = C_SEED,
         .help = "seed: random seed"},
    };
    memcpy(out, t, sizeof t);
    return NAPP;
}

/* The two tables over cfg in one set.  The standard flags are serve's,
 * but for the ones every command reads (the event loops and the log). */
typedef struct {
    bz_flag std[BAZAAR_STANDARD_FLAGS];
    bz_flag own[NAPP];
    bz_flags *fs;
} flagset;

static void flagset_open(flagset *f, app_config *cfg)
{
    size_t n = bazaar_standard_flags(&cfg->srv, f->std);
    for (size_t i = 0; i < n; i++) {
        f->std[i].cmds =
            !strcmp(f->std[i].name, "threads") || !strncmp(f->std[i].name, "log-", 4) ? C_ALL : C_SERVE;
        if (!strcmp(f->std[i].name, "admin-addr")) /* the marketplace's own pages, named */
            f->std[i].help =
                "admin listener (/metrics, /readyz, /healthz, /debug/runtime) away from the public port; "
                "'off' disables; when set, the public port no longer serves /metrics";
    }
    f->fs = bz_flags_new("bazaar", "BAZAAR");
    bz_flags_add(f->fs, f->std, n);
    bz_flags_add(f->fs, f->own, app_flags(cfg, f->own));
    bz_flags_commands(f->fs, commands, sizeof commands / sizeof commands[0],
                      "serve, migrate, seed, explain or version");
    bz_flags_order(f->fs, order, sizeof order / sizeof order[0]);
}

int app_config_parse(app_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    bazaar_options_defaults(&cfg->srv);
    cfg->auth_concurrency = cfg->srv.threads;
    static flagset f; /* the tables are big; parse runs once per process (and in tests) */
    flagset_open(&f, cfg);
    int rc = bz_flags_parse(f.fs, argc, argv, err, errlen);
    cfg->command = (app_command)bz_flags_command(f.fs);
    bz_flags_free(f.fs);
    if (rc == BZ_FLAGS_HELP)
        cfg->command = APP_CMD_HELP;
    if (rc == BZ_FLAGS_VERSION)
        cfg->command = APP_CMD_VERSION;
    if (rc != BZ_FLAGS_OK)
        return rc < 0 ? -1 : 0;
    if (cfg->db_max_idle > cfg->db_max_open)
        cfg->db_max_idle = cfg->db_max_open; /* database/sql does the same */
    if (cfg->db_read_url[0] && !strncmp(cfg->db, "sqlite://", 9))
        return bz_fail_msg(err, errlen,
                           "bazaar: --db-read-url needs a PostgreSQL --db (SQLite has no replicas)");
    return bazaar_options_check(&cfg->srv, "bazaar", err, errlen);
}

void app_config_usage(FILE *out)
{
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
    static app_config cfg;
    static flagset f;
    flagset_open(&f, &cfg);
    bz_flags_usage(f.fs, out);
    bz_flags_free(f.fs);
    fprintf(out, "\nDurations accept ms, s, m, h (e.g. 1m30s).  Bad values exit with status 2.\n");
}

void app_config_env_template(FILE *out)
{
    fprintf(out,
            "# bazaar %s: environment for `bazaar serve` (systemd EnvironmentFile=).\n"
            "# Generated by `bazaar env-template` from the flag table: every variable is\n"
            "# here, commented out at its default.  Uncomment a line to change it;\n"
            "# a command-line flag wins over its variable.\n",
            BAZAAR_VERSION);
    static app_config cfg;
    static flagset f;
    flagset_open(&f, &cfg);
    bz_flags_env_template(f.fs, out);
    bz_flags_free(f.fs);
}

/* tests/unit/test_config.c — the marketplace's command line (app/config.h):
 * defaults, environment twins and their precedence, and the one-line
 * refusals, over the lifecycle's standard flags and the marketplace's own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "app/config.h"
#include <bazaar/clock.h>
#include <bazaar/log.h>

#include <stdlib.h>
#include <string.h>

#define SEC BZ_NS_PER_S

static int parse(app_config *c, char *err, const char *a0, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "bazaar";
    va_list ap;
    va_start(ap, a0);
    for (const char *a = a0; a; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    return app_config_parse(c, argc, argv, err, 512);
}

static void config_defaults(void **state)
{
    static app_config c;
    char err[512];
    assert_int_equal(parse(&c, err, NULL), 0);
    assert_int_equal(c.command, APP_CMD_SERVE);
    assert_string_equal(c.srv.http_addr, ":8080");
    assert_string_equal(c.srv.grpc_addr, ":9090");
    assert_string_equal(c.db, "sqlite://bazaar.db");
    assert_string_equal(c.cache, "memory");
    assert_true(c.srv.threads >= 1);
    assert_int_equal(c.db_max_open, 25);
    assert_int_equal(c.db_max_idle, 25);
    assert_true(c.db_conn_max_lifetime_ns == 300 * BZ_NS_PER_S);
    assert_true(c.db_conn_max_idle_time_ns == 60 * BZ_NS_PER_S);
    assert_true(c.srv.read_header_timeout_ns == 5 * BZ_NS_PER_S);
    assert_true(c.srv.read_timeout_ns == 15 * BZ_NS_PER_S);
    assert_true(c.srv.write_timeout_ns == 30 * BZ_NS_PER_S);
    assert_true(c.srv.idle_timeout_ns == 60 * BZ_NS_PER_S);
    assert_true(c.srv.request_timeout_ns == 10 * BZ_NS_PER_S);
    assert_true(c.srv.shutdown_grace_ns == 10 * BZ_NS_PER_S);
    assert_int_equal(c.srv.max_header_bytes, 16384);
    assert_int_equal(c.srv.max_body_bytes, 1048576);
    assert_int_equal(c.srv.max_conns, 10000);
    assert_int_equal(c.srv.h2_max_concurrent_streams, 128);
    assert_int_equal(c.srv.max_streams, 2048);
    assert_int_equal(c.srv.conn_buffer_bytes, 8 << 20);
    assert_int_equal(c.srv.buffer_bytes, 64 << 20);
    assert_int_equal(c.srv.reuse_port, 0);
    assert_true(c.srv.tls_handshake_timeout_ns == 3 * BZ_NS_PER_S);
    assert_int_equal(c.srv.tls_max_handshakes, 128);
    assert_int_equal(c.rate_limit.count, 0);
    assert_int_equal(c.login_rate_limit.count, 10);
    assert_true(c.login_rate_limit.window_ns == 60 * BZ_NS_PER_S);
    assert_true(c.cache_ttl_ns == 60 * BZ_NS_PER_S);
    assert_int_equal(c.cache_max_memory, 256LL << 20);
    assert_int_equal(c.cache_eviction, CACHE_EVICT_ALLKEYS_LRU);
    assert_int_equal(c.srv.log_level, BZ_LOG_INFO);
}

static void config_flags_env_precedence(void **state)
{
    static app_config c;
    char err[512];
    setenv("BAZAAR_DB_MAX_OPEN", "7", 1);
    setenv("BAZAAR_THREADS", "3", 1);
    setenv("BAZAAR_H2_MAX_CONCURRENT_STREAMS", "16", 1);
    setenv("BAZAAR_MAX_CONNS", "20", 1);
    setenv("BAZAAR_REUSE_PORT", "on", 1);
    assert_int_equal(parse(&c, err, "serve", "--threads", "2", "--grpc-addr=off", "--max-streams", "300", "--cache",
                           "redis://127.0.0.1:6379/0", "--read-timeout", "1m30s", "--cache-max-memory",
                           "64KiB", "--cache-eviction", "volatile-ttl", "--login-rate-limit", "5/h",
                           "--log-level", "debug", NULL),
                     0);
    assert_int_equal(c.db_max_open, 7); /* from the environment */
    assert_int_equal(c.srv.h2_max_concurrent_streams, 16);
    assert_int_equal(c.srv.max_conns, 20);
    assert_int_equal(c.srv.reuse_port, 1);
    assert_int_equal(c.srv.max_streams, 300);
    assert_int_equal(c.srv.threads, 2);     /* flag beats environment */
    assert_string_equal(c.srv.grpc_addr, "");
    assert_string_equal(c.cache, "redis://127.0.0.1:6379/0");
    assert_true(c.srv.read_timeout_ns == 90 * BZ_NS_PER_S);
    assert_int_equal(c.cache_max_memory, 65536);
    assert_int_equal(c.cache_eviction, CACHE_EVICT_VOLATILE_TTL);
    assert_int_equal(c.login_rate_limit.count, 5);
    assert_true(c.login_rate_limit.window_ns == 3600 * BZ_NS_PER_S);
    assert_int_equal(c.srv.log_level, BZ_LOG_DEBUG);
    unsetenv("BAZAAR_DB_MAX_OPEN");
    unsetenv("BAZAAR_THREADS");
    unsetenv("BAZAAR_H2_MAX_CONCURRENT_STREAMS");
    unsetenv("BAZAAR_MAX_CONNS");
    unsetenv("BAZAAR_REUSE_PORT");
    assert_int_equal(parse(&c, err, "seed", "--users", "5", "--items", "9", "--orders", "3", "--seed", "42", NULL), 0);
    assert_int_equal(c.command, APP_CMD_SEED);
    assert_int_equal(c.seed_users, 5);
    assert_int_equal(c.seed_seed, 42);
    assert_int_equal(parse(&c, err, "version", NULL), 0);
    assert_int_equal(c.command, APP_CMD_VERSION);
    assert_int_equal(parse(&c, err, "--help", NULL), 0);
    assert_int_equal(c.command, APP_CMD_HELP);
}

static void config_rejects_bad_values(void **state)
{
    static app_config c;
    char err[512];
    struct {
        const char *a, *b, *needle;
    } cases[] = {
        {"--threads", "abc", "--threads"},
        {"--threads", "0", "--threads"},
        {"--read-timeout", "5 parsecs", "--read-timeout"},
        {"--read-timeout", "-5s", "--read-timeout"},
        {"--idle-timeout", "1e3s", "--idle-timeout"},
        {"--db-max-open", "-1", "--db-max-open"},
        {"--db-max-idle", "-2", "--db-max-idle"},
        {"--http-addr", "8080", "--http-addr"},
        {"--http-addr", ":99999", "--http-addr"},
        {"--db", "mysql://x", "--db"},
        {"--cache", "memcached", "--cache"},
        {"--cache", "redis://host", "--cache"},
        {"--cache-max-memory", "12XB", "--cache-max-memory"},
        {"--cache-eviction", "random", "--cache-eviction"},
        {"--rate-limit", "fast", "--rate-limit"},
        {"--login-rate-limit", "10/fortnight", "--login-rate-limit"},
        {"--log-level", "loud", "--log-level"},
        {"--log-format", "xml", "--log-format"},
        {"--max-body-bytes", "0", "--max-body-bytes"},
        {"--h2-max-concurrent-streams", "0", "--h2-max-concurrent-streams"},
        {"--h2-max-concurrent-streams", "lots", "--h2-max-concurrent-streams"},
        {"--max-conns", "0", "--max-conns"},
        {"--max-conns", "-3", "--max-conns"},
        {"--max-conns", "many", "--max-conns"},
        {"--max-conns", "1000001", "--max-conns"},
        {"--reuse-port", "maybe", "--reuse-port"},
        {"--max-streams", "0", "--max-streams"},
        {"--conn-buffer-bytes", "1KiB", "--conn-buffer-bytes"},
        {"--tls-handshake-timeout", "0", "--tls-handshake-timeout"},
        {"--tls-max-handshakes", "none", "--tls-max-handshakes"},
        {"--bogus", "1", "--bogus"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        assert_int_equal(parse(&c, err, cases[i].a, cases[i].b, NULL), -1);
        assert_non_null(strstr(err, cases[i].needle));
        assert_null(strchr(err, '\n'));
    }
    assert_int_equal(parse(&c, err, "--threads", NULL), -1);
    assert_non_null(strstr(err, "needs a value"));
    assert_int_equal(parse(&c, err, "frobnicate", NULL), -1);
    assert_non_null(strstr(err, "unknown command"));
    assert_int_equal(parse(&c, err, "serve", "--users", "3", NULL), -1);
    assert_non_null(strstr(err, "--users"));
    setenv("BAZAAR_WRITE_TIMEOUT", "soon", 1);
    assert_int_equal(parse(&c, err, NULL), -1);
    assert_non_null(strstr(err, "BAZAAR_WRITE_TIMEOUT"));
    unsetenv("BAZAAR_WRITE_TIMEOUT");
}

/* --breaker-failures and --breaker-probe-interval, and their twins. */
static void breaker_flags(void **state)
{
    static app_config c;
    char err[512];
    assert_int_equal(parse(&c, err, "serve", NULL), 0);
    assert_int_equal(c.breaker_failures, 3);
    assert_true(c.breaker_probe_interval_ns == 1 * SEC);
    setenv("BAZAAR_BREAKER_FAILURES", "0", 1); /* off */
    setenv("BAZAAR_BREAKER_PROBE_INTERVAL", "5s", 1);
    assert_int_equal(parse(&c, err, "serve", "--breaker-probe-interval", "250ms", NULL), 0);
    assert_int_equal(c.breaker_failures, 0);
    assert_true(c.breaker_probe_interval_ns == SEC / 4); /* the flag beats the environment */
    unsetenv("BAZAAR_BREAKER_FAILURES");
    unsetenv("BAZAAR_BREAKER_PROBE_INTERVAL");
    assert_int_equal(parse(&c, err, "serve", "--breaker-failures", "-1", NULL), -1);
    assert_non_null(strstr(err, "--breaker-failures"));
    assert_int_equal(parse(&c, err, "serve", "--breaker-probe-interval", "0", NULL), -1);
    assert_non_null(strstr(err, "--breaker-probe-interval"));
}


int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(config_defaults),
        cmocka_unit_test(config_flags_env_precedence),
        cmocka_unit_test(config_rejects_bad_values),
        cmocka_unit_test(breaker_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

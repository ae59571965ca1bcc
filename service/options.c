/* service/options.c — the lifecycle's standard flags (<bazaar/service.h>):
 * one table over bazaar_options, the settings every service has. */
#include <bazaar/service.h>

#include <bazaar/log.h>

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* "*", or origins like https://shop.example:8443, comma separated (spaces
 * around the commas are allowed). */
static int parse_origins(const char *v, void *dst, char *why, size_t whylen)
{
    for (const char *q = v; *q; q++)
        if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f)
            return snprintf(why, whylen, "want a comma-separated list of origins, or *"), -1;
    size_t n = strlen(v);
    if (n >= sizeof((bazaar_options *)0)->grpc_web_origins)
        return snprintf(why, whylen, "too long"), -1;
    memcpy(dst, v, n + 1);
    return 0;
}

static const char *const log_formats[] = {"text", "json", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

#define S(f) .dst = o->f, .cap = sizeof o->f
#define V(f) .dst = &o->f
#define MAXN 100000 /* counts of things a process holds */

size_t bazaar_standard_flags(bazaar_options *o, bz_flag out[BAZAAR_STANDARD_FLAGS])
{
    const bz_flag t[BAZAAR_STANDARD_FLAGS] = {
        {.name = "http-addr",
         .type = BZ_FLAG_ADDR,
         .def = ":8080",
         S(http_addr),
         .help = "REST/JSON over HTTP/1.1 and h2c; also gRPC and gRPC-Web"},
        {.name = "grpc-addr",
         .type = BZ_FLAG_ADDR,
         .opts = BZ_FLAG_OFF,
         .def = ":9090",
         S(grpc_addr),
         .help = "gRPC over h2c (prior knowledge); 'off' disables"},
        {.name = "admin-addr",
         .type = BZ_FLAG_ADDR,
         .opts = BZ_FLAG_OFF,
         .def = "off",
         S(admin_addr),
         .help =
             "admin listener (/metrics, /readyz, /healthz and the service's own pages) away from the public "
             "port; 'off' disables; when set, the public port no longer serves /metrics"},
        {.name = "threads",
         .type = BZ_FLAG_INT,
         V(threads),
         .min = 1,
         .max = MAXN,
         .help = "event-loop threads (default: number of cores)"},
        {.name = "read-header-timeout",
         .type = BZ_FLAG_DURATION,
         .def = "5s",
         V(read_header_timeout_ns),
         .help = "time to receive the request line and headers"},
        {.name = "read-timeout",
         .type = BZ_FLAG_DURATION,
         .def = "15s",
         V(read_timeout_ns),
         .help = "time to receive the whole request"},
        {.name = "write-timeout",
         .type = BZ_FLAG_DURATION,
         .def = "30s",
         V(write_timeout_ns),
         .help = "time to write the response"},
        {.name = "idle-timeout",
         .type = BZ_FLAG_DURATION,
         .def = "60s",
         V(idle_timeout_ns),
         .help = "keep-alive idle time"},
        {.name = "request-timeout",
         .type = BZ_FLAG_DURATION,
         .def = "10s",
         V(request_timeout_ns),
         .help = "deadline given to each handler's context"},
        {.name = "shutdown-grace",
         .type = BZ_FLAG_DURATION,
         .def = "10s",
         V(shutdown_grace_ns),
         .help = "how long SIGTERM/SIGINT waits for in-flight work"},
        {.name = "max-header-bytes",
         .type = BZ_FLAG_SIZE,
         .def = "16384",
         V(max_header_bytes),
         .min = 1024,
         .help = "larger request headers get 431"},
        {.name = "max-body-bytes",
         .type = BZ_FLAG_SIZE,
         .def = "1048576",
         V(max_body_bytes),
         .min = 1,
         .help = "larger request bodies get 413"},
        {.name = "max-conns",
         .type = BZ_FLAG_INT,
         .def = "10000",
         V(max_conns),
         .min = 1,
         .max = MAXN,
         .help = "open client connections per process (HTTP/1.1 and HTTP/2, both addresses); past it, accept "
                 "waits"},
        {.name = "h2-max-concurrent-streams",
         .type = BZ_FLAG_INT,
         .def = "128",
         V(h2_max_concurrent_streams),
         .min = 1,
         .max = MAXN,
         .help = "HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (streams per connection)"},
        {.name = "max-streams",
         .type = BZ_FLAG_INT,
         .def = "2048",
         V(max_streams),
         .min = 1,
         .max = MAXN,
         .help = "HTTP/2 streams open at once per process (every connection, both addresses); past it new "
                 "streams "
                 "are refused (REFUSED_STREAM)"},
        {.name = "conn-buffer-bytes",
         .type = BZ_FLAG_SIZE,
         .def = "8MiB",
         V(conn_buffer_bytes),
         .min = 65536,
         .help = "request and response bytes one HTTP/2 connection may hold buffered (large messages being "
                 "received, responses the client has not taken); past it those streams wait"},
        {.name = "buffer-bytes",
         .type = BZ_FLAG_SIZE,
         .def = "64MiB",
         V(buffer_bytes),
         .min = 65536,
         .help =
             "the same budget for the whole process; past it large requests get RESOURCE_EXHAUSTED and large "
             "sends wait"},
        {.name = "reuse-port",
         .type = BZ_FLAG_BOOL,
         .def = "off",
         V(reuse_port),
         .help = "on: share the listening ports with other processes (SO_REUSEPORT, for rolling restarts); "
                 "off: a "
                 "port in use is an error"},
        {.name = "grpc-max-recv-bytes",
         .type = BZ_FLAG_SIZE,
         .def = "4MiB",
         V(grpc_max_recv_bytes),
         .min = 1,
         .help = "larger gRPC request messages get RESOURCE_EXHAUSTED"},
        {.name = "grpc-web-origins",
         .type = BZ_FLAG_FUNC,
         .def = "",
         .dst = o->grpc_web_origins,
         .parse = parse_origins,
         .help = "origins allowed by CORS for gRPC-Web (comma list, * for any)"},
        {.name = "log-format",
         .type = BZ_FLAG_ENUM,
         .choices = log_formats,
         V(log_format),
         .help = "text or json (default: text on a TTY, else json)"},
        {.name = "log-level",
         .type = BZ_FLAG_ENUM,
         .def = "info",
         .choices = log_levels,
         V(log_level),
         .help = "debug, info, warn, error"},
        {.name = "tls-cert",
         .type = BZ_FLAG_FILE,
         .def = "",
         S(tls_cert),
         .help = "PEM certificate chain; with --tls-key both addresses speak TLS (ALPN h2, http/1.1); "
                 "reloaded on "
                 "SIGHUP"},
        {.name = "tls-handshake-timeout",
         .type = BZ_FLAG_DURATION,
         .def = "3s",
         V(tls_handshake_timeout_ns),
         .min = 1,
         .help = "time a client has to finish the TLS handshake (at most --read-header-timeout)"},
        {.name = "tls-max-handshakes",
         .type = BZ_FLAG_INT,
         .def = "128",
         V(tls_max_handshakes),
         .min = 1,
         .max = MAXN,
         .help = "TLS handshakes in progress at once per process; later ones wait (their timeout running) "
                 "without "
                 "a coroutine or TLS state"},
        {.name = "tls-key",
         .type = BZ_FLAG_FILE,
         .def = "",
         S(tls_key),
         .help = "PEM private key for --tls-cert"},
    };
    memcpy(out, t, sizeof t);
    return BAZAAR_STANDARD_FLAGS;
}

void bazaar_options_defaults(bazaar_options *o)
{
    memset(o, 0, sizeof *o);
    o->log_format = bz_log_default_format();
    /* The cores this process may run on (taskset, cgroup cpusets), as
     * Go's GOMAXPROCS does: more loops than usable cores only adds
     * context switches. */
    cpu_set_t cs;
    long cores = sched_getaffinity(0, sizeof cs, &cs) == 0 ? CPU_COUNT(&cs) : sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = cores > 0 ? (int)cores : 1;
}

int bazaar_options_check(const bazaar_options *o, const char *prog, char *err, size_t errlen)
{
    const char *batch = getenv("BAZAAR_IO_BATCH");
    rt_batch_mode m;
    if (batch && rt_batch_parse(batch, &m) != 0) {
        snprintf(err, errlen, "%s: BAZAAR_IO_BATCH: want auto, io_uring or off, not \"%.40s\"", prog, batch);
        return -1;
    }
    if (!o->tls_cert[0] != !o->tls_key[0]) {
        snprintf(err, errlen, "%s: --%s needs --%s (TLS takes both)", prog,
                 o->tls_cert[0] ? "tls-cert" : "tls-key", o->tls_cert[0] ? "tls-key" : "tls-cert");
        return -1;
    }
    return 0;
}

http_server_opts bazaar_http_opts(const bazaar_options *o)
{
    return (http_server_opts){
        .addr = o->http_addr,
        .read_header_timeout_ns = o->read_header_timeout_ns,
        .read_timeout_ns = o->read_timeout_ns,
        .write_timeout_ns = o->write_timeout_ns,
        .idle_timeout_ns = o->idle_timeout_ns,
        .shutdown_grace_ns = o->shutdown_grace_ns,
        .max_header_bytes = o->max_header_bytes,
        .max_body_bytes = o->max_body_bytes,
        .h2_max_concurrent_streams = o->h2_max_concurrent_streams,
        .max_streams = o->max_streams,
        .conn_buffer_bytes = o->conn_buffer_bytes,
        .buffer_bytes = o->buffer_bytes,
        .reuse_port = o->reuse_port,
        .tls_handshake_timeout_ns = o->tls_handshake_timeout_ns,
        .tls_max_handshakes = o->tls_max_handshakes,
        .max_conns = o->max_conns,
    };
}

/*
 * bazaar/service.h — a service's lifecycle in a few calls: the standard
 * flags, the listeners (HTTP, gRPC, TLS, admin), signals, graceful drain,
 * /healthz, /readyz and /metrics, sd_notify, JSON logs with trace ids.
 *
 *     int main(int argc, char **argv) {
 *         bazaar_service *s = bazaar_new("hello", argc, argv, NULL, 0);  // exits 2 on a bad flag
 *         http_mux *mux = bazaar_mux(s);              // REST routes, as Go's http.ServeMux
 *         http_mux_handle(mux, "GET /hello/{name}", (http_handler){hello, NULL}, NULL, 0);
 *         grpc_server *g = bazaar_grpc(s);            // RPC methods, as grpc.NewServer()
 *         grpc_server_add(g, &(grpc_method){.path = "/todo.v1.TodoService/GetTodo", .fn = get});
 *         bazaar_ready_check(s, "db", db_ok, db);     // /readyz and gRPC health ask it
 *         return bazaar_run(s);                       // serves until SIGTERM; the exit status
 *     }
 *
 * What bazaar_run does, in order:
 *   1. starts the runtime (--threads event loops), SIGTERM/SIGINT handling;
 *   2. calls the on-start hooks on a coroutine (open databases here:
 *      db_open and cache_open need the runtime); one that fails ends the
 *      run with status 1;
 *   3. listens: --http-addr serves REST through the standard middleware
 *      chain (request id with W3C traceparent, one access-log line per
 *      request, recovery of handler errors as 500 problem+json, gzip, and
 *      --request-timeout as each handler's deadline: 503 "timeout" when it
 *      fails with it before answering) and, by content type, gRPC and
 *      gRPC-Web on the same port; --grpc-addr
 *      serves gRPC alone (h2c prior knowledge), when the service has gRPC
 *      methods; --admin-addr (default off) serves GET /healthz, /readyz,
 *      /metrics and the service's admin routes on a port of its own with a
 *      connection cap of its own; --tls-cert/--tls-key make every address
 *      speak TLS (ALPN h2 and http/1.1), the pair re-read on SIGHUP;
 *      --max-conns is one per-process cap over the public addresses;
 *   4. logs "listening" (ports, threads, version) and tells systemd
 *      READY=1 (and WATCHDOG=1 at half WATCHDOG_USEC while every event loop
 *      still ticks; STOPPING=1 when shutdown begins);
 *   5. on SIGTERM/SIGINT: /readyz turns 503 and gRPC health NOT_SERVING,
 *      listeners stop accepting, idle connections close, in-flight requests
 *      get --shutdown-grace to finish, then the rest are cancelled;
 *   6. calls the on-stop hooks, frees the service, and returns the exit
 *      status: 0 after a drain, 1 when a start hook or a listener failed.
 *
 * GET /healthz answers 200 "ok" while the process serves.  GET /readyz
 * answers 200 {"status":"ok"} while not draining and every readiness check
 * passes, else 503 naming the failed checks ({"status":"unavailable",
 * "failed":["db"]}) with Retry-After: 1.  GET /metrics is the Prometheus
 * text page (process, build, gRPC method series); with --admin-addr it
 * moves to the admin port (the public one answers 404).  A service that
 * wants other answers replaces them with bazaar_handle_readyz /
 * bazaar_handle_metrics (they serve the admin port too).
 *
 * Handlers get the request's context (r->ctx), cancelled when the client
 * goes away, with --request-timeout as its deadline (0: none; a service
 * that streams longer serves those routes with bazaar_handle and sets its
 * own); gRPC unary calls get at most --request-timeout.  Logs are JSON lines
 * off a TTY (--log-format), and every line logged while a request is
 * served carries its trace_id and span_id.
 *
 * Everything here is called from main before bazaar_run, except where
 * noted.  One service per process.
 */
#ifndef BAZAAR_SERVICE_H
#define BAZAAR_SERVICE_H

#include <bazaar/flags.h>
#include <bazaar/grpc.h>
#include <bazaar/http.h>
#include <bazaar/rt.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#pragma GCC visibility push(default)

/* ---- the standard settings ------------------------------------------------------ */

/* What every service's command line sets (the flags' names in comments;
 * each has an environment twin, e.g. BAZAAR_HTTP_ADDR or TODO_HTTP_ADDR). */
typedef struct bazaar_options {
    char http_addr[256];              /* --http-addr ":8080" */
    char grpc_addr[256];              /* --grpc-addr ":9090", "" when off */
    char admin_addr[256];             /* --admin-addr, "" (off, the default) */
    int threads;                      /* --threads, default: the usable cores */
    int64_t read_header_timeout_ns;   /* --read-header-timeout 5s */
    int64_t read_timeout_ns;          /* --read-timeout 15s */
    int64_t write_timeout_ns;         /* --write-timeout 30s */
    int64_t idle_timeout_ns;          /* --idle-timeout 60s */
    int64_t request_timeout_ns;       /* --request-timeout 10s */
    int64_t shutdown_grace_ns;        /* --shutdown-grace 10s */
    int64_t max_header_bytes;         /* --max-header-bytes 16384 */
    int64_t max_body_bytes;           /* --max-body-bytes 1048576 */
    int max_conns;                    /* --max-conns 10000 */
    int h2_max_concurrent_streams;    /* --h2-max-concurrent-streams 128 */
    int max_streams;                  /* --max-streams 2048 */
    int64_t conn_buffer_bytes;        /* --conn-buffer-bytes 8MiB */
    int64_t buffer_bytes;             /* --buffer-bytes 64MiB */
    bool reuse_port;                  /* --reuse-port off */
    int64_t grpc_max_recv_bytes;      /* --grpc-max-recv-bytes 4MiB */
    char grpc_web_origins[1024];      /* --grpc-web-origins "" */
    int log_format;                   /* --log-format: bz_log_format */
    int log_level;                    /* --log-level info: bz_log_level */
    char tls_cert[1024];              /* --tls-cert "" */
    char tls_key[1024];               /* --tls-key "" */
    int64_t tls_handshake_timeout_ns; /* --tls-handshake-timeout 3s */
    int tls_max_handshakes;           /* --tls-max-handshakes 128 */
} bazaar_options;

#define BAZAAR_STANDARD_FLAGS 26

/* The standard flags as a table over o (for a program that parses its
 * own command line with <bazaar/flags.h>): fills out, returns its length.
 * Call bazaar_options_defaults(o) first (the computed defaults). */
size_t bazaar_standard_flags(bazaar_options *o, bz_flag out[BAZAAR_STANDARD_FLAGS]);
/* Zeroes o and sets the defaults no table can write: --threads (the cores
 * this process may run on) and --log-format (text on a TTY, else json). */
void bazaar_options_defaults(bazaar_options *o);
/* The checks across flags (--tls-cert needs --tls-key).  0, or -1 with a
 * one-line message "prog: ..." in err. */
int bazaar_options_check(const bazaar_options *o, const char *prog, char *err, size_t errlen);
/* The HTTP server settings o describes (addr is o->http_addr). */
http_server_opts bazaar_http_opts(const bazaar_options *o);

/* ---- the service ----------------------------------------------------------------- */

typedef struct bazaar_service bazaar_service;

/* Parses the command line: the standard flags and the service's own
 * (flags[0..nflags), may be NULL), environment twins NAME_FLAG_NAME in upper
 * case (hello → HELLO_HTTP_ADDR).  --help prints the usage and exits 0;
 * --version prints "name version" and exits 0; `name env-template` prints
 * an environment file (systemd EnvironmentFile=, every NAME_* variable
 * commented out at its default) and exits 0; a bad value prints one line
 * naming it and exits 2.  Sets up logging.  The name and the table are
 * borrowed: they must outlive the service. */
bazaar_service *bazaar_new(const char *name, int argc, char **argv, const bz_flag *flags, size_t nflags);
/* The same from settings a program parsed itself (o is copied). */
bazaar_service *bazaar_new_with(const char *name, const bazaar_options *o);
/* The settings in force. */
const bazaar_options *bazaar_opts(const bazaar_service *s);

/* The public port's router (Go's http.ServeMux): GET /healthz, /readyz and
 * /metrics are on it already. */
http_mux *bazaar_mux(bazaar_service *s);
/* Serves h instead of the mux behind the standard middleware, without the
 * --request-timeout deadline (a service with a router of its own, that
 * sets its deadlines itself and answers /healthz and the rest itself). */
void bazaar_handle(bazaar_service *s, http_handler h);
/* Adds a middleware inside the standard chain, around the mux (first added
 * is outermost), e.g. bazaar_use(s, http_mw_timeout, &timeout_ns). */
void bazaar_use(bazaar_service *s, http_middleware mw, void *cfg);

/* The gRPC server (created on first use with --grpc-max-recv-bytes,
 * --grpc-web-origins and --request-timeout as the unary deadline cap;
 * health and reflection are registered when the run starts, health
 * following bazaar_ready).  Served on --grpc-addr and, by content type,
 * on --http-addr. */
grpc_server *bazaar_grpc(bazaar_service *s);
/* Serves g instead (a server the program built with interceptors of its
 * own; it registers health itself).  Borrowed: g must outlive the run. */
void bazaar_set_grpc(bazaar_service *s, grpc_server *g);

/* The admin port's router (--admin-addr): GET /healthz, /readyz and
 * /metrics are on it; add the service's operator pages. */
http_mux *bazaar_admin_mux(bazaar_service *s);

/* A readiness check: fn(arg, ctx) true while the dependency it names
 * answers (ctx bounds how long it may ask).  /readyz and gRPC health call
 * every check on every probe. */
typedef bool (*bazaar_check_fn)(void *arg, rt_ctx *ctx);
void bazaar_ready_check(bazaar_service *s, const char *name, bazaar_check_fn fn, void *arg);
/* Whether the service is ready: not draining and every check passes.
 * A grpc_serving_fn (arg is the service), from inside the run. */
bool bazaar_ready(void *s, rt_ctx *ctx);
/* True once shutdown began (inside the run). */
bool bazaar_draining(const bazaar_service *s);

/* Replaces the answer of GET /readyz or GET /metrics (on the public mux
 * and the admin port). */
void bazaar_handle_readyz(bazaar_service *s, http_handler h);
void bazaar_handle_metrics(bazaar_service *s, http_handler h);

/* Hooks around serving.  on_start runs on a coroutine inside the runtime
 * before the listeners open (open the database, run migrations, add routes
 * that need them); non-zero ends the run with status 1 (later start hooks
 * are not called).  on_stop hooks run after the drain, in the reverse
 * order, and also after a failed start: like Go's defer, each must cope
 * with what a failed start left (a NULL handle).  Several may be added. */
typedef int (*bazaar_start_fn)(bazaar_service *s, void *arg);
typedef void (*bazaar_stop_fn)(bazaar_service *s, void *arg);
void bazaar_on_start(bazaar_service *s, bazaar_start_fn fn, void *arg);
void bazaar_on_stop(bazaar_service *s, bazaar_stop_fn fn, void *arg);

/* A string field for the "listening" log line (e.g. "db":"sqlite"); key and
 * value are borrowed.  At most 4. */
void bazaar_log_field(bazaar_service *s, const char *key, const char *value);

/* The bound ports (inside the run, after the listeners opened; 0 when off). */
int bazaar_http_port(const bazaar_service *s);
int bazaar_grpc_port(const bazaar_service *s);
int bazaar_admin_port(const bazaar_service *s);

/* Runs the service until SIGTERM/SIGINT (or rt_shutdown()) and frees it.
 * Returns the process exit status: 0 after a shutdown, 1 when it could not
 * start (a hook failed, a port was in use: logged), 2 when the TLS pair
 * cannot be loaded (one line on stderr, as a bad flag). */
int bazaar_run(bazaar_service *s);

#pragma GCC visibility pop

#endif

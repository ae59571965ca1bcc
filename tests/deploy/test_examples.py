"""The examples as a library user meets them: `make install-lib` into a temp
DESTDIR, each example's directory copied out of the tree and built there
with pkg-config alone (hello: one cc line; todo and mini: protoc-c, then
one cc line each, from their Makefile), run on free loopback ports and
driven with curl (REST, /healthz, /readyz, /metrics) and python3-grpcio
(todo.proto's RPCs, with messages from Debian's protoc --python_out, over
grpcio's generic unary calls), todo also on a throwaway PostgreSQL and
Redis.  Also: the lifecycle's flags on an example (a bad value is one line
and exit 2, an environment twin with the example's own prefix), and mini
within the issue's 80 lines."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import pytest

import harness

BUILD = os.path.dirname(harness.BAZAAR)
EXAMPLES = os.path.join(harness.ROOT, "examples")


@pytest.fixture(scope="module")
def tree():
    d = tempfile.mkdtemp(prefix="bazaar-examples-")
    r = subprocess.run(["make", "--no-print-directory", "-C", harness.ROOT, "install-lib", "DESTDIR=" + d,
                        "PREFIX=/usr", "BUILD=" + BUILD], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    yield d
    shutil.rmtree(d, ignore_errors=True)


def user_env(tree):
    """What a user of the DESTDIR tree sets: pkg-config finds bazaar.pc
    (--define-prefix: the tree is not at its PREFIX), the loader the .so."""
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(tree, "usr/lib/pkgconfig"),
               PKG_CONFIG="pkg-config --define-prefix", LD_LIBRARY_PATH=os.path.join(tree, "usr/lib"))
    env.pop("PKG_CONFIG_SYSROOT_DIR", None)
    return env


def build(tree, name, cmd):
    """Copies examples/<name> to a temp dir outside the tree and runs cmd there."""
    d = tempfile.mkdtemp(prefix="bazaar-example-%s-" % name)
    src = os.path.join(d, name)
    shutil.copytree(os.path.join(EXAMPLES, name), src)
    r = subprocess.run(["sh", "-c", cmd], cwd=src, env=user_env(tree), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert harness.ROOT not in r.stdout + r.stderr  # nothing of the source tree is used
    return src


@pytest.fixture(scope="module")
def hello(tree):
    d = build(tree, "hello", "cc -Wall -Werror -o hello hello.c $(pkg-config --define-prefix --cflags --libs bazaar)")
    yield os.path.join(d, "hello")
    shutil.rmtree(os.path.dirname(d), ignore_errors=True)


@pytest.fixture(scope="module")
def todo(tree):
    d = build(tree, "todo", "make")
    yield d
    shutil.rmtree(os.path.dirname(d), ignore_errors=True)


@pytest.fixture(scope="module")
def pb(todo):
    """todo_pb2 from todo.proto (protoc --python_out; no grpc_tools needed)."""
    out = tempfile.mkdtemp(prefix="bazaar-todo-pb-")
    subprocess.run(["protoc", "-I" + todo, "--python_out=" + out, "todo.proto"], check=True, timeout=60)
    sys.path.insert(0, out)
    import todo_pb2
    yield todo_pb2
    sys.path.remove(out)
    shutil.rmtree(out, ignore_errors=True)


class Example:
    """An example program on free loopback ports, its JSON log in a file."""

    def __init__(self, tree, exe, *flags, grpc_port=True, cwd=None, ca=None):
        self.port = harness.free_port()
        self.grpc_port = harness.free_port() if grpc_port else 0
        self.dir = cwd or tempfile.mkdtemp(prefix="bazaar-example-run-")
        self.log_path = os.path.join(self.dir, "log")
        argv = [exe, "--http-addr", "127.0.0.1:%d" % self.port,
                "--grpc-addr", "127.0.0.1:%d" % self.grpc_port if grpc_port else "off",
                "--threads", "2", "--log-format", "json"] + list(flags)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, cwd=self.dir, env=user_env(tree), stdout=subprocess.DEVNULL,
                                     stderr=self.log)
        ok = harness.wait_for(lambda: self.proc.poll() is not None or curl(self.port, "/healthz", ca=ca)[0] == 200,
                              15)
        assert ok and self.proc.poll() is None, self.lines()

    def lines(self):
        with open(self.log_path) as f:
            return [json.loads(l) for l in f if l.startswith("{")]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(15)
        self.log.close()
        return rc


def curl(port, path, method="GET", ca=None, *extra):
    """(status, body) from curl; (0, '') when nothing answers.  With ca:
    https to localhost, verified against that CA."""
    url = ("https://localhost:%d%s" if ca else "http://127.0.0.1:%d%s") % (port, path)
    tls = ["--cacert", ca] if ca else []
    r = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--max-time", "5"] + tls +
                       list(extra) + [url], capture_output=True, text=True, timeout=10)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def rpc(port, method, req, resp_type):
    with grpc.insecure_channel("127.0.0.1:%d" % port) as ch:
        call = ch.unary_unary("/todo.v1.TodoService/" + method, request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=resp_type.FromString)
        return call(req, timeout=5)


def health(port):
    """grpc.health.v1.Health/Check for the whole server, by hand: an empty
    request; the answer's field 1 (status) is SERVING = 1."""
    with grpc.insecure_channel("127.0.0.1:%d" % port) as ch:
        call = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        return call(b"", timeout=5)


# ---- hello ----------------------------------------------------------------------------------


def test_hello_answers_json_health_and_drains(tree, hello):
    ex = Example(tree, hello, grpc_port=False)
    try:
        code, body = curl(ex.port, "/hello/world")
        assert code == 200 and json.loads(body) == {"message": "hello, world"}
        code, body = curl(ex.port, "/hello/a%22b")  # escaped, still JSON
        assert code == 200 and json.loads(body) == {"message": 'hello, a"b'}
        assert curl(ex.port, "/healthz") == (200, "ok")
        code, body = curl(ex.port, "/readyz")
        assert code == 200 and json.loads(body) == {"status": "ok"}
        code, body = curl(ex.port, "/metrics")
        assert code == 200 and "process_resident_memory_bytes" in body
        # every request is counted by route pattern, method and status (the
        # lifecycle's access log records into the standard request families)
        counted = [l for l in body.splitlines() if l.startswith("bazaar_http_requests_total{")
                   and 'route="GET /hello/{name}"' in l and 'status="200"' in l]
        assert len(counted) == 1 and counted[0].endswith(" 2"), body
        assert curl(ex.port, "/nope")[0] == 404
    finally:
        assert ex.stop() == 0
    log = ex.lines()
    listening = [l for l in log if l["msg"] == "listening"]
    assert listening and listening[0]["port"] == ex.port and listening[0]["grpc_port"] == 0
    reqs = [l for l in log if l["msg"] == "request"]
    assert {l["route"] for l in reqs} >= {"GET /hello/{name}", "GET /healthz"}
    assert all(len(l["trace_id"]) == 32 and l["request_id"] for l in reqs)
    assert [l for l in log if l["msg"] == "stopped"][0]["drain"] == "complete"


def test_hello_flags_env_twins_and_help(tree, hello):
    env = user_env(tree)
    r = subprocess.run([hello, "--threads", "lots"], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ['hello: invalid value "lots" for --threads: want a whole number']
    r = subprocess.run([hello], env=dict(env, HELLO_HTTP_ADDR="nowhere"), capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "HELLO_HTTP_ADDR (--http-addr)" in r.stderr
    r = subprocess.run([hello, "--help"], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0
    for flag in ("--http-addr", "--grpc-addr", "--admin-addr", "--shutdown-grace", "--tls-cert", "--log-level"):
        assert flag in r.stdout, flag
    assert "env HELLO_SHUTDOWN_GRACE" in r.stdout
    r = subprocess.run([hello, "env-template"], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert all(not l or l.startswith("#") for l in lines)  # EnvironmentFile= syntax, all commented out
    assert "#HELLO_HTTP_ADDR=:8080" in lines and "#HELLO_REQUEST_TIMEOUT=10s" in lines
    assert "# --shutdown-grace: how long SIGTERM/SIGINT waits for in-flight work" in lines


def test_hello_admin_port_takes_metrics(tree, hello):
    admin = harness.free_port()
    ex = Example(tree, hello, "--admin-addr", "127.0.0.1:%d" % admin, grpc_port=False)
    try:
        assert curl(ex.port, "/metrics")[0] == 404
        code, body = curl(admin, "/metrics")
        assert code == 200 and "process_open_fds" in body
        assert curl(admin, "/healthz") == (200, "ok")
        assert curl(admin, "/readyz")[0] == 200
    finally:
        assert ex.stop() == 0


def test_hello_over_tls(tree, hello):
    from tls_support import make_pki
    pki = make_pki(tempfile.mkdtemp(prefix="bazaar-example-pki-"))
    ca = os.path.join(pki, "ca.pem")
    ex = Example(tree, hello, "--tls-cert", os.path.join(pki, "one.pem"), "--tls-key", os.path.join(pki, "one.key"),
                 grpc_port=False, ca=ca)
    try:
        code, body = curl(ex.port, "/hello/tls", "GET", ca)
        assert code == 200 and json.loads(body) == {"message": "hello, tls"}
        code, body = curl(ex.port, "/hello/h2", "GET", ca, "--http2")  # ALPN h2
        assert code == 200 and json.loads(body) == {"message": "hello, h2"}
        assert curl(ex.port, "/healthz")[0] == 400  # plaintext to a TLS port: 400, as Go answers
    finally:
        assert ex.stop() == 0
        shutil.rmtree(pki, ignore_errors=True)
    # a pair that does not load: one line, exit 2, before anything listens
    r = subprocess.run([hello, "--tls-cert", "/etc/hostname", "--tls-key", "/etc/hostname"], env=user_env(tree),
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and r.stderr.startswith("hello: invalid --tls-cert/--tls-key:"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# ---- todo ---------------------------------------------------------------------------------------


def drive_todo(ex, pb):
    """REST and gRPC over the same rows, on whichever backends ex runs."""
    code, body = curl(ex.port, "/todos?title=milk", "POST")
    assert code == 201, body
    made = json.loads(body)
    assert made["title"] == "milk" and made["id"] >= 1
    code, body = curl(ex.port, "/todos/%d" % made["id"])
    assert code == 200 and json.loads(body) == made
    # the RPC answers from the same service function ...
    t = rpc(ex.grpc_port, "GetTodo", pb.GetTodoRequest(id=made["id"]), pb.Todo)
    assert (t.id, t.title) == (made["id"], "milk")
    # ... and what gRPC adds, REST reads
    t2 = rpc(ex.grpc_port, "AddTodo", pb.AddTodoRequest(title="eggs"), pb.Todo)
    assert t2.id != made["id"] and t2.title == "eggs"
    code, body = curl(ex.port, "/todos/%d" % t2.id)
    assert code == 200 and json.loads(body) == {"id": t2.id, "title": "eggs"}
    # gRPC on the HTTP port too (by content type)
    assert rpc(ex.port, "GetTodo", pb.GetTodoRequest(id=t2.id), pb.Todo).title == "eggs"
    # absent: 404 problem+json and NOT_FOUND
    code, body = curl(ex.port, "/todos/999999")
    assert code == 404 and json.loads(body)["code"] == "not_found"
    with pytest.raises(grpc.RpcError) as e:
        rpc(ex.grpc_port, "GetTodo", pb.GetTodoRequest(id=999999), pb.Todo)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        rpc(ex.grpc_port, "AddTodo", pb.AddTodoRequest(title=""), pb.Todo)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert curl(ex.port, "/todos", "POST")[0] == 400
    assert health(ex.grpc_port) == b"\x08\x01"
    code, body = curl(ex.port, "/readyz")
    assert code == 200 and json.loads(body) == {"status": "ok"}
    return made["id"], t2.id


def test_todo_on_sqlite(tree, todo, pb):
    ex = Example(tree, os.path.join(todo, "todo"))
    try:
        drive_todo(ex, pb)
    finally:
        assert ex.stop() == 0
    # the migration made the schema in the default SQLite file (the cwd's)
    assert os.path.exists(os.path.join(ex.dir, "todo.db"))
    assert any(l["msg"] == "migration applied" and l["name"] == "todos" for l in ex.lines())


def test_todo_on_postgres_and_redis(tree, todo, pb):
    pg = harness.Postgres()
    rd = harness.Redis()
    ex = None
    try:
        dbname = pg.createdb()
        ex = Example(tree, os.path.join(todo, "todo"), "--db", pg.url(dbname), "--cache", rd.url(0),
                     "--request-timeout", "1s")
        first, second = drive_todo(ex, pb)
        assert pg.psql(dbname, "SELECT version FROM schema_migrations") == [["1"]]
        assert sorted(pg.psql(dbname, "SELECT title FROM todos")) == [["eggs"], ["milk"]]
        # cache-aside: the reads above left the todos in Redis
        keys = subprocess.run(["redis-cli", "-p", str(rd.port), "--scan"], capture_output=True, text=True,
                              timeout=10).stdout.split()
        assert any("todo:%d" % first in k for k in keys) and any("todo:%d" % second in k for k in keys), keys
        # --request-timeout bounds a handler: a frozen database is a 503
        # "timeout" after 1 s, not a hang (and a gRPC call ends too)
        pg.freeze()
        try:
            t0 = time.monotonic()
            code, body = curl(ex.port, "/todos/424242")
            assert code == 503 and json.loads(body)["code"] == "timeout", body
            assert time.monotonic() - t0 < 4
            with pytest.raises(grpc.RpcError) as e:
                rpc(ex.grpc_port, "GetTodo", pb.GetTodoRequest(id=434343), pb.Todo)
            assert e.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.INTERNAL), e.value
        finally:
            pg.thaw()
        # /readyz follows the database: stopped, the check fails
        pg.stop_immediate()
        code, body = curl(ex.port, "/readyz")
        assert code == 503 and json.loads(body) == {"status": "unavailable", "failed": ["db"]}
        # while the cached todo is still served (cache-aside, not the database)
        code, body = curl(ex.port, "/todos/%d" % first)
        assert code == 200 and json.loads(body)["title"] == "milk"
    finally:
        if ex:
            assert ex.stop() == 0
        rd.close()
        pg.close()


def test_todo_refuses_a_bad_flag(tree, todo):
    exe = os.path.join(todo, "todo")
    r = subprocess.run([exe, "--cache-ttl", "0"], env=user_env(tree), capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert r.stderr.strip() == 'todo: invalid value "0" for --cache-ttl: want a duration > 0'
    r = subprocess.run([exe], env=dict(user_env(tree), TODO_CACHE_TTL="soon"), capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2 and "TODO_CACHE_TTL (--cache-ttl)" in r.stderr


def test_todo_exit_status_when_it_cannot_start(tree, todo):
    exe = os.path.join(todo, "todo")
    env = user_env(tree)
    d = tempfile.mkdtemp(prefix="bazaar-example-run-")
    try:
        # a start hook that fails (no database there): 1, logged, nothing left listening
        port = harness.free_port()
        r = subprocess.run([exe, "--http-addr", "127.0.0.1:%d" % port, "--grpc-addr", "off", "--log-format", "json",
                            "--db", "postgres://nobody@127.0.0.1:%d/x?connect_timeout=2" % harness.free_port()],
                           cwd=d, env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "cannot open the backends" in r.stderr, r.stderr
        assert '"listening"' not in r.stderr
        # a port in use: 1, "cannot listen" naming the address
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        addr = "127.0.0.1:%d" % busy.getsockname()[1]
        r = subprocess.run([exe, "--http-addr", addr, "--grpc-addr", "off", "--log-format", "json"], cwd=d, env=env,
                           capture_output=True, text=True, timeout=30)
        busy.close()
        assert r.returncode == 1, r.stderr
        line = [json.loads(l) for l in r.stderr.splitlines() if '"cannot listen"' in l][0]
        assert line["addr"] == addr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_mini_serves_a_route_and_an_rpc_in_80_lines(tree, todo, pb):
    with open(os.path.join(EXAMPLES, "todo", "mini.c")) as f:
        assert len(f.read().splitlines()) <= 80
    ex = Example(tree, os.path.join(todo, "mini"))
    try:
        code, body = curl(ex.port, "/todos/1")
        assert code == 200 and json.loads(body) == {"id": 1, "title": "write less C"}
        t = rpc(ex.grpc_port, "GetTodo", pb.GetTodoRequest(id=1), pb.Todo)
        assert (t.id, t.title) == (1, "write less C")
        assert curl(ex.port, "/todos/2")[0] == 404
        with pytest.raises(grpc.RpcError) as e:
            rpc(ex.grpc_port, "GetTodo", pb.GetTodoRequest(id=2), pb.Todo)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert curl(ex.port, "/healthz") == (200, "ok")
    finally:
        assert ex.stop() == 0

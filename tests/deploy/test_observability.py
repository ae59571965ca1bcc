"""Observability against the real program: /metrics through promtool after
real REST, gRPC and error traffic; process_* and build_info; the event-loop
lag histogram and runtime gauges; W3C trace context in the JSON log (REST
and gRPC metadata); the admin listener (--admin-addr)."""
import json
import os
import re
import socket
import subprocess
import time

import grpc
import pytest

import harness
from obs_support import Server, listening_ports, parse_metrics, value

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def srv():
    s = Server()
    yield s
    s.close()


def get_item_request(item_id):
    """GetItemRequest{id} on the wire: field 1, varint."""
    out, v = bytearray(b"\x08"), item_id
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def traffic(s):
    """REST and gRPC calls that touch every metric source: sign-up, login,
    an item created, read twice (cache miss then hit), errors (404, 400,
    unmatched route), gRPC found and not found."""
    email = "obs%d@example.com" % os.getpid()
    st, _, b = s.request("POST", "/v1/users", {"email": email, "name": "Obs", "password": "password123"})
    assert st == 201, b
    st, _, b = s.request("POST", "/v1/sessions", {"email": email, "password": "password123"})
    assert st == 201, b
    tok = json.loads(b)["token"]
    st, _, b = s.request("POST", "/v1/items", {"sku": "obs-%d" % os.getpid(), "name": "thing", "price_cents": 100,
                                                "currency": "USD", "stock": 5},
                         headers={"Authorization": "Bearer " + tok})
    assert st == 201, b
    item = json.loads(b)["id"]
    for want in ("bazaar; fwd=miss", "bazaar; hit"):
        st, h, _ = s.request("GET", "/v1/items/%d" % item)
        assert st == 200 and h["cache-status"] == want
    assert s.request("GET", "/v1/items/99999999")[0] == 404
    assert s.request("POST", "/v1/users", {"email": 7})[0] == 400
    assert s.request("GET", "/no/such/route")[0] == 404
    with grpc.insecure_channel("127.0.0.1:%d" % s.grpc_port) as ch:
        get = ch.unary_unary("/bazaar.v1.ItemService/GetItem")
        get(get_item_request(item), timeout=5)
        with pytest.raises(grpc.RpcError) as e:
            get(get_item_request(99999999), timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    return item


def scrape(s, port=None):
    st, h, b = s.request("GET", "/metrics", port=port)
    assert st == 200 and h["content-type"].startswith("text/plain; version=0.0.4")
    return b.decode()


def test_metrics_pass_promtool_after_real_traffic(srv):
    traffic(srv)
    text = scrape(srv)
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr
    types, samples = parse_metrics(text)
    # every family announced once, with HELP as well as TYPE
    helps = re.findall(r"^# HELP (\S+) ", text, re.M)
    assert sorted(helps) == sorted(types) and len(set(helps)) == len(helps)
    for n, _, _ in samples:
        fam = re.sub(r"_(bucket|sum|count)$", "", n) if n not in types else n
        assert fam in types, n
    assert value(samples, "bazaar_cache_hits_total") >= 1
    assert value(samples, "bazaar_cache_misses_total") >= 1
    assert value(samples, "bazaar_cache_entries") >= 1 and value(samples, "bazaar_cache_bytes") > 0
    assert value(samples, "bazaar_http_requests_total", route="GET /v1/items/{id}", method="GET", status="404") >= 1
    assert value(samples, "bazaar_http_requests_total", route="(unmatched)", method="GET", status="404") >= 1
    assert value(samples, "bazaar_grpc_server_handled_total", method="bazaar.v1.ItemService/GetItem",
                 code="NOT_FOUND") >= 1
    assert value(samples, "bazaar_grpc_server_handling_seconds_count", method="bazaar.v1.ItemService/GetItem") >= 2
    assert value(samples, "bazaar_db_open_connections") >= 1
    assert value(samples, "bazaar_runtime_offload_jobs_total") >= 1  # the password hashes ran there
    for t in ("counter",):
        for name, typ in types.items():
            if typ == t:
                assert name.endswith("_total"), name


def test_process_metrics_are_plausible(srv):
    _, samples = parse_metrics(scrape(srv))
    pid = srv.proc.pid
    assert value(samples, "process_resident_memory_bytes") > 1 << 20
    assert value(samples, "process_virtual_memory_bytes") >= value(samples, "process_resident_memory_bytes")
    fds = len(os.listdir("/proc/%d/fd" % pid))
    assert abs(value(samples, "process_open_fds") - fds) <= 4, fds
    with open("/proc/%d/limits" % pid) as f:
        soft = [line.split()[3] for line in f if line.startswith("Max open files")][0]
    assert value(samples, "process_max_fds") == float(soft)
    start = value(samples, "process_start_time_seconds")
    assert srv.t_start - 2 <= start <= srv.t_ready + 1, (srv.t_start, start, srv.t_ready)
    assert value(samples, "process_cpu_seconds_total") >= 0


def test_build_info(srv):
    _, samples = parse_metrics(scrape(srv))
    info = [l for n, l, v in samples if n == "bazaar_build_info" and v == 1]
    assert len(info) == 1
    out = subprocess.run([harness.BAZAAR, "version"], capture_output=True, text=True).stdout.split()
    assert info[0]["version"] == out[1]
    head = subprocess.run(["git", "-C", harness.ROOT, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    # the commit the binary was built from, or "unknown" outside a checkout
    assert re.match(r"^([0-9a-f]{12}(\+dirty)?|unknown)$", info[0]["commit"]), info[0]
    assert head and info[0]["commit"] != "unknown"
    assert info[0]["compiler"]


def test_runtime_gauges_and_loop_lag(srv):
    # an idle keep-alive connection and an h2c one are open during the scrape
    idle = socket.create_connection(("127.0.0.1", srv.port))
    h2 = socket.create_connection(("127.0.0.1", srv.port))
    h2.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    h2.settimeout(5)
    assert h2.recv(9)[3] == 4  # the server's SETTINGS: it speaks HTTP/2 now
    time.sleep(0.3)  # let every loop tick a few times
    try:
        _, samples = parse_metrics(scrape(srv))
    finally:
        idle.close()
        h2.close()
    for loop in ("0", "1"):
        assert value(samples, "bazaar_runtime_loop_lag_seconds_count", loop=loop) >= 2
        assert value(samples, "bazaar_runtime_loop_lag_seconds_bucket", loop=loop, le="+Inf") == \
            value(samples, "bazaar_runtime_loop_lag_seconds_count", loop=loop)
        assert value(samples, "bazaar_runtime_coroutines", loop=loop) >= 0
        assert value(samples, "bazaar_runtime_timers", loop=loop) >= 1  # the lag tick itself
    assert sum(v for n, l, v in samples if n == "bazaar_runtime_coroutines") >= 1  # the scrape's own
    assert value(samples, "bazaar_http_open_connections", listener="public", protocol="http1") >= 2
    assert value(samples, "bazaar_http_open_connections", listener="public", protocol="h2") >= 1
    assert value(samples, "bazaar_runtime_offload_threads") >= 1


# ---- trace context ----


def lines_of(s, request_id):
    return [l for l in s.log_lines() if l.get("request_id") == request_id]


def test_valid_traceparent_is_on_every_log_line_of_the_request(srv):
    tp = "00-%s-%s-01" % (TRACE, PARENT)
    st, h, _ = srv.request("GET", "/v1/items/424242", headers={"traceparent": tp, "tracestate": "vendor=x",
                                                                 "X-Request-Id": "obs-trace-valid"})
    assert st == 404
    assert h["traceresponse"].startswith("00-%s-" % TRACE) and h["traceresponse"].endswith("-01")
    span = h["traceresponse"].split("-")[2]
    assert HEX16.match(span) and span != PARENT
    lines = harness.wait_for(lambda: [l for l in lines_of(srv, "obs-trace-valid") if l["msg"] == "request"], 5)
    assert lines, srv.log_text()[-2000:]
    every = lines_of(srv, "obs-trace-valid")
    assert {l["msg"] for l in every} >= {"request started", "request"}
    for l in every:
        assert l["trace_id"] == TRACE and l["span_id"] == span, l
    access = lines[0]
    assert access["route"] == "GET /v1/items/{id}" and access["status"] == 404
    assert access["parent_id"] == PARENT and access["bytes"] > 0 and access["duration_ms"] >= 0
    # no line of any other request carries this trace
    assert all(l.get("request_id") == "obs-trace-valid" for l in srv.log_lines() if l.get("trace_id") == TRACE)


@pytest.mark.parametrize("bad", [
    "ff-%s-%s-01" % (TRACE, PARENT),                      # version 255 is forbidden
    "00-%s-%s-01" % ("0" * 32, PARENT),                   # all-zero trace id
    "00-%s-%s-01" % (TRACE, "0" * 16),                    # all-zero parent id
    "00-%s-%s-01" % (TRACE.upper(), PARENT),              # upper-case hex
    "00-%s-%s-01-extra" % (TRACE, PARENT),                # version 00 has exactly four fields
    "00-%s-%s-1" % (TRACE, PARENT),                       # short flags
    "00_%s_%s_01" % (TRACE, PARENT),                      # wrong separators
    "garbage",
])
def test_invalid_traceparent_starts_a_new_trace(srv, bad):
    rid = "obs-bad-%d" % (abs(hash(bad)) % 10 ** 8)
    st, h, _ = srv.request("GET", "/healthz", headers={"traceparent": bad, "X-Request-Id": rid})
    assert st == 200  # the request is not failed
    tid = h["traceresponse"].split("-")[1]
    assert HEX32.match(tid) and tid != TRACE.lower() and tid != "0" * 32
    lines = harness.wait_for(lambda: [l for l in lines_of(srv, rid) if l["msg"] == "request"], 5)
    assert lines and lines[0]["trace_id"] == tid and lines[0]["parent_id"] == ""


def test_absent_traceparent_generates_one(srv):
    ids = []
    for i in range(2):
        rid = "obs-absent-%d" % i
        st, h, _ = srv.request("GET", "/healthz", headers={"X-Request-Id": rid})
        assert st == 200
        lines = harness.wait_for(lambda: [l for l in lines_of(srv, rid) if l["msg"] == "request"], 5)
        assert lines and HEX32.match(lines[0]["trace_id"]) and HEX16.match(lines[0]["span_id"])
        assert "traceresponse" not in h  # nobody asked: the request id finds the lines
        ids.append(lines[0]["trace_id"])
    assert ids[0] != ids[1]


def test_grpc_metadata_traceparent_is_honoured(srv):
    trace = "0af7651916cd43dd8448eb211c80319c"
    with grpc.insecure_channel("127.0.0.1:%d" % srv.grpc_port) as ch:
        get = ch.unary_unary("/bazaar.v1.ItemService/GetItem")
        with pytest.raises(grpc.RpcError) as e:
            get(get_item_request(99999999), timeout=5,
                metadata=[("traceparent", "00-%s-b7ad6b7169203331-01" % trace), ("x-request-id", "obs-grpc-trace")])
        # an error before any message is Trailers-Only: headers travel in the trailers
        md = dict(e.value.initial_metadata()) | dict(e.value.trailing_metadata())
    assert md["traceresponse"].startswith("00-%s-" % trace)
    lines = harness.wait_for(lambda: [l for l in lines_of(srv, "obs-grpc-trace") if l["msg"] == "grpc"], 5)
    assert lines and lines[0]["code"] == "NOT_FOUND"
    every = lines_of(srv, "obs-grpc-trace")
    assert {l["msg"] for l in every} >= {"grpc started", "grpc"}
    assert all(l["trace_id"] == trace for l in every), every


@pytest.mark.parametrize("sent", [None, "garbage"])
def test_grpc_traceresponse_only_for_a_caller_that_sent_traceparent(srv, sent):
    """REST's rule on gRPC: no traceparent, no traceresponse (the request id
    finds the lines); an invalid one is answered with the new trace."""
    rid = "obs-grpc-tr-%s" % (sent or "none")
    meta = [("x-request-id", rid)] + ([("traceparent", sent)] if sent else [])
    with grpc.insecure_channel("127.0.0.1:%d" % srv.grpc_port) as ch:
        get = ch.unary_unary("/bazaar.v1.ItemService/GetItem")
        with pytest.raises(grpc.RpcError) as e:
            get(get_item_request(99999998), timeout=5, metadata=meta)
        md = dict(e.value.initial_metadata()) | dict(e.value.trailing_metadata())
    assert md["x-request-id"] == rid
    lines = harness.wait_for(lambda: [l for l in lines_of(srv, rid) if l["msg"] == "grpc"], 5)
    assert lines and lines[0]["code"] == "NOT_FOUND" and HEX32.match(lines[0]["trace_id"])
    if sent is None:
        assert "traceresponse" not in md
    else:
        assert md["traceresponse"] == "00-%s-%s-00" % (lines[0]["trace_id"], lines[0]["span_id"])


def test_rest_and_grpc_write_one_access_line_format(srv):
    """One observation module (http/observe.c) ends both transports: one
    REST request and one gRPC call each leave a line with the same keys in
    the same order, the outcome key alone being the transport's (status,
    code); the shared keys carry the same kinds of values."""
    tp = "00-%s-%s-01" % (TRACE, PARENT)
    st, _, _ = srv.request("GET", "/v1/items/77777777", headers={"traceparent": tp, "X-Request-Id": "obs-one-rest"})
    assert st == 404
    with grpc.insecure_channel("127.0.0.1:%d" % srv.grpc_port) as ch:
        get = ch.unary_unary("/bazaar.v1.ItemService/GetItem")
        with pytest.raises(grpc.RpcError) as e:
            get(get_item_request(77777777), timeout=5,
                metadata=[("traceparent", tp), ("x-request-id", "obs-one-grpc")])
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    rest = harness.wait_for(lambda: [l for l in lines_of(srv, "obs-one-rest") if l["msg"] == "request"], 5)
    rpc = harness.wait_for(lambda: [l for l in lines_of(srv, "obs-one-grpc") if l["msg"] == "grpc"], 5)
    assert len(rest) == 1 and len(rpc) == 1, (rest, rpc)  # once per request, not per middleware
    rest, rpc = rest[0], rpc[0]
    shared = [k for k in rest if k != "status"]
    assert shared == [k for k in rpc if k != "code"], (list(rest), list(rpc))
    assert "status" in rest and "code" in rpc and "code" not in rest and "status" not in rpc
    assert {"method", "route", "path", "bytes", "duration_ms", "request_id", "peer", "parent_id", "trace_id",
            "span_id"} <= set(shared)
    assert rest["status"] == 404 and rpc["code"] == "NOT_FOUND"
    assert rest["bytes"] > 0 and rpc["bytes"] == 0  # a problem body; the gRPC status travels in trailers
    assert (rest["method"], rest["route"], rest["path"]) == ("GET", "GET /v1/items/{id}", "/v1/items/77777777")
    path = "/bazaar.v1.ItemService/GetItem"
    assert (rpc["method"], rpc["route"], rpc["path"]) == (path, path, path)
    for l in (rest, rpc):
        assert l["trace_id"] == TRACE and l["parent_id"] == PARENT and HEX16.match(l["span_id"]), l
        assert isinstance(l["bytes"], int) and l["bytes"] >= 0, l
        assert isinstance(l["duration_ms"], (int, float)) and l["duration_ms"] >= 0, l
        assert re.match(r"^127\.0\.0\.1:\d+$", l["peer"]), l


def test_unknown_grpc_method_logs_an_empty_route_and_counts_as_unknown(srv):
    with grpc.insecure_channel("127.0.0.1:%d" % srv.grpc_port) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/bazaar.v1.ItemService/NoSuchMethod")(b"", timeout=5,
                                                                   metadata=[("x-request-id", "obs-grpc-unknown")])
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    lines = harness.wait_for(lambda: [l for l in lines_of(srv, "obs-grpc-unknown") if l["msg"] == "grpc"], 5)
    assert lines and lines[0]["route"] == "" and lines[0]["path"] == "/bazaar.v1.ItemService/NoSuchMethod"
    assert lines[0]["code"] == "UNIMPLEMENTED"
    samples = parse_metrics(scrape(srv))[1]
    assert value(samples, "bazaar_grpc_server_handled_total", method="unknown", code="UNIMPLEMENTED") >= 1


# ---- the admin listener ----


def test_admin_listener_serves_its_paths_without_secrets():
    pg = harness.Postgres()
    try:
        name = pg.createdb()
        secret = "Obs-S3cret-Pw"  # trust authentication ignores it; it must still never be shown
        db = "postgres://postgres:%s@127.0.0.1:%d/%s" % (secret, pg.port, name)
        admin = harness.free_port()
        s = Server("--admin-addr", "127.0.0.1:%d" % admin, db=db, grpc=False)
        try:
            assert listening_ports(s.proc.pid) == {s.port, admin}
            st, _, b = s.request("GET", "/healthz", port=admin)
            assert st == 200 and b == b"ok"
            st, _, b = s.request("GET", "/readyz", port=admin)
            assert st == 200 and json.loads(b) == {"db": "ok", "cache": "ok"}
            text = scrape(s, port=admin)
            r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                               timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr
            # metrics moved: the public port no longer shows them
            assert s.request("GET", "/metrics")[0] == 404
            st, h, b = s.request("GET", "/debug/runtime", port=admin)
            assert st == 200 and h["content-type"].startswith("application/json")
            assert secret.encode() not in b
            d = json.loads(b)
            assert set(d) >= {"build", "uptime_seconds", "process", "loops", "coroutine_stacks", "offload",
                              "listeners", "db", "cache", "config"}
            assert len(d["loops"]) == 2
            assert set(d["loops"][0]) >= {"coroutines", "connections", "pooled_stacks", "timers",
                                          "lag_last_seconds"}
            assert sum(l["connections"] for l in d["loops"]) >= 1  # this request's own
            assert set(d["db"]) >= {"open", "idle", "in_use", "waiting"} and d["db"]["dialect"] == "postgres"
            assert d["cache"]["kind"] == "memory" and set(d["cache"]) >= {"entries", "bytes", "evictions"}
            assert {l["name"] for l in d["listeners"]} == {"public", "admin"}
            assert d["config"]["db"] == "postgres://postgres:***@127.0.0.1:%d/%s" % (pg.port, name)
            assert d["build"]["version"] and d["uptime_seconds"] > 0
            assert secret not in s.log_text()
        finally:
            s.close()
    finally:
        pg.close()


def test_admin_is_off_by_default(srv):
    assert listening_ports(srv.proc.pid) == {srv.port, srv.grpc_port}
    assert srv.request("GET", "/metrics")[0] == 200  # the public port keeps /metrics


@pytest.mark.parametrize("how", ["flag", "env"])
def test_bad_admin_addr_exits_2(how):
    argv = [harness.BAZAAR, "serve", "--db", "sqlite://:memory:"]
    env = dict(os.environ)
    if how == "flag":
        argv += ["--admin-addr", "localhost"]
    else:
        env["BAZAAR_ADMIN_ADDR"] = "127.0.0.1:99999"
    r = subprocess.run(argv, capture_output=True, text=True, timeout=10, env=env)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--admin-addr" in lines[0]
    if how == "env":
        assert "BAZAAR_ADMIN_ADDR" in lines[0]


def test_admin_answers_while_the_public_port_is_at_max_conns():
    admin = harness.free_port()
    s = Server("--admin-addr", "127.0.0.1:%d" % admin, "--max-conns", "4", grpc=False)
    held = []
    try:
        for _ in range(4):
            c = socket.create_connection(("127.0.0.1", s.port))
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            c.settimeout(5)
            assert c.recv(4096).startswith(b"HTTP/1.1 200")  # accepted: it holds a slot
            held.append(c)
        # the public port is full: a fifth client is not served
        extra = socket.create_connection(("127.0.0.1", s.port))
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        extra.settimeout(1.0)
        with pytest.raises(socket.timeout):
            extra.recv(4096)
        held.append(extra)
        t0 = time.monotonic()
        st, _, b = s.request("GET", "/healthz", port=admin, timeout=3)
        assert st == 200
        _, samples = parse_metrics(scrape(s, port=admin))
        assert time.monotonic() - t0 < 3
        assert value(samples, "bazaar_http_open_connections", listener="public", protocol="http1") == 4
        st, _, b = s.request("GET", "/debug/runtime", port=admin, timeout=3)
        assert st == 200
        d = json.loads(b)
        # the four held public connections and the one asking, spread over the loops (an
        # earlier admin connection the client closed may not be reaped yet)
        assert 5 <= sum(l["connections"] for l in d["loops"]) <= 7
        assert [l["open_http1"] for l in d["listeners"] if l["name"] == "public"] == [4]
    finally:
        for c in held:
            c.close()
        s.close()

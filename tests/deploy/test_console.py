"""The operator's view on --admin-addr, against the real program:

* the console page in a real browser — Debian's chromium, headless, driven
  over the DevTools protocol by puppeteer-core from npm
  (tests/deploy/console/, installed with `npm ci` when node_modules is
  missing): it loads with no console errors, its numbers move while a load
  runs, it fits a phone, and a screenshot is saved as a test artifact
  (build/test-artifacts/console.png, or $BAZAAR_ARTIFACTS);
* `go tool pprof -top` (Debian golang-go) on a CPU profile taken under load
  names bazaar's own hot functions;
* the coroutine dump shows an open SSE stream and a request parked on a
  frozen PostgreSQL (SIGSTOP) with their routes, trace ids and what they
  wait on;
* the slow-query log: a statement over --slow-query is logged once with its
  name, duration, rows and trace id; none below the threshold."""
import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import grpc
import pytest

import harness
from obs_support import Server
from test_observability import get_item_request

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_DIR = os.path.join(HERE, "console")
ARTIFACTS = os.environ.get("BAZAAR_ARTIFACTS") or os.path.join(harness.ROOT, "build", "test-artifacts")
TRACE = "0af7651916cd43dd8448eb211c80319c"


def admin_server(*flags, **kw):
    admin = harness.free_port()
    s = Server("--admin-addr", "127.0.0.1:%d" % admin, *flags, **kw)
    s.admin = admin
    return s


def get(port, path, headers=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def user_with_token(s, tag):
    email = "%s%d-%s@example.com" % (tag, os.getpid(), os.urandom(4).hex())
    st, _, b = s.request("POST", "/v1/users", {"email": email, "name": "Con", "password": "password123"})
    assert st == 201, b
    uid = json.loads(b)["id"]
    st, _, b = s.request("POST", "/v1/sessions", {"email": email, "password": "password123"})
    assert st == 201, b
    return uid, json.loads(b)["token"]


class Load:
    """Threads sending a mix of REST requests (item reads that hit and miss
    the cache, a 404, an unmatched route) until stopped; counts answers."""

    def __init__(self, s, threads=4):
        self.s, self.stop_at, self.done = s, None, 0
        self.running = True
        uid, tok = user_with_token(s, "load")
        st, _, b = s.request("POST", "/v1/items", {"sku": "con-%s" % os.urandom(4).hex(), "name": "thing", "price_cents": 100,
                                                    "currency": "USD", "stock": 5},
                             headers={"Authorization": "Bearer " + tok})
        assert st == 201, b
        self.item = json.loads(b)["id"]
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        c = http.client.HTTPConnection("127.0.0.1", self.s.port, timeout=10)
        paths = ["/v1/items/%d" % self.item] * 8 + ["/v1/items/99999999", "/no/such/route", "/v1/items?limit=5"]
        i = 0
        while self.running:
            try:
                c.request("GET", paths[i % len(paths)])
                c.getresponse().read()
                with self.lock:
                    self.done += 1
            except (OSError, http.client.HTTPException):
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", self.s.port, timeout=10)
            i += 1
        c.close()

    def close(self):
        self.running = False
        for t in self.threads:
            t.join(15)


def npm_ci():
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed for the browser test"
    if not os.path.isdir(os.path.join(CLIENT_DIR, "node_modules", "puppeteer-core")):
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=CLIENT_DIR, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, "npm ci failed:\n" + r.stdout + r.stderr
    return node


def number(text):
    """A tile's value: "1234", "12.5k", "1.2M"."""
    t = text.strip()
    mul = {"k": 1e3, "M": 1e6}.get(t[-1:], 1)
    return float(t[:-1] if mul != 1 else t) * mul


@pytest.fixture(scope="module")
def srv():
    s = admin_server()
    yield s
    s.close()


# ---- the page ------------------------------------------------------------------------------------------------


def test_page_and_assets_come_from_the_binary_and_are_small(srv):
    st, h, page = get(srv.admin, "/")
    assert st == 200 and h["content-type"].startswith("text/html")
    assert b"/console/uPlot.js" in page and b"/console/data" in page
    # Nothing from the network: every script and stylesheet is ours.
    assert b'src="http' not in page and b'href="http' not in page
    st, h, js = get(srv.admin, "/console/uPlot.js")
    assert st == 200 and h["content-type"].startswith("text/javascript") and b"uPlot" in js[:200]
    st, h, css = get(srv.admin, "/console/uPlot.css")
    assert st == 200 and h["content-type"].startswith("text/css")
    total = len(page) + len(js) + len(css)
    assert total <= 150 * 1024, total
    # Only on the admin port.
    assert srv.request("GET", "/console/data")[0] == 404
    assert srv.request("GET", "/debug/pprof/goroutine?debug=2")[0] == 404


def test_data_document_and_incremental_points(srv):
    srv.request("GET", "/v1/items/424242")  # a 404: a problem answer, in the error ring
    with grpc.insecure_channel("127.0.0.1:%d" % srv.grpc_port) as ch:  # and a gRPC NOT_FOUND
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/bazaar.v1.ItemService/GetItem")(get_item_request(424242), timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    time.sleep(2.2)
    st, _, b = get(srv.admin, "/console/data")
    assert st == 200
    d = json.loads(b)
    assert d["seq"] >= 2 and len(d["t"]) == d["seq"] - d["from"]
    names = {s["name"] for s in d["traffic"]}
    assert "GET /v1/items/{id}" in names, names
    for s in d["traffic"]:
        assert len(s["rps"]) == len(d["t"])
    assert set(d["gauges"]) >= {"inflight", "conns_http1", "conns_http2", "db_in_use", "lag_ms", "coroutines"}
    err = [e for e in d["errors"] if e["where"] == "GET /v1/items/{id}" and e["status"] == 404]
    assert err and len(err[0]["trace_id"]) == 32 and err[0]["code"] == "not_found", d["errors"][:3]
    gerr = [e for e in d["errors"] if e["where"] == "/bazaar.v1.ItemService/GetItem"]
    assert gerr and gerr[0]["code"] == "NOT_FOUND" and gerr[0]["status"] == 0 and gerr[0]["message"], d["errors"][:3]
    assert "bazaar.v1.ItemService/GetItem" in names, names
    assert d["runtime"]["build"]["version"] and "config" in d["runtime"]
    # Only the points after ?since=.
    st, _, b = get(srv.admin, "/console/data?since=%d" % d["seq"])
    d2 = json.loads(b)
    assert d2["from"] == d["seq"] and len(d2["t"]) == d2["seq"] - d["seq"]
    assert get(srv.admin, "/console/data?since=x")[0] == 400


def test_grpc_calls_in_flight_are_a_gauge(srv):
    """Two health Watch streams held open show as gRPC calls in flight; the
    gauge falls back when they end."""
    def grpc_inflight():
        time.sleep(2.2)  # the sampler's second, and one more
        d = json.loads(get(srv.admin, "/console/data")[2])
        return d["gauges"]["grpc_inflight"][-1]
    base = grpc_inflight()
    with grpc.insecure_channel("127.0.0.1:%d" % srv.grpc_port) as ch:
        watch = ch.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
        calls = [watch(b"", timeout=30) for _ in range(2)]
        for c in calls:
            next(c)  # the first status: the stream is open on the server
        assert grpc_inflight() >= base + 2
        for c in calls:
            c.cancel()
    assert grpc_inflight() <= base


def test_console_in_headless_chromium_moves_under_load(srv):
    node = npm_ci()
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, "console.png")
    load = Load(srv)
    try:
        r = subprocess.run([node, "console.mjs", "http://127.0.0.1:%d/" % srv.admin, shot, "6"], cwd=CLIENT_DIR,
                           capture_output=True, text=True, timeout=120)
    finally:
        load.close()
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["errors"] == [], out["errors"]
    reqs = [number(x["requests"]) for x in out["samples"] if x["requests"] != "–"]
    assert len(reqs) >= 5 and reqs[-1] > reqs[0], out["samples"]
    assert max(number(x["rps"]) for x in out["samples"] if x["rps"] != "–") > 0
    assert out["charts"] >= 6, out
    assert "GET /v1/items/{id}" in out["routes"], out["routes"]
    assert "item by id (cache miss)" in out["statements"], out["statements"]
    assert out["errorsShown"] > 0
    assert "http_addr" in out["config"]
    assert out["dbReach"].startswith("yes"), out["dbReach"]
    assert out["phoneOverflow"] <= 0, out["phoneOverflow"]
    assert os.path.getsize(shot) > 10000
    print("console screenshot: %s" % shot)


# ---- profiles -------------------------------------------------------------------------------------------------


def test_cpu_profile_under_load_names_hot_functions(srv, tmp_path):
    go = shutil.which("go")
    assert go, "go (Debian golang-go) is needed for go tool pprof"
    st, _, b = get(srv.admin, "/debug/pprof/profile?seconds=99999")
    assert st == 400
    st, _, b = get(srv.admin, "/debug/pprof/profile?seconds=1", timeout=30)
    if st == 501 and b"sanitizer" in b:
        pytest.skip("CPU profiles are off in sanitizer builds")
    load = Load(srv)
    try:
        st, h, prof = get(srv.admin, "/debug/pprof/profile?seconds=4", timeout=30)
    finally:
        load.close()
    assert st == 200 and h["content-type"] == "application/octet-stream" and len(prof) > 100
    p = tmp_path / "cpu.prof"
    p.write_bytes(prof)
    r = subprocess.run([go, "tool", "pprof", "-top", harness.BAZAAR, str(p)], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, HOME=str(tmp_path), GOCACHE=str(tmp_path / "gocache")))
    assert r.returncode == 0, r.stderr
    assert "Type: cpu" in r.stdout
    srv.log_lines()  # every line still JSON: libprofiler's "PROFILE: ..." line on stderr was kept out
    assert [x for x in srv.log_lines() if x.get("msg") == "cpu profile started" and x.get("seconds") == 4]
    ours = ["conn_serve", "http__parse_head", "bz_buf_", "items_get", "dispatch", "rt__", "match_path", "bz__log"]
    named = [f for f in ours if f in r.stdout]
    assert len(named) >= 3, r.stdout
    # As the README says: pprof fetches it, symbolises bazaar from the binary
    # and the shared libraries through /debug/pprof/symbol (a 404 there is fatal).
    load = Load(srv)
    try:
        r = subprocess.run([go, "tool", "pprof", "-top", "http://127.0.0.1:%d/debug/pprof/profile?seconds=3" % srv.admin],
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, HOME=str(tmp_path), GOCACHE=str(tmp_path / "gocache")))
    finally:
        load.close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Type: cpu" in r.stdout and len([f for f in ours if f in r.stdout]) >= 3, r.stdout
    st, _, b = get(srv.admin, "/debug/pprof/symbol")
    assert st == 200 and b.startswith(b"num_symbols: 1")
    c = http.client.HTTPConnection("127.0.0.1", srv.admin, timeout=10)
    c.request("POST", "/debug/pprof/symbol", body=b"0x0+zzz++0xffffffffffffffff+" + b"9" * 40)
    resp = c.getresponse()
    assert resp.status == 200 and resp.read() == b"num_symbols: 1\n"  # nothing to name, nothing broken
    c.close()
    # One profile at a time; bad durations are refused.
    assert get(srv.admin, "/debug/pprof/profile?seconds=0")[0] == 400
    assert get(srv.admin, "/debug/pprof/profile?seconds=301")[0] == 400


def test_heap_profile_says_why_not_on_glibc(srv):
    st, _, b = get(srv.admin, "/debug/pprof/heap")
    assert st == 501 and b"tcmalloc" in b


def test_heap_profile_on_tcmalloc_reads_in_pprof(tmp_path, monkeypatch):
    go = shutil.which("go")
    assert go, "go (Debian golang-go) is needed for go tool pprof"
    assert subprocess.run(["sh", "-c", "ldconfig -p | grep -q libtcmalloc.so.4"]).returncode == 0, \
        "libtcmalloc.so.4 (Debian libgoogle-perftools4) is needed"
    if harness.BUILD.rstrip("/").endswith(("asan", "tsan")):
        pytest.skip("tcmalloc cannot replace the sanitizers' allocator")
    monkeypatch.setenv("LD_PRELOAD", "libtcmalloc.so.4")
    monkeypatch.setenv("HEAPPROFILE", str(tmp_path / "hp"))
    s = admin_server(grpc=False)
    monkeypatch.delenv("LD_PRELOAD")
    try:
        for i in range(30):
            s.request("GET", "/v1/items/%d" % (500 + i))
        r = subprocess.run([go, "tool", "pprof", "-top", "http://127.0.0.1:%d/debug/pprof/heap" % s.admin],
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, HOME=str(tmp_path), GOCACHE=str(tmp_path / "gocache")))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Type: inuse_space" in r.stdout
        assert "conn_serve" in r.stdout or "metrics_mw" in r.stdout or "svc_open" in r.stdout, r.stdout
    finally:
        s.close()


# ---- the coroutine dump and the slow-query log on a frozen PostgreSQL ----------------------------------------


def test_dump_shows_sse_and_frozen_postgres_and_slow_query_is_logged():
    pg = harness.Postgres()
    s = None
    try:
        s = admin_server(db=pg.url(pg.createdb()), grpc=False)
        uid, tok = user_with_token(s, "dump")
        auth = {"Authorization": "Bearer " + tok}
        # An open SSE stream.
        sse = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        sse.request("GET", "/v1/users/%d/orders/events" % uid, headers=dict(auth, Accept="text/event-stream"))
        r = sse.getresponse()
        assert r.status == 200
        assert r.readline().startswith(b": subscribed")
        # A request parked on a frozen PostgreSQL, with a known trace id.
        pg.freeze()
        stuck = {}

        def call():
            c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
            c.request("GET", "/v1/accounts", headers=dict(auth, traceparent="00-%s-b7ad6b7169203331-01" % TRACE))
            resp = c.getresponse()
            stuck["status"] = resp.status
            resp.read()
            c.close()

        t = threading.Thread(target=call)
        t.start()
        dump = ""
        deadline = time.time() + 10
        while time.time() < deadline:
            st, _, b = get(s.admin, "/debug/pprof/goroutine?debug=2")
            assert st == 200
            dump = b.decode()
            if TRACE in dump:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # parked for a while: over the 200ms default threshold
        st, _, b = get(s.admin, "/debug/pprof/goroutine?debug=2")
        dump = b.decode()
        pg.thaw()
        t.join(30)
        assert stuck.get("status") == 200, stuck
        blocks = dump.split("\n\n")
        # The request on the frozen database: its route, trace, statement, and the socket read it waits in.
        db = [x for x in blocks if TRACE in x]
        assert len(db) == 1, dump
        assert "request: GET /v1/accounts" in db[0] and "in db: accounts of a user" in db[0], db[0]
        assert "[socket read fd " in db[0], db[0]
        # The SSE stream: its route and the pub/sub channel it waits on.
        ev = [x for x in blocks if "request: GET /v1/users/{id}/orders/events" in x]
        assert len(ev) == 1 and "in pub/sub:" in ev[0] and "[channel receive" in ev[0], dump
        # debug=1 groups them.
        st, _, b = get(s.admin, "/debug/pprof/goroutine?debug=1")
        assert st == 200 and b"coroutines [" in b
        sse.close()
        # The statement that waited on the frozen server was logged once, with its trace.
        deadline = time.time() + 5
        slow = []
        while time.time() < deadline and not slow:
            slow = [x for x in s.log_lines() if x.get("msg") == "slow statement" and x.get("trace_id") == TRACE]
            time.sleep(0.1)
        assert len(slow) == 1, slow
        assert slow[0]["statement"] == "accounts of a user" and slow[0]["duration_ms"] >= 1000 and slow[0]["rows"] == 0
        assert slow[0]["level"] == "warn"
    finally:
        pg.thaw()
        if s:
            s.close()
        pg.close()


def test_slow_query_threshold_on_sqlite():
    fast = admin_server("--slow-query", "1ns", grpc=False)
    try:
        st, _, _ = fast.request("GET", "/v1/items/777", headers={"traceparent": "00-%s-b7ad6b7169203331-01" % TRACE})
        assert st == 404
        time.sleep(0.3)
        lines = [x for x in fast.log_lines() if x.get("msg") == "slow statement" and x.get("trace_id") == TRACE]
        assert len(lines) == 1 and lines[0]["statement"] == "item by id (cache miss)", lines
        assert lines[0]["rows"] == 0 and lines[0]["duration_ms"] > 0
        st, _, b = get(fast.admin, "/console/data")
        top = {x["name"]: x for x in json.loads(b)["statements"]}
        assert top["item by id (cache miss)"]["count"] >= 1 and top["item by id (cache miss)"]["slow"] >= 1
    finally:
        fast.close()
    # The default threshold (200ms): the same quick statements are not logged.
    quiet = admin_server(grpc=False)
    try:
        for i in range(20):
            quiet.request("GET", "/v1/items/%d" % (1000 + i))
        time.sleep(0.3)
        assert not [x for x in quiet.log_lines() if x.get("msg") == "slow statement"]
        st, _, b = get(quiet.admin, "/console/data")
        top = {x["name"]: x for x in json.loads(b)["statements"]}
        assert top["item by id (cache miss)"]["count"] >= 20 and top["item by id (cache miss)"]["slow"] == 0
        assert json.loads(b)["slow_query_ms"] == 200
    finally:
        quiet.close()


def test_dump_names_the_redis_command_a_request_waits_on():
    redis = harness.Redis()
    s = None
    try:
        s = admin_server(cache=redis.url(0), grpc=False)
        os.kill(redis.proc.pid, signal.SIGSTOP)
        done = {}

        def call():
            c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
            c.request("GET", "/v1/items/31337", headers={"traceparent": "00-%s-b7ad6b7169203331-01" % TRACE})
            done["status"] = c.getresponse().status
            c.close()

        t = threading.Thread(target=call)
        t.start()
        block = []

        def parked(blk):
            return blk and ("[socket read fd " in blk[0] or "[redis pool wait" in blk[0])

        # until the request is in the dump parked (a dump can catch it an
        # instant before it parks: [runnable])
        deadline = time.time() + 10
        while time.time() < deadline and not parked(block):
            st, _, b = get(s.admin, "/debug/pprof/goroutine?debug=2")
            block = [x for x in b.decode().split("\n\n") if TRACE in x]
            time.sleep(0.1)
        os.kill(redis.proc.pid, signal.SIGCONT)
        t.join(30)
        assert block and "request: GET /v1/items/{id}" in block[0] and "in redis: GET" in block[0], block
        assert "[socket read fd " in block[0] or "[redis pool wait" in block[0], block[0]
        assert done.get("status") in (404, 503), done
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
        if s:
            s.close()
        redis.close()

"""Black-box tests of `bazaar serve` as a whole: flags, /healthz, /readyz on
SQLite + memory and on PostgreSQL + Redis, graceful exit."""
import contextlib
import json
import os
import re
import signal
import subprocess
import time

import pytest
import requests

from harness import BUILD, free_port

BAZAAR = os.path.join(BUILD, "bazaar")


def serve(tmp_path, *flags):
    port = free_port()
    argv = [BAZAAR, "serve", "--http-addr", "127.0.0.1:%d" % port, "--grpc-addr", "off", "--threads", "2",
            "--log-format", "json"] + list(flags)
    if not any(f == "--db" for f in flags):
        argv += ["--db", "sqlite://%s" % (tmp_path / "bazaar.db")]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(100):
        try:
            requests.get("http://127.0.0.1:%d/healthz" % port, timeout=0.2)
            return p, port
        except requests.ConnectionError:
            if p.poll() is not None:
                raise RuntimeError(p.stderr.read().decode())
            time.sleep(0.05)
    raise RuntimeError("server did not come up")


def stop(p):
    p.send_signal(signal.SIGTERM)
    return p.wait(10)


def test_readyz_on_sqlite_and_memory(tmp_path):
    p, port = serve(tmp_path)
    r = requests.get("http://127.0.0.1:%d/readyz" % port)
    assert r.status_code == 200 and r.json() == {"db": "ok", "cache": "ok"}
    assert requests.get("http://127.0.0.1:%d/healthz" % port).text == "ok"
    assert stop(p) == 0
    log = [json.loads(l) for l in p.stderr.read().decode().splitlines() if l.startswith("{")]
    listening = [l for l in log if l["msg"] == "listening"][0]
    assert listening["db"] == "sqlite" and listening["cache"] == "memory"
    reqs = [l for l in log if l["msg"] == "request"]
    assert {l["route"] for l in reqs} >= {"GET /readyz", "GET /healthz"}
    assert all(set(l) >= {"method", "route", "path", "status", "bytes", "duration_ms", "request_id", "peer"} for l in reqs)


@pytest.mark.skipif(not os.environ.get("BAZAAR_TEST_PG_URL"), reason="needs tests/with_services.sh")
def test_readyz_on_postgres_and_redis(tmp_path):
    p, port = serve(tmp_path, "--db", os.environ["BAZAAR_TEST_PG_URL"], "--cache", os.environ["BAZAAR_TEST_REDIS_URL"])
    r = requests.get("http://127.0.0.1:%d/readyz" % port)
    assert r.status_code == 200 and r.json() == {"db": "ok", "cache": "ok"}
    assert stop(p) == 0


def test_readyz_reports_a_cache_that_is_down(tmp_path):
    dead = free_port()  # nothing listens there
    p, port = serve(tmp_path, "--cache", "redis://127.0.0.1:%d/0" % dead)
    r = requests.get("http://127.0.0.1:%d/readyz" % port)
    assert r.status_code == 503 and r.json() == {"db": "ok", "cache": "unavailable"}
    assert stop(p) == 0


def test_unreachable_database_fails_start_with_a_message(tmp_path):
    port = free_port()
    p = subprocess.run([BAZAAR, "serve", "--http-addr", "127.0.0.1:%d" % port, "--db",
                        "postgres://nobody@127.0.0.1:%d/x?connect_timeout=2" % free_port()],
                       capture_output=True, timeout=20)
    assert p.returncode != 0
    assert b"cannot open the database" in p.stderr


@pytest.mark.parametrize("flags,needle", [
    (["--threads", "abc"], b"--threads"),
    (["--read-timeout", "5 parsecs"], b"--read-timeout"),
    (["--db-max-open", "-1"], b"--db-max-open"),
    (["--nope"], b"--nope"),
    (["--cache", "memcached://x"], b"--cache"),
    (["--slow-query", "soon"], b"--slow-query"),
    (["--slow-query", "-1s"], b"--slow-query"),
    (["--slow-query", "200"], b"--slow-query"),
])
def test_bad_flags_exit_2_with_one_line(flags, needle):
    p = subprocess.run([BAZAAR, "serve"] + flags, capture_output=True, timeout=10)
    assert p.returncode == 2
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and needle.decode() in lines[0]


def test_help_and_version():
    p = subprocess.run([BAZAAR, "--help"], capture_output=True, timeout=10)
    assert p.returncode == 0
    for flag in ["--http-addr", "--grpc-addr", "--db", "--cache", "--threads", "--db-max-open", "--db-max-idle",
                 "--db-conn-max-lifetime", "--db-conn-max-idle-time", "--read-header-timeout", "--read-timeout",
                 "--write-timeout", "--idle-timeout", "--request-timeout", "--shutdown-grace", "--max-header-bytes",
                 "--max-body-bytes", "--rate-limit", "--login-rate-limit", "--cache-ttl", "--cache-max-memory",
                 "--cache-eviction", "--log-format", "--log-level", "--slow-query"]:
        assert flag.encode() in p.stdout, flag
    v = subprocess.run([BAZAAR, "version"], capture_output=True, timeout=10)
    assert v.returncode == 0 and v.stdout.startswith(b"bazaar ")


# ---- the access-log line and request ids (issue #18: written in one pass) ----

ACCESS_KEYS = ["ts", "level", "msg", "trace_id", "span_id", "method", "route", "path", "status", "bytes",
               "duration_ms", "request_id", "peer", "parent_id"]


def serve_logging_to(tmp_path, logfile):
    """bazaar serve with its JSON log in a file (a pipe would fill up and
    stall the loop under many requests)."""
    port = free_port()
    err = open(logfile, "wb")
    p = subprocess.Popen([BAZAAR, "serve", "--http-addr", "127.0.0.1:%d" % port, "--grpc-addr", "off", "--threads",
                          "2", "--log-format", "json", "--db", "sqlite://%s" % (tmp_path / "bazaar.db")],
                         stdout=subprocess.DEVNULL, stderr=err)
    err.close()
    for _ in range(100):
        try:
            requests.get("http://127.0.0.1:%d/healthz" % port, timeout=0.2)
            return p, port
        except requests.ConnectionError:
            if p.poll() is not None:
                raise RuntimeError(open(logfile, "rb").read().decode(errors="replace"))
            time.sleep(0.05)
    raise RuntimeError("server did not come up")


@contextlib.contextmanager
def serving_to(tmp_path, logfile):
    """serve_logging_to for a with-block: a test that fails before it
    stops the server does not leave it running."""
    p, port = serve_logging_to(tmp_path, logfile)
    try:
        yield p, port
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def access_lines(logfile):
    """Every line must be JSON; the access lines, keyed by request id."""
    out = {}
    for raw in open(logfile, "rb").read().splitlines():
        l = json.loads(raw.decode("utf-8"), object_pairs_hook=lambda kv: kv)
        d = dict(l)
        if d.get("msg") == "request":
            assert [k for k, _ in l] == ACCESS_KEYS, raw  # every key, in this order, once
            assert d["request_id"] not in out, raw
            out[d["request_id"]] = d
    return out


def test_access_line_fields_and_hostile_bytes(tmp_path):
    """The access line holds exactly its fields, in order; bytes a client
    may put in a path (quotes, backslashes, UTF-8) come out escaped and
    read back as sent; a hostile X-Request-Id is replaced, never logged."""
    from rawhttp import Conn
    logfile = tmp_path / "log"
    path = b'/v1/items/%22x"\\\xc3\xa9{}'
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with serving_to(tmp_path, logfile) as (p, port):
        c = Conn(port)
        c.send(b"GET " + path + b"?q=1 HTTP/1.1\r\nHost: x\r\nX-Request-Id: hostile-path-1\r\ntraceparent: " +
               tp.encode() + b"\r\n\r\n")
        st1, h1, body1 = c.response()
        c.send(b'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: a"b\\c \xc3\xa9\t}\r\n\r\n')
        st2, h2, _ = c.response()
        c.close()
        assert stop(p) == 0
    assert st2 == 200 and h1["x-request-id"] == ["hostile-path-1"]
    rid2 = h2["x-request-id"][0]
    assert re.match(r"^[0-9a-f]{32}$", rid2)
    lines = access_lines(logfile)
    a = lines["hostile-path-1"]
    assert a["method"] == "GET" and a["route"] == "GET /v1/items/{id}" and a["status"] == st1
    assert a["path"] == path.decode("utf-8")  # as sent (still percent-encoded), no query
    assert a["bytes"] == len(body1) and a["duration_ms"] >= 0 and a["level"] == "info"
    assert a["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and a["parent_id"] == "00f067aa0ba902b7"
    assert h1["traceresponse"] == ["00-%s-%s-01" % (a["trace_id"], a["span_id"])]
    assert re.match(r"^127\.0\.0\.1:\d+$", a["peer"])
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", a["ts"])
    b = lines[rid2]
    assert b["route"] == "GET /healthz" and b["path"] == "/healthz" and b["status"] == 200 and b["bytes"] == 2
    assert b["parent_id"] == "" and re.match(r"^[0-9a-f]{32}$", b["trace_id"])
    assert "traceresponse" not in h2  # only a caller that sent a traceparent is answered one
    raw = open(logfile, "rb").read()
    assert b'a"b' not in raw and b"a\\\"b" not in raw and b"\t}" not in raw


def test_request_ids_are_unique_over_many_requests(tmp_path):
    """Generated ids: 32 lower-case hex digits, every one different over
    thousands of requests on two loops, and so the trace ids (never all
    zero) and span ids their log lines carry.  No traceparent was sent, so
    no response carries a traceresponse."""
    from rawhttp import Conn
    logfile = tmp_path / "log"
    got = []
    with serving_to(tmp_path, logfile) as (p, port):
        for k in range(4):  # four connections: both loops
            c = Conn(port)
            for _ in range(750):
                c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                st, h, body = c.response()
                assert st == 200 and body == b"ok"
                assert "traceresponse" not in h
                got.append(h["x-request-id"][0])
            c.close()
        assert stop(p) == 0
    rids = got
    assert all(re.match(r"^[0-9a-f]{32}$", r) for r in rids)
    assert len(set(rids)) == len(rids)
    lines = access_lines(logfile)
    tids = {lines[rid]["trace_id"] for rid in rids}
    sids = {lines[rid]["span_id"] for rid in rids}
    assert all(re.match(r"^[0-9a-f]{32}$", t) and t != "0" * 32 for t in tids)
    assert all(re.match(r"^[0-9a-f]{16}$", t) and t != "0" * 16 for t in sids)
    assert len(tids) == len(rids) and len(sids) == len(rids)


def test_longest_request_id_fits_and_the_peer_stays(tmp_path):
    """An id of 63 characters is echoed; one of 64 (no room for it and its
    NUL: it used to overwrite the peer, logged as "") is replaced by a new
    one.  The peer is in the line either way."""
    logfile = tmp_path / "log"
    ok, long_ = "a" * 63, "b" * 64
    with serving_to(tmp_path, logfile) as (p, port):
        url = "http://127.0.0.1:%d/healthz" % port
        assert requests.get(url, headers={"X-Request-Id": ok}).headers["X-Request-Id"] == ok
        new = requests.get(url, headers={"X-Request-Id": long_}).headers["X-Request-Id"]
        assert stop(p) == 0
    assert new != long_ and re.match(r"^[0-9a-f]{32}$", new)
    lines = access_lines(logfile)
    for rid in (ok, new):
        assert re.match(r"^127\.0\.0\.1:\d+$", lines[rid]["peer"]), lines[rid]


@pytest.mark.parametrize("batch", ["auto", "off"])
def test_keep_alive_load_is_answered_whole(tmp_path, monkeypatch, batch):
    """64 keep-alive connections, each sending its next request the moment
    its answer came (h2load --h1 -c64): every request is answered, with the
    loop's reads and writes batched through io_uring (auto, this kernel) and
    with plain calls (BAZAAR_IO_BATCH=off).  A batched write parks its
    coroutine to the end of the turn; the first version lost the edge of a
    request that came meanwhile, and 46-64 of 64 connections waited out
    their idle timeout within a second."""
    monkeypatch.setenv("BAZAAR_IO_BATCH", batch)
    subprocess.run([BAZAAR, "seed", "--db", "sqlite://%s" % (tmp_path / "bazaar.db"), "--users", "10", "--items", "10",
                    "--orders", "10"], check=True, capture_output=True, timeout=60)
    admin = free_port()
    p, port = serve(tmp_path, "--log-level", "warn", "--admin-addr", "127.0.0.1:%d" % admin)
    try:
        rt = requests.get("http://127.0.0.1:%d/debug/runtime" % admin, timeout=5).json()
        assert rt["io_batch"] == ("io_uring" if batch == "auto" else "off"), rt["io_batch"]
        for path in ["/healthz", "/v1/items/1"]:
            r = subprocess.run(["h2load", "--h1", "-c64", "-m1", "-n40000", "http://127.0.0.1:%d%s" % (port, path)],
                               capture_output=True, text=True, timeout=60)
            assert "40000 succeeded" in r.stdout and "40000 2xx" in r.stdout, r.stdout[-800:]
    finally:
        assert stop(p) == 0


def test_bad_io_batch_variable_exits_2_with_one_line(monkeypatch):
    monkeypatch.setenv("BAZAAR_IO_BATCH", "fast")
    p = subprocess.run([BAZAAR, "serve"], capture_output=True, timeout=10)
    assert p.returncode == 2
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "BAZAAR_IO_BATCH" in lines[0], lines

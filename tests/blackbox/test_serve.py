"""Black-box tests of `bazaar serve` as a whole: flags, /healthz, /readyz on
SQLite + memory and on PostgreSQL + Redis, graceful exit."""
import json
import os
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

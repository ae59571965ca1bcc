"""PostgreSQL goes away in four ways under load: stopped, its backends
terminated, the network cut, the whole cluster frozen.  bazaar must answer
503 `unavailable` with Retry-After in time, never 500, never hang, recover
by itself, and lose or duplicate nothing it acknowledged."""
import subprocess
import time

import pytest

from common import assert_unavailable, finish, probe, readyz, recovered, wait_ready
from harness import REQUEST_TIMEOUT, HANG_SLACK, Bazaar, Load, PgQ, Proxy


@pytest.fixture
def world(pg, redis, request):
    n = 1 + (abs(hash(request.node.name)) % 14)
    subprocess.run(["redis-cli", "-p", str(redis.port), "-n", str(n), "FLUSHDB"], capture_output=True, timeout=10)
    dbname = pg.createdb()
    made = []

    def make(db_port=None, *flags):
        srv = Bazaar(pg.url(dbname, db_port), redis.url(n), "--cache-ttl", "1s", *flags)
        made.append(srv)
        return srv, Load(srv.url)

    yield make, PgQ(pg, dbname)
    for s in made:
        s.close()


def test_postgres_stopped_then_started(pg, world):
    make, q = world
    srv, load = make()
    load.start()
    time.sleep(2)
    pg.stop_immediate()
    try:
        time.sleep(0.5)
        assert_unavailable(probe(load), fast=1.0)
        st, body = readyz(srv)
        assert st == 503 and b'"db":"unavailable"' in body, (st, body)
        time.sleep(4.5)
    finally:
        pg.start()
    took = wait_ready(srv)
    time.sleep(2)
    assert recovered(load) > 0, "no successful request after PostgreSQL came back"
    finish("1 PostgreSQL stopped 5 s", load, q, "ready %.1f s after start" % took)


def test_postgres_backends_terminated(pg, world):
    make, q = world
    srv, load = make()
    load.start()
    time.sleep(1.5)
    end = time.monotonic() + 4
    kills = 0
    while time.monotonic() < end:
        rows = pg.psql("postgres", "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE datname = '%s' AND pid <> pg_backend_pid()" % q.dbname)
        kills += int(rows[0][0])
        time.sleep(0.1)
    time.sleep(2)
    assert recovered(load) > 0
    finish("2 PostgreSQL backends terminated 4 s", load, q, "%d backends killed" % kills)


@pytest.mark.parametrize("mode", ["blackhole", "reset"])
def test_network_cut_to_postgres(pg, world, mode):
    """blackhole: packets dropped (connections hang); reset: every connection
    reset and new ones refused."""
    make, q = world
    px = Proxy(pg.port)
    try:
        srv, load = make(px.port)
        load.start()
        time.sleep(2)
        px.cut(mode)
        time.sleep(0.3)
        assert_unavailable(probe(load), codes=("unavailable", "timeout"))
        st, body = readyz(srv, REQUEST_TIMEOUT + 3)
        assert st == 503 and b'"db":"unavailable"' in body, (st, body)
        time.sleep(2)
        px.heal()
        took = wait_ready(srv)
        time.sleep(2)
        assert recovered(load) > 0
        finish("3 network to PostgreSQL cut 4 s (%s)" % mode, load, q, "ready %.1f s after heal" % took,
               codes=("unavailable", "timeout"))
    finally:
        px.close()


def test_postgres_frozen(pg, world):
    make, q = world
    srv, load = make()
    load.start()
    time.sleep(2)
    pg.freeze()
    try:
        time.sleep(0.3)
        resps = probe(load)
        st, body = readyz(srv, REQUEST_TIMEOUT + 3)
        time.sleep(max(0, 5 - 0.3 - sum(r.elapsed for _, r in resps)))
    finally:
        pg.thaw()
    assert_unavailable(resps, codes=("unavailable", "timeout"))
    assert st == 503 and b'"db":"unavailable"' in body, (st, body)
    took = wait_ready(srv)
    time.sleep(2)
    assert recovered(load) > 0
    finish("4 PostgreSQL frozen (SIGSTOP) 5 s", load, q, "ready %.1f s after SIGCONT" % took,
           codes=("unavailable", "timeout"))

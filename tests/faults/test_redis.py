"""Redis (sessions, locks, in-flight idempotency keys, the item cache)
killed with SIGKILL and restarted empty on the same port, twice: once at
once (nothing should notice but the requests in flight at that instant)
and once after 3 s down (503 `unavailable` meanwhile).  bazaar recovers
without a restart, and idempotency stays exact: the database decides."""
import time

import pytest

from common import assert_unavailable, finish, readyz, recovered, wait_ready
from harness import Bazaar, Conn, Load, PgQ, Redis, Write


@pytest.fixture
def own_redis():
    r = Redis()
    yield r
    r.close()


def deposit_probe(load):
    import uuid
    u = load.users[0]
    conn = Conn(load.port)
    w = Write("deposit", u, "POST", "/v1/accounts/%d/deposits" % u.account, {"amount_cents": 3}, uuid.uuid4().hex, 3)
    load._add(w)
    r = load._do(conn, w)
    conn.close()
    return r


def test_redis_killed_and_restarted_empty(pg, own_redis):
    dbname = pg.createdb()
    srv = Bazaar(pg.url(dbname), own_redis.url(0), "--cache-ttl", "1s")
    try:
        load = Load(srv.url)
        load.start()
        time.sleep(2)
        # 1. an instant restart while the server is idle: once /readyz says
        # 200, no request may fail — on any loop's pipelined connection
        load.pause_ev.set()
        time.sleep(0.5)
        own_redis.kill()
        own_redis.start()     # returns once Redis answers PING
        # past any reconnect backoff (at most 2 s), without a request: each
        # loop's connection to the old Redis is still there, closed
        time.sleep(2.5)
        u = load.users[0]
        t0 = time.monotonic()
        for i in range(8):  # fresh connections land on both loops
            st, body = readyz(srv)
            assert st == 200, ("readyz after Redis came back", st, body)
            c = Conn(load.port)
            r = c.request("GET", "/v1/me", None, {"Authorization": "Bearer " + u.token})
            c.close()
            assert r.status in (200, 401), ("Redis is back, yet", r.status, r.body)
        took1 = time.monotonic() - t0
        load.pause_ev.clear()
        t_ready = time.monotonic()
        time.sleep(2)
        late = [(what, s) for t0, _, s, what in list(load.latencies) if t0 > t_ready and s is not None and s >= 500]
        assert not late, "5xx after /readyz said 200: %s" % late[:10]
        # 2. down for 3 s
        own_redis.kill()
        time.sleep(0.3)
        assert_unavailable([("deposit", deposit_probe(load))], fast=1.0)
        st, body = readyz(srv)
        assert st == 503 and b'"cache":"unavailable"' in body, (st, body)
        time.sleep(2.7)
        own_redis.start()
        took2 = wait_ready(srv)
        t_ready = time.monotonic()
        time.sleep(2.5)
        late = [(what, s) for t0, _, s, what in list(load.latencies) if t0 > t_ready and s is not None and s >= 500]
        assert not late, "5xx after /readyz said 200: %s" % late[:10]
        assert recovered(load) > 0
        finish("5 Redis SIGKILLed, restarted empty (at once; after 3 s)", load, PgQ(pg, dbname),
               "instant restart: 16 requests on both loops all served; ready %.1f s after the 3 s outage; "
               "sessions lost, clients logged in again" % took2)
    finally:
        srv.close()

"""Hung dependencies fail fast (issue 20): PostgreSQL or Redis frozen with
SIGSTOP — connections are accepted and never answered — under the mixed
load.  Before the circuit breakers every request that needed the frozen
dependency held its coroutine, a pool slot and its client for the whole
deadline; now, once the first calls miss their deadlines, requests that
need it answer 503 `unavailable` with Retry-After at once while one probe
at a time checks whether it is back:

- once the first call to it missed its deadline (the breaker opens then;
  /metrics tells when), a burst of requests that need the frozen
  dependency gets 503 `unavailable` with Retry-After, p99 under 50 ms;
- what does not need it keeps working: a cached item stays 200 while the
  database is frozen; item reads go to the database while Redis is frozen;
- /readyz names the open breaker, gRPC health says NOT_SERVING, a gRPC
  call gets UNAVAILABLE with retry-after and grpc-retry-pushback-ms, and
  /metrics counts the state changes and fast failures (promtool-clean);
- after SIGCONT, service is back within one probe interval (1 s, the
  default --breaker-probe-interval);
- nothing acknowledged is lost or doubled (harness verify)."""
import os
import re
import signal
import subprocess
import threading
import time
import uuid

import pytest

from common import finish, readyz, recovered
from harness import REQUEST_TIMEOUT, Bazaar, Conn, Load, PgQ, Redis, Write, get, verify, wait_for

PROBE_INTERVAL = 1.0   # --breaker-probe-interval's default
FAST = 0.050           # the target for the fast 503s' p99
RECOVERY_SLACK = 0.5   # a shared 2-core machine and the polling step


@pytest.fixture
def own_redis():
    r = Redis()
    yield r
    r.close()


def first_deadline_miss(load, t_freeze):
    """Waits for the first 5xx answered to a request sent before or at the
    freeze: the first call that missed its deadline.  Returns when it
    arrived (monotonic)."""
    def seen():
        done = [t0 + e for t0, e, s, _ in list(load.latencies) if s is not None and s >= 500 and t0 + e >= t_freeze]
        return min(done) if done else None
    t = wait_for(seen, REQUEST_TIMEOUT + 3, 0.01)
    assert t, "no request failed after the freeze"
    return t


def opened(srv, dep):
    """Waits until /metrics shows dep's breaker open (or half-open): the
    first call to the dependency itself that missed its deadline.  (The
    first 503 a client sees may come a little earlier, from a request that
    waited out its deadline behind one stuck on the dependency — for its
    account's lock, say — which says nothing to the breaker.)  Returns when
    (monotonic)."""
    def is_open():
        st, _, body = get(srv.url + "/metrics", 2)
        m = re.search(r'^bazaar_breaker_state\{dependency="%s"\} (\d)$' % dep, body.decode(), re.M)
        return time.monotonic() if st == 200 and m and m.group(1) != "0" else None
    t = wait_for(is_open, REQUEST_TIMEOUT + 3, 0.01)
    assert t, "the %s breaker did not open" % dep
    return t


def burst(port, ops, seconds, nthreads=4):
    """nthreads clients, each running the ops (functions conn -> (kind, Resp))
    in turn for `seconds`.  Returns [(kind, Resp)]."""
    out, lk = [], threading.Lock()

    def run(i):
        conn = Conn(port)
        end = time.monotonic() + seconds
        k = i
        while time.monotonic() < end:
            kind, r = ops[k % len(ops)](conn)
            k += 1
            with lk:
                out.append((kind, r))
        conn.close()
    ts = [threading.Thread(target=run, args=(i,)) for i in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + REQUEST_TIMEOUT + 10)
    return out


def p99(xs):
    xs = sorted(xs)
    return xs[int(0.99 * (len(xs) - 1))] if xs else 0.0


def check_fast_503s(resps, kinds):
    """The burst's answers of the given kinds: every one a 503 problem+json
    `unavailable` with Retry-After, p99 under FAST.  Returns (n, p99)."""
    lat = []
    for kind, r in resps:
        if kind not in kinds:
            continue
        assert r.status == 503, (kind, r.status, r.err, r.body[:200])
        assert r.headers.get("content-type", "").startswith("application/problem+json"), (kind, r.headers)
        assert r.json()["code"] == "unavailable", (kind, r.body)
        assert int(r.headers.get("retry-after", "0")) >= 1, (kind, r.headers)
        lat.append(r.elapsed)
    assert len(lat) >= 100, "too few answers to judge: %d" % len(lat)
    q = p99(lat)
    assert q < FAST, "p99 of the 503s %.1f ms (max %.1f ms, %d answers)" % (q * 1e3, max(lat) * 1e3, len(lat))
    return len(lat), q


def deposit_op(load, u):
    """A keyed deposit (joins the load's writes: settle and verify see it)."""
    def op(conn):
        w = Write("deposit", u, "POST", "/v1/accounts/%d/deposits" % u.account, {"amount_cents": 5}, uuid.uuid4().hex,
                  5)
        load._add(w)
        w.attempts += 1
        r = load._call(conn, u, w.method, w.path, w.body, w.key)
        if w.definitive(r):
            w.status, w.resp = r.status, r.body
        return "deposit", r
    return op


def get_op(kind, path, token=None):
    def op(conn):
        return kind, conn.request("GET", path, None, {"Authorization": "Bearer " + token} if token else None)
    return op


def metrics(srv):
    st, _, body = get(srv.url + "/metrics", 5)
    assert st == 200, (st, body)
    text = body.decode()
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    return text


def sample(text, name, **labels):
    want = ",".join('%s="%s"' % kv for kv in labels.items())
    m = re.search(r"^%s\{%s\} (\S+)$" % (re.escape(name), re.escape(want)), text, re.M)
    assert m, "%s{%s} not in /metrics" % (name, want)
    return float(m.group(1))


def check_metrics(srv, dep):
    text = metrics(srv)
    assert sample(text, "bazaar_breaker_state", dependency=dep) in (1, 2), "the %s breaker is not open" % dep
    assert sample(text, "bazaar_breaker_transitions_total", dependency=dep, to="open") >= 1
    assert sample(text, "bazaar_breaker_rejected_total", dependency=dep) >= 100
    return text


def check_grpc(port, item=None):
    """gRPC while the breaker is open: health NOT_SERVING; with item,
    GetItem of that uncached item UNAVAILABLE, at once, with retry-after
    and grpc-retry-pushback-ms (one of the calls may be the probe, which
    waits out its deadline)."""
    import grpc
    from grpc_stubs import health_pb2, pb, unary
    ch = grpc.insecure_channel("127.0.0.1:%d" % port)
    try:
        resp = unary(ch, "/grpc.health.v1.Health/Check", None, health_pb2.HealthCheckResponse)(
            health_pb2.HealthCheckRequest(service=""), timeout=REQUEST_TIMEOUT + 3)
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING, resp
        if item is None:
            return
        fast = []
        for _ in range(5):
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as e:
                unary(ch, "/bazaar.v1.ItemService/GetItem", None, pb.Item)(pb.GetItemRequest(id=item),
                                                                          timeout=REQUEST_TIMEOUT + 3)
            took = time.monotonic() - t0
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, (e.value.code(), e.value.details())
            md = dict(e.value.trailing_metadata() or ())
            if took < 0.2:
                assert int(md.get("retry-after", "0")) >= 1, md
                assert int(md.get("grpc-retry-pushback-ms", "0")) >= 1000, md
                fast.append(took)
        assert len(fast) >= 4, fast
    finally:
        ch.close()


def recover(op, t_thaw, limit):
    """Polls op until it succeeds; seconds from the thaw."""
    deadline = t_thaw + limit + REQUEST_TIMEOUT + 2
    while time.monotonic() < deadline:
        kind, r = op()
        if r.status is not None and r.status < 300:
            return time.monotonic() - t_thaw
        time.sleep(0.02)
    return None


def test_frozen_postgres_fails_fast(pg, redis):
    n = 15
    subprocess.run(["redis-cli", "-p", str(redis.port), "-n", str(n), "FLUSHDB"], capture_output=True, timeout=10)
    dbname = pg.createdb()
    srv = Bazaar(pg.url(dbname), redis.url(n), "--cache-ttl", "30s")
    try:
        load = Load(srv.url, nitems=24)
        load.start()
        time.sleep(1.5)
        # an item the load never orders (an order's stock change would
        # invalidate its entry), read once: cached for 30 s
        hot = load.cold.pop()
        c = Conn(load.port)
        assert c.request("GET", "/v1/items/%d" % hot).status == 200
        c.close()
        cold = load.cold.pop()
        t_freeze = time.monotonic()
        pg.freeze()
        try:
            t_miss = first_deadline_miss(load, t_freeze)
            t_open = opened(srv, "db")
            # keyed deposits one op in ten: each 503 is settled (re-sent)
            # afterwards, one at a time
            ops = [get_op("cold", "/v1/items/%d" % cold), get_op("hot", "/v1/items/%d" % hot)] * 5
            ops[-1] = deposit_op(load, load.users[1])
            resps = burst(load.port, ops, 2.0)
            nfast, q = check_fast_503s(resps, ("cold", "deposit"))
            hots = [r for kind, r in resps if kind == "hot"]
            assert hots and all(r.status == 200 for r in hots), [(r.status, r.body[:100]) for r in hots if r.status != 200]
            hot_p99 = p99([r.elapsed for r in hots])
            st, body = readyz(srv, REQUEST_TIMEOUT + 3)
            assert st == 503 and b'"db":"unavailable"' in body and b'"open_breakers":["db"]' in body, (st, body)
            check_metrics(srv, "db")
            check_grpc(load.port, cold)
        finally:
            t_thaw = time.monotonic()
            pg.thaw()
        c = Conn(load.port)
        took = recover(lambda: ("cold", c.request("GET", "/v1/items/%d" % cold)), t_thaw, PROBE_INTERVAL)
        c.close()
        assert took is not None and took <= PROBE_INTERVAL + RECOVERY_SLACK, "back %s s after SIGCONT" % took
        st, body = readyz(srv)
        assert st == 200 and b"open_breakers" not in body, (st, body)
        assert sample(metrics(srv), "bazaar_breaker_state", dependency="db") == 0
        time.sleep(1.5)
        assert recovered(load) > 0
        finish("PostgreSQL frozen: breaker", load, PgQ(pg, dbname),
               "first 503 %.2f s after SIGSTOP, breaker open %.0f ms later; then %d fast 503s, p99 %.1f ms; cached "
               "GET 200 p99 %.1f ms; back %.2f s after SIGCONT" % (t_miss - t_freeze, max(0, t_open - t_miss) * 1e3,
                                                                 nfast, q * 1e3, hot_p99 * 1e3, took),
               codes=("unavailable", "timeout"))
    finally:
        srv.close()


def test_frozen_redis_fails_fast(pg, own_redis):
    dbname = pg.createdb()
    srv = Bazaar(pg.url(dbname), own_redis.url(0), "--cache-ttl", "30s")
    try:
        load = Load(srv.url, nitems=24)
        load.start()
        time.sleep(1.5)
        u = load.users[1]
        item = load.items[0]
        t_freeze = time.monotonic()
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            t_miss = first_deadline_miss(load, t_freeze)
            t_open = opened(srv, "cache")
            ops = [get_op("me", "/v1/me", u.token), get_op("item", "/v1/items/%d" % item)]
            resps = burst(load.port, ops, 2.0)
            nfast, q = check_fast_503s(resps, ("me",))
            # no cache: item reads go to the database, as on any Redis error
            items = [r for kind, r in resps if kind == "item"]
            assert items and all(r.status == 200 for r in items), \
                [(r.status, r.body[:100]) for r in items if r.status != 200][:5]
            item_p99 = p99([r.elapsed for r in items])
            assert item_p99 < FAST, "item GETs without the cache: p99 %.1f ms" % (item_p99 * 1e3)
            st, body = readyz(srv, REQUEST_TIMEOUT + 3)
            assert st == 503 and b'"db":"ok"' in body and b'"cache":"unavailable"' in body \
                and b'"open_breakers":["cache"]' in body, (st, body)
            check_metrics(srv, "cache")
            check_grpc(load.port)
        finally:
            t_thaw = time.monotonic()
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        c = Conn(load.port)
        took = recover(lambda: ("me", c.request("GET", "/v1/me", None, {"Authorization": "Bearer " + u.token})),
                       t_thaw, PROBE_INTERVAL)
        c.close()
        assert took is not None and took <= PROBE_INTERVAL + RECOVERY_SLACK, "back %s s after SIGCONT" % took
        st, body = readyz(srv)
        assert st == 200 and b"open_breakers" not in body, (st, body)
        time.sleep(1.5)
        assert recovered(load) > 0
        finish("Redis frozen: breaker", load, PgQ(pg, dbname),
               "first 503 %.2f s after SIGSTOP, breaker open %.0f ms later; then %d fast 503s, p99 %.1f ms; item "
               "GETs from the database 200 p99 %.1f ms; back %.2f s after SIGCONT" % (
                   t_miss - t_freeze, max(0, t_open - t_miss) * 1e3, nfast, q * 1e3, item_p99 * 1e3, took),
               codes=("unavailable", "timeout"))
    finally:
        srv.close()


def test_live_server_errors_do_not_trip_it(pg):
    """What proves the server alive never opens the breaker: statements
    cancelled at their deadline behind a lock (the server confirms the
    cancel: 503 `timeout`, six in a row, three at once) and unique
    violations (409).  /readyz and /metrics show it closed, never opened,
    and the next deposit after the lock goes succeeds at once."""
    from test_pg_edges import Locker
    dbname = pg.createdb()
    srv = Bazaar(pg.url(dbname), "memory")
    try:
        load = Load(srv.url, nthreads=3, nitems=2)
        lk = Locker(pg, dbname, "accounts")
        out, olk = [], threading.Lock()
        try:
            for _ in range(2):
                def one(u):
                    c = Conn(load.port)
                    r = deposit_op(load, u)(c)[1]
                    c.close()
                    with olk:
                        out.append(r)
                ts = [threading.Thread(target=one, args=(u,)) for u in load.users]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join(REQUEST_TIMEOUT + 10)
        finally:
            lk.close()
        assert len(out) == 6, out
        for r in out:   # (now and then one reads `cancelled`: a 57014 either way, the server answered)
            assert r.status == 503 and r.json()["code"] in ("timeout", "cancelled"), (r.status, r.body)
        c = Conn(load.port)
        u = load.users[0]
        for _ in range(5):
            r = c.request("POST", "/v1/users", {"email": u.email, "name": "again", "password": "correct horse"})
            assert r.status == 409, (r.status, r.body)
        st, body = readyz(srv)
        assert st == 200 and b"open_breakers" not in body, (st, body)
        text = metrics(srv)
        assert sample(text, "bazaar_breaker_state", dependency="db") == 0
        assert sample(text, "bazaar_breaker_transitions_total", dependency="db", to="open") == 0
        assert sample(text, "bazaar_breaker_rejected_total", dependency="db") == 0
        t0 = time.monotonic()
        kind, r = deposit_op(load, u)(c)
        c.close()
        assert r.status == 201 and time.monotonic() - t0 < 1.0, (r.status, r.body)
        load.settle()
        lost, dup, notes = verify(load, PgQ(pg, dbname))
        assert lost == 0 and dup == 0 and not notes, notes
    finally:
        srv.close()

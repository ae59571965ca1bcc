"""Service-level abuse caps (API.md §10, issue 13), each shown refusing the
abusive traffic while other clients go on unharmed: the password-hashing
pool, event streams per user across REST and gRPC, a password change ending
the other sessions, cache entries a client can multiply never evicting
sessions, and no password of a database or cache URL in the log."""
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests

from grpc_stubs import pb, server_stream
from harness import BAZAAR, Backend, PG_URL, Server
from rest import Client, account, key, new_user, problem

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(not PG_URL, reason="needs with_services.sh"))]
O = "/bazaar.v1.OrderService/"


def p95(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.95))]


# ---- 1. the password-hashing pool ----


def test_signup_flood_is_refused_overloaded_and_deposits_stay_fast(tmp_path):
    """16 threads of sign-ups against one hashing thread: the surplus is
    refused at once with 503 overloaded + Retry-After, and a client making
    deposits meanwhile keeps its latency (the hashes no longer hold the
    offload pool its commits need)."""
    s = Server(Backend("sqlite", str(tmp_path)), "--auth-concurrency", "1", "--login-rate-limit", "100000/min")
    try:
        payer, _ = new_user(s)
        acct = account(payer)
        # the quiet baseline
        base = []
        for _ in range(30):
            t0 = time.monotonic()
            r = payer.post("/v1/accounts/%d/deposits" % acct["id"], {"amount_cents": 1}, key=key())
            base.append(time.monotonic() - t0)
            assert r.status_code == 201, r.text
        stop = threading.Event()
        codes, retry_after = [], []

        def flood(i):
            c = Client(s)
            n = 0
            while not stop.is_set():
                r = c.post("/v1/users", {"email": "flood-%d-%d@example.com" % (i, n), "name": "F",
                                         "password": "password123"})
                n += 1
                codes.append(r.status_code)
                if r.status_code == 503:
                    problem(r, 503, "overloaded")
                    retry_after.append(r.headers.get("Retry-After"))
                    time.sleep(0.01)  # keeps the 16 client threads from starving this box's 2 cores
                else:
                    assert r.status_code == 201, r.text

        threads = [threading.Thread(target=flood, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        during = []
        for _ in range(60):
            t0 = time.monotonic()
            r = payer.post("/v1/accounts/%d/deposits" % acct["id"], {"amount_cents": 1}, key=key())
            during.append(time.monotonic() - t0)
            assert r.status_code == 201, r.text
        stop.set()
        for t in threads:
            t.join()
        assert codes.count(503) > 0 and codes.count(201) > 0
        assert all(ra and int(ra) >= 1 for ra in retry_after)
        print("deposit p95: %.1f ms quiet, %.1f ms during a 16-thread sign-up flood (%d sign-ups, %d refused)" %
              (p95(base) * 1000, p95(during) * 1000, codes.count(201), codes.count(503)))
        # before the pool: p95 480-630 ms; 20-60 ms on a quiet box, up to
        # ~270 ms seen when other jobs hold both cores — the bound sits below the bug
        assert p95(during) < 0.4, p95(during)
        # the flood over, sign-up and login work
        new_user(s)
    finally:
        s.close()


# ---- 2. event streams per user, across transports ----


def GrpcServer(tmp, *flags):
    """bazaar serve on SQLite with gRPC on its own address too."""
    return Server(Backend("sqlite", tmp), *flags, grpc=True)


def sse(c, uid):
    return requests.get(c.base + "/v1/users/%d/orders/events" % uid, stream=True, timeout=10,
                        headers={"Authorization": "Bearer " + c.token})


def test_event_streams_are_capped_per_user_across_rest_and_grpc(tmp_path):
    s = GrpcServer(str(tmp_path), "--sse-max-per-user", "3")
    try:
        a, ua = new_user(s)
        b, ub = new_user(s)
        r1, r2 = sse(a, ua["id"]), sse(a, ua["id"])
        assert r1.status_code == 200 and r2.status_code == 200
        watch = server_stream(s.channel, O + "WatchOrders", pb.OrderEvent)
        g1 = watch(pb.WatchOrdersRequest(), metadata=[("authorization", "Bearer " + a.token)], timeout=30)
        g1.initial_metadata()  # subscribed: the third stream
        # a fourth, on either transport, is refused
        r = sse(a, ua["id"])
        problem(r, 429, "too_many_streams")
        assert int(r.headers["Retry-After"]) >= 1
        with pytest.raises(grpc.RpcError) as e:
            list(watch(pb.WatchOrdersRequest(), metadata=[("authorization", "Bearer " + a.token)], timeout=5))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too_many_streams" in e.value.details()
        # another user is not affected
        rb = sse(b, ub["id"])
        assert rb.status_code == 200
        rb.close()
        # closing one frees its slot (the server sees the hang-up)
        r1.close()
        deadline = time.time() + 10
        while True:
            r = sse(a, ua["id"])
            if r.status_code == 200 or time.time() > deadline:
                break
            r.close()
            time.sleep(0.1)
        assert r.status_code == 200
        r.close()
        r2.close()
        g1.cancel()
    finally:
        s.close()


# ---- 3. a password change ends every other session ----


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request, tmp_path_factory):
    b = Backend(request.param, str(tmp_path_factory.mktemp("limits")))
    s = Server(b, "--login-rate-limit", "1000/min")
    yield s
    s.close()


def test_password_change_ends_every_other_session(srv):
    c, u = new_user(srv, password="first-password")
    others = []
    for _ in range(3):
        r = Client(srv).post("/v1/sessions", {"email": u["email"], "password": "first-password"})
        assert r.status_code == 201
        others.append(Client(srv, r.json()["token"]))
    bystander, _ = new_user(srv)
    for o in others:
        assert o.get("/v1/me").status_code == 200
    r = c.patch("/v1/users/%d" % u["id"], {"password": "second-password"})
    assert r.status_code == 200, r.text
    assert c.get("/v1/me").status_code == 200  # the current session survives
    for o in others:
        problem(o.get("/v1/me"), 401, "unauthorized")
    assert bystander.get("/v1/me").status_code == 200
    # the old password no longer works, the new one does; logout ends it
    assert Client(srv).post("/v1/sessions", {"email": u["email"], "password": "first-password"}).status_code == 401
    r = Client(srv).post("/v1/sessions", {"email": u["email"], "password": "second-password"})
    assert r.status_code == 201
    n = Client(srv, r.json()["token"])
    assert n.delete("/v1/sessions/current").status_code == 204
    assert n.get("/v1/me").status_code == 401
    assert c.get("/v1/me").status_code == 200
    if srv.backend.kind == "postgres":  # the user's session set in Redis holds the one left
        members = srv.backend.redis_cli(["SMEMBERS", "bazaar:sessions:%d" % u["id"]]).split()
        assert len(members) == 1


# ---- 4. entries a client can multiply never evict sessions ----


def test_a_flood_of_pages_and_leaderboards_does_not_evict_sessions(tmp_path):
    s = Server(Backend("sqlite", str(tmp_path)), "--cache-max-memory", "256KiB", "--login-rate-limit", "1000/min")
    try:
        keepers = [new_user(s)[0] for _ in range(5)]
        flooders = [new_user(s)[0] for _ in range(4)]

        def flood(c):
            me = c.get("/v1/me").json()["id"]
            for lim in range(1, 101):  # distinct list pages
                assert c.get("/v1/users/%d/orders?limit=%d" % (me, lim)).status_code == 200
            for i in range(800):  # distinct leaderboards
                cur = "%c%c%c" % (65 + i // 676 % 26, 65 + i // 26 % 26, 65 + i % 26)
                r = c.get("/v1/leaderboard/spenders?currency=%s" % (cur if c is not flooders[0] else cur[::-1]))
                assert r.status_code == 200, r.text

        with ThreadPoolExecutor(4) as ex:
            list(ex.map(flood, flooders))
        m = requests.get(s.url + "/metrics").text
        ev = [l for l in m.splitlines() if l.startswith("bazaar_cache_evictions")]
        print("\n".join(ev))
        for k in keepers:
            assert k.get("/v1/me").status_code == 200
    finally:
        s.close()


# ---- 5. no password from a URL in the log ----


def run_bazaar(*args, timeout=20):
    return subprocess.run([BAZAAR] + list(args), capture_output=True, text=True, timeout=timeout)


def test_no_url_password_in_the_log(tmp_path):
    # unreachable database: the error line names the URL, without its password
    r = run_bazaar("serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "off", "--log-format", "json",
                   "--db", "postgres://alice:s3cr3t-pw@127.0.0.1:1/db?connect_timeout=2")
    assert r.returncode != 0
    assert "s3cr3t-pw" not in r.stderr + r.stdout, r.stderr
    assert "alice:***@127.0.0.1:1" in r.stderr, r.stderr
    # a refused flag value is shown redacted too
    r = run_bazaar("serve", "--cache", "redis://bob:s3cr3t-pw@", "--db", "sqlite://%s/x.db" % tmp_path)
    assert r.returncode == 2
    assert "s3cr3t-pw" not in r.stderr + r.stdout, r.stderr
    r = run_bazaar("serve", "--db", "mysql://carol:s3cr3t-pw@h/db")
    assert r.returncode == 2 and "s3cr3t-pw" not in r.stderr, r.stderr
    # unreachable Redis
    r = run_bazaar("serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "off", "--log-format", "json",
                   "--db", "sqlite://%s/y.db" % tmp_path, "--cache", "redis://127.0.0.1:1/0?password=s3cr3t-pw")
    assert "s3cr3t-pw" not in r.stderr + r.stdout, r.stderr


@pytest.mark.skipif(not PG_URL, reason="needs with_services.sh")
def test_no_url_password_in_the_log_of_a_running_server(tmp_path):
    b = Backend("postgres", str(tmp_path))
    # trust authentication ignores the password: the server starts and logs
    b.db = b.db.replace("postgres@", "postgres:s3cr3t-pw@") + "?password=s3cr3t-pw2"
    s = Server(b)
    try:
        c, _ = new_user(s)
        assert c.get("/v1/me").status_code == 200
    finally:
        s.stop()
        log = s.log()
        os.unlink(s.logf.name)
    assert '"listening"' in log
    assert "s3cr3t-pw" not in log, log

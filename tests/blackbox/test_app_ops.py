"""Whole-process behaviours of the marketplace: two instances sharing
PostgreSQL and Redis, rate limits, leaderboard rebuild, durable
fulfilment across a crash, `seed` determinism and `explain`."""
import os
import signal
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from harness import BAZAAR, Backend, PG_URL, Server
from rest import Client, account, key, new_user, problem
from test_api import new_item, order, shop

needs_pg = pytest.mark.skipif(not PG_URL, reason="needs with_services.sh")


@needs_pg
def test_twenty_concurrent_pays_across_two_instances_debit_once(tmp_path):
    b = Backend("postgres", str(tmp_path))
    s1 = Server(b)
    s2 = Server(b)
    try:
        seller, su, item, buyer, bu, acct = shop(s1, price=700, funds=10000)
        o = order(buyer, acct, item).json()
        barrier = threading.Barrier(20)

        def pay(i):
            c = Client(s1 if i % 2 else s2, buyer.token)  # the token works on both
            barrier.wait()
            return c.post("/v1/orders/%d/pay" % o["id"])

        with ThreadPoolExecutor(20) as ex:
            rs = list(ex.map(pay, range(20)))
        assert all(r.status_code == 200 for r in rs), [(r.status_code, r.text) for r in rs]
        assert all(r.json()["status"] in ("paid", "shipped") for r in rs)
        assert Client(s2, buyer.token).get("/v1/accounts/%d" % acct["id"]).json()["balance_cents"] == 9300
        sacc = [a for a in Client(s1, seller.token).get("/v1/accounts").json()["data"] if a["currency"] == "USD"]
        assert sacc[0]["balance_cents"] == 700
        # a logout on one instance ends the session on the other
        assert Client(s1, buyer.token).delete("/v1/sessions/current").status_code == 204
        problem(Client(s2, buyer.token).get("/v1/me"), 401, "unauthorized")
    finally:
        s1.close()
        s2.close()


def away_from_a_minute_boundary(margin=15):
    """Rate limits are fixed windows aligned to the wall clock's minutes
    (cache_rate_allow): a test that counts within one window starts with
    at least `margin` seconds of it left (a login at :00.2 once reset the
    count mid-test)."""
    while time.time() % 60 > 60 - margin:
        time.sleep(0.5)


def test_login_rate_limit(tmp_path):
    s = Server(Backend("sqlite", str(tmp_path)), "--login-rate-limit", "3/min")
    try:
        away_from_a_minute_boundary()
        c, u = new_user(s)  # one login used
        anon = Client(s)
        for _ in range(2):
            r = anon.post("/v1/sessions", {"email": u["email"], "password": "wrong-password"})
            assert r.status_code == 401 and r.headers["RateLimit-Limit"] == "3"
        r = anon.post("/v1/sessions", {"email": u["email"], "password": "correct horse"})
        problem(r, 429, "rate_limited")
        assert int(r.headers["Retry-After"]) >= 1 and r.headers["RateLimit-Remaining"] == "0"
        # another email from the same address is counted separately
        c2, u2 = new_user(s)
        assert c2.get("/v1/me").status_code == 200
        m = requests.get(s.url + "/metrics").text
        assert "bazaar_rate_limited_total 1" in m
    finally:
        s.close()


def test_request_rate_limit_per_principal(tmp_path):
    # per minute: no token comes back while a busy box sends the 8
    s = Server(Backend("sqlite", str(tmp_path)), "--rate-limit", "5/min")
    try:
        away_from_a_minute_boundary()
        anon = Client(s)
        codes = [anon.get("/v1/items").status_code for _ in range(8)]
        assert codes.count(429) >= 2 and codes[:5] == [200] * 5, codes
        r = anon.get("/v1/items")
        if r.status_code == 429:
            problem(r, 429, "rate_limited")
            assert "Retry-After" in r.headers
        assert {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(r.headers)
        assert requests.get(s.url + "/healthz").status_code == 200  # operations are not limited
    finally:
        s.close()


def test_leaderboard_is_rebuilt_when_the_cache_is_lost(tmp_path):
    b = Backend("sqlite", str(tmp_path))
    s = Server(b)
    try:
        seller, su, item, buyer, bu, acct = shop(s, price=4242, funds=100000)
        o = order(buyer, acct, item).json()
        assert buyer.post("/v1/orders/%d/pay" % o["id"]).status_code == 200
        before = Client(s).get("/v1/leaderboard/spenders").json()["data"]
        assert [(e["user_id"], e["spent_cents"]) for e in before] == [(bu["id"], 4242)]
    finally:
        s.close()
    s = Server(b)  # a fresh in-process cache: the sorted set is gone
    try:
        after = Client(s).get("/v1/leaderboard/spenders").json()["data"]
        assert [(e["user_id"], e["spent_cents"]) for e in after] == [(bu["id"], 4242)]
    finally:
        s.close()


@needs_pg
def test_leaderboard_rebuilt_after_redis_flush(tmp_path):
    b = Backend("postgres", str(tmp_path))
    s = Server(b)
    try:
        seller, su, item, buyer, bu, acct = shop(s, price=999, funds=100000)
        o = order(buyer, acct, item).json()
        assert buyer.post("/v1/orders/%d/pay" % o["id"]).status_code == 200
        tok = buyer.token
        b.redis_cli(["FLUSHDB"])
        top = Client(s).get("/v1/leaderboard/spenders").json()["data"]
        assert [(e["user_id"], e["spent_cents"]) for e in top] == [(bu["id"], 999)]
        problem(Client(s, tok).get("/v1/me"), 401, "unauthorized")  # sessions lived in Redis too
    finally:
        s.close()


def test_a_paid_order_ships_after_a_crash(tmp_path):
    b = Backend("sqlite", str(tmp_path))
    s = Server(b)
    seller, su, item, buyer, bu, acct = shop(s, funds=100000)
    o = order(buyer, acct, item).json()
    assert buyer.post("/v1/orders/%d/pay" % o["id"]).json()["status"] == "paid"
    s.stop(signal.SIGKILL)  # before the worker could ship it
    s2 = Server(b)
    try:
        c, _ = new_user(s2)
        tok = Client(s2).post("/v1/sessions", {"email": bu["email"], "password": "correct horse"}).json()["token"]
        deadline = time.time() + 10
        while Client(s2, tok).get("/v1/orders/%d" % o["id"]).json()["status"] != "shipped":
            assert time.time() < deadline
            time.sleep(0.2)
    finally:
        s2.close()
        os.unlink(s.logf.name)


def run(*args, **kw):
    return subprocess.run([BAZAAR] + list(args), capture_output=True, text=True, timeout=300, **kw)


def dump(path):
    con = sqlite3.connect(path)
    out = []
    for t in ["users", "accounts", "items", "orders", "order_lines"]:
        out.append(con.execute("SELECT * FROM %s ORDER BY 1, 2" % t).fetchall())
    con.close()
    return out


def test_seed_is_deterministic_and_explain_finds_indexes(tmp_path):
    dbs = [tmp_path / "a.db", tmp_path / "b.db"]
    for p in dbs:
        r = run("seed", "--db", "sqlite://%s" % p, "--users", "50", "--items", "300", "--orders", "500", "--seed", "7")
        assert r.returncode == 0, r.stderr
    a, b = dump(str(dbs[0])), dump(str(dbs[1]))
    assert a == b
    users, accounts, items, orders, lines = a
    assert len(users) == 50 and len(items) == 300 and len(orders) == 500
    assert users[0][1] == "user1@example.com" and all(x[3] == 1000000 for x in accounts)
    assert items[0][2] == "sku-1" and items[50][1] == 1  # item 51 is sold by user ((51-1) mod 50)+1
    assert all(100 <= i[4] <= 10000 and i[6] == 1000000 for i in items)
    assert {o[3] for o in orders} == {"pending", "paid"}
    # seeded users log in with password<i>
    s = Server(type("B", (), {"db": "sqlite://%s" % dbs[0], "cache": "memory", "kind": "sqlite"})())
    try:
        r = Client(s).post("/v1/sessions", {"email": "user7@example.com", "password": "password7"})
        assert r.status_code == 201
    finally:
        s.close()
    again = run("seed", "--db", "sqlite://%s" % dbs[0], "--users", "5")
    assert again.returncode != 0 and "empty" in again.stderr
    r = run("explain", "--db", "sqlite://%s" % dbs[0])
    assert r.returncode == 0, r.stdout
    assert "FAIL" not in r.stdout and "hot queries use an index" in r.stdout


@needs_pg
def test_explain_on_postgres(tmp_path):
    b = Backend("postgres", str(tmp_path))
    r = run("seed", "--db", b.db, "--users", "200", "--items", "2000", "--orders", "3000", "--seed", "1")
    assert r.returncode == 0, r.stderr
    r = run("explain", "--db", b.db)
    assert r.returncode == 0, r.stdout
    assert "Index" in r.stdout and "FAIL" not in r.stdout


def test_explain_fails_when_an_index_is_missing(tmp_path):
    p = tmp_path / "x.db"
    assert run("migrate", "--db", "sqlite://%s" % p).returncode == 0
    con = sqlite3.connect(str(p))
    con.execute("DROP INDEX orders_customer")
    con.execute("DROP INDEX orders_customer_status")
    con.commit()
    con.close()
    r = run("explain", "--db", "sqlite://%s" % p)
    assert r.returncode == 1 and "FAIL  orders of a user with their lines" in r.stdout


def test_migrate_is_idempotent(tmp_path):
    p = "sqlite://%s" % (tmp_path / "m.db")
    assert run("migrate", "--db", p).returncode == 0
    r = run("migrate", "--db", p)
    assert r.returncode == 0 and "schema version 3" in r.stdout

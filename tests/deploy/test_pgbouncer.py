"""bazaar through a real PgBouncer 1.18 in pool_mode=transaction with a
pool of 2 server connections in front of a real PostgreSQL.

Transaction pooling hands each transaction whichever server connection is
free, so a statement prepared by name on one is unknown on the next:
`statement_cache=off` in the URL makes every statement run unnamed.  With
the cache on (the default) bazaar fails through such a pooler — shown here
so the option's reason stays proven."""
import json
import threading
import time
import uuid

import pytest

from common import finish
from harness import Bazaar, Conn, Load, PgQ, wait_for
from pg_support import Bouncer, Server


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


def bounced(server):
    db = "bz_pgb_%s" % uuid.uuid4().hex[:8]
    server.psql("postgres", "CREATE DATABASE %s" % db)
    return db, Bouncer(server, db, pool_size=2)


def test_transaction_pooling_with_statement_cache_off(server):
    """Mixed REST load (writes with keys, reads) from 4 client threads plus
    a reader checking every answer's content, on 8 bazaar connections
    multiplexed onto 2 server connections: no error, every acknowledged
    write present exactly once, every read right."""
    db, pgb = bounced(server)
    srv = None
    try:
        srv = Bazaar(pgb.url(db) + "?statement_cache=off", "none", "--db-max-open", "8")
        load = Load(srv.url)
        want = {}
        c = Conn(srv.port)
        for i in load.items:
            r = c.request("GET", "/v1/items/%d" % i)
            assert r.status == 200, (r.status, r.body)
            want[i] = r.json()["sku"]
        bad, reads = [], [0]
        stop = threading.Event()

        def reader():
            rc = Conn(srv.port)
            ids = list(want)
            n = 0
            while not stop.is_set():
                i = ids[n % len(ids)]
                n += 1
                r = rc.request("GET", "/v1/items/%d" % i)
                if r.status != 200 or r.json()["sku"] != want[i] or r.json()["id"] != i:
                    bad.append(("item", i, r.status, r.body[:200]))
                u = load.users[n % len(load.users)]
                r = rc.request("GET", "/v1/users/%d" % u.id)
                if r.status != 200 or r.json()["id"] != u.id:
                    bad.append(("user", u.id, r.status, r.body[:200]))
                reads[0] += 2
            rc.close()

        t = threading.Thread(target=reader, daemon=True)
        load.start()
        t.start()
        peak_server = 0
        end = time.monotonic() + 6
        while time.monotonic() < end:
            n = int(server.psql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' "
                                            "AND backend_type = 'client backend'" % db)[0][0])
            peak_server = max(peak_server, n)
            time.sleep(0.2)
        stop.set()
        t.join(30)
        clients = sum(1 for row in pgb_show(pgb, "SHOW CLIENTS") if len(row) > 2 and row[2] == db)
        finish("through pgbouncer (transaction pooling, statement_cache=off)", load, PgQ(server, db),
               "%d checked reads" % reads[0])
        assert not bad, bad[:5]
        assert reads[0] > 50, reads
        assert peak_server <= 2, peak_server
        assert clients > 2, clients   # bazaar really held more connections than the server gave
        print("reads %d, requests %d, server connections <= %d, bazaar connections to pgbouncer %d"
              % (reads[0], load.summary()["requests"], peak_server, clients))
    finally:
        if srv:
            srv.close()
        pgb.close()


def pgb_show(pgb, cmd):
    """Rows of a pgbouncer admin console command."""
    import subprocess
    r = subprocess.run(["psql", "-X", "-At", "-F", "|", "postgres://postgres@127.0.0.1:%d/pgbouncer" % pgb.port,
                        "-c", cmd], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return [line.split("|") for line in r.stdout.splitlines()]


def test_statement_cache_on_fails_through_transaction_pooling(server):
    """The default (named prepared statements cached per connection) breaks
    under transaction pooling: the same requests answer 500 with
    PostgreSQL's "prepared statement ... does not exist / already exists"."""
    db, pgb = bounced(server)
    srv = None
    try:
        srv = Bazaar(pgb.url(db), "none", "--db-max-open", "8", "--log-level", "error")
        statuses = []
        lk = threading.Lock()
        c = Conn(srv.port)
        email = "seller-%s@example.com" % uuid.uuid4().hex[:6]
        for _ in range(20):   # even signing up may meet the failure; try a few times
            r = c.request("POST", "/v1/users", {"email": email, "name": "s", "password": "correct horse battery"})
            statuses.append(r.status)
            if r.status in (201, 409):
                r = c.request("POST", "/v1/sessions", {"email": email, "password": "correct horse battery"})
                statuses.append(r.status)
                if r.status == 201:
                    break
        token = r.json().get("token") if r.status == 201 else None

        def writer(k):
            wc = Conn(srv.port)
            for i in range(10):
                r = wc.request("POST", "/v1/items", {"sku": "s-%d-%d-%s" % (k, i, uuid.uuid4().hex[:4]), "name": "x",
                                                     "price_cents": 100, "currency": "USD", "stock": 5},
                               {"Authorization": "Bearer %s" % token})
                with lk:
                    statuses.append(r.status)
                if r.status == 201:
                    r = wc.request("GET", "/v1/items/%d" % json.loads(r.body)["id"])
                    with lk:
                        statuses.append(r.status)
            wc.close()
        ts = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        c.close()
        assert 500 in statuses, statuses
        assert wait_for(lambda: "prepared statement" in srv.log(), 5), srv.log()[-2000:]
    finally:
        if srv:
            srv.close()
        pgb.close()

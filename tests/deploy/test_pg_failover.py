"""PostgreSQL as deployed: a libpq multi-host URL over a primary and its
synchronous streaming standby.  libpq options pass through untouched; a
connection to a server that turned read-only is dropped, not reused; and
when the primary dies and the standby is promoted, bazaar carries on by
itself, answering 503 problem+json in the gap, and loses or duplicates no
acknowledged write.

One primary+standby pair serves the whole module; the failover test runs
last, since it ends the pair as it was."""
import os
import shutil
import subprocess
import time
import uuid

import pytest

import harness
from common import finish
from harness import Bazaar, Conn, Load, PgQ, Proxy, wait_for
from pg_support import Pair, Server, sign_up

BAZAAR = harness.BAZAAR


@pytest.fixture(scope="module")
def pair():
    p = Pair()
    yield p
    p.close()


def newdb(pair):
    name = "bz_dep_%s" % uuid.uuid4().hex[:8]
    pair.createdb(name)
    return name


def problem(r):
    """The answer is 503 problem+json with Retry-After; its code."""
    assert r.status == 503, (r.status, r.err, r.body[:300])
    assert r.headers.get("content-type", "").startswith("application/problem+json"), r.headers
    assert r.headers.get("retry-after"), r.headers
    return r.json()["code"]


def test_libpq_options_pass_through(pair):
    """sslmode, application_name and connect_timeout reach libpq as written
    (with the multi-host list and target_session_attrs); our own
    statement_cache option is taken out before libpq sees the URL."""
    db = newdb(pair)
    url = pair.multi_url(db, "&sslmode=disable&application_name=bazaar-x&connect_timeout=3&statement_cache=on")
    srv = Bazaar(url, "memory")
    try:
        st, _, body = harness.get(srv.url + "/readyz")
        assert st == 200, body
        names = pair.primary.psql("postgres", "SELECT DISTINCT application_name FROM pg_stat_activity "
                                              "WHERE datname = '%s'" % db)
        assert ["bazaar-x"] in names, names
    finally:
        srv.close()


def test_sslmode_require_without_ssl_fails_clearly(pair):
    """sslmode=require against a server without SSL: bazaar refuses to start
    with a line naming the database (password redacted) and libpq's reason;
    no crash, and the password never reaches the log."""
    db = newdb(pair)
    secret = "pw-%s" % uuid.uuid4().hex[:10]
    url = "postgres://postgres:%s@127.0.0.1:%d,127.0.0.1:%d/%s?target_session_attrs=read-write&sslmode=require" % (
        secret, pair.primary.port, pair.standby.port, db)
    r = subprocess.run([BAZAAR, "serve", "--http-addr", "127.0.0.1:%d" % harness.free_port(), "--grpc-addr", "off",
                        "--log-format", "json", "--db", url], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "cannot open the database" in r.stderr, r.stderr[-2000:]
    assert "SSL" in r.stderr, r.stderr[-2000:]
    assert "127.0.0.1:%d,127.0.0.1:%d" % (pair.primary.port, pair.standby.port) in r.stderr, r.stderr[-2000:]
    assert secret not in r.stderr and secret not in r.stdout, r.stderr[-2000:]


def test_sslmode_verify_full_against_a_tls_server(tmp_path):
    """A PostgreSQL with ssl=on and a self-signed certificate for
    127.0.0.1: sslmode=verify-full with that certificate as sslrootcert
    connects over TLS (pg_stat_ssl says so); with another root it refuses
    to start, naming the verification failure."""
    def cert(name):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout",
                        str(tmp_path / (name + ".key")), "-out", str(tmp_path / (name + ".crt"))],
                       check=True, capture_output=True, timeout=60)
        return str(tmp_path / (name + ".crt")), str(tmp_path / (name + ".key"))
    crt, key = cert("server")
    other, _ = cert("other")
    srvpg = Server()
    try:
        for f, mode in ((crt, 0o644), (key, 0o600)):
            dst = os.path.join(srvpg.dir, os.path.basename(f))
            shutil.copy(f, dst)
            os.chmod(dst, mode)
            if os.geteuid() == 0:
                shutil.chown(dst, "postgres")
        srvpg.psql("postgres", "ALTER SYSTEM SET ssl_cert_file = '%s'" % os.path.join(srvpg.dir, "server.crt"))
        srvpg.psql("postgres", "ALTER SYSTEM SET ssl_key_file = '%s'" % os.path.join(srvpg.dir, "server.key"))
        srvpg.psql("postgres", "ALTER SYSTEM SET ssl = on")
        srvpg.psql("postgres", "SELECT pg_reload_conf()")
        srvpg.psql("postgres", "CREATE DATABASE tlsdb")
        base = "postgres://postgres@127.0.0.1:%d/tlsdb?sslmode=verify-full&application_name=bz-tls" % srvpg.port
        srv = Bazaar(base + "&sslrootcert=" + crt, "memory")
        try:
            st, _, body = harness.get(srv.url + "/readyz")
            assert st == 200, body
            rows = srvpg.psql("postgres", "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a "
                                          "USING (pid) WHERE a.application_name = 'bz-tls'")
            assert rows and all(r[0] == "t" for r in rows), rows
        finally:
            srv.close()
        r = subprocess.run([BAZAAR, "migrate", "--log-format", "json", "--db", base + "&sslrootcert=" + other],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "cannot open the database" in r.stderr, (r.returncode, r.stderr[-2000:])
        assert "certificate verify failed" in r.stderr, r.stderr[-2000:]
    finally:
        srvpg.close()


def test_bad_statement_cache_value_is_refused(pair):
    db = newdb(pair)
    r = subprocess.run([BAZAAR, "migrate", "--log-format", "json", "--db", pair.multi_url(db, "&statement_cache=maybe")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.returncode
    assert "--db" in r.stderr and "statement_cache=on or statement_cache=off" in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_read_only_server_connections_are_dropped(pair):
    """A server that turns read-only under us (as an old primary does when it
    comes back as a standby) answers writes with SQLSTATE 25006: bazaar
    answers 503 unavailable (never 500) and drops those connections; new
    ones are refused by target_session_attrs=read-write until a writable
    server is back, and then it carries on without a restart."""
    db = newdb(pair)
    srv = Bazaar(pair.multi_url(db, "&application_name=bz-ro"), "memory", "--db-max-open", "4")
    load = Load(srv.url, nthreads=1, nitems=4)
    u = load.users[0]
    conn = Conn(srv.port)

    def deposit():
        return conn.request("POST", "/v1/accounts/%d/deposits" % u.account, {"amount_cents": 5},
                            {"Authorization": "Bearer " + u.token, "Idempotency-Key": uuid.uuid4().hex})

    def backends():
        return int(pair.primary.psql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                                 "'bz-ro'")[0][0])
    try:
        assert deposit().status == 201
        assert backends() >= 1
        pair.primary.psql("postgres", "ALTER SYSTEM SET default_transaction_read_only = on")
        pair.primary.psql("postgres", "SELECT pg_reload_conf()")
        time.sleep(0.5)
        codes = set()
        for _ in range(8):          # more than --db-max-open: every pooled connection is tried
            codes.add(problem(deposit()))
            if backends() == 0:
                break
        assert codes == {"unavailable"}, codes
        assert wait_for(lambda: backends() == 0, 5), "connections to the read-only server were kept"
        r = conn.request("GET", "/readyz")
        assert r.status == 503 and b'"db":"unavailable"' in r.body, (r.status, r.body)
    finally:
        pair.primary.psql("postgres", "ALTER SYSTEM RESET default_transaction_read_only")
        pair.primary.psql("postgres", "SELECT pg_reload_conf()")
    try:
        assert wait_for(lambda: deposit().status == 201, 10), "no write succeeded once the server was writable"
    finally:
        conn.close()
        srv.close()


# ---- read replicas (--db-read-url) -------------------------------------------------------------

MAX_LAG = 3.0


def skus(r):
    assert r.status == 200, (r.status, r.body[:300])
    return {it["sku"]: it for it in r.json()["data"]}


def replay(pair, what):
    """Pauses or resumes WAL replay on the standby (WAL still streams and is
    flushed there, so synchronous commits on the primary go on)."""
    pair.standby.psql("postgres", "SELECT pg_wal_replay_%s()" % what)
    want = "paused" if what == "pause" else "not paused"
    assert wait_for(lambda: pair.standby.psql("postgres", "SELECT pg_get_wal_replay_pause_state()")[0][0] == want,
                    10), "replay did not become " + want


def test_read_replica_routing_read_your_writes_and_cache(pair):
    """With replay paused on the standby: an anonymous item list is served
    by the replica (it misses the newest item and shows an old name), the
    writer's own list sees its writes (read-your-writes), an item GET —
    whose answer fills the shared cache — reads the primary and so never
    caches the stale row, and once the replica is more than
    --db-read-max-lag behind every read goes to the primary."""
    db = newdb(pair)
    secret = "pw-%s" % uuid.uuid4().hex[:10]
    read_url = "postgres://postgres:%s@127.0.0.1:%d/%s?application_name=bz-replica" % (secret, pair.standby.port, db)
    srv = Bazaar(pair.multi_url(db), "memory", "--db-read-url", read_url, "--db-read-max-lag", "%gs" % MAX_LAG,
                 "--log-level", "info")
    c = Conn(srv.port)
    paused = False
    try:
        seller, auth = sign_up(c, "seller")
        mine = "/v1/items?seller_id=%d&limit=100" % seller

        def create(sku, name):
            r = c.request("POST", "/v1/items", {"sku": sku, "name": name, "price_cents": 100, "currency": "USD",
                                                "stock": 5}, auth)
            assert r.status == 201, (r.status, r.body)
            return r.json()["id"]
        a = create("a-" + uuid.uuid4().hex[:6], "old name")
        sku_a = c.request("GET", "/v1/items/%d" % a).json()["sku"]
        time.sleep(1.5)       # the writer's own mark ages past the clock-skew margin
        assert sku_a in skus(c.request("GET", mine))
        assert int(pair.standby.psql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                                 "'bz-replica'")[0][0]) >= 1, "no read reached the replica"
        replay(pair, "pause")
        paused = True
        t_pause = time.monotonic()
        sku_b = "b-" + uuid.uuid4().hex[:6]
        b = create(sku_b, "new item")
        r = c.request("PATCH", "/v1/items/%d" % a, {"name": "new name"}, auth)
        assert r.status == 200 and r.json()["name"] == "new name", (r.status, r.body)
        # anonymous: the replica's (stale) view
        anon = skus(c.request("GET", mine))
        # the writer: its own writes
        own = skus(c.request("GET", mine, None, auth))
        # the item GET fills the shared cache: from the primary, twice (miss, then hit)
        got = [c.request("GET", "/v1/items/%d" % i) for i in (a, a, b)]
        stale_window = time.monotonic() - t_pause
        assert stale_window < MAX_LAG, "too slow to observe the replica (%.2f s)" % stale_window
        assert sku_b not in anon and anon[sku_a]["name"] == "old name", anon
        assert sku_b in own and own[sku_a]["name"] == "new name", own
        assert [g.status for g in got] == [200, 200, 200], [(g.status, g.body) for g in got]
        assert got[0].json()["name"] == "new name" and got[1].json()["name"] == "new name", got[1].body
        assert got[1].headers.get("cache-status", "").endswith("hit"), got[1].headers
        # past the lag bound: the replica serves nobody
        time.sleep(MAX_LAG + 0.5 - (time.monotonic() - t_pause))
        late = skus(c.request("GET", mine))
        assert sku_b in late and late[sku_a]["name"] == "new name", late
        replay(pair, "resume")
        paused = False
        assert wait_for(lambda: sku_b in skus(c.request("GET", mine)), 10)
    finally:
        if paused:
            replay(pair, "resume")
        c.close()
        srv.close()


def test_read_replica_down_or_hung_reads_go_to_primary(pair):
    """A replica that refuses connections, or one that stops answering
    (network blackholed) mid-run: reads still answer 200 with the right
    data — within about a second while the hang is being found out, at once
    after; the replica's circuit breaker opens (/readyz names it and stays
    200) and closes once the network heals — and the replica URL's password
    never reaches the log."""
    db = newdb(pair)
    secret = "pw-%s" % uuid.uuid4().hex[:10]
    px = Proxy(pair.standby.port)
    read_url = "postgres://postgres:%s@127.0.0.1:%d/%s" % (secret, px.port, db)
    srv = Bazaar(pair.multi_url(db), "memory", "--db-read-url", read_url, "--log-level", "info")
    c = Conn(srv.port)
    try:
        seller, auth = sign_up(c, "seller")
        r = c.request("POST", "/v1/items", {"sku": "h-" + uuid.uuid4().hex[:6], "name": "x", "price_cents": 100,
                                            "currency": "USD", "stock": 5}, auth)
        assert r.status == 201
        want = r.json()["sku"]
        time.sleep(1.5)
        px.cut("blackhole")
        slow = []
        for _ in range(12):
            t0 = time.monotonic()
            got = skus(c.request("GET", "/v1/items?seller_id=%d" % seller))
            slow.append(time.monotonic() - t0)
            assert want in got
            r = c.request("GET", "/v1/users/%d" % seller)
            assert r.status == 200 and r.json()["id"] == seller, (r.status, r.body)
            time.sleep(0.1)
        print("reads while the replica hangs: %s s" % ", ".join("%.2f" % x for x in slow))
        assert max(slow) < 1.0 + 0.8, slow       # REPLICA_READ_NS, then the primary
        assert max(slow[-5:]) < 0.5, slow         # found out: straight to the primary
        # the replica's circuit breaker is open: named by /readyz, which
        # stays 200 (reads go to the primary), and counted in /metrics
        st, _, body = harness.get(srv.url + "/readyz", 5)
        assert st == 200 and b'"open_breakers":["db_read"]' in body, (st, body)
        st, _, body = harness.get(srv.url + "/metrics", 5)
        assert b'bazaar_breaker_state{dependency="db_read"} 0' not in body, body[-3000:]
        assert b'bazaar_breaker_transitions_total{dependency="db_read",to="open"} 0' not in body
        px.heal()
        ok = wait_for(lambda: b"open_breakers" not in harness.get(srv.url + "/readyz", 5)[2], 10, 0.1)
        assert ok, "the replica's breaker did not close after the network healed"
    finally:
        c.close()
        srv.close()
        px.close()
    # refused from the start (nothing listens there)
    dead = "postgres://postgres:%s@127.0.0.1:%d/%s" % (secret, harness.free_port(), db)
    srv = Bazaar(pair.multi_url(db), "memory", "--db-read-url", dead, "--log-level", "info")
    c = Conn(srv.port)
    try:
        t0 = time.monotonic()
        r = c.request("GET", "/v1/items?limit=5")
        assert r.status == 200 and time.monotonic() - t0 < 1.0, (r.status, r.body)
        time.sleep(0.5)
        with open(srv.logpath, errors="replace") as f:
            log = f.read()
        assert "read replica does not answer" in log and "postgres://postgres:***@" in log, log[-2000:]
        assert secret not in log, log[-2000:]
    finally:
        c.close()
        srv.close()


def test_read_url_needs_postgres():
    r = subprocess.run([BAZAAR, "--db", "sqlite:///tmp/x.db", "--db-read-url", "postgres://u@127.0.0.1:1/x"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--db-read-url" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_failover_to_promoted_standby(pair):
    """Mixed write load; the primary is killed (immediate stop) and the
    standby promoted.  bazaar follows the multi-host URL to the new primary
    by itself; in the gap every failure is 503 problem+json `unavailable`
    within the request timeout + 1 s; every acknowledged write is on the new
    primary exactly once."""
    db = newdb(pair)
    srv = Bazaar(pair.multi_url(db), "memory", "--cache-ttl", "1s")
    try:
        load = Load(srv.url)
        load.start()
        time.sleep(2)
        before = load.summary()["acked_writes"]
        t_kill = time.monotonic()
        pair.primary.stop_immediate()
        time.sleep(1)
        pair.standby.promote()
        t_promoted = time.monotonic()
        back = wait_for(lambda: any(t0 > t_promoted and s is not None and s < 300 and what != "item"
                                    for t0, _, s, what in list(load.latencies)), 20, 0.05)
        assert back, "no write succeeded after the promotion:\n" + srv.log()
        t_back = time.monotonic()
        # a generous bound on a loaded machine; measured ~0.1-0.3 s
        assert t_back - t_promoted < 5, "writes came back %.2f s after the promotion" % (t_back - t_promoted)
        print("writes back %.2f s after promote" % (t_back - t_promoted))
        time.sleep(2)
        assert load.summary()["acked_writes"] > before
        finish("PostgreSQL failover to the promoted standby", load, PgQ(pair.standby, db),
               "writes back %.2f s after promote (%.2f s after the kill)" % (t_back - t_promoted, t_back - t_kill))
        s = load.summary()
        print("failover: %d requests, %d acked writes (all verified), %d x 503, max latency %.2f s; 5xx %s"
              % (s["requests"], s["acked_writes"], s["s503"], s["max_latency"], load.codes))
        assert srv.proc.poll() is None
    finally:
        srv.close()

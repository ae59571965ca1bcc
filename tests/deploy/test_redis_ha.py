"""Redis as deployed (issue #12 part 3): a password (requirepass) and ACL
users in the --cache URL, a wrong password, malformed URLs, and Sentinel
failover under load.  Real redis-server / redis-sentinel processes on free
loopback ports; bazaar is the real binary."""
import subprocess
import time
import uuid

import pytest

from common import finish, readyz, wait_ready
from harness import BAZAAR, Bazaar, Conn, LiteQ, Load, free_port, get, wait_for
from redis_support import EventStream, Node, SentinelSet, end_to_end, quote

PASSWORD = "Pw-d3f@ult:9/x"       # '@', ':' and '/' must be percent-encoded in the URL
ACL_SECRET = "acl-s3cret-Z7"
ACL_USER = "app on >%s ~* &* +@all" % ACL_SECRET


@pytest.fixture
def db(tmp_path):
    return "sqlite://" + str(tmp_path / "bazaar.db")


@pytest.fixture
def secured():
    # the default user needs PASSWORD; "app" is an ACL user with its own
    n = Node(PASSWORD, users=[ACL_USER])
    yield n
    n.close()


def assert_no_secret(srv, *secrets):
    time.sleep(0.2)  # a loop writes its batched log lines within 100 ms (BZ_LOG_HOLD_NS)
    log = srv.log()
    for s in secrets:
        for form in {s, quote(s)}:
            assert form not in log, "a password reached the log"


@pytest.mark.parametrize("who", ["password", "acl-user"])
def test_auth_end_to_end(secured, db, who):
    if who == "password":
        url = "redis://:%s@127.0.0.1:%d/3" % (quote(PASSWORD), secured.port)
    else:
        url = "redis://app:%s@127.0.0.1:%d/4" % (quote(ACL_SECRET), secured.port)
    admin = free_port()
    srv = Bazaar(db, url, "--log-level", "info", "--admin-addr", "127.0.0.1:%d" % admin)
    try:
        assert readyz(srv)[0] == 200
        uid, token = end_to_end(srv, secured, 3 if who == "password" else 4, admin)
        for path in ("/debug/runtime", "/metrics", "/readyz"):
            st, _, body = get("http://127.0.0.1:%d%s" % (admin, path), 5)
            assert st == 200, (path, st)
            assert PASSWORD.encode() not in body and ACL_SECRET.encode() not in body, path

        class U:
            id = uid
        U.token = token
        stream = EventStream(srv.port, U)     # the subscriber connection
        try:
            assert wait_for(lambda: "sub=1" in secured.cli("client", "list"), 5), "no subscriber connection"
            # every connection bazaar opened (the loops' pipelines, the
            # subscriber) authenticated as the URL's user; the redis-cli
            # asking is the one default-user client (for the ACL case)
            clients = [l for l in secured.cli("client", "list").splitlines() if "cmd=client" not in l]
            user = "default" if who == "password" else "app"
            assert len(clients) >= 2 and all(" user=%s " % user in l for l in clients), clients
        finally:
            stream.close()
        assert_no_secret(srv, PASSWORD, ACL_SECRET)
    finally:
        srv.close()


@pytest.mark.parametrize("who", ["password", "acl-user", "none"])
def test_wrong_password(secured, db, who):
    if who == "password":
        url = "redis://:not-the-Pw-4242@127.0.0.1:%d/0" % secured.port
    elif who == "acl-user":
        url = "redis://app:not-the-Pw-4242@127.0.0.1:%d/0" % secured.port
    else:
        url = "redis://127.0.0.1:%d/0" % secured.port
    srv = Bazaar(db, url)
    try:
        st, body = readyz(srv)
        assert st == 503 and b'"cache":"unavailable"' in body, (st, body)
        c = Conn(srv.port)
        # a login must store its session in Redis
        email = "w-%s@example.com" % uuid.uuid4().hex[:8]
        r = c.request("POST", "/v1/users", {"email": email, "name": "w", "password": "correct horse battery"})
        assert r.status in (201, 503), (r.status, r.body)
        r = c.request("POST", "/v1/sessions", {"email": email, "password": "correct horse battery"})
        assert r.status == 503 and r.json()["code"] == "unavailable", (r.status, r.body)
        c.close()
        assert wait_for(lambda: "authentication failed" in srv.log(), 5), srv.log()
        assert_no_secret(srv, "not-the-Pw-4242", PASSWORD)
    finally:
        srv.close()


@pytest.mark.parametrize("url,says", [
    ("redis://app@127.0.0.1:1/0", "a user needs a password"),
    ("redis://:@127.0.0.1:1/0", "empty password"),
    ("redis://:sec%ZZret-77@127.0.0.1:1/0", "bad password"),
    ("redis://:sec/ret-77@127.0.0.1:1/0", "%2F"),
    ("redis://:secret-77@127.0.0.1:1/100", "database number"),
    ("redis-sentinel://127.0.0.1:1,127.0.0.1:2", "master's name is missing"),
    ("redis-sentinel://127.0.0.1:1,/m/0", "empty host:port"),
    ("redis-sentinel://127.0.0.1/m/0", "bad host:port"),
    ("redis://:secret-77@127.0.0.1:1/0?x=1", "no query"),
    ("redis://:secret-77@127.0.0.1:1,127.0.0.1:2/0", "one host:port in redis://"),
])
def test_malformed_cache_urls(db, url, says):
    for how in ("flag", "env"):
        argv = [BAZAAR, "serve", "--db", db, "--http-addr", "127.0.0.1:0"]
        env = {"PATH": "/usr/bin:/bin"}
        if how == "flag":
            argv += ["--cache", url]
        else:
            env["BAZAAR_CACHE"] = url
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10, env=env)
        assert r.returncode == 2, (how, r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and ("--cache" in lines[0] or "BAZAAR_CACHE" in lines[0]), lines
        assert says in lines[0], lines
        assert "ret-77" not in lines[0], lines


# ---- Sentinel ----------------------------------------------------------------------------------------

MASTER = "bazaar-master"


@pytest.fixture
def ha():
    s = SentinelSet(MASTER, PASSWORD)
    yield s
    s.close()


def test_sentinel_failover_under_load(ha, tmp_path):
    """kill -9 the master under the fault suite's mixed load: the sentinels
    promote the replica and bazaar follows without a restart.  During the
    gap requests are 503 (never 500, never past --request-timeout + slack);
    afterwards every acknowledged write is in the database exactly once,
    sessions replicated before the kill still work, and an order-events
    subscriber opened before the failover gets events after it."""
    dbpath = str(tmp_path / "bazaar.db")
    url = ha.url(2, ":%s@" % quote(PASSWORD))
    srv = Bazaar("sqlite://" + dbpath, url, "--log-level", "info")
    stream = None
    try:
        load = Load(srv.url)
        old_port = ha.master.port
        assert ha.master.cli("-n", "2", "--scan", "--pattern", "bazaar:session:*"), "sessions are not on the master"
        watcher = load.users[0]
        stream = EventStream(load.port, watcher)
        time.sleep(0.5)                  # the subscription reaches Redis
        load.start()
        time.sleep(2.5)
        # the sessions made in setup are on the replica before the kill
        assert ha.replicated(), "the replica did not catch up"
        events_before = len(stream.events)
        t_kill = time.monotonic()
        ha.master.kill()
        assert wait_for(lambda: all(s.master_port(MASTER) == ha.replica.port for s in ha.sentinels), 30, 0.2), \
            "the sentinels did not promote the replica"
        t_promoted = time.monotonic()
        took = wait_ready(srv, 20)
        t_ready = time.monotonic()
        time.sleep(3)                    # load on the new master
        # bazaar moved every connection: no request after readyz said 200
        # failed, and the new master holds fresh sessions
        late = [(w, s) for t0, _, s, w in list(load.latencies) if t0 > t_ready + 0.5 and s is not None and s >= 500]
        assert not late, "5xx after the failover was over: %s" % late[:10]
        # a session from before the failover (replicated) still works
        c = Conn(load.port)
        r = c.request("GET", "/v1/me", None, {"Authorization": "Bearer " + watcher.token})
        assert r.status == 200, (r.status, r.body)
        c.close()
        with open(srv.logpath, errors="replace") as f:
            located = [l for l in f if "master located by sentinel" in l]
        assert len(located) >= 2 and '"port":%d,' % ha.replica.port in located[-1], located
        # the subscriber follows: a paid order of the watcher (made by the
        # load on the new master) reaches the stream opened before the kill
        assert events_before > 0, "no order event reached the subscriber before the failover"
        n_at_ready = len(stream.events)
        assert wait_for(lambda: len(stream.events) > n_at_ready, 15, 0.2), \
            "no order event reached the subscriber after the failover"
        finish("Redis Sentinel failover (master SIGKILLed)", load, LiteQ(dbpath),
               "promoted %.1f s after the kill; ready %.1f s after that; old master :%d" %
               (t_promoted - t_kill, took, old_port))
        assert_no_secret(srv, PASSWORD)
        s = load.summary()
        print("\nsentinel failover: promoted %.1f s after the kill, bazaar ready %.1f s later; %d requests, "
              "%d acked writes, %d settled later, 503: %d, 500: %d, max latency %.2f s, 5xx codes %s" %
              (t_promoted - t_kill, took, s["requests"], s["acked_writes"], load.unknown, s["s503"], s["s500"],
               s["max_latency"], load.codes))
    finally:
        if stream:
            stream.close()
        srv.close()


def test_password_not_in_help():
    # --help shows the table's default, never the environment's value
    url = "redis://app:%s@127.0.0.1:1/0" % quote(ACL_SECRET)
    r = subprocess.run([BAZAAR, "--help"], capture_output=True, text=True, timeout=10,
                       env={"PATH": "/usr/bin:/bin", "BAZAAR_CACHE": url})
    assert r.returncode == 0 and "--cache" in r.stdout + r.stderr
    assert ACL_SECRET not in r.stdout + r.stderr and quote(ACL_SECRET) not in r.stdout + r.stderr

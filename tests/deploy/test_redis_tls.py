"""rediss:// — Redis over TLS (issue #12 part 3): a redis-server with only
its --tls-port open and a certificate from a CA made here with openssl.
bazaar verifies the server against the CA named by ?ca=PATH (or, without
it, the system store, which SSL_CERT_FILE overrides), and refuses a server
whose certificate another CA signed or that names another host."""
import os
import subprocess
import time
import uuid

import pytest

from common import readyz
from harness import BAZAAR, Bazaar, Conn, wait_for
from redis_support import Certs, EventStream, Node, end_to_end, quote

PASSWORD = "tls-Pw@9:z"


@pytest.fixture(scope="module")
def certs():
    c = Certs()
    yield c
    c.close()


@pytest.fixture(scope="module")
def other_ca():
    c = Certs()
    yield c
    c.close()


@pytest.fixture(scope="module")
def tls_redis(certs):
    n = Node(PASSWORD, tls=certs)
    yield n
    n.close()


@pytest.fixture
def db(tmp_path):
    return "sqlite://" + str(tmp_path / "bazaar.db")


def url(node, ca=None, host="127.0.0.1", n=0):
    u = "rediss://:%s@%s:%d/%d" % (quote(PASSWORD), host, node.port, n)
    return u + ("?ca=" + quote(ca) if ca else "")


def conns_received(node):
    for line in node.cli("info", "stats").splitlines():
        if line.startswith("total_connections_received:"):
            return int(line.split(":")[1])
    return -1


def test_redis_server_speaks_tls_only(tls_redis, certs):
    # the fixture is what it claims: TLS answers, plain TCP does not
    assert tls_redis.cli("ping") == "PONG"
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(tls_redis.port), "ping"], capture_output=True,
                       text=True, timeout=5, env=dict(os.environ, REDISCLI_AUTH=PASSWORD))
    assert "PONG" not in r.stdout


def test_rediss_with_ca_end_to_end(tls_redis, certs, db):
    srv = Bazaar(db, url(tls_redis, certs.ca, n=5), "--log-level", "info")
    stream = None
    try:
        assert readyz(srv)[0] == 200
        end_to_end(srv, tls_redis, 5)
        # idle pipelined connections are not taken for dead (a TLS 1.3
        # session ticket waiting on the socket is no reason to reconnect)
        c = Conn(srv.port)
        before = conns_received(tls_redis)
        for _ in range(20):
            r = c.request("GET", "/readyz")
            assert r.status == 200, (r.status, r.body)
            time.sleep(0.01)
        c.close()
        assert conns_received(tls_redis) - before <= 2, "connections were replaced while idle"
        # pub/sub over TLS: an order paid reaches its owner's event stream
        c = Conn(srv.port)
        email = "t-%s@example.com" % uuid.uuid4().hex[:8]
        assert c.request("POST", "/v1/users", {"email": email, "name": "t", "password": "correct horse battery"}).status == 201
        r = c.request("POST", "/v1/sessions", {"email": email, "password": "correct horse battery"})
        tok = r.json()["token"]
        auth = {"Authorization": "Bearer " + tok}
        uid = c.request("GET", "/v1/me", None, auth).json()["id"]

        class U:
            id, token = uid, tok
        stream = EventStream(srv.port, U)
        time.sleep(0.5)
        acct = c.request("POST", "/v1/accounts", {"currency": "USD"}, auth).json()["id"]
        assert c.request("POST", "/v1/accounts/%d/deposits" % acct, {"amount_cents": 10000},
                         dict(auth, **{"Idempotency-Key": uuid.uuid4().hex})).status == 201
        item = c.request("POST", "/v1/items", {"sku": "t-" + uuid.uuid4().hex[:6], "name": "x", "price_cents": 100,
                                               "currency": "USD", "stock": 5}, auth).json()["id"]
        r = c.request("POST", "/v1/orders", {"account_id": acct, "lines": [{"item_id": item, "quantity": 1}]},
                      dict(auth, **{"Idempotency-Key": uuid.uuid4().hex}))
        assert r.status == 201, (r.status, r.body)
        r = c.request("POST", "/v1/orders/%d/pay" % r.json()["id"], None,
                      dict(auth, **{"Idempotency-Key": uuid.uuid4().hex}))
        assert r.status in (200, 201), (r.status, r.body)
        c.close()
        assert wait_for(lambda: len(stream.events) > 0, 10, 0.1), "no order event over the TLS subscriber"
        time.sleep(0.2)  # a loop writes its batched log lines within 100 ms (BZ_LOG_HOLD_NS)
        assert PASSWORD not in srv.log() and quote(PASSWORD) not in srv.log()
    finally:
        if stream:
            stream.close()
        srv.close()


def test_rediss_system_store_via_ssl_cert_file(tls_redis, certs, db, monkeypatch):
    # no ?ca=: the system store, pointed at our CA by SSL_CERT_FILE
    monkeypatch.setenv("SSL_CERT_FILE", certs.ca)
    srv = Bazaar(db, url(tls_redis, host="localhost"))
    try:
        assert readyz(srv)[0] == 200
        end_to_end(srv, tls_redis, 0)
    finally:
        srv.close()


@pytest.mark.parametrize("case", ["wrong-ca", "system-store", "wrong-name"])
def test_rediss_refuses_unverified_server(tls_redis, certs, other_ca, db, case, tmp_path):
    if case == "wrong-ca":
        u, says = url(tls_redis, other_ca.ca), "certificate verification failed"
    elif case == "system-store":        # our CA is in no system store
        u, says = url(tls_redis), "certificate verification failed"
    else:                               # the certificate names 127.0.0.1 and localhost only
        u, says = url(tls_redis, certs.ca, host="127.0.0.2"), "certificate verification failed"
    srv = Bazaar(db, u)
    try:
        st, body = readyz(srv)
        assert st == 503 and b'"cache":"unavailable"' in body, (st, body)
        assert wait_for(lambda: says in srv.log(), 5), srv.log()
    finally:
        srv.close()


def test_rediss_unreadable_ca_is_a_flag_error(db, tmp_path):
    missing = str(tmp_path / "no-such-ca.pem")
    r = subprocess.run([BAZAAR, "serve", "--db", db, "--cache", "rediss://127.0.0.1:1/0?ca=" + missing],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--cache" in r.stderr and "CA file" in r.stderr, (r.returncode, r.stderr)
    r = subprocess.run([BAZAAR, "serve", "--db", db, "--cache", "rediss://127.0.0.1:1/0?verify=no"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "ca=PATH" in r.stderr, (r.returncode, r.stderr)

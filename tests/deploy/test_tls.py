"""TLS on --http-addr and --grpc-addr (--tls-cert/--tls-key), driven only by
clients not written here: curl (HTTP/1.1 and HTTP/2 by ALPN), openssl
s_client (ALPN, protocol floor, cipher preference, session resumption),
python3-grpcio's secure channel (bazaar.v1 and grpc.health.v1), requests
(the REST basics) and Python's ssl module (keep-alive connections across a
SIGHUP reload, raw handshakes cut at the read-header timeout)."""
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time

import grpc
import pytest
import requests

from google.protobuf.internal.encoder import _VarintBytes  # protobuf's own varint writer

import harness
from tls_support import TlsBazaar, curl, make_pki, peer_cn, read_response, s_client

from grpc_stubs import health_pb2, pb, unary

U = "/bazaar.v1.UserService/"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def srv(pki):
    s = TlsBazaar(pki)
    yield s
    s.close()


def channel(s, port):
    with open(s.ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    ch = grpc.secure_channel("localhost:%d" % port, creds)
    grpc.channel_ready_future(ch).result(timeout=10)
    return ch


# ---- flags ----------------------------------------------------------------------------------


def run_flags(*flags):
    p = subprocess.run([harness.BAZAAR, "serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "off", "--db",
                        "sqlite:///nonexistent-dir/x.db"] + list(flags), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    return p.returncode, p.stderr.decode()


def test_bad_tls_flags_exit_2_with_one_line_naming_the_flag(pki, tmp_path):
    one, key = os.path.join(pki, "one.pem"), os.path.join(pki, "one.key")
    rc, err = run_flags("--tls-cert", one)
    assert rc == 2 and err.count("\n") == 1 and "--tls-cert needs --tls-key" in err, err
    rc, err = run_flags("--tls-key", key)
    assert rc == 2 and err.count("\n") == 1 and "--tls-key needs --tls-cert" in err, err
    rc, err = run_flags("--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", key)
    assert rc == 2 and err.count("\n") == 1 and "--tls-cert" in err and "cannot read" in err, err
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    rc, err = run_flags("--tls-cert", str(junk), "--tls-key", key)
    assert rc == 2 and err.count("\n") == 1 and "--tls-cert" in err and "certificate" in err, err
    # a key that is not the certificate's
    rc, err = run_flags("--tls-cert", one, "--tls-key", os.path.join(pki, "two.key"))
    assert rc == 2 and err.count("\n") == 1 and "--tls-key" in err and "mismatch" in err, err
    # the environment twins
    p = subprocess.run([harness.BAZAAR, "serve", "--http-addr", "127.0.0.1:0"], env=dict(os.environ,
                       BAZAAR_TLS_CERT=one), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    assert p.returncode == 2 and b"--tls-cert needs --tls-key" in p.stderr


# ---- clients ----------------------------------------------------------------------------------


def test_curl_https_http11_and_http2_by_alpn(srv):
    for flag, want in (("--http1.1", "1.1"), ("--http2", "2")):
        rc, out, err = curl(flag, "--cacert", srv.ca, "-w", " %{http_version}", srv.url + "/healthz")
        assert rc == 0 and out == "ok " + want, (flag, out, err)
    # the verbose trace shows what ALPN agreed
    rc, out, err = curl("-v", "--http2", "--cacert", srv.ca, srv.url + "/healthz")
    assert rc == 0 and "ALPN: server accepted h2" in err, err
    rc, out, err = curl("-v", "--http1.1", "--cacert", srv.ca, srv.url + "/healthz")
    assert rc == 0 and "ALPN: server accepted http/1.1" in err, err
    # a client that does not trust the CA is refused by its own verification
    rc, out, err = curl(srv.url + "/healthz")
    assert rc == 60, (rc, err)


def test_s_client_alpn_version_floor_and_cipher_preference(srv):
    for port in (srv.port, srv.gport):
        rc, out = s_client(port, "-alpn", "h2", "-CAfile", srv.ca)
        assert "ALPN protocol: h2" in out and "Verify return code: 0 (ok)" in out, out
    rc, out = s_client(srv.port, "-alpn", "http/1.1", "-CAfile", srv.ca)
    assert "ALPN protocol: http/1.1" in out, out
    rc, out = s_client(srv.port, "-alpn", "spdy/3")
    assert "No ALPN negotiated" in out, out
    # TLS 1.1 (and below) is refused
    rc, out = s_client(srv.port, "-tls1_1")
    assert rc != 0 and "Cipher is (NONE)" in out, out
    rc, out = s_client(srv.port, "-tls1_2")
    assert "Protocol  : TLSv1.2" in out and "ECDHE" in out, out
    # server preference: the client lists AES-128 first, the server picks its own first choice
    rc, out = s_client(srv.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384")
    assert "Cipher is ECDHE-ECDSA-AES256-GCM-SHA384" in out, out
    rc, out = s_client(srv.port, "-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384")
    assert "Cipher is TLS_AES_256_GCM_SHA384" in out, out


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_session_resumption_is_reused(srv, tmp_path, version):
    sess = str(tmp_path / "sess")
    # a request makes s_client read the server's NewSessionTicket before it saves the session
    req = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    rc, out = s_client(srv.port, version, "-CAfile", srv.ca, "-sess_out", sess, "-ign_eof", stdin=req)
    assert "New, TLSv1." in out and "HTTP/1.1 200" in out, out
    rc, out = s_client(srv.port, version, "-CAfile", srv.ca, "-sess_in", sess, "-ign_eof", stdin=req)
    assert "Reused, TLSv1." in out and "HTTP/1.1 200" in out, out


def test_grpc_secure_channel_on_both_addresses(srv):
    for port in (srv.gport, srv.port):
        ch = channel(srv, port)
        u = unary(ch, U + "CreateUser", None, pb.User)(
            pb.CreateUserRequest(email="tls%d@example.com" % port, name="Tia", password="password1"), timeout=10)
        assert u.id > 0 and u.email == "tls%d@example.com" % port
        got = unary(ch, U + "GetUser", None, pb.User)(pb.GetUserRequest(id=u.id), timeout=5)
        assert got.name == "Tia"
        check = unary(ch, "/grpc.health.v1.Health/Check", None, health_pb2.HealthCheckResponse)
        assert check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == 1  # SERVING
        ch.close()


def test_rest_contract_basics_over_tls(srv, tmp_path):
    sess = requests.Session()  # keep-alive; verify per request (the environment's CA bundle would win over sess.verify)
    v = srv.ca
    r = sess.post(srv.url + "/v1/users", json={"email": "rest.tls@example.com", "name": "Rae", "password": "password1"},
                  verify=v)
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    r = sess.post(srv.url + "/v1/sessions", json={"email": "rest.tls@example.com", "password": "password1"}, verify=v)
    assert r.status_code == 201, r.text
    tok = r.json()["token"]
    r = sess.get(srv.url + "/v1/me", headers={"Authorization": "Bearer " + tok}, verify=v)
    assert r.status_code == 200 and r.json()["id"] == uid and r.json()["email"] == "rest.tls@example.com"
    r = sess.get(srv.url + "/v1/me", verify=v)
    assert r.status_code == 401 and r.headers["Content-Type"].startswith("application/problem+json")
    # the same over HTTP/2 (curl, ALPN h2), with a body larger than a TLS record and a flow-control window
    rc, out, err = curl("--http2", "--cacert", srv.ca, "-H", "Authorization: Bearer " + tok, "-w", " %{http_version}",
                        srv.url + "/v1/me")
    assert rc == 0 and out.endswith(" 2") and json.loads(out[:-2])["id"] == uid, (out, err)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"email": "big@example.com", "name": "x" * 300000, "password": "password1"}))
    rc, out, err = curl("--http2", "--cacert", srv.ca, "-H", "Content-Type: application/json", "--data-binary",
                        "@" + str(big),
                        "-w", " %{http_code} %{http_version}", srv.url + "/v1/users")
    assert rc == 0 and out.endswith(" 400 2") and "name" in out, (out[-300:], err)


def test_h2_over_tls_is_alpn_only(srv):
    # Upgrade: h2c is not offered over TLS: the request is answered as HTTP/1.1
    s = srv.connect(alpn=["http/1.1"])
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
              b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
    status, body = read_response(s)
    assert status == 200 and body == b"ok"
    s.close()
    # the prior-knowledge preface without ALPN h2 is not HTTP/2 either
    s = srv.connect(alpn=["http/1.1"])
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    status, _ = read_response(s)
    assert status is not None and 400 <= status < 600
    s.close()
    # ALPN h2 and many concurrent streams on few connections (h2load, a real HTTP/2 client)
    p = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "16", srv.url.replace("localhost", "127.0.0.1")
                        + "/healthz"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = p.stdout.decode()
    assert "Application protocol: h2" in out and "2000 succeeded, 0 failed" in out, out


# ---- reload -------------------------------------------------------------------------------------


def test_sighup_reloads_the_pair_and_keeps_connections(pki):
    s = TlsBazaar(pki)
    try:
        old = s.connect()
        assert peer_cn(old) == "bazaar-one"
        assert s.get("/healthz", old) == (200, b"ok")
        ch = channel(s, s.gport)  # an HTTP/2 connection opened before the reload
        check = unary(ch, "/grpc.health.v1.Health/Check", None, health_pb2.HealthCheckResponse)
        assert check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == 1
        # a second pair, then SIGHUP
        for src, dst in (("two.pem", s.cert), ("two.key", s.key)):
            with open(os.path.join(pki, src), "rb") as f, open(dst + ".new", "wb") as g:
                g.write(f.read())
            os.rename(dst + ".new", dst)
        s.signal(signal.SIGHUP)
        assert harness.wait_for(lambda: "tls: certificate reloaded" in s.log(), 10), s.log()
        new = s.connect()
        assert peer_cn(new) == "bazaar-two"
        assert s.get("/healthz", new) == (200, b"ok")
        new.close()
        # the connections from before carry on, on the old certificate
        assert s.get("/healthz", old) == (200, b"ok") and peer_cn(old) == "bazaar-one"
        assert check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == 1
        # a corrupt file: logged, the current pair kept, the server up
        with open(s.cert, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
        s.signal(signal.SIGHUP)
        assert harness.wait_for(lambda: "tls: reload failed" in s.log(), 10), s.log()
        lines = [json.loads(ln) for ln in s.log().splitlines() if "tls: reload failed" in ln]
        assert len(lines) == 1 and lines[0]["level"] == "error" and s.cert in lines[0]["error"], lines
        assert s.alive()
        new = s.connect()
        assert peer_cn(new) == "bazaar-two" and s.get("/healthz", new) == (200, b"ok")
        new.close()
        assert s.get("/healthz", old) == (200, b"ok")
        old.close()
        ch.close()
    finally:
        s.close()


def test_sighup_reload_is_bracketed_for_systemd(pki, tmp_path):
    """Under systemd (NOTIFY_SOCKET) a reload says RELOADING=1 first and
    READY=1 when done — also when the new files are refused."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    s = TlsBazaar(pki, env=dict(os.environ, NOTIFY_SOCKET=path))
    try:
        def until(want):
            seen = []
            while True:
                m = sock.recv(4096).decode()
                seen.append(m)
                if want in m.split("\n"):
                    return seen
        until("READY=1")
        for src, dst in (("two.pem", s.cert), ("two.key", s.key)):
            with open(os.path.join(pki, src), "rb") as f, open(dst + ".new", "wb") as g:
                g.write(f.read())
            os.rename(dst + ".new", dst)
        s.signal(signal.SIGHUP)
        seen = until("READY=1")
        assert "RELOADING=1" in seen[0].split("\n") and "MONOTONIC_USEC=" in seen[0], seen
        # the log is written by its own thread: the line may trail READY=1
        assert harness.wait_for(lambda: "tls: certificate reloaded" in s.log(), 10), s.log()
        with open(s.cert, "w") as f:
            f.write("not a certificate\n")
        s.signal(signal.SIGHUP)
        seen = until("READY=1")
        assert "RELOADING=1" in seen[0].split("\n"), seen
        assert harness.wait_for(lambda: "tls: reload failed" in s.log(), 10), s.log()
        assert s.alive()
    finally:
        s.close()
        sock.close()


# ---- handshakes that never finish ------------------------------------------------------------------


def client_hello(s):
    """The bytes of a real ClientHello (Python's ssl through memory BIOs)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = s.context().wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def closed_after(sock, limit, t0=None):
    """Seconds from t0 (default: now) until the server closed sock (reading
    whatever it sent), or None if it is still open after limit seconds."""
    t0 = t0 or time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        return None
    return time.monotonic() - t0


def test_unfinished_handshakes_are_cut_at_read_header_timeout(pki):
    s = TlsBazaar(pki, "--read-header-timeout", "1s")
    try:
        hello = client_hello(s)
        silent = socket.create_connection(("127.0.0.1", s.port))
        half = socket.create_connection(("127.0.0.1", s.port))
        half.sendall(hello[: len(hello) // 2])
        gsilent = socket.create_connection(("127.0.0.1", s.gport))
        quiet = s.connect()  # a whole handshake, then no request
        t0 = time.monotonic()
        # others are served meanwhile
        served = []

        def others():
            for _ in range(10):
                served.append(s.get("/healthz")[0])
        th = threading.Thread(target=others)
        th.start()
        times = [closed_after(x, 6.0, t0) for x in (silent, half, gsilent, quiet)]
        th.join(20)
        for x in (silent, half, gsilent, quiet):
            x.close()
        elapsed = time.monotonic() - t0
        assert all(t is not None for t in times), times
        assert 0.8 <= min(times) and max(times) <= 1.0 + 2.5 and elapsed < 4.0, times
        assert served == [200] * 10, served
        assert s.alive()
    finally:
        s.close()


def test_plain_http_on_the_tls_port_gets_a_plain_400(srv):
    c = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    c.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    got = c.makefile("rb").read()  # to the server's close
    c.close()
    assert got.startswith(b"HTTP/1.0 400 Bad Request\r\n") and b"HTTP request to an HTTPS server" in got, got


def test_garbage_instead_of_client_hello_is_closed_cleanly(srv):
    for junk in (os.urandom(4096), b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"\x16\x03\x01\xff\xff" + b"A" * 2000):
        c = socket.create_connection(("127.0.0.1", srv.port))
        c.sendall(junk)
        t = closed_after(c, 3.0)
        c.close()
        assert t is not None and t < 3.0, junk[:16]
    assert srv.alive() and srv.get("/healthz") == (200, b"ok")


def test_pipelined_requests_buffered_inside_tls_are_all_served(srv):
    # 64 requests in one write: OpenSSL reads ahead several records at once,
    # so the server must drain what the session holds before waiting on the fd.
    s = srv.connect()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n" * 64)
    f = s.makefile("rb")
    got = [read_response(s, f) for _ in range(64)]
    assert got == [(200, b"ok")] * 64
    assert srv.get("/healthz", s) == (200, b"ok")
    s.close()


_varint = _VarintBytes


def _field(num, payload):
    """A length-delimited protobuf field."""
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def test_grpc_large_streams_both_ways_over_tls(srv):
    # grpc.testing.TestService with hand-encoded messages (no generated
    # code needed): megabytes each way through TLS records, HTTP/2 flow
    # control and OpenSSL's buffers.
    ch = channel(srv, srv.gport)
    sizes = [300000, 1, 700000, 65536, 1000000]
    req = b"".join(_field(2, b"\x08" + _varint(n)) for n in sizes)  # response_parameters {size}
    out = ch.unary_stream("/grpc.testing.TestService/StreamingOutputCall")(req, timeout=30)
    got = []
    for msg in out:  # StreamingOutputCallResponse {payload {body}}: the body is the tail
        got.append(len(msg))
    assert len(got) == len(sizes) and all(g >= n for g, n in zip(got, sizes)), (got, sizes)
    body = os.urandom(262144)
    msgs = [_field(1, _field(2, body)) for _ in range(8)]  # StreamingInputCallRequest {payload {body}}
    resp = ch.stream_unary("/grpc.testing.TestService/StreamingInputCall")(iter(msgs), timeout=30)
    assert resp == b"\x08" + _varint(8 * len(body))  # aggregated_payload_size
    ch.close()


def test_sighup_without_tls_is_ignored(tmp_path):
    b = harness.Bazaar("sqlite://" + str(tmp_path / "db.sqlite"), "memory", "--log-level", "info", logdir=str(tmp_path))
    try:
        b.signal(signal.SIGHUP)
        assert harness.wait_for(lambda: "SIGHUP ignored" in b.log(), 10), b.log()
        assert b.proc.poll() is None and harness.get(b.url + "/healthz")[0] == 200
    finally:
        b.close()

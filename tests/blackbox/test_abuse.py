"""HTTP-layer abuse limits (API.md §1 --max-conns, §10): each test sends the
abusive traffic and shows that other clients are still served.

  * --max-conns: past the cap the server stops accepting (the kernel's
    backlog holds the rest) and never holds more sockets than the cap;
  * pipelined requests whose responses go unread: the connection stops
    being read and served once ~1 MiB of output is pending;
  * 100 Continue never overtakes queued pipelined responses;
  * many idle keep-alive and slowloris connections held at once while
    normal clients see normal latency (10,000 + 2,000; BAZAAR_SOAK_CONNS and
    BAZAAR_SOAK_SLOW change the counts).
"""
import os
import resource
import socket
import subprocess
import threading
import time

import pytest

from harness import BUILD, free_port, start_testd
from rawhttp import Conn, connect
from test_serve import stop


def server_sockets(pid):
    """Sockets the process holds now, from /proc/PID/fd."""
    n = 0
    d = "/proc/%d/fd" % pid
    for fd in os.listdir(d):
        try:
            if os.readlink(os.path.join(d, fd)).startswith("socket:"):
                n += 1
        except OSError:
            pass  # closed while we looked
    return n


class SocketWatch:
    """Samples a process's socket count every few ms; keeps the maximum."""

    def __init__(self, pid):
        self.pid = pid
        self.max = 0
        self.stop_ = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop_.is_set():
            self.max = max(self.max, server_sockets(self.pid))
            time.sleep(0.002)

    def stop(self):
        self.stop_.set()
        self.t.join()
        return self.max


def wait_for(cond, timeout=5.0, step=0.01):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def get(port, path="/healthz", timeout=5):
    c = Conn(port, timeout)
    c.send(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    st, _, body = c.response()
    c.close()
    return st, body


# ---- --max-conns ---------------------------------------------------------------------

def test_max_conns_pauses_accept_and_resumes_when_one_closes():
    cap = 20
    s = start_testd("--max-conns", str(cap), "--read-header-timeout", "60s", "--idle-timeout", "60s")
    try:
        pid = s.proc.pid
        base = server_sockets(pid)  # the listening sockets
        watch = SocketWatch(pid)
        first = [connect(s.port) for _ in range(cap)]
        assert wait_for(lambda: server_sockets(pid) == base + cap)
        # Twenty more: the kernel completes their handshakes (backlog), but
        # the server does not take them.
        second = [connect(s.port) for _ in range(cap)]
        time.sleep(0.5)
        assert server_sockets(pid) == base + cap
        # The 41st client asks for something: it waits in the backlog.
        late = Conn(s.port, timeout=10)
        late.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        late.s.settimeout(0.7)
        with pytest.raises(socket.timeout):
            late.s.recv(1)
        # Some close (all the accepted ones, and a few of the waiting ones,
        # which the server accepts, sees closed and lets go at once).
        for c in first + second[:5]:
            c.close()
        st, _, body = late.response()
        assert (st, body) == (200, b"ok")
        late.close()
        assert wait_for(lambda: server_sockets(pid) <= base + cap)
        peak = watch.stop()
        assert peak <= base + cap, "server held %d sockets, cap %d" % (peak - base, cap)
        for c in second[5:]:
            c.close()
        # Once they are gone, new clients are served at once.
        assert wait_for(lambda: server_sockets(pid) == base)
        assert get(s.port) == (200, b"ok")
    finally:
        s.stop()


def test_max_conns_counts_both_addresses_and_http2(tmp_path):
    """bazaar serve: one cap over --http-addr and --grpc-addr, HTTP/1.1
    and HTTP/2 connections alike."""
    cap = 6
    hport, gport = free_port(), free_port()
    argv = [os.path.join(BUILD, "bazaar"), "serve", "--http-addr", "127.0.0.1:%d" % hport,
            "--grpc-addr", "127.0.0.1:%d" % gport, "--threads", "2", "--log-format", "json",
            "--db", "sqlite://%s" % (tmp_path / "b.db"), "--max-conns", str(cap),
            "--read-header-timeout", "60s"]
    env = dict(os.environ, BAZAAR_MAX_CONNS="1")  # the flag wins over its twin
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        assert wait_for(lambda: get_ok(hport), timeout=20)
        time.sleep(0.2)
        base = server_sockets(p.pid)
        held = []
        for i in range(cap):
            c = connect(gport if i % 2 else hport)
            if i % 3 == 0:  # some speak HTTP/2 (prior knowledge)
                c.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            held.append(c)
        assert wait_for(lambda: server_sockets(p.pid) == base + cap), (base, server_sockets(p.pid))
        extra = Conn(hport, timeout=10)
        extra.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        assert server_sockets(p.pid) == base + cap
        held.pop().close()
        st, _, body = extra.response()
        assert (st, body) == (200, b"ok")
        extra.close()
        for c in held:
            c.close()
    finally:
        assert stop(p) == 0


def get_ok(port):
    try:
        return get(port, timeout=0.5)[0] == 200
    except OSError:
        return False


# ---- pipelined responses that are not read -----------------------------------------------

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    return 0


@pytest.mark.parametrize("size,count", [(1024, 30000), (32768, 3000)])
def test_unread_pipelined_responses_stop_the_connection_not_the_server(size, count):
    s = start_testd("--write-timeout", "60s")
    try:
        pid = s.proc.pid
        assert get(s.port, "/pad?n=%d&t=warm" % size)[0] == 200
        rss0 = rss_kib(pid)
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # the kernel holds little for us
        c.connect(("127.0.0.1", s.port))
        reqs = b"".join(b"GET /pad?n=%d&t=%06d HTTP/1.1\r\nHost:x\r\n\r\n" % (size, i) for i in range(count))
        sent = threading.Thread(target=c.sendall, args=(reqs,), daemon=True)
        sent.start()
        # Let the server do what it will with the requests it can read.
        peak = rss0
        for _ in range(20):
            time.sleep(0.1)
            peak = max(peak, rss_kib(pid))
        # Other clients are served meanwhile, promptly.
        t0 = time.time()
        assert get(s.port) == (200, b"ok")
        assert time.time() - t0 < 1.0
        peak = max(peak, rss_kib(pid))
        assert peak - rss0 < 8 * 1024, "RSS grew by %d KiB" % (peak - rss0)
        # Now read: every response arrives, in order.
        conn = Conn.__new__(Conn)
        conn.s, conn.buf, conn.timeout = c, b"", 10
        for i in range(count):
            st, _, body = conn.response()
            assert st == 200 and len(body) == size and body.startswith(b"%06d." % i), (i, body[:20])
        sent.join(10)
        assert not sent.is_alive()
        c.close()
    finally:
        s.stop()


# ---- 100 Continue and pipelining -------------------------------------------------------

def test_100_continue_never_overtakes_queued_pipelined_responses():
    s = start_testd()
    try:
        c = Conn(s.port)
        # A GET and, in the same segment, a POST that waits for 100 Continue.
        c.send(b"GET /pad?n=3000&t=first HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        # The first thing on the wire is the GET's response.
        st, _, body = c.response()
        assert st == 200 and body.startswith(b"first.") and len(body) == 3000
        # Then (only now) 100 Continue; the client sends the body.
        st, _, _ = c.response()
        assert st == 100
        c.send(b"hello")
        st, _, body = c.response()
        assert (st, body) == (200, b"hello")
        # A body sent with the head: no 100 needed; the order holds either way.
        c.send(b"GET /pad?n=10&t=a HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc"
               b"GET /pad?n=10&t=b HTTP/1.1\r\nHost: x\r\n\r\n")
        got = []
        while len(got) < 3:
            st, _, body = c.response()
            if st != 100:
                got.append((st, body))
        assert got == [(200, b"a........."), (200, b"abc"), (200, b"b.........")]
        c.close()
    finally:
        s.stop()


# ---- many idle keep-alive and slowloris connections at once ------------------------------

# The full 10,000 + 2,000 takes ~8 s on the 2-core box, so it runs in
# `make test`; BAZAAR_SOAK_CONNS / BAZAAR_SOAK_SLOW change the counts, and
# a hard RLIMIT_NOFILE too low for them scales both down (said on stdout).
SOAK_CONNS = int(os.environ.get("BAZAAR_SOAK_CONNS", "10000"))
SOAK_SLOW = int(os.environ.get("BAZAAR_SOAK_SLOW", "2000"))


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(max(soft, want), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return (soft, hard), new


def timed_get(port, path="/healthz"):
    t0 = time.perf_counter()
    st, body = get(port, path)
    return st, time.perf_counter() - t0


def test_keepalive_and_slowloris_hordes_do_not_slow_normal_clients():
    n_ka, n_slow = SOAK_CONNS, SOAK_SLOW
    old, got = raise_nofile(n_ka + n_slow + 400)
    if got < n_ka + n_slow + 400:
        k = max(0.0, (got - 400) / (n_ka + n_slow))
        n_ka, n_slow = int(n_ka * k), int(n_slow * k)
        print("RLIMIT_NOFILE hard limit %d: holding %d + %d instead" % (got, n_ka, n_slow))
    assert n_ka >= 100 and n_slow >= 20, "RLIMIT_NOFILE too low for this test"
    need = n_ka + n_slow + 200
    held, slow = [], []
    # The server inherits the raised limit.
    s = start_testd("--max-conns", str(need), "--read-header-timeout", "120s", "--idle-timeout", "120s")
    stop_drip = threading.Event()
    try:
        pid = s.proc.pid
        base = server_sockets(pid)
        before = sorted(timed_get(s.port)[1] for _ in range(50))
        # Idle keep-alive connections: each made one request, then idles.
        for i in range(n_ka):
            c = connect(s.port, timeout=10)
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append(c)
        for c in held:
            b = b""
            while not b.endswith(b"ok"):
                b += c.recv(4096)
            assert b.startswith(b"HTTP/1.1 200")
        # Slowloris: a head that never ends, a byte every 2 seconds.
        for i in range(n_slow):
            c = connect(s.port, timeout=10)
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(c)

        def drip():
            while not stop_drip.wait(2.0):
                for c in slow:
                    try:
                        c.send(b"z")
                    except OSError:
                        pass
        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        assert wait_for(lambda: server_sockets(pid) >= base + n_ka + n_slow, timeout=30), \
            (server_sockets(pid) - base, n_ka + n_slow)
        # Normal clients, new connections and keep-alive, while both hordes
        # are held and the slowloris drip goes on for a few rounds.
        lat = []
        t_end = time.time() + 5
        while time.time() < t_end:
            st, dt = timed_get(s.port)
            assert st == 200
            lat.append(dt)
        ka = Conn(s.port)
        for _ in range(200):
            t0 = time.perf_counter()
            ka.send(b"GET /pad?n=1024 HTTP/1.1\r\nHost: x\r\n\r\n")
            st, _, body = ka.response()
            lat.append(time.perf_counter() - t0)
            assert st == 200 and len(body) == 1024
        ka.close()
        lat.sort()
        p50, p99, worst = lat[len(lat) // 2], lat[len(lat) * 99 // 100], lat[-1]
        print("held %d keep-alive + %d slowloris; server sockets %d, RSS %d KiB; "
              "normal clients: %d requests, p50 %.2f ms (%.2f ms before), p99 %.2f ms, max %.2f ms"
              % (n_ka, n_slow, server_sockets(pid) - base, rss_kib(pid), len(lat), p50 * 1e3,
                 before[len(before) // 2] * 1e3, p99 * 1e3, worst * 1e3))
        assert p50 < 0.05 and p99 < 0.25 and worst < 1.0
        # Both hordes are still there, and the keep-alive ones still work.
        assert server_sockets(pid) >= base + n_ka + n_slow
        for c in held[:: max(1, n_ka // 100)]:
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            b = b""
            while not b.endswith(b"ok"):
                b += c.recv(4096)
            assert b.startswith(b"HTTP/1.1 200")
    finally:
        stop_drip.set()
        for c in held + slow:
            c.close()
        s.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, old)

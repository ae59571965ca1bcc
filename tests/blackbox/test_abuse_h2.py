"""Hostile HTTP/2, gRPC and TLS peers (issue 20, "Hostile peers"): memory
and loop time are budgets, not consequences of what a peer sends.

Each case runs `bazaar serve --threads 1`, starts the benign client
(abuse_benign.py, its own process: GET /healthz and a gRPC health check
every 50 ms), attacks for ATTACK_S seconds (BAZAAR_ABUSE_SECONDS, default
4 — shorter than the issue's 10 s; every case below failed on the old code
within 4 s), stops, and asserts:

  * server RSS (/proc/PID/status VmRSS): peak within +64 MiB of idle, and
    within +32 MiB of idle 5 s after the attack;
  * the benign client: p99 under 100 ms and no errors;
  * where the fix is a verdict on the attacker (GOAWAY ENHANCE_YOUR_CALM,
    REFUSED_STREAM), that it came.

Raw frames come from python3-hyperframe/hpack; TLS ClientHellos from
Python's ssl over memory BIOs.  Each test prints its before/peak/after
line (pytest -s shows them)."""
import json
import os
import resource
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import zlib

import hpack
import pytest
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, RstStreamFrame,
                              SettingsFrame, WindowUpdateFrame)

from harness import BUILD, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
ATTACK_S = float(os.environ.get("BAZAAR_ABUSE_SECONDS", "4"))
MiB = 1 << 20
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENHANCE_YOUR_CALM = 0xB
REFUSED_STREAM = 0x7


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Bazaar:
    """bazaar serve --threads 1 on two free loopback ports, SQLite in a temp dir."""

    def __init__(self, *flags, tls=None):
        self.dir = tempfile.mkdtemp(prefix="bazaar-abuse-")
        self.http_port, self.grpc_port = free_port(), free_port()
        argv = [os.path.join(BUILD, "bazaar"), "serve", "--threads", "1",
                "--http-addr", "127.0.0.1:%d" % self.http_port, "--grpc-addr", "127.0.0.1:%d" % self.grpc_port,
                "--db", "sqlite://%s/b.db" % self.dir, "--log-level", "error", "--log-format", "json"]
        if tls:
            argv += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen(argv + list(flags), stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.http_port), timeout=0.2).close()
                socket.create_connection(("127.0.0.1", self.grpc_port), timeout=0.2).close()
                return
            except OSError:
                assert self.proc.poll() is None, open(self.log.name).read()
                time.sleep(0.05)
        raise RuntimeError("bazaar did not come up")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        log = open(self.log.name, errors="replace").read()
        # a sanitizer build (make test-asan) reports here
        assert "Sanitizer" not in log and "runtime error" not in log, log[-4000:]


class RssWatch:
    """Samples the server's RSS every 10 ms; keeps the peak."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop_ = pid, 0, threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop_.is_set():
            try:
                self.peak = max(self.peak, rss(self.pid))
            except OSError:
                return
            time.sleep(0.01)

    def stop(self):
        self.stop_.set()
        self.t.join()
        return self.peak


def run_case(name, attack, *flags, tls=None, ca=None):
    """Starts a server, the benign client, runs attack(srv, stop_event) for
    ATTACK_S seconds (attack returns a dict of findings), and returns
    (findings, row) after asserting nothing itself."""
    srv = Bazaar(*flags, tls=tls)
    try:
        # the benign client alone first: the box's own noise (another job
        # beside this suite), which the attack's limit is added to
        quiet = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "abuse_benign.py"), str(srv.http_port),
                                str(srv.grpc_port), "1.0"] + ([ca] if ca else []),
                               capture_output=True, text=True, timeout=60)
        base = json.loads(quiet.stdout.strip().splitlines()[-1])
        benign = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "abuse_benign.py"), str(srv.http_port),
                                   str(srv.grpc_port), str(ATTACK_S + 1.0)] + ([ca] if ca else []),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert benign.stdout.readline().strip() == "ready", benign.stderr.read()
        time.sleep(0.3)
        before = rss(srv.proc.pid)
        watch = RssWatch(srv.proc.pid)
        stop = threading.Event()
        out = {}

        def go():
            try:
                out.update(attack(srv, stop) or {})
            except Exception as e:  # noqa: BLE001 - recorded, asserted by the caller
                out["attack_error"] = repr(e)

        t = threading.Thread(target=go, daemon=True)
        t.start()
        time.sleep(ATTACK_S)
        stop.set()
        t.join(30)
        peak = watch.stop()
        res = json.loads(benign.communicate(timeout=60)[0].strip().splitlines()[-1])
        time.sleep(5)
        assert srv.proc.poll() is None, "the server died: " + open(srv.log.name).read()[-2000:]
        after = rss(srv.proc.pid)
        res["quiet_p99_ms"] = base["p99_ms"]
        row = ("%-28s RSS before/peak/after %6.1f / %6.1f / %6.1f MiB   benign p99 %6.1f ms (max %6.1f; alone %.1f), "
               "%d errors" % (name, before / MiB, peak / MiB, after / MiB, res["p99_ms"], res["max_ms"],
                              base["p99_ms"], res["nerrors"]))
        print("\n" + row)
        with open(os.path.join(tempfile.gettempdir(), "bazaar-abuse-table.txt"), "a") as f:
            f.write(row + "\n")
        return out, dict(before=before, peak=peak, after=after, benign=res, row=row)
    finally:
        srv.stop()


# Under ASan/TSan (make test-asan) memory and time are the sanitizer's:
# the verdicts and the server's sanitizer reports are checked there; the
# benign client's time-outs (2 s) are not — a server 3-5x slower beside
# CI's other lanes misses them with the attack contained.
SANITIZED = any(x in os.path.realpath(BUILD) for x in ("/asan", "/tsan"))


def assert_budgets(r):
    if SANITIZED:
        return
    assert r["benign"]["nerrors"] == 0, (r["row"], r["benign"]["errors"])
    assert r["peak"] - r["before"] < 64 * MiB, r["row"]
    assert r["after"] - r["before"] < 32 * MiB, r["row"]
    # 100 ms (the bound, with ~5 ms alone on a quiet box) plus
    # twice what the benign client saw alone just before: on a box that
    # runs other jobs (CI's parallel lanes) p99 over a few seconds is noisy
    # by itself; the old code's stalls were 244-2,000 ms.
    assert r["benign"]["p99_ms"] < 100 + 2 * r["benign"]["quiet_p99_ms"], r["row"]


# ---- raw HTTP/2 -------------------------------------------------------------------

class Raw:
    """A raw HTTP/2 client connection: frames out, frames in (parsed)."""

    def __init__(self, port, settings=None, timeout=5, rcvbuf=None):
        self.s = socket.socket()
        if rcvbuf:  # before connect: a fixed, small receive window (no autotuning)
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(timeout)
        self.s.connect(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.enc = hpack.Encoder()
        self.buf = b""
        sf = SettingsFrame(0)
        for k, v in (settings or {}).items():
            sf.settings[k] = v
        self.s.sendall(PREFACE + sf.serialize())
        self.goaway = None
        self.rst = {}
        self.closed = False

    def send(self, *frames):
        self.s.sendall(b"".join(f.serialize() for f in frames))

    def headers(self, sid, hdrs, end_stream=False):
        f = HeadersFrame(sid)
        f.data = self.enc.encode(hdrs)
        f.flags.add("END_HEADERS")
        if end_stream:
            f.flags.add("END_STREAM")
        return f

    def poll(self, timeout=0.0):
        """Reads what is there (up to timeout) and returns the frames."""
        self.s.settimeout(timeout if timeout > 0 else 0.000001)
        try:
            while True:
                b = self.s.recv(1 << 20)
                if not b:
                    self.closed = True
                    break
                self.buf += b
                if len(b) < (1 << 20):
                    break
        except (socket.timeout, BlockingIOError):
            pass
        except OSError:
            self.closed = True
        frames = []
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                break
            f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            f.parse_body(memoryview(self.buf[9:9 + length]))
            self.buf = self.buf[9 + length:]
            frames.append(f)
            if isinstance(f, GoAwayFrame):
                self.goaway = f.error_code
            elif isinstance(f, RstStreamFrame):
                self.rst[f.stream_id] = f.error_code
        return frames

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def grpc_head(path, authority="x", extra=()):
    return [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
            ("content-type", "application/grpc"), ("te", "trailers")] + list(extra)


# ---- the cases ------------------------------------------------------------------------

def test_hpack_bomb_is_cut_short():
    """16,000 references to a 4,000-byte dynamic-table entry per request
    (66 MB decoded from 16 KB): decoding stops past the header-list limit
    and the connection gets GOAWAY(ENHANCE_YOUR_CALM)."""
    def hint(v, bits, first=0):
        top = (1 << bits) - 1
        if v < top:
            return bytes([first | v])
        out = [first | top]
        v -= top
        while v >= 128:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        return bytes(out + [v])

    # Static-table references only, so no encoder state is involved:
    # :method GET (2), :scheme http (6), :path /healthz, :authority x.
    head = b"\x82\x86" + b"\x04" + hint(8, 7) + b"/healthz" + b"\x01" + hint(1, 7) + b"x"
    # Request 1 puts "x-bomb: a*4000" in the dynamic table (index 62).
    first = head + b"\x40" + hint(6, 7) + b"x-bomb" + hint(4000, 7) + b"a" * 4000
    bomb = head + bytes([0x80 | 62]) * 16000

    def attack(srv, stop):
        calm = conns = 0
        while not stop.is_set():
            c = Raw(srv.http_port)
            conns += 1
            c.send(HeadersFrame(1, data=first, flags=["END_HEADERS", "END_STREAM"]))
            sid = 3
            try:
                while not stop.is_set() and not c.closed and c.goaway is None:
                    c.send(HeadersFrame(sid, data=bomb, flags=["END_HEADERS", "END_STREAM"]))
                    sid += 2
                    c.poll()
                c.poll(0.2)
            except OSError:
                pass
            if c.goaway == ENHANCE_YOUR_CALM:
                calm += 1
            c.close()
        return {"calm": calm, "conns": conns}
    out, r = run_case("HPACK bomb", attack)
    assert "attack_error" not in out, out
    assert out["calm"] >= 1, out
    assert_budgets(r)


def test_padded_empty_data_is_no_progress():
    """DATA frames with PADDED and pad length 0 carry nothing: counted as
    empty frames, GOAWAY(ENHANCE_YOUR_CALM)."""
    def attack(srv, stop):
        c = Raw(srv.grpc_port)
        c.send(c.headers(1, grpc_head("/bazaar.v1.ItemService/LookupItems")))
        sent = 0
        frame = DataFrame(1, data=b"", flags=["PADDED"])
        frame.pad_length = 0
        one = frame.serialize()
        try:
            while not stop.is_set() and c.goaway is None and not c.closed and sent < 20000:
                c.s.sendall(one * 100)
                sent += 100
                c.poll()
            c.poll(0.5)
        except OSError:
            pass
        c.close()
        return {"goaway": c.goaway, "sent": sent}
    out, r = run_case("padded empty DATA flood", attack)
    assert out.get("goaway") == ENHANCE_YOUR_CALM, out
    assert_budgets(r)


def test_window_update_flood_on_closed_stream_is_counted():
    def attack(srv, stop):
        c = Raw(srv.http_port)
        c.send(c.headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/healthz"), (":authority", "x")],
                         end_stream=True))
        c.poll(0.5)
        one = WindowUpdateFrame(1, window_increment=1).serialize()
        sent = 0
        try:
            while not stop.is_set() and c.goaway is None and not c.closed and sent < 50000:
                c.s.sendall(one * 100)
                sent += 100
                c.poll()
            c.poll(0.5)
        except OSError:
            pass
        c.close()
        return {"goaway": c.goaway, "sent": sent}
    out, r = run_case("WINDOW_UPDATE(+1) flood", attack)
    assert out.get("goaway") == ENHANCE_YOUR_CALM, out
    assert_budgets(r)


def varint(v):
    b = bytearray()
    while v >= 128:
        b.append((v & 0x7f) | 0x80)
        v >>= 7
    b.append(v)
    return bytes(b)


def unary_call_request(size):
    # grpc.testing.SimpleRequest{response_size: size}
    v, b = size, bytearray([0x10])
    while v >= 128:
        b.append((v & 0x7f) | 0x80)
        v >>= 7
    b.append(v)
    return b"\x00" + struct.pack(">I", len(b)) + bytes(b)


def test_unread_large_answers_are_budgeted():
    """128 unary calls whose 4 MiB answers the client never lets through
    (initial window 0): responses wait in bounded slices, not whole."""
    def attack(srv, stop):
        c = Raw(srv.grpc_port, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
        msg = unary_call_request(4 * MiB)
        for i in range(128):
            sid = 1 + 2 * i
            c.send(c.headers(sid, grpc_head("/grpc.testing.TestService/UnaryCall")),
                   DataFrame(sid, data=msg, flags=["END_STREAM"]))
        while not stop.is_set():
            c.poll(0.1)
        c.close()
    out, r = run_case("window-0 4 MiB answers x128", attack)
    assert "attack_error" not in out, out
    assert_budgets(r)


def test_unfinished_large_messages_are_budgeted():
    """128 LookupItems streams each sending an unfinished 4 MiB message:
    the connection's budget holds only a few; the rest wait, unread."""
    def attack(srv, stop):
        import h2.config
        import h2.connection
        import h2.events
        s = socket.create_connection(("127.0.0.1", srv.grpc_port), timeout=5)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        body = b"\x00" + struct.pack(">I", 4 * MiB - 16) + b"\x00" * (4 * MiB - 1024)
        left = {}
        for i in range(128):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, grpc_head("/bazaar.v1.ItemService/LookupItems"))
            left[sid] = 0
        s.sendall(conn.data_to_send())
        s.settimeout(0.01)
        sent = 0
        while not stop.is_set():
            for sid, off in list(left.items()):
                try:
                    w = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(body) - off)
                except Exception:  # noqa: BLE001 - the stream was reset
                    del left[sid]
                    continue
                if w > 0:
                    conn.send_data(sid, body[off:off + w])
                    left[sid] = off + w
                    sent += w
            out = conn.data_to_send()
            if out:
                s.sendall(out)
            try:
                d = s.recv(1 << 20)
                if not d:
                    break
                conn.receive_data(d)
                o2 = conn.data_to_send()
                if o2:
                    s.sendall(o2)
            except socket.timeout:
                pass
        s.close()
        return {"sent_mib": sent / MiB}
    out, r = run_case("unfinished 4 MiB msgs x128", attack)
    assert "attack_error" not in out, out
    assert_budgets(r)


def gzip_bomb_message():
    # grpc.health.v1.HealthCheckRequest with an unknown field 15 of just
    # under 4 MiB of zeros: ~4 KB gzipped.
    inner = b"\x00" * (4 * MiB - 64)
    n, v = bytearray(), len(inner)
    while v >= 128:
        n.append((v & 0x7f) | 0x80)
        v >>= 7
    n.append(v)
    plain = b"\x7a" + bytes(n) + inner  # field 15, wire type 2
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    gz = z.compress(plain) + z.flush()
    return b"\x01" + struct.pack(">I", len(gz)) + gz


def test_gzip_messages_inflate_off_the_loop():
    """128 gzip messages of ~4 KB inflating to just under 4 MiB each: the
    loop keeps serving, and the inflated unknown field is not kept."""
    msg = gzip_bomb_message()
    assert len(msg) < 8192

    def attack(srv, stop):
        n = 0
        while not stop.is_set():
            c = Raw(srv.grpc_port)
            for i in range(128):
                sid = 1 + 2 * i
                c.send(c.headers(sid, grpc_head("/grpc.health.v1.Health/Check", extra=[("grpc-encoding", "gzip")])),
                       DataFrame(sid, data=msg, flags=["END_STREAM"]))
                n += 1
            deadline = time.time() + 5
            while not stop.is_set() and time.time() < deadline and not c.closed:
                c.poll(0.05)
            c.close()
        return {"sent": n}
    out, r = run_case("gzip 4KB->4MiB x128", attack)
    assert "attack_error" not in out, out
    assert_budgets(r)


def test_idle_streams_past_the_process_budget_are_refused():
    """40 connections x 128 idle streaming calls: past --max-streams new
    streams get RST_STREAM(REFUSED_STREAM)."""
    def attack(srv, stop):
        conns = []
        refused = 0
        for k in range(40):
            c = Raw(srv.grpc_port)
            c.send(*[c.headers(1 + 2 * i, grpc_head("/bazaar.v1.ItemService/LookupItems")) for i in range(128)])
            conns.append(c)
        while not stop.is_set():
            for c in conns:
                c.poll()
            time.sleep(0.05)
        for c in conns:
            c.poll(0.01)
            refused += sum(1 for e in c.rst.values() if e == REFUSED_STREAM)
            c.close()
        return {"refused": refused}
    out, r = run_case("40 conns x 128 idle streams", attack)
    assert "attack_error" not in out, out
    assert out["refused"] > 0, out
    assert_budgets(r)


def test_pipelining_flood_does_not_hold_the_loop():
    """Fairness: one HTTP/1.1 connection pipelining requests as fast as
    they are answered never waits for input, so it must yield after a
    slice of the loop's turn (it held the loop for hundreds of ms)."""
    def attack(srv, stop):
        s = socket.create_connection(("127.0.0.1", srv.http_port))
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 500

        def reader():
            while not stop.is_set():
                try:
                    if not s.recv(1 << 20):
                        break
                except OSError:
                    break
        th = threading.Thread(target=reader, daemon=True)
        th.start()
        n = 0
        try:
            while not stop.is_set():
                s.sendall(req)
                n += 500
        except OSError:
            pass
        s.close()
        return {"sent": n}
    out, r = run_case("HTTP/1.1 pipelining flood", attack)
    assert out.get("sent", 0) > 10000, out
    assert_budgets(r)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    crt, key = str(d / "c.pem"), str(d / "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    return crt, key


def client_hello():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    o = ctx.wrap_bio(inc, outg, server_hostname="localhost")
    try:
        o.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outg.read()


def test_client_hello_flood_is_capped(cert):
    """2,000 TLS clients that stop after ClientHello: handshakes are capped
    (--tls-max-handshakes) and timed out (--tls-handshake-timeout)."""
    n = int(os.environ.get("BAZAAR_ABUSE_HELLOS", "2000"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 1000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 4096), hard))
    hello = client_hello()

    def attack(srv, stop):
        socks = []
        for i in range(n):
            if stop.is_set():
                break
            try:
                s = socket.create_connection(("127.0.0.1", (srv.http_port, srv.grpc_port)[i % 2]), timeout=5)
                s.sendall(hello)
                socks.append(s)
            except OSError:
                pass
        stop.wait()
        for s in socks:
            s.close()
        return {"opened": len(socks)}
    out, r = run_case("%d ClientHello-only clients" % n, attack, tls=cert, ca=cert[0])
    assert out.get("opened", 0) >= n * 0.9, out
    assert_budgets(r)


# ---- timeouts and the port ------------------------------------------------------------------

def test_client_that_stops_reading_is_released_after_the_write_timeout():
    """A client that stops reading after some progress is released within
    --write-timeout of the stall (not up to twice it)."""
    srv = Bazaar("--write-timeout", "2s")
    try:
        c = Raw(srv.grpc_port, rcvbuf=32768)
        # A large window, so only the socket stops the answer.
        c.send(WindowUpdateFrame(0, window_increment=(1 << 30)))
        c.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: (1 << 30)}))
        # StreamingOutputCall: four 4 MiB messages — more than the kernel's
        # socket buffers hold, so the server has output waiting.
        param = b"\x08" + varint(4 * MiB)
        req = (b"\x12" + varint(len(param)) + param) * 4
        c.send(c.headers(1, grpc_head("/grpc.testing.TestService/StreamingOutputCall")),
               DataFrame(1, data=b"\x00" + struct.pack(">I", len(req)) + req, flags=["END_STREAM"]))
        got = 0
        c.s.settimeout(2)
        while got < 128 * 1024:
            b = c.s.recv(65536)
            assert b
            got += len(b)
        # Not reading.  Watch the server's side of the connection through
        # the kernel: its send queue stops growing (the last progress the
        # client allowed), then the socket leaves ESTABLISHED when the
        # server gives up.
        me = str(c.s.getsockname()[1])
        last_q, last_change, closed_at = None, time.time(), None
        deadline = time.time() + 12
        while time.time() < deadline:
            out = subprocess.run(["ss", "-tnH", "state", "established", "( sport = :%d )" % srv.grpc_port],
                                 capture_output=True, text=True).stdout
            row = [ln.split() for ln in out.splitlines() if me in ln]
            if not row:
                closed_at = time.time()
                break
            q = int(row[0][1])
            if q != last_q:
                last_q, last_change = q, time.time()
            time.sleep(0.05)
        c.close()
        assert closed_at is not None, "never released"
        took = closed_at - last_change
        print("\nreleased %.2f s after the last progress (--write-timeout 2s)" % took)
        # the write timeout and slack: the old code took up to twice the
        # write timeout, plus a 1 s linger for a GOAWAY nobody could read
        assert took < (2.4 if not SANITIZED else 4.0), took
    finally:
        srv.stop()


def test_second_server_on_the_same_port_fails():
    """SO_REUSEPORT is opt-in: a second bazaar on a port in use exits
    non-zero with one "address in use" line; --reuse-port shares it."""
    first = Bazaar()
    try:
        d = tempfile.mkdtemp(prefix="bazaar-abuse-")
        for threads in ("1", "2"):
            p = subprocess.run([os.path.join(BUILD, "bazaar"), "serve", "--threads", threads,
                                "--http-addr", "127.0.0.1:%d" % first.http_port, "--grpc-addr", "off",
                                "--db", "sqlite://%s/b.db" % d, "--log-level", "warn", "--log-format", "text"],
                               capture_output=True, text=True, timeout=20)
            assert p.returncode != 0
            lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
            assert len(lines) == 1 and "already in use" in lines[0], p.stderr
    finally:
        first.stop()
    # Opted in on both sides, two servers share the port (a rolling restart).
    a = Bazaar("--reuse-port", "on")
    try:
        d = tempfile.mkdtemp(prefix="bazaar-abuse-")
        b = subprocess.Popen([os.path.join(BUILD, "bazaar"), "serve", "--threads", "2", "--reuse-port", "on",
                              "--http-addr", "127.0.0.1:%d" % a.http_port, "--grpc-addr", "off",
                              "--db", "sqlite://%s/b.db" % d, "--log-level", "warn"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.5)
        assert b.poll() is None, b.stderr.read()
        b.terminate()
        assert b.wait(10) == 0
    finally:
        a.stop()


def test_quiet_grpc_stream_ends_at_the_idle_timeout():
    """Every wait for client bytes has a deadline: a streaming call whose
    client sends nothing is ended after --idle-timeout (not held until the
    call's own deadline, or forever without one)."""
    import grpc
    srv = Bazaar("--idle-timeout", "1s")
    try:
        ch = grpc.insecure_channel("127.0.0.1:%d" % srv.grpc_port)
        quiet = threading.Event()

        def nothing():
            quiet.wait(20)  # sends no message, keeps the stream open
            return
            yield  # noqa: unreachable - makes this a generator

        call = ch.stream_stream("/bazaar.v1.ItemService/LookupItems", request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)(nothing(), timeout=15)
        t0 = time.time()
        with pytest.raises(grpc.RpcError) as e:
            for _ in call:
                pass
        took = time.time() - t0
        quiet.set()
        ch.close()
        print("\nquiet stream ended after %.2f s: %s %s" % (took, e.value.code(), e.value.details()))
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert took < 4, took
    finally:
        srv.stop()


def test_process_buffer_budget_refuses_large_messages():
    """--buffer-bytes is per process: while one connection holds a large
    message's reservation, a large message on another connection that
    would pass the budget gets RESOURCE_EXHAUSTED at once (small ones
    still pass)."""
    import grpc
    srv = Bazaar("--buffer-bytes", "4MiB")
    try:
        a = Raw(srv.grpc_port)
        a.send(a.headers(1, grpc_head("/bazaar.v1.ItemService/LookupItems")),
               DataFrame(1, data=b"\x00" + struct.pack(">I", 4 * MiB - 16) + b"\x00" * 8000))
        time.sleep(0.3)
        ch = grpc.insecure_channel("127.0.0.1:%d" % srv.grpc_port)
        look = ch.stream_stream("/bazaar.v1.ItemService/LookupItems", request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
        t0 = time.time()
        with pytest.raises(grpc.RpcError) as e:
            list(look(iter([b"\x0a" + varint(100000) + b"x" * 100000]), timeout=10))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
        assert "retry later" in e.value.details()
        assert time.time() - t0 < 2
        # the health check (a small message) is not affected
        check = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)
        assert check(b"", timeout=5) == b"\x08\x01"
        ch.close()
        a.close()
    finally:
        srv.stop()

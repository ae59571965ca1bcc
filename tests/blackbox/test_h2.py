"""Black-box tests of HTTP/2 (h2c) in http/ through http_testd (and one
through the real bazaar app): real clients (nghttp, curl, h2load) for the
protocol paths, and frames written by hand (hyperframe + hpack) for the
flow-control bounds and the flood defences, which must end the offending
connection with GOAWAY and the right error code while another connection
keeps being answered."""
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest
from hpack import Decoder, Encoder
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

from harness import start_testd
from rawhttp import connect

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NO_ERROR, PROTOCOL_ERROR, ENHANCE_YOUR_CALM = 0x0, 0x1, 0xb
SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 0x3, 0x4, 0x6


class H2:
    """A hand-driven HTTP/2 client connection: sends the frames it is told
    to, reads frames, never sends WINDOW_UPDATE unless asked."""

    def __init__(self, port, settings=None, timeout=5):
        self.s = connect(port, timeout)
        self.enc, self.dec = Encoder(), Decoder()
        self.buf = b""
        self.server_settings = None
        self.eof = False
        self.s.sendall(PREFACE + SettingsFrame(0, settings=settings or {}).serialize())

    def send(self, *frames):
        self.s.sendall(b"".join(f.serialize() for f in frames))

    def block(self, path, method="GET", extra=()):
        return self.enc.encode([(":method", method), (":scheme", "http"), (":authority", "x"), (":path", path)]
                               + list(extra))

    def get(self, sid, path, end_stream=True, method="GET", extra=()):
        flags = ["END_HEADERS"] + (["END_STREAM"] if end_stream else [])
        self.send(HeadersFrame(sid, self.block(path, method, extra), flags=flags))

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            self.s.settimeout(max(0.01, deadline - time.time()))
            try:
                b = self.s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                b = b""
            if not b:
                self.eof = True
                raise EOFError("connection closed")
            self.buf += b

    def frame(self, timeout=5):
        """The next frame (SETTINGS from the server are ACKed)."""
        deadline = time.time() + timeout
        self._fill(9, deadline)
        f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
        self._fill(9 + length, deadline)
        f.parse_body(memoryview(self.buf[9:9 + length]))
        self.buf = self.buf[9 + length:]
        if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
            self.server_settings = dict(f.settings)
            self.send(SettingsFrame(0, flags=["ACK"]))
        return f

    def response(self, sid, timeout=5, window_updates=False):
        """(status, headers, body, trailers) of stream sid."""
        deadline = time.time() + timeout
        headers, trailers, body = None, {}, b""
        while True:
            f = self.frame(max(0.01, deadline - time.time()))
            if f.stream_id != sid:
                if isinstance(f, GoAwayFrame):
                    raise AssertionError("GOAWAY code %d before stream %d ended" % (f.error_code, sid))
                continue
            if isinstance(f, RstStreamFrame):
                raise AssertionError("stream %d reset with %d" % (sid, f.error_code))
            if isinstance(f, HeadersFrame):
                h = dict(self.dec.decode(f.data))
                if headers is None:
                    headers = h
                else:
                    trailers = h
            elif isinstance(f, DataFrame):
                body += f.data
                if window_updates and f.flow_controlled_length:
                    self.send(WindowUpdateFrame(0, f.flow_controlled_length),
                              WindowUpdateFrame(sid, f.flow_controlled_length))
            if "END_STREAM" in f.flags:
                return int(headers[":status"]), headers, body, trailers

    def goaway(self, timeout=5):
        """The GOAWAY frame the server sends (None if it closed without)."""
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                f = self.frame(max(0.01, deadline - time.time()))
                if isinstance(f, GoAwayFrame):
                    return f
        except (EOFError, socket.timeout):
            return None
        return None

    def closed(self, timeout=3):
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                self.frame(max(0.01, deadline - time.time()))
        except EOFError:
            return True
        except socket.timeout:
            return False
        return False

    def close(self):
        self.s.close()


def rss_kib(pid):
    for l in open("/proc/%d/status" % pid):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])


@pytest.fixture(scope="module")
def srv():
    s = start_testd("--max-header-bytes", "4096", "--max-body-bytes", "1048576",
                    "--h2-max-concurrent-streams", "64")
    yield s
    s.stop()


def url(srv, path):
    return "http://127.0.0.1:%d%s" % (srv.port, path)


def run(argv, timeout=30):
    return subprocess.run(argv, capture_output=True, timeout=timeout)


# ---- real clients ---------------------------------------------------------------------------------

def test_nghttp_prior_knowledge(srv):
    p = run(["nghttp", "-v", url(srv, "/items/42")])
    out = p.stdout.decode()
    assert p.returncode == 0, out
    assert "recv (stream_id=" in out and ":status: 200" in out
    assert "GET /items/{id}|id=42" in out


def test_curl_prior_knowledge_get_and_headers(srv):
    p = run(["curl", "-s", "-D", "-", "--http2-prior-knowledge", url(srv, "/healthz?x=1")])
    out = p.stdout.decode()
    assert out.startswith("HTTP/2 200"), out
    assert re.search(r"(?m)^x-request-id: [0-9a-f]{32}\r$", out)
    assert re.search(r"(?m)^content-length: 2\r$", out)
    assert re.search(r"(?m)^date: .* GMT\r$", out)
    assert out.endswith("ok")


def test_curl_upgrade_h2c_answers_the_upgrade_request_as_stream_1(srv):
    p = run(["curl", "-s", "-v", "--http2", url(srv, "/proto")])
    err = p.stderr.decode()
    assert "101 Switching Protocols" in err and "HTTP/2 200" in err, err
    assert p.stdout == b"h2"


def test_plain_http11_still_served_and_upgrade_with_body_stays_http11(srv):
    assert run(["curl", "-s", "--http1.1", url(srv, "/proto")]).stdout == b"h1"
    p = run(["curl", "-s", "-v", "--http2", "--data-binary", "hello", url(srv, "/echo")])
    assert p.stdout == b"hello"
    assert "101 Switching Protocols" not in p.stderr.decode()  # not "101" alone: the port may hold it


def test_request_bodies_open_the_window_as_the_handler_reads(srv, tmp_path):
    # 300 KB is far past the 64 KiB stream window: it arrives only if the
    # server sends WINDOW_UPDATEs as the handler reads.
    data = os.urandom(300000)
    f = tmp_path / "body"
    f.write_bytes(data)
    for path in ("/echo", "/echo-stream"):
        p = run(["curl", "-s", "--http2-prior-knowledge", "--data-binary", "@%s" % f, url(srv, path)])
        assert p.stdout == data, path
    p = run(["nghttp", "-d", str(f), url(srv, "/echo")])
    assert p.stdout == data


def test_body_over_the_limit_is_413(srv, tmp_path):
    f = tmp_path / "big"
    f.write_bytes(b"x" * (1048576 + 10))
    p = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge",
             "--data-binary", "@%s" % f, url(srv, "/echo")])
    assert p.stdout == b"413"


def test_streamed_response_arrives_chunk_by_chunk(srv):
    c = H2(srv.port)
    c.get(1, "/stream?n=3")
    t0 = time.time()
    seen = []
    while True:
        f = c.frame()
        if isinstance(f, DataFrame) and f.stream_id == 1:
            if f.data:
                seen.append((f.data, time.time() - t0))
            if "END_STREAM" in f.flags:
                break
    assert b"".join(d for d, _ in seen) == b"chunk 0\nchunk 1\nchunk 2\n"
    assert len(seen) == 3 and seen[-1][1] - seen[0][1] >= 0.03  # flushed 20 ms apart, not at the end
    c.close()


def test_quiet_stream_longer_than_the_write_timeout_is_not_a_stall():
    # SSE between events: nothing waits to be sent, so no GOAWAY.
    s = start_testd("--write-timeout", "500ms", "--request-timeout", "10s")
    try:
        c = H2(s.port)
        c.get(1, "/stream?n=3&ms=800")
        st, _, body, _ = c.response(1, timeout=8)
        assert st == 200 and body == b"chunk 0\nchunk 1\nchunk 2\n"
        c.close()
    finally:
        s.stop()


def test_trailers_follow_the_body(srv):
    c = H2(srv.port)
    c.get(1, "/trailers")
    st, h, body, trailers = c.response(1)
    assert st == 200 and body == b"ok" and trailers == {"x-checksum": "42"}
    c.close()


def test_head_and_errors_map_like_http11(srv):
    c = H2(srv.port)
    c.get(1, "/healthz", method="HEAD")
    st, h, body, _ = c.response(1)
    assert st == 200 and body == b"" and h["content-length"] == "2"
    c.get(3, "/nope")
    st, h, body, _ = c.response(3)
    assert st == 404 and h["content-type"] == "application/problem+json"
    c.get(5, "/fail")
    assert c.response(5)[0] == 500
    c.close()


def test_failure_mid_stream_resets_the_stream(srv):
    c = H2(srv.port)
    c.get(1, "/fail-mid")
    with pytest.raises(AssertionError, match="reset"):
        c.response(1)
    c.get(3, "/healthz")  # the connection lives on
    assert c.response(3)[2] == b"ok"
    c.close()


def test_settings_advertise_streams_and_header_list_limit(srv):
    c = H2(srv.port)
    c.get(1, "/healthz")
    c.response(1)
    assert c.server_settings[SETTINGS_MAX_CONCURRENT_STREAMS] == 64
    assert c.server_settings[SETTINGS_MAX_HEADER_LIST_SIZE] == 4096
    c.close()


def test_header_list_over_max_header_bytes_is_431(srv):
    c = H2(srv.port)
    c.get(1, "/healthz", extra=[("x-big", "v" * 5000)])
    st, _, body, _ = c.response(1)
    assert st == 431 and b"header_too_large" in body
    c.get(3, "/healthz")
    assert c.response(3)[0] == 200
    c.close()


def test_cookie_crumbs_and_authority_reach_the_handler_as_http11(srv):
    # /items/{id} echoes the path value; /echo would need a body — use the
    # query and path through the router, and Host via request-id logic is
    # not observable, so check the crumbs through a 200 at least.
    c = H2(srv.port)
    c.get(1, "/items/a%20b?q=1", extra=[("cookie", "a=1"), ("cookie", "b=2")])
    st, _, body, _ = c.response(1)
    assert st == 200 and body == b"GET /items/{id}|id=a b"
    c.close()


def test_h2load_many_concurrent_streams(srv):
    p = run(["h2load", "-c4", "-m32", "-n4000", url(srv, "/healthz")], timeout=60)
    out = p.stdout.decode()
    assert "4000 succeeded" in out and "4000 2xx" in out, out


def test_rst_stream_cancels_the_handler_context(srv):
    c = H2(srv.port)
    c.get(1, "/wait")
    time.sleep(0.2)
    c.send(RstStreamFrame(1, error_code=0x8))
    time.sleep(0.2)
    c.get(3, "/last-cancel")
    j = json.loads(c.response(3)[2])
    assert j["result"] == "cancelled"
    assert (j["now_mono_ns"] - j["ended_mono_ns"]) / 1e9 < 1.0
    c.close()


def test_connection_close_cancels_every_stream(srv):
    c = H2(srv.port)
    c.get(1, "/wait")
    time.sleep(0.2)
    c.close()
    time.sleep(0.3)
    d = H2(srv.port)
    d.get(1, "/last-cancel")
    assert json.loads(d.response(1)[2])["result"] == "cancelled"
    d.close()


def test_request_deadline_applies_to_streams():
    s = start_testd("--request-timeout", "300ms")
    try:
        c = H2(s.port)
        t0 = time.time()
        c.get(1, "/wait")
        st, _, body, _ = c.response(1)
        assert st == 503 and b"timeout" in body
        assert 0.25 < time.time() - t0 < 2
        c.close()
    finally:
        s.stop()


# ---- flow control: bounded memory for clients that stop reading -------------------------------------

def test_client_that_never_opens_its_window_costs_bounded_memory():
    s = start_testd("--write-timeout", "2s")
    try:
        c = H2(s.port)  # default 64 KiB windows, never updated
        before = rss_kib(s.proc.pid)
        c.get(1, "/flood?kib=200000")  # 200 MB if the handler were never parked
        time.sleep(1.0)
        grown = rss_kib(s.proc.pid) - before
        assert grown < 8 * 1024, "server grew %d KiB" % grown
        # no progress for the write timeout (checked every write timeout,
        # so 2-4 s; slower under sanitizers): the connection is closed
        g = c.goaway(timeout=12)
        assert g is not None and g.error_code == ENHANCE_YOUR_CALM
        c.close()
    finally:
        s.stop()


def test_client_that_stops_reading_the_socket_costs_bounded_memory():
    s = start_testd("--write-timeout", "3s")
    try:
        c = H2(s.port, settings={SETTINGS_INITIAL_WINDOW_SIZE: 2**31 - 1})
        c.send(WindowUpdateFrame(0, 2**31 - 1 - 65535))
        c.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        before = rss_kib(s.proc.pid)
        c.get(1, "/flood?kib=200000")
        time.sleep(1.0)  # we read nothing: kernel buffers fill, then the server must park
        grown = rss_kib(s.proc.pid) - before
        assert grown < 8 * 1024, "server grew %d KiB" % grown
        other = H2(s.port)
        other.get(1, "/healthz")
        assert other.response(1)[2] == b"ok"
        other.close()
        c.close()
    finally:
        s.stop()


def test_window_updates_let_a_long_stream_complete(srv):
    c = H2(srv.port)
    c.get(1, "/flood?kib=2048")
    st, _, body, _ = c.response(1, timeout=20, window_updates=True)
    assert st == 200 and len(body) == 2048 * 1024
    c.close()


# ---- flood defences: GOAWAY with the right code, other connections unaffected ---------------------

@pytest.fixture
def fresh():
    s = start_testd("--write-timeout", "1s")
    yield s
    s.stop()


def assert_other_connection_works(other):
    other.get(101, "/healthz")
    st, _, body, _ = other.response(101)
    assert st == 200 and body == b"ok"


def test_rapid_reset_is_goaway_enhance_your_calm(fresh):
    other = H2(fresh.port)
    c = H2(fresh.port)
    frames = []
    for i in range(2000):
        sid = 2 * i + 1
        frames.append(HeadersFrame(sid, c.block("/sleep?ms=50"), flags=["END_HEADERS", "END_STREAM"]))
        frames.append(RstStreamFrame(sid, error_code=0x8))
    try:
        c.send(*frames)
    except (BrokenPipeError, ConnectionResetError):
        pass
    g = c.goaway()
    assert g is not None and g.error_code == ENHANCE_YOUR_CALM
    assert c.closed()
    assert_other_connection_works(other)


def test_continuation_flood_is_goaway_enhance_your_calm(fresh):
    other = H2(fresh.port)
    c = H2(fresh.port)
    block = c.block("/healthz")
    frames = [HeadersFrame(1, block, flags=["END_STREAM"])]
    for i in range(200):
        frames.append(ContinuationFrame(1, c.enc.encode([("x-pad", "a" * 10)])))
    try:
        c.send(*frames)
    except (BrokenPipeError, ConnectionResetError):
        pass
    g = c.goaway()
    assert g is not None and g.error_code == ENHANCE_YOUR_CALM
    assert_other_connection_works(other)


def test_ping_flood_is_goaway_enhance_your_calm(fresh):
    other = H2(fresh.port)
    c = H2(fresh.port)
    # Batches of 50, reading the ACKs in between: nghttp2's own bound on
    # queued ACKs never fills, so only the rate limit can end this.
    g = None
    try:
        for b in range(40):
            c.send(*[PingFrame(0, opaque_data=(b * 50 + i).to_bytes(8, "big")) for i in range(50)])
            acks = 0
            while acks < 50:
                f = c.frame()
                if isinstance(f, GoAwayFrame):
                    g = f
                    break
                if isinstance(f, PingFrame) and "ACK" in f.flags:
                    acks += 1
            if g:
                break
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass
    g = g or c.goaway()
    assert g is not None and g.error_code == ENHANCE_YOUR_CALM
    assert_other_connection_works(other)


def test_a_few_pings_are_answered(srv):
    c = H2(srv.port)
    c.send(*[PingFrame(0, opaque_data=i.to_bytes(8, "big")) for i in range(5)])
    acks = 0
    while acks < 5:
        f = c.frame()
        if isinstance(f, PingFrame) and "ACK" in f.flags:
            acks += 1
    c.close()


def test_settings_flood_is_goaway_enhance_your_calm(fresh):
    other = H2(fresh.port)
    c = H2(fresh.port)
    try:
        c.send(*[SettingsFrame(0, settings={SETTINGS_INITIAL_WINDOW_SIZE: 65535}) for _ in range(500)])
    except (BrokenPipeError, ConnectionResetError):
        pass
    g = c.goaway()
    assert g is not None and g.error_code == ENHANCE_YOUR_CALM
    assert_other_connection_works(other)


def test_zero_window_stall_is_goaway_enhance_your_calm(fresh):
    other = H2(fresh.port)
    c = H2(fresh.port, settings={SETTINGS_INITIAL_WINDOW_SIZE: 0})
    t0 = time.time()
    c.get(1, "/big")
    g = c.goaway(timeout=6)
    assert g is not None and g.error_code == ENHANCE_YOUR_CALM
    assert 0.9 < time.time() - t0 < 5  # --write-timeout 1s
    assert_other_connection_works(other)


def test_protocol_error_is_goaway_protocol_error(fresh):
    other = H2(fresh.port)
    c = H2(fresh.port)
    c.s.sendall(b"\x00\x00\x02\x00\x00\x00\x00\x00\x00hi")  # DATA on stream 0
    g = c.goaway()
    assert g is not None and g.error_code == PROTOCOL_ERROR
    assert_other_connection_works(other)


def test_garbage_after_the_preface_never_crashes(fresh):
    for seed in range(20):
        s = connect(fresh.port)
        s.sendall(PREFACE + os.urandom(2000 + seed * 37))
        s.settimeout(2)
        try:
            while s.recv(65536):
                pass
        except (socket.timeout, ConnectionResetError):
            pass
        s.close()
    other = H2(fresh.port)
    assert_other_connection_works(other)


# ---- lifecycle -------------------------------------------------------------------------------------

def test_idle_connection_gets_goaway_no_error():
    s = start_testd("--idle-timeout", "1s")
    try:
        c = H2(s.port)
        c.get(1, "/healthz")
        assert c.response(1)[0] == 200
        t0 = time.time()
        g = c.goaway(timeout=5)
        assert g is not None and g.error_code == NO_ERROR and g.last_stream_id == 1
        assert 0.8 < time.time() - t0 < 4
        assert c.closed()
    finally:
        s.stop()


def test_shutdown_sends_goaway_and_lets_streams_finish():
    s = start_testd("--shutdown-grace", "5s")
    c = H2(s.port)
    c.get(1, "/sleep?ms=800")
    time.sleep(0.2)
    s.proc.send_signal(signal.SIGTERM)
    got_goaway, status, body = None, None, b""
    deadline = time.time() + 5
    while time.time() < deadline:
        f = c.frame()
        if isinstance(f, GoAwayFrame):
            got_goaway = f
        elif isinstance(f, HeadersFrame) and f.stream_id == 1:
            status = int(dict(c.dec.decode(f.data))[":status"])
        elif isinstance(f, DataFrame) and f.stream_id == 1:
            body += f.data
        if "END_STREAM" in f.flags and f.stream_id == 1:
            break
    assert got_goaway is not None and got_goaway.error_code == NO_ERROR and got_goaway.last_stream_id == 1
    assert status == 200 and body == b"slept"
    assert c.closed()
    assert s.proc.wait(10) == 0


def test_shutdown_grace_cuts_streams_that_do_not_finish():
    s = start_testd("--shutdown-grace", "500ms")
    c = H2(s.port)
    c.get(1, "/wait")
    time.sleep(0.2)
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    assert c.closed(timeout=5)
    s.stop()
    assert time.time() - t0 < 4


# ---- the real app over HTTP/2 -------------------------------------------------------------------

def test_bazaar_rest_handlers_run_unchanged_over_h2(tmp_path):
    from harness import Backend, Server
    srv_ = Server(Backend("sqlite", str(tmp_path)), "--login-rate-limit", "1000/min")
    try:
        base = "http://127.0.0.1:%d" % srv_.port
        p = run(["curl", "-s", "--http2-prior-knowledge", base + "/healthz"])
        assert p.returncode == 0 and p.stdout
        body = json.dumps({"email": "h2@example.com", "name": "H Two", "password": "correct horse battery"})
        p = run(["curl", "-s", "-w", "\n%{http_code} %{http_version}", "--http2-prior-knowledge",
                 "-H", "Content-Type: application/json", "--data-binary", body, base + "/v1/users"])
        out, _, tail = p.stdout.decode().rpartition("\n")
        assert tail == "201 2", p.stdout
        assert json.loads(out)["email"] == "h2@example.com"
        p = run(["curl", "-s", "-w", "\n%{http_code}", "--http2", "-H", "Content-Type: application/json",
                 "--data-binary", body, base + "/v1/users"])
        assert p.stdout.decode().rpartition("\n")[2] == "409"
    finally:
        srv_.close()

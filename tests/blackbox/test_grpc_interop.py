"""Black-box tests of grpc.testing.TestService (grpc/testing.c): grpc's
interop test cases (grpc/doc/interop-test-descriptions.md), each asserting
what the spec asserts, run with grpcio against a real `bazaar serve`; the
cases that look at per-message compression flags (which grpcio hides) use
a small HTTP/2 client on python3-h2.  The Python modules for grpc's
test.proto, messages.proto and empty.proto are generated with protoc at
test time (Python's own `grpc` package owns the `grpc.testing` import
path, so they are loaded from their files under other names).

Run: /usr/bin/python3 -m pytest tests/blackbox/test_grpc_interop.py
(BAZAAR_BUILD=build/asan for the ASan build)."""
import atexit
import gzip
import importlib.util
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import requests
from google.protobuf import descriptor_pb2

from harness import BUILD, free_port

BAZAAR = os.path.join(BUILD, "bazaar")
PROTO_ROOT = "/usr/share/grpc-proto"
SERVICE = "grpc.testing.TestService"
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
ECHO_INITIAL = ("x-grpc-test-echo-initial", "test_initial_metadata_value")
ECHO_TRAILING = ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab")
MAX_SIZE = 4 << 20
MAX_CALL_BYTES = 16 << 20


# ---- generated protobuf modules ---------------------------------------------------------

def _load_protos():
    """Generates grpc/testing/{empty,messages,test}_pb2.py into a temp dir
    and loads them as bz_interop_*_pb2 (their `from grpc.testing import`
    lines rewritten to those names)."""
    out = tempfile.mkdtemp(prefix="bz-interop-pb-")
    atexit.register(shutil.rmtree, out, True)
    files = ["grpc/testing/empty.proto", "grpc/testing/messages.proto", "grpc/testing/test.proto"]
    subprocess.run(["protoc", "-I" + PROTO_ROOT, "--python_out=" + out] + files, check=True)
    mods = {}
    for name in ("empty", "messages", "test"):
        path = os.path.join(out, "grpc", "testing", name + "_pb2.py")
        with open(path) as f:
            src = f.read()
        src = re.sub(r"^from grpc\.testing import (\w+)_pb2 as (\w+)$", r"import bz_interop_\1_pb2 as \2", src,
                     flags=re.M)
        assert "grpc.testing import" not in src
        with open(path, "w") as f:
            f.write(src)
        modname = "bz_interop_%s_pb2" % name
        if modname not in sys.modules:
            spec = importlib.util.spec_from_file_location(modname, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[modname] = mod
            spec.loader.exec_module(mod)
        mods[name] = sys.modules[modname]
    return mods["empty"], mods["messages"], mods["test"]


empty_pb2, messages_pb2, test_pb2 = _load_protos()
Empty = empty_pb2.Empty
M = messages_pb2


# ---- the server -----------------------------------------------------------------------------

class Bazaar:
    """One `bazaar serve` with its own ports and SQLite file, stopped by PID."""

    def __init__(self, tmpdir):
        self.grpc_port, self.http_port = free_port(), free_port()
        self.logpath = os.path.join(tmpdir, "bazaar.log")
        self.log = open(self.logpath, "wb")
        argv = [BAZAAR, "serve", "--grpc-addr", "127.0.0.1:%d" % self.grpc_port, "--http-addr",
                "127.0.0.1:%d" % self.http_port, "--db", "sqlite://" + os.path.join(tmpdir, "interop.db"),
                "--cache", "memory", "--threads", "2", "--log-format", "json", "--log-level", "warn"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log)
        self.pid = self.proc.pid
        deadline = time.time() + 30
        while True:
            try:
                requests.get("http://127.0.0.1:%d/healthz" % self.http_port, timeout=0.5)
                break
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("bazaar did not come up:\n" + self.logtext())
                time.sleep(0.05)
        self.target = "127.0.0.1:%d" % self.grpc_port

    def logtext(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def metric(self, method, code):
        """bazaar_grpc_server_handled_total for one TestService method and code."""
        text = requests.get("http://127.0.0.1:%d/metrics" % self.http_port, timeout=5).text
        pat = r'^bazaar_grpc_server_handled_total\{method="%s/%s",code="%s"\} (\d+)$' % (
            re.escape(SERVICE), method, code)
        m = re.search(pat, text, re.M)
        return int(m.group(1)) if m else 0

    def wait_metric(self, method, code, at_least, timeout=10):
        deadline = time.time() + timeout
        while True:
            n = self.metric(method, code)
            if n >= at_least or time.time() > deadline:
                return n
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()
            raise
        self.log.close()
        return rc


@pytest.fixture(scope="module")
def server():
    tmp = tempfile.mkdtemp(prefix="bz-interop-")
    s = Bazaar(tmp)
    yield s
    rc = s.stop()
    log = s.logtext()
    assert "AddressSanitizer" not in log and "runtime error" not in log, log[-4000:]
    assert rc == 0, log[-4000:]
    shutil.rmtree(tmp, True)


@pytest.fixture(scope="module")
def channel(server):
    ch = grpc.insecure_channel(server.target)
    grpc.channel_ready_future(ch).result(timeout=20)
    yield ch
    ch.close()


def path(method, service=SERVICE):
    return "/%s/%s" % (service, method)


class Stub:
    """TestService's methods on a channel, typed from test.proto."""

    def __init__(self, ch):
        svc = test_pb2.DESCRIPTOR.services_by_name["TestService"]
        for m in svc.methods:
            req = getattr(M if m.input_type.file.name.endswith("messages.proto") else empty_pb2,
                          m.input_type.name)
            resp = getattr(M if m.output_type.file.name.endswith("messages.proto") else empty_pb2,
                           m.output_type.name)
            mp = descriptor_pb2.MethodDescriptorProto()
            m.CopyToProto(mp)
            cs, ss = mp.client_streaming, mp.server_streaming
            kind = {(False, False): ch.unary_unary, (False, True): ch.unary_stream,
                    (True, False): ch.stream_unary, (True, True): ch.stream_stream}[(cs, ss)]
            setattr(self, m.name, kind(path(m.name), request_serializer=req.SerializeToString,
                                       response_deserializer=resp.FromString))


@pytest.fixture(scope="module")
def stub(channel):
    return Stub(channel)


class Pipe:
    """A request iterator the test feeds one message at a time (grpc's
    interop client's _Pipe)."""

    def __init__(self):
        self.q = queue.Queue()

    def __iter__(self):
        return self

    def __next__(self):
        item = self.q.get(timeout=30)
        if item is None:
            raise StopIteration
        return item

    def add(self, item):
        self.q.put(item)

    def close(self):
        self.q.put(None)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def zeros(n):
    return b"\x00" * n


def payload(n):
    return M.Payload(type=M.COMPRESSABLE, body=zeros(n))


def large_request(**kw):
    return M.SimpleRequest(response_type=M.COMPRESSABLE, response_size=314159, payload=payload(271828), **kw)


def stream_request(sizes, body=0, **kw):
    return M.StreamingOutputCallRequest(response_type=M.COMPRESSABLE,
                                        response_parameters=[M.ResponseParameters(size=s) for s in sizes],
                                        payload=payload(body) if body else None, **kw)


# ---- a raw gRPC client on python3-h2 (per-message compression flags) ----------------------

def frame(msg, compressed=False):
    body = gzip.compress(msg) if compressed else msg
    return struct.pack(">BI", 1 if compressed else 0, len(body)) + body


def unframe(data):
    """[(compressed flag, message bytes)] from a response body."""
    out, i = [], 0
    while i < len(data):
        assert i + 5 <= len(data), "truncated frame header"
        flag, n = struct.unpack(">BI", data[i:i + 5])
        body = data[i + 5:i + 5 + n]
        assert len(body) == n, "truncated frame"
        out.append((flag, gzip.decompress(body) if flag & 1 else body))
        i += 5 + n
    return out


class RawCall:
    def __init__(self):
        self.headers, self.trailers, self.data = {}, {}, b""
        self.ended, self.reset = False, None

    def status(self):
        md = self.trailers or self.headers
        return int(md["grpc-status"]) if "grpc-status" in md else None

    def message(self):
        md = self.trailers or self.headers
        v = md.get("grpc-message", "")
        return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), v).encode("latin-1").decode()

    def messages(self):
        return unframe(self.data)


class RawGrpc:
    """An HTTP/2 connection speaking gRPC by hand: what it sends and what
    came back, frame flags included."""

    def __init__(self, port, timeout=15):
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                          header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 24})
        self.conn.increment_flow_control_window(1 << 24)
        self.calls = {}
        self._flush()

    def _flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def _read(self, timeout):
        self.sock.settimeout(timeout)
        try:
            b = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        if not b:
            raise EOFError("the server closed the connection")
        for ev in self.conn.receive_data(b):
            c = self.calls.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.ResponseReceived):
                c.headers = dict(ev.headers)
            elif isinstance(ev, h2.events.TrailersReceived):
                c.trailers = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                c.data += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                c.ended = True
            elif isinstance(ev, h2.events.StreamReset):
                c.ended, c.reset = True, ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                raise EOFError("GOAWAY %s" % ev.error_code)
        self._flush()
        return True

    def start(self, method, service=SERVICE, encoding=None, extra=()):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"),
                (":path", path(method, service)), ("content-type", "application/grpc"), ("te", "trailers"),
                ("grpc-accept-encoding", "identity,gzip")]
        if encoding:
            hdrs.append(("grpc-encoding", encoding))
        self.conn.send_headers(sid, hdrs + list(extra))
        self.calls[sid] = RawCall()
        self._flush()
        return sid

    def send(self, sid, data, end=False):
        off, deadline = 0, time.time() + self.timeout
        while off < len(data):
            n = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(data) - off)
            if n <= 0:
                assert time.time() < deadline, "no flow-control window from the server"
                self._read(0.2)
                continue
            self.conn.send_data(sid, data[off:off + n])
            off += n
            self._flush()
        if end:
            self.conn.end_stream(sid)
            self._flush()

    def wait(self, sid, until=lambda c: c.ended, timeout=None):
        c = self.calls[sid]
        deadline = time.time() + (timeout or self.timeout)
        while not until(c) and time.time() < deadline:
            self._read(max(0.01, deadline - time.time()))
        return c

    def call(self, method, msgs, encoding=None, extra=()):
        sid = self.start(method, encoding=encoding, extra=extra)
        self.send(sid, b"".join(msgs), end=True)
        c = self.wait(sid)
        assert c.ended, "the call did not end"
        return c

    def close(self):
        self.sock.close()


@pytest.fixture
def raw(server):
    r = RawGrpc(server.grpc_port)
    yield r
    r.close()


# ---- interop test cases ---------------------------------------------------------------------

def test_test_service_methods_are_served(stub, channel):
    """Every method test.proto declares on TestService is registered (only
    UnimplementedCall answers UNIMPLEMENTED, on purpose)."""
    svc = test_pb2.DESCRIPTOR.services_by_name["TestService"]
    names = [m.name for m in svc.methods]
    assert names == ["EmptyCall", "UnaryCall", "CacheableUnaryCall", "StreamingOutputCall", "StreamingInputCall",
                     "FullDuplexCall", "HalfDuplexCall", "UnimplementedCall"]
    resp = stub.CacheableUnaryCall(M.SimpleRequest(response_size=7), timeout=10)
    assert resp.payload.body == zeros(7)


def test_empty_unary(stub):
    resp, call = stub.EmptyCall.with_call(Empty(), timeout=10)
    assert call.code() == grpc.StatusCode.OK
    assert resp is not None and isinstance(resp, Empty)
    assert resp.SerializeToString() == b""


def test_large_unary(stub):
    resp, call = stub.UnaryCall.with_call(large_request(), timeout=10)
    assert call.code() == grpc.StatusCode.OK
    assert resp.payload.type == M.COMPRESSABLE
    assert len(resp.payload.body) == 314159
    assert resp.payload.body == zeros(314159)
    assert resp == M.SimpleResponse(payload=payload(314159))


def test_client_compressed_unary(raw):
    """The spec's three calls, with grpc-encoding: gzip on each and the
    per-message compressed flag chosen as the spec says."""
    want_true = large_request(expect_compressed=M.BoolValue(value=True)).SerializeToString()
    want_false = large_request(expect_compressed=M.BoolValue(value=False)).SerializeToString()
    # 1. the feature probe: uncompressed, expecting compression → INVALID_ARGUMENT
    probe = raw.call("UnaryCall", [frame(want_true)], encoding="gzip")
    assert probe.status() == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert probe.messages() == []
    # 2. compressed, expecting compression
    c = raw.call("UnaryCall", [frame(want_true, compressed=True)], encoding="gzip")
    assert c.status() == 0, c.message()
    (msg,) = c.messages()
    assert len(M.SimpleResponse.FromString(msg[1]).payload.body) == 314159
    # 3. uncompressed, expecting none
    c = raw.call("UnaryCall", [frame(want_false)], encoding="gzip")
    assert c.status() == 0, c.message()
    (msg,) = c.messages()
    assert M.SimpleResponse.FromString(msg[1]).payload.body == zeros(314159)
    # a compressed message where none is expected fails too
    c = raw.call("UnaryCall", [frame(want_false, compressed=True)], encoding="gzip")
    assert c.status() == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_client_compressed_unary_grpcio(stub):
    """The same with grpcio, which compresses a call's messages or not."""
    req = large_request(expect_compressed=M.BoolValue(value=True))
    with pytest.raises(grpc.RpcError) as e:
        stub.UnaryCall(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    resp = stub.UnaryCall(req, timeout=10, compression=grpc.Compression.Gzip)
    assert len(resp.payload.body) == 314159
    resp = stub.UnaryCall(large_request(expect_compressed=M.BoolValue(value=False)), timeout=10)
    assert resp.payload.body == zeros(314159)


def test_server_compressed_unary(raw, stub):
    for want in (True, False):
        req = large_request(response_compressed=M.BoolValue(value=want)).SerializeToString()
        c = raw.call("UnaryCall", [frame(req)])
        assert c.status() == 0, c.message()
        (msg,) = c.messages()
        assert bool(msg[0] & 1) == want, "compressed flag %s, wanted %s" % (msg[0], want)
        if want:
            assert c.headers.get("grpc-encoding") == "gzip"
        assert M.SimpleResponse.FromString(msg[1]).payload.body == zeros(314159)
        # and grpcio reads both
        resp = stub.UnaryCall(large_request(response_compressed=M.BoolValue(value=want)), timeout=10)
        assert len(resp.payload.body) == 314159


def test_client_streaming(stub):
    reqs = [M.StreamingInputCallRequest(payload=payload(n)) for n in (27182, 8, 1828, 45904)]
    resp, call = stub.StreamingInputCall.with_call(iter(reqs), timeout=10)
    assert call.code() == grpc.StatusCode.OK
    assert resp.aggregated_payload_size == 74922


def test_client_compressed_streaming(raw):
    probe = M.StreamingInputCallRequest(expect_compressed=M.BoolValue(value=True), payload=payload(27182))
    c = raw.call("StreamingInputCall", [frame(probe.SerializeToString())], encoding="gzip")
    assert c.status() == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    last = M.StreamingInputCallRequest(expect_compressed=M.BoolValue(value=False), payload=payload(45904))
    c = raw.call("StreamingInputCall", [frame(probe.SerializeToString(), compressed=True),
                                        frame(last.SerializeToString())], encoding="gzip")
    assert c.status() == 0, c.message()
    (msg,) = c.messages()
    assert M.StreamingInputCallResponse.FromString(msg[1]).aggregated_payload_size == 73086


def test_server_streaming(stub):
    it = stub.StreamingOutputCall(stream_request([31415, 9, 2653, 58979]), timeout=10)
    sizes = []
    for r in it:
        assert r.payload.type == M.COMPRESSABLE and r.payload.body == zeros(len(r.payload.body))
        sizes.append(len(r.payload.body))
    assert sizes == [31415, 9, 2653, 58979]
    assert it.code() == grpc.StatusCode.OK


def test_server_compressed_streaming(raw):
    req = M.StreamingOutputCallRequest(response_parameters=[
        M.ResponseParameters(size=31415, compressed=M.BoolValue(value=True)),
        M.ResponseParameters(size=92653, compressed=M.BoolValue(value=False))])
    c = raw.call("StreamingOutputCall", [frame(req.SerializeToString())])
    assert c.status() == 0, c.message()
    assert c.headers.get("grpc-encoding") == "gzip"
    msgs = c.messages()
    assert [m[0] & 1 for m in msgs] == [1, 0]
    assert [len(M.StreamingOutputCallResponse.FromString(m[1]).payload.body) for m in msgs] == [31415, 92653]


def test_ping_pong(stub):
    sizes, bodies = [31415, 9, 2653, 58979], [27182, 8, 1828, 45904]
    with Pipe() as pipe:
        it = stub.FullDuplexCall(pipe, timeout=10)
        got = []
        for size, body in zip(sizes, bodies):
            pipe.add(stream_request([size], body))
            r = next(it)
            assert r.payload.body == zeros(size)
            got.append(len(r.payload.body))
        pipe.close()
        assert list(it) == []
    assert got == sizes
    assert it.code() == grpc.StatusCode.OK


def test_empty_stream(stub):
    it = stub.FullDuplexCall(iter([]), timeout=10)
    assert list(it) == []
    assert it.code() == grpc.StatusCode.OK


def test_timeout_on_sleeping_server(stub):
    with Pipe() as pipe:
        it = stub.FullDuplexCall(pipe, timeout=0.001)
        pipe.add(M.StreamingOutputCallRequest(payload=payload(27182)))
        with pytest.raises(grpc.RpcError) as e:
            next(it)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def raw_deadline_call(server, method, req, timeout="200m", wait=20):
    """Sends req with grpc-timeout and waits without resetting the stream
    (grpcio resets it at its own deadline, before the server's timer
    fires): (the call, seconds until it ended)."""
    r = RawGrpc(server.grpc_port)
    try:
        t0 = time.monotonic()
        sid = r.start(method, extra=[("grpc-timeout", timeout)])
        r.send(sid, frame(req.SerializeToString()))
        c = r.wait(sid, timeout=wait)
        return c, time.monotonic() - t0
    finally:
        r.close()


def test_server_ends_a_call_waiting_for_requests_at_its_deadline(server):
    before = server.metric("FullDuplexCall", "DEADLINE_EXCEEDED")
    c, dt = raw_deadline_call(server, "FullDuplexCall", M.StreamingOutputCallRequest(payload=payload(27182)),
                              wait=5)
    assert c.ended and c.status() == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], (c.headers, c.trailers)
    assert 0.15 < dt < 5, dt
    assert server.wait_metric("FullDuplexCall", "DEADLINE_EXCEEDED", before + 1) >= before + 1


def test_cancel_after_begin(stub, server):
    with Pipe() as pipe:
        fut = stub.StreamingInputCall.future(pipe, timeout=10)
        fut.cancel()
        assert fut.cancelled()
        assert fut.code() == grpc.StatusCode.CANCELLED


def test_cancel_after_first_response(stub, server):
    before = server.metric("FullDuplexCall", "CANCELLED")
    with Pipe() as pipe:
        it = stub.FullDuplexCall(pipe, timeout=10)
        pipe.add(stream_request([31415], 27182))
        r = next(it)
        assert len(r.payload.body) == 31415
        it.cancel()
        with pytest.raises(grpc.RpcError) as e:
            next(it)
        assert e.value.code() == grpc.StatusCode.CANCELLED
    # the server saw the reset and ended the call (its handler was waiting for the next request)
    assert server.wait_metric("FullDuplexCall", "CANCELLED", before + 1) >= before + 1


def test_custom_metadata_unary(stub):
    md = (ECHO_INITIAL, ECHO_TRAILING)
    resp, call = stub.UnaryCall.with_call(large_request(), metadata=md, timeout=10)
    assert call.code() == grpc.StatusCode.OK
    assert len(resp.payload.body) == 314159
    assert dict(call.initial_metadata())[ECHO_INITIAL[0]] == ECHO_INITIAL[1]
    assert dict(call.trailing_metadata())[ECHO_TRAILING[0]] == ECHO_TRAILING[1]


def test_custom_metadata_full_duplex(stub):
    md = (ECHO_INITIAL, ECHO_TRAILING)
    it = stub.FullDuplexCall(iter([stream_request([314159], 271828)]), metadata=md, timeout=10)
    assert dict(it.initial_metadata())[ECHO_INITIAL[0]] == ECHO_INITIAL[1]
    sizes = [len(r.payload.body) for r in it]
    assert sizes == [314159]
    assert it.code() == grpc.StatusCode.OK
    assert dict(it.trailing_metadata())[ECHO_TRAILING[0]] == ECHO_TRAILING[1]


def test_custom_metadata_binary_values_round_trip(stub):
    """Every byte value, and an empty one, survive the -bin echo."""
    for value in (bytes(range(256)), b"", b"\x00", b"\xff\xfe"):
        _, call = stub.EmptyCall.with_call(Empty(), metadata=((ECHO_TRAILING[0], value),), timeout=10)
        assert dict(call.trailing_metadata()).get(ECHO_TRAILING[0]) == value


def test_status_code_and_message(stub):
    status = M.EchoStatus(code=2, message="test status message")
    with pytest.raises(grpc.RpcError) as e:
        stub.UnaryCall(M.SimpleRequest(response_status=status), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNKNOWN
    assert e.value.details() == "test status message"
    it = stub.FullDuplexCall(iter([M.StreamingOutputCallRequest(response_status=status)]), timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        list(it)
    assert e.value.code() == grpc.StatusCode.UNKNOWN
    assert e.value.details() == "test status message"


def test_special_status_message(stub):
    status = M.EchoStatus(code=2, message=SPECIAL_MESSAGE)
    with pytest.raises(grpc.RpcError) as e:
        stub.UnaryCall(M.SimpleRequest(response_status=status), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNKNOWN
    assert e.value.details() == SPECIAL_MESSAGE


def test_special_status_message_percent_encoded(raw):
    """On the wire the message is percent-encoded (gRPC's grpc-message
    rules), and decodes back to the bytes sent."""
    msg = "100% sure: caf\u00e9 \u263a %41"
    req = M.SimpleRequest(response_status=M.EchoStatus(code=9, message=msg))
    c = raw.call("UnaryCall", [frame(req.SerializeToString())])
    assert c.status() == 9
    wire = (c.trailers or c.headers)["grpc-message"]
    assert all(0x20 <= ord(ch) <= 0x7e for ch in wire) and "%25" in wire
    assert c.message() == msg


def test_unimplemented_method(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.UnimplementedCall(Empty(), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_unimplemented_service(channel):
    call = channel.unary_unary(path("UnimplementedCall", "grpc.testing.UnimplementedService"),
                               request_serializer=Empty.SerializeToString, response_deserializer=Empty.FromString)
    with pytest.raises(grpc.RpcError) as e:
        call(Empty(), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_gzip_channel(server):
    """grpc.Compression.Gzip on the channel: every request compressed, the
    server answers in kind, and the cases still hold."""
    with grpc.insecure_channel(server.target, compression=grpc.Compression.Gzip) as ch:
        s = Stub(ch)
        assert s.EmptyCall(Empty(), timeout=10) == Empty()
        resp = s.UnaryCall(large_request(expect_compressed=M.BoolValue(value=True)), timeout=10)
        assert resp.payload.body == zeros(314159)
        # grpc core sends a message plain when gzip would not shrink it (the 8 bytes)
        reqs = [M.StreamingInputCallRequest(payload=payload(n), expect_compressed=M.BoolValue(value=n > 1000))
                for n in (27182, 8, 1828, 45904)]
        assert s.StreamingInputCall(iter(reqs), timeout=10).aggregated_payload_size == 74922
        sizes = [len(r.payload.body) for r in s.StreamingOutputCall(stream_request([31415, 9, 2653, 58979]),
                                                                     timeout=10)]
        assert sizes == [31415, 9, 2653, 58979]
        with Pipe() as pipe:
            it = s.FullDuplexCall(pipe, timeout=10)
            for size, body in zip([31415, 9, 2653, 58979], [27182, 8, 1828, 45904]):
                pipe.add(stream_request([size], body))
                assert len(next(it).payload.body) == size
            pipe.close()
            assert list(it) == []
            assert it.code() == grpc.StatusCode.OK


# ---- server features beyond the cases -----------------------------------------------------

def test_half_duplex_answers_after_half_close(raw):
    sid = raw.start("HalfDuplexCall")
    for sizes in ([10, 20], [30]):
        raw.send(sid, frame(stream_request(sizes).SerializeToString()))
    c = raw.wait(sid, until=lambda c: c.data or c.ended, timeout=0.5)
    assert c.data == b"" and not c.ended, "answered before the client half-closed"
    raw.send(sid, b"", end=True)
    c = raw.wait(sid)
    assert c.status() == 0, c.message()
    assert [len(M.StreamingOutputCallResponse.FromString(m[1]).payload.body) for m in c.messages()] == [10, 20, 30]


def test_full_duplex_answers_each_request_as_it_arrives(raw):
    sid = raw.start("FullDuplexCall")
    raw.send(sid, frame(stream_request([5, 6]).SerializeToString()))
    c = raw.wait(sid, until=lambda c: len(c.data) >= 2 * 5 + 5 + 6 + 2 * 4, timeout=5)
    assert not c.ended and len(unframe(c.data)) == 2
    raw.send(sid, b"", end=True)
    c = raw.wait(sid)
    assert c.status() == 0


def test_streaming_output_status_after_messages(stub):
    req = stream_request([3, 4], response_status=M.EchoStatus(code=5, message="gone"))
    it = stub.StreamingOutputCall(req, timeout=10)
    got = []
    with pytest.raises(grpc.RpcError) as e:
        for r in it:
            got.append(len(r.payload.body))
    assert got == [3, 4]
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and e.value.details() == "gone"


def test_interval_us_is_observed(stub):
    req = M.StreamingOutputCallRequest(response_parameters=[M.ResponseParameters(size=1, interval_us=150000)] * 3)
    t0 = time.monotonic()
    times = []
    for _ in stub.StreamingOutputCall(req, timeout=10):
        times.append(time.monotonic() - t0)
    assert len(times) == 3
    assert times[0] >= 0.14 and times[2] >= 0.44, times
    assert times[1] - times[0] >= 0.1 and times[2] - times[1] >= 0.1, times


def test_interval_sleep_honours_the_deadline(stub, server):
    req = M.StreamingOutputCallRequest(response_parameters=[M.ResponseParameters(size=1, interval_us=60_000_000)])
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        list(stub.StreamingOutputCall(req, timeout=0.3))
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 5
    # the server's own sleep ends at the deadline it was told
    before = server.metric("StreamingOutputCall", "DEADLINE_EXCEEDED")
    c, dt = raw_deadline_call(server, "StreamingOutputCall", req)
    assert c.ended and c.status() == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], (c.headers, c.trailers)
    assert 0.15 < dt < 5, dt
    assert server.wait_metric("StreamingOutputCall", "DEADLINE_EXCEEDED", before + 1) >= before + 1


def test_interval_sleep_ends_when_the_client_cancels(stub, server):
    before = server.metric("StreamingOutputCall", "CANCELLED")
    req = M.StreamingOutputCallRequest(response_parameters=[M.ResponseParameters(size=1),
                                                            M.ResponseParameters(size=1, interval_us=60_000_000)])
    it = stub.StreamingOutputCall(req, timeout=120)
    assert len(next(it).payload.body) == 1
    it.cancel()
    assert server.wait_metric("StreamingOutputCall", "CANCELLED", before + 1) >= before + 1


@pytest.mark.parametrize("size", [-1, MAX_SIZE + 1, 2**31 - 1])
def test_response_size_is_bounded(stub, size):
    with pytest.raises(grpc.RpcError) as e:
        stub.UnaryCall(M.SimpleRequest(response_size=size), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        list(stub.StreamingOutputCall(stream_request([1, size]), timeout=10))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_largest_response_size(server):
    # 4 MiB of payload is over grpcio's default 4 MiB receive limit with its framing
    with grpc.insecure_channel(server.target, options=[("grpc.max_receive_message_length", 8 << 20)]) as ch:
        resp = Stub(ch).UnaryCall(M.SimpleRequest(response_size=MAX_SIZE), timeout=20)
        assert len(resp.payload.body) == MAX_SIZE


def test_call_bytes_are_bounded(stub):
    per = [MAX_SIZE // 2] * (MAX_CALL_BYTES // (MAX_SIZE // 2) + 1)
    with pytest.raises(grpc.RpcError) as e:
        list(stub.StreamingOutputCall(stream_request(per), timeout=10))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # across the requests of one full-duplex call as well
    got = 0
    with pytest.raises(grpc.RpcError) as e:
        for r in stub.FullDuplexCall(iter([stream_request([MAX_SIZE // 2] * 4)] * 5), timeout=20):
            got += len(r.payload.body)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert got == MAX_CALL_BYTES
    with pytest.raises(grpc.RpcError) as e:
        list(stub.StreamingOutputCall(stream_request([0] * 1025), timeout=10))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_response_type_other_than_compressable_is_refused(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.UnaryCall(M.SimpleRequest(response_type=1, response_size=10), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        list(stub.StreamingOutputCall(M.StreamingOutputCallRequest(response_type=7), timeout=10))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_echo_status_codes(stub):
    for code in grpc.StatusCode:
        if code == grpc.StatusCode.OK:
            continue
        with pytest.raises(grpc.RpcError) as e:
            stub.UnaryCall(M.SimpleRequest(response_status=M.EchoStatus(code=code.value[0], message=code.name)),
                           timeout=10)
        assert e.value.code() == code and e.value.details() == code.name
    # codes outside gRPC's range read as UNKNOWN
    with pytest.raises(grpc.RpcError) as e:
        stub.UnaryCall(M.SimpleRequest(response_status=M.EchoStatus(code=99, message="x")), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNKNOWN


def test_bad_bytes_do_not_hurt_the_server(raw, stub):
    for method in ("UnaryCall", "StreamingInputCall", "FullDuplexCall", "HalfDuplexCall", "StreamingOutputCall"):
        c = raw.call(method, [frame(b"\xff\xff\xff\xff\x0f")])
        assert c.status() == grpc.StatusCode.INVALID_ARGUMENT.value[0], (method, c.headers, c.trailers)
        # a message cut short by the end of the stream
        c = raw.call(method, [frame(b"\x10\x05")[:6]])
        assert c.status() not in (None, 0), method
        # an unknown enum value, a negative size, a huge field number: refused or ignored, never a crash
        c = raw.call(method, [frame(b"\x08\xff\xff\xff\xff\x0f\x12\x0b\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"
                                    b"\xf8\xff\xff\xff\x0f\x01")])
        assert c.status() is not None, method
    # and a compressed flag that is not gzip
    c = raw.call("UnaryCall", [struct.pack(">BI", 1, 4) + b"nope"], encoding="gzip")
    assert c.status() not in (None, 0)
    assert stub.EmptyCall(Empty(), timeout=10) == Empty()

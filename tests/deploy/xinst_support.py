"""Helpers for test_cross_instance.py: a TCP proxy that delays every byte
by a fixed time (so one instance's cache traffic lags, which widens the
load → store window a stale value needs), a small REST client, and SSE /
WatchOrders stream openers.

Every wait is bounded; everything listens on loopback."""
import http.client
import json
import socket
import threading
import time
import uuid
from collections import deque

import grpc


class DelayProxy:
    """Forwards 127.0.0.1:port to target_port, each chunk delivered `delay`
    seconds after it was read, in order, in both directions."""

    def __init__(self, target_port, delay):
        self.target, self.delay = target_port, delay
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.closing = False
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closing:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                c.close()
                continue
            u.settimeout(None)
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks += [c, u]
            self._pipe(c, u)
            self._pipe(u, c)

    def _pipe(self, src, dst):
        q = deque()
        cv = threading.Condition()

        def reader():
            while True:
                try:
                    b = src.recv(65536)
                except OSError:
                    b = b""
                with cv:
                    q.append((time.monotonic() + self.delay, b))
                    cv.notify()
                if not b:
                    return

        def writer():
            while True:
                with cv:
                    while not q:
                        cv.wait(1.0)
                    due, b = q.popleft()
                d = due - time.monotonic()
                if d > 0:
                    time.sleep(d)
                if not b:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                try:
                    dst.sendall(b)
                except OSError:
                    return

        threading.Thread(target=reader, daemon=True).start()
        threading.Thread(target=writer, daemon=True).start()

    def close(self):
        self.closing = True
        self.ls.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


class Client:
    """One keep-alive connection to one instance, with a bearer token."""

    def __init__(self, port, token=None):
        self.port, self.token = port, token
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)

    def call(self, method, path, body=None, key=None):
        h = {}
        if body is not None:
            h["Content-Type"] = "application/json"
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        if key:
            h["Idempotency-Key"] = key
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(2):
            try:
                self.c.request(method, path, body=data, headers=h)
                r = self.c.getresponse()
                b = r.read()
                return r.status, (json.loads(b) if b[:1] in (b"{", b"[") else b)
            except (OSError, http.client.HTTPException):
                self.c.close()
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                if attempt:
                    raise

    def close(self):
        self.c.close()


def new_user(port, tag):
    """Signs up and logs in a user; returns (id, token)."""
    c = Client(port)
    email = "%s-%s@example.com" % (tag, uuid.uuid4().hex[:8])
    st, u = c.call("POST", "/v1/users", {"email": email, "name": tag, "password": "correct horse battery"})
    assert st == 201, (st, u)
    st, s = c.call("POST", "/v1/sessions", {"email": email, "password": "correct horse battery"})
    assert st == 201, (st, s)
    c.close()
    return u["id"], s["token"]


def open_sse(port, uid, token):
    """Opens the user's event stream: (status, connection).  On 200 the
    connection is left open (the stream holds its slot until closed)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/v1/users/%d/orders/events" % uid, headers={"Authorization": "Bearer " + token})
    r = c.getresponse()
    if r.status != 200:
        r.read()
        c.close()
        return r.status, None
    line = r.readline()  # ": subscribed"
    assert line.startswith(b":"), line
    return 200, c


class Watch:
    """A WatchOrders stream over gRPC (h2c on the HTTP address)."""

    def __init__(self, port, token):
        self.ch = grpc.insecure_channel("127.0.0.1:%d" % port)
        rpc = self.ch.unary_stream("/bazaar.v1.OrderService/WatchOrders", request_serializer=lambda x: x,
                                   response_deserializer=lambda x: x)
        self.call = rpc(b"", metadata=[("authorization", "Bearer " + token)], timeout=60)
        # the response headers come as soon as the stream is let in; a
        # refusal ends the call with a status
        self.md = None
        self.code = None
        try:
            self.md = self.call.initial_metadata()
        except grpc.RpcError:
            pass
        # a refusal is a Trailers-Only answer: grpcio may hand out its
        # (empty) initial metadata a moment before it marks the call done
        end = time.monotonic() + 0.3
        while self.md is not None and not self.md and not self.call.done() and time.monotonic() < end:
            time.sleep(0.01)
        if self.call.done() or self.md is None:
            self.code = self.call.code()

    def close(self):
        self.call.cancel()
        self.ch.close()

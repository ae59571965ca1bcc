"""Fixtures for the black-box suites: real server processes on free
loopback ports, real sockets and HTTP clients."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# the harness every Python suite shares (tests/lib)
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
BUILD = os.environ.get("BAZAAR_BUILD", os.path.join(ROOT, "build"))


class Server:
    def __init__(self, argv, env=None):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, text=False)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("port "):
            err = self.proc.stderr.read().decode(errors="replace")
            raise RuntimeError("server did not start: %r %s" % (line, err))
        self.port = int(line.split()[1])

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log(self):
        return self.proc.stderr.read().decode(errors="replace")


def start_testd(*flags):
    argv = [os.path.join(BUILD, "http_testd"), "--http-addr", "127.0.0.1:0", "--threads", "2",
            "--log-level", "warn"] + list(flags)
    return Server(argv)


@pytest.fixture
def testd():
    """A fresh http_testd per test with the default settings."""
    s = start_testd()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def shared_testd():
    """One http_testd for a module's read-only tests."""
    s = start_testd("--read-header-timeout", "2s", "--max-header-bytes", "4096",
                    "--max-body-bytes", "65536")
    yield s
    s.stop()


def connect(port, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_all(s, timeout=5):
    """Reads until the peer closes (or timeout); returns the bytes."""
    s.settimeout(timeout)
    out = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            b = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not b:
            break
        out += b
    return out


class Conn:
    """A client connection that reads responses one at a time."""

    def __init__(self, port, timeout=5):
        self.s = connect(port, timeout)
        self.buf = b""
        self.timeout = timeout

    def send(self, data):
        self.s.sendall(data)

    def _more(self):
        b = self.s.recv(65536)
        if not b:
            raise EOFError("connection closed; had %r" % self.buf[:200])
        self.buf += b

    def response(self, head_only=False):
        """Returns (status, headers{lower: [values]}, body)."""
        self.s.settimeout(self.timeout)
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers.setdefault(k.strip().lower(), []).append(v.strip())
        body = b""
        if head_only or status in (204, 304) or 100 <= status < 200:
            return status, headers, body
        if "content-length" in headers:
            n = int(headers["content-length"][0])
            while len(self.buf) < n:
                self._more()
            body, self.buf = self.buf[:n], self.buf[n:]
        elif headers.get("transfer-encoding", [""])[0].lower() == "chunked":
            while True:
                while b"\r\n" not in self.buf:
                    self._more()
                line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._more()
                if size == 0:
                    self.buf = self.buf[2:]
                    break
                body += self.buf[:size]
                self.buf = self.buf[size + 2:]
        return status, headers, body

    def closed(self, timeout=2):
        """True if the server closed the connection (EOF or reset)."""
        self.s.settimeout(timeout)
        try:
            while True:
                b = self.s.recv(65536)
                if not b:
                    return True
                self.buf += b
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.s.close()


def raw(port, data, timeout=5):
    """Sends data on a new connection, returns everything until close."""
    s = connect(port, timeout)
    s.sendall(data)
    out = recv_all(s, timeout)
    s.close()
    return out

"""HTTP/1.1 on a bare socket, for the protocol suites: what a client library
would hide (pipelining, odd splits, half-sent requests, who closed first)."""
import socket
import time


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

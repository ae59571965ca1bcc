"""A `requests` transport that speaks HTTP/2 over cleartext (prior
knowledge) through python3-h2, so the REST contract suite can run
unchanged over h2c (BAZAAR_TEST_H2C=1).  One connection per host, reused;
one request at a time on it; request bodies honour the server's flow
control; response data is acknowledged as it arrives."""
import gzip
import socket
import threading
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import requests
from requests.adapters import BaseAdapter
from requests.models import Response
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

_HOP = {"connection", "host", "transfer-encoding", "keep-alive", "upgrade", "proxy-connection"}


class H2CAdapter(BaseAdapter):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.conns = {}

    def _connect(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout=timeout)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        return [sock, conn]

    def _pump(self, sock, conn):
        data = sock.recv(65536)
        if not data:
            raise requests.ConnectionError("the server closed the HTTP/2 connection")
        events = conn.receive_data(data)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
        return events

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        u = urlsplit(request.url)
        t = timeout if isinstance(timeout, (int, float)) else 30
        with self.lock:
            key = (u.hostname, u.port or 80)
            if key not in self.conns:
                self.conns[key] = self._connect(u.hostname, u.port or 80, t)
            sock, conn = self.conns[key]
            try:
                return self._exchange(sock, conn, request, u)
            except (OSError, requests.ConnectionError, h2.exceptions.ProtocolError) as e:
                sock.close()
                del self.conns[key]
                raise requests.ConnectionError(str(e))

    def _exchange(self, sock, conn, request, u):
        sid = conn.get_next_available_stream_id()
        path = u.path + ("?" + u.query if u.query else "")
        hdrs = [(":method", request.method), (":scheme", "http"), (":authority", u.netloc), (":path", path or "/")]
        hdrs += [(k.lower(), v) for k, v in request.headers.items() if k.lower() not in _HOP]
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        conn.send_headers(sid, hdrs, end_stream=not body)
        sock.sendall(conn.data_to_send())
        status, headers, data, ended = None, [], bytearray(), False
        off = 0
        while off < len(body):  # the body, within the server's windows
            window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if window <= 0:
                for ev in self._pump(sock, conn):
                    if isinstance(ev, h2.events.ResponseReceived):
                        status, headers = ev.headers, ev.headers
                    elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                        body = b""  # the server answered early (413) and reset
                continue
            chunk = body[off:off + window]
            off += len(chunk)
            conn.send_data(sid, chunk, end_stream=off >= len(body))
            sock.sendall(conn.data_to_send())
        while not ended:
            for ev in self._pump(sock, conn):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    headers = ev.headers
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                    sock.sendall(conn.data_to_send())
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    ended = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    if headers:
                        ended = True
                    else:
                        raise requests.ConnectionError("stream reset: error code %s" % ev.error_code)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    if headers and ended:
                        break
                    raise requests.ConnectionError("GOAWAY: error code %s" % ev.error_code)
        r = Response()
        hd = CaseInsensitiveDict()
        for k, v in headers:
            if k == ":status":
                r.status_code = int(v)
            elif k in hd:
                hd[k] = hd[k] + ", " + v
            else:
                hd[k] = v
        r.headers = hd
        if hd.get("content-encoding", "").lower() == "gzip" and data:
            data = gzip.decompress(bytes(data))  # as requests' own transport does
        r._content = bytes(data)
        r.encoding = get_encoding_from_headers(hd)
        r.url = request.url
        r.request = request
        r.reason = ""
        r.connection = self
        return r

    def close(self):
        with self.lock:
            for sock, _ in self.conns.values():
                sock.close()
            self.conns.clear()

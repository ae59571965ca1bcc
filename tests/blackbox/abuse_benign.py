"""The benign client of the abuse suite (test_abuse_h2.py), in its own
process so the attacker's Python threads cannot delay its clock: every
50 ms a GET /healthz (HTTP/1.1, one keep-alive connection) and a gRPC
health check (python3-grpcio, one channel), for SECONDS; then one JSON line
on stdout: {"n": requests, "errors": [...], "p99_ms": .., "max_ms": ..}.

    abuse_benign.py HTTP_PORT GRPC_PORT SECONDS [CA_PEM]

With CA_PEM both go over TLS (the server's certificate, name "localhost")."""
import json
import socket
import ssl
import sys
import time

import grpc


def main():
    http_port, grpc_port, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    ca = sys.argv[4] if len(sys.argv) > 4 else None
    tls = None
    if ca:
        tls = ssl.create_default_context(cafile=ca)
        tls.check_hostname = False
    errors, lat = [], []

    def http_conn():
        s = socket.create_connection(("127.0.0.1", http_port), timeout=2)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            s = tls.wrap_socket(s, server_hostname="localhost")
        return s

    def healthz(s):
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            b = s.recv(4096)
            if not b:
                raise ConnectionError("closed")
            buf += b
        head, _, body = buf.partition(b"\r\n\r\n")
        n = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                n = int(line.split(b":")[1])
        while len(body) < n:
            b = s.recv(4096)
            if not b:
                raise ConnectionError("closed")
            body += b
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.split(b"\r\n")[0].decode())

    if ca:
        creds = grpc.ssl_channel_credentials(open(ca, "rb").read())
        ch = grpc.secure_channel("127.0.0.1:%d" % grpc_port, creds,
                                 options=[("grpc.ssl_target_name_override", "localhost")])
    else:
        ch = grpc.insecure_channel("127.0.0.1:%d" % grpc_port)
    check = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                           response_deserializer=lambda b: b)
    s = http_conn()
    # Both connections are made before the attack starts (the caller waits
    # for "ready"); a fresh connection per request would measure the
    # accept queue, not the loop.
    check(b"", timeout=5)
    healthz(s)
    print("ready", flush=True)
    end = time.time() + seconds
    while time.time() < end:
        t = time.time()
        try:
            healthz(s)
            lat.append(time.time() - t)
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            errors.append("healthz: %r" % e)
            try:
                s.close()
                s = http_conn()
            except Exception as e2:  # noqa: BLE001
                errors.append("reconnect: %r" % e2)
        t = time.time()
        try:
            if check(b"", timeout=2) != b"\x08\x01":
                errors.append("health: not SERVING")
            lat.append(time.time() - t)
        except Exception as e:  # noqa: BLE001
            errors.append("grpc health: %s" % getattr(e, "code", lambda: e)())
        time.sleep(max(0.0, 0.05 - (time.time() - t)))
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0
    print(json.dumps({"n": len(lat), "errors": errors[:10], "nerrors": len(errors),
                      "p99_ms": round(p99 * 1000, 1), "max_ms": round((lat[-1] if lat else 0) * 1000, 1)}),
          flush=True)


if __name__ == "__main__":
    main()

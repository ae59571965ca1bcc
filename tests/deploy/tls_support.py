"""Helpers for test_tls.py: throwaway certificates made by the openssl
command line, a bazaar serving TLS on both addresses (started in a temp
dir on free loopback ports, stopped by PID), and thin wrappers over the
real clients (openssl s_client, curl, Python's ssl)."""
import os
import shutil
import socket
import ssl
import subprocess
import tempfile

import harness

SAN = "subjectAltName=DNS:localhost,IP:127.0.0.1\n"


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=30)


def make_pki(d):
    """A CA and two leaves it signed (CN bazaar-one and bazaar-two, SAN
    localhost + 127.0.0.1, different serials): d/ca.pem, d/one.{pem,key},
    d/two.{pem,key}."""
    with open(os.path.join(d, "ext"), "w") as f:
        f.write(SAN)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-subj", "/CN=bazaar-test-ca", "-days", "2", cwd=d)
    for n in ("one", "two"):
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", n + ".key",
                 "-out", n + ".csr", "-subj", "/CN=bazaar-" + n, cwd=d)
        _openssl("x509", "-req", "-in", n + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", n + ".pem", "-days", "2", "-extfile", "ext", cwd=d)
    return d


class TlsBazaar:
    """bazaar serve with --tls-cert/--tls-key (copies of one.pem/one.key
    in its own dir, so a test can swap the files and SIGHUP), SQLite and
    the memory cache, both addresses on free ports."""

    def __init__(self, pki, *flags, threads=1, env=None):
        self.dir = tempfile.mkdtemp(prefix="bazaar-tls-")
        self.cert = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")
        shutil.copy(os.path.join(pki, "one.pem"), self.cert)
        shutil.copy(os.path.join(pki, "one.key"), self.key)
        self.ca = os.path.join(pki, "ca.pem")
        self.port, self.gport = harness.free_port(), harness.free_port()
        self.url = "https://localhost:%d" % self.port
        self.logpath = os.path.join(self.dir, "log")
        argv = [harness.BAZAAR, "serve", "--http-addr", "127.0.0.1:%d" % self.port, "--grpc-addr",
                "127.0.0.1:%d" % self.gport, "--threads", str(threads), "--log-format", "json", "--db",
                "sqlite://" + os.path.join(self.dir, "db.sqlite"), "--cache", "memory", "--tls-cert", self.cert,
                "--tls-key", self.key] + list(flags)
        with open(self.logpath, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=env)
        ok = harness.wait_for(lambda: self.proc.poll() is not None or self.get("/healthz")[0] == 200, 30)
        assert ok and self.proc.poll() is None, "bazaar did not come up:\n" + self.log()

    def context(self, alpn=None):
        c = ssl.create_default_context(cafile=self.ca)
        if alpn:
            c.set_alpn_protocols(alpn)
        return c

    def connect(self, alpn=None, port=None, timeout=5):
        s = socket.create_connection(("127.0.0.1", port or self.port), timeout=timeout)
        return self.context(alpn).wrap_socket(s, server_hostname="localhost")

    def get(self, path, sock=None):
        """GET over HTTP/1.1 (keep-alive) on sock or a new TLS connection:
        (status, body), or (None, error)."""
        own = sock is None
        try:
            if own:
                sock = self.connect()
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path.encode())
            return read_response(sock)
        except (OSError, ssl.SSLError) as e:
            return None, str(e)
        finally:
            if own and sock:
                sock.close()

    def log(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()[-8000:]

    def alive(self):
        return self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def close(self):
        harness.stop(self.proc, 20)
        shutil.rmtree(self.dir, ignore_errors=True)


def read_response(sock, f=None):
    """One HTTP/1.1 response with a Content-Length: (status, body).  f: a
    reader from sock.makefile("rb") to keep bytes of later (pipelined)
    responses between calls; by default one is made for this response."""
    f = f or sock.makefile("rb")
    line = f.readline()
    if not line:
        return None, "closed"
    status = int(line.split()[1])
    n = 0
    while True:
        ln = f.readline()
        if ln in (b"\r\n", b""):
            break
        k, _, v = ln.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    return status, f.read(n)


def peer_cn(sock):
    """The CN of the certificate the server presented on sock."""
    for rdn in sock.getpeercert()["subject"]:
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


def s_client(port, *args, stdin=b"", timeout=15):
    """openssl s_client against 127.0.0.1:port: (returncode, stdout+stderr)."""
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + list(args), input=stdin,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace")


def curl(*args, timeout=20):
    p = subprocess.run(["curl", "-sS", "--max-time", "10"] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

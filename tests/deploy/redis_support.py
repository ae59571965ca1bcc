"""Redis as deployed, for tests/deploy/test_redis_ha.py and
tests/faults/test_redis_edges.py: a redis-server with a password and ACL
users, a replica, and a set of redis-sentinel processes, each on a free
loopback port in its own temp dir, stopped by PID.  Every wait is bounded."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid

from harness import Conn, Redis, free_port, wait_for


def cli(port, *args, password=None, user=None, timeout=5, ca=None):
    """redis-cli against 127.0.0.1:port (over TLS trusting `ca` when
    given); returns its stdout stripped.  The password goes through
    REDISCLI_AUTH (not argv: ps would show it)."""
    env = dict(os.environ)
    a = ["redis-cli", "-h", "127.0.0.1", "-p", str(port)]
    if ca:
        a += ["--tls", "--cacert", ca]
    if user:
        a += ["--user", user]
    if password:
        env["REDISCLI_AUTH"] = password
    try:
        r = subprocess.run(a + list(args), capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return ""
    return r.stdout.strip()


class Node(Redis):
    """One redis-server: password (requirepass, also used as masterauth),
    extra ACL users given as full `user` rules, optionally a replica of
    another node.  kill() and close() are harness.Redis's."""

    def __init__(self, password=None, users=(), replica_of=None, tls=None):
        self.dir = tempfile.mkdtemp(prefix="bazaar-deploy-redis.")
        self.port = free_port()
        self.password = password
        self.tls = tls            # Certs: TLS only (the plain port is off)
        self.users = list(users)
        self.replica_of = replica_of
        self.proc = None
        self.start()

    def argv(self):
        # a TLS node also listens on 127.0.0.2: a name its certificate lacks
        a = ["redis-server", "--bind", "127.0.0.1"] + (["127.0.0.2"] if self.tls else []) + [
             "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--loglevel", "warning", "--logfile", os.path.join(self.dir, "redis.log")]
        if self.tls:
            a += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.tls.cert, "--tls-key-file",
                  self.tls.key, "--tls-ca-cert-file", self.tls.ca, "--tls-auth-clients", "no"]
        else:
            a += ["--port", str(self.port)]
        if self.password:
            a += ["--requirepass", self.password, "--masterauth", self.password]
        for u in self.users:
            a += ["--user"] + u.split()
        if self.replica_of:
            a += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        return a

    def start(self):
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ok = wait_for(lambda: self.cli("ping") == "PONG", 10)
        assert ok, "redis-server did not start"

    def cli(self, *args):
        return cli(self.port, *args, password=self.password, ca=self.tls.ca if self.tls else None)

class Certs:
    """A throwaway CA and a server certificate it signed (EC P-256), for
    127.0.0.1 and the names given, made with the openssl command."""

    def __init__(self, names=("localhost",), ips=("127.0.0.1",)):
        self.dir = tempfile.mkdtemp(prefix="bazaar-deploy-certs.")
        d = lambda n: os.path.join(self.dir, n)
        self.ca, self.ca_key, self.cert, self.key = d("ca.crt"), d("ca.key"), d("server.crt"), d("server.key")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run = lambda *a: subprocess.run(["openssl"] + list(a), check=True, capture_output=True, timeout=30)
        run("req", "-x509", *ec, "-keyout", self.ca_key, "-out", self.ca, "-days", "2", "-subj", "/CN=bazaar test CA")
        run("req", *ec, "-keyout", self.key, "-out", d("server.csr"), "-subj", "/CN=redis test server")
        with open(d("ext"), "w") as f:
            f.write("subjectAltName=" + ",".join(["DNS:" + n for n in names] + ["IP:" + i for i in ips]) + "\n")
        run("x509", "-req", "-in", d("server.csr"), "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
            "-out", self.cert, "-days", "2", "-extfile", d("ext"))
        os.chmod(self.key, 0o644)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Sentinel(Redis):
    """One redis-sentinel watching `master` at 127.0.0.1:master_port
    (quorum 2, down after 1 s, failover timeout 3 s).  close() is
    harness.Redis's."""

    def __init__(self, name, master_port, password=None):
        self.dir = tempfile.mkdtemp(prefix="bazaar-deploy-sentinel.")
        self.port = free_port()
        conf = os.path.join(self.dir, "sentinel.conf")
        with open(conf, "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n" % (self.port, self.dir,
                                                                       os.path.join(self.dir, "sentinel.log")))
            f.write("sentinel monitor %s 127.0.0.1 %d 2\n" % (name, master_port))
            f.write("sentinel down-after-milliseconds %s 1000\n" % name)
            f.write("sentinel failover-timeout %s 3000\n" % name)
            f.write("sentinel parallel-syncs %s 1\n" % name)
            if password:
                f.write("sentinel auth-pass %s %s\n" % (name, password))
        self.proc = subprocess.Popen(["redis-sentinel", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ok = wait_for(lambda: cli(self.port, "ping") == "PONG", 10)
        assert ok, "redis-sentinel did not start"

    def master_port(self, name):
        out = cli(self.port, "sentinel", "get-master-addr-by-name", name).split()
        return int(out[1]) if len(out) == 2 else None


class SentinelSet:
    """A master, one replica and three sentinels, all with `password` on
    the data nodes."""

    def __init__(self, name="bazaar-master", password=None):
        self.name, self.password = name, password
        self.master = Node(password)
        self.replica = Node(password, replica_of=self.master.port)
        ok = wait_for(lambda: "master_link_status:up" in self.replica.cli("info", "replication"), 15, 0.1)
        assert ok, "the replica did not sync"
        self.sentinels = [Sentinel(name, self.master.port, password) for _ in range(3)]
        # every sentinel has found the replica and the other sentinels
        def known():
            for s in self.sentinels:
                out = cli(s.port, "sentinel", "master", name).split("\n")
                kv = dict(zip(out[0::2], out[1::2]))
                if kv.get("num-slaves") != "1" or kv.get("num-other-sentinels") != "2":
                    return False
            return True
        assert wait_for(known, 20, 0.2), "the sentinels did not discover each other and the replica"

    def url(self, n, auth=""):
        return "redis-sentinel://%s%s/%s/%d" % (auth, ",".join("127.0.0.1:%d" % s.port for s in self.sentinels),
                                                self.name, n)

    def replicated(self, timeout=5):
        """Waits until the replica has every write the master has made."""
        def off(node, key):
            for line in node.cli("info", "replication").splitlines():
                if line.startswith(key + ":"):
                    return int(line.split(":")[1])
            return -1
        want = off(self.master, "master_repl_offset")
        return wait_for(lambda: off(self.replica, "slave_repl_offset") >= want, timeout, 0.05)

    def close(self):
        for s in self.sentinels:
            s.close()
        self.replica.close()
        self.master.close()


class EventStream:
    """One SSE subscriber (GET /v1/users/{id}/orders/events) read by a
    thread: `events` collects the data lines of every event."""

    def __init__(self, port, user):
        self.events = []
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(("GET /v1/users/%d/orders/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                           "Accept: text/event-stream\r\n\r\n" % (user.id, user.token)).encode())
        self.sock.settimeout(1.0)
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        buf = b""
        end = time.monotonic() + 120
        while not self.stop_ev.is_set() and time.monotonic() < end:
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not d:
                break
            buf += d
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.startswith(b"data:"):
                    try:
                        self.events.append(json.loads(line[5:].strip()))
                    except ValueError:
                        self.events.append(line[5:].strip())

    def close(self):
        self.stop_ev.set()
        try:
            self.sock.close()
        except OSError:
            pass
        self.t.join(5)


def quote(s):
    return urllib.parse.quote(s, safe="")


def end_to_end(srv, node, dbn, metrics_port=None):
    """Sign-up, login, an authenticated request, an item created and read
    twice (the second read a cache hit: the entry is in Redis database
    dbn and the hit counter moved).  Returns the user's (id, token)."""
    c = Conn(srv.port)
    email = "u-%s@example.com" % uuid.uuid4().hex[:8]
    r = c.request("POST", "/v1/users", {"email": email, "name": "u", "password": "correct horse battery"})
    assert r.status == 201, (r.status, r.body)
    uid = r.json()["id"]
    r = c.request("POST", "/v1/sessions", {"email": email, "password": "correct horse battery"})
    assert r.status == 201, (r.status, r.body)
    auth = {"Authorization": "Bearer " + r.json()["token"]}
    r = c.request("GET", "/v1/me", None, auth)
    assert r.status == 200 and r.json()["id"] == uid, (r.status, r.body)
    r = c.request("POST", "/v1/items", {"sku": "s-" + uuid.uuid4().hex[:8], "name": "thing", "price_cents": 100,
                                        "currency": "USD", "stock": 5}, auth)
    assert r.status == 201, (r.status, r.body)
    item = r.json()["id"]
    for _ in range(2):
        r = c.request("GET", "/v1/items/%d" % item)
        assert r.status == 200, (r.status, r.body)
    c.close()
    keys = node.cli("-n", str(dbn), "--scan", "--pattern", "bazaar:session:*")
    assert keys, "no session in Redis database %d" % dbn
    r = Conn(metrics_port or srv.port).request("GET", "/metrics")   # the admin port, when there is one
    hits = [l for l in r.body.decode().splitlines() if l.startswith("bazaar_cache_hits_total")]
    assert hits and float(hits[0].split()[-1]) >= 1, hits
    return uid, auth["Authorization"][7:]

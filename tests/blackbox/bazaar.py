"""A harness for black-box tests of `bazaar serve`: starts real server
processes on free loopback ports (SQLite + memory, or a fresh PostgreSQL
database + its own Redis database number), and a small REST client."""
import itertools
import os
import signal
import subprocess
import tempfile
import time
import uuid

import requests

from conftest import BUILD
from harness import free_port  # noqa: F401 (the suites import it from here)

BAZAAR = os.path.join(BUILD, "bazaar")
PG_URL = os.environ.get("BAZAAR_TEST_PG_URL")
REDIS_URL = os.environ.get("BAZAAR_TEST_REDIS_URL")
_dbno = itertools.count(1)


class Backend:
    """Where a server keeps its data: SQLite file + memory cache, or a fresh
    PostgreSQL database and Redis database number (isolated per Backend)."""

    def __init__(self, kind, tmpdir):
        self.kind = kind
        n = next(_dbno)
        if kind == "sqlite":
            self.db = "sqlite://%s" % os.path.join(tmpdir, "bazaar-%d.db" % n)
            self.cache = "memory"
        else:
            name = "bz_%d_%s" % (n, uuid.uuid4().hex[:8])
            subprocess.run(["psql", "-q", "-X", PG_URL, "-c", "CREATE DATABASE %s" % name], check=True,
                           stdout=subprocess.DEVNULL)
            self.db = PG_URL.rsplit("/", 1)[0] + "/" + name
            # Redis has 16 databases; wrap around (tests FLUSHDB what they use)
            self.redis_db = n % 15 + 1
            self.cache = REDIS_URL.rsplit("/", 1)[0] + "/%d" % self.redis_db
            self.redis_cli(["FLUSHDB"])

    def redis_cli(self, args):
        port = REDIS_URL.rsplit(":", 1)[1].split("/")[0]
        return subprocess.run(["redis-cli", "-p", port, "-n", str(self.redis_db)] + args, check=True,
                              capture_output=True, text=True).stdout


class Server:
    def __init__(self, backend, *flags, threads=2):
        self.backend = backend
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.logf = tempfile.NamedTemporaryFile(prefix="bazaar-", suffix=".log", delete=False)
        argv = [BAZAAR, "serve", "--http-addr", "127.0.0.1:%d" % self.port, "--grpc-addr", "off",
                "--threads", str(threads), "--log-format", "json", "--db", backend.db, "--cache",
                backend.cache] + list(flags)
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.logf)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                requests.get(self.url + "/healthz", timeout=0.3)
                return
            except requests.ConnectionError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError("server did not come up:\n" + self.log())

    def log(self):
        with open(self.logf.name, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        return rc

    def close(self):
        self.stop()
        os.unlink(self.logf.name)


class Client:
    """A REST client bound to one server and (optionally) one token."""

    def __init__(self, server, token=None):
        self.base = server.url if hasattr(server, "url") else server
        self.token = token
        self.s = requests.Session()
        if os.environ.get("BAZAAR_TEST_H2C"):
            # the same contract over HTTP/2 (h2c prior knowledge)
            from h2c import H2CAdapter
            self.s.mount("http://", H2CAdapter())

    def headers(self, key=None, extra=None):
        h = {}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        if key:
            h["Idempotency-Key"] = key
        if extra:
            h.update(extra)
        return h

    def get(self, path, **kw):
        return self.s.get(self.base + path, headers=self.headers(extra=kw.pop("headers", None)), timeout=30, **kw)

    def head(self, path, **kw):
        return self.s.head(self.base + path, headers=self.headers(extra=kw.pop("headers", None)), timeout=30, **kw)

    def post(self, path, body=None, key=None, **kw):
        return self.s.post(self.base + path, json=body, headers=self.headers(key, kw.pop("headers", None)),
                           timeout=30, **kw)

    def put(self, path, body=None, **kw):
        return self.s.put(self.base + path, json=body, headers=self.headers(extra=kw.pop("headers", None)),
                          timeout=30, **kw)

    def patch(self, path, body=None, **kw):
        return self.s.patch(self.base + path, json=body, headers=self.headers(extra=kw.pop("headers", None)),
                            timeout=30, **kw)

    def delete(self, path, **kw):
        return self.s.delete(self.base + path, headers=self.headers(extra=kw.pop("headers", None)), timeout=30, **kw)


_users = itertools.count(1)


def new_user(server, name=None, password="correct horse"):
    """Signs up a fresh user and logs in: (client with token, user json)."""
    n = next(_users)
    email = "u%d-%s@Example.COM" % (n, uuid.uuid4().hex[:6])
    c = Client(server)
    r = c.post("/v1/users", {"email": email, "name": name or "User %d" % n, "password": password})
    assert r.status_code == 201, r.text
    user = r.json()
    r = c.post("/v1/sessions", {"email": email, "password": password})
    assert r.status_code == 201, r.text
    c.token = r.json()["token"]
    return c, user


def key():
    return uuid.uuid4().hex


def account(c, currency="USD", deposit=0):
    r = c.post("/v1/accounts", {"currency": currency})
    assert r.status_code == 201, r.text
    a = r.json()
    if deposit:
        r = c.post("/v1/accounts/%d/deposits" % a["id"], {"amount_cents": deposit}, key=key())
        assert r.status_code == 201, r.text
        a = r.json()
    return a


def problem(r, status, code):
    """Asserts r is an RFC 9457 problem with this status and code."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
    j = r.json()
    assert j["status"] == status and j["code"] == code, j
    assert j["title"]
    return j

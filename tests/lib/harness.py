"""The harness every Python suite shares (faults, deploy, soak, black-box,
bench): real processes (bazaar, http_testd, PostgreSQL, Redis, a TCP proxy)
that the tests start, break and stop by PID, and a load generator that
records every response so the database can be checked against every
acknowledged write afterwards.  Each suite puts tests/lib on sys.path and
imports `harness` (and `rest`, the contract's REST client; `rawhttp`,
HTTP/1.1 on a bare socket).

Every wait here is bounded in count and time; everything listens on
loopback only."""
import atexit
import http.client
import itertools
import json
import os
import random
import selectors
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import tempfile
import threading
import time
import uuid

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BAZAAR_BUILD", os.path.join(ROOT, "build"))
BAZAAR = os.path.join(BUILD, "bazaar")
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")

REQUEST_TIMEOUT = 2.0          # --request-timeout given to every server
HANG_SLACK = 1.0               # a response later than timeout + this is a hang
CLIENT_TIMEOUT = 15.0          # socket timeout of the load clients

# One row per case, printed by conftest's terminal summary.
RESULTS = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_for(pred, timeout, step=0.05):
    """Polls pred() until it is true or timeout seconds passed."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            v = pred()
            if v:
                return v
        except Exception:
            pass
        time.sleep(step)
    return None


def tail(path, n=4000):
    """The last n characters of a log file ("" if it cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def stop(proc, grace):
    """SIGTERM, then SIGKILL after grace seconds; reaps the process."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _as_postgres():
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


# ---- PostgreSQL -------------------------------------------------------------------------------


class Postgres:
    """A throwaway cluster in a temp dir, on its own port.  fsync is off (the
    OS does not crash in these tests) but synchronous_commit is on: a commit
    is acknowledged only after its WAL reached the kernel, so an immediate
    stop loses nothing that was acknowledged."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bazaar-faults-pg.")
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        r = subprocess.run(_as_postgres() + [PGBIN + "/initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                                             "--no-sync", "-E", "UTF8", "--locale=C"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        self.start()

    def start(self):
        r = subprocess.run(_as_postgres() + [
            PGBIN + "/pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "pg.log"), "-w", "-t", "30", "start",
            "-o", "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=on "
                  "-c max_connections=200" % (self.port, self.dir)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr + self.log()

    def log(self):
        return tail(os.path.join(self.dir, "pg.log"))

    def pid(self):
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def pids(self):
        """The postmaster and every process it started."""
        pm = self.pid()
        out = [pm]
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
                ppid = int(st[st.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                continue
            if ppid == pm:
                out.append(int(d))
        return out

    def stop_immediate(self):
        r = subprocess.run(_as_postgres() + [PGBIN + "/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr

    def freeze(self):
        self.frozen = self.pids()
        for p in self.frozen:
            os.kill(p, signal.SIGSTOP)

    def thaw(self):
        for p in getattr(self, "frozen", []):
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.frozen = []

    def url(self, dbname, port=None):
        return "postgres://postgres@127.0.0.1:%d/%s" % (port or self.port, dbname)

    def psql(self, dbname, sql):
        r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "|", "-v", "ON_ERROR_STOP=1", self.url(dbname),
                            "-c", sql], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return [line.split("|") for line in r.stdout.splitlines() if line]

    def createdb(self):
        name = "bz_fault_%s" % uuid.uuid4().hex[:8]
        self.psql("postgres", "CREATE DATABASE %s" % name)
        return name

    def close(self):
        self.thaw()
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            subprocess.run(_as_postgres() + [PGBIN + "/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- Redis ----------------------------------------------------------------------------------------


class Redis:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bazaar-faults-redis.")
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", self.dir, "--loglevel", "warning"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ok = wait_for(lambda: subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                                             text=True, timeout=5).stdout.strip() == "PONG", 10)
        assert ok, "redis did not start"

    def url(self, n):
        return "redis://127.0.0.1:%d/%d" % (self.port, n)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- a TCP proxy that can cut the network ---------------------------------------------------------


class Proxy:
    """Forwards 127.0.0.1:port to 127.0.0.1:target on one thread.  cut()
    stops forwarding: bytes on every open connection are swallowed, new
    connections are accepted and never answered (a partition, not a
    refusal).  heal() closes every connection the cut touched and forwards
    again."""

    def __init__(self, target):
        self.target = target
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(256)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.peer = {}          # socket -> its peer socket (None while cut)
        self.swallowing = set() # sockets the cut touched
        self.cutting = False
        self.resetting = False
        self.lk = threading.Lock()
        self.cmds = []
        self.quit = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def cut(self, mode="blackhole"):
        """blackhole: swallow everything, answer nothing; reset: reset every
        connection and every new one at once."""
        with self.lk:
            self.cmds.append(mode)

    def heal(self):
        with self.lk:
            self.cmds.append("heal")

    def close(self):
        self.quit = True
        self.t.join(5)
        for s in list(self.peer):
            self._drop(s)
        self.lsock.close()

    def _reset(self, s):
        """Closes s and its peer with an RST."""
        for x in (s, self.peer.get(s)):
            if x is not None:
                try:
                    x.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
        self._drop(s)

    def _drop(self, s):
        self.swallowing.discard(s)
        p = self.peer.pop(s, None)
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()
        if p is not None and p in self.peer:
            self._drop(p)

    def _run(self):
        deadline = time.monotonic() + 3600
        while not self.quit and time.monotonic() < deadline:
            with self.lk:
                cmds, self.cmds = self.cmds, []
            for c in cmds:
                if c == "blackhole":
                    self.cutting = True
                elif c == "reset":
                    self.cutting = self.resetting = True
                    for s in list(self.peer):
                        if s in self.peer:
                            self._reset(s)
                elif c == "heal":
                    self.cutting = self.resetting = False
                    for s in list(self.peer):
                        if s in self.peer and s in self.swallowing:
                            self._drop(s)
                    self.swallowing.clear()
            for key, _ in self.sel.select(0.05):
                s = key.fileobj
                if s is self.lsock:
                    for _ in range(64):
                        try:
                            c, _a = self.lsock.accept()
                        except BlockingIOError:
                            break
                        c.setblocking(False)
                        if self.resetting:
                            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            c.close()
                            continue
                        if self.cutting:
                            self.swallowing.add(c)
                            self.peer[c] = None
                            self.sel.register(c, selectors.EVENT_READ, None)
                            continue
                        try:
                            u = socket.create_connection(("127.0.0.1", self.target), timeout=1)
                        except OSError:
                            c.close()
                            continue
                        u.setblocking(False)
                        self.peer[c] = u
                        self.peer[u] = c
                        self.sel.register(c, selectors.EVENT_READ, None)
                        self.sel.register(u, selectors.EVENT_READ, None)
                    continue
                if s not in self.peer:
                    continue
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if self.cutting or s in self.swallowing:
                    self.swallowing.add(s)
                    p = self.peer.get(s)
                    if p is not None:
                        self.swallowing.add(p)
                    if not data:
                        self._drop(s)
                    continue          # swallowed
                if not data:
                    self._drop(s)
                    continue
                p = self.peer.get(s)
                try:
                    p.setblocking(True)
                    p.settimeout(2)
                    p.sendall(data)
                    p.setblocking(False)
                except OSError:
                    self._drop(s)


# ---- bazaar ---------------------------------------------------------------------------------------


class Bazaar:
    def __init__(self, db, cache, *flags, ulimit_n=None, port=None, threads=2, logdir=None):
        self.db, self.cache, self.flags = db, cache, list(flags)
        self.ulimit_n = ulimit_n
        self.threads = threads
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        fd, self.logpath = tempfile.mkstemp(prefix="bazaar-fault-", suffix=".log", dir=logdir)
        os.close(fd)
        self.proc = None
        self.start()

    def argv(self):
        a = [BAZAAR, "serve", "--http-addr", "127.0.0.1:%d" % self.port, "--grpc-addr", "off", "--threads",
             str(self.threads), "--log-format", "json", "--log-level", "warn", "--db", self.db, "--cache", self.cache,
             "--request-timeout", "%gs" % REQUEST_TIMEOUT] + self.flags
        if self.ulimit_n:
            a = ["bash", "-c", 'ulimit -n %d && exec "$@"' % self.ulimit_n, "bash"] + a
        return a

    def start(self):
        log = open(self.logpath, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        ok = wait_for(lambda: self.proc.poll() is not None or get(self.url + "/healthz", 0.5)[0] == 200, 30)
        assert ok and self.proc.poll() is None, "bazaar did not come up:\n" + self.log()

    def log(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()[-6000:]

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def close(self):
        stop(self.proc, 20)
        if os.environ.get("BAZAAR_FAULTS_KEEP_LOGS"):
            print("bazaar log kept: %s" % self.logpath)
            return
        try:
            os.unlink(self.logpath)
        except OSError:
            pass


def get(url, timeout=2.0):
    """(status, headers, body) or (None, None, error) — one short request."""
    from urllib.parse import urlsplit
    u = urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        c.request("GET", u.path or "/")
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    except (OSError, http.client.HTTPException) as e:
        return None, None, repr(e)
    finally:
        c.close()


# ---- the black-box suites' servers --------------------------------------------------------------
#
# tests/with_services.sh gives a suite one PostgreSQL and one Redis
# (BAZAAR_TEST_PG_URL, BAZAAR_TEST_REDIS_URL).  A Backend isolates each
# server's data in them: its own PostgreSQL database, its own Redis database
# number.  Under pytest-xdist (PYTEST_XDIST_WORKER set) the workers share the
# PostgreSQL cluster, each Backend still with its own database, but each
# worker starts its own Redis: database numbers are per process, and Redis
# pub/sub channels (the order events) are not per database.

PG_URL = os.environ.get("BAZAAR_TEST_PG_URL")
REDIS_URL = os.environ.get("BAZAAR_TEST_REDIS_URL")
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
_dbno = itertools.count(1)
_worker_redis = None


def services_redis_url():
    """The Redis URL (database 0) this process's Backends use: the suite's,
    or under pytest-xdist this worker's own, started on first use."""
    global _worker_redis
    if not REDIS_URL or not WORKER:
        return REDIS_URL
    if _worker_redis is None:
        _worker_redis = Redis()
        atexit.register(close_services)
    return _worker_redis.url(0)


def close_services():
    """Stops what services_redis_url() started (a session fixture calls it)."""
    global _worker_redis
    if _worker_redis is not None:
        _worker_redis.close()
        _worker_redis = None


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
            self.redis_url = services_redis_url()
            self.cache = self.redis_url.rsplit("/", 1)[0] + "/%d" % self.redis_db
            self.redis_cli(["FLUSHDB"])

    def redis_cli(self, args):
        port = self.redis_url.rsplit(":", 1)[1].split("/")[0]
        return subprocess.run(["redis-cli", "-p", port, "-n", str(self.redis_db)] + args, check=True,
                              capture_output=True, text=True).stdout


def sanitizer_report(log):
    """True when a server's log holds an ASan/UBSan report."""
    return "AddressSanitizer" in log or "runtime error:" in log


class Server:
    """`bazaar serve` for the black-box suites: REST on a free loopback port
    (url), data where the Backend says, stderr (JSON log) in a temp file.
    With grpc=True gRPC listens on its own free port too (gport); channel is
    a python3-grpcio channel to it, connected on first use."""

    def __init__(self, backend, *flags, threads=2, grpc=False):
        self.backend = backend
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.gport = free_port() if grpc else None
        self._channel = None
        self.logf = tempfile.NamedTemporaryFile(prefix="bazaar-", suffix=".log", delete=False)
        argv = [BAZAAR, "serve", "--http-addr", "127.0.0.1:%d" % self.port, "--grpc-addr", "off",
                "--threads", str(threads), "--log-format", "json", "--db", backend.db, "--cache",
                backend.cache]
        if grpc:
            argv += ["--grpc-addr", "127.0.0.1:%d" % self.gport]
        self.proc = subprocess.Popen(argv + list(flags), stdout=subprocess.DEVNULL, stderr=self.logf)
        deadline = time.time() + 20
        while time.time() < deadline:
            if get(self.url + "/healthz", 0.3)[0] is not None:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("server did not come up:\n" + self.log())

    @property
    def channel(self):
        if self._channel is None:
            import grpc
            self._channel = grpc.insecure_channel("127.0.0.1:%d" % self.gport)
            grpc.channel_ready_future(self._channel).result(timeout=10)
        return self._channel

    def log(self):
        with open(self.logf.name, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        return rc

    def close(self, check=False):
        """Stops the server and deletes its log; with check, asserts it
        exited 0 with no sanitizer report."""
        rc = self.stop()
        log = self.log() if check else ""
        os.unlink(self.logf.name)
        if check:
            assert not sanitizer_report(log), log[-4000:]
            assert rc == 0, "bazaar exited %r:\n%s" % (rc, log[-4000:])
        return rc


class Testd:
    """tests/http_testd (the HTTP layer alone, for the protocol suites): it
    listens on a port the kernel picks and prints "port N" first."""

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
    return Testd(argv)


# ---- load -------------------------------------------------------------------------------------------


class Resp:
    __slots__ = ("status", "headers", "body", "err", "t0", "elapsed", "sent")

    def __init__(self, status=None, headers=None, body=b"", err=None, t0=0.0, elapsed=0.0, sent=True):
        self.status, self.headers, self.body, self.err = status, headers or {}, body, err
        self.t0, self.elapsed, self.sent = t0, elapsed, sent

    def json(self):
        return json.loads(self.body)


class Conn:
    """One keep-alive HTTP/1.1 connection.  A request that fails with a
    connection error before any byte of its response is reported with
    status None; err says which (sent=False when it never left)."""

    def __init__(self, port):
        self.port = port
        self.c = None

    def request(self, method, path, body=None, headers=None):
        h = {"Content-Type": "application/json"} if body is not None else {}
        h.update(headers or {})
        data = json.dumps(body).encode() if body is not None else None
        t0 = time.monotonic()
        sent = False
        try:
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT)
            self.c.request(method, path, body=data, headers=h)
            sent = True
            r = self.c.getresponse()
            b = r.read()
            hd = {k.lower(): v for k, v in r.getheaders()}
            if r.will_close:
                self.close()
            return Resp(r.status, hd, b, None, t0, time.monotonic() - t0)
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return Resp(None, None, b"", type(e).__name__, t0, time.monotonic() - t0, sent)

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


class Write:
    """One write the load made, with every attempt's answer."""

    def __init__(self, kind, user, method, path, body, key, amount=0):
        self.kind, self.user, self.method, self.path, self.body, self.key = kind, user, method, path, body, key
        self.amount = amount
        self.status = None        # the final, definitive status
        self.resp = None          # its body (bytes)
        self.attempts = 0

    @property
    def acked(self):
        return self.status is not None and 200 <= self.status < 300

    @staticmethod
    def definitive(r):
        """An answer that says what happened: not a connection error, not a
        5xx, not 401 (the session was lost), not "key in use"."""
        if r.status is None or r.status >= 500 or r.status == 401:
            return False
        return not (r.status == 409 and b"idempotency_key_in_use" in r.body)


class User:
    def __init__(self, email, password):
        self.email, self.password = email, password
        self.token = None
        self.id = None
        self.account = None


class Load:
    """Client threads doing a steady mix: item reads, deposits and transfers
    with Idempotency-Keys, order create + pay with keys.  Records every
    write and every response's status and latency."""

    MIX = (("item", 40), ("deposit", 20), ("transfer", 20), ("order", 20))

    def __init__(self, url, nthreads=4, nitems=60, seed=1):
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self.nthreads = nthreads
        self.rng = random.Random(seed)
        self.lk = threading.Lock()
        self.writes = []
        self.statuses = {}        # status (or error name) -> count
        self.codes = {}           # problem code of 5xx -> count
        self.latencies = []       # (t0, elapsed, status, what)
        self.stop_ev = threading.Event()
        self.pause_ev = threading.Event()
        self.threads = []
        self.users = []
        self.items = []
        self.deposits_initial = 0
        self._setup(nitems)

    # -- setup --

    def _call(self, conn, user, method, path, body=None, key=None):
        h = {}
        if user is not None and user.token:
            h["Authorization"] = "Bearer " + user.token
        if key:
            h["Idempotency-Key"] = key
        return conn.request(method, path, body, h)

    def login(self, conn, u):
        for _ in range(50):
            r = self._call(conn, None, "POST", "/v1/sessions", {"email": u.email, "password": u.password})
            if r.status == 201:
                u.token = r.json()["token"]
                return True
            time.sleep(0.1)
        return False

    def _new_user(self, conn, tag):
        u = User("%s-%s@example.com" % (tag, uuid.uuid4().hex[:8]), "correct horse battery")
        r = self._call(conn, None, "POST", "/v1/users", {"email": u.email, "name": tag, "password": u.password})
        assert r.status == 201, (r.status, r.body)
        u.id = r.json()["id"]
        assert self.login(conn, u)
        return u

    def _setup(self, nitems):
        conn = Conn(self.port)
        seller = self._new_user(conn, "seller")
        for i in range(nitems):
            r = self._call(conn, seller, "POST", "/v1/items",
                           {"sku": "sku-%s-%d" % (uuid.uuid4().hex[:6], i), "name": "item %d" % i,
                            "price_cents": 100 + i, "currency": "USD", "stock": 1000000})
            assert r.status == 201, (r.status, r.body)
            self.items.append(r.json()["id"])
        self.seller = seller
        # items the load never reads: a GET of one always misses the cache
        self.cold = []
        for i in range(12):
            r = self._call(conn, seller, "POST", "/v1/items",
                           {"sku": "cold-%s-%d" % (uuid.uuid4().hex[:6], i), "name": "cold %d" % i,
                            "price_cents": 100, "currency": "USD", "stock": 10})
            assert r.status == 201, (r.status, r.body)
            self.cold.append(r.json()["id"])
        for t in range(self.nthreads):
            u = self._new_user(conn, "buyer%d" % t)
            r = self._call(conn, u, "POST", "/v1/accounts", {"currency": "USD"})
            assert r.status == 201, (r.status, r.body)
            u.account = r.json()["id"]
            w = Write("deposit", u, "POST", "/v1/accounts/%d/deposits" % u.account, {"amount_cents": 1000000},
                      uuid.uuid4().hex, 1000000)
            r = self._call(conn, u, "POST", w.path, w.body, w.key)
            assert r.status == 201, (r.status, r.body)
            w.status, w.resp = r.status, r.body
            self.writes.append(w)
            self.users.append(u)
        conn.close()

    # -- running --

    def start(self):
        self.t_start = time.monotonic()
        for i in range(self.nthreads):
            t = threading.Thread(target=self._worker, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self, timeout=30):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout)
        self.t_stop = time.monotonic()
        assert not any(t.is_alive() for t in self.threads), "a load thread hung"

    def _note(self, r, what):
        k = r.status if r.status is not None else r.err
        with self.lk:
            self.statuses[k] = self.statuses.get(k, 0) + 1
            self.latencies.append((r.t0, r.elapsed, r.status, what))
            if r.status is not None and r.status >= 500:
                try:
                    j = r.json()
                    code = j.get("code")
                    if code == "timeout":   # which wait ran out
                        code = "timeout (%s)" % j.get("detail", "")
                except ValueError:
                    code = "?"
                if r.status == 503 and not r.headers.get("retry-after"):
                    code = "%s (no Retry-After)" % code
                if not r.headers.get("content-type", "").startswith("application/problem+json"):
                    code = "%s (not problem+json)" % code
                self.codes[(r.status, code)] = self.codes.get((r.status, code), 0) + 1

    def _do(self, conn, w):
        """One attempt at a write; records the answer if it is definitive."""
        w.attempts += 1
        r = self._call(conn, w.user, w.method, w.path, w.body, w.key)
        self._note(r, w.kind)
        if r.status == 401:
            self.login(conn, w.user)  # the cache lost the session
        if w.definitive(r):
            w.status, w.resp = r.status, r.body
        if r.status is None or r.status >= 500:
            time.sleep(0.05)          # a client backs off a little (not the full Retry-After)
        return r

    def _worker(self, i):
        rng = random.Random(1000 + i)
        conn = Conn(self.port)
        me = self.users[i]
        ops = [op for op, n in self.MIX for _ in range(n)]
        end = time.monotonic() + 600
        while not self.stop_ev.is_set() and time.monotonic() < end:
            if self.pause_ev.is_set():
                time.sleep(0.01)
                continue
            op = rng.choice(ops)
            if op == "item":
                r = self._call(conn, None, "GET", "/v1/items/%d" % rng.choice(self.items))
                self._note(r, "item")
                if r.status is None or r.status >= 500:
                    time.sleep(0.05)
            elif op == "deposit":
                amt = rng.randint(1, 5000)
                w = Write("deposit", me, "POST", "/v1/accounts/%d/deposits" % me.account, {"amount_cents": amt},
                          uuid.uuid4().hex, amt)
                self._add(w)
                self._do(conn, w)
            elif op == "transfer":
                to = rng.choice([u for u in self.users if u is not me] or [me])
                w = Write("transfer", me, "POST", "/v1/transfers",
                          {"from_account_id": me.account, "to_account_id": to.account,
                           "amount_cents": rng.randint(1, 3000)}, uuid.uuid4().hex)
                self._add(w)
                self._do(conn, w)
            else:
                lines = [{"item_id": rng.choice(self.items), "quantity": rng.randint(1, 3)}]
                w = Write("order", me, "POST", "/v1/orders", {"account_id": me.account, "lines": lines},
                          uuid.uuid4().hex)
                self._add(w)
                self._do(conn, w)
                if w.acked:
                    oid = json.loads(w.resp)["id"]
                    p = Write("pay", me, "POST", "/v1/orders/%d/pay" % oid, None, uuid.uuid4().hex)
                    p.order = oid
                    self._add(p)
                    self._do(conn, p)
        conn.close()

    def _add(self, w):
        with self.lk:
            self.writes.append(w)

    # -- afterwards --

    def settle(self, timeout=60):
        """Resends every write whose outcome is unknown (no answer, 5xx, 401)
        with its own key until it is definitive: the database must then say
        whether it happened, exactly once."""
        conn = Conn(self.port)
        end = time.monotonic() + timeout
        pending = [w for w in self.writes if w.status is None]
        self.unknown = len(pending)
        # orders first: a pay may depend on its order
        pending.sort(key=lambda w: w.kind != "order")
        for w in pending:
            while w.status is None and time.monotonic() < end:
                r = self._call(conn, w.user, w.method, w.path, w.body, w.key)
                if r.status == 401:
                    self.login(conn, w.user)
                    continue
                if w.definitive(r):
                    w.status, w.resp = r.status, r.body
                    break
                time.sleep(0.1)
            assert w.status is not None, "write never settled: %s %s" % (w.kind, w.path)
            if w.kind == "order" and w.acked and not any(p.kind == "pay" and p.order == json.loads(w.resp)["id"]
                                                        for p in self.writes):
                pass      # created, never paid: fine, it stays pending
        conn.close()

    def summary(self):
        dur = (getattr(self, "t_stop", time.monotonic()) - self.t_start)
        n = len(self.latencies)
        return {"threads": self.nthreads, "requests": n, "rps": n / dur if dur > 0 else 0,
                "acked_writes": sum(1 for w in self.writes if w.acked),
                "s500": sum(v for k, v in self.statuses.items() if k == 500),
                "s503": sum(v for k, v in self.statuses.items() if k == 503),
                "errors": sum(v for k, v in self.statuses.items() if not isinstance(k, int)),
                "max_latency": max((e for _, e, _, _ in self.latencies), default=0.0)}

    def hangs(self):
        return [(what, round(e, 2), s) for _, e, s, what in self.latencies if e > REQUEST_TIMEOUT + HANG_SLACK]


# ---- checking the database ------------------------------------------------------------------------


class PgQ:
    def __init__(self, pg, dbname):
        self.pg, self.dbname = pg, dbname

    def rows(self, sql):
        return self.pg.psql(self.dbname, sql)


class LiteQ:
    def __init__(self, path):
        self.path = path

    def rows(self, sql):
        c = sqlite3.connect("file:%s?mode=ro" % self.path, uri=True, timeout=10)
        try:
            return [[str(v) for v in row] for row in c.execute(sql)]
        finally:
            c.close()


def verify(load, q):
    """Checks the database against every acknowledged write: each present
    exactly once, money conserved.  Returns (lost, duplicated, notes)."""
    lost, dup, notes = 0, 0, []
    acked = [w for w in load.writes if w.acked]
    deposits = sum(w.amount for w in acked if w.kind == "deposit")
    total = int(q.rows("SELECT COALESCE(SUM(balance_cents),0) FROM accounts")[0][0])
    if total != deposits:
        notes.append("sum of balances %d != acknowledged deposits %d" % (total, deposits))
        if total < deposits:
            lost += 1
        else:
            dup += 1
    # transfers: the set of ids acknowledged == the set in the database
    want = {json.loads(w.resp)["id"] for w in acked if w.kind == "transfer"}
    have = [int(r[0]) for r in q.rows("SELECT id FROM transfers")]
    if len(have) != len(set(have)):
        dup += len(have) - len(set(have))
    lost += len(want - set(have))
    dup += len(set(have) - want)
    if want != set(have):
        notes.append("transfers: %d acked, %d in db" % (len(want), len(have)))
    # orders
    want = {json.loads(w.resp)["id"] for w in acked if w.kind == "order"}
    rows = q.rows("SELECT id, status FROM orders")
    have = {int(r[0]): r[1] for r in rows}
    lost += len(want - set(have))
    dup += len(set(have) - want)
    if want != set(have):
        notes.append("orders: %d acked, %d in db" % (len(want), len(have)))
    paid = {w.order for w in acked if w.kind == "pay"}
    unpaid = [o for o in paid if have.get(o) not in ("paid", "shipped")]
    if unpaid:
        lost += len(unpaid)
        notes.append("%d acknowledged payments not paid in db" % len(unpaid))
    # every acknowledged keyed write has exactly one idempotency record
    keys = {}
    for r in q.rows("SELECT user_id, key FROM idempotency_records"):
        keys[(int(r[0]), r[1])] = keys.get((int(r[0]), r[1]), 0) + 1
    missing = [w for w in acked if w.key and (w.user.id, w.key) not in keys]
    if missing:
        lost += len(missing)
        notes.append("%d acknowledged writes without their idempotency record" % len(missing))
    neg = q.rows("SELECT COUNT(*) FROM accounts WHERE balance_cents < 0")[0][0]
    if int(neg):
        notes.append("%s negative balances" % neg)
        lost += 1
    return lost, dup, notes


def record(case, load, lost, dup, notes="", extra=""):
    s = load.summary()
    RESULTS.append(dict(case=case, threads=s["threads"], requests=s["requests"], rps=s["rps"],
                        acked=s["acked_writes"], unknown=getattr(load, "unknown", 0), s503=s["s503"],
                        s500=s["s500"], max_latency=s["max_latency"], lost=lost, dup=dup,
                        notes=(notes + (" " + extra if extra else "")).strip()))

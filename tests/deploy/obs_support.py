"""Helpers for the observability and install suites: a bazaar started with
its log on a file we parse (JSON lines), a Prometheus text parser, the
flag tables read from service/options.c and app/config.c (the sources the env file and man page
must follow), and the listening ports of a process."""
import http.client
import json
import os
import re
import socket
import subprocess
import tempfile
import time

import harness

ROOT = harness.ROOT
BAZAAR = harness.BAZAAR


def flag_table():
    """Every flag name in the source tables: the lifecycle's standard flags
    (service/options.c) and the marketplace's own (app/config.c)."""
    names = []
    for path in (("service", "options.c"), ("app", "config.c")):
        with open(os.path.join(ROOT, *path)) as f:
            names += re.findall(r'\{\s*\.name = "([a-z0-9-]+)",\s*\.type = BZ_FLAG_', f.read())
    assert len(names) > 40 and len(set(names)) == len(names), names
    return names


def env_twin(flag):
    return "BAZAAR_" + flag.upper().replace("-", "_")


class Server(harness.Bazaar):
    """bazaar serve (the fault suite's harness.Bazaar) on free loopback
    ports, SQLite in a temp dir unless db is given, gRPC on its own port
    unless grpc=False, and the JSON log at debug level, read in full."""

    def __init__(self, *flags, db=None, cache="memory", grpc=True, threads=2):
        self.dir = tempfile.mkdtemp(prefix="bazaar-obs-")
        self.grpc_port = harness.free_port() if grpc else None
        extra = ["--log-level", "debug"] + (["--grpc-addr", "127.0.0.1:%d" % self.grpc_port] if grpc else [])
        self.t_start = time.time()
        super().__init__(db or "sqlite://%s/bazaar.db" % self.dir, cache, *(extra + list(flags)), threads=threads,
                         logdir=self.dir)
        self.t_ready = time.time()

    def log_text(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def log_lines(self):
        """The JSON log lines so far (every line must be JSON)."""
        return [json.loads(line) for line in self.log_text().splitlines() if line.strip()]

    def request(self, method, path, body=None, headers=None, port=None, timeout=5.0):
        c = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            hs = dict(headers or {})
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                hs.setdefault("Content-Type", "application/json")
            c.request(method, path, body=data, headers=hs)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def close(self):
        super().close()
        subprocess.run(["rm", "-rf", self.dir])


def parse_metrics(text):
    """{family: type}, and [(name, {labels}, value)] for every sample."""
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            types[name] = typ
        elif line and not line.startswith("#"):
            m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
            assert m, line
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
            samples.append((m.group(1), labels, float(m.group(4))))
    return types, samples


def value(samples, name, **labels):
    vs = [v for n, l, v in samples if n == name and all(l.get(k) == str(x) for k, x in labels.items())]
    assert vs, "no sample %s%r" % (name, labels)
    return vs[0]


def listening_ports(pid):
    """TCP ports the process listens on (from its socket inodes)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            t = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if t.startswith("socket:["):
            inodes.add(t[8:-1])
    ports = set()
    for tab in ("/proc/%d/net/tcp" % pid, "/proc/%d/net/tcp6" % pid):
        with open(tab) as f:
            for line in f.readlines()[1:]:
                p = line.split()
                if p[3] == "0A" and p[9] in inodes:
                    ports.add(int(p[1].split(":")[1], 16))
    return ports


def notify_socket(path):
    """A bound datagram socket for NOTIFY_SOCKET (a path, or '@name')."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + path[1:] if path.startswith("@") else path)
    return s

"""What the soak watches in the server process, from /proc: resident
memory (what stays resident: the least of three reads), open descriptors (and how many of them are client connections on
the HTTP port), threads.  One Sample every few seconds."""
import os
import threading
import time


class Sample:
    __slots__ = ("t", "rss_kib", "fds", "conn_fds", "threads")

    def __init__(self, t, rss_kib, fds, conn_fds, threads):
        self.t, self.rss_kib, self.fds, self.conn_fds, self.threads = t, rss_kib, fds, conn_fds, threads

    @property
    def other_fds(self):
        """Descriptors that are not client connections: listeners, epoll and
        event fds, database and cache sockets, files."""
        return self.fds - self.conn_fds


def _status(pid):
    rss = threads = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def _port_inodes(port):
    """Inodes of the TCP sockets whose local port is `port`, not listening:
    the server's ends of client connections."""
    hexport = ":%04X" % port
    out = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if p[1].endswith(hexport) and p[3] != "0A":
                out.add(p[9])
    return out


def sample(pid, port, t):
    # RSS is the least of three reads 0.1 s apart: what stays resident.
    # Bursts that come and go within a second (+15..20 MiB, a few times a
    # minute under the hordes) are not what a leak looks like, and one
    # caught mid-flight would otherwise count as growth.
    rss, threads = _status(pid)
    for _ in range(2):
        time.sleep(0.1)
        rss = min(rss, _status(pid)[0])
    # Connections come and go while we look: one read of the table before
    # the fd list and one after, so a connection is known by either.
    conns = _port_inodes(port)
    fds = 0
    socks = []
    d = "/proc/%d/fd" % pid
    for fd in os.listdir(d):
        try:
            link = os.readlink(os.path.join(d, fd))
        except OSError:
            continue          # closed while we looked
        fds += 1
        if link.startswith("socket:["):
            socks.append(link[8:-1])
    conns |= _port_inodes(port)
    return Sample(t, rss, fds, sum(1 for i in socks if i in conns), threads)


class Sampler:
    """Samples pid every `every` seconds on a thread; t is seconds since start()."""

    def __init__(self, pid, port, every=2.0):
        self.pid, self.port, self.every = pid, port, every
        self.samples = []
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def start(self, t0):
        self.t0 = t0
        self.t.start()

    def _run(self):
        while not self.stop_ev.is_set():
            try:
                self.samples.append(sample(self.pid, self.port, time.monotonic() - self.t0))
            except (OSError, ValueError):
                return            # the process is gone; the run fails elsewhere
            self.stop_ev.wait(self.every)

    def stop(self):
        self.stop_ev.set()
        self.t.join(10)

"""The soak's hordes, in a process of their own (one epoll loop, no
threads): N idle keep-alive connections and M slowloris connections held
against a bazaar for the whole run.

  * keep-alive: each connection makes a GET /healthz, then idles; it asks
    again after a random 30..80 % of --idle-timeout (so it is never idle
    long enough to be closed), and every answer must be a 200.  A
    keep-alive connection the server closes is counted (ka_dropped) and
    reopened.
  * slowloris: each connection sends a request head that never ends, a
    byte every DRIP seconds; --read-header-timeout cuts it (slow_cut) and
    the horde opens a new one at once, so M are held at any moment.

Every STATS seconds one JSON line on stdout says how many of each are
open and what happened since the start.  SIGTERM ends it.

    python3 hordes.py PORT KEEPALIVE SLOWLORIS IDLE_TIMEOUT_S READ_HEADER_TIMEOUT_S
"""
import errno
import json
import random
import resource
import selectors
import signal
import socket
import sys
import time

DRIP = 3.0                 # seconds between slowloris bytes
STATS = 2.0                # seconds between stats lines
OPEN_PER_TURN = 400        # new connections per loop turn (the ramp)
KA_REQ = b"GET /healthz HTTP/1.1\r\nHost: soak\r\n\r\n"
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: soak\r\nX-Slow: "


class Hordes:
    def __init__(self, port, n_ka, n_slow, idle_s, header_s):
        self.port, self.n_ka, self.n_slow, self.idle_s, self.header_s = port, n_ka, n_slow, idle_s, header_s
        self.sel = selectors.EpollSelector()
        self.kind = {}          # socket -> "ka" | "slow"
        self.buf = {}           # ka socket -> bytes of the answer so far
        self.sent_at = {}       # ka socket -> monotonic time of the request in flight
        self.due = {}           # second -> [sockets whose next request/byte is due then]
        self.st = dict(ka_open=0, slow_open=0, ka_req=0, ka_ok=0, ka_bad=0, ka_dropped=0, ka_max_ms=0.0,
                       slow_cut=0, slow_opened=0, connect_err=0)
        self.quit = False
        self.sec = int(time.monotonic())   # the next second whose work is due

    # -- scheduling --

    def _at(self, t, s):
        """Schedules s for second t (or the next second the loop visits)."""
        self.due.setdefault(max(int(t), self.sec), []).append(s)

    def _open(self, kind):
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", self.port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                self.st["connect_err"] += 1
                return False
        except OSError:
            self.st["connect_err"] += 1
            return False
        self.kind[s] = kind
        self.sel.register(s, selectors.EVENT_READ)
        now = time.monotonic()
        if kind == "ka":
            self.st["ka_open"] += 1
            self.buf[s] = b""
            self._at(now + 0.2, s)          # first request once connected
        else:
            self.st["slow_open"] += 1
            self.st["slow_opened"] += 1
            self.buf[s] = None
            self._at(now + 0.2, s)
        return True

    def _drop(self, s):
        kind = self.kind.pop(s, None)
        if kind is None:
            return
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()
        self.buf.pop(s, None)
        self.sent_at.pop(s, None)
        self.st[kind + "_open"] -= 1

    # -- events --

    def _readable(self, s):
        try:
            b = s.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            b = b""
        kind = self.kind[s]
        if kind == "slow":
            # the server answered (408) or closed: cut; a new one replaces it
            self.st["slow_cut"] += 1
            self._drop(s)
            return
        if not b:
            self.st["ka_dropped"] += 1
            self._drop(s)
            return
        got = self.buf[s] + b
        if not got.endswith(b"\r\n\r\nok"):
            if len(got) > 4096:
                self.st["ka_bad"] += 1
                self._drop(s)
            else:
                self.buf[s] = got
            return
        self.buf[s] = b""
        t0 = self.sent_at.pop(s, None)
        if got.startswith(b"HTTP/1.1 200"):
            self.st["ka_ok"] += 1
        else:
            self.st["ka_bad"] += 1
        if t0 is not None:
            self.st["ka_max_ms"] = max(self.st["ka_max_ms"], (time.monotonic() - t0) * 1e3)
        self._at(time.monotonic() + self.idle_s * random.uniform(0.3, 0.8), s)

    def _due(self, s):
        if s not in self.kind:
            return
        try:
            if self.kind[s] == "ka":
                if s in self.sent_at:          # still waiting for the last answer
                    self._at(time.monotonic() + 1, s)
                    return
                s.send(KA_REQ)
                self.sent_at[s] = time.monotonic()
                self.st["ka_req"] += 1
            else:
                s.send(SLOW_HEAD if self.buf[s] is None else b"z")
                self.buf[s] = b""
                self._at(time.monotonic() + DRIP, s)
        except (BlockingIOError, InterruptedError):
            self._at(time.monotonic() + 1, s)
        except OSError as e:
            # reset or refused by the server: a drop; the horde reopens it
            k = "err_" + errno.errorcode.get(e.errno, str(e.errno))
            self.st[k] = self.st.get(k, 0) + 1
            if self.kind[s] == "ka":
                self.st["ka_dropped"] += 1
            else:
                self.st["slow_cut"] += 1
            self._drop(s)

    # -- the loop --

    def run(self):
        next_stats = time.monotonic()
        start = time.monotonic()
        while not self.quit:
            # Keep both hordes at their size (a ramp of OPEN_PER_TURN).
            n = 0
            while self.st["ka_open"] < self.n_ka and n < OPEN_PER_TURN:
                if not self._open("ka"):
                    break
                n += 1
            # the first round of slowloris over one read-header-timeout
            ramp = self.n_slow * min(1.0, (time.monotonic() - start) / self.header_s) + 1
            while self.st["slow_open"] < min(ramp, self.n_slow) and n < OPEN_PER_TURN:
                if not self._open("slow"):
                    break
                n += 1
            # Stats right after the hordes were topped up: what is held.
            now = time.monotonic()
            if now >= next_stats:
                line = dict(self.st, t=round(now - start, 1))
                line["ka_max_ms"] = round(line["ka_max_ms"], 1)
                print(json.dumps(line), flush=True)
                next_stats = now + STATS
            for key, _ in self.sel.select(0.05):
                if key.fileobj in self.kind:
                    self._readable(key.fileobj)
            now = time.monotonic()
            while self.sec <= int(now):
                todo = self.due.pop(self.sec, [])
                self.sec += 1
                for s in todo:
                    self._due(s)


def main():
    port, n_ka, n_slow = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    idle_s, header_s = float(sys.argv[4]), float(sys.argv[5])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n_ka + n_slow + 256
    if hard < want:
        print(json.dumps({"error": "RLIMIT_NOFILE hard limit %d < %d" % (hard, want)}), flush=True)
        sys.exit(2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    h = Hordes(port, n_ka, n_slow, idle_s, header_s)
    signal.signal(signal.SIGTERM, lambda *_: setattr(h, "quit", True))
    h.run()


if __name__ == "__main__":
    main()

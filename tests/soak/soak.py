"""make soak: the long run (issue #13 part 5).

For each backend (SQLite + in-process cache; PostgreSQL + Redis), a real
bazaar serves, for --seconds, the mixed load of mixed.py while hordes.py
holds 10,000 idle keep-alive and 2,000 slowloris connections against it.
Every few seconds the server's RSS, descriptors and threads are sampled;
answers are binned into windows (p50/p99, 5xx by code).  After warm-up
(the first 20 %, at least 30 s) the run must show (verdict.py): RSS and descriptors flat,
no 5xx but the designed 503s, no connection errors, p99 stable, both
hordes held, every acknowledged write in the database exactly once, and
a clean exit on SIGTERM.  One table per backend; exit 1 on any failure.

    python3 soak.py --seconds 600 [--backends sqlite,postgres]
"""
import argparse
import gc
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
import mixed  # noqa: E402
import verdict  # noqa: E402
from sampler import Sampler  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
IDLE_TIMEOUT = 120            # s: the keep-alive horde asks again well before
READ_HEADER_TIMEOUT = 20      # s: cuts each slowloris; the horde reopens it
SAMPLE_EVERY = 2.0


class HordeProc:
    """hordes.py in a subprocess; keeps its stats lines."""

    def __init__(self, port, n_ka, n_slow):
        self.n_ka, self.n_slow = n_ka, n_slow
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "hordes.py"), str(port), str(n_ka),
                                      str(n_slow), str(IDLE_TIMEOUT), str(READ_HEADER_TIMEOUT)], stdout=subprocess.PIPE, text=True)
        self.lines = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def last(self):
        return self.lines[-1] if self.lines else {}

    def full(self):
        s = self.last()
        return s.get("ka_open") == self.n_ka and s.get("slow_open") == self.n_slow and s.get("ka_ok", 0) >= self.n_ka

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.t.join(10)


class Windows:
    """Answers binned by when they were sent: latency lists and status counts."""

    def __init__(self, width):
        self.width = width
        self.lat = {}             # window -> [seconds]
        self.status = {}          # window -> {status: n}
        self.kinds = {}           # kind -> {status: n}

    def take(self, load, t0):
        with load.lk:
            got, load.latencies = load.latencies, []
        for ts, el, st, kind in got:
            w = int(max(0.0, ts - t0) // self.width)
            d = self.status.setdefault(w, {})
            d[st] = d.get(st, 0) + 1
            k = self.kinds.setdefault(kind, {})
            k[st] = k.get(st, 0) + 1
            if kind != "stream":
                self.lat.setdefault(w, []).append(el)


def nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < want:
        sys.exit("soak: RLIMIT_NOFILE hard limit %d is below the %d descriptors the hordes need" % (hard, want))
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))


def run_backend(name, args):
    tmp = tempfile.mkdtemp(prefix="bazaar-soak.")
    pg = redis = None
    if name == "sqlite":
        path = os.path.join(tmp, "soak.db")
        db, cache = "sqlite://" + path, "memory"
        query = lambda: harness.LiteQ(path)  # noqa: E731
    else:
        pg, redis = harness.Postgres(), harness.Redis()
        dbname = pg.createdb()
        db, cache = pg.url(dbname), redis.url(0)
        query = lambda: harness.PgQ(pg, dbname)  # noqa: E731
    conns = args.conns + args.slow
    bz = hordes = load = sampler = None
    try:
        bz = harness.Bazaar(db, cache, "--max-conns", str(conns + 500), "--idle-timeout", "%ds" % IDLE_TIMEOUT,
                            "--read-header-timeout", "%ds" % READ_HEADER_TIMEOUT, ulimit_n=conns + 2000,
                            logdir=tmp)
        load = mixed.MixedLoad(bz.url, nthreads=args.workers)
        hordes = HordeProc(bz.port, args.conns, args.slow)
        ok = harness.wait_for(lambda: hordes.full() or hordes.proc.poll() is not None, 180, 0.5)
        assert ok and hordes.proc.poll() is None, "hordes not held: %s" % hordes.last()
        print("[%s] hordes held: %s" % (name, hordes.last()), flush=True)
        h0 = len(hordes.lines)
        # at least six windows after the warm-up, so the p99 rule has
        # thirds to compare (a 130-s run judged after 100 s had two)
        win = Windows(max(5.0, min(args.seconds / 10.0, (args.seconds - warmup_s(args)) / 6.0)))
        sampler = Sampler(bz.proc.pid, bz.port, SAMPLE_EVERY)
        t0 = time.monotonic()
        sampler.start(t0)
        load.start()
        while time.monotonic() - t0 < args.seconds:
            time.sleep(SAMPLE_EVERY)
            win.take(load, t0)
            # The recorded writes only grow: keep them out of the
            # collector's full passes, which would slow the clients.
            gc.freeze()
            assert bz.proc.poll() is None, "bazaar exited during the soak:\n" + bz.log()
            assert hordes.proc.poll() is None, "the hordes process died"
        elapsed = time.monotonic() - t0
        load.stop()
        sampler.stop()
        win.take(load, t0)
        hstats = hordes.lines[h0:]
        hordes.stop()
        # Everything written must be in the database exactly once.
        load.settle(60)
        lost, dup, notes = harness.verify(load, query())
        bz.signal(signal.SIGTERM)
        rc = bz.wait(30)
        with open(bz.logpath, errors="replace") as f:
            log = f.read()
        return report(name, args, load, win, sampler.samples, hstats, elapsed, (lost, dup, notes), rc, log)
    finally:
        if hordes:
            hordes.stop()
        if load and not load.stop_ev.is_set():
            load.stop_ev.set()
        if sampler:
            sampler.stop()
        if bz:
            bz.close()
        if pg:
            pg.close()
        if redis:
            redis.close()
        subprocess.run(["rm", "-rf", tmp])


def warmup_s(args):
    """The part of the run not judged: the caches' first TTL, the pools
    and the slowloris churn settle in; short (CI) runs still get 30 s."""
    return max(args.seconds * args.warmup, min(30.0, args.seconds / 2))


def report(name, args, load, win, samples, hstats, elapsed, checked, rc, log):
    """Prints the run's table and verdicts; returns the failures."""
    warm = warmup_s(args)
    post = [s for s in samples if warm <= s.t <= elapsed]
    fails = []
    print("\n== soak: %s, %.0f s (warm-up %.0f s), %d workers + sign-ups + streams, hordes %d keep-alive + %d slowloris"
          % (name, elapsed, warm, args.workers, args.conns, args.slow))
    print("%6s %7s %6s %8s %8s %6s %8s %7s %6s %5s %6s %6s" % ("window", "t_s", "reqs", "p50_ms", "p99_ms", "5xx",
                                                            "rss_MiB", "fds", "other", "thr", "ka", "slow"))
    p99_post = []
    for w in sorted(set(win.lat) | set(win.status)):
        lo, hi = w * win.width, (w + 1) * win.width
        lat = sorted(win.lat.get(w, []))
        n5 = sum(v for k, v in win.status.get(w, {}).items() if isinstance(k, int) and k >= 500)
        ss = [s for s in samples if lo <= s.t < hi]
        hs = [h for h in hstats if lo <= h["t"] - hstats[0]["t"] < hi] if hstats else []
        last = ss[-1] if ss else None
        p99 = verdict.percentile(lat, 0.99)
        if lo >= warm and len(lat) >= 50 and hi <= elapsed + 1:
            p99_post.append(p99)
        print("%6d %7.0f %6d %8.2f %8.2f %6d %8.1f %7s %6s %5s %6s %6s" % (
            w, hi, len(lat), verdict.percentile(lat, 0.5) * 1e3, p99 * 1e3, n5,
            last.rss_kib / 1024 if last else 0, last.fds if last else "-", last.other_fds if last else "-",
            last.threads if last else "-", min(h["ka_open"] for h in hs) if hs else "-",
            min(h["slow_open"] for h in hs) if hs else "-"))
    # requests by kind
    print("requests by kind (status: count):")
    total = 0
    bad = {}
    for kind in sorted(win.kinds):
        d = win.kinds[kind]
        total += sum(d.values())
        print("  %-12s %7d  %s" % (kind, sum(d.values()), ", ".join("%s: %d" % (k, v) for k, v in
                                                                  sorted(d.items(), key=lambda kv: str(kv[0])))))
        for st, n in d.items():
            if mixed.unexpected(kind, st):
                bad["%s %s" % (kind, st)] = n
    print("  total %d requests in %.0f s (%.0f/s); %d sign-ups; %d event streams, %d order events"
          % (total, elapsed, total / elapsed, load.signups, load.streams, load.sse_events))
    print("5xx by code: %s" % ({"%d %s" % k: v for k, v in load.codes.items()} or "none"))
    if post:
        rss = [s.rss_kib for s in post]
        fds = [s.fds for s in post]
        other = [s.other_fds for s in post]
        ok_rss, r_rss = verdict.flat(rss)
        ok_fds, r_fds = verdict.flat(fds)
        ok_oth, sp_oth = verdict.within(other, verdict.OTHER_FDS_SLACK)
        print("after warm-up (%d samples): RSS %.1f -> %.1f MiB (min %.1f, max %.1f; smoothed max/min %.3f); "
              "fds %d -> %d (max/min %.3f); other fds %d -> %d (spread %d); threads %d -> %d"
              % (len(post), rss[0] / 1024, rss[-1] / 1024, min(rss) / 1024, max(rss) / 1024, r_rss, fds[0], fds[-1],
                 r_fds, other[0], other[-1], sp_oth, post[0].threads, post[-1].threads))
        if not ok_rss:
            fails.append("RSS not flat: smoothed max/min %.3f > %.2f" % (r_rss, 1 + verdict.TOLERANCE))
        if not ok_fds:
            fails.append("fds not flat: smoothed max/min %.3f > %.2f" % (r_fds, 1 + verdict.TOLERANCE))
        if not ok_oth:
            fails.append("non-connection fds moved by %d (> %d)" % (sp_oth, verdict.OTHER_FDS_SLACK))
        if len(set(s.threads for s in post)) > 1:
            fails.append("thread count changed: %s" % sorted(set(s.threads for s in post)))
    else:
        fails.append("no samples after warm-up")
    if len(p99_post) < 3:
        fails.append("%d latency windows after warm-up: too few to judge p99 (3 at least)" % len(p99_post))
    ok_p99, f99, l99 = verdict.p99_stable(p99_post)
    print("p99 after warm-up: first third %.2f ms, last third %.2f ms (bound %.1fx, floor %.0f ms)"
          % (f99 * 1e3, l99 * 1e3, verdict.P99_RATIO, verdict.P99_FLOOR * 1e3))
    if not ok_p99:
        fails.append("p99 grew: %.2f ms -> %.2f ms" % (f99 * 1e3, l99 * 1e3))
    undesigned = {k: v for k, v in load.codes.items() if k not in mixed.DESIGNED_5XX}
    if undesigned:
        fails.append("5xx not designed: %s" % undesigned)
    if bad:
        fails.append("unexpected answers: %s" % bad)
    if hstats:
        h = hstats[-1]
        ka_min = min(x["ka_open"] for x in hstats)
        slow_min = min(x["slow_open"] for x in hstats)
        print("hordes: keep-alive held >= %d (requests %d, ok %d, bad %d, dropped by server %d, slowest %.0f ms); "
              "slowloris held >= %d (cut by read-header-timeout %d, opened %d); connect errors %d"
              % (ka_min, h["ka_req"], h["ka_ok"], h["ka_bad"], h["ka_dropped"], h["ka_max_ms"], slow_min,
                 h["slow_cut"], h["slow_opened"], h["connect_err"]))
        if ka_min < args.conns * 0.99 or h["ka_bad"] or h["ka_dropped"] > args.conns * 0.01:
            fails.append("keep-alive horde not held (min %d, bad %d, dropped %d)" % (ka_min, h["ka_bad"],
                                                                                    h["ka_dropped"]))
        if slow_min < args.slow * 0.95:
            fails.append("slowloris horde not held (min %d)" % slow_min)
    lost, dup, notes = checked
    print("database: %d acknowledged writes; lost %d, duplicated %d %s"
          % (sum(1 for w in load.writes if w.acked), lost, dup, "; ".join(notes)))
    if lost or dup:
        fails.append("database: lost %d, duplicated %d: %s" % (lost, dup, notes))
    if rc != 0:
        fails.append("bazaar exited %s on SIGTERM" % rc)
    worst = [line for line in log.splitlines() if '"level":"error"' in line or "fatal" in line]
    if worst:
        fails.append("%d error lines in the server log, first: %s" % (len(worst), worst[0][:300]))
    for f in fails:
        print("FAIL [%s] %s" % (name, f))
    print("%s [%s]" % ("PASS" if not fails else "FAILED", name), flush=True)
    return fails


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--conns", type=int, default=10000, help="idle keep-alive connections held")
    ap.add_argument("--slow", type=int, default=2000, help="slowloris connections held")
    ap.add_argument("--workers", type=int, default=6, help="mixed-load client threads")
    ap.add_argument("--warmup", type=float, default=0.2, help="fraction of the run not judged (at least 30 s)")
    args = ap.parse_args()
    if not os.access(harness.BAZAAR, os.X_OK):
        sys.exit("soak: no %s (make first)" % harness.BAZAAR)
    nofile(256)
    fails = {}
    for name in args.backends.split(","):
        if name not in ("sqlite", "postgres"):
            sys.exit("soak: --backends: unknown backend %r (sqlite, postgres)" % name)
        fails[name] = run_backend(name, args)
    print("\n== soak summary: " + ", ".join("%s %s" % (n, "PASS" if not f else "FAILED") for n, f in fails.items()))
    sys.exit(1 if any(fails.values()) else 0)


if __name__ == "__main__":
    main()

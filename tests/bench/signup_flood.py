#!/usr/bin/env python3
"""tests/bench/signup_flood.py [BAZAAR_BINARY] — deposit latency while 16
threads sign up as fast as they can (issue 13): starts `bazaar serve` on a
fresh SQLite database with the in-process cache, measures deposit p50/p95
quiet, then during the flood, and prints both with the sign-up outcome.

Before the hashing pool the hashes held the offload pool that SQLite
commits need (deposit p95 480-630 ms during the flood); with it, deposits
keep their latency and the surplus sign-ups are refused 503 overloaded."""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import requests

BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../build/bazaar")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000


def deposits(url, tok, acct, n):
    s = requests.Session()
    h = {"Authorization": "Bearer " + tok}
    out = []
    for _ in range(n):
        h["Idempotency-Key"] = uuid.uuid4().hex
        t0 = time.monotonic()
        r = s.post(url + "/v1/accounts/%d/deposits" % acct, json={"amount_cents": 1}, headers=h, timeout=30)
        out.append(time.monotonic() - t0)
        assert r.status_code == 201, r.text
    return out


def main():
    tmp = tempfile.mkdtemp(prefix="bz-flood-")
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    p = subprocess.Popen([BIN, "serve", "--http-addr", "127.0.0.1:%d" % port, "--grpc-addr", "off", "--db",
                          "sqlite://%s/b.db" % tmp, "--login-rate-limit", "100000/min", "--log-level", "error"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                requests.get(url + "/healthz", timeout=0.2)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        requests.post(url + "/v1/users", json={"email": "p@example.com", "name": "P", "password": "password123"})
        tok = requests.post(url + "/v1/sessions", json={"email": "p@example.com", "password": "password123"}).json()[
            "token"]
        acct = requests.post(url + "/v1/accounts", json={"currency": "USD"},
                             headers={"Authorization": "Bearer " + tok}).json()["id"]
        quiet = deposits(url, tok, acct, 100)
        stop = threading.Event()
        codes = []

        def flood(i):
            s = requests.Session()
            n = 0
            while not stop.is_set():
                r = s.post(url + "/v1/users", json={"email": "f%d-%d@example.com" % (i, n), "name": "F",
                                                    "password": "password123"}, timeout=60)
                codes.append(r.status_code)
                if r.status_code == 503:
                    time.sleep(0.01)
                n += 1

        ts = [threading.Thread(target=flood, args=(i,)) for i in range(16)]
        for t in ts:
            t.start()
        time.sleep(1)
        during = deposits(url, tok, acct, 100)
        stop.set()
        for t in ts:
            t.join()
        print("deposit p50/p95 quiet: %.1f / %.1f ms; during a 16-thread sign-up flood: %.1f / %.1f ms "
              "(sign-ups: %d created, %d refused 503)" % (pct(quiet, .5), pct(quiet, .95), pct(during, .5),
                                                          pct(during, .95), codes.count(201), codes.count(503)))
    finally:
        p.terminate()
        p.wait(20)


main()

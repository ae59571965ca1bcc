"""bazaar itself dies (SIGKILL) or is told to stop (SIGTERM) under load."""
import http.client
import json
import signal
import subprocess
import time
import uuid

import pytest

from common import finish, wait_ready
from harness import Bazaar, Conn, Load, PgQ, REQUEST_TIMEOUT, get, verify, wait_for


@pytest.fixture
def world(pg, redis, request):
    n = 15 if "kill" in request.node.name else 14
    subprocess.run(["redis-cli", "-p", str(redis.port), "-n", str(n), "FLUSHDB"], capture_output=True, timeout=10)
    dbname = pg.createdb()
    return pg.url(dbname), redis.url(n), PgQ(pg, dbname)


def test_bazaar_sigkilled_under_write_load(world):
    db, cache, q = world
    srv = Bazaar(db, cache)
    try:
        load = Load(srv.url)
        load.MIX = (("item", 10), ("deposit", 30), ("transfer", 30), ("order", 30))
        load.start()
        time.sleep(2.5)
        srv.signal(signal.SIGKILL)
        srv.proc.wait(10)
        time.sleep(0.5)
        srv.start()           # same port, same database, same Redis
        time.sleep(1.5)
        load.stop()
        load.settle()
        lost, dup, notes = verify(load, q)
        assert not notes, notes
        # replay every acknowledged write with its key: the original answer,
        # marked replayed, and no second effect
        conn = Conn(srv.port)
        bad = []
        acked = [w for w in load.writes if w.acked]
        refused = [w for w in load.writes if w.status is not None and not w.acked and w.status in (409, 422)]
        for w in acked + refused:   # business refusals are recorded and replayed too
            h = {"Authorization": "Bearer " + w.user.token, "Idempotency-Key": w.key}
            r = conn.request(w.method, w.path, w.body, h)
            if r.status != w.status or r.headers.get("idempotent-replayed") != "true" or \
                    json.loads(r.body) != json.loads(w.resp):
                bad.append((w.kind, w.status, r.status, r.headers.get("idempotent-replayed")))
        conn.close()
        lost2, dup2, notes2 = verify(load, q)
        # paid orders still ship (the fulfilment queue is in the database)
        paid = {w.order for w in acked if w.kind == "pay"}
        shipped = wait_for(lambda: all(r[0] == "shipped" for r in q.rows(
            "SELECT status FROM orders WHERE id IN (%s)" % ",".join(str(int(o)) for o in paid))), 30, 0.5) \
            if paid else True
        from harness import record
        record("6 bazaar SIGKILLed under write load, restarted", load, lost + lost2 + len(bad), dup + dup2,
               "; ".join(notes + notes2), "%d acked writes and %d refusals replayed: %d differed; %d paid orders %s" % (
                   len(acked), len(refused), len(bad), len(paid), "all shipped" if shipped else "NOT all shipped"))
        assert not bad, bad[:10]
        assert not notes2 and lost2 == 0 and dup2 == 0, notes2
        assert shipped, "paid orders did not ship after the restart"
        assert load.summary()["s500"] == 0, (load.statuses, load.codes)
    finally:
        srv.close()


def test_sigterm_under_load_fails_nothing(world):
    db, cache, q = world
    srv = Bazaar(db, cache, "--shutdown-grace", "10s")
    try:
        load = Load(srv.url)
        load.start()
        time.sleep(2.5)
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        rc = srv.proc.wait(20)
        took = time.monotonic() - t0
        load.stop()
        assert rc == 0, (rc, srv.log())
        fails = {k: v for k, v in load.statuses.items() if (isinstance(k, int) and k >= 500) or
                 k in ("IncompleteRead", "ConnectionResetError")}
        closed = {k: v for k, v in load.statuses.items() if not isinstance(k, int)}
        srv.start()
        wait_ready(srv)
        load.settle()
        lost, dup, notes = verify(load, q)
        from harness import record
        record("7 SIGTERM under load", load, lost, dup, "; ".join(notes),
               "exit %d after %.1f s; failed %d; refused/closed before a response %s" % (
                   rc, took, sum(fails.values()), closed or 0))
        assert not fails, (fails, load.codes)
        assert not notes and lost == 0 and dup == 0, notes
    finally:
        srv.close()

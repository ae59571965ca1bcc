"""Steps the cases share."""
import time

from harness import HANG_SLACK, REQUEST_TIMEOUT, Conn, Write, get, record, verify, wait_for


def probe(load, what="cold"):
    """During an outage: one uncached item GET and one keyed deposit, each
    timed.  Returns [(kind, Resp)]; the deposit joins the load's writes, so
    settle() finds out whether it happened."""
    conn = Conn(load.port)
    out = []
    r = conn.request("GET", "/v1/items/%d" % load.cold.pop())
    out.append(("item", r))
    u = load.users[0]
    import uuid
    w = Write("deposit", u, "POST", "/v1/accounts/%d/deposits" % u.account, {"amount_cents": 7}, uuid.uuid4().hex, 7)
    load._add(w)
    out.append(("deposit", load._do(conn, w)))
    conn.close()
    return out


def assert_unavailable(resps, codes=("unavailable",), fast=None):
    """Each answer is 503 problem+json with one of codes and Retry-After,
    within the request timeout (or within `fast` seconds)."""
    limit = fast if fast is not None else REQUEST_TIMEOUT + HANG_SLACK
    for kind, r in resps:
        assert r.status == 503, (kind, r.status, r.err, r.body[:200])
        assert r.headers.get("content-type", "").startswith("application/problem+json"), (kind, r.headers)
        assert r.json().get("code") in codes, (kind, r.body)
        assert r.headers.get("retry-after"), (kind, r.headers)
        assert r.elapsed <= limit, (kind, r.elapsed)


def readyz(srv, timeout=3.0):
    st, _, body = get(srv.url + "/readyz", timeout)
    return st, body


def wait_ready(srv, timeout=20):
    t0 = time.monotonic()
    ok = wait_for(lambda: readyz(srv)[0] == 200, timeout, 0.1)
    assert ok, "bazaar did not become ready again by itself"
    return time.monotonic() - t0


def recovered(load, seconds=2.0):
    """Successful requests in the last `seconds` of load."""
    now = time.monotonic()
    return sum(1 for t0, e, s, _ in list(load.latencies) if t0 >= now - seconds and s is not None and s < 300)


def finish(case, load, q, extra="", codes=("unavailable",)):
    """Stops the load, settles unknown outcomes, checks the database, records
    the case and asserts: nothing lost or duplicated, no 500, no hang, and
    every 5xx a 503 problem+json with Retry-After and one of `codes`."""
    load.stop()
    load.settle()
    lost, dup, notes = verify(load, q)
    hangs = load.hangs()
    seen = ", ".join("%d %s: %d" % (s, c, n) for (s, c), n in sorted(load.codes.items()))
    record(case, load, lost, dup, "; ".join(notes), extra + ("; 5xx: " + seen if seen else ""))
    assert all(s == 503 and c.split(" (")[0] in codes for (s, c) in load.codes), load.codes
    assert not notes and lost == 0 and dup == 0, notes
    assert load.summary()["s500"] == 0, (load.statuses, load.codes)
    assert not hangs, hangs[:10]

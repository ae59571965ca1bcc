"""The fault suite: real bazaar, PostgreSQL and Redis processes that the
tests break (stop, kill, freeze, cut off, fill up) under steady load, then
check the database against every acknowledged response.  At the end a
table of every case is printed (quote it)."""
import os
import sys

import pytest

# the shared harness of every Python suite (tests/lib)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from harness import RESULTS, REQUEST_TIMEOUT, Postgres, Redis  # noqa: E402


@pytest.fixture(scope="session")
def pg():
    p = Postgres()
    yield p
    p.close()


@pytest.fixture(scope="session")
def redis():
    r = Redis()
    yield r
    r.close()


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("fault cases (request timeout %gs; lost and duplicated must be 0)" % REQUEST_TIMEOUT)
    hdr = "| case | load | requests | req/s | acked writes | settled later | 503 | 500 | max latency | lost | dup | notes |"
    tr.write_line(hdr)
    tr.write_line("|" + "---|" * (hdr.count("|") - 1))
    for r in RESULTS:
        tr.write_line("| %s | %d client threads | %d | %.0f | %d | %d | %d | %d | %.2f s | %d | %d | %s |" % (
            r["case"], r["threads"], r["requests"], r["rps"], r["acked"], r["unknown"], r["s503"], r["s500"],
            r["max_latency"], r["lost"], r["dup"], r["notes"]))

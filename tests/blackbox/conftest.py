"""Fixtures for the black-box suites: real server processes on free
loopback ports, real sockets and HTTP clients.  What is not a fixture is in
the harness every Python suite shares (tests/lib: harness, rest, rawhttp,
grpc_stubs, h2c), put on the path here."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import start_testd  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def services():
    """This process's share of tests/with_services.sh (under pytest-xdist a
    worker's own Redis, started on first use); stopped at the end."""
    yield
    harness.close_services()


@pytest.fixture
def testd():
    """A fresh http_testd per test with the default settings."""
    s = start_testd()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def shared_testd():
    """One http_testd for a module's read-only tests."""
    s = start_testd("--read-header-timeout", "2s", "--max-header-bytes", "4096",
                    "--max-body-bytes", "65536")
    yield s
    s.stop()

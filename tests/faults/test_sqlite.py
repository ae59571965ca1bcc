"""SQLite + the in-process cache: the disk fills up; the process runs out
of file descriptors."""
import errno
import os
import socket
import subprocess
import tempfile
import time

import pytest

from common import finish, recovered
from harness import Bazaar, Conn, LiteQ, Load, get, wait_for


@pytest.fixture
def small_fs():
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    d = tempfile.mkdtemp(prefix="bazaar-faults-fs.")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", d], check=True, timeout=30)
    yield d
    subprocess.run(["umount", "-l", d], timeout=30)
    os.rmdir(d)


def fill(d):
    """Fills the filesystem at d (bounded); returns the filler's path."""
    path = os.path.join(d, "filler")
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        for _ in range(16 * 1024 * 1024 // 65536 + 16):
            try:
                f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
        for _ in range(64):   # the last few bytes
            try:
                f.write(b"\0" * 512)
            except OSError:
                break
    return path


def test_sqlite_disk_full(small_fs):
    dbpath = os.path.join(small_fs, "bazaar.db")
    srv = Bazaar("sqlite://" + dbpath, "memory")
    try:
        load = Load(srv.url)
        load.start()
        time.sleep(1.5)
        filler = fill(small_fs)
        t_full = time.monotonic()
        time.sleep(3)
        full = [(w, s) for t0, _, s, w in list(load.latencies) if t0 > t_full + 0.5]
        writes_503 = sum(1 for w, s in full if w != "item" and s == 503)
        reads_ok = sum(1 for w, s in full if w == "item" and s == 200)
        os.unlink(filler)
        t_free = time.monotonic()
        time.sleep(2.5)
        after = [(w, s) for t0, _, s, w in list(load.latencies) if t0 > t_free + 1.0]
        writes_ok = sum(1 for w, s in after if w != "item" and s is not None and s < 300)
        assert writes_503 > 0, "the disk never filled up: %s" % load.statuses
        assert reads_ok > 0, "reads stopped while the disk was full"
        assert writes_ok > 0, "writes did not resume once space returned"
        codes = {c for (s, c) in load.codes}
        assert codes <= {"unavailable"}, load.codes
        ic = LiteQ(dbpath).rows("PRAGMA integrity_check")
        finish("8 SQLite disk full 3 s", load, LiteQ(dbpath),
               "503 unavailable to %d writes while full, %d reads served; integrity_check %s" % (
                   writes_503, reads_ok, ic[0][0]))
        assert ic == [["ok"]], ic
    finally:
        srv.close()


def test_file_descriptors_exhausted(tmp_path):
    srv = Bazaar("sqlite://%s" % (tmp_path / "bazaar.db"), "memory", "--db-max-open", "4", "--db-max-idle", "4",
                 ulimit_n=96)
    flood = []
    try:
        load = Load(srv.url)
        load.start()
        time.sleep(1.5)
        t_flood = time.monotonic()
        for _ in range(400):      # far more than the server has descriptors
            s = socket.socket()
            s.settimeout(0.3)
            try:
                s.connect(("127.0.0.1", srv.port))
            except OSError:
                s.close()
                break
            flood.append(s)
        fds = len(os.listdir("/proc/%d/fd" % srv.proc.pid))
        time.sleep(3)
        during = [(w, s) for t0, _, s, w in list(load.latencies) if t0 > t_flood]
        served = sum(1 for _, s in during if s is not None and s < 300)
        assert served > 0, "the connections it had stopped being served"
        for s in flood:
            s.close()
        t_free = time.monotonic()
        ok = wait_for(lambda: get(srv.url + "/healthz", 1.0)[0] == 200, 10, 0.1)
        took = time.monotonic() - t_free
        assert ok, "bazaar did not accept again after descriptors freed up"
        time.sleep(1)
        assert recovered(load) > 0
        finish("9 file descriptors exhausted (ulimit -n 96, %d client sockets)" % len(flood), load,
               LiteQ(str(tmp_path / "bazaar.db")),
               "server at %d fds during the flood; %d requests served meanwhile; accepting again %.1f s after" % (
                   fds, served, took))
    finally:
        for s in flood:
            s.close()
        srv.close()

"""PostgreSQL as deployed, for the deployment suite: a primary with a real
streaming standby (pg_basebackup -R, synchronous replication), and a
pgbouncer in front of a server.  Every process runs on loopback, on a free
port, in a temp dir, and is stopped by PID or by its own data directory.

Replication is synchronous (synchronous_standby_names='*',
synchronous_commit=on): a commit is acknowledged only once the standby has
its WAL, so a failover to the standby loses nothing that was acknowledged.
With asynchronous replication an acknowledged write can be lost on failover
— that is PostgreSQL's contract, not bazaar's."""
import os
import shutil
import signal
import subprocess
import tempfile
import uuid

import harness
from harness import PGBIN, free_port, wait_for

AS_PG = harness._as_postgres()


class Server(harness.Postgres):
    """harness.Postgres (log, url, psql, stop_immediate, freeze, close...)
    that is either initdb'd or a streaming standby of another server (a
    base backup of it), started with replication settings."""

    def __init__(self, base=None):
        self.dir = tempfile.mkdtemp(prefix="bazaar-deploy-pg.")
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        if base is None:
            self._run([PGBIN + "/initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync", "-E",
                       "UTF8", "--locale=C"])
        else:
            # -R writes standby.signal and primary_conninfo; -X stream
            # brings the WAL of the copy along
            self._run([PGBIN + "/pg_basebackup", "-h", "127.0.0.1", "-p", str(base.port), "-U", "postgres", "-D",
                       self.data, "-R", "-X", "stream", "-c", "fast", "--no-sync"])
        self.start()

    def _run(self, argv, timeout=120):
        r = subprocess.run(AS_PG + argv, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, r.stdout + r.stderr
        return r

    def start(self):
        self._run([PGBIN + "/pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "pg.log"), "-w", "-t", "30",
                   "start", "-o", "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=on "
                                  "-c max_connections=200 -c wal_level=replica -c hot_standby=on"
                   % (self.port, self.dir)], 60)

    def promote(self):
        self._run([PGBIN + "/pg_ctl", "-D", self.data, "-w", "-t", "30", "promote"], 60)


class Pair:
    """A primary and its synchronous streaming standby."""

    def __init__(self):
        self.primary = Server()
        self.standby = Server(base=self.primary)
        # only now: the standby's copy of postgresql.auto.conf must not make
        # it wait for a standby of its own once promoted
        self.primary.psql("postgres", "ALTER SYSTEM SET synchronous_standby_names = '*'")
        self.primary.psql("postgres", "SELECT pg_reload_conf()")
        ok = wait_for(lambda: self.primary.psql(
            "postgres", "SELECT sync_state FROM pg_stat_replication")[0][0] == "sync", 30, 0.1)
        assert ok, "the standby did not become synchronous:\n" + self.standby.log()

    def multi_url(self, dbname, extra=""):
        """The libpq multi-host URL: primary first, then the standby; libpq
        takes the first that accepts read-write sessions."""
        return "postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/%s?target_session_attrs=read-write%s" % (
            self.primary.port, self.standby.port, dbname, extra)

    def createdb(self, name):
        self.primary.psql("postgres", "CREATE DATABASE %s" % name)
        # the standby replays it before anyone connects to it there
        assert wait_for(lambda: self.standby.psql("postgres", "SELECT 1 FROM pg_database WHERE datname = '%s'"
                                                  % name), 30, 0.1), "the standby did not replay CREATE DATABASE"

    def close(self):
        self.standby.close()
        self.primary.close()


class Bouncer:
    """pgbouncer in front of server, pool_mode=transaction, a small pool."""

    def __init__(self, server, dbname, pool_size=2):
        self.dir = tempfile.mkdtemp(prefix="bazaar-deploy-pgb.")
        self.port = free_port()
        ini = os.path.join(self.dir, "pgbouncer.ini")
        users = os.path.join(self.dir, "users.txt")
        with open(users, "w") as f:
            f.write('"postgres" ""\n')
        with open(ini, "w") as f:
            f.write("[databases]\n%s = host=127.0.0.1 port=%d dbname=%s\n\n[pgbouncer]\n"
                    "listen_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir =\nauth_type = trust\n"
                    "auth_file = %s\npool_mode = transaction\ndefault_pool_size = %d\nmin_pool_size = 0\n"
                    "reserve_pool_size = 0\nmax_client_conn = 200\nserver_reset_query =\n"
                    "logfile = %s\npidfile = %s\nadmin_users = postgres\n"
                    % (dbname, server.port, dbname, self.port, users, pool_size,
                       os.path.join(self.dir, "pgb.log"), os.path.join(self.dir, "pgb.pid")))
        if os.geteuid() == 0:
            # pgbouncer refuses to run as root
            shutil.chown(self.dir, "postgres")
            for p in (ini, users):
                shutil.chown(p, "postgres")
        self.proc = subprocess.Popen(AS_PG + ["pgbouncer", ini], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ok = wait_for(lambda: self.proc.poll() is not None or subprocess.run(
            ["psql", "-X", "-At", self.url(dbname), "-c", "SELECT 1"], capture_output=True, text=True,
            timeout=5).returncode == 0, 20, 0.1)
        assert ok and self.proc.poll() is None, "pgbouncer did not start: %s" % self.log()

    def url(self, dbname):
        return "postgres://postgres@127.0.0.1:%d/%s" % (self.port, dbname)

    def log(self):
        return harness.tail(os.path.join(self.dir, "pgb.log"))

    def close(self):
        try:
            with open(os.path.join(self.dir, "pgb.pid")) as f:
                os.kill(int(f.read().strip()), signal.SIGTERM)    # pgbouncer itself, under runuser
        except (OSError, ValueError):
            pass
        harness.stop(self.proc, 10)
        shutil.rmtree(self.dir, ignore_errors=True)


def sign_up(conn, tag):
    """A new user, logged in: (id, {"Authorization": ...})."""
    email = "%s-%s@example.com" % (tag, uuid.uuid4().hex[:8])
    r = conn.request("POST", "/v1/users", {"email": email, "name": tag, "password": "correct horse battery"})
    assert r.status == 201, (r.status, r.body)
    uid = r.json()["id"]
    r = conn.request("POST", "/v1/sessions", {"email": email, "password": "correct horse battery"})
    assert r.status == 201, (r.status, r.body)
    return uid, {"Authorization": "Bearer " + r.json()["token"]}

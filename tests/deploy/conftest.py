"""The deployment suite: bazaar against the components it meets in
production (TLS clients, a PostgreSQL standby, pgbouncer, Redis Sentinel,
promtool, an installed tree).  Every process is started here, in a temp dir,
on free loopback ports, and stopped by PID.

The harness every Python suite shares (tests/lib/harness.py: Postgres,
Redis, Proxy, Bazaar, Load, verify) is on the path: import it as `harness`."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))

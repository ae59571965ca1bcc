#!/usr/bin/env bash
# tests/with_services.sh CMD... — runs CMD with a throwaway PostgreSQL and
# Redis on free loopback ports, each in its own temp dir, and stops and
# deletes both afterwards, even when CMD fails or is interrupted.
#
# CMD sees BAZAAR_TEST_PG_URL (postgres://postgres@127.0.0.1:PORT/bazaar_test)
# and BAZAAR_TEST_REDIS_URL (redis://127.0.0.1:PORT/0), plus PGBIN,
# BAZAAR_TEST_PG_DIR and BAZAAR_TEST_REDIS_PORT for tests that restart them.
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export PGBIN

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

tmp=$(mktemp -d /tmp/bazaar-svc.XXXXXX)
chmod 755 "$tmp"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$tmp"
  as_pg=(runuser -u postgres --)
fi
redis_pid=
cleanup() {
  set +e
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  # a test that restarted Redis leaves the new server's pid here
  [ -s "$tmp/redis.pid" ] && kill "$(cat "$tmp/redis.pid")" 2>/dev/null
  if [ -f "$tmp/pg/postmaster.pid" ]; then
    "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$tmp/pg" -m immediate -w stop >/dev/null 2>&1
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

pgport=$(free_port)
"${as_pg[@]}" "$PGBIN/initdb" -D "$tmp/pg" -U postgres -A trust --no-sync -E UTF8 --locale=C >"$tmp/initdb.log" 2>&1 \
  || { cat "$tmp/initdb.log" >&2; exit 1; }
"${as_pg[@]}" "$PGBIN/pg_ctl" -D "$tmp/pg" -l "$tmp/pg.log" -w -t 30 start \
  -o "-p $pgport -k $tmp -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=400" >/dev/null \
  || { cat "$tmp/pg.log" >&2; exit 1; }
"$PGBIN/../bin/createdb" -h 127.0.0.1 -p "$pgport" -U postgres bazaar_test 2>/dev/null \
  || /usr/bin/createdb -h 127.0.0.1 -p "$pgport" -U postgres bazaar_test

redisport=$(free_port)
redis-server --port "$redisport" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" \
  --daemonize no --loglevel warning >"$tmp/redis.log" 2>&1 &
redis_pid=$!
for i in $(seq 100); do
  redis-cli -p "$redisport" ping >/dev/null 2>&1 && break
  sleep 0.05
done

export BAZAAR_TEST_PG_URL="postgres://postgres@127.0.0.1:$pgport/bazaar_test"
export BAZAAR_TEST_PG_DIR="$tmp/pg"
export BAZAAR_TEST_REDIS_URL="redis://127.0.0.1:$redisport/0"
export BAZAAR_TEST_REDIS_PORT="$redisport"
export BAZAAR_TEST_REDIS_PID="$redis_pid"
export BAZAAR_TEST_REDIS_PIDFILE="$tmp/redis.pid"
export BAZAAR_TEST_REDIS_DIR="$tmp"
"$@"

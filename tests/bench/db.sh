#!/usr/bin/env bash
# tests/bench/db.sh — runs bench_db with a throwaway PostgreSQL pinned to
# core 1 and the benchmark pinned to core 0.
set -eu
cd "$(dirname "$0")/../.."
tmpdb=$(mktemp /tmp/bazaar-bench-XXXXXX.db)
trap 'rm -f "$tmpdb" "$tmpdb-wal" "$tmpdb-shm"' EXIT
tests/with_services.sh bash -c '
  pid=$(head -1 "$BAZAAR_TEST_PG_DIR/postmaster.pid")
  taskset -a -p -c 1 "$pid" >/dev/null
  taskset -c 0 build/bench_db "$0" "$BAZAAR_TEST_PG_URL"' "$tmpdb"

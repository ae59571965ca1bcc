#!/usr/bin/env bash
# tests/bench/app.sh — the marketplace side by side with the Go peer
# (../shared/peers/go-bazaar), through ../shared/bench/scenarios/bench_pair.sh:
# both implementations interleaved (A B A B ...), same seed, same pinning
# (server and its PostgreSQL/Redis on core 0, wrk on core 1), ratios per
# round.  Scenarios: healthz, item GET (cache hit), orders list, transfer
# POST, gRPC GetUser (h2load), and item GET with --cache none (one primary-key query), on SQLite
# and on PostgreSQL.
#
#   ROUNDS (default 3), DUR (default 10s), CONFIGS (default below).
set -eu
cd "$(dirname "$0")/../.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared}
PAIR=$SHARED/bench/scenarios/bench_pair.sh
PEER=$SHARED/peers/go-bazaar
if [ ! -x "$PAIR" ]; then echo "bench app: $PAIR not found; skipped"; exit 0; fi
# The peer is built in a copy under build/ (the shared tree may be read-only).
if [ ! -x "$PEER/bin/bazaar" ]; then
  COPY=$ROOT/build/go-bazaar
  if [ ! -x "$COPY/bin/bazaar" ]; then
    echo "bench app: building the Go peer in $COPY" >&2
    rm -rf "$COPY" && mkdir -p "$ROOT/build" && cp -r "$PEER" "$COPY" && chmod -R u+w "$COPY"
    (cd "$COPY" && INSTALL_DEPS=$([ "$(id -u)" = 0 ] && echo 1 || echo 0) ./build.sh) >&2
  fi
  PEER=$COPY
fi
export A_TARGET_CMD="$ROOT/build/bazaar serve" A_SEED_CMD="$ROOT/build/bazaar seed" A_LABEL=c
export B_TARGET_CMD="$PEER/bin/bazaar serve" B_SEED_CMD="$PEER/bin/bazaar seed" B_LABEL=go
export ROUNDS=${ROUNDS:-3} DUR=${DUR:-10s}
CONFIGS=${CONFIGS:-"sqlite:memory:healthz,item,orders,transfer,grpc_getuser sqlite:none:item postgres:redis:healthz,item,orders,transfer,grpc_getuser postgres:none:item"}
for c in $CONFIGS; do
  IFS=: read -r db cache scen <<<"$c"
  echo "== app: DB=$db CACHE=$cache ($scen), $ROUNDS rounds"
  DB=$db CACHE=$cache SCENARIOS="${scen//,/ }" "$PAIR" 2>&1 | grep -v '^>>>'
  echo
done

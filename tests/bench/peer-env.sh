# tests/bench/peer-env.sh — sourced by the benchmarks that drive bazaar and
# the Go peer themselves (pay.sh, reads.sh) after `cd` to the project root,
# with BENCH_NAME set: ROOT, SHARED, SCEN (the shared scenarios, whose
# lib.sh it sources: free ports, throwaway PostgreSQL and Redis), C_BIN and
# GO_BIN (the peer's own build, else the copy app.sh builds under build/).
# Without the shared scenarios the benchmark is skipped (exit 0).
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared}
SCEN=$SHARED/bench/scenarios
if [ ! -f "$SCEN/lib.sh" ]; then echo "bench $BENCH_NAME: $SCEN/lib.sh not found; skipped"; exit 0; fi
. "$SCEN/lib.sh"
export BENCH_LUA_DIR=$SCEN/lua
C_BIN=${C_BIN:-$ROOT/build/bazaar}
if [ -z "${GO_BIN:-}" ]; then
  GO_BIN=$SHARED/peers/go-bazaar/bin/bazaar
  [ -x "$GO_BIN" ] || GO_BIN=$ROOT/build/go-bazaar/bin/bazaar
fi

#!/usr/bin/env bash
# tests/bench/cache.sh — cache get-hit ops/s (memory and Redis backends)
# beside redis-benchmark GET at the same concurrency, in one run: Redis on
# core 1, clients on core 0; ROUNDS rounds, medians.
set -eu
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
tests/with_services.sh bash -c '
  taskset -p -c 1 "$BAZAAR_TEST_REDIS_PID" >/dev/null
  port=$BAZAAR_TEST_REDIS_PORT
  res=$(mktemp)
  for r in $(seq '"$ROUNDS"'); do
    taskset -c 0 build/bench_cache "$BAZAAR_TEST_REDIS_URL" >>"$res"
    taskset -c 0 redis-benchmark -p "$port" -t get -c 64 -n 300000 -d 32 -q --csv 2>/dev/null \
      | awk -F, "/GET/ {gsub(/\"/,\"\",\$2); print \"redisbench_get\", \$2}" >>"$res"
  done
  /usr/bin/python3 - "$res" <<PY
import statistics, sys
from collections import defaultdict
v = defaultdict(list)
for line in open(sys.argv[1]):
    p = line.split()
    if p[0] == "stampede_ms":
        v["stampede_ms"].append(float(p[1])); v["loads"].append(int(p[3])); v["shared"].append(int(p[5]))
    else:
        v[p[0]].append(float(p[1]))
m = {k: statistics.median(x) for k, x in v.items()}
print("%-40s %12s" % ("cache bench (64 concurrent, 1 loop; median of %d)" % len(v["memory_get"]), "ops/s"))
print("%-40s %12.0f" % ("memory backend GET (hit)", m["memory_get"]))
print("%-40s %12.0f" % ("redis backend GET (hit), pool 64", m["redis_get"]))
print("%-40s %12.0f" % ("redis-benchmark -t get -c 64", m["redisbench_get"]))
print("memory / redis-benchmark          %.1fx  (target >= 10x)" % (m["memory_get"] / m["redisbench_get"]))
print("redis backend / redis-benchmark   %.2f   (target >= 0.67, i.e. within 1.5x)" % (m["redis_get"] / m["redisbench_get"]))
print("stampede: 10,000 concurrent misses, 20 ms loader: %.1f ms, loads per run %d, shared %d" % (m["stampede_ms"], max(v["loads"]), min(v["shared"])))
PY
  rm -f "$res"' 2>&1 | grep -v "Killed"

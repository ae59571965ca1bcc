#!/usr/bin/env bash
# tests/bench/run.sh — `make bench`: every benchmark, printed as tables.
# The runtime micro-benchmarks run with the process pinned to cores 0-1.
set -eu
cd "$(dirname "$0")/../.."
echo "== runtime"
taskset -c 0,1 build/bench_rt

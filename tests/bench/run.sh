#!/usr/bin/env bash
# tests/bench/run.sh — `make bench`: every benchmark, printed as tables.
# The runtime micro-benchmarks run with the process pinned to cores 0-1.
set -eu
cd "$(dirname "$0")/../.."
echo "== runtime"
taskset -c 0,1 build/bench_rt
echo
echo "== http: /healthz, bazaar (1 loop) vs nginx (1 worker); server core 0, wrk core 1"
tests/bench/http.sh
echo
echo "== http/2: h2c /healthz, bazaar (1 loop) vs h2o (1 thread); server core 0, h2load core 1"
tests/bench/h2.sh
echo
echo "== tls: /healthz over TLS, bazaar (1 loop) vs nginx (1 worker), same certificate; server core 0, client core 1"
tests/bench/tls.sh
echo
echo "== db: primary-key SELECT through the pool vs the floors"
tests/bench/db.sh
echo
echo "== cache"
tests/bench/cache.sh
echo
echo "== gRPC streaming throughput (ListUsers, ImportItems)"
tests/bench/grpc_stream.sh
echo
echo "== app: bazaar vs the Go peer (bench_pair.sh; gRPC GetUser included)"
tests/bench/app.sh
echo
echo "== the load generator's ceiling: ours, nginx answering a constant response, the Go peer; same wrk script"
tests/bench/ceiling.sh
echo
echo "== reads by primary key on PostgreSQL, --cache none (the reads of one turn share a statement): bazaar vs the Go peer"
tests/bench/reads.sh
echo
echo "== order payment on PostgreSQL + Redis: bazaar vs the Go peer (interleaved, each request a new order)"
tests/bench/pay.sh

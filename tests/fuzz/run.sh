#!/usr/bin/env bash
# tests/fuzz/run.sh SECONDS TARGET... — runs each libFuzzer target for
# SECONDS on a scratch copy of tests/fuzz/corpus/<name>; a crash fails the
# run and its input is kept in tests/fuzz/regression/ for a unit test.
set -u
cd "$(dirname "$0")/../.."
secs=$1; shift
status=0
for t in "$@"; do
  name=${t#fuzz_}
  work=$(mktemp -d /tmp/bazaar-fuzz.XXXXXX)
  cp tests/fuzz/corpus/"$name"/* "$work"/ 2>/dev/null || true
  mkdir -p tests/fuzz/regression
  echo "== fuzz $t for ${secs}s"
  if ! build/fuzz/"$t" -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix=tests/fuzz/regression/"$name"- -print_final_stats=1 "$work" >"$work.log" 2>&1; then
    status=1
    tail -40 "$work.log"
  else
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$work.log" | tail -2
  fi
  rm -rf "$work" "$work.log"
done
[ $status -eq 0 ] && echo "fuzz: $# targets, no crashes"
exit $status

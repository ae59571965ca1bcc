#!/usr/bin/env bash
# tests/run_unit.sh BIN... — runs cmocka test binaries, prints each one's
# report, then one closing line "unit: N passed, N failed".
set -u
passed=0 failed=0 status=0 failures=""
for bin in "$@"; do
  out=$("$bin" 2>&1); rc=$?
  printf '%s\n' "$out"
  # a binary may run several groups: add up every group's counts
  p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | paste -sd+ | bc)
  f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | paste -sd+ | bc)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  fl=$(printf '%s\n' "$out" | sed -n "s|^\[  FAILED  \] \([a-z_0-9]*\)\$|unit: FAILED ${bin##*/}: \1|p" | sort -u)
  [ -n "$fl" ] && failures+="$fl"$'\n'
  if [ $rc -ne 0 ]; then
    status=1
    [ -z "$f" ] && { failed=$((failed + 1)); echo "unit: $bin exited with status $rc"; }
  fi
done
# the failed cases again, last, where a log's tail shows them
[ -n "$failures" ] && printf '%s' "$failures"
echo "unit: $passed passed, $failed failed"
exit $status

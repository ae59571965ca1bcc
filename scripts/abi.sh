#!/usr/bin/env bash
# scripts/abi.sh dump|check LIB — libbazaar's ABI against its baseline.
#
#   scripts/abi.sh dump  build/libbazaar.so.0.1.0   writes abi/libbazaar.abi
#   scripts/abi.sh check build/libbazaar.so.0.1.0   compares LIB with it
#
# The baseline is abidw's description (abigail-tools) of the shared
# library: every exported function and variable with the complete types
# of their parameters, results and fields.  Only the public headers
# (include/bazaar/*.h) count: abidiff is given that directory for both
# sides, so a change to a private type (a connection's state, a driver's
# struct) is no ABI change, while a change to a public struct reached from
# an exported function — a field moved, removed, retyped, a size change —
# is one.
#
# What check allows and what it fails on (docs/ARCHITECTURE.md, "The
# library"):
#   - added functions, variables and types: compatible, allowed (not even
#     listed; abidiff --no-added-syms);
#   - a removed or renamed exported symbol, a changed signature, a changed
#     layout of a public type a program can see: fails (exit 1, with
#     abidiff's report).
# abidiff's exit status is a bit mask: 1 error, 2 usage, 4 an ABI change,
# 8 an incompatible change (a removed symbol).  With added symbols not
# reported, anything but 0 is a failure here.
#
# A deliberate incompatible change regenerates the baseline with
# `make abi-dump` in the same commit and follows the SONAME rule.
set -euo pipefail
cd "$(dirname "$0")/.."

cmd=${1:-}
lib=${2:-}
base=abi/libbazaar.abi
hdrs=$PWD/include/bazaar
if [ -z "$cmd" ] || [ -z "$lib" ]; then
  echo "usage: $0 dump|check LIB" >&2
  exit 2
fi
if ! command -v abidw >/dev/null || ! command -v abidiff >/dev/null; then
  echo "abi: abidw/abidiff are missing (Debian's abigail-tools: scripts/deps.sh test)" >&2
  exit 1
fi
[ -e "$lib" ] || { echo "abi: $lib is missing; run make lib first" >&2; exit 1; }

case "$cmd" in
dump)
  mkdir -p abi
  # Every type, private ones too: check's --hd1 tells them apart by the
  # file each is defined in, so the locations stay (--short-locs: file
  # names, not this checkout's paths).  (abidw --headers-dir
  # --drop-private-types makes a smaller file, but abigail-tools 2.2's
  # abidiff --hd1 aborts reading it back.)
  abidw --no-corpus-path --short-locs --no-elf-needed --out-file "$base.tmp" "$lib"
  mv "$base.tmp" "$base"
  n=$(grep -c '<elf-symbol ' "$base" || true)
  echo "abi: wrote $base ($n exported symbols of $(basename "$lib"))"
  ;;
check)
  [ -e "$base" ] || { echo "abi: no baseline $base; make abi-dump" >&2; exit 1; }
  out=$(mktemp)
  trap 'rm -f "$out"' EXIT
  rc=0
  abidiff --no-corpus-path --no-added-syms --hd1 "$hdrs" --hd2 "$hdrs" "$base" "$lib" >"$out" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    cat "$out" >&2
    if [ $((rc & 3)) -ne 0 ]; then
      echo "abi: abidiff could not compare (exit $rc)" >&2
    else
      what='a changed function, variable or public type'
      [ $((rc & 8)) -eq 0 ] || what='incompatible: an exported symbol is gone'
      echo "abi: $(basename "$lib") breaks the public ABI of $base (abidiff exit $rc: $what)" >&2
      echo "abi: revert the change, or make it deliberate: make abi-dump, and bump the version (docs/ARCHITECTURE.md, \"The library\")" >&2
    fi
    exit 1
  fi
  echo "abi: $(basename "$lib") keeps the public ABI of $base ($(grep -c '<elf-symbol ' "$base") symbols; additions allowed)"
  ;;
*)
  echo "usage: $0 dump|check LIB" >&2
  exit 2
  ;;
esac

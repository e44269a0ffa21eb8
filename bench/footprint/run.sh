#!/usr/bin/env bash
# The code a cached request runs in V8, by function (lines of 64 bytes, instructions):
#   bench/footprint/run.sh [wasm/jwt_claims_filter.wasm]
# Runs bench/footprint/fakehost.mjs twice under callgrind (3,000 and 9,000 timed requests),
# then footprint.py. Code that Envoy's work between two requests pushes out of the CPU's
# caches is fetched again on every request, so these lines cost time that instruction counts
# do not show (README "Performance"). Needs node and valgrind; about two minutes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
module="$(realpath "${1:-$here/../../wasm/jwt_claims_filter.wasm}")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for n in 3000 9000; do
  mkdir "$work/$n"
  (cd "$work/$n" && valgrind --tool=callgrind --dump-instr=yes --smc-check=all-non-file \
    --callgrind-out-file=callgrind.out node --no-liftoff --perf-prof "$here/fakehost.mjs" "$module" "$n" \
    2>valgrind.log | tail -1)
done
python3 "$here/footprint.py" "$work/3000/callgrind.out" "$work"/3000/jit-*.dump 3000 \
  "$work/9000/callgrind.out" "$work"/9000/jit-*.dump 9000

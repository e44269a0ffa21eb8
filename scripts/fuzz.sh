#!/usr/bin/env bash
# Fuzzes the pure modules (fuzz/): token decoding and verification with the request decision,
# JWKS parsing, configuration parsing, claim rendering. Each target runs for a bounded time;
# non-zero if any target crashed (panic, failed invariant, sanitizer report, timeout, OOM).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#
# Installs cargo-fuzz if missing. Runs on the stable toolchain: cargo-fuzz's -Z flags
# (-Zsanitizer=address) are allowed by RUSTC_BOOTSTRAP=1. New inputs go to fuzz/corpus/
# (kept between runs, not committed), crashes to fuzz/artifacts/<target>/; fuzz/seeds/ is the
# committed starting corpus (regenerate: cd fuzz && cargo run --example seeds).
# FUZZ_SANITIZER=none skips AddressSanitizer (faster; the filter's code is safe Rust).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT/fuzz"

SECONDS_PER_TARGET="${1:-60}"
[ $# -gt 0 ] && shift
case "$SECONDS_PER_TARGET" in '' | *[!0-9]*) log "seconds must be a whole number"; exit 2 ;; esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
sanitizer=(--sanitizer "${FUZZ_SANITIZER:-address}")

log "building ${targets[*]}"
cargo fuzz build "${sanitizer[@]}" >/dev/null

# libFuzzer options: inputs up to a little over maxTokenBytes (tokens) or a large config;
# one input may take 10 s and 2 GiB at most, so runaway time or memory counts as a crash.
max_len() { case "$1" in token) echo 12000 ;; claims) echo 4096 ;; *) echo 32768 ;; esac; }

failed=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "seeds/$target"
  dict=()
  [ -f "dicts/$target.dict" ] && dict=("-dict=dicts/$target.dict")
  log "fuzzing $target for ${SECONDS_PER_TARGET}s"
  if cargo fuzz run "${sanitizer[@]}" "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$SECONDS_PER_TARGET" -max_len="$(max_len "$target")" \
      -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
      >"corpus/$target.log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^Done ' "corpus/$target.log" | tr '\n' ' ' >&2 || true
    echo >&2
  else
    failed+=("$target")
    log "$target FAILED; last lines of fuzz/corpus/$target.log:"
    tail -n 40 "corpus/$target.log" >&2
    for artifact in "artifacts/$target"/*; do
      [ -f "$artifact" ] || continue
      log "reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $target $artifact)"
      log "minimize:  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz tmin $target $artifact)"
    done
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  log "crashed: ${failed[*]}"
  exit 1
fi
log "no crash in ${targets[*]} (${SECONDS_PER_TARGET}s each)"

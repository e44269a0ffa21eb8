#!/usr/bin/env bash
# Builds the filter (release, wasm32-wasip1) into wasm/jwt_claims_filter.wasm: the module
# `cargo build --release --target wasm32-wasip1` makes, copied.
#   scripts/build.sh                 the module (what ships)
#   scripts/build.sh --test-panic    also the test-only variant (cargo feature `test-panic`: a
#                                    request whose :path starts with /__jcf_test_panic aborts
#                                    the VM) into wasm/jwt_claims_filter.test-panic.wasm, for
#                                    tests/e2e/test_vm_reload.py. Never ship that file.
# Both use the same target directory: the feature adds no dependency feature, so only the
# filter's own crate is compiled again. The variant is built first and the shipped module
# last, so cargo's state ends at the normal features (a later plain build has nothing to do)
# and the normal module is built exactly as without the option.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

TEST_PANIC_OUT="$ROOT/wasm/jwt_claims_filter.test-panic.wasm"
test_panic=0
for arg in "$@"; do
  case "$arg" in
    --test-panic) test_panic=1 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument: $arg (see --help)"; exit 2 ;;
  esac
done

mkdir -p wasm
ARTEFACT="$(target_dir_for wasm32-wasip1)/release/jwt_claims_filter.wasm"

# build_module OUT CARGO_ARGS...: builds with the extra cargo arguments and copies the module
# to OUT. What cargo builds is the module: nothing edits it after the linker.
build_module() {
  local out="$1"; shift
  cargo_for_target wasm32-wasip1 build --release --lib --quiet "$@"
  cp "$ARTEFACT" "$out.tmp"
  mv "$out.tmp" "$out"
  log "wrote $out ($(stat -c %s "$out") bytes)"
}

if [ "$test_panic" = 1 ]; then
  build_module "$TEST_PANIC_OUT" --features test-panic
fi
build_module "$WASM_OUT"
